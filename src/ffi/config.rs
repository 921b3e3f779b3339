//! `zp_config`: the builder handle.

use std::ptr;

use super::boundary::{export, non_null, try_box, try_mut};
use super::status::zp_status::{self, *};
use super::status::{policy_from_c, zeroing_from_c, PolicyArg, ZeroingArg};
use crate::config::Builder;

/// An opaque pool configuration (a builder). Not thread safe: use one from
/// one thread at a time. Settings are validated as they are set.
pub struct zp_config {
    builder: Builder,
}

impl zp_config {
    pub(super) fn builder(&self) -> Builder {
        self.builder.clone()
    }
}

/// Creates a pool configuration with every setting at its default
/// (auto-configured from the CPU count).
///
/// Settings are validated as they are set; pass the configuration to
/// `zp_pool_new_with_config`, then free it with `zp_config_free`.
///
/// @return a new configuration owned by the caller, or NULL when out of
///         memory.
///
/// Thread safety: may be called from any thread.
/// cbindgen:prefix=ZP_NODISCARD
#[no_mangle]
pub extern "C" fn zp_config_new() -> *mut zp_config {
    export!(ptr::null_mut(), {
        match try_box(zp_config { builder: Builder::new() }) {
            Some(b) => Box::into_raw(b),
            None => ptr::null_mut(),
        }
    })
}

/// Frees a configuration. Pools built from it are not affected.
///
/// @param cfg  a configuration from `zp_config_new`, or NULL (a no-op). It
///             must not be used afterwards, and must not be in use by
///             another thread.
#[no_mangle]
pub extern "C" fn zp_config_free(cfg: *mut zp_config) {
    export!((), {
        non_null!(cfg);
        // SAFETY: the header's contract: `cfg` came from zp_config_new and
        // is freed once.
        drop(unsafe { Box::from_raw(cfg) });
    })
}

/// Applies `set` to the builder if the result validates; otherwise leaves
/// the configuration unchanged. (Inside the caller's `export!`.)
fn update(cfg: *mut zp_config, set: impl FnOnce(Builder) -> Builder) -> zp_status {
    let cfg = try_mut!(cfg);
    let candidate = set(cfg.builder.clone());
    match candidate.clone().config() {
        Ok(_) => {
            cfg.builder = candidate;
            ZP_OK
        }
        Err(e) => zp_status::from(&e),
    }
}

/// Sets how many buffers each thread caches for the pool.
///
/// @param cfg  the configuration to change.
/// @param buffers  0..=1024; 0 disables the thread cache.
/// @return ZP_OK; ZP_ERR_NULL_POINTER if `cfg` is NULL;
///         ZP_ERR_INVALID_ARGUMENT if `buffers` is out of range (the
///         configuration is then unchanged).
///
/// Thread safety: not thread safe for the same `cfg` (one thread at a time);
/// different configurations are independent.
/// cbindgen:prefix=ZP_NODISCARD
#[no_mangle]
pub extern "C" fn zp_config_set_tls_cache_size(cfg: *mut zp_config, buffers: usize) -> zp_status {
    export!(ZP_ERR_INTERNAL, { update(cfg, |b| b.tls_cache_size(buffers)) })
}

/// Sets the smallest buffer capacity (default 1 MiB).
///
/// @param cfg  the configuration to change.
/// @param bytes  1 byte..=1 TiB, rounded up to a size class (whole pages).
/// @return ZP_OK; ZP_ERR_NULL_POINTER if `cfg` is NULL;
///         ZP_ERR_INVALID_ARGUMENT if `bytes` is out of range (the
///         configuration is then unchanged).
///
/// Thread safety: not thread safe for the same `cfg` (one thread at a time);
/// different configurations are independent.
/// cbindgen:prefix=ZP_NODISCARD
#[no_mangle]
pub extern "C" fn zp_config_set_min_buffer_size(cfg: *mut zp_config, bytes: usize) -> zp_status {
    export!(ZP_ERR_INTERNAL, { update(cfg, |b| b.min_buffer_size(bytes)) })
}

/// Sets how many idle buffers each shard keeps per size class.
///
/// @param cfg  the configuration to change.
/// @param buffers  1..=2^20.
/// @return ZP_OK; ZP_ERR_NULL_POINTER if `cfg` is NULL;
///         ZP_ERR_INVALID_ARGUMENT if `buffers` is out of range (the
///         configuration is then unchanged).
///
/// Thread safety: not thread safe for the same `cfg` (one thread at a time);
/// different configurations are independent.
/// cbindgen:prefix=ZP_NODISCARD
#[no_mangle]
pub extern "C" fn zp_config_set_max_buffers_per_shard(cfg: *mut zp_config, buffers: usize) -> zp_status {
    export!(ZP_ERR_INTERNAL, { update(cfg, |b| b.max_buffers_per_shard(buffers)) })
}

/// Sets the number of shards of the pool's shared part.
///
/// @param cfg  the configuration to change.
/// @param shards  a power of two, 1..=1024.
/// @return ZP_OK; ZP_ERR_NULL_POINTER if `cfg` is NULL;
///         ZP_ERR_INVALID_ARGUMENT if `shards` is not a power of two in range
///         (the configuration is then unchanged).
///
/// Thread safety: not thread safe for the same `cfg` (one thread at a time);
/// different configurations are independent.
/// cbindgen:prefix=ZP_NODISCARD
#[no_mangle]
pub extern "C" fn zp_config_set_num_shards(cfg: *mut zp_config, shards: usize) -> zp_status {
    export!(ZP_ERR_INTERNAL, { update(cfg, |b| b.num_shards(shards)) })
}

/// Locks buffers in RAM (mlock) and excludes them from core dumps. When the
/// system refuses, buffers stay usable and `pin_failures` counts it.
///
/// @param cfg  the configuration to change.
/// @param pinned  true to pin, false (the default) not to.
/// @return ZP_OK, or ZP_ERR_NULL_POINTER if `cfg` is NULL.
///
/// Thread safety: not thread safe for the same `cfg` (one thread at a time);
/// different configurations are independent.
/// cbindgen:prefix=ZP_NODISCARD
#[no_mangle]
pub extern "C" fn zp_config_set_pinned_memory(cfg: *mut zp_config, pinned: bool) -> zp_status {
    export!(ZP_ERR_INTERNAL, { update(cfg, |b| b.pinned_memory(pinned)) })
}

/// Sets which idle buffers are released first when the budget is exceeded.
///
/// @param cfg  the configuration to change.
/// @param policy  one of the `zp_eviction_policy` values (default
///                ZP_EVICTION_CLOCK_PRO).
/// @return ZP_OK; ZP_ERR_NULL_POINTER if `cfg` is NULL;
///         ZP_ERR_INVALID_ARGUMENT for any other value (the configuration is
///         then unchanged).
///
/// Thread safety: not thread safe for the same `cfg` (one thread at a time);
/// different configurations are independent.
/// cbindgen:prefix=ZP_NODISCARD
#[no_mangle]
pub extern "C" fn zp_config_set_eviction_policy(cfg: *mut zp_config, policy: PolicyArg) -> zp_status {
    export!(ZP_ERR_INTERNAL, {
        non_null!(cfg);
        let Some(policy) = policy_from_c(policy) else { return ZP_ERR_INVALID_ARGUMENT };
        update(cfg, |b| b.eviction_policy(policy))
    })
}

/// Sets when buffers are zeroed (see `zp_zeroing`).
///
/// @param cfg  the configuration to change.
/// @param zeroing  one of the `zp_zeroing` values (default ZP_ZERO_ALWAYS).
/// @return ZP_OK; ZP_ERR_NULL_POINTER if `cfg` is NULL;
///         ZP_ERR_INVALID_ARGUMENT for any other value (the configuration is
///         then unchanged).
///
/// Thread safety: not thread safe for the same `cfg` (one thread at a time);
/// different configurations are independent.
/// cbindgen:prefix=ZP_NODISCARD
#[no_mangle]
pub extern "C" fn zp_config_set_zeroing(cfg: *mut zp_config, zeroing: ZeroingArg) -> zp_status {
    export!(ZP_ERR_INTERNAL, {
        non_null!(cfg);
        let Some(zeroing) = zeroing_from_c(zeroing) else { return ZP_ERR_INVALID_ARGUMENT };
        update(cfg, |b| b.zeroing(zeroing))
    })
}

/// Sets the budget for idle bytes (shared shards plus every thread's cache).
/// Default: 1/16 of the memory the process may use (its cgroup v2
/// `memory.max` where one is set, else physical memory), at least
/// shards x buffers per shard x the smallest capacity.
///
/// @param cfg  the configuration to change.
/// @param bytes  any value; 0 keeps nothing idle.
/// @return ZP_OK, or ZP_ERR_NULL_POINTER if `cfg` is NULL.
///
/// Thread safety: not thread safe for the same `cfg` (one thread at a time);
/// different configurations are independent.
/// cbindgen:prefix=ZP_NODISCARD
#[no_mangle]
pub extern "C" fn zp_config_set_max_pooled_bytes(cfg: *mut zp_config, bytes: usize) -> zp_status {
    export!(ZP_ERR_INTERNAL, { update(cfg, |b| b.max_pooled_bytes(bytes)) })
}

/// Sets the idle decay: buffers idle (in the shards or in any thread's
/// cache) and unused for about `ms` milliseconds are scrubbed and released,
/// between one and two periods after they last went idle, by the pool's
/// own calls (a few buffers per call; a thread's cache at that thread's
/// next call). No thread is started: a process that stops calling keeps
/// what is idle until its next call or `zp_pool_trim`.
///
/// @param cfg  the configuration to change.
/// @param ms  0 (no decay) ..= 86,400,000 (a day); default 10,000.
/// @return ZP_OK; ZP_ERR_NULL_POINTER if `cfg` is NULL;
///         ZP_ERR_INVALID_ARGUMENT if `ms` is above a day (the
///         configuration is then unchanged).
///
/// Thread safety: not thread safe for the same `cfg` (one thread at a time);
/// different configurations are independent.
/// cbindgen:prefix=ZP_NODISCARD
#[no_mangle]
pub extern "C" fn zp_config_set_idle_decay_ms(cfg: *mut zp_config, ms: u64) -> zp_status {
    export!(ZP_ERR_INTERNAL, { update(cfg, |b| b.idle_decay(std::time::Duration::from_millis(ms))) })
}

/// Backs size classes of whole huge pages (2, 4 and 6 MiB, and every
/// class from 8 MiB) with transparent huge pages where the system allows
/// them (`MADV_HUGEPAGE`): a first touch then costs one page fault per
/// 2 MiB instead of one per 4 KiB.
///
/// @param cfg  the configuration to change.
/// @param on  true (the default) or false.
/// @return ZP_OK, or ZP_ERR_NULL_POINTER if `cfg` is NULL.
///
/// Thread safety: not thread safe for the same `cfg` (one thread at a time);
/// different configurations are independent.
/// cbindgen:prefix=ZP_NODISCARD
#[no_mangle]
pub extern "C" fn zp_config_set_huge_pages(cfg: *mut zp_config, on: bool) -> zp_status {
    export!(ZP_ERR_INTERNAL, { update(cfg, |b| b.huge_pages(on)) })
}
