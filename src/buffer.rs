//! The raw buffer memory and the guard handed to callers.
//!
//! A buffer is one private mapping, page aligned, so the low 12 bits of its
//! address are free: they carry the buffer's tag (log2 of a pooled
//! capacity, PINNED, DIRTY). A pooled buffer ([`RawBuf`]) is therefore one
//! word, and the guard three. That matters on the fast path: values wider
//! than two words are returned through the stack and copied in pieces that
//! defeat store-to-load forwarding, which cost 10+ ns per get+put on the
//! machines we measured.
//!
//! Invariants, relied on by the `unsafe` blocks below:
//! - A [`RawBuf`]'s untagged address is the start of a live private mapping
//!   of `1 << log2` bytes from [`os::map_zeroed`], owned by it alone.
//! - A [`OneOff`] (unpooled: `log2 == 0` in its tag) owns a mapping of `cap`
//!   bytes, where `cap == size_class::unpooled_capacity(len)` for the length
//!   it was got with, so a guard can rebuild it from (tag, len).
//! - Without DIRTY, every byte is zero except those a caller was handed
//!   and has not given back; with DIRTY, any byte may hold old data.
//! - PINNED says the mapping is mlock'ed and must be unlocked on release.
//! - TAIL says one more page is mapped after the capacity (pools used from
//!   C keep their overflow canary there, so even a request of exactly a
//!   class capacity has one).
#![allow(unsafe_code)]

use std::fmt;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use crate::os;
use crate::size_class::unpooled_capacity;

/// The system refused memory (the detail is added at the API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OutOfMemory;

const LOG2_MASK: usize = 0x3f;
const PINNED: usize = 1 << 6;
const DIRTY: usize = 1 << 7;
const TAIL: usize = 1 << 8;
/// Bytes of the overflow canary written after a C buffer's length.
pub(crate) const CANARY_LEN: usize = 8;
/// Tag bits: below any page size we support (4 KiB and up).
pub(crate) const TAG_MASK: usize = 0xfff;

/// The outcome of a pin request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pin {
    /// Not asked for.
    No,
    /// Asked for and granted.
    Locked,
    /// Asked for and refused by the system; the buffer is unpinned.
    Refused,
}

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

/// Bytes mapped for a buffer of `cap` bytes with tag `tag`.
#[inline]
fn mapped_len(cap: usize, tag: usize) -> usize {
    if tag & TAIL != 0 {
        cap + os::page_size()
    } else {
        cap
    }
}

/// How a new buffer is mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MapOptions {
    /// mlock it and keep it out of core dumps.
    pub(crate) pin: bool,
    /// Map a tail page after the capacity, for the C canary.
    pub(crate) tail: bool,
}

/// Maps `cap` zeroed bytes (plus the tail page if asked) and tags the
/// address with `log2`, PINNED and TAIL.
fn map(cap: usize, log2: usize, opts: MapOptions) -> Result<(NonNull<u8>, Pin), OutOfMemory> {
    let tail = if opts.tail { TAIL } else { 0 };
    let len = mapped_len(cap, tail);
    let ptr = os::map_zeroed(len).ok_or(OutOfMemory)?;
    debug_assert_eq!(tag_of(ptr), 0);
    let mut outcome = Pin::No;
    if opts.pin {
        // SAFETY: `ptr`/`len` is the mapping just made.
        outcome = if unsafe { os::pin(ptr, len) } { Pin::Locked } else { Pin::Refused };
    }
    let pinned = if outcome == Pin::Locked { PINNED } else { 0 };
    // A non-null address with bits or'ed in stays non-null.
    Ok((ptr.map_addr(|a| a | (log2 | pinned | tail)), outcome))
}

/// Scrubs what may hold data, unlocks and unmaps.
///
/// # Safety
/// `tagged` must own a live mapping for a buffer of `cap` bytes that
/// nothing uses after.
unsafe fn release(tagged: NonNull<u8>, cap: usize) {
    let (ptr, tag) = (untag(tagged), tag_of(tagged));
    let cap = mapped_len(cap, tag);
    // The address may be mapped again by anyone: no poison may outlive us.
    #[cfg(zeropool_asan)]
    os::unpoison(ptr, cap);
    if tag & DIRTY != 0 {
        // SAFETY: our live mapping of `cap` bytes (caller's promise).
        unsafe { os::scrub_resident(ptr, cap) };
    }
    if tag & PINNED != 0 {
        // SAFETY: as above, and it was locked when mapped.
        unsafe { os::unpin(ptr, cap) };
    }
    // SAFETY: as above; nothing uses it after.
    unsafe { os::unmap(ptr, cap) };
}

/// A pooled buffer's memory, owned: one tagged word, capacity `1 << log2`.
/// Dropping it scrubs what may hold data, unlocks and unmaps it.
pub(crate) struct RawBuf {
    tagged: NonNull<u8>,
}

// SAFETY: a RawBuf owns its mapping exclusively (like a Box<[u8]>), so it can
// move to and be shared read-only between threads.
unsafe impl Send for RawBuf {}
// SAFETY: as above; `&RawBuf` only allows reads.
unsafe impl Sync for RawBuf {}

impl RawBuf {
    /// Maps a zeroed buffer of `cap` bytes (a power of two of at least a
    /// page), locking it when `pin` is set.
    pub(crate) fn allocate(cap: usize, opts: MapOptions) -> Result<(RawBuf, Pin), OutOfMemory> {
        debug_assert!(cap.is_power_of_two() && cap > TAG_MASK);
        let (tagged, pin) = map(cap, cap.trailing_zeros() as usize, opts)?;
        Ok((RawBuf { tagged }, pin))
    }

    /// The start of the memory (tag removed).
    #[inline]
    pub(crate) fn ptr(&self) -> NonNull<u8> {
        untag(self.tagged)
    }

    /// log2 of the capacity.
    #[inline]
    pub(crate) fn log2(&self) -> u32 {
        (tag_of(self.tagged) & LOG2_MASK) as u32
    }

    /// Usable bytes.
    #[inline]
    pub(crate) fn capacity(&self) -> usize {
        1 << self.log2()
    }

    /// Zeroes the first `len` bytes, in a way the optimizer keeps.
    #[inline]
    pub(crate) fn scrub(&mut self, len: usize) {
        // SAFETY: len is clamped to the capacity, inside our mapping.
        unsafe { os::scrub(self.ptr(), len.min(self.capacity())) };
    }

    /// A returned buffer whose first `len` bytes a caller had: scrubs them
    /// (`scrub`, the `Always`/`OnPut` policies), or records that any byte
    /// may hold data (`Never`), so the release path scrubs it all.
    /// The buffer is idle from here on (poisoned under ASan) until
    /// [`reuse`](Self::reuse) or release.
    #[inline]
    pub(crate) fn retire(&mut self, len: usize, scrub: bool) {
        if scrub {
            self.scrub(len);
        } else {
            self.tagged = self.tagged.map_addr(|a| a | DIRTY);
        }
        #[cfg(zeropool_asan)]
        os::poison(self.ptr(), self.mapped_len());
    }

    /// An idle buffer handed out again for `len` bytes: usable again, and
    /// its first `len` bytes zeroed when `zero` (the get side of `Always`;
    /// the memory stays in use, so a plain memset is enough).
    #[inline]
    pub(crate) fn reuse(&mut self, len: usize, zero: bool) {
        #[cfg(zeropool_asan)]
        os::unpoison(self.ptr(), self.mapped_len());
        if zero {
            // SAFETY: len is clamped to the capacity, inside our mapping.
            unsafe { std::ptr::write_bytes(self.ptr().as_ptr(), 0, len.min(self.capacity())) };
        }
    }

    /// The whole mapping: the capacity plus the canary's tail page, if any.
    #[cfg(zeropool_asan)]
    fn mapped_len(&self) -> usize {
        mapped_len(self.capacity(), tag_of(self.tagged))
    }
}

impl Drop for RawBuf {
    fn drop(&mut self) {
        // SAFETY: we own the mapping of `capacity()` bytes; `self` goes away.
        unsafe { release(self.tagged, self.capacity()) };
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

// SAFETY: owns its mapping exclusively, as RawBuf does.
unsafe impl Send for OneOff {}

impl OneOff {
    /// Maps `cap` zeroed bytes (`unpooled_capacity` of the request).
    pub(crate) fn allocate(cap: usize, opts: MapOptions) -> Result<(OneOff, Pin), OutOfMemory> {
        let (tagged, pin) = map(cap, 0, opts)?;
        Ok((OneOff { tagged, cap }, pin))
    }

    /// Zeroes the first `len` bytes, in a way the optimizer keeps.
    pub(crate) fn scrub(&mut self, len: usize) {
        // SAFETY: len is clamped to cap, inside our mapping.
        unsafe { os::scrub(untag(self.tagged), len.min(self.cap)) };
    }
}

impl Drop for OneOff {
    fn drop(&mut self) {
        // SAFETY: we own the mapping of `cap` bytes; `self` goes away.
        unsafe { release(self.tagged, self.cap) };
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

    /// Rebuilds a guard from [`Buffer::into_raw_parts`].
    ///
    /// # Safety
    /// The parts must come from `into_raw_parts`, and no other guard for
    /// them may exist (each set of parts is used once).
    pub(crate) unsafe fn from_raw_parts(tagged: NonNull<u8>, len: usize, pool: u64) -> Buffer {
        Buffer { tagged, len, pool }
    }

    /// The tag bits of the address (class, PINNED, DIRTY, TAIL).
    pub(crate) fn tag(&self) -> usize {
        tag_of(self.tagged)
    }

    /// Whether `CANARY_LEN` bytes after `len` are mapped (always, for
    /// buffers with a tail page).
    fn canary_fits(&self) -> bool {
        self.len + CANARY_LEN <= mapped_len(self.capacity(), self.tag())
    }

    /// Writes `value` right after the length, if it fits.
    pub(crate) fn write_canary(&mut self, value: u64) {
        if self.canary_fits() {
            // SAFETY: len + 8 bytes are inside our mapping (checked above).
            unsafe { self.ptr().add(self.len).cast::<u64>().write_unaligned(value) };
        }
    }

    /// Whether the canary after the length still reads `value` (true when
    /// there is no room for one).
    pub(crate) fn canary_intact(&self, value: u64) -> bool {
        // SAFETY: as in `write_canary`.
        !self.canary_fits() || unsafe { self.ptr().add(self.len).cast::<u64>().read_unaligned() } == value
    }

    /// Zeroes the canary, so the idle buffer is all zero again.
    pub(crate) fn clear_canary(&mut self) {
        if self.canary_fits() {
            // SAFETY: as in `write_canary`.
            unsafe { os::scrub(NonNull::new_unchecked(self.ptr().add(self.len)), CANARY_LEN) };
        }
    }

    /// Scrubs and releases the memory to the system without returning it
    /// to its pool (a buffer that failed validation is never reused).
    pub(crate) fn discard(self) {
        let cap = self.capacity();
        let (tagged, _, _) = self.into_raw_parts();
        let tagged = tagged.map_addr(|a| a | DIRTY);
        // SAFETY: the guard owned this mapping and is gone; DIRTY makes the
        // release scrub every resident page first.
        unsafe { release(tagged, cap) };
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
        let log2 = tag_of(self.tagged) & LOG2_MASK;
        if log2 != 0 {
            1 << log2
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

impl Drop for Buffer {
    #[inline(always)]
    fn drop(&mut self) {
        if tag_of(self.tagged) & LOG2_MASK != 0 {
            crate::pool::give_back(self.pool, RawBuf { tagged: self.tagged }, self.len);
        } else {
            let cap = unpooled_capacity(self.len, os::page_size());
            crate::pool::give_back_one_off(self.pool, OneOff { tagged: self.tagged, cap }, self.len);
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
