//! Memory goes back (API.md guarantee 8): after trim and after the pool is
//! freed, the resident set returns to within a few MiB of where it started,
//! for pooled and unpooled buffers alike. A binary of its own: RSS is
//! process-wide, so no other test may run beside it.
#![cfg(target_os = "linux")]

use zeropool::*;

const MIB: usize = 1 << 20;

fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 1024
}

fn near(now: usize, start: usize, what: &str) {
    let slack = 6 * MIB;
    assert!(now <= start + slack, "{what}: RSS {} MiB, started at {} MiB", now / MIB, start / MIB);
}

#[test]
fn trim_and_pool_free_give_the_memory_back() {
    // Warm up the allocator and the thread's bookkeeping first.
    drop(BufferPool::builder().min_buffer_size(MIB).build().unwrap().get(10));
    let start = rss();

    // Rust API: 200 pooled 1 MiB buffers written, returned, trimmed.
    let pool = BufferPool::builder().min_buffer_size(MIB).max_pooled_bytes(512 * MIB).tls_cache_size(8).build().unwrap();
    let mut bufs: Vec<_> = (0..200).map(|_| pool.get(MIB)).collect();
    bufs.iter_mut().for_each(|b| b.fill(1));
    assert!(rss() >= start + 180 * MIB, "the buffers were written");
    drop(bufs);
    assert!(pool.stats().pooled_bytes > 0);
    pool.trim();
    assert_eq!(pool.stats().pooled_bytes, 0);
    near(rss(), start, "after trim");

    // Used again, then the pool is dropped with everything idle.
    let mut bufs: Vec<_> = (0..100).map(|i| pool.get(MIB << (i % 3))).collect();
    bufs.iter_mut().for_each(|b| b.fill(2));
    drop(bufs);
    drop(pool);
    near(rss(), start, "after the pool is dropped");

    // C API, defaults: 40 live 17 MiB buffers (the 32 MiB class), touched,
    // returned (the budget keeps two idle), trimmed, then the pool freed.
    let c = zp_pool_new();
    let bufs: Vec<_> = (0..40).map(|_| zp_get(c, 17 * MIB)).collect();
    for &b in &bufs {
        assert!(!b.is_null());
        // SAFETY (test): a live buffer of 17 MiB; one byte per page.
        unsafe { (0..17 * MIB).step_by(4096).for_each(|o| *b.cast::<u8>().add(o) = 1) };
    }
    assert!(rss() >= start + 600 * MIB);
    for b in bufs {
        assert_eq!(zp_put(c, b), zp_status::ZP_OK);
    }
    assert_eq!(zp_pool_trim(c), zp_status::ZP_OK);
    near(rss(), start, "after 17 MiB buffers came back and trim");
    zp_pool_free(c);
    near(rss(), start, "after zp_pool_free");

    // Unpooled: a pool whose budget holds no class of that size.
    let cfg = zp_config_new();
    assert_eq!(zp_config_set_max_pooled_bytes(cfg, 4 * MIB), zp_status::ZP_OK);
    let mut c = std::ptr::null_mut();
    assert_eq!(zp_pool_new_with_config(cfg, &mut c), zp_status::ZP_OK);
    zp_config_free(cfg);
    for round in 0..3 {
        let bufs: Vec<_> = (0..20).map(|_| zp_get(c, 17 * MIB + round * 4096)).collect();
        for &b in &bufs {
            // SAFETY (test): live 17 MiB buffers.
            unsafe { std::ptr::write_bytes(b.cast::<u8>(), 4, 17 * MIB) };
        }
        for b in bufs {
            assert_eq!(zp_put(c, b), zp_status::ZP_OK);
        }
        near(rss(), start, "after unpooled buffers came back");
    }
    zp_pool_free(c);
    near(rss(), start, "after zp_pool_free (unpooled)");

    // Buffers still out when the pool is freed: the memory goes with the
    // last of them.
    let c = zp_pool_new();
    let bufs: Vec<_> = (0..30).map(|_| zp_get(c, MIB)).collect();
    for &b in &bufs {
        // SAFETY (test): live 1 MiB buffers.
        unsafe { std::ptr::write_bytes(b.cast::<u8>(), 3, MIB) };
    }
    zp_pool_free(c);
    for b in bufs {
        assert_eq!(zp_put(c, b), zp_status::ZP_OK);
    }
    near(rss(), start, "after the last buffer of a freed pool");
}
