/*
 * it_concurrency.c - several real processes on one real shoald (issue 3,
 * "Must show" 1): 10,000 pipelined puts; a batch seen atomically by
 * concurrent reader processes; shoal_wait woken by a put from another
 * process, promptly and without polling.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "itest.h"

/* ---------------------------------------------------------- pipelining -- */

START_TEST(pipeline_10k) {
  enum { N = 10000 };
  it_start_broker(NULL);
  shoal *c = it_open_ok();
  char key[32], val[64];
  for (int i = 0; i < N; i++) {
    int kl = snprintf(key, sizeof key, "p/%05d", i);
    int vl = snprintf(val, sizeof val, "value-%d", i);
    IT_OK(c, shoal_pipe_put(c, key, (size_t)kl, val, (size_t)vl, 0));
  }
  IT_OK(c, shoal_pipe_flush(c));
  ck_assert_uint_le(shoal_pipe_pending(c), N);
  uint64_t *vers = calloc(N, sizeof *vers);
  for (int i = 0; i < N; i++) {
    int rc = shoal_pipe_recv(c, &vers[i]);
    ck_assert_msg(rc == 0, "reply %d: %s (%s)", i, shoal_errname(rc),
                  shoal_last_error(c));
    if (i) {
      ck_assert_msg(vers[i] > vers[i - 1],
                    "reply %d: version %" PRIu64 " after %" PRIu64
                    " (replies out of order?)",
                    i, vers[i], vers[i - 1]);
    }
  }
  ck_assert_uint_eq(shoal_pipe_pending(c), 0);
  IT_RC(c, shoal_pipe_recv(c, NULL), SHOAL_EINVAL);

  /* all visible, each with the version its reply named */
  IT_OK(c, shoal_read_begin(c));
  for (int i = 0; i < N; i++) {
    int kl = snprintf(key, sizeof key, "p/%05d", i);
    int vl = snprintf(val, sizeof val, "value-%d", i);
    shoal_val v;
    int rc = shoal_get(c, key, (size_t)kl, &v);
    ck_assert_msg(rc == 0, "%s: %s", key, shoal_errname(rc));
    ck_assert_msg(v.len == (size_t)vl && memcmp(v.data, val, v.len) == 0,
                  "%s: wrong value", key);
    ck_assert_uint_eq(v.version, vers[i]);
  }
  shoal_read_end(c);

  /* mixed pipeline: a CAS conflict answers in its place with the current
   * version, the ops around it succeed */
  uint64_t v0 = vers[0], r0 = 0, r1 = 0, r2 = 0, r3 = 0;
  IT_OK(c, shoal_pipe_put(c, "p/00000", 7, "x", 1, 0));
  IT_OK(c, shoal_pipe_cas(c, "p/00000", 7, v0, "y", 1)); /* stale */
  IT_OK(c, shoal_pipe_del(c, "p/00001", 7));
  IT_OK(c, shoal_pipe_del(c, "p/absent", 8));
  ck_assert_uint_eq(shoal_pipe_pending(c), 4);
  IT_OK(c, shoal_pipe_recv(c, &r0));
  IT_RC(c, shoal_pipe_recv(c, &r1), SHOAL_ECONFLICT);
  ck_assert_uint_eq(r1, r0);
  IT_OK(c, shoal_pipe_recv(c, &r2));
  ck_assert_uint_gt(r2, r0);
  IT_RC(c, shoal_pipe_recv(c, &r3), SHOAL_ENOTFOUND);

  /* a synchronous call with replies outstanding collects them first */
  IT_OK(c, shoal_pipe_put(c, "p/sync", 6, "1", 1, 0));
  uint64_t vs = 0;
  IT_OK(c, shoal_put(c, "p/sync2", 7, "2", 1, &vs));
  ck_assert_uint_eq(shoal_pipe_pending(c), 0);
  char buf[4];
  IT_OK(c, shoal_get_copy(c, "p/sync", 6, buf, sizeof buf, NULL, NULL));
  free(vers);
  shoal_close(c);
}
END_TEST

/* -------------------------------------------------- batch atomic reads -- */

enum { NKEYS = 100, NREADERS = 2 };

typedef struct shared {
  atomic_int stop;
  atomic_uint_fast64_t last_gen; /* the writer's last acknowledged gen */
  atomic_uint_fast64_t iters[NREADERS];
  atomic_uint_fast64_t distinct[NREADERS];
} shared;

static shared *sh;

static int batch_writer(void *arg) {
  int gens = *(int *)arg;
  shoal *c = NULL;
  IT_CHK_RC(c, it_open(&c, SHOAL_OPEN_NO_SLOT), 0);
  shoal_batch *b = NULL;
  IT_CHK_RC(c, shoal_batch_new(c, &b), 0);
  char key[16], val[64];
  uint64_t last = 0;
  for (int g = 1; g <= gens && !atomic_load(&sh->stop); g++) {
    shoal_batch_reset(b);
    for (int k = 0; k < NKEYS; k++) {
      int kl = snprintf(key, sizeof key, "k%d", k);
      /* value: the generation, padded with the key to vary lengths */
      int vl = snprintf(val, sizeof val, "%d:%.*s", g, k % 20, "################");
      IT_CHK_RC(c, shoal_batch_put(b, key, (size_t)kl, val, (size_t)vl, 0), 0);
    }
    uint64_t seq = 0;
    IT_CHK_RC(c, shoal_batch_commit(c, b, &seq), 0);
    IT_CHK(seq > last, "batch versions must grow");
    last = seq;
    atomic_store(&sh->last_gen, (uint64_t)g);
  }
  shoal_batch_free(b);
  shoal_close(c);
  return 0;
}

static int batch_reader(void *arg) {
  int id = *(int *)arg;
  shoal *c = NULL;
  IT_CHK_RC(c, it_open(&c, 0), 0);
  shoal_key keys[NKEYS];
  char names[NKEYS][16];
  for (int k = 0; k < NKEYS; k++) {
    keys[k].len = (size_t)snprintf(names[k], sizeof names[k], "k%d", k);
    keys[k].data = names[k];
  }
  shoal_val out[NKEYS];
  int status[NKEYS];
  uint64_t prev_gen = 0, iters = 0, distinct = 0;
  uint64_t min_iters = 3000;
  uint64_t deadline = it_now_ms() + 30000;
  while ((!atomic_load(&sh->stop) || iters < min_iters) &&
         it_now_ms() < deadline) {
    IT_CHK_RC(c, shoal_read_begin(c), 0);
    uint64_t gen = 0, ver = 0;
    int absent = 0;
    /* alternate single gets and the prefetching multi-get */
    if (iters & 1) {
      int n = shoal_get_many(c, NKEYS, keys, out, status);
      IT_CHK(n == 0 || n == NKEYS, "get_many found %d of %d keys", n, NKEYS);
      absent = n == 0;
    } else {
      for (int k = 0; k < NKEYS; k++) {
        status[k] = shoal_get(c, keys[k].data, keys[k].len, &out[k]);
        IT_CHK(status[k] == 0 || status[k] == SHOAL_ENOTFOUND, "get: %s",
               shoal_errname(status[k]));
      }
      absent = status[0] != 0;
    }
    for (int k = 0; k < NKEYS; k++) {
      if (absent) {
        IT_CHK(status[k] == SHOAL_ENOTFOUND,
               "k0 absent but k%d present: a torn batch", k);
        continue;
      }
      IT_CHK(status[k] == 0, "k0 present but k%d: %s (torn batch)", k,
             shoal_errname(status[k]));
      char buf[64];
      size_t n = out[k].len < sizeof buf - 1 ? out[k].len : sizeof buf - 1;
      memcpy(buf, out[k].data, n);
      buf[n] = 0;
      uint64_t g = strtoull(buf, NULL, 10);
      char want[64];
      int wl = snprintf(want, sizeof want, "%d:%.*s", (int)g, k % 20,
                        "################");
      IT_CHK((size_t)wl == out[k].len && memcmp(want, out[k].data, n) == 0,
             "k%d value '%s' malformed", k, buf);
      if (k == 0) {
        gen = g;
        ver = out[k].version;
      }
      IT_CHK(g == gen,
             "snapshot mixes generations: k0=%" PRIu64 " k%d=%" PRIu64, gen, k,
             g);
      IT_CHK(out[k].version == ver, "k%d version %" PRIu64 " != k0's %" PRIu64,
             k, out[k].version, ver);
    }
    shoal_read_end(c);
    IT_CHK(gen >= prev_gen, "generation went back: %" PRIu64 " after %" PRIu64,
           gen, prev_gen);
    if (gen != prev_gen) distinct++;
    prev_gen = gen;
    iters++;
  }
  atomic_store(&sh->iters[id], iters);
  atomic_store(&sh->distinct[id], distinct);
  IT_CHK(iters >= min_iters, "only %" PRIu64 " snapshots in 30 s", iters);
  shoal_close(c);
  return 0;
}

START_TEST(batch_atomic_readers) {
  it_start_broker(NULL);
  sh = it_shared(sizeof *sh);
  int gens = 3000;
  int ids[NREADERS];
  pid_t readers[NREADERS];
  for (int i = 0; i < NREADERS; i++) {
    ids[i] = i;
    readers[i] = it_fork(batch_reader, &ids[i], 60);
  }
  pid_t writer = it_fork(batch_writer, &gens, 60);
  /* bounded: the writer runs up to 3000 batches or 6 s */
  uint64_t deadline = it_now_ms() + 6000;
  int st = 0, reaped = 0;
  while (!(reaped = waitpid(writer, &st, WNOHANG) == writer) &&
         it_now_ms() < deadline)
    it_sleep_ms(20);
  atomic_store(&sh->stop, 1);
  if (reaped)
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                  "batch writer failed (status 0x%x)", st);
  else
    it_wait_ok(writer, "batch writer");
  for (int i = 0; i < NREADERS; i++) it_wait_ok(readers[i], "batch reader");
  uint64_t gen = atomic_load(&sh->last_gen);
  fprintf(stderr, "batch_atomic_readers: %" PRIu64 " batches; reader "
          "snapshots %" PRIu64 "/%" PRIu64 ", distinct generations seen %"
          PRIu64 "/%" PRIu64 "\n",
          gen, (uint64_t)sh->iters[0], (uint64_t)sh->iters[1],
          (uint64_t)sh->distinct[0], (uint64_t)sh->distinct[1]);
  ck_assert_uint_ge(gen, 100);
  /* the readers really overlapped with the writer */
  for (int i = 0; i < NREADERS; i++)
    ck_assert_msg(sh->distinct[i] >= 10,
                  "reader %d saw only %" PRIu64 " generations", i,
                  (uint64_t)sh->distinct[i]);
}
END_TEST

/* ----------------------------------------------------------------- wait -- */

typedef struct waitbox {
  atomic_int ready;
  atomic_uint_fast64_t woke_us;
  atomic_uint_fast64_t version;
  atomic_long cpu_us, nvcsw, nivcsw;
  atomic_int rc;
} waitbox;

static waitbox *wb;

typedef struct waitarg {
  const char *key;
  uint64_t after;
} waitarg;

static int waiter(void *arg) {
  waitarg *a = arg;
  shoal *c = NULL;
  IT_CHK_RC(c, it_open(&c, 0), 0);
  struct rusage r0, r1;
  getrusage(RUSAGE_SELF, &r0);
  atomic_store(&wb->ready, 1);
  uint64_t ver = 0;
  int rc = shoal_wait(c, a->key, strlen(a->key), a->after, 10000, &ver);
  uint64_t t = it_now_us();
  getrusage(RUSAGE_SELF, &r1);
  atomic_store(&wb->woke_us, t);
  atomic_store(&wb->version, ver);
  atomic_store(&wb->rc, rc);
  long cpu = (r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) * 1000000L +
             (r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) +
             (r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) * 1000000L +
             (r1.ru_stime.tv_usec - r0.ru_stime.tv_usec);
  atomic_store(&wb->cpu_us, cpu);
  atomic_store(&wb->nvcsw, r1.ru_nvcsw - r0.ru_nvcsw);
  atomic_store(&wb->nivcsw, r1.ru_nivcsw - r0.ru_nivcsw);
  shoal_close(c);
  return 0;
}

/* Start a waiter on @key after @after, let it sleep @idle_ms, then run
 * @act; returns the wake latency in us after @act's acknowledgement. */
static uint64_t wake_once(shoal *c, const char *key, uint64_t after,
                          unsigned idle_ms, int (*act)(shoal *, const char *,
                                                       uint64_t *),
                          uint64_t *acked) {
  memset(wb, 0, sizeof *wb);
  waitarg a = {key, after};
  pid_t pid = it_fork(waiter, &a, 30);
  uint64_t deadline = it_now_ms() + 10000;
  while (!atomic_load(&wb->ready) && it_now_ms() < deadline) it_sleep_ms(1);
  ck_assert_msg(atomic_load(&wb->ready), "waiter did not start");
  it_sleep_ms(idle_ms); /* the waiter is asleep in the futex by now */
  uint64_t t0 = it_now_us();
  IT_OK(c, act(c, key, acked));
  it_wait_ok(pid, "waiter");
  ck_assert_msg(wb->rc == 0, "shoal_wait returned %s", shoal_errname(wb->rc));
  ck_assert_uint_ge(wb->woke_us, t0);
  return wb->woke_us - t0;
}

static int act_put(shoal *c, const char *key, uint64_t *ver) {
  return shoal_put(c, key, strlen(key), "new", 3, ver);
}

static int act_del(shoal *c, const char *key, uint64_t *ver) {
  *ver = 0;
  return shoal_del(c, key, strlen(key));
}

static int act_batch(shoal *c, const char *key, uint64_t *ver) {
  shoal_batch *b;
  int rc = shoal_batch_new(c, &b);
  if (rc) return rc;
  shoal_batch_put(b, "unrelated", 9, "x", 1, 0);
  shoal_batch_put(b, key, strlen(key), "batched", 7, 0);
  rc = shoal_batch_commit(c, b, ver);
  shoal_batch_free(b);
  return rc;
}

/* Writes to 50 other keys over ~250 ms. */
static int other_writer(void *arg) {
  (void)arg;
  shoal *c = NULL;
  IT_CHK_RC(c, it_open(&c, SHOAL_OPEN_NO_SLOT), 0);
  char key[16];
  for (int i = 0; i < 50; i++) {
    int n = snprintf(key, sizeof key, "other%d", i);
    IT_CHK_RC(c, shoal_put(c, key, (size_t)n, "x", 1, NULL), 0);
    it_sleep_ms(5);
  }
  shoal_close(c);
  return 0;
}

START_TEST(wait_woken_by_put) {
  it_start_broker(NULL);
  wb = it_shared(sizeof *wb);
  shoal *c = it_open_ok();
  uint64_t v1 = 0, acked = 0;
  IT_OK(c, shoal_put(c, "w", 1, "old", 3, &v1));

  /* 1. a put of the key, after the waiter idled 500 ms in the futex */
  uint64_t lat = wake_once(c, "w", v1, 500, act_put, &acked);
  fprintf(stderr, "wait: woken %" PRIu64 " us after the put; waiter used %ld "
          "us CPU, %ld voluntary + %ld involuntary switches while waiting\n",
          lat, (long)wb->cpu_us, (long)wb->nvcsw, (long)wb->nivcsw);
  ck_assert_msg(lat < 1000000, "woken %" PRIu64 " us after the put", lat);
  ck_assert_uint_eq(wb->version, acked);
  /* no polling: 500+ ms asleep cost almost no CPU and few wake-ups (a 1 ms
   * poll loop would show ~500 switches and far more CPU) */
  ck_assert_msg(wb->cpu_us < 50000, "waiter burnt %ld us of CPU while "
                "waiting: polling?", (long)wb->cpu_us);
  ck_assert_msg(wb->nvcsw < 50, "waiter woke %ld times while waiting: "
                "polling?", (long)wb->nvcsw);

  /* 2. a key that does not exist yet, created by a batch */
  lat = wake_once(c, "w-new", 0, 200, act_batch, &acked);
  ck_assert_msg(lat < 1000000, "batch wake after %" PRIu64 " us", lat);
  ck_assert_uint_eq(wb->version, acked);

  /* 3. writes to other keys do not end the wait: it times out */
  memset(wb, 0, sizeof *wb);
  IT_OK(c, shoal_put(c, "w2", 2, "a", 1, &v1));
  pid_t busy = it_fork(other_writer, NULL, 30);
  uint64_t t0 = it_now_ms(), ver = 0;
  IT_RC(c, shoal_wait(c, "w2", 2, v1, 300, &ver), SHOAL_ETIMEOUT);
  ck_assert_uint_ge(it_now_ms() - t0, 290);
  it_wait_ok(busy, "writer of other keys");

  /* 4. a delete wakes the waiter, with version 0 (shoal.h: "0: deleted") */
  uint64_t cur = 0;
  {
    shoal_val v;
    IT_OK(c, shoal_read_begin(c));
    IT_OK(c, shoal_get(c, "w", 1, &v));
    cur = v.version;
    shoal_read_end(c);
  }
  lat = wake_once(c, "w", cur, 200, act_del, &acked);
  ck_assert_msg(lat < 1000000, "delete wake after %" PRIu64 " us", lat);
  ck_assert_msg(wb->version == 0, "shoal_wait woken by a delete gave version %"
                PRIu64 ", shoal.h promises 0 (deleted)", (uint64_t)wb->version);

  shoal_close(c);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("integration.concurrency");
  TCase *tc = it_tcase("concurrency", 60);
  tcase_add_test(tc, pipeline_10k);
  tcase_add_test(tc, batch_atomic_readers);
  tcase_add_test(tc, wait_woken_by_put);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return it_run_suite(suite()); }
