//! fork() while other threads create pools (C and Rust) and grow their
//! size classes, so the fork lands in the middle of chunk reservations,
//! radix-table publication and pool registration. Each child creates a pool,
//! gets and puts in every class, and uses a pool inherited from the parent,
//! under an alarm() that turns a hang into a failure. A binary of its own,
//! so no other test's threads are around at fork.
#![cfg(target_os = "linux")]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use zeropool::*;

const PAGE: usize = 4096;

fn child(inherited: &BufferPool) -> i32 {
    let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let fresh = BufferPool::builder().min_buffer_size(PAGE).max_pooled_bytes(64 << 20).build().unwrap();
        for pool in [&fresh, inherited] {
            let mut bufs: Vec<_> = (0..12).map(|i| pool.get(PAGE << (i % 6))).collect();
            for b in &mut bufs {
                assert!(b.iter().all(|&x| x == 0));
                b.fill(9);
            }
            drop(bufs);
            pool.trim();
        }
        let c = zp_pool_new();
        assert!(!c.is_null());
        let bufs: Vec<_> = (0..8).map(|i| zp_get(c, PAGE << (i % 4))).collect();
        for b in bufs {
            assert!(!b.is_null());
            assert_eq!(zp_put(c, b), zp_status::ZP_OK);
        }
        zp_pool_free(c);
    }));
    i32::from(ok.is_err())
}

#[test]
fn children_forked_while_pools_are_created_and_grow_never_hang() {
    let inherited = BufferPool::builder().min_buffer_size(PAGE).max_pooled_bytes(32 << 20).build().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let (stop, shared) = (stop.clone(), inherited.clone());
            thread::spawn(move || {
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    // A new pool whose classes grow chunk by chunk...
                    let p = BufferPool::builder().min_buffer_size(PAGE).max_pooled_bytes(256 << 20).build().unwrap();
                    let held: Vec<_> = (0..40).map(|k| p.get(PAGE << ((i + k) % 7))).collect();
                    drop(held);
                    drop(p);
                    // ...a C pool created and freed...
                    let c = zp_pool_new();
                    let b = zp_get(c, PAGE << (i % 5));
                    assert_eq!(zp_put(c, b), zp_status::ZP_OK);
                    zp_pool_free(c);
                    // ...and the shared pool's classes in use.
                    let s: Vec<_> = (0..4).map(|k| shared.get(PAGE << ((i + k + w) % 6))).collect();
                    drop(s);
                    i += 1;
                }
            })
        })
        .collect();
    let mut failures = Vec::new();
    for round in 0..150 {
        thread::sleep(std::time::Duration::from_micros(300));
        // SAFETY (test): the child only runs `child` and then _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: plain syscalls in the child; _exit skips the harness.
            unsafe {
                libc::alarm(10);
                libc::_exit(child(&inherited));
            }
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            failures.push((round, status));
        }
    }
    stop.store(true, Ordering::Relaxed);
    workers.into_iter().for_each(|w| w.join().unwrap());
    assert!(failures.is_empty(), "children that hung (SIGALRM) or failed: {failures:?}");
}
