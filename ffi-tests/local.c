/* zp_local: every rule API.md gives it, used from its own thread and from
 * others, before and after zp_pool_free; and a thread using 1,000 pools. */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "check.h"

static zp_pool *pool_4k(void) {
  zp_config *cfg = zp_config_new();
  CHECK_STATUS(zp_config_set_min_buffer_size(cfg, 4096), ZP_OK);
  zp_pool *pool = NULL;
  CHECK_STATUS(zp_pool_new_with_config(cfg, &pool), ZP_OK);
  zp_config_free(cfg);
  return pool;
}

static uint64_t stat_of(zp_pool *pool, int which) {
  zp_stats s;
  CHECK_STATUS(zp_pool_stats(pool, &s), ZP_OK);
  return which == 0 ? s.outstanding : which == 1 ? s.rejected_puts : s.gets;
}

static void basics(void) {
  CHECK(zp_local_new(NULL) == NULL);
  CHECK(zp_last_error() == ZP_ERR_NULL_POINTER);
  CHECK(zp_local_get(NULL, 10) == NULL);
  CHECK(zp_last_error() == ZP_ERR_NULL_POINTER);
  CHECK_STATUS(zp_local_put(NULL, (void *)0x1000), ZP_ERR_NULL_POINTER);
  zp_local_free(NULL);

  zp_pool *pool = pool_4k();
  zp_local *l = zp_local_new(pool);
  CHECK(l != NULL);
  CHECK_STATUS(zp_local_put(l, NULL), ZP_ERR_NULL_POINTER);
  for (int round = 0; round < 3; round++) {
    unsigned char *b = (unsigned char *)zp_local_get(l, 3000);
    CHECK(b != NULL && all_zero(b, 3000));
    memset(b, 0x77, 3000);
    CHECK_STATUS(zp_local_put(l, b), ZP_OK);
  }
  /* Size 0 is a real buffer; SIZE_MAX is too large and allocates nothing. */
  void *zero = zp_local_get(l, 0);
  CHECK(zero != NULL);
  CHECK_STATUS(zp_local_put(l, zero), ZP_OK);
  volatile size_t huge = SIZE_MAX;
  CHECK(zp_local_get(l, huge) == NULL);
  CHECK(zp_last_error() == ZP_ERR_TOO_LARGE);
  /* Unpooled sizes work too. */
  void *big = zp_local_get(l, 64u << 20);
  CHECK(big != NULL);
  CHECK_STATUS(zp_local_put(l, big), ZP_OK);

  /* Buffers cross freely between the handle and the ordinary calls. */
  void *a = zp_local_get(l, 100);
  void *b = zp_get(pool, 100);
  CHECK_STATUS(zp_put(pool, a), ZP_OK);
  CHECK_STATUS(zp_local_put(l, b), ZP_OK);

  /* Misuse through the handle: the same codes as zp_put, counted. */
  uint64_t before = stat_of(pool, 1);
  int on_stack = 0;
  CHECK_STATUS(zp_local_put(l, &on_stack), ZP_ERR_FOREIGN_BUFFER);
  unsigned char *c = (unsigned char *)zp_local_get(l, 5000);
  CHECK_STATUS(zp_local_put(l, c + 1), ZP_ERR_FOREIGN_BUFFER);
  CHECK_STATUS(zp_local_put(l, c), ZP_OK);
  CHECK_STATUS(zp_local_put(l, c), ZP_ERR_DOUBLE_PUT);
  zp_pool *other = pool_4k();
  void *theirs = zp_get(other, 100);
  CHECK_STATUS(zp_local_put(l, theirs), ZP_ERR_WRONG_POOL);
  CHECK_STATUS(zp_put(other, theirs), ZP_OK);
  zp_pool_free(other);
  unsigned char *d = (unsigned char *)zp_local_get(l, 5000);
  volatile size_t past = 5000;
  d[past] = (unsigned char)~d[past];
  CHECK_STATUS(zp_local_put(l, d), ZP_ERR_OVERFLOW);
  CHECK(stat_of(pool, 1) == before + 5);
  CHECK(stat_of(pool, 0) == 0);

  zp_local_free(l);
  zp_pool_free(pool);
}

/* zp_local_free before or after zp_pool_free; after it, gets fail and puts
 * still take the pool's buffers back. */
static void around_pool_free(void) {
  zp_pool *pool = pool_4k();
  zp_local *early = zp_local_new(pool);
  zp_local *late = zp_local_new(pool);
  void *held = zp_local_get(late, 4000);
  void *held2 = zp_get(pool, 4000);
  CHECK(held != NULL && held2 != NULL);
  zp_local_free(early);
  zp_pool_free(pool);
  CHECK(zp_local_get(late, 10) == NULL);
  CHECK(zp_last_error() == ZP_ERR_INVALID_ARGUMENT);
  memset(held, 1, 4000); /* still valid */
  CHECK_STATUS(zp_local_put(late, held), ZP_OK);
  CHECK_STATUS(zp_local_put(late, held2), ZP_OK);
  /* The last buffer is back: the freed pool's memory is gone although
   * `late` lives on (issue 26), so `held` is nobody's any more. */
  CHECK_STATUS(zp_local_put(late, held), ZP_ERR_FOREIGN_BUFFER);
  zp_local_free(late);
}

/* A handle used from threads other than its own: correct, never corrupt. */
struct shared_use {
  zp_pool *pool;
  zp_local *local;
  unsigned char fill;
};

static void *other_thread(void *arg) {
  struct shared_use *u = (struct shared_use *)arg;
  for (int i = 0; i < 2000; i++) {
    unsigned char *b = (unsigned char *)zp_local_get(u->local, 1000 + (size_t)i % 7000);
    CHECK(b != NULL && all_zero(b, 1000));
    memset(b, u->fill, 1000);
    for (int k = 0; k < 1000; k++)
      if (b[k] != u->fill) {
        CHECK(!"a buffer changed under its holder");
        break;
      }
    /* Alternate the way back. */
    if (i % 2)
      CHECK_STATUS(zp_local_put(u->local, b), ZP_OK);
    else
      CHECK_STATUS(zp_put(u->pool, b), ZP_OK);
  }
  return NULL;
}

static void from_other_threads(void) {
  zp_pool *pool = pool_4k();
  zp_local *mine = zp_local_new(pool);
  struct shared_use u[3];
  pthread_t t[3];
  for (int i = 0; i < 3; i++) {
    u[i].pool = pool;
    u[i].local = mine;
    u[i].fill = (unsigned char)(0x30 + i);
    CHECK(pthread_create(&t[i], NULL, other_thread, &u[i]) == 0);
  }
  for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
  CHECK(stat_of(pool, 0) == 0);
  zp_local_free(mine);
  zp_pool_free(pool);
}

/* A trim reaches a handle's cache at its next call: nothing it held is
 * handed out again, and the pool reports nothing idle. */
static void trim_reaches_handles(void) {
  zp_pool *pool = pool_4k();
  zp_local *l = zp_local_new(pool);
  CHECK(l != NULL);
  void *held[3];
  for (int i = 0; i < 3; i++) CHECK((held[i] = zp_local_get(l, 4096)) != NULL);
  for (int i = 0; i < 3; i++) CHECK_STATUS(zp_local_put(l, held[i]), ZP_OK);
  zp_stats s;
  CHECK_STATUS(zp_pool_stats(pool, &s), ZP_OK);
  CHECK(s.pooled_buffers == 3);
  uint64_t allocations = s.allocations;
  CHECK_STATUS(zp_pool_trim(pool), ZP_OK);
  void *after = zp_local_get(l, 4096);
  CHECK(after != NULL);
  CHECK_STATUS(zp_pool_stats(pool, &s), ZP_OK);
  CHECK(s.pooled_buffers == 0);
  CHECK(s.allocations == allocations + 1); /* trimmed buffers are not reused */
  CHECK_STATUS(zp_local_put(l, after), ZP_OK);
  zp_local_free(l);
  zp_pool_free(pool);
}

/* One thread, 1,000 pools, each used through zp_get/zp_put and a handle:
 * every pool keeps its own buffers (no cross-pool hand-outs). */
static void thousand_pools(void) {
  enum { N = 1000 };
  static zp_pool *pools[N];
  static zp_local *locals[N];
  for (int i = 0; i < N; i++) {
    pools[i] = pool_4k();
    locals[i] = zp_local_new(pools[i]);
    CHECK(locals[i] != NULL);
  }
  for (int round = 0; round < 3; round++)
    for (int i = 0; i < N; i++) {
      unsigned char *b = (unsigned char *)zp_get(pools[i], 2048);
      CHECK(b != NULL && all_zero(b, 2048));
      memset(b, 0xEE, 2048);
      CHECK_STATUS(zp_put(pools[(i + 1) % N], b), ZP_ERR_WRONG_POOL);
      CHECK_STATUS(zp_put(pools[i], b), ZP_OK);
      void *c = zp_local_get(locals[i], 2048);
      CHECK(c != NULL);
      CHECK_STATUS(zp_local_put(locals[i], c), ZP_OK);
    }
  for (int i = 0; i < N; i++) {
    CHECK(stat_of(pools[i], 0) == 0);
    CHECK(stat_of(pools[i], 2) == 6);
    zp_local_free(locals[i]);
    zp_pool_free(pools[i]);
  }
}

/* ZP_ZERO_ALWAYS heals and counts a buffer written after it was returned,
 * through zp_get and zp_local_get alike (their fast paths zero and count
 * out of line). The write is the bug a caller would make; the memory stays
 * the pool's, so it is safe to do here (under ASan, which poisons idle
 * buffers and reports the write as the bug it is, this part does not run;
 * the rest of the program does). */
static void dirty_gets_counted(void) {
  if (ZP_UNDER_ASAN) return;
  zp_pool *pool = pool_4k();
  zp_local *l = zp_local_new(pool);
  CHECK(l != NULL);
  zp_stats s;
  for (int via_local = 0; via_local < 2; via_local++) {
    unsigned char *b = via_local ? zp_local_get(l, 4000) : zp_get(pool, 4000);
    CHECK(b != NULL);
    memset(b, 0x55, 4000);
    CHECK_STATUS(via_local ? zp_local_put(l, b) : zp_put(pool, b), ZP_OK);
    volatile unsigned char *stale = b;
    stale[3999] = 0xEE; /* after the put: the bug */
    unsigned char *again = via_local ? zp_local_get(l, 4000) : zp_get(pool, 4000);
    CHECK(again == b);
    CHECK(all_zero(again, 4000));
    CHECK_STATUS(zp_pool_stats(pool, &s), ZP_OK);
    CHECK(s.dirty_gets == (uint64_t)via_local + 1);
    /* A clean reuse finds nothing. */
    CHECK_STATUS(via_local ? zp_local_put(l, again) : zp_put(pool, again), ZP_OK);
    again = via_local ? zp_local_get(l, 4000) : zp_get(pool, 4000);
    CHECK(again == b);
    CHECK_STATUS(zp_pool_stats(pool, &s), ZP_OK);
    CHECK(s.dirty_gets == (uint64_t)via_local + 1);
    CHECK_STATUS(via_local ? zp_local_put(l, again) : zp_put(pool, again), ZP_OK);
  }
  zp_local_free(l);
  zp_pool_free(pool);
}

/* More buffers out at once than a handle's stacks hold, under both
 * scrubbing policies: the puts past the stacks take the handle's full
 * path (its cache flushed to the shards), and every buffer got again is
 * zero, under ZP_ZERO_ON_PUT too (which trusts the scrub at put), and
 * ZP_ZERO_ALWAYS finds nothing to heal. */
static void many_outstanding(void) {
  enum { N = 64 };
  zp_zeroing policies[] = {ZP_ZERO_ON_PUT, ZP_ZERO_ALWAYS};
  for (int k = 0; k < 2; k++) {
    zp_config *cfg = zp_config_new();
    CHECK_STATUS(zp_config_set_min_buffer_size(cfg, 4096), ZP_OK);
    CHECK_STATUS(zp_config_set_zeroing(cfg, policies[k]), ZP_OK);
    zp_pool *pool = NULL;
    CHECK_STATUS(zp_pool_new_with_config(cfg, &pool), ZP_OK);
    zp_config_free(cfg);
    zp_local *l = zp_local_new(pool);
    CHECK(l != NULL);
    unsigned char *bufs[N];
    for (int round = 0; round < 3; round++) {
      for (int i = 0; i < N; i++) {
        bufs[i] = zp_local_get(l, 3000);
        CHECK(bufs[i] != NULL && all_zero(bufs[i], 3000));
        memset(bufs[i], 0xCD, 3000);
      }
      for (int i = 0; i < N; i++) CHECK_STATUS(zp_local_put(l, bufs[i]), ZP_OK);
    }
    zp_stats s;
    CHECK_STATUS(zp_pool_stats(pool, &s), ZP_OK);
    CHECK(s.outstanding == 0 && s.dirty_gets == 0 && s.rejected_puts == 0);
    zp_local_free(l);
    zp_pool_free(pool);
  }
}

int main(void) {
  basics();
  around_pool_free();
  from_other_threads();
  trim_reaches_handles();
  thousand_pools();
  dirty_gets_counted();
  many_outstanding();
  return finish("local");
}
