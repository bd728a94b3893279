//! The web interface and JSON API (axum): pages rendered on the server with auto-escaping
//! templates, every page's data also under `/api/v1/`, described by a generated OpenAPI
//! document.

pub mod api;
pub mod archive;
pub mod audit;
pub mod auth;
pub mod dashboard;
pub mod dashboard_page;
pub mod download;
pub mod error;
pub mod metrics;
pub mod pages;
pub mod search;
pub mod search_page;
pub mod serve;
pub mod shared_sessions;
pub mod time;
pub mod users;
pub mod view;
pub mod workers;
pub mod zip;

use crate::catalog::Catalog;
use crate::users::UserDb;
use archive::Archive;
use auth::Auth;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::Router;
use logarchive_ftp::server::ServerHandle;
use metrics::Metrics;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Limits of the web interface; also the `[web]` section of `server.toml`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Failed logins (per name and per address) before a lockout.
    pub login_max_failures: u32,
    #[serde(with = "humantime_serde")]
    pub login_lockout: Duration,
    /// Threads of one content search (default: one per CPU).
    pub search_threads: usize,
    #[serde(with = "humantime_serde")]
    pub search_timeout: Duration,
    pub search_max_matches: u64,
    /// Files a content search looks at, at most (the newest that match the other filters).
    pub search_max_files: usize,
    /// Content searches running at once, server-wide; more are answered "busy" (503).
    pub max_searches: usize,
    /// Content searches one account runs at once.
    pub max_searches_per_user: usize,
    /// Downloads and zips being read at once, server-wide (each holds a thread while its
    /// client reads); more are answered "busy" (503).
    pub max_transfers: usize,
    /// Connections at once, all addresses together (TLS handshakes included).
    pub max_connections: usize,
    /// Connections from one address at once.
    pub max_connections_per_address: usize,
    /// Time for a request's headers (and a TLS handshake) to arrive; also how long an idle
    /// keep-alive connection stays open.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// A connection on which nothing moves either way this long, while a request is read or
    /// answered, is closed (a client that stopped reading). At least `search_timeout` + 15 s.
    #[serde(with = "humantime_serde")]
    pub stall_timeout: Duration,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            login_max_failures: 5,
            login_lockout: Duration::from_secs(300),
            search_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            search_timeout: Duration::from_secs(30),
            search_max_matches: 1000,
            search_max_files: 100_000,
            max_searches: 4,
            max_searches_per_user: 2,
            max_transfers: 64,
            max_connections: 1024,
            max_connections_per_address: 64,
            header_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(60),
        }
    }
}

impl WebConfig {
    /// The connection limits of the web service.
    pub fn conn_limits(&self) -> ConnLimits {
        ConnLimits {
            header_timeout: self.header_timeout,
            stall_timeout: self.stall_timeout,
            max_connections: self.max_connections,
            max_connections_per_address: self.max_connections_per_address,
        }
    }

    /// The same limits with every count at least 1 (a 0 in the file would disable logins or
    /// searches instead of limiting them).
    pub fn at_least_one(self) -> WebConfig {
        WebConfig {
            login_max_failures: self.login_max_failures.max(1),
            search_threads: self.search_threads.max(1),
            search_max_matches: self.search_max_matches.max(1),
            search_max_files: self.search_max_files.max(1),
            max_searches: self.max_searches.max(1),
            max_searches_per_user: self.max_searches_per_user.max(1),
            max_transfers: self.max_transfers.max(1),
            max_connections: self.max_connections.max(1),
            max_connections_per_address: self.max_connections_per_address.max(1),
            header_timeout: self.header_timeout.max(Duration::from_millis(100)),
            // A search writes nothing until its first hit: it must not look stalled.
            stall_timeout: self
                .stall_timeout
                .max(self.search_timeout.saturating_add(Duration::from_secs(15))),
            ..self
        }
    }
}

/// What every handler shares.
pub struct WebState {
    pub catalog: Arc<Catalog>,
    pub archive: Arc<Archive>,
    /// The S3 back-end, when the archive is on one (its request counters for `/metrics`).
    pub s3: Option<logarchive_store::s3::S3Storage>,
    /// Whether the store answers (`/healthz`), probed at most once a second.
    pub ready: Arc<crate::store::Readiness>,
    /// Bytes the store holds per agent (the dashboard's "stored").
    pub stored: Arc<crate::store::StoredBytes>,
    /// The archive folder on a local store (for its disk's free space).
    pub archive_root: Option<PathBuf>,
    pub users: Arc<UserDb>,
    pub ftp: Arc<ServerHandle>,
    /// Who changed what (`crate::audit`).
    pub audit: Arc<crate::audit::Audit>,
    pub auth: Auth,
    pub metrics: Arc<Metrics>,
    pub config: WebConfig,
    /// Line counts of files already viewed.
    pub lines: view::LineCache,
    /// Permits of the search and download threads.
    pub workers: workers::Workers,
}

/// Headers every response carries: no framing, no sniffing, scripts and styles only from us.
async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    r
}

pub fn router(state: Arc<WebState>) -> Router {
    let tls = state.auth.tls();
    Router::new()
        .merge(pages::routes())
        .merge(api::routes())
        .merge(audit::routes())
        .layer(axum::middleware::map_response(security_headers))
        .layer(axum::middleware::map_response(
            move |mut r: Response| async move {
                // Under TLS, browsers are told to come back over HTTPS only (a year).
                if tls {
                    r.headers_mut().insert(
                        header::STRICT_TRANSPORT_SECURITY,
                        HeaderValue::from_static("max-age=31536000"),
                    );
                }
                r
            },
        ))
        .with_state(state)
}

pub use serve::{serve, ConnLimits, Peer};
