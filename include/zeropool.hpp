/**
 * @file zeropool.hpp
 * @brief ZeroPool for C++17: a header-only RAII layer over zeropool.h.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 *
 * @code
 * #include <zeropool.hpp>
 *
 * zeropool::pool p;                                  // auto-configured
 * zeropool::pool q{zeropool::config{}.zeroing(ZP_ZERO_ON_PUT).max_pooled_bytes(64u << 20)};
 * zeropool::buffer b = p.get(4096);                  // 4096 zeroed bytes, move-only
 * std::memcpy(b.data(), "data", 4);
 * b.reset();                                         // back to the pool (also on destruction)
 * zp_stats s = p.stats();
 * @endcode
 *
 * Errors are exceptions:
 *   - std::bad_alloc: the system refused memory (ZP_ERR_OUT_OF_MEMORY);
 *   - std::invalid_argument: a setting out of its range
 *     (ZP_ERR_INVALID_ARGUMENT);
 *   - std::length_error: a size no buffer can hold (ZP_ERR_TOO_LARGE);
 *   - zeropool::error (a std::runtime_error with the zp_status): anything
 *     else, e.g. using a moved-from pool (ZP_ERR_NULL_POINTER).
 * Destructors, moves and buffer::reset() never throw.
 *
 * Threads: as in C. A pool may be used from any number of threads; a buffer
 * may be returned on another thread than the one that got it. A config is
 * for one thread at a time. A buffer may outlive its pool object: it is
 * released when it is returned.
 *
 * Linking: the header needs only the C library (zeropool::zeropool or
 * zeropool::zeropool_static in CMake, pkg-config zeropool).
 */
#ifndef ZEROPOOL_HPP
#define ZEROPOOL_HPP

#if !defined(__cplusplus) || __cplusplus < 201703L
#error "zeropool.hpp needs C++17 or later (zeropool.h is the C API)"
#endif

#include <chrono>
#include <cstddef>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>

#include "zeropool.h"

namespace zeropool {

/// A zeropool failure that has no standard exception of its own; status()
/// is the C API's code.
class error : public std::runtime_error {
 public:
  error(zp_status status, const std::string &what)
      : std::runtime_error(what + ": " + zp_status_str(status)), status_(status) {}
  /// The C API's status code.
  zp_status status() const noexcept { return status_; }

 private:
  zp_status status_;
};

namespace detail {

/// Throws the exception that stands for `status` (which is not ZP_OK).
[[noreturn]] inline void throw_status(zp_status status, const char *what) {
  switch (status) {
    case ZP_ERR_OUT_OF_MEMORY:
      throw std::bad_alloc();
    case ZP_ERR_INVALID_ARGUMENT:
      throw std::invalid_argument(std::string(what) + ": " + zp_status_str(status));
    case ZP_ERR_TOO_LARGE:
      throw std::length_error(std::string(what) + ": " + zp_status_str(status));
    default:
      throw error(status, what);
  }
}

inline void check(zp_status status, const char *what) {
  if (status != ZP_OK) throw_status(status, what);
}

}  // namespace detail

/// A buffer of a pool: `size()` usable bytes, page aligned, zeroed unless the
/// pool's zeroing is ZP_ZERO_NEVER. Move-only; it goes back to its pool on
/// reset() or destruction. A default-constructed or moved-from buffer is
/// empty (data() is nullptr).
class buffer {
 public:
  buffer() noexcept = default;

  /// Adopts a buffer got from `owner` through the C API (zp_get), which
  /// this object then returns with zp_put. zp_put takes back any buffer of
  /// the pool, so a wrapper over another source of the pool's buffers (a
  /// per-thread handle, say) can hand out this same type.
  buffer(zp_pool *owner, void *data, std::size_t size) noexcept
      : pool_(owner), data_(static_cast<unsigned char *>(data)), size_(data ? size : 0) {}

  buffer(const buffer &) = delete;
  buffer &operator=(const buffer &) = delete;

  buffer(buffer &&other) noexcept
      : pool_(std::exchange(other.pool_, nullptr)),
        data_(std::exchange(other.data_, nullptr)),
        size_(std::exchange(other.size_, 0)) {}

  buffer &operator=(buffer &&other) noexcept {
    if (this != &other) {
      reset();
      pool_ = std::exchange(other.pool_, nullptr);
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }

  ~buffer() { reset(); }

  unsigned char *data() noexcept { return data_; }
  const unsigned char *data() const noexcept { return data_; }
  /// The bytes asked for; writing past them is caught by the pool
  /// (ZP_ERR_OVERFLOW, counted in rejected_puts) and is a bug.
  std::size_t size() const noexcept { return size_; }
  unsigned char *begin() noexcept { return data_; }
  unsigned char *end() noexcept { return data_ + size_; }
  const unsigned char *begin() const noexcept { return data_; }
  const unsigned char *end() const noexcept { return data_ + size_; }
  unsigned char &operator[](std::size_t i) noexcept { return data_[i]; }
  const unsigned char &operator[](std::size_t i) const noexcept { return data_[i]; }
  explicit operator bool() const noexcept { return data_ != nullptr; }

  /// Returns the buffer to its pool now and leaves this object empty.
  /// A status other than ZP_OK (ZP_ERR_OVERFLOW after a write past size())
  /// is counted in the pool's rejected_puts; put() reports it.
  void reset() noexcept { static_cast<void>(put()); }

  /// As reset(), with zp_put's status (ZP_OK for an empty buffer).
  [[nodiscard]] zp_status put() noexcept {
    if (!data_) return ZP_OK;
    zp_status status = zp_put(std::exchange(pool_, nullptr), std::exchange(data_, nullptr));
    size_ = 0;
    return status;
  }

  /// Gives up ownership: the caller must zp_put(pool(), pointer) itself.
  [[nodiscard]] unsigned char *release() noexcept {
    pool_ = nullptr;
    size_ = 0;
    return std::exchange(data_, nullptr);
  }

  /// The C pool this buffer belongs to (nullptr when empty).
  zp_pool *pool() const noexcept { return pool_; }

 private:
  zp_pool *pool_ = nullptr;
  unsigned char *data_ = nullptr;
  std::size_t size_ = 0;
};

/// Pool settings (a zp_config). Every setter validates at once and throws
/// std::invalid_argument for a value out of range; the setters chain:
/// `config{}.zeroing(ZP_ZERO_ON_PUT).num_shards(8)`. Move-only; for one
/// thread at a time.
class config {
 public:
  /// Every setting at its default (auto-configured from the CPU count).
  config() : cfg_(zp_config_new()) {
    if (!cfg_) throw std::bad_alloc();
  }
  config(const config &) = delete;
  config &operator=(const config &) = delete;
  config(config &&other) noexcept : cfg_(std::exchange(other.cfg_, nullptr)) {}
  config &operator=(config &&other) noexcept {
    if (this != &other) {
      zp_config_free(cfg_);
      cfg_ = std::exchange(other.cfg_, nullptr);
    }
    return *this;
  }
  ~config() { zp_config_free(cfg_); }

  /// Buffers each thread caches, 0..=1024 (0 disables the thread cache).
  config &tls_cache_size(std::size_t buffers) {
    detail::check(zp_config_set_tls_cache_size(cfg_, buffers), "zeropool::config::tls_cache_size");
    return *this;
  }
  /// Smallest buffer capacity, 1 byte..=1 TiB (rounded up to a power of two).
  config &min_buffer_size(std::size_t bytes) {
    detail::check(zp_config_set_min_buffer_size(cfg_, bytes), "zeropool::config::min_buffer_size");
    return *this;
  }
  /// Idle buffers each shard keeps per size class, 1..=2^20.
  config &max_buffers_per_shard(std::size_t buffers) {
    detail::check(zp_config_set_max_buffers_per_shard(cfg_, buffers),
                  "zeropool::config::max_buffers_per_shard");
    return *this;
  }
  /// Number of shards, a power of two in 1..=1024.
  config &num_shards(std::size_t shards) {
    detail::check(zp_config_set_num_shards(cfg_, shards), "zeropool::config::num_shards");
    return *this;
  }
  /// Lock buffers in RAM and keep them out of core dumps.
  config &pinned_memory(bool pinned) {
    detail::check(zp_config_set_pinned_memory(cfg_, pinned), "zeropool::config::pinned_memory");
    return *this;
  }
  config &eviction_policy(zp_eviction_policy policy) {
    detail::check(zp_config_set_eviction_policy(cfg_, policy), "zeropool::config::eviction_policy");
    return *this;
  }
  config &zeroing(zp_zeroing zeroing) {
    detail::check(zp_config_set_zeroing(cfg_, zeroing), "zeropool::config::zeroing");
    return *this;
  }
  /// Budget for idle bytes (shards plus every thread's cache); 0 keeps none.
  config &max_pooled_bytes(std::size_t bytes) {
    detail::check(zp_config_set_max_pooled_bytes(cfg_, bytes), "zeropool::config::max_pooled_bytes");
    return *this;
  }
  /// Idle buffers unused for about this long are released (0: never; at most a day).
  config &idle_decay(std::chrono::milliseconds decay) {
    if (decay.count() < 0) throw std::invalid_argument("zeropool::config::idle_decay: negative duration");
    detail::check(zp_config_set_idle_decay_ms(cfg_, static_cast<uint64_t>(decay.count())), "zeropool::config::idle_decay");
    return *this;
  }
  /// Transparent huge pages for classes of whole huge pages (default on).
  config &huge_pages(bool on) {
    detail::check(zp_config_set_huge_pages(cfg_, on), "zeropool::config::huge_pages");
    return *this;
  }

  const zp_config *native_handle() const noexcept { return cfg_; }

 private:
  zp_config *cfg_;
};

/// A pool (a zp_pool). Thread safe; move-only. Destroying it frees the pool:
/// buffers still out stay valid and are released when they are returned.
/// No other thread may use the pool while it is destroyed (returning
/// buffers excepted).
class pool {
 public:
  /// A pool with every setting at its default; throws std::bad_alloc.
  pool() : pool_(zp_pool_new()) {
    if (!pool_) throw std::bad_alloc();
  }
  /// A pool with `cfg`'s settings (`cfg` can be reused or dropped after).
  explicit pool(const config &cfg) : pool_(nullptr) {
    detail::check(zp_pool_new_with_config(cfg.native_handle(), &pool_), "zeropool::pool");
  }
  pool(const pool &) = delete;
  pool &operator=(const pool &) = delete;
  pool(pool &&other) noexcept : pool_(std::exchange(other.pool_, nullptr)) {}
  pool &operator=(pool &&other) noexcept {
    if (this != &other) {
      zp_pool_free(pool_);
      pool_ = std::exchange(other.pool_, nullptr);
    }
    return *this;
  }
  ~pool() { zp_pool_free(pool_); }

  /// A buffer of exactly `size` usable bytes. Throws std::bad_alloc when
  /// out of memory, std::length_error when no buffer can hold `size`.
  [[nodiscard]] buffer get(std::size_t size) {
    void *data = zp_get(pool_, size);
    if (!data) detail::throw_status(zp_last_error(), "zeropool::pool::get");
    return buffer(pool_, data, size);
  }

  /// As get(), but an empty buffer instead of an exception.
  [[nodiscard]] buffer try_get(std::size_t size) noexcept {
    void *data = zp_get(pool_, size);
    return data ? buffer(pool_, data, size) : buffer();
  }

  /// The pool's counters.
  [[nodiscard]] zp_stats stats() const {
    zp_stats out{};
    detail::check(zp_pool_stats(pool_, &out), "zeropool::pool::stats");
    return out;
  }

  /// Releases every idle buffer (scrubbed).
  void trim() { detail::check(zp_pool_trim(pool_), "zeropool::pool::trim"); }

  /// The C handle, for the C API (still owned by this object).
  zp_pool *native_handle() const noexcept { return pool_; }

 private:
  zp_pool *pool_;
};

}  // namespace zeropool

#endif  // ZEROPOOL_HPP
