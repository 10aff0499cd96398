//! A wake-up timer for the poller with the clock's resolution. The poller's own timeout is whole
//! milliseconds (epoll rounds it up), so a timer due in 0.2 ms would wait a full millisecond and
//! one due in 10.3 ms would wait 11. Registered with the poller, this fd wakes it at the
//! deadline instead.
//!
//! Linux: a `timerfd` on CLOCK_MONOTONIC, the clock of the loop's `time()`. Elsewhere there is
//! none for now (`Deadline::new` fails) and the loop keeps the poller's rounding.

use std::io;
#[cfg(any(target_os = "linux", target_os = "android"))]
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

#[cfg(any(target_os = "linux", target_os = "android"))]
pub struct Deadline {
    fd: OwnedFd,
}

#[cfg(any(target_os = "linux", target_os = "android"))]
impl Deadline {
    pub fn new() -> io::Result<Self> {
        let fd = syscall!(timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC
        ))?;
        // SAFETY: `timerfd_create` just returned this fd; nothing else owns it.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Fires once, `after` from now (replacing any earlier setting). Setting it also clears an
    /// expiry nobody read, so the poller (edge-triggered) reports the next one.
    pub fn set(&self, after: Duration) -> io::Result<()> {
        // A zero `it_value` would disarm the timer; the shortest wait is one nanosecond.
        let after = after.max(Duration::from_nanos(1));
        self.settime(libc::timespec {
            tv_sec: after.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
            tv_nsec: after.subsec_nanos() as libc::c_long,
        })
    }

    /// Stops a setting that has not fired yet.
    pub fn clear(&self) -> io::Result<()> {
        self.settime(libc::timespec { tv_sec: 0, tv_nsec: 0 })
    }

    fn settime(&self, value: libc::timespec) -> io::Result<()> {
        let spec = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: value,
        };
        syscall!(timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut())).map(|_| ())
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub struct Deadline;

#[cfg(not(any(target_os = "linux", target_os = "android")))]
impl Deadline {
    pub fn new() -> io::Result<Self> {
        Err(io::ErrorKind::Unsupported.into())
    }

    pub fn fd(&self) -> std::os::fd::RawFd {
        -1
    }

    pub fn set(&self, _after: Duration) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }

    pub fn clear(&self) -> io::Result<()> {
        Ok(())
    }
}
