/*
 * handlers.c - one decoded Request in, one packed Response out.
 *
 * Runs on the loop's thread, which is the store's single writer: every
 * shm_put/shm_del/shm_cas/shm_batch here publishes its commit (release
 * store of commit_seq) before it returns, and the reply is packed only
 * after that, so "reply after publish" holds by construction. Get and Scan
 * read through the broker's own shm_view (a reader slot of its own, the
 * same bounds-checked path as every client); the reply is packed while the
 * section is still open, because its bytes point into the mapping, and the
 * section ends right after: the broker never holds a snapshot across
 * requests, so it never delays reclamation.
 *
 * Memory: the Request and every scratch array come from the per-frame
 * arena (arena.c), reset by broker_handle_frame once the reply is packed.
 * Nothing a request asks for is allocated beyond what its frame carries,
 * except a Scan page, bounded by its limit (<= 100000 items) and max_bytes
 * (<= --max-frame - BROKER_FRAME_OVERHEAD).
 *
 * Connection policy for bad input (DESIGN section 6, shoal.proto):
 *   - undecodable frame, first request not Hello, a failed Hello: error
 *     reply, then close (the stream or the peer can not be trusted);
 *   - unknown request type, second Hello, over-limit key or value,
 *     missing fields, a HashFile/TailLog without its descriptor: error
 *     reply, the connection stays.
 * HashFile, TailLog and Cancel are served by files.c (worker pool).
 *
 * Lease policy (DESIGN section 4). A Hello with want_slot leases a reader
 * slot to the peer's pid (SO_PEERCRED, which Hello.pid must match): the
 * slot it names in resume_slot if the readers object still records that
 * pid there with the same start time (a client reconnecting after a broker
 * restart keeps the slot its open read sections use), else a new one.
 * When the connection closes the slot is released ONLY IF the peer process
 * is gone: its pid no longer exists, is a zombie, or now has another start
 * time (pid reuse). A live peer keeps its slot, because the slot is what
 * protects the snapshot of a read section it may still be in: a client
 * whose connection broke keeps reading through it and resumes it with
 * Hello.resume_slot; a client closing its handle releases it itself
 * (shoal_close -> shm_view_detach_slot(v, 1)). A process that dies later
 * is cleared by shm_sweep_readers (1 s tick); one that looked alive only
 * because it was still exiting is looked at again for a few seconds
 * (broker_lease_recheck), since a dying process closes its sockets before
 * it disappears and the sweep counts zombies as alive.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker-internal.h"

/* Scan page defaults and bounds (shoal.proto: limit 0 = 1000). */
#define SCAN_DEFAULT_LIMIT 1000u
#define SCAN_MAX_LIMIT 100000u
#define SCAN_DEFAULT_BYTES (1u << 20)
/* What one KeyValue costs on the wire besides key and value: tags, length
 * varints, version and expires_at. */
#define SCAN_ITEM_OVERHEAD 40u
/* Leases of closed connections are looked at again for this long. */
#define RECHECK_MS 10000u

/* --------------------------------------------------------------- replies -- */

/* The envelope of a reply: the request's id, a status, a body case. */
static void resp_init(Shoal__Response *r, uint64_t id, int status,
                      Shoal__Response__BodyCase body) {
  shoal__response__init(r);
  r->has_id = 1;
  r->id = id;
  r->has_status = 1;
  r->status = status;
  r->body_case = body;
}

static void reply_fmt(struct broker *b, struct broker_conn *c, uint64_t id,
                      int status, int has_version, uint64_t version,
                      const char *fmt, va_list ap) {
  char detail[1024] = "";
  char msg[2048];
  if (fmt) vsnprintf(detail, sizeof detail, fmt, ap);
  Shoal__Response r;
  resp_init(&r, id, status, SHOAL__RESPONSE__BODY__NOT_SET);
  if (status) {
    if (detail[0])
      snprintf(msg, sizeof msg, "%s: %s", shoal_strerror(status), detail);
    else
      snprintf(msg, sizeof msg, "%s", shoal_strerror(status));
    r.error = msg;
  }
  r.has_version = has_version;
  r.version = version;
  broker_reply(b, c, &r);
}

void broker_reply_error(struct broker *b, struct broker_conn *c, uint64_t id,
                        int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  reply_fmt(b, c, id, status, 0, 0, fmt, ap);
  va_end(ap);
}

static void reply_status(struct broker *b, struct broker_conn *c, uint64_t id,
                         int status, int has_version, uint64_t version,
                         const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));
static void reply_status(struct broker *b, struct broker_conn *c, uint64_t id,
                         int status, int has_version, uint64_t version,
                         const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  reply_fmt(b, c, id, status, has_version, version, fmt, ap);
  va_end(ap);
}

/* A protocol error: counted, logged (rate-limited), answered. */
static void protocol_error(struct broker *b, struct broker_conn *c,
                           uint64_t id, int status, int close_after,
                           const char *what) {
  b->stats.protocol_errors++;
  broker_log_limited("protocol_error conn=%llu pid=%d reason=\"%s\"%s",
                     (unsigned long long)c->id, (int)c->pid, what,
                     close_after ? " action=close" : "");
  broker_reply_error(b, c, id, status, "%s", what);
  if (close_after) broker_conn_close_after_flush(b, c);
}

/* The reply to a store write: the detail of an unexpected failure comes
 * from the store ("fallocate of 4 MiB ... No space left on device"). */
static void reply_write(struct broker *b, struct broker_conn *c, uint64_t id,
                        int err, uint64_t version) {
  if (!err) {
    broker_reply_ok_version(b, c, id, version); /* the hot path */
  } else if (err == SHOAL_ENOTFOUND) {
    reply_status(b, c, id, err, 0, 0, NULL);
  } else if (err == SHOAL_ECONFLICT) {
    reply_status(b, c, id, err, 1, version, "current version %llu",
                 (unsigned long long)version);
  } else {
    const char *d = shm_store_lasterr(b->store);
    if (err == SHOAL_ENOSPC || err == SHOAL_ECORRUPT)
      broker_log_limited("store_error status=%s detail=\"%s\"",
                         shoal_errname(err), d);
    reply_status(b, c, id, err, 0, 0, "%s", d);
  }
}

/* ---------------------------------------------------------------- limits -- */

/* 0 if the key and value fit, else an ETOOBIG reply has been sent. */
static int check_sizes(struct broker *b, struct broker_conn *c, uint64_t id,
                       size_t klen, size_t vlen, long op) {
  char where[32] = "";
  if (op >= 0) snprintf(where, sizeof where, "op %ld: ", op);
  if (klen > SHM_KEY_MAX) {
    reply_status(b, c, id, SHOAL_ETOOBIG, 0, 0,
                 "%skey of %zu bytes exceeds the limit of %u bytes", where,
                 klen, SHM_KEY_MAX);
    return -1;
  }
  if (vlen > b->max_value) {
    reply_status(b, c, id, SHOAL_ETOOBIG, 0, 0,
                 "%svalue of %zu bytes exceeds this broker's limit of %llu "
                 "bytes (--max-frame %llu minus %u); raise --max-frame for "
                 "larger values",
                 where, vlen, (unsigned long long)b->max_value,
                 (unsigned long long)b->opt.max_frame, BROKER_FRAME_OVERHEAD);
    return -1;
  }
  return 0;
}

static uint64_t expires_at(protobuf_c_boolean has, uint64_t ttl_ms) {
  if (!has || !ttl_ms) return 0;
  uint64_t now = shm_now_ms();
  /* a TTL past the year 292 million is "never" in practice; saturate */
  return ttl_ms > UINT64_MAX - now ? UINT64_MAX : now + ttl_ms;
}

/* ----------------------------------------------------------------- leases -- */

/* 'Z' (zombie) or 'X' (dead) in /proc/PID/stat: exited, not yet reaped. */
static int pid_exited(pid_t pid) {
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "re");
  if (!f) return 1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  const char *p = strrchr(buf, ')'); /* comm may hold spaces and parens */
  if (!p || p[1] != ' ') return 0;
  return p[2] == 'Z' || p[2] == 'X' || p[2] == 'x';
}

/* 1 when the process that held the lease (pid, start) is gone. */
static int lease_holder_gone(pid_t pid, uint64_t start, uint64_t *now_start) {
  *now_start = shm_pid_start_time(pid);
  if (*now_start == 0) return 1;          /* no such process */
  if (*now_start != start) return 1;      /* the pid was reused */
  return pid_exited(pid);
}

static void lease_release(struct broker *b, unsigned slot, pid_t pid,
                          uint64_t start, uint64_t now_start) {
  /* The pid was reused and the new process holds this very slot (it was
   * swept and claimed again): not ours to free. */
  if (now_start && now_start != start &&
      shm_lease_adopt(b->store, slot, pid) == 0)
    return;
  if (shm_lease_owner(b->store, slot) != pid) return; /* freed already */
  shm_lease_release(b->store, slot, pid);
  if (!b->opt.quiet)
    broker_log("lease_released slot=%u pid=%d reason=\"process gone\"", slot,
               (int)pid);
}

void broker_lease_on_close(struct broker *b, struct broker_conn *c) {
  if (c->slot < 0) return;
  unsigned slot = (unsigned)c->slot;
  c->slot = -1;
  uint64_t now_start;
  if (lease_holder_gone(c->pid, c->pid_start, &now_start)) {
    lease_release(b, slot, c->pid, c->pid_start, now_start);
    return;
  }
  /* alive (or still exiting): keep the slot, look again for a while */
  if (b->nrecheck == sizeof b->recheck / sizeof b->recheck[0]) {
    /* full: drop the oldest; shm_sweep_readers still covers it once the
     * process is reaped */
    memmove(&b->recheck[0], &b->recheck[1],
            (b->nrecheck - 1) * sizeof b->recheck[0]);
    b->nrecheck--;
  }
  b->recheck[b->nrecheck++] = (struct broker_recheck){
      slot, c->pid, c->pid_start, broker_mono_ms() + RECHECK_MS};
}

void broker_lease_recheck(struct broker *b) {
  uint64_t now = broker_mono_ms();
  unsigned keep = 0;
  for (unsigned i = 0; i < b->nrecheck; i++) {
    struct broker_recheck r = b->recheck[i];
    uint64_t now_start;
    if (lease_holder_gone(r.pid, r.start, &now_start)) {
      lease_release(b, r.slot, r.pid, r.start, now_start);
      continue;
    }
    if (now < r.until_ms) b->recheck[keep++] = r;
  }
  b->nrecheck = keep;
}

/* ---------------------------------------------------------------- hello -- */

/* The client's free text, printable and short, for the log. */
static void sanitize(char *dst, size_t cap, const char *src) {
  size_t n = 0;
  for (; src && *src && n + 1 < cap; src++)
    dst[n++] = (*src >= 0x20 && *src < 0x7f && *src != '"') ? *src : '?';
  dst[n] = 0;
}

static void on_hello(struct broker *b, struct broker_conn *c, uint64_t id,
                     const Shoal__Hello *h) {
  char what[256];
  if (c->hello) {
    protocol_error(b, c, id, SHOAL_EPROTOCOL, 0,
                   "Hello was already received on this connection");
    return;
  }
  if (!h->has_protocol || h->protocol != BROKER_PROTOCOL) {
    snprintf(what, sizeof what,
             "client speaks protocol %u, this broker speaks protocol %u; use "
             "a libshoal matching this shoald",
             h->has_protocol ? h->protocol : 0, BROKER_PROTOCOL);
    protocol_error(b, c, id, SHOAL_EVERSION, 1, what);
    return;
  }
  if (!h->has_pid || h->pid != (int32_t)c->pid) {
    snprintf(what, sizeof what,
             "Hello.pid %d does not match the peer's pid %d (SO_PEERCRED); "
             "a client in another pid namespace can not lease a reader slot",
             h->has_pid ? (int)h->pid : 0, (int)c->pid);
    protocol_error(b, c, id, SHOAL_EPROTOCOL, 1, what);
    return;
  }
  int want = h->has_want_slot ? h->want_slot : 1;
  int slot = -1, resumed = 0;
  if (want) {
    if (h->has_resume_slot && h->resume_slot >= 0 &&
        shm_lease_adopt(b->store, (unsigned)h->resume_slot, c->pid) == 0) {
      slot = h->resume_slot;
      resumed = 1;
    } else {
      slot = shm_lease_claim(b->store, c->pid);
      if (slot < 0) {
        int err = slot == -ESRCH ? SHOAL_EPROTOCOL : slot;
        broker_log_limited("hello_failed conn=%llu pid=%d status=%s",
                           (unsigned long long)c->id, (int)c->pid,
                           shoal_errname(slot));
        broker_reply_error(b, c, id, err,
                           slot == SHOAL_ENOREADERS
                               ? "no free reader slot for pid %d"
                               : "leasing a reader slot for pid %d failed",
                           (int)c->pid);
        broker_conn_close_after_flush(b, c);
        return;
      }
    }
    c->pid_start = shm_pid_start_time(c->pid);
  }
  c->slot = slot;
  c->hello = 1;
  if (!b->opt.quiet) {
    char client[80];
    sanitize(client, sizeof client, h->client);
    broker_log("hello conn=%llu pid=%d client=\"%s\" slot=%d%s",
               (unsigned long long)c->id, (int)c->pid, client, slot,
               resumed ? " resumed=1" : "");
  }
  uint64_t seq = 0;
  if (shm_read_begin(b->view) == 0) {
    seq = shm_view_snapshot(b->view);
    shm_read_end(b->view);
  }
  Shoal__HelloReply hr = SHOAL__HELLO_REPLY__INIT;
  hr.has_protocol = 1;
  hr.protocol = BROKER_PROTOCOL;
  hr.store = (char *)b->opt.name;
  hr.shm_dir = (char *)b->opt.shm_dir;
  hr.data_object = b->data_object;
  hr.readers_object = b->readers_object;
  /* clients also check it themselves when they map the segment
   * (shm_view_open: SHOAL_EVERSION) */
  hr.has_format = 1;
  hr.format = shm_format_version();
  hr.has_reader_slot = 1;
  hr.reader_slot = slot;
  hr.has_max_frame = 1;
  hr.max_frame = b->opt.max_frame;
  hr.has_max_key = 1;
  hr.max_key = SHM_KEY_MAX;
  hr.has_max_value = 1;
  hr.max_value = b->max_value;
  hr.has_broker_pid = 1;
  hr.broker_pid = (int32_t)b->pid;
  hr.has_commit_seq = 1;
  hr.commit_seq = seq;
  Shoal__Response r;
  resp_init(&r, id, 0, SHOAL__RESPONSE__BODY__NOT_SET);
  r.body_case = SHOAL__RESPONSE__BODY_HELLO;
  r.hello = &hr;
  broker_reply(b, c, &r);
}

/* --------------------------------------------------------------- writes -- */

#define NEED_KEY(msg, what)                                                    \
  do {                                                                         \
    if (!(msg)->has_key) {                                                     \
      reply_status(b, c, id, SHOAL_EINVAL, 0, 0, what " without a key");       \
      return;                                                                  \
    }                                                                          \
  } while (0)

static void on_put(struct broker *b, struct broker_conn *c, uint64_t id,
                   const Shoal__Put *p) {
  NEED_KEY(p, "Put");
  if (check_sizes(b, c, id, p->key.len, p->value.len, -1)) return;
  uint64_t v = 0;
  int err = shm_put(b->store, p->key.data, p->key.len, p->value.data,
                    p->value.len, expires_at(p->has_ttl_ms, p->ttl_ms), &v);
  reply_write(b, c, id, err, v);
}

static void on_delete(struct broker *b, struct broker_conn *c, uint64_t id,
                      const Shoal__Delete *d) {
  NEED_KEY(d, "Delete");
  if (check_sizes(b, c, id, d->key.len, 0, -1)) return;
  uint64_t v = 0;
  int err = shm_del(b->store, d->key.data, d->key.len, &v);
  reply_write(b, c, id, err, v);
}

static void on_cas(struct broker *b, struct broker_conn *c, uint64_t id,
                   const Shoal__Cas *p) {
  NEED_KEY(p, "Cas");
  if (check_sizes(b, c, id, p->key.len, p->value.len, -1)) return;
  uint64_t v = 0;
  int err = shm_cas(b->store, p->key.data, p->key.len,
                    p->has_expect ? p->expect : 0, p->value.data, p->value.len,
                    expires_at(p->has_ttl_ms, p->ttl_ms), &v);
  reply_write(b, c, id, err, v);
}

static void reply_batch(struct broker *b, struct broker_conn *c, uint64_t id,
                        int status, uint64_t seq, int has_failed,
                        uint32_t failed, uint32_t applied, const char *detail) {
  char msg[2048];
  Shoal__BatchReply br = SHOAL__BATCH_REPLY__INIT;
  br.has_failed_index = has_failed;
  br.failed_index = failed;
  br.has_applied = 1;
  br.applied = applied;
  Shoal__Response r;
  resp_init(&r, id, status, SHOAL__RESPONSE__BODY__NOT_SET);
  if (status) {
    snprintf(msg, sizeof msg, "%s: %s", shoal_strerror(status), detail);
    r.error = msg;
  } else {
    r.has_version = 1;
    r.version = seq;
  }
  r.body_case = SHOAL__RESPONSE__BODY_BATCH;
  r.batch = &br;
  broker_reply(b, c, &r);
}

static void on_batch(struct broker *b, struct broker_conn *c, uint64_t id,
                     const Shoal__Batch *bt) {
  size_t n = bt->n_ops;
  char detail[512];
  if (n > BROKER_MAX_BATCH_OPS) {
    snprintf(detail, sizeof detail,
             "a batch of %zu ops exceeds this broker's limit of %u ops; split "
             "it into several batches",
             n, BROKER_MAX_BATCH_OPS);
    reply_batch(b, c, id, SHOAL_ETOOBIG, 0, 0, 0, 0, detail);
    return;
  }
  shm_op *ops = n ? broker_arena_alloc(&b->arena, n * sizeof *ops) : NULL;
  if (n && !ops) {
    reply_batch(b, c, id, -ENOMEM, 0, 0, 0, 0, "no memory for the batch");
    return;
  }
  for (size_t i = 0; i < n; i++) {
    const Shoal__BatchOp *o = bt->ops[i];
    shm_op *op = &ops[i];
    int kind;
    switch (o->has_kind ? o->kind : SHOAL__BATCH_OP__KIND__KIND_UNSPECIFIED) {
    case SHOAL__BATCH_OP__KIND__PUT: kind = SHM_OP_PUT; break;
    case SHOAL__BATCH_OP__KIND__DELETE: kind = SHM_OP_DEL; break;
    case SHOAL__BATCH_OP__KIND__CAS: kind = SHM_OP_CAS; break;
    case SHOAL__BATCH_OP__KIND__DELETE_ANY: kind = SHM_OP_DEL_ANY; break;
    default: kind = 0; break;
    }
    int err = 0;
    if (!kind) {
      err = SHOAL_EPROTOCOL;
      snprintf(detail, sizeof detail,
               "op %zu: unknown kind %d (PUT, DELETE, CAS or DELETE_ANY)", i,
               o->has_kind ? (int)o->kind : 0);
    } else if (!o->has_key) {
      err = SHOAL_EINVAL;
      snprintf(detail, sizeof detail, "op %zu: no key", i);
    } else if (o->key.len > SHM_KEY_MAX) {
      err = SHOAL_ETOOBIG;
      snprintf(detail, sizeof detail,
               "op %zu: key of %zu bytes exceeds the limit of %u bytes", i,
               o->key.len, SHM_KEY_MAX);
    } else if (o->value.len > b->max_value) {
      err = SHOAL_ETOOBIG;
      snprintf(detail, sizeof detail,
               "op %zu: value of %zu bytes exceeds this broker's limit of "
               "%llu bytes; raise --max-frame for larger values",
               i, o->value.len, (unsigned long long)b->max_value);
    }
    if (err) {
      reply_batch(b, c, id, err, 0, 1, (uint32_t)i, 0, detail);
      return;
    }
    *op = (shm_op){.kind = kind,
                   .key = o->key.data,
                   .klen = o->key.len,
                   .val = o->value.data,
                   .vlen = o->value.len,
                   .expect = o->has_expect ? o->expect : 0,
                   .expires_at = expires_at(o->has_ttl_ms, o->ttl_ms)};
  }
  uint64_t seq = 0;
  size_t failed = (size_t)-1;
  int err = shm_batch(b->store, ops, n, &seq, &failed);
  if (!err) {
    reply_batch(b, c, id, 0, seq, 0, 0, (uint32_t)n, NULL);
    return;
  }
  const char *d = shm_store_lasterr(b->store);
  if (err == SHOAL_ENOTFOUND)
    snprintf(detail, sizeof detail, "op %zu: key not found", failed);
  else if (err == SHOAL_ECONFLICT)
    snprintf(detail, sizeof detail, "op %zu: version conflict", failed);
  else
    snprintf(detail, sizeof detail, "%s", d);
  if (err == SHOAL_ENOSPC || err == SHOAL_ECORRUPT)
    broker_log_limited("store_error status=%s detail=\"%s\"",
                       shoal_errname(err), d);
  reply_batch(b, c, id, err, 0, failed < n, (uint32_t)failed, 0, detail);
}

/* ---------------------------------------------------------------- reads -- */

static void on_get(struct broker *b, struct broker_conn *c, uint64_t id,
                   const Shoal__Get *g) {
  NEED_KEY(g, "Get");
  if (check_sizes(b, c, id, g->key.len, 0, -1)) return;
  int err = shm_read_begin(b->view);
  if (err) {
    reply_status(b, c, id, err, 0, 0, "the broker's own reader slot");
    return;
  }
  shm_val v;
  err = shm_get(b->view, g->key.data, g->key.len, &v);
  if (!err && v.len > b->opt.max_frame - BROKER_FRAME_OVERHEAD / 2) {
    /* stored under a larger --max-frame: can not travel in one frame */
    reply_status(b, c, id, SHOAL_ETOOBIG, 0, 0,
                 "the value is %zu bytes, more than fits a reply under "
                 "--max-frame %llu; read it from the segment (shoal_get) or "
                 "raise --max-frame",
                 v.len, (unsigned long long)b->opt.max_frame);
  } else if (err) {
    reply_status(b, c, id, err, 0, 0, NULL);
  } else {
    Shoal__GetReply gr = SHOAL__GET_REPLY__INIT;
    gr.has_value = 1;
    gr.value.data = (uint8_t *)v.data; /* packed before the section ends */
    gr.value.len = v.len;
    gr.has_version = 1;
    gr.version = v.version;
    gr.has_expires_at_ms = 1;
    gr.expires_at_ms = v.expires_at;
    Shoal__Response r;
    resp_init(&r, id, 0, SHOAL__RESPONSE__BODY_GET);
    r.get = &gr;
    broker_reply(b, c, &r);
  }
  shm_read_end(b->view);
}

struct scan_ctx {
  struct broker *b;
  Shoal__KeyValue *kv;  /* arena, grown by doubling */
  Shoal__KeyValue **items;
  size_t n, cap, limit;
  size_t bytes, max_bytes, max_item;
  int keys_only;
  int more, oom, toobig;
  const void *next;     /* the first key not returned (in the mapping) */
  size_t next_len;
  size_t big_len;
};

static int scan_cb(void *arg, const void *key, size_t klen, const shm_val *v) {
  struct scan_ctx *x = arg;
  size_t cost = klen + (x->keys_only ? 0 : v->len) + SCAN_ITEM_OVERHEAD;
  if (x->n == x->limit || (x->n && x->bytes + cost > x->max_bytes)) {
    x->more = 1;
    x->next = key;
    x->next_len = klen;
    return 1;
  }
  /* Here x->n == 0 whenever cost > max_bytes (max_item >= max_bytes), so
   * this refuses a lone item that no frame can carry: only a value stored
   * under a larger --max-frame. */
  if (cost > x->max_item) {
    x->toobig = 1;
    x->big_len = v->len;
    x->next = key;
    x->next_len = klen;
    return 1;
  }
  if (x->n == x->cap) {
    size_t cap = x->cap ? x->cap * 2 : 64;
    if (cap > x->limit) cap = x->limit;
    Shoal__KeyValue *kv = broker_arena_alloc(&x->b->arena, cap * sizeof *kv);
    Shoal__KeyValue **it = broker_arena_alloc(&x->b->arena, cap * sizeof *it);
    if (!kv || !it) {
      x->oom = 1;
      return 1;
    }
    if (x->n) memcpy(kv, x->kv, x->n * sizeof *kv);
    for (size_t i = 0; i < x->n; i++) it[i] = &kv[i];
    x->kv = kv;
    x->items = it;
    x->cap = cap;
  }
  Shoal__KeyValue *e = &x->kv[x->n];
  shoal__key_value__init(e);
  e->has_key = 1;
  e->key.data = (uint8_t *)key;
  e->key.len = klen;
  if (!x->keys_only) {
    e->has_value = 1;
    e->value.data = (uint8_t *)v->data;
    e->value.len = v->len;
  }
  e->has_version = 1;
  e->version = v->version;
  if (v->expires_at) {
    e->has_expires_at_ms = 1;
    e->expires_at_ms = v->expires_at;
  }
  x->items[x->n++] = e;
  x->bytes += cost;
  return 0;
}

/* memcmp order, a shorter key first on a common prefix (shm_scan's). */
static int keycmp(const void *a, size_t al, const void *b, size_t bl) {
  size_t m = al < bl ? al : bl;
  int r = m ? memcmp(a, b, m) : 0; /* an empty key may be NULL */
  if (r) return r;
  return al < bl ? -1 : al > bl;
}

static void on_scan(struct broker *b, struct broker_conn *c, uint64_t id,
                    const Shoal__Scan *s) {
  const void *start = s->has_start ? s->start.data : NULL;
  size_t slen = s->has_start ? s->start.len : 0;
  const void *end = s->has_end && s->end.len ? s->end.data : NULL;
  size_t elen = end ? s->end.len : 0;
  /* Prefix: the range becomes [prefix, prefix_end), narrowed further by a
   * start or end inside it, so a client paginates a prefix scan by
   * sending the same prefix with start = next_start. */
  if (s->has_prefix && s->prefix.len) {
    if (!start || keycmp(start, slen, s->prefix.data, s->prefix.len) < 0) {
      start = s->prefix.data;
      slen = s->prefix.len;
    }
    uint8_t *pe = broker_arena_alloc(&b->arena, s->prefix.len);
    if (!pe) {
      reply_status(b, c, id, -ENOMEM, 0, 0, "no memory for the scan");
      return;
    }
    size_t pelen = shm_prefix_end(s->prefix.data, s->prefix.len, pe);
    if (pelen && (!end || keycmp(pe, pelen, end, elen) < 0)) {
      end = pe;
      elen = pelen;
    }
  }
  struct scan_ctx x = {.b = b};
  x.limit = s->has_limit && s->limit ? s->limit : SCAN_DEFAULT_LIMIT;
  if (x.limit > SCAN_MAX_LIMIT) x.limit = SCAN_MAX_LIMIT;
  uint64_t page_max = b->opt.max_frame - BROKER_FRAME_OVERHEAD;
  x.max_bytes = s->has_max_bytes && s->max_bytes ? s->max_bytes
                                                 : SCAN_DEFAULT_BYTES;
  if (x.max_bytes > page_max) x.max_bytes = (size_t)page_max;
  /* One item alone may exceed max_bytes (so a scan always progresses) as
   * long as it fits a frame with the reply's envelope and next_start. */
  x.max_item = (size_t)(b->opt.max_frame - BROKER_FRAME_OVERHEAD / 2);
  x.keys_only = s->has_keys_only && s->keys_only;

  int err = shm_read_begin(b->view);
  if (err) {
    reply_status(b, c, id, err, 0, 0, "the broker's own reader slot");
    return;
  }
  uint64_t snap = shm_view_snapshot(b->view);
  err = shm_scan(b->view, start, slen, end, elen, scan_cb, &x);
  if (err > 0) err = 0; /* stopped by scan_cb */
  if (!err && x.oom) err = -ENOMEM;
  if (x.toobig) {
    reply_status(b, c, id, SHOAL_ETOOBIG, 0, 0,
                 "key '%.*s%s' holds a %zu-byte value, more than fits a reply "
                 "under --max-frame %llu; scan with keys_only or read it from "
                 "the segment",
                 (int)(x.next_len > 64 ? 64 : x.next_len),
                 (const char *)x.next, x.next_len > 64 ? "..." : "",
                 x.big_len, (unsigned long long)b->opt.max_frame);
  } else if (err) {
    reply_status(b, c, id, err, 0, 0,
                 err == -ENOMEM ? "no memory for the scan page" : NULL);
  } else {
    Shoal__ScanReply sr = SHOAL__SCAN_REPLY__INIT;
    sr.n_items = x.n;
    sr.items = x.items;
    sr.has_more = 1;
    sr.more = x.more;
    if (x.more) {
      /* the first key not returned: exactly where the next page starts
       * (never longer than a key, unlike "last key + \0") */
      sr.has_next_start = 1;
      sr.next_start.data = (uint8_t *)x.next;
      sr.next_start.len = x.next_len;
    }
    sr.has_snapshot = 1;
    sr.snapshot = snap;
    Shoal__Response r;
    resp_init(&r, id, 0, SHOAL__RESPONSE__BODY_SCAN);
    r.scan = &sr;
    broker_reply(b, c, &r);
  }
  shm_read_end(b->view);
}

/* ----------------------------------------------------------------- misc -- */

static void on_stats(struct broker *b, struct broker_conn *c, uint64_t id) {
  Shoal__StatsReply sr = SHOAL__STATS_REPLY__INIT;
  Shoal__Counter reqs[BROKER_REQ__COUNT], *reqp[BROKER_REQ__COUNT];
  Shoal__Counter errs[BROKER_ERR_SLOTS + 1], *errp[BROKER_ERR_SLOTS + 1];
  char names[BROKER_ERR_SLOTS + 1][24];
  broker_fill_stats(b, &sr, reqs, reqp, errs, errp, names);
  Shoal__Response r;
  resp_init(&r, id, 0, SHOAL__RESPONSE__BODY_STATS);
  r.stats = &sr;
  broker_reply(b, c, &r);
}

static void on_ping(struct broker *b, struct broker_conn *c, uint64_t id,
                    const Shoal__Ping *p) {
  if (p->has_payload && p->payload.len > b->max_value) {
    reply_status(b, c, id, SHOAL_ETOOBIG, 0, 0,
                 "Ping payload of %zu bytes exceeds %llu bytes",
                 p->payload.len, (unsigned long long)b->max_value);
    return;
  }
  Shoal__Pong pong = SHOAL__PONG__INIT;
  if (p->has_payload) {
    pong.has_payload = 1;
    pong.payload = p->payload;
  }
  pong.has_time_ms = 1;
  pong.time_ms = shm_now_ms();
  Shoal__Response r;
  resp_init(&r, id, 0, SHOAL__RESPONSE__BODY_PONG);
  r.pong = &pong;
  broker_reply(b, c, &r);
}

/* -------------------------------------------------------------- dispatch -- */

static int req_type(Shoal__Request__BodyCase bc) {
  switch (bc) {
  case SHOAL__REQUEST__BODY_HELLO: return BROKER_REQ_HELLO;
  case SHOAL__REQUEST__BODY_PUT: return BROKER_REQ_PUT;
  case SHOAL__REQUEST__BODY_DELETE: return BROKER_REQ_DELETE;
  case SHOAL__REQUEST__BODY_CAS: return BROKER_REQ_CAS;
  case SHOAL__REQUEST__BODY_BATCH: return BROKER_REQ_BATCH;
  case SHOAL__REQUEST__BODY_GET: return BROKER_REQ_GET;
  case SHOAL__REQUEST__BODY_SCAN: return BROKER_REQ_SCAN;
  case SHOAL__REQUEST__BODY_STATS: return BROKER_REQ_STATS;
  case SHOAL__REQUEST__BODY_PING: return BROKER_REQ_PING;
  case SHOAL__REQUEST__BODY_HASH_FILE: return BROKER_REQ_HASH_FILE;
  case SHOAL__REQUEST__BODY_TAIL_LOG: return BROKER_REQ_TAIL_LOG;
  case SHOAL__REQUEST__BODY_CANCEL: return BROKER_REQ_CANCEL;
  default: return BROKER_REQ_UNKNOWN;
  }
}

void broker_handle_frame(struct broker *b, struct broker_conn *c,
                         const uint8_t *data, size_t len) {
  broker_arena_budget(&b->arena, 2 * len + BROKER_DECODE_SLACK);
  Shoal__Request *req = (Shoal__Request *)protobuf_c_message_unpack(
      &shoal__request__descriptor, &b->arena.pb, len, data);
  if (!req) {
    char what[320];
    int oom = b->arena.failed, over = b->arena.over_budget;
    broker_arena_reset(&b->arena);
    if (over)
      snprintf(what, sizeof what,
               "Request too complex: decoding the %zu-byte frame needs more "
               "than %zu bytes (a batch may hold at most %u ops; split it); "
               "closing",
               len, 2 * len + BROKER_DECODE_SLACK, BROKER_MAX_BATCH_OPS);
    else if (oom)
      snprintf(what, sizeof what,
               "no memory to decode a %zu-byte Request; closing", len);
    else
      snprintf(what, sizeof what,
               "malformed Request: the %zu-byte frame is not a valid "
               "shoal.Request (protobuf decoding failed); closing, the stream "
               "can not be trusted",
               len);
    protocol_error(b, c, 0,
                   over  ? SHOAL_ETOOBIG
                   : oom ? -ENOMEM
                         : SHOAL_EPROTOCOL,
                   1, what);
    return;
  }
  uint64_t id = req->has_id ? req->id : 0;
  int type = req_type(req->body_case);
  b->stats.requests[type]++;
  if (!c->hello && type != BROKER_REQ_HELLO) {
    char what[160];
    snprintf(what, sizeof what,
             "the first request on a connection must be Hello (got %s); "
             "closing",
             broker_req_name(type));
    protocol_error(b, c, id, SHOAL_EPROTOCOL, 1, what);
    broker_arena_reset(&b->arena);
    return;
  }
  switch (type) {
  case BROKER_REQ_HELLO: on_hello(b, c, id, req->hello); break;
  case BROKER_REQ_PUT: on_put(b, c, id, req->put); break;
  case BROKER_REQ_DELETE: on_delete(b, c, id, req->delete_); break;
  case BROKER_REQ_CAS: on_cas(b, c, id, req->cas); break;
  case BROKER_REQ_BATCH: on_batch(b, c, id, req->batch); break;
  case BROKER_REQ_GET: on_get(b, c, id, req->get); break;
  case BROKER_REQ_SCAN: on_scan(b, c, id, req->scan); break;
  case BROKER_REQ_STATS: on_stats(b, c, id); break;
  case BROKER_REQ_PING: on_ping(b, c, id, req->ping); break;
  case BROKER_REQ_HASH_FILE: broker_on_hash_file(b, c, id, req->hash_file); break;
  case BROKER_REQ_TAIL_LOG: broker_on_tail_log(b, c, id, req->tail_log); break;
  case BROKER_REQ_CANCEL: broker_on_cancel(b, c, id, req->cancel); break;
  default:
    protocol_error(b, c, id, SHOAL_EPROTOCOL, 0,
                   "unknown request type: this shoald does not serve it "
                   "(a newer client? upgrade shoald)");
    break;
  }
  broker_arena_reset(&b->arena);
}
