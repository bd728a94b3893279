//! The data path: socket ⇄ store copies in large chunks, pipelined across threads, hashed on
//! the way.
//!
//! Upload: the session task reads the socket into 1 MiB buffers; a blocking thread hands them to
//! the store's [`Upload`]; a second blocking thread feeds them to SHA-256 and returns them to the
//! pool. So reading, writing and hashing overlap, and the file is never read back to verify it.
//! Uploads that fit in [`SMALL`] bytes take a single trip to the blocking pool.
//!
//! Download: sendfile(2) from the store's file to a plain data socket when the store is local;
//! else a blocking thread reads ahead into pooled buffers while the session task writes.
//!
//! Every socket read or write is bounded by the stall timeout, throttled by the account's limiter,
//! counted for the sessions list, and abandoned when the session is cancelled.

use super::data::DataStream;
use super::sessions::Transfer;
use super::store::{Download, Meta, Upload};
use crate::sha::Sha256State;
use async_speed_limit::Limiter;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

/// Uploads up to this size are written in one step.
pub const SMALL: usize = 64 * 1024;
/// Chunk size of the pipelines.
pub const CHUNK: usize = 1 << 20;
/// Buffers in flight per transfer.
const POOL: usize = 4;

/// What bounds one transfer.
pub(crate) struct Bounds {
    pub limiter: Option<Limiter>,
    pub stall: Duration,
    /// The session is closing.
    pub cancel: watch::Receiver<bool>,
    /// The client sent ABOR (or went away).
    pub abort: watch::Receiver<bool>,
    pub progress: Arc<Transfer>,
}

impl Bounds {
    /// Largest read or write: small enough that a throttled transfer is smooth.
    fn step(&self) -> usize {
        match &self.limiter {
            Some(l) if l.speed_limit().is_finite() => {
                ((l.speed_limit() / 20.0) as usize).clamp(4096, CHUNK)
            }
            _ => CHUNK,
        }
    }

    fn throttled(&self) -> bool {
        self.limiter
            .as_ref()
            .is_some_and(|l| l.speed_limit().is_finite())
    }

    async fn throttle(&self, n: usize) {
        if let Some(l) = &self.limiter {
            if l.speed_limit().is_finite() {
                l.consume(n).await;
            }
        }
        self.progress.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    async fn bounded<T>(
        &mut self,
        fut: impl std::future::Future<Output = io::Result<T>>,
    ) -> io::Result<T> {
        if *self.cancel.borrow() || *self.abort.borrow() {
            return Err(cancelled());
        }
        let (cancel, abort) = (&mut self.cancel, &mut self.abort);
        tokio::select! {
            r = tokio::time::timeout(self.stall, fut) => match r {
                Ok(r) => r,
                Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "data connection stalled")),
            },
            _ = async { let _ = cancel.wait_for(|c| *c).await; } => Err(cancelled()),
            _ = async { let _ = abort.wait_for(|c| *c).await; } => Err(cancelled()),
        }
    }
}

/// What [`Bounds::fill`] read.
struct Filled {
    len: usize,
    /// The client ended the stream (or a read failed: then `error` says why).
    ended: bool,
    error: Option<io::Error>,
}

impl Bounds {
    /// Reads from the data connection into `buf` until it is full or the stream ends, in
    /// steps of the speed limit, bounded by stalls, cancellation and ABOR.
    async fn fill(&mut self, input: &mut DataStream, buf: &mut [u8]) -> Filled {
        let step = self.step();
        let mut len = 0;
        while len < buf.len() {
            let end = (len + step).min(buf.len());
            match self.bounded(input.read(&mut buf[len..end])).await {
                Ok(0) => {
                    return Filled {
                        len,
                        ended: true,
                        error: None,
                    }
                }
                Ok(n) => {
                    self.throttle(n).await;
                    len += n;
                }
                Err(e) => {
                    return Filled {
                        len,
                        ended: true,
                        error: Some(e),
                    }
                }
            }
        }
        Filled {
            len,
            ended: false,
            error: None,
        }
    }
}

fn cancelled() -> io::Error {
    io::Error::new(io::ErrorKind::Interrupted, "transfer cancelled")
}

/// An error of the store (not of the data connection), so the reply can say whose it was.
#[derive(Debug)]
struct FromStore(io::Error);

impl std::fmt::Display for FromStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "store: {}", self.0)
    }
}

impl std::error::Error for FromStore {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

fn from_store(e: io::Error) -> io::Error {
    io::Error::new(e.kind(), FromStore(e))
}

/// Whether a transfer failed because the store did (a write, a read, a full disk, an object
/// store out of reach), rather than the client or the network.
pub(crate) fn is_from_store(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|r| r.is::<FromStore>())
}

/// What an upload did. `error` is set when it did not complete; what was received up to then is
/// in the store and described by `meta` (so a resume continues from there).
pub(crate) struct Received {
    pub bytes: u64,
    pub meta: Option<Meta>,
    /// SHA-256 of the whole file (from the prefix state on), when known.
    pub hash: Option<Sha256State>,
    pub error: Option<io::Error>,
}

/// Copies the data connection into `upload` until the client ends it.
pub(crate) async fn receive(
    input: &mut DataStream,
    upload: Box<dyn Upload>,
    mut bounds: Bounds,
) -> Received {
    // First up to SMALL bytes: most log files of a busy agent end here.
    let mut first = vec![0u8; SMALL];
    let got = bounds.fill(input, &mut first).await;
    first.truncate(got.len);
    if got.ended {
        return write_small(upload, first, got.error).await;
    }
    receive_pipelined(input, upload, bounds, first).await
}

async fn write_small(
    mut upload: Box<dyn Upload>,
    data: Vec<u8>,
    error: Option<io::Error>,
) -> Received {
    let len = data.len() as u64;
    let inline = upload.small_writes_inline();
    let work = move || {
        let mut hash = upload.prefix_hash();
        let written = upload.write(&data);
        if let Some(h) = hash.as_mut() {
            h.update(&data);
        }
        match (written, error) {
            (Ok(()), None) => (upload.finish(hash.clone()), hash, None),
            (Ok(()), Some(e)) => (upload.abandon(hash.clone()), hash, Some(e)),
            (Err(e), _) => (upload.abandon(None), None, Some(from_store(e))),
        }
    };
    let joined = if inline {
        Ok(work())
    } else {
        tokio::task::spawn_blocking(work).await
    };
    match joined {
        Ok((Ok(meta), hash, error)) => Received {
            bytes: len,
            meta: Some(meta),
            hash,
            error,
        },
        Ok((Err(e), _, error)) => Received {
            bytes: 0,
            meta: None,
            hash: None,
            error: Some(error.unwrap_or(from_store(e))),
        },
        Err(e) => Received {
            bytes: 0,
            meta: None,
            hash: None,
            error: Some(io::Error::other(e)),
        },
    }
}

async fn receive_pipelined(
    input: &mut DataStream,
    mut upload: Box<dyn Upload>,
    mut bounds: Bounds,
    first: Vec<u8>,
) -> Received {
    let (to_writer, mut writer_rx) = mpsc::channel::<(Vec<u8>, usize)>(POOL);
    let (to_hasher, mut hasher_rx) = mpsc::channel::<(Vec<u8>, usize)>(POOL);
    let (free_tx, mut free_rx) = mpsc::channel::<Vec<u8>>(POOL + 1);
    let prefix = upload.prefix_hash();
    let (hash_tx, hash_rx) = std::sync::mpsc::sync_channel::<Option<Sha256State>>(1);
    let hasher = tokio::task::spawn_blocking(move || {
        let mut h = prefix;
        while let Some((buf, n)) = hasher_rx.blocking_recv() {
            if let Some(h) = h.as_mut() {
                h.update(&buf[..n]);
            }
            let _ = free_tx.blocking_send(buf);
        }
        let _ = hash_tx.send(h);
    });
    // The writer ends the upload: complete, or kept as far as it got. It learns which from
    // `done` (false = the transfer was cut) once the reader has stopped.
    let (done_tx, done_rx) = std::sync::mpsc::sync_channel::<bool>(1);
    let writer = tokio::task::spawn_blocking(move || -> (io::Result<Meta>, u64, Option<Sha256State>, Option<io::Error>) {
        let mut written = 0u64;
        let mut failed = None;
        while let Some((buf, n)) = writer_rx.blocking_recv() {
            if failed.is_none() {
                match upload.write(&buf[..n]) {
                    Ok(()) => written += n as u64,
                    Err(e) => failed = Some(from_store(e)),
                }
            }
            // The hasher hands the buffer back to the pool; if it is gone, just drop it.
            let _ = to_hasher.blocking_send((buf, n));
        }
        drop(to_hasher);
        let hash = hash_rx.recv().ok().flatten();
        let complete = done_rx.recv().unwrap_or(false);
        match failed {
            Some(e) => (upload.abandon(None), written, None, Some(e)),
            None if complete => (upload.finish(hash.clone()), written, hash, None),
            None => (upload.abandon(hash.clone()), written, hash, None),
        }
    });

    let mut read_error = None;
    let first_len = first.len();
    let mut allocated = 1;
    if to_writer.send((first, first_len)).await.is_ok() {
        loop {
            let mut buf = if allocated < POOL {
                allocated += 1;
                vec![0u8; CHUNK]
            } else {
                match free_rx.recv().await {
                    Some(b) if b.len() >= CHUNK => b,
                    Some(_) => vec![0u8; CHUNK],
                    None => break,
                }
            };
            let got = bounds.fill(input, &mut buf[..CHUNK]).await;
            read_error = got.error;
            if got.len > 0 && to_writer.send((buf, got.len)).await.is_err() {
                break; // the writer stopped; its error is reported below
            }
            if got.ended {
                break;
            }
        }
    }
    drop(to_writer);
    let _ = done_tx.send(read_error.is_none());
    let _ = hasher.await;
    match writer.await {
        Ok((Ok(meta), bytes, hash, write_error)) => Received {
            bytes,
            meta: Some(meta),
            hash,
            error: write_error.or(read_error),
        },
        Ok((Err(e), bytes, _, write_error)) => Received {
            bytes,
            meta: None,
            hash: None,
            error: Some(write_error.or(read_error).unwrap_or(from_store(e))),
        },
        Err(e) => Received {
            bytes: 0,
            meta: None,
            hash: None,
            error: Some(io::Error::other(e)),
        },
    }
}

/// Copies `download` into the data connection. Returns the bytes sent; `zero_copy` is set when
/// sendfile(2) carried them.
pub(crate) async fn send(
    output: &mut DataStream,
    mut download: Box<dyn Download>,
    mut bounds: Bounds,
    zero_copy: &mut bool,
) -> io::Result<u64> {
    if let (Some(sock), Some((file, pos))) = (output.plain(), download.file()) {
        // sendfile from the file to our own socket: no copy through user space.
        let len = download.len();
        let chunk = if bounds.throttled() {
            bounds.step()
        } else {
            8 << 20
        };
        let fd = sock.as_raw_fd();
        let mut off = pos;
        *zero_copy = true;
        while off < len {
            let want = ((len - off) as usize).min(chunk);
            bounds.throttle(want).await;
            let n = loop {
                bounds.bounded(sock.writable()).await?;
                match sock.try_io(tokio::io::Interest::WRITABLE, || {
                    super::zerocopy::sendfile_once(fd, file, off, want)
                }) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            };
            if n == 0 {
                break; // the file shrank under us
            }
            off += n as u64;
        }
        return Ok(off - pos);
    }
    let step = bounds.step();
    let (tx, mut rx) = mpsc::channel::<io::Result<(Vec<u8>, usize)>>(2);
    let (free_tx, free_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let reader = tokio::task::spawn_blocking(move || {
        let mut allocated = 0;
        loop {
            let mut buf = match free_rx.try_recv() {
                Ok(b) => b,
                Err(_) if allocated < POOL => {
                    allocated += 1;
                    vec![0u8; CHUNK.min(download.len() as usize).max(4096)]
                }
                Err(_) => match free_rx.recv() {
                    Ok(b) => b,
                    Err(_) => return,
                },
            };
            match download.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if tx.blocking_send(Ok((buf, n))).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(from_store(e)));
                    return;
                }
            }
        }
    });
    let mut sent = 0u64;
    let result = async {
        while let Some(item) = rx.recv().await {
            let (buf, n) = item?;
            for part in buf[..n].chunks(step) {
                bounds.bounded(output.write_all(part)).await?;
                bounds.throttle(part.len()).await;
                sent += part.len() as u64;
            }
            let _ = free_tx.send(buf);
        }
        bounds.bounded(output.flush()).await
    }
    .await;
    // The reader may be waiting for a buffer back or to hand one over: both ends go first.
    drop(rx);
    drop(free_tx);
    let _ = reader.await;
    result.map(|_| sent)
}

/// Sends bytes made in memory (a listing).
pub(crate) async fn send_bytes(
    output: &mut DataStream,
    bytes: &[u8],
    mut bounds: Bounds,
) -> io::Result<u64> {
    let step = bounds.step();
    for part in bytes.chunks(step) {
        bounds.bounded(output.write_all(part)).await?;
        bounds.throttle(part.len()).await;
    }
    bounds.bounded(output.flush()).await?;
    Ok(bytes.len() as u64)
}
