//! Objects of a `#[pyclass]` that has a free list (see `freelist`), made and freed by the crate
//! itself instead of through PyO3's generic paths.
//!
//! PyO3 keeps the Rust value of a class, and that of each base class, at fixed offsets inside
//! its objects, which its public API does not name. A layout learns them from one object PyO3
//! made (a probe) and accepts them only when that object is exactly what `freelist::take` and
//! the values written at those offsets make of it: no instance dict (PyO3 would put one there
//! on 3.11/3.12), and every byte past the header that is not a value zero (an empty weak-reference
//! list, and nothing else PyO3 keeps there). Until a layout is installed, or when its probe does
//! not pass, `make` leaves the object to PyO3, as before.
//!
//! An installed layout also frees the objects: the type's `tp_dealloc` reads the values out of a
//! dying object once and hands them to the layout's drop function, which gets the GIL token.
//!
//! `Layout1` serves a class with no Rust base, `Layout2` a class whose base is another
//! `#[pyclass]` (the base's value, then the class's own).

use std::marker::PhantomData;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use pyo3::ffi;
use pyo3::impl_::pyclass::PyClassBaseType;
use pyo3::prelude::*;
use pyo3::PyClass;
use pyo3::PyClassInitializer;

use super::freelist::{self, Releaser};

/// Lets go of the Rust value(s) of an object being freed, through the GIL token: for `Layout1`,
/// implemented by the class's value; for `Layout2`, by the pair (base value, own value).
pub trait DropValues: Sized {
    fn drop_values(self, py: Python<'_>);
}

/// Byte offset of `value` inside `obj`, if it lies after the object's header and within its
/// basic size.
fn offset_in<T>(obj: &Bound<'_, PyAny>, value: *const T) -> Option<usize> {
    let obj = obj.as_ptr();
    // SAFETY: `obj` is a live object (the caller holds it), whose type lives at least as long.
    let size = usize::try_from(unsafe { (*ffi::Py_TYPE(obj)).tp_basicsize }).ok()?;
    let offset = (value as usize).checked_sub(obj as usize)?;
    (offset >= std::mem::size_of::<ffi::PyObject>() && offset + std::mem::size_of::<T>() <= size).then_some(offset)
}

/// Whether the probe `obj` holds nothing but the values at `values` (offset, size); see the
/// module docs.
fn plain(obj: &Bound<'_, PyAny>, values: &[(usize, usize)]) -> bool {
    let obj = obj.as_ptr();
    // SAFETY: `obj` is a live object of a fixed-size type (the free list takes no other), so
    // `tp_basicsize` bytes of it are readable; only plain bytes are read.
    unsafe {
        let ty = ffi::Py_TYPE(obj);
        let Ok(size) = usize::try_from((*ty).tp_basicsize) else {
            return false;
        };
        let bytes = std::slice::from_raw_parts(obj.cast::<u8>(), size);
        (*ty).tp_dictoffset == 0
            && (std::mem::size_of::<ffi::PyObject>()..size)
                .filter(|i| !values.iter().any(|&(at, len)| (at..at + len).contains(i)))
                .all(|i| bytes[i] == 0)
    }
}

/// Gives objects of exactly `ty` to `releaser` to free, if `probe` is one and holds nothing but
/// `values` (offset, size); see the module docs.
///
/// # Safety
/// `releaser` reads exactly the values at those offsets, and nothing else.
unsafe fn adopt(
    probe: &Bound<'_, PyAny>,
    ty: *mut ffi::PyTypeObject,
    values: &[(usize, usize)],
    releaser: &'static dyn Releaser,
) -> bool {
    // SAFETY: the caller vouches for `releaser`.
    probe.get_type_ptr() == ty && plain(probe, values) && unsafe { freelist::set_release(probe.py(), ty, releaser) }
}

/// The layout of a class `T` with no Rust base.
pub struct Layout1<T> {
    ty: AtomicPtr<ffi::PyTypeObject>,
    /// Offset of the `T`; 0 until installed.
    at: AtomicUsize,
    _value: PhantomData<fn() -> T>,
}

impl<T> Layout1<T>
where
    T: PyClass<Frozen = pyo3::pyclass::boolean_struct::True> + Sync + Into<PyClassInitializer<T>> + DropValues,
{
    /// A layout not yet installed.
    pub const fn new() -> Self {
        Layout1 {
            ty: AtomicPtr::new(std::ptr::null_mut()),
            at: AtomicUsize::new(0),
            _value: PhantomData,
        }
    }

    /// Learns the layout from `probe`, an object PyO3 made, and takes over making and freeing
    /// objects of exactly `T` if the probe passes (see the module docs) and `T` has a free list.
    /// Returns whether it did.
    pub fn install(&'static self, probe: &Bound<'_, T>) -> bool {
        let py = probe.py();
        let ty = T::type_object_raw(py);
        let any = probe.as_any();
        let Some(at) = offset_in(any, probe.get() as *const T) else {
            return false;
        };
        // SAFETY: `release` below reads exactly the `T` at `at`, where PyO3 put it (and `make`
        // puts it), and nothing else.
        if !unsafe { adopt(any, ty, &[(at, std::mem::size_of::<T>())], self) } {
            return false;
        }
        self.at.store(at, Ordering::Relaxed);
        self.ty.store(ty, Ordering::Relaxed);
        true
    }

    /// A new object holding `value`.
    #[inline]
    pub fn make(&self, py: Python<'_>, value: T) -> PyResult<Py<T>> {
        let at = self.at.load(Ordering::Relaxed);
        if at == 0 {
            return Py::new(py, value);
        }
        let obj = freelist::take(py, self.ty.load(Ordering::Relaxed))?;
        // SAFETY: `obj` is a new object of exactly `T`'s type, zeroed past its header, which
        // nothing else has seen; PyO3's objects of it hold their value at `at`, and the rest of
        // what PyO3 writes there is zero (see `install`).
        unsafe {
            std::ptr::write(obj.byte_add(at).cast::<T>(), value);
            Ok(Bound::from_owned_ptr(py, obj).cast_into_unchecked::<T>().unbind())
        }
    }
}

impl<T: DropValues> Releaser for Layout1<T> {
    #[inline]
    unsafe fn release(&self, py: Python<'_>, obj: *mut ffi::PyObject) {
        let at = self.at.load(Ordering::Relaxed);
        // SAFETY: called (see `Releaser`) on a dying object of the type `install` checked, which
        // holds a `T` at `at`; it is read out once and the block is never read as one again.
        let value = unsafe { std::ptr::read(obj.byte_add(at).cast::<T>()) };
        value.drop_values(py);
    }
}

/// The layout of a class `T` whose base is the `#[pyclass]` `B`.
pub struct Layout2<B, T> {
    ty: AtomicPtr<ffi::PyTypeObject>,
    /// Offsets of the `B` and of the `T`; 0 until installed.
    base_at: AtomicUsize,
    own_at: AtomicUsize,
    _values: PhantomData<fn() -> (B, T)>,
}

impl<B, T> Layout2<B, T>
where
    B: PyClass<BaseType = PyAny, Frozen = pyo3::pyclass::boolean_struct::True>
        + PyClassBaseType<Initializer = PyClassInitializer<B>>
        + Sync,
    T: PyClass<BaseType = B, Frozen = pyo3::pyclass::boolean_struct::True> + Sync,
    (B, T): DropValues,
{
    /// A layout not yet installed.
    pub const fn new() -> Self {
        Layout2 {
            ty: AtomicPtr::new(std::ptr::null_mut()),
            base_at: AtomicUsize::new(0),
            own_at: AtomicUsize::new(0),
            _values: PhantomData,
        }
    }

    /// As `Layout1::install`, for both values.
    pub fn install(&'static self, probe: &Bound<'_, T>) -> bool {
        let py = probe.py();
        let ty = T::type_object_raw(py);
        let any = probe.as_any();
        let base = offset_in(any, probe.as_super().get() as *const B);
        let own = offset_in(any, probe.get() as *const T);
        let (Some(base), Some(own)) = (base, own) else {
            return false;
        };
        let values = [(base, std::mem::size_of::<B>()), (own, std::mem::size_of::<T>())];
        // SAFETY: `release` below reads exactly the `B` and the `T` at these offsets, where PyO3
        // put them (and `make` puts them), and nothing else.
        if !unsafe { adopt(any, ty, &values, self) } {
            return false;
        }
        self.base_at.store(base, Ordering::Relaxed);
        self.own_at.store(own, Ordering::Relaxed);
        self.ty.store(ty, Ordering::Relaxed);
        true
    }

    /// A new object holding `base` and `own`.
    #[inline]
    pub fn make(&self, py: Python<'_>, base: B, own: T) -> PyResult<Py<T>> {
        let own_at = self.own_at.load(Ordering::Relaxed);
        if own_at == 0 {
            return Py::new(py, PyClassInitializer::from(base).add_subclass(own));
        }
        let base_at = self.base_at.load(Ordering::Relaxed);
        let obj = freelist::take(py, self.ty.load(Ordering::Relaxed))?;
        // SAFETY: as in `Layout1::make`, for both values.
        unsafe {
            std::ptr::write(obj.byte_add(base_at).cast::<B>(), base);
            std::ptr::write(obj.byte_add(own_at).cast::<T>(), own);
            Ok(Bound::from_owned_ptr(py, obj).cast_into_unchecked::<T>().unbind())
        }
    }
}

impl<B, T> Releaser for Layout2<B, T>
where
    (B, T): DropValues,
{
    #[inline]
    unsafe fn release(&self, py: Python<'_>, obj: *mut ffi::PyObject) {
        let base_at = self.base_at.load(Ordering::Relaxed);
        let own_at = self.own_at.load(Ordering::Relaxed);
        // SAFETY: as in `Layout1`'s `release`, for both values.
        let values = unsafe {
            (
                std::ptr::read(obj.byte_add(base_at).cast::<B>()),
                std::ptr::read(obj.byte_add(own_at).cast::<T>()),
            )
        };
        values.drop_values(py);
    }
}
