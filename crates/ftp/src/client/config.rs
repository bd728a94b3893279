//! How to reach a server.

use std::path::PathBuf;
use std::time::Duration;

/// TLS on the control and data channels.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsMode {
    /// Plain FTP.
    None,
    /// Explicit FTPS (AUTH TLS, PROT P), verifying the server against `ca_file` or the system roots.
    Explicit {
        /// CA certificates (PEM) to trust instead of the system roots: a private CA.
        ca_file: Option<PathBuf>,
        /// Accept any certificate. Only for tests: it makes TLS worthless against an attacker.
        insecure_skip_verify: bool,
    },
}

/// Everything [`super::Client::connect`] needs.
#[derive(Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Server name or address (checked against the certificate with TLS).
    pub host: String,
    /// Control port (21 by default).
    pub port: u16,
    /// Account name.
    pub user: String,
    /// Account password.
    pub password: String,
    /// Plain FTP or explicit FTPS.
    pub tls: TlsMode,
    /// How long connecting (TCP, TLS and login) may take.
    pub connect_timeout: Duration,
    /// Bound on every reply and every data read or write.
    pub io_timeout: Duration,
    /// EPSV instead of PASV.
    pub extended_passive: bool,
    /// Reconnect attempts before an operation gives up (with exponential, jittered backoff).
    pub reconnect_attempts: u32,
    /// The first wait before a reconnect; it doubles on each failure.
    pub reconnect_base: Duration,
    /// The longest wait between reconnects.
    pub reconnect_max: Duration,
    /// Bytes per second for transfers; 0 = unlimited.
    pub speed_limit: u64,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &"***")
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// A configuration with the defaults: plain FTP, 10 s to connect, 60 s per I/O, 5 reconnects.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        ClientConfig {
            host: host.into(),
            port,
            user: user.into(),
            password: password.into(),
            tls: TlsMode::None,
            connect_timeout: Duration::from_secs(10),
            io_timeout: Duration::from_secs(60),
            extended_passive: false,
            reconnect_attempts: 5,
            reconnect_base: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(10),
            speed_limit: 0,
        }
    }

    /// `host:port`, for messages.
    pub fn server(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}
