//! Live sessions: who is connected, since when, and what they are transferring. Also the
//! bookkeeping behind the session limits and the graceful shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

/// A transfer in progress.
#[derive(Debug)]
pub struct Transfer {
    pub path: String,
    pub upload: bool,
    pub started: Instant,
    pub bytes: AtomicU64,
}

/// One control connection.
#[derive(Debug)]
pub struct Session {
    pub id: u64,
    pub addr: SocketAddr,
    pub since: SystemTime,
    user: Mutex<Option<String>>,
    transfer: Mutex<Option<Arc<Transfer>>>,
    /// A duplicate of the control socket, used to close the session on shutdown.
    control: Mutex<Option<OwnedFd>>,
    /// Set to abandon this session's transfers (shutdown past its grace period, or a kick).
    pub(crate) cancel: tokio::sync::watch::Sender<bool>,
    /// Whether the session waits for its client's next command (no command, transfer or
    /// reply under way): only then may a graceful shutdown close it.
    waiting: std::sync::atomic::AtomicBool,
}

impl Session {
    pub(crate) fn set_waiting(&self, waiting: bool) {
        self.waiting.store(waiting, Ordering::SeqCst);
    }

    /// Whether the session is between commands, waiting for the client.
    pub fn is_waiting(&self) -> bool {
        self.waiting.load(Ordering::SeqCst)
    }

    pub fn user(&self) -> Option<String> {
        self.user.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn transfer(&self) -> Option<Arc<Transfer>> {
        self.transfer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn begin_transfer(&self, path: String, upload: bool) -> Arc<Transfer> {
        let t = Arc::new(Transfer {
            path,
            upload,
            started: Instant::now(),
            bytes: AtomicU64::new(0),
        });
        *self.transfer.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&t));
        t
    }

    pub(crate) fn end_transfer(&self) {
        *self.transfer.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Ends the session now: its transfer is abandoned and its control connection closed.
    pub(crate) fn kill(&self) {
        let _ = self.cancel.send(true);
        self.close_control();
    }

    /// Closes the control connection (both directions); the session's control loop then ends.
    pub(crate) fn close_control(&self) {
        if let Some(fd) = self
            .control
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            // SAFETY: shutdown(2) on a descriptor we own; it affects the shared socket.
            unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_RDWR) };
        }
    }
}

/// A snapshot of a session for display.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct SessionInfo {
    /// The session's number, unique while the server runs.
    pub id: u64,
    /// The client's address.
    pub addr: SocketAddr,
    /// When the client connected.
    pub since: SystemTime,
    /// The logged-in account, if any.
    pub user: Option<String>,
    /// The path of the transfer in progress, if any.
    pub transfer_path: Option<String>,
    /// Whether that transfer is an upload.
    pub transfer_upload: Option<bool>,
    /// Bytes moved so far in that transfer.
    pub transfer_bytes: Option<u64>,
    /// Bytes per second since the transfer started.
    pub transfer_rate: Option<f64>,
}

/// Every live session.
#[derive(Debug, Default)]
pub struct Sessions {
    next_id: AtomicU64,
    live: Mutex<HashMap<u64, Arc<Session>>>,
}

impl Sessions {
    pub(crate) fn open(&self, addr: SocketAddr, control: Option<OwnedFd>) -> Arc<Session> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let s = Arc::new(Session {
            id,
            addr,
            since: SystemTime::now(),
            user: Mutex::new(None),
            transfer: Mutex::new(None),
            control: Mutex::new(control),
            cancel: tokio::sync::watch::channel(false).0,
            waiting: std::sync::atomic::AtomicBool::new(false),
        });
        self.lock().insert(id, Arc::clone(&s));
        s
    }

    pub(crate) fn close(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Session>>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// Sessions from this address.
    pub(crate) fn count_from(&self, ip: std::net::IpAddr) -> usize {
        let ip = crate::server::canonical_ip(ip);
        self.lock()
            .values()
            .filter(|s| crate::server::canonical_ip(s.addr.ip()) == ip)
            .count()
    }

    /// Sessions that have not logged in (yet).
    pub(crate) fn pending_logins(&self) -> usize {
        self.lock().values().filter(|s| s.user().is_none()).count()
    }

    /// The longest-waiting session that has not logged in.
    pub(crate) fn oldest_pending(&self) -> Option<Arc<Session>> {
        self.lock()
            .values()
            .filter(|s| s.user().is_none())
            .min_by_key(|s| s.id)
            .cloned()
    }

    pub(crate) fn all(&self) -> Vec<Arc<Session>> {
        self.lock().values().cloned().collect()
    }

    /// Marks `session` as logged in as `user` unless that user already has `max_per_user`
    /// sessions (0 = no limit). Returns false when the limit is reached.
    pub(crate) fn claim_login(&self, session: &Session, user: &str, max_per_user: usize) -> bool {
        let map = self.lock();
        if max_per_user > 0 {
            let n = map
                .values()
                .filter(|s| s.id != session.id && s.user().as_deref() == Some(user))
                .count();
            if n >= max_per_user {
                return false;
            }
        }
        *session.user.lock().unwrap_or_else(|p| p.into_inner()) = Some(user.to_string());
        true
    }

    /// What the admin page shows.
    pub fn list(&self) -> Vec<SessionInfo> {
        let mut v: Vec<SessionInfo> = self
            .all()
            .iter()
            .map(|s| {
                let t = s.transfer();
                SessionInfo {
                    id: s.id,
                    addr: s.addr,
                    since: s.since,
                    user: s.user(),
                    transfer_path: t.as_ref().map(|t| t.path.clone()),
                    transfer_upload: t.as_ref().map(|t| t.upload),
                    transfer_bytes: t.as_ref().map(|t| t.bytes.load(Ordering::Relaxed)),
                    transfer_rate: t.as_ref().map(|t| {
                        t.bytes.load(Ordering::Relaxed) as f64
                            / t.started.elapsed().as_secs_f64().max(1e-3)
                    }),
                }
            })
            .collect();
        v.sort_by_key(|s| s.id);
        v
    }
}
