//! The S3 back-end's metadata: the tree of folders and files, each file's segments (immutable
//! objects, each holding a byte range of the file) and SHA-256 state, and the objects waiting
//! to be deleted. Two stores keep it behind one trait, [`MetaStore`]: SQLite in WAL mode
//! beside one server (`sqlite.rs`), and PostgreSQL shared by every server of an archive
//! (`postgres.rs`). Every change is one transaction, so a kill leaves the tree as it was
//! before or after it, never between.
//!
//! Invariant (what `fsck` checks): every object under the prefix is named by a segment row or
//! a garbage row. A key enters `garbage` before its PUT starts and leaves it in the
//! transaction that adds its segment; a segment's key returns to `garbage` in the transaction
//! that drops the segment (remove, replace, truncate, compaction), and is deleted from the
//! store only a grace period later, so a reader that listed it still finds it; its row stays
//! until a second delete at least a minute after the first (a PUT a killed server had sent may
//! land after the first). Keys are never reused. A key whose PUT is under way is not deleted
//! whatever its age: its process keeps it in memory and, so other servers sharing the
//! metadata know too, refreshes its row's age ([`MetaStore::touch_garbage`]) ten times per
//! grace period.

#[cfg(feature = "postgres")]
mod postgres;
mod sqlite;

#[cfg(feature = "postgres")]
pub(crate) use self::postgres::{copy_from_sqlite as copy_metadata, PgMeta};
#[cfg(feature = "postgres")]
pub use self::postgres::{MetadataCopied, SCHEMA as POSTGRES_SCHEMA};
pub(crate) use sqlite::SqliteMeta;

use crate::sha::Sha256State;
use crate::store::{Kind, Meta};
use crate::vpath::VirtualPath;
use std::collections::{HashMap, HashSet};
use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The root folder's row.
pub(super) const ROOT: i64 = 1;

/// Files smaller than this are not compressed (see `compact.rs`).
pub(crate) const MIN_PACK: u64 = 4096;

/// A file's or folder's row.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub id: i64,
    pub dir: bool,
    pub size: u64,
    pub mtime_ms: i64,
    pub sha: Option<Sha256State>,
}

impl Node {
    pub fn meta(&self) -> Meta {
        let kind = if self.dir { Kind::Dir } else { Kind::File };
        let modified = UNIX_EPOCH + Duration::from_millis(self.mtime_ms.max(0) as u64);
        Meta::new(kind, if self.dir { 0 } else { self.size }, Some(modified))
    }
}

/// A byte range of a file: `len` bytes of the object `key` from byte `off`, or inline (small
/// uploads and appends wait in the metadata until the packer puts many into one object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Segment {
    pub start: u64,
    pub len: u64,
    pub key: String,
    pub off: u64,
    pub data: Option<bytes::Bytes>,
    /// The compressed object's size, for a segment in a compressed object.
    pub zsize: Option<u64>,
}

/// An inline segment the packer takes: (node, start, len, bytes).
pub(crate) type Inline = (i64, u64, u64, Vec<u8>);

/// Milliseconds since the epoch, the metadata's clock.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(super) fn not_found() -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, "no such file or folder")
}

pub(super) fn not_a_dir() -> io::Error {
    io::Error::new(io::ErrorKind::NotADirectory, "not a folder")
}

pub(super) fn not_a_file() -> io::Error {
    io::Error::new(io::ErrorKind::IsADirectory, "not a file")
}

pub(super) fn exists() -> io::Error {
    io::Error::new(io::ErrorKind::AlreadyExists, "the name is taken")
}

/// The metadata's operations. Calls block briefly (SQLite: a local transaction; PostgreSQL: a
/// few round trips on a pooled connection); errors are `io::Error`s whose kinds the FTP engine
/// maps to replies (`NotConnected`: the database is unreachable now, try again later).
pub(crate) trait MetaStore: Send + Sync + std::fmt::Debug {
    fn lookup(&self, path: &VirtualPath) -> io::Result<Node>;
    fn list(&self, dir: &VirtualPath) -> io::Result<Vec<(String, Node)>>;
    fn mkdir(&self, path: &VirtualPath) -> io::Result<()>;
    /// A new, empty file (the name must be free).
    fn create_file(&self, path: &VirtualPath) -> io::Result<i64>;

    /// A file to continue at `at` (its size): its row and SHA-256 state when kept.
    fn open_append(&self, path: &VirtualPath, at: u64) -> io::Result<(i64, Option<Sha256State>)> {
        let n = self.lookup(path)?;
        if n.dir {
            return Err(not_a_file());
        }
        if n.size != at {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the file is not that long",
            ));
        }
        Ok((n.id, n.sha.filter(|h| h.len() == at)))
    }

    /// A file to rewrite from `at` on (created if missing): what follows `at` is cut now, its
    /// objects handed to the garbage collector.
    fn open_replace(&self, path: &VirtualPath, at: u64) -> io::Result<(i64, Option<Sha256State>)>;
    fn segments(&self, id: i64) -> io::Result<Vec<Segment>>;
    /// A file's row.
    fn node(&self, id: i64) -> io::Result<Node>;
    /// Registers `key` as garbage before its object is written: if the writer dies before
    /// [`MetaStore::add_segment`], the collector removes what it left.
    fn pending(&self, key: &str) -> io::Result<()>;
    /// The file's bytes `start..` are `data`, kept inline until packed; the file is that long.
    fn add_inline(&self, id: i64, start: u64, data: &[u8]) -> io::Result<()>;
    /// Bytes waiting inline.
    fn inline_bytes(&self) -> io::Result<u64>;
    /// Inline segments for the packer: all of them up to `max_bytes` once the oldest was made
    /// before `before_ms` or they add up to `max_bytes`; else none. A shared store hands each
    /// segment to one packer at a time.
    fn inline_batch(&self, before_ms: i64, max_bytes: u64) -> io::Result<Vec<Inline>>;
    /// The object `key` holds `packed` back to back: each segment that is still inline and
    /// unchanged now points into it. Returns how many did; none: the object is garbage.
    fn packed(&self, key: &str, packed: &[(i64, u64, u64, u64)]) -> io::Result<usize>;
    /// The object `key` now holds the file's bytes `start..start + len`; the file is that long.
    fn add_segment(&self, id: i64, start: u64, len: u64, key: &str) -> io::Result<()>;
    /// Ends an upload: the file's SHA-256 state when known (it must cover the whole file).
    fn finish(&self, id: i64, hash: Option<&Sha256State>) -> io::Result<Node>;
    /// Keeps a SHA-256 state computed by reading the file, if the file is still that long.
    fn remember_sha(&self, id: i64, hash: &Sha256State) -> io::Result<()>;
    fn remove_file(&self, path: &VirtualPath) -> io::Result<()>;
    fn remove_dir(&self, path: &VirtualPath) -> io::Result<()>;
    /// Moves `from` to `to`; an existing `to` is replaced only with `replace` (then its objects
    /// become garbage). A folder moves with everything in it, in one row.
    fn rename(&self, from: &VirtualPath, to: &VirtualPath, replace: bool) -> io::Result<Node>;
    fn set_modified(&self, path: &VirtualPath, time: SystemTime) -> io::Result<()>;
    /// Keys due for deletion: garbage since before `before_ms`, and not deleted since
    /// `deleted_before_ms`; with whether their object was deleted once already. In key order,
    /// from the `skip`-th on, at most `limit`.
    fn due_garbage(
        &self,
        before_ms: i64,
        deleted_before_ms: i64,
        skip: usize,
        limit: usize,
    ) -> io::Result<Vec<(String, bool)>>;
    /// The objects of these keys are deleted: rows deleted before (`second`) go, the others
    /// are marked and go after the next delete.
    fn forget_garbage(&self, keys: &[(String, bool)]) -> io::Result<()>;
    /// Whether other processes share this metadata (then their collectors must be told which
    /// PUTs of this one are under way: [`MetaStore::touch_garbage`]).
    fn shared(&self) -> bool {
        false
    }
    /// These garbage keys' PUTs are under way: their age starts again now. Only a shared store
    /// needs it (a process's own collector knows its PUTs).
    fn touch_garbage(&self, _keys: &[String]) -> io::Result<()> {
        Ok(())
    }
    /// Every segment in an object with its file's path: (path, key, bytes the object must
    /// have).
    fn all_segments(&self) -> io::Result<Vec<(String, String, u64)>>;
    /// Bytes held for each file (in objects and inline), by path.
    fn stored_by_path(&self) -> io::Result<HashMap<String, u64>>;
    /// Every key waiting for collection.
    fn all_garbage(&self) -> io::Result<HashSet<String>>;
    /// Files unchanged since `before_ms`, at least [`MIN_PACK`] bytes, and not one compressed
    /// object yet: (row, name).
    fn quiet_files(&self, before_ms: i64, limit: usize) -> io::Result<Vec<(i64, String)>>;
    /// The file's bytes `0..len` are now the compressed object `key` of `zsize` bytes, if its
    /// segments below `len` are still `was`. Returns whether the swap happened.
    fn compacted(
        &self,
        id: i64,
        was: &[Segment],
        len: u64,
        key: &str,
        zsize: u64,
    ) -> io::Result<bool>;
}

/// A file's path from each row's (parent, name), `/a/b`; bounded by the number of rows, so a
/// corrupt cycle cannot loop forever.
pub(super) fn paths_of(names: &HashMap<i64, (i64, String)>) -> HashMap<i64, String> {
    let path_of = |mut id: i64| {
        let mut parts = Vec::new();
        for _ in 0..=names.len() {
            if id == ROOT {
                break;
            }
            match names.get(&id) {
                Some((parent, name)) => {
                    parts.push(name.as_str());
                    id = *parent;
                }
                None => break,
            }
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    };
    names.keys().map(|id| (*id, path_of(*id))).collect()
}
