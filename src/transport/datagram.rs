//! `DatagramCore`: the native half of a datagram transport (UDP, Unix datagram sockets).
//!
//! The Python class `ferroloop._transports.DatagramTransport` is the `asyncio.DatagramTransport`
//! users see; it holds one of these, which does what happens per datagram: receiving one into
//! `protocol.datagram_received(data, addr)` (`addr` made as the `socket` module makes it, see
//! `addr.rs`), `sendto`, and the buffer of datagrams that could not be sent yet. Closing, fatal
//! errors, flow-control callbacks and `connection_lost` stay in Python.
//!
//! Its behaviour is the stdlib's `_SelectorDatagramTransport`, line for line: the fd is read
//! level-triggered (one datagram per event), a datagram is sent at once when nothing waits, an
//! `OSError` from a send or receive goes to `protocol.error_received` and leaves the transport
//! open, and an exception from `datagram_received` goes to the loop's exception handler. A
//! datagram to an explicit address is sent by the socket's own `sendto`, so the address is
//! converted (and a host name resolved) exactly as `socket.sendto` does.
//!
//! One difference, deliberately: the stdlib (3.13) counts 8 header bytes per buffered datagram
//! when it is buffered and not when it is sent, so its buffer size never returns to zero; here
//! a datagram's header bytes leave the count with it.

use std::collections::VecDeque;
use std::os::fd::RawFd;

use pyo3::exceptions::{PyBlockingIOError, PyInterruptedError, PyOSError, PyValueError};
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};
use pyo3::PyTraverseError;

use super::gate::ReadGate;
use super::{addr, TransportRef, MAX_READ};
use crate::ffi::{self, intern, GilCell};
use crate::r#loop::LoopCore;
use crate::{errors, sys};

/// The most datagrams one readiness event delivers before other callbacks get their turn.
const DATAGRAMS_PER_READY: usize = 32;

/// After this many sends on a lost connection, each further one logs a warning.
const LOST_WRITES_LOGGED_FROM: u32 = 5;

struct State {
    protocol: Option<Py<PyAny>>,
    /// The Python transport, for the cold paths (errors, flow control, connection lost).
    transport: TransportRef,
    /// The socket, whose `sendto` converts explicit addresses; `None` once the transport is done.
    sock: Option<Py<PyAny>>,
    /// The remote address given at creation, if any: `sendto` may only target it.
    address: Option<Py<PyAny>>,
    /// Datagrams accepted and not yet sent, with their addresses.
    buffer: VecDeque<(Py<PyBytes>, Option<Py<PyAny>>)>,
    size: usize,
    /// Counts `connection_lost` being scheduled, then sends after it.
    conn_lost: u32,
    gate: ReadGate,
    /// What the fd is registered for now.
    reading: bool,
    writing: bool,
    /// The transport's `max_size`: the most one `recvfrom` takes (a negative one fails it).
    max_read: isize,
}

impl State {
    fn wants_read(&self) -> bool {
        self.gate.is_reading()
    }
}

#[pyclass(frozen, module = "ferroloop._core", name = "DatagramCore")]
pub struct DatagramCore {
    fd: RawFd,
    event_loop: Py<LoopCore>,
    /// The socket's address family.
    family: libc::c_int,
    /// The socket has a peer: datagrams go out with `send`.
    connected: bool,
    /// Empty datagrams are sent (3.13+); before, they are dropped.
    sends_empty: bool,
    /// Bytes counted per buffered datagram on top of its data (8 from 3.13).
    header: usize,
    st: GilCell<State>,
}

/// How one send ended, with no state borrowed.
enum Sent {
    Done,
    WouldBlock,
    Failed(PyErr),
}

fn is_would_block(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<PyBlockingIOError>(py) || err.is_instance_of::<PyInterruptedError>(py)
}

impl DatagramCore {
    fn transport(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.st.borrow_mut(py).transport.get(py)
    }

    fn protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.st.borrow_mut(py).protocol.as_ref().map(|p| p.clone_ref(py))
    }

    #[cold]
    #[inline(never)]
    fn call_transport<'py>(
        slf: &Bound<'py, Self>,
        method: &Bound<'py, PyString>,
        args: impl pyo3::call::PyCallArgs<'py>,
    ) -> PyResult<()> {
        if let Some(transport) = slf.get().transport(slf.py()) {
            transport.bind(slf.py()).call_method1(method, args)?;
        }
        Ok(())
    }

    /// Sends one datagram now: `send` on a connected socket, else the socket's own `sendto`.
    fn send_one(&self, py: Python<'_>, data: &Bound<'_, PyAny>, addr: Option<&Bound<'_, PyAny>>) -> Sent {
        let sock = self.st.borrow_mut(py).sock.as_ref().map(|s| s.clone_ref(py));
        let result = match (sock, self.connected) {
            (Some(_), true) => match ffi::with_bytes(data, |bytes| sys::net::send(self.fd, bytes)) {
                Ok(Ok(_)) => return Sent::Done,
                Ok(Err(e)) if sys::net::would_block(&e) => return Sent::WouldBlock,
                Ok(Err(e)) => Err(errors::os_error(e)),
                Err(e) => Err(e),
            },
            // An address the socket module would convert without a lookup: converted here.
            (Some(_), false) if let Some(to) = addr.and_then(|a| addr::from_python(self.family, a)) => {
                match ffi::with_bytes(data, |bytes| sys::net::send_to(self.fd, bytes, &to)) {
                    Ok(Ok(_)) => return Sent::Done,
                    Ok(Err(e)) if sys::net::would_block(&e) => return Sent::WouldBlock,
                    Ok(Err(e)) => Err(errors::os_error(e)),
                    Err(e) => Err(e),
                }
            }
            // A transport whose socket is gone fails as the stdlib's does (on `None.sendto`).
            (sock, _) => {
                let target = sock.map_or_else(|| py.None().into_bound(py), |s| s.into_bound(py));
                let addr = addr.map_or_else(|| py.None().into_bound(py), |a| a.clone());
                if self.connected {
                    target.call_method1(intern!(py, "send"), (data,)).map(drop)
                } else {
                    target.call_method1(intern!(py, "sendto"), (data, addr)).map(drop)
                }
            }
        };
        match result {
            Ok(()) => Sent::Done,
            Err(e) if is_would_block(py, &e) => Sent::WouldBlock,
            Err(e) => Sent::Failed(e),
        }
    }

    /// A send failed: an `OSError` goes to `protocol.error_received`, anything else is fatal
    /// (except the two that stop the loop).
    #[cold]
    #[inline(never)]
    fn send_failed(slf: &Bound<'_, Self>, err: PyErr) -> PyResult<()> {
        let py = slf.py();
        if err.is_instance_of::<PyOSError>(py) {
            return Self::error_received(slf, err);
        }
        Self::fatal(slf, err, "Fatal write error on datagram transport")
    }

    #[cold]
    #[inline(never)]
    fn error_received(slf: &Bound<'_, Self>, err: PyErr) -> PyResult<()> {
        let py = slf.py();
        if let Some(protocol) = slf.get().protocol(py) {
            protocol
                .bind(py)
                .call_method1(intern!(py, "error_received"), (err.value(py),))?;
        }
        Ok(())
    }

    #[cold]
    #[inline(never)]
    fn fatal(slf: &Bound<'_, Self>, err: PyErr, message: &str) -> PyResult<()> {
        let py = slf.py();
        if errors::leaves_the_loop(py, &err) {
            return Err(err);
        }
        errors::report_caught(py, err, |exc| {
            Self::call_transport(slf, intern!(py, "_fatal_error"), (exc, message))
        })
    }

    fn set_reading(slf: &Bound<'_, Self>, on: bool) -> PyResult<()> {
        let py = slf.py();
        let core = slf.get();
        let event_loop = core.event_loop.bind(py);
        if on {
            let callback = slf.getattr(intern!(py, "_read_ready"))?;
            let args = core.st.borrow_mut(py).transport.handle_args(py)?;
            LoopCore::fd_handle(event_loop, core.fd, callback, args, false)?;
        } else {
            LoopCore::fd_remove(event_loop, core.fd, false)?;
        }
        core.st.borrow_mut(py).reading = on;
        Ok(())
    }

    fn set_writing(slf: &Bound<'_, Self>, on: bool) -> PyResult<()> {
        let py = slf.py();
        let core = slf.get();
        let event_loop = core.event_loop.bind(py);
        if on {
            let callback = slf.getattr(intern!(py, "_sendto_ready"))?;
            let args = core.st.borrow_mut(py).transport.handle_args(py)?;
            LoopCore::fd_handle(event_loop, core.fd, callback, args, true)?;
        } else {
            LoopCore::fd_remove(event_loop, core.fd, true)?;
        }
        core.st.borrow_mut(py).writing = on;
        Ok(())
    }

    /// Receives one datagram: `Some((data, addr))`, or `None` when there is none yet.
    fn receive<'py>(&self, py: Python<'py>) -> PyResult<Option<(Bound<'py, PyBytes>, Bound<'py, PyAny>)>> {
        let max = super::read_size(self.st.borrow_mut(py).max_read, "recvfrom")?;
        let received = super::read_bytes(py, max, |buf| sys::net::recv_from(self.fd, buf))?;
        match received {
            Ok((data, from)) => Ok(Some((data, addr::to_python(py, &from)?))),
            Err(e) if sys::net::would_block(&e) => Ok(None),
            Err(e) => Err(errors::os_error(e)),
        }
    }
}

#[pymethods]
impl DatagramCore {
    #[new]
    #[pyo3(signature = (event_loop, fd, transport, sock, address, family, connected, sends_empty, header))]
    #[allow(clippy::too_many_arguments)]
    fn py_new(
        event_loop: Bound<'_, LoopCore>,
        fd: RawFd,
        transport: &Bound<'_, PyAny>,
        sock: Py<PyAny>,
        address: Option<Py<PyAny>>,
        family: libc::c_int,
        connected: bool,
        sends_empty: bool,
        header: usize,
    ) -> PyResult<Self> {
        Ok(DatagramCore {
            fd,
            event_loop: event_loop.unbind(),
            family,
            connected,
            sends_empty,
            header,
            st: GilCell::new(State {
                protocol: None,
                transport: TransportRef::new(transport)?,
                sock: Some(sock),
                address,
                buffer: VecDeque::new(),
                size: 0,
                conn_lost: 0,
                gate: ReadGate::default(),
                reading: false,
                writing: false,
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

    /// Starts reading (after `connection_made`, as the stdlib does), unless closed or paused.
    fn start(slf: &Bound<'_, Self>) -> PyResult<()> {
        let wants = slf.get().st.borrow_mut(slf.py()).wants_read();
        if wants {
            Self::set_reading(slf, true)?;
        }
        Ok(())
    }

    /// The socket is readable: up to `DATAGRAMS_PER_READY` datagrams go to the protocol, as
    /// long as it still reads (it may pause reading, close the transport or be replaced by any
    /// `datagram_received`); the fd is level-triggered, so what is left comes next iteration.
    /// (`_transport` is what the registration's handle carries: see `TransportRef`.)
    #[pyo3(signature = (_transport=None))]
    fn _read_ready(slf: &Bound<'_, Self>, _transport: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let core = slf.get();
        for _ in 0..DATAGRAMS_PER_READY {
            let protocol = {
                let st = core.st.borrow_mut(py);
                if st.conn_lost > 0 || !st.wants_read() {
                    return Ok(());
                }
                match &st.protocol {
                    Some(p) => p.clone_ref(py),
                    None => return Ok(()),
                }
            };
            match core.receive(py) {
                Ok(Some((data, from))) => {
                    // An exception from the protocol goes to the loop's exception handler.
                    protocol
                        .bind(py)
                        .call_method1(intern!(py, "datagram_received"), (data, from))?;
                }
                Ok(None) => return Ok(()),
                Err(e) if e.is_instance_of::<PyOSError>(py) => {
                    protocol
                        .bind(py)
                        .call_method1(intern!(py, "error_received"), (e.value(py),))?;
                    return Ok(());
                }
                Err(e) => return Self::fatal(slf, e, "Fatal read error on datagram transport"),
            }
        }
        Ok(())
    }

    #[pyo3(signature = (data, addr=None))]
    fn sendto(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>, addr: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let core = slf.get();
        super::check_bytes_like(data)?;
        if !core.sends_empty && !data.is_truthy()? {
            return Ok(());
        }
        let (address, lost) = {
            let st = core.st.borrow_mut(py);
            (st.address.as_ref().map(|a| a.clone_ref(py)), st.conn_lost)
        };
        let mut addr = addr.filter(|a| !a.is_none());
        if let Some(address) = address {
            let address = address.into_bound(py);
            if let Some(given) = &addr {
                let allowed = PyTuple::new(py, [py.None().into_bound(py), address.clone()])?;
                if !allowed.contains(given)? {
                    return Err(PyValueError::new_err(format!(
                        "Invalid address: must be None or {}",
                        address.str()?
                    )));
                }
            }
            if lost > 0 {
                core.st.borrow_mut(py).conn_lost += 1;
                if lost >= LOST_WRITES_LOGGED_FROM {
                    super::warn_lost_write(py, "socket.send() raised exception.")?;
                }
                return Ok(());
            }
            addr = Some(address);
        }
        let queued = !core.st.borrow_mut(py).buffer.is_empty();
        if !queued {
            match core.send_one(py, data, addr.as_ref()) {
                Sent::Done => return Ok(()),
                Sent::WouldBlock => Self::set_writing(slf, true)?,
                Sent::Failed(e) => return Self::send_failed(slf, e),
            }
        }
        // Buffered as bytes, so that later changes to a mutable buffer do not change it.
        let bytes = match data.cast_exact::<PyBytes>() {
            Ok(b) => b.clone(),
            Err(_) => py.get_type::<PyBytes>().call1((data,))?.cast_into::<PyBytes>()?,
        };
        {
            let mut st = core.st.borrow_mut(py);
            st.size += bytes.as_bytes().len() + core.header;
            st.buffer.push_back((bytes.unbind(), addr.map(Bound::unbind)));
        }
        Self::call_transport(slf, intern!(py, "_maybe_pause_protocol"), ())
    }

    #[pyo3(signature = (_transport=None))]
    fn _sendto_ready(slf: &Bound<'_, Self>, _transport: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let core = slf.get();
        loop {
            let Some((data, addr)) = core.st.borrow_mut(py).buffer.pop_front() else {
                break;
            };
            let len = data.bind(py).as_bytes().len() + core.header;
            core.st.borrow_mut(py).size -= len;
            match core.send_one(py, data.bind(py).as_any(), addr.as_ref().map(|a| a.bind(py))) {
                Sent::Done => {}
                Sent::WouldBlock => {
                    let mut st = core.st.borrow_mut(py);
                    st.size += len;
                    st.buffer.push_front((data, addr));
                    break;
                }
                Sent::Failed(e) => return Self::send_failed(slf, e),
            }
        }
        // May buffer more, through the protocol's resume_writing().
        Self::call_transport(slf, intern!(py, "_maybe_resume_protocol"), ())?;
        let (empty, closing) = {
            let st = core.st.borrow_mut(py);
            (st.buffer.is_empty(), st.gate.closing)
        };
        if empty {
            Self::set_writing(slf, false)?;
            if closing {
                Self::call_transport(slf, intern!(py, "_call_connection_lost"), (py.None(),))?;
            }
        }
        Ok(())
    }

    fn get_write_buffer_size(&self, py: Python<'_>) -> usize {
        self.st.borrow_mut(py).size
    }

    fn is_closing(&self, py: Python<'_>) -> bool {
        self.st.borrow_mut(py).gate.closing
    }

    /// The stdlib transports' `_paused` (see `StreamCore.paused`).
    #[getter]
    fn paused(&self, py: Python<'_>) -> bool {
        self.st.borrow_mut(py).gate.paused
    }

    fn is_reading(&self, py: Python<'_>) -> bool {
        self.st.borrow_mut(py).wants_read()
    }

    /// Stops reading; false if it was not reading.
    fn pause_reading(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let paused = slf.get().st.borrow_mut(slf.py()).gate.pause();
        if paused {
            Self::set_reading(slf, false)?;
        }
        Ok(paused)
    }

    /// Reads again; false if it was not paused (or is closing).
    fn resume_reading(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let resumed = slf.get().st.borrow_mut(slf.py()).gate.resume();
        if resumed {
            Self::set_reading(slf, true)?;
        }
        Ok(resumed)
    }

    /// `close()`: stops reading; true when `connection_lost` is to be scheduled now (nothing is
    /// buffered; otherwise it comes once the buffer is sent).
    fn begin_close(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let empty = {
            let mut st = slf.get().st.borrow_mut(slf.py());
            if st.gate.closing {
                return Ok(false);
            }
            st.gate.closing = true;
            if st.buffer.is_empty() {
                st.conn_lost += 1;
            }
            st.buffer.is_empty()
        };
        Self::set_reading(slf, false)?;
        if empty {
            Self::set_writing(slf, false)?;
        }
        Ok(empty)
    }

    /// `abort()` or a fatal error: drops the buffer, stops polling; true when `connection_lost`
    /// is to be scheduled (not already).
    fn force_close(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let (dropped, had_buffer, was_closing) = {
            let mut st = slf.get().st.borrow_mut(slf.py());
            if st.conn_lost > 0 {
                return Ok(false);
            }
            st.conn_lost += 1;
            st.size = 0;
            let dropped = std::mem::take(&mut st.buffer);
            let had_buffer = !dropped.is_empty();
            let was_closing = std::mem::replace(&mut st.gate.closing, true);
            (dropped, had_buffer, was_closing)
        };
        drop(dropped);
        if had_buffer {
            Self::set_writing(slf, false)?;
        }
        if !was_closing {
            Self::set_reading(slf, false)?;
        }
        Ok(true)
    }

    /// The transport is done: unregister the fd (before the socket is closed) and let go of the
    /// protocol, the transport and the socket.
    fn detach(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (taken, reading, writing) = {
            let mut st = slf.get().st.borrow_mut(py);
            st.conn_lost = st.conn_lost.max(1);
            st.gate.closing = true;
            st.size = 0;
            let taken = (
                st.protocol.take(),
                st.transport.take(),
                st.sock.take(),
                std::mem::take(&mut st.buffer),
            );
            (taken, st.reading, st.writing)
        };
        drop(taken);
        if reading {
            Self::set_reading(slf, false)?;
        }
        if writing {
            Self::set_writing(slf, false)?;
        }
        Ok(())
    }

    /// `(reading, writing)`: what the fd is registered for, for `repr()`.
    #[getter]
    fn polling(&self, py: Python<'_>) -> (bool, bool) {
        let st = self.st.borrow_mut(py);
        (st.reading, st.writing)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.event_loop)?;
        if let Some(st) = self.st.try_borrow_in_gc() {
            visit.call(&st.protocol)?;
            st.transport.traverse(&visit)?;
            visit.call(&st.sock)?;
            visit.call(&st.address)?;
            for (_, addr) in &st.buffer {
                visit.call(addr)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        if let Some(mut st) = self.st.try_borrow_in_gc() {
            let taken = (
                st.protocol.take(),
                st.transport.take(),
                st.sock.take(),
                st.address.take(),
                std::mem::take(&mut st.buffer),
            );
            drop(st);
            // The collector calls this with the GIL held.
            Python::attach(|_| drop(taken));
        }
    }
}
