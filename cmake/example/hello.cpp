// zeropool from C++17, through the RAII layer in zeropool.hpp.
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include <zeropool.hpp>

int main() {
  zeropool::pool pool{zeropool::config{}.min_buffer_size(64 * 1024).max_pooled_bytes(16u << 20)};
  {
    zeropool::buffer buf = pool.get(4096);  // 4096 zeroed bytes, move-only
    std::strcpy(reinterpret_cast<char *>(buf.data()), "hello from zeropool (C++)");
    std::puts(reinterpret_cast<const char *>(buf.data()));
  }  // back to the pool here
  try {
    zeropool::config{}.num_shards(3);  // not a power of two
    return 1;
  } catch (const std::invalid_argument &e) {
    std::printf("bad setting: %s\n", e.what());
  }
  zp_stats stats = pool.stats();
  std::printf("puts=%llu rejected=%llu\n", static_cast<unsigned long long>(stats.puts),
              static_cast<unsigned long long>(stats.rejected_puts));
  return stats.puts == 1 && stats.rejected_puts == 0 ? 0 : 1;
}
