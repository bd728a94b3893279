//! `agent.toml`. Unknown keys are an error that names the key.

use logarchive_ftp::rate::ByteRate;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// `[A-Za-z0-9._-]{1,64}`; names the agent's folder on the server.
    pub agent_id: String,
    /// `ftp://host:port` or `ftps://host:port`, or a list of them: the agent uploads to the
    /// first that answers, moves to the next when it cannot connect, and tries the first again
    /// after `failback_after` (see `servers.rs`).
    pub server: ServerList,
    /// How long the agent stays on a later server of the list before it tries the first again.
    #[serde(default = "d_failback", with = "humantime_serde")]
    pub failback_after: Duration,
    pub user: String,
    /// File holding the password (first line). Else `LOGARCHIVE_PASSWORD`.
    pub password_file: Option<PathBuf>,
    /// CA certificate for an `ftps://` server with a private CA.
    pub ca_file: Option<PathBuf>,
    pub state_db: PathBuf,
    #[serde(default = "d_scan", with = "humantime_serde")]
    pub scan_interval: Duration,
    /// A file that does not change for this long is complete as it is: a file written whole is
    /// sent once it is quiet, and a growing log's unterminated last line is sent then.
    #[serde(default = "d_quiet", with = "humantime_serde")]
    pub quiet_period: Duration,
    /// How far behind its writer a growing file may fall: its whole lines are appended to the
    /// archive at least every `max_lag / 2` while it grows (when the server keeps up).
    #[serde(default = "d_max_lag", with = "humantime_serde")]
    pub max_lag: Duration,
    #[serde(default = "d_parallel")]
    pub max_parallel_uploads: usize,
    #[serde(default)]
    pub upload_limit: ByteRate,
    /// Longest wait before retrying a failed file (the backoff doubles up to it).
    #[serde(default = "d_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    #[serde(default = "d_status", with = "humantime_serde")]
    pub status_interval: Duration,
    /// Optional Prometheus endpoint, e.g. `127.0.0.1:9101` (`GET /metrics`).
    pub metrics_listen: Option<std::net::SocketAddr>,
    #[serde(rename = "source")]
    pub sources: Vec<Source>,
}

/// `server`: one URL or a list of them.
#[derive(Debug, Clone)]
pub enum ServerList {
    One(String),
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for ServerList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ServerList;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a URL (\"ftps://host:port\") or a list of URLs")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ServerList, E> {
                Ok(ServerList::One(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ServerList, A::Error> {
                let mut urls = Vec::new();
                while let Some(u) = seq.next_element::<String>()? {
                    urls.push(u);
                }
                Ok(ServerList::Many(urls))
            }
        }
        d.deserialize_any(V)
    }
}

impl ServerList {
    /// The URLs, in the order given.
    pub fn urls(&self) -> Vec<&str> {
        match self {
            ServerList::One(u) => vec![u.as_str()],
            ServerList::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

impl std::fmt::Display for ServerList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.urls().join(", "))
    }
}

/// Most servers a list may name.
const MAX_SERVERS: usize = 16;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub root: PathBuf,
    #[serde(default = "d_include")]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Optional remote subfolder inside the agent's home.
    #[serde(default)]
    pub prefix: String,
}

fn d_scan() -> Duration {
    Duration::from_secs(30)
}
fn d_quiet() -> Duration {
    Duration::from_secs(5)
}
fn d_max_lag() -> Duration {
    Duration::from_secs(2)
}
fn d_parallel() -> usize {
    2
}
fn d_backoff() -> Duration {
    Duration::from_secs(300)
}
fn d_status() -> Duration {
    Duration::from_secs(60)
}
fn d_failback() -> Duration {
    Duration::from_secs(60)
}
fn d_include() -> Vec<String> {
    vec!["**/*.log".into(), "**/*.txt".into()]
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.into(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<AgentConfig, String> {
        let c: AgentConfig = toml::from_str(text).map_err(|e| e.to_string().trim().to_string())?;
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<(), String> {
        logarchive_ftp::names::validate_name(&self.agent_id)
            .map_err(|e| format!("agent_id: {e}"))?;
        let urls = self.server.urls();
        if urls.is_empty() || urls.len() > MAX_SERVERS {
            return Err(format!("server: name 1 to {MAX_SERVERS} URLs"));
        }
        for (i, u) in urls.iter().enumerate() {
            logarchive_ftp::client::FtpUrl::parse(u).map_err(|e| format!("server {u}: {e}"))?;
            if urls[..i].contains(u) {
                return Err(format!("server: {u} is named twice"));
            }
        }
        if self.failback_after < Duration::from_secs(1) {
            return Err("failback_after: must be at least 1s".into());
        }
        if self.sources.is_empty() {
            return Err("no [[source]]: name at least one folder to collect".into());
        }
        if self.max_lag < Duration::from_millis(100) {
            return Err("max_lag: must be at least 100ms".into());
        }
        if self.max_parallel_uploads == 0 {
            return Err("max_parallel_uploads: must be at least 1".into());
        }
        for (i, s) in self.sources.iter().enumerate() {
            if !s.root.is_absolute() {
                return Err(format!(
                    "source[{i}].root: {:?} must be an absolute path",
                    s.root
                ));
            }
            for g in s.include.iter().chain(&s.exclude) {
                globset::Glob::new(g).map_err(|e| format!("source[{i}]: pattern {g:?}: {e}"))?;
            }
            if s.prefix.split('/').any(|p| p == ".." || p == ".") || s.prefix.contains(['\\', '\0'])
            {
                return Err(format!(
                    "source[{i}].prefix: {:?} may not contain . or .. parts",
                    s.prefix
                ));
            }
        }
        Ok(())
    }

    /// The password: `password_file`, else `LOGARCHIVE_PASSWORD`.
    pub fn password(&self) -> Result<String, String> {
        if let Some(p) = &self.password_file {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("password_file {}: {e}", p.display()))?;
            let line = text
                .lines()
                .next()
                .unwrap_or("")
                .trim_end_matches('\r')
                .to_string();
            if line.is_empty() {
                return Err(format!("password_file {} is empty", p.display()));
            }
            return Ok(line);
        }
        std::env::var("LOGARCHIVE_PASSWORD")
            .ok()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| {
                "no password: set password_file in the config or LOGARCHIVE_PASSWORD".into()
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
agent_id = "agent01"
server = "ftp://127.0.0.1:2121"
user = "agent01"
state_db = "/tmp/x.db"
[[source]]
root = "/var/log/app"
"#;

    #[test]
    fn defaults_and_validation() {
        let c = AgentConfig::parse(GOOD).unwrap();
        assert_eq!(c.scan_interval, Duration::from_secs(30));
        assert_eq!(c.max_lag, Duration::from_secs(2));
        let e = AgentConfig::parse(&GOOD.replace("[[source]]", "max_lag = \"10ms\"\n[[source]]"))
            .unwrap_err();
        assert!(e.contains("max_lag"), "{e}");
        assert_eq!(c.sources[0].include, vec!["**/*.log", "**/*.txt"]);
        let e = AgentConfig::parse(&GOOD.replace("user =", "usr =")).unwrap_err();
        assert!(e.contains("usr"), "{e}");
        let e = AgentConfig::parse(&GOOD.replace("agent01\"\nserver", "agent 01\"\nserver"))
            .unwrap_err();
        assert!(e.contains("agent_id"), "{e}");
        let e = AgentConfig::parse(&GOOD.replace("/var/log/app", "relative")).unwrap_err();
        assert!(e.contains("root"), "{e}");
        let e = AgentConfig::parse(
            &GOOD
                .replace("quiet", "x")
                .replace("[[source]]", "scan_interval = \"soon\"\n[[source]]"),
        )
        .unwrap_err();
        assert!(e.contains("scan_interval"), "{e}");
    }

    #[test]
    fn server_is_one_url_or_a_list() {
        let c = AgentConfig::parse(GOOD).unwrap();
        assert_eq!(c.server.urls(), ["ftp://127.0.0.1:2121"]);
        assert_eq!(c.failback_after, Duration::from_secs(60));
        let list = GOOD.replace(
            "server = \"ftp://127.0.0.1:2121\"",
            "server = [\"ftps://a.example:2121\", \"ftps://b.example:2121\"]",
        );
        let c = AgentConfig::parse(&list).unwrap();
        assert_eq!(
            c.server.urls(),
            ["ftps://a.example:2121", "ftps://b.example:2121"]
        );
        assert_eq!(
            c.server.to_string(),
            "ftps://a.example:2121, ftps://b.example:2121"
        );
        for (bad, says) in [
            ("server = []", "1 to 16"),
            ("server = 5", "a URL"),
            ("server = [\"ftp://a:1\", \"ftp://a:1\"]", "named twice"),
            ("server = [\"ftp://a:1\", \"http://b:2\"]", "http://b:2"),
        ] {
            let e = AgentConfig::parse(&GOOD.replace("server = \"ftp://127.0.0.1:2121\"", bad))
                .unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
