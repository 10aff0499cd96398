//! `GilOnce<T>`: a value made once per process, the first time it is needed, without letting go
//! of the GIL; and `intern!`, the interned names built on it.
//!
//! PyO3's `PyOnceLock` (and its `intern!`, which is one) releases the GIL on first use, so that
//! a thread waiting for another one's initialisation cannot deadlock it. While it is released,
//! any other thread may run, including the loop's thread, and code that holds a borrow of a
//! `GilCell` over such a first use (a lookup of the current context, a name) then sees its state
//! borrowed a second time: a panic where no Python code ran at all. Here the GIL is what
//! serialises initialisation: the value is computed with it held and stored unless another
//! thread stored one first (possible only if computing it ran Python code, which can switch
//! threads; the loser's value is dropped). Nothing in this module lets go of the GIL itself.

use std::convert::Infallible;
use std::sync::OnceLock;

use pyo3::prelude::*;

pub struct GilOnce<T>(OnceLock<T>);

impl<T> GilOnce<T> {
    pub const fn new() -> Self {
        GilOnce(OnceLock::new())
    }

    #[inline]
    pub fn get_or_init(&self, py: Python<'_>, init: impl FnOnce() -> T) -> &T {
        match self.get_or_try_init(py, || Ok::<T, Infallible>(init())) {
            Ok(value) => value,
            Err(never) => match never {},
        }
    }

    #[inline]
    pub fn get_or_try_init<E>(&self, py: Python<'_>, init: impl FnOnce() -> Result<T, E>) -> Result<&T, E> {
        match self.0.get() {
            Some(value) => Ok(value),
            None => self.init(py, init),
        }
    }

    /// Computes the value and stores it unless a value is there already. With the GIL held no
    /// other thread is inside the store, so it never waits.
    #[cold]
    #[inline(never)]
    fn init<E>(&self, _py: Python<'_>, init: impl FnOnce() -> Result<T, E>) -> Result<&T, E> {
        let value = init()?;
        Ok(self.0.get_or_init(move || value))
    }
}

impl GilOnce<Py<PyAny>> {
    /// `module.attr`, imported the first time.
    pub fn import<'py>(&self, py: Python<'py>, module: &str, attr: &str) -> PyResult<&Bound<'py, PyAny>> {
        self.get_or_try_init(py, || py.import(module)?.getattr(attr).map(Bound::unbind))
            .map(|value| value.bind(py))
    }
}

/// `intern!(py, "name")`: the interned `str`, made once per call site (as PyO3's `intern!`, but
/// made without letting go of the GIL: see the module docs).
macro_rules! intern {
    ($py:expr, $text:expr) => {{
        static INTERNED: $crate::ffi::GilOnce<::pyo3::Py<::pyo3::types::PyString>> = $crate::ffi::GilOnce::new();
        let py: ::pyo3::Python<'_> = $py;
        INTERNED
            .get_or_init(py, || ::pyo3::types::PyString::intern(py, $text).unbind())
            .bind(py)
    }};
}
pub(crate) use intern;
