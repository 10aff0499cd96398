//! The waiting half of `sock_recv` in Rust, for plain `socket.socket` objects (the Python side
//! keeps the general path for socket-likes): try `recv` now; if the socket has nothing, register
//! a reader whose callback is a `RecvWait` and return a future it completes. The reader goes on
//! completion and on cancellation, as the stdlib's does; after data, its registration stays in
//! the poller for the socket's next wait (see `io.rs`), after EOF or an error it goes too.

use std::os::fd::RawFd;

use pyo3::exceptions::PyValueError;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use pyo3::PyTraverseError;

use super::LoopCore;
use crate::ffi::intern;
use crate::transport::recv_bytes;
use crate::{errors, sys};

/// Reads up to `n` bytes now: `Some(bytes)`, or `None` when the socket has nothing yet.
fn recv_now<'py>(py: Python<'py>, fd: RawFd, n: usize) -> PyResult<Option<Bound<'py, PyBytes>>> {
    match recv_bytes(py, fd, n)? {
        Ok((_, data)) => Ok(Some(data)),
        Err(e) if sys::net::would_block(&e) => Ok(None),
        Err(e) => Err(errors::os_error(e)),
    }
}

/// The reader callback of a waiting `sock_recv`.
#[pyclass(frozen, module = "ferroloop._core", name = "RecvWait")]
pub struct RecvWait {
    event_loop: Py<LoopCore>,
    fut: Py<PyAny>,
    fd: RawFd,
    n: usize,
}

impl RecvWait {
    fn unregister(slf: &Bound<'_, Self>) -> PyResult<()> {
        let me = slf.get();
        LoopCore::fd_remove_if(me.event_loop.bind(slf.py()), me.fd, slf.as_any())
    }

    /// Done with data: the reader goes, the registration stays for the next wait.
    fn park(slf: &Bound<'_, Self>) -> PyResult<()> {
        let me = slf.get();
        LoopCore::fd_park_if(me.event_loop.bind(slf.py()), me.fd, slf.as_any())
    }
}

#[pymethods]
impl RecvWait {
    fn __call__(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let fut = me.fut.bind(py);
        if fut.call_method0(intern!(py, "done"))?.is_truthy()? {
            return Ok(());
        }
        match recv_now(py, me.fd, me.n) {
            Ok(None) => Ok(()),
            Ok(Some(data)) => {
                if data.as_bytes().is_empty() {
                    Self::unregister(slf)?;
                } else {
                    Self::park(slf)?;
                }
                fut.call_method1(intern!(py, "set_result"), (data,))?;
                Ok(())
            }
            Err(e) => {
                Self::unregister(slf)?;
                fut.call_method1(intern!(py, "set_exception"), (e.value(py),))?;
                Ok(())
            }
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.event_loop)?;
        visit.call(&self.fut)
    }
}

impl LoopCore {
    /// `sock_recv` on a plain socket: the bytes if some are there now, else a future.
    pub(crate) fn sock_recv(
        slf: &Bound<'_, Self>,
        sock: &Bound<'_, PyAny>,
        fd: RawFd,
        n: isize,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let n = usize::try_from(n).map_err(|_| PyValueError::new_err("negative buffersize in recv"))?;
        if n == 0 {
            // As socket.recv(0): empty at once, without a system call.
            return Ok(PyBytes::new(py, b"").into_any().unbind());
        }
        let data = recv_now(py, fd, n).inspect_err(|_| slf.get().fd_forget_parked(py, fd))?;
        if let Some(data) = data {
            if data.as_bytes().is_empty() {
                slf.get().fd_forget_parked(py, fd);
            }
            return Ok(data.into_any().unbind());
        }
        slf.call_method1(intern!(py, "_ensure_fd_no_transport"), (fd,))?;
        let fut = Self::new_future(slf)?;
        let wait = Bound::new(
            py,
            RecvWait {
                event_loop: slf.clone().unbind(),
                fut: fut.clone().unbind(),
                fd,
                n,
            },
        )?;
        Self::fd_sock_reader(slf, fd, wait.clone().into_any(), sock)?;
        Ok(fut.unbind())
    }

    /// The `sock_recv` awaiting `fut` on `fd` was cancelled (or closed): its reader goes, as the
    /// stdlib's done callback removes it. Nothing happens when the wait already let go.
    pub(crate) fn sock_recv_abandon(slf: &Bound<'_, Self>, fd: RawFd, fut: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let reader = {
            let st = slf.get().state(py);
            st.io
                .get(fd)
                .and_then(|e| e.reader.as_ref())
                .and_then(|h| h.get().parts(py))
        };
        let Some(parts) = reader else {
            return Ok(());
        };
        let callback = parts.callback.bind(py);
        match callback.cast::<RecvWait>() {
            Ok(wait) if wait.get().fut.is(fut) => Self::fd_remove_if(slf, fd, callback),
            _ => Ok(()),
        }
    }
}
