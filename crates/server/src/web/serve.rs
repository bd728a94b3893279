//! The web service's connections: who may hold one, and for how long.
//!
//! Invariants kept here, for plain HTTP and HTTPS alike:
//! - at most `max_connections` connections at once, and `max_connections_per_address` from one
//!   address (a TLS handshake in progress counts), so a flood holds a bounded number of
//!   descriptors and the FTP service, which has limits of its own, keeps its share. Beyond the
//!   per-address cap a connection is closed at once (plain HTTP gets a `503` first). When all
//!   places are taken, the connection that has waited longest without sending a request is
//!   closed to make room: a flood of silent or half-sent connections cannot keep out a client
//!   that sends its request as it connects;
//! - a request's headers arrive within `header_timeout` of the connection being ready for them
//!   (this is also how long an idle keep-alive connection stays open), a TLS handshake within
//!   the same time;
//! - a connection on which nothing moves in either direction for `stall_timeout` while a
//!   request is being read or answered is closed (a client that stops reading a download, or
//!   drips a body).

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

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
        let (slot, evicted) = match conns.admit(addr.ip()) {
            Ok(admitted) => admitted,
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
            let slot = Arc::new(slot);
            let served = async {
                match acceptor {
                    None => {
                        let stream = StallGuard::new(stream, limits.stall_timeout);
                        serve_connection(stream, addr, router, limits, watcher, &slot).await
                    }
                    Some(acceptor) => {
                        if !speaks_tls(&stream, limits.header_timeout).await {
                            tracing::debug!(%addr, "not a TLS handshake on the HTTPS port");
                            return;
                        }
                        let stream = StallGuard::new(stream, limits.stall_timeout);
                        let handshake = acceptor.accept(stream);
                        match tokio::time::timeout(limits.header_timeout, handshake).await {
                            Ok(Ok(tls)) => {
                                serve_connection(tls, addr, router, limits, watcher, &slot).await
                            }
                            Ok(Err(e)) => tracing::debug!(%addr, "TLS handshake failed: {e}"),
                            Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                        }
                    }
                }
            };
            tokio::select! {
                () = served => {}
                Ok(()) = evicted => tracing::debug!(
                    %addr,
                    "closed a connection that sent no request, to make room for a new one"
                ),
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
    slot: &Arc<Slot>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let slot = Arc::clone(slot);
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            slot.requested();
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

/// Whether the client opens with a TLS handshake (its first byte is a TLS handshake record).
/// A browser or script speaking plain HTTP to the HTTPS port is told so, in plain HTTP, instead
/// of getting a failed handshake it cannot show.
async fn speaks_tls(stream: &TcpStream, within: Duration) -> bool {
    let mut first = [0u8; 1];
    match tokio::time::timeout(within, stream.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] == 0x16 => true,
        Ok(Ok(1)) => {
            let body = "This port speaks HTTPS: use https:// in the address.\n";
            let reply = format!(
                "HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\
                 Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                let _ = stream.writable().await;
                stream.try_write(reply.as_bytes())
            })
            .await;
            false
        }
        _ => false,
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
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    total: usize,
    per: HashMap<IpAddr, usize>,
    /// Connections that have not sent a request yet, oldest first, with their eviction switch.
    waiting: BTreeMap<u64, (IpAddr, oneshot::Sender<()>)>,
    /// Connections closed to make room whose tasks have not ended yet (their places are
    /// already given back).
    evicted: HashSet<u64>,
    next: u64,
}

impl Held {
    fn release(&mut self, ip: IpAddr) {
        self.total = self.total.saturating_sub(1);
        if let Some(n) = self.per.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per.remove(&ip);
            }
        }
    }
}

impl Conns {
    fn new(limits: ConnLimits) -> Conns {
        Conns {
            limits,
            held: Mutex::new(Held::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for a connection from `ip`, and the switch that closes it to make room for
    /// another while it has sent no request.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<(Slot, oneshot::Receiver<()>), Refusal> {
        let ip = logarchive_ftp::server::canonical_ip(ip);
        let mut held = self.lock();
        if held.per.get(&ip).copied().unwrap_or(0) >= self.limits.max_connections_per_address {
            return Err(Refusal::AddressFull);
        }
        if held.total >= self.limits.max_connections {
            let Some((seq, (old_ip, evict))) = held.waiting.pop_first() else {
                return Err(Refusal::Full);
            };
            let _ = evict.send(());
            held.evicted.insert(seq);
            held.release(old_ip);
        }
        held.total += 1;
        *held.per.entry(ip).or_insert(0) += 1;
        let seq = held.next;
        held.next += 1;
        let (tx, rx) = oneshot::channel();
        held.waiting.insert(seq, (ip, tx));
        Ok((
            Slot {
                conns: Arc::clone(self),
                ip,
                seq,
                requested: AtomicBool::new(false),
            },
            rx,
        ))
    }
}

/// One admitted connection; gives its place back when dropped.
struct Slot {
    conns: Arc<Conns>,
    ip: IpAddr,
    seq: u64,
    requested: AtomicBool,
}

impl Slot {
    /// The connection sent a request: it is no longer the first to make room.
    fn requested(&self) {
        if !self.requested.swap(true, Ordering::Relaxed) {
            self.conns.lock().waiting.remove(&self.seq);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.conns.lock();
        if !held.evicted.remove(&self.seq) {
            held.waiting.remove(&self.seq);
            held.release(self.ip);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn conns(total: usize, per: usize) -> Arc<Conns> {
        Arc::new(Conns::new(ConnLimits {
            header_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(60),
            max_connections: total,
            max_connections_per_address: per,
        }))
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn a_full_server_makes_room_by_closing_the_oldest_connection_without_a_request() {
        let c = conns(3, 2);
        let (a, mut a_evicted) = c.admit(ip(1)).unwrap();
        let (b, mut b_evicted) = c.admit(ip(2)).unwrap();
        let (x, _) = c.admit(ip(3)).unwrap();
        x.requested();
        let (d, _) = c.admit(ip(1)).expect("room is made");
        // a, the oldest that sent nothing, was told to close; b was not.
        assert_eq!(a_evicted.try_recv(), Ok(()));
        assert!(b_evicted.try_recv().is_err());
        assert_eq!(c.lock().total, 3);
        // a's task ends later: its place is not given back twice.
        drop(a);
        assert_eq!(c.lock().total, 3);
        // Every place held by a connection that sent a request: the next is refused.
        b.requested();
        d.requested();
        assert_eq!(c.admit(ip(5)).err(), Some(Refusal::Full));
        drop(b);
        assert_eq!(c.lock().total, 2);
    }

    #[test]
    fn one_address_gets_its_share_only() {
        let c = conns(10, 2);
        let _one = c.admit(ip(1)).unwrap();
        let _two = c.admit(ip(1)).unwrap();
        assert_eq!(c.admit(ip(1)).err(), Some(Refusal::AddressFull));
        // The same address written as IPv4-mapped IPv6 is the same address.
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(c.admit(mapped).err(), Some(Refusal::AddressFull));
        assert!(c.admit(ip(2)).is_ok());
    }
}
