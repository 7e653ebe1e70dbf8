/*
 * reader.c - a reader process of shm-stress.
 *
 * Runs random read sections against a live (and, in the writer-kill
 * scenario, repeatedly killed and recovered) writer and checks:
 *   - no torn value: every value's checksum matches and it names its key;
 *     the record's expires_at equals the one the writer passed, and no value
 *     whose TTL had passed before the section began is returned;
 *   - versions never exceed the section's snapshot, snapshots never go back
 *     across sections, nested sections share the outer snapshot;
 *   - per key, across sections: versions never go backward; the same
 *     version always carries the same write; a newer version carries a newer
 *     write; a key seen absent at snapshot S never later shows a version
 *     <= S (unless that record's TTL explains it); a key seen present at
 *     snapshot S is not absent at the same S;
 *   - batch groups are seen whole or not at all (all keys present with one
 *     batch token and one version, or all absent), by get_many and by scan;
 *   - get_many agrees with get; a scan is strictly increasing, stays in its
 *     bounds, returns only real keys, agrees with get on every key, and every
 *     known key in the covered range that the scan skipped is ENOTFOUND;
 *   - bytes returned early in a section stay intact while the writer runs
 *     on (no reuse of memory under a pinned snapshot);
 *   - a section begun after the writer acknowledged commit V sees V;
 *   - shm_check(non-quiescent) inside a section finds nothing.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stress.h"

struct rd_key {
  uint64_t ver, wseq, snap, exp;
  uint64_t absent_snap, absent_t;
  uint32_t hash;
};

struct rd_hit {
  const uint8_t *key;
  size_t klen;
  shm_val val;
};

struct rd {
  shm_view *v;
  unsigned idx;
  struct rd_key *ks;
  uint64_t snap, t0, last_snap;
  uint64_t next_live_check;
  shm_key *keys;
  shm_val *vals;
  int *st;
  uint32_t *ids;
  struct rd_hit *hits;
  size_t nhits, cap;
};

static const struct st_key *K(uint32_t id) {
  return &g_keys.k[id];
}

static int rd_open(struct rd *r) {
  int rc = shm_view_open(&r->v, g_opt.name, g_opt.dir, 0);
  if (rc) {
    st_problem("shm_view_open: %s (%d)", shoal_errname(rc), rc);
    r->v = NULL;
  }
  return rc;
}

static int rd_begin(struct rd *r) {
  r->t0 = shm_now_ms();
  int rc = shm_read_begin(r->v);
  if (rc) {
    st_problem("shm_read_begin: %s", shoal_errname(rc));
    return rc;
  }
  r->snap = shm_view_snapshot(r->v);
  if (r->snap == 0) st_problem("snapshot 0 inside a section");
  if (r->snap < r->last_snap)
    st_problem("snapshot went backward: %" PRIu64 " after %" PRIu64, r->snap,
               r->last_snap);
  if (r->snap > r->last_snap) r->last_snap = r->snap;
  g_cnt->r_sections++;
  ST_YIELD();
  return 0;
}

static void rd_end(struct rd *r) {
  if (shm_view_snapshot(r->v) != r->snap)
    st_problem("snapshot changed inside a section: %" PRIu64 " -> %" PRIu64,
               r->snap, shm_view_snapshot(r->v));
  shm_read_end(r->v);
  if (shm_view_snapshot(r->v) != 0)
    st_problem("snapshot %" PRIu64 " after the section ended",
               shm_view_snapshot(r->v));
}

/* The heart: one observation of key @id. Returns 1 if the value is good. */
static int rd_obs(struct rd *r, uint32_t id, int rc, const shm_val *val,
                  const char *where) {
  struct rd_key *k = &r->ks[id];
  g_cnt->r_gets++;
  if (rc == SHOAL_ENOTFOUND) {
    if (k->ver && k->snap == r->snap && k->exp == 0)
      st_problem("%s: %s was version %" PRIu64 " (write %" PRIu64 ") at "
                 "snapshot %" PRIu64 " and is absent at the same snapshot",
                 where, st_idname(id), k->ver, k->wseq, r->snap);
    if (r->snap > k->absent_snap) k->absent_snap = r->snap;
    k->absent_t = shm_now_ms();
    return 1;
  }
  if (rc != 0) {
    st_problem("%s: get %s returned %s (%d) at snapshot %" PRIu64, where,
               st_idname(id), shoal_errname(rc), rc, r->snap);
    return 0;
  }
  g_cnt->r_found++;
  struct st_vhdr h;
  char why[256];
  if (st_check_value(val->data, val->len, id, val->expires_at, &h, why,
                     sizeof why)) {
    st_problem("%s: torn or foreign value for %s (version %" PRIu64
               ", snapshot %" PRIu64 "): %s",
               where, st_idname(id), val->version, r->snap, why);
    return 0;
  }
  int ok = 1;
  if (val->version == 0 || val->version > r->snap) {
    st_problem("%s: %s has version %" PRIu64 ", beyond snapshot %" PRIu64,
               where, st_idname(id), val->version, r->snap);
    ok = 0;
  }
  if (val->expires_at && val->expires_at + ST_CLOCK_SLACK <= r->t0) {
    st_problem("%s: %s (version %" PRIu64 ") expired at %" PRIu64 " but is "
               "returned by a section begun at %" PRIu64,
               where, st_idname(id), val->version, val->expires_at, r->t0);
    ok = 0;
  }
  if (g_keys.k[id].group >= 0 && val->expires_at) {
    st_problem("%s: group key %s carries a TTL", where, st_idname(id));
    ok = 0;
  }
  if (k->ver) {
    if (val->version < k->ver) {
      st_problem("%s: %s went backward: version %" PRIu64 " (write %" PRIu64
                 ") at snapshot %" PRIu64 " after version %" PRIu64
                 " (write %" PRIu64 ") at snapshot %" PRIu64,
                 where, st_idname(id), val->version, h.wseq, r->snap, k->ver,
                 k->wseq, k->snap);
      ok = 0;
    } else if (val->version == k->ver &&
               (h.wseq != k->wseq || h.hash != k->hash)) {
      st_problem("%s: %s version %" PRIu64 " now holds write %" PRIu64
                 ", earlier write %" PRIu64,
                 where, st_idname(id), val->version, h.wseq, k->wseq);
      ok = 0;
    } else if (val->version > k->ver && h.wseq <= k->wseq) {
      st_problem("%s: %s newer version %" PRIu64 " holds older write %" PRIu64
                 " (version %" PRIu64 " held write %" PRIu64 ")",
                 where, st_idname(id), val->version, h.wseq, k->ver, k->wseq);
      ok = 0;
    }
  }
  if (val->version <= k->absent_snap &&
      (val->expires_at == 0 ||
       val->expires_at > k->absent_t + ST_CLOCK_SLACK)) {
    st_problem("%s: %s was absent at snapshot %" PRIu64
               ", now shows version %" PRIu64 " (write %" PRIu64
               ", exp %" PRIu64 ") at snapshot %" PRIu64,
               where, st_idname(id), k->absent_snap, val->version, h.wseq,
               val->expires_at, r->snap);
    ok = 0;
  }
  if (val->version >= k->ver) {
    k->ver = val->version;
    k->wseq = h.wseq;
    k->hash = h.hash;
    k->exp = val->expires_at;
    k->snap = r->snap;
  }
  return ok;
}

static uint32_t rd_pick(void) {
  uint64_t r = st_below(10);
  if (r < 3) return (uint32_t)st_below(g_keys.nnorm < 64 ? g_keys.nnorm : 64);
  if (r < 4 && g_keys.n > g_keys.nnorm)
    return g_keys.nnorm + (uint32_t)st_below(g_keys.n - g_keys.nnorm);
  return (uint32_t)st_below(g_keys.n);
}

static void rd_same(struct rd *r, uint32_t id, int rc1, const shm_val *a,
                    int rc2, const shm_val *b, const char *what) {
  if (rc1 != rc2 ||
      (rc1 == 0 && (a->version != b->version || a->len != b->len ||
                    a->expires_at != b->expires_at ||
                    (a->len && memcmp(a->data, b->data, a->len) != 0))))
    st_problem("%s: %s disagrees with get on %s at snapshot %" PRIu64
               ": %s v%" PRIu64 " vs get %s v%" PRIu64,
               what, what, st_idname(id), r->snap, shoal_errname(rc1),
               rc1 ? 0 : a->version, shoal_errname(rc2), rc2 ? 0 : b->version);
}

/* ------------------------------------------------------------- sections -- */

static void op_gets(struct rd *r) {
  if (rd_begin(r)) return;
  unsigned n = 1 + (unsigned)st_below(32);
  for (unsigned i = 0; i < n; i++) {
    uint32_t id = rd_pick();
    shm_val val;
    int rc = shm_get(r->v, K(id)->bytes, K(id)->len, &val);
    rd_obs(r, id, rc, &val, "get");
    ST_YIELD();
    if (st_below(16) == 0) {
      /* nested section: shares the outer snapshot */
      int rc2 = shm_read_begin(r->v);
      if (rc2) {
        st_problem("nested shm_read_begin: %s", shoal_errname(rc2));
      } else {
        if (shm_view_snapshot(r->v) != r->snap)
          st_problem("nested section got snapshot %" PRIu64 ", outer %" PRIu64,
                     shm_view_snapshot(r->v), r->snap);
        shm_val v2;
        int rc3 = shm_get(r->v, K(id)->bytes, K(id)->len, &v2);
        rd_same(r, id, rc3, &v2, rc, &val, "nested get");
        shm_read_end(r->v);
        g_cnt->r_nested++;
        if (shm_view_snapshot(r->v) != r->snap)
          st_problem("inner read_end dropped the outer snapshot");
        if (rc == 0) { /* the outer value must still be intact */
          struct st_vhdr h;
          char why[200];
          if (st_check_value(val.data, val.len, id, val.expires_at, &h, why,
                             sizeof why))
            st_problem(
                "after a nested section the outer value of %s is bad: %s",
                st_idname(id), why);
        }
      }
    }
  }
  rd_end(r);
}

static void op_get_many(struct rd *r) {
  unsigned n = 1 + (unsigned)st_below(64);
  for (unsigned i = 0; i < n; i++) {
    r->ids[i] = (i > 0 && st_below(10) == 0) ? r->ids[st_below(i)] : rd_pick();
    r->keys[i].data = K(r->ids[i])->bytes;
    r->keys[i].len = K(r->ids[i])->len;
  }
  if (rd_begin(r)) return;
  int found = shm_get_many(r->v, n, r->keys, r->vals, r->st);
  int cnt = 0;
  for (unsigned i = 0; i < n; i++) {
    if (r->st[i] == 0) cnt++;
    rd_obs(r, r->ids[i], r->st[i], &r->vals[i], "get_many");
  }
  if (found != cnt)
    st_problem("shm_get_many returned %d but %d statuses are 0", found, cnt);
  ST_YIELD();
  for (unsigned i = 0; i < n; i++) {
    shm_val g;
    int rc = shm_get(r->v, r->keys[i].data, r->keys[i].len, &g);
    rd_same(r, r->ids[i], r->st[i], &r->vals[i], rc, &g, "get_many");
  }
  rd_end(r);
  g_cnt->r_get_many++;
  g_cnt->r_get_many_keys += n;
}

struct rd_scan {
  struct rd *r;
  size_t cap;
};

static int rd_scan_cb(void *arg, const void *key, size_t klen,
                      const shm_val *val) {
  struct rd_scan *c = arg;
  struct rd *r = c->r;
  if (r->nhits < r->cap) {
    r->hits[r->nhits].key = key;
    r->hits[r->nhits].klen = klen;
    r->hits[r->nhits].val = *val;
  }
  r->nhits++;
  if ((r->nhits & 63) == 0) ST_YIELD();
  return r->nhits >= c->cap ? 1 : 0;
}

/* Scan [start, end) with at most @cap keys and check it all. */
static void rd_scan_check(struct rd *r, const uint8_t *start, size_t slen,
                          const uint8_t *end, size_t elen, size_t cap,
                          const char *what) {
  struct rd_scan c = {r, cap};
  r->nhits = 0;
  int rc = shm_scan(r->v, start, slen, end, elen, rd_scan_cb, &c);
  g_cnt->r_scans++;
  if (rc != 0 && rc != 1) {
    st_problem("%s: shm_scan returned %s (%d)", what, shoal_errname(rc), rc);
    return;
  }
  if (r->nhits > r->cap) {
    st_problem("%s: scan callback called after it asked to stop (%zu > %zu)",
               what, r->nhits, cap);
    r->nhits = r->cap;
  }
  if (rc == 1 && r->nhits != cap)
    st_problem("%s: scan returned the callback's 1 after %zu keys, cap %zu",
               what, r->nhits, cap);
  g_cnt->r_scan_keys += r->nhits;
  int has_end = end && elen;
  for (size_t i = 0; i < r->nhits; i++) {
    struct rd_hit *h = &r->hits[i];
    if (i &&
        st_kcmp(r->hits[i - 1].key, r->hits[i - 1].klen, h->key, h->klen) >= 0)
      st_problem("%s: scan not strictly increasing: %s after %s", what,
                 st_kname(h->key, h->klen),
                 st_kname(r->hits[i - 1].key, r->hits[i - 1].klen));
    if (slen && st_kcmp(h->key, h->klen, start, slen) < 0)
      st_problem("%s: scan returned %s below its start %s", what,
                 st_kname(h->key, h->klen), st_kname(start, slen));
    if (has_end && st_kcmp(h->key, h->klen, end, elen) >= 0)
      st_problem("%s: scan returned %s at or past its end %s", what,
                 st_kname(h->key, h->klen), st_kname(end, elen));
    int64_t id = st_lookup(h->key, h->klen);
    if (id < 0) {
      st_problem("%s: scan returned a key never written: %s", what,
                 st_kname(h->key, h->klen));
      continue;
    }
    rd_obs(r, (uint32_t)id, 0, &h->val, what);
    shm_val g;
    int grc = shm_get(r->v, h->key, h->klen, &g);
    rd_same(r, (uint32_t)id, 0, &h->val, grc, &g, what);
  }
  /* Every known key of the covered range that the scan did not return
   * must be absent. The covered range ends at the last key returned when
   * the scan stopped early, else at @end. */
  uint32_t rank = slen ? st_lower_bound(start, slen) : 0;
  size_t j = 0;
  unsigned checked = 0;
  for (; rank < g_keys.n && checked < 512; rank++) {
    uint32_t id = g_keys.sorted[rank];
    const struct st_key *k = K(id);
    if (rc == 1) {
      if (r->nhits == 0) break;
      const struct rd_hit *last = &r->hits[r->nhits - 1];
      if (st_kcmp(k->bytes, k->len, last->key, last->klen) > 0) break;
    } else if (has_end && st_kcmp(k->bytes, k->len, end, elen) >= 0) {
      break;
    }
    while (j < r->nhits &&
           st_kcmp(r->hits[j].key, r->hits[j].klen, k->bytes, k->len) < 0)
      j++;
    if (j < r->nhits &&
        st_kcmp(r->hits[j].key, r->hits[j].klen, k->bytes, k->len) == 0)
      continue;
    shm_val g;
    int grc = shm_get(r->v, k->bytes, k->len, &g);
    checked++;
    g_cnt->r_absent_checks++;
    if (grc == 0) {
      st_problem(
          "%s: scan [%s, %s) skipped %s, which get finds at version %" PRIu64
          " (snapshot %" PRIu64 ")",
          what, st_kname(start, slen), has_end ? st_kname(end, elen) : "end",
          st_idname(id), g.version, r->snap);
    }
    rd_obs(r, id, grc, &g, what);
  }
}

static void rd_random_bound(uint8_t *buf, size_t *len, uint32_t rank) {
  const struct st_key *k =
      K(g_keys.sorted[rank < g_keys.n ? rank : g_keys.n - 1]);
  size_t l = k->len;
  uint64_t r = st_below(10);
  if (r < 3 && l > 1) l = 1 + st_below(l); /* a prefix of a real key */
  memcpy(buf, k->bytes, l);
  if (r == 9 && l < SHM_KEY_MAX)
    buf[l++] = (uint8_t)st_rand(); /* just past it */
  *len = l;
}

static void op_scan(struct rd *r) {
  uint8_t sbuf[SHM_KEY_MAX], ebuf[SHM_KEY_MAX];
  size_t slen = 0, elen = 0;
  const uint8_t *end = NULL;
  uint64_t kind = st_below(20);
  size_t cap = 1 + st_below(400);
  if (kind < 2) {
    /* a prefix family: "v/" (binary keys with 0x00/0xff) or "k/0012" */
    if (kind == 0) {
      memcpy(sbuf, "v/", 2);
      slen = 2;
    } else {
      slen = (size_t)snprintf((char *)sbuf, sizeof sbuf, "k/%04u",
                              (unsigned)st_below(100));
    }
    elen = shm_prefix_end(sbuf, slen, ebuf);
    end = elen ? ebuf : NULL;
  } else if (kind == 2) {
    /* an empty range: end before start */
    uint32_t a = (uint32_t)st_below(g_keys.n);
    rd_random_bound(sbuf, &slen, a + 5);
    rd_random_bound(ebuf, &elen, a);
    if (st_kcmp(ebuf, elen, sbuf, slen) > 0) {
      memcpy(ebuf, sbuf, slen); /* end == start is empty too */
      elen = slen;
    }
    end = ebuf;
  } else {
    uint32_t a = (uint32_t)st_below(g_keys.n);
    rd_random_bound(sbuf, &slen, a);
    if (st_below(4)) {
      rd_random_bound(ebuf, &elen, a + 1 + (uint32_t)st_below(600));
      end = ebuf;
    }
    if (st_below(10) == 0) slen = 0;          /* from the first key */
    if (!end && st_below(5) == 0) end = ebuf; /* non-NULL, elen 0: no bound */
  }
  if (rd_begin(r)) return;
  rd_scan_check(r, sbuf, slen, end, elen, cap, "scan");
  if (kind == 2 && r->nhits)
    st_problem("scan of an empty range [%s, %s) returned %zu keys",
               st_kname(sbuf, slen), st_kname(ebuf, elen), r->nhits);
  rd_end(r);
}

static void op_full_scan(struct rd *r) {
  if (rd_begin(r)) return;
  rd_scan_check(r, NULL, 0, NULL, 0, r->cap, "full scan");
  rd_end(r);
  g_cnt->r_full_scans++;
}

/* Batch groups: whole or nothing, via get_many and via a prefix scan. */
static void op_groups(struct rd *r) {
  if (!g_keys.ngroups) return;
  unsigned ng = 1 + (unsigned)st_below(4);
  if (rd_begin(r)) return;
  for (unsigned gi = 0; gi < ng; gi++) {
    uint32_t g = (uint32_t)st_below(g_keys.ngroups);
    uint32_t first = g_keys.gfirst[g], m = g_keys.gsize[g];
    for (uint32_t j = 0; j < m; j++) {
      r->ids[j] = first + j;
      r->keys[j].data = K(first + j)->bytes;
      r->keys[j].len = K(first + j)->len;
    }
    int found = shm_get_many(r->v, m, r->keys, r->vals, r->st);
    unsigned present = 0;
    for (uint32_t j = 0; j < m; j++) {
      rd_obs(r, first + j, r->st[j], &r->vals[j], "group get_many");
      if (r->st[j] == 0) present++;
    }
    if (found != (int)present)
      st_problem("shm_get_many returned %d, %u statuses are 0", found, present);
    g_cnt->r_group_checks++;
    if (present) g_cnt->r_groups_present++;
    if (present && present != m) {
      char list[512];
      size_t o = 0;
      for (uint32_t j = 0; j < m && o < 400; j++)
        o += (size_t)snprintf(list + o, sizeof list - o, " %u:%s", j,
                              r->st[j] ? "absent" : "present");
      st_problem("batch group %u seen in part at snapshot %" PRIu64
                 ": %u of %u keys present:%s",
                 g, r->snap, present, m, list);
    }
    if (present == m && r->vals[0].len >= sizeof(struct st_vhdr)) {
      struct st_vhdr h0, h;
      memcpy(&h0, r->vals[0].data, sizeof h0);
      for (uint32_t j = 1; j < m; j++) {
        if (r->vals[j].len < sizeof h) continue; /* reported by rd_obs */
        memcpy(&h, r->vals[j].data, sizeof h);
        if (h.wseq != h0.wseq || r->vals[j].version != r->vals[0].version) {
          st_problem("batch group %u torn at snapshot %" PRIu64 ": key 0 has "
                     "token %" PRIu64 " version %" PRIu64
                     ", key %u token %" PRIu64 " version %" PRIu64,
                     g, r->snap, h0.wseq, r->vals[0].version, j, h.wseq,
                     r->vals[j].version);
          break;
        }
      }
    }
    ST_YIELD();
    /* the same group by scan */
    uint8_t pfx[32], pend[32];
    size_t plen = (size_t)snprintf((char *)pfx, sizeof pfx, "batch/%03u/", g);
    size_t elen = shm_prefix_end(pfx, plen, pend);
    rd_scan_check(r, pfx, plen, pend, elen, r->cap, "group scan");
    if (r->nhits != present)
      st_problem("group %u: scan sees %zu keys, get_many %u, snapshot %" PRIu64,
                 g, r->nhits, present, r->snap);
  }
  rd_end(r);
}

/* A long section: values read first must stay intact while the writer
 * overwrites, deletes and reclaims. */
static void op_long(struct rd *r) {
  enum { N = 8 };
  uint32_t ids[N];
  shm_val vals[N];
  int rcs[N];
  if (rd_begin(r)) return;
  for (unsigned i = 0; i < N; i++) {
    ids[i] = rd_pick();
    rcs[i] = shm_get(r->v, K(ids[i])->bytes, K(ids[i])->len, &vals[i]);
    rd_obs(r, ids[i], rcs[i], &vals[i], "long section");
  }
  st_sleep_ms(1 + (unsigned)st_below(8));
  for (unsigned i = 0; i < N; i++) {
    if (rcs[i] == 0) {
      struct st_vhdr h;
      char why[200];
      if (st_check_value(vals[i].data, vals[i].len, ids[i], vals[i].expires_at,
                         &h, why, sizeof why))
        st_problem("long section: value of %s (version %" PRIu64 ") changed "
                   "under a pinned snapshot %" PRIu64 ": %s",
                   st_idname(ids[i]), vals[i].version, r->snap, why);
    }
    shm_val g;
    int rc = shm_get(r->v, K(ids[i])->bytes, K(ids[i])->len, &g);
    rd_same(r, ids[i], rcs[i], &vals[i], rc, &g, "long section re-get");
  }
  rd_end(r);
  g_cnt->r_long_sections++;
}

/* A section begun after the writer acknowledged commit V must see V. */
static void op_ack(struct rd *r) {
  uint64_t a = __atomic_load_n(&g_ctl->ack, __ATOMIC_ACQUIRE);
  if (!a) return;
  uint64_t ver = a >> ST_ACK_ID_BITS;
  uint32_t id = (uint32_t)(a & ((1u << ST_ACK_ID_BITS) - 1));
  if (rd_begin(r)) return;
  if (r->snap < ver)
    st_problem("section begun after commit %" PRIu64 " was acknowledged has "
               "snapshot %" PRIu64,
               ver, r->snap);
  shm_val val;
  int rc = shm_get(r->v, K(id)->bytes, K(id)->len, &val);
  rd_obs(r, id, rc, &val, "ack check");
  if (rc == 0 && val.version < ver)
    st_problem("after commit %" PRIu64 " was acknowledged, %s shows older "
               "version %" PRIu64 " at snapshot %" PRIu64,
               ver, st_idname(id), val.version, r->snap);
  rd_end(r);
  g_cnt->r_ack_checks++;
}

static void op_live_check(struct rd *r) {
  if (rd_begin(r)) return;
  unsigned p = shm_check(r->v, 0, st_check_cb, (void *)"reader, live");
  if (p)
    st_problem("live shm_check at snapshot %" PRIu64 " found %u problems",
               r->snap, p);
  rd_end(r);
  g_cnt->r_live_checks++;
}

int st_reader_run(unsigned idx) {
  struct rd r;
  memset(&r, 0, sizeof r);
  r.idx = idx;
  r.ks = calloc(g_keys.n, sizeof *r.ks);
  r.cap = g_keys.n + 16;
  r.keys = calloc(r.cap, sizeof *r.keys);
  r.vals = calloc(r.cap, sizeof *r.vals);
  r.st = calloc(r.cap, sizeof *r.st);
  r.ids = calloc(r.cap, sizeof *r.ids);
  r.hits = calloc(r.cap, sizeof *r.hits);
  if (!r.ks || !r.keys || !r.vals || !r.st || !r.ids || !r.hits) abort();
  if (rd_open(&r)) return 2;
  r.next_live_check = st_mono_ms() + 300 + 300 * idx;
  while (!st_stopping()) {
    uint64_t x = st_below(1000);
    if (x < 300)
      op_gets(&r);
    else if (x < 450)
      op_get_many(&r);
    else if (x < 600)
      op_scan(&r);
    else if (x < 800)
      op_groups(&r);
    else if (x < 850)
      op_long(&r);
    else if (x < 990)
      op_ack(&r);
    else if (x < 996)
      op_full_scan(&r);
    else if (x < 998) {
      shm_view_close(r.v);
      g_cnt->r_reopens++;
      if (rd_open(&r)) break;
    } else {
      op_gets(&r);
    }
    if (g_opt.live_check && st_mono_ms() >= r.next_live_check) {
      op_live_check(&r);
      r.next_live_check = st_mono_ms() + 1500;
    }
  }
  if (r.v) shm_view_close(r.v);
  free(r.ks);
  free(r.keys);
  free(r.vals);
  free(r.st);
  free(r.ids);
  free(r.hits);
  return 0;
}
