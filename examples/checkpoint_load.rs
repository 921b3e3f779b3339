//! Checkpoint loading, the job ZeroPool was made for, measured against the
//! loaders a user would otherwise write.
//!
//! Every tensor of a `.safetensors` file is converted (fp32 -> bf16, round
//! to nearest even, into a destination tensor that already exists, as
//! `load_state_dict` copies into a model's parameters) and checksummed.
//! `--threads N` workers (default: the CPU count) share the work through a
//! counter. Loaders compared, on the same file, in the same run:
//!
//! - whole tensors staged (a worker takes the next tensor, reads all of it
//!   into a staging buffer, converts it, gives the buffer back):
//!   `fresh-vec`, a fresh `vec![0; n]` per tensor (what naive code does);
//!   `reused-vec`, one staging `Vec` per worker, grown to the largest tensor
//!   it has seen (what a careful programmer writes); `upstream` and
//!   `upstream-uninit`, upstream zeropool 0.7 `alloc` (zeroes) and
//!   `alloc_uninit`, with ZeroPool's thread-cache size and idle-buffer count
//!   where its API allows; `zp-default`, ZeroPool as `BufferPool::new()`
//!   configures itself; `zp-always`, `zp-onput`, `zp-never`, ZeroPool with
//!   an idle budget that fits the file's buffer sizes, under each zeroing
//!   policy; `zp-pinned`, the same with `pinned_memory(true)`, `Always`;
//! - not staged: `mmap`, `mmap-willneed`, the whole file mapped, converted
//!   straight from the mapping (safetensors' default path), without and with
//!   `MADV_WILLNEED`;
//! - streamed: the tensors cut into work items of `--piece` bytes (a tensor
//!   no larger is one item; workers share large ones), each read `--chunk`
//!   bytes at a time into a staging buffer and converted into its place:
//!   `vec-chunk`, one chunk-sized `Vec` per worker; `zp-stream`, a chunk
//!   got from `BufferPool::new()` and put back per read; `zp-stream-pinned`,
//!   the same with `pinned_memory(true)`. Experiments, only with
//!   `--loaders`: `zp-stream-never` (`Zeroing::Never`), `zp-stream-plain`,
//!   `-seq`, `-willneed`, `-direct` (plain `pread`, `POSIX_FADV_SEQUENTIAL`,
//!   `POSIX_FADV_WILLNEED` on the next chunk, `O_DIRECT`).
//!
//! The file's index is checked first (header length against the file,
//! dtypes, shapes, offsets in range, in order, without overlap, matching
//! shape x dtype); a bad file is one line on stderr and exit status 1.
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
//! `--loaders a,b,...`, `--chunk BYTES` and `--piece BYTES` (K, M
//! suffixes; the streamed loaders), `--model gpt2|tiny` (the synthetic
//! file), `--write FILE` (write it and stop), `--json`,
//! `--markdown`, `--update-readme FILE` (replaces the text between the
//! `checkpoint_load:begin` / `checkpoint_load:end` markers; refuses a run
//! with a checksum mismatch), `--from-json
//! FILE` (render a saved `--json` result instead of measuring).
//! Progress goes to stderr; results to stdout.

use std::alloc::{GlobalAlloc, Layout, System};
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

/// The streaming loaders' chunk: bytes per read and per staging buffer
/// (chosen by measurement; the README says how).
const DEFAULT_CHUNK: usize = 512 << 10;
/// Chunks per streaming work item (`--piece` is `--chunk` times this).
const DEFAULT_PIECE_CHUNKS: usize = 1;

// ---------------------------------------------------------------------------
// Counting allocator: every call that asks the global allocator for memory.
// ---------------------------------------------------------------------------

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);
/// The largest single request so far (the bad-file tests check that no
/// size a header claims is allocated before it is checked).
static LARGEST_ALLOC: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to `System` unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        LARGEST_ALLOC.fetch_max(layout.size(), Relaxed);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        LARGEST_ALLOC.fetch_max(layout.size(), Relaxed);
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            ALLOCS.fetch_add(1, Relaxed);
            LARGEST_ALLOC.fetch_max(new_size, Relaxed);
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
    name: String,
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

/// The dtypes safetensors defines, with their sizes in bytes.
const DTYPES: &[(&str, usize)] = &[
    ("BOOL", 1),
    ("U8", 1),
    ("I8", 1),
    ("F8_E5M2", 1),
    ("F8_E4M3", 1),
    ("F8_E8M0", 1),
    ("I16", 2),
    ("U16", 2),
    ("F16", 2),
    ("BF16", 2),
    ("I32", 4),
    ("U32", 4),
    ("F32", 4),
    ("F64", 8),
    ("I64", 8),
    ("U64", 8),
];

/// safetensors' own limit on the JSON header.
const MAX_HEADER: u64 = 100_000_000;

/// Reads and checks the index of a safetensors file, tensors in file order.
/// Every problem is one line naming the file, the tensor (where there is
/// one) and what is wrong. Nothing is allocated at a size the file claims
/// before that size has been checked against the file's length.
fn read_index(path: &Path) -> Result<Vec<Tensor>, String> {
    let shown = path.display();
    let fail = |what: String| format!("{shown}: {what}");
    let file = File::open(path).map_err(|e| fail(format!("cannot open: {e}")))?;
    let file_len = file.metadata().map_err(|e| fail(format!("cannot stat: {e}")))?.len();
    if file_len == 0 {
        return Err(fail("empty file (0 bytes), not a safetensors file".into()));
    }
    if file_len < 8 {
        return Err(fail(format!("{file_len} bytes, too short for the 8-byte header length of a safetensors file")));
    }
    let mut len = [0u8; 8];
    file.read_exact_at(&mut len, 0).map_err(|e| fail(format!("cannot read the header length: {e}")))?;
    let header_len = u64::from_le_bytes(len);
    if header_len > file_len - 8 {
        return Err(fail(format!(
            "header length {header_len} runs past the end of the file ({file_len} bytes): not a safetensors file, or truncated"
        )));
    }
    if header_len > MAX_HEADER {
        return Err(fail(format!("header length {header_len} is over safetensors' limit of {MAX_HEADER} bytes")));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact_at(&mut header, 8).map_err(|e| fail(format!("cannot read the header: {e}")))?;
    let header: Value =
        serde_json::from_slice(&header).map_err(|e| fail(format!("header ({header_len} bytes) is not JSON: {e}")))?;
    let Value::Object(header) = header else {
        return Err(fail("header is JSON but not an object of tensors".into()));
    };
    let data_len = file_len - 8 - header_len;
    let base = 8 + header_len;
    // (start, end, tensor) in the data section, for the overlap check.
    let mut tensors = Vec::new();
    for (name, info) in &header {
        if name == "__metadata__" {
            continue;
        }
        let bad = |what: String| fail(format!("tensor `{name}`: {what}"));
        let Value::Object(info) = info else {
            return Err(bad("entry is not an object".into()));
        };
        let dtype = info.get("dtype").and_then(Value::as_str).ok_or_else(|| bad("no dtype".into()))?;
        let Some(&(_, size)) = DTYPES.iter().find(|d| d.0 == dtype) else {
            return Err(bad(format!("unknown dtype \"{dtype}\"")));
        };
        let shape: Vec<u64> = info
            .get("shape")
            .and_then(Value::as_array)
            .and_then(|s| s.iter().map(Value::as_u64).collect())
            .ok_or_else(|| bad("shape is not a list of non-negative integers".into()))?;
        let offsets: Vec<u64> = info
            .get("data_offsets")
            .and_then(Value::as_array)
            .and_then(|s| s.iter().map(Value::as_u64).collect())
            .filter(|o: &Vec<u64>| o.len() == 2)
            .ok_or_else(|| bad("data_offsets is not a pair of non-negative integers".into()))?;
        let (start, end) = (offsets[0], offsets[1]);
        if start > end {
            return Err(bad(format!("data_offsets [{start}, {end}] end before they start")));
        }
        if end > data_len {
            return Err(bad(format!(
                "data_offsets [{start}, {end}] run past the end of the data ({data_len} bytes after the header): file truncated?"
            )));
        }
        let need = shape.iter().try_fold(size as u64, |a, &d| a.checked_mul(d));
        if need != Some(end - start) {
            return Err(bad(format!(
                "data_offsets [{start}, {end}] hold {} bytes, but shape {shape:?} of {dtype} needs {}",
                end - start,
                need.map_or("more than 2^64".into(), |n| n.to_string())
            )));
        }
        tensors.push((
            start,
            end,
            Tensor { name: name.clone(), offset: base + start, len: (end - start) as usize, f32: dtype == "F32" },
        ));
    }
    tensors.sort_by_key(|t| (t.0, t.1));
    for w in tensors.windows(2) {
        let ((s0, e0, a), (s1, e1, b)) = (&w[0], &w[1]);
        if s1 < e0 {
            return Err(fail(format!(
                "tensor `{}`: data_offsets [{s1}, {e1}] overlap those of tensor `{}` [{s0}, {e0}]",
                b.name, a.name
            )));
        }
    }
    Ok(tensors.into_iter().map(|t| t.2).collect())
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

/// fp32 -> bf16 of `src` into `dst` (half its length). Returns four lanes
/// of a hash of `dst`: 32 input bytes -> 16 output bytes -> one u32 word per
/// lane, folded as `lane = lane.rotate_left(17) ^ word`; the elements after
/// the last whole 32 bytes go to lane 0 one by one.
#[inline(always)]
fn convert_f32(src: &[u8], dst: &mut [u8]) -> [u64; 4] {
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
    lanes
}

/// Copies `src` into `dst` and returns the fold `acc = acc.rotate_left(17)
/// ^ word` over its 8-byte words (the last one zero-padded), from 0.
#[inline(always)]
fn copy_words(src: &[u8], dst: &mut [u8]) -> u64 {
    dst.copy_from_slice(src);
    let mut acc = 0u64;
    for c in dst.chunks(8) {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        acc = acc.rotate_left(17) ^ u64::from_le_bytes(w);
    }
    acc
}

/// `x` as if `words` more words had been folded in after it: the fold is
/// linear (rotations distribute over xor), so a piece's lanes, rotated by
/// the number of words that follow it, xor into the whole's.
fn rotated(x: u64, words: usize) -> u64 {
    x.rotate_left(((17 * (words as u64)) % 64) as u32)
}

/// A tensor's hash from its lanes (the xor of its pieces' contributions).
fn finish_hash(t: &Tensor, lanes: [u64; 4]) -> u64 {
    if t.f32 {
        lanes.iter().fold(t.out_len() as u64, |acc, &l| mix(acc ^ l))
    } else {
        mix(rotated(t.len as u64, t.len.div_ceil(8)) ^ lanes[0])
    }
}

/// Converts (or copies) one whole tensor into `dst` and returns the hash of
/// `dst`'s bytes. The hash depends only on those bytes, not on who wrote
/// them or when, nor in how many pieces (see `convert_piece`).
fn convert(t: &Tensor, src: &[u8], dst: &mut [u8]) -> u64 {
    debug_assert_eq!(src.len(), t.len);
    debug_assert_eq!(dst.len(), t.out_len());
    if t.f32 {
        finish_hash(t, convert_f32(src, dst))
    } else {
        finish_hash(t, [copy_words(src, dst), 0, 0, 0])
    }
}

/// The streaming loaders' piece size must be a multiple of this: whole
/// fp32 elements, whole hash groups of 32 bytes (and whole 8-byte words).
const PIECE_ALIGN: usize = 32;

/// Converts bytes `start..start + src.len()` of tensor `t` (`start` a
/// multiple of `PIECE_ALIGN`, and so is the end unless it is the tensor's)
/// into `dst`, the matching part of its destination. Returns the piece's
/// contribution to the tensor's lanes: xor every piece's into zeroed lanes,
/// in any order, and `finish_hash` gives what `convert` gives.
fn convert_piece(t: &Tensor, start: usize, src: &[u8], dst: &mut [u8]) -> [u64; 4] {
    let end = start + src.len();
    debug_assert!(start % PIECE_ALIGN == 0 && (end % PIECE_ALIGN == 0 || end == t.len) && end <= t.len);
    if t.f32 {
        debug_assert_eq!(dst.len(), src.len() / 2);
        let lanes = convert_f32(src, dst);
        // Words that follow this piece in each lane: whole groups, and in
        // lane 0 the tail elements too unless this piece holds them.
        let after = t.len / 32 - end / 32;
        let tail = if end == t.len { 0 } else { t.len % 32 / 4 };
        [rotated(lanes[0], after + tail), rotated(lanes[1], after), rotated(lanes[2], after), rotated(lanes[3], after)]
    } else {
        debug_assert_eq!(dst.len(), src.len());
        [rotated(copy_words(src, dst), t.len.div_ceil(8) - end.div_ceil(8)), 0, 0, 0]
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
fn evict(file: &File) -> std::io::Result<()> {
    // SAFETY: plain syscall on an open descriptor.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        return Err(std::io::Error::other(format!(
            "posix_fadvise(DONTNEED): {}",
            std::io::Error::from_raw_os_error(rc)
        )));
    }
    Ok(())
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

/// Where a streaming loader stages its chunks.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Staging {
    /// One chunk-sized `Vec` per worker.
    Vec,
    /// `BufferPool::new()`.
    Zp,
    /// `BufferPool::builder().pinned_memory(true)`, otherwise default.
    ZpPinned,
    /// `BufferPool::builder().zeroing(Zeroing::Never)`, otherwise default.
    ZpNever,
}

/// How a streaming loader reads: what it tells the kernel.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Hint {
    /// Plain `pread`.
    Plain,
    /// `POSIX_FADV_SEQUENTIAL` on its descriptor (a larger read-ahead).
    Sequential,
    /// `POSIX_FADV_WILLNEED` on the chunk after the one it reads.
    WillNeed,
    /// `O_DIRECT` into page-aligned pooled buffers (no page cache).
    Direct,
}

/// The hint of the streaming rows in the default set (see the README for
/// the measurements that chose it).
const STREAM_HINT: Hint = Hint::Sequential;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    FreshVec,
    ReusedVec,
    Mmap {
        willneed: bool,
    },
    Upstream,
    UpstreamUninit,
    ZpDefault,
    Zp(Zeroing),
    ZpPinned,
    /// Tensors streamed through chunk-sized buffers.
    Stream(Staging, Hint),
}

/// (key, kind, name, in the default set).
const LOADERS: &[(&str, Kind, &str, bool)] = &[
    ("fresh-vec", Kind::FreshVec, "fresh `vec![0; n]` per tensor", true),
    ("reused-vec", Kind::ReusedVec, "one staging `Vec` per worker, grown", true),
    ("mmap", Kind::Mmap { willneed: false }, "`mmap`, convert from the mapping", true),
    ("mmap-willneed", Kind::Mmap { willneed: true }, "`mmap` + `MADV_WILLNEED`", true),
    ("upstream", Kind::Upstream, "upstream zeropool 0.7 `alloc` (zeroes)", true),
    ("upstream-uninit", Kind::UpstreamUninit, "upstream zeropool 0.7 `alloc_uninit`", true),
    ("zp-default", Kind::ZpDefault, "ZeroPool `BufferPool::new()` (`Always`)", true),
    ("zp-always", Kind::Zp(Zeroing::Always), "ZeroPool `Always`", true),
    ("zp-onput", Kind::Zp(Zeroing::OnPut), "ZeroPool `OnPut`", true),
    ("zp-never", Kind::Zp(Zeroing::Never), "ZeroPool `Never`", true),
    ("zp-pinned", Kind::ZpPinned, "ZeroPool `Always`, pinned", true),
    ("vec-chunk", Kind::Stream(Staging::Vec, STREAM_HINT), "streamed: one chunk `Vec` per worker", true),
    ("zp-stream", Kind::Stream(Staging::Zp, STREAM_HINT), "streamed: ZeroPool `new()` chunks (`Always`)", true),
    ("zp-stream-pinned", Kind::Stream(Staging::ZpPinned, STREAM_HINT), "streamed: ZeroPool chunks, pinned", true),
    // Experiments (`--loaders` only; the README reports them): zeroing's
    // share, and read-ahead.
    ("zp-stream-never", Kind::Stream(Staging::ZpNever, STREAM_HINT), "streamed: ZeroPool chunks, `Never`", false),
    ("zp-stream-plain", Kind::Stream(Staging::Zp, Hint::Plain), "streamed: ZeroPool, plain `pread`", false),
    ("zp-stream-seq", Kind::Stream(Staging::Zp, Hint::Sequential), "streamed: ZeroPool, `FADV_SEQUENTIAL`", false),
    (
        "zp-stream-willneed",
        Kind::Stream(Staging::Zp, Hint::WillNeed),
        "streamed: ZeroPool, `FADV_WILLNEED` next chunk",
        false,
    ),
    ("zp-stream-direct", Kind::Stream(Staging::Zp, Hint::Direct), "streamed: ZeroPool, `O_DIRECT`", false),
];

/// The destination model: one buffer per tensor, allocated and touched
/// once before any loader. Workers write disjoint byte ranges of it.
struct Dest {
    ptrs: Vec<(*mut u8, usize)>,
    _bufs: Vec<Vec<u8>>,
}

// SAFETY: the pointers are into `_bufs`, which nothing else touches; who
// may write which range at a time is `range`'s contract.
unsafe impl Send for Dest {}
unsafe impl Sync for Dest {}

impl Dest {
    fn new(tensors: &[Tensor]) -> Dest {
        let mut bufs: Vec<Vec<u8>> = tensors.iter().map(|t| vec![1u8; t.out_len()]).collect();
        let ptrs = bufs.iter_mut().map(|b| (b.as_mut_ptr(), b.len())).collect();
        Dest { ptrs, _bufs: bufs }
    }

    /// Bytes `start..start + len` of tensor `i`'s destination.
    ///
    /// # Safety
    /// No other reference to any of those bytes may exist while the slice
    /// lives. The loaders keep this by construction: one load runs at a
    /// time (the main thread waits for every worker to finish one before it
    /// starts the next), and within a load each tensor, or each chunk of
    /// it, is taken by exactly one worker from an atomic counter.
    #[allow(clippy::mut_from_ref)]
    unsafe fn range(&self, i: usize, start: usize, len: usize) -> &mut [u8] {
        let (p, n) = self.ptrs[i];
        assert!(start <= n && len <= n - start, "destination range out of bounds");
        // SAFETY: in bounds (checked); exclusive by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(p.add(start), len) }
    }
}

/// One streaming work item: bytes `start..end` of tensor `tensor`, read
/// and converted in chunks of `Ctx::chunk` bytes.
#[derive(Clone, Copy, Debug)]
struct Item {
    tensor: usize,
    start: usize,
    end: usize,
}

/// The streaming work items of a file: each tensor cut into pieces of
/// `piece` bytes (the last one shorter), in file order. A tensor no larger
/// than a piece is one item; a large one is many, which workers share.
fn work_items(tensors: &[Tensor], piece: usize) -> Vec<Item> {
    let mut items = Vec::new();
    for (i, t) in tensors.iter().enumerate() {
        let mut start = 0;
        while start < t.len {
            let end = t.len.min(start + piece);
            items.push(Item { tensor: i, start, end });
            start = end;
        }
    }
    items
}

/// What the loaders share: the file, its index, the destination model.
struct Ctx {
    path: PathBuf,
    file: File,
    file_len: usize,
    tensors: Vec<Tensor>,
    dest: Dest,
    threads: usize,
    /// ZeroPool's tuned idle budget (see `tuned_budget`).
    budget: usize,
    /// The streaming loaders' chunk: bytes per read (a multiple of
    /// `PIECE_ALIGN`).
    chunk: usize,
    /// The streaming work items (each up to `chunk * item_chunks` bytes).
    items: Vec<Item>,
}

impl Ctx {
    /// Checks the file's index and allocates the destination model (touched
    /// once, outside the timings).
    fn open(path: &Path, chunk: usize, piece: usize) -> std::io::Result<Ctx> {
        let tensors = read_index(path).map_err(std::io::Error::other)?;
        let file = File::open(path)?;
        let file_len = file.metadata()?.len() as usize;
        Ok(Ctx {
            path: path.to_path_buf(),
            dest: Dest::new(&tensors),
            items: work_items(&tensors, piece),
            tensors,
            file,
            file_len,
            threads: 1,
            budget: 0,
            chunk,
        })
    }
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
            Kind::Upstream | Kind::UpstreamUninit => PoolState::Upstream(
                zeropool_upstream::ZeroPool::new()
                    .tls_cache_size(auto.tls_cache_size.max(1))
                    .max_buffers_per_class(auto.num_shards * auto.max_buffers_per_shard)
                    .track_stats(true),
            ),
            Kind::ZpDefault | Kind::Stream(Staging::Zp, _) => PoolState::Zp(BufferPool::new()),
            Kind::Stream(Staging::ZpPinned, _) => {
                PoolState::Zp(BufferPool::builder().pinned_memory(true).build().expect("valid configuration"))
            }
            Kind::Stream(Staging::ZpNever, _) => {
                PoolState::Zp(BufferPool::builder().zeroing(Zeroing::Never).build().expect("valid configuration"))
            }
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

/// `pread` of exactly `buf.len()` bytes at `offset`, into memory that may
/// be uninitialized.
///
/// # Safety
/// `buf` must be valid for writes of `len` bytes.
unsafe fn pread_exact(file: &File, buf: *mut u8, len: usize, offset: u64) -> std::io::Result<()> {
    let mut done = 0;
    while done < len {
        // SAFETY: `buf + done .. buf + len` is writable (the caller's contract).
        let n = unsafe {
            libc::pread(file.as_raw_fd(), buf.add(done).cast(), len - done, (offset + done as u64) as libc::off_t)
        };
        match n {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n if n < 0 => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            n => done += n as usize,
        }
    }
    Ok(())
}

const PAGE: usize = 4096;

/// `O_DIRECT` read of file bytes `offset..offset + len` into `buf`, which
/// must be page-aligned and hold the page-aligned span around them (`len +
/// 2 * PAGE` is enough). Returns where in `buf` the bytes start.
fn read_direct(file: &File, buf: &mut [u8], offset: u64, len: usize) -> std::io::Result<usize> {
    if buf.as_ptr() as usize % PAGE != 0 {
        return Err(std::io::Error::other("O_DIRECT needs a page-aligned buffer"));
    }
    let first = offset & !(PAGE as u64 - 1);
    let skip = (offset - first) as usize;
    let span = (skip + len).next_multiple_of(PAGE);
    let buf = &mut buf[..span];
    let mut done = 0;
    while done < skip + len {
        match file.read_at(&mut buf[done..], first + done as u64) {
            // The file's end: the aligned span may run past it.
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(skip)
}

/// One worker's part of a whole-tensor load: tensors from the shared
/// counter until none are left. Returns the sum of their checksum terms.
fn work(
    kind: Kind,
    ctx: &Ctx,
    pool: &PoolState,
    next: &AtomicUsize,
    map: Option<&[u8]>,
    staging: &mut Vec<u8>,
) -> std::io::Result<u64> {
    let mut sum = 0u64;
    loop {
        let i = next.fetch_add(1, Relaxed);
        let Some(t) = ctx.tensors.get(i) else { break };
        // SAFETY: tensor `i` is this worker's alone in this load (the counter).
        let dst = unsafe { ctx.dest.range(i, 0, t.out_len()) };
        let read = |buf: &mut [u8]| ctx.file.read_exact_at(buf, t.offset);
        let hash = match (kind, pool) {
            (Kind::FreshVec, _) => {
                let mut buf = vec![0u8; t.len];
                read(&mut buf)?;
                convert(t, &buf, dst)
            }
            (Kind::ReusedVec, _) => {
                if staging.len() < t.len {
                    staging.resize(t.len, 0);
                }
                let buf = &mut staging[..t.len];
                read(buf)?;
                convert(t, buf, dst)
            }
            (Kind::Mmap { .. }, _) => {
                let bytes = map.expect("mapped");
                convert(t, &bytes[t.offset as usize..t.offset as usize + t.len], dst)
            }
            (Kind::Upstream, PoolState::Upstream(p)) => {
                let mut buf = p.alloc(t.len);
                read(&mut buf)?;
                convert(t, &buf, dst)
            }
            (Kind::UpstreamUninit, PoolState::Upstream(p)) => {
                let mut buf = p.alloc_uninit(t.len);
                let raw = buf.as_uninit_mut();
                // SAFETY: `raw` is `t.len` writable bytes.
                unsafe { pread_exact(&ctx.file, raw.as_mut_ptr().cast(), raw.len(), t.offset)? };
                // SAFETY: the read filled every byte.
                let buf = unsafe { buf.assume_init() };
                convert(t, &buf, dst)
            }
            (_, PoolState::Zp(p)) => {
                let mut buf = p.get(t.len);
                read(&mut buf)?;
                let h = convert(t, &buf, dst);
                p.put(buf);
                h
            }
            _ => unreachable!("loader without its state"),
        };
        sum = sum.wrapping_add(tensor_term(i, hash));
    }
    Ok(sum)
}

/// One worker's part of a streaming load: work items from the shared
/// counter, each read `chunk` bytes at a time into a staging buffer (got
/// from the pool and given back per chunk, or the worker's own `Vec`) and
/// converted into its place in the destination. Each chunk's hash
/// contribution is xored into its tensor's lanes.
#[allow(clippy::too_many_arguments)]
fn stream_work(
    staging: Staging,
    hint: Hint,
    ctx: &Ctx,
    file: &File,
    pool: &PoolState,
    next: &AtomicUsize,
    lanes: &[[AtomicU64; 4]],
    reads: &AtomicUsize,
    own: &mut Vec<u8>,
) -> std::io::Result<()> {
    let chunk = ctx.chunk;
    let slop = if hint == Hint::Direct { 2 * PAGE } else { 0 };
    loop {
        let w = next.fetch_add(1, Relaxed);
        let Some(item) = ctx.items.get(w) else { break };
        let t = &ctx.tensors[item.tensor];
        let mut start = item.start;
        while start < item.end {
            let n = chunk.min(item.end - start);
            let offset = t.offset + start as u64;
            if hint == Hint::WillNeed {
                let ahead = offset + n as u64;
                if ahead < ctx.file_len as u64 {
                    // SAFETY: plain syscall on an open descriptor; a hint.
                    unsafe {
                        libc::posix_fadvise(file.as_raw_fd(), ahead as i64, chunk as i64, libc::POSIX_FADV_WILLNEED)
                    };
                }
            }
            let (ds, dl) = if t.f32 { (start / 2, n / 2) } else { (start, n) };
            // SAFETY: this chunk of this tensor is this worker's alone in this
            // load (items are disjoint and taken from the counter).
            let dst = unsafe { ctx.dest.range(item.tensor, ds, dl) };
            let mut run = |buf: &mut [u8]| -> std::io::Result<[u64; 4]> {
                let at = if hint == Hint::Direct {
                    read_direct(file, buf, offset, n)?
                } else {
                    file.read_exact_at(&mut buf[..n], offset)?;
                    0
                };
                Ok(convert_piece(t, start, &buf[at..at + n], dst))
            };
            let part = match (staging, pool) {
                (Staging::Vec, _) => {
                    if own.len() < chunk + slop {
                        own.resize(chunk + slop, 0);
                    }
                    run(own)?
                }
                (_, PoolState::Zp(p)) => {
                    let mut buf = p.get(n + slop);
                    let part = run(&mut buf);
                    p.put(buf);
                    part?
                }
                _ => unreachable!("streaming loader without its pool"),
            };
            reads.fetch_add(1, Relaxed);
            for (lane, v) in lanes[item.tensor].iter().zip(part) {
                if v != 0 {
                    lane.fetch_xor(v, Relaxed);
                }
            }
            start += n;
        }
    }
    Ok(())
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
    /// Streaming loaders: their own descriptor (their read-ahead state and
    /// hints are theirs), and each tensor's hash lanes for this load.
    file: Option<File>,
    lanes: Vec<[AtomicU64; 4]>,
    /// Streaming loaders: chunks read in this load.
    reads: AtomicUsize,
    /// The first error a worker met in this load.
    error: Mutex<Option<std::io::Error>>,
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

/// Opens the file for a streaming loader, with its hint.
fn open_for(path: &Path, hint: Hint) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    if hint == Hint::Direct {
        o.custom_flags(libc::O_DIRECT);
    }
    let file = o.open(path)?;
    if hint == Hint::Sequential {
        // SAFETY: plain syscall on an open descriptor.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL) };
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
    }
    Ok(file)
}

impl<'a> Runner<'a> {
    fn new(key: &'static str, kind: Kind, ctx: &'a Ctx) -> std::io::Result<Runner<'a>> {
        let file = match kind {
            Kind::Stream(_, hint) => Some(open_for(&ctx.path, hint)?),
            _ => None,
        };
        Ok(Runner {
            key,
            kind,
            ctx,
            pool: PoolState::new(kind, ctx),
            next: AtomicUsize::new(0),
            sum: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            mapping: RwLock::new(None),
            barrier: Barrier::new(ctx.threads + 1),
            file,
            lanes: ctx.tensors.iter().map(|_| Default::default()).collect(),
            reads: AtomicUsize::new(0),
            error: Mutex::new(None),
        })
    }

    /// The body of each of its `ctx.threads` worker threads.
    fn worker(&self) {
        let mut staging = Vec::new();
        loop {
            self.barrier.wait();
            if self.stop.load(Relaxed) {
                break;
            }
            let result = match self.kind {
                Kind::Stream(staging_kind, hint) => stream_work(
                    staging_kind,
                    hint,
                    self.ctx,
                    self.file.as_ref().unwrap_or(&self.ctx.file),
                    &self.pool,
                    &self.next,
                    &self.lanes,
                    &self.reads,
                    &mut staging,
                )
                .map(|()| 0),
                _ => {
                    let map = self.mapping.read().unwrap();
                    work(self.kind, self.ctx, &self.pool, &self.next, map.as_ref().map(Mapping::bytes), &mut staging)
                }
            };
            match result {
                Ok(part) => {
                    self.sum.fetch_add(part, Relaxed);
                }
                Err(e) => {
                    // Stop the others early: nothing left to take.
                    self.next.store(usize::MAX / 2, Relaxed);
                    self.error.lock().unwrap().get_or_insert(e);
                }
            }
            self.barrier.wait();
        }
    }

    /// One load of the whole file by its workers, timed from the main thread.
    fn load(&self, evicted: bool) -> std::io::Result<Load> {
        if evicted {
            evict(&self.ctx.file)?;
        }
        let resident_before = resident_fraction(&self.ctx.file, self.ctx.file_len);
        self.next.store(0, Relaxed);
        self.sum.store(0, Relaxed);
        self.reads.store(0, Relaxed);
        for l in self.lanes.iter().flatten() {
            l.store(0, Relaxed);
        }
        let (a0, p0) = (ALLOCS.load(Relaxed), self.pool.system_allocations());
        let f0 = minor_faults();
        let start = Instant::now();
        if let Kind::Mmap { willneed } = self.kind {
            *self.mapping.write().unwrap() = Some(Mapping::new(&self.ctx.file, self.ctx.file_len, willneed));
        }
        self.barrier.wait(); // go
        self.barrier.wait(); // done
        self.mapping.write().unwrap().take(); // munmap
        if let Kind::Stream(..) = self.kind {
            let sum = self.ctx.tensors.iter().zip(&self.lanes).enumerate().fold(0u64, |acc, (i, (t, l))| {
                acc.wrapping_add(tensor_term(i, finish_hash(t, l.each_ref().map(|a| a.load(Relaxed)))))
            });
            self.sum.store(sum, Relaxed);
        }
        let ms = start.elapsed().as_secs_f64() * 1e3;
        if let Some(e) = self.error.lock().unwrap().take() {
            return Err(std::io::Error::new(
                e.kind(),
                format!("{}: loader {}: reading the tensors: {e}", self.ctx.path.display(), self.key),
            ));
        }
        let faults = minor_faults() - f0;
        let allocs = match (&self.pool, self.kind) {
            // ZeroPool maps its buffers itself; count those, not the
            // allocator calls of its bookkeeping.
            (PoolState::Zp(_), _) => self.pool.system_allocations() - p0,
            (_, Kind::Mmap { .. }) => ALLOCS.load(Relaxed) - a0 + 1,
            _ => ALLOCS.load(Relaxed) - a0,
        };
        Ok(Load { ms, allocs, faults, checksum: self.sum.load(Relaxed), resident_before })
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

fn memory_pass(key: &'static str, kind: Kind, ctx: &Ctx, loads: usize, evicted: bool) -> std::io::Result<MemoryPass> {
    let r = Runner::new(key, kind, ctx)?;
    let state = if evicted { "evicted" } else { "warm" };
    std::thread::scope(|s| {
        let peak_ok = reset_peak_rss();
        let base_rss = status_kb("VmRSS:").map(|k| k * 1024);
        for _ in 0..ctx.threads {
            s.spawn(|| r.worker());
        }
        let mut out = MemoryPass { loads: vec![], peak_rss: None, held_rss: None, pool_idle: None, pin_failures: None };
        let mut loaded = || -> std::io::Result<()> {
            for i in 0..loads {
                eprint!("\r  [{state}, {} threads] memory pass: {key:<18} load {}/{loads}   ", ctx.threads, i + 1);
                out.loads.push(r.load(evicted)?);
            }
            Ok(())
        };
        let result = loaded();
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
                if matches!(kind, Kind::ZpPinned | Kind::Stream(Staging::ZpPinned, _)) {
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
        result.map(|()| out)
    })
}

/// The timing pass: every loader's state and workers alive at once, one
/// untimed load each to warm them, then `rounds` rounds in which every
/// loader loads once, in an order that rotates, so that whatever else the
/// machine is doing falls on all loaders alike. Returns each loader's loads.
fn timing_pass(
    loaders: &[(&'static str, Kind)],
    ctx: &Ctx,
    rounds: usize,
    evicted: bool,
) -> std::io::Result<Vec<Vec<Load>>> {
    let runners: Vec<Runner> =
        loaders.iter().map(|&(key, kind)| Runner::new(key, kind, ctx)).collect::<Result<_, _>>()?;
    let state = if evicted { "evicted" } else { "warm" };
    std::thread::scope(|s| {
        for r in &runners {
            for _ in 0..ctx.threads {
                s.spawn(|| r.worker());
            }
        }
        let timed = || -> std::io::Result<Vec<Vec<Load>>> {
            for r in &runners {
                eprint!("\r  [{state}, {} threads] timing pass: warming {:<18}      ", ctx.threads, r.key);
                r.load(evicted)?;
            }
            let mut out: Vec<Vec<Load>> = runners.iter().map(|_| vec![]).collect();
            for round in 0..rounds {
                eprint!(
                    "\r  [{state}, {} threads] timing pass: round {}/{rounds}                    ",
                    ctx.threads,
                    round + 1
                );
                for k in 0..runners.len() {
                    let i = (round + k) % runners.len();
                    out[i].push(runners[i].load(evicted)?);
                }
            }
            Ok(out)
        };
        let out = timed();
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
fn reference_checksum(ctx: &Ctx) -> std::io::Result<u64> {
    let mut sum = 0u64;
    for (i, t) in ctx.tensors.iter().enumerate() {
        let mut buf = vec![0u8; t.len];
        ctx.file.read_exact_at(&mut buf, t.offset).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("{}: tensor `{}`: cannot read its data: {e}", ctx.path.display(), t.name),
            )
        })?;
        let mut dst = vec![0u8; t.out_len()];
        sum = sum.wrapping_add(tensor_term(i, convert(t, &buf, &mut dst)));
    }
    Ok(sum)
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
    /// The streaming loaders' chunk (bytes per read) and work item size.
    chunk: usize,
    piece: usize,
    json: bool,
    markdown: bool,
    update_readme: Option<PathBuf>,
    from_json: Option<PathBuf>,
    /// Write the synthetic file there and stop.
    write: Option<PathBuf>,
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
        loaders: LOADERS.iter().filter(|l| l.3).map(|l| l.0.to_string()).collect(),
        chunk: DEFAULT_CHUNK,
        piece: 0,
        json: false,
        markdown: false,
        update_readme: None,
        from_json: None,
        write: None,
        command: std::iter::once("cargo run --release --example checkpoint_load".to_string())
            .chain((!args.is_empty()).then(|| format!("-- {}", args.join(" "))))
            .collect::<Vec<_>>()
            .join(" "),
    };
    let mut it = args.iter();
    let num = |v: Option<&String>, name: &str| -> Result<usize, String> {
        v.and_then(|s| s.parse().ok()).filter(|&n| n > 0).ok_or(format!("{name} needs a positive number"))
    };
    // Bytes, with an optional K or M suffix (KiB, MiB); whole elements and
    // hash groups (`PIECE_ALIGN`).
    let size = |v: Option<&String>, name: &str| -> Result<usize, String> {
        let err = || format!("{name} needs a size in bytes (K, M suffixes allowed), a multiple of {PIECE_ALIGN}");
        let v = v.ok_or_else(err)?;
        let (digits, unit) = match v.strip_suffix(['K', 'k']) {
            Some(d) => (d, 1024),
            None => v.strip_suffix(['M', 'm']).map_or((v.as_str(), 1), |d| (d, MIB)),
        };
        digits
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_mul(unit))
            .filter(|&n| n > 0 && n % PIECE_ALIGN == 0)
            .ok_or_else(err)
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
            "--chunk" => o.chunk = size(it.next(), "--chunk")?,
            "--piece" => o.piece = size(it.next(), "--piece")?,
            "--model" => {
                o.model =
                    it.next().filter(|m| *m == "gpt2" || *m == "tiny").ok_or("--model takes gpt2 or tiny")?.clone()
            }
            "--json" => o.json = true,
            "--markdown" => o.markdown = true,
            "--update-readme" => o.update_readme = Some(it.next().ok_or("--update-readme needs a file")?.into()),
            "--from-json" => o.from_json = Some(it.next().ok_or("--from-json needs a file")?.into()),
            "--write" => o.write = Some(it.next().ok_or("--write needs a file")?.into()),
            "-h" | "--help" => return Err(String::new()),
            s if s.starts_with("--") => return Err(format!("unknown option {s}")),
            s => o.path = Some(s.into()),
        }
    }
    if o.piece == 0 {
        o.piece = o.chunk * DEFAULT_PIECE_CHUNKS;
    }
    if o.piece % o.chunk != 0 {
        return Err("--piece must be a multiple of --chunk".into());
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
    let result = measure_file(o, &path, synthetic);
    if synthetic {
        let _ = std::fs::remove_dir_all(&temp);
    }
    result
}

/// `measure` on one file.
fn measure_file(o: &Opts, path: &Path, synthetic: bool) -> std::io::Result<Value> {
    let mut ctx = Ctx::open(path, o.chunk, o.piece)?;
    let total: usize = ctx.tensors.iter().map(|t| t.len).sum();
    let largest = ctx.tensors.iter().map(|t| t.len).max().unwrap_or(0);
    eprintln!(
        "{}: {} tensors, {:.1} MB, largest {:.1} MB; {:?} worker threads",
        path.display(),
        ctx.tensors.len(),
        total as f64 / 1e6,
        largest as f64 / 1e6,
        o.threads
    );
    let load_before = loadavg();
    eprintln!("  reference checksum (one thread, plain reads; also warms the cache)...");
    let reference = reference_checksum(&ctx)?;

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
            reference_checksum(&ctx)?;
        }
        let selected: Vec<&(&'static str, Kind, &str, bool)> =
            LOADERS.iter().filter(|l| o.loaders.iter().any(|k| k == l.0)).collect();
        let mem: Vec<MemoryPass> =
            selected.iter().map(|l| memory_pass(l.0, l.1, &ctx, o.memory_loads, evicted)).collect::<Result<_, _>>()?;
        eprintln!();
        let keys: Vec<(&'static str, Kind)> = selected.iter().map(|l| (l.0, l.1)).collect();
        let timed = timing_pass(&keys, &ctx, rounds, evicted)?;
        for ((&&(key, _, name, _), m), t) in selected.iter().zip(&mem).zip(&timed) {
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
        "chunk_bytes": o.chunk,
        "piece_bytes": o.piece,
        "rounds": {"warm": o.rounds, "evicted": o.evicted_rounds, "memory_loads": o.memory_loads},
        "zeropool_auto": {"tls_cache_size": auto.tls_cache_size, "num_shards": auto.num_shards, "max_buffers_per_shard": auto.max_buffers_per_shard},
        "reference_checksum": format!("{reference:016x}"),
        "results": results,
    }))
}

// ---------------------------------------------------------------------------
// Rendering: markdown tables and the generated comparison.
// ---------------------------------------------------------------------------

/// Megabytes: one decimal under 10 MB (a chunk per worker), none above.
fn mb(v: &Value) -> String {
    v.as_f64().map_or("n/a".into(), |b| if b < 10e6 { format!("{:.1}", b / 1e6) } else { format!("{:.0}", b / 1e6) })
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
         `tls_cache_size` and `max_buffers_per_class`. The streamed rows read {} KiB chunks \
         (work items of {} KiB, so that workers share large tensors) and convert each into its place.\n",
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
        report["chunk_bytes"].as_u64().unwrap_or(0) >> 10,
        report["piece_bytes"].as_u64().unwrap_or(0) >> 10,
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
    s += "\n";
    s += &checksum_sentence(report);
    s += " Peak RSS: `VmHWM` (reset through \
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
/// contradict its own table. Time ratios are "a's median over b's": below
/// 1 is faster.
fn summary(rows: &[&Value], cache: &str, first: bool) -> String {
    let mut s = String::from("\n");
    let name = |r: &Value| r["name"].as_str().unwrap_or("?").to_string();
    let t = |a: &Value, b: &Value| format!("{:.2}x", ms(a) / ms(b));
    let mbv = |r: &Value, k: &str| r[k].as_f64().unwrap_or(f64::NAN) / 1e6;
    if let Some(f) = rows.iter().min_by(|a, b| ms(a).total_cmp(&ms(b))) {
        s += &format!("Fastest here: {} at {:.1} ms.", name(f), ms(f));
    }
    // Streaming against the whole-tensor loaders and its own baseline.
    if let Some(z) = row(rows, "zp-stream") {
        s += &format!(" Streamed through `BufferPool::new()` chunks: {:.1} ms", ms(z));
        let mut cmp = vec![];
        for (key, what) in [
            ("mmap", "`mmap`'s"),
            ("mmap-willneed", "`mmap` + `MADV_WILLNEED`'s"),
            ("reused-vec", "the whole-tensor reused `Vec`'s"),
            ("vec-chunk", "one chunk `Vec` per worker's"),
        ] {
            if let Some(b) = row(rows, key) {
                cmp.push(format!("{} {what} time", t(z, b)));
            }
        }
        if !cmp.is_empty() {
            s += &format!(", {}", cmp.join(", "));
        }
        if let Some(v) = row(rows, "reused-vec") {
            let (zp, vp) = (mbv(z, "peak_rss_bytes"), mbv(v, "peak_rss_bytes"));
            s += &format!(
                "; peak RSS {:.1} MB against the reused `Vec`'s {:.0} MB (1/{:.0})",
                zp,
                vp,
                if zp > 0.0 { vp / zp } else { f64::INFINITY }
            );
        }
        s += ".";
        if let Some(n) = row(rows, "zp-stream-never") {
            s += &format!(" Zeroing's share: `Never` chunks take {} of `Always`'s time.", t(n, z));
        }
        if let Some(p) = row(rows, "zp-stream-pinned") {
            s += &format!(
                " Pinned chunks: {} of the unpinned chunks' time, {} pin failure(s), peak RSS {:.1} MB.",
                t(p, z),
                p["pin_failures"].as_u64().map_or("?".into(), |n| n.to_string()),
                mbv(p, "peak_rss_bytes")
            );
        }
    }
    // Whole-tensor staging: the best ZeroPool row against the others.
    let whole_zp =
        |r: &&Value| r["loader"].as_str().is_some_and(|k| k.starts_with("zp-") && !k.starts_with("zp-stream"));
    if let Some(z) = rows.iter().copied().filter(whole_zp).min_by(|a, b| ms(a).total_cmp(&ms(b))) {
        s += &format!(" Whole tensors: the best ZeroPool row, {}, at {:.1} ms", name(z), ms(z));
        let mut cmp = vec![];
        for (key, what) in
            [("fresh-vec", "a fresh `vec!` per tensor"), ("reused-vec", "the reused `Vec`"), ("mmap", "`mmap`")]
        {
            if let Some(b) = row(rows, key) {
                cmp.push(format!("{} the time of {what}", t(z, b)));
            }
        }
        s += &format!("{}{}.", if cmp.is_empty() { "" } else { ": " }, cmp.join(", "));
    }
    // Like with like against upstream: zeroing with zeroing, none with none.
    let mut like = vec![];
    for (zk, uk, what) in [
        ("zp-always", "upstream", "zeroing: ZeroPool `Always` against upstream's `alloc`"),
        ("zp-never", "upstream-uninit", "not zeroing: ZeroPool `Never` against upstream's `alloc_uninit`"),
    ] {
        if let (Some(z), Some(u)) = (row(rows, zk), row(rows, uk)) {
            like.push(format!("{what}, {} ({:.1} / {:.1} ms)", t(z, u), ms(z), ms(u)));
        }
    }
    if !like.is_empty() {
        s += &format!(" Against upstream 0.7, like with like: {}.", like.join("; "));
    }
    if let (Some(z), Some(v)) = (row(rows, "zp-always"), row(rows, "reused-vec")) {
        s += &format!(
            " After the load, whole-tensor ZeroPool `Always` holds {} MB idle (RSS {} MB), the reused `Vec`s {} MB.",
            mb(&z["pool_idle_bytes"]),
            mb(&z["held_rss_bytes"]),
            mb(&v["held_rss_bytes"])
        );
    }
    if let Some(d) = row(rows, "zp-default") {
        s += &format!(
            " `BufferPool::new()` staging whole tensors makes {} system allocation(s) per later load.",
            d["allocations_later_median"].as_f64().map_or("?".into(), |a| format!("{a:.0}"))
        );
    }
    if cache == "warm" && first {
        if let (Some(f), Some(v), Some(a), Some(n)) =
            (row(rows, "fresh-vec"), row(rows, "reused-vec"), row(rows, "zp-always"), row(rows, "zp-never"))
        {
            s += &format!(
                " The seeds' claim (GPT-2: 200 -> 53 ms, 3.8x, \"70% of the time was buffer allocation\") \
                 was made against a fresh allocation per tensor: here {:.1} ms (fresh `vec!`) -> {:.1} ms \
                 (ZeroPool `Always`, whole tensors), {:.2}x, or {:.1} ms with `Never`, {:.2}x{}. Against the \
                 reused `Vec` a careful programmer writes the same rows take {} and {} of its time. \
                 Allocation and first-touch page faults (fresh `vec!` minus reused `Vec`) are {:.0}% of the \
                 fresh-`vec!` load here (the seeds said 70%).",
                ms(f),
                ms(a),
                ms(f) / ms(a),
                ms(n),
                ms(f) / ms(n),
                row(rows, "zp-stream").map_or(String::new(), |z| format!(
                    "; streamed, {:.1} ms, {:.2}x",
                    ms(z),
                    ms(f) / ms(z)
                )),
                t(a, v),
                t(n, v),
                (ms(f) - ms(v)) / ms(f) * 100.0
            );
        }
    }
    s + "\n"
}

/// The sentence on checksums, from the results.
fn checksum_sentence(report: &Value) -> String {
    let results: Vec<&Value> = report["results"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
    let bad: Vec<String> = results
        .iter()
        .filter(|r| r["checksums_match"] != true)
        .map(|r| {
            format!(
                "{} ({}, {} threads)",
                r["loader"].as_str().unwrap_or("?"),
                r["cache"].as_str().unwrap_or("?"),
                r["threads"]
            )
        })
        .collect();
    if bad.is_empty() {
        format!(
            "Every loader's checksum of the converted tensors matched the single-threaded reference, in all \
             {} rows and every load of each.",
            results.len()
        )
    } else {
        format!("**CHECKSUM MISMATCH** against the single-threaded reference: {}.", bad.join(", "))
    }
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
    real_main(std::env::args().skip(1).collect())
}

/// The whole program; exits with 1 on any error (one line on stderr), 2 on
/// a bad command line.
fn real_main(args: Vec<String>) {
    let o = match parse(&args) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("checkpoint_load: {e}");
            }
            eprintln!(
                "usage: checkpoint_load [FILE.safetensors] [--threads N[,M..]] [--rounds N] [--evicted-rounds N] \
                 [--memory-loads N] [--cache warm|evicted|both] [--loaders a,b] [--chunk BYTES] [--piece BYTES] \
                 [--model gpt2|tiny] [--json] [--markdown] [--update-readme FILE] [--from-json FILE] [--write FILE]"
            );
            std::process::exit(2);
        }
    };
    let fail = |e: String| -> ! {
        eprintln!("checkpoint_load: {e}");
        std::process::exit(1)
    };
    if let Some(p) = &o.write {
        if let Err(e) = write_synthetic(p, &o.model) {
            fail(format!("{}: {e}", p.display()));
        }
        return;
    }
    let report: Value = match &o.from_json {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| e.to_string())
            .and_then(|s| serde_json::from_str(&s).map_err(|e| format!("not a --json report: {e}")))
            .unwrap_or_else(|e| fail(format!("{}: {e}", p.display()))),
        None => measure(&o).unwrap_or_else(|e| fail(e.to_string())),
    };
    let mismatched: Vec<String> = report["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["checksums_match"] != true)
        .map(|r| format!("{} ({}, {} threads)", r["loader"].as_str().unwrap_or("?"), r["cache"], r["threads"]))
        .collect();
    let md = markdown(&report);
    if o.json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap());
    }
    if o.markdown || (!o.json && o.update_readme.is_none()) {
        println!("{md}");
    }
    if !mismatched.is_empty() {
        let which = mismatched.join(", ");
        if let Some(p) = &o.update_readme {
            fail(format!("checksum mismatch in {which}: {} left as it was", p.display()));
        }
        fail(format!("checksum mismatch in {which}"));
    }
    if let Some(p) = &o.update_readme {
        update_readme(p, &md).unwrap_or_else(|e| fail(e.to_string()));
        eprintln!("updated {}", p.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

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

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    /// Every loader, the read-ahead experiments included, both cache
    /// states, on a few MB: the same checksum.
    #[test]
    fn every_loader_produces_the_same_checksum() {
        let all: Vec<&str> = LOADERS.iter().map(|l| l.0).collect();
        let all = all.join(",");
        let o = parse(&args(&[
            "--model",
            "tiny",
            "--threads",
            "2",
            "--rounds",
            "1",
            "--evicted-rounds",
            "1",
            "--memory-loads",
            "2",
            "--chunk",
            "64K",
            "--loaders",
            &all,
        ]))
        .unwrap();
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
        assert!(md.contains("Every loader's checksum"), "the sentence comes from the results");
    }

    /// A temporary directory of its own per test.
    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("zeropool-ckpt-test-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A safetensors file: the 8-byte length, `header`, `data`.
    fn file_with(dir: &Path, name: &str, header: &[u8], data: &[u8]) -> PathBuf {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(data);
        raw_file(dir, name, &bytes)
    }

    fn raw_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// (name, dtype, shape, bytes) in order, packed; the header says where.
    fn safetensors(dir: &Path, name: &str, tensors: &[(&str, &str, Vec<usize>, Vec<u8>)]) -> PathBuf {
        let mut header = serde_json::Map::new();
        header.insert("__metadata__".into(), json!({"format": "pt"}));
        let mut data = Vec::new();
        for (n, dtype, shape, bytes) in tensors {
            header.insert(
                n.to_string(),
                json!({"dtype": dtype, "shape": shape, "data_offsets": [data.len(), data.len() + bytes.len()]}),
            );
            data.extend_from_slice(bytes);
        }
        file_with(dir, name, &serde_json::to_vec(&Value::Object(header)).unwrap(), &data)
    }

    /// Runs the program's `main` in a child process (this test binary,
    /// re-executed to run only `child_main`, which reads the arguments from
    /// the environment): its exit status and stderr.
    fn run_main(a: &[&str]) -> (Option<i32>, String) {
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["tests::child_main", "--exact", "--nocapture", "--test-threads=1", "-q"])
            .env("CHECKPOINT_LOAD_MAIN_ARGS", a.join("\u{1f}"))
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    #[test]
    fn child_main() {
        if let Ok(a) = std::env::var("CHECKPOINT_LOAD_MAIN_ARGS") {
            real_main(a.split('\u{1f}').map(String::from).collect());
            std::process::exit(0);
        }
    }

    /// One bad file: `read_index` fails with a message naming the file and
    /// `tensor` (if any) and containing `problem`, without allocating what
    /// the header claims; and the program itself says that in one line on
    /// stderr and exits with status 1, without panicking.
    fn rejects(path: &Path, tensor: Option<&str>, problem: &str) {
        let err = read_index(path).expect_err("a bad file must be refused");
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(err.contains(name), "{err:?} does not name the file");
        if let Some(t) = tensor {
            assert!(err.contains(&format!("tensor `{t}`")), "{err:?} does not name tensor {t}");
        }
        assert!(err.contains(problem), "{err:?} does not say {problem:?}");
        assert!(!err.contains('\n'), "{err:?} is more than one line");
        // Every claim in these files is 64 MB or more; the tests that run
        // beside this one allocate at most a few MB at a time.
        assert!(LARGEST_ALLOC.load(Relaxed) < 48 * MIB, "allocated what a header claimed");

        let (code, stderr) = run_main(&[path.to_str().unwrap(), "--cache", "warm", "--rounds", "1"]);
        assert_eq!(code, Some(1), "exit status for {name}; stderr: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines, [format!("checkpoint_load: {err}")], "stderr for {name}");
    }

    fn f32s(n: usize) -> Vec<u8> {
        (0..n).flat_map(|i| (i as f32 * 0.25 - 3.0).to_le_bytes()).collect()
    }

    #[test]
    fn bad_files_are_one_line_each_and_exit_1() {
        let d = temp_dir("bad");
        let big = 64 * MIB as u64;
        rejects(&raw_file(&d, "empty.safetensors", b""), None, "empty file");
        rejects(&raw_file(&d, "short.safetensors", b"\x05\0\0"), None, "too short");
        // The header length claims 64 MB and then 1 TB of a 20-byte file.
        let mut claim = big.to_le_bytes().to_vec();
        claim.extend_from_slice(b"{\"a\":1}");
        rejects(&raw_file(&d, "header-past-end.safetensors", &claim), None, "runs past the end of the file");
        let mut claim = (1u64 << 40).to_le_bytes().to_vec();
        claim.extend_from_slice(b"{}");
        rejects(&raw_file(&d, "header-huge.safetensors", &claim), None, "runs past the end of the file");
        rejects(&file_with(&d, "not-json.safetensors", b"{\"a\": [1, 2", &[]), None, "is not JSON");
        rejects(&file_with(&d, "not-object.safetensors", b"[1, 2, 3]", &[]), None, "not an object");
        // Offsets out of range: a claim of 64 MB, and of almost 2^64 bytes.
        let h = format!(r#"{{"w": {{"dtype": "F32", "shape": [{}], "data_offsets": [0, {big}]}}}}"#, big / 4);
        rejects(&file_with(&d, "offsets-past-end.safetensors", h.as_bytes(), &f32s(4)), Some("w"), "run past the end");
        let h = r#"{"w": {"dtype": "U8", "shape": [1], "data_offsets": [18446744073709551614, 18446744073709551615]}}"#;
        rejects(&file_with(&d, "offsets-huge.safetensors", h.as_bytes(), &f32s(4)), Some("w"), "run past the end");
        let h = r#"{"w": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}}"#;
        rejects(&file_with(&d, "offsets-reversed.safetensors", h.as_bytes(), &f32s(4)), Some("w"), "end before");
        let h = r#"{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                    "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}"#;
        rejects(&file_with(&d, "overlap.safetensors", h.as_bytes(), &f32s(6)), Some("b"), "overlap");
        let h = r#"{"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}"#;
        rejects(&file_with(&d, "shape-mismatch.safetensors", h.as_bytes(), &f32s(4)), Some("w"), "needs 12");
        let h = r#"{"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 16]}}"#;
        rejects(&file_with(&d, "shape-overflow.safetensors", h.as_bytes(), &f32s(4)), Some("w"), "more than 2^64");
        let h = r#"{"w": {"dtype": "F33", "shape": [4], "data_offsets": [0, 16]}}"#;
        rejects(
            &file_with(&d, "unknown-dtype.safetensors", h.as_bytes(), &f32s(4)),
            Some("w"),
            "unknown dtype \"F33\"",
        );
        let h = r#"{"w": {"dtype": "F32", "shape": [4]}}"#;
        rejects(&file_with(&d, "no-offsets.safetensors", h.as_bytes(), &f32s(4)), Some("w"), "data_offsets");
        // Truncated: a good file cut in the middle of its last tensor.
        let good =
            safetensors(&d, "good.safetensors", &[("a", "F32", vec![8], f32s(8)), ("b", "F32", vec![8], f32s(8))]);
        assert_eq!(read_index(&good).unwrap().len(), 2);
        let bytes = std::fs::read(&good).unwrap();
        let cut = raw_file(&d, "truncated.safetensors", &bytes[..bytes.len() - 10]);
        rejects(&cut, Some("b"), "truncated");
        // A file that does not exist: one line too.
        let (code, stderr) = run_main(&[d.join("missing.safetensors").to_str().unwrap()]);
        assert_eq!(code, Some(1));
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("missing.safetensors") && !stderr.contains("panicked"), "{stderr}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// A deterministic byte pattern (xorshift).
    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    /// Pieces of any aligned size, converted in any order, give the bytes
    /// and the hash of the whole tensor converted at once.
    #[test]
    fn pieces_add_up_to_the_whole_tensor() {
        for (f32, len) in [
            (true, 0),
            (true, 4),
            (true, 28),
            (true, 32),
            (true, 36),
            (true, 4000),
            (true, 4132),
            (false, 13),
            (false, 96),
            (false, 1001),
        ] {
            let t = Tensor { name: "t".into(), offset: 0, len, f32 };
            let src = noise(len, len as u64 + 7);
            let mut whole = vec![0u8; t.out_len()];
            let expect = convert(&t, &src, &mut whole);
            for piece in [32, 64, 96, 4096] {
                let mut dst = vec![0xaau8; t.out_len()];
                let mut lanes = [0u64; 4];
                let starts: Vec<usize> = (0..len).step_by(piece).collect();
                // Last piece first: order must not matter.
                for &s in starts.iter().rev() {
                    let e = len.min(s + piece);
                    let (ds, de) = if f32 { (s / 2, e / 2) } else { (s, e) };
                    let part = convert_piece(&t, s, &src[s..e], &mut dst[ds..de]);
                    for k in 0..4 {
                        lanes[k] ^= part[k];
                    }
                }
                assert_eq!(dst, whole, "bytes, f32 {f32}, len {len}, piece {piece}");
                assert_eq!(finish_hash(&t, lanes), expect, "hash, f32 {f32}, len {len}, piece {piece}");
            }
        }
    }

    #[test]
    fn large_tensors_are_split_into_pieces_small_ones_are_one() {
        let t = |len| Tensor { name: String::new(), offset: 0, len, f32: true };
        let items = work_items(&[t(100), t(0), t(154_389_504), t(MIB)], MIB);
        assert_eq!(items.len(), 1 + 148 + 1);
        assert_eq!((items[0].tensor, items[0].start, items[0].end), (0, 0, 100));
        assert!(items[1..149].iter().all(|i| i.tensor == 2 && i.end - i.start <= MIB));
        assert_eq!(items[148].end, 154_389_504);
        assert_eq!((items[149].tensor, items[149].end), (3, MIB));
    }

    /// The streaming loaders on a small file whose tensors are smaller
    /// than, equal to and larger than a chunk, with chunk boundaries inside
    /// runs of elements and a last partial chunk; items of two chunks. The
    /// destination must hold exactly the reference conversion, the checksum
    /// must match, and each tensor takes ceil(len / chunk) reads.
    #[test]
    fn streaming_writes_every_byte_where_it_belongs() {
        let d = temp_dir("stream");
        let chunk = 96;
        let tensors = [
            ("a", "F32", vec![1], f32s(1)),
            ("b", "F32", vec![7], f32s(7)),
            ("c", "F32", vec![24], f32s(24)), // exactly a chunk
            ("d", "F32", vec![25], f32s(25)), // a chunk and one element
            ("e", "I8", vec![13], noise(13, 3)),
            ("f", "F16", vec![61], noise(122, 5)),
            ("g", "F32", vec![0], vec![]),
            ("h", "F32", vec![3, 337], noise(3 * 337 * 4, 9)),
            ("i", "BF16", vec![250], noise(500, 11)),
        ];
        let path = safetensors(&d, "small.safetensors", &tensors);
        for staging in [Staging::Vec, Staging::Zp, Staging::ZpPinned, Staging::ZpNever] {
            for hint in [Hint::Plain, Hint::Sequential, Hint::WillNeed] {
                for threads in [1, 3] {
                    let mut ctx = Ctx::open(&path, chunk, 2 * chunk).unwrap();
                    ctx.threads = threads;
                    let reference = reference_checksum(&ctx).unwrap();
                    let r = Runner::new("test", Kind::Stream(staging, hint), &ctx).unwrap();
                    let (load, reads) = std::thread::scope(|s| {
                        for _ in 0..threads {
                            s.spawn(|| r.worker());
                        }
                        let load = r.load(false);
                        let reads = r.reads.load(Relaxed);
                        r.finish();
                        (load.unwrap(), reads)
                    });
                    let what = format!("{staging:?} {hint:?} {threads} threads");
                    assert_eq!(load.checksum, reference, "{what}");
                    let expect_reads: usize = ctx.tensors.iter().map(|t| t.len.div_ceil(chunk)).sum();
                    assert_eq!(reads, expect_reads, "{what}");
                    for (i, t) in ctx.tensors.iter().enumerate() {
                        let mut src = vec![0u8; t.len];
                        ctx.file.read_exact_at(&mut src, t.offset).unwrap();
                        let mut want = vec![0u8; t.out_len()];
                        convert(t, &src, &mut want);
                        // SAFETY: no load is running.
                        let got = unsafe { ctx.dest.range(i, 0, t.out_len()) };
                        assert!(got == &want[..], "{what}: tensor {} differs", t.name);
                    }
                }
            }
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// A read that fails during a load (the file shrank after its index was
    /// read) is an error naming the loader, not a panic or a hang.
    #[test]
    fn a_file_that_shrinks_during_the_load_is_an_error() {
        let d = temp_dir("shrink");
        let path = safetensors(&d, "shrinks.safetensors", &[("a", "F32", vec![1000], f32s(1000))]);
        let mut ctx = Ctx::open(&path, 256, 256).unwrap();
        ctx.threads = 2;
        let file_len = ctx.file_len;
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(file_len as u64 - 100).unwrap();
        for (key, kind) in [("reused-vec", Kind::ReusedVec), ("zp-stream", Kind::Stream(Staging::Zp, Hint::Plain))] {
            let r = Runner::new(key, kind, &ctx).unwrap();
            let load = std::thread::scope(|s| {
                for _ in 0..ctx.threads {
                    s.spawn(|| r.worker());
                }
                let load = r.load(false);
                r.finish();
                load
            });
            let err = load.err().expect("a short read is an error").to_string();
            assert!(err.contains("shrinks.safetensors") && err.contains(key), "{err}");
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// `--update-readme` does not write a run with a checksum mismatch.
    #[test]
    fn update_readme_refuses_a_mismatch() {
        let d = temp_dir("readme");
        let readme = d.join("README.md");
        let before = format!("intro\n{BEGIN}\nold\n{END}\nrest\n");
        std::fs::write(&readme, &before).unwrap();
        let report = json!({
            "command": "x", "machine": {}, "file": {}, "rounds": {}, "zeropool_auto": {},
            "results": [
                {"threads": 2, "cache": "warm", "loader": "mmap", "name": "`mmap`", "median_ms": 1.0, "checksums_match": true},
                {"threads": 2, "cache": "warm", "loader": "zp-stream", "name": "zp", "median_ms": 1.0, "checksums_match": false},
            ],
        });
        let json = d.join("r.json");
        std::fs::write(&json, report.to_string()).unwrap();
        let (code, stderr) =
            run_main(&["--from-json", json.to_str().unwrap(), "--update-readme", readme.to_str().unwrap()]);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(stderr.contains("checksum mismatch in zp-stream"), "{stderr}");
        assert_eq!(std::fs::read_to_string(&readme).unwrap(), before, "the README was written");
        // The same report with every checksum matching is written, and says so.
        let ok = report.to_string().replace("false", "true");
        std::fs::write(&json, ok).unwrap();
        let (code, stderr) =
            run_main(&["--from-json", json.to_str().unwrap(), "--update-readme", readme.to_str().unwrap()]);
        assert_eq!(code, Some(0), "{stderr}");
        let after = std::fs::read_to_string(&readme).unwrap();
        assert!(after.contains("Every loader's checksum") && after.starts_with("intro\n") && after.ends_with("rest\n"));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
