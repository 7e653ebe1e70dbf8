/*
 * it_restart.c - broker restarts while clients read (issue 3, "Must show"
 * 1): reader processes loop get/get_many/scan on their open handles; the
 * broker is stopped with SIGTERM (must exit 0 and remove its socket) and
 * restarted, then killed with SIGKILL and restarted. Readers must never see
 * an error or a torn value, not even while no broker runs; a writer handle
 * opened before the first stop gets SHOAL_EUNAVAIL while the broker is down
 * and writes again once a new broker is up; every write acknowledged before
 * a stop is there after the restart, at its acknowledged version.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "itest.h"

enum { NFIXED = 200, NREADERS = 2, NEXTRA = 400, NSTREAM = 200000 };

typedef struct shared {
  atomic_int stop;
  atomic_int down; /* 1 while no broker runs */
  atomic_uint_fast64_t hot_gen; /* last acknowledged generation of "hot" */
  atomic_uint_fast64_t iters[NREADERS];
  atomic_uint_fast64_t down_iters[NREADERS];
  atomic_uint_fast64_t scans[NREADERS];
  /* the streaming writer process: s/NNNNNN keys, versions as acknowledged */
  atomic_int stop_stream;
  atomic_uint_fast64_t stream_acked; /* entries [0, acked) are acknowledged */
  atomic_uint_fast64_t stream_unavail; /* EUNAVAIL/ETIMEOUT answers it got */
  uint64_t stream_ver[NSTREAM];
} shared;

static shared *sh;

static size_t fixed_len(int i) { return 16 + (size_t)(i * 37) % 3000; }

static void fixed_key(char *buf, size_t cap, int i) {
  snprintf(buf, cap, "r/%03d", i);
}

typedef struct scan_ctx {
  int n;
  int bad;
  char badkey[32];
} scan_ctx;

static int scan_check(void *arg, const void *key, size_t klen,
                      const shoal_val *v) {
  scan_ctx *s = arg;
  char k[32];
  if (klen >= sizeof k) {
    s->bad++;
    return 0;
  }
  memcpy(k, key, klen);
  k[klen] = 0;
  uint64_t gen;
  if (!it_value_check(v->data, v->len, k, &gen) || gen != 1) {
    s->bad++;
    snprintf(s->badkey, sizeof s->badkey, "%s", k);
  }
  s->n++;
  return 0;
}

static int reader(void *arg) {
  int id = *(int *)arg;
  shoal *c = NULL;
  IT_CHK_RC(c, it_open(&c, 0), 0);
  uint64_t iters = 0, down_iters = 0, scans = 0, last_hot = 0;
  unsigned seed = (unsigned)getpid();
  char key[32];
  while (!atomic_load(&sh->stop)) {
    int down0 = atomic_load(&sh->down);
    IT_CHK_RC(c, shoal_read_begin(c), 0);
    /* the hot key: self-checking, its generation never goes back */
    shoal_val v;
    IT_CHK_RC(c, shoal_get(c, "hot", 3, &v), 0);
    uint64_t gen = 0;
    IT_CHK(it_value_check(v.data, v.len, "hot", &gen),
           "torn value of hot (len %zu)", v.len);
    IT_CHK(gen >= last_hot, "hot went back from gen %" PRIu64 " to %" PRIu64,
           last_hot, gen);
    last_hot = gen;
    /* a few fixed keys */
    for (int j = 0; j < 8; j++) {
      int i = (int)(rand_r(&seed) % NFIXED);
      fixed_key(key, sizeof key, i);
      IT_CHK_RC(c, shoal_get(c, key, strlen(key), &v), 0);
      uint64_t g = 0;
      IT_CHK(it_value_check(v.data, v.len, key, &g) && g == 1 &&
                 v.len == fixed_len(i),
             "%s: torn or wrong value", key);
    }
    /* now and then the whole range */
    if (iters % 16 == 0) {
      scan_ctx s;
      memset(&s, 0, sizeof s);
      IT_CHK_RC(c, shoal_scan_prefix(c, "r/", 2, scan_check, &s), 0);
      IT_CHK(s.n == NFIXED && s.bad == 0, "scan: %d keys, %d bad (%s)", s.n,
             s.bad, s.badkey);
      scans++;
    }
    shoal_read_end(c);
    iters++;
    if (down0 && atomic_load(&sh->down)) down_iters++;
    if (iters % 64 == 0) {
      atomic_store(&sh->iters[id], iters);
      atomic_store(&sh->down_iters[id], down_iters);
    }
  }
  atomic_store(&sh->iters[id], iters);
  atomic_store(&sh->down_iters[id], down_iters);
  atomic_store(&sh->scans[id], scans);
  shoal_close(c);
  return 0;
}

/* A writer process that never stops writing: through the SIGTERM drain and
 * the SIGKILL. A write answered EUNAVAIL may or may not have been applied
 * (libshoal's contract); it is retried, and only acknowledged versions are
 * recorded. */
static void stream_key(char *buf, size_t cap, uint64_t n) {
  snprintf(buf, cap, "s/%06" PRIu64, n);
}

static int stream_writer(void *arg) {
  (void)arg;
  shoal *c = NULL;
  IT_CHK_RC(c, it_open_ct(&c, SHOAL_OPEN_NO_SLOT, 300), 0);
  char key[32], val[128];
  uint64_t n = 0;
  while (!atomic_load(&sh->stop_stream) && n < NSTREAM) {
    stream_key(key, sizeof key, n);
    size_t len = 16 + n % 100;
    it_value_make(val, len, key, n);
    uint64_t ver = 0;
    int rc = shoal_put(c, key, strlen(key), val, len, &ver);
    /* EUNAVAIL: no broker, or the connection died with the put in flight;
     * ETIMEOUT: the restarted broker did not answer the reconnect's Hello
     * within the 300 ms connect timeout (it is still recovering; slow
     * under ASan), so the put was never sent. Both are retried. */
    if (rc == SHOAL_EUNAVAIL || rc == SHOAL_ETIMEOUT) {
      atomic_fetch_add(&sh->stream_unavail, 1);
      continue;
    }
    IT_CHK_RC(c, rc, 0);
    sh->stream_ver[n] = ver;
    atomic_store(&sh->stream_acked, n + 1); /* release: ver is visible */
    n++;
  }
  shoal_close(c);
  return 0;
}

/* Every streamed write acknowledged so far is there at its version. */
static void verify_stream(shoal *c, uint64_t upto) {
  char key[32];
  IT_OK(c, shoal_read_begin(c));
  for (uint64_t n = 0; n < upto; n++) {
    stream_key(key, sizeof key, n);
    shoal_val v;
    int rc = shoal_get(c, key, strlen(key), &v);
    ck_assert_msg(rc == 0, "acknowledged %s (version %" PRIu64 ") lost: %s",
                  key, sh->stream_ver[n], shoal_errname(rc));
    uint64_t g = 0;
    ck_assert_msg(it_value_check(v.data, v.len, key, &g) && g == n,
                  "%s: wrong value", key);
    /* a write answered EUNAVAIL but applied after all was retried: the
     * retry's version is the one recorded and the newest */
    ck_assert_msg(v.version == sh->stream_ver[n],
                  "%s: version %" PRIu64 ", acknowledged %" PRIu64, key,
                  v.version, sh->stream_ver[n]);
  }
  shoal_read_end(c);
}

/* Acknowledged writes: key -> version. */
typedef struct acked {
  char key[32];
  uint64_t version;
  uint64_t gen;
  size_t len;
} acked;

static acked extra[NEXTRA];
static int nextra;

static void put_hot(shoal *w) {
  char val[256];
  uint64_t gen = atomic_load(&sh->hot_gen) + 1;
  size_t len = 16 + (size_t)(gen % 200);
  it_value_make(val, len, "hot", gen);
  IT_OK(w, shoal_put(w, "hot", 3, val, len, NULL));
  atomic_store(&sh->hot_gen, gen);
}

static void put_extra(shoal *w, int phase) {
  ck_assert_int_lt(nextra, NEXTRA);
  acked *a = &extra[nextra];
  snprintf(a->key, sizeof a->key, "x/%d/%03d", phase, nextra);
  a->gen = (uint64_t)nextra + 100;
  a->len = 32 + (size_t)nextra % 500;
  char val[600];
  it_value_make(val, a->len, a->key, a->gen);
  IT_OK(w, shoal_put(w, a->key, strlen(a->key), val, a->len, &a->version));
  nextra++;
}

/* Every acknowledged write is there at its acknowledged version. */
static void verify_acked(shoal *c) {
  IT_OK(c, shoal_read_begin(c));
  for (int i = 0; i < nextra; i++) {
    shoal_val v;
    int rc = shoal_get(c, extra[i].key, strlen(extra[i].key), &v);
    ck_assert_msg(rc == 0, "acknowledged %s (version %" PRIu64 ") lost: %s",
                  extra[i].key, extra[i].version, shoal_errname(rc));
    uint64_t g = 0;
    ck_assert_msg(it_value_check(v.data, v.len, extra[i].key, &g) &&
                      g == extra[i].gen && v.len == extra[i].len,
                  "%s: wrong value after restart", extra[i].key);
    ck_assert_msg(v.version == extra[i].version,
                  "%s: version %" PRIu64 ", acknowledged %" PRIu64,
                  extra[i].key, v.version, extra[i].version);
  }
  shoal_val v;
  IT_OK(c, shoal_get(c, "hot", 3, &v));
  uint64_t g = 0;
  ck_assert(it_value_check(v.data, v.len, "hot", &g));
  ck_assert_msg(g == atomic_load(&sh->hot_gen),
                "hot is at gen %" PRIu64 ", acknowledged %" PRIu64, g,
                (uint64_t)atomic_load(&sh->hot_gen));
  shoal_read_end(c);
}

static uint64_t total_down_iters(void) {
  uint64_t n = UINT64_MAX;
  for (int i = 0; i < NREADERS; i++) {
    uint64_t d = atomic_load(&sh->down_iters[i]);
    if (d < n) n = d;
  }
  return n;
}

START_TEST(restart_while_reading) {
  sh = it_shared(sizeof *sh);
  it_start_broker(NULL);
  /* the writer's connect timeout also bounds how long a write retries
   * while no broker runs: 300 ms keeps the down phases short */
  shoal *w = NULL;
  IT_OK(NULL, it_open_ct(&w, 0, 300));
  char key[32], val[4096];
  for (int i = 0; i < NFIXED; i++) {
    fixed_key(key, sizeof key, i);
    it_value_make(val, fixed_len(i), key, 1);
    IT_OK(w, shoal_put(w, key, strlen(key), val, fixed_len(i), NULL));
  }
  put_hot(w);

  int ids[NREADERS];
  pid_t readers[NREADERS];
  for (int i = 0; i < NREADERS; i++) {
    ids[i] = i;
    readers[i] = it_fork(reader, &ids[i], 90);
  }

  pid_t streamer = it_fork(stream_writer, NULL, 90);

  const int sigs[2] = {SIGTERM, SIGKILL};
  for (int phase = 0; phase < 2; phase++) {
    /* the broker is up: writes, while the readers read */
    for (int i = 0; i < 60; i++) {
      put_hot(w);
      if (i % 2 == 0) put_extra(w, phase);
      it_sleep_ms(2);
    }
    /* stop it, with the streaming writer in full flow */
    uint64_t a0 = atomic_load(&sh->stream_acked);
    while (atomic_load(&sh->stream_acked) < a0 + 100) it_sleep_ms(1);
    atomic_store(&sh->down, 1);
    int st = it_stop_broker(sigs[phase]);
    uint64_t acked_before = atomic_load(&sh->stream_acked);
    if (sigs[phase] == SIGTERM) {
      ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                    "SIGTERM: shoald status 0x%x, expected exit 0", st);
      struct stat sb;
      ck_assert_msg(stat(it_sock, &sb) != 0 && errno == ENOENT,
                    "SIGTERM: shoald left its socket %s behind", it_sock);
    } else {
      ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    }
    /* no broker: writes fail with EUNAVAIL, reads go on */
    IT_RC(w, shoal_put(w, "during", 6, "x", 1, NULL), SHOAL_EUNAVAIL);
    uint64_t d0 = total_down_iters(), t0 = it_now_ms();
    while (total_down_iters() < d0 + 50 && it_now_ms() - t0 < 5000)
      it_sleep_ms(10);
    it_sleep_ms(100);
    ck_assert_msg(total_down_iters() >= d0 + 50,
                  "readers made no progress while the broker was down");
    IT_RC(w, shoal_put(w, "during", 6, "x", 1, NULL), SHOAL_EUNAVAIL);

    /* a new broker on the same store */
    it_start_broker(NULL);
    atomic_store(&sh->down, 0);
    /* the old handle writes again (EUNAVAIL while it reconnects, or
     * ETIMEOUT when the new broker, busy starting beside the spinning
     * readers, answers the reconnect's Hello after the 300 ms connect
     * timeout, are allowed; nothing else) */
    int rc = SHOAL_EUNAVAIL;
    uint64_t deadline = it_now_ms() + 5000;
    while ((rc == SHOAL_EUNAVAIL || rc == SHOAL_ETIMEOUT) &&
           it_now_ms() < deadline) {
      rc = shoal_put(w, "resumed", 7, "y", 1, NULL);
      if (rc == SHOAL_EUNAVAIL || rc == SHOAL_ETIMEOUT) it_sleep_ms(20);
    }
    ck_assert_msg(rc == 0, "put after the restart: %s (%s)", shoal_errname(rc),
                  shoal_last_error(w));
    verify_acked(w);
    /* a fresh handle sees the same, and every streamed write acknowledged
     * before the stop */
    shoal *c = it_open_ok();
    verify_acked(c);
    verify_stream(c, acked_before);
    shoal_close(c);
    /* the stream goes on through the new broker */
    uint64_t a1 = atomic_load(&sh->stream_acked);
    deadline = it_now_ms() + 5000;
    while (atomic_load(&sh->stream_acked) < a1 + 50 && it_now_ms() < deadline)
      it_sleep_ms(1);
    ck_assert_msg(atomic_load(&sh->stream_acked) >= a1 + 50,
                  "the streaming writer did not resume after the restart");
  }
  atomic_store(&sh->stop_stream, 1);
  it_wait_ok(streamer, "streaming writer");
  for (int i = 0; i < 20; i++) put_hot(w);

  atomic_store(&sh->stop, 1);
  for (int i = 0; i < NREADERS; i++) it_wait_ok(readers[i], "reader");
  for (int i = 0; i < NREADERS; i++) {
    fprintf(stderr, "restart: reader %d: %" PRIu64 " snapshots (%" PRIu64
            " while the broker was down), %" PRIu64 " full scans\n",
            i, (uint64_t)sh->iters[i], (uint64_t)sh->down_iters[i],
            (uint64_t)sh->scans[i]);
    ck_assert_uint_gt(sh->scans[i], 0);
  }
  verify_acked(w);
  fprintf(stderr, "restart: streaming writer: %" PRIu64 " acknowledged puts, "
          "%" PRIu64 " EUNAVAIL answers while the broker was down\n",
          (uint64_t)sh->stream_acked, (uint64_t)sh->stream_unavail);
  shoal *c = it_open_ok();
  verify_stream(c, atomic_load(&sh->stream_acked));
  shoal_close(c);
  shoal_close(w);
  int st = it_stop_broker(SIGTERM);
  ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "final SIGTERM: 0x%x",
                st);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("integration.restart");
  TCase *tc = it_tcase("restart", 60);
  tcase_add_test(tc, restart_while_reading);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return it_run_suite(suite()); }
