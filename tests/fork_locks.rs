//! fork() while another thread is known to hold each lock the fork
//! handlers take (API.md guarantee 7), one lock at a time: the open-pool
//! table, the C handle table, and every lock of the open pool (its shards,
//! counter registry, region class locks and one-off list), through the
//! test-only hook `__with_fork_lock_held_for_test`.
//!
//! For each lock: thread W takes it and holds it for HOLD; the main thread
//! forks meanwhile. The atfork prepare handler must wait for W (fork
//! returns no sooner than W lets go), and the child, where W does not
//! exist, must find every lock free and use the pool through all of them.
//! Children run under alarm(10) and _exit: a hang is a SIGALRM. A binary of
//! its own, so no other test's threads are around at fork.
#![cfg(all(target_os = "linux", not(miri)))]

use std::ffi::c_void;
use std::ptr;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use zeropool::*;

const PAGE: usize = 4096;
const HOLD: Duration = Duration::from_millis(150);
/// Classes of the test pool: PAGE << 0 ..= PAGE << (CLASSES - 1).
const CLASSES: usize = 6;

fn new_pool() -> *mut zp_pool {
    let cfg = zp_config_new();
    assert!(!cfg.is_null());
    assert_eq!(zp_config_set_min_buffer_size(cfg, PAGE), zp_status::ZP_OK);
    assert_eq!(zp_config_set_num_shards(cfg, 2), zp_status::ZP_OK);
    assert_eq!(zp_config_set_tls_cache_size(cfg, 1), zp_status::ZP_OK);
    assert_eq!(zp_config_set_max_pooled_bytes(cfg, (PAGE << CLASSES) - PAGE), zp_status::ZP_OK);
    let mut pool = ptr::null_mut();
    assert_eq!(zp_pool_new_with_config(cfg, &mut pool), zp_status::ZP_OK);
    zp_config_free(cfg);
    pool
}

/// What a child does: every kind of lock on its way. Returns its exit
/// code (0: fine; otherwise the step that failed).
fn child(pool: *mut zp_pool) -> i32 {
    let r = std::panic::catch_unwind(|| {
        // A thread cache is created (counter registry), buffers of every
        // class are got and returned (region class locks, shards), an
        // unpooled one too (one-off list).
        let mut bufs: Vec<*mut c_void> = Vec::new();
        for k in 0..CLASSES + 2 {
            let size = if k == CLASSES + 1 { (8 * PAGE) << CLASSES } else { PAGE << k };
            let b = zp_get(pool, size);
            if b.is_null() {
                return 10 + k as i32;
            }
            // SAFETY (test): a live buffer of at least `size` bytes.
            unsafe { ptr::write_bytes(b.cast::<u8>(), 7, size) };
            bufs.push(b);
        }
        for b in bufs {
            if zp_put(pool, b) != zp_status::ZP_OK {
                return 30;
            }
        }
        // A thread the library did not create, on the same pool.
        let p = pool as usize;
        let other = thread::spawn(move || {
            let b = zp_get(p as *mut zp_pool, PAGE);
            !b.is_null() && zp_put(p as *mut zp_pool, b) == zp_status::ZP_OK
        });
        if !other.join().unwrap_or(false) {
            return 31;
        }
        let mut s = std::mem::MaybeUninit::<Stats>::uninit();
        if zp_pool_stats(pool, s.as_mut_ptr()) != zp_status::ZP_OK {
            return 32;
        }
        // SAFETY: written by zp_pool_stats.
        let s = unsafe { s.assume_init() };
        if s.outstanding != 0 || s.gets != s.puts {
            return 33;
        }
        if zp_pool_trim(pool) != zp_status::ZP_OK {
            return 34;
        }
        // The open-pool table and the C handle table: a new pool, freed.
        let q = zp_pool_new();
        if q.is_null() {
            return 35;
        }
        let b = zp_get(q, PAGE);
        if b.is_null() || zp_put(q, b) != zp_status::ZP_OK {
            return 36;
        }
        zp_pool_free(q);
        // A rejected put looks the handle up in the C handle table.
        let mut local = [0u8; 64];
        if zp_put(pool, local.as_mut_ptr().cast()) != zp_status::ZP_ERR_FOREIGN_BUFFER {
            return 37;
        }
        zp_pool_free(pool);
        0
    });
    r.unwrap_or(99)
}

#[test]
fn fork_while_another_thread_holds_each_lock() {
    let pool = new_pool();
    let mut results = Vec::new();
    for which in 0.. {
        let (held_tx, held_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel::<bool>();
        let w = thread::spawn(move || {
            let existed = __with_fork_lock_held_for_test(which, || {
                held_tx.send(()).unwrap();
                thread::sleep(HOLD);
            });
            done_tx.send(existed).unwrap();
        });
        if held_rx.recv().is_err() {
            // `which` is past the last lock.
            assert!(!done_rx.recv().unwrap());
            w.join().unwrap();
            break;
        }
        let t0 = Instant::now();
        // SAFETY (test): the child runs `child` and _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: plain syscalls in the child; _exit skips the harness.
            unsafe {
                libc::alarm(10);
                libc::_exit(child(pool));
            }
        }
        let waited = t0.elapsed();
        let mut status = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(done_rx.recv().unwrap());
        w.join().unwrap();
        results.push((which, status, waited));
    }
    for (which, status, waited) in &results {
        eprintln!("lock #{which}: wait status {status}, fork returned after {waited:?}");
    }
    // 2 global locks, 2 shards, the registry, CLASSES class locks, the
    // one-off list: at least that many were tried.
    assert!(results.len() > 2 + 2 + 1 + CLASSES, "locks tried: {}", results.len());
    let bad: Vec<String> = results
        .iter()
        .filter(|(_, status, waited)| {
            !(libc::WIFEXITED(*status) && libc::WEXITSTATUS(*status) == 0) || *waited < HOLD / 3
        })
        .map(|(which, status, waited)| {
            let how = if libc::WIFSIGNALED(*status) {
                format!("killed by signal {} (14: SIGALRM, a hang)", libc::WTERMSIG(*status))
            } else {
                format!("exit {}", libc::WEXITSTATUS(*status))
            };
            format!("lock #{which}: child {how}, fork returned after {waited:?}")
        })
        .collect();
    assert!(
        bad.is_empty(),
        "forks while a lock was held (fork must wait for it, the child must exit 0):\n{}",
        bad.join("\n")
    );
    // The parent's pool still works.
    let b = zp_get(pool, PAGE);
    assert!(!b.is_null());
    assert_eq!(zp_put(pool, b), zp_status::ZP_OK);
    zp_pool_free(pool);
}
