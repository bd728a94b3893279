//! The metadata in PostgreSQL, shared by every server of an archive: the same tree, segments
//! and garbage as `sqlite.rs`, for servers that share one bucket.
//!
//! How it keeps the invariants of the module above when several processes change the rows:
//! - Every change is one transaction (read committed, repeated after a deadlock) that locks
//!   what its checks rely on before it checks them, so they hold at its commit as they do
//!   under SQLite's single writer: a change to a file locks the file's row (`FOR UPDATE`: the
//!   file is still that long); a new name locks its folder's row (`FOR SHARE`: the folder is
//!   not removed meanwhile) and the unique (parent, name) index keeps one of two creators; a
//!   change that drops segments locks each of their object keys (an advisory lock) before it
//!   asks whether another segment still names the object, so of two files sharing a packed
//!   object the last to let go hands it to the collector; folder moves take one lock between
//!   them (no two can make a cycle). Serializable transactions were tried first and measured:
//!   new files in one folder conflict in them (each reads the folder's range of names), and
//!   two servers then archived a third of what one did.
//! - Garbage is claimed before it is deleted: the collector marks the rows it is about to
//!   delete (`deleted_ms`) in the statement that picks them, and an upload, the packer or the
//!   compactor takes its key out of garbage only while it is unmarked. So an object is either
//!   recorded in a segment or deleted, never both, whichever server does which.
//! - A PUT under way keeps its garbage row young ([`MetaStore::touch_garbage`], ten times per
//!   grace period, by its process), so no other server's collector picks it.
//! - Inline segments are claimed by one packer at a time (`claimed_ms`, for a minute): two
//!   servers do not upload the same bytes twice.
//!
//! The calls are blocking, as SQLite's are, and are made from async code: a blocking
//! PostgreSQL client may not run there (its runtime would nest in the caller's), so a few
//! threads own the connections (`pool.rs`) and the caller waits for their answer. While
//! PostgreSQL is unreachable, calls fail at once with `NotConnected` (FTP 451) for a second
//! after each failed connection instead of each waiting for its own timeout.

mod import;
mod pool;

pub(crate) use import::copy_from_sqlite;
pub use import::MetadataCopied;
pub(crate) use pool::PgMeta;

use super::{
    exists, not_a_dir, not_a_file, not_found, now_ms, paths_of, Inline, MetaStore, Node, Segment,
    MIN_PACK, ROOT,
};
use crate::sha::Sha256State;
use crate::vpath::VirtualPath;
use pool::{E, Q, R};
use postgres::{GenericClient, IsolationLevel, Row};
use std::collections::{HashMap, HashSet};
use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

/// How long a packer's claim on inline segments holds.
const CLAIM_MS: i64 = 60_000;

/// The tables, created by the server's migrations (one step of its versioned schema).
pub const SCHEMA: &str = r#"
    -- The S3 back-end's tree: one row per folder and file (root: id 1).
    CREATE TABLE s3_node (
        id BIGSERIAL PRIMARY KEY,
        parent BIGINT NOT NULL,
        name TEXT COLLATE "C" NOT NULL,
        dir BOOLEAN NOT NULL,
        size BIGINT NOT NULL DEFAULT 0,
        mtime_ms BIGINT NOT NULL,
        -- The SHA-256 state of the whole file, while known.
        sha BYTEA,
        UNIQUE (parent, name)
    );
    INSERT INTO s3_node (id, parent, name, dir, size, mtime_ms) VALUES (1, 0, '', true, 0, 0);
    SELECT setval(pg_get_serial_sequence('s3_node', 'id'), 1);
    CREATE INDEX s3_node_quiet ON s3_node (mtime_ms) WHERE NOT dir;
    -- A file's byte ranges: `len` bytes of object `key` from `off`, or inline in `data`
    -- (key '') until packed; `zsize` for a compressed object.
    CREATE TABLE s3_segment (
        node BIGINT NOT NULL,
        start BIGINT NOT NULL,
        len BIGINT NOT NULL,
        key TEXT COLLATE "C" NOT NULL,
        off BIGINT NOT NULL DEFAULT 0,
        data BYTEA,
        made_ms BIGINT NOT NULL DEFAULT 0,
        zsize BIGINT,
        -- An inline segment a packer took (it is being uploaded), when.
        claimed_ms BIGINT,
        PRIMARY KEY (node, start)
    );
    CREATE INDEX s3_segment_key ON s3_segment (key);
    -- Objects to delete: since when, and when the collector deleted (claimed) them once.
    CREATE TABLE s3_garbage (
        key TEXT COLLATE "C" PRIMARY KEY,
        since_ms BIGINT NOT NULL,
        deleted_ms BIGINT
    );
"#;

fn node_of(r: &Row) -> R<Node> {
    let sha: Option<Vec<u8>> = r.try_get(4)?;
    Ok(Node {
        id: r.try_get(0)?,
        dir: r.try_get(1)?,
        size: r.try_get::<_, i64>(2)? as u64,
        mtime_ms: r.try_get(3)?,
        sha: sha.and_then(|b| Sha256State::from_bytes(&b)),
    })
}

/// Paths up to this deep are found in one statement.
const CHAIN: usize = 16;

/// The statement that finds a path of `depth` names, and when it is not there, how far it
/// goes: per name, a subquery that finds it below the one before (`LATERAL`, kept apart by
/// `OFFSET 0`), so each is a lookup in the unique (parent, name) index whatever the table's
/// statistics say. Per name its id and whether it is a folder (NULL from the first missing
/// one on), then the last one's size, time and hash.
///
/// Measured before: a plain join of the names, planned freely, was at times started from the
/// last name (a scan of the whole index for it: 1 to 4.5 ms per lookup at 6,000 files instead
/// of 0.03 ms, and 10x the database's CPU); a recursive query was planned as a hash of the
/// whole table per step (0.5 to 3 ms); a walk name by name costs a statement per name.
fn chain_sql(depth: usize) -> &'static str {
    static SQL: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    const COLUMNS: &str = "id, dir, size, mtime_ms, sha";
    SQL.get_or_init(|| {
        (1..=CHAIN)
            .map(|d| {
                let mut cols: Vec<String> = (1..=d).map(|k| format!("n{k}.id, n{k}.dir")).collect();
                cols.push(format!("n{d}.size, n{d}.mtime_ms, n{d}.sha"));
                let mut sql = format!(
                    "SELECT {} FROM (SELECT {COLUMNS} FROM s3_node WHERE parent = 1 AND name = $1) n1",
                    cols.join(", ")
                );
                for k in 2..=d {
                    sql += &format!(
                        " LEFT JOIN LATERAL (SELECT {COLUMNS} FROM s3_node \
                         WHERE parent = n{p}.id AND name = ${k} OFFSET 0) n{k} ON true",
                        p = k - 1
                    );
                }
                // Built once for the process: the statement cache keys on &'static str.
                &*Box::leak(sql.into_boxed_str())
            })
            .collect()
    })[depth - 1]
}

/// The row at `parts`, telling "no such name" from "not a folder" on the way: one statement
/// up to [`CHAIN`] names, else a walk from the root, name by name.
fn lookup<C: GenericClient>(q: &mut Q<'_, C>, parts: &[String]) -> R<Node> {
    if parts.is_empty() {
        return node_by_id(q, ROOT);
    }
    let d = parts.len();
    if d <= CHAIN {
        let params: Vec<&(dyn postgres::types::ToSql + Sync)> = parts
            .iter()
            .map(|p| p as &(dyn postgres::types::ToSql + Sync))
            .collect();
        // No row: the first name is not in the root.
        let r = q.row(chain_sql(d), &params)?.ok_or_else(not_found)?;
        for k in 1..d {
            if r.try_get::<_, Option<i64>>(2 * k)?.is_none() {
                // The first missing name: below a file, or missing from its folder.
                let above_is_dir: Option<bool> = r.try_get(2 * k - 1)?;
                return Err(if above_is_dir == Some(true) {
                    not_found()
                } else {
                    not_a_dir()
                }
                .into());
            }
        }
        let sha: Option<Vec<u8>> = r.try_get(2 * d + 2)?;
        return Ok(Node {
            id: r.try_get(2 * d - 2)?,
            dir: r.try_get(2 * d - 1)?,
            size: r.try_get::<_, i64>(2 * d)? as u64,
            mtime_ms: r.try_get(2 * d + 1)?,
            sha: sha.and_then(|b| Sha256State::from_bytes(&b)),
        });
    }
    let mut node = node_by_id(q, ROOT)?;
    for part in parts {
        if !node.dir {
            return Err(not_a_dir().into());
        }
        let row = q.row(
            "SELECT id, dir, size, mtime_ms, sha FROM s3_node WHERE parent = $1 AND name = $2",
            &[&node.id, part],
        )?;
        node = node_of(&row.ok_or_else(not_found)?)?;
    }
    Ok(node)
}

fn node_by_id<C: GenericClient>(q: &mut Q<'_, C>, id: i64) -> R<Node> {
    let row = q
        .row(
            "SELECT id, dir, size, mtime_ms, sha FROM s3_node WHERE id = $1",
            &[&id],
        )?
        .ok_or_else(not_found)?;
    node_of(&row)
}

/// The folder that holds `parts` (it must exist) and the last name.
fn parent_of<'p, C: GenericClient>(q: &mut Q<'_, C>, parts: &'p [String]) -> R<(i64, &'p str)> {
    let (name, parent) = parts.split_last().ok_or_else(exists)?;
    let p = lookup(q, parent)?;
    if !p.dir {
        return Err(not_a_dir().into());
    }
    Ok((p.id, name))
}

/// The file's or folder's row, locked until the change commits (`None`: it is gone).
fn lock_node<C: GenericClient>(q: &mut Q<'_, C>, id: i64) -> R<Option<Node>> {
    q.row(
        "SELECT id, dir, size, mtime_ms, sha FROM s3_node WHERE id = $1 FOR UPDATE",
        &[&id],
    )?
    .map(|r| node_of(&r))
    .transpose()
}

/// [`lock_node`] of a row that must still be there.
fn locked<C: GenericClient>(q: &mut Q<'_, C>, id: i64) -> R<Node> {
    lock_node(q, id)?.ok_or_else(|| not_found().into())
}

/// Locks the objects `keys` name (sorted: two changes never wait on each other in a circle),
/// so whether another segment still names one is asked by one change at a time.
fn lock_keys<C: GenericClient>(q: &mut Q<'_, C>, mut keys: Vec<String>) -> R<()> {
    keys.sort();
    keys.dedup();
    for k in &keys {
        q.exec(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 1815))",
            &[k],
        )?;
    }
    Ok(())
}

/// Object keys of the file's segments from `start` on (`below`: before `start`).
fn keys_of<C: GenericClient>(q: &mut Q<'_, C>, id: i64, start: i64, below: bool) -> R<Vec<String>> {
    let rows = if below {
        q.rows(
            "SELECT DISTINCT key FROM s3_segment WHERE node = $1 AND start < $2 AND key <> ''",
            &[&id, &start],
        )?
    } else {
        q.rows(
            "SELECT DISTINCT key FROM s3_segment WHERE node = $1 AND start >= $2 AND key <> ''",
            &[&id, &start],
        )?
    };
    rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
}

fn insert<C: GenericClient>(q: &mut Q<'_, C>, parent: i64, name: &str, dir: bool) -> R<i64> {
    // The folder stays until this commits (its removal waits, then finds it not empty).
    let folder = q.row(
        "SELECT dir FROM s3_node WHERE id = $1 FOR SHARE",
        &[&parent],
    )?;
    match folder.map(|r| r.try_get::<_, bool>(0)).transpose()? {
        None => return Err(not_found().into()),
        Some(false) => return Err(not_a_dir().into()),
        Some(true) => {}
    }
    let sha = (!dir).then(|| Sha256State::new().to_bytes().to_vec());
    let row = q.row(
        "INSERT INTO s3_node (parent, name, dir, size, mtime_ms, sha) \
         VALUES ($1, $2, $3, 0, $4, $5) ON CONFLICT (parent, name) DO NOTHING RETURNING id",
        &[&parent, &name, &dir, &now_ms(), &sha],
    )?;
    match row {
        Some(r) => Ok(r.try_get(0)?),
        None => Err(exists().into()),
    }
}

/// A segment may start at `start` only if the file is that long (the upload's view holds).
fn check_size<C: GenericClient>(q: &mut Q<'_, C>, id: i64, start: u64) -> R<()> {
    let row = q.row("SELECT size FROM s3_node WHERE id = $1 FOR UPDATE", &[&id])?;
    match row {
        None => Err(not_found().into()), // removed meanwhile: a PUT object stays garbage
        Some(r) => {
            let s: i64 = r.try_get(0)?;
            if s as u64 != start {
                return Err(io::Error::other(format!(
                    "the file changed during the upload (size {s}, segment at {start})"
                ))
                .into());
            }
            Ok(())
        }
    }
}

fn grow<C: GenericClient>(q: &mut Q<'_, C>, id: i64, size: u64) -> R<()> {
    q.exec(
        "UPDATE s3_node SET size = $2, sha = NULL, mtime_ms = $3 WHERE id = $1",
        &[&id, &(size as i64), &now_ms()],
    )?;
    Ok(())
}

/// Takes `key` out of garbage: its object is now named by a segment. Fails if the collector
/// claimed it meanwhile (the upload outlived the grace period without its process touching
/// it): the object is gone or going, the change must not refer to it.
fn keep<C: GenericClient>(q: &mut Q<'_, C>, key: &str) -> R<()> {
    let n = q.exec(
        "DELETE FROM s3_garbage WHERE key = $1 AND deleted_ms IS NULL",
        &[&key],
    )?;
    if n == 0 {
        return Err(io::Error::other(format!(
            "object {key} was collected before it was recorded (its upload outlived the \
             grace period)"
        ))
        .into());
    }
    Ok(())
}

/// Hands the objects of the file's segments from `at` on to the collector (those no other
/// segment names), then cuts the file to `at` bytes. The file's row is locked by the caller.
fn truncate<C: GenericClient>(q: &mut Q<'_, C>, id: i64, at: u64) -> R<()> {
    let at = at as i64;
    let keys = keys_of(q, id, at, false)?;
    lock_keys(q, keys)?;
    q.exec(
        "INSERT INTO s3_garbage (key, since_ms) \
         SELECT DISTINCT s.key, $3::bigint FROM s3_segment s \
         WHERE s.node = $1 AND s.start >= $2 AND s.key <> '' \
         AND NOT EXISTS (SELECT 1 FROM s3_segment o WHERE o.key = s.key \
                         AND (o.node <> $1 OR o.start < $2)) \
         ON CONFLICT (key) DO UPDATE SET since_ms = EXCLUDED.since_ms, deleted_ms = NULL",
        &[&id, &at, &now_ms()],
    )?;
    q.exec(
        "DELETE FROM s3_segment WHERE node = $1 AND start >= $2",
        &[&id, &at],
    )?;
    q.exec(
        "UPDATE s3_segment SET len = $2 - start WHERE node = $1 AND start + len > $2",
        &[&id, &at],
    )?;
    Ok(())
}

fn drop_file<C: GenericClient>(q: &mut Q<'_, C>, id: i64) -> R<()> {
    truncate(q, id, 0)?;
    q.exec("DELETE FROM s3_node WHERE id = $1", &[&id])?;
    Ok(())
}

fn segments<C: GenericClient>(q: &mut Q<'_, C>, id: i64) -> R<Vec<Segment>> {
    q.rows(
        "SELECT start, len, key, off, data, zsize FROM s3_segment WHERE node = $1 ORDER BY start",
        &[&id],
    )?
    .iter()
    .map(|r| {
        Ok(Segment {
            start: r.try_get::<_, i64>(0)? as u64,
            len: r.try_get::<_, i64>(1)? as u64,
            key: r.try_get(2)?,
            off: r.try_get::<_, i64>(3)? as u64,
            data: r.try_get::<_, Option<Vec<u8>>>(4)?.map(bytes::Bytes::from),
            zsize: r.try_get::<_, Option<i64>>(5)?.map(|z| z as u64),
        })
    })
    .collect()
}

fn paths<C: GenericClient>(q: &mut Q<'_, C>) -> R<HashMap<i64, String>> {
    let mut names = HashMap::new();
    for r in q.rows("SELECT id, parent, name FROM s3_node", &[])? {
        names.insert(r.try_get(0)?, (r.try_get(1)?, r.try_get(2)?));
    }
    Ok(paths_of(&names))
}

fn parts(path: &VirtualPath) -> Vec<String> {
    path.parts().to_vec()
}

impl MetaStore for PgMeta {
    fn lookup(&self, path: &VirtualPath) -> io::Result<Node> {
        let parts = parts(path);
        self.call(move |c| lookup(&mut c.q(), &parts))
    }

    fn list(&self, dir: &VirtualPath) -> io::Result<Vec<(String, Node)>> {
        let parts = parts(dir);
        self.call(move |c| {
            let mut q = c.q();
            let d = lookup(&mut q, &parts)?;
            if !d.dir {
                return Err(not_a_dir().into());
            }
            q.rows(
                "SELECT id, dir, size, mtime_ms, sha, name FROM s3_node \
                 WHERE parent = $1 AND id <> 1",
                &[&d.id],
            )?
            .iter()
            .map(|r| Ok((r.try_get(5)?, node_of(r)?)))
            .collect()
        })
    }

    fn mkdir(&self, path: &VirtualPath) -> io::Result<()> {
        let parts = parts(path);
        self.call(move |c| {
            c.write(|q| {
                let (parent, name) = parent_of(q, &parts)?;
                insert(q, parent, name, true).map(|_| ())
            })
        })
    }

    fn create_file(&self, path: &VirtualPath) -> io::Result<i64> {
        let parts = parts(path);
        self.call(move |c| {
            c.write(|q| {
                let (parent, name) = parent_of(q, &parts)?;
                insert(q, parent, name, false)
            })
        })
    }

    fn open_replace(&self, path: &VirtualPath, at: u64) -> io::Result<(i64, Option<Sha256State>)> {
        let parts = parts(path);
        self.call(move |c| {
            c.write(|q| {
                let n = match lookup(q, &parts) {
                    Ok(n) => locked(q, n.id)?,
                    Err(E::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                        let (parent, name) = parent_of(q, &parts)?;
                        let id = insert(q, parent, name, false)?;
                        return Ok((id, (at == 0).then(Sha256State::new)));
                    }
                    Err(e) => return Err(e),
                };
                if n.dir {
                    return Err(not_a_file().into());
                }
                if at > n.size {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "offset past the end of the file",
                    )
                    .into());
                }
                let prefix = if at == 0 {
                    Some(Sha256State::new())
                } else {
                    n.sha.clone().filter(|h| h.len() == at)
                };
                if at < n.size {
                    truncate(q, n.id, at)?;
                    let sha = prefix.as_ref().map(|h| h.to_bytes().to_vec());
                    q.exec(
                        "UPDATE s3_node SET size = $2, sha = $3, mtime_ms = $4 WHERE id = $1",
                        &[&n.id, &(at as i64), &sha, &now_ms()],
                    )?;
                }
                Ok((n.id, prefix))
            })
        })
    }

    fn segments(&self, id: i64) -> io::Result<Vec<Segment>> {
        self.call(move |c| segments(&mut c.q(), id))
    }

    fn node(&self, id: i64) -> io::Result<Node> {
        self.call(move |c| node_by_id(&mut c.q(), id))
    }

    fn pending(&self, key: &str) -> io::Result<()> {
        let key = key.to_string();
        self.call(move |c| {
            c.q().exec(
                "INSERT INTO s3_garbage (key, since_ms) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET since_ms = EXCLUDED.since_ms, deleted_ms = NULL",
                &[&key, &now_ms()],
            )?;
            Ok(())
        })
    }

    fn add_inline(&self, id: i64, start: u64, data: &[u8]) -> io::Result<()> {
        let data = data.to_vec();
        self.call(move |c| {
            c.write(|q| {
                check_size(q, id, start)?;
                q.exec(
                    "INSERT INTO s3_segment (node, start, len, key, off, data, made_ms) \
                     VALUES ($1, $2, $3, '', 0, $4, $5)",
                    &[&id, &(start as i64), &(data.len() as i64), &data, &now_ms()],
                )?;
                grow(q, id, start + data.len() as u64)
            })
        })
    }

    fn inline_bytes(&self) -> io::Result<u64> {
        self.call(|c| {
            let r = c.q().row(
                "SELECT coalesce(sum(len), 0)::bigint FROM s3_segment WHERE key = ''",
                &[],
            )?;
            Ok(r.map(|r| r.try_get::<_, i64>(0)).transpose()?.unwrap_or(0) as u64)
        })
    }

    fn inline_batch(&self, before_ms: i64, max_bytes: u64) -> io::Result<Vec<Inline>> {
        self.call(move |c| {
            // Read committed: rows another packer holds are skipped, not waited for.
            c.tx(IsolationLevel::ReadCommitted, |q| {
                let now = now_ms();
                let stale = now - CLAIM_MS;
                let Some(r) = q.row(
                    "SELECT min(made_ms), coalesce(sum(len), 0)::bigint FROM s3_segment \
                     WHERE key = '' AND (claimed_ms IS NULL OR claimed_ms < $1)",
                    &[&stale],
                )?
                else {
                    return Ok(Vec::new());
                };
                let (oldest, total): (Option<i64>, i64) = (r.try_get(0)?, r.try_get(1)?);
                if oldest.is_none_or(|t| t >= before_ms) && (total as u64) < max_bytes {
                    return Ok(Vec::new());
                }
                let rows = q.rows(
                    "SELECT node, start, len, data FROM s3_segment \
                     WHERE key = '' AND (claimed_ms IS NULL OR claimed_ms < $1) \
                     ORDER BY made_ms, node, start LIMIT 4096 FOR UPDATE SKIP LOCKED",
                    &[&stale],
                )?;
                let (mut out, mut bytes) = (Vec::new(), 0u64);
                let (mut nodes, mut starts) = (Vec::new(), Vec::new());
                for r in rows {
                    let len = r.try_get::<_, i64>(2)? as u64;
                    if !out.is_empty() && bytes + len > max_bytes {
                        break;
                    }
                    let node: i64 = r.try_get(0)?;
                    let start: i64 = r.try_get(1)?;
                    let data: Option<Vec<u8>> = r.try_get(3)?;
                    nodes.push(node);
                    starts.push(start);
                    out.push((node, start as u64, len, data.unwrap_or_default()));
                    bytes += len;
                }
                q.exec(
                    "UPDATE s3_segment s SET claimed_ms = $3 \
                     FROM unnest($1::bigint[], $2::bigint[]) AS u(node, start) \
                     WHERE s.node = u.node AND s.start = u.start",
                    &[&nodes, &starts, &now],
                )?;
                Ok(out)
            })
        })
    }

    fn packed(&self, key: &str, packed: &[(i64, u64, u64, u64)]) -> io::Result<usize> {
        let key = key.to_string();
        let nodes: Vec<i64> = packed.iter().map(|p| p.0).collect();
        let starts: Vec<i64> = packed.iter().map(|p| p.1 as i64).collect();
        let lens: Vec<i64> = packed.iter().map(|p| p.2 as i64).collect();
        let offs: Vec<i64> = packed.iter().map(|p| p.3 as i64).collect();
        self.call(move |c| {
            c.write(|q| {
                // The files stay as they are until this commits: a file cut or removed
                // meanwhile drops its segments after (and hands the object on if it was the
                // last to use it), or before (and its segments are not packed here).
                let mut ids = nodes.clone();
                ids.sort_unstable();
                ids.dedup();
                q.exec(
                    "SELECT 1 FROM (SELECT id FROM s3_node WHERE id = ANY($1) ORDER BY id \
                     FOR SHARE) locked",
                    &[&ids],
                )?;
                let n = q.exec(
                    "UPDATE s3_segment s SET key = $1, off = u.off, data = NULL, claimed_ms = NULL \
                     FROM unnest($2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[]) \
                       AS u(node, start, len, off) \
                     WHERE s.node = u.node AND s.start = u.start AND s.len = u.len \
                       AND s.key = ''",
                    &[&key, &nodes, &starts, &lens, &offs],
                )?;
                if n > 0 {
                    keep(q, &key)?;
                }
                Ok(n as usize)
            })
        })
    }

    fn add_segment(&self, id: i64, start: u64, len: u64, key: &str) -> io::Result<()> {
        let key = key.to_string();
        self.call(move |c| {
            c.write(|q| {
                check_size(q, id, start)?;
                q.exec(
                    "INSERT INTO s3_segment (node, start, len, key) VALUES ($1, $2, $3, $4)",
                    &[&id, &(start as i64), &(len as i64), &key],
                )?;
                keep(q, &key)?;
                grow(q, id, start + len)
            })
        })
    }

    fn finish(&self, id: i64, hash: Option<&Sha256State>) -> io::Result<Node> {
        let hash = hash.cloned();
        self.call(move |c| {
            c.write(|q| {
                let n = locked(q, id)?;
                let sha = hash
                    .as_ref()
                    .filter(|h| h.len() == n.size)
                    .map(|h| h.to_bytes().to_vec());
                let row = q
                    .row(
                        "UPDATE s3_node SET sha = $2, mtime_ms = $3 WHERE id = $1 \
                         RETURNING id, dir, size, mtime_ms, sha",
                        &[&id, &sha, &now_ms()],
                    )?
                    .ok_or_else(not_found)?;
                node_of(&row)
            })
        })
    }

    fn remember_sha(&self, id: i64, hash: &Sha256State) -> io::Result<()> {
        let (sha, len) = (hash.to_bytes().to_vec(), hash.len() as i64);
        self.call(move |c| {
            c.q().exec(
                "UPDATE s3_node SET sha = $2 WHERE id = $1 AND size = $3",
                &[&id, &sha, &len],
            )?;
            Ok(())
        })
    }

    fn remove_file(&self, path: &VirtualPath) -> io::Result<()> {
        let parts = parts(path);
        self.call(move |c| {
            c.write(|q| {
                let n = lookup(q, &parts)?;
                let n = locked(q, n.id)?;
                if n.dir {
                    return Err(not_a_file().into());
                }
                drop_file(q, n.id)
            })
        })
    }

    fn remove_dir(&self, path: &VirtualPath) -> io::Result<()> {
        let parts = parts(path);
        self.call(move |c| {
            c.write(|q| {
                let n = lookup(q, &parts)?;
                // A new name in it waits for this (or this for it: then it is not empty).
                let n = locked(q, n.id)?;
                if !n.dir {
                    return Err(not_a_dir().into());
                }
                if n.id == ROOT {
                    return Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        "the root cannot be removed",
                    )
                    .into());
                }
                if q.row("SELECT 1 FROM s3_node WHERE parent = $1 LIMIT 1", &[&n.id])?
                    .is_some()
                {
                    return Err(io::Error::new(
                        io::ErrorKind::DirectoryNotEmpty,
                        "the folder is not empty",
                    )
                    .into());
                }
                q.exec("DELETE FROM s3_node WHERE id = $1", &[&n.id])?;
                Ok(())
            })
        })
    }

    fn rename(&self, from: &VirtualPath, to: &VirtualPath, replace: bool) -> io::Result<Node> {
        let (from, to) = (parts(from), parts(to));
        self.call(move |c| {
            c.write(|q| {
                let mut n = lookup(q, &from)?;
                if n.dir {
                    // One folder move at a time, and the paths looked up again after: two
                    // moves cannot put each folder inside the other.
                    q.exec(
                        "SELECT pg_advisory_xact_lock(hashtextextended('s3 folder move', 1815))",
                        &[],
                    )?;
                    n = lookup(q, &from)?;
                }
                let n = locked(q, n.id)?;
                if n.id == ROOT {
                    return Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        "the root cannot be renamed",
                    )
                    .into());
                }
                if to.starts_with(&from) && to.len() > from.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "a folder cannot move into itself",
                    )
                    .into());
                }
                let (parent, name) = parent_of(q, &to)?;
                // The target folder stays until this commits.
                if q.row(
                    "SELECT 1 FROM s3_node WHERE id = $1 AND dir FOR SHARE",
                    &[&parent],
                )?
                .is_none()
                {
                    return Err(not_found().into());
                }
                match lookup(q, &to) {
                    Ok(t) if t.id == n.id => return Ok(n),
                    Ok(_) if !replace => return Err(exists().into()),
                    Ok(t) if t.dir || n.dir => return Err(exists().into()),
                    Ok(t) => {
                        let t = locked(q, t.id)?;
                        drop_file(q, t.id)?
                    }
                    Err(E::Io(e)) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                q.exec(
                    "UPDATE s3_node SET parent = $2, name = $3 WHERE id = $1",
                    &[&n.id, &parent, &name],
                )?;
                node_by_id(q, n.id)
            })
        })
    }

    fn set_modified(&self, path: &VirtualPath, time: SystemTime) -> io::Result<()> {
        let ms = time
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let parts = parts(path);
        self.call(move |c| {
            c.write(|q| {
                let n = lookup(q, &parts)?;
                if n.dir {
                    return Err(not_a_file().into());
                }
                q.exec(
                    "UPDATE s3_node SET mtime_ms = $2 WHERE id = $1",
                    &[&n.id, &ms],
                )?;
                Ok(())
            })
        })
    }

    /// Also claims them: each row picked for its first delete is marked deleted in the same
    /// statement, so no upload records its key any more (see [`keep`]).
    fn due_garbage(
        &self,
        before_ms: i64,
        deleted_before_ms: i64,
        skip: usize,
        limit: usize,
    ) -> io::Result<Vec<(String, bool)>> {
        let (limit, skip) = (limit as i64, skip as i64);
        self.call(move |c| {
            c.q()
                .rows(
                    "WITH due AS ( \
                       SELECT key, deleted_ms IS NOT NULL AS again FROM s3_garbage \
                       WHERE since_ms < $1 AND (deleted_ms IS NULL OR deleted_ms < $2) \
                       ORDER BY key LIMIT $3 OFFSET $4 FOR UPDATE SKIP LOCKED), \
                     marked AS ( \
                       UPDATE s3_garbage g SET deleted_ms = $5 FROM due \
                       WHERE g.key = due.key AND NOT due.again RETURNING g.key) \
                     SELECT key, again FROM due ORDER BY key",
                    &[&before_ms, &deleted_before_ms, &limit, &skip, &now_ms()],
                )?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect()
        })
    }

    fn forget_garbage(&self, keys: &[(String, bool)]) -> io::Result<()> {
        let (second, first): (Vec<_>, Vec<_>) = keys.iter().cloned().partition(|k| k.1);
        let second: Vec<String> = second.into_iter().map(|k| k.0).collect();
        let first: Vec<String> = first.into_iter().map(|k| k.0).collect();
        self.call(move |c| {
            c.write(|q| {
                q.exec("DELETE FROM s3_garbage WHERE key = ANY($1)", &[&second])?;
                q.exec(
                    "UPDATE s3_garbage SET deleted_ms = $2 WHERE key = ANY($1)",
                    &[&first, &now_ms()],
                )?;
                Ok(())
            })
        })
    }

    fn shared(&self) -> bool {
        true
    }

    fn touch_garbage(&self, keys: &[String]) -> io::Result<()> {
        let keys = keys.to_vec();
        self.call(move |c| {
            c.q().exec(
                "UPDATE s3_garbage SET since_ms = $2 WHERE key = ANY($1) AND deleted_ms IS NULL",
                &[&keys, &now_ms()],
            )?;
            Ok(())
        })
    }

    fn all_segments(&self) -> io::Result<Vec<(String, String, u64)>> {
        self.call(|c| {
            c.tx(IsolationLevel::RepeatableRead, |q| {
                let paths = paths(q)?;
                q.rows(
                    "SELECT node, key, CASE WHEN zsize IS NULL THEN off + len ELSE zsize END \
                     FROM s3_segment WHERE key <> ''",
                    &[],
                )?
                .iter()
                .map(|r| {
                    let node: i64 = r.try_get(0)?;
                    let path = paths.get(&node).cloned().unwrap_or_default();
                    Ok((path, r.try_get(1)?, r.try_get::<_, i64>(2)? as u64))
                })
                .collect()
            })
        })
    }

    fn stored_by_path(&self) -> io::Result<HashMap<String, u64>> {
        self.call(|c| {
            c.tx(IsolationLevel::RepeatableRead, |q| {
                let paths = paths(q)?;
                let mut out = HashMap::new();
                for r in q.rows(
                    "SELECT node, sum(CASE WHEN zsize IS NULL THEN len ELSE zsize END)::bigint \
                     FROM s3_segment GROUP BY node",
                    &[],
                )? {
                    let node: i64 = r.try_get(0)?;
                    if let Some(p) = paths.get(&node) {
                        out.insert(p.clone(), r.try_get::<_, i64>(1)? as u64);
                    }
                }
                Ok(out)
            })
        })
    }

    fn all_garbage(&self) -> io::Result<HashSet<String>> {
        self.call(|c| {
            c.q()
                .rows("SELECT key FROM s3_garbage", &[])?
                .iter()
                .map(|r| Ok(r.try_get(0)?))
                .collect()
        })
    }

    fn quiet_files(&self, before_ms: i64, limit: usize) -> io::Result<Vec<(i64, String)>> {
        let limit = limit as i64;
        self.call(move |c| {
            c.q()
                .rows(
                    "SELECT n.id, n.name FROM s3_node n \
                     WHERE NOT n.dir AND n.mtime_ms < $1 AND n.size >= $2 \
                     AND NOT EXISTS (SELECT 1 FROM s3_segment s WHERE s.node = n.id \
                                     AND s.start = 0 AND s.zsize IS NOT NULL AND s.len = n.size) \
                     ORDER BY n.mtime_ms LIMIT $3",
                    &[&before_ms, &(MIN_PACK as i64), &limit],
                )?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect()
        })
    }

    fn compacted(
        &self,
        id: i64,
        was: &[Segment],
        len: u64,
        key: &str,
        zsize: u64,
    ) -> io::Result<bool> {
        let (was, key) = (was.to_vec(), key.to_string());
        self.call(move |c| {
            c.write(|q| {
                let size = q.row("SELECT size FROM s3_node WHERE id = $1 FOR UPDATE", &[&id])?;
                let size: Option<i64> = size.map(|r| r.try_get(0)).transpose()?;
                if size.is_none_or(|s| (s as u64) < len) {
                    return Ok(false);
                }
                let now: Vec<Segment> = segments(q, id)?
                    .into_iter()
                    .filter(|s| s.start < len)
                    .collect();
                if now != was {
                    return Ok(false);
                }
                let (t, len) = (now_ms(), len as i64);
                let keys = keys_of(q, id, len, true)?;
                lock_keys(q, keys)?;
                q.exec(
                    "INSERT INTO s3_garbage (key, since_ms) \
                     SELECT DISTINCT s.key, $3::bigint FROM s3_segment s \
                     WHERE s.node = $1 AND s.start < $2 AND s.key <> '' \
                     AND NOT EXISTS (SELECT 1 FROM s3_segment o WHERE o.key = s.key \
                                     AND (o.node <> $1 OR o.start >= $2)) \
                     ON CONFLICT (key) DO UPDATE SET since_ms = EXCLUDED.since_ms, \
                       deleted_ms = NULL",
                    &[&id, &len, &t],
                )?;
                q.exec(
                    "DELETE FROM s3_segment WHERE node = $1 AND start < $2",
                    &[&id, &len],
                )?;
                q.exec(
                    "INSERT INTO s3_segment (node, start, len, key, off, made_ms, zsize) \
                     VALUES ($1, 0, $2, $3, 0, $4, $5)",
                    &[&id, &len, &key, &t, &(zsize as i64)],
                )?;
                keep(q, &key)?;
                Ok(true)
            })
        })
    }
}
