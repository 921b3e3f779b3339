//! The panic boundary, handle casts, and the per-thread last error.
//!
//! Every `zp_*` function's body is one [`export!`] (`tests/architecture.rs`
//! checks it): the macro owns the panic boundary, so a panic anywhere
//! below becomes the export's stated value (`ZP_ERR_INTERNAL`, NULL with
//! `ZP_ERR_INTERNAL` in `zp_last_error` for the gets, or nothing) instead
//! of unwinding into C. Inside it, [`try_ref!`], [`try_mut!`] and
//! [`non_null!`] check pointer arguments; what a NULL returns follows from
//! the export's return type ([`OnNull`]): `ZP_ERR_NULL_POINTER`, NULL with
//! `ZP_ERR_NULL_POINTER` in `zp_last_error`, or nothing (the frees).
//! The exports stay ordinary `#[no_mangle] extern "C" fn`s in the source,
//! so that cbindgen, which does not expand macros, writes the header from
//! them.

use std::cell::Cell;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::status::zp_status;

/// The body of a C export: `export!(ON_PANIC, { body })` runs the body
/// inside [`boundary`], `export!(get, { body })` inside [`get_boundary`]
/// (the gets: one-word result, NULL and `ZP_ERR_INTERNAL` on a panic).
/// Both are `#[inline(always)]`: the fast paths compile as if written out.
macro_rules! export {
    (get, $body:block) => {
        $crate::ffi::boundary::get_boundary(|| $body)
    };
    ($on_panic:expr, $body:block) => {
        $crate::ffi::boundary::boundary($on_panic, || $body)
    };
}
pub(super) use export;

/// Borrows a handle argument, or returns [`OnNull::on_null`] from the
/// export when it is NULL.
macro_rules! try_ref {
    ($p:expr) => {
        // SAFETY: the header's contract for every handle argument: NULL or
        // a live handle from this library's constructor, not freed, and not
        // in use mutably.
        match unsafe { $crate::ffi::boundary::handle($p) } {
            Some(h) => h,
            None => return $crate::ffi::boundary::OnNull::on_null(),
        }
    };
}
pub(super) use try_ref;

/// Borrows a handle argument mutably (a `zp_config`, which is not thread
/// safe), or returns [`OnNull::on_null`] from the export when it is NULL.
macro_rules! try_mut {
    ($p:expr) => {
        // SAFETY: the header's contract: NULL or a live configuration used
        // by one thread at a time.
        match unsafe { $crate::ffi::boundary::handle_mut($p) } {
            Some(h) => h,
            None => return $crate::ffi::boundary::OnNull::on_null(),
        }
    };
}
pub(super) use try_mut;

/// Returns [`OnNull::on_null`] from the export when a pointer argument
/// that is not borrowed here (a buffer, a pool that may be freed, an
/// output) is NULL.
macro_rules! non_null {
    ($p:expr) => {
        if $p.is_null() {
            return $crate::ffi::boundary::OnNull::on_null();
        }
    };
}
pub(super) use non_null;

/// What an export returns for a NULL argument, by its return type.
pub(super) trait OnNull {
    fn on_null() -> Self;
}

impl OnNull for zp_status {
    #[inline(always)]
    fn on_null() -> zp_status {
        zp_status::ZP_ERR_NULL_POINTER
    }
}

impl<T> OnNull for *mut T {
    /// NULL, with the reason where `zp_last_error` reports it.
    #[inline(always)]
    fn on_null() -> *mut T {
        set_last_error(zp_status::ZP_ERR_NULL_POINTER);
        std::ptr::null_mut()
    }
}

impl OnNull for () {
    #[inline(always)]
    fn on_null() {}
}

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
