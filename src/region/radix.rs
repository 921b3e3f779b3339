//! Address → chunk: a two-level table over 2 MiB granules of the address
//! space, as allocators keep one (jemalloc's rtree, mimalloc's segment map).
//!
//! Invariants:
//! - Every chunk starts on a granule boundary and owns whole granules, so a
//!   granule maps to at most one chunk.
//! - An entry is non-null exactly while its chunk is published; the chunk's
//!   metadata is fully written before the entry (Release/Acquire).
//! - Leaves are created on first use and published with a compare-and-swap,
//!   never freed: a lookup never waits and never touches freed memory, and a
//!   fork at any instant leaves a consistent table (there is no lock).
#![allow(unsafe_code)]

use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, Ordering};

use crate::os;

/// log2 of a granule: chunks are reserved in multiples of 2 MiB, aligned.
pub(crate) const GRANULE_SHIFT: u32 = 21;
pub(crate) const GRANULE: usize = 1 << GRANULE_SHIFT;
/// User addresses are below 2^48 on the targets we support.
const ADDR_BITS: u32 = 48;
const LEAF_BITS: u32 = 14;
const ROOT_BITS: u32 = ADDR_BITS - GRANULE_SHIFT - LEAF_BITS;

/// A leaf maps granules to their chunk's metadata, opaque here (the
/// chunk layer above casts it back).
struct Leaf([AtomicPtr<u8>; 1 << LEAF_BITS]);

static ROOT: [AtomicPtr<Leaf>; 1 << ROOT_BITS] = [const { AtomicPtr::new(ptr::null_mut()) }; 1 << ROOT_BITS];

/// (root index, leaf index) of the granule holding `addr`; None above 2^48.
#[inline(always)]
fn split(addr: usize) -> Option<(usize, usize)> {
    let g = addr >> GRANULE_SHIFT;
    if g >> (ROOT_BITS + LEAF_BITS) != 0 {
        return None;
    }
    Some((g >> LEAF_BITS, g & ((1 << LEAF_BITS) - 1)))
}

/// The leaf for root index `r`, creating it when `create`. None when it does
/// not exist (or cannot be created: out of memory).
fn leaf(r: usize, create: bool) -> Option<&'static Leaf> {
    let cur = ROOT[r].load(Ordering::Acquire);
    if !cur.is_null() {
        // SAFETY: published leaves are zero-initialised mappings of a
        // Leaf's size that are never freed.
        return Some(unsafe { &*cur });
    }
    if !create {
        return None;
    }
    let len = std::mem::size_of::<Leaf>();
    let fresh = os::map_zeroed(len)?.cast::<Leaf>();
    match ROOT[r].compare_exchange(ptr::null_mut(), fresh.as_ptr(), Ordering::AcqRel, Ordering::Acquire) {
        // SAFETY: ours, zeroed (all null entries), now published for good.
        Ok(_) => Some(unsafe { fresh.as_ref() }),
        Err(winner) => {
            // SAFETY: nobody saw `fresh`; the winner's leaf is published.
            unsafe {
                os::unmap(fresh.cast(), len);
                Some(&*winner)
            }
        }
    }
}

/// The chunk whose granules hold `addr`, if any. Two dependent loads; never
/// waits, never allocates. The bits of `addr` above 2^48 are ignored (no
/// branch for them): such an address may alias a chunk's granule, and the
/// caller must check that `addr` lies in the chunk it gets (no chunk
/// reaches 2^48).
#[inline(always)]
pub(crate) fn find(addr: usize) -> Option<NonNull<u8>> {
    let g = addr >> GRANULE_SHIFT;
    let (r, i) = ((g >> LEAF_BITS) & ((1 << ROOT_BITS) - 1), g & ((1 << LEAF_BITS) - 1));
    debug_assert!(split(addr).is_none_or(|ri| ri == (r, i)));
    let leaf = leaf(r, false)?;
    NonNull::new(leaf.0[i].load(Ordering::Acquire))
}

/// Maps the granules of `[base, base + len)` to `meta`. False when a leaf
/// could not be created (out of memory); nothing is published then.
pub(crate) fn publish(base: usize, len: usize, meta: NonNull<u8>) -> bool {
    debug_assert!(base % GRANULE == 0 && len % GRANULE == 0 && len > 0);
    // Create every leaf first, so a failure leaves nothing half published.
    for g in (base..base + len).step_by(GRANULE) {
        match split(g) {
            Some((r, _)) if leaf(r, true).is_some() => {}
            _ => return false,
        }
    }
    for g in (base..base + len).step_by(GRANULE) {
        let (r, i) = split(g).expect("checked above");
        let leaf = leaf(r, false).expect("created above");
        let prev = leaf.0[i].swap(meta.as_ptr(), Ordering::AcqRel);
        debug_assert!(prev.is_null(), "granule {g:#x} already belongs to a chunk");
    }
    true
}

/// Unmaps the granules of `[base, base + len)` (the chunk is going away).
pub(crate) fn withdraw(base: usize, len: usize) {
    for g in (base..base + len).step_by(GRANULE) {
        if let Some((r, i)) = split(g) {
            if let Some(leaf) = leaf(r, false) {
                leaf.0[i].store(ptr::null_mut(), Ordering::Release);
            }
        }
    }
}
