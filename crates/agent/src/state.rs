//! The agent's memory: one SQLite file (WAL), one row per local file generation. A row says which
//! local file it is (device, inode, head hash) and where that file is now, how much of it the
//! server holds verified, and what is left to do. It is only ever advanced after the server
//! confirmed the bytes (SHA-256 compared). Decisions about rows are [`crate::track`]'s; this
//! module only stores them.

use rusqlite::{params, Connection, OptionalExtension};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("state database: {0}")]
pub struct StateError(#[from] rusqlite::Error);

pub type Result<T> = std::result::Result<T, StateError>;

/// What is left to do for a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileState {
    /// Bytes to send (new, grown, or failed and waiting for a retry).
    Pending,
    /// The server holds everything we saw, verified.
    Archived,
    /// The name cannot be stored on the server; reported, not renamed.
    Unstorable,
    /// Its file was truncated or removed before everything was archived: waiting (briefly) for a
    /// copy or a compressed copy of it to appear under the root (logrotate's copytruncate and
    /// compress), which would hold the missing bytes.
    Orphaned,
    /// Gone before it was fully archived, and no copy turned up: what is gone is gone.
    Lost,
}

impl FileState {
    fn as_str(self) -> &'static str {
        match self {
            FileState::Pending => "pending",
            FileState::Archived => "archived",
            FileState::Unstorable => "unstorable",
            FileState::Orphaned => "orphaned",
            FileState::Lost => "lost",
        }
    }
    fn parse(s: &str) -> FileState {
        match s {
            "archived" => FileState::Archived,
            "unstorable" => FileState::Unstorable,
            "orphaned" => FileState::Orphaned,
            "lost" => FileState::Lost,
            _ => FileState::Pending,
        }
    }
}

/// One local file generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRow {
    pub id: i64,
    pub source: usize,
    /// `/`-separated path relative to the source root where the generation was first seen. It
    /// names the remote file; the local file may have been renamed since (see `path`).
    pub rel: String,
    pub generation: i64,
    pub dev: u64,
    pub ino: u64,
    /// Where the file is now (absolute). Follows renames (rotation).
    pub path: PathBuf,
    /// Whether the agent still follows this file's identity (it exists under a root, or is held
    /// open). An untracked row's identity may be reused by an unrelated file.
    pub tracked: bool,
    pub head_sha: String,
    pub head_len: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub stable_since_ms: i64,
    /// Seen growing after it was first seen: a log being written, streamed in whole lines.
    pub grew: bool,
    /// Begins like another tracked file: perhaps a copy of it (logrotate's copytruncate). Sent only
    /// once quiet, so that it can still turn out to be the copy.
    pub maybe_copy: bool,
    pub archived_size: u64,
    pub archived_sha: Option<String>,
    /// SHA-256 of the (up to) 4 KiB just before `archived_size`: checked with the head before
    /// every append, so a file truncated and regrown past the archived size is never taken for
    /// the same file.
    pub tail_sha: Option<String>,
    /// Absolute path inside the agent's FTP home.
    pub remote: String,
    pub state: FileState,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub next_try_ms: i64,
    /// When the row may be sent next (quiet period, append interval, backoff); `i64::MAX` while
    /// a send is in flight.
    pub ready_at_ms: i64,
    /// When the last send of this row started.
    pub sent_at_ms: i64,
    /// Since when the server has been behind the local file (`None`: caught up).
    pub behind_since_ms: Option<i64>,
    pub orphaned_at_ms: Option<i64>,
    /// Bytes seen locally that can no longer be archived (inside logrotate's copytruncate
    /// window, or a file removed before the agent read it).
    pub lost_bytes: u64,
    pub first_seen_ms: i64,
    pub archived_at_ms: Option<i64>,
}

const COLUMNS: &str = "id, source, rel, generation, dev, ino, path, tracked, head_sha, head_len, size, mtime_ns, \
     stable_since_ms, grew, maybe_copy, archived_size, archived_sha, tail_sha, remote, state, attempts, last_error, \
     next_try_ms, ready_at_ms, sent_at_ms, behind_since_ms, orphaned_at_ms, lost_bytes, first_seen_ms, archived_at_ms";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FileRow> {
    let path: Vec<u8> = r.get(6)?;
    Ok(FileRow {
        id: r.get(0)?,
        source: r.get::<_, i64>(1)? as usize,
        rel: r.get(2)?,
        generation: r.get(3)?,
        dev: r.get::<_, i64>(4)? as u64,
        ino: r.get::<_, i64>(5)? as u64,
        path: PathBuf::from(OsStr::from_bytes(&path)),
        tracked: r.get(7)?,
        head_sha: r.get(8)?,
        head_len: r.get::<_, i64>(9)? as u64,
        size: r.get::<_, i64>(10)? as u64,
        mtime_ns: r.get(11)?,
        stable_since_ms: r.get(12)?,
        grew: r.get(13)?,
        maybe_copy: r.get(14)?,
        archived_size: r.get::<_, i64>(15)? as u64,
        archived_sha: r.get(16)?,
        tail_sha: r.get(17)?,
        remote: r.get(18)?,
        state: FileState::parse(&r.get::<_, String>(19)?),
        attempts: r.get(20)?,
        last_error: r.get(21)?,
        next_try_ms: r.get(22)?,
        ready_at_ms: r.get(23)?,
        sent_at_ms: r.get(24)?,
        behind_since_ms: r.get(25)?,
        orphaned_at_ms: r.get(26)?,
        lost_bytes: r.get::<_, i64>(27)? as u64,
        first_seen_ms: r.get(28)?,
        archived_at_ms: r.get(29)?,
    })
}

/// A file behind its writer, for the status document.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Lag {
    /// Where the file is now, relative to its source root when it is under it.
    pub path: String,
    pub bytes: u64,
    pub seconds: u64,
}

/// Totals for the status document.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    pub files_archived: u64,
    pub bytes_archived: u64,
    pub backlog_files: u64,
    pub backlog_bytes: u64,
    pub oldest_pending: Option<String>,
    pub oldest_pending_since_ms: Option<i64>,
    pub unstorable: u64,
    pub lost: u64,
    /// Bytes seen locally that could not be archived (see [`FileRow::lost_bytes`]).
    pub lost_bytes: u64,
    /// Local copies (compressed or not) of generations the archive already holds: not stored
    /// again.
    pub already_archived: u64,
    /// The files furthest behind their writers (at most 10), worst first.
    pub lagging: Vec<Lag>,
    /// The worst lag of any file, in seconds and bytes.
    pub max_lag_seconds: u64,
    pub max_lag_bytes: u64,
    pub last_error: Option<String>,
}

/// A local file recognised as a copy of a generation (see [`StateDb::copy_of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CopyKey {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
}

pub struct StateDb {
    conn: Connection,
}

/// Columns added after the first version, with their definitions: added to older databases.
const ADDED_COLUMNS: &[(&str, &str)] = &[
    ("path", "BLOB"),
    ("tracked", "INTEGER NOT NULL DEFAULT 1"),
    ("grew", "INTEGER NOT NULL DEFAULT 0"),
    ("maybe_copy", "INTEGER NOT NULL DEFAULT 0"),
    ("tail_sha", "TEXT"),
    ("ready_at_ms", "INTEGER NOT NULL DEFAULT 0"),
    ("sent_at_ms", "INTEGER NOT NULL DEFAULT 0"),
    ("behind_since_ms", "INTEGER"),
    ("orphaned_at_ms", "INTEGER"),
    ("lost_bytes", "INTEGER NOT NULL DEFAULT 0"),
];

impl StateDb {
    pub fn open(path: &Path) -> Result<StateDb> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // Switching a new database to WAL needs it to itself for a moment, and SQLite answers
        // "busy" at once instead of waiting when another process opens it then: retry, bounded.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match conn.pragma_update(None, "journal_mode", "WAL") {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                other => break other?,
            }
        }
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // The schema and its migrations in one write transaction: the agent and `agent status`
        // (or a second agent start) may open the database at the same moment, and two
        // unserialised migrations both add the same column (the second then fails).
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        Self::migrate(&tx)?;
        tx.commit()?;
        Ok(StateDb { conn })
    }

    /// Creates the tables and adds what older versions lacked. Idempotent.
    fn migrate(conn: &Connection) -> Result<()> {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS files (
                id INTEGER PRIMARY KEY,
                source INTEGER NOT NULL,
                rel TEXT NOT NULL,
                generation INTEGER NOT NULL,
                dev INTEGER NOT NULL,
                ino INTEGER NOT NULL,
                head_sha TEXT NOT NULL,
                head_len INTEGER NOT NULL,
                size INTEGER NOT NULL,
                mtime_ns INTEGER NOT NULL,
                stable_since_ms INTEGER NOT NULL,
                archived_size INTEGER NOT NULL DEFAULT 0,
                archived_sha TEXT,
                remote TEXT NOT NULL,
                state TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                last_error TEXT,
                next_try_ms INTEGER NOT NULL DEFAULT 0,
                first_seen_ms INTEGER NOT NULL,
                archived_at_ms INTEGER,
                UNIQUE(source, rel, generation)
             );
             CREATE TABLE IF NOT EXISTS sources (
                id INTEGER PRIMARY KEY,
                root TEXT NOT NULL,
                prefix TEXT NOT NULL,
                UNIQUE(root, prefix)
             );
             -- The local names a generation had (rotation), to tell the server (SITE ALIAS).
             CREATE TABLE IF NOT EXISTS names (
                file INTEGER NOT NULL,
                name TEXT NOT NULL,
                reported INTEGER NOT NULL DEFAULT 0,
                PRIMARY KEY (file, name)
             ) WITHOUT ROWID;
             -- Local files found to be copies (compressed or not) of a generation: not read again.
             CREATE TABLE IF NOT EXISTS copies (
                dev INTEGER NOT NULL,
                ino INTEGER NOT NULL,
                size INTEGER NOT NULL,
                mtime_ns INTEGER NOT NULL,
                file INTEGER NOT NULL,
                PRIMARY KEY (dev, ino)
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
        )?;
        let have: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info('files')")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for (name, def) in ADDED_COLUMNS {
            if !have.iter().any(|h| h == name) {
                conn.execute_batch(&format!("ALTER TABLE files ADD COLUMN {name} {def}"))?;
            }
        }
        conn.execute_batch(
            "DROP INDEX IF EXISTS files_todo;
             CREATE INDEX IF NOT EXISTS files_ready ON files(state, grew, ready_at_ms);
             DROP INDEX IF EXISTS files_head;
             CREATE INDEX IF NOT EXISTS files_head_all ON files(head_sha);
             UPDATE files SET tracked = 0 WHERE state = 'lost' AND tracked;",
        )?;
        Ok(())
    }

    /// The stable ids of the configured sources (root, prefix), in the order given; a source seen
    /// for the first time gets a new one. Rows name their source by this id, so reordering,
    /// adding or removing sources in the config changes nothing for the others.
    pub fn source_ids(&self, sources: &[(&Path, &str)]) -> Result<Vec<usize>> {
        // Existence, not counts: this runs at every start, on tables of any size.
        let older: bool = self.conn.query_row(
            "SELECT NOT EXISTS (SELECT 1 FROM sources) AND EXISTS (SELECT 1 FROM files)",
            [],
            |r| r.get(0),
        )?;
        if older {
            // A database from before this table numbered sources by their place in the config:
            // keep those numbers for the config it is opened with.
            for (i, (root, prefix)) in sources.iter().enumerate() {
                self.conn.execute(
                    "INSERT OR IGNORE INTO sources (id, root, prefix) VALUES (?1, ?2, ?3)",
                    params![i as i64, root.to_string_lossy(), prefix],
                )?;
            }
        }
        let mut ids = Vec::with_capacity(sources.len());
        for (root, prefix) in sources {
            let root = root.to_string_lossy();
            self.conn.execute(
                "INSERT OR IGNORE INTO sources (root, prefix) VALUES (?1, ?2)",
                params![root, prefix],
            )?;
            let id: i64 = self.conn.query_row(
                "SELECT id FROM sources WHERE root = ?1 AND prefix = ?2",
                params![root, prefix],
                |r| r.get(0),
            )?;
            ids.push(id as usize);
        }
        Ok(ids)
    }

    /// Gives rows written before the agent followed renames their path (`root/rel`).
    pub fn fill_paths(&self, source: usize, root: &Path) -> Result<()> {
        let mut st = self
            .conn
            .prepare("SELECT id, rel FROM files WHERE source = ?1 AND path IS NULL")?;
        let rows: Vec<(i64, String)> = st
            .query_map(params![source as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (id, rel) in rows {
            self.conn.execute(
                "UPDATE files SET path = ?2 WHERE id = ?1",
                params![id, root.join(rel).as_os_str().as_bytes()],
            )?;
        }
        Ok(())
    }

    /// The newest generation seen at `source`/`rel`.
    pub fn latest(&self, source: usize, rel: &str) -> Result<Option<FileRow>> {
        let sql = format!("SELECT {COLUMNS} FROM files WHERE source = ?1 AND rel = ?2 ORDER BY generation DESC LIMIT 1");
        let mut st = self.conn.prepare_cached(&sql)?;
        Ok(st.query_row(params![source as i64, rel], row).optional()?)
    }

    pub fn get(&self, id: i64) -> Result<Option<FileRow>> {
        let sql = format!("SELECT {COLUMNS} FROM files WHERE id = ?1");
        let mut st = self.conn.prepare_cached(&sql)?;
        Ok(st.query_row(params![id], row).optional()?)
    }

    /// Inserts a new generation; returns its id.
    pub fn insert(&self, r: &FileRow) -> Result<i64> {
        let mut st = self.conn.prepare_cached(
            "INSERT INTO files (source, rel, generation, remote, first_seen_ms, dev, ino, path, tracked, head_sha,
                head_len, size, mtime_ns, stable_since_ms, grew, maybe_copy, archived_size, archived_sha, tail_sha,
                state, attempts, last_error, next_try_ms, ready_at_ms, sent_at_ms, behind_since_ms, orphaned_at_ms,
                lost_bytes, archived_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21,
                ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29)",
        )?;
        st.execute(params![
            r.source as i64,
            r.rel,
            r.generation,
            r.remote,
            r.first_seen_ms,
            r.dev as i64,
            r.ino as i64,
            r.path.as_os_str().as_bytes(),
            r.tracked,
            r.head_sha,
            r.head_len as i64,
            r.size as i64,
            r.mtime_ns,
            r.stable_since_ms,
            r.grew,
            r.maybe_copy,
            r.archived_size as i64,
            r.archived_sha,
            r.tail_sha,
            r.state.as_str(),
            r.attempts,
            r.last_error,
            r.next_try_ms,
            r.ready_at_ms,
            r.sent_at_ms,
            r.behind_since_ms,
            r.orphaned_at_ms,
            r.lost_bytes as i64,
            r.archived_at_ms,
        ])?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Writes every mutable field of `r` (the tracker changes rows as a whole).
    pub fn update(&self, r: &FileRow) -> Result<()> {
        let mut st = self.conn.prepare_cached(
            "UPDATE files SET dev = ?2, ino = ?3, path = ?4, tracked = ?5, head_sha = ?6, head_len = ?7, size = ?8,
                mtime_ns = ?9, stable_since_ms = ?10, grew = ?11, maybe_copy = ?12, archived_size = ?13,
                archived_sha = ?14, tail_sha = ?15, state = ?16, attempts = ?17, last_error = ?18,
                next_try_ms = ?19, ready_at_ms = ?20, sent_at_ms = ?21, behind_since_ms = ?22,
                orphaned_at_ms = ?23, lost_bytes = ?24, archived_at_ms = ?25
             WHERE id = ?1",
        )?;
        st.execute(params![
            r.id,
            r.dev as i64,
            r.ino as i64,
            r.path.as_os_str().as_bytes(),
            r.tracked,
            r.head_sha,
            r.head_len as i64,
            r.size as i64,
            r.mtime_ns,
            r.stable_since_ms,
            r.grew,
            r.maybe_copy,
            r.archived_size as i64,
            r.archived_sha,
            r.tail_sha,
            r.state.as_str(),
            r.attempts,
            r.last_error,
            r.next_try_ms,
            r.ready_at_ms,
            r.sent_at_ms,
            r.behind_since_ms,
            r.orphaned_at_ms,
            r.lost_bytes as i64,
            r.archived_at_ms,
        ])?;
        Ok(())
    }

    /// Removes a row that was never sent (a file that turned out to be a copy of another).
    pub fn delete(&self, id: i64) -> Result<()> {
        self.conn
            .execute("DELETE FROM names WHERE file = ?1", params![id])?;
        self.conn
            .execute("DELETE FROM files WHERE id = ?1", params![id])?;
        Ok(())
    }

    /// Up to `limit` pending rows ready at `now_ms`: growing files first (they are what people
    /// watch), then the rest, each oldest first.
    pub fn ready(&self, now_ms: i64, limit: usize) -> Result<Vec<FileRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM files WHERE state = 'pending' AND grew = ?1 AND ready_at_ms <= ?2
             ORDER BY ready_at_ms LIMIT ?3"
        );
        let mut st = self.conn.prepare_cached(&sql)?;
        let mut rows = st
            .query_map(params![true, now_ms, limit as i64], row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        if rows.len() < limit {
            let more = st
                .query_map(params![false, now_ms, (limit - rows.len()) as i64], row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.extend(more);
        }
        Ok(rows)
    }

    /// When the next pending row becomes ready (`None`: nothing pending but what is in flight).
    pub fn next_ready_ms(&self) -> Result<Option<i64>> {
        let mut st = self.conn.prepare_cached(
            "SELECT MIN(ready_at_ms) FROM files WHERE state = 'pending' AND grew = ?1 AND ready_at_ms < ?2",
        )?;
        let a: Option<i64> = st.query_row(params![true, i64::MAX], |r| r.get(0))?;
        let b: Option<i64> = st.query_row(params![false, i64::MAX], |r| r.get(0))?;
        Ok(match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Recomputes `ready_at_ms` of every pending row at start (a send that was in flight when
    /// the agent stopped is ready again): quiet period and backoff as stored.
    pub fn reset_ready(&self, quiet_ms: i64) -> Result<()> {
        self.conn.execute(
            "UPDATE files SET ready_at_ms = MAX(next_try_ms, CASE WHEN grew THEN 0 ELSE stable_since_ms + ?1 END)
             WHERE state = 'pending'",
            params![quiet_ms],
        )?;
        Ok(())
    }

    /// Number of rows with bytes to send.
    pub fn pending_count(&self) -> Result<u64> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*) FROM files WHERE state = 'pending'",
            [],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    /// Up to `limit` tracked rows with bytes to send.
    pub fn pending_tracked(&self, limit: usize) -> Result<Vec<FileRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM files WHERE state = 'pending' AND tracked ORDER BY grew DESC, ready_at_ms LIMIT ?1"
        );
        let mut st = self.conn.prepare_cached(&sql)?;
        let rows = st
            .query_map(params![limit as i64], row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Rows waiting for a copy of their file, with the time they started waiting.
    pub fn orphans(&self) -> Result<Vec<FileRow>> {
        let sql = format!("SELECT {COLUMNS} FROM files WHERE state = 'orphaned'");
        let mut st = self.conn.prepare_cached(&sql)?;
        let rows = st.query_map([], row)?.collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Rows whose first `head_len` bytes hash to `head_sha`, newest first: only those still
    /// followed (tracked, or waiting for a copy) unless `any`.
    pub fn with_head(&self, head_sha: &str, head_len: u64, any: bool) -> Result<Vec<FileRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM files WHERE head_sha = ?1 AND head_len = ?2
               AND (?3 OR tracked OR state = 'orphaned') AND state != 'lost'
             ORDER BY id DESC LIMIT 32"
        );
        let mut st = self.conn.prepare_cached(&sql)?;
        let rows = st
            .query_map(params![head_sha, head_len as i64, any], row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Whether a tracked row begins with these bytes.
    pub fn head_tracked(&self, head_sha: &str, head_len: u64) -> Result<bool> {
        let mut st = self.conn.prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM files WHERE head_sha = ?1 AND head_len = ?2 AND tracked)",
        )?;
        Ok(st.query_row(params![head_sha, head_len as i64], |r| r.get(0))?)
    }

    /// (id, dev, ino, path, size, mtime) of every tracked row, to follow identities and to tell
    /// unchanged files apart without a query each.
    pub fn tracked_all(&self, mut f: impl FnMut(i64, u64, u64, &Path, u64, i64)) -> Result<()> {
        let mut st = self.conn.prepare(
            "SELECT id, dev, ino, path, size, mtime_ns FROM files WHERE tracked AND path IS NOT NULL",
        )?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let path: Vec<u8> = r.get(3)?;
            f(
                r.get(0)?,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, i64>(2)? as u64,
                Path::new(OsStr::from_bytes(&path)),
                r.get::<_, i64>(4)? as u64,
                r.get(5)?,
            );
        }
        Ok(())
    }

    /// Records that `row` was also known locally as `name`.
    pub fn add_name(&self, row: i64, name: &str) -> Result<()> {
        self.conn.execute(
            "INSERT OR IGNORE INTO names (file, name) VALUES (?1, ?2)",
            params![row, name],
        )?;
        Ok(())
    }

    /// Names not yet told to the server, grouped by row: (row, remote, names).
    pub fn unreported_names(&self, limit: usize) -> Result<Vec<(i64, String, Vec<String>)>> {
        let mut st = self.conn.prepare_cached(
            "SELECT n.file, f.remote, n.name FROM names n JOIN files f ON f.id = n.file
             WHERE NOT n.reported AND (f.archived_size > 0 OR f.state = 'archived')
             ORDER BY n.file LIMIT ?1",
        )?;
        let mut out: Vec<(i64, String, Vec<String>)> = Vec::new();
        let rows = st.query_map(params![limit as i64], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get(2)?))
        })?;
        for r in rows {
            let (id, remote, name) = r?;
            match out.last_mut() {
                Some(last) if last.0 == id => last.2.push(name),
                _ => out.push((id, remote, vec![name])),
            }
        }
        Ok(out)
    }

    pub fn names_reported(&self, row: i64, names: &[String]) -> Result<()> {
        let mut st = self
            .conn
            .prepare_cached("UPDATE names SET reported = 1 WHERE file = ?1 AND name = ?2")?;
        for n in names {
            st.execute(params![row, n])?;
        }
        Ok(())
    }

    /// The local names of a row (tests and the status of one file).
    pub fn names(&self, row: i64) -> Result<Vec<String>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT name FROM names WHERE file = ?1 ORDER BY name")?;
        let rows = st
            .query_map(params![row], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Remembers that the local file `key` holds a copy of `row`'s content (already archived).
    pub fn add_copy(&self, key: CopyKey, row: i64) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO copies (dev, ino, size, mtime_ns, file) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![key.dev as i64, key.ino as i64, key.size as i64, key.mtime_ns, row],
        )?;
        Ok(())
    }

    /// The row a local file (exactly as it is now) was found to be a copy of.
    pub fn copy_of(&self, key: CopyKey) -> Result<Option<i64>> {
        let mut st = self.conn.prepare_cached(
            "SELECT file FROM copies WHERE dev = ?1 AND ino = ?2 AND size = ?3 AND mtime_ns = ?4",
        )?;
        Ok(st
            .query_row(
                params![
                    key.dev as i64,
                    key.ino as i64,
                    key.size as i64,
                    key.mtime_ns
                ],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn totals(&self, now_ms: i64) -> Result<Totals> {
        let mut t = Totals::default();
        self.conn.query_row(
            "SELECT COUNT(*) FILTER (WHERE archived_size > 0 OR (state = 'archived')), COALESCE(SUM(archived_size), 0),
                    COUNT(*) FILTER (WHERE state IN ('pending', 'orphaned')),
                    COALESCE(SUM(MAX(size - archived_size, 0)) FILTER (WHERE state IN ('pending', 'orphaned')), 0),
                    COUNT(*) FILTER (WHERE state = 'unstorable'), COUNT(*) FILTER (WHERE state = 'lost'),
                    COALESCE(SUM(lost_bytes), 0)
             FROM files",
            [],
            |r| {
                t.files_archived = r.get::<_, i64>(0)? as u64;
                t.bytes_archived = r.get::<_, i64>(1)? as u64;
                t.backlog_files = r.get::<_, i64>(2)? as u64;
                t.backlog_bytes = r.get::<_, i64>(3)? as u64;
                t.unstorable = r.get::<_, i64>(4)? as u64;
                t.lost = r.get::<_, i64>(5)? as u64;
                t.lost_bytes = r.get::<_, i64>(6)? as u64;
                Ok(())
            },
        )?;
        t.already_archived = self
            .conn
            .query_row("SELECT COUNT(*) FROM copies", [], |r| r.get::<_, i64>(0))?
            as u64;
        if let Some((rel, since)) = self
            .conn
            .query_row(
                "SELECT rel, first_seen_ms FROM files WHERE state = 'pending' ORDER BY first_seen_ms LIMIT 1",
                [],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
            )
            .optional()?
        {
            t.oldest_pending = Some(rel);
            t.oldest_pending_since_ms = Some(since);
        }
        let mut st = self.conn.prepare_cached(
            "SELECT rel, path, size - archived_size, behind_since_ms FROM files
             WHERE state IN ('pending', 'orphaned') AND behind_since_ms IS NOT NULL
             ORDER BY behind_since_ms LIMIT 10",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        for r in rows {
            let (rel, path, bytes, since) = r?;
            let path = PathBuf::from(OsStr::from_bytes(&path));
            let shown = match path.file_name() {
                // The rotated name when it moved, else the name it was found under.
                Some(n) if !rel.ends_with(&*n.to_string_lossy()) => {
                    format!("{rel} (now {})", n.to_string_lossy())
                }
                _ => rel,
            };
            t.lagging.push(Lag {
                path: shown,
                bytes: bytes.max(0) as u64,
                seconds: ((now_ms - since).max(0) / 1000) as u64,
            });
        }
        t.max_lag_seconds = t.lagging.iter().map(|l| l.seconds).max().unwrap_or(0);
        t.max_lag_bytes = self.conn.query_row(
            "SELECT COALESCE(MAX(size - archived_size), 0) FROM files WHERE state IN ('pending', 'orphaned')",
            [],
            |r| r.get::<_, i64>(0),
        )?
        .max(0) as u64;
        t.last_error = self
            .conn
            .query_row(
                "SELECT rel || ': ' || last_error FROM files WHERE last_error IS NOT NULL ORDER BY next_try_ms DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?;
        Ok(t)
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Starts a transaction (see [`crate::track::Tracker::transaction`]).
    pub fn begin(&self) -> Result<()> {
        Ok(self.conn.execute_batch("BEGIN IMMEDIATE")?)
    }

    pub fn commit(&self) -> Result<()> {
        Ok(self.conn.execute_batch("COMMIT")?)
    }

    pub fn rollback(&self) {
        let _ = self.conn.execute_batch("ROLLBACK");
    }

    /// Runs `f` in one transaction (a scan's many small writes in one commit).
    pub fn transaction<T>(&mut self, f: impl FnOnce(&StateDb) -> Result<T>) -> Result<T> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        match f(self) {
            Ok(v) => {
                self.conn.execute_batch("COMMIT")?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn row(source: usize, rel: &str) -> FileRow {
        FileRow {
            id: 0,
            source,
            rel: rel.into(),
            generation: 1,
            dev: 1,
            ino: 1,
            path: PathBuf::from("/src").join(rel),
            tracked: true,
            head_sha: String::new(),
            head_len: 0,
            size: 0,
            mtime_ns: 0,
            stable_since_ms: 0,
            grew: false,
            maybe_copy: false,
            archived_size: 0,
            archived_sha: None,
            tail_sha: None,
            remote: format!("/{rel}"),
            state: FileState::Pending,
            attempts: 0,
            last_error: None,
            next_try_ms: 0,
            ready_at_ms: 0,
            sent_at_ms: 0,
            behind_since_ms: None,
            orphaned_at_ms: None,
            lost_bytes: 0,
            first_seen_ms: 0,
            archived_at_ms: None,
        }
    }

    #[test]
    fn opening_one_database_from_several_processes_at_once_migrates_it_once() {
        // The agent and `agent status` open the state database at the same moment; both used to
        // add the same new columns, and the loser failed ("duplicate column name").
        let dir = tempfile::tempdir().unwrap();
        for round in 0..20 {
            let path = dir.path().join(format!("s{round}.db"));
            let start = std::sync::Arc::new(std::sync::Barrier::new(4));
            let opened: Vec<_> = (0..4)
                .map(|_| {
                    let (path, start) = (path.clone(), std::sync::Arc::clone(&start));
                    std::thread::spawn(move || {
                        start.wait();
                        StateDb::open(&path).map(|_| ()).map_err(|e| e.to_string())
                    })
                })
                .collect();
            for t in opened {
                assert_eq!(t.join().unwrap(), Ok(()), "round {round}");
            }
        }
    }

    #[test]
    fn source_ids_are_stable_whatever_the_order() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(&dir.path().join("s.db")).unwrap();
        let (a, b, c) = (Path::new("/a"), Path::new("/b"), Path::new("/c"));
        let first = db.source_ids(&[(a, ""), (b, "x")]).unwrap();
        let again = db.source_ids(&[(c, ""), (b, "x"), (a, "")]).unwrap();
        assert_eq!(again[1..], [first[1], first[0]]);
        assert!(!first.contains(&again[0]));
        // The same root under another prefix is another source (its files go elsewhere).
        assert!(!again.contains(&db.source_ids(&[(a, "y")]).unwrap()[0]));
    }

    #[test]
    fn a_database_from_before_source_ids_keeps_its_positions() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(&dir.path().join("s.db")).unwrap();
        // Rows written when sources were numbered by their place in the config.
        db.insert(&row(0, "a.log")).unwrap();
        db.insert(&row(1, "b.log")).unwrap();
        let ids = db
            .source_ids(&[(Path::new("/a"), ""), (Path::new("/b"), "")])
            .unwrap();
        assert_eq!(ids, [0, 1]);
        let later = db
            .source_ids(&[(Path::new("/n"), ""), (Path::new("/b"), "")])
            .unwrap();
        assert_eq!(later[1], 1);
        assert!(later[0] > 1);
    }

    /// A database written by the first version (no path, no readiness columns) opens, gains the
    /// new columns, and its rows get their paths and readiness.
    #[test]
    fn a_first_version_database_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("old.db");
        {
            let c = Connection::open(&p).unwrap();
            c.execute_batch(
                "CREATE TABLE files (id INTEGER PRIMARY KEY, source INTEGER NOT NULL, rel TEXT NOT NULL,
                   generation INTEGER NOT NULL, dev INTEGER NOT NULL, ino INTEGER NOT NULL, head_sha TEXT NOT NULL,
                   head_len INTEGER NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
                   stable_since_ms INTEGER NOT NULL, archived_size INTEGER NOT NULL DEFAULT 0, archived_sha TEXT,
                   remote TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT,
                   next_try_ms INTEGER NOT NULL DEFAULT 0, first_seen_ms INTEGER NOT NULL, archived_at_ms INTEGER,
                   UNIQUE(source, rel, generation));
                 INSERT INTO files (source, rel, generation, dev, ino, head_sha, head_len, size, mtime_ns,
                   stable_since_ms, remote, state, first_seen_ms) VALUES
                   (0, 'a.log', 1, 7, 8, '', 0, 10, 0, 5000, '/a.log', 'pending', 1),
                   (0, 'b.log', 1, 7, 9, '', 0, 10, 0, 0, '/b.log', 'lost', 1);",
            )
            .unwrap();
        }
        let db = StateDb::open(&p).unwrap();
        let ids = db.source_ids(&[(Path::new("/src"), "")]).unwrap();
        db.fill_paths(ids[0], Path::new("/src")).unwrap();
        db.reset_ready(1000).unwrap();
        let a = db.latest(ids[0], "a.log").unwrap().unwrap();
        assert_eq!(a.path, Path::new("/src/a.log"));
        assert_eq!(a.ready_at_ms, 6000, "quiet period after its last change");
        assert!(a.tracked);
        let b = db.latest(ids[0], "b.log").unwrap().unwrap();
        assert!(!b.tracked, "a lost row follows nothing");
        assert_eq!(db.next_ready_ms().unwrap(), Some(6000));
    }

    #[test]
    fn growing_files_are_handed_out_first() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(&dir.path().join("s.db")).unwrap();
        let mut old = row(0, "old.log");
        old.ready_at_ms = 1;
        db.insert(&old).unwrap();
        let mut busy = row(0, "busy.log");
        busy.grew = true;
        busy.ready_at_ms = 50;
        db.insert(&busy).unwrap();
        let mut later = row(0, "later.log");
        later.ready_at_ms = 500;
        db.insert(&later).unwrap();
        let got: Vec<String> = db
            .ready(100, 10)
            .unwrap()
            .into_iter()
            .map(|r| r.rel)
            .collect();
        assert_eq!(got, ["busy.log", "old.log"]);
        assert_eq!(db.ready(100, 1).unwrap()[0].rel, "busy.log");
        assert_eq!(db.next_ready_ms().unwrap(), Some(1));
    }
}
