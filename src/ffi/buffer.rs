//! Borrowing the bytes of any object that supports the buffer protocol (`bytes`, `bytearray`,
//! `memoryview`, `array`, numpy arrays...) for the duration of a closure, as C code does with
//! `PyObject_GetBuffer`. PyO3's typed `PyBuffer<u8>` refuses buffers whose item format is not
//! bytes, which the socket methods accept.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

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

/// Calls `f` with a writable pointer and length into `obj` (for `recv_into`-style reads).
pub fn with_writable<R>(obj: &Bound<'_, PyAny>, f: impl FnOnce(*mut u8, usize) -> R) -> PyResult<R> {
    let mut view = std::mem::MaybeUninit::<ffi::Py_buffer>::uninit();
    // SAFETY: as in `with_bytes`; PyBUF_WRITABLE makes read-only objects fail with BufferError.
    let flags = ffi::PyBUF_SIMPLE | ffi::PyBUF_WRITABLE;
    if unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), view.as_mut_ptr(), flags) } < 0 {
        return Err(PyErr::fetch(obj.py()));
    }
    // SAFETY: initialised by the successful call above.
    let mut view = unsafe { view.assume_init() };
    let out = f(view.buf as *mut u8, view.len as usize);
    // SAFETY: releases the view obtained above, exactly once.
    unsafe { ffi::PyBuffer_Release(&mut view) };
    Ok(out)
}
