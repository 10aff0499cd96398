//! Borrowing the bytes of any object that supports the buffer protocol (`bytes`, `bytearray`,
//! `memoryview`, `array`, numpy arrays...) for the duration of a closure, as C code does with
//! `PyObject_GetBuffer`. PyO3's typed `PyBuffer<u8>` refuses buffers whose item format is not
//! bytes, which the socket methods accept.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyType};

use super::GilOnce;

/// Calls `f` with the contiguous bytes of `obj`.
pub fn with_bytes<R>(obj: &Bound<'_, PyAny>, f: impl FnOnce(&[u8]) -> R) -> PyResult<R> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(f(b.as_bytes()));
    }
    let mut view = std::mem::MaybeUninit::<ffi::Py_buffer>::uninit();
    // SAFETY: the GIL is held; on success `view` is initialised and must be released below.
    if unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), view.as_mut_ptr(), ffi::PyBUF_SIMPLE) } < 0 {
        return Err(PyErr::fetch(obj.py()));
    }
    // SAFETY: initialised by the successful call above.
    let mut view = unsafe { view.assume_init() };
    // SAFETY: a PyBUF_SIMPLE view is `len` contiguous bytes at `buf`, valid until released; an
    // empty buffer may have a null pointer, which a slice must not.
    let bytes = if view.len == 0 {
        &[][..]
    } else {
        unsafe { std::slice::from_raw_parts(view.buf as *const u8, view.len as usize) }
    };
    let out = f(bytes);
    // SAFETY: releases the view obtained above, exactly once.
    unsafe { ffi::PyBuffer_Release(&mut view) };
    Ok(out)
}

/// Calls `f` with the writable bytes of `obj` (for `recv_into`-style reads).
pub fn with_writable<R>(obj: &Bound<'_, PyAny>, f: impl FnOnce(&mut [u8]) -> R) -> PyResult<R> {
    let mut view = std::mem::MaybeUninit::<ffi::Py_buffer>::uninit();
    // SAFETY: as in `with_bytes`; PyBUF_WRITABLE makes read-only objects fail with BufferError.
    let flags = ffi::PyBUF_SIMPLE | ffi::PyBUF_WRITABLE;
    if unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), view.as_mut_ptr(), flags) } < 0 {
        return Err(PyErr::fetch(obj.py()));
    }
    // SAFETY: initialised by the successful call above.
    let mut view = unsafe { view.assume_init() };
    // SAFETY: a writable PyBUF_SIMPLE view is `len` contiguous bytes at `buf`, valid until
    // released; an empty buffer may have a null pointer, which a slice must not. The slice is
    // the only way to these bytes while `f` runs unless `f` runs Python code that writes to the
    // same object, which the callers' `f` (a system call) does not.
    let bytes = if view.len == 0 {
        &mut [][..]
    } else {
        unsafe { std::slice::from_raw_parts_mut(view.buf.cast::<u8>(), view.len as usize) }
    };
    let out = f(bytes);
    // SAFETY: releases the view obtained above, exactly once.
    unsafe { ffi::PyBuffer_Release(&mut view) };
    Ok(out)
}

/// `buffer.extend(data)`: a bytearray with a live export cannot grow, and fails with the
/// `BufferError` that `extend` raises.
pub fn bytearray_extend(buffer: &Bound<'_, PyByteArray>, data: &[u8]) -> PyResult<()> {
    let old = buffer.len();
    buffer.resize(old + data.len())?;
    // SAFETY: the GIL is held and no Python code runs between the resize and the copy, so the
    // bytearray's storage is exactly `old + data.len()` bytes and nothing else can see it.
    unsafe { buffer.as_bytes_mut()[old..].copy_from_slice(data) };
    Ok(())
}

/// Grows `buffer` by `want` bytes, lets `fill` write into them (through memory not initialised
/// yet, as `recv_uninit` takes it) and keeps only the bytes it says it wrote: an append of
/// whatever `fill` reads, without a buffer in between. `None`, before `fill` is called, when the
/// bytearray cannot grow (it has a live export); an error only when it could not be shrunk back
/// after `fill` (no memory for a smaller copy), with the unwritten bytes still in it.
pub fn bytearray_fill_tail(
    buffer: &Bound<'_, PyByteArray>,
    want: usize,
    fill: impl FnOnce(&mut [std::mem::MaybeUninit<u8>]) -> std::io::Result<usize>,
) -> PyResult<Option<std::io::Result<usize>>> {
    let old = buffer.len();
    if buffer.resize(old + want).is_err() {
        return Ok(None);
    }
    // SAFETY: the GIL is held and no Python code runs from the resize to the one below, so the
    // bytearray's storage is `old + want` bytes that nothing else can see; the slice of its last
    // `want` bytes does not outlive `fill`.
    let got = fill(unsafe {
        let tail = buffer.data().add(old).cast::<std::mem::MaybeUninit<u8>>();
        std::slice::from_raw_parts_mut(tail, want)
    });
    buffer.resize(old + got.as_ref().map_or(0, |n| (*n).min(want)))?;
    Ok(Some(got))
}

/// The two `_ssl` types whose C methods are lent views of memory the crate owns: `MemoryBIO`
/// (`ssl.MemoryBIO`) and `_SSLSocket` (what `SSLObject` wraps).
struct SslTypes {
    memory_bio: Py<PyType>,
    ssl_socket: Py<PyType>,
}

fn ssl_types(py: Python<'_>) -> PyResult<&'static SslTypes> {
    static TYPES: GilOnce<SslTypes> = GilOnce::new();
    TYPES.get_or_try_init(py, || {
        let ssl = py.import("_ssl")?;
        Ok(SslTypes {
            memory_bio: ssl.getattr("MemoryBIO")?.cast_into::<PyType>()?.unbind(),
            ssl_socket: ssl.getattr("_SSLSocket")?.cast_into::<PyType>()?.unbind(),
        })
    })
}

/// Whether `obj` is exactly an `ssl.MemoryBIO`.
pub fn is_memory_bio(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    Ok(obj.get_type().is(ssl_types(obj.py())?.memory_bio.bind(obj.py())))
}

/// Whether `obj` is exactly an `_ssl._SSLSocket`.
pub fn is_ssl_socket(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    Ok(obj.get_type().is(ssl_types(obj.py())?.ssl_socket.bind(obj.py())))
}

/// `bio.write(data)` when `bio` is exactly an `ssl.MemoryBIO`, given a view of `data` rather than
/// a copy: `MemoryBIO.write` (C code; the type cannot be changed) copies what it is given and
/// keeps no reference to it. `None`, having done nothing, when `bio` is anything else.
pub fn memory_bio_write<'py>(bio: &Bound<'py, PyAny>, data: &[u8]) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = bio.py();
    if !is_memory_bio(bio)? {
        return Ok(None);
    }
    let len = ffi::Py_ssize_t::try_from(data.len())?;
    // SAFETY: the view covers `data`, which outlives it: `MemoryBIO.write` only reads it during
    // the call (through a buffer it releases), and the view's last reference goes right after.
    // PyMemoryView_FromMemory returns a new reference or NULL with an exception set; a read-only
    // view is never written through.
    let view = unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            ffi::PyMemoryView_FromMemory(data.as_ptr().cast_mut().cast(), len, ffi::PyBUF_READ),
        )?
    };
    let written = bio.call_method1(super::intern!(py, "write"), (&view,));
    drop(view);
    written.map(Some)
}

/// The version tag of a type, which CPython changes whenever the type or one of its bases is
/// modified (and never gives out twice); 0 when it has none.
pub fn type_version_tag(ty: &Bound<'_, PyType>) -> u32 {
    // SAFETY: reading a plain field of a live type object with the GIL held.
    unsafe { (*ty.as_type_ptr()).tp_version_tag }
}
