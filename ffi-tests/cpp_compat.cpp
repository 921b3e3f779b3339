// The header compiles as C++ and its enums work as C++ enums.
#include <cstring>

#include "zeropool.h"

int main() {
  zp_config *cfg = zp_config_new();
  if (zp_config_set_eviction_policy(cfg, ZP_EVICTION_LIFO) != ZP_OK) return 1;
  if (zp_config_set_zeroing(cfg, ZP_ZERO_ON_PUT) != ZP_OK) return 1;
  zp_pool *pool = nullptr;
  if (zp_pool_new_with_config(cfg, &pool) != ZP_OK) return 1;
  zp_config_free(cfg);
  auto *buf = static_cast<unsigned char *>(zp_get(pool, 1000));
  if (!buf || buf[999] != 0) return 1;
  std::memset(buf, 1, 1000);
  zp_status s = zp_put(pool, buf);
  zp_stats stats{};
  if (zp_pool_stats(pool, &stats) != ZP_OK) return 1;
  zp_pool_free(pool);
  return (s == ZP_OK && stats.puts == 1) ? 0 : 1;
}
