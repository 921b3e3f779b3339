// zeropool from C++: a RAII wrapper over the C API.
#include <cstdio>
#include <cstring>
#include <memory>

#include <zeropool.h>

struct PoolDeleter {
  void operator()(zp_pool *p) const { zp_pool_free(p); }
};
using Pool = std::unique_ptr<zp_pool, PoolDeleter>;

int main() {
  Pool pool(zp_pool_new());
  if (!pool) return 1;
  auto deleter = [&](void *b) { zp_put(pool.get(), b); };
  std::unique_ptr<char, decltype(deleter)> buf(static_cast<char *>(zp_get(pool.get(), 4096)), deleter);
  if (!buf) return 1;
  std::strcpy(buf.get(), "hello from zeropool (C++)");
  std::puts(buf.get());
  buf.reset();  // back to the pool
  zp_stats stats{};
  zp_pool_stats(pool.get(), &stats);
  std::printf("puts=%llu rejected=%llu\n", (unsigned long long)stats.puts,
              (unsigned long long)stats.rejected_puts);
  return stats.puts == 1 && stats.rejected_puts == 0 ? 0 : 1;
}
