//! The idle buffers of one shard, kept in the order an eviction policy
//! needs. A shard holds one [`IdleSet`] behind its lock.
//!
//! Vocabulary shared by the policies: a buffer becomes *idle* when it is
//! inserted (returned to the shard), is *taken* when a get reuses it (a hit
//! for its class), and is *evicted* when the budget needs room: evicted
//! buffers leave the pool and go back to the system. A get that finds no
//! idle buffer of its class anywhere is a *miss*.
//!
//! Eviction work happens only on slow paths (a shard is involved); the
//! thread-cache fast path never reaches a policy.

mod clock_pro;
mod evict;
mod lifo;

use crate::buffer::{OutOfMemory, RawBuf};
use crate::config::EvictionPolicy;

use clock_pro::ClockPro;
pub(crate) use evict::Evict;
use lifo::Lifo;

/// Idle buffers of one shard, by class, with their count and bytes.
///
/// Invariants (checked in debug builds): `count` and `bytes` are the number
/// and capacity sum of the buffers held; `lens[k]` is the number of class
/// `k`. Each buffer carries when it was returned (monotonic ns), oldest
/// first within a class, for idle decay.
#[derive(Debug)]
pub(crate) struct IdleSet {
    order: Order,
    count: usize,
    bytes: usize,
    /// The tag class field of class 0 (`RawBuf::tag_class`).
    first_tag: usize,
    lens: Vec<u32>,
}

#[derive(Debug)]
enum Order {
    Lifo(Lifo),
    ClockPro(ClockPro),
}

impl IdleSet {
    /// `capacity` is about how many buffers the shard holds (CLOCK-Pro's
    /// test periods last that many insertions).
    /// `first_tag` is the tag class field of class 0 (the pool's first
    /// global class plus one).
    pub(crate) fn try_new(
        policy: EvictionPolicy,
        classes: usize,
        capacity: usize,
        first_tag: usize,
    ) -> Result<IdleSet, OutOfMemory> {
        let order = match policy {
            EvictionPolicy::Lifo => Order::Lifo(Lifo::try_new(classes)?),
            EvictionPolicy::ClockPro => Order::ClockPro(ClockPro::try_new(classes, capacity)?),
        };
        let mut lens = Vec::new();
        lens.try_reserve_exact(classes).map_err(|_| OutOfMemory)?;
        lens.resize(classes, 0);
        Ok(IdleSet { order, count: 0, bytes: 0, first_tag, lens })
    }

    #[cfg(test)]
    pub(crate) fn new(policy: EvictionPolicy, classes: usize, capacity: usize) -> IdleSet {
        IdleSet::try_new(policy, classes, capacity, 1).unwrap()
    }

    /// Idle buffers of `class` held.
    pub(crate) fn class_len(&self, class: usize) -> usize {
        self.lens.get(class).map_or(0, |&n| n as usize)
    }

    fn class_of(&self, raw: &RawBuf) -> usize {
        raw.tag_class().wrapping_sub(self.first_tag)
    }

    /// Books a buffer of `class` leaving the set.
    fn left(&mut self, class: usize, cap: usize) {
        self.count -= 1;
        self.bytes -= cap;
        self.lens[class] -= 1;
    }

    /// Idle decay: releases (to `out`) the buffers returned at or before
    /// `cutoff` (monotonic ns), oldest first, at most `max` of them.
    /// Returns how many went, and when the oldest buffer left was returned
    /// (None: nothing idle).
    pub(crate) fn decay(&mut self, cutoff: u64, max: usize, out: &mut impl FnMut(RawBuf)) -> (usize, Option<u64>) {
        let mut released = 0;
        for class in 0..self.lens.len() {
            while released < max {
                let raw = match &mut self.order {
                    Order::Lifo(o) => o.pop_idle_since(class, cutoff),
                    Order::ClockPro(o) => o.pop_idle_since(class, cutoff),
                };
                let Some(raw) = raw else { break };
                self.left(class, raw.capacity());
                released += 1;
                out(raw);
            }
        }
        self.check();
        let oldest = (0..self.lens.len())
            .filter_map(|k| match &self.order {
                Order::Lifo(o) => o.oldest(k),
                Order::ClockPro(o) => o.oldest(k),
            })
            .min();
        (released, oldest)
    }

    fn check(&self) {
        if cfg!(debug_assertions) {
            debug_assert_eq!(self.lens.iter().map(|&n| n as usize).sum::<usize>(), self.count);
        }
    }

    /// Idle buffers held.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// Idle bytes held (sum of capacities).
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bit `k` set when class `k` has an idle buffer.
    pub(crate) fn class_mask(&self) -> u64 {
        match &self.order {
            Order::Lifo(o) => o.class_mask(),
            Order::ClockPro(o) => o.class_mask(),
        }
    }

    /// Keeps `raw`, a buffer of `class` returned at `at` (monotonic ns),
    /// idle; gives it back when the bookkeeping cannot grow (out of memory:
    /// the caller releases it).
    pub(crate) fn insert(&mut self, class: usize, raw: RawBuf, at: u64) -> Result<(), RawBuf> {
        let cap = raw.capacity();
        debug_assert_eq!(self.class_of(&raw), class);
        match &mut self.order {
            Order::Lifo(o) => o.insert(class, raw, at)?,
            Order::ClockPro(o) => o.insert(class, raw, at)?,
        }
        self.count += 1;
        self.bytes += cap;
        self.lens[class] += 1;
        Ok(())
    }

    /// Takes any idle buffer (draining the set one at a time, without
    /// allocating).
    pub(crate) fn pop_any(&mut self) -> Option<RawBuf> {
        let raw = match &mut self.order {
            Order::Lifo(o) => o.pop_any(),
            Order::ClockPro(o) => o.pop_any(),
        }?;
        self.left(self.class_of(&raw), raw.capacity());
        Some(raw)
    }

    /// Reuses an idle buffer of `class`, if there is one.
    pub(crate) fn take(&mut self, class: usize) -> Option<RawBuf> {
        let raw = match &mut self.order {
            Order::Lifo(o) => o.take(class),
            Order::ClockPro(o) => o.take(class),
        }?;
        self.left(class, raw.capacity());
        Some(raw)
    }

    /// Records that a get of `class` found no idle buffer.
    pub(crate) fn note_miss(&mut self, class: usize) {
        match &mut self.order {
            Order::Lifo(_) => {}
            Order::ClockPro(o) => o.note_miss(class),
        }
    }

    /// Picks what the policy releases to make room. `incoming` is the class
    /// of the buffer being returned, if the caller could still refuse it.
    pub(crate) fn evict(&mut self, incoming: Option<usize>) -> Evict {
        let choice = match &mut self.order {
            Order::Lifo(o) => o.evict().map_or(Evict::Nothing, Evict::Victim),
            Order::ClockPro(o) => o.evict(incoming),
        };
        if let Evict::Victim(raw) = &choice {
            self.left(self.class_of(raw), raw.capacity());
        }
        choice
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::RawBuf;
    use crate::region::Region;

    const PAGE: usize = 4096;

    /// A buffer of `class` from a region of its own (closed at once: it
    /// goes away with the buffer).
    fn buf(class: usize) -> RawBuf {
        let caps = (0..class + 1).map(|k| crate::size_class::class_capacity(k, PAGE));
        let region = Region::create(0, caps, false, false, false).unwrap();
        RawBuf::from_slot(region.alloc(class).unwrap(), class)
    }

    fn victim_class(set: &mut IdleSet, incoming: Option<usize>) -> Option<usize> {
        match set.evict(incoming) {
            Evict::Victim(raw) => Some(raw.tag_class() - 1),
            Evict::Incoming => None,
            Evict::Nothing => panic!("nothing to evict"),
        }
    }

    /// Two steady classes cycle through the shard; then a burst of a third,
    /// never reused, is returned into a full shard.
    fn scan(policy: EvictionPolicy) -> Vec<Option<usize>> {
        let mut set = IdleSet::new(policy, 3, 8);
        for _ in 0..4 {
            for class in [0, 1] {
                set.insert(class, buf(class), 0).unwrap();
                set.insert(class, buf(class), 0).unwrap();
                let a = set.take(class).unwrap();
                set.insert(class, a, 0).unwrap();
            }
        }
        // Idle now: 4 of class 0, 4 of class 1 (hot under CLOCK-Pro).
        let mut victims = Vec::new();
        for _ in 0..4 {
            victims.push(victim_class(&mut set, Some(2)));
            set.insert(2, buf(2), 0).unwrap();
        }
        victims
    }

    #[test]
    fn lifo_lets_a_scan_flush_the_steady_classes() {
        // The least recently returned go first: all steady buffers.
        let victims = scan(EvictionPolicy::Lifo);
        assert_eq!(victims, vec![Some(0), Some(0), Some(1), Some(1)]);
    }

    #[test]
    fn clock_pro_sacrifices_the_scan_not_the_steady_classes() {
        let victims = scan(EvictionPolicy::ClockPro);
        // First the incoming scan buffer is refused (nothing cold is idle),
        // then the scan's own idle buffers are the victims.
        assert!(victims.iter().all(|v| *v == Some(2) || v.is_none()), "{victims:?}");
        assert_eq!(victims[0], None);
    }

    #[test]
    fn clock_pro_promotes_a_class_reused_within_its_test_period() {
        let mut set = IdleSet::new(EvictionPolicy::ClockPro, 2, 8);
        set.insert(1, buf(1), 0).unwrap();
        let Order::ClockPro(o) = &set.order else { unreachable!() };
        assert!(!o.is_hot(1));
        let b = set.take(1).unwrap();
        let Order::ClockPro(o) = &set.order else { unreachable!() };
        assert!(o.is_hot(1), "a hit within the test period makes the class hot");
        set.insert(1, b, 0).unwrap();
    }

    #[test]
    fn clock_pro_promotes_a_class_whose_ghost_is_wanted_again() {
        let mut set = IdleSet::new(EvictionPolicy::ClockPro, 2, 8);
        set.insert(0, buf(0), 0).unwrap();
        assert!(matches!(set.evict(None), Evict::Victim(_))); // cold, unreferenced: evicted, leaves a ghost
        set.note_miss(0); // wanted again while the ghost is in test
        let Order::ClockPro(o) = &set.order else { unreachable!() };
        assert!(o.is_hot(0));
    }

    #[test]
    fn clock_pro_still_evicts_when_everything_is_hot() {
        let mut set = IdleSet::new(EvictionPolicy::ClockPro, 1, 8);
        for _ in 0..3 {
            set.insert(0, buf(0), 0).unwrap();
        }
        let b = set.take(0).unwrap(); // hot now
        set.insert(0, b, 0).unwrap();
        assert_eq!(victim_class(&mut set, Some(0)), Some(0), "hot hand demotes, then evicts");
        assert_eq!(set.len(), 2);
    }
}
