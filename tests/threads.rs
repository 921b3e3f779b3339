//! Behaviour across threads: cross-thread returns, thread exit, thread-local
//! destructor order, trim and drop while other threads hold buffers, and a
//! stress run (per-owner fill patterns checked before every return, trims,
//! the idle-memory bound checked throughout).

use std::cell::RefCell;
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;

use zeropool::{Buffer, BufferPool, EvictionPolicy, Zeroing};

const PAGE: usize = 4096;

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

#[test]
fn dropping_the_pool_while_other_threads_hold_buffers_and_caches() {
    let p = pool();
    let q = p.clone();
    let ready = Arc::new(Barrier::new(2));
    let dropped = Arc::new(Barrier::new(2));
    let (r, d) = (ready.clone(), dropped.clone());
    let t = thread::spawn(move || {
        let mut held = q.get(PAGE);
        drop(q.get(PAGE)); // idle in this thread's cache
        drop(q);
        r.wait();
        d.wait(); // the pool's last handle is gone now
        held.fill(1);
        assert_eq!(held[PAGE - 1], 1);
        drop(held); // released to the system
    });
    ready.wait();
    drop(p);
    dropped.wait();
    t.join().unwrap();
}

/// Threads return buffers and exit (flushing their caches) while the last
/// handle is dropped on the main thread, with no ordering between them.
/// Nothing may crash or touch freed memory (the sanitizer runs of
/// .ci/harden), and nothing may leak (Miri's leak check).
#[test]
fn threads_exit_while_the_pool_is_dropped() {
    for _ in 0..if cfg!(miri) { 2 } else { 50 } {
        let p = pool();
        let start = Arc::new(Barrier::new(5));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (q, start) = (p.clone(), start.clone());
                thread::spawn(move || {
                    let held: Vec<_> = (0..3).map(|i| q.get(PAGE * (1 + (i + t) % 3))).collect();
                    drop(q.get(PAGE)); // an idle buffer in this thread's cache
                    drop(q);
                    start.wait();
                    drop(held); // may race with the pool's close
                })
            })
            .collect();
        start.wait();
        drop(p);
        threads.into_iter().for_each(|t| t.join().unwrap());
    }
}

#[test]
fn trim_reaches_other_threads_caches_at_their_next_call() {
    let p = pool();
    let q = p.clone();
    let filled = Arc::new(Barrier::new(2));
    let trimmed = Arc::new(Barrier::new(2));
    let (f, tr) = (filled.clone(), trimmed.clone());
    let t = thread::spawn(move || {
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

/// Every 61st byte and the last: enough to see a buffer two owners share,
/// cheap enough for unoptimized test builds.
fn sampled(b: &[u8]) -> impl Iterator<Item = u8> + '_ {
    b.iter().step_by(61).chain(b.last()).copied()
}

#[test]
#[cfg_attr(miri, ignore)] // many threads and thousands of mappings
fn idle_bytes_stay_bounded_under_a_hostile_pattern() {
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
        let start = Arc::new(Barrier::new(threads + 1));
        let (tx, rx) = mpsc::channel::<Buffer>();
        let mut handles = Vec::new();
        for t in 0..threads {
            let (q, start, tx) = (p.clone(), start.clone(), tx.clone());
            handles.push(thread::spawn(move || {
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
