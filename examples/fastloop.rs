use std::hint::black_box;
use zeropool::{BufferPool, Zeroing};
fn main() {
    let p = BufferPool::builder().min_buffer_size(4096).zeroing(Zeroing::Never).build().unwrap();
    let n: u64 = std::env::args().nth(1).map_or(50_000_000, |s| s.parse().unwrap());
    let t = std::time::Instant::now();
    for _ in 0..n { drop(black_box(p.get(black_box(4096)))); }
    println!("{:.2} ns/pair", t.elapsed().as_nanos() as f64 / n as f64);
}
