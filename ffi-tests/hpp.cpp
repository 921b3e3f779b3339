// zeropool.hpp: the C++17 layer. RAII, moves, the exceptions API.md names,
// buffers that outlive their pool object, and the C API underneath.
#include <cstdio>
#include <cstring>
#include <new>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <vector>

#include "zeropool.hpp"

static int passed, failed;

#define CHECK(cond)                                                           \
  do {                                                                        \
    if (cond) {                                                               \
      passed++;                                                               \
    } else {                                                                  \
      failed++;                                                               \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                         \
  } while (0)

template <class E, class F>
static bool throws(F f) {
  try {
    f();
  } catch (const E &) {
    return true;
  } catch (...) {
    return false;
  }
  return false;
}

static bool all_zero(const zeropool::buffer &b) {
  for (unsigned char c : b)
    if (c) return false;
  return true;
}

static_assert(!std::is_copy_constructible_v<zeropool::buffer>, "buffer is move-only");
static_assert(std::is_nothrow_move_constructible_v<zeropool::buffer>, "");
static_assert(std::is_nothrow_move_assignable_v<zeropool::buffer>, "");
static_assert(std::is_nothrow_destructible_v<zeropool::buffer>, "");
static_assert(!std::is_copy_constructible_v<zeropool::pool>, "pool is move-only");
static_assert(std::is_nothrow_move_constructible_v<zeropool::pool>, "");
static_assert(!std::is_copy_constructible_v<zeropool::config>, "config is move-only");
static_assert(noexcept(std::declval<zeropool::buffer &>().reset()), "reset never throws");

int main() {
  // The API.md example.
  {
    zeropool::pool p;
    zeropool::pool q{zeropool::config{}.zeroing(ZP_ZERO_ON_PUT).max_pooled_bytes(64u << 20)};
    zeropool::buffer b = p.get(4096);
    unsigned char *d = b.data();
    std::size_t n = b.size();
    CHECK(d != nullptr && n == 4096 && all_zero(b));
    std::memset(d, 0xAB, n);
    b.reset();
    CHECK(!b && b.data() == nullptr && b.size() == 0);
    zp_stats s = p.stats();
    CHECK(s.gets == 1 && s.puts == 1 && s.outstanding == 0);
    zeropool::buffer again = p.get(4096);  // reused and scrubbed
    CHECK(again.data() == d && all_zero(again));
    zeropool::buffer other = q.get(100);
    CHECK(other.size() == 100 && other.pool() == q.native_handle());
  }

  // Exceptions.
  {
    zeropool::pool p;
    // Through a volatile: a constant this large is a compile-time warning
    // (zp_get is declared alloc_size, like malloc).
    volatile std::size_t huge = static_cast<std::size_t>(-1);
    CHECK(throws<std::length_error>([&] { (void)p.get(huge); }));
    CHECK(!p.try_get(huge));
    CHECK(throws<std::invalid_argument>([] { zeropool::config{}.num_shards(3); }));
    CHECK(throws<std::invalid_argument>([] { zeropool::config{}.tls_cache_size(100000); }));
    CHECK(throws<std::invalid_argument>([] { zeropool::config{}.zeroing(static_cast<zp_zeroing>(7)); }));
    CHECK(throws<std::invalid_argument>(
        [] { zeropool::config{}.eviction_policy(static_cast<zp_eviction_policy>(9)); }));
    zeropool::config cfg;
    CHECK(throws<std::invalid_argument>([&] { cfg.min_buffer_size(0); }));
    // A failed setting leaves the configuration as it was: still usable.
    cfg.min_buffer_size(4096).num_shards(4).tls_cache_size(2).max_buffers_per_shard(8).pinned_memory(false);
    cfg.eviction_policy(ZP_EVICTION_LIFO);
    zeropool::pool from_cfg{cfg};
    CHECK(from_cfg.get(10).size() == 10);

    zeropool::pool moved_from;
    zeropool::pool to{std::move(moved_from)};
    try {
      (void)moved_from.stats();  // NOLINT: use after move on purpose
      CHECK(false);
    } catch (const zeropool::error &e) {
      CHECK(e.status() == ZP_ERR_NULL_POINTER);
    }
    CHECK(throws<zeropool::error>([&] { (void)moved_from.get(1); }));
    static_assert(std::is_base_of_v<std::runtime_error, zeropool::error>, "");
  }

  // Moves hand ownership over exactly once.
  {
    zeropool::pool p{zeropool::config{}.min_buffer_size(4096)};
    zeropool::buffer a = p.get(1000);
    unsigned char *addr = a.data();
    zeropool::buffer b = std::move(a);
    CHECK(!a && b.data() == addr);  // NOLINT: checking the moved-from state
    zeropool::buffer c;
    c = std::move(b);
    CHECK(!b && c.data() == addr);  // NOLINT
    c = p.get(2000);                // the old buffer goes back first
    CHECK(p.stats().puts == 1 && p.stats().outstanding == 1);
    std::vector<zeropool::buffer> many;
    for (int i = 0; i < 64; i++) many.push_back(p.get(4096));  // reallocation moves them
    CHECK(p.stats().outstanding == 65);
    many.clear();
    c.reset();
    CHECK(p.stats().outstanding == 0);

    zeropool::pool q = std::move(p);
    CHECK(q.get(10).size() == 10);
    q = zeropool::pool{};  // frees the old pool
    CHECK(q.stats().gets == 0);
  }

  // A buffer may outlive its pool object; it is released when it comes back.
  {
    zeropool::buffer kept;
    {
      zeropool::pool p;
      kept = p.get(5000);
      std::memset(kept.data(), 1, kept.size());
    }
    CHECK(kept.data()[4999] == 1);
    CHECK(kept.put() == ZP_OK);
  }

  // put() reports what reset() swallows: a write past size().
  {
    zeropool::pool p{zeropool::config{}.min_buffer_size(4096)};
    zeropool::buffer b = p.get(100);
    b.data()[100] = static_cast<unsigned char>(~b.data()[100]);
    CHECK(b.put() == ZP_ERR_OVERFLOW);
    CHECK(!b && p.stats().rejected_puts == 1);
    zeropool::buffer empty;
    CHECK(empty.put() == ZP_OK);
  }

  // The C API underneath: adopt a buffer, release one back to C.
  {
    zeropool::pool p;
    zeropool::buffer adopted(p.native_handle(), zp_get(p.native_handle(), 64), 64);
    CHECK(adopted.size() == 64 && all_zero(adopted));
    unsigned char *raw = adopted.release();
    CHECK(!adopted && zp_put(p.native_handle(), raw) == ZP_OK);
    const zeropool::buffer cb = p.get(8);
    CHECK(cb.end() - cb.begin() == 8 && cb[7] == 0);
  }

  std::printf("hpp: %d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
