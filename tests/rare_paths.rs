//! Rare paths where a guarantee of shared/API.md must still hold (issue 26):
//! races with `zp_pool_free`, failures injected where the system will not
//! produce them, pools whose ids collide in a thread's table.
//!
//! A binary of its own: some tests read the process's mappings, so they
//! take turns (SERIAL) and nothing else runs beside them.
#![cfg(all(target_os = "linux", not(miri)))]

use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;

use zeropool::*;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The process's mappings, as (start, end).
fn mappings() -> Vec<(usize, usize)> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .map(|l| {
            let range = l.split_whitespace().next().unwrap();
            let (a, b) = range.split_once('-').unwrap();
            (usize::from_str_radix(a, 16).unwrap(), usize::from_str_radix(b, 16).unwrap())
        })
        .collect()
}

/// How many of `addrs` lie in some mapping.
fn still_mapped(addrs: &[usize]) -> usize {
    let maps = mappings();
    addrs.iter().filter(|&&a| maps.iter().any(|&(s, e)| s <= a && a < e)).count()
}

fn c_pool(min: usize, tls: usize, budget: usize) -> *mut zp_pool {
    let cfg = zp_config_new();
    assert!(!cfg.is_null());
    assert_eq!(zp_config_set_tls_cache_size(cfg, tls), zp_status::ZP_OK);
    assert_eq!(zp_config_set_min_buffer_size(cfg, min), zp_status::ZP_OK);
    assert_eq!(zp_config_set_max_pooled_bytes(cfg, budget), zp_status::ZP_OK);
    let mut pool = ptr::null_mut();
    assert_eq!(zp_pool_new_with_config(cfg, &mut pool), zp_status::ZP_OK);
    zp_config_free(cfg);
    pool
}

/// A pointer that may cross threads (the test's own bookkeeping).
#[derive(Clone, Copy)]
struct P(usize);
impl P {
    fn pool(self) -> *mut zp_pool {
        self.0 as *mut zp_pool
    }
    fn buf(self) -> *mut c_void {
        self.0 as *mut c_void
    }
}

/// What each worker does as its "one more call" after every buffer is back.
#[derive(Clone, Copy, Debug)]
enum NextCall {
    /// `zp_get` + `zp_put` on another pool.
    GetPut,
    /// `zp_local_get` + `zp_local_put` on a handle of another pool.
    Local,
    /// `zp_get` of a size no buffer can hold, on another pool.
    TooLarge,
    /// `zp_get` + `zp_put` of an unpooled size, on another pool.
    Unpooled,
}

/// Issue 26, item 2: `zp_pool_free` races with 4 threads each returning 64
/// buffers of 64 KiB. Once every buffer is back and each thread has made one
/// more call (of several kinds, on another pool), none of the freed pool's
/// memory may be mapped. The free comes at many moments: after 0, 16, ...,
/// 256 of the puts.
#[test]
fn a_freed_pools_memory_is_unmapped_once_its_buffers_are_back_whenever_the_free_comes() {
    let _serial = serial();
    const THREADS: usize = 4;
    const EACH: usize = 64;
    const SIZE: usize = 64 * KIB;
    let other = P(c_pool(4 * KIB, 16, 64 * MIB) as usize);
    let unpooled = 64 * MIB; // past the largest class of the default config
                             // Workers live across rounds (the leak showed until threads exit).
    let start = Arc::new(Barrier::new(THREADS + 1));
    let done = Arc::new(Barrier::new(THREADS + 1));
    let work: Arc<Mutex<Vec<(P, Vec<P>, NextCall)>>> = Arc::new(Mutex::new(Vec::new()));
    let puts = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (start, done, work, puts, stop) =
                (start.clone(), done.clone(), work.clone(), puts.clone(), stop.clone());
            thread::spawn(move || {
                // A handle and a warm cache of the other pool first, so the
                // last call maps nothing new.
                let local = zp_local_new(other.pool());
                assert!(!local.is_null());
                for _ in 0..2 {
                    let x = zp_get(other.pool(), 4096);
                    let y = zp_local_get(local, 4096);
                    assert!(!x.is_null() && !y.is_null());
                    assert_eq!(zp_put(other.pool(), x), zp_status::ZP_OK);
                    assert_eq!(zp_local_put(local, y), zp_status::ZP_OK);
                }
                let big = zp_get(other.pool(), unpooled);
                assert!(!big.is_null());
                assert_eq!(zp_put(other.pool(), big), zp_status::ZP_OK);
                loop {
                    start.wait();
                    if stop.load(Ordering::Relaxed) != 0 {
                        zp_local_free(local);
                        return;
                    }
                    let (pool, bufs, next) = work.lock().unwrap()[t].clone();
                    for b in bufs {
                        assert_eq!(zp_put(pool.pool(), b.buf()), zp_status::ZP_OK);
                        puts.fetch_add(1, Ordering::SeqCst);
                    }
                    done.wait(); // every buffer back; the free has come
                    match next {
                        NextCall::GetPut => {
                            let x = zp_get(other.pool(), 4096);
                            assert_eq!(zp_put(other.pool(), x), zp_status::ZP_OK);
                        }
                        NextCall::Local => {
                            let x = zp_local_get(local, 4096);
                            assert_eq!(zp_local_put(local, x), zp_status::ZP_OK);
                        }
                        NextCall::TooLarge => {
                            assert!(zp_get(other.pool(), usize::MAX).is_null());
                        }
                        NextCall::Unpooled => {
                            let x = zp_get(other.pool(), unpooled);
                            assert!(!x.is_null());
                            assert_eq!(zp_put(other.pool(), x), zp_status::ZP_OK);
                        }
                    }
                    done.wait();
                }
            })
        })
        .collect();
    let kinds = [NextCall::GetPut, NextCall::Local, NextCall::TooLarge, NextCall::Unpooled];
    let mut failures = Vec::new();
    let mut round = 0;
    for kind in kinds {
        for free_after in (0..=THREADS * EACH).step_by(32) {
            round += 1;
            let pool = P(c_pool(64 * KIB, 16, 64 * MIB) as usize);
            let bufs: Vec<P> = (0..THREADS * EACH)
                .map(|_| {
                    let b = zp_get(pool.pool(), SIZE);
                    assert!(!b.is_null());
                    // SAFETY (test): a live buffer of SIZE bytes.
                    unsafe { ptr::write_bytes(b.cast::<u8>(), 0x5A, SIZE) };
                    P(b as usize)
                })
                .collect();
            let addrs: Vec<usize> = bufs.iter().map(|b| b.0).collect();
            assert_eq!(still_mapped(&addrs), addrs.len());
            *work.lock().unwrap() = bufs.chunks(EACH).map(|c| (pool, c.to_vec(), kind)).collect();
            puts.store(0, Ordering::SeqCst);
            start.wait();
            while puts.load(Ordering::SeqCst) < free_after {
                std::hint::spin_loop();
            }
            zp_pool_free(pool.pool());
            done.wait(); // all back
            done.wait(); // and one more call each
            let left = still_mapped(&addrs);
            if left != 0 {
                failures.push(format!("{kind:?}, freed after {free_after} puts: {left} of 256 buffers still mapped"));
            }
        }
    }
    stop.store(1, Ordering::Relaxed);
    start.wait();
    workers.into_iter().for_each(|w| w.join().unwrap());
    zp_pool_free(other.pool());
    assert!(failures.is_empty(), "{} of {round} rounds:\n{}", failures.len(), failures.join("\n"));
}

/// Issue 26, item 2, the references that outlive a pool: a thread that got
/// the pool's buffers (so holds a cache of it, with nothing idle in it) and
/// a `zp_local` handle kept past `zp_pool_free` (allowed) must not keep the
/// pool's memory mapped once its last buffer is back. Neither makes another
/// call before the check: they cached nothing.
#[test]
fn stale_caches_and_zp_local_handles_do_not_keep_a_freed_pools_memory() {
    let _serial = serial();
    const N: usize = 64;
    const SIZE: usize = 64 * KIB;
    let pool = P(c_pool(64 * KIB, 16, 64 * MIB) as usize);
    let (to_g, from_main) = std::sync::mpsc::channel::<()>();
    let (to_main, from_g) = std::sync::mpsc::channel::<(P, Vec<P>)>();
    let g = thread::spawn(move || {
        let local = zp_local_new(pool.pool());
        assert!(!local.is_null());
        // One buffer through the handle and back: its cache is warm, empty.
        let x = zp_local_get(local, SIZE);
        assert!(!x.is_null());
        assert_eq!(zp_put(pool.pool(), x), zp_status::ZP_OK);
        let bufs: Vec<P> = (0..N)
            .map(|_| {
                let b = zp_get(pool.pool(), SIZE);
                assert!(!b.is_null());
                // SAFETY (test): a live buffer of SIZE bytes.
                unsafe { ptr::write_bytes(b.cast::<u8>(), 0x5A, SIZE) };
                P(b as usize)
            })
            .collect();
        to_main.send((P(local as usize), bufs)).unwrap();
        from_main.recv().unwrap();
        // After the check: the handle still works as the header says.
        let local = local.cast::<zp_local>();
        assert!(zp_local_get(local, SIZE).is_null());
        assert_eq!(zp_last_error(), zp_status::ZP_ERR_INVALID_ARGUMENT);
        zp_local_free(local);
    });
    let (_local, bufs) = from_g.recv().unwrap();
    let addrs: Vec<usize> = bufs.iter().map(|b| b.0).collect();
    assert_eq!(still_mapped(&addrs), N);
    zp_pool_free(pool.pool());
    for b in &bufs {
        assert_eq!(zp_put(pool.pool(), b.buf()), zp_status::ZP_OK);
    }
    let left = still_mapped(&addrs);
    to_g.send(()).unwrap();
    g.join().unwrap();
    assert_eq!(left, 0, "{left} of {N} buffers of the freed pool still mapped after every one came back");
}
