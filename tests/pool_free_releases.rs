//! API.md guarantee 8: after `zp_pool_free` (or the last `BufferPool`
//! handle is dropped), idle buffers in other threads' caches leave the
//! resident set no later than that thread's next zeropool call on any
//! pool. A binary of its own: RSS is process-wide, so the two tests take
//! turns (SERIAL) and nothing else runs beside them.
#![cfg(all(target_os = "linux", not(miri)))]

use std::ptr;
use std::sync::mpsc;
use std::sync::Mutex;
use std::thread;

use zeropool::*;

const MIB: usize = 1 << 20;
/// Buffers of 2 MiB written in full, as many as a thread cache holds: what
/// thread T leaves idle in its cache of pool A.
const SIZE: usize = 2 * MIB;
const CACHED: usize = 8;
/// What RSS must drop by at least (of CACHED * SIZE = 16 MiB).
const MUST_DROP: usize = 12 * MIB;

static SERIAL: Mutex<()> = Mutex::new(());

fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 1024
}

/// RSS fell by at least `MUST_DROP` between `before` and `after` (`what`
/// happened, then T made its next call, on pool B).
fn assert_released(before: usize, after: usize, what: &str) {
    assert!(
        after + MUST_DROP <= before,
        "T's next call (on pool B) after {what} must release A's {} MiB cached in T: RSS {} MiB -> {} MiB",
        CACHED * SIZE / MIB,
        before / MIB,
        after / MIB
    );
}

fn c_pool() -> *mut zp_pool {
    let cfg = zp_config_new();
    assert!(!cfg.is_null());
    assert_eq!(zp_config_set_tls_cache_size(cfg, CACHED), zp_status::ZP_OK);
    assert_eq!(zp_config_set_min_buffer_size(cfg, MIB), zp_status::ZP_OK);
    assert_eq!(zp_config_set_max_pooled_bytes(cfg, 64 * MIB), zp_status::ZP_OK);
    let mut pool = ptr::null_mut();
    assert_eq!(zp_pool_new_with_config(cfg, &mut pool), zp_status::ZP_OK);
    zp_config_free(cfg);
    pool
}

fn c_stats(pool: *const zp_pool) -> Stats {
    let mut s = Stats::default();
    assert_eq!(zp_pool_stats(pool, &mut s), zp_status::ZP_OK);
    s
}

/// Steps between the main thread and T.
enum Go {
    /// Make one call on pool B, then report.
    CallB,
    /// Exit.
    Exit,
}

#[test]
fn zp_pool_free_releases_another_threads_cached_buffers_at_its_next_call() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let a = c_pool() as usize;
    let b = c_pool() as usize;
    let (to_t, from_main) = mpsc::channel::<Go>();
    let (to_main, from_t) = mpsc::channel::<()>();
    let t = thread::spawn(move || {
        let (a, b) = (a as *mut zp_pool, b as *mut zp_pool);
        // Pool B first, so T has a cache of it too.
        let x = zp_get(b, 4096);
        assert!(!x.is_null());
        assert_eq!(zp_put(b, x), zp_status::ZP_OK);
        // CACHED buffers of A, written in full, back in T's cache.
        let bufs: Vec<_> = (0..CACHED).map(|_| zp_get(a, SIZE)).collect();
        for &p in &bufs {
            assert!(!p.is_null());
            // SAFETY (test): a live buffer of SIZE bytes.
            unsafe { ptr::write_bytes(p.cast::<u8>(), 0x5A, SIZE) };
        }
        for p in bufs {
            assert_eq!(zp_put(a, p), zp_status::ZP_OK);
        }
        to_main.send(()).unwrap();
        while let Ok(go) = from_main.recv() {
            match go {
                Go::CallB => {
                    // One call on B, none on A (A is freed).
                    let x = zp_get(b, 4096);
                    assert!(!x.is_null());
                    to_main.send(()).unwrap();
                    assert_eq!(zp_put(b, x), zp_status::ZP_OK);
                }
                Go::Exit => return,
            }
        }
    });
    from_t.recv().unwrap();
    let s = c_stats(a as *const zp_pool);
    assert!(s.pooled_bytes >= (CACHED * SIZE) as u64, "A's buffers sit idle in T's cache: {s:?}");
    assert_eq!((s.gets, s.puts, s.outstanding), (CACHED as u64, CACHED as u64, 0), "{s:?}");
    let before = rss();
    zp_pool_free(a as *mut zp_pool);
    to_t.send(Go::CallB).unwrap();
    from_t.recv().unwrap(); // T made its call on B and is still alive
    let after = rss();
    assert_released(before, after, "zp_pool_free(A)");
    to_t.send(Go::Exit).unwrap();
    t.join().unwrap();
    let s = c_stats(b as *const zp_pool);
    assert_eq!((s.gets, s.puts, s.outstanding), (2, 2, 0), "pool B: {s:?}");
    assert!(s.pooled_bytes <= 64 * MIB as u64, "pool B: {s:?}");
    zp_pool_free(b as *mut zp_pool);
}

#[test]
fn dropping_the_last_handle_releases_another_threads_cached_buffers_at_its_next_call() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let build = || {
        BufferPool::builder().tls_cache_size(CACHED).min_buffer_size(MIB).max_pooled_bytes(64 * MIB).build().unwrap()
    };
    let (a, b) = (build(), build());
    let (to_t, from_main) = mpsc::channel::<Go>();
    let (to_main, from_t) = mpsc::channel::<()>();
    let (qa, qb) = (a.clone(), b.clone());
    let t = thread::spawn(move || {
        drop(qb.get(4096));
        let mut bufs: Vec<_> = (0..CACHED).map(|_| qa.get(SIZE)).collect();
        bufs.iter_mut().for_each(|x| x.fill(0x5A));
        drop(bufs); // idle in T's cache of A
        drop(qa); // T keeps its cache of A, not a handle
        to_main.send(()).unwrap();
        while let Ok(go) = from_main.recv() {
            match go {
                Go::CallB => {
                    let x = qb.get(4096);
                    to_main.send(()).unwrap();
                    drop(x);
                }
                Go::Exit => return,
            }
        }
    });
    from_t.recv().unwrap();
    let s = a.stats();
    assert!(s.pooled_bytes >= (CACHED * SIZE) as u64, "A's buffers sit idle in T's cache: {s:?}");
    assert_eq!((s.gets, s.puts, s.outstanding), (CACHED as u64, CACHED as u64, 0), "{s:?}");
    let before = rss();
    drop(a); // the last handle of A
    to_t.send(Go::CallB).unwrap();
    from_t.recv().unwrap();
    let after = rss();
    assert_released(before, after, "A's last handle is dropped");
    to_t.send(Go::Exit).unwrap();
    t.join().unwrap();
    let s = b.stats();
    assert_eq!((s.gets, s.puts, s.outstanding), (2, 2, 0), "pool B: {s:?}");
}
