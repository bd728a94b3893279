//! The agent's memory: one SQLite file (WAL), one row per local file generation. A row says what
//! the local file looked like, how much of it the server holds verified, and what is left to do.
//! It is only ever advanced after the server confirmed the bytes (SHA-256 compared).

use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;

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
    /// Replaced or truncated locally before it was fully archived: what is gone is gone.
    Lost,
}

impl FileState {
    fn as_str(self) -> &'static str {
        match self {
            FileState::Pending => "pending",
            FileState::Archived => "archived",
            FileState::Unstorable => "unstorable",
            FileState::Lost => "lost",
        }
    }
    fn parse(s: &str) -> FileState {
        match s {
            "archived" => FileState::Archived,
            "unstorable" => FileState::Unstorable,
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
    /// `/`-separated path relative to the source root.
    pub rel: String,
    pub generation: i64,
    pub dev: u64,
    pub ino: u64,
    pub head_sha: String,
    pub head_len: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub stable_since_ms: i64,
    pub archived_size: u64,
    pub archived_sha: Option<String>,
    /// Absolute path inside the agent's FTP home.
    pub remote: String,
    pub state: FileState,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub next_try_ms: i64,
    pub first_seen_ms: i64,
    pub archived_at_ms: Option<i64>,
}

const COLUMNS: &str = "id, source, rel, generation, dev, ino, head_sha, head_len, size, mtime_ns, stable_since_ms, \
     archived_size, archived_sha, remote, state, attempts, last_error, next_try_ms, first_seen_ms, archived_at_ms";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FileRow> {
    Ok(FileRow {
        id: r.get(0)?,
        source: r.get::<_, i64>(1)? as usize,
        rel: r.get(2)?,
        generation: r.get(3)?,
        dev: r.get::<_, i64>(4)? as u64,
        ino: r.get::<_, i64>(5)? as u64,
        head_sha: r.get(6)?,
        head_len: r.get::<_, i64>(7)? as u64,
        size: r.get::<_, i64>(8)? as u64,
        mtime_ns: r.get(9)?,
        stable_since_ms: r.get(10)?,
        archived_size: r.get::<_, i64>(11)? as u64,
        archived_sha: r.get(12)?,
        remote: r.get(13)?,
        state: FileState::parse(&r.get::<_, String>(14)?),
        attempts: r.get(15)?,
        last_error: r.get(16)?,
        next_try_ms: r.get(17)?,
        first_seen_ms: r.get(18)?,
        archived_at_ms: r.get(19)?,
    })
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
    pub last_error: Option<String>,
}

pub struct StateDb {
    conn: Connection,
}

impl StateDb {
    pub fn open(path: &Path) -> Result<StateDb> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
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
             CREATE INDEX IF NOT EXISTS files_todo ON files(state, first_seen_ms);
             CREATE TABLE IF NOT EXISTS sources (
                id INTEGER PRIMARY KEY,
                root TEXT NOT NULL,
                prefix TEXT NOT NULL,
                UNIQUE(root, prefix)
             );
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
        )?;
        Ok(StateDb { conn })
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

    /// The newest generation seen at `source`/`rel`.
    pub fn latest(&self, source: usize, rel: &str) -> Result<Option<FileRow>> {
        let sql = format!("SELECT {COLUMNS} FROM files WHERE source = ?1 AND rel = ?2 ORDER BY generation DESC LIMIT 1");
        let mut st = self.conn.prepare_cached(&sql)?;
        Ok(st.query_row(params![source as i64, rel], row).optional()?)
    }

    pub fn get(&self, id: i64) -> Result<Option<FileRow>> {
        let sql = format!("SELECT {COLUMNS} FROM files WHERE id = ?1");
        Ok(self.conn.query_row(&sql, params![id], row).optional()?)
    }

    /// Inserts a new generation; returns its id.
    pub fn insert(&self, r: &FileRow) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO files (source, rel, generation, dev, ino, head_sha, head_len, size, mtime_ns, stable_since_ms,
                archived_size, archived_sha, remote, state, attempts, last_error, next_try_ms, first_seen_ms, archived_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
            params![
                r.source as i64,
                r.rel,
                r.generation,
                r.dev as i64,
                r.ino as i64,
                r.head_sha,
                r.head_len as i64,
                r.size as i64,
                r.mtime_ns,
                r.stable_since_ms,
                r.archived_size as i64,
                r.archived_sha,
                r.remote,
                r.state.as_str(),
                r.attempts,
                r.last_error,
                r.next_try_ms,
                r.first_seen_ms,
                r.archived_at_ms
            ],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Records a new observation of the local file (size, time, head) of an existing row.
    pub fn observe(
        &self,
        id: i64,
        size: u64,
        mtime_ns: i64,
        stable_since_ms: i64,
        head: Option<(&str, u64)>,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE files SET size = ?2, mtime_ns = ?3, stable_since_ms = ?4,
                state = CASE WHEN state = 'archived' AND ?2 > archived_size THEN 'pending' ELSE state END
             WHERE id = ?1",
            params![id, size as i64, mtime_ns, stable_since_ms],
        )?;
        if let Some((sha, len)) = head {
            self.conn.execute(
                "UPDATE files SET head_sha = ?2, head_len = ?3 WHERE id = ?1",
                params![id, sha, len as i64],
            )?;
        }
        Ok(())
    }

    /// Marks a file as ready now (the writer closed it), skipping the quiet period.
    pub fn mark_closed(&self, id: i64) -> Result<()> {
        self.conn.execute(
            "UPDATE files SET stable_since_ms = 0 WHERE id = ?1",
            params![id],
        )?;
        Ok(())
    }

    pub fn set_state(&self, id: i64, state: FileState, error: Option<&str>) -> Result<()> {
        self.conn.execute(
            "UPDATE files SET state = ?2, last_error = ?3 WHERE id = ?1",
            params![id, state.as_str(), error],
        )?;
        Ok(())
    }

    /// The server holds the first `size` bytes, whose SHA-256 it confirmed.
    pub fn archived(&self, id: i64, size: u64, sha: &str, now_ms: i64) -> Result<()> {
        self.conn.execute(
            "UPDATE files SET archived_size = ?2, archived_sha = ?3, attempts = 0, last_error = NULL, next_try_ms = 0,
                archived_at_ms = ?4, state = CASE WHEN size > ?2 THEN 'pending' ELSE 'archived' END
             WHERE id = ?1",
            params![id, size as i64, sha, now_ms],
        )?;
        Ok(())
    }

    pub fn failed(&self, id: i64, error: &str, next_try_ms: i64) -> Result<()> {
        self.conn.execute(
            "UPDATE files SET attempts = attempts + 1, last_error = ?2, next_try_ms = ?3 WHERE id = ?1",
            params![id, error, next_try_ms],
        )?;
        Ok(())
    }

    /// Up to `limit` rows ready to send at `now_ms` (quiet long enough, not backing off),
    /// oldest first.
    pub fn ready(&self, now_ms: i64, quiet_ms: i64, limit: usize) -> Result<Vec<FileRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM files WHERE state = 'pending' AND next_try_ms <= ?1 AND stable_since_ms <= ?2
             ORDER BY first_seen_ms, id LIMIT ?3"
        );
        let mut st = self.conn.prepare_cached(&sql)?;
        let rows = st
            .query_map(params![now_ms, now_ms - quiet_ms, limit as i64], row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// When the next pending row becomes ready (`None`: nothing pending).
    pub fn next_ready_ms(&self, quiet_ms: i64) -> Result<Option<i64>> {
        let mut st = self.conn.prepare_cached(
            "SELECT MIN(MAX(stable_since_ms + ?1, next_try_ms)) FROM files WHERE state = 'pending'",
        )?;
        Ok(st.query_row(params![quiet_ms], |r| r.get::<_, Option<i64>>(0))?)
    }

    /// Number of rows with bytes to send.
    pub fn pending_count(&self) -> Result<u64> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*) FROM files WHERE state = 'pending'",
            [],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    /// (source, rel, size, mtime, dev, ino) of the newest generation of every path, to tell
    /// unchanged files apart without a query each.
    pub fn latest_all(&self, mut f: impl FnMut(usize, &str, u64, i64, u64, u64)) -> Result<()> {
        let mut st = self.conn.prepare(
            "SELECT source, rel, size, mtime_ns, dev, ino FROM files f
             WHERE generation = (SELECT MAX(generation) FROM files g WHERE g.source = f.source AND g.rel = f.rel)",
        )?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            f(
                r.get::<_, i64>(0)? as usize,
                &r.get::<_, String>(1)?,
                r.get::<_, i64>(2)? as u64,
                r.get(3)?,
                r.get::<_, i64>(4)? as u64,
                r.get::<_, i64>(5)? as u64,
            );
        }
        Ok(())
    }

    pub fn totals(&self) -> Result<Totals> {
        let mut t = Totals::default();
        self.conn.query_row(
            "SELECT COUNT(*) FILTER (WHERE archived_size > 0 OR (state = 'archived')), COALESCE(SUM(archived_size), 0),
                    COUNT(*) FILTER (WHERE state = 'pending'), COALESCE(SUM(size - archived_size) FILTER (WHERE state = 'pending'), 0),
                    COUNT(*) FILTER (WHERE state = 'unstorable'), COUNT(*) FILTER (WHERE state = 'lost')
             FROM files",
            [],
            |r| {
                t.files_archived = r.get::<_, i64>(0)? as u64;
                t.bytes_archived = r.get::<_, i64>(1)? as u64;
                t.backlog_files = r.get::<_, i64>(2)? as u64;
                t.backlog_bytes = r.get::<_, i64>(3)? as u64;
                t.unstorable = r.get::<_, i64>(4)? as u64;
                t.lost = r.get::<_, i64>(5)? as u64;
                Ok(())
            },
        )?;
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

    /// Runs `f` in one transaction (a scan's many small writes in one fsync).
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

    fn row(source: usize, rel: &str) -> FileRow {
        FileRow {
            id: 0,
            source,
            rel: rel.into(),
            generation: 1,
            dev: 1,
            ino: 1,
            head_sha: String::new(),
            head_len: 0,
            size: 0,
            mtime_ns: 0,
            stable_since_ms: 0,
            archived_size: 0,
            archived_sha: None,
            remote: format!("/{rel}"),
            state: FileState::Pending,
            attempts: 0,
            last_error: None,
            next_try_ms: 0,
            first_seen_ms: 0,
            archived_at_ms: None,
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
}
