//! `StreamCore`: the native half of a stream socket transport (TCP, Unix).
//!
//! The Python class `ferroloop._transports.SocketTransport` is the `asyncio.Transport` users see;
//! it holds one of these and hands it the per-byte work: reading into the protocol
//! (`data_received`, or `get_buffer`/`buffer_updated` for a `BufferedProtocol`) and writing
//! (an immediate `send` when nothing is buffered, a gathering `sendmsg` of the buffered chunks
//! when the socket is writable again). Everything rare stays in Python: closing, errors,
//! `connection_lost`, flow-control callbacks, `get_extra_info`.
//!
//! The fd is registered edge-triggered (`LoopCore::add_stream`), for what the transport waits
//! for: reading unless paused or at EOF, writing only while data is buffered (an edge-triggered
//! writable interest would wake the loop at every acknowledgement). `Wants`, shared with the fd
//! table, filters events already reported for an interest just dropped. The fd is unregistered
//! while the transport wants neither, so that, as with the stdlib, an idle transport nothing else
//! holds can be collected.
//!
//! Edge-triggering needs every readiness event consumed: a read that fills the whole buffer may
//! have left more behind, and after a hangup an EOF is still to come, so in those cases the
//! reader is queued again for the next turn (one read per turn, as the stdlib does); otherwise a
//! shorter read emptied the socket. Writes go on until the kernel takes less than offered.

mod addr;
mod datagram;
mod gate;
mod pipe;
mod reader;
mod tls;
mod wbuf;

pub(crate) use addr::{from_python as address_from_python, to_python as address_to_python};
pub use datagram::DatagramCore;
pub use pipe::{ReadPipeCore, WritePipeCore};
pub use tls::TlsCore;

use std::cell::RefCell;
use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use mio::Interest;
use pyo3::exceptions::{PyBufferError, PyMemoryError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyMemoryView, PyTuple, PyWeakrefReference};
use pyo3::PyTraverseError;

use crate::ffi::{self, intern, GilCell};
use crate::r#loop::args::CallArgs;
use crate::r#loop::io::Wants;
use crate::r#loop::LoopCore;
use crate::{errors, sys};
use wbuf::WriteBuffer;

/// The most one read takes (the stdlib's `max_size`).
pub(crate) const MAX_READ: usize = 256 * 1024;

/// The message of a fatal error from `recv`.
const READ_FAILED: &str = "Fatal read error on socket transport";

/// The message of a fatal error from the protocol's `data_received`.
const DATA_RECEIVED_FAILED: &str = "Fatal error: protocol.data_received() call failed.";

/// After this many writes to a lost connection, each further one logs a warning (the stdlib's
/// `LOG_THRESHOLD_FOR_CONNLOST_WRITES`).
const LOST_WRITES_LOGGED_FROM: u32 = 5;

thread_local! {
    /// One read buffer per thread, shared by every transport: reads copy out what they got.
    pub(crate) static READ_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; MAX_READ]);
}

/// One `recv` of at most `max` bytes into a new bytes object: through the per-thread buffer
/// (a copy of what arrived, never of `max` bytes) when it is large enough; otherwise straight into
/// a bytes object of `max` bytes from Python's allocator, shrunk to what arrived, as
/// `socket.recv` does (an absurd size is a `MemoryError`, not an abort).
pub(crate) fn recv_bytes(
    py: Python<'_>,
    fd: RawFd,
    max: usize,
) -> PyResult<std::io::Result<(usize, Bound<'_, PyBytes>)>> {
    let shared = READ_BUF.with(|cell| {
        let mut buf = cell.try_borrow_mut().ok()?;
        let len = max.min(buf.len());
        (len == max).then(|| sys::net::recv(fd, &mut buf[..len]).map(|n| (n, PyBytes::new(py, &buf[..n]))))
    });
    if let Some(result) = shared {
        return Ok(result);
    }
    ffi::bytes_read_into(py, max, |buf| sys::net::recv_uninit(fd, buf))
}

/// One read of at most `max` bytes with `read` (which returns how many it got, and whatever
/// else it learned), made into a bytes object: into the shared buffer's first `max` bytes, or,
/// when that is busy (a callback inside a read) or smaller than `max`, into a buffer of its own
/// (an absurd size is a `MemoryError`, not an abort).
pub(crate) fn read_bytes<'py, T>(
    py: Python<'py>,
    max: usize,
    read: impl FnOnce(&mut [u8]) -> std::io::Result<(usize, T)>,
) -> PyResult<std::io::Result<(Bound<'py, PyBytes>, T)>> {
    let shared = READ_BUF.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) if buf.len() >= max => {
            Ok(read(&mut buf[..max]).map(|(n, extra)| (PyBytes::new(py, &buf[..n]), extra)))
        }
        _ => Err(read),
    });
    let read = match shared {
        Ok(result) => return Ok(result),
        Err(read) => read,
    };
    let mut own = Vec::new();
    own.try_reserve_exact(max).map_err(|_| PyMemoryError::new_err(()))?;
    own.resize(max, 0);
    Ok(read(&mut own).map(|(n, extra)| (PyBytes::new(py, &own[..n]), extra)))
}

/// A datagram or pipe core's Python transport, held weakly so that the two make no cycle. As
/// with the stdlib, what keeps such a transport alive is its user, and the loop while the fd is
/// registered: each registration's handle carries the transport as its argument (the stdlib's
/// handle holds the transport's bound method). One dropped while nothing is registered (paused,
/// or after its loop closed) is then finalized at once, closing its fd, as the stdlib's is,
/// not when the garbage collector gets to a cycle. (A stream transport stays in a cycle with
/// its core, as the stdlib's stream transport is with its own bound read callback.)
pub(crate) struct TransportRef(Option<Py<PyWeakrefReference>>);

impl TransportRef {
    pub fn new(transport: &Bound<'_, PyAny>) -> PyResult<Self> {
        Ok(Self(Some(PyWeakrefReference::new(transport)?.unbind())))
    }

    /// The transport, while it is alive and the core has not let go of it.
    pub fn get(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.0.as_ref()?.bind(py).upgrade().map(Bound::unbind)
    }

    pub fn take(&mut self) -> Option<Py<PyWeakrefReference>> {
        self.0.take()
    }

    /// The arguments of a registration's handle: the transport, when it is alive.
    pub fn handle_args<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        match self.get(py) {
            Some(transport) => PyTuple::new(py, [transport]),
            None => Ok(PyTuple::empty(py)),
        }
    }

    pub fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.0)
    }
}

/// A transport's `max_size` as the size of a read: a negative one is the `ValueError` that
/// `sock.<call>(max_size)` raises.
pub(crate) fn read_size(max_size: isize, call: &str) -> PyResult<usize> {
    usize::try_from(max_size).map_err(|_| PyValueError::new_err(format!("negative buffersize in {call}")))
}

/// A read of at least this many bytes is large: copying it out of the shared buffer costs more
/// than asking the kernel how much is waiting (`StreamCore::large_waiting`).
const LARGE_READ: usize = 32 * 1024;

/// Whether `data` is one of the types transports accept: `bytes`, `bytearray`, `memoryview`.
pub(crate) fn is_bytes_like(data: &Bound<'_, PyAny>) -> bool {
    data.is_instance_of::<PyBytes>() || data.is_instance_of::<PyByteArray>() || data.is_instance_of::<PyMemoryView>()
}

/// `TypeError` unless `data` is bytes-like, worded as the stdlib's socket transports word it.
pub(crate) fn check_bytes_like(data: &Bound<'_, PyAny>) -> PyResult<()> {
    if is_bytes_like(data) {
        return Ok(());
    }
    Err(PyTypeError::new_err(format!(
        "data argument must be a bytes-like object, not {}",
        data.get_type().name()?.repr()?
    )))
}

/// The stdlib's `if not data: return` on a memoryview: true for an empty view (even one that
/// is not contiguous); a 0-dim view has no length (`TypeError`), a released one is refused
/// (`ValueError`).
pub(crate) fn is_empty_view(data: &Bound<'_, PyAny>) -> PyResult<bool> {
    Ok(data.is_instance_of::<PyMemoryView>() && data.len()? == 0)
}

/// Logs, on asyncio's logger, that a write to a lost connection was dropped (the stdlib logs it
/// itself, so it is logged even after the transport let go of everything).
#[cold]
#[inline(never)]
pub(crate) fn warn_lost_write(py: Python<'_>, message: &str) -> PyResult<()> {
    let logger = py.import(intern!(py, "asyncio.log"))?.getattr(intern!(py, "logger"))?;
    logger.call_method1(intern!(py, "warning"), (message,))?;
    Ok(())
}

/// How reads reach the protocol.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reads {
    /// `data_received(bytes)`.
    Data,
    /// A `BufferedProtocol`: into its buffer.
    Buffered,
    /// The stdlib's `StreamReaderProtocol`: straight onto its reader (`reader.rs`).
    FeedsReader,
}

struct State {
    protocol: Option<Py<PyAny>>,
    /// How reads reach the protocol.
    reads: Reads,
    /// The Python transport, for the cold paths (errors, EOF, flow control, connection lost).
    transport: Option<Py<PyAny>>,
    /// Data accepted by `write()` and not yet sent.
    wbuf: WriteBuffer,
    high: usize,
    low: usize,
    /// Counts `connection_lost` being scheduled, then writes after it (as the stdlib does).
    conn_lost: u32,
    closing: bool,
    paused: bool,
    /// EOF was received and the protocol kept the transport open: nothing more to read.
    read_eof: bool,
    /// `write_eof()` was called.
    write_eof: bool,
    /// A `sendfile()` waits for the buffer to empty.
    empty_waiter: Option<Py<PyAny>>,
    started: bool,
    /// What the fd is registered for in the poller, if it is.
    registered: Option<Interest>,
    detached: bool,
    /// The last read was large (see `StreamCore::large_waiting`).
    large_reads: bool,
    /// The transport's `max_size`: the most one read takes (a negative one fails the read).
    max_read: isize,
    /// The reader was queued again without a readiness event (see `StreamCore::requeue`): the
    /// socket may hold nothing to read.
    requeued: bool,
}

impl State {
    fn wants_read(&self) -> bool {
        !self.closing && !self.paused && !self.read_eof && self.conn_lost == 0
    }
}

/// The stdlib's default write-buffer limits (`_FlowControlMixin._set_write_buffer_limits()`),
/// which a new stream starts with; the Python side reads them from the module.
pub const DEFAULT_HIGH_WATER: usize = 64 * 1024;
pub const DEFAULT_LOW_WATER: usize = DEFAULT_HIGH_WATER / 4;

#[pyclass(frozen, module = "ferroloop._core", name = "StreamCore")]
pub struct StreamCore {
    fd: RawFd,
    event_loop: Py<LoopCore>,
    wants: Arc<Wants>,
    st: GilCell<State>,
}

/// What a write did, decided with the state borrowed and acted on after.
enum WriteOutcome {
    Done,
    /// The rest could not be buffered: no memory for it.
    NoMemory,
    Lost {
        log: bool,
    },
    Failed(std::io::Error),
    Buffered {
        pause: bool,
        register: bool,
    },
}

impl StreamCore {
    /// Makes the poller registration and `wants` match the state (see the module docs).
    fn sync_registration(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let core = slf.get();
        let (interest, registered) = {
            let st = core.st.borrow_mut(py);
            // While `loop.sendfile` owns the socket (it set `empty_waiter`), the fd is left to
            // its `sock_sendfile` once the buffer is drained: reading waits until it is done,
            // so that registering does not displace the writer sendfile put on the fd.
            let read = st.wants_read() && st.empty_waiter.is_none();
            let write = st.wbuf.size() > 0;
            core.wants.read.store(read, Ordering::Relaxed);
            core.wants.write.store(write, Ordering::Relaxed);
            let interest = match (st.started && !st.detached, read, write) {
                (false, _, _) | (true, false, false) => None,
                (true, true, false) => Some(sys::STREAM_READ),
                (true, false, true) => Some(Interest::WRITABLE),
                (true, true, true) => Some(sys::STREAM_READ | Interest::WRITABLE),
            };
            (interest, st.registered)
        };
        let event_loop = core.event_loop.bind(py);
        match (interest, registered) {
            (None, None) => return Ok(()),
            (Some(interest), Some(current)) if interest == current => return Ok(()),
            (Some(interest), Some(_)) => event_loop.get().stream_interest(py, core.fd, interest)?,
            (Some(interest), None) => {
                let read_ready = slf.getattr(intern!(py, "_read_ready"))?;
                let write_ready = slf.getattr(intern!(py, "_write_ready"))?;
                LoopCore::add_stream(
                    event_loop,
                    core.fd,
                    read_ready,
                    write_ready,
                    core.wants.clone(),
                    interest,
                )?;
            }
            (None, Some(_)) => {
                LoopCore::remove_stream(event_loop, core.fd)?;
            }
        }
        core.st.borrow_mut(py).registered = interest;
        Ok(())
    }

    fn transport(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.st.borrow_mut(py).transport.as_ref().map(|t| t.clone_ref(py))
    }

    /// Hands an error to the transport's `_fatal_error` (which closes it), except the two that
    /// must stop the loop, which propagate.
    #[cold]
    #[inline(never)]
    fn fatal(slf: &Bound<'_, Self>, err: PyErr, message: &str) -> PyResult<()> {
        let py = slf.py();
        if errors::leaves_the_loop(py, &err) {
            return Err(err);
        }
        if let Some(transport) = slf.get().transport(py) {
            errors::report_caught(py, err, |exc| {
                transport.call_method1(py, intern!(py, "_fatal_error"), (exc, message))
            })?;
        }
        Ok(())
    }

    #[cold]
    #[inline(never)]
    fn call_transport(slf: &Bound<'_, Self>, method: &Bound<'_, pyo3::types::PyString>) -> PyResult<()> {
        let py = slf.py();
        if let Some(transport) = slf.get().transport(py) {
            transport.call_method0(py, method)?;
        }
        Ok(())
    }

    /// What a `recv` got: `Some(n)` bytes to hand on, or None when there is nothing more to do
    /// this turn (it would block, or the EOF or error has gone to the transport).
    fn received(slf: &Bound<'_, Self>, got: std::io::Result<usize>) -> PyResult<Option<usize>> {
        match got {
            Ok(0) => Self::call_transport(slf, intern!(slf.py(), "_read_eof")).map(|()| None),
            Ok(n) => {
                slf.get().st.borrow_mut(slf.py()).large_reads = n >= LARGE_READ;
                Ok(Some(n))
            }
            Err(e) if sys::net::would_block(&e) => {
                slf.get().wants.urgent.store(false, Ordering::Relaxed);
                Ok(None)
            }
            Err(e) => Self::fatal(slf, errors::os_error(e), READ_FAILED).map(|()| None),
        }
    }

    /// After `n` bytes were read into room for `offered`: a full read may have left more behind,
    /// after a hangup an EOF is still to come, and after urgent data a read may have stopped at
    /// its mark; edge-triggering reports none of these again.
    fn requeue_if_more(&self, py: Python<'_>, n: usize, offered: usize) {
        let more = self.wants.hangup.load(Ordering::Relaxed) || self.wants.urgent.load(Ordering::Relaxed);
        if n == offered || more {
            self.requeue(py);
        }
    }

    /// Reads on the next turn, without a readiness event.
    fn requeue(&self, py: Python<'_>) {
        self.st.borrow_mut(py).requeued = true;
        self.event_loop.get().requeue_reader(py, self.fd);
    }

    /// Whether a read for a `BufferedProtocol` may go ahead: the stdlib asks the protocol for a
    /// buffer only when the socket is readable (data, EOF or an error), and a read queued again
    /// without an event (see `requeue`), or woken by urgent data, may find it is not.
    fn may_read_into_buffer(&self, py: Python<'_>) -> bool {
        let requeued = std::mem::take(&mut self.st.borrow_mut(py).requeued);
        !(requeued || self.wants.urgent.load(Ordering::Relaxed)) || sys::net::has_input(self.fd)
    }

    /// After a large read, how much a large one waiting would get (`FIONREAD`, at most
    /// `MAX_READ`): reading it straight into the object it ends up in costs less than copying it
    /// out of the shared buffer, and the object is the size the copy would have made. Whatever
    /// arrives after the kernel answered raises a new edge, so reading only that much loses no
    /// wake-up.
    fn large_waiting(&self, py: Python<'_>, max: usize) -> Option<usize> {
        if !self.st.borrow_mut(py).large_reads {
            return None;
        }
        sys::net::readable_now(self.fd)
            .filter(|&waiting| waiting >= LARGE_READ)
            .map(|w| w.min(max))
    }

    fn read_into_protocol(slf: &Bound<'_, Self>, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let core = slf.get();
        let max_read = core.st.borrow_mut(py).max_read;
        let max = match read_size(max_read, "recv") {
            Ok(max) => max,
            Err(e) => return Self::fatal(slf, e, READ_FAILED),
        };
        let read = match core.large_waiting(py, max) {
            Some(waiting) => ffi::bytes_read_into(py, waiting, |buf| sys::net::recv_uninit(core.fd, buf)),
            None => recv_bytes(py, core.fd, max),
        };
        // No memory for the bytes object: a fatal read error, as `sock.recv`'s is for the stdlib.
        let read = match read {
            Ok(read) => read,
            Err(e) => return Self::fatal(slf, e, READ_FAILED),
        };
        let (got, data) = match read {
            Ok((n, data)) => (Ok(n), Some(data)),
            Err(e) => (Err(e), None),
        };
        let (Some(n), Some(data)) = (Self::received(slf, got)?, data) else {
            return Ok(());
        };
        if let Err(e) = protocol.call_method1(intern!(py, "data_received"), (data,)) {
            return Self::fatal(slf, e, DATA_RECEIVED_FAILED);
        }
        slf.get().requeue_if_more(py, n, max);
        Ok(())
    }

    /// `read_into_protocol` for the stdlib's `StreamReaderProtocol`, with its `data_received`
    /// done here (see `reader.rs`).
    fn read_into_reader(slf: &Bound<'_, Self>, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        if slf.get().st.borrow_mut(py).max_read != MAX_READ as isize {
            return Self::read_into_protocol(slf, protocol);
        }
        let (reader, buffer) = match reader::plain_reader(protocol) {
            Ok(Some(found)) => found,
            Ok(None) => return Self::read_into_protocol(slf, protocol),
            Err(e) => return Self::fatal(slf, e, DATA_RECEIVED_FAILED),
        };
        let core = slf.get();
        // A large read goes straight onto the reader's buffer (`large_waiting`); if the buffer
        // cannot grow, the way below raises what it raised.
        let direct = match core.large_waiting(py, MAX_READ) {
            Some(waiting) => {
                match crate::ffi::bytearray_fill_tail(&buffer, waiting, |b| sys::net::recv_uninit(core.fd, b)) {
                    Ok(got) => got.map(|got| (got, None)),
                    Err(e) => return Self::fatal(slf, e, DATA_RECEIVED_FAILED),
                }
            }
            None => None,
        };
        // Append from the shared read buffer; if that is busy, or the append fails, the
        // protocol's own `data_received` gets the bytes (and raises what `extend` raised).
        let read = direct.or_else(|| {
            READ_BUF.with(|cell| {
                let mut buf = cell.try_borrow_mut().ok()?;
                Some(match sys::net::recv(slf.get().fd, &mut buf[..MAX_READ]) {
                    Ok(n) if n > 0 => match crate::ffi::bytearray_extend(&buffer, &buf[..n]) {
                        Ok(()) => (Ok(n), None),
                        Err(_) => (Ok(n), Some(PyBytes::new(py, &buf[..n]))),
                    },
                    got => (got, None),
                })
            })
        });
        let Some((got, unfed)) = read else {
            return Self::read_into_protocol(slf, protocol);
        };
        let Some(n) = Self::received(slf, got)? else {
            return Ok(());
        };
        let fed = match unfed {
            None => reader::after_append(&reader, &buffer),
            Some(data) => protocol.call_method1(intern!(py, "data_received"), (data,)).map(drop),
        };
        if let Err(e) = fed {
            return Self::fatal(slf, e, DATA_RECEIVED_FAILED);
        }
        slf.get().requeue_if_more(py, n, MAX_READ);
        Ok(())
    }

    fn read_into_buffer(slf: &Bound<'_, Self>, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let core = slf.get();
        const GET_BUFFER_FAILED: &str = "Fatal error: protocol.get_buffer() call failed.";
        if !core.may_read_into_buffer(py) {
            return Ok(());
        }
        let buf = match protocol.call_method1(intern!(py, "get_buffer"), (-1,)) {
            Ok(buf) => buf,
            Err(e) => return Self::fatal(slf, e, GET_BUFFER_FAILED),
        };
        match buf.len() {
            Ok(0) => {
                let err = PyRuntimeError::new_err("get_buffer() returned an empty buffer");
                return Self::fatal(slf, err, GET_BUFFER_FAILED);
            }
            Ok(_) => {}
            Err(e) => return Self::fatal(slf, e, GET_BUFFER_FAILED),
        }
        let mut offered = 0;
        let got = match ffi::with_writable(&buf, |bytes| {
            offered = bytes.len();
            sys::net::recv(core.fd, bytes)
        }) {
            Ok(got) => got,
            // Not a writable contiguous buffer: refused as the stdlib's `sock.recv_into(buf)`
            // refuses it.
            Err(_) => {
                let err = PyTypeError::new_err(format!(
                    "recv_into() argument 1 must be read-write bytes-like object, not {}",
                    buf.get_type().name()?
                ));
                return Self::fatal(slf, err, READ_FAILED);
            }
        };
        drop(buf);
        let Some(n) = Self::received(slf, got)? else {
            return Ok(());
        };
        if let Err(e) = protocol.call_method1(intern!(py, "buffer_updated"), (n,)) {
            return Self::fatal(slf, e, "Fatal error: protocol.buffer_updated() call failed.");
        }
        core.requeue_if_more(py, n, offered);
        Ok(())
    }

    /// One read, delivered the way the protocol takes it.
    fn read_once(slf: &Bound<'_, Self>, protocol: &Bound<'_, PyAny>, reads: Reads) -> PyResult<()> {
        match reads {
            Reads::Buffered => {
                if let Ok(tls) = protocol.cast::<TlsCore>() {
                    if TlsCore::read_from_stream(tls, slf)? {
                        return Ok(());
                    }
                }
                Self::read_into_buffer(slf, protocol)
            }
            Reads::FeedsReader => Self::read_into_reader(slf, protocol),
            Reads::Data => Self::read_into_protocol(slf, protocol),
        }
    }

    fn check_writable(st: &State, what: &str) -> PyResult<()> {
        if st.write_eof {
            return Err(PyRuntimeError::new_err(format!(
                "Cannot call {what}() after write_eof()"
            )));
        }
        if st.empty_waiter.is_some() {
            return Err(PyRuntimeError::new_err(format!(
                "unable to {what}; sendfile is in progress"
            )));
        }
        Ok(())
    }

    /// `write()` on bytes already checked: send what the socket takes now, buffer the rest (by
    /// reference when `shared`, the `bytes` object `bytes` belongs to, is given).
    fn write_bytes(&self, py: Python<'_>, bytes: &[u8], shared: Option<&Bound<'_, PyBytes>>) -> WriteOutcome {
        if bytes.is_empty() {
            return WriteOutcome::Done;
        }
        let mut st = self.st.borrow_mut(py);
        if st.conn_lost > 0 {
            let log = st.conn_lost >= LOST_WRITES_LOGGED_FROM;
            st.conn_lost += 1;
            return WriteOutcome::Lost { log };
        }
        let mut sent = 0;
        if st.wbuf.is_empty() {
            match sys::net::send(self.fd, bytes) {
                Ok(n) if n == bytes.len() => return WriteOutcome::Done,
                Ok(n) => sent = n,
                Err(e) if sys::net::would_block(&e) => {}
                Err(e) => return WriteOutcome::Failed(e),
            }
        }
        if st.wbuf.push(bytes, sent, shared).is_err() {
            return WriteOutcome::NoMemory;
        }
        self.wants.write.store(true, Ordering::Relaxed);
        WriteOutcome::Buffered {
            pause: st.wbuf.size() > st.high,
            register: st.started && !st.detached && st.registered.is_none_or(|i| !i.is_writable()),
        }
    }

    fn after_write(slf: &Bound<'_, Self>, outcome: WriteOutcome) -> PyResult<()> {
        let py = slf.py();
        match outcome {
            WriteOutcome::Done => Ok(()),
            WriteOutcome::NoMemory => Err(PyMemoryError::new_err("cannot buffer the data to write")),
            WriteOutcome::Lost { log } => {
                if log {
                    warn_lost_write(py, "socket.send() raised exception.")?;
                }
                Ok(())
            }
            WriteOutcome::Failed(e) => Self::fatal(slf, errors::os_error(e), "Fatal write error on socket transport"),
            WriteOutcome::Buffered { pause, register } => {
                if register {
                    if let Err(e) = slf.get().event_loop.get().check_closed() {
                        // The stdlib fails to watch the fd before it buffers the rest.
                        slf.get().st.borrow_mut(py).wbuf.clear();
                        return Err(e);
                    }
                    Self::sync_registration(slf)?;
                }
                if pause {
                    Self::call_transport(slf, intern!(py, "_maybe_pause_protocol"))?;
                }
                Ok(())
            }
        }
    }
}

#[pymethods]
impl StreamCore {
    #[new]
    fn py_new(event_loop: Bound<'_, LoopCore>, fd: RawFd, transport: Py<PyAny>) -> Self {
        StreamCore {
            fd,
            event_loop: event_loop.unbind(),
            wants: Arc::new(Wants::default()),
            st: GilCell::new(State {
                protocol: None,
                reads: Reads::Data,
                transport: Some(transport),
                wbuf: WriteBuffer::default(),
                high: DEFAULT_HIGH_WATER,
                low: DEFAULT_LOW_WATER,
                conn_lost: 0,
                closing: false,
                paused: false,
                read_eof: false,
                write_eof: false,
                empty_waiter: None,
                started: false,
                registered: None,
                detached: false,
                large_reads: false,
                max_read: MAX_READ as isize,
                requeued: false,
            }),
        }
    }

    /// What the stdlib's socket transport records of its socket when it is made, for a plain
    /// `socket.socket` of a family whose addresses `addr.rs` makes as the `socket` module does:
    /// `extra["sockname"]` and, with `peername`, `extra["peername"]` (`None` when the kernel
    /// will not say), and with `nodelay`, `TCP_NODELAY` set (a failure ignored, as there).
    fn record_socket(&self, extra: &Bound<'_, PyDict>, peername: bool, nodelay: bool) -> PyResult<()> {
        let py = extra.py();
        let address = |peer: bool| -> PyResult<Bound<'_, PyAny>> {
            match sys::net::socket_addr(self.fd, peer) {
                Ok(addr) => addr::to_python(py, &addr),
                Err(_) => Ok(py.None().into_bound(py)),
            }
        };
        extra.set_item(intern!(py, "sockname"), address(false)?)?;
        if peername {
            extra.set_item(intern!(py, "peername"), address(true)?)?;
        }
        if nodelay {
            let _ = sys::net::set_nodelay(self.fd);
        }
        Ok(())
    }

    /// The stdlib's start-up order, as `_transports._CoreReading._schedule_start` has it, each a
    /// callback of its own: `protocol.connection_made(transport)`, then reading, then
    /// `set_result(waiter)` (the stdlib's `futures._set_result_unless_cancelled`, passed in).
    fn schedule_start(
        slf: &Bound<'_, Self>,
        transport: Py<PyAny>,
        protocol: &Bound<'_, PyAny>,
        waiter: Option<Py<PyAny>>,
        set_result: Py<PyAny>,
    ) -> PyResult<()> {
        let py = slf.py();
        let event_loop = slf.get().event_loop.bind(py);
        let made = protocol.getattr(intern!(py, "connection_made"))?.unbind();
        LoopCore::push_soon(event_loop, made, CallArgs::One(transport), None, "call_soon", false)?;
        let start = slf.getattr(intern!(py, "start"))?.unbind();
        LoopCore::push_soon(event_loop, start, CallArgs::Zero, None, "call_soon", false)?;
        if let Some(waiter) = waiter {
            let args = CallArgs::Two(waiter, py.None());
            LoopCore::push_soon(event_loop, set_result, args, None, "call_soon", false)?;
        }
        Ok(())
    }

    /// Sets the transport's `max_size` (see `_transports._ReadSize`).
    fn set_max_read(&self, py: Python<'_>, size: isize) {
        self.st.borrow_mut(py).max_read = size;
    }

    /// `buffered`: the protocol is a `BufferedProtocol`. The stdlib's `StreamReaderProtocol` is
    /// fed without its Python methods (see `reader.rs`).
    fn set_protocol(&self, py: Python<'_>, protocol: Py<PyAny>, buffered: bool) -> PyResult<()> {
        let reads = if buffered {
            Reads::Buffered
        } else if reader::is_stream_protocol(protocol.bind(py))? {
            Reads::FeedsReader
        } else {
            Reads::Data
        };
        let old = {
            let mut st = self.st.borrow_mut(py);
            st.reads = reads;
            st.protocol.replace(protocol)
        };
        drop(old);
        Ok(())
    }

    /// Starts polling (after `connection_made`, as the stdlib does).
    fn start(slf: &Bound<'_, Self>) -> PyResult<()> {
        slf.get().st.borrow_mut(slf.py()).started = true;
        Self::sync_registration(slf)
    }

    fn _read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (protocol, reads) = {
            let st = slf.get().st.borrow_mut(py);
            if !st.wants_read() {
                return Ok(());
            }
            match &st.protocol {
                Some(p) => (p.clone_ref(py), st.reads),
                None => return Ok(()),
            }
        };
        let result = Self::read_once(slf, protocol.bind(py), reads);
        if let Err(e) = &result {
            // Ctrl-C (or `SystemExit`) in a protocol callback leaves the loop. What the socket
            // still holds, or its EOF, gets no new edge: read again when the loop runs next, as
            // the stdlib's level-triggered selector reports the fd again.
            if errors::leaves_the_loop(py, e) {
                slf.get().requeue(py);
            }
        }
        result
    }

    fn _write_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let core = slf.get();
        let (result, low) = {
            let mut st = core.st.borrow_mut(py);
            if st.conn_lost > 0 || st.wbuf.is_empty() {
                core.wants
                    .write
                    .store(st.wbuf.size() > 0 && st.conn_lost == 0, Ordering::Relaxed);
                return Ok(());
            }
            let slices = st.wbuf.slices(py);
            let result = sys::net::send_vectored(core.fd, &slices);
            drop(slices);
            match result {
                Ok(n) => {
                    st.wbuf.consume(n);
                    (Ok(()), st.wbuf.size() <= st.low)
                }
                Err(e) if sys::net::would_block(&e) => return Ok(()),
                Err(e) => {
                    st.wbuf.clear();
                    core.wants.write.store(false, Ordering::Relaxed);
                    (Err((e, st.empty_waiter.as_ref().map(|w| w.clone_ref(py)))), false)
                }
            }
        };
        if let Err((e, waiter)) = result {
            let exc = errors::os_error(e);
            let value = exc.value(py).clone();
            Self::fatal(slf, exc, "Fatal write error on socket transport")?;
            if let Some(waiter) = waiter {
                waiter.call_method1(py, intern!(py, "set_exception"), (value,))?;
            }
            return Self::sync_registration(slf);
        }
        if low {
            Self::call_transport(slf, intern!(py, "_maybe_resume_protocol"))?;
        }
        let (empty, waiter, closing, write_eof) = {
            let st = core.st.borrow_mut(py);
            (
                st.wbuf.is_empty(),
                st.empty_waiter.as_ref().map(|w| w.clone_ref(py)),
                st.closing,
                st.write_eof,
            )
        };
        if !empty {
            return Ok(());
        }
        core.wants.write.store(false, Ordering::Relaxed);
        if let Some(waiter) = waiter {
            waiter.call_method1(py, intern!(py, "set_result"), (py.None(),))?;
        }
        if closing {
            Self::call_transport(slf, intern!(py, "_finish_close"))?;
        } else if write_eof {
            sys::net::shutdown_write(core.fd).map_err(errors::os_error)?;
        }
        Self::sync_registration(slf)
    }

    fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        check_bytes_like(data)?;
        let core = slf.get();
        Self::check_writable(&core.st.borrow_mut(py), "write")?;
        if is_empty_view(data)? {
            return Ok(());
        }
        let outcome = match wbuf::with_data(data, |bytes, shared| core.write_bytes(py, bytes, shared)) {
            Ok(outcome) => outcome,
            // Not a contiguous buffer: the stdlib takes it and fails to send it, which is fatal;
            // 3.11's appends it to its bytearray buffer when data waits there, which refuses it.
            Err(e) => {
                let (lost, waiting) = {
                    let st = core.st.borrow_mut(py);
                    (st.conn_lost > 0, !st.wbuf.is_empty())
                };
                if lost {
                    return Ok(());
                }
                if waiting && py.version_info() < (3, 12) {
                    return Err(PyTypeError::new_err(format!(
                        "can't set bytearray slice from {}",
                        data.get_type().name()?
                    )));
                }
                return Self::fatal(slf, e, "Fatal write error on socket transport");
            }
        };
        Self::after_write(slf, outcome)
    }

    /// `writelines()`: the pieces joined, then one write.
    fn writelines(slf: &Bound<'_, Self>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let core = slf.get();
        Self::check_writable(&core.st.borrow_mut(py), "writelines")?;
        if !list_of_data.is_truthy()? {
            return Ok(());
        }
        let mut joined = Vec::new();
        // A piece that is a buffer but cannot be read whole (a non-contiguous view): the stdlib
        // takes it and fails to send it, which is fatal, once every piece proved to be a buffer.
        let mut unreadable = None;
        for item in list_of_data.try_iter()? {
            let item = item?;
            match ffi::with_bytes(&item, |bytes| {
                joined
                    .try_reserve(bytes.len())
                    .map(|()| joined.extend_from_slice(bytes))
            }) {
                Ok(pushed) => pushed.map_err(|_| PyMemoryError::new_err("cannot join the data to write"))?,
                Err(e) if e.is_instance_of::<PyBufferError>(py) => {
                    unreadable.get_or_insert(e);
                }
                // Not a buffer: refused as the stdlib's `memoryview(data)` refuses it.
                Err(e) if e.is_instance_of::<PyTypeError>(py) => {
                    return Err(PyTypeError::new_err(format!("memoryview: {}", e.value(py))));
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(e) = unreadable {
            if core.st.borrow_mut(py).conn_lost > 0 {
                return Ok(());
            }
            return Self::fatal(slf, e, "Fatal write error on socket transport");
        }
        let outcome = core.write_bytes(py, &joined, None);
        Self::after_write(slf, outcome)
    }

    fn write_eof(&self, py: Python<'_>) -> PyResult<()> {
        let empty = {
            let mut st = self.st.borrow_mut(py);
            if st.closing || st.write_eof {
                return Ok(());
            }
            st.write_eof = true;
            st.wbuf.is_empty()
        };
        if empty {
            sys::net::shutdown_write(self.fd).map_err(errors::os_error)?;
        }
        Ok(())
    }

    fn get_write_buffer_size(&self, py: Python<'_>) -> usize {
        self.st.borrow_mut(py).wbuf.size()
    }

    fn set_limits(&self, py: Python<'_>, high: usize, low: usize) {
        let mut st = self.st.borrow_mut(py);
        st.high = high;
        st.low = low;
    }

    fn is_closing(&self, py: Python<'_>) -> bool {
        self.st.borrow_mut(py).closing
    }

    /// The stdlib transports' `_paused`: set by `pause_reading()`, kept through closing.
    #[getter]
    fn paused(&self, py: Python<'_>) -> bool {
        self.st.borrow_mut(py).paused
    }

    fn is_reading(&self, py: Python<'_>) -> bool {
        let st = self.st.borrow_mut(py);
        !st.closing && !st.paused
    }

    /// `pause_reading()`; false when there was nothing to do.
    fn pause_reading(slf: &Bound<'_, Self>) -> PyResult<bool> {
        {
            let mut st = slf.get().st.borrow_mut(slf.py());
            if st.closing || st.paused {
                return Ok(false);
            }
            st.paused = true;
        }
        Self::sync_registration(slf)?;
        Ok(true)
    }

    /// `resume_reading()`; false when there was nothing to do. Data that arrived meanwhile is
    /// read on the next turn.
    fn resume_reading(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let py = slf.py();
        let core = slf.get();
        {
            let mut st = core.st.borrow_mut(py);
            if st.closing || !st.paused {
                return Ok(false);
            }
            st.paused = false;
            st.read_eof = false;
        }
        // The stdlib's `_add_reader` fails on a closed loop, after the transport counts as
        // reading again; registering fails so too, but not when the fd stays registered for
        // writing.
        core.event_loop.get().check_closed()?;
        Self::sync_registration(slf)?;
        core.requeue(py);
        Ok(true)
    }

    /// EOF arrived and the protocol keeps the transport open: stop reading.
    fn stop_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        slf.get().st.borrow_mut(slf.py()).read_eof = true;
        Self::sync_registration(slf)
    }

    /// `close()`: stop reading; true when nothing is left to send, so `connection_lost` is due
    /// now (otherwise `_write_ready` calls `_finish_close` once the buffer is flushed).
    fn begin_close(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let lose_now = {
            let mut st = slf.get().st.borrow_mut(slf.py());
            if st.closing {
                return Ok(false);
            }
            st.closing = true;
            let empty = st.wbuf.is_empty();
            if empty {
                st.conn_lost += 1;
            }
            empty
        };
        Self::sync_registration(slf)?;
        Ok(lose_now)
    }

    /// `abort()` and fatal errors: drop the buffer; false if `connection_lost` is already due.
    fn force_close(slf: &Bound<'_, Self>) -> PyResult<bool> {
        {
            let mut st = slf.get().st.borrow_mut(slf.py());
            if st.conn_lost > 0 {
                return Ok(false);
            }
            st.wbuf.clear();
            st.closing = true;
            st.conn_lost += 1;
        }
        Self::sync_registration(slf)?;
        Ok(true)
    }

    /// The connection is lost: unregister the fd (before the socket is closed) and let go of
    /// the protocol and transport.
    fn detach(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let core = slf.get();
        let (registered, taken) = {
            let mut st = core.st.borrow_mut(py);
            st.detached = true;
            st.conn_lost = st.conn_lost.max(1);
            st.wbuf.clear();
            let taken = (st.protocol.take(), st.transport.take(), st.empty_waiter.take());
            (st.registered.take().is_some(), taken)
        };
        core.wants.read.store(false, Ordering::Relaxed);
        core.wants.write.store(false, Ordering::Relaxed);
        drop(taken);
        if registered {
            LoopCore::remove_stream(core.event_loop.bind(py), core.fd)?;
        }
        Ok(())
    }

    #[getter]
    fn polling(&self, py: Python<'_>) -> (bool, bool) {
        let st = self.st.borrow_mut(py);
        st.registered
            .map_or((false, false), |i| (i.is_readable(), i.is_writable()))
    }

    #[getter]
    fn empty_waiter(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.st.borrow_mut(py).empty_waiter.as_ref().map(|w| w.clone_ref(py))
    }

    #[setter]
    fn set_empty_waiter(slf: &Bound<'_, Self>, waiter: Option<Py<PyAny>>) -> PyResult<()> {
        let old = std::mem::replace(&mut slf.get().st.borrow_mut(slf.py()).empty_waiter, waiter);
        drop(old);
        Self::sync_registration(slf)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.event_loop)?;
        if let Some(st) = self.st.try_borrow_in_gc() {
            visit.call(&st.protocol)?;
            visit.call(&st.transport)?;
            visit.call(&st.empty_waiter)?;
        }
        Ok(())
    }

    fn __clear__(&self) {
        if let Some(mut st) = self.st.try_borrow_in_gc() {
            let taken = (st.protocol.take(), st.transport.take(), st.empty_waiter.take());
            drop(st);
            // The collector calls this with the GIL held.
            Python::attach(|_| drop(taken));
        }
    }
}
