//! A shard: one lock around a set of idle buffers.
//!
//! Threads start at their own (affinity) shard and visit the others on a
//! miss; the class mask lets them skip shards with nothing of the class
//! without taking their lock.
//!
//! Invariant: `present` equals `idle.class_mask()` whenever the lock is
//! free (it is only written under the lock, after each change).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::lock::{Mutex, MutexGuard};

use crate::buffer::OutOfMemory;
use crate::config::EvictionPolicy;
use crate::eviction::IdleSet;
use crate::padded::CachePadded;

#[derive(Debug)]
pub(crate) struct Shard(CachePadded<ShardInner>);

#[derive(Debug)]
struct ShardInner {
    idle: Mutex<IdleSet>,
    present: AtomicU64,
}

/// A locked shard; republishes the class mask when dropped.
pub(crate) struct Locked<'a> {
    idle: MutexGuard<'a, IdleSet>,
    present: &'a AtomicU64,
}

impl Shard {
    pub(crate) fn try_new(
        policy: EvictionPolicy,
        classes: usize,
        capacity: usize,
        first_tag: usize,
    ) -> Result<Shard, OutOfMemory> {
        Ok(Shard(CachePadded(ShardInner {
            idle: Mutex::new(IdleSet::try_new(policy, classes, capacity, first_tag)?),
            present: AtomicU64::new(0),
        })))
    }

    /// Whether the shard may hold an idle buffer of `class` (a hint: read
    /// without the lock).
    #[inline]
    pub(crate) fn may_have(&self, class: usize) -> bool {
        self.0.present.load(Ordering::Relaxed) & (1 << class) != 0
    }

    /// Whether the shard may hold any idle buffer (a hint, as above).
    #[inline]
    pub(crate) fn may_have_any(&self) -> bool {
        self.0.present.load(Ordering::Relaxed) != 0
    }

    /// The lock itself, for the fork handlers.
    pub(crate) fn mutex(&self) -> &Mutex<IdleSet> {
        &self.0.idle
    }

    pub(crate) fn lock(&self) -> Locked<'_> {
        Locked { idle: self.0.idle.lock(), present: &self.0.present }
    }

    /// The lock if it is free now (None: another thread holds it).
    pub(crate) fn try_lock(&self) -> Option<Locked<'_>> {
        Some(Locked { idle: self.0.idle.try_lock()?, present: &self.0.present })
    }

    /// The lock: at once if `wait`, else only if it is free now.
    pub(crate) fn lock_if(&self, wait: bool) -> Option<Locked<'_>> {
        if wait {
            Some(self.lock())
        } else {
            self.try_lock()
        }
    }
}

impl std::ops::Deref for Locked<'_> {
    type Target = IdleSet;
    fn deref(&self) -> &IdleSet {
        &self.idle
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut IdleSet {
        &mut self.idle
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        self.present.store(self.idle.class_mask(), Ordering::Relaxed);
    }
}
