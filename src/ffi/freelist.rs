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

struct List {
    ty: *mut ffi::PyTypeObject,
    size: usize,
    len: usize,
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

/// `tp_alloc`: a kept block of an exact listed type, else `PyType_GenericAlloc`.
unsafe extern "C" fn alloc(ty: *mut ffi::PyTypeObject, nitems: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    // SAFETY: CPython calls tp_alloc with the GIL held and a live type. A kept block is one that
    // `free` took from an object of exactly `ty` (so `size` bytes, from PyObject_Malloc, with no
    // GC header); zeroing it and PyObject_Init make it what PyType_GenericAlloc returns for a
    // non-GC type (type set and, for a heap type, referenced; one reference).
    unsafe {
        if nitems == 0 {
            if let Some(list) = list_of(ty) {
                if list.len > 0 {
                    list.len -= 1;
                    let obj = list.blocks[list.len];
                    std::ptr::write_bytes(obj.cast::<u8>(), 0, list.size);
                    return ffi::PyObject_Init(obj, ty);
                }
            }
        }
        ffi::PyType_GenericAlloc(ty, nitems)
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
