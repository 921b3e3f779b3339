/* Tiny test helpers shared by the C test programs. */
#ifndef ZP_CHECK_H
#define ZP_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#include "zeropool.h"

static int checks_passed, checks_failed;

#define CHECK(cond)                                                              \
  do {                                                                           \
    if (cond) {                                                                  \
      checks_passed++;                                                           \
    } else {                                                                     \
      checks_failed++;                                                           \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);  \
    }                                                                            \
  } while (0)

#define CHECK_STATUS(expr, want)                                                 \
  do {                                                                           \
    zp_status got_ = (expr);                                                     \
    if (got_ == (zp_status)(want)) {                                             \
      checks_passed++;                                                           \
    } else {                                                                     \
      checks_failed++;                                                           \
      fprintf(stderr, "%s:%d: %s gave %s, want %s\n", __FILE__, __LINE__, #expr, \
              zp_status_str(got_), zp_status_str((zp_status)(want)));            \
    }                                                                            \
  } while (0)

/* Prints the closing line and turns failures into the exit status. */
static inline int finish(const char *program) {
  printf("%s: %d passed, %d failed\n", program, checks_passed, checks_failed);
  return checks_failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* 1 when every byte of buf[0..n) is zero. */
static inline int all_zero(const void *buf, size_t n) {
  const unsigned char *p = (const unsigned char *)buf;
  for (size_t i = 0; i < n; i++)
    if (p[i]) return 0;
  return 1;
}

#endif
