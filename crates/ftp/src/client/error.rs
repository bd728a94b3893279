//! The client's errors: one typed error per way an operation can fail for the caller.

use suppaftp::FtpError;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("login refused for {user} at {server}")]
    Auth { user: String, server: String },
    #[error("permission denied: {0}")]
    Permission(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("server replied {code}: {text}")]
    Protocol { code: u32, text: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("the server's SHA-256 of {remote} is {server}, ours is {local}: not renamed")]
    HashMismatch {
        remote: String,
        local: String,
        server: String,
    },
    /// The final name already holds other bytes than the local file (`size` of them): never
    /// replaced. The agent checks whether they are a prefix of its file (a crash between the
    /// rename and its own bookkeeping) and then appends the rest.
    #[error("{remote} exists with other content ({size} bytes)")]
    Exists { remote: String, size: u64 },
    #[error("the server has no space left: {0}")]
    StorageFull(String),
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
