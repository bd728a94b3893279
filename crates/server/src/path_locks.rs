//! One writer per file across servers (`[catalog] url`): an upload, an append, a rename or a
//! deletion of a path holds a PostgreSQL advisory lock on it (keyed by the path's SHA-256) for
//! as long as it writes, so two servers never write one file at once — say an agent whose
//! connection moved to server B while server A still finishes the old one. The loser's store
//! call fails `ResourceBusy` (FTP `450`, the agent retries). The compactor of a shared folder
//! takes the same lock for each file it compresses ([`PathLocks::lock_blocking`]), so a swap
//! never meets another server's upload, nor another server's compaction of that file.
//!
//! Kept here: every lock is taken and released on one connection owned by one thread (advisory
//! locks belong to a session; requests reach the thread through a channel, so releasing from a
//! `Drop` never blocks); the requests are pipelined on that connection (many in flight, one
//! round trip's latency each, not one after another); a lock's release is sent only after its
//! grant came back, and a grant nobody waits for any more is released at once; a server that
//! dies releases its locks with its connection; a connection
//! that broke is reported (its locks went with it) and made again. Inside one
//! server the FTP engine keeps one writer per file already (`ftp/src/server/inflight.rs`).

use async_trait::async_trait;
use logarchive_ftp::server::{Download, Meta, Reader, Storage, Upload, WriteMode};
use logarchive_store::sha::Sha256State;
use logarchive_store::VirtualPath;
use sha2::{Digest, Sha256};
use std::io;
use std::sync::Arc;
use std::time::SystemTime;

use crate::catalog::PgSettings;

enum Request {
    /// Try to take the lock; the answer says whether it was free.
    Lock(i64, tokio::sync::oneshot::Sender<io::Result<bool>>),
    Unlock(i64),
}

/// The locks of this server.
pub struct PathLocks {
    requests: tokio::sync::mpsc::UnboundedSender<Request>,
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
    /// Connects (blocking: call off the async threads) and starts the thread that holds the
    /// locks.
    pub fn start(settings: &PgSettings) -> io::Result<PathLocks> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let config = settings.clone();
        let first = rt
            .block_on(connect(&config))
            .map_err(|e| io::Error::other(format!("path locks: {e}")))?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("path-locks".into())
            .spawn(move || rt.block_on(serve(config, first, rx)))?;
        Ok(PathLocks { requests: tx })
    }

    /// Takes the lock of `path`, or fails `ResourceBusy` when another server holds it.
    async fn lock(self: &Arc<Self>, path: &VirtualPath) -> io::Result<Guard> {
        let (k, rx) = self.ask(path)?;
        self.granted(path, k, rx.await)
    }

    /// The path lock, for a blocking thread (the compactor): a guard, or `None` when
    /// another server holds the path.
    pub fn lock_blocking(
        self: &Arc<Self>,
        path: &VirtualPath,
    ) -> io::Result<Option<Box<dyn Send>>> {
        let (k, rx) = self.ask(path)?;
        match self.granted(path, k, rx.blocking_recv()) {
            Ok(g) => Ok(Some(Box::new(g))),
            Err(e) if e.kind() == io::ErrorKind::ResourceBusy => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn ask(
        &self,
        path: &VirtualPath,
    ) -> io::Result<(i64, tokio::sync::oneshot::Receiver<io::Result<bool>>)> {
        let k = key(path);
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.requests.send(Request::Lock(k, tx)).is_err() {
            return Err(io::Error::other("the path-lock thread stopped"));
        }
        Ok((k, rx))
    }

    fn granted(
        self: &Arc<Self>,
        path: &VirtualPath,
        k: i64,
        answer: Result<io::Result<bool>, tokio::sync::oneshot::error::RecvError>,
    ) -> io::Result<Guard> {
        match answer {
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
        let _ = self.locks.requests.send(Request::Unlock(self.key));
    }
}

/// The connection and its two statements, prepared once.
struct Conn {
    client: tokio_postgres::Client,
    lock: tokio_postgres::Statement,
    unlock: tokio_postgres::Statement,
}

async fn connect(settings: &PgSettings) -> Result<Conn, tokio_postgres::Error> {
    let client = settings.connect_async().await?;
    let lock = client.prepare("SELECT pg_try_advisory_lock($1)").await?;
    let unlock = client.prepare("SELECT pg_advisory_unlock($1)").await?;
    Ok(Conn {
        client,
        lock,
        unlock,
    })
}

/// A lock that could not be asked for: FTP answers 451, without a warning each time (the
/// operator is told once that PostgreSQL is away).
fn unavailable(e: &dyn std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        format!("path lock: PostgreSQL unavailable: {e}"),
    )
}

async fn serve(
    config: PgSettings,
    first: Conn,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Request>,
) {
    let mut conn = Arc::new(first);
    // While PostgreSQL is away: requests fail at once (writes get 451, agents retry), a new
    // connection is tried at most once a second, and the operator is told once.
    let mut retry_at: Option<tokio::time::Instant> = None;
    while let Some(r) = rx.recv().await {
        if conn.client.is_closed() {
            let now = tokio::time::Instant::now();
            let attempt = match retry_at {
                Some(at) if now < at => Err("still unavailable".to_string()),
                _ => connect(&config).await.map_err(|e| e.to_string()),
            };
            match attempt {
                Ok(c) => {
                    tracing::warn!(
                        "path locks: connected to PostgreSQL again; the locks of writes in \
                         flight went with the old connection"
                    );
                    conn = Arc::new(c);
                    retry_at = None;
                }
                Err(e) => {
                    if retry_at.is_none() {
                        tracing::warn!(
                            "path locks: PostgreSQL unavailable ({e}); writes are refused \
                             (451) until it is back"
                        );
                    }
                    if retry_at.is_none_or(|at| now >= at) {
                        retry_at = Some(now + std::time::Duration::from_secs(1));
                    }
                    if let Request::Lock(_, reply) = r {
                        let _ = reply.send(Err(unavailable(&e)));
                    }
                    continue;
                }
            }
        }
        let c = Arc::clone(&conn);
        // Each request a task of its own: they pipeline on the one connection.
        tokio::spawn(async move {
            match r {
                Request::Lock(k, reply) => {
                    let got = c
                        .client
                        .query_one(&c.lock, &[&k])
                        .await
                        .map(|row| row.get::<_, bool>(0))
                        .map_err(|e| unavailable(&e));
                    let granted = matches!(got, Ok(true));
                    // Nobody waits for it any more (the session went meanwhile): a lock
                    // granted now would never be released; release it at once.
                    if reply.send(got).is_err() && granted {
                        if let Err(e) = c.client.execute(&c.unlock, &[&k]).await {
                            tracing::debug!("path unlock: {e}");
                        }
                    }
                }
                Request::Unlock(k) => {
                    if let Err(e) = c.client.execute(&c.unlock, &[&k]).await {
                        tracing::debug!("path unlock: {e}");
                    }
                }
            }
        });
    }
}

/// The store, with the writes of a path serialised across servers by [`PathLocks`].
#[derive(Debug)]
pub struct LockedStorage {
    inner: Arc<dyn Storage>,
    locks: Arc<PathLocks>,
}

impl LockedStorage {
    pub fn new(inner: Arc<dyn Storage>, locks: Arc<PathLocks>) -> LockedStorage {
        LockedStorage { inner, locks }
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
