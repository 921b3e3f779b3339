//! Random sequences of C API calls over several pools, misuse included,
//! checked against a model of what each call must do:
//! - every get from a zeroing pool (Always, OnPut) is all zero;
//! - no two live buffers overlap, and a buffer keeps its owner's bytes
//!   until it is returned;
//! - each misuse gets its exact status (NULL_POINTER, INVALID_ARGUMENT,
//!   TOO_LARGE, FOREIGN_BUFFER, WRONG_POOL, DOUBLE_PUT, OVERFLOW);
//! - the stats agree with the model (gets, outstanding, rejected puts),
//!   idle bytes stay within the budget, and nothing is idle after a trim.
//!
//! The C functions are called through their `extern "C"` declarations,
//! exactly as a C program links them.
#![no_main]

use std::collections::{BTreeMap, HashMap};
use std::ffi::c_void;
use std::ptr;

use libfuzzer_sys::fuzz_target;
use zeropool::Stats;

type Status = u32;
const OK: Status = 0;
const NULL_POINTER: Status = 1;
const INVALID_ARGUMENT: Status = 2;
const TOO_LARGE: Status = 4;
const FOREIGN_BUFFER: Status = 5;
const WRONG_POOL: Status = 6;
const DOUBLE_PUT: Status = 7;
const OVERFLOW: Status = 8;

const ALWAYS: u32 = 0;
const NEVER: u32 = 2;

#[repr(C)]
struct ZpPool {
    _opaque: [u8; 0],
}
#[repr(C)]
struct ZpConfig {
    _opaque: [u8; 0],
}

extern "C" {
    fn zp_config_new() -> *mut ZpConfig;
    fn zp_config_free(cfg: *mut ZpConfig);
    fn zp_config_set_tls_cache_size(cfg: *mut ZpConfig, buffers: usize) -> Status;
    fn zp_config_set_min_buffer_size(cfg: *mut ZpConfig, bytes: usize) -> Status;
    fn zp_config_set_max_buffers_per_shard(cfg: *mut ZpConfig, buffers: usize) -> Status;
    fn zp_config_set_num_shards(cfg: *mut ZpConfig, shards: usize) -> Status;
    fn zp_config_set_pinned_memory(cfg: *mut ZpConfig, pinned: bool) -> Status;
    fn zp_config_set_eviction_policy(cfg: *mut ZpConfig, policy: u32) -> Status;
    fn zp_config_set_zeroing(cfg: *mut ZpConfig, zeroing: u32) -> Status;
    fn zp_config_set_max_pooled_bytes(cfg: *mut ZpConfig, bytes: usize) -> Status;
    fn zp_pool_new_with_config(cfg: *const ZpConfig, out: *mut *mut ZpPool) -> Status;
    fn zp_pool_free(pool: *mut ZpPool);
    fn zp_pool_stats(pool: *const ZpPool, out: *mut Stats) -> Status;
    fn zp_pool_trim(pool: *mut ZpPool) -> Status;
    fn zp_get(pool: *mut ZpPool, size: usize) -> *mut c_void;
    fn zp_last_error() -> Status;
    fn zp_put(pool: *mut ZpPool, buf: *mut c_void) -> Status;
}

/// The fuzzer's bytes, read as small choices; zeros once they run out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.byte() as usize % from.len()]
    }
    fn done(&self) -> bool {
        self.0.is_empty()
    }
}

struct PoolModel {
    handle: *mut ZpPool,
    zeroing: u32,
    budget: usize,
    open: bool,
    gets: u64,
    rejected: u64,
}

struct Live {
    pool: usize,
    handle: *mut ZpPool,
    size: usize,
    fill: u8,
}

/// What the slot metadata says about an address, as far as this run can
/// tell: handed out with a handle, or returned (idle or released: the
/// memory stays the pool's) to pool `usize`.
#[derive(Clone, Copy)]
enum Record {
    Out(*mut ZpPool),
    Idle(usize),
}

#[derive(Default)]
struct Model {
    pools: Vec<PoolModel>,
    live: BTreeMap<usize, Live>,
    records: HashMap<usize, Record>,
    returned: Vec<usize>,
}

const SIZES: &[usize] = &[0, 1, 100, 4095, 4096, 4097, 65536, 100_000, 262_144, (1 << 20) + 1, 3_000_000];
const HUGE: &[usize] = &[usize::MAX, usize::MAX / 2, 1 << 49];

impl Model {
    fn open_pools(&self) -> Vec<usize> {
        (0..self.pools.len()).filter(|&i| self.pools[i].open).collect()
    }

    fn new_pool(&mut self, input: &mut Input) {
        if self.open_pools().len() >= 4 {
            return;
        }
        // SAFETY (all calls below): the C API's contract, kept by the model.
        let cfg = unsafe { zp_config_new() };
        assert!(!cfg.is_null());
        // Each setting may first be tried with an invalid value, which must
        // be refused; then a valid one is set, so the model knows them all.
        let zeroing = input.pick(&[0u32, 1, 2, 3, 0xFFFF_FFFF]);
        let policy = input.pick(&[0u32, 1, 2]);
        let tls = input.pick(&[0usize, 1, 4, 8, 5000]);
        let shards = input.pick(&[1usize, 2, 4, 3]);
        let per_shard = input.pick(&[1usize, 4, 16, 0]);
        let min = input.pick(&[4096usize, 8192, 65536, 0]);
        let budget = input.pick(&[Some(0usize), Some(64 << 10), Some(1 << 20), None]);
        let pinned = input.byte() % 8 == 0;
        unsafe {
            let zeroing = if zeroing <= NEVER {
                assert_eq!(zp_config_set_zeroing(cfg, zeroing), OK);
                zeroing
            } else {
                assert_eq!(zp_config_set_zeroing(cfg, zeroing), INVALID_ARGUMENT);
                ALWAYS // the default, unchanged
            };
            let want = if policy <= 1 { OK } else { INVALID_ARGUMENT };
            assert_eq!(zp_config_set_eviction_policy(cfg, policy), want);
            let fallback = |bad: bool, status: Status| assert_eq!(status, if bad { INVALID_ARGUMENT } else { OK });
            fallback(tls > 1024, zp_config_set_tls_cache_size(cfg, tls));
            fallback(!shards.is_power_of_two(), zp_config_set_num_shards(cfg, shards));
            fallback(per_shard == 0, zp_config_set_max_buffers_per_shard(cfg, per_shard));
            fallback(min == 0, zp_config_set_min_buffer_size(cfg, min));
            let (tls, shards, per_shard, min) = (
                if tls > 1024 { 2 } else { tls },
                if shards.is_power_of_two() { shards } else { 2 },
                per_shard.max(2),
                min.max(4096),
            );
            for status in [
                zp_config_set_tls_cache_size(cfg, tls),
                zp_config_set_num_shards(cfg, shards),
                zp_config_set_max_buffers_per_shard(cfg, per_shard),
                zp_config_set_min_buffer_size(cfg, min),
                zp_config_set_pinned_memory(cfg, pinned),
            ] {
                assert_eq!(status, OK);
            }
            let budget = match budget {
                Some(bytes) => {
                    assert_eq!(zp_config_set_max_pooled_bytes(cfg, bytes), OK);
                    bytes
                }
                // The default: 1/16 of the memory the process may use, at
                // least the seed table's product (an upper bound here: the
                // class of `min` is at most its next power of two, and a
                // cgroup limit only lowers the share).
                None => (min.next_power_of_two() * per_shard * shards).max(physical_memory() / 16),
            };
            let mut handle = ptr::null_mut();
            assert_eq!(zp_pool_new_with_config(cfg, &mut handle), OK);
            assert!(!handle.is_null());
            let mut none = ptr::null_mut();
            assert_eq!(zp_pool_new_with_config(ptr::null(), &mut none), NULL_POINTER);
            assert!(none.is_null());
            zp_config_free(cfg);
            self.pools.push(PoolModel { handle, zeroing, budget, open: true, gets: 0, rejected: 0 });
        }
    }

    fn get(&mut self, input: &mut Input) {
        let open = self.open_pools();
        if open.is_empty() {
            return;
        }
        let p = input.pick(&open);
        let size = input.pick(SIZES);
        let fill = input.byte() | 1;
        let pool = &mut self.pools[p];
        // SAFETY: an open pool.
        let buf = unsafe { zp_get(pool.handle, size) };
        assert!(!buf.is_null(), "get({size}) failed: {}", unsafe { zp_last_error() });
        let addr = buf as usize;
        assert_eq!(addr % 4096, 0, "buffers are page aligned");
        // SAFETY: `size` bytes handed out to us.
        let bytes = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), size) };
        if pool.zeroing != NEVER {
            assert!(bytes.iter().all(|&b| b == 0), "get({size}) from a zeroing pool is not zero");
        }
        pool.gets += 1;
        let end = addr + size.max(1);
        if let Some((&start, other)) = self.live.range(..end).next_back() {
            assert!(start + other.size.max(1) <= addr, "live buffers overlap: {start:#x} and {addr:#x}");
        }
        bytes.fill(fill);
        self.live.insert(addr, Live { pool: p, handle: pool.handle, size, fill });
        self.records.insert(addr, Record::Out(pool.handle));
    }

    fn pick_live(&self, input: &mut Input) -> Option<usize> {
        if self.live.is_empty() {
            return None;
        }
        let n = input.byte() as usize % self.live.len();
        self.live.keys().nth(n).copied()
    }

    /// Returns a live buffer as its owner would.
    fn put(&mut self, addr: usize) {
        let live = self.live.remove(&addr).expect("a live buffer");
        // SAFETY: `size` bytes we own until the put below.
        let bytes = unsafe { std::slice::from_raw_parts(addr as *const u8, live.size) };
        assert!(bytes.iter().all(|&b| b == live.fill), "buffer {addr:#x} lost its owner's bytes");
        // SAFETY: a buffer of this handle (perhaps freed: still allowed).
        assert_eq!(unsafe { zp_put(live.handle, addr as *mut c_void) }, OK);
        self.records.insert(addr, Record::Idle(live.pool));
        self.returned.push(addr);
    }

    /// The status a put of `addr` to `handle` must get; None when this run
    /// cannot tell (a stale record of an earlier run at a page-aligned
    /// address: FOREIGN_BUFFER or DOUBLE_PUT).
    fn expected(&self, handle: *mut ZpPool, addr: usize) -> Option<Status> {
        if handle.is_null() || addr == 0 {
            return Some(NULL_POINTER);
        }
        if addr % 4096 != 0 || addr >= 1 << 48 {
            return Some(FOREIGN_BUFFER);
        }
        match self.records.get(&addr) {
            None => None,
            // A freed pool's memory, metadata included, goes with its last
            // buffer: the address may be nobody's, or another pool's now.
            Some(Record::Idle(p)) if !self.pools[*p].open && !self.live.values().any(|l| l.pool == *p) => None,
            Some(Record::Idle(_)) => Some(DOUBLE_PUT),
            Some(Record::Out(h)) if *h != handle => Some(WRONG_POOL),
            Some(Record::Out(_)) => Some(OK),
        }
    }

    /// A put that must be refused; counts it against the named pool.
    fn misput(&mut self, handle: *mut ZpPool, addr: usize) {
        let want = self.expected(handle, addr);
        assert_ne!(want, Some(OK), "not a misuse");
        // SAFETY: `handle` is NULL or names a pool (open or freed: zp_put
        // never dereferences it); `addr` is never dereferenced.
        let got = unsafe { zp_put(handle, addr as *mut c_void) };
        match want {
            Some(want) => assert_eq!(got, want, "put({addr:#x})"),
            None => assert!(got == FOREIGN_BUFFER || got == DOUBLE_PUT, "put({addr:#x}) = {got}"),
        }
        if got != NULL_POINTER {
            if let Some(p) = self.pools.iter_mut().find(|p| p.open && p.handle == handle) {
                p.rejected += 1;
            }
        }
    }

    fn overflow(&mut self, addr: usize) {
        let live = self.live.remove(&addr).expect("a live buffer");
        // SAFETY: the byte right after the size lies in the buffer's canary
        // (every C buffer has room for it): writable, and ours until the put.
        unsafe {
            let past = (addr as *mut u8).add(live.size);
            *past = !*past;
            assert_eq!(zp_put(live.handle, addr as *mut c_void), OVERFLOW);
        }
        // Scrubbed and released, but its memory stays the pool's.
        self.records.insert(addr, Record::Idle(live.pool));
        let owner = &mut self.pools[live.pool];
        if owner.open {
            owner.rejected += 1;
        }
    }

    fn check_stats(&self, p: usize) {
        let pool = &self.pools[p];
        let mut s = Stats::default();
        // SAFETY: an open pool and a stats struct to fill.
        assert_eq!(unsafe { zp_pool_stats(pool.handle, &mut s) }, OK);
        let outstanding = self.live.values().filter(|l| l.pool == p).count() as u64;
        assert_eq!(s.gets, pool.gets, "{s:?}");
        assert_eq!(s.outstanding, outstanding, "{s:?}");
        assert_eq!(s.rejected_puts, pool.rejected, "{s:?}");
        assert!(s.pooled_bytes as usize <= pool.budget, "{s:?} over a budget of {}", pool.budget);
    }

    fn step(&mut self, input: &mut Input) {
        match input.byte() % 12 {
            0 => self.new_pool(input),
            1..=3 => self.get(input),
            4 | 5 => {
                if let Some(addr) = self.pick_live(input) {
                    self.put(addr);
                }
            }
            6 => {
                // A live buffer returned to another pool (open or freed).
                if let Some(addr) = self.pick_live(input) {
                    let other = self.pools[input.byte() as usize % self.pools.len()].handle;
                    if other != self.live[&addr].handle {
                        self.misput(other, addr);
                    }
                }
            }
            7 => {
                // A returned buffer returned again (unless handed out since).
                if !self.returned.is_empty() {
                    let addr = self.returned[input.byte() as usize % self.returned.len()];
                    if !self.live.contains_key(&addr) {
                        let handle = self.pools[input.byte() as usize % self.pools.len()].handle;
                        self.misput(handle, addr);
                    }
                }
            }
            8 => {
                if let Some(addr) = self.pick_live(input) {
                    self.overflow(addr);
                }
            }
            9 => {
                // Pointers zeropool never handed out.
                let open = self.open_pools();
                if open.is_empty() {
                    return;
                }
                let handle = self.pools[input.pick(&open)].handle;
                let local = 0u64;
                let heap = Box::new([0u8; 64]);
                let mut addrs = vec![
                    &local as *const u64 as usize,
                    heap.as_ptr() as usize,
                    0x1000,
                    0x10,
                    0x8000_0000_0000,
                    0xffff_ffff_ffff_f000,
                ];
                if let Some(addr) = self.pick_live(input) {
                    addrs.push(addr + 1);
                    if self.live[&addr].size > 4096 {
                        addrs.push(addr + 4096);
                    }
                }
                let addr = input.pick(&addrs);
                if !self.live.contains_key(&addr) {
                    self.misput(handle, addr);
                }
            }
            10 => {
                let open = self.open_pools();
                if open.is_empty() {
                    return;
                }
                let p = input.pick(&open);
                let handle = self.pools[p].handle;
                // SAFETY (all calls): NULL where the API allows it, else an
                // open pool.
                unsafe {
                    match input.byte() % 6 {
                        0 => {
                            assert!(zp_get(ptr::null_mut(), 100).is_null());
                            assert_eq!(zp_last_error(), NULL_POINTER);
                        }
                        1 => {
                            if let Some(addr) = self.pick_live(input) {
                                assert_eq!(zp_put(ptr::null_mut(), addr as *mut c_void), NULL_POINTER);
                            }
                        }
                        2 => assert_eq!(zp_put(handle, ptr::null_mut()), NULL_POINTER),
                        3 => assert_eq!(zp_pool_stats(ptr::null(), &mut Stats::default()), NULL_POINTER),
                        4 => assert_eq!(zp_pool_trim(ptr::null_mut()), NULL_POINTER),
                        _ => {
                            assert!(zp_get(handle, input.pick(HUGE)).is_null());
                            assert_eq!(zp_last_error(), TOO_LARGE);
                        }
                    }
                }
                self.check_stats(p);
            }
            _ => {
                let open = self.open_pools();
                if open.is_empty() {
                    return;
                }
                let p = input.pick(&open);
                match input.byte() % 3 {
                    0 => {
                        // SAFETY: an open pool.
                        assert_eq!(unsafe { zp_pool_trim(self.pools[p].handle) }, OK);
                        let mut s = Stats::default();
                        // SAFETY: as above.
                        assert_eq!(unsafe { zp_pool_stats(self.pools[p].handle, &mut s) }, OK);
                        assert_eq!((s.pooled_buffers, s.pooled_bytes), (0, 0), "idle after a trim: {s:?}");
                        self.check_stats(p);
                    }
                    1 => self.check_stats(p),
                    _ => {
                        // Freed with buffers still out: they stay usable and
                        // go back with the freed pointer.
                        self.check_stats(p);
                        // SAFETY: an open pool, freed once.
                        unsafe { zp_pool_free(self.pools[p].handle) };
                        self.pools[p].open = false;
                    }
                }
            }
        }
    }

    /// Returns every live buffer and frees every open pool.
    fn finish(mut self) {
        let addrs: Vec<usize> = self.live.keys().copied().collect();
        for addr in addrs {
            self.put(addr);
        }
        for p in self.open_pools() {
            self.check_stats(p);
            // SAFETY: an open pool, freed once.
            unsafe { zp_pool_free(self.pools[p].handle) };
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let mut model = Model::default();
    model.new_pool(&mut input);
    let mut steps = 0;
    while !input.done() && steps < 512 {
        model.step(&mut input);
        steps += 1;
    }
    model.finish();
});

/// Physical memory in bytes, from /proc/meminfo (MemTotal, in kB).
fn physical_memory() -> usize {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kb| kb * 1024)
}

