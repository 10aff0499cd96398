//! Pipe (and character device) I/O for the pipe transports: plain `read` and `write`, retried
//! on `EINTR` as Python's `os.read`/`os.write` are (PEP 475).

use std::io;
use std::os::fd::RawFd;

use super::net::{iovecs, retry};

/// Reads at most `buf.len()` bytes.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    retry(|| syscall!(read(fd, buf.as_mut_ptr().cast(), buf.len())))
}

/// Writes as much of `data` as the pipe takes.
pub fn write(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    retry(|| syscall!(write(fd, data.as_ptr().cast(), data.len())))
}

/// Writes as much of `chunks`, in order, as the pipe takes (one `writev` of at most `IOV_MAX`
/// of them).
pub fn write_vectored(fd: RawFd, chunks: &[&[u8]]) -> io::Result<usize> {
    let iov = iovecs(chunks);
    // SAFETY: iov points at live slices that outlive the call; writev only reads them.
    retry(|| syscall!(writev(fd, iov.as_ptr(), iov.len() as libc::c_int)))
}
