//! Eviction through the public API: a burst of a rare size must not flush
//! the classes in steady use under CLOCK-Pro (it does under LIFO, which is
//! what makes this test fail if CLOCK-Pro degenerated to LIFO).

use zeropool::{BufferPool, EvictionPolicy};

const PAGE: usize = 4096;

/// Allocations that steady gets needed after a scan.
fn allocations_after_scan(policy: EvictionPolicy) -> u64 {
    let pool = BufferPool::builder()
        .min_buffer_size(PAGE)
        .num_shards(1)
        .tls_cache_size(0) // every get and put reaches the policy
        .max_buffers_per_shard(16)
        .max_pooled_bytes(16 * PAGE)
        .eviction_policy(policy)
        .build()
        .unwrap();
    // Steady use: two classes, four buffers each, reused over and over.
    let steady = |pool: &BufferPool| {
        let held: Vec<_> = (0..4).flat_map(|_| [pool.get(PAGE), pool.get(2 * PAGE)]).collect();
        drop(held);
    };
    for _ in 0..20 {
        steady(&pool);
    }
    // A one-off burst of a rare, larger size.
    let scan: Vec<_> = (0..8).map(|_| pool.get(8 * PAGE)).collect();
    drop(scan);
    let before = pool.stats().allocations;
    steady(&pool);
    pool.stats().allocations - before
}

#[test]
fn a_scan_does_not_flush_hot_classes_under_clock_pro() {
    assert_eq!(allocations_after_scan(EvictionPolicy::ClockPro), 0);
}

#[test]
fn a_scan_flushes_hot_classes_under_lifo() {
    // The contrast that gives the test above its meaning.
    assert!(allocations_after_scan(EvictionPolicy::Lifo) >= 4);
}

#[test]
fn both_policies_respect_the_budget_and_trim() {
    for policy in [EvictionPolicy::Lifo, EvictionPolicy::ClockPro] {
        let pool = BufferPool::builder()
            .min_buffer_size(PAGE)
            .num_shards(2)
            .max_pooled_bytes(32 * PAGE)
            .eviction_policy(policy)
            .build()
            .unwrap();
        for round in 0..50 {
            let held: Vec<_> = (0..6).map(|i| pool.get(PAGE << ((round + i) % 5))).collect();
            drop(held);
            assert!(pool.stats().pooled_bytes <= 32 * PAGE as u64, "{policy:?}");
        }
        assert!(pool.stats().evictions > 0, "{policy:?}: the pattern must press on the budget");
        pool.trim();
        assert_eq!(pool.stats().pooled_bytes, 0, "{policy:?}");
    }
}
