/* zp_pool_free while 8 threads still have buffers out and are returning
 * them: every put succeeds, nothing crashes, and buffers stay usable. */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "check.h"

#define THREADS 8
#define HELD 16

static zp_pool *pool;
static int stop_getting, acknowledged, failures;

static void *worker(void *arg) {
  unsigned char tag = (unsigned char)(uintptr_t)arg;
  void *held[HELD] = {0};
  unsigned i = 0;
  while (!__atomic_load_n(&stop_getting, __ATOMIC_ACQUIRE)) {
    unsigned slot = i++ % HELD;
    if (held[slot] && zp_put(pool, held[slot]) != ZP_OK) __atomic_add_fetch(&failures, 1, __ATOMIC_RELAXED);
    held[slot] = zp_get(pool, 4096 + 1000 * (i % 50));
    if (!held[slot]) __atomic_add_fetch(&failures, 1, __ATOMIC_RELAXED);
    else memset(held[slot], tag, 4096);
  }
  /* No more gets from here on: the pool may be freed any moment now. */
  __atomic_add_fetch(&acknowledged, 1, __ATOMIC_RELEASE);
  for (unsigned s = 0; s < HELD; s++) {
    unsigned char *b = (unsigned char *)held[s];
    if (!b) continue;
    if (b[0] != tag || b[4095] != tag) __atomic_add_fetch(&failures, 1, __ATOMIC_RELAXED);
    memset(b, 0, 4096); /* still ours, still mapped */
    if (zp_put(pool, b) != ZP_OK) __atomic_add_fetch(&failures, 1, __ATOMIC_RELAXED);
  }
  return NULL;
}

int main(void) {
  zp_config *cfg = zp_config_new();
  CHECK_STATUS(zp_config_set_min_buffer_size(cfg, 4096), ZP_OK);
  CHECK_STATUS(zp_config_set_max_pooled_bytes(cfg, 4u << 20), ZP_OK);
  CHECK_STATUS(zp_pool_new_with_config(cfg, &pool), ZP_OK);
  zp_config_free(cfg);

  pthread_t t[THREADS];
  for (uintptr_t i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, worker, (void *)(i + 1));
  for (volatile long spin = 0; spin < 20000000; spin++) {
  }
  __atomic_store_n(&stop_getting, 1, __ATOMIC_RELEASE);
  while (__atomic_load_n(&acknowledged, __ATOMIC_ACQUIRE) < THREADS) {
  }
  zp_pool_free(pool); /* while the workers are still returning buffers */
  for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
  CHECK(failures == 0);
  return finish("free_while_busy");
}
