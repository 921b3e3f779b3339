//! The buffers handed to callers, and their memory as the pool moves it.
//!
//! A buffer's memory is a slot of its pool's [`Region`](crate::region):
//! page aligned, so the low 12 bits of its address are free and carry the
//! buffer's tag (its global size class plus one, 0 for unpooled; PINNED;
//! DIRTY). A pooled buffer
//! ([`RawBuf`]) is therefore one word, and the guard three. That matters on
//! the fast path: values wider than two words are returned through the
//! stack and copied in pieces that defeat store-to-load forwarding, which
//! cost 10+ ns per get+put on the machines we measured.
//!
//! Invariants, relied on by the `unsafe` blocks below:
//! - A [`RawBuf`]'s untagged address is a slot of capacity
//!   `size_class::class_capacity(class)` in use by it alone, where its tag
//!   holds `class + 1`; dropping it gives the slot back to its region.
//! - A [`OneOff`] (unpooled: class field 0 in its tag) owns an unpooled slot
//!   of at least `cap` bytes, where `cap == size_class::unpooled_capacity(len)`
//!   for the length it was got with, so a guard can rebuild it from (tag, len).
//! - Without DIRTY, every byte is zero except those a caller was handed
//!   and has not given back; with DIRTY, any byte may hold old data.
//! - PINNED says the slot is mlock'ed and must be unlocked on release.
#![allow(unsafe_code)]

use std::fmt;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use crate::os;
use crate::region::{Region, Slot};
use crate::size_class::{class_capacity, unpooled_capacity};

pub(crate) use crate::region::{OutOfMemory, Pin};

/// The tag's class field: a pooled buffer's global size class plus one
/// (at most `size_class::GLOBAL_CLASSES`); 0 for an unpooled buffer.
const CLASS_MASK: usize = 0xff;
const PINNED: usize = 1 << 8;
const DIRTY: usize = 1 << 9;
const _: () = assert!(crate::size_class::GLOBAL_CLASSES < CLASS_MASK && DIRTY < TAG_MASK);
/// Up to this many bytes, `Always` checks a reused buffer instead of
/// clearing it (a read-only check beats a memset up to about 128 KiB on the
/// machines we measured; above, the memset wins).
/// (Under Miri, which interprets the check a byte at a time, the pool's
/// tests always take the memset; the check and its healing run under Miri
/// in this module's unit tests, with the limit lifted.)
pub(crate) const CHECK_BELOW: usize = if cfg!(miri) { 0 } else { 128 << 10 };

/// Whether every byte is zero: an OR over 256-byte blocks, which the
/// compiler turns into vector code, stopping at the first dirty block.
/// With AVX2 (checked once, at run time) twice as wide as the baseline's
/// SSE2; without it the check is no faster than glibc's memset.
#[inline]
fn is_zero(bytes: &[u8]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { is_zero_avx2(bytes) };
    }
    is_zero_portable(bytes)
}

/// [`is_zero_portable`] compiled for AVX2.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn is_zero_avx2(bytes: &[u8]) -> bool {
    is_zero_portable(bytes)
}

#[inline(always)]
fn is_zero_portable(bytes: &[u8]) -> bool {
    let mut blocks = bytes.chunks_exact(256);
    for block in &mut blocks {
        if block.iter().fold(0u8, |acc, &b| acc | b) != 0 {
            return false;
        }
    }
    blocks.remainder().iter().fold(0u8, |acc, &b| acc | b) == 0
}

/// Tag bits: below any page size we support (4 KiB and up).
pub(crate) const TAG_MASK: usize = 0xfff;

/// The address with its tag bits cleared.
#[inline]
fn untag(tagged: NonNull<u8>) -> NonNull<u8> {
    let raw = tagged.as_ptr().map_addr(|a| a & !TAG_MASK);
    // SAFETY: tagged addresses are page aligned plus tag bits, and non-null,
    // so the page address under them is non-null too.
    unsafe { NonNull::new_unchecked(raw) }
}

#[inline]
fn tag_of(tagged: NonNull<u8>) -> usize {
    tagged.as_ptr() as usize & TAG_MASK
}

/// Tags a slot's address with a class field and PINNED.
fn tagged(slot: &Slot, class_field: usize) -> NonNull<u8> {
    debug_assert_eq!(tag_of(slot.ptr), 0);
    debug_assert!(class_field <= CLASS_MASK);
    let pinned = if slot.pin == Pin::Locked { PINNED } else { 0 };
    // A non-null address with bits or'ed in stays non-null.
    slot.ptr.map_addr(|a| a | (class_field | pinned))
}

/// Gives a slot back to its region (found from the address); `now`: its
/// pages go back at once, not with the region's next batch; `one_off_cap`:
/// an unpooled buffer's capacity (ignored for a pooled one).
///
/// # Safety
/// `tagged` must be a buffer's tagged slot, in use by the caller alone,
/// and unused afterwards.
unsafe fn release(tagged: NonNull<u8>, now: bool, one_off_cap: usize) {
    let (ptr, tag) = (untag(tagged), tag_of(tagged));
    let (dirty, pinned) = (tag & DIRTY != 0, tag & PINNED != 0);
    let Some((region, class, _)) = Region::owner_of(ptr.as_ptr() as usize) else {
        debug_assert!(false, "a buffer's slot is always published");
        return;
    };
    // SAFETY: the caller's promise; the slot belongs to this region.
    unsafe {
        if tag & CLASS_MASK != 0 {
            Region::release(region, class, ptr, dirty, pinned, now);
        } else {
            Region::release_one_off(region, ptr, one_off_cap, dirty, pinned);
        }
    }
}

/// A pooled buffer's memory, owned: one tagged word, capacity that of its
/// global size class.
/// Dropping it scrubs what may hold data and gives the slot back.
pub(crate) struct RawBuf {
    tagged: NonNull<u8>,
}

// SAFETY: a RawBuf owns its slot exclusively (like a Box<[u8]>), so it can
// move to and be shared read-only between threads.
unsafe impl Send for RawBuf {}
// SAFETY: as above; `&RawBuf` only allows reads.
unsafe impl Sync for RawBuf {}

impl RawBuf {
    /// Wraps a slot of global size class `class` (of that class's capacity).
    pub(crate) fn from_slot(slot: Slot, class: usize) -> RawBuf {
        debug_assert!(class < crate::size_class::GLOBAL_CLASSES);
        RawBuf { tagged: tagged(&slot, class + 1) }
    }

    /// Gives up the memory (to a C caller): its start and tag bits. The
    /// memory is leaked unless [`RawBuf::from_parts`] rebuilds it.
    #[inline(always)]
    pub(crate) fn into_parts(self) -> (NonNull<u8>, usize) {
        let tagged = ManuallyDrop::new(self).tagged;
        (untag(tagged), tag_of(tagged))
    }

    /// The start of the memory (tag removed).
    #[inline]
    pub(crate) fn ptr(&self) -> NonNull<u8> {
        untag(self.tagged)
    }

    /// The tag's class field: the global size class plus one (see
    /// `SizeClasses::class_of_tag`).
    #[inline(always)]
    pub(crate) fn tag_class(&self) -> usize {
        tag_of(self.tagged) & CLASS_MASK
    }

    /// Usable bytes (the pool's class table has the same figure, for the
    /// fast paths).
    #[inline]
    pub(crate) fn capacity(&self) -> usize {
        debug_assert!(self.tag_class() != 0);
        class_capacity(self.tag_class().wrapping_sub(1), os::page_size())
    }

    /// Zeroes the first `len` bytes, in a way the optimizer keeps.
    #[inline]
    pub(crate) fn scrub(&mut self, len: usize) {
        // SAFETY: len is clamped to the capacity, inside our slot.
        unsafe { os::scrub(self.ptr(), len.min(self.capacity())) };
    }

    /// A returned buffer whose first `len` bytes a caller had: scrubs them
    /// (`scrub`, the `Always`/`OnPut` policies), or records that any byte
    /// may hold data (`Never`), so the release path scrubs it all.
    /// The buffer is idle from here on (poisoned under ASan) until
    /// [`reuse`](Self::reuse) or release.
    #[inline]
    pub(crate) fn retire(&mut self, len: usize, scrub: bool) {
        self.retire_later(len, scrub).finish();
    }

    /// [`retire`](Self::retire) in two steps: the `Never` mark now, the
    /// scrub (and ASan poison) when the returned [`Retiring`] is finished
    /// (see `ThreadCache::try_push` for why). Between the two the buffer
    /// must stay where only the caller can reach it.
    #[inline(always)]
    pub(crate) fn retire_later(&mut self, len: usize, scrub: bool) -> Retiring {
        if !scrub {
            self.tagged = self.tagged.map_addr(|a| a | DIRTY);
        }
        Retiring {
            ptr: self.ptr(),
            len: if scrub { len.min(self.capacity()) } else { 0 },
            #[cfg(zeropool_asan)]
            cap: self.capacity(),
        }
    }

    /// An idle buffer handed out again for `len` bytes: usable again, and
    /// its first `len` bytes made zero when `zero` (the get side of
    /// `Always`). Below [`CHECK_BELOW`] the bytes are checked, which reads
    /// them only (about half a memset's time at 4 KiB), and zeroed only if
    /// one is not: true then, a write after the buffer was returned. Above
    /// it a memset is cheaper than the check. The memory stays in use, so a
    /// plain memset is enough.
    #[inline]
    pub(crate) fn reuse(&mut self, len: usize, zero: bool) -> bool {
        self.reuse_as(len, zero, true)
    }

    /// As [`reuse`](Self::reuse), for a slot back from the memory layer,
    /// whose pages were given back: a check would fault every page in
    /// twice (read, then the caller's write), a memset once.
    pub(crate) fn reuse_released(&mut self, len: usize, zero: bool) {
        self.reuse_as(len, zero, false);
    }

    #[inline(always)]
    fn reuse_as(&mut self, len: usize, zero: bool, check: bool) -> bool {
        #[cfg(zeropool_asan)]
        os::unpoison(self.ptr(), self.capacity());
        if !zero {
            return false;
        }
        zero_checked(self.ptr(), len.min(self.capacity()), check)
    }
}

/// The second half of a buffer's retirement (see [`RawBuf::retire_later`]):
/// its first `len` bytes to scrub (0 under `Never`), its capacity to
/// poison under ASan.
#[must_use = "a retired buffer must be scrubbed: call finish"]
pub(crate) struct Retiring {
    ptr: NonNull<u8>,
    len: usize,
    #[cfg(zeropool_asan)]
    cap: usize,
}

impl Retiring {
    /// Whether [`finish`](Self::finish) scrubs (a memset call).
    #[inline(always)]
    pub(crate) fn scrubs(&self) -> bool {
        self.len > 0
    }

    /// Scrubs (and poisons) the buffer. It must still be the caller's:
    /// idle in its own cache, not handed out again.
    #[inline(always)]
    pub(crate) fn finish(self) {
        if self.len > 0 {
            // SAFETY: `len` is clamped to the capacity of the buffer this was
            // made from, which the caller still holds (method contract).
            unsafe { os::scrub(self.ptr, self.len) };
        }
        #[cfg(zeropool_asan)]
        os::poison(self.ptr, self.cap);
    }
}

/// The zeroing half of `RawBuf::reuse_as`, out of line: it costs a check
/// or a memset of the buffer anyway, and inlined it crowds the fast path
/// of the other policies. `len` bytes at `p` are a buffer's, ours.
#[inline(never)]
fn zero_checked(p: NonNull<u8>, len: usize, check: bool) -> bool {
    zero_checked_below(p, len, check, CHECK_BELOW)
}

/// [`zero_checked`] with the check's limit as a parameter (the unit tests
/// lift it, so that Miri runs the check).
#[inline(always)]
fn zero_checked_below(p: NonNull<u8>, len: usize, check: bool, limit: usize) -> bool {
    let checked = check && len <= limit;
    // SAFETY: `len` bytes inside the caller's slot, initialized (mapped
    // memory is zero-filled, then written through slices).
    if checked && is_zero(unsafe { std::slice::from_raw_parts(p.as_ptr(), len) }) {
        return false;
    }
    // SAFETY: as above.
    unsafe { os::zero(p, len) };
    // Checked and zeroed: the check found a byte written after the return.
    checked
}

impl Drop for RawBuf {
    fn drop(&mut self) {
        // SAFETY: we own the slot; `self` goes away.
        unsafe { release(self.tagged, false, 0) };
    }
}

impl fmt::Debug for RawBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawBuf").field("ptr", &self.ptr()).field("tag", &tag_of(self.tagged)).finish()
    }
}

/// An unpooled buffer's memory, owned (sizes above the largest class).
pub(crate) struct OneOff {
    tagged: NonNull<u8>,
    cap: usize,
}

// SAFETY: owns its slot exclusively, as RawBuf does.
unsafe impl Send for OneOff {}

impl OneOff {
    /// Wraps an unpooled slot of at least `cap` bytes.
    pub(crate) fn from_slot(slot: Slot, cap: usize) -> OneOff {
        OneOff { tagged: tagged(&slot, 0), cap }
    }

    /// Zeroes the first `len` bytes, in a way the optimizer keeps.
    pub(crate) fn scrub(&mut self, len: usize) {
        // SAFETY: len is clamped to cap, inside our slot.
        unsafe { os::scrub(untag(self.tagged), len.min(self.cap)) };
    }

    /// Zeroes the whole capacity (a reused slot handed out under `Always`).
    pub(crate) fn zero(&mut self) {
        // SAFETY: `cap` bytes are ours.
        unsafe { std::ptr::write_bytes(untag(self.tagged).as_ptr(), 0, self.cap) };
    }
}

impl Drop for OneOff {
    fn drop(&mut self) {
        // SAFETY: we own the slot; `self` goes away.
        unsafe { release(self.tagged, false, self.cap) };
    }
}

/// A buffer from a [`BufferPool`](crate::BufferPool): derefs to `[u8]` of
/// the requested length, and goes back to its pool when dropped (or when
/// passed to [`BufferPool::put`](crate::BufferPool::put)).
///
/// With the default [`Zeroing::Always`](crate::Zeroing::Always) every byte
/// is zero when you get it, and the bytes you could reach are scrubbed when
/// it goes back. It may be sent to another thread and returned there.
pub struct Buffer {
    // Invariant: `tagged` is a RawBuf's or OneOff's word, len <= its
    // capacity, and this guard owns that memory.
    tagged: NonNull<u8>,
    len: usize,
    pool: u64,
}

// SAFETY: the guard owns its memory exclusively, like a Box<[u8]>.
unsafe impl Send for Buffer {}
// SAFETY: `&Buffer` only gives `&[u8]`.
unsafe impl Sync for Buffer {}

impl Buffer {
    /// Wraps a pooled buffer as a guard of `len` bytes for pool `pool`.
    #[inline(always)]
    pub(crate) fn pooled(raw: RawBuf, len: usize, pool: u64) -> Buffer {
        assert!(len <= raw.capacity(), "buffer length {len} exceeds capacity {}", raw.capacity());
        Buffer { tagged: ManuallyDrop::new(raw).tagged, len, pool }
    }

    /// Wraps an unpooled buffer got for `len` bytes.
    pub(crate) fn one_off(one: OneOff, len: usize, pool: u64) -> Buffer {
        assert_eq!(one.cap, unpooled_capacity(len, os::page_size()), "one-off capacity must follow its length");
        Buffer { tagged: ManuallyDrop::new(one).tagged, len, pool }
    }

    #[inline]
    fn ptr(&self) -> *mut u8 {
        untag(self.tagged).as_ptr()
    }

    /// Gives up ownership: (tagged address, length, pool id). The memory is
    /// leaked unless [`Buffer::from_raw_parts`] rebuilds the guard.
    pub(crate) fn into_raw_parts(self) -> (NonNull<u8>, usize, u64) {
        let this = ManuallyDrop::new(self);
        (this.tagged, this.len, this.pool)
    }

    /// The tag bits of the address (class, PINNED, DIRTY).
    pub(crate) fn tag(&self) -> usize {
        tag_of(self.tagged)
    }

    /// Length in bytes: what was asked for.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a zero-length buffer.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Capacity of the underlying memory (the size class), at least `len()`.
    /// Bytes past `len()` are not reachable through the guard.
    pub fn capacity(&self) -> usize {
        let class = tag_of(self.tagged) & CLASS_MASK;
        if class != 0 {
            class_capacity(class - 1, os::page_size())
        } else {
            unpooled_capacity(self.len, os::page_size())
        }
    }

    /// Whether the memory is locked in RAM (see `pinned_memory`).
    pub fn is_pinned(&self) -> bool {
        tag_of(self.tagged) & PINNED != 0
    }

    /// Start of the memory, for I/O calls that take a pointer (valid for
    /// `len()` bytes while the guard lives).
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr()
    }

    /// Mutable start of the memory (valid for `len()` bytes while the guard
    /// lives, e.g. for `read(2)` or an io_uring submission).
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr()
    }
}

impl Deref for Buffer {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        // SAFETY: len <= cap of our live mapping (guard invariant); mapped
        // memory is initialized (zero-filled, then written through slices).
        unsafe { std::slice::from_raw_parts(self.ptr(), self.len) }
    }
}

impl DerefMut for Buffer {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr(), self.len) }
    }
}

impl AsRef<[u8]> for Buffer {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl AsMut<[u8]> for Buffer {
    fn as_mut(&mut self) -> &mut [u8] {
        self
    }
}

/// Where a dropped [`Buffer`] goes: a hook this layer defines and the pool
/// layer implements (`pool.rs`), so that the guard can return itself
/// without this module importing the pool. Static dispatch: the fast path
/// is inlined into the guard's drop as before.
pub(crate) trait GiveBack {
    /// A pooled buffer of pool `pool`, handed out for `len` bytes.
    fn pooled(pool: u64, raw: RawBuf, len: usize);
    /// An unpooled buffer of pool `pool`, got for `len` bytes.
    fn one_off(pool: u64, one: OneOff, len: usize);
}

/// The one implementor of [`GiveBack`] (in `pool.rs`).
pub(crate) struct Home;

/// Releases a buffer's slot to the system, scrubbing every resident page
/// (DIRTY), not back to its pool.
///
/// # Safety
/// `tagged`/`len` are a buffer's (guard's or [`Claimed`]'s) parts, owned by
/// the caller alone and unused afterwards.
unsafe fn discard_parts(tagged: NonNull<u8>, len: usize) {
    let tagged = tagged.map_addr(|a| a | DIRTY);
    // SAFETY: the caller's promise; DIRTY makes the release scrub every
    // resident page first. An unpooled buffer's capacity follows its
    // length (the module invariants).
    unsafe { release(tagged, true, unpooled_capacity(len, os::page_size())) };
}

/// A buffer the C layer took back by its address (it found the slot,
/// checked it and won the claim): the tagged address, the length it was
/// handed out for, its pool. Not a guard (nothing happens when it is
/// dropped, so it must be used up): the C put path turns it straight into
/// a pooled buffer's memory ([`split`](Self::split)) or releases it,
/// without building a [`Buffer`] to take it apart again.
#[must_use = "a claimed buffer must be kept, released or discarded"]
pub(crate) struct Claimed {
    tagged: NonNull<u8>,
    len: usize,
    pool: u64,
}

impl Claimed {
    /// # Safety
    /// `tagged` and `len` must be those a buffer of pool `pool` was handed
    /// out with through the C API (`Buffer::into_raw_parts`), and the
    /// caller must have claimed it (no one else holds it, and these parts
    /// are used once).
    #[inline(always)]
    pub(crate) unsafe fn new(tagged: NonNull<u8>, len: usize, pool: u64) -> Claimed {
        Claimed { tagged, len, pool }
    }

    #[inline(always)]
    pub(crate) fn pool_id(&self) -> u64 {
        self.pool
    }

    /// A pooled buffer's memory and length to `pooled`; an unpooled one, as
    /// it is, to `unpooled`. (Two closures, not a `Result`: a fast path then
    /// branches once on the tag instead of building and matching a
    /// three-word value.)
    #[inline(always)]
    pub(crate) fn split<R>(self, pooled: impl FnOnce(RawBuf, usize) -> R, unpooled: impl FnOnce(Claimed) -> R) -> R {
        if tag_of(self.tagged) & CLASS_MASK == 0 {
            return unpooled(self);
        }
        pooled(RawBuf { tagged: self.tagged }, self.len)
    }

    /// The parts, to cross a function boundary in registers.
    pub(crate) fn into_raw_parts(self) -> (NonNull<u8>, usize, u64) {
        (self.tagged, self.len, self.pool)
    }

    /// Gives the buffer back as a dropped guard would: a pooled one to its
    /// pool, an unpooled one released (scrubbed per the pool's policy).
    pub(crate) fn give_back(self) {
        if tag_of(self.tagged) & CLASS_MASK != 0 {
            <Home as GiveBack>::pooled(self.pool, RawBuf { tagged: self.tagged }, self.len);
        } else {
            let cap = unpooled_capacity(self.len, os::page_size());
            <Home as GiveBack>::one_off(self.pool, OneOff { tagged: self.tagged, cap }, self.len);
        }
    }

    /// Gives the memory back to the system without returning it to its
    /// pool (a buffer that failed validation is never reused as it is):
    /// every byte that may hold data is scrubbed, the pages are dropped.
    pub(crate) fn discard(self) {
        // SAFETY: a claimed buffer is the caller's alone (`new`'s contract),
        // and `self` is used up.
        unsafe { discard_parts(self.tagged, self.len) };
    }
}

impl Drop for Buffer {
    #[inline(always)]
    fn drop(&mut self) {
        if tag_of(self.tagged) & CLASS_MASK != 0 {
            <Home as GiveBack>::pooled(self.pool, RawBuf { tagged: self.tagged }, self.len);
        } else {
            let cap = unpooled_capacity(self.len, os::page_size());
            <Home as GiveBack>::one_off(self.pool, OneOff { tagged: self.tagged, cap }, self.len);
        }
    }
}

impl fmt::Debug for Buffer {
    // Never prints the contents: they may be secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Buffer")
            .field("len", &self.len)
            .field("capacity", &self.capacity())
            .field("pool", &self.pool)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The get side of `Always` on a reused buffer: a clean buffer is only
    /// read (no write, reported clean), a byte written after the return is
    /// found wherever it is and the buffer is healed (reported), and above
    /// the check's limit the buffer is cleared without a look. The same
    /// code runs under Miri (with AVX2 where the crate is built for it),
    /// the limit lifted: Miri's pool tests take the memset.
    #[test]
    fn the_get_side_check_finds_and_heals_every_dirty_byte() {
        let len = 4096 + 40;
        let zero_checked = |p, len, check| zero_checked_below(p, len, check, usize::MAX);
        assert!(cfg!(miri) || len <= CHECK_BELOW);
        let mut bytes = vec![0u8; len + 64];
        let p = NonNull::new(bytes.as_mut_ptr()).unwrap();
        assert!(!zero_checked(p, len, true), "a clean buffer needs no healing");
        let spots: &[usize] = if cfg!(miri) { &[0, 255, 256, 4095, len - 1] } else { &[0, 1, 255, 256, 511, 2048, 4095, 4096, len - 1] };
        for &at in spots {
            bytes[at] = 0x5A;
            bytes[len] = 0x77; // past the length: neither checked nor cleared
            let p = NonNull::new(bytes.as_mut_ptr()).unwrap();
            assert!(zero_checked(p, len, true), "a dirty byte at {at} was missed");
            assert!(bytes[..len].iter().all(|&b| b == 0), "byte {at}: not healed");
            assert_eq!(bytes[len], 0x77, "a byte past the length was touched");
            bytes[len] = 0;
        }
        // Pages just given back: cleared, never checked (a check would
        // fault them in twice), and not reported as a write after return.
        bytes[7] = 1;
        let p = NonNull::new(bytes.as_mut_ptr()).unwrap();
        assert!(!zero_checked(p, len, false));
        assert!(bytes[..len].iter().all(|&b| b == 0));
        // Above the limit: cleared without a look, so nothing is reported.
        bytes[9] = 1;
        let p = NonNull::new(bytes.as_mut_ptr()).unwrap();
        assert!(!zero_checked_below(p, len, true, len - 1));
        assert!(bytes[..len].iter().all(|&b| b == 0));
    }

    #[test]
    fn is_zero_agrees_with_a_plain_scan() {
        let mut bytes = vec![0u8; 1000];
        assert!(is_zero(&bytes) && is_zero_portable(&bytes));
        for at in [0, 255, 256, 511, 512, 767, 768, 999] {
            bytes[at] = 1;
            assert!(!is_zero(&bytes) && !is_zero_portable(&bytes), "missed byte {at}");
            bytes[at] = 0;
        }
        assert!(is_zero(&bytes[..0]));
    }
}
