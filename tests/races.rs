//! Hostile C callers racing on one buffer: two threads return the same
//! buffer at the same instant (a double free in the caller). Exactly one
//! `zp_put` may succeed, and no buffer may ever be handed to two holders.

use std::ffi::c_void;
use std::sync::Arc;

use zeropool::*;

mod common;
use common::Gate;

struct Pool(*mut zp_pool);
// SAFETY: zp_pool is thread safe (the header's contract).
unsafe impl Send for Pool {}
unsafe impl Sync for Pool {}

fn pool() -> Arc<Pool> {
    let cfg = zp_config_new();
    assert_eq!(zp_config_set_min_buffer_size(cfg, 4096), zp_status::ZP_OK);
    assert_eq!(zp_config_set_tls_cache_size(cfg, 4), zp_status::ZP_OK);
    let mut p = std::ptr::null_mut();
    assert_eq!(zp_pool_new_with_config(cfg, &mut p), zp_status::ZP_OK);
    zp_config_free(cfg);
    Arc::new(Pool(p))
}

fn fill(buf: *mut c_void, len: usize, byte: u8) {
    // SAFETY: a live buffer of `len` bytes handed to this thread.
    unsafe { std::ptr::write_bytes(buf.cast::<u8>(), byte, len) };
}

fn holds(buf: *mut c_void, len: usize, byte: u8) -> bool {
    // SAFETY: as in `fill`.
    unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) }.iter().all(|&b| b == byte)
}

/// Per round: thread 0 gets a buffer; both threads return it at once (a
/// barrier lines them up); exactly one ZP_OK, the other ZP_ERR_DOUBLE_PUT.
/// Then each thread gets a buffer, fills it with its own byte and checks it
/// after the other did the same: had both puts been taken, both caches
/// would hold the one buffer and the two fills would collide.
#[test]
fn racing_double_puts_have_exactly_one_winner() {
    const LEN: usize = 3000;
    let rounds = if cfg!(miri) { 20 } else { 5000 };
    let p = pool();
    let barrier = Gate::new(2);
    let shared = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let arrived = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let threads: Vec<_> = (0..2u8)
        .map(|me| {
            let (p, barrier, shared, arrived) = (p.clone(), barrier.clone(), shared.clone(), arrived.clone());
            std::thread::spawn(move || {
                // A failed assert here poisons the gate: the peer panics too
                // instead of waiting for this thread forever.
                let _guard = barrier.guard();
                let mut wins = 0;
                for round in 0..rounds {
                    if me == 0 {
                        let buf = zp_get(p.0, LEN);
                        assert!(!buf.is_null());
                        shared.store(buf as usize, std::sync::atomic::Ordering::SeqCst);
                    }
                    barrier.wait();
                    let buf = shared.load(std::sync::atomic::Ordering::SeqCst) as *mut c_void;
                    // A spinning start line: both puts leave within
                    // nanoseconds of each other (a sleeping barrier's
                    // wake-ups are microseconds apart).
                    arrived.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    while arrived.load(std::sync::atomic::Ordering::SeqCst) < 2 * (round + 1) {
                        barrier.check();
                        std::hint::spin_loop();
                    }
                    match zp_put(p.0, buf) {
                        zp_status::ZP_OK => wins += 1,
                        zp_status::ZP_ERR_DOUBLE_PUT => {}
                        other => panic!("racing put gave {other:?}"),
                    }
                    barrier.wait();
                    let mine = zp_get(p.0, LEN);
                    fill(mine, LEN, 0x10 + me);
                    barrier.wait();
                    assert!(holds(mine, LEN, 0x10 + me), "a buffer was handed to two holders");
                    barrier.wait();
                    assert_eq!(zp_put(p.0, mine), zp_status::ZP_OK);
                }
                wins
            })
        })
        .collect();
    let wins: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(wins, rounds, "exactly one ZP_OK per round");
    let mut s = Stats::default();
    assert_eq!(zp_pool_stats(p.0, &mut s), zp_status::ZP_OK);
    assert_eq!(s.rejected_puts, rounds as u64, "{s:?}");
    assert_eq!(s.outstanding, 0, "{s:?}");
    zp_pool_free(p.0);
}

/// Four threads keep buffers with their own fill while pairs of them
/// return one buffer from two threads at once; overflowed buffers are
/// raced too (the loser must not release the winner's buffer). Nobody's
/// fill may ever change under them.
#[test]
fn racing_misuse_never_hands_a_buffer_to_two_holders() {
    const LEN: usize = 5000;
    let rounds = if cfg!(miri) { 10 } else { 3000 };
    let p = pool();
    let barrier = Gate::new(4);
    let victims: Arc<[std::sync::atomic::AtomicUsize; 2]> = Arc::new(Default::default());
    let threads: Vec<_> = (0..4u8)
        .map(|me| {
            let (p, barrier, victims) = (p.clone(), barrier.clone(), victims.clone());
            std::thread::spawn(move || {
                let _guard = barrier.guard();
                let mut held: Vec<*mut c_void> = Vec::new();
                for round in 0..rounds {
                    if me < 2 {
                        let v = zp_get(p.0, LEN);
                        fill(v, LEN, 0xEE);
                        if round % 3 == 0 {
                            // SAFETY: one byte past the length: a live tail.
                            unsafe { *v.cast::<u8>().add(LEN) ^= 0xFF };
                        }
                        victims[me as usize].store(v as usize, std::sync::atomic::Ordering::SeqCst);
                    }
                    barrier.wait();
                    // Threads 0 and 2 race on victim 0, 1 and 3 on victim 1.
                    let v = victims[(me % 2) as usize].load(std::sync::atomic::Ordering::SeqCst) as *mut c_void;
                    let st = zp_put(p.0, v);
                    assert!(
                        matches!(st, zp_status::ZP_OK | zp_status::ZP_ERR_DOUBLE_PUT | zp_status::ZP_ERR_OVERFLOW),
                        "{st:?}"
                    );
                    // Both returns are in before anyone gets again: a double
                    // put that arrives after the buffer was handed out anew
                    // cannot be told from its new holder's put (addresses are
                    // reused, as with any allocator).
                    barrier.wait();
                    let b = zp_get(p.0, LEN);
                    fill(b, LEN, me + 1);
                    held.push(b);
                    if held.len() > 3 {
                        let old = held.remove(0);
                        assert!(holds(old, LEN, me + 1), "a held buffer changed under its holder");
                        assert_eq!(zp_put(p.0, old), zp_status::ZP_OK);
                    }
                    barrier.wait();
                }
                for b in held {
                    assert!(holds(b, LEN, me + 1));
                    assert_eq!(zp_put(p.0, b), zp_status::ZP_OK);
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    let mut s = Stats::default();
    assert_eq!(zp_pool_stats(p.0, &mut s), zp_status::ZP_OK);
    assert_eq!(s.outstanding, 0, "{s:?}");
    zp_pool_free(p.0);
}

/// The gate the tests above line their threads up with: a thread that
/// fails before it arrives releases its peers (each panics) instead of
/// leaving them waiting forever, as `std::sync::Barrier` would.
#[test]
fn a_thread_that_fails_releases_its_peers() {
    let gate = Gate::new(3);
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let gate = gate.clone();
            std::thread::spawn(move || {
                let _guard = gate.guard();
                gate.wait();
            })
        })
        .collect();
    let failing = {
        let gate = gate.clone();
        std::thread::spawn(move || {
            let _guard = gate.guard();
            panic!("an assert failed before the gate (on purpose)");
        })
    };
    assert!(failing.join().is_err());
    let start = std::time::Instant::now();
    for w in waiters {
        assert!(w.join().is_err(), "a peer must panic, not pass, when the gate is poisoned");
    }
    assert!(start.elapsed() < Gate::LIMIT, "the peers were released by the poison, not the time limit");
    assert!(gate.is_poisoned());
}
