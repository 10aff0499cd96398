//! A callback's positional arguments, without a tuple for the common cases.
//!
//! Most callbacks the loop runs take at most two arguments (`call_soon(task_step)`,
//! `call_soon(done_callback, future)`, `asyncio.sleep`'s `call_later(delay, set_result, future,
//! result)`); a tuple per callback is a GC-tracked allocation that counts towards the
//! collector's thresholds. Only calls with three or more arguments get one.

use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::ffi::{intern, GilOnce};

/// `asyncio.futures._set_result_unless_cancelled(fut, result)`, the callback of every
/// `asyncio.sleep` timer and of every transport's start (its waiter), is run here as what its
/// body does: `if fut.cancelled(): return`, then `fut.set_result(result)`, the same method calls
/// and the same exceptions, without a Python frame for the function itself. Only that function
/// object is recognised; a replacement of it in `asyncio.futures` is an ordinary callback.
static SET_RESULT_UNLESS_CANCELLED: GilOnce<Py<PyAny>> = GilOnce::new();

#[inline]
fn is_set_result_unless_cancelled(py: Python<'_>, callback: &Bound<'_, PyAny>) -> bool {
    SET_RESULT_UNLESS_CANCELLED
        .import(py, "asyncio.futures", "_set_result_unless_cancelled")
        .is_ok_and(|known| known.is(callback))
}

fn set_result_unless_cancelled<'py>(
    fut: &Bound<'py, PyAny>,
    result: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = fut.py();
    if fut.call_method0(intern!(py, "cancelled"))?.is_truthy()? {
        return Ok(py.None().into_bound(py));
    }
    fut.call_method1(intern!(py, "set_result"), (result,))?;
    Ok(py.None().into_bound(py))
}

pub(crate) enum CallArgs {
    Zero,
    One(Py<PyAny>),
    Two(Py<PyAny>, Py<PyAny>),
    Many(Py<PyTuple>),
}

impl CallArgs {
    pub fn from_tuple(args: Bound<'_, PyTuple>) -> Self {
        match args.len() {
            0 => CallArgs::Zero,
            1 => CallArgs::One(args.get_item(0).expect("len is 1").unbind()),
            _ => CallArgs::Many(args.unbind()),
        }
    }

    pub fn clone_ref(&self, py: Python<'_>) -> Self {
        match self {
            CallArgs::Zero => CallArgs::Zero,
            CallArgs::One(a) => CallArgs::One(a.clone_ref(py)),
            CallArgs::Two(a, b) => CallArgs::Two(a.clone_ref(py), b.clone_ref(py)),
            CallArgs::Many(t) => CallArgs::Many(t.clone_ref(py)),
        }
    }

    #[inline]
    pub fn call<'py>(&self, py: Python<'py>, callback: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        match self {
            CallArgs::Zero => callback.call0(),
            CallArgs::One(a) => callback.call1((a.bind(py),)),
            CallArgs::Two(a, b) => {
                if is_set_result_unless_cancelled(py, callback) {
                    return set_result_unless_cancelled(a.bind(py), b.bind(py));
                }
                callback.call1((a.bind(py), b.bind(py)))
            }
            CallArgs::Many(t) => callback.call1(t.bind(py)),
        }
    }

    pub fn to_tuple<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        match self {
            CallArgs::Zero => Ok(PyTuple::empty(py)),
            CallArgs::One(a) => PyTuple::new(py, [a.bind(py)]),
            CallArgs::Two(a, b) => PyTuple::new(py, [a.bind(py), b.bind(py)]),
            CallArgs::Many(t) => Ok(t.bind(py).clone()),
        }
    }

    /// Lets go of the arguments (see `ffi::release`).
    #[inline]
    pub fn release(self, py: Python<'_>) {
        match self {
            CallArgs::Zero => {}
            CallArgs::One(a) => a.drop_ref(py),
            CallArgs::Two(a, b) => {
                a.drop_ref(py);
                b.drop_ref(py);
            }
            CallArgs::Many(t) => t.drop_ref(py),
        }
    }

    /// The objects held, for the garbage collector.
    pub fn objects(&self) -> [Option<&Py<PyAny>>; 2] {
        match self {
            CallArgs::Zero => [None, None],
            CallArgs::One(a) => [Some(a), None],
            CallArgs::Two(a, b) => [Some(a), Some(b)],
            CallArgs::Many(t) => [Some(t.as_any()), None],
        }
    }
}
