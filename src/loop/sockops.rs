//! The waiting half of `sock_recv` in Rust, for plain `socket.socket` objects (the Python side
//! keeps the general path for socket-likes): try `recv` now; if the socket has nothing, register
//! a reader whose callback is a `RecvWait` and return a future it completes. The reader goes on
//! completion and on cancellation, as the stdlib's does; after data, its registration stays in
//! the poller for the socket's next wait (see `io.rs`), after EOF or an error it goes too.
//!
//! And the waiting half of `sock_connect`, for plain sockets too: once `connect` is in
//! progress, a writer whose callback is a `ConnectWait` reads the socket's pending error when
//! it turns writable and completes the future with it, as the stdlib's `_sock_connect_cb`
//! does; the writer goes then, or when the caller is cancelled.

use std::os::fd::RawFd;

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};
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
        LoopCore::fd_remove_if(me.event_loop.bind(slf.py()), me.fd, slf.as_any(), false)
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

/// The writer callback of a waiting `sock_connect`.
#[pyclass(frozen, module = "ferroloop._core", name = "ConnectWait")]
pub struct ConnectWait {
    event_loop: Py<LoopCore>,
    fut: Py<PyAny>,
    fd: RawFd,
    address: Py<PyAny>,
}

#[pymethods]
impl ConnectWait {
    fn __call__(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let fut = me.fut.bind(py);
        let event_loop = me.event_loop.bind(py);
        if fut.call_method0(intern!(py, "done"))?.is_truthy()? {
            return LoopCore::fd_remove_if(event_loop, me.fd, slf.as_any(), true);
        }
        let outcome = sys::net::take_error(me.fd);
        LoopCore::fd_remove_if(event_loop, me.fd, slf.as_any(), true)?;
        match outcome {
            Ok(0) => {
                fut.call_method1(intern!(py, "set_result"), (py.None(),))?;
            }
            Ok(err) => {
                // OSError(errno, ...) is made as the matching subclass (ConnectionRefusedError...).
                let message = format!("Connect call failed {}", me.address.bind(py).str()?);
                let exc = PyOSError::new_err((err, message)).into_value(py);
                fut.call_method1(intern!(py, "set_exception"), (exc,))?;
            }
            Err(e) => {
                fut.call_method1(intern!(py, "set_exception"), (errors::os_error(e).into_value(py),))?;
            }
        }
        Ok(())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.event_loop)?;
        visit.call(&self.fut)?;
        visit.call(&self.address)
    }
}

impl LoopCore {
    /// One `accept` on the listening `fd` of a server: `(fd, address)` of a connection whose
    /// socket is already non-blocking, or `None` when there is none now (what the stdlib's
    /// `_accept_connection` stops at: `EAGAIN`, `EINTR`, `ECONNABORTED`), without the exception
    /// Python's `accept` raises for that. Other errors are raised.
    pub(crate) fn accept_now(py: Python<'_>, fd: RawFd) -> PyResult<Option<(RawFd, Bound<'_, PyAny>)>> {
        match sys::net::accept(fd) {
            Ok((conn, addr)) => match crate::transport::address_to_python(py, &addr) {
                Ok(address) => Ok(Some((conn, address))),
                Err(e) => {
                    // SAFETY: `conn` was just accepted and nothing else owns it.
                    unsafe { libc::close(conn) };
                    Err(e)
                }
            },
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EINTR | libc::ECONNABORTED)) => Ok(None),
            Err(e) => Err(errors::os_error(e)),
        }
    }

    /// `connect` of the non-blocking socket `fd` of `family` to `address`, when that is an IPv4
    /// `(host, port)` the socket module would take as it is: `True` when connected, `False`
    /// when under way (`EINPROGRESS`, or `EINTR`, after which it goes on), `None` for any other
    /// address, which the caller gives to the socket's own `connect`. Errors are raised.
    pub(crate) fn connect_now(fd: RawFd, family: libc::c_int, address: &Bound<'_, PyAny>) -> PyResult<Option<bool>> {
        let Some(addr) = crate::transport::address_from_python(family, address) else {
            return Ok(None);
        };
        match sys::net::connect(fd, &addr) {
            Ok(()) => Ok(Some(true)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINPROGRESS | libc::EINTR)) => Ok(Some(false)),
            Err(e) => Err(errors::os_error(e)),
        }
    }

    /// `sock_connect` on a plain socket whose `connect` is in progress: a future the socket's
    /// writer completes.
    pub(crate) fn sock_connect_wait(slf: &Bound<'_, Self>, fd: RawFd, address: Py<PyAny>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        slf.call_method1(intern!(py, "_ensure_fd_no_transport"), (fd,))?;
        let fut = Self::new_future(slf)?;
        let wait = Bound::new(
            py,
            ConnectWait {
                event_loop: slf.clone().unbind(),
                fut: fut.clone().unbind(),
                fd,
                address,
            },
        )?;
        Self::fd_handle(slf, fd, wait.into_any(), PyTuple::empty(py), true)?;
        Ok(fut.unbind())
    }

    /// The `sock_connect` awaiting `fut` on `fd` was cancelled (or closed): its writer goes, as
    /// the stdlib's done callback removes it, unless something else replaced it meanwhile.
    pub(crate) fn sock_connect_abandon(slf: &Bound<'_, Self>, fd: RawFd, fut: &Bound<'_, PyAny>) -> PyResult<()> {
        Self::abandon_wait(slf, fd, true, |callback| {
            callback.cast::<ConnectWait>().is_ok_and(|wait| wait.get().fut.is(fut))
        })
    }

    /// A waiter's caller let go: the reader (or with `write` the writer) of `fd` goes if its
    /// callback is the waiter `is_ours` recognises, and nothing happens when it let go already.
    fn abandon_wait(
        slf: &Bound<'_, Self>,
        fd: RawFd,
        write: bool,
        is_ours: impl FnOnce(&Bound<'_, PyAny>) -> bool,
    ) -> PyResult<()> {
        let py = slf.py();
        let parts = slf.get().state(py).io.slot(fd, write).and_then(|h| h.get().parts(py));
        let Some(parts) = parts else {
            return Ok(());
        };
        let callback = parts.callback.bind(py);
        if is_ours(callback) {
            Self::fd_remove_if(slf, fd, callback, write)
        } else {
            Ok(())
        }
    }

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
        Self::abandon_wait(slf, fd, false, |callback| {
            callback.cast::<RecvWait>().is_ok_and(|wait| wait.get().fut.is(fut))
        })
    }
}
