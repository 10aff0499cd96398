//! The one place where internal errors become Python exceptions.
//!
//! OS errors become `OSError(errno, strerror)`, which CPython maps to the exact subclass
//! (`ConnectionResetError`, `FileNotFoundError`, ...) with `errno` and `strerror` set; PyO3's own
//! `From<io::Error>` leaves `errno` unset, and asyncio and user code read it.

use pyo3::exceptions::{PyKeyboardInterrupt, PyOSError, PyRuntimeError, PySystemExit};
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

/// Whether `err` leaves the loop rather than going to its exception handler: `SystemExit` and
/// `KeyboardInterrupt`, which the stdlib re-raises wherever it catches `BaseException`.
pub fn leaves_the_loop(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<PySystemExit>(py) || err.is_instance_of::<PyKeyboardInterrupt>(py)
}

/// Calls `report` with `err` as the stdlib's transports hand the errors they catch to
/// `_fatal_error`, from inside the `except` block that caught them:
///
/// - an error made here gets the traceback it would have had if the Python code running now had
///   raised and caught it: one entry for the current frame (which loggers print, and which keeps
///   that frame, and what it holds, alive with the error). An error that already has a
///   traceback, or one made with no Python frame running, is left as it is;
/// - while `report` runs, the error is the exception being handled (`sys.exc_info()`), which
///   `logging.exception` and `exc_info=True` in a handler or in `_fatal_error`'s log read.
#[cold]
#[inline(never)]
pub fn report_caught<R>(py: Python<'_>, err: PyErr, report: impl FnOnce(&Bound<'_, PyAny>) -> R) -> R {
    let err = if err.traceback(py).is_some() {
        err
    } else {
        ffi::with_traceback_here(py, err)
    };
    let exc = err.value(py);
    ffi::while_handling(exc, || report(exc))
}
