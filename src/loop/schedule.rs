//! `call_soon`, `call_soon_threadsafe`, `call_later` and `call_at`: called once per callback, so
//! they take their arguments through vectorcall (`ffi::fastcall`) and store zero or one extra
//! argument without a tuple (`args::CallArgs`).

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::{intern, Borrowed};

use super::args::CallArgs;
use super::LoopCore;
use crate::ffi::fastcall::{FastArgs, MethodSpec};
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
        _ => CallArgs::Many(a.tuple_from(next)?.unbind()),
    };
    Ok(Call {
        fixed: fixed_value,
        callback: callback.to_owned().unbind(),
        args,
        context,
    })
}

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
    let when = sys::monotonic() + delay.extract::<f64>()?;
    // The stdlib's call_later goes through call_at, and its debug-mode errors say so.
    let timer = LoopCore::push_timer(slf, when, c.callback, c.args, c.context, "call_at")?;
    Ok(timer.into_bound(slf.py()).into_any())
}

fn call_at<'py>(slf: &Bound<'py, PyAny>, a: FastArgs<'_, 'py>) -> PyResult<Bound<'py, PyAny>> {
    let slf = loop_of(slf)?;
    let c = parse("call_at", Some("when"), &a)?;
    let when = c.fixed.expect("parsed with a fixed argument");
    if when.is_none() {
        return Err(PyTypeError::new_err("when cannot be None"));
    }
    let when = when.extract::<f64>()?;
    let timer = LoopCore::push_timer(slf, when, c.callback, c.args, c.context, "call_at")?;
    Ok(timer.into_bound(slf.py()).into_any())
}

fast_method!(call_soon_entry, call_soon);
fast_method!(call_soon_threadsafe_entry, call_soon_threadsafe);
fast_method!(call_later_entry, call_later);
fast_method!(call_at_entry, call_at);

/// The scheduling methods, for `ffi::fastcall::install` on `LoopCore`.
pub(crate) const METHODS: &[MethodSpec] = &[
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
