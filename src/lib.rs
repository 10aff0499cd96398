//! `ferroloop._core`: the native event loop behind `ferroloop.Loop`.

mod errors;
mod ffi;
mod r#loop;
mod sys;
mod transport;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    sys::install_fork_hook().map_err(errors::os_error)?;
    ffi::prepare(m.py());
    m.add_class::<r#loop::LoopCore>()?;
    ffi::fastcall::install::<r#loop::LoopCore>(m.py(), r#loop::FAST_METHODS)?;
    ffi::fastcall::install::<r#loop::Handle>(m.py(), r#loop::HANDLE_METHODS)?;
    ffi::fastcall::install::<r#loop::TimerHandle>(m.py(), r#loop::TIMER_METHODS)?;
    m.add_class::<r#loop::Handle>()?;
    m.add_class::<r#loop::TimerHandle>()?;
    // After both types exist, so that TimerHandle has not inherited Handle's slots.
    ffi::freelist::install::<r#loop::Handle>(m.py());
    ffi::freelist::install::<r#loop::TimerHandle>(m.py());
    r#loop::install_handle_lifecycle(m.py())?;
    m.add_class::<transport::StreamCore>()?;
    m.add_class::<transport::DatagramCore>()?;
    m.add_class::<transport::ReadPipeCore>()?;
    m.add_class::<transport::WritePipeCore>()?;
    m.add_class::<transport::TlsCore>()?;
    m.add("DEFAULT_HIGH_WATER", transport::DEFAULT_HIGH_WATER)?;
    m.add("DEFAULT_LOW_WATER", transport::DEFAULT_LOW_WATER)?;
    m.add("MAX_READ", transport::MAX_READ)?;
    Ok(())
}
