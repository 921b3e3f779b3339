//! The panic boundary, handle casts, and the per-thread last error.

use std::cell::Cell;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::status::zp_status;

/// Runs `f`; a panic inside becomes `on_panic` instead of unwinding into C.
#[inline(always)]
pub(super) fn boundary<T>(on_panic: T, f: impl FnOnce() -> T) -> T {
    // AssertUnwindSafe: after a panic nothing observes the closure's state;
    // the pool's own state stays consistent (see BufferPool's UnwindSafe).
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(on_panic)
}

/// [`boundary`] for the gets: a panic becomes NULL with ZP_ERR_INTERNAL.
/// The closure returns one word: a wider result travels through memory in
/// pieces, which stalls store forwarding on the fast path.
#[inline(always)]
pub(super) fn get_boundary(f: impl FnOnce() -> *mut c_void) -> *mut c_void {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        set_last_error(zp_status::ZP_ERR_INTERNAL);
        std::ptr::null_mut()
    })
}

/// Borrows a handle that C passed in.
///
/// # Safety
/// `p` must be NULL or a live handle from this library's constructor, not
/// freed, with no `&mut` to it alive (the header's contract).
pub(super) unsafe fn handle<'a, T>(p: *const T) -> Option<&'a T> {
    // SAFETY: guaranteed by the caller.
    unsafe { p.as_ref() }
}

/// Borrows a handle mutably.
///
/// # Safety
/// As [`handle`], and no other reference to it may be alive (the header
/// says config handles are not thread safe).
pub(super) unsafe fn handle_mut<'a, T>(p: *mut T) -> Option<&'a mut T> {
    // SAFETY: guaranteed by the caller.
    unsafe { p.as_mut() }
}

/// Moves `value` to the heap, or None when the allocator refuses (rather
/// than aborting as `Box::new` would).
pub(super) fn try_box<T>(value: T) -> Option<Box<T>> {
    crate::os::try_box(value).ok()
}

thread_local! {
    static LAST_ERROR: Cell<zp_status> = const { Cell::new(zp_status::ZP_OK) };
}

/// Records why this thread's `zp_get` failed (only failures are recorded,
/// like errno, so the fast path never touches it).
pub(super) fn set_last_error(status: zp_status) {
    let _ = LAST_ERROR.try_with(|e| e.set(status));
}

pub(super) fn last_error() -> zp_status {
    LAST_ERROR.try_with(Cell::get).unwrap_or(zp_status::ZP_ERR_INTERNAL)
}
