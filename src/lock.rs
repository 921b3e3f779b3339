//! The crate's lock: a mutex that waits on a futex and needs nothing else.
//!
//! Why our own: a lock is taken on the pool's rare paths (a thread cache
//! miss, eviction, trim, fork), and a rare path must not abort under
//! memory pressure (API.md, guarantee 7). parking_lot's mutex, the first
//! time a thread has to wait, registers a thread-local record (glibc's
//! `__cxa_thread_atexit_impl`, which calls `__libc_fatal` when its `calloc`
//! fails) and may grow a global table with an allocation that aborts on
//! failure. This one is a single 32-bit word and two system calls: no
//! allocation, no thread-local state, so waiting works with no memory
//! left (`ffi-tests/rare_oom.c` makes threads fight over a shard lock while
//! `calloc` fails for them).
//!
//! Invariants:
//! - The word is `UNLOCKED`, `LOCKED` (held, nobody asleep on it) or
//!   `CONTENDED` (held, and a thread may be asleep in `futex_wait`).
//! - Only the holder moves the word away from `LOCKED`/`CONTENDED` to
//!   `UNLOCKED`, and it wakes one sleeper when it was `CONTENDED`.
//! - A thread about to sleep first makes the word `CONTENDED`, so an unlock
//!   between that swap and its `futex_wait` is seen by the kernel's
//!   compare (the wait returns at once) and no wake-up is lost.
//!
//! It is also the lock the fork handlers hold across `fork()` (`fork.rs`):
//! [`ForkLock`], which every lower layer's lock implements, so that a
//! region or a shard can list its locks without knowing the fork handlers
//! above it.
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, Ordering};

const UNLOCKED: u32 = 0;
const LOCKED: u32 = 1;
const CONTENDED: u32 = 2;

/// A mutual-exclusion lock around a `T` (the subset of parking_lot's
/// `Mutex` the crate uses: `const` construction, `lock`, `try_lock`).
pub(crate) struct Mutex<T> {
    word: AtomicU32,
    value: UnsafeCell<T>,
}

// SAFETY: the lock hands out access to `value` to one thread at a time
// (the word's invariants), so sharing the lock shares `T` by moving it
// between threads: `T: Send` is what that needs, as for std's Mutex.
unsafe impl<T: Send> Sync for Mutex<T> {}
// SAFETY: owning the lock owns the `T`.
unsafe impl<T: Send> Send for Mutex<T> {}

impl<T> Mutex<T> {
    pub(crate) const fn new(value: T) -> Mutex<T> {
        Mutex { word: AtomicU32::new(UNLOCKED), value: UnsafeCell::new(value) }
    }

    /// Takes the lock, waiting as long as it takes.
    #[inline]
    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        if self.word.compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed).is_err() {
            self.lock_contended();
        }
        MutexGuard { lock: self, _not_send: PhantomData }
    }

    /// Takes the lock if nobody holds it.
    #[inline]
    pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        self.word
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| MutexGuard { lock: self, _not_send: PhantomData })
    }

    /// The value's address, for a caller that holds the lock without a
    /// guard (the fork handlers, through [`ForkLock::hold`]); dereferencing
    /// it is only sound while the lock is held that way.
    pub(crate) fn data_ptr(&self) -> *mut T {
        self.value.get()
    }

    /// The slow half of [`lock`](Self::lock): spin a little (the holder is
    /// usually about to let go), then sleep on the word.
    #[cold]
    fn lock_contended(&self) {
        for _ in 0..SPINS {
            if self.word.load(Ordering::Relaxed) == UNLOCKED
                && self.word.compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed).is_ok()
            {
                return;
            }
            std::hint::spin_loop();
        }
        // From here the word says CONTENDED while we hold it too: one
        // needless wake-up at our unlock at worst, never a lost one.
        while self.word.swap(CONTENDED, Ordering::Acquire) != UNLOCKED {
            futex_wait(&self.word, CONTENDED);
        }
        debug_assert_ne!(self.word.load(Ordering::Relaxed), UNLOCKED);
    }

    /// Lets go of the lock held by the caller.
    #[inline]
    fn unlock(&self) {
        let was = self.word.swap(UNLOCKED, Ordering::Release);
        debug_assert!(was == LOCKED || was == CONTENDED, "unlocking a lock nobody holds");
        if was == CONTENDED {
            futex_wake_one(&self.word);
        }
    }
}

impl<T: Default> Default for Mutex<T> {
    fn default() -> Mutex<T> {
        Mutex::new(T::default())
    }
}

impl<T> std::fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The value is not shown: reading it would need the lock, and a
        // Debug print must not wait (or deadlock on a lock its caller holds).
        let held = self.word.load(Ordering::Relaxed) != UNLOCKED;
        f.debug_struct("Mutex").field("locked", &held).finish_non_exhaustive()
    }
}

/// Spins before sleeping: about the time a short critical section takes.
const SPINS: u32 = 100;

/// Access to the value behind a held [`Mutex`]; lets go when dropped.
pub(crate) struct MutexGuard<'a, T> {
    lock: &'a Mutex<T>,
    /// Released by the thread that took it (a futex lock could be released
    /// elsewhere, but the crate never needs that, and fork's handlers rely
    /// on the holder being the thread that forks).
    _not_send: PhantomData<*const ()>,
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while the lock is held by this
        // thread, so no one else accesses the value.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes this the only
        // reference through the guard.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for MutexGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.lock.unlock();
    }
}

/// Sleeps while `word` holds `expected` (or until woken; spurious returns
/// are fine, the caller loops).
fn futex_wait(word: &AtomicU32, expected: u32) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    // SAFETY: FUTEX_WAIT reads the 32-bit word at a valid, aligned address
    // (an `AtomicU32` we borrow) and has no other effect; a NULL timeout
    // waits without limit. EINTR and EAGAIN return, and the caller loops.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            std::ptr::null::<libc::timespec>(),
        );
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = (word, expected);
        std::thread::yield_now();
    }
}

/// Wakes one thread sleeping on `word`, if any.
fn futex_wake_one(word: &AtomicU32) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    // SAFETY: FUTEX_WAKE only names the address; it reads nothing.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, 1);
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = word;
}

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
        std::mem::forget(self.lock());
    }

    unsafe fn release(&self) {
        // The caller took it with `hold`, whose guard was forgotten.
        self.unlock();
    }

    unsafe fn reset(&self) {
        // No other thread exists in the child (the caller's promise): a
        // thread that slept on the word in the parent is not here to wake.
        self.word.store(UNLOCKED, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn excludes_and_hands_over() {
        // Four threads add to an unsynchronized counter under the lock:
        // any lost update would show in the total.
        let m = Arc::new(Mutex::new(0u64));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let m = Arc::clone(&m);
                std::thread::spawn(move || {
                    for _ in 0..if cfg!(miri) { 50 } else { 100_000 } {
                        let mut g = m.lock();
                        let v = *g;
                        std::hint::black_box(&mut *g);
                        *g = v + 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*m.lock(), 4 * if cfg!(miri) { 50 } else { 100_000 });
        assert_eq!(m.word.load(Ordering::Relaxed), UNLOCKED);
    }

    #[test]
    fn try_lock_fails_while_held_and_a_sleeper_is_woken() {
        let m = Arc::new(Mutex::new(()));
        let g = m.lock();
        assert!(m.try_lock().is_none());
        let m2 = Arc::clone(&m);
        let waiter = std::thread::spawn(move || drop(m2.lock()));
        // Give the waiter time to reach the futex (not required for
        // correctness: it either sleeps or spins, and must get the lock).
        std::thread::sleep(std::time::Duration::from_millis(20));
        drop(g);
        waiter.join().unwrap();
        assert!(m.try_lock().is_some());
    }

    #[test]
    fn fork_lock_hold_release_reset() {
        let m = Mutex::new(1);
        m.hold();
        assert!(m.try_lock().is_none());
        // SAFETY: held with `hold` just above, by this thread.
        unsafe { m.release() };
        assert!(m.try_lock().is_some());
        m.hold();
        // SAFETY: as if in a fork child: no other thread uses `m`.
        unsafe { m.reset() };
        assert_eq!(*m.lock(), 1);
    }
}
