//! How to reach a server.

use std::path::PathBuf;
use std::time::Duration;

/// TLS on the control and data channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain FTP.
    None,
    /// Explicit FTPS (AUTH TLS, PROT P), verifying the server against `ca_file` or the system roots.
    Explicit {
        ca_file: Option<PathBuf>,
        /// Accept any certificate. Only for tests: it makes TLS worthless against an attacker.
        insecure_skip_verify: bool,
    },
}

/// Everything [`super::Client::connect`] needs.
#[derive(Clone)]
pub struct ClientConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub tls: TlsMode,
    pub connect_timeout: Duration,
    /// Bound on every reply and every data read or write.
    pub io_timeout: Duration,
    /// EPSV instead of PASV.
    pub extended_passive: bool,
    /// Reconnect attempts before an operation gives up (with exponential, jittered backoff).
    pub reconnect_attempts: u32,
    pub reconnect_base: Duration,
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

    pub fn server(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}
