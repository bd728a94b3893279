//! Events the embedding program can subscribe to (the archive catalog is fed from these).

use std::net::SocketAddr;

/// Something that happened on the FTP service. Paths are archive paths: the account's home joined
/// with the path inside it, e.g. `/agent01/Logs/a.txt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FtpEvent {
    LoggedIn {
        user: String,
        addr: SocketAddr,
    },
    LoggedOut {
        user: String,
        addr: SocketAddr,
    },
    LoginFailed {
        user: String,
        addr: SocketAddr,
        reason: String,
    },
    /// A STOR ended with the client closing the data connection normally. For a temporary name
    /// (see [`crate::server::is_temp_name`]) this is *not* a completed file: a plain-FTP client that
    /// was cut off mid-transfer looks the same on the wire. The archive treats only the rename of
    /// a verified temporary file as completion.
    UploadCompleted {
        user: String,
        path: String,
        size: u64,
        sha256: Option<String>,
        temp: bool,
    },
    /// Bytes were added at the end of an existing file (APPE, or REST at its end + STOR).
    Appended {
        user: String,
        path: String,
        offset: u64,
        size: u64,
        sha256: Option<String>,
        temp: bool,
    },
    /// A rename. `from_temp` marks the completion of a verified upload.
    Renamed {
        user: String,
        from: String,
        to: String,
        size: u64,
        sha256: Option<String>,
        from_temp: bool,
    },
    /// `SITE ALIAS`: the file at `path` was also known as `name` where it came from (a rotated
    /// log's local names, e.g. `Logs/service.log.1`).
    Alias {
        user: String,
        path: String,
        name: String,
    },
    Deleted {
        user: String,
        path: String,
    },
    DirCreated {
        user: String,
        path: String,
    },
    DirRemoved {
        user: String,
        path: String,
    },
    Downloaded {
        user: String,
        path: String,
        bytes: u64,
    },
    /// A transfer that did not complete: stalled, cut (reset), refused, disk full, shut down.
    TransferFailed {
        user: String,
        path: String,
        upload: bool,
        error: String,
    },
}
