//! `GilCell<T>`: interior mutability for state that is only ever touched with the GIL held.
//!
//! The loop's queues and the handles' fields are read and written on every callback; a mutex or
//! PyO3's atomic borrow flag there costs several atomic read-modify-writes per callback. Holding
//! the GIL already serializes every access, so a plain (non-atomic) borrow flag suffices. The flag
//! still matters: code that could run Python while a borrow is held (a finalizer, a thread switch)
//! would nest a second borrow, and that is turned into a panic (a Python exception), never
//! aliasing.
//!
//! This relies on the GIL: ferroloop refuses to load on a free-threaded interpreter.

use std::cell::{Cell, UnsafeCell};
use std::ops::{Deref, DerefMut};

use pyo3::Python;

pub struct GilCell<T> {
    borrowed: Cell<bool>,
    value: UnsafeCell<T>,
}

// SAFETY: every access to `value` and `borrowed` goes through `borrow_mut`, which requires a
// `Python` token, i.e. the calling thread holds the GIL; the GIL serializes those accesses across
// threads and its hand-off orders memory between them. `T: Send` because the value moves between
// the threads that successively hold the GIL.
unsafe impl<T: Send> Sync for GilCell<T> {}

impl<T> GilCell<T> {
    pub const fn new(value: T) -> Self {
        GilCell {
            borrowed: Cell::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// The value, out of a cell nothing borrows any more.
    #[inline]
    pub fn into_inner(self) -> T {
        self.value.into_inner()
    }

    #[inline]
    pub fn borrow_mut<'a>(&'a self, _py: Python<'_>) -> GilRefMut<'a, T> {
        if self.borrowed.replace(true) {
            nested_borrow();
        }
        GilRefMut { cell: self }
    }

    /// For the garbage collector's traversal, which runs with the GIL held but without a token.
    /// Returns None when a borrow is in progress.
    #[inline]
    pub fn try_borrow_in_gc(&self) -> Option<GilRefMut<'_, T>> {
        if self.borrowed.replace(true) {
            return None;
        }
        Some(GilRefMut { cell: self })
    }
}

#[cold]
#[inline(never)]
fn nested_borrow() -> ! {
    panic!("ferroloop internal error: nested borrow of loop state")
}

pub struct GilRefMut<'a, T> {
    cell: &'a GilCell<T>,
}

impl<T> Deref for GilRefMut<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: this guard is the only one alive for `cell` (the flag was false when it was made
        // and stays true until it drops), and it is only made with the GIL held.
        unsafe { &*self.cell.value.get() }
    }
}

impl<T> DerefMut for GilRefMut<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes the mutable borrow unique through this guard.
        unsafe { &mut *self.cell.value.get() }
    }
}

impl<T> Drop for GilRefMut<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.cell.borrowed.set(false);
    }
}
