/**
 * @file zeropool.h
 * @brief ZeroPool: a thread-safe, secure-by-default byte-buffer pool (C API).
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 *
 * Link with -lzeropool (pkg-config: zeropool; CMake: find_package(zeropool)
 * and the zeropool::zeropool or zeropool::zeropool_static target). For
 * C++17 there is a header-only RAII layer over this one: zeropool.hpp.
 *
 * Ownership and threads
 *   - zp_pool is thread safe: any thread may zp_get from and zp_put to it, and
 *     a buffer may be returned from another thread than the one that got it.
 *     Creating and freeing pools is thread safe too; the one rule is that
 *     zp_pool_free(pool) must not race with, or be followed by, any other call
 *     on the same pool except zp_put (see zp_pool_free).
 *   - zp_config is a builder for one thread at a time.
 *   - A buffer from zp_get belongs to the caller until zp_put; zp_pool_free
 *     with buffers still out is allowed (see zp_pool_free). Never pass a
 *     buffer to free() or realloc().
 *   - No function aborts or unwinds into C: a caught internal panic is
 *     reported as ZP_ERR_INTERNAL (or NULL from zp_get).
 *   - No function is async-signal-safe: do not call them from a signal
 *     handler.
 *   - fork() is safe while other threads use pools (pthread_atfork handlers
 *     hold every zeropool lock across it). In the child, buffers that other
 *     threads held or cached are unreachable and never handed out.
 *
 * Zeroing (default ZP_ZERO_ALWAYS): every byte of a new buffer is zero, and
 * the bytes a caller could reach are scrubbed when it is returned, before
 * it is reused or released, with a scrub the compiler cannot remove.
 *
 * What zp_put detects
 *   Deterministically (always reported, nothing changed):
 *   - NULL pool or buffer (ZP_ERR_NULL_POINTER);
 *   - a pointer zeropool never handed out, including interior pointers of
 *     real buffers and arbitrary addresses (ZP_ERR_FOREIGN_BUFFER): pointers
 *     are checked against out-of-band slot metadata, never dereferenced first;
 *   - a buffer returned to a pool other than its own (ZP_ERR_WRONG_POOL);
 *   - a second return while the buffer is idle in the pool, or after it was
 *     rejected as overflowed (ZP_ERR_DOUBLE_PUT);
 *   - two threads returning the same buffer at the same instant: the return
 *     is one compare-and-swap on the buffer's state word, so exactly one
 *     gets ZP_OK and the other ZP_ERR_DOUBLE_PUT;
 *   - any change to the 8 bytes right after the requested size
 *     (ZP_ERR_OVERFLOW): a canary, random per buffer slot and kept out of
 *     band; the buffer is scrubbed and released, never reused.
 *   Not detected:
 *   - a second return after the same address was handed out again (it is
 *     then a live buffer again, of whoever got it);
 *   - writes further than 8 bytes past the size that skip the canary;
 *   - a return after the freed pool's last buffer came back is reported as
 *     ZP_ERR_FOREIGN_BUFFER (its metadata is gone), not ZP_ERR_DOUBLE_PUT;
 *   - reads and writes after zp_put (use after return); with
 *     ZP_ZERO_ALWAYS a write after return is still never seen by the next
 *     holder, and is counted in zp_stats.dirty_gets when a get finds it.
 *
 * Cost model. A zp_get or zp_put that hits the calling thread's cache for
 * the pool is constant time whatever the size and however many pools the
 * thread uses: one thread-local access (a __tls_get_addr call when the
 * library is loaded as a shared object; none through a zp_local handle),
 * one load of a global epoch (trims and closes), a pop or push on a
 * per-class stack, two plain stores of per-thread counters, no lock.
 * zp_get writes the buffer's 8-byte canary and its state word; zp_put finds
 * the buffer's slot metadata (two table loads and a multiply), checks state,
 * owner and canary, and takes the buffer back with one compare-and-swap,
 * the only atomic read-modify-write on the path; that swap waits for the
 * caller's earlier stores (e.g. writes into the buffer) to drain. Zeroing:
 * ZP_ZERO_NEVER adds nothing; ZP_ZERO_ON_PUT one zeroing pass over the
 * requested size on zp_put (32-byte AVX2 stores from 2 to 512 KiB where the
 * CPU has AVX2, glibc's memset otherwise); ZP_ZERO_ALWAYS that pass plus, on
 * zp_get, a read-only check of the requested size up to 128 KiB (a zeroing
 * pass above). A miss moves up to the cache size of buffers between the
 * thread's cache and a shard under one lock; only a pool's first use of a
 * class, or an empty pool, reaches the system (slots carved from reserved
 * chunks, no mmap per buffer). Every 64 gets a cache serves, and on every
 * slow path, a thread reads a coarse clock for idle decay and releases at
 * most 8 idle buffers (each a madvise call).
 *
 * Sizes and memory. A request of n >= min_buffer_size bytes gets a capacity
 * of at most 1.25 * n rounded up to a page (size classes four per doubling);
 * smaller requests get min_buffer_size. The default idle budget is 1/16 of
 * the memory the process may use (its cgroup v2 memory.max where set, else
 * physical memory), at least shards x buffers per shard x the smallest
 * capacity. Idle buffers unused for idle_decay (default 10 s) are scrubbed
 * and released by the pool's own calls: a shard's at the first call after
 * that on any thread, a thread cache's within two periods, at that thread's
 * next call. No thread is started: a process that stops calling keeps what
 * is idle until its next call or zp_pool_trim. Classes of whole huge pages
 * (2, 4, 6 MiB and every class from 8 MiB) are advised MADV_HUGEPAGE: a
 * first touch costs one fault per 2 MiB.
 *
 * Attributes: the functions that return a zp_status or a new object, and
 * zp_get, are ZP_NODISCARD, so an ignored result is a compiler warning (with
 * GCC before C23 and C++17 a (void) cast does not silence it: check it).
 * zp_get is also ZP_MALLOC and ZP_ALLOC_SIZE(2), as malloc is: the compiler
 * knows the buffer's size, so _FORTIFY_SOURCE and -Warray-bounds can check
 * accesses, and GCC warns about a constant size above PTRDIFF_MAX. Define
 * any of these macros (e.g. as empty) before including this header to
 * override it.
 */

#ifndef ZEROPOOL_H
#define ZEROPOOL_H

/* Generated by cbindgen from the Rust sources; do not edit. Regenerate with
   ZP_UPDATE_HEADER=1 cargo test --test header */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ZP_VERSION_MAJOR 0
#define ZP_VERSION_MINOR 2
#define ZP_VERSION_PATCH 0

/* Attribute macros for the declarations below. Define any of them before
   including this header to override it (e.g. as empty). */
#ifndef ZP_NODISCARD
#  if defined(__cplusplus) && __cplusplus >= 201703L
#    define ZP_NODISCARD [[nodiscard]]
#  elif !defined(__cplusplus) && defined(__STDC_VERSION__) && __STDC_VERSION__ >= 202311L
#    define ZP_NODISCARD [[nodiscard]]
#  elif defined(__GNUC__)
#    define ZP_NODISCARD __attribute__((__warn_unused_result__))
#  else
#    define ZP_NODISCARD
#  endif
#endif

#ifndef ZP_MALLOC
#  if defined(__GNUC__)
#    define ZP_MALLOC __attribute__((__malloc__))
#  else
#    define ZP_MALLOC
#  endif
#endif

#ifndef ZP_ALLOC_SIZE
#  if defined(__clang__)
#    if defined(__has_attribute)
#      if __has_attribute(__alloc_size__)
#        define ZP_ALLOC_SIZE(n) __attribute__((__alloc_size__(n)))
#      endif
#    endif
#  elif defined(__GNUC__) && (__GNUC__ > 4 || (__GNUC__ == 4 && __GNUC_MINOR__ >= 3))
#    define ZP_ALLOC_SIZE(n) __attribute__((__alloc_size__(n)))
#  endif
#  ifndef ZP_ALLOC_SIZE
#    define ZP_ALLOC_SIZE(n)
#  endif
#endif

/**
 * The default idle-memory budget is this share of the memory the process
 * may use (1/16: 1.5 GiB of 24 GiB), and never below the seed table's
 * `num_shards * max_buffers_per_shard * min_buffer_size`.
 */
#define DEFAULT_BUDGET_SHARE 16

/**
 * What a `zp_*` call did. Every function that can fail returns one.
 */
enum zp_status
#if defined(__cplusplus) || __STDC_VERSION__ >= 202311L
  : uint32_t
#endif // defined(__cplusplus) || __STDC_VERSION__ >= 202311L
 {
  /**
   * Success.
   */
  ZP_OK = 0,
  /**
   * A required pointer argument was NULL.
   */
  ZP_ERR_NULL_POINTER = 1,
  /**
   * A setting or size out of its range (including an unknown enum value).
   */
  ZP_ERR_INVALID_ARGUMENT = 2,
  /**
   * The system refused memory.
   */
  ZP_ERR_OUT_OF_MEMORY = 3,
  /**
   * Size above what any buffer can hold.
   */
  ZP_ERR_TOO_LARGE = 4,
  /**
   * The pointer was not handed out by zeropool (or is an interior pointer).
   */
  ZP_ERR_FOREIGN_BUFFER = 5,
  /**
   * The buffer belongs to another pool.
   */
  ZP_ERR_WRONG_POOL = 6,
  /**
   * The buffer was already returned.
   */
  ZP_ERR_DOUBLE_PUT = 7,
  /**
   * Bytes past the requested size were written.
   */
  ZP_ERR_OVERFLOW = 8,
  /**
   * A bug inside zeropool was caught (e.g. a panic).
   */
  ZP_ERR_INTERNAL = 9,
};
#ifndef __cplusplus
#if __STDC_VERSION__ >= 202311L
typedef enum zp_status zp_status;
#else
typedef uint32_t zp_status;
#endif // __STDC_VERSION__ >= 202311L
#endif // __cplusplus

/**
 * Values for `zp_config_set_eviction_policy` (passed as `uint32_t`).
 */
enum zp_eviction_policy
#if defined(__cplusplus) || __STDC_VERSION__ >= 202311L
  : uint32_t
#endif // defined(__cplusplus) || __STDC_VERSION__ >= 202311L
 {
  /**
   * CLOCK-Pro adapted to buffers (the default).
   */
  ZP_EVICTION_CLOCK_PRO = 0,
  /**
   * Most recently returned first; least recently returned evicted first.
   */
  ZP_EVICTION_LIFO = 1,
};
#ifndef __cplusplus
#if __STDC_VERSION__ >= 202311L
typedef enum zp_eviction_policy zp_eviction_policy;
#else
typedef uint32_t zp_eviction_policy;
#endif // __STDC_VERSION__ >= 202311L
#endif // __cplusplus

/**
 * Values for `zp_config_set_zeroing` (passed as `uint32_t`).
 */
enum zp_zeroing
#if defined(__cplusplus) || __STDC_VERSION__ >= 202311L
  : uint32_t
#endif // defined(__cplusplus) || __STDC_VERSION__ >= 202311L
 {
  /**
   * Zero on get and scrub on put (the default).
   */
  ZP_ZERO_ALWAYS = 0,
  /**
   * Scrub on put only; gets still see zeros.
   */
  ZP_ZERO_ON_PUT = 1,
  /**
   * No zeroing while pooled: a get may see old bytes. Not for secrets.
   */
  ZP_ZERO_NEVER = 2,
};
#ifndef __cplusplus
#if __STDC_VERSION__ >= 202311L
typedef enum zp_zeroing zp_zeroing;
#else
typedef uint32_t zp_zeroing;
#endif // __STDC_VERSION__ >= 202311L
#endif // __cplusplus

/**
 * An opaque pool configuration (a builder). Not thread safe: use one from
 * one thread at a time. Settings are validated as they are set.
 */
typedef struct zp_config zp_config;

/**
 * A thread's own handle on a pool. Opaque.
 */
typedef struct zp_local zp_local;

/**
 * An opaque, thread-safe pool. Create with `zp_pool_new` or
 * `zp_pool_new_with_config`, free with `zp_pool_free`.
 */
typedef struct zp_pool zp_pool;

/**
 * A snapshot of a pool's counters. Sums of per-thread counters are read
 * without stopping the threads, so a snapshot taken while others work is
 * approximate; once they are quiet it is exact.
 *
 * `zp_stats` in C, `zeropool::Stats` in Rust.
 */
typedef struct zp_stats {
  /**
   * Buffers handed out (gets that succeeded).
   */
  uint64_t gets;
  /**
   * Buffers returned (puts and drops). Rejected `zp_put` calls count in
   * `rejected_puts` only.
   */
  uint64_t puts;
  /**
   * Gets served from the calling thread's cache.
   */
  uint64_t tls_hits;
  /**
   * Gets served from a shard.
   */
  uint64_t shard_hits;
  /**
   * Buffers allocated from the system.
   */
  uint64_t allocations;
  /**
   * Idle or returned buffers released because of the budget or shard limits.
   */
  uint64_t evictions;
  /**
   * Buffers idle in the pool now (shards plus thread caches).
   */
  uint64_t pooled_buffers;
  /**
   * Bytes idle in the pool now (sum of capacities).
   */
  uint64_t pooled_bytes;
  /**
   * Buffers handed out and not yet returned.
   */
  uint64_t outstanding;
  /**
   * Buffers that could not be locked in RAM (pinned pools only).
   */
  uint64_t pin_failures;
  /**
   * `zp_put` calls rejected as foreign, wrong pool, double put or overflow.
   */
  uint64_t rejected_puts;
  /**
   * Bytes allocated from the system so far (sum of capacities).
   */
  uint64_t allocated_bytes;
  /**
   * Gets that found bytes of the buffer written after it was returned
   * (a use after put), zeroed before the hand-out (`Always` only).
   */
  uint64_t dirty_gets;
  /**
   * Idle buffers released because they went unused for the pool's
   * `idle_decay` (scrubbed, their pages given back).
   */
  uint64_t decayed;
} zp_stats;

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

/**
 * Describes a status code.
 *
 * @param status  a `zp_status` value (unknown values are accepted).
 * @return a static, NUL-terminated description, never NULL; do not free it.
 *
 * Thread safety: thread safe.
 */
ZP_NODISCARD const char *zp_status_str(zp_status status);

/**
 * The version of the library that is loaded.
 *
 * @return "MAJOR.MINOR.PATCH", static and NUL-terminated (do not free it);
 *         compare with `ZP_VERSION_MAJOR`/`MINOR`/`PATCH` from the header the
 *         program was built with.
 *
 * Thread safety: thread safe.
 */
ZP_NODISCARD const char *zp_version(void);

/**
 * Gets a buffer from the pool.
 *
 * @param pool  a live pool.
 * @param size  the bytes needed; 0 gives a valid buffer that must be returned
 *              like any other.
 * @return a page-aligned buffer of exactly `size` usable bytes (all zero
 *         unless the pool's zeroing is ZP_ZERO_NEVER), owned by the caller
 *         until it is given back with `zp_put` (never with free()). NULL on
 *         failure: `zp_last_error()` then says why (ZP_ERR_NULL_POINTER,
 *         ZP_ERR_TOO_LARGE: no buffer can hold `size`, e.g. SIZE_MAX, and
 *         nothing was allocated; ZP_ERR_OUT_OF_MEMORY).
 *
 * Thread safety: thread safe; not after `zp_pool_free(pool)`.
 */
ZP_NODISCARD void *zp_get(struct zp_pool *pool, size_t size) ZP_MALLOC ZP_ALLOC_SIZE(2);

/**
 * Why this thread's most recent failed `zp_get` failed. Like errno, it is
 * only meaningful right after `zp_get` returned NULL.
 *
 * @return the status of this thread's last failed `zp_get`.
 *
 * Thread safety: thread safe (the value is per thread).
 */
ZP_NODISCARD zp_status zp_last_error(void);

/**
 * Returns a buffer to its pool, from any thread. Validates before it
 * trusts: the pointer is looked up in the slot metadata (arithmetic and
 * two table loads) before anything is dereferenced, and the buffer is
 * taken back with one compare-and-swap, so when two threads return the
 * same buffer at the same instant exactly one of them gets ZP_OK. (A
 * second return that comes after the buffer was handed out again cannot
 * be told from its new holder's return: addresses are reused.)
 *
 * @param pool  the pool `buf` came from; it may have been freed since with
 *              `zp_pool_free` (the pointer is never dereferenced here), and
 *              the buffer is then released.
 * @param buf   a buffer from `zp_get`; the caller must not use it afterwards.
 * @return ZP_OK, or:
 *         - ZP_ERR_NULL_POINTER: `pool` or `buf` is NULL;
 *         - ZP_ERR_FOREIGN_BUFFER: `buf` was not handed out by zeropool, or is
 *           an interior pointer of a buffer;
 *         - ZP_ERR_WRONG_POOL: `buf` came from another pool (it stays yours);
 *         - ZP_ERR_DOUBLE_PUT: `buf` was already returned;
 *         - ZP_ERR_OVERFLOW: bytes right after the requested size were
 *           written; the buffer is scrubbed and its memory given back,
 *           never reused as it is.
 *         Each rejection leaves the pool intact and is counted in
 *         `rejected_puts`.
 *
 * Thread safety: thread safe, also concurrently with `zp_pool_free(pool)`.
 */
ZP_NODISCARD zp_status zp_put(struct zp_pool *pool, void *buf);

/**
 * Creates a pool configuration with every setting at its default
 * (auto-configured from the CPU count).
 *
 * Settings are validated as they are set; pass the configuration to
 * `zp_pool_new_with_config`, then free it with `zp_config_free`.
 *
 * @return a new configuration owned by the caller, or NULL when out of
 *         memory.
 *
 * Thread safety: may be called from any thread.
 */
ZP_NODISCARD struct zp_config *zp_config_new(void);

/**
 * Frees a configuration. Pools built from it are not affected.
 *
 * @param cfg  a configuration from `zp_config_new`, or NULL (a no-op). It
 *             must not be used afterwards, and must not be in use by
 *             another thread.
 */
void zp_config_free(struct zp_config *cfg);

/**
 * Sets how many buffers each thread caches for the pool.
 *
 * @param cfg  the configuration to change.
 * @param buffers  0..=1024; 0 disables the thread cache.
 * @return ZP_OK; ZP_ERR_NULL_POINTER if `cfg` is NULL;
 *         ZP_ERR_INVALID_ARGUMENT if `buffers` is out of range (the
 *         configuration is then unchanged).
 *
 * Thread safety: not thread safe for the same `cfg` (one thread at a time);
 * different configurations are independent.
 */
ZP_NODISCARD zp_status zp_config_set_tls_cache_size(struct zp_config *cfg, size_t buffers);

/**
 * Sets the smallest buffer capacity (default 1 MiB).
 *
 * @param cfg  the configuration to change.
 * @param bytes  1 byte..=1 TiB, rounded up to a size class (whole pages).
 * @return ZP_OK; ZP_ERR_NULL_POINTER if `cfg` is NULL;
 *         ZP_ERR_INVALID_ARGUMENT if `bytes` is out of range (the
 *         configuration is then unchanged).
 *
 * Thread safety: not thread safe for the same `cfg` (one thread at a time);
 * different configurations are independent.
 */
ZP_NODISCARD zp_status zp_config_set_min_buffer_size(struct zp_config *cfg, size_t bytes);

/**
 * Sets how many idle buffers each shard keeps per size class.
 *
 * @param cfg  the configuration to change.
 * @param buffers  1..=2^20.
 * @return ZP_OK; ZP_ERR_NULL_POINTER if `cfg` is NULL;
 *         ZP_ERR_INVALID_ARGUMENT if `buffers` is out of range (the
 *         configuration is then unchanged).
 *
 * Thread safety: not thread safe for the same `cfg` (one thread at a time);
 * different configurations are independent.
 */
ZP_NODISCARD zp_status zp_config_set_max_buffers_per_shard(struct zp_config *cfg, size_t buffers);

/**
 * Sets the number of shards of the pool's shared part.
 *
 * @param cfg  the configuration to change.
 * @param shards  a power of two, 1..=1024.
 * @return ZP_OK; ZP_ERR_NULL_POINTER if `cfg` is NULL;
 *         ZP_ERR_INVALID_ARGUMENT if `shards` is not a power of two in range
 *         (the configuration is then unchanged).
 *
 * Thread safety: not thread safe for the same `cfg` (one thread at a time);
 * different configurations are independent.
 */
ZP_NODISCARD zp_status zp_config_set_num_shards(struct zp_config *cfg, size_t shards);

/**
 * Locks buffers in RAM (mlock) and excludes them from core dumps. When the
 * system refuses, buffers stay usable and `pin_failures` counts it.
 *
 * @param cfg  the configuration to change.
 * @param pinned  true to pin, false (the default) not to.
 * @return ZP_OK, or ZP_ERR_NULL_POINTER if `cfg` is NULL.
 *
 * Thread safety: not thread safe for the same `cfg` (one thread at a time);
 * different configurations are independent.
 */
ZP_NODISCARD zp_status zp_config_set_pinned_memory(struct zp_config *cfg, bool pinned);

/**
 * Sets which idle buffers are released first when the budget is exceeded.
 *
 * @param cfg  the configuration to change.
 * @param policy  one of the `zp_eviction_policy` values (default
 *                ZP_EVICTION_CLOCK_PRO).
 * @return ZP_OK; ZP_ERR_NULL_POINTER if `cfg` is NULL;
 *         ZP_ERR_INVALID_ARGUMENT for any other value (the configuration is
 *         then unchanged).
 *
 * Thread safety: not thread safe for the same `cfg` (one thread at a time);
 * different configurations are independent.
 */
ZP_NODISCARD
zp_status zp_config_set_eviction_policy(struct zp_config *cfg,
                                        zp_eviction_policy policy);

/**
 * Sets when buffers are zeroed (see `zp_zeroing`).
 *
 * @param cfg  the configuration to change.
 * @param zeroing  one of the `zp_zeroing` values (default ZP_ZERO_ALWAYS).
 * @return ZP_OK; ZP_ERR_NULL_POINTER if `cfg` is NULL;
 *         ZP_ERR_INVALID_ARGUMENT for any other value (the configuration is
 *         then unchanged).
 *
 * Thread safety: not thread safe for the same `cfg` (one thread at a time);
 * different configurations are independent.
 */
ZP_NODISCARD zp_status zp_config_set_zeroing(struct zp_config *cfg, zp_zeroing zeroing);

/**
 * Sets the budget for idle bytes (shared shards plus every thread's cache).
 * Default: 1/16 of the memory the process may use (its cgroup v2
 * `memory.max` where one is set, else physical memory), at least
 * shards x buffers per shard x the smallest capacity.
 *
 * @param cfg  the configuration to change.
 * @param bytes  any value; 0 keeps nothing idle.
 * @return ZP_OK, or ZP_ERR_NULL_POINTER if `cfg` is NULL.
 *
 * Thread safety: not thread safe for the same `cfg` (one thread at a time);
 * different configurations are independent.
 */
ZP_NODISCARD zp_status zp_config_set_max_pooled_bytes(struct zp_config *cfg, size_t bytes);

/**
 * Sets the idle decay: buffers idle (in the shards or in any thread's
 * cache) and unused for about `ms` milliseconds are scrubbed and released,
 * between one and two periods after they last went idle, by the pool's
 * own calls (a few buffers per call; a thread's cache at that thread's
 * next call). No thread is started: a process that stops calling keeps
 * what is idle until its next call or `zp_pool_trim`.
 *
 * @param cfg  the configuration to change.
 * @param ms  0 (no decay) ..= 86,400,000 (a day); default 10,000.
 * @return ZP_OK; ZP_ERR_NULL_POINTER if `cfg` is NULL;
 *         ZP_ERR_INVALID_ARGUMENT if `ms` is above a day (the
 *         configuration is then unchanged).
 *
 * Thread safety: not thread safe for the same `cfg` (one thread at a time);
 * different configurations are independent.
 */
ZP_NODISCARD zp_status zp_config_set_idle_decay_ms(struct zp_config *cfg, uint64_t ms);

/**
 * Backs size classes of whole huge pages (2, 4 and 6 MiB, and every
 * class from 8 MiB) with transparent huge pages where the system allows
 * them (`MADV_HUGEPAGE`): a first touch then costs one page fault per
 * 2 MiB instead of one per 4 KiB.
 *
 * @param cfg  the configuration to change.
 * @param on  true (the default) or false.
 * @return ZP_OK, or ZP_ERR_NULL_POINTER if `cfg` is NULL.
 *
 * Thread safety: not thread safe for the same `cfg` (one thread at a time);
 * different configurations are independent.
 */
ZP_NODISCARD zp_status zp_config_set_huge_pages(struct zp_config *cfg, bool on);

/**
 * Makes a handle on `pool` for the calling thread.
 *
 * @param pool  a live pool.
 * @return the handle, owned by the caller until `zp_local_free`; NULL on
 *         failure, and `zp_last_error()` says why (ZP_ERR_NULL_POINTER,
 *         ZP_ERR_OUT_OF_MEMORY).
 *
 * Thread safety: thread safe. The handle belongs to the calling thread:
 * used from another thread it stays correct, at the cost of the ordinary
 * path (`zp_get`/`zp_put`).
 */
ZP_NODISCARD struct zp_local *zp_local_new(struct zp_pool *pool);

/**
 * Frees a handle: its idle buffers go back to the pool (or are released,
 * scrubbed, if the pool was freed). NULL is a no-op. Called from another
 * thread than the one that made the handle (while that thread lives),
 * the handle's idle buffers go back at that thread's next zeropool call
 * or its exit: its cache belongs to it.
 *
 * @param local  a handle from `zp_local_new`, or NULL; not used afterwards.
 *
 * Thread safety: may come before or after `zp_pool_free`, from any
 * thread, but not while another call uses the same handle.
 */
void zp_local_free(struct zp_local *local);

/**
 * Gets a buffer through the handle: as `zp_get` on its pool, without the
 * thread-local lookup.
 *
 * @param local  a handle from `zp_local_new`.
 * @param size   the bytes needed (0 gives a valid buffer).
 * @return as `zp_get`: a buffer of `size` usable bytes, or NULL with
 *         `zp_last_error()` set (ZP_ERR_NULL_POINTER, ZP_ERR_TOO_LARGE,
 *         ZP_ERR_OUT_OF_MEMORY, or ZP_ERR_INVALID_ARGUMENT once the pool
 *         was freed).
 *
 * Thread safety: meant for the handle's thread; from another thread it
 * works as `zp_get` does.
 */
ZP_NODISCARD void *zp_local_get(struct zp_local *local, size_t size) ZP_MALLOC ZP_ALLOC_SIZE(2);

/**
 * Returns a buffer of the handle's pool through the handle: the same
 * checks and codes as `zp_put`. Any buffer of the pool is accepted,
 * whichever call or thread got it.
 *
 * @param local  a handle from `zp_local_new` (its pool may have been freed).
 * @param buf    a buffer of the handle's pool; not used afterwards.
 * @return as `zp_put`.
 *
 * Thread safety: meant for the handle's thread; from another thread it
 * works as `zp_put` does.
 */
ZP_NODISCARD zp_status zp_local_put(struct zp_local *local, void *buf);

/**
 * Creates a pool with every setting at its default (auto-configured from
 * the CPU count).
 *
 * @return a new pool owned by the caller (free it with `zp_pool_free`), or
 *         NULL when out of memory.
 *
 * Thread safety: may be called from any thread, concurrently with any other
 * call.
 */
ZP_NODISCARD struct zp_pool *zp_pool_new(void);

/**
 * Creates a pool from a configuration.
 *
 * @param cfg  the settings; it stays owned by the caller, and may be changed
 *             or freed as soon as this returns.
 * @param out  where the new pool is stored (owned by the caller; free it
 *             with `zp_pool_free`). Set to NULL on failure when `out` is not
 *             NULL.
 * @return ZP_OK; ZP_ERR_NULL_POINTER if `cfg` or `out` is NULL;
 *         ZP_ERR_INVALID_ARGUMENT if the settings do not fit together;
 *         ZP_ERR_OUT_OF_MEMORY.
 *
 * Thread safety: may be called from any thread, concurrently with any other
 * call; `cfg` must not be changed by another thread meanwhile.
 */
ZP_NODISCARD zp_status zp_pool_new_with_config(const struct zp_config *cfg, struct zp_pool **out);

/**
 * Frees a pool. Idle buffers are released now, scrubbed; buffers still out
 * stay valid: return them later with `zp_put` and this same (now freed)
 * pointer value, and they are released then. The pool's memory is gone once
 * the last one is back. Idle buffers in other threads' caches are released
 * at that thread's next zeropool call or its exit; those idle in a
 * `zp_local` handle's own cache, at that handle's next call or
 * `zp_local_free`. The pool's mappings go with its last buffer, whatever
 * still refers to it (a `zp_local` handle, another thread's cache).
 *
 * @param pool  a pool from `zp_pool_new` or `zp_pool_new_with_config`, or
 *              NULL (a no-op).
 *
 * Thread safety: pools are independent, so freeing one never disturbs
 * another. For this pool, `zp_pool_free` must not run concurrently with,
 * nor be followed by, any call that uses it (`zp_get`, `zp_pool_stats`,
 * `zp_pool_trim`, a second `zp_pool_free`); the exception is `zp_put`,
 * which may run concurrently with it and after it.
 */
void zp_pool_free(struct zp_pool *pool);

/**
 * Copies the pool's counters.
 *
 * @param pool  a live pool.
 * @param out   where the counters are written.
 * @return ZP_OK, or ZP_ERR_NULL_POINTER if `pool` or `out` is NULL.
 *
 * Thread safety: thread safe. Sums of per-thread counters are read without
 * stopping other threads, so they are exact once other threads are quiet.
 */
ZP_NODISCARD zp_status zp_pool_stats(const struct zp_pool *pool, struct zp_stats *out);

/**
 * Releases every idle buffer (scrubbed): the shards' and this thread's
 * cache now, other threads' caches at their next call.
 *
 * @param pool  a live pool.
 * @return ZP_OK, or ZP_ERR_NULL_POINTER if `pool` is NULL.
 *
 * Thread safety: thread safe.
 */
ZP_NODISCARD zp_status zp_pool_trim(struct zp_pool *pool);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* ZEROPOOL_H */
