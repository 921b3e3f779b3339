//! Per-(thread, pool) caches: the fast path.
//!
//! Each thread keeps one [`ThreadCache`] for every pool it uses, found by
//! pool id, so alternating pools keeps every cache warm and a buffer can
//! never be handed to the wrong pool. A hit takes no lock and no atomic
//! read-modify-write: the cache is thread-owned, and its counters are
//! published with plain stores.
//!
//! The fast path ([`ThreadCache::try_get`], [`ThreadCache::try_put`]) is a
//! pop or push on a fixed per-class stack plus the stack depth and the
//! idle word (and, for a put, the put counter; hits are derived, see
//! `LocalCounters::hits`); anything else (empty or full stack, budget, a trim
//! or close seen) returns to the caller, which takes the full path
//! ([`with_cache`]). A trim or close is noticed through one global word,
//! [`EPOCH`], checked once per call for all of a thread's caches.
//!
//! Invariants of a cache:
//! - Class `c`'s stack is `slots[c * depth..][..lens[c]]`, oldest first;
//!   every other slot is `None`. `depth >= limit + 1`, a power of two.
//!   `lens[c] == 0` past the pool's classes.
//! - The published idle word (`counters`) is the number and capacity sum of
//!   the stacked buffers: the cache keeps no other copy. Buffers `<= limit`
//!   (+1 transiently inside a call).
//! - `idle bytes <= credit`: every idle byte is covered by budget reserved in
//!   [`Shared`]; the excess (slack) lets a buffer just handed out come back
//!   without a slow path, and is returned at the next slow path.
//! - `seen` is the pool state this cache last synced with. When the pool
//!   is trimmed or closed, [`EPOCH`] moves, and the next call (through the
//!   thread's table) or the next `Local` call releases everything cached.
//! - The fast path calls nothing that reaches a thread's table (no
//!   allocation, no pool call), which is what lets `tls` run it in place.
//! - Idle decay: `low[c] <= lens[c]` is the fewest buffers class `c`'s
//!   stack held since the cache's decay period began; those at the bottom
//!   of the stack went unused for the whole period, and the first call
//!   after it ends releases them ([`ThreadCache::decay_own`]). A get's pop
//!   counts down `tick`; at 0 the fast path declines, and the full path
//!   reads the clock (every [`TICK`] gets, or at once when the pool's
//!   decay period turned and moved [`EPOCH`]).

use std::sync::atomic::fence;
use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::sync::Arc;

use crate::buffer::{OutOfMemory, RawBuf, Retiring};
use crate::config::Zeroing;
pub(crate) use crate::epoch::epoch;
use crate::epoch::EPOCH;
use crate::region::chunk::SlotHint;
use crate::shared::{Shared, DECAY_BATCH};
use crate::size_class::{SizeClasses, MAX_CLASSES};
use crate::stats::{idle_bytes_of, idle_ceiling, idle_delta, unpack_idle, LocalCounters, SharedCounters};
use crate::tls::{self, Table};

// `repr(C)`: the fields the fast path reads first, together.
#[repr(C)]
pub(crate) struct ThreadCache {
    id: u64,
    /// log2 of the slots per class: `limit + 1` rounded up to a power of
    /// two (a shift, not a multiply, on the fast path).
    depth_log2: u32,
    limit: usize,
    /// `idle_ceiling(limit)`: the fast path's count check in one compare.
    idle_ceiling: u64,
    credit: usize,
    counters: Arc<LocalCounters>,
    scrub: bool,
    zero_on_get: bool,
    /// Buffers on each class's stack.
    lens: [u16; MAX_CLASSES],
    /// Capacity of each class (0 past the pool's classes).
    caps: [usize; MAX_CLASSES],
    slots: Box<[Entry]>,
    shared: Arc<Shared>,
    seen: u64,
    home: usize,
    classes: SizeClasses,
    /// Room for a flush (`limit + 1` buffers), so moving buffers to the
    /// shards never allocates.
    scratch: Vec<RawBuf>,
    /// Gets until the next look at the clock (idle decay).
    tick: u32,
    /// The fewest buffers each class's stack held this decay period.
    low: [u16; MAX_CLASSES],
    /// When this cache's decay period ends (monotonic ns).
    decay_at: u64,
}

/// A thread cache looks at the clock (for idle decay) every this many gets
/// that its stacks serve, and on every slow path.
pub(crate) const TICK: u32 = 64;

/// A stacked buffer, with its slot's metadata when the put that brought
/// it had looked it up (the C API's), so the next get needs no lookup.
#[derive(Default)]
struct Entry {
    buf: Option<RawBuf>,
    hint: Option<SlotHint>,
}

/// Syncs this thread's caches: trimmed pools' buffers released, closed
/// pools' caches dropped.
#[cold]
fn sweep(table: &Table, epoch: u64) {
    // Pairs with `pool_changed`: the pool states moved before the epoch.
    fence(Acquire);
    table.epoch_seen.set(epoch);
    table.retain(|tc| {
        // A pool's decay period may have turned: look at the clock.
        tc.look_at_clock();
        tc.catch_up();
        !tc.shared.is_closed()
    });
    // The thread's `zp_local` handles too: a closed pool's buffers in
    // their caches go now, not at the handle's next call (guarantee 8).
    table.sync_locals();
}

/// Syncs this thread's caches if a pool changed since its last call. For
/// the calls that reach no cache through the table (`zp_local`, unpooled
/// and too-large gets, rejected puts, stats, pool creation and free), so
/// that any call is "the thread's next call" of API.md guarantee 8.
/// Never from inside a fast path (see the module invariants).
#[cold]
pub(crate) fn sync() {
    tls::with(|table| {
        let epoch = EPOCH.load(Relaxed);
        if epoch != table.epoch_seen.get() {
            sweep(table, epoch);
        }
    });
}

/// The fast path through this thread's table: runs `fast` on the thread's
/// cache for pool `id` in place, when it has one and no pool changed since
/// the last call. `Err(state)` otherwise, or when `fast` declines; the
/// caller then takes the full path ([`with_cache`]). `fast` must be a fast
/// path of [`ThreadCache`] (see the module invariants).
#[inline(always)]
pub(crate) fn fast<S, R>(id: u64, state: S, fast: impl FnOnce(&mut ThreadCache, S) -> Result<R, S>) -> Result<R, S> {
    tls::with(
        #[inline(always)]
        |table| {
            if EPOCH.load(Relaxed) != table.epoch_seen.get() {
                return Err(state);
            }
            table.in_place(id as usize % tls::TABLE, id, state, fast)
        },
    )
}

/// Runs `f` on this thread's cache for pool `id` (one per pool, in the
/// thread's table direct-mapped by pool id: one thread-local access and one
/// index per call, whatever the number of pools), creating the cache from
/// `attach` on first use (a cache of another pool in the same entry is
/// kept aside in the table and swaps back in when its pool is used: no
/// cache is rebuilt when pools whose ids are 1,024 apart alternate). None when there is no
/// usable cache: the thread is exiting, the entry is in use further up the
/// stack (re-entry), or `attach` finds no open pool. Callers then take the
/// uncached path.
#[inline]
pub(crate) fn with_cache<R>(
    id: u64,
    attach: impl FnOnce() -> Option<Arc<Shared>>,
    f: impl FnOnce(&mut ThreadCache) -> R,
) -> Option<R> {
    tls::with(|table| {
        let epoch = EPOCH.load(Relaxed);
        if epoch != table.epoch_seen.get() {
            sweep(table, epoch);
        }
        let i = id as usize % tls::TABLE;
        match table.take_for(i, id) {
            Some(mut tc) if tc.id == id => {
                let r = f(&mut tc);
                table.put_back(i, tc);
                Some(r)
            }
            other => attach_and_run(table, i, other, attach, f),
        }
    })
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
        if let Some(tc) = table.take_for(i, id) {
            if tc.id == id {
                drop(tc);
            } else {
                table.put_back(i, tc);
            }
        }
    });
}

/// A buffer popped from a cache's stack ([`ThreadCache::try_pop`]): its
/// slot's metadata if the cache kept it, and whether the pool zeroes on
/// get (then the taker must [`reuse`](RawBuf::reuse) it with `zero`).
pub(crate) struct Popped {
    pub(crate) raw: RawBuf,
    pub(crate) hint: Option<SlotHint>,
    pub(crate) zero: bool,
}

impl tls::Holds for tls::Caches {
    type Cache = ThreadCache;
}

impl tls::Cached for ThreadCache {
    #[inline(always)]
    fn pool_id(&self) -> u64 {
        self.id
    }
}

impl ThreadCache {
    /// A cache for `shared`, every allocation it will ever need made now
    /// and fallibly (None: out of memory; the caller goes uncached).
    pub(crate) fn try_new(shared: Arc<Shared>) -> Option<ThreadCache> {
        let limit = shared.cfg.tls_cache_size;
        let classes = shared.cfg.classes.count();
        debug_assert!(classes <= MAX_CLASSES && limit < u16::MAX as usize);
        let depth = (limit + 1).next_power_of_two();
        let mut slots = Vec::new();
        slots.try_reserve_exact(classes * depth).ok()?;
        slots.resize_with(classes * depth, Entry::default);
        let mut scratch = Vec::new();
        scratch.try_reserve_exact(depth).ok()?;
        // `Arc::new` has no fallible form: probe for its block first.
        if !crate::os::can_allocate_arc::<LocalCounters>() {
            return None;
        }
        let counters = Arc::new(LocalCounters::default());
        shared.registry.try_register(counters.clone()).ok()?;
        Some(ThreadCache {
            id: shared.id,
            depth_log2: depth.trailing_zeros(),
            limit,
            idle_ceiling: idle_ceiling(limit),
            credit: 0,
            counters,
            scrub: shared.cfg.zeroing.scrubs_on_put(),
            zero_on_get: shared.cfg.zeroing == Zeroing::Always,
            lens: [0; MAX_CLASSES],
            caps: std::array::from_fn(|k| shared.cfg.classes.capacity(k)),
            slots: slots.into_boxed_slice(),
            seen: shared.state(),
            home: shared.next_home(),
            classes: shared.cfg.classes.clone(),
            scratch,
            tick: TICK,
            low: [0; MAX_CLASSES],
            decay_at: crate::os::monotonic_ns().saturating_add(shared.cfg.idle_decay_ns),
            shared,
        })
    }

    /// The pool this cache belongs to.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The pool's size classes.
    #[inline(always)]
    pub(crate) fn classes(&self) -> &SizeClasses {
        &self.classes
    }

    /// The pool id.
    #[inline(always)]
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Slots per class.
    #[inline(always)]
    fn depth(&self) -> usize {
        1 << self.depth_log2
    }

    /// Index of slot `n` of class `class`'s stack.
    #[inline(always)]
    fn at(&self, class: usize, n: usize) -> usize {
        (class << self.depth_log2) + n
    }

    /// Buffers idle here.
    fn count(&self) -> usize {
        self.counters.idle().0
    }

    /// Capacity sum of the buffers idle here.
    fn idle_bytes(&self) -> usize {
        self.counters.idle().1
    }

    /// The fast path of a get: a buffer of `class` for `len` bytes from
    /// this cache's stack, or None (empty: the caller takes [`get`](Self::get)).
    #[inline(always)]
    pub(crate) fn try_get(&mut self, class: usize, len: usize) -> Option<(RawBuf, Option<SlotHint>)> {
        let Popped { mut raw, hint, zero } = self.try_pop(class)?;
        if raw.reuse(len, zero) {
            self.count_dirty();
        }
        Some((raw, hint))
    }

    /// [`try_get`](Self::try_get) without the last step: the buffer popped
    /// (counted), not yet made ready with [`RawBuf::reuse`]. For a caller
    /// that zeroes out of line, so that its fast path calls nothing.
    /// `class` may be any index: past the pool's classes the stack is empty.
    #[inline(always)]
    pub(crate) fn try_pop(&mut self, class: usize) -> Option<Popped> {
        self.tick = self.tick.checked_sub(1)?;
        let n = *self.lens.get(class)?;
        debug_assert!(class < self.classes.count() || n == 0);
        let top = (n as usize).checked_sub(1)?;
        let entry = self.slots.get_mut(self.at(class, top))?;
        let (raw, hint) = (entry.buf.take()?, entry.hint);
        self.lens[class] = top as u16;
        self.low[class] = self.low[class].min(top as u16);
        let word = self.counters.idle_word();
        // The idle word is the only store: a hit is counted by it (see
        // `LocalCounters::hits`).
        self.counters.set_idle_word(word - idle_delta(self.caps[class % MAX_CLASSES]));
        Some(Popped { raw, hint, zero: self.zero_on_get })
    }

    /// A buffer of `class` for `len` bytes: from this cache if it has one,
    /// else from the shards or the system.
    #[inline]
    pub(crate) fn get(&mut self, class: usize, len: usize) -> Result<RawBuf, OutOfMemory> {
        self.catch_up();
        match self.try_get(class, len) {
            Some((raw, _)) => Ok(raw),
            None => self.get_slow(class, len),
        }
    }

    #[cold]
    fn get_slow(&mut self, class: usize, len: usize) -> Result<RawBuf, OutOfMemory> {
        self.catch_up();
        let cap = self.classes.capacity(class);
        let (count, idle_bytes) = self.counters.idle();
        // One buffer for the caller, plus enough to fill the cache: one lock
        // per `limit` gets when buffers flow in from other threads.
        let want = 1 + self.limit.saturating_sub(count);
        let base = class * self.depth();
        let before = self.lens[class] as usize;
        let mut n = before;
        let depth = self.depth();
        let slots = &mut self.slots[base..base + depth];
        let got = self.shared.take(self.home, class, want, |raw| {
            debug_assert!(slots[n].buf.is_none());
            slots[n] = Entry { buf: Some(raw), hint: None };
            n += 1;
        });
        // The shard handed them out newest first; keep the newest on top.
        slots[before..n].reverse();
        let raw = if got > 0 {
            // Their reservation moved with them: it becomes our credit.
            self.credit += got * cap;
            n -= 1;
            let mut raw = self.slots[base + n].buf.take().expect("take moved at least one buffer");
            self.lens[class] = n as u16;
            self.counters.set_idle(count + got - 1, idle_bytes + (got - 1) * cap);
            self.counters.shift(got as i64 - 1);
            self.shared.reuse(&mut raw, len);
            raw
        } else {
            self.shared.allocate(class, len)?
        };
        // Keep credit for this buffer's return only if the cache may hold it.
        self.settle(if self.limit > 0 { cap } else { 0 });
        LocalCounters::bump(&self.counters.misses);
        self.check();
        Ok(raw)
    }

    /// The fast path of a put: takes back a buffer of this pool that was
    /// handed out for `len` bytes (scrubbed unless the policy is `Never`)
    /// onto its stack, or gives it back (full, over the credit, not a
    /// class of ours: the caller takes [`put`](Self::put)).
    #[inline(always)]
    pub(crate) fn try_put(&mut self, raw: RawBuf, len: usize, hint: Option<SlotHint>) -> Result<(), RawBuf> {
        self.try_push(raw, len, hint).map(Retiring::finish)
    }

    /// [`try_put`](Self::try_put) but for its last step: the buffer is on
    /// the stack, and the caller must [`finish`](Retiring::finish) the
    /// returned scrub before it returns. The scrub comes last so that only
    /// the buffer's address is live across its memset call (measured: the
    /// values of a push kept across it were spilled to the stack, and the
    /// `Never` path paid for those spills too); a C put reaches it by a
    /// tail call. Until then the buffer is on this thread's stack, which
    /// only this call can reach.
    #[inline(always)]
    pub(crate) fn try_push(&mut self, mut raw: RawBuf, len: usize, hint: Option<SlotHint>) -> Result<Retiring, RawBuf> {
        let class = self.classes.class_of_tag(raw.tag_class());
        let Some(&n) = self.lens.get(class) else {
            return Err(raw);
        };
        debug_assert!(class < self.classes.count(), "a buffer of this pool has one of its classes");
        let cap = self.caps[class % MAX_CLASSES];
        debug_assert_eq!(cap, raw.capacity());
        let word = self.counters.idle_word();
        // At most `limit` buffers and `credit` bytes once it is pushed. (The
        // add cannot carry into the count: idle bytes are mapped buffers,
        // below 2^48, and so is `cap`.)
        let after = word + idle_delta(cap);
        debug_assert_eq!(unpack_idle(after), (unpack_idle(word).0 + 1, unpack_idle(word).1 + cap));
        if after > self.idle_ceiling || idle_bytes_of(after) > self.credit {
            return Err(raw);
        }
        let Some(slot) = self.slots.get_mut(self.at(class, n as usize)) else {
            return Err(raw);
        };
        let retiring = raw.retire_later(len, self.scrub);
        // The slot is empty (invariant): no drop of the old value to check for.
        let old = std::mem::replace(slot, Entry { buf: Some(raw), hint });
        debug_assert!(old.buf.is_none());
        std::mem::forget(old);
        self.lens[class] = n + 1;
        self.counters.set_idle_word(after);
        LocalCounters::bump(&self.counters.puts);
        Ok(retiring)
    }

    /// Takes back a buffer of this pool that was handed out for `len`
    /// bytes; those are scrubbed unless the policy is `Never`.
    #[inline]
    pub(crate) fn put(&mut self, raw: RawBuf, len: usize) {
        self.catch_up();
        if let Err(mut raw) = self.try_put(raw, len, None) {
            LocalCounters::bump(&self.counters.puts);
            self.counters.shift(-1); // +1 again if `put_slow` pushes it
            raw.retire(len, self.scrub);
            self.put_slow(raw);
        }
    }

    /// A get found a buffer written after it was returned (and zeroed it).
    #[cold]
    pub(crate) fn count_dirty(&self) {
        self.counters.dirty_gets.fetch_add(1, Relaxed);
    }

    /// Counts the return of a one-off (unpooled) buffer.
    pub(crate) fn count_put(&mut self) {
        LocalCounters::bump(&self.counters.puts);
        self.counters.shift(-1); // nothing pushed
    }

    #[cold]
    fn put_slow(&mut self, raw: RawBuf) {
        let class = self.classes.class_of_tag(raw.tag_class());
        if class >= self.classes.count() || self.shared.is_closed() {
            return; // not a class of ours, or the pool is gone: released
        }
        if self.limit == 0 {
            self.shared.keep(raw, self.home);
            return;
        }
        if self.count() >= self.limit {
            // The whole cache in one lock (a magazine): buffers flowing to
            // this thread from others move `limit` at a time.
            self.flush(|len| len);
        }
        if !self.cover(class) {
            // Let the policy choose among everything idle, this cache included.
            self.flush(|len| len);
            if !self.cover(class) {
                SharedCounters::bump(&self.shared.counters.evictions, 1);
                return; // no room in the budget: `raw` is released
            }
        }
        let n = self.lens[class] as usize;
        debug_assert!(n < self.depth() && self.slots[class * self.depth() + n].buf.is_none());
        let (count, idle_bytes) = self.counters.idle();
        self.counters.set_idle(count + 1, idle_bytes + raw.capacity());
        self.counters.shift(1);
        self.slots[class * self.depth() + n] = Entry { buf: Some(raw), hint: None };
        self.lens[class] = n as u16 + 1;
        self.check();
    }

    /// Checks the invariants (debug builds).
    fn check(&self) {
        if cfg!(debug_assertions) {
            let mut count = 0;
            let mut bytes = 0;
            for class in 0..self.classes.count() {
                let stack = &self.slots[class * self.depth()..][..self.depth()];
                let n = self.lens[class] as usize;
                debug_assert!(stack[..n].iter().all(|e| e.buf.is_some()) && stack[n..].iter().all(|e| e.buf.is_none()));
                count += n;
                bytes += n * self.classes.capacity(class);
            }
            debug_assert_eq!((count, bytes), self.counters.idle());
            debug_assert!(count <= self.limit + 1 && bytes <= self.credit);
            debug_assert!(self.low.iter().zip(&self.lens).all(|(l, n)| l <= n), "low water is at most the stack");
        }
    }

    /// Makes sure `credit` covers one more idle buffer of `class`; when
    /// the budget allows, enough for the cache to fill with the class, so
    /// that the puts until then take the fast path (one budget update per
    /// `limit` puts of buffers got elsewhere).
    fn cover(&mut self, class: usize) -> bool {
        let cap = self.classes.capacity(class);
        let (count, idle_bytes) = self.counters.idle();
        let need = (idle_bytes + cap).saturating_sub(self.credit);
        if need == 0 {
            return true;
        }
        let ahead = self.limit.saturating_sub(count + 1) * cap;
        if ahead > 0 && self.shared.try_reserve(need + ahead) {
            self.credit += need + ahead;
            return true;
        }
        let ok = if idle_bytes == 0 {
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
        for class in 0..self.classes.count() {
            let len = self.lens[class] as usize;
            let n = how_many(len).min(len);
            debug_assert!(self.scratch.len() + n <= self.scratch.capacity(), "flush never allocates");
            let base = class * self.depth();
            let stack = &mut self.slots[base..][..len];
            self.scratch.extend(stack[..n].iter_mut().filter_map(|e| e.buf.take()));
            stack.rotate_left(n);
            self.lens[class] = (len - n) as u16;
            self.low[class] = self.low[class].min(self.lens[class]);
        }
        let bytes: usize = self.scratch.iter().map(RawBuf::capacity).sum();
        let (count, idle_bytes) = self.counters.idle();
        self.credit -= bytes;
        // Published before the shard has them, so `stats` never counts a
        // buffer in both places.
        self.counters.set_idle(count - self.scratch.len(), idle_bytes - bytes);
        self.counters.shift(-(self.scratch.len() as i64));
        self.check();
        if !self.scratch.is_empty() {
            self.shared.stash(self.home, &mut self.scratch);
        }
    }

    /// Returns credit beyond the idle bytes plus `slack`.
    fn settle(&mut self, slack: usize) {
        let keep = self.idle_bytes() + slack;
        if self.credit > keep {
            self.shared.unreserve(self.credit - keep);
            self.credit = keep;
        }
    }

    /// Releases every buffer cached here (not kept: the pool was trimmed or
    /// closed, or the cache goes away).
    fn release_all(&mut self) {
        self.counters.shift(-(self.count() as i64));
        self.counters.set_idle(0, 0);
        self.settle(0);
        for class in 0..self.classes.count() {
            let len = self.lens[class] as usize;
            let base = class * self.depth();
            self.slots[base..][..len].iter_mut().for_each(|e| drop(e.buf.take()));
            self.lens[class] = 0;
            self.low[class] = 0;
        }
        self.check();
    }

    /// Makes the next [`catch_up`](Self::catch_up) look at the clock (a
    /// pool's decay period may have turned).
    pub(crate) fn look_at_clock(&mut self) {
        self.tick = 0;
    }

    /// Catches up with a trim or close: everything cached is released.
    /// Every [`TICK`] gets, also with idle decay.
    pub(crate) fn catch_up(&mut self) {
        if self.tick == 0 {
            self.tick = TICK;
            self.decay();
        }
        let state = self.shared.state();
        if state == self.seen {
            return;
        }
        self.seen = state;
        self.release_all();
        self.shared.region.give_back_pending();
    }
}

impl ThreadCache {
    /// Idle decay, at a look at the clock: this cache's own buffers that
    /// went unused for a whole period, then the shards' (`Shared::decay`).
    #[cold]
    fn decay(&mut self) {
        if self.shared.cfg.idle_decay_ns == 0 {
            return;
        }
        let now = crate::os::monotonic_ns();
        if now >= self.decay_at && self.decay_own(DECAY_BATCH) {
            self.decay_at = now.saturating_add(self.shared.cfg.idle_decay_ns);
        }
        self.shared.decay(now);
    }

    /// Releases (scrubbed: a cached buffer is, or is DIRTY and scrubbed on
    /// release) the oldest `low[c]` buffers of each class, at most `max`.
    /// True when all are gone: a new period begins (`low` := the stacks).
    fn decay_own(&mut self, max: usize) -> bool {
        let mut left = max;
        let mut finished = true;
        for class in 0..self.classes.count() {
            let n = (self.low[class] as usize).min(left);
            if n == 0 {
                finished &= self.low[class] == 0;
                continue;
            }
            let len = self.lens[class] as usize;
            let base = class * self.depth();
            let stack = &mut self.slots[base..][..len];
            stack[..n].iter_mut().for_each(|e| drop(e.buf.take()));
            stack.rotate_left(n);
            self.lens[class] = (len - n) as u16;
            self.low[class] -= n as u16;
            let (count, idle_bytes) = self.counters.idle();
            self.counters.set_idle(count - n, idle_bytes - n * self.classes.capacity(class));
            self.counters.shift(-(n as i64));
            SharedCounters::bump(&self.shared.counters.decayed, n as u64);
            left -= n;
            finished &= self.low[class] == 0;
        }
        if left < max {
            self.settle(0);
            self.shared.region.give_back_pending();
        }
        if finished {
            self.low.copy_from_slice(&self.lens);
        }
        self.check();
        finished
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
        self.release_all();
        self.shared.registry.retire(&self.counters, &self.shared.counters);
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;
    use crate::config::Builder;

    /// `Shared::stats` while credit changes hands: cache A gives up its one
    /// idle buffer's credit and cache B takes it and fills it, between the
    /// snapshot's reads of the two. The sum must not count both: the pool
    /// never held two idle buffers in a budget of one.
    #[test]
    fn stats_never_counts_credit_twice_when_it_changes_hands_during_the_snapshot() {
        let page = 4096;
        let cfg = Builder::new()
            .min_buffer_size(page)
            .num_shards(1)
            .tls_cache_size(2)
            .max_pooled_bytes(page)
            .config()
            .unwrap();
        let shared = Arc::new(Shared::try_new(u64::MAX - 1, cfg).unwrap());
        // Registered in this order: the snapshot reads A, then B.
        let a = Rc::new(RefCell::new(ThreadCache::try_new(shared.clone()).unwrap()));
        let b = Rc::new(RefCell::new(ThreadCache::try_new(shared.clone()).unwrap()));
        let x = a.borrow_mut().get(0, page).unwrap();
        a.borrow_mut().put(x, page);
        let y = b.borrow_mut().get(0, page).unwrap(); // allocated: the budget is A's
        assert_eq!(shared.stats().pooled_bytes, page as u64);
        let (a2, b2) = (a.clone(), b.clone());
        crate::stats::tests::run_between_caches(move || {
            a2.borrow_mut().release_all();
            b2.borrow_mut().put(y, page);
            assert_eq!(b2.borrow().idle_bytes(), page, "B filled the credit A gave up");
        });
        let s = shared.stats();
        assert!(s.pooled_bytes <= page as u64, "{} idle bytes counted in a budget of {page}", s.pooled_bytes);
        assert_eq!((s.pooled_buffers, s.pooled_bytes), (1, page as u64), "B's buffer, once: {s:?}");
    }
}
