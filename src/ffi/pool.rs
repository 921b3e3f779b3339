//! `zp_pool`: the pool handle.

use std::mem::ManuallyDrop;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use crate::lock::Mutex;

use super::boundary::{export, non_null, try_box, try_ref};
use super::config::zp_config;
use super::status::zp_status::{self, *};
use crate::config::Builder;
use crate::{BufferPool, Stats};

/// An opaque, thread-safe pool. Create with `zp_pool_new` or
/// `zp_pool_new_with_config`, free with `zp_pool_free`.
pub struct zp_pool {
    /// Dropped by `zp_pool_free`, which leaves the handle's memory to the
    /// pool's: the handle's address is its buffers' owner token, so it is
    /// not freed (and cannot be reused by a new pool) until the last
    /// buffer is back and the pool's memory goes (issue 26).
    pub(super) pool: ManuallyDrop<BufferPool>,
}

/// Frees a handle whose pool was dropped (the region's `keepalive`).
///
/// # Safety
/// `p` must be a `zp_pool` box from `new_handle`, its pool dropped, not
/// used afterwards.
unsafe fn free_handle(p: *mut ()) {
    // SAFETY: the caller's promise; `pool` is ManuallyDrop: not dropped again.
    drop(unsafe { Box::from_raw(p.cast::<zp_pool>()) });
}

/// Live handles by address, to their pool ids: lets a rejected `zp_put`
/// be counted against the pool it named without dereferencing a pointer
/// that may already be freed.
static HANDLES: Mutex<Handles> = Mutex::new(Handles(Vec::new()));

/// (handle address, pool id), sorted by address; growth is fallible, so
/// creating a pool never aborts.
pub(crate) struct Handles(Vec<(usize, u64)>);

impl Handles {
    fn find(&self, addr: usize) -> Result<usize, usize> {
        self.0.binary_search_by_key(&addr, |(a, _)| *a)
    }

    fn get(&self, addr: usize) -> Option<u64> {
        self.find(addr).ok().map(|i| self.0[i].1)
    }

    fn try_insert(&mut self, addr: usize, id: u64) -> Result<(), zp_status> {
        let hook = FAIL_INSERT.swap(ptr::null_mut(), Ordering::Relaxed);
        if !hook.is_null() {
            // SAFETY: only `__fail_next_handle_insert_for_test` stores here,
            // and it stores a `fn()`.
            let hook = unsafe { std::mem::transmute::<*mut (), fn()>(hook) };
            hook();
            return Err(ZP_ERR_OUT_OF_MEMORY);
        }
        self.0.try_reserve(1).map_err(|_| ZP_ERR_OUT_OF_MEMORY)?;
        match self.find(addr) {
            Ok(i) => self.0[i].1 = id,
            Err(at) => self.0.insert(at, (addr, id)),
        }
        Ok(())
    }

    fn remove(&mut self, addr: usize) {
        if let Ok(i) = self.find(addr) {
            self.0.remove(i);
        }
    }
}

/// A `fn()` to run (then fail) in the next handle insertion; null: none.
static FAIL_INSERT: AtomicPtr<()> = AtomicPtr::new(ptr::null_mut());

/// TEST-ONLY hook, not part of the API (hidden, may change without notice):
/// the next pool creation through the C API fails as if the handle table
/// could not grow (out of memory), after running `while_held` with the
/// table's lock held. Lets a test fork on that error path.
#[doc(hidden)]
pub fn __fail_next_handle_insert_for_test(while_held: fn()) {
    FAIL_INSERT.store(while_held as *mut (), Ordering::Relaxed);
}

/// Counts a rejected `zp_put` against the pool it named, if that is live.
pub(super) fn count_rejected(named: *const zp_pool) {
    // The id is copied out first: HANDLES is never held while taking
    // another lock (see fork.rs for the lock order).
    let id = HANDLES.lock().get(named as usize);
    if let Some(id) = id {
        crate::pool::count_rejected(id, false);
    }
    // Still a call of this thread: its caches sync (guarantee 8).
    crate::thread_cache::sync();
}

/// The handle table's lock, for the fork handlers (the hook `fork.rs`
/// defines).
impl crate::fork::HandlesAbove for crate::fork::Above {
    fn handles_lock() -> &'static dyn crate::lock::ForkLock {
        &HANDLES
    }
}

fn new_handle(builder: Builder) -> Result<*mut zp_pool, zp_status> {
    crate::thread_cache::sync();
    let pool = builder.with_canary().build().map_err(|e| zp_status::from(&e))?;
    let id = pool.id();
    let raw = Box::into_raw(try_box(zp_pool { pool: ManuallyDrop::new(pool) }).ok_or(ZP_ERR_OUT_OF_MEMORY)?);
    // `zp_put` tells this pool's buffers by the handle's address.
    // SAFETY: just made, not yet shared.
    unsafe { &*raw }.pool.set_owner_token(raw as usize);
    // The table's lock goes before the pool is dropped: a drop takes the
    // pool's own locks, which come after the table's in the fork order.
    let inserted = HANDLES.lock().try_insert(raw as usize, id);
    if let Err(status) = inserted {
        // SAFETY: made just above, never handed out (no buffer names it).
        let mut handle = unsafe { Box::from_raw(raw) };
        // SAFETY: taken once; the box is freed without dropping it again.
        drop(unsafe { ManuallyDrop::take(&mut handle.pool) });
        return Err(status);
    }
    Ok(raw)
}

/// Creates a pool with every setting at its default (auto-configured from
/// the CPU count).
///
/// @return a new pool owned by the caller (free it with `zp_pool_free`), or
///         NULL when out of memory.
///
/// Thread safety: may be called from any thread, concurrently with any other
/// call.
/// cbindgen:prefix=ZP_NODISCARD
#[no_mangle]
pub extern "C" fn zp_pool_new() -> *mut zp_pool {
    export!(ptr::null_mut(), { new_handle(Builder::new()).unwrap_or(ptr::null_mut()) })
}

/// Creates a pool from a configuration.
///
/// @param cfg  the settings; it stays owned by the caller, and may be changed
///             or freed as soon as this returns.
/// @param out  where the new pool is stored (owned by the caller; free it
///             with `zp_pool_free`). Set to NULL on failure when `out` is not
///             NULL.
/// @return ZP_OK; ZP_ERR_NULL_POINTER if `cfg` or `out` is NULL;
///         ZP_ERR_INVALID_ARGUMENT if the settings do not fit together;
///         ZP_ERR_OUT_OF_MEMORY.
///
/// Thread safety: may be called from any thread, concurrently with any other
/// call; `cfg` must not be changed by another thread meanwhile.
/// cbindgen:prefix=ZP_NODISCARD
#[no_mangle]
pub extern "C" fn zp_pool_new_with_config(cfg: *const zp_config, out: *mut *mut zp_pool) -> zp_status {
    export!(ZP_ERR_INTERNAL, {
        non_null!(out);
        // SAFETY: `out` is non-null and, by the header's contract, writable.
        unsafe { out.write(ptr::null_mut()) };
        let cfg = try_ref!(cfg);
        match new_handle(cfg.builder()) {
            Ok(pool) => {
                // SAFETY: as above.
                unsafe { out.write(pool) };
                ZP_OK
            }
            Err(status) => status,
        }
    })
}

/// Frees a pool. Idle buffers are released now, scrubbed; buffers still out
/// stay valid: return them later with `zp_put` and this same (now freed)
/// pointer value, and they are released then. The pool's memory is gone once
/// the last one is back. Idle buffers in other threads' caches are released
/// at that thread's next zeropool call or its exit; those idle in a
/// `zp_local` handle's own cache, at that handle's next call or
/// `zp_local_free`. The pool's mappings go with its last buffer, whatever
/// still refers to it (a `zp_local` handle, another thread's cache).
///
/// @param pool  a pool from `zp_pool_new` or `zp_pool_new_with_config`, or
///              NULL (a no-op).
///
/// Thread safety: pools are independent, so freeing one never disturbs
/// another. For this pool, `zp_pool_free` must not run concurrently with,
/// nor be followed by, any call that uses it (`zp_get`, `zp_pool_stats`,
/// `zp_pool_trim`, a second `zp_pool_free`); the exception is `zp_put`,
/// which may run concurrently with it and after it.
#[no_mangle]
pub extern "C" fn zp_pool_free(pool: *mut zp_pool) {
    export!((), {
        non_null!(pool);
        HANDLES.lock().remove(pool as usize);
        // SAFETY: the header's contract: `pool` came from a zp_pool
        // constructor and is freed once; nothing else uses the handle now
        // (concurrent zp_puts never dereference it).
        let owned = unsafe { ManuallyDrop::take(&mut (*pool).pool) };
        // The handle's memory stays until the pool's goes (then it is freed
        // by the region): its address, the owner token, is not reused by a
        // new pool while a buffer of this one may still name it. Not
        // touched from here on: the drop below may free it.
        owned.keep_until_released(pool.cast(), free_handle);
        drop(owned);
        crate::thread_cache::sync();
    })
}

/// Copies the pool's counters.
///
/// @param pool  a live pool.
/// @param out   where the counters are written.
/// @return ZP_OK, or ZP_ERR_NULL_POINTER if `pool` or `out` is NULL.
///
/// Thread safety: thread safe. Sums of per-thread counters are read without
/// stopping other threads, so they are exact once other threads are quiet.
/// cbindgen:prefix=ZP_NODISCARD
#[no_mangle]
pub extern "C" fn zp_pool_stats(pool: *const zp_pool, out: *mut Stats) -> zp_status {
    export!(ZP_ERR_INTERNAL, {
        let pool = try_ref!(pool);
        non_null!(out);
        crate::thread_cache::sync();
        // SAFETY: `out` is non-null and, by the header's contract, writable.
        unsafe { out.write(pool.pool.stats()) };
        ZP_OK
    })
}

/// Releases every idle buffer (scrubbed): the shards' and this thread's
/// cache now, other threads' caches at their next call.
///
/// @param pool  a live pool.
/// @return ZP_OK, or ZP_ERR_NULL_POINTER if `pool` is NULL.
///
/// Thread safety: thread safe.
/// cbindgen:prefix=ZP_NODISCARD
#[no_mangle]
pub extern "C" fn zp_pool_trim(pool: *mut zp_pool) -> zp_status {
    export!(ZP_ERR_INTERNAL, {
        let pool = try_ref!(pool);
        pool.pool.trim();
        ZP_OK
    })
}
