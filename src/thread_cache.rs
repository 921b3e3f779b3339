//! Per-(thread, pool) caches: the fast path.
//!
//! Each thread keeps one [`ThreadCache`] for every pool it uses, found by
//! pool id, so alternating pools keeps every cache warm and a buffer can
//! never be handed to the wrong pool. A hit takes no lock and no atomic
//! read-modify-write: the cache is thread-owned, and its counters are
//! published with plain stores.
//!
//! Invariants of a cache:
//! - `count` and `idle_bytes` are the number and capacity sum of the
//!   buffers in `stacks`; `count <= limit` (+1 transiently inside a call).
//! - `idle_bytes <= credit`: every idle byte is covered by budget reserved in
//!   [`Shared`]; the excess (slack) lets a buffer just handed out come back
//!   without a slow path, and is returned at the next slow path.
//! - `seen` is the pool state this cache last synced with. When the pool
//!   is trimmed or closed, the next call releases everything cached.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::buffer::{OutOfMemory, RawBuf};
use crate::config::Zeroing;
use crate::shared::Shared;
use crate::size_class::SizeClasses;
use crate::stats::{LocalCounters, SharedCounters};
use crate::tls::{self, Table};

// `repr(C)`, in this order: `count` and `idle_bytes` change together on
// every call and must not be neighbours, or the compiler merges their
// updates into one 16-byte vector load that stalls on the two 8-byte stores
// of the previous call (store forwarding fails): measured +5 ns per
// get+put through zp_local.
#[repr(C)]
pub(crate) struct ThreadCache {
    id: u64,
    count: usize,
    shared: Arc<Shared>,
    seen: u64,
    idle_bytes: usize,
    home: usize,
    limit: usize,
    credit: usize,
    scrub: bool,
    zero_on_get: bool,
    classes: SizeClasses,
    stacks: Box<[Vec<RawBuf>]>,
    /// Room for a flush (`limit + 1` buffers), so moving buffers to the
    /// shards never allocates.
    scratch: Vec<RawBuf>,
    hits: u64,
    misses: u64,
    puts: u64,
    counters: Arc<LocalCounters>,
}

/// Bumped whenever a pool closes: each thread's next call (on any pool)
/// then releases its caches of closed pools (API.md guarantee 8), for one
/// shared load per call.
static CLOSES: AtomicU64 = AtomicU64::new(0);

/// Tells every thread to let go of caches of closed pools at its next call.
pub(crate) fn pool_closed() {
    CLOSES.fetch_add(1, Relaxed);
}

/// Releases this thread's caches of closed pools.
#[cold]
fn sweep(table: &Table, closes: u64) {
    table.closes_seen.set(closes);
    table.retain(|tc| !tc.shared.is_closed());
}

/// Runs `f` on this thread's cache for pool `id` (one per pool, in the
/// thread's table direct-mapped by pool id: one thread-local access and one
/// index per call, whatever the number of pools), creating the cache from
/// `attach` on first use (a cache of another pool in the same entry is
/// flushed to its pool and replaced: constant time). None when there is no
/// usable cache: the thread is exiting, the entry is in use further up the
/// stack (re-entry), or `attach` finds no open pool. Callers then take the
/// uncached path.
#[inline(always)]
pub(crate) fn with_cache<R>(
    id: u64,
    attach: impl FnOnce() -> Option<Arc<Shared>>,
    f: impl FnOnce(&mut ThreadCache) -> R,
) -> Option<R> {
    tls::with(
        #[inline(always)]
        |table| {
            let closes = CLOSES.load(Relaxed);
            if closes != table.closes_seen.get() {
                sweep(table, closes);
            }
            let i = id as usize % tls::TABLE;
            match table.take(i) {
                Some(mut tc) if tc.id == id => {
                    let r = f(&mut tc);
                    table.put_back(i, tc);
                    Some(r)
                }
                other => attach_and_run(table, i, other, attach, f),
            }
        },
    )
}

/// First use of a pool in entry `i` (empty, or holding `other`, another
/// pool's cache).
#[cold]
fn attach_and_run<R>(
    table: &Table,
    i: usize,
    other: Option<Box<ThreadCache>>,
    attach: impl FnOnce() -> Option<Arc<Shared>>,
    f: impl FnOnce(&mut ThreadCache) -> R,
) -> Option<R> {
    if let Some(other) = other {
        table.put_back(i, other);
    }
    let shared = attach()?;
    if shared.is_closed() {
        return None;
    }
    // Out of memory for a cache: this call goes uncached.
    let mut tc = crate::os::try_box(ThreadCache::try_new(shared)?).ok()?;
    let r = f(&mut tc);
    match table.install(i, tc) {
        // The previous occupant (another pool's cache) goes back to its pool.
        Ok(previous) => drop(previous),
        Err(tc) => drop(tc), // no caches on this thread: flushed at once
    }
    Some(r)
}

/// Drops this thread's cache for pool `id`, if it has one.
pub(crate) fn detach(id: u64) {
    tls::with(|table| {
        let i = id as usize % tls::TABLE;
        if let Some(tc) = table.take(i) {
            if tc.id == id {
                drop(tc);
            } else {
                table.put_back(i, tc);
            }
        }
    });
}

impl ThreadCache {
    /// A cache for `shared`, every allocation it will ever need made now
    /// and fallibly (None: out of memory; the caller goes uncached).
    pub(crate) fn try_new(shared: Arc<Shared>) -> Option<ThreadCache> {
        let limit = shared.cfg.tls_cache_size;
        let classes = shared.cfg.classes.count();
        let mut stacks = Vec::new();
        stacks.try_reserve_exact(classes).ok()?;
        for _ in 0..classes {
            let mut stack = Vec::new();
            stack.try_reserve_exact(limit + 1).ok()?;
            stacks.push(stack);
        }
        let mut scratch = Vec::new();
        scratch.try_reserve_exact(limit + 1).ok()?;
        // `Arc::new` has no fallible form: probe for its block first.
        if !crate::os::can_allocate(std::mem::size_of::<LocalCounters>() + 2 * std::mem::size_of::<usize>()) {
            return None;
        }
        let counters = Arc::new(LocalCounters::default());
        shared.registry.try_register(counters.clone()).ok()?;
        Some(ThreadCache {
            scratch,
            id: shared.id,
            seen: shared.state(),
            home: shared.next_home(),
            limit,
            scrub: shared.cfg.zeroing.scrubs_on_put(),
            zero_on_get: shared.cfg.zeroing == Zeroing::Always,
            classes: shared.cfg.classes.clone(),
            stacks: stacks.into_boxed_slice(),
            count: 0,
            idle_bytes: 0,
            credit: 0,
            hits: 0,
            misses: 0,
            puts: 0,
            counters,
            shared,
        })
    }

    /// The pool this cache belongs to.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// A buffer of `class` for `len` bytes: from this cache if it has one
    /// (the fast path).
    #[inline(always)]
    pub(crate) fn get(&mut self, class: usize, len: usize) -> Result<RawBuf, OutOfMemory> {
        if self.seen == self.shared.state() {
            if let Some(mut raw) = self.stacks[class].pop() {
                if raw.reuse(len, self.zero_on_get) {
                    self.count_dirty();
                }
                self.count -= 1;
                self.idle_bytes -= raw.capacity();
                self.hits += 1;
                self.counters.hits.store(self.hits, Relaxed);
                self.publish_idle();
                return Ok(raw);
            }
        }
        self.get_slow(class, len)
    }

    #[cold]
    fn get_slow(&mut self, class: usize, len: usize) -> Result<RawBuf, OutOfMemory> {
        self.catch_up();
        let cap = self.classes.capacity(class);
        // One buffer for the caller, plus a batch to refill (magazine style).
        let want = 1 + (self.limit / 2).min(self.limit.saturating_sub(self.count));
        let stack = &mut self.stacks[class];
        let before = stack.len();
        let got = self.shared.take(self.home, class, want, |raw| stack.push(raw));
        // The shard handed them out newest first; keep the newest on top.
        stack[before..].reverse();
        let raw = if got > 0 {
            // Their reservation moved with them: it becomes our credit.
            self.credit += got * cap;
            self.count += got - 1;
            self.idle_bytes += (got - 1) * cap;
            let mut raw = self.stacks[class].pop().expect("take moved at least one buffer");
            self.shared.reuse(&mut raw, len);
            raw
        } else {
            self.shared.allocate(class, len)?
        };
        // Keep credit for this buffer's return only if the cache may hold it.
        self.settle(if self.limit > 0 { cap } else { 0 });
        self.misses += 1;
        self.counters.misses.store(self.misses, Relaxed);
        self.publish_idle();
        Ok(raw)
    }

    /// Takes back a buffer of this pool that was handed out for `len`
    /// bytes; those are scrubbed unless the policy is `Never`.
    #[inline(always)]
    pub(crate) fn put(&mut self, mut raw: RawBuf, len: usize) {
        self.puts += 1;
        self.counters.puts.store(self.puts, Relaxed);
        raw.retire(len, self.scrub);
        let class = self.classes.class_of_log2(raw.log2());
        let cap = raw.capacity();
        if class < self.stacks.len()
            && self.seen == self.shared.state()
            && self.count < self.limit
            && self.idle_bytes + cap <= self.credit
        {
            self.stacks[class].push(raw);
            self.count += 1;
            self.idle_bytes += cap;
            self.publish_idle();
            return;
        }
        self.put_slow(raw);
    }

    /// A get found a buffer written after it was returned (and zeroed it).
    #[cold]
    fn count_dirty(&self) {
        self.counters.dirty_gets.fetch_add(1, Relaxed);
    }

    /// Counts the return of a one-off (unpooled) buffer.
    pub(crate) fn count_put(&mut self) {
        self.puts += 1;
        self.counters.puts.store(self.puts, Relaxed);
    }

    #[cold]
    fn put_slow(&mut self, raw: RawBuf) {
        self.catch_up();
        let class = self.classes.class_of_log2(raw.log2());
        if class >= self.stacks.len() || self.shared.is_closed() {
            return; // not a class of ours, or the pool is gone: released
        }
        if self.limit == 0 {
            self.shared.keep(raw, self.home);
            return;
        }
        if self.count >= self.limit {
            self.flush(|len| len.div_ceil(2));
        }
        let cap = raw.capacity();
        if !self.cover(class) {
            // Let the policy choose among everything idle, this cache included.
            self.flush(|len| len);
            if !self.cover(class) {
                SharedCounters::bump(&self.shared.counters.evictions, 1);
                self.publish_idle();
                return; // no room in the budget: `raw` is released
            }
        }
        self.stacks[class].push(raw);
        self.count += 1;
        self.idle_bytes += cap;
        self.publish_idle();
    }

    /// Makes sure `credit` covers one more idle buffer of `class`.
    fn cover(&mut self, class: usize) -> bool {
        let cap = self.classes.capacity(class);
        let need = (self.idle_bytes + cap).saturating_sub(self.credit);
        if need == 0 {
            return true;
        }
        let ok = if self.idle_bytes == 0 {
            // Nothing of ours is idle: evict elsewhere if the policy agrees.
            self.shared.reserve(need, self.home, class)
        } else {
            self.shared.try_reserve(need)
        };
        if ok {
            self.credit += need;
        }
        ok
    }

    /// Moves the oldest `how_many(len)` buffers of each class to the home
    /// shard, with their credit.
    fn flush(&mut self, how_many: impl Fn(usize) -> usize) {
        debug_assert!(self.scratch.is_empty());
        for stack in self.stacks.iter_mut() {
            let n = how_many(stack.len()).min(stack.len());
            debug_assert!(self.scratch.len() + n <= self.scratch.capacity(), "flush never allocates");
            self.scratch.extend(stack.drain(..n));
        }
        let bytes: usize = self.scratch.iter().map(RawBuf::capacity).sum();
        self.count -= self.scratch.len();
        self.idle_bytes -= bytes;
        self.credit -= bytes;
        // Published before the shard has them, so `stats` never counts a
        // buffer in both places.
        self.publish_idle();
        if !self.scratch.is_empty() {
            self.shared.stash(self.home, &mut self.scratch);
        }
    }

    /// Returns credit beyond the idle bytes plus `slack`.
    fn settle(&mut self, slack: usize) {
        let keep = self.idle_bytes + slack;
        if self.credit > keep {
            self.shared.unreserve(self.credit - keep);
            self.credit = keep;
        }
    }

    /// Catches up with a trim or close: everything cached is released.
    pub(crate) fn catch_up(&mut self) {
        let state = self.shared.state();
        if state == self.seen {
            return;
        }
        self.seen = state;
        self.count = 0;
        self.idle_bytes = 0;
        self.settle(0);
        self.publish_idle();
        // Released (not kept: the pool was trimmed or closed).
        self.stacks.iter_mut().for_each(Vec::clear);
        self.shared.region.give_back_pending();
    }

    #[inline]
    fn publish_idle(&self) {
        self.counters.set_idle(self.count, self.idle_bytes);
    }
}

impl Drop for ThreadCache {
    /// Thread exit (or pool close): cached buffers go back to the shards,
    /// not to the system, unless the pool was trimmed or closed meanwhile.
    fn drop(&mut self) {
        self.catch_up();
        if !self.shared.is_closed() {
            self.flush(|len| len);
        }
        self.stacks.iter_mut().for_each(Vec::clear);
        self.count = 0;
        self.idle_bytes = 0;
        self.settle(0);
        self.publish_idle();
        self.shared.registry.retire(&self.counters, &self.shared.counters);
    }
}
