/*
 * shoal-bench - shoal's shared-memory reads side by side with LMDB
 * (issue 2, "Must show" 4; DESIGN.md section 9).
 *
 * What it does:
 *   1. Generates N keys (--keys, 16 bytes by default) as deterministic
 *      pseudo-random bytes of the key index: bytes 0..7 are a bijective mix
 *      of the index, so keys are unique; any process can regenerate them.
 *      Values (64 bytes by default) are deterministic bytes of (index, gen).
 *   2. Forks two long-lived reader workers first (so they never inherit the
 *      writer's handle), then loads the keys into a fresh shoal store
 *      (shm_batch of 1000 puts per commit, or shm_put with --load put) and
 *      into an LMDB environment in the same tmpfs (one write txn).
 *   3. The workers open their own shm_view and their own read-only MDB_env,
 *      warm both mappings with one pass over every key (a long-running
 *      reader has its page tables populated; a fresh process would measure
 *      page faults, not the store), then run the measurements on command.
 *   4. Every rate is measured over a fixed duration (--seconds) and repeated
 *      --repeats times (3); the median is reported, min/max in human output.
 *
 * Queries walk a precomputed random permutation of all keys, stored as a
 * contiguous key stream, so that fetching the query key itself is a
 * sequential, prefetched read and not a third cache miss charged to the
 * store under test. Every get touches the value (first + last byte) and
 * checks its length; a miss or a wrong length counts as an error.
 *
 * Sections: get_ops_per_s uses one read section per 100 gets (LMDB: one
 * read txn renewed every 100 gets); get_section_per_op_ops_per_s wraps
 * every get in begin/end. get_many uses --batch keys per shm_get_many call
 * and ends the section once >= 100 keys were read.
 *
 * Latency: get_p50_ns/get_p99_ns time shm_get alone (plus the value touch)
 * with clock_gettime(CLOCK_MONOTONIC), inside a section of 100 gets; the
 * median cost of an empty clock_gettime pair (timer_overhead_ns) is
 * subtracted from each sample. get_section_p*_ns time begin+get+end.
 *
 * Writes under reads: the bench process itself is the store's single writer;
 * it overwrites random existing keys with new values, one shm_put (one
 * commit) each, paced to --write-rate puts/s: it sleeps (>= 50 us at a time)
 * whenever it is ahead and catches up in bursts, as a broker idles between
 * requests; it does not spin. Overwrites change the store itself (the new
 * value lives in its own record, no longer inside the entry), so idle runs
 * around each writer run give a same-state baseline as well
 * (ratio_reads_under_writes_same_state); ratio_reads_under_writes divides by
 * the fresh store's idle rate, as the issue asks.
 *
 * A shared machine: each run measures the CPU the rest of the machine used
 * meanwhile (/proc/stat minus our own processes) and is redone, at most
 * --retries times, when that exceeds --max-other-load cores. The report
 * shows the load every figure was measured under. --only runs a subset.
 *
 * Memory: overhead_bytes_per_key is heap_used / keys - (key + value) after
 * the load and one shm_reclaim (the hash indexes outgrown during the load
 * are retired, not yet freed, right after it; that figure is reported too).
 *
 * Nothing is pinned unless --pin is given. Store and LMDB files are removed
 * at exit, also on SIGINT/SIGTERM.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <lmdb.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shoal/shm.h"

#define NWORKERS 2       /* one reader, and two for the scaling figure */
#define SECTION_GETS 100 /* gets per read section / LMDB read txn */
#define LOAD_BATCH 1000  /* puts per shm_batch commit while loading */
#define MAX_REPEATS 15
#define PACE_TICK_NS 50000u /* shortest sleep of the paced writer */

/* Targets of issue 2, "Must show" 4. */
#define T_GET_VS_LMDB 4.0
#define T_GET_MANY_VS_LMDB 10.0
#define T_P99_NS 2000.0
#define T_SCALING 1.8
#define T_UNDER_WRITES 0.8
#define T_OVERHEAD 64.0

/* ------------------------------------------------------------ options --- */

static struct {
  uint64_t keys;
  size_t key_size;
  size_t value_size;
  double seconds;
  unsigned repeats;
  unsigned batch;
  double write_rate;
  uint64_t samples;
  uint64_t seed;
  unsigned only;    /* G_* groups of measurements to run */
  double max_other; /* cores others may use during a run before it is redone */
  unsigned retries;
  uint64_t size; /* store size, 0 = computed */
  int json;
  int pin;
  int load_single; /* --load put */
  const char *dir;
} opt = {
    .keys = 1000000,
    .key_size = 16,
    .value_size = 64,
    .seconds = 2.0,
    .repeats = 3,
    .batch = 32,
    .write_rate = 200000,
    .samples = 200000,
    .seed = 0x5EED5EEDull,
    .only = ~0u,
    .max_other = 0.25,
    .retries = 2,
};

static FILE *hout; /* human output: stdout, or stderr with --json */

/* Measurement groups (--only). Ratios to the idle get rate need "reads". */
enum { G_READS = 1, G_SCALING = 2, G_LATENCY = 4, G_WRITES = 8, G_PUTS = 16 };
static const char *const group_names[] = {"reads", "scaling", "latency",
                                          "writes", "puts"};

static unsigned parse_groups(const char *arg) {
  unsigned m = 0;
  char buf[256];
  snprintf(buf, sizeof buf, "%s", arg);
  for (char *save = NULL, *t = strtok_r(buf, ",", &save); t;
       t = strtok_r(NULL, ",", &save)) {
    unsigned i;
    for (i = 0; i < 5 && strcmp(t, group_names[i]); i++) {
    }
    if (i == 5) {
      fprintf(
          stderr,
          "shoal-bench: --only: unknown group '%s' (reads, scaling, latency, "
          "writes, puts)\n",
          t);
      exit(2);
    }
    m |= 1u << i;
  }
  if (m & (G_SCALING | G_WRITES)) m |= G_READS; /* their ratios divide by it */
  return m;
}

/* ------------------------------------------------------ process state --- */

static char store_name[SHM_NAME_MAX + 1];
static char shm_dir[512];  /* resolved directory of the store objects */
static char lmdb_dir[600]; /* our LMDB environment directory, "" = none */
static int store_created;
static pid_t parent_pid;
static pid_t worker_pid[NWORKERS];
static int is_worker;

static void cleanup(void) {
  if (is_worker || getpid() != parent_pid) return;
  for (int w = 0; w < NWORKERS; w++)
    if (worker_pid[w] > 0) {
      kill(worker_pid[w], SIGKILL);
      waitpid(worker_pid[w], NULL, 0);
      worker_pid[w] = 0;
    }
  if (store_created) {
    (void)shm_store_unlink(store_name, shm_dir);
    store_created = 0;
  }
  if (lmdb_dir[0]) {
    char p[700];
    snprintf(p, sizeof p, "%s/data.mdb", lmdb_dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/lock.mdb", lmdb_dir);
    unlink(p);
    rmdir(lmdb_dir);
    lmdb_dir[0] = 0;
  }
}

static void on_signal(int sig) {
  cleanup();
  signal(sig, SIG_DFL);
  raise(sig);
}

static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "shoal-bench%s: ", is_worker ? " (worker)" : "");
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  if (is_worker) _exit(2);
  exit(1);
}

/* ------------------------------------------------------------- clocks --- */

static inline uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* CPU time (user + system) of this process so far. */
static double cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* -------------------------------------------------------- keys, values --- */

/* splitmix64's finaliser: a bijection on u64, so mix64(i) is unique per i. */
static inline uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

/* Key of index i: word 0 is mix64(i ^ seed) (unique), later words are other
 * mixes of i. Needs key_size >= 8 for uniqueness. */
static void make_key(uint8_t *out, uint64_t i, size_t ks) {
  for (size_t off = 0, w = 0; off < ks; off += 8, w++) {
    uint64_t x = mix64((i ^ opt.seed) + w * 0xD1B54A32D192ED03ull);
    size_t n = ks - off < 8 ? ks - off : 8;
    memcpy(out + off, &x, n);
  }
}

/* Value of index i, generation gen (0 = the loaded value). */
static void make_value(uint8_t *out, uint64_t i, uint64_t gen, size_t vs) {
  uint64_t s = mix64(i * 0x2545F4914F6CDD1Dull + gen);
  for (size_t off = 0; off < vs; off += 8) {
    s = mix64(s);
    size_t n = vs - off < 8 ? vs - off : 8;
    memcpy(out + off, &s, n);
  }
}

static uint8_t *keys_arr; /* key i at keys_arr + i * ks */
static uint8_t *qstream;  /* the keys in random query order, contiguous */

static void build_keys(void) {
  size_t ks = opt.key_size;
  uint64_t n = opt.keys;
  keys_arr = malloc(n * ks);
  qstream = malloc(n * ks);
  uint32_t *perm = malloc(n * sizeof *perm);
  if (!keys_arr || !qstream || !perm)
    die("out of memory for %" PRIu64 " keys", n);
  for (uint64_t i = 0; i < n; i++) {
    make_key(keys_arr + i * ks, i, ks);
    perm[i] = (uint32_t)i;
  }
  uint64_t r = opt.seed * 0x9E3779B97F4A7C15ull + 1;
  for (uint64_t i = n - 1; i > 0; i--) { /* Fisher-Yates */
    r = mix64(r);
    uint64_t j = r % (i + 1);
    uint32_t t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  for (uint64_t i = 0; i < n; i++)
    memcpy(qstream + i * ks, keys_arr + (uint64_t)perm[i] * ks, ks);
  free(perm);
}

/* ------------------------------------------------------------ workers --- */

enum wkind {
  W_INIT = 1, /* open view + LMDB env, warm both */
  W_GET,      /* shm_get, per_section gets per section */
  W_GET_MANY, /* shm_get_many, batch keys per call */
  W_LMDB_GET, /* mdb_get, txn renewed every per_section gets */
  W_LAT,      /* shm_get latency samples (section_per_op selects mode) */
  W_LMDB_LAT, /* mdb_get latency samples */
  W_EXIT,
};

struct wcmd {
  int kind;
  int section_per_op; /* W_LAT: time begin+get+end instead of get alone */
  uint32_t per_section;
  uint32_t batch;
  double seconds;
  uint64_t start; /* position in the query stream */
  uint64_t samples;
  uint64_t timer_ns; /* W_LAT: overhead to subtract */
};

struct wres {
  uint64_t ops;
  uint64_t errors;
  uint64_t elapsed_ns;
  uint64_t sink;
  int first_err;
  int pad;
  double p50, p99, p999, pmax;
  double cpu_s; /* the worker's CPU time for the command */
};

/* Shared with the workers: a worker sets done[w] when its timed run ends, so
 * the paced writer stops with it. */
struct shared {
  int done[NWORKERS];
};
static struct shared *shared;

static int cmd_fd[NWORKERS][2], res_fd[NWORKERS][2];

static void xwrite(int fd, const void *p, size_t n) {
  const char *c = p;
  while (n) {
    ssize_t k = write(fd, c, n);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) die("pipe write: %s", strerror(errno));
    c += k;
    n -= (size_t)k;
  }
}

static int xread(int fd, void *p, size_t n) {
  char *c = p;
  while (n) {
    ssize_t k = read(fd, c, n);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return -1;
    c += k;
    n -= (size_t)k;
  }
  return 0;
}

/* Worker-local state. */
static shm_view *wv;
static MDB_env *wenv;
static MDB_txn *wtxn;
static MDB_dbi wdbi;
static int widx;

static inline int check_val(const void *data, size_t len, uint64_t *sink) {
  if (len != opt.value_size) return -1;
  const uint8_t *d = data;
  *sink += d[0] + d[len - 1];
  return 0;
}

static void note_err(struct wres *r, int rc) {
  if (!r->errors) r->first_err = rc;
  r->errors++;
}

static void w_init(struct wres *r) {
  int rc = shm_view_open(&wv, store_name, shm_dir, 0);
  if (rc) die("shm_view_open(%s): %s", store_name, shoal_strerror(rc));
  if ((rc = mdb_env_create(&wenv)) ||
      (rc = mdb_env_open(wenv, lmdb_dir, MDB_RDONLY, 0644)))
    die("LMDB open %s: %s", lmdb_dir, mdb_strerror(rc));
  if ((rc = mdb_txn_begin(wenv, NULL, MDB_RDONLY, &wtxn)) ||
      (rc = mdb_dbi_open(wtxn, NULL, 0, &wdbi)))
    die("LMDB txn: %s", mdb_strerror(rc));
  /* Warm both mappings: one pass over every key. */
  uint64_t t0 = now_ns();
  size_t ks = opt.key_size;
  for (uint64_t i = 0; i < opt.keys; i += SECTION_GETS) {
    if ((rc = shm_read_begin(wv)))
      die("shm_read_begin: %s", shoal_strerror(rc));
    for (uint64_t j = i; j < i + SECTION_GETS && j < opt.keys; j++) {
      shm_val v;
      rc = shm_get(wv, qstream + j * ks, ks, &v);
      if (rc || check_val(v.data, v.len, &r->sink)) note_err(r, rc);
    }
    shm_read_end(wv);
  }
  for (uint64_t i = 0; i < opt.keys; i++) {
    MDB_val k = {ks, qstream + i * ks}, d;
    rc = mdb_get(wtxn, wdbi, &k, &d);
    if (rc || check_val(d.mv_data, d.mv_size, &r->sink))
      note_err(r, rc ? rc : -1);
  }
  mdb_txn_reset(wtxn);
  r->elapsed_ns = now_ns() - t0;
  r->ops = opt.keys * 2;
}

/* Timed loop scaffolding: run until `seconds` passed, checking the clock
 * once per section (<= 100 gets), so the clock costs < 1 ns per get. */
static void w_get(const struct wcmd *c, struct wres *r) {
  size_t ks = opt.key_size;
  uint64_t n = opt.keys, pos = c->start % n, ops = 0;
  uint64_t per = c->per_section ? c->per_section : 1;
  uint64_t t0 = now_ns(), dur = (uint64_t)(c->seconds * 1e9), t;
  uint64_t sink = 0;
  int rc;
  if (per == 1) {
    /* begin/get/end around every get; clock every 100 gets */
    do {
      for (int j = 0; j < SECTION_GETS; j++) {
        const uint8_t *k = qstream + pos * ks;
        if (++pos == n) pos = 0;
        if ((rc = shm_read_begin(wv)))
          die("shm_read_begin: %s", shoal_strerror(rc));
        shm_val v;
        rc = shm_get(wv, k, ks, &v);
        if (rc || check_val(v.data, v.len, &sink)) note_err(r, rc);
        shm_read_end(wv);
      }
      ops += SECTION_GETS;
    } while ((t = now_ns()) - t0 < dur);
  } else {
    do {
      if ((rc = shm_read_begin(wv)))
        die("shm_read_begin: %s", shoal_strerror(rc));
      for (uint64_t j = 0; j < per; j++) {
        const uint8_t *k = qstream + pos * ks;
        if (++pos == n) pos = 0;
        shm_val v;
        rc = shm_get(wv, k, ks, &v);
        if (rc || check_val(v.data, v.len, &sink)) note_err(r, rc);
      }
      shm_read_end(wv);
      ops += per;
    } while ((t = now_ns()) - t0 < dur);
  }
  __atomic_store_n(&shared->done[widx], 1, __ATOMIC_RELEASE);
  r->ops = ops;
  r->elapsed_ns = t - t0;
  r->sink = sink;
}

static void w_get_many(const struct wcmd *c, struct wres *r) {
  size_t ks = opt.key_size;
  uint64_t n = opt.keys, pos = c->start % n, ops = 0;
  unsigned b = c->batch ? c->batch : 32;
  shm_key *keys = calloc(b, sizeof *keys);
  shm_val *out = calloc(b, sizeof *out);
  int *status = calloc(b, sizeof *status);
  if (!keys || !out || !status) die("out of memory");
  uint64_t t0 = now_ns(), dur = (uint64_t)(c->seconds * 1e9), t;
  uint64_t sink = 0;
  int rc;
  do {
    if ((rc = shm_read_begin(wv)))
      die("shm_read_begin: %s", shoal_strerror(rc));
    unsigned in_section = 0;
    do {
      for (unsigned j = 0; j < b; j++) {
        keys[j].data = qstream + pos * ks;
        keys[j].len = ks;
        if (++pos == n) pos = 0;
      }
      int found = shm_get_many(wv, b, keys, out, status);
      if (found < 0) die("shm_get_many: %s", shoal_strerror(found));
      for (unsigned j = 0; j < b; j++)
        if (status[j] || check_val(out[j].data, out[j].len, &sink))
          note_err(r, status[j]);
      in_section += b;
    } while (in_section < SECTION_GETS);
    shm_read_end(wv);
    ops += in_section;
  } while ((t = now_ns()) - t0 < dur);
  __atomic_store_n(&shared->done[widx], 1, __ATOMIC_RELEASE);
  r->ops = ops;
  r->elapsed_ns = t - t0;
  r->sink = sink;
  free(keys);
  free(out);
  free(status);
}

static void w_lmdb_get(const struct wcmd *c, struct wres *r) {
  size_t ks = opt.key_size;
  uint64_t n = opt.keys, pos = c->start % n, ops = 0;
  uint64_t per = c->per_section ? c->per_section : SECTION_GETS;
  uint64_t t0 = now_ns(), dur = (uint64_t)(c->seconds * 1e9), t;
  uint64_t sink = 0;
  int rc;
  do {
    if ((rc = mdb_txn_renew(wtxn))) die("mdb_txn_renew: %s", mdb_strerror(rc));
    for (uint64_t j = 0; j < per; j++) {
      MDB_val k = {ks, qstream + pos * ks}, d;
      if (++pos == n) pos = 0;
      rc = mdb_get(wtxn, wdbi, &k, &d);
      if (rc || check_val(d.mv_data, d.mv_size, &sink))
        note_err(r, rc ? rc : -1);
    }
    mdb_txn_reset(wtxn);
    ops += per;
  } while ((t = now_ns()) - t0 < dur);
  __atomic_store_n(&shared->done[widx], 1, __ATOMIC_RELEASE);
  r->ops = ops;
  r->elapsed_ns = t - t0;
  r->sink = sink;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static void percentiles(uint64_t *lat, uint64_t m, struct wres *r) {
  qsort(lat, m, sizeof *lat, cmp_u64);
  r->p50 = (double)lat[(uint64_t)(0.50 * (double)(m - 1))];
  r->p99 = (double)lat[(uint64_t)(0.99 * (double)(m - 1))];
  r->p999 = (double)lat[(uint64_t)(0.999 * (double)(m - 1))];
  r->pmax = (double)lat[m - 1];
}

static inline uint64_t sub_floor(uint64_t a, uint64_t b) {
  return a > b ? a - b : 0;
}

static void w_lat(const struct wcmd *c, struct wres *r, int lmdb) {
  size_t ks = opt.key_size;
  uint64_t n = opt.keys, pos = c->start % n, m = c->samples;
  uint64_t *lat = malloc(m * sizeof *lat);
  if (!lat) die("out of memory for %" PRIu64 " samples", m);
  uint64_t sink = 0, t_all = now_ns();
  int rc;
  for (uint64_t i = 0; i < m;) {
    if (lmdb) {
      if ((rc = mdb_txn_renew(wtxn)))
        die("mdb_txn_renew: %s", mdb_strerror(rc));
    } else if (!c->section_per_op) {
      if ((rc = shm_read_begin(wv)))
        die("shm_read_begin: %s", shoal_strerror(rc));
    }
    for (int j = 0; j < SECTION_GETS && i < m; j++, i++) {
      const uint8_t *k = qstream + pos * ks;
      if (++pos == n) pos = 0;
      uint64_t t0, t1;
      if (lmdb) {
        MDB_val kv = {ks, (void *)k}, d;
        t0 = now_ns();
        rc = mdb_get(wtxn, wdbi, &kv, &d);
        if (rc || check_val(d.mv_data, d.mv_size, &sink))
          note_err(r, rc ? rc : -1);
        t1 = now_ns();
      } else if (c->section_per_op) {
        shm_val v;
        t0 = now_ns();
        if ((rc = shm_read_begin(wv)))
          die("shm_read_begin: %s", shoal_strerror(rc));
        rc = shm_get(wv, k, ks, &v);
        if (rc || check_val(v.data, v.len, &sink)) note_err(r, rc);
        shm_read_end(wv);
        t1 = now_ns();
      } else {
        shm_val v;
        t0 = now_ns();
        rc = shm_get(wv, k, ks, &v);
        if (rc || check_val(v.data, v.len, &sink)) note_err(r, rc);
        t1 = now_ns();
      }
      lat[i] = sub_floor(t1 - t0, c->timer_ns);
    }
    if (lmdb)
      mdb_txn_reset(wtxn);
    else if (!c->section_per_op)
      shm_read_end(wv);
  }
  r->elapsed_ns = now_ns() - t_all;
  r->ops = m;
  r->sink = sink;
  percentiles(lat, m, r);
  free(lat);
}

static void worker_main(int w) {
  is_worker = 1;
  widx = w;
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent_pid) _exit(3);
  for (int i = 0; i < NWORKERS; i++) {
    close(cmd_fd[i][1]);
    close(res_fd[i][0]);
    if (i != w) {
      close(cmd_fd[i][0]);
      close(res_fd[i][1]);
    }
  }
  struct wcmd c;
  while (xread(cmd_fd[w][0], &c, sizeof c) == 0) {
    struct wres r;
    memset(&r, 0, sizeof r);
    double cpu0 = cpu_seconds();
    switch (c.kind) {
    case W_INIT:
      w_init(&r);
      break;
    case W_GET:
      w_get(&c, &r);
      break;
    case W_GET_MANY:
      w_get_many(&c, &r);
      break;
    case W_LMDB_GET:
      w_lmdb_get(&c, &r);
      break;
    case W_LAT:
      w_lat(&c, &r, 0);
      break;
    case W_LMDB_LAT:
      w_lat(&c, &r, 1);
      break;
    case W_EXIT:
      if (wtxn) mdb_txn_abort(wtxn);
      if (wenv) mdb_env_close(wenv);
      if (wv) shm_view_close(wv);
      _exit(0);
    default:
      die("unknown command %d", c.kind);
    }
    r.cpu_s = cpu_seconds() - cpu0;
    xwrite(res_fd[w][1], &r, sizeof r);
  }
  _exit(0);
}

static void pin_self(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof set, &set))
    fprintf(stderr, "shoal-bench: pinning to cpu %d: %s\n", cpu,
            strerror(errno));
}

static void start_workers(void) {
  shared = mmap(NULL, sizeof *shared, PROT_READ | PROT_WRITE,
                MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (shared == MAP_FAILED) die("mmap: %s", strerror(errno));
  for (int w = 0; w < NWORKERS; w++)
    if (pipe(cmd_fd[w]) || pipe(res_fd[w])) die("pipe: %s", strerror(errno));
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  for (int w = 0; w < NWORKERS; w++) {
    fflush(NULL);
    pid_t p = fork();
    if (p < 0) die("fork: %s", strerror(errno));
    if (p == 0) {
      if (opt.pin) pin_self((int)(w % (ncpu > 0 ? ncpu : 1)));
      worker_main(w);
    }
    worker_pid[w] = p;
  }
  for (int w = 0; w < NWORKERS; w++) {
    close(cmd_fd[w][0]);
    close(res_fd[w][1]);
  }
}

static void send_cmd(int w, const struct wcmd *c) {
  __atomic_store_n(&shared->done[w], 0, __ATOMIC_RELEASE);
  xwrite(cmd_fd[w][1], c, sizeof *c);
}

static uint64_t total_errors;
static int first_error;

static void get_res(int w, struct wres *r) {
  if (xread(res_fd[w][0], r, sizeof *r)) {
    int st = 0;
    waitpid(worker_pid[w], &st, 0);
    worker_pid[w] = 0;
    die("reader worker %d died (%s %d)", w, WIFSIGNALED(st) ? "signal" : "exit",
        WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
  }
  if (r->errors) {
    if (!total_errors) first_error = r->first_err;
    total_errors += r->errors;
  }
}

static double rate_of(const struct wres *r) {
  return r->elapsed_ns ? (double)r->ops * 1e9 / (double)r->elapsed_ns : 0;
}

/* ------------------------------------------------------------ figures --- */

struct fig {
  double v[MAX_REPEATS];
  double other[MAX_REPEATS]; /* cores used by other processes in that run */
  unsigned n;
};

static int cmp_dbl(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}
static double fig_med(const struct fig *f) {
  if (!f->n) return NAN;
  double s[MAX_REPEATS];
  memcpy(s, f->v, f->n * sizeof *s);
  qsort(s, f->n, sizeof *s, cmp_dbl);
  return f->n % 2 ? s[f->n / 2] : (s[f->n / 2 - 1] + s[f->n / 2]) / 2;
}
static double fig_min(const struct fig *f) {
  double m = INFINITY;
  for (unsigned i = 0; i < f->n; i++)
    m = f->v[i] < m ? f->v[i] : m;
  return f->n ? m : NAN;
}
static double fig_max(const struct fig *f) {
  double m = -INFINITY;
  for (unsigned i = 0; i < f->n; i++)
    m = f->v[i] > m ? f->v[i] : m;
  return f->n ? m : NAN;
}
/* ------------------------------------------------- machine quietness --- */

/* The reference machine has 2 cores and is shared: a compiler or a test
 * suite running beside the bench takes a core from a reader and skews the
 * figure. Each timed run therefore measures how much CPU the rest of the
 * machine used meanwhile (busy ticks of /proc/stat minus the CPU time of the
 * bench's own processes) and is redone, up to --retries times, when others
 * used more than --max-other-load cores. The last attempt is kept either way
 * and the report shows the load every figure was measured under. */
struct sysprobe {
  uint64_t busy, steal, t_ns;
  double self_cpu;
};

static void proc_stat(uint64_t *busy, uint64_t *steal) {
  unsigned long long v[8] = {0};
  *busy = *steal = 0;
  FILE *f = fopen("/proc/stat", "r");
  if (!f) return;
  if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1],
             &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) == 8) {
    *busy = v[0] + v[1] + v[2] + v[5] + v[6]; /* user nice system irq softirq */
    *steal = v[7];
  }
  fclose(f);
}

static void sys_begin(struct sysprobe *p) {
  proc_stat(&p->busy, &p->steal);
  p->self_cpu = cpu_seconds();
  p->t_ns = now_ns();
}

static double last_other = NAN, max_other_seen = 0, steal_seen = 0;
static unsigned runs_redone;

/* Cores used by other processes (and hypervisor steal) since sys_begin,
 * given the CPU seconds our workers used. Sets last_other. */
static double sys_end(const struct sysprobe *p, double workers_cpu) {
  uint64_t busy, steal;
  proc_stat(&busy, &steal);
  double wall = (double)(now_ns() - p->t_ns) / 1e9;
  double hz = (double)sysconf(_SC_CLK_TCK);
  double ours = cpu_seconds() - p->self_cpu + workers_cpu;
  double others = ((double)(busy - p->busy) / hz - ours) / wall;
  double st = (double)(steal - p->steal) / hz / wall;
  if (others < 0) others = 0;
  last_other = others + st;
  if (st > steal_seen) steal_seen = st;
  return last_other;
}

/* Keep this attempt? Counts the redone ones. */
static int quiet_enough(unsigned attempt) {
  if (!(last_other > opt.max_other) || attempt >= opt.retries) {
    if (last_other > max_other_seen) max_other_seen = last_other;
    return 1;
  }
  runs_redone++;
  return 0;
}

static void fig_add(struct fig *f, double x) {
  if (f->n < MAX_REPEATS) {
    f->other[f->n] = last_other;
    f->v[f->n++] = x;
  }
}
static double fig_other_max(const struct fig *f) {
  double m = 0;
  for (unsigned i = 0; i < f->n; i++)
    m = f->other[i] > m ? f->other[i] : m;
  return m;
}

/* Start of a query-stream run: different per repeat and per worker. */
static uint64_t start_pos(unsigned rep, int w) {
  return (mix64(rep * 7919u + 1) + (uint64_t)w * (opt.keys / NWORKERS)) %
         opt.keys;
}

/* One timed run on @nw workers at once; returns the aggregate rate. */
static double run_rate(int kind, int nw, unsigned rep, uint32_t per,
                       uint32_t batch) {
  struct wcmd c;
  memset(&c, 0, sizeof c);
  c.kind = kind;
  c.seconds = opt.seconds;
  c.per_section = per;
  c.batch = batch;
  for (unsigned attempt = 0;; attempt++) {
    struct sysprobe sp;
    sys_begin(&sp);
    for (int w = 0; w < nw; w++) {
      c.start = start_pos(rep + attempt * 1000, w);
      send_cmd(w, &c);
    }
    double sum = 0, wcpu = 0;
    for (int w = 0; w < nw; w++) {
      struct wres r;
      get_res(w, &r);
      sum += rate_of(&r);
      wcpu += r.cpu_s;
    }
    sys_end(&sp, wcpu);
    if (quiet_enough(attempt)) return sum;
  }
}

/* One latency run on worker 0. */
static void run_lat(int kind, int section_per_op, unsigned rep, uint64_t tov,
                    struct wres *r) {
  struct wcmd c;
  memset(&c, 0, sizeof c);
  c.kind = kind;
  c.section_per_op = section_per_op;
  c.samples = opt.samples;
  c.timer_ns = tov;
  for (unsigned attempt = 0;; attempt++) {
    struct sysprobe sp;
    sys_begin(&sp);
    c.start = start_pos(rep + 100 + attempt * 1000, 0);
    send_cmd(0, &c);
    get_res(0, r);
    sys_end(&sp, r->cpu_s);
    if (quiet_enough(attempt)) return;
  }
}

static uint64_t timer_overhead_ns(void) {
  enum { N = 200001 };
  static uint64_t d[N];
  for (int i = 0; i < N; i++) {
    uint64_t a = now_ns(), b = now_ns();
    d[i] = b - a;
  }
  qsort(d, N, sizeof *d, cmp_u64);
  return d[N / 2];
}

/* ---------------------------------------------------------- the store --- */

static shm_store *store;

static uint64_t store_size(void) {
  if (opt.size) return opt.size;
  /* Sparse reservation: ~4x what the loaded keys need (entry + tower + key +
   * embedded record + index slots), so overwrites while readers hold
   * snapshots never run out; only backed chunks cost memory. */
  uint64_t per = opt.key_size + opt.value_size + 256;
  uint64_t sz = (256ull << 20) + opt.keys * per * 4;
  sz = (sz + (1ull << 20) - 1) & ~((1ull << 20) - 1);
  if (sz > SHM_MAX_SIZE) sz = SHM_MAX_SIZE;
  return sz;
}

static void fail_store(const char *what, int rc) {
  die("%s: %s (%s)", what, shoal_strerror(rc),
      store ? shm_store_lasterr(store) : "");
}

static double load_shoal(void) {
  shm_config cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.name = store_name;
  cfg.dir = shm_dir;
  cfg.size = store_size();
  (void)shm_store_unlink(store_name, shm_dir);
  int rc = shm_store_open(&store, &cfg, SHM_CREATE | SHM_TRUNC);
  store_created = 1;
  if (rc) fail_store("shm_store_open", rc);
  size_t ks = opt.key_size, vs = opt.value_size;
  uint8_t *vals = malloc(LOAD_BATCH * vs);
  shm_op *ops = calloc(LOAD_BATCH, sizeof *ops);
  if (!vals || !ops) die("out of memory");
  uint64_t t0 = now_ns();
  for (uint64_t i = 0; i < opt.keys; i += LOAD_BATCH) {
    size_t m = 0;
    for (uint64_t j = i; j < i + LOAD_BATCH && j < opt.keys; j++, m++) {
      make_value(vals + m * vs, j, 0, vs);
      ops[m].kind = SHM_OP_PUT;
      ops[m].key = keys_arr + j * ks;
      ops[m].klen = ks;
      ops[m].val = vals + m * vs;
      ops[m].vlen = vs;
    }
    if (opt.load_single) {
      for (size_t j = 0; j < m; j++)
        if ((rc = shm_put(store, ops[j].key, ks, ops[j].val, vs, 0, NULL)))
          fail_store("shm_put (load)", rc);
    } else {
      size_t failed = 0;
      if ((rc = shm_batch(store, ops, m, NULL, &failed)))
        fail_store("shm_batch (load)", rc);
    }
  }
  double secs = (double)(now_ns() - t0) / 1e9;
  free(vals);
  free(ops);
  return secs;
}

static uint64_t lmdb_bytes;

/* Before the workers fork: they inherit the directory's name. */
static void make_lmdb_dir(void) {
  snprintf(lmdb_dir, sizeof lmdb_dir, "%s/shoal-bench-lmdb-XXXXXX", shm_dir);
  if (!mkdtemp(lmdb_dir)) {
    int e = errno;
    lmdb_dir[0] = 0;
    die("mkdtemp in %s: %s", shm_dir, strerror(e));
  }
}

static double load_lmdb(void) {
  size_t ks = opt.key_size, vs = opt.value_size;
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  int rc;
  /* A leaf node is 8 bytes + key + value; pages fill to ~70% on random
   * inserts; 3x that plus slack leaves room. */
  uint64_t mapsize = (64ull << 20) + opt.keys * (ks + vs + 64) * 3;
  if ((rc = mdb_env_create(&env)) || (rc = mdb_env_set_mapsize(env, mapsize)) ||
      (rc = mdb_env_open(env, lmdb_dir,
                         MDB_NOSYNC | MDB_NOMETASYNC | MDB_WRITEMAP, 0644)))
    die("LMDB env in %s: %s", lmdb_dir, mdb_strerror(rc));
  if ((size_t)mdb_env_get_maxkeysize(env) < ks)
    die("--key-size %zu exceeds LMDB's key limit %d", ks,
        mdb_env_get_maxkeysize(env));
  uint8_t *val = malloc(vs);
  if (!val) die("out of memory");
  uint64_t t0 = now_ns();
  if ((rc = mdb_txn_begin(env, NULL, 0, &txn)) ||
      (rc = mdb_dbi_open(txn, NULL, 0, &dbi)))
    die("LMDB txn: %s", mdb_strerror(rc));
  for (uint64_t i = 0; i < opt.keys; i++) {
    make_value(val, i, 0, vs);
    MDB_val k = {ks, keys_arr + i * ks}, d = {vs, val};
    if ((rc = mdb_put(txn, dbi, &k, &d, 0)))
      die("mdb_put: %s", mdb_strerror(rc));
  }
  if ((rc = mdb_txn_commit(txn))) die("mdb_txn_commit: %s", mdb_strerror(rc));
  double secs = (double)(now_ns() - t0) / 1e9;
  MDB_envinfo info;
  MDB_stat st;
  mdb_env_info(env, &info);
  mdb_env_stat(env, &st);
  lmdb_bytes = (uint64_t)(info.me_last_pgno + 1) * st.ms_psize;
  mdb_env_close(env);
  free(val);
  return secs;
}

/* Paced writer: overwrite random existing keys, one shm_put (one commit)
 * each, at @rate puts/s, until worker @w says its run is over. Sleeps while
 * ahead of the pace; when due it catches up in bursts of at most 256 puts
 * (so it still watches the stop flag often). */
struct wstats {
  uint64_t puts;
  uint64_t elapsed_ns;
  double cpu_s;
  int err;
};

static uint64_t write_gen = 1;

static inline int put_random(uint64_t *rng, uint8_t *val) {
  *rng = mix64(*rng);
  uint64_t idx = *rng % opt.keys;
  make_value(val, idx, write_gen++, opt.value_size);
  return shm_put(store, keys_arr + idx * opt.key_size, opt.key_size, val,
                 opt.value_size, 0, NULL);
}

static void paced_writer(double rate, int w, struct wstats *ws) {
  uint8_t *val = malloc(opt.value_size);
  uint64_t rng = mix64(write_gen ^ 0xABCDEF), n = 0;
  double c0 = cpu_seconds();
  uint64_t t0 = now_ns(), el = 0;
  memset(ws, 0, sizeof *ws);
  while (!__atomic_load_n(&shared->done[w], __ATOMIC_ACQUIRE)) {
    el = now_ns() - t0;
    uint64_t due = (uint64_t)(rate * (double)el / 1e9);
    if (n < due) {
      uint64_t burst = due - n > 256 ? 256 : due - n;
      for (uint64_t i = 0; i < burst; i++, n++) {
        int rc = put_random(&rng, val);
        if (rc) {
          ws->err = rc;
          fprintf(stderr, "shoal-bench: shm_put under reads: %s (%s)\n",
                  shoal_strerror(rc), shm_store_lasterr(store));
          goto out;
        }
      }
    } else {
      /* Ahead of the pace: sleep at least PACE_TICK_NS. A sleep costs
       * ~20 us of CPU in a KVM guest (timer programming exits), so sleeping
       * per put (5 us apart at 200K/s) would keep the core busy anyway;
       * writes therefore come in bursts of rate * tick puts. */
      uint64_t next = (uint64_t)((double)(n + 1) * 1e9 / rate);
      uint64_t wait = next > el ? next - el : 0;
      if (wait < PACE_TICK_NS) wait = PACE_TICK_NS;
      struct timespec ts = {(time_t)(wait / 1000000000u),
                            (long)(wait % 1000000000u)};
      nanosleep(&ts, NULL);
    }
  }
out:
  ws->elapsed_ns = now_ns() - t0;
  ws->puts = n;
  ws->cpu_s = cpu_seconds() - c0;
  free(val);
  /* If the writer failed, the reader is still running: let it finish. */
}

/* Unpaced single-put rate (each put one commit), no readers running. */
static double put_rate(void) {
  uint8_t *val = malloc(opt.value_size);
  uint64_t rng = mix64(write_gen ^ 0x1234567), n = 0;
  uint64_t t0 = now_ns(), dur = (uint64_t)(opt.seconds * 1e9), t;
  do {
    for (int i = 0; i < 100; i++, n++) {
      int rc = put_random(&rng, val);
      if (rc) fail_store("shm_put", rc);
    }
  } while ((t = now_ns()) - t0 < dur);
  free(val);
  return (double)n * 1e9 / (double)(t - t0);
}

/* ------------------------------------------------------------- output --- */

static void cpu_model(char *buf, size_t cap) {
  snprintf(buf, cap, "unknown");
  FILE *f = fopen("/proc/cpuinfo", "r");
  if (!f) return;
  char line[512];
  while (fgets(line, sizeof line, f)) {
    if (!strncmp(line, "model name", 10)) {
      char *p = strchr(line, ':');
      if (!p) break;
      p++;
      while (*p == ' ' || *p == '\t')
        p++;
      p[strcspn(p, "\n")] = 0;
      snprintf(buf, cap, "%s", p);
      break;
    }
  }
  fclose(f);
}

static void thp_shmem(char *buf, size_t cap) {
  snprintf(buf, cap, "unknown");
  FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/shmem_enabled", "r");
  if (!f) return;
  char line[256];
  if (fgets(line, sizeof line, f)) {
    char *a = strchr(line, '['), *b = a ? strchr(a, ']') : NULL;
    if (a && b) {
      *b = 0;
      snprintf(buf, cap, "%s", a + 1);
    }
  }
  fclose(f);
}

/* 1-minute load average: other processes on a 2-core machine skew every
 * figure, so the report says how busy the machine was. */
static double loadavg1(void) {
  double l = NAN;
  FILE *f = fopen("/proc/loadavg", "r");
  if (f) {
    if (fscanf(f, "%lf", &l) != 1) l = NAN;
    fclose(f);
  }
  return l;
}

static int json_first = 1;

static void jkey(const char *k) {
  printf("%s\n  \"%s\": ", json_first ? "{" : ",", k);
  json_first = 0;
}
static void jnum(const char *k, double v) {
  jkey(k);
  if (!isfinite(v))
    printf("null");
  else if (v == floor(v) && fabs(v) < 9e15)
    printf("%.0f", v);
  else
    printf("%.4f", v);
}
static void jstr(const char *k, const char *s) {
  jkey(k);
  putchar('"');
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\')
      printf("\\%c", ch);
    else if (ch < 0x20)
      printf("\\u%04x", ch);
    else
      putchar(ch);
  }
  putchar('"');
}
static void jbool(const char *k, int b) {
  jkey(k);
  printf(b ? "true" : "false");
}
static void jfig(const char *k, const struct fig *f) {
  jkey(k);
  putchar('[');
  for (unsigned i = 0; i < f->n; i++) {
    if (!isfinite(f->v[i]))
      printf("%snull", i ? ", " : "");
    else
      printf("%s%.1f", i ? ", " : "", f->v[i]);
  }
  putchar(']');
}

static const char *si(double v, char *buf, size_t cap) {
  if (!isfinite(v))
    snprintf(buf, cap, "n/a");
  else if (v >= 1e9)
    snprintf(buf, cap, "%.2fG", v / 1e9);
  else if (v >= 1e6)
    snprintf(buf, cap, "%.2fM", v / 1e6);
  else if (v >= 1e3)
    snprintf(buf, cap, "%.1fK", v / 1e3);
  else
    snprintf(buf, cap, "%.0f", v);
  return buf;
}

static void hrate(const char *what, const struct fig *f, const char *unit) {
  char a[32], b[32], c[32];
  fprintf(hout, "  %-34s %9s %-6s (min %s, max %s; others <= %.2f cores)\n",
          what, si(fig_med(f), a, sizeof a), unit, si(fig_min(f), b, sizeof b),
          si(fig_max(f), c, sizeof c), fig_other_max(f));
}
static void hlat(const char *what, const struct fig *p50, const struct fig *p99,
                 const struct fig *p999) {
  fprintf(hout,
          "  %-34s p50 %5.0f ns  p99 %5.0f ns  p99.9 %5.0f ns  (p99 min %.0f, "
          "max %.0f; "
          "others <= %.2f cores)\n",
          what, fig_med(p50), fig_med(p99), fig_med(p999), fig_min(p99),
          fig_max(p99), fig_other_max(p99));
}

struct target {
  const char *name;
  const char *key;
  double value;
  double goal;
  int at_least; /* 1: value >= goal; 0: value <= goal */
  const char *unit;
};

static int target_met(const struct target *t) {
  return isfinite(t->value) &&
         (t->at_least ? t->value >= t->goal : t->value <= t->goal);
}

static void target_row(const struct target *t) {
  char how[128];
  int met = target_met(t);
  if (!isfinite(t->value))
    snprintf(how, sizeof how, "not measured");
  else if (met)
    snprintf(how, sizeof how, "by %.4g%s (%.1f%% of target)",
             fabs(t->value - t->goal), t->unit, 100.0 * t->value / t->goal);
  else if (t->at_least)
    snprintf(how, sizeof how, "short by %.4g%s (%.1f%% of target)",
             t->goal - t->value, t->unit, 100.0 * t->value / t->goal);
  else
    snprintf(how, sizeof how, "over by %.4g%s (%.1f%% of target)",
             t->value - t->goal, t->unit, 100.0 * t->value / t->goal);
  char val[32];
  if (isfinite(t->value))
    snprintf(val, sizeof val, "%.3f%s", t->value, t->unit);
  else
    snprintf(val, sizeof val, "n/a");
  fprintf(hout, "  %-36s %s %8.2f%-3s %13s  %-6s %s\n", t->name,
          t->at_least ? ">=" : "<=", t->goal, t->unit, val,
          !isfinite(t->value) ? "-"
          : met               ? "MET"
                              : "MISSED",
          how);
}

/* The size classes holding most bytes, e.g. "144 B x 812K". */
static void print_classes(const char *what, const shm_stats *st) {
  int idx[SHM_NCLASSES];
  unsigned n = st->nclasses < SHM_NCLASSES ? st->nclasses : SHM_NCLASSES;
  for (unsigned i = 0; i < n; i++)
    idx[i] = (int)i;
  for (unsigned i = 0; i < n; i++) /* selection sort by bytes, n <= 48 */
    for (unsigned j = i + 1; j < n; j++)
      if (st->class_used[idx[j]] * st->class_size[idx[j]] >
          st->class_used[idx[i]] * st->class_size[idx[i]]) {
        int t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
      }
  fprintf(hout, "  %s:", what);
  for (unsigned i = 0; i < n && i < 5 && st->class_used[idx[i]]; i++) {
    char b[32];
    fprintf(hout, " %u B x %s;", st->class_size[idx[i]],
            si((double)st->class_used[idx[i]], b, sizeof b));
  }
  fprintf(hout, " extents %" PRIu64 " pages\n", st->extents_used);
}

/* --------------------------------------------------------------- main --- */

static void usage(FILE *f) {
  fprintf(
      f,
      "usage: shoal-bench [options]\n"
      "  --keys N          keys to load (default 1000000)\n"
      "  --key-size B      key bytes, 8..511 (default 16)\n"
      "  --value-size B    value bytes, >= 1 (default 64)\n"
      "  --seconds S       duration of each timed run (default 2)\n"
      "  --repeats N       runs per figure, median reported (default 3)\n"
      "  --batch N         keys per shm_get_many call (default 32)\n"
      "  --write-rate R    paced puts/s for the reads-under-writes run "
      "(default 200000)\n"
      "  --samples N       latency samples per run, >= 1000 (default 200000)\n"
      "  --load put|batch  load with single shm_put or shm_batch of 1000 "
      "(default batch)\n"
      "  --size BYTES      store size (default: computed from the keys)\n"
      "  --dir DIR         directory of the store and LMDB files\n"
      "                    (default $SHOAL_SHM_DIR or /dev/shm)\n"
      "  --seed N          key/permutation seed\n"
      "  --pin             pin reader i to cpu i (default: pin nothing)\n"
      "  --max-other-load C  redo a run when other processes used more than C\n"
      "                    cores meanwhile (default 0.25)\n"
      "  --retries N       redo a busy run at most N times (default 2)\n"
      "  --only LIST       run only these groups: "
      "reads,scaling,latency,writes,puts\n"
      "                    (scaling and writes imply reads)\n"
      "  --json            one JSON object on stdout, human text on stderr\n");
}

static double parse_num(const char *s, const char *what) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || !(v >= 0)) die("bad %s: %s", what, s);
  return v;
}

int main(int argc, char **argv) {
  enum {
    O_KEYS = 256,
    O_KS,
    O_VS,
    O_SECS,
    O_REP,
    O_BATCH,
    O_WR,
    O_SAMP,
    O_LOAD,
    O_SIZE,
    O_DIR,
    O_SEED,
    O_PIN,
    O_JSON,
    O_HELP,
    O_MAXO,
    O_RETR,
    O_ONLY
  };
  static const struct option lopts[] = {{"keys", 1, 0, O_KEYS},
                                        {"key-size", 1, 0, O_KS},
                                        {"value-size", 1, 0, O_VS},
                                        {"seconds", 1, 0, O_SECS},
                                        {"repeats", 1, 0, O_REP},
                                        {"batch", 1, 0, O_BATCH},
                                        {"write-rate", 1, 0, O_WR},
                                        {"samples", 1, 0, O_SAMP},
                                        {"load", 1, 0, O_LOAD},
                                        {"size", 1, 0, O_SIZE},
                                        {"dir", 1, 0, O_DIR},
                                        {"seed", 1, 0, O_SEED},
                                        {"pin", 0, 0, O_PIN},
                                        {"json", 0, 0, O_JSON},
                                        {"help", 0, 0, O_HELP},
                                        {"max-other-load", 1, 0, O_MAXO},
                                        {"retries", 1, 0, O_RETR},
                                        {"only", 1, 0, O_ONLY},
                                        {0, 0, 0, 0}};
  int o;
  while ((o = getopt_long(argc, argv, "h", lopts, NULL)) != -1) {
    switch (o) {
    case O_KEYS:
      opt.keys = (uint64_t)parse_num(optarg, "--keys");
      break;
    case O_KS:
      opt.key_size = (size_t)parse_num(optarg, "--key-size");
      break;
    case O_VS:
      opt.value_size = (size_t)parse_num(optarg, "--value-size");
      break;
    case O_SECS:
      opt.seconds = parse_num(optarg, "--seconds");
      break;
    case O_REP:
      opt.repeats = (unsigned)parse_num(optarg, "--repeats");
      break;
    case O_BATCH:
      opt.batch = (unsigned)parse_num(optarg, "--batch");
      break;
    case O_WR:
      opt.write_rate = parse_num(optarg, "--write-rate");
      break;
    case O_SAMP:
      opt.samples = (uint64_t)parse_num(optarg, "--samples");
      break;
    case O_LOAD:
      if (!strcmp(optarg, "put"))
        opt.load_single = 1;
      else if (!strcmp(optarg, "batch"))
        opt.load_single = 0;
      else
        die("--load takes put or batch");
      break;
    case O_SIZE:
      opt.size = (uint64_t)parse_num(optarg, "--size");
      break;
    case O_DIR:
      opt.dir = optarg;
      break;
    case O_SEED:
      opt.seed = (uint64_t)parse_num(optarg, "--seed");
      break;
    case O_PIN:
      opt.pin = 1;
      break;
    case O_ONLY:
      opt.only = parse_groups(optarg);
      break;
    case O_MAXO:
      opt.max_other = parse_num(optarg, "--max-other-load");
      break;
    case O_RETR:
      opt.retries = (unsigned)parse_num(optarg, "--retries");
      break;
    case O_JSON:
      opt.json = 1;
      break;
    case O_HELP:
    case 'h':
      usage(stdout);
      return 0;
    default:
      usage(stderr);
      return 2;
    }
  }
  if (optind < argc) {
    usage(stderr);
    return 2;
  }
  if (opt.keys < 100 || opt.keys > 0xFFFFFFFFull)
    die("--keys must be in 100..2^32-1");
  if (opt.key_size < 8 || opt.key_size > 511)
    die("--key-size must be 8..511 (unique keys need 8 bytes; LMDB allows "
        "511)");
  if (opt.value_size < 1 || opt.value_size > SHM_VALUE_MAX)
    die("bad --value-size");
  if (!(opt.seconds > 0)) die("--seconds must be > 0");
  if (opt.repeats < 1 || opt.repeats > MAX_REPEATS)
    die("--repeats must be 1..%d", MAX_REPEATS);
  if (opt.batch < 1 || opt.batch > 4096) die("--batch must be 1..4096");
  if (!(opt.write_rate > 0)) die("--write-rate must be > 0");
  if (opt.samples < 1000) die("--samples must be >= 1000");
  hout = opt.json ? stderr : stdout;

  const char *d = opt.dir ? opt.dir : getenv("SHOAL_SHM_DIR");
  snprintf(shm_dir, sizeof shm_dir, "%s", d && *d ? d : "/dev/shm");
  parent_pid = getpid();
  snprintf(store_name, sizeof store_name, "bench-%ld", (long)parent_pid);
  atexit(cleanup);
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  signal(SIGHUP, on_signal);
  prctl(PR_SET_TIMERSLACK, 1000UL); /* paced writer sleeps of a few us */

  char cpu[256], thp[64];
  cpu_model(cpu, sizeof cpu);
  thp_shmem(thp, sizeof thp);
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  cpu_set_t aff;
  long avail = cores;
  if (!sched_getaffinity(0, sizeof aff, &aff)) avail = CPU_COUNT(&aff);

  fprintf(hout,
          "shoal-bench: %" PRIu64 " keys, %zu-byte keys, %zu-byte values; "
          "%u x %.2f s per figure; cpu %s, %ld cores (%ld usable); store "
          "%s/shoal.%s\n",
          opt.keys, opt.key_size, opt.value_size, opt.repeats, opt.seconds, cpu,
          cores, avail, shm_dir, store_name);
  fflush(hout);

  double load_before = loadavg1();
  build_keys();
  make_lmdb_dir();
  start_workers(); /* before the store exists: workers inherit no writer state
                    */
  if (opt.pin) pin_self(1 % (int)(cores > 0 ? cores : 1));

  double load_s = load_shoal();
  /* Memory figures at rest: no reader is in a section yet, so reclamation
   * frees what the load retired (the hash indexes outgrown on the way). */
  shm_stats st_load, st0;
  shm_store_stats(store, &st_load);
  size_t reclaimed_load = shm_reclaim(store);
  shm_store_stats(store, &st0);
  double lmdb_load_s = load_lmdb();
  fprintf(hout,
          "  loaded: shoal %.2f s (%s, %.0f keys/s), LMDB %.2f s (one txn, "
          "%.0f keys/s)\n",
          load_s, opt.load_single ? "shm_put" : "shm_batch x1000",
          (double)opt.keys / load_s, lmdb_load_s,
          (double)opt.keys / lmdb_load_s);
  fflush(hout);

  struct wcmd c;
  struct wres r;
  memset(&c, 0, sizeof c);
  c.kind = W_INIT;
  uint64_t tw = now_ns();
  for (int w = 0; w < NWORKERS; w++)
    send_cmd(w, &c);
  for (int w = 0; w < NWORKERS; w++)
    get_res(w, &r);
  fprintf(hout,
          "  readers warmed (one pass over all keys in both stores): %.2f s\n",
          (double)(now_ns() - tw) / 1e9);
  if (total_errors)
    die("%" PRIu64 " gets failed or returned a wrong value after loading "
        "(first error %d: %s)",
        total_errors, first_error,
        first_error < -1 ? shoal_strerror(first_error) : "");

  struct fig f_get = {0}, f_get_op = {0}, f_many = {0}, f_lmdb = {0};
  struct fig f_get2 = {0}, f_lmdb2 = {0};
  struct fig l50 = {0}, l99 = {0}, l999 = {0}, s50 = {0}, s99 = {0}, s999 = {0};
  struct fig m50 = {0}, m99 = {0}, m999 = {0};
  struct fig f_uw = {0}, f_wr = {0}, f_wcpu = {0}, f_put = {0}, f_after = {0};
  struct fig f_uw_idle = {0}, f_uw_same = {0};

  /* 1. one reader: shoal get, get per-op sections, get_many, LMDB; the
   *    repeats are interleaved so drift hits all four alike. */
  for (unsigned rep = 0; (opt.only & G_READS) && rep < opt.repeats; rep++) {
    fig_add(&f_get, run_rate(W_GET, 1, rep, SECTION_GETS, 0));
    fig_add(&f_get_op, run_rate(W_GET, 1, rep, 1, 0));
    fig_add(&f_many, run_rate(W_GET_MANY, 1, rep, 0, opt.batch));
    fig_add(&f_lmdb, run_rate(W_LMDB_GET, 1, rep, SECTION_GETS, 0));
  }
  /* 2. two readers at once. */
  for (unsigned rep = 0; (opt.only & G_SCALING) && rep < opt.repeats; rep++) {
    fig_add(&f_get2, run_rate(W_GET, 2, rep, SECTION_GETS, 0));
    fig_add(&f_lmdb2, run_rate(W_LMDB_GET, 2, rep, SECTION_GETS, 0));
  }
  /* 3. latency. */
  uint64_t tov = timer_overhead_ns();
  for (unsigned rep = 0; (opt.only & G_LATENCY) && rep < opt.repeats; rep++) {
    run_lat(W_LAT, 0, rep, tov, &r);
    fig_add(&l50, r.p50);
    fig_add(&l99, r.p99);
    fig_add(&l999, r.p999);
    run_lat(W_LAT, 1, rep, tov, &r);
    fig_add(&s50, r.p50);
    fig_add(&s99, r.p99);
    fig_add(&s999, r.p999);
    run_lat(W_LMDB_LAT, 0, rep, tov, &r);
    fig_add(&m50, r.p50);
    fig_add(&m99, r.p99);
    fig_add(&m999, r.p999);
  }
  shm_stats st_pre_writes;
  shm_store_stats(store, &st_pre_writes);

  /* 4. one reader while this process writes at --write-rate. The writes
   *    change the store itself (an overwritten key's value no longer sits in
   *    its entry), so idle runs before, between and after the writer runs
   *    give a same-state baseline: run i is compared with the mean of the
   *    idle runs on either side of it. */
  int write_err = 0;
  double idle_prev = NAN;
  if (opt.only & G_WRITES) {
    idle_prev = run_rate(W_GET, 1, 250, SECTION_GETS, 0);
    fig_add(&f_uw_idle, idle_prev);
  }
  for (unsigned rep = 0; (opt.only & G_WRITES) && rep < opt.repeats; rep++) {
    memset(&c, 0, sizeof c);
    c.kind = W_GET;
    c.seconds = opt.seconds;
    c.per_section = SECTION_GETS;
    struct wstats ws;
    for (unsigned attempt = 0;; attempt++) {
      struct sysprobe sp;
      sys_begin(&sp);
      c.start = start_pos(rep + 200 + attempt * 1000, 0);
      send_cmd(0, &c);
      paced_writer(opt.write_rate, 0, &ws);
      get_res(0, &r);
      sys_end(&sp, r.cpu_s);
      if (ws.err || quiet_enough(attempt)) break;
    }
    if (ws.err) write_err = ws.err;
    double under = rate_of(&r), other_under = last_other;
    double idle_next = run_rate(W_GET, 1, rep + 260, SECTION_GETS, 0);
    fig_add(&f_uw_idle, idle_next);
    last_other = other_under;
    fig_add(&f_uw_same, under / ((idle_prev + idle_next) / 2));
    idle_prev = idle_next;
    fig_add(&f_uw, under);
    double wr =
        ws.elapsed_ns ? (double)ws.puts * 1e9 / (double)ws.elapsed_ns : 0;
    fig_add(&f_wr, wr);
    fig_add(&f_wcpu,
            ws.elapsed_ns ? ws.cpu_s * 1e9 / (double)ws.elapsed_ns : 0);
  }
  shm_stats st_post_writes;
  shm_store_stats(store, &st_post_writes);
  size_t reclaimed_now = shm_reclaim(store);
  shm_stats st_reclaimed;
  shm_store_stats(store, &st_reclaimed);

  /* 5. unpaced single-put rate, no readers. */
  for (unsigned rep = 0; (opt.only & G_PUTS) && rep < opt.repeats; rep++) {
    double pr;
    for (unsigned attempt = 0;; attempt++) {
      struct sysprobe sp;
      sys_begin(&sp);
      pr = put_rate();
      sys_end(&sp, 0);
      if (quiet_enough(attempt)) break;
    }
    fig_add(&f_put, pr);
  }
  /* 6. one reader again, now that most values were overwritten (records no
   *    longer embedded in their entries). */
  for (unsigned rep = 0; (opt.only & G_PUTS) && rep < opt.repeats; rep++)
    fig_add(&f_after, run_rate(W_GET, 1, rep + 300, SECTION_GETS, 0));
  shm_stats st_end;
  shm_store_stats(store, &st_end);

  /* Stop the workers. */
  memset(&c, 0, sizeof c);
  c.kind = W_EXIT;
  for (int w = 0; w < NWORKERS; w++) {
    send_cmd(w, &c);
    int wst;
    waitpid(worker_pid[w], &wst, 0);
    worker_pid[w] = 0;
  }

  double load_after = loadavg1();

  /* Derived figures. */
  double get = fig_med(&f_get), many = fig_med(&f_many), lm = fig_med(&f_lmdb);
  double ratio_get = get / lm, ratio_many = many / lm;
  /* The repeats of the four one-reader runs are interleaved, so the ratio
   * within each repeat cancels slow drift of the machine; its median is a
   * second opinion next to the ratio of medians the targets use. */
  struct fig f_rg = {0}, f_rm = {0};
  for (unsigned i = 0; i < f_get.n && i < f_lmdb.n && i < f_many.n; i++) {
    fig_add(&f_rg, f_get.v[i] / f_lmdb.v[i]);
    fig_add(&f_rm, f_many.v[i] / f_lmdb.v[i]);
  }
  double scaling = fig_med(&f_get2) / get, lscaling = fig_med(&f_lmdb2) / lm;
  double uw_ratio = fig_med(&f_uw) / get;
  double wr_ach = fig_med(&f_wr);
  int pace_met = wr_ach >= 0.95 * opt.write_rate && !write_err;
  double kv = (double)(opt.key_size + opt.value_size);
  double overhead = (double)st0.heap_used / (double)opt.keys - kv;
  double overhead_unreclaimed =
      (double)st_load.heap_used / (double)opt.keys - kv;
  double index_bpk = (double)st0.index_capacity * 8.0 / (double)opt.keys;
  double lmdb_overhead = (double)lmdb_bytes / (double)opt.keys - kv;

  struct target targets[] = {
      {"single get vs LMDB", "get_vs_lmdb", ratio_get, T_GET_VS_LMDB, 1, "x"},
      {"get_many vs LMDB (per key)", "get_many_vs_lmdb", ratio_many,
       T_GET_MANY_VS_LMDB, 1, "x"},
      {"get p99 latency", "get_p99", fig_med(&l99), T_P99_NS, 0, "ns"},
      {"two readers vs one", "scaling_2_readers", scaling, T_SCALING, 1, "x"},
      {"reads under writes vs idle", "reads_under_writes", uw_ratio,
       T_UNDER_WRITES, 1, "x"},
      {"overhead per key", "overhead_bytes_per_key", overhead, T_OVERHEAD, 0,
       "B"},
  };
  enum { NT = sizeof targets / sizeof targets[0] };

  /* Human report. */
  unsigned g = opt.only;
  if (g & G_READS) {
    fprintf(hout,
            "\nreads (1 reader process, random keys, all present; median of %u "
            "x %.2f s)\n",
            opt.repeats, opt.seconds);
    hrate("shm_get, section per 100 gets", &f_get, "ops/s");
    hrate("shm_get, section per get", &f_get_op, "ops/s");
    char lbl[64];
    snprintf(lbl, sizeof lbl, "shm_get_many x%u, sect. >=100 keys", opt.batch);
    hrate(lbl, &f_many, "keys/s");
    hrate("LMDB mdb_get, txn renewed per 100", &f_lmdb, "ops/s");
    fprintf(hout,
            "  ratio get / LMDB %.2fx, get_many / LMDB %.2fx (median of the "
            "per-repeat ratios:\n  %.2fx, %.2fx)\n",
            ratio_get, ratio_many, fig_med(&f_rg), fig_med(&f_rm));
  }
  if (g & G_SCALING) {
    fprintf(hout, "\nscaling (2 reader processes at once, aggregate)\n");
    hrate("shoal", &f_get2, "ops/s");
    hrate("LMDB", &f_lmdb2, "ops/s");
    fprintf(hout, "  shoal %.2fx one reader, LMDB %.2fx\n", scaling, lscaling);
  }
  if (g & G_LATENCY) {
    fprintf(hout,
            "\nlatency (%" PRIu64 " samples per run; timer overhead %" PRIu64
            " ns subtracted)\n",
            opt.samples, tov);
    hlat("shm_get alone, in a 100-get section", &l50, &l99, &l999);
    hlat("begin + shm_get + end", &s50, &s99, &s999);
    hlat("mdb_get alone, in a 100-get txn", &m50, &m99, &m999);
  }
  if (g & G_WRITES) {
    fprintf(hout,
            "\nreads under writes (writer: this process, shm_put per commit, "
            "paced to %.0f/s)\n",
            opt.write_rate);
    hrate("reader shm_get", &f_uw, "ops/s");
    hrate("writes achieved", &f_wr, "puts/s");
    hrate("idle runs between the writer runs", &f_uw_idle, "ops/s");
    fprintf(hout,
            "  ratio %.2fx the idle rate of the fresh store; %.2fx the idle "
            "rate of the same\n  store state (idle runs around each writer "
            "run); writer cpu %.0f%% of a core%s\n",
            uw_ratio, fig_med(&f_uw_same), 100 * fig_med(&f_wcpu),
            pace_met ? ""
                     : "; WRITER DID NOT REACH THE PACE (ratio is optimistic)");
  }
  fprintf(hout, "\nwrites\n");
  fprintf(hout, "  load: shm_%s %.0f keys/s, LMDB %.0f keys/s (one txn)\n",
          opt.load_single ? "put" : "batch x1000", (double)opt.keys / load_s,
          (double)opt.keys / lmdb_load_s);
  if (g & G_PUTS) {
    hrate("shm_put, no readers (1 commit each)", &f_put, "puts/s");
    hrate("shm_get after the overwrites", &f_after, "ops/s");
  }
  fprintf(hout, "\nmemory (after load and shm_reclaim)\n");
  fprintf(hout,
          "  heap_used %" PRIu64
          " B = %.1f B/key (key+value %.0f): overhead %.1f B/key; "
          "index %" PRIu64 " slots = %.1f B/key; LMDB %.1f B/key overhead\n",
          st0.heap_used, (double)st0.heap_used / (double)opt.keys, kv, overhead,
          st0.index_capacity, index_bpk, lmdb_overhead);
  fprintf(
      hout,
      "  right after the load: heap_used %.1f B/key (overhead %.1f), %" PRIu64
      " retired blocks (%" PRIu64 " B) that shm_reclaim freed (%zu)\n",
      (double)st_load.heap_used / (double)opt.keys, overhead_unreclaimed,
      st_load.retired, st_load.retired_bytes, reclaimed_load);
  print_classes("size classes after load", &st0);
  if (g & (G_WRITES | G_PUTS)) print_classes("size classes at end", &st_end);
  if (g & (G_WRITES | G_PUTS))
    fprintf(hout,
            "  after writes: heap_used %.1f B/key, retired %" PRIu64
            " blocks (%" PRIu64 " B), records %" PRIu64
            "; shm_reclaim freed %zu -> heap_used %.1f B/key; "
            "at end heap_used %.1f B/key, retired %" PRIu64 "\n",
            (double)st_post_writes.heap_used / (double)opt.keys,
            st_post_writes.retired, st_post_writes.retired_bytes,
            st_post_writes.records, reclaimed_now,
            (double)st_reclaimed.heap_used / (double)opt.keys,
            (double)st_end.heap_used / (double)opt.keys, st_end.retired);
  fprintf(hout,
          "\nmachine: load average (1 min) %.2f before, %.2f after (the bench "
          "adds up "
          "to 2); other processes used up to %.2f cores during a kept run "
          "(limit %.2f, %u runs redone), steal up to %.2f\n",
          load_before, load_after, max_other_seen, opt.max_other, runs_redone,
          steal_seen);
  if (total_errors)
    fprintf(hout,
            "\nERRORS: %" PRIu64
            " gets failed or returned wrong lengths (first: %d %s)\n",
            total_errors, first_error,
            first_error < -1 ? shoal_strerror(first_error) : "");

  fprintf(hout, "\ntargets (issue 2)\n  %-36s %-13s %-13s  %s\n", "", "target",
          "measured", "verdict");
  for (int i = 0; i < NT; i++)
    target_row(&targets[i]);
  if ((g & G_WRITES) && !pace_met)
    fprintf(hout, "  note: the writer reached %.0f of %.0f puts/s\n", wr_ach,
            opt.write_rate);
  fflush(hout);

  /* JSON. */
  if (opt.json) {
    jnum("keys", (double)opt.keys);
    jnum("key_size", (double)opt.key_size);
    jnum("value_size", (double)opt.value_size);
    jnum("seconds", opt.seconds);
    jnum("repeats", opt.repeats);
    jnum("batch", opt.batch);
    jstr("cpu_model", cpu);
    jnum("cores", (double)cores);
    jnum("cores_usable", (double)avail);
    jstr("shmem_thp", thp);
    jbool("pinned", opt.pin);
    jnum("loadavg_before", load_before);
    jnum("loadavg_after", load_after);
    jnum("other_load_cores_max", max_other_seen);
    jnum("max_other_load", opt.max_other);
    jnum("runs_redone_busy", runs_redone);
    jnum("steal_max", steal_seen);
    jstr("load_method", opt.load_single ? "shm_put" : "shm_batch x1000");
    jnum("load_seconds", load_s);
    jnum("lmdb_load_seconds", lmdb_load_s);
    jnum("get_ops_per_s", get);
    jnum("get_section_per_op_ops_per_s", fig_med(&f_get_op));
    jnum("get_many_keys_per_s", many);
    jnum("lmdb_get_ops_per_s", lm);
    jnum("lmdb_get_many_keys_per_s", lm);
    jnum("ratio_get_vs_lmdb", ratio_get);
    jnum("ratio_get_many_vs_lmdb", ratio_many);
    jnum("ratio_get_vs_lmdb_paired", fig_med(&f_rg));
    jnum("ratio_get_many_vs_lmdb_paired", fig_med(&f_rm));
    jstr("get_latency_mode",
         "shm_get alone (plus value touch) inside a section of 100 gets");
    jnum("get_p50_ns", fig_med(&l50));
    jnum("get_p99_ns", fig_med(&l99));
    jnum("get_p999_ns", fig_med(&l999));
    jnum("get_section_p50_ns", fig_med(&s50));
    jnum("get_section_p99_ns", fig_med(&s99));
    jnum("lmdb_get_p50_ns", fig_med(&m50));
    jnum("lmdb_get_p99_ns", fig_med(&m99));
    jnum("timer_overhead_ns", (double)tov);
    jnum("latency_samples", (double)opt.samples);
    jnum("get2_ops_per_s", fig_med(&f_get2));
    jnum("scaling_2_readers", scaling);
    jnum("lmdb_get2_ops_per_s", fig_med(&f_lmdb2));
    jnum("lmdb_scaling_2_readers", lscaling);
    jnum("write_rate_target", opt.write_rate);
    jnum("writes_per_s_achieved", wr_ach);
    jbool("write_pace_met", pace_met);
    jnum("writer_cpu_fraction", fig_med(&f_wcpu));
    jnum("get_under_writes_ops_per_s", fig_med(&f_uw));
    jnum("get_idle_between_writes_ops_per_s", fig_med(&f_uw_idle));
    jnum("ratio_reads_under_writes_same_state", fig_med(&f_uw_same));
    jnum("ratio_reads_under_writes", uw_ratio);
    jnum("put_ops_per_s", fig_med(&f_put));
    jnum("get_after_writes_ops_per_s", fig_med(&f_after));
    jnum("overhead_bytes_per_key", overhead);
    jnum("overhead_bytes_per_key_before_reclaim", overhead_unreclaimed);
    jnum("index_bytes_per_key", index_bpk);
    jnum("heap_used", (double)st0.heap_used);
    jnum("index_capacity", (double)st0.index_capacity);
    jnum("lmdb_bytes", (double)lmdb_bytes);
    jnum("lmdb_overhead_bytes_per_key", lmdb_overhead);
    jnum("heap_used_after_writes", (double)st_post_writes.heap_used);
    jnum("retired_after_writes", (double)st_post_writes.retired);
    jnum("heap_used_end", (double)st_end.heap_used);
    jnum("errors", (double)total_errors);
    jkey("runs");
    json_first = 1; /* the first jfig opens the nested object */
    jfig("get_ops_per_s", &f_get);
    jfig("get_section_per_op_ops_per_s", &f_get_op);
    jfig("get_many_keys_per_s", &f_many);
    jfig("lmdb_get_ops_per_s", &f_lmdb);
    jfig("get2_ops_per_s", &f_get2);
    jfig("lmdb_get2_ops_per_s", &f_lmdb2);
    jfig("get_p99_ns", &l99);
    jfig("get_under_writes_ops_per_s", &f_uw);
    jfig("get_idle_between_writes_ops_per_s", &f_uw_idle);
    jfig("writes_per_s_achieved", &f_wr);
    jfig("put_ops_per_s", &f_put);
    jfig("get_after_writes_ops_per_s", &f_after);
    printf("\n  }");
    json_first = 0;
    jkey("targets");
    printf("{");
    for (int i = 0; i < NT; i++) {
      printf("%s\n    \"%s\": {\"value\": ", i ? "," : "", targets[i].key);
      if (isfinite(targets[i].value))
        printf("%.4f", targets[i].value);
      else
        printf("null");
      printf(", \"target\": %g, \"op\": \"%s\", \"met\": %s}", targets[i].goal,
             targets[i].at_least ? ">=" : "<=",
             target_met(&targets[i]) ? "true" : "false");
    }
    printf("\n  }\n}\n");
    fflush(stdout);
  }

  shm_store_close(store, 1);
  store = NULL;
  cleanup();
  return total_errors ? 1 : 0;
}
