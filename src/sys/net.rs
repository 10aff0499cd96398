//! Socket system calls for the transports: `recv`, `recvfrom`, a gathering `sendmsg` and
//! `shutdown`.
//!
//! Sends pass `MSG_NOSIGNAL`, so a peer that went away is an `EPIPE` error rather than a
//! `SIGPIPE` (Python ignores the signal anyway, but a host embedding it may not). A call
//! interrupted by a signal is retried, as Python's socket methods do (PEP 475): an
//! edge-triggered transport that gave up on `EINTR` would never hear of that data again.

use std::io;
use std::os::fd::RawFd;

/// Reads at most `buf.len()` bytes.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    recv_raw(fd, buf.as_mut_ptr(), buf.len())
}

/// Reads at most `len` bytes into memory the caller vouches for (a Python buffer it holds).
pub fn recv_raw(fd: RawFd, ptr: *mut u8, len: usize) -> io::Result<usize> {
    retry(|| syscall!(recv(fd, ptr.cast(), len, 0)))
}

/// Runs a system call again while it fails with `EINTR`.
pub(super) fn retry(mut call: impl FnMut() -> io::Result<isize>) -> io::Result<usize> {
    loop {
        match call() {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            other => return other.map(|n| n as usize),
        }
    }
}

/// Sends as much of the chunks, in order, as the socket takes; at most `IOV_MAX` of them.
pub fn send_vectored(fd: RawFd, chunks: &[&[u8]]) -> io::Result<usize> {
    let iov = iovecs(chunks);
    // SAFETY: zeroed msghdr is valid (no name, no control data); iov points at live slices that
    // outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = iov.len() as _;
    retry(|| syscall!(sendmsg(fd, &msg, libc::MSG_NOSIGNAL)))
}

/// `chunks` as the `iovec`s of one gathering call: at most `IOV_MAX` of them, the rest left for
/// a later call. The vectors point into `chunks`, which must outlive their use.
pub(super) fn iovecs(chunks: &[&[u8]]) -> Vec<libc::iovec> {
    const IOV_MAX: usize = 1024;
    chunks
        .iter()
        .take(IOV_MAX)
        .map(|c| libc::iovec {
            iov_base: c.as_ptr() as *mut libc::c_void,
            iov_len: c.len(),
        })
        .collect()
}

/// Sends as much of `data` as the socket takes.
pub fn send(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    retry(|| syscall!(send(fd, data.as_ptr().cast(), data.len(), libc::MSG_NOSIGNAL)))
}

/// Closes the write side (`SHUT_WR`).
pub fn shutdown_write(fd: RawFd) -> io::Result<()> {
    retry(|| syscall!(shutdown(fd, libc::SHUT_WR)).map(|r| r as isize)).map(|_| ())
}

/// Whether an error only means "not now".
pub fn would_block(err: &io::Error) -> bool {
    err.raw_os_error() == Some(libc::EAGAIN)
}

/// A socket address as the kernel filled it in: the storage and how much of it is used.
pub struct SockAddr {
    pub storage: libc::sockaddr_storage,
    pub len: libc::socklen_t,
}

impl SockAddr {
    /// An IPv4 socket address.
    pub fn v4(ip: std::net::Ipv4Addr, port: u16) -> SockAddr {
        // SAFETY: an all-zero sockaddr_storage is valid, and it is large and aligned enough to
        // hold a sockaddr_in.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let sin = unsafe { &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_port = port.to_be();
        sin.sin_addr.s_addr = u32::from(ip).to_be();
        SockAddr {
            storage,
            len: std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        }
    }
}

/// Sends one datagram to `addr`.
pub fn send_to(fd: RawFd, data: &[u8], addr: &SockAddr) -> io::Result<usize> {
    retry(|| {
        syscall!(sendto(
            fd,
            data.as_ptr().cast(),
            data.len(),
            0,
            (&addr.storage as *const libc::sockaddr_storage).cast(),
            addr.len,
        ))
    })
}

/// Receives one datagram (at most `buf.len()` bytes of it) and the address it came from.
pub fn recv_from(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, SockAddr)> {
    // SAFETY: an all-zero sockaddr_storage is valid; the kernel writes at most `len` bytes of it.
    let mut addr = SockAddr {
        storage: unsafe { std::mem::zeroed() },
        len: std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
    };
    let n = retry(|| {
        addr.len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        syscall!(recvfrom(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            0,
            (&mut addr.storage as *mut libc::sockaddr_storage).cast(),
            &mut addr.len,
        ))
    })?;
    Ok((n, addr))
}

extern "C" {
    // In the C library on every Unix; the `libc` crate does not declare it.
    fn inet_ntop(
        af: libc::c_int,
        src: *const libc::c_void,
        dst: *mut libc::c_char,
        size: libc::socklen_t,
    ) -> *const libc::c_char;
}

/// The text form of an IPv4 (`in_addr`) or IPv6 (`in6_addr`) address at `src`, as the C library
/// writes it (which is what Python's `socket` module shows).
///
/// # Safety
/// `src` must point at an address of `family`.
pub unsafe fn ntop(family: libc::c_int, src: *const libc::c_void) -> io::Result<String> {
    let mut buf = [0 as libc::c_char; 64];
    // SAFETY: the caller vouches for `src`; `buf` is larger than INET6_ADDRSTRLEN.
    let out = unsafe { inet_ntop(family, src, buf.as_mut_ptr(), buf.len() as libc::socklen_t) };
    if out.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: on success inet_ntop wrote a NUL-terminated string into `buf`.
    Ok(unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned())
}
