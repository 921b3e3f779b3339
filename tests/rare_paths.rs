//! Rare paths where a guarantee of shared/API.md must still hold (issue 26):
//! races with `zp_pool_free`, failures injected where the system will not
//! produce them, pools whose ids collide in a thread's table.
//!
//! A binary of its own: some tests read the process's mappings, so they
//! take turns (SERIAL) and nothing else runs beside them.
#![cfg(all(target_os = "linux", not(miri)))]

use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;

use zeropool::*;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The process's mappings, as (start, end).
fn mappings() -> Vec<(usize, usize)> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .map(|l| {
            let range = l.split_whitespace().next().unwrap();
            let (a, b) = range.split_once('-').unwrap();
            (usize::from_str_radix(a, 16).unwrap(), usize::from_str_radix(b, 16).unwrap())
        })
        .collect()
}

/// How many of `addrs` lie in some mapping.
fn still_mapped(addrs: &[usize]) -> usize {
    let maps = mappings();
    addrs.iter().filter(|&&a| maps.iter().any(|&(s, e)| s <= a && a < e)).count()
}

fn c_pool(min: usize, tls: usize, budget: usize) -> *mut zp_pool {
    let cfg = zp_config_new();
    assert!(!cfg.is_null());
    assert_eq!(zp_config_set_tls_cache_size(cfg, tls), zp_status::ZP_OK);
    assert_eq!(zp_config_set_min_buffer_size(cfg, min), zp_status::ZP_OK);
    assert_eq!(zp_config_set_max_pooled_bytes(cfg, budget), zp_status::ZP_OK);
    let mut pool = ptr::null_mut();
    assert_eq!(zp_pool_new_with_config(cfg, &mut pool), zp_status::ZP_OK);
    zp_config_free(cfg);
    pool
}

/// A pointer that may cross threads (the test's own bookkeeping).
#[derive(Clone, Copy)]
struct P(usize);
impl P {
    fn pool(self) -> *mut zp_pool {
        self.0 as *mut zp_pool
    }
    fn buf(self) -> *mut c_void {
        self.0 as *mut c_void
    }
}

/// What each worker does as its "one more call" after every buffer is back.
#[derive(Clone, Copy, Debug)]
enum NextCall {
    /// `zp_get` + `zp_put` on another pool.
    GetPut,
    /// `zp_local_get` + `zp_local_put` on a handle of another pool.
    Local,
    /// `zp_get` of a size no buffer can hold, on another pool.
    TooLarge,
    /// `zp_get` + `zp_put` of an unpooled size, on another pool.
    Unpooled,
}

/// Issue 26, item 2: `zp_pool_free` races with 4 threads each returning 64
/// buffers of 64 KiB. Once every buffer is back and each thread has made one
/// more call (of several kinds, on another pool), none of the freed pool's
/// memory may be mapped. The free comes at many moments: after 0, 16, ...,
/// 256 of the puts.
#[test]
fn a_freed_pools_memory_is_unmapped_once_its_buffers_are_back_whenever_the_free_comes() {
    let _serial = serial();
    const THREADS: usize = 4;
    const EACH: usize = 64;
    const SIZE: usize = 64 * KIB;
    let other = P(c_pool(4 * KIB, 16, 64 * MIB) as usize);
    let unpooled = 64 * MIB; // past the largest class of the default config
                             // Workers live across rounds (the leak showed until threads exit).
    let start = Arc::new(Barrier::new(THREADS + 1));
    let done = Arc::new(Barrier::new(THREADS + 1));
    // Per worker: the pool, its buffers, its last call.
    type Work = Vec<(P, Vec<P>, NextCall)>;
    let work: Arc<Mutex<Work>> = Arc::new(Mutex::new(Vec::new()));
    let puts = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (start, done, work, puts, stop) =
                (start.clone(), done.clone(), work.clone(), puts.clone(), stop.clone());
            thread::spawn(move || {
                // A handle and a warm cache of the other pool first, so the
                // last call maps nothing new.
                let local = zp_local_new(other.pool());
                assert!(!local.is_null());
                for _ in 0..2 {
                    let x = zp_get(other.pool(), 4096);
                    let y = zp_local_get(local, 4096);
                    assert!(!x.is_null() && !y.is_null());
                    assert_eq!(zp_put(other.pool(), x), zp_status::ZP_OK);
                    assert_eq!(zp_local_put(local, y), zp_status::ZP_OK);
                }
                let big = zp_get(other.pool(), unpooled);
                assert!(!big.is_null());
                assert_eq!(zp_put(other.pool(), big), zp_status::ZP_OK);
                loop {
                    start.wait();
                    if stop.load(Ordering::Relaxed) != 0 {
                        zp_local_free(local);
                        return;
                    }
                    let (pool, bufs, next) = work.lock().unwrap()[t].clone();
                    for b in bufs {
                        assert_eq!(zp_put(pool.pool(), b.buf()), zp_status::ZP_OK);
                        puts.fetch_add(1, Ordering::SeqCst);
                    }
                    done.wait(); // every buffer back; the free has come
                    match next {
                        NextCall::GetPut => {
                            let x = zp_get(other.pool(), 4096);
                            assert_eq!(zp_put(other.pool(), x), zp_status::ZP_OK);
                        }
                        NextCall::Local => {
                            let x = zp_local_get(local, 4096);
                            assert_eq!(zp_local_put(local, x), zp_status::ZP_OK);
                        }
                        NextCall::TooLarge => {
                            assert!(zp_get(other.pool(), usize::MAX).is_null());
                        }
                        NextCall::Unpooled => {
                            let x = zp_get(other.pool(), unpooled);
                            assert!(!x.is_null());
                            assert_eq!(zp_put(other.pool(), x), zp_status::ZP_OK);
                        }
                    }
                    done.wait();
                }
            })
        })
        .collect();
    let kinds = [NextCall::GetPut, NextCall::Local, NextCall::TooLarge, NextCall::Unpooled];
    let mut failures = Vec::new();
    let mut round = 0;
    for kind in kinds {
        for free_after in (0..=THREADS * EACH).step_by(32) {
            round += 1;
            let pool = P(c_pool(64 * KIB, 16, 64 * MIB) as usize);
            let bufs: Vec<P> = (0..THREADS * EACH)
                .map(|_| {
                    let b = zp_get(pool.pool(), SIZE);
                    assert!(!b.is_null());
                    // SAFETY (test): a live buffer of SIZE bytes.
                    unsafe { ptr::write_bytes(b.cast::<u8>(), 0x5A, SIZE) };
                    P(b as usize)
                })
                .collect();
            let addrs: Vec<usize> = bufs.iter().map(|b| b.0).collect();
            assert_eq!(still_mapped(&addrs), addrs.len());
            *work.lock().unwrap() = bufs.chunks(EACH).map(|c| (pool, c.to_vec(), kind)).collect();
            puts.store(0, Ordering::SeqCst);
            start.wait();
            while puts.load(Ordering::SeqCst) < free_after {
                std::hint::spin_loop();
            }
            zp_pool_free(pool.pool());
            done.wait(); // all back
            done.wait(); // and one more call each
            let left = still_mapped(&addrs);
            if left != 0 {
                failures.push(format!("{kind:?}, freed after {free_after} puts: {left} of 256 buffers still mapped"));
            }
        }
    }
    stop.store(1, Ordering::Relaxed);
    start.wait();
    workers.into_iter().for_each(|w| w.join().unwrap());
    zp_pool_free(other.pool());
    assert!(failures.is_empty(), "{} of {round} rounds:\n{}", failures.len(), failures.join("\n"));
}

/// Issue 26, item 2, the references that outlive a pool: a thread that got
/// the pool's buffers (so holds a cache of it, with nothing idle in it) and
/// a `zp_local` handle kept past `zp_pool_free` (allowed) must not keep the
/// pool's memory mapped once its last buffer is back. Neither makes another
/// call before the check: they cached nothing.
#[test]
fn stale_caches_and_zp_local_handles_do_not_keep_a_freed_pools_memory() {
    let _serial = serial();
    const N: usize = 64;
    const SIZE: usize = 64 * KIB;
    let pool = P(c_pool(64 * KIB, 16, 64 * MIB) as usize);
    let (to_g, from_main) = std::sync::mpsc::channel::<()>();
    let (to_main, from_g) = std::sync::mpsc::channel::<(P, Vec<P>)>();
    let g = thread::spawn(move || {
        let local = zp_local_new(pool.pool());
        assert!(!local.is_null());
        // One buffer through the handle and back: its cache is warm, empty.
        let x = zp_local_get(local, SIZE);
        assert!(!x.is_null());
        assert_eq!(zp_put(pool.pool(), x), zp_status::ZP_OK);
        let bufs: Vec<P> = (0..N)
            .map(|_| {
                let b = zp_get(pool.pool(), SIZE);
                assert!(!b.is_null());
                // SAFETY (test): a live buffer of SIZE bytes.
                unsafe { ptr::write_bytes(b.cast::<u8>(), 0x5A, SIZE) };
                P(b as usize)
            })
            .collect();
        to_main.send((P(local as usize), bufs)).unwrap();
        from_main.recv().unwrap();
        // After the check: the handle still works as the header says.
        let local = local.cast::<zp_local>();
        assert!(zp_local_get(local, SIZE).is_null());
        assert_eq!(zp_last_error(), zp_status::ZP_ERR_INVALID_ARGUMENT);
        zp_local_free(local);
    });
    let (_local, bufs) = from_g.recv().unwrap();
    let addrs: Vec<usize> = bufs.iter().map(|b| b.0).collect();
    assert_eq!(still_mapped(&addrs), N);
    zp_pool_free(pool.pool());
    for b in &bufs {
        assert_eq!(zp_put(pool.pool(), b.buf()), zp_status::ZP_OK);
    }
    let left = still_mapped(&addrs);
    to_g.send(()).unwrap();
    g.join().unwrap();
    assert_eq!(left, 0, "{left} of {N} buffers of the freed pool still mapped after every one came back");
}

// ---- Allocation failures, injected ----------------------------------------

/// The test binary's allocator: the system's, failing on demand on the
/// thread that asks (so the harness's own threads are never affected).
struct Failing;

#[derive(Clone, Copy)]
enum Fail {
    Off,
    /// Every allocation aligned to at least `.0` bytes, after `.1` more
    /// of them.
    AlignedAfter(usize, usize),
    /// Every allocation aligned to less than 64 bytes, after this many
    /// more of them (the cache-padded blocks behind an `Arc`, which no
    /// probe can make fallible, are `AlignedAfter`'s).
    After(usize),
}

thread_local! {
    static FAIL: std::cell::Cell<Fail> = const { std::cell::Cell::new(Fail::Off) };
    /// The layout this thread freed last: a real allocator hands that
    /// block back to the next allocation of the same layout, so refusing
    /// it would model no allocator (the probes before `Arc::new` rely on it).
    static LAST_FREED: std::cell::Cell<(usize, usize)> = const { std::cell::Cell::new((0, 0)) };
}

fn refuse(layout: std::alloc::Layout) -> bool {
    let reused = LAST_FREED.try_with(|l| l.replace((0, 0)) == (layout.size(), layout.align())).unwrap_or(false);
    if reused {
        return false;
    }
    FAIL.try_with(|f| match f.get() {
        Fail::Off => false,
        Fail::AlignedAfter(a, _) if layout.align() < a => false,
        Fail::AlignedAfter(_, 0) => true,
        Fail::AlignedAfter(a, n) => {
            f.set(Fail::AlignedAfter(a, n - 1));
            false
        }
        Fail::After(_) if layout.align() >= 64 => false,
        Fail::After(0) => true,
        Fail::After(n) => {
            f.set(Fail::After(n - 1));
            false
        }
    })
    .unwrap_or(false)
}

// SAFETY (test): forwards to the system allocator, or refuses (null), which
// GlobalAlloc allows.
unsafe impl std::alloc::GlobalAlloc for Failing {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if refuse(layout) {
            return ptr::null_mut();
        }
        // SAFETY (test): the caller's layout, passed on.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        if refuse(layout) {
            return ptr::null_mut();
        }
        // SAFETY (test): as above.
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, p: *mut u8, layout: std::alloc::Layout) {
        let _ = LAST_FREED.try_with(|l| l.set((layout.size(), layout.align())));
        // SAFETY (test): as above.
        unsafe { std::alloc::System.dealloc(p, layout) }
    }
    unsafe fn realloc(&self, p: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        // SAFETY (test): a valid layout for the new size (align unchanged).
        if refuse(unsafe { std::alloc::Layout::from_size_align_unchecked(new, layout.align()) }) {
            return ptr::null_mut();
        }
        // SAFETY (test): as above.
        unsafe { std::alloc::System.realloc(p, layout, new) }
    }
}

#[global_allocator]
static ALLOCATOR: Failing = Failing;

/// Runs `f` with this thread's allocations failing as `mode` says.
fn failing<R>(mode: Fail, f: impl FnOnce() -> R) -> R {
    FAIL.with(|c| c.set(mode));
    let r = f();
    FAIL.with(|c| c.set(Fail::Off));
    r
}

/// Runs the scenario `name` of [`child_scenario`] in a fresh process (this
/// test binary again): an abort there fails the test without taking the
/// other tests down, and the last line it printed says where.
fn in_child(name: &str) {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args(["--exact", "child_scenario", "--nocapture", "--test-threads=1"])
        .env("ZP_RARE_SCENARIO", name)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "scenario {name} died ({}):\n{text}", out.status);
    assert!(text.contains(&format!("scenario {name}: done")), "scenario {name} did not run:\n{text}");
}

/// Not a test of its own: the body of [`in_child`]'s process.
#[test]
fn child_scenario() {
    let Ok(name) = std::env::var("ZP_RARE_SCENARIO") else { return };
    match name.as_str() {
        // The OOM probe before `Arc::new(Shared)` must ask for the
        // alignment the Arc's block needs (128: `Shared` is cache padded).
        // When an `Arc::new` has no fallible form, the probe before it
        // asks for the alignment the Arc's block needs (128: `Shared` and
        // the thread counters are cache padded), so a system that has no
        // such block gets an error, not an abort. Every aligned allocation
        // on the way fails in turn (and all after it).
        "arc_alignment" => {
            for k in 0..16 {
                eprintln!("aligned allocation {k} fails");
                let p = failing(Fail::AlignedAfter(64, k), || zp_pool_new());
                if p.is_null() {
                    continue;
                }
                let pp = P(p as usize);
                // A thread's first calls: served uncached if need be.
                let t = thread::spawn(move || {
                    let p = pp;
                    failing(Fail::AlignedAfter(64, k), || {
                        let b = zp_get(p.pool(), 4096);
                        assert!(!b.is_null());
                        assert_eq!(zp_put(p.pool(), b), zp_status::ZP_OK);
                        let l = zp_local_new(p.pool());
                        zp_local_free(l);
                    })
                });
                t.join().unwrap();
                zp_pool_free(p);
            }
            let b = failing(Fail::AlignedAfter(64, 0), || BufferPool::builder().build());
            assert!(matches!(b, Err(Error::OutOfMemory { .. })), "{b:?}");
        }
        // An invalid setting builds no message that needs memory.
        "invalid_setting" => {
            let cfg = zp_config_new();
            assert!(!cfg.is_null());
            let st = failing(Fail::After(0), || {
                [
                    zp_config_set_tls_cache_size(cfg, usize::MAX),
                    zp_config_set_num_shards(cfg, 3),
                    zp_config_set_min_buffer_size(cfg, 0),
                    zp_config_set_max_buffers_per_shard(cfg, 0),
                ]
            });
            assert!(st.iter().all(|&s| s == zp_status::ZP_ERR_INVALID_ARGUMENT), "{st:?}");
            let e = failing(Fail::After(0), || BufferPool::builder().num_shards(3).build());
            assert!(matches!(e, Err(Error::InvalidConfig { setting: "num_shards", .. })), "{e:?}");
            zp_config_free(cfg);
        }
        // Pool creation and a thread's first calls, with the n-th
        // allocation on the way refused, for every n until none is.
        "countdown" => {
            let mut served = 0;
            for n in 0..400 {
                eprintln!("countdown {n}");
                let p = failing(Fail::After(n), || zp_pool_new());
                if !p.is_null() {
                    let p = P(p as usize);
                    let t = thread::spawn(move || {
                        failing(Fail::After(n), || {
                            let b = zp_get(p.pool(), 4096);
                            if !b.is_null() {
                                assert_eq!(zp_put(p.pool(), b), zp_status::ZP_OK);
                            }
                            let l = zp_local_new(p.pool());
                            if !l.is_null() {
                                let b = zp_local_get(l, 70_000);
                                if !b.is_null() {
                                    assert_eq!(zp_local_put(l, b), zp_status::ZP_OK);
                                }
                                zp_local_free(l);
                            }
                        })
                    });
                    t.join().unwrap();
                    zp_pool_free(p.pool());
                    served += 1;
                }
            }
            assert!(served > 100, "the countdown ran past every allocation on the way: {served} pools");
        }
        // fork() while another thread returns a buffer of a freed pool
        // (whose shared part is gone: only its region lives, while buffers
        // are out), holding its class lock as `zp_put` does: the fork must
        // wait for it, and the child must return another buffer of the
        // class (same lock) and an unpooled one (the one-off list's lock).
        "fork_while_a_freed_pools_buffer_comes_back" => {
            let pool = P(c_pool(64 * KIB, 0, 64 * MIB) as usize);
            let get = |n| {
                let b = zp_get(pool.pool(), n);
                assert!(!b.is_null());
                P(b as usize)
            };
            let (held, mine, big) = (get(60 * KIB), get(60 * KIB), get(64 * MIB));
            zp_pool_free(pool.pool());
            for (locked, what) in [(held, "a class lock"), (big, "the one-off list")] {
                let (tx, rx) = std::sync::mpsc::channel();
                let w = thread::spawn(move || {
                    __with_buffer_lock_held_for_test(locked.0 as *const u8, || {
                        tx.send(()).unwrap();
                        thread::sleep(std::time::Duration::from_millis(200));
                    })
                });
                rx.recv().unwrap();
                let t0 = std::time::Instant::now();
                // SAFETY (test): the child makes two calls and _exits.
                let pid = unsafe { libc::fork() };
                assert!(pid >= 0);
                if pid == 0 {
                    // SAFETY: plain calls in the child.
                    unsafe {
                        libc::alarm(5);
                        let ok = zp_put(pool.pool(), mine.buf()) == zp_status::ZP_OK
                            && zp_put(pool.pool(), big.buf()) == zp_status::ZP_OK;
                        libc::_exit(if ok { 0 } else { 1 });
                    }
                }
                let waited = t0.elapsed();
                let mut status = 0;
                // SAFETY: our own child.
                assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
                assert!(w.join().unwrap());
                assert!(
                    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                    "{what} held: the child hung or failed (status {status}; 14 is SIGALRM), fork returned after {waited:?}"
                );
                assert!(waited.as_millis() >= 60, "{what} held: fork did not wait for it ({waited:?})");
            }
            for b in [held, mine, big] {
                assert_eq!(zp_put(pool.pool(), b.buf()), zp_status::ZP_OK);
            }
        }
        // fork() while `zp_pool_new` fails on its way (the handle table
        // cannot grow) and drops the pool it built: no deadlock.
        "fork_while_pool_creation_fails" => {
            static READY: AtomicUsize = AtomicUsize::new(0);
            fn while_held() {
                READY.store(1, Ordering::SeqCst);
                thread::sleep(std::time::Duration::from_millis(300));
            }
            thread::spawn(|| {
                thread::sleep(std::time::Duration::from_secs(10));
                eprintln!("deadlock: fork or zp_pool_new still waiting after 10 s");
                // SAFETY: ends the process at once.
                unsafe { libc::_exit(3) };
            });
            let keep = zp_pool_new(); // a live pool: its locks are taken too
            assert!(!keep.is_null());
            __fail_next_handle_insert_for_test(while_held);
            let a = thread::spawn(|| zp_pool_new().is_null());
            while READY.load(Ordering::SeqCst) == 0 {
                std::hint::spin_loop();
            }
            // SAFETY (test): the child _exits at once.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0);
            if pid == 0 {
                // SAFETY: ends the child.
                unsafe { libc::_exit(0) };
            }
            let mut status = 0;
            // SAFETY: our own child.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            assert!(a.join().unwrap(), "the creation failed (injected)");
            let b = zp_get(keep, 4096);
            assert!(!b.is_null());
            assert_eq!(zp_put(keep, b), zp_status::ZP_OK);
            zp_pool_free(keep);
        }
        // An unpooled buffer (3 MiB + 1: its reservation is rounded up to
        // 4 MiB, of which 3 MiB + 2 pages are accessible) is released while
        // giving pages back fails: the fallback scrubs what is accessible,
        // and only that. Injected, then for real under mlockall(MCL_FUTURE)
        // where the process may lock (root, or a large RLIMIT_MEMLOCK).
        "unpooled_release_when_madvise_fails" => {
            let pool = P(c_pool(4 * KIB, 4, MIB) as usize);
            let once = |what: &str| {
                for size in [3 * MIB + 1, 5 * MIB - 4 * KIB, 64 * KIB + 1] {
                    eprintln!("{what}: {size} bytes");
                    let b = zp_get(pool.pool(), size);
                    assert!(!b.is_null(), "{what}: {size}");
                    // SAFETY (test): a live buffer of `size` bytes.
                    unsafe { ptr::write_bytes(b.cast::<u8>(), 0x5A, size) };
                    assert_eq!(zp_put(pool.pool(), b), zp_status::ZP_OK, "{what}: {size}");
                    // And an overflowed one (scrubbed as dirty, released at once).
                    let b = zp_get(pool.pool(), size);
                    assert!(!b.is_null(), "{what}: {size}");
                    // SAFETY (test): the byte right after `size`, in the canary's room.
                    unsafe { b.cast::<u8>().add(size).write(0xEE) };
                    assert_eq!(zp_put(pool.pool(), b), zp_status::ZP_ERR_OVERFLOW, "{what}: {size}");
                }
            };
            __fail_madvise_for_test(true);
            once("madvise fails (injected)");
            __fail_madvise_for_test(false);
            // SAFETY: locks this child process's future mappings.
            if unsafe { libc::mlockall(libc::MCL_FUTURE) } == 0 {
                once("mlockall(MCL_FUTURE)");
                // SAFETY: undoes it.
                unsafe { libc::munlockall() };
            } else {
                eprintln!("mlockall refused: the real case is not checked here");
            }
            zp_pool_free(pool.pool());
        }
        other => panic!("no scenario {other}"),
    }
    println!("scenario {name}: done");
}

#[test]
fn fork_while_a_freed_pools_buffer_comes_back() {
    in_child("fork_while_a_freed_pools_buffer_comes_back");
}

#[test]
fn fork_while_pool_creation_fails() {
    in_child("fork_while_pool_creation_fails");
}

#[test]
fn unpooled_release_when_madvise_fails() {
    in_child("unpooled_release_when_madvise_fails");
}

#[test]
fn pool_creation_probes_for_the_alignment_its_arc_needs() {
    in_child("arc_alignment");
}

#[test]
fn an_invalid_setting_needs_no_memory() {
    in_child("invalid_setting");
}

#[test]
fn every_allocation_failure_on_the_way_to_a_pool_and_a_first_call_is_reported() {
    in_child("countdown");
}

/// Issue 26, guarantee 2: a thread using 1,025 pools in turn keeps a warm
/// cache for each, although two of them share an entry of its
/// 1,024-entry table (ids differ by 1,024): no cache is rebuilt on every
/// alternating call. Every get after a pool's first must hit its cache.
#[test]
fn colliding_pools_keep_their_caches_warm() {
    let _serial = serial();
    const POOLS: usize = 1025;
    const ROUNDS: usize = 20;
    let mut pools = Vec::with_capacity(POOLS);
    let first = BufferPool::builder().tls_cache_size(2).min_buffer_size(4096).max_pooled_bytes(MIB).build().unwrap();
    let collide = first.id() + 1024;
    pools.push(first);
    // Ids are global: other tests may take some; build until one collides.
    while pools.last().unwrap().id() < collide {
        pools.push(BufferPool::builder().tls_cache_size(2).min_buffer_size(4096).max_pooled_bytes(MIB).build().unwrap());
    }
    assert!(pools.len() >= POOLS);
    let last = pools.len() - 1;
    assert_eq!(pools[0].id() % 1024, pools[last].id() % 1024);
    for _ in 0..ROUNDS {
        for p in &pools {
            drop(p.get(4096));
        }
    }
    let cold: Vec<String> = [0, last]
        .iter()
        .chain(&[1, last / 2])
        .map(|&i| (i, pools[i].stats()))
        .filter(|(_, s)| s.tls_hits + 1 < ROUNDS as u64)
        .map(|(i, s)| format!("pool #{i} (id {}): {} of {} gets hit the cache", pools[i].id(), s.tls_hits, s.gets))
        .collect();
    assert!(cold.is_empty(), "caches rebuilt:\n{}", cold.join("\n"));
}

/// Issue 26, the wrong-pool check is deterministic: a pool made after
/// another was freed, while a buffer of the freed one is still out, never
/// accepts that buffer (the freed pool's handle address, its buffers'
/// owner token, is not reused while one of them can name it); the freed
/// pool's pointer still takes it back.
#[test]
fn a_new_pool_never_accepts_a_freed_pools_buffer() {
    let _serial = serial();
    for round in 0..50 {
        let a = zp_pool_new();
        assert!(!a.is_null());
        let buf = zp_get(a, 4096 + round);
        assert!(!buf.is_null());
        zp_pool_free(a);
        let b = zp_pool_new();
        assert!(!b.is_null());
        assert_eq!(zp_put(b, buf), zp_status::ZP_ERR_WRONG_POOL, "round {round}: new pool {b:p}, freed {a:p}");
        assert_eq!(zp_put(a, buf), zp_status::ZP_OK, "round {round}");
        zp_pool_free(b);
    }
}

/// Issue 26, guarantee 8 through `zp_local`: a thread whose own handle on
/// pool A caches some of A's buffers, A freed, then one more call of that
/// thread on another pool: none of A's memory may stay mapped.
#[test]
fn a_zp_local_cache_of_a_freed_pool_goes_at_the_threads_next_call() {
    let _serial = serial();
    const N: usize = 8;
    let a = P(c_pool(64 * KIB, 16, 64 * MIB) as usize);
    let b = P(c_pool(4 * KIB, 16, 64 * MIB) as usize);
    let (to_t, from_main) = std::sync::mpsc::channel::<()>();
    let (to_main, from_t) = std::sync::mpsc::channel::<Vec<usize>>();
    let t = thread::spawn(move || {
        // A warm cache of B first, so the last call maps nothing new.
        let x = zp_get(b.pool(), 4096);
        assert_eq!(zp_put(b.pool(), x), zp_status::ZP_OK);
        let l = zp_local_new(a.pool());
        assert!(!l.is_null());
        let bufs: Vec<*mut c_void> = (0..N).map(|_| zp_local_get(l, 64 * KIB)).collect();
        assert!(bufs.iter().all(|p| !p.is_null()));
        let addrs = bufs.iter().map(|&p| p as usize).collect();
        for p in bufs {
            assert_eq!(zp_local_put(l, p), zp_status::ZP_OK);
        }
        to_main.send(addrs).unwrap();
        from_main.recv().unwrap(); // A is freed
        let x = zp_get(b.pool(), 4096);
        assert_eq!(zp_put(b.pool(), x), zp_status::ZP_OK);
        to_main.send(Vec::new()).unwrap();
        from_main.recv().unwrap();
        zp_local_free(l);
    });
    let addrs = from_t.recv().unwrap();
    assert_eq!(still_mapped(&addrs), N);
    zp_pool_free(a.pool());
    to_t.send(()).unwrap();
    from_t.recv().unwrap(); // T made its call on B
    let left = still_mapped(&addrs);
    to_t.send(()).unwrap();
    t.join().unwrap();
    zp_pool_free(b.pool());
    assert_eq!(left, 0, "{left} of {N} buffers of the freed pool still mapped after the thread's next call");
}
