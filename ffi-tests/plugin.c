/* A plugin (a shared object loaded with dlopen) built with libzeropool.a:
 * the packaging test checks that it exports only its own symbol and the
 * zp_* functions (none of Rust's std), then loads it and calls this. */
#include <string.h>

#include "zeropool.h"

int plugin_roundtrip(void);

/* 0 when a get, write and put through a fresh pool work. */
int plugin_roundtrip(void) {
  zp_pool *pool = zp_pool_new();
  if (!pool) return 1;
  unsigned char *buf = (unsigned char *)zp_get(pool, 4096);
  if (!buf || buf[4095] != 0) return 2;
  memset(buf, 0x5A, 4096);
  int status = zp_put(pool, buf) == ZP_OK ? 0 : 3;
  zp_pool_free(pool);
  return status;
}
