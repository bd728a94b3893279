//! Downloads without copying through user space: sendfile(2) from the file to the data socket.
//!
//! libunftp hands the storage back-end only a boxed writer, so the data socket's descriptor is
//! found through what we know of it: our passive binder recorded the port the data connection was
//! accepted on, and the peer must be the control connection's address. Only an unambiguous match
//! is used (otherwise the ordinary copy path runs), and only when the server has no TLS at all, so
//! plain bytes can never be sent into a TLS stream.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

fn sock_addr(fd: RawFd, peer: bool) -> Option<std::net::SocketAddr> {
    // SAFETY: get{sock,peer}name into a zeroed sockaddr_storage of the size we pass.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let p = &mut storage as *mut _ as *mut libc::sockaddr;
    let rc = unsafe {
        if peer {
            libc::getpeername(fd, p, &mut len)
        } else {
            libc::getsockname(fd, p, &mut len)
        }
    };
    if rc != 0 {
        return None;
    }
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in for AF_INET.
            let a = unsafe { *(p as *const libc::sockaddr_in) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some((ip, u16::from_be(a.sin_port)).into())
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 for AF_INET6.
            let a = unsafe { *(p as *const libc::sockaddr_in6) };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some((ip, u16::from_be(a.sin6_port)).into())
        }
        _ => None,
    }
}

/// A duplicate of the one connected socket in this process with local port `port` and peer `peer`.
pub(crate) fn find_data_socket(port: u16, peer: IpAddr) -> Option<OwnedFd> {
    let peer = crate::users::canonical_ip(peer);
    let mut found = None;
    for entry in std::fs::read_dir("/proc/self/fd").ok()? {
        let Ok(entry) = entry else { continue };
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
        else {
            continue;
        };
        let Some(local) = sock_addr(fd, false) else {
            continue;
        };
        if local.port() != port {
            continue;
        }
        let Some(remote) = sock_addr(fd, true) else {
            continue;
        };
        if crate::users::canonical_ip(remote.ip()) != peer {
            continue;
        }
        if found.is_some() {
            return None; // two candidates: do not guess
        }
        found = Some(fd);
    }
    // SAFETY: dup of a descriptor that is open in this process; the copy is ours to close.
    let dup = unsafe { libc::fcntl(found?, libc::F_DUPFD_CLOEXEC, 0) };
    (dup >= 0).then(|| unsafe { OwnedFd::from_raw_fd(dup) })
}

/// Sends `file[start..len]` to the non-blocking socket `sock` (blocking call: run it on the
/// blocking pool). `before_chunk(n)` throttles and counts, and returns false to abandon.
pub(crate) fn sendfile_all(
    sock: &OwnedFd,
    file: &std::fs::File,
    start: u64,
    len: u64,
    step: usize,
    stall: Duration,
    mut before_chunk: impl FnMut(usize) -> bool,
) -> io::Result<u64> {
    let mut off = start as libc::off_t;
    let end = len as libc::off_t;
    let mut sent = 0u64;
    while off < end {
        let want = ((end - off) as usize).min(step);
        if !before_chunk(want) {
            return Err(io::Error::other("server is shutting down"));
        }
        // SAFETY: sendfile between two descriptors we hold; `off` is advanced by the kernel.
        let n = unsafe { libc::sendfile(sock.as_raw_fd(), file.as_raw_fd(), &mut off, want) };
        if n > 0 {
            sent += n as u64;
            continue;
        }
        if n == 0 {
            break; // the file shrank under us
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EAGAIN) => {
                let mut pfd = libc::pollfd {
                    fd: sock.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: poll on one descriptor we hold.
                let r = unsafe {
                    libc::poll(&mut pfd, 1, stall.as_millis().min(i32::MAX as u128) as i32)
                };
                if r == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "data connection stalled",
                    ));
                }
                if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                    return Err(io::Error::last_os_error());
                }
            }
            _ => return Err(e),
        }
    }
    Ok(sent)
}
