/*
 * shoal-peers-bench - the C peer figures of issue 8's table that the other
 * benches do not measure: Redis and memcached gets from C clients, LMDB
 * puts, and a mixed 95/5 read/write load on shoal, Redis and LMDB, all on
 * the same keys in one run.
 *
 * It starts its own peers in a private directory under /dev/shm (else /tmp):
 *   redis-server  Unix socket only, persistence off (--save "" --appendonly no)
 *   memcached     Unix socket only (-s), enough memory (-m) for every key
 *   shoald        for the mixed load's shoal writes (shoal_put) and the load
 *   LMDB          an environment in the same directory (a tmpfs)
 * and loads every key ("key:" + 12 digits, 16 bytes; --keys, default 1M)
 * with a 64-byte value into each. Then, each figure the median of --runs
 * runs of --seconds, with min and max:
 *
 *   get     redis GET, memcached get: 1 and 2 reader processes, one
 *           connection each, unpipelined and pipelined (depth 16: redis
 *           sends 16 GETs per write; memcached one "get k1 .. k16"). The
 *           clients are hand-written (RESP and the text protocol) so the
 *           figure is the server and the socket, not a client library.
 *           shoal zero-copy get (one read section per 100 gets, as
 *           shoal-bench) and LMDB mdb_get (one read txn per 100 gets), 1
 *           and 2 readers, for the same keys in the same run.
 *   put     LMDB: one write txn per put, and --batch puts per txn.
 *   mixed   2 processes, each 95% gets and 5% puts of random keys: shoal
 *           (gets zero-copy in a section per get, puts through shoal_put),
 *           redis (GET/SET unpipelined), LMDB (a read txn per get, a write
 *           txn per put). Total ops/s.
 *
 * Every get checks the value length; a miss is an error, and a failed run
 * makes its figure null with the reason. A peer that is not installed
 * (no redis-server, memcached or shoald) gives null figures with the reason,
 * not a failure. Random keys are uniform over the key space; each process
 * has its own generator. All rates are ops/s summed over processes.
 *
 * LMDB runs with its default durability (a sync per commit), which on a
 * tmpfs costs no I/O. Nothing is pinned.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <lmdb.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shoal/shoal.h"

extern char **environ;

#define KEY_LEN 16      /* "key:" + 12 digits */
#define VAL_LEN 64      /* the value size */
#define PIPE_DEPTH 16   /* the pipelined depth */
#define SECTION_GETS 100 /* gets per shoal section / LMDB read txn, as shoal-bench */
#define LOAD_BATCH 1000 /* requests in flight while loading */
#define MAX_RUNS 99
#define MIX_WRITE_PCT 5 /* the 95/5 mix */

static struct {
  long keys;
  double seconds;
  int runs;
  int batch;
  int json;
  int quick;
  const char *shoald;
  const char *redis_server;
  const char *memcached;
} opt = {.keys = 1000000, .seconds = 2.0, .runs = 3, .batch = 100};

static char dir[PATH_MAX];
static char rsock[PATH_MAX + 32], msock[PATH_MAX + 32], ssock[PATH_MAX + 32];
static char lmdb_dir[PATH_MAX + 32];
static pid_t redis_pid, mc_pid, broker_pid, main_pid;
static char value[VAL_LEN];

/* ------------------------------------------------------------- helpers --- */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void stop(pid_t *pid) {
  if (*pid > 0) {
    kill(*pid, SIGTERM);
    waitpid(*pid, NULL, 0);
    *pid = 0;
  }
}

static void cleanup(void) {
  if (getpid() != main_pid) return;
  stop(&broker_pid);
  stop(&redis_pid);
  stop(&mc_pid);
  if (dir[0]) {
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "shoal-peers-bench: could not remove %s\n", dir);
    dir[0] = 0;
  }
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("shoal-peers-bench: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  if (getpid() != main_pid) _exit(1); /* a worker: the parent cleans up */
  cleanup();
  exit(1);
}

static void on_signal(int sig) {
  cleanup();
  signal(sig, SIG_DFL);
  raise(sig);
}

/* @name as given if it has a '/', else the first executable on $PATH; NULL
 * when there is none. Returns a static buffer. */
static const char *find_exe(const char *name) {
  static char buf[PATH_MAX];
  if (!name) return NULL;
  if (strchr(name, '/')) return access(name, X_OK) == 0 ? name : NULL;
  const char *path = getenv("PATH");
  if (!path) path = "/usr/local/bin:/usr/bin:/bin";
  while (*path) {
    size_t n = strcspn(path, ":");
    snprintf(buf, sizeof buf, "%.*s/%s", (int)n, path, name);
    if (n && access(buf, X_OK) == 0) return buf;
    path += n + (path[n] == ':');
  }
  return NULL;
}

static pid_t spawn(char *const argv[]) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid;
  int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) die("cannot start %s: %s", argv[0], strerror(rc));
  return pid;
}

/* Wait until @path is a socket, at most 10 s; 0, or -1 if the server died. */
static int wait_socket(const char *path, pid_t *pid) {
  for (int i = 0; i < 1000; i++) {
    struct stat st;
    if (stat(path, &st) == 0 && S_ISSOCK(st.st_mode)) return 0;
    if (waitpid(*pid, NULL, WNOHANG) == *pid) {
      *pid = 0;
      return -1;
    }
    usleep(10000);
  }
  return -1;
}

static int unix_connect(const char *path) {
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket: %s", strerror(errno));
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
    die("connect %s: %s", path, strerror(errno));
  return fd;
}

static void write_all(int fd, const void *p, size_t n) {
  const char *c = p;
  while (n) {
    ssize_t w = write(fd, c, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) die("write: %s", w ? strerror(errno) : "closed");
    c += w;
    n -= (size_t)w;
  }
}

/* A buffered reader over a socket: lines ending in \r\n, and raw bytes. */
typedef struct {
  int fd;
  size_t pos, len;
  char buf[1 << 16];
} reader;

static void rd_fill(reader *r) {
  if (r->pos > 0) {
    memmove(r->buf, r->buf + r->pos, r->len - r->pos);
    r->len -= r->pos;
    r->pos = 0;
  }
  if (r->len == sizeof r->buf) die("reply line too long");
  ssize_t n = read(r->fd, r->buf + r->len, sizeof r->buf - r->len);
  if (n < 0 && errno == EINTR) return;
  if (n <= 0) die("read: %s", n ? strerror(errno) : "server closed the connection");
  r->len += (size_t)n;
}

/* The next line without its \r\n, NUL-terminated in place; valid until the
 * next call. */
static char *rd_line(reader *r) {
  for (;;) {
    char *s = r->buf + r->pos;
    char *e = memchr(s, '\n', r->len - r->pos);
    if (e && e > s && e[-1] == '\r') {
      e[-1] = 0;
      r->pos = (size_t)(e + 1 - r->buf);
      return s;
    }
    rd_fill(r);
  }
}

static void rd_skip(reader *r, size_t n) {
  while (r->len - r->pos < n) {
    n -= r->len - r->pos;
    r->pos = r->len;
    rd_fill(r);
  }
  r->pos += n;
}

/* The RESP reply to a GET of a loaded key: a bulk string of VAL_LEN bytes. */
static void redis_get_reply(reader *r) {
  const char *l = rd_line(r);
  if (l[0] != '$' || atoi(l + 1) != VAL_LEN) die("redis GET replied %s", l);
  rd_skip(r, VAL_LEN + 2);
}

/* ---------------------------------------------------------------- keys --- */

static void fmt_key(char *k, uint64_t i) {
  memcpy(k, "key:", 4);
  for (int j = KEY_LEN - 1; j >= 4; j--) {
    k[j] = (char)('0' + i % 10);
    i /= 10;
  }
}

static uint64_t rng;
static inline uint64_t rnd(void) {
  uint64_t x = rng;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return rng = x;
}
static inline void rnd_key(char *k) { fmt_key(k, rnd() % (uint64_t)opt.keys); }

/* ------------------------------------------------------------- workers --- */

/* Workers run in forked processes. Each sets itself up (connects, opens),
 * then waits at the barrier, so that every process of a figure starts
 * measuring at once, and returns its own ops/s. */
static int ready_w, go_r;

static void barrier(void) {
  char c = 1;
  if (write(ready_w, &c, 1) != 1) die("barrier: %s", strerror(errno));
  close(ready_w); /* the parent sees EOF once every worker is ready or dead */
  while (read(go_r, &c, 1) < 0 && errno == EINTR) {
  }
}

/* Check the clock every this many ops: clock_gettime costs ~20 ns, a
 * zero-copy get ~100 ns. */
#define CLOCK_EVERY 64

static double redis_get(int depth) {
  int fd = unix_connect(rsock);
  static reader r;
  r.fd = fd;
  char cmd[PIPE_DEPTH * 64];
  static const char pre[] = "*2\r\n$3\r\nGET\r\n$16\r\n";
  size_t one = sizeof pre - 1 + KEY_LEN + 2;
  for (int i = 0; i < depth; i++) {
    memcpy(cmd + i * one, pre, sizeof pre - 1);
    memcpy(cmd + i * one + one - 2, "\r\n", 2);
  }
  barrier();
  long ops = 0;
  double t0 = now_s(), t;
  do {
    for (int j = 0; j < CLOCK_EVERY; j += depth) {
      for (int i = 0; i < depth; i++) rnd_key(cmd + i * one + sizeof pre - 1);
      write_all(fd, cmd, one * (size_t)depth);
      for (int i = 0; i < depth; i++) redis_get_reply(&r);
      ops += depth;
    }
  } while ((t = now_s()) - t0 < opt.seconds);
  close(fd);
  return (double)ops / (t - t0);
}

static double memcached_get(int depth) {
  int fd = unix_connect(msock);
  static reader r;
  r.fd = fd;
  char cmd[8 + PIPE_DEPTH * (KEY_LEN + 1)];
  memcpy(cmd, "get", 3);
  size_t len = 3 + (size_t)depth * (KEY_LEN + 1) + 2;
  for (int i = 0; i < depth; i++) cmd[3 + i * (KEY_LEN + 1)] = ' ';
  memcpy(cmd + len - 2, "\r\n", 2);
  barrier();
  long ops = 0;
  double t0 = now_s(), t;
  do {
    for (int j = 0; j < CLOCK_EVERY; j += depth) {
      for (int i = 0; i < depth; i++) rnd_key(cmd + 4 + i * (KEY_LEN + 1));
      write_all(fd, cmd, len);
      int found = 0;
      for (;;) {
        char *l = rd_line(&r);
        if (strcmp(l, "END") == 0) break;
        char *sp = strrchr(l, ' ');
        if (strncmp(l, "VALUE ", 6) != 0 || !sp || atoi(sp + 1) != VAL_LEN)
          die("memcached get replied %s", l);
        rd_skip(&r, VAL_LEN + 2);
        found++;
      }
      if (found != depth) die("memcached: %d of %d keys found", found, depth);
      ops += depth;
    }
  } while ((t = now_s()) - t0 < opt.seconds);
  close(fd);
  return (double)ops / (t - t0);
}

static shoal *shoal_worker_open(void) {
  shoal *c;
  shoal_options o = {0};
  o.socket = ssock;
  o.client = "shoal-peers-bench";
  int err = shoal_open(&c, "peersbench", &o);
  if (err) die("shoal_open: %s (%s)", shoal_strerror(err), shoal_last_error(NULL));
  return c;
}

/* The value touches land here; not static, so the stores are kept. */
unsigned char peers_sink;

static inline void shoal_get1(shoal *c, const char *k) {
  shoal_val v;
  int err = shoal_get(c, k, KEY_LEN, &v);
  if (err || v.len != VAL_LEN) die("shoal_get: %s, %zu bytes", shoal_strerror(err), v.len);
  peers_sink ^= ((const unsigned char *)v.data)[0] ^ ((const unsigned char *)v.data)[v.len - 1];
}

static double shoal_getw(void) {
  shoal *c = shoal_worker_open();
  char k[KEY_LEN];
  barrier();
  long ops = 0;
  double t0 = now_s(), t;
  do {
    if (shoal_read_begin(c)) die("shoal_read_begin");
    for (int j = 0; j < SECTION_GETS; j++) {
      rnd_key(k);
      shoal_get1(c, k);
    }
    shoal_read_end(c);
    ops += SECTION_GETS;
  } while ((t = now_s()) - t0 < opt.seconds);
  shoal_close(c);
  return (double)ops / (t - t0);
}

static void lmdb_check(int rc, const char *what) {
  if (rc) die("%s: %s", what, mdb_strerror(rc));
}

static size_t lmdb_mapsize(void) {
  /* ~150 B a key once loaded; copy-on-write puts need room for old pages
   * until the readers move on: 4x, and at least 1 GiB (sparse anyway). */
  size_t want = (size_t)opt.keys * 600;
  return want < (1ul << 30) ? (1ul << 30) : want;
}

static MDB_env *lmdb_open(unsigned flags, MDB_dbi *dbi) {
  MDB_env *env;
  lmdb_check(mdb_env_create(&env), "mdb_env_create");
  lmdb_check(mdb_env_set_mapsize(env, lmdb_mapsize()), "mdb_env_set_mapsize");
  lmdb_check(mdb_env_open(env, lmdb_dir, flags | MDB_NORDAHEAD, 0600), "mdb_env_open");
  MDB_txn *txn;
  lmdb_check(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), "mdb_txn_begin");
  lmdb_check(mdb_dbi_open(txn, NULL, 0, dbi), "mdb_dbi_open");
  mdb_txn_abort(txn);
  return env;
}

static inline void lmdb_get1(MDB_txn *txn, MDB_dbi dbi, char *k) {
  MDB_val key = {KEY_LEN, k}, v;
  int rc = mdb_get(txn, dbi, &key, &v);
  if (rc || v.mv_size != VAL_LEN) die("mdb_get: %s, %zu bytes", mdb_strerror(rc), v.mv_size);
  peers_sink ^= ((const unsigned char *)v.mv_data)[0] ^
          ((const unsigned char *)v.mv_data)[v.mv_size - 1];
}

static double lmdb_getw(void) {
  MDB_dbi dbi;
  MDB_env *env = lmdb_open(MDB_RDONLY, &dbi);
  MDB_txn *txn;
  lmdb_check(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), "mdb_txn_begin");
  mdb_txn_reset(txn);
  char k[KEY_LEN];
  barrier();
  long ops = 0;
  double t0 = now_s(), t;
  do {
    lmdb_check(mdb_txn_renew(txn), "mdb_txn_renew");
    for (int j = 0; j < SECTION_GETS; j++) {
      rnd_key(k);
      lmdb_get1(txn, dbi, k);
    }
    mdb_txn_reset(txn);
    ops += SECTION_GETS;
  } while ((t = now_s()) - t0 < opt.seconds);
  mdb_txn_abort(txn);
  mdb_env_close(env);
  return (double)ops / (t - t0);
}

static inline void lmdb_put1(MDB_txn *txn, MDB_dbi dbi, char *k) {
  MDB_val key = {KEY_LEN, k}, v = {VAL_LEN, value};
  lmdb_check(mdb_put(txn, dbi, &key, &v, 0), "mdb_put");
}

/* @batch puts per write txn. */
static double lmdb_putw(int batch) {
  MDB_dbi dbi;
  MDB_env *env = lmdb_open(0, &dbi);
  char k[KEY_LEN];
  barrier();
  long ops = 0;
  double t0 = now_s(), t;
  do {
    MDB_txn *txn;
    lmdb_check(mdb_txn_begin(env, NULL, 0, &txn), "mdb_txn_begin");
    for (int j = 0; j < batch; j++) {
      rnd_key(k);
      lmdb_put1(txn, dbi, k);
    }
    lmdb_check(mdb_txn_commit(txn), "mdb_txn_commit");
    ops += batch;
  } while ((t = now_s()) - t0 < opt.seconds);
  mdb_env_close(env);
  return (double)ops / (t - t0);
}

static inline int mix_is_write(void) { return rnd() % 100 < MIX_WRITE_PCT; }

static double shoal_mixw(void) {
  shoal *c = shoal_worker_open();
  char k[KEY_LEN];
  barrier();
  long ops = 0;
  double t0 = now_s(), t;
  do {
    for (int j = 0; j < CLOCK_EVERY; j++) {
      rnd_key(k);
      if (mix_is_write()) {
        int err = shoal_put(c, k, KEY_LEN, value, VAL_LEN, NULL);
        if (err) die("shoal_put: %s (%s)", shoal_strerror(err), shoal_last_error(c));
      } else {
        if (shoal_read_begin(c)) die("shoal_read_begin");
        shoal_get1(c, k);
        shoal_read_end(c);
      }
    }
    ops += CLOCK_EVERY;
  } while ((t = now_s()) - t0 < opt.seconds);
  shoal_close(c);
  return (double)ops / (t - t0);
}

static double redis_mixw(void) {
  int fd = unix_connect(rsock);
  static reader r;
  r.fd = fd;
  static const char gpre[] = "*2\r\n$3\r\nGET\r\n$16\r\n";
  static const char spre[] = "*3\r\n$3\r\nSET\r\n$16\r\n";
  char get[sizeof gpre + KEY_LEN + 2], set[sizeof spre + KEY_LEN + 16 + VAL_LEN];
  size_t glen = sizeof gpre - 1 + KEY_LEN + 2;
  memcpy(get, gpre, sizeof gpre - 1);
  memcpy(get + glen - 2, "\r\n", 2);
  size_t slen = (size_t)snprintf(set, sizeof set, "%s%.*s\r\n$%d\r\n%.*s\r\n", spre, KEY_LEN,
                                 "key:000000000000", VAL_LEN, VAL_LEN, value);
  barrier();
  long ops = 0;
  double t0 = now_s(), t;
  do {
    for (int j = 0; j < CLOCK_EVERY; j++) {
      if (mix_is_write()) {
        rnd_key(set + sizeof spre - 1);
        write_all(fd, set, slen);
        const char *l = rd_line(&r);
        if (strcmp(l, "+OK") != 0) die("redis SET replied %s", l);
      } else {
        rnd_key(get + sizeof gpre - 1);
        write_all(fd, get, glen);
        redis_get_reply(&r);
      }
    }
    ops += CLOCK_EVERY;
  } while ((t = now_s()) - t0 < opt.seconds);
  close(fd);
  return (double)ops / (t - t0);
}

static double lmdb_mixw(void) {
  MDB_dbi dbi;
  MDB_env *env = lmdb_open(0, &dbi);
  MDB_txn *rtxn;
  lmdb_check(mdb_txn_begin(env, NULL, MDB_RDONLY, &rtxn), "mdb_txn_begin");
  mdb_txn_reset(rtxn);
  char k[KEY_LEN];
  barrier();
  long ops = 0;
  double t0 = now_s(), t;
  do {
    for (int j = 0; j < CLOCK_EVERY; j++) {
      rnd_key(k);
      if (mix_is_write()) {
        MDB_txn *txn;
        lmdb_check(mdb_txn_begin(env, NULL, 0, &txn), "mdb_txn_begin");
        lmdb_put1(txn, dbi, k);
        lmdb_check(mdb_txn_commit(txn), "mdb_txn_commit");
      } else {
        lmdb_check(mdb_txn_renew(rtxn), "mdb_txn_renew");
        lmdb_get1(rtxn, dbi, k);
        mdb_txn_reset(rtxn);
      }
    }
    ops += CLOCK_EVERY;
  } while ((t = now_s()) - t0 < opt.seconds);
  mdb_txn_abort(rtxn);
  mdb_env_close(env);
  return (double)ops / (t - t0);
}

/* ------------------------------------------------------------- figures --- */

enum kind { K_REDIS_GET, K_MC_GET, K_SHOAL_GET, K_LMDB_GET, K_LMDB_PUT, K_SHOAL_MIX,
            K_REDIS_MIX, K_LMDB_MIX };

typedef struct {
  const char *workload, *system;
  char variant[48];
  enum kind kind;
  int nproc;
  int depth; /* pipeline depth, or puts per LMDB txn */
  const char *reason; /* non-NULL: not measured, why */
  double median, min, max;
  int runs;
} figure;

static double run_worker(const figure *f) {
  switch (f->kind) {
  case K_REDIS_GET: return redis_get(f->depth);
  case K_MC_GET: return memcached_get(f->depth);
  case K_SHOAL_GET: return shoal_getw();
  case K_LMDB_GET: return lmdb_getw();
  case K_LMDB_PUT: return lmdb_putw(f->depth);
  case K_SHOAL_MIX: return shoal_mixw();
  case K_REDIS_MIX: return redis_mixw();
  case K_LMDB_MIX: return lmdb_mixw();
  }
  return -1;
}

/* One run of @f: fork f->nproc workers, start them together, sum their
 * rates. Returns < 0 (and sets *why) when a worker failed. */
static double run_once(const figure *f, int run, const char **why) {
  int ready[2], go[2], res[2];
  if (pipe(ready) || pipe(go) || pipe(res)) die("pipe: %s", strerror(errno));
  pid_t pids[8];
  for (int i = 0; i < f->nproc; i++) {
    fflush(NULL);
    pids[i] = fork();
    if (pids[i] < 0) die("fork: %s", strerror(errno));
    if (pids[i] == 0) {
      close(ready[0]);
      close(go[1]);
      close(res[0]);
      ready_w = ready[1];
      go_r = go[0];
      rng = 0x9E3779B97F4A7C15ull * (uint64_t)(run * 8 + i + 1) + (uint64_t)f->kind;
      double r = run_worker(f);
      if (write(res[1], &r, sizeof r) != sizeof r) _exit(1);
      _exit(0);
    }
  }
  close(ready[1]);
  close(go[0]);
  close(res[1]);
  char c;
  int n = 0;
  while (n < f->nproc && read(ready[0], &c, 1) == 1) n++;
  close(go[1]); /* EOF: every worker that is ready starts now */
  double sum = 0, r;
  int got = 0;
  while (read(res[0], &r, sizeof r) == sizeof r) {
    sum += r;
    got++;
  }
  int ok = 1;
  for (int i = 0; i < f->nproc; i++) {
    int st;
    waitpid(pids[i], &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) ok = 0;
  }
  close(ready[0]);
  close(res[0]);
  if (!ok || got != f->nproc || !(sum > 0)) {
    *why = "a worker failed (see stderr)";
    return -1;
  }
  return sum;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void measure(figure *f) {
  if (f->reason) return;
  double v[MAX_RUNS];
  for (int i = 0; i < opt.runs; i++) {
    const char *why = NULL;
    v[i] = run_once(f, i, &why);
    if (v[i] < 0) {
      f->reason = why;
      return;
    }
  }
  int n = opt.runs;
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  f->median = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  f->min = v[0];
  f->max = v[n - 1];
  f->runs = n;
}

/* --------------------------------------------------------------- loads --- */

/* Every key through a hand-written text-protocol pipeline, LOAD_BATCH
 * requests in flight: each request is head, the key, then tail (which
 * takes VAL_LEN, VAL_LEN and the value), and each reply must be the line
 * ok. Redis: RESP SET; memcached: set. */
enum proto { P_REDIS, P_MEMCACHED };

static void load_text(enum proto p) {
  static const struct {
    const char *head, *tail, *ok, *what;
  } t[] = {
      [P_REDIS] = {"*3\r\n$3\r\nSET\r\n$16\r\n", "\r\n$%d\r\n%.*s\r\n", "+OK",
                   "redis: SET"},
      [P_MEMCACHED] = {"set ", " 0 0 %d\r\n%.*s\r\n", "STORED", "memcached: set"},
  };
  int fd = unix_connect(p == P_REDIS ? rsock : msock);
  static reader r;
  r.fd = fd;
  r.pos = r.len = 0;
  static char buf[LOAD_BATCH * 128];
  for (long i = 0; i < opt.keys;) {
    size_t len = 0;
    int n = 0;
    for (; n < LOAD_BATCH && i < opt.keys; n++, i++) {
      len += (size_t)sprintf(buf + len, "%s", t[p].head);
      fmt_key(buf + len, (uint64_t)i);
      len += KEY_LEN;
      len += (size_t)snprintf(buf + len, sizeof buf - len, t[p].tail, VAL_LEN, VAL_LEN,
                              value);
    }
    write_all(fd, buf, len);
    for (int j = 0; j < n; j++) {
      const char *l = rd_line(&r);
      if (strcmp(l, t[p].ok) != 0) die("loading %s replied %s", t[p].what, l);
    }
  }
  close(fd);
}

static const char *load_shoal(void) {
  shoal *c;
  shoal_options o = {0};
  o.socket = ssock;
  o.client = "shoal-peers-bench";
  o.flags = SHOAL_OPEN_NO_SLOT;
  int err = shoal_open(&c, "peersbench", &o);
  if (err) return "shoal_open failed";
  shoal_batch *b;
  if (shoal_batch_new(c, &b)) die("shoal_batch_new");
  char k[KEY_LEN];
  for (long i = 0; i < opt.keys;) {
    shoal_batch_reset(b);
    for (int j = 0; j < LOAD_BATCH && i < opt.keys; j++, i++) {
      fmt_key(k, (uint64_t)i);
      if (shoal_batch_put(b, k, KEY_LEN, value, VAL_LEN, 0)) die("shoal_batch_put");
    }
    err = shoal_batch_commit(c, b, NULL);
    if (err) die("loading shoal: %s (%s)", shoal_strerror(err), shoal_last_error(c));
  }
  shoal_batch_free(b);
  shoal_close(c);
  return NULL;
}

/* Keys in order with MDB_APPEND, one txn; the env is closed again before
 * any fork (an MDB_env must not cross one). */
static void load_lmdb(void) {
  if (mkdir(lmdb_dir, 0700) != 0) die("mkdir %s: %s", lmdb_dir, strerror(errno));
  MDB_env *env;
  lmdb_check(mdb_env_create(&env), "mdb_env_create");
  lmdb_check(mdb_env_set_mapsize(env, lmdb_mapsize()), "mdb_env_set_mapsize");
  lmdb_check(mdb_env_open(env, lmdb_dir, 0, 0600), "mdb_env_open");
  MDB_txn *txn;
  MDB_dbi dbi;
  lmdb_check(mdb_txn_begin(env, NULL, 0, &txn), "mdb_txn_begin");
  lmdb_check(mdb_dbi_open(txn, NULL, 0, &dbi), "mdb_dbi_open");
  char k[KEY_LEN];
  for (long i = 0; i < opt.keys; i++) {
    fmt_key(k, (uint64_t)i);
    MDB_val key = {KEY_LEN, k}, v = {VAL_LEN, value};
    lmdb_check(mdb_put(txn, dbi, &key, &v, MDB_APPEND), "mdb_put");
  }
  lmdb_check(mdb_txn_commit(txn), "mdb_txn_commit");
  mdb_env_close(env);
}

/* ------------------------------------------------------------- machine --- */

static void json_str(const char *s) {
  putchar('"');
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') putchar('\\');
    if ((unsigned char)*s >= 0x20) putchar(*s);
  }
  putchar('"');
}

static void machine(char *cpu, size_t n, long *cores, char *kernel, size_t kn) {
  snprintf(cpu, n, "unknown");
  FILE *f = fopen("/proc/cpuinfo", "r");
  char line[512];
  while (f && fgets(line, sizeof line, f)) {
    if (strncmp(line, "model name", 10) == 0 && strchr(line, ':')) {
      char *s = strchr(line, ':') + 1;
      while (*s == ' ') s++;
      s[strcspn(s, "\n")] = 0;
      snprintf(cpu, n, "%s", s);
      break;
    }
  }
  if (f) fclose(f);
  *cores = sysconf(_SC_NPROCESSORS_ONLN);
  struct utsname u;
  if (uname(&u) == 0) snprintf(kernel, kn, "%s %s", u.sysname, u.release);
  else snprintf(kernel, kn, "unknown");
}

/* ---------------------------------------------------------------- main --- */

static void usage(FILE *f) {
  fprintf(f,
          "usage: shoal-peers-bench [options]\n"
          "\n"
          "Issue 8's C peer figures: redis GET and memcached get (1 and 2 readers,\n"
          "pipelined and not), shoal and LMDB gets on the same keys, LMDB puts,\n"
          "and a 95/5 read/write mix on shoal, redis and LMDB (2 processes).\n"
          "Starts its own redis-server, memcached and shoald on Unix sockets.\n"
          "\n"
          "  --keys N            key space, every key loaded (default 1000000)\n"
          "  --seconds S         length of one run (default 2)\n"
          "  --runs R            runs per figure, median taken (default 3)\n"
          "  --batch B           LMDB puts per txn, batched variant (default 100)\n"
          "  --quick             100000 keys, 1 run of 0.5 s\n"
          "  --shoald PATH       the broker (default: ../broker/shoald beside this\n"
          "                      binary, else shoald on PATH)\n"
          "  --redis-server PATH (default redis-server)\n"
          "  --memcached PATH    (default memcached)\n"
          "  --json              one JSON object on stdout (progress on stderr)\n");
}

int main(int argc, char **argv) {
  static const struct option lo[] = {{"keys", required_argument, 0, 'k'},
                                     {"seconds", required_argument, 0, 's'},
                                     {"runs", required_argument, 0, 'r'},
                                     {"batch", required_argument, 0, 'b'},
                                     {"quick", no_argument, 0, 'q'},
                                     {"shoald", required_argument, 0, 'S'},
                                     {"redis-server", required_argument, 0, 'R'},
                                     {"memcached", required_argument, 0, 'M'},
                                     {"json", no_argument, 0, 'j'},
                                     {"help", no_argument, 0, 'h'},
                                     {0, 0, 0, 0}};
  int ch, set_keys = 0, set_seconds = 0, set_runs = 0;
  opt.redis_server = "redis-server";
  opt.memcached = "memcached";
  while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    switch (ch) {
    case 'k': opt.keys = atol(optarg); set_keys = 1; break;
    case 's': opt.seconds = atof(optarg); set_seconds = 1; break;
    case 'r': opt.runs = atoi(optarg); set_runs = 1; break;
    case 'b': opt.batch = atoi(optarg); break;
    case 'q': opt.quick = 1; break;
    case 'S': opt.shoald = optarg; break;
    case 'R': opt.redis_server = optarg; break;
    case 'M': opt.memcached = optarg; break;
    case 'j': opt.json = 1; break;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return 2;
    }
  }
  if (opt.quick) { /* explicit options still win */
    if (!set_keys) opt.keys = 100000;
    if (!set_seconds) opt.seconds = 0.5;
    if (!set_runs) opt.runs = 1;
  }
  if (optind != argc || opt.keys < 1 || opt.keys > 1000000000000L || !(opt.seconds > 0) ||
      opt.runs < 1 || opt.runs > MAX_RUNS || opt.batch < 1) {
    usage(stderr);
    return 2;
  }
  main_pid = getpid();
  signal(SIGPIPE, SIG_IGN);
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  memset(value, 'v', sizeof value);

  /* The peers' binaries; missing ones give null figures, not a failure. */
  const char *why_redis = NULL, *why_mc = NULL, *why_shoal = NULL;
  char redis_exe[PATH_MAX], mc_exe[PATH_MAX], shoald_exe[PATH_MAX];
  const char *p = find_exe(opt.redis_server);
  if (p) snprintf(redis_exe, sizeof redis_exe, "%s", p);
  else why_redis = "redis-server not found (--redis-server; Debian: redis-server)";
  p = find_exe(opt.memcached);
  if (p) snprintf(mc_exe, sizeof mc_exe, "%s", p);
  else why_mc = "memcached not found (--memcached; Debian: memcached)";
  p = NULL;
  char self[PATH_MAX], cand[PATH_MAX + 32];
  if (opt.shoald) {
    p = find_exe(opt.shoald);
  } else {
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
      self[n] = 0;
      char *sl = strrchr(self, '/');
      if (sl) *sl = 0;
      snprintf(cand, sizeof cand, "%s/../broker/shoald", self);
      p = find_exe(cand);
    }
    if (!p) p = find_exe("shoald");
  }
  if (p) snprintf(shoald_exe, sizeof shoald_exe, "%s", p);
  else why_shoal = "shoald not found (--shoald)";

  const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  snprintf(dir, sizeof dir, "%s/shoal-peersbench-XXXXXX", base);
  if (!mkdtemp(dir)) {
    dir[0] = 0;
    die("mkdtemp in %s: %s", base, strerror(errno));
  }
  snprintf(rsock, sizeof rsock, "%s/redis.sock", dir);
  snprintf(msock, sizeof msock, "%s/memcached.sock", dir);
  snprintf(ssock, sizeof ssock, "%s/peersbench.sock", dir);
  snprintf(lmdb_dir, sizeof lmdb_dir, "%s/lmdb", dir);

  if (!why_redis) {
    char *a[] = {redis_exe, "--port", "0", "--unixsocket", rsock, "--save", "",
                 "--appendonly", "no", "--daemonize", "no", "--dir", dir, NULL};
    redis_pid = spawn(a);
    if (wait_socket(rsock, &redis_pid) != 0) why_redis = "redis-server did not start";
  }
  if (!why_mc) {
    /* ~150 B an item once slab overhead is counted: 4x that, >= 64 MB */
    char mb[32];
    snprintf(mb, sizeof mb, "%ld", 64 + opt.keys * 600 / (1 << 20));
    char *a[16] = {mc_exe, "-s", msock, "-a", "0700", "-m", mb};
    int n = 7;
    if (geteuid() == 0) { /* memcached refuses to run as root without -u */
      a[n++] = "-u";
      a[n++] = "root";
    }
    a[n] = NULL;
    mc_pid = spawn(a);
    if (wait_socket(msock, &mc_pid) != 0) why_mc = "memcached did not start";
  }
  if (!why_shoal) {
    char size[32];
    snprintf(size, sizeof size, "%ldM", 256 + opt.keys * 1000 / (1 << 20));
    char *a[] = {shoald_exe, "--name", "peersbench", "--rundir", dir, "--shm-dir", dir,
                 "--size", size, "--quiet", NULL};
    broker_pid = spawn(a);
    if (wait_socket(ssock, &broker_pid) != 0) why_shoal = "shoald did not start";
  }

  fprintf(stderr, "shoal-peers-bench: loading %ld keys x %d B into", opt.keys, VAL_LEN);
  double t0 = now_s();
  if (!why_redis) {
    fprintf(stderr, " redis");
    load_text(P_REDIS);
  }
  if (!why_mc) {
    fprintf(stderr, " memcached");
    load_text(P_MEMCACHED);
  }
  if (!why_shoal) {
    fprintf(stderr, " shoal");
    why_shoal = load_shoal();
  }
  fprintf(stderr, " lmdb");
  load_lmdb();
  fprintf(stderr, " (%.1f s)\n", now_s() - t0);

  figure figs[32];
  int nf = 0;
#define FIG(W, S, K, N, D, WHY, ...)                                                     \
  do {                                                                                   \
    figure *f_ = &figs[nf++];                                                            \
    *f_ = (figure){.workload = (W), .system = (S), .kind = (K), .nproc = (N),            \
                   .depth = (D), .reason = (WHY)};                                       \
    snprintf(f_->variant, sizeof f_->variant, __VA_ARGS__);                              \
  } while (0)
  for (int n = 1; n <= 2; n++) {
    const char *rd = n == 1 ? "reader" : "readers";
    FIG("random get", "shoal", K_SHOAL_GET, n, 1, why_shoal, "zero-copy, %d %s", n, rd);
    FIG("random get", "LMDB", K_LMDB_GET, n, 1, NULL, "mdb_get, %d %s", n, rd);
    FIG("random get", "Redis", K_REDIS_GET, n, 1, why_redis, "GET, %d %s", n, rd);
    FIG("random get", "Redis", K_REDIS_GET, n, PIPE_DEPTH, why_redis,
        "GET pipelined %d, %d %s", PIPE_DEPTH, n, rd);
    FIG("random get", "memcached", K_MC_GET, n, 1, why_mc, "get, %d %s", n, rd);
    FIG("random get", "memcached", K_MC_GET, n, PIPE_DEPTH, why_mc,
        "multi-get %d, %d %s", PIPE_DEPTH, n, rd);
  }
  FIG("put", "LMDB", K_LMDB_PUT, 1, 1, NULL, "1 txn per put");
  FIG("put", "LMDB", K_LMDB_PUT, 1, opt.batch, NULL, "batched, %d puts per txn", opt.batch);
  FIG("mixed 95/5", "shoal", K_SHOAL_MIX, 2, 0, why_shoal, "2 processes");
  FIG("mixed 95/5", "Redis", K_REDIS_MIX, 2, 0, why_redis, "2 processes");
  FIG("mixed 95/5", "LMDB", K_LMDB_MIX, 2, 0, NULL, "2 processes");

  int planned = 0;
  for (int i = 0; i < nf; i++) planned += !figs[i].reason;
  fprintf(stderr, "shoal-peers-bench: %d figures x %d runs x %.1f s: about %.0f s\n", planned,
          opt.runs, opt.seconds, planned * opt.runs * (opt.seconds + 0.05));
  for (int i = 0, k = 0; i < nf; i++) {
    if (figs[i].reason) continue;
    fprintf(stderr, "  [%d/%d] %s, %s, %s\n", ++k, planned, figs[i].workload, figs[i].system,
            figs[i].variant);
    measure(&figs[i]);
  }
  cleanup();

  char cpu[256], kernel[256];
  long cores;
  machine(cpu, sizeof cpu, &cores, kernel, sizeof kernel);
  if (opt.json) {
    printf("{\"machine\": {\"cpu\": ");
    json_str(cpu);
    printf(", \"cores\": %ld, \"kernel\": ", cores);
    json_str(kernel);
    printf("}, \"keys\": %ld, \"value_size\": %d, \"seconds\": %g, \"runs\": %d,\n"
           " \"figures\": [",
           opt.keys, VAL_LEN, opt.seconds, opt.runs);
    for (int i = 0; i < nf; i++) {
      figure *f = &figs[i];
      printf("%s\n  {\"workload\": ", i ? "," : "");
      json_str(f->workload);
      printf(", \"system\": ");
      json_str(f->system);
      printf(", \"variant\": ");
      json_str(f->variant);
      printf(", \"unit\": \"ops/s\", ");
      if (f->reason) {
        printf("\"median\": null, \"min\": null, \"max\": null, \"runs\": 0, \"reason\": ");
        json_str(f->reason);
        printf("}");
      } else {
        printf("\"median\": %.0f, \"min\": %.0f, \"max\": %.0f, \"runs\": %d}", f->median,
               f->min, f->max, f->runs);
      }
    }
    printf("\n]}\n");
    return 0;
  }
  printf("machine: %s, %ld cores, %s\n", cpu, cores, kernel);
  printf("%ld keys x %d B values; median of %d runs of %g s (min..max)\n\n", opt.keys,
         VAL_LEN, opt.runs, opt.seconds);
  printf("%-11s %-10s %-32s %13s %13s %13s\n", "workload", "system", "variant", "ops/s",
         "min", "max");
  for (int i = 0; i < nf; i++) {
    figure *f = &figs[i];
    if (f->reason)
      printf("%-11s %-10s %-32s %13s   (%s)\n", f->workload, f->system, f->variant, "-",
             f->reason);
    else
      printf("%-11s %-10s %-32s %13.0f %13.0f %13.0f\n", f->workload, f->system, f->variant,
             f->median, f->min, f->max);
  }
  return 0;
}
