//! ZeroPool next to its peers, one criterion group per scenario, everything
//! in one run on one machine. Like is compared with like: untouched with
//! untouched, zeroing with zeroing, fully written with fully written.
//!
//! `cargo bench --bench peers` (detail and plots in
//! target/criterion/report/index.html); `ZP_BENCH_QUICK=1` runs every
//! group for a moment, as a smoke test.
//!
//! Peers: `Vec` (glibc malloc), upstream `zeropool` 0.7, `opool`,
//! `object-pool`, `bytes::BytesMut`, and mimalloc and jemalloc called
//! directly (not as the global allocator, so one binary holds them all).
//! Fixed-size object pools (opool, object-pool) get one pool per size.
#![allow(unsafe_code)] // calling the peer allocators' C functions

use std::cell::UnsafeCell;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use opool::PoolAllocator;
use zeropool::{BufferPool, Zeroing};

const SIZES: [usize; 4] = [4 << 10, 64 << 10, 256 << 10, 1 << 20];

fn config() -> Criterion {
    let c = Criterion::default();
    if std::env::var_os("ZP_BENCH_QUICK").is_some() {
        c.sample_size(10).measurement_time(Duration::from_millis(100)).warm_up_time(Duration::from_millis(20)).without_plots()
    } else {
        c.sample_size(20).measurement_time(Duration::from_secs(1)).warm_up_time(Duration::from_millis(300))
    }
}

fn zeropool(z: Zeroing) -> BufferPool {
    BufferPool::builder().min_buffer_size(4096).zeroing(z).max_pooled_bytes(512 << 20).build().unwrap()
}

/// A C-ABI pool, used through the `zp_*` functions as C would.
struct CPool(*mut zeropool::zp_pool);
impl CPool {
    fn new(zeroing: zeropool::zp_zeroing) -> CPool {
        let cfg = zeropool::zp_config_new();
        zeropool::zp_config_set_min_buffer_size(cfg, 4096);
        zeropool::zp_config_set_max_pooled_bytes(cfg, 512 << 20);
        zeropool::zp_config_set_zeroing(cfg, zeroing as u32);
        let mut p = std::ptr::null_mut();
        assert_eq!(zeropool::zp_pool_new_with_config(cfg, &mut p), zeropool::zp_status::ZP_OK);
        zeropool::zp_config_free(cfg);
        CPool(p)
    }
}
impl Drop for CPool {
    fn drop(&mut self) {
        zeropool::zp_pool_free(self.0);
    }
}

struct VecAlloc(usize);
impl PoolAllocator<Vec<u8>> for VecAlloc {
    fn allocate(&self) -> Vec<u8> {
        Vec::with_capacity(self.0)
    }
}

fn fill(p: *mut u8, n: usize) {
    // SAFETY: callers pass a live allocation of at least n bytes.
    unsafe { std::ptr::write_bytes(p, 0xA5, n) };
    black_box(p);
}

/// Scenario 1: get + put, untouched: the fast-path floor.
fn s1_untouched(c: &mut Criterion) {
    let mut g = c.benchmark_group("s1_untouched");
    for n in SIZES {
        let zp = zeropool(Zeroing::Never);
        g.bench_with_input(BenchmarkId::new("zeropool_never", n), &n, |b, &n| b.iter(|| drop(black_box(zp.get(n)))));
        let cp = CPool::new(zeropool::zp_zeroing::ZP_ZERO_NEVER);
        g.bench_with_input(BenchmarkId::new("zeropool_c_abi_never", n), &n, |b, &n| {
            b.iter(|| zeropool::zp_put(cp.0, black_box(zeropool::zp_get(cp.0, n))))
        });
        g.bench_with_input(BenchmarkId::new("vec_glibc", n), &n, |b, &n| {
            b.iter(|| drop(black_box(Vec::<u8>::with_capacity(n))))
        });
        let up = zeropool_upstream::ZeroPool::new();
        g.bench_with_input(BenchmarkId::new("upstream_alloc_uninit", n), &n, |b, &n| {
            b.iter(|| drop(black_box(up.alloc_uninit(n))))
        });
        let op = opool::Pool::new(64, VecAlloc(n));
        g.bench_with_input(BenchmarkId::new("opool", n), &n, |b, _| b.iter(|| drop(black_box(op.get()))));
        let obj = object_pool::Pool::new(64, || Vec::<u8>::with_capacity(n));
        g.bench_with_input(BenchmarkId::new("object_pool", n), &n, |b, &n| {
            b.iter(|| drop(black_box(obj.pull(|| Vec::with_capacity(n)))))
        });
        g.bench_with_input(BenchmarkId::new("bytes_mut", n), &n, |b, &n| {
            b.iter(|| drop(black_box(bytes::BytesMut::with_capacity(n))))
        });
        g.bench_with_input(BenchmarkId::new("mimalloc", n), &n, |b, &n| {
            // SAFETY: plain malloc/free pairs.
            b.iter(|| unsafe { libmimalloc_sys::mi_free(black_box(libmimalloc_sys::mi_malloc(n))) })
        });
        g.bench_with_input(BenchmarkId::new("jemalloc", n), &n, |b, &n| {
            // SAFETY: plain malloc/free pairs.
            b.iter(|| unsafe { tikv_jemalloc_sys::free(black_box(tikv_jemalloc_sys::malloc(n))) })
        });
    }
    g.finish();
}

/// Scenario 2: get, write every byte (what I/O does), put.
fn s2_written(c: &mut Criterion) {
    let mut g = c.benchmark_group("s2_written");
    for n in SIZES {
        g.throughput(Throughput::Bytes(n as u64));
        for (name, z) in [("zeropool_always", Zeroing::Always), ("zeropool_on_put", Zeroing::OnPut), ("zeropool_never", Zeroing::Never)] {
            let zp = zeropool(z);
            g.bench_with_input(BenchmarkId::new(name, n), &n, |b, &n| {
                b.iter(|| {
                    let mut buf = zp.get(n);
                    fill(buf.as_mut_ptr(), n);
                })
            });
        }
        let cp = CPool::new(zeropool::zp_zeroing::ZP_ZERO_NEVER);
        g.bench_with_input(BenchmarkId::new("zeropool_c_abi_never", n), &n, |b, &n| {
            b.iter(|| {
                let p = zeropool::zp_get(cp.0, n);
                fill(p.cast(), n);
                zeropool::zp_put(cp.0, p)
            })
        });
        g.bench_with_input(BenchmarkId::new("memset_only", n), &n, |b, &n| {
            let mut v = vec![0u8; n];
            b.iter(|| fill(v.as_mut_ptr(), n))
        });
        g.bench_with_input(BenchmarkId::new("vec_glibc_uninit", n), &n, |b, &n| {
            b.iter(|| {
                let mut v = Vec::<u8>::with_capacity(n);
                fill(v.as_mut_ptr(), n);
            })
        });
        g.bench_with_input(BenchmarkId::new("vec_glibc_zeroed", n), &n, |b, &n| {
            b.iter(|| {
                let mut v = vec![0u8; n];
                fill(v.as_mut_ptr(), n);
            })
        });
        g.bench_with_input(BenchmarkId::new("calloc_write_explicit_bzero", n), &n, |b, &n| {
            // SAFETY: calloc'd n bytes, scrubbed and freed once.
            b.iter(|| unsafe {
                let p = libc::calloc(1, n).cast::<u8>();
                fill(p, n);
                libc::explicit_bzero(p.cast(), n);
                libc::free(p.cast());
            })
        });
        let up = zeropool_upstream::ZeroPool::new();
        g.bench_with_input(BenchmarkId::new("upstream_alloc", n), &n, |b, &n| {
            b.iter(|| {
                let mut buf = up.alloc(n);
                fill(buf.as_mut_ptr(), n);
            })
        });
        g.bench_with_input(BenchmarkId::new("upstream_alloc_uninit", n), &n, |b, &n| {
            b.iter(|| {
                let mut buf = up.alloc_uninit(n);
                fill(buf.as_uninit_mut().as_mut_ptr().cast(), n);
            })
        });
        let op = opool::Pool::new(64, VecAlloc(n));
        g.bench_with_input(BenchmarkId::new("opool", n), &n, |b, &n| {
            b.iter(|| {
                let mut v = op.get();
                fill(v.as_mut_ptr(), n);
            })
        });
        g.bench_with_input(BenchmarkId::new("mimalloc", n), &n, |b, &n| {
            // SAFETY: malloc, write n bytes, free.
            b.iter(|| unsafe {
                let p = libmimalloc_sys::mi_malloc(n).cast::<u8>();
                fill(p, n);
                libmimalloc_sys::mi_free(p.cast());
            })
        });
        g.bench_with_input(BenchmarkId::new("jemalloc", n), &n, |b, &n| {
            // SAFETY: malloc, write n bytes, free.
            b.iter(|| unsafe {
                let p = tikv_jemalloc_sys::malloc(n).cast::<u8>();
                fill(p, n);
                tikv_jemalloc_sys::free(p.cast());
            })
        });
    }
    g.finish();
}

/// Deterministic sizes: uniform over 1 B..=1 MiB+1, or Zipf(1.1) over
/// classes with odd offsets (4097, 1 MiB + 1, ...).
fn size_mix(zipf: bool) -> Vec<usize> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let odd = [4097, 12_000, 65_537, 100_000, 262_145, 500_000, 1_048_577];
    let weights: Vec<f64> = (1..=odd.len()).map(|k| 1.0 / (k as f64).powf(1.1)).collect();
    let total: f64 = weights.iter().sum();
    (0..1024)
        .map(|_| {
            if zipf {
                let mut pick = (next() >> 11) as f64 / (1u64 << 53) as f64 * total;
                let k = weights.iter().position(|w| {
                    pick -= w;
                    pick <= 0.0
                });
                odd[k.unwrap_or(odd.len() - 1)]
            } else {
                1 + (next() % (1 << 20) as u64) as usize
            }
        })
        .collect()
}

/// Scenario 3: mixed sizes, untouched; prints retained/requested bytes.
fn s3_mixed(c: &mut Criterion) {
    let mut g = c.benchmark_group("s3_mixed");
    for (mix, zipf) in [("uniform", false), ("zipf", true)] {
        let sizes = size_mix(zipf);
        let requested: usize = sizes.iter().sum();
        let zp = zeropool(Zeroing::Never);
        let retained: usize = sizes.iter().map(|&n| zp.get(n).capacity()).sum();
        eprintln!("s3_mixed/{mix}: zeropool retains {:.2} bytes per requested byte", retained as f64 / requested as f64);
        g.throughput(Throughput::Elements(sizes.len() as u64));
        g.bench_function(BenchmarkId::new("zeropool_never", mix), |b| {
            b.iter(|| sizes.iter().for_each(|&n| drop(black_box(zp.get(n)))))
        });
        g.bench_function(BenchmarkId::new("vec_glibc", mix), |b| {
            b.iter(|| sizes.iter().for_each(|&n| drop(black_box(Vec::<u8>::with_capacity(n)))))
        });
        let up = zeropool_upstream::ZeroPool::new();
        g.bench_function(BenchmarkId::new("upstream_alloc_uninit", mix), |b| {
            b.iter(|| sizes.iter().for_each(|&n| drop(black_box(up.alloc_uninit(n)))))
        });
        g.bench_function(BenchmarkId::new("mimalloc", mix), |b| {
            // SAFETY: malloc/free pairs.
            b.iter(|| sizes.iter().for_each(|&n| unsafe { libmimalloc_sys::mi_free(black_box(libmimalloc_sys::mi_malloc(n))) }))
        });
        g.bench_function(BenchmarkId::new("jemalloc", mix), |b| {
            // SAFETY: malloc/free pairs.
            b.iter(|| sizes.iter().for_each(|&n| unsafe { tikv_jemalloc_sys::free(black_box(tikv_jemalloc_sys::malloc(n))) }))
        });
    }
    g.finish();
}

/// A single-producer single-consumer ring that spins: no lock, no syscall.
struct Ring<T> {
    slots: Box<[UnsafeCell<Option<T>>]>,
    head: AtomicUsize,
    tail: AtomicUsize,
}
// SAFETY: one producer writes a slot before publishing it with `tail`, one
// consumer reads it before releasing it with `head`.
unsafe impl<T: Send> Sync for Ring<T> {}
impl<T> Ring<T> {
    fn new(cap: usize) -> Ring<T> {
        Ring { slots: (0..cap).map(|_| UnsafeCell::new(None)).collect(), head: AtomicUsize::new(0), tail: AtomicUsize::new(0) }
    }
    fn push(&self, v: T) {
        let t = self.tail.load(Ordering::Relaxed);
        while t - self.head.load(Ordering::Acquire) == self.slots.len() {
            std::hint::spin_loop();
        }
        // SAFETY: the slot is free (head passed it) and only we write it.
        unsafe { *self.slots[t % self.slots.len()].get() = Some(v) };
        self.tail.store(t + 1, Ordering::Release);
    }
    fn pop(&self) -> T {
        let h = self.head.load(Ordering::Relaxed);
        while self.tail.load(Ordering::Acquire) == h {
            std::hint::spin_loop();
        }
        // SAFETY: the producer published this slot and only we take it.
        let v = unsafe { (*self.slots[h % self.slots.len()].get()).take().unwrap() };
        self.head.store(h + 1, Ordering::Release);
        v
    }
}

/// Scenario 4: got on one thread, returned on another, over a spinning ring.
fn s4_producer_consumer(c: &mut Criterion) {
    let mut g = c.benchmark_group("s4_producer_consumer");
    let n = 1 << 20;
    g.throughput(Throughput::Elements(1));
    fn run<T: Send + 'static>(b: &mut criterion::Bencher, make: impl Fn() -> T) {
        let ring = Arc::new(Ring::<Option<T>>::new(64));
        let consumer = {
            let ring = ring.clone();
            thread::spawn(move || while let Some(buf) = ring.pop() {
                drop(black_box(buf));
            })
        };
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                ring.push(Some(make()));
            }
            start.elapsed()
        });
        ring.push(None);
        consumer.join().unwrap();
    }
    let zp = zeropool(Zeroing::Never);
    g.bench_function(BenchmarkId::new("zeropool_never", n), |b| run(b, || zp.get(n)));
    g.bench_function(BenchmarkId::new("vec_glibc", n), |b| run(b, || Vec::<u8>::with_capacity(n)));
    let up: &'static zeropool_upstream::ZeroPool = Box::leak(Box::new(zeropool_upstream::ZeroPool::new()));
    g.bench_function(BenchmarkId::new("upstream_alloc_uninit", n), |b| run(b, || up.alloc_uninit(n)));
    let op = Arc::new(opool::Pool::new(128, VecAlloc(n)));
    g.bench_function(BenchmarkId::new("opool", n), |b| run(b, || op.clone().get_rc()));
    g.finish();
}

/// Scenario 5: k buffers out at once, then all returned.
fn s5_burst(c: &mut Criterion) {
    let mut g = c.benchmark_group("s5_burst");
    let n = 64 << 10;
    for k in [10, 100, 1000] {
        g.throughput(Throughput::Elements(k as u64));
        let zp = zeropool(Zeroing::Never);
        g.bench_with_input(BenchmarkId::new("zeropool_never", k), &k, |b, &k| {
            b.iter(|| drop(black_box((0..k).map(|_| zp.get(n)).collect::<Vec<_>>())))
        });
        // The same with an idle cap that fits the burst (the default cap,
        // from the seed's scaling table, is 16 buffers per shard).
        let sized = BufferPool::builder()
            .min_buffer_size(4096)
            .zeroing(Zeroing::Never)
            .max_buffers_per_shard(1024)
            .max_pooled_bytes(512 << 20)
            .build()
            .unwrap();
        g.bench_with_input(BenchmarkId::new("zeropool_never_cap_1024", k), &k, |b, &k| {
            b.iter(|| drop(black_box((0..k).map(|_| sized.get(n)).collect::<Vec<_>>())))
        });
        g.bench_with_input(BenchmarkId::new("vec_glibc", k), &k, |b, &k| {
            b.iter(|| drop(black_box((0..k).map(|_| Vec::<u8>::with_capacity(n)).collect::<Vec<_>>())))
        });
        let up = zeropool_upstream::ZeroPool::new();
        g.bench_with_input(BenchmarkId::new("upstream_alloc_uninit", k), &k, |b, &k| {
            b.iter(|| drop(black_box((0..k).map(|_| up.alloc_uninit(n)).collect::<Vec<_>>())))
        });
        g.bench_with_input(BenchmarkId::new("jemalloc", k), &k, |b, &k| {
            b.iter(|| {
                // SAFETY: k mallocs, then k frees of the same pointers.
                let ps: Vec<_> = (0..k).map(|_| unsafe { tikv_jemalloc_sys::malloc(n) }).collect();
                ps.into_iter().for_each(|p| unsafe { tikv_jemalloc_sys::free(black_box(p)) });
            })
        });
    }
    g.finish();
}

/// Persistent worker threads: each round, every worker runs `work(ops)`.
struct Workers {
    go: Arc<Barrier>,
    done: Arc<Barrier>,
    ops: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    handles: Vec<thread::JoinHandle<()>>,
}
impl Workers {
    fn new(threads: usize, work: impl Fn(usize) + Send + Sync + 'static) -> Workers {
        let work = Arc::new(work);
        let (go, done) = (Arc::new(Barrier::new(threads + 1)), Arc::new(Barrier::new(threads + 1)));
        let ops = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let handles = (0..threads)
            .map(|_| {
                let (go, done, ops, stop, work) = (go.clone(), done.clone(), ops.clone(), stop.clone(), work.clone());
                thread::spawn(move || loop {
                    go.wait();
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    work(ops.load(Ordering::Acquire));
                    done.wait();
                })
            })
            .collect();
        Workers { go, done, ops, stop, handles }
    }
    /// Runs `total` ops split across the workers; returns the wall time.
    fn run(&self, total: u64) -> Duration {
        let per = (total as usize).div_ceil(self.handles.len());
        self.ops.store(per, Ordering::Release);
        let start = Instant::now();
        self.go.wait();
        self.done.wait();
        start.elapsed()
    }
}
impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.go.wait();
        self.handles.drain(..).for_each(|h| h.join().unwrap());
    }
}

/// Scenario 6: get+put from 1, 2, 8 and 16 threads (16 oversubscribes a
/// 2-core machine); throughput in total ops.
fn s6_threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("s6_threads");
    let n = 64 << 10;
    g.throughput(Throughput::Elements(1));
    for threads in [1, 2, 8, 16] {
        let zp = zeropool(Zeroing::Never);
        let w = Workers::new(threads, move |ops| (0..ops).for_each(|_| drop(black_box(zp.get(n)))));
        g.bench_with_input(BenchmarkId::new("zeropool_never", threads), &threads, |b, _| b.iter_custom(|i| w.run(i)));
        drop(w);
        let w = Workers::new(threads, move |ops| (0..ops).for_each(|_| drop(black_box(Vec::<u8>::with_capacity(n)))));
        g.bench_with_input(BenchmarkId::new("vec_glibc", threads), &threads, |b, _| b.iter_custom(|i| w.run(i)));
        drop(w);
        let up = Arc::new(zeropool_upstream::ZeroPool::new());
        let w = Workers::new(threads, move |ops| (0..ops).for_each(|_| drop(black_box(up.alloc_uninit(n)))));
        g.bench_with_input(BenchmarkId::new("upstream_alloc_uninit", threads), &threads, |b, _| b.iter_custom(|i| w.run(i)));
        drop(w);
        let w = Workers::new(threads, move |ops| {
            // SAFETY: malloc/free pairs.
            (0..ops).for_each(|_| unsafe { tikv_jemalloc_sys::free(black_box(tikv_jemalloc_sys::malloc(n))) })
        });
        g.bench_with_input(BenchmarkId::new("jemalloc", threads), &threads, |b, _| b.iter_custom(|i| w.run(i)));
        drop(w);
        let w = Workers::new(threads, move |ops| {
            // SAFETY: malloc/free pairs.
            (0..ops).for_each(|_| unsafe { libmimalloc_sys::mi_free(black_box(libmimalloc_sys::mi_malloc(n))) })
        });
        g.bench_with_input(BenchmarkId::new("mimalloc", threads), &threads, |b, _| b.iter_custom(|i| w.run(i)));
    }
    g.finish();
}

/// Resident memory now, in MiB.
fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    pages * 4096.0 / (1 << 20) as f64
}

/// Scenario 7: short-lived threads, each getting and returning a few
/// buffers; prints RSS after.
fn s7_thread_churn(c: &mut Criterion) {
    let mut g = c.benchmark_group("s7_thread_churn");
    let n = 256 << 10;
    g.throughput(Throughput::Elements(1));
    let zp = zeropool(Zeroing::OnPut);
    g.bench_function("zeropool_on_put", |b| {
        b.iter(|| {
            let p = zp.clone();
            thread::spawn(move || (0..8).for_each(|_| drop(black_box(p.get(n))))).join().unwrap()
        })
    });
    eprintln!("s7_thread_churn/zeropool: RSS {:.0} MiB, {} idle buffers", rss_mib(), zp.len());
    g.bench_function("vec_glibc_zeroed", |b| {
        b.iter(|| thread::spawn(move || (0..8).for_each(|_| drop(black_box(vec![0u8; n])))).join().unwrap())
    });
    eprintln!("s7_thread_churn/vec: RSS {:.0} MiB", rss_mib());
    let up: &'static zeropool_upstream::ZeroPool = Box::leak(Box::new(zeropool_upstream::ZeroPool::new()));
    g.bench_function("upstream_alloc", |b| {
        b.iter(|| thread::spawn(move || (0..8).for_each(|_| drop(black_box(up.alloc(n))))).join().unwrap())
    });
    eprintln!("s7_thread_churn/upstream: RSS {:.0} MiB", rss_mib());
    g.finish();
}

criterion_group! {
    name = peers;
    config = config();
    targets = s1_untouched, s2_written, s3_mixed, s4_producer_consumer, s5_burst, s6_threads, s7_thread_churn
}
criterion_main!(peers);
