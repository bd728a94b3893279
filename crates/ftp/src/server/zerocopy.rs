//! Downloads without copying through user space: sendfile(2) from the store's file to the data
//! socket. The engine owns the data socket, so it calls this with the socket's own descriptor
//! when the connection is plain and the store is a local file.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

/// One sendfile(2) call: up to `len` bytes of `file` from `offset` to the non-blocking socket
/// `sock`. `WouldBlock` when the socket is full.
pub(crate) fn sendfile_once(
    sock: RawFd,
    file: &std::fs::File,
    offset: u64,
    len: usize,
) -> io::Result<usize> {
    let mut off = offset as libc::off_t;
    loop {
        // SAFETY: sendfile between two descriptors that stay open for the call; the kernel
        // advances our copy of the offset.
        let n = unsafe { libc::sendfile(sock, file.as_raw_fd(), &mut off, len) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}
