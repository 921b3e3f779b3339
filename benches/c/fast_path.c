/* zp_get+zp_put on the thread-cache fast path next to malloc+free, in one C
 * program, untouched buffers (ZP_ZERO_NEVER) against untouched malloc.
 * Prints the median of several timed runs per size.
 * Built and run by: cargo run --release --example c_fast_path */
#define _POSIX_C_SOURCE 199309L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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
/* zp_put statuses other than ZP_OK (there must be none). */
static unsigned long put_failures;

static double bench_pool(zp_pool *pool, size_t size, long iters) {
  double t[RUNS];
  for (int r = 0; r < RUNS; r++) {
    double start = now_ns();
    for (long i = 0; i < iters; i++) {
      void *p = zp_get(pool, size);
      sink = p;
      put_failures += zp_put(pool, p) != ZP_OK;
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

int main(int argc, char **argv) {
  long iters = argc > 1 ? atol(argv[1]) : 2000000;
  zp_config *cfg = zp_config_new();
  if (zp_config_set_min_buffer_size(cfg, 4096) != ZP_OK || zp_config_set_zeroing(cfg, ZP_ZERO_NEVER) != ZP_OK ||
      zp_config_set_max_pooled_bytes(cfg, 256u << 20) != ZP_OK)
    return 1;
  zp_pool *pool = NULL;
  if (zp_pool_new_with_config(cfg, &pool) != ZP_OK) return 1;
  zp_config_free(cfg);

  size_t sizes[] = {4096, 65536, 1 << 20};
  printf("%-8s %14s %14s %8s\n", "size", "zp_get+zp_put", "malloc+free", "ratio");
  for (int i = 0; i < 3; i++) {
    double zp = bench_pool(pool, sizes[i], iters);
    double m = bench_malloc(sizes[i], iters);
    printf("%-8zu %11.1f ns %11.1f ns %7.2fx\n", sizes[i], zp, m, m / zp);
  }
  zp_pool_free(pool);
  if (put_failures) {
    fprintf(stderr, "%lu zp_put calls failed\n", put_failures);
    return 1;
  }
  return 0;
}
