//! The metadata in SQLite (WAL mode), beside one server: one connection, every change one
//! immediate transaction. See the module above for the invariants.

use super::{
    exists, not_a_dir, not_a_file, not_found, now_ms, paths_of, Inline, MetaStore, Node, Segment,
    MIN_PACK, ROOT,
};
use crate::sha::Sha256State;
use crate::vpath::VirtualPath;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::collections::{HashMap, HashSet};
use std::io;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS node(
    id INTEGER PRIMARY KEY,
    parent INTEGER NOT NULL,
    name TEXT NOT NULL,
    dir INTEGER NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    mtime_ms INTEGER NOT NULL,
    sha BLOB,
    UNIQUE(parent, name));
INSERT OR IGNORE INTO node(id, parent, name, dir, size, mtime_ms) VALUES (1, 0, '', 1, 0, 0);
CREATE TABLE IF NOT EXISTS segment(
    node INTEGER NOT NULL,
    start INTEGER NOT NULL,
    len INTEGER NOT NULL,
    -- The object holding the bytes ('' while they are inline, in `data`), from byte `off`.
    key TEXT NOT NULL,
    off INTEGER NOT NULL DEFAULT 0,
    data BLOB,
    made_ms INTEGER NOT NULL DEFAULT 0,
    -- Set for a compressed object (seekable zstd of this many bytes): `off` and `len` are
    -- then offsets in what it decompresses to.
    zsize INTEGER,
    PRIMARY KEY(node, start)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS segment_key ON segment(key);
CREATE TABLE IF NOT EXISTS garbage(
    key TEXT PRIMARY KEY,
    since_ms INTEGER NOT NULL,
    -- When its object was deleted: the row stays a while longer and the object is deleted
    -- once more then (a PUT a killed process had sent may land after the first delete).
    deleted_ms INTEGER) WITHOUT ROWID;
";

fn db_error(e: rusqlite::Error) -> io::Error {
    io::Error::other(format!("object store metadata: {e}"))
}

fn node_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<Node> {
    let sha: Option<Vec<u8>> = row.get(4)?;
    Ok(Node {
        id: row.get(0)?,
        dir: row.get(1)?,
        size: row.get::<_, i64>(2)? as u64,
        mtime_ms: row.get(3)?,
        sha: sha.and_then(|b| Sha256State::from_bytes(&b)),
    })
}

const NODE_COLUMNS: &str = "id, dir, size, mtime_ms, sha";

/// The metadata database (one connection; every call is short).
#[derive(Debug)]
pub(crate) struct SqliteMeta {
    conn: Mutex<Connection>,
}

impl SqliteMeta {
    pub fn open(path: &Path) -> io::Result<SqliteMeta> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let conn = Connection::open(path).map_err(db_error)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=10000;",
        )
        .map_err(db_error)?;
        conn.execute_batch(SCHEMA).map_err(db_error)?;
        // A database made before compression at rest: the column is added once.
        let has_zsize = conn
            .prepare("SELECT 1 FROM pragma_table_info('segment') WHERE name = 'zsize'")
            .and_then(|mut st| st.exists([]))
            .map_err(db_error)?;
        if !has_zsize {
            conn.execute_batch("ALTER TABLE segment ADD COLUMN zsize INTEGER")
                .map_err(db_error)?;
        }
        let has_deleted = conn
            .prepare("SELECT 1 FROM pragma_table_info('garbage') WHERE name = 'deleted_ms'")
            .and_then(|mut st| st.exists([]))
            .map_err(db_error)?;
        if !has_deleted {
            conn.execute_batch("ALTER TABLE garbage ADD COLUMN deleted_ms INTEGER")
                .map_err(db_error)?;
        }
        Ok(SqliteMeta {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` in one immediate transaction: all of it or nothing.
    fn write<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut c = self.conn();
        let tx = c
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_error)?;
        let out = f(&tx)?;
        tx.commit().map_err(db_error)?;
        Ok(out)
    }

    fn segments_in(c: &Connection, id: i64) -> io::Result<Vec<Segment>> {
        let mut st = c
            .prepare_cached(
                "SELECT start, len, key, off, data, zsize FROM segment WHERE node = ?1 ORDER BY start",
            )
            .map_err(db_error)?;
        let rows = st
            .query_map([id], |r| {
                Ok(Segment {
                    start: r.get::<_, i64>(0)? as u64,
                    len: r.get::<_, i64>(1)? as u64,
                    key: r.get(2)?,
                    off: r.get::<_, i64>(3)? as u64,
                    data: r.get::<_, Option<Vec<u8>>>(4)?.map(bytes::Bytes::from),
                    zsize: r.get::<_, Option<i64>>(5)?.map(|z| z as u64),
                })
            })
            .map_err(db_error)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_error)
    }
}

impl MetaStore for SqliteMeta {
    fn lookup(&self, path: &VirtualPath) -> io::Result<Node> {
        lookup(&self.conn(), path.parts())
    }

    fn list(&self, dir: &VirtualPath) -> io::Result<Vec<(String, Node)>> {
        let c = self.conn();
        let d = lookup(&c, dir.parts())?;
        if !d.dir {
            return Err(not_a_dir());
        }
        let mut st = c
            .prepare_cached(&format!(
                "SELECT {NODE_COLUMNS}, name FROM node WHERE parent = ?1 AND id != 1"
            ))
            .map_err(db_error)?;
        let rows = st
            .query_map([d.id], |r| Ok((r.get::<_, String>(5)?, node_of(r)?)))
            .map_err(db_error)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_error)
    }

    fn mkdir(&self, path: &VirtualPath) -> io::Result<()> {
        self.write(|tx| {
            let (parent, name) = parent_of(tx, path)?;
            insert(tx, parent, name, true).map(|_| ())
        })
    }

    /// A new, empty file (the name must be free).
    fn create_file(&self, path: &VirtualPath) -> io::Result<i64> {
        self.write(|tx| {
            let (parent, name) = parent_of(tx, path)?;
            insert(tx, parent, name, false)
        })
    }

    /// A file to rewrite from `at` on (created if missing): what follows `at` is cut now, its
    /// objects handed to the garbage collector.
    fn open_replace(&self, path: &VirtualPath, at: u64) -> io::Result<(i64, Option<Sha256State>)> {
        self.write(|tx| {
            let n = match lookup(tx, path.parts()) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let (parent, name) = parent_of(tx, path)?;
                    let id = insert(tx, parent, name, false)?;
                    return Ok((id, (at == 0).then(Sha256State::new)));
                }
                Err(e) => return Err(e),
            };
            if n.dir {
                return Err(not_a_file());
            }
            if at > n.size {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "offset past the end of the file",
                ));
            }
            let prefix = if at == 0 {
                Some(Sha256State::new())
            } else {
                n.sha.clone().filter(|h| h.len() == at)
            };
            if at < n.size {
                truncate(tx, n.id, at)?;
                let sha = prefix.as_ref().map(|h| h.to_bytes().to_vec());
                tx.prepare_cached(
                    "UPDATE node SET size = ?2, sha = ?3, mtime_ms = ?4 WHERE id = ?1",
                )
                .and_then(|mut st| st.execute(params![n.id, at as i64, sha, now_ms()]))
                .map_err(db_error)?;
            }
            Ok((n.id, prefix))
        })
    }

    fn segments(&self, id: i64) -> io::Result<Vec<Segment>> {
        Self::segments_in(&self.conn(), id)
    }

    /// A file's row.
    fn node(&self, id: i64) -> io::Result<Node> {
        node_by_id(&self.conn(), id)
    }

    /// Registers `key` as garbage before its object is written: if the writer dies before
    /// [`SqliteMeta::add_segment`], the collector removes what it left.
    fn pending(&self, key: &str) -> io::Result<()> {
        self.conn()
            .prepare_cached("INSERT OR REPLACE INTO garbage(key, since_ms) VALUES (?1, ?2)")
            .and_then(|mut s| s.execute(params![key, now_ms()]))
            .map(|_| ())
            .map_err(db_error)
    }

    /// The file's bytes `start..` are `data`, kept inline until packed; the file is that long.
    fn add_inline(&self, id: i64, start: u64, data: &[u8]) -> io::Result<()> {
        self.write(|tx| {
            check_size(tx, id, start)?;
            tx.prepare_cached(
                "INSERT INTO segment(node, start, len, key, off, data, made_ms) \
                 VALUES (?1, ?2, ?3, '', 0, ?4, ?5)",
            )
            .and_then(|mut st| {
                st.execute(params![id, start as i64, data.len() as i64, data, now_ms()])
            })
            .map_err(db_error)?;
            grow(tx, id, start + data.len() as u64)
        })
    }

    /// Bytes waiting inline.
    fn inline_bytes(&self) -> io::Result<u64> {
        self.conn()
            .query_row(
                "SELECT coalesce(sum(len), 0) FROM segment WHERE key = ''",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(db_error)
    }

    /// Inline segments for the packer: all of them up to `max_bytes` once the oldest was made
    /// before `before_ms` or they add up to `max_bytes`; else none.
    fn inline_batch(&self, before_ms: i64, max_bytes: u64) -> io::Result<Vec<Inline>> {
        let c = self.conn();
        let (oldest, total): (Option<i64>, i64) = c
            .query_row(
                "SELECT min(made_ms), coalesce(sum(len), 0) FROM segment WHERE key = ''",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(db_error)?;
        if oldest.is_none_or(|t| t >= before_ms) && (total as u64) < max_bytes {
            return Ok(Vec::new());
        }
        let mut st = c
            .prepare_cached(
                "SELECT node, start, len, data FROM segment WHERE key = '' ORDER BY made_ms, node, start",
            )
            .map_err(db_error)?;
        let mut rows = st.query([]).map_err(db_error)?;
        let (mut out, mut bytes) = (Vec::new(), 0u64);
        while let Some(r) = rows.next().map_err(db_error)? {
            let len = r.get::<_, i64>(2).map_err(db_error)? as u64;
            if !out.is_empty() && bytes + len > max_bytes {
                break;
            }
            let data: Vec<u8> = r.get(3).map_err(db_error)?;
            out.push((
                r.get(0).map_err(db_error)?,
                r.get::<_, i64>(1).map_err(db_error)? as u64,
                len,
                data,
            ));
            bytes += len;
        }
        Ok(out)
    }

    /// The object `key` holds `packed` back to back: each segment that is still inline and
    /// unchanged now points into it. Returns how many did; none: the object is garbage.
    fn packed(&self, key: &str, packed: &[(i64, u64, u64, u64)]) -> io::Result<usize> {
        self.write(|tx| {
            let mut n = 0;
            for (node, start, len, off) in packed {
                n += tx
                    .prepare_cached(
                        "UPDATE segment SET key = ?4, off = ?5, data = NULL \
                         WHERE node = ?1 AND start = ?2 AND len = ?3 AND key = ''",
                    )
                    .and_then(|mut st| {
                        st.execute(params![node, *start as i64, *len as i64, key, *off as i64])
                    })
                    .map_err(db_error)?;
            }
            if n > 0 {
                tx.prepare_cached("DELETE FROM garbage WHERE key = ?1")
                    .and_then(|mut st| st.execute([key]))
                    .map_err(db_error)?;
            }
            Ok(n)
        })
    }

    /// The object `key` now holds the file's bytes `start..start + len`; the file is that long.
    fn add_segment(&self, id: i64, start: u64, len: u64, key: &str) -> io::Result<()> {
        self.write(|tx| {
            check_size(tx, id, start)?;
            tx.prepare_cached("INSERT INTO segment(node, start, len, key) VALUES (?1, ?2, ?3, ?4)")
                .and_then(|mut st| st.execute(params![id, start as i64, len as i64, key]))
                .map_err(db_error)?;
            tx.prepare_cached("DELETE FROM garbage WHERE key = ?1")
                .and_then(|mut st| st.execute([key]))
                .map_err(db_error)?;
            grow(tx, id, start + len)
        })
    }

    /// Ends an upload: the file's SHA-256 state when known (it must cover the whole file).
    fn finish(&self, id: i64, hash: Option<&Sha256State>) -> io::Result<Node> {
        self.write(|tx| {
            let n = node_by_id(tx, id)?;
            let sha = hash
                .filter(|h| h.len() == n.size)
                .map(|h| h.to_bytes().to_vec());
            tx.prepare_cached("UPDATE node SET sha = ?2, mtime_ms = ?3 WHERE id = ?1")
                .and_then(|mut st| st.execute(params![id, sha, now_ms()]))
                .map_err(db_error)?;
            node_by_id(tx, id)
        })
    }

    /// Keeps a SHA-256 state computed by reading the file, if the file is still that long.
    fn remember_sha(&self, id: i64, hash: &Sha256State) -> io::Result<()> {
        self.conn()
            .execute(
                "UPDATE node SET sha = ?2 WHERE id = ?1 AND size = ?3",
                params![id, hash.to_bytes().to_vec(), hash.len() as i64],
            )
            .map(|_| ())
            .map_err(db_error)
    }

    fn remove_file(&self, path: &VirtualPath) -> io::Result<()> {
        self.write(|tx| {
            let n = lookup(tx, path.parts())?;
            if n.dir {
                return Err(not_a_file());
            }
            drop_file(tx, n.id)
        })
    }

    fn remove_dir(&self, path: &VirtualPath) -> io::Result<()> {
        self.write(|tx| {
            let n = lookup(tx, path.parts())?;
            if !n.dir {
                return Err(not_a_dir());
            }
            if n.id == ROOT {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "the root cannot be removed",
                ));
            }
            let children: i64 = tx
                .query_row("SELECT count(*) FROM node WHERE parent = ?1", [n.id], |r| {
                    r.get(0)
                })
                .map_err(db_error)?;
            if children > 0 {
                return Err(io::Error::new(
                    io::ErrorKind::DirectoryNotEmpty,
                    "the folder is not empty",
                ));
            }
            tx.prepare_cached("DELETE FROM node WHERE id = ?1")
                .and_then(|mut st| st.execute([n.id]))
                .map_err(db_error)?;
            Ok(())
        })
    }

    /// Moves `from` to `to`; an existing `to` is replaced only with `replace` (then its objects
    /// become garbage). A folder moves with everything in it, in one row.
    fn rename(&self, from: &VirtualPath, to: &VirtualPath, replace: bool) -> io::Result<Node> {
        self.write(|tx| {
            let n = lookup(tx, from.parts())?;
            if n.id == ROOT {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "the root cannot be renamed",
                ));
            }
            if to.parts().starts_with(from.parts()) && to.parts().len() > from.parts().len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a folder cannot move into itself",
                ));
            }
            let (parent, name) = parent_of(tx, to)?;
            match lookup(tx, to.parts()) {
                Ok(t) if t.id == n.id => return Ok(n),
                Ok(_) if !replace => return Err(exists()),
                Ok(t) if t.dir || n.dir => return Err(exists()),
                Ok(t) => drop_file(tx, t.id)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            tx.prepare_cached("UPDATE node SET parent = ?2, name = ?3 WHERE id = ?1")
                .and_then(|mut st| st.execute(params![n.id, parent, name]))
                .map_err(db_error)?;
            node_by_id(tx, n.id)
        })
    }

    fn set_modified(&self, path: &VirtualPath, time: SystemTime) -> io::Result<()> {
        let ms = time
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        self.write(|tx| {
            let n = lookup(tx, path.parts())?;
            if n.dir {
                return Err(not_a_file());
            }
            tx.prepare_cached("UPDATE node SET mtime_ms = ?2 WHERE id = ?1")
                .and_then(|mut st| st.execute(params![n.id, ms]))
                .map_err(db_error)?;
            Ok(())
        })
    }

    /// Garbage keys older than `before_ms`, in key order, from the `skip`-th on, at most `limit`.
    /// Keys due for deletion: garbage since before `before_ms`, and not deleted since
    /// `deleted_before_ms`; with whether their object was deleted once already.
    fn due_garbage(
        &self,
        before_ms: i64,
        deleted_before_ms: i64,
        skip: usize,
        limit: usize,
    ) -> io::Result<Vec<(String, bool)>> {
        let c = self.conn();
        let mut st = c
            .prepare_cached(
                "SELECT key, deleted_ms IS NOT NULL FROM garbage WHERE since_ms < ?1 \
                 AND (deleted_ms IS NULL OR deleted_ms < ?2) ORDER BY key LIMIT ?3 OFFSET ?4",
            )
            .map_err(db_error)?;
        let rows = st
            .query_map(
                params![before_ms, deleted_before_ms, limit as i64, skip as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(db_error)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_error)
    }

    /// The objects of these keys are deleted: rows deleted before (`second`) go, the others
    /// are marked and go after the next delete.
    fn forget_garbage(&self, keys: &[(String, bool)]) -> io::Result<()> {
        let now = now_ms();
        self.write(|tx| {
            for (k, second) in keys {
                if *second {
                    tx.prepare_cached("DELETE FROM garbage WHERE key = ?1")
                        .and_then(|mut st| st.execute([k]))
                        .map_err(db_error)?;
                } else {
                    tx.prepare_cached("UPDATE garbage SET deleted_ms = ?2 WHERE key = ?1")
                        .and_then(|mut st| st.execute(params![k, now]))
                        .map_err(db_error)?;
                }
            }
            Ok(())
        })
    }

    fn quiet_files(&self, before_ms: i64, limit: usize) -> io::Result<Vec<(i64, String)>> {
        let c = self.conn();
        let mut st = c
            .prepare_cached(
                "SELECT n.id, n.name FROM node n WHERE n.dir = 0 AND n.mtime_ms < ?1 AND n.size >= ?2 \
                 AND NOT EXISTS (SELECT 1 FROM segment s WHERE s.node = n.id AND s.start = 0 \
                                 AND s.zsize IS NOT NULL AND s.len = n.size) \
                 ORDER BY n.mtime_ms LIMIT ?3",
            )
            .map_err(db_error)?;
        let rows = st
            .query_map(params![before_ms, MIN_PACK as i64, limit as i64], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(db_error)?;
        rows.collect::<rusqlite::Result<_>>().map_err(db_error)
    }

    fn compacted(
        &self,
        id: i64,
        was: &[Segment],
        len: u64,
        key: &str,
        zsize: u64,
    ) -> io::Result<bool> {
        self.write(|tx| {
            let size: Option<i64> = tx
                .query_row("SELECT size FROM node WHERE id = ?1", [id], |r| r.get(0))
                .map_err(db_error)
                .ok();
            if size.is_none_or(|s| (s as u64) < len) {
                return Ok(false);
            }
            let now: Vec<Segment> = SqliteMeta::segments_in(tx, id)?
                .into_iter()
                .filter(|s| s.start < len)
                .collect();
            if now != was {
                return Ok(false);
            }
            let t = now_ms();
            tx.prepare_cached(
                "INSERT OR REPLACE INTO garbage(key, since_ms)
                 SELECT DISTINCT s.key, ?3 FROM segment s WHERE s.node = ?1 AND s.start < ?2 AND s.key != ''
                 AND NOT EXISTS (SELECT 1 FROM segment o WHERE o.key = s.key AND (o.node != ?1 OR o.start >= ?2))",
            )
            .and_then(|mut st| st.execute(params![id, len as i64, t]))
            .map_err(db_error)?;
            tx.prepare_cached("DELETE FROM segment WHERE node = ?1 AND start < ?2")
                .and_then(|mut st| st.execute(params![id, len as i64]))
                .map_err(db_error)?;
            tx.prepare_cached(
                "INSERT INTO segment(node, start, len, key, off, made_ms, zsize) \
                 VALUES (?1, 0, ?2, ?3, 0, ?4, ?5)",
            )
            .and_then(|mut st| st.execute(params![id, len as i64, key, t, zsize as i64]))
            .map_err(db_error)?;
            tx.prepare_cached("DELETE FROM garbage WHERE key = ?1")
                .and_then(|mut st| st.execute([key]))
                .map_err(db_error)?;
            Ok(true)
        })
    }
    /// Every segment in an object with its file's path: (path, key, bytes the object must
    /// have).
    fn all_segments(&self) -> io::Result<Vec<(String, String, u64)>> {
        let c = self.conn();
        let paths = paths(&c)?;
        // Inline segments have no object; a packed one needs its object to reach off + len.
        let mut st = c
            .prepare(
                "SELECT node, key, CASE WHEN zsize IS NULL THEN off + len ELSE zsize END \
                 FROM segment WHERE key != ''",
            )
            .map_err(db_error)?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)? as u64,
                ))
            })
            .map_err(db_error)?;
        let mut out = Vec::new();
        for row in rows {
            let (node, key, need) = row.map_err(db_error)?;
            let path = paths.get(&node).cloned().unwrap_or_default();
            out.push((path, key, need));
        }
        Ok(out)
    }

    /// Bytes held for each file (in objects and inline), by path.
    fn stored_by_path(&self) -> io::Result<HashMap<String, u64>> {
        let c = self.conn();
        let paths = paths(&c)?;
        let mut st = c
            .prepare(
                "SELECT node, sum(CASE WHEN zsize IS NULL THEN len ELSE zsize END) \
                 FROM segment GROUP BY node",
            )
            .map_err(db_error)?;
        let rows = st
            .query_map([], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? as u64))
            })
            .map_err(db_error)?;
        let mut out = HashMap::new();
        for row in rows {
            let (node, n) = row.map_err(db_error)?;
            if let Some(p) = paths.get(&node) {
                out.insert(p.clone(), n);
            }
        }
        Ok(out)
    }

    /// Every key waiting for collection.
    fn all_garbage(&self) -> io::Result<HashSet<String>> {
        let c = self.conn();
        let mut st = c.prepare("SELECT key FROM garbage").map_err(db_error)?;
        let rows = st.query_map([], |r| r.get(0)).map_err(db_error)?;
        rows.collect::<rusqlite::Result<_>>().map_err(db_error)
    }
}

/// Every file's path by row.
fn paths(c: &Connection) -> io::Result<HashMap<i64, String>> {
    let mut names = HashMap::new();
    let mut st = c
        .prepare("SELECT id, parent, name FROM node")
        .map_err(db_error)?;
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                (r.get::<_, i64>(1)?, r.get::<_, String>(2)?),
            ))
        })
        .map_err(db_error)?;
    for row in rows {
        let (id, pn) = row.map_err(db_error)?;
        names.insert(id, pn);
    }
    Ok(paths_of(&names))
}

fn lookup(c: &Connection, parts: &[String]) -> io::Result<Node> {
    let mut st = c
        .prepare_cached(&format!(
            "SELECT {NODE_COLUMNS} FROM node WHERE parent = ?1 AND name = ?2"
        ))
        .map_err(db_error)?;
    let mut node = node_by_id(c, ROOT)?;
    for part in parts {
        if !node.dir {
            return Err(not_a_dir());
        }
        node = st
            .query_row(params![node.id, part], node_of)
            .optional()
            .map_err(db_error)?
            .ok_or_else(not_found)?;
    }
    Ok(node)
}

fn node_by_id(c: &Connection, id: i64) -> io::Result<Node> {
    c.prepare_cached(&format!("SELECT {NODE_COLUMNS} FROM node WHERE id = ?1"))
        .map_err(db_error)?
        .query_row([id], node_of)
        .optional()
        .map_err(db_error)?
        .ok_or_else(not_found)
}

/// The folder that holds `path` (it must exist) and the last name.
fn parent_of<'p>(c: &Connection, path: &'p VirtualPath) -> io::Result<(i64, &'p str)> {
    let (name, parent) = path.parts().split_last().ok_or_else(exists)?;
    let p = lookup(c, parent)?;
    if !p.dir {
        return Err(not_a_dir());
    }
    Ok((p.id, name))
}

fn insert(c: &Connection, parent: i64, name: &str, dir: bool) -> io::Result<i64> {
    let sha = (!dir).then(|| Sha256State::new().to_bytes().to_vec());
    match c.prepare_cached("INSERT INTO node(parent, name, dir, size, mtime_ms, sha) VALUES (?1, ?2, ?3, 0, ?4, ?5)")
        .and_then(|mut st| st.execute(params![parent, name, dir, now_ms(), sha])) {
        Ok(_) => Ok(c.last_insert_rowid()),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Err(exists())
        }
        Err(e) => Err(db_error(e)),
    }
}

/// A segment may start at `start` only if the file is that long (the upload's view holds).
fn check_size(c: &Connection, id: i64, start: u64) -> io::Result<()> {
    let size: Option<i64> = c
        .query_row("SELECT size FROM node WHERE id = ?1", [id], |r| r.get(0))
        .optional()
        .map_err(db_error)?;
    match size {
        None => Err(not_found()), // removed meanwhile: a PUT object stays garbage
        Some(s) if s as u64 != start => Err(io::Error::other(format!(
            "the file changed during the upload (size {s}, segment at {start})"
        ))),
        Some(_) => Ok(()),
    }
}

fn grow(c: &Connection, id: i64, size: u64) -> io::Result<()> {
    c.prepare_cached("UPDATE node SET size = ?2, sha = NULL, mtime_ms = ?3 WHERE id = ?1")
        .and_then(|mut st| st.execute(params![id, size as i64, now_ms()]))
        .map_err(db_error)?;
    Ok(())
}

/// Cuts a file to `at` bytes: whole segments past it go, one that straddles it keeps its
/// object and covers less of it. An object becomes garbage when no segment names it any more
/// (a packed object holds many files' segments).
fn truncate(c: &Connection, id: i64, at: u64) -> io::Result<()> {
    let now = now_ms();
    c.prepare_cached(
        "INSERT OR REPLACE INTO garbage(key, since_ms)
         SELECT DISTINCT s.key, ?3 FROM segment s WHERE s.node = ?1 AND s.start >= ?2 AND s.key != ''
         AND NOT EXISTS (SELECT 1 FROM segment o WHERE o.key = s.key AND (o.node != ?1 OR o.start < ?2))",
    )
    .and_then(|mut st| st.execute(params![id, at as i64, now]))
    .map_err(db_error)?;
    c.prepare_cached("DELETE FROM segment WHERE node = ?1 AND start >= ?2")
        .and_then(|mut st| st.execute(params![id, at as i64]))
        .map_err(db_error)?;
    c.prepare_cached("UPDATE segment SET len = ?2 - start WHERE node = ?1 AND start + len > ?2")
        .and_then(|mut st| st.execute(params![id, at as i64]))
        .map_err(db_error)?;
    Ok(())
}

fn drop_file(c: &Connection, id: i64) -> io::Result<()> {
    truncate(c, id, 0)?;
    c.prepare_cached("DELETE FROM node WHERE id = ?1")
        .and_then(|mut st| st.execute([id]))
        .map_err(db_error)?;
    Ok(())
}
