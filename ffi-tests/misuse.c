/* Every misuse zp_put must catch: each gets its status, nothing crashes, and
 * the pool keeps working. */
#define _DEFAULT_SOURCE /* for MAP_ANONYMOUS under -std=c11 */
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "check.h"

#ifdef ZP_VIA_LOCAL
/* Built a second time with -DZP_VIA_LOCAL: every get and return goes
 * through a zp_local handle made with the pool (same checks, same codes). */
static struct {
  zp_pool *pool;
  zp_local *local;
} locals[16];
static int nlocals;

static void add_local(zp_pool *pool) {
  CHECK(nlocals < 16);
  locals[nlocals].pool = pool;
  locals[nlocals].local = zp_local_new(pool);
  CHECK(locals[nlocals].local != NULL);
  nlocals++;
}

static zp_status put_via_local(zp_pool *pool, void *buf) {
  for (int i = nlocals - 1; i >= 0; i--)
    if (locals[i].pool == pool) return zp_local_put(locals[i].local, buf);
  return zp_local_put(NULL, buf); /* a pool without a handle: NULL */
}

static void *get_via_local(zp_pool *pool, size_t size) {
  for (int i = nlocals - 1; i >= 0; i--)
    if (locals[i].pool == pool) return zp_local_get(locals[i].local, size);
  return zp_local_get(NULL, size);
}

static void free_locals(void) {
  for (int i = 0; i < nlocals; i++) zp_local_free(locals[i].local);
}
#define zp_put(pool, buf) put_via_local((pool), (buf))
#define zp_get(pool, size) get_via_local((pool), (size))
#else
static void add_local(zp_pool *pool) { (void)pool; }
static void free_locals(void) {}
#endif

static zp_pool *small_pool(zp_zeroing zeroing) {
  zp_config *cfg = zp_config_new();
  CHECK_STATUS(zp_config_set_min_buffer_size(cfg, 4096), ZP_OK);
  CHECK_STATUS(zp_config_set_zeroing(cfg, zeroing), ZP_OK);
  zp_pool *pool = NULL;
  CHECK_STATUS(zp_pool_new_with_config(cfg, &pool), ZP_OK);
  zp_config_free(cfg);
  add_local(pool);
  return pool;
}

static uint64_t rejected(zp_pool *pool) {
  zp_stats s;
  CHECK_STATUS(zp_pool_stats(pool, &s), ZP_OK);
  return s.rejected_puts;
}

static void foreign_pointers(zp_pool *pool) {
  int on_stack = 0;
  void *heap = malloc(100);
  void *aligned = aligned_alloc(4096, 8192);
  void *mapped = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  unsigned char *real = (unsigned char *)zp_get(pool, 3 * 4096);
  void *wild[] = {&on_stack,
                  heap,
                  aligned,
                  mapped,
                  real + 1,        /* interior, unaligned */
                  real + 4096,     /* interior, page aligned */
                  (void *)0x1000,  /* unmapped */
                  (void *)0x10,
                  (void *)(uintptr_t)0x7ffffffff000ull,
                  (void *)(uintptr_t)0xfffffffffffff000ull,
                  /* The real buffer's address with bits above 2^48 set: the
                     slot lookup ignores those bits, so these find the real
                     buffer's chunk, and must still be refused. */
                  (void *)((uintptr_t)real | (1ull << 48)),
                  (void *)((uintptr_t)real | (1ull << 63)),
                  (void *)((uintptr_t)real + (0x5aull << 52))};
  uint64_t before = rejected(pool);
  for (size_t i = 0; i < sizeof wild / sizeof wild[0]; i++)
    CHECK_STATUS(zp_put(pool, wild[i]), ZP_ERR_FOREIGN_BUFFER);
  CHECK(rejected(pool) == before + sizeof wild / sizeof wild[0]);
  /* The real buffer is untouched by all that and goes back normally. */
  CHECK_STATUS(zp_put(pool, real), ZP_OK);
  free(heap);
  free(aligned);
  munmap(mapped, 8192);
}

static void wrong_pool(zp_pool *a, zp_pool *b) {
  void *buf = zp_get(a, 1000);
  uint64_t before = rejected(b);
  CHECK_STATUS(zp_put(b, buf), ZP_ERR_WRONG_POOL);
  CHECK(rejected(b) == before + 1);
  CHECK_STATUS(zp_put(a, buf), ZP_OK); /* still ours to return */
}

static void double_put(zp_pool *pool) {
  unsigned char *buf = (unsigned char *)zp_get(pool, 1000);
  memset(buf, 1, 1000);
  CHECK_STATUS(zp_put(pool, buf), ZP_OK);
  uint64_t before = rejected(pool);
  CHECK_STATUS(zp_put(pool, buf), ZP_ERR_DOUBLE_PUT);
  CHECK_STATUS(zp_put(pool, buf), ZP_ERR_DOUBLE_PUT);
  CHECK(rejected(pool) == before + 2);
  /* The pool is intact: the buffer is handed out once, zeroed. */
  unsigned char *x = (unsigned char *)zp_get(pool, 1000);
  unsigned char *y = (unsigned char *)zp_get(pool, 1000);
  CHECK(x == buf && y != buf && all_zero(x, 1000) && all_zero(y, 1000));
  CHECK_STATUS(zp_put(pool, x), ZP_OK);
  CHECK_STATUS(zp_put(pool, y), ZP_OK);
}

static void overflow(zp_pool *pool, size_t size) {
  zp_stats before, after;
  unsigned char *buf = (unsigned char *)zp_get(pool, size);
  CHECK(buf != NULL);
  CHECK_STATUS(zp_pool_stats(pool, &before), ZP_OK);
  /* One byte too many. It must differ from the canary byte it lands on:
   * no byte canary can see a write of the value it already holds (1 buffer
   * in 256 for a fixed value). */
  memset(buf, 0x41, size);
  buf[size] = (unsigned char)~buf[size];
  CHECK_STATUS(zp_put(pool, buf), ZP_ERR_OVERFLOW);
  CHECK_STATUS(zp_pool_stats(pool, &after), ZP_OK);
  CHECK(after.rejected_puts == before.rejected_puts + 1);
  CHECK(after.pooled_buffers == before.pooled_buffers); /* not kept */
  CHECK(after.outstanding == before.outstanding - 1);
  /* It was released (its memory stays mapped, reading as zero): a second
   * put is a double put, not a crash. */
  CHECK_STATUS(zp_put(pool, buf), ZP_ERR_DOUBLE_PUT);
  /* The next buffer is clean. */
  unsigned char *next = (unsigned char *)zp_get(pool, size);
  CHECK(next != NULL && (size == 0 || all_zero(next, size)));
  CHECK_STATUS(zp_put(pool, next), ZP_OK);
}

static void put_after_pool_free(void) {
  zp_pool *pool = small_pool(ZP_ZERO_ALWAYS);
  unsigned char *a = (unsigned char *)zp_get(pool, 5000);
  unsigned char *b = (unsigned char *)zp_get(pool, (size_t)1 << 26); /* unpooled */
  zp_pool_free(pool);
  memset(a, 3, 5000); /* still valid */
  b[0] = 1;
  CHECK_STATUS(zp_put(pool, a), ZP_OK);
  CHECK_STATUS(zp_put(pool, b), ZP_OK);
  /* The last buffer is back: the pool's memory, metadata included, is gone
   * (a live zp_local handle or another thread's cache does not keep it:
   * issue 26), so nothing is left that could recognise `a`. */
  CHECK_STATUS(zp_put(pool, a), ZP_ERR_FOREIGN_BUFFER);
}

int main(void) {
  zp_pool *a = small_pool(ZP_ZERO_ALWAYS);
  zp_pool *b = small_pool(ZP_ZERO_ALWAYS);
  zp_pool *never = small_pool(ZP_ZERO_NEVER);

  foreign_pointers(a);
  wrong_pool(a, b);
  double_put(a);
  overflow(a, 100);
  overflow(a, 4096);       /* exactly a class: the canary is in the tail page */
  overflow(a, 0);
  overflow(a, 1u << 23);   /* unpooled */
  overflow(never, 4096);   /* detected whatever the zeroing policy */
  put_after_pool_free();

  zp_stats s;
  CHECK_STATUS(zp_pool_stats(a, &s), ZP_OK);
  CHECK(s.outstanding == 0);
  zp_pool_free(a);
  zp_pool_free(b);
  zp_pool_free(never);
  free_locals();
  return finish("misuse");
}
