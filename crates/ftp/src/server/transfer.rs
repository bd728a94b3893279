//! The data path: socket ⇄ file copies in large chunks, pipelined across threads, hashed on the way.
//!
//! Upload: the async task reads the socket into 1 MiB buffers; a blocking thread writes them to the
//! file; a second blocking thread feeds them to SHA-256 and returns them to the pool. So reading,
//! writing and hashing overlap, and the file is never read back to verify it. Uploads that fit in
//! [`SMALL`] bytes take a single trip to the blocking pool (open + write + hash).
//!
//! Download: a blocking thread reads the file ahead into pooled buffers while the async task
//! writes the previous one to the socket.
//!
//! Every socket read or write is bounded by the stall timeout, throttled by the user's limiter,
//! and abandoned when the server's grace period for shutdown has run out.

use super::sessions::Transfer;
use async_speed_limit::Limiter;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
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
    pub cancel: watch::Receiver<bool>,
    pub progress: Arc<Transfer>,
    pub stats: Arc<super::Stats>,
}

impl Bounds {
    /// Largest read or write: small enough that a throttled transfer is smooth.
    pub(crate) fn step(&self) -> usize {
        match &self.limiter {
            Some(l) => ((l.speed_limit() / 20.0) as usize).clamp(4096, CHUNK),
            None => CHUNK,
        }
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
        if *self.cancel.borrow() {
            return Err(io::Error::other("server is shutting down"));
        }
        let cancel = &mut self.cancel;
        tokio::select! {
            r = tokio::time::timeout(self.stall, fut) => match r {
                Ok(r) => r,
                Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "data connection stalled")),
            },
            _ = cancel.wait_for(|c| *c) => Err(io::Error::other("server is shutting down")),
        }
    }
}

/// Opens the upload target on the blocking side; returns the file positioned at the start
/// offset and the hash state of the bytes before it (if known).
pub(crate) type UploadOpener = Box<dyn FnOnce() -> io::Result<(File, Option<Sha256>)> + Send>;

/// The result of an upload; `error` is set when it did not complete, but what was received up to
/// then is on disk and described by the other fields (so a resume can continue from there).
pub(crate) struct Received {
    pub bytes: u64,
    pub file: Option<File>,
    pub hasher: Option<Sha256>,
    pub error: Option<io::Error>,
}

/// Copies `input` into the file opened by `open`.
pub(crate) async fn receive<R>(mut input: R, open: UploadOpener, mut bounds: Bounds) -> Received
where
    R: AsyncRead + Unpin + Send,
{
    let step = bounds.step();
    // First: read up to SMALL bytes. Most log files of a busy agent end here.
    let mut first = vec![0u8; SMALL];
    let mut filled = 0;
    let mut eof = false;
    while filled < SMALL {
        let end = (filled + step).min(SMALL);
        match bounds.bounded(input.read(&mut first[filled..end])).await {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(n) => {
                bounds.throttle(n).await;
                filled += n;
            }
            Err(e) => {
                first.truncate(filled);
                return write_small(open, first, Some(e)).await;
            }
        }
    }
    if eof {
        first.truncate(filled);
        bounds.stats.upload_writes.fetch_add(1, Ordering::Relaxed);
        return write_small(open, first, None).await;
    }
    receive_pipelined(input, open, bounds, first).await
}

async fn write_small(open: UploadOpener, data: Vec<u8>, error: Option<io::Error>) -> Received {
    let len = data.len() as u64;
    let joined = tokio::task::spawn_blocking(move || -> io::Result<(File, Option<Sha256>)> {
        let (mut f, mut h) = open()?;
        f.write_all(&data)?;
        if let Some(h) = h.as_mut() {
            h.update(&data);
        }
        Ok((f, h))
    })
    .await;
    match joined {
        Ok(Ok((f, h))) => Received {
            bytes: len,
            file: Some(f),
            hasher: h,
            error,
        },
        Ok(Err(e)) => Received {
            bytes: 0,
            file: None,
            hasher: None,
            error: Some(e),
        },
        Err(e) => Received {
            bytes: 0,
            file: None,
            hasher: None,
            error: Some(io::Error::other(e)),
        },
    }
}

async fn receive_pipelined<R>(
    mut input: R,
    open: UploadOpener,
    mut bounds: Bounds,
    first: Vec<u8>,
) -> Received
where
    R: AsyncRead + Unpin + Send,
{
    let (to_writer, mut writer_rx) = mpsc::channel::<(Vec<u8>, usize)>(POOL);
    let (to_hasher, mut hasher_rx) = mpsc::channel::<(Vec<u8>, usize)>(POOL);
    let (free_tx, mut free_rx) = mpsc::channel::<Vec<u8>>(POOL + 1);
    let (init_tx, init_rx) = std::sync::mpsc::sync_channel::<Option<Sha256>>(1);

    let stats = Arc::clone(&bounds.stats);
    let writer = tokio::task::spawn_blocking(move || -> io::Result<(File, u64)> {
        let (mut f, h) = open()?;
        let _ = init_tx.send(h);
        let mut written = 0u64;
        while let Some((buf, n)) = writer_rx.blocking_recv() {
            f.write_all(&buf[..n])?;
            stats.upload_writes.fetch_add(1, Ordering::Relaxed);
            written += n as u64;
            // The hasher hands the buffer back to the pool; if it is gone, just drop the buffer.
            let _ = to_hasher.blocking_send((buf, n));
        }
        Ok((f, written))
    });
    let hasher = tokio::task::spawn_blocking(move || -> Option<Sha256> {
        let mut h = init_rx.recv().ok().flatten();
        while let Some((buf, n)) = hasher_rx.blocking_recv() {
            if let Some(h) = h.as_mut() {
                h.update(&buf[..n]);
            }
            let _ = free_tx.blocking_send(buf);
        }
        h
    });

    let mut read_error = None;
    let first_len = first.len();
    let mut allocated = 1;
    if to_writer.send((first, first_len)).await.is_ok() {
        let step = bounds.step();
        'outer: loop {
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
            let mut filled = 0;
            let mut eof = false;
            while filled < CHUNK {
                let end = (filled + step).min(CHUNK);
                match bounds.bounded(input.read(&mut buf[filled..end])).await {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => {
                        bounds.throttle(n).await;
                        filled += n;
                    }
                    Err(e) => {
                        read_error = Some(e);
                        eof = true;
                        break;
                    }
                }
            }
            if filled > 0 && to_writer.send((buf, filled)).await.is_err() {
                break 'outer; // the writer failed; its error is reported below
            }
            if eof {
                break;
            }
        }
    }
    drop(to_writer);
    let written = writer.await.unwrap_or_else(|e| Err(io::Error::other(e)));
    let hash = hasher.await.unwrap_or(None);
    match written {
        Ok((f, n)) => Received {
            bytes: n,
            file: Some(f),
            hasher: hash,
            error: read_error,
        },
        Err(e) => Received {
            bytes: 0,
            file: None,
            hasher: None,
            error: Some(e),
        },
    }
}

/// Opens the download source on the blocking side; returns the file and its length.
pub(crate) type DownloadOpener = Box<dyn FnOnce() -> io::Result<(File, u64)> + Send>;

/// Copies the file opened by `open`, from `start`, into `output`. Returns the bytes sent.
pub(crate) async fn send<W>(
    output: &mut W,
    open: DownloadOpener,
    start: u64,
    mut bounds: Bounds,
) -> io::Result<u64>
where
    W: AsyncWrite + Unpin + Send + ?Sized,
{
    let step = bounds.step();
    let (tx, mut rx) = mpsc::channel::<io::Result<(Vec<u8>, usize)>>(2);
    let (free_tx, free_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let reader = tokio::task::spawn_blocking(move || {
        let (f, len) = match open() {
            Ok(x) => x,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        let mut pos = start;
        let mut allocated = 0;
        while pos < len {
            let want = ((len - pos) as usize).min(CHUNK);
            let mut buf = match free_rx.try_recv() {
                Ok(b) => b,
                Err(_) if allocated < POOL => {
                    allocated += 1;
                    vec![0u8; want.max(if len - start > CHUNK as u64 { CHUNK } else { 0 })]
                }
                Err(_) => match free_rx.recv() {
                    Ok(b) => b,
                    Err(_) => return,
                },
            };
            if buf.len() < want {
                buf.resize(want, 0);
            }
            match f.read_at(&mut buf[..want], pos) {
                Ok(0) => break, // the file shrank under us
                Ok(n) => {
                    pos += n as u64;
                    if tx.blocking_send(Ok((buf, n))).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
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
    drop(rx);
    let _ = reader.await;
    result.map(|_| sent)
}
