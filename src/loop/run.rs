//! One turn of the loop, in the stdlib's order: drop cancelled timers at the top of the heap,
//! poll for I/O (blocking only when nothing is ready), move due timers to the ready queue, then
//! run exactly the callbacks that were ready when the turn began. Callbacks scheduled while they
//! run wait for the next turn, after another poll.
//!
//! When no fd is registered and something is ready, the poll is skipped: it could report
//! nothing, and `call_soon_threadsafe` pushes straight into the ready queue.

use std::sync::atomic::Ordering;
use std::time::Duration;

use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit};
use pyo3::intern;
use pyo3::prelude::*;

use super::handle::{Handle, TimerHandle};
use super::{LoopCore, WAKER_TOKEN};
use crate::{errors, ffi, sys};

pub(crate) fn run_once(slf: &Bound<'_, LoopCore>) -> PyResult<()> {
    let py = slf.py();
    let core = slf.get();
    core.ensure_own_poller()?;

    let mut released: Vec<Py<TimerHandle>> = Vec::new();
    let (timeout, must_poll) = {
        let mut st = core.state();
        let mut cancelled = core.cancelled_timers.load(Ordering::Relaxed);
        st.timers.purge_cancelled(py, &mut cancelled, &mut released);
        core.cancelled_timers.store(cancelled, Ordering::Relaxed);
        let timeout = if !st.ready.is_empty() || core.stopping.load(Ordering::Relaxed) {
            Some(Duration::ZERO)
        } else {
            st.timers
                .next_when()
                .map(|when| Duration::from_secs_f64((when - sys::monotonic()).clamp(0.0, 86_400.0 * 365.0)))
        };
        let blocking = timeout != Some(Duration::ZERO);
        st.sleeping = blocking;
        (timeout, blocking || st.io.len() > 0)
    };
    drop(released);

    if must_poll {
        poll(slf, timeout)?;
    }

    // Timers due by now (within the clock's resolution) become ready, in deadline order.
    {
        let end = sys::monotonic() + core.clock_resolution;
        let mut st = core.state();
        let st = &mut *st;
        while let Some(timer) = st.timers.pop_due(py, end) {
            let base: Py<Handle> = timer.into_bound(py).into_super().unbind();
            st.ready.push_back(base);
        }
    }

    run_ready(slf)
}

fn poll(slf: &Bound<'_, LoopCore>, timeout: Option<Duration>) -> PyResult<()> {
    let py = slf.py();
    let core = slf.get();
    let Ok(mut poller) = core.poller.try_lock() else {
        return Err(errors::runtime("This event loop is already running"));
    };
    let super::Poller { poll, events } = &mut *poller;
    let result = if timeout == Some(Duration::ZERO) {
        poll.poll(events, timeout)
    } else {
        py.detach(|| poll.poll(events, timeout))
    };
    let mut dropped = Vec::new();
    {
        let mut st = core.state();
        st.sleeping = false;
        if result.is_ok() {
            let st = &mut *st;
            for event in events.iter() {
                if event.token() == WAKER_TOKEN {
                    continue;
                }
                let readable = event.is_readable() || event.is_read_closed() || event.is_error();
                let writable = event.is_writable() || event.is_write_closed() || event.is_error();
                st.io.dispatch(
                    py,
                    &st.registry,
                    super::io::fd_of(event.token()),
                    readable,
                    writable,
                    &mut st.ready,
                    &mut dropped,
                );
            }
        }
    }
    drop(poller);
    drop(dropped);
    match result {
        Ok(()) => Ok(()),
        // A signal arrived while we were blocked: let Python run its handlers now, so Ctrl-C
        // raises KeyboardInterrupt out of the loop as it does with the stdlib.
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => py.check_signals(),
        Err(e) => Err(errors::os_error(e)),
    }
}

fn run_ready(slf: &Bound<'_, LoopCore>) -> PyResult<()> {
    let core = slf.get();
    let Ok(mut batch) = core.batch.try_lock() else {
        return Err(errors::runtime("This event loop is already running"));
    };
    std::mem::swap(&mut *batch, &mut core.state().ready);
    let debug = core.is_debug();
    while let Some(handle) = batch.pop_front() {
        let outcome = if debug {
            run_handle_debug(slf, &handle)
        } else {
            run_handle(slf, &handle)
        };
        if let Err(e) = outcome {
            // KeyboardInterrupt/SystemExit: leave the rest for the next run, in order.
            let rest = std::mem::take(&mut *batch);
            drop(batch);
            let mut st = core.state();
            for h in rest.into_iter().rev() {
                st.ready.push_front(h);
            }
            return Err(e);
        }
    }
    Ok(())
}

#[inline]
fn run_handle(slf: &Bound<'_, LoopCore>, handle: &Py<Handle>) -> PyResult<()> {
    let py = slf.py();
    let Some((callback, args, context)) = handle.borrow(py).parts(py) else {
        return Ok(());
    };
    match ffi::run_in_context(py, context.bind(py), callback.bind(py), args.bind(py)) {
        Ok(_) => Ok(()),
        Err(err) => callback_failed(slf, handle, err),
    }
}

/// Exceptions from a callback go to the loop's exception handler, except those that must stop
/// the loop (`SystemExit`, `KeyboardInterrupt`), which propagate out of `run_forever`.
#[cold]
#[inline(never)]
fn callback_failed(slf: &Bound<'_, LoopCore>, handle: &Py<Handle>, err: PyErr) -> PyResult<()> {
    let py = slf.py();
    if err.is_instance_of::<PySystemExit>(py) || err.is_instance_of::<PyKeyboardInterrupt>(py) {
        return Err(err);
    }
    slf.call_method1(intern!(py, "_handle_callback_error"), (handle, err.value(py)))?;
    Ok(())
}

#[cold]
#[inline(never)]
fn run_handle_debug(slf: &Bound<'_, LoopCore>, handle: &Py<Handle>) -> PyResult<()> {
    let py = slf.py();
    slf.setattr(intern!(py, "_current_handle"), handle)?;
    let start = sys::monotonic();
    let result = run_handle(slf, handle);
    let elapsed = sys::monotonic() - start;
    slf.setattr(intern!(py, "_current_handle"), py.None())?;
    let threshold: f64 = slf.getattr(intern!(py, "slow_callback_duration"))?.extract()?;
    if elapsed >= threshold {
        slf.call_method1(intern!(py, "_log_slow_callback"), (handle, elapsed))?;
    }
    result
}
