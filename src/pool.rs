//! The public pool handle: orchestrates get and put through the thread
//! cache, the shards and the system, in that order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use crate::lock::Mutex;

use crate::buffer::{Buffer, GiveBack, Home, OneOff, OutOfMemory, RawBuf, Retiring};
use crate::config::{Builder, Config};
use crate::error::Error;
use crate::fork::{Above, PoolsAbove};
use crate::lock::ForkLock;
use crate::region::chunk::SlotHint;
use crate::shared::Shared;
use crate::size_class::{Lookup, SizeClasses};
use crate::stats::Stats;
use crate::thread_cache::{self, with_cache, Popped, ThreadCache};

/// Pools by id: how a returned buffer finds its pool without holding a
/// reference count. Ids are never reused, and a closed pool is never
/// found, so a buffer of a dropped pool finds nothing and is released.
/// A closed pool stays listed while its shared part lives (stale thread
/// caches, `zp_local` handles), so that the fork handlers hold its locks
/// too (issue 26); entries whose shared part is gone are pruned at the
/// next insert. Sorted by id (ids only grow, so an insert is a push);
/// growth is fallible, so creating a pool never aborts.
pub(crate) struct PoolTable(Vec<(u64, Weak<Shared>)>);

impl PoolTable {
    fn find(&self, id: u64) -> Result<usize, usize> {
        self.0.binary_search_by_key(&id, |(k, _)| *k)
    }

    fn get(&self, id: u64) -> Option<Arc<Shared>> {
        self.find(id).ok().and_then(|i| self.0[i].1.upgrade()).filter(|s| !s.is_closed())
    }

    fn try_insert(&mut self, id: u64, shared: Weak<Shared>) -> Result<(), OutOfMemory> {
        self.0.retain(|(_, w)| w.strong_count() > 0);
        self.0.try_reserve(1).map_err(|_| OutOfMemory)?;
        let at = self.find(id).unwrap_or_else(|at| at);
        self.0.insert(at, (id, shared));
        Ok(())
    }

    /// The pools whose shared part lives, open or closed (for the fork
    /// handlers).
    pub(crate) fn open(&self) -> impl Iterator<Item = Arc<Shared>> + '_ {
        self.0.iter().filter_map(|(_, w)| w.upgrade())
    }
}

static POOLS: Mutex<PoolTable> = Mutex::new(PoolTable(Vec::new()));
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn lookup(id: u64) -> Option<Arc<Shared>> {
    POOLS.lock().get(id)
}

/// The open-pool table, for the fork handlers (the hook `fork.rs` defines).
impl PoolsAbove for Above {
    fn hold_table(then: &mut dyn FnMut(&mut dyn Iterator<Item = Arc<Shared>>)) {
        let table = POOLS.lock();
        then(&mut table.open());
        std::mem::forget(table); // held until the handlers let go of it
    }

    fn table_lock() -> &'static dyn ForkLock {
        &POOLS
    }

    fn open_now() -> Vec<Arc<Shared>> {
        POOLS.lock().open().collect()
    }
}

/// A thread-safe pool of byte buffers. Cheap to clone: clones share one pool.
///
/// ```
/// let pool = zeropool::BufferPool::new();
/// let mut buf = pool.get(64 * 1024);
/// assert!(buf.iter().all(|&b| b == 0));
/// buf[0] = 42;
/// pool.put(buf); // or just drop it
/// ```
///
/// When the last clone is dropped, idle buffers are released at once;
/// buffers still out stay valid and are released when they are dropped, and
/// other threads' caches release theirs at their next call or exit.
pub struct BufferPool {
    shared: Arc<Shared>,
    /// Copies of `shared.id` and `shared.cfg.classes`, so that a get reads
    /// them from the handle rather than through the `Arc` (one dependent
    /// load less on the fast path).
    id: u64,
    classes: SizeClasses,
}

impl BufferPool {
    fn from_shared(shared: Arc<Shared>) -> BufferPool {
        let (id, classes) = (shared.id, shared.cfg.classes.clone());
        BufferPool { shared, id, classes }
    }

    /// A pool configured for this machine (see [`AutoConfig`](crate::AutoConfig)).
    pub fn new() -> BufferPool {
        Builder::new().build().expect("the default configuration is valid")
    }

    /// A builder to configure a pool.
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// A pool from a validated configuration; Err when memory for its
    /// bookkeeping cannot be had (nothing is left behind then).
    pub(crate) fn from_config(cfg: Config) -> Result<BufferPool, OutOfMemory> {
        // No pool without fork handlers: a refusal (ENOMEM) is reported,
        // and the next creation tries again.
        if !crate::fork::install_handlers() {
            return Err(OutOfMemory);
        }
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let shared = Shared::try_new(id, cfg)?;
        // `Arc::new` has no fallible form: probe for its block first.
        if !crate::os::can_allocate_arc::<Shared>() {
            return Err(OutOfMemory);
        }
        let shared = Arc::new(shared);
        let mut pools = POOLS.lock();
        // Room for this pool in the fork handlers' list first (they must not
        // allocate inside fork()); taken under the table's lock, as they do.
        if !crate::fork::reserve_fork_room(pools.0.len() + 1) {
            return Err(OutOfMemory);
        }
        pools.try_insert(id, Arc::downgrade(&shared))?;
        drop(pools);
        Ok(BufferPool::from_shared(shared))
    }

    /// A buffer of exactly `len` bytes (capacity may be larger).
    ///
    /// # Panics
    /// When no buffer that large can exist or the system is out of memory;
    /// use [`try_get`](Self::try_get) to handle those as errors.
    #[inline(always)]
    pub fn get(&self, len: usize) -> Buffer {
        match self.get_fast(len) {
            Some(buf) => buf,
            None => self.get_or_panic(len),
        }
    }

    /// The common case of a get (a pooled class, memory available), with
    /// no error to carry: None sends the caller to `try_get`. Callers keep
    /// the two paths apart, so the fast one never merges with an error
    /// value that lives in memory.
    #[inline(always)]
    pub(crate) fn get_fast(&self, len: usize) -> Option<Buffer> {
        if let Lookup::Pooled(class) = self.classes.lookup(len) {
            if let Ok(raw) = get_pooled(&self.shared, self.id, class, len) {
                return Some(Buffer::pooled(raw, len, self.id));
            }
        }
        None
    }

    /// The fast path of a C get: a buffer popped from this thread's cache
    /// (see [`Popped`]); None sends the caller to `try_get`.
    #[inline(always)]
    pub(crate) fn pop_cached(&self, len: usize) -> Option<Popped> {
        thread_cache::fast(
            self.id,
            len,
            // The class from the cache's own copy of the table, after the
            // thread-local access (in position-independent code a call, as
            // far as the compiler knows: fewer values live across it, fewer
            // registers to save). Not pooled: a class past the last, whose
            // stack is empty.
            #[inline(always)]
            |tc, len| tc.try_pop(tc.classes().fast_class(len)).ok_or(len),
        )
        .ok()
    }

    /// Counts a buffer from [`pop_cached`](Self::pop_cached) that was found
    /// written after it was returned.
    #[cold]
    pub(crate) fn count_dirty(&self) {
        let counted = with_cache(self.id, || None, |tc| tc.count_dirty());
        debug_assert!(counted.is_some(), "the cache a buffer was just popped from is there");
    }

    #[cold]
    #[inline(never)]
    fn get_or_panic(&self, len: usize) -> Buffer {
        match self.try_get(len) {
            Ok(buf) => buf,
            Err(e) => panic!("zeropool: {e}"),
        }
    }

    /// A buffer of exactly `len` bytes, or why not. Never panics or aborts.
    #[inline(always)]
    pub fn try_get(&self, len: usize) -> Result<Buffer, Error> {
        try_get_in(&self.shared, len)
    }

    /// Returns a buffer. Same as dropping it; a buffer of another pool goes
    /// back to its own pool.
    pub fn put(&self, buf: Buffer) {
        drop(buf);
    }

    /// A snapshot of the counters (see [`Stats`]).
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Buffers idle in the pool (shards plus every thread's cache).
    pub fn len(&self) -> usize {
        self.stats().pooled_buffers as usize
    }

    /// True when no buffer is idle.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Releases every idle buffer (scrubbed): the shards' and this thread's
    /// cache now, other threads' caches at their next call.
    pub fn trim(&self) {
        self.shared.trim();
        // Sync this thread's cache now rather than at its next call.
        let _ = with_cache(self.shared.id, || None, |tc| tc.catch_up());
    }

    /// The idle-memory budget in bytes.
    pub fn max_pooled_bytes(&self) -> usize {
        self.shared.cfg.max_pooled_bytes
    }

    /// Sets the token the memory layer reports as this pool's buffers'
    /// owner (the C layer's handle address). Before any buffer is got.
    pub(crate) fn set_owner_token(&self, token: usize) {
        self.shared.region.set_owner(token);
    }

    /// Has `free(p)` called once the pool's memory is gone (the C handle,
    /// kept until then: see `Region::keep_until_released`).
    pub(crate) fn keep_until_released(&self, p: *mut (), free: unsafe fn(*mut ())) {
        self.shared.region.keep_until_released(p, free);
    }

    /// The unique id of this pool (shared by its clones).
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }
}

// A panic never leaves a pool half-updated: locks guard only short,
// non-panicking sections, so observing a pool after a caught panic is fine.
impl std::panic::UnwindSafe for BufferPool {}
impl std::panic::RefUnwindSafe for BufferPool {}

impl Default for BufferPool {
    fn default() -> Self {
        BufferPool::new()
    }
}

impl Clone for BufferPool {
    fn clone(&self) -> Self {
        self.shared.handles.fetch_add(1, Ordering::Relaxed);
        BufferPool::from_shared(self.shared.clone())
    }
}

impl Drop for BufferPool {
    fn drop(&mut self) {
        if self.shared.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Stays listed (not found any more) while the shared part lives.
            self.shared.close();
            thread_cache::detach(self.shared.id);
        }
    }
}

impl std::fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferPool")
            .field("id", &self.shared.id)
            .field("config", &self.shared.cfg)
            .finish()
    }
}

/// [`BufferPool::try_get`] on a pool's shared part.
#[inline(always)]
fn try_get_in(shared: &Arc<Shared>, len: usize) -> Result<Buffer, Error> {
    let classes = &shared.cfg.classes;
    match classes.lookup(len) {
        Lookup::Pooled(class) => match get_pooled(shared, shared.id, class, len) {
            Ok(raw) => Ok(Buffer::pooled(raw, len, shared.id)),
            Err(OutOfMemory) => Err(Error::OutOfMemory { bytes: classes.capacity(class) }),
        },
        Lookup::Unpooled(cap) => {
            // No cache on this path: sync this thread's caches here
            // (guarantee 8).
            thread_cache::sync();
            get_one_off(shared, len, cap)
        }
        Lookup::TooLarge => too_large(len),
    }
}

/// A get no buffer can hold; still a call that syncs this thread's caches.
#[cold]
fn too_large(len: usize) -> Result<Buffer, Error> {
    thread_cache::sync();
    Err(Error::TooLarge { requested: len })
}

/// Thread cache, then shards, then the system. The result is one word,
/// so it comes back in a register.
#[inline(always)]
fn get_pooled(shared: &Arc<Shared>, id: u64, class: usize, len: usize) -> Result<RawBuf, OutOfMemory> {
    match get_cached(id, class, len) {
        Some((raw, _)) => Ok(raw),
        None => get_pooled_slow(shared, class, len),
    }
}

/// A buffer of `class` from this thread's cache for pool `id`, with its
/// slot's metadata if the cache kept it: the fast path of every get.
#[inline(always)]
fn get_cached(id: u64, class: usize, len: usize) -> Option<(RawBuf, Option<SlotHint>)> {
    thread_cache::fast(
        id,
        (),
        #[inline(always)]
        |tc, ()| tc.try_get(class, len).ok_or(()),
    )
    .ok()
}

#[cold]
#[inline(never)]
fn get_pooled_slow(shared: &Arc<Shared>, class: usize, len: usize) -> Result<RawBuf, OutOfMemory> {
    match with_cache(shared.id, || Some(shared.clone()), |tc| tc.get(class, len)) {
        Some(got) => got,
        None => shared.get_uncached(class, len),
    }
}

#[cold]
fn get_one_off(shared: &Shared, len: usize, cap: usize) -> Result<Buffer, Error> {
    let one = shared.get_one_off(cap).map_err(|OutOfMemory| Error::OutOfMemory { bytes: cap })?;
    Ok(Buffer::one_off(one, len, shared.id))
}

/// A cache of one pool owned by its holder rather than found through
/// thread-local storage (the C API's `zp_local`): the same cache a thread
/// keeps, with the same budget and counters, minus the lookup. The holder
/// must use it from one thread at a time.
pub(crate) struct Local {
    cache: ThreadCache,
    /// The `thread_cache::epoch()` this cache last synced with.
    epoch: u64,
}

impl Local {
    /// None when out of memory.
    pub(crate) fn try_new(pool: &BufferPool) -> Option<Local> {
        let epoch = thread_cache::epoch();
        Some(Local { cache: ThreadCache::try_new(pool.shared.clone())?, epoch })
    }

    /// The pool's shared part, for calls that must not use this cache
    /// (another thread than its holder's).
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        self.cache.shared()
    }

    /// Whether the pool's last handle is gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.cache.shared().is_closed()
    }

    /// Whether no pool changed since this cache last synced: its fast
    /// paths decline otherwise, and the full paths [`sync`](Self::sync).
    #[inline(always)]
    fn synced(&self) -> bool {
        thread_cache::epoch() == self.epoch
    }

    /// Catches up with trims and closes (one shared load when none came).
    #[inline(always)]
    pub(crate) fn sync(&mut self) {
        let epoch = thread_cache::epoch();
        if epoch != self.epoch {
            self.resync(epoch);
        }
    }

    #[cold]
    fn resync(&mut self, epoch: u64) {
        // Pairs with `pool_changed`: the pool state moved before the epoch.
        std::sync::atomic::fence(Ordering::Acquire);
        self.epoch = epoch;
        self.cache.look_at_clock();
        self.cache.catch_up();
    }

    /// As [`BufferPool::pop_cached`], from this cache: None also when a
    /// pool changed since the last call (the caller's full path syncs).
    #[inline(always)]
    pub(crate) fn pop_cached(&mut self, len: usize) -> Option<Popped> {
        if !self.synced() {
            return None;
        }
        // Not pooled: a class past the last, whose stack is empty.
        self.cache.try_pop(self.cache.classes().fast_class(len))
    }

    /// As [`BufferPool::count_dirty`], for this cache.
    #[cold]
    pub(crate) fn count_dirty(&self) {
        self.cache.count_dirty();
    }

    /// As [`BufferPool::try_get`], from this cache.
    #[inline(always)]
    pub(crate) fn try_get(&mut self, len: usize) -> Result<Buffer, Error> {
        self.sync();
        let id = self.cache.id();
        match self.cache.classes().lookup(len) {
            Lookup::Pooled(class) => match self.cache.try_get(class, len) {
                Some((raw, _)) => Ok(Buffer::pooled(raw, len, id)),
                None => self.get_slow(class, len),
            },
            // No sync of the thread's table here: it may reach this very
            // cache (`zp_local`'s callers sync once they are done with it).
            Lookup::Unpooled(cap) => get_one_off(self.cache.shared(), len, cap),
            Lookup::TooLarge => Err(Error::TooLarge { requested: len }),
        }
    }

    #[cold]
    #[inline(never)]
    fn get_slow(&mut self, class: usize, len: usize) -> Result<Buffer, Error> {
        match self.cache.get(class, len) {
            Ok(raw) => Ok(Buffer::pooled(raw, len, self.cache.id())),
            Err(OutOfMemory) => Err(Error::OutOfMemory { bytes: self.cache.shared().cfg.classes.capacity(class) }),
        }
    }

    /// The fast path of a put to this cache (see [`ThreadCache::try_push`]):
    /// declines also when a pool changed since the last call (then
    /// [`put`](Self::put) syncs).
    #[inline(always)]
    pub(crate) fn try_push(&mut self, raw: RawBuf, len: usize, hint: Option<SlotHint>) -> Result<Retiring, RawBuf> {
        if !self.synced() {
            return Err(raw);
        }
        self.cache.try_push(raw, len, hint)
    }

    /// Takes a pooled buffer of this pool back for `len` bytes.
    pub(crate) fn put(&mut self, raw: RawBuf, len: usize) {
        self.sync();
        self.cache.put(raw, len);
    }

    /// The pool id.
    #[inline(always)]
    pub(crate) fn id(&self) -> u64 {
        self.cache.id()
    }
}

/// [`BufferPool::try_get`] for a holder of the pool's shared part only.
pub(crate) fn try_get_shared(shared: &Arc<Shared>, len: usize) -> Result<Buffer, Error> {
    try_get_in(shared, len)
}

/// The guard's return (the hook `buffer.rs` defines, so that it need not
/// import this layer).
impl GiveBack for Home {
    #[inline(always)]
    fn pooled(pool: u64, raw: RawBuf, len: usize) {
        give_back(pool, raw, len);
    }

    #[inline(always)]
    fn one_off(pool: u64, one: OneOff, len: usize) {
        give_back_one_off(pool, one, len);
    }
}

impl Builder {
    /// Validates the settings and builds the pool.
    pub fn build(self) -> Result<BufferPool, Error> {
        let cfg = self.config()?;
        let bytes = std::mem::size_of::<Shared>();
        BufferPool::from_config(cfg).map_err(|_| Error::OutOfMemory { bytes })
    }
}

/// Where a dropped [`Buffer`] goes: this thread's cache for its pool, else
/// the pool's shards, else (pool gone) back to the system.
#[inline(always)]
pub(crate) fn give_back(pool: u64, raw: RawBuf, len: usize) {
    match push_cached(pool, raw, len, None) {
        Ok(retiring) => retiring.finish(),
        Err(raw) => give_back_slow(pool, raw, len),
    }
}

/// The fast path of every put: onto this thread's cache for pool `pool`
/// (see [`ThreadCache::try_push`]); `Err` sends the caller to
/// [`give_back_slow`].
#[inline(always)]
pub(crate) fn push_cached(pool: u64, raw: RawBuf, len: usize, hint: Option<SlotHint>) -> Result<Retiring, RawBuf> {
    thread_cache::fast(
        pool,
        raw,
        #[inline(always)]
        |tc, raw| tc.try_push(raw, len, hint),
    )
}

#[cold]
#[inline(never)]
pub(crate) fn give_back_slow(pool: u64, raw: RawBuf, len: usize) {
    let mut slot = Some(raw);
    with_cache(pool, || lookup(pool), |tc| {
        if let Some(raw) = slot.take() {
            tc.put(raw, len);
        }
    });
    if let Some(raw) = slot {
        give_back_uncached(pool, raw, len);
    }
}

/// Where a dropped one-off buffer goes: scrubbed, counted, released.
#[cold]
pub(crate) fn give_back_one_off(pool: u64, mut one: OneOff, len: usize) {
    one.scrub(len);
    if with_cache(pool, || lookup(pool), |tc| tc.count_put()).is_none() {
        if let Some(shared) = lookup(pool) {
            shared.count_put();
        }
    }
}

/// Counts a rejected C put against pool `id`; `returned` when the buffer
/// was taken back (and released) rather than left with the caller.
#[cold]
pub(crate) fn count_rejected(id: u64, returned: bool) {
    if let Some(shared) = lookup(id) {
        shared.count_rejected(returned);
    }
}

/// No thread cache (thread exit, or the pool is gone).
#[cold]
fn give_back_uncached(pool: u64, mut raw: RawBuf, len: usize) {
    match lookup(pool) {
        Some(shared) => shared.put_uncached(raw, len),
        None => raw.scrub(len), // then dropped: unmapped
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    /// Once every thread cache is gone, the budget in use is exactly the
    /// idle bytes in the shards: no credit leaked, none double counted.
    #[test]
    fn budget_reservation_matches_idle_bytes_once_caches_are_gone() {
        let pool = BufferPool::builder()
            .min_buffer_size(4096)
            .num_shards(2)
            .tls_cache_size(3)
            .max_pooled_bytes(40 * 4096)
            .build()
            .unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let p = pool.clone();
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    for i in 0..if cfg!(miri) { 30 } else { 3000 } {
                        held.push(p.get(4096 * (1 + (i * 5 + t) % 9)));
                        if held.len() > 5 {
                            held.drain(..3);
                        }
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let s = pool.stats();
        assert_eq!(pool.shared().reserved(), s.pooled_bytes as usize, "{s:?}");
        assert!(s.pooled_bytes <= 40 * 4096);
        pool.trim();
        assert_eq!(pool.shared().reserved(), 0);
    }
}
