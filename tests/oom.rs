//! Out of memory (API.md guarantee 7): allocation failure anywhere (pool
//! creation, a thread's first call, bookkeeping) is reported as
//! ZP_ERR_OUT_OF_MEMORY or NULL, never an abort, and the pool works again
//! once memory is available.
//!
//! Each case runs in a forked child that lowers RLIMIT_AS to its current
//! size (VmSize) plus a margin, so that new mappings fail, and in most
//! cases also takes every byte malloc could still hand out ("exhausted"),
//! so that any heap allocation fails too. The child then makes the call
//! under test, checks the code, raises the limit back (and frees the
//! heap), and checks the pool works. It exits 0 when all is well, with the
//! number of the failed step otherwise; an abort shows as SIGABRT, a hang
//! as SIGALRM. Between squeezing and releasing, the child itself allocates
//! nothing (no panics, no formatting): failures are exit codes.
//!
//! A binary of its own: the children fork from this process. Each case
//! is a test of its own: `cargo test --test oom c_put` runs one.
#![cfg(all(target_os = "linux", not(miri)))]

use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use zeropool::*;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
const PAGE: usize = 4096;
const OOM: zp_status = zp_status::ZP_ERR_OUT_OF_MEMORY;
const OK: zp_status = zp_status::ZP_OK;

fn vm_size() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmSize:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * KIB
}

/// Set in a child to run a case without squeezing (a check of the
/// cases' own expectations where memory is plentiful).
static DRY: AtomicBool = AtomicBool::new(false);

/// RLIMIT_AS lowered, and with `exhaust`, the heap taken.
struct Squeeze {
    old: libc::rlimit,
    taken: Vec<*mut c_void>,
}

impl Squeeze {
    /// Lowers RLIMIT_AS to VmSize + `margin`; with `exhaust`, mallocs
    /// until malloc fails at every size, so nothing is left to allocate.
    fn new(margin: usize, exhaust: bool) -> Squeeze {
        let mut taken = Vec::with_capacity(if exhaust { 1 << 20 } else { 0 });
        let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: writes into `old`.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut old) }, 0);
        if DRY.load(SeqCst) {
            return Squeeze { old, taken };
        }
        let limit = libc::rlimit { rlim_cur: (vm_size() + margin) as libc::rlim_t, rlim_max: old.rlim_max };
        // SAFETY: plain syscall; the hard limit is unchanged, so it can be raised back.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) }, 0);
        if exhaust {
            let sizes = (11..31).rev().map(|s| 1usize << s).chain((1..=127).rev().map(|k| k * 16)).chain([1]);
            for size in sizes {
                while taken.len() < taken.capacity() {
                    // SAFETY: plain malloc; freed in `release`.
                    let p = unsafe { libc::malloc(size) };
                    if p.is_null() {
                        break;
                    }
                    taken.push(p);
                }
            }
        }
        Squeeze { old, taken }
    }

    /// Frees what was taken and raises the limit back.
    fn release(self) {
        for &p in &self.taken {
            // SAFETY: from malloc above, freed once.
            unsafe { libc::free(p) };
        }
        // SAFETY: plain syscall, back to the limit we found.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &self.old) }, 0);
    }
}

/// Returns `$code` from the child's function unless `$cond` holds.
macro_rules! check {
    ($cond:expr, $code:expr) => {
        if !$cond {
            return $code;
        }
    };
}

fn config(shards: usize, tls: usize) -> *mut zp_config {
    let cfg = zp_config_new();
    assert!(!cfg.is_null());
    assert_eq!(zp_config_set_min_buffer_size(cfg, PAGE), OK);
    assert_eq!(zp_config_set_num_shards(cfg, shards), OK);
    assert_eq!(zp_config_set_tls_cache_size(cfg, tls), OK);
    assert_eq!(zp_config_set_max_pooled_bytes(cfg, 64 * MIB), OK);
    cfg
}

fn pool(shards: usize, tls: usize) -> *mut zp_pool {
    let cfg = config(shards, tls);
    let mut p = ptr::null_mut();
    assert_eq!(zp_pool_new_with_config(cfg, &mut p), OK);
    zp_config_free(cfg);
    p
}

fn stats(p: *const zp_pool) -> Option<Stats> {
    let mut s = Stats::default();
    (zp_pool_stats(p, &mut s) == OK).then_some(s)
}

/// The pool works: a get and a put of `size` bytes, written in full.
fn works(p: *mut zp_pool, size: usize) -> bool {
    let b = zp_get(p, size);
    if b.is_null() {
        return false;
    }
    // SAFETY: a live buffer of `size` bytes.
    unsafe { ptr::write_bytes(b.cast::<u8>(), 1, size) };
    zp_put(p, b) == OK
}

/// (a) Pool and config creation with nothing left to allocate.
fn a_pool_new() -> i32 {
    let cfg = config(256, 8);
    let sq = Squeeze::new(0, true);
    let p = zp_pool_new();
    let null = p.is_null();
    let c = zp_config_new();
    let c_null = c.is_null();
    let mut q = std::ptr::dangling_mut::<zp_pool>();
    let status = zp_pool_new_with_config(cfg, &mut q);
    sq.release();
    check!(null, 10); // zp_pool_new: NULL
    check!(c_null, 11); // zp_config_new: NULL
    check!(status == OOM, 12); // zp_pool_new_with_config: OUT_OF_MEMORY
    check!(q.is_null(), 13); // ... and *out set to NULL
    let p = zp_pool_new();
    check!(!p.is_null(), 14);
    check!(works(p, 100 * KIB), 15);
    zp_pool_free(p);
    let mut q = ptr::null_mut();
    check!(zp_pool_new_with_config(cfg, &mut q) == OK, 16);
    check!(works(q, 100 * KIB), 17);
    zp_pool_free(q);
    zp_config_free(cfg);
    0
}

/// (b) The first zp_get on a thread (made, and waiting, before the
/// squeeze): NULL with OUT_OF_MEMORY, or a buffer (uncached); no abort.
fn b_first_get_on_a_thread() -> i32 {
    let p = pool(4, 8);
    check!(works(p, PAGE), 20); // the pool has a chunk of this class
    // 0: wait, 1: go, 2: done, 3: go again, 4: done
    let step = Arc::new(AtomicUsize::new(0));
    let got = Arc::new(AtomicUsize::new(0));
    let error = Arc::new(AtomicUsize::new(0));
    let again = Arc::new(AtomicUsize::new(0));
    let (s, g, e, a, pp) = (step.clone(), got.clone(), error.clone(), again.clone(), p as usize);
    let wait_for = move |s: &AtomicUsize, n: usize| {
        while s.load(SeqCst) != n {
            thread::sleep(Duration::from_millis(1));
        }
    };
    let t = thread::spawn(move || {
        let p = pp as *mut zp_pool;
        wait_for(&s, 1);
        let b = zp_get(p, PAGE);
        g.store(b as usize, SeqCst);
        if b.is_null() {
            e.store(zp_last_error() as usize, SeqCst);
        }
        s.store(2, SeqCst);
        wait_for(&s, 3);
        let mut ok = b.is_null() || zp_put(p, b) == OK;
        ok &= works(p, PAGE) && works(p, PAGE);
        a.store(ok as usize, SeqCst);
        s.store(4, SeqCst);
    });
    thread::sleep(Duration::from_millis(20)); // the thread is started
    let sq = Squeeze::new(0, true);
    step.store(1, SeqCst);
    while step.load(SeqCst) != 2 {
        thread::sleep(Duration::from_millis(1));
    }
    sq.release();
    step.store(3, SeqCst);
    if t.join().is_err() {
        return 21;
    }
    let (b, err) = (got.load(SeqCst), error.load(SeqCst));
    check!(b != 0 || err == OOM as usize, 22); // NULL only with OUT_OF_MEMORY
    check!(again.load(SeqCst) == 1, 23); // works once memory is back
    let s = stats(p);
    check!(s.is_some_and(|s| s.outstanding == 0 && s.gets == s.puts), 24);
    zp_pool_free(p);
    0
}

/// (c) zp_put into a full thread cache (moving half of it to a shard
/// needs bookkeeping memory): the buffer is taken back (ZP_OK).
fn c_put_into_a_full_cache() -> i32 {
    let p = pool(4, 8);
    let bufs: Vec<_> = (0..9).map(|_| zp_get(p, PAGE)).collect();
    check!(bufs.iter().all(|b| !b.is_null()), 30);
    for &b in &bufs[..8] {
        check!(zp_put(p, b) == OK, 31);
    }
    check!(stats(p).is_some_and(|s| s.pooled_buffers == 8), 32); // the cache is full
    let sq = Squeeze::new(0, true);
    let status = zp_put(p, bufs[8]);
    sq.release();
    check!(status == OK, 33);
    let s = stats(p);
    check!(s.is_some_and(|s| s.gets == 9 && s.puts == 9 && s.outstanding == 0), 34);
    check!(s.is_some_and(|s| s.pooled_bytes <= 64 * MIB as u64), 35);
    check!(works(p, PAGE) && works(p, 3 * PAGE), 36);
    zp_pool_free(p);
    0
}

/// A pool of 256 shards with idle buffers in its shards and in this
/// thread's cache, and one buffer out.
fn busy_pool_of_256_shards() -> (*mut zp_pool, *mut c_void) {
    let p = pool(256, 2);
    let bufs: Vec<_> = (0..12).map(|i| zp_get(p, PAGE << (i % 3))).collect();
    assert!(bufs.iter().all(|b| !b.is_null()));
    for &b in &bufs[1..] {
        assert_eq!(zp_put(p, b), OK);
    }
    (p, bufs[0])
}

/// (d1) zp_pool_stats on a pool of 256 shards: OK with the right numbers,
/// or OUT_OF_MEMORY.
fn d_stats() -> i32 {
    let (p, out) = busy_pool_of_256_shards();
    let sq = Squeeze::new(0, true);
    let mut s = Stats::default();
    let status = zp_pool_stats(p, &mut s);
    sq.release();
    check!(status == OK || status == OOM, 40);
    check!(status == OOM || (s.gets == 12 && s.puts == 11 && s.outstanding == 1 && s.pooled_buffers == 11), 41);
    check!(stats(p).is_some_and(|s| s.gets == 12 && s.outstanding == 1), 42);
    check!(zp_put(p, out) == OK, 43);
    check!(works(p, PAGE), 44);
    zp_pool_free(p);
    0
}

/// (d2) zp_pool_trim on a pool of 256 shards: OK or OUT_OF_MEMORY.
fn d_trim() -> i32 {
    let (p, out) = busy_pool_of_256_shards();
    let sq = Squeeze::new(0, true);
    let status = zp_pool_trim(p);
    sq.release();
    check!(status == OK || status == OOM, 50);
    check!(zp_pool_trim(p) == OK, 51);
    check!(stats(p).is_some_and(|s| s.pooled_buffers == 0 && s.outstanding == 1), 52);
    check!(zp_put(p, out) == OK, 53);
    check!(works(p, PAGE), 54);
    zp_pool_free(p);
    0
}

/// (d3) zp_pool_free on a pool of 256 shards, with a buffer still out
/// (returned after the squeeze) and another pool used afterwards.
fn d_free() -> i32 {
    let (p, out) = busy_pool_of_256_shards();
    let other = pool(4, 2);
    check!(works(other, PAGE), 60);
    let sq = Squeeze::new(0, true);
    zp_pool_free(p);
    sq.release();
    check!(zp_put(p, out) == OK, 61); // still valid after the free
    check!(works(other, PAGE), 62);
    zp_pool_free(other);
    let q = zp_pool_new();
    check!(!q.is_null() && works(q, PAGE), 63);
    zp_pool_free(q);
    0
}

/// (e) zp_get that needs a new chunk (a new size class, or an unpooled
/// buffer): NULL with OUT_OF_MEMORY; the same gets work once the limit is
/// raised. `exhaust`: bookkeeping allocations fail too, else only mappings.
fn e_get_needs_a_new_chunk(exhaust: bool) -> i32 {
    let p = pool(4, 4);
    check!(works(p, PAGE), 70); // this thread's cache exists
    let sizes = [8 * MIB, 96 * MIB]; // a new class; above every class (unpooled)
    let mut got = [ptr::null_mut(); 2];
    let mut errors = [OK; 2];
    let sq = Squeeze::new(MIB, exhaust);
    for i in 0..2 {
        got[i] = zp_get(p, sizes[i]);
        if got[i].is_null() {
            errors[i] = zp_last_error();
        }
    }
    sq.release();
    for i in 0..2 {
        check!(got[i].is_null(), 71 + i as i32 * 2); // no mapping could be made
        check!(errors[i] == OOM, 72 + i as i32 * 2);
    }
    check!(works(p, 8 * MIB), 75);
    check!(works(p, 96 * MIB), 76);
    check!(stats(p).is_some_and(|s| s.outstanding == 0 && s.gets == s.puts), 77);
    zp_pool_free(p);
    0
}

fn e_mappings_fail() -> i32 {
    e_get_needs_a_new_chunk(false)
}

fn e_exhausted() -> i32 {
    e_get_needs_a_new_chunk(true)
}

/// Runs `f` in a child (without squeezing when `dry`); its wait status.
fn in_child(f: fn() -> i32, dry: bool) -> i32 {
    // SAFETY (test): the child runs `f` and _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: plain syscalls; _exit skips the harness.
        unsafe {
            libc::alarm(20);
            DRY.store(dry, SeqCst);
            let code = std::panic::catch_unwind(f).unwrap_or(99);
            libc::_exit(code);
        }
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    status
}

/// Runs a case in a child and fails unless the child exited 0; the
/// child's exit code is the step that failed, a signal an abort or hang.
fn run(name: &str, f: fn() -> i32) {
    run_as(name, f, false);
}

fn run_as(name: &str, f: fn() -> i32, dry: bool) {
    let status = in_child(f, dry);
    let how = if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        let what = match sig {
            libc::SIGABRT => " (SIGABRT: an abort)",
            libc::SIGALRM => " (SIGALRM: a hang)",
            libc::SIGSEGV => " (SIGSEGV)",
            _ => "",
        };
        format!("killed by signal {sig}{what}")
    } else {
        format!("exit {}", libc::WEXITSTATUS(status))
    };
    eprintln!("{name}: child {how}");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{name}: child {how} (an exit code is the step that failed)"
    );
}

// Every case aborted (SIGABRT) on commit 0baf41e, before allocation was
// made fallible on these paths.

#[test]
fn a_pool_and_config_creation_heap_exhausted() {
    run("(a) zp_pool_new / zp_config_new / zp_pool_new_with_config, heap exhausted", a_pool_new);
}

#[test]
fn b_first_get_on_a_new_thread_heap_exhausted() {
    run("(b) first zp_get on a new thread, heap exhausted", b_first_get_on_a_thread);
}

#[test]
fn c_put_into_a_full_thread_cache_heap_exhausted() {
    run("(c) zp_put into a full thread cache, heap exhausted", c_put_into_a_full_cache);
}

#[test]
fn d1_stats_of_a_pool_of_256_shards_heap_exhausted() {
    run("(d1) zp_pool_stats, 256 shards, heap exhausted", d_stats);
}

#[test]
fn d2_trim_of_a_pool_of_256_shards_heap_exhausted() {
    run("(d2) zp_pool_trim, 256 shards, heap exhausted", d_trim);
}

#[test]
fn d3_free_of_a_pool_of_256_shards_heap_exhausted() {
    run("(d3) zp_pool_free, 256 shards, heap exhausted", d_free);
}

#[test]
fn e1_get_needing_a_new_chunk_when_mappings_fail() {
    run("(e1) zp_get needing a new chunk, mappings fail", e_mappings_fail);
}

#[test]
fn e2_get_needing_a_new_chunk_heap_exhausted() {
    run("(e2) zp_get needing a new chunk, heap exhausted", e_exhausted);
}

/// The cases whose calls succeed with memory to spare, run without the
/// squeeze: their own expectations (counts before and after) hold.
#[test]
fn cases_b_to_d_pass_with_memory_to_spare() {
    run_as("(b) dry", b_first_get_on_a_thread, true);
    run_as("(c) dry", c_put_into_a_full_cache, true);
    run_as("(d1) dry", d_stats, true);
    run_as("(d2) dry", d_trim, true);
    run_as("(d3) dry", d_free, true);
}
