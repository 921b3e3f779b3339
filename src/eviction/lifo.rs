//! LIFO: per class, a get takes the most recently returned buffer; under
//! pressure the least recently returned buffer of any class goes first.
//!
//! Each class is a deque ordered by return time (a shard-local stamp):
//! `take` pops the back, `evict` pops the front with the oldest stamp.

use std::collections::VecDeque;

use crate::buffer::{OutOfMemory, RawBuf};

#[derive(Debug)]
pub(super) struct Lifo {
    classes: Vec<VecDeque<(u64, u64, RawBuf)>>,
    clock: u64,
}

impl Lifo {
    pub(super) fn try_new(classes: usize) -> Result<Lifo, OutOfMemory> {
        let mut v = Vec::new();
        v.try_reserve_exact(classes).map_err(|_| OutOfMemory)?;
        v.resize_with(classes, VecDeque::new);
        Ok(Lifo { classes: v, clock: 0 })
    }

    pub(super) fn class_mask(&self) -> u64 {
        self.classes.iter().enumerate().filter(|(_, q)| !q.is_empty()).fold(0, |mask, (k, _)| mask | 1 << k)
    }

    pub(super) fn insert(&mut self, class: usize, raw: RawBuf, at: u64) -> Result<(), RawBuf> {
        let q = &mut self.classes[class];
        if q.try_reserve(1).is_err() {
            return Err(raw);
        }
        self.clock += 1;
        q.push_back((self.clock, at, raw));
        Ok(())
    }

    pub(super) fn take(&mut self, class: usize) -> Option<RawBuf> {
        self.classes.get_mut(class)?.pop_back().map(|(_, _, raw)| raw)
    }

    pub(super) fn evict(&mut self) -> Option<RawBuf> {
        let oldest =
            self.classes.iter().enumerate().filter_map(|(k, q)| q.front().map(|(stamp, _, _)| (*stamp, k))).min()?;
        self.classes[oldest.1].pop_front().map(|(_, _, raw)| raw)
    }

    /// The least recently returned buffer of `class`, if it was returned
    /// at or before `cutoff`.
    pub(super) fn pop_idle_since(&mut self, class: usize, cutoff: u64) -> Option<RawBuf> {
        let q = self.classes.get_mut(class)?;
        if q.front()?.1 > cutoff {
            return None;
        }
        q.pop_front().map(|(_, _, raw)| raw)
    }

    /// When the least recently returned buffer of `class` was returned.
    pub(super) fn oldest(&self, class: usize) -> Option<u64> {
        self.classes.get(class)?.front().map(|e| e.1)
    }

    pub(super) fn pop_any(&mut self) -> Option<RawBuf> {
        self.classes.iter_mut().find_map(|q| q.pop_back()).map(|(_, _, raw)| raw)
    }
}
