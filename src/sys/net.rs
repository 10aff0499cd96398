//! Socket system calls for the transports: `recv`, `recvfrom`, a gathering `sendmsg`,
//! `shutdown`, and how much a read would get (`FIONREAD`).
//!
//! Sends pass `MSG_NOSIGNAL`, so a peer that went away is an `EPIPE` error rather than a
//! `SIGPIPE` (Python ignores the signal anyway, but a host embedding it may not). A call
//! interrupted by a signal is retried, as Python's socket methods do (PEP 475): an
//! edge-triggered transport that gave up on `EINTR` would never hear of that data again.

use std::io;
use std::os::fd::RawFd;

/// Reads at most `buf.len()` bytes.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // `recv` writes through the pointer only: `u8` and `MaybeUninit<u8>` share a layout, and
    // what it writes is initialised.
    retry(|| syscall!(recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0)))
}

/// Whether a read of `fd` would not block now: bytes, an EOF or an error wait. A one-byte
/// `recv` with `MSG_PEEK | MSG_DONTWAIT`, which takes nothing.
pub fn has_input(fd: RawFd) -> bool {
    let mut byte = 0u8;
    let flags = libc::MSG_PEEK | libc::MSG_DONTWAIT;
    match retry(|| syscall!(recv(fd, (&mut byte as *mut u8).cast(), 1, flags))) {
        Ok(_) => true,
        Err(e) => !would_block(&e),
    }
}

/// How many bytes a read of `fd` would get now (`FIONREAD`): None when there are none, or the
/// kernel will not say (EOF and errors are for the read to find).
pub fn readable_now(fd: RawFd) -> Option<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: `FIONREAD` writes one `c_int` through the pointer, which points at `n`.
    let done = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n as *mut libc::c_int) };
    (done == 0 && n > 0).then_some(n as usize)
}

/// Reads at most `buf.len()` bytes into memory not initialised yet; the first `n` bytes of it
/// are initialised when it returns `Ok(n)`.
pub fn recv_uninit(fd: RawFd, buf: &mut [std::mem::MaybeUninit<u8>]) -> io::Result<usize> {
    retry(|| syscall!(recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0)))
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
    /// Room for any address, for the kernel to fill in (`len` is the whole storage).
    pub fn empty() -> SockAddr {
        SockAddr {
            // SAFETY: an all-zero sockaddr_storage is valid.
            storage: unsafe { std::mem::zeroed() },
            len: std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        }
    }

    /// The address for a system call that reads one (`connect`, `sendto`).
    fn as_ptr(&self) -> *const libc::sockaddr {
        (&self.storage as *const libc::sockaddr_storage).cast()
    }

    /// The storage for a system call that fills it in (`accept4`, `getsockname`, `recvfrom`).
    fn as_mut_ptr(&mut self) -> *mut libc::sockaddr {
        (&mut self.storage as *mut libc::sockaddr_storage).cast()
    }

    /// An IPv4 socket address.
    pub fn v4(ip: std::net::Ipv4Addr, port: u16) -> SockAddr {
        let mut addr = SockAddr::empty();
        // SAFETY: sockaddr_storage is large and aligned enough to hold a sockaddr_in, and an
        // all-zero one is valid.
        let sin = unsafe { &mut *(&mut addr.storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_port = port.to_be();
        sin.sin_addr.s_addr = u32::from(ip).to_be();
        addr.len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        addr
    }
}

/// Sends one datagram to `addr`.
pub fn send_to(fd: RawFd, data: &[u8], addr: &SockAddr) -> io::Result<usize> {
    retry(|| syscall!(sendto(fd, data.as_ptr().cast(), data.len(), 0, addr.as_ptr(), addr.len,)))
}

/// The address `fd` is bound to (`getsockname`), or with `peer` the address of its peer
/// (`getpeername`).
pub fn socket_addr(fd: RawFd, peer: bool) -> io::Result<SockAddr> {
    let mut addr = SockAddr::empty();
    let storage = addr.as_mut_ptr();
    if peer {
        syscall!(getpeername(fd, storage, &mut addr.len))?;
    } else {
        syscall!(getsockname(fd, storage, &mut addr.len))?;
    }
    Ok(addr)
}

/// Accepts a connection from the listening `fd`: the new socket, non-blocking and
/// close-on-exec, and its peer's address.
pub fn accept(fd: RawFd) -> io::Result<(RawFd, SockAddr)> {
    let mut addr = SockAddr::empty();
    let conn = syscall!(accept4(
        fd,
        addr.as_mut_ptr(),
        &mut addr.len,
        libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
    ))?;
    Ok((conn, addr))
}

/// Starts connecting the non-blocking socket `fd` to `addr` (`EINPROGRESS` when under way).
pub fn connect(fd: RawFd, addr: &SockAddr) -> io::Result<()> {
    syscall!(connect(fd, addr.as_ptr(), addr.len)).map(|_| ())
}

/// The pending error of a socket (`SO_ERROR`, which reading clears): 0 when there is none, as
/// when a connect in progress succeeded.
pub fn take_error(fd: RawFd) -> io::Result<libc::c_int> {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes, one `c_int`, into `err`.
    syscall!(getsockopt(
        fd,
        libc::SOL_SOCKET,
        libc::SO_ERROR,
        (&mut err as *mut libc::c_int).cast(),
        &mut len,
    ))?;
    Ok(err)
}

/// Turns off Nagle's algorithm on a TCP socket (`TCP_NODELAY`).
pub fn set_nodelay(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: the option value is one `c_int`, which `on` is, for the duration of the call.
    syscall!(setsockopt(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_NODELAY,
        (&on as *const libc::c_int).cast(),
        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
    ))
    .map(|_| ())
}

/// Receives one datagram (at most `buf.len()` bytes of it) and the address it came from.
pub fn recv_from(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, SockAddr)> {
    let mut addr = SockAddr::empty();
    let n = retry(|| {
        addr.len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        syscall!(recvfrom(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            0,
            addr.as_mut_ptr(),
            &mut addr.len,
        ))
    })?;
    Ok((n, addr))
}

/// What a socket address holds, read from its storage by family.
pub enum AddrView<'a> {
    /// No address at all (an unbound Unix sender).
    Empty,
    V4 {
        ip: std::net::Ipv4Addr,
        port: u16,
    },
    V6 {
        ip: std::net::Ipv6Addr,
        port: u16,
        flowinfo: u32,
        scope_id: u32,
    },
    /// The used part of `sun_path` (it may or may not end with NUL bytes).
    Unix(&'a [u8]),
    /// Any other family: the generic header's `sa_data`.
    Other {
        family: libc::c_int,
        data: &'a [u8],
    },
}

impl SockAddr {
    /// The address by family (see `AddrView`).
    pub fn view(&self) -> AddrView<'_> {
        if self.len == 0 {
            return AddrView::Empty;
        }
        let ptr = &self.storage as *const libc::sockaddr_storage;
        match libc::c_int::from(self.storage.ss_family) {
            libc::AF_INET => {
                // SAFETY: the kernel wrote a sockaddr_in for this family (or `v4` did); storage
                // is large and aligned enough for every sockaddr type.
                let sin = unsafe { &*ptr.cast::<libc::sockaddr_in>() };
                AddrView::V4 {
                    ip: std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                    port: u16::from_be(sin.sin_port),
                }
            }
            libc::AF_INET6 => {
                // SAFETY: as above, for sockaddr_in6.
                let sin6 = unsafe { &*ptr.cast::<libc::sockaddr_in6>() };
                AddrView::V6 {
                    ip: std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                    port: u16::from_be(sin6.sin6_port),
                    flowinfo: u32::from_be(sin6.sin6_flowinfo),
                    scope_id: sin6.sin6_scope_id,
                }
            }
            libc::AF_UNIX => {
                // SAFETY: as above, for sockaddr_un.
                let sun = unsafe { &*ptr.cast::<libc::sockaddr_un>() };
                let offset = std::mem::offset_of!(libc::sockaddr_un, sun_path);
                let used = (self.len as usize).saturating_sub(offset).min(sun.sun_path.len());
                AddrView::Unix(as_bytes(&sun.sun_path[..used]))
            }
            family => {
                // SAFETY: every sockaddr starts with the generic header.
                let generic = unsafe { &*ptr.cast::<libc::sockaddr>() };
                AddrView::Other {
                    family,
                    data: as_bytes(&generic.sa_data),
                }
            }
        }
    }
}

/// C characters as bytes.
fn as_bytes(chars: &[libc::c_char]) -> &[u8] {
    // SAFETY: c_char (i8 or u8) has the size and alignment of u8, and every bit pattern is valid.
    unsafe { std::slice::from_raw_parts(chars.as_ptr().cast::<u8>(), chars.len()) }
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

/// The text form of an IPv6 address as the C library writes it (which is what Python's `socket`
/// module shows; it differs from Rust's for IPv4-compatible addresses such as `::1.2.3.4`).
pub fn ipv6_text(ip: &std::net::Ipv6Addr) -> io::Result<String> {
    let addr = libc::in6_addr { s6_addr: ip.octets() };
    let mut buf = [0 as libc::c_char; 64];
    // SAFETY: `addr` is an in6_addr; `buf` is larger than INET6_ADDRSTRLEN.
    let out = unsafe {
        inet_ntop(
            libc::AF_INET6,
            (&addr as *const libc::in6_addr).cast(),
            buf.as_mut_ptr(),
            buf.len() as libc::socklen_t,
        )
    };
    if out.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: on success inet_ntop wrote a NUL-terminated string into `buf`.
    Ok(unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned())
}
