//! The catalog in PostgreSQL (`[catalog] url`): shared by every server of one archive, so a
//! file uploaded through one is listed, searched and served by all at once (they read the same
//! rows; nothing is cached per server). The schema and the connections' settings are
//! `crate::pg`'s.
//!
//! Kept here: a connection that broke is replaced on the next use, and a transaction whose
//! connection broke fails instead of committing half of itself; each commit names its paths
//! in a notification every server listens for (follow).

use super::{
    like_escape, AgentTotals, Backend, CatalogError, Entry, NameQuery, Result, MAX_ALIASES,
};
use crate::pg::{connect_error, migrate, pg_error, PgSettings};
use ::postgres::types::ToSql;
use ::postgres::{Client, Statement};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Reading connections per server.
const READERS: usize = 4;

/// The channel on which a catalog change names its paths.
const CHANGES: &str = "logarchive_files";

/// Listens for catalog changes (any server's) and hands each path to `tx` ("*": any path),
/// as long as the catalog lives (it holds the sender); connects again when the connection
/// breaks.
fn listen_changes(
    settings: &PgSettings,
    tx: &std::sync::Weak<tokio::sync::broadcast::Sender<std::sync::Arc<str>>>,
) {
    use ::postgres::fallible_iterator::FallibleIterator;
    let send = |p: &str| match tx.upgrade() {
        Some(tx) => {
            let _ = tx.send(std::sync::Arc::from(p));
            true
        }
        None => false,
    };
    loop {
        let listening = settings.connect().and_then(|mut c| {
            c.batch_execute(&format!("LISTEN {CHANGES}"))?;
            Ok(c)
        });
        let mut client = match listening {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("catalog: cannot listen for changes: {e}");
                if tx.strong_count() == 0 {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        // Notifications may have been lost while not listening: anything may have changed.
        if !send("*") {
            return;
        }
        loop {
            let next = client
                .notifications()
                .timeout_iter(Duration::from_secs(1))
                .next();
            match next {
                Ok(Some(n)) => {
                    for path in n.payload().split('\n') {
                        if !send(path) {
                            return;
                        }
                    }
                }
                Ok(None) if tx.strong_count() == 0 => return,
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!("catalog: change listener: {e}");
                    break;
                }
            }
        }
    }
}

/// A connection and its prepared statements.
struct Conn {
    client: Client,
    prepared: HashMap<&'static str, Statement>,
}

impl Conn {
    fn prepare(&mut self, sql: &'static str) -> std::result::Result<Statement, ::postgres::Error> {
        if let Some(s) = self.prepared.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql)?;
        self.prepared.insert(sql, s.clone());
        Ok(s)
    }

    fn query(
        &mut self,
        sql: &'static str,
        args: &[&(dyn ToSql + Sync)],
    ) -> std::result::Result<Vec<::postgres::Row>, ::postgres::Error> {
        let st = self.prepare(sql)?;
        self.client.query(&st, args)
    }

    fn query_one(
        &mut self,
        sql: &'static str,
        args: &[&(dyn ToSql + Sync)],
    ) -> std::result::Result<::postgres::Row, ::postgres::Error> {
        let st = self.prepare(sql)?;
        self.client.query_one(&st, args)
    }

    fn execute(
        &mut self,
        sql: &'static str,
        args: &[&(dyn ToSql + Sync)],
    ) -> std::result::Result<u64, ::postgres::Error> {
        let st = self.prepare(sql)?;
        self.client.execute(&st, args)
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let conns: Vec<Conn> = std::iter::once(&self.writer)
            .chain(&self.readers)
            .filter_map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).take())
            .collect();
        if !conns.is_empty() {
            // Closing a client blocks on its own runtime, which a thread of an async runtime
            // may not do (the last handle may go there): close them on a thread of their own.
            let _ = std::thread::Builder::new()
                .name("catalog-close".into())
                .spawn(move || drop(conns));
        }
    }
}

pub(super) struct Pg {
    settings: PgSettings,
    /// Where catalog changes are told, once something subscribed ([`Backend::changes`]).
    changes: Mutex<Option<std::sync::Arc<tokio::sync::broadcast::Sender<std::sync::Arc<str>>>>>,
    writer: Mutex<Option<Conn>>,
    /// Set between `begin` and `commit`/`rollback`: the writer must not be replaced then.
    in_batch: AtomicBool,
    readers: Vec<Mutex<Option<Conn>>>,
    next_reader: AtomicUsize,
}

const ENTRY: &str = "path, agent, size, sha256, modified_ms, archived_ms, appended_ms";

fn entry(r: &::postgres::Row) -> Entry {
    Entry {
        path: r.get(0),
        agent: r.get(1),
        size: r.get::<_, i64>(2) as u64,
        sha256: r.get(3),
        modified_ms: r.get(4),
        archived_ms: r.get(5),
        appended_ms: r.get(6),
    }
}

impl Pg {
    /// Connects (the writer) and brings the schema up to date.
    pub(super) fn connect(settings: &PgSettings) -> Result<Pg> {
        let pg = Pg {
            settings: settings.clone(),
            changes: Mutex::new(None),
            writer: Mutex::new(None),
            in_batch: AtomicBool::new(false),
            readers: (0..READERS).map(|_| Mutex::new(None)).collect(),
            next_reader: AtomicUsize::new(0),
        };
        pg.write(|c| migrate(&mut c.client))?;
        Ok(pg)
    }

    fn open(&self) -> Result<Conn> {
        let client = self
            .settings
            .connect()
            .map_err(|e| connect_error(&self.settings, e))?;
        Ok(Conn {
            client,
            prepared: HashMap::new(),
        })
    }

    /// Runs `f` on the connection in `slot`, connecting first if it has none or its
    /// connection broke. A connection found broken by `f` itself (the server restarted since
    /// it was last used) is replaced and `f` run once more on the new one — except inside a
    /// transaction (`in_batch`), which went with the old connection.
    fn with<T>(
        &self,
        slot: &Mutex<Option<Conn>>,
        in_batch: bool,
        mut f: impl FnMut(&mut Conn) -> Result<T>,
    ) -> Result<T> {
        let mut guard = slot.lock().unwrap_or_else(|p| p.into_inner());
        let mut fresh = false;
        loop {
            if guard.as_ref().is_some_and(|c| c.client.is_closed()) {
                *guard = None;
            }
            let conn = match guard.as_mut() {
                Some(c) => c,
                None if in_batch => {
                    return Err(CatalogError::Unavailable(
                        "the connection broke inside a transaction".into(),
                    ))
                }
                None => {
                    fresh = true;
                    guard.insert(self.open()?)
                }
            };
            let r = f(conn);
            if !conn.client.is_closed() && !matches!(r, Err(CatalogError::Unavailable(_))) {
                return r;
            }
            // The connection is gone (or says the server is): never reuse it.
            *guard = None;
            if fresh || in_batch {
                return r;
            }
        }
    }

    fn write<T>(
        &self,
        mut f: impl FnMut(&mut Conn) -> std::result::Result<T, ::postgres::Error>,
    ) -> Result<T> {
        let in_batch = self.in_batch.load(Ordering::Acquire);
        self.with(&self.writer, in_batch, |c| f(c).map_err(pg_error))
    }

    fn read<T>(
        &self,
        mut f: impl FnMut(&mut Conn) -> std::result::Result<T, ::postgres::Error>,
    ) -> Result<T> {
        let first = self.next_reader.fetch_add(1, Ordering::Relaxed);
        let n = self.readers.len();
        // A free connection if there is one, else the next in turn.
        let slot = (0..n)
            .map(|i| &self.readers[(first + i) % n])
            .find(|s| s.try_lock().is_ok())
            .unwrap_or(&self.readers[first % n]);
        self.with(slot, false, |c| f(c).map_err(pg_error))
    }

    fn entries(&self, sql: &'static str, args: &[&(dyn ToSql + Sync)]) -> Result<Vec<Entry>> {
        self.read(|c| Ok(c.query(sql, args)?.iter().map(entry).collect()))
    }

    /// The filters of a name query after the name: conditions, numbered on from `args`.
    fn filters<'a>(
        q: &'a NameQuery,
        conds: &mut Vec<String>,
        args: &mut Vec<&'a (dyn ToSql + Sync)>,
    ) {
        let filters: [(&str, &str, Option<&'a (dyn ToSql + Sync)>); 5] = [
            ("f.agent", "=", q.agent.as_ref().map(|v| v as _)),
            (
                "f.modified_ms",
                ">=",
                q.modified_from_ms.as_ref().map(|v| v as _),
            ),
            (
                "f.modified_ms",
                "<=",
                q.modified_to_ms.as_ref().map(|v| v as _),
            ),
            (
                "f.archived_ms",
                ">=",
                q.archived_from_ms.as_ref().map(|v| v as _),
            ),
            (
                "f.archived_ms",
                "<=",
                q.archived_to_ms.as_ref().map(|v| v as _),
            ),
        ];
        for (col, op, v) in filters {
            if let Some(v) = v {
                args.push(v);
                conds.push(format!("{col} {op} ${}", args.len()));
            }
        }
    }

    fn search(&self, sql: &str, args: &[&(dyn ToSql + Sync)]) -> Result<Vec<Entry>> {
        self.read(|c| Ok(c.client.query(sql, args)?.iter().map(entry).collect()))
    }
}

/// Logs in and asks one question, changing nothing.
pub(super) fn probe(settings: &PgSettings) -> Result<()> {
    let pg = Pg {
        settings: settings.clone(),
        changes: Mutex::new(None),
        writer: Mutex::new(None),
        in_batch: AtomicBool::new(false),
        readers: vec![Mutex::new(None)],
        next_reader: AtomicUsize::new(0),
    };
    pg.ping()
}

impl Backend for Pg {
    fn begin(&self) -> Result<()> {
        self.write(|c| c.client.batch_execute("BEGIN"))?;
        self.in_batch.store(true, Ordering::Release);
        Ok(())
    }

    fn commit(&self) -> Result<()> {
        let r = self.write(|c| c.client.batch_execute("COMMIT"));
        self.in_batch.store(false, Ordering::Release);
        r
    }

    fn rollback(&self) {
        let _ = self.write(|c| c.client.batch_execute("ROLLBACK"));
        self.in_batch.store(false, Ordering::Release);
    }

    /// One statement for the files and one for their folders, each over arrays (one round
    /// trip each, however many files). Rows go in path order, so two servers writing
    /// overlapping batches take their row locks in the same order.
    fn upsert_all(&self, entries: &[Entry]) -> Result<()> {
        let mut last: std::collections::BTreeMap<&str, &Entry> = Default::default();
        for e in entries {
            last.insert(&e.path, e);
        }
        let n = last.len();
        let (mut path, mut dir, mut name, mut agent) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut size, mut sha, mut modified, mut archived, mut appended) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let mut dirs: std::collections::BTreeMap<String, String> = Default::default();
        for e in last.values() {
            let (d, nm) = super::split(&e.path);
            path.push(e.path.as_str());
            dir.push(d);
            name.push(nm);
            agent.push(e.agent.as_str());
            size.push(e.size as i64);
            sha.push(e.sha256.as_deref());
            modified.push(e.modified_ms);
            archived.push(e.archived_ms);
            appended.push(e.appended_ms);
            let mut d = d.to_string();
            while d != "/" && !dirs.contains_key(&d) {
                let parent = super::split(&d).0.to_string();
                dirs.insert(d, parent.clone());
                d = parent;
            }
        }
        let (dir_paths, parents): (Vec<&str>, Vec<&str>) =
            dirs.iter().map(|(d, p)| (d.as_str(), p.as_str())).unzip();
        // The paths, one a line; "*" when they would not fit a notification (8000 bytes).
        let mut payload = path.join("\n");
        if payload.len() > 7900 {
            payload = "*".into();
        }
        self.write(|c| {
            c.execute(
                "INSERT INTO files (path, dir, name, agent, size, sha256, modified_ms,
                    archived_ms, appended_ms)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
                    $5::bigint[], $6::text[], $7::bigint[], $8::bigint[], $9::bigint[])
                 ON CONFLICT (path) DO UPDATE SET size = excluded.size,
                    sha256 = excluded.sha256, modified_ms = excluded.modified_ms,
                    appended_ms = excluded.appended_ms",
                &[
                    &path, &dir, &name, &agent, &size, &sha, &modified, &archived, &appended,
                ],
            )?;
            c.execute(
                "INSERT INTO dirs (path, parent) SELECT * FROM unnest($1::text[], $2::text[])
                 ON CONFLICT DO NOTHING",
                &[&dir_paths, &parents],
            )?;
            // Every server's followers hear of it (at the commit, inside a batch).
            c.execute("SELECT pg_notify($1, $2)", &[&CHANGES, &payload])?;
            Ok(())
        })
    }

    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<std::sync::Arc<str>>> {
        let mut g = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            let tx = std::sync::Arc::new(tokio::sync::broadcast::channel(1024).0);
            let settings = self.settings.clone();
            let weak = std::sync::Arc::downgrade(&tx);
            let started = std::thread::Builder::new()
                .name("catalog-listen".into())
                .spawn(move || listen_changes(&settings, &weak));
            if let Err(e) = started {
                tracing::warn!("catalog: cannot start the change listener: {e}");
                return None;
            }
            *g = Some(tx);
        }
        g.as_ref().map(|tx| tx.subscribe())
    }

    fn remove(&self, path: &str) -> Result<()> {
        self.write(|c| {
            c.execute("DELETE FROM files WHERE path = $1", &[&path])?;
            c.execute("DELETE FROM aliases WHERE path = $1", &[&path])?;
            Ok(())
        })
    }

    fn take_dir(&self, from: &str, to: &str) -> Result<Vec<Entry>> {
        let (lo, hi) = (format!("{from}/"), format!("{from}0"));
        self.write(|c| {
            let rows = c
                .query(
                    "DELETE FROM files WHERE path >= $1 AND path < $2
                     RETURNING path, agent, size, sha256, modified_ms, archived_ms, appended_ms",
                    &[&lo, &hi],
                )?
                .iter()
                .map(entry)
                .collect();
            c.execute(
                "INSERT INTO aliases (path, name, base)
                 SELECT $3 || substr(path, $4), name, base FROM aliases
                 WHERE path >= $1 AND path < $2 ON CONFLICT DO NOTHING",
                &[&lo, &hi, &to, &(from.chars().count() as i32 + 1)],
            )?;
            c.execute(
                "DELETE FROM aliases WHERE path >= $1 AND path < $2",
                &[&lo, &hi],
            )?;
            c.execute(
                "DELETE FROM dirs WHERE path = $3 OR (path >= $1 AND path < $2)",
                &[&lo, &hi, &from],
            )?;
            Ok(rows)
        })
    }

    fn move_aliases(&self, from: &str, to: &str) -> Result<()> {
        self.write(|c| {
            c.execute(
                "INSERT INTO aliases (path, name, base) SELECT $2, name, base FROM aliases
                 WHERE path = $1 ON CONFLICT DO NOTHING",
                &[&from, &to],
            )?;
            c.execute("DELETE FROM aliases WHERE path = $1", &[&from])?;
            Ok(())
        })
    }

    fn add_alias(&self, path: &str, name: &str) -> Result<()> {
        let base = name.rsplit('/').next().unwrap_or(name);
        self.write(|c| {
            c.execute(
                "INSERT INTO aliases (path, name, base)
                 SELECT $1, $2, $3 WHERE (SELECT COUNT(*) FROM aliases WHERE path = $1) < $4
                 ON CONFLICT DO NOTHING",
                &[&path, &name, &base, &(MAX_ALIASES as i64)],
            )?;
            Ok(())
        })
    }

    fn remove_dir(&self, path: &str) -> Result<()> {
        self.write(|c| {
            c.execute("DELETE FROM dirs WHERE path = $1", &[&path])
                .map(drop)
        })
    }

    fn sizes(&self) -> Result<Vec<(String, u64)>> {
        self.read(|c| {
            Ok(c.query("SELECT path, size FROM files", &[])?
                .iter()
                .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
                .collect())
        })
    }

    fn prune_aliases(&self) -> Result<()> {
        self.write(|c| {
            c.execute(
                "DELETE FROM aliases a WHERE NOT EXISTS (SELECT 1 FROM files f WHERE f.path = a.path)",
                &[],
            )
            .map(drop)
        })
    }

    fn aliases(&self, path: &str) -> Result<Vec<String>> {
        self.read(|c| {
            Ok(c.query(
                "SELECT name FROM aliases WHERE path = $1 ORDER BY name",
                &[&path],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
        })
    }

    fn aliases_between(&self, lo: &str, hi: &str) -> Result<Vec<(String, String)>> {
        self.read(|c| {
            Ok(c.query(
                "SELECT path, name FROM aliases WHERE path >= $1 AND path < $2
                     ORDER BY path, name",
                &[&lo, &hi],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
        })
    }

    fn get(&self, path: &str) -> Result<Option<Entry>> {
        Ok(self
            .entries(
                "SELECT path, agent, size, sha256, modified_ms, archived_ms, appended_ms
                 FROM files WHERE path = $1",
                &[&path],
            )?
            .pop())
    }

    fn count(&self) -> Result<u64> {
        self.read(|c| {
            Ok(c.query_one("SELECT COUNT(*) FROM files", &[])?
                .get::<_, i64>(0) as u64)
        })
    }

    fn ping(&self) -> Result<()> {
        self.read(|c| c.query("SELECT 1", &[]).map(drop))
    }

    fn list(&self, dir: &str) -> Result<(Vec<String>, Vec<Entry>)> {
        self.read(|c| {
            let dirs = c
                .query(
                    "SELECT path FROM dirs WHERE parent = $1 ORDER BY path",
                    &[&dir],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let files = c
                .query(
                    "SELECT path, agent, size, sha256, modified_ms, archived_ms, appended_ms
                     FROM files WHERE dir = $1 ORDER BY name",
                    &[&dir],
                )?
                .iter()
                .map(entry)
                .collect();
            Ok((dirs, files))
        })
    }

    fn files_between(&self, lo: &str, after: &str, hi: &str, limit: usize) -> Result<Vec<Entry>> {
        self.entries(
            "SELECT path, agent, size, sha256, modified_ms, archived_ms, appended_ms FROM files
             WHERE path >= $1 AND path > $2 AND path < $3 ORDER BY path LIMIT $4",
            &[&lo, &after, &hi, &(limit as i64)],
        )
    }

    fn count_between(&self, lo: &str, hi: &str, limit: usize) -> Result<usize> {
        self.read(|c| {
            Ok(c.query_one(
                "SELECT COUNT(*) FROM (SELECT 1 FROM files WHERE path >= $1 AND path < $2
                 LIMIT $3) l",
                &[&lo, &hi, &(limit as i64)],
            )?
            .get::<_, i64>(0) as usize)
        })
    }

    fn dir_rows(&self, lo: &str, hi: &str, rows: usize) -> Result<Vec<(String, u64, u64, i64)>> {
        self.read(|c| {
            Ok(c.query(
                "SELECT dir, COUNT(*), SUM(size)::BIGINT, MAX(modified_ms) FROM
                    (SELECT dir, size, modified_ms FROM files WHERE dir >= $1 AND dir < $2
                     ORDER BY dir LIMIT $3) l
                 GROUP BY dir ORDER BY dir",
                &[&lo, &hi, &(rows as i64)],
            )?
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    r.get::<_, i64>(1) as u64,
                    r.get::<_, i64>(2) as u64,
                    r.get(3),
                )
            })
            .collect())
        })
    }

    fn agent_totals(&self) -> Result<Vec<AgentTotals>> {
        self.read(|c| {
            Ok(c.query(
                "SELECT agent, COUNT(*), COALESCE(SUM(size), 0)::BIGINT, MAX(archived_ms)
                 FROM files GROUP BY agent ORDER BY agent",
                &[],
            )?
            .iter()
            .map(|r| AgentTotals {
                agent: r.get(0),
                files: r.get::<_, i64>(1) as u64,
                bytes: r.get::<_, i64>(2) as u64,
                last_archived_ms: r.get(3),
            })
            .collect())
        })
    }

    fn agent_totals_of(&self, agent: &str) -> Result<AgentTotals> {
        self.read(|c| {
            let r = c.query_one(
                "SELECT COUNT(*), COALESCE(SUM(size), 0)::BIGINT, MAX(archived_ms)
                 FROM files WHERE agent = $1",
                &[&agent],
            )?;
            Ok(AgentTotals {
                agent: agent.to_string(),
                files: r.get::<_, i64>(0) as u64,
                bytes: r.get::<_, i64>(1) as u64,
                last_archived_ms: r.get(2),
            })
        })
    }

    fn recent(&self, limit: usize) -> Result<Vec<Entry>> {
        self.entries(
            "SELECT path, agent, size, sha256, modified_ms, archived_ms, appended_ms FROM files
             ORDER BY archived_ms DESC LIMIT $1",
            &[&(limit as i64)],
        )
    }

    fn daily_bytes(&self, since_ms: i64) -> Result<Vec<(String, i64, u64)>> {
        self.read(|c| {
            Ok(c.query(
                "SELECT agent, archived_ms / 86400000 AS day, SUM(size)::BIGINT FROM files
                 WHERE archived_ms >= $1 GROUP BY agent, day ORDER BY agent, day",
                &[&since_ms],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get::<_, i64>(2) as u64))
            .collect())
        })
    }

    fn search_names(&self, q: &NameQuery, glob: bool, limit: usize) -> Result<Vec<Entry>> {
        let like = format!("%{}%", like_escape(&q.name.to_lowercase()));
        let re = super::glob_regex(&q.name);
        let mut args: Vec<&(dyn ToSql + Sync)> = Vec::new();
        let mut conds = Vec::new();
        if glob {
            args.push(&re);
            conds.push(format!("f.name ~ ${}", args.len()));
        } else if !q.name.is_empty() {
            // Served by the trigram index from three characters on.
            args.push(&like);
            conds.push(format!("lower(f.name) LIKE ${}", args.len()));
        }
        Self::filters(q, &mut conds, &mut args);
        let cond = if conds.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conds.join(" AND "))
        };
        // Newest first: by row id (rows are added as files complete) for a substring, which
        // stops after `limit` hits; by archived time otherwise, as the agent index serves.
        let order = if !glob && !q.name.is_empty() {
            "f.id"
        } else {
            "f.archived_ms"
        };
        self.search(
            &format!(
                "SELECT f.{} FROM files f {cond} ORDER BY {order} DESC LIMIT {limit}",
                ENTRY.replace(", ", ", f.")
            ),
            &args,
        )
    }

    fn search_aliases(&self, q: &NameQuery, glob: bool, limit: usize) -> Result<Vec<Entry>> {
        let like = format!("%{}%", like_escape(&q.name.to_lowercase()));
        let re = super::glob_regex(&q.name);
        let mut args: Vec<&(dyn ToSql + Sync)> = Vec::new();
        let mut conds = Vec::new();
        if glob {
            args.push(&re);
            conds.push("a.base ~ $1".to_string());
        } else {
            args.push(&like);
            conds.push("lower(a.base) LIKE $1".to_string());
        }
        Self::filters(q, &mut conds, &mut args);
        self.search(
            &format!(
                "SELECT DISTINCT f.{}, f.archived_ms AS newest FROM aliases a
                 JOIN files f ON f.path = a.path WHERE {} ORDER BY newest DESC LIMIT {limit}",
                ENTRY.replace(", ", ", f."),
                conds.join(" AND ")
            ),
            &args,
        )
    }
}
