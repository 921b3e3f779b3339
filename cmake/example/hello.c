/* The smallest useful zeropool program: configure, get, use, return. */
#include <stdio.h>
#include <string.h>

#include <zeropool.h>

int main(void) {
  zp_config *cfg = zp_config_new();
  if (zp_config_set_min_buffer_size(cfg, 64 * 1024) != ZP_OK) return 1;
  zp_pool *pool = NULL;
  zp_status s = zp_pool_new_with_config(cfg, &pool);
  zp_config_free(cfg);
  if (s != ZP_OK) {
    fprintf(stderr, "zp_pool_new_with_config: %s\n", zp_status_str(s));
    return 1;
  }

  char *buf = zp_get(pool, 100000); /* 100000 zeroed bytes */
  if (!buf) {
    fprintf(stderr, "zp_get: %s\n", zp_status_str(zp_last_error()));
    return 1;
  }
  strcpy(buf, "hello from zeropool");
  puts(buf);
  s = zp_put(pool, buf); /* scrubbed, kept for the next zp_get */

  zp_stats stats;
  if (zp_pool_stats(pool, &stats) != ZP_OK) return 1;
  printf("zeropool %s: %s, gets=%llu puts=%llu idle=%llu bytes\n", zp_version(), zp_status_str(s),
         (unsigned long long)stats.gets, (unsigned long long)stats.puts,
         (unsigned long long)stats.pooled_bytes);
  zp_pool_free(pool);
  return s == ZP_OK ? 0 : 1;
}
