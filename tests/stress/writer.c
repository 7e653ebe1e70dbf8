/*
 * writer.c - the single writer of shm-stress.
 *
 * Random put / put with TTL / del / cas / batch over the key space, with
 * shm_reclaim, shm_expire and shm_sweep_readers in between. The writer keeps
 * a model of every key (g_table, in shared memory) and checks each
 * acknowledged result against the store through a view of its own:
 *   - versions returned by commits strictly increase (also across restarts:
 *     the first commit after a recovery is above every acknowledged one);
 *   - a get right after the commit returns exactly the value written, at
 *     exactly the returned version (or ENOTFOUND after a delete);
 *   - a CAS with a wrong expectation fails with ECONFLICT and reports the
 *     current version (0 when absent); a DEL of an absent key ENOTFOUND;
 *   - a batch with one failing op (wrong CAS, DEL of an absent key) returns
 *     that op's code and index and changes nothing (commit_seq included);
 *   - periodically the whole store matches the model, a full scan agrees
 *     with the gets, and shm_check(quiescent) finds no problem.
 * In the writer-kill scenario every op is announced in g_ctl->inflight
 * before it is issued and the table is updated only after success (see
 * struct st_inflight), so the parent can tell acknowledged from in-flight.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stress.h"

struct wr {
  shm_store *s;
  shm_view *v;
  const struct st_writer_cfg *cfg;
  uint64_t last_ver; /* highest version this writer saw returned */
  uint64_t nops;
  uint64_t next_full, next_check; /* st_mono_ms deadlines */
  uint8_t *vbuf;                  /* ST_BATCH_MAX values of ST_VAL_MAX */
};

static const struct st_key *K(uint32_t id) {
  return &g_keys.k[id];
}

static uint32_t wr_plen(void) {
  uint64_t r = st_below(100);
  if (r < 4)
    return 4097 + (uint32_t)st_below(ST_PLEN_BIG - 4097 + 1); /* extents */
  if (r < 15) return (uint32_t)st_below(65);
  return (uint32_t)st_below(2001);
}

static void wr_state(struct st_kstate *ns, const uint8_t *val) {
  struct st_vhdr h;
  memcpy(&h, val, sizeof h);
  memset(ns, 0, sizeof *ns);
  ns->present = 1;
  ns->wseq = h.wseq;
  ns->expires_at = h.expires_at;
  ns->plen = h.plen;
  ns->hash = h.hash;
}

static uint64_t wr_next_wseq(void) {
  return __atomic_add_fetch(&g_ctl->wseq, 1, __ATOMIC_SEQ_CST);
}

/* ------------------------------------------------------ in-flight log -- */

static void wr_announce(struct wr *w, int kind, uint64_t wseq, uint32_t n,
                        const uint32_t *ids, const struct st_kstate *ns) {
  if (!w->cfg->kill_mode) return;
  struct st_inflight *f = &g_ctl->inflight;
  f->wseq = wseq;
  f->kind = kind;
  f->n = n;
  for (uint32_t i = 0; i < n; i++) {
    f->ids[i] = ids[i];
    f->old_[i] = g_table[ids[i]];
    f->new_[i] = ns[i];
  }
  /* The parent reads this after waitpid(); program order is all we need,
   * the fence keeps the compiler from sinking the stores past the call. */
  __atomic_store_n(&f->active, 1, __ATOMIC_SEQ_CST);
}

static void wr_done(struct wr *w) {
  if (!w->cfg->kill_mode) return;
  __atomic_store_n(&g_ctl->inflight.active, 0, __ATOMIC_SEQ_CST);
}

static void wr_ack(uint32_t id, uint64_t ver) {
  __atomic_store_n(&g_ctl->ack, ver << ST_ACK_ID_BITS | id, __ATOMIC_RELEASE);
  if (ver > __atomic_load_n(&g_ctl->max_acked, __ATOMIC_RELAXED))
    __atomic_store_n(&g_ctl->max_acked, ver, __ATOMIC_RELEASE);
}

static void wr_check_ver(struct wr *w, uint64_t ver, const char *what) {
  if (ver <= w->last_ver)
    st_problem("%s returned version %" PRIu64 ", not above the previous "
               "commit's %" PRIu64,
               what, ver, w->last_ver);
  if (ver > w->last_ver) w->last_ver = ver;
}

/* -------------------------------------------------------- verification -- */

static uint64_t wr_snapshot(struct wr *w) {
  if (shm_read_begin(w->v) != 0) return 0;
  uint64_t s = shm_view_snapshot(w->v);
  shm_read_end(w->v);
  return s;
}

static void wr_verify_ids(struct wr *w, const uint32_t *ids, uint32_t n,
                          const char *what) {
  char why[512];
  uint64_t t_lo = shm_now_ms();
  int rc = shm_read_begin(w->v);
  if (rc) {
    st_problem("writer view: shm_read_begin: %s", shoal_errname(rc));
    return;
  }
  ST_YIELD();
  for (uint32_t i = 0; i < n; i++) {
    shm_val val;
    memset(&val, 0, sizeof val);
    rc = shm_get(w->v, K(ids[i])->bytes, K(ids[i])->len, &val);
    uint64_t t_hi = shm_now_ms();
    if (!st_match(ids[i], &g_table[ids[i]], 1, 0, rc, &val, t_lo, t_hi, why,
                  sizeof why))
      st_problem("writer check %s: key %s (snapshot %" PRIu64 "): %s", what,
                 st_idname(ids[i]), shm_view_snapshot(w->v), why);
    g_cnt->w_verified++;
  }
  shm_read_end(w->v);
}

struct va_scan {
  uint64_t n, bad;
  const uint8_t *prev;
  size_t prevlen;
  shm_view *v;
  uint64_t t_lo;
  const char *who;
};

static int va_scan_cb(void *arg, const void *key, size_t klen,
                      const shm_val *val) {
  struct va_scan *c = arg;
  c->n++;
  if (c->prev && st_kcmp(c->prev, c->prevlen, key, klen) >= 0) {
    st_problem("%s: full scan out of order: %s after %s", c->who,
               st_kname(key, klen), st_kname(c->prev, c->prevlen));
    c->bad++;
  }
  c->prev = key;
  c->prevlen = klen;
  int64_t id = st_lookup(key, klen);
  if (id < 0) {
    st_problem("%s: full scan returned a key never written: %s", c->who,
               st_kname(key, klen));
    c->bad++;
    return 0;
  }
  shm_val g;
  int rc = shm_get(c->v, key, klen, &g);
  if (rc != 0 || g.version != val->version || g.len != val->len ||
      (val->len && memcmp(g.data, val->data, val->len) != 0)) {
    st_problem("%s: scan and get disagree on %s: scan version %" PRIu64
               ", get %s version %" PRIu64,
               c->who, st_kname(key, klen), val->version, shoal_errname(rc),
               rc ? 0 : g.version);
    c->bad++;
  }
  int cls = st_class(&g_table[id], c->t_lo, shm_now_ms());
  if (cls == ST_ABSENT || cls == ST_EXPIRED) {
    st_problem("%s: full scan shows %s (version %" PRIu64 "), which the model "
               "says is %s",
               c->who, st_kname(key, klen), val->version,
               cls == ST_ABSENT ? "absent" : "expired");
    c->bad++;
  }
  return 0;
}

unsigned st_verify_all(shm_view *v, const char *who) {
  char why[512];
  unsigned bad = 0;
  uint64_t found = 0;
  uint64_t t_lo = shm_now_ms();
  int rc = shm_read_begin(v);
  if (rc) {
    st_problem("%s: shm_read_begin: %s", who, shoal_errname(rc));
    return 1;
  }
  for (uint32_t id = 0; id < g_keys.n; id++) {
    shm_val val;
    memset(&val, 0, sizeof val);
    rc = shm_get(v, K(id)->bytes, K(id)->len, &val);
    if (rc == 0) found++;
    if (!st_match(id, &g_table[id], 1, 0, rc, &val, t_lo, shm_now_ms(), why,
                  sizeof why)) {
      st_problem("%s: full check: key %s (snapshot %" PRIu64 "): %s", who,
                 st_idname(id), shm_view_snapshot(v), why);
      bad++;
    }
  }
  struct va_scan c = {0, 0, NULL, 0, v, t_lo, who};
  rc = shm_scan(v, NULL, 0, NULL, 0, va_scan_cb, &c);
  if (rc != 0) {
    st_problem("%s: full scan returned %s", who, shoal_errname(rc));
    bad++;
  }
  if (c.n != found) {
    st_problem("%s: full scan visited %" PRIu64 " keys, gets found %" PRIu64,
               who, c.n, found);
    bad++;
  }
  shm_read_end(v);
  return bad + (unsigned)c.bad;
}

/* ----------------------------------------------------------------- ops -- */

static void wr_put(struct wr *w, uint32_t id, int ttl) {
  uint64_t wseq = wr_next_wseq();
  uint64_t exp = ttl ? shm_now_ms() + 1 + st_below(500) : 0;
  size_t vlen = st_make_value(w->vbuf, id, wseq, exp, wr_plen());
  struct st_kstate ns;
  wr_state(&ns, w->vbuf);
  wr_announce(w, SHM_OP_PUT, wseq, 1, &id, &ns);
  uint64_t ver = 0;
  ST_YIELD();
  int rc = shm_put(w->s, K(id)->bytes, K(id)->len, w->vbuf, vlen, exp, &ver);
  if (rc) {
    st_problem("put %s (%zu B, exp %" PRIu64 ") failed: %s: %s", st_idname(id),
               vlen, exp, shoal_errname(rc), shm_store_lasterr(w->s));
    wr_done(w);
    return;
  }
  wr_check_ver(w, ver, "put");
  ns.version = ver;
  g_table[id] = ns;
  wr_done(w);
  wr_ack(id, ver);
  if (ttl)
    g_cnt->w_puts_ttl++;
  else
    g_cnt->w_puts++;
  ST_YIELD();
  wr_verify_ids(w, &id, 1, "after put");
}

static void wr_del(struct wr *w, uint32_t id) {
  struct st_kstate ns;
  memset(&ns, 0, sizeof ns);
  wr_announce(w, SHM_OP_DEL, 0, 1, &id, &ns);
  uint64_t t_lo = shm_now_ms(), ver = 0;
  ST_YIELD();
  int rc = shm_del(w->s, K(id)->bytes, K(id)->len, &ver);
  int cls = st_class(&g_table[id], t_lo, shm_now_ms());
  if (rc == 0) {
    if (cls == ST_ABSENT)
      st_problem("del of absent key %s succeeded (version %" PRIu64 ")",
                 st_idname(id), ver);
    if (cls == ST_EXPIRED) g_cnt->w_expired_seen_present++;
    wr_check_ver(w, ver, "del");
    ns.version = ver;
    g_table[id] = ns;
    wr_done(w);
    wr_ack(id, ver);
    g_cnt->w_dels++;
  } else if (rc == SHOAL_ENOTFOUND) {
    if (cls == ST_PRESENT)
      st_problem("del of present key %s (write %" PRIu64 ", version %" PRIu64
                 ") returned ENOTFOUND",
                 st_idname(id), g_table[id].wseq, g_table[id].version);
    g_table[id].present = 0;
    wr_done(w);
    g_cnt->w_dels_absent++;
  } else {
    st_problem("del %s failed: %s: %s", st_idname(id), shoal_errname(rc),
               shm_store_lasterr(w->s));
    wr_done(w);
    return;
  }
  ST_YIELD();
  wr_verify_ids(w, &id, 1, "after del");
}

static void wr_cas(struct wr *w, uint32_t id) {
  uint64_t t0 = shm_now_ms();
  struct st_kstate *k = &g_table[id];
  /* Only keys whose state is certain for the next 300 ms. */
  int cls = st_class(k, t0, t0 + 300);
  if (cls != ST_PRESENT && cls != ST_ABSENT) {
    wr_put(w, id, 0);
    return;
  }
  int wrong = st_below(5) == 0;
  uint64_t expect = cls == ST_PRESENT ? k->version : 0;
  if (wrong) {
    if (cls == ST_PRESENT) {
      uint64_t r = st_below(3);
      expect = r == 0 ? k->version - 1 : r == 1 ? k->version + 1000 : 0;
    } else {
      /* the version of the tombstone (or of the last value): a deleted key
       * has version 0 for CAS, so this must conflict */
      expect = k->version ? k->version : 1 + st_below(w->last_ver + 1);
    }
  }
  uint64_t wseq = wr_next_wseq();
  uint64_t exp = st_below(100) < 15 ? shm_now_ms() + 1 + st_below(500) : 0;
  size_t vlen = st_make_value(w->vbuf, id, wseq, exp, wr_plen());
  struct st_kstate ns;
  wr_state(&ns, w->vbuf);
  wr_announce(w, SHM_OP_CAS, wseq, 1, &id, wrong ? k : &ns);
  uint64_t ver = 0;
  ST_YIELD();
  int rc =
      shm_cas(w->s, K(id)->bytes, K(id)->len, expect, w->vbuf, vlen, exp, &ver);
  uint64_t t1 = shm_now_ms();
  int late = st_class(k, t0, t1) != cls; /* the state moved: be lenient */
  if (rc == 0) {
    if (wrong && !late)
      st_problem("cas %s with wrong expect %" PRIu64 " (current %" PRIu64
                 ") succeeded",
                 st_idname(id), expect, cls == ST_PRESENT ? k->version : 0);
    wr_check_ver(w, ver, "cas");
    ns.version = ver;
    *k = ns;
    wr_done(w);
    wr_ack(id, ver);
    g_cnt->w_cas_ok++;
  } else if (rc == SHOAL_ECONFLICT) {
    uint64_t cur = cls == ST_PRESENT ? k->version : 0;
    if (!wrong && !late)
      st_problem("cas %s expect %" PRIu64 " (the current version) failed "
                 "with ECONFLICT, reported current %" PRIu64,
                 st_idname(id), expect, ver);
    else if (wrong && !late && ver != cur)
      st_problem("cas %s conflict reported current version %" PRIu64
                 ", expected %" PRIu64,
                 st_idname(id), ver, cur);
    wr_done(w);
    g_cnt->w_cas_conflict++;
  } else {
    st_problem("cas %s failed: %s: %s", st_idname(id), shoal_errname(rc),
               shm_store_lasterr(w->s));
    wr_done(w);
    return;
  }
  ST_YIELD();
  wr_verify_ids(w, &id, 1, "after cas");
}

static int wr_chosen(const uint32_t *ids, uint32_t n, uint32_t id) {
  for (uint32_t i = 0; i < n; i++)
    if (ids[i] == id) return 1;
  return 0;
}

static void wr_batch(struct wr *w) {
  shm_op ops[ST_BATCH_MAX];
  uint32_t ids[ST_BATCH_MAX];
  struct st_kstate ns[ST_BATCH_MAX];
  uint32_t n = 0;
  uint64_t wseq = wr_next_wseq();
  uint64_t t0 = shm_now_ms();
  memset(ops, 0, sizeof ops);

  if (st_below(100) == 0) { /* the empty batch: a no-op reporting commit_seq */
    uint64_t seq = 0, snap = wr_snapshot(w);
    size_t failed = 99;
    int rc = shm_batch(w->s, ops, 0, &seq, &failed);
    if (rc != 0 || seq != snap)
      st_problem("empty batch: rc %s seq %" PRIu64 ", commit_seq %" PRIu64,
                 shoal_errname(rc), seq, snap);
    return;
  }

#define ADD_PUT(id_, plen_, exp_)                                              \
  do {                                                                         \
    uint8_t *vb = w->vbuf + (size_t)n * ST_VAL_MAX;                            \
    uint64_t ex = (exp_); /* evaluate the random arguments once */             \
    size_t vl = st_make_value(vb, (id_), wseq, ex, (plen_));                   \
    ops[n] = (shm_op){SHM_OP_PUT, K(id_)->bytes, K(id_)->len, vb, vl, 0, ex};  \
    wr_state(&ns[n], vb);                                                      \
    ids[n++] = (id_);                                                          \
  } while (0)

  unsigned ng = g_keys.ngroups ? (unsigned)st_below(4) : 0;
  for (unsigned gi = 0; gi < ng; gi++) {
    uint32_t g = (uint32_t)st_below(g_keys.ngroups);
    uint32_t first = g_keys.gfirst[g], m = g_keys.gsize[g];
    if (wr_chosen(ids, n, first)) continue;
    int present = g_table[first].present != 0;
    int del = (int)st_below(100) < (present ? 20 : 5);
    for (uint32_t j = 0; j < m; j++) {
      uint32_t id = first + j;
      if (del) {
        ops[n] = (shm_op){present && st_below(2) ? SHM_OP_DEL : SHM_OP_DEL_ANY,
                          K(id)->bytes,
                          K(id)->len,
                          NULL,
                          0,
                          0,
                          0};
        memset(&ns[n], 0, sizeof ns[n]);
        ids[n++] = id;
      } else {
        ADD_PUT(id, st_below(3) ? (uint32_t)st_below(300) : wr_plen(), 0);
      }
    }
    g_cnt->w_group_writes++;
  }
  unsigned nn = (unsigned)st_below(9);
  if (n == 0 && nn == 0) nn = 1;
  for (unsigned i = 0; i < nn && n < ST_BATCH_MAX - 1; i++) {
    uint32_t id = (uint32_t)st_below(g_keys.nnorm);
    if (wr_chosen(ids, n, id)) continue;
    struct st_kstate *k = &g_table[id];
    int cls = st_class(k, t0, t0 + 300);
    uint64_t r = st_below(100);
    if (r < 45) {
      ADD_PUT(id, wr_plen(),
              st_below(5) == 0 ? shm_now_ms() + 1 + st_below(500) : 0);
    } else if (r < 65) {
      ops[n] =
          (shm_op){SHM_OP_DEL_ANY, K(id)->bytes, K(id)->len, NULL, 0, 0, 0};
      memset(&ns[n], 0, sizeof ns[n]);
      ids[n++] = id;
    } else if (r < 80 && cls == ST_PRESENT) {
      ops[n] = (shm_op){SHM_OP_DEL, K(id)->bytes, K(id)->len, NULL, 0, 0, 0};
      memset(&ns[n], 0, sizeof ns[n]);
      ids[n++] = id;
    } else if (cls == ST_PRESENT || cls == ST_ABSENT) {
      uint64_t expect = cls == ST_PRESENT ? k->version : 0;
      ADD_PUT(id, wr_plen(),
              st_below(5) == 0 ? shm_now_ms() + 1 + st_below(500) : 0);
      ops[n - 1].kind = SHM_OP_CAS;
      ops[n - 1].expect = expect;
    } else {
      ADD_PUT(id, wr_plen(), 0);
    }
  }
#undef ADD_PUT

  /* Fault injection: one op that must fail, at a random place. */
  int fail_code = 0;
  uint32_t fail_at = 0;
  if (st_below(100) < 10 && n < ST_BATCH_MAX) {
    for (int tries = 0; tries < 8 && !fail_code; tries++) {
      uint32_t id = (uint32_t)st_below(g_keys.nnorm);
      if (wr_chosen(ids, n, id)) continue;
      struct st_kstate *k = &g_table[id];
      int cls = st_class(k, t0, t0 + 300);
      shm_op op = {0, K(id)->bytes, K(id)->len, NULL, 0, 0, 0};
      if (cls == ST_PRESENT) {
        op.kind = SHM_OP_CAS;
        op.expect = st_below(2) ? k->version + 7 : 0;
        op.val = "x";
        op.vlen = 1;
        fail_code = SHOAL_ECONFLICT;
      } else if (cls == ST_ABSENT) {
        if (st_below(2)) {
          op.kind = SHM_OP_DEL;
          fail_code = SHOAL_ENOTFOUND;
        } else {
          op.kind = SHM_OP_CAS;
          op.expect = k->version ? k->version : 3;
          op.val = "x";
          op.vlen = 1;
          fail_code = SHOAL_ECONFLICT;
        }
      } else {
        continue;
      }
      fail_at = (uint32_t)st_below(n + 1);
      memmove(&ops[fail_at + 1], &ops[fail_at], (n - fail_at) * sizeof ops[0]);
      memmove(&ids[fail_at + 1], &ids[fail_at], (n - fail_at) * sizeof ids[0]);
      memmove(&ns[fail_at + 1], &ns[fail_at], (n - fail_at) * sizeof ns[0]);
      ops[fail_at] = op;
      ids[fail_at] = id;
      ns[fail_at] = *k;
      n++;
    }
  }

  if (fail_code) {
    struct st_kstate olds[ST_BATCH_MAX];
    for (uint32_t i = 0; i < n; i++)
      olds[i] = g_table[ids[i]];
    wr_announce(w, -1, wseq, n, ids, olds);
  } else {
    wr_announce(w, -1, wseq, n, ids, ns);
  }
  uint64_t snap0 = fail_code ? wr_snapshot(w) : 0;
  uint64_t seq = 0;
  size_t failed = (size_t)-1;
  ST_YIELD();
  int rc = shm_batch(w->s, ops, n, &seq, &failed);
  uint64_t t1 = shm_now_ms();
  if (fail_code) {
    if (rc != fail_code || failed != fail_at) {
      if (t1 - t0 > 250)
        st_info("batch took %" PRIu64 " ms; outcome not judged", t1 - t0);
      else
        st_problem("batch of %u ops with op %u (%s %s) bound to fail: "
                   "returned %s, failed index %zd; expected %s at %u",
                   n, fail_at, ops[fail_at].kind == SHM_OP_DEL ? "DEL" : "CAS",
                   st_idname(ids[fail_at]), shoal_errname(rc), (ssize_t)failed,
                   shoal_errname(fail_code), fail_at);
    }
    if (rc == 0) { /* it was applied after all: keep the model right */
      wr_check_ver(w, seq, "batch");
      for (uint32_t i = 0; i < n; i++)
        if (i != fail_at) {
          ns[i].version = seq;
          g_table[ids[i]] = ns[i];
        }
      wr_done(w);
      return;
    }
    wr_done(w);
    uint64_t snap1 = wr_snapshot(w);
    if (snap1 != snap0)
      st_problem("failed batch moved commit_seq from %" PRIu64 " to %" PRIu64,
                 snap0, snap1);
    g_cnt->w_batch_failed++;
    wr_verify_ids(w, ids, n, "after failed batch (nothing may change)");
    return;
  }
  if (rc != 0) {
    /* CAS and DEL ops were only put on keys certain for 300 ms: a batch
     * that took longer may have seen a TTL pass; don't judge it. */
    if (t1 - t0 > 250 && (rc == SHOAL_ECONFLICT || rc == SHOAL_ENOTFOUND))
      st_info("batch took %" PRIu64 " ms and failed with %s; not judged",
              t1 - t0, shoal_errname(rc));
    else
      st_problem("batch of %u ops failed: %s at op %zd (%s): %s", n,
                 shoal_errname(rc), (ssize_t)failed,
                 failed < n ? st_idname(ids[failed]) : "?",
                 shm_store_lasterr(w->s));
    wr_done(w);
    return;
  }
  /* A batch that writes nothing (only DEL_ANY of keys not visible) commits
   * nothing and returns the current commit_seq, as n == 0 does. */
  int noop = 1;
  for (uint32_t i = 0; i < n && noop; i++)
    noop = ops[i].kind == SHM_OP_DEL_ANY &&
           st_class(&g_table[ids[i]], t0, t1) != ST_PRESENT;
  if (noop && seq == w->last_ver)
    g_cnt->w_batch_noop++;
  else
    wr_check_ver(w, seq, "batch");
  for (uint32_t i = 0; i < n; i++) {
    if (!ns[i].present && !g_table[ids[i]].present) continue; /* no write */
    ns[i].version = seq;
    g_table[ids[i]] = ns[i];
  }
  wr_done(w);
  wr_ack(ids[st_below(n)], seq);
  g_cnt->w_batches++;
  g_cnt->w_batch_ops += n;
  ST_YIELD();
  wr_verify_ids(w, ids, n, "after batch");
}

static uint32_t wr_pick(void) {
  /* A third of the ops hit 64 hot keys: long version chains for readers. */
  if (st_below(3) == 0)
    return (uint32_t)st_below(g_keys.nnorm < 64 ? g_keys.nnorm : 64);
  return (uint32_t)st_below(g_keys.nnorm);
}

static void wr_step(struct wr *w) {
  uint64_t r = st_below(100);
  if (r < 30)
    wr_put(w, wr_pick(), 0);
  else if (r < 40)
    wr_put(w, wr_pick(), 1);
  else if (r < 52)
    wr_del(w, wr_pick());
  else if (r < 67)
    wr_cas(w, wr_pick());
  else if (r < 87)
    wr_batch(w);
  else
    wr_put(w, wr_pick(), 0);
}

static void wr_periodic(struct wr *w) {
  w->nops++;
  if (w->nops % 64 == 0) {
    g_cnt->w_reclaimed += shm_reclaim(w->s);
    g_cnt->w_reclaim_calls++;
  }
  if (w->nops % 97 == 0) {
    size_t n = 0;
    int rc = shm_expire(w->s, 0, 64, &n);
    if (rc < 0)
      st_problem("shm_expire: %s: %s", shoal_errname(rc),
                 shm_store_lasterr(w->s));
    if (n > 64) st_problem("shm_expire(budget 64) expired %zu keys", n);
    g_cnt->w_expire_calls++;
    g_cnt->w_expired += n;
  }
  if (w->nops % 500 == 0) {
    g_cnt->w_swept += shm_sweep_readers(w->s);
    g_cnt->w_sweeps++;
  }
  if (!w->cfg->own_checks) return;
  uint64_t now = st_mono_ms();
  if (now >= w->next_full) {
    st_verify_all(w->v, "writer");
    g_cnt->w_full_verifies++;
    w->next_full = st_mono_ms() + 500;
  }
  if (now >= w->next_check) {
    int rc = shm_read_begin(w->v);
    if (rc == 0) {
      /* The writer is this thread, so the store is quiescent here. */
      unsigned p = shm_check(w->v, 1, st_check_cb, (void *)"writer, quiescent");
      if (p) st_problem("shm_check by the writer found %u problems", p);
      shm_read_end(w->v);
    }
    g_cnt->w_checks++;
    w->next_check = st_mono_ms() + 2000;
  }
}

int st_writer_run(const struct st_writer_cfg *wc) {
  struct wr w;
  memset(&w, 0, sizeof w);
  w.cfg = wc;
  shm_config cfg = {g_opt.name, g_opt.dir, g_opt.size, 0, 0};
  int rc = shm_store_open(&w.s, &cfg, 0);
  if (rc) {
    st_problem("writer: shm_store_open: %s (%d)", shoal_errname(rc), rc);
    return 2;
  }
  if (wc->kill_mode)
    __atomic_store_n(&g_ctl->writer_opened, 1, __ATOMIC_SEQ_CST);
  rc = shm_store_view(w.s, &w.v);
  if (rc) {
    st_problem("writer: shm_store_view: %s", shoal_errname(rc));
    shm_store_close(w.s, 0);
    return 2;
  }
  w.vbuf = malloc((size_t)ST_BATCH_MAX * ST_VAL_MAX);
  if (!w.vbuf) abort();
  w.last_ver = __atomic_load_n(&g_ctl->max_acked, __ATOMIC_ACQUIRE);
  uint64_t snap = wr_snapshot(&w);
  if (snap < w.last_ver)
    st_problem("writer attached at commit_seq %" PRIu64 ", below the last "
               "acknowledged commit %" PRIu64,
               snap, w.last_ver);
  w.next_full = st_mono_ms() + 500;
  w.next_check = st_mono_ms() + 1000;
  while (!st_stopping()) {
    wr_step(&w);
    wr_periodic(&w);
    ST_YIELD();
  }
  if (wc->own_checks) st_verify_all(w.v, "writer at exit");
  shm_view_close(w.v);
  shm_store_close(w.s, 1);
  free(w.vbuf);
  return 0;
}
