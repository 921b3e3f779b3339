//! `zp_local`: a thread's own handle on a pool, like a mimalloc heap or a
//! jemalloc explicit tcache. It holds a pool cache directly, so its calls
//! skip the thread-local lookup (every `dlopen`ed library pays
//! `__tls_get_addr` for one).
//!
//! Invariants:
//! - The cache is touched only by the thread that made the handle (checked
//!   against the thread pointer on every call). Any other thread is sent
//!   through the pool's ordinary path (its own thread cache), so a handle
//!   used from the wrong thread stays correct, only slower.
//! - The handle keeps the pool's shared part alive (as a thread cache does),
//!   not the pool nor its memory: after `zp_pool_free`, gets fail and puts
//!   still take the pool's buffers back, and the pool's memory goes once
//!   the last one is back, handle or not (issue 26).
//! - Other threads than the owner touch only the handle's fixed fields,
//!   never the cache (no `&Local` while the owner may hold `&mut Local`).
//! - Every slow path of the owner syncs the thread's table after its own
//!   cache (`thread_cache::sync`), so the table is never behind a handle of
//!   its thread, whose fast path does not look at the table.

use std::cell::UnsafeCell;
use std::ffi::c_void;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use super::boundary::{boundary, export, get_boundary, handle, set_last_error, try_box, try_ref};
use super::buffer::{
    finish, hand_out_or_fail, hand_out_popped, keep_elsewhere, keep_slow, keep_with, take_back,
};
use super::pool::zp_pool;
use super::status::zp_status::{self, *};
use crate::buffer::RawBuf;
use crate::os::thread_pointer;
use crate::pool::{try_get_shared, Local};
use crate::shared::Shared;
use crate::thread_cache;

/// A thread's own handle on a pool. Opaque.
// Other threads than the owner read only the fields outside `local` (fixed
// at creation): they never make a reference to the cache, which the owner
// may hold `&mut` at that instant.
pub struct zp_local {
    /// The thread that made it (its thread pointer).
    owner: usize,
    /// The pool handle it was made for: its buffers' owner token.
    pool: *const zp_pool,
    /// The pool's shared part, for other threads than the owner.
    shared: Arc<Shared>,
    /// LISTED in the owner thread's table, UNLISTED, or ORPHANED (freed
    /// from another thread while listed: the owner frees it).
    state: AtomicU8,
    /// Used by the owner thread only (see the module invariants).
    local: UnsafeCell<Local>,
}

const LISTED: u8 = 0;
const UNLISTED: u8 = 1;
const ORPHANED: u8 = 2;

/// The owner thread's table syncs a listed handle's cache with the pools
/// (`tls::LocalRef::sync`): false when it was orphaned (then freed here).
///
/// # Safety
/// `p` is a listed `zp_local` of the calling thread, no call of which is
/// using its cache.
unsafe fn sync_listed(p: NonNull<()>) -> bool {
    let l = p.cast::<zp_local>();
    // SAFETY: listed handles are alive (a free from another thread only
    // marks them ORPHANED).
    if unsafe { l.as_ref() }.state.load(Ordering::Acquire) == ORPHANED {
        // SAFETY: orphaned: nobody else uses or frees it any more.
        drop(unsafe { Box::from_raw(l.as_ptr()) });
        return false;
    }
    // SAFETY: the owner thread, with no call using the cache (the caller's
    // promise): the only reference to it.
    unsafe { &mut *l.as_ref().local.get() }.sync();
    true
}

/// The owner thread exits: the handle is no longer listed (or, orphaned,
/// freed now).
///
/// # Safety
/// As [`sync_listed`].
unsafe fn owner_exits(p: NonNull<()>) {
    let l = p.cast::<zp_local>();
    // SAFETY: as in `sync_listed`.
    let state = &unsafe { l.as_ref() }.state;
    if state.compare_exchange(LISTED, UNLISTED, Ordering::AcqRel, Ordering::Acquire).is_err() {
        // SAFETY: orphaned: ours to free.
        drop(unsafe { Box::from_raw(l.as_ptr()) });
    }
}

impl zp_local {
    /// The cache, if the calling thread owns the handle.
    #[inline(always)]
    #[allow(clippy::mut_from_ref)] // exclusive by the owner-thread check
    fn mine(&self) -> Option<&mut Local> {
        if thread_pointer() == self.owner {
            // SAFETY: only the owner thread gets here, and it makes one call
            // at a time (C code cannot re-enter a zp_* call on one thread
            // except from a signal handler, which the header forbids), so
            // this is the only reference to the cache: other threads never
            // touch `local` (see the type's comment).
            Some(unsafe { &mut *self.local.get() })
        } else {
            None
        }
    }
}

/// Makes a handle on `pool` for the calling thread.
///
/// @param pool  a live pool.
/// @return the handle, owned by the caller until `zp_local_free`; NULL on
///         failure, and `zp_last_error()` says why (ZP_ERR_NULL_POINTER,
///         ZP_ERR_OUT_OF_MEMORY).
///
/// Thread safety: thread safe. The handle belongs to the calling thread:
/// used from another thread it stays correct, at the cost of the ordinary
/// path (`zp_get`/`zp_put`).
/// cbindgen:prefix=ZP_NODISCARD
#[no_mangle]
pub extern "C" fn zp_local_new(pool: *mut zp_pool) -> *mut zp_local {
    export!(ptr::null_mut(), {
        let handle = try_ref!(pool);
        let made = Local::try_new(&handle.pool).and_then(|cache| {
            try_box(zp_local {
                owner: thread_pointer(),
                pool,
                shared: cache.shared().clone(),
                state: AtomicU8::new(UNLISTED),
                local: UnsafeCell::new(cache),
            })
        });
        // After the cache read the epoch: the thread's table is never
        // behind a handle of its thread (see `get_slow`).
        thread_cache::sync();
        match made {
            Some(b) => {
                let raw = Box::into_raw(b);
                // SAFETY: Box::into_raw is never null.
                let ptr = unsafe { NonNull::new_unchecked(raw.cast::<()>()) };
                let listed = crate::tls::with(|t| {
                    t.add_local(crate::tls::LocalRef { ptr, sync: sync_listed, exit: owner_exits })
                });
                if listed {
                    // SAFETY: just made, not yet shared.
                    unsafe { &*raw }.state.store(LISTED, Ordering::Release);
                }
                raw
            }
            None => {
                set_last_error(ZP_ERR_OUT_OF_MEMORY);
                ptr::null_mut()
            }
        }
    })
}

/// Frees a handle: its idle buffers go back to the pool (or are released,
/// scrubbed, if the pool was freed). NULL is a no-op. Called from another
/// thread than the one that made the handle (while that thread lives),
/// the handle's idle buffers go back at that thread's next zeropool call
/// or its exit: its cache belongs to it.
///
/// @param local  a handle from `zp_local_new`, or NULL; not used afterwards.
///
/// Thread safety: may come before or after `zp_pool_free`, from any
/// thread, but not while another call uses the same handle.
#[no_mangle]
pub extern "C" fn zp_local_free(local: *mut zp_local) {
    export!((), {
        thread_cache::sync();
        let Some(ptr) = NonNull::new(local) else { return };
        // SAFETY: the header's contract: from zp_local_new, freed once, no
        // call using it in flight.
        let l = unsafe { ptr.as_ref() };
        if thread_pointer() == l.owner {
            // Listed in this thread's table, if anywhere: taken off first.
            crate::tls::with(|t| t.remove_local(ptr.cast()));
        } else if l.state.compare_exchange(LISTED, ORPHANED, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            // Listed in its owner's table, which may be syncing its cache
            // at this instant: the owner frees it at its next call (the
            // epoch moves, so that call sweeps) or exit.
            crate::epoch::pool_changed();
            return;
        }
        // SAFETY: as above, and no table lists it any more.
        drop(unsafe { Box::from_raw(ptr.as_ptr()) });
    })
}

/// Gets a buffer through the handle: as `zp_get` on its pool, without the
/// thread-local lookup.
///
/// @param local  a handle from `zp_local_new`.
/// @param size   the bytes needed (0 gives a valid buffer).
/// @return as `zp_get`: a buffer of `size` usable bytes, or NULL with
///         `zp_last_error()` set (ZP_ERR_NULL_POINTER, ZP_ERR_TOO_LARGE,
///         ZP_ERR_OUT_OF_MEMORY, or ZP_ERR_INVALID_ARGUMENT once the pool
///         was freed).
///
/// Thread safety: meant for the handle's thread; from another thread it
/// works as `zp_get` does.
/// cbindgen:prefix=ZP_NODISCARD
/// cbindgen:postfix=ZP_MALLOC ZP_ALLOC_SIZE(2)
#[no_mangle]
pub extern "C" fn zp_local_get(local: *mut zp_local, size: usize) -> *mut c_void {
    export!(get, {
        let l = try_ref!(local.cast_const());
        match l.mine().and_then(|cache| cache.pop_cached(size)) {
            Some(popped) => hand_out_popped(
                popped,
                size,
                #[inline(always)]
                || {
                    if let Some(cache) = l.mine() {
                        cache.count_dirty();
                    }
                },
            ),
            None => get_slow(local, size),
        }
    })
}

/// `zp_local_get` past the handle's stacks: a miss, a pool changed, another
/// thread's get, or any get once the pool is freed. Out of line and
/// `extern "C"` (it cannot unwind: its own boundary catches), so
/// `zp_local_get` reaches it by a tail jump and its fast path needs no
/// stack frame.
#[cold]
#[inline(never)]
extern "C" fn get_slow(local: *mut zp_local, size: usize) -> *mut c_void {
    get_boundary(|| {
        // SAFETY: zp_local_get's caller's contract: a live handle (checked
        // non-NULL).
        let Some(l) = (unsafe { handle(local.cast_const()) }) else { return ptr::null_mut() };
        let got = match l.mine() {
            Some(cache) if !cache.is_closed() => Some(cache.try_get(size)),
            _ if l.shared.is_closed() => None,
            _ => Some(try_get_shared(&l.shared, size)),
        };
        // Any call of this thread syncs its table's caches (guarantee 8),
        // after the handle's cache synced: the table is then never behind
        // a handle, whose fast path does not look at the table.
        thread_cache::sync();
        match got {
            Some(got) => hand_out_or_fail(got),
            None => {
                set_last_error(ZP_ERR_INVALID_ARGUMENT);
                ptr::null_mut()
            }
        }
    })
}

/// Returns a buffer of the handle's pool through the handle: the same
/// checks and codes as `zp_put`. Any buffer of the pool is accepted,
/// whichever call or thread got it.
///
/// @param local  a handle from `zp_local_new` (its pool may have been freed).
/// @param buf    a buffer of the handle's pool; not used afterwards.
/// @return as `zp_put`.
///
/// Thread safety: meant for the handle's thread; from another thread it
/// works as `zp_put` does.
/// cbindgen:prefix=ZP_NODISCARD
#[no_mangle]
pub extern "C" fn zp_local_put(local: *mut zp_local, buf: *mut c_void) -> zp_status {
    export!(ZP_ERR_INTERNAL, {
        let l = try_ref!(local.cast_const());
        let Some(start) = NonNull::new(buf.cast::<u8>()) else {
            return ZP_ERR_NULL_POINTER;
        };
        take_back(
            l.pool,
            start,
            #[inline(always)]
            |claimed, slot| {
                keep_with(
                    claimed,
                    slot,
                    #[inline(always)]
                    |id, raw, len, hint| match l.mine() {
                        Some(cache) if id == cache.id() => match cache.try_push(raw, len, hint) {
                            Ok(retiring) => finish(retiring),
                            Err(raw) => put_slow(local, id, raw, len),
                        },
                        // Another thread: the ordinary path, out of line.
                        _ => keep_elsewhere(id, raw, len, hint),
                    },
                )
            },
        )
    })
}

/// A claimed buffer of pool `id` the handle's stacks declined: the handle's
/// full path. Out of line and `extern "C"`, as `keep_slow` (see there).
#[cold]
#[inline(never)]
#[allow(improper_ctypes_definitions)] // not called from C
extern "C" fn put_slow(local: *mut zp_local, id: u64, raw: RawBuf, len: usize) -> zp_status {
    boundary(ZP_ERR_INTERNAL, move || {
        // SAFETY: zp_local_put's caller's contract: a live handle (checked
        // non-NULL).
        match unsafe { handle(local.cast_const()) }.and_then(zp_local::mine) {
            Some(cache) => {
                cache.put(raw, len);
                // As in `get_slow`.
                thread_cache::sync();
                ZP_OK
            }
            None => keep_slow(id, raw, len),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::pool::{zp_pool_free, zp_pool_new};

    /// The owner works its handle (holding `&mut Local` on the fast path)
    /// while another thread gets and puts through the same handle. The
    /// other thread must never make a reference to the cache: under Miri
    /// (`cargo miri test --lib`), the old code's `&Local` from the other
    /// thread is reported, a race with the owner's writes (issue 26).
    #[test]
    fn another_thread_never_touches_the_owners_cache() {
        let n = if cfg!(miri) { 20 } else { 20_000 };
        let pool = zp_pool_new();
        assert!(!pool.is_null());
        let local = zp_local_new(pool);
        assert!(!local.is_null());
        struct Handle(*mut zp_local);
        // SAFETY: a zp_local may be used from any thread (the point of the test).
        unsafe impl Send for Handle {}
        let h = Handle(local);
        let other = std::thread::spawn(move || {
            let h = h;
            let l = h.0;
            for i in 0..n {
                let b = zp_local_get(l, 4096 + i % 3 * 4096);
                assert!(!b.is_null());
                assert_eq!(zp_local_put(l, b), ZP_OK);
            }
        });
        for i in 0..n {
            let b = zp_local_get(local, 4096 + i % 5 * 4096);
            assert!(!b.is_null());
            assert_eq!(zp_local_put(local, b), ZP_OK);
        }
        other.join().unwrap();
        zp_local_free(local);
        zp_pool_free(pool);
    }
}
