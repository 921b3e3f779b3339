//! Pinned memory really is locked (VmLck grows, smaps shows `lo` and `dd`),
//! is unlocked on release, and a refused lock falls back without failing.
//! A binary of its own: VmLck is process-wide.
#![cfg(target_os = "linux")]

use std::process::Command;

use zeropool::BufferPool;

const KIB: usize = 1024;

/// A line of /proc/self/status, in kB.
fn status_kb(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// VmFlags of the mapping that contains `addr`.
fn vm_flags(addr: usize) -> String {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    for line in smaps.lines() {
        if let Some((range, _)) = line.split_once(' ') {
            if let Some((lo, hi)) = range.split_once('-') {
                if let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16)) {
                    inside = (lo..hi).contains(&addr);
                    continue;
                }
            }
        }
        if inside && line.starts_with("VmFlags:") {
            return line.to_string();
        }
    }
    panic!("no mapping holds {addr:#x}");
}

fn can_lock(bytes: usize) -> bool {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass.
    unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    root || lim.rlim_cur == libc::RLIM_INFINITY || lim.rlim_cur as usize >= bytes + status_kb("VmLck:") * KIB
}

#[test]
fn pinned_buffers_are_locked_and_not_dumped_then_unlocked_on_release() {
    let size = 256 * KIB;
    let n = 4;
    assert!(can_lock(n * size), "this test needs RLIMIT_MEMLOCK >= {} KiB or root", n * size / KIB);
    let pool = BufferPool::builder().min_buffer_size(size).tls_cache_size(0).pinned_memory(true).build().unwrap();
    let before = status_kb("VmLck:");
    let bufs: Vec<_> = (0..n).map(|_| pool.get(size)).collect();
    let locked = status_kb("VmLck:") - before;
    assert!(locked * KIB >= n * size, "VmLck grew by {locked} kB only");
    assert!(bufs.iter().all(|b| b.is_pinned()));
    let flags = vm_flags(bufs[0].as_ptr() as usize);
    assert!(flags.contains(" lo") && flags.contains(" dd"), "{flags}");
    assert_eq!(pool.stats().pin_failures, 0);

    // Still locked while idle in the pool; unlocked once released.
    drop(bufs);
    assert!((status_kb("VmLck:") - before) * KIB >= n * size, "idle buffers must stay locked");
    pool.trim();
    assert_eq!(status_kb("VmLck:"), before, "trim must unlock what it releases");
}

/// Runs in a child process with RLIMIT_MEMLOCK = 0 and no privileges.
#[test]
#[ignore = "run by refused_pins_fall_back_and_are_counted in a child process"]
fn refused_pin_child() {
    if std::env::var_os("ZP_PIN_CHILD").is_none() {
        return;
    }
    let zero = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain syscalls on this (child) process; 65534 is `nobody`.
    unsafe {
        assert_eq!(libc::setrlimit(libc::RLIMIT_MEMLOCK, &zero), 0);
        if libc::geteuid() == 0 {
            assert_eq!(libc::setgid(65534), 0);
            assert_eq!(libc::setuid(65534), 0);
        }
    }
    let pool = BufferPool::builder().min_buffer_size(64 * KIB).pinned_memory(true).build().unwrap();
    let mut a = pool.get(64 * KIB);
    let b = pool.get(10);
    assert!(!a.is_pinned() && !b.is_pinned());
    a.fill(1);
    assert!(b.iter().all(|&x| x == 0));
    assert_eq!(pool.stats().pin_failures, 2);
    assert_eq!(status_kb("VmLck:"), 0);
}

#[test]
fn refused_pins_fall_back_and_are_counted() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["refused_pin_child", "--exact", "--ignored", "--test-threads=1", "--nocapture"])
        .env("ZP_PIN_CHILD", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.contains("1 passed"), "child failed:\n{text}");
}

/// The same as an unprivileged user with a small RLIMIT_MEMLOCK, set up
/// from outside by .ci/harden:
///   prlimit --memlock=65536 setpriv --reuid=nobody --regid=nogroup
///     --clear-groups <this test binary> --ignored --exact <this test>
#[test]
#[ignore = "run by .ci/harden as an unprivileged user"]
fn unprivileged_user_gets_unpinned_buffers_counted_as_pin_failures() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain syscalls that write into our struct or have no inputs.
    let (euid, _) = unsafe { (libc::geteuid(), libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim)) };
    assert!(euid != 0, "run this test as an unprivileged user (see its doc comment)");
    assert!(lim.rlim_cur < 256 * KIB as u64, "run it with RLIMIT_MEMLOCK below 256 KiB");
    let n = 8;
    let pool = BufferPool::builder()
        .min_buffer_size(256 * KIB)
        .tls_cache_size(2)
        .num_shards(1)
        .max_buffers_per_shard(16)
        .pinned_memory(true)
        .build()
        .unwrap();
    let mut bufs: Vec<_> = (0..n).map(|_| pool.get(256 * KIB)).collect();
    assert!(bufs.iter().all(|b| !b.is_pinned()));
    assert_eq!(pool.stats().pin_failures, n as u64);
    assert_eq!(status_kb("VmLck:"), 0);
    for (i, b) in bufs.iter_mut().enumerate() {
        b.fill(i as u8 + 1);
    }
    drop(bufs);
    // Reused buffers come back zeroed, and no new lock is attempted.
    let again: Vec<_> = (0..n).map(|_| pool.get(256 * KIB)).collect();
    assert!(again.iter().all(|b| b.iter().all(|&x| x == 0)));
    let s = pool.stats();
    assert_eq!((s.pin_failures, s.outstanding), (n as u64, n as u64), "{s:?}");
}
