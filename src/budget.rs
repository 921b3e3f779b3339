//! The idle-memory budget: how many bytes a pool may keep idle, and how
//! many are spoken for.
//!
//! Invariant: `reserved` = idle bytes in the shards + credit held by thread
//! caches + reservations in flight between the two (a buffer one thread
//! moves, outside any lock), and `reserved <= max` at all times (checked in
//! debug builds). A thread cache only keeps idle bytes it holds credit for,
//! so everything idle in the pool (shards and caches) stays within the
//! budget. Moving a buffer between a shard and a cache moves its
//! reservation with it, so only buffers entering or leaving the pool touch
//! the budget.
//!
//! The word also holds a generation that every change of `reserved` moves
//! (wrapping). Credit passes from one thread cache to another only through
//! the budget, so a reader that sees the same generation before and after
//! it reads every cache saw no credit change hands meanwhile
//! (`Shared::stats`).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::pack::Field;
use crate::padded::CachePadded;

/// Reserved bytes: below 2^48 (256 TiB; a larger budget is that much).
const RESERVED: Field = Field::new(0, 48);
/// Moves by one with every reservation and every return of one.
const GENERATION: Field = RESERVED.above(16);

#[derive(Debug)]
pub(crate) struct Budget {
    max: usize,
    word: CachePadded<AtomicU64>,
}

impl Budget {
    pub(crate) fn new(max: usize) -> Budget {
        Budget { max: max.min(RESERVED.max() as usize), word: CachePadded(AtomicU64::new(0)) }
    }

    /// Reserves `bytes` if they fit as things are.
    pub(crate) fn try_reserve(&self, bytes: usize) -> bool {
        let ok = self
            .word
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |word| {
                let total = (RESERVED.get(word) as usize).checked_add(bytes).filter(|&total| total <= self.max)?;
                let generation = GENERATION.get(word).wrapping_add(1) & GENERATION.max();
                Some(GENERATION.pack(generation) | RESERVED.pack(total as u64))
            })
            .is_ok();
        debug_assert!(self.reserved() <= self.max);
        ok
    }

    /// Gives back `bytes` reserved earlier.
    pub(crate) fn unreserve(&self, bytes: usize) {
        if bytes > 0 {
            // One add: the reserved bytes go down by `bytes` (no borrow:
            // they were reserved) and the generation up by one (its carry
            // out of the word is dropped).
            let before = self.word.fetch_add(GENERATION.one().wrapping_sub(bytes as u64), Ordering::AcqRel);
            debug_assert!(RESERVED.get(before) >= bytes as u64, "unreserved {bytes} of {}", RESERVED.get(before));
        }
    }

    /// Bytes reserved now (idle bytes plus thread-cache credit).
    pub(crate) fn reserved(&self) -> usize {
        RESERVED.get(self.word.load(Ordering::Acquire)) as usize
    }

    /// The generation now: the same value read twice means no reservation
    /// was made or returned in between (short of 65,536 of them).
    pub(crate) fn generation(&self) -> u64 {
        GENERATION.get(self.word.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_never_exceed_the_budget() {
        let b = Budget::new(100);
        assert!(b.try_reserve(60));
        assert!(!b.try_reserve(41));
        assert!(b.try_reserve(40));
        assert!(!b.try_reserve(1));
        b.unreserve(30);
        assert_eq!(b.reserved(), 70);
        assert!(!b.try_reserve(usize::MAX), "no overflow");
    }

    #[test]
    fn every_change_moves_the_generation_and_a_refusal_does_not() {
        let b = Budget::new(1 << 20);
        let g = b.generation();
        assert!(b.try_reserve(4096));
        assert_eq!(b.generation(), g + 1);
        assert!(!b.try_reserve(1 << 20));
        assert_eq!(b.generation(), g + 1, "a refused reservation changes nothing");
        b.unreserve(4096);
        assert_eq!((b.reserved(), b.generation()), (0, g + 2));
        b.unreserve(0);
        assert_eq!(b.generation(), g + 2, "returning nothing changes nothing");
    }

    #[test]
    fn the_generation_wraps_without_touching_the_bytes() {
        let b = Budget::new(usize::MAX);
        assert!(b.try_reserve(RESERVED.max() as usize), "a budget above 2^48 bytes is 2^48");
        assert!(!b.try_reserve(1));
        b.unreserve(RESERVED.max() as usize);
        // Three rounds across the wrap.
        b.word.store(GENERATION.pack(GENERATION.max() - 2), Ordering::Relaxed);
        for i in 0..3 {
            assert!(b.try_reserve(3 << 40));
            b.unreserve(1 << 40);
            b.unreserve(2 << 40);
            assert_eq!(b.reserved(), 0, "after {i} rounds");
        }
        assert_eq!(b.generation(), 6);
        assert!(b.try_reserve(RESERVED.max() as usize));
        assert_eq!(b.reserved(), RESERVED.max() as usize);
    }
}
