//! Counters: per-thread ones written without atomic read-modify-write on the
//! fast path, shared ones for the slow path, and their sum.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed, Ordering::Release};
use std::sync::Arc;

use crate::lock::Mutex;

use crate::pack::Field;

/// A snapshot of a pool's counters. Sums of per-thread counters are read
/// without stopping the threads, so a snapshot taken while others work is
/// approximate; once they are quiet it is exact.
///
/// `zp_stats` in C, `zeropool::Stats` in Rust.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Buffers handed out (gets that succeeded).
    pub gets: u64,
    /// Buffers returned (puts and drops). Rejected `zp_put` calls count in
    /// `rejected_puts` only.
    pub puts: u64,
    /// Gets served from the calling thread's cache.
    pub tls_hits: u64,
    /// Gets served from a shard.
    pub shard_hits: u64,
    /// Buffers allocated from the system.
    pub allocations: u64,
    /// Idle or returned buffers released because of the budget or shard limits.
    pub evictions: u64,
    /// Buffers idle in the pool now (shards plus thread caches).
    pub pooled_buffers: u64,
    /// Bytes idle in the pool now (sum of capacities).
    pub pooled_bytes: u64,
    /// Buffers handed out and not yet returned.
    pub outstanding: u64,
    /// Buffers that could not be locked in RAM (pinned pools only).
    pub pin_failures: u64,
    /// `zp_put` calls rejected as foreign, wrong pool, double put or overflow.
    pub rejected_puts: u64,
    /// Bytes allocated from the system so far (sum of capacities).
    pub allocated_bytes: u64,
    /// Gets that found bytes of the buffer written after it was returned
    /// (a use after put), zeroed before the hand-out (`Always` only).
    pub dirty_gets: u64,
    /// Idle buffers released because they went unused for the pool's
    /// `idle_decay` (scrubbed, their pages given back).
    pub decayed: u64,
}

/// One thread cache's counters. Only the owning thread writes them, with
/// plain stores (never a read-modify-write); `stats` reads them. Few
/// stores, because every store is on the fast path: gets = hits + misses,
/// the idle buffers and bytes share one word, and hits are not counted but
/// derived (see [`LocalCounters::hits`]), so a hit stores the idle word only.
#[derive(Debug, Default)]
pub(crate) struct LocalCounters {
    /// Buffers that entered or left the cache's stacks other than by a
    /// hit or a put's push, net (a wrapping signed count): `hits`.
    adjust: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) puts: AtomicU64,
    pub(crate) dirty_gets: AtomicU64,
    idle: AtomicU64,
}

/// `LocalCounters::idle`: idle bytes in the low bits, buffers above.
const IDLE_BYTES: Field = Field::new(0, 53);
const IDLE_BUFFERS: Field = IDLE_BYTES.above(11);

/// The packed idle word of one buffer of `bytes` (add it on a put,
/// subtract it on a get).
#[inline(always)]
pub(crate) const fn idle_delta(bytes: usize) -> u64 {
    IDLE_BUFFERS.one() | IDLE_BYTES.pack(bytes as u64)
}

/// The largest idle word with at most `buffers` buffers (any bytes): a
/// word `<=` it holds no more, so one compare checks the count.
#[inline(always)]
pub(crate) const fn idle_ceiling(buffers: usize) -> u64 {
    IDLE_BUFFERS.pack(buffers as u64) | IDLE_BYTES.mask()
}

/// The idle bytes of a packed idle word.
#[inline(always)]
pub(crate) const fn idle_bytes_of(word: u64) -> usize {
    IDLE_BYTES.get(word) as usize
}

/// A packed idle word of `buffers` buffers and `bytes` bytes.
#[inline(always)]
pub(crate) const fn pack_idle(buffers: usize, bytes: usize) -> u64 {
    IDLE_BUFFERS.pack(buffers as u64) | IDLE_BYTES.pack(bytes as u64)
}

impl LocalCounters {
    /// Publishes the cache's idle buffers (at most 2^11 - 1: the cache
    /// limit is 1024) and bytes (below 2^53). Release (a plain store on
    /// x86-64): `Shared::stats` pairs it with an Acquire fence, so that
    /// seeing idle bytes means seeing the credit reservation before them.
    #[inline]
    pub(crate) fn set_idle(&self, buffers: usize, bytes: usize) {
        self.idle.store(pack_idle(buffers, bytes), Release);
    }

    /// The idle (buffers, bytes): the cache's own count, which it keeps
    /// here and nowhere else (one store per change).
    #[inline(always)]
    pub(crate) fn idle(&self) -> (usize, usize) {
        unpack_idle(self.idle.load(Relaxed))
    }

    /// The packed idle word, for the owner's fast path: changed by
    /// [`idle_delta`] steps and stored back with [`set_idle_word`](Self::set_idle_word).
    #[inline(always)]
    pub(crate) fn idle_word(&self) -> u64 {
        self.idle.load(Relaxed)
    }

    /// Release, as [`set_idle`](Self::set_idle).
    #[inline(always)]
    pub(crate) fn set_idle_word(&self, word: u64) {
        self.idle.store(word, Release);
    }

    /// Adds one to a counter of this cache: a load and a plain store, as
    /// only the owner thread writes it.
    #[inline(always)]
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.store(counter.load(Relaxed) + 1, Relaxed);
    }

    /// Records `by` buffers entering (positive) or leaving (negative) the
    /// stacks other than by a hit (a pop) or the push of a put counted in
    /// `puts`; a put counted in `puts` that pushed nothing counts -1.
    /// Owner thread only, slow paths only.
    pub(crate) fn shift(&self, by: i64) {
        self.adjust.store(self.adjust.load(Relaxed).wrapping_add(by as u64), Relaxed);
    }

    /// Gets served from the stacks. Every buffer that entered them came by
    /// a counted put or a `shift`, and left by a hit, a `shift`, or is
    /// still there: hits = puts + adjust - idle buffers. (Read while the
    /// owner works, the three words may be from different moments; the
    /// result is clamped at zero and exact once the owner is quiet.)
    pub(crate) fn hits(&self) -> u64 {
        let puts = self.puts.load(Relaxed) as i64;
        let adjust = self.adjust.load(Relaxed) as i64;
        let idle = self.idle().0 as i64;
        puts.wrapping_add(adjust).wrapping_sub(idle).max(0) as u64
    }
}

/// Splits a packed idle word into (buffers, bytes).
#[inline(always)]
pub(crate) const fn unpack_idle(word: u64) -> (usize, usize) {
    (IDLE_BUFFERS.get(word) as usize, idle_bytes_of(word))
}

/// Counters bumped on slow paths, shared by all threads.
#[derive(Debug, Default)]
pub(crate) struct SharedCounters {
    pub(crate) gets: AtomicU64,
    pub(crate) puts: AtomicU64,
    pub(crate) tls_hits: AtomicU64,
    pub(crate) shard_hits: AtomicU64,
    pub(crate) allocations: AtomicU64,
    pub(crate) evictions: AtomicU64,
    pub(crate) pin_failures: AtomicU64,
    pub(crate) rejected_puts: AtomicU64,
    pub(crate) allocated_bytes: AtomicU64,
    pub(crate) dirty_gets: AtomicU64,
    pub(crate) decayed: AtomicU64,
}

impl SharedCounters {
    pub(crate) fn bump(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Relaxed);
    }
}

/// The live thread caches' counters, and the totals of caches gone.
#[derive(Debug, Default)]
pub(crate) struct CounterRegistry {
    live: Mutex<Vec<Arc<LocalCounters>>>,
}

impl CounterRegistry {
    /// The lock itself, for the fork handlers.
    pub(crate) fn mutex(&self) -> &Mutex<Vec<Arc<LocalCounters>>> {
        &self.live
    }

    /// Adds a cache's counters; Err when the list cannot grow.
    pub(crate) fn try_register(&self, c: Arc<LocalCounters>) -> Result<(), Arc<LocalCounters>> {
        let mut live = self.live.lock();
        if live.try_reserve(1).is_err() {
            return Err(c);
        }
        live.push(c);
        Ok(())
    }

    /// Folds a departing cache's counters into `shared` and forgets it, in
    /// one step under the lock so that `snapshot` never counts it twice.
    pub(crate) fn retire(&self, c: &Arc<LocalCounters>, shared: &SharedCounters) {
        let mut live = self.live.lock();
        let (hits, misses) = (c.hits(), c.misses.load(Relaxed));
        SharedCounters::bump(&shared.gets, hits + misses);
        SharedCounters::bump(&shared.puts, c.puts.load(Relaxed));
        SharedCounters::bump(&shared.tls_hits, hits);
        SharedCounters::bump(&shared.dirty_gets, c.dirty_gets.load(Relaxed));
        live.retain(|x| !Arc::ptr_eq(x, c));
    }

    /// Sums the live caches with the shared counters. `shard_idle` is the
    /// idle (buffers, bytes) in shards.
    pub(crate) fn snapshot(&self, shared: &SharedCounters, shard_idle: (u64, u64)) -> Stats {
        let live = self.live.lock();
        let mut s = Stats {
            gets: shared.gets.load(Relaxed),
            puts: shared.puts.load(Relaxed),
            tls_hits: shared.tls_hits.load(Relaxed),
            shard_hits: shared.shard_hits.load(Relaxed),
            allocations: shared.allocations.load(Relaxed),
            evictions: shared.evictions.load(Relaxed),
            pooled_buffers: shard_idle.0,
            pooled_bytes: shard_idle.1,
            outstanding: 0,
            pin_failures: shared.pin_failures.load(Relaxed),
            rejected_puts: shared.rejected_puts.load(Relaxed),
            allocated_bytes: shared.allocated_bytes.load(Relaxed),
            dirty_gets: shared.dirty_gets.load(Relaxed),
            decayed: shared.decayed.load(Relaxed),
        };
        for c in live.iter() {
            #[cfg(test)]
            if !Arc::ptr_eq(c, &live[0]) {
                tests::between_caches();
            }
            let (hits, misses) = (c.hits(), c.misses.load(Relaxed));
            let (buffers, bytes) = c.idle();
            let (buffers, bytes) = (buffers as u64, bytes as u64);
            s.gets += hits + misses;
            s.puts += c.puts.load(Relaxed);
            s.tls_hits += hits;
            s.dirty_gets += c.dirty_gets.load(Relaxed);
            s.pooled_buffers += buffers;
            s.pooled_bytes += bytes;
        }
        s.outstanding = s.gets.saturating_sub(s.puts);
        s
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::RefCell;

    thread_local! {
        static BETWEEN_CACHES: RefCell<Option<Box<dyn FnOnce()>>> = const { RefCell::new(None) };
    }

    /// Makes this thread's next `snapshot` run `f` once, after it read
    /// the first live cache and before the second (what another thread
    /// may do at that moment).
    pub(crate) fn run_between_caches(f: impl FnOnce() + 'static) {
        BETWEEN_CACHES.with(|h| *h.borrow_mut() = Some(Box::new(f)));
    }

    pub(super) fn between_caches() {
        if let Some(f) = BETWEEN_CACHES.with(|h| h.borrow_mut().take()) {
            f();
        }
    }

    #[test]
    fn idle_words_round_trip() {
        for (buffers, bytes) in [(0, 0), (1, 4096), (1024, (1 << 48) - 1), (2047, (1 << 53) - 1)] {
            let w = pack_idle(buffers, bytes);
            assert_eq!(unpack_idle(w), (buffers, bytes));
            assert_eq!(idle_bytes_of(w), bytes);
        }
        // A push and a pop are one add and one subtract of the delta.
        let w = pack_idle(3, 3 << 20) + idle_delta(1 << 20);
        assert_eq!(unpack_idle(w), (4, 4 << 20));
        assert_eq!(unpack_idle(w - idle_delta(1 << 20)), (3, 3 << 20));
        // The ceiling admits exactly the words of at most that many buffers.
        assert!(pack_idle(4, (1 << 53) - 1) <= idle_ceiling(4));
        assert!(pack_idle(5, 0) > idle_ceiling(4));
    }
}
