/*
 * write.c - libshoal's requests to the broker: put, put_ttl, del, cas,
 * atomic batches, pipelined writes, ping and stats.
 *
 * Every write is a Request whose body points at the caller's key and value
 * (nothing is copied: protobuf-c packs them straight into the handle's
 * output buffer, conn.c). Arguments are checked before anything is sent, so
 * an oversized key or value is SHOAL_ETOOBIG without a round trip. The
 * broker's status is returned as is: it is already a shoal code.
 *
 * Ordering: the broker answers a write after publishing its commit, so once
 * a write returns 0 every section begun afterwards sees it (client.c).
 * Pipelined writes on one handle are applied in the order they were
 * appended; a batch is applied whole or not at all, as one commit.
 *
 * Batches are built without a handle: keys and values are copied into one
 * growing buffer and ops refer to it by offset (the buffer may move as it
 * grows); the protobuf-c op structs are made at commit, in arrays kept with
 * the batch so that committing a reused batch allocates nothing.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client-internal.h"

/* protobuf-c wants non-const pointers; it only reads them when packing. */
static inline ProtobufCBinaryData bin(const void *p, size_t n) {
  static const uint8_t empty[1];
  ProtobufCBinaryData b = {n, (uint8_t *)(uintptr_t)(n ? p : empty)};
  return b;
}

/* ------------------------------------------------------------- writes --- */

/* A write request on the caller's stack: the envelope and its body. The
 * builders check the handle and the sizes and fill both; the synchronous
 * calls send it with shoal__call, the pipelined ones queue it. */
struct wreq {
  Shoal__Request rq;
  union {
    Shoal__Put put;
    Shoal__Delete del;
    Shoal__Cas cas;
  } m;
};

static int wreq_check(shoal *c, const void *key, size_t klen, const void *val,
                      size_t vlen) {
  if (!c) return SHOAL_EINVAL;
  if (shoal__forked(c)) return SHOAL_EFORKED;
  return shoal__check_kv(c, key, klen, val, vlen);
}

static int mk_put(shoal *c, struct wreq *w, const void *key, size_t klen,
                  const void *val, size_t vlen, uint32_t ttl_ms) {
  int err = wreq_check(c, key, klen, val, vlen);
  if (err) return err;
  Shoal__Put *p = &w->m.put;
  shoal__put__init(p);
  p->has_key = p->has_value = 1;
  p->key = bin(key, klen);
  p->value = bin(val, vlen);
  p->has_ttl_ms = ttl_ms != 0;
  p->ttl_ms = ttl_ms;
  shoal__request__init(&w->rq);
  w->rq.body_case = SHOAL__REQUEST__BODY_PUT;
  w->rq.put = p;
  return 0;
}

static int mk_del(shoal *c, struct wreq *w, const void *key, size_t klen) {
  int err = wreq_check(c, key, klen, NULL, 0);
  if (err) return err;
  Shoal__Delete *d = &w->m.del;
  shoal__delete__init(d);
  d->has_key = 1;
  d->key = bin(key, klen);
  shoal__request__init(&w->rq);
  w->rq.body_case = SHOAL__REQUEST__BODY_DELETE;
  w->rq.delete_ = d;
  return 0;
}

static int mk_cas(shoal *c, struct wreq *w, const void *key, size_t klen,
                  uint64_t expect, const void *val, size_t vlen) {
  int err = wreq_check(c, key, klen, val, vlen);
  if (err) return err;
  Shoal__Cas *m = &w->m.cas;
  shoal__cas__init(m);
  m->has_key = m->has_value = m->has_expect = 1;
  m->key = bin(key, klen);
  m->value = bin(val, vlen);
  m->expect = expect;
  shoal__request__init(&w->rq);
  w->rq.body_case = SHOAL__REQUEST__BODY_CAS;
  w->rq.cas = m;
  return 0;
}

static int put_req(shoal *c, const void *key, size_t klen, const void *val,
                   size_t vlen, uint32_t ttl_ms, uint64_t *version) {
  if (version) *version = 0;
  struct wreq w;
  int err = mk_put(c, &w, key, klen, val, vlen, ttl_ms);
  if (err) return err;
  Shoal__Response *r;
  err = shoal__call(c, &w.rq, &r);
  if (!err && version) *version = r->version;
  return err;
}

SHOAL_EXPORT int shoal_put(shoal *c, const void *key, size_t klen,
                           const void *val, size_t vlen, uint64_t *version) {
  return put_req(c, key, klen, val, vlen, 0, version);
}

SHOAL_EXPORT int shoal_put_ttl(shoal *c, const void *key, size_t klen,
                               const void *val, size_t vlen, uint32_t ttl_ms,
                               uint64_t *version) {
  return put_req(c, key, klen, val, vlen, ttl_ms, version);
}

SHOAL_EXPORT int shoal_del(shoal *c, const void *key, size_t klen) {
  struct wreq w;
  int err = mk_del(c, &w, key, klen);
  if (err) return err;
  Shoal__Response *r;
  return shoal__call(c, &w.rq, &r);
}

SHOAL_EXPORT int shoal_cas(shoal *c, const void *key, size_t klen,
                           uint64_t expect, const void *val, size_t vlen,
                           uint64_t *version) {
  if (version) *version = 0;
  struct wreq w;
  int err = mk_cas(c, &w, key, klen, expect, val, vlen);
  if (err) return err;
  Shoal__Response *r;
  err = shoal__call(c, &w.rq, &r);
  /* on ECONFLICT the broker reports the current version (0: absent) */
  if (version && r && (!err || err == SHOAL_ECONFLICT)) *version = r->version;
  return err;
}

/* ------------------------------------------------------------ batches --- */

struct batch_op {
  int kind; /* SHOAL__BATCH_OP__KIND__* */
  uint32_t ttl_ms;
  uint64_t expect;
  size_t koff, klen, voff, vlen; /* into shoal_batch.data */
};

struct shoal_batch {
  struct batch_op *ops;
  size_t n, cap;
  uint8_t *data;
  size_t dlen, dcap;
  long failed;
  size_t max_key, max_value;
  /* commit scratch, kept for reuse */
  Shoal__BatchOp *pb;
  Shoal__BatchOp **pbp;
  size_t pbcap;
};

SHOAL_EXPORT int shoal_batch_new(shoal *c, shoal_batch **out) {
  if (!out) return SHOAL_EINVAL;
  *out = NULL;
  if (c && shoal__forked(c)) return SHOAL_EFORKED;
  shoal_batch *b = calloc(1, sizeof *b);
  if (!b) return -ENOMEM;
  b->failed = -1;
  b->max_key = c ? c->max_key : SHM_KEY_MAX;
  b->max_value = c ? (size_t)c->max_value : SHM_VALUE_MAX;
  *out = b;
  return 0;
}

static int batch_grow(void **p, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap) return 0;
  size_t ncap = *cap ? *cap : 16;
  while (ncap < need) {
    if (ncap > SIZE_MAX / 2 / elem) return -ENOMEM;
    ncap *= 2;
  }
  void *np = realloc(*p, ncap * elem);
  if (!np) return -ENOMEM;
  *p = np;
  *cap = ncap;
  return 0;
}

static int batch_add(shoal_batch *b, int kind, const void *key, size_t klen,
                     const void *val, size_t vlen, uint64_t expect,
                     uint32_t ttl_ms) {
  if (!b || (!key && klen) || (!val && vlen)) return SHOAL_EINVAL;
  if (klen > b->max_key || vlen > b->max_value) return SHOAL_ETOOBIG;
  if (klen + vlen > SIZE_MAX - b->dlen) return -ENOMEM;
  void *ops = b->ops, *data = b->data;
  if (batch_grow(&ops, &b->cap, b->n + 1, sizeof *b->ops) != 0) return -ENOMEM;
  b->ops = ops;
  if (batch_grow(&data, &b->dcap, b->dlen + klen + vlen, 1) != 0)
    return -ENOMEM;
  b->data = data;
  struct batch_op *op = &b->ops[b->n++];
  op->kind = kind;
  op->ttl_ms = ttl_ms;
  op->expect = expect;
  op->koff = b->dlen;
  op->klen = klen;
  if (klen) memcpy(b->data + b->dlen, key, klen);
  b->dlen += klen;
  op->voff = b->dlen;
  op->vlen = vlen;
  if (vlen) memcpy(b->data + b->dlen, val, vlen);
  b->dlen += vlen;
  return 0;
}

SHOAL_EXPORT int shoal_batch_put(shoal_batch *b, const void *key, size_t klen,
                                 const void *val, size_t vlen,
                                 uint32_t ttl_ms) {
  return batch_add(b, SHOAL__BATCH_OP__KIND__PUT, key, klen, val, vlen, 0,
                   ttl_ms);
}

SHOAL_EXPORT int shoal_batch_del(shoal_batch *b, const void *key, size_t klen) {
  return batch_add(b, SHOAL__BATCH_OP__KIND__DELETE, key, klen, NULL, 0, 0, 0);
}

SHOAL_EXPORT int shoal_batch_del_any(shoal_batch *b, const void *key,
                                     size_t klen) {
  return batch_add(b, SHOAL__BATCH_OP__KIND__DELETE_ANY, key, klen, NULL, 0, 0,
                   0);
}

SHOAL_EXPORT int shoal_batch_cas(shoal_batch *b, const void *key, size_t klen,
                                 uint64_t expect, const void *val,
                                 size_t vlen) {
  return batch_add(b, SHOAL__BATCH_OP__KIND__CAS, key, klen, val, vlen, expect,
                   0);
}

SHOAL_EXPORT size_t shoal_batch_len(const shoal_batch *b) {
  return b ? b->n : 0;
}

SHOAL_EXPORT long shoal_batch_failed(const shoal_batch *b) {
  return b ? b->failed : -1;
}

SHOAL_EXPORT void shoal_batch_reset(shoal_batch *b) {
  if (!b) return;
  b->n = b->dlen = 0;
  b->failed = -1;
}

SHOAL_EXPORT void shoal_batch_free(shoal_batch *b) {
  if (!b) return;
  free(b->ops);
  free(b->data);
  free(b->pb);
  free(b->pbp);
  free(b);
}

SHOAL_EXPORT int shoal_batch_commit(shoal *c, shoal_batch *b, uint64_t *seq) {
  if (seq) *seq = 0;
  if (!c || !b) return SHOAL_EINVAL;
  b->failed = -1;
  if (shoal__forked(c)) return SHOAL_EFORKED;
  if (b->n > b->pbcap) {
    Shoal__BatchOp *pb = realloc(b->pb, b->n * sizeof *pb);
    if (pb) b->pb = pb;
    Shoal__BatchOp **pbp = realloc(b->pbp, b->n * sizeof *pbp);
    if (pbp) b->pbp = pbp;
    if (!pb || !pbp)
      return shoal__errf(c, -ENOMEM,
                         "out of memory committing a batch "
                         "of %zu ops",
                         b->n);
    b->pbcap = b->n;
  }
  static const Shoal__BatchOp op_init = SHOAL__BATCH_OP__INIT;
  for (size_t i = 0; i < b->n; i++) {
    const struct batch_op *op = &b->ops[i];
    Shoal__BatchOp *m = &b->pb[i];
    *m = op_init;
    m->has_kind = 1;
    m->kind = (Shoal__BatchOp__Kind)op->kind;
    m->has_key = 1;
    m->key = bin(b->data + op->koff, op->klen);
    if (op->kind == SHOAL__BATCH_OP__KIND__PUT ||
        op->kind == SHOAL__BATCH_OP__KIND__CAS) {
      m->has_value = 1;
      m->value = bin(b->data + op->voff, op->vlen);
    }
    if (op->kind == SHOAL__BATCH_OP__KIND__CAS) {
      m->has_expect = 1;
      m->expect = op->expect;
    }
    m->has_ttl_ms = op->ttl_ms != 0;
    m->ttl_ms = op->ttl_ms;
    b->pbp[i] = m;
  }
  Shoal__Batch bm = SHOAL__BATCH__INIT;
  bm.n_ops = b->n;
  bm.ops = b->pbp;
  Shoal__Request rq = SHOAL__REQUEST__INIT;
  rq.body_case = SHOAL__REQUEST__BODY_BATCH;
  rq.batch = &bm;
  Shoal__Response *r;
  int err = shoal__call(c, &rq, &r);
  if (!err) {
    if (seq) *seq = r->version;
  } else if (r && r->body_case == SHOAL__RESPONSE__BODY_BATCH && r->batch &&
             r->batch->has_failed_index) {
    b->failed = (long)r->batch->failed_index;
  }
  return err;
}

/* ----------------------------------------------------------- pipelining - */

/* Queue one request (conn.c's shoal__pipe_begin reconnects if it may).
 * The queue is sent once it holds SHOAL__FLUSH_BYTES; it is sent before
 * this request is added, so a failure concerns requests already queued
 * and this one is simply not queued. */
static int pipe_append(shoal *c, Shoal__Request *rq) {
  int err = shoal__pipe_begin(c);
  if (err) return err;
  if (c->out.len - c->out.head >= SHOAL__FLUSH_BYTES &&
      (err = shoal__flush(c)) != 0)
    return err;
  rq->has_id = 1;
  rq->id = c->next_id + 1;
  if ((err = shoal__append(c, rq)) != 0) return err;
  c->next_id++;
  c->pending++;
  return 0;
}

SHOAL_EXPORT int shoal_pipe_put(shoal *c, const void *key, size_t klen,
                                const void *val, size_t vlen, uint32_t ttl_ms) {
  struct wreq w;
  int err = mk_put(c, &w, key, klen, val, vlen, ttl_ms);
  return err ? err : pipe_append(c, &w.rq);
}

SHOAL_EXPORT int shoal_pipe_del(shoal *c, const void *key, size_t klen) {
  struct wreq w;
  int err = mk_del(c, &w, key, klen);
  return err ? err : pipe_append(c, &w.rq);
}

SHOAL_EXPORT int shoal_pipe_cas(shoal *c, const void *key, size_t klen,
                                uint64_t expect, const void *val, size_t vlen) {
  struct wreq w;
  int err = mk_cas(c, &w, key, klen, expect, val, vlen);
  return err ? err : pipe_append(c, &w.rq);
}

SHOAL_EXPORT int shoal_pipe_flush(shoal *c) {
  if (!c) return SHOAL_EINVAL;
  if (shoal__forked(c)) return SHOAL_EFORKED;
  return shoal__flush(c);
}

SHOAL_EXPORT int shoal_pipe_recv(shoal *c, uint64_t *version) {
  if (version) *version = 0;
  if (!c) return SHOAL_EINVAL;
  if (shoal__forked(c)) return SHOAL_EFORKED;
  Shoal__Response *r;
  int err = shoal__pipe_next(c, &r);
  if (version && r && (!err || err == SHOAL_ECONFLICT)) *version = r->version;
  return err;
}

SHOAL_EXPORT size_t shoal_pipe_pending(const shoal *c) {
  if (!c || shoal__forked(c)) return 0;
  return c->pending;
}

/* ------------------------------------------------------ broker requests - */

SHOAL_EXPORT int shoal_ping(shoal *c) {
  if (!c) return SHOAL_EINVAL;
  if (shoal__forked(c)) return SHOAL_EFORKED;
  Shoal__Ping p = SHOAL__PING__INIT;
  Shoal__Request rq = SHOAL__REQUEST__INIT;
  rq.body_case = SHOAL__REQUEST__BODY_PING;
  rq.ping = &p;
  Shoal__Response *r;
  return shoal__call(c, &rq, &r);
}

/* "name=value name=value" from protobuf counters; NULL on ENOMEM. */
static char *join_counters(Shoal__Counter **v, size_t n) {
  size_t cap = 1;
  for (size_t i = 0; i < n; i++)
    cap += (v[i]->name ? strlen(v[i]->name) : 0) + 23;
  char *s = malloc(cap), *p = s;
  if (!s) return NULL;
  *p = 0;
  for (size_t i = 0; i < n; i++)
    p += snprintf(p, cap - (size_t)(p - s), "%s%s=%llu", i ? " " : "",
                  v[i]->name ? v[i]->name : "?",
                  (unsigned long long)v[i]->value);
  return s;
}

SHOAL_EXPORT int shoal_stats_get(shoal *c, shoal_stats *out) {
  if (!c || !out) return SHOAL_EINVAL;
  memset(out, 0, sizeof *out);
  out->requests = out->errors = "";
  if (shoal__forked(c)) return SHOAL_EFORKED;
  Shoal__Stats st = SHOAL__STATS__INIT;
  Shoal__Request rq = SHOAL__REQUEST__INIT;
  rq.body_case = SHOAL__REQUEST__BODY_STATS;
  rq.stats = &st;
  Shoal__Response *r;
  int err = shoal__call(c, &rq, &r);
  if (err) return err;
  if (r->body_case != SHOAL__RESPONSE__BODY_STATS || !r->stats)
    return shoal__errf(c, SHOAL_EPROTOCOL,
                       "the broker answered Stats without a StatsReply");
  const Shoal__StatsReply *s = r->stats;
  out->keys = s->keys;
  out->key_bytes = s->key_bytes;
  out->value_bytes = s->value_bytes;
  out->size = s->size;
  out->bytes_used = s->bytes_used;
  out->bytes_free = s->bytes_free;
  out->commit_seq = s->commit_seq;
  out->commits = s->commits;
  out->records = s->records;
  out->retired = s->retired;
  out->retired_bytes = s->retired_bytes;
  out->reclaimed = s->reclaimed;
  out->expired = s->expired;
  out->index_capacity = s->index_capacity;
  out->index_used = s->index_used;
  out->readers_claimed = s->readers_claimed;
  out->readers_busy = s->readers_busy;
  out->oldest_snapshot = s->oldest_snapshot;
  out->oldest_snapshot_age_ms = s->oldest_snapshot_age_ms;
  out->connections = s->connections;
  out->connections_total = s->connections_total;
  out->uptime_ms = s->uptime_ms;
  out->denied = s->denied;
  out->bytes_in = s->bytes_in;
  out->bytes_out = s->bytes_out;
  out->broker_pid = s->broker_pid;
  out->hash_cache_hits = s->hash_cache_hits;
  out->hash_cache_misses = s->hash_cache_misses;
  out->hash_cache_entries = s->hash_cache_entries;
  out->hash_cache_bytes = s->hash_cache_bytes;
  out->hash_bytes_read = s->hash_bytes_read;
  out->followers = s->followers;
  out->jobs_queued = s->jobs_queued;
  out->workers = s->workers;
  char *rs = join_counters(s->requests, s->n_requests);
  char *es = join_counters(s->errors, s->n_errors);
  if (!rs || !es) {
    free(rs);
    free(es);
    return shoal__errf(c, -ENOMEM, "out of memory");
  }
  free(c->stats_requests);
  free(c->stats_errors);
  c->stats_requests = rs;
  c->stats_errors = es;
  out->requests = rs;
  out->errors = es;
  return 0;
}
