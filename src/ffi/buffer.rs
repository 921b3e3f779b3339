//! `zp_get` and `zp_put`: buffers through the C ABI.
//!
//! A C buffer is a pool buffer whose guard was turned into a bare pointer.
//! `zp_get` writes an 8-byte canary right after the requested length (in
//! the tail page every C pool's buffers carry) and records the buffer in
//! the registry; `zp_put` validates the pointer against the registry, then
//! checks the canary, and only then rebuilds the guard and returns it.

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::{self, NonNull};
use std::sync::OnceLock;

use super::boundary::{boundary, handle, last_error, set_last_error};
use super::pool::{count_rejected, zp_pool};
use super::registry;
use super::status::zp_status::{self, *};
use crate::buffer::Buffer;

/// The canary for the buffer at `addr`: a per-process secret mixed with
/// the address, so it can neither be guessed nor copied between buffers.
/// Every byte must depend on the address: buffers are page aligned, so a
/// plain multiply leaves the low 12 bits, and with them the first byte an
/// off-by-one overwrites, the same for every buffer of the process (an
/// overflow writing that byte's value then went unseen everywhere).
fn canary(addr: usize) -> u64 {
    static SECRET: OnceLock<u64> = OnceLock::new();
    let secret = *SECRET.get_or_init(crate::os::random_u64);
    // splitmix64's finalizer: each output bit depends on every input bit.
    let mut x = secret ^ addr as u64;
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Gets a buffer from the pool.
///
/// @param pool  a live pool.
/// @param size  the bytes needed; 0 gives a valid buffer that must be returned
///              like any other.
/// @return a page-aligned buffer of exactly `size` usable bytes (all zero
///         unless the pool's zeroing is ZP_ZERO_NEVER), owned by the caller
///         until it is given back with `zp_put` (never with free()). NULL on
///         failure: `zp_last_error()` then says why (ZP_ERR_NULL_POINTER,
///         ZP_ERR_TOO_LARGE: no buffer can hold `size`, e.g. SIZE_MAX, and
///         nothing was allocated; ZP_ERR_OUT_OF_MEMORY).
///
/// Thread safety: thread safe; not after `zp_pool_free(pool)`.
/// cbindgen:prefix=ZP_NODISCARD
/// cbindgen:postfix=ZP_MALLOC ZP_ALLOC_SIZE(2)
#[no_mangle]
pub extern "C" fn zp_get(pool: *mut zp_pool, size: usize) -> *mut c_void {
    // The closure returns one word: a wider result travels through memory
    // in pieces, which stalls store forwarding on the fast path.
    let got = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the header's contract: NULL or a live pool.
        let Some(handle) = (unsafe { handle(pool) }) else {
            set_last_error(ZP_ERR_NULL_POINTER);
            return ptr::null_mut();
        };
        match handle.pool.get_fast(size) {
            Some(buf) => hand_out(pool, buf),
            None => get_slow(pool, handle, size),
        }
    }));
    got.unwrap_or_else(|_| {
        set_last_error(ZP_ERR_INTERNAL);
        ptr::null_mut()
    })
}

#[cold]
#[inline(never)]
fn get_slow(pool: *mut zp_pool, handle: &zp_pool, size: usize) -> *mut c_void {
    match handle.pool.try_get(size) {
        Ok(buf) => hand_out(pool, buf),
        Err(e) => {
            set_last_error(zp_status::from(&e));
            ptr::null_mut()
        }
    }
}

/// Arms the canary, records the buffer and gives up the guard.
#[inline(always)]
fn hand_out(pool: *mut zp_pool, mut buf: Buffer) -> *mut c_void {
    let addr = buf.as_mut_ptr();
    buf.write_canary(canary(addr as usize));
    let tag = buf.tag();
    let (_, len, id) = buf.into_raw_parts();
    registry::record_out(addr as usize, pool as usize, id, len, tag);
    addr.cast()
}

/// Why this thread's most recent failed `zp_get` failed. Like errno, it is
/// only meaningful right after `zp_get` returned NULL.
///
/// @return the status of this thread's last failed `zp_get`.
///
/// Thread safety: thread safe (the value is per thread).
/// cbindgen:prefix=ZP_NODISCARD
#[no_mangle]
pub extern "C" fn zp_last_error() -> zp_status {
    boundary(ZP_ERR_INTERNAL, last_error)
}

/// Returns a buffer to its pool, from any thread. Validates before it
/// trusts: the pointer is looked up in a table of the buffers handed out
/// before anything is dereferenced.
///
/// @param pool  the pool `buf` came from; it may have been freed since with
///              `zp_pool_free` (the pointer is never dereferenced here), and
///              the buffer is then released.
/// @param buf   a buffer from `zp_get`; the caller must not use it afterwards.
/// @return ZP_OK, or:
///         - ZP_ERR_NULL_POINTER: `pool` or `buf` is NULL;
///         - ZP_ERR_FOREIGN_BUFFER: `buf` was not handed out by zeropool, or is
///           an interior pointer of a buffer;
///         - ZP_ERR_WRONG_POOL: `buf` came from another pool (it stays yours);
///         - ZP_ERR_DOUBLE_PUT: `buf` was already returned;
///         - ZP_ERR_OVERFLOW: bytes right after the requested size were
///           written; the buffer is scrubbed and released, never reused.
///         Each rejection leaves the pool intact and is counted in
///         `rejected_puts`.
///
/// Thread safety: thread safe, also concurrently with `zp_pool_free(pool)`.
/// cbindgen:prefix=ZP_NODISCARD
#[no_mangle]
pub extern "C" fn zp_put(pool: *mut zp_pool, buf: *mut c_void) -> zp_status {
    boundary(ZP_ERR_INTERNAL, || {
        let Some(start) = NonNull::new(buf.cast::<u8>()) else {
            return ZP_ERR_NULL_POINTER;
        };
        if pool.is_null() {
            return ZP_ERR_NULL_POINTER;
        }
        let addr = buf as usize;
        let claimed = match registry::claim(addr, pool as usize) {
            Ok(c) => c,
            Err(status) => {
                count_rejected(pool);
                return status;
            }
        };
        let tagged = start.map_addr(|a| a | claimed.tag);
        // SAFETY: the registry recorded these parts when zp_get turned the
        // guard into this pointer, and `claim` just moved the entry from OUT
        // to IDLE, so no other guard for the buffer exists.
        let mut guard = unsafe { Buffer::from_raw_parts(tagged, claimed.len, claimed.id) };
        if !guard.canary_intact(canary(addr)) {
            registry::forget(addr);
            guard.discard();
            crate::pool::count_rejected(claimed.id, true);
            return ZP_ERR_OVERFLOW;
        }
        guard.clear_canary();
        drop(guard); // back to its pool (or released, if the pool is gone)
        ZP_OK
    })
}

#[cfg(test)]
mod tests {
    use super::canary;

    /// Regression: the canary's first byte was the same for every
    /// page-aligned buffer, so a one-byte overflow of that value was missed
    /// in every buffer of 1 process in 256 (seen as a flaky misuse test).
    #[test]
    fn every_canary_byte_varies_between_buffers() {
        let addrs: Vec<usize> = (1..=512).map(|i| 0x7f00_0000_0000 + i * 4096 * 3).collect();
        for byte in 0..8 {
            let mut seen = [false; 256];
            for &a in &addrs {
                seen[(canary(a) >> (8 * byte)) as u8 as usize] = true;
            }
            let distinct = seen.iter().filter(|&&s| s).count();
            assert!(distinct > 128, "byte {byte} of the canary takes only {distinct} values");
        }
    }
}
