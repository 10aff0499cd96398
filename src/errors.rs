//! The one place where internal errors become Python exceptions.
//!
//! OS errors become `OSError(errno, strerror)`, which CPython maps to the exact subclass
//! (`ConnectionResetError`, `FileNotFoundError`, ...) with `errno` and `strerror` set; PyO3's own
//! `From<io::Error>` leaves `errno` unset, and asyncio and user code read it.

use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::PyErr;

use crate::ffi;

#[cold]
#[inline(never)]
pub fn os_error(err: std::io::Error) -> PyErr {
    match err.raw_os_error() {
        Some(errno) => {
            let msg = std::io::Error::from_raw_os_error(errno).to_string();
            // std appends " (os error N)"; Python's strerror is the bare C message.
            let msg = match msg.rfind(" (os error") {
                Some(i) => msg[..i].to_string(),
                None => msg,
            };
            PyOSError::new_err((errno, msg))
        }
        None => PyOSError::new_err(err.to_string()),
    }
}

#[cold]
#[inline(never)]
pub fn loop_closed() -> PyErr {
    PyRuntimeError::new_err("Event loop is closed")
}

#[cold]
#[inline(never)]
pub fn runtime(msg: &'static str) -> PyErr {
    PyRuntimeError::new_err(msg)
}

/// An error made here, given the traceback it would have had the Python code running now raised
/// and caught it: one entry for the current frame. The stdlib's transports catch the socket
/// errors they hand to `_fatal_error` in their own frames, so those errors carry a traceback
/// (which loggers print, and which keeps those frames, and what they hold, alive with the
/// error). An error that already has a traceback, or one made with no Python frame running, is
/// left as it is.
#[cold]
#[inline(never)]
pub fn caught_here(py: Python<'_>, err: PyErr) -> PyErr {
    if err.traceback(py).is_some() {
        return err;
    }
    ffi::with_traceback_here(py, err)
}
