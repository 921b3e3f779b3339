//! The per-thread table that holds a thread's pool caches, with no Rust
//! thread-local destructor.
//!
//! A `thread_local!` value that needs `Drop` costs a registration check on
//! every access (`try_with`, out of line) and a destructor registration on
//! first use that aborts the process when it cannot allocate. This table
//! needs no `Drop`: it holds raw pointers to boxed caches, and the caches
//! are dropped at thread exit by a destructor this module registers itself
//! when a thread makes its first cache, so that a failure only means the
//! thread keeps no caches. The destructor is a `pthread_key_create` key's,
//! made once per process; a thread registers by setting its value, which
//! for the process's first 32 keys is a store into the thread's own
//! descriptor (no allocation), and otherwise reports ENOMEM rather than
//! aborting. (glibc's `__cxa_thread_atexit_impl`, which `thread_local!`
//! uses, calls `__libc_fatal` when its `calloc` fails: issue 26.) Key
//! destructors run after the thread-local destructors, and a key does not
//! keep a `dlopen`ed library loaded, so the library pins itself
//! (`RTLD_NODELETE`) when the key is made.
//!
//! Invariants:
//! - An entry is null or a pointer from `Box::into_raw` owned by the table.
//! - An entry is taken out (set to null) while its cache is in use, so a
//!   re-entrant call finds it empty and never aliases the cache; except
//!   on the fast path ([`Table::in_place`]), whose closures call nothing
//!   that reaches this table (checked in debug builds).
//! - Once the thread-exit destructor ran (`dead`), nothing is stored again.
//! - The overflow list holds pointers from `Box::into_raw` owned by the
//!   table, of caches whose pools share an entry with the entry's occupant.
#![allow(unsafe_code)]

use std::cell::{Cell, UnsafeCell};
use std::mem::ManuallyDrop;
use std::ptr;
use std::sync::OnceLock;

/// What the table holds: the layer above (`thread_cache.rs`) says which
/// type, by implementing [`Holds`] for [`Caches`], so that this module
/// does not import it (static dispatch: nothing changes in the code made).
pub(crate) trait Holds {
    /// The per-(thread, pool) cache.
    type Cache: Cached;
}

/// What the table needs of a cache.
pub(crate) trait Cached {
    /// The id of its pool.
    fn pool_id(&self) -> u64;
}

/// The one implementor of [`Holds`] (in `thread_cache.rs`).
pub(crate) struct Caches;

type ThreadCache = <Caches as Holds>::Cache;

/// Entries in a thread's table. A pool's cache lives at `id % TABLE`; ids
/// are handed out in sequence, so a thread using up to this many pools
/// created close together never sees a collision. Pools that do share an
/// entry keep their caches: the one not in the entry waits in the table's
/// overflow list and swaps in on its next slow path.
pub(crate) const TABLE: usize = 1024;

pub(crate) struct Table {
    /// The value of `thread_cache::EPOCH` this table last synced with.
    pub(crate) epoch_seen: Cell<u64>,
    /// A cache is in use in place ([`Table::in_place`]): nothing may take
    /// it out meanwhile (checked in debug builds).
    #[cfg(debug_assertions)]
    busy: Cell<bool>,
    /// The thread-exit destructor is registered for this thread.
    registered: Cell<bool>,
    /// The thread-exit destructor ran: keep nothing any more.
    dead: Cell<bool>,
    entries: [Cell<*mut ThreadCache>; TABLE],
    /// Caches displaced from their entry by another pool's with the same
    /// entry (ids 1,024 apart): kept, not dropped, so that two pools used
    /// in turn swap places (slow path, no lock) instead of rebuilding a
    /// cache on every call (issue 26). Grown fallibly; `ManuallyDrop`, so
    /// the table needs no destructor (`thread_exit` empties and frees it).
    /// Touched only by this module's non-reentrant methods.
    overflow: UnsafeCell<ManuallyDrop<Vec<*mut ThreadCache>>>,
    /// The `zp_local` handles this thread made: synced with the table
    /// (a closed pool's buffers in their caches go at this thread's next
    /// call on any pool), told at thread exit. Same rules as `overflow`.
    locals: UnsafeCell<ManuallyDrop<Vec<LocalRef>>>,
}

/// A handle made on this thread that keeps a cache of its own (`zp_local`),
/// and what the table does with it.
#[derive(Clone, Copy)]
pub(crate) struct LocalRef {
    pub(crate) ptr: std::ptr::NonNull<()>,
    /// Syncs its cache (this thread is its owner, and no call of this
    /// thread is using it); false: it is gone (freed now), drop it.
    pub(crate) sync: unsafe fn(std::ptr::NonNull<()>) -> bool,
    /// The thread exits: the handle is no longer listed anywhere.
    pub(crate) exit: unsafe fn(std::ptr::NonNull<()>),
}

thread_local! {
    static TABLE_OF_CACHES: Table = const {
        Table {
            epoch_seen: Cell::new(0),
            #[cfg(debug_assertions)]
            busy: Cell::new(false),
            registered: Cell::new(false),
            dead: Cell::new(false),
            entries: [const { Cell::new(ptr::null_mut()) }; TABLE],
            overflow: UnsafeCell::new(ManuallyDrop::new(Vec::new())),
            locals: UnsafeCell::new(ManuallyDrop::new(Vec::new())),
        }
    };
}

/// Runs `f` on this thread's table.
#[inline(always)]
pub(crate) fn with<R>(f: impl FnOnce(&Table) -> R) -> R {
    // Only the address goes through `LocalKey::with`: a closure that small
    // is inlined, so the access is one thread-pointer-relative address
    // (a large closure made `with` an out-of-line call on the fast path).
    let table = TABLE_OF_CACHES.with(|t| t as *const Table);
    // SAFETY: a thread-local lives as long as its thread, and `f` runs on
    // this thread now; the reference does not escape `f`.
    f(unsafe { &*table })
}

impl Table {
    /// Runs `f` on the cache in entry `i`, in place, if it is pool `id`'s;
    /// `Err(state)` if not. `f` must be one of `ThreadCache`'s fast paths,
    /// which touch only the cache and its buffers and never reach this
    /// table: that is what makes the `&mut` below exclusive without taking
    /// the entry out (two stores saved per call).
    #[inline(always)]
    pub(crate) fn in_place<S, R>(
        &self,
        i: usize,
        id: u64,
        state: S,
        f: impl FnOnce(&mut ThreadCache, S) -> Result<R, S>,
    ) -> Result<R, S> {
        let p = self.entries[i].get();
        if p.is_null() {
            return Err(state);
        }
        // SAFETY: a non-null entry is a live box owned by the table (see
        // the invariants). Nothing else references it now: a cache taken
        // out is null here, and `f` never reaches the table, so no other
        // reference can be made while this one lives.
        let tc = unsafe { &mut *p };
        if tc.pool_id() != id {
            return Err(state);
        }
        #[cfg(debug_assertions)]
        self.busy.set(true);
        let r = f(tc, state);
        #[cfg(debug_assertions)]
        self.busy.set(false);
        r
    }

    /// Takes the cache out of entry `i` (None: empty, or in use further up
    /// the stack). Give it back with [`put`](Self::put).
    #[inline(always)]
    pub(crate) fn take(&self, i: usize) -> Option<Box<ThreadCache>> {
        #[cfg(debug_assertions)]
        debug_assert!(!self.busy.get(), "a fast path reached the thread's table");
        let p = self.entries[i].replace(ptr::null_mut());
        if p.is_null() {
            None
        } else {
            // SAFETY: non-null entries come from Box::into_raw and are owned
            // by the table; taking it out (null left behind) moves ownership.
            Some(unsafe { Box::from_raw(p) })
        }
    }

    /// Takes pool `id`'s cache for entry `i`: the entry's own if it is
    /// that pool's, else one displaced earlier, which then swaps places
    /// with the entry's occupant (constant time in the number of pools
    /// sharing the entry). Otherwise as [`take`](Self::take): the entry's
    /// occupant (another pool's) or None.
    #[inline]
    pub(crate) fn take_for(&self, i: usize, id: u64) -> Option<Box<ThreadCache>> {
        let home = self.take(i);
        if home.as_ref().is_none_or(|tc| tc.pool_id() != id) {
            if let Some(mine) = self.take_displaced(id) {
                if let Some(other) = home {
                    // No room to keep it displaced: flushed to its pool.
                    drop(self.displace(other));
                }
                return Some(mine);
            }
        }
        home
    }

    /// Takes pool `id`'s cache out of the displaced ones.
    #[cold]
    fn take_displaced(&self, id: u64) -> Option<Box<ThreadCache>> {
        // SAFETY: only this module's methods touch `overflow`, none of them
        // re-entrantly (they call nothing that reaches the table), and this
        // thread alone (a thread-local).
        let overflow = unsafe { &mut *self.overflow.get() };
        // SAFETY: displaced entries are live boxes owned by the table.
        let at = overflow.iter().position(|&p| unsafe { (*p).pool_id() } == id)?;
        // SAFETY: as above; taking it out moves ownership.
        Some(unsafe { Box::from_raw(overflow.swap_remove(at)) })
    }

    /// Keeps a cache displaced from its entry; gives it back (to be
    /// dropped) when there is no room.
    #[cold]
    fn displace(&self, tc: Box<ThreadCache>) -> Option<Box<ThreadCache>> {
        // SAFETY: as in `take_displaced`.
        let overflow = unsafe { &mut *self.overflow.get() };
        if overflow.try_reserve(1).is_err() {
            return Some(tc);
        }
        overflow.push(Box::into_raw(tc));
        None
    }

    /// Puts a cache taken with `take` back, where it was.
    #[inline(always)]
    pub(crate) fn put_back(&self, i: usize, tc: Box<ThreadCache>) {
        let old = self.entries[i].replace(Box::into_raw(tc));
        if !old.is_null() {
            // A re-entrant call stored a cache meanwhile; ours wins.
            // SAFETY: as in `take`: the table owned it.
            drop(unsafe { Box::from_raw(old) });
        }
    }

    /// Stores a new cache in entry `i`; the previous occupant (another
    /// pool's) is kept displaced, or returned to be dropped when there is no
    /// room for it. Err(tc) when the thread keeps no caches (exiting, or its
    /// exit destructor could not be registered).
    pub(crate) fn install(&self, i: usize, tc: Box<ThreadCache>) -> Result<Option<Box<ThreadCache>>, Box<ThreadCache>> {
        if self.dead.get() || !self.register() {
            return Err(tc);
        }
        let old = self.entries[i].replace(Box::into_raw(tc));
        if old.is_null() {
            return Ok(None);
        }
        // SAFETY: as in `take`.
        Ok(self.displace(unsafe { Box::from_raw(old) }))
    }

    /// Every cache, taken out one at a time (sweeps, thread exit): `keep`
    /// says which go back.
    pub(crate) fn retain(&self, mut keep: impl FnMut(&mut ThreadCache) -> bool) {
        for i in 0..TABLE {
            if let Some(mut tc) = self.take(i) {
                if keep(&mut tc) {
                    self.put_back(i, tc);
                }
            }
        }
        // The displaced ones, one at a time (`keep` may reach the table).
        // SAFETY: as in `take_displaced` (the reference ends at once).
        let mut n = unsafe { (*self.overflow.get()).len() };
        while n > 0 {
            n -= 1;
            // SAFETY: as above.
            let overflow = unsafe { &mut *self.overflow.get() };
            if n >= overflow.len() {
                continue;
            }
            // SAFETY: a displaced entry, owned by the table, taken out.
            let mut tc = unsafe { Box::from_raw(overflow.swap_remove(n)) };
            if keep(&mut tc) {
                if let Some(tc) = self.displace(tc) {
                    drop(tc); // no room any more: flushed to its pool
                }
            }
        }
        if self.dead.get() {
            // Thread exit: nothing will be displaced again; free the room.
            // SAFETY: as above.
            drop(std::mem::take(unsafe { &mut **self.overflow.get() }));
            // SAFETY: as above.
            let locals = std::mem::take(unsafe { &mut **self.locals.get() });
            for l in locals {
                // SAFETY: listed by this thread, alive while listed.
                unsafe { (l.exit)(l.ptr) };
            }
        }
    }

    /// Lists a handle made on this thread; false when it cannot be (out of
    /// memory, or the thread is exiting): the handle then stays unlisted.
    pub(crate) fn add_local(&self, local: LocalRef) -> bool {
        if self.dead.get() || !self.register() {
            return false;
        }
        // SAFETY: as in `take_displaced`.
        let locals = unsafe { &mut *self.locals.get() };
        if locals.try_reserve(1).is_err() {
            return false;
        }
        locals.push(local);
        true
    }

    /// Takes a handle off the list (it is being freed on this thread).
    pub(crate) fn remove_local(&self, ptr: std::ptr::NonNull<()>) {
        // SAFETY: as in `take_displaced`.
        let locals = unsafe { &mut *self.locals.get() };
        if let Some(at) = locals.iter().position(|l| l.ptr == ptr) {
            locals.swap_remove(at);
        }
    }

    /// Syncs every listed handle's cache (a sweep), dropping those gone.
    pub(crate) fn sync_locals(&self) {
        // SAFETY: as in `take_displaced`; `sync` reaches no table.
        let locals = unsafe { &mut *self.locals.get() };
        // SAFETY: each was listed by its owner, this thread, and is alive
        // while listed (a free from another thread leaves it to us).
        locals.retain(|l| unsafe { (l.sync)(l.ptr) });
    }

    /// Registers the thread-exit destructor for this thread, once.
    fn register(&self) -> bool {
        if self.registered.get() {
            return true;
        }
        let ok = register_thread_exit();
        self.registered.set(ok);
        ok
    }
}

/// Registers `thread_exit` for the calling thread; false when the system
/// refused (no key, or no memory for the value).
fn register_thread_exit() -> bool {
    let Some(key) = exit_key() else { return false };
    // Any non-null value makes the destructor run; the table itself is
    // found through the thread-local.
    // SAFETY: a key from pthread_key_create; the value is not a pointer
    // anyone dereferences.
    unsafe { libc::pthread_setspecific(key, ptr::NonNull::<u8>::dangling().as_ptr().cast()) == 0 }
}

/// The process's key whose destructor drops a thread's caches.
fn exit_key() -> Option<libc::pthread_key_t> {
    static KEY: OnceLock<Option<libc::pthread_key_t>> = OnceLock::new();
    *KEY.get_or_init(|| {
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: `key` is writable; the destructor is an extern "C" fn
        // that never unwinds.
        let made = unsafe { libc::pthread_key_create(&mut key, Some(thread_exit)) } == 0;
        if made {
            pin_library();
        }
        made.then_some(key)
    })
}

/// Keeps this library loaded for good: a thread's key destructor points
/// into it, and a `dlclose` before that thread exits would leave it
/// pointing nowhere. A no-op in an executable (and under Miri).
fn pin_library() {
    #[cfg(not(miri))]
    // SAFETY: dladdr fills `info` for an address of ours; dlopen with
    // RTLD_NOLOAD only takes another reference to an object already loaded
    // (with RTLD_NODELETE: never unloaded), and fails harmlessly otherwise.
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        let here = thread_exit as unsafe extern "C" fn(*mut libc::c_void) as *const libc::c_void;
        if libc::dladdr(here, &mut info) != 0 && !info.dli_fname.is_null() {
            libc::dlopen(info.dli_fname, libc::RTLD_LAZY | libc::RTLD_NOLOAD | libc::RTLD_NODELETE);
        }
    }
}

/// Thread exit: the caches go back to their pools (or are released).
unsafe extern "C" fn thread_exit(_: *mut libc::c_void) {
    let _ = std::panic::catch_unwind(|| {
        with(|t| {
            t.dead.set(true);
            t.retain(|_| false);
        })
    });
}
