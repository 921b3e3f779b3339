//! LIFO: per class, a get takes the most recently returned buffer; under
//! pressure the least recently returned buffer of any class goes first.
//!
//! Each class is a deque ordered by return time (a shard-local stamp):
//! `take` pops the back, `evict` pops the front with the oldest stamp.

use std::collections::VecDeque;

use crate::buffer::RawBuf;

#[derive(Debug)]
pub(super) struct Lifo {
    classes: Vec<VecDeque<(u64, RawBuf)>>,
    clock: u64,
}

impl Lifo {
    pub(super) fn new(classes: usize) -> Lifo {
        Lifo { classes: (0..classes).map(|_| VecDeque::new()).collect(), clock: 0 }
    }

    pub(super) fn class_mask(&self) -> u64 {
        self.classes
            .iter()
            .enumerate()
            .filter(|(_, q)| !q.is_empty())
            .fold(0, |mask, (k, _)| mask | 1 << k)
    }

    pub(super) fn insert(&mut self, class: usize, raw: RawBuf) {
        self.clock += 1;
        self.classes[class].push_back((self.clock, raw));
    }

    pub(super) fn take(&mut self, class: usize) -> Option<RawBuf> {
        self.classes.get_mut(class)?.pop_back().map(|(_, raw)| raw)
    }

    pub(super) fn evict(&mut self) -> Option<RawBuf> {
        let oldest = self
            .classes
            .iter()
            .enumerate()
            .filter_map(|(k, q)| q.front().map(|(stamp, _)| (*stamp, k)))
            .min()?;
        self.classes[oldest.1].pop_front().map(|(_, raw)| raw)
    }

    pub(super) fn drain(&mut self) -> Vec<RawBuf> {
        self.classes.iter_mut().flat_map(|q| q.drain(..).map(|(_, raw)| raw)).collect()
    }
}
