/*
 * test_mvcc.c - snapshots and memory: a section sees exactly one commit
 * (old values, whole batches), memory a section may still see is never
 * freed under it (same process and across fork, with the freed blocks
 * reused right away so a premature free would show as changed bytes),
 * reclamation keeps the heap bounded, reader slots are claimed, and the
 * slots of dead readers are swept so their memory comes back.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "unit.h"

#include "shm-internal.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static uint64_t stat_of(size_t off) {
  shm_stats st;
  ut_stats(ut_s, &st);
  return *(uint64_t *)((char *)&st + off);
}
#define STAT(f) stat_of(offsetof(shm_stats, f))

/* Reclaim until nothing more comes back (grace periods may need a couple of
 * rounds: unlinking a deleted key retires its entry, freed on a later call). */
static size_t reclaim_all(void) {
  size_t total = 0;
  for (int i = 0; i < 8; i++) {
    size_t n = shm_reclaim(ut_s);
    total += n;
    if (n == 0 && i >= 2) break;
  }
  return total;
}

/* Churn: overwrite @n scratch keys with values of @len, so that any block a
 * reclaim freed too early is reused and overwritten. */
static void churn(int rounds, size_t len) {
  for (int r = 0; r < rounds; r++) {
    for (int i = 0; i < 16; i++) {
      char k[16];
      int kl = snprintf(k, sizeof k, "churn%d", i);
      ut_put_gen(ut_s, k, kl, len, 1000 + r);
    }
    (void)shm_reclaim(ut_s);
  }
}

/* ----------------------------------------------------------- snapshots -- */

START_TEST(section_sees_old_value) {
  uint64_t v1 = ut_put_gen(ut_s, "k", 1, 100, 1);
  ut_put_gen(ut_s, "gone", 4, 50, 1);
  CK_OK(ut_view_open(&ut_v2, 0));
  CK_OK(shm_read_begin(ut_v));
  shm_val old;
  CK_OK(shm_get(ut_v, "k", 1, &old));
  ck_assert_uint_eq(old.version, v1);
  uint64_t v2 = ut_put_gen(ut_s, "k", 1, 100, 2);
  uint64_t v3 = ut_put_gen(ut_s, "k", 1, 3000, 3);
  CK_OK(shm_del(ut_s, "gone", 4, NULL));
  ut_put_gen(ut_s, "new", 3, 10, 1);
  ck_assert_uint_gt(v3, v2);
  reclaim_all();
  churn(10, 100);
  churn(10, 3000);
  /* the old section: everything as of v1 */
  shm_val val;
  CK_OK(shm_get(ut_v, "k", 1, &val));
  ck_assert_uint_eq(val.version, v1);
  ck_assert_uint_eq(val.len, 100);
  ck_assert_ptr_eq(val.data, old.data);
  ck_assert(ut_check_bytes(old.data, old.len, "k", 1, 1));
  CK_OK(shm_get(ut_v, "gone", 4, &val));
  ck_assert(ut_check_bytes(val.data, val.len, "gone", 4, 1));
  CK_RC(shm_get(ut_v, "new", 3, &val), SHOAL_ENOTFOUND);
  /* a new section elsewhere: the newest */
  CK_OK(shm_read_begin(ut_v2));
  ck_assert_uint_gt(shm_view_snapshot(ut_v2), shm_view_snapshot(ut_v));
  CK_OK(shm_get(ut_v2, "k", 1, &val));
  ck_assert_uint_eq(val.version, v3);
  ck_assert(ut_check_bytes(val.data, val.len, "k", 1, 3));
  CK_RC(shm_get(ut_v2, "gone", 4, &val), SHOAL_ENOTFOUND);
  CK_OK(shm_get(ut_v2, "new", 3, &val));
  shm_read_end(ut_v2);
  shm_read_end(ut_v);
  /* and the first view, in a new section, too */
  ut_assert_gen(ut_v, "k", 1, 3000, 3);
}
END_TEST

/* A reader in another process holds an old snapshot while the writer moves
 * on, reclaims and reuses memory. */
struct xp {
  int to_child[2], to_parent[2];
};

static int xp_wait(int fd) {
  char c;
  return read(fd, &c, 1) == 1 ? c : -1;
}
static void xp_say(int fd, char c) {
  ssize_t w = write(fd, &c, 1);
  (void)w;
}

START_TEST(section_cross_process) {
  ut_put_gen(ut_s, "k", 1, 200, 1);
  ut_put_gen(ut_s, "big", 3, 200000, 1);
  struct xp p;
  ck_assert_int_eq(pipe(p.to_child), 0);
  ck_assert_int_eq(pipe(p.to_parent), 0);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    ut_child_alarm(60);
    shm_view *v = NULL;
    int bad = 0;
    if (ut_view_open(&v, 0) != 0) _exit(10);
    if (shm_read_begin(v) != 0) _exit(11);
    shm_val a, b;
    if (shm_get(v, "k", 1, &a) != 0 || shm_get(v, "big", 3, &b) != 0) _exit(12);
    xp_say(p.to_parent[1], 'r'); /* ready: snapshot pinned */
    if (xp_wait(p.to_child[0]) != 'c') _exit(13);
    if (!ut_check_bytes(a.data, a.len, "k", 1, 1) || a.len != 200) bad |= 1;
    if (!ut_check_bytes(b.data, b.len, "big", 3, 1) || b.len != 200000) bad |= 2;
    shm_val a2;
    if (shm_get(v, "k", 1, &a2) != 0 || a2.version != a.version) bad |= 4;
    if (shm_get(v, "new", 3, &a2) != SHOAL_ENOTFOUND) bad |= 8;
    shm_read_end(v);
    /* a new section sees the writer's latest */
    if (shm_read_begin(v) != 0) _exit(14);
    if (shm_get(v, "k", 1, &a2) != 0 || !ut_check_bytes(a2.data, a2.len, "k", 1, 99))
      bad |= 16;
    shm_read_end(v);
    shm_view_close(v);
    _exit(bad ? 20 + bad : 0);
  }
  close(p.to_child[0]);
  close(p.to_parent[1]);
  ck_assert_int_eq(xp_wait(p.to_parent[0]), 'r');
  for (int i = 2; i < 100; i++) ut_put_gen(ut_s, "k", 1, 200, i);
  ut_put_gen(ut_s, "big", 3, 10, 2);
  CK_OK(shm_del(ut_s, "big", 3, NULL));
  ut_put_gen(ut_s, "new", 3, 10, 1);
  reclaim_all();
  churn(5, 200);
  churn(3, 200000);
  shm_stats st;
  ut_stats(ut_s, &st);
  ck_assert_uint_ge(st.readers_busy, 1);
  ck_assert_uint_gt(st.retired, 0);
  xp_say(p.to_child[1], 'c');
  ut_wait_child_ok(pid);
  close(p.to_child[1]);
  close(p.to_parent[0]);
}
END_TEST

START_TEST(batch_seen_whole_or_not) {
  for (int i = 0; i < 10; i++) {
    char k[8];
    int kl = snprintf(k, sizeof k, "b%d", i);
    ut_put_gen(ut_s, k, kl, 32, 0);
  }
  CK_OK(ut_view_open(&ut_v2, 0));
  CK_OK(shm_read_begin(ut_v)); /* before */
  shm_op ops[13];
  uint8_t vals[10][32];
  char keys[13][8];
  for (int i = 0; i < 10; i++) {
    int kl = snprintf(keys[i], 8, "b%d", i);
    ut_fill(vals[i], 32, keys[i], kl, 1);
    ops[i] = (shm_op){.kind = SHM_OP_PUT, .key = keys[i], .klen = kl,
                      .val = vals[i], .vlen = 32};
  }
  for (int i = 0; i < 3; i++) {
    int kl = snprintf(keys[10 + i], 8, "b%d", 7 + i);
    ops[10 + i] = (shm_op){.kind = SHM_OP_DEL, .key = keys[10 + i], .klen = kl};
  }
  uint64_t seq = 0;
  CK_OK(shm_batch(ut_s, ops, 13, &seq, NULL));
  CK_OK(shm_read_begin(ut_v2)); /* after */
  for (int i = 0; i < 10; i++) {
    shm_val a, b;
    CK_OK(shm_get(ut_v, keys[i], 2, &a));
    ck_assert(ut_check_bytes(a.data, a.len, keys[i], 2, 0));
    ck_assert_uint_lt(a.version, seq);
    int rc = shm_get(ut_v2, keys[i], 2, &b);
    if (i >= 7) {
      CK_RC(rc, SHOAL_ENOTFOUND);
    } else {
      CK_OK(rc);
      ck_assert_uint_eq(b.version, seq);
      ck_assert(ut_check_bytes(b.data, b.len, keys[i], 2, 1));
    }
  }
  shm_read_end(ut_v2);
  shm_read_end(ut_v);
}
END_TEST

/* A reader process checks that every snapshot holds all keys of one batch
 * generation, while the writer commits thousands of batches. */
enum { BK = 10 };

static int batch_reader(void *arg) {
  int ms = *(int *)arg;
  shm_view *v = NULL;
  if (ut_view_open(&v, 0) != 0) return -1;
  uint64_t t0 = ut_now_ms(), last_gen = 0, sections = 0, distinct = 0;
  int bad = 0;
  while (ut_now_ms() - t0 < (uint64_t)ms && !bad) {
    if (shm_read_begin(v) != 0) return -2;
    uint64_t gen = UINT64_MAX, ver = 0;
    for (int i = 0; i < BK; i++) {
      char k[8];
      int kl = snprintf(k, sizeof k, "b%d", i);
      shm_val val;
      if (shm_get(v, k, kl, &val) != 0) {
        bad = 1;
        break;
      }
      /* the value's first 8 bytes carry the generation */
      uint64_t g;
      memcpy(&g, val.data, 8);
      if (i == 0) {
        gen = g;
        ver = val.version;
      } else if (g != gen || val.version != ver) {
        bad = 2;
      }
      if (val.len != 8 + (g % 50) * 16) bad = 3;
    }
    if (!bad && gen < last_gen) bad = 4; /* snapshots never go back */
    if (gen != last_gen) distinct++;
    last_gen = gen;
    shm_read_end(v);
    sections++;
  }
  shm_view_close(v);
  if (bad) return bad;
  return distinct > 1 ? 0 : -3; /* we did see the writer move */
}

START_TEST(batch_atomic_under_reader) {
  uint8_t buf[BK][8 + 50 * 16];
  shm_op ops[BK];
  char keys[BK][8];
  for (uint64_t gen = 0; gen < 1; gen++) {
    for (int i = 0; i < BK; i++) {
      int kl = snprintf(keys[i], 8, "b%d", i);
      memset(buf[i], (int)i, sizeof buf[i]);
      memcpy(buf[i], &gen, 8);
      ops[i] = (shm_op){.kind = SHM_OP_PUT, .key = keys[i], .klen = kl,
                        .val = buf[i], .vlen = 8 + (gen % 50) * 16};
    }
    CK_OK(shm_batch(ut_s, ops, BK, NULL, NULL));
  }
  int ms = 1500;
  int p[2];
  ck_assert_int_eq(pipe(p), 0);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    ut_child_alarm(60);
    int r = batch_reader(&ms);
    ssize_t w = write(p[1], &r, sizeof r);
    (void)w;
    _exit(0);
  }
  close(p[1]);
  uint64_t t0 = ut_now_ms();
  uint64_t gen = 1;
  while (ut_now_ms() - t0 < (uint64_t)ms + 200) {
    for (int i = 0; i < BK; i++) {
      memcpy(buf[i], &gen, 8);
      ops[i].vlen = 8 + (gen % 50) * 16;
    }
    CK_OK(shm_batch(ut_s, ops, BK, NULL, NULL));
    gen++;
  }
  int r = 99;
  ck_assert_int_eq(read(p[0], &r, sizeof r), (ssize_t)sizeof r);
  close(p[0]);
  ut_wait_child_ok(pid);
  ck_assert_msg(r == 0, "reader saw a torn or backward snapshot (code %d)", r);
  ck_assert_uint_gt(gen, 100);
}
END_TEST

/* A section pinned before the index grows several times still finds its
 * keys and does not see the new ones. */
START_TEST(section_survives_index_growth) {
  for (int i = 0; i < 10; i++) {
    char k[16];
    int kl = snprintf(k, sizeof k, "orig%d", i);
    ut_put_gen(ut_s, k, kl, 40, i);
  }
  uint64_t cap0 = STAT(index_capacity);
  CK_OK(shm_read_begin(ut_v));
  for (int i = 0; i < 100000; i++) {
    char k[16];
    int kl = snprintf(k, sizeof k, "n%06d", i);
    ut_put_gen(ut_s, k, kl, 8, i);
  }
  CK_OK(shm_del(ut_s, "orig3", 5, NULL));
  reclaim_all();
  ck_assert_uint_gt(STAT(index_capacity), 8 * cap0);
  for (int i = 0; i < 10; i++) {
    char k[16];
    int kl = snprintf(k, sizeof k, "orig%d", i);
    shm_val val;
    CK_OK(shm_get(ut_v, k, kl, &val));
    ck_assert(ut_check_bytes(val.data, val.len, k, kl, i));
  }
  for (int i = 0; i < 100000; i += 997) {
    char k[16];
    int kl = snprintf(k, sizeof k, "n%06d", i);
    shm_val val;
    CK_RC(shm_get(ut_v, k, kl, &val), SHOAL_ENOTFOUND);
  }
  shm_read_end(ut_v);
  shm_val val;
  CK_OK(shm_read_begin(ut_v));
  CK_OK(shm_get(ut_v, "n099999", 7, &val));
  CK_RC(shm_get(ut_v, "orig3", 5, &val), SHOAL_ENOTFOUND);
  shm_read_end(ut_v);
}
END_TEST

struct seen {
  int n;
  char keys[1000][8];
  uint64_t gen[1000];
  int bad;
};

static int seen_fn(void *arg, const void *key, size_t klen,
                   const shm_val *val) {
  struct seen *s = arg;
  if (s->n >= 1000 || klen >= 8) {
    s->bad = 1;
    return 1;
  }
  memcpy(s->keys[s->n], key, klen);
  s->keys[s->n][klen] = 0;
  uint64_t g = UINT64_MAX;
  if (val->len >= 8) memcpy(&g, val->data, 8);
  s->gen[s->n] = g;
  s->n++;
  return 0;
}

static void put_tagged(const char *k, uint64_t gen) {
  uint8_t buf[24];
  memset(buf, 0x5a, sizeof buf);
  memcpy(buf, &gen, 8);
  CK_OK(shm_put(ut_s, k, strlen(k), buf, sizeof buf, 0, NULL));
}

/* A scan in an old section sees the old key set while keys are deleted,
 * unlinked, re-put and inserted around it. */
START_TEST(section_scan_stable) {
  for (int i = 0; i < 500; i++) {
    char k[8];
    snprintf(k, sizeof k, "s%03d", i * 2);
    put_tagged(k, 1);
  }
  CK_OK(shm_read_begin(ut_v));
  for (int i = 0; i < 500; i += 2) {
    char k[8];
    snprintf(k, sizeof k, "s%03d", i * 2);
    CK_OK(shm_del(ut_s, k, strlen(k), NULL));
  }
  reclaim_all();
  for (int i = 0; i < 500; i += 4) {
    char k[8];
    snprintf(k, sizeof k, "s%03d", i * 2);
    put_tagged(k, 2); /* re-put some deleted ones */
  }
  for (int i = 0; i < 500; i++) {
    char k[8];
    snprintf(k, sizeof k, "s%03d", i * 2 + 1);
    put_tagged(k, 3); /* interleaved new keys */
  }
  reclaim_all();
  struct seen *s = calloc(1, sizeof *s);
  CK_OK(shm_scan(ut_v, NULL, 0, NULL, 0, seen_fn, s));
  ck_assert_int_eq(s->bad, 0);
  ck_assert_int_eq(s->n, 500);
  for (int i = 0; i < 500; i++) {
    char k[8];
    snprintf(k, sizeof k, "s%03d", i * 2);
    ck_assert_str_eq(s->keys[i], k);
    ck_assert_uint_eq(s->gen[i], 1);
  }
  shm_read_end(ut_v);
  /* a new section sees the new set */
  memset(s, 0, sizeof *s);
  CK_OK(shm_read_begin(ut_v));
  CK_OK(shm_scan(ut_v, NULL, 0, NULL, 0, seen_fn, s));
  shm_read_end(ut_v);
  ck_assert_int_eq(s->n, 250 + 125 + 500);
  free(s);
  ck_assert_uint_eq(ut_check(ut_v, 1), 0);
}
END_TEST

/* -------------------------------------------------------- reclamation --- */

START_TEST(reclaim_bounded_overwrites) {
  /* small values, a few size classes */
  for (int i = 0; i < 2000; i++) ut_put_gen(ut_s, "k", 1, 50 + (i % 5) * 100, i);
  reclaim_all();
  shm_stats base;
  ut_stats(ut_s, &base);
  for (int i = 2000; i < 40000; i++) {
    ut_put_gen(ut_s, "k", 1, 50 + (i % 5) * 100, i);
    if (i % 5000 == 0) (void)shm_reclaim(ut_s);
  }
  reclaim_all();
  shm_stats st;
  ut_stats(ut_s, &st);
  ck_assert_msg(st.records <= base.records + 2,
                "records grew with overwrites: %" PRIu64 " -> %" PRIu64,
                base.records, st.records);
  ck_assert_msg(st.heap_used <= base.heap_used + 4096,
                "heap_used grew with overwrites: %" PRIu64 " -> %" PRIu64,
                base.heap_used, st.heap_used);
  ck_assert_uint_le(st.heap_top, base.heap_top + 5 * 65536);
  ck_assert_uint_eq(st.retired, 0);
  ck_assert_uint_gt(st.reclaimed, 30000);
  ut_assert_gen(ut_v, "k", 1, 50 + (39999 % 5) * 100, 39999);

  /* large values (page extents) */
  for (int i = 0; i < 20; i++) ut_put_gen(ut_s, "L", 1, 300000, i);
  reclaim_all();
  ut_stats(ut_s, &base);
  for (int i = 20; i < 600; i++) {
    ut_put_gen(ut_s, "L", 1, 300000 + (i % 3) * 5000, i);
    if (i % 10 == 0) (void)shm_reclaim(ut_s);
  }
  reclaim_all();
  ut_stats(ut_s, &st);
  ck_assert_msg(st.heap_used <= base.heap_used + 2 * 320000,
                "heap_used grew with large overwrites: %" PRIu64 " -> %" PRIu64,
                base.heap_used, st.heap_used);
  /* at most ~10 retired extents between reclaims, and freed runs reused */
  ck_assert_msg(st.heap_top <= base.heap_top + 16 * 320000,
                "heap_top grew with large overwrites: %" PRIu64 " -> %" PRIu64,
                base.heap_top, st.heap_top);
  ut_assert_gen(ut_v, "L", 1, 300000 + (599 % 3) * 5000, 599);
  ck_assert_uint_eq(ut_check(ut_v, 1), 0);
}
END_TEST

/* Retired memory is garbage, not data: a store whose live data fits must
 * not answer ENOSPC just because nobody called shm_reclaim yet. One 1 MiB
 * key overwritten in an 8 MiB store, no reader in a section. */
START_TEST(reclaim_before_enospc) {
  shm_store_close(ut_s, 1);
  ut_s = NULL;
  shm_view_close(ut_v);
  ut_v = NULL;
  CK_OK(shm_store_unlink(ut_name, ut_dir));
  CK_OK(ut_store_open(&ut_s, 8ull << 20, 0, SHM_CREATE | SHM_EXCL));
  CK_OK(ut_view_open(&ut_v, 0));
  static uint8_t buf[1 << 20];
  for (int i = 0; i < 200; i++) {
    size_t len = (1u << 20) - (i % 3) * 4096;
    ut_fill(buf, len, "L", 1, i);
    int rc = shm_put(ut_s, "L", 1, buf, len, 0, NULL);
    ck_assert_msg(rc == 0, "overwrite %d of a 1 MiB key in an 8 MiB store: "
                  "%s (%s)", i, shoal_errname(rc), shm_store_lasterr(ut_s));
  }
  ut_assert_gen(ut_v, "L", 1, (1u << 20) - (199 % 3) * 4096, 199);
  /* the same through a batch and cas */
  for (int i = 200; i < 260; i++) {
    shm_val val;
    CK_OK(shm_read_begin(ut_v));
    CK_OK(shm_get(ut_v, "L", 1, &val));
    uint64_t ver = val.version;
    shm_read_end(ut_v);
    ut_fill(buf, 1u << 20, "L", 1, i);
    int rc = shm_cas(ut_s, "L", 1, ver, buf, 1u << 20, 0, NULL);
    ck_assert_msg(rc == 0, "cas %d: %s (%s)", i, shoal_errname(rc),
                  shm_store_lasterr(ut_s));
  }
  ut_assert_gen(ut_v, "L", 1, 1u << 20, 259);
}
END_TEST

/* Writes reclaim on their own "every so often": without any shm_reclaim
 * call the heap still stays bounded. */
START_TEST(reclaim_automatic) {
  for (int i = 0; i < 1000; i++) ut_put_gen(ut_s, "k", 1, 200, i);
  shm_stats base, st;
  ut_stats(ut_s, &base);
  for (int i = 1000; i < 100000; i++) ut_put_gen(ut_s, "k", 1, 200, i);
  ut_stats(ut_s, &st);
  ck_assert_msg(st.heap_used < base.heap_used + (4u << 20),
                "no automatic reclamation: heap_used %" PRIu64 " -> %" PRIu64,
                base.heap_used, st.heap_used);
  ck_assert_uint_gt(st.reclaimed, 0);
}
END_TEST

START_TEST(reclaim_delete_cycles_bounded) {
  shm_stats first, st;
  for (int cycle = 0; cycle < 15; cycle++) {
    for (int i = 0; i < 2000; i++) {
      char k[16];
      int kl = snprintf(k, sizeof k, "c%05d", i);
      ut_put_gen(ut_s, k, kl, 20 + i % 300, cycle);
    }
    for (int i = 0; i < 2000; i++) {
      char k[16];
      int kl = snprintf(k, sizeof k, "c%05d", i);
      CK_OK(shm_del(ut_s, k, kl, NULL));
    }
    reclaim_all();
    ut_stats(ut_s, &st);
    ck_assert_uint_eq(st.keys, 0);
    if (cycle == 1) first = st;
    if (cycle > 1) {
      ck_assert_msg(st.heap_used <= first.heap_used + 65536,
                    "cycle %d: heap_used %" PRIu64 " (cycle 1: %" PRIu64 ")",
                    cycle, st.heap_used, first.heap_used);
      ck_assert_uint_le(st.heap_top, first.heap_top + 2 * 65536);
      ck_assert_uint_le(st.entries, first.entries);
    }
  }
  /* dead keys nobody can see are unlinked: no entries, no records left */
  ck_assert_uint_eq(st.entries, 0);
  ck_assert_uint_eq(st.records, 0);
  ck_assert_uint_eq(st.retired, 0);
  ck_assert_uint_eq(ut_check(ut_v, 1), 0);
}
END_TEST

/* The heart of it: a reader holding a section keeps every byte it got, even
 * while the writer retires, reclaims and reuses memory of the same sizes. */
START_TEST(reclaim_waits_for_section) {
  ut_put_gen(ut_s, "small", 5, 64, 0);
  ut_put_gen(ut_s, "mid", 3, 3000, 0);
  ut_put_gen(ut_s, "large", 5, 150000, 0);
  ut_put_gen(ut_s, "del", 3, 64, 0);
  CK_OK(shm_read_begin(ut_v));
  shm_val s0, m0, l0, d0;
  CK_OK(shm_get(ut_v, "small", 5, &s0));
  CK_OK(shm_get(ut_v, "mid", 3, &m0));
  CK_OK(shm_get(ut_v, "large", 5, &l0));
  CK_OK(shm_get(ut_v, "del", 3, &d0));
  for (int i = 1; i < 200; i++) {
    ut_put_gen(ut_s, "small", 5, 64, i);
    ut_put_gen(ut_s, "mid", 3, 3000, i);
    if (i % 20 == 0) ut_put_gen(ut_s, "large", 5, 150000, i);
  }
  CK_OK(shm_del(ut_s, "del", 3, NULL));
  reclaim_all();
  churn(10, 64);
  churn(10, 3000);
  churn(3, 150000);
  shm_stats st;
  ut_stats(ut_s, &st);
  ck_assert_uint_gt(st.retired, 0);
  ck_assert_uint_eq(st.readers_busy, 1);
  ck_assert_uint_eq(st.oldest_snapshot, shm_view_snapshot(ut_v));
  ck_assert(ut_check_bytes(s0.data, s0.len, "small", 5, 0));
  ck_assert(ut_check_bytes(m0.data, m0.len, "mid", 3, 0));
  ck_assert(ut_check_bytes(l0.data, l0.len, "large", 5, 0));
  ck_assert(ut_check_bytes(d0.data, d0.len, "del", 3, 0));
  shm_val again;
  CK_OK(shm_get(ut_v, "del", 3, &again));
  ck_assert_ptr_eq(again.data, d0.data);
  CK_OK(shm_get(ut_v, "small", 5, &again));
  ck_assert_ptr_eq(again.data, s0.data);
  shm_read_end(ut_v);
  /* now it can all go */
  size_t freed = reclaim_all();
  ck_assert_uint_gt(freed, 0);
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.retired, 0);
  ck_assert_uint_eq(st.retired_bytes, 0);
  ck_assert_uint_eq(st.readers_busy, 0);
  ck_assert_uint_eq(st.oldest_snapshot, 0);
  ut_assert_gen(ut_v, "small", 5, 64, 199);
  ck_assert_uint_eq(ut_check(ut_v, 1), 0);
}
END_TEST

/* A reader that stays in its section while a hot key is overwritten more
 * than a million times (minutes of a few thousand writes a second) still
 * reads its old value: a long chain of retained versions is a normal state,
 * not corruption. The same holds for the writer's recovery after a crash
 * in that state, and for shm_check. */
START_TEST(long_chain_under_old_section) {
  enum { N = (1 << 20) + 5000 };
  ut_put_gen(ut_s, "hot", 3, 16, 0);
  CK_OK(shm_read_begin(ut_v));
  shm_val old;
  CK_OK(shm_get(ut_v, "hot", 3, &old));
  uint8_t buf[16];
  for (int i = 1; i <= N; i++) {
    memcpy(buf, &i, sizeof i);
    int rc = shm_put(ut_s, "hot", 3, buf, sizeof buf, 0, NULL);
    ck_assert_msg(rc == 0, "overwrite %d: %s", i, shoal_errname(rc));
  }
  shm_val val;
  int rc = shm_get(ut_v, "hot", 3, &val);
  ck_assert_msg(rc == 0, "get in a section older than %d overwrites: %s", N,
                shoal_errname(rc));
  ck_assert_uint_eq(val.version, old.version);
  ck_assert(ut_check_bytes(val.data, val.len, "hot", 3, 0));
  CK_OK(ut_view_open(&ut_v2, 0));
  unsigned problems = ut_check(ut_v2, 0);
  ck_assert_msg(problems == 0, "shm_check (live) with a long chain: %u "
                "problems", problems);
  /* the writer dies in this state; a new one must attach */
  shm_store_close(ut_s, 0);
  ut_s = NULL;
  rc = ut_store_open(&ut_s, 0, 0, 0);
  ck_assert_msg(rc == 0, "recovery with a %d-record chain: %s", N,
                shoal_errname(rc));
  rc = shm_get(ut_v, "hot", 3, &val);
  ck_assert_msg(rc == 0, "old section after recovery: %s", shoal_errname(rc));
  ck_assert(ut_check_bytes(val.data, val.len, "hot", 3, 0));
  shm_read_end(ut_v);
  CK_OK(shm_read_begin(ut_v));
  CK_OK(shm_get(ut_v, "hot", 3, &val));
  int last;
  memcpy(&last, val.data, sizeof last);
  ck_assert_int_eq(last, N);
  shm_read_end(ut_v);
  for (int i = 0; i < 8; i++) (void)shm_reclaim(ut_s);
  shm_stats st;
  ut_stats(ut_s, &st);
  ck_assert_uint_le(st.records, 2);
  ck_assert_uint_eq(ut_check(ut_v, 1), 0);
}
END_TEST

/* ------------------------------------------------------- reader slots --- */

START_TEST(slots_claimed_and_released) {
  shm_stats st;
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.readers_claimed, 1); /* the fixture's view */
  ck_assert_int_ge(shm_view_slot(ut_v), 0);
  CK_OK(ut_view_open(&ut_v2, 0));
  ck_assert_int_ne(shm_view_slot(ut_v2), shm_view_slot(ut_v));
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.readers_claimed, 2);
  ck_assert_uint_eq(st.readers_busy, 0);
  CK_OK(shm_read_begin(ut_v2));
  ut_sleep_ms(30);
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.readers_busy, 1);
  ck_assert_uint_eq(st.oldest_snapshot, shm_view_snapshot(ut_v2));
  ck_assert_uint_ge(st.oldest_snapshot_age_ms, 20);
  shm_read_end(ut_v2);
  shm_view_close(ut_v2);
  ut_v2 = NULL;
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.readers_claimed, 1);
  ck_assert_uint_eq(st.readers_busy, 0);
  /* many open/close cycles do not leak slots */
  for (int i = 0; i < 3000; i++) {
    shm_view *v = NULL;
    CK_OK(ut_view_open(&v, 0));
    shm_view_close(v);
  }
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.readers_claimed, 1);
  /* nothing to sweep: every owner is alive */
  ck_assert_uint_eq(shm_sweep_readers(ut_s), 0);
}
END_TEST

/* A child dies (_exit) inside a section: its slot stays busy and pins
 * memory; shm_sweep_readers clears it and reclamation resumes. */
START_TEST(dead_reader_in_section) {
  ut_put_gen(ut_s, "k", 1, 500, 0);
  int p[2];
  ck_assert_int_eq(pipe(p), 0);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    shm_view *v = NULL;
    uint64_t snap = 0;
    if (ut_view_open(&v, 0) == 0 && shm_read_begin(v) == 0)
      snap = shm_view_snapshot(v);
    ssize_t w = write(p[1], &snap, sizeof snap);
    (void)w;
    _exit(0); /* no read_end, no close */
  }
  close(p[1]);
  uint64_t snap = 0;
  ck_assert_int_eq(read(p[0], &snap, sizeof snap), (ssize_t)sizeof snap);
  close(p[0]);
  ck_assert_uint_gt(snap, 0);
  ut_wait_child_ok(pid); /* reaped: the pid no longer exists */
  shm_stats st;
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.readers_busy, 1);
  ck_assert_uint_eq(st.readers_claimed, 2);
  ck_assert_uint_eq(st.oldest_snapshot, snap);
  for (int i = 1; i < 500; i++) ut_put_gen(ut_s, "k", 1, 500, i);
  reclaim_all();
  ut_stats(ut_s, &st);
  uint64_t pinned = st.retired;
  ck_assert_msg(pinned >= 400, "retired %" PRIu64 ": the dead reader's "
                "snapshot should pin the overwritten records", pinned);
  ck_assert_uint_eq(shm_reclaim(ut_s), 0);
  ck_assert_uint_ge(shm_sweep_readers(ut_s), 1);
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.readers_busy, 0);
  ck_assert_uint_eq(st.readers_claimed, 1);
  ck_assert_uint_eq(st.oldest_snapshot, 0);
  size_t freed = reclaim_all();
  /* (an embedded record is retired but freed with its entry: -1) */
  ck_assert_uint_ge(freed + 1, pinned);
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.retired, 0);
  ck_assert_uint_eq(shm_sweep_readers(ut_s), 0);
  ut_assert_gen(ut_v, "k", 1, 500, 499);
}
END_TEST

START_TEST(dead_reader_idle_slot) {
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    shm_view *v = NULL;
    _exit(ut_view_open(&v, 0) == 0 ? 0 : 1);
  }
  ut_wait_child_ok(pid);
  shm_stats st;
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.readers_claimed, 2);
  ck_assert_uint_eq(st.readers_busy, 0);
  ck_assert_uint_eq(shm_sweep_readers(ut_s), 1);
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.readers_claimed, 1);
}
END_TEST

/* A live reader in a section is never swept; once killed, it is. */
START_TEST(sweep_spares_live_readers) {
  ut_put_gen(ut_s, "k", 1, 10, 0);
  int p[2];
  ck_assert_int_eq(pipe(p), 0);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    ut_child_alarm(60);
    shm_view *v = NULL;
    if (ut_view_open(&v, 0) != 0 || shm_read_begin(v) != 0) _exit(1);
    xp_say(p[1], 'r');
    pause();
    _exit(0);
  }
  close(p[1]);
  ck_assert_int_eq(xp_wait(p[0]), 'r');
  close(p[0]);
  ck_assert_uint_eq(shm_sweep_readers(ut_s), 0);
  shm_stats st;
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.readers_busy, 1);
  /* a zombie is not dead yet for sweeping purposes? It cannot read any
   * more, but its pid exists until reaped; only check after reaping. */
  kill(pid, SIGKILL);
  int ws;
  ck_assert_int_eq(waitpid(pid, &ws, 0), pid);
  ck_assert_uint_eq(shm_sweep_readers(ut_s), 1);
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.readers_busy, 0);
}
END_TEST

/* Broker leases: the writer claims a slot for a pid, the client adopts it. */
START_TEST(lease_claim_attach_release) {
  int slot = shm_lease_claim(ut_s, getpid());
  ck_assert_int_ge(slot, 0);
  ck_assert_int_ne(slot, shm_view_slot(ut_v));
  shm_stats st;
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.readers_claimed, 2);
  CK_OK(ut_view_open(&ut_v2, SHM_VIEW_NOSLOT));
  ck_assert_int_eq(shm_view_slot(ut_v2), -1);
  /* not ours: a free slot, and one out of range */
  unsigned free_slot = 0;
  while ((int)free_slot == slot || (int)free_slot == shm_view_slot(ut_v))
    free_slot++;
  CK_RC(shm_view_attach_slot(ut_v2, free_slot), SHOAL_EINVAL);
  CK_RC(shm_view_attach_slot(ut_v2, 1u << 30), SHOAL_EINVAL);
  CK_OK(shm_view_attach_slot(ut_v2, (unsigned)slot));
  ck_assert_int_eq(shm_view_slot(ut_v2), slot);
  ut_put_gen(ut_s, "k", 1, 10, 1);
  ut_assert_gen(ut_v2, "k", 1, 10, 1);
  CK_OK(shm_read_begin(ut_v2));
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.readers_busy, 1);
  shm_read_end(ut_v2);
  /* closing the view does not free a leased slot; the writer does */
  shm_view_close(ut_v2);
  ut_v2 = NULL;
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.readers_claimed, 2);
  shm_lease_release(ut_s, (unsigned)slot, getpid() + 1); /* wrong pid: no-op */
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.readers_claimed, 2);
  shm_lease_release(ut_s, (unsigned)slot, getpid());
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.readers_claimed, 1);
}
END_TEST

/* A lease held for a process that dies is swept like any dead reader. */
START_TEST(lease_of_dead_process_swept) {
  int p[2];
  ck_assert_int_eq(pipe(p), 0);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    ut_child_alarm(60);
    close(p[1]);
    char c;
    ssize_t r = read(p[0], &c, 1);
    (void)r;
    _exit(0);
  }
  close(p[0]);
  int slot = shm_lease_claim(ut_s, pid);
  ck_assert_int_ge(slot, 0);
  ck_assert_uint_eq(shm_sweep_readers(ut_s), 0);
  close(p[1]);
  ut_wait_child_ok(pid);
  ck_assert_uint_eq(shm_sweep_readers(ut_s), 1);
  shm_stats st;
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.readers_claimed, 1);
}
END_TEST

/* Several ops on one key in one batch: the records superseded inside the
 * batch are never visible; a section older than the batch still sees the
 * value before it, a newer one the last op's result; version chains stay
 * strictly decreasing (shm_check), and everything the batch retired comes
 * back once the old section ends. Also across a recovery. */
START_TEST(same_key_many_ops_in_one_batch) {
  uint8_t v0[48], v[4][40];
  ut_fill(v0, sizeof v0, "k", 1, 0);
  uint64_t ver0;
  CK_OK(shm_put(ut_s, "k", 1, v0, sizeof v0, 0, &ver0));
  CK_OK(shm_put(ut_s, "z", 1, v0, sizeof v0, 0, NULL));
  CK_OK(ut_view_open(&ut_v2, 0));
  (void)shm_reclaim(ut_s);
  shm_stats base;
  ut_stats(ut_s, &base);
  CK_OK(shm_read_begin(ut_v)); /* pins the state before the batches */
  for (int round = 0; round < 3; round++) {
    for (int i = 0; i < 4; i++) ut_fill(v[i], sizeof v[i], "k", 1, 10 * round + i + 1);
    shm_op ops[] = {
        {.kind = SHM_OP_PUT, .key = "k", .klen = 1, .val = v[0], .vlen = 40},
        {.kind = SHM_OP_PUT, .key = "k", .klen = 1, .val = v[1], .vlen = 40},
        {.kind = SHM_OP_DEL, .key = "k", .klen = 1},
        {.kind = SHM_OP_CAS, .key = "k", .klen = 1, .val = v[2], .vlen = 40,
         .expect = 0}, /* after the delete: absent */
        {.kind = SHM_OP_PUT, .key = "n", .klen = 1, .val = v[3], .vlen = 40},
        {.kind = SHM_OP_PUT, .key = "n", .klen = 1, .val = v[0], .vlen = 40},
        {.kind = SHM_OP_DEL_ANY, .key = "z", .klen = 1},
        {.kind = SHM_OP_PUT, .key = "k", .klen = 1, .val = v[3], .vlen = 40},
    };
    uint64_t seq;
    CK_OK(shm_batch(ut_s, ops, sizeof ops / sizeof ops[0], &seq, NULL));
    shm_val a;
    /* the old section: as before every batch */
    CK_OK(shm_get(ut_v, "k", 1, &a));
    ck_assert_uint_eq(a.version, ver0);
    ck_assert(ut_check_bytes(a.data, a.len, "k", 1, 0));
    CK_RC(shm_get(ut_v, "n", 1, &a), SHOAL_ENOTFOUND);
    CK_OK(shm_get(ut_v, "z", 1, &a));
    /* a new section: the last op of each key */
    ut_assert_gen(ut_v2, "k", 1, 40, 10 * round + 4);
    void *cp = NULL;
    size_t cl = 0;
    CK_OK(ut_get_copy(ut_v2, "n", 1, &cp, &cl, NULL));
    ck_assert_uint_eq(cl, 40);
    ck_assert(memcmp(cp, v[0], 40) == 0); /* n's last put in the batch */
    free(cp);
    cp = NULL;
    CK_RC(ut_get_copy(ut_v2, "z", 1, &cp, NULL, NULL), SHOAL_ENOTFOUND);
    ck_assert_uint_eq(ut_check(ut_v2, 1), 0);
    /* re-create z and n's absence for the next round */
    CK_OK(shm_put(ut_s, "z", 1, v0, sizeof v0, 0, NULL));
    CK_OK(shm_del(ut_s, "n", 1, NULL));
  }
  shm_read_end(ut_v);
  shm_reclaim(ut_s);
  shm_reclaim(ut_s);
  shm_stats st;
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.retired, 0);
  ck_assert_uint_eq(st.records, base.records); /* k and z: one record each */
  ck_assert_uint_eq(st.keys, 2);
  ck_assert_uint_eq(ut_check(ut_v2, 1), 0);
  /* and through a recovery */
  shm_store_close(ut_s, 0);
  ut_s = NULL;
  CK_OK(ut_store_open(&ut_s, 0, 0, 0));
  ck_assert_uint_eq(ut_check(ut_v2, 1), 0);
  ut_assert_gen(ut_v2, "k", 1, 40, 24);
}
END_TEST

/* Overwritten values move back into their entries once the version they
 * replaced is reclaimed (compaction): memory returns to the size of a
 * freshly loaded store, the head is inline again (a get costs two misses),
 * and a section pinned meanwhile keeps reading its old bytes. */
START_TEST(overwrites_compact_back_inline) {
  enum { N = 2000 };
  char k[16];
  for (int i = 0; i < N; i++) {
    int kl = snprintf(k, sizeof k, "c%05d", i);
    ut_put_gen(ut_s, k, kl, 64, 1);
  }
  shm_reclaim(ut_s);
  shm_stats fresh;
  ut_stats(ut_s, &fresh);
  CK_OK(ut_view_open(&ut_v2, 0));
  CK_OK(shm_read_begin(ut_v2)); /* pins generation 1 */
  for (int round = 2; round <= 6; round++) {
    for (int i = 0; i < N; i++) {
      int kl = snprintf(k, sizeof k, "c%05d", i);
      ut_put_gen(ut_s, k, kl, 64, (uint64_t)round);
    }
    shm_reclaim(ut_s);
    shm_reclaim(ut_s);
    if (round == 3) { /* the pinned section still reads generation 1 */
      for (int i = 0; i < N; i += 97) {
        int kl = snprintf(k, sizeof k, "c%05d", i);
        shm_val a;
        CK_OK(shm_get(ut_v2, k, kl, &a));
        ck_assert(ut_check_bytes(a.data, a.len, k, kl, 1));
      }
      shm_read_end(ut_v2);
    }
  }
  shm_reclaim(ut_s);
  shm_reclaim(ut_s);
  shm_stats st;
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.retired, 0);
  ck_assert_uint_eq(st.records, fresh.records);
  ck_assert_uint_eq(st.heap_used, fresh.heap_used);
  /* every head is the record inside its entry again */
  const struct shm_header *h = (const void *)ut_v->hdr;
  const struct shm_index *ix = (const void *)((const uint8_t *)h + h->index_off);
  unsigned inline_heads = 0;
  for (uint64_t i = 0; i < ix->capacity; i++) {
    uint64_t sv = ix->slot[i];
    if (sv == 0 || sv == SHM_SLOT_DELETED) continue;
    const struct shm_entry *e =
        (const void *)((const uint8_t *)h + SHM_SLOT_OFF(sv));
    inline_heads += e->head == SHM_SLOT_OFF(sv) + shm__entry_bytes(e->tower, e->klen);
  }
  ck_assert_uint_eq(inline_heads, N);
  for (int i = 0; i < N; i += 7) {
    int kl = snprintf(k, sizeof k, "c%05d", i);
    ut_assert_gen(ut_v, k, kl, 64, 6);
  }
  ck_assert_uint_eq(ut_check(ut_v, 1), 0);
}
END_TEST

Suite *mvcc_suite(void) {
  Suite *s = suite_create("mvcc");
  TCase *tc = ut_tcase("snapshots", 1, 120);
  tcase_add_test(tc, section_sees_old_value);
  tcase_add_test(tc, section_cross_process);
  tcase_add_test(tc, batch_seen_whole_or_not);
  tcase_add_test(tc, same_key_many_ops_in_one_batch);
  tcase_add_test(tc, overwrites_compact_back_inline);
  tcase_add_test(tc, batch_atomic_under_reader);
  tcase_add_test(tc, section_survives_index_growth);
  tcase_add_test(tc, section_scan_stable);
  suite_add_tcase(s, tc);

  tc = ut_tcase("reclaim", 1, 120);
  tcase_add_test(tc, reclaim_bounded_overwrites);
  tcase_add_test(tc, reclaim_automatic);
  tcase_add_test(tc, reclaim_before_enospc);
  tcase_add_test(tc, reclaim_delete_cycles_bounded);
  tcase_add_test(tc, reclaim_waits_for_section);
  tcase_add_test(tc, long_chain_under_old_section);
  suite_add_tcase(s, tc);

  tc = ut_tcase("slots", 1, 60);
  tcase_add_test(tc, slots_claimed_and_released);
  tcase_add_test(tc, dead_reader_in_section);
  tcase_add_test(tc, dead_reader_idle_slot);
  tcase_add_test(tc, sweep_spares_live_readers);
  tcase_add_test(tc, lease_claim_attach_release);
  tcase_add_test(tc, lease_of_dead_process_swept);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return ut_run(mvcc_suite()); }
