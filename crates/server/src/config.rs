//! `server.toml`: every key optional; flags override the file, the file overrides the defaults.

use logarchive_ftp::server::FtpServerConfig;
use serde::Deserialize;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_DATA: &str = "./logarchive-data";
pub const DEFAULT_FTP_LISTEN: &str = "127.0.0.1:2121";
pub const DEFAULT_WEB_LISTEN: &str = "127.0.0.1:8080";

/// The server configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfigFile {
    pub data: Option<PathBuf>,
    pub ftp_listen: Option<SocketAddr>,
    pub web_listen: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    #[serde(default)]
    pub ftp: FtpSection,
    #[serde(default)]
    /// `[web]`: limits of the web interface.
    pub web: crate::web::WebConfig,
    /// `[storage]`: where the archive's files live.
    #[serde(default)]
    pub storage: StorageSection,
    /// `[catalog]`: where the catalog lives.
    #[serde(default)]
    pub catalog: CatalogSection,
    /// `[audit]`: the audit trail.
    #[serde(default)]
    pub audit: AuditSection,
}

/// `[audit]`: who changed what (`crate::audit`), kept in the catalog's database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSection {
    /// Rows older than this are deleted (default 400 days).
    #[serde(with = "humantime_serde")]
    pub keep: Duration,
}

impl Default for AuditSection {
    fn default() -> Self {
        AuditSection {
            keep: Duration::from_secs(400 * 24 * 3600),
        }
    }
}

/// `[catalog]` (DESIGN.md, "Scale-out"): SQLite `DATA/catalog.db` unless `url` names a
/// PostgreSQL database, which every server of the archive then shares.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogSection {
    /// `postgres://USER@HOST:PORT/DATABASE` (no password in it; `host=/run/postgresql` style
    /// key-value strings work too).
    pub url: Option<String>,
    /// A file whose first line is the PostgreSQL password; else `PGPASSWORD`.
    pub password_file: Option<PathBuf>,
}

/// Which store holds the archive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// A folder: `DATA/archive/`.
    #[default]
    Local,
    /// An S3-compatible object store (AWS S3, MinIO, Ceph RGW, Garage, SeaweedFS).
    S3,
}

/// `[storage]` (DESIGN.md, "Scale-out"). Credentials never come from this file: from
/// `credentials_file` or the environment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    /// `"local"` (default) or `"s3"`.
    pub backend: StorageBackend,
    /// The S3 service's URL, e.g. `http://127.0.0.1:8333`; omit for AWS.
    pub endpoint: Option<String>,
    /// The region (`us-east-1` by default; any value for most other stores).
    pub region: String,
    /// The bucket (must exist).
    pub bucket: Option<String>,
    /// A key prefix inside the bucket.
    pub prefix: String,
    /// Path-style requests (MinIO, SeaweedFS, Garage, Ceph); `false` for AWS's virtual hosts.
    pub path_style: bool,
    /// A file of `AWS_ACCESS_KEY_ID=` / `AWS_SECRET_ACCESS_KEY=` lines; else the environment.
    pub credentials_file: Option<PathBuf>,
    /// When a quiet file is rewritten as seekable zstd: a duration or `"never"`.
    pub compress_after: CompressAfter,
    /// Replaced or orphaned objects are deleted this long after (readers in flight finish).
    #[serde(with = "humantime_serde")]
    pub gc_grace: Duration,
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            backend: StorageBackend::Local,
            endpoint: None,
            region: "us-east-1".into(),
            bucket: None,
            prefix: String::new(),
            path_style: true,
            credentials_file: None,
            compress_after: CompressAfter(Some(Duration::from_secs(3600))),
            gc_grace: Duration::from_secs(600),
        }
    }
}

/// `compress_after`: a duration (`"1h"`) or `"never"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressAfter(pub Option<Duration>);

impl<'de> Deserialize<'de> for CompressAfter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.trim() == "never" {
            return Ok(CompressAfter(None));
        }
        humantime_serde::re::humantime::parse_duration(s.trim())
            .map(|t| CompressAfter(Some(t)))
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "compress_after {s:?}: {e} (a duration like \"1h\", or \"never\")"
                ))
            })
    }
}

/// `[ftp]`: tuning of the FTP service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FtpSection {
    /// `"49152-65534"`.
    pub passive_ports: String,
    pub passive_host: Option<Ipv4Addr>,
    pub tls_required: bool,
    pub max_sessions: usize,
    pub max_sessions_per_user: usize,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub stall_timeout: Duration,
    pub login_max_failures: u32,
    #[serde(with = "humantime_serde")]
    pub login_lockout: Duration,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Threads that run FTP sessions (0 = share the main runtime).
    pub session_threads: usize,
}

impl Default for FtpSection {
    fn default() -> Self {
        let d = FtpServerConfig::new(([127, 0, 0, 1], 0).into(), ".");
        FtpSection {
            passive_ports: format!("{}-{}", d.passive_ports.start(), d.passive_ports.end()),
            passive_host: d.passive_host,
            tls_required: d.tls_required,
            max_sessions: d.max_sessions,
            max_sessions_per_user: d.max_sessions_per_user,
            idle_timeout: d.idle_timeout,
            stall_timeout: d.stall_timeout,
            login_max_failures: d.login_max_failures,
            login_lockout: d.login_lockout,
            shutdown_grace: d.shutdown_grace,
            session_threads: d.session_threads,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{0}")]
    Value(String),
}

impl ServerConfigFile {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: path.into(),
            message: e.to_string(),
        })
    }
}

/// Command-line overrides.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub data: Option<PathBuf>,
    pub ftp_listen: Option<SocketAddr>,
    pub web_listen: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// The configuration in force: defaults ← file ← flags.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub data: PathBuf,
    pub ftp_listen: SocketAddr,
    pub web_listen: SocketAddr,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub ftp: FtpSection,
    pub web: crate::web::WebConfig,
    pub storage: StorageSection,
    pub catalog: CatalogSection,
    pub audit: AuditSection,
}

impl ServerSettings {
    /// The settings from the config file (if given) and the flags.
    pub fn load(config: Option<&Path>, flags: Overrides) -> Result<Self, ConfigError> {
        let file = match config {
            Some(p) => ServerConfigFile::load(p)?,
            None => ServerConfigFile::default(),
        };
        Self::resolve(file, flags)
    }

    pub fn resolve(file: ServerConfigFile, flags: Overrides) -> Result<Self, ConfigError> {
        let parse = |s: &str| {
            s.parse::<SocketAddr>()
                .map_err(|e| ConfigError::Value(e.to_string()))
        };
        let cert = flags.tls_cert.or(file.tls_cert);
        let key = flags.tls_key.or(file.tls_key);
        let tls = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Value(
                    "TLS needs both tls_cert and tls_key".into(),
                ))
            }
        };
        Ok(ServerSettings {
            data: flags
                .data
                .or(file.data)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA)),
            ftp_listen: match flags.ftp_listen.or(file.ftp_listen) {
                Some(a) => a,
                None => parse(DEFAULT_FTP_LISTEN)?,
            },
            web_listen: match flags.web_listen.or(file.web_listen) {
                Some(a) => a,
                None => parse(DEFAULT_WEB_LISTEN)?,
            },
            tls,
            ftp: file.ftp,
            web: file.web.at_least_one(),
            storage: file.storage,
            catalog: file.catalog,
            audit: file.audit,
        })
    }

    /// Where the catalog lives: PostgreSQL if `[catalog] url` is set, else `DATA/catalog.db`.
    pub fn catalog_location(&self) -> Result<crate::catalog::Location, ConfigError> {
        let Some(url) = &self.catalog.url else {
            return Ok(crate::catalog::Location::Sqlite(
                self.data.join("catalog.db"),
            ));
        };
        crate::catalog::PgSettings::new(url, self.catalog.password_file.as_deref())
            .map(|pg| crate::catalog::Location::Postgres(Box::new(pg)))
            .map_err(|e| ConfigError::Value(e.to_string()))
    }

    pub fn users_file(&self) -> PathBuf {
        self.data.join("users.toml")
    }

    pub fn archive_dir(&self) -> PathBuf {
        self.data.join("archive")
    }

    /// The S3 back-end's metadata (tree, segments, hash states): `DATA/store.db`.
    pub fn store_db(&self) -> PathBuf {
        self.data.join("store.db")
    }

    /// The FTP library's configuration for these settings.
    pub fn ftp_config(&self) -> Result<FtpServerConfig, ConfigError> {
        let mut c = FtpServerConfig::new(self.ftp_listen, self.archive_dir());
        c.passive_ports = parse_port_range(&self.ftp.passive_ports)?;
        c.passive_host = self.ftp.passive_host;
        c.tls_required = self.ftp.tls_required;
        c.max_sessions = self.ftp.max_sessions;
        c.max_sessions_per_user = self.ftp.max_sessions_per_user;
        c.idle_timeout = self.ftp.idle_timeout;
        c.stall_timeout = self.ftp.stall_timeout;
        c.login_max_failures = self.ftp.login_max_failures;
        c.login_lockout = self.ftp.login_lockout;
        c.shutdown_grace = self.ftp.shutdown_grace;
        c.session_threads = self.ftp.session_threads;
        if let Some((cert, key)) = &self.tls {
            c.tls = Some(
                logarchive_ftp::server::tls_server_config(cert, key)
                    .map_err(|e| ConfigError::Value(e.to_string()))?,
            );
        } else if self.ftp.tls_required {
            return Err(ConfigError::Value(
                "ftp.tls_required needs tls_cert and tls_key".into(),
            ));
        }
        Ok(c)
    }
}

pub fn parse_port_range(s: &str) -> Result<std::ops::RangeInclusive<u16>, ConfigError> {
    let bad = || {
        ConfigError::Value(format!(
            "invalid passive_ports {s:?}: use FIRST-LAST, e.g. 49152-65534"
        ))
    };
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b): (u16, u16) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if a == 0 || b < a {
        return Err(bad());
    }
    Ok(a..=b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_override_defaults() {
        let file: ServerConfigFile = toml::from_str(
            "data = \"/srv/la\"\nftp_listen = \"0.0.0.0:21\"\n[ftp]\nidle_timeout = \"30s\"\npassive_ports = \"30000-30010\"\n",
        )
        .unwrap();
        let s = ServerSettings::resolve(
            file,
            Overrides {
                ftp_listen: Some("127.0.0.1:2000".parse().unwrap()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(s.data, PathBuf::from("/srv/la"));
        assert_eq!(s.ftp_listen.to_string(), "127.0.0.1:2000");
        assert_eq!(s.web_listen.to_string(), DEFAULT_WEB_LISTEN);
        let c = s.ftp_config().unwrap();
        assert_eq!(c.idle_timeout, Duration::from_secs(30));
        assert_eq!(c.passive_ports, 30000..=30010);
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = toml::from_str::<ServerConfigFile>("ftp_listn = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ftp_listn"), "{e}");
    }

    #[test]
    fn the_web_section_sets_its_limits_and_keeps_counts_positive() {
        let file: ServerConfigFile = toml::from_str(
            "[web]\nsearch_timeout = \"5s\"\nsearch_max_matches = 0\nlogin_lockout = \"1m\"\n",
        )
        .unwrap();
        let s = ServerSettings::resolve(file, Overrides::default()).unwrap();
        assert_eq!(s.web.search_timeout, Duration::from_secs(5));
        assert_eq!(s.web.login_lockout, Duration::from_secs(60));
        assert_eq!(s.web.search_max_matches, 1, "0 would disable search");
        let d = crate::web::WebConfig::default();
        assert_eq!(s.web.search_max_files, d.search_max_files);
        let e = toml::from_str::<ServerConfigFile>("[web]\nsearch_timout = \"5s\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("search_timout"), "{e}");
    }

    #[test]
    fn the_storage_section_as_design_md_writes_it() {
        let file: ServerConfigFile = toml::from_str(
            "[storage]\nbackend = \"s3\"\nendpoint = \"http://127.0.0.1:8333\"\nregion = \"eu-west-1\"\n\
             bucket = \"logarchive\"\nprefix = \"a/\"\npath_style = false\n\
             credentials_file = \"/etc/logarchive/s3.env\"\ncompress_after = \"never\"\ngc_grace = \"2m\"\n",
        )
        .unwrap();
        let st = ServerSettings::resolve(file, Overrides::default())
            .unwrap()
            .storage;
        assert_eq!(st.backend, StorageBackend::S3);
        assert_eq!(st.bucket.as_deref(), Some("logarchive"));
        assert_eq!((st.region.as_str(), st.path_style), ("eu-west-1", false));
        assert_eq!(st.compress_after, CompressAfter(None));
        assert_eq!(st.gc_grace, Duration::from_secs(120));
        let d = ServerConfigFile::default().storage;
        assert_eq!(d.backend, StorageBackend::Local);
        assert_eq!(
            d.compress_after,
            CompressAfter(Some(Duration::from_secs(3600)))
        );
        for (bad, named) in [
            ("[storage]\ncompress_after = \"soon\"", "compress_after"),
            ("[storage]\nbackend = \"ftp\"", "ftp"),
            ("[storage]\naccess_key = \"AKID\"", "access_key"),
        ] {
            let e = toml::from_str::<ServerConfigFile>(bad)
                .unwrap_err()
                .to_string();
            assert!(e.contains(named), "{bad}: {e}");
        }
    }
}
