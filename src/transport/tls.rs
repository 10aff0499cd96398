//! `TlsCore`: the native base of `ferroloop._tls.SSLProtocol`, the TLS protocol of the
//! connections ferroloop makes.
//!
//! `SSLProtocol` is the stdlib's `asyncio.sslproto.SSLProtocol` (an `ssl.MemoryBIO` state
//! machine) with this class first among its bases. The state machine stays the stdlib's Python
//! code; this class only
//!
//! - holds the attributes the steady state reads (`_state`, `_sslobj`, the two BIOs, the flow
//!   control flags and limits, the write backlog) as native fields behind getset descriptors, so
//!   the stdlib's code reads and writes them as before and the code here reads them without a
//!   dictionary lookup;
//! - takes an established connection's reads straight from the socket (`read_from_stream`, called
//!   by `StreamCore` instead of `get_buffer`/`buffer_updated`): the received bytes go into the
//!   incoming BIO, every complete record is decrypted and handed to the application protocol's
//!   `data_received` in one call, and what OpenSSL then has to send is written to the transport;
//! - encrypts and sends an application write at once when nothing is queued before it
//!   (`_app_write`, which the application transport uses as its `write`);
//! - replaces `_process_outgoing` with the same steps, its flow-control call made only when a
//!   limit is crossed (the call itself decides, as it always does).
//!
//! Anything else (a handshake, a shutdown, paused reading, a `BufferedProtocol` application, a
//! backlog, a limit that is not an `int`) goes to the stdlib's methods, so callbacks, writes and
//! errors happen in the stdlib's order.

use std::sync::atomic::{AtomicUsize, Ordering};

use pyo3::exceptions::{PyAttributeError, PyException, PyTypeError};
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PySlice, PyTuple};
use pyo3::PyTraverseError;

use super::{is_bytes_like, reader, StreamCore, MAX_READ, READ_BUF};
use crate::ffi::{self, intern, BytesBuilder, GilCell, GilOnce};
use crate::{errors, sys};

const FATAL: &str = "Fatal error on SSL protocol";
const BUFFER_UPDATED_FAILED: &str = "Fatal error: protocol.buffer_updated() call failed.";

/// The stdlib objects the fast paths compare with.
struct Known {
    wrapped: Py<PyAny>,
    again: Py<PyAny>,
    ssl_object: Py<PyAny>,
}

fn known(py: Python<'_>) -> PyResult<&'static Known> {
    static KNOWN: GilOnce<Known> = GilOnce::new();
    KNOWN.get_or_try_init(py, || {
        let sslproto = py.import("asyncio.sslproto")?;
        let ssl = py.import("ssl")?;
        Ok(Known {
            wrapped: sslproto.getattr("SSLProtocolState")?.getattr("WRAPPED")?.unbind(),
            again: sslproto.getattr("SSLAgainErrors")?.unbind(),
            ssl_object: ssl.getattr("SSLObject")?.unbind(),
        })
    })
}

// The native attributes, by index.
const STATE: usize = 0;
const APP_PROTOCOL: usize = 1;
const APP_PROTOCOL_IS_BUFFER: usize = 2;
const APP_READING_PAUSED: usize = 3;
const APP_WRITING_PAUSED: usize = 4;
const SSL_READING_PAUSED: usize = 5;
const SSL_WRITING_PAUSED: usize = 6;
const SSLOBJ: usize = 7;
const INCOMING: usize = 8;
const OUTGOING: usize = 9;
const TRANSPORT: usize = 10;
const WRITE_BACKLOG: usize = 11;
const WRITE_BUFFER_SIZE: usize = 12;
const INCOMING_HIGH_WATER: usize = 13;
const INCOMING_LOW_WATER: usize = 14;
const OUTGOING_HIGH_WATER: usize = 15;
const OUTGOING_LOW_WATER: usize = 16;
const FIELDS: usize = 17;

const NAMES: [&str; FIELDS] = [
    "_state",
    "_app_protocol",
    "_app_protocol_is_buffer",
    "_app_reading_paused",
    "_app_writing_paused",
    "_ssl_reading_paused",
    "_ssl_writing_paused",
    "_sslobj",
    "_incoming",
    "_outgoing",
    "_transport",
    "_write_backlog",
    "_write_buffer_size",
    "_incoming_high_water",
    "_incoming_low_water",
    "_outgoing_high_water",
    "_outgoing_low_water",
];

/// What a field's value says, worked out when it is set.
#[derive(Clone, Copy, Default)]
struct Derived {
    /// The value is true (for the flags).
    truthy: bool,
    /// The value as an `int` that fits in 64 bits (for the sizes and limits).
    int: Option<i64>,
}

#[derive(Default)]
struct Fields {
    slots: [Option<Py<PyAny>>; FIELDS],
    derived: [Derived; FIELDS],
    /// `_state` is `SSLProtocolState.WRAPPED`.
    wrapped: bool,
    /// What `read`, `write` and `pending` are called on: the `_ssl._SSLSocket` inside an
    /// `ssl.SSLObject` (whose methods only forward to it), or a subclass's object itself.
    ssl: Option<Py<PyAny>>,
    /// `ssl` is that `_ssl._SSLSocket`, whose `read(n, buffer)` reads into a buffer.
    ssl_is_native: bool,
    /// `_incoming` is an `ssl.MemoryBIO` (it copies what it is given, so it may be given a view
    /// of the shared read buffer).
    incoming_is_bio: bool,
}

impl Fields {
    fn get<'py>(&self, py: Python<'py>, i: usize) -> Option<Bound<'py, PyAny>> {
        self.slots[i].as_ref().map(|v| v.bind(py).clone())
    }

    fn flag(&self, i: usize) -> bool {
        self.derived[i].truthy
    }
}

#[pyclass(frozen, subclass, module = "ferroloop._core", name = "TlsCore")]
pub struct TlsCore {
    fields: GilCell<Fields>,
    /// The class's `max_size` (the most one read takes), read once; 0 until `_sslobj` is set.
    max_size: AtomicUsize,
}

/// The pieces of a read or write, taken out of the fields so no borrow is held across a call.
struct Steady<'py> {
    ssl: Bound<'py, PyAny>,
    /// `ssl` is an `_ssl._SSLSocket` (see `Fields::ssl_is_native`).
    native: bool,
    incoming: Bound<'py, PyAny>,
}

impl TlsCore {
    fn load(slf: &Bound<'_, Self>, i: usize) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let value = slf.get().fields.borrow_mut(py).slots[i]
            .as_ref()
            .map(|v| v.clone_ref(py));
        value.ok_or_else(|| Self::unset(slf, i))
    }

    /// The `AttributeError` for a field that was never set.
    #[cold]
    fn unset(slf: &Bound<'_, Self>, i: usize) -> PyErr {
        let type_name = slf.get_type().name().map(|n| n.to_string()).unwrap_or_default();
        PyAttributeError::new_err(format!("'{type_name}' object has no attribute '{}'", NAMES[i]))
    }

    fn store(slf: &Bound<'_, Self>, i: usize, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let core = slf.get();
        let mut derived = Derived::default();
        let mut extra_ssl = None;
        let mut native = false;
        let mut wrapped = false;
        let mut is_bio = false;
        match i {
            STATE => wrapped = value.is(known(py)?.wrapped.bind(py)),
            APP_PROTOCOL_IS_BUFFER
            | APP_READING_PAUSED
            | APP_WRITING_PAUSED
            | SSL_READING_PAUSED
            | SSL_WRITING_PAUSED => derived.truthy = value.is_truthy()?,
            WRITE_BUFFER_SIZE | INCOMING_HIGH_WATER | INCOMING_LOW_WATER | OUTGOING_HIGH_WATER | OUTGOING_LOW_WATER => {
                derived.int = if value.is_exact_instance_of::<pyo3::types::PyInt>() {
                    value.extract::<i64>().ok()
                } else {
                    None
                };
            }
            SSLOBJ if !value.is_none() => {
                extra_ssl = Some(if value.get_type().is(known(py)?.ssl_object.bind(py)) {
                    value.getattr(intern!(py, "_sslobj"))?
                } else {
                    value.clone()
                });
                native = match &extra_ssl {
                    Some(ssl) => ffi::is_ssl_socket(ssl)?,
                    None => false,
                };
                if core.max_size.load(Ordering::Relaxed) == 0 {
                    let max: isize = slf.getattr(intern!(py, "max_size"))?.extract().unwrap_or(0);
                    let max = usize::try_from(max).unwrap_or(0);
                    core.max_size.store(max, Ordering::Relaxed);
                }
            }
            INCOMING => is_bio = ffi::is_memory_bio(value)?,
            _ => {}
        }
        let old = {
            let mut f = core.fields.borrow_mut(py);
            f.derived[i] = derived;
            match i {
                STATE => f.wrapped = wrapped,
                INCOMING => f.incoming_is_bio = is_bio,
                _ => {}
            }
            let old_ssl = if i == SSLOBJ {
                f.ssl_is_native = native;
                std::mem::replace(&mut f.ssl, extra_ssl.map(Bound::unbind))
            } else {
                None
            };
            (f.slots[i].replace(value.clone().unbind()), old_ssl)
        };
        // Dropped with no borrow held: a finalizer may read these fields.
        drop(old);
        Ok(())
    }

    /// What an established connection needs to read, or None if the stdlib's path must take it.
    fn steady_read<'py>(&self, py: Python<'py>) -> Option<Steady<'py>> {
        let f = self.fields.borrow_mut(py);
        if !f.wrapped || f.flag(APP_READING_PAUSED) || f.flag(APP_PROTOCOL_IS_BUFFER) || !f.incoming_is_bio {
            return None;
        }
        Some(Steady {
            ssl: f.ssl.as_ref()?.bind(py).clone(),
            native: f.ssl_is_native,
            incoming: f.get(py, INCOMING)?,
        })
    }

    fn call0(slf: &Bound<'_, Self>, name: &Bound<'_, pyo3::types::PyString>) -> PyResult<()> {
        slf.call_method0(name).map(drop)
    }

    /// `self._fatal_error(exc, FATAL)` for an `Exception` (the stdlib's `except Exception`);
    /// anything else goes on up.
    fn fatal(slf: &Bound<'_, Self>, err: PyErr) -> PyResult<()> {
        let py = slf.py();
        if !err.is_instance_of::<PyException>(py) {
            return Err(err);
        }
        errors::report_caught(py, err, |exc| {
            slf.call_method1(intern!(py, "_fatal_error"), (exc, FATAL)).map(drop)
        })
    }

    /// Decrypts every complete record in the incoming BIO into one `data_received`, then sends
    /// what OpenSSL has to send and applies the incoming flow control: the stdlib's `_do_read`
    /// for an established connection and a plain `Protocol`.
    fn deliver(slf: &Bound<'_, Self>, st: &Steady<'_>) -> PyResult<()> {
        let py = slf.py();
        let max = slf.get().max_size.load(Ordering::Relaxed);
        let held = usize::try_from(pending(&st.incoming)?).unwrap_or(0);
        let (data, eof) = if st.native && held > RECORD_PLAINTEXT {
            Self::decrypt_into_one(st, held, max)?
        } else {
            Self::decrypt_pieces(st, held, max)?
        };
        if let Some(data) = data {
            let app = Self::load(slf, APP_PROTOCOL)?;
            let app = app.bind(py);
            if !Self::feed_reader(app, &data)? {
                app.call_method1(intern!(py, "data_received"), (data,))?;
            }
        }
        if eof {
            // close_notify
            Self::call0(slf, intern!(py, "_call_eof_received"))?;
            Self::call0(slf, intern!(py, "_start_shutdown"))?;
        }
        let backlog = Self::load(slf, WRITE_BACKLOG)?;
        if backlog.bind(py).is_truthy()? {
            Self::call0(slf, intern!(py, "_do_write"))?;
        } else {
            Self::process_outgoing(slf)?;
        }
        let size = pending(&st.incoming)?;
        let call = {
            let f = slf.get().fields.borrow_mut(py);
            let (high, low) = (f.derived[INCOMING_HIGH_WATER].int, f.derived[INCOMING_LOW_WATER].int);
            if f.flag(SSL_READING_PAUSED) {
                low.is_none_or(|low| size <= low)
            } else {
                high.is_none_or(|high| size >= high)
            }
        };
        if call {
            Self::call0(slf, intern!(py, "_control_ssl_reading"))?;
        }
        Ok(())
    }

    /// Every complete record waiting, decrypted a `read` (one record at most) at a time, the
    /// pieces joined: `(plaintext, whether the peer's close_notify came)`. `held` is what the
    /// incoming BIO holds.
    fn decrypt_pieces<'py>(st: &Steady<'py>, held: usize, max: usize) -> PyResult<(Option<Bound<'py, PyAny>>, bool)> {
        let py = st.ssl.py();
        let read = intern!(py, "read");
        let mut chunks: Vec<Bound<'_, PyAny>> = Vec::new();
        let eof = read_records(st, held, |held| {
            // A subclass's object is asked exactly what the stdlib asks it.
            let len = if st.native { read_size(held, max) } else { max };
            let chunk = st.ssl.call_method1(read, (len,))?;
            let n = chunk.len()?;
            if n > 0 {
                chunks.push(chunk);
            }
            Ok(n)
        })?;
        let data = match chunks.len() {
            0 => None,
            1 => chunks.pop(),
            _ => Some(PyBytes::new(py, b"").call_method1(intern!(py, "join"), (chunks,))?),
        };
        Ok((data, eof))
    }

    /// `decrypt_pieces` for more than one record's worth waiting and an `_ssl._SSLSocket`: each
    /// `read(n, buffer)` decrypts into the unfilled end of one `bytes`, sized for all of it up
    /// front, so no `bytes` is made per record nor copied again to join them.
    fn decrypt_into_one<'py>(st: &Steady<'py>, held: usize, max: usize) -> PyResult<(Option<Bound<'py, PyAny>>, bool)> {
        let py = st.ssl.py();
        // What is held decrypts to less than its size; one record more covers the part of a
        // record OpenSSL may have taken from the BIO before, which is no longer counted there.
        let mut out = BytesBuilder::with_capacity(py, held.saturating_add(RECORD_PLAINTEXT))?;
        let eof = read_records(st, held, |held| {
            if out.spare() == 0 {
                out.reserve(held.max(RECORD_PLAINTEXT))?;
            }
            let len = out.spare().min(max);
            out.ssl_read(&st.ssl, len)
        })?;
        let data = if out.is_empty() {
            None
        } else {
            Some(out.finish()?.into_any())
        };
        Ok((data, eof))
    }

    /// `data_received` of the stdlib's `StreamReaderProtocol`, done here when `app` is one and
    /// its reader is in the plain state (see `reader.rs`); false, having done nothing, otherwise or
    /// when the buffer cannot grow (the caller then calls `data_received`, which raises what
    /// `extend` did).
    fn feed_reader(app: &Bound<'_, PyAny>, data: &Bound<'_, PyAny>) -> PyResult<bool> {
        if !reader::is_stream_protocol(app)? {
            return Ok(false);
        }
        let (Ok(bytes), Some((reader, buffer))) = (data.cast::<PyBytes>(), reader::plain_reader(app)?) else {
            return Ok(false);
        };
        if crate::ffi::bytearray_extend(&buffer, bytes.as_bytes()).is_err() {
            return Ok(false);
        }
        reader::after_append(&reader, &buffer)?;
        Ok(true)
    }

    fn process_outgoing(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (writing_paused, outgoing) = {
            let f = slf.get().fields.borrow_mut(py);
            (f.flag(SSL_WRITING_PAUSED), f.get(py, OUTGOING))
        };
        let Some(outgoing) = outgoing else {
            return Err(Self::unset(slf, OUTGOING));
        };
        if !writing_paused {
            let data = outgoing.call_method0(intern!(py, "read"))?;
            if data.len()? > 0 {
                let transport = Self::load(slf, TRANSPORT)?;
                transport.bind(py).call_method1(intern!(py, "write"), (data,))?;
            }
        }
        let pending = pending(&outgoing)?;
        let call = {
            let f = slf.get().fields.borrow_mut(py);
            let size = f.derived[WRITE_BUFFER_SIZE].int.and_then(|n| n.checked_add(pending));
            let (high, low) = (f.derived[OUTGOING_HIGH_WATER].int, f.derived[OUTGOING_LOW_WATER].int);
            match (size, f.flag(APP_WRITING_PAUSED)) {
                (None, _) => true,
                (Some(size), true) => low.is_none_or(|low| size <= low),
                (Some(size), false) => high.is_none_or(|high| size >= high),
            }
        };
        if call {
            Self::call0(slf, intern!(py, "_control_app_writing"))?;
        }
        Ok(())
    }

    /// `self._write_buffer_size += n`, through the attribute (so any `int` works).
    fn grow_write_buffer(slf: &Bound<'_, Self>, n: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let size = Self::load(slf, WRITE_BUFFER_SIZE)?;
        let grown = size.bind(py).add(n)?;
        Self::store(slf, WRITE_BUFFER_SIZE, &grown)
    }

    /// Reads what the socket has into the incoming BIO and on through the steady state, for
    /// `StreamCore`. Returns false, having read nothing, when the stdlib's path must take it.
    pub(super) fn read_from_stream(slf: &Bound<'_, Self>, stream: &Bound<'_, StreamCore>) -> PyResult<bool> {
        let py = slf.py();
        let Some(st) = slf.get().steady_read(py) else {
            return Ok(false);
        };
        let max = slf.get().max_size.load(Ordering::Relaxed);
        if max == 0 || max > MAX_READ {
            return Ok(false);
        }
        let write = intern!(py, "write");
        let got = READ_BUF.with(|cell| {
            let Ok(mut buf) = cell.try_borrow_mut() else {
                return Ok(None);
            };
            let got = sys::net::recv(stream.get().fd, &mut buf[..max]);
            if let Ok(n @ 1..) = got {
                let data = &buf[..n];
                if ffi::memory_bio_write(&st.incoming, data)?.is_none() {
                    st.incoming.call_method1(write, (PyBytes::new(py, data),))?;
                }
            }
            Ok::<_, PyErr>(Some(got))
        });
        let got = match got {
            Ok(Some(got)) => got,
            Ok(None) => return Ok(false),
            Err(e) => {
                StreamCore::fatal(stream, e, BUFFER_UPDATED_FAILED)?;
                return Ok(true);
            }
        };
        let Some(n) = StreamCore::received(stream, got)? else {
            return Ok(true);
        };
        if let Err(e) = Self::deliver(slf, &st).or_else(|e| Self::fatal(slf, e)) {
            StreamCore::fatal(stream, e, BUFFER_UPDATED_FAILED)?;
            return Ok(true);
        }
        stream.get().requeue_if_more(py, n, max);
        Ok(true)
    }
}

/// The most plaintext one TLS record carries (RFC 8446 5.1, RFC 5246 6.2.1).
const RECORD_PLAINTEXT: usize = 16 * 1024;

/// The `len` of one `_SSLSocket.read` in the steady state: what the stdlib asks for (`max`, the
/// protocol's `max_size`), but no more than the `held` bytes waiting (ciphertext in the incoming
/// BIO plus decrypted bytes in OpenSSL, of which a read returns at most as many) nor one record's
/// plaintext (a read returns one record's at most). `_SSLSocket.read` makes a `bytes` of `len` and
/// shrinks it to what it read; asked for 256 KiB to return a 100-byte request, it allocated and
/// freed 256 KiB. A read that returns less than is there leaves the rest pending, and `deliver`
/// reads on while anything is pending, so what `data_received` gets is the same.
fn read_size(held: usize, max: usize) -> usize {
    held.clamp(1, RECORD_PLAINTEXT).min(max)
}

/// Calls `read_one(held)` (one read of decrypted bytes; how many it read, 0 when the peer's
/// close_notify came) until OpenSSL needs more input (`SSLWantReadError` and the like) or nothing
/// is held any more; `held` is what is waiting before each read. Whether close_notify came.
fn read_records(
    st: &Steady<'_>,
    mut held: usize,
    mut read_one: impl FnMut(usize) -> PyResult<usize>,
) -> PyResult<bool> {
    let py = st.ssl.py();
    let again = known(py)?.again.bind(py);
    loop {
        match read_one(held) {
            Ok(0) => return Ok(true),
            Ok(_) => {}
            Err(e) if e.is_instance(py, again) => return Ok(false),
            Err(e) => return Err(e),
        }
        match still_held(st)? {
            Some(more) => held = more,
            None => return Ok(false),
        }
    }
}

/// After a read: what is still to decrypt (ciphertext in the incoming BIO plus plaintext
/// OpenSSL holds), or None when there is nothing.
fn still_held(st: &Steady<'_>) -> PyResult<Option<usize>> {
    let incoming = usize::try_from(pending(&st.incoming)?).unwrap_or(0);
    let decrypted: usize = st.ssl.call_method0(intern!(st.ssl.py(), "pending"))?.extract()?;
    Ok((incoming > 0 || decrypted > 0).then(|| incoming.saturating_add(decrypted)))
}

/// A BIO's `pending` (bytes it holds).
fn pending(bio: &Bound<'_, PyAny>) -> PyResult<i64> {
    bio.getattr(intern!(bio.py(), "pending"))?.extract()
}

/// One `#[pymethods]` block (PyO3 allows one per class): a getter and a setter for each native
/// field, then the methods given in braces.
macro_rules! native_fields {
    ($($index:ident: $get:ident, $set:ident, $name:literal;)* { $($rest:tt)* }) => {
        #[pymethods]
        impl TlsCore {
            $($rest)*

            $(
                #[getter($name)]
                fn $get(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
                    Self::load(slf, $index)
                }

                #[setter($name)]
                fn $set(slf: &Bound<'_, Self>, value: &Bound<'_, PyAny>) -> PyResult<()> {
                    Self::store(slf, $index, value)
                }
            )*
        }
    };
}

native_fields! {
    STATE: get_state, set_state, "_state";
    APP_PROTOCOL: get_app_protocol, set_app_protocol, "_app_protocol";
    APP_PROTOCOL_IS_BUFFER: get_app_protocol_is_buffer, set_app_protocol_is_buffer, "_app_protocol_is_buffer";
    APP_READING_PAUSED: get_app_reading_paused, set_app_reading_paused, "_app_reading_paused";
    APP_WRITING_PAUSED: get_app_writing_paused, set_app_writing_paused, "_app_writing_paused";
    SSL_READING_PAUSED: get_ssl_reading_paused, set_ssl_reading_paused, "_ssl_reading_paused";
    SSL_WRITING_PAUSED: get_ssl_writing_paused, set_ssl_writing_paused, "_ssl_writing_paused";
    SSLOBJ: get_sslobj, set_sslobj, "_sslobj";
    INCOMING: get_incoming, set_incoming, "_incoming";
    OUTGOING: get_outgoing, set_outgoing, "_outgoing";
    TRANSPORT: get_transport, set_transport, "_transport";
    WRITE_BACKLOG: get_write_backlog, set_write_backlog, "_write_backlog";
    WRITE_BUFFER_SIZE: get_write_buffer_size, set_write_buffer_size, "_write_buffer_size";
    INCOMING_HIGH_WATER: get_incoming_high_water, set_incoming_high_water, "_incoming_high_water";
    INCOMING_LOW_WATER: get_incoming_low_water, set_incoming_low_water, "_incoming_low_water";
    OUTGOING_HIGH_WATER: get_outgoing_high_water, set_outgoing_high_water, "_outgoing_high_water";
    OUTGOING_LOW_WATER: get_outgoing_low_water, set_outgoing_low_water, "_outgoing_low_water";
    {
        #[new]
        #[pyo3(signature = (*_args, **_kwargs))]
        fn py_new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, pyo3::types::PyDict>>) -> Self {
            TlsCore {
                fields: GilCell::new(Fields::default()),
                max_size: AtomicUsize::new(0),
            }
        }

        /// The stdlib's `_process_outgoing`, with its flow-control call made only when a limit is
        /// crossed.
        fn _process_outgoing(slf: &Bound<'_, Self>) -> PyResult<()> {
            Self::process_outgoing(slf)
        }

        /// The application transport's `write`: the stdlib's `_write_appdata` and `_do_write` for
        /// one buffer, encrypted and sent at once when the connection is established and nothing is
        /// queued before it.
        fn _app_write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
            let py = slf.py();
            if !is_bytes_like(data) {
                return Err(PyTypeError::new_err(format!(
                    "data: expecting a bytes-like instance, got {}",
                    data.get_type().name()?
                )));
            }
            if !data.is_truthy()? {
                return Ok(());
            }
            let (wrapped, ssl, backlog) = {
                let f = slf.get().fields.borrow_mut(py);
                (f.wrapped, f.ssl.as_ref().map(|s| s.bind(py).clone()), f.get(py, WRITE_BACKLOG))
            };
            let fast = match (wrapped, &ssl, &backlog) {
                (true, Some(_), Some(backlog)) => !backlog.is_truthy()?,
                _ => false,
            };
            let (Some(ssl), Some(backlog), true) = (ssl, backlog, fast) else {
                let items = PyTuple::new(py, [data])?;
                return slf.call_method1(intern!(py, "_write_appdata"), (items,)).map(drop);
            };
            let result = (|| -> PyResult<()> {
                let again = known(py)?.again.bind(py);
                let count: usize = match ssl.call_method1(intern!(py, "write"), (data,)) {
                    Ok(count) => count.extract()?,
                    Err(e) if e.is_instance(py, again) => 0,
                    Err(e) => {
                        // Where the stdlib's write would have left it when the error reached it.
                        backlog.call_method1(intern!(py, "append"), (data,))?;
                        Self::grow_write_buffer(slf, &data.len()?.into_pyobject(py)?.into_any())?;
                        return Err(e);
                    }
                };
                let size = data.len()?;
                if count < size {
                    let rest = data.get_item(PySlice::new(py, count as isize, isize::MAX, 1))?;
                    backlog.call_method1(intern!(py, "append"), (rest,))?;
                    Self::grow_write_buffer(slf, &(size - count).into_pyobject(py)?.into_any())?;
                }
                Self::process_outgoing(slf)
            })();
            result.or_else(|e| Self::fatal(slf, e))
        }

        fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
            if let Some(f) = self.fields.try_borrow_in_gc() {
                for slot in &f.slots {
                    visit.call(slot)?;
                }
                visit.call(&f.ssl)?;
            }
            Ok(())
        }

        fn __clear__(&self) {
            if let Some(mut f) = self.fields.try_borrow_in_gc() {
                let taken = std::mem::take(&mut *f);
                drop(f);
                // The collector calls this with the GIL held.
                Python::attach(|_| drop(taken));
            }
        }
    }
}
