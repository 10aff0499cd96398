//! Telling whether two `contextvars.Context` objects hold the same variables, so handles scheduled
//! in the same context can share one snapshot of it instead of a copy each.
//!
//! A context keeps its variables in an immutable mapping (CPython's HAMT) and replaces the mapping
//! when a variable is set; a copy starts out sharing its original's mapping. Two contexts whose
//! mapping is the same object therefore hold the same values. The mapping is not reachable
//! through the C API, so it is read from the object's layout (`struct _pycontextobject` in
//! CPython's Include/internal/pycore_context.h, the same in 3.11-3.13). `sharing_supported`
//! checks that layout on the running interpreter once; where the check fails, nothing is shared.
//!
//! Comparing needs the variables of the current context, which the C API only hands out by
//! copying the context (`PyContext_CopyCurrent`, a new collector object). `current` reads the
//! thread state's `context` field instead (`PyThreadState` in CPython's
//! Include/cpython/pystate.h), at the offset of the running version, once checked by entering and
//! leaving a context; where the check fails, `current` gives nothing and callers copy.

use std::ffi::c_void;

use pyo3::ffi;
use pyo3::prelude::*;

use super::GilOnce;

/// `struct _pycontextobject` up to the field read here.
#[repr(C)]
struct RawContext {
    ob_base: ffi::PyObject,
    prev: *mut ffi::PyObject,
    vars: *mut ffi::PyObject,
}

/// The mapping of a context made by CPython (`PyContext_New`, `_Copy`, `_CopyCurrent`).
///
/// # Safety
/// `ctx` is a live object of exactly type `contextvars.Context`, and the GIL is held.
#[inline]
unsafe fn vars_of(ctx: *mut ffi::PyObject) -> *const c_void {
    // SAFETY: per the contract, `ctx` points to a `_pycontextobject`, whose layout starts as
    // `RawContext` does (checked by `layout_holds`).
    unsafe { (*ctx.cast::<RawContext>()).vars.cast() }
}

/// Whether contexts can be compared on this interpreter (see the module docs).
pub fn sharing_supported(py: Python<'_>) -> bool {
    static SUPPORTED: GilOnce<bool> = GilOnce::new();
    *SUPPORTED.get_or_init(py, || layout_holds(py).unwrap_or(false))
}

/// Whether `a` and `b`, two contexts made by CPython, hold the same variables. Only meaningful
/// when `sharing_supported`.
#[inline]
pub fn same_vars(a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>) -> bool {
    // SAFETY: both are live contexts made by CPython (the callers' contract) and the GIL is held.
    unsafe { vars_of(a.as_ptr()) == vars_of(b.as_ptr()) }
}

/// `context.copy()`.
pub fn copy_of(context: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    // SAFETY: the GIL is held; PyContext_Copy type-checks its argument and returns a new
    // reference, or NULL with an exception set.
    unsafe { Bound::from_owned_ptr_or_err(context.py(), ffi::PyContext_Copy(context.as_ptr())).map(Bound::unbind) }
}

/// Byte offset of `PyThreadState.context`, per version (`offsetof` in each version's headers).
fn thread_context_offset_for(version: (u8, u8)) -> Option<usize> {
    match version {
        (3, 11) => Some(224),
        (3, 12) | (3, 13) => Some(208),
        _ => None,
    }
}

/// The thread state's `context` field at `offset`.
///
/// # Safety
/// The GIL is held by this thread and `offset` is the field's (checked by `thread_field_holds`,
/// or being checked by it: every candidate lies inside the thread state of its version).
#[inline]
unsafe fn thread_context_at(offset: usize) -> *mut ffi::PyObject {
    // SAFETY: per the contract, the thread state is live (the GIL is held) and a pointer-sized,
    // pointer-aligned field lies at `offset` within it.
    unsafe {
        ffi::PyThreadState_Get()
            .cast::<u8>()
            .add(offset)
            .cast::<*mut ffi::PyObject>()
            .read()
    }
}

/// The offset of the thread state's context on this interpreter, if the check passed.
fn thread_context_offset(py: Python<'_>) -> Option<usize> {
    static OFFSET: GilOnce<Option<usize>> = GilOnce::new();
    *OFFSET.get_or_init(py, || {
        let v = py.version_info();
        let offset = thread_context_offset_for((v.major, v.minor))?;
        thread_field_holds(py, offset).unwrap_or(false).then_some(offset)
    })
}

/// Whether the thread state's field at `offset` is the current context: it becomes a new context
/// while that is entered and returns to what it was when it is left.
fn thread_field_holds(py: Python<'_>, offset: usize) -> PyResult<bool> {
    // SAFETY: the GIL is held; PyContext_New returns a new reference or NULL with an exception
    // set. The fresh context is entered and exited on this thread, and `offset` is the candidate
    // for this version, inside its thread state.
    unsafe {
        let context = Bound::from_owned_ptr_or_err(py, ffi::PyContext_New())?;
        let before = thread_context_at(offset);
        if ffi::PyContext_Enter(context.as_ptr()) < 0 {
            return Err(PyErr::fetch(py));
        }
        let inside = thread_context_at(offset);
        if ffi::PyContext_Exit(context.as_ptr()) < 0 {
            return Err(PyErr::fetch(py));
        }
        let after = thread_context_at(offset);
        Ok(inside == context.as_ptr() && after == before && before != inside)
    }
}

/// Settles, at import, what `sharing_supported` and `current` find out about the interpreter
/// on first use. Finding out makes and enters a context, which may run the collector and so
/// Python code: not something to happen on a first `call_soon` made with loop state borrowed.
pub fn prepare(py: Python<'_>) {
    if sharing_supported(py) {
        thread_context_offset(py);
    }
}

/// The current context, without copying it; None where it cannot be read (see the module docs)
/// or when this thread has none yet.
#[inline]
pub fn current(py: Python<'_>) -> Option<Borrowed<'_, '_, PyAny>> {
    let offset = thread_context_offset(py)?;
    // SAFETY: the GIL is held and `offset` passed `thread_field_holds`. The field holds a
    // strong reference to a context (or NULL) for as long as that context is current, and the
    // borrow cannot outlive the GIL token.
    unsafe {
        let ptr = thread_context_at(offset);
        (!ptr.is_null()).then(|| Borrowed::from_ptr(py, ptr))
    }
}

/// Checks the layout on this interpreter: a copy shares its original's mapping, setting a
/// variable gives the context another one, and a copy of that shares it again. A field other
/// than the mapping cannot pass all three (the previous context and the weak-reference list are
/// NULL in every context made here).
fn layout_holds(py: Python<'_>) -> PyResult<bool> {
    // SAFETY: the GIL is held; each call returns a new reference or NULL with an exception set,
    // which `from_owned_ptr_or_err` turns into an Err. The context is entered and exited on this
    // thread around the one call, and `vars_of` reads contexts made by PyContext_New/_Copy.
    unsafe {
        let original = Bound::from_owned_ptr_or_err(py, ffi::PyContext_New())?;
        let copy = Bound::from_owned_ptr_or_err(py, ffi::PyContext_Copy(original.as_ptr()))?;
        let shared_at_first = vars_of(original.as_ptr()) == vars_of(copy.as_ptr());
        let var = Bound::from_owned_ptr_or_err(
            py,
            ffi::PyContextVar_New(c"ferroloop.layout_check".as_ptr(), std::ptr::null_mut()),
        )?;
        if ffi::PyContext_Enter(copy.as_ptr()) < 0 {
            return Err(PyErr::fetch(py));
        }
        let token = ffi::PyContextVar_Set(var.as_ptr(), ffi::Py_None());
        let exited = ffi::PyContext_Exit(copy.as_ptr());
        let token = Bound::from_owned_ptr_or_err(py, token)?;
        if exited < 0 {
            return Err(PyErr::fetch(py));
        }
        drop(token);
        let again = Bound::from_owned_ptr_or_err(py, ffi::PyContext_Copy(copy.as_ptr()))?;
        let (a, b, c) = (
            vars_of(original.as_ptr()),
            vars_of(copy.as_ptr()),
            vars_of(again.as_ptr()),
        );
        Ok(shared_at_first && !a.is_null() && !b.is_null() && a != b && b == c)
    }
}
