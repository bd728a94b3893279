//! The web interface and JSON API (axum): pages rendered on the server with auto-escaping
//! templates, every page's data also under `/api/v1/`, described by a generated OpenAPI
//! document.

pub mod api;
pub mod archive;
pub mod auth;
pub mod dashboard;
pub mod download;
pub mod error;
pub mod metrics;
pub mod pages;
pub mod search;
pub mod time;
pub mod users;
pub mod view;
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
use std::net::SocketAddr;
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
        }
    }
}

impl WebConfig {
    /// The same limits with every count at least 1 (a 0 in the file would disable logins or
    /// searches instead of limiting them).
    pub fn at_least_one(self) -> WebConfig {
        WebConfig {
            login_max_failures: self.login_max_failures.max(1),
            search_threads: self.search_threads.max(1),
            search_max_matches: self.search_max_matches.max(1),
            search_max_files: self.search_max_files.max(1),
            ..self
        }
    }
}

/// What every handler shares.
pub struct WebState {
    pub catalog: Arc<Catalog>,
    pub archive: Arc<Archive>,
    pub archive_root: PathBuf,
    pub users: Arc<UserDb>,
    pub ftp: Arc<ServerHandle>,
    pub auth: Auth,
    pub metrics: Arc<Metrics>,
    pub config: WebConfig,
    /// Line counts of files already viewed.
    pub lines: view::LineCache,
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

/// Serves `router` on `listener` (plain HTTP, or HTTPS with `tls`) until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router.into_make_service_with_connect_info::<Peer>();
    match tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(cfg) => {
            let tls = tls_listener::TlsListener::new(listener, cfg);
            axum::serve(tls, app).with_graceful_shutdown(shutdown).await
        }
    }
}

/// The client's socket address, for handlers (`ConnectInfo<Peer>`), plain or TLS.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>>
    for Peer
{
    fn connect_info(s: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Peer {
        Peer(*s.remote_addr())
    }
}

impl
    axum::extract::connect_info::Connected<
        axum::serve::IncomingStream<'_, tls_listener::TlsListener>,
    > for Peer
{
    fn connect_info(s: axum::serve::IncomingStream<'_, tls_listener::TlsListener>) -> Peer {
        Peer(*s.remote_addr())
    }
}

mod tls_listener {
    //! HTTPS: TLS handshakes run in their own tasks (a slow or silent client never holds up
    //! the accept loop) and bounded in time; finished ones are handed to axum.

    use axum::serve::Listener;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::mpsc;
    use tokio_rustls::server::TlsStream;
    use tokio_rustls::TlsAcceptor;

    const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

    pub struct TlsListener {
        ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
        local: std::io::Result<SocketAddr>,
    }

    impl TlsListener {
        pub fn new(tcp: TcpListener, cfg: Arc<rustls::ServerConfig>) -> TlsListener {
            let local = tcp.local_addr();
            let (tx, ready) = mpsc::channel(64);
            let acceptor = TlsAcceptor::from(cfg);
            tokio::spawn(async move {
                loop {
                    let (sock, addr) = match tcp.accept().await {
                        Ok(c) => c,
                        Err(e) => {
                            // Out of descriptors and the like: wait, then go on.
                            tracing::warn!("HTTPS accept: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let _ = sock.set_nodelay(true);
                    let (acceptor, tx) = (acceptor.clone(), tx.clone());
                    if tx.is_closed() {
                        return;
                    }
                    tokio::spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(sock)).await {
                            Ok(Ok(s)) => {
                                let _ = tx.send((s, addr)).await;
                            }
                            Ok(Err(e)) => tracing::debug!(%addr, "TLS handshake failed: {e}"),
                            Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                        }
                    });
                }
            });
            TlsListener { ready, local }
        }
    }

    impl Listener for TlsListener {
        type Io = TlsStream<TcpStream>;
        type Addr = SocketAddr;

        async fn accept(&mut self) -> (Self::Io, Self::Addr) {
            match self.ready.recv().await {
                Some(c) => c,
                // The accept task never ends while we hold the receiver.
                None => std::future::pending().await,
            }
        }

        fn local_addr(&self) -> std::io::Result<Self::Addr> {
            match &self.local {
                Ok(a) => Ok(*a),
                Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            }
        }
    }
}
