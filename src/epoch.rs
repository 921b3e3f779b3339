//! The trim/close epoch: one global word that moves whenever a pool is
//! trimmed or closed (or its idle-decay period turns), so every thread
//! notices with one load per call and syncs its caches at its next call
//! (API.md guarantee 8). It lives below the thread caches so that the
//! shared pool state can move it without importing them.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{AcqRel, Relaxed};

/// Moves whenever a pool is trimmed or closed: each thread's next call (on
/// any pool) then syncs its caches (API.md guarantee 8), for one shared
/// load per call instead of one per pool.
pub(crate) static EPOCH: AtomicU64 = AtomicU64::new(0);

/// Tells every thread to sync its caches with their pools at its next
/// call (a pool was trimmed or closed: its state moved first).
pub(crate) fn pool_changed() {
    EPOCH.fetch_add(1, AcqRel);
}

/// The current epoch, for holders of a cache outside the table.
#[inline(always)]
pub(crate) fn epoch() -> u64 {
    EPOCH.load(Relaxed)
}

