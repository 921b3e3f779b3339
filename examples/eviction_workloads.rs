//! LIFO and CLOCK-Pro side by side on named workloads under a tight
//! idle-memory budget. For each: hit rate (gets served without a system
//! allocation), bytes allocated from the system, and ns per get+put.
//!
//! `cargo run --release --example eviction_workloads [OPS [ROUNDS]]`
//! (defaults 20,000 and 3): the two policies run alternately, ROUNDS times
//! each, and ns per op is the median, so that other work on the machine
//! falls on both alike.
//!
//! Workloads (one thread; every op gets a buffer and returns the oldest of
//! the ones it holds, so buffers really sit idle between uses):
//! - `zipf`: sizes from 8 classes (64 KiB .. 8 MiB) with Zipf(1.1)
//!   popularity, 8 buffers held, a 32 MiB budget.
//! - `zipf+scan/500`: the same, and every 500 ops a scan: 24 buffers of a
//!   rare 16 MiB size got at once and then all returned (think: a periodic
//!   checkpoint or a large file copied through the pool).
//! - `zipf+scan/100`: scans of 8 such buffers, every 100 ops.
//! - `uniform`: one size (1 MiB), 16 held, an 8 MiB budget.

use std::collections::VecDeque;
use std::time::Instant;

use zeropool::{BufferPool, EvictionPolicy, Stats, Zeroing};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// xorshift64*: a small deterministic generator, so both policies see the
/// same sequence.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Workload {
    name: &'static str,
    budget: usize,
    held: usize,
    /// Size classes and their popularity weights.
    sizes: Vec<(usize, f64)>,
    /// (every N ops, buffers, size) of the scan, if any.
    scan: Option<(usize, usize, usize)>,
}

fn zipf_sizes() -> Vec<(usize, f64)> {
    (0..8).map(|k| ((64 * KIB) << k, 1.0 / ((k + 1) as f64).powf(1.1))).collect()
}

/// What one run measured.
struct Outcome {
    stats: Stats,
    ns_per_op: f64,
    /// Gets outside scans, and how many of those needed a system allocation.
    steady_gets: u64,
    steady_allocations: u64,
}

fn run(w: &Workload, policy: EvictionPolicy, ops: usize) -> Outcome {
    let pool = BufferPool::builder()
        .min_buffer_size(64 * KIB)
        .max_pooled_bytes(w.budget)
        .eviction_policy(policy)
        .zeroing(Zeroing::OnPut)
        .build()
        .unwrap();
    let total: f64 = w.sizes.iter().map(|s| s.1).sum();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut held = VecDeque::new();
    let (mut scan_gets, mut scan_allocations) = (0, 0);
    let start = Instant::now();
    for op in 0..ops {
        let mut pick = rng.unit() * total;
        let size = w.sizes.iter().find(|(_, p)| {
            pick -= p;
            pick <= 0.0
        });
        let size = size.unwrap_or(w.sizes.last().unwrap()).0;
        let mut buf = pool.get(size);
        buf[0] = op as u8; // touch it, as a user would
        held.push_back(buf);
        if held.len() > w.held {
            held.pop_front();
        }
        if let Some((every, count, size)) = w.scan {
            if op % every == every - 1 {
                let before = pool.stats().allocations;
                let scan: Vec<_> = (0..count).map(|_| pool.get(size)).collect();
                scan_allocations += pool.stats().allocations - before;
                scan_gets += count as u64;
                drop(scan);
            }
        }
    }
    let ns_per_op = start.elapsed().as_nanos() as f64 / ops as f64;
    drop(held);
    let stats = pool.stats();
    Outcome {
        steady_gets: stats.gets - scan_gets,
        steady_allocations: stats.allocations - scan_allocations,
        stats,
        ns_per_op,
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let ops: usize = args.next().map_or(20_000, |s| s.parse().expect("OPS is a number"));
    let rounds: usize = args.next().map_or(3, |s| s.parse().expect("ROUNDS is a number")).max(1);
    let workloads = [
        Workload { name: "zipf", budget: 32 * MIB, held: 8, sizes: zipf_sizes(), scan: None },
        Workload {
            name: "zipf+scan/500",
            budget: 32 * MIB,
            held: 8,
            sizes: zipf_sizes(),
            scan: Some((500, 24, 16 * MIB)),
        },
        Workload {
            name: "zipf+scan/100",
            budget: 32 * MIB,
            held: 8,
            sizes: zipf_sizes(),
            scan: Some((100, 8, 16 * MIB)),
        },
        Workload { name: "uniform", budget: 8 * MIB, held: 16, sizes: vec![(MIB, 1.0)], scan: None },
    ];
    let policies = [EvictionPolicy::Lifo, EvictionPolicy::ClockPro];
    println!(
        "{ops} ops per workload, one thread, zeroing OnPut; ns per op: median of {rounds} round(s), in which the \
         two policies run alternately (LIFO first in odd rounds, CLOCK-Pro first in even ones); the counters \
         are the same in every round (the workloads are deterministic)\n"
    );
    println!(
        "| workload | policy | benchmark | hit rate (all gets) | hit rate (outside scans) | allocated from system | evictions | ns per op |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for w in &workloads {
        let mut outcomes: Vec<Vec<Outcome>> = policies.iter().map(|_| Vec::new()).collect();
        for round in 0..rounds {
            for k in 0..policies.len() {
                let k = if round % 2 == 0 { k } else { policies.len() - 1 - k };
                outcomes[k].push(run(w, policies[k], ops));
            }
        }
        for (policy, runs) in policies.iter().zip(&outcomes) {
            let counters = |o: &Outcome| (o.stats.gets, o.stats.allocations, o.stats.evictions, o.steady_allocations);
            assert!(
                runs.iter().all(|o| counters(o) == counters(&runs[0])),
                "{} {policy:?}: counters differ between rounds",
                w.name
            );
            let mut ns: Vec<f64> = runs.iter().map(|o| o.ns_per_op).collect();
            ns.sort_by(f64::total_cmp);
            let o = &runs[0];
            let s = &o.stats;
            let hit = 100.0 * (s.gets - s.allocations) as f64 / s.gets as f64;
            let steady = 100.0 * (o.steady_gets - o.steady_allocations) as f64 / o.steady_gets as f64;
            println!(
                "| {} | {:?} | `eviction_workloads {}/{:?}` | {:.1}% | {:.1}% | {} MiB | {} | {:.0} |",
                w.name,
                policy,
                w.name,
                policy,
                hit,
                steady,
                s.allocated_bytes / MIB as u64,
                s.evictions,
                ns[ns.len() / 2]
            );
        }
    }
}
