//! `Handle` and `TimerHandle`: what `call_soon`, `call_later` and `add_reader` return.
//!
//! They mirror `asyncio.Handle` / `asyncio.TimerHandle` (which have `__slots__`, so a native type
//! cannot also inherit from them). Cancelling drops the callback and its arguments at once, as the
//! stdlib does, so a cancelled timer waiting in the heap does not keep objects alive. A
//! `TimerHandle` counts its own cancellation into the loop's counter so the heap can be compacted
//! when cancelled timers dominate it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyTuple;
use pyo3::{intern, PyTraverseError};

use crate::ffi;

#[pyclass(subclass, weakref, module = "ferroloop._core", name = "Handle")]
pub struct Handle {
    pub(crate) callback: Option<Py<PyAny>>,
    pub(crate) args: Option<Py<PyTuple>>,
    pub(crate) context: Option<Py<PyAny>>,
    pub(crate) cancelled: bool,
    source_traceback: Option<Py<PyAny>>,
    /// The repr captured at cancel time in debug mode, when the callback is already gone.
    repr: Option<String>,
}

impl Handle {
    pub(crate) fn new(
        py: Python<'_>,
        callback: Py<PyAny>,
        args: Py<PyTuple>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        let context = match context {
            Some(ctx) => ctx,
            None => ffi::copy_context(py)?,
        };
        Ok(Handle {
            callback: Some(callback),
            args: Some(args),
            context: Some(context),
            cancelled: false,
            source_traceback: None,
            repr: None,
        })
    }

    /// What `_run` needs, taken out of the borrow so the callback can re-enter this handle.
    #[inline]
    pub(crate) fn parts(&self, py: Python<'_>) -> Option<(Py<PyAny>, Py<PyTuple>, Py<PyAny>)> {
        if self.cancelled {
            return None;
        }
        match (&self.callback, &self.args, &self.context) {
            (Some(cb), Some(args), Some(ctx)) => Some((cb.clone_ref(py), args.clone_ref(py), ctx.clone_ref(py))),
            _ => None,
        }
    }

    /// `handle.cancel()` from Rust.
    pub(crate) fn cancel_py(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::cancel(slf)
    }

    fn cancel_inner(&mut self, py: Python<'_>, debug_repr: Option<String>) -> (Option<Py<PyAny>>, Option<Py<PyTuple>>) {
        self.cancelled = true;
        if debug_repr.is_some() {
            self.repr = debug_repr;
        }
        let _ = py;
        (self.callback.take(), self.args.take())
    }
}

fn format_callback<'py>(py: Python<'py>, callback: &Py<PyAny>, args: &Py<PyTuple>) -> PyResult<String> {
    static FORMAT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let f = FORMAT.import(py, "asyncio.format_helpers", "_format_callback_source")?;
    f.call1((callback, args))?.extract()
}

/// `<Handle ...>` in the stdlib's format: class, cancelled flag, callback source, creation site.
fn repr_info(py: Python<'_>, name: &str, handle: &Handle, extra: Option<String>) -> PyResult<String> {
    if let Some(r) = &handle.repr {
        return Ok(r.clone());
    }
    let mut parts = vec![name.to_string()];
    if handle.cancelled {
        parts.push("cancelled".to_string());
    }
    if let Some(extra) = extra {
        parts.push(extra);
    }
    if let (Some(cb), Some(args)) = (&handle.callback, &handle.args) {
        parts.push(format_callback(py, cb, args)?);
    }
    if let Some(tb) = &handle.source_traceback {
        let tb = tb.bind(py);
        if let Ok(n) = tb.len() {
            if n > 0 {
                let frame = tb.get_item(n - 1)?;
                let file: String = frame.getattr(intern!(py, "filename"))?.extract()?;
                let line: i64 = frame.getattr(intern!(py, "lineno"))?.extract()?;
                parts.push(format!("created at {file}:{line}"));
            }
        }
    }
    Ok(format!("<{}>", parts.join(" ")))
}

#[pymethods]
impl Handle {
    /// `Handle(callback, args, loop, context=None)`, the signature of `asyncio.Handle`.
    #[new]
    #[pyo3(signature = (callback, args, r#loop, context=None))]
    fn py_new(
        py: Python<'_>,
        callback: Py<PyAny>,
        args: Option<Py<PyTuple>>,
        r#loop: &Bound<'_, PyAny>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        let _ = r#loop;
        let args = match args {
            Some(a) => a,
            None => PyTuple::empty(py).unbind(),
        };
        Handle::new(py, callback, args, context)
    }

    fn cancel(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let debug_repr = debug_repr(slf)?;
        // Drop the callback outside the borrow: its finalizer may run Python code.
        let dropped = slf.borrow_mut().cancel_inner(py, debug_repr);
        drop(dropped);
        Ok(())
    }

    fn cancelled(&self) -> bool {
        self.cancelled
    }

    fn get_context(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.context.as_ref().map(|c| c.clone_ref(py))
    }

    /// Runs the callback in its context, as the loop does (errors go to the caller).
    fn _run(&self, py: Python<'_>) -> PyResult<()> {
        if let Some((cb, args, ctx)) = self.parts(py) {
            ffi::run_in_context(py, ctx.bind(py), cb.bind(py), args.bind(py))?;
        }
        Ok(())
    }

    #[getter]
    fn _callback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.callback.as_ref().map(|c| c.clone_ref(py))
    }

    #[getter]
    fn _args(&self, py: Python<'_>) -> Option<Py<PyTuple>> {
        self.args.as_ref().map(|c| c.clone_ref(py))
    }

    #[getter]
    fn _cancelled(&self) -> bool {
        self.cancelled
    }

    #[getter]
    fn _context(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.get_context(py)
    }

    #[getter(_source_traceback)]
    fn get_source_traceback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.source_traceback.as_ref().map(|c| c.clone_ref(py))
    }

    #[setter(_source_traceback)]
    fn set_source_traceback(&mut self, value: Option<Py<PyAny>>) {
        self.source_traceback = value;
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let name = slf.get_type().name()?.to_string();
        repr_info(slf.py(), &name, &slf.borrow(), None)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.callback)?;
        visit.call(&self.args)?;
        visit.call(&self.context)?;
        visit.call(&self.source_traceback)?;
        Ok(())
    }

    fn __clear__(&mut self) {
        self.callback = None;
        self.args = None;
        self.context = None;
        self.source_traceback = None;
    }
}

/// In debug mode the stdlib keeps the handle's repr from before cancel dropped the callback.
fn debug_repr(slf: &Bound<'_, Handle>) -> PyResult<Option<String>> {
    let has_tb = slf.borrow().source_traceback.is_some();
    if has_tb {
        Ok(Some(slf.repr()?.to_string()))
    } else {
        Ok(None)
    }
}

#[pyclass(extends = Handle, module = "ferroloop._core", name = "TimerHandle")]
pub struct TimerHandle {
    pub(crate) when: f64,
    /// True while the handle sits in its loop's timer heap.
    pub(crate) scheduled: bool,
    cancelled_timers: Arc<AtomicUsize>,
}

impl TimerHandle {
    pub(crate) fn new_pair(handle: Handle, when: f64, cancelled_timers: Arc<AtomicUsize>) -> (TimerHandle, Handle) {
        (
            TimerHandle {
                when,
                scheduled: false,
                cancelled_timers,
            },
            handle,
        )
    }
}

#[pymethods]
impl TimerHandle {
    fn cancel(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let base = slf.as_super();
        if base.borrow().cancelled {
            return Ok(());
        }
        if slf.borrow().scheduled {
            slf.borrow().cancelled_timers.fetch_add(1, Ordering::Relaxed);
        }
        let debug_repr = debug_repr(base)?;
        let dropped = base.borrow_mut().cancel_inner(py, debug_repr);
        drop(dropped);
        Ok(())
    }

    fn when(&self) -> f64 {
        self.when
    }

    #[getter]
    fn _when(&self) -> f64 {
        self.when
    }

    #[getter]
    fn _scheduled(&self) -> bool {
        self.scheduled
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let when = slf.borrow().when;
        let base = slf.as_super().borrow();
        repr_info(slf.py(), "TimerHandle", &base, Some(format!("when={when}")))
    }
}
