//! One turn of the loop, in the stdlib's order: drop cancelled timers at the top of the heap,
//! poll for I/O (blocking only when nothing is ready), move due timers to the ready queue, then
//! run exactly the callbacks that were ready when the turn began. Callbacks scheduled while they
//! run wait for the next turn, after another poll.
//!
//! When no fd is registered and something is ready, the poll is skipped: it could report
//! nothing, and `call_soon_threadsafe` pushes straight into the ready queue. It is not skipped
//! while other Python threads exist: it is then where the loop lets them have the GIL.
//!
//! A one-shot handle that has run is done: its callback, arguments and context go at once, even
//! when the handle is still held elsewhere (a sleeping coroutine keeps its timer handle until it
//! resumes), so a fired handle can never hide a reference cycle from the collector.

use std::sync::atomic::Ordering;
use std::time::Duration;

use pyo3::prelude::*;

use super::handle::{release_contents, Handle};
use super::{LoopCore, DEADLINE_TOKEN, WAKER_TOKEN};
use crate::ffi::intern;
use crate::{errors, ffi, sys};

/// While other Python threads exist, a busy loop lets go of the GIL around its poll at most this
/// often (seconds): about as often as the stdlib's loop does, each turn, when its turns are not
/// trivially short. Measured with a thread blocked in a 1 ms sleep, then wanting the GIL back
/// while the loop ran `sleep(0)` steps: it had it within ~0.3 ms at 2 us, as on the stdlib's
/// loop, and after up to ~6 ms at 10 us (18 ms for a thread woken by a socket).
const LET_GO_GAP: f64 = 2e-6;

/// How many turns go by between two looks at whether other Python threads exist (a new thread
/// is noticed within that many turns).
const THREADS_RECHECK: u8 = 16;

/// Whether a turn lets go of the GIL around its poll: only while other Python threads exist,
/// and then at most every `LET_GO_GAP`.
#[derive(Default)]
pub(crate) struct GilSharing {
    others: bool,
    recheck_in: u8,
    last: f64,
}

impl GilSharing {
    fn turn(&mut self, py: Python<'_>) -> bool {
        if self.recheck_in == 0 {
            self.recheck_in = THREADS_RECHECK;
            self.others = ffi::other_threads(py);
        } else {
            self.recheck_in -= 1;
        }
        if !self.others {
            return false;
        }
        let now = sys::monotonic();
        if now - self.last < LET_GO_GAP {
            return false;
        }
        self.last = now;
        true
    }
}

/// Poll timeouts are capped; a loop with nothing to do wakes up once a day and sleeps again.
const MAX_TIMEOUT: f64 = 86_400.0;

/// How long to wait for a timer due at `when`: never negative, never NaN (a NaN deadline is due
/// now), capped.
fn timeout_until(when: f64, now: f64) -> Duration {
    let left = when - now;
    if left > 0.0 {
        Duration::from_secs_f64(left.min(MAX_TIMEOUT))
    } else {
        Duration::ZERO
    }
}

pub(crate) fn run_once(slf: &Bound<'_, LoopCore>) -> PyResult<()> {
    let py = slf.py();
    let core = slf.get();
    core.ensure_own_poller(py)?;

    let mut released: Vec<Py<Handle>> = Vec::new();
    let custom_now = LoopCore::overridden_now(slf)?;
    let shared;
    let mut next_when = None;
    let poll_timeout = {
        let mut st = core.state(py);
        shared = st.sharing.turn(py);
        if st.timers.len() > 0 {
            let mut cancelled = core.cancelled_timers.load(Ordering::Relaxed);
            if cancelled > 0 {
                let mut purged = Vec::new();
                st.timers.purge_cancelled(py, &mut cancelled, &mut purged);
                released.extend(purged.into_iter().map(|t| t.into_bound(py).into_super().unbind()));
                core.cancelled_timers.store(cancelled, Ordering::Relaxed);
            }
        }
        if !st.ready.is_empty() || !st.requeued.is_empty() || core.stopping.load(Ordering::Relaxed) {
            // Only poll when some fd could report something, or when the poll is this turn's
            // moment to let go of the GIL (see `poll`).
            (st.io.len() > 0 || shared).then_some(Some(Duration::ZERO))
        } else {
            st.sleeping = true;
            next_when = st.timers.next_when();
            Some(next_when.map(|when| timeout_until(when, custom_now.unwrap_or_else(sys::monotonic))))
        }
    };
    if !released.is_empty() {
        finish_all(py, std::mem::take(&mut released));
    }
    core.drop_unshared_snapshot(py);

    if let Some(timeout) = poll_timeout {
        poll(slf, timeout, next_when, shared)?;
    }

    // Timers due by now (within the clock's resolution) become ready in deadline order, then the
    // whole ready queue becomes this turn's batch. "Now" is read after the poll, as the stdlib's
    // `end_time = self.time() + clock_resolution`.
    let custom_now = LoopCore::overridden_now(slf)?;
    {
        let mut st = core.state(py);
        let st = &mut *st;
        if st.timers.len() > 0 {
            let end = custom_now.unwrap_or_else(sys::monotonic) + core.clock_resolution;
            let ready = &mut st.ready;
            st.timers.drain_due(end, |timer| {
                let base: Py<Handle> = timer.into_bound(py).into_super().unbind();
                if base.get().is_cancelled() {
                    // Cancelled behind a live timer, so the purge above did not see it.
                    let n = core.cancelled_timers.load(Ordering::Relaxed);
                    core.cancelled_timers.store(n.saturating_sub(1), Ordering::Relaxed);
                    released.push(base);
                } else {
                    ready.push_back(base);
                }
            });
        }
        std::mem::swap(&mut *core.batch.borrow_mut(py), &mut st.ready);
    }
    if !released.is_empty() {
        finish_all(py, released);
    }

    run_batch(slf)
}

/// Sets the poller's wake-up timer for a poll that waits `timeout` for the timer due at `when`,
/// when the poll's own timeout, rounded up to whole milliseconds, would wake it late. A setting
/// for the same deadline that has not fired yet is kept as it is (a loop woken by I/O again and
/// again before a far timer does not reset it each time); one for another deadline is replaced,
/// or cleared before a poll that could block past it, so that it does not wake that poll for
/// nothing. It does not matter to a poll that does not block.
fn set_deadline(
    deadline: &sys::timer::Deadline,
    set_for: &mut Option<u64>,
    timeout: Option<Duration>,
    when: Option<f64>,
) {
    match (timeout, when) {
        (Some(t), _) if t.is_zero() => {}
        (Some(t), Some(when)) if t.subsec_nanos() % 1_000_000 != 0 => {
            let key = when.to_bits();
            if *set_for != Some(key) {
                *set_for = deadline.set(t).is_ok().then_some(key);
            }
        }
        _ => {
            if set_for.take().is_some() {
                // Failing to clear it costs at most one early wake-up.
                let _ = deadline.clear();
            }
        }
    }
}

/// Waits for I/O, without the GIL when it may block. A poll that cannot block keeps the GIL
/// unless it is a turn to share it (`shared`, see `LET_GO_GAP`): then the GIL is let go around
/// the poll, as the stdlib's selector lets go of it on each turn, and a thread waiting for it
/// gets it within a few such turns. Without that, a waiting thread has to wait for the
/// interpreter's switch interval (5 ms), and for as long as the loop stays busy if something
/// else lets go of the GIL briefly more often than that (each hand-back to the loop's thread
/// restarts the wait).
fn poll(slf: &Bound<'_, LoopCore>, timeout: Option<Duration>, when: Option<f64>, shared: bool) -> PyResult<()> {
    let py = slf.py();
    let core = slf.get();
    let Ok(mut poller) = core.poller.try_lock() else {
        return Err(errors::runtime("This event loop is already running"));
    };
    let Some(super::Poller {
        poll,
        events,
        deadline,
        deadline_set,
    }) = poller.as_mut()
    else {
        return Err(errors::loop_closed());
    };
    if let Some(deadline) = deadline {
        set_deadline(deadline, deadline_set, timeout, when);
    }
    let result = if timeout == Some(Duration::ZERO) && !shared {
        poll.poll(events, timeout)
    } else {
        py.detach(|| poll.poll(events, timeout))
    };
    let mut dropped = Vec::new();
    let mut stale = Vec::new();
    {
        let mut st = core.state(py);
        let st = &mut *st;
        st.sleeping = false;
        if let (Ok(()), Some(os)) = (&result, st.os.as_ref()) {
            let before = st.ready.len();
            for event in events.iter() {
                if event.token() == WAKER_TOKEN {
                    continue;
                }
                if event.token() == DEADLINE_TOKEN {
                    *deadline_set = None;
                    continue;
                }
                // mio counts urgent data (`EPOLLPRI`) as readable too.
                let readable = event.is_readable() || event.is_read_closed() || event.is_error();
                let writable = event.is_writable() || event.is_write_closed() || event.is_error();
                let hangup = event.is_read_closed() || event.is_error();
                let urgent = event.is_priority();
                st.io.dispatch(
                    py,
                    &os.registry,
                    event.token(),
                    (readable, writable, hangup, urgent),
                    &mut st.ready,
                    &mut dropped,
                );
            }
            // Readers queued as if this poll reported them (`LoopCore::requeue_reader`), when
            // still registered and not reported by it anyway.
            // Others are let go of below, outside the borrow.
            for (fd, h) in std::mem::take(&mut st.requeued) {
                let current = st.io.get(fd).and_then(|e| e.reader.as_ref()).is_some_and(|r| r.is(&h));
                if current && !st.ready.range(before..).any(|r| r.is(&h)) {
                    st.ready.push_back(h);
                } else {
                    stale.push(h);
                }
            }
        }
    }
    drop(poller);
    finish_all(py, dropped);
    drop(stale);
    match result {
        Ok(()) => Ok(()),
        // A signal arrived while we were blocked: let Python run its handlers now, so Ctrl-C
        // raises KeyboardInterrupt out of the loop as it does with the stdlib.
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => py.check_signals(),
        Err(e) => Err(errors::os_error(e)),
    }
}

/// Cancelled handles the loop lets go of hold nothing more (see `handle.rs`).
fn finish_all(py: Python<'_>, handles: Vec<Py<Handle>>) {
    for h in handles {
        h.get().finish(py);
    }
}

fn run_batch(slf: &Bound<'_, LoopCore>) -> PyResult<()> {
    let py = slf.py();
    let core = slf.get();
    let debug = core.is_debug();
    loop {
        // Borrowed only to pop: callbacks run with no borrow of loop state held.
        let Some(handle) = core.batch.borrow_mut(py).pop_front() else {
            return Ok(());
        };
        let outcome = if !debug && handle.get().is_one_shot() {
            run_one_shot(slf, handle)
        } else {
            let outcome = if debug {
                run_handle_debug(slf, &handle)
            } else {
                run_handle(slf, &handle)
            };
            if handle.get().is_one_shot() {
                handle.get().finish(py);
            }
            handle.drop_ref(py);
            outcome
        };
        match outcome {
            Ok(()) => {}
            Err(e) => {
                // KeyboardInterrupt/SystemExit: the rest of the batch runs first on the next run.
                let rest = std::mem::take(&mut *core.batch.borrow_mut(py));
                let mut st = core.state(py);
                for h in rest.into_iter().rev() {
                    st.ready.push_front(h);
                }
                return Err(e);
            }
        }
    }
}

/// Runs a one-shot handle, which runs once: its callback, arguments and context are moved out
/// rather than cloned, and go after the call (see the module docs). If the callback fails they
/// are put back first, so the exception handler sees the handle whole.
#[inline]
fn run_one_shot(slf: &Bound<'_, LoopCore>, handle: Py<Handle>) -> PyResult<()> {
    let py = slf.py();
    let h = handle.get();
    let cancelled = h.is_cancelled();
    let shared = h.take_shared_context();
    let mut contents = h.take_contents(py);
    let owned = if shared && !cancelled {
        context_for_run(slf.get(), py, &mut contents.2)
    } else {
        Ok(())
    };
    let error = match (owned, &contents.0, &contents.1, &contents.2) {
        (Err(err), ..) => Some(err),
        (Ok(_), Some(callback), Some(args), Some(context)) if !cancelled => {
            ffi::run_in_context(py, context.bind(py), || args.call(py, callback.bind(py))).err()
        }
        _ => None,
    };
    let outcome = match error {
        None => Ok(()),
        Some(err) => {
            h.restore(py, contents);
            let outcome = callback_failed(slf, &handle, err);
            contents = h.take_contents(py);
            outcome
        }
    };
    handle.drop_ref(py);
    release_contents(py, contents);
    outcome
}

/// The context of a handle about to run in the shared snapshot in `slot`: the snapshot itself
/// when nothing else holds it, else a copy of it (see `LoopCore::context_for`), which goes
/// right after the run, with the rest of the handle's contents.
#[inline]
fn context_for_run(core: &LoopCore, py: Python<'_>, slot: &mut Option<Py<PyAny>>) -> PyResult<()> {
    let Some(snapshot) = slot.as_ref() else {
        return Ok(());
    };
    if core.claim_snapshot(py, snapshot) {
        return Ok(());
    }
    let copy = ffi::context::copy_of(snapshot.bind(py))?;
    ffi::release(py, slot.replace(copy));
    Ok(())
}

#[inline]
fn run_handle(slf: &Bound<'_, LoopCore>, handle: &Py<Handle>) -> PyResult<()> {
    let py = slf.py();
    if let Err(err) = handle.get().own_context(py) {
        return callback_failed(slf, handle, err);
    }
    let Some(p) = handle.get().parts(py) else {
        return Ok(());
    };
    match ffi::run_in_context(py, p.context.bind(py), || p.args.call(py, p.callback.bind(py))) {
        Ok(_) => Ok(()),
        Err(err) => callback_failed(slf, handle, err),
    }
}

/// Exceptions from a callback go to the loop's exception handler, except those that must stop
/// the loop (`SystemExit`, `KeyboardInterrupt`), which propagate out of `run_forever`.
#[cold]
#[inline(never)]
pub(super) fn callback_failed(slf: &Bound<'_, LoopCore>, handle: &Py<Handle>, err: PyErr) -> PyResult<()> {
    let py = slf.py();
    let Err(err) = handle.get().run_in_foreign_context(py, err) else {
        return Ok(());
    };
    if errors::leaves_the_loop(py, &err) {
        return Err(err);
    }
    // The stdlib reports it from inside the `except` that caught it.
    let exc = err.value(py);
    ffi::while_handling(exc, || {
        slf.call_method1(intern!(py, "_handle_callback_error"), (handle, exc))
    })?;
    Ok(())
}

#[cold]
#[inline(never)]
fn run_handle_debug(slf: &Bound<'_, LoopCore>, handle: &Py<Handle>) -> PyResult<()> {
    let py = slf.py();
    slf.setattr(intern!(py, "_current_handle"), handle)?;
    // The loop's clock, as the stdlib times callbacks (`self.time()`, which may be overridden).
    let start = LoopCore::now(slf)?;
    let result = run_handle(slf, handle);
    let elapsed = LoopCore::now(slf)? - start;
    slf.setattr(intern!(py, "_current_handle"), py.None())?;
    let threshold: f64 = slf.getattr(intern!(py, "slow_callback_duration"))?.extract()?;
    if elapsed >= threshold {
        slf.call_method1(intern!(py, "_log_slow_callback"), (handle, elapsed))?;
    }
    result
}
