//! Passive ports without a race: bind *and* listen happen before the socket is used, so the
//! kernel guarantees the port is ours alone (a second listener on it is refused, and we try the
//! next port). Binding with SO_REUSEADDR and listening later (as libunftp, our former engine,
//! did) lets two sessions bind one port; the one whose listen() then fails loses its session.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use tokio::net::TcpListener;

pub(crate) fn bind_exclusive(
    ip: IpAddr,
    ports: RangeInclusive<u16>,
) -> io::Result<(TcpListener, u16)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let (lo, hi) = (*ports.start() as u32, *ports.end() as u32);
    if lo == 0 || hi < lo {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "empty passive port range",
        ));
    }
    let span = hi - lo + 1;
    let offset = rand::random::<u32>() % span;
    let domain = if ip.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let mut last = io::Error::new(io::ErrorKind::AddrInUse, "no free passive port");
    // Probe from a random start, at most 64 ports (the range is normally far from full).
    for i in 0..span.min(64) {
        let port = (lo + (offset + i) % span) as u16;
        // Non-blocking and close-on-exec from the start (one syscall, not three).
        let s = Socket::new(domain, Type::STREAM.nonblocking(), Some(Protocol::TCP))?;
        // Reuse ports whose old data connections sit in TIME_WAIT.
        s.set_reuse_address(true)?;
        if let Err(e) = s.bind(&SocketAddr::new(ip, port).into()) {
            last = e;
            continue;
        }
        if let Err(e) = s.listen(16) {
            last = e;
            continue;
        }
        return Ok((TcpListener::from_std(s.into())?, port));
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn two_binds_never_share_a_port() {
        // A range of one port: the second bind must fail instead of returning the same port.
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let (a, p) = bind_exclusive(ip, port..=port).unwrap();
        assert_eq!(p, port);
        assert!(bind_exclusive(ip, port..=port).is_err());
        assert_eq!(a.local_addr().unwrap().port(), port);
    }
}
