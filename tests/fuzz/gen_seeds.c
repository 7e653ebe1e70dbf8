/*
 * gen_seeds.c - write the seed corpus of fuzz_request: valid requests of
 * every type, packed with the generated protobuf-c code (proto/), framed
 * as a client sends them (u32 LE length, then a shoal.Request).
 *
 * usage: gen_seeds DIR     (writes DIR/<name> files; existing ones replaced)
 *
 * Each file is one input of fuzz_request: a flags byte (fuzz-common.h),
 * then a connection's byte stream. Most seeds start with a Hello (pid
 * FUZZ_PEER_PID) so the real handshake is covered; the "nohello-*" ones
 * set FUZZ_REQ_HELLO_DONE so mutations reach each handler directly.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz-common.h"
#include "shoal.pb-c.h"

static const char *outdir;

struct buf {
  uint8_t *p;
  size_t n, cap;
};

static void put_bytes(struct buf *b, const void *p, size_t n) {
  if (b->n + n > b->cap) {
    b->cap = (b->n + n) * 2 + 64;
    b->p = realloc(b->p, b->cap);
    FUZZ_CHECK(b->p != NULL);
  }
  memcpy(b->p + b->n, p, n);
  b->n += n;
}

static void frame(struct buf *b, const Shoal__Request *r) {
  size_t n = shoal__request__get_packed_size(r);
  uint8_t *tmp = malloc(n + 1);
  FUZZ_CHECK(tmp != NULL);
  shoal__request__pack(r, tmp);
  uint8_t len[4] = {(uint8_t)n, (uint8_t)(n >> 8), (uint8_t)(n >> 16),
                    (uint8_t)(n >> 24)};
  put_bytes(b, len, 4);
  put_bytes(b, tmp, n);
  free(tmp);
}

static void hello(struct buf *b, uint64_t id) {
  Shoal__Hello h = SHOAL__HELLO__INIT;
  h.has_protocol = 1;
  h.protocol = 1;
  h.has_pid = 1;
  h.pid = FUZZ_PEER_PID;
  h.client = "fuzz/seed";
  Shoal__Request r = SHOAL__REQUEST__INIT;
  r.has_id = 1;
  r.id = id;
  r.body_case = SHOAL__REQUEST__BODY_HELLO;
  r.hello = &h;
  frame(b, &r);
}

static void save(const char *name, uint8_t flags, const struct buf *b) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", outdir, name);
  FILE *f = fopen(path, "wb");
  FUZZ_CHECK(f != NULL);
  fputc(flags, f);
  if (b->n) FUZZ_CHECK(fwrite(b->p, 1, b->n, f) == b->n);
  FUZZ_CHECK(fclose(f) == 0);
}

#define BYTES(s) ((ProtobufCBinaryData){sizeof(s) - 1, (uint8_t *)(s)})

/* One request body, built by @fill, saved twice: after a Hello, and alone
 * with FUZZ_REQ_HELLO_DONE. */
typedef void (*fill_fn)(Shoal__Request *r);

static void both(const char *name, fill_fn fill) {
  struct buf b = {0};
  Shoal__Request r = SHOAL__REQUEST__INIT;
  r.has_id = 1;
  r.id = 2;
  fill(&r);
  char nm[256];
  hello(&b, 1);
  frame(&b, &r);
  snprintf(nm, sizeof nm, "hello-%s", name);
  save(nm, 0, &b);
  b.n = 0;
  frame(&b, &r);
  snprintf(nm, sizeof nm, "nohello-%s", name);
  save(nm, FUZZ_REQ_HELLO_DONE, &b);
  free(b.p);
}

static Shoal__Put put_m = SHOAL__PUT__INIT;
static void f_put(Shoal__Request *r) {
  put_m.has_key = 1;
  put_m.key = BYTES("user:1");
  put_m.has_value = 1;
  put_m.value = BYTES("{\"name\":\"ada\"}");
  r->body_case = SHOAL__REQUEST__BODY_PUT;
  r->put = &put_m;
}
static Shoal__Put put_ttl = SHOAL__PUT__INIT;
static void f_put_ttl(Shoal__Request *r) {
  put_ttl.has_key = 1;
  put_ttl.key = BYTES("session:9");
  put_ttl.has_value = 1;
  put_ttl.value = BYTES("x");
  put_ttl.has_ttl_ms = 1;
  put_ttl.ttl_ms = 60000;
  r->body_case = SHOAL__REQUEST__BODY_PUT;
  r->put = &put_ttl;
}
static Shoal__Delete del_m = SHOAL__DELETE__INIT;
static void f_delete(Shoal__Request *r) {
  del_m.has_key = 1;
  del_m.key = BYTES("user:1");
  r->body_case = SHOAL__REQUEST__BODY_DELETE;
  r->delete_ = &del_m;
}
static Shoal__Cas cas_m = SHOAL__CAS__INIT;
static void f_cas(Shoal__Request *r) {
  cas_m.has_key = 1;
  cas_m.key = BYTES("counter");
  cas_m.has_expect = 1;
  cas_m.expect = 0;
  cas_m.has_value = 1;
  cas_m.value = BYTES("1");
  cas_m.has_ttl_ms = 1;
  cas_m.ttl_ms = 5000;
  r->body_case = SHOAL__REQUEST__BODY_CAS;
  r->cas = &cas_m;
}
static Shoal__BatchOp bops[5];
static Shoal__BatchOp *bopp[5];
static Shoal__Batch batch_m = SHOAL__BATCH__INIT;
static void f_batch(Shoal__Request *r) {
  static const int kinds[5] = {
      SHOAL__BATCH_OP__KIND__PUT, SHOAL__BATCH_OP__KIND__PUT,
      SHOAL__BATCH_OP__KIND__CAS, SHOAL__BATCH_OP__KIND__DELETE_ANY,
      SHOAL__BATCH_OP__KIND__DELETE};
  static const char *ks[5] = {"b:1", "b:2", "b:3", "b:4", "b:1"};
  for (int i = 0; i < 5; i++) {
    shoal__batch_op__init(&bops[i]);
    bops[i].has_kind = 1;
    bops[i].kind = kinds[i];
    bops[i].has_key = 1;
    bops[i].key = (ProtobufCBinaryData){strlen(ks[i]), (uint8_t *)ks[i]};
    if (i < 3) {
      bops[i].has_value = 1;
      bops[i].value = BYTES("v");
    }
    if (i == 1) {
      bops[i].has_ttl_ms = 1;
      bops[i].ttl_ms = 1000;
    }
    if (i == 2) {
      bops[i].has_expect = 1;
      bops[i].expect = 0;
    }
    bopp[i] = &bops[i];
  }
  batch_m.n_ops = 5;
  batch_m.ops = bopp;
  r->body_case = SHOAL__REQUEST__BODY_BATCH;
  r->batch = &batch_m;
}
static Shoal__Get get_m = SHOAL__GET__INIT;
static void f_get(Shoal__Request *r) {
  get_m.has_key = 1;
  get_m.key = BYTES("user:1");
  r->body_case = SHOAL__REQUEST__BODY_GET;
  r->get = &get_m;
}
static Shoal__Scan scan_m = SHOAL__SCAN__INIT;
static void f_scan(Shoal__Request *r) {
  scan_m.has_start = 1;
  scan_m.start = BYTES("a");
  scan_m.has_end = 1;
  scan_m.end = BYTES("z");
  scan_m.has_limit = 1;
  scan_m.limit = 10;
  r->body_case = SHOAL__REQUEST__BODY_SCAN;
  r->scan = &scan_m;
}
static Shoal__Scan scan_p = SHOAL__SCAN__INIT;
static void f_scan_prefix(Shoal__Request *r) {
  scan_p.has_prefix = 1;
  scan_p.prefix = BYTES("user:");
  scan_p.has_keys_only = 1;
  scan_p.keys_only = 1;
  scan_p.has_max_bytes = 1;
  scan_p.max_bytes = 100;
  r->body_case = SHOAL__REQUEST__BODY_SCAN;
  r->scan = &scan_p;
}
static Shoal__Stats stats_m = SHOAL__STATS__INIT;
static void f_stats(Shoal__Request *r) {
  r->body_case = SHOAL__REQUEST__BODY_STATS;
  r->stats = &stats_m;
}
static Shoal__Ping ping_m = SHOAL__PING__INIT;
static void f_ping(Shoal__Request *r) {
  ping_m.has_payload = 1;
  ping_m.payload = BYTES("hello?");
  r->body_case = SHOAL__REQUEST__BODY_PING;
  r->ping = &ping_m;
}
static Shoal__HashFile hash_m = SHOAL__HASH_FILE__INIT;
static void f_hash(Shoal__Request *r) {
  hash_m.algorithm = "sha256";
  hash_m.has_digest_size = 1;
  hash_m.digest_size = 32;
  r->body_case = SHOAL__REQUEST__BODY_HASH_FILE;
  r->hash_file = &hash_m;
}
static Shoal__TailLog tail_m = SHOAL__TAIL_LOG__INIT;
static void f_tail(Shoal__Request *r) {
  tail_m.has_lines = 1;
  tail_m.lines = 10;
  tail_m.has_follow = 1;
  tail_m.follow = 1;
  r->body_case = SHOAL__REQUEST__BODY_TAIL_LOG;
  r->tail_log = &tail_m;
}
static Shoal__Cancel cancel_m = SHOAL__CANCEL__INIT;
static void f_cancel(Shoal__Request *r) {
  cancel_m.has_target = 1;
  cancel_m.target = 7;
  r->body_case = SHOAL__REQUEST__BODY_CANCEL;
  r->cancel = &cancel_m;
}
static void f_empty(Shoal__Request *r) { (void)r; } /* no body: unknown type */

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  outdir = argv[1];
  both("put", f_put);
  both("put-ttl", f_put_ttl);
  both("delete", f_delete);
  both("cas", f_cas);
  both("batch", f_batch);
  both("get", f_get);
  both("scan", f_scan);
  both("scan-prefix", f_scan_prefix);
  both("stats", f_stats);
  both("ping", f_ping);
  both("hash-file", f_hash);
  both("tail-log", f_tail);
  both("cancel", f_cancel);
  both("no-body", f_empty);

  struct buf b = {0};
  /* Hello alone, and a pipelined session of every write and read */
  hello(&b, 1);
  save("hello", 0, &b);
  Shoal__Request r = SHOAL__REQUEST__INIT;
  fill_fn session[] = {f_put, f_put_ttl, f_cas, f_batch, f_get, f_scan,
                       f_scan_prefix, f_delete, f_get, f_stats, f_ping};
  for (size_t i = 0; i < sizeof session / sizeof session[0]; i++) {
    shoal__request__init(&r);
    r.has_id = 1;
    r.id = 10 + i;
    session[i](&r);
    frame(&b, &r);
  }
  save("pipeline", 0, &b);
  save("pipeline-eof", FUZZ_REQ_EOF, &b);
  /* a second Hello, then a frame cut short at the end of the stream */
  b.n = 0;
  hello(&b, 1);
  hello(&b, 2);
  uint8_t partial[6] = {40, 0, 0, 0, 0x08, 0x03};
  put_bytes(&b, partial, sizeof partial);
  save("hello-twice-partial", FUZZ_REQ_EOF, &b);
  /* a length over --max-frame */
  b.n = 0;
  uint8_t huge[8] = {0xff, 0xff, 0xff, 0x7f, 0x08, 0x01, 0x00, 0x00};
  put_bytes(&b, huge, sizeof huge);
  save("nohello-oversize-frame", FUZZ_REQ_HELLO_DONE, &b);
  /* undecodable bytes in a well-formed frame */
  b.n = 0;
  uint8_t bad[9] = {5, 0, 0, 0, 0x5a, 0xff, 0xff, 0xff, 0xff};
  put_bytes(&b, bad, sizeof bad);
  save("nohello-malformed", FUZZ_REQ_HELLO_DONE, &b);
  free(b.p);
  return 0;
}
