//! One writer per file across servers (`[catalog] url`): an upload, an append, a rename or a
//! deletion of a path holds a PostgreSQL advisory lock on it (keyed by the path's SHA-256) for
//! as long as it writes, so two servers never write one file at once — say an agent whose
//! connection moved to server B while server A still finishes the old one. The loser's store
//! call fails `ResourceBusy` (FTP `450`, the agent retries).
//!
//! Kept here: every lock is taken and released on one connection owned by one thread (advisory
//! locks belong to a session; requests reach the thread through a channel, so releasing from a
//! `Drop` never blocks); a server that dies releases its locks with its connection; a
//! connection that broke is reported (its locks went with it) and made again. Inside one
//! server the FTP engine keeps one writer per file already (`ftp/src/server/inflight.rs`).

use async_trait::async_trait;
use logarchive_ftp::server::{Download, Meta, Reader, Storage, Upload, WriteMode};
use logarchive_store::sha::Sha256State;
use logarchive_store::VirtualPath;
use sha2::{Digest, Sha256};
use std::io;
use std::sync::{mpsc, Arc};
use std::time::SystemTime;

use crate::catalog::postgres::OneClient;
use crate::catalog::PgSettings;

enum Request {
    /// Try to take the lock; the answer says whether it was free.
    Lock(i64, tokio::sync::oneshot::Sender<io::Result<bool>>),
    Unlock(i64),
}

/// The locks of this server.
pub struct PathLocks {
    requests: std::sync::Mutex<mpsc::Sender<Request>>,
}

impl std::fmt::Debug for PathLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PathLocks")
    }
}

fn key(path: &VirtualPath) -> i64 {
    let d = Sha256::digest(path.display().as_bytes());
    i64::from_be_bytes(d[..8].try_into().unwrap_or([0; 8]))
}

impl PathLocks {
    /// Connects (blocking) and starts the thread that holds the locks.
    pub fn start(settings: &PgSettings) -> io::Result<PathLocks> {
        let db = OneClient::connect(settings).map_err(io::Error::other)?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("path-locks".into())
            .spawn(move || serve(db, rx))?;
        Ok(PathLocks {
            requests: std::sync::Mutex::new(tx),
        })
    }

    fn send(&self, r: Request) -> bool {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(r)
            .is_ok()
    }

    /// Takes the lock of `path`, or fails `ResourceBusy` when another server holds it.
    async fn lock(self: &Arc<Self>, path: &VirtualPath) -> io::Result<Guard> {
        let k = key(path);
        let (tx, rx) = tokio::sync::oneshot::channel();
        if !self.send(Request::Lock(k, tx)) {
            return Err(io::Error::other("the path-lock thread stopped"));
        }
        match rx.await {
            Ok(Ok(true)) => Ok(Guard {
                locks: Arc::clone(self),
                key: k,
            }),
            Ok(Ok(false)) => Err(io::Error::new(
                io::ErrorKind::ResourceBusy,
                format!("{}: another server is writing it", path.display()),
            )),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::other("the path-lock thread stopped")),
        }
    }
}

/// A held lock; released when dropped.
struct Guard {
    locks: Arc<PathLocks>,
    key: i64,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.locks.send(Request::Unlock(self.key));
    }
}

fn serve(db: OneClient, rx: mpsc::Receiver<Request>) {
    let mut connection: Option<usize> = None;
    for r in rx {
        match r {
            Request::Lock(k, reply) => {
                let got = db.run(|c| {
                    let r =
                        c.query_one("SELECT pg_try_advisory_lock($1), pg_backend_pid()", &[&k])?;
                    Ok((r.get::<_, bool>(0), r.get::<_, i32>(1)))
                });
                let answer = match got {
                    Ok((free, pid)) => {
                        let pid = pid as usize;
                        if connection.is_some_and(|p| p != pid) {
                            tracing::warn!(
                                "path locks: the connection to PostgreSQL was made again; the \
                                 locks of writes in flight went with the old one"
                            );
                        }
                        connection = Some(pid);
                        Ok(free)
                    }
                    Err(e) => Err(io::Error::other(format!("path lock: {e}"))),
                };
                let _ = reply.send(answer);
            }
            Request::Unlock(k) => {
                if let Err(e) = db.run(|c| c.execute("SELECT pg_advisory_unlock($1)", &[&k])) {
                    tracing::debug!("path unlock: {e}");
                }
            }
        }
    }
}

/// The store, with the writes of a path serialised across servers by [`PathLocks`].
#[derive(Debug)]
pub struct LockedStorage {
    inner: Arc<dyn Storage>,
    locks: Arc<PathLocks>,
}

impl LockedStorage {
    pub fn new(inner: Arc<dyn Storage>, locks: PathLocks) -> LockedStorage {
        LockedStorage {
            inner,
            locks: Arc::new(locks),
        }
    }
}

struct LockedUpload {
    inner: Box<dyn Upload>,
    _guard: Guard,
}

impl Upload for LockedUpload {
    fn offset(&self) -> u64 {
        self.inner.offset()
    }
    fn prefix_hash(&self) -> Option<Sha256State> {
        self.inner.prefix_hash()
    }
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.inner.write(data)
    }
    fn finish(self: Box<Self>, hash: Option<Sha256State>) -> io::Result<Meta> {
        // The lock goes after the store finished (with `self`).
        self.inner.finish(hash)
    }
    fn abandon(self: Box<Self>, hash: Option<Sha256State>) -> io::Result<Meta> {
        self.inner.abandon(hash)
    }
    fn small_writes_inline(&self) -> bool {
        self.inner.small_writes_inline()
    }
}

#[async_trait]
impl Storage for LockedStorage {
    async fn stat(&self, path: &VirtualPath) -> io::Result<Meta> {
        self.inner.stat(path).await
    }
    async fn list(&self, dir: &VirtualPath) -> io::Result<Vec<(String, Meta)>> {
        self.inner.list(dir).await
    }
    async fn mkdir(&self, path: &VirtualPath) -> io::Result<()> {
        self.inner.mkdir(path).await
    }
    async fn remove_file(&self, path: &VirtualPath) -> io::Result<()> {
        let _g = self.locks.lock(path).await?;
        self.inner.remove_file(path).await
    }
    async fn remove_dir(&self, path: &VirtualPath) -> io::Result<()> {
        self.inner.remove_dir(path).await
    }
    async fn rename(
        &self,
        from: &VirtualPath,
        to: &VirtualPath,
        replace: bool,
    ) -> io::Result<Meta> {
        // Both ends, in one order whoever asks.
        let (a, b) = if key(from) <= key(to) {
            (from, to)
        } else {
            (to, from)
        };
        let _first = self.locks.lock(a).await?;
        let _second = self.locks.lock(b).await?;
        self.inner.rename(from, to, replace).await
    }
    async fn set_modified(&self, path: &VirtualPath, time: SystemTime) -> io::Result<()> {
        self.inner.set_modified(path, time).await
    }
    async fn read(&self, path: &VirtualPath, offset: u64) -> io::Result<Box<dyn Download>> {
        self.inner.read(path, offset).await
    }
    async fn open_reader(&self, path: &VirtualPath) -> io::Result<Box<dyn Reader>> {
        self.inner.open_reader(path).await
    }
    async fn write(&self, path: &VirtualPath, mode: WriteMode) -> io::Result<Box<dyn Upload>> {
        let guard = self.locks.lock(path).await?;
        let inner = self.inner.write(path, mode).await?;
        Ok(Box::new(LockedUpload {
            inner,
            _guard: guard,
        }))
    }
    async fn sha256(&self, path: &VirtualPath) -> io::Result<Sha256State> {
        self.inner.sha256(path).await
    }
    async fn known_sha256(&self, path: &VirtualPath) -> Option<Sha256State> {
        self.inner.known_sha256(path).await
    }
}
