//! The client's errors: one typed error per way an operation can fail for the caller.

use suppaftp::FtpError;

/// Why a client operation failed. `is_retryable` tells the ones a reconnect may cure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server refused the login.
    #[error("login refused for {user} at {server}: {reason}")]
    Auth {
        /// The account name.
        user: String,
        /// `host:port`.
        server: String,
        /// What the server said (`Login incorrect`, `TLS required: send AUTH TLS first`).
        reason: String,
    },
    /// The server refused the operation (550 and kin on a permission).
    #[error("permission denied: {0}")]
    Permission(String),
    /// No such file or folder on the server.
    #[error("not found: {0}")]
    NotFound(String),
    /// No answer within the configured time; names the operation.
    #[error("timed out: {0}")]
    Timeout(String),
    /// An unexpected reply: its code and text.
    #[error("server replied {code}: {text}")]
    Protocol {
        /// The reply code.
        code: u32,
        /// The reply text.
        text: String,
    },
    /// A local or network I/O error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// The TLS handshake or certificate check failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// The server's SHA-256 of an upload differs from the local file's: nothing was committed.
    #[error("the server's SHA-256 of {remote} is {server}, ours is {local}: not renamed")]
    HashMismatch {
        /// The remote path.
        remote: String,
        /// The local file's SHA-256.
        local: String,
        /// The server's SHA-256.
        server: String,
    },
    /// The final name already holds other bytes than the local file (`size` of them): never
    /// replaced. The agent checks whether they are a prefix of its file (a crash between the
    /// rename and its own bookkeeping) and then appends the rest.
    /// The file exists on the server with other content (the verified upload never overwrites).
    #[error("{remote} exists with other content ({size} bytes)")]
    Exists {
        /// The remote path.
        remote: String,
        /// Its size on the server.
        size: u64,
    },
    /// The server has no room (452/552).
    #[error("the server has no space left: {0}")]
    StorageFull(String),
    /// A bad argument or a server answer that makes no sense.
    #[error("invalid: {0}")]
    Invalid(String),
}

impl ClientError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ClientError::Io {
            context: context.into(),
            source,
        }
    }

    /// Whether reconnecting and trying again may help.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Io { .. } | ClientError::Timeout(_) => true,
            ClientError::Protocol { code, .. } => {
                matches!(*code, 221 | 421 | 425 | 426 | 450 | 451)
            }
            _ => false,
        }
    }

    /// Maps a suppaftp error for an operation on `what`.
    pub(crate) fn from_ftp(e: FtpError, what: &str) -> Self {
        match e {
            FtpError::ConnectionError(source) => ClientError::io(what.to_string(), source),
            FtpError::SecureError(s) => ClientError::Tls(s),
            FtpError::UnexpectedResponse(r) => {
                let text = String::from_utf8_lossy(&r.body).trim().to_string();
                // Codes suppaftp does not name (554, ...) come as 0 with the line in the body.
                let code = match r.status.code() {
                    0 => text.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0),
                    c => c,
                };
                match code {
                    530 => ClientError::Permission(format!("{what}: not logged in ({text})")),
                    550 if text.to_ascii_lowercase().contains("permission") => {
                        ClientError::Permission(format!("{what}: {text}"))
                    }
                    550 => ClientError::NotFound(format!("{what}: {text}")),
                    452 | 552 => ClientError::StorageFull(format!("{what}: {text}")),
                    _ => ClientError::Protocol {
                        code,
                        text: format!("{what}: {text}"),
                    },
                }
            }
            FtpError::BadResponse => ClientError::Protocol {
                code: 0,
                text: format!("{what}: malformed reply"),
            },
            FtpError::InvalidAddress(e) => ClientError::Protocol {
                code: 0,
                text: format!("{what}: bad address {e}"),
            },
            FtpError::DataConnectionAlreadyOpen => ClientError::Protocol {
                code: 0,
                text: format!("{what}: data connection already open"),
            },
        }
    }
}
