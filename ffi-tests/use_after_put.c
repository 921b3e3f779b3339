/* Death test for the ASan build of the hardening suite (.ci/harden): a
 * buffer touched after zp_put must be reported by AddressSanitizer, since
 * zeropool poisons idle buffers in that build (--cfg zeropool_asan).
 *
 *   use_after_put ok          the same calls without the bug: exits 0
 *   use_after_put write       write to a buffer idle in the thread cache
 *   use_after_put read        read a buffer idle in a shard (no cache)
 *   use_after_put never       write under ZP_ZERO_NEVER (no scrub at put)
 *   use_after_put canary      write into the canary of an idle buffer
 *
 * Each bug case must die with "use-after-poison". Without ASan the bug
 * cases would be undefined behaviour, so the program refuses to run them. */
#include <stdio.h>
#include <string.h>

#include "check.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ZP_HAVE_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define ZP_HAVE_ASAN 1
#endif

static zp_pool *make_pool(size_t tls, zp_zeroing zeroing) {
  zp_config *cfg = zp_config_new();
  zp_pool *pool = NULL;
  CHECK(cfg != NULL);
  CHECK_STATUS(zp_config_set_min_buffer_size(cfg, 4096), ZP_OK);
  CHECK_STATUS(zp_config_set_tls_cache_size(cfg, tls), ZP_OK);
  CHECK_STATUS(zp_config_set_zeroing(cfg, zeroing), ZP_OK);
  CHECK_STATUS(zp_pool_new_with_config(cfg, &pool), ZP_OK);
  zp_config_free(cfg);
  return pool;
}

int main(int argc, char **argv) {
  const char *what = argc > 1 ? argv[1] : "ok";
#ifndef ZP_HAVE_ASAN
  if (strcmp(what, "ok") != 0) {
    fprintf(stderr, "use_after_put: '%s' needs an ASan build\n", what);
    return 77;
  }
#endif
  size_t tls = strcmp(what, "read") == 0 ? 0 : 4;
  zp_pool *pool = make_pool(tls, strcmp(what, "never") == 0 ? ZP_ZERO_NEVER : ZP_ZERO_ON_PUT);
  unsigned char *buf = zp_get(pool, 1000);
  CHECK(buf != NULL);
  memset(buf, 0xAB, 1000);
  CHECK_STATUS(zp_put(pool, buf), ZP_OK);
  volatile unsigned char *stale = buf;
  if (strcmp(what, "write") == 0 || strcmp(what, "never") == 0) {
    stale[10] = 1;
  } else if (strcmp(what, "read") == 0) {
    printf("read %d\n", stale[10]);
  } else if (strcmp(what, "canary") == 0) {
    volatile size_t past = 1000; /* hidden from the compiler: zp_get is alloc_size */
    stale[past] = 1;
  }
  /* Only the control run gets here under ASan. */
  unsigned char *again = zp_get(pool, 1000);
  CHECK(again == buf);
  CHECK(again != NULL && again[10] == 0);
  CHECK_STATUS(zp_put(pool, again), ZP_OK);
  zp_pool_free(pool);
  return finish("use_after_put");
}
