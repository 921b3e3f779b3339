//! Which addresses are live C buffers, so `zp_put` validates a pointer
//! before it trusts anything about it.
//!
//! A three-level page map (as allocators keep one) from a buffer's first
//! page to an entry. The metadata is out of band: a caller overflowing or
//! underflowing a buffer cannot forge it. Lookups are three atomic loads
//! and never allocate; nodes are created on first use and never freed, so
//! a lookup can never touch freed memory, whatever pointer it is given.
//!
//! An entry records the pool handle address the buffer was got from, the
//! pool id, and a word holding the length, the buffer's tag and its state.
//! Entries are written with plain atomic stores (no read-modify-write):
//! only the thread returning a buffer changes its state.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

use super::status::zp_status::{self, *};

const BITS: usize = 12;
const FANOUT: usize = 1 << BITS;
/// Buffers are page aligned, and pages are at least 4 KiB.
const GRAIN_SHIFT: u32 = 12;
/// Page numbers above 3 * BITS bits (addresses at or above 2^48) are never ours.
const PAGE_NUMBER_BITS: u32 = 3 * BITS as u32;

const LEN_BITS: u32 = 48;
const TAG_SHIFT: u32 = LEN_BITS;
const STATE_SHIFT: u32 = 60;

/// No live C buffer starts here.
const FREE: u64 = 0;
/// Handed out by `zp_get`, not yet returned.
const OUT: u64 = 1;
/// Returned: idle in the pool, or released since.
const IDLE: u64 = 2;

#[derive(Default)]
struct Entry {
    pool: AtomicUsize,
    id: AtomicU64,
    word: AtomicU64,
}

type Leaf = Box<[Entry; FANOUT]>;
type Mid = Box<[OnceLock<Leaf>; FANOUT]>;

static ROOT: [OnceLock<Mid>; FANOUT] = [const { OnceLock::new() }; FANOUT];

fn boxed_array<T, const N: usize>(make: impl FnMut() -> T) -> Box<[T; N]> {
    let v: Vec<T> = std::iter::repeat_with(make).take(N).collect();
    match v.into_boxed_slice().try_into() {
        Ok(array) => array,
        Err(_) => unreachable!("the vector has exactly N elements"),
    }
}

fn indices(addr: usize) -> Option<[usize; 3]> {
    let page = addr >> GRAIN_SHIFT;
    if page >> PAGE_NUMBER_BITS != 0 {
        return None;
    }
    Some([page >> (2 * BITS), (page >> BITS) & (FANOUT - 1), page & (FANOUT - 1)])
}

fn find(addr: usize) -> Option<&'static Entry> {
    let [a, b, c] = indices(addr)?;
    Some(&ROOT[a].get()?[b].get()?[c])
}

fn find_or_insert(addr: usize) -> &'static Entry {
    let [a, b, c] = indices(addr).expect("buffer addresses are below 2^48");
    let mid = ROOT[a].get_or_init(|| boxed_array(OnceLock::new));
    &mid[b].get_or_init(|| boxed_array(Entry::default))[c]
}

/// Records a buffer handed out by `zp_get` from handle `pool` (pool `id`).
pub(super) fn record_out(addr: usize, pool: usize, id: u64, len: usize, tag: usize) {
    debug_assert!(len < 1 << LEN_BITS && tag < 1 << (STATE_SHIFT - TAG_SHIFT));
    let e = find_or_insert(addr);
    e.pool.store(pool, Ordering::Relaxed);
    e.id.store(id, Ordering::Relaxed);
    e.word.store(OUT << STATE_SHIFT | (tag as u64) << TAG_SHIFT | len as u64, Ordering::Release);
}

/// What a valid `zp_put` learns about its buffer.
pub(super) struct Claimed {
    pub(super) id: u64,
    pub(super) len: usize,
    pub(super) tag: usize,
}

/// Validates a `zp_put(pool, addr)` and marks the buffer returned. Never
/// dereferences `addr` or `pool`.
pub(super) fn claim(addr: usize, pool: usize) -> Result<Claimed, zp_status> {
    if addr & ((1 << GRAIN_SHIFT) - 1) != 0 {
        return Err(ZP_ERR_FOREIGN_BUFFER); // no buffer starts off a page
    }
    let e = find(addr).ok_or(ZP_ERR_FOREIGN_BUFFER)?;
    let word = e.word.load(Ordering::Acquire);
    match word >> STATE_SHIFT {
        OUT => {}
        IDLE => return Err(ZP_ERR_DOUBLE_PUT),
        _ => return Err(ZP_ERR_FOREIGN_BUFFER),
    }
    if e.pool.load(Ordering::Relaxed) != pool {
        return Err(ZP_ERR_WRONG_POOL);
    }
    let claimed = Claimed {
        id: e.id.load(Ordering::Relaxed),
        len: (word & ((1 << LEN_BITS) - 1)) as usize,
        tag: ((word >> TAG_SHIFT) & ((1 << (STATE_SHIFT - TAG_SHIFT)) - 1)) as usize,
    };
    e.word.store(IDLE << STATE_SHIFT | (word & ((1 << STATE_SHIFT) - 1)), Ordering::Release);
    Ok(claimed)
}

/// Forgets a buffer that was released without going back to its pool.
pub(super) fn forget(addr: usize) {
    if let Some(e) = find(addr) {
        e.word.store(FREE, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_of_unknown_addresses_are_foreign_and_allocate_nothing() {
        for addr in [0usize, 4096, 0x7fff_ffff_f000, usize::MAX & !0xfff, 1 << 60] {
            assert_eq!(claim(addr, 1).err(), Some(ZP_ERR_FOREIGN_BUFFER), "{addr:#x}");
        }
        assert_eq!(claim(0x1234, 1).err(), Some(ZP_ERR_FOREIGN_BUFFER));
    }

    #[test]
    fn states_go_out_then_idle() {
        let addr = 0x5555_0000_0000;
        record_out(addr, 0xAA0, 7, 123, 0x14);
        assert_eq!(claim(addr, 0xBB0).err(), Some(ZP_ERR_WRONG_POOL));
        let c = claim(addr, 0xAA0).unwrap();
        assert_eq!((c.id, c.len, c.tag), (7, 123, 0x14));
        assert_eq!(claim(addr, 0xAA0).err(), Some(ZP_ERR_DOUBLE_PUT));
        assert_eq!(claim(addr + 4096, 0xAA0).err(), Some(ZP_ERR_FOREIGN_BUFFER));
        forget(addr);
        assert_eq!(claim(addr, 0xAA0).err(), Some(ZP_ERR_FOREIGN_BUFFER));
    }
}
