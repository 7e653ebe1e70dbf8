/*
 * test_ops.c - the operations one at a time: put/get/del/cas/batch with their
 * versions and error codes, boundaries (empty key, empty value, maximum key,
 * multi-MiB values, 200k keys growing the index), TTL, get_many and scan
 * (ranges, prefixes, byte order, early stop), and the counters of
 * shm_store_stats that follow from them.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "unit.h"

#include <sodium.h>

#include "shm-internal.h"

#include <stdlib.h>
#include <unistd.h>

/* ------------------------------------------------------------- helpers -- */

static int keycmp(const void *a, size_t al, const void *b, size_t bl) {
  size_t m = al < bl ? al : bl;
  int c = m ? memcmp(a, b, m) : 0;
  if (c) return c;
  return al < bl ? -1 : al > bl ? 1 : 0;
}

struct kv {
  uint8_t *k;
  size_t kl;
};

static int kv_cmp(const void *a, const void *b) {
  const struct kv *x = a, *y = b;
  return keycmp(x->k, x->kl, y->k, y->kl);
}

struct item {
  uint8_t *k;
  size_t kl;
  const void *data;
  size_t len;
  uint64_t ver;
  uint64_t exp;
};

struct coll {
  struct item *it;
  size_t n, cap;
  size_t stop_after; /* 0 = never */
  int stop_rc;
};

static int collect(void *arg, const void *key, size_t klen, const shm_val *v) {
  struct coll *c = arg;
  if (c->n == c->cap) {
    c->cap = c->cap ? 2 * c->cap : 64;
    c->it = realloc(c->it, c->cap * sizeof *c->it);
    ck_assert_ptr_nonnull(c->it);
  }
  struct item *i = &c->it[c->n++];
  i->k = malloc(klen ? klen : 1);
  memcpy(i->k, key, klen);
  i->kl = klen;
  i->data = v->data;
  i->len = v->len;
  i->ver = v->version;
  i->exp = v->expires_at;
  if (c->stop_after && c->n >= c->stop_after) return c->stop_rc;
  return 0;
}

static void coll_free(struct coll *c) {
  for (size_t i = 0; i < c->n; i++) free(c->it[i].k);
  free(c->it);
  memset(c, 0, sizeof *c);
}

static uint64_t put_bytes(const void *k, size_t kl, const void *v, size_t vl) {
  uint64_t ver = 0;
  CK_OK(shm_put(ut_s, k, kl, v, vl, 0, &ver));
  return ver;
}

static uint64_t put_ttl(const void *k, size_t kl, size_t vl, uint64_t gen,
                        uint64_t exp) {
  uint8_t buf[4096];
  ck_assert_uint_le(vl, sizeof buf);
  ut_fill(buf, vl, k, kl, gen);
  uint64_t ver = 0;
  CK_OK(shm_put(ut_s, k, kl, buf, vl, exp, &ver));
  return ver;
}

static uint64_t commit_seq(void) {
  shm_stats st;
  ut_stats(ut_s, &st);
  return st.commit_seq;
}

static int get1(const void *k, size_t kl, shm_val *out) {
  CK_OK(shm_read_begin(ut_v));
  int rc = shm_get(ut_v, k, kl, out);
  shm_read_end(ut_v);
  return rc;
}

/* ---------------------------------------------------------- put / get --- */

START_TEST(put_get_basic) {
  shm_stats st;
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.keys, 0);
  ck_assert_uint_ge(st.commit_seq, 1);
  uint64_t seq0 = st.commit_seq, commits0 = st.commits;
  uint64_t v = put_bytes("alpha", 5, "hello", 5);
  ck_assert_uint_gt(v, seq0);
  ck_assert_uint_eq(commit_seq(), v);
  shm_val val;
  CK_OK(shm_read_begin(ut_v));
  ck_assert_uint_eq(shm_view_snapshot(ut_v), v);
  CK_OK(shm_get(ut_v, "alpha", 5, &val));
  ck_assert_uint_eq(val.len, 5);
  ck_assert_mem_eq(val.data, "hello", 5);
  ck_assert_uint_eq(val.version, v);
  ck_assert_uint_eq(val.expires_at, 0);
  CK_RC(shm_get(ut_v, "alph", 4, &val), SHOAL_ENOTFOUND);
  CK_RC(shm_get(ut_v, "alphab", 6, &val), SHOAL_ENOTFOUND);
  CK_RC(shm_get(ut_v, "Alpha", 5, &val), SHOAL_ENOTFOUND);
  shm_read_end(ut_v);
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.keys, 1);
  ck_assert_uint_eq(st.key_bytes, 5);
  ck_assert_uint_eq(st.value_bytes, 5);
  ck_assert_uint_eq(st.commits, commits0 + 1);
  /* the view's header figures agree */
  shm_stats vs;
  memset(&vs, 0, sizeof vs);
  shm_view_stats(ut_v, &vs);
  ck_assert_uint_eq(vs.keys, 1);
  ck_assert_uint_eq(vs.commit_seq, v);
  /* a NULL version pointer is fine */
  CK_OK(shm_put(ut_s, "beta", 4, "x", 1, 0, NULL));
}
END_TEST

START_TEST(overwrite_versions_increase) {
  uint64_t last = commit_seq();
  for (int i = 0; i < 200; i++) {
    size_t len = (size_t)(i * 37) % 3000;
    uint64_t v = ut_put_gen(ut_s, "k", 1, len, i);
    ck_assert_uint_gt(v, last);
    ck_assert_uint_eq(v, commit_seq());
    last = v;
    ut_assert_gen(ut_v, "k", 1, len, i);
    shm_val val;
    CK_OK(get1("k", 1, &val));
    ck_assert_uint_eq(val.version, v);
  }
  shm_stats st;
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.keys, 1);
  ck_assert_uint_eq(st.value_bytes, (199u * 37) % 3000);
}
END_TEST

/* Failed writes publish nothing: commit_seq and the data stay as they were. */
START_TEST(failed_writes_do_not_commit) {
  uint64_t v = ut_put_gen(ut_s, "k", 1, 10, 1);
  uint64_t seq = commit_seq();
  shm_stats st;
  ut_stats(ut_s, &st);
  uint64_t commits0 = st.commits;
  uint64_t ver = 0;
  CK_RC(shm_del(ut_s, "nope", 4, &ver), SHOAL_ENOTFOUND);
  CK_RC(shm_cas(ut_s, "k", 1, v + 1000, "x", 1, 0, &ver), SHOAL_ECONFLICT);
  CK_RC(shm_cas(ut_s, "k", 1, 0, "x", 1, 0, &ver), SHOAL_ECONFLICT);
  shm_op op = {.kind = SHM_OP_DEL, .key = "nope", .klen = 4};
  size_t failed = 9;
  uint64_t bseq = 0;
  CK_RC(shm_batch(ut_s, &op, 1, &bseq, &failed), SHOAL_ENOTFOUND);
  ck_assert_uint_eq(failed, 0);
  ck_assert_uint_eq(commit_seq(), seq);
  ut_assert_gen(ut_v, "k", 1, 10, 1);
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.commits, commits0);
}
END_TEST

/* ------------------------------------------------------------ del ------- */

START_TEST(del_semantics) {
  uint64_t ver = 0;
  CK_RC(shm_del(ut_s, "k", 1, &ver), SHOAL_ENOTFOUND);
  uint64_t v1 = ut_put_gen(ut_s, "k", 1, 100, 1);
  uint64_t dv = 0;
  CK_OK(shm_del(ut_s, "k", 1, &dv));
  ck_assert_uint_gt(dv, v1);
  ck_assert_uint_eq(commit_seq(), dv);
  shm_val val;
  CK_RC(get1("k", 1, &val), SHOAL_ENOTFOUND);
  CK_RC(shm_del(ut_s, "k", 1, &ver), SHOAL_ENOTFOUND);
  ck_assert_uint_eq(commit_seq(), dv);
  shm_stats st;
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.keys, 0);
  ck_assert_uint_eq(st.key_bytes, 0);
  ck_assert_uint_eq(st.value_bytes, 0);
  /* re-put after delete */
  uint64_t v2 = ut_put_gen(ut_s, "k", 1, 50, 2);
  ck_assert_uint_gt(v2, dv);
  ut_assert_gen(ut_v, "k", 1, 50, 2);
  CK_OK(get1("k", 1, &val));
  ck_assert_uint_eq(val.version, v2);
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.keys, 1);
  /* delete with a NULL version pointer, and again, many cycles */
  for (int i = 0; i < 100; i++) {
    CK_OK(shm_del(ut_s, "k", 1, NULL));
    CK_RC(get1("k", 1, &val), SHOAL_ENOTFOUND);
    ut_put_gen(ut_s, "k", 1, i, 100 + i);
    ut_assert_gen(ut_v, "k", 1, i, 100 + i);
  }
  /* deleting one key leaves its neighbours alone */
  ut_put_gen(ut_s, "k0", 2, 8, 1);
  ut_put_gen(ut_s, "k2", 2, 8, 2);
  CK_OK(shm_del(ut_s, "k", 1, NULL));
  ut_assert_gen(ut_v, "k0", 2, 8, 1);
  ut_assert_gen(ut_v, "k2", 2, 8, 2);
}
END_TEST

/* ------------------------------------------------------------ cas ------- */

START_TEST(cas_semantics) {
  uint64_t ver = 99;
  /* absent + expect != 0: conflict, current version 0 */
  CK_RC(shm_cas(ut_s, "c", 1, 5, "x", 1, 0, &ver), SHOAL_ECONFLICT);
  ck_assert_uint_eq(ver, 0);
  /* absent + expect 0: created */
  uint64_t v1 = 0;
  CK_OK(shm_cas(ut_s, "c", 1, 0, "one", 3, 0, &v1));
  ck_assert_uint_eq(v1, commit_seq());
  shm_val val;
  CK_OK(get1("c", 1, &val));
  ck_assert_uint_eq(val.version, v1);
  /* exists + expect 0: conflict, *version = current */
  ver = 0;
  CK_RC(shm_cas(ut_s, "c", 1, 0, "two", 3, 0, &ver), SHOAL_ECONFLICT);
  ck_assert_uint_eq(ver, v1);
  /* wrong version (older and newer) */
  ver = 0;
  CK_RC(shm_cas(ut_s, "c", 1, v1 - 1, "two", 3, 0, &ver), SHOAL_ECONFLICT);
  ck_assert_uint_eq(ver, v1);
  ver = 0;
  CK_RC(shm_cas(ut_s, "c", 1, v1 + 1, "two", 3, 0, &ver), SHOAL_ECONFLICT);
  ck_assert_uint_eq(ver, v1);
  /* right version */
  uint64_t v2 = 0;
  CK_OK(shm_cas(ut_s, "c", 1, v1, "two", 3, 0, &v2));
  ck_assert_uint_gt(v2, v1);
  CK_OK(get1("c", 1, &val));
  ck_assert_uint_eq(val.version, v2);
  ck_assert_uint_eq(val.len, 3);
  CK_OK(shm_read_begin(ut_v));
  CK_OK(shm_get(ut_v, "c", 1, &val));
  ck_assert_mem_eq(val.data, "two", 3);
  shm_read_end(ut_v);
  /* the old version is stale now */
  ver = 0;
  CK_RC(shm_cas(ut_s, "c", 1, v1, "three", 5, 0, &ver), SHOAL_ECONFLICT);
  ck_assert_uint_eq(ver, v2);
  /* a version written by a plain put is a valid expect */
  uint64_t v3 = put_bytes("c", 1, "put", 3);
  uint64_t v4 = 0;
  CK_OK(shm_cas(ut_s, "c", 1, v3, "cas", 3, 0, &v4));
  ck_assert_uint_gt(v4, v3);
  /* a deleted key is absent: expect 0 creates it again */
  CK_OK(shm_del(ut_s, "c", 1, NULL));
  ver = 99;
  CK_RC(shm_cas(ut_s, "c", 1, v4, "x", 1, 0, &ver), SHOAL_ECONFLICT);
  ck_assert_uint_eq(ver, 0);
  uint64_t v5 = 0;
  CK_OK(shm_cas(ut_s, "c", 1, 0, "again", 5, 0, &v5));
  CK_OK(get1("c", 1, &val));
  ck_assert_uint_eq(val.version, v5);
  /* cas with a TTL */
  uint64_t exp = shm_now_ms() + 3600 * 1000;
  uint64_t v6 = 0;
  CK_OK(shm_cas(ut_s, "c", 1, v5, "ttl", 3, exp, &v6));
  CK_OK(get1("c", 1, &val));
  ck_assert_uint_eq(val.version, v6);
  ck_assert_uint_eq(val.expires_at, exp);
}
END_TEST

/* Every commit gets a strictly larger version, equal to commit_seq. */
START_TEST(versions_strictly_increase) {
  uint64_t last = commit_seq();
  for (int i = 0; i < 500; i++) {
    uint64_t v = 0;
    char k[16];
    int kl = snprintf(k, sizeof k, "k%d", i % 17);
    switch (i % 4) {
    case 0:
    case 1:
      CK_OK(shm_put(ut_s, k, kl, k, kl, 0, &v));
      break;
    case 2: {
      shm_val val;
      int rc = get1(k, kl, &val);
      uint64_t expect = rc == 0 ? val.version : 0;
      CK_OK(shm_cas(ut_s, k, kl, expect, "c", 1, 0, &v));
      break;
    }
    case 3: {
      shm_op ops[2] = {
          {.kind = SHM_OP_PUT, .key = k, .klen = kl, .val = "b", .vlen = 1},
          {.kind = SHM_OP_DEL_ANY, .key = "zz", .klen = 2},
      };
      CK_OK(shm_batch(ut_s, ops, 2, &v, NULL));
      break;
    }
    }
    ck_assert_uint_gt(v, last);
    ck_assert_uint_eq(v, commit_seq());
    last = v;
  }
}
END_TEST

/* ---------------------------------------------------------- batch ------- */

START_TEST(batch_basic) {
  ut_put_gen(ut_s, "d1", 2, 10, 1);
  uint64_t vc = ut_put_gen(ut_s, "c1", 2, 10, 1);
  shm_stats st0, st1;
  ut_stats(ut_s, &st0);
  uint8_t b1[100], b2[2000];
  ut_fill(b1, sizeof b1, "p1", 2, 5);
  ut_fill(b2, sizeof b2, "p2", 2, 5);
  shm_op ops[] = {
      {.kind = SHM_OP_PUT, .key = "p1", .klen = 2, .val = b1, .vlen = sizeof b1},
      {.kind = SHM_OP_PUT, .key = "p2", .klen = 2, .val = b2, .vlen = sizeof b2},
      {.kind = SHM_OP_DEL, .key = "d1", .klen = 2},
      {.kind = SHM_OP_CAS, .key = "c1", .klen = 2, .expect = vc, .val = "c",
       .vlen = 1},
      {.kind = SHM_OP_CAS, .key = "new", .klen = 3, .expect = 0, .val = "n",
       .vlen = 1},
      {.kind = SHM_OP_DEL_ANY, .key = "absent", .klen = 6},
  };
  uint64_t seq = 0;
  size_t failed = 77;
  CK_OK(shm_batch(ut_s, ops, sizeof ops / sizeof ops[0], &seq, &failed));
  ut_stats(ut_s, &st1);
  ck_assert_uint_eq(st1.commit_seq, seq);
  ck_assert_uint_eq(st1.commits, st0.commits + 1); /* one commit */
  ck_assert_uint_eq(st1.keys, st0.keys + 2);       /* +p1 +p2 +new -d1 */
  shm_val val;
  CK_OK(shm_read_begin(ut_v));
  CK_OK(shm_get(ut_v, "p1", 2, &val));
  ck_assert_uint_eq(val.version, seq);
  ck_assert(ut_check_bytes(val.data, val.len, "p1", 2, 5));
  CK_OK(shm_get(ut_v, "p2", 2, &val));
  ck_assert_uint_eq(val.version, seq);
  ck_assert_uint_eq(val.len, sizeof b2);
  ck_assert(ut_check_bytes(val.data, val.len, "p2", 2, 5));
  CK_RC(shm_get(ut_v, "d1", 2, &val), SHOAL_ENOTFOUND);
  CK_OK(shm_get(ut_v, "c1", 2, &val));
  ck_assert_uint_eq(val.version, seq);
  ck_assert_mem_eq(val.data, "c", 1);
  CK_OK(shm_get(ut_v, "new", 3, &val));
  ck_assert_uint_eq(val.version, seq);
  CK_RC(shm_get(ut_v, "absent", 6, &val), SHOAL_ENOTFOUND);
  shm_read_end(ut_v);
  /* n == 0: no commit, seq = current */
  uint64_t s0 = 0;
  CK_OK(shm_batch(ut_s, ops, 0, &s0, NULL));
  ck_assert_uint_eq(s0, seq);
  ck_assert_uint_eq(commit_seq(), seq);
  /* a batch with a TTL put */
  uint64_t exp = shm_now_ms() + 3600000;
  shm_op t = {.kind = SHM_OP_PUT, .key = "t", .klen = 1, .val = "v", .vlen = 1,
              .expires_at = exp};
  CK_OK(shm_batch(ut_s, &t, 1, &seq, NULL));
  CK_OK(get1("t", 1, &val));
  ck_assert_uint_eq(val.expires_at, exp);
}
END_TEST

/* Later ops see earlier ops of the same batch. */
START_TEST(batch_ops_see_earlier_ops) {
  ut_put_gen(ut_s, "x", 1, 10, 1);
  shm_op ops[] = {
      {.kind = SHM_OP_PUT, .key = "a", .klen = 1, .val = "1", .vlen = 1},
      {.kind = SHM_OP_DEL, .key = "a", .klen = 1}, /* sees the put */
      {.kind = SHM_OP_DEL, .key = "x", .klen = 1},
      {.kind = SHM_OP_PUT, .key = "x", .klen = 1, .val = "2", .vlen = 1},
      {.kind = SHM_OP_PUT, .key = "y", .klen = 1, .val = "3", .vlen = 1},
      {.kind = SHM_OP_PUT, .key = "y", .klen = 1, .val = "44", .vlen = 2},
  };
  uint64_t seq = 0;
  size_t failed = 99;
  CK_OK(shm_batch(ut_s, ops, 6, &seq, &failed));
  shm_val val;
  CK_OK(shm_read_begin(ut_v));
  CK_RC(shm_get(ut_v, "a", 1, &val), SHOAL_ENOTFOUND);
  CK_OK(shm_get(ut_v, "x", 1, &val));
  ck_assert_uint_eq(val.len, 1);
  ck_assert_mem_eq(val.data, "2", 1);
  ck_assert_uint_eq(val.version, seq);
  CK_OK(shm_get(ut_v, "y", 1, &val));
  ck_assert_uint_eq(val.len, 2);
  ck_assert_mem_eq(val.data, "44", 2);
  shm_read_end(ut_v);
  shm_stats st;
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.keys, 2);
  ck_assert_uint_eq(st.value_bytes, 3);
  /* a DEL of a key deleted earlier in the batch fails the batch */
  shm_op ops2[] = {
      {.kind = SHM_OP_DEL, .key = "x", .klen = 1},
      {.kind = SHM_OP_DEL, .key = "x", .klen = 1},
  };
  failed = 99;
  CK_RC(shm_batch(ut_s, ops2, 2, &seq, &failed), SHOAL_ENOTFOUND);
  ck_assert_uint_eq(failed, 1);
  CK_OK(get1("x", 1, &val));
}
END_TEST

START_TEST(batch_failure_applies_nothing) {
  uint64_t vk = ut_put_gen(ut_s, "k", 1, 10, 1);
  ut_put_gen(ut_s, "d", 1, 10, 1);
  shm_stats st0, st1;
  ut_stats(ut_s, &st0);
  shm_op ops[] = {
      {.kind = SHM_OP_PUT, .key = "a", .klen = 1, .val = "1", .vlen = 1},
      {.kind = SHM_OP_PUT, .key = "k", .klen = 1, .val = "2", .vlen = 1},
      {.kind = SHM_OP_DEL, .key = "d", .klen = 1},
      {.kind = SHM_OP_CAS, .key = "k", .klen = 1, .expect = vk + 12345,
       .val = "3", .vlen = 1},
      {.kind = SHM_OP_PUT, .key = "b", .klen = 1, .val = "4", .vlen = 1},
  };
  uint64_t seq = 4242;
  size_t failed = 99;
  CK_RC(shm_batch(ut_s, ops, 5, &seq, &failed), SHOAL_ECONFLICT);
  ck_assert_uint_eq(failed, 3);
  ut_stats(ut_s, &st1);
  ck_assert_uint_eq(st1.commit_seq, st0.commit_seq);
  ck_assert_uint_eq(st1.commits, st0.commits);
  ck_assert_uint_eq(st1.keys, st0.keys);
  ck_assert_uint_eq(st1.value_bytes, st0.value_bytes);
  shm_val val;
  CK_OK(shm_read_begin(ut_v));
  CK_RC(shm_get(ut_v, "a", 1, &val), SHOAL_ENOTFOUND);
  CK_RC(shm_get(ut_v, "b", 1, &val), SHOAL_ENOTFOUND);
  CK_OK(shm_get(ut_v, "k", 1, &val));
  ck_assert_uint_eq(val.version, vk);
  ck_assert(ut_check_bytes(val.data, val.len, "k", 1, 1));
  CK_OK(shm_get(ut_v, "d", 1, &val));
  shm_read_end(ut_v);
  /* CAS expect 0 on an existing key, first op */
  ops[0] = (shm_op){.kind = SHM_OP_CAS, .key = "k", .klen = 1, .expect = 0,
                    .val = "x", .vlen = 1};
  failed = 99;
  CK_RC(shm_batch(ut_s, ops, 3, &seq, &failed), SHOAL_ECONFLICT);
  ck_assert_uint_eq(failed, 0);
  /* DEL of an absent key, last op */
  shm_op ops2[] = {
      {.kind = SHM_OP_PUT, .key = "a", .klen = 1, .val = "1", .vlen = 1},
      {.kind = SHM_OP_DEL, .key = "zz", .klen = 2},
  };
  failed = 99;
  CK_RC(shm_batch(ut_s, ops2, 2, &seq, &failed), SHOAL_ENOTFOUND);
  ck_assert_uint_eq(failed, 1);
  /* an unknown op kind */
  shm_op ops3[] = {
      {.kind = SHM_OP_PUT, .key = "a", .klen = 1, .val = "1", .vlen = 1},
      {.kind = 99, .key = "a", .klen = 1},
  };
  failed = 99;
  CK_RC(shm_batch(ut_s, ops3, 2, &seq, &failed), SHOAL_EINVAL);
  ck_assert_uint_eq(failed, 1);
  ut_stats(ut_s, &st1);
  ck_assert_uint_eq(st1.commit_seq, st0.commit_seq);
  CK_RC(get1("a", 1, &val), SHOAL_ENOTFOUND);
  ck_assert_uint_eq(ut_check(ut_v, 1), 0);
}
END_TEST

/* A big batch: 5000 ops, one commit. */
START_TEST(batch_large) {
  enum { N = 5000 };
  shm_op *ops = calloc(N, sizeof *ops);
  char(*keys)[16] = calloc(N, 16);
  uint8_t(*vals)[40] = calloc(N, 40);
  for (int i = 0; i < N; i++) {
    int kl = snprintf(keys[i], 16, "b%05d", i);
    ut_fill(vals[i], 40, keys[i], kl, 9);
    ops[i] = (shm_op){.kind = SHM_OP_PUT, .key = keys[i], .klen = kl,
                      .val = vals[i], .vlen = 40};
  }
  uint64_t seq = 0;
  shm_stats st;
  ut_stats(ut_s, &st);
  uint64_t commits0 = st.commits;
  CK_OK(shm_batch(ut_s, ops, N, &seq, NULL));
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.keys, N);
  ck_assert_uint_eq(st.commits, commits0 + 1);
  CK_OK(shm_read_begin(ut_v));
  for (int i = 0; i < N; i++) {
    shm_val val;
    CK_OK(shm_get(ut_v, keys[i], strlen(keys[i]), &val));
    ck_assert_uint_eq(val.version, seq);
    ck_assert(ut_check_bytes(val.data, val.len, keys[i], strlen(keys[i]), 9));
  }
  shm_read_end(ut_v);
  /* and delete them all in one batch */
  for (int i = 0; i < N; i++) ops[i].kind = SHM_OP_DEL;
  CK_OK(shm_batch(ut_s, ops, N, &seq, NULL));
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.keys, 0);
  ck_assert_uint_eq(ut_check(ut_v, 1), 0);
  free(ops);
  free(keys);
  free(vals);
}
END_TEST

/* ---------------------------------------------------------- boundaries -- */

START_TEST(empty_key) {
  shm_val val;
  CK_RC(get1("", 0, &val), SHOAL_ENOTFOUND);
  uint64_t v = ut_put_gen(ut_s, "", 0, 33, 1);
  ut_assert_gen(ut_v, "", 0, 33, 1);
  CK_OK(get1("", 0, &val));
  ck_assert_uint_eq(val.version, v);
  /* distinct from "\0" */
  CK_RC(get1("\0", 1, &val), SHOAL_ENOTFOUND);
  ut_put_gen(ut_s, "\0", 1, 34, 2);
  ut_assert_gen(ut_v, "", 0, 33, 1);
  ut_assert_gen(ut_v, "\0", 1, 34, 2);
  shm_stats st;
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.keys, 2);
  ck_assert_uint_eq(st.key_bytes, 1);
  /* cas and del on it */
  uint64_t v2 = 0;
  CK_OK(shm_cas(ut_s, "", 0, v, "e", 1, 0, &v2));
  CK_OK(shm_del(ut_s, "", 0, NULL));
  CK_RC(get1("", 0, &val), SHOAL_ENOTFOUND);
  CK_RC(shm_del(ut_s, "", 0, NULL), SHOAL_ENOTFOUND);
  ut_assert_gen(ut_v, "\0", 1, 34, 2);
}
END_TEST

START_TEST(empty_value) {
  uint64_t v = put_bytes("z", 1, "", 0);
  shm_val val;
  CK_OK(get1("z", 1, &val)); /* present, not a tombstone */
  ck_assert_uint_eq(val.len, 0);
  ck_assert_uint_eq(val.version, v);
  /* empty key and empty value together */
  put_bytes("", 0, "", 0);
  CK_OK(get1("", 0, &val));
  ck_assert_uint_eq(val.len, 0);
  shm_stats st;
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.keys, 2);
  ck_assert_uint_eq(st.value_bytes, 0);
  /* grow from empty and back */
  ut_put_gen(ut_s, "z", 1, 5000, 1);
  ut_assert_gen(ut_v, "z", 1, 5000, 1);
  put_bytes("z", 1, "", 0);
  CK_OK(get1("z", 1, &val));
  ck_assert_uint_eq(val.len, 0);
  /* in a batch and by cas */
  shm_op op = {.kind = SHM_OP_PUT, .key = "bz", .klen = 2, .val = "", .vlen = 0};
  CK_OK(shm_batch(ut_s, &op, 1, NULL, NULL));
  CK_OK(get1("bz", 2, &val));
  ck_assert_uint_eq(val.len, 0);
  CK_OK(shm_cas(ut_s, "cz", 2, 0, "", 0, 0, NULL));
  CK_OK(get1("cz", 2, &val));
  ck_assert_uint_eq(val.len, 0);
}
END_TEST

START_TEST(max_key) {
  static uint8_t k1[SHM_KEY_MAX], k2[SHM_KEY_MAX], k3[SHM_KEY_MAX];
  memset(k1, 0xff, sizeof k1);
  memset(k2, 0xff, sizeof k2);
  k2[SHM_KEY_MAX - 1] = 0xfe; /* differs in the last byte only */
  memset(k3, 0, sizeof k3);
  ut_put_gen(ut_s, k1, SHM_KEY_MAX, 100, 1);
  ut_put_gen(ut_s, k2, SHM_KEY_MAX, 200, 2);
  ut_put_gen(ut_s, k3, SHM_KEY_MAX, 0, 3);
  ut_put_gen(ut_s, k1, SHM_KEY_MAX - 1, 300, 4); /* prefix of k1 */
  ut_assert_gen(ut_v, k1, SHM_KEY_MAX, 100, 1);
  ut_assert_gen(ut_v, k2, SHM_KEY_MAX, 200, 2);
  ut_assert_gen(ut_v, k3, SHM_KEY_MAX, 0, 3);
  ut_assert_gen(ut_v, k1, SHM_KEY_MAX - 1, 300, 4);
  shm_stats st;
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.keys, 4);
  ck_assert_uint_eq(st.key_bytes, 4 * SHM_KEY_MAX - 1);
  /* scan returns them in order, keys intact */
  struct coll c = {0};
  CK_OK(shm_read_begin(ut_v));
  CK_OK(shm_scan(ut_v, NULL, 0, NULL, 0, collect, &c));
  shm_read_end(ut_v);
  ck_assert_uint_eq(c.n, 4);
  ck_assert_uint_eq(c.it[0].kl, SHM_KEY_MAX);
  ck_assert_mem_eq(c.it[0].k, k3, SHM_KEY_MAX);
  ck_assert_uint_eq(c.it[1].kl, SHM_KEY_MAX - 1);
  ck_assert_mem_eq(c.it[2].k, k2, SHM_KEY_MAX);
  ck_assert_mem_eq(c.it[3].k, k1, SHM_KEY_MAX);
  coll_free(&c);
  CK_OK(shm_del(ut_s, k1, SHM_KEY_MAX, NULL));
  ut_assert_gen(ut_v, k2, SHM_KEY_MAX, 200, 2);
  ut_assert_gen(ut_v, k1, SHM_KEY_MAX - 1, 300, 4);
  ck_assert_uint_eq(ut_check(ut_v, 1), 0);
}
END_TEST

START_TEST(big_values) {
  size_t sizes[] = {3u << 20, (1u << 20) + 1, 1u << 20, (1u << 20) - 1,
                    5u << 20, 65536, 65537, 4097, 12345678};
  enum { NS = sizeof sizes / sizeof sizes[0] };
  for (size_t i = 0; i < NS; i++) {
    char k[16];
    int kl = snprintf(k, sizeof k, "big%zu", i);
    ut_put_gen(ut_s, k, kl, sizes[i], i);
  }
  for (size_t i = 0; i < NS; i++) {
    char k[16];
    int kl = snprintf(k, sizeof k, "big%zu", i);
    ut_assert_gen(ut_v, k, kl, sizes[i], i);
  }
  /* value_bytes counts them all */
  shm_stats st;
  ut_stats(ut_s, &st);
  uint64_t sum = 0;
  for (size_t i = 0; i < NS; i++) sum += sizes[i];
  ck_assert_uint_eq(st.value_bytes, sum);
  ck_assert_uint_gt(st.extents_used, 0);
  /* shrink one, grow another, both directions */
  ut_put_gen(ut_s, "big0", 4, 10, 100);
  ut_put_gen(ut_s, "big5", 4, 7u << 20, 101);
  ut_assert_gen(ut_v, "big0", 4, 10, 100);
  ut_assert_gen(ut_v, "big5", 4, 7u << 20, 101);
  for (size_t i = 1; i < NS; i++) {
    if (i == 5) continue;
    char k[16];
    int kl = snprintf(k, sizeof k, "big%zu", i);
    ut_assert_gen(ut_v, k, kl, sizes[i], i);
  }
  ck_assert_uint_eq(ut_check(ut_v, 1), 0);
}
END_TEST

/* Every size around the size-class boundaries lands intact. */
START_TEST(value_size_sweep) {
  shm_stats st;
  ut_stats(ut_s, &st);
  size_t sizes[4096];
  size_t n = 0;
  for (size_t i = 0; i <= 80; i++) sizes[n++] = i;
  for (uint32_t c = 0; c < st.nclasses && c < SHM_NCLASSES; c++) {
    size_t cs = st.class_size[c];
    for (int d = -40; d <= 8; d += 4)
      if ((long)cs + d > 0) sizes[n++] = cs + d;
  }
  for (int p = 7; p <= 21; p++) {
    sizes[n++] = (1u << p) - 1;
    sizes[n++] = 1u << p;
    sizes[n++] = (1u << p) + 1;
  }
  for (size_t i = 0; i < n; i++) {
    char k[24];
    int kl = snprintf(k, sizeof k, "s%zu", i);
    ut_put_gen(ut_s, k, kl, sizes[i], sizes[i]);
  }
  for (size_t i = 0; i < n; i++) {
    char k[24];
    int kl = snprintf(k, sizeof k, "s%zu", i);
    ut_assert_gen(ut_v, k, kl, sizes[i], sizes[i]);
  }
  ck_assert_uint_eq(ut_check(ut_v, 1), 0);
}
END_TEST

START_TEST(index_grows_200k) {
  enum { N = 200000 };
  shm_stats st;
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.index_capacity, 1024);
  uint64_t caps[64];
  int ncaps = 0;
  caps[ncaps++] = st.index_capacity;
  for (int i = 0; i < N; i++) {
    char k[24];
    int kl = snprintf(k, sizeof k, "key:%08d", i);
    ut_put_gen(ut_s, k, kl, 8 + (i % 24), i);
    if ((i & 1023) == 0) {
      ut_stats(ut_s, &st);
      if (st.index_capacity != caps[ncaps - 1] && ncaps < 64)
        caps[ncaps++] = st.index_capacity;
    }
  }
  ut_stats(ut_s, &st);
  if (st.index_capacity != caps[ncaps - 1] && ncaps < 64)
    caps[ncaps++] = st.index_capacity;
  ck_assert_uint_eq(st.keys, N);
  ck_assert_uint_gt(st.index_capacity, N); /* open addressing */
  ck_assert_uint_ge(st.index_used, N);
  ck_assert_int_ge(ncaps, 4); /* grew several times */
  for (int i = 1; i < ncaps; i++) ck_assert_uint_gt(caps[i], caps[i - 1]);
  /* every key, right value */
  CK_OK(shm_read_begin(ut_v));
  for (int i = 0; i < N; i++) {
    char k[24];
    int kl = snprintf(k, sizeof k, "key:%08d", i);
    shm_val val;
    int rc = shm_get(ut_v, k, kl, &val);
    ck_assert_msg(rc == 0, "%s: %s", k, shoal_errname(rc));
    ck_assert_uint_eq(val.len, 8 + (i % 24));
    ck_assert_msg(ut_check_bytes(val.data, val.len, k, kl, i), "%s bytes", k);
  }
  /* and absent ones stay absent */
  for (int i = N; i < N + 1000; i++) {
    char k[24];
    int kl = snprintf(k, sizeof k, "key:%08d", i);
    shm_val val;
    CK_RC(shm_get(ut_v, k, kl, &val), SHOAL_ENOTFOUND);
  }
  shm_read_end(ut_v);
  /* delete every other key: the rest is intact */
  for (int i = 0; i < N; i += 2) {
    char k[24];
    int kl = snprintf(k, sizeof k, "key:%08d", i);
    CK_OK(shm_del(ut_s, k, kl, NULL));
  }
  (void)shm_reclaim(ut_s);
  CK_OK(shm_read_begin(ut_v));
  for (int i = 0; i < N; i++) {
    char k[24];
    int kl = snprintf(k, sizeof k, "key:%08d", i);
    shm_val val;
    int rc = shm_get(ut_v, k, kl, &val);
    if (i % 2 == 0) {
      CK_RC(rc, SHOAL_ENOTFOUND);
    } else {
      ck_assert_msg(rc == 0, "%s: %s", k, shoal_errname(rc));
      ck_assert(ut_check_bytes(val.data, val.len, k, kl, i));
    }
  }
  shm_read_end(ut_v);
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.keys, N / 2);
  ck_assert_uint_eq(ut_check(ut_v, 1), 0);
}
END_TEST

/* Counters follow a mixed workload exactly. */
START_TEST(stats_counters) {
  uint64_t keys = 0, kb = 0, vb = 0;
  size_t vlen[300] = {0};
  int present[300] = {0};
  unsigned seed = 1;
  for (int step = 0; step < 5000; step++) {
    int i = rand_r(&seed) % 300;
    char k[16];
    int kl = snprintf(k, sizeof k, "c%d", i);
    if (rand_r(&seed) % 3 == 0) {
      int rc = shm_del(ut_s, k, kl, NULL);
      if (present[i]) {
        CK_OK(rc);
        keys--;
        kb -= kl;
        vb -= vlen[i];
        present[i] = 0;
      } else {
        CK_RC(rc, SHOAL_ENOTFOUND);
      }
    } else {
      size_t l = rand_r(&seed) % 700;
      ut_put_gen(ut_s, k, kl, l, step);
      if (!present[i]) {
        keys++;
        kb += kl;
      } else {
        vb -= vlen[i];
      }
      vb += l;
      vlen[i] = l;
      present[i] = 1;
    }
  }
  shm_stats st;
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.keys, keys);
  ck_assert_uint_eq(st.key_bytes, kb);
  ck_assert_uint_eq(st.value_bytes, vb);
  ck_assert_uint_ge(st.entries, keys);
  ck_assert_uint_ge(st.records, keys);
  ck_assert_uint_eq(st.size, UT_SIZE);
  ck_assert_uint_le(st.heap_used, st.size);
  ck_assert_uint_le(st.backed, st.size);
  ck_assert_uint_ge(st.backed, st.heap_top);
  ck_assert_uint_gt(st.nclasses, 0);
  ck_assert_uint_le(st.nclasses, SHM_NCLASSES);
  for (uint32_t c = 1; c < st.nclasses; c++)
    ck_assert_uint_gt(st.class_size[c], st.class_size[c - 1]);
  shm_stats vs;
  memset(&vs, 0, sizeof vs);
  shm_view_stats(ut_v, &vs);
  ck_assert_uint_eq(vs.keys, keys);
  ck_assert_uint_eq(vs.key_bytes, kb);
  ck_assert_uint_eq(vs.value_bytes, vb);
  ck_assert_uint_eq(vs.commit_seq, st.commit_seq);
  ck_assert_uint_eq(ut_check(ut_v, 1), 0);
}
END_TEST

/* ------------------------------------------------------------- TTL ------ */

START_TEST(ttl_expiry) {
  uint64_t now = shm_now_ms();
  ck_assert_uint_gt(now, 1600000000000ull); /* CLOCK_REALTIME ms */
  uint64_t exp = now + 100;
  uint64_t v = put_ttl("t", 1, 20, 1, exp);
  shm_val val;
  CK_OK(get1("t", 1, &val));
  ck_assert_uint_eq(val.version, v);
  ck_assert_uint_eq(val.expires_at, exp);
  ut_sleep_ms(200);
  CK_RC(get1("t", 1, &val), SHOAL_ENOTFOUND);
  /* in the past: invisible at once */
  put_ttl("p", 1, 20, 1, shm_now_ms() - 1000);
  CK_RC(get1("p", 1, &val), SHOAL_ENOTFOUND);
  put_ttl("p1", 2, 20, 1, 1); /* 1970 */
  CK_RC(get1("p1", 2, &val), SHOAL_ENOTFOUND);
  /* an expired key is absent for cas/del too: cas expect 0 recreates it */
  uint64_t cv = 0;
  int rc = shm_cas(ut_s, "p", 1, 0, "new", 3, 0, &cv);
  CK_RC(rc, 0);
  CK_OK(get1("p", 1, &val));
  ck_assert_uint_eq(val.version, cv);
  ck_assert_uint_eq(val.expires_at, 0);
  /* overwriting a TTL value without a TTL makes it permanent */
  put_ttl("q", 1, 20, 1, shm_now_ms() + 100);
  put_ttl("q", 1, 20, 2, 0);
  ut_sleep_ms(150);
  ut_assert_gen(ut_v, "q", 1, 20, 2);
}
END_TEST

START_TEST(ttl_expire_sweep) {
  uint64_t now = shm_now_ms();
  for (int i = 0; i < 10; i++) {
    char k[16];
    int kl = snprintf(k, sizeof k, "e%d", i);
    put_ttl(k, kl, 30, i, i < 5 ? now - 10 : now + 5000); /* 5 past, 5 soon */
  }
  for (int i = 0; i < 5; i++) {
    char k[16];
    int kl = snprintf(k, sizeof k, "keep%d", i);
    put_ttl(k, kl, 30, i, 0);
  }
  put_ttl("far", 3, 30, 1, now + 3600000);
  shm_stats st;
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.keys, 16); /* TTL not considered */
  size_t n = 99;
  CK_OK(shm_expire(ut_s, 0, 1000, &n));
  ck_assert_uint_eq(n, 5);
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.keys, 11);
  ck_assert_uint_eq(st.expired, 5);
  n = 99;
  CK_OK(shm_expire(ut_s, 0, 1000, &n));
  ck_assert_uint_eq(n, 0);
  /* a clock in the future expires the 5 soon ones, not "far" */
  uint64_t seq0 = commit_seq();
  n = 0;
  CK_OK(shm_expire(ut_s, now + 10000, 1000, &n));
  ck_assert_uint_eq(n, 5);
  ck_assert_uint_eq(commit_seq(), seq0 + 1); /* one commit */
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.keys, 6);
  ck_assert_uint_eq(st.expired, 10);
  shm_val val;
  CK_OK(get1("far", 3, &val));
  ut_assert_gen(ut_v, "keep3", 5, 30, 3);
  /* nothing expired: no commit */
  n = 99;
  CK_OK(shm_expire(ut_s, 0, 1000, &n));
  ck_assert_uint_eq(n, 0);
  ck_assert_uint_eq(commit_seq(), seq0 + 1);
  ck_assert_uint_eq(ut_check(ut_v, 1), 0);
}
END_TEST

/* A small budget sweeps everything in bounded steps. */
START_TEST(ttl_expire_budget) {
  uint64_t now = shm_now_ms();
  for (int i = 0; i < 1000; i++) {
    char k[16];
    int kl = snprintf(k, sizeof k, "e%04d", i);
    put_ttl(k, kl, 16, i, i % 2 ? now - 1 : 0);
  }
  size_t total = 0;
  for (int round = 0; round < 2000 && total < 500; round++) {
    size_t n = 0;
    CK_OK(shm_expire(ut_s, 0, 7, &n));
    ck_assert_uint_le(n, 7);
    total += n;
  }
  ck_assert_uint_eq(total, 500);
  shm_stats st;
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.keys, 500);
  for (int i = 0; i < 1000; i += 2) {
    char k[16];
    int kl = snprintf(k, sizeof k, "e%04d", i);
    ut_assert_gen(ut_v, k, kl, 16, i);
  }
}
END_TEST

/* --------------------------------------------------------- get_many ----- */

START_TEST(get_many_mixed) {
  enum { U = 300 };
  char keys[U + 3][16];
  shm_key q[U + 3];
  for (int i = 0; i < U; i++) {
    int kl = snprintf(keys[i], 16, "m%03d", i);
    q[i] = (shm_key){keys[i], (size_t)kl};
    if (i % 3 == 0) ut_put_gen(ut_s, keys[i], kl, i, i);
  }
  /* expired, duplicate and empty keys */
  put_ttl("m001", 4, 10, 1, shm_now_ms() - 5);
  q[U] = (shm_key){keys[0], strlen(keys[0])};
  q[U + 1] = (shm_key){"", 0};
  q[U + 2] = (shm_key){keys[3], strlen(keys[3])};
  shm_val out[U + 3];
  int status[U + 3];
  for (int i = 0; i < U + 3; i++) status[i] = 12345;
  CK_OK(shm_read_begin(ut_v));
  int found = shm_get_many(ut_v, U + 3, q, out, status);
  ck_assert_int_eq(found, U / 3 + 2);
  for (int i = 0; i < U; i++) {
    if (i % 3 == 0) {
      CK_RC(status[i], 0);
      ck_assert_uint_eq(out[i].len, (size_t)i);
      ck_assert(ut_check_bytes(out[i].data, out[i].len, keys[i],
                               strlen(keys[i]), i));
      /* same answer as shm_get */
      shm_val g;
      CK_OK(shm_get(ut_v, keys[i], strlen(keys[i]), &g));
      ck_assert_ptr_eq(g.data, out[i].data);
      ck_assert_uint_eq(g.version, out[i].version);
    } else {
      CK_RC(status[i], SHOAL_ENOTFOUND);
    }
  }
  CK_RC(status[U], 0);
  CK_RC(status[U + 1], SHOAL_ENOTFOUND);
  CK_RC(status[U + 2], 0);
  ck_assert_ptr_eq(out[U].data, out[0].data);
  /* n == 0 */
  ck_assert_int_eq(shm_get_many(ut_v, 0, q, out, status), 0);
  /* one key */
  ck_assert_int_eq(shm_get_many(ut_v, 1, &q[3], out, status), 1);
  CK_RC(status[0], 0);
  shm_read_end(ut_v);
}
END_TEST

START_TEST(get_many_large_batch) {
  enum { N = 20000 };
  shm_key *q = calloc(N, sizeof *q);
  char(*keys)[16] = calloc(N, 16);
  shm_val *out = calloc(N, sizeof *out);
  int *status = calloc(N, sizeof *status);
  for (int i = 0; i < N; i++) {
    int kl = snprintf(keys[i], 16, "g%06d", i);
    q[i] = (shm_key){keys[i], (size_t)kl};
    if (i % 2) ut_put_gen(ut_s, keys[i], kl, 24, i);
  }
  CK_OK(shm_read_begin(ut_v));
  ck_assert_int_eq(shm_get_many(ut_v, N, q, out, status), N / 2);
  for (int i = 0; i < N; i++) {
    if (i % 2) {
      CK_RC(status[i], 0);
      ck_assert(ut_check_bytes(out[i].data, out[i].len, keys[i], 7, i));
    } else {
      CK_RC(status[i], SHOAL_ENOTFOUND);
    }
  }
  shm_read_end(ut_v);
  free(q);
  free(keys);
  free(out);
  free(status);
}
END_TEST

/* --------------------------------------------------------------- scan --- */

/* The tricky byte patterns plus random keys; returns the count. */
static size_t make_scan_keys(struct kv *ks, size_t cap, unsigned seed) {
  static const struct {
    const char *k;
    size_t l;
  } fixed[] = {
      {"", 0},         {"\0", 1},         {"\0\0", 2},      {"\0\1", 2},
      {"\1", 1},       {"a", 1},          {"a\0", 2},       {"a\0\0", 3},
      {"a\1", 2},      {"a\xff", 2},      {"a\xff\xff", 3}, {"ab", 2},
      {"abc", 3},      {"b", 1},          {"\x7f", 1},      {"\x80", 1},
      {"\xfe", 1},     {"\xff", 1},       {"\xff\0", 2},    {"\xff\xff", 2},
      {"\xff\xff\xff", 3}, {"a/", 2},     {"a/x", 3},       {"a0", 2},
  };
  size_t n = 0;
  for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
    ks[n].k = malloc(fixed[i].l + 1);
    memcpy(ks[n].k, fixed[i].k, fixed[i].l);
    ks[n].kl = fixed[i].l;
    n++;
  }
  while (n < cap) {
    size_t l = 1 + rand_r(&seed) % 12;
    uint8_t *k = malloc(l);
    static const uint8_t alpha[] = {0, 1, 'a', 'b', 0x7f, 0x80, 0xfe, 0xff};
    for (size_t j = 0; j < l; j++) k[j] = alpha[rand_r(&seed) % 8];
    int dup = 0;
    for (size_t j = 0; j < n && !dup; j++)
      dup = keycmp(ks[j].k, ks[j].kl, k, l) == 0;
    if (dup) {
      free(k);
      continue;
    }
    ks[n].k = k;
    ks[n].kl = l;
    n++;
  }
  return n;
}

static void free_keys(struct kv *ks, size_t n) {
  for (size_t i = 0; i < n; i++) free(ks[i].k);
}

START_TEST(scan_order) {
  enum { N = 600 };
  struct kv ks[N];
  size_t n = make_scan_keys(ks, N, 7);
  /* insert in a shuffled order */
  unsigned seed = 3;
  for (size_t i = n - 1; i > 0; i--) {
    size_t j = rand_r(&seed) % (i + 1);
    struct kv t = ks[i];
    ks[i] = ks[j];
    ks[j] = t;
  }
  for (size_t i = 0; i < n; i++) ut_put_gen(ut_s, ks[i].k, ks[i].kl, ks[i].kl * 3, 1);
  qsort(ks, n, sizeof ks[0], kv_cmp);
  struct coll c = {0};
  CK_OK(shm_read_begin(ut_v));
  CK_OK(shm_scan(ut_v, NULL, 0, NULL, 0, collect, &c));
  ck_assert_uint_eq(c.n, n);
  ck_assert_uint_eq(c.it[0].kl, 0); /* the empty key sorts first */
  for (size_t i = 0; i < n; i++) {
    ck_assert_msg(keycmp(c.it[i].k, c.it[i].kl, ks[i].k, ks[i].kl) == 0,
                  "scan position %zu: wrong key (len %zu, expected len %zu)", i,
                  c.it[i].kl, ks[i].kl);
    ck_assert_uint_eq(c.it[i].len, ks[i].kl * 3);
    ck_assert(ut_check_bytes(c.it[i].data, c.it[i].len, ks[i].k, ks[i].kl, 1));
  }
  coll_free(&c);
  /* empty non-NULL end = no bound; empty start = from the first */
  CK_OK(shm_scan(ut_v, "", 0, "", 0, collect, &c));
  ck_assert_uint_eq(c.n, n);
  coll_free(&c);
  shm_read_end(ut_v);
  free_keys(ks, n);
}
END_TEST

START_TEST(scan_ranges) {
  enum { N = 300 };
  struct kv ks[N];
  size_t n = make_scan_keys(ks, N, 11);
  for (size_t i = 0; i < n; i++) ut_put_gen(ut_s, ks[i].k, ks[i].kl, 4, 2);
  qsort(ks, n, sizeof ks[0], kv_cmp);
  /* bounds: every key itself, and random strings that may be absent */
  unsigned seed = 5;
  CK_OK(shm_read_begin(ut_v));
  for (int round = 0; round < 400; round++) {
    uint8_t sb[16], eb[16];
    const uint8_t *s = NULL, *e = NULL;
    size_t sl = 0, el = 0;
    int mode = rand_r(&seed) % 4;
    if (mode != 0) { /* start */
      if (rand_r(&seed) % 2) {
        struct kv *x = &ks[rand_r(&seed) % n];
        s = x->k;
        sl = x->kl;
      } else {
        sl = rand_r(&seed) % 5;
        for (size_t j = 0; j < sl; j++) sb[j] = "\0\1ab\x7f\x80\xfe\xff"[rand_r(&seed) % 8];
        s = sb;
      }
    }
    if (mode != 1) { /* end */
      if (rand_r(&seed) % 2) {
        struct kv *x = &ks[rand_r(&seed) % n];
        e = x->k;
        el = x->kl;
      } else {
        el = 1 + rand_r(&seed) % 4;
        for (size_t j = 0; j < el; j++) eb[j] = "\0\1ab\x7f\x80\xfe\xff"[rand_r(&seed) % 8];
        e = eb;
      }
    }
    struct coll c = {0};
    CK_OK(shm_scan(ut_v, s, sl, e, el, collect, &c));
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
      int in = (!s || keycmp(ks[i].k, ks[i].kl, s, sl) >= 0) &&
               (!e || el == 0 || keycmp(ks[i].k, ks[i].kl, e, el) < 0);
      if (!in) continue;
      ck_assert_msg(j < c.n, "round %d: scan ended early at %zu", round, j);
      ck_assert_msg(keycmp(c.it[j].k, c.it[j].kl, ks[i].k, ks[i].kl) == 0,
                    "round %d: position %zu differs", round, j);
      j++;
    }
    ck_assert_msg(j == c.n, "round %d: scan returned %zu keys, expected %zu",
                  round, c.n, j);
    coll_free(&c);
  }
  /* start == end and start > end: empty */
  struct coll c = {0};
  CK_OK(shm_scan(ut_v, "a", 1, "a", 1, collect, &c));
  ck_assert_uint_eq(c.n, 0);
  CK_OK(shm_scan(ut_v, "b", 1, "a", 1, collect, &c));
  ck_assert_uint_eq(c.n, 0);
  /* [a, a\0) is exactly "a" */
  CK_OK(shm_scan(ut_v, "a", 1, "a\0", 2, collect, &c));
  ck_assert_uint_eq(c.n, 1);
  ck_assert_uint_eq(c.it[0].kl, 1);
  coll_free(&c);
  shm_read_end(ut_v);
  free_keys(ks, n);
}
END_TEST

START_TEST(prefix_end) {
  uint8_t buf[16];
  ck_assert_uint_eq(shm_prefix_end("a", 1, buf), 1);
  ck_assert_mem_eq(buf, "b", 1);
  ck_assert_uint_eq(shm_prefix_end("a\xff", 2, buf), 1);
  ck_assert_mem_eq(buf, "b", 1);
  ck_assert_uint_eq(shm_prefix_end("ab\xff\xff", 4, buf), 2);
  ck_assert_mem_eq(buf, "ac", 2);
  ck_assert_uint_eq(shm_prefix_end("\0", 1, buf), 1);
  ck_assert_mem_eq(buf, "\1", 1);
  ck_assert_uint_eq(shm_prefix_end("a/", 2, buf), 2);
  ck_assert_mem_eq(buf, "a0", 2);
  ck_assert_uint_eq(shm_prefix_end("\xfe\xff", 2, buf), 1);
  ck_assert_mem_eq(buf, "\xff", 1);
  ck_assert_uint_eq(shm_prefix_end("\xff", 1, buf), 0);
  ck_assert_uint_eq(shm_prefix_end("\xff\xff\xff", 3, buf), 0);
  ck_assert_uint_eq(shm_prefix_end("", 0, buf), 0);
}
END_TEST

START_TEST(scan_prefix) {
  enum { N = 400 };
  struct kv ks[N];
  size_t n = make_scan_keys(ks, N, 13);
  for (size_t i = 0; i < n; i++) ut_put_gen(ut_s, ks[i].k, ks[i].kl, 4, 2);
  qsort(ks, n, sizeof ks[0], kv_cmp);
  const struct {
    const char *p;
    size_t l;
  } prefixes[] = {{"a", 1},     {"a\xff", 2}, {"\xff", 1}, {"\xff\xff", 2},
                  {"\0", 1},    {"", 0},      {"ab", 2},   {"a/", 2},
                  {"\x7f", 1},  {"zz", 2}};
  CK_OK(shm_read_begin(ut_v));
  for (size_t p = 0; p < sizeof prefixes / sizeof prefixes[0]; p++) {
    uint8_t end[16];
    size_t el = shm_prefix_end(prefixes[p].p, prefixes[p].l, end);
    struct coll c = {0};
    CK_OK(shm_scan(ut_v, prefixes[p].p, prefixes[p].l, el ? end : NULL, el,
                   collect, &c));
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
      if (ks[i].kl < prefixes[p].l ||
          memcmp(ks[i].k, prefixes[p].p, prefixes[p].l) != 0)
        continue;
      ck_assert_msg(j < c.n, "prefix %zu: too few keys", p);
      ck_assert(keycmp(c.it[j].k, c.it[j].kl, ks[i].k, ks[i].kl) == 0);
      j++;
    }
    ck_assert_msg(j == c.n, "prefix %zu: %zu keys, expected %zu", p, c.n, j);
    coll_free(&c);
  }
  shm_read_end(ut_v);
  free_keys(ks, n);
}
END_TEST

START_TEST(scan_stop_early) {
  for (int i = 0; i < 50; i++) {
    char k[8];
    int kl = snprintf(k, sizeof k, "s%02d", i);
    ut_put_gen(ut_s, k, kl, 4, i);
  }
  CK_OK(shm_read_begin(ut_v));
  struct coll c = {.stop_after = 3, .stop_rc = 42};
  ck_assert_int_eq(shm_scan(ut_v, NULL, 0, NULL, 0, collect, &c), 42);
  ck_assert_uint_eq(c.n, 3);
  ck_assert_mem_eq(c.it[2].k, "s02", 3);
  coll_free(&c);
  c = (struct coll){.stop_after = 1, .stop_rc = -7};
  ck_assert_int_eq(shm_scan(ut_v, "s10", 3, NULL, 0, collect, &c), -7);
  ck_assert_uint_eq(c.n, 1);
  ck_assert_mem_eq(c.it[0].k, "s10", 3);
  coll_free(&c);
  /* stop on the very last key still returns the value */
  c = (struct coll){.stop_after = 50, .stop_rc = 1};
  ck_assert_int_eq(shm_scan(ut_v, NULL, 0, NULL, 0, collect, &c), 1);
  ck_assert_uint_eq(c.n, 50);
  coll_free(&c);
  shm_read_end(ut_v);
}
END_TEST

START_TEST(scan_empty_store) {
  struct coll c = {0};
  CK_OK(shm_read_begin(ut_v));
  CK_OK(shm_scan(ut_v, NULL, 0, NULL, 0, collect, &c));
  ck_assert_uint_eq(c.n, 0);
  shm_read_end(ut_v);
  /* all keys deleted: empty again */
  ut_put_gen(ut_s, "a", 1, 4, 1);
  CK_OK(shm_del(ut_s, "a", 1, NULL));
  CK_OK(shm_read_begin(ut_v));
  CK_OK(shm_scan(ut_v, NULL, 0, NULL, 0, collect, &c));
  ck_assert_uint_eq(c.n, 0);
  shm_read_end(ut_v);
}
END_TEST

/* In one section a scan and gets agree exactly: deleted and expired keys
 * are absent from both, every value is the same record. */
START_TEST(scan_agrees_with_get) {
  enum { N = 3000 };
  unsigned seed = 9;
  uint64_t now = shm_now_ms();
  for (int i = 0; i < N; i++) {
    char k[16];
    int kl = snprintf(k, sizeof k, "a%05d", rand_r(&seed) % (2 * N));
    switch (rand_r(&seed) % 6) {
    case 0:
    {
      int rc = shm_del(ut_s, k, kl, NULL);
      ck_assert(rc == 0 || rc == SHOAL_ENOTFOUND);
      break;
    }
    case 1:
      put_ttl(k, kl, 12, i, now - 1);
      break;
    default:
      ut_put_gen(ut_s, k, kl, rand_r(&seed) % 300, i);
    }
  }
  (void)shm_reclaim(ut_s);
  CK_OK(shm_read_begin(ut_v));
  struct coll c = {0};
  CK_OK(shm_scan(ut_v, NULL, 0, NULL, 0, collect, &c));
  size_t found = 0;
  for (int i = 0; i < 2 * N; i++) {
    char k[16];
    int kl = snprintf(k, sizeof k, "a%05d", i);
    shm_val val;
    int rc = shm_get(ut_v, k, kl, &val);
    if (rc == SHOAL_ENOTFOUND) continue;
    CK_OK(rc);
    ck_assert_msg(found < c.n, "get finds %s, the scan ended", k);
    ck_assert_msg(keycmp(c.it[found].k, c.it[found].kl, k, kl) == 0,
                  "get finds %s, the scan has another key there", k);
    ck_assert_uint_eq(c.it[found].ver, val.version);
    ck_assert_uint_eq(c.it[found].len, val.len);
    ck_assert_ptr_eq(c.it[found].data, val.data);
    found++;
  }
  ck_assert_uint_eq(found, c.n);
  shm_read_end(ut_v);
  coll_free(&c);
  ck_assert_uint_eq(ut_check(ut_v, 1), 0);
}
END_TEST

/* ----------------------------------------------------- sections, views -- */

START_TEST(nested_sections) {
  uint64_t v1 = ut_put_gen(ut_s, "k", 1, 8, 1);
  CK_OK(shm_read_begin(ut_v));
  uint64_t s1 = shm_view_snapshot(ut_v);
  ck_assert_uint_eq(s1, v1);
  ut_put_gen(ut_s, "k", 1, 8, 2);
  CK_OK(shm_read_begin(ut_v)); /* inner shares the outer snapshot */
  ck_assert_uint_eq(shm_view_snapshot(ut_v), s1);
  shm_val val;
  CK_OK(shm_get(ut_v, "k", 1, &val));
  ck_assert_uint_eq(val.version, v1);
  shm_read_end(ut_v);
  ck_assert_uint_eq(shm_view_snapshot(ut_v), s1); /* still inside */
  CK_OK(shm_get(ut_v, "k", 1, &val));
  ck_assert_uint_eq(val.version, v1);
  shm_read_end(ut_v);
  CK_RC(shm_get(ut_v, "k", 1, &val), SHOAL_ENOSECTION);
  ut_assert_gen(ut_v, "k", 1, 8, 2);
}
END_TEST

START_TEST(store_view_reads) {
  shm_view *sv = NULL;
  CK_OK(shm_store_view(ut_s, &sv));
  ck_assert_int_ge(shm_view_slot(sv), 0);
  ut_put_gen(ut_s, "sv", 2, 100, 1);
  ut_assert_gen(sv, "sv", 2, 100, 1);
  shm_view_close(sv);
  /* closing the view with a section open ends it first */
  CK_OK(shm_read_begin(ut_v));
  shm_view_close(ut_v);
  ut_v = NULL;
  shm_stats st;
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.readers_busy, 0);
}
END_TEST

/* The index hash is SipHash-2-4 inlined (shm-internal.h): it must equal
 * libsodium's crypto_shorthash for every length (all tail cases, and the
 * block loop), with random keys. */
START_TEST(hash_is_libsodium_siphash) {
  ck_assert_int_ge(sodium_init(), 0);
  uint8_t key[16], msg[200];
  for (int round = 0; round < 200; round++) {
    randombytes_buf(key, sizeof key);
    randombytes_buf(msg, sizeof msg);
    for (size_t n = 0; n <= sizeof msg; n += (n < 40 ? 1 : 13)) {
      uint64_t want;
      crypto_shorthash_siphash24((unsigned char *)&want, msg, n, key);
      ck_assert_uint_eq(shm__hash(key, msg, n), want);
    }
  }
}
END_TEST

/* shm_prefetch_ops is a hint: any mix of present, absent, empty, NULL and
 * oversized keys, in any number, changes nothing (ASan watches the reads). */
START_TEST(prefetch_ops_is_only_a_hint) {
  char keys[300][16];
  shm_op ops[300];
  for (int i = 0; i < 300; i++) {
    int kl = snprintf(keys[i], sizeof keys[i], "pf%d", i);
    if (i % 2 == 0) CK_OK(shm_put(ut_s, keys[i], (size_t)kl, "v", 1, 0, NULL));
    ops[i] = (shm_op){SHM_OP_PUT, keys[i], (size_t)kl, NULL, 0, 0, 0};
  }
  static char big[SHM_KEY_MAX + 10];
  ops[7] = (shm_op){SHM_OP_PUT, NULL, 5, NULL, 0, 0, 0};     /* NULL key */
  ops[8] = (shm_op){SHM_OP_PUT, big, sizeof big, NULL, 0, 0, 0}; /* too long */
  ops[9] = (shm_op){SHM_OP_PUT, "", 0, NULL, 0, 0, 0};      /* empty key */
  shm_stats a, b;
  shm_store_stats(ut_s, &a);
  shm_prefetch_ops(ut_s, ops, 300);
  shm_prefetch_ops(ut_s, ops, 1);
  shm_prefetch_ops(ut_s, ops, 0);
  shm_store_stats(ut_s, &b);
  ck_assert_uint_eq(a.commit_seq, b.commit_seq);
  ck_assert_uint_eq(a.keys, b.keys);
  ck_assert_uint_eq(a.heap_used, b.heap_used);
  CK_OK(shm_read_begin(ut_v));
  for (int i = 0; i < 300; i++) {
    shm_val v;
    CK_RC(shm_get(ut_v, keys[i], strlen(keys[i]), &v),
          i % 2 == 0 ? 0 : SHOAL_ENOTFOUND);
  }
  shm_read_end(ut_v);
}
END_TEST

/* An empty key may come as a NULL pointer (protobuf-c hands the broker
 * empty bytes that way): every path must take it without touching it. */
START_TEST(null_empty_key) {
  uint64_t v1, v2;
  CK_OK(shm_put(ut_s, NULL, 0, "a", 1, 0, &v1));
  CK_OK(shm_put(ut_s, "", 0, "b", 1, 0, &v2));
  ck_assert_uint_gt(v2, v1);
  shm_op ops[2] = {{SHM_OP_PUT, NULL, 0, "c", 1, 0, 0},
                   {SHM_OP_CAS, NULL, 0, "d", 1, 0, 0}};
  size_t failed = 99;
  CK_RC(shm_batch(ut_s, ops, 2, NULL, &failed), SHOAL_ECONFLICT);
  ck_assert_uint_eq(failed, 1);
  ops[1].expect = v2;
  CK_RC(shm_batch(ut_s, ops, 2, NULL, &failed), SHOAL_ECONFLICT); /* sees op 0 */
  ops[1].kind = SHM_OP_PUT;
  CK_OK(shm_batch(ut_s, ops, 2, NULL, NULL));
  CK_OK(shm_read_begin(ut_v));
  shm_val v;
  CK_OK(shm_get(ut_v, NULL, 0, &v));
  ck_assert_uint_eq(v.len, 1);
  ck_assert_int_eq(((const char *)v.data)[0], 'd');
  shm_read_end(ut_v);
  CK_OK(shm_del(ut_s, NULL, 0, NULL));
  CK_OK(shm_read_begin(ut_v));
  CK_RC(shm_get(ut_v, NULL, 0, &v), SHOAL_ENOTFOUND);
  shm_read_end(ut_v);
}
END_TEST

Suite *ops_suite(void) {
  Suite *s = suite_create("ops");
  TCase *tc = ut_tcase("basic", 1, 60);
  tcase_add_test(tc, hash_is_libsodium_siphash);
  tcase_add_test(tc, put_get_basic);
  tcase_add_test(tc, null_empty_key);
  tcase_add_test(tc, prefetch_ops_is_only_a_hint);
  tcase_add_test(tc, overwrite_versions_increase);
  tcase_add_test(tc, failed_writes_do_not_commit);
  tcase_add_test(tc, del_semantics);
  tcase_add_test(tc, cas_semantics);
  tcase_add_test(tc, versions_strictly_increase);
  tcase_add_test(tc, batch_basic);
  tcase_add_test(tc, batch_ops_see_earlier_ops);
  tcase_add_test(tc, batch_failure_applies_nothing);
  tcase_add_test(tc, batch_large);
  tcase_add_test(tc, nested_sections);
  tcase_add_test(tc, store_view_reads);
  tcase_add_test(tc, stats_counters);
  suite_add_tcase(s, tc);

  tc = ut_tcase("bounds", 1, 240);
  tcase_add_test(tc, empty_key);
  tcase_add_test(tc, empty_value);
  tcase_add_test(tc, max_key);
  tcase_add_test(tc, big_values);
  tcase_add_test(tc, value_size_sweep);
  tcase_add_test(tc, index_grows_200k);
  suite_add_tcase(s, tc);

  tc = ut_tcase("ttl", 1, 60);
  tcase_add_test(tc, ttl_expiry);
  tcase_add_test(tc, ttl_expire_sweep);
  tcase_add_test(tc, ttl_expire_budget);
  suite_add_tcase(s, tc);

  tc = ut_tcase("read", 1, 120);
  tcase_add_test(tc, get_many_mixed);
  tcase_add_test(tc, get_many_large_batch);
  tcase_add_test(tc, prefix_end);
  tcase_add_test(tc, scan_order);
  tcase_add_test(tc, scan_ranges);
  tcase_add_test(tc, scan_prefix);
  tcase_add_test(tc, scan_stop_early);
  tcase_add_test(tc, scan_empty_store);
  tcase_add_test(tc, scan_agrees_with_get);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return ut_run(ops_suite()); }
