/* Every function of the C API, on its documented success and error paths. */
#include <stdint.h>
#include <string.h>

#include "check.h"

static void config_setters(void) {
  zp_config *cfg = zp_config_new();
  CHECK(cfg != NULL);
  CHECK_STATUS(zp_config_set_tls_cache_size(cfg, 8), ZP_OK);
  CHECK_STATUS(zp_config_set_tls_cache_size(cfg, 1u << 20), ZP_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(zp_config_set_min_buffer_size(cfg, 64 * 1024), ZP_OK);
  CHECK_STATUS(zp_config_set_min_buffer_size(cfg, 0), ZP_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(zp_config_set_max_buffers_per_shard(cfg, 32), ZP_OK);
  CHECK_STATUS(zp_config_set_max_buffers_per_shard(cfg, 0), ZP_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(zp_config_set_num_shards(cfg, 8), ZP_OK);
  CHECK_STATUS(zp_config_set_num_shards(cfg, 6), ZP_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(zp_config_set_num_shards(cfg, 0), ZP_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(zp_config_set_pinned_memory(cfg, false), ZP_OK);
  CHECK_STATUS(zp_config_set_eviction_policy(cfg, ZP_EVICTION_LIFO), ZP_OK);
  CHECK_STATUS(zp_config_set_eviction_policy(cfg, ZP_EVICTION_CLOCK_PRO), ZP_OK);
  CHECK_STATUS(zp_config_set_eviction_policy(cfg, (zp_eviction_policy)7), ZP_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(zp_config_set_zeroing(cfg, ZP_ZERO_ON_PUT), ZP_OK);
  CHECK_STATUS(zp_config_set_zeroing(cfg, (zp_zeroing)3), ZP_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(zp_config_set_zeroing(cfg, (zp_zeroing)0xFFFFFFFFu), ZP_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(zp_config_set_zeroing(cfg, ZP_ZERO_ALWAYS), ZP_OK);
  CHECK_STATUS(zp_config_set_max_pooled_bytes(cfg, 32u << 20), ZP_OK);

  /* NULL handles. */
  CHECK_STATUS(zp_config_set_tls_cache_size(NULL, 8), ZP_ERR_NULL_POINTER);
  CHECK_STATUS(zp_config_set_min_buffer_size(NULL, 4096), ZP_ERR_NULL_POINTER);
  CHECK_STATUS(zp_config_set_max_buffers_per_shard(NULL, 4), ZP_ERR_NULL_POINTER);
  CHECK_STATUS(zp_config_set_num_shards(NULL, 4), ZP_ERR_NULL_POINTER);
  CHECK_STATUS(zp_config_set_pinned_memory(NULL, true), ZP_ERR_NULL_POINTER);
  CHECK_STATUS(zp_config_set_eviction_policy(NULL, ZP_EVICTION_LIFO), ZP_ERR_NULL_POINTER);
  CHECK_STATUS(zp_config_set_eviction_policy(NULL, (zp_eviction_policy)9), ZP_ERR_NULL_POINTER);
  CHECK_STATUS(zp_config_set_zeroing(NULL, ZP_ZERO_NEVER), ZP_ERR_NULL_POINTER);
  CHECK_STATUS(zp_config_set_max_pooled_bytes(NULL, 1), ZP_ERR_NULL_POINTER);

  zp_pool *pool = (zp_pool *)0x1;
  CHECK_STATUS(zp_pool_new_with_config(NULL, &pool), ZP_ERR_NULL_POINTER);
  CHECK(pool == NULL);
  CHECK_STATUS(zp_pool_new_with_config(cfg, NULL), ZP_ERR_NULL_POINTER);
  CHECK_STATUS(zp_pool_new_with_config(cfg, &pool), ZP_OK);
  CHECK(pool != NULL);
  zp_config_free(cfg); /* the pool does not depend on it */
  zp_config_free(NULL);

  void *b = zp_get(pool, 100000);
  CHECK(b != NULL && all_zero(b, 100000));
  CHECK_STATUS(zp_put(pool, b), ZP_OK);
  zp_pool_free(pool);
}

static void get_put_and_zeroing(void) {
  zp_pool *pool = zp_pool_new();
  CHECK(pool != NULL);

  unsigned char *a = (unsigned char *)zp_get(pool, 4096);
  CHECK(a != NULL && ((uintptr_t)a % 4096) == 0);
  CHECK(all_zero(a, 4096));
  memset(a, 0xAB, 4096);
  CHECK_STATUS(zp_put(pool, a), ZP_OK);
  unsigned char *b = (unsigned char *)zp_get(pool, 8192);
  CHECK(b == a); /* reused from this thread's cache */
  CHECK(all_zero(b, 8192));
  CHECK_STATUS(zp_put(pool, b), ZP_OK);

  /* Size 0 is a real buffer. */
  void *z = zp_get(pool, 0);
  CHECK(z != NULL);
  CHECK_STATUS(zp_put(pool, z), ZP_OK);

  /* Impossible sizes: NULL with TOO_LARGE, nothing allocated. */
  zp_stats before, after;
  CHECK_STATUS(zp_pool_stats(pool, &before), ZP_OK);
  /* Through a volatile: zp_get is declared alloc_size, so with a constant
   * this large GCC warns at compile time, as it does for malloc. */
  volatile size_t huge = SIZE_MAX;
  CHECK(zp_get(pool, huge) == NULL);
  CHECK_STATUS(zp_last_error(), ZP_ERR_TOO_LARGE);
  CHECK(zp_get(pool, huge / 2) == NULL);
  CHECK_STATUS(zp_last_error(), ZP_ERR_TOO_LARGE);
  CHECK_STATUS(zp_pool_stats(pool, &after), ZP_OK);
  CHECK(after.allocations == before.allocations && after.gets == before.gets);

  /* Large but possible: unpooled, still zero, still returnable. */
  unsigned char *big = (unsigned char *)zp_get(pool, (size_t)300 << 20);
  CHECK(big != NULL && big[0] == 0 && big[((size_t)300 << 20) - 1] == 0);
  big[12345] = 1;
  CHECK_STATUS(zp_put(pool, big), ZP_OK);

  /* NULL pool. */
  CHECK(zp_get(NULL, 10) == NULL);
  CHECK_STATUS(zp_last_error(), ZP_ERR_NULL_POINTER);
  CHECK_STATUS(zp_put(NULL, a), ZP_ERR_NULL_POINTER);
  CHECK_STATUS(zp_put(pool, NULL), ZP_ERR_NULL_POINTER);

  /* Stats and trim. */
  zp_stats s;
  CHECK_STATUS(zp_pool_stats(pool, &s), ZP_OK);
  CHECK(s.gets == 4 && s.puts == 4 && s.outstanding == 0);
  CHECK(s.tls_hits >= 1 && s.allocations >= 2);
  CHECK(s.pooled_buffers >= 1 && s.pooled_bytes >= 4096);
  CHECK(s.rejected_puts == 0 && s.pin_failures == 0);
  CHECK_STATUS(zp_pool_stats(NULL, &s), ZP_ERR_NULL_POINTER);
  CHECK_STATUS(zp_pool_stats(pool, NULL), ZP_ERR_NULL_POINTER);
  CHECK_STATUS(zp_pool_trim(pool), ZP_OK);
  CHECK_STATUS(zp_pool_stats(pool, &s), ZP_OK);
  CHECK(s.pooled_buffers == 0 && s.pooled_bytes == 0);
  CHECK_STATUS(zp_pool_trim(NULL), ZP_ERR_NULL_POINTER);

  zp_pool_free(pool);
  zp_pool_free(NULL);
}

static void never_and_on_put(void) {
  zp_config *cfg = zp_config_new();
  CHECK_STATUS(zp_config_set_min_buffer_size(cfg, 4096), ZP_OK);
  CHECK_STATUS(zp_config_set_zeroing(cfg, ZP_ZERO_NEVER), ZP_OK);
  zp_pool *never = NULL;
  CHECK_STATUS(zp_pool_new_with_config(cfg, &never), ZP_OK);
  unsigned char *a = (unsigned char *)zp_get(never, 100);
  memset(a, 0x77, 100);
  CHECK_STATUS(zp_put(never, a), ZP_OK);
  unsigned char *b = (unsigned char *)zp_get(never, 100);
  CHECK(b == a && b[0] == 0x77); /* opt-out really skips zeroing */
  CHECK_STATUS(zp_put(never, b), ZP_OK);
  zp_pool_free(never);

  CHECK_STATUS(zp_config_set_zeroing(cfg, ZP_ZERO_ON_PUT), ZP_OK);
  zp_pool *on_put = NULL;
  CHECK_STATUS(zp_pool_new_with_config(cfg, &on_put), ZP_OK);
  a = (unsigned char *)zp_get(on_put, 100);
  memset(a, 0x77, 100);
  CHECK_STATUS(zp_put(on_put, a), ZP_OK);
  b = (unsigned char *)zp_get(on_put, 4096);
  CHECK(b == a && all_zero(b, 4096));
  CHECK_STATUS(zp_put(on_put, b), ZP_OK);
  zp_pool_free(on_put);
  zp_config_free(cfg);
}

static void strings_and_version(void) {
  for (unsigned s = 0; s <= 9; s++) {
    const char *text = zp_status_str((zp_status)s);
    CHECK(text != NULL && strncmp(text, "ZP_", 3) == 0);
  }
  CHECK(strstr(zp_status_str(ZP_ERR_OVERFLOW), "OVERFLOW") != NULL);
  CHECK(zp_status_str((zp_status)12345) != NULL);
  char want[64];
  snprintf(want, sizeof want, "%d.%d.%d", ZP_VERSION_MAJOR, ZP_VERSION_MINOR, ZP_VERSION_PATCH);
  CHECK(strcmp(zp_version(), want) == 0);
}

int main(void) {
  config_setters();
  get_put_and_zeroing();
  never_and_on_put();
  strings_and_version();
  return finish("api");
}
