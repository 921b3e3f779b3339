//! The system path: what a pool costs when buffers come from (and go back
//! to) the memory layer rather than a cache, next to glibc malloc in the
//! same run. Every buffer is fully written, on both sides.
//!
//! - `burst_64k/{k}`: k buffers of 64 KiB out at once, each written, then
//!   all returned. `zeropool_default_cap` keeps what the default budget
//!   allows (the rest goes back to the system on return, pages given back
//!   with MADV_DONTNEED); `zeropool_cap_fits` has a budget that holds the
//!   whole burst. Both pools zero as the default `Zeroing::Always` does
//!   (zero on get, scrub on return). Baselines: `malloc` is `Vec` (glibc),
//!   written, no zeroing and no scrub (not the same promise); `calloc_scrub`
//!   keeps the pool's promise: `calloc`, written, `explicit_bzero`, `free`.
//! - `cold_start_4k`: a new pool hands out 20,000 fresh 4 KiB buffers, each
//!   written, then all are returned and the pool dropped; against 20,000
//!   `Vec`s of 4 KiB written and freed (`malloc`), and 20,000 `calloc`s
//!   written, scrubbed and freed (`calloc_scrub`).
//!
//! `cargo bench --bench system_path`; `python3 benches/report.py` tabulates.

#![allow(unsafe_code)] // the calloc + explicit_bzero baseline calls libc

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use zeropool::BufferPool;

const KIB: usize = 1024;

fn config() -> Criterion {
    let c = Criterion::default();
    if std::env::var_os("ZP_BENCH_QUICK").is_some() {
        c.sample_size(10).measurement_time(Duration::from_millis(100)).warm_up_time(Duration::from_millis(20)).without_plots()
    } else {
        c.sample_size(20).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(300))
    }
}

fn burst(c: &mut Criterion) {
    const LEN: usize = 64 * KIB;
    let mut g = c.benchmark_group("burst_64k");
    for k in [100usize, 1000] {
        let default_cap = BufferPool::builder().min_buffer_size(LEN).build().unwrap();
        let fits = BufferPool::builder()
            .min_buffer_size(LEN)
            .max_buffers_per_shard(k)
            .max_pooled_bytes(k * LEN + (1 << 20))
            .build()
            .unwrap();
        for (name, pool) in [("zeropool_default_cap", &default_cap), ("zeropool_cap_fits", &fits)] {
            g.bench_with_input(BenchmarkId::new(name, k), &k, |b, &k| {
                let mut held = Vec::with_capacity(k);
                b.iter(|| {
                    for _ in 0..k {
                        let mut buf = pool.get(LEN);
                        buf.fill(0x5A);
                        held.push(buf);
                    }
                    black_box(&held);
                    held.clear();
                })
            });
        }
        g.bench_with_input(BenchmarkId::new("malloc", k), &k, |b, &k| malloc_burst(b, k, LEN));
        g.bench_with_input(BenchmarkId::new("calloc_scrub", k), &k, |b, &k| calloc_scrub_burst(b, k, LEN));
    }
    g.finish();
}

fn cold_start(c: &mut Criterion) {
    const LEN: usize = 4 * KIB;
    const N: usize = 20_000;
    let mut g = c.benchmark_group("cold_start_4k");
    g.sample_size(10);
    g.bench_function(BenchmarkId::new("zeropool", N), |b| {
        let mut held = Vec::with_capacity(N);
        b.iter(|| {
            let pool = BufferPool::builder().min_buffer_size(LEN).build().unwrap();
            for _ in 0..N {
                let mut buf = pool.get(LEN);
                buf.fill(0x5A);
                held.push(buf);
            }
            black_box(&held);
            held.clear();
            drop(pool);
        })
    });
    g.bench_function(BenchmarkId::new("malloc", N), |b| malloc_burst(b, N, LEN));
    g.bench_function(BenchmarkId::new("calloc_scrub", N), |b| calloc_scrub_burst(b, N, LEN));
    g.finish();
}

/// The baseline of both groups: `k` fresh `Vec`s of `len` bytes, each fully
/// written, held at once, then freed.
fn malloc_burst(b: &mut criterion::Bencher, k: usize, len: usize) {
    let mut held: Vec<Vec<u8>> = Vec::with_capacity(k);
    b.iter(|| {
        for _ in 0..k {
            let mut v = Vec::<u8>::with_capacity(len);
            v.resize(len, 0x5A);
            held.push(v);
        }
        black_box(&held);
        held.clear();
    })
}

/// The baseline with the pool's promise: `k` buffers of `len` bytes from
/// `calloc` (zero on get), each fully written and held at once, then each
/// scrubbed with `explicit_bzero` and freed.
fn calloc_scrub_burst(b: &mut criterion::Bencher, k: usize, len: usize) {
    let mut held: Vec<*mut u8> = Vec::with_capacity(k);
    b.iter(|| {
        for _ in 0..k {
            // SAFETY: calloc returns len zeroed bytes or null (checked).
            let p = unsafe { libc::calloc(1, len) }.cast::<u8>();
            assert!(!p.is_null());
            // SAFETY: p is a live allocation of len bytes.
            unsafe { std::ptr::write_bytes(p, 0x5A, len) };
            held.push(p);
        }
        black_box(&held);
        for p in held.drain(..) {
            // SAFETY: each p is a live calloc'd block of len bytes, scrubbed
            // and freed once.
            unsafe {
                libc::explicit_bzero(p.cast(), len);
                libc::free(p.cast());
            }
        }
    })
}

criterion_group! {
    name = benches;
    config = config();
    targets = burst, cold_start
}
criterion_main!(benches);
