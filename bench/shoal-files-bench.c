/*
 * shoal-files-bench - the broker's file services against the tools they
 * replace, in one run on the same files (issue 5, "Must show" 3):
 *
 *   hash, cold   HashFile of a --size file (default 1 GiB) that the broker
 *                has not seen (a new file each round, so the cache can not
 *                answer), blake2b-512 and sha256, vs `b2sum` and
 *                `sha256sum` on the same file. The page cache is warm for
 *                all of them (the file was just written): this compares
 *                hashing and reading, not the disk.
 *   hash, warm   cached HashFile requests per second: open, pass the
 *                descriptor, get the digest, close; from 1 and from 2
 *                client processes.
 *   tail         the last 100 lines of a --size log via TailLog: latency
 *                p50/p99 per request, vs `tail -n 100` (process start
 *                included, which is what a script pays).
 *
 * It starts its own shoald (--shoald PATH) in a private directory and
 * removes everything at exit. --json prints one object.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shoal/shoal.h"

extern char **environ;

static struct {
  const char *shoald;
  const char *tmp;
  uint64_t size;
  double seconds;
  int repeat;
  int json;
} opt = {.tmp = "/tmp", .size = 1ull << 30, .seconds = 2.0, .repeat = 3};

static char dir[PATH_MAX], sock[PATH_MAX + 32];
static pid_t broker_pid;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void cleanup(void) {
  if (broker_pid > 0) {
    kill(broker_pid, SIGTERM);
    waitpid(broker_pid, NULL, 0);
    broker_pid = 0;
  }
  if (dir[0]) {
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
      fprintf(stderr, "shoal-files-bench: could not remove %s\n", dir);
    dir[0] = 0;
  }
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("shoal-files-bench: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  cleanup();
  exit(1);
}

static void on_signal(int sig) {
  cleanup();
  signal(sig, SIG_DFL);
  raise(sig);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void start_broker(void) {
  char rundir[PATH_MAX + 8], shm[PATH_MAX + 8];
  snprintf(rundir, sizeof rundir, "%s/run", dir);
  snprintf(shm, sizeof shm, "%s/shm", dir);
  if (mkdir(rundir, 0700) != 0 || mkdir(shm, 0700) != 0)
    die("mkdir in %s: %s", dir, strerror(errno));
  snprintf(sock, sizeof sock, "%s/bench.sock", rundir);
  char *argv[] = {(char *)opt.shoald, "--name",   "bench", "--rundir",
                  rundir,             "--shm-dir", shm,    "--size",
                  "64M",              "--quiet",  NULL};
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  int rc = posix_spawnp(&broker_pid, argv[0], &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc) die("cannot start %s: %s", opt.shoald, strerror(rc));
  for (int i = 0; i < 1000; i++) {
    struct stat st;
    if (stat(sock, &st) == 0) return;
    usleep(10000);
  }
  die("shoald did not create %s within 10 s", sock);
}

static shoal *open_client(void) {
  shoal_options o;
  memset(&o, 0, sizeof o);
  o.socket = sock;
  o.flags = SHOAL_OPEN_NO_SLOT;
  o.timeout_ms = 600000; /* a cold hash of a big file takes seconds */
  o.client = "shoal-files-bench";
  shoal *c;
  int err = shoal_open(&c, "bench", &o);
  if (err) die("shoal_open: %s: %s", shoal_strerror(err), shoal_last_error(NULL));
  return c;
}

/* Write @size bytes of @kind ('r': random, 'l': log lines) to @path. */
static void make_file(const char *path, uint64_t size, int kind) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) die("create %s: %s", path, strerror(errno));
  size_t chunk = 1u << 20;
  char *buf = malloc(chunk);
  uint64_t x = 0x9E3779B97F4A7C15ull ^ size;
  uint64_t line = 0;
  for (uint64_t done = 0; done < size;) {
    size_t n = size - done < chunk ? (size_t)(size - done) : chunk;
    if (kind == 'r') {
      for (size_t i = 0; i + 8 <= n; i += 8) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        memcpy(buf + i, &x, 8);
      }
    } else {
      size_t i = 0;
      while (i < n) {
        char l[128];
        int m = snprintf(l, sizeof l,
                         "2026-11-22T12:00:00.000Z worker[%llu]: request "
                         "served in %llu us status=ok\n",
                         (unsigned long long)(line % 97),
                         (unsigned long long)line);
        line++;
        size_t k = (size_t)m < n - i ? (size_t)m : n - i;
        memcpy(buf + i, l, k);
        i += k;
      }
    }
    if (write(fd, buf, n) != (ssize_t)n) die("write %s: %s", path, strerror(errno));
    done += n;
  }
  free(buf);
  close(fd);
}

/* Wall time of a shell command (its output discarded). */
static double time_cmd(const char *cmd) {
  double t0 = now_s();
  if (system(cmd) != 0) die("'%s' failed", cmd);
  return now_s() - t0;
}

static double hash_once(shoal *c, const char *path, const char *alg,
                        size_t dlen) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) die("open %s: %s", path, strerror(errno));
  unsigned char d[64];
  double t0 = now_s();
  int n = shoal_hash_fd(c, fd, alg, dlen, d, sizeof d);
  double t = now_s() - t0;
  close(fd);
  if (n < 0) die("hash %s: %s", path, shoal_last_error(c));
  return t;
}

/* Cached hash requests for opt.seconds from @procs processes: total
 * requests per second. */
static double warm_rate(const char *path, int procs) {
  double *res = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  pid_t kids[8];
  for (int p = 0; p < procs; p++) {
    kids[p] = fork();
    if (kids[p] == 0) {
      shoal *c = open_client();
      char hex[SHOAL_HASH_HEX_MAX];
      long n = 0;
      double t0 = now_s(), t;
      do {
        for (int i = 0; i < 64; i++)
          if (shoal_hash_file(c, path, "blake2b", hex, sizeof hex) < 0) _exit(1);
        n += 64;
      } while ((t = now_s() - t0) < opt.seconds);
      res[p] = (double)n / t;
      shoal_close(c);
      _exit(0);
    }
  }
  double sum = 0;
  for (int p = 0; p < procs; p++) {
    int st;
    waitpid(kids[p], &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st)) die("warm hash client failed");
    sum += res[p];
  }
  munmap(res, 4096);
  return sum;
}

static void usage(FILE *f) {
  fputs("usage: shoal-files-bench --shoald PATH [--size BYTES] [--tmp DIR]\n"
        "                         [--seconds S] [--repeat N] [--json]\n"
        "  --size     file and log size (default 1G; suffixes k M G)\n"
        "  --tmp      where the files go (default /tmp)\n"
        "  --seconds  duration of each warm-hash run (default 2)\n"
        "  --repeat   rounds; figures are medians (default 3)\n",
        f);
}

static uint64_t parse_size(const char *s) {
  char *end;
  double v = strtod(s, &end);
  switch (*end) {
  case 'k': case 'K': v *= 1024; break;
  case 'm': case 'M': v *= 1024 * 1024; break;
  case 'g': case 'G': v *= 1024.0 * 1024 * 1024; break;
  case 0: break;
  default: return 0;
  }
  return (uint64_t)v;
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--shoald") && v) opt.shoald = argv[++i];
    else if (!strcmp(a, "--tmp") && v) opt.tmp = argv[++i];
    else if (!strcmp(a, "--size") && v) opt.size = parse_size(argv[++i]);
    else if (!strcmp(a, "--seconds") && v) opt.seconds = atof(argv[++i]);
    else if (!strcmp(a, "--repeat") && v) opt.repeat = atoi(argv[++i]);
    else if (!strcmp(a, "--json")) opt.json = 1;
    else if (!strcmp(a, "--help")) { usage(stdout); return 0; }
    else { usage(stderr); return 2; }
  }
  if (!opt.shoald || opt.size < 4096 || opt.repeat < 1 || opt.repeat > 99 ||
      opt.seconds <= 0) {
    usage(stderr);
    return 2;
  }
  snprintf(dir, sizeof dir, "%s/shoal-files-bench-XXXXXX", opt.tmp);
  if (!mkdtemp(dir)) die("mkdtemp in %s: %s", opt.tmp, strerror(errno));
  atexit(cleanup);
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  start_broker();
  shoal *c = open_client();
  if (!opt.json)
    printf("shoal-files-bench: %.2f GiB files in %s, %d rounds (medians)\n",
           (double)opt.size / (1 << 30), opt.tmp, opt.repeat);

  /* cold hashing: a new file per round (new inode: a cache miss) */
  double b2[100], b2sum_t[100], s2[100], sha_t[100];
  char path[PATH_MAX + 32], cmd[PATH_MAX * 2];
  for (int r = 0; r < opt.repeat; r++) {
    snprintf(path, sizeof path, "%s/data%d.bin", dir, r);
    make_file(path, opt.size, 'r');
    b2[r] = hash_once(c, path, "blake2b", 64);
    s2[r] = hash_once(c, path, "sha256", 0);
    snprintf(cmd, sizeof cmd, "b2sum '%s' >/dev/null", path);
    b2sum_t[r] = time_cmd(cmd);
    snprintf(cmd, sizeof cmd, "sha256sum '%s' >/dev/null", path);
    sha_t[r] = time_cmd(cmd);
    if (r + 1 < opt.repeat) unlink(path);
  }
  double mib = (double)opt.size / (1 << 20);
  double b2_mbs = mib / median(b2, opt.repeat);
  double b2sum_mbs = mib / median(b2sum_t, opt.repeat);
  double s2_mbs = mib / median(s2, opt.repeat);
  double sha_mbs = mib / median(sha_t, opt.repeat);

  /* warm: the last file is cached now */
  double w1[100], w2[100];
  for (int r = 0; r < opt.repeat; r++) {
    w1[r] = warm_rate(path, 1);
    w2[r] = warm_rate(path, 2);
  }
  double warm1 = median(w1, opt.repeat), warm2 = median(w2, opt.repeat);
  unlink(path);

  /* tail of a big log */
  char log[PATH_MAX + 32];
  snprintf(log, sizeof log, "%s/app.log", dir);
  make_file(log, opt.size, 'l');
  enum { TAILS = 2000 };
  static double lat[TAILS];
  for (int i = 0; i < TAILS; i++) {
    shoal_lines *l;
    double t0 = now_s();
    int err = shoal_tail(c, log, 100, &l);
    lat[i] = now_s() - t0;
    if (err) die("tail: %s", shoal_last_error(c));
    if (l->n != 100) die("tail: %zu lines", l->n);
    shoal_lines_free(l);
  }
  qsort(lat, TAILS, sizeof lat[0], cmp_double);
  double tail_p50 = lat[TAILS / 2] * 1e6, tail_p99 = lat[TAILS * 99 / 100] * 1e6;
  double tt[100];
  snprintf(cmd, sizeof cmd, "tail -n 100 '%s' >/dev/null", log);
  for (int r = 0; r < 20; r++) tt[r] = time_cmd(cmd);
  double tail_cmd_us = median(tt, 20) * 1e6;
  shoal_stats st;
  if (shoal_stats_get(c, &st) != 0) die("stats: %s", shoal_last_error(c));
  shoal_close(c);

  if (opt.json) {
    printf("{\"size_bytes\": %llu, \"repeat\": %d, "
           "\"hash_blake2b_cold_mb_per_s\": %.1f, \"b2sum_mb_per_s\": %.1f, "
           "\"ratio_hash_vs_b2sum\": %.3f, "
           "\"hash_sha256_cold_mb_per_s\": %.1f, \"sha256sum_mb_per_s\": %.1f, "
           "\"ratio_hash_vs_sha256sum\": %.3f, "
           "\"hash_cached_req_per_s\": %.0f, "
           "\"hash_cached_req_per_s_2_clients\": %.0f, "
           "\"tail_100_p50_us\": %.1f, \"tail_100_p99_us\": %.1f, "
           "\"tail_cmd_us\": %.1f, \"hash_cache_hits\": %llu, "
           "\"hash_cache_misses\": %llu}\n",
           (unsigned long long)opt.size, opt.repeat, b2_mbs, b2sum_mbs,
           b2_mbs / b2sum_mbs, s2_mbs, sha_mbs, s2_mbs / sha_mbs, warm1, warm2,
           tail_p50, tail_p99, tail_cmd_us,
           (unsigned long long)st.hash_cache_hits,
           (unsigned long long)st.hash_cache_misses);
  } else {
    printf("hash, cold (page cache warm, shoal cache empty):\n");
    printf("  HashFile blake2b-512  %8.1f MiB/s   b2sum     %8.1f MiB/s   "
           "ratio %.2f (target >= 0.9)\n",
           b2_mbs, b2sum_mbs, b2_mbs / b2sum_mbs);
    printf("  HashFile sha256       %8.1f MiB/s   sha256sum %8.1f MiB/s   "
           "ratio %.2f\n",
           s2_mbs, sha_mbs, s2_mbs / sha_mbs);
    printf("hash, cached: %.0f req/s from 1 client, %.0f req/s from 2 "
           "(target >= 100K)\n",
           warm1, warm2);
    printf("tail -n 100 of a %.2f GiB log: TailLog p50 %.1f us, p99 %.1f us "
           "(target <= 1000); `tail -n 100` %.0f us\n",
           (double)opt.size / (1 << 30), tail_p50, tail_p99, tail_cmd_us);
  }
  return 0;
}
