/*
 * fuzz_request.c - libFuzzer harness: bytes a client sends, through the
 * broker's real request path.
 *
 * The input after its first (flags) byte is the byte stream of one
 * connection, as if one read() had returned it: loop.c's conn_process
 * (entered through broker_conn_resume) splits it into frames, checks each
 * length against --max-frame, prefetches the writes it can peek at,
 * and handlers.c's broker_handle_frame unpacks each frame with protobuf-c
 * into the per-frame arena and serves it against a real store (SHM_MIN_SIZE,
 * in a temporary directory) through shm_put/shm_batch/shm_get/shm_scan...
 * No socket: the connection's descriptor is -1 (epoll_ctl and close on it
 * fail harmlessly), replies accumulate in its output buffer, and the
 * harness plays the client that reads them.
 *
 * Flags byte: FUZZ_REQ_HELLO_DONE lets the fuzzer reach every handler
 * without first finding a valid Hello; FUZZ_REQ_EOF marks the peer's side
 * shut after the bytes (the partial-frame and close-after-EOF paths).
 *
 * Oracles besides the sanitizers: every reply the broker wrote must be a
 * complete frame that decodes as a shoal.Response, and the store must pass
 * shm_check after every input that changed it.
 *
 * Determinism: the store is recreated after every input that committed
 * something, so an input replays against an empty store each time (up to
 * the clock, which only TTLs read).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "broker-internal.h"
#include "fuzz-common.h"

static struct broker B;
/* tmpfs, as in production (/dev/shm): a disk file system makes every
 * store creation and patch a page-cache round trip, slow enough under
 * parallel fuzzing to trip libFuzzer's timeout. */
static char dir[128];
static uint64_t base_seq;

static void check_problem(void *arg, const char *problem) {
  (void)arg;
  fprintf(stderr, "shm_check: %s\n", problem);
}

static void store_open(void) {
  shm_config cfg = {.name = FUZZ_STORE,
                    .dir = dir,
                    .size = SHM_MIN_SIZE,
                    .reader_slots = 64};
  int err = shm_store_open(&B.store, &cfg, SHM_CREATE | SHM_TRUNC);
  if (err) fprintf(stderr, "shm_store_open: %s\n", shm_store_lasterr(NULL));
  FUZZ_CHECK(err == 0);
  FUZZ_CHECK(shm_store_view(B.store, &B.view) == 0);
  shm_stats st;
  shm_store_stats(B.store, &st);
  base_seq = st.commit_seq;
}

static void store_close(void) {
  shm_view_close(B.view);
  shm_store_close(B.store, 1);
  B.view = NULL;
  B.store = NULL;
}

static void setup(void) {
  fuzz_make_dir(dir, sizeof dir, "request");
  struct broker_opts *o = &B.opt;
  o->name = FUZZ_STORE;
  o->shm_dir = dir;
  o->rundir = dir;
  o->socket_path = "/nonexistent/fuzz.sock";
  /* The smallest frame and output limits keep inputs and replies small
   * while still crossing both limits. */
  o->max_frame = BROKER_MIN_MAX_FRAME;
  o->max_output = BROKER_MIN_MAX_OUTPUT;
  o->workers = 1;
  o->hash_cache_entries = 64;
  o->hash_cache_bytes = 1u << 20;
  o->sweep_ms = BROKER_DEFAULT_SWEEP_MS;
  o->quiet = 1;
  B.pid = getpid();
  B.uid = getuid();
  B.start_ms = broker_mono_ms();
  B.listen_fd = B.signal_fd = B.timer_fd = -1;
  B.epfd = epoll_create1(EPOLL_CLOEXEC);
  FUZZ_CHECK(B.epfd >= 0);
  store_open();
  FUZZ_CHECK(shm_object_path(B.data_object, sizeof B.data_object, o->name,
                             dir, "data") == 0);
  FUZZ_CHECK(shm_object_path(B.readers_object, sizeof B.readers_object,
                             o->name, dir, "readers") == 0);
  B.max_value = o->max_frame - BROKER_FRAME_OVERHEAD;
  FUZZ_CHECK(broker_arena_init(&B.arena, 256u << 10) == 0);
  FUZZ_CHECK(broker_files_init(&B) == 0);
}

static void cleanup(void) {
  broker_files_shutdown(&B);
  store_close();
  shm_store_unlink(FUZZ_STORE, dir);
  rmdir(dir);
  broker_arena_free(&B.arena);
  close(B.epfd);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  setup();
  atexit(cleanup);
  return 0;
}

static uint32_t le32(const char *p) {
  const uint8_t *u = (const uint8_t *)p;
  return (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 |
         (uint32_t)u[3] << 24;
}

/* The client reads its replies: each must be a whole, decodable frame. */
static void read_replies(struct broker_conn *c) {
  size_t off = c->out_off;
  while (off < c->out_len) {
    FUZZ_CHECK(c->out_len - off >= 4);
    uint32_t n = le32(c->out + off);
    FUZZ_CHECK(c->out_len - off - 4 >= n);
    Shoal__Response *r = shoal__response__unpack(
        NULL, n, (const uint8_t *)c->out + off + 4);
    if (!r) {
      fprintf(stderr, "the broker wrote a %u-byte reply that is not a "
              "shoal.Response\n", n);
      abort();
    }
    shoal__response__free_unpacked(r, NULL);
    off += 4 + (size_t)n;
  }
  c->out_off = c->out_len = 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  unsigned flags = data[0];
  data++;
  size--;

  struct broker_conn *c = calloc(1, sizeof *c);
  FUZZ_CHECK(c != NULL);
  c->kind = BROKER_EV_CONN;
  c->fd = -1;
  c->id = ++B.next_conn_id;
  c->pid = FUZZ_PEER_PID;
  c->uid = B.uid;
  c->gid = getgid();
  c->slot = -1;
  c->hello = !!(flags & FUZZ_REQ_HELLO_DONE);
  c->next = B.conns;
  if (B.conns) B.conns->prev = c;
  B.conns = c;
  B.nconns++;
  if (size) {
    c->in = malloc(size);
    FUZZ_CHECK(c->in != NULL);
    memcpy(c->in, data, size);
    c->in_cap = c->in_len = size;
  }
  c->eof = !!(flags & FUZZ_REQ_EOF);

  /* Serve until nothing decodable is left: the loop would come back for a
   * connection on its pending list (frame budget) or once a paused one's
   * client has read its replies; here both happen at once. */
  for (int turns = 0; turns < 10000; turns++) {
    broker_conn_resume(&B, c);
    if (c->dead) break;
    read_replies(c);
    B.dirty = NULL;
    c->in_dirty = 0;
    int again = c->in_pending || c->paused;
    B.pending = NULL;
    c->in_pending = 0;
    c->paused = 0;
    if (!again) break;
  }
  FUZZ_CHECK(!c->blocked); /* no descriptor is ever passed: no jobs */

  /* Close as the loop would, then free what free_dead would. */
  int slot = c->slot;
  if (!c->dead) broker_conn_close(&B, c, "fuzz input done");
  if (slot >= 0) shm_lease_release(B.store, (unsigned)slot, FUZZ_PEER_PID);
  B.nrecheck = 0;
  B.dead = NULL;
  B.dirty = B.pending = NULL;
  free(c->in);
  free(c->out);
  free(c);

  shm_stats st;
  shm_store_stats(B.store, &st);
  if (st.commit_seq != base_seq) {
    FUZZ_CHECK(shm_read_begin(B.view) == 0);
    unsigned problems = shm_check_ex(B.view, SHM_CHECK_QUIESCENT,
                                     check_problem, NULL);
    shm_read_end(B.view);
    if (problems) {
      fprintf(stderr, "the store is inconsistent after this input\n");
      abort();
    }
    store_close();
    store_open();
  }
  return 0;
}
