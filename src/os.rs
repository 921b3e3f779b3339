//! Calls into the operating system: page mappings, mlock, madvise, and the
//! scrub the optimizer may not remove.
//!
//! Under Miri, which has no such system calls, exactly these are swapped
//! out: `mmap`/`munmap` (reservations and mappings become zeroed
//! allocations, commits always succeed), `madvise(MADV_DONTNEED)` (a
//! memset, so released pages still read as zero), `mincore` (every page
//! counts as resident), `mlock` (refused, as for an unprivileged user),
//! and, for Miri's isolation, the thread pointer (a thread-local's address
//! instead), the CPU count and the clock (std's), physical memory and the
//! cgroup limit (unknown). Everything else runs as
//! built, the zeroing included (the memset and, where the crate is built
//! with AVX2, the store loop); only the scrub's empty `asm!` barrier is
//! left out (Miri cannot run `asm!`, and does not remove the stores it
//! guards). So the pool logic above runs unchanged.
#![allow(unsafe_code)]

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The system page size, read once.
pub(crate) fn page_size() -> usize {
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    let cached = PAGE.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    // SAFETY: sysconf has no preconditions.
    let raw = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let page = if raw > 0 && (raw as usize).is_power_of_two() { raw as usize } else { 4096 };
    PAGE.store(page, Ordering::Relaxed);
    page
}

/// Maps `len` bytes (a multiple of the page size) of zeroed, private memory.
pub(crate) fn map_zeroed(len: usize) -> Option<NonNull<u8>> {
    debug_assert!(len > 0 && len % page_size() == 0);
    #[cfg(not(miri))]
    {
        // SAFETY: an anonymous private mapping with no address hint touches
        // no existing memory; failure is reported as MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            None
        } else {
            NonNull::new(p.cast())
        }
    }
    #[cfg(miri)]
    {
        let layout = std::alloc::Layout::from_size_align(len, page_size()).ok()?;
        // SAFETY: the layout has a non-zero size.
        NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) })
    }
}

/// Returns a mapping made by [`map_zeroed`] to the system.
///
/// # Safety
/// `ptr` and `len` must be exactly those of a live mapping from
/// [`map_zeroed`], and nothing may use that memory afterwards.
pub(crate) unsafe fn unmap(ptr: NonNull<u8>, len: usize) {
    #[cfg(not(miri))]
    {
        // SAFETY: guaranteed by the caller. munmap of a whole mapping only
        // fails for invalid arguments, which the caller rules out.
        unsafe { libc::munmap(ptr.as_ptr().cast(), len) };
    }
    #[cfg(miri)]
    {
        let layout = std::alloc::Layout::from_size_align(len, page_size()).unwrap();
        // SAFETY: guaranteed by the caller; map_zeroed used this layout.
        unsafe { std::alloc::dealloc(ptr.as_ptr(), layout) };
    }
}

/// Reserves `len` bytes of address space aligned to `align` (a power of
/// two, at least a page), inaccessible until [`commit`]ted. A reservation
/// costs no memory and, under strict overcommit, no commit charge; only
/// `RLIMIT_AS` counts it.
pub(crate) fn reserve(len: usize, align: usize) -> Option<NonNull<u8>> {
    debug_assert!(len > 0 && len % page_size() == 0 && align.is_power_of_two() && align >= page_size());
    #[cfg(not(miri))]
    {
        let over = len.checked_add(align)?;
        // SAFETY: an anonymous private mapping with no address hint touches
        // no existing memory; failure is reported as MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                over,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        let start = p as usize;
        let aligned = (start + align - 1) & !(align - 1);
        let head = aligned - start;
        let tail = over - head - len;
        // SAFETY: both trims lie inside the mapping just made and leave the
        // aligned `len` bytes in the middle alone.
        unsafe {
            if head > 0 {
                libc::munmap(p, head);
            }
            if tail > 0 {
                libc::munmap(p.cast::<u8>().add(head + len).cast(), tail);
            }
            NonNull::new(p.cast::<u8>().add(head))
        }
    }
    #[cfg(miri)]
    {
        let layout = std::alloc::Layout::from_size_align(len, align).ok()?;
        // SAFETY: the layout has a non-zero size.
        NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) })
    }
}

/// Returns a whole reservation from [`reserve`] to the system.
///
/// # Safety
/// `ptr`, `len` and `align` must be exactly those of a live reservation,
/// and nothing may use that memory afterwards.
pub(crate) unsafe fn unreserve(ptr: NonNull<u8>, len: usize, align: usize) {
    #[cfg(not(miri))]
    {
        let _ = align;
        // SAFETY: guaranteed by the caller.
        unsafe { libc::munmap(ptr.as_ptr().cast(), len) };
    }
    #[cfg(miri)]
    {
        let layout = std::alloc::Layout::from_size_align(len, align).unwrap();
        // SAFETY: guaranteed by the caller; `reserve` used this layout.
        unsafe { std::alloc::dealloc(ptr.as_ptr(), layout) };
    }
}

/// Makes `len` bytes of a reservation readable and writable (zero until
/// written). False when the system refuses (out of memory, strict
/// overcommit, `RLIMIT_AS`).
///
/// # Safety
/// The range must lie inside a live reservation of ours.
pub(crate) unsafe fn commit(ptr: NonNull<u8>, len: usize) -> bool {
    #[cfg(not(miri))]
    {
        // SAFETY: the range is ours (caller's promise); mprotect changes
        // only its access rights.
        unsafe { libc::mprotect(ptr.as_ptr().cast(), len, libc::PROT_READ | libc::PROT_WRITE) == 0 }
    }
    #[cfg(miri)]
    {
        let _ = (ptr, len);
        true
    }
}

/// Gives the pages of a committed range back to the system: they stay
/// mapped, and read as zero from now on (a stale pointer reads zeros,
/// never another mapping). False when the system refused (e.g. the pages
/// are locked): the caller must then zero them itself.
///
/// # Safety
/// The range must be committed memory of ours that no live buffer uses.
pub(crate) unsafe fn decommit(ptr: NonNull<u8>, len: usize) -> bool {
    if FAIL_DECOMMIT.load(Ordering::Relaxed) {
        return false;
    }
    #[cfg(not(miri))]
    {
        // SAFETY: the range is ours and unused (caller's promise).
        unsafe { libc::madvise(ptr.as_ptr().cast(), len, libc::MADV_DONTNEED) == 0 }
    }
    #[cfg(miri)]
    {
        // SAFETY: as above; Miri has no madvise, so zero it by hand.
        unsafe { std::ptr::write_bytes(ptr.as_ptr(), 0, len) };
        true
    }
}

/// Set by [`__fail_madvise_for_test`]: every [`decommit`] fails.
static FAIL_DECOMMIT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// TEST-ONLY hook, not part of the API (hidden, may change without notice):
/// while `on`, giving pages back (`madvise(MADV_DONTNEED)`) fails, as it
/// does for locked pages (e.g. after `mlockall(MCL_FUTURE)`), so the
/// fallbacks (scrub by hand) run.
#[doc(hidden)]
pub fn __fail_madvise_for_test(on: bool) {
    FAIL_DECOMMIT.store(on, Ordering::Relaxed);
}

/// Decommits a range and makes it inaccessible again, keeping the address
/// space reserved (a stale access faults instead of reaching another
/// mapping). Used for unpooled buffers kept for reuse.
///
/// # Safety
/// As [`decommit`].
pub(crate) unsafe fn retire_range(ptr: NonNull<u8>, len: usize) {
    // SAFETY: as the caller promises.
    unsafe { decommit(ptr, len) };
    #[cfg(not(miri))]
    // SAFETY: as above; only the access rights change.
    unsafe {
        libc::mprotect(ptr.as_ptr().cast(), len, libc::PROT_NONE);
    }
}

/// Asks for transparent huge pages on a reservation (`MADV_HUGEPAGE`:
/// needed where the system's mode is `madvise`, harmless under `always`,
/// ignored under `never`). Best effort: a refusal leaves small pages.
///
/// # Safety
/// The range must be a reservation (or mapping) of ours.
pub(crate) unsafe fn advise_huge(ptr: NonNull<u8>, len: usize) {
    #[cfg(all(not(miri), any(target_os = "linux", target_os = "android")))]
    // SAFETY: the range is ours (caller's promise); the advice changes how
    // its pages are backed, never their contents.
    unsafe {
        libc::madvise(ptr.as_ptr().cast(), len, libc::MADV_HUGEPAGE);
    }
    #[cfg(not(all(not(miri), any(target_os = "linux", target_os = "android"))))]
    let _ = (ptr, len);
}

/// Locks the pages in memory and keeps them out of core dumps.
/// Returns false when the system refused the lock (RLIMIT_MEMLOCK, EPERM);
/// the memory is still usable, just not pinned.
///
/// # Safety
/// `ptr`/`len` must describe live, accessible memory of ours (a committed
/// part of a [`reserve`]d range, or a [`map_zeroed`] mapping).
pub(crate) unsafe fn pin(ptr: NonNull<u8>, len: usize) -> bool {
    #[cfg(not(miri))]
    {
        let addr = ptr.as_ptr().cast();
        // SAFETY: the range is a live mapping of ours (caller's promise);
        // mlock and madvise do not change its contents.
        unsafe {
            if libc::mlock(addr, len) != 0 {
                return false;
            }
            libc::madvise(addr, len, libc::MADV_DONTDUMP);
        }
        true
    }
    #[cfg(miri)]
    {
        let _ = (ptr, len);
        false
    }
}

/// Undoes [`pin`] before the mapping goes back to the system.
///
/// # Safety
/// `ptr`/`len` must describe a live mapping that [`pin`] locked.
pub(crate) unsafe fn unpin(ptr: NonNull<u8>, len: usize) {
    #[cfg(not(miri))]
    // SAFETY: the range is a live, locked mapping of ours.
    unsafe {
        libc::munlock(ptr.as_ptr().cast(), len);
    }
    #[cfg(miri)]
    let _ = (ptr, len);
}

/// Above this many bytes glibc's memset switches to `rep stosb`. On the AMD
/// EPYC we measured, a loop of 32-byte stores zeroes faster from here to
/// 512 KiB (a fill then a zero of 64 KiB: 711 against 789 ns), and the lines
/// it leaves are read back sooner: with `Always`'s get-side check right
/// after the put's scrub, a 4 KiB get+fill+put took 93 ns, not 107.
const VECTOR_ZERO_ABOVE: usize = 2 << 10;
/// Up to this many bytes the store loop beats glibc's memset (a fill then a
/// zero of 512 KiB: 5.49 against 6.18 µs); at 1 MiB, past the L2 cache,
/// glibc's is faster (12.7 against 13.7 µs).
const VECTOR_ZERO_UPTO: usize = 512 << 10;

/// Zeroes `len` bytes at `ptr`: the fastest way we measured for the size,
/// which the optimizer may still remove when nothing reads the bytes
/// afterwards (use [`scrub`] for memory about to be released).
///
/// # Safety
/// `ptr` must be valid for writes of `len` bytes.
#[inline]
pub(crate) unsafe fn zero(ptr: NonNull<u8>, len: usize) {
    #[cfg(target_arch = "x86_64")]
    if len > VECTOR_ZERO_ABOVE
        && len <= VECTOR_ZERO_UPTO
        && ptr.as_ptr() as usize % 32 == 0
        && std::is_x86_feature_detected!("avx2")
    {
        // SAFETY: the CPU has AVX2 (checked just above); the range is the
        // caller's, and `ptr` is 32-byte aligned (checked too).
        unsafe { zero_avx2(ptr.as_ptr(), len) };
        return;
    }
    // SAFETY: the caller guarantees the range is writable.
    unsafe { std::ptr::write_bytes(ptr.as_ptr(), 0, len) };
}

/// Zeroes with 32-byte stores, four per loop. The stores are volatile so
/// that LLVM does not turn the loop back into a memset call.
///
/// # Safety
/// The CPU must have AVX2, `ptr` must be 32-byte aligned and valid for
/// writes of `len` bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn zero_avx2(ptr: *mut u8, len: usize) {
    use std::arch::x86_64::{__m256i, _mm256_setzero_si256};
    debug_assert_eq!(ptr as usize % 32, 0);
    let zero = _mm256_setzero_si256();
    let blocks = len / 128;
    let mut at = ptr.cast::<__m256i>();
    for _ in 0..blocks {
        // SAFETY: block b covers bytes [128 b, 128 b + 128) < len of the
        // caller's range; `at` stays 32-byte aligned (the caller's promise,
        // then steps of 32 bytes).
        unsafe {
            at.write_volatile(zero);
            at.add(1).write_volatile(zero);
            at.add(2).write_volatile(zero);
            at.add(3).write_volatile(zero);
            at = at.add(4);
        }
    }
    let done = blocks * 128;
    if done < len {
        // SAFETY: the rest of the caller's range.
        unsafe { std::ptr::write_bytes(ptr.add(done), 0, len - done) };
    }
}

/// Zeroes `len` bytes at `ptr` in a way the optimizer cannot drop, even
/// when the memory is freed right after (a plain `fill(0)` before a
/// deallocation is removed by LLVM).
///
/// # Safety
/// `ptr` must be valid for writes of `len` bytes.
#[inline]
pub(crate) unsafe fn scrub(ptr: NonNull<u8>, len: usize) {
    // SAFETY: the caller guarantees the range is writable.
    unsafe { zero(ptr, len) };
    // The barrier takes the pointer and may read memory (no `nomem`), so the
    // stores above must have happened: glibc's explicit_bzero trick.
    #[cfg(all(not(miri), any(target_arch = "x86_64", target_arch = "x86", target_arch = "aarch64")))]
    // SAFETY: an empty asm block with no effects beyond the compiler's view.
    unsafe {
        std::arch::asm!("/* {0} */", in(reg) ptr.as_ptr(), options(nostack, preserves_flags));
    }
    #[cfg(not(any(miri, target_arch = "x86_64", target_arch = "x86", target_arch = "aarch64")))]
    std::sync::atomic::compiler_fence(Ordering::SeqCst);
}

/// Scrubs the pages of `len` bytes at `ptr` that are resident: pages never
/// touched are still the system's zero page (or not there at all), and
/// writing them would only fault them in.
///
/// # Safety
/// `ptr`/`len` must describe live, writable memory of ours (a committed
/// part of a [`reserve`]d range, or a [`map_zeroed`] mapping).
pub(crate) unsafe fn scrub_resident(ptr: NonNull<u8>, len: usize) {
    #[cfg(not(miri))]
    {
        const CHUNK: usize = 1024;
        let page = page_size();
        let mut resident = [0u8; CHUNK];
        let mut off = 0;
        while off < len {
            let span = (len - off).min(CHUNK * page);
            // SAFETY: off < len, so the chunk lies inside the caller's mapping.
            let at = unsafe { ptr.add(off) };
            // SAFETY: `resident` has a byte for each of the span's pages.
            let ok = unsafe { libc::mincore(at.as_ptr().cast(), span, resident.as_mut_ptr()) } == 0;
            for (p, flags) in resident.iter().enumerate().take(span.div_ceil(page)) {
                if !ok || flags & 1 != 0 {
                    let n = page.min(span - p * page);
                    // SAFETY: page p of this chunk, inside the mapping.
                    unsafe { scrub(at.add(p * page), n) };
                }
            }
            off += span;
        }
    }
    #[cfg(miri)]
    // SAFETY: guaranteed by the caller.
    unsafe {
        scrub(ptr, len)
    }
}

/// Marks `len` bytes at `ptr` as off limits to AddressSanitizer, so any
/// access to an idle buffer is reported as a use-after-poison. Only in
/// builds with `--cfg zeropool_asan` (the hardening suite's ASan runs).
#[cfg(zeropool_asan)]
pub(crate) fn poison(ptr: NonNull<u8>, len: usize) {
    // SAFETY: only ASan's shadow memory for the range changes; the range is
    // ours (a live mapping), so no other object's state is affected.
    unsafe { asan::__asan_poison_memory_region(ptr.as_ptr().cast(), len) };
}

/// Undoes [`poison`]: the buffer is handed out again or going back to the
/// system (where the address may be reused by anyone).
#[cfg(zeropool_asan)]
pub(crate) fn unpoison(ptr: NonNull<u8>, len: usize) {
    // SAFETY: as in `poison`.
    unsafe { asan::__asan_unpoison_memory_region(ptr.as_ptr().cast(), len) };
}

#[cfg(zeropool_asan)]
mod asan {
    extern "C" {
        pub(super) fn __asan_poison_memory_region(addr: *const libc::c_void, size: usize);
        pub(super) fn __asan_unpoison_memory_region(addr: *const libc::c_void, size: usize);
    }
}

/// 64 random bits from the kernel. If getrandom fails (very old kernels,
/// seccomp), falls back to a mix of the clock and an address, which is
/// unpredictable enough for canaries though not for cryptography.
pub(crate) fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most 8 bytes into our buffer (Miri too
    // implements it, isolated or not).
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n == 8 {
        return u64::from_ne_bytes(bytes);
    }
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let here = &mut bytes as *mut _ as usize as u64;
    (t ^ here.rotate_left(32)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// An address unique to the calling thread among live threads, read
/// without a thread-local lookup where the architecture has a thread
/// pointer register (x86-64: `%fs:0`, aarch64: `tpidr_el0`).
#[inline(always)]
pub(crate) fn thread_pointer() -> usize {
    #[cfg(all(not(miri), target_arch = "x86_64", target_os = "linux"))]
    {
        let tp: usize;
        // SAFETY: on x86-64 Linux the word at %fs:0 is the thread control
        // block's pointer to itself (the ABI's TLS layout); reading it has
        // no side effects.
        unsafe {
            std::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp, options(nostack, readonly, preserves_flags))
        };
        tp
    }
    #[cfg(all(not(miri), target_arch = "aarch64", target_os = "linux"))]
    {
        let tp: usize;
        // SAFETY: reading the thread pointer register has no side effects.
        unsafe { std::arch::asm!("mrs {}, tpidr_el0", out(reg) tp, options(nostack, nomem, preserves_flags)) };
        tp
    }
    #[cfg(any(miri, not(all(any(target_arch = "x86_64", target_arch = "aarch64"), target_os = "linux"))))]
    {
        thread_local! {
            static HERE: u8 = const { 0 };
        }
        HERE.with(|h| h as *const u8 as usize)
    }
}

/// The number of CPUs this process may run on (its affinity mask), read
/// without allocating; at least 1.
pub(crate) fn cpu_count() -> usize {
    static CPUS: AtomicUsize = AtomicUsize::new(0);
    let cached = CPUS.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    #[cfg(not(miri))]
    let n = {
        // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most
        // its size into it.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let ok = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } == 0;
        // SAFETY: `set` was filled in by the kernel (or is all zero).
        let counted = if ok { (unsafe { libc::CPU_COUNT(&set) }) as usize } else { 0 };
        if counted > 0 {
            counted
        } else {
            // SAFETY: sysconf has no preconditions.
            (unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }).max(1) as usize
        }
    };
    #[cfg(miri)]
    let n = std::thread::available_parallelism().map_or(1, usize::from);
    CPUS.store(n, Ordering::Relaxed);
    n
}

/// A monotonic clock in nanoseconds, coarse (the kernel's tick, a few
/// milliseconds): what idle decay measures with, off the fast paths.
pub(crate) fn monotonic_ns() -> u64 {
    #[cfg(not(miri))]
    {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: writes one timespec, which `ts` is.
        if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) } != 0 {
            return 0;
        }
        (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
    }
    #[cfg(miri)]
    {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        START.get_or_init(std::time::Instant::now).elapsed().as_nanos() as u64
    }
}

/// The memory this process may use, read once without allocating:
/// the smallest cgroup v2 `memory.max` on the way from the process's own
/// cgroup up to the root where one is set, else physical memory. 0 when
/// neither can be read.
pub(crate) fn memory_limit() -> u64 {
    static LIMIT: AtomicU64 = AtomicU64::new(0);
    let cached = LIMIT.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    let n = usable_memory(cgroup_memory_max(), physical_memory());
    LIMIT.store(n, Ordering::Relaxed);
    n
}

/// The memory a process may use from its two sources: the cgroup limit
/// where one is set (and below physical memory), else physical memory.
pub(crate) fn usable_memory(cgroup_max: Option<u64>, physical: u64) -> u64 {
    match cgroup_max {
        Some(limit) if limit > 0 && (physical == 0 || limit < physical) => limit,
        _ => physical,
    }
}

/// A cgroup v2 `memory.max` file's value: a number of bytes, or None for
/// `max` (no limit) and anything that is not a number.
pub(crate) fn parse_memory_max(text: &[u8]) -> Option<u64> {
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    if text.is_empty() || text.len() > 20 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    text.iter().try_fold(0u64, |v, &d| v.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

/// Physical memory in bytes (`sysconf`), 0 when unknown.
fn physical_memory() -> u64 {
    #[cfg(not(miri))]
    {
        // SAFETY: sysconf has no preconditions.
        let (pages, size) = unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
        if pages > 0 && size > 0 {
            return (pages as u64).saturating_mul(size as u64);
        }
        0
    }
    #[cfg(miri)]
    0
}

/// Reads a small file into `buf` (at most its size, NUL-free), without
/// allocating; the bytes read, or None.
#[cfg(not(miri))]
fn read_small(path: &[u8], buf: &mut [u8]) -> Option<usize> {
    let mut p = [0u8; 600];
    if path.len() >= p.len() || path.contains(&0) {
        return None;
    }
    p[..path.len()].copy_from_slice(path);
    // SAFETY: `p` is a NUL-terminated path (zeroed past `path`).
    let fd = unsafe { libc::open(p.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: writes at most `buf.len() - got` bytes into `buf[got..]`.
        let n = unsafe { libc::read(fd, buf[got..].as_mut_ptr().cast(), buf.len() - got) };
        if n <= 0 {
            break;
        }
        got += n as usize;
    }
    // SAFETY: `fd` is ours, closed once.
    unsafe { libc::close(fd) };
    Some(got)
}

/// The smallest `memory.max` set on this process's cgroup v2 path (its own
/// cgroup and each ancestor), or None (no cgroup v2, or `max` everywhere).
fn cgroup_memory_max() -> Option<u64> {
    #[cfg(not(miri))]
    {
        let mut own = [0u8; 512];
        let n = read_small(b"/proc/self/cgroup", &mut own)?;
        // cgroup v2: the line "0::/path".
        let line = own[..n].split(|&b| b == b'\n').find(|l| l.starts_with(b"0::"))?;
        let rel = &line[3..];
        const ROOT: &[u8] = b"/sys/fs/cgroup";
        const FILE: &[u8] = b"/memory.max";
        let mut path = [0u8; 580];
        if ROOT.len() + rel.len() + FILE.len() > path.len() {
            return None;
        }
        let mut best: Option<u64> = None;
        // Each ancestor: the prefixes of `rel` that end before a '/'.
        let mut end = rel.len();
        loop {
            let dir = &rel[..end];
            let mut len = 0;
            for part in [ROOT, dir, FILE] {
                path[len..len + part.len()].copy_from_slice(part);
                len += part.len();
            }
            let mut text = [0u8; 32];
            if let Some(got) = read_small(&path[..len], &mut text) {
                if let Some(v) = parse_memory_max(&text[..got]) {
                    best = Some(best.map_or(v, |b| b.min(v)));
                }
            }
            match dir.iter().rposition(|&b| b == b'/') {
                Some(i) if end > 0 => end = i,
                _ => break,
            }
        }
        best
    }
    #[cfg(miri)]
    None
}

/// Moves `value` to the heap, or gives it back when the allocator refuses
/// (rather than aborting the process as `Box::new` would).
pub(crate) fn try_box<T>(value: T) -> Result<Box<T>, T> {
    let layout = std::alloc::Layout::new::<T>();
    if layout.size() == 0 {
        return Ok(Box::new(value));
    }
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { std::alloc::alloc(layout) }.cast::<T>();
    if p.is_null() {
        return Err(value);
    }
    // SAFETY: `p` is fresh, aligned and sized for T; Box::from_raw takes
    // ownership of memory from the global allocator with T's layout.
    unsafe {
        p.write(value);
        Ok(Box::from_raw(p))
    }
}

/// Whether the allocator can provide the block of an `Arc<T>` right now:
/// a probe allocation of that block's size and alignment (two counts, then
/// `T`: `T`'s alignment, 128 for a cache-padded `T`, which an allocator
/// serves from other blocks than a 16-byte-aligned one of the same size),
/// freed at once. Used before `Arc::new`, which has no fallible form: the
/// freed block is what the next allocation of that layout on this thread
/// gets back, so a refusal becomes an error instead of an abort. (Another
/// thread may still take it in between: a probe narrows the window, it
/// cannot close it.)
pub(crate) fn can_allocate_arc<T>() -> bool {
    let counts = std::alloc::Layout::new::<[std::sync::atomic::AtomicUsize; 2]>();
    let Ok((layout, _)) = counts.extend(std::alloc::Layout::new::<T>()) else { return false };
    let layout = layout.pad_to_align();
    // SAFETY: non-zero size (the counts).
    // `black_box`: LLVM removes an allocation whose block is only freed,
    // and the probe with it (it did: the old probe was no probe at all).
    let p = std::hint::black_box(unsafe { std::alloc::alloc(layout) });
    if p.is_null() {
        return false;
    }
    // SAFETY: just allocated with this layout.
    unsafe { std::alloc::dealloc(p, layout) };
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_max_parses_numbers_only() {
        assert_eq!(parse_memory_max(b"8589934592\n"), Some(8 << 30));
        assert_eq!(parse_memory_max(b"1048576"), Some(1 << 20));
        assert_eq!(parse_memory_max(b"max\n"), None, "no limit");
        assert_eq!(parse_memory_max(b""), None, "empty");
        assert_eq!(parse_memory_max(b"12ab\n"), None, "garbage");
        assert_eq!(parse_memory_max(b"-5"), None, "garbage");
        assert_eq!(parse_memory_max(b"99999999999999999999999"), None, "overflow");
    }

    #[test]
    fn usable_memory_takes_the_cgroup_limit_only_when_set_and_lower() {
        const GIB: u64 = 1 << 30;
        assert_eq!(usable_memory(Some(2 * GIB), 24 * GIB), 2 * GIB);
        assert_eq!(usable_memory(None, 24 * GIB), 24 * GIB, "missing or `max`: physical memory");
        assert_eq!(usable_memory(Some(64 * GIB), 24 * GIB), 24 * GIB, "a limit above physical memory");
        assert_eq!(usable_memory(Some(0), 24 * GIB), 24 * GIB);
        assert_eq!(usable_memory(Some(GIB), 0), GIB, "physical memory unknown");
    }

    #[test]
    fn memory_limit_is_read() {
        let n = memory_limit();
        assert!(cfg!(miri) || n >= 64 << 20, "{n}");
        assert_eq!(memory_limit(), n, "read once");
    }

    /// The AVX2 store loop itself, called directly (so that the test
    /// cannot pass through glibc's memset alone): exactly its range, with
    /// a byte tail. Where the CPU lacks AVX2 the loop cannot run, which CI
    /// treats as a failure.
    ///
    /// Under Miri the loop runs where the crate is built with AVX2
    /// (`-C target-feature=+avx2`, `.ci/harden miri`'s second pass, which
    /// sets `ZP_EXPECT_AVX2`); the first pass, built without it, skips.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_avx2_loop_clears_exactly_its_range() {
        if !std::is_x86_feature_detected!("avx2") {
            assert!(std::env::var_os("ZP_EXPECT_AVX2").is_none(), "built for AVX2 but none detected");
            if cfg!(miri) {
                return;
            }
            assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "no AVX2: the store loop cannot be tested");
            eprintln!("skipped: no AVX2 on this CPU");
            return;
        }
        const PAD: usize = 96;
        let lens = [0usize, 1, 31, 32, 33, 127, 128, 129, 2049, 4096, 4097, 65536 - 31];
        // Miri checks each byte slowly: the edges, not the large ones.
        let lens = if cfg!(miri) { &lens[..10] } else { &lens[..] };
        for &len in lens {
            let mut bytes = vec![0xA5u8; PAD + len + PAD + 32];
            let start = bytes.as_ptr().align_offset(32) + PAD;
            // SAFETY: the CPU has AVX2 (checked above); `start` is 32-byte
            // aligned and `len` bytes from it lie inside `bytes`.
            unsafe { zero_avx2(bytes.as_mut_ptr().add(start), len) };
            assert!(bytes[start..start + len].iter().all(|&b| b == 0), "len {len}: a byte inside was left");
            assert!(bytes[..start].iter().all(|&b| b == 0xA5), "len {len}: a byte before was cleared");
            assert!(bytes[start + len..].iter().all(|&b| b == 0xA5), "len {len}: a byte after was cleared");
        }
    }

    /// `zero` clears exactly its range, whichever way it takes: glibc's
    /// memset, or the store loop with a byte tail, aligned or not.
    #[test]
    fn zero_clears_exactly_its_range() {
        const PAD: usize = 128;
        let lens = [0, 1, 2048, 2049, 4096, 4097, 4096 + 127, 4096 + 128, 65536 - 31, 512 << 10, (512 << 10) + 1];
        // Miri checks each byte slowly: 4097 takes the store loop where
        // the crate is built with AVX2, the memset otherwise.
        let lens = if cfg!(miri) { &lens[..6] } else { &lens[..] };
        for &len in lens {
            for offset in [0, 1, 32, 48] {
                let mut bytes = vec![0xA5u8; PAD + offset + len + 2 * PAD + 64];
                // Start on a 32-byte boundary (plus `offset`), so both paths run.
                let base = bytes.as_ptr().align_offset(32);
                let start = base + PAD + offset;
                let ptr = NonNull::new(bytes[start..].as_mut_ptr()).unwrap();
                // SAFETY: `len` bytes from `start` lie inside `bytes`.
                unsafe { zero(ptr, len) };
                assert!(bytes[start..start + len].iter().all(|&b| b == 0), "len {len} offset {offset}");
                assert!(bytes[..start].iter().all(|&b| b == 0xA5), "before: len {len} offset {offset}");
                assert!(bytes[start + len..].iter().all(|&b| b == 0xA5), "after: len {len} offset {offset}");
            }
        }
    }
}
