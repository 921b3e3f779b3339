//! Checkpoint loading, the job ZeroPool was made for, measured against the
//! loaders a user would otherwise write.
//!
//! Every tensor of a `.safetensors` file is staged, converted (fp32 ->
//! bf16, round to nearest even, into a destination tensor that already
//! exists, as `load_state_dict` copies into a model's parameters) and
//! checksummed; the staging buffer is then given back. `--threads N` workers
//! (default: the CPU count) take tensors in file order from a shared
//! counter. Loaders compared, on the same file, in the same run:
//!
//! - `fresh-vec`: a fresh `vec![0; n]` per tensor (what naive code does);
//! - `reused-vec`: one staging `Vec` per worker, grown to the largest
//!   tensor it has seen (what a careful programmer writes);
//! - `mmap`, `mmap-willneed`: the whole file mapped, converted straight
//!   from the mapping (safetensors' default path), without and with
//!   `MADV_WILLNEED`;
//! - `upstream`: upstream zeropool 0.7 `alloc`, with ZeroPool's thread-cache
//!   size and idle-buffer count where its API allows;
//! - `zp-default`: ZeroPool as `BufferPool::new()` configures itself;
//! - `zp-always`, `zp-onput`, `zp-never`: ZeroPool with an idle budget that
//!   fits the file's buffer sizes, under each zeroing policy;
//! - `zp-pinned`: the same with `pinned_memory(true)` (the GPU staging
//!   case), `Zeroing::Always`.
//!
//! Each loader runs with the file in the page cache (`warm`) and evicted
//! with `posix_fadvise(DONTNEED)` before every load (`evicted`), in two
//! passes. The memory pass runs one loader at a time from fresh state
//! (pool, workers): its first load is the one-shot case, and peak RSS, what
//! is held after and the allocations are that loader's own. The timing pass
//! keeps every loader's state and workers alive, warms each with one load,
//! then runs rounds in which every loader loads once, in rotating order, so
//! that other work on the machine falls on all loaders alike; the medians
//! come from there.
//!
//! ```sh
//! cargo run --release --example checkpoint_load                  # synthetic GPT-2 124M (~500 MB)
//! cargo run --release --example checkpoint_load -- model.safetensors --threads 8
//! cargo run --release --example checkpoint_load -- --json         # the results as JSON on stdout
//! cargo run --release --example checkpoint_load -- --update-readme README.md
//! cargo run --release --example checkpoint_load -- --from-json r.json --markdown
//! ```
//!
//! Options: `--threads N` or `N,M,..` (the first count is measured warm and
//! evicted, the others warm only), `--rounds N` (timed warm rounds, default
//! 9), `--evicted-rounds N` (default 5), `--memory-loads N` (default 3),
//! `--cache warm|evicted|both`,
//! `--loaders a,b,...`, `--model gpt2|tiny` (the synthetic file), `--json`,
//! `--markdown`, `--update-readme FILE` (replaces the text between the
//! `checkpoint_load:begin` / `checkpoint_load:end` markers), `--from-json
//! FILE` (render a saved `--json` result instead of measuring).
//! Progress goes to stderr; results to stdout.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Barrier, Mutex, RwLock};
use std::time::Instant;

use serde_json::{json, Value};
use zeropool::{AutoConfig, BufferPool, Zeroing};

const MIB: usize = 1 << 20;

// ---------------------------------------------------------------------------
// Counting allocator: every call that asks the global allocator for memory.
// ---------------------------------------------------------------------------

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to `System` unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            ALLOCS.fetch_add(1, Relaxed);
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

// ---------------------------------------------------------------------------
// The file: synthetic GPT-2 124M (or a tiny one for tests), safetensors index.
// ---------------------------------------------------------------------------

/// One tensor's bytes in the file.
#[derive(Clone, Debug)]
struct Tensor {
    offset: u64,
    len: usize,
    /// fp32: converted to bf16; any other dtype is copied as is.
    f32: bool,
}

impl Tensor {
    fn out_len(&self) -> usize {
        if self.f32 {
            self.len / 2
        } else {
            self.len
        }
    }
}

/// GPT-2 shapes: (name, shape). `gpt2` is the published 124M checkpoint.
fn gpt2_shapes(d: usize, ctx: usize, vocab: usize, layers: usize) -> Vec<(String, Vec<usize>)> {
    let mut t = vec![("wte.weight".to_string(), vec![vocab, d]), ("wpe.weight".to_string(), vec![ctx, d])];
    for i in 0..layers {
        let h = |s: &str| format!("h.{i}.{s}");
        t.extend([
            (h("ln_1.weight"), vec![d]),
            (h("ln_1.bias"), vec![d]),
            (h("attn.c_attn.weight"), vec![d, 3 * d]),
            (h("attn.c_attn.bias"), vec![3 * d]),
            (h("attn.c_proj.weight"), vec![d, d]),
            (h("attn.c_proj.bias"), vec![d]),
            (h("ln_2.weight"), vec![d]),
            (h("ln_2.bias"), vec![d]),
            (h("mlp.c_fc.weight"), vec![d, 4 * d]),
            (h("mlp.c_fc.bias"), vec![4 * d]),
            (h("mlp.c_proj.weight"), vec![4 * d, d]),
            (h("mlp.c_proj.bias"), vec![d]),
        ]);
    }
    t.extend([("ln_f.weight".to_string(), vec![d]), ("ln_f.bias".to_string(), vec![d])]);
    t
}

fn model_shapes(model: &str) -> Vec<(String, Vec<usize>)> {
    match model {
        // A few MB, the same structure: for tests and quick runs.
        "tiny" => gpt2_shapes(128, 256, 4096, 4),
        _ => gpt2_shapes(768, 1024, 50257, 12),
    }
}

/// Writes a safetensors file (8-byte header length, JSON header, data) and
/// syncs it to disk, so that its pages can be evicted from the cache.
fn write_synthetic(path: &Path, model: &str) -> std::io::Result<()> {
    let tensors = model_shapes(model);
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!({"format": "pt", "source": "zeropool synthetic"}));
    let mut offset = 0usize;
    for (name, shape) in &tensors {
        let bytes = shape.iter().product::<usize>() * 4;
        header.insert(name.clone(), json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes]}));
        offset += bytes;
    }
    let header = serde_json::to_vec(&Value::Object(header)).unwrap();
    let file = File::create(path)?;
    let mut out = BufWriter::with_capacity(4 * MIB, &file);
    out.write_all(&(header.len() as u64).to_le_bytes())?;
    out.write_all(&header)?;
    let mut chunk = vec![0u8; 4 * MIB];
    let mut written = 0usize;
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut shown = 0;
    while written < offset {
        let n = chunk.len().min(offset - written);
        for word in chunk[..n].chunks_exact_mut(4) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Small floats, like weights.
            let value = ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.04;
            word.copy_from_slice(&value.to_le_bytes());
        }
        out.write_all(&chunk[..n])?;
        written += n;
        let pct = written * 100 / offset;
        if pct >= shown + 10 {
            shown = pct - pct % 10;
            eprint!("\r  writing {:.1} MB: {pct:>3}%", offset as f64 / 1e6);
        }
    }
    eprintln!();
    out.flush()?;
    drop(out);
    file.sync_all()
}

/// Reads the index of a safetensors file, tensors in file order.
fn read_index(path: &Path) -> std::io::Result<Vec<Tensor>> {
    let file = File::open(path)?;
    let mut len = [0u8; 8];
    file.read_exact_at(&mut len, 0)?;
    let header_len = u64::from_le_bytes(len);
    if header_len > 100 * MIB as u64 {
        return Err(std::io::Error::other("not a safetensors file (header too large)"));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact_at(&mut header, 8)?;
    let header: BTreeMap<String, Value> =
        serde_json::from_slice(&header).map_err(|e| std::io::Error::other(format!("bad header: {e}")))?;
    let base = 8 + header_len;
    let mut tensors = Vec::new();
    for (name, info) in header {
        if name == "__metadata__" {
            continue;
        }
        let bad = || std::io::Error::other(format!("bad entry for {name}"));
        let range = info["data_offsets"].as_array().ok_or_else(bad)?;
        let (start, end) = (range[0].as_u64().ok_or_else(bad)?, range[1].as_u64().ok_or_else(bad)?);
        let f32 = info["dtype"] == "F32";
        let len = end.checked_sub(start).ok_or_else(bad)? as usize;
        if f32 && len % 4 != 0 {
            return Err(bad());
        }
        tensors.push(Tensor { offset: base + start, len, f32 });
    }
    tensors.sort_by_key(|t| t.offset);
    Ok(tensors)
}

// ---------------------------------------------------------------------------
// The consumer: fp32 -> bf16 into the destination, and a checksum of it.
// ---------------------------------------------------------------------------

/// fp32 bits to bf16 bits, rounding to nearest even; NaN stays NaN (quiet).
#[inline(always)]
fn bf16(bits: u32) -> u16 {
    let rounded = (bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16) as u16;
    let nan = ((bits >> 16) as u16) | 0x40;
    if bits & 0x7fff_ffff > 0x7f80_0000 {
        nan
    } else {
        rounded
    }
}

fn mix(mut x: u64) -> u64 {
    // splitmix64's finalizer.
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Converts (or copies) one tensor into `dst` and returns the hash of
/// `dst`'s bytes. The hash depends only on those bytes, not on who wrote
/// them or when.
fn convert(t: &Tensor, src: &[u8], dst: &mut [u8]) -> u64 {
    debug_assert_eq!(src.len(), t.len);
    debug_assert_eq!(dst.len(), t.out_len());
    if t.f32 {
        // 32 input bytes -> 16 output bytes -> four u32 lanes of the hash.
        let mut lanes = [0u64; 4];
        let mut s = src.chunks_exact(32);
        let mut d = dst.chunks_exact_mut(16);
        for (s, d) in (&mut s).zip(&mut d) {
            for k in 0..4 {
                let a = u32::from_le_bytes(s[8 * k..8 * k + 4].try_into().unwrap());
                let b = u32::from_le_bytes(s[8 * k + 4..8 * k + 8].try_into().unwrap());
                let (a, b) = (bf16(a), bf16(b));
                d[4 * k..4 * k + 2].copy_from_slice(&a.to_le_bytes());
                d[4 * k + 2..4 * k + 4].copy_from_slice(&b.to_le_bytes());
                let w = a as u64 | (b as u64) << 16;
                lanes[k] = lanes[k].rotate_left(17) ^ w;
            }
        }
        for (s, d) in s.remainder().chunks_exact(4).zip(d.into_remainder().chunks_exact_mut(2)) {
            let h = bf16(u32::from_le_bytes(s.try_into().unwrap()));
            d.copy_from_slice(&h.to_le_bytes());
            lanes[0] = lanes[0].rotate_left(17) ^ h as u64;
        }
        lanes.iter().fold(dst.len() as u64, |acc, &l| mix(acc ^ l))
    } else {
        dst.copy_from_slice(src);
        let mut acc = dst.len() as u64;
        for c in dst.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            acc = acc.rotate_left(17) ^ u64::from_le_bytes(w);
        }
        mix(acc)
    }
}

/// A tensor's share of the checksum: summed over tensors, so the total
/// does not depend on the order in which threads finish.
fn tensor_term(index: usize, hash: u64) -> u64 {
    mix(hash ^ mix(index as u64 + 1))
}

// ---------------------------------------------------------------------------
// OS helpers: page cache, RSS, mmap.
// ---------------------------------------------------------------------------

/// Drops the file's pages from the page cache (it was synced when written).
fn evict(file: &File) {
    // SAFETY: plain syscall on an open descriptor.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "posix_fadvise(DONTNEED) failed");
}

/// A read-only shared mapping of a whole file.
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: read-only memory; workers read it under the read lock of the
// `RwLock` that owns it, and it is unmapped under the write lock.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(file: &File, len: usize, willneed: bool) -> Mapping {
        // SAFETY: a fresh read-only mapping of `len` bytes of an open file.
        let ptr =
            unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd(), 0) };
        assert!(ptr != libc::MAP_FAILED, "mmap failed: {}", std::io::Error::last_os_error());
        if willneed {
            // SAFETY: the range is the mapping just made.
            let rc = unsafe { libc::madvise(ptr, len, libc::MADV_WILLNEED) };
            assert_eq!(rc, 0, "madvise(WILLNEED) failed");
        }
        Mapping { ptr, len }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `len` readable bytes, alive as long as `self`. (The file
        // is ours and nobody truncates it while mapped.)
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// Fraction of the file's pages in the page cache (mincore).
fn resident_fraction(file: &File, len: usize) -> f64 {
    if len == 0 {
        return 1.0;
    }
    let map = Mapping::new(file, len, false);
    let page = 4096;
    let pages = len.div_ceil(page);
    let mut vec = vec![0u8; pages];
    // SAFETY: `vec` has one byte per page of the mapping.
    let rc = unsafe { libc::mincore(map.ptr, len, vec.as_mut_ptr()) };
    assert_eq!(rc, 0, "mincore failed");
    vec.iter().filter(|&&b| b & 1 == 1).count() as f64 / pages as f64
}

fn status_kb(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resets VmHWM to the current RSS. False where the kernel refuses.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

// ---------------------------------------------------------------------------
// Loaders.
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    FreshVec,
    ReusedVec,
    Mmap { willneed: bool },
    Upstream,
    ZpDefault,
    Zp(Zeroing),
    ZpPinned,
}

const LOADERS: &[(&str, Kind, &str)] = &[
    ("fresh-vec", Kind::FreshVec, "fresh `vec![0; n]` per tensor"),
    ("reused-vec", Kind::ReusedVec, "one staging `Vec` per worker, grown"),
    ("mmap", Kind::Mmap { willneed: false }, "`mmap`, convert from the mapping"),
    ("mmap-willneed", Kind::Mmap { willneed: true }, "`mmap` + `MADV_WILLNEED`"),
    ("upstream", Kind::Upstream, "upstream zeropool 0.7 `alloc`"),
    ("zp-default", Kind::ZpDefault, "ZeroPool `BufferPool::new()` (`Always`)"),
    ("zp-always", Kind::Zp(Zeroing::Always), "ZeroPool `Always`"),
    ("zp-onput", Kind::Zp(Zeroing::OnPut), "ZeroPool `OnPut`"),
    ("zp-never", Kind::Zp(Zeroing::Never), "ZeroPool `Never`"),
    ("zp-pinned", Kind::ZpPinned, "ZeroPool `Always`, pinned"),
];

/// What the loaders share: the file, its index, the destination model.
struct Ctx {
    file: File,
    file_len: usize,
    tensors: Vec<Tensor>,
    /// The model's tensors, allocated and touched once, before any loader.
    dest: Vec<Mutex<Vec<u8>>>,
    threads: usize,
    /// ZeroPool's tuned idle budget (see `tuned_budget`).
    budget: usize,
}

/// The idle budget of the tuned ZeroPool rows: room for every worker to
/// keep one buffer of each power-of-two class the file's tensors use.
fn tuned_budget(tensors: &[Tensor], threads: usize) -> usize {
    let mut classes: Vec<usize> = tensors.iter().map(|t| t.len.max(MIB).next_power_of_two()).collect();
    classes.sort_unstable();
    classes.dedup();
    classes.iter().sum::<usize>() * threads
}

/// Per-loader state that lives as long as the loader's workers.
enum PoolState {
    None,
    Upstream(zeropool_upstream::ZeroPool),
    Zp(BufferPool),
}

impl PoolState {
    fn new(kind: Kind, ctx: &Ctx) -> PoolState {
        let auto = AutoConfig::detect();
        let tuned = |z: Zeroing, pinned: bool| {
            BufferPool::builder()
                .max_pooled_bytes(ctx.budget)
                .zeroing(z)
                .pinned_memory(pinned)
                .build()
                .expect("valid configuration")
        };
        match kind {
            Kind::Upstream => PoolState::Upstream(
                zeropool_upstream::ZeroPool::new()
                    .tls_cache_size(auto.tls_cache_size.max(1))
                    .max_buffers_per_class(auto.num_shards * auto.max_buffers_per_shard)
                    .track_stats(true),
            ),
            Kind::ZpDefault => PoolState::Zp(BufferPool::new()),
            Kind::Zp(z) => PoolState::Zp(tuned(z, false)),
            Kind::ZpPinned => PoolState::Zp(tuned(Zeroing::Always, true)),
            _ => PoolState::None,
        }
    }

    /// The pool's own count of system allocations, where it has one that
    /// the counting allocator does not see.
    fn system_allocations(&self) -> u64 {
        match self {
            PoolState::Zp(p) => p.stats().allocations,
            _ => 0,
        }
    }
}

/// One worker's part of a load: tensors from the shared counter until none
/// are left. Returns the sum of the tensors' checksum terms.
fn work(kind: Kind, ctx: &Ctx, pool: &PoolState, next: &AtomicUsize, map: Option<&[u8]>, staging: &mut Vec<u8>) -> u64 {
    let mut sum = 0u64;
    loop {
        let i = next.fetch_add(1, Relaxed);
        let Some(t) = ctx.tensors.get(i) else { break };
        let mut dst = ctx.dest[i].lock().unwrap();
        let read = |buf: &mut [u8]| ctx.file.read_exact_at(buf, t.offset).expect("read tensor");
        let hash = match (kind, pool) {
            (Kind::FreshVec, _) => {
                let mut buf = vec![0u8; t.len];
                read(&mut buf);
                convert(t, &buf, &mut dst)
            }
            (Kind::ReusedVec, _) => {
                if staging.len() < t.len {
                    staging.resize(t.len, 0);
                }
                let buf = &mut staging[..t.len];
                read(buf);
                convert(t, buf, &mut dst)
            }
            (Kind::Mmap { .. }, _) => {
                let bytes = map.expect("mapped");
                convert(t, &bytes[t.offset as usize..t.offset as usize + t.len], &mut dst)
            }
            (_, PoolState::Upstream(p)) => {
                let mut buf = p.alloc(t.len);
                read(&mut buf);
                convert(t, &buf, &mut dst)
            }
            (_, PoolState::Zp(p)) => {
                let mut buf = p.get(t.len);
                read(&mut buf);
                let h = convert(t, &buf, &mut dst);
                p.put(buf);
                h
            }
            _ => unreachable!("loader without its state"),
        };
        sum = sum.wrapping_add(tensor_term(i, hash));
    }
    sum
}

/// One loader with its state (pool, mapping) and its own worker threads,
/// which live as long as it does and wait on its barrier between loads.
struct Runner<'a> {
    key: &'static str,
    kind: Kind,
    ctx: &'a Ctx,
    pool: PoolState,
    next: AtomicUsize,
    sum: AtomicU64,
    stop: AtomicBool,
    mapping: RwLock<Option<Mapping>>,
    barrier: Barrier,
}

/// Minor page faults of the whole process so far (getrusage).
fn minor_faults() -> u64 {
    // SAFETY: getrusage fills the struct it is given.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u.ru_minflt as u64
    }
}

/// One timed load.
struct Load {
    ms: f64,
    allocs: u64,
    /// Minor page faults during the load (first touches of memory, and
    /// file pages mapped from the page cache).
    faults: u64,
    checksum: u64,
    resident_before: f64,
}

impl<'a> Runner<'a> {
    fn new(key: &'static str, kind: Kind, ctx: &'a Ctx) -> Runner<'a> {
        Runner {
            key,
            kind,
            ctx,
            pool: PoolState::new(kind, ctx),
            next: AtomicUsize::new(0),
            sum: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            mapping: RwLock::new(None),
            barrier: Barrier::new(ctx.threads + 1),
        }
    }

    /// The body of each of its `ctx.threads` worker threads.
    fn worker(&self) {
        let mut staging = Vec::new();
        loop {
            self.barrier.wait();
            if self.stop.load(Relaxed) {
                break;
            }
            let map = self.mapping.read().unwrap();
            let part =
                work(self.kind, self.ctx, &self.pool, &self.next, map.as_ref().map(Mapping::bytes), &mut staging);
            drop(map);
            self.sum.fetch_add(part, Relaxed);
            self.barrier.wait();
        }
    }

    /// One load of the whole file by its workers, timed from the main thread.
    fn load(&self, evicted: bool) -> Load {
        if evicted {
            evict(&self.ctx.file);
        }
        let resident_before = resident_fraction(&self.ctx.file, self.ctx.file_len);
        self.next.store(0, Relaxed);
        self.sum.store(0, Relaxed);
        let (a0, p0) = (ALLOCS.load(Relaxed), self.pool.system_allocations());
        let f0 = minor_faults();
        let start = Instant::now();
        if let Kind::Mmap { willneed } = self.kind {
            *self.mapping.write().unwrap() = Some(Mapping::new(&self.ctx.file, self.ctx.file_len, willneed));
        }
        self.barrier.wait(); // go
        self.barrier.wait(); // done
        self.mapping.write().unwrap().take(); // munmap
        let ms = start.elapsed().as_secs_f64() * 1e3;
        let faults = minor_faults() - f0;
        let allocs = match (&self.pool, self.kind) {
            // ZeroPool maps its buffers itself; count those, not the
            // allocator calls of its bookkeeping.
            (PoolState::Zp(_), _) => self.pool.system_allocations() - p0,
            (_, Kind::Mmap { .. }) => ALLOCS.load(Relaxed) - a0 + 1,
            _ => ALLOCS.load(Relaxed) - a0,
        };
        Load { ms, allocs, faults, checksum: self.sum.load(Relaxed), resident_before }
    }

    /// Ends its workers (they wait at the barrier).
    fn finish(&self) {
        self.stop.store(true, Relaxed);
        self.barrier.wait();
    }
}

/// The memory pass: one loader at a time, from fresh state, so that peak
/// RSS, what is held after and the allocations are its own.
struct MemoryPass {
    loads: Vec<Load>,
    peak_rss: Option<u64>,
    held_rss: Option<u64>,
    pool_idle: Option<u64>,
    pin_failures: Option<u64>,
}

fn memory_pass(key: &'static str, kind: Kind, ctx: &Ctx, loads: usize, evicted: bool) -> MemoryPass {
    let r = Runner::new(key, kind, ctx);
    let state = if evicted { "evicted" } else { "warm" };
    std::thread::scope(|s| {
        let peak_ok = reset_peak_rss();
        let base_rss = status_kb("VmRSS:").map(|k| k * 1024);
        for _ in 0..ctx.threads {
            s.spawn(|| r.worker());
        }
        let mut out = MemoryPass { loads: vec![], peak_rss: None, held_rss: None, pool_idle: None, pin_failures: None };
        for i in 0..loads {
            eprint!("\r  [{state}, {} threads] memory pass: {key:<14} load {}/{loads}   ", ctx.threads, i + 1);
            out.loads.push(r.load(evicted));
        }
        // Measured with the workers (and their caches or buffers) alive:
        // what a process that keeps its loader around holds.
        let rss = status_kb("VmRSS:").map(|k| k * 1024);
        out.held_rss = base_rss.zip(rss).map(|(b, r)| r.saturating_sub(b));
        if peak_ok {
            out.peak_rss = base_rss.zip(status_kb("VmHWM:").map(|k| k * 1024)).map(|(b, h)| h.saturating_sub(b));
        }
        match &r.pool {
            PoolState::Zp(p) => {
                let st = p.stats();
                out.pool_idle = Some(st.pooled_bytes);
                if kind == Kind::ZpPinned {
                    out.pin_failures = Some(st.pin_failures);
                }
            }
            PoolState::Upstream(p) => {
                // Only the shared lists are visible; thread caches are not.
                let st = p.stats();
                out.pool_idle = Some(st.classes.iter().map(|c| (c.buffered * c.boundary) as u64).sum());
            }
            PoolState::None => {}
        }
        r.finish();
        out
    })
}

/// The timing pass: every loader's state and workers alive at once, one
/// untimed load each to warm them, then `rounds` rounds in which every
/// loader loads once, in an order that rotates, so that whatever else the
/// machine is doing falls on all loaders alike. Returns each loader's loads.
fn timing_pass(loaders: &[(&'static str, Kind)], ctx: &Ctx, rounds: usize, evicted: bool) -> Vec<Vec<Load>> {
    let runners: Vec<Runner> = loaders.iter().map(|&(key, kind)| Runner::new(key, kind, ctx)).collect();
    let state = if evicted { "evicted" } else { "warm" };
    std::thread::scope(|s| {
        for r in &runners {
            for _ in 0..ctx.threads {
                s.spawn(|| r.worker());
            }
        }
        for r in &runners {
            eprint!("\r  [{state}, {} threads] timing pass: warming {:<14}      ", ctx.threads, r.key);
            r.load(evicted);
        }
        let mut out: Vec<Vec<Load>> = runners.iter().map(|_| vec![]).collect();
        for round in 0..rounds {
            eprint!("\r  [{state}, {} threads] timing pass: round {}/{rounds}                ", ctx.threads, round + 1);
            for k in 0..runners.len() {
                let i = (round + k) % runners.len();
                out[i].push(runners[i].load(evicted));
            }
        }
        for r in &runners {
            r.finish();
        }
        eprintln!();
        out
    })
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The checksum every loader must reproduce: one thread, plain reads.
fn reference_checksum(ctx: &Ctx) -> u64 {
    let mut sum = 0u64;
    for (i, t) in ctx.tensors.iter().enumerate() {
        let mut buf = vec![0u8; t.len];
        ctx.file.read_exact_at(&mut buf, t.offset).expect("read tensor");
        let mut dst = vec![0u8; t.out_len()];
        sum = sum.wrapping_add(tensor_term(i, convert(t, &buf, &mut dst)));
    }
    sum
}

// ---------------------------------------------------------------------------
// Options, machine, driver.
// ---------------------------------------------------------------------------

struct Opts {
    path: Option<PathBuf>,
    model: String,
    /// Worker counts; the first gets both cache states, the others warm only.
    threads: Vec<usize>,
    /// Timed rounds (the timing pass), warm and evicted.
    rounds: usize,
    evicted_rounds: usize,
    /// Loads per loader in the memory pass (the first is the one-shot case).
    memory_loads: usize,
    warm: bool,
    evicted: bool,
    loaders: Vec<String>,
    json: bool,
    markdown: bool,
    update_readme: Option<PathBuf>,
    from_json: Option<PathBuf>,
    /// The command line, as the report states it.
    command: String,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        path: None,
        model: "gpt2".into(),
        threads: vec![std::thread::available_parallelism().map_or(1, |n| n.get())],
        rounds: 9,
        evicted_rounds: 5,
        memory_loads: 3,
        warm: true,
        evicted: true,
        loaders: LOADERS.iter().map(|l| l.0.to_string()).collect(),
        json: false,
        markdown: false,
        update_readme: None,
        from_json: None,
        command: std::iter::once("cargo run --release --example checkpoint_load".to_string())
            .chain((!args.is_empty()).then(|| format!("-- {}", args.join(" "))))
            .collect::<Vec<_>>()
            .join(" "),
    };
    let mut it = args.iter();
    let num = |v: Option<&String>, name: &str| -> Result<usize, String> {
        v.and_then(|s| s.parse().ok()).filter(|&n| n > 0).ok_or(format!("{name} needs a positive number"))
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--threads" => {
                let list = it.next().ok_or("--threads needs N or a list N,M")?;
                o.threads =
                    list.split(',').map(|n| num(Some(&n.to_string()), "--threads")).collect::<Result<_, _>>()?;
            }
            "--rounds" => o.rounds = num(it.next(), "--rounds")?,
            "--evicted-rounds" => o.evicted_rounds = num(it.next(), "--evicted-rounds")?,
            "--memory-loads" => o.memory_loads = num(it.next(), "--memory-loads")?,
            "--cache" => match it.next().map(String::as_str) {
                Some("warm") => (o.warm, o.evicted) = (true, false),
                Some("evicted") => (o.warm, o.evicted) = (false, true),
                Some("both") => (o.warm, o.evicted) = (true, true),
                _ => return Err("--cache takes warm, evicted or both".into()),
            },
            "--loaders" => {
                let list = it.next().ok_or("--loaders needs a list")?;
                o.loaders = list.split(',').map(str::to_string).collect();
                if let Some(bad) = o.loaders.iter().find(|l| !LOADERS.iter().any(|k| k.0 == l.as_str())) {
                    let known: Vec<_> = LOADERS.iter().map(|l| l.0).collect();
                    return Err(format!("unknown loader {bad}; known: {}", known.join(",")));
                }
            }
            "--model" => {
                o.model =
                    it.next().filter(|m| *m == "gpt2" || *m == "tiny").ok_or("--model takes gpt2 or tiny")?.clone()
            }
            "--json" => o.json = true,
            "--markdown" => o.markdown = true,
            "--update-readme" => o.update_readme = Some(it.next().ok_or("--update-readme needs a file")?.into()),
            "--from-json" => o.from_json = Some(it.next().ok_or("--from-json needs a file")?.into()),
            "-h" | "--help" => return Err(String::new()),
            s if s.starts_with("--") => return Err(format!("unknown option {s}")),
            s => o.path = Some(s.into()),
        }
    }
    Ok(o)
}

/// The 1-minute load average: other work on the machine during the run.
fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

fn machine() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown".into(), |s| s.trim().to_string());
    let mem_gb = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map(|kb| (kb / 1024.0 / 1024.0).round());
    let cmd = |c: &str, args: &[&str]| {
        std::process::Command::new(c)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    json!({
        "cpu": cpu,
        "cpus": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "memory_gib": mem_gb,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "rustc": cmd("rustc", &["--version"]),
        "commit": cmd("git", &["describe", "--always", "--dirty", "--abbrev=7"]),
        "date_utc": utc_now(),
    })
}

/// "YYYY-MM-DD HH:MM UTC", without a date crate.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", rem / 3600, rem % 3600 / 60)
}

/// Measures every selected loader and returns the report (the one source
/// of every output format).
fn measure(o: &Opts) -> std::io::Result<Value> {
    let temp = std::env::temp_dir().join(format!(
        "zeropool-ckpt-{}-{}",
        std::process::id(),
        std::thread::current().name().unwrap_or("main").replace("::", "-")
    ));
    let (path, synthetic) = match &o.path {
        Some(p) => (p.clone(), false),
        None => {
            std::fs::create_dir_all(&temp)?;
            let p = temp.join(format!("{}-synthetic.safetensors", o.model));
            eprintln!("no checkpoint given: writing a synthetic {} (fp32) to {}", o.model, p.display());
            write_synthetic(&p, &o.model)?;
            (p, true)
        }
    };
    let tensors = read_index(&path)?;
    let file = File::open(&path)?;
    let file_len = file.metadata()?.len() as usize;
    let total: usize = tensors.iter().map(|t| t.len).sum();
    let largest = tensors.iter().map(|t| t.len).max().unwrap_or(0);
    eprintln!(
        "{}: {} tensors, {:.1} MB, largest {:.1} MB; {:?} worker threads",
        path.display(),
        tensors.len(),
        total as f64 / 1e6,
        largest as f64 / 1e6,
        o.threads
    );
    // The destination model: allocated and touched once, outside the timings.
    let dest = tensors
        .iter()
        .map(|t| {
            let mut v = vec![0u8; t.out_len()];
            v.fill(1);
            Mutex::new(v)
        })
        .collect();
    let mut ctx = Ctx { budget: 0, file, file_len, tensors, dest, threads: 1 };
    let load_before = loadavg();
    eprintln!("  reference checksum (one thread, plain reads; also warms the cache)...");
    let reference = reference_checksum(&ctx);

    let mut results = Vec::new();
    let runs: Vec<(usize, bool)> = o
        .threads
        .iter()
        .enumerate()
        .flat_map(|(i, &n)| [(n, o.warm, false), (n, o.evicted && i == 0, true)])
        .filter(|r| r.1)
        .map(|r| (r.0, r.2))
        .collect();
    for (threads, evicted) in runs {
        ctx.threads = threads;
        ctx.budget = tuned_budget(&ctx.tensors, threads);
        let rounds = if evicted { o.evicted_rounds } else { o.rounds };
        if !evicted {
            // Warm the cache again (an evicted section may have run before).
            let _ = reference_checksum(&ctx);
        }
        let selected: Vec<&(&'static str, Kind, &str)> =
            LOADERS.iter().filter(|l| o.loaders.iter().any(|k| k == l.0)).collect();
        let mem: Vec<MemoryPass> =
            selected.iter().map(|l| memory_pass(l.0, l.1, &ctx, o.memory_loads, evicted)).collect();
        eprintln!();
        let keys: Vec<(&'static str, Kind)> = selected.iter().map(|l| (l.0, l.1)).collect();
        let timed = timing_pass(&keys, &ctx, rounds, evicted);
        for ((&&(key, _, name), m), t) in selected.iter().zip(&mem).zip(&timed) {
            let times: Vec<f64> = t.iter().map(|l| l.ms).collect();
            let med = median(&times);
            let checksums: Vec<u64> = m.loads.iter().chain(t).map(|l| l.checksum).collect();
            eprintln!(
                "  [{}, {threads} threads] {key:<14} first {:.1} ms, median {med:.1} ms",
                if evicted { "evicted" } else { "warm" },
                m.loads[0].ms
            );
            results.push(json!({
                "threads": threads,
                "zeropool_tuned_max_pooled_bytes": ctx.budget,
                "cache": if evicted { "evicted" } else { "warm" },
                "loader": key,
                "name": name,
                "times_ms": times,
                "first_ms": m.loads[0].ms,
                "memory_pass_times_ms": m.loads.iter().map(|l| l.ms).collect::<Vec<_>>(),
                "median_ms": med,
                "min_ms": times.iter().copied().fold(f64::INFINITY, f64::min),
                "mb_per_s": total as f64 / 1e6 / (med / 1e3),
                "peak_rss_bytes": m.peak_rss,
                "held_rss_bytes": m.held_rss,
                "pool_idle_bytes": m.pool_idle,
                "allocations": m.loads.iter().map(|l| l.allocs).collect::<Vec<_>>(),
                "allocations_first": m.loads[0].allocs,
                "page_faults": m.loads.iter().map(|l| l.faults).collect::<Vec<_>>(),
                "page_faults_first": m.loads[0].faults,
                "page_faults_later_median": median(&t.iter().map(|l| l.faults as f64).collect::<Vec<_>>()),
                // Steady state: the timed loads, after the warm-up load.
                "allocations_later_median": median(&t.iter().map(|l| l.allocs as f64).collect::<Vec<_>>()),
                "pin_failures": m.pin_failures,
                "resident_before": median(&m.loads.iter().chain(t).map(|l| l.resident_before).collect::<Vec<_>>()),
                "checksums_match": checksums.iter().all(|&c| c == reference),
                "checksum": format!("{:016x}", checksums[0]),
            }));
        }
    }
    if synthetic {
        std::fs::remove_dir_all(&temp)?;
    }
    let auto = AutoConfig::detect();
    let mut machine = machine();
    machine["loadavg_before"] = json!(load_before);
    machine["loadavg_after"] = json!(loadavg());
    Ok(json!({
        "command": o.command,
        "machine": machine,
        "file": {
            "path": if synthetic { format!("synthetic {}", o.model) } else { path.display().to_string() },
            "tensors": ctx.tensors.len(),
            "bytes": total,
            "largest_bytes": largest,
        },
        "threads": o.threads,
        "rounds": {"warm": o.rounds, "evicted": o.evicted_rounds, "memory_loads": o.memory_loads},
        "zeropool_auto": {"tls_cache_size": auto.tls_cache_size, "num_shards": auto.num_shards, "max_buffers_per_shard": auto.max_buffers_per_shard},
        "reference_checksum": format!("{reference:016x}"),
        "results": results,
    }))
}

// ---------------------------------------------------------------------------
// Rendering: markdown tables and the generated comparison.
// ---------------------------------------------------------------------------

fn mb(v: &Value) -> String {
    v.as_f64().map_or("n/a".into(), |b| format!("{:.0}", b / 1e6))
}

fn row<'a>(rows: &'a [&'a Value], key: &str) -> Option<&'a Value> {
    rows.iter().copied().find(|r| r["loader"] == key)
}

fn ms(r: &Value) -> f64 {
    r["median_ms"].as_f64().unwrap_or(f64::NAN)
}

fn markdown(report: &Value) -> String {
    let mut s = String::new();
    let m = &report["machine"];
    let f = &report["file"];
    let rounds = &report["rounds"];
    s += &format!(
        "Measured {} on {} ({} CPUs, {} GiB, Linux {}, {}, commit {}; load average {} before, {} after: \
         the machine is shared, so compare rows within a table) with\n`{}`:\n\
         {} ({} tensors, {:.1} MB fp32, largest {:.1} MB).\n\
         First load: one loader at a time from fresh state (empty pool, no staging buffer yet), \
         in a pass that also measures memory and allocations ({} loads per loader). Median (and fastest): \
         a separate pass with every loader's state and workers alive, one warm-up load each, then \
         {} rounds warm / {} evicted in which every loader loads once in rotating order, so that other \
         work on the machine falls on all alike; MB/s from the median. ZeroPool's tuned rows set \
         `max_pooled_bytes` to room for each worker to keep one buffer of each size class the file uses \
         (the figure is in each table's title), everything else auto; \
         upstream gets ZeroPool's auto thread cache ({}) and idle count ({} shards x {}) as its \
         `tls_cache_size` and `max_buffers_per_class`.\n",
        m["date_utc"].as_str().unwrap_or("?"),
        m["cpu"].as_str().unwrap_or("?"),
        m["cpus"],
        m["memory_gib"],
        m["kernel"].as_str().unwrap_or("?"),
        m["rustc"].as_str().unwrap_or("rustc ?"),
        m["commit"].as_str().unwrap_or("?"),
        m["loadavg_before"],
        m["loadavg_after"],
        report["command"].as_str().unwrap_or("?"),
        f["path"].as_str().unwrap_or("?"),
        f["tensors"],
        f["bytes"].as_f64().unwrap_or(0.0) / 1e6,
        f["largest_bytes"].as_f64().unwrap_or(0.0) / 1e6,
        rounds["memory_loads"],
        rounds["warm"],
        rounds["evicted"],
        report["zeropool_auto"]["tls_cache_size"],
        report["zeropool_auto"]["num_shards"],
        report["zeropool_auto"]["max_buffers_per_shard"],
    );
    let all: Vec<&Value> = report["results"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
    let mut groups: Vec<(u64, &str)> = vec![];
    for r in &all {
        let g = (r["threads"].as_u64().unwrap_or(0), r["cache"].as_str().unwrap_or("?"));
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    for (gi, &(threads, cache)) in groups.iter().enumerate() {
        let rows: Vec<&Value> =
            all.iter().copied().filter(|r| r["cache"] == cache && r["threads"].as_u64() == Some(threads)).collect();
        let resident = median(&rows.iter().filter_map(|r| r["resident_before"].as_f64()).collect::<Vec<_>>());
        s += &format!(
            "\n**{threads} worker threads, file {}** ({:.0}% of its pages in the page cache before each load; \
             tuned ZeroPool `max_pooled_bytes` {} MiB):\n\n",
            if cache == "warm" { "in the page cache" } else { "evicted (`posix_fadvise(DONTNEED)`) before every load" },
            resident * 100.0,
            rows[0]["zeropool_tuned_max_pooled_bytes"].as_u64().unwrap_or(0) >> 20
        );
        s += "| loader | first load ms | median ms (fastest) | MB/s | vs fresh vec | vs reused Vec | peak RSS MB | held after MB (RSS / pool) | system allocs first / later | page faults first / later |\n";
        s += "|---|---|---|---|---|---|---|---|---|---|\n";
        let fresh = row(&rows, "fresh-vec").map(ms);
        let reused = row(&rows, "reused-vec").map(ms);
        for r in &rows {
            let ratio = |b: Option<f64>| b.map_or("".into(), |b| format!("{:.2}x", b / ms(r)));
            let mut name = r["name"].as_str().unwrap_or("?").to_string();
            if let Some(p) = r["pin_failures"].as_u64() {
                name += &format!(" ({p} pin failures)");
            }
            if r["checksums_match"] != true {
                name += " **CHECKSUM MISMATCH**";
            }
            s += &format!(
                "| {} | {:.1} | {:.1} ({:.1}) | {:.0} | {} | {} | {} | {} / {} | {} / {} | {} / {} |\n",
                name,
                r["first_ms"].as_f64().unwrap_or(f64::NAN),
                ms(r),
                r["min_ms"].as_f64().unwrap_or(f64::NAN),
                r["mb_per_s"].as_f64().unwrap_or(f64::NAN),
                ratio(fresh),
                ratio(reused),
                mb(&r["peak_rss_bytes"]),
                mb(&r["held_rss_bytes"]),
                if r["pool_idle_bytes"].is_null() { "-".to_string() } else { mb(&r["pool_idle_bytes"]) },
                r["allocations_first"],
                r["allocations_later_median"].as_f64().map_or("?".into(), |a| format!("{a:.0}")),
                r["page_faults_first"],
                r["page_faults_later_median"].as_f64().map_or("?".into(), |a| format!("{a:.0}")),
            );
        }
        s += &summary(&rows, cache, gi == 0);
    }
    s += "\nEvery loader's checksum of the converted tensors matched the single-threaded reference \
          (a mismatch would be flagged in the table). Peak RSS: `VmHWM` (reset through \
          `/proc/self/clear_refs`) above the RSS at the loader's start, which includes the \
          destination model; for `mmap` it counts the mapped file pages (page cache, reclaimable). \
          Held after: RSS above that start with the workers still alive, and the idle bytes the pool \
          reports (`stats().pooled_bytes`; upstream: its shared lists only, its thread caches are \
          not visible). System allocations: in the first load, and the median of the timed loads; \
          the global allocator's calls (counted by the \
          example's allocator) for the `Vec` loaders and upstream, ZeroPool's `stats().allocations` \
          (its own mappings), one mapping for `mmap`. Page faults: the process's minor faults \
          (`getrusage`) during the load, first and median of the timed loads: first touches of fresh \
          memory, and for `mmap` the file's pages mapped from the page cache (many pages per fault).\n";
    s
}

/// Sentences computed from the numbers, so a regenerated README cannot
/// contradict its own table.
fn summary(rows: &[&Value], cache: &str, first: bool) -> String {
    let mut s = String::from("\n");
    let fastest = rows.iter().min_by(|a, b| ms(a).partial_cmp(&ms(b)).unwrap());
    let zp: Vec<&Value> =
        rows.iter().copied().filter(|r| r["loader"].as_str().is_some_and(|k| k.starts_with("zp-"))).collect();
    let best_zp = zp.iter().min_by(|a, b| ms(a).partial_cmp(&ms(b)).unwrap());
    let name = |r: &Value| r["name"].as_str().unwrap_or("?").to_string();
    if let Some(f) = fastest {
        s += &format!("Fastest here: {} at {:.1} ms.", name(f), ms(f));
    }
    if let Some(z) = best_zp {
        s += &format!(" Best ZeroPool row: {} at {:.1} ms", name(z), ms(z));
        let mut cmp = vec![];
        for (key, what) in [
            ("fresh-vec", "a fresh `vec!` per tensor"),
            ("reused-vec", "a reused staging `Vec`"),
            ("mmap", "`mmap`"),
            ("upstream", "upstream 0.7"),
        ] {
            if let Some(b) = row(rows, key) {
                let x = ms(b) / ms(z);
                cmp.push(format!(
                    "{:.2}x {} than {what}",
                    if x >= 1.0 { x } else { 1.0 / x },
                    if x >= 1.0 { "faster" } else { "slower" }
                ));
            }
        }
        if !cmp.is_empty() {
            s += &format!(": {}.", cmp.join(", "));
        } else {
            s += ".";
        }
    }
    if let (Some(z), Some(v)) = (row(rows, "zp-always"), row(rows, "reused-vec")) {
        s += &format!(
            " After the load, ZeroPool `Always` holds {} MB idle (RSS {} MB), the reused `Vec`s {} MB.",
            mb(&z["pool_idle_bytes"]),
            mb(&z["held_rss_bytes"]),
            mb(&v["held_rss_bytes"])
        );
    }
    if let Some(d) = row(rows, "zp-default") {
        s += &format!(
            " `BufferPool::new()` still makes {} system allocation(s) per later load.",
            d["allocations_later_median"].as_f64().map_or("?".into(), |a| format!("{a:.0}"))
        );
    }
    if cache == "warm" && first {
        if let (Some(f), Some(z), Some(v), Some(a)) =
            (row(rows, "fresh-vec"), best_zp, row(rows, "reused-vec"), row(rows, "zp-always"))
        {
            s += &format!(
                " The seeds' claim (GPT-2: 200 -> 53 ms, 3.8x, \"70% of the time was buffer allocation\") \
                 compares with {:.1} ms (fresh `vec!`) -> {:.1} ms ({}) here, {:.2}x, and {:.2}x with the \
                 default `Always`; against the reused `Vec` a careful programmer writes it is {:.2}x and {:.2}x. \
                 Allocation and first-touch page faults (fresh `vec!` minus reused `Vec`) are {:.0}% of the \
                 fresh-`vec!` load here (the seeds said 70%).",
                ms(f),
                ms(z),
                name(z),
                ms(f) / ms(z),
                ms(f) / ms(a),
                ms(v) / ms(z),
                ms(v) / ms(a),
                (ms(f) - ms(v)) / ms(f) * 100.0
            );
        }
    }
    s + "\n"
}

const BEGIN: &str = "<!-- checkpoint_load:begin (generated by the example; do not edit by hand) -->";
const END: &str = "<!-- checkpoint_load:end -->";

fn update_readme(path: &Path, md: &str) -> std::io::Result<()> {
    let text = std::fs::read_to_string(path)?;
    let (Some(b), Some(e)) = (text.find(BEGIN), text.find(END)) else {
        return Err(std::io::Error::other(format!("{} has no checkpoint_load markers", path.display())));
    };
    let new = format!("{}{BEGIN}\n{md}{}", &text[..b], &text[e..]);
    std::fs::write(path, new)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let o = match parse(&args) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("checkpoint_load: {e}");
            }
            eprintln!("usage: checkpoint_load [FILE.safetensors] [--threads N] [--rounds N] [--evicted-rounds N] [--memory-loads N] [--cache warm|evicted|both] [--loaders a,b] [--model gpt2|tiny] [--json] [--markdown] [--update-readme FILE] [--from-json FILE]");
            std::process::exit(2);
        }
    };
    let report = match &o.from_json {
        Some(p) => {
            serde_json::from_str(&std::fs::read_to_string(p).expect("read --from-json file")).expect("a --json report")
        }
        None => measure(&o).unwrap_or_else(|e| {
            eprintln!("checkpoint_load: {e}");
            std::process::exit(1)
        }),
    };
    let md = markdown(&report);
    if o.json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap());
    }
    if o.markdown || (!o.json && o.update_readme.is_none()) {
        println!("{md}");
    }
    if let Some(p) = &o.update_readme {
        update_readme(p, &md).unwrap_or_else(|e| {
            eprintln!("checkpoint_load: {e}");
            std::process::exit(1)
        });
        eprintln!("updated {}", p.display());
    }
    let bad = report["results"].as_array().into_iter().flatten().filter(|r| r["checksums_match"] != true).count();
    if bad > 0 {
        eprintln!("checkpoint_load: {bad} loader(s) produced a different checksum");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(bf16(1.0f32.to_bits()), 0x3f80);
        assert_eq!(bf16((-2.0f32).to_bits()), 0xc000);
        assert_eq!(bf16(0x3f80_8000), 0x3f80); // tie, even stays
        assert_eq!(bf16(0x3f81_8000), 0x3f82); // tie, odd rounds up
        assert_eq!(bf16(0x3f80_8001), 0x3f81);
        assert_eq!(bf16(f32::INFINITY.to_bits()), 0x7f80);
        assert!(bf16(f32::NAN.to_bits()) & 0x7f != 0 || bf16(f32::NAN.to_bits()) & 0x40 != 0);
        assert_eq!(bf16(0x7f7f_ffff), 0x7f80); // the largest float rounds to infinity
    }

    /// Every loader, both cache states, on a few MB: the same checksum.
    #[test]
    fn every_loader_produces_the_same_checksum() {
        let args: Vec<String> =
            ["--model", "tiny", "--threads", "2", "--rounds", "1", "--evicted-rounds", "1", "--memory-loads", "2"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        let o = parse(&args).unwrap();
        let report = measure(&o).unwrap();
        let results = report["results"].as_array().unwrap();
        assert_eq!(results.len(), 2 * LOADERS.len());
        assert!(results.iter().all(|r| r["threads"] == 2));
        for r in results {
            assert_eq!(
                r["checksums_match"], true,
                "{} ({}): checksum differs from the reference",
                r["loader"], r["cache"]
            );
            assert_eq!(r["checksum"].as_str(), report["reference_checksum"].as_str());
        }
        // The rendering works on the same report.
        let md = markdown(&report);
        assert!(md.contains("fresh `vec![0; n]` per tensor") && md.contains("evicted"));
    }
}
