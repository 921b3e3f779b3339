//! Chunk metadata, out of band: a header and one [`SlotMeta`] per slot, in
//! a mapping of their own (an overflowing caller cannot reach or forge it).
//!
//! Invariants:
//! - The metadata of a published chunk is never unmapped: when its chunk
//!   goes away the pages are only given back (they then read as zero, so a
//!   late lookup sees `base == 0` and reports a foreign pointer).
//! - Header fields are written once, before the chunk is published, and
//!   zeroed when it dies; slot words change only through [`SlotRef`].
//! - Slot `i` of a live chunk starts at `base + i * stride`; the index of an
//!   address is found by a multiply (no division), then checked.
//!
//! # The C layer's hook
//!
//! Two words per slot are kept here for the C API, which must validate a
//! bare pointer without trusting anything the caller can write, so they
//! live out of band in this mapping: the state word ([`SlotWord`]: never
//! handed out, OUT with its length and tag, IDLE) and the overflow canary.
//! The memory layer stores them and keeps them valid (a slot's metadata
//! is never unmapped); it gives them no meaning. Their meaning (a claim is
//! one compare-and-swap OUT -> IDLE, a double put finds IDLE, the canary
//! sits after the length) belongs to `src/ffi/`, the only user of
//! [`SlotRef::hand_out`], [`SlotRef::out_word`], [`SlotRef::claim_from`],
//! [`SlotRef::canary`], [`SlotRef::owner`] and [`Refused`] outside this
//! folder (`tests/architecture.rs` checks it). The layers between carry one
//! opaque value for it: a [`SlotHint`] kept next to a buffer a C put left
//! in a thread cache, so that handing it out again needs no lookup.
#![allow(unsafe_code)]

use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use super::radix;
use crate::pack::Field;

/// A slot's state word: who holds the buffer, its requested length, and
/// the buffer's tag bits (see `buffer.rs`). One small type, so the packing
/// is written (and checked) in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotWord(u64);

impl SlotWord {
    const LEN: Field = Field::new(0, 48);
    const TAG: Field = Self::LEN.above(12);
    const STATE: Field = Field::new(62, 2);
    /// Never handed out through the C API since the chunk was made.
    #[cfg(test)]
    pub(crate) const NEVER: u64 = 0;
    /// Handed out by `zp_get`, not yet returned.
    pub(crate) const OUT: u64 = 1;
    /// Returned (idle in the pool, or released since).
    pub(crate) const IDLE: u64 = 2;

    pub(crate) fn new(state: u64, len: usize, tag: usize) -> SlotWord {
        debug_assert!(state <= Self::IDLE);
        SlotWord(Self::STATE.pack(state) | Self::TAG.pack(tag as u64) | Self::LEN.pack(len as u64))
    }

    pub(crate) fn state(self) -> u64 {
        Self::STATE.get(self.0)
    }

    pub(crate) fn len(self) -> usize {
        Self::LEN.get(self.0) as usize
    }

    pub(crate) fn tag(self) -> usize {
        Self::TAG.get(self.0) as usize
    }

    /// An OUT word made IDLE: one add (the state's two bits go 01 → 10).
    fn returned(self) -> SlotWord {
        debug_assert_eq!(self.state(), Self::OUT);
        let idle = SlotWord(self.0 + (Self::IDLE - Self::OUT) * Self::STATE.one());
        debug_assert_eq!(idle.0, self.with_state(Self::IDLE).0);
        idle
    }

    fn with_state(self, state: u64) -> SlotWord {
        SlotWord(Self::STATE.set(self.0, state))
    }
}

/// Per-slot metadata.
#[repr(C)]
pub(crate) struct SlotMeta {
    word: AtomicU64,
    canary: AtomicU64,
}

/// A chunk's header; its slots follow it in the same mapping.
#[repr(C)]
pub(crate) struct ChunkMeta {
    /// Address of slot 0; 0 once the chunk is gone.
    base: AtomicUsize,
    /// Bytes of slots: `nslots * stride`.
    span: AtomicUsize,
    stride: AtomicUsize,
    /// `ceil(2^64 / stride)`: `(off * magic) >> 64 == off / stride` for
    /// every multiple `off` of the stride inside the chunk.
    magic: AtomicU64,
    /// The owner token of the region (see `Region::set_owner`).
    owner: AtomicUsize,
    /// The owning `Region`, opaque at this layer (`region/mod.rs` casts).
    region: AtomicPtr<u8>,
    pool_id: AtomicU64,
    /// Index of the class in its region (unpooled: usize::MAX).
    class: AtomicUsize,
}

/// Bytes of metadata for a chunk of `nslots` slots.
pub(crate) fn meta_len(nslots: usize) -> usize {
    std::mem::size_of::<ChunkMeta>() + nslots * std::mem::size_of::<SlotMeta>()
}

/// What a chunk's metadata is initialised with.
pub(crate) struct ChunkInit {
    pub(crate) base: usize,
    pub(crate) nslots: usize,
    pub(crate) stride: usize,
    pub(crate) owner: usize,
    pub(crate) region: *mut u8,
    pub(crate) pool_id: u64,
    pub(crate) class: usize,
}

/// Writes a fresh chunk's header and slot canaries into `meta` (a zeroed
/// mapping of at least `meta_len(nslots)` bytes).
///
/// # Safety
/// `meta` must be such a mapping, not yet published.
pub(crate) unsafe fn init(meta: NonNull<ChunkMeta>, c: &ChunkInit) {
    // SAFETY: the caller's promise: writable, zeroed, ours alone.
    let h = unsafe { meta.as_ref() };
    h.base.store(c.base, Ordering::Relaxed);
    h.span.store(c.nslots * c.stride, Ordering::Relaxed);
    h.stride.store(c.stride, Ordering::Relaxed);
    h.magic.store((u64::MAX / c.stride as u64).wrapping_add(1), Ordering::Relaxed);
    h.owner.store(c.owner, Ordering::Relaxed);
    h.region.store(c.region, Ordering::Relaxed);
    h.pool_id.store(c.pool_id, Ordering::Relaxed);
    h.class.store(c.class, Ordering::Relaxed);
    let mut seed = crate::os::random_u64();
    for i in 0..c.nslots {
        seed = splitmix(seed);
        // SAFETY: slot i lies inside the mapping (meta_len).
        unsafe { slot_ptr(meta, i).as_ref() }.canary.store(seed, Ordering::Relaxed);
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Slot `i`'s metadata.
///
/// # Safety
/// `i` must be below the chunk's slot count as its mapping was sized.
#[inline(always)]
unsafe fn slot_ptr(meta: NonNull<ChunkMeta>, i: usize) -> NonNull<SlotMeta> {
    // SAFETY: the slots follow the header inside the same mapping.
    unsafe { meta.add(1).cast::<SlotMeta>().add(i) }
}

/// Marks a chunk gone: lookups from now on find nothing of it.
///
/// # Safety
/// `meta` must be a chunk's metadata mapping of `len` bytes; the chunk's
/// memory must not be handed out any more.
pub(crate) unsafe fn kill(meta: NonNull<ChunkMeta>, len: usize) {
    // SAFETY: the metadata is never unmapped.
    let h = unsafe { meta.as_ref() };
    let (base, span) = (h.base.load(Ordering::Relaxed), h.span.load(Ordering::Relaxed));
    radix::withdraw(base, span.next_multiple_of(radix::GRANULE));
    h.base.store(0, Ordering::Release);
    // Give the pages back: they read as zero (base 0: dead) from now on.
    // SAFETY: our mapping; its contents are no longer needed.
    unsafe { crate::os::decommit(meta.cast(), len.next_multiple_of(crate::os::page_size())) };
    // Miri models the mapping as a heap allocation and would report it as
    // leaked once nothing points to it: keep it reachable, as the real
    // mapping is (never unmapped, by design).
    #[cfg(miri)]
    {
        struct Dead(#[allow(dead_code)] NonNull<ChunkMeta>);
        // SAFETY: only kept, never used.
        unsafe impl Send for Dead {}
        static DEAD: crate::lock::Mutex<Vec<Dead>> = crate::lock::Mutex::new(Vec::new());
        DEAD.lock().push(Dead(meta));
    }
}

/// A slot found from a pointer.
#[derive(Clone, Copy)]
pub(crate) struct SlotRef {
    meta: NonNull<ChunkMeta>,
    index: usize,
}

/// A slot's metadata, kept with its buffer while a thread cache holds it,
/// so that handing the buffer out again needs no lookup. Made only from a
/// [`SlotRef`], so it always points at a slot's metadata, which is never
/// unmapped: using a stale hint is harmless (it reads zeros), though the
/// holder of a buffer uses only the hint of that buffer.
#[derive(Clone, Copy)]
pub(crate) struct SlotHint(NonNull<SlotMeta>);

// SAFETY: a pointer to atomics that are never unmapped (module invariant).
unsafe impl Send for SlotHint {}
// SAFETY: as above.
unsafe impl Sync for SlotHint {}

impl SlotHint {
    #[inline(always)]
    fn slot(&self) -> &SlotMeta {
        // SAFETY: made from a SlotRef; metadata is never unmapped.
        unsafe { self.0.as_ref() }
    }

    /// The slot's canary value.
    #[inline(always)]
    pub(crate) fn canary(self) -> u64 {
        self.slot().canary.load(Ordering::Relaxed)
    }

    /// As [`SlotRef::hand_out`].
    #[inline(always)]
    pub(crate) fn hand_out(self, len: usize, tag: usize) {
        self.slot().word.store(SlotWord::new(SlotWord::OUT, len, tag).0, Ordering::Release);
    }

    /// Whether two hints name the same slot (debug checks).
    pub(crate) fn same(self, other: SlotHint) -> bool {
        self.0 == other.0
    }
}

/// Why a state transition was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Not a buffer zeropool handed out.
    Foreign,
    /// Already returned.
    Returned,
}

impl SlotRef {
    /// The slot starting exactly at `addr`; None for foreign and interior
    /// pointers. Never dereferences `addr`.
    #[inline(always)]
    pub(crate) fn find(addr: usize) -> Option<SlotRef> {
        // Aliases an address past 2^48 to a chunk: the span check below
        // refuses it (`base + span <= 2^48 <= addr`).
        let meta = radix::find(addr)?.cast::<ChunkMeta>();
        // SAFETY: published metadata is never unmapped.
        let h = unsafe { meta.as_ref() };
        let off = addr.wrapping_sub(h.base.load(Ordering::Acquire));
        if off >= h.span.load(Ordering::Relaxed) {
            return None; // dead chunk (base 0), or the granules past its slots
        }
        let stride = h.stride.load(Ordering::Relaxed);
        let index = ((off as u128 * h.magic.load(Ordering::Relaxed) as u128) >> 64) as usize;
        if index * stride != off {
            return None; // inside a slot, not at its start
        }
        Some(SlotRef { meta, index })
    }

    #[inline(always)]
    fn header(&self) -> &ChunkMeta {
        // SAFETY: never unmapped (module invariant).
        unsafe { self.meta.as_ref() }
    }

    #[inline(always)]
    fn slot(&self) -> &SlotMeta {
        // SAFETY: `find` checked the index against the span.
        unsafe { slot_ptr(self.meta, self.index).as_ref() }
    }

    /// The owner token of the slot's region.
    #[inline(always)]
    pub(crate) fn owner(&self) -> usize {
        self.header().owner.load(Ordering::Relaxed)
    }

    pub(crate) fn pool_id(&self) -> u64 {
        self.header().pool_id.load(Ordering::Relaxed)
    }

    /// Bytes from the slot's start to the next slot's.
    pub(crate) fn stride(&self) -> usize {
        self.header().stride.load(Ordering::Relaxed)
    }

    /// The slot's canary value (random, fixed for the chunk's life).
    #[inline(always)]
    pub(crate) fn canary(&self) -> u64 {
        self.hint().canary()
    }

    /// Records that the slot is handed out through the C API for `len`
    /// bytes. The caller holds the buffer exclusively.
    #[inline(always)]
    pub(crate) fn hand_out(&self, len: usize, tag: usize) {
        self.hint().hand_out(len, tag);
    }

    /// The slot's metadata alone, to keep with its buffer (see [`SlotHint`]).
    #[inline(always)]
    pub(crate) fn hint(&self) -> SlotHint {
        // SAFETY: `find` checked the index against the span.
        SlotHint(unsafe { slot_ptr(self.meta, self.index) })
    }

    /// The slot's word if it is handed out (OUT); why not otherwise.
    #[inline(always)]
    pub(crate) fn out_word(&self) -> Result<SlotWord, Refused> {
        let word = SlotWord(self.slot().word.load(Ordering::Acquire));
        match word.state() {
            SlotWord::OUT => Ok(word),
            SlotWord::IDLE => Err(Refused::Returned),
            _ => Err(Refused::Foreign),
        }
    }

    /// OUT → IDLE, as one compare-and-swap from `word` (from `out_word`):
    /// of two racing returns of one buffer exactly one wins; the loser
    /// learns `Returned` and must not touch the buffer.
    #[inline(always)]
    pub(crate) fn claim_from(&self, word: SlotWord) -> Result<SlotWord, Refused> {
        let slot = self.slot();
        let idle = word.returned();
        match slot.word.compare_exchange(word.0, idle.0, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => Ok(word),
            Err(_) => Err(Refused::Returned),
        }
    }

    /// `out_word` then `claim_from`.
    #[cfg(test)]
    pub(crate) fn claim(&self) -> Result<SlotWord, Refused> {
        self.claim_from(self.out_word()?)
    }

    /// The slot's current word (tests).
    #[cfg(test)]
    pub(crate) fn word(&self) -> SlotWord {
        SlotWord(self.slot().word.load(Ordering::Acquire))
    }
}

/// The region and class of the slot starting at `addr` (a live buffer of
/// ours: the caller owns it).
pub(crate) fn owner_of(addr: usize) -> Option<(NonNull<u8>, usize, usize)> {
    let s = SlotRef::find(addr)?;
    let h = s.header();
    let region = NonNull::new(h.region.load(Ordering::Relaxed))?;
    Some((region, h.class.load(Ordering::Relaxed), h.span.load(Ordering::Relaxed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_words_pack_and_unpack() {
        let w = SlotWord::new(SlotWord::OUT, (1 << 48) - 1, 0xfff);
        assert_eq!((w.state(), w.len(), w.tag()), (SlotWord::OUT, (1 << 48) - 1, 0xfff));
        let i = w.with_state(SlotWord::IDLE);
        assert_eq!((i.state(), i.len(), i.tag()), (SlotWord::IDLE, (1 << 48) - 1, 0xfff));
        assert_eq!(SlotWord::new(SlotWord::NEVER, 0, 0).0, 0);
    }

    #[test]
    fn the_magic_multiply_finds_every_slot_index() {
        for stride in [4096usize, 4096 + 4096, (1 << 20) + 4096, 3 << 20, (64 << 20) + 4096] {
            let magic = (u64::MAX / stride as u64).wrapping_add(1);
            for k in [0usize, 1, 2, 511, 4095, 1 << 20] {
                let off = k * stride;
                assert_eq!(((off as u128 * magic as u128) >> 64) as usize, k, "stride {stride} k {k}");
                for bad in [off + 1, off + 8, off + stride / 2] {
                    let idx = ((bad as u128 * magic as u128) >> 64) as usize;
                    assert_ne!(idx * stride, bad);
                }
            }
        }
    }
}
