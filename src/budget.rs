//! The idle-memory budget: how many bytes a pool may keep idle, and how
//! many are spoken for.
//!
//! Invariant: `reserved` = idle bytes in the shards + credit held by thread
//! caches, and `reserved <= max` at all times (checked in debug builds). A
//! thread cache only keeps idle bytes it holds credit for, so everything
//! idle in the pool (shards and caches) stays within the budget. Moving a
//! buffer between a shard and a cache moves its reservation with it, so
//! only buffers entering or leaving the pool touch the budget.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::padded::CachePadded;

#[derive(Debug)]
pub(crate) struct Budget {
    max: usize,
    reserved: CachePadded<AtomicUsize>,
}

impl Budget {
    pub(crate) fn new(max: usize) -> Budget {
        Budget { max, reserved: CachePadded(AtomicUsize::new(0)) }
    }

    /// Reserves `bytes` if they fit as things are.
    pub(crate) fn try_reserve(&self, bytes: usize) -> bool {
        let ok = self
            .reserved
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |cur| {
                cur.checked_add(bytes).filter(|&total| total <= self.max)
            })
            .is_ok();
        debug_assert!(self.reserved() <= self.max);
        ok
    }

    /// Gives back `bytes` reserved earlier.
    pub(crate) fn unreserve(&self, bytes: usize) {
        if bytes > 0 {
            let before = self.reserved.fetch_sub(bytes, Ordering::AcqRel);
            debug_assert!(before >= bytes, "unreserved {bytes} of {before}");
        }
    }

    /// Bytes reserved now (idle bytes plus thread-cache credit).
    pub(crate) fn reserved(&self) -> usize {
        self.reserved.load(Ordering::Acquire)
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
}
