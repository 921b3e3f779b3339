/* Issue 26: allocation failures the system will not produce on demand,
 * injected by replacing two libc functions in this program (glibc lets a
 * program replace them, and calls its replacements itself):
 *
 * - calloc, failing on a thread that asks for it: glibc's
 *   __cxa_thread_atexit_impl calls calloc and crashes or calls
 *   __libc_fatal when it gets NULL, so a thread's first zeropool call
 *   under memory pressure must not register its exit handler that way;
 * - pthread_atfork, failing (ENOMEM) the first time: fork safety must not
 *   be off for good; no pool may exist without the fork handlers.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

/* ---- calloc, failing on demand (per thread) ---- */

static __thread int fail_calloc;
static int calloc_refused;

void *calloc(size_t n, size_t size) {
  if (fail_calloc) {
    __atomic_add_fetch(&calloc_refused, 1, __ATOMIC_RELAXED);
    return NULL;
  }
  if (size && n > (size_t)-1 / size) return NULL;
  void *p = malloc(n * size);
  if (p) memset(p, 0, n * size);
  return p;
}

/* ---- pthread_atfork, failing once ---- */

extern int __register_atfork(void (*)(void), void (*)(void), void (*)(void), void *);
extern void *__dso_handle;
static int atfork_calls, atfork_registered;

int pthread_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void)) {
  if (__atomic_fetch_add(&atfork_calls, 1, __ATOMIC_RELAXED) == 0) return ENOMEM;
  int r = __register_atfork(prepare, parent, child, &__dso_handle);
  if (r == 0) __atomic_add_fetch(&atfork_registered, 1, __ATOMIC_RELAXED);
  return r;
}

/* ---- the checks ---- */

static zp_pool *pool;

/* A thread whose first zeropool call meets a calloc that fails: the call
 * works (cached or not), and the thread exits cleanly. */
static void *first_call_without_calloc(void *arg) {
  (void)arg;
  fail_calloc = 1;
  void *b = zp_get(pool, 4096);
  CHECK(b != NULL);
  if (b) CHECK_STATUS(zp_put(pool, b), ZP_OK);
  void *c = zp_get(pool, 4096);
  CHECK(c != NULL);
  if (c) CHECK_STATUS(zp_put(pool, c), ZP_OK);
  fail_calloc = 0;
  return NULL;
}

/* Threads that fight over one lock while calloc fails for them: a thread
 * that has to wait for a lock must not need memory to wait (parking_lot
 * registers a thread-local record, through calloc, the first time a thread
 * parks, and grows a table with an allocation that aborts on failure). */
static zp_pool *contended;
static volatile int contended_go;

static void *contend_without_calloc(void *arg) {
  (void)arg;
  fail_calloc = 1;
  while (!contended_go) sched_yield();
  for (int i = 0; i < 5000; i++) {
    void *b = zp_get(contended, 8192);
    if (!b) {
      CHECK(b != NULL);
      break;
    }
    CHECK_STATUS(zp_put(contended, b), ZP_OK);
  }
  fail_calloc = 0;
  return NULL;
}

static volatile int stop;

static void *busy(void *arg) {
  (void)arg;
  while (!stop) {
    void *b = zp_get(pool, 8192);
    if (b && zp_put(pool, b) != ZP_OK) abort();
  }
  return NULL;
}

int main(void) {
  /* The first pool creation meets a failing pthread_atfork: reported, or
   * retried, but never a pool without fork handlers. */
  zp_pool *first = zp_pool_new();
  /* Linked as a shared object, the library's pthread_atfork is glibc's
   * static stub (libc_nonshared.a) inside it, which this program cannot
   * replace: that part is checked by the static build only. */
  int interposed = atfork_calls > 0;
  if (!interposed) printf("rare_oom: pthread_atfork not interposable in this link, not checked\n");
  if (first) {
    CHECK(!interposed || atfork_registered == 1);
    zp_pool_free(first);
  } else {
    CHECK(atfork_registered == 0);
  }
  pool = zp_pool_new();
  CHECK(pool != NULL);
  if (!pool) return finish("rare_oom");
  CHECK(!interposed || atfork_registered == 1);

  for (int i = 0; i < 4; i++) {
    pthread_t t;
    CHECK(pthread_create(&t, NULL, first_call_without_calloc, NULL) == 0);
    CHECK(pthread_join(t, NULL) == 0);
  }
  zp_stats s;
  CHECK_STATUS(zp_pool_stats(pool, &s), ZP_OK);
  CHECK(s.gets == 8 && s.puts == 8 && s.outstanding == 0);

  /* No thread cache and one shard: every get and put takes the shard's
   * lock, and 6 threads on fewer cores wait for it. */
  zp_config *cfg = zp_config_new();
  CHECK(cfg != NULL);
  if (cfg) {
    CHECK_STATUS(zp_config_set_tls_cache_size(cfg, 0), ZP_OK);
    CHECK_STATUS(zp_config_set_num_shards(cfg, 1), ZP_OK);
    CHECK_STATUS(zp_config_set_min_buffer_size(cfg, 4096), ZP_OK);
    CHECK_STATUS(zp_pool_new_with_config(cfg, &contended), ZP_OK);
    zp_config_free(cfg);
  }
  if (contended) {
    pthread_t ts[6];
    for (int i = 0; i < 6; i++) CHECK(pthread_create(&ts[i], NULL, contend_without_calloc, NULL) == 0);
    contended_go = 1;
    for (int i = 0; i < 6; i++) CHECK(pthread_join(ts[i], NULL) == 0);
    CHECK_STATUS(zp_pool_stats(contended, &s), ZP_OK);
    CHECK(s.gets == 30000 && s.puts == 30000 && s.outstanding == 0);
    zp_pool_free(contended);
  }

  /* Fork while another thread works the pool: the child can use it. */
  pthread_t t;
  CHECK(pthread_create(&t, NULL, busy, NULL) == 0);
  int children_ok = 0;
  for (int i = 0; i < 50; i++) {
    pid_t pid = fork();
    if (pid == 0) {
      alarm(10);
      void *b = zp_get(pool, 8192);
      _exit(b != NULL && zp_put(pool, b) == ZP_OK ? 0 : 1);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    children_ok += WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }
  stop = 1;
  CHECK(pthread_join(t, NULL) == 0);
  CHECK(children_ok == 50);
  zp_pool_free(pool);
  return finish("rare_oom");
}
