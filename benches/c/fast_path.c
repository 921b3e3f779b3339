/* The C fast path next to what a C programmer would write instead, in one
 * program, medians of several timed runs:
 *  - untouched: zp_get+zp_put (ZP_ZERO_NEVER) and zp_local_get+zp_local_put
 *    against malloc+free;
 *  - fully written, secret-safe: the default ZP_ZERO_ALWAYS and ZP_ZERO_ON_PUT
 *    against calloc + fill + explicit_bzero + free;
 *  - a thread's 1,000th pool against its first;
 *  - a lone compare-and-swap, the floor under every zp_put.
 * Built and run by: cargo run --release --example c_fast_path, which passes
 * --records (one line per measurement, for the example to turn into the
 * README's tables) after the iteration count. */
#define _DEFAULT_SOURCE /* explicit_bzero */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "zeropool.h"

#define RUNS 9

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

enum how { UNTOUCHED, WRITTEN };

static double bench_pool(zp_pool *pool, size_t size, long iters, enum how how) {
  double t[RUNS];
  for (int r = 0; r < RUNS; r++) {
    double start = now_ns();
    for (long i = 0; i < iters; i++) {
      void *p = zp_get(pool, size);
      if (how == WRITTEN) memset(p, 0xA5, size);
      sink = p;
      put_failures += zp_put(pool, p) != ZP_OK;
    }
    t[r] = (now_ns() - start) / iters;
  }
  return median(t);
}

static double bench_local(zp_local *local, size_t size, long iters, enum how how) {
  double t[RUNS];
  for (int r = 0; r < RUNS; r++) {
    double start = now_ns();
    for (long i = 0; i < iters; i++) {
      void *p = zp_local_get(local, size);
      if (how == WRITTEN) memset(p, 0xA5, size);
      sink = p;
      put_failures += zp_local_put(local, p) != ZP_OK;
    }
    t[r] = (now_ns() - start) / iters;
  }
  return median(t);
}

static double bench_malloc(size_t size, long iters) {
  double t[RUNS];
  for (int r = 0; r < RUNS; r++) {
    double start = now_ns();
    for (long i = 0; i < iters; i++) {
      void *p = malloc(size);
      sink = p;
      free(p);
    }
    t[r] = (now_ns() - start) / iters;
  }
  return median(t);
}

/* What a C programmer writes for "zero when I get it, scrubbed when I am
 * done": calloc, use, explicit_bzero, free. */
static double bench_calloc_written(size_t size, long iters) {
  double t[RUNS];
  for (int r = 0; r < RUNS; r++) {
    double start = now_ns();
    for (long i = 0; i < iters; i++) {
      void *p = calloc(1, size);
      memset(p, 0xA5, size);
      sink = p;
      explicit_bzero(p, size);
      free(p);
    }
    t[r] = (now_ns() - start) / iters;
  }
  return median(t);
}

/* The floor under any zp_put: API.md's guarantee 4 (one winner when two
 * threads return a buffer at once) needs one atomic read-modify-write per
 * put, here a lone compare-and-swap on a private word in a loop. */
static double bench_cas(long iters) {
  static uint64_t word;
  double t[RUNS];
  for (int r = 0; r < RUNS; r++) {
    double start = now_ns();
    for (long i = 0; i < iters; i++) {
      uint64_t seen = __atomic_load_n(&word, __ATOMIC_RELAXED);
      __atomic_compare_exchange_n(&word, &seen, seen + 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
    }
    t[r] = (now_ns() - start) / iters;
  }
  return median(t);
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

int main(int argc, char **argv) {
  long iters = argc > 1 ? atol(argv[1]) : 2000000;
  int records = argc > 2 && strcmp(argv[2], "--records") == 0;
  size_t sizes[] = {4096, 65536, 1 << 20};

  zp_pool *never = pool_with(ZP_ZERO_NEVER);
  zp_local *local = zp_local_new(never);
  if (!local) return 1;
  if (!records) {
    printf("untouched (ZP_ZERO_NEVER), ns per pair; speedup = malloc time / ours\n");
    printf("%-8s %10s %10s %12s %8s %8s\n", "size", "malloc", "zp_get", "zp_local", "zp_get", "zp_local");
  }
  for (int i = 0; i < 3; i++) {
    double m = bench_malloc(sizes[i], iters);
    double zp = bench_pool(never, sizes[i], iters, UNTOUCHED);
    double lo = bench_local(local, sizes[i], iters, UNTOUCHED);
    if (records)
      printf("untouched %zu %.2f %.2f %.2f\n", sizes[i], m, zp, lo);
    else
      printf("%-8zu %10.1f %10.1f %12.1f %7.2fx %7.2fx\n", sizes[i], m, zp, lo, m / zp, m / lo);
  }
  zp_local_free(local);
  printf(records ? "cas %.2f\n" : "a lone compare-and-swap (the one zp_put must do), ns: %.1f\n", bench_cas(iters));

  zp_pool *always = pool_with(ZP_ZERO_ALWAYS), *on_put = pool_with(ZP_ZERO_ON_PUT);
  if (!records) {
    printf("\nfully written; baseline calloc+fill+explicit_bzero+free; ns per pair\n");
    printf("%-8s %12s %10s %10s %8s %8s\n", "size", "calloc..", "ALWAYS", "ON_PUT", "ALWAYS", "ON_PUT");
  }
  for (int i = 0; i < 3; i++) {
    long n = sizes[i] >= (1 << 20) ? iters / 100 : sizes[i] >= 65536 ? iters / 10 : iters;
    double c = bench_calloc_written(sizes[i], n);
    double a = bench_pool(always, sizes[i], n, WRITTEN);
    double o = bench_pool(on_put, sizes[i], n, WRITTEN);
    if (records)
      printf("written %zu %.2f %.2f %.2f\n", sizes[i], c, a, o);
    else
      printf("%-8zu %12.1f %10.1f %10.1f %7.2fx %7.2fx\n", sizes[i], c, a, o, c / a, c / o);
  }

  /* A thread's 1,000th pool costs what its first does. */
  enum { N = 1000 };
  static zp_pool *pools[N];
  for (int i = 0; i < N; i++) pools[i] = pool_with(ZP_ZERO_NEVER);
  for (int i = 0; i < N; i++) { /* every pool used once on this thread */
    void *p = zp_get(pools[i], 4096);
    put_failures += zp_put(pools[i], p) != ZP_OK;
  }
  double first = bench_pool(pools[0], 4096, iters, UNTOUCHED);
  double last = bench_pool(pools[N - 1], 4096, iters, UNTOUCHED);
  if (records)
    printf("pools %.2f %.2f\n", first, last);
  else
    printf("\n4096 B, ZP_ZERO_NEVER: first pool %.1f ns, 1000th pool %.1f ns (%.2fx)\n", first, last, last / first);
  for (int i = 0; i < N; i++) zp_pool_free(pools[i]);

  zp_pool_free(never);
  zp_pool_free(always);
  zp_pool_free(on_put);
  if (put_failures) {
    fprintf(stderr, "%lu put calls failed\n", put_failures);
    return 1;
  }
  return 0;
}
