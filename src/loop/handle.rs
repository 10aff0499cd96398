//! `Handle` and `TimerHandle`: what `call_soon`, `call_later` and `add_reader` return.
//!
//! They mirror `asyncio.Handle` / `asyncio.TimerHandle` (which have `__slots__`, so a native type
//! cannot also inherit from them). Cancelling drops the callback and its arguments at once, as the
//! stdlib does, so a cancelled timer waiting in the heap does not keep objects alive. A
//! `TimerHandle` counts its own cancellation into the loop's counter so the heap can be compacted
//! when cancelled timers dominate it.
//!
//! Handles are not garbage-collector objects: allocating one per callback would count towards
//! the collector's thresholds and trigger extra collections over every live object, which was
//! most of the cost of workloads with many tasks. They cannot hide a reference cycle: a one-shot
//! handle (`call_soon`, `call_later`, ...) drops its callback, arguments and context once it has
//! run, and its callback and arguments when cancelled; while a handle waits in a loop, the loop
//! reports the handle's contents to the collector as its own.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use pyo3::basic::CompareOp;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyFloat, PyString, PyTuple};
use pyo3::PyTraverseError;

use super::args::CallArgs;
use crate::ffi::{self, intern, GilCell, GilOnce};

#[derive(Default)]
struct Fields {
    callback: Option<Py<PyAny>>,
    args: Option<CallArgs>,
    context: Option<Py<PyAny>>,
    source_traceback: Option<Py<PyAny>>,
    /// The repr captured at cancel time in debug mode, when the callback is already gone.
    repr: Option<Py<PyString>>,
}

#[pyclass(frozen, subclass, weakref, module = "ferroloop._core", name = "Handle")]
pub struct Handle {
    cancelled: AtomicBool,
    /// Made by `call_soon`/`call_later` & co.: runs once, then lets go of what it holds. Handles
    /// of fd callbacks and signal handlers run again and again and keep theirs.
    one_shot: bool,
    /// The context is the loop's snapshot of the context the handle was scheduled in, shared with
    /// other handles (see `LoopCore::context_snapshot`). Such a handle runs in a copy of it of
    /// its own, made when it runs or when its context is asked for, unless it holds the
    /// snapshot alone by then.
    shared_context: AtomicBool,
    fields: GilCell<Fields>,
}

/// A finished handle's callback, arguments and context.
pub(crate) type Contents = (Option<Py<PyAny>>, Option<CallArgs>, Option<Py<PyAny>>);

/// Lets go of a handle's contents (see `ffi::release`).
#[inline]
pub(crate) fn release_contents(py: Python<'_>, (callback, args, context): Contents) {
    ffi::release(py, callback);
    if let Some(args) = args {
        args.release(py);
    }
    ffi::release(py, context);
}

/// How the loop makes and frees its `Handle` and `TimerHandle` objects itself once their layout
/// is known (see `ffi::Layout1`), skipping PyO3's generic paths.
static HANDLE_LAYOUT: ffi::Layout1<Handle> = ffi::Layout1::new();

static TIMER_LAYOUT: ffi::Layout2<Handle, TimerHandle> = ffi::Layout2::new();

impl ffi::DropValues for Handle {
    #[inline]
    fn drop_values(self, py: Python<'_>) {
        self.release(py);
    }
}

impl ffi::DropValues for (Handle, TimerHandle) {
    #[inline]
    fn drop_values(self, py: Python<'_>) {
        let (handle, timer) = self;
        ffi::release(py, timer.when_obj);
        drop(timer.cancelled_timers);
        handle.release(py);
    }
}

/// Lets the loop make and free `Handle` and `TimerHandle` objects itself, when their layout is
/// the one expected; otherwise PyO3 keeps doing it. Called once, after `ffi::freelist::install`.
pub(crate) fn install_lifecycle(py: Python<'_>) -> PyResult<()> {
    let probe = || Handle::with_context(py.None(), CallArgs::Zero, py.None(), false, true);
    let handle = Bound::new(py, probe())?;
    HANDLE_LAYOUT.install(&handle);
    drop(handle);
    let timer = Bound::new(
        py,
        PyClassInitializer::from(probe()).add_subclass(TimerHandle::new(0.0, None, Arc::default())),
    )?;
    TIMER_LAYOUT.install(&timer);
    Ok(())
}

/// A new `Handle` object.
#[inline]
pub(crate) fn new_handle(py: Python<'_>, value: Handle) -> PyResult<Py<Handle>> {
    HANDLE_LAYOUT.make(py, value)
}

/// A new `TimerHandle` object.
#[inline]
pub(crate) fn new_timer(py: Python<'_>, handle: Handle, timer: TimerHandle) -> PyResult<Py<TimerHandle>> {
    TIMER_LAYOUT.make(py, handle, timer)
}

/// What running a handle needs, taken out of the handle so the callback may re-enter it.
pub(crate) struct Parts {
    pub callback: Py<PyAny>,
    pub args: CallArgs,
    pub context: Py<PyAny>,
}

impl Handle {
    /// A handle the loop unregisters (an fd callback replaced or removed): cancelled, and holding
    /// nothing more (it is not a GC object).
    pub(crate) fn retire(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::cancel_py(slf)?;
        slf.get().finish(slf.py());
        Ok(())
    }

    /// `handle.cancel()`.
    pub(crate) fn cancel_py(slf: &Bound<'_, Self>) -> PyResult<()> {
        if slf.get().is_cancelled() {
            return Ok(());
        }
        slf.get().cancelled.store(true, Ordering::Relaxed);
        let debug_repr = Self::debug_repr(slf)?;
        slf.get().cancel_inner(slf.py(), debug_repr);
        Ok(())
    }

    /// A handle; `one_shot` for those of `call_soon`/`call_later` & co. (see `Handle::one_shot`).
    pub(crate) fn new(
        py: Python<'_>,
        callback: Py<PyAny>,
        args: CallArgs,
        context: Option<Py<PyAny>>,
        one_shot: bool,
    ) -> PyResult<Self> {
        let context = match context {
            Some(ctx) => ctx,
            None => ffi::copy_context(py)?,
        };
        Ok(Self::with_context(callback, args, context, false, one_shot))
    }

    /// Lets go of everything the handle holds (see `ffi::release`).
    fn release(self, py: Python<'_>) {
        let f = self.fields.into_inner();
        release_contents(py, (f.callback, f.args, f.context));
        ffi::release(py, f.source_traceback);
    }

    /// A handle running in `context`, which is a shared snapshot when `shared`.
    pub(crate) fn with_context(
        callback: Py<PyAny>,
        args: CallArgs,
        context: Py<PyAny>,
        shared: bool,
        one_shot: bool,
    ) -> Self {
        Handle {
            cancelled: AtomicBool::new(false),
            one_shot,
            shared_context: AtomicBool::new(shared),
            fields: GilCell::new(Fields {
                callback: Some(callback),
                args: Some(args),
                context: Some(context),
                source_traceback: None,
                repr: None,
            }),
        }
    }

    /// Whether the context is a shared snapshot; it is the handle's own from now on (the caller
    /// makes it so). A load and a store, not a swap: the flag changes only with the GIL held, and
    /// a swap is a locked instruction, which cost this per-callback path a pipeline stall.
    #[inline]
    pub(crate) fn take_shared_context(&self) -> bool {
        let shared = self.shared_context.load(Ordering::Relaxed);
        if shared {
            self.shared_context.store(false, Ordering::Relaxed);
        }
        shared
    }

    /// Gives the handle a context of its own in place of a shared snapshot: a copy of it (made
    /// with no borrow held: allocating a GC object may run a collection on 3.11).
    pub(crate) fn own_context(&self, py: Python<'_>) -> PyResult<()> {
        if !self.take_shared_context() {
            return Ok(());
        }
        let Some(shared) = self.field(py, |f| f.context.as_ref()) else {
            return Ok(());
        };
        let copy = ffi::context::copy_of(shared.bind(py))?;
        let replaced = self.fields.borrow_mut(py).context.replace(copy);
        drop(replaced);
        drop(shared);
        Ok(())
    }

    #[inline]
    pub(crate) fn is_one_shot(&self) -> bool {
        self.one_shot
    }

    /// After a one-shot handle has run: drop the callback, arguments and context. Nothing can
    /// run it again, and holding nothing it cannot be part of a reference cycle, so the loop
    /// never has to hand it back to the garbage collector.
    #[inline]
    pub(crate) fn finish(&self, py: Python<'_>) {
        release_contents(py, self.take_contents(py));
    }

    /// What `finish` releases.
    #[inline]
    pub(crate) fn take_contents(&self, py: Python<'_>) -> Contents {
        let mut f = self.fields.borrow_mut(py);
        (f.callback.take(), f.args.take(), f.context.take())
    }

    /// Puts taken-out contents back (a one-shot handle whose callback failed, so the exception
    /// handler sees it whole).
    pub(crate) fn restore(&self, py: Python<'_>, (callback, args, context): Contents) {
        let mut f = self.fields.borrow_mut(py);
        f.callback = callback;
        f.args = args;
        f.context = context;
    }

    #[inline]
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// Whether this live (not cancelled) handle calls `callback`.
    pub(crate) fn calls(&self, py: Python<'_>, callback: &Bound<'_, PyAny>) -> bool {
        !self.is_cancelled()
            && self
                .fields
                .borrow_mut(py)
                .callback
                .as_ref()
                .is_some_and(|c| c.is(callback))
    }

    #[inline]
    pub(crate) fn parts(&self, py: Python<'_>) -> Option<Parts> {
        if self.is_cancelled() {
            return None;
        }
        let f = self.fields.borrow_mut(py);
        match (&f.callback, &f.args, &f.context) {
            (Some(cb), Some(args), Some(ctx)) => Some(Parts {
                callback: cb.clone_ref(py),
                args: args.clone_ref(py),
                context: ctx.clone_ref(py),
            }),
            _ => None,
        }
    }

    /// Reports what the handle holds to the garbage collector, on behalf of the loop that owns
    /// it (handles are not GC objects themselves; see `LoopCore::__traverse__`).
    pub(crate) fn visit_contents(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(f) = self.fields.try_borrow_in_gc() {
            visit.call(&f.callback)?;
            for arg in f.args.as_ref().map(CallArgs::objects).unwrap_or_default() {
                visit.call(arg)?;
            }
            visit.call(&f.context)?;
            visit.call(&f.source_traceback)?;
        }
        Ok(())
    }

    /// Marks the handle cancelled and releases its callback (outside the borrow: the callback's
    /// finalizer may run Python code).
    fn cancel_inner(&self, py: Python<'_>, debug_repr: Option<Py<PyString>>) {
        let dropped = {
            let mut f = self.fields.borrow_mut(py);
            if debug_repr.is_some() {
                f.repr = debug_repr;
            }
            (f.callback.take(), f.args.take())
        };
        drop(dropped);
    }

    /// In debug mode the stdlib keeps the repr from before cancel dropped the callback.
    fn debug_repr(slf: &Bound<'_, Self>) -> PyResult<Option<Py<PyString>>> {
        let has_tb = slf.get().fields.borrow_mut(slf.py()).source_traceback.is_some();
        if has_tb {
            Ok(Some(slf.repr()?.unbind()))
        } else {
            Ok(None)
        }
    }

    /// `<Name [cancelled] [extra] callback(args) at file:line [created at file:line]>`, the
    /// stdlib's format. Made of Python strings: a callback's repr or a file name may hold
    /// anything a `str` can (lone surrogates included).
    fn repr_info<'py>(
        &self,
        py: Python<'py>,
        name: Bound<'py, PyString>,
        extra: Option<Bound<'py, PyString>>,
    ) -> PyResult<Bound<'py, PyString>> {
        let (repr, callback, args, tb) = {
            let f = self.fields.borrow_mut(py);
            let clone = |o: &Option<Py<PyAny>>| o.as_ref().map(|o| o.clone_ref(py));
            (
                f.repr.as_ref().map(|r| r.clone_ref(py)),
                clone(&f.callback),
                f.args.as_ref().map(|a| a.clone_ref(py)),
                clone(&f.source_traceback),
            )
        };
        let args = args.map(|a| a.to_tuple(py)).transpose()?;
        if let Some(r) = repr {
            return Ok(r.into_bound(py));
        }
        let mut parts = vec![name];
        if self.is_cancelled() {
            parts.push(PyString::new(py, "cancelled"));
        }
        parts.extend(extra);
        // (The stdlib shows no callback when it is None, as `call_soon(None)` outside debug
        // mode makes it.)
        if let (Some(cb), Some(args)) = (callback.filter(|cb| !cb.is_none(py)), args) {
            static FORMAT: GilOnce<Py<PyAny>> = GilOnce::new();
            let format = FORMAT.import(py, "asyncio.format_helpers", "_format_callback_source")?;
            // 3.13 shows the arguments only when told the loop is in debug mode; a handle made in
            // debug mode is the one with a source traceback.
            let text = if tb.is_some() && py.version_info() >= (3, 13) {
                let kwargs = pyo3::types::PyDict::new(py);
                kwargs.set_item("debug", true)?;
                format.call((cb, args), Some(&kwargs))?
            } else {
                format.call1((cb, args))?
            };
            parts.push(text.cast_into::<PyString>()?);
        }
        if let Some(tb) = tb {
            let tb = tb.bind(py);
            let n = tb.len()?;
            if n > 0 {
                let frame = tb.get_item(n - 1)?;
                let file = frame.getattr(intern!(py, "filename"))?;
                let line = frame.getattr(intern!(py, "lineno"))?;
                parts.push(ffi::format(py, intern!(py, "created at {}:{}"), (file, line))?);
            }
        }
        let joined = intern!(py, " ").call_method1(intern!(py, "join"), (parts,))?;
        ffi::format(py, intern!(py, "<{}>"), (joined,))
    }

    /// After a failed run: a handle whose `context=` was not a `contextvars.Context` (which the
    /// stdlib accepts) could not be entered, so its callback has not run. It runs now as the
    /// stdlib runs every callback, `context.run(callback, *args)`, which fails as it does there
    /// for an object without `run`. Any other failure is `err` as it was. Kept off the path of
    /// every callback, where the context is entered directly.
    #[cold]
    #[inline(never)]
    pub(crate) fn run_in_foreign_context(&self, py: Python<'_>, err: PyErr) -> PyResult<()> {
        let Some(p) = self.parts(py) else {
            return Err(err);
        };
        let context = p.context.bind(py);
        if ffi::is_context(context) {
            return Err(err);
        }
        let mut items = vec![p.callback.into_bound(py)];
        items.extend(p.args.to_tuple(py)?.iter());
        context.call_method1(intern!(py, "run"), PyTuple::new(py, items)?)?;
        Ok(())
    }

    fn field(&self, py: Python<'_>, pick: impl Fn(&Fields) -> Option<&Py<PyAny>>) -> Option<Py<PyAny>> {
        let f = self.fields.borrow_mut(py);
        pick(&f).map(|o| o.clone_ref(py))
    }
}

/// `asyncio.<name>` for a native handle, or the handle's own type for a Python subclass of it
/// (whose `__class__` must stay its own).
fn asyncio_class<'py>(slf: &Bound<'py, Handle>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    let py = slf.py();
    let ty = slf.get_type();
    if ty.is(py.get_type::<Handle>()) || ty.is(py.get_type::<TimerHandle>()) {
        py.import("asyncio.events")?.getattr(name)
    } else {
        Ok(ty.into_any())
    }
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
        let args = args.map(CallArgs::Many).unwrap_or(CallArgs::Zero);
        Handle::new(py, callback, args, context, false)
    }

    fn cancelled(&self) -> bool {
        self.is_cancelled()
    }

    /// `asyncio.Handle`, so `isinstance(handle, asyncio.Handle)` holds: its `__slots__` keep a
    /// native type from inheriting it, and `isinstance` consults `__class__` when the type check
    /// fails. `type(handle)` is still the native type.
    #[getter(__class__)]
    fn class_<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        asyncio_class(slf, "Handle")
    }

    fn get_context(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.own_context(py)?;
        Ok(self.field(py, |f| f.context.as_ref()))
    }

    /// Runs the callback in its context, as the loop does: an exception goes to the running
    /// loop's exception handler, as the stdlib's `Handle._run` reports it (a handle does not
    /// hold its loop; the loop that runs handles is the running one). `SystemExit` and
    /// `KeyboardInterrupt`, or an exception with no ferroloop running, go to the caller.
    fn _run(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        slf.get().own_context(py)?;
        let Some(p) = slf.get().parts(py) else {
            return Ok(());
        };
        let Err(err) = ffi::run_in_context(py, p.context.bind(py), || p.args.call(py, p.callback.bind(py))) else {
            return Ok(());
        };
        let Err(err) = slf.get().run_in_foreign_context(py, err) else {
            return Ok(());
        };
        let running = py
            .import(intern!(py, "asyncio.events"))?
            .call_method0(intern!(py, "_get_running_loop"))?;
        match running.cast::<super::LoopCore>() {
            Ok(running) => super::run::callback_failed(running, &slf.clone().unbind(), err),
            Err(_) => Err(err),
        }
    }

    #[getter]
    fn _callback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.field(py, |f| f.callback.as_ref())
    }

    #[getter]
    fn _args<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let args = self.fields.borrow_mut(py).args.as_ref().map(|a| a.clone_ref(py));
        args.map(|a| a.to_tuple(py)).transpose()
    }

    #[getter]
    fn _cancelled(&self) -> bool {
        self.is_cancelled()
    }

    #[getter]
    fn _context(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.get_context(py)
    }

    #[getter(_source_traceback)]
    fn get_source_traceback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.field(py, |f| f.source_traceback.as_ref())
    }

    #[setter(_source_traceback)]
    fn set_source_traceback(&self, py: Python<'_>, value: Option<Py<PyAny>>) {
        let old = std::mem::replace(&mut self.fields.borrow_mut(py).source_traceback, value);
        drop(old);
    }

    fn __repr__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyString>> {
        slf.get().repr_info(slf.py(), slf.get_type().name()?, None)
    }
}

#[pyclass(frozen, extends = Handle, module = "ferroloop._core", name = "TimerHandle")]
pub struct TimerHandle {
    pub(crate) when: f64,
    /// The deadline as given when it was not a `float` (`call_at(10, ...)`): the stdlib keeps the
    /// object, so `when()` answers with it.
    when_obj: Option<Py<PyAny>>,
    /// Order among timers with the same deadline; set when the timer enters the heap.
    seq: AtomicU64,
    /// True while the handle sits in its loop's timer heap.
    scheduled: AtomicBool,
    cancelled_timers: Arc<AtomicUsize>,
}

impl TimerHandle {
    pub(crate) fn new(when: f64, when_obj: Option<Py<PyAny>>, cancelled_timers: Arc<AtomicUsize>) -> Self {
        TimerHandle {
            when,
            when_obj,
            seq: AtomicU64::new(0),
            scheduled: AtomicBool::new(false),
            cancelled_timers,
        }
    }

    /// `timer_handle.cancel()`: also counts the cancellation for the heap's compaction.
    pub(crate) fn cancel_py(slf: &Bound<'_, Self>) -> PyResult<()> {
        let base = slf.as_super();
        if !base.get().is_cancelled() && slf.get().scheduled.load(Ordering::Relaxed) {
            // A load and a store: the counter changes only with the GIL held (see take_shared_context).
            let counter = &slf.get().cancelled_timers;
            counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        }
        Handle::cancel_py(base)
    }

    #[inline]
    pub(crate) fn seq_set(&self, seq: u64) {
        self.seq.store(seq, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn seq(&self) -> u64 {
        self.seq.load(Ordering::Relaxed)
    }

    #[inline]
    pub(crate) fn set_scheduled(&self, value: bool) {
        self.scheduled.store(value, Ordering::Relaxed);
    }

    /// The deadline as Python sees it: the object it was given as, or a float.
    fn when_py<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        match &self.when_obj {
            Some(obj) => obj.bind(py).clone(),
            None => PyFloat::new(py, self.when).into_any(),
        }
    }
}

#[pymethods]
impl TimerHandle {
    fn when<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        self.when_py(py)
    }

    /// `asyncio.TimerHandle`; see `Handle.__class__`.
    #[getter(__class__)]
    fn class_<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        asyncio_class(slf.as_super(), "TimerHandle")
    }

    #[getter]
    fn _when<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        self.when_py(py)
    }

    #[getter]
    fn _scheduled(&self) -> bool {
        self.scheduled.load(Ordering::Relaxed)
    }

    /// `hash(self._when)`, as `asyncio.TimerHandle`: equal timers hash alike.
    fn __hash__(&self, py: Python<'_>) -> PyResult<isize> {
        self.when_py(py).hash()
    }

    /// `asyncio.TimerHandle`'s ordering: by deadline against any timer handle (this loop's or
    /// the stdlib's), and equal when deadline, callback, arguments and cancellation all are.
    fn __richcmp__<'py>(slf: &Bound<'py, Self>, other: &Bound<'py, PyAny>, op: CompareOp) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        static TIMER_HANDLE: GilOnce<Py<PyAny>> = GilOnce::new();
        if !other.is_instance(TIMER_HANDLE.import(py, "asyncio.events", "TimerHandle")?)? {
            return Ok(py.NotImplemented());
        }
        let mine = slf.get().when_py(py);
        let theirs = other.getattr(intern!(py, "_when"))?;
        let equal = || -> PyResult<bool> {
            let same = |name: &Bound<'py, pyo3::types::PyString>| -> PyResult<bool> {
                slf.getattr(name)?.eq(other.getattr(name)?)
            };
            Ok(PyAnyMethods::eq(&mine, &theirs)?
                && same(intern!(py, "_callback"))?
                && same(intern!(py, "_args"))?
                && same(intern!(py, "_cancelled"))?)
        };
        let answer = match op {
            CompareOp::Lt => mine.lt(&theirs)?,
            CompareOp::Gt => mine.gt(&theirs)?,
            CompareOp::Le => mine.lt(&theirs)? || equal()?,
            CompareOp::Ge => mine.gt(&theirs)? || equal()?,
            CompareOp::Eq => equal()?,
            CompareOp::Ne => !equal()?,
        };
        Ok(answer.into_pyobject(py)?.to_owned().into_any().unbind())
    }

    fn __repr__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyString>> {
        // `str(self._when)`, as the stdlib writes it: Python's float text ("100.0", "1e-07"),
        // not Rust's ("100", "0.0000001"), or the object's own for another type.
        let py = slf.py();
        let when = ffi::format(py, intern!(py, "when={}"), (slf.get().when_py(py),))?;
        slf.as_super().get().repr_info(py, slf.get_type().name()?, Some(when))
    }
}
