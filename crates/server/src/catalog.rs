//! The catalog: one SQLite row per archived file, filled from the FTP service's events (only
//! completed files: a verified rename from a temporary name, a finished upload to a final name,
//! an append) and reconciled with the archive folder at start. Listings and name searches are
//! answered from it, never by walking the disk per request.

use logarchive_ftp::names::{is_temp_name, SCRATCH_DIR};
use logarchive_ftp::server::{FtpEvent, Kind, Meta};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::SystemTime;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The database failed.
    #[error("catalog: {0}")]
    Db(#[from] rusqlite::Error),
    /// The archive could not be listed (reconcile).
    #[error("catalog: listing the archive: {0}")]
    Archive(std::io::Error),
}

pub type Result<T> = std::result::Result<T, CatalogError>;

/// One archived file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Entry {
    /// Archive path, e.g. `/agent01/Logs/a.txt`.
    pub path: String,
    pub agent: String,
    pub size: u64,
    pub sha256: Option<String>,
    pub modified_ms: i64,
    pub archived_ms: i64,
    pub appended_ms: Option<i64>,
}

/// What the catalog holds for one agent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct AgentTotals {
    pub agent: String,
    pub files: u64,
    pub bytes: u64,
    pub last_archived_ms: Option<i64>,
}

/// What a folder holds at any depth.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct DirTotals {
    pub files: u64,
    pub bytes: u64,
    /// The latest modification of a file in it.
    pub modified_ms: i64,
}

/// A name search. Empty fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct NameQuery {
    /// Substring of the file name (case-insensitive), or a glob if it contains `*`, `?` or `[`.
    pub name: String,
    pub agent: Option<String>,
    pub modified_from_ms: Option<i64>,
    pub modified_to_ms: Option<i64>,
    pub archived_from_ms: Option<i64>,
    pub archived_to_ms: Option<i64>,
    pub limit: usize,
}

/// Whether an archive path is part of the catalog: no temporary uploads, no agents' own
/// `.logarchive` bookkeeping.
pub fn catalogued(path: &str) -> bool {
    let mut parts = path.split('/').filter(|p| !p.is_empty());
    let first_two: Vec<&str> = parts.by_ref().take(2).collect();
    if first_two.len() < 2 || first_two[1] == SCRATCH_DIR {
        return false;
    }
    !path.rsplit('/').next().is_some_and(is_temp_name)
}

fn split(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(0) => ("/", &path[1..]),
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("/", path),
    }
}

/// The range of paths at any depth under the folder `dir`: `[dir/, dir0)` ('0' is the
/// character after '/', so every path that starts with `dir/` sorts inside it).
fn under(dir: &str) -> (String, String) {
    let prefix = if dir.ends_with('/') {
        dir.to_string()
    } else {
        format!("{dir}/")
    };
    let end = format!("{}0", &prefix[..prefix.len() - 1]);
    (prefix, end)
}

fn agent_of(path: &str) -> &str {
    path.trim_start_matches('/').split('/').next().unwrap_or("")
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn mtime_ms(m: &std::fs::Metadata) -> i64 {
    time_ms(m.modified().ok())
}

fn time_ms(t: Option<SystemTime>) -> i64 {
    t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What the catalog asks of the archive's files (the store, or a plain folder in tests).
/// Blocking: the catalog's writer thread calls it.
pub trait ArchiveView {
    /// Kind, size and time of `path` (`/agent01/Logs/a.log`); `None` if there is nothing.
    fn stat(&self, path: &str) -> Option<Meta>;
    /// Every regular file: path → (size, modification in ms since the epoch).
    fn files(&self) -> std::io::Result<HashMap<String, (u64, i64)>>;
}

impl ArchiveView for Path {
    fn stat(&self, path: &str) -> Option<Meta> {
        let m = std::fs::symlink_metadata(self.join(path.trim_start_matches('/'))).ok()?;
        let kind = if m.is_dir() {
            Kind::Dir
        } else if m.is_file() {
            Kind::File
        } else {
            return None;
        };
        Some(Meta::new(kind, m.len(), m.modified().ok()))
    }

    fn files(&self) -> std::io::Result<HashMap<String, (u64, i64)>> {
        let mut out = HashMap::new();
        let mut stack = vec![self.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let Ok(ft) = e.file_type() else { continue };
                let p = e.path();
                if ft.is_dir() {
                    stack.push(p);
                } else if ft.is_file() {
                    let Some(rel) = p.strip_prefix(self).ok().and_then(|r| r.to_str()) else {
                        continue;
                    };
                    if let Ok(m) = e.metadata() {
                        out.insert(format!("/{rel}"), (m.len(), mtime_ms(&m)));
                    }
                }
            }
        }
        Ok(out)
    }
}

impl ArchiveView for std::path::PathBuf {
    fn stat(&self, path: &str) -> Option<Meta> {
        self.as_path().stat(path)
    }
    fn files(&self) -> std::io::Result<HashMap<String, (u64, i64)>> {
        self.as_path().files()
    }
}

/// The catalog database. One connection writes (the event follower's thread, see
/// `follow_events` in lib.rs); reads go through a few connections of their own, so a long read
/// (a zip's listing, the dashboard's totals) neither waits for nor holds up the writer, and
/// every read sees committed rows only.
pub struct Catalog {
    conn: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: std::sync::atomic::AtomicUsize,
}

/// Reading connections: as many reads run at once.
const READERS: usize = 4;

/// Local names kept per archived file.
pub const MAX_ALIASES: usize = 32;

/// The files directly in a folder, in name order (served by the `files_dir_listing` index alone).
const LIST_FILES: &str = "SELECT path, agent, size, sha256, modified_ms, archived_ms, appended_ms \
     FROM files WHERE dir = ?1 ORDER BY name";

impl Catalog {
    pub fn open(path: &Path) -> Result<Catalog> {
        let conn = Connection::open(path)?;
        Self::tune(&conn)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS files (
                id INTEGER PRIMARY KEY,
                path TEXT NOT NULL UNIQUE,
                dir TEXT NOT NULL,
                name TEXT NOT NULL,
                agent TEXT NOT NULL,
                size INTEGER NOT NULL,
                sha256 TEXT,
                modified_ms INTEGER NOT NULL,
                archived_ms INTEGER NOT NULL,
                appended_ms INTEGER
             );
             -- Folder listings read only this index (a range of it, in name order): ~5x faster
             -- than fetching a thousand scattered rows, for ~30% more disk.
             CREATE INDEX IF NOT EXISTS files_dir_listing ON files(dir, name, path, agent, size,
                sha256, modified_ms, archived_ms, appended_ms);
             DROP INDEX IF EXISTS files_dir;
             CREATE INDEX IF NOT EXISTS files_agent ON files(agent, archived_ms);
             CREATE INDEX IF NOT EXISTS files_archived ON files(archived_ms);
             CREATE TABLE IF NOT EXISTS dirs (path TEXT PRIMARY KEY, parent TEXT NOT NULL) WITHOUT ROWID;
             CREATE INDEX IF NOT EXISTS dirs_parent ON dirs(parent);
             -- Substring search on names: a trigram index over the name column.
             CREATE VIRTUAL TABLE IF NOT EXISTS names USING fts5(name, content='files', content_rowid='id', tokenize='trigram');
             CREATE TRIGGER IF NOT EXISTS files_ai AFTER INSERT ON files BEGIN
                INSERT INTO names(rowid, name) VALUES (new.id, new.name); END;
             CREATE TRIGGER IF NOT EXISTS files_ad AFTER DELETE ON files BEGIN
                INSERT INTO names(names, rowid, name) VALUES ('delete', old.id, old.name); END;
             -- The local names an archived file had where it came from (a rotated log's
             -- `service.log.1`), told by its agent (SITE ALIAS); `base` is the last part.
             CREATE TABLE IF NOT EXISTS aliases (
                path TEXT NOT NULL,
                name TEXT NOT NULL,
                base TEXT NOT NULL,
                PRIMARY KEY (path, name)
             ) WITHOUT ROWID;
             CREATE INDEX IF NOT EXISTS aliases_base ON aliases(base);",
        )?;
        // Per connection, in memory: where upsert_all gathers a burst (see there).
        conn.execute_batch(
            "CREATE TEMP TABLE staged (
                seq INTEGER PRIMARY KEY, path TEXT NOT NULL, dir TEXT NOT NULL,
                name TEXT NOT NULL, agent TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT,
                modified_ms INTEGER NOT NULL, archived_ms INTEGER NOT NULL, appended_ms INTEGER
             );",
        )?;
        let readers = (0..READERS)
            .map(|_| {
                let r = Connection::open_with_flags(
                    path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                Self::tune(&r)?;
                Ok(Mutex::new(r))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Catalog {
            conn: Mutex::new(conn),
            readers,
            next_reader: Default::default(),
        })
    }

    /// Settings of every connection.
    fn tune(conn: &Connection) -> Result<()> {
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // Statement journals (an upsert with triggers needs one) in memory, not temp files.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        // Reads through a memory map instead of a pread per page: listings touch many pages.
        conn.pragma_update(None, "mmap_size", 1i64 << 30)?;
        Ok(())
    }

    /// The writing connection.
    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A reading connection: a free one if there is one, else the next in turn.
    fn read(&self) -> std::sync::MutexGuard<'_, Connection> {
        let first = self
            .next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for i in 0..self.readers.len() {
            match self.readers[(first + i) % self.readers.len()].try_lock() {
                Ok(c) => return c,
                Err(std::sync::TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
        }
        self.readers[first % self.readers.len()]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Records a completed file (insert, or update in place).
    pub fn upsert(&self, e: &Entry) -> Result<()> {
        self.upsert_all(std::slice::from_ref(e))
    }

    /// Records completed files, in order (a later entry for the same path wins). They go
    /// through a staging table into `files` in one statement: the name index (FTS5) flushes
    /// once per statement, so a burst costs one flush instead of one per file.
    pub fn upsert_all(&self, entries: &[Entry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let conn = self.lock();
        {
            let mut stage = conn.prepare_cached(
                "INSERT INTO temp.staged (path, dir, name, agent, size, sha256, modified_ms,
                    archived_ms, appended_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for e in entries {
                let (dir, name) = split(&e.path);
                stage.execute(params![
                    e.path,
                    dir,
                    name,
                    e.agent,
                    e.size as i64,
                    e.sha256,
                    e.modified_ms,
                    e.archived_ms,
                    e.appended_ms
                ])?;
            }
        }
        // `WHERE true` tells the parser the ON CONFLICT belongs to the INSERT, not a join.
        let moved = conn
            .prepare_cached(
                "INSERT INTO files (path, dir, name, agent, size, sha256, modified_ms, archived_ms,
                    appended_ms)
                 SELECT path, dir, name, agent, size, sha256, modified_ms, archived_ms, appended_ms
                 FROM temp.staged WHERE true ORDER BY seq
                 ON CONFLICT(path) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256,
                    modified_ms = excluded.modified_ms, appended_ms = excluded.appended_ms",
            )?
            .execute([]);
        conn.prepare_cached("DELETE FROM temp.staged")?
            .execute([])?;
        moved?;
        // The folders above them, for browsing.
        let mut known = std::collections::HashSet::new();
        for e in entries {
            let mut d = split(&e.path).0.to_string();
            while d != "/" && known.insert(d.clone()) {
                let (parent, _) = split(&d);
                let parent = parent.to_string();
                if conn
                    .prepare_cached("INSERT OR IGNORE INTO dirs (path, parent) VALUES (?1, ?2)")?
                    .execute(params![d, parent])?
                    == 0
                {
                    break; // already known, and so are its ancestors
                }
                d = parent;
            }
        }
        Ok(())
    }

    /// Runs `f` as one transaction (many writes, one commit). The catalog has one writer (the
    /// event follower, which also reconciles), so nothing else interleaves.
    pub fn batch<T>(&self, f: impl FnOnce(&Catalog) -> Result<T>) -> Result<T> {
        self.lock().execute_batch("BEGIN IMMEDIATE")?;
        match f(self) {
            Ok(v) => {
                self.lock().execute_batch("COMMIT")?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.lock().execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    pub fn remove(&self, path: &str) -> Result<()> {
        let conn = self.lock();
        conn.execute("DELETE FROM files WHERE path = ?1", params![path])?;
        conn.execute("DELETE FROM aliases WHERE path = ?1", params![path])?;
        Ok(())
    }

    /// A folder renamed from `from` to `to`: the rows below it move with it (their bytes did not
    /// change, so sizes and hashes stay true). Rows that land where nothing is catalogued go.
    fn move_dir(&self, from: &str, to: &str) -> Result<()> {
        // Everything below `from/`: '0' is the character after '/'.
        let (lo, hi) = (format!("{from}/"), format!("{from}0"));
        let rows = {
            let conn = self.lock();
            let mut st = conn.prepare_cached(
                "SELECT path, agent, size, sha256, modified_ms, archived_ms, appended_ms
                 FROM files WHERE path >= ?1 AND path < ?2",
            )?;
            let rows = st
                .query_map(params![lo, hi], entry)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            conn.execute(
                "DELETE FROM files WHERE path >= ?1 AND path < ?2",
                params![lo, hi],
            )?;
            conn.execute(
                "UPDATE OR IGNORE aliases SET path = ?3 || substr(path, ?4)
                 WHERE path >= ?1 AND path < ?2",
                params![lo, hi, to, from.len() as i64 + 1],
            )?;
            conn.execute(
                "DELETE FROM aliases WHERE path >= ?1 AND path < ?2",
                params![lo, hi],
            )?;
            conn.execute(
                "DELETE FROM dirs WHERE path = ?3 OR (path >= ?1 AND path < ?2)",
                params![lo, hi, from],
            )?;
            rows
        };
        let moved: Vec<Entry> = rows
            .into_iter()
            .filter_map(|mut e| {
                e.path = format!("{to}{}", &e.path[from.len()..]);
                e.agent = agent_of(&e.path).to_string();
                catalogued(&e.path).then_some(e)
            })
            .collect();
        self.upsert_all(&moved)
    }

    /// Records that the file at `path` was also known as `name` where it came from (at most
    /// [`MAX_ALIASES`] names a file).
    pub fn add_alias(&self, path: &str, name: &str) -> Result<()> {
        let base = name.rsplit('/').next().unwrap_or(name);
        self.lock().execute(
            "INSERT OR IGNORE INTO aliases (path, name, base)
             SELECT ?1, ?2, ?3 WHERE (SELECT COUNT(*) FROM aliases WHERE path = ?1) < ?4",
            params![path, name, base, MAX_ALIASES as i64],
        )?;
        Ok(())
    }

    /// The local names of the file at `path`.
    pub fn aliases(&self, path: &str) -> Result<Vec<String>> {
        let conn = self.read();
        let mut st =
            conn.prepare_cached("SELECT name FROM aliases WHERE path = ?1 ORDER BY name")?;
        let rows = st
            .query_map(params![path], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(rows)
    }

    /// The local names of the files directly in `dir`: path → names.
    pub fn aliases_in(&self, dir: &str) -> Result<std::collections::HashMap<String, Vec<String>>> {
        let (prefix, end) = under(dir);
        let conn = self.read();
        let mut st = conn.prepare_cached(
            "SELECT path, name FROM aliases WHERE path >= ?1 AND path < ?2 ORDER BY path, name",
        )?;
        let mut out: std::collections::HashMap<String, Vec<String>> = Default::default();
        let rows = st.query_map(params![prefix, end], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        for r in rows {
            let (path, name) = r?;
            if !path[prefix.len()..].contains('/') {
                out.entry(path).or_default().push(name);
            }
        }
        Ok(out)
    }

    pub fn get(&self, path: &str) -> Result<Option<Entry>> {
        let conn = self.read();
        let mut st = conn.prepare_cached(
            "SELECT path, agent, size, sha256, modified_ms, archived_ms, appended_ms FROM files WHERE path = ?1",
        )?;
        Ok(st.query_row(params![path], entry).optional()?)
    }

    pub fn count(&self) -> Result<u64> {
        Ok(self
            .read()
            .query_row("SELECT COUNT(*) FROM files", [], |r| r.get::<_, i64>(0))? as u64)
    }

    /// Whether the database answers (a one-row read; `count` would scan every row).
    pub fn ping(&self) -> Result<()> {
        self.read()
            .query_row("SELECT 1 FROM files LIMIT 1", [], |_| Ok(()))
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(()),
                e => Err(e),
            })?;
        Ok(())
    }

    /// The sub-folders and files directly in `dir` (`/` lists the agents).
    pub fn list(&self, dir: &str) -> Result<(Vec<String>, Vec<Entry>)> {
        let conn = self.read();
        let mut st =
            conn.prepare_cached("SELECT path FROM dirs WHERE parent = ?1 ORDER BY path")?;
        let dirs = st
            .query_map(params![dir], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut st = conn.prepare_cached(LIST_FILES)?;
        let files = st
            .query_map(params![dir], entry)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok((dirs, files))
    }

    /// Files at any depth under `dir` (`/` = the whole archive) in path order, after the path
    /// `after` (`None`: from the first), at most `limit`: a page of a walk that holds a reading
    /// connection only for one page. Served by the path index.
    pub fn files_under(&self, dir: &str, after: Option<&str>, limit: usize) -> Result<Vec<Entry>> {
        let (prefix, end) = under(dir);
        let conn = self.read();
        let mut st = conn.prepare_cached(
            "SELECT path, agent, size, sha256, modified_ms, archived_ms, appended_ms FROM files \
             WHERE path >= ?1 AND path > ?2 AND path < ?3 ORDER BY path LIMIT ?4",
        )?;
        let rows = st
            .query_map(
                params![prefix, after.unwrap_or(""), end, limit as i64],
                entry,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// How many files are at any depth under `dir`, counting no further than `limit`.
    pub fn count_under(&self, dir: &str, limit: usize) -> Result<usize> {
        let (prefix, end) = under(dir);
        let n: i64 = self.read().query_row(
            "SELECT COUNT(*) FROM (SELECT 1 FROM files WHERE path >= ?1 AND path < ?2 LIMIT ?3)",
            params![prefix, end, limit as i64],
            |r| r.get(0),
        )?;
        Ok(n as usize)
    }

    /// Per sub-folder of `dir` (by its path): what it holds at any depth, from at most
    /// `budget` rows of the folder-listing index; a sub-folder the budget did not reach to
    /// its end is left out, so what is given is exact.
    pub fn dir_totals(
        &self,
        dir: &str,
        budget: usize,
    ) -> Result<std::collections::BTreeMap<String, DirTotals>> {
        let (prefix, end) = under(dir);
        let conn = self.read();
        let mut st = conn.prepare_cached(
            "SELECT dir, COUNT(*), SUM(size), MAX(modified_ms) FROM                (SELECT dir, size, modified_ms FROM files WHERE dir >= ?1 AND dir < ?2                 ORDER BY dir LIMIT ?3)              GROUP BY dir ORDER BY dir",
        )?;
        let mut out: std::collections::BTreeMap<String, DirTotals> = Default::default();
        let mut seen = 0u64;
        let mut last = None;
        // One row past the budget tells whether the last folder was read to its end.
        let rows = st.query_map(params![prefix, end, budget as i64 + 1], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, i64>(2)? as u64,
                r.get::<_, i64>(3)?,
            ))
        })?;
        for row in rows {
            let (d, n, bytes, modified) = row?;
            seen += n;
            let Some(rest) = d.strip_prefix(&prefix) else {
                continue; // files directly in `dir`
            };
            let child = format!("{prefix}{}", rest.split('/').next().unwrap_or(rest));
            let t = out.entry(child.clone()).or_default();
            t.files += n;
            t.bytes += bytes;
            t.modified_ms = t.modified_ms.max(modified);
            last = Some(child);
        }
        if seen > budget as u64 {
            if let Some(l) = last {
                out.remove(&l);
            }
        }
        Ok(out)
    }

    /// Per agent: files and bytes archived, and the last archive time.
    pub fn agent_totals(&self) -> Result<Vec<AgentTotals>> {
        let conn = self.read();
        let mut st = conn.prepare_cached(
            "SELECT agent, COUNT(*), COALESCE(SUM(size), 0), MAX(archived_ms) FROM files GROUP BY agent ORDER BY agent",
        )?;
        let rows = st
            .query_map([], |r| {
                Ok(AgentTotals {
                    agent: r.get(0)?,
                    files: r.get::<_, i64>(1)? as u64,
                    bytes: r.get::<_, i64>(2)? as u64,
                    last_archived_ms: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// What the catalog holds for one agent (zero files if nothing).
    pub fn agent_totals_of(&self, agent: &str) -> Result<AgentTotals> {
        let conn = self.read();
        let mut st = conn.prepare_cached(
            "SELECT COUNT(*), COALESCE(SUM(size), 0), MAX(archived_ms) FROM files WHERE agent = ?1",
        )?;
        Ok(st.query_row(params![agent], |r| {
            Ok(AgentTotals {
                agent: agent.to_string(),
                files: r.get::<_, i64>(0)? as u64,
                bytes: r.get::<_, i64>(1)? as u64,
                last_archived_ms: r.get(2)?,
            })
        })?)
    }

    /// The most recently archived files.
    pub fn recent(&self, limit: usize) -> Result<Vec<Entry>> {
        let conn = self.read();
        let mut st = conn.prepare_cached(
            "SELECT path, agent, size, sha256, modified_ms, archived_ms, appended_ms FROM files ORDER BY archived_ms DESC LIMIT ?1",
        )?;
        let rows = st
            .query_map(params![limit as i64], entry)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Bytes of the files archived per agent per UTC day since `since_ms`: (agent, day, bytes),
    /// the day as days since 1970-01-01.
    pub fn daily_bytes(&self, since_ms: i64) -> Result<Vec<(String, i64, u64)>> {
        let conn = self.read();
        let mut st = conn.prepare_cached(
            "SELECT agent, archived_ms / 86400000 AS day, SUM(size) FROM files \
             WHERE archived_ms >= ?1 GROUP BY agent, day ORDER BY agent, day",
        )?;
        let rows = st
            .query_map(params![since_ms], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Files whose name matches, newest first.
    pub fn search(&self, q: &NameQuery) -> Result<Vec<Entry>> {
        let conn = self.read();
        let limit = if q.limit == 0 { 1000 } else { q.limit } as i64;
        let glob = q.name.contains(['*', '?', '[']);
        // (Narrowing a glob through the trigram index of its literal part was measured: with a
        // common literal it was slower than GLOB over the name column, 261 vs 161 ms p50 at
        // 1,000,000 rows, so globs scan.)
        let trigram = !glob && q.name.chars().count() >= 3;
        let mut sql = String::from(
            "SELECT f.path, f.agent, f.size, f.sha256, f.modified_ms, f.archived_ms, f.appended_ms FROM files f",
        );
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        let mut conds: Vec<String> = Vec::new();
        if trigram {
            sql.push_str(" JOIN names ON names.rowid = f.id");
            // A quoted FTS5 string: the trigram index finds the substring anywhere.
            conds.push(format!("names MATCH ?{}", args.len() + 1));
            args.push(format!("\"{}\"", q.name.replace('"', "\"\"")).into());
        }
        if glob {
            conds.push(format!("f.name GLOB ?{}", args.len() + 1));
            args.push(q.name.clone().into());
        } else if !trigram && !q.name.is_empty() {
            conds.push(format!(
                "instr(lower(f.name), lower(?{})) > 0",
                args.len() + 1
            ));
            args.push(q.name.clone().into());
        }
        for (col, op, v) in [
            (
                "f.agent",
                "=",
                q.agent.clone().map(rusqlite::types::Value::from),
            ),
            (
                "f.modified_ms",
                ">=",
                q.modified_from_ms.map(rusqlite::types::Value::from),
            ),
            (
                "f.modified_ms",
                "<=",
                q.modified_to_ms.map(rusqlite::types::Value::from),
            ),
            (
                "f.archived_ms",
                ">=",
                q.archived_from_ms.map(rusqlite::types::Value::from),
            ),
            (
                "f.archived_ms",
                "<=",
                q.archived_to_ms.map(rusqlite::types::Value::from),
            ),
        ] {
            if let Some(v) = v {
                conds.push(format!("{col} {op} ?{}", args.len() + 1));
                args.push(v);
            }
        }
        if !conds.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conds.join(" AND "));
        }
        // Newest first. For a substring, by the index's row id (rows are added as files
        // complete), so SQLite stops after `limit` hits instead of sorting every match of a
        // common substring; otherwise by archived time, which the agent index serves in order.
        let order = if trigram {
            "names.rowid"
        } else {
            "f.archived_ms"
        };
        sql.push_str(&format!(" ORDER BY {order} DESC LIMIT {limit}"));
        let mut st = conn.prepare_cached(&sql)?;
        let mut rows = st
            .query_map(rusqlite::params_from_iter(args), entry)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        drop(st);
        if !q.name.is_empty() && rows.len() < limit as usize {
            // Files found by a local name they had (a rotated log's `service.log.1`).
            let (cond, arg) = if glob {
                ("a.base GLOB ?1", q.name.clone())
            } else {
                ("instr(lower(a.base), lower(?1)) > 0", q.name.clone())
            };
            let mut conds = vec![cond.to_string()];
            let mut args: Vec<rusqlite::types::Value> = vec![arg.into()];
            for (col, op, v) in [
                (
                    "f.agent",
                    "=",
                    q.agent.clone().map(rusqlite::types::Value::from),
                ),
                (
                    "f.modified_ms",
                    ">=",
                    q.modified_from_ms.map(rusqlite::types::Value::from),
                ),
                (
                    "f.modified_ms",
                    "<=",
                    q.modified_to_ms.map(rusqlite::types::Value::from),
                ),
                (
                    "f.archived_ms",
                    ">=",
                    q.archived_from_ms.map(rusqlite::types::Value::from),
                ),
                (
                    "f.archived_ms",
                    "<=",
                    q.archived_to_ms.map(rusqlite::types::Value::from),
                ),
            ] {
                if let Some(v) = v {
                    conds.push(format!("{col} {op} ?{}", args.len() + 1));
                    args.push(v);
                }
            }
            let sql = format!(
                "SELECT DISTINCT f.path, f.agent, f.size, f.sha256, f.modified_ms, f.archived_ms, f.appended_ms
                 FROM aliases a JOIN files f ON f.path = a.path WHERE {} ORDER BY f.archived_ms DESC LIMIT {limit}",
                conds.join(" AND ")
            );
            let mut st = conn.prepare_cached(&sql)?;
            let more = st
                .query_map(rusqlite::params_from_iter(args), entry)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            for e in more {
                if rows.len() >= limit as usize {
                    break;
                }
                if !rows.iter().any(|r| r.path == e.path) {
                    rows.push(e);
                }
            }
        }
        Ok(rows)
    }

    /// Applies one FTP event. `archive` gives the files' times and kinds.
    pub fn apply(&self, event: &FtpEvent, archive: &(impl ArchiveView + ?Sized)) -> Result<()> {
        self.apply_all(std::slice::from_ref(event), archive)
    }

    /// Applies FTP events in order. Runs of completed uploads go in together
    /// ([`Catalog::upsert_all`]); anything else first flushes the run before it, so the order
    /// holds (an upload, then its deletion, ends deleted).
    pub fn apply_all(
        &self,
        events: &[FtpEvent],
        archive: &(impl ArchiveView + ?Sized),
    ) -> Result<()> {
        let stat = |p: &str| archive.stat(p);
        let mut run: Vec<Entry> = Vec::new();
        for event in events {
            match event {
                FtpEvent::UploadCompleted {
                    path,
                    size,
                    sha256,
                    temp: false,
                    ..
                }
                | FtpEvent::Appended {
                    path,
                    size,
                    sha256,
                    temp: false,
                    ..
                } if catalogued(path) => {
                    let now = now_ms();
                    let modified_ms = stat(path).map_or(now, |m| time_ms(m.modified));
                    let appended = matches!(event, FtpEvent::Appended { .. });
                    // archived_ms only counts for a new row: an update keeps the first.
                    run.push(Entry {
                        path: path.clone(),
                        agent: agent_of(path).to_string(),
                        size: *size,
                        sha256: sha256.clone(),
                        modified_ms,
                        archived_ms: now,
                        appended_ms: appended.then_some(now),
                    });
                }
                FtpEvent::Renamed {
                    from,
                    to,
                    size,
                    sha256,
                    ..
                } => {
                    self.upsert_all(&std::mem::take(&mut run))?;
                    self.lock().execute(
                        "UPDATE OR IGNORE aliases SET path = ?2 WHERE path = ?1",
                        params![from, to],
                    )?;
                    self.remove(from)?;
                    if catalogued(to) {
                        match stat(to) {
                            Some(m) if m.is_file() => run.push(Entry {
                                path: to.clone(),
                                agent: agent_of(to).to_string(),
                                size: *size,
                                sha256: sha256.clone(),
                                modified_ms: time_ms(m.modified),
                                archived_ms: now_ms(),
                                appended_ms: None,
                            }),
                            // A folder: everything below it moves, hashes and all.
                            Some(m) if m.is_dir() => self.move_dir(from, to)?,
                            _ => {}
                        }
                    }
                }
                FtpEvent::Alias { path, name, .. } if catalogued(path) => {
                    self.upsert_all(&std::mem::take(&mut run))?;
                    self.add_alias(path, name)?
                }
                FtpEvent::Deleted { path, .. } => {
                    self.upsert_all(&std::mem::take(&mut run))?;
                    self.remove(path)?
                }
                FtpEvent::DirRemoved { path, .. } => {
                    self.upsert_all(&std::mem::take(&mut run))?;
                    let conn = self.lock();
                    conn.execute("DELETE FROM dirs WHERE path = ?1", params![path])?;
                }
                _ => {}
            }
        }
        self.upsert_all(&run)
    }

    /// Makes the catalog match the archive: files copied in by hand appear (hashed later, on
    /// demand), vanished ones go, changed sizes are updated. Returns (added, removed, updated).
    pub fn reconcile(&self, archive: &(impl ArchiveView + ?Sized)) -> Result<(u64, u64, u64)> {
        let mut on_disk = archive.files().map_err(CatalogError::Archive)?;
        on_disk.retain(|path, _| catalogued(path));
        let known: Vec<(String, u64)> = {
            let conn = self.lock();
            let mut st = conn.prepare("SELECT path, size FROM files")?;
            let rows = st
                .query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows
        };
        let counts = self.batch(|c| c.reconcile_rows(known, on_disk))?;
        self.lock().execute(
            "DELETE FROM aliases WHERE path NOT IN (SELECT path FROM files)",
            [],
        )?;
        Ok(counts)
    }

    fn reconcile_rows(
        &self,
        known: Vec<(String, u64)>,
        on_disk: std::collections::HashMap<String, (u64, i64)>,
    ) -> Result<(u64, u64, u64)> {
        let (mut added, mut removed, mut updated) = (0, 0, 0);
        let mut seen = std::collections::HashSet::new();
        for (path, size) in known {
            match on_disk.get(&path) {
                None => {
                    self.remove(&path)?;
                    removed += 1;
                }
                Some((s, m)) if *s != size => {
                    let prev = self.get(&path)?;
                    self.upsert(&Entry {
                        path: path.clone(),
                        agent: agent_of(&path).to_string(),
                        size: *s,
                        sha256: None,
                        modified_ms: *m,
                        archived_ms: prev.map_or_else(now_ms, |p| p.archived_ms),
                        appended_ms: Some(now_ms()),
                    })?;
                    updated += 1;
                }
                Some(_) => {}
            }
            seen.insert(path);
        }
        for (path, (size, m)) in on_disk {
            if !seen.contains(&path) {
                self.upsert(&Entry {
                    agent: agent_of(&path).to_string(),
                    path,
                    size,
                    sha256: None,
                    modified_ms: m,
                    archived_ms: now_ms(),
                    appended_ms: None,
                })?;
                added += 1;
            }
        }
        Ok((added, removed, updated))
    }
}

fn entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    Ok(Entry {
        path: r.get(0)?,
        agent: r.get(1)?,
        size: r.get::<_, i64>(2)? as u64,
        sha256: r.get(3)?,
        modified_ms: r.get(4)?,
        archived_ms: r.get(5)?,
        appended_ms: r.get(6)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_listings_read_only_their_index() {
        let d = tempfile::tempdir().unwrap();
        let c = Catalog::open(&d.path().join("catalog.db")).unwrap();
        let conn = c.lock();
        let plan: String = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {LIST_FILES}"))
            .unwrap()
            .query_map(params!["/agent01"], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<Vec<_>>>()
            .unwrap()
            .join("; ");
        assert!(plan.contains("COVERING INDEX files_dir_listing"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "sorted by the index: {plan}");
    }

    #[test]
    fn folder_totals_are_exact_within_their_budget() {
        let d = tempfile::tempdir().unwrap();
        let c = Catalog::open(&d.path().join("catalog.db")).unwrap();
        let e = |path: &str, size: u64, modified_ms: i64| Entry {
            path: path.into(),
            agent: agent_of(path).into(),
            size,
            sha256: None,
            modified_ms,
            archived_ms: 0,
            appended_ms: None,
        };
        c.upsert_all(&[
            e("/a1/Logs/App/x.log", 10, 5),
            e("/a1/Logs/App/2024/y.log", 20, 9),
            e("/a1/Logs/z.log", 1, 7),
            e("/a1/Other/w.log", 100, 3),
            e("/a1/top.log", 1000, 1),
            e("/a2/q.log", 7, 2),
        ])
        .unwrap();
        let t = c.dir_totals("/a1", 100).unwrap();
        let want = |files, bytes, modified_ms| DirTotals {
            files,
            bytes,
            modified_ms,
        };
        assert_eq!(t.len(), 2, "{t:?}");
        assert_eq!(t["/a1/Logs"], want(3, 31, 9));
        assert_eq!(t["/a1/Other"], want(1, 100, 3));
        let root = c.dir_totals("/", 100).unwrap();
        assert_eq!(root["/a1"], want(5, 1131, 9));
        assert_eq!(root["/a2"], want(1, 7, 2));
        // A budget that ends inside a folder leaves that folder out rather than undercount.
        let t = c.dir_totals("/a1", 2).unwrap();
        assert!(t.is_empty(), "{t:?}");
        let t = c.dir_totals("/", 5).unwrap();
        assert_eq!(t.keys().collect::<Vec<_>>(), ["/a1"]);
        // Read from the covering index, not the table.
        let conn = c.read();
        let plan: String = conn
            .prepare(
                "EXPLAIN QUERY PLAN SELECT dir, COUNT(*), SUM(size), MAX(modified_ms) FROM \
               (SELECT dir, size, modified_ms FROM files WHERE dir >= ?1 AND dir < ?2 \
                ORDER BY dir LIMIT ?3) GROUP BY dir ORDER BY dir",
            )
            .unwrap()
            .query_map(params!["/a1/", "/a10", 10], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<Vec<_>>>()
            .unwrap()
            .join("; ");
        assert!(plan.contains("COVERING INDEX files_dir_listing"), "{plan}");
    }

    #[test]
    fn generations_are_found_by_their_local_names() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("archive");
        std::fs::create_dir_all(root.join("agent01/Logs")).unwrap();
        std::fs::write(root.join("agent01/Logs/service.log.~3~"), b"x").unwrap();
        std::fs::write(root.join("agent01/Logs/other.log"), b"y").unwrap();
        let c = Catalog::open(&d.path().join("catalog.db")).unwrap();
        c.reconcile(&root).unwrap();
        let ev = |path: &str, name: &str| FtpEvent::Alias {
            user: "agent01".into(),
            path: path.into(),
            name: name.into(),
        };
        c.apply(
            &ev("/agent01/Logs/service.log.~3~", "Logs/service.log.1"),
            &root,
        )
        .unwrap();
        c.apply(
            &ev("/agent01/Logs/service.log.~3~", "Logs/service.log.2.gz"),
            &root,
        )
        .unwrap();
        // Never for bookkeeping files, and never more than MAX_ALIASES a file.
        c.apply(&ev("/agent01/.logarchive/status.json", "x"), &root)
            .unwrap();
        for i in 0..40 {
            c.add_alias("/agent01/Logs/other.log", &format!("o{i}"))
                .unwrap();
        }
        assert_eq!(
            c.aliases("/agent01/Logs/other.log").unwrap().len(),
            MAX_ALIASES
        );
        let q = |name: &str| {
            c.search(&NameQuery {
                name: name.into(),
                ..Default::default()
            })
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect::<Vec<_>>()
        };
        assert_eq!(q("service.log.1"), ["/agent01/Logs/service.log.~3~"]);
        assert_eq!(q("service.log.2*"), ["/agent01/Logs/service.log.~3~"]);
        assert_eq!(
            c.aliases_in("/agent01/Logs").unwrap()["/agent01/Logs/service.log.~3~"],
            ["Logs/service.log.1", "Logs/service.log.2.gz"]
        );
        assert!(
            c.aliases_in("/agent01").unwrap().is_empty(),
            "only files directly in it"
        );
        // A removed file takes its names with it.
        std::fs::remove_file(root.join("agent01/Logs/service.log.~3~")).unwrap();
        c.reconcile(&root).unwrap();
        assert!(q("service.log.1").is_empty());
    }

    #[test]
    fn only_completed_final_files_are_catalogued() {
        assert!(catalogued("/agent01/Logs/a.txt"));
        assert!(!catalogued("/agent01/Logs/.a.txt.logarchive-tmp"));
        assert!(!catalogued("/agent01/.logarchive/status.json"));
        assert!(!catalogued("/loose-file-at-the-root"));
    }

    #[test]
    fn search_list_and_reconcile() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("archive");
        std::fs::create_dir_all(root.join("agent01/Logs/App")).unwrap();
        std::fs::write(root.join("agent01/Logs/App/server-error.log"), b"x").unwrap();
        std::fs::write(root.join("agent01/Logs/App/.tmp.logarchive-tmp"), b"x").unwrap();
        std::fs::create_dir_all(root.join("agent02")).unwrap();
        std::fs::write(root.join("agent02/access.txt"), b"yy").unwrap();
        let c = Catalog::open(&d.path().join("catalog.db")).unwrap();
        assert_eq!(c.reconcile(&root).unwrap(), (2, 0, 0));
        let (dirs, files) = c.list("/").unwrap();
        assert_eq!(dirs, vec!["/agent01", "/agent02"]);
        assert!(files.is_empty());
        let (dirs, files) = c.list("/agent01/Logs").unwrap();
        assert_eq!(
            (dirs, files.len()),
            (vec!["/agent01/Logs/App".to_string()], 0)
        );
        let q = |name: &str, agent: Option<&str>| {
            c.search(&NameQuery {
                name: name.into(),
                agent: agent.map(str::to_string),
                ..Default::default()
            })
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect::<Vec<_>>()
        };
        assert_eq!(
            q("ERROR", None),
            vec!["/agent01/Logs/App/server-error.log"],
            "substring, any case"
        );
        assert_eq!(q("*.txt", None), vec!["/agent02/access.txt"]);
        // Globs are case-sensitive.
        assert_eq!(
            q("server-*.log", None),
            vec!["/agent01/Logs/App/server-error.log"]
        );
        assert!(q("SERVER-*.log", None).is_empty());
        assert_eq!(q("acc[e]ss.tx?", None), vec!["/agent02/access.txt"]);
        assert_eq!(q("", Some("agent02")), vec!["/agent02/access.txt"]);
        assert_eq!(q("lo", None).len(), 1, "short substrings work too");
        std::fs::remove_file(root.join("agent02/access.txt")).unwrap();
        std::fs::write(root.join("agent01/Logs/App/server-error.log"), b"xx").unwrap();
        assert_eq!(c.reconcile(&root).unwrap(), (0, 1, 1));
        assert_eq!(c.count().unwrap(), 1);
    }
}
