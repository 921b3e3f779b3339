//! Behaviour across threads: cross-thread returns, thread exit, thread-local
//! destructor order, trim and drop while other threads hold buffers, and a
//! stress run (per-owner fill patterns checked before every return, trims,
//! the idle-memory bound checked throughout).

use std::cell::RefCell;
use std::sync::mpsc;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread;

use zeropool::{Buffer, BufferPool, EvictionPolicy, Zeroing};

mod common;
use common::Gate;

const PAGE: usize = 4096;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// Tests that measure the resident set run alone (RSS is process-wide);
/// the others run beside each other.
static TURNS: RwLock<()> = RwLock::new(());

fn beside_others() -> RwLockReadGuard<'static, ()> {
    TURNS.read().unwrap_or_else(|e| e.into_inner())
}

fn alone() -> RwLockWriteGuard<'static, ()> {
    TURNS.write().unwrap_or_else(|e| e.into_inner())
}

/// Resident memory, from the system (not under Miri).
#[cfg(not(miri))]
mod mem {
    use super::PAGE;

    pub fn rss() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 1024
    }

    /// The resident set grew by at most `slack` bytes since `start`: keep
    /// `slack` below what the caller means to catch. (The per-buffer check,
    /// `resident_pages`, is the exact one; this one sees what it cannot,
    /// e.g. a pool's own bookkeeping left behind.)
    pub fn near(now: usize, start: usize, slack: usize, what: &str) {
        // AddressSanitizer keeps freed heap memory in quarantine and adds
        // shadow pages, ThreadSanitizer its shadow and per-thread state
        // (3.4 MiB over the 50 rounds below): RSS says nothing about
        // zeropool there. The per-buffer checks run under both.
        if cfg!(any(zeropool_asan, zeropool_tsan)) {
            return;
        }
        assert!(
            now <= start + slack,
            "{what}: RSS {} KiB, started at {} KiB (slack {} KiB)",
            now / 1024,
            start / 1024,
            slack / 1024
        );
    }

    /// Resident pages in `[addr, addr + len)`, without touching them (0
    /// when the range is not mapped at all).
    pub fn resident_pages(addr: usize, len: usize) -> usize {
        let mut vec = vec![0u8; len.div_ceil(PAGE)];
        // SAFETY: mincore only reports on the range; it writes one byte per
        // page into `vec`, which has room for them.
        let r = unsafe { libc::mincore(addr as *mut libc::c_void, len, vec.as_mut_ptr()) };
        if r != 0 {
            return 0; // ENOMEM: unmapped
        }
        vec.iter().filter(|&&v| v & 1 != 0).count()
    }
}

fn pool() -> BufferPool {
    BufferPool::builder()
        .min_buffer_size(PAGE)
        .num_shards(4)
        .tls_cache_size(4)
        .max_pooled_bytes(256 * PAGE)
        .build()
        .unwrap()
}

#[test]
fn a_buffer_written_on_another_thread_comes_back_zeroed() {
    let _turn = beside_others();
    let p = pool();
    let buf = p.get(PAGE);
    let addr = buf.as_ptr() as usize;
    let q = p.clone();
    thread::spawn(move || {
        let mut buf = buf;
        buf.fill(0xC3);
        q.put(buf);
        // Reused on this thread, from its cache, and zero.
        let again = q.get(PAGE);
        assert_eq!(again.as_ptr() as usize, addr);
        assert!(again.iter().all(|&b| b == 0));
        again
    })
    .join()
    .map(|again| {
        // Returned here after being written there: zero again on reuse.
        let mut again = again;
        again.fill(0x3C);
        drop(again);
    })
    .unwrap();
    let s = p.stats();
    assert_eq!((s.gets, s.puts, s.outstanding), (2, 2, 0));
    let last = p.get(PAGE);
    assert!(last.iter().all(|&b| b == 0));
}

#[test]
fn thread_exit_returns_cached_buffers_to_the_shards() {
    let _turn = beside_others();
    let p = pool();
    let q = p.clone();
    thread::spawn(move || {
        let bufs: Vec<_> = (0..4).map(|_| q.get(PAGE)).collect();
        drop(bufs); // all four stay in this thread's cache
        assert_eq!(q.stats().pooled_buffers, 4);
    })
    .join()
    .unwrap();
    let s = p.stats();
    assert_eq!((s.pooled_buffers, s.allocations), (4, 4), "kept, not freed: {s:?}");
    let bufs: Vec<_> = (0..4).map(|_| p.get(PAGE)).collect();
    let s = p.stats();
    assert_eq!(s.allocations, 4, "reused from the shards: {s:?}");
    assert!(s.shard_hits >= 1);
    drop(bufs);
}

#[test]
fn two_threads_exchange_buffers_without_loss() {
    let _turn = beside_others();
    let p = pool();
    let (tx, rx) = mpsc::sync_channel::<Buffer>(8);
    let q = p.clone();
    let rounds = if cfg!(miri) { 20 } else { 20_000 };
    let producer = thread::spawn(move || {
        for i in 0..rounds {
            let mut b = q.get(PAGE * (1 + i % 3));
            assert!(b.iter().all(|&x| x == 0), "round {i}: dirty buffer");
            b.fill(i as u8 | 1);
            tx.send(b).unwrap();
        }
    });
    let consumer = thread::spawn(move || {
        for b in rx {
            assert!(b.iter().all(|&x| x == b[0] && x != 0));
            drop(b);
        }
    });
    producer.join().unwrap();
    consumer.join().unwrap();
    let s = p.stats();
    assert_eq!((s.gets, s.puts, s.outstanding), (rounds as u64, rounds as u64, 0));
    assert!(s.pooled_bytes <= p.max_pooled_bytes() as u64);
    if !cfg!(miri) {
        assert!(s.allocations < rounds as u64 / 10, "buffers should be reused: {s:?}");
    }
}

struct HoldsBuffer(RefCell<Option<Buffer>>);
impl Drop for HoldsBuffer {
    fn drop(&mut self) {
        drop(self.0.borrow_mut().take());
    }
}

thread_local! {
    static HELD: HoldsBuffer = const { HoldsBuffer(RefCell::new(None)) };
}

#[test]
fn buffers_dropped_in_other_thread_local_destructors_do_not_abort() {
    let _turn = beside_others();
    // Both orders: our cache torn down before or after the user's holder.
    for holder_first in [true, false] {
        let p = pool();
        let q = p.clone();
        thread::spawn(move || {
            if holder_first {
                HELD.with(|_| {}); // registers the holder's destructor first
            }
            let b = q.get(PAGE);
            drop(q.get(PAGE)); // registers the pool's cache
            HELD.with(|h| *h.0.borrow_mut() = Some(b));
        })
        .join()
        .unwrap();
        let s = p.stats();
        assert_eq!((s.puts, s.outstanding), (2, 0), "holder_first {holder_first}: {s:?}");
        assert_eq!(s.pooled_buffers, 2, "both came back to the pool: {s:?}");
    }
}

/// The last handle goes while another thread holds buffers (written
/// before, checked and written after) and has one idle in its cache. The
/// counters add up before the drop; afterwards the held buffers stay valid
/// and writable; once they are back and the thread is gone, nothing of the
/// pool is resident (its pages are given back or unmapped).
#[test]
fn dropping_the_pool_while_other_threads_hold_buffers_and_caches() {
    let _turn = alone();
    // A size used only here, large enough to see in the resident set.
    let (size, held_n) = if cfg!(miri) { (PAGE, 2) } else { (2 * MIB, 4) };
    #[cfg(not(miri))]
    let start = mem::rss();
    let p = BufferPool::builder()
        .min_buffer_size(PAGE)
        .num_shards(4)
        .tls_cache_size(4)
        .max_pooled_bytes(8 * size)
        .build()
        .unwrap();
    let q = p.clone();
    let ready = Gate::new(2);
    let dropped = Gate::new(2);
    let (r, d) = (ready.clone(), dropped.clone());
    // A failed assert on either side poisons both gates: no one waits forever.
    let _guards = (ready.guard(), dropped.guard());
    let t = thread::spawn(move || {
        let _guards = (r.guard(), d.guard());
        let mut held: Vec<Buffer> = (0..held_n)
            .map(|i| {
                let mut b = q.get(size);
                b.fill(0x40 + i as u8);
                b
            })
            .collect();
        let mut cached = q.get(size);
        cached.fill(0x77);
        let mut addrs: Vec<usize> = held.iter().map(|b| b.as_ptr() as usize).collect();
        addrs.push(cached.as_ptr() as usize);
        // Written, so resident: their absence after the drop below means
        // something. (Per buffer: the process's RSS moves with the tests
        // running beside this one, and under ASan with its quarantine.)
        #[cfg(not(miri))]
        for &a in &addrs {
            assert_eq!(mem::resident_pages(a, size), size / PAGE, "a written buffer is not resident");
        }
        drop(cached); // idle in this thread's cache
        drop(q);
        r.wait();
        d.wait(); // the pool's last handle is gone now
        for (i, b) in held.iter_mut().enumerate() {
            assert!(b.iter().all(|&x| x == 0x40 + i as u8), "a held buffer changed when the pool was dropped");
            b.fill(1);
            assert!(b[0] == 1 && b[size - 1] == 1);
        }
        drop(held); // released to the system
        addrs
    });
    ready.wait();
    let s = p.stats();
    let n = held_n as u64;
    assert_eq!((s.gets, s.puts, s.outstanding), (n + 1, 1, n), "{s:?}");
    assert_eq!(s.gets, s.puts + s.outstanding, "{s:?}");
    assert_eq!((s.pooled_buffers, s.pooled_bytes), (1, size as u64), "one idle in the thread's cache: {s:?}");
    drop(p);
    dropped.wait();
    let addrs = t.join().unwrap();
    // Everything is back and the thread (with its cache) is gone.
    #[cfg(not(miri))]
    {
        for &a in &addrs {
            assert_eq!(mem::resident_pages(a, size), 0, "a buffer of the dropped pool is still resident");
        }
        // 10 MiB were written; the slack is half of one buffer (the
        // delta measured here: under 0.1 MiB).
        mem::near(mem::rss(), start, MIB, "after the pool was dropped and its buffers came back");
    }
    let _ = addrs;
}

/// Threads return buffers and exit (flushing their caches) while the last
/// handle is dropped on the main thread, with no ordering between them.
/// Nothing may crash or touch freed memory (the sanitizer runs of
/// .ci/harden), and nothing may leak (Miri's leak check). The counters add
/// up before the race, the held buffers keep their bytes and stay writable
/// whatever the race's outcome, and after every round nothing of the pools
/// stays resident.
#[test]
fn threads_exit_while_the_pool_is_dropped() {
    let _turn = alone();
    let unit = if cfg!(miri) { PAGE } else { 128 * KIB };
    #[cfg(not(miri))]
    let start = mem::rss();
    for round in 0..if cfg!(miri) { 2 } else { 50 } {
        let p = BufferPool::builder()
            .min_buffer_size(PAGE)
            .num_shards(4)
            .tls_cache_size(4)
            .max_pooled_bytes(64 * unit)
            .build()
            .unwrap();
        let ready = Gate::new(5);
        let go = Gate::new(5);
        let _guards = (ready.guard(), go.guard());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (q, ready, go) = (p.clone(), ready.clone(), go.clone());
                thread::spawn(move || {
                    let _guards = (ready.guard(), go.guard());
                    let pattern = |i: usize| (t * 3 + i + 1) as u8;
                    let mut held: Vec<_> = (0..3).map(|i| q.get(unit * (1 + (i + t) % 3))).collect();
                    held.iter_mut().enumerate().for_each(|(i, b)| b.fill(pattern(i)));
                    let mut idle = q.get(unit);
                    idle.fill(0x5A); // resident, so its absence later means something
                    let mut spans: Vec<(usize, usize)> = held.iter().map(|b| (b.as_ptr() as usize, b.len())).collect();
                    spans.push((idle.as_ptr() as usize, idle.len()));
                    drop(idle); // an idle buffer in this thread's cache
                    drop(q);
                    ready.wait();
                    go.wait();
                    // May race with the pool's close: still ours, intact.
                    for (i, b) in held.iter_mut().enumerate() {
                        assert!(sampled(b).all(|x| x == pattern(i)), "round {round}: a held buffer changed");
                        b.fill(!pattern(i));
                        assert!(sampled(b).all(|x| x == !pattern(i)));
                    }
                    drop(held);
                    spans
                })
            })
            .collect();
        ready.wait();
        let s = p.stats();
        assert_eq!((s.gets, s.puts, s.outstanding), (16, 4, 12), "round {round}: {s:?}");
        assert_eq!(s.gets, s.puts + s.outstanding, "{s:?}");
        assert_eq!((s.pooled_buffers, s.pooled_bytes), (4, 4 * unit as u64), "one idle per thread cache: {s:?}");
        go.wait();
        drop(p);
        let spans: Vec<(usize, usize)> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        // Every buffer of this round, page by page (exact, and under ASan
        // too): the threads are gone, so nothing of the pool may be resident.
        #[cfg(not(miri))]
        for &(addr, len) in &spans {
            assert_eq!(
                mem::resident_pages(addr, len),
                0,
                "round {round}: a buffer of the dropped pool is still resident"
            );
        }
        let _ = spans;
    }
    // About 3.5 MiB were written each round (4 threads x (6 + 1) x 128
    // KiB): one round left behind is 3.5 times the slack (the delta
    // measured over 50 rounds: under 0.1 MiB).
    #[cfg(not(miri))]
    mem::near(mem::rss(), start, MIB, "after every round's pool was dropped and its threads exited");
}

#[test]
fn trim_reaches_other_threads_caches_at_their_next_call() {
    let _turn = beside_others();
    let p = pool();
    let q = p.clone();
    let filled = Gate::new(2);
    let trimmed = Gate::new(2);
    let (f, tr) = (filled.clone(), trimmed.clone());
    let _guards = (filled.guard(), trimmed.guard());
    let t = thread::spawn(move || {
        let _guards = (f.guard(), tr.guard());
        let bufs: Vec<_> = (0..4).map(|_| q.get(PAGE)).collect();
        drop(bufs);
        f.wait();
        tr.wait();
        let b = q.get(PAGE); // notices the trim, releases its cache
        assert_eq!(q.stats().pooled_buffers, 0);
        drop(b);
    });
    filled.wait();
    assert_eq!(p.stats().pooled_buffers, 4);
    p.trim();
    trimmed.wait();
    t.join().unwrap();
    let s = p.stats();
    assert_eq!(s.allocations, 5, "the trimmed buffers were not reused: {s:?}");
}

/// A thread's next call on any pool, not only the trimmed one, releases
/// what it cached of a pool another thread trimmed (one epoch for all).
#[test]
fn trim_reaches_other_threads_caches_at_their_next_call_on_any_pool() {
    let _turn = beside_others();
    let (p, other) = (pool(), pool());
    let q = p.clone();
    let filled = Gate::new(2);
    let trimmed = Gate::new(2);
    let (f, tr) = (filled.clone(), trimmed.clone());
    let _guards = (filled.guard(), trimmed.guard());
    let t = thread::spawn(move || {
        let _guards = (f.guard(), tr.guard());
        drop((0..4).map(|_| q.get(PAGE)).collect::<Vec<_>>());
        f.wait();
        tr.wait();
        drop(other.get(PAGE)); // another pool: the trim is noticed all the same
        assert_eq!(q.stats().pooled_buffers, 0);
    });
    filled.wait();
    assert_eq!(p.stats().pooled_buffers, 4);
    p.trim();
    trimmed.wait();
    t.join().unwrap();
}

/// Every 61st byte and the last: enough to see a buffer two owners share,
/// cheap enough for unoptimized test builds.
fn sampled(b: &[u8]) -> impl Iterator<Item = u8> + '_ {
    b.iter().step_by(61).chain(b.last()).copied()
}

#[test]
#[cfg_attr(miri, ignore)] // many threads and thousands of mappings
fn idle_bytes_stay_bounded_under_a_hostile_pattern() {
    let _turn = beside_others();
    for policy in [EvictionPolicy::Lifo, EvictionPolicy::ClockPro] {
        let budget = 64 * PAGE;
        let p = BufferPool::builder()
            .min_buffer_size(PAGE)
            .num_shards(4)
            .tls_cache_size(8)
            .max_pooled_bytes(budget)
            .eviction_policy(policy)
            .zeroing(Zeroing::OnPut)
            .build()
            .unwrap();
        let threads = 8;
        let start = Gate::new(threads + 1);
        let _guard = start.guard();
        let (tx, rx) = mpsc::channel::<Buffer>();
        let mut handles = Vec::new();
        for t in 0..threads {
            let (q, start, tx) = (p.clone(), start.clone(), tx.clone());
            handles.push(thread::spawn(move || {
                let _guard = start.guard();
                start.wait();
                let mut held: Vec<Buffer> = Vec::new();
                let owner = t as u8 + 1;
                // Every buffer is zero when got, then carries its owner's
                // pattern until returned: checked right before each return.
                let check = |b: &Buffer, who: u8| assert!(sampled(b).all(|x| x == who), "corrupted buffer");
                for i in 0..1_200usize {
                    // Growing sizes, every class, many held at once.
                    let len = PAGE * (1 + (i * 7 + t) % 40) + i % 100;
                    let mut b = q.get(len);
                    assert!(sampled(&b).all(|x| x == 0), "a get saw old bytes");
                    b.fill(owner);
                    if i % 5 == 0 {
                        tx.send(b).unwrap(); // returned by another thread
                    } else {
                        held.push(b);
                    }
                    if held.len() > 12 {
                        held.drain(..).for_each(|b| check(&b, owner));
                    }
                    if t == 0 && i % 400 == 0 {
                        q.trim();
                    }
                    if i % 97 == 0 {
                        let s = q.stats();
                        assert!(s.pooled_bytes <= budget as u64, "{policy:?}: {s:?}");
                    }
                }
                held.drain(..).for_each(|b| check(&b, owner));
            }));
        }
        drop(tx);
        start.wait();
        let mut returned = 0;
        for b in rx {
            let owner = b[0];
            assert!(owner >= 1 && sampled(&b).all(|x| x == owner), "corrupted in transit");
            drop(b);
            returned += 1;
            if returned % 50 == 0 {
                let s = p.stats();
                assert!(s.pooled_bytes <= budget as u64, "{policy:?}: {s:?}");
            }
        }
        for h in handles {
            h.join().unwrap();
        }
        let s = p.stats();
        assert!(s.pooled_bytes <= budget as u64, "{policy:?}: {s:?}");
        assert_eq!(s.outstanding, 0, "{policy:?}: {s:?}");
        assert!(s.evictions > 0, "the pattern must press on the budget: {s:?}");
    }
}
