/*
 * shoal-put-bench - put throughput over the broker's socket, side by side
 * with redis-server's SET on a Unix socket, in the same run (issue 3,
 * "Must show" 3).
 *
 * It starts its own shoald and redis-server (persistence off, Unix socket
 * only) in a private directory, then measures, each as the median of
 * --repeat runs:
 *   shoal  put, unpipelined     one request, wait for the reply (p50/p99 too)
 *   shoal  put, pipelined       depth 16 and --depth (64) requests in flight
 *   shoal  put, batched         --batch (100) puts per atomic Batch
 *   redis  SET, unpipelined     redis-benchmark -c 1 -P 1
 *   redis  SET, pipelined       redis-benchmark -c 1 -P 16 and -P --depth
 * Same value size, same number of requests, same random key space
 * ("key:" + 12 digits), one client connection each. Both stores are first
 * loaded with every key of the space, so the measured puts overwrite, as
 * SETs of a store of state do; batched inserts of new keys are measured
 * too (shoal only: they also link the skiplist that serves ordered scans). Both servers and the
 * client share the machine's cores the same way.
 *
 * Targets (issue 3): unpipelined >= 1.0x Redis unpipelined; pipelined >= 2x
 * Redis pipelined at depth 16; batched >= 1M puts/s. The table prints each
 * ratio; --json prints every figure.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shoal/shoal.h"

extern char **environ;

static struct {
  const char *shoald;
  const char *redis_server;
  const char *redis_benchmark;
  long requests;
  long keys;
  int vsize;
  int depth;
  int batch;
  int repeat;
  int json;
  int no_redis;
  const char *shoald_args[16]; /* --shoald-arg, passed on to shoald */
  int nshoald_args;
} opt = {.redis_server = "redis-server",
         .redis_benchmark = "redis-benchmark",
         .requests = 100000,
         .keys = 1000000,
         .vsize = 64,
         .depth = 64,
         .batch = 100,
         .repeat = 3};

static char dir[PATH_MAX];
static pid_t broker_pid, redis_pid;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void cleanup(void) {
  if (broker_pid > 0) {
    kill(broker_pid, SIGTERM);
    waitpid(broker_pid, NULL, 0);
    broker_pid = 0;
  }
  if (redis_pid > 0) {
    kill(redis_pid, SIGTERM);
    waitpid(redis_pid, NULL, 0);
    redis_pid = 0;
  }
  if (dir[0]) {
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "shoal-put-bench: could not remove %s\n", dir);
    dir[0] = 0;
  }
}

#include <stdarg.h>
static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("shoal-put-bench: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  cleanup();
  exit(1);
}

static pid_t spawn(char *const argv[], int quiet) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (quiet) {
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  }
  pid_t pid;
  int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) die("cannot start %s: %s", argv[0], strerror(rc));
  return pid;
}

/* Wait until @path exists (a server's socket), at most 10 s. */
static void wait_socket(const char *path, pid_t pid, const char *what) {
  for (int i = 0; i < 1000; i++) {
    struct stat st;
    if (stat(path, &st) == 0 && S_ISSOCK(st.st_mode)) return;
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      if (pid == broker_pid) broker_pid = 0;
      if (pid == redis_pid) redis_pid = 0;
      die("%s exited before listening on %s (status %#x)", what, path, status);
    }
    usleep(10000);
  }
  die("%s did not create %s within 10 s", what, path);
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static inline uint64_t rnd(void) {
  uint64_t x = rng_state;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return rng_state = x;
}

/* "key:" + 12 digits, as redis-benchmark's key:__rand_int__ with -r. */
static int make_key(char *k) {
  return snprintf(k, 24, "key:%012llu", (unsigned long long)(rnd() % (uint64_t)opt.keys));
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void check(shoal *c, int err, const char *what) {
  if (err) die("%s: %s (%s)", what, shoal_strerror(err), shoal_last_error(c));
}

static char value[1 << 16];

/* Unpipelined: ops/s; per-request latency percentiles (us) in p50, p99. */
static double run_unpipelined(shoal *c, double *p50, double *p99) {
  long n = opt.requests;
  double *lat = malloc((size_t)n * sizeof *lat);
  if (!lat) die("out of memory");
  char k[24];
  double t0 = now_s();
  for (long i = 0; i < n; i++) {
    int kl = make_key(k);
    double a = now_s();
    check(c, shoal_put(c, k, (size_t)kl, value, (size_t)opt.vsize, NULL), "put");
    lat[i] = (now_s() - a) * 1e6;
  }
  double ops = (double)n / (now_s() - t0);
  qsort(lat, (size_t)n, sizeof *lat, cmp_double);
  *p50 = lat[n / 2];
  *p99 = lat[(long)((double)n * 0.99)];
  free(lat);
  return ops;
}

/* Pipelined: keep @depth puts in flight. */
static double run_pipelined(shoal *c, int depth) {
  long n = opt.requests, sent = 0, done = 0;
  char k[24];
  double t0 = now_s();
  while (done < n) {
    while (sent < n && sent - done < depth) {
      int kl = make_key(k);
      check(c, shoal_pipe_put(c, k, (size_t)kl, value, (size_t)opt.vsize, 0), "pipe put");
      sent++;
    }
    uint64_t v;
    check(c, shoal_pipe_recv(c, &v), "pipe recv");
    done++;
  }
  return (double)n / (now_s() - t0);
}

static double run_batched(shoal *c) {
  long n = opt.requests;
  shoal_batch *b;
  check(c, shoal_batch_new(c, &b), "batch new");
  char k[24];
  double t0 = now_s();
  for (long i = 0; i < n;) {
    shoal_batch_reset(b);
    for (int j = 0; j < opt.batch && i < n; j++, i++) {
      int kl = make_key(k);
      check(c, shoal_batch_put(b, k, (size_t)kl, value, (size_t)opt.vsize, 0), "batch put");
    }
    check(c, shoal_batch_commit(c, b, NULL), "batch commit");
  }
  double ops = (double)n / (now_s() - t0);
  shoal_batch_free(b);
  return ops;
}

/* Load keys 0 .. --keys-1 in key order, 1000 per batch: the measured runs
 * then overwrite existing keys, the steady state of a store of state and
 * configuration. (An insert also links the key into the skiplist, a walk of
 * about ten dependent cache misses for a random key among 1M; inserts are
 * measured on their own by run_inserts.) */
static void preload_shoal(shoal *c) {
  shoal_batch *b;
  check(c, shoal_batch_new(c, &b), "batch new");
  char k[24];
  for (long i = 0; i < opt.keys;) {
    shoal_batch_reset(b);
    for (int j = 0; j < 1000 && i < opt.keys; j++, i++) {
      int kl = snprintf(k, sizeof k, "key:%012ld", i);
      check(c, shoal_batch_put(b, k, (size_t)kl, value, (size_t)opt.vsize, 0), "batch put");
    }
    check(c, shoal_batch_commit(c, b, NULL), "preload commit");
  }
  shoal_batch_free(b);
}

/* Batched puts of keys that do not exist yet, in random order. */
static double run_inserts(shoal *c, long round) {
  long n = opt.requests;
  shoal_batch *b;
  check(c, shoal_batch_new(c, &b), "batch new");
  char k[32];
  double t0 = now_s();
  for (long i = 0; i < n;) {
    shoal_batch_reset(b);
    for (int j = 0; j < opt.batch && i < n; j++, i++) {
      int kl = snprintf(k, sizeof k, "new:%ld:%012llu", round,
                        (unsigned long long)(rnd() % 1000000000000ull));
      check(c, shoal_batch_put(b, k, (size_t)kl, value, (size_t)opt.vsize, 0), "batch put");
    }
    check(c, shoal_batch_commit(c, b, NULL), "batch commit");
  }
  double ops = (double)n / (now_s() - t0);
  shoal_batch_free(b);
  return ops;
}

/* The same keys into Redis, through redis-cli --pipe. */
static void preload_redis(const char *sock) {
  char path[PATH_MAX + 32];
  snprintf(path, sizeof path, "%s/preload.resp", dir);
  FILE *f = fopen(path, "w");
  if (!f) die("cannot write %s: %s", path, strerror(errno));
  for (long i = 0; i < opt.keys; i++)
    fprintf(f, "*3\r\n$3\r\nSET\r\n$16\r\nkey:%012ld\r\n$%d\r\n%.*s\r\n", i, opt.vsize,
            opt.vsize, value);
  if (fclose(f) != 0) die("cannot write %s", path);
  char cmd[3 * PATH_MAX];
  snprintf(cmd, sizeof cmd, "redis-cli -s '%s' --pipe < '%s' > /dev/null 2>&1", sock, path);
  if (system(cmd) != 0) die("preloading redis failed: %s", cmd);
  unlink(path);
}

/* redis-benchmark SET at pipeline depth @P: requests/s, and its p50/p99 in
 * microseconds (from --csv: test, rps, avg, min, p50, p95, p99, max; in ms) */
static double run_redis(const char *sock, int P, double *p50, double *p99) {
  char n[32], d[32], r[32], p[32];
  snprintf(n, sizeof n, "%ld", opt.requests);
  snprintf(d, sizeof d, "%d", opt.vsize);
  snprintf(r, sizeof r, "%ld", opt.keys);
  snprintf(p, sizeof p, "%d", P);
  char cmd[PATH_MAX + 256];
  snprintf(cmd, sizeof cmd,
           "'%s' -s '%s' -t set -n %s -d %s -r %s -c 1 -P %s --csv 2>/dev/null",
           opt.redis_benchmark, sock, n, d, r, p);
  FILE *f = popen(cmd, "r");
  if (!f) die("cannot run %s: %s", opt.redis_benchmark, strerror(errno));
  char line[512];
  double rps = 0, a50 = 0, a99 = 0;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, "\"SET\"", 5) != 0) continue;
    double f1 = 0, f2 = 0, f3 = 0, f4 = 0, f5 = 0, f6 = 0;
    if (sscanf(line, "\"SET\",\"%lf\",\"%lf\",\"%lf\",\"%lf\",\"%lf\",\"%lf\"", &f1,
               &f2, &f3, &f4, &f5, &f6) >= 1) {
      rps = f1;
      a50 = f4 * 1000;
      a99 = f6 * 1000;
    }
  }
  int st = pclose(f);
  if (rps <= 0) die("redis-benchmark printed no SET figure (status %#x): %s", st, cmd);
  if (p50) *p50 = a50;
  if (p99) *p99 = a99;
  return rps;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: shoal-put-bench --shoald PATH [options]\n"
          "\n"
          "Put throughput over shoald's socket beside redis-server's SET on a Unix\n"
          "socket, started by the bench, same value size and key space.\n"
          "\n"
          "  --shoald PATH         the broker binary (required)\n"
          "  --requests N          requests per run (default 100000)\n"
          "  --keys N              key space (default 1000000)\n"
          "  --value-size B        value bytes (default 64)\n"
          "  --depth D             pipeline depth (default 64; depth 16 runs too)\n"
          "  --batch B             puts per batch (default 100)\n"
          "  --repeat R            runs per figure, median taken (default 3)\n"
          "  --redis-server PATH   (default redis-server)\n"
          "  --redis-benchmark PATH (default redis-benchmark)\n"
          "  --no-redis            shoal only\n"
          "  --shoald-arg ARG      pass ARG to shoald (repeatable), e.g. --shoald-arg=--spin-us=0\n"
          "  --json                one JSON object on stdout\n");
}

int main(int argc, char **argv) {
  static const struct option lo[] = {
      {"shoald", required_argument, 0, 'S'},
      {"requests", required_argument, 0, 'n'},
      {"keys", required_argument, 0, 'k'},
      {"value-size", required_argument, 0, 'd'},
      {"depth", required_argument, 0, 'P'},
      {"batch", required_argument, 0, 'b'},
      {"repeat", required_argument, 0, 'r'},
      {"redis-server", required_argument, 0, 'R'},
      {"redis-benchmark", required_argument, 0, 'B'},
      {"no-redis", no_argument, 0, 'x'},
      {"shoald-arg", required_argument, 0, 'A'},
      {"json", no_argument, 0, 'j'},
      {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    switch (ch) {
    case 'S': opt.shoald = optarg; break;
    case 'n': opt.requests = atol(optarg); break;
    case 'k': opt.keys = atol(optarg); break;
    case 'd': opt.vsize = atoi(optarg); break;
    case 'P': opt.depth = atoi(optarg); break;
    case 'b': opt.batch = atoi(optarg); break;
    case 'r': opt.repeat = atoi(optarg); break;
    case 'R': opt.redis_server = optarg; break;
    case 'B': opt.redis_benchmark = optarg; break;
    case 'x': opt.no_redis = 1; break;
    case 'A':
      if (opt.nshoald_args == 15) die("too many --shoald-arg");
      opt.shoald_args[opt.nshoald_args++] = optarg;
      break;
    case 'j': opt.json = 1; break;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return 2;
    }
  }
  if (!opt.shoald || opt.requests < 100 || opt.keys < 1 || opt.vsize < 1 ||
      opt.vsize > (int)sizeof value || opt.depth < 1 || opt.batch < 1 ||
      opt.repeat < 1 || opt.repeat > 99) {
    usage(stderr);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  memset(value, 'v', sizeof value);

  const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  snprintf(dir, sizeof dir, "%s/shoal-putbench-XXXXXX", base);
  if (!mkdtemp(dir)) {
    dir[0] = 0;
    die("mkdtemp in %s: %s", base, strerror(errno));
  }
  char sock[PATH_MAX + 32], rsock[PATH_MAX + 32];
  snprintf(sock, sizeof sock, "%s/putbench.sock", dir);
  snprintf(rsock, sizeof rsock, "%s/redis.sock", dir);

  char *bargv[32] = {(char *)opt.shoald, "--name", "putbench", "--rundir", dir,
                     "--shm-dir", dir, "--size", "2G", "--quiet"};
  for (int i = 0; i < opt.nshoald_args; i++) bargv[10 + i] = (char *)opt.shoald_args[i];
  broker_pid = spawn(bargv, 1);
  wait_socket(sock, broker_pid, "shoald");
  shoal *c = NULL;
  shoal_options o = {0};
  o.socket = sock;
  o.client = "shoal-put-bench";
  o.flags = SHOAL_OPEN_NO_SLOT;
  int err = shoal_open(&c, "putbench", &o);
  if (err) die("shoal_open %s: %s", sock, shoal_strerror(err));

  if (!opt.no_redis) {
    char *rargv[] = {(char *)opt.redis_server, "--port", "0", "--unixsocket", rsock,
                     "--save", "", "--appendonly", "no", "--daemonize", "no",
                     "--dir", dir, NULL};
    redis_pid = spawn(rargv, 1);
    wait_socket(rsock, redis_pid, "redis-server");
  }

  if (!opt.json) fprintf(stderr, "shoal-put-bench: loading %ld keys into both\n", opt.keys);
  preload_shoal(c);
  if (!opt.no_redis) preload_redis(rsock);

  int R = opt.repeat;
  double u[99], p16[99], pd[99], bt[99], ins[99], l50[99], l99[99];
  double ru[99], rp16[99], rpd[99], r50[99], r99[99];
  if (!opt.json)
    fprintf(stderr, "shoal-put-bench: %ld requests x %d runs, %d-byte values, %ld keys\n",
            opt.requests, R, opt.vsize, opt.keys);
  /* interleave the peers run by run so drifting machine noise hits both */
  for (int i = 0; i < R; i++) {
    u[i] = run_unpipelined(c, &l50[i], &l99[i]);
    p16[i] = run_pipelined(c, 16);
    pd[i] = run_pipelined(c, opt.depth);
    bt[i] = run_batched(c);
    ins[i] = run_inserts(c, i);
    if (!opt.no_redis) {
      ru[i] = run_redis(rsock, 1, &r50[i], &r99[i]);
      rp16[i] = run_redis(rsock, 16, NULL, NULL);
      rpd[i] = run_redis(rsock, opt.depth, NULL, NULL);
    }
    if (!opt.json) fprintf(stderr, "  run %d/%d done\n", i + 1, R);
  }
  double U = median(u, R), P16 = median(p16, R), PD = median(pd, R), BT = median(bt, R);
  double INS = median(ins, R);
  double L50 = median(l50, R), L99 = median(l99, R);
  double RU = 0, RP16 = 0, RPD = 0, R50 = 0, R99 = 0;
  if (!opt.no_redis) {
    RU = median(ru, R);
    RP16 = median(rp16, R);
    RPD = median(rpd, R);
    R50 = median(r50, R);
    R99 = median(r99, R);
  }
  shoal_close(c);
  cleanup();

  if (opt.json) {
    printf("{\"requests\": %ld, \"repeat\": %d, \"value_size\": %d, \"keys\": %ld, "
           "\"depth\": %d, \"batch\": %d, "
           "\"put_ops_per_s\": %.0f, \"put_pipelined16_ops_per_s\": %.0f, "
           "\"put_pipelined_ops_per_s\": %.0f, \"put_batched_ops_per_s\": %.0f, "
           "\"put_batched_insert_ops_per_s\": %.0f, "
           "\"put_p50_us\": %.1f, \"put_p99_us\": %.1f",
           opt.requests, R, opt.vsize, opt.keys, opt.depth, opt.batch, U, P16, PD, BT,
           INS, L50, L99);
    if (!opt.no_redis)
      printf(", \"redis_set_ops_per_s\": %.0f, \"redis_set_pipelined16_ops_per_s\": %.0f, "
             "\"redis_set_pipelined_ops_per_s\": %.0f, \"redis_set_p50_us\": %.1f, "
             "\"redis_set_p99_us\": %.1f, \"ratio_unpipelined\": %.3f, "
             "\"ratio_pipelined16\": %.3f, \"ratio_pipelined\": %.3f",
             RU, RP16, RPD, R50, R99, U / RU, P16 / RP16, PD / RPD);
    printf("}\n");
    return 0;
  }
  printf("%-34s %14s %14s %8s\n", "workload (1 connection)", "shoal ops/s", "redis ops/s", "ratio");
  printf("%-34s %14.0f %14.0f %7.2fx   target >= 1.0x\n", "put / SET, unpipelined", U, RU,
         RU ? U / RU : 0);
  printf("%-34s %14.0f %14.0f %7.2fx   target >= 2.0x\n", "put / SET, pipelined depth 16", P16,
         RP16, RP16 ? P16 / RP16 : 0);
  char lbl[64];
  snprintf(lbl, sizeof lbl, "put / SET, pipelined depth %d", opt.depth);
  printf("%-34s %14.0f %14.0f %7.2fx\n", lbl, PD, RPD, RPD ? PD / RPD : 0);
  snprintf(lbl, sizeof lbl, "put, batched (%d per batch)", opt.batch);
  printf("%-34s %14.0f %14s %8s   target >= 1,000,000\n", lbl, BT, "-", "");
  snprintf(lbl, sizeof lbl, "put, batched, new keys");
  printf("%-34s %14.0f %14s\n", lbl, INS, "-");
  printf("%-34s %11.1f us %11.1f us\n", "unpipelined p50 latency", L50, R50);
  printf("%-34s %11.1f us %11.1f us\n", "unpipelined p99 latency", L99, R99);
  return 0;
}
