//! A tour of ZeroPool: zeroed reuse, thread caches, cross-thread returns,
//! the idle-memory budget, and the counters that show each of them.
//!
//! Run with `cargo run --release --example demo`.

use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use zeropool::{BufferPool, Zeroing};

fn main() -> Result<(), zeropool::Error> {
    let pool = BufferPool::builder().min_buffer_size(64 << 10).max_pooled_bytes(64 << 20).build()?;
    println!("pool: 64 KiB smallest class, 64 MiB idle budget, zeroing {:?}", Zeroing::Always);

    // 1. A buffer comes back scrubbed: the next caller sees zeros.
    let mut secret = pool.get(100_000);
    secret.fill(0x5e);
    let addr = secret.as_ptr();
    pool.put(secret);
    let reused = pool.get(100_000);
    let zero = reused.iter().all(|&b| b == 0);
    println!("reused the same memory: {}, every byte zero: {zero}", reused.as_ptr() == addr);
    drop(reused);

    // 2. The thread-cache fast path.
    let n = 1_000_000;
    let start = Instant::now();
    for _ in 0..n {
        let buf = pool.get(64 << 10);
        std::hint::black_box(&buf);
    }
    let ns = start.elapsed().as_nanos() as f64 / n as f64;
    println!("get+put of 64 KiB (zeroed on get and put): {ns:.0} ns per pair");

    // 3. Got on one thread, returned on another.
    let (tx, rx) = mpsc::sync_channel(16);
    let producer = {
        let pool = pool.clone();
        thread::spawn(move || {
            for i in 0..10_000u32 {
                let mut buf = pool.get(256 << 10);
                buf[..4].copy_from_slice(&i.to_le_bytes());
                tx.send(buf).unwrap();
            }
        })
    };
    let consumer = thread::spawn(move || rx.iter().map(|buf| u64::from(buf[0])).sum::<u64>());
    producer.join().unwrap();
    let checksum = consumer.join().unwrap();
    println!("10,000 buffers passed between threads (checksum {checksum})");

    // 4. The budget: a burst of large buffers never leaves more than 64 MiB idle.
    let burst: Vec<_> = (0..64).map(|_| pool.get(4 << 20)).collect();
    drop(burst);
    let s = pool.stats();
    println!(
        "after a 256 MiB burst: {} buffers / {} MiB idle (budget {} MiB), {} evicted",
        s.pooled_buffers,
        s.pooled_bytes >> 20,
        pool.max_pooled_bytes() >> 20,
        s.evictions
    );

    println!("\n{:#?}", pool.stats());
    pool.trim();
    println!("after trim: {} bytes idle", pool.stats().pooled_bytes);
    Ok(())
}
