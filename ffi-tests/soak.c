/* Soak under load: 8 threads doing random gets of random sizes from four
 * pools (every zeroing policy, small budgets, both eviction policies, one
 * pool's sizes mostly past its largest class), handing buffers to each
 * other, with zp_pool_trim, zp_pool_stats and zp_local calls mixed in.
 *
 * Checked throughout: every buffer carries its holder's pattern from the
 * get (or the hand-over) to the put, checked right before the put; every
 * get under ZP_ZERO_ALWAYS or ZP_ZERO_ON_PUT is zero; every put is ZP_OK;
 * idle bytes within each pool's budget. At the end: nothing outstanding,
 * and the resident set after trim and after zp_pool_free.
 *
 * ZP_SOAK_SECONDS sets the length (2 by default: what `cargo test` runs;
 * .ci/harden runs minutes). Prints one line of figures; exits 1 on any
 * corruption or failed check. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

/* ThreadSanitizer, which (like ASan) makes RSS say nothing of zeropool. */
#if defined(__SANITIZE_THREAD__)
#define ZP_UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define ZP_UNDER_TSAN 1
#endif
#endif
#ifndef ZP_UNDER_TSAN
#define ZP_UNDER_TSAN 0
#endif

enum { THREADS = 8, POOLS = 4, HELD = 24, MAILBOX = 16 };

struct pool_spec {
  const char *name;
  zp_zeroing zeroing;
  zp_eviction_policy eviction;
  size_t min_buffer, budget, max_size;
};

/* Small budgets, so that eviction and the unpooled path run all the time. */
static const struct pool_spec specs[POOLS] = {
    {"always", ZP_ZERO_ALWAYS, ZP_EVICTION_CLOCK_PRO, 4096, 512u << 10, 96u << 10},
    {"on_put", ZP_ZERO_ON_PUT, ZP_EVICTION_LIFO, 4096, 1u << 20, 200u << 10},
    {"never", ZP_ZERO_NEVER, ZP_EVICTION_CLOCK_PRO, 4096, 256u << 10, 64u << 10},
    /* Requests up to 4x the budget: most are unpooled. */
    {"always_big", ZP_ZERO_ALWAYS, ZP_EVICTION_LIFO, 64u << 10, 1u << 20, 4u << 20},
};

static zp_pool *pools[POOLS];
/* One handle per pool made by the main thread: the workers use it from
 * threads other than its own (allowed; the ordinary path's cost). */
static zp_local *foreign_locals[POOLS];

struct held {
  unsigned char *buf;
  size_t len;
  int pool;
  unsigned char tag; /* the holder's pattern byte */
};

struct mailbox {
  pthread_mutex_t lock;
  struct held items[MAILBOX];
  int n;
};

static struct mailbox boxes[THREADS];
static pthread_barrier_t stopped;
static volatile int stop_flag;

static uint64_t corruptions, nonzero_gets, failed_gets, failed_puts, over_budget;
static uint64_t total_ops, handoffs, trims, stats_calls, local_calls;

#define ADD(counter, n) ((void)__atomic_fetch_add(&(counter), (uint64_t)(n), __ATOMIC_RELAXED))
#define LOAD(counter) __atomic_load_n(&(counter), __ATOMIC_RELAXED)

static uint64_t next_rand(uint64_t *s) {
  /* xorshift64* */
  uint64_t x = *s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * 0x2545F4914F6CDD1Dull;
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Resident set in KiB, from /proc/self/statm. */
static long rss_kib(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  long size = 0, resident = 0;
  if (!f) return -1;
  if (fscanf(f, "%ld %ld", &size, &resident) != 2) resident = -1;
  fclose(f);
  return resident < 0 ? -1 : resident * (sysconf(_SC_PAGESIZE) / 1024);
}

/* Sizes: log-uniform from 1 byte to the pool's largest request (as many
 * below 1 KiB as between 1 and 2 MiB), and a few 0. */
static size_t random_size(uint64_t *rng, int pool) {
  uint64_t r = next_rand(rng);
  unsigned top = 0;
  while (((size_t)2 << top) <= specs[pool].max_size) top++;
  unsigned bits = (unsigned)(r % (top + 2)); /* 0 ..= top + 1 */
  if (bits == 0) return 0;
  size_t span = (size_t)1 << (bits - 1);
  size_t len = span + (size_t)(r >> 16) % span;
  return len > specs[pool].max_size ? specs[pool].max_size : len;
}

/* Whether buf[0..len) is all `tag`: every byte up to 64 KiB, beyond that
 * every 61st byte and the last (full checks of multi-MiB buffers would
 * leave little time for the races this is about). */
static int holds(const unsigned char *buf, size_t len, unsigned char tag) {
  size_t step = len <= (64u << 10) ? 1 : 61;
  for (size_t i = 0; i < len; i += step)
    if (buf[i] != tag) return 0;
  return len == 0 || buf[len - 1] == tag;
}

static int zeroed(const unsigned char *buf, size_t len) {
  size_t step = len <= (64u << 10) ? 1 : 61;
  for (size_t i = 0; i < len; i += step)
    if (buf[i]) return 0;
  return len == 0 || buf[len - 1] == 0;
}

struct worker {
  int id;
  zp_local *locals[POOLS];
  struct held held[HELD];
  int n;
  uint64_t rng;
};

static unsigned char tag_of(int thread, int pool) { return (unsigned char)(0x11 + thread * POOLS + pool); }

/* Returns one buffer the caller holds, after checking its pattern. */
static void put_back(struct worker *w, struct held h) {
  if (!holds(h.buf, h.len, h.tag)) {
    ADD(corruptions, 1);
    fprintf(stderr, "soak: thread %d: a %zu-byte buffer of pool %s lost its pattern 0x%02x\n", w->id, h.len,
            specs[h.pool].name, h.tag);
  }
  uint64_t r = next_rand(&w->rng) % 8;
  zp_status st;
  if (r < 4) {
    st = zp_put(pools[h.pool], h.buf);
  } else if (r < 7) {
    st = zp_local_put(w->locals[h.pool], h.buf);
    ADD(local_calls, 1);
  } else {
    st = zp_local_put(foreign_locals[h.pool], h.buf);
    ADD(local_calls, 1);
  }
  if (st != ZP_OK) {
    ADD(failed_puts, 1);
    fprintf(stderr, "soak: thread %d: put gave %s\n", w->id, zp_status_str(st));
  }
}

static void get_one(struct worker *w) {
  int pool = (int)(next_rand(&w->rng) % POOLS);
  size_t len = random_size(&w->rng, pool);
  uint64_t r = next_rand(&w->rng) % 8;
  unsigned char *b;
  if (r < 4) {
    b = (unsigned char *)zp_get(pools[pool], len);
  } else if (r < 7) {
    b = (unsigned char *)zp_local_get(w->locals[pool], len);
    ADD(local_calls, 1);
  } else {
    b = (unsigned char *)zp_local_get(foreign_locals[pool], len);
    ADD(local_calls, 1);
  }
  if (!b) {
    ADD(failed_gets, 1);
    fprintf(stderr, "soak: thread %d: get of %zu from %s failed: %s\n", w->id, len, specs[pool].name,
            zp_status_str(zp_last_error()));
    return;
  }
  if (specs[pool].zeroing != ZP_ZERO_NEVER && !zeroed(b, len)) {
    ADD(nonzero_gets, 1);
    fprintf(stderr, "soak: thread %d: a %zu-byte get from %s was not zero\n", w->id, len, specs[pool].name);
  }
  struct held h = {b, len, pool, tag_of(w->id, pool)};
  memset(b, h.tag, len);
  w->held[w->n++] = h;
}

/* Takes what other threads handed over: checks the sender's pattern, then
 * writes this thread's own. */
static void take_mail(struct worker *w) {
  struct mailbox *box = &boxes[w->id];
  pthread_mutex_lock(&box->lock);
  while (box->n > 0 && w->n < HELD) {
    struct held h = box->items[--box->n];
    if (!holds(h.buf, h.len, h.tag)) {
      ADD(corruptions, 1);
      fprintf(stderr, "soak: thread %d: a handed-over buffer lost its pattern 0x%02x\n", w->id, h.tag);
    }
    h.tag = tag_of(w->id, h.pool);
    memset(h.buf, h.tag, h.len);
    w->held[w->n++] = h;
  }
  pthread_mutex_unlock(&box->lock);
}

static int hand_over(struct worker *w, int k) {
  int to = (int)(next_rand(&w->rng) % THREADS);
  if (to == w->id) return 0;
  struct mailbox *box = &boxes[to];
  int done = 0;
  pthread_mutex_lock(&box->lock);
  if (box->n < MAILBOX) {
    box->items[box->n++] = w->held[k];
    done = 1;
  }
  pthread_mutex_unlock(&box->lock);
  return done;
}

static void check_budgets(void) {
  for (int p = 0; p < POOLS; p++) {
    zp_stats s;
    CHECK_STATUS(zp_pool_stats(pools[p], &s), ZP_OK);
    if (s.pooled_bytes > specs[p].budget) {
      ADD(over_budget, 1);
      fprintf(stderr, "soak: pool %s holds %llu idle bytes, over its budget %zu\n", specs[p].name,
              (unsigned long long)s.pooled_bytes, specs[p].budget);
    }
  }
}

static void *work(void *arg) {
  struct worker *w = (struct worker *)arg;
  for (int p = 0; p < POOLS; p++) {
    w->locals[p] = zp_local_new(pools[p]);
    CHECK(w->locals[p] != NULL);
  }
  uint64_t ops = 0;
  while (!__atomic_load_n(&stop_flag, __ATOMIC_RELAXED)) {
    take_mail(w);
    uint64_t r = next_rand(&w->rng) % 1000;
    if (w->n > 0 && (w->n == HELD || r < 450)) {
      int k = (int)(next_rand(&w->rng) % (uint64_t)w->n);
      if (r % 5 == 0 && hand_over(w, k)) {
        ADD(handoffs, 1);
      } else {
        put_back(w, w->held[k]);
      }
      w->held[k] = w->held[--w->n];
    } else if (r < 990) {
      get_one(w);
    } else if (r < 993) {
      CHECK_STATUS(zp_pool_trim(pools[next_rand(&w->rng) % POOLS]), ZP_OK);
      ADD(trims, 1);
    } else {
      check_budgets();
      ADD(stats_calls, 1);
    }
    ops++;
  }
  /* Everyone stops handing over before anyone drains its mailbox. */
  pthread_barrier_wait(&stopped);
  take_mail(w);
  while (w->n > 0) put_back(w, w->held[--w->n]);
  /* Mail that did not fit in `held` (at most a mailbox's worth). */
  take_mail(w);
  while (w->n > 0) put_back(w, w->held[--w->n]);
  for (int p = 0; p < POOLS; p++) zp_local_free(w->locals[p]);
  ADD(total_ops, ops);
  return NULL;
}

int main(void) {
  const char *env = getenv("ZP_SOAK_SECONDS");
  double seconds = env && *env ? atof(env) : 2.0;
  if (seconds <= 0) seconds = 2.0;
  long rss_start = rss_kib();

  for (int p = 0; p < POOLS; p++) {
    zp_config *cfg = zp_config_new();
    CHECK(cfg != NULL);
    CHECK_STATUS(zp_config_set_min_buffer_size(cfg, specs[p].min_buffer), ZP_OK);
    CHECK_STATUS(zp_config_set_zeroing(cfg, specs[p].zeroing), ZP_OK);
    CHECK_STATUS(zp_config_set_eviction_policy(cfg, specs[p].eviction), ZP_OK);
    CHECK_STATUS(zp_config_set_max_pooled_bytes(cfg, specs[p].budget), ZP_OK);
    CHECK_STATUS(zp_config_set_tls_cache_size(cfg, 4), ZP_OK);
    CHECK_STATUS(zp_config_set_num_shards(cfg, 4), ZP_OK);
    CHECK_STATUS(zp_pool_new_with_config(cfg, &pools[p]), ZP_OK);
    zp_config_free(cfg);
    foreign_locals[p] = zp_local_new(pools[p]);
    CHECK(foreign_locals[p] != NULL);
  }
  if (LOAD(checks_failed)) return finish("soak");

  static struct worker workers[THREADS];
  pthread_t threads[THREADS];
  CHECK(pthread_barrier_init(&stopped, NULL, THREADS) == 0);
  for (int t = 0; t < THREADS; t++) {
    pthread_mutex_init(&boxes[t].lock, NULL);
    workers[t].id = t;
    workers[t].rng = 0x9E3779B97F4A7C15ull * (uint64_t)(t + 1) ^ (uint64_t)time(NULL);
  }
  double t0 = now_s();
  for (int t = 0; t < THREADS; t++) CHECK(pthread_create(&threads[t], NULL, work, &workers[t]) == 0);
  long rss_peak = 0;
  while (now_s() - t0 < seconds) {
    usleep(50 * 1000);
    long r = rss_kib();
    if (r > rss_peak) rss_peak = r;
  }
  __atomic_store_n(&stop_flag, 1, __ATOMIC_RELAXED);
  for (int t = 0; t < THREADS; t++) pthread_join(threads[t], NULL);
  double elapsed = now_s() - t0;

  /* Every buffer is back: nothing outstanding, in any pool. */
  uint64_t outstanding = 0;
  for (int p = 0; p < POOLS; p++) {
    zp_stats s;
    CHECK_STATUS(zp_pool_stats(pools[p], &s), ZP_OK);
    outstanding += s.outstanding;
    CHECK(s.rejected_puts == 0);
    CHECK(s.pooled_bytes <= specs[p].budget);
    CHECK(s.gets == s.puts + s.outstanding);
  }
  check_budgets();
  for (int p = 0; p < POOLS; p++) CHECK_STATUS(zp_pool_trim(pools[p]), ZP_OK);
  long rss_trimmed = rss_kib();
  for (int p = 0; p < POOLS; p++) {
    zp_stats s;
    CHECK_STATUS(zp_pool_stats(pools[p], &s), ZP_OK);
    CHECK(s.pooled_bytes == 0);
    zp_local_free(foreign_locals[p]);
    zp_pool_free(pools[p]);
  }
  long rss_freed = rss_kib();

  uint64_t ops = LOAD(total_ops);
  printf("soak: %d threads, %d pools, %.1f s: %llu ops (%.0f ops/s), %llu hand-offs, %llu trims, "
         "%llu stats, %llu zp_local calls; corruption %llu, non-zero gets %llu, failed gets %llu, "
         "failed puts %llu, over budget %llu, outstanding %llu; RSS KiB: start %ld, peak %ld, "
         "after trim %ld, after free %ld\n",
         THREADS, POOLS, elapsed, (unsigned long long)ops, (double)ops / elapsed,
         (unsigned long long)LOAD(handoffs), (unsigned long long)LOAD(trims),
         (unsigned long long)LOAD(stats_calls), (unsigned long long)LOAD(local_calls),
         (unsigned long long)LOAD(corruptions), (unsigned long long)LOAD(nonzero_gets),
         (unsigned long long)LOAD(failed_gets), (unsigned long long)LOAD(failed_puts),
         (unsigned long long)LOAD(over_budget), (unsigned long long)outstanding, rss_start, rss_peak,
         rss_trimmed, rss_freed);
  CHECK(LOAD(corruptions) == 0);
  CHECK(LOAD(nonzero_gets) == 0);
  CHECK(LOAD(failed_gets) == 0);
  CHECK(LOAD(failed_puts) == 0);
  CHECK(LOAD(over_budget) == 0);
  CHECK(outstanding == 0);
  CHECK(ops > 0);
  /* The pools are freed and their threads gone: what they had is back to
   * the system (the sanitizers' shadow and quarantine make RSS meaningless
   * there). The slack covers the 8 threads' stacks and malloc arenas. */
  if (!ZP_UNDER_ASAN && !ZP_UNDER_TSAN) CHECK(rss_freed <= rss_start + 4096);
  return finish("soak");
}
