//! The FTP(S) server: a tokio task beside the embedding program's own work.
//!
//! Our own protocol engine: the accept loop (TCP_NODELAY and SO_OOBINLINE on every control
//! socket; limits per address and for connections that have not logged in yet), one task per
//! session on a small set of single-threaded runtimes, the control loop (control.rs: bounded
//! lines, login, TLS), file commands and transfers (files.rs, transfers.rs: every check before the `150`),
//! passive data connections (data.rs), logarchive's SITE commands (site.rs), and the store the
//! service reads and writes through (the `logarchive-store` crate: a trait and its back-ends).
//!
//! Map of the modules: `command` parses lines, `reply` writes replies, `listing` formats
//! listings and times, `pipeline` moves bytes (pipelined, hashed), `accounts` is where accounts
//! come from, `auth` logs in, `sessions` lists live sessions, `lockout` and `throttle` bound
//! logins and bandwidth, `inflight` serialises writers of a file, `passive` binds ports.

mod accounts;
mod auth;
#[doc(hidden)] // public for the fuzz targets only (`fuzz/`), not a stable API
pub mod command;
mod control;
mod data;
mod events;
mod files;
mod inflight;
mod listing;
mod lockout;
mod passive;
mod pipeline;
mod reply;
mod sessions;
mod site;
mod throttle;
mod tls;
mod transfers;
mod zerocopy;

pub use accounts::{canonical_ip, Account, Accounts};
pub use events::{FtpEvent, WRONG_PASSWORD};
pub use lockout::{Attempt, Lockout, LockoutLedger};
pub use logarchive_store::VirtualPath;
pub(crate) use logarchive_store::{store, vpath};
pub use logarchive_store::{Download, Kind, Meta, Reader, Storage, Upload, WriteMode};
pub use logarchive_store::{HomeDir, LocalStorage};
pub use sessions::SessionInfo;
pub use tls::{
    server_config as tls_server_config, server_config_from_pem as tls_server_config_from_pem,
    TlsError,
};

use sessions::Sessions;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use throttle::Throttles;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;

/// How the server runs. [`FtpServerConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FtpServerConfig {
    /// The control connection's address (port 0: the OS picks one).
    pub listen: SocketAddr,
    /// The archive folder; homes are folders inside it.
    pub archive_root: PathBuf,
    /// Ports for passive data connections.
    pub passive_ports: RangeInclusive<u16>,
    /// The address announced in PASV replies (behind NAT); default: the control connection's.
    pub passive_host: Option<Ipv4Addr>,
    /// FTPS (explicit, AUTH TLS). See [`tls_server_config`].
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Require TLS on control and data channels for every account.
    pub tls_required: bool,
    /// Connections at once, all addresses together.
    pub max_sessions: usize,
    /// 0 = no limit.
    pub max_sessions_per_user: usize,
    /// A session that sends no command for this long is closed (not during a transfer).
    pub idle_timeout: Duration,
    /// A data transfer that moves no byte for this long is cut.
    pub stall_timeout: Duration,
    /// Wrong passwords for one account from one address before that pair is locked out (an
    /// address across names, or a name from new addresses, gets 4 times as many; see
    /// [`Lockout`]); 0 disables it.
    pub login_max_failures: u32,
    /// How long a locked-out name or address stays locked.
    pub login_lockout: Duration,
    /// How long running transfers may go on after shutdown was asked for.
    pub shutdown_grace: Duration,
    /// Sessions run on this many single-threaded runtimes of their own (one OS thread each),
    /// a connection staying on one thread for its whole life: no cross-thread wake-ups per
    /// command, which is most of the per-file cost. 0 = run sessions on the caller's runtime.
    pub session_threads: usize,
    /// Connections from one address at once (logged in or not); 0 = no limit.
    pub max_connections_per_ip: usize,
    /// Connections that have not logged in yet, all addresses together. A new one beyond it
    /// closes the oldest: idle connections can never keep a client out.
    pub max_pending_logins: usize,
    /// Time from connecting to a successful login.
    pub login_timeout: Duration,
    /// Accept data connections from any address, not only the client's (for NAT setups where
    /// they arrive from another one). Off by default: a stranger could take a passive port.
    pub data_from_any_address: bool,
}

impl FtpServerConfig {
    /// The defaults for a server on `listen` over the folder `archive_root`.
    pub fn new(listen: SocketAddr, archive_root: impl Into<PathBuf>) -> Self {
        FtpServerConfig {
            listen,
            archive_root: archive_root.into(),
            passive_ports: 49152..=65534,
            passive_host: None,
            tls: None,
            tls_required: false,
            max_sessions: 512,
            max_sessions_per_user: 64,
            idle_timeout: Duration::from_secs(600),
            stall_timeout: Duration::from_secs(60),
            login_max_failures: 5,
            login_lockout: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(10),
            session_threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            max_connections_per_ip: 64,
            max_pending_logins: 128,
            login_timeout: Duration::from_secs(30),
            data_from_any_address: false,
        }
    }
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FtpServerError {
    /// The control port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The archive folder could not be opened or made.
    #[error("archive folder {path}: {source}")]
    Archive {
        /// The folder.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// State shared by the accept loop and every session.
pub(crate) struct Shared {
    pub config: FtpServerConfig,
    pub accounts: Arc<dyn Accounts>,
    pub store: Arc<dyn Storage>,
    /// The TLS configuration for data connections (see data.rs).
    pub data_tls: Option<Arc<rustls::ServerConfig>>,
    pub throttles: Arc<Throttles>,
    pub lockout: Arc<Lockout>,
    pub sessions: Sessions,
    pub events: broadcast::Sender<FtpEvent>,
    pub stats: Arc<Stats>,
    pub password_checks: tokio::sync::Semaphore,
    pub inflight: inflight::Inflight,
}

/// Counters for tests and metrics.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Stats {
    pub(crate) zero_copy_downloads: std::sync::atomic::AtomicU64,
}

impl Stats {
    /// Downloads sent with sendfile(2).
    pub fn zero_copy_downloads(&self) -> u64 {
        self.zero_copy_downloads
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Shared {
    pub fn emit(&self, e: FtpEvent) {
        // No subscriber is fine.
        let _ = self.events.send(e);
    }
}

/// What the shutdown did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Sessions that ended on their own or were closed while idle.
    pub closed_gracefully: usize,
    /// Sessions whose transfers were cut when the grace period ran out.
    pub cut: usize,
}

/// A running server. Dropping it does not stop the server; call [`ServerHandle::shutdown`].
pub struct ServerHandle {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    local: Option<LocalStorage>,
    stop: watch::Sender<bool>,
    stopped: watch::Receiver<Option<ShutdownReport>>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl ServerHandle {
    /// The failed-login counts (to share them with other servers: [`Lockout::set_ledger`]).
    pub fn lockout(&self) -> &Arc<Lockout> {
        &self.shared.lockout
    }

    /// The bound control address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Events from now on. A subscriber that falls more than 4096 events behind loses the oldest
    /// (and is told so by `RecvError::Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<FtpEvent> {
        self.shared.events.subscribe()
    }

    /// The live sessions: who, from where, which transfer.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.shared.sessions.list()
    }

    /// The server's counters.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// The local store's counters, when the server runs on one (see [`start`]).
    pub fn local_stats(&self) -> Option<&logarchive_store::LocalStats> {
        self.local.as_ref().map(|l| l.stats())
    }

    /// Disconnects every session of `user` at once (running transfers are cut). Returns how
    /// many sessions were closed. Disable or remove the account first to keep it out.
    pub fn disconnect_user(&self, user: &str) -> usize {
        let mut n = 0;
        for s in self.shared.sessions.all() {
            if s.user().as_deref() == Some(user) {
                s.kill();
                n += 1;
            }
        }
        n
    }

    /// Stops accepting, closes idle sessions at once, lets running transfers finish within the
    /// grace period, cuts the rest, and returns when every session is gone.
    pub async fn shutdown(&self) -> ShutdownReport {
        let _ = self.stop.send(true);
        self.stopped().await
    }

    /// Waits until the server has stopped (after [`ServerHandle::shutdown`] from anywhere).
    pub async fn stopped(&self) -> ShutdownReport {
        let mut rx = self.stopped.clone();
        let report = match rx.wait_for(|r| r.is_some()).await {
            Ok(r) => r.clone(),
            Err(_) => None,
        };
        report.unwrap_or(ShutdownReport {
            closed_gracefully: 0,
            cut: 0,
        })
    }
}

/// Starts the FTP server as a tokio task, with `accounts` and the folder `config.archive_root`
/// as the store.
pub async fn start(
    config: FtpServerConfig,
    accounts: Arc<dyn Accounts>,
) -> Result<ServerHandle, FtpServerError> {
    let local =
        LocalStorage::open(&config.archive_root).map_err(|source| FtpServerError::Archive {
            path: config.archive_root.clone(),
            source,
        })?;
    let store: Arc<dyn Storage> = Arc::new(local.clone());
    let mut h = start_with(config, accounts, store).await?;
    h.local = Some(local);
    Ok(h)
}

/// Starts the FTP server as a tokio task with any accounts and any store.
pub async fn start_with(
    config: FtpServerConfig,
    accounts: Arc<dyn Accounts>,
    store: Arc<dyn Storage>,
) -> Result<ServerHandle, FtpServerError> {
    let listener =
        TcpListener::bind(config.listen)
            .await
            .map_err(|source| FtpServerError::Listen {
                addr: config.listen,
                source,
            })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| FtpServerError::Listen {
            addr: config.listen,
            source,
        })?;
    let throttles = Arc::new(Throttles::default());
    let shared = Arc::new(Shared {
        lockout: Arc::new(Lockout::new(
            config.login_max_failures,
            config.login_lockout,
        )),
        data_tls: config.tls.as_ref().map(data::data_tls_config),
        config,
        accounts: Arc::clone(&accounts),
        store,
        throttles: Arc::clone(&throttles),
        sessions: Sessions::default(),
        events: broadcast::channel(4096).0,
        stats: Arc::default(),
        password_checks: tokio::sync::Semaphore::new(2),
        inflight: Default::default(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let (stopped_tx, stopped_rx) = watch::channel(None);
    let follower = throttles.follow(accounts);
    let s = Arc::clone(&shared);
    tokio::spawn(async move {
        let report = accept_loop(listener, s, stop_rx).await;
        if let Some(f) = follower {
            f.abort();
        }
        let _ = stopped_tx.send(Some(report));
    });
    tracing::info!(addr = %local_addr, "FTP service listening");
    Ok(ServerHandle {
        local_addr,
        shared,
        local: None,
        stop: stop_tx,
        stopped: stopped_rx,
    })
}

/// Single-threaded runtimes that sessions are spread over (round robin).
struct Shards {
    handles: Vec<tokio::runtime::Handle>,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    next: usize,
}

impl Shards {
    fn start(n: usize) -> std::io::Result<Shards> {
        let mut handles = Vec::new();
        let mut stops = Vec::new();
        for i in 0..n {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(rt.handle().clone());
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            stops.push(tx);
            std::thread::Builder::new()
                .name(format!("ftp-session-{i}"))
                .spawn(move || {
                    rt.block_on(async {
                        let _ = rx.await;
                    });
                    // Dropping the runtime cancels whatever is left (the drain already waited).
                    rt.shutdown_timeout(Duration::from_secs(1));
                })?;
        }
        Ok(Shards {
            handles,
            stops,
            next: 0,
        })
    }

    /// The runtime for the next session; `None` = the caller's.
    fn pick(&mut self) -> Option<tokio::runtime::Handle> {
        if self.handles.is_empty() {
            return None;
        }
        self.next = (self.next + 1) % self.handles.len();
        Some(self.handles[self.next].clone())
    }

    fn stop(self) {
        for s in self.stops {
            let _ = s.send(());
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> ShutdownReport {
    let mut shards = match Shards::start(shared.config.session_threads) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(
                "cannot start FTP session threads ({e}); sessions share the caller's runtime"
            );
            Shards {
                handles: vec![],
                stops: vec![],
                next: 0,
            }
        }
    };
    let mut tasks = JoinSet::new();
    let mut accept_failed = false;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => admit(stream, addr, &shared, &mut tasks, shards.pick()),
                Err(e) => {
                    tracing::warn!("FTP accept failed: {e}");
                    accept_failed = true;
                }
            },
        }
        if std::mem::take(&mut accept_failed) {
            // EMFILE and friends: back off briefly instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    drop(listener);
    let report = drain(&shared, tasks).await;
    shards.stop();
    report
}

fn admit(
    stream: TcpStream,
    addr: SocketAddr,
    shared: &Arc<Shared>,
    tasks: &mut JoinSet<()>,
    runtime: Option<tokio::runtime::Handle>,
) {
    // Without this every reply that follows a 150 waits ~40 ms for the client's delayed ACK.
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!("set_nodelay: {e}");
    }
    // ABOR may come as urgent data (Python's ftplib sends it so): keep it in the stream.
    let _ = socket2::SockRef::from(&stream).set_out_of_band_inline(true);
    let c = &shared.config;
    let refusal = if shared.sessions.count() >= c.max_sessions {
        Some("421 Too many connections, try again later\r\n")
    } else if c.max_connections_per_ip > 0
        && shared.sessions.count_from(addr.ip()) >= c.max_connections_per_ip
    {
        Some("421 Too many connections from your address\r\n")
    } else {
        None
    };
    if let Some(text) = refusal {
        tracing::debug!(%addr, "connection refused: {}", text.trim_end());
        tasks.spawn(async move {
            let mut stream = stream;
            let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(text.as_bytes()))
                .await;
        });
        return;
    }
    // Connections that have not logged in are bounded: the oldest makes room.
    if c.max_pending_logins > 0 {
        while shared.sessions.pending_logins() >= c.max_pending_logins {
            match shared.sessions.oldest_pending() {
                Some(old) => {
                    tracing::debug!(addr = %old.addr, "closing the oldest connection that has not logged in");
                    old.kill();
                    shared.sessions.close(old.id);
                }
                None => break,
            }
        }
    }
    let control: Option<OwnedFd> = socket2::SockRef::from(&stream)
        .try_clone()
        .ok()
        .map(OwnedFd::from);
    let session = shared.sessions.open(addr, control);
    let shared = Arc::clone(shared);
    // The socket moves to the session's runtime and registers with its reactor there.
    let stream = match stream.into_std() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot hand over the connection from {addr}: {e}");
            shared.sessions.close(session.id);
            return;
        }
    };
    let session_task = async move {
        let stream = match TcpStream::from_std(stream) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot register the connection from {addr}: {e}");
                shared.sessions.close(session.id);
                return;
            }
        };
        let local = stream.local_addr().unwrap_or(addr);
        let id = session.id;
        control::Control::new(Arc::clone(&shared), session, Box::new(stream), addr, local)
            .run()
            .await;
        shared.sessions.close(id);
    };
    match runtime {
        Some(rt) => {
            tasks.spawn_on(session_task, &rt);
        }
        None => {
            tasks.spawn(session_task);
        }
    }
}

async fn drain(shared: &Arc<Shared>, mut tasks: JoinSet<()>) -> ShutdownReport {
    let deadline = Instant::now() + shared.config.shutdown_grace;
    let mut cut = 0;
    let before = shared.sessions.count();
    loop {
        // Sessions waiting for a command close now; one in a command (a transfer and its
        // final reply) when it has answered it.
        for s in shared.sessions.all() {
            if s.transfer().is_none() && s.is_waiting() {
                s.close_control();
            }
        }
        if shared.sessions.count() == 0 {
            break;
        }
        if Instant::now() >= deadline {
            cut = shared
                .sessions
                .all()
                .iter()
                .filter(|s| s.transfer().is_some() || !s.is_waiting())
                .count();
            for s in shared.sessions.all() {
                s.kill();
            }
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    // Sessions close within moments of their sockets being shut; bound the wait anyway.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    tracing::info!(sessions = before, cut, "FTP service stopped");
    ShutdownReport {
        closed_gracefully: before.saturating_sub(cut),
        cut,
    }
}
