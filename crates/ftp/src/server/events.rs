//! Events the embedding program can subscribe to (the archive catalog is fed from these).

use std::net::SocketAddr;

/// The `reason` of a [`FtpEvent::LoginFailed`] whose name or password was wrong (rather than
/// refused for a lockout, a closed address range, TLS...).
pub const WRONG_PASSWORD: &str = "wrong user name or password";

/// Something that happened on the FTP service. Paths are archive paths: the account's home joined
/// with the path inside it, e.g. `/agent01/Logs/a.txt`.
///
/// Every variant names the account (`user`); new variants may come, so match with a `_` arm.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[allow(missing_docs)] // the fields say what they are: `user`, `path`, `addr`, `size`...
pub enum FtpEvent {
    /// A login succeeded.
    LoggedIn { user: String, addr: SocketAddr },
    /// A logged-in session ended (QUIT, idle timeout, cut, shutdown).
    LoggedOut { user: String, addr: SocketAddr },
    /// A login was refused; `reason` is for the operator, never told to the client.
    LoginFailed {
        user: String,
        addr: SocketAddr,
        reason: String,
    },
    /// A STOR ended with the client closing the data connection normally. For a temporary name
    /// (see [`crate::names::is_temp_name`]) this is *not* a completed file: a plain-FTP client that
    /// was cut off mid-transfer looks the same on the wire. The archive treats only the rename of
    /// a verified temporary file as completion.
    ///
    /// `size` is the file's size after the upload, `sha256` the hex SHA-256 of the whole file
    /// (when the store knows it), `temp` whether the name is a temporary upload name.
    UploadCompleted {
        user: String,
        path: String,
        size: u64,
        sha256: Option<String>,
        temp: bool,
    },
    /// Bytes were added at the end of an existing file (APPE, or REST at its end + STOR):
    /// `offset` is where they start, `size` the file's new size, `sha256` the whole file's.
    Appended {
        user: String,
        path: String,
        offset: u64,
        size: u64,
        sha256: Option<String>,
        temp: bool,
    },
    /// A rename. `from_temp` marks the completion of a verified upload; `size` and `sha256`
    /// are the file's (`0`/`None` for a folder); `addr` is the client's.
    Renamed {
        user: String,
        from: String,
        to: String,
        size: u64,
        sha256: Option<String>,
        from_temp: bool,
        addr: SocketAddr,
    },
    /// `SITE ALIAS`: the file at `path` was also known as `name` where it came from (a rotated
    /// log's local names, e.g. `Logs/service.log.1`).
    Alias {
        user: String,
        path: String,
        name: String,
    },
    /// A file was deleted (DELE); `addr` is the client's.
    Deleted {
        user: String,
        path: String,
        addr: SocketAddr,
    },
    /// A folder was made (MKD).
    DirCreated { user: String, path: String },
    /// A folder was removed (RMD); `addr` is the client's.
    DirRemoved {
        user: String,
        path: String,
        addr: SocketAddr,
    },
    /// A download ended with every byte sent.
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
