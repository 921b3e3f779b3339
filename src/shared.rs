//! The part of a pool that all threads share: shards of idle buffers, the
//! idle-memory budget, and the slow paths that touch them.
//!
//! The budget's accounting is [`Budget`]'s (see `budget.rs` for its
//! invariant); this module decides what is evicted to make room.
//!
//! Lifetime: a `Shared` lives in an `Arc` held by the pool handles and by
//! each thread cache of the pool (one reference per cache, none per
//! buffer). Buffers find their pool again by id (see `pool::give_back`), so
//! a buffer outliving its pool is simply released.

use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::budget::Budget;
use crate::buffer::{OneOff, OutOfMemory, Pin, RawBuf};
use crate::config::{Config, EvictionPolicy, Zeroing};
use crate::eviction::Evict;
use crate::lock::ForkLock;
use crate::pack::Field;
use crate::padded::CachePadded;
use crate::region::{Region, RegionHandle};
use crate::shard::Shard;
use crate::stats::{CounterRegistry, SharedCounters, Stats};

// `state`'s fields: CLOSED, then the trim generation.
const CLOSED_FLAG: Field = Field::new(0, 1);
const TRIM_GENERATION: Field = CLOSED_FLAG.above(63);
/// `state` bit set once the last pool handle is gone.
pub(crate) const CLOSED: u64 = CLOSED_FLAG.one();
/// What `trim` adds to `state`, so caches notice it.
const TRIM_STEP: u64 = TRIM_GENERATION.one();
/// Idle decay releases at most this many buffers per call (shards and a
/// thread's own cache each), so that no call pays for a whole pool.
pub(crate) const DECAY_BATCH: usize = 8;
/// How many times `stats` reads the thread caches while the budget moves.
const STATS_TRIES: usize = 16;

pub(crate) struct Shared {
    pub(crate) id: u64,
    pub(crate) cfg: Config,
    /// Trim generation and CLOSED bit, read on every fast-path call.
    state: CachePadded<AtomicU64>,
    budget: Budget,
    shards: Box<[Shard]>,
    next_home: AtomicUsize,
    pub(crate) handles: AtomicUsize,
    pub(crate) counters: SharedCounters,
    pub(crate) registry: CounterRegistry,
    /// Idle decay (see [`Shared::decay`]): no shard buffer is due before
    /// this (monotonic ns; a lower bound, lowered by every insert); a
    /// thread is decaying the shards; when threads are next told to decay
    /// their caches.
    decay_due: AtomicU64,
    decaying: AtomicBool,
    wake_due: AtomicU64,
    /// The pool's memory. Last, so that the idle buffers in the shards are
    /// given back before the region is closed.
    pub(crate) region: RegionHandle,
}

impl Shared {
    /// Everything a pool needs up front, allocated fallibly.
    pub(crate) fn try_new(id: u64, cfg: Config) -> Result<Shared, OutOfMemory> {
        let mut shards = Vec::new();
        shards.try_reserve_exact(cfg.num_shards).map_err(|_| OutOfMemory)?;
        for _ in 0..cfg.num_shards {
            let first_tag = cfg.classes.global(0) + 1;
            shards.push(Shard::try_new(cfg.policy, cfg.classes.count(), cfg.max_buffers_per_shard, first_tag)?);
        }
        let shards = shards.into_boxed_slice();
        let caps = (0..cfg.classes.count()).map(|k| cfg.classes.capacity(k));
        let region = Region::create(id, caps, cfg.canary, cfg.pinned, cfg.huge_pages)?;
        let max_pooled_bytes = cfg.max_pooled_bytes;
        let cfg_decay = cfg.idle_decay_ns;
        Ok(Shared {
            region,
            id,
            cfg,
            state: CachePadded(AtomicU64::new(0)),
            budget: Budget::new(max_pooled_bytes),
            shards,
            next_home: AtomicUsize::new(0),
            handles: AtomicUsize::new(1),
            counters: SharedCounters::default(),
            registry: CounterRegistry::default(),
            decay_due: AtomicU64::new(u64::MAX),
            decaying: AtomicBool::new(false),
            wake_due: AtomicU64::new(crate::os::monotonic_ns().saturating_add(cfg_decay)),
        })
    }

    /// The trim generation and CLOSED bit.
    #[inline]
    pub(crate) fn state(&self) -> u64 {
        self.state.load(Ordering::Relaxed)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state.load(Ordering::Acquire) & CLOSED != 0
    }

    /// Affinity shard for a new thread cache: round robin spreads threads.
    pub(crate) fn next_home(&self) -> usize {
        self.next_home.fetch_add(1, Ordering::Relaxed) & (self.shards.len() - 1)
    }

    /// Reserves `bytes` of the idle budget if it fits as it is.
    pub(crate) fn try_reserve(&self, bytes: usize) -> bool {
        self.budget.try_reserve(bytes)
    }

    /// Reserves `bytes` for a returned buffer of class `incoming`, evicting
    /// idle buffers (the policy's choice, `home` shard first) until they
    /// fit. False when nothing is left to evict, or when the policy would
    /// rather release the incoming buffer than an idle one.
    pub(crate) fn reserve(&self, bytes: usize, home: usize, incoming: usize) -> bool {
        loop {
            if self.try_reserve(bytes) {
                return true;
            }
            match self.evict_one(home, Some(incoming)) {
                Evict::Victim(victim) => self.release_evicted(victim),
                Evict::Incoming | Evict::Nothing => return false,
            }
        }
    }

    pub(crate) fn unreserve(&self, bytes: usize) {
        self.budget.unreserve(bytes);
    }

    fn release_evicted(&self, victim: RawBuf) {
        self.unreserve(victim.capacity());
        SharedCounters::bump(&self.counters.evictions, 1);
        drop(victim); // scrubs and unmaps, outside any lock
    }

    fn shard(&self, home: usize, i: usize) -> &Shard {
        &self.shards[(home + i) & (self.shards.len() - 1)]
    }

    /// Asks the shards' policies, `home` first, for something to release.
    fn evict_one(&self, home: usize, incoming: Option<usize>) -> Evict {
        for i in 0..self.shards.len() {
            let shard = self.shard(home, i);
            if !shard.may_have_any() {
                continue;
            }
            match shard.lock().evict(incoming) {
                Evict::Nothing => continue,
                choice => return choice,
            }
        }
        Evict::Nothing
    }

    /// Moves up to `want` idle buffers of `class` into `out`, from the
    /// `home` shard or else the first other shard that has some. Their
    /// reservation moves with them. Returns how many moved.
    /// A shard another thread holds is passed over at first (contention
    /// between a producer and a consumer otherwise serializes them), and
    /// waited for only if no free shard had the class.
    pub(crate) fn take(&self, home: usize, class: usize, want: usize, mut out: impl FnMut(RawBuf)) -> usize {
        let mut busy = false;
        for wait in [false, true] {
            for i in 0..self.shards.len() {
                let shard = self.shard(home, i);
                if !shard.may_have(class) {
                    continue;
                }
                let Some(mut idle) = shard.lock_if(wait) else {
                    busy = true;
                    continue;
                };
                let mut got = 0;
                while got < want {
                    match idle.take(class) {
                        Some(raw) => out(raw),
                        None => break,
                    }
                    got += 1;
                }
                drop(idle);
                if got > 0 {
                    SharedCounters::bump(&self.counters.shard_hits, 1);
                    return got;
                }
            }
            if !busy {
                break;
            }
        }
        // A miss everywhere: CLOCK-Pro learns from it (a wanted ghost).
        if self.cfg.policy == EvictionPolicy::ClockPro {
            self.shards[home].lock().note_miss(class);
        }
        0
    }

    /// Keeps buffers (already reserved) idle: in the `home` shard, then in
    /// other shards, each holding at most `max_buffers_per_shard` of a
    /// class; when every shard is full of the class, the home shard's
    /// policy picks what is released.
    /// Moves every buffer out of `bufs` (left empty, its capacity kept: no
    /// allocation), several per lock.
    pub(crate) fn stash(&self, home: usize, bufs: &mut Vec<RawBuf>) {
        self.stash_from(home, || bufs.pop());
    }

    fn stash_from(&self, home: usize, next: impl FnMut() -> Option<RawBuf>) {
        self.stash_unchecked(home, next);
        if self.is_closed() {
            // Stashed in a race with `close`, maybe after its drain (the
            // shard lock orders the two: a stash after the drain sees
            // CLOSED here): nothing may stay idle in a closed pool.
            self.drain_shards();
        }
    }

    fn stash_unchecked(&self, home: usize, mut next: impl FnMut() -> Option<RawBuf>) {
        let max = self.cfg.max_buffers_per_shard;
        let classes = &self.cfg.classes;
        let now = self.note_idle();
        let mut carry = next();
        // Free shards first (as in `take`), then waiting for busy ones.
        for wait in [false, true] {
            for i in 0..self.shards.len() {
                if carry.is_none() {
                    return;
                }
                let Some(mut idle) = self.shard(home, i).lock_if(wait) else {
                    continue;
                };
                // Each class up to `max` here; a class full here tries the
                // next shard.
                while let Some(raw) = carry.take() {
                    let class = classes.class_of_tag(raw.tag_class());
                    if idle.class_len(class) >= max {
                        carry = Some(raw);
                        break;
                    }
                    if let Err(raw) = idle.insert(class, raw, now) {
                        self.release_evicted(raw); // no memory for the bookkeeping
                    }
                    carry = next();
                }
            }
        }
        if carry.is_none() {
            return;
        }
        let mut idle = self.shards[home].lock();
        while let Some(raw) = carry.take() {
            match idle.insert(classes.class_of_tag(raw.tag_class()), raw, now) {
                Err(raw) => self.release_evicted(raw),
                // Released under the shard lock (shard, then region: the
                // order the fork handlers take them in).
                Ok(()) => match idle.evict(None) {
                    Evict::Victim(victim) => self.release_evicted(victim),
                    Evict::Incoming | Evict::Nothing => {}
                },
            }
            carry = next();
        }
    }

    /// A buffer of `class` from the memory layer, for `len` bytes.
    pub(crate) fn allocate(&self, class: usize, len: usize) -> Result<RawBuf, OutOfMemory> {
        let cap = self.cfg.classes.capacity(class);
        let slot = self.region.alloc(class)?;
        let (pin, recycled) = (slot.pin, slot.recycled);
        let mut raw = RawBuf::from_slot(slot, self.cfg.classes.global(class));
        if recycled {
            // Zero pages, unless a stale pointer wrote since: `Always`
            // clears them.
            raw.reuse_released(len, self.cfg.zeroing == Zeroing::Always);
        }
        self.count_allocation(cap, pin);
        Ok(raw)
    }

    fn count_allocation(&self, bytes: usize, pin: Pin) {
        SharedCounters::bump(&self.counters.allocations, 1);
        SharedCounters::bump(&self.counters.allocated_bytes, bytes as u64);
        if pin == Pin::Refused {
            SharedCounters::bump(&self.counters.pin_failures, 1);
        }
    }

    /// A one-off buffer of `cap` bytes, above the largest class.
    pub(crate) fn get_one_off(&self, cap: usize) -> Result<OneOff, OutOfMemory> {
        let slot = self.region.alloc_one_off(cap)?;
        let (pin, recycled) = (slot.pin, slot.recycled);
        let mut one = OneOff::from_slot(slot, cap);
        if recycled && self.cfg.zeroing == Zeroing::Always {
            // Zero pages, unless a stale pointer wrote since.
            one.zero();
        }
        self.count_allocation(cap, pin);
        SharedCounters::bump(&self.counters.gets, 1);
        Ok(one)
    }

    /// Counts a rejected C put; `returned` counts it as a put as well.
    pub(crate) fn count_rejected(&self, returned: bool) {
        SharedCounters::bump(&self.counters.rejected_puts, 1);
        if returned {
            SharedCounters::bump(&self.counters.puts, 1);
        }
    }

    /// Counts the return of a one-off buffer by a thread without a cache.
    pub(crate) fn count_put(&self) {
        SharedCounters::bump(&self.counters.puts, 1);
    }

    /// Get without a thread cache (thread-local storage already destroyed).
    pub(crate) fn get_uncached(&self, class: usize, len: usize) -> Result<RawBuf, OutOfMemory> {
        let mut one = None;
        let raw = if self.take(self.next_home(), class, 1, |raw| one = Some(raw)) == 1 {
            let mut raw = one.expect("take moved one buffer");
            self.unreserve(raw.capacity());
            self.reuse(&mut raw, len);
            raw
        } else {
            self.allocate(class, len)?
        };
        SharedCounters::bump(&self.counters.gets, 1);
        Ok(raw)
    }

    /// Put without a thread cache of a buffer handed out for `len` bytes.
    pub(crate) fn put_uncached(&self, mut raw: RawBuf, len: usize) {
        SharedCounters::bump(&self.counters.puts, 1);
        raw.retire(len, self.cfg.zeroing.scrubs_on_put());
        self.keep(raw, self.next_home());
    }

    /// Keeps a returned (and scrubbed) buffer idle in the `home` shard if
    /// the budget allows, evicting per policy; otherwise releases it.
    pub(crate) fn keep(&self, raw: RawBuf, home: usize) {
        if self.is_closed() {
            return; // the pool is gone: `raw` is released
        }
        let class = self.cfg.classes.class_of_tag(raw.tag_class());
        if self.reserve(raw.capacity(), home, class) {
            let mut one = Some(raw);
            self.stash_from(home, || one.take());
        } else {
            SharedCounters::bump(&self.counters.evictions, 1);
        }
    }

    /// Hands an idle buffer out again, its first `len` bytes zeroed under
    /// `Always` (fresh mappings are zero already).
    #[inline]
    pub(crate) fn reuse(&self, raw: &mut RawBuf, len: usize) {
        if raw.reuse(len, self.cfg.zeroing == Zeroing::Always) {
            SharedCounters::bump(&self.counters.dirty_gets, 1);
        }
    }

    /// Releases every idle buffer in the shards and tells thread caches to
    /// release theirs at their next call.
    pub(crate) fn trim(&self) {
        self.state.fetch_add(TRIM_STEP, Ordering::AcqRel);
        crate::epoch::pool_changed();
        self.drain_shards();
    }

    /// The last handle is gone: release the shards; caches follow at their
    /// next call or thread exit.
    pub(crate) fn close(&self) {
        self.state.fetch_or(CLOSED, Ordering::AcqRel);
        crate::epoch::pool_changed();
        self.drain_shards();
        // The memory goes back once the last slot does, whoever still holds
        // this shared part (a stale thread cache, a `zp_local`).
        self.region.close();
    }

    fn drain_shards(&self) {
        for shard in self.shards.iter() {
            // One at a time, released under the lock: no allocation.
            let mut idle = shard.lock();
            while let Some(raw) = idle.pop_any() {
                self.unreserve(raw.capacity());
                drop(raw);
            }
        }
        self.region.give_back_pending();
    }

    /// Sums the counters. All shard locks are held while the thread caches
    /// are read: buffers move between a cache and a shard only under the
    /// shard's lock, and a cache publishes a decrease before a shard gets
    /// the buffer, so nothing idle is counted twice.
    ///
    /// Nor are the same budget bytes counted twice: one cache may give up
    /// credit (release or decay its buffers) and another take it and fill
    /// it between their two reads. A cache's idle bytes stay within its
    /// credit (plus a reservation of its own in flight), and with the shard
    /// locks held, credit changes only through the budget, so when the
    /// budget's generation is the same after the caches were read as
    /// before, their sum plus the shards' is at most what was reserved, and
    /// so within the budget. A cache publishes its idle word with Release
    /// and the fence below pairs with it: a read that saw a cache fill
    /// credit it just reserved also sees that reservation's generation. A
    /// thread moves the budget a few times at most before it waits for a
    /// shard lock, so the reads settle within a few tries; past
    /// [`STATS_TRIES`] the last sum is returned (approximate, as a snapshot
    /// taken while others work is documented to be).
    pub(crate) fn stats(&self) -> Stats {
        let mut locked = Vec::new();
        if locked.try_reserve_exact(self.shards.len()).is_err() {
            // No memory to hold every lock at once: a snapshot taken shard
            // by shard (approximate while other threads work).
            let idle = self.shards.iter().fold((0u64, 0u64), |(n, b), s| {
                let s = s.lock();
                (n + s.len() as u64, b + s.bytes() as u64)
            });
            return self.registry.snapshot(&self.counters, idle);
        }
        locked.extend(self.shards.iter().map(Shard::lock));
        let idle = locked.iter().fold((0u64, 0u64), |(n, b), s| (n + s.len() as u64, b + s.bytes() as u64));
        let mut stats = Stats::default();
        for _ in 0..STATS_TRIES {
            let generation = self.budget.generation();
            stats = self.registry.snapshot(&self.counters, idle);
            fence(Ordering::Acquire);
            if self.budget.generation() == generation {
                break;
            }
        }
        drop(locked);
        stats
    }

    /// Every lock of this pool but its region's, in the order they are
    /// taken together (shards by index, then the counter registry, as
    /// `stats` does). The fork handlers take the region's with every live
    /// region's (`region::regions_lock`): a region can outlive its pool.
    pub(crate) fn locks(&self) -> impl DoubleEndedIterator<Item = &dyn ForkLock> {
        // No allocation: the fork handlers run this inside fork().
        let shards = self.shards.iter().map(|s| s.mutex() as &dyn ForkLock);
        shards.chain(std::iter::once(self.registry.mutex() as &dyn ForkLock))
    }

    /// The time buffers going idle now are stamped with (monotonic ns),
    /// with idle decay told that they will be due one period later.
    fn note_idle(&self) -> u64 {
        let period = self.cfg.idle_decay_ns;
        if period == 0 {
            return 0;
        }
        let now = crate::os::monotonic_ns();
        self.decay_due.fetch_min(now.saturating_add(period), Ordering::Relaxed);
        now
    }

    /// Idle decay of the shards at time `now` (monotonic ns), called by the
    /// thread caches every few gets and on their slow paths: buffers idle in
    /// a shard for `idle_decay` or longer are released (scrubbed, their
    /// pages given back), oldest first, at most [`DECAY_BATCH`] per call
    /// (the next call goes on), by one thread at a time. Once per period it
    /// also tells every thread to decay its own cache at its next call.
    pub(crate) fn decay(&self, now: u64) {
        let period = self.cfg.idle_decay_ns;
        if period == 0 {
            return;
        }
        let wake = self.wake_due.load(Ordering::Relaxed);
        if now >= wake
            && self
                .wake_due
                .compare_exchange(wake, now.saturating_add(period), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            crate::epoch::pool_changed();
            // Slots released since (evicted ones wait for a batch of their
            // class, up to 1 MiB) leave the resident set once a period too.
            self.region.give_back_pending();
        }
        if now < self.decay_due.load(Ordering::Relaxed) || self.decaying.swap(true, Ordering::Acquire) {
            return;
        }
        // Inserts during the pass lower it again (`note_idle`); the pass
        // lowers it to what it leaves behind.
        self.decay_due.store(u64::MAX, Ordering::Relaxed);
        let cutoff = now.saturating_sub(period);
        let mut left = DECAY_BATCH;
        let mut next = u64::MAX;
        for shard in self.shards.iter() {
            if left == 0 {
                next = now; // cut short: the next call goes on
                break;
            }
            if !shard.may_have_any() {
                continue;
            }
            let mut idle = shard.lock();
            // Released under the shard lock (shard, then region: the order
            // the fork handlers take them in).
            let (released, oldest) = idle.decay(cutoff, left, &mut |raw: RawBuf| {
                self.unreserve(raw.capacity());
                drop(raw);
            });
            drop(idle);
            left -= released;
            SharedCounters::bump(&self.counters.decayed, released as u64);
            if let Some(at) = oldest {
                next = next.min(if left == 0 { now } else { at.saturating_add(period) });
            }
        }
        self.decay_due.fetch_min(next, Ordering::Relaxed);
        self.decaying.store(false, Ordering::Release);
        if left < DECAY_BATCH {
            // Out of the resident set now, not with a later batch.
            self.region.give_back_pending();
        }
    }

    /// Bytes reserved now (idle bytes plus thread-cache credit).
    #[cfg(test)]
    pub(crate) fn reserved(&self) -> usize {
        self.budget.reserved()
    }
}
