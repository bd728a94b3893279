//! The FTP(S) client: logs in, sets binary mode, reconnects by itself, bounds every call with a
//! timeout, and uploads/downloads with resume and SHA-256. Built on suppaftp.
//!
//! Every operation goes through `Client::run`: on an I/O error, a timeout or a 421 it drops the
//! connection, reconnects with exponential, jittered backoff, logs in again, returns to the
//! working directory and retries once (only where a retry cannot do harm).

mod commands;
mod config;
mod connection;
mod error;
mod paths;
mod transfer;
mod url;
mod verified;

pub use config::{ClientConfig, TlsMode};
pub use error::ClientError;
pub use paths::{check_tls, join_remote, split_remote, tls_connector};
pub use transfer::{local_hash_state, local_sha256};
pub use url::FtpUrl;
pub use Local as LocalFile;

use crate::names::temp_name_for;
use async_speed_limit::Limiter;
use sha2::{Digest, Sha256};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use suppaftp::tokio::{
    AsyncRustlsConnector, AsyncRustlsStream, ImplAsyncFtpStream, TransferStream,
};
use suppaftp::types::FileType;
use suppaftp::{FtpError, Mode, Status};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

type Stream = ImplAsyncFtpStream<AsyncRustlsStream>;
type Op<'a, T> = Pin<Box<dyn Future<Output = std::result::Result<T, FtpError>> + Send + 'a>>;
/// The client's result type.
pub type Result<T> = std::result::Result<T, ClientError>;

/// Copy buffer size: memory per transfer stays at this, whatever the file size.
const BUF: usize = 256 * 1024;
/// How long a failed upload waits for the server's reason on the control connection.
const REFUSAL_PROBE: Duration = Duration::from_secs(3);

/// Called with the number of bytes transferred so far (of this call).
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// A remote directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Entry {
    /// The entry's name (no folder).
    pub name: String,
    /// File, folder or other.
    pub kind: EntryKind,
    /// Size in bytes (0 for folders where the server gives none).
    pub size: u64,
    /// Last modification, when the server tells it.
    pub modified: Option<SystemTime>,
}

/// What a listing entry is. `Other` already covers kinds the client does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A plain file.
    File,
    /// A folder.
    Dir,
    /// Anything else (a link, a device...).
    Other,
}

/// Where an upload starts on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UploadMode {
    /// STOR from the first byte (a new file).
    Create,
    /// Continue a partial remote file: REST at its SIZE (0 if missing), send the rest.
    Resume,
    /// APPE the local bytes from `local_offset` on (the remote holds the bytes before it).
    /// Upload the local file from `local_offset` on with APPE.
    Append {
        /// Where in the local file the bytes to send start.
        local_offset: u64,
    },
}

/// How an upload goes. `UploadOptions::default()` creates or replaces the whole file.
#[derive(Clone)]
#[non_exhaustive]
pub struct UploadOptions {
    /// Where the upload starts on the server.
    pub mode: UploadMode,
    /// Send only the first `length` bytes of the local file (a snapshot of a growing log).
    pub length: Option<u64>,
    /// Called with the bytes sent so far.
    pub progress: Option<Progress>,
}

impl Default for UploadOptions {
    fn default() -> Self {
        UploadOptions {
            mode: UploadMode::Create,
            length: None,
            progress: None,
        }
    }
}

impl UploadOptions {
    /// An upload in this mode, of the whole local file, without progress reports.
    pub fn new(mode: UploadMode) -> Self {
        UploadOptions {
            mode,
            ..Default::default()
        }
    }

    /// Sends only the first `length` bytes of the local file.
    pub fn length(mut self, length: u64) -> Self {
        self.length = Some(length);
        self
    }

    /// Reports the bytes sent so far to `progress` as the upload goes.
    pub fn progress(mut self, progress: Option<Progress>) -> Self {
        self.progress = progress;
        self
    }
}

impl DownloadOptions {
    /// Continues into an existing local file from its length (`true`) or starts over.
    pub fn resume(mut self, resume: bool) -> Self {
        self.resume = resume;
        self
    }

    /// Reports the bytes received so far to `progress` as the download goes.
    pub fn progress(mut self, progress: Option<Progress>) -> Self {
        self.progress = progress;
        self
    }
}

/// How a download goes. `DownloadOptions::default()` writes the whole file anew.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct DownloadOptions {
    /// Continue into an existing local file from its length.
    pub resume: bool,
    /// Called with the bytes received so far.
    pub progress: Option<Progress>,
}

/// What a transfer did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransferOutcome {
    /// Bytes that crossed the network in this call (resumed parts not counted twice).
    pub bytes: u64,
    /// SHA-256 (hex) of the whole file as it now stands on the receiving side.
    pub sha256: String,
    /// Size of the whole file on the receiving side.
    pub size: u64,
}

/// What [`Client::upload_verified`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifiedUpload {
    /// Bytes sent in this transfer (not counting what the server already held).
    pub bytes: u64,
    /// Hex SHA-256 of the whole file as the server now holds it.
    pub sha256: String,
    /// The file's size on the server afterwards.
    pub size: u64,
    /// The final name already held exactly these bytes; nothing was sent.
    pub already_present: bool,
}

/// The SHA-256 state of a local file's first [`HashState::size`] bytes. Kept between transfers, it
/// lets the next append to a large, growing file hash only the new bytes instead of reading the
/// whole file again ([`Client::upload_hashed`]).
#[derive(Clone)]
pub struct HashState {
    len: u64,
    hasher: Sha256,
}

impl HashState {
    /// How many bytes from the start of the file the state covers.
    pub fn size(&self) -> u64 {
        self.len
    }

    /// The SHA-256 (hex) of those bytes.
    pub fn sha256(&self) -> String {
        hex::encode(self.hasher.clone().finalize())
    }
}

impl std::fmt::Debug for HashState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashState").field("len", &self.len).finish()
    }
}

/// The local side of an upload: a path, or a file the caller already holds open. A log that is
/// renamed or removed while it is sent still reads the same bytes through an open file.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Local<'a> {
    /// A file to open by path.
    Path(&'a Path),
    /// A file already open (a log held open by its writer's path may have moved).
    Open {
        /// The open file.
        file: &'a std::fs::File,
        /// Where the file was last seen (for messages only).
        name: &'a Path,
    },
}

impl<'a> From<&'a Path> for Local<'a> {
    fn from(p: &'a Path) -> Self {
        Local::Path(p)
    }
}

impl<'a> From<&'a std::path::PathBuf> for Local<'a> {
    fn from(p: &'a std::path::PathBuf) -> Self {
        Local::Path(p)
    }
}

impl Local<'_> {
    fn name(&self) -> &Path {
        match self {
            Local::Path(p) => p,
            Local::Open { name, .. } => name,
        }
    }

    /// A handle to read the file through. Local file operations run on the caller's thread, not
    /// on a blocking pool: for the agent's many small files the hops to and from a pool thread
    /// cost more than the reads themselves (a log on a local disk, mostly in the page cache).
    /// Reads are positional, so nobody else's file position moves.
    fn open(&self) -> Result<std::fs::File> {
        match self {
            Local::Path(p) => std::fs::File::open(p)
                .map_err(|e| ClientError::io(format!("opening {}", p.display()), e)),
            Local::Open { file, name } => file
                .try_clone()
                .map_err(|e| ClientError::io(format!("opening {}", name.display()), e)),
        }
    }

    fn len(&self) -> Result<u64> {
        let m = match self {
            Local::Path(p) => std::fs::metadata(p),
            Local::Open { file, .. } => file.metadata(),
        };
        m.map(|m| m.len())
            .map_err(|e| ClientError::io(format!("reading {}", self.name().display()), e))
    }
}

/// A connection to one server and account.
pub struct Client {
    cfg: ClientConfig,
    conn: Option<Stream>,
    cwd: String,
    tls: Option<tokio_rustls::TlsConnector>,
    limiter: Option<Limiter>,
    /// Whether the server has `SITE COMMIT` (unknown until tried).
    commit: Option<bool>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("cfg", &self.cfg)
            .field("cwd", &self.cwd)
            .finish_non_exhaustive()
    }
}

async fn bounded<T>(
    t: Duration,
    what: &str,
    fut: impl Future<Output = std::result::Result<T, FtpError>>,
) -> Result<T> {
    match tokio::time::timeout(t, fut).await {
        Ok(r) => r.map_err(|e| ClientError::from_ftp(e, what)),
        Err(_) => Err(ClientError::Timeout(what.to_string())),
    }
}
