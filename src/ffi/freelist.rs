//! Free lists for the objects the loop makes for every callback: `Handle` and `TimerHandle`.
//!
//! Each `call_soon` or `call_later` returns a new handle, and a handle lives for one turn of the
//! loop or until its timer fires. Allocating it through `PyType_GenericAlloc` and freeing it
//! with `PyObject_Free` is a fifth of the instructions the loop spends per callback. Like
//! CPython's own free lists (floats, tuples, frames), the memory of a freed handle is kept for
//! the next one instead: `install` sets the type's `tp_alloc` and `tp_free` slots, which
//! PyO3's allocation (`object_new`) and deallocation (`tp_dealloc`) call.
//!
//! A reused block is zeroed and initialized with `PyObject_Init`, so the object is exactly what
//! `PyType_GenericAlloc` makes of a non-GC type. Only exact, non-GC, fixed-size types with the
//! default slots are set up (a subclass made in Python gets `PyType_GenericAlloc` and
//! `PyObject_Free` of its own from `type.__new__`), and each list is bounded. At exit the lists
//! forget their blocks, which the interpreter's allocator releases with everything else.
//!
//! The loop makes and frees handles on its own paths, so it can skip PyO3's generic ones too:
//! PyO3 makes an object by calling the base type's `tp_new` (`object_new`, which checks its
//! arguments and calls `tp_alloc`), and frees it through a trampoline that sets up PyO3's
//! thread-local state and looks up slots by name. `take` hands out a kept block as a new object
//! for the caller to write its Rust value into, and `set_release` gives the type a `tp_dealloc`
//! that clears weak references, lets the type's own `release` function drop the value through
//! the GIL token, and keeps the block. Objects of a Python subclass go to PyO3's `tp_dealloc`,
//! as before.

use std::cell::UnsafeCell;
use std::ffi::c_void;

use pyo3::ffi;
use pyo3::prelude::*;

/// Blocks kept per type.
const CAPACITY: usize = 1024;
/// Types with a free list.
const TYPES: usize = 2;
/// `Py_TPFLAGS_MANAGED_WEAKREF | Py_TPFLAGS_MANAGED_DICT` (3.12+; the dict flag since 3.11): types
/// whose objects have a header in front of them.
const PREHEADER_FLAGS: std::os::raw::c_ulong = (1 << 3) | (1 << 4);

/// What drops the Rust value(s) of an object about to be freed, through the GIL token (see
/// `layout`).
pub trait Releaser: Sync {
    /// # Safety
    /// `obj` is an object of exactly the type this was given to (`set_release`), with no
    /// references left; its values are read once and never used again.
    unsafe fn release(&self, py: Python<'_>, obj: *mut ffi::PyObject);
}

type Release = &'static dyn Releaser;

struct List {
    ty: *mut ffi::PyTypeObject,
    size: usize,
    len: usize,
    /// Set by `set_release`, with the `tp_dealloc` it replaced.
    release: Option<(Release, Option<ffi::destructor>)>,
    blocks: [*mut ffi::PyObject; CAPACITY],
}

struct Lists(UnsafeCell<[List; TYPES]>);

// SAFETY: the lists are touched only by `alloc`, `free` and `install` (with the GIL held: CPython
// calls tp_alloc and tp_free with it, and ferroloop refuses to load on a free-threaded
// interpreter) and by `forget` at exit, after the last Python code has run. None of them runs
// Python code while using the lists, so accesses never overlap.
unsafe impl Sync for Lists {}

const EMPTY: List = List {
    ty: std::ptr::null_mut(),
    size: 0,
    len: 0,
    release: None,
    blocks: [std::ptr::null_mut(); CAPACITY],
};

static LISTS: Lists = Lists(UnsafeCell::new([EMPTY; TYPES]));

/// The list of `ty`, if it has one.
///
/// # Safety
/// The GIL is held, and no other reference to the lists is live.
#[inline]
unsafe fn list_of(ty: *mut ffi::PyTypeObject) -> Option<&'static mut List> {
    // SAFETY: per the contract, this is the only reference to the lists.
    unsafe { (*LISTS.0.get()).iter_mut().find(|l| !l.ty.is_null() && l.ty == ty) }
}

/// A kept block of exactly `ty` made a new object, as `PyType_GenericAlloc` makes one of a
/// non-GC type: zeroed, its type set (and, for a heap type, referenced), one reference. None
/// when `ty` has no list or its list is empty.
///
/// # Safety
/// The GIL is held and `ty` is a live type; no other reference to the lists is live.
#[inline]
unsafe fn pop(ty: *mut ffi::PyTypeObject) -> Option<*mut ffi::PyObject> {
    // SAFETY: a kept block is one that `free` took from an object of exactly `ty` (so `size`
    // bytes, from PyObject_Malloc, with no GC header), which nothing else refers to.
    unsafe {
        let list = list_of(ty)?;
        if list.len == 0 {
            return None;
        }
        list.len -= 1;
        let obj = list.blocks[list.len];
        std::ptr::write_bytes(obj.cast::<u8>(), 0, list.size);
        Some(ffi::PyObject_Init(obj, ty))
    }
}

/// A new object of exactly `ty`, a listed type: a kept block (see `pop`), else a new one from
/// `PyType_GenericAlloc`; the caller writes the object's Rust value into it before anything
/// else sees it.
#[inline]
pub(super) fn take(py: Python<'_>, ty: *mut ffi::PyTypeObject) -> PyResult<*mut ffi::PyObject> {
    // SAFETY: the GIL is held (we have the token); `ty` is compared with the listed types before
    // anything is done with it, and nothing here runs Python code. PyType_GenericAlloc of a
    // non-GC type returns a zeroed object with its type set and one reference, as `pop` does,
    // or NULL with MemoryError set.
    unsafe {
        if let Some(obj) = pop(ty) {
            return Ok(obj);
        }
        let obj = ffi::PyType_GenericAlloc(ty, 0);
        if obj.is_null() {
            return Err(PyErr::fetch(py));
        }
        Ok(obj)
    }
}

/// `tp_alloc`: a kept block of an exact listed type, else `PyType_GenericAlloc`.
unsafe extern "C" fn alloc(ty: *mut ffi::PyTypeObject, nitems: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    // SAFETY: CPython calls tp_alloc with the GIL held and a live type (see `pop`).
    unsafe {
        if nitems == 0 {
            if let Some(obj) = pop(ty) {
                return obj;
            }
        }
        ffi::PyType_GenericAlloc(ty, nitems)
    }
}

/// `tp_dealloc` of a type given a `Release` (see the module docs).
unsafe extern "C" fn dealloc(obj: *mut ffi::PyObject) {
    // SAFETY: CPython calls tp_dealloc with the GIL held, once, on an object with no references
    // left. The release function and the replaced tp_dealloc are copied out of the lists before
    // either runs, so no reference to the lists is live while Python code may run.
    unsafe {
        let ty = ffi::Py_TYPE(obj);
        if let Some((release, _)) = list_of(ty).and_then(|l| l.release) {
            let weaklist = (*ty).tp_weaklistoffset;
            if weaklist > 0 && !(*obj.byte_offset(weaklist).cast::<*mut ffi::PyObject>()).is_null() {
                ffi::PyObject_ClearWeakRefs(obj);
            }
            release.release(Python::assume_attached(), obj);
            free(obj.cast());
            ffi::Py_DECREF(ty.cast());
            return;
        }
        // An object of a subclass, which reaches here through `subtype_dealloc`: the replaced
        // tp_dealloc of the nearest listed base handles it, as it did before.
        let mut base = ty;
        while !base.is_null() {
            if let Some((_, original)) = list_of(base).and_then(|l| l.release) {
                if let Some(original) = original {
                    original(obj);
                }
                return;
            }
            base = (*base).tp_base;
        }
    }
}

/// `tp_free`: keeps the block of an object of an exact listed type while its list has room.
unsafe extern "C" fn free(obj: *mut c_void) {
    // SAFETY: CPython (PyO3's tp_dealloc) calls tp_free with the GIL held, on an object whose
    // contents are already released and whose type pointer is still set. Blocks that are not
    // kept go to PyObject_Free, the default tp_free of a non-GC type.
    unsafe {
        let obj = obj.cast::<ffi::PyObject>();
        if let Some(list) = list_of(ffi::Py_TYPE(obj)) {
            if list.len < CAPACITY {
                list.blocks[list.len] = obj;
                list.len += 1;
                return;
            }
        }
        ffi::PyObject_Free(obj.cast());
    }
}

/// Gives `T`'s type a free list, when its layout and slots allow (see the module docs);
/// otherwise leaves it as it is.
pub fn install<T: pyo3::PyTypeInfo>(py: Python<'_>) {
    let ty = T::type_object_raw(py);
    // SAFETY: the GIL is held; `ty` is a live heap type PyO3 made for `T`, whose slots are plain
    // fields that CPython reads on each allocation and deallocation. The lists are only touched
    // here and in `alloc`/`free`, which cannot run during this function.
    unsafe {
        // Both are libpython's exported functions, which have one address each.
        let generic_alloc: ffi::allocfunc = ffi::PyType_GenericAlloc;
        let default_free: ffi::freefunc = ffi::PyObject_Free;
        let plain = (*ty).tp_itemsize == 0
            && (*ty).tp_flags & (ffi::Py_TPFLAGS_HAVE_GC | PREHEADER_FLAGS) == 0
            && (*ty).tp_alloc.is_some_and(|f| std::ptr::fn_addr_eq(f, generic_alloc))
            && (*ty).tp_free.is_some_and(|f| std::ptr::fn_addr_eq(f, default_free));
        let Ok(size) = usize::try_from((*ty).tp_basicsize) else {
            return;
        };
        if !plain || list_of(ty).is_some() {
            return;
        }
        let Some(list) = (*LISTS.0.get()).iter_mut().find(|l| l.ty.is_null()) else {
            return;
        };
        list.ty = ty;
        list.size = size;
        (*ty).tp_alloc = Some(alloc);
        (*ty).tp_free = Some(free);
        static AT_EXIT: std::sync::Once = std::sync::Once::new();
        AT_EXIT.call_once(|| {
            ffi::Py_AtExit(Some(forget));
        });
    }
}

/// Gives `ty`, which `install` gave a free list, a `tp_dealloc` that frees its exact objects
/// with `release` (see the module docs). Returns whether it did.
///
/// # Safety
/// `release` must drop exactly the Rust value(s) PyO3 wrote into objects of `ty` (or that the
/// caller wrote after `take`), and nothing else.
pub(super) unsafe fn set_release(_py: Python<'_>, ty: *mut ffi::PyTypeObject, release: Release) -> bool {
    // SAFETY: the GIL is held; `ty` is a live heap type whose slots CPython reads on each
    // deallocation. The lists are only touched here and by functions that cannot run now.
    unsafe {
        let Some(list) = list_of(ty) else {
            return false;
        };
        if list.release.is_some() {
            return false;
        }
        list.release = Some((release, (*ty).tp_dealloc));
        (*ty).tp_dealloc = Some(dealloc);
        true
    }
}

/// At exit: the blocks are forgotten (the interpreter's allocator has released them).
extern "C" fn forget() {
    // SAFETY: Py_AtExit functions run after the interpreter is finalized: no Python code, and so
    // no `alloc` or `free`, runs any more.
    unsafe {
        for list in (*LISTS.0.get()).iter_mut() {
            list.len = 0;
        }
    }
}
