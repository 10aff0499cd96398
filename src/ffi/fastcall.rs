//! Methods called with CPython's vectorcall convention (`METH_FASTCALL | METH_KEYWORDS`).
//!
//! PyO3 packs `*args` into a new tuple on every call. `call_soon` and the other scheduling
//! methods are called once per callback, and usually with zero or one extra argument, so they
//! take their arguments straight from the caller's array instead (see `loop::args`). This module
//! turns the raw call into a safe `FastArgs` and catches panics; the methods themselves are safe
//! Rust in `loop/`.

use std::os::raw::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::ffi;
use pyo3::panic::PanicException;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};

/// The arguments of one vectorcall: positional values, then keyword names and values.
pub struct FastArgs<'a, 'py> {
    py: Python<'py>,
    positional: &'a [*mut ffi::PyObject],
    /// A tuple of str with one name per `kwvalues` entry, or NULL.
    kwnames: *mut ffi::PyObject,
    kwvalues: &'a [*mut ffi::PyObject],
}

impl<'a, 'py> FastArgs<'a, 'py> {
    pub fn len(&self) -> usize {
        self.positional.len()
    }

    /// Positional argument `i` (`i < len()`).
    pub fn get(&self, i: usize) -> Borrowed<'a, 'py, PyAny> {
        // SAFETY: the caller's array holds `len()` live borrowed references for this call.
        unsafe { Borrowed::from_ptr(self.py, self.positional[i]) }
    }

    /// Positional arguments from `start` on, as a new tuple.
    pub fn tuple_from(&self, start: usize) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(self.py, (start..self.len()).map(|i| self.get(i)))
    }

    pub fn keyword_count(&self) -> usize {
        self.kwvalues.len()
    }

    /// Keyword argument `i` (`i < keyword_count()`) as (name, value).
    pub fn keyword(&self, i: usize) -> (Borrowed<'a, 'py, PyString>, Borrowed<'a, 'py, PyAny>) {
        // SAFETY: there are keyword values only when CPython passed `kwnames`, a tuple of str with
        // one name per value; both it and the values are live for this call.
        unsafe {
            let name = Borrowed::from_ptr(self.py, ffi::PyTuple_GET_ITEM(self.kwnames, i as ffi::Py_ssize_t));
            (
                name.cast_unchecked::<PyString>(),
                Borrowed::from_ptr(self.py, self.kwvalues[i]),
            )
        }
    }
}

/// The safe signature of a fast method: `slf` is the object the method was called on.
pub trait FastMethod:
    Copy + for<'a, 'py> Fn(&Bound<'py, PyAny>, FastArgs<'a, 'py>) -> PyResult<Bound<'py, PyAny>>
{
}

impl<F: Copy> FastMethod for F where
    F: for<'a, 'py> Fn(&Bound<'py, PyAny>, FastArgs<'a, 'py>) -> PyResult<Bound<'py, PyAny>>
{
}

/// Runs `method` for a raw vectorcall, turning errors and panics into a Python exception.
///
/// # Safety
/// Must be called by CPython as a `METH_FASTCALL | METH_KEYWORDS` method: the GIL is held, `slf`
/// is live, `args` holds `PyVectorcall_NARGS(nargsf)` positional values followed by one value per
/// entry of `kwnames` (a tuple of str, or NULL).
///
/// Generic over the method, and inlined with it into each entry point: through a function
/// pointer, the arguments and the result went through memory, and reading the result back
/// stalled every call.
#[inline(always)]
pub unsafe fn trampoline<M: FastMethod>(
    method: M,
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // Attach through PyO3 (a thread-local check: the GIL is already held) rather than assuming
    // it: PyO3 decides by that bookkeeping whether a `Py<T>` dropped during the call can be
    // released at once, and without it those drops would be leaked. While the interpreter shuts
    // down (a loop's `__del__` at exit) PyO3 refuses to attach; the GIL is still held, so the
    // call goes ahead on an assumed token, at worst leaking what it drops.
    match Python::try_attach(|py| call(py, method, slf, args, nargsf, kwnames)) {
        Some(result) => result,
        // SAFETY: CPython holds the GIL for the duration of a method call (the contract above).
        None => unsafe { call(Python::assume_attached(), method, slf, args, nargsf, kwnames) },
    }
}

/// The body of `trampoline`, attached.
///
/// # Safety
/// As for `trampoline`.
#[inline(always)]
unsafe fn call<M: FastMethod>(
    py: Python<'_>,
    method: M,
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: per the contract above; the slices live as long as this call.
        let (slf, fast) = unsafe {
            let nargs = ffi::PyVectorcall_NARGS(nargsf as usize) as usize;
            let nkw = if kwnames.is_null() {
                0
            } else {
                ffi::PyTuple_GET_SIZE(kwnames) as usize
            };
            let all: &[*mut ffi::PyObject] = if args.is_null() {
                &[]
            } else {
                std::slice::from_raw_parts(args, nargs + nkw)
            };
            let fast = FastArgs {
                py,
                positional: &all[..nargs],
                kwnames,
                kwvalues: &all[nargs..],
            };
            (Bound::from_borrowed_ptr(py, slf), fast)
        };
        method(&slf, fast).map(Bound::into_ptr)
    }));
    match outcome {
        Ok(Ok(ptr)) => ptr,
        Ok(Err(err)) => {
            err.restore(py);
            std::ptr::null_mut()
        }
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic in ferroloop".to_string());
            PanicException::new_err(msg).restore(py);
            std::ptr::null_mut()
        }
    }
}

/// Declares an `extern "C"` entry point that runs a `FastMethod` through `trampoline`.
#[macro_export]
macro_rules! fast_method {
    ($entry:ident, $method:path) => {
        unsafe extern "C" fn $entry(
            slf: *mut pyo3::ffi::PyObject,
            args: *const *mut pyo3::ffi::PyObject,
            nargsf: pyo3::ffi::Py_ssize_t,
            kwnames: *mut pyo3::ffi::PyObject,
        ) -> *mut pyo3::ffi::PyObject {
            // SAFETY: CPython calls this as a METH_FASTCALL | METH_KEYWORDS method (see install).
            unsafe { $crate::ffi::fastcall::trampoline($method, slf, args, nargsf, kwnames) }
        }
    };
}

/// One method to install: its name, its docstring (with a `__text_signature__` line), and the
/// entry point declared with `fast_method!`.
pub struct MethodSpec {
    pub name: &'static std::ffi::CStr,
    pub doc: &'static std::ffi::CStr,
    pub entry: ffi::PyCFunctionFastWithKeywords,
}

/// Adds `methods` to the type `ty` as method descriptors.
pub fn install<T: pyo3::PyTypeInfo>(py: Python<'_>, methods: &[MethodSpec]) -> PyResult<()> {
    let ty = py.get_type::<T>();
    for spec in methods {
        // The definition must outlive the type, which lives as long as the interpreter.
        let def: &'static mut ffi::PyMethodDef = Box::leak(Box::new(ffi::PyMethodDef {
            ml_name: spec.name.as_ptr(),
            ml_meth: ffi::PyMethodDefPointer {
                PyCFunctionFastWithKeywords: spec.entry,
            },
            ml_flags: (ffi::METH_FASTCALL | ffi::METH_KEYWORDS) as c_int,
            ml_doc: spec.doc.as_ptr(),
        }));
        // SAFETY: `ty` is a live type object and `def` is a valid, 'static method definition
        // whose entry point follows the METH_FASTCALL | METH_KEYWORDS convention.
        let descr = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyDescr_NewMethod(ty.as_ptr().cast(), def))? };
        ty.setattr(spec.name.to_str().expect("method names are ASCII"), descr)?;
    }
    Ok(())
}
