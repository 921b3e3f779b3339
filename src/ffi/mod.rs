//! The C ABI: the `zp_*` functions declared in `include/zeropool.h`.
//!
//! Every entry point's body is one `export!` (`boundary.rs`), which runs
//! it inside a panic boundary (a panic becomes `ZP_ERR_INTERNAL` or NULL,
//! never an unwind into C); its pointers are checked first (`try_ref!`,
//! `try_mut!`, `non_null!`), and enum inputs are taken as integers and
//! validated before use (an out-of-range C enum passed as a Rust enum
//! would be undefined behaviour). `tests/architecture.rs` checks that every
//! `zp_*` function is written so.
//!
//! One module per concept: `status` (codes, C enums), `about` (status
//! descriptions, version), `boundary` (`export!` and the panic
//! boundary, handle casts, per-thread last error), `config` and `pool`
//! (handles), `buffer` (`zp_get`/`zp_put`, validated against the memory
//! layer's slot metadata before anything is trusted).
#![allow(unsafe_code)] // `#[no_mangle]` and caller-provided pointers
#![allow(non_camel_case_types)]
// C names
// The entry points take raw pointers from C: their contract is in the
// header, and marking them `unsafe fn` would change nothing for C callers.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

mod about;
mod boundary;
mod buffer;
mod config;
mod local;
mod pool;
mod status;

pub use buffer::{zp_get, zp_last_error, zp_put};
pub use config::{
    zp_config, zp_config_free, zp_config_new, zp_config_set_eviction_policy, zp_config_set_huge_pages,
    zp_config_set_idle_decay_ms, zp_config_set_max_buffers_per_shard, zp_config_set_max_pooled_bytes,
    zp_config_set_min_buffer_size, zp_config_set_num_shards, zp_config_set_pinned_memory, zp_config_set_tls_cache_size,
    zp_config_set_zeroing,
};
pub use local::{zp_local, zp_local_free, zp_local_get, zp_local_new, zp_local_put};
#[doc(hidden)]
pub use pool::__fail_next_handle_insert_for_test;
pub use pool::{zp_pool, zp_pool_free, zp_pool_new, zp_pool_new_with_config, zp_pool_stats, zp_pool_trim};
pub use about::{zp_status_str, zp_version};
pub use status::{zp_eviction_policy, zp_status, zp_zeroing};
