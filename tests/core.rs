//! Single-threaded behaviour of the Rust API: zeroing, classes, budget,
//! eviction order, trim, errors. Small buffers keep these fast under Miri.

use zeropool::{BufferPool, Error, EvictionPolicy, Zeroing};

const PAGE: usize = 4096;

fn pool(zeroing: Zeroing) -> BufferPool {
    BufferPool::builder()
        .min_buffer_size(PAGE)
        .num_shards(1)
        .tls_cache_size(4)
        .max_pooled_bytes(64 * PAGE)
        .zeroing(zeroing)
        .build()
        .unwrap()
}

#[test]
fn fresh_buffers_are_zero_and_exactly_the_requested_length() {
    let p = pool(Zeroing::Always);
    for len in [0, 1, 100, PAGE, PAGE + 1, 5 * PAGE] {
        let buf = p.get(len);
        assert_eq!(buf.len(), len);
        assert!(buf.capacity() >= len);
        assert!(buf.iter().all(|&b| b == 0));
    }
}

#[test]
fn reused_buffers_are_zero_under_always_and_on_put() {
    for z in [Zeroing::Always, Zeroing::OnPut] {
        let p = pool(z);
        let mut a = p.get(3000);
        a.fill(0xAB);
        let addr = a.as_ptr();
        p.put(a);
        // A longer request in the same class sees the written bytes' range too.
        let b = p.get(PAGE);
        assert_eq!(b.as_ptr(), addr, "{z:?}: the buffer should be reused");
        assert!(b.iter().all(|&x| x == 0), "{z:?}: stale bytes leaked");
    }
}

#[test]
fn never_reuses_without_zeroing() {
    // The opt-out really skips zeroing: the next caller sees the old bytes.
    let p = pool(Zeroing::Never);
    let mut a = p.get(PAGE);
    a.fill(0x5A);
    let addr = a.as_ptr();
    drop(a);
    let b = p.get(PAGE);
    assert_eq!(b.as_ptr(), addr);
    assert!(b.iter().all(|&x| x == 0x5A));
}

/// Simulates a C caller writing to a buffer after returning it: `Always`
/// zeroes again on get, `OnPut` trusts the scrub it did at put time.
fn get_after_use_after_put(z: Zeroing) -> Vec<u8> {
    let p = pool(z);
    let mut a = p.get(PAGE);
    let ptr = a.as_mut_ptr();
    drop(a);
    // A clean reuse finds nothing to report.
    drop(p.get(PAGE));
    assert_eq!(p.stats().dirty_gets, 0);
    // SAFETY (test): the pool keeps the mapping alive while the buffer is
    // idle in this thread's cache; no reference to it exists right now.
    unsafe { std::ptr::write_bytes(ptr.add(PAGE - 16), 0xEE, 16) };
    let b = p.get(PAGE);
    assert_eq!(b.as_ptr(), ptr as *const u8);
    // `Always` found the bytes (and zeroed them); `OnPut` does not look.
    let want = u64::from(z == Zeroing::Always);
    assert_eq!(p.stats().dirty_gets, want, "{:?}", p.stats());
    b[PAGE - 16..].to_vec()
}

#[test]
// Deliberately writes to memory the pool owns: Miri, and ASan's poisoning
// of idle buffers (.ci/harden), report it as the bug it is.
#[cfg_attr(any(miri, zeropool_asan), ignore)]
fn always_zeroes_on_get_even_after_a_use_after_put() {
    assert_eq!(get_after_use_after_put(Zeroing::Always), vec![0; 16]);
    assert_eq!(get_after_use_after_put(Zeroing::OnPut), vec![0xEE; 16]);
}

#[test]
fn requests_round_up_to_classes_and_oversize_is_unpooled() {
    let p = pool(Zeroing::Always);
    assert_eq!(p.get(1).capacity(), PAGE);
    assert_eq!(p.get(PAGE + 1).capacity(), 2 * PAGE);
    assert_eq!(p.get(3 * PAGE).capacity(), 3 * PAGE);
    // Four classes per doubling: 9 pages take the 10-page class.
    assert_eq!(p.get(8 * PAGE + 1).capacity(), 10 * PAGE);
    // 64 pages is the budget, so 64 pages is the largest class.
    let big = p.get(64 * PAGE + 1);
    assert_eq!(big.capacity(), 65 * PAGE);
    let before = p.stats();
    drop(big);
    let after = p.stats();
    assert_eq!(after.pooled_bytes, before.pooled_bytes, "oversize buffers are released, not kept");
    assert_eq!(after.puts, before.puts + 1);
}

#[test]
fn impossible_sizes_are_errors_not_panics() {
    let p = pool(Zeroing::Always);
    assert_eq!(p.try_get(usize::MAX).unwrap_err(), Error::TooLarge { requested: usize::MAX });
    assert!(matches!(p.try_get(usize::MAX / 2 + 1), Err(Error::TooLarge { .. })));
    assert_eq!(p.stats().allocations, 0, "nothing is allocated for an impossible size");
    assert_eq!(p.stats().gets, 0);
}

#[test]
#[cfg_attr(miri, ignore)] // asks the OS for 2^47 bytes
fn unsatisfiable_sizes_are_out_of_memory() {
    let p = pool(Zeroing::Always);
    assert!(matches!(p.try_get(1 << 47), Err(Error::OutOfMemory { .. })));
    assert!(matches!(p.try_get(1 << 48), Err(Error::TooLarge { .. })));
}

#[test]
fn get_panics_with_a_message_on_impossible_sizes() {
    let p = pool(Zeroing::Always);
    let err = std::panic::catch_unwind(|| drop(p.get(usize::MAX))).unwrap_err();
    let msg = err.downcast_ref::<String>().unwrap();
    assert!(msg.contains("zeropool") && msg.contains("more than any buffer"), "{msg}");
}

#[test]
fn stats_count_gets_puts_hits_and_outstanding() {
    let p = pool(Zeroing::Always);
    let a = p.get(10);
    let b = p.get(10);
    let s = p.stats();
    assert_eq!((s.gets, s.puts, s.outstanding, s.allocations), (2, 0, 2, 2));
    drop(a);
    drop(b);
    let c = p.get(10);
    let s = p.stats();
    assert_eq!((s.gets, s.puts, s.outstanding, s.tls_hits), (3, 2, 1, 1));
    assert_eq!(s.pooled_buffers, 1);
    assert_eq!(s.pooled_bytes, PAGE as u64);
    assert_eq!(p.len(), 1);
    drop(c);
    assert_eq!(p.stats().outstanding, 0);
}

/// The counters stay exact through every way a buffer enters or leaves a
/// thread cache (hits, refills from a shard, flushes of a full cache,
/// releases over the budget, trims, unpooled buffers): a cache derives its
/// hit count from the others, so a missed step would show here as drift.
#[test]
fn counters_stay_exact_through_refills_flushes_trims_and_one_offs() {
    let p = BufferPool::builder()
        .min_buffer_size(PAGE)
        .num_shards(1)
        .tls_cache_size(3)
        .max_pooled_bytes(12 * PAGE)
        .zeroing(Zeroing::Never)
        .build()
        .unwrap();
    let mut held = Vec::new();
    let (mut gets, mut puts) = (0u64, 0u64);
    let mut x = 12345u64;
    let steps = if cfg!(miri) { 300 } else { 20_000 };
    for step in 0..steps {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let r = (x >> 33) as usize;
        if r % 2 == 0 || held.is_empty() {
            // Mostly pooled classes, now and then one above them (unpooled).
            let len = if r % 97 == 0 { 40 * PAGE } else { PAGE << (r % 3) };
            held.push(p.get(len));
            gets += 1;
        } else {
            drop(held.swap_remove(r % held.len()));
            puts += 1;
        }
        if step % 997 == 0 {
            p.trim();
        }
        let s = p.stats();
        assert_eq!((s.gets, s.puts, s.outstanding), (gets, puts, gets - puts), "step {step}: {s:?}");
        assert!(s.tls_hits <= s.gets && s.shard_hits <= s.gets, "step {step}: {s:?}");
    }
    let s = p.stats();
    assert!(s.tls_hits > 0 && s.shard_hits > 0, "every path was taken: {s:?}");
    drop(held);
}

#[test]
fn two_pools_on_one_thread_keep_their_caches_and_their_buffers() {
    let a = pool(Zeroing::Always);
    let b = pool(Zeroing::Always);
    let rounds = if cfg!(miri) { 50 } else { 10_000 };
    for _ in 0..rounds {
        let x = a.get(100);
        let y = b.get(100);
        a.put(x);
        b.put(y);
    }
    for (name, p) in [("a", &a), ("b", &b)] {
        let s = p.stats();
        assert_eq!(s.gets, rounds);
        assert!(s.tls_hits * 10 > s.gets * 9, "pool {name}: {s:?}");
        assert_eq!(s.allocations, 1, "pool {name} reallocated: {s:?}");
    }
}

#[test]
fn a_buffer_put_on_the_wrong_pool_goes_home() {
    let a = pool(Zeroing::Always);
    let b = pool(Zeroing::Always);
    let buf = a.get(10);
    b.put(buf);
    assert_eq!(a.stats().puts, 1);
    assert_eq!(a.len(), 1);
    assert_eq!(b.stats().puts, 0);
    assert_eq!(b.len(), 0);
}

#[test]
fn trim_releases_everything_idle() {
    let p = pool(Zeroing::Always);
    let bufs: Vec<_> = (0..10).map(|_| p.get(PAGE)).collect();
    drop(bufs);
    assert_eq!(p.len(), 10);
    p.trim();
    let s = p.stats();
    assert_eq!((s.pooled_buffers, s.pooled_bytes), (0, 0));
    let again = p.get(PAGE);
    assert_eq!(p.stats().allocations, 11, "trimmed buffers are not reused");
    drop(again);
}

fn tight_pool(policy: EvictionPolicy) -> BufferPool {
    BufferPool::builder()
        .min_buffer_size(PAGE)
        .num_shards(1)
        .tls_cache_size(0)
        .max_pooled_bytes(4 * PAGE)
        .eviction_policy(policy)
        .build()
        .unwrap()
}

#[test]
fn idle_bytes_stay_within_budget() {
    let p = tight_pool(EvictionPolicy::Lifo);
    let bufs: Vec<_> = (0..20).map(|i| p.get(PAGE * (1 + i % 3))).collect();
    drop(bufs);
    let s = p.stats();
    assert!(s.pooled_bytes <= 4 * PAGE as u64, "{s:?}");
    assert!(s.evictions > 0);
}

#[test]
fn lifo_gets_the_most_recent_and_evicts_the_least_recent() {
    let p = tight_pool(EvictionPolicy::Lifo);
    let (a, b) = (p.get(PAGE), p.get(PAGE));
    let addr_b = b.as_ptr();
    drop(a);
    drop(b);
    assert_eq!(p.get(PAGE).as_ptr(), addr_b, "LIFO returns the most recently returned");
    // The budget holds 4 pages; a 2-page buffer and a 1-page one are idle
    // after these drops (b went back). Returning 2 more pages needs room:
    // the least recently returned (a, then b) go first.
    let c = p.get(2 * PAGE);
    let d = p.get(2 * PAGE);
    drop(c); // idle: a(1) b(1) c(2) = 4 pages
    let s = p.stats();
    assert_eq!(s.pooled_bytes, 4 * PAGE as u64);
    drop(d); // needs 2 pages: evicts a then b
    let s = p.stats();
    assert_eq!(s.evictions, 2, "{s:?}");
    assert_eq!(s.pooled_bytes, 4 * PAGE as u64);
    let allocs = s.allocations;
    let _e = p.get(2 * PAGE);
    let _f = p.get(2 * PAGE);
    assert_eq!(p.stats().allocations, allocs, "both 2-page buffers were kept");
    let _g = p.get(PAGE);
    assert_eq!(p.stats().allocations, allocs + 1, "the 1-page buffers were evicted");
}

#[test]
fn max_buffers_per_shard_is_enforced() {
    let p = BufferPool::builder()
        .min_buffer_size(PAGE)
        .num_shards(1)
        .tls_cache_size(0)
        .max_buffers_per_shard(3)
        .build()
        .unwrap();
    let bufs: Vec<_> = (0..8).map(|_| p.get(PAGE)).collect();
    drop(bufs);
    let s = p.stats();
    assert_eq!(s.pooled_buffers, 3);
    assert_eq!(s.evictions, 5);
}

#[test]
fn zero_budget_keeps_nothing() {
    let p = BufferPool::builder().min_buffer_size(PAGE).max_pooled_bytes(0).build().unwrap();
    drop(p.get(10));
    drop(p.get(10));
    let s = p.stats();
    assert_eq!((s.pooled_buffers, s.allocations, s.gets, s.puts), (0, 2, 2, 2));
}

#[test]
fn dropping_the_pool_with_buffers_out_is_safe() {
    let p = pool(Zeroing::Always);
    let clone = p.clone();
    let mut out = p.get(PAGE);
    // Written before the pool goes and checked after: a close that
    // scrubbed, reused or unmapped a buffer still out would show (a fill
    // checked right after itself would not).
    out.fill(0x3C);
    drop(p);
    // A clone keeps the pool open; it never hands out the held buffer.
    let other = clone.get(10);
    assert_ne!(other.as_ptr(), out.as_ptr());
    assert!(other.iter().all(|&b| b == 0));
    drop(other);
    assert_eq!(clone.len(), 1);
    drop(clone);
    // The buffer outlives its pool, keeps its bytes, stays writable, and is
    // released on drop.
    assert!(out.iter().all(|&b| b == 0x3C), "a held buffer changed when its pool was dropped");
    out.fill(9);
    assert!(out.iter().all(|&b| b == 9));
    drop(out);
}

#[test]
fn default_pool_uses_one_mib_classes() {
    let p = BufferPool::new();
    let buf = p.get(1024);
    assert_eq!(buf.capacity(), 1 << 20);
    assert!(p.max_pooled_bytes() >= 16 << 20);
}

/// The unit tests of the zeroing pass and the zero check (src/os.rs,
/// src/buffer.rs) take their AVX2 loops only where the CPU has AVX2, and
/// pass just as well without them, having tested the portable path only.
/// On CI the machine must have it, so that a green run means the AVX2
/// loops ran; elsewhere this reports which paths the unit tests took.
#[test]
#[cfg(all(target_arch = "x86_64", not(miri)))]
fn ci_runs_the_avx2_paths() {
    let avx2 = std::is_x86_feature_detected!("avx2");
    if std::env::var("CI").as_deref() == Ok("true") {
        assert!(avx2, "this CI machine lacks AVX2: the AVX2 zeroing and zero-check loops went untested");
    } else if !avx2 {
        use std::io::Write;
        let _ =
            writeln!(std::io::stderr(), "ci_runs_the_avx2_paths: no AVX2 here; only the portable paths were tested");
    }
}
