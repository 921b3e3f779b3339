//! fork() while another thread works the pool's locks: 200 children, each
//! uses the pool and exits; an alarm() turns a hang into a failure. The
//! other thread also holds buffers for the whole run: no child may be
//! handed one of them, nor scrub them. A binary of its own, so no other
//! test's threads are around at fork.
#![cfg(target_os = "linux")]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use zeropool::BufferPool;

const PAGE: usize = 4096;
const HELD: u8 = 0xAB;

/// What a child does; its exit status is the result (0: fine). `theirs`:
/// the addresses of the buffers the other thread holds, filled with HELD.
fn child(pool: &BufferPool, theirs: &[usize]) -> i32 {
    let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let before = pool.stats();
        let mut bufs: Vec<_> = (0..6).map(|i| pool.get(PAGE << (i % 4))).collect();
        for b in &mut bufs {
            assert!(b.iter().all(|&x| x == 0), "a child saw another thread's bytes");
            assert!(!theirs.contains(&(b.as_ptr() as usize)), "a child got a buffer another thread holds");
            b.fill(7);
        }
        drop(bufs);
        pool.trim();
        let after = pool.stats();
        assert_eq!(after.gets, before.gets + 6);
        for &addr in theirs {
            // SAFETY (test): the child's copy of a buffer the (vanished)
            // other thread holds; nothing in the child writes it.
            let bytes = unsafe { std::slice::from_raw_parts(addr as *const u8, PAGE) };
            assert!(bytes.iter().all(|&x| x == HELD), "a child scrubbed or reused another thread's buffer");
        }
    }));
    if ok.is_ok() {
        0
    } else {
        1
    }
}

#[test]
fn children_forked_while_another_thread_works_never_hang() {
    let pool = BufferPool::builder()
        .min_buffer_size(PAGE)
        .tls_cache_size(1) // most operations reach a shard lock
        .num_shards(2)
        .max_pooled_bytes(16 * PAGE)
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut kept: Vec<_> = (0..4).map(|_| pool.get(PAGE)).collect();
    kept.iter_mut().for_each(|b| b.fill(HELD));
    let theirs: Vec<usize> = kept.iter().map(|b| b.as_ptr() as usize).collect();
    let worker = {
        let (pool, stop) = (pool.clone(), stop.clone());
        thread::spawn(move || {
            let _kept = kept; // held by this thread for the whole run
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let held: Vec<_> = (0..4).map(|k| pool.get(PAGE << ((i as usize + k) % 4))).collect();
                drop(held);
                if i % 64 == 0 {
                    pool.trim();
                }
                if i % 16 == 0 {
                    let _ = pool.stats();
                }
                i += 1;
            }
        })
    };
    let mut failures = Vec::new();
    for round in 0..200 {
        // SAFETY (test): the child only runs `child` and then _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: plain syscalls in the child; _exit skips the harness.
            unsafe {
                libc::alarm(10);
                libc::_exit(child(&pool, &theirs));
            }
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let exited_ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
        if !exited_ok {
            failures.push((round, status));
        }
    }
    stop.store(true, Ordering::Relaxed);
    worker.join().unwrap();
    assert!(failures.is_empty(), "children that hung (SIGALRM) or failed: {failures:?}");
    assert!(pool.stats().pooled_bytes <= 16 * PAGE as u64);
}
