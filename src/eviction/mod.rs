//! The idle buffers of one shard, kept in the order an eviction policy
//! needs. A shard holds one [`IdleSet`] behind its lock.
//!
//! Vocabulary shared by the policies: a buffer becomes *idle* when it is
//! inserted (returned to the shard), is *taken* when a get reuses it (a hit
//! for its class), and is *evicted* when the budget needs room: evicted
//! buffers leave the pool and go back to the system.

mod lifo;

use crate::buffer::RawBuf;
use crate::config::EvictionPolicy;

use lifo::Lifo;

/// Idle buffers of one shard, by class, with their count and bytes.
#[derive(Debug)]
pub(crate) struct IdleSet {
    order: Order,
    count: usize,
    bytes: usize,
}

#[derive(Debug)]
enum Order {
    Lifo(Lifo),
}

impl IdleSet {
    pub(crate) fn new(policy: EvictionPolicy, classes: usize) -> IdleSet {
        let order = match policy {
            // CLOCK-Pro keeps LIFO order until its own module lands.
            EvictionPolicy::Lifo | EvictionPolicy::ClockPro => Order::Lifo(Lifo::new(classes)),
        };
        IdleSet { order, count: 0, bytes: 0 }
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
        }
    }

    /// Keeps `raw`, a buffer of `class`, idle.
    pub(crate) fn insert(&mut self, class: usize, raw: RawBuf) {
        self.count += 1;
        self.bytes += raw.capacity();
        match &mut self.order {
            Order::Lifo(o) => o.insert(class, raw),
        }
    }

    /// Reuses an idle buffer of `class`, if there is one.
    pub(crate) fn take(&mut self, class: usize) -> Option<RawBuf> {
        let raw = match &mut self.order {
            Order::Lifo(o) => o.take(class),
        }?;
        self.count -= 1;
        self.bytes -= raw.capacity();
        Some(raw)
    }

    /// Picks the buffer the policy releases first, and removes it.
    pub(crate) fn evict(&mut self) -> Option<RawBuf> {
        let raw = match &mut self.order {
            Order::Lifo(o) => o.evict(),
        }?;
        self.count -= 1;
        self.bytes -= raw.capacity();
        Some(raw)
    }

    /// Removes every idle buffer.
    pub(crate) fn drain(&mut self) -> Vec<RawBuf> {
        self.count = 0;
        self.bytes = 0;
        match &mut self.order {
            Order::Lifo(o) => o.drain(),
        }
    }
}
