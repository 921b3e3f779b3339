//! Checkpoint loading, the job ZeroPool was made for: every tensor of a
//! `.safetensors` file is read into a staging buffer, consumed (checksummed
//! into a running digest, as a loader would convert or copy it), and the
//! buffer is returned. Compared, on the same file in one run:
//! no pool (a fresh `vec![0; n]` per tensor), ZeroPool with each zeroing
//! policy, and upstream `zeropool` 0.7.
//!
//! ```sh
//! cargo run --release --example checkpoint_load              # synthetic GPT-2 124M (~500 MB)
//! cargo run --release --example checkpoint_load model.safetensors
//! ```
//!
//! Without a path it writes a synthetic file with GPT-2 124M's real tensor
//! names and shapes (fp32) into a temporary directory, and removes it after.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use zeropool::{BufferPool, Zeroing};

const MIB: usize = 1 << 20;
const ROUNDS: usize = 5;

/// One tensor's bytes in the file.
struct Tensor {
    offset: u64,
    len: usize,
}

/// GPT-2 124M: (name, shape), as in the published checkpoint.
fn gpt2_small() -> Vec<(String, Vec<usize>)> {
    let (d, ctx, vocab, layers) = (768, 1024, 50257, 12);
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

/// Writes a safetensors file: 8-byte header length, JSON header, data.
fn write_synthetic(path: &Path) -> std::io::Result<()> {
    let tensors = gpt2_small();
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt", "source": "zeropool synthetic"}));
    let mut offset = 0usize;
    for (name, shape) in &tensors {
        let bytes = shape.iter().product::<usize>() * 4;
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let header = serde_json::to_vec(&serde_json::Value::Object(header)).unwrap();
    let mut out = BufWriter::with_capacity(4 * MIB, File::create(path)?);
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
            eprint!("\r  writing {} MB: {pct:>3}%", offset / 1_000_000);
        }
    }
    eprintln!();
    out.flush()
}

/// Reads the header of a safetensors file.
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
    let header: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| std::io::Error::other(format!("bad header: {e}")))?;
    let base = 8 + header_len;
    let mut tensors: Vec<Tensor> = header
        .into_iter()
        .filter(|(name, _)| name != "__metadata__")
        .map(|(_, info)| {
            let range = info["data_offsets"].as_array().expect("data_offsets");
            let (start, end) = (range[0].as_u64().unwrap(), range[1].as_u64().unwrap());
            Tensor { offset: base + start, len: (end - start) as usize }
        })
        .collect();
    tensors.sort_by_key(|t| t.offset);
    Ok(tensors)
}

/// Consumes a tensor's bytes the way a loader would touch them all: here a
/// digest, so the work cannot be skipped.
fn consume(bytes: &[u8], digest: &mut u64) {
    let mut acc = 0u64;
    for word in bytes.chunks_exact(8) {
        acc = acc.rotate_left(5) ^ u64::from_le_bytes(word.try_into().unwrap());
    }
    *digest = digest.wrapping_mul(31).wrapping_add(acc);
}

/// Loads every tensor once with `stage`, which gets a buffer for it.
fn load(file: &File, tensors: &[Tensor], mut stage: impl FnMut(usize, &mut dyn FnMut(&mut [u8]))) -> u64 {
    let mut digest = 0;
    for t in tensors {
        stage(t.len, &mut |buf| {
            file.read_exact_at(buf, t.offset).expect("read tensor");
            consume(buf, &mut digest);
        });
    }
    digest
}

struct Row {
    name: &'static str,
    times: Vec<Duration>,
    digest: u64,
    detail: String,
}

fn median(times: &[Duration]) -> Duration {
    let mut t = times.to_vec();
    t.sort();
    t[t.len() / 2]
}

fn main() -> std::io::Result<()> {
    let arg = std::env::args_os().nth(1).map(PathBuf::from);
    let temp = std::env::temp_dir().join(format!("zeropool-gpt2-{}", std::process::id()));
    let path = match &arg {
        Some(p) => p.clone(),
        None => {
            std::fs::create_dir_all(&temp)?;
            let p = temp.join("gpt2-124m-synthetic.safetensors");
            eprintln!("no checkpoint given: writing a synthetic GPT-2 124M (fp32) to {}", p.display());
            write_synthetic(&p)?;
            p
        }
    };
    let tensors = read_index(&path)?;
    let total: usize = tensors.iter().map(|t| t.len).sum();
    let largest = tensors.iter().map(|t| t.len).max().unwrap_or(0);
    let file = File::open(&path)?;
    println!(
        "{}: {} tensors, {:.1} MB, largest {:.1} MB",
        path.display(),
        tensors.len(),
        total as f64 / 1e6,
        largest as f64 / 1e6
    );

    // Warm the page cache, so every variant reads from memory alike.
    let warm = load(&file, &tensors, |len, f| f(&mut vec![0u8; len]));

    let pool_for = |z: Zeroing| {
        BufferPool::builder()
            .min_buffer_size(MIB)
            .max_pooled_bytes(4 * largest.next_power_of_two())
            .zeroing(z)
            .build()
            .expect("valid configuration")
    };
    let mut rows = Vec::new();
    let mut measure = |name: &'static str, run: &mut dyn FnMut() -> u64, detail: &dyn Fn() -> String| {
        let mut times = Vec::new();
        let mut digest = 0;
        for _ in 0..ROUNDS {
            let start = Instant::now();
            digest = run();
            times.push(start.elapsed());
        }
        assert_eq!(digest, warm, "{name} read different bytes");
        rows.push(Row { name, times, digest, detail: detail() });
    };

    measure("no pool (vec![0; n] per tensor)", &mut || load(&file, &tensors, |len, f| f(&mut vec![0u8; len])), &|| {
        String::new()
    });
    for (name, z) in [
        ("ZeroPool, Zeroing::Always", Zeroing::Always),
        ("ZeroPool, Zeroing::OnPut", Zeroing::OnPut),
        ("ZeroPool, Zeroing::Never", Zeroing::Never),
    ] {
        let pool = pool_for(z);
        measure(name, &mut || load(&file, &tensors, |len, f| f(&mut pool.get(len))), &|| {
            let s = pool.stats();
            format!("{} system allocations for {} gets", s.allocations, s.gets)
        });
    }
    let upstream = zeropool_upstream::ZeroPool::new();
    measure("upstream zeropool 0.7 (alloc)", &mut || load(&file, &tensors, |len, f| f(&mut upstream.alloc(len))), &|| {
        String::new()
    });

    let base = median(&rows[0].times);
    println!("\n{ROUNDS} loads each; median per load:\n");
    println!("| loader | ms | MB/s | speedup vs no pool | |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        let m = median(&r.times);
        println!(
            "| {} | {:.1} | {:.0} | {:.2}x | {} |",
            r.name,
            m.as_secs_f64() * 1e3,
            total as f64 / 1e6 / m.as_secs_f64(),
            base.as_secs_f64() / m.as_secs_f64(),
            r.detail
        );
        debug_assert_eq!(r.digest, warm);
    }
    if arg.is_none() {
        std::fs::remove_dir_all(&temp)?;
    }
    Ok(())
}
