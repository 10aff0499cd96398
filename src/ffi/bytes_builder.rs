//! `BytesBuilder`: a `bytes` object filled in place, piece by piece, by calls that write into a
//! buffer (`recv` into its memory, `SSLObject.read(n, buffer)` into a view of it), then shrunk to
//! what they wrote and handed out. CPython
//! builds `bytes` the same way (`_PyBytes_Resize` on an object nothing else has seen yet); done
//! here, several pieces end up in one object without a `bytes` per piece and a `join` copying
//! them all again.
//!
//! The object is reachable only through the builder until `finish`. A piece is written through
//! a slice that does not outlive the call (`fill_uninit`), or by `_ssl._SSLSocket.read` through
//! a `memoryview` of the unfilled part that is released as soon as the call returns
//! (`ssl_read`), so no one can write into (or read) the object after it is handed out, nor touch
//! it once resized.

use std::mem::MaybeUninit;

use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

pub struct BytesBuilder<'py> {
    py: Python<'py>,
    /// A `bytes` of `cap` bytes that only this builder refers to; null once handed out or lost.
    obj: *mut ffi::PyObject,
    cap: usize,
    len: usize,
}

impl<'py> BytesBuilder<'py> {
    /// An empty builder with room for `cap` bytes (at least one).
    pub fn with_capacity(py: Python<'py>, cap: usize) -> PyResult<Self> {
        let cap = cap.max(1);
        let size = py_size(cap)?;
        // SAFETY: the GIL is held; PyBytes_FromStringAndSize(NULL, n) returns a new bytes object
        // of n uninitialised bytes, or NULL with an exception set.
        let obj = unsafe { ffi::PyBytes_FromStringAndSize(std::ptr::null(), size) };
        if obj.is_null() {
            return Err(PyErr::fetch(py));
        }
        Ok(BytesBuilder { py, obj, cap, len: 0 })
    }

    /// Nothing written so far.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Room left before the builder must grow.
    pub fn spare(&self) -> usize {
        self.cap - self.len
    }

    /// Makes room for at least `extra` more bytes.
    pub fn reserve(&mut self, extra: usize) -> PyResult<()> {
        if self.spare() >= extra {
            return Ok(());
        }
        let cap = self.len.saturating_add(extra.max(self.cap));
        self.resize(cap)?;
        self.cap = cap;
        Ok(())
    }

    /// Calls `fill` with the next `want` unfilled bytes (at most the room left); `fill` returns
    /// how many of them, from the start, it initialised.
    pub fn fill_uninit<E>(
        &mut self,
        want: usize,
        fill: impl FnOnce(&mut [MaybeUninit<u8>]) -> Result<usize, E>,
    ) -> PyResult<Result<usize, E>> {
        if self.obj.is_null() {
            return Err(PyValueError::new_err("buffer lost"));
        }
        let want = want.min(self.spare());
        // SAFETY: `obj` is a live bytes object of `cap` bytes owned by the builder, so `want`
        // bytes start `len` bytes into its storage; nothing else can reach the object, and the
        // slice does not outlive this call.
        let unfilled = unsafe {
            let start = ffi::PyBytes_AsString(self.obj).cast::<MaybeUninit<u8>>().add(self.len);
            std::slice::from_raw_parts_mut(start, want)
        };
        Ok(fill(unfilled).map(|n| {
            let n = n.min(want);
            self.len += n;
            n
        }))
    }

    /// Decrypts into the next `want` unfilled bytes (at most the room left) with
    /// `sslobj.read(want, buffer)`, `buffer` a writable `memoryview` of them released when the
    /// call returns, and counts as written the number of bytes the call returns.
    ///
    /// `sslobj` must be exactly an `_ssl._SSLSocket` (a `TypeError` otherwise): its `read` is C
    /// code (the type cannot be changed) that writes into the buffer during the call only, and
    /// makes no view of it that could outlive the call, so nothing reaches the object's storage
    /// afterwards.
    pub fn ssl_read(&mut self, sslobj: &Bound<'py, PyAny>, want: usize) -> PyResult<usize> {
        let py = self.py;
        if !super::is_ssl_socket(sslobj)? {
            return Err(PyTypeError::new_err("expected an _ssl._SSLSocket"));
        }
        if self.obj.is_null() {
            return Err(PyValueError::new_err("buffer lost"));
        }
        let want = want.min(self.spare());
        // SAFETY: `obj` is a live bytes object of `cap` bytes owned by the builder, so its storage
        // is `cap` writable bytes starting at PyBytes_AsString; the view covers `want` bytes from
        // `len`, inside it, and is released below before the builder can resize or hand out the
        // object. PyMemoryView_FromMemory returns a new reference or NULL with an exception set.
        let view = unsafe {
            let start = ffi::PyBytes_AsString(self.obj).cast::<u8>().add(self.len);
            Bound::from_owned_ptr_or_err(
                py,
                ffi::PyMemoryView_FromMemory(start.cast(), want as ffi::Py_ssize_t, ffi::PyBUF_WRITE),
            )?
        };
        let read = sslobj.call_method1(super::intern!(py, "read"), (want, &view));
        if let Err(e) = view.call_method0(super::intern!(py, "release")) {
            // Something still holds an export of the view, so of the object's storage: never
            // free or move it.
            self.obj = std::ptr::null_mut();
            return Err(e);
        }
        let n = read?.extract::<usize>()?;
        if n > want {
            return Err(PyValueError::new_err(format!(
                "wrote {n} bytes into a buffer of {want}"
            )));
        }
        self.len += n;
        Ok(n)
    }

    /// The bytes written, as a `bytes` object of exactly that length.
    pub fn finish(mut self) -> PyResult<Bound<'py, PyBytes>> {
        if self.obj.is_null() {
            return Err(PyValueError::new_err("buffer lost"));
        }
        if self.len != self.cap {
            self.resize(self.len)?;
        }
        let obj = std::mem::replace(&mut self.obj, std::ptr::null_mut());
        // SAFETY: `obj` is a live bytes object the builder owned one reference to, now given away.
        Ok(unsafe { Bound::from_owned_ptr(self.py, obj).cast_into_unchecked() })
    }

    fn resize(&mut self, size: usize) -> PyResult<()> {
        if self.obj.is_null() {
            return Err(PyValueError::new_err("buffer lost"));
        }
        let size = py_size(size)?;
        // SAFETY: `obj` is a bytes object nothing else refers to (the builder holds the only
        // reference and no view of it is alive); _PyBytes_Resize moves or frees it and updates
        // the pointer (NULL with an exception set on failure).
        if unsafe { super::_PyBytes_Resize(&mut self.obj, size) } < 0 {
            self.obj = std::ptr::null_mut();
            return Err(PyErr::fetch(self.py));
        }
        Ok(())
    }
}

/// `size` as a `Py_ssize_t`, or the `OverflowError` CPython raises for a size that is not one.
fn py_size(size: usize) -> PyResult<ffi::Py_ssize_t> {
    ffi::Py_ssize_t::try_from(size).map_err(|_| PyOverflowError::new_err("read size too large"))
}

impl Drop for BytesBuilder<'_> {
    fn drop(&mut self) {
        if !self.obj.is_null() {
            // SAFETY: the builder owns one reference to `obj` and the GIL is held (`py`).
            unsafe { ffi::Py_DECREF(self.obj) };
        }
    }
}
