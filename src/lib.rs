//! `ferroloop._core`: the native event loop behind `ferroloop.Loop`.

mod errors;
mod ffi;
mod r#loop;
mod sys;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<r#loop::LoopCore>()?;
    m.add_class::<r#loop::Handle>()?;
    m.add_class::<r#loop::TimerHandle>()?;
    Ok(())
}
