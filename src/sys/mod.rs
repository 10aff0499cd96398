//! OS calls that std does not expose. This module and `ffi/` are the only places with `unsafe`.
//!
//! Everything here is Linux/POSIX for now; a macOS port adds its differences behind `cfg` in this
//! module, never in the loop itself.

macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: each caller passes arguments valid for the named libc function.
        let res = unsafe { libc::$fn($($arg, )*) };
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};

pub mod net;
pub mod pipe;
pub mod timer;

/// What a stream transport's fd is registered for while it reads: readable, and, where the
/// poller reports it, TCP urgent data (`EPOLLPRI`), whose mark stops a read short of what is
/// waiting, so that a short read there is not taken for the end of what arrived.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub const STREAM_READ: mio::Interest = mio::Interest::READABLE.add(mio::Interest::PRIORITY);
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub const STREAM_READ: mio::Interest = mio::Interest::READABLE;

/// Seconds on CLOCK_MONOTONIC, converted exactly as `time.monotonic()` converts them, so the loop's
/// `time()` and `time.monotonic()` are one clock.
#[inline]
pub fn monotonic() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let ns = ts.tv_sec * 1_000_000_000 + ts.tv_nsec;
    if ns % 1_000_000_000 == 0 {
        (ns / 1_000_000_000) as f64
    } else {
        ns as f64 / 1e9
    }
}

/// The resolution of the clock behind `monotonic()`.
pub fn monotonic_resolution() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    match syscall!(clock_getres(libc::CLOCK_MONOTONIC, &mut ts)) {
        Ok(_) => ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9,
        Err(_) => 1e-9,
    }
}

static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

extern "C" fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// Counts the `fork()`s this process descends from, so a loop notices it is in a child without a
/// `getpid()` system call on every turn. `pthread_atfork` sees every fork, not only `os.fork()`.
pub fn install_fork_hook() -> std::io::Result<()> {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    let mut result = Ok(());
    INSTALLED.call_once(|| {
        // SAFETY: the child handler is an `extern "C"` fn that only does an atomic add, which is
        // async-signal-safe as the post-fork child requires; no prepare/parent handlers.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
        if rc != 0 {
            result = Err(std::io::Error::from_raw_os_error(rc));
        }
    });
    result
}

#[inline]
pub fn fork_generation() -> u64 {
    FORK_GENERATION.load(Ordering::Relaxed)
}

/// `epoll_ctl` ADD (or MOD) of `fd`, level-triggered: mio only registers edge-triggered, and the
/// loop's `add_reader`/`add_writer` are level-triggered; the event carries `data` as mio's token.
pub fn epoll_ctl_level(epfd: RawFd, modify: bool, fd: RawFd, read: bool, write: bool, data: u64) -> io::Result<()> {
    let mut events = 0;
    if read {
        events |= libc::EPOLLIN | libc::EPOLLRDHUP;
    }
    if write {
        events |= libc::EPOLLOUT;
    }
    let mut event = libc::epoll_event {
        events: events as u32,
        u64: data,
    };
    let op = if modify {
        libc::EPOLL_CTL_MOD
    } else {
        libc::EPOLL_CTL_ADD
    };
    syscall!(epoll_ctl(epfd, op, fd, &mut event)).map(|_| ())
}
