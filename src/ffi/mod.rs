//! Every raw CPython call the crate makes, and the only place besides `sys` with `unsafe` code:
//! contexts (entering one around a call, copying and comparing them), the GIL-guarded cell the
//! loop keeps its state in, vectorcall entry points, free lists and hand-made handle objects,
//! borrowed buffers and `bytes` filled in place, and a few calls PyO3 does not wrap (tracebacks,
//! filesystem decoding, type version tags, method lookups). Each `unsafe` block states why it holds.

mod buffer;
mod bytes_builder;
pub mod context;
pub mod fastcall;
pub mod freelist;
mod gil_cell;
mod layout;
mod once;

pub use buffer::{
    bytearray_extend, bytearray_fill_tail, is_memory_bio, is_ssl_socket, memory_bio_write, type_version_tag,
    with_bytes, with_writable,
};
pub use bytes_builder::BytesBuilder;

pub use gil_cell::{GilCell, GilRefMut};
pub use layout::{DropValues, Layout1, Layout2};
pub(crate) use once::intern;
pub use once::GilOnce;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

/// `contextvars.copy_context()` without the Python-level call.
#[inline]
pub fn copy_context(py: Python<'_>) -> PyResult<Py<PyAny>> {
    // SAFETY: the GIL is held (we have `py`); PyContext_CopyCurrent returns a new reference or NULL
    // with an exception set, which `from_owned_ptr_or_err` turns into an Err.
    unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyContext_CopyCurrent()).map(Bound::unbind) }
}

/// A new bytes object of at most `max` bytes that `fill` reads into, shrunk to what it read: how
/// `socket.recv()` allocates. Nothing is copied, and the bytes are not zeroed first, so pages of
/// a large allocation that the read does not reach are never touched.
pub fn bytes_read_into<'py>(
    py: Python<'py>,
    max: usize,
    fill: impl FnOnce(&mut [std::mem::MaybeUninit<u8>]) -> std::io::Result<usize>,
) -> PyResult<std::io::Result<(usize, Bound<'py, pyo3::types::PyBytes>)>> {
    let mut out = BytesBuilder::with_capacity(py, max)?;
    let n = match out.fill_uninit(max, fill)? {
        Ok(n) => n,
        Err(e) => return Ok(Err(e)),
    };
    Ok(Ok((n, out.finish()?)))
}

/// `err` with a traceback entry for the Python frame running now, as if that frame had raised
/// it; unchanged when no Python frame is running. Before 3.12 the traceback is also set on the
/// exception object itself.
pub fn with_traceback_here(py: Python<'_>, err: PyErr) -> PyErr {
    // SAFETY: the GIL is held. `PyEval_GetFrame` returns a borrowed frame (or NULL) that stays
    // alive while its code runs, which includes this call. `PyTraceBack_Here` works on the
    // raised exception, which `restore` sets and `fetch` takes back (an error of its own
    // replaces it, chained).
    unsafe {
        let frame = ffi::PyEval_GetFrame();
        if frame.is_null() {
            return err;
        }
        err.restore(py);
        ffi::PyTraceBack_Here(frame);
    }
    let err = PyErr::fetch(py);
    // Before 3.12 the traceback travels beside the exception until it is raised again: give it to
    // the exception, which is what goes to `_fatal_error`.
    if let Some(tb) = err.traceback(py) {
        // SAFETY: the GIL is held; both objects are alive, and `tb` is a traceback object.
        unsafe { ffi::PyException_SetTraceback(err.value(py).as_ptr(), tb.as_ptr()) };
    }
    err
}

/// Runs `f` with `exc` as the exception being handled (`sys.exception()`, `sys.exc_info()`), as
/// inside the `except` block that caught it, then restores the one handled before.
pub fn while_handling<R>(exc: &Bound<'_, PyAny>, f: impl FnOnce() -> R) -> R {
    // SAFETY: the GIL is held (`exc` is bound). PyErr_GetHandledException returns a new
    // reference or NULL; PyErr_SetHandledException takes a reference of its own to what it is
    // given (NULL clears), so the saved one is given back and then released.
    let before = unsafe {
        let before = ffi::PyErr_GetHandledException();
        ffi::PyErr_SetHandledException(exc.as_ptr());
        before
    };
    let out = f();
    // SAFETY: as above; `before` is the reference taken above (or NULL).
    unsafe {
        ffi::PyErr_SetHandledException(before);
        ffi::Py_XDECREF(before);
    }
    out
}

/// Bytes of a path decoded as `os.fsdecode` does (surrogate escapes for undecodable bytes).
pub fn decode_fs<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    let len = ffi::Py_ssize_t::try_from(bytes.len())?;
    // SAFETY: the GIL is held; the pointer and length describe `bytes`. The call returns a new
    // reference or NULL with an exception set.
    unsafe {
        let obj = ffi::PyUnicode_DecodeFSDefaultAndSize(bytes.as_ptr().cast(), len);
        Bound::from_owned_ptr_or_err(py, obj)
    }
}

/// `template.format(*args)`: text made of Python strings, which may hold anything a `str` can
/// (lone surrogates included), as Rust strings cannot.
pub fn format<'py>(
    py: Python<'py>,
    template: &Bound<'py, pyo3::types::PyString>,
    args: impl pyo3::call::PyCallArgs<'py>,
) -> PyResult<Bound<'py, pyo3::types::PyString>> {
    let text = template.call_method1(once::intern!(py, "format"), args)?;
    Ok(text.cast_into::<pyo3::types::PyString>()?)
}

extern "C" {
    /// CPython's resize of a bytes object nothing else refers to yet (what `socket.recv` uses);
    /// exported by every supported version.
    fn _PyBytes_Resize(bytes: *mut *mut ffi::PyObject, newsize: ffi::Py_ssize_t) -> std::os::raw::c_int;
}

/// Whether `obj` is a `contextvars.Context` (the type cannot be subclassed).
pub fn is_context(obj: &Bound<'_, PyAny>) -> bool {
    // SAFETY: compares the type pointer of a live object with the Context type's address.
    unsafe { ffi::PyContext_CheckExact(obj.as_ptr()) != 0 }
}

/// `context.run(call)`: enter `context`, make the call, always exit.
///
/// Calling PyContext_Enter/Exit directly skips building a bound `run` method and an argument
/// tuple for every callback, which is most of the cost of running a handle.
#[inline]
pub fn run_in_context<'py>(
    py: Python<'py>,
    context: &Bound<'py, PyAny>,
    call: impl FnOnce() -> PyResult<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: the GIL is held; `context` is a live object. PyContext_Enter type-checks it and
    // returns -1 with TypeError/RuntimeError set when it is not an enterable Context.
    if unsafe { ffi::PyContext_Enter(context.as_ptr()) } < 0 {
        return Err(PyErr::fetch(py));
    }
    let result = call();
    // SAFETY: we entered exactly this context above on this thread, so exiting it is valid; it
    // cannot fail in that case, and if it did the error would be set and surfaced below.
    let exited = unsafe { ffi::PyContext_Exit(context.as_ptr()) };
    if exited < 0 {
        return Err(PyErr::fetch(py));
    }
    result
}

/// Lets go of `obj` through the GIL token, on the per-callback paths.
///
/// Dropping a `Py<T>` first asks PyO3 whether the thread is attached, a thread-local read that
/// in an extension module is a `__tls_get_addr` call; with `py` at hand that is known already.
#[inline]
pub fn release<T>(py: Python<'_>, obj: Option<Py<T>>) {
    if let Some(obj) = obj {
        obj.drop_ref(py);
    }
}

/// How many references to `obj` there are.
#[inline]
pub fn ref_count<T>(_py: Python<'_>, obj: &Py<T>) -> isize {
    // SAFETY: reading the refcount of a live object with the GIL held.
    unsafe { ffi::Py_REFCNT(obj.as_ptr()) }
}

/// Whether `obj` is referenced by its holder alone.
#[inline]
pub fn solely_owned<T>(py: Python<'_>, obj: &Py<T>) -> bool {
    ref_count(py, obj) == 1
}

/// Whether another thread of this interpreter has a Python thread state: one that may be waiting
/// for the GIL, now or at any moment (a thread takes its state before it asks for the GIL).
/// Only this thread's own state is read through; the list's head is compared, not followed.
#[inline]
pub fn other_threads(_py: Python<'_>) -> bool {
    // SAFETY: the GIL is held, so this thread's state is current and alive. The head of the
    // interpreter's thread list and our own `next` link are read as pointer values only (another
    // thread adding or removing its state changes them under the runtime's lock); neither is
    // dereferenced here.
    unsafe {
        let me = ffi::PyThreadState_Get();
        let head = ffi::PyInterpreterState_ThreadHead(ffi::PyThreadState_GetInterpreter(me));
        head != me || !ffi::PyThreadState_Next(me).is_null()
    }
}

/// A GIL token inside the collector's traversal, which runs with the GIL held but passes none.
/// Only for pointer-level work (upcasts, reading fields); no Python API calls.
#[inline]
pub fn traversal_token<R>(f: impl FnOnce(Python<'_>) -> R) -> R {
    // SAFETY: tp_traverse is only ever called by CPython's collector, with the GIL held by the
    // calling thread; the token does not outlive the closure.
    f(unsafe { Python::assume_attached() })
}

/// Whether calling `callable` goes straight to a vectorcall function of its own. Without one,
/// `PyObject_Vectorcall` packs the arguments into a tuple and the keywords into a new dict for
/// `tp_call`.
pub fn has_vectorcall(callable: &Bound<'_, PyAny>) -> bool {
    // SAFETY: the GIL is held and `callable` is alive; `PyVectorcall_Function` only reads its
    // type's flags and slot.
    unsafe { ffi::PyVectorcall_Function(callable.as_ptr()).is_some() }
}

/// `callable(*args, **dict(zip(kwnames, kwvalues)))` through vectorcall: without building a
/// tuple or a dict when `callable` has a vectorcall of its own (see `has_vectorcall`).
pub fn call_kw<'py>(
    py: Python<'py>,
    callable: &Bound<'py, PyAny>,
    args: &[&Bound<'py, PyAny>],
    kwnames: &Bound<'py, PyTuple>,
    kwvalues: &[&Bound<'py, PyAny>],
) -> PyResult<Bound<'py, PyAny>> {
    debug_assert_eq!(kwnames.len(), kwvalues.len());
    // One spare slot in front lets the callee use PY_VECTORCALL_ARGUMENTS_OFFSET.
    let mut stack: [*mut ffi::PyObject; 8] = [std::ptr::null_mut(); 8];
    let n = args.len();
    assert!(1 + n + kwvalues.len() <= stack.len(), "too many arguments for call_kw");
    for (slot, arg) in stack[1..].iter_mut().zip(args.iter().chain(kwvalues.iter())) {
        *slot = arg.as_ptr();
    }
    // SAFETY: the GIL is held; `stack[1..]` holds n positional then len(kwnames) keyword
    // arguments, all borrowed from live `Bound`s that outlive the call; kwnames is a tuple of str.
    // Vectorcall returns a new reference or NULL with an exception set.
    unsafe {
        let result = ffi::PyObject_Vectorcall(
            callable.as_ptr(),
            stack.as_ptr().add(1),
            n | ffi::PY_VECTORCALL_ARGUMENTS_OFFSET,
            kwnames.as_ptr(),
        );
        Bound::from_owned_ptr_or_err(py, result)
    }
}

/// CPython's method lookup without a bound method: `1` and the type's function when `name` is a
/// method of the type that the instance does not shadow, `0` and the attribute otherwise (a new
/// reference either way), or `0` and NULL with an exception set. Private, but exported by every
/// supported version; looked up when first needed rather than linked, so that a Python without
/// it still imports the module.
type GetMethod =
    unsafe extern "C" fn(*mut ffi::PyObject, *mut ffi::PyObject, *mut *mut ffi::PyObject) -> std::os::raw::c_int;

/// What the crate learns about the interpreter once, settled at import rather than on first use
/// (see `context::prepare`).
pub fn prepare(py: Python<'_>) {
    context::prepare(py);
    get_method(py);
}

fn get_method(py: Python<'_>) -> Option<GetMethod> {
    static GET_METHOD: GilOnce<Option<usize>> = GilOnce::new();
    let address = *GET_METHOD.get_or_init(py, || {
        // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only searches the loaded
        // objects; it returns NULL when the symbol is absent.
        let found = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"_PyObject_GetMethod".as_ptr()) };
        (!found.is_null()).then_some(found as usize)
    });
    // SAFETY: the address is that of `_PyObject_GetMethod`, whose signature `GetMethod` is.
    address.map(|a| unsafe { std::mem::transmute::<usize, GetMethod>(a) })
}

/// Whether `obj.name` may not be its type's method `name`: set on the instance (as
/// `mock.patch.object` does), which shadows the method. Looking it up costs no bound method
/// (reading the instance dict instead would make CPython give the object a real dict and slow
/// every later attribute access to it). Without the lookup function, always true: callers then
/// take their general path.
pub fn shadowed_on_instance(obj: &Bound<'_, PyAny>, name: &Bound<'_, pyo3::types::PyString>) -> PyResult<bool> {
    let py = obj.py();
    let Some(lookup) = get_method(py) else {
        return Ok(true);
    };
    let mut found = std::ptr::null_mut();
    // SAFETY: the GIL is held; `obj` and `name` are live; `found` receives a new reference or
    // NULL with an exception set.
    let is_method = unsafe { lookup(obj.as_ptr(), name.as_ptr(), &mut found) };
    // SAFETY: a new reference or NULL, as above.
    unsafe { Bound::from_owned_ptr_or_err(py, found)? };
    Ok(is_method == 0)
}

/// `obj` as a `Py_ssize_t`, converted as an argument-clinic `Py_ssize_t` parameter converts it
/// (`socket.recv(n)`): `__index__`, then `OverflowError` "... to convert to C ssize_t".
pub fn as_ssize_t(obj: &Bound<'_, PyAny>) -> PyResult<isize> {
    let py = obj.py();
    // SAFETY: the GIL is held; PyNumber_Index returns a new reference or NULL with an exception.
    let index = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyNumber_Index(obj.as_ptr()))? };
    // SAFETY: `index` is an int; -1 with an exception set means it did not fit.
    let n = unsafe { ffi::PyLong_AsSsize_t(index.as_ptr()) };
    if n == -1 {
        if let Some(err) = PyErr::take(py) {
            return Err(err);
        }
    }
    Ok(n)
}
