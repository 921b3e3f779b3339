/* Many threads on one pool: per-owner fill patterns checked before every
 * put, buffers handed between threads, and short-lived threads. */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "check.h"

#define WORKERS 8
#define ROUNDS 4000

static zp_pool *pool;
static int corrupt;

static void *worker(void *arg) {
  unsigned seed = (unsigned)(uintptr_t)arg * 2654435761u;
  unsigned char tag = (unsigned char)(uintptr_t)arg + 1;
  void *held[4] = {0};
  size_t held_len[4] = {0};
  for (int i = 0; i < ROUNDS; i++) {
    seed = seed * 1103515245u + 12345u;
    size_t len = 1 + (seed >> 8) % (512u << 10);
    unsigned char *b = (unsigned char *)zp_get(pool, len);
    if (!b || b[0] || b[len - 1] || b[len / 2]) __atomic_add_fetch(&corrupt, 1, __ATOMIC_RELAXED);
    if (!b) continue;
    memset(b, tag, len < 8192 ? len : 8192);
    b[len - 1] = tag;
    int slot = i % 4;
    if (held[slot]) {
      unsigned char *h = (unsigned char *)held[slot];
      size_t n = held_len[slot];
      if (h[0] != tag || h[n - 1] != tag) __atomic_add_fetch(&corrupt, 1, __ATOMIC_RELAXED);
      if (zp_put(pool, h) != ZP_OK) __atomic_add_fetch(&corrupt, 1, __ATOMIC_RELAXED);
    }
    held[slot] = b;
    held_len[slot] = len;
  }
  for (int s = 0; s < 4; s++)
    if (held[s] && zp_put(pool, held[s]) != ZP_OK) __atomic_add_fetch(&corrupt, 1, __ATOMIC_RELAXED);
  return NULL;
}

/* A one-slot mailbox: the producer gets and fills, the consumer checks and puts. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static unsigned char *mailbox;
static int done;

static void *producer(void *arg) {
  (void)arg;
  for (int i = 0; i < ROUNDS; i++) {
    unsigned char *b = (unsigned char *)zp_get(pool, 256 * 1024);
    if (!b || !all_zero(b, 256 * 1024)) __atomic_add_fetch(&corrupt, 1, __ATOMIC_RELAXED);
    memset(b, (unsigned char)(i | 1), 256 * 1024);
    pthread_mutex_lock(&lock);
    while (mailbox) pthread_cond_wait(&cond, &lock);
    mailbox = b;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
  }
  pthread_mutex_lock(&lock);
  done = 1;
  pthread_cond_broadcast(&cond);
  pthread_mutex_unlock(&lock);
  return NULL;
}

static void *consumer(void *arg) {
  (void)arg;
  for (;;) {
    pthread_mutex_lock(&lock);
    while (!mailbox && !done) pthread_cond_wait(&cond, &lock);
    unsigned char *b = mailbox;
    mailbox = NULL;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
    if (!b) return NULL;
    if (b[0] != b[256 * 1024 - 1]) __atomic_add_fetch(&corrupt, 1, __ATOMIC_RELAXED);
    if (zp_put(pool, b) != ZP_OK) __atomic_add_fetch(&corrupt, 1, __ATOMIC_RELAXED);
  }
}

static void *short_lived(void *out) {
  void *a = zp_get(pool, 10000), *b = zp_get(pool, 20000);
  *(void **)out = zp_get(pool, 30000); /* returned later by main */
  if (zp_put(pool, a) != ZP_OK || zp_put(pool, b) != ZP_OK) __atomic_add_fetch(&corrupt, 1, __ATOMIC_RELAXED);
  return NULL;
}

int main(void) {
  zp_config *cfg = zp_config_new();
  CHECK_STATUS(zp_config_set_min_buffer_size(cfg, 64 * 1024), ZP_OK);
  CHECK_STATUS(zp_config_set_max_pooled_bytes(cfg, 64u << 20), ZP_OK);
  CHECK_STATUS(zp_pool_new_with_config(cfg, &pool), ZP_OK);
  zp_config_free(cfg);

  pthread_t t[WORKERS];
  for (uintptr_t i = 0; i < WORKERS; i++) pthread_create(&t[i], NULL, worker, (void *)i);
  for (int i = 0; i < WORKERS; i++) pthread_join(t[i], NULL);

  pthread_t p, c;
  pthread_create(&p, NULL, producer, NULL);
  pthread_create(&c, NULL, consumer, NULL);
  pthread_join(p, NULL);
  pthread_join(c, NULL);

  void *left[200];
  for (int i = 0; i < 200; i++) {
    pthread_t s;
    pthread_create(&s, NULL, short_lived, &left[i]);
    pthread_join(s, NULL);
  }
  for (int i = 0; i < 200; i++) CHECK_STATUS(zp_put(pool, left[i]), ZP_OK);

  CHECK(corrupt == 0);
  zp_stats s;
  CHECK_STATUS(zp_pool_stats(pool, &s), ZP_OK);
  CHECK(s.gets == s.puts && s.outstanding == 0);
  CHECK(s.gets == (uint64_t)WORKERS * ROUNDS + ROUNDS + 600);
  CHECK(s.pooled_bytes <= (64u << 20));
  CHECK(s.rejected_puts == 0);
  CHECK(s.tls_hits + s.shard_hits + s.allocations >= s.gets);
  zp_pool_free(pool);
  return finish("threads");
}
