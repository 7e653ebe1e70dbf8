/*
 * it_api.c - every request type and every error code a client can cause,
 * through the public C API against a real shoald (issue 3, "Must show" 1).
 *
 * Request types: put/put_ttl, get/get_copy/get_many/scan/scan_prefix, del,
 * cas, batch, stats, ping (broker-side Get/Scan are in it_proto.c, which
 * speaks the protocol directly). Error codes: ETOOBIG, ENOTFOUND,
 * ECONFLICT, ENOSECTION, EFORKED, EUNAVAIL, ETIMEOUT, EINVAL, ENOSPC here;
 * EDENIED in it_access.c, EPROTOCOL in it_proto.c.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "itest-raw.h"
#include "itest.h"

static uint64_t realtime_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

#define S(lit) lit, sizeof(lit) - 1

/* Assert @key holds exactly @val (len @vlen) at @version (0: any). */
static void assert_value(shoal *c, const char *key, const void *val,
                         size_t vlen, uint64_t version) {
  shoal_val v;
  IT_OK(c, shoal_read_begin(c));
  int rc = shoal_get(c, key, strlen(key), &v);
  ck_assert_msg(rc == 0, "get %s: %s", key, shoal_errname(rc));
  ck_assert_msg(v.len == vlen && memcmp(v.data, val, vlen) == 0,
                "get %s: value differs (len %zu, expected %zu)", key, v.len,
                vlen);
  if (version)
    ck_assert_msg(v.version == version,
                  "get %s: version %" PRIu64 ", expected %" PRIu64, key,
                  v.version, version);
  shoal_read_end(c);
}

static void assert_absent(shoal *c, const char *key) {
  shoal_val v;
  IT_OK(c, shoal_read_begin(c));
  IT_RC(c, shoal_get(c, key, strlen(key), &v), SHOAL_ENOTFOUND);
  shoal_read_end(c);
}

/* ------------------------------------------------------------ put/get --- */

START_TEST(put_get) {
  it_start_broker(NULL);
  shoal *c = it_open_ok();
  uint64_t v1 = 0, v2 = 0;
  IT_OK(c, shoal_put(c, S("alpha"), S("one"), &v1));
  ck_assert_uint_gt(v1, 0);
  assert_value(c, "alpha", S("one"), v1);

  /* zero-copy view: version and no TTL */
  shoal_val v;
  IT_OK(c, shoal_read_begin(c));
  IT_OK(c, shoal_get(c, S("alpha"), &v));
  ck_assert_uint_eq(v.expires_at, 0);
  shoal_read_end(c);

  /* overwrite: a newer version, the new bytes */
  IT_OK(c, shoal_put(c, S("alpha"), S("two!"), &v2));
  ck_assert_uint_gt(v2, v1);
  assert_value(c, "alpha", S("two!"), v2);

  /* get_copy outside a section, and its short-buffer answer */
  char buf[16];
  size_t len = 0;
  uint64_t ver = 0;
  IT_OK(c, shoal_get_copy(c, S("alpha"), buf, sizeof buf, &len, &ver));
  ck_assert_uint_eq(len, 4);
  ck_assert_uint_eq(ver, v2);
  ck_assert(memcmp(buf, "two!", 4) == 0);
  len = 0;
  IT_RC(c, shoal_get_copy(c, S("alpha"), buf, 2, &len, NULL), SHOAL_ETOOBIG);
  ck_assert_uint_eq(len, 4);
  IT_RC(c, shoal_get_copy(c, S("nope"), buf, sizeof buf, &len, &ver),
        SHOAL_ENOTFOUND);

  /* empty value, binary key */
  IT_OK(c, shoal_put(c, "\0\xff\x01", 3, "", 0, &ver));
  shoal_val e;
  IT_OK(c, shoal_read_begin(c));
  IT_OK(c, shoal_get(c, "\0\xff\x01", 3, &e));
  ck_assert_uint_eq(e.len, 0);
  ck_assert_uint_eq(e.version, ver);
  shoal_read_end(c);

  /* a put is visible to another process right after the ack */
  shoal *c2 = it_open_ok();
  assert_value(c2, "alpha", S("two!"), v2);
  shoal_close(c2);
  shoal_close(c);
}
END_TEST

START_TEST(put_ttl) {
  it_start_broker(NULL);
  shoal *c = it_open_ok();
  uint64_t ver = 0;
  uint64_t t0 = realtime_ms();
  IT_OK(c, shoal_put_ttl(c, S("ephemeral"), S("soon gone"), 400, &ver));
  IT_OK(c, shoal_put(c, S("durable"), S("stays"), NULL));

  shoal_val v;
  IT_OK(c, shoal_read_begin(c));
  IT_OK(c, shoal_get(c, S("ephemeral"), &v));
  ck_assert_uint_eq(v.version, ver);
  ck_assert_msg(v.expires_at >= t0 + 400 - 50 && v.expires_at <= t0 + 400 + 2000,
                "expires_at %" PRIu64 " not ~ now %" PRIu64 " + 400 ms",
                v.expires_at, t0);
  shoal_read_end(c);

  /* the broker's Get agrees before expiry */
  int fd = it_raw_connect(NULL);
  ck_assert_int_eq(it_raw_hello(fd), 0);
  Shoal__Get g = SHOAL__GET__INIT;
  g.has_key = 1;
  g.key.data = (uint8_t *)"ephemeral";
  g.key.len = 9;
  Shoal__Request req = SHOAL__REQUEST__INIT;
  req.has_id = 1;
  req.id = 2;
  req.body_case = SHOAL__REQUEST__BODY_GET;
  req.get = &g;
  Shoal__Response *r = it_raw_call(fd, &req);
  ck_assert_int_eq(r->status, 0);
  ck_assert_int_eq(r->body_case, SHOAL__RESPONSE__BODY_GET);
  ck_assert_uint_eq(r->get->value.len, 9);
  ck_assert_uint_eq(r->get->expires_at_ms, v.expires_at);
  shoal__response__free_unpacked(r, NULL);

  /* wait past the deadline: absent for direct gets, get_copy, scan and
   * the broker's Get, at once (readers treat expired as absent) */
  while (realtime_ms() <= v.expires_at + 20) it_sleep_ms(20);
  assert_absent(c, "ephemeral");
  char buf[32];
  IT_RC(c, shoal_get_copy(c, S("ephemeral"), buf, sizeof buf, NULL, NULL),
        SHOAL_ENOTFOUND);
  req.id = 3;
  r = it_raw_call(fd, &req);
  ck_assert_msg(r->status == SHOAL_ENOTFOUND, "broker Get after TTL: %s",
                shoal_errname(r->status));
  shoal__response__free_unpacked(r, NULL);
  close(fd);
  assert_value(c, "durable", S("stays"), 0);

  /* the sweeper removes it for real: keys drops to 1 within 5 s */
  shoal_stats st;
  uint64_t deadline = it_now_ms() + 5000;
  for (;;) {
    IT_OK(c, shoal_stats_get(c, &st));
    if (st.keys == 1 || it_now_ms() > deadline) break;
    it_sleep_ms(50);
  }
  ck_assert_msg(st.keys == 1, "keys %" PRIu64 " 5 s after the TTL: the "
                "expired key was never swept", st.keys);
  shoal_close(c);
}
END_TEST

START_TEST(get_many) {
  it_start_broker(NULL);
  shoal *c = it_open_ok();
  uint64_t va, vb;
  IT_OK(c, shoal_put(c, S("a"), S("AAA"), &va));
  IT_OK(c, shoal_put(c, S("b"), S("BB"), &vb));
  shoal_key keys[3] = {{"a", 1}, {"missing", 7}, {"b", 1}};
  shoal_val out[3];
  int status[3];
  memset(out, 0, sizeof out);
  IT_OK(c, shoal_read_begin(c));
  int n = shoal_get_many(c, 3, keys, out, status);
  ck_assert_int_eq(n, 2);
  ck_assert_int_eq(status[0], 0);
  ck_assert_int_eq(status[1], SHOAL_ENOTFOUND);
  ck_assert_int_eq(status[2], 0);
  ck_assert(out[0].len == 3 && memcmp(out[0].data, "AAA", 3) == 0);
  ck_assert_uint_eq(out[0].version, va);
  ck_assert(out[2].len == 2 && memcmp(out[2].data, "BB", 2) == 0);
  ck_assert_uint_eq(out[2].version, vb);
  shoal_read_end(c);
  shoal_close(c);
}
END_TEST

typedef struct collect {
  int n;
  char keys[64][32];
  int stop_after; /* 0: never */
} collect;

static int collect_fn(void *arg, const void *key, size_t klen,
                      const shoal_val *val) {
  collect *s = arg;
  (void)val;
  if (s->n < 64 && klen < 32) {
    memcpy(s->keys[s->n], key, klen);
    s->keys[s->n][klen] = 0;
  }
  s->n++;
  if (s->stop_after && s->n >= s->stop_after) return 42;
  return 0;
}

START_TEST(scan) {
  it_start_broker(NULL);
  shoal *c = it_open_ok();
  const char *keys[] = {"s/3", "s/1", "t/1", "s/5", "s/2", "s/4", "r/9"};
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
    IT_OK(c, shoal_put(c, keys[i], 3, keys[i], 3, NULL));

  collect s;
  memset(&s, 0, sizeof s);
  IT_OK(c, shoal_scan(c, S("s/2"), S("s/4"), collect_fn, &s));
  ck_assert_int_eq(s.n, 2);
  ck_assert_str_eq(s.keys[0], "s/2");
  ck_assert_str_eq(s.keys[1], "s/3");

  memset(&s, 0, sizeof s);
  IT_OK(c, shoal_scan(c, S("s/4"), NULL, 0, collect_fn, &s));
  ck_assert_int_eq(s.n, 3);
  ck_assert_str_eq(s.keys[0], "s/4");
  ck_assert_str_eq(s.keys[2], "t/1");

  memset(&s, 0, sizeof s);
  IT_OK(c, shoal_scan_prefix(c, S("s/"), collect_fn, &s));
  ck_assert_int_eq(s.n, 5);
  for (int i = 0; i < 5; i++) {
    char want[8];
    snprintf(want, sizeof want, "s/%d", i + 1);
    ck_assert_str_eq(s.keys[i], want);
  }

  /* the callback stops the scan: its value comes back */
  memset(&s, 0, sizeof s);
  s.stop_after = 2;
  ck_assert_int_eq(shoal_scan_prefix(c, S("s/"), collect_fn, &s), 42);
  ck_assert_int_eq(s.n, 2);

  /* inside a section the scan sees that snapshot, not later writes */
  IT_OK(c, shoal_read_begin(c));
  shoal *w = it_open_ok();
  IT_OK(w, shoal_put(w, S("s/6"), S("new"), NULL));
  IT_OK(w, shoal_del(w, S("s/1")));
  memset(&s, 0, sizeof s);
  IT_OK(c, shoal_scan_prefix(c, S("s/"), collect_fn, &s));
  ck_assert_int_eq(s.n, 5);
  ck_assert_str_eq(s.keys[0], "s/1");
  shoal_read_end(c);
  memset(&s, 0, sizeof s);
  IT_OK(c, shoal_scan_prefix(c, S("s/"), collect_fn, &s));
  ck_assert_int_eq(s.n, 5);
  ck_assert_str_eq(s.keys[0], "s/2");
  ck_assert_str_eq(s.keys[4], "s/6");
  shoal_close(w);
  shoal_close(c);
}
END_TEST

START_TEST(del) {
  it_start_broker(NULL);
  shoal *c = it_open_ok();
  IT_OK(c, shoal_put(c, S("gone"), S("x"), NULL));
  IT_OK(c, shoal_del(c, S("gone")));
  assert_absent(c, "gone");
  IT_RC(c, shoal_del(c, S("gone")), SHOAL_ENOTFOUND);
  IT_RC(c, shoal_del(c, S("never-there")), SHOAL_ENOTFOUND);
  /* a failed delete wrote nothing: the commit sequence did not move */
  shoal_stats a, b;
  IT_OK(c, shoal_stats_get(c, &a));
  IT_RC(c, shoal_del(c, S("never-there")), SHOAL_ENOTFOUND);
  IT_OK(c, shoal_stats_get(c, &b));
  ck_assert_uint_eq(a.commit_seq, b.commit_seq);
  shoal_close(c);
}
END_TEST

START_TEST(cas) {
  it_start_broker(NULL);
  shoal *c = it_open_ok();
  uint64_t v1 = 0, v2 = 0, cur = 0;
  /* expect 0: create only if absent */
  IT_OK(c, shoal_cas(c, S("lock"), 0, S("owner-a"), &v1));
  ck_assert_uint_gt(v1, 0);
  IT_RC(c, shoal_cas(c, S("lock"), 0, S("owner-b"), &cur), SHOAL_ECONFLICT);
  ck_assert_uint_eq(cur, v1);
  assert_value(c, "lock", S("owner-a"), v1);
  /* the right version wins, a stale one conflicts with the current */
  IT_OK(c, shoal_cas(c, S("lock"), v1, S("owner-c"), &v2));
  ck_assert_uint_gt(v2, v1);
  cur = 0;
  IT_RC(c, shoal_cas(c, S("lock"), v1, S("owner-d"), &cur), SHOAL_ECONFLICT);
  ck_assert_uint_eq(cur, v2);
  assert_value(c, "lock", S("owner-c"), v2);
  /* an absent key with a non-zero expectation: current version 0 */
  cur = 99;
  IT_RC(c, shoal_cas(c, S("nokey"), 5, S("x"), &cur), SHOAL_ECONFLICT);
  ck_assert_uint_eq(cur, 0);
  assert_absent(c, "nokey");
  shoal_close(c);
}
END_TEST

START_TEST(batch) {
  it_start_broker(NULL);
  shoal *c = it_open_ok();
  uint64_t vc;
  IT_OK(c, shoal_put(c, S("c"), S("old"), &vc));

  shoal_batch *b = NULL;
  IT_OK(c, shoal_batch_new(c, &b));
  ck_assert_ptr_nonnull(b);
  IT_OK(c, shoal_batch_put(b, S("a"), S("A"), 0));
  IT_OK(c, shoal_batch_put(b, S("b"), S("B"), 0));
  IT_OK(c, shoal_batch_del(b, S("c")));
  IT_OK(c, shoal_batch_del_any(b, S("absent-is-fine")));
  IT_OK(c, shoal_batch_cas(b, S("d"), 0, S("D")));
  ck_assert_uint_eq(shoal_batch_len(b), 5);
  uint64_t seq = 0;
  IT_OK(c, shoal_batch_commit(c, b, &seq));
  ck_assert_uint_gt(seq, vc);
  ck_assert_int_eq(shoal_batch_failed(b), -1);
  /* one commit: every op carries the batch's version */
  assert_value(c, "a", S("A"), seq);
  assert_value(c, "b", S("B"), seq);
  assert_value(c, "d", S("D"), seq);
  assert_absent(c, "c");

  /* a failing op (index 1: delete of an absent key) applies nothing */
  shoal_stats before, after;
  IT_OK(c, shoal_stats_get(c, &before));
  shoal_batch_reset(b);
  ck_assert_uint_eq(shoal_batch_len(b), 0);
  IT_OK(c, shoal_batch_put(b, S("x"), S("X"), 0));
  IT_OK(c, shoal_batch_del(b, S("no-such-key")));
  IT_OK(c, shoal_batch_put(b, S("a"), S("changed"), 0));
  IT_RC(c, shoal_batch_commit(c, b, &seq), SHOAL_ENOTFOUND);
  ck_assert_int_eq(shoal_batch_failed(b), 1);
  assert_absent(c, "x");
  assert_value(c, "a", S("A"), 0);
  IT_OK(c, shoal_stats_get(c, &after));
  ck_assert_uint_eq(after.commit_seq, before.commit_seq);
  ck_assert_uint_eq(after.keys, before.keys);

  /* a CAS conflict at index 2 */
  shoal_batch_reset(b);
  IT_OK(c, shoal_batch_put(b, S("y"), S("Y"), 0));
  IT_OK(c, shoal_batch_put(b, S("a"), S("A2"), 0));
  IT_OK(c, shoal_batch_cas(b, S("d"), 1, S("D2"))); /* d is at seq, not 1 */
  IT_RC(c, shoal_batch_commit(c, b, NULL), SHOAL_ECONFLICT);
  ck_assert_int_eq(shoal_batch_failed(b), 2);
  assert_absent(c, "y");
  assert_value(c, "a", S("A"), 0);

  /* the batch stays valid: fix it and commit again */
  shoal_batch_reset(b);
  IT_OK(c, shoal_batch_put(b, S("y"), S("Y"), 0));
  IT_OK(c, shoal_batch_put(b, S("ttl"), S("T"), 60000));
  IT_OK(c, shoal_batch_commit(c, b, &seq));
  assert_value(c, "y", S("Y"), seq);
  shoal_val v;
  IT_OK(c, shoal_read_begin(c));
  IT_OK(c, shoal_get(c, S("ttl"), &v));
  ck_assert_uint_gt(v.expires_at, realtime_ms());
  shoal_read_end(c);
  shoal_batch_free(b);
  shoal_close(c);
}
END_TEST

START_TEST(stats_ping) {
  it_start_broker(NULL);
  shoal *c = it_open_ok();
  shoal_stats a, b;
  memset(&a, 0, sizeof a);
  IT_OK(c, shoal_stats_get(c, &a));
  ck_assert_int_eq(a.broker_pid, it_broker);
  ck_assert_uint_ge(a.connections, 1);
  ck_assert_uint_gt(a.size, 0);
  uint64_t puts0 = it_counter(a.requests, "put");
  uint64_t pings0 = it_counter(a.requests, "ping");
  uint64_t dels0 = it_counter(a.requests, "delete");
  uint64_t stats0 = it_counter(a.requests, "stats");
  ck_assert_msg(stats0 >= 1, "requests \"%s\": the stats request itself is "
                "not counted as \"stats\"", a.requests);
  uint64_t keys0 = a.keys, conns0 = a.connections;

  for (int i = 0; i < 3; i++) {
    char k[8];
    snprintf(k, sizeof k, "k%d", i);
    IT_OK(c, shoal_put(c, k, strlen(k), S("v"), NULL));
  }
  IT_OK(c, shoal_del(c, S("k0")));
  IT_OK(c, shoal_ping(c));
  IT_OK(c, shoal_ping(c));
  shoal *c2 = it_open_ok();
  IT_OK(c, shoal_stats_get(c, &b));
  ck_assert_uint_eq(b.keys, keys0 + 2);
  ck_assert_msg(it_counter(b.requests, "put") == puts0 + 3,
                "requests \"%s\": put should have moved by 3 from %" PRIu64,
                b.requests, puts0);
  ck_assert_msg(it_counter(b.requests, "ping") == pings0 + 2,
                "requests \"%s\": ping should have moved by 2", b.requests);
  ck_assert_msg(it_counter(b.requests, "delete") == dels0 + 1,
                "requests \"%s\": delete should have moved by 1", b.requests);
  ck_assert_uint_eq(b.connections, conns0 + 1);
  ck_assert_uint_ge(b.connections_total, a.connections_total + 1);
  ck_assert_uint_gt(b.commit_seq, a.commit_seq);
  ck_assert_uint_ge(b.commits, a.commits + 4);
  ck_assert_uint_gt(b.bytes_in, a.bytes_in);
  ck_assert_uint_ge(b.readers_claimed, 2); /* c and c2 each hold a slot */

  /* errors by code */
  IT_RC(c, shoal_del(c, S("nope")), SHOAL_ENOTFOUND);
  IT_OK(c, shoal_stats_get(c, &b));
  ck_assert_msg(it_counter(b.errors, "ENOTFOUND") +
                        it_counter(b.errors, "SHOAL_ENOTFOUND") >= 1,
                "errors \"%s\" does not count the ENOTFOUND", b.errors);

  /* closing a connection shows */
  shoal_close(c2);
  uint64_t deadline = it_now_ms() + 3000;
  do {
    IT_OK(c, shoal_stats_get(c, &b));
    if (b.connections == conns0) break;
    it_sleep_ms(10);
  } while (it_now_ms() < deadline);
  ck_assert_uint_eq(b.connections, conns0);
  shoal_close(c);
}
END_TEST

/* -------------------------------------------------------------- errors --- */

START_TEST(err_toobig) {
  /* a 1 MiB frame limit makes the value limit small enough to try */
  it_start_broker("--max-frame", "1048576", NULL);
  shoal *c = it_open_ok();
  size_t kmax = shoal_key_max(), vmax = shoal_value_max(c);
  ck_assert_uint_gt(kmax, 0);
  ck_assert_uint_gt(vmax, 0);
  ck_assert_uint_le(vmax, 1048576);
  ck_assert_uint_ge(shoal_value_max(NULL), vmax);

  char *key = malloc(kmax + 1);
  memset(key, 'k', kmax + 1);
  IT_OK(c, shoal_put(c, key, kmax, S("edge"), NULL));
  IT_RC(c, shoal_put(c, key, kmax + 1, S("x"), NULL), SHOAL_ETOOBIG);
  IT_RC(c, shoal_cas(c, key, kmax + 1, 0, S("x"), NULL), SHOAL_ETOOBIG);
  IT_RC(c, shoal_del(c, key, kmax + 1), SHOAL_ETOOBIG);
  shoal_val v;
  IT_OK(c, shoal_read_begin(c));
  IT_RC(c, shoal_get(c, key, kmax + 1, &v), SHOAL_ETOOBIG);
  IT_OK(c, shoal_get(c, key, kmax, &v));
  shoal_read_end(c);

  char *val = malloc(vmax + 1);
  memset(val, 'v', vmax + 1);
  uint64_t ver = 0;
  IT_OK(c, shoal_put(c, S("big"), val, vmax, &ver));
  IT_RC(c, shoal_put(c, S("big2"), val, vmax + 1, NULL), SHOAL_ETOOBIG);
  shoal_batch *b;
  IT_OK(c, shoal_batch_new(c, &b));
  int rc = shoal_batch_put(b, S("big3"), val, vmax + 1, 0);
  if (rc == 0) rc = shoal_batch_commit(c, b, NULL);
  ck_assert_msg(rc == SHOAL_ETOOBIG, "batch with an oversized value: %s",
                shoal_errname(rc));
  shoal_batch_free(b);
  /* the connection is still good and the big value intact */
  IT_OK(c, shoal_ping(c));
  IT_OK(c, shoal_read_begin(c));
  IT_OK(c, shoal_get(c, S("big"), &v));
  ck_assert_uint_eq(v.len, vmax);
  ck_assert_uint_eq(v.version, ver);
  ck_assert(memcmp(v.data, val, vmax) == 0);
  shoal_read_end(c);
  free(key);
  free(val);
  shoal_close(c);
}
END_TEST

START_TEST(err_enosection) {
  it_start_broker(NULL);
  shoal *c = it_open_ok();
  IT_OK(c, shoal_put(c, S("k"), S("v"), NULL));
  shoal_val v;
  IT_RC(c, shoal_get(c, S("k"), &v), SHOAL_ENOSECTION);
  shoal_key keys[1] = {{"k", 1}};
  int status[1];
  IT_RC(c, shoal_get_many(c, 1, keys, &v, status), SHOAL_ENOSECTION);
  /* after a begin/end pair the rule still holds */
  IT_OK(c, shoal_read_begin(c));
  IT_OK(c, shoal_read_begin(c)); /* nested */
  shoal_read_end(c);
  IT_OK(c, shoal_get(c, S("k"), &v));
  shoal_read_end(c);
  IT_RC(c, shoal_get(c, S("k"), &v), SHOAL_ENOSECTION);
  /* a handle without a reader slot cannot open a section at all */
  shoal *ns = NULL;
  IT_OK(ns, it_open(&ns, SHOAL_OPEN_NO_SLOT));
  IT_RC(ns, shoal_read_begin(ns), SHOAL_ENOREADERS);
  IT_OK(ns, shoal_put(ns, S("k2"), S("v"), NULL));
  shoal_close(ns);
  shoal_close(c);
}
END_TEST

static shoal *forked_parent_handle;

static int forked_child(void *arg) {
  (void)arg;
  shoal *p = forked_parent_handle;
  IT_CHK_RC(NULL, shoal_put(p, S("from-child"), S("x"), NULL), SHOAL_EFORKED);
  IT_CHK_RC(NULL, shoal_read_begin(p), SHOAL_EFORKED);
  char buf[8];
  IT_CHK_RC(NULL, shoal_get_copy(p, S("k"), buf, sizeof buf, NULL, NULL),
            SHOAL_EFORKED);
  IT_CHK_RC(NULL, shoal_ping(p), SHOAL_EFORKED);
  shoal_close(p); /* allowed: frees the child's copy only */
  /* the child's own handle works */
  shoal *c = NULL;
  IT_CHK_RC(c, it_open(&c, 0), 0);
  IT_CHK_RC(c, shoal_put(c, S("from-child"), S("ok"), NULL), 0);
  size_t len = 0;
  IT_CHK_RC(c, shoal_get_copy(c, S("k"), buf, sizeof buf, &len, NULL), 0);
  IT_CHK(len == 6 && memcmp(buf, "parent", 6) == 0, "value of k");
  shoal_close(c);
  return 0;
}

START_TEST(err_eforked) {
  it_start_broker(NULL);
  shoal *c = it_open_ok();
  IT_OK(c, shoal_put(c, S("k"), S("parent"), NULL));
  forked_parent_handle = c;
  it_wait_ok(it_fork(forked_child, NULL, 20), "forked child");
  /* the parent's handle is unharmed by the child's close */
  IT_OK(c, shoal_ping(c));
  assert_value(c, "from-child", S("ok"), 0);
  IT_OK(c, shoal_put(c, S("k"), S("again"), NULL));
  shoal_close(c);
}
END_TEST

START_TEST(err_eunavail) {
  /* no broker at all */
  shoal *c = NULL;
  shoal_options o;
  memset(&o, 0, sizeof o);
  o.socket = it_sock;
  o.connect_timeout_ms = 500;
  IT_RC(NULL, shoal_open(&c, IT_NAME, &o), SHOAL_EUNAVAIL);
  ck_assert_ptr_null(c);
  /* the environment's default (SHOAL_SOCKET, set by it_setup) too */
  IT_RC(NULL, shoal_open(&c, IT_NAME, NULL), SHOAL_EUNAVAIL);

  /* a broker that goes away: writes fail, reads from the handle go on */
  it_start_broker(NULL);
  /* a write retries reconnecting for the connect timeout (the broker may
   * be restarting): keep it short here */
  IT_OK(NULL, it_open_ct(&c, 0, 300));
  IT_OK(c, shoal_put(c, S("k"), S("before"), NULL));
  int st = it_stop_broker(SIGTERM);
  ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status 0x%x", st);
  uint64_t t0 = it_now_ms();
  IT_RC(c, shoal_put(c, S("k"), S("during"), NULL), SHOAL_EUNAVAIL);
  ck_assert_uint_lt(it_now_ms() - t0, 3000);
  IT_RC(c, shoal_ping(c), SHOAL_EUNAVAIL);
  ck_assert_msg(*shoal_last_error(c), "EUNAVAIL without a detail");
  assert_value(c, "k", S("before"), 0);
  shoal_close(c);
}
END_TEST

START_TEST(err_etimeout) {
  it_start_broker(NULL);
  shoal *c = it_open_ok();
  uint64_t t0 = it_now_ms(), ver = 7;
  IT_RC(c, shoal_wait(c, S("never"), 0, 150, &ver), SHOAL_ETIMEOUT);
  uint64_t dt = it_now_ms() - t0;
  ck_assert_msg(dt >= 140 && dt < 2000, "wait of 150 ms took %" PRIu64 " ms",
                dt);
  uint64_t v1;
  IT_OK(c, shoal_put(c, S("k"), S("v"), &v1));
  IT_RC(c, shoal_wait(c, S("k"), v1, 50, NULL), SHOAL_ETIMEOUT);
  /* already newer: no wait at all */
  IT_OK(c, shoal_wait(c, S("k"), v1 - 1, 50, &ver));
  ck_assert_uint_eq(ver, v1);
  IT_OK(c, shoal_wait(c, S("k"), 0, 0, &ver));
  shoal_close(c);
}
END_TEST

START_TEST(err_einval) {
  it_start_broker(NULL);
  shoal *c = it_open_ok();
  IT_OK(c, shoal_read_begin(c));
  IT_RC(c, shoal_wait(c, S("k"), 0, 10, NULL), SHOAL_EINVAL);
  shoal_read_end(c);
  IT_RC(c, shoal_pipe_recv(c, NULL), SHOAL_EINVAL);
  shoal *bad = NULL;
  IT_RC(NULL, shoal_open(&bad, "bad/name", NULL), SHOAL_EINVAL);
  ck_assert_ptr_null(bad);
  shoal_close(c);
}
END_TEST

START_TEST(err_enospc) {
  /* a small store: 8 MiB reserved (the format's minimum is 4 MiB) */
  it_start_broker("--size", "8388608", NULL);
  shoal *c = it_open_ok();
  enum { VLEN = 64 * 1024, MAXPUTS = 1000 };
  char *val = malloc(VLEN);
  char key[32];
  int n = 0, rc = 0;
  for (; n < MAXPUTS; n++) {
    snprintf(key, sizeof key, "fill/%04d", n);
    it_value_make(val, VLEN, key, (uint64_t)n);
    rc = shoal_put(c, key, strlen(key), val, VLEN, NULL);
    if (rc) break;
  }
  ck_assert_msg(rc == SHOAL_ENOSPC, "filling an 8 MiB store: put %d gave %s",
                n, shoal_errname(rc));
  ck_assert_msg(n >= 10, "only %d 64 KiB values fit in 8 MiB", n);
  ck_assert_msg(*shoal_last_error(c), "ENOSPC without a detail");

  /* the broker keeps serving: ping, stats, reads, and deletes */
  IT_OK(c, shoal_ping(c));
  shoal_stats st;
  IT_OK(c, shoal_stats_get(c, &st));
  ck_assert_uint_eq(st.keys, (uint64_t)n);
  for (int i = 0; i < n; i++) {
    snprintf(key, sizeof key, "fill/%04d", i);
    size_t len = 0;
    uint64_t gen = 0;
    IT_OK(c, shoal_get_copy(c, key, strlen(key), val, VLEN, &len, NULL));
    ck_assert_msg(it_value_check(val, len, key, &gen) && gen == (uint64_t)i,
                  "%s damaged after ENOSPC", key);
  }
  int ndel = n / 2;
  for (int i = 0; i < ndel; i++) {
    snprintf(key, sizeof key, "fill/%04d", i);
    IT_OK(c, shoal_del(c, key, strlen(key)));
  }
  /* and, once the deleted values are reclaimed, puts fit again */
  uint64_t deadline = it_now_ms() + 3000;
  snprintf(key, sizeof key, "after");
  it_value_make(val, VLEN, key, 1);
  do {
    rc = shoal_put(c, key, strlen(key), val, VLEN, NULL);
    if (rc != SHOAL_ENOSPC) break;
    it_sleep_ms(50);
  } while (it_now_ms() < deadline);
  ck_assert_msg(rc == 0, "put after deleting half the store: %s (%s)",
                shoal_errname(rc), shoal_last_error(c));
  free(val);
  shoal_close(c);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("integration.api");
  TCase *tc = it_tcase("requests", 30);
  tcase_add_test(tc, put_get);
  tcase_add_test(tc, put_ttl);
  tcase_add_test(tc, get_many);
  tcase_add_test(tc, scan);
  tcase_add_test(tc, del);
  tcase_add_test(tc, cas);
  tcase_add_test(tc, batch);
  tcase_add_test(tc, stats_ping);
  suite_add_tcase(s, tc);
  tc = it_tcase("errors", 30);
  tcase_add_test(tc, err_toobig);
  tcase_add_test(tc, err_enosection);
  tcase_add_test(tc, err_eforked);
  tcase_add_test(tc, err_eunavail);
  tcase_add_test(tc, err_etimeout);
  tcase_add_test(tc, err_einval);
  tcase_add_test(tc, err_enospc);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return it_run_suite(suite()); }
