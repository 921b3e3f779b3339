/* Tiny test helpers shared by the C test programs. */
#ifndef ZP_CHECK_H
#define ZP_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#include "zeropool.h"

/* Counted from any thread (local.c, threads.c and soak.c check from
 * several at once): atomic, or concurrent CHECKs lose counts, a failure
 * included, and TSan rightly reports the race. The GCC/Clang builtins
 * work in C and C++ alike. */
static int checks_passed, checks_failed;
#define ZP_COUNT_(counter) ((void)__atomic_fetch_add(&(counter), 1, __ATOMIC_RELAXED))

#define CHECK(cond)                                                              \
  do {                                                                           \
    if (cond) {                                                                  \
      ZP_COUNT_(checks_passed);                                                  \
    } else {                                                                     \
      ZP_COUNT_(checks_failed);                                                  \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);  \
    }                                                                            \
  } while (0)

#define CHECK_STATUS(expr, want)                                                 \
  do {                                                                           \
    zp_status got_ = (expr);                                                     \
    if (got_ == (zp_status)(want)) {                                             \
      ZP_COUNT_(checks_passed);                                                  \
    } else {                                                                     \
      ZP_COUNT_(checks_failed);                                                  \
      fprintf(stderr, "%s:%d: %s gave %s, want %s\n", __FILE__, __LINE__, #expr, \
              zp_status_str(got_), zp_status_str((zp_status)(want)));            \
    }                                                                            \
  } while (0)

/* 1 when built with AddressSanitizer (GCC or Clang), which poisons idle
 * buffers: a test that writes one on purpose must not run there. */
#if defined(__SANITIZE_ADDRESS__)
#define ZP_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ZP_UNDER_ASAN 1
#endif
#endif
#ifndef ZP_UNDER_ASAN
#define ZP_UNDER_ASAN 0
#endif

/* Prints the closing line and turns failures into the exit status. */
static inline int finish(const char *program) {
  int passed = __atomic_load_n(&checks_passed, __ATOMIC_RELAXED);
  int failed = __atomic_load_n(&checks_failed, __ATOMIC_RELAXED);
  printf("%s: %d passed, %d failed\n", program, passed, failed);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* 1 when every byte of buf[0..n) is zero. */
static inline int all_zero(const void *buf, size_t n) {
  const unsigned char *p = (const unsigned char *)buf;
  for (size_t i = 0; i < n; i++)
    if (p[i]) return 0;
  return 1;
}

#endif
