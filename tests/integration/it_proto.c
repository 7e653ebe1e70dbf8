/*
 * it_proto.c - the socket protocol spoken raw (protoc-c frames over a plain
 * Unix socket) against a real shoald: every request type as the broker
 * sees it, including the broker-side Get and Scan that libshoal does not
 * expose, and the bad input of DESIGN.md section 6 / issue 3: garbage
 * frames, requests before Hello, unknown request types, oversized frames,
 * a client that vanishes (or stalls) mid-frame. The broker must answer
 * with an error naming the cause, close when the stream cannot be trusted,
 * keep the connection otherwise, and keep serving everyone else.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "itest-raw.h"
#include "itest.h"

static uint64_t next_id = 100;

static Shoal__Request request(Shoal__Request__BodyCase kind) {
  Shoal__Request r = SHOAL__REQUEST__INIT;
  r.has_id = 1;
  r.id = next_id++;
  r.body_case = kind;
  return r;
}

static ProtobufCBinaryData bin(const char *s) {
  ProtobufCBinaryData b = {strlen(s), (uint8_t *)s};
  return b;
}

/* A ping on @fd answers with its payload and id. */
static void assert_ping(int fd) {
  Shoal__Ping p = SHOAL__PING__INIT;
  p.has_payload = 1;
  p.payload = bin("are you there");
  Shoal__Request req = request(SHOAL__REQUEST__BODY_PING);
  req.ping = &p;
  Shoal__Response *r = it_raw_call(fd, &req);
  ck_assert_int_eq(r->status, 0);
  ck_assert_uint_eq(r->id, req.id);
  ck_assert_int_eq(r->body_case, SHOAL__RESPONSE__BODY_PONG);
  ck_assert_uint_eq(r->pong->payload.len, 13);
  ck_assert(memcmp(r->pong->payload.data, "are you there", 13) == 0);
  shoal__response__free_unpacked(r, NULL);
}

/* An error reply: status @want (0: any error), a message, the request id
 * (0: not checked - a frame that did not parse has no id). */
static void assert_error(Shoal__Response *r, int want, uint64_t id,
                         const char *what) {
  ck_assert_msg(r != NULL, "%s: no error reply", what);
  if (want)
    ck_assert_msg(r->status == want, "%s: status %d (%s), expected %s", what,
                  r->status, shoal_errname(r->status), shoal_errname(want));
  else
    ck_assert_msg(r->status < 0, "%s: status %d, expected an error", what,
                  r->status);
  ck_assert_msg(r->error && *r->error, "%s: the error reply has no message",
                what);
  if (id) ck_assert_uint_eq(r->id, id);
}

/* A libshoal client can still work (broker alive and serving). */
static void assert_broker_serves(void) {
  shoal *c = it_open_ok();
  IT_OK(c, shoal_put(c, "alive", 5, "yes", 3, NULL));
  IT_OK(c, shoal_ping(c));
  shoal_close(c);
}

/* -------------------------------------------------------------- valid --- */

START_TEST(hello_and_ping) {
  it_start_broker(NULL);
  int fd = it_raw_connect(NULL);
  Shoal__Hello h = SHOAL__HELLO__INIT;
  h.has_protocol = 1;
  h.protocol = SHOAL__PROTOCOL__PROTOCOL_V1;
  h.has_pid = 1;
  h.pid = getpid();
  h.has_want_slot = 1;
  h.want_slot = 0;
  Shoal__Request req = request(SHOAL__REQUEST__BODY_HELLO);
  req.hello = &h;
  Shoal__Response *r = it_raw_call(fd, &req);
  ck_assert_int_eq(r->status, 0);
  ck_assert_uint_eq(r->id, req.id);
  ck_assert_int_eq(r->body_case, SHOAL__RESPONSE__BODY_HELLO);
  Shoal__HelloReply *hr = r->hello;
  ck_assert_uint_eq(hr->protocol, 1);
  ck_assert_str_eq(hr->store, IT_NAME);
  ck_assert_int_eq(hr->reader_slot, -1);
  ck_assert_int_eq(hr->broker_pid, it_broker);
  ck_assert_uint_eq(hr->max_frame, 16u << 20);
  ck_assert_uint_eq(hr->max_key, shoal_key_max());
  ck_assert_uint_gt(hr->max_value, 0);
  ck_assert_uint_lt(hr->max_value, hr->max_frame);
  ck_assert_msg(hr->shm_dir && strstr(hr->shm_dir, "/shm"),
                "shm_dir %s is not the --shm-dir", hr->shm_dir);
  ck_assert_msg(hr->data_object && strncmp(hr->data_object, hr->shm_dir,
                                           strlen(hr->shm_dir)) == 0,
                "data object %s not in %s", hr->data_object, hr->shm_dir);
  shoal__response__free_unpacked(r, NULL);

  assert_ping(fd);
  /* pipelined: three requests in one write, replies in order */
  Shoal__Ping p = SHOAL__PING__INIT;
  uint8_t buf[256];
  size_t off = 0;
  uint64_t ids[3];
  for (int i = 0; i < 3; i++) {
    Shoal__Request q = request(SHOAL__REQUEST__BODY_PING);
    q.ping = &p;
    ids[i] = q.id;
    size_t n = shoal__request__get_packed_size(&q);
    buf[off] = (uint8_t)n;
    buf[off + 1] = buf[off + 2] = buf[off + 3] = 0;
    shoal__request__pack(&q, buf + off + 4);
    off += 4 + n;
  }
  ck_assert_int_eq(it_raw_write(fd, buf, off), 0);
  for (int i = 0; i < 3; i++) {
    r = it_raw_recv(fd, 5000, NULL);
    ck_assert_ptr_nonnull(r);
    ck_assert_uint_eq(r->id, ids[i]);
    ck_assert_int_eq(r->status, 0);
    shoal__response__free_unpacked(r, NULL);
  }
  close(fd);
}
END_TEST

START_TEST(every_request) {
  it_start_broker(NULL);
  int fd = it_raw_connect(NULL);
  ck_assert_int_eq(it_raw_hello(fd), 0);
  Shoal__Response *r;

  /* Put x 5 */
  uint64_t vers[5];
  const char *keys[5] = {"p/a", "p/b", "p/c", "p/d", "q/z"};
  for (int i = 0; i < 5; i++) {
    Shoal__Put put = SHOAL__PUT__INIT;
    put.has_key = put.has_value = 1;
    put.key = bin(keys[i]);
    put.value = bin(keys[i]);
    Shoal__Request req = request(SHOAL__REQUEST__BODY_PUT);
    req.put = &put;
    r = it_raw_call(fd, &req);
    ck_assert_int_eq(r->status, 0);
    ck_assert(r->has_version && r->version > 0);
    vers[i] = r->version;
    if (i) ck_assert_uint_gt(vers[i], vers[i - 1]);
    shoal__response__free_unpacked(r, NULL);
  }

  /* Get: hit and miss */
  Shoal__Get g = SHOAL__GET__INIT;
  g.has_key = 1;
  g.key = bin("p/b");
  Shoal__Request req = request(SHOAL__REQUEST__BODY_GET);
  req.get = &g;
  r = it_raw_call(fd, &req);
  ck_assert_int_eq(r->status, 0);
  ck_assert_int_eq(r->body_case, SHOAL__RESPONSE__BODY_GET);
  ck_assert_uint_eq(r->get->value.len, 3);
  ck_assert(memcmp(r->get->value.data, "p/b", 3) == 0);
  ck_assert_uint_eq(r->get->version, vers[1]);
  shoal__response__free_unpacked(r, NULL);
  g.key = bin("p/none");
  req = request(SHOAL__REQUEST__BODY_GET);
  req.get = &g;
  r = it_raw_call(fd, &req);
  assert_error(r, SHOAL_ENOTFOUND, req.id, "Get of an absent key");
  shoal__response__free_unpacked(r, NULL);

  /* Scan by prefix, 2 per page: pages follow next_start */
  char seen[8][8];
  int nseen = 0, pages = 0;
  Shoal__Scan sc = SHOAL__SCAN__INIT;
  sc.has_prefix = 1;
  sc.prefix = bin("p/");
  sc.has_limit = 1;
  sc.limit = 2;
  uint8_t next[64];
  for (;;) {
    req = request(SHOAL__REQUEST__BODY_SCAN);
    req.scan = &sc;
    r = it_raw_call(fd, &req);
    ck_assert_int_eq(r->status, 0);
    ck_assert_int_eq(r->body_case, SHOAL__RESPONSE__BODY_SCAN);
    ck_assert_uint_le(r->scan->n_items, 2);
    for (size_t i = 0; i < r->scan->n_items && nseen < 8; i++) {
      Shoal__KeyValue *kv = r->scan->items[i];
      ck_assert_uint_lt(kv->key.len, 8);
      memcpy(seen[nseen], kv->key.data, kv->key.len);
      seen[nseen][kv->key.len] = 0;
      ck_assert_uint_eq(kv->value.len, kv->key.len);
      nseen++;
    }
    pages++;
    int more = r->scan->has_more && r->scan->more;
    if (more) {
      ck_assert(r->scan->has_next_start &&
                r->scan->next_start.len < sizeof next);
      memcpy(next, r->scan->next_start.data, r->scan->next_start.len);
      sc.has_start = 1;
      sc.start.data = next;
      sc.start.len = r->scan->next_start.len;
    }
    shoal__response__free_unpacked(r, NULL);
    if (!more || pages > 10) break;
  }
  ck_assert_int_eq(nseen, 4);
  ck_assert_int_ge(pages, 2);
  ck_assert_str_eq(seen[0], "p/a");
  ck_assert_str_eq(seen[3], "p/d");

  /* Scan by range, keys only */
  Shoal__Scan rs = SHOAL__SCAN__INIT;
  rs.has_start = rs.has_end = rs.has_keys_only = 1;
  rs.start = bin("p/b");
  rs.end = bin("q/z"); /* exclusive */
  rs.keys_only = 1;
  req = request(SHOAL__REQUEST__BODY_SCAN);
  req.scan = &rs;
  r = it_raw_call(fd, &req);
  ck_assert_int_eq(r->status, 0);
  ck_assert_uint_eq(r->scan->n_items, 3);
  ck_assert_uint_eq(r->scan->items[0]->key.len, 3);
  ck_assert(memcmp(r->scan->items[0]->key.data, "p/b", 3) == 0);
  ck_assert(!r->scan->items[0]->has_value ||
            r->scan->items[0]->value.len == 0);
  ck_assert(!r->scan->has_more || !r->scan->more);
  shoal__response__free_unpacked(r, NULL);

  /* Delete: hit, miss */
  Shoal__Delete d = SHOAL__DELETE__INIT;
  d.has_key = 1;
  d.key = bin("p/a");
  req = request(SHOAL__REQUEST__BODY_DELETE);
  req.delete_ = &d;
  r = it_raw_call(fd, &req);
  ck_assert_int_eq(r->status, 0);
  shoal__response__free_unpacked(r, NULL);
  req = request(SHOAL__REQUEST__BODY_DELETE);
  req.delete_ = &d;
  r = it_raw_call(fd, &req);
  assert_error(r, SHOAL_ENOTFOUND, req.id, "Delete of an absent key");
  shoal__response__free_unpacked(r, NULL);

  /* Cas: conflict reports the current version */
  Shoal__Cas cas = SHOAL__CAS__INIT;
  cas.has_key = cas.has_expect = cas.has_value = 1;
  cas.key = bin("p/c");
  cas.expect = vers[2] + 1000;
  cas.value = bin("new");
  req = request(SHOAL__REQUEST__BODY_CAS);
  req.cas = &cas;
  r = it_raw_call(fd, &req);
  assert_error(r, SHOAL_ECONFLICT, req.id, "Cas with a wrong version");
  ck_assert(r->has_version && r->version == vers[2]);
  shoal__response__free_unpacked(r, NULL);
  cas.expect = vers[2];
  req = request(SHOAL__REQUEST__BODY_CAS);
  req.cas = &cas;
  r = it_raw_call(fd, &req);
  ck_assert_int_eq(r->status, 0);
  ck_assert_uint_gt(r->version, vers[4]);
  shoal__response__free_unpacked(r, NULL);

  /* Batch: op 2 fails, nothing applied */
  Shoal__BatchOp ops[3] = {SHOAL__BATCH_OP__INIT, SHOAL__BATCH_OP__INIT,
                           SHOAL__BATCH_OP__INIT};
  Shoal__BatchOp *opp[3] = {&ops[0], &ops[1], &ops[2]};
  for (int i = 0; i < 3; i++) ops[i].has_kind = ops[i].has_key = 1;
  ops[0].kind = SHOAL__BATCH_OP__KIND__PUT;
  ops[0].key = bin("b/1");
  ops[0].has_value = 1;
  ops[0].value = bin("one");
  ops[1].kind = SHOAL__BATCH_OP__KIND__DELETE_ANY;
  ops[1].key = bin("b/none");
  ops[2].kind = SHOAL__BATCH_OP__KIND__DELETE;
  ops[2].key = bin("b/none");
  Shoal__Batch b = SHOAL__BATCH__INIT;
  b.n_ops = 3;
  b.ops = opp;
  req = request(SHOAL__REQUEST__BODY_BATCH);
  req.batch = &b;
  r = it_raw_call(fd, &req);
  assert_error(r, SHOAL_ENOTFOUND, req.id, "Batch with a bad delete");
  ck_assert_int_eq(r->body_case, SHOAL__RESPONSE__BODY_BATCH);
  ck_assert(r->batch->has_failed_index && r->batch->failed_index == 2);
  ck_assert(!r->batch->has_applied || r->batch->applied == 0);
  shoal__response__free_unpacked(r, NULL);
  g.key = bin("b/1");
  req = request(SHOAL__REQUEST__BODY_GET);
  req.get = &g;
  r = it_raw_call(fd, &req);
  assert_error(r, SHOAL_ENOTFOUND, req.id, "b/1 after the failed batch");
  shoal__response__free_unpacked(r, NULL);
  b.n_ops = 2; /* without the failing op */
  req = request(SHOAL__REQUEST__BODY_BATCH);
  req.batch = &b;
  r = it_raw_call(fd, &req);
  ck_assert_int_eq(r->status, 0);
  ck_assert_uint_gt(r->version, 0);
  if (r->body_case == SHOAL__RESPONSE__BODY_BATCH && r->batch->has_applied)
    ck_assert_uint_eq(r->batch->applied, 2);
  shoal__response__free_unpacked(r, NULL);

  /* Stats: counters by type */
  Shoal__Stats s = SHOAL__STATS__INIT;
  req = request(SHOAL__REQUEST__BODY_STATS);
  req.stats = &s;
  r = it_raw_call(fd, &req);
  ck_assert_int_eq(r->status, 0);
  ck_assert_int_eq(r->body_case, SHOAL__RESPONSE__BODY_STATS);
  uint64_t nput = 0, nget = 0, nscan = 0;
  for (size_t i = 0; i < r->stats->n_requests; i++) {
    Shoal__Counter *k = r->stats->requests[i];
    if (strcmp(k->name, "put") == 0) nput = k->value;
    if (strcmp(k->name, "get") == 0) nget = k->value;
    if (strcmp(k->name, "scan") == 0) nscan = k->value;
  }
  ck_assert_uint_eq(nput, 5);
  ck_assert_uint_eq(nget, 3);
  ck_assert_uint_ge(nscan, 3);
  ck_assert_uint_eq(r->stats->keys, 5); /* p/b p/c p/d q/z b/1 */
  shoal__response__free_unpacked(r, NULL);

  assert_ping(fd);
  close(fd);
}
END_TEST

START_TEST(toobig_key_keeps_connection) {
  it_start_broker(NULL);
  int fd = it_raw_connect(NULL);
  ck_assert_int_eq(it_raw_hello(fd), 0);
  size_t kmax = shoal_key_max();
  char *key = malloc(kmax + 2);
  memset(key, 'k', kmax + 1);
  key[kmax + 1] = 0;
  Shoal__Put put = SHOAL__PUT__INIT;
  put.has_key = put.has_value = 1;
  put.key = bin(key);
  put.value = bin("v");
  Shoal__Request req = request(SHOAL__REQUEST__BODY_PUT);
  req.put = &put;
  Shoal__Response *r = it_raw_call(fd, &req);
  assert_error(r, SHOAL_ETOOBIG, req.id, "Put with a key over the limit");
  shoal__response__free_unpacked(r, NULL);
  /* a missing key is invalid, not a crash */
  Shoal__Put nokey = SHOAL__PUT__INIT;
  req = request(SHOAL__REQUEST__BODY_PUT);
  req.put = &nokey;
  r = it_raw_call(fd, &req);
  assert_error(r, 0, req.id, "Put without a key");
  shoal__response__free_unpacked(r, NULL);
  assert_ping(fd); /* the stream was fine: the connection stays */
  free(key);
  close(fd);
}
END_TEST

/* ----------------------------------------------------------- bad input --- */

START_TEST(garbage_first_frame) {
  it_start_broker(NULL);
  int fd = it_raw_connect(NULL);
  /* a frame of 12 bytes that is no protobuf message (0xff... is an
   * invalid wire type/varint run) */
  uint8_t frame[16] = {12, 0, 0, 0};
  memset(frame + 4, 0xff, 12);
  ck_assert_int_eq(it_raw_write(fd, frame, sizeof frame), 0);
  Shoal__Response *r = it_raw_recv(fd, 5000, NULL);
  assert_error(r, SHOAL_EPROTOCOL, 0, "garbage frame before Hello");
  shoal__response__free_unpacked(r, NULL);
  ck_assert_msg(it_raw_closed(fd, 5000), "connection not closed after a "
                "malformed frame");
  close(fd);
  assert_broker_serves();
}
END_TEST

START_TEST(garbage_after_hello) {
  it_start_broker(NULL);
  int fd = it_raw_connect(NULL);
  ck_assert_int_eq(it_raw_hello(fd), 0);
  uint8_t frame[12] = {8, 0, 0, 0, 0x0a, 0xff, 0xff, 0xff,
                       0xff, 0xff, 0xff, 0xff}; /* field 1 LEN, bad length */
  ck_assert_int_eq(it_raw_write(fd, frame, sizeof frame), 0);
  Shoal__Response *r = it_raw_recv(fd, 5000, NULL);
  assert_error(r, SHOAL_EPROTOCOL, 0, "garbage frame after Hello");
  shoal__response__free_unpacked(r, NULL);
  ck_assert_msg(it_raw_closed(fd, 5000), "connection not closed after a "
                "malformed frame");
  close(fd);
  assert_broker_serves();
}
END_TEST

START_TEST(first_request_not_hello) {
  it_start_broker(NULL);
  int fd = it_raw_connect(NULL);
  Shoal__Put put = SHOAL__PUT__INIT;
  put.has_key = put.has_value = 1;
  put.key = bin("sneaky");
  put.value = bin("x");
  Shoal__Request req = request(SHOAL__REQUEST__BODY_PUT);
  req.put = &put;
  Shoal__Response *r = it_raw_call(fd, &req);
  assert_error(r, SHOAL_EPROTOCOL, req.id, "Put before Hello");
  shoal__response__free_unpacked(r, NULL);
  /* nothing was written */
  shoal *c = it_open_ok();
  char buf[4];
  IT_RC(c, shoal_get_copy(c, "sneaky", 6, buf, sizeof buf, NULL, NULL),
        SHOAL_ENOTFOUND);
  shoal_close(c);
  /* the broker's policy (broker/handlers.c, after shoal.proto's "the
   * first request on a connection must be Hello"): reply, then close */
  ck_assert_msg(it_raw_closed(fd, 5000), "connection kept after a request "
                "before Hello");
  close(fd);
}
END_TEST

START_TEST(unknown_request_type) {
  it_start_broker(NULL);
  int fd = it_raw_connect(NULL);
  ck_assert_int_eq(it_raw_hello(fd), 0);
  /* Request { id = 77; field 99 (varint) = 1 }: a well-formed message of a
   * type this broker does not know */
  uint8_t frame[] = {6,    0, 0, 0,          /* length */
                     0x08, 77,               /* id: field 1, varint */
                     0x98, 0x06, 0x01, 0x00}; /* field 99 varint 1; pad */
  frame[0] = 5;                               /* only 5 payload bytes */
  ck_assert_int_eq(it_raw_write(fd, frame, 9), 0);
  Shoal__Response *r = it_raw_recv(fd, 5000, NULL);
  assert_error(r, SHOAL_EPROTOCOL, 77, "unknown request type");
  ck_assert_msg(strstr(r->error, "unknown") || strstr(r->error, "Unknown"),
                "message \"%s\" does not say the type is unknown", r->error);
  shoal__response__free_unpacked(r, NULL);
  /* the connection is kept */
  ck_assert(!it_raw_closed(fd, 200));
  assert_ping(fd);
  /* a known type the broker does not serve yet is not a crash either */
  Shoal__TailLog t = SHOAL__TAIL_LOG__INIT;
  Shoal__Request req = request(SHOAL__REQUEST__BODY_TAIL_LOG);
  req.tail_log = &t;
  ck_assert_int_eq(it_raw_send(fd, &req), 0);
  r = it_raw_recv(fd, 5000, NULL);
  ck_assert_ptr_nonnull(r);
  ck_assert_int_ne(r->status, 0); /* no descriptor was sent */
  shoal__response__free_unpacked(r, NULL);
  close(fd);
  assert_broker_serves();
}
END_TEST

START_TEST(oversized_frame) {
  it_start_broker("--max-frame", "65536", NULL);
  int fd = it_raw_connect(NULL);
  ck_assert_int_eq(it_raw_hello(fd), 0);
  /* announce 1 MiB, send a little of it */
  uint8_t hdr[4] = {0x00, 0x00, 0x10, 0x00};
  ck_assert_int_eq(it_raw_write(fd, hdr, 4), 0);
  uint8_t junk[1024];
  memset(junk, 0, sizeof junk);
  (void)it_raw_write(fd, junk, sizeof junk); /* may already be closed */
  const char *why = "";
  Shoal__Response *r = it_raw_recv(fd, 5000, &why);
  ck_assert_msg(r != NULL, "no error reply to an oversized frame: %s", why);
  assert_error(r, 0, 0, "frame over --max-frame");
  shoal__response__free_unpacked(r, NULL);
  ck_assert_msg(it_raw_closed(fd, 5000), "connection not closed after an "
                "oversized frame");
  close(fd);
  /* a frame at the limit is fine: a Put whose frame is just under 64 KiB */
  fd = it_raw_connect(NULL);
  ck_assert_int_eq(it_raw_hello(fd), 0);
  static char val[60000];
  memset(val, 'v', sizeof val - 1);
  Shoal__Put put = SHOAL__PUT__INIT;
  put.has_key = put.has_value = 1;
  put.key = bin("near-limit");
  put.value = bin(val);
  Shoal__Request req = request(SHOAL__REQUEST__BODY_PUT);
  req.put = &put;
  r = it_raw_call(fd, &req);
  ck_assert_int_eq(r->status, 0);
  shoal__response__free_unpacked(r, NULL);
  close(fd);
  assert_broker_serves();
}
END_TEST

START_TEST(half_frame_vanish) {
  it_start_broker(NULL);
  /* one client sends half a frame and vanishes, before and after Hello */
  for (int round = 0; round < 2; round++) {
    int fd = it_raw_connect(NULL);
    if (round) ck_assert_int_eq(it_raw_hello(fd), 0);
    uint8_t part[14] = {100, 0, 0, 0, 0x08, 0x01};
    ck_assert_int_eq(it_raw_write(fd, part, sizeof part), 0);
    close(fd);
  }
  /* another stalls with a partial frame and stays connected */
  int stall = it_raw_connect(NULL);
  ck_assert_int_eq(it_raw_hello(stall), 0);
  uint8_t part[3] = {50, 0, 0}; /* not even the whole length prefix */
  ck_assert_int_eq(it_raw_write(stall, part, sizeof part), 0);
  /* everybody else is served, promptly */
  uint64_t t0 = it_now_ms();
  for (int i = 0; i < 20; i++) assert_broker_serves();
  ck_assert_uint_lt(it_now_ms() - t0, 5000);
  int fd = it_raw_connect(NULL);
  ck_assert_int_eq(it_raw_hello(fd), 0);
  assert_ping(fd);
  close(fd);
  /* and SIGTERM still ends the broker cleanly with the stalled peer */
  int st = it_stop_broker(SIGTERM);
  ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                "shoald with a stalled client: SIGTERM gave status 0x%x", st);
  close(stall);
}
END_TEST

START_TEST(bad_hello) {
  it_start_broker(NULL);
  int fd = it_raw_connect(NULL);
  Shoal__Hello h = SHOAL__HELLO__INIT;
  h.has_protocol = h.has_pid = 1;
  h.protocol = SHOAL__PROTOCOL__PROTOCOL_V1;
  h.pid = 1; /* not us: SO_PEERCRED says otherwise */
  Shoal__Request req = request(SHOAL__REQUEST__BODY_HELLO);
  req.hello = &h;
  Shoal__Response *r = it_raw_call(fd, &req);
  assert_error(r, 0, req.id, "Hello with another process's pid");
  shoal__response__free_unpacked(r, NULL);
  ck_assert_msg(it_raw_closed(fd, 5000), "connection kept after a failed "
                "Hello");
  close(fd);
  /* and a protocol version from the future */
  fd = it_raw_connect(NULL);
  h.pid = getpid();
  h.protocol = 999;
  req = request(SHOAL__REQUEST__BODY_HELLO);
  req.hello = &h;
  r = it_raw_call(fd, &req);
  assert_error(r, SHOAL_EVERSION, req.id, "Hello with protocol 999");
  shoal__response__free_unpacked(r, NULL);
  ck_assert(it_raw_closed(fd, 5000));
  close(fd);
  /* a second Hello on a good connection: an error, the connection stays */
  fd = it_raw_connect(NULL);
  ck_assert_int_eq(it_raw_hello(fd), 0);
  h.protocol = SHOAL__PROTOCOL__PROTOCOL_V1;
  req = request(SHOAL__REQUEST__BODY_HELLO);
  req.hello = &h;
  r = it_raw_call(fd, &req);
  assert_error(r, SHOAL_EPROTOCOL, req.id, "a second Hello");
  shoal__response__free_unpacked(r, NULL);
  assert_ping(fd);
  close(fd);
  assert_broker_serves();
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("integration.proto");
  TCase *tc = it_tcase("valid", 30);
  tcase_add_test(tc, hello_and_ping);
  tcase_add_test(tc, every_request);
  tcase_add_test(tc, toobig_key_keeps_connection);
  suite_add_tcase(s, tc);
  tc = it_tcase("bad_input", 30);
  tcase_add_test(tc, garbage_first_frame);
  tcase_add_test(tc, garbage_after_hello);
  tcase_add_test(tc, first_request_not_hello);
  tcase_add_test(tc, unknown_request_type);
  tcase_add_test(tc, oversized_frame);
  tcase_add_test(tc, half_frame_vanish);
  tcase_add_test(tc, bad_hello);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return it_run_suite(suite()); }
