//! OS calls that std does not expose. This module and `ffi/` are the only places with `unsafe`.
//!
//! Everything here is Linux/POSIX for now; a macOS port adds its differences behind `cfg` in this
//! module, never in the loop itself.

#[allow(unused_macros)]
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

/// Seconds on CLOCK_MONOTONIC, converted exactly as `time.monotonic()` converts them, so the loop's
/// `time()` and `time.monotonic()` are one clock.
#[inline]
pub fn monotonic() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let ns = ts.tv_sec as i64 * 1_000_000_000 + ts.tv_nsec as i64;
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

/// The id of the calling process; used to notice that a loop is being used after `fork()`.
#[inline]
pub fn getpid() -> u32 {
    std::process::id()
}
