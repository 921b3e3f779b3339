//! Fork safety: `pthread_atfork` handlers that hold every zeropool lock
//! across `fork()`, so a child never inherits a lock taken by a thread
//! that does not exist in it (jemalloc and hardened_malloc do the same).
//!
//! Lock order, the same everywhere two of these locks are held together:
//! the pool table, then the C handle table, then each pool by id (open, or
//! closed while its shared part lives): its shards by index, then its
//! counter registry; then the live-region list, then each live region's
//! class locks and one-off list (a region outlives its pool while buffers
//! are out, and `zp_put` of such a buffer takes its class lock). No code
//! path takes one of these while holding a later one in this order the
//! other way round (the C handle table and the pool table are never held
//! together).
//!
//! - prepare: take them all, in order (waiting for operations in flight);
//! - parent: release them, in reverse order;
//! - child: the only thread left is the one that forked and holds them
//!   all; each lock is reset to its initial, unlocked state rather than
//!   unlocked, so no waiter bookkeeping of the parent's threads is touched.
//!
//! In the child, buffers that other threads of the parent held or cached
//! stay where they were: unreachable, never handed out again.
#![allow(unsafe_code)]
// Miri cannot run foreign functions, so the handlers are not registered
// there (`install_handlers`) and are dead code in that build only.
#![cfg_attr(miri, allow(dead_code))]

use std::mem;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::lock::Mutex;

use crate::lock::ForkLock;
use crate::shared::Shared;

/// What the pool layer gives the handlers (implemented for [`Above`] in
/// `pool.rs`): the open-pool table, whose lock comes first. A trait this
/// module defines, so that it need not import the layers above it.
pub(crate) trait PoolsAbove {
    /// Takes the open-pool table's lock and keeps it (the guard is
    /// forgotten), calling `then` once with the open pools, by id, while
    /// it holds it.
    fn hold_table(then: &mut dyn FnMut(&mut dyn Iterator<Item = Arc<Shared>>));
    /// The table's lock (to release or reset after `hold_table`).
    fn table_lock() -> &'static dyn ForkLock;
    /// The open pools now (for the test hook; allocates).
    fn open_now() -> Vec<Arc<Shared>>;
}

/// What the C layer gives the handlers (implemented for [`Above`] in
/// `ffi/pool.rs`): the handle table's lock, which comes second.
pub(crate) trait HandlesAbove {
    /// The C handle table's lock.
    fn handles_lock() -> &'static dyn ForkLock;
}

/// The one implementor of [`PoolsAbove`] and [`HandlesAbove`].
pub(crate) struct Above;

/// The pools whose locks are held between prepare and parent/child.
static HELD: Mutex<Vec<Arc<Shared>>> = Mutex::new(Vec::new());

/// Makes room in the fork handlers' list for `open` pools (called when a
/// pool is created, so the handlers never allocate inside fork()).
pub(crate) fn reserve_fork_room(open: usize) -> bool {
    let mut held = HELD.lock();
    let more = open.saturating_sub(held.len());
    held.try_reserve(more).is_ok()
}

/// Registers the handlers, once per process; false when the system refused
/// (`pthread_atfork` reports ENOMEM): the caller fails the pool's creation
/// (out of memory), and the next creation tries again, so no pool ever
/// exists without them.
#[must_use]
pub(crate) fn install_handlers() -> bool {
    static INSTALLED: AtomicBool = AtomicBool::new(false);
    static INSTALLING: Mutex<()> = Mutex::new(());
    if INSTALLED.load(Ordering::Acquire) {
        return true;
    }
    let _one_at_a_time = INSTALLING.lock();
    if INSTALLED.load(Ordering::Acquire) {
        return true;
    }
    // Miri cannot run foreign functions (and does not fork).
    #[cfg(not(miri))]
    // SAFETY: the handlers are `extern "C"` functions with no arguments
    // that never unwind (see `guarded`).
    let ok = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) } == 0;
    #[cfg(miri)]
    let ok = true;
    if ok {
        INSTALLED.store(true, Ordering::Release);
    }
    ok
}

/// Runs a handler; a panic would abort the process from inside fork(), so
/// it is caught (and the handler's remaining work skipped).
fn guarded(f: impl FnOnce()) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
}

fn global_locks() -> [&'static dyn ForkLock; 2] {
    [<Above as PoolsAbove>::table_lock(), <Above as HandlesAbove>::handles_lock()]
}

extern "C" fn prepare() {
    guarded(|| {
        // The open-pool table (held), then the C handle table, then each
        // open pool's locks, by id. Room for every open pool was reserved
        // when it was created, so this never allocates inside fork().
        <Above as PoolsAbove>::hold_table(&mut |open| {
            <Above as HandlesAbove>::handles_lock().hold();
            let mut held = HELD.lock();
            for shared in open {
                debug_assert!(held.len() < held.capacity(), "room reserved by reserve_fork_room");
                shared.locks().for_each(|l| l.hold());
                held.push(shared);
            }
        });
        // Every live region's locks, whether its pool is open or gone; the
        // list's lock keeps them alive until parent/child.
        let regions = crate::region::regions_lock().lock();
        regions.locks().for_each(|l| l.hold());
        mem::forget(regions); // held until parent/child
    });
}

/// Lets go of every lock `prepare` took, in reverse order, with `let_go`
/// (release in the parent, reset in the child).
fn let_go_all(let_go: unsafe fn(&dyn ForkLock)) {
    let regions = crate::region::regions_lock();
    // SAFETY: `prepare` holds the list's lock (its guard forgotten), so no
    // one else uses the list, and every region in it is alive.
    let listed = unsafe { &*regions.data_ptr() };
    // SAFETY: `prepare` took each of these on this thread.
    listed.locks().rev().for_each(|l| unsafe { let_go(l) });
    // SAFETY: as above.
    unsafe { let_go(regions) };
    let mut guard = HELD.lock();
    let held = &mut *guard;
    for shared in held.iter().rev() {
        // SAFETY: `prepare` took every one of these on this thread, the
        // only one that runs fork handlers for this fork.
        shared.locks().rev().for_each(|l| unsafe { let_go(l) });
    }
    // SAFETY: as above.
    global_locks().iter().rev().for_each(|l| unsafe { let_go(*l) });
    // Cleared in place: the room stays for the next fork.
    held.clear();
}

extern "C" fn parent() {
    guarded(|| {
        let_go_all(|l| {
            // SAFETY: `let_go_all` calls this only on locks that `prepare`
            // took on this thread.
            unsafe { l.release() }
        })
    });
}

extern "C" fn child() {
    guarded(|| {
        let_go_all(|l| {
            // SAFETY: we are the child's only thread, and `prepare` took
            // these locks on it before the fork.
            unsafe { l.reset() }
        })
    });
}

/// TEST-ONLY hook, not part of the API (hidden, may change without notice):
/// holds the `which`-th lock the fork handlers take while `f` runs, then
/// releases it. Index 0 is the pool table, 1 the C handle table, then
/// every lock of each pool whose shared part lives, pools by id
/// (`Shared::locks` order: shards, counter registry), then the live-region
/// list, then the region locks of those pools (class locks, one-off list). Returns false
/// (and does not call `f`) when `which` is past the last lock. Lets a test
/// fork while another thread is known to hold a given lock.
#[doc(hidden)]
pub fn __with_fork_lock_held_for_test(which: usize, f: impl FnOnce()) -> bool {
    let open: Vec<Arc<Shared>> = <Above as PoolsAbove>::open_now();
    let mut locks: Vec<&dyn ForkLock> = global_locks().to_vec();
    for shared in &open {
        locks.extend(shared.locks());
    }
    // The live regions (those of `open`'s pools stay alive: `open` holds
    // them; others may go meanwhile, so only theirs are offered).
    let regions = crate::region::regions_lock();
    locks.push(regions);
    for shared in &open {
        locks.extend(shared.region.locks());
    }
    let Some(lock) = locks.get(which) else { return false };
    lock.hold();
    // Released even if `f` panics.
    struct Release<'a>(&'a dyn ForkLock);
    impl Drop for Release<'_> {
        fn drop(&mut self) {
            // SAFETY: taken with `hold` on this thread just above.
            unsafe { self.0.release() };
        }
    }
    let _release = Release(*lock);
    f();
    true
}

/// TEST-ONLY hook, not part of the API (hidden, may change without notice):
/// holds the region lock that returning the live buffer `buf` takes (its
/// class's, or the one-off list's) while `f` runs, whether or not its pool
/// was freed. False (and `f` not called) when `buf` is not a buffer. Lets a
/// test fork while a `zp_put` of a freed pool's buffer is known to hold it.
#[doc(hidden)]
pub fn __with_buffer_lock_held_for_test(buf: *const u8, f: impl FnOnce()) -> bool {
    let Some((region, class, _)) = crate::region::Region::owner_of(buf as usize) else { return false };
    // SAFETY: a buffer out keeps its region alive (the caller's promise:
    // `buf` is a live buffer, not returned while `f` runs).
    let region = unsafe { region.as_ref() };
    let Some(lock) = region.locks().nth(class).or_else(|| region.locks().last()) else { return false };
    lock.hold();
    struct Release<'a>(&'a dyn ForkLock);
    impl Drop for Release<'_> {
        fn drop(&mut self) {
            // SAFETY: taken with `hold` on this thread just above.
            unsafe { self.0.release() };
        }
    }
    let _release = Release(lock);
    f();
    true
}
