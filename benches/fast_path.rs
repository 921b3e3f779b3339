//! Scenario 1 and 2 in one thread: a get+put pair that hits the thread
//! cache, for each zeroing policy, next to the same work done with `Vec`
//! (glibc malloc) in the same run. Like is compared with like:
//! - untouched: ZeroPool `Never` against `Vec::with_capacity`;
//! - zeroed on get: ZeroPool `Always`/`OnPut` against `vec![0; n]` (calloc);
//! - fully written: each of the above, then every byte written.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use zeropool::{BufferPool, Zeroing};

const SIZES: [usize; 3] = [4 << 10, 64 << 10, 1 << 20];

fn pool(z: Zeroing) -> BufferPool {
    BufferPool::builder().min_buffer_size(4096).zeroing(z).max_pooled_bytes(256 << 20).build().unwrap()
}

/// `ZP_BENCH_QUICK=1` runs each case briefly (a smoke test, not a measurement).
fn config() -> Criterion {
    let c = Criterion::default();
    if std::env::var_os("ZP_BENCH_QUICK").is_some() {
        c.sample_size(10).measurement_time(Duration::from_millis(200)).warm_up_time(Duration::from_millis(50))
    } else {
        c.measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500))
    }
}

fn untouched(c: &mut Criterion) {
    let mut g = c.benchmark_group("get_put_untouched");
    for size in SIZES {
        let never = pool(Zeroing::Never);
        g.bench_with_input(BenchmarkId::new("zeropool_never", size), &size, |b, &n| {
            b.iter(|| drop(black_box(never.get(black_box(n)))))
        });
        g.bench_with_input(BenchmarkId::new("vec_with_capacity", size), &size, |b, &n| {
            b.iter(|| drop(black_box(Vec::<u8>::with_capacity(black_box(n)))))
        });
    }
    g.finish();
}

fn zeroed(c: &mut Criterion) {
    let mut g = c.benchmark_group("get_put_zeroed");
    for size in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        for (name, z) in [("zeropool_always", Zeroing::Always), ("zeropool_on_put", Zeroing::OnPut)] {
            let p = pool(z);
            g.bench_with_input(BenchmarkId::new(name, size), &size, |b, &n| {
                b.iter(|| drop(black_box(p.get(black_box(n)))))
            });
        }
        g.bench_with_input(BenchmarkId::new("vec_zeroed", size), &size, |b, &n| {
            b.iter(|| drop(black_box(vec![0u8; black_box(n)])))
        });
    }
    g.finish();
}

fn written(c: &mut Criterion) {
    let mut g = c.benchmark_group("get_write_put");
    for size in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        for (name, z) in
            [("zeropool_always", Zeroing::Always), ("zeropool_on_put", Zeroing::OnPut), ("zeropool_never", Zeroing::Never)]
        {
            let p = pool(z);
            g.bench_with_input(BenchmarkId::new(name, size), &size, |b, &n| {
                b.iter(|| {
                    let mut buf = p.get(black_box(n));
                    buf.fill(0xA5);
                    black_box(&buf);
                })
            });
        }
        g.bench_with_input(BenchmarkId::new("vec_zeroed", size), &size, |b, &n| {
            b.iter(|| {
                let mut v = vec![0u8; black_box(n)];
                v.fill(0xA5);
                black_box(&v);
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = untouched, zeroed, written
}
criterion_main!(benches);
