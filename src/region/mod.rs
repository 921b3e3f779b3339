//! The memory layer: every byte a pool hands out lives in a slot of a chunk
//! that this module reserved. It is the only place that maps memory for
//! buffers.
//!
//! - **Reserved per size class.** A class's slots are carved from chunks:
//!   2 MiB-aligned reservations (no access, no commit charge) that are
//!   committed a batch of slots at a time as the class grows, and grow in
//!   size geometrically, so reservations follow use. No `mmap` or `munmap`
//!   per buffer.
//! - **Nothing is unmapped while the pool lives.** A released slot is
//!   given back with `madvise(MADV_DONTNEED)` and kept for reuse: a stale
//!   or racing pointer reads zero pages, never another mapping. Chunks are
//!   unmapped only when the pool is gone and its last buffer is back.
//! - **Metadata out of band** ([`chunk`]), found from a pointer through the
//!   lock-free [`radix`] table.
//!
//! Lifetime: a [`Region`] belongs to one pool. `life` counts the slots in
//! use (idle in the pool or handed out), a CLOSED bit set when the pool
//! closes (its last handle is gone: no slot is handed out any more) and a
//! DROPPED bit set when the [`RegionHandle`] goes (with the pool's shared
//! part, which stale thread caches and `zp_local` handles may keep alive
//! long after). Whoever brings it to "closed, none in use" gives its memory
//! back (every chunk unmapped), exactly once, at once: a freed pool's
//! mappings do not wait for the last reference to its shared part (issue
//! 26). The `Region` itself is freed when both that happened and the
//! handle is gone. That count changes only when a slot is carved, recycled
//! or released (slow paths), never on a cached get or put.
//!
//! Invariants (checked with `debug_assert!`):
//! - A slot is in exactly one place: a class's `free` list (pages given
//!   back), its `pending` list (scrubbed, pages not yet given back), or in
//!   use (counted in `life`).
//! - `free` and `pending` each have room reserved for every slot of every
//!   chunk, so releasing a slot never allocates.
//! - `pending` holds less than one batch (at most [`PENDING_BYTES`] of
//!   slots; none for classes of that size or more): released pages of small
//!   classes go back to the system a batch at a time, in one `madvise` per
//!   run of adjacent slots, instead of one system call per buffer. Trim and
//!   pool close give back everything pending at once.
//! - A chunk's committed bytes cover every carved slot (plus its tail).
#![allow(unsafe_code)]

pub(crate) mod chunk;
pub(crate) mod radix;

use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use crate::lock::Mutex;

use crate::lock::ForkLock;
use crate::os;
use crate::pack::Field;
use chunk::{ChunkInit, ChunkMeta};
use radix::GRANULE;

// `life`'s fields: three flags, then the count of slots in use.
/// The pool closed: no slot is handed out any more.
const CLOSED_FLAG: Field = Field::new(0, 1);
/// The handle is gone (implies CLOSED): the last user frees the `Region`.
const DROPPED_FLAG: Field = CLOSED_FLAG.above(1);
/// Someone is giving the memory back (count 0, CLOSED): they free the
/// `Region` afterwards if DROPPED came meanwhile.
const RELEASING_FLAG: Field = DROPPED_FLAG.above(1);
/// Slots in use (idle in the pool or handed out).
const IN_USE: Field = RELEASING_FLAG.above(61);
const CLOSED: usize = CLOSED_FLAG.one() as usize;
const DROPPED: usize = DROPPED_FLAG.one() as usize;
const RELEASING: usize = RELEASING_FLAG.one() as usize;
/// One slot in use.
const ONE: usize = IN_USE.one() as usize;

/// The slots in use of a `life` word.
#[inline]
fn in_use(life: usize) -> usize {
    IN_USE.get(life as u64) as usize
}
/// Slots are committed at least this many bytes at a time.
const COMMIT_BATCH: usize = 256 << 10;
/// Released slots of a class wait for at most this many bytes of company
/// before their pages go back (one system call for the batch).
pub(crate) const PENDING_BYTES: usize = 1 << 20;
/// Chunks stop doubling at this many bytes of slots.
const MAX_CHUNK: usize = 1 << 30;
/// A transparent huge page on x86-64 and on aarch64 with 4 KiB pages
/// (the radix granule: chunks are aligned to it).
pub(crate) const HUGE_PAGE: usize = GRANULE;

/// The system refused memory (the detail is added at the API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OutOfMemory;

/// The outcome of a pin request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pin {
    /// Not asked for.
    No,
    /// Asked for and granted.
    Locked,
    /// Asked for and refused by the system; the buffer is unpinned.
    Refused,
}

/// A slot handed to the layer above.
pub(crate) struct Slot {
    pub(crate) ptr: NonNull<u8>,
    pub(crate) pin: Pin,
    /// Used before: its pages were given back and read as zero, unless a
    /// stale pointer wrote to them since.
    pub(crate) recycled: bool,
}

struct Chunk {
    meta: NonNull<ChunkMeta>,
    meta_len: usize,
    base: NonNull<u8>,
    /// Reserved bytes (a multiple of the granule).
    reserved: usize,
    nslots: usize,
    carved: usize,
    committed: usize,
}

struct ClassState {
    chunks: Vec<Chunk>,
    /// Released slots, ready for reuse (their pages read as zero unless a
    /// stale pointer wrote to them since).
    free: Vec<NonNull<u8>>,
    /// Released slots, scrubbed, whose pages have not been given back yet.
    pending: Vec<NonNull<u8>>,
    next_slots: usize,
}

struct ClassRegion {
    cap: usize,
    stride: usize,
    /// Backed by transparent huge pages: the capacity is a whole number of
    /// huge pages and the stride too, so that every slot starts on one.
    huge: bool,
    /// Slots per batch of pages given back (1: at once).
    batch: usize,
    state: Mutex<ClassState>,
}

/// An unpooled buffer's reservation, kept (inaccessible) for reuse.
struct Retained {
    chunk: Chunk,
}

/// The memory of one pool.
pub(crate) struct Region {
    /// This region's own address, with the provenance of its allocation
    /// (chunk metadata points back here; the last user frees through it).
    me: AtomicPtr<Region>,
    life: AtomicUsize,
    owner: AtomicUsize,
    pool_id: u64,
    /// Bytes after each slot's capacity (a page when buffers carry a C
    /// canary, so a request of a full class still has room for it).
    tail: usize,
    pin: bool,
    /// Unpooled buffers of at least [`HUGE_PAGE`] bytes get huge pages.
    huge: bool,
    classes: Box<[ClassRegion]>,
    one_offs: Mutex<OneOffs>,
    /// Something to free when the memory goes (the C handle, whose address
    /// is the owner token: kept until no buffer can name it), and how.
    keepalive: AtomicPtr<()>,
    keepalive_free: AtomicPtr<()>,
}

/// Unpooled buffers' reservations kept for reuse, and how many are out (the
/// list has room for all of them, so taking one back never allocates).
#[derive(Default)]
struct OneOffs {
    kept: Vec<Retained>,
    out: usize,
}

// SAFETY: the raw pointers inside are to memory this region owns; all
// shared mutation goes through atomics and mutexes.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

/// Every live region (by address), so that the fork handlers hold the
/// locks of regions whose pool is gone but whose buffers are still out:
/// a `zp_put` of such a buffer takes its region's class lock (issue 26).
/// A region is in the list from creation until its memory is freed; it
/// takes itself out (under this lock) before it is freed, so a holder of
/// this lock may use every region listed. Room is reserved at creation,
/// so taking a region out never allocates.
pub(crate) struct Regions(Vec<NonNull<Region>>);

// SAFETY: the pointers are only used under the list's lock (see above), and
// a Region is Sync.
unsafe impl Send for Regions {}

static REGIONS: Mutex<Regions> = Mutex::new(Regions(Vec::new()));

/// The live-region list's lock (for the fork handlers).
pub(crate) fn regions_lock() -> &'static Mutex<Regions> {
    &REGIONS
}

impl Regions {
    /// Every lock of every listed region, in the order they are taken
    /// together (by region, as [`Region::locks`]).
    pub(crate) fn locks(&self) -> impl DoubleEndedIterator<Item = &dyn ForkLock> {
        self.0.iter().flat_map(|r| {
            // SAFETY: a listed region is alive while the list's lock is
            // held (see `Regions`), and the list is borrowed from its guard.
            let r = unsafe { r.as_ref() };
            r.locks()
        })
    }
}

/// The pool's owning handle on its region: dropping it closes the region,
/// which is freed once its last slot is back.
pub(crate) struct RegionHandle(NonNull<Region>);

// SAFETY: the region is Sync and outlives the handle.
unsafe impl Send for RegionHandle {}
// SAFETY: as above.
unsafe impl Sync for RegionHandle {}

impl std::ops::Deref for RegionHandle {
    type Target = Region;
    fn deref(&self) -> &Region {
        // SAFETY: the region is not freed before it is closed, and the
        // handle closes it only when dropped.
        unsafe { self.0.as_ref() }
    }
}

impl Drop for RegionHandle {
    fn drop(&mut self) {
        // SAFETY: the region is live until this drop (see Deref).
        unsafe { Region::drop_handle(self.0) };
    }
}

impl Region {
    /// A region for classes of capacities `caps` (whole pages); Err when
    /// its bookkeeping cannot be allocated. `huge`: classes of whole huge
    /// pages (2 MiB and up) are placed and advised so that transparent huge
    /// pages back them.
    pub(crate) fn create(
        pool_id: u64,
        caps: impl ExactSizeIterator<Item = usize>,
        tail: bool,
        pin: bool,
        huge: bool,
    ) -> Result<RegionHandle, OutOfMemory> {
        let tail = if tail { os::page_size() } else { 0 };
        let mut classes = Vec::new();
        classes.try_reserve_exact(caps.len()).map_err(|_| OutOfMemory)?;
        classes.extend(caps.map(|cap| {
            debug_assert!(cap % os::page_size() == 0 && cap >= os::page_size());
            // A class of whole huge pages starts each slot on one (the C
            // canary's tail page then costs a huge page of address space,
            // not of memory: it is touched only by a request of the full
            // capacity). Other classes would have a huge page straddle two
            // slots, so that releasing one splits it: they keep small pages.
            let huge = huge && cap % HUGE_PAGE == 0;
            let stride = if huge { (cap + tail).next_multiple_of(HUGE_PAGE) } else { cap + tail };
            ClassRegion {
                cap,
                stride,
                huge,
                batch: (PENDING_BYTES / stride).max(1),
                state: Mutex::new(ClassState {
                    chunks: Vec::new(),
                    free: Vec::new(),
                    pending: Vec::new(),
                    next_slots: (GRANULE / stride).max(1),
                }),
            }
        }));
        let region = Region {
            me: AtomicPtr::new(std::ptr::null_mut()),
            life: AtomicUsize::new(0),
            owner: AtomicUsize::new(0),
            pool_id,
            tail,
            pin,
            huge,
            classes: classes.into_boxed_slice(),
            one_offs: Mutex::new(OneOffs::default()),
            keepalive: AtomicPtr::new(std::ptr::null_mut()),
            keepalive_free: AtomicPtr::new(std::ptr::null_mut()),
        };
        let region = os::try_box(region).map_err(|_| OutOfMemory)?;
        let mut regions = REGIONS.lock();
        regions.0.try_reserve(1).map_err(|_| OutOfMemory)?;
        let raw = Box::into_raw(region);
        // SAFETY: just made from a Box: valid, and ours alone until returned.
        unsafe { (*raw).me.store(raw, Ordering::Relaxed) };
        // SAFETY: Box::into_raw never returns null.
        regions.0.push(unsafe { NonNull::new_unchecked(raw) });
        drop(regions);
        // SAFETY: Box::into_raw never returns null.
        Ok(RegionHandle(unsafe { NonNull::new_unchecked(raw) }))
    }

    /// The region and class of the slot starting at `addr` (a live buffer
    /// of ours: the caller owns it), and its chunk's span.
    pub(crate) fn owner_of(addr: usize) -> Option<(NonNull<Region>, usize, usize)> {
        let (region, class, span) = chunk::owner_of(addr)?;
        Some((region.cast::<Region>(), class, span))
    }

    /// Sets the token that `SlotRef::owner` reports for this region's
    /// slots (the C layer uses its handle's address). Before any slot.
    pub(crate) fn set_owner(&self, token: usize) {
        debug_assert!(self.classes.iter().all(|c| c.state.lock().chunks.is_empty()));
        self.owner.store(token, Ordering::Relaxed);
    }

    /// A slot of class `class`: a released one if there is one (zeroed
    /// again by the system), else a new one. Counts it in use.
    pub(crate) fn alloc(&self, class: usize) -> Result<Slot, OutOfMemory> {
        let c = &self.classes[class];
        self.enter()?;
        let got = {
            let mut st = c.state.lock();
            // Pending slots first: still resident, so no page faults.
            match st.pending.pop().or_else(|| st.free.pop()) {
                Some(p) => Ok((p, true)),
                None => self.carve(c, class, &mut st).map(|p| (p, false)),
            }
        };
        let Ok((ptr, recycled)) = got else {
            // SAFETY: counted by `enter` just above; the region is alive
            // (the caller's reference) and stays so: its handle is not gone.
            unsafe { Region::put_life(self.this()) };
            return Err(OutOfMemory);
        };
        Ok(Slot { ptr, pin: self.pin_slot(ptr, c.cap), recycled })
    }

    fn pin_slot(&self, ptr: NonNull<u8>, cap: usize) -> Pin {
        if !self.pin {
            return Pin::No;
        }
        // SAFETY: a committed slot of ours of at least `cap` bytes.
        if unsafe { os::pin(ptr, cap) } {
            Pin::Locked
        } else {
            Pin::Refused
        }
    }

    /// A new slot from the last chunk, or from a new chunk.
    fn carve(&self, c: &ClassRegion, class: usize, st: &mut ClassState) -> Result<NonNull<u8>, OutOfMemory> {
        if st.chunks.last().is_none_or(|ch| ch.carved == ch.nslots) {
            let want = st.next_slots;
            let chunk = self.new_chunk(c, class, want, st)?;
            st.next_slots = (chunk.nslots * 2).min((MAX_CHUNK / c.stride).max(1));
            st.chunks.push(chunk);
        }
        let ch = st.chunks.last_mut().expect("a chunk with room");
        let end = (ch.carved + 1) * c.stride;
        if end > ch.committed {
            let span = ch.nslots * c.stride;
            let batch = (end - ch.committed).max(COMMIT_BATCH).min(span - ch.committed);
            // SAFETY: inside the chunk's reservation.
            let at = unsafe { ch.base.add(ch.committed) };
            // SAFETY: both ranges start at `at` and end inside the chunk's
            // reservation (`batch` and `end - committed` are at most
            // `span - committed`).
            if unsafe { os::commit(at, batch) } {
                ch.committed += batch;
            } else {
                // SAFETY: as above, the smaller range.
                if !unsafe { os::commit(at, end - ch.committed) } {
                    return Err(OutOfMemory);
                }
                ch.committed = end;
            }
        }
        // SAFETY: slot `carved` lies inside the committed part.
        let p = unsafe { ch.base.add(ch.carved * c.stride) };
        ch.carved += 1;
        debug_assert!(ch.committed >= ch.carved * c.stride);
        Ok(p)
    }

    /// Reserves a chunk of about `want` slots (fewer if the system refuses
    /// that much), with its metadata, published in the radix table.
    fn new_chunk(&self, c: &ClassRegion, class: usize, want: usize, st: &mut ClassState) -> Result<Chunk, OutOfMemory> {
        let mut nslots = want.max(1);
        loop {
            let attempt = self.reserve_chunk(c.stride, nslots, class, c.huge);
            match attempt {
                Some(chunk) => {
                    // So that releasing never allocates: room for every slot
                    // of every chunk (the free list's length is no guide).
                    let slots: usize = st.chunks.iter().map(|ch| ch.nslots).sum::<usize>() + chunk.nslots;
                    let (more, more_pending) = (slots - st.free.len(), slots - st.pending.len());
                    if st.free.try_reserve(more).is_err()
                        || st.pending.try_reserve(more_pending).is_err()
                        || st.chunks.try_reserve(1).is_err()
                    {
                        // SAFETY: just made, never handed out.
                        unsafe { destroy_chunk(&chunk) };
                        return Err(OutOfMemory);
                    }
                    return Ok(chunk);
                }
                None if nslots > 1 => nslots = 1,
                None => return Err(OutOfMemory),
            }
        }
    }

    fn reserve_chunk(&self, stride: usize, nslots: usize, class: usize, huge: bool) -> Option<Chunk> {
        #[cfg(test)]
        if tests::FAIL_RESERVE.with(|f| f.get()) {
            return None;
        }
        let reserved = nslots.checked_mul(stride)?.checked_next_multiple_of(GRANULE)?;
        let nslots = reserved / stride; // fill the granules
        let base = os::reserve(reserved, GRANULE)?;
        if huge {
            // SAFETY: the reservation just made, ours alone.
            unsafe { os::advise_huge(base, reserved) };
        }
        let meta_len = chunk::meta_len(nslots).next_multiple_of(os::page_size());
        let Some(meta) = os::map_zeroed(meta_len) else {
            // SAFETY: just reserved, unused.
            unsafe { os::unreserve(base, reserved, GRANULE) };
            return None;
        };
        let meta = meta.cast::<ChunkMeta>();
        let init = ChunkInit {
            base: base.as_ptr() as usize,
            nslots,
            stride,
            owner: self.owner.load(Ordering::Relaxed),
            region: self.me.load(Ordering::Relaxed).cast(),
            pool_id: self.pool_id,
            class,
        };
        // SAFETY: a fresh zeroed mapping of meta_len bytes, unpublished.
        unsafe { chunk::init(meta, &init) };
        if !radix::publish(init.base, reserved, meta.cast()) {
            // SAFETY: never published; both mappings are ours.
            unsafe {
                os::unmap(meta.cast(), meta_len);
                os::unreserve(base, reserved, GRANULE);
            }
            return None;
        }
        Some(Chunk { meta, meta_len, base, reserved, nslots, carved: 0, committed: 0 })
    }

    /// Takes back a slot of class `class` that is no longer used: scrubs
    /// what may hold data (`dirty`: any byte; else the caller scrubbed),
    /// unlocks it, gives its pages back, and keeps it for reuse.
    ///
    /// # Safety
    /// `ptr` must be a slot of this region's class `class`, in use, and
    /// nothing may use its memory afterwards. The region may be freed by
    /// this call.
    /// `now`: give the pages back at once rather than with the next batch
    /// (a buffer that failed validation).
    pub(crate) unsafe fn release(
        this: NonNull<Region>,
        class: usize,
        ptr: NonNull<u8>,
        dirty: bool,
        pinned: bool,
        now: bool,
    ) {
        // SAFETY: a slot in use keeps the region alive.
        let r = unsafe { this.as_ref() };
        let c = &r.classes[class];
        // SAFETY: the caller gives up the slot; it is ours to clear.
        unsafe { scrub_pages(ptr, c.cap, c.stride, dirty, pinned) };
        {
            let mut st = c.state.lock();
            debug_assert!(st.pending.len() < st.pending.capacity(), "room for every slot was reserved");
            st.pending.push(ptr);
            if now || st.pending.len() >= c.batch {
                give_back_pending(c, &mut st);
            }
        }
        // SAFETY: the slot was in use, counted in `life`.
        unsafe { Region::put_life(this) };
    }

    /// An unpooled buffer of `cap` bytes (whole pages), with its own chunk:
    /// a kept one that fits, else a new reservation.
    pub(crate) fn alloc_one_off(&self, cap: usize) -> Result<Slot, OutOfMemory> {
        let stride = cap.checked_add(self.tail).ok_or(OutOfMemory)?;
        self.enter()?;
        let got = self.alloc_one_off_entered(cap, stride);
        if got.is_err() {
            // SAFETY: as in `alloc`.
            unsafe { Region::put_life(self.this()) };
        }
        got
    }

    fn alloc_one_off_entered(&self, cap: usize, stride: usize) -> Result<Slot, OutOfMemory> {
        // A kept reservation that fits without wasting more than half of it.
        let kept = self.take_kept(|reserved| reserved >= stride && reserved / 2 <= stride);
        let chunk = match kept {
            Some(chunk) => chunk,
            None => {
                let (span, huge) = (stride.next_multiple_of(GRANULE), self.huge && cap >= HUGE_PAGE);
                match self.reserve_chunk(span, 1, usize::MAX, huge) {
                    Some(c) => c,
                    // Out of address space: any kept reservation large
                    // enough, however much it wastes. Kept ones are never
                    // unmapped while the pool lives (guarantee 4: a stale
                    // pointer must not reach another mapping).
                    None => self.take_kept(|reserved| reserved >= stride).ok_or(OutOfMemory)?,
                }
            }
        };
        // SAFETY: the chunk's own reservation.
        if !unsafe { os::commit(chunk.base, stride) } {
            self.keep_one_off(chunk);
            return Err(OutOfMemory);
        }
        // Room to keep it when it comes back, so that never allocates.
        {
            let mut o = self.one_offs.lock();
            let more = o.out + 1;
            if o.kept.try_reserve(more).is_err() {
                if chunk.carved > 0 {
                    // Handed out before (a stale pointer may reach it): kept
                    // again, in the room it left.
                    debug_assert!(o.kept.len() < o.kept.capacity());
                    o.kept.push(Retained { chunk });
                } else {
                    drop(o);
                    // SAFETY: never handed out.
                    unsafe { destroy_chunk(&chunk) };
                }
                return Err(OutOfMemory);
            }
            o.out += 1;
        }
        let ptr = chunk.base;
        let recycled = chunk.carved > 0;
        // Ownership of the reservation passes to the buffer; it comes back
        // through `release_one_off`, which finds the chunk by address.
        Ok(Slot { ptr, pin: self.pin_slot(ptr, cap), recycled })
    }

    fn keep_one_off(&self, chunk: Chunk) {
        let mut o = self.one_offs.lock();
        if o.kept.try_reserve(1).is_ok() {
            o.kept.push(Retained { chunk });
        } else {
            drop(o);
            // SAFETY: not handed out.
            unsafe { destroy_chunk(&chunk) };
        }
    }

    /// Takes a kept unpooled reservation whose reserved bytes `fit`.
    fn take_kept(&self, fit: impl Fn(usize) -> bool) -> Option<Chunk> {
        let mut o = self.one_offs.lock();
        let i = o.kept.iter().position(|k| fit(k.chunk.reserved))?;
        Some(o.kept.swap_remove(i).chunk)
    }

    fn drop_kept_one_offs(&self) {
        // Drained in place: the list keeps its room for the buffers out.
        for k in self.one_offs.lock().kept.drain(..) {
            // SAFETY: kept chunks are not handed out.
            unsafe { destroy_chunk(&k.chunk) };
        }
    }

    /// Takes back an unpooled buffer (the caller scrubbed what it wrote,
    /// unless `dirty`): its pages go back and its address space is kept,
    /// inaccessible, for a later unpooled buffer.
    ///
    /// `cap` is the capacity it was allocated with: only `cap` plus the
    /// tail are accessible, of a reservation rounded up to the granule
    /// (scrubbing past them would fault: issue 26).
    ///
    /// # Safety
    /// As [`release`](Self::release), for a buffer from `alloc_one_off`
    /// of capacity `cap`.
    pub(crate) unsafe fn release_one_off(this: NonNull<Region>, ptr: NonNull<u8>, cap: usize, dirty: bool, pinned: bool) {
        // SAFETY: a buffer in use keeps the region alive.
        let r = unsafe { this.as_ref() };
        let s = chunk::SlotRef::find(ptr.as_ptr() as usize).expect("a live unpooled buffer is published");
        let stride = s.stride();
        let open = cap.saturating_add(r.tail).min(stride);
        debug_assert_eq!(open, cap + r.tail, "the capacity it was allocated with");
        // SAFETY: the caller gives it up; `open` bytes were committed by
        // `alloc_one_off`, the rest of the stride is reserved only.
        unsafe {
            clear_pages(ptr, open - r.tail, open, dirty, pinned);
            os::retire_range(ptr, stride);
        }
        let meta = radix::find(ptr.as_ptr() as usize).expect("published").cast::<ChunkMeta>();
        let nslots = 1;
        let chunk = Chunk {
            meta,
            meta_len: chunk::meta_len(nslots).next_multiple_of(os::page_size()),
            base: ptr,
            reserved: stride.next_multiple_of(GRANULE),
            nslots,
            carved: 1,
            committed: stride,
        };
        {
            let mut o = r.one_offs.lock();
            debug_assert!(o.out > 0 && o.kept.len() < o.kept.capacity(), "room reserved at alloc");
            o.out -= 1;
            o.kept.push(Retained { chunk });
        }
        // SAFETY: the buffer was in use.
        unsafe { Region::put_life(this) };
    }

    /// This region's address, with the provenance of its allocation.
    fn this(&self) -> NonNull<Region> {
        NonNull::new(self.me.load(Ordering::Relaxed)).expect("set at creation")
    }

    /// One more slot in use, unless the pool closed (then no slot is
    /// handed out any more: the memory may be going back).
    fn enter(&self) -> Result<(), OutOfMemory> {
        self.life
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |l| (l & CLOSED == 0).then_some(l + ONE))
            .map(drop)
            .map_err(|_| OutOfMemory)
    }

    /// One slot less in use; the memory goes back if it was the last of a
    /// closed region (and the region too, if its handle is gone).
    unsafe fn put_life(this: NonNull<Region>) {
        // SAFETY: live until the transition below (a slot in use keeps it).
        let life = &unsafe { this.as_ref() }.life;
        // The step to "closed, none in use" claims the release in the same
        // atomic step: nobody else can then free the region under us.
        let step = |l: usize| {
            debug_assert!(l >= ONE);
            let l = l - ONE;
            Some(if l == CLOSED { l | RELEASING } else { l })
        };
        let Ok(prev) = life.fetch_update(Ordering::AcqRel, Ordering::Acquire, step) else { unreachable!() };
        if prev == ONE | CLOSED {
            // SAFETY: we claimed the release (RELEASING).
            unsafe { Region::release_claimed(this) };
        } else if prev == ONE | CLOSED | DROPPED {
            // SAFETY: closed, handle gone, nothing in use: the last user.
            unsafe { Region::destroy(this) };
        }
    }

    /// The pool closed: no slot is handed out from now on, and the memory
    /// goes back once none is in use (now, if none is).
    pub(crate) fn close(&self) {
        let step = |l: usize| Some(if in_use(l) == 0 { l | CLOSED | RELEASING } else { l | CLOSED });
        let Ok(prev) = self.life.fetch_update(Ordering::AcqRel, Ordering::Acquire, step) else { unreachable!() };
        if prev & CLOSED == 0 && in_use(prev) == 0 {
            // SAFETY: we claimed the release; the region is alive (the
            // caller's reference, through its handle).
            unsafe { Region::release_claimed(self.this()) };
        }
    }

    /// Gives the memory back after claiming it (RELEASING); frees the
    /// region too if its handle went meanwhile.
    unsafe fn release_claimed(this: NonNull<Region>) {
        // SAFETY: RELEASING keeps the region alive (`drop_handle` leaves it
        // to us).
        let r = unsafe { this.as_ref() };
        r.release_memory();
        let prev = r.life.fetch_and(!RELEASING, Ordering::AcqRel);
        if prev & DROPPED != 0 {
            // SAFETY: the handle is gone and left the region to us.
            unsafe { Region::free(this) };
        }
    }

    /// The handle is gone: the region goes once nothing is in use and no
    /// release is under way.
    unsafe fn drop_handle(this: NonNull<Region>) {
        // SAFETY: live until the transition below.
        let prev = unsafe { this.as_ref() }.life.fetch_or(CLOSED | DROPPED, Ordering::AcqRel);
        debug_assert!(prev & DROPPED == 0, "dropped twice");
        if in_use(prev) == 0 && prev & RELEASING == 0 {
            // SAFETY: nothing in use and nobody releasing: the last user.
            unsafe { Region::destroy(this) };
        }
    }

    unsafe fn destroy(this: NonNull<Region>) {
        // SAFETY: the last user (callers' transitions): alive until freed.
        unsafe { this.as_ref() }.release_memory();
        // SAFETY: as above.
        unsafe { Region::free(this) };
    }

    /// Takes the region out of the live list, then frees it.
    ///
    /// # Safety
    /// The caller is the region's last user, and holds none of its locks.
    unsafe fn free(this: NonNull<Region>) {
        {
            let mut regions = REGIONS.lock();
            let at = regions.0.iter().position(|&r| r == this);
            debug_assert!(at.is_some(), "a live region is listed");
            if let Some(at) = at {
                regions.0.swap_remove(at);
            }
        }
        // SAFETY: the caller's promise; nobody can find it any more.
        drop(unsafe { Box::from_raw(this.as_ptr()) });
    }

    /// Has `free(p)` called when the memory goes (before the pool closes):
    /// the C layer keeps its handle's address, the owner token, taken
    /// until no buffer of the pool exists, so that a new pool never gets
    /// the address while old buffers can still name it (issue 26).
    pub(crate) fn keep_until_released(&self, p: *mut (), free: unsafe fn(*mut ())) {
        self.keepalive_free.store(free as *mut (), Ordering::Relaxed);
        self.keepalive.store(p, Ordering::Release);
    }

    /// Unmaps every chunk (idempotent: the lists are left empty).
    fn release_memory(&self) {
        let p = self.keepalive.swap(std::ptr::null_mut(), Ordering::AcqRel);
        if !p.is_null() {
            let free = self.keepalive_free.load(Ordering::Relaxed);
            // SAFETY: stored by `keep_until_released` from an
            // `unsafe fn(*mut ())` before `p` (Release/AcqRel); called once
            // (the swap).
            let free = unsafe { std::mem::transmute::<*mut (), unsafe fn(*mut ())>(free) };
            // SAFETY: the caller of `keep_until_released` handed `p` over.
            unsafe { free(p) };
        }
        for c in self.classes.iter() {
            let mut st = c.state.lock();
            let chunks = std::mem::take(&mut st.chunks);
            for ch in &chunks {
                // SAFETY: nothing of a closed region with no slot in use is in use.
                unsafe { destroy_chunk(ch) };
            }
            st.free.clear();
            st.pending.clear();
        }
        self.drop_kept_one_offs();
    }

    /// Gives back the pages of every released slot still resident (trim,
    /// pool close).
    pub(crate) fn give_back_pending(&self) {
        for c in self.classes.iter() {
            give_back_pending(c, &mut c.state.lock());
        }
    }

    /// Slots in use (idle in the pool or handed out).
    #[cfg(test)]
    pub(crate) fn in_use(&self) -> usize {
        in_use(self.life.load(Ordering::Acquire))
    }

    /// Bytes reserved for slots (address space, not memory).
    #[cfg(test)]
    pub(crate) fn reserved_bytes(&self) -> usize {
        self.classes.iter().map(|c| c.state.lock().chunks.iter().map(|ch| ch.reserved).sum::<usize>()).sum()
    }

    /// Every lock of the region, in the order they may be taken together
    /// (for the fork handlers).
    pub(crate) fn locks(&self) -> impl DoubleEndedIterator<Item = &dyn ForkLock> {
        self.classes.iter().map(|c| &c.state as &dyn ForkLock).chain(std::iter::once(&self.one_offs as &dyn ForkLock))
    }
}

/// Scrubs what may hold data and unlocks a released slot.
///
/// # Safety
/// `ptr` must be a committed slot of `stride` bytes that nobody uses.
unsafe fn scrub_pages(ptr: NonNull<u8>, cap: usize, stride: usize, dirty: bool, pinned: bool) {
    #[cfg(zeropool_asan)]
    os::unpoison(ptr, stride);
    // SAFETY: the caller's promise for all of these.
    unsafe {
        if dirty {
            // The tail page too: an overflow may have written there.
            os::scrub_resident(ptr, stride);
        }
        if pinned {
            os::unpin(ptr, cap);
        }
    }
}

/// Scrubs what may hold data and gives the pages of a slot back now.
///
/// # Safety
/// As [`scrub_pages`].
unsafe fn clear_pages(ptr: NonNull<u8>, cap: usize, stride: usize, dirty: bool, pinned: bool) {
    // SAFETY: the caller's promise for all of these.
    unsafe {
        scrub_pages(ptr, cap, stride, dirty, pinned);
        if !os::decommit(ptr, stride) {
            os::scrub(ptr, stride);
        }
    }
}

/// Gives back the pages of a class's pending slots, one `madvise` per run
/// of adjacent slots, and moves them to the free list.
fn give_back_pending(c: &ClassRegion, st: &mut ClassState) {
    if st.pending.is_empty() {
        return;
    }
    st.pending.sort_unstable();
    let mut i = 0;
    while i < st.pending.len() {
        let start = st.pending[i];
        let mut j = i + 1;
        while j < st.pending.len() && st.pending[j].as_ptr() as usize == start.as_ptr() as usize + (j - i) * c.stride {
            j += 1;
        }
        let len = (j - i) * c.stride;
        // SAFETY: a run of adjacent released slots of ours, unused (they
        // are pending, not handed out); slots of one chunk are contiguous,
        // and adjacent chunks are both ours.
        unsafe {
            if !os::decommit(start, len) {
                os::scrub(start, len);
            }
        }
        i = j;
    }
    debug_assert!(st.free.capacity() - st.free.len() >= st.pending.len(), "room for every slot was reserved");
    let ClassState { free, pending, .. } = st;
    free.append(pending);
}

/// Unpublishes a chunk and returns its reservation to the system.
///
/// # Safety
/// Nothing of the chunk may be in use.
unsafe fn destroy_chunk(ch: &Chunk) {
    // SAFETY: the caller's promise; the metadata stays mapped (zeroed).
    unsafe {
        chunk::kill(ch.meta, ch.meta_len);
        os::unreserve(ch.base, ch.reserved, GRANULE);
    }
}

#[cfg(test)]
mod tests {
    use super::chunk::{SlotRef, SlotWord};
    use super::*;

    #[test]
    fn life_words_round_trip() {
        assert_eq!((CLOSED, DROPPED, RELEASING, ONE), (1, 2, 4, 8));
        for n in [0usize, 1, 2, 1 << 40] {
            let l = (n * ONE) | CLOSED | RELEASING;
            assert_eq!(in_use(l), n);
            assert_eq!((l & CLOSED, l & DROPPED), (CLOSED, 0));
            assert_eq!(in_use(l + ONE), n + 1);
        }
    }

    const KIB: usize = 1024;

    fn region(tail: bool) -> RegionHandle {
        Region::create(7, [4 * KIB, 64 * KIB].into_iter(), tail, false, false).unwrap()
    }

    #[test]
    fn slots_are_carved_from_few_chunks_sized_to_use() {
        let r = region(false);
        let n = if cfg!(miri) { 40 } else { 400 };
        let slots: Vec<_> = (0..n).map(|_| r.alloc(1).unwrap()).collect();
        assert_eq!(r.in_use(), n);
        let mut addrs: Vec<usize> = slots.iter().map(|s| s.ptr.as_ptr() as usize).collect();
        addrs.sort_unstable();
        addrs.dedup();
        assert_eq!(addrs.len(), n, "every slot is distinct");
        // Geometric chunks: reserved space stays within 2x use plus a granule.
        assert!(r.reserved_bytes() <= 2 * n * 64 * KIB + GRANULE, "{}", r.reserved_bytes());
        for s in slots {
            // SAFETY: allocated above, unused.
            unsafe { Region::release(r.0, 1, s.ptr, false, false, false) };
        }
        assert_eq!(r.in_use(), 0);
    }

    #[test]
    fn released_slots_read_zero_and_are_reused() {
        let r = region(true);
        let s = r.alloc(0).unwrap();
        let p = s.ptr;
        // SAFETY: a committed slot of 4 KiB plus a 4 KiB tail.
        unsafe { std::ptr::write_bytes(p.as_ptr(), 0xAB, 8 * KIB) };
        // SAFETY: ours, unused from here on.
        unsafe { Region::release(r.0, 0, p, true, false, true) };
        let again = r.alloc(0).unwrap();
        assert_eq!(again.ptr, p, "the released slot is reused first");
        assert!(again.recycled);
        // SAFETY: the slot and its tail are committed and ours.
        let bytes = unsafe { std::slice::from_raw_parts(p.as_ptr(), 8 * KIB) };
        assert!(bytes.iter().all(|&b| b == 0), "the pages were given back");
        // SAFETY: ours.
        unsafe { Region::release(r.0, 0, again.ptr, false, false, false) };
    }

    #[test]
    fn lookups_tell_slots_from_interior_and_foreign_pointers() {
        let r = region(true);
        let (pa, pb) = (r.alloc(0).unwrap().ptr, r.alloc(0).unwrap().ptr);
        let (a, b) = (pa.as_ptr() as usize, pb.as_ptr() as usize);
        assert_eq!(b - a, 8 * KIB, "stride is capacity plus the tail page");
        for ok in [a, b] {
            let s = SlotRef::find(ok).expect("a slot start");
            assert_eq!(s.pool_id(), 7);
            assert_eq!(s.word().state(), SlotWord::NEVER);
        }
        for bad in [a + 1, a + 4096, a + 8 * KIB - 8, b + 4 * KIB] {
            assert!(SlotRef::find(bad).is_none(), "{:#x} is inside a slot", bad - a);
        }
        let on_stack = 0u64;
        for foreign in [0, 4096, &on_stack as *const u64 as usize, usize::MAX & !0xfff, 1 << 60] {
            assert!(SlotRef::find(foreign).is_none(), "{foreign:#x}");
        }
        for p in [pa, pb] {
            // SAFETY: ours, unused.
            unsafe { Region::release(r.0, 0, p, false, false, false) };
        }
    }

    #[test]
    fn claims_have_exactly_one_winner() {
        let r = region(true);
        let p = r.alloc(0).unwrap().ptr;
        let s = SlotRef::find(p.as_ptr() as usize).unwrap();
        assert_eq!(s.claim(), Err(chunk::Refused::Foreign), "never handed out");
        s.hand_out(100, 0x0c);
        let won = s.claim().unwrap();
        assert_eq!((won.len(), won.tag()), (100, 0x0c));
        assert_eq!(s.claim(), Err(chunk::Refused::Returned));
        // SAFETY: ours.
        unsafe { Region::release(r.0, 0, p, false, false, false) };
    }

    #[test]
    fn a_closed_region_goes_away_with_its_last_slot() {
        let r = region(false);
        let p = r.alloc(1).unwrap().ptr;
        let addr = p.as_ptr() as usize;
        let raw = r.0;
        drop(r); // closed; one slot still in use
        assert!(SlotRef::find(addr).is_some(), "alive while a slot is out");
        // SAFETY: the slot keeps the region alive; ours.
        unsafe { Region::release(raw, 1, p, false, false, false) };
        assert!(SlotRef::find(addr).is_none(), "chunk unpublished with the region");
    }

    thread_local! {
        /// This thread's reservations fail (address space exhausted).
        pub(super) static FAIL_RESERVE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// Out of address space, an unpooled buffer reuses any kept
    /// reservation large enough, and kept ones are never unmapped while the
    /// pool lives (before: all were unmapped, and a stale pointer into one
    /// could reach the next mapping there).
    #[test]
    fn out_of_address_space_keeps_and_reuses_unpooled_reservations() {
        let r = region(false);
        let big = 3 * GRANULE;
        let s = r.alloc_one_off(big).unwrap();
        let p = s.ptr;
        // SAFETY: ours, unused from here on.
        unsafe { Region::release_one_off(r.0, p, big, false, false) };
        FAIL_RESERVE.with(|f| f.set(true));
        // Larger than anything kept: refused, and the kept one stays.
        assert!(r.alloc_one_off(4 * GRANULE).is_err());
        assert!(SlotRef::find(p.as_ptr() as usize).is_some(), "a kept reservation was unmapped");
        // Much smaller than the kept one: reused all the same.
        let small = r.alloc_one_off(GRANULE / 2).unwrap();
        FAIL_RESERVE.with(|f| f.set(false));
        assert_eq!(small.ptr, p);
        assert!(small.recycled);
        // SAFETY: ours.
        unsafe { Region::release_one_off(r.0, small.ptr, GRANULE / 2, false, false) };
        assert!(SlotRef::find(p.as_ptr() as usize).is_some());
    }

    #[test]
    fn unpooled_reservations_are_kept_and_reused() {
        let r = region(true);
        let big = 3 * GRANULE;
        let s = r.alloc_one_off(big).unwrap();
        assert!(!s.recycled);
        let p = s.ptr;
        assert!(SlotRef::find(p.as_ptr() as usize).is_some());
        // SAFETY: ours, unused from here on.
        unsafe { Region::release_one_off(r.0, p, big, false, false) };
        assert!(SlotRef::find(p.as_ptr() as usize).is_some(), "kept, not unmapped");
        let again = r.alloc_one_off(big - 4096).unwrap();
        assert_eq!(again.ptr, p);
        assert!(again.recycled);
        // SAFETY: ours.
        unsafe { Region::release_one_off(r.0, again.ptr, big - 4096, false, false) };
    }
}
