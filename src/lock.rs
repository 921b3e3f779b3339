//! The locks the fork handlers hold across `fork()` (`fork.rs`): a trait
//! every lower layer's lock implements, so that a region or a shard can
//! list its locks without knowing the fork handlers above it.
#![allow(unsafe_code)]

use std::mem;

use parking_lot::lock_api::{GuardNoSend, RawMutex as _};
use parking_lot::Mutex;

/// A lock the fork handlers hold across `fork()`.
pub(crate) trait ForkLock {
    /// Takes the lock and keeps it (the guard is forgotten).
    fn hold(&self);
    /// Releases a lock taken with `hold`.
    ///
    /// # Safety
    /// The calling thread must have taken it with `hold`.
    unsafe fn release(&self);
    /// Puts the lock back in its initial, unlocked state.
    ///
    /// # Safety
    /// Only in a fork child, on a lock this thread took with `hold` before
    /// forking: no other thread exists that could use it.
    unsafe fn reset(&self);
}

impl<T> ForkLock for Mutex<T> {
    fn hold(&self) {
        mem::forget(self.lock());
    }

    unsafe fn release(&self) {
        // SAFETY: the caller took it with `hold`, whose guard was forgotten;
        // parking_lot's raw mutex keeps no state in its guard token.
        unsafe { self.force_unlock(GuardNoSend::new()) };
    }

    unsafe fn reset(&self) {
        // SAFETY: `raw` only exposes the lock; we do not use it to unlock
        // a lock someone else holds (the caller's promise).
        let raw = unsafe { self.raw() } as *const parking_lot::RawMutex as *mut parking_lot::RawMutex;
        // SAFETY: RawMutex is a single atomic byte (all interior
        // mutability), and the caller guarantees no other thread exists to
        // observe the write. INIT is its unlocked state with no waiters.
        unsafe { raw.write(parking_lot::RawMutex::INIT) };
    }
}

