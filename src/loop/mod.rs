//! `LoopCore`: the native half of `ferroloop.Loop`.
//!
//! It owns the ready queue, the timer heap, the fd table and the mio poller, and implements the
//! hot methods (`call_soon`, `call_at`, `time`, one loop turn). The Python subclass
//! (`ferroloop._loop.Loop`) adds the rest of `AbstractEventLoop` around it and provides the
//! cold-path hooks this module calls: `_handle_callback_error`, `_log_slow_callback`,
//! `_debug_new_handle`.
//!
//! Locking: all mutable state sits behind `state`, which is only ever taken briefly and never
//! across a call into Python, and never while a Python object is dropped (a finalizer may call
//! back into the loop); handles to release are collected and dropped after the lock is gone.
//! `poller` is held only by the thread running the loop, around the poll itself, and the GIL is
//! released only while that poll may block.

pub(crate) mod args;
mod fast;
mod handle;
pub(crate) mod io;
mod run;
mod sockops;
mod timers;

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mio::{Events, Poll, Registry, Token, Waker};
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple, PyWeakrefReference};
use pyo3::PyTraverseError;

use args::CallArgs;
pub(crate) use fast::{HANDLE_METHODS, METHODS as FAST_METHODS, TIMER_METHODS};
pub(crate) use handle::install_lifecycle as install_handle_lifecycle;
pub use handle::{Handle, TimerHandle};

use crate::errors;
use crate::ffi::{self, intern, GilCell, GilOnce, GilRefMut};
use crate::sys;

pub(crate) const WAKER_TOKEN: Token = Token(0);

/// The token of the poller's wake-up timer (`sys::timer::Deadline`); no fd's token is this large.
pub(crate) const DEADLINE_TOKEN: Token = Token(usize::MAX);

/// How many callbacks may wait for the loop's next turn before a thread other than the loop's
/// that adds one with `call_soon_threadsafe` is held back for a moment (see `push_soon`).
const THREADSAFE_BACKLOG: usize = 1024;

/// How long such a thread lets go of the GIL: long enough for the loop's thread, waiting for
/// the GIL, to be woken and take it (Linux's default timer slack is 50 us anyway).
const THREADSAFE_BACKOFF: Duration = Duration::from_micros(50);

/// `asyncio.Future`, `asyncio.Task`, and the keyword-name tuples the loop calls them (and task
/// factories) with.
struct Classes {
    future: Py<PyAny>,
    task: Py<PyAny>,
    /// Whether `Future` and `Task` have no vectorcall of their own (the C types do not): calling
    /// them through vectorcall with keywords then builds a dict for every call, so
    /// `Future(loop=self)` and `Task(coro, loop=self)` pass the loop's own `{"loop": self}` to
    /// `tp_call` instead (see `LoopCore::loop_kwargs`).
    future_by_dict: bool,
    task_by_dict: bool,
    kw_context: Py<PyTuple>,
    /// Before 3.13, `asyncio.tasks._set_task_name`, which names a factory's task when given a
    /// name (with a `DeprecationWarning` for a task without `set_name`); from 3.13 on
    /// `create_task` calls the task's `set_name` always.
    set_task_name: Option<Py<PyAny>>,
    kw_loop: Py<PyTuple>,
    kw_loop_name: Py<PyTuple>,
    kw_loop_context: Py<PyTuple>,
    kw_loop_name_context: Py<PyTuple>,
}

fn classes(py: Python<'_>) -> PyResult<&'static Classes> {
    static CLASSES: GilOnce<Classes> = GilOnce::new();
    CLASSES.get_or_try_init(py, || {
        let asyncio = py.import("asyncio")?;
        let names = |n: &[&str]| PyTuple::new(py, n).map(Bound::unbind);
        let future = asyncio.getattr("Future")?;
        let task = asyncio.getattr("Task")?;
        Ok(Classes {
            future_by_dict: !ffi::has_vectorcall(&future),
            task_by_dict: !ffi::has_vectorcall(&task),
            future: future.unbind(),
            task: task.unbind(),
            kw_context: names(&["context"])?,
            set_task_name: if py.version_info() >= (3, 13) {
                None
            } else {
                Some(py.import("asyncio.tasks")?.getattr("_set_task_name")?.unbind())
            },
            kw_loop: names(&["loop"])?,
            kw_loop_name: names(&["loop", "name"])?,
            kw_loop_context: names(&["loop", "context"])?,
            kw_loop_name_context: names(&["loop", "name", "context"])?,
        })
    })
}

pub(crate) struct State {
    pub ready: VecDeque<Py<Handle>>,
    pub timers: timers::TimerHeap,
    pub io: io::IoTable,
    /// The poller's registry and waker; `None` once the loop is closed (their fds released).
    pub os: Option<Os>,
    /// Set while the loop thread may block in poll, so `call_soon_threadsafe` knows to wake it.
    pub sleeping: bool,
    /// Readers to run as if the next poll reported their fd readable (see `requeue_reader`).
    pub requeued: Vec<(RawFd, Py<Handle>)>,
    /// When a turn that cannot block lets go of the GIL for other threads (see `poll`).
    pub sharing: run::GilSharing,
}

pub(crate) struct Os {
    pub registry: Registry,
    pub waker: Arc<Waker>,
}

pub(crate) struct Poller {
    pub poll: Poll,
    pub events: Events,
    /// Wakes the poll at a timer's deadline to the clock's resolution, where the poll's own
    /// timeout is whole milliseconds; `None` where the OS has none (see `sys::timer`).
    pub deadline: Option<sys::timer::Deadline>,
    /// The deadline (`when`, as bits) `deadline` is set for, until it is seen to fire.
    pub deadline_set: Option<u64>,
}

#[pyclass(subclass, frozen, weakref, module = "ferroloop._core", name = "LoopCore")]
pub struct LoopCore {
    state: GilCell<State>,
    /// Held by the thread running the loop, around the poll; the only state used without the GIL.
    poller: Mutex<Option<Poller>>,
    /// The queue being run this turn, swapped with `state.ready` at the start of the turn.
    batch: GilCell<VecDeque<Py<Handle>>>,
    closed: AtomicBool,
    stopping: AtomicBool,
    /// Inside `_run_forever_inner`: the loop is reachable from the frame running it, so whatever
    /// its queues hold is alive (see `__traverse__`).
    running: AtomicBool,
    debug: AtomicBool,
    /// `time` is overridden (on the instance, as `mock.patch.object` does, or in a subclass):
    /// the scheduler then reads the clock through `self.time()`, as the stdlib's does.
    custom_time: AtomicBool,
    cancelled_timers: Arc<AtomicUsize>,
    /// `set_task_factory`'s factory, called by `create_task` (through Python in debug mode).
    task_factory: GilCell<Option<Py<PyAny>>>,
    /// The last copy of the current context made for a one-shot handle scheduled without one,
    /// shared by the handles scheduled since while the context held the same variables (see
    /// `context_snapshot`).
    context_snapshot: GilCell<Option<Py<PyAny>>>,
    /// `{"loop": self}` while the loop runs (see `loop_kwargs`); it holds the loop, so it is
    /// traversed.
    loop_kwargs: GilCell<Option<Py<PyDict>>>,
    /// `_thread_id`: the id of the thread running the loop, `None` when it is not running (set
    /// by the Python side around `run_forever`); `is_running()` reads it.
    thread_id: GilCell<Option<Py<PyAny>>>,
    clock_resolution: f64,
    /// The fork generation the poller belongs to; a child after `fork()` builds its own.
    fork_generation: AtomicU64,
}

fn new_poller() -> std::io::Result<(Poller, Os)> {
    let poll = Poll::new()?;
    let registry = poll.registry().try_clone()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER_TOKEN)?);
    // Without a deadline timer the loop still works, its timers to the millisecond.
    let deadline = sys::timer::Deadline::new().ok().filter(|d| {
        let fd = d.fd();
        poll.registry()
            .register(&mut mio::unix::SourceFd(&fd), DEADLINE_TOKEN, mio::Interest::READABLE)
            .is_ok()
    });
    Ok((
        Poller {
            poll,
            events: Events::with_capacity(1024),
            deadline,
            deadline_set: None,
        },
        Os { registry, waker },
    ))
}

impl LoopCore {
    #[inline]
    pub(crate) fn state<'a>(&'a self, py: Python<'_>) -> GilRefMut<'a, State> {
        self.state.borrow_mut(py)
    }

    /// Empties the fd table. In a child after `fork()` the epoll instance is still the parent's,
    /// so the registrations are forgotten, not removed: removing them would silence the
    /// parent's readers.
    fn take_fds(&self, io: &mut io::IoTable, os: Option<&Os>) -> Vec<Py<Handle>> {
        let forked = self.fork_generation.load(Ordering::Relaxed) != sys::fork_generation();
        match os {
            Some(os) if !forked => io.drain(Some(&os.registry)),
            _ => io.drain(None),
        }
    }

    #[inline]
    pub(crate) fn check_closed(&self) -> PyResult<()> {
        if self.closed.load(Ordering::Relaxed) {
            Err(errors::loop_closed())
        } else {
            Ok(())
        }
    }

    #[inline]
    fn is_debug(&self) -> bool {
        self.debug.load(Ordering::Relaxed)
    }

    /// The loop's clock: the native monotonic clock, or `self.time()` when it is overridden.
    #[inline]
    pub(crate) fn now(slf: &Bound<'_, Self>) -> PyResult<f64> {
        Ok(Self::overridden_now(slf)?.unwrap_or_else(sys::monotonic))
    }

    /// `self.time()` when `time` is overridden, else `None` (the native clock applies). Python
    /// code, so it is asked with no state borrowed.
    #[inline(always)]
    pub(crate) fn overridden_now(slf: &Bound<'_, Self>) -> PyResult<Option<f64>> {
        if slf.get().has_custom_time() {
            Self::custom_now(slf)?.extract().map(Some)
        } else {
            Ok(None)
        }
    }

    /// `self.time()`, when it is overridden (see `custom_time`).
    pub(crate) fn custom_now<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        slf.call_method0(intern!(slf.py(), "time"))
    }

    #[inline]
    pub(crate) fn has_custom_time(&self) -> bool {
        self.custom_time.load(Ordering::Relaxed)
    }

    /// After `fork()` the child shares the parent's epoll instance; using it would change the
    /// parent's interest list. The child gets a fresh poller with the same registrations.
    #[inline]
    fn ensure_own_poller(&self, py: Python<'_>) -> PyResult<()> {
        let generation = sys::fork_generation();
        if self.fork_generation.load(Ordering::Relaxed) == generation {
            return Ok(());
        }
        self.rebuild_poller(py, generation)
    }

    #[cold]
    fn rebuild_poller(&self, py: Python<'_>, generation: u64) -> PyResult<()> {
        let Ok(mut poller) = self.poller.try_lock() else {
            return Err(errors::runtime(
                "the event loop was running in another thread when the process forked; it cannot be used in the child",
            ));
        };
        if poller.is_none() {
            // Closed: nothing to rebuild.
            return Ok(());
        }
        let (fresh, os) = new_poller().map_err(errors::os_error)?;
        let mut st = self.state(py);
        st.io.register_all(&os.registry);
        st.os = Some(os);
        *poller = Some(fresh);
        self.fork_generation.store(generation, Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn new_future<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let c = classes(py)?;
        if c.future_by_dict {
            return c.future.bind(py).call((), Some(&Self::loop_kwargs(slf)?));
        }
        ffi::call_kw(py, c.future.bind(py), &[], c.kw_loop.bind(py), &[slf.as_any()])
    }

    /// `{"loop": self}`, made once per run of the loop: the keyword arguments of
    /// `Future(loop=self)` and `Task(coro, loop=self)` when those types take calls only through
    /// `tp_call`, which gets it as is (their `__init__` only reads it; a Python `__init__` gets a
    /// copy). Through vectorcall each call would build, fill and free a dict of its own. The
    /// dict holds the loop, so it is kept only while the loop runs (when the frame running it
    /// holds it anyway): a loop that has stopped is freed as soon as its last reference goes,
    /// as the stdlib's is, not at the next collection of cycles.
    fn loop_kwargs<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyDict>> {
        let py = slf.py();
        let core = slf.get();
        if let Some(kwargs) = core.loop_kwargs.borrow_mut(py).as_ref() {
            return Ok(kwargs.bind(py).clone());
        }
        let kwargs = PyDict::new(py);
        kwargs.set_item(intern!(py, "loop"), slf)?;
        if core.running.load(Ordering::Relaxed) {
            let old = core.loop_kwargs.borrow_mut(py).replace(kwargs.clone().unbind());
            drop(old);
        }
        Ok(kwargs)
    }

    /// `Task(coro, loop=self, name=name, context=context)`; with a task factory or in debug mode
    /// the Python side's `_create_task_slow` does what the stdlib does there.
    pub(crate) fn new_task<'py>(
        slf: &Bound<'py, Self>,
        coro: &Bound<'py, PyAny>,
        name: Option<&Bound<'py, PyAny>>,
        context: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let core = slf.get();
        core.check_closed()?;
        if core.is_debug() {
            return slf.call_method1(intern!(py, "_create_task_slow"), (coro, name, context));
        }
        let factory = core.task_factory.borrow_mut(py).as_ref().map(|f| f.clone_ref(py));
        if let Some(factory) = factory {
            return Self::new_task_by_factory(slf, factory.bind(py), coro, name, context);
        }
        let c = classes(py)?;
        if c.task_by_dict && name.is_none() && context.is_none() {
            return c.task.bind(py).call((coro,), Some(&Self::loop_kwargs(slf)?));
        }
        let this = slf.as_any();
        let (kwnames, kwvalues): (&Py<PyTuple>, &[&Bound<'py, PyAny>]) = match (name, context) {
            (None, None) => (&c.kw_loop, &[this]),
            (Some(n), None) => (&c.kw_loop_name, &[this, n]),
            (None, Some(ctx)) => (&c.kw_loop_context, &[this, ctx]),
            (Some(n), Some(ctx)) => (&c.kw_loop_name_context, &[this, n, ctx]),
        };
        ffi::call_kw(py, c.task.bind(py), &[coro], kwnames.bind(py), kwvalues)
    }

    /// `create_task` with a task factory, as `BaseEventLoop.create_task` calls it: without
    /// `context` when there is none (factories written before it existed), then the name is
    /// set as the running Python sets it (see `Classes::set_task_name`).
    fn new_task_by_factory<'py>(
        slf: &Bound<'py, Self>,
        factory: &Bound<'py, PyAny>,
        coro: &Bound<'py, PyAny>,
        name: Option<&Bound<'py, PyAny>>,
        context: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let c = classes(py)?;
        let this = slf.as_any();
        let task = match context {
            None => ffi::call_kw(py, factory, &[this, coro], &PyTuple::empty(py), &[])?,
            Some(ctx) => ffi::call_kw(py, factory, &[this, coro], c.kw_context.bind(py), &[ctx])?,
        };
        match (&c.set_task_name, name) {
            (None, _) => {
                task.call_method1(intern!(py, "set_name"), (name,))?;
            }
            (Some(set_task_name), Some(name)) => {
                set_task_name.call1(py, (&task, name))?;
            }
            (Some(_), None) => {}
        }
        Ok(task)
    }

    /// Debug-mode checks and source traceback, done by the Python side (a cold path).
    #[cold]
    fn debug_hook(slf: &Bound<'_, Self>, handle: &Bound<'_, PyAny>, method: &str) -> PyResult<()> {
        slf.call_method1(intern!(slf.py(), "_debug_new_handle"), (handle, method))?;
        Ok(())
    }

    /// `call_soon` / `call_soon_threadsafe`: a one-shot handle at the end of the ready queue.
    pub(crate) fn push_soon(
        slf: &Bound<'_, Self>,
        callback: Py<PyAny>,
        args: CallArgs,
        context: Option<Py<PyAny>>,
        method: &str,
        threadsafe: bool,
    ) -> PyResult<Py<Handle>> {
        let py = slf.py();
        let core = slf.get();
        core.check_closed()?;
        let (context, shared) = core.context_for(py, context)?;
        let handle = handle::new_handle(py, Handle::with_context(callback, args, context, shared, true))?;
        if core.is_debug() {
            Self::debug_hook(slf, handle.bind(py).as_any(), method)?;
        }
        let (waker, backlog) = {
            let mut st = core.state(py);
            st.ready.push_back(handle.clone_ref(py));
            let waker = (threadsafe && st.sleeping)
                .then(|| st.os.as_ref().map(|os| os.waker.clone()))
                .flatten();
            (waker, threadsafe && st.ready.len() > THREADSAFE_BACKLOG)
        };
        if let Some(waker) = waker {
            // A failed wake only means the eventfd counter is saturated: the loop is awake anyway.
            let _ = waker.wake();
        }
        if backlog && core.runs_in_another_thread(py) {
            // The stdlib's `call_soon_threadsafe` writes to its self-pipe every time, letting go
            // of the GIL, so its loop's thread keeps getting it back. This one does not, and
            // threads adding callbacks in a tight loop would keep the GIL among themselves and
            // outpace the loop without bound (its timers late by seconds, its queue in
            // gigabytes). Past a backlog, each waits a moment without the GIL instead.
            py.detach(|| std::thread::sleep(THREADSAFE_BACKOFF));
        }
        Ok(handle)
    }

    /// Whether the loop is running in a thread other than the calling one.
    #[cold]
    fn runs_in_another_thread(&self, py: Python<'_>) -> bool {
        let running = self.thread_id.borrow_mut(py).as_ref().map(|id| id.clone_ref(py));
        // `threading.get_ident()` is the thread's `pthread_self()`.
        let current = unsafe { libc::pthread_self() } as u64;
        running.is_some_and(|id| id.extract::<u64>(py).is_ok_and(|id| id != current))
    }

    /// The context a one-shot handle runs in, and whether it is the shared snapshot: the one
    /// given, else a snapshot of the current context.
    ///
    /// The stdlib copies the current context for every such handle. A copy is a garbage-collector
    /// object, and a timer's lives until it fires: thousands of pending timers made the collector
    /// run over and over and walk every one of them. Copies of a context that holds the same
    /// variables are interchangeable until one is entered, so handles scheduled while the
    /// variables stay the same share one snapshot, and each runs in a copy of its own made when
    /// it runs (`claim_snapshot`), which is short-lived.
    #[inline]
    fn context_for(&self, py: Python<'_>, given: Option<Py<PyAny>>) -> PyResult<(Py<PyAny>, bool)> {
        if let Some(context) = given {
            return Ok((context, false));
        }
        if !ffi::context::sharing_supported(py) {
            return Ok((ffi::copy_context(py)?, false));
        }
        // Copies are made, and a previous snapshot released, with no borrow held: allocating a
        // GC object may run a collection, and a context's variables may have finalizers.
        let snapshot = self.context_snapshot.borrow_mut(py);
        let Some(shared) = snapshot.as_ref() else {
            drop(snapshot);
            return Ok((self.replace_snapshot(py, ffi::copy_context(py)?), true));
        };
        // Where the thread state can be read, the current context is compared in place and
        // copied only when the snapshot will not do. Reading it runs no Python code and keeps
        // the GIL (what it needs was settled at import, `ffi::prepare`), so the borrow may stay.
        if let Some(current) = ffi::context::current(py) {
            if ffi::context::same_vars(shared.bind(py), &current) {
                return Ok((shared.clone_ref(py), true));
            }
            drop(snapshot);
            return Ok((self.replace_snapshot(py, ffi::context::copy_of(&current)?), true));
        }
        // Elsewhere it is copied to be compared.
        drop(snapshot);
        let current = ffi::copy_context(py)?;
        let snapshot = self.context_snapshot.borrow_mut(py);
        if let Some(shared) = snapshot
            .as_ref()
            .filter(|s| ffi::context::same_vars(s.bind(py), current.bind(py)))
        {
            let shared = shared.clone_ref(py);
            drop(snapshot);
            current.drop_ref(py);
            return Ok((shared, true));
        }
        drop(snapshot);
        Ok((self.replace_snapshot(py, current), true))
    }

    /// Makes `copy` the loop's snapshot and returns it; the previous one is released after the
    /// borrow (its variables may have finalizers).
    fn replace_snapshot(&self, py: Python<'_>, copy: Py<PyAny>) -> Py<PyAny> {
        let previous = self.context_snapshot.borrow_mut(py).replace(copy.clone_ref(py));
        ffi::release(py, previous);
        copy
    }

    /// Takes the snapshot out of the loop's cache when `release` says so of it.
    #[inline]
    fn take_snapshot_if(&self, py: Python<'_>, release: impl FnOnce(&Py<PyAny>) -> bool) -> Option<Py<PyAny>> {
        let mut snapshot = self.context_snapshot.borrow_mut(py);
        if snapshot.as_ref().is_some_and(release) {
            snapshot.take()
        } else {
            None
        }
    }

    /// Whether a handle about to run in the shared snapshot `context` may enter it itself: when
    /// nothing else holds it but the loop's cache, which then lets go of it.
    #[inline]
    pub(crate) fn claim_snapshot(&self, py: Python<'_>, context: &Py<PyAny>) -> bool {
        if ffi::solely_owned(py, context) {
            return true;
        }
        let taken = self.take_snapshot_if(py, |s| s.is(context) && ffi::ref_count(py, context) == 2);
        let claimed = taken.is_some();
        ffi::release(py, taken);
        claimed
    }

    /// Lets go of the context snapshot once nothing but the loop holds it (the handles that
    /// shared it were cancelled, or given contexts of their own), so that it keeps the context's
    /// values alive no longer than the stdlib's copy per handle would.
    pub(crate) fn drop_unshared_snapshot(&self, py: Python<'_>) {
        let unshared = self.take_snapshot_if(py, |s| ffi::solely_owned(py, s));
        drop(unshared);
    }

    /// `call_later` / `call_at`: a one-shot timer in the heap.
    pub(crate) fn push_timer(
        slf: &Bound<'_, Self>,
        when: f64,
        when_obj: Option<Py<PyAny>>,
        callback: Py<PyAny>,
        args: CallArgs,
        context: Option<Py<PyAny>>,
        method: &str,
    ) -> PyResult<Py<TimerHandle>> {
        let py = slf.py();
        let core = slf.get();
        core.check_closed()?;
        let (context, shared) = core.context_for(py, context)?;
        let handle = Handle::with_context(callback, args, context, shared, true);
        let timer = TimerHandle::new(when, when_obj, core.cancelled_timers.clone());
        let timer = handle::new_timer(py, handle, timer)?;
        if core.is_debug() {
            Self::debug_hook(slf, timer.bind(py).as_any(), method)?;
        }
        core.state(py).timers.push(timer.clone_ref(py));
        Ok(timer)
    }

    /// The handle of an fd callback (`method` names the API for debug mode's source traceback).
    fn new_fd_handle(
        slf: &Bound<'_, Self>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        method: &str,
    ) -> PyResult<Py<Handle>> {
        let py = slf.py();
        let core = slf.get();
        core.check_closed()?;
        core.ensure_own_poller(py)?;
        let handle = Py::new(
            py,
            Handle::new(py, callback.unbind(), CallArgs::from_tuple(args), None, false)?,
        )?;
        if core.is_debug() {
            Self::debug_hook(slf, handle.bind(py).as_any(), method)?;
        }
        Ok(handle)
    }

    /// Retires the handles an fd registration displaced, or reports why it failed.
    fn retire_displaced(py: Python<'_>, displaced: std::io::Result<io::Displaced>) -> PyResult<()> {
        let (old, stale) = displaced.map_err(errors::os_error)?;
        for handle in old.into_iter().chain(stale) {
            Handle::retire(handle.bind(py))?;
        }
        Ok(())
    }

    pub(crate) fn fd_handle(
        slf: &Bound<'_, Self>,
        fd: RawFd,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        write: bool,
    ) -> PyResult<Py<Handle>> {
        let py = slf.py();
        let method = if write { "add_writer" } else { "add_reader" };
        let handle = Self::new_fd_handle(slf, callback, args, method)?;
        let displaced = {
            let mut st = slf.get().state(py);
            let st = &mut *st;
            let Some(os) = st.os.as_ref() else {
                return Err(errors::loop_closed());
            };
            st.io.add(&os.registry, fd, handle.clone_ref(py), write)
        };
        Self::retire_displaced(py, displaced)?;
        Ok(handle)
    }

    /// Installs a waiting `sock_recv`'s reader: `callback`, for the socket object `owner` whose
    /// fd is `fd`; the poller registration its last wait parked is used again (see `io.rs`).
    pub(crate) fn fd_sock_reader(
        slf: &Bound<'_, Self>,
        fd: RawFd,
        callback: Bound<'_, PyAny>,
        owner: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let py = slf.py();
        let core = slf.get();
        let handle = Self::new_fd_handle(slf, callback, PyTuple::empty(py), "add_reader")?;
        let parked = core.state(py).io.unpark(py, fd, owner);
        let registered = parked.is_some();
        let weak = match parked {
            Some(weak) => weak,
            None => PyWeakrefReference::new(owner)?.unbind(),
        };
        let displaced = {
            let mut st = core.state(py);
            let st = &mut *st;
            let Some(os) = st.os.as_ref() else {
                return Err(errors::loop_closed());
            };
            st.io.add_sock_reader(&os.registry, fd, handle, weak, registered)
        };
        Self::retire_displaced(py, displaced)
    }

    /// A `sock_recv` wait whose reader is `callback` got its data: its reader goes, its
    /// registration stays parked for the socket's next wait when it can (see `io.rs`).
    pub(crate) fn fd_park_if(slf: &Bound<'_, Self>, fd: RawFd, callback: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let core = slf.get();
        let parked = {
            let mut st = core.state(py);
            if !st.io.calls(py, fd, callback, false) || core.closed.load(Ordering::Relaxed) {
                return Ok(());
            }
            st.io.park_sock_reader(fd)
        };
        match parked {
            Some(reader) => Handle::retire(reader.bind(py)),
            None => Self::fd_remove(slf, fd, false).map(drop),
        }
    }

    /// Removes `fd`'s parked `sock_recv` registration from the poller (see `io.rs`).
    pub(crate) fn fd_forget_parked(&self, py: Python<'_>, fd: RawFd) {
        let mut st = self.state(py);
        let st = &mut *st;
        if let Some(os) = st.os.as_ref() {
            st.io.forget_parked(&os.registry, fd);
        }
    }

    /// Registers a transport's fd edge-triggered, with its read and write callbacks (see `io.rs`).
    pub(crate) fn add_stream(
        slf: &Bound<'_, Self>,
        fd: RawFd,
        read_ready: Bound<'_, PyAny>,
        write_ready: Bound<'_, PyAny>,
        wants: Arc<io::Wants>,
        interest: mio::Interest,
    ) -> PyResult<()> {
        let py = slf.py();
        let core = slf.get();
        core.check_closed()?;
        core.ensure_own_poller(py)?;
        let empty = || PyTuple::empty(py);
        let reader = Py::new(
            py,
            Handle::new(py, read_ready.unbind(), CallArgs::from_tuple(empty()), None, false)?,
        )?;
        let writer = Py::new(
            py,
            Handle::new(py, write_ready.unbind(), CallArgs::from_tuple(empty()), None, false)?,
        )?;
        let displaced = {
            let mut st = core.state(py);
            let st = &mut *st;
            let Some(os) = st.os.as_ref() else {
                return Err(errors::loop_closed());
            };
            st.io.add_stream(&os.registry, fd, reader, writer, wants, interest)
        };
        for old in displaced.map_err(errors::os_error)? {
            Handle::retire(old.bind(py))?;
        }
        Ok(())
    }

    /// Changes the events a transport's fd is registered for.
    pub(crate) fn stream_interest(&self, py: Python<'_>, fd: RawFd, interest: mio::Interest) -> PyResult<()> {
        let mut st = self.state(py);
        let st = &mut *st;
        match st.os.as_ref() {
            Some(os) => st
                .io
                .set_stream_interest(&os.registry, fd, interest)
                .map_err(errors::os_error),
            None => Ok(()),
        }
    }

    /// Unregisters a transport's fd; false when it was not registered (or the loop is closed).
    pub(crate) fn remove_stream(slf: &Bound<'_, Self>, fd: RawFd) -> PyResult<bool> {
        let py = slf.py();
        let core = slf.get();
        let old = {
            let mut st = core.state(py);
            let st = &mut *st;
            match st.os.as_ref() {
                Some(os) if core.fork_generation.load(Ordering::Relaxed) == sys::fork_generation() => {
                    st.io.remove_all(&os.registry, fd)
                }
                _ => return Ok(false),
            }
        };
        let found = !old.is_empty();
        for h in old {
            Handle::retire(h.bind(py))?;
        }
        Ok(found)
    }

    /// Runs the reader of `fd` as if the next poll reported the fd readable: a transport that
    /// may have more to read (a full read, a hangup not yet read to EOF, reading resumed), which
    /// edge-triggered polling will not report again. With the stdlib's level-triggered selector
    /// the poll would report it, so the reader runs after the callbacks already queued, among
    /// the next poll's events, and only once per poll.
    pub(crate) fn requeue_reader(&self, py: Python<'_>, fd: RawFd) {
        let mut st = self.state(py);
        let st = &mut *st;
        if let Some(h) = st.io.get(fd).and_then(|e| e.reader.as_ref()) {
            if !st.requeued.iter().any(|(_, r)| r.is(h)) {
                st.requeued.push((fd, h.clone_ref(py)));
            }
        }
    }

    /// Removes the reader (or with `write` the writer) of `fd` if its callback is `callback`: a
    /// waiter letting go of its own registration, not one that replaced it.
    pub(crate) fn fd_remove_if(
        slf: &Bound<'_, Self>,
        fd: RawFd,
        callback: &Bound<'_, PyAny>,
        write: bool,
    ) -> PyResult<()> {
        let py = slf.py();
        let ours = slf.get().state(py).io.calls(py, fd, callback, write);
        if ours {
            Self::fd_remove(slf, fd, write)?;
        }
        Ok(())
    }

    pub(crate) fn fd_remove(slf: &Bound<'_, Self>, fd: RawFd, write: bool) -> PyResult<bool> {
        let py = slf.py();
        let core = slf.get();
        if core.closed.load(Ordering::Relaxed) {
            return Ok(false);
        }
        core.ensure_own_poller(py)?;
        let old = {
            let mut st = core.state(py);
            let st = &mut *st;
            let Some(os) = st.os.as_ref() else {
                return Ok(false);
            };
            st.io.remove(&os.registry, fd, write)
        };
        match old {
            Some(old) => {
                Handle::retire(old.bind(py))?;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// Lets go of everything a closing loop held. A handle that was never run is finished like one
/// that was, so one still held elsewhere keeps nothing alive (it is not a GC object).
fn release_all(py: Python<'_>, ready: VecDeque<Py<Handle>>, timers: Vec<Py<TimerHandle>>, fds: Vec<Py<Handle>>) {
    for h in ready.into_iter().chain(fds) {
        h.get().finish(py);
    }
    for t in timers {
        t.bind(py).as_super().get().finish(py);
    }
}

#[pymethods]
impl LoopCore {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn py_new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let (poller, os) = new_poller().map_err(errors::os_error)?;
        Ok(LoopCore {
            state: GilCell::new(State {
                ready: VecDeque::with_capacity(1024),
                timers: timers::TimerHeap::default(),
                io: io::IoTable::default(),
                os: Some(os),
                sleeping: false,
                requeued: Vec::new(),
                sharing: run::GilSharing::default(),
            }),
            poller: Mutex::new(Some(poller)),
            batch: GilCell::new(VecDeque::with_capacity(1024)),
            closed: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            running: AtomicBool::new(false),
            debug: AtomicBool::new(false),
            custom_time: AtomicBool::new(false),
            cancelled_timers: Arc::new(AtomicUsize::new(0)),
            task_factory: GilCell::new(None),
            context_snapshot: GilCell::new(None),
            loop_kwargs: GilCell::new(None),
            thread_id: GilCell::new(None),
            clock_resolution: sys::monotonic_resolution(),
            fork_generation: AtomicU64::new(sys::fork_generation()),
        })
    }

    #[getter(_task_factory)]
    fn task_factory_get(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.task_factory.borrow_mut(py).as_ref().map(|f| f.clone_ref(py))
    }

    #[setter(_task_factory)]
    fn task_factory_set(&self, py: Python<'_>, factory: Option<Py<PyAny>>) {
        let old = std::mem::replace(&mut *self.task_factory.borrow_mut(py), factory);
        drop(old);
    }

    #[getter(_thread_id)]
    fn thread_id_get(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.thread_id.borrow_mut(py).as_ref().map(|t| t.clone_ref(py))
    }

    #[setter(_thread_id)]
    fn thread_id_set(&self, py: Python<'_>, thread_id: Option<Py<PyAny>>) {
        let old = std::mem::replace(&mut *self.thread_id.borrow_mut(py), thread_id);
        drop(old);
    }

    /// `self._thread_id is not None`, as the stdlib answers it; native because the C `Task`
    /// asks on every eager start.
    fn is_running(&self, py: Python<'_>) -> bool {
        self.thread_id.borrow_mut(py).is_some()
    }

    #[getter]
    fn _clock_resolution(&self) -> f64 {
        self.clock_resolution
    }

    /// Wakes a loop blocked in poll (from any thread, or a signal handler's Python code).
    fn _write_to_self(&self, py: Python<'_>) {
        let waker = self.state(py).os.as_ref().map(|os| os.waker.clone());
        if let Some(waker) = waker {
            let _ = waker.wake();
        }
    }

    /// Kept for code written against `BaseEventLoop`: our `TimerHandle.cancel` counts itself.
    fn _timer_handle_cancelled(&self, _handle: &Bound<'_, PyAny>) {}

    #[pyo3(signature = (fd, callback, *args))]
    fn _add_reader(
        slf: &Bound<'_, Self>,
        fd: RawFd,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
    ) -> PyResult<Py<Handle>> {
        Self::fd_handle(slf, fd, callback, args, false)
    }

    #[pyo3(signature = (fd, callback, *args))]
    fn _add_writer(
        slf: &Bound<'_, Self>,
        fd: RawFd,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
    ) -> PyResult<Py<Handle>> {
        Self::fd_handle(slf, fd, callback, args, true)
    }

    /// `sock_recv` on a plain socket's fd: bytes now, or a future (see `sockops.rs`).
    fn _sock_recv(
        slf: &Bound<'_, Self>,
        sock: &Bound<'_, PyAny>,
        fd: RawFd,
        n: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        Self::sock_recv(slf, sock, fd, ffi::as_ssize_t(n)?)
    }

    /// One native `accept` for a server (see `sockops.rs`).
    fn _accept_now<'py>(&self, py: Python<'py>, fd: RawFd) -> PyResult<Option<(RawFd, Bound<'py, PyAny>)>> {
        Self::accept_now(py, fd)
    }

    /// A native `connect` to an IPv4 address, or `None` (see `sockops.rs`).
    fn _connect_now(&self, fd: RawFd, family: libc::c_int, address: &Bound<'_, PyAny>) -> PyResult<Option<bool>> {
        Self::connect_now(fd, family, address)
    }

    /// The waiting half of `sock_connect` on a plain socket whose connect is in progress: a
    /// future that completes when it is done (see `sockops.rs`).
    fn _sock_connect_wait(slf: &Bound<'_, Self>, fd: RawFd, address: Py<PyAny>) -> PyResult<Py<PyAny>> {
        Self::sock_connect_wait(slf, fd, address)
    }

    /// A cancelled native `sock_connect` lets go of its writer (see `sockops.rs`).
    fn _sock_connect_abandon(slf: &Bound<'_, Self>, fd: RawFd, fut: &Bound<'_, PyAny>) -> PyResult<()> {
        Self::sock_connect_abandon(slf, fd, fut)
    }

    /// A cancelled native `sock_recv` lets go of its reader (see `sockops.rs`).
    fn _sock_recv_abandon(slf: &Bound<'_, Self>, fd: RawFd, fut: &Bound<'_, PyAny>) -> PyResult<()> {
        Self::sock_recv_abandon(slf, fd, fut)
    }

    /// A number no descriptor can have is simply not registered: `False`, as the stdlib's
    /// selector lookup answers.
    fn _remove_reader(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        fd.extract::<RawFd>()
            .map_or(Ok(false), |fd| Self::fd_remove(slf, fd, false))
    }

    fn _remove_writer(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        fd.extract::<RawFd>()
            .map_or(Ok(false), |fd| Self::fd_remove(slf, fd, true))
    }

    /// `(reader, writer)` handles registered for `fd`, for `_ensure_fd_no_transport`-style checks.
    fn _fd_handles(&self, py: Python<'_>, fd: RawFd) -> (Option<Py<Handle>>, Option<Py<Handle>>) {
        let st = self.state(py);
        match st.io.get(fd) {
            Some(e) => (
                e.reader.as_ref().map(|h| h.clone_ref(py)),
                e.writer.as_ref().map(|h| h.clone_ref(py)),
            ),
            None => (None, None),
        }
    }

    fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    #[getter]
    fn _stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// The stdlib loop's plain attribute, which some servers reset after `run_forever` returns:
    /// setting it is `stop()`, clearing it cancels a stop not acted on yet.
    #[setter(_stopping)]
    fn stopping_set(&self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.stopping.store(value.is_truthy()?, Ordering::Relaxed);
        Ok(())
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    fn _set_custom_time(&self, custom: bool) {
        self.custom_time.store(custom, Ordering::Relaxed);
    }

    fn _set_debug_flag(&self, enabled: bool) {
        self.debug.store(enabled, Ordering::Relaxed);
    }

    /// Runs turns until `stop()`; the Python side does the setup and teardown around it.
    fn _run_forever_inner(slf: &Bound<'_, Self>) -> PyResult<()> {
        let core = slf.get();
        struct Running<'a>(&'a AtomicBool);
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Relaxed);
            }
        }
        core.running.store(true, Ordering::Relaxed);
        let running = Running(&core.running);
        let result = loop {
            if let Err(e) = run::run_once(slf) {
                break Err(e);
            }
            if core.stopping.load(Ordering::Relaxed) {
                break Ok(());
            }
        };
        core.stopping.store(false, Ordering::Relaxed);
        drop(running);
        // Kept only while the loop runs (see `loop_kwargs`).
        let kwargs = core.loop_kwargs.borrow_mut(slf.py()).take();
        drop(kwargs);
        result
    }

    fn _run_once(slf: &Bound<'_, Self>) -> PyResult<()> {
        run::run_once(slf)
    }

    /// Marks the loop closed and releases everything queued or registered.
    fn _close_core(slf: &Bound<'_, Self>) {
        let py = slf.py();
        let core = slf.get();
        core.closed.store(true, Ordering::Relaxed);
        let (ready, timers, fds, os, requeued) = {
            let mut st = core.state(py);
            let st = &mut *st;
            let os = st.os.take();
            let fds = core.take_fds(&mut st.io, os.as_ref());
            // Readers still registered are in `fds`; the rest were finished when removed.
            let requeued = std::mem::take(&mut st.requeued);
            (std::mem::take(&mut st.ready), st.timers.drain(), fds, os, requeued)
        };
        drop(requeued);
        core.cancelled_timers.store(0, Ordering::Relaxed);
        release_all(py, ready, timers, fds);
        let snapshot = core.context_snapshot.borrow_mut(py).take();
        drop(snapshot);
        // Release the epoll instance and the waker's eventfd now, not when the loop is freed. A
        // loop running in another thread cannot be closed (the Python side checks), so the
        // poller is free unless a poll is being torn down concurrently; then it goes with the
        // loop object.
        drop(os);
        if let Ok(mut poller) = core.poller.try_lock() {
            drop(poller.take());
        }
    }

    /// The timers in the heap, in the order they will run: the stdlib loop's `_scheduled` heap,
    /// as a new list (a sorted list is a heap too).
    fn _scheduled_timers(&self, py: Python<'_>) -> Vec<Py<TimerHandle>> {
        self.state(py).timers.sorted(py)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(f) = self.task_factory.try_borrow_in_gc() {
            visit.call(&*f)?;
        }
        if let Some(s) = self.context_snapshot.try_borrow_in_gc() {
            visit.call(&*s)?;
        }
        if let Some(k) = self.loop_kwargs.try_borrow_in_gc() {
            visit.call(&*k)?;
        }
        // Handles are not GC objects (see `handle.rs`): the loop reports their contents as its own
        // references, each handle exactly once: one-shot handles from the queues, fd handles from
        // the fd table.
        //
        // While the loop runs it is reachable (from the frame running it), and so is everything
        // its handles hold: leaving their contents unreported only lets the collector count them
        // as referenced from outside, which they are, and spares every collection a walk over
        // every queued callback and timer.
        if self.running.load(Ordering::Relaxed) {
            return Ok(());
        }
        if let Some(st) = self.state.try_borrow_in_gc() {
            for h in st.ready.iter().filter(|h| h.get().is_one_shot()).chain(st.io.handles()) {
                h.get().visit_contents(&visit)?;
            }
            for t in st.timers.iter() {
                ffi::traversal_token(|py| t.bind(py).as_super().get().visit_contents(&visit))?;
            }
        }
        if let Some(batch) = self.batch.try_borrow_in_gc() {
            for h in batch.iter().filter(|h| h.get().is_one_shot()) {
                h.get().visit_contents(&visit)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        let snapshot = self.context_snapshot.try_borrow_in_gc().and_then(|mut s| s.take());
        let kwargs = self.loop_kwargs.try_borrow_in_gc().and_then(|mut k| k.take());
        // The collector calls this with the GIL held.
        Python::attach(|_| drop((snapshot, kwargs)));
        let Some((ready, timers, fds, requeued)) = self.state.try_borrow_in_gc().map(|mut st| {
            let st = &mut *st;
            let fds = self.take_fds(&mut st.io, st.os.as_ref());
            let requeued = std::mem::take(&mut st.requeued);
            (std::mem::take(&mut st.ready), st.timers.drain(), fds, requeued)
        }) else {
            return;
        };
        // The collector calls this with the GIL held.
        Python::attach(|py| {
            drop(requeued);
            release_all(py, ready, timers, fds);
        });
    }
}
