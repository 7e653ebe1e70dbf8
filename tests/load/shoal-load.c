/*
 * shoal-load.c - load and soak test of a real shoald (issue 7, "Load";
 * STYLE 10, ctest label "stress").
 *
 * What it does, in one process plus the broker it starts:
 *   - makes a private directory $SHOAL_TEST_SHM_DIR/shoal-load-XXXXXX
 *     (default /dev/shm) with run/ (RUNDIR: socket, lock) and shm/
 *     (--shm-dir), raises its own RLIMIT_NOFILE (the broker inherits it and
 *     raises its soft limit to the hard one itself), starts shoald there
 *     (--quiet, PR_SET_PDEATHSIG) and removes everything when it ends;
 *   - opens --connections (default 1000) nonblocking Unix sockets driven by
 *     one epoll loop; each sends Hello (want_slot = false: these clients
 *     never map the segment, so they lease no reader slot and
 *     --reader-slots need not grow with them), then keeps --depth requests
 *     pipelined: a mix of Put, Get, Delete, Cas, Batch, Scan, Stats and
 *     Ping, raw frames packed with protoc-c's code (as itest-raw.c does),
 *     paced to --rate requests/s in total (default 10,000; 0: flat out);
 *     Every reply is checked: its id (replies come in request order), its
 *     body and an expected status (Get/Delete: 0 or SHOAL_ENOTFOUND, Cas:
 *     0 or SHOAL_ECONFLICT, all others 0). A wrong reply counts as a
 *     "bad reply"; a connection the broker closes counts as a "drop";
 *   - a separate client (its own thread and connection, blocking socket)
 *     sends a Ping every --ping-ms (default 5) and records the round trip;
 *   - samples the broker's VmRSS and RssAnon from /proc/PID/status every
 *     100 ms (RssAnon is the broker's private heap, what a leak would grow;
 *     VmRSS also counts the touched pages of the shared segment);
 *   - soak mode (--minutes N): a warm-up round fills the key space, all
 *     keys are deleted and reclamation is given time, then the baseline is
 *     taken (RssAnon, and the segment's "used" bytes from Stats.bytes_used
 *     and from `shoal-inspect --json summary`); then N minutes of load,
 *     during which --churn connections per second are closed by the client
 *     and reopened (a per-connection leak shows then); then every key is
 *     deleted again, and both figures must return to the baseline.
 *
 * Bounds (exit 1 when one is missed, after printing every figure):
 *   ping p99 < --p99-ms (10), drops == 0, bad replies == 0, every Ping
 *   answered, broker RssAnon growth over the baseline <= --rss-growth-mb
 *   (64) at its peak; soak: RssAnon at the end <= baseline + --leak-mb (8),
 *   segment used at the end <= baseline + --leak-kb (64).
 * Exit 2: usage; 3: the setup failed (broker did not start, ...).
 *
 * Run: shoal-load [--seconds 60] [--connections 1000] [--depth 1] [--rate N]
 *                 [--keys 20000] [--minutes N] [--churn 10] [--verbose]
 * The broker and shoal-inspect come from $SHOAL_TEST_SHOALD and
 * $SHOAL_TEST_INSPECT (the build bakes in defaults).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "rawframe.h"
#include "shoal.pb-c.h"
#include "shoal/shoal.h"

#ifndef SHOAL_TEST_SHOALD_DEFAULT
#define SHOAL_TEST_SHOALD_DEFAULT "shoald"
#endif
#ifndef SHOAL_TEST_INSPECT_DEFAULT
#define SHOAL_TEST_INSPECT_DEFAULT "shoal-inspect"
#endif

#define STORE "load"
/* The request types of the mix, in the order they are printed. */
enum {
  T_HELLO,
  T_PUT,
  T_GET,
  T_DEL,
  T_CAS,
  T_BATCH,
  T_SCAN,
  T_STATS,
  T_PING,
  T_N
};
static const char *tname[T_N] = {"hello", "put",  "get",   "delete", "cas",
                                 "batch", "scan", "stats", "ping"};
/* The mix, in percent (sums to 100): reads and writes in about the ratio
 * of a busy store's socket traffic (zero-copy reads never reach the
 * socket, so the broker sees mostly writes), plus the heavier Batch and
 * Scan, and the cheap Stats and Ping. */
static const unsigned mix[T_N] = {0, 28, 22, 8, 10, 8, 6, 3, 15};

/* Options */
static unsigned opt_conns = 1000, opt_depth = 1, opt_keys = 20000;
static unsigned opt_seconds = 60, opt_minutes = 0, opt_churn = 10;
static unsigned opt_ping_ms = 5, opt_vmax = 1024;
/* requests/s over all connections (0: flat out, a closed loop of
 * connections x depth requests). 10,000/s is ten per connection per second:
 * well above the "thousands of writes per second" DESIGN plans for, below
 * what the 2-core reference machine serves flat out (~49,000/s), where a
 * Ping waits behind every queued request (1,000 ahead: ~20 ms). */
static unsigned opt_rate = 10000;
static double opt_p99_ms = 10.0;
static unsigned opt_rss_growth_mb = 64, opt_leak_mb = 8, opt_leak_kb = 64;
static int opt_verbose = 0, opt_keep = 0;
static const char *opt_shoald, *opt_inspect;

/* Paths and the broker */
static char dir[256], rundir[300], shmdir[300], sockpath[320], logpath[320];
static pid_t broker = 0;

static void die_setup(const char *fmt, ...);

static uint64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void say(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  fflush(stdout);
}

/* xorshift64*: cheap, per-thread state */
static uint64_t rnd(uint64_t *s) {
  uint64_t x = *s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * 0x2545F4914F6CDD1DULL;
}

/* ------------------------------------------------------------ cleanup -- */

static void rmtree(const char *path) {
  char cmd[600];
  if (!path[0]) return;
  snprintf(cmd, sizeof cmd, "rm -rf -- '%s'", path);
  if (system(cmd) != 0)
    fprintf(stderr, "shoal-load: could not remove %s\n", path);
}

static void stop_broker(void) {
  if (broker <= 0) return;
  kill(broker, SIGTERM);
  for (int i = 0; i < 1000; i++) { /* 10 s, then SIGKILL */
    int st;
    if (waitpid(broker, &st, WNOHANG) == broker) {
      broker = 0;
      return;
    }
    usleep(10000);
  }
  kill(broker, SIGKILL);
  waitpid(broker, NULL, 0);
  broker = 0;
}

static void cleanup(void) {
  stop_broker();
  if (!opt_keep) rmtree(dir);
}

static void on_signal(int sig) {
  /* SIGINT/SIGTERM (ctest's timeout): stop the broker, remove the files */
  if (broker > 0) kill(broker, SIGKILL);
  signal(sig, SIG_DFL);
  raise(sig);
}

static void die_setup(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "shoal-load: setup failed: ");
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  if (logpath[0]) {
    char cmd[400];
    snprintf(cmd, sizeof cmd, "tail -c 4096 '%s' >&2", logpath);
    if (system(cmd)) {
    }
  }
  cleanup();
  exit(3);
}

/* ------------------------------------------------------------- broker -- */

static void raise_nofile(rlim_t want) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  if (rl.rlim_max < want) { /* root may raise the hard limit too */
    struct rlimit r2 = {want, want};
    if (setrlimit(RLIMIT_NOFILE, &r2) == 0) return;
  }
  rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
  if (rl.rlim_cur < want) rl.rlim_cur = rl.rlim_max;
  (void)setrlimit(RLIMIT_NOFILE, &rl);
}

static int connect_sock(int nonblock) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  memcpy(sa.sun_path, sockpath, strlen(sockpath) + 1);
  /* blocking connect: a full backlog waits for the broker's accept instead
   * of failing with EAGAIN */
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    int e = -errno;
    close(fd);
    return e;
  }
  if (nonblock) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

static void start_broker(void) {
  snprintf(logpath, sizeof logpath, "%s/broker.log", dir);
  broker = fork();
  if (broker < 0) die_setup("fork: %s", strerror(errno));
  if (broker == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int lf = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (lf >= 0) dup2(lf, 2);
    int nul = open("/dev/null", O_RDWR);
    if (nul >= 0) {
      dup2(nul, 0);
      dup2(nul, 1);
    }
    unsetenv("NOTIFY_SOCKET");
    /* --size: the key space (opt_keys values of <= opt_vmax bytes, plus
     * the MVCC versions a busy key keeps until its readers move on) fits
     * many times over; --reader-slots stays small, the load connections
     * lease none (Hello.want_slot = false) */
    execl(opt_shoald, opt_shoald, "--name", STORE, "--rundir", rundir,
          "--socket", sockpath, "--shm-dir", shmdir, "--size", "512M",
          "--reader-slots", "64", "--quiet", (char *)NULL);
    fprintf(stderr, "exec %s: %s\n", opt_shoald, strerror(errno));
    _exit(127);
  }
  for (int i = 0; i < 1000; i++) { /* 10 s */
    int st;
    if (waitpid(broker, &st, WNOHANG) == broker) {
      broker = 0;
      die_setup("shoald exited at startup (status 0x%x)", st);
    }
    int fd = connect_sock(0);
    if (fd >= 0) {
      close(fd);
      return;
    }
    usleep(10000);
  }
  die_setup("shoald did not listen on %s within 10 s", sockpath);
}

/* RssAnon and VmRSS of the broker, in KiB (0 when unreadable) */
static void broker_rss(uint64_t *anon, uint64_t *rss) {
  char path[64], line[256];
  *anon = *rss = 0;
  snprintf(path, sizeof path, "/proc/%d/status", (int)broker);
  FILE *f = fopen(path, "r");
  if (!f) return;
  while (fgets(line, sizeof line, f)) {
    unsigned long long v;
    if (sscanf(line, "RssAnon: %llu", &v) == 1) *anon = v;
    if (sscanf(line, "VmRSS: %llu", &v) == 1) *rss = v;
  }
  fclose(f);
}

/* The segment's "used" bytes as shoal-inspect reads it from the segment */
static int64_t inspect_used(void) {
  char cmd[900];
  snprintf(cmd, sizeof cmd, "'%s' --name %s --shm-dir '%s' --json summary",
           opt_inspect, STORE, shmdir);
  FILE *p = popen(cmd, "r");
  if (!p) return -1;
  static char buf[1 << 16];
  size_t n = fread(buf, 1, sizeof buf - 1, p);
  buf[n] = 0;
  pclose(p);
  const char *u = strstr(buf, "\"used\":");
  if (!u) return -1;
  return strtoll(u + 7, NULL, 10);
}

/* ------------------------------------------------------------- frames -- */

typedef struct buf {
  uint8_t *p;
  size_t len, cap, off; /* off: bytes already consumed/sent */
} buf;

static void buf_reserve(buf *b, size_t more) {
  if (b->off && b->off == b->len) b->off = b->len = 0;
  if (b->len + more <= b->cap) return;
  if (b->off) { /* compact first */
    memmove(b->p, b->p + b->off, b->len - b->off);
    b->len -= b->off;
    b->off = 0;
    if (b->len + more <= b->cap) return;
  }
  size_t nc = b->cap ? b->cap : 4096;
  while (nc < b->len + more)
    nc *= 2;
  b->p = realloc(b->p, nc);
  if (!b->p) abort();
  b->cap = nc;
}

static void put_frame(buf *b, const Shoal__Request *rq) {
  buf_reserve(b, rf_size(rq));
  b->len += rf_pack(rq, b->p + b->len, b->cap - b->len);
}

/* A complete frame at the front of @b: its payload, or NULL */
static const uint8_t *take_frame(buf *b, uint32_t *n) {
  size_t have = b->len - b->off;
  if (have < 4) return NULL;
  const uint8_t *h = b->p + b->off;
  uint32_t len = (uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 |
                 (uint32_t)h[3] << 24;
  if (have < 4 + (size_t)len) return NULL;
  b->off += 4 + len;
  *n = len;
  return h + 4;
}


/* ------------------------------------------------------------- figures -- */

typedef struct counts {
  uint64_t done[T_N]; /* replies with an expected status */
  uint64_t notfound, conflict;
  uint64_t bad;     /* unexpected status, id or body */
  uint64_t drops;   /* connections the broker closed */
  uint64_t churned; /* connections the client closed and reopened */
} counts;
static counts C;

/* --------------------------------------------------------------- pinger -- */

static struct pinger {
  pthread_t th;
  int stop; /* set by main, read by the thread (relaxed atomics); joined
               after, so the join orders everything else */
  uint64_t *rtt;     /* microseconds */
  size_t n, cap;
  uint64_t sent, lost;
  char err[256];
} P;

static int read_full(int fd, void *p, size_t n) {
  uint8_t *b = p;
  while (n) {
    ssize_t r = read(fd, b, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    b += r;
    n -= (size_t)r;
  }
  return 0;
}

static Shoal__Response *blocking_call(int fd, const Shoal__Request *rq) {
  buf b = {0};
  put_frame(&b, rq);
  size_t o = 0;
  while (o < b.len) {
    ssize_t w = send(fd, b.p + o, b.len - o, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) {
      free(b.p);
      return NULL;
    }
    o += (size_t)w;
  }
  free(b.p);
  uint8_t h[4];
  if (read_full(fd, h, 4)) return NULL;
  uint32_t n = (uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 |
               (uint32_t)h[3] << 24;
  uint8_t *m = malloc(n ? n : 1);
  if (!m || read_full(fd, m, n)) {
    free(m);
    return NULL;
  }
  Shoal__Response *r = shoal__response__unpack(NULL, n, m);
  free(m);
  return r;
}

static int hello_blocking(int fd) {
  Shoal__Hello h = rf_hello_msg("shoal-load");
  h.client = (char *)"shoal-load pinger";
  Shoal__Request rq = SHOAL__REQUEST__INIT;
  rq.has_id = 1;
  rq.id = 1;
  rq.body_case = SHOAL__REQUEST__BODY_HELLO;
  rq.hello = &h;
  Shoal__Response *r = blocking_call(fd, &rq);
  int st = !r ? -1 : r->has_status ? r->status : 0;
  if (r) shoal__response__free_unpacked(r, NULL);
  return st;
}

static void *pinger(void *arg) {
  (void)arg;
  int fd = connect_sock(0);
  if (fd < 0 || hello_blocking(fd) != 0) {
    snprintf(P.err, sizeof P.err, "pinger: connect/Hello failed");
    if (fd >= 0) close(fd);
    return NULL;
  }
  struct timeval tv = {5, 0}; /* a Ping unanswered for 5 s is lost */
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  uint64_t id = 1;
  while (!__atomic_load_n(&P.stop, __ATOMIC_RELAXED)) {
    Shoal__Ping pg = SHOAL__PING__INIT;
    uint8_t payload[8];
    memcpy(payload, &id, 8);
    pg.has_payload = 1;
    pg.payload.data = payload;
    pg.payload.len = 8;
    Shoal__Request rq = SHOAL__REQUEST__INIT;
    rq.has_id = 1;
    rq.id = ++id;
    rq.body_case = SHOAL__REQUEST__BODY_PING;
    rq.ping = &pg;
    uint64_t t0 = now_us();
    P.sent++;
    Shoal__Response *r = blocking_call(fd, &rq);
    uint64_t dt = now_us() - t0;
    if (!r || r->id != id || (r->has_status && r->status) ||
        r->body_case != SHOAL__RESPONSE__BODY_PONG) {
      P.lost++;
      snprintf(P.err, sizeof P.err, "pinger: Ping %" PRIu64 " %s", id,
               r ? "answered wrongly" : "not answered within 5 s");
      if (r) shoal__response__free_unpacked(r, NULL);
      break; /* the stream can not be trusted any more */
    }
    shoal__response__free_unpacked(r, NULL);
    if (P.n == P.cap) {
      P.cap = P.cap ? P.cap * 2 : 65536;
      P.rtt = realloc(P.rtt, P.cap * sizeof *P.rtt);
      if (!P.rtt) abort();
    }
    P.rtt[P.n] = dt;
    /* the progress line reads the count while we run (main.c: report) */
    __atomic_store_n(&P.n, P.n + 1, __ATOMIC_RELAXED);
    usleep(opt_ping_ms * 1000u);
  }
  close(fd);
  return NULL;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* --------------------------------------------------------- connections -- */

typedef struct conn {
  int fd, idx;
  int hello_ok;
  int want_out; /* EPOLLOUT armed */
  buf in, out;
  uint64_t next_id;   /* id of the next request */
  uint64_t expect_id; /* id of the oldest one in flight */
  uint8_t *types;     /* ring of in-flight types, opt_depth + 1 */
  unsigned head, inflight;
  uint64_t rng;
  int hungry; /* in the ring of connections waiting for a token */
  /* last key this connection saw and its version: the Cas target */
  unsigned cas_key;
  uint64_t cas_ver;
} conn;

static conn *conns;
static int epfd;
static int load_on = 0;   /* send mixed requests (else only drain) */
static unsigned live = 0; /* connections with a completed Hello */

/* Pacing (--rate): a token bucket refilled every loop turn, at most 10 ms
 * of tokens banked; connections that could send but found no token wait
 * in a FIFO ring and are served first when tokens come, so the requests
 * spread evenly over the connections. */
static double tokens;
static uint64_t tokens_at;
static conn **ring;
static unsigned ring_head, ring_len;

static void key_of(unsigned k, char *out, size_t cap, size_t *n) {
  /* "k/SS/NNNNNN": 256 prefixes, so a prefix Scan sees ~keys/256 items */
  *n = (size_t)snprintf(out, cap, "k/%02x/%06u", k & 0xffu, k);
}

static uint8_t valbuf[1 << 16];

static void send_req(conn *c, int type) {
  Shoal__Request rq = SHOAL__REQUEST__INIT;
  rq.has_id = 1;
  rq.id = c->next_id;
  char kb[5][32];
  size_t kl[5];
  unsigned k = (unsigned)(rnd(&c->rng) % opt_keys);
  key_of(k, kb[0], sizeof kb[0], &kl[0]);
  size_t vlen = 16 + (size_t)(rnd(&c->rng) % (opt_vmax - 15));
  Shoal__Put put = SHOAL__PUT__INIT;
  Shoal__Get get = SHOAL__GET__INIT;
  Shoal__Delete del = SHOAL__DELETE__INIT;
  Shoal__Cas cas = SHOAL__CAS__INIT;
  Shoal__Batch batch = SHOAL__BATCH__INIT;
  Shoal__BatchOp ops[5], *opp[5];
  Shoal__Scan scan = SHOAL__SCAN__INIT;
  Shoal__Stats stats = SHOAL__STATS__INIT;
  Shoal__Ping ping = SHOAL__PING__INIT;
  Shoal__Hello hello = rf_hello_msg("shoal-load");
  char pre[8];
  switch (type) {
  case T_HELLO:
    rq.body_case = SHOAL__REQUEST__BODY_HELLO;
    rq.hello = &hello;
    break;
  case T_PUT:
    put.has_key = put.has_value = 1;
    put.key.data = (uint8_t *)kb[0];
    put.key.len = kl[0];
    put.value.data = valbuf;
    put.value.len = vlen;
    rq.body_case = SHOAL__REQUEST__BODY_PUT;
    rq.put = &put;
    c->cas_key = k;
    c->cas_ver = 0; /* learnt from the reply */
    break;
  case T_GET:
    get.has_key = 1;
    get.key.data = (uint8_t *)kb[0];
    get.key.len = kl[0];
    rq.body_case = SHOAL__REQUEST__BODY_GET;
    rq.get = &get;
    c->cas_key = k;
    c->cas_ver = 0;
    break;
  case T_DEL:
    del.has_key = 1;
    del.key.data = (uint8_t *)kb[0];
    del.key.len = kl[0];
    rq.body_case = SHOAL__REQUEST__BODY_DELETE;
    rq.delete_ = &del;
    break;
  case T_CAS:
    /* the key and version this connection saw last (0: must be absent);
     * another connection may have written since: SHOAL_ECONFLICT then */
    key_of(c->cas_key, kb[0], sizeof kb[0], &kl[0]);
    cas.has_key = cas.has_expect = cas.has_value = 1;
    cas.key.data = (uint8_t *)kb[0];
    cas.key.len = kl[0];
    cas.expect = c->cas_ver;
    cas.value.data = valbuf;
    cas.value.len = vlen;
    rq.body_case = SHOAL__REQUEST__BODY_CAS;
    rq.cas = &cas;
    break;
  case T_BATCH: {
    /* 2..5 ops, PUT and DELETE_ANY: always applies */
    size_t n = 2 + (size_t)(rnd(&c->rng) % 4);
    for (size_t i = 0; i < n; i++) {
      if (i)
        key_of((unsigned)(rnd(&c->rng) % opt_keys), kb[i], sizeof kb[i],
               &kl[i]);
      shoal__batch_op__init(&ops[i]);
      ops[i].has_kind = ops[i].has_key = 1;
      ops[i].key.data = (uint8_t *)kb[i];
      ops[i].key.len = kl[i];
      if (rnd(&c->rng) % 4) {
        ops[i].kind = SHOAL__BATCH_OP__KIND__PUT;
        ops[i].has_value = 1;
        ops[i].value.data = valbuf;
        ops[i].value.len = 16 + (size_t)(rnd(&c->rng) % 256);
      } else {
        ops[i].kind = SHOAL__BATCH_OP__KIND__DELETE_ANY;
      }
      opp[i] = &ops[i];
    }
    batch.n_ops = n;
    batch.ops = opp;
    rq.body_case = SHOAL__REQUEST__BODY_BATCH;
    rq.batch = &batch;
    break;
  }
  case T_SCAN:
    snprintf(pre, sizeof pre, "k/%02x/", (unsigned)(rnd(&c->rng) & 0xffu));
    scan.has_prefix = 1;
    scan.prefix.data = (uint8_t *)pre;
    scan.prefix.len = 5;
    scan.has_limit = 1;
    scan.limit = 50;
    scan.has_keys_only = 1;
    scan.keys_only = (rnd(&c->rng) & 1) != 0;
    rq.body_case = SHOAL__REQUEST__BODY_SCAN;
    rq.scan = &scan;
    break;
  case T_STATS:
    rq.body_case = SHOAL__REQUEST__BODY_STATS;
    rq.stats = &stats;
    break;
  default:
    ping.has_payload = 1;
    ping.payload.data = (uint8_t *)&c->next_id;
    ping.payload.len = sizeof c->next_id;
    rq.body_case = SHOAL__REQUEST__BODY_PING;
    rq.ping = &ping;
    break;
  }
  put_frame(&c->out, &rq);
  c->types[(c->head + c->inflight) % (opt_depth + 1)] = (uint8_t)type;
  c->inflight++;
  c->next_id++;
}

static int pick_type(conn *c) {
  unsigned r = (unsigned)(rnd(&c->rng) % 100), acc = 0;
  for (int t = 1; t < T_N; t++) {
    acc += mix[t];
    if (r < acc) return t;
  }
  return T_PING;
}

static void arm(conn *c) {
  int want = c->out.len > c->out.off;
  if (want == c->want_out) return;
  struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0u),
                           .data.ptr = c};
  epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
  c->want_out = want;
}

static void flush_out(conn *c) {
  while (c->out.len > c->out.off) {
    ssize_t w = send(c->fd, c->out.p + c->out.off, c->out.len - c->out.off,
                     MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      break; /* EAGAIN: EPOLLOUT; an error shows as EOF/ERR on read */
    }
    c->out.off += (size_t)w;
  }
  arm(c);
}

static void fill(conn *c) {
  if (!c->hello_ok || !load_on) return;
  while (c->inflight < opt_depth) {
    if (opt_rate) {
      if (tokens < 1.0) {
        if (!c->hungry) {
          c->hungry = 1;
          ring[(ring_head + ring_len++) % opt_conns] = c;
        }
        return;
      }
      tokens -= 1.0;
    }
    send_req(c, pick_type(c));
  }
}

static void refill(void) {
  uint64_t now = now_us();
  if (!opt_rate || !load_on) {
    tokens_at = now;
    return;
  }
  tokens += (double)(now - tokens_at) * opt_rate / 1e6;
  tokens_at = now;
  double cap = opt_rate / 100.0 > 1.0 ? opt_rate / 100.0 : 1.0;
  if (tokens > cap) tokens = cap;
  while (ring_len && tokens >= 1.0) {
    conn *c = ring[ring_head];
    ring_head = (ring_head + 1) % opt_conns;
    ring_len--;
    c->hungry = 0;
    if (c->fd < 0) continue;
    fill(c);
    flush_out(c);
  }
}

static void conn_open(conn *c) {
  c->fd = connect_sock(1);
  if (c->fd < 0)
    die_setup("connection %d: connect: %s", c->idx, strerror(-c->fd));
  c->hello_ok = 0;
  c->want_out = 0;
  c->in.len = c->in.off = c->out.len = c->out.off = 0;
  c->head = c->inflight = 0;
  c->next_id = c->expect_id = 1;
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0)
    die_setup("epoll_ctl: %s", strerror(errno));
  send_req(c, T_HELLO);
  flush_out(c);
}

static void conn_close(conn *c) {
  if (c->fd < 0) return;
  epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  c->fd = -1;
  if (c->hello_ok) live--;
  c->hello_ok = 0;
}

static void bad(conn *c, const char *fmt, ...) {
  C.bad++;
  if (C.bad <= 10 || opt_verbose) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "shoal-load: connection %d: ", c->idx);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
  }
}

static void on_reply(conn *c, const Shoal__Response *r) {
  if (!c->inflight) {
    bad(c, "a reply (id %" PRIu64 ") nobody asked for", r->id);
    return;
  }
  int t = c->types[c->head];
  c->head = (c->head + 1) % (opt_depth + 1);
  c->inflight--;
  uint64_t id = c->expect_id++;
  int st = r->has_status ? r->status : 0;
  if (r->id != id) {
    bad(c, "%s: reply id %" PRIu64 ", expected %" PRIu64 " (order)", tname[t],
        r->id, id);
    return;
  }
  int ok = st == 0;
  if (st == SHOAL_ENOTFOUND && (t == T_GET || t == T_DEL)) {
    ok = 1;
    C.notfound++;
  }
  if (st == SHOAL_ECONFLICT && t == T_CAS) {
    ok = 1;
    C.conflict++;
  }
  if (!ok) {
    bad(c, "%s: status %d (%s): %s", tname[t], st, shoal_errname(st),
        r->error ? r->error : "");
    return;
  }
  switch (t) {
  case T_HELLO:
    if (r->body_case != SHOAL__RESPONSE__BODY_HELLO) {
      bad(c, "Hello answered without HelloReply");
      return;
    }
    c->hello_ok = 1;
    live++;
    break;
  case T_PUT:
    if (!r->has_version || !r->version) bad(c, "put without a version");
    c->cas_ver = r->version;
    break;
  case T_GET:
    if (st == 0 && r->body_case != SHOAL__RESPONSE__BODY_GET) {
      bad(c, "get without GetReply");
      return;
    }
    c->cas_ver = st == 0 ? r->get->version : 0;
    break;
  case T_CAS:
    /* success: the new version; conflict: the current one (0 if absent),
     * so the next Cas on this key may well succeed */
    c->cas_ver = r->has_version ? r->version : 0;
    break;
  case T_SCAN:
    if (r->body_case != SHOAL__RESPONSE__BODY_SCAN)
      bad(c, "scan without ScanReply");
    break;
  case T_STATS:
    if (r->body_case != SHOAL__RESPONSE__BODY_STATS)
      bad(c, "stats without StatsReply");
    break;
  case T_PING:
    if (r->body_case != SHOAL__RESPONSE__BODY_PONG || !r->pong ||
        r->pong->payload.len != 8)
      bad(c, "ping without its payload");
    break;
  }
  C.done[t]++;
}

static void on_readable(conn *c) {
  for (;;) {
    buf_reserve(&c->in, 65536);
    ssize_t n = read(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    if (n <= 0) {
      /* EOF or ECONNRESET: the broker closed a connection that did
       * nothing wrong */
      C.drops++;
      fprintf(stderr,
              "shoal-load: connection %d dropped by the broker (%s) "
              "with %u requests in flight\n",
              c->idx, n == 0 ? "EOF" : strerror(errno), c->inflight);
      conn_close(c);
      return;
    }
    c->in.len += (size_t)n;
    if ((size_t)n < 65536) break;
  }
  uint32_t len;
  const uint8_t *f;
  while ((f = take_frame(&c->in, &len))) {
    Shoal__Response *r = shoal__response__unpack(NULL, len, f);
    if (!r) {
      bad(c, "an undecodable reply frame of %u bytes", len);
      continue;
    }
    on_reply(c, r);
    shoal__response__free_unpacked(r, NULL);
  }
  fill(c);
  flush_out(c);
}

/* Run the loop for @ms (0: until every connection has nothing in flight,
 * at most 30 s). Samples the broker RSS (peak_anon, peak_rss) every 100 ms. */
static uint64_t peak_anon, peak_rss;
static uint64_t last_sample;

static void sample_rss(void) {
  uint64_t a, r;
  broker_rss(&a, &r);
  if (a > peak_anon) peak_anon = a;
  if (r > peak_rss) peak_rss = r;
  last_sample = now_us();
}

static void run_loop(uint64_t ms, int churn) {
  uint64_t t0 = now_us(), end = t0 + (ms ? ms : 30000) * 1000u;
  uint64_t next_churn = t0 + 1000000u, next_report = t0 + 10000000u;
  struct epoll_event evs[256];
  for (;;) {
    uint64_t now = now_us();
    if (now >= end) break;
    if (!ms) {
      unsigned busy = 0;
      for (unsigned i = 0; i < opt_conns; i++)
        if (conns[i].fd >= 0 && (conns[i].inflight || !conns[i].hello_ok))
          busy++;
      if (!busy) break;
    }
    if (now - last_sample >= 100000u) sample_rss();
    if (churn && now >= next_churn) {
      /* close and reopen opt_churn connections that have nothing in
       * flight: the client's own choice, not a drop */
      static uint64_t churn_rng = 0x2545F4914F6CDD1DULL;
      next_churn += 1000000u;
      for (unsigned k = 0; k < opt_churn; k++) {
        conn *c = &conns[rnd(&churn_rng) % opt_conns];
        if (c->fd < 0 || c->inflight) continue;
        conn_close(c);
        conn_open(c);
        C.churned++;
      }
    }
    if (ms && now >= next_report) {
      next_report += 10000000u;
      uint64_t tot = 0;
      for (int t = 1; t < T_N; t++)
        tot += C.done[t];
      say("  %5.0f s: %" PRIu64 " requests, %u live connections, %" PRIu64
          " drops, %zu pings\n",
          (double)(now - t0) / 1e6, tot, live, C.drops,
          __atomic_load_n(&P.n, __ATOMIC_RELAXED));
    }
    refill();
    int n = epoll_wait(epfd, evs, 256, opt_rate && load_on ? 1 : 50);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) die_setup("epoll_wait: %s", strerror(errno));
    for (int i = 0; i < n; i++) {
      conn *c = evs[i].data.ptr;
      if (c->fd < 0) continue;
      if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c);
      if (c->fd >= 0 && (evs[i].events & EPOLLOUT)) flush_out(c);
    }
  }
}

/* Start the mix on every connection */
static void load_start(void) {
  load_on = 1;
  tokens = 0;
  tokens_at = now_us();
  for (unsigned i = 0; i < opt_conns; i++) {
    fill(&conns[i]);
    if (conns[i].fd >= 0) flush_out(&conns[i]);
  }
}

/* ------------------------------------------------- one blocking client -- */

static Shoal__Response *admin_call(Shoal__Request *rq) {
  static int fd = -1;
  if (fd < 0) {
    fd = connect_sock(0);
    if (fd < 0 || hello_blocking(fd) != 0) die_setup("admin connection failed");
  }
  static uint64_t id = 1;
  rq->has_id = 1;
  rq->id = ++id;
  Shoal__Response *r = blocking_call(fd, rq);
  if (!r) die_setup("admin connection: no reply");
  return r;
}

static Shoal__StatsReply *stats_now(Shoal__Response **hold) {
  Shoal__Stats s = SHOAL__STATS__INIT;
  Shoal__Request rq = SHOAL__REQUEST__INIT;
  rq.body_case = SHOAL__REQUEST__BODY_STATS;
  rq.stats = &s;
  Shoal__Response *r = admin_call(&rq);
  if (r->body_case != SHOAL__RESPONSE__BODY_STATS)
    die_setup("Stats: no StatsReply");
  *hold = r;
  return r->stats;
}

/* Delete every key of the key space (DELETE_ANY batches of 500) */
static void delete_all(void) {
  enum { PER = 500 };
  static char kb[PER][32];
  Shoal__BatchOp ops[PER], *opp[PER];
  for (unsigned k0 = 0; k0 < opt_keys; k0 += PER) {
    size_t n = 0;
    for (unsigned k = k0; k < opt_keys && n < PER; k++, n++) {
      size_t kl;
      key_of(k, kb[n], sizeof kb[n], &kl);
      shoal__batch_op__init(&ops[n]);
      ops[n].has_kind = ops[n].has_key = 1;
      ops[n].kind = SHOAL__BATCH_OP__KIND__DELETE_ANY;
      ops[n].key.data = (uint8_t *)kb[n];
      ops[n].key.len = kl;
      opp[n] = &ops[n];
    }
    Shoal__Batch b = SHOAL__BATCH__INIT;
    b.n_ops = n;
    b.ops = opp;
    Shoal__Request rq = SHOAL__REQUEST__INIT;
    rq.body_case = SHOAL__REQUEST__BODY_BATCH;
    rq.batch = &b;
    Shoal__Response *r = admin_call(&rq);
    if (r->has_status && r->status)
      die_setup("deleting keys: %s: %s", shoal_errname(r->status),
                r->error ? r->error : "");
    shoal__response__free_unpacked(r, NULL);
  }
}

/* After delete_all: wait until the segment stops shrinking (retired
 * records are freed once no snapshot needs them: the broker's sweep, every
 * 200 ms), at most 10 s. Returns Stats.bytes_used. */
static uint64_t settle(uint64_t *keys) {
  uint64_t last = UINT64_MAX, used = 0;
  int stable = 0;
  for (int i = 0; i < 100 && stable < 5; i++) {
    Shoal__Response *h;
    Shoal__StatsReply *s = stats_now(&h);
    used = s->bytes_used;
    *keys = s->keys;
    int idle = s->retired == 0 || s->retired_bytes == 0;
    shoal__response__free_unpacked(h, NULL);
    stable = used == last && idle ? stable + 1 : 0;
    last = used;
    usleep(200000);
  }
  return used;
}

/* ---------------------------------------------------------------- main -- */

static void usage(int code) {
  fprintf(code ? stderr : stdout,
          "usage: shoal-load [--seconds N] [--minutes N] [--connections N] "
          "[--depth N]\n"
          "                  [--rate REQ_PER_S (0: flat out)]\n"
          "                  [--keys N] [--value-max B] [--churn N] "
          "[--ping-ms MS] [--p99-ms MS]\n"
          "                  [--rss-growth-mb MB] [--leak-mb MB] "
          "[--leak-kb KB] [--keep] [--verbose]\n"
          "See the comment at the top of tests/load/shoal-load.c.\n");
  exit(code);
}

static unsigned uarg(const char *a, const char *name) {
  char *e;
  unsigned long v = strtoul(a, &e, 10);
  if (!*a || *e || v > 100000000ul) {
    fprintf(stderr, "shoal-load: %s wants a number, not '%s'\n", name, a);
    usage(2);
  }
  return (unsigned)v;
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define OPT(name, var)                                                         \
  if (!strcmp(a, name)) {                                                      \
    if (!v) usage(2);                                                          \
    var = uarg(v, name);                                                       \
    i++;                                                                       \
    continue;                                                                  \
  }
    OPT("--seconds", opt_seconds)
    OPT("--minutes", opt_minutes)
    OPT("--connections", opt_conns)
    OPT("--depth", opt_depth)
    OPT("--keys", opt_keys)
    OPT("--value-max", opt_vmax)
    OPT("--churn", opt_churn)
    OPT("--rate", opt_rate)
    OPT("--ping-ms", opt_ping_ms)
    OPT("--rss-growth-mb", opt_rss_growth_mb)
    OPT("--leak-mb", opt_leak_mb)
    OPT("--leak-kb", opt_leak_kb)
#undef OPT
    if (!strcmp(a, "--p99-ms") && v) {
      opt_p99_ms = atof(v);
      i++;
    } else if (!strcmp(a, "--keep")) {
      opt_keep = 1;
    } else if (!strcmp(a, "--verbose")) {
      opt_verbose = 1;
    } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(0);
    } else {
      fprintf(stderr, "shoal-load: unknown option %s\n", a);
      usage(2);
    }
  }
  if (!opt_conns || !opt_depth || opt_depth > 250 || !opt_keys ||
      opt_vmax < 16 || opt_vmax > sizeof valbuf)
    usage(2);
  opt_shoald = getenv("SHOAL_TEST_SHOALD");
  if (!opt_shoald || !*opt_shoald) opt_shoald = SHOAL_TEST_SHOALD_DEFAULT;
  opt_inspect = getenv("SHOAL_TEST_INSPECT");
  if (!opt_inspect || !*opt_inspect) opt_inspect = SHOAL_TEST_INSPECT_DEFAULT;
  uint64_t load_ms = opt_minutes ? (uint64_t)opt_minutes * 60000u
                                 : (uint64_t)opt_seconds * 1000u;
  setvbuf(stdout, NULL, _IOLBF, 0);
  signal(SIGPIPE, SIG_IGN);
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  for (size_t i = 0; i < sizeof valbuf; i++)
    valbuf[i] = (uint8_t)(i * 7 + 1);

  /* descriptors: ours (the connections, the pinger, the admin client) and the
   * broker's (it inherits the limit and takes its hard limit) */
  raise_nofile((rlim_t)opt_conns + 256);
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur < (rlim_t)opt_conns + 64) {
    fprintf(stderr,
            "shoal-load: RLIMIT_NOFILE is %llu, %u connections need "
            "%u (ulimit -n, or run as root)\n",
            (unsigned long long)rl.rlim_cur, opt_conns, opt_conns + 64);
    return 3;
  }

  const char *base = getenv("SHOAL_TEST_SHM_DIR");
  snprintf(dir, sizeof dir, "%s/shoal-load-XXXXXX",
           base && *base ? base : "/dev/shm");
  if (!mkdtemp(dir)) {
    fprintf(stderr, "shoal-load: mkdtemp %s: %s\n", dir, strerror(errno));
    dir[0] = 0;
    return 3;
  }
  atexit(cleanup);
  snprintf(rundir, sizeof rundir, "%s/run", dir);
  snprintf(shmdir, sizeof shmdir, "%s/shm", dir);
  snprintf(sockpath, sizeof sockpath, "%s/%s.sock", rundir, STORE);
  if (mkdir(rundir, 0700) || mkdir(shmdir, 0700))
    die_setup("mkdir under %s: %s", dir, strerror(errno));

  char rate[32];
  snprintf(rate, sizeof rate, opt_rate ? "%u req/s" : "flat out", opt_rate);
  say("shoal-load: %u connections, depth %u, rate %s, %u keys, values "
      "16..%u B, %s %u %s; broker %s\n",
      opt_conns, opt_depth, rate, opt_keys, opt_vmax,
      opt_minutes ? "soak" : "load", opt_minutes ? opt_minutes : opt_seconds,
      opt_minutes ? "min" : "s", opt_shoald);
  uint64_t T0 = now_us();
  start_broker();
  uint64_t fresh_anon, fresh_rss;
  broker_rss(&fresh_anon, &fresh_rss);

  epfd = epoll_create1(EPOLL_CLOEXEC);
  conns = calloc(opt_conns, sizeof *conns);
  ring = calloc(opt_conns, sizeof *ring);
  if (!conns || !ring || epfd < 0) die_setup("memory or epoll");
  for (unsigned i = 0; i < opt_conns; i++) {
    conn *c = &conns[i];
    c->idx = (int)i;
    c->rng = 0x9E3779B97F4A7C15ULL * (i + 1) ^ (uint64_t)T0;
    c->types = calloc(opt_depth + 1, 1);
    c->fd = -1;
    conn_open(c);
  }
  run_loop(0, 0); /* every Hello answered */
  if (live != opt_conns)
    die_setup("%u of %u connections completed Hello (drops %" PRIu64
              ", bad replies %" PRIu64 ")",
              live, opt_conns, C.drops, C.bad);
  say("  %u connections open and past Hello in %.2f s\n", live,
      (double)(now_us() - T0) / 1e6);

  uint64_t base_anon, base_rss, base_used = 0, base_keys = 0;
  int64_t base_iused = -1;
  if (opt_minutes) {
    /* warm-up: the key space filled, every key deleted, reclaimed; the
     * hash index and the allocator's slabs reach their working size, so
     * what stays above the baseline afterwards is a leak */
    say("  warm-up: 20 s of load, then every key deleted\n");
    load_start();
    run_loop(20000, 0);
    load_on = 0;
    run_loop(0, 0);
    delete_all();
    base_used = settle(&base_keys);
    base_iused = inspect_used();
  }
  broker_rss(&base_anon, &base_rss);
  peak_anon = base_anon;
  peak_rss = base_rss;
  say("  baseline: broker RssAnon %" PRIu64 " KiB, VmRSS %" PRIu64
      " KiB (fresh broker: %" PRIu64 " / %" PRIu64 " KiB)%s\n",
      base_anon, base_rss, fresh_anon, fresh_rss, opt_minutes ? "" : "");
  if (opt_minutes)
    say("  baseline: segment used %" PRIu64 " B (Stats), %" PRId64
        " B (shoal-inspect), %" PRIu64 " keys\n",
        base_used, base_iused, base_keys);

  /* the load */
  if (pthread_create(&P.th, NULL, pinger, NULL) != 0)
    die_setup("pthread_create");
  counts before = C;
  uint64_t t1 = now_us();
  load_start();
  run_loop(load_ms, opt_minutes != 0);
  load_on = 0;
  run_loop(0, 0); /* drain what is in flight */
  uint64_t t2 = now_us();
  __atomic_store_n(&P.stop, 1, __ATOMIC_RELAXED);
  pthread_join(P.th, NULL);
  uint64_t end_anon, end_rss;
  sample_rss();
  broker_rss(&end_anon, &end_rss);

  /* the broker's own view: every connection still open */
  Shoal__Response *h;
  Shoal__StatsReply *s = stats_now(&h);
  uint64_t bconns = s->connections;
  shoal__response__free_unpacked(h, NULL);

  int fail = 0;
  double secs = (double)(t2 - t1) / 1e6;
  uint64_t total = 0;
  say("\nrequests done by type (%.1f s of load):\n", secs);
  for (int t = 1; t < T_N; t++) {
    uint64_t d = C.done[t] - before.done[t];
    total += d;
    say("  %-7s %12" PRIu64 "  %9.0f/s\n", tname[t], d, (double)d / secs);
  }
  say("  %-7s %12" PRIu64 "  %9.0f/s  (of which SHOAL_ENOTFOUND %" PRIu64
      ", SHOAL_ECONFLICT %" PRIu64 ")\n",
      "total", total, (double)total / secs, C.notfound - before.notfound,
      C.conflict - before.conflict);

  double p50 = 0, p99 = 0, pmax = 0;
  if (P.n) {
    qsort(P.rtt, P.n, sizeof *P.rtt, cmp_u64);
    p50 = (double)P.rtt[P.n / 2] / 1000.0;
    p99 = (double)P.rtt[(P.n * 99) / 100] / 1000.0;
    pmax = (double)P.rtt[P.n - 1] / 1000.0;
  }
  say("ping (separate client, every %u ms): %zu answered, %" PRIu64
      " lost; p50 %.3f ms, p99 %.3f ms, max %.3f ms (bound p99 < %.1f ms)\n",
      opt_ping_ms, P.n, P.lost, p50, p99, pmax, opt_p99_ms);
  say("broker RssAnon: baseline %" PRIu64 " KiB, peak %" PRIu64
      " KiB, end %" PRIu64 " KiB (bound: peak <= baseline + %u MiB)\n",
      base_anon, peak_anon, end_anon, opt_rss_growth_mb);
  say("broker VmRSS:   baseline %" PRIu64 " KiB, peak %" PRIu64
      " KiB, end %" PRIu64 " KiB (includes touched shared-segment pages)\n",
      base_rss, peak_rss, end_rss);
  say("connections: %u of %u open at the end (broker counts %" PRIu64
      " incl. pinger and admin), drops %" PRIu64 ", bad replies %" PRIu64
      ", reopened by the client %" PRIu64 "\n",
      live, opt_conns, bconns, C.drops, C.bad, C.churned);
  if (P.err[0]) {
    say("FAIL: %s\n", P.err);
    fail = 1;
  }
  if (!P.n || p99 >= opt_p99_ms) {
    say("FAIL: ping p99 %.3f ms is not under %.1f ms\n", p99, opt_p99_ms);
    fail = 1;
  }
  if (C.drops || live != opt_conns) {
    say("FAIL: %" PRIu64 " connections dropped\n", C.drops);
    fail = 1;
  }
  if (C.bad) {
    say("FAIL: %" PRIu64 " unexpected replies\n", C.bad);
    fail = 1;
  }
  if (peak_anon > base_anon + (uint64_t)opt_rss_growth_mb * 1024u) {
    say("FAIL: broker RssAnon grew by %" PRIu64 " KiB\n",
        peak_anon - base_anon);
    fail = 1;
  }

  if (opt_minutes) {
    delete_all();
    uint64_t keys = 0, used = settle(&keys);
    int64_t iused = inspect_used();
    /* glibc keeps freed heap in its arenas: give it a moment of quiet,
     * then read RssAnon once more */
    uint64_t a2, r2;
    broker_rss(&a2, &r2);
    say("leak check after deleting every key: segment used %" PRIu64
        " B (Stats; baseline %" PRIu64 "), %" PRId64
        " B (shoal-inspect; baseline %" PRId64 "), %" PRIu64
        " keys; broker RssAnon %" PRIu64 " KiB (baseline %" PRIu64 ")\n",
        used, base_used, iused, base_iused, keys, a2, base_anon);
    if (keys) {
      say("FAIL: %" PRIu64 " keys left after deleting all\n", keys);
      fail = 1;
    }
    if (used > base_used + (uint64_t)opt_leak_kb * 1024u ||
        (iused >= 0 && base_iused >= 0 &&
         iused > base_iused + (int64_t)opt_leak_kb * 1024)) {
      say("FAIL: segment usage did not return to its baseline (+%u KiB)\n",
          opt_leak_kb);
      fail = 1;
    }
    if (a2 > base_anon + (uint64_t)opt_leak_mb * 1024u) {
      say("FAIL: broker RssAnon did not return to its baseline (+%u MiB)\n",
          opt_leak_mb);
      fail = 1;
    }
  }
  for (unsigned i = 0; i < opt_conns; i++)
    conn_close(&conns[i]);
  stop_broker();
  say("%s in %.1f s\n",
      fail ? "shoal-load: FAILED" : "shoal-load: all bounds met",
      (double)(now_us() - T0) / 1e6);
  return fail;
}
