//! Feeding an `asyncio.StreamReader` without its Python methods.
//!
//! `asyncio.start_server` and `open_connection` put the stdlib's `StreamReaderProtocol` on a
//! transport; every read then runs `data_received`, the `_stream_reader` property, `feed_data`
//! and `_wakeup_waiter`: four Python frames to append bytes to a bytearray and wake a future.
//! When the protocol is exactly that class (`is_stream_protocol`) and those methods are the
//! stdlib's (`stdlib_classes`), and neither instance replaces `data_received` or `feed_data`,
//! this does the same steps here, in the same order, and appends straight from the read buffer
//! (no intermediate bytes object).
//!
//! Whatever falls outside the plain state (no reader, a reader of another class, a reader at
//! EOF, whose `feed_data` asserts, or a buffer that is not a bytearray) goes to the protocol's
//! own `data_received`, as does a read the shared buffer cannot take.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use pyo3::exceptions::PyNotImplementedError;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyInt, PyType};

use crate::ffi::{self, intern, GilOnce};

struct Classes {
    reader: Py<PyType>,
    protocol: Py<PyType>,
    /// `ferroloop._transports._stdlib_stream_methods`: whether the methods are the stdlib's.
    check: Py<PyAny>,
}

fn classes(py: Python<'_>) -> PyResult<&Classes> {
    static CLASSES: GilOnce<Classes> = GilOnce::new();
    CLASSES.get_or_try_init(py, || {
        let streams = py.import("asyncio.streams")?;
        Ok(Classes {
            reader: streams.getattr("StreamReader")?.cast_into::<PyType>()?.unbind(),
            protocol: streams.getattr("StreamReaderProtocol")?.cast_into::<PyType>()?.unbind(),
            check: py
                .import("ferroloop._transports")?
                .getattr("_stdlib_stream_methods")?
                .unbind(),
        })
    })
}

/// The version tags of both classes, which CPython changes whenever a class or one of its bases
/// is modified (and never gives out twice); 0 when either has none.
fn version_tags(py: Python<'_>, c: &Classes) -> u64 {
    let reader = ffi::type_version_tag(c.reader.bind(py));
    let protocol = ffi::type_version_tag(c.protocol.bind(py));
    if reader == 0 || protocol == 0 {
        0
    } else {
        (u64::from(reader) << 32) | u64::from(protocol)
    }
}

/// The last verdict of `_stdlib_stream_methods`, and the classes' version tags it was made for.
static CHECKED_TAGS: AtomicU64 = AtomicU64::new(0);
static CHECKED_STDLIB: AtomicBool = AtomicBool::new(false);

/// Whether `protocol` is exactly the stdlib's `StreamReaderProtocol`.
pub(super) fn is_stream_protocol(protocol: &Bound<'_, PyAny>) -> PyResult<bool> {
    Ok(protocol
        .get_type()
        .is(classes(protocol.py())?.protocol.bind(protocol.py())))
}

/// Whether `StreamReaderProtocol.data_received` and `_stream_reader` and `StreamReader.feed_data`
/// and `_wakeup_waiter` are the stdlib's own. Asked again only after either class (or a base)
/// changed, so replacing one of them at any time, even mid-connection, is honoured.
fn stdlib_classes(py: Python<'_>, c: &Classes) -> PyResult<bool> {
    let tags = version_tags(py, c);
    if tags != 0 && tags == CHECKED_TAGS.load(Ordering::Relaxed) {
        return Ok(CHECKED_STDLIB.load(Ordering::Relaxed));
    }
    let stdlib = c.check.bind(py).call0()?.is_truthy()?;
    // The check's own lookups give the classes their tags if they had none.
    CHECKED_TAGS.store(version_tags(py, c), Ordering::Relaxed);
    CHECKED_STDLIB.store(stdlib, Ordering::Relaxed);
    Ok(stdlib)
}

/// The reader of a protocol that `is_stream_protocol`, when it is in the state this module
/// covers: an exact `StreamReader`, not at EOF, whose buffer is an exact bytearray, with the
/// stdlib's methods on both classes. Nothing is changed.
pub(super) fn plain_reader<'py>(
    protocol: &Bound<'py, PyAny>,
) -> PyResult<Option<(Bound<'py, PyAny>, Bound<'py, PyByteArray>)>> {
    let py = protocol.py();
    let c = classes(py)?;
    if !stdlib_classes(py, c)? {
        return Ok(None);
    }
    let reader_type = c.reader.bind(py);
    // `StreamReaderProtocol._stream_reader`: the weak reference's target, or None.
    let weak = protocol.getattr(intern!(py, "_stream_reader_wr"))?;
    if weak.is_none() {
        return Ok(None);
    }
    let reader = weak.call0()?;
    if !reader.get_type().is(reader_type) || reader.getattr(intern!(py, "_eof"))?.is_truthy()? {
        return Ok(None);
    }
    // A public method replaced on the instance (`mock.patch.object(reader, "feed_data")`) is
    // called. (Private ones are trusted to be the class's, as `after_append` trusts the fields.)
    if ffi::shadowed_on_instance(protocol, intern!(py, "data_received"))?
        || ffi::shadowed_on_instance(&reader, intern!(py, "feed_data"))?
    {
        return Ok(None);
    }
    let Ok(buffer) = reader.getattr(intern!(py, "_buffer"))?.cast_into_exact::<PyByteArray>() else {
        return Ok(None);
    };
    Ok(Some((reader, buffer)))
}

/// The rest of `feed_data` after the append: wake a waiting `read*()` (`_wakeup_waiter`), then
/// pause the transport once the buffer holds more than twice the reader's limit.
pub(super) fn after_append(reader: &Bound<'_, PyAny>, buffer: &Bound<'_, PyByteArray>) -> PyResult<()> {
    let py = reader.py();
    let waiter = reader.getattr(intern!(py, "_waiter"))?;
    if !waiter.is_none() {
        reader.setattr(intern!(py, "_waiter"), py.None())?;
        if !waiter.call_method0(intern!(py, "cancelled"))?.is_truthy()? {
            waiter.call_method1(intern!(py, "set_result"), (py.None(),))?;
        }
    }
    let transport = reader.getattr(intern!(py, "_transport"))?;
    if transport.is_none() || reader.getattr(intern!(py, "_paused"))?.is_truthy()? {
        return Ok(());
    }
    let limit = reader.getattr(intern!(py, "_limit"))?;
    let over = match limit.cast_exact::<PyInt>().ok().and_then(|l| l.extract::<i64>().ok()) {
        Some(limit) => (buffer.len() as i128) > 2 * limit as i128,
        None => buffer.len().into_pyobject(py)?.gt(limit.mul(2)?)?,
    };
    if !over {
        return Ok(());
    }
    match transport.call_method0(intern!(py, "pause_reading")) {
        Ok(_) => reader.setattr(intern!(py, "_paused"), true),
        // The transport can't be paused: forget it, as `feed_data` does.
        Err(e) if e.is_instance_of::<PyNotImplementedError>(py) => reader.setattr(intern!(py, "_transport"), py.None()),
        Err(e) => Err(e),
    }
}
