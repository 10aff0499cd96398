//! The methods called once per operation: `call_soon`, `call_soon_threadsafe`, `call_later`,
//! `call_at`, `create_future`, `create_task`, `time`, `get_debug` (every Future's constructor asks)
//! and `cancel` on handles. They take their arguments through vectorcall (`ffi::fastcall`): no
//! argument tuple, no per-call interpreter bookkeeping, and zero or one extra callback argument
//! stored without a tuple (`args::CallArgs`).

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyFloat, PyInt};
use pyo3::Borrowed;

use super::args::CallArgs;
use super::{Handle, LoopCore, TimerHandle};
use crate::ffi::fastcall::{FastArgs, MethodSpec};
use crate::ffi::intern;
use crate::{fast_method, sys};

/// `method(fixed..., callback, *args, context=None)`, parsed.
struct Call<'a, 'py> {
    fixed: Option<Borrowed<'a, 'py, PyAny>>,
    callback: Py<PyAny>,
    args: CallArgs,
    context: Option<Py<PyAny>>,
}

#[cold]
#[inline(never)]
fn missing(method: &str, what: &str) -> PyErr {
    PyTypeError::new_err(format!("{method}() missing required positional argument: '{what}'"))
}

// Inlined into each caller: returned through memory, the parsed call was read back in wider
// loads than it was written with, which stalled every call (store-to-load forwarding).
#[inline(always)]
fn parse<'a, 'py>(method: &str, fixed: Option<&str>, a: &FastArgs<'a, 'py>) -> PyResult<Call<'a, 'py>> {
    // Positional order: [fixed], callback, *args. `fixed` and `callback` may also come as
    // keywords when they are not given positionally (then no extra arguments can precede them).
    let mut named = [None, None];
    let mut context = None;
    for i in 0..a.keyword_count() {
        let (name, value) = a.keyword(i);
        let py = value.py();
        let slot = if name.as_ptr() == intern!(py, "context").as_ptr() {
            None
        } else {
            let name = name.to_str()?;
            match name {
                "context" => None,
                "callback" => Some(1),
                n if Some(n) == fixed => Some(0),
                _ => {
                    return Err(PyTypeError::new_err(format!(
                        "{method}() got an unexpected keyword argument '{name}'"
                    )))
                }
            }
        };
        match slot {
            None => context = (!value.is_none()).then(|| value.to_owned().unbind()),
            Some(k) => named[k] = Some(value),
        }
    }
    let mut next = 0;
    let mut take = |kw: Option<Borrowed<'a, 'py, PyAny>>, what: &str| -> PyResult<Borrowed<'a, 'py, PyAny>> {
        if next < a.len() {
            if kw.is_some() {
                return Err(PyTypeError::new_err(format!(
                    "{method}() got multiple values for argument '{what}'"
                )));
            }
            next += 1;
            Ok(a.get(next - 1))
        } else {
            kw.ok_or_else(|| missing(method, what))
        }
    };
    let fixed_value = match fixed {
        Some(what) => Some(take(named[0], what)?),
        None => None,
    };
    let callback = take(named[1], "callback")?;
    let args = match a.len().saturating_sub(next) {
        0 => CallArgs::Zero,
        1 => CallArgs::One(a.get(next).to_owned().unbind()),
        2 => CallArgs::Two(a.get(next).to_owned().unbind(), a.get(next + 1).to_owned().unbind()),
        _ => CallArgs::Many(a.tuple_from(next)?.unbind()),
    };
    Ok(Call {
        fixed: fixed_value,
        callback: callback.to_owned().unbind(),
        args,
        context,
    })
}

#[inline(always)]
fn loop_of<'a, 'py>(slf: &'a Bound<'py, PyAny>) -> PyResult<&'a Bound<'py, LoopCore>> {
    Ok(slf.cast::<LoopCore>()?)
}

fn call_soon<'py>(slf: &Bound<'py, PyAny>, a: FastArgs<'_, 'py>) -> PyResult<Bound<'py, PyAny>> {
    let slf = loop_of(slf)?;
    let c = parse("call_soon", None, &a)?;
    Ok(
        LoopCore::push_soon(slf, c.callback, c.args, c.context, "call_soon", false)?
            .into_bound(slf.py())
            .into_any(),
    )
}

fn call_soon_threadsafe<'py>(slf: &Bound<'py, PyAny>, a: FastArgs<'_, 'py>) -> PyResult<Bound<'py, PyAny>> {
    let slf = loop_of(slf)?;
    let c = parse("call_soon_threadsafe", None, &a)?;
    let handle = LoopCore::push_soon(slf, c.callback, c.args, c.context, "call_soon_threadsafe", true)?;
    Ok(handle.into_bound(slf.py()).into_any())
}

fn call_later<'py>(slf: &Bound<'py, PyAny>, a: FastArgs<'_, 'py>) -> PyResult<Bound<'py, PyAny>> {
    let slf = loop_of(slf)?;
    let c = parse("call_later", Some("delay"), &a)?;
    let delay = c.fixed.expect("parsed with a fixed argument");
    if delay.is_none() {
        return Err(PyTypeError::new_err("delay must not be None"));
    }
    let (when, when_obj) = if slf.get().has_custom_time() {
        // `self.time() + delay`, with whatever the overriding `time` returns.
        let when = LoopCore::custom_now(slf)?.add(delay)?;
        (when.extract::<f64>()?, unless_float(&when))
    } else if delay.is_instance_of::<PyFloat>() || delay.is_instance_of::<PyInt>() {
        (sys::monotonic() + delay.extract::<f64>()?, None)
    } else {
        // `loop.time() + delay`, as the stdlib computes it: a `Fraction` is accepted, while
        // an object that only converts to a number (`Decimal`, `__index__`) is a TypeError.
        let when = PyFloat::new(slf.py(), sys::monotonic()).add(delay)?;
        (when.extract::<f64>()?, unless_float(&when))
    };
    // The stdlib's call_later goes through call_at, and its debug-mode errors say so.
    let timer = LoopCore::push_timer(slf, when, when_obj, c.callback, c.args, c.context, "call_at")?;
    Ok(timer.into_bound(slf.py()).into_any())
}

fn call_at<'py>(slf: &Bound<'py, PyAny>, a: FastArgs<'_, 'py>) -> PyResult<Bound<'py, PyAny>> {
    let slf = loop_of(slf)?;
    let c = parse("call_at", Some("when"), &a)?;
    let when = c.fixed.expect("parsed with a fixed argument");
    if when.is_none() {
        return Err(PyTypeError::new_err("when cannot be None"));
    }
    let when_obj = unless_float(&when);
    let when = when.extract::<f64>()?;
    let timer = LoopCore::push_timer(slf, when, when_obj, c.callback, c.args, c.context, "call_at")?;
    Ok(timer.into_bound(slf.py()).into_any())
}

/// The deadline object itself unless it is exactly a `float`, kept for `TimerHandle.when()`
/// (see `TimerHandle`).
#[inline]
fn unless_float(when: &Bound<'_, PyAny>) -> Option<Py<PyAny>> {
    (!when.is_exact_instance_of::<PyFloat>()).then(|| when.clone().unbind())
}

#[cold]
#[inline(never)]
fn takes_no_arguments(method: &str, given: usize) -> PyErr {
    PyTypeError::new_err(format!("{method}() takes no arguments ({given} given)"))
}

fn no_arguments(method: &str, a: &FastArgs<'_, '_>) -> PyResult<()> {
    let given = a.len() + a.keyword_count();
    if given == 0 {
        Ok(())
    } else {
        Err(takes_no_arguments(method, given))
    }
}

fn time<'py>(slf: &Bound<'py, PyAny>, a: FastArgs<'_, 'py>) -> PyResult<Bound<'py, PyAny>> {
    no_arguments("time", &a)?;
    Ok(pyo3::types::PyFloat::new(slf.py(), sys::monotonic()).into_any())
}

fn get_debug<'py>(slf: &Bound<'py, PyAny>, a: FastArgs<'_, 'py>) -> PyResult<Bound<'py, PyAny>> {
    no_arguments("get_debug", &a)?;
    let debug = loop_of(slf)?.get().is_debug();
    Ok(pyo3::types::PyBool::new(slf.py(), debug).to_owned().into_any())
}

fn create_future<'py>(slf: &Bound<'py, PyAny>, a: FastArgs<'_, 'py>) -> PyResult<Bound<'py, PyAny>> {
    no_arguments("create_future", &a)?;
    LoopCore::new_future(loop_of(slf)?)
}

fn create_task<'py>(slf: &Bound<'py, PyAny>, a: FastArgs<'_, 'py>) -> PyResult<Bound<'py, PyAny>> {
    let slf = loop_of(slf)?;
    let (mut coro, mut name, mut context) = (None, None, None);
    match a.len() {
        0 => {}
        1 => coro = Some(a.get(0)),
        n => {
            return Err(PyTypeError::new_err(format!(
                "create_task() takes 1 positional argument but {n} were given"
            )))
        }
    }
    for i in 0..a.keyword_count() {
        let (key, raw) = a.keyword(i);
        let value = (!raw.is_none()).then_some(raw);
        match key.to_str()? {
            "name" => name = value,
            "context" => context = value,
            "coro" if coro.is_none() => coro = Some(raw),
            other => {
                return Err(PyTypeError::new_err(format!(
                    "create_task() got an unexpected keyword argument '{other}'"
                )))
            }
        }
    }
    let coro = coro.ok_or_else(|| missing("create_task", "coro"))?;
    LoopCore::new_task(slf, &coro, name.as_deref(), context.as_deref())
}

fn handle_cancel<'py>(slf: &Bound<'py, PyAny>, a: FastArgs<'_, 'py>) -> PyResult<Bound<'py, PyAny>> {
    no_arguments("cancel", &a)?;
    Handle::cancel_py(slf.cast::<Handle>()?)?;
    Ok(slf.py().None().into_bound(slf.py()))
}

fn timer_cancel<'py>(slf: &Bound<'py, PyAny>, a: FastArgs<'_, 'py>) -> PyResult<Bound<'py, PyAny>> {
    no_arguments("cancel", &a)?;
    TimerHandle::cancel_py(slf.cast::<TimerHandle>()?)?;
    Ok(slf.py().None().into_bound(slf.py()))
}

fast_method!(time_entry, time);
fast_method!(get_debug_entry, get_debug);
fast_method!(create_future_entry, create_future);
fast_method!(create_task_entry, create_task);
fast_method!(handle_cancel_entry, handle_cancel);
fast_method!(timer_cancel_entry, timer_cancel);
fast_method!(call_soon_entry, call_soon);
fast_method!(call_soon_threadsafe_entry, call_soon_threadsafe);
fast_method!(call_later_entry, call_later);
fast_method!(call_at_entry, call_at);

/// `Handle.cancel`, for `ffi::fastcall::install` on `Handle`.
pub(crate) const HANDLE_METHODS: &[MethodSpec] = &[MethodSpec {
    name: c"cancel",
    doc: c"cancel($self)\n--\n\nCancel the callback; it will not run.",
    entry: handle_cancel_entry,
}];

/// `TimerHandle.cancel`, for `ffi::fastcall::install` on `TimerHandle`.
pub(crate) const TIMER_METHODS: &[MethodSpec] = &[MethodSpec {
    name: c"cancel",
    doc: c"cancel($self)\n--\n\nCancel the timer; it will not run.",
    entry: timer_cancel_entry,
}];

/// The loop's per-operation methods, for `ffi::fastcall::install` on `LoopCore`.
pub(crate) const METHODS: &[MethodSpec] = &[
    MethodSpec {
        name: c"time",
        doc: c"time($self)\n--\n\nThe loop's clock: time.monotonic().",
        entry: time_entry,
    },
    MethodSpec {
        name: c"get_debug",
        doc: c"get_debug($self)\n--\n\nWhether the loop is in debug mode.",
        entry: get_debug_entry,
    },
    MethodSpec {
        name: c"create_future",
        doc: c"create_future($self)\n--\n\nA new asyncio.Future attached to the loop.",
        entry: create_future_entry,
    },
    MethodSpec {
        name: c"create_task",
        doc: c"create_task($self, coro, *, name=None, context=None)\n--\n\nSchedule a coroutine as a Task.",
        entry: create_task_entry,
    },
    MethodSpec {
        name: c"call_soon",
        doc: c"call_soon($self, callback, *args, context=None)\n--\n\nArrange for callback(*args) to be called soon.",
        entry: call_soon_entry,
    },
    MethodSpec {
        name: c"call_soon_threadsafe",
        doc: c"call_soon_threadsafe($self, callback, *args, context=None)\n--\n\nLike call_soon(), from any thread.",
        entry: call_soon_threadsafe_entry,
    },
    MethodSpec {
        name: c"call_later",
        doc: c"call_later($self, delay, callback, *args, context=None)\n--\n\nArrange for callback(*args) to be called after delay seconds.",
        entry: call_later_entry,
    },
    MethodSpec {
        name: c"call_at",
        doc: c"call_at($self, when, callback, *args, context=None)\n--\n\nArrange for callback(*args) to be called at loop time when.",
        entry: call_at_entry,
    },
];
