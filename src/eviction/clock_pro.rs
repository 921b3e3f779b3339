//! CLOCK-Pro (Jiang, Chen and Zhang, USENIX ATC 2005) adapted to a buffer
//! pool.
//!
//! # The adaptation
//!
//! Idle buffers of one size class are interchangeable, so what the policy
//! learns about is the class, and what it releases is a buffer:
//!
//! - A **page** is one buffer's worth of idle memory of a class. A
//!   *resident* page is an idle buffer; a *non-resident* page (a **ghost**)
//!   remembers a buffer of that class the policy evicted recently.
//! - A **reference** to a class is a get of that class that reaches the
//!   shard (thread-cache hits never do: they are the fast path). It is a
//!   **hit** when the shard has an idle buffer of the class, a **miss**
//!   otherwise.
//! - A class is **hot** or **cold**. A cold class gets a **test period**
//!   when its buffers become idle, and each evicted buffer leaves a ghost
//!   with a test period. Periods are counted in insertions into the shard
//!   (`window` of them, the shard's capacity in buffers), standing in for
//!   the paper's test hand.
//! - A class referenced during its test period (a hit on its idle buffers,
//!   or a miss while one of its ghosts is still in its test period) has a
//!   reuse distance shorter than the pool's memory: it becomes hot.
//! - The **cold hand** circles the classes. A cold class that was referenced
//!   since the hand last passed gets a second chance (a new test period, or
//!   promotion if still in test); an unreferenced cold class loses its
//!   oldest idle buffer, which becomes a ghost.
//! - When the cold hand finds no victim: a cold incoming buffer is refused
//!   (a first-time page that is not re-referenced is the first to go, so a
//!   burst of a rare size never displaces hot classes); otherwise the
//!   **hot hand** clears reference bits of hot classes and demotes the
//!   unreferenced ones, whose oldest buffer then goes.
//!
//! Scan resistance follows: a one-off burst of a rare size inserts a cold
//! class whose buffers are never taken again, so they are the cold hand's
//! victims (or are refused), while the classes in steady use stay hot.

use std::collections::VecDeque;

use super::evict::Evict;
use crate::buffer::{OutOfMemory, RawBuf};

#[derive(Debug, Default)]
struct Class {
    /// Idle buffers, oldest first, with when each was returned.
    idle: VecDeque<(u64, RawBuf)>,
    hot: bool,
    referenced: bool,
    /// Resident pages are in their test period while `now < test_until`.
    test_until: u64,
    /// Ghosts of this class are in their test period while `now < ghost_until`.
    ghost_until: u64,
}

#[derive(Debug)]
pub(super) struct ClockPro {
    classes: Vec<Class>,
    cold_hand: usize,
    hot_hand: usize,
    /// Insertions so far: the clock test periods are measured on.
    now: u64,
    /// Length of a test period, in insertions.
    window: u64,
}

impl ClockPro {
    pub(super) fn try_new(classes: usize, window: usize) -> Result<ClockPro, OutOfMemory> {
        let mut v = Vec::new();
        v.try_reserve_exact(classes).map_err(|_| OutOfMemory)?;
        v.resize_with(classes, Class::default);
        Ok(ClockPro { classes: v, cold_hand: 0, hot_hand: 0, now: 0, window: window.max(1) as u64 })
    }

    pub(super) fn class_mask(&self) -> u64 {
        self.classes.iter().enumerate().filter(|(_, c)| !c.idle.is_empty()).fold(0, |m, (k, _)| m | 1 << k)
    }

    pub(super) fn insert(&mut self, class: usize, raw: RawBuf, at: u64) -> Result<(), RawBuf> {
        if self.classes[class].idle.try_reserve(1).is_err() {
            return Err(raw);
        }
        self.now += 1;
        let now = self.now;
        let c = &mut self.classes[class];
        if !c.hot && c.idle.is_empty() && c.test_until <= now {
            c.test_until = now + self.window;
        }
        c.idle.push_back((at, raw));
        Ok(())
    }

    /// A hit: the most recently returned buffer of the class.
    pub(super) fn take(&mut self, class: usize) -> Option<RawBuf> {
        let now = self.now;
        let c = self.classes.get_mut(class)?;
        let (_, raw) = c.idle.pop_back()?;
        c.referenced = true;
        if !c.hot && now < c.test_until {
            c.hot = true;
        }
        Some(raw)
    }

    /// A miss: promotes the class if one of its ghosts is still in test.
    pub(super) fn note_miss(&mut self, class: usize) {
        let now = self.now;
        if let Some(c) = self.classes.get_mut(class) {
            if !c.hot && now < c.ghost_until {
                c.hot = true;
                c.referenced = true;
                c.ghost_until = 0;
            }
        }
    }

    pub(super) fn evict(&mut self, incoming: Option<usize>) -> Evict {
        let n = self.classes.len();
        if n == 0 {
            return Evict::Nothing;
        }
        // Cold hand: two rounds at most (the first may only clear bits).
        for _ in 0..2 * n {
            let k = self.cold_hand;
            self.cold_hand = (k + 1) % n;
            let (now, window) = (self.now, self.window);
            let c = &mut self.classes[k];
            if c.hot || c.idle.is_empty() {
                continue;
            }
            if c.referenced {
                c.referenced = false;
                if now < c.test_until {
                    c.hot = true;
                } else {
                    c.test_until = now + window;
                }
                continue;
            }
            c.ghost_until = now + window;
            return c.idle.pop_front().map_or(Evict::Nothing, |(_, raw)| Evict::Victim(raw));
        }
        if let Some(k) = incoming {
            if self.classes.get(k).is_some_and(|c| !c.hot) {
                return Evict::Incoming;
            }
        }
        // Hot hand: clear reference bits, demote what was not referenced.
        for _ in 0..2 * n {
            let k = self.hot_hand;
            self.hot_hand = (k + 1) % n;
            let c = &mut self.classes[k];
            if !c.hot || c.idle.is_empty() {
                continue;
            }
            if c.referenced {
                c.referenced = false;
                continue;
            }
            c.hot = false;
            c.test_until = 0;
            c.ghost_until = self.now + self.window;
            return c.idle.pop_front().map_or(Evict::Nothing, |(_, raw)| Evict::Victim(raw));
        }
        Evict::Nothing
    }

    /// The least recently returned buffer of `class`, if it was returned
    /// at or before `cutoff`.
    pub(super) fn pop_idle_since(&mut self, class: usize, cutoff: u64) -> Option<RawBuf> {
        let q = &mut self.classes.get_mut(class)?.idle;
        if q.front()?.0 > cutoff {
            return None;
        }
        q.pop_front().map(|(_, raw)| raw)
    }

    /// When the least recently returned buffer of `class` was returned.
    pub(super) fn oldest(&self, class: usize) -> Option<u64> {
        self.classes.get(class)?.idle.front().map(|e| e.0)
    }

    pub(super) fn pop_any(&mut self) -> Option<RawBuf> {
        self.classes.iter_mut().find_map(|c| c.idle.pop_back()).map(|(_, raw)| raw)
    }

    /// Whether `class` is hot (for tests).
    #[cfg(test)]
    pub(super) fn is_hot(&self, class: usize) -> bool {
        self.classes[class].hot
    }
}
