//! `zp_get` and `zp_put`: buffers through the C ABI.
//!
//! A C buffer is a pool buffer whose guard was turned into a bare pointer.
//! `zp_get` copies the slot's random canary right after the requested
//! length (every C pool's slots have a tail page, so even a request of a
//! full class has room) and records the length in the slot's state word;
//! `zp_put` validates the pointer against the slot metadata (arithmetic
//! and two table loads, never a dereference of the pointer), takes the
//! buffer back with one compare-and-swap, and only then checks the canary
//! and hands the claimed buffer (`buffer::Claimed`, not a guard) to the
//! thread cache or the pool.

use std::ffi::c_void;
use std::ptr::{self, NonNull};

use super::boundary::{boundary, export, get_boundary, handle, last_error, non_null, set_last_error, try_ref};
use super::pool::{count_rejected, zp_pool};
use super::status::zp_status::{self, *};
use crate::buffer::{Buffer, Claimed, RawBuf, Retiring};
use crate::error::Error;
use crate::region::chunk::{Refused, SlotHint, SlotRef};
use crate::thread_cache::Popped;

/// Bytes of the overflow canary written after a C buffer's length.
const CANARY_LEN: usize = 8;

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
    export!(get, {
        let handle = try_ref!(pool);
        match handle.pool.pop_cached(size) {
            Some(popped) => hand_out_popped(
                popped,
                size,
                #[inline(always)]
                || handle.pool.count_dirty(),
            ),
            None => get_slow(pool, size),
        }
    })
}

/// `zp_get` past its thread cache. Out of line and `extern "C"` (it cannot
/// unwind: its own boundary catches), so `zp_get` reaches it by a tail
/// jump and its fast path needs no stack frame.
#[cold]
#[inline(never)]
extern "C" fn get_slow(pool: *mut zp_pool, size: usize) -> *mut c_void {
    get_boundary(|| {
        // SAFETY: zp_get's caller's contract: a live pool (checked non-NULL).
        let Some(handle) = (unsafe { handle(pool) }) else { return ptr::null_mut() };
        let got = handle.pool.try_get(size);
        // A get that reached no cache (unpooled, too large) still syncs
        // this thread's caches (guarantee 8); a no-op when synced.
        crate::thread_cache::sync();
        hand_out_or_fail(got)
    })
}

/// Hands a buffer popped from a cache out to C for `len` bytes; `dirty`
/// counts a buffer found written after its return. Every call here is in
/// tail position and cannot unwind (`extern "C"` with its own boundary),
/// so a fast path that ends here needs no stack frame: the zeroing of
/// `ALWAYS` and a buffer without kept metadata go out of line.
#[inline(always)]
pub(super) fn hand_out_popped(popped: Popped, len: usize, dirty: impl FnOnce()) -> *mut c_void {
    let Popped { mut raw, hint, zero } = popped;
    if zero {
        return hand_out_zeroed(raw, len, hint, dirty);
    }
    let dirtied = raw.reuse(len, false);
    debug_assert!(!dirtied, "nothing is checked without zeroing");
    hand_out_cached(raw, len, hint)
}

/// [`hand_out_popped`] for a pool that zeroes on get.
#[inline(never)]
// Never called from C: `extern "C"` only makes it a call that cannot
// unwind (see `hand_out_popped`).
#[allow(improper_ctypes_definitions)]
extern "C" fn hand_out_zeroed(mut raw: RawBuf, len: usize, hint: Option<SlotHint>, dirty: impl FnOnce()) -> *mut c_void {
    get_boundary(move || {
        if raw.reuse(len, true) {
            dirty();
        }
        hand_out_cached(raw, len, hint)
    })
}

/// A get's result for C: the buffer handed out, or NULL with the reason
/// recorded for `zp_last_error`.
pub(super) fn hand_out_or_fail(got: Result<Buffer, Error>) -> *mut c_void {
    match got {
        Ok(buf) => hand_out(buf),
        Err(e) => {
            set_last_error(zp_status::from(&e));
            ptr::null_mut()
        }
    }
}

/// The metadata of a claimed buffer's slot to keep with it in a cache:
/// only if the slot has room for the canary after a request of the whole
/// capacity (every C pool's slots do: they have a tail page), so that
/// [`hand_out_cached`] need not check.
#[inline(always)]
pub(super) fn hint_for(slot: &SlotRef, cap: usize) -> Option<SlotHint> {
    (cap + CANARY_LEN <= slot.stride()).then(|| slot.hint())
}

/// [`hand_out`] for a buffer from a thread cache, whose slot metadata the
/// cache may have kept (then no lookup is needed).
#[inline(always)]
pub(super) fn hand_out_cached(raw: RawBuf, len: usize, hint: Option<SlotHint>) -> *mut c_void {
    let Some(hint) = hint else {
        return hand_out_found(raw, len);
    };
    debug_assert!(len <= raw.capacity());
    debug_assert!(SlotRef::find(raw.ptr().as_ptr() as usize).is_some_and(|s| s.hint().same(hint)));
    let (start, tag) = raw.into_parts();
    // SAFETY: a hint is kept only for slots with room for the canary after
    // the whole capacity (`hint_for`, or a C pool's slot: `keep_with`), and
    // len <= capacity; the slot is ours.
    unsafe { start.as_ptr().add(len).cast::<u64>().write_unaligned(hint.canary()) };
    hint.hand_out(len, tag);
    start.as_ptr().cast()
}

#[inline(never)]
// Never called from C: `extern "C"` only makes it a call that cannot
// unwind (see `hand_out_popped`).
#[allow(improper_ctypes_definitions)]
extern "C" fn hand_out_found(raw: RawBuf, len: usize) -> *mut c_void {
    get_boundary(move || {
        let Some(slot) = SlotRef::find(raw.ptr().as_ptr() as usize) else {
            // Every buffer is a published slot; the memory goes back.
            set_last_error(ZP_ERR_INTERNAL);
            return ptr::null_mut();
        };
        match hint_for(&slot, raw.capacity()) {
            Some(hint) => hand_out_cached(raw, len, Some(hint)),
            None => {
                let (start, tag) = raw.into_parts();
                arm(start.as_ptr(), len, tag, &slot)
            }
        }
    })
}

/// Arms the canary, marks the slot handed out and gives up the guard.
#[inline(always)]
pub(super) fn hand_out(mut buf: Buffer) -> *mut c_void {
    let addr = buf.as_mut_ptr();
    let tag = buf.tag();
    let Some(slot) = SlotRef::find(addr as usize) else {
        // Every buffer is a published slot; keep the guard (it goes back).
        set_last_error(ZP_ERR_INTERNAL);
        return ptr::null_mut();
    };
    let (_, len, _) = buf.into_raw_parts();
    arm(addr, len, tag, &slot)
}

/// Writes the canary after `len` bytes at `addr` (if the slot has room)
/// and marks the slot handed out.
#[inline(always)]
fn arm(addr: *mut u8, len: usize, tag: usize, slot: &SlotRef) -> *mut c_void {
    if len + CANARY_LEN <= slot.stride() {
        // SAFETY: the slot's stride is committed memory of this buffer
        // (capacity plus tail page), and len + 8 fits in it.
        unsafe { addr.add(len).cast::<u64>().write_unaligned(slot.canary()) };
    }
    slot.hand_out(len, tag);
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
    export!(ZP_ERR_INTERNAL, { last_error() })
}

/// Returns a buffer to its pool, from any thread. Validates before it
/// trusts: the pointer is looked up in the slot metadata (arithmetic and
/// two table loads) before anything is dereferenced, and the buffer is
/// taken back with one compare-and-swap, so when two threads return the
/// same buffer at the same instant exactly one of them gets ZP_OK. (A
/// second return that comes after the buffer was handed out again cannot
/// be told from its new holder's return: addresses are reused.)
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
///           written; the buffer is scrubbed and its memory given back,
///           never reused as it is.
///         Each rejection leaves the pool intact and is counted in
///         `rejected_puts`.
///
/// Thread safety: thread safe, also concurrently with `zp_pool_free(pool)`.
/// cbindgen:prefix=ZP_NODISCARD
#[no_mangle]
pub extern "C" fn zp_put(pool: *mut zp_pool, buf: *mut c_void) -> zp_status {
    export!(ZP_ERR_INTERNAL, {
        let Some(start) = NonNull::new(buf.cast::<u8>()) else {
            return ZP_ERR_NULL_POINTER;
        };
        // Not borrowed: the pool may have been freed (see above).
        non_null!(pool);
        // Back to its pool (or released, if the pool is gone). A closure
        // rather than `keep` itself: a function item is called through an
        // out-of-line `FnOnce` shim, which costs a call and a round trip of
        // the guard through memory.
        #[allow(clippy::redundant_closure)]
        take_back(
            pool,
            start,
            #[inline(always)]
            |claimed, slot| keep(claimed, slot),
        )
    })
}

// The put paths below end in tail calls only: every call that is not the
// last thing a path does would make the whole fast path save registers and
// build a stack frame (measured: 6 pushes, 6 pops and spills per put). The
// functions they jump to are out of line and `extern "C"`, never called
// from C: that makes them calls that cannot unwind (each catches its own
// panics), so the jump needs no landing pad. Their arguments are scalars,
// so they travel in registers.

/// A buffer taken back by `zp_put`: to this thread's cache for its pool,
/// with its slot's metadata, or (no cache) to the pool.
#[inline(always)]
// A closure rather than the function: a function item is called through an
// out-of-line `FnOnce` shim (measured on `keep` itself: a call and a round
// trip of its arguments through memory).
#[allow(clippy::redundant_closure)]
fn keep(claimed: Claimed, slot: SlotRef) -> zp_status {
    keep_with(
        claimed,
        slot,
        #[inline(always)]
        |id, raw, len, hint| push_to_thread(id, raw, len, hint),
    )
}

/// A claimed buffer of pool `id` onto this thread's cache for its pool, or
/// (declined, or no cache) the full path.
#[inline(always)]
fn push_to_thread(id: u64, raw: RawBuf, len: usize, hint: Option<SlotHint>) -> zp_status {
    match crate::pool::push_cached(id, raw, len, hint) {
        Ok(retiring) => finish(retiring),
        Err(raw) => keep_slow(id, raw, len),
    }
}

/// A claimed buffer to `put` as (pool id, memory, requested length, slot
/// metadata to keep with it); an unpooled one is released.
#[inline(always)]
pub(super) fn keep_with(
    claimed: Claimed,
    slot: SlotRef,
    put: impl FnOnce(u64, RawBuf, usize, Option<SlotHint>) -> zp_status,
) -> zp_status {
    let id = claimed.pool_id();
    claimed.split(
        #[inline(always)]
        |raw, len| {
            // No check needed (`hint_for`'s): the slot is a C pool's, vetted
            // by `take_back`, and every C pool's slots have a tail page
            // (`zp_pool_new` builds with `with_canary`).
            debug_assert!(hint_for(&slot, raw.capacity()).is_some());
            put(id, raw, len, Some(slot.hint()))
        },
        #[inline(always)]
        |one_off| {
            let (tagged, len, id) = one_off.into_raw_parts();
            release_one_off(tagged, len, id)
        },
    )
}

/// The end of a put that pushed its buffer: the scrub, if the policy has
/// one, by a tail call.
#[inline(always)]
pub(super) fn finish(retiring: Retiring) -> zp_status {
    if retiring.scrubs() {
        return scrub_then_ok(retiring);
    }
    retiring.finish();
    ZP_OK
}

#[inline(never)]
#[allow(improper_ctypes_definitions)] // not called from C (see above)
extern "C" fn scrub_then_ok(retiring: Retiring) -> zp_status {
    boundary(ZP_ERR_INTERNAL, move || {
        retiring.finish();
        ZP_OK
    })
}

/// [`push_to_thread`] out of line, for a put that found its buffer is not
/// for the cache at hand (`zp_local_put` from another thread).
#[inline(never)]
#[allow(improper_ctypes_definitions)] // not called from C (see above)
pub(super) extern "C" fn keep_elsewhere(id: u64, raw: RawBuf, len: usize, hint: Option<SlotHint>) -> zp_status {
    boundary(ZP_ERR_INTERNAL, move || push_to_thread(id, raw, len, hint))
}

/// A claimed buffer of pool `id` its thread cache declined: the full path.
#[cold]
#[inline(never)]
#[allow(improper_ctypes_definitions)] // not called from C (see above)
pub(super) extern "C" fn keep_slow(id: u64, raw: RawBuf, len: usize) -> zp_status {
    boundary(ZP_ERR_INTERNAL, move || {
        crate::pool::give_back_slow(id, raw, len);
        ZP_OK
    })
}

/// A claimed unpooled buffer, as [`Claimed::into_raw_parts`] gave it.
#[cold]
#[inline(never)]
extern "C" fn release_one_off(tagged: NonNull<u8>, len: usize, id: u64) -> zp_status {
    boundary(ZP_ERR_INTERNAL, || {
        // SAFETY: the parts of the buffer this put claimed, given up by
        // `into_raw_parts` just before: used once, here.
        unsafe { Claimed::new(tagged, len, id) }.give_back();
        ZP_OK
    })
}

/// A put refused with `status`, counted against the pool `pool` names.
#[cold]
#[inline(never)]
extern "C" fn reject(pool: *const zp_pool, status: zp_status) -> zp_status {
    boundary(status, || {
        count_rejected(pool);
        status
    })
}

/// A claimed buffer whose canary was overwritten: never reused as it is.
#[cold]
#[inline(never)]
extern "C" fn overflowed(tagged: NonNull<u8>, len: usize, id: u64) -> zp_status {
    boundary(ZP_ERR_OVERFLOW, || {
        // SAFETY: as in `release_one_off`: the parts of the slot this put
        // claimed.
        unsafe { Claimed::new(tagged, len, id) }.discard();
        crate::pool::count_rejected(id, true);
        ZP_ERR_OVERFLOW
    })
}

/// Validates a returned buffer for pool handle `pool` and, if it passes,
/// hands it, claimed (no guard is built), and its slot to `keep` (a cache,
/// or released); else says why (each rejection counted). It goes to `keep`
/// by value, not through a
/// returned `Result`: a 4-word result travels through memory in pieces that
/// stall store forwarding (measured: +15 ns per put).
#[inline(always)]
pub(super) fn take_back(
    pool: *const zp_pool,
    start: NonNull<u8>,
    keep: impl FnOnce(Claimed, SlotRef) -> zp_status,
) -> zp_status {
    let addr = start.as_ptr() as usize;
    let Some(slot) = SlotRef::find(addr) else {
        return reject(pool, ZP_ERR_FOREIGN_BUFFER);
    };
    // The state first (a returned buffer is a double put whichever pool is
    // named), then the owner, then the claim itself.
    let refused = |r| match r {
        Refused::Returned => ZP_ERR_DOUBLE_PUT,
        Refused::Foreign => ZP_ERR_FOREIGN_BUFFER,
    };
    let word = match slot.out_word() {
        Ok(word) => word,
        Err(r) => return reject(pool, refused(r)),
    };
    if slot.owner() != pool as usize {
        return reject(pool, ZP_ERR_WRONG_POOL);
    }
    let word = match slot.claim_from(word) {
        Ok(word) => word,
        Err(r) => return reject(pool, refused(r)),
    };
    // From here on this call alone holds the buffer (the claim's winner).
    let len = word.len();
    let fits = len + CANARY_LEN <= slot.stride();
    // SAFETY: as in `hand_out`: the canary lies in the slot's committed
    // memory, which we now hold.
    let canary_at = unsafe { start.add(len) };
    // SAFETY: as above.
    let intact = !fits || unsafe { canary_at.cast::<u64>().read_unaligned() } == slot.canary();
    // Slots start on a page, so the tag bits are clear: an add is an or
    // (and one instruction where the compiler, not knowing that, makes an
    // or take four).
    debug_assert_eq!(addr & crate::buffer::TAG_MASK, 0);
    // SAFETY: the tag is below a page, and the slot is at least a page.
    let tagged = unsafe { start.add(word.tag()) };
    if !intact {
        return overflowed(tagged, len, slot.pool_id());
    }
    if fits {
        // SAFETY: as above; the idle buffer is all zero again.
        unsafe { canary_at.cast::<u64>().write_unaligned(0) };
    }
    // SAFETY: the claim moved the slot from OUT to IDLE, so no one else
    // holds it; tag and length are those zp_get recorded.
    let claimed = unsafe { Claimed::new(tagged, len, slot.pool_id()) };
    keep(claimed, slot)
}
