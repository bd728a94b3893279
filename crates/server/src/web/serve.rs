//! The web service's connections: who may hold one, and for how long.
//!
//! Invariants kept here, for plain HTTP and HTTPS alike:
//! - at most `max_connections` connections at once, and `max_connections_per_address` from one
//!   address (a TLS handshake in progress counts): beyond them a connection is closed at once
//!   (plain HTTP gets a `503` first), so a flood holds a bounded number of descriptors and the
//!   FTP service, which has limits of its own, keeps its share;
//! - a request's headers arrive within `header_timeout` of the connection being ready for them
//!   (this is also how long an idle keep-alive connection stays open), a TLS handshake within
//!   the same time;
//! - a connection on which nothing moves in either direction for `stall_timeout` while a
//!   request is being read or answered is closed (a client that stops reading a download, or
//!   drips a body).

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// The client's socket address, for handlers (`ConnectInfo<Peer>`), plain or TLS.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// How many connections the web service holds, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub header_timeout: Duration,
    pub stall_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_address: usize,
}

/// Serves `router` on `listener` (plain HTTP, or HTTPS with `tls`) until `shutdown` resolves;
/// then stops accepting and lets open requests finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let conns = Arc::new(Conns::new(limits));
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut accept_errors = AcceptErrors::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, addr) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors and the like: wait a little, then go on.
                    accept_errors.report(&e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let slot = match conns.admit(addr.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                tracing::debug!(%addr, "web connection refused: {why}");
                if acceptor.is_none() {
                    refuse(&stream, why);
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _slot = slot;
            let stream = StallGuard::new(stream, limits.stall_timeout);
            match acceptor {
                None => serve_connection(stream, addr, router, limits, watcher).await,
                Some(acceptor) => {
                    let handshake = acceptor.accept(stream);
                    match tokio::time::timeout(limits.header_timeout, handshake).await {
                        Ok(Ok(tls)) => serve_connection(tls, addr, router, limits, watcher).await,
                        Ok(Err(e)) => tracing::debug!(%addr, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// One connection, HTTP/1.1 with keep-alive, until the client or a limit ends it.
async fn serve_connection<IO>(
    io: IO,
    addr: SocketAddr,
    router: Router,
    limits: ConnLimits,
    watcher: hyper_util::server::graceful::Watcher,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(Peer(addr)));
            tower_service::Service::call(&mut router.clone(), req)
        });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn).await {
        // Timeouts, resets and malformed requests: the client's doing, not the operator's.
        tracing::debug!(%addr, "web connection ended: {e}");
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Full,
    AddressFull,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::Full => "too many connections",
            Refusal::AddressFull => "too many connections from this address",
        })
    }
}

/// Tells a plain-HTTP client why it is refused, if the socket takes it at once; never waits.
fn refuse(stream: &TcpStream, why: Refusal) {
    let body = format!("{why}; try again later\n");
    let reply = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nConnection: close\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(reply.as_bytes());
}

/// The connections held, in all and per address.
struct Conns {
    limits: ConnLimits,
    held: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

impl Conns {
    fn new(limits: ConnLimits) -> Conns {
        Conns {
            limits,
            held: Mutex::new((0, HashMap::new())),
        }
    }

    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refusal> {
        let ip = logarchive_ftp::server::canonical_ip(ip);
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per) = &mut *held;
        if *total >= self.limits.max_connections {
            return Err(Refusal::Full);
        }
        let n = per.entry(ip).or_insert(0);
        if *n >= self.limits.max_connections_per_address {
            return Err(Refusal::AddressFull);
        }
        *n += 1;
        *total += 1;
        Ok(Slot {
            conns: Arc::clone(self),
            ip,
        })
    }
}

/// One admitted connection; gives its place back when dropped.
struct Slot {
    conns: Arc<Conns>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.conns.held.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per) = &mut *held;
        *total = total.saturating_sub(1);
        if let Some(n) = per.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per.remove(&self.ip);
            }
        }
    }
}

/// Accept errors (out of descriptors) are for the operator, but at most one line a minute.
#[derive(Default)]
struct AcceptErrors {
    last: Option<Instant>,
    since: u64,
}

impl AcceptErrors {
    fn report(&mut self, e: &std::io::Error) {
        self.since += 1;
        if self
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
        {
            tracing::warn!(
                "web: cannot accept connections ({e}; {} times since the last report)",
                self.since
            );
            self.last = Some(Instant::now());
            self.since = 0;
        }
    }
}

/// A stream whose reads and writes fail with `TimedOut` once one has waited `limit` without
/// any byte moving either way. Only waits count: an idle connection nobody reads or writes is
/// the header timeout's business.
struct StallGuard<S> {
    inner: S,
    limit: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    /// Whether `timer` runs (a read or write is waiting).
    armed: bool,
}

impl<S> StallGuard<S> {
    fn new(inner: S, limit: Duration) -> StallGuard<S> {
        StallGuard {
            inner,
            limit,
            timer: Box::pin(tokio::time::sleep(limit)),
            armed: false,
        }
    }

    /// After a poll of the inner stream: progress disarms the timer; a wait arms it (from the
    /// first wait since the last progress) and fails once it has run out.
    fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        match polled {
            Poll::Pending => {
                if !self.armed {
                    self.armed = true;
                    let deadline = tokio::time::Instant::now() + self.limit;
                    self.timer.as_mut().reset(deadline);
                }
                match self.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "nothing moved on the connection",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
            ready => {
                self.armed = false;
                ready
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StallGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.check(cx, polled)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallGuard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.check(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.check(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.check(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.check(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
