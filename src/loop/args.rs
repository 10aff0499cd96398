//! A callback's positional arguments, without a tuple for the common cases.
//!
//! Most callbacks the loop runs take no argument or one (`call_soon(task_step)`,
//! `call_soon(done_callback, future)`); a tuple per callback is a GC-tracked allocation that
//! counts towards the collector's thresholds. Only calls with two or more arguments get one.

use pyo3::prelude::*;
use pyo3::types::PyTuple;

pub(crate) enum CallArgs {
    Zero,
    One(Py<PyAny>),
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
            CallArgs::Many(t) => CallArgs::Many(t.clone_ref(py)),
        }
    }

    #[inline]
    pub fn call<'py>(&self, py: Python<'py>, callback: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        match self {
            CallArgs::Zero => callback.call0(),
            CallArgs::One(a) => callback.call1((a.bind(py),)),
            CallArgs::Many(t) => callback.call1(t.bind(py)),
        }
    }

    pub fn to_tuple<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        match self {
            CallArgs::Zero => Ok(PyTuple::empty(py)),
            CallArgs::One(a) => PyTuple::new(py, [a.bind(py)]),
            CallArgs::Many(t) => Ok(t.bind(py).clone()),
        }
    }

    pub fn object(&self) -> Option<&Py<PyAny>> {
        match self {
            CallArgs::Zero => None,
            CallArgs::One(a) => Some(a),
            CallArgs::Many(t) => Some(t.as_any()),
        }
    }
}
