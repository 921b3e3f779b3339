//! The raw buffer memory and the guard handed to callers.
//!
//! Invariants of a [`RawBuf`] (checked where it is built, relied on by the
//! `unsafe` blocks below):
//! - `ptr` is the start of a private mapping of `map_len` bytes from
//!   [`os::map_zeroed`], owned by this value alone, and `cap <= map_len`;
//!   or `map_len == 0` for the empty placeholder, which owns nothing.
//! - Every byte at or past `dirty` is zero (so a scrub of `dirty` bytes
//!   clears every secret).
//! - `pinned` says the mapping is mlock'ed and must be unlocked on release.
#![allow(unsafe_code)]

use std::fmt;
use std::mem;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use crate::error::Error;
use crate::os;

/// One buffer's memory, owned, with what the pool needs to know about it.
/// Dropping it scrubs the bytes that may hold data and unmaps it.
pub(crate) struct RawBuf {
    ptr: NonNull<u8>,
    cap: usize,
    map_len: usize,
    dirty: usize,
    class: u8,
    pinned: bool,
    fresh: bool,
}

// SAFETY: a RawBuf owns its mapping exclusively (like a Box<[u8]>), so it can
// move to and be shared read-only between threads.
unsafe impl Send for RawBuf {}
// SAFETY: as above; `&RawBuf` only allows reads.
unsafe impl Sync for RawBuf {}

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

impl RawBuf {
    /// A placeholder that owns no memory (what a guard holds once emptied).
    const EMPTY: RawBuf = RawBuf {
        ptr: NonNull::dangling(),
        cap: 0,
        map_len: 0,
        dirty: 0,
        class: 0,
        pinned: false,
        fresh: false,
    };

    /// Maps a zeroed buffer of `cap` bytes (a multiple of the page size),
    /// locking it when `pin` is set.
    pub(crate) fn allocate(cap: usize, class: u8, pin: bool) -> Result<(RawBuf, Pin), Error> {
        let ptr = os::map_zeroed(cap).ok_or(Error::OutOfMemory { bytes: cap })?;
        let mut outcome = Pin::No;
        if pin {
            // SAFETY: `ptr`/`cap` is the mapping just made.
            outcome = if unsafe { os::pin(ptr, cap) } { Pin::Locked } else { Pin::Refused };
        }
        let raw = RawBuf {
            ptr,
            cap,
            map_len: cap,
            dirty: 0,
            class,
            pinned: outcome == Pin::Locked,
            fresh: true,
        };
        Ok((raw, outcome))
    }

    /// Usable bytes.
    #[inline]
    pub(crate) fn capacity(&self) -> usize {
        self.cap
    }

    /// Size class index, or [`crate::size_class::UNPOOLED`].
    #[inline]
    pub(crate) fn class(&self) -> u8 {
        self.class
    }

    /// True until the buffer is first returned: its memory is still the
    /// system's zero pages.
    #[inline]
    pub(crate) fn is_fresh(&self) -> bool {
        self.fresh
    }

    /// Records that `len` bytes were exposed to a caller, and scrubs them
    /// now when `scrub` is set (the `Always`/`OnPut` policies).
    #[inline]
    pub(crate) fn retire(&mut self, len: usize, scrub: bool) {
        self.fresh = false;
        self.dirty = self.dirty.max(len.min(self.cap));
        if scrub {
            self.scrub();
        }
    }

    /// Scrubs every byte that may hold data.
    #[inline]
    pub(crate) fn scrub(&mut self) {
        if self.dirty > 0 {
            // SAFETY: dirty <= cap <= map_len, inside our mapping.
            unsafe { os::scrub(self.ptr, self.dirty) };
            self.dirty = 0;
        }
    }

    /// Zeroes the first `len` bytes (the get-side half of `Always`).
    #[inline]
    pub(crate) fn zero(&mut self, len: usize) {
        let len = len.min(self.cap);
        // SAFETY: len <= cap, inside our mapping.
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr(), 0, len) };
    }

    #[inline]
    fn bytes(&self, len: usize) -> &[u8] {
        debug_assert!(len <= self.cap);
        // SAFETY: len <= cap (guard invariant); the mapping is initialized
        // (zero-filled by the system, then only written through slices).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), len) }
    }

    #[inline]
    fn bytes_mut(&mut self, len: usize) -> &mut [u8] {
        debug_assert!(len <= self.cap);
        // SAFETY: as in `bytes`, and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), len) }
    }
}

impl Drop for RawBuf {
    fn drop(&mut self) {
        if self.map_len == 0 {
            return;
        }
        self.scrub();
        if self.pinned {
            // SAFETY: our live mapping, locked by `allocate`.
            unsafe { os::unpin(self.ptr, self.map_len) };
        }
        // SAFETY: our live mapping; `self` is going away, nothing uses it after.
        unsafe { os::unmap(self.ptr, self.map_len) };
    }
}

impl fmt::Debug for RawBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawBuf")
            .field("ptr", &self.ptr)
            .field("cap", &self.cap)
            .field("class", &self.class)
            .field("pinned", &self.pinned)
            .finish()
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
    raw: RawBuf,
    len: usize,
    pool: u64,
}

impl Buffer {
    pub(crate) fn new(raw: RawBuf, len: usize, pool: u64) -> Buffer {
        assert!(len <= raw.cap, "buffer length {len} exceeds capacity {}", raw.cap);
        Buffer { raw, len, pool }
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
    #[inline]
    pub fn capacity(&self) -> usize {
        self.raw.cap
    }

    /// Whether the memory is locked in RAM (see `pinned_memory`).
    pub fn is_pinned(&self) -> bool {
        self.raw.pinned
    }

    /// Start of the memory, for I/O calls that take a pointer (valid for
    /// `len()` bytes while the guard lives).
    pub fn as_ptr(&self) -> *const u8 {
        self.raw.ptr.as_ptr()
    }

    /// Mutable start of the memory (valid for `len()` bytes while the guard
    /// lives, e.g. for `read(2)` or an io_uring submission).
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.raw.ptr.as_ptr()
    }

    /// Takes the memory out, leaving an empty guard behind (whose drop does
    /// nothing). Used by `Drop` and the C boundary.
    pub(crate) fn take(&mut self) -> (RawBuf, usize, u64) {
        (mem::replace(&mut self.raw, RawBuf::EMPTY), self.len, self.pool)
    }
}

impl Deref for Buffer {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        self.raw.bytes(self.len)
    }
}

impl DerefMut for Buffer {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        self.raw.bytes_mut(self.len)
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
    fn drop(&mut self) {
        if self.raw.map_len == 0 {
            return;
        }
        let (raw, len, pool) = self.take();
        crate::pool::give_back(pool, raw, len);
    }
}

impl fmt::Debug for Buffer {
    // Never prints the contents: they may be secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Buffer")
            .field("len", &self.len)
            .field("capacity", &self.raw.cap)
            .field("pool", &self.pool)
            .finish()
    }
}
