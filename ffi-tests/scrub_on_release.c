/* Checks, in an optimized build, that memory is scrubbed when zeropool gives
 * it back to the system: this program defines munmap and madvise itself (the
 * static library's calls resolve to them), looks at the watched range at
 * that moment (the first call that covers it: zeropool gives pages back
 * with madvise(MADV_DONTNEED) and unmaps only when a pool is gone), then
 * forwards to the real function. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <string.h>
#include <sys/mman.h>

#include "check.h"

static const unsigned char *watch_lo, *watch_hi;
static int seen, dirty;

static void watch(const void *p, size_t n) {
  watch_lo = (const unsigned char *)p;
  watch_hi = watch_lo + n;
  seen = dirty = 0;
}

static void look(void *addr, size_t len) {
  const unsigned char *a = (const unsigned char *)addr;
  if (watch_lo && a <= watch_lo && watch_hi <= a + len) {
    seen = 1;
    for (const unsigned char *q = watch_lo; q < watch_hi; q++)
      if (*q) {
        dirty = 1;
        break;
      }
    watch_lo = watch_hi = NULL;
  }
}

int munmap(void *addr, size_t len) {
  static int (*real)(void *, size_t);
  if (!real) real = (int (*)(void *, size_t))dlsym(RTLD_NEXT, "munmap");
  look(addr, len);
  return real(addr, len);
}

int madvise(void *addr, size_t len, int advice) {
  static int (*real)(void *, size_t, int);
  if (!real) real = (int (*)(void *, size_t, int))dlsym(RTLD_NEXT, "madvise");
  if (advice == MADV_DONTNEED) look(addr, len);
  return real(addr, len, advice);
}

static zp_pool *pool_with(zp_zeroing zeroing, size_t budget) {
  zp_config *cfg = zp_config_new();
  CHECK_STATUS(zp_config_set_min_buffer_size(cfg, 64 * 1024), ZP_OK);
  CHECK_STATUS(zp_config_set_zeroing(cfg, zeroing), ZP_OK);
  CHECK_STATUS(zp_config_set_max_pooled_bytes(cfg, budget), ZP_OK);
  zp_pool *pool = NULL;
  CHECK_STATUS(zp_pool_new_with_config(cfg, &pool), ZP_OK);
  zp_config_free(cfg);
  return pool;
}

/* Secrets written, returned, then released by trim: zero when unmapped. */
static void trim_releases_scrubbed(zp_zeroing zeroing) {
  zp_pool *pool = pool_with(zeroing, 64u << 20);
  unsigned char *buf = (unsigned char *)zp_get(pool, 65536);
  memset(buf, 0xAB, 65536);
  CHECK_STATUS(zp_put(pool, buf), ZP_OK);
  watch(buf, 65536);
  CHECK_STATUS(zp_pool_trim(pool), ZP_OK);
  CHECK(seen && !dirty);
  zp_pool_free(pool);
}

/* A buffer too big to keep goes straight back to the system. */
static void unpooled_release_scrubbed(void) {
  zp_pool *pool = pool_with(ZP_ZERO_NEVER, 1u << 20);
  size_t n = 8u << 20;
  unsigned char *buf = (unsigned char *)zp_get(pool, n);
  memset(buf, 0xCD, n);
  watch(buf, n);
  CHECK_STATUS(zp_put(pool, buf), ZP_OK);
  CHECK(seen && !dirty);
  zp_pool_free(pool);
}

/* An overflowed buffer is scrubbed and released, not reused. */
static void overflow_release_scrubbed(void) {
  zp_pool *pool = pool_with(ZP_ZERO_NEVER, 64u << 20);
  unsigned char *buf = (unsigned char *)zp_get(pool, 1000);
  memset(buf, 0xEF, 1000);
  /* One byte too many (not the canary's value), at an index the compiler
   * cannot see: zp_get is declared alloc_size, so it would warn. */
  volatile size_t past = 1000;
  buf[past] = (unsigned char)~buf[past];
  watch(buf, 1000);
  CHECK_STATUS(zp_put(pool, buf), ZP_ERR_OVERFLOW);
  CHECK(seen && !dirty);
  zp_pool_free(pool);
}

/* Freeing the pool releases what it kept idle, scrubbed. */
static void pool_free_releases_scrubbed(void) {
  zp_pool *pool = pool_with(ZP_ZERO_NEVER, 64u << 20);
  unsigned char *buf = (unsigned char *)zp_get(pool, 4096);
  memset(buf, 0x5A, 4096);
  CHECK_STATUS(zp_put(pool, buf), ZP_OK);
  watch(buf, 4096);
  zp_pool_free(pool);
  CHECK(seen && !dirty);
}

int main(void) {
  trim_releases_scrubbed(ZP_ZERO_NEVER);
  trim_releases_scrubbed(ZP_ZERO_ON_PUT);
  trim_releases_scrubbed(ZP_ZERO_ALWAYS);
  unpooled_release_scrubbed();
  overflow_release_scrubbed();
  pool_free_releases_scrubbed();
  return finish("scrub_on_release");
}
