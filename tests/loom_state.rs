//! Loom models of the buffer state word (src/region/chunk.rs, `SlotWord`
//! and `SlotRef::{hand_out, out_word, claim_from}`) and of a region's life
//! word (src/region/mod.rs, `Region::{put_life, close}`): get, put, double
//! put, racing puts, put racing close. Then of the pool's closing protocol
//! (`Shared::{close, keep, stash_from}`, `Local::sync`,
//! `ThreadCache::catch_up`): a close racing a put to a shard and a thread
//! that caches buffers leaves nothing idle anywhere once that thread has
//! made one more call. And of the shard / thread-cache hand-off
//! (`ThreadCache::flush`, `Shared::{take, stats}`): a flushed buffer's
//! bytes reach its next holder in order, and `stats` never counts a buffer
//! both in a cache and in a shard. And of `stats` while credit changes
//! hands between two caches (`Budget`'s generation, `Shared::stats`): the
//! sum never exceeds the budget.
//!
//! The real types live in a crate that does not build against loom's
//! atomics (they are `std`'s, behind raw metadata mappings), so these are
//! models: the same words, bits, transitions and memory orderings, written
//! against loom's atomics and cells. Loom runs every interleaving (and
//! every weak-memory outcome it models) of each test; a buffer's bytes and
//! a region's memory are `loom::cell::UnsafeCell`s, so a touch that is not
//! ordered after the previous owner's is reported as a race.
//!
//! Each protocol step is a switch ([`Protocol`]); every model runs with the
//! protocol whole (it must pass) and with one step removed (it must fail:
//! `#[should_panic]`), so each model is shown to catch what it is for.
//!
//!   RUSTFLAGS="--cfg loom" cargo test --release --test loom_state
//!
//! (.ci/harden's `loom` step, in target/loom.)
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

/// The steps a model may drop on purpose.
#[derive(Clone, Copy)]
struct Protocol {
    /// put: OUT -> IDLE by one compare-and-swap (else a load, then a store).
    cas: bool,
    /// hand_out stores OUT with Release, put loads with Acquire and swaps
    /// with AcqRel (else all Relaxed).
    ordered: bool,
    /// put: refuse unless the word is OUT (else a put of an IDLE buffer
    /// goes on as if it were out).
    check_out: bool,
    /// put_life destroys a closed region it empties (else only close does).
    put_destroys: bool,
    /// close destroys only an empty region (else whenever it runs).
    close_checks_use: bool,
}

const WHOLE: Protocol =
    Protocol { cas: true, ordered: true, check_out: true, put_destroys: true, close_checks_use: true };

// --- the slot word (chunk.rs) -------------------------------------------------

const STATE_SHIFT: u32 = 62;
const TAG_SHIFT: u32 = 48;
const OUT: u64 = 1;
const IDLE: u64 = 2;

fn word(state: u64, len: u64, tag: u64) -> u64 {
    state << STATE_SHIFT | tag << TAG_SHIFT | len
}

fn state_of(w: u64) -> u64 {
    w >> STATE_SHIFT
}

/// `SlotWord::returned`: OUT -> IDLE by one add (01 -> 10).
fn returned(w: u64) -> u64 {
    w + ((IDLE - OUT) << STATE_SHIFT)
}

#[derive(Debug, PartialEq, Eq)]
enum Put {
    Ok,
    DoublePut,
}

/// A slot and its buffer's bytes.
struct Slot {
    word: AtomicU64,
    bytes: UnsafeCell<u64>,
}

impl Slot {
    fn new() -> Slot {
        Slot { word: AtomicU64::new(0), bytes: UnsafeCell::new(0) }
    }

    /// A get: the pool holds the buffer exclusively (it took it from an
    /// idle list), writes its bytes (the zeroing pass; `fill` here), then
    /// records it as out (`SlotRef::hand_out`), the last step before the
    /// pointer goes to the caller.
    fn get(&self, p: Protocol, fill: u64) {
        self.bytes.with_mut(|b| unsafe { *b = fill });
        let order = if p.ordered { Ordering::Release } else { Ordering::Relaxed };
        self.word.store(word(OUT, 4096, 7), order);
    }

    /// `out_word` then `claim_from`; the winner scrubs the bytes (the pool
    /// owns the buffer again), the loser must not touch them.
    fn put(&self, p: Protocol) -> Put {
        let (load, swap, fail) = if p.ordered {
            (Ordering::Acquire, Ordering::AcqRel, Ordering::Acquire)
        } else {
            (Ordering::Relaxed, Ordering::Relaxed, Ordering::Relaxed)
        };
        let w = self.word.load(load);
        if p.check_out && state_of(w) != OUT {
            return Put::DoublePut;
        }
        let idle = if state_of(w) == OUT { returned(w) } else { word(IDLE, 4096, 7) };
        if p.cas {
            if self.word.compare_exchange(w, idle, swap, fail).is_err() {
                return Put::DoublePut;
            }
        } else {
            self.word.store(idle, if p.ordered { Ordering::Release } else { Ordering::Relaxed });
        }
        self.bytes.with_mut(|b| unsafe { *b = 0 }); // the scrub
        Put::Ok
    }
}

/// get then put on another thread, the pointer passed through a flag (as a
/// C caller would hand it over): the put sees OUT and wins, the scrub is
/// ordered after the getter's writes, and a second put is refused.
fn get_then_put(p: Protocol) {
    loom::model(move || {
        let slot = Arc::new(Slot::new());
        let passed = Arc::new(AtomicBool::new(false));
        let (s, f) = (slot.clone(), passed.clone());
        let getter = thread::spawn(move || {
            s.get(p, 0);
            s.bytes.with_mut(|b| unsafe { *b = 0xAB }); // the caller's writes
            f.store(true, Ordering::Release);
        });
        // The holder's hand-over: the caller's own synchronization.
        while !passed.load(Ordering::Acquire) {
            thread::yield_now();
        }
        assert_eq!(slot.put(p), Put::Ok);
        assert_eq!(slot.put(p), Put::DoublePut, "a second put must be refused");
        getter.join().unwrap();
    });
}

#[test]
fn get_then_put_then_double_put() {
    get_then_put(WHOLE);
}

/// Without the OUT check a sequential double put is taken.
#[test]
#[should_panic(expected = "a second put must be refused")]
fn get_then_put_fails_without_the_out_check() {
    get_then_put(Protocol { check_out: false, ..WHOLE });
}

/// Two threads return one buffer at once: exactly one wins, and only the
/// winner touches the bytes (a second toucher is a race loom reports).
fn racing_puts(p: Protocol) {
    loom::model(move || {
        let slot = Arc::new(Slot::new());
        slot.get(p, 0xCD);
        let wins = Arc::new(AtomicUsize::new(0));
        let racers: Vec<_> = (0..2)
            .map(|_| {
                let (s, w) = (slot.clone(), wins.clone());
                thread::spawn(move || {
                    if s.put(p) == Put::Ok {
                        w.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        racers.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(wins.load(Ordering::Relaxed), 1, "exactly one racing put may win");
        assert_eq!(state_of(slot.word.load(Ordering::Relaxed)), IDLE);
    });
}

#[test]
fn racing_puts_have_one_winner() {
    racing_puts(WHOLE);
}

/// A load then a store instead of the compare-and-swap: both can win.
#[test]
#[should_panic(expected = "Causality violation")]
fn racing_puts_fail_without_the_cas() {
    racing_puts(Protocol { cas: false, ..WHOLE });
}

/// A put racing a get of the same slot: only the state word orders the
/// get's writes (the zeroing pass) before the put's scrub.
fn handed_over_then_raced(p: Protocol) {
    loom::model(move || {
        let slot = Arc::new(Slot::new());
        let s = slot.clone();
        let getter = thread::spawn(move || s.get(p, 0xEF));
        // A put that sees the getter's OUT (no hand-over here: the state
        // word is all that orders the get's bytes before the put's scrub).
        let w = slot.word.load(if p.ordered { Ordering::Acquire } else { Ordering::Relaxed });
        if state_of(w) == OUT {
            assert_eq!(slot.put(p), Put::Ok);
        }
        getter.join().unwrap();
    });
}

#[test]
fn a_put_that_sees_out_is_ordered_after_the_get() {
    handed_over_then_raced(WHOLE);
}

/// Relaxed orderings: a put that sees OUT scrubs bytes the getter's write
/// is not ordered before (loom: a data race on the buffer).
#[test]
#[should_panic(expected = "Causality violation")]
fn a_put_that_sees_out_races_the_get_without_release_acquire() {
    handed_over_then_raced(Protocol { ordered: false, ..WHOLE });
}

// --- a region's life word (region/mod.rs) ------------------------------------

const ONE: usize = 2;
const CLOSED: usize = 1;

/// A region: its life word (slots in use times ONE, plus CLOSED) and its
/// memory, which `destroy` frees (writes) and every put uses (reads) first.
struct Region {
    life: AtomicUsize,
    memory: UnsafeCell<u64>,
    destroyed: AtomicUsize,
}

impl Region {
    fn with_in_use(n: usize) -> Region {
        Region { life: AtomicUsize::new(n * ONE), memory: UnsafeCell::new(1), destroyed: AtomicUsize::new(0) }
    }

    fn destroy(&self) {
        // The last user frees it: no one may touch it concurrently or after.
        self.memory.with_mut(|m| unsafe { *m = 0 });
        self.destroyed.fetch_add(1, Ordering::Relaxed);
    }

    /// A buffer's return: the region's memory is used, then one slot less
    /// in use (`Region::put_life`).
    fn put(&self, p: Protocol) {
        self.memory.with(|m| assert_eq!(unsafe { *m }, 1, "a put used a destroyed region"));
        let prev = self.life.fetch_sub(ONE, Ordering::AcqRel);
        assert!(prev >= ONE);
        if p.put_destroys && prev == ONE | CLOSED {
            self.destroy();
        }
    }

    /// The pool is gone (`Region::close`).
    fn close(&self, p: Protocol) {
        let prev = self.life.fetch_or(CLOSED, Ordering::AcqRel);
        assert_eq!(prev & CLOSED, 0, "closed twice");
        if !p.close_checks_use || prev == 0 {
            self.destroy();
        }
    }
}

/// `n` buffers out, each returned on a thread of its own while the pool
/// closes: the region is destroyed exactly once, after the last put.
fn puts_racing_close(p: Protocol, n: usize) {
    loom::model(move || {
        let region = Arc::new(Region::with_in_use(n));
        let putters: Vec<_> = (0..n)
            .map(|_| {
                let r = region.clone();
                thread::spawn(move || r.put(p))
            })
            .collect();
        region.close(p);
        putters.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(region.destroyed.load(Ordering::Relaxed), 1, "the region must be destroyed exactly once");
    });
}

#[test]
fn a_put_racing_close_destroys_the_region_once() {
    puts_racing_close(WHOLE, 1);
}

#[test]
fn two_puts_racing_close_destroy_the_region_once() {
    puts_racing_close(WHOLE, 2);
}

/// If only close destroys, a close before the last put leaks the region.
#[test]
#[should_panic(expected = "destroyed exactly once")]
fn put_racing_close_fails_when_puts_never_destroy() {
    puts_racing_close(Protocol { put_destroys: false, ..WHOLE }, 1);
}

/// If close ignores the slots in use, a put after it uses freed memory.
#[test]
#[should_panic(expected = "Causality violation")]
fn put_racing_close_fails_when_close_ignores_the_buffers_out() {
    puts_racing_close(Protocol { close_checks_use: false, ..WHOLE }, 1);
}

/// Racing double puts while the pool closes: one claim wins and only the
/// winner returns the slot to the region (a loser's put_life would take a
/// slot away twice and destroy the region under the other buffer).
fn racing_puts_racing_close(p: Protocol) {
    loom::model(move || {
        let slot = Arc::new(Slot::new());
        slot.get(p, 0x11);
        // Two slots in use: this one and another, returned by the main thread.
        let region = Arc::new(Region::with_in_use(2));
        let racers: Vec<_> = (0..2)
            .map(|_| {
                let (s, r) = (slot.clone(), region.clone());
                thread::spawn(move || {
                    if s.put(p) == Put::Ok {
                        r.put(p);
                    }
                })
            })
            .collect();
        region.close(p);
        region.put(p); // the other buffer
        racers.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(region.destroyed.load(Ordering::Relaxed), 1, "the region must be destroyed exactly once");
    });
}

#[test]
fn racing_puts_racing_close_destroy_once() {
    racing_puts_racing_close(WHOLE);
}

/// Without the compare-and-swap both racers return the slot.
#[test]
#[should_panic(expected = "Causality violation")]
fn racing_puts_racing_close_fail_without_the_cas() {
    racing_puts_racing_close(Protocol { cas: false, ..WHOLE });
}

// --- the pool's closing protocol (shared.rs, thread_cache.rs, pool.rs) -------
//
// `Shared::close`: the state word gets CLOSED, then the global epoch moves
// (`epoch::pool_changed`), then the shards are drained. A put without a
// thread cache (`Shared::keep` -> `stash_from`) stashes under the shard lock
// and looks at CLOSED again afterwards, draining if it is set. A thread that
// caches buffers of the pool notices at its next call: the epoch differs
// from the one it saw (`Local::sync`: a Relaxed load, then an Acquire
// fence), so it reads the state word (`ThreadCache::catch_up`) and
// releases everything it caches once the state changed.

/// The steps of the closing protocol a model may drop.
#[derive(Clone, Copy)]
struct Closing {
    /// close sets CLOSED before it moves the epoch (else after).
    closed_before_epoch: bool,
    /// a stash looks at CLOSED again after it stashed (else it trusts the
    /// look it took before).
    recheck_after_stash: bool,
}

const CLOSING: Closing = Closing { closed_before_epoch: true, recheck_after_stash: true };

const POOL_CLOSED: u64 = 1;

/// A pool's shared part: its state word, one shard of idle buffers (each
/// a `u64` standing for the buffer) and the global epoch.
struct Pool {
    state: AtomicU64,
    epoch: AtomicU64,
    shard: loom::sync::Mutex<Vec<u64>>,
}

impl Pool {
    fn new() -> Pool {
        Pool { state: AtomicU64::new(0), epoch: AtomicU64::new(0), shard: loom::sync::Mutex::new(Vec::new()) }
    }

    fn is_closed(&self) -> bool {
        self.state.load(Ordering::Acquire) & POOL_CLOSED != 0
    }

    fn drain(&self) {
        self.shard.lock().unwrap().clear();
    }

    /// `Shared::close`.
    fn close(&self, c: Closing) {
        if c.closed_before_epoch {
            self.state.fetch_or(POOL_CLOSED, Ordering::AcqRel);
            self.epoch.fetch_add(1, Ordering::AcqRel);
        } else {
            self.epoch.fetch_add(1, Ordering::AcqRel);
            self.state.fetch_or(POOL_CLOSED, Ordering::AcqRel);
        }
        self.drain();
    }

    /// `Shared::keep` then `stash_from`: a returned buffer kept idle.
    fn keep(&self, c: Closing, buf: u64) {
        if self.is_closed() {
            return; // released
        }
        self.shard.lock().unwrap().push(buf);
        if c.recheck_after_stash && self.is_closed() {
            self.drain();
        }
    }
}

/// A thread's cache of the pool: the epoch and state it last saw, and the
/// buffers it holds.
struct Cache {
    epoch: u64,
    seen: u64,
    held: usize,
}

impl Cache {
    /// One call on any pool: `Local::sync` then `ThreadCache::catch_up`.
    fn call(&mut self, pool: &Pool) {
        let epoch = pool.epoch.load(Ordering::Relaxed);
        if epoch == self.epoch {
            return;
        }
        loom::sync::atomic::fence(Ordering::Acquire);
        self.epoch = epoch;
        let state = pool.state.load(Ordering::Relaxed);
        if state != self.seen {
            self.seen = state;
            self.held = 0; // release_all
        }
    }
}

/// A pool closes while one thread returns a buffer to its shard and
/// another, which caches two of its buffers, makes a call. Once close is
/// done and the caching thread has made one more call, nothing of the
/// pool is idle anywhere: the shard is empty and the cache released.
fn close_racing_a_put_and_a_cache(c: Closing) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(move || {
        let pool = Arc::new(Pool::new());
        let closer = {
            let pool = pool.clone();
            thread::spawn(move || pool.close(c))
        };
        let putter = {
            let pool = pool.clone();
            thread::spawn(move || pool.keep(c, 7))
        };
        let cacher = {
            let pool = pool.clone();
            thread::spawn(move || {
                let mut cache = Cache { epoch: 0, seen: 0, held: 2 };
                cache.call(&pool);
                cache
            })
        };
        closer.join().unwrap();
        putter.join().unwrap();
        let mut cache = cacher.join().unwrap();
        cache.call(&pool); // its next call, after close
        assert_eq!(cache.held, 0, "a closed pool's buffers stay in a thread cache");
        assert!(pool.shard.lock().unwrap().is_empty(), "a buffer stays idle in a closed pool's shard");
    });
}

#[test]
fn close_leaves_nothing_idle_in_shards_or_caches() {
    close_racing_a_put_and_a_cache(CLOSING);
}

/// Epoch first: a cache can see the new epoch with the old state, take the
/// epoch as seen, and never look again.
#[test]
#[should_panic(expected = "stay in a thread cache")]
fn close_fails_when_the_epoch_moves_before_closed() {
    close_racing_a_put_and_a_cache(Closing { closed_before_epoch: false, ..CLOSING });
}

/// No second look: a put that saw the pool open stashes after close
/// drained the shard, and its buffer stays idle in a closed pool.
#[test]
#[should_panic(expected = "idle in a closed pool's shard")]
fn close_fails_when_a_stash_does_not_look_again() {
    close_racing_a_put_and_a_cache(Closing { recheck_after_stash: false, ..CLOSING });
}

// --- the shard / thread-cache hand-off (thread_cache.rs, shared.rs) ---------
//
// A cache flushes a buffer to a shard (`ThreadCache::flush`): it publishes
// its smaller idle count first (a Relaxed store of its idle word), then
// stashes the buffer under the shard lock. Another thread takes it from
// the shard under the lock (`Shared::take`) and uses its bytes. `stats`
// holds every shard lock while it reads the caches' idle words, so a
// buffer is never counted both in a cache and in a shard.

/// The steps of the hand-off a model may drop.
#[derive(Clone, Copy)]
struct HandOff {
    /// buffers move in and out of a shard under its lock (else through an
    /// unsynchronized slot, a Relaxed atomic).
    locked: bool,
    /// the cache publishes its smaller count before the shard has the
    /// buffer (else after).
    publish_first: bool,
}

const HAND_OFF: HandOff = HandOff { locked: true, publish_first: true };

/// One shard (locked, or its unlocked stand-in), a buffer's bytes, and
/// the flushing cache's idle count.
struct HandOffState {
    shard: loom::sync::Mutex<Option<u64>>,
    unlocked: AtomicU64, // 0: empty, else the buffer
    bytes: UnsafeCell<u64>,
    cache_idle: AtomicU64,
}

impl HandOffState {
    fn flush(&self, h: HandOff) {
        // The buffer's last bytes in the cache (its scrub).
        self.bytes.with_mut(|b| unsafe { *b = 0 });
        if h.publish_first {
            self.cache_idle.store(0, Ordering::Relaxed);
        }
        if h.locked {
            *self.shard.lock().unwrap() = Some(1);
        } else {
            self.unlocked.store(1, Ordering::Relaxed);
        }
        if !h.publish_first {
            self.cache_idle.store(0, Ordering::Relaxed);
        }
    }

    fn take(&self, h: HandOff) -> bool {
        let got = if h.locked {
            self.shard.lock().unwrap().take().is_some()
        } else {
            self.unlocked.swap(0, Ordering::Relaxed) != 0
        };
        if got {
            // The new holder writes the buffer: ordered after the flusher's.
            self.bytes.with_mut(|b| unsafe { *b = 0x22 });
        }
        got
    }

    /// `Shared::stats`: the shard under its lock, then the cache's count.
    fn idle_counted(&self, h: HandOff) -> u64 {
        let shard = self.shard.lock().unwrap();
        let in_shard = if h.locked { shard.is_some() as u64 } else { (self.unlocked.load(Ordering::Relaxed) != 0) as u64 };
        let in_cache = self.cache_idle.load(Ordering::Relaxed);
        drop(shard);
        in_shard + in_cache
    }
}

/// A buffer cached by one thread is flushed to the shard while another
/// thread takes from the shard and a third sums the idle counts: the
/// taker's writes come after the flusher's, and the sum never exceeds the
/// one buffer there is.
fn hand_off(h: HandOff, with_taker: bool) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(move || {
        let s = Arc::new(HandOffState {
            shard: loom::sync::Mutex::new(None),
            unlocked: AtomicU64::new(0),
            bytes: UnsafeCell::new(0x11),
            cache_idle: AtomicU64::new(1),
        });
        let flusher = {
            let s = s.clone();
            thread::spawn(move || s.flush(h))
        };
        let taker = with_taker.then(|| {
            let s = s.clone();
            thread::spawn(move || s.take(h))
        });
        let counted = s.idle_counted(h);
        assert!(counted <= 1, "a buffer counted both in a cache and in a shard");
        flusher.join().unwrap();
        if let Some(t) = taker {
            t.join().unwrap();
        }
    });
}

#[test]
fn a_flushed_buffer_is_handed_over_in_order_and_counted_once() {
    hand_off(HAND_OFF, true);
}

#[test]
#[should_panic(expected = "Causality violation")]
fn hand_off_fails_without_the_shard_lock() {
    hand_off(HandOff { locked: false, ..HAND_OFF }, true);
}

#[test]
#[should_panic(expected = "counted both in a cache and in a shard")]
fn hand_off_counts_twice_when_the_cache_publishes_late() {
    hand_off(HandOff { publish_first: false, ..HAND_OFF }, false);
}

// --- the budget's generation and `stats` (budget.rs, shared.rs) -------------
//
// Two thread caches share a budget of one buffer. Cache A holds it idle and
// releases it (`release_all` / `decay_own`: its idle word goes to 0, then
// `settle` returns the credit); cache B reserves the credit it finds free
// (`cover`) and fills it (its idle word goes to 1). `stats` reads A's word,
// then B's: without a second look it may count A's buffer before the
// release and B's after the fill, two buffers in a budget of one. It reads
// the budget's generation before and after, with an Acquire fence before
// the second read paired with the caches' Release stores, and reads again
// when it moved.

/// The steps of the snapshot a model may drop.
#[derive(Clone, Copy)]
struct Snapshot {
    /// stats reads again when the generation moved (else it sums once).
    recheck: bool,
    /// caches publish their idle word with Release, stats fences with
    /// Acquire (else all Relaxed).
    ordered: bool,
}

const SNAPSHOT: Snapshot = Snapshot { recheck: true, ordered: true };

/// The budget word: reserved bytes below, the generation from bit 48.
const GEN_ONE: u64 = 1 << 48;
const RESERVED_MASK: u64 = GEN_ONE - 1;

fn budget_snapshot(s: Snapshot) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(move || {
        // Budget 1: A's one idle buffer holds all of it.
        let budget = Arc::new(AtomicU64::new(1));
        let a_idle = Arc::new(AtomicU64::new(1));
        let b_idle = Arc::new(AtomicU64::new(0));
        let publish = if s.ordered { Ordering::Release } else { Ordering::Relaxed };
        let a = {
            let (budget, a_idle) = (budget.clone(), a_idle.clone());
            thread::spawn(move || {
                a_idle.store(0, publish);
                budget.fetch_add(GEN_ONE.wrapping_sub(1), Ordering::AcqRel);
            })
        };
        let b = {
            let (budget, b_idle) = (budget.clone(), b_idle.clone());
            thread::spawn(move || {
                let reserved = budget
                    .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |w| {
                        ((w & RESERVED_MASK) + 1 <= 1).then(|| (w + GEN_ONE) + 1)
                    })
                    .is_ok();
                if reserved {
                    b_idle.store(1, publish);
                }
            })
        };
        let counted = loop {
            let generation = budget.load(Ordering::Acquire) >> 48;
            let sum = a_idle.load(Ordering::Relaxed) + b_idle.load(Ordering::Relaxed);
            if s.ordered {
                loom::sync::atomic::fence(Ordering::Acquire);
            }
            if !s.recheck || budget.load(Ordering::Acquire) >> 48 == generation {
                break sum;
            }
        };
        assert!(counted <= 1, "stats counted {counted} idle buffers in a budget of one");
        a.join().unwrap();
        b.join().unwrap();
    });
}

#[test]
fn stats_stays_within_the_budget_while_credit_changes_hands() {
    budget_snapshot(SNAPSHOT);
}

#[test]
#[should_panic(expected = "in a budget of one")]
fn stats_overcounts_without_the_second_look() {
    budget_snapshot(Snapshot { recheck: false, ..SNAPSHOT });
}

#[test]
#[should_panic(expected = "in a budget of one")]
fn stats_overcounts_without_release_and_the_fence() {
    budget_snapshot(Snapshot { ordered: false, ..SNAPSHOT });
}
