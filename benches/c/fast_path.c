/* The C fast path next to what a C programmer would write instead, in one
 * program, medians of several timed runs:
 *  - untouched: zp_get+zp_put (ZP_ZERO_NEVER) and zp_local_get+zp_local_put
 *    against malloc+free, nobody writes the buffer;
 *  - the same after one thread was started and joined: from then on glibc
 *    takes its arena lock on every malloc and free (a process that never
 *    started a thread skips it), as in any threaded program;
 *  - fully written, secret-safe: the default ZP_ZERO_ALWAYS and ZP_ZERO_ON_PUT
 *    against calloc + fill + explicit_bzero + free;
 *  - a thread's 1,000th pool against its first;
 *  - a lone compare-and-swap, the floor under every zp_put.
 *
 * Contenders of one comparison run round-robin: run 1 of each, then run 2
 * of each, and so on (after one untimed warm-up run of each), so that
 * whatever else the machine does falls on all of them alike.
 *
 * Output, one line per measurement: `row SET ID SIZE NS` (the median of
 * the runs, ns per pair), and `cas NS`. SET and ID name the measurement;
 * the README's tables cite them as `fast_path.c SET/ID`, and
 * tests/readme_tables.rs checks that every cited pair is printed here.
 * Built and run by: cargo run --release --example c_fast_path
 * (`fast_path ITERATIONS [--records]`; --records is accepted and ignored). */
#define _DEFAULT_SOURCE /* explicit_bzero */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "zeropool.h"

#define RUNS 9
#define MAX_CONTENDERS 4

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v) {
  qsort(v, RUNS, sizeof *v, cmp);
  return v[RUNS / 2];
}

/* Keeps the compiler from dropping the allocation. */
static void *volatile sink;
/* Statuses other than ZP_OK (there must be none). */
static unsigned long put_failures;

/* One contender: `run` does `iters` pairs of `size` bytes once and returns
 * ns per pair. */
struct contender {
  const char *id;
  double (*run)(const struct contender *c, size_t size, long iters);
  zp_pool *pool;
  zp_local *local;
  int written; /* fill every byte between get and put */
};

static double run_pool(const struct contender *c, size_t size, long iters) {
  double start = now_ns();
  for (long i = 0; i < iters; i++) {
    void *p = zp_get(c->pool, size);
    if (c->written) memset(p, 0xA5, size);
    sink = p;
    put_failures += zp_put(c->pool, p) != ZP_OK;
  }
  return (now_ns() - start) / iters;
}

static double run_local(const struct contender *c, size_t size, long iters) {
  double start = now_ns();
  for (long i = 0; i < iters; i++) {
    void *p = zp_local_get(c->local, size);
    if (c->written) memset(p, 0xA5, size);
    sink = p;
    put_failures += zp_local_put(c->local, p) != ZP_OK;
  }
  return (now_ns() - start) / iters;
}

static double run_malloc(const struct contender *c, size_t size, long iters) {
  (void)c;
  double start = now_ns();
  for (long i = 0; i < iters; i++) {
    void *p = malloc(size);
    sink = p;
    free(p);
  }
  return (now_ns() - start) / iters;
}

/* What a C programmer writes for "zero when I get it, scrubbed when I am
 * done": calloc, use, explicit_bzero, free. */
static double run_calloc_written(const struct contender *c, size_t size, long iters) {
  (void)c;
  double start = now_ns();
  for (long i = 0; i < iters; i++) {
    void *p = calloc(1, size);
    memset(p, 0xA5, size);
    sink = p;
    explicit_bzero(p, size);
    free(p);
  }
  return (now_ns() - start) / iters;
}

/* The floor under any zp_put: API.md's guarantee 4 (one winner when two
 * threads return a buffer at once) needs one atomic read-modify-write per
 * put, here a lone compare-and-swap on a private word in a loop. */
static double run_cas(const struct contender *c, size_t size, long iters) {
  (void)c;
  (void)size;
  static uint64_t word;
  double start = now_ns();
  for (long i = 0; i < iters; i++) {
    uint64_t seen = __atomic_load_n(&word, __ATOMIC_RELAXED);
    __atomic_compare_exchange_n(&word, &seen, seen + 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
  }
  return (now_ns() - start) / iters;
}

/* Runs the `n` contenders round-robin (one untimed warm-up run each, then
 * RUNS timed rounds, each contender once per round) and prints each one's
 * median as `row SET ID SIZE NS`. */
static void compare(const char *set, const struct contender *c, int n, size_t size, long iters) {
  double t[MAX_CONTENDERS][RUNS];
  for (int i = 0; i < n; i++) c[i].run(&c[i], size, iters / 10 + 1);
  for (int r = 0; r < RUNS; r++)
    for (int i = 0; i < n; i++) t[i][r] = c[i].run(&c[i], size, iters);
  for (int i = 0; i < n; i++) printf("row %s %s %zu %.2f\n", set, c[i].id, size, median(t[i]));
  fflush(stdout);
}

static zp_pool *pool_with(zp_zeroing zeroing) {
  zp_config *cfg = zp_config_new();
  if (!cfg || zp_config_set_min_buffer_size(cfg, 4096) != ZP_OK || zp_config_set_zeroing(cfg, zeroing) != ZP_OK ||
      zp_config_set_max_pooled_bytes(cfg, 256u << 20) != ZP_OK)
    exit(1);
  zp_pool *pool = NULL;
  if (zp_pool_new_with_config(cfg, &pool) != ZP_OK) exit(1);
  zp_config_free(cfg);
  return pool;
}

static void *nothing(void *arg) { return arg; }

int main(int argc, char **argv) {
  long iters = argc > 1 ? atol(argv[1]) : 2000000;
  if (iters < 10) iters = 10;
  size_t sizes[] = {4096, 65536, 1 << 20};

  zp_pool *never = pool_with(ZP_ZERO_NEVER);
  zp_local *local = zp_local_new(never);
  if (!local) return 1;
  struct contender untouched[] = {
      {.id = "malloc_free", .run = run_malloc},
      {.id = "zp_get_put", .run = run_pool, .pool = never},
      {.id = "zp_local", .run = run_local, .local = local},
  };
  for (int i = 0; i < 3; i++) compare("untouched", untouched, 3, sizes[i], iters);

  struct contender cas[] = {{.id = "cas", .run = run_cas}};
  double t[RUNS];
  for (int r = 0; r < RUNS; r++) t[r] = cas[0].run(&cas[0], 0, iters);
  printf("cas %.2f\n", median(t));

  zp_pool *always = pool_with(ZP_ZERO_ALWAYS), *on_put = pool_with(ZP_ZERO_ON_PUT);
  struct contender written[] = {
      {.id = "calloc_fill_bzero_free", .run = run_calloc_written},
      {.id = "zp_always", .run = run_pool, .pool = always, .written = 1},
      {.id = "zp_on_put", .run = run_pool, .pool = on_put, .written = 1},
  };
  for (int i = 0; i < 3; i++) {
    long n = sizes[i] >= (1 << 20) ? iters / 100 : sizes[i] >= 65536 ? iters / 10 : iters;
    compare("written", written, 3, sizes[i], n);
  }

  /* A thread's 1,000th pool costs what its first does. */
  enum { N = 1000 };
  static zp_pool *pools[N];
  for (int i = 0; i < N; i++) pools[i] = pool_with(ZP_ZERO_NEVER);
  for (int i = 0; i < N; i++) { /* every pool used once on this thread */
    void *p = zp_get(pools[i], 4096);
    put_failures += zp_put(pools[i], p) != ZP_OK;
  }
  struct contender many[] = {
      {.id = "first_pool", .run = run_pool, .pool = pools[0]},
      {.id = "pool_1000th", .run = run_pool, .pool = pools[N - 1]},
  };
  compare("pools", many, 2, 4096, iters);
  for (int i = 0; i < N; i++) zp_pool_free(pools[i]);

  /* Last, since it cannot be undone: once a thread has been started, glibc
   * locks its arena on every call. */
  pthread_t th;
  if (pthread_create(&th, NULL, nothing, NULL) != 0 || pthread_join(th, NULL) != 0) return 1;
  for (int i = 0; i < 3; i++) compare("threaded", untouched, 3, sizes[i], iters);

  zp_local_free(local);
  zp_pool_free(never);
  zp_pool_free(always);
  zp_pool_free(on_put);
  if (put_failures) {
    fprintf(stderr, "%lu put calls failed\n", put_failures);
    return 1;
  }
  return 0;
}
