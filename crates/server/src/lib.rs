//! The archive server: the FTP service over the archive folder, the catalog of what it holds,
//! and the web interface and JSON API over both.

#![forbid(unsafe_code)]

pub mod audit;
pub mod catalog;
pub mod check;
pub mod config;
pub mod maintenance;
pub mod migrate;
pub mod path_locks;
pub mod pg;
pub mod pg_tls;
pub mod shared_lockouts;
/// A real PostgreSQL for tests (it lives in the store crate, whose tests need one too).
#[cfg(feature = "postgres-harness")]
pub use logarchive_store::pg_harness;
pub mod store;
pub mod users;
pub mod web;

use config::ServerSettings;
use logarchive_ftp::server::{self as ftp, ServerHandle};
use std::sync::Arc;
use users::{random_password, NewUser, Role, UserDb};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Users(#[from] crate::users::UserDbError),
    #[error(transparent)]
    Ftp(#[from] ftp::FtpServerError),
    #[error(transparent)]
    Catalog(#[from] catalog::CatalogError),
    #[error("cannot listen for the web interface on {addr}: {source}")]
    WebListen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS for the web interface: {0}")]
    Tls(String),
    #[error("cannot start the catalog writer thread: {0}")]
    Thread(std::io::Error),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("the archive: {0}")]
    Maintenance(String),
    #[error("cannot create data folder {path}: {source}")]
    Data {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// The running archive server.
pub struct Running {
    pub ftp: Arc<ServerHandle>,
    /// The bound web address (useful with port 0).
    pub web_addr: std::net::SocketAddr,
    web_stop: tokio::sync::watch::Sender<bool>,
    web_task: tokio::task::JoinHandle<std::io::Result<()>>,
    pub catalog: Arc<catalog::Catalog>,
    pub users: Arc<UserDb>,
    /// Re-reads the users file when it changes; ends with the server.
    users_watch: crate::users::Watch,
    /// Ends the FTP sessions of accounts removed, disabled or given a new password.
    session_cutter: tokio::task::JoinHandle<()>,
    /// Set when this start created the first admin account: its password, shown once.
    pub initial_admin_password: Option<String>,
    /// The archive's store (`[storage]`).
    pub store: Arc<dyn logarchive_ftp::server::Storage>,
    /// Compresses quiet files (`[storage] compress_after`); ends with the server.
    compactor: Option<tokio::task::JoinHandle<()>>,
    /// Measures the bytes stored per agent; ends with the server.
    measuring: tokio::task::JoinHandle<()>,
    /// The web's failed-login counts (the FTP service's: `ftp.lockout()`).
    pub web_lockout: Arc<ftp::Lockout>,
    /// With a PostgreSQL catalog: login lockouts counted with the other servers.
    _shared_lockouts: Option<shared_lockouts::SharedLockouts>,
    /// The audit trail (written until the shutdown).
    pub audit: Arc<audit::Audit>,
}

impl Running {
    /// The store as the catalog sees it (call inside the runtime; use from a blocking thread).
    pub fn store_view(&self) -> store::StoreView {
        store::StoreView::new(Arc::clone(&self.store))
    }
}

/// The accounts `settings` name: `DATA/users.toml`, or PostgreSQL with `[catalog] url` (where
/// `DATA/users.toml`'s accounts are stored first when the database holds none). Blocking.
pub fn open_accounts(settings: &ServerSettings) -> Result<Arc<UserDb>, ServerError> {
    open_accounts_at(settings, &settings.catalog_location()?)
}

fn open_accounts_at(
    settings: &ServerSettings,
    at: &catalog::Location,
) -> Result<Arc<UserDb>, ServerError> {
    match at {
        catalog::Location::Sqlite(_) => Ok(UserDb::open(settings.users_file())?),
        catalog::Location::Postgres(pg) => Ok(UserDb::open_postgres(pg, &settings.users_file())?),
    }
}

/// What a server opens where `[catalog]` says, before it serves.
struct Databases {
    users: Arc<UserDb>,
    /// Set when this start made the first admin account.
    initial_admin_password: Option<String>,
    catalog: Arc<catalog::Catalog>,
    /// With PostgreSQL: the web sessions and the path locks every server shares.
    shared_sessions: Option<Arc<web::shared_sessions::SharedSessions>>,
    locks: Option<Arc<path_locks::PathLocks>>,
}

/// Opens the accounts (making the first admin if there is none), the catalog and, with
/// PostgreSQL, the shared web sessions and path locks. Blocking: argon2, and the PostgreSQL
/// client runs a runtime of its own.
fn open_databases(
    settings: &ServerSettings,
    at: &catalog::Location,
) -> Result<Databases, ServerError> {
    let users = open_accounts_at(settings, at)?;
    let initial_admin_password = if users.is_empty() {
        let password = random_password();
        match users.add(NewUser::with_role("admin", &password, Role::Admin)) {
            Ok(()) => Some(password),
            // Another server sharing the accounts made the first one meanwhile.
            Err(crate::users::UserDbError::Exists(_)) => None,
            Err(e) => return Err(e.into()),
        }
    } else {
        None
    };
    let catalog = Arc::new(catalog::Catalog::connect(at)?);
    let (shared_sessions, locks) = match at {
        catalog::Location::Postgres(pg) => (
            Some(Arc::new(web::shared_sessions::SharedSessions::connect(pg)?)),
            Some(Arc::new(path_locks::PathLocks::start(pg).map_err(|e| {
                catalog::CatalogError::Setup(format!("catalog path locks: {e}"))
            })?)),
        ),
        catalog::Location::Sqlite(_) => (None, None),
    };
    Ok(Databases {
        users,
        initial_admin_password,
        catalog,
        shared_sessions,
        locks,
    })
}

/// Creates the data folder, makes the first admin account if there is none, and starts the
/// FTP service.
pub async fn start(settings: &ServerSettings) -> Result<Running, ServerError> {
    std::fs::create_dir_all(settings.archive_dir()).map_err(|source| ServerError::Data {
        path: settings.archive_dir(),
        source,
    })?;
    // Resolved once (with TLS, the roots are read from disk) for every database user below.
    let at = settings.catalog_location()?;
    let (s, db_at) = (settings.clone(), at.clone());
    let Databases {
        users,
        initial_admin_password,
        catalog,
        shared_sessions,
        locks,
    } = tokio::task::spawn_blocking(move || open_databases(&s, &db_at))
        .await
        .map_err(|e| ServerError::Maintenance(format!("opening the databases: {e}")))??;
    let web_listener = tokio::net::TcpListener::bind(settings.web_listen)
        .await
        .map_err(|source| ServerError::WebListen {
            addr: settings.web_listen,
            source,
        })?;
    let web_addr = web_listener
        .local_addr()
        .map_err(|source| ServerError::WebListen {
            addr: settings.web_listen,
            source,
        })?;
    let web_tls = match &settings.tls {
        Some((cert, key)) => {
            Some(ftp::tls_server_config(cert, key).map_err(|e| ServerError::Tls(e.to_string()))?)
        }
        None => None,
    };
    let ftp_config = settings.ftp_config()?;
    let web_connections = fit_open_files_limit(&ftp_config, &settings.web);
    let opened = store::open(settings)?;
    let stored = Arc::new(store::StoredBytes::default());
    let measuring = stored.spawn_measuring(opened.clone());
    let store::Opened { store, s3, local } = opened;
    // Servers sharing a catalog share the archive: one writer per file among them all.
    let store: Arc<dyn logarchive_ftp::server::Storage> = match &locks {
        Some(l) => Arc::new(path_locks::LockedStorage::new(store, Arc::clone(l))),
        None => store,
    };
    let compactor = match (local, settings.storage.compress_after.0) {
        (Some(local), Some(quiet)) => Some(store::spawn_compactor(
            local,
            quiet,
            Arc::clone(&stored),
            locks.clone(),
        )),
        _ => None,
    };
    let ftp =
        Arc::new(ftp::start_with(ftp_config, Arc::clone(&users) as _, Arc::clone(&store)).await?);
    let audit = {
        let (at, name, keep) = (
            at.clone(),
            audit::server_name(Some(web_addr.port())),
            settings.audit.keep,
        );
        tokio::task::spawn_blocking(move || audit::Audit::start(&at, name, Some(keep)))
            .await
            .map_err(|e| ServerError::Maintenance(format!("opening the audit trail: {e}")))??
    };
    audit.follow_ftp(&ftp);
    // Hand edits of the users file apply within a second (and at once to a login: the file is
    // checked before every password check).
    let mut users_watch = users.watch(USERS_POLL);
    // A server that answers is one that hears account changes made through the others.
    if !users_watch.listening(USERS_POLL * 5).await {
        tracing::warn!("accounts: not yet listening for changes made through other servers");
    }
    let session_cutter = cut_sessions_of_changed_accounts(&users, &ftp);
    let metrics = Arc::new(web::metrics::Metrics::default());
    follow_events(
        &ftp,
        Arc::clone(&catalog),
        store::StoreView::new(Arc::clone(&store)),
        Arc::clone(&metrics),
    )
    .map_err(ServerError::Thread)?;
    let state = Arc::new(web::WebState {
        catalog: Arc::clone(&catalog),
        archive: Arc::new(web::archive::Archive::new(Arc::clone(&store))),
        ready: Arc::new(store::Readiness::new(s3.clone())),
        s3,
        stored,
        // The free space shown is the archive folder's disk's; an object store has none.
        archive_root: (settings.storage.backend == config::StorageBackend::Local)
            .then(|| settings.archive_dir()),
        users: Arc::clone(&users),
        ftp: Arc::clone(&ftp),
        audit: Arc::clone(&audit),
        auth: web::auth::Auth::new(
            web_tls.is_some(),
            settings.web.login_max_failures,
            settings.web.login_lockout,
        )
        .with_shared_sessions(shared_sessions),
        metrics,
        config: settings.web.clone(),
        lines: Default::default(),
        workers: web::workers::Workers::new(
            settings.web.max_searches,
            settings.web.max_searches_per_user,
            settings.web.max_transfers,
        ),
    });
    let shared_lockouts = match &at {
        catalog::Location::Postgres(pg) => Some(
            shared_lockouts::SharedLockouts::start(pg, ftp.lockout(), state.auth.lockout())
                .map_err(ServerError::Thread)?,
        ),
        catalog::Location::Sqlite(_) => None,
    };
    let web_lockout = Arc::clone(state.auth.lockout());
    let (web_stop, mut stop_rx) = tokio::sync::watch::channel(false);
    let web_task = tokio::spawn(web::serve(
        web_listener,
        web::router(state),
        web_tls,
        web::ConnLimits {
            max_connections: web_connections,
            ..settings.web.conn_limits()
        },
        async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        },
    ));
    Ok(Running {
        ftp,
        web_addr,
        web_stop,
        web_task,
        catalog,
        users,
        users_watch,
        session_cutter,
        initial_admin_password,
        store,
        compactor,
        measuring,
        web_lockout,
        _shared_lockouts: shared_lockouts,
        audit,
    })
}

/// Raises the open-files limit and fits the web service's connection cap under it: a web flood
/// must never take the descriptors the FTP service needs. When the limit is below what the
/// configured caps could use together, the web cap shrinks to a quarter of what is left after
/// a reserve, and the operator is told once. Returns the web connection cap to use.
fn fit_open_files_limit(ftp: &ftp::FtpServerConfig, web: &web::WebConfig) -> usize {
    let limit = logarchive_ftp::os::raise_open_files_limit();
    // An FTP session holds its control connection, a data connection and a passive listener;
    // the catalog, the users file, downloads and searches need some more.
    const RESERVE: u64 = 256;
    let ftp_needs = 3 * ftp.max_sessions as u64 + ftp.max_pending_logins as u64;
    let needed = web.max_connections as u64 + ftp_needs + web.max_transfers as u64 + RESERVE;
    if limit >= needed {
        return web.max_connections;
    }
    let fitted = (limit.saturating_sub(RESERVE) / 4).clamp(16, web.max_connections as u64) as usize;
    tracing::warn!(
        "the open-files limit is {limit}, below the {needed} the connection limits may use: \
         the web service takes at most {fitted} connections (not {}); raise LimitNOFILE \
         (systemd) or ulimit -n, or lower [ftp] max_sessions",
        web.max_connections
    );
    fitted
}

/// Ends at once the FTP sessions of every account that was removed, disabled or given a new
/// password, whoever changed it: this server's web UI, `logarchive user`, a hand edit, or
/// another server sharing the accounts in PostgreSQL. (Such a session can do nothing more
/// anyway — every command checks the account as it is now — but an idle one would otherwise
/// stay connected.)
fn cut_sessions_of_changed_accounts(
    users: &Arc<UserDb>,
    ftp: &Arc<ServerHandle>,
) -> tokio::task::JoinHandle<()> {
    let (users, ftp) = (Arc::clone(users), Arc::clone(ftp));
    let mut changes = users.subscribe();
    tokio::spawn(async move {
        let mut before = users.snapshot();
        while changes.changed().await.is_ok() {
            let now = users.snapshot();
            for (name, old) in &before.users {
                let gone = match now.users.get(name) {
                    None => true,
                    Some(new) => !new.enabled || new.password != old.password,
                };
                if gone && ftp.disconnect_user(name) > 0 {
                    tracing::info!(user = %name, "FTP sessions ended: the account changed");
                }
            }
            before = now;
        }
    })
}

/// How often the users file is checked for hand edits (one stat).
const USERS_POLL: std::time::Duration = std::time::Duration::from_secs(1);

impl Running {
    /// Stops the web interface (open requests finish), then the FTP service (transfers get
    /// its grace period).
    pub async fn shutdown(self) -> ftp::ShutdownReport {
        let _ = self.web_stop.send(true);
        // Streams that never end (follow) would hold a graceful stop forever: bounded.
        let mut task = self.web_task;
        if tokio::time::timeout(std::time::Duration::from_secs(5), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
        let report = self.ftp.shutdown().await;
        self.users_watch.stop();
        self.session_cutter.abort();
        if let Some(c) = self.compactor {
            c.abort();
        }
        self.measuring.abort();
        // What the last sessions did is recorded before the process ends.
        let audit = self.audit;
        let _ = tokio::task::spawn_blocking(move || audit.close()).await;
        report
    }
}

/// Keeps the catalog and the metrics in step with the FTP service, on one thread of its own (the
/// catalog's only writer in this server): reconcile with the archive at start and whenever
/// events were lost because it fell behind, then apply the events in batches, one transaction
/// for all that are waiting. Uploads never wait for it; a burst of small files costs one
/// commit, not one per file.
///
/// While the catalog database does not answer (PostgreSQL restarting, unreachable), the batch
/// it did not take is kept and tried again, and a reconcile that failed is tried again, with a
/// backoff from 1 s to 1 min; both without waiting for the next event, so the catalog catches
/// up as soon as the database is back even when the archive has gone quiet.
fn follow_events(
    ftp: &ServerHandle,
    catalog: Arc<catalog::Catalog>,
    archive: store::StoreView,
    metrics: Arc<web::metrics::Metrics>,
) -> std::io::Result<()> {
    use std::time::{Duration, Instant};
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    /// Events applied in one transaction at most.
    const BATCH: usize = 1024;
    /// Catalog commits are at most this frequent (so an event is in the catalog at most this
    /// much later than without batching).
    const COMMIT_EVERY: Duration = Duration::from_millis(25);
    /// How long a wait for events lasts while work is pending.
    const POLL: Duration = Duration::from_millis(250);
    const FIRST_RETRY: Duration = Duration::from_secs(1);
    const LAST_RETRY: Duration = Duration::from_secs(60);
    let mut events = ftp.subscribe();
    std::thread::Builder::new()
        .name("catalog-writer".into())
        .spawn(move || {
            let mut reconcile = true;
            let mut next_reconcile = Instant::now();
            let mut reconcile_backoff = FIRST_RETRY;
            // A batch the catalog did not take stays here and is tried again at `next_apply`.
            let mut batch = Vec::with_capacity(BATCH);
            let mut next_apply = Instant::now();
            let mut apply_backoff = FIRST_RETRY;
            let mut last_commit = Instant::now();
            let mut closed = false;
            let lagged = |n: u64| {
                tracing::warn!("catalog fell {n} events behind; reconciling with the archive");
            };
            while !closed || !batch.is_empty() {
                if reconcile && Instant::now() >= next_reconcile {
                    match catalog.reconcile(&archive) {
                        Ok((added, removed, updated)) => {
                            reconcile = false;
                            reconcile_backoff = FIRST_RETRY;
                            tracing::info!(
                                added,
                                removed,
                                updated,
                                "catalog reconciled with the archive"
                            )
                        }
                        Err(e) => {
                            tracing::error!(
                                "catalog reconcile: {e}; trying again in {:?}",
                                reconcile_backoff
                            );
                            next_reconcile = Instant::now() + reconcile_backoff;
                            reconcile_backoff = (reconcile_backoff * 2).min(LAST_RETRY);
                        }
                    }
                }
                if closed {
                    // The service stopped: one more try for what is left, then end.
                    if catalog.batch(|c| c.apply_all(&batch, &archive)).is_err() {
                        tracing::error!(
                            "catalog: {} events not applied at shutdown; the next start \
                             reconciles",
                            batch.len()
                        );
                    }
                    break;
                }
                // Wait for events: as long as it takes when nothing is pending, else briefly.
                let pending = reconcile || !batch.is_empty();
                let first = if pending {
                    match events.try_recv() {
                        Ok(ev) => Some(ev),
                        Err(TryRecvError::Empty) => {
                            std::thread::sleep(POLL);
                            None
                        }
                        Err(TryRecvError::Lagged(n)) => {
                            lagged(n);
                            reconcile = true;
                            None
                        }
                        Err(TryRecvError::Closed) => {
                            closed = true;
                            None
                        }
                    }
                } else {
                    match events.blocking_recv() {
                        Ok(ev) => Some(ev),
                        Err(RecvError::Lagged(n)) => {
                            lagged(n);
                            reconcile = true;
                            continue;
                        }
                        Err(RecvError::Closed) => break,
                    }
                };
                if let Some(ev) = first {
                    metrics.on_ftp_event(&ev);
                    batch.push(ev);
                    // At most one commit per COMMIT_EVERY: a commit writes whole pages
                    // (files, folders, indexes, the name index), which a burst shares.
                    if let Some(wait) = COMMIT_EVERY.checked_sub(last_commit.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
                while batch.len() < BATCH {
                    match events.try_recv() {
                        Ok(ev) => {
                            metrics.on_ftp_event(&ev);
                            batch.push(ev);
                        }
                        Err(TryRecvError::Lagged(n)) => {
                            lagged(n);
                            reconcile = true;
                        }
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Closed) => {
                            closed = true;
                            break;
                        }
                    }
                }
                if batch.is_empty() || Instant::now() < next_apply {
                    continue;
                }
                match catalog.batch(|c| c.apply_all(&batch, &archive)) {
                    Ok(()) => {
                        batch.clear();
                        apply_backoff = FIRST_RETRY;
                    }
                    Err(e @ catalog::CatalogError::Unavailable(_)) => {
                        // Applying events again is harmless (apply_all): keep them, try later.
                        tracing::error!(
                            "{e}; {} events wait, trying again in {:?}",
                            batch.len(),
                            apply_backoff
                        );
                        next_apply = Instant::now() + apply_backoff;
                        apply_backoff = (apply_backoff * 2).min(LAST_RETRY);
                        if batch.len() >= BATCH {
                            // Beyond a batch, the archive itself is the better record.
                            batch.clear();
                            reconcile = true;
                        }
                    }
                    Err(e) => {
                        tracing::error!("catalog: {e}; reconciling with the archive");
                        batch.clear();
                        reconcile = true;
                    }
                }
                last_commit = Instant::now();
            }
        })
        .map(|_| ())
}
