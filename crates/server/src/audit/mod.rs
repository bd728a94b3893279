//! The audit trail: who changed what, when, through which server and from where.
//!
//! Recorded: account changes (web pages, API, `logarchive user`), web logins, logouts and
//! failed logins, FTP logins refused for a wrong password, and what FTP clients delete or
//! rename (not an upload's temporary name becoming its final one: that is the archive's normal
//! work, in the catalog already). Never a password, never file contents.
//!
//! Kept in the catalog's database, so servers that share a PostgreSQL catalog share one trail
//! (migration step 6 in `crate::pg`); in the SQLite mode in `DATA/catalog.db` (table `audit`,
//! made here). Rows older than `[audit] keep` are deleted.
//!
//! Kept here: recording never waits for the database. A server's events go into a bounded
//! queue that one thread writes in batches; while the database is away the queue holds what
//! comes (and the writer retries), and what overflows it is counted and said once, never
//! blocking a login or an FTP command. `logarchive user` writes its row before it returns.

use crate::catalog::{CatalogError, Location};
use db::Db;
use logarchive_ftp::server::FtpEvent;
use serde::Serialize;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod db;

pub use db::copy_trail;

type Result<T> = std::result::Result<T, CatalogError>;

/// Events waiting for the writer at most; more are counted as lost.
const QUEUE: usize = 10_000;
/// Rows one insert takes at most.
const BATCH: usize = 500;
/// How often old rows are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Rows one query returns at most.
pub const MAX_ROWS: usize = 1000;

/// Through what an event came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Web,
    Ftp,
    Cli,
}

impl Via {
    fn as_str(self) -> &'static str {
        match self {
            Via::Web => "web",
            Via::Ftp => "ftp",
            Via::Cli => "cli",
        }
    }
}

/// One thing that happened, as recorded.
#[derive(Debug, Clone)]
pub struct Event {
    pub at_ms: i64,
    /// The account that did it (for a failed login: the name tried).
    pub actor: String,
    pub via: Via,
    pub ip: Option<IpAddr>,
    /// Dotted, from a fixed set: `account.add`, `account.change`, `account.remove`,
    /// `account.password`, `web.login`, `web.logout`, `web.login_failed`, `ftp.login_failed`,
    /// `file.delete`, `file.rename`, `folder.remove`.
    pub action: &'static str,
    /// The account or path acted on.
    pub target: String,
    /// What changed, in words (e.g. `upload_limit: unlimited -> 2.0 MiB/s`).
    pub detail: String,
}

impl Event {
    /// An event that happens now.
    pub fn now(
        actor: &str,
        via: Via,
        ip: Option<IpAddr>,
        action: &'static str,
        target: &str,
        detail: impl Into<String>,
    ) -> Event {
        Event {
            at_ms: now_ms(),
            actor: actor.to_string(),
            via,
            ip,
            action,
            target: target.to_string(),
            detail: detail.into(),
        }
    }
}

/// A recorded event as the admin page and `GET /api/v1/audit` show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditRow {
    /// Increasing; `before=ID` pages to older rows.
    pub id: i64,
    /// RFC 3339, UTC.
    pub at: String,
    pub at_ms: i64,
    /// The server that recorded it (`host:web port`).
    pub server: String,
    pub actor: String,
    /// `web`, `ftp` or `cli`.
    pub via: String,
    pub ip: Option<String>,
    pub action: String,
    pub target: String,
    pub detail: String,
}

/// Which rows to read: newest first, every given filter applies.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// The actor, exactly.
    pub actor: Option<String>,
    /// `account` matches `account.add`, `account.change`...; a full action matches itself.
    pub action: Option<String>,
    /// The target, exactly, or (ending in `/`) everything below a folder.
    pub target: Option<String>,
    /// Rows older than this id.
    pub before: Option<i64>,
    /// At most this many (at most [`MAX_ROWS`]).
    pub limit: usize,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The name a server records itself by: the host's name and the web port (two servers on one
/// host stay apart).
pub fn server_name(web_port: Option<u16>) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    match web_port {
        Some(p) => format!("{host}:{p}"),
        None => host,
    }
}

/// Records `events` at `at` now, blocking: for a command that does one thing and ends
/// (`logarchive user`).
pub fn write_now(at: &Location, server: &str, events: &[Event]) -> Result<()> {
    Db::open(at)?.insert(server, events)
}

/// What the writer is sent.
enum Msg {
    Event(Event),
    /// Write what is queued, then end.
    Stop,
}

/// The audit trail of a server: a queue and the thread that writes it.
pub struct Audit {
    db: Arc<Db>,
    server: String,
    queue: SyncSender<Msg>,
    /// Events a full queue refused (said by the writer).
    lost: Arc<AtomicU64>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("server", &self.server)
            .finish()
    }
}

impl Audit {
    /// Opens the trail at `at` and starts its writer, which also deletes rows older than
    /// `keep` (`None`: keeps every row). Blocking.
    pub fn start(at: &Location, server: String, keep: Option<Duration>) -> Result<Arc<Audit>> {
        let db = Arc::new(Db::open(at)?);
        let (queue, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let lost = Arc::new(AtomicU64::new(0));
        let writer = {
            let (db, server, lost) = (Arc::clone(&db), server.clone(), Arc::clone(&lost));
            std::thread::Builder::new()
                .name("audit-writer".into())
                .spawn(move || write_queue(&db, &server, &rx, keep, &lost))
                .map_err(|e| CatalogError::Setup(format!("audit: cannot start a thread: {e}")))?
        };
        Ok(Arc::new(Audit {
            db,
            server,
            queue,
            lost,
            writer: Mutex::new(Some(writer)),
        }))
    }

    /// Records `e` (never blocks: queued for the writer; counted as lost when the queue is
    /// full).
    pub fn record(&self, e: Event) {
        if let Err(TrySendError::Full(_)) = self.queue.try_send(Msg::Event(e)) {
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The rows `q` asks for, newest first. Blocking.
    pub fn query(&self, q: &Query) -> Result<Vec<AuditRow>> {
        self.db.query(q)
    }

    /// Records what FTP clients do that the trail keeps (see the module's documentation),
    /// until the FTP service ends.
    pub fn follow_ftp(self: &Arc<Self>, ftp: &logarchive_ftp::server::ServerHandle) {
        let mut events = ftp.subscribe();
        let audit = Arc::clone(self);
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match events.recv().await {
                    Ok(e) => {
                        if let Some(e) = of_ftp(&e) {
                            audit.record(e);
                        }
                    }
                    Err(RecvError::Lagged(n)) => tracing::error!(
                        "audit: {n} FTP events went by unrecorded (the service is busier than \
                         the event queue holds)"
                    ),
                    Err(RecvError::Closed) => return,
                }
            }
        });
    }

    /// Writes what is queued and stops the writer (a server's shutdown). Blocking.
    pub fn close(&self) {
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = writer {
            let _ = self.queue.send(Msg::Stop);
            let _ = w.join();
        }
    }
}

/// The FTP events the trail keeps, as its events.
fn of_ftp(e: &FtpEvent) -> Option<Event> {
    use logarchive_ftp::names::is_temp_name;
    let temp = |p: &str| is_temp_name(p.rsplit('/').next().unwrap_or(p));
    let ip = |a: &std::net::SocketAddr| logarchive_ftp::server::canonical_ip(a.ip());
    Some(match e {
        FtpEvent::Deleted { user, path, addr } if !temp(path) => {
            Event::now(user, Via::Ftp, Some(ip(addr)), "file.delete", path, "")
        }
        FtpEvent::DirRemoved { user, path, addr } => {
            Event::now(user, Via::Ftp, Some(ip(addr)), "folder.remove", path, "")
        }
        FtpEvent::Renamed {
            user,
            from,
            to,
            from_temp: false,
            addr,
            ..
        } => Event::now(
            user,
            Via::Ftp,
            Some(ip(addr)),
            "file.rename",
            from,
            format!("to {to}"),
        ),
        // A wrong password (not a refusal of an address already locked out: those are
        // bounded by nothing but the attacker's patience, and say nothing new).
        FtpEvent::LoginFailed { user, addr, reason }
            if reason.as_str() == logarchive_ftp::server::WRONG_PASSWORD =>
        {
            Event::now(user, Via::Ftp, Some(ip(addr)), "ftp.login_failed", user, "")
        }
        _ => return None,
    })
}

fn write_queue(
    db: &Db,
    server: &str,
    rx: &Receiver<Msg>,
    keep: Option<Duration>,
    lost: &AtomicU64,
) {
    let mut pending: Vec<Event> = Vec::new();
    let mut backoff = Duration::from_millis(250);
    let mut failing = false;
    // At the start, then every hour.
    let mut next_prune = Instant::now();
    let mut said_lost = 0;
    let mut stop = false;
    while !stop || !pending.is_empty() {
        if let Some(keep) = keep {
            if Instant::now() >= next_prune {
                next_prune = Instant::now() + PRUNE_EVERY;
                match db.prune(now_ms() - keep.as_millis() as i64) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!("audit: {n} rows older than {keep:?} deleted"),
                    Err(e) => tracing::debug!("audit: pruning: {e}"),
                }
            }
        }
        if !stop {
            let wait = match (pending.is_empty(), keep) {
                (false, _) => backoff,
                (true, Some(_)) => next_prune.saturating_duration_since(Instant::now()),
                (true, None) => PRUNE_EVERY,
            };
            match rx.recv_timeout(wait) {
                Ok(Msg::Event(e)) => pending.push(e),
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => stop = true,
                Err(RecvTimeoutError::Timeout) => {}
            }
            while pending.len() < QUEUE && !stop {
                match rx.try_recv() {
                    Ok(Msg::Event(e)) => pending.push(e),
                    Ok(Msg::Stop) => stop = true,
                    Err(_) => break,
                }
            }
        }
        let mut written = 0;
        for chunk in pending.chunks(BATCH) {
            match db.insert(server, chunk) {
                Ok(()) => written += chunk.len(),
                Err(e) => {
                    if !failing {
                        tracing::error!(
                            "audit: cannot record ({e}); keeping the events and retrying"
                        );
                    }
                    failing = true;
                    break;
                }
            }
        }
        pending.drain(..written);
        if pending.is_empty() {
            if failing {
                tracing::info!("audit: recording again");
            }
            failing = false;
            backoff = Duration::from_millis(250);
        } else {
            backoff = (backoff * 2).min(Duration::from_secs(5));
            if stop {
                tracing::error!("audit: {} events not recorded at shutdown", pending.len());
                return;
            }
            // Held while the database is away, up to the queue's size; older ones go first.
            if pending.len() > QUEUE {
                let over = pending.len() - QUEUE;
                pending.drain(..over);
                lost.fetch_add(over as u64, Ordering::Relaxed);
            }
        }
        let now_lost = lost.load(Ordering::Relaxed);
        if now_lost != said_lost && !failing {
            tracing::error!(
                "audit: {now_lost} events lost in all since the start (the queue was full: \
                 the database slow or away)"
            );
            said_lost = now_lost;
        }
    }
}

/// An account's change in words, fields in a fixed order; a new password is said, never shown.
pub fn describe_change(old: &crate::users::UserRecord, new: &crate::users::UserRecord) -> String {
    let mut parts = Vec::new();
    let mut field = |name: &str, a: String, b: String| {
        if a != b {
            parts.push(format!("{name}: {a} -> {b}"));
        }
    };
    field("home", old.home.clone(), new.home.clone());
    field("rights", old.rights.to_string(), new.rights.to_string());
    field(
        "upload_limit",
        old.upload_limit.to_string(),
        new.upload_limit.to_string(),
    );
    field(
        "download_limit",
        old.download_limit.to_string(),
        new.download_limit.to_string(),
    );
    let ips = |r: &crate::users::UserRecord| {
        if r.allowed_ips.is_empty() {
            "any".to_string()
        } else {
            r.allowed_ips
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(",")
        }
    };
    field("allowed_ips", ips(old), ips(new));
    field("enabled", old.enabled.to_string(), new.enabled.to_string());
    field(
        "web_role",
        old.web_role.to_string(),
        new.web_role.to_string(),
    );
    field(
        "tls_required",
        old.tls_required.to_string(),
        new.tls_required.to_string(),
    );
    if old.password != new.password {
        parts.push("password changed".into());
    }
    if parts.is_empty() {
        "nothing changed".into()
    } else {
        parts.join("; ")
    }
}

/// A new account in words.
pub fn describe_new(r: &crate::users::UserRecord) -> String {
    format!(
        "home {}; rights {}; web {}; upload {}; download {}{}",
        r.home,
        r.rights,
        r.web_role,
        r.upload_limit,
        r.download_limit,
        if r.enabled { "" } else { "; disabled" }
    )
}
