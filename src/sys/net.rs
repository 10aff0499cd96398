//! Socket system calls for the transports: `recv`, a gathering `sendmsg` and `shutdown`.
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
fn retry(mut call: impl FnMut() -> io::Result<isize>) -> io::Result<usize> {
    loop {
        match call() {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            other => return other.map(|n| n as usize),
        }
    }
}

/// Sends as much of the chunks, in order, as the socket takes; at most `IOV_MAX` of them.
pub fn send_vectored(fd: RawFd, chunks: &[&[u8]]) -> io::Result<usize> {
    const IOV_MAX: usize = 1024;
    let iov: Vec<libc::iovec> = chunks
        .iter()
        .take(IOV_MAX)
        .map(|c| libc::iovec {
            iov_base: c.as_ptr() as *mut libc::c_void,
            iov_len: c.len(),
        })
        .collect();
    // SAFETY: zeroed msghdr is valid (no name, no control data); iov points at live slices that
    // outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = iov.len() as _;
    retry(|| syscall!(sendmsg(fd, &msg, libc::MSG_NOSIGNAL)))
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
