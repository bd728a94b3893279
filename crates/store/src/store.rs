//! The storage the FTP service reads and writes through: one trait, made for more than a local
//! folder (an object store implements it too). Paths are archive paths ([`VirtualPath`]: the
//! account's home already joined, normalised, never climbing); rights, limits, hashing of what
//! arrives and events are the engine's, not the store's.
//!
//! What a store must give: metadata and listings; uploads that create a new file (atomically:
//! never over an existing one), append at the end, or rewrite from an offset; ranged reads;
//! renames that can refuse to replace (rename-if-absent); and the SHA-256 state of a file's
//! content without reading it when it knows it (a local store remembers what it received, an
//! object store keeps it in its catalog). A file descriptor is only an optimisation
//! ([`Download::file`], for sendfile).
//!
//! Uploads and downloads move bytes on blocking threads (the engine's pipelines call their
//! methods there); everything else is async.

use super::vpath::VirtualPath;
use crate::sha::Sha256State;
use async_trait::async_trait;
use std::io;
use std::time::SystemTime;

/// What a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// A file.
    File,
    /// A folder.
    Dir,
}

/// A file's or folder's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Meta {
    /// File or folder.
    pub kind: Kind,
    /// Size in bytes (0 for a folder).
    pub size: u64,
    /// Last modification, when the store knows it.
    pub modified: Option<SystemTime>,
}

impl Meta {
    /// Metadata of this kind, size and time.
    pub fn new(kind: Kind, size: u64, modified: Option<SystemTime>) -> Meta {
        Meta {
            kind,
            size,
            modified,
        }
    }

    /// Whether this is a file.
    pub fn is_file(&self) -> bool {
        self.kind == Kind::File
    }

    /// Whether this is a folder.
    pub fn is_dir(&self) -> bool {
        self.kind == Kind::Dir
    }
}

/// How an upload writes its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteMode {
    /// A new file; `AlreadyExists` if the name is taken (checked atomically).
    CreateNew,
    /// Continue an existing file at its end, which must be `at` bytes now.
    Append {
        /// The file's size when the upload starts.
        at: u64,
    },
    /// Rewrite an existing file (or create it) from `at` on (REST + STOR): what follows `at` is
    /// cut.
    Replace {
        /// Where the new bytes start.
        at: u64,
    },
}

/// An upload being written. Its methods run on a blocking thread, called in order.
pub trait Upload: Send {
    /// Bytes the file held before this upload's first byte.
    fn offset(&self) -> u64;
    /// The SHA-256 state of those bytes, if the store knows it without reading them.
    fn prefix_hash(&self) -> Option<Sha256State>;
    /// Writes `data` at the upload's position.
    fn write(&mut self, data: &[u8]) -> io::Result<()>;
    /// Everything arrived: this is the file now. `hash` covers the whole file when the engine
    /// could compute it (the store keeps it for [`Storage::sha256`]).
    fn finish(self: Box<Self>, hash: Option<Sha256State>) -> io::Result<Meta>;
    /// The transfer was cut: what was written stays (a resumed upload continues from it), and is
    /// described by `hash` when known.
    fn abandon(self: Box<Self>, hash: Option<Sha256State>) -> io::Result<Meta>;
    /// Whether a small upload (up to 64 KiB) may be written, finished and hashed on the
    /// session's own thread rather than a blocking one: true for a local disk, where that takes
    /// microseconds; false (the default) where a write may wait on a network.
    fn small_writes_inline(&self) -> bool {
        false
    }
}

/// A download being read, from its start offset on. Its methods run on a blocking thread.
pub trait Download: Send {
    /// The file's size when opened.
    fn len(&self) -> u64;
    /// Whether the file is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Reads the next bytes; 0 at the end.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// The open local file and the offset of the next byte, where the store is a local file
    /// system: then the engine may send it with sendfile(2).
    fn file(&self) -> Option<(&std::fs::File, u64)> {
        None
    }
}

/// A file opened for reading at any offset (the web's viewer, search, ranged downloads, zips):
/// what it was when opened, and reads anywhere in it. Its methods block: call them on a
/// blocking thread.
pub trait Reader: Send + Sync {
    /// The file's size when opened.
    fn len(&self) -> u64;
    /// Whether the file was empty when opened.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Its last modification when opened.
    fn modified(&self) -> Option<SystemTime>;
    /// Which file this is: another file later put at the same name has another identity (a
    /// follower uses it to notice a replaced file).
    fn identity(&self) -> u64;
    /// Reads bytes at `offset` into `buf`; 0 at the end. (A local file that grew since it was
    /// opened may return bytes past [`Reader::len`]; a store that snapshots does not.)
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// The frames of a file stored compressed (seekable zstd), with their line counts and
    /// token filters: a search reads only the frames that may hold what it looks for.
    fn seek_index(&self) -> Option<&crate::seekable::SeekableReader> {
        None
    }
}

/// The store the FTP service reads and writes through. Paths are already confined to the account's home ([`VirtualPath`]); a file descriptor is only an optimisation (`Download::fd` for sendfile).
#[async_trait]
pub trait Storage: Send + Sync + std::fmt::Debug + 'static {
    /// Kind, size and time of a file or folder.
    async fn stat(&self, path: &VirtualPath) -> io::Result<Meta>;
    /// The entries directly in a folder (files and folders only), in any order.
    async fn list(&self, dir: &VirtualPath) -> io::Result<Vec<(String, Meta)>>;
    /// Creates a folder (its parent must exist); `AlreadyExists` if the name is taken.
    async fn mkdir(&self, path: &VirtualPath) -> io::Result<()>;
    /// Deletes a file.
    async fn remove_file(&self, path: &VirtualPath) -> io::Result<()>;
    /// Removes an empty folder.
    async fn remove_dir(&self, path: &VirtualPath) -> io::Result<()>;
    /// Renames; without `replace` an existing target is never replaced (`AlreadyExists`).
    async fn rename(&self, from: &VirtualPath, to: &VirtualPath, replace: bool)
        -> io::Result<Meta>;
    /// Sets a file's modification time (MFMT).
    async fn set_modified(&self, path: &VirtualPath, time: SystemTime) -> io::Result<()>;
    /// Opens a file for reading from `offset`.
    async fn read(&self, path: &VirtualPath, offset: u64) -> io::Result<Box<dyn Download>>;
    /// Opens a file for reading at any offset; a folder is `IsADirectory`.
    async fn open_reader(&self, path: &VirtualPath) -> io::Result<Box<dyn Reader>>;
    /// Opens a file for writing as `mode` says (the checks of the mode are the store's).
    async fn write(&self, path: &VirtualPath, mode: WriteMode) -> io::Result<Box<dyn Upload>>;
    /// The SHA-256 state of a file's whole content: remembered, or read.
    async fn sha256(&self, path: &VirtualPath) -> io::Result<Sha256State>;
    /// The SHA-256 state of a file's whole content if the store remembers it (never reads).
    async fn known_sha256(&self, path: &VirtualPath) -> Option<Sha256State> {
        let _ = path;
        None
    }
}
