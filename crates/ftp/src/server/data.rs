//! Data connections: passive listeners (PASV, EPSV), the accept that takes only the client's own
//! address (a stranger connecting first to a passive port gets nothing), TLS on the data
//! connection (PROT P) that ends with close_notify and sends no session tickets, and a clean end.

use super::passive::bind_exclusive;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// A passive listener waiting for the client's data connection.
#[derive(Debug)]
pub(crate) struct Passive {
    listener: TcpListener,
    pub port: u16,
}

impl Passive {
    /// Listens on a free port of `ports` at `ip` (the control connection's local address).
    pub fn open(ip: IpAddr, ports: RangeInclusive<u16>) -> io::Result<Passive> {
        let (listener, port) = bind_exclusive(ip, ports)?;
        Ok(Passive { listener, port })
    }

    /// The client's data connection: from `peer`'s address unless `any_address`; others are
    /// closed and the wait goes on. At most `timeout`.
    pub async fn accept(
        &self,
        peer: IpAddr,
        any_address: bool,
        timeout: Duration,
    ) -> io::Result<TcpStream> {
        let peer = crate::server::canonical_ip(peer);
        let wait = async {
            loop {
                let (s, from) = self.listener.accept().await?;
                if any_address || crate::server::canonical_ip(from.ip()) == peer {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                tracing::debug!(%from, "data connection from another address than the client's: closed");
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no data connection came"))?
    }
}

/// The address to announce in a 227 reply: `passive_host` or the control connection's local
/// IPv4 address.
pub(crate) fn pasv_reply(ip: std::net::Ipv4Addr, port: u16) -> String {
    let o = ip.octets();
    format!(
        "Entering Passive Mode ({},{},{},{},{},{})",
        o[0],
        o[1],
        o[2],
        o[3],
        port >> 8,
        port & 0xff
    )
}

/// An open data connection, plain or TLS.
pub(crate) enum DataStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl DataStream {
    /// Wraps `tcp` in TLS when `tls` is given (PROT P): the handshake is bounded by `timeout`.
    pub async fn open(
        tcp: TcpStream,
        tls: Option<&Arc<rustls::ServerConfig>>,
        timeout: Duration,
    ) -> io::Result<DataStream> {
        match tls {
            None => Ok(DataStream::Plain(tcp)),
            Some(cfg) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(cfg));
                match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => Ok(DataStream::Tls(Box::new(s))),
                    Ok(Err(e)) => Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        format!("TLS on the data connection: {e}"),
                    )),
                    Err(_) => Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "TLS handshake on the data connection timed out",
                    )),
                }
            }
        }
    }

    /// The plain socket (sendfile writes to it directly), if not TLS.
    pub fn plain(&self) -> Option<&TcpStream> {
        match self {
            DataStream::Plain(s) => Some(s),
            DataStream::Tls(_) => None,
        }
    }

    /// Ends the connection in order: TLS close_notify, then our half of TCP. Bounded.
    pub async fn finish(mut self, timeout: Duration) -> io::Result<()> {
        match tokio::time::timeout(timeout, self.shutdown()).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "closing the data connection timed out",
            )),
        }
    }
}

impl AsyncRead for DataStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            DataStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            DataStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for DataStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            DataStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            DataStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            DataStream::Plain(s) => Pin::new(s).poll_flush(cx),
            DataStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            DataStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            DataStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The TLS configuration for data connections: the control connection's (so a client may resume
/// its session), but without TLS 1.3 session tickets, which some clients (rclone, Go's TLS)
/// read as data after the transfer and then report it cut.
pub(crate) fn data_tls_config(control: &Arc<rustls::ServerConfig>) -> Arc<rustls::ServerConfig> {
    let mut c = (**control).clone();
    c.send_tls13_tickets = 0;
    Arc::new(c)
}

/// Whether `addr` is an IPv4 address (PASV can only announce those).
pub(crate) fn ipv4_of(addr: SocketAddr) -> Option<std::net::Ipv4Addr> {
    match crate::server::canonical_ip(addr.ip()) {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => None,
    }
}
