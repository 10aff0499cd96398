//! `ReadPipeCore` and `WritePipeCore`: the native halves of the pipe transports that
//! `connect_read_pipe`/`connect_write_pipe` (and subprocesses' stdin/stdout/stderr) make.
//!
//! The Python classes `ferroloop._transports.ReadPipeTransport`/`WritePipeTransport` are what
//! users see; they hand these the per-byte work (`read` into `data_received`; `write`, the
//! buffer, and writing it out when the pipe is writable again), and keep the rest. Behaviour is
//! the stdlib's `_UnixReadPipeTransport`/`_UnixWritePipeTransport`: the fd is level-triggered
//! like any `add_reader` fd; an exception from `data_received` goes to the loop's exception
//! handler and leaves the pipe open; `write()` after close or a lost pipe is dropped (logged
//! after a few); a write pipe watches its fd for readability, which for a pipe means the reader
//! went away.

use std::os::fd::RawFd;

use pyo3::exceptions::{PyAssertionError, PyMemoryError, PyTypeError};
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};
use pyo3::PyTraverseError;

use super::gate::ReadGate;
use super::wbuf::{self, WriteBuffer};
use super::{TransportRef, MAX_READ};
use crate::ffi::{intern, GilCell};
use crate::r#loop::LoopCore;
use crate::{errors, sys};

/// After this many writes to a lost pipe, each further one logs a warning.
const LOST_WRITES_LOGGED_FROM: u32 = 5;

/// Registers (or unregisters) `method` (of `slf`) as the fd's reader or writer, called with the
/// transport (see `TransportRef`; taken with no borrow held while registering, which may run a
/// displaced handle's finalizers).
fn set_polling<'py>(
    slf: &Bound<'py, PyAny>,
    event_loop: &Py<LoopCore>,
    fd: RawFd,
    method: Option<&Bound<'py, PyString>>,
    transport: impl FnOnce() -> PyResult<Bound<'py, PyTuple>>,
    write: bool,
) -> PyResult<()> {
    let py = slf.py();
    let event_loop = event_loop.bind(py);
    match method {
        Some(name) => {
            LoopCore::fd_handle(event_loop, fd, slf.getattr(name)?, transport()?, write)?;
        }
        None => {
            LoopCore::fd_remove(event_loop, fd, write)?;
        }
    }
    Ok(())
}

#[cold]
#[inline(never)]
fn call_transport<'py>(
    py: Python<'py>,
    transport: Option<Py<PyAny>>,
    method: &Bound<'py, PyString>,
    args: impl pyo3::call::PyCallArgs<'py>,
) -> PyResult<()> {
    if let Some(transport) = transport {
        transport.bind(py).call_method1(method, args)?;
    }
    Ok(())
}

/// `transport._fatal_error(err, message)`, as the stdlib's pipe transports call it for an error
/// they caught (see `errors::report_caught`).
fn fatal_error(py: Python<'_>, transport: Option<Py<PyAny>>, err: PyErr, message: &str) -> PyResult<()> {
    errors::report_caught(py, err, |exc| {
        call_transport(py, transport, intern!(py, "_fatal_error"), (exc, message))
    })
}

struct ReadState {
    protocol: Option<Py<PyAny>>,
    transport: TransportRef,
    gate: ReadGate,
    /// The fd is registered for reading.
    polling: bool,
    /// The transport's `max_size`: the most one `os.read` takes (a negative one fails it).
    max_read: isize,
}

#[pyclass(frozen, module = "ferroloop._core", name = "ReadPipeCore")]
pub struct ReadPipeCore {
    fd: RawFd,
    event_loop: Py<LoopCore>,
    st: GilCell<ReadState>,
}

impl ReadPipeCore {
    fn poll(slf: &Bound<'_, Self>, on: bool) -> PyResult<()> {
        let core = slf.get();
        let py = slf.py();
        let method = on.then(|| intern!(py, "_read_ready"));
        let transport = || core.st.borrow_mut(py).transport.handle_args(py);
        set_polling(slf.as_any(), &core.event_loop, core.fd, method, transport, false)?;
        core.st.borrow_mut(py).polling = on;
        Ok(())
    }
}

#[pymethods]
impl ReadPipeCore {
    #[new]
    fn py_new(
        event_loop: Bound<'_, LoopCore>,
        fd: RawFd,
        transport: &Bound<'_, PyAny>,
        protocol: Py<PyAny>,
    ) -> PyResult<Self> {
        Ok(ReadPipeCore {
            fd,
            event_loop: event_loop.unbind(),
            st: GilCell::new(ReadState {
                protocol: Some(protocol),
                transport: TransportRef::new(transport)?,
                gate: ReadGate::default(),
                polling: false,
                max_read: MAX_READ as isize,
            }),
        })
    }

    /// Sets the transport's `max_size` (see `_transports._ReadSize`).
    fn set_max_read(&self, py: Python<'_>, size: isize) {
        self.st.borrow_mut(py).max_read = size;
    }

    fn set_protocol(&self, py: Python<'_>, protocol: Py<PyAny>) {
        let old = self.st.borrow_mut(py).protocol.replace(protocol);
        drop(old);
    }

    /// Starts reading (after `connection_made`), unless closed or paused meanwhile.
    fn start(slf: &Bound<'_, Self>) -> PyResult<()> {
        if slf.get().is_reading(slf.py()) {
            Self::poll(slf, true)?;
        }
        Ok(())
    }

    /// (`_transport` is what the registration's handle carries: see `TransportRef`.)
    #[pyo3(signature = (_transport=None))]
    fn _read_ready(slf: &Bound<'_, Self>, _transport: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let core = slf.get();
        // `os.read(fd, max_size)`: a negative size is its `EINVAL`.
        let max_read = core.st.borrow_mut(py).max_read;
        let read = match usize::try_from(max_read) {
            Ok(max) => {
                super::read_bytes(py, max, |buf| sys::pipe::read(core.fd, buf).map(|n| (n, ())))?.map(|(data, ())| data)
            }
            Err(_) => Err(std::io::Error::from_raw_os_error(libc::EINVAL)),
        };
        let (protocol, transport) = {
            let st = core.st.borrow_mut(py);
            (st.protocol.as_ref().map(|p| p.clone_ref(py)), st.transport.get(py))
        };
        match read {
            Ok(data) if !data.as_bytes().is_empty() => {
                if let Some(protocol) = protocol {
                    // An exception from the protocol goes to the loop's exception handler.
                    protocol.bind(py).call_method1(intern!(py, "data_received"), (data,))?;
                }
                Ok(())
            }
            Ok(_) => call_transport(py, transport, intern!(py, "_read_eof"), ()),
            Err(e) if sys::net::would_block(&e) => Ok(()),
            Err(e) => fatal_error(py, transport, errors::os_error(e), "Fatal read error on pipe transport"),
        }
    }

    /// The stdlib transports' `_paused` (see `StreamCore.paused`).
    #[getter]
    fn paused(&self, py: Python<'_>) -> bool {
        self.st.borrow_mut(py).gate.paused
    }

    fn is_reading(&self, py: Python<'_>) -> bool {
        self.st.borrow_mut(py).gate.is_reading()
    }

    fn is_closing(&self, py: Python<'_>) -> bool {
        self.st.borrow_mut(py).gate.closing
    }

    /// Stops reading; false if it was not reading.
    fn pause_reading(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let paused = slf.get().st.borrow_mut(slf.py()).gate.pause();
        if paused {
            Self::poll(slf, false)?;
        }
        Ok(paused)
    }

    /// Reads again; false if it was not paused (or is closing).
    fn resume_reading(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let resumed = slf.get().st.borrow_mut(slf.py()).gate.resume();
        if resumed {
            Self::poll(slf, true)?;
        }
        Ok(resumed)
    }

    /// Closing (at EOF, on `close()` or a fatal error): stops reading.
    fn stop(slf: &Bound<'_, Self>) -> PyResult<()> {
        slf.get().st.borrow_mut(slf.py()).gate.closing = true;
        Self::poll(slf, false)
    }

    /// The transport is done: unregister the fd (before the pipe is closed) and let go.
    fn detach(slf: &Bound<'_, Self>) -> PyResult<()> {
        let (taken, polling) = {
            let mut st = slf.get().st.borrow_mut(slf.py());
            st.gate.closing = true;
            ((st.protocol.take(), st.transport.take()), st.polling)
        };
        drop(taken);
        if polling {
            Self::poll(slf, false)?;
        }
        Ok(())
    }

    #[getter]
    fn polling(&self, py: Python<'_>) -> bool {
        self.st.borrow_mut(py).polling
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.event_loop)?;
        if let Some(st) = self.st.try_borrow_in_gc() {
            visit.call(&st.protocol)?;
            st.transport.traverse(&visit)?;
        }
        Ok(())
    }

    fn __clear__(&self) {
        if let Some(mut st) = self.st.try_borrow_in_gc() {
            let taken = (st.protocol.take(), st.transport.take());
            drop(st);
            // The collector calls this with the GIL held.
            Python::attach(|_| drop(taken));
        }
    }
}

struct WriteState {
    transport: TransportRef,
    /// Accepted and not yet written.
    wbuf: WriteBuffer,
    conn_lost: u32,
    /// `close()`/`write_eof()` was called, or the pipe was lost.
    closing: bool,
    /// The fd is registered for reading (the peer-closed watch) and for writing.
    watching: bool,
    writing: bool,
}

impl WriteState {
    fn pending(&self) -> usize {
        self.wbuf.size()
    }

    fn clear(&mut self) {
        self.wbuf.clear();
    }
}

#[pyclass(frozen, module = "ferroloop._core", name = "WritePipeCore")]
pub struct WritePipeCore {
    fd: RawFd,
    event_loop: Py<LoopCore>,
    st: GilCell<WriteState>,
}

/// What a `write()` did, decided with the state borrowed and acted on after.
enum Wrote {
    Done,
    Lost { log: bool },
    Failed(PyErr),
    Buffered { register: bool },
}

impl WritePipeCore {
    fn transport(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.st.borrow_mut(py).transport.get(py)
    }

    fn watch(slf: &Bound<'_, Self>, on: bool) -> PyResult<()> {
        let core = slf.get();
        let py = slf.py();
        let method = on.then(|| intern!(py, "_peer_closed"));
        let transport = || core.st.borrow_mut(py).transport.handle_args(py);
        set_polling(slf.as_any(), &core.event_loop, core.fd, method, transport, false)?;
        core.st.borrow_mut(py).watching = on;
        Ok(())
    }

    fn poll_write(slf: &Bound<'_, Self>, on: bool) -> PyResult<()> {
        let core = slf.get();
        let py = slf.py();
        let method = on.then(|| intern!(py, "_write_ready"));
        let transport = || core.st.borrow_mut(py).transport.handle_args(py);
        set_polling(slf.as_any(), &core.event_loop, core.fd, method, transport, true)?;
        core.st.borrow_mut(py).writing = on;
        Ok(())
    }

    #[cold]
    #[inline(never)]
    fn fatal(slf: &Bound<'_, Self>, err: PyErr) -> PyResult<()> {
        let py = slf.py();
        fatal_error(py, slf.get().transport(py), err, "Fatal write error on pipe transport")
    }

    /// `write()` of the bytes of an already checked object (`shared`: the `bytes` object they
    /// are the content of, buffered by reference).
    fn write_bytes(&self, py: Python<'_>, bytes: &[u8], shared: Option<&Bound<'_, PyBytes>>) -> Wrote {
        if bytes.is_empty() {
            return Wrote::Done;
        }
        let mut st = self.st.borrow_mut(py);
        if st.conn_lost > 0 || st.closing {
            let log = st.conn_lost >= LOST_WRITES_LOGGED_FROM;
            st.conn_lost += 1;
            return Wrote::Lost { log };
        }
        let mut written = 0;
        let empty = st.pending() == 0;
        if empty {
            match sys::pipe::write(self.fd, bytes) {
                Ok(n) if n == bytes.len() => return Wrote::Done,
                Ok(n) => written = n,
                Err(e) if sys::net::would_block(&e) => {}
                Err(e) => {
                    st.conn_lost += 1;
                    return Wrote::Failed(errors::os_error(e));
                }
            }
        }
        if st.wbuf.push(bytes, written, shared).is_err() {
            return Wrote::Failed(PyMemoryError::new_err("cannot buffer the data to write"));
        }
        Wrote::Buffered { register: empty }
    }
}

/// The error of `bytearray += data` for `data` that is not a contiguous buffer.
fn cannot_concat(data: &Bound<'_, PyAny>) -> PyErr {
    // The type's `tp_name`, as CPython formats it (`%.100s`).
    // SAFETY: every type object has a NUL-terminated `tp_name` that lives as long as the type,
    // which `data` keeps alive.
    let name = unsafe { std::ffi::CStr::from_ptr((*pyo3::ffi::Py_TYPE(data.as_ptr())).tp_name) };
    let name: String = name.to_string_lossy().chars().take(100).collect();
    PyTypeError::new_err(format!("can't concat {name} to bytearray"))
}

#[pymethods]
impl WritePipeCore {
    #[new]
    fn py_new(event_loop: Bound<'_, LoopCore>, fd: RawFd, transport: &Bound<'_, PyAny>) -> PyResult<Self> {
        Ok(WritePipeCore {
            fd,
            event_loop: event_loop.unbind(),
            st: GilCell::new(WriteState {
                transport: TransportRef::new(transport)?,
                wbuf: WriteBuffer::default(),
                conn_lost: 0,
                closing: false,
                watching: false,
                writing: false,
            }),
        })
    }

    /// Watches the fd for readability, which on the write end of a pipe or a socket means the
    /// reader went away.
    fn watch_peer(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::watch(slf, true)
    }

    fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let core = slf.get();
        if !super::is_bytes_like(data) {
            // The stdlib asserts this.
            return Err(PyAssertionError::new_err(data.repr()?.unbind()));
        }
        if super::is_empty_view(data)? {
            return Ok(());
        }
        let outcome = match wbuf::with_data(data, |bytes, shared| core.write_bytes(py, bytes, shared)) {
            Ok(outcome) => outcome,
            // A buffer that cannot be read whole (a non-contiguous view), as the stdlib fails
            // on it: raised to the caller when it would be buffered (the `TypeError` of the
            // stdlib's `bytearray += data`), fatal when written at once (`os.write`'s error).
            // (A write that would be dropped is dropped without reading the data.)
            Err(e) => {
                let mut st = core.st.borrow_mut(py);
                if st.closing || st.conn_lost > 0 {
                    let log = st.conn_lost >= LOST_WRITES_LOGGED_FROM;
                    st.conn_lost += 1;
                    Wrote::Lost { log }
                } else if st.pending() > 0 {
                    return Err(cannot_concat(data));
                } else {
                    st.conn_lost += 1;
                    Wrote::Failed(e)
                }
            }
        };
        match outcome {
            Wrote::Done => Ok(()),
            Wrote::Lost { log } => {
                if log {
                    super::warn_lost_write(py, "pipe closed by peer or os.write(pipe, data) raised exception.")?;
                }
                Ok(())
            }
            Wrote::Failed(e) if e.is_instance_of::<PyMemoryError>(py) => Err(e),
            Wrote::Failed(e) => Self::fatal(slf, e),
            Wrote::Buffered { register } => {
                if register {
                    Self::poll_write(slf, true)?;
                }
                call_transport(py, core.transport(py), intern!(py, "_maybe_pause_protocol"), ())
            }
        }
    }

    #[pyo3(signature = (_transport=None))]
    fn _write_ready(slf: &Bound<'_, Self>, _transport: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let core = slf.get();
        let result = {
            let mut st = core.st.borrow_mut(py);
            if st.pending() == 0 {
                return Ok(());
            }
            let result = sys::pipe::write_vectored(core.fd, &st.wbuf.slices(py));
            match result {
                Ok(n) => {
                    st.wbuf.consume(n);
                    Ok(st.pending() == 0)
                }
                Err(e) if sys::net::would_block(&e) => return Ok(()),
                Err(e) => {
                    st.clear();
                    st.conn_lost += 1;
                    Err(e)
                }
            }
        };
        match result {
            Ok(false) => Ok(()),
            Ok(true) => {
                Self::poll_write(slf, false)?;
                // May write more, through the protocol's resume_writing().
                call_transport(py, core.transport(py), intern!(py, "_maybe_resume_protocol"), ())?;
                let (closing, empty) = {
                    let st = core.st.borrow_mut(py);
                    (st.closing, st.pending() == 0)
                };
                if closing && empty {
                    Self::watch(slf, false)?;
                    call_transport(
                        py,
                        core.transport(py),
                        intern!(py, "_call_connection_lost"),
                        (py.None(),),
                    )?;
                }
                Ok(())
            }
            Err(e) => {
                Self::poll_write(slf, false)?;
                Self::fatal(slf, errors::os_error(e))
            }
        }
    }

    #[pyo3(signature = (_transport=None))]
    fn _peer_closed(slf: &Bound<'_, Self>, _transport: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        call_transport(py, slf.get().transport(py), intern!(py, "_peer_closed"), ())
    }

    fn get_write_buffer_size(&self, py: Python<'_>) -> usize {
        self.st.borrow_mut(py).pending()
    }

    fn is_closing(&self, py: Python<'_>) -> bool {
        self.st.borrow_mut(py).closing
    }

    /// `write_eof()`: true when `connection_lost` is to be scheduled now (nothing is buffered;
    /// otherwise it comes once the buffer is written).
    fn begin_eof(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let empty = {
            let mut st = slf.get().st.borrow_mut(slf.py());
            if st.closing {
                return Ok(false);
            }
            st.closing = true;
            st.pending() == 0
        };
        if empty {
            Self::watch(slf, false)?;
        }
        Ok(empty)
    }

    /// `abort()`, a fatal error or a lost reader: drops the buffer and stops polling.
    fn close_now(slf: &Bound<'_, Self>) -> PyResult<()> {
        let had_buffer = {
            let mut st = slf.get().st.borrow_mut(slf.py());
            st.closing = true;
            let had = st.pending() > 0;
            st.clear();
            had
        };
        if had_buffer {
            Self::poll_write(slf, false)?;
        }
        Self::watch(slf, false)
    }

    /// The transport is done: unregister the fd (before the pipe is closed) and let go.
    fn detach(slf: &Bound<'_, Self>) -> PyResult<()> {
        let (taken, watching, writing) = {
            let mut st = slf.get().st.borrow_mut(slf.py());
            // Closing: later writes are dropped (and counted), never written to a closed fd.
            st.closing = true;
            st.clear();
            (st.transport.take(), st.watching, st.writing)
        };
        drop(taken);
        if watching {
            Self::watch(slf, false)?;
        }
        if writing {
            Self::poll_write(slf, false)?;
        }
        Ok(())
    }

    /// Whether the fd is registered for writing, for `repr()`.
    #[getter]
    fn polling(&self, py: Python<'_>) -> bool {
        self.st.borrow_mut(py).writing
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.event_loop)?;
        if let Some(st) = self.st.try_borrow_in_gc() {
            st.transport.traverse(&visit)?;
        }
        Ok(())
    }

    fn __clear__(&self) {
        if let Some(mut st) = self.st.try_borrow_in_gc() {
            let taken = st.transport.take();
            drop(st);
            // The collector calls this with the GIL held.
            Python::attach(|_| drop(taken));
        }
    }
}
