//! ZeroPool: a thread-safe byte-buffer pool, secure by default.
//!
//! - **No data leaks between users.** With the default [`Zeroing::Always`],
//!   every byte of a buffer you get is zero, and what you could reach is
//!   scrubbed when it comes back, before reuse or release, in a way the
//!   optimizer cannot remove.
//! - **A fast path without locks or atomic read-modify-writes.** Each
//!   thread keeps a small cache per pool; misses go to sharded shared
//!   lists, then to the system.
//! - **Bounded idle memory.** Idle bytes (shards plus every thread's cache)
//!   never exceed [`Builder::max_pooled_bytes`]; an [`EvictionPolicy`]
//!   chooses what to release.
//!
//! ```
//! use zeropool::{BufferPool, Zeroing};
//!
//! let pool = BufferPool::builder()
//!     .min_buffer_size(64 * 1024)
//!     .zeroing(Zeroing::Always)
//!     .build()?;
//! let mut buf = pool.get(100_000);
//! assert_eq!(buf.len(), 100_000);
//! buf.fill(7);
//! pool.put(buf);
//! assert_eq!(pool.stats().puts, 1);
//! # Ok::<(), zeropool::Error>(())
//! ```
//!
//! The same pool is available to C through `include/zeropool.h`.
//!
//! # Layers
//!
//! The modules form layers; each imports only from its own layer or those
//! below (`tests/architecture.rs` reads `src/` and fails on an import that
//! climbs or closes a circle). Where a lower layer must call up (a guard
//! returning itself, the fork handlers, the per-thread table), it defines a
//! trait that the layer above implements (`buffer::GiveBack`,
//! `fork::PoolsAbove`/`HandlesAbove`, `tls::Holds`): static dispatch, no
//! import.
//!
//! | layer | modules | owns |
//! |---|---|---|
//! | C ABI | `ffi/` | handles, status codes, canary checks, claim states, `zp_local` |
//! | pool | `pool`, `fork` | `BufferPool`, the guard's return, `Builder::build`, fork handlers |
//! | thread caches | `thread_cache`, `tls` | the per-(thread, pool) caches, the thread's table |
//! | shared state | `shared`, `budget`, `stats`, `epoch` | slow paths, budget, counters, idle decay, the trim/close epoch |
//! | idle lists | `shard`, `eviction/` | a shard's idle buffers in a policy's order |
//! | memory | `buffer`, `region/`, `config`, `size_class` | raw buffers and the guard type, slots and their metadata, settings, size classes |
//! | system | `os`, `lock`, `pack`, `padded`, `error` | OS calls, the futex mutex and fork-lock trait, packed-word fields, cache padding, errors |
//!
//! Nothing here is async-signal-safe: do not get or return buffers from a
//! signal handler (one that interrupts a slow path would wait for a lock
//! the interrupted code holds).
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]
#![warn(missing_docs)]

#[cfg(not(target_pointer_width = "64"))]
compile_error!("zeropool supports 64-bit targets only");

mod budget;
mod buffer;
mod config;
mod error;
mod epoch;
mod eviction;
mod ffi;
mod fork;
mod lock;
mod os;
mod pack;
mod padded;
mod pool;
mod region;
mod shard;
mod shared;
mod size_class;
mod stats;
mod thread_cache;
mod tls;

pub use buffer::Buffer;
pub use config::{
    AutoConfig, Builder, EvictionPolicy, Zeroing, DEFAULT_BUDGET_SHARE, DEFAULT_IDLE_DECAY, DEFAULT_MIN_BUFFER_SIZE,
    MAX_IDLE_DECAY,
};
pub use error::Error;
pub use ffi::*;
#[doc(hidden)]
pub use fork::{__with_buffer_lock_held_for_test, __with_fork_lock_held_for_test};
#[doc(hidden)]
pub use os::__fail_madvise_for_test;
pub use pool::BufferPool;
pub use stats::Stats;
