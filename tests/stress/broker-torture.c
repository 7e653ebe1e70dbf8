/*
 * broker-torture.c - crash and fault torture of a REAL shoald (issue 7,
 * "Crash and fault torture"; STYLE 10, tier "stress").
 *
 * Every scenario starts shoald from the build tree in a private directory
 * /dev/shm/shoal-torture-XXXXXX (run/ is the RUNDIR, shm/ the --shm-dir) and
 * drives it with forked client processes that use libshoal (a fresh handle
 * per process: handles do not survive fork). The directory, the brokers and
 * every child are removed or killed at exit, also after a failure (atexit
 * plus PR_SET_PDEATHSIG in the children).
 *
 * Scenarios (--scenario a,b,... ; all by default):
 *   kill     shoald is SIGKILLed at a random moment (1..40 ms after the
 *            previous restart) under a mixed write load from NW writer
 *            processes (put, del, cas, atomic batches, TTL puts), --kills N
 *            times (default 200). Each writer owns its keys and records, in
 *            shared memory, every acknowledged write with its version and
 *            every request that got no reply (it may or may not have been
 *            applied). After each restart the writers pause and the parent
 *            checks every key: an acknowledged write is there at exactly its
 *            version unless a later unanswered request replaced it (then
 *            newer), an acknowledged delete is absent unless a later
 *            unanswered put rewrote it, an unexpired TTL put is there; then
 *            `shoal-inspect --check` must pass. NR reader processes read
 *            self-verifying values in sections the whole time (also while no
 *            broker runs): no torn value, no version going backwards, no
 *            crash.
 *   reader-kill  reader processes SIGKILLed inside read sections (--reader-
 *            kills N, default 200, 4 at a time) while the parent overwrites
 *            the keys they pinned: their slots must be free and the retired
 *            memory reclaimed within one sweep + 1 s of the kill, and at the
 *            end heap use is back to its baseline (Stats and
 *            `shoal-inspect readers --json`).
 *   stop     a reader SIGSTOPped inside a section while writes continue:
 *            retired memory grows, Ping stays fast, Stats and `shoal-inspect
 *            readers --json` show its age; after SIGCONT and read_end the
 *            memory returns to the baseline.
 *   faults   /dev/shm full (a 16 MiB tmpfs mounted for the test; skipped
 *            with a message when mount(2) is not allowed), --size reached,
 *            descriptors exhausted (shoald under RLIMIT_NOFILE 64), a client
 *            that never reads its replies (--max-output), a slow loris (one
 *            byte per second): each answered as designed while another
 *            client keeps being served.
 *
 * TORTURE_TRACE=1 prints Stats (and shoal-inspect readers when over 1 MiB
 * is retired) after every broker restart.
 * Options: --seed N (reproduce a run), --kills N, --reader-kills N,
 * --scenario LIST. Binaries come from $SHOAL_TEST_SHOALD and
 * $SHOAL_TEST_INSPECT (ctest sets both; the build bakes in defaults).
 * Output: one "figures:" line per scenario; exit 0 when everything held.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
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

#define NAME "t"
/* Reclamation period of every broker here: short, so rounds are short. */
#define SWEEP_MS 100

/* ------------------------------------------------------------ harness --- */

static char g_base[64], g_run[96], g_shm[256], g_sock[104], g_log[128];
static const char *g_shoald, *g_inspect;
static pid_t g_broker;
static pid_t g_kids[64];
static int g_nkids;
static char g_mnt[256]; /* a tmpfs we mounted, unmounted at exit */
static int g_failed;
static pid_t g_main_pid;
static uint64_t g_seed;

static uint64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}
static uint64_t now_ms(void) { return now_us() / 1000u; }
static uint64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}
static void sleep_ms(unsigned ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* xorshift64*: per process, seeded from --seed and the pid's role */
static uint64_t rng_state = 88172645463325252ull;
static uint64_t rnd(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 2685821657736338717ull;
}
static unsigned rnd_below(unsigned n) { return (unsigned)(rnd() % n); }

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "broker-torture: FAIL: ");
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  g_failed++;
}
#define CHECK(cond, ...)                                                       \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fail("%s:%d: %s: ", __FILE__, __LINE__, #cond);                          \
      fprintf(stderr, "    ");                                                 \
      fprintf(stderr, __VA_ARGS__);                                            \
      fputc('\n', stderr);                                                     \
    }                                                                          \
  } while (0)
/* A failure that leaves nothing sensible to continue with. */
#define REQUIRE(cond, ...)                                                     \
  do {                                                                         \
    if (!(cond)) {                                                             \
      CHECK(cond, __VA_ARGS__);                                                \
      dump_log();                                                              \
      exit(1);                                                                 \
    }                                                                          \
  } while (0)

static void rmtree(const char *path) {
  DIR *d = opendir(path);
  if (!d) {
    unlink(path);
    return;
  }
  struct dirent *e;
  char p[512];
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    snprintf(p, sizeof p, "%s/%s", path, e->d_name);
    struct stat st;
    if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
      rmtree(p);
    else
      unlink(p);
  }
  closedir(d);
  rmdir(path);
}

static void dump_log(void) {
  FILE *f = fopen(g_log, "r");
  if (!f) return;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, n > 4096 ? n - 4096 : 0, SEEK_SET);
  char buf[4097];
  size_t got = fread(buf, 1, 4096, f);
  buf[got] = 0;
  fclose(f);
  fprintf(stderr, "--- last of %s ---\n%s--- end ---\n", g_log, buf);
}

static void kill_kids(void) {
  for (int i = 0; i < g_nkids; i++)
    if (g_kids[i] > 0) {
      kill(g_kids[i], SIGCONT);
      kill(g_kids[i], SIGKILL);
      waitpid(g_kids[i], NULL, 0);
      g_kids[i] = 0;
    }
  g_nkids = 0;
}

static void cleanup(void) {
  if (getpid() != g_main_pid) return;
  kill_kids();
  if (g_broker > 0) {
    kill(g_broker, SIGKILL);
    waitpid(g_broker, NULL, 0);
    g_broker = 0;
  }
  if (g_mnt[0]) {
    if (umount(g_mnt) != 0) umount2(g_mnt, MNT_DETACH);
    g_mnt[0] = 0;
  }
  if (g_base[0]) rmtree(g_base);
}

static void on_signal(int sig) {
  cleanup();
  signal(sig, SIG_DFL);
  raise(sig);
}

static void add_kid(pid_t p) {
  if (g_nkids < (int)(sizeof g_kids / sizeof g_kids[0])) g_kids[g_nkids++] = p;
}
static void forget_kid(pid_t p) {
  for (int i = 0; i < g_nkids; i++)
    if (g_kids[i] == p) {
      g_kids[i] = g_kids[--g_nkids];
      return;
    }
}

/* Fresh directories for one scenario (the previous ones are removed). */
static void new_dirs(const char *shm_dir) {
  if (g_base[0]) rmtree(g_base);
  snprintf(g_base, sizeof g_base, "/dev/shm/shoal-torture-XXXXXX");
  REQUIRE(mkdtemp(g_base) != NULL, "mkdtemp: %s", strerror(errno));
  snprintf(g_run, sizeof g_run, "%s/run", g_base);
  snprintf(g_shm, sizeof g_shm, "%s/shm", g_base);
  snprintf(g_sock, sizeof g_sock, "%s/" NAME ".sock", g_run);
  snprintf(g_log, sizeof g_log, "%s/broker.log", g_base);
  mkdir(g_run, 0700);
  mkdir(g_shm, 0700);
  if (shm_dir) snprintf(g_shm, sizeof g_shm, "%s", shm_dir);
}

static int sock_connect(int nonblock) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
  if (fd < 0) return -1;
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s", g_sock);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 &&
      !(nonblock && errno == EINPROGRESS)) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Start shoald with "--name t --rundir RUN --shm-dir SHM --sweep-ms 100 -q"
 * plus @extra (NULL-terminated); @nofile > 0 sets RLIMIT_NOFILE first.
 * Waits until the socket accepts (up to 10 s). */
static pid_t start_broker_lim(int nofile, const char *const *extra) {
  pid_t p = fork();
  REQUIRE(p >= 0, "fork: %s", strerror(errno));
  if (p == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int fd = open(g_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd >= 0) {
      dup2(fd, 2);
      dup2(fd, 1);
    }
    if (nofile > 0) {
      struct rlimit rl = {(rlim_t)nofile, (rlim_t)nofile};
      setrlimit(RLIMIT_NOFILE, &rl);
    }
    const char *argv[32] = {g_shoald, "--name", NAME, "--rundir", g_run,
                            "--shm-dir", g_shm, "--sweep-ms", "100", "-q"};
    int n = 10;
    for (int i = 0; extra && extra[i] && n < 31; i++) argv[n++] = extra[i];
    argv[n] = NULL;
    execv(g_shoald, (char *const *)argv);
    _exit(127);
  }
  uint64_t deadline = now_ms() + 10000;
  for (;;) {
    int fd = sock_connect(0);
    if (fd >= 0) {
      close(fd);
      break;
    }
    int st;
    if (waitpid(p, &st, WNOHANG) == p) {
      dump_log();
      fprintf(stderr, "broker-torture: shoald exited (status 0x%x) at start\n", st);
      exit(1);
    }
    if (now_ms() > deadline) {
      kill(p, SIGKILL);
      waitpid(p, NULL, 0);
      REQUIRE(0, "shoald did not listen within 10 s");
    }
    usleep(1000);
  }
  g_broker = p;
  return p;
}
#define start_broker(...)                                                      \
  start_broker_lim(0, (const char *const[]){__VA_ARGS__, NULL})

/* SIGTERM (expect exit 0) or SIGKILL the broker and reap it. */
static int stop_broker(int sig) {
  if (g_broker <= 0) return 0;
  kill(g_broker, sig);
  int st = 0;
  uint64_t deadline = now_ms() + 10000;
  while (waitpid(g_broker, &st, WNOHANG) == 0) {
    if (now_ms() > deadline) {
      kill(g_broker, SIGKILL);
      waitpid(g_broker, &st, 0);
      break;
    }
    usleep(1000);
  }
  g_broker = 0;
  return st;
}

static int open_client(shoal **c, unsigned flags, int connect_ms, int timeout_ms) {
  shoal_options o;
  memset(&o, 0, sizeof o);
  o.socket = g_sock;
  o.connect_timeout_ms = connect_ms;
  o.timeout_ms = timeout_ms;
  o.flags = flags;
  o.client = "broker-torture";
  return shoal_open(c, NAME, &o);
}
static shoal *open_ok(unsigned flags) {
  shoal *c = NULL;
  int rc = open_client(&c, flags, 5000, 10000);
  REQUIRE(rc == 0, "shoal_open: %s (%s)", shoal_errname(rc), shoal_last_error(NULL));
  return c;
}

static shoal_stats stats(shoal *c) {
  shoal_stats st;
  int rc = shoal_stats_get(c, &st);
  REQUIRE(rc == 0, "stats: %s (%s)", shoal_errname(rc), shoal_last_error(c));
  return st;
}

/* Run shoal-inspect with @args (NULL-terminated) against the store;
 * stdout into @out (NUL-terminated, truncated to @cap). Exit code or
 * 128+signal. */
static int run_inspect(char *out, size_t cap, const char *const *args) {
  char tmp[300];
  snprintf(tmp, sizeof tmp, "%s/inspect.out", g_base);
  pid_t p = fork();
  if (p == 0) {
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd >= 0) dup2(fd, 1);
    int fe = open(g_log, O_WRONLY | O_APPEND);
    if (fe >= 0) dup2(fe, 2);
    const char *argv[16] = {g_inspect, "--name", NAME, "--shm-dir", g_shm};
    int n = 5;
    for (int i = 0; args[i] && n < 15; i++) argv[n++] = args[i];
    argv[n] = NULL;
    execv(g_inspect, (char *const *)argv);
    _exit(127);
  }
  int st = 0;
  waitpid(p, &st, 0);
  if (out && cap) {
    out[0] = 0;
    FILE *f = fopen(tmp, "r");
    if (f) {
      size_t got = fread(out, 1, cap - 1, f);
      out[got] = 0;
      fclose(f);
    }
  }
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* A JSON number after "@field": in @s (from @from on), or -1. */
static long long json_num(const char *s, const char *field) {
  char pat[64];
  snprintf(pat, sizeof pat, "\"%s\":", field);
  const char *p = strstr(s, pat);
  if (!p) return -1;
  p += strlen(pat);
  while (*p == ' ') p++;
  return strtoll(p, NULL, 10);
}

/* broker RSS in bytes from /proc, 0 if unknown */
static uint64_t rss_bytes(pid_t pid) {
  char path[64], buf[256];
  snprintf(path, sizeof path, "/proc/%d/statm", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  unsigned long long sz = 0, rss = 0;
  if (!fgets(buf, sizeof buf, f) || sscanf(buf, "%llu %llu", &sz, &rss) != 2) rss = 0;
  fclose(f);
  return rss * (uint64_t)sysconf(_SC_PAGESIZE);
}
/* utime+stime of @pid in ms */
static uint64_t cpu_ms(pid_t pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *p = strrchr(buf, ')');
  if (!p) return 0;
  unsigned long long ut = 0, stt = 0;
  /* fields after ")": state(3) ... utime(14) stime(15) */
  if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
             &stt) != 2)
    return 0;
  return (ut + stt) * 1000u / (uint64_t)sysconf(_SC_CLK_TCK);
}

static void *shared(size_t n) {
  void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  REQUIRE(p != MAP_FAILED, "mmap: %s", strerror(errno));
  return p;
}

static pid_t fork_kid(int (*fn)(void *), void *arg) {
  fflush(NULL);
  pid_t p = fork();
  REQUIRE(p >= 0, "fork: %s", strerror(errno));
  if (p == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    rng_state ^= (uint64_t)getpid() * 0x9E3779B97F4A7C15ull;
    _exit(fn(arg));
  }
  add_kid(p);
  return p;
}

/* ---------------------------------------------------- self-checking values */

/* A value: gen (8), length (4), key hash (4), then bytes derived from
 * (key hash, gen, position): a torn or misplaced value fails the check. */
static uint32_t key_hash(const char *k, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)k[i]) * 16777619u;
  return h;
}
static void value_make(uint8_t *b, size_t len, const char *k, uint64_t gen) {
  uint32_t h = key_hash(k, strlen(k)), l = (uint32_t)len;
  memcpy(b, &gen, 8);
  memcpy(b + 8, &l, 4);
  memcpy(b + 12, &h, 4);
  uint64_t x = gen * 0x9E3779B97F4A7C15ull ^ h;
  for (size_t i = 16; i < len; i++) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    b[i] = (uint8_t)(x >> 56);
  }
}
static int value_check(const void *p, size_t len, const char *k, size_t klen,
                       uint64_t *gen) {
  const uint8_t *b = p;
  if (len < 16) return 0;
  uint64_t g;
  uint32_t l, h;
  memcpy(&g, b, 8);
  memcpy(&l, b + 8, 4);
  memcpy(&h, b + 12, 4);
  if (l != len || h != key_hash(k, klen)) return 0;
  uint64_t x = g * 0x9E3779B97F4A7C15ull ^ h;
  for (size_t i = 16; i < len; i++) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    if (b[i] != (uint8_t)(x >> 56)) return 0;
  }
  if (gen) *gen = g;
  return 1;
}

/* ================================================== scenario: broker kill */

enum { NW = 3, NR = 2, KPW = 48, NKEYS = NW * KPW };

typedef struct keyrec {
  uint64_t gen;         /* last generation the writer issued for the key */
  uint64_t ack_gen;     /* generation of the last acknowledged op (0: none) */
  uint64_t ack_ver;     /* its version (0 for a delete) */
  uint64_t ack_exp;     /* CLOCK_REALTIME ms it expires at (0: no TTL) */
  int ack_del;          /* the last acknowledged op deleted the key */
  uint64_t unc_gen;     /* first unanswered op after that ack (0: none) */
  int unc_del;          /* an unanswered delete since the ack */
  uint64_t unc_exp;     /* earliest expiry (CLOCK_REALTIME ms) an unanswered
                           TTL put since the ack can have: if it was applied,
                           the key is absent from then on (0: none) */
} keyrec;

typedef struct kshared {
  atomic_int stop, pause;
  atomic_int paused[NW];
  keyrec rec[NKEYS];
  /* writer figures */
  atomic_uint_fast64_t acked, unanswered, errors, lost_del;
  atomic_uint_fast64_t ops[5]; /* put, del, cas, batch, ttl */
  /* reader figures */
  atomic_uint_fast64_t r_sections, r_values, r_torn, r_back, r_err;
} kshared;

static kshared *ks;

static void key_name(char *b, size_t cap, int i) {
  snprintf(b, cap, "w%d/%03d", i / KPW, i % KPW);
}
static int is_ttl_key(int i) { return i % 4 == 3; }
static int uncertain(int rc) {
  return rc == SHOAL_EUNAVAIL || rc == SHOAL_ETIMEOUT || rc == SHOAL_ECLOSED;
}

static void rec_ack(keyrec *r, uint64_t gen, uint64_t ver, int del, uint64_t exp) {
  r->ack_gen = gen;
  r->ack_ver = ver;
  r->ack_del = del;
  r->ack_exp = exp;
  r->unc_gen = 0;
  r->unc_del = 0;
  r->unc_exp = 0;
}
static void rec_unc(keyrec *r, uint64_t gen, int del) {
  if (!r->unc_gen) r->unc_gen = gen;
  if (del) r->unc_del = 1;
}
/* an unanswered TTL put sent at @t0: applied, it expires at t0 + ttl or
 * later (the broker stamps it when it applies it) */
static void rec_unc_ttl(keyrec *r, uint64_t gen, uint64_t exp) {
  rec_unc(r, gen, 0);
  if (!r->unc_exp || exp < r->unc_exp) r->unc_exp = exp;
}

static int writer_main(void *arg) {
  int w = (int)(intptr_t)arg;
  shoal *c = NULL;
  int rc = open_client(&c, 0, 4000, 4000);
  if (rc) {
    fprintf(stderr, "writer %d: open: %s\n", w, shoal_errname(rc));
    return 1;
  }
  uint8_t val[2048];
  char k[32];
  while (!atomic_load(&ks->stop)) {
    if (atomic_load(&ks->pause)) {
      atomic_store(&ks->paused[w], 1);
      while (atomic_load(&ks->pause) && !atomic_load(&ks->stop)) usleep(200);
      atomic_store(&ks->paused[w], 0);
      continue;
    }
    int ki = w * KPW + (int)rnd_below(KPW);
    keyrec *r = &ks->rec[ki];
    key_name(k, sizeof k, ki);
    size_t len = 16 + rnd_below(1500);
    unsigned dice = rnd_below(100);
    uint64_t ver = 0;
    if (is_ttl_key(ki)) {
      if (dice < 70) { /* TTL put: 300 ms .. 5 s */
        uint64_t gen = ++r->gen;
        uint32_t ttl = 300 + rnd_below(4700);
        value_make(val, len, k, gen);
        uint64_t t0 = wall_ms();
        rc = shoal_put_ttl(c, k, strlen(k), val, len, ttl, &ver);
        atomic_fetch_add(&ks->ops[4], 1);
        if (rc == 0) rec_ack(r, gen, ver, 0, t0 + ttl);
        else if (uncertain(rc)) rec_unc_ttl(r, gen, t0 + ttl);
        else goto bad;
      } else {
        uint64_t gen = ++r->gen;
        rc = shoal_del(c, k, strlen(k));
        atomic_fetch_add(&ks->ops[1], 1);
        if (rc == 0 || rc == SHOAL_ENOTFOUND) rec_ack(r, gen, 0, 1, 0);
        else if (uncertain(rc)) rec_unc(r, gen, 1);
        else goto bad;
      }
    } else if (dice < 40) {
      uint64_t gen = ++r->gen;
      value_make(val, len, k, gen);
      rc = shoal_put(c, k, strlen(k), val, len, &ver);
      atomic_fetch_add(&ks->ops[0], 1);
      if (rc == 0) rec_ack(r, gen, ver, 0, 0);
      else if (uncertain(rc)) rec_unc(r, gen, 0);
      else goto bad;
    } else if (dice < 55) {
      uint64_t gen = ++r->gen;
      rc = shoal_del(c, k, strlen(k));
      atomic_fetch_add(&ks->ops[1], 1);
      if (rc == SHOAL_ENOTFOUND && r->ack_gen && !r->ack_del && !r->unc_gen) {
        /* the broker says an acknowledged, untouched key is gone */
        fprintf(stderr, "writer %d: del %s: ENOTFOUND but put gen %" PRIu64
                        " version %" PRIu64 " was acknowledged\n",
                w, k, r->ack_gen, r->ack_ver);
        atomic_fetch_add(&ks->lost_del, 1);
      }
      if (rc == 0 || rc == SHOAL_ENOTFOUND) rec_ack(r, gen, 0, 1, 0);
      else if (uncertain(rc)) rec_unc(r, gen, 1);
      else goto bad;
    } else if (dice < 75) {
      /* CAS on the version this process reads in the segment: nobody else
       * writes the key, so a conflict would mean segment and broker
       * disagree */
      uint64_t expect = 0;
      if (shoal_read_begin(c) == 0) {
        shoal_val v;
        if (shoal_get(c, k, strlen(k), &v) == 0) expect = v.version;
        shoal_read_end(c);
      }
      uint64_t gen = ++r->gen;
      value_make(val, len, k, gen);
      rc = shoal_cas(c, k, strlen(k), expect, val, len, &ver);
      atomic_fetch_add(&ks->ops[2], 1);
      if (rc == 0) rec_ack(r, gen, ver, 0, 0);
      else if (uncertain(rc)) rec_unc(r, gen, 0);
      else if (rc == SHOAL_ECONFLICT) {
        fprintf(stderr, "writer %d: cas %s expect %" PRIu64 ": conflict, broker has %" PRIu64 "\n",
                w, k, expect, ver);
        atomic_fetch_add(&ks->errors, 1);
        rec_ack(r, r->gen, ver, ver == 0, 0); /* resync */
      } else goto bad;
    } else {
      shoal_batch *b = NULL;
      if (shoal_batch_new(c, &b) != 0) goto bad;
      int n = 2 + (int)rnd_below(3), idx[4];
      uint64_t gens[4];
      int dels[4];
      for (int j = 0; j < n; j++) {
        int kj;
        for (;;) {
          kj = w * KPW + (int)rnd_below(KPW);
          if (is_ttl_key(kj)) continue;
          int dup = 0;
          for (int q = 0; q < j; q++) dup |= idx[q] == kj;
          if (!dup) break;
        }
        idx[j] = kj;
        char kk[32];
        key_name(kk, sizeof kk, kj);
        gens[j] = ++ks->rec[kj].gen;
        dels[j] = rnd_below(100) < 30;
        size_t l = 16 + rnd_below(800);
        value_make(val, l, kk, gens[j]);
        int brc = dels[j] ? shoal_batch_del_any(b, kk, strlen(kk))
                          : shoal_batch_put(b, kk, strlen(kk), val, l, 0);
        if (brc) {
          shoal_batch_free(b);
          rc = brc;
          goto bad;
        }
      }
      rc = shoal_batch_commit(c, b, &ver);
      shoal_batch_free(b);
      atomic_fetch_add(&ks->ops[3], 1);
      for (int j = 0; j < n; j++) {
        keyrec *rj = &ks->rec[idx[j]];
        if (rc == 0) rec_ack(rj, gens[j], dels[j] ? 0 : ver, dels[j], 0);
        else if (uncertain(rc)) rec_unc(rj, gens[j], dels[j]);
      }
      if (rc && !uncertain(rc)) goto bad;
    }
    if (rc == 0 || rc == SHOAL_ENOTFOUND) atomic_fetch_add(&ks->acked, 1);
    else atomic_fetch_add(&ks->unanswered, 1);
    continue;
  bad:
    fprintf(stderr, "writer %d: %s: unexpected %s (%s)\n", w, k, shoal_errname(rc),
            shoal_last_error(c));
    atomic_fetch_add(&ks->errors, 1);
    usleep(1000);
  }
  shoal_close(c);
  return 0;
}

typedef struct rscan {
  uint64_t *last;
  uint64_t n, bad;
} rscan;

static int reader_scan_fn(void *arg, const void *key, size_t klen,
                          const shoal_val *v) {
  rscan *s = arg;
  char k[32];
  if (klen >= sizeof k) {
    s->bad++;
    return 0;
  }
  memcpy(k, key, klen);
  k[klen] = 0;
  s->n++;
  if (!value_check(v->data, v->len, k, klen, NULL)) s->bad++;
  return 0;
}

static int reader_main(void *arg) {
  (void)arg;
  shoal *c = NULL;
  int rc = open_client(&c, 0, 4000, 4000);
  if (rc) {
    fprintf(stderr, "reader: open: %s\n", shoal_errname(rc));
    return 1;
  }
  static uint64_t last[NKEYS];
  char k[32];
  uint64_t it = 0;
  while (!atomic_load(&ks->stop)) {
    rc = shoal_read_begin(c);
    if (rc) {
      atomic_fetch_add(&ks->r_err, 1);
      fprintf(stderr, "reader: read_begin: %s\n", shoal_errname(rc));
      usleep(1000);
      continue;
    }
    for (int j = 0; j < 16; j++) {
      int ki = (int)rnd_below(NKEYS);
      key_name(k, sizeof k, ki);
      shoal_val v;
      rc = shoal_get(c, k, strlen(k), &v);
      if (rc == SHOAL_ENOTFOUND) continue;
      if (rc) {
        atomic_fetch_add(&ks->r_err, 1);
        fprintf(stderr, "reader: get %s: %s\n", k, shoal_errname(rc));
        continue;
      }
      atomic_fetch_add(&ks->r_values, 1);
      if (!value_check(v.data, v.len, k, strlen(k), NULL)) {
        atomic_fetch_add(&ks->r_torn, 1);
        fprintf(stderr, "reader: %s version %" PRIu64 ": torn value (%zu bytes)\n",
                k, v.version, v.len);
      }
      if (v.version < last[ki]) {
        atomic_fetch_add(&ks->r_back, 1);
        fprintf(stderr, "reader: %s went back from version %" PRIu64 " to %" PRIu64 "\n",
                k, last[ki], v.version);
      }
      last[ki] = v.version;
    }
    if (++it % 64 == 0) {
      rscan s = {last, 0, 0};
      rc = shoal_scan_prefix(c, "w", 1, reader_scan_fn, &s);
      if (rc < 0) atomic_fetch_add(&ks->r_err, 1);
      if (s.bad) {
        atomic_fetch_add(&ks->r_torn, s.bad);
        fprintf(stderr, "reader: scan saw %" PRIu64 " bad values\n", s.bad);
      }
      atomic_fetch_add(&ks->r_values, s.n);
    }
    shoal_read_end(c);
    atomic_fetch_add(&ks->r_sections, 1);
  }
  shoal_close(c);
  return 0;
}

/* Check every key against the writers' records (writers paused). Returns
 * the number of keys checked; *bad counts violations. */
static unsigned verify_keys(shoal *c, uint64_t *bad, uint64_t *exact) {
  char k[32];
  unsigned n = 0;
  int rc = shoal_read_begin(c);
  REQUIRE(rc == 0, "read_begin: %s", shoal_errname(rc));
  uint64_t now = wall_ms();
  for (int i = 0; i < NKEYS; i++) {
    keyrec *r = &ks->rec[i];
    key_name(k, sizeof k, i);
    shoal_val v;
    rc = shoal_get(c, k, strlen(k), &v);
    n++;
    if (rc == 0) {
      uint64_t g = 0;
      if (!value_check(v.data, v.len, k, strlen(k), &g)) {
        fail("%s: torn value at version %" PRIu64, k, v.version);
        (*bad)++;
      } else if (r->ack_gen && g == r->ack_gen && !r->ack_del) {
        if (v.version != r->ack_ver) {
          fail("%s: gen %" PRIu64 " acknowledged at version %" PRIu64
               " but the store has it at %" PRIu64, k, g, r->ack_ver, v.version);
          (*bad)++;
        } else
          (*exact)++;
      } else if (r->unc_gen && g >= r->unc_gen && g <= r->gen &&
                 v.version > r->ack_ver) {
        /* an unanswered request was applied: allowed */
      } else {
        fail("%s: store has gen %" PRIu64 " version %" PRIu64 "; acknowledged: gen %"
             PRIu64 " version %" PRIu64 " %s, unanswered from gen %" PRIu64,
             k, g, v.version, r->ack_gen, r->ack_ver, r->ack_del ? "delete" : "put",
             r->unc_gen);
        (*bad)++;
      }
    } else if (rc == SHOAL_ENOTFOUND) {
      int ok = !r->ack_gen || r->ack_del || r->unc_del ||
               (r->ack_exp && now + 5 >= r->ack_exp) ||
               (r->unc_exp && now + 5 >= r->unc_exp);
      if (ok && r->ack_gen && r->ack_del && !r->unc_gen) (*exact)++;
      if (!ok) {
        fail("%s: absent, but gen %" PRIu64 " was acknowledged at version %" PRIu64
             " (expires %" PRId64 " ms from now; unanswered since: gen %" PRIu64
             ", delete %d, TTL put expiring %" PRId64 " ms from now)",
             k, r->ack_gen, r->ack_ver,
             r->ack_exp ? (int64_t)(r->ack_exp - now) : (int64_t)0, r->unc_gen,
             r->unc_del, r->unc_exp ? (int64_t)(r->unc_exp - now) : (int64_t)0);
        (*bad)++;
      }
    } else {
      fail("%s: get: %s", k, shoal_errname(rc));
      (*bad)++;
    }
  }
  shoal_read_end(c);
  return n;
}

static void pause_writers(int on) {
  atomic_store(&ks->pause, on);
  if (!on) return;
  uint64_t deadline = now_ms() + 15000;
  for (;;) {
    int all = 1;
    for (int w = 0; w < NW; w++) all &= atomic_load(&ks->paused[w]);
    if (all) return;
    REQUIRE(now_ms() < deadline, "writers did not pause within 15 s");
    usleep(200);
  }
}

static int scenario_kill(int kills) {
  uint64_t t0 = now_ms();
  new_dirs(NULL);
  ks = shared(sizeof *ks);
  start_broker("--size", "64M");
  pid_t writers[NW], readers[NR];
  /* values first, so readers find some from the start */
  for (int w = 0; w < NW; w++) writers[w] = fork_kid(writer_main, (void *)(intptr_t)w);
  for (int r = 0; r < NR; r++) readers[r] = fork_kid(reader_main, NULL);
  shoal *c = open_ok(0);
  uint64_t checked = 0, exact = 0, bad = 0, checks = 0, restart_max = 0,
           restart_sum = 0, heap_first = 0, heap_last = 0, heap_max = 0;
  int done = 0;
  for (; done < kills && !g_failed; done++) {
    pause_writers(0);
    sleep_ms(1 + rnd_below(40));
    REQUIRE(kill(g_broker, SIGKILL) == 0, "kill broker: %s", strerror(errno));
    int st;
    waitpid(g_broker, &st, 0);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
          "broker ended with status 0x%x before the kill", st);
    g_broker = 0;
    uint64_t r0 = now_us();
    start_broker("--size", "64M");
    uint64_t rt = now_us() - r0;
    restart_sum += rt;
    if (rt > restart_max) restart_max = rt;
    pause_writers(1);
    checked += verify_keys(c, &bad, &exact);
    {
      shoal_stats hs = stats(c);
      if (done == 0) heap_first = hs.bytes_used;
      heap_last = hs.bytes_used;
      if (hs.bytes_used > heap_max) heap_max = hs.bytes_used;
      if (getenv("TORTURE_TRACE"))
        fprintf(stderr, "kill %d: keys %" PRIu64 " bytes_used %" PRIu64 " retired %" PRIu64
                " records %" PRIu64 " claimed %" PRIu64 " index %" PRIu64 "/%" PRIu64 "\n", done + 1, hs.keys,
                hs.bytes_used, hs.retired_bytes, hs.records, hs.readers_claimed, hs.index_used, hs.index_capacity);
      if (getenv("TORTURE_TRACE") && hs.retired_bytes > (1u << 20)) {
        char o[8192];
        run_inspect(o, sizeof o, (const char *const[]){"readers", NULL});
        fprintf(stderr, "oldest %" PRIu64 " age %" PRIu64 " commit %" PRIu64 " pids w %d %d %d r %d %d me %d\n%s\n",
                hs.oldest_snapshot, hs.oldest_snapshot_age_ms, hs.commit_seq,
                (int)writers[0], (int)writers[1], (int)writers[2], (int)readers[0], (int)readers[1], (int)getpid(), o);
      }
    }
    char out[4096];
    int irc = run_inspect(out, sizeof out, (const char *const[]){"--check", NULL});
    checks++;
    if (irc != 0) {
      fail("kill %d: shoal-inspect --check exited %d:\n%s", done + 1, irc, out);
      bad++;
    }
    for (int r = 0; r < NR; r++) {
      int rst;
      if (waitpid(readers[r], &rst, WNOHANG) == readers[r]) {
        fail("reader %d died during kill %d (status 0x%x)", r, done + 1, rst);
        forget_kid(readers[r]);
        readers[r] = -1;
      }
    }
  }
  pause_writers(0);
  sleep_ms(200);
  atomic_store(&ks->stop, 1);
  for (int w = 0; w < NW; w++) {
    int st;
    waitpid(writers[w], &st, 0);
    forget_kid(writers[w]);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "writer %d status 0x%x", w, st);
  }
  for (int r = 0; r < NR; r++) {
    if (readers[r] < 0) continue;
    int st;
    waitpid(readers[r], &st, 0);
    forget_kid(readers[r]);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "reader %d status 0x%x", r, st);
  }
  /* a last check with everything quiet, then a clean stop */
  checked += verify_keys(c, &bad, &exact);
  shoal_close(c);
  int st = stop_broker(SIGTERM);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGTERM: status 0x%x", st);
  int irc = run_inspect(NULL, 0, (const char *const[]){"--check", NULL});
  CHECK(irc == 0, "shoal-inspect --check after the clean stop exited %d", irc);
  CHECK(ks->errors == 0, "%" PRIu64 " unexpected write errors", (uint64_t)ks->errors);
  CHECK(ks->lost_del == 0, "%" PRIu64 " deletes found an acknowledged key gone",
        (uint64_t)ks->lost_del);
  CHECK(ks->r_torn == 0 && ks->r_back == 0 && ks->r_err == 0,
        "readers: %" PRIu64 " torn, %" PRIu64 " backwards, %" PRIu64 " errors",
        (uint64_t)ks->r_torn, (uint64_t)ks->r_back, (uint64_t)ks->r_err);
  CHECK(bad == 0, "%" PRIu64 " violations after restarts", bad);
  printf("figures: scenario=kill kills=%d writers=%d readers=%d acked_writes=%" PRIu64
         " unanswered=%" PRIu64 " ops(put=%" PRIu64 " del=%" PRIu64 " cas=%" PRIu64
         " batch=%" PRIu64 " ttl=%" PRIu64 ") key_checks=%" PRIu64
         " exact_matches=%" PRIu64 " violations=%" PRIu64 " inspect_checks=%" PRIu64
         " reader_sections=%" PRIu64 " values_read=%" PRIu64 " torn=%" PRIu64
         " backwards=%" PRIu64 " heap_used(first=%" PRIu64 " max=%" PRIu64 " last=%" PRIu64
         ") restart_avg_ms=%.1f restart_max_ms=%.1f seconds=%.1f\n",
         done, NW, NR, (uint64_t)ks->acked, (uint64_t)ks->unanswered,
         (uint64_t)ks->ops[0], (uint64_t)ks->ops[1], (uint64_t)ks->ops[2],
         (uint64_t)ks->ops[3], (uint64_t)ks->ops[4], checked, exact, bad, checks,
         (uint64_t)ks->r_sections, (uint64_t)ks->r_values, (uint64_t)ks->r_torn,
         (uint64_t)ks->r_back, heap_first, heap_max, heap_last, done ? restart_sum / 1000.0 / done : 0.0,
         restart_max / 1000.0, (now_ms() - t0) / 1000.0);
  fflush(stdout);
  munmap(ks, sizeof *ks);
  return g_failed;
}

/* ============================================ scenario: reader kill / stop */

enum { RK_KEYS = 64, RK_VLEN = 512 };

typedef struct rshared {
  atomic_int end;
} rshared;
static rshared *rs;
static int g_pipe[2];

static void put_key(shoal *c, int i, uint64_t gen, size_t len) {
  char k[32];
  uint8_t v[4096];
  snprintf(k, sizeof k, "r/%03d", i);
  value_make(v, len, k, gen);
  int rc = shoal_put(c, k, strlen(k), v, len, NULL);
  REQUIRE(rc == 0, "put %s: %s (%s)", k, shoal_errname(rc), shoal_last_error(c));
}

/* A victim: open, pin a snapshot, say so on the pipe, then stay inside the
 * section reading (until rs->end: then end the section, say so, wait). */
static int victim_main(void *arg) {
  int spin = (int)(intptr_t)arg;
  shoal *c = NULL;
  int rc = open_client(&c, 0, 4000, 4000);
  if (rc) return 10;
  if (shoal_read_begin(c)) return 11;
  shoal_val v;
  char k[32];
  if (shoal_get(c, "r/000", 5, &v) != 0) return 12;
  char one = 'b';
  if (write(g_pipe[1], &one, 1) != 1) return 13;
  int bad = 0;
  while (!atomic_load(&rs->end)) {
    if (!spin) {
      pause();
      continue;
    }
    int i = (int)rnd_below(RK_KEYS);
    snprintf(k, sizeof k, "r/%03d", i);
    if (shoal_get(c, k, strlen(k), &v) != 0 ||
        !value_check(v.data, v.len, k, strlen(k), NULL))
      bad++;
  }
  shoal_read_end(c);
  one = bad ? 'x' : 'e';
  if (write(g_pipe[1], &one, 1) != 1) return 14;
  for (;;) pause();
}

static int wait_pipe(char *got, int timeout_ms) {
  struct pollfd p = {g_pipe[0], POLLIN, 0};
  if (poll(&p, 1, timeout_ms) <= 0) return -1;
  return read(g_pipe[0], got, 1) == 1 ? 0 : -1;
}

/* Wait until no retired bytes are left and the slots are back to @claimed
 * and @busy; the time it took in ms, or -1 after @timeout_ms. */
static long wait_reclaimed(shoal *c, uint64_t claimed, uint64_t busy,
                           uint64_t retired, uint64_t timeout_ms, shoal_stats *out) {
  uint64_t t0 = now_ms();
  for (;;) {
    shoal_stats st = stats(c);
    if (out) *out = st;
    if (st.readers_claimed == claimed && st.readers_busy == busy &&
        st.retired_bytes <= retired)
      return (long)(now_ms() - t0);
    if (now_ms() - t0 > timeout_ms) return -1;
    usleep(2000);
  }
}

static void setup_reader_store(shoal **c, shoal_stats *base, size_t vlen) {
  start_broker("--size", "64M");
  *c = open_ok(SHOAL_OPEN_NO_SLOT);
  for (int i = 0; i < RK_KEYS; i++) put_key(*c, i, 1, vlen);
  /* overwrite once and let a sweep reclaim, so pages are warm */
  for (int i = 0; i < RK_KEYS; i++) put_key(*c, i, 2, vlen);
  shoal_stats s0 = stats(*c); /* the broker's own slot is claimed */
  long t = wait_reclaimed(*c, s0.readers_claimed, 0, 0, 3000, base);
  REQUIRE(t >= 0, "retired memory of a quiet store not reclaimed within 3 s "
                  "(retired_bytes %" PRIu64 ")", base->retired_bytes);
}

static int scenario_reader_kill(int kills) {
  uint64_t t0 = now_ms();
  new_dirs(NULL);
  rs = shared(sizeof *rs);
  REQUIRE(pipe(g_pipe) == 0, "pipe");
  shoal *c;
  shoal_stats base;
  setup_reader_store(&c, &base, RK_VLEN);
  /* The broker frees the slot of a killed reader at its readers sweep (a
   * 1 s tick, broker/handlers.c: a dying process closes its socket before
   * it is gone, so the close alone can not tell) and its retired memory at
   * the next reclamation (SWEEP_MS): allow the next readers sweep plus 1 s. */
  enum { BATCH = 8, SLOW_SWEEP_MS = 1000 };
  int done = 0;
  long worst = 0;
  uint64_t sum = 0, held_max = 0, gen = 3, rounds = 0;
  while (done < kills && !g_failed) {
    int n = kills - done < BATCH ? kills - done : BATCH;
    pid_t v[BATCH];
    for (int j = 0; j < n; j++) {
      v[j] = fork_kid(victim_main, (void *)(intptr_t)(j & 1));
      char got;
      REQUIRE(wait_pipe(&got, 5000) == 0 && got == 'b',
              "victim %d did not enter its section", (int)v[j]);
      /* each victim pins a different snapshot: overwrite some keys */
      for (int i = 0; i < 8; i++) put_key(c, (int)rnd_below(RK_KEYS), gen++, RK_VLEN);
    }
    shoal_stats mid = stats(c);
    CHECK(mid.readers_busy >= (uint64_t)n, "%" PRIu64 " busy readers with %d victims in sections",
          mid.readers_busy, n);
    CHECK(mid.retired_bytes > base.retired_bytes,
          "no retired memory held while %d readers pin old snapshots", n);
    if (mid.retired_bytes > held_max) held_max = mid.retired_bytes;
    for (int j = 0; j < n; j++) kill(v[j], SIGKILL);
    for (int j = 0; j < n; j++) {
      waitpid(v[j], NULL, 0);
      forget_kid(v[j]);
    }
    shoal_stats after;
    long t = wait_reclaimed(c, base.readers_claimed, base.readers_busy,
                            base.retired_bytes, SLOW_SWEEP_MS + 1000, &after);
    CHECK(t >= 0, "after killing %d readers: claimed %" PRIu64 " busy %" PRIu64
          " retired_bytes %" PRIu64 " still, %d ms later", n, after.readers_claimed,
          after.readers_busy, after.retired_bytes, SLOW_SWEEP_MS + 1000);
    if (t > worst) worst = t;
    if (t > 0) sum += (uint64_t)t;
    done += n;
    rounds++;
  }
  shoal_stats end;
  wait_reclaimed(c, base.readers_claimed, base.readers_busy, base.retired_bytes, 2000, &end);
  CHECK(end.bytes_used <= base.bytes_used,
        "heap use %" PRIu64 " bytes after %d reader kills, baseline %" PRIu64,
        end.bytes_used, done, base.bytes_used);
  char out[65536];
  int irc = run_inspect(out, sizeof out, (const char *const[]){"--json", "readers", NULL});
  CHECK(irc == 0, "shoal-inspect readers exited %d", irc);
  long long claimed = json_num(out, "claimed"), busy = json_num(out, "busy");
  CHECK(claimed == (long long)base.readers_claimed && busy == 0,
        "shoal-inspect readers: claimed %lld busy %lld after the kills:\n%s", claimed,
        busy, out);
  irc = run_inspect(NULL, 0, (const char *const[]){"--check", NULL});
  CHECK(irc == 0, "shoal-inspect --check exited %d", irc);
  shoal_close(c);
  int st = stop_broker(SIGTERM);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGTERM: status 0x%x", st);
  printf("figures: scenario=reader-kill kills=%d rounds=%" PRIu64 " (%d at a time)"
         " sweep_ms=%d readers_sweep_ms=%d reclaim_avg_ms=%.1f reclaim_max_ms=%ld held_max_bytes=%" PRIu64
         " heap_used_base=%" PRIu64 " heap_used_end=%" PRIu64
         " retired_end=%" PRIu64 " inspect_claimed=%lld seconds=%.1f\n",
         done, rounds, BATCH, SWEEP_MS, SLOW_SWEEP_MS, rounds ? (double)sum / (double)rounds : 0.0,
         worst, held_max, base.bytes_used, end.bytes_used, end.retired_bytes, claimed,
         (now_ms() - t0) / 1000.0);
  fflush(stdout);
  close(g_pipe[0]);
  close(g_pipe[1]);
  return g_failed;
}

static int scenario_stop(void) {
  uint64_t t0 = now_ms();
  new_dirs(NULL);
  rs = shared(sizeof *rs);
  REQUIRE(pipe(g_pipe) == 0, "pipe");
  shoal *c, *pinger = NULL;
  shoal_stats base;
  enum { VLEN = 2048 };
  setup_reader_store(&c, &base, VLEN);
  pinger = open_ok(SHOAL_OPEN_NO_SLOT);
  pid_t v = fork_kid(victim_main, (void *)(intptr_t)1);
  char got;
  REQUIRE(wait_pipe(&got, 5000) == 0 && got == 'b', "victim did not start");
  sleep_ms(20);
  REQUIRE(kill(v, SIGSTOP) == 0, "SIGSTOP");
  /* 2.5 s of writes; ping from a second connection after every 20 puts */
  uint64_t gen = 10, puts = 0, pings = 0, ping_max = 0, lat[4096];
  uint64_t until = now_ms() + 2500, prev_retired = base.retired_bytes, grew = 0,
           samples = 0;
  while (now_ms() < until) {
    /* at most 24 MiB of overwrites: the 64 MiB store must not fill up */
    for (int i = 0; i < 20 && puts * VLEN < (24u << 20); i++, puts++)
      put_key(c, (int)rnd_below(RK_KEYS), gen++, VLEN);
    uint64_t p0 = now_us();
    int rc = shoal_ping(pinger);
    uint64_t dt = now_us() - p0;
    CHECK(rc == 0, "ping: %s", shoal_errname(rc));
    if (pings < 4096) lat[pings] = dt;
    pings++;
    if (dt > ping_max) ping_max = dt;
    if (pings % 25 == 0) {
      shoal_stats st = stats(pinger);
      samples++;
      if (st.retired_bytes >= prev_retired) grew++;
      prev_retired = st.retired_bytes;
    }
  }
  shoal_stats held = stats(pinger);
  uint64_t n = pings < 4096 ? pings : 4096;
  for (uint64_t i = 1; i < n; i++) /* insertion sort: n is small */
    for (uint64_t j = i; j > 0 && lat[j - 1] > lat[j]; j--) {
      uint64_t t = lat[j];
      lat[j] = lat[j - 1];
      lat[j - 1] = t;
    }
  uint64_t p99 = n ? lat[n * 99 / 100] : 0;
  uint64_t wrote = puts * VLEN;
  CHECK(held.retired_bytes >= base.retired_bytes + wrote / 2,
        "retired_bytes %" PRIu64 " after %" PRIu64 " bytes overwritten with a stopped reader",
        held.retired_bytes, wrote);
  CHECK(grew == samples, "retired memory shrank while the reader was stopped (%" PRIu64
        " of %" PRIu64 " samples grew)", grew, samples);
  CHECK(held.oldest_snapshot_age_ms >= 2000, "Stats oldest_snapshot_age_ms %" PRIu64,
        held.oldest_snapshot_age_ms);
  CHECK(held.readers_busy >= 1, "Stats readers_busy %" PRIu64, held.readers_busy);
  CHECK(p99 < 20000, "ping p99 %" PRIu64 " us while a reader is stopped", p99);
  char out[65536];
  int irc = run_inspect(out, sizeof out, (const char *const[]){"--json", "readers", NULL});
  CHECK(irc == 0, "shoal-inspect readers exited %d", irc);
  char pat[48];
  snprintf(pat, sizeof pat, "\"pid\":%d", (int)v);
  const char *me = strstr(out, pat);
  long long age = me ? json_num(me, "age_ms") : -1;
  long long lag = me ? json_num(me, "lag") : -1;
  CHECK(me && age >= 2000 && lag > 0,
        "shoal-inspect readers --json: victim %d age_ms %lld lag %lld:\n%s", (int)v,
        age, lag, out);
  /* let it go: end the section (the connection stays open) */
  atomic_store(&rs->end, 1);
  kill(v, SIGCONT);
  REQUIRE(wait_pipe(&got, 5000) == 0, "victim did not end its section");
  CHECK(got == 'e', "the stopped reader saw bad values in its snapshot");
  shoal_stats after;
  long t = wait_reclaimed(c, base.readers_claimed + 1, 0, base.retired_bytes,
                          SWEEP_MS + 2000, &after);
  CHECK(t >= 0, "after read_end: retired_bytes %" PRIu64 " (baseline %" PRIu64 ")",
        after.retired_bytes, base.retired_bytes);
  CHECK(after.bytes_used <= base.bytes_used + 64 * 1024,
        "heap use %" PRIu64 " after the section ended, baseline %" PRIu64,
        after.bytes_used, base.bytes_used);
  kill(v, SIGKILL);
  waitpid(v, NULL, 0);
  forget_kid(v);
  shoal_close(pinger);
  shoal_close(c);
  int st = stop_broker(SIGTERM);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGTERM: status 0x%x", st);
  printf("figures: scenario=stop stopped_s=2.5 puts=%" PRIu64 " overwritten_bytes=%" PRIu64
         " retired_base=%" PRIu64 " retired_held=%" PRIu64 " heap_used_base=%" PRIu64
         " heap_used_held=%" PRIu64 " stats_oldest_age_ms=%" PRIu64
         " inspect_age_ms=%lld inspect_lag=%lld pings=%" PRIu64 " ping_p99_us=%" PRIu64
         " ping_max_us=%" PRIu64 " reclaim_after_end_ms=%ld heap_used_after=%" PRIu64
         " retired_after=%" PRIu64 " seconds=%.1f\n",
         puts, wrote, base.retired_bytes, held.retired_bytes, base.bytes_used,
         held.bytes_used, held.oldest_snapshot_age_ms, age, lag, pings, p99, ping_max,
         t, after.bytes_used, after.retired_bytes, (now_ms() - t0) / 1000.0);
  fflush(stdout);
  close(g_pipe[0]);
  close(g_pipe[1]);
  return g_failed;
}

/* ==================================================== scenario: faults */

/* Fill the store with @vlen-byte values until a put fails: that failure
 * must be SHOAL_ENOSPC; then the broker keeps serving @other, reads work,
 * deletes work, and after a sweep the space is usable again. */
static void fill_and_recover(const char *what, size_t vlen, uint64_t max_puts,
                             uint64_t *puts_out, int *rc_out) {
  shoal *c = open_ok(0), *other = open_ok(SHOAL_OPEN_NO_SLOT);
  uint8_t *v = malloc(vlen);
  char k[32];
  uint64_t i = 0;
  int rc = 0;
  for (; i < max_puts; i++) {
    snprintf(k, sizeof k, "f/%06" PRIu64, i);
    value_make(v, vlen, k, i + 1);
    rc = shoal_put(c, k, strlen(k), v, vlen, NULL);
    if (rc) break;
  }
  *puts_out = i;
  *rc_out = rc;
  CHECK(rc == SHOAL_ENOSPC, "%s: the put after %" PRIu64 " puts returned %s (%s), expected SHOAL_ENOSPC",
        what, i, shoal_errname(rc), shoal_last_error(c));
  CHECK(kill(g_broker, 0) == 0, "%s: the broker is gone", what);
  CHECK(shoal_ping(other) == 0, "%s: ping from another client failed", what);
  /* the store is intact: every stored value reads back */
  int ok = shoal_read_begin(c) == 0;
  uint64_t good = 0;
  for (uint64_t j = 0; ok && j < i; j++) {
    shoal_val sv;
    snprintf(k, sizeof k, "f/%06" PRIu64, j);
    if (shoal_get(c, k, strlen(k), &sv) == 0 && value_check(sv.data, sv.len, k, strlen(k), NULL))
      good++;
  }
  if (ok) shoal_read_end(c);
  CHECK(good == i, "%s: %" PRIu64 " of %" PRIu64 " values read back", what, good, i);
  /* deletes still work when full; then puts work again after a sweep */
  uint64_t dels = 0;
  for (uint64_t j = 0; j < i; j += 2) {
    snprintf(k, sizeof k, "f/%06" PRIu64, j);
    int d = shoal_del(c, k, strlen(k));
    CHECK(d == 0, "%s: delete %s when full: %s (%s)", what, k, shoal_errname(d),
          shoal_last_error(c));
    if (d == 0) dels++;
  }
  uint64_t t0 = now_ms();
  int prc = -1;
  while (now_ms() - t0 < 3000) {
    snprintf(k, sizeof k, "f/again");
    value_make(v, vlen, k, 1);
    prc = shoal_put(c, k, strlen(k), v, vlen, NULL);
    if (prc == 0) break;
    sleep_ms(20);
  }
  CHECK(prc == 0, "%s: a put after deleting %" PRIu64 " values still fails: %s", what, dels,
        shoal_errname(prc));
  printf("  %s: %" PRIu64 " puts of %zu bytes, then %s; other client's ping ok; %" PRIu64
         " values intact; %" PRIu64 " deletes ok; put ok again after %" PRIu64 " ms\n",
         what, i, vlen, shoal_errname(rc), good, dels, now_ms() - t0);
  free(v);
  shoal_close(other);
  shoal_close(c);
}

static int raw_hello(int fd) {
  Shoal__Hello h = rf_hello_msg("broker-torture-raw");
  Shoal__Request req = SHOAL__REQUEST__INIT;
  req.has_id = 1;
  req.id = 1;
  req.body_case = SHOAL__REQUEST__BODY_HELLO;
  req.hello = &h;
  uint8_t buf[256];
  size_t n = rf_pack(&req, buf, sizeof buf);
  if (!n || rf_write(fd, buf, n)) return -1;
  Shoal__Response *r = rf_recv(fd, 5000, NULL);
  if (!r) return -1;
  int st = r->has_status ? r->status : 0;
  shoal__response__free_unpacked(r, NULL);
  return st;
}

static int fault_shm_full(void) {
  /* a 16 MiB tmpfs as --shm-dir, the store reserved at 64 MiB: the tmpfs
   * fills first, and fallocate must turn that into SHOAL_ENOSPC */
  new_dirs(NULL);
  char mnt[128];
  snprintf(mnt, sizeof mnt, "%s/tmpfs", g_base);
  mkdir(mnt, 0700);
  if (mount("tmpfs", mnt, "tmpfs", 0, "size=16m,mode=0700") != 0) {
    printf("  shm-full: SKIPPED: cannot mount a small tmpfs here (%s; needs root "
           "or CAP_SYS_ADMIN)\n", strerror(errno));
    return 0;
  }
  snprintf(g_mnt, sizeof g_mnt, "%s", mnt);
  snprintf(g_shm, sizeof g_shm, "%s", mnt);
  start_broker("--size", "64M");
  uint64_t puts;
  int rc;
  fill_and_recover("shm-full (16 MiB tmpfs, --size 64M)", 64 * 1024, 100000, &puts, &rc);
  int irc = run_inspect(NULL, 0, (const char *const[]){"--check", NULL});
  CHECK(irc == 0, "shm-full: shoal-inspect --check exited %d", irc);
  int st = stop_broker(SIGTERM);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "shm-full: SIGTERM: status 0x%x", st);
  if (umount(g_mnt) != 0) umount2(g_mnt, MNT_DETACH);
  g_mnt[0] = 0;
  return 0;
}

static int fault_size(void) {
  new_dirs(NULL);
  start_broker("--size", "4M");
  uint64_t puts;
  int rc;
  fill_and_recover("size-reached (--size 4M)", 16 * 1024, 100000, &puts, &rc);
  int irc = run_inspect(NULL, 0, (const char *const[]){"--check", NULL});
  CHECK(irc == 0, "size-reached: shoal-inspect --check exited %d", irc);
  int st = stop_broker(SIGTERM);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "size-reached: SIGTERM: status 0x%x", st);
  return 0;
}

static int file_contains(const char *path, const char *needle) {
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  char line[4096];
  int hit = 0;
  while (!hit && fgets(line, sizeof line, f)) hit = strstr(line, needle) != NULL;
  fclose(f);
  return hit;
}

static int fault_fds(void) {
  new_dirs(NULL);
  enum { LIMIT = 64, EXTRA = 120 };
  const char *const extra[] = {"--size", "16M", NULL};
  pid_t b = start_broker_lim(LIMIT, extra);
  shoal *a = open_ok(0), *bb = open_ok(SHOAL_OPEN_NO_SLOT);
  int fds[EXTRA], nfd = 0;
  for (int i = 0; i < EXTRA; i++) {
    int fd = sock_connect(1);
    if (fd >= 0) fds[nfd++] = fd;
  }
  sleep_ms(300); /* the broker accepts until it runs out */
  uint64_t cpu0 = cpu_ms(b), w0 = now_ms();
  /* established clients keep working while the broker is out of fds */
  uint64_t ok = 0, worst = 0;
  for (int i = 0; i < 100; i++) {
    uint64_t t = now_us();
    char v[16];
    int n = snprintf(v, sizeof v, "%d", i);
    int rc = shoal_put(a, "fd/k", 4, v, (size_t)n, NULL);
    int rc2 = shoal_ping(bb);
    t = now_us() - t;
    if (t > worst) worst = t;
    if (rc == 0 && rc2 == 0) ok++;
    sleep_ms(10);
  }
  uint64_t cpu = cpu_ms(b) - cpu0, wall = now_ms() - w0;
  CHECK(ok == 100, "fds: %" PRIu64 " of 100 put+ping rounds of connected clients worked", ok);
  CHECK(cpu * 2 < wall, "fds: the broker burnt %" PRIu64 " ms of CPU in %" PRIu64
        " ms while out of descriptors (spinning on accept?)", cpu, wall);
  int logged = file_contains(g_log, "accept_paused");
  CHECK(logged, "fds: the broker log does not say it ran out of descriptors");
  shoal_stats st = stats(a);
  uint64_t conns_full = st.connections;
  for (int i = 0; i < nfd; i++) close(fds[i]);
  /* recovery: a new client gets in once descriptors are free again */
  uint64_t t0 = now_ms();
  shoal *n = NULL;
  int rc = -1;
  while (now_ms() - t0 < 5000) {
    rc = open_client(&n, 0, 1000, 2000);
    if (rc == 0) break;
    sleep_ms(50);
  }
  CHECK(rc == 0, "fds: no new client could connect after the others closed: %s",
        shoal_errname(rc));
  if (rc == 0) {
    CHECK(shoal_put(n, "fd/new", 6, "x", 1, NULL) == 0, "fds: put on a new client");
    shoal_close(n);
  }
  uint64_t rec_ms = now_ms() - t0;
  shoal_close(a);
  shoal_close(bb);
  int s = stop_broker(SIGTERM);
  CHECK(WIFEXITED(s) && WEXITSTATUS(s) == 0, "fds: SIGTERM: status 0x%x", s);
  printf("  fds: shoald under RLIMIT_NOFILE %d, %d extra connections opened "
         "(broker held %" PRIu64 "); 2 connected clients: %" PRIu64
         "/100 put+ping ok, worst %" PRIu64 " us; broker CPU %" PRIu64 " ms in %" PRIu64
         " ms; logged accept_paused: %s; new client in after %" PRIu64 " ms\n",
         LIMIT, nfd, conns_full, ok, worst, cpu, wall, logged ? "yes" : "no", rec_ms);
  return 0;
}

static int fault_no_read(void) {
  new_dirs(NULL);
  pid_t b = start_broker("--size", "64M", "--max-output", "256k");
  shoal *c = open_ok(SHOAL_OPEN_NO_SLOT);
  enum { BIG = 1 << 20, FLOOD = 200 };
  uint8_t *big = malloc(BIG);
  value_make(big, BIG, "big", 1);
  REQUIRE(shoal_put(c, "big", 3, big, BIG, NULL) == 0, "put big");
  free(big);
  uint64_t rss0 = rss_bytes(b);
  shoal_stats s0 = stats(c);
  const char *g0p = s0.requests ? strstr(s0.requests, "get=") : NULL;
  uint64_t gets0 = g0p ? strtoull(g0p + 4, NULL, 10) : 0;
  int fd = sock_connect(0);
  REQUIRE(fd >= 0 && raw_hello(fd) == 0, "raw hello");
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  Shoal__Get g = SHOAL__GET__INIT;
  g.has_key = 1;
  g.key.data = (uint8_t *)"big";
  g.key.len = 3;
  uint8_t frames[FLOOD * 64];
  size_t len = 0;
  for (int i = 0; i < FLOOD; i++) {
    Shoal__Request q = SHOAL__REQUEST__INIT;
    q.has_id = 1;
    q.id = (uint64_t)i + 2;
    q.body_case = SHOAL__REQUEST__BODY_GET;
    q.get = &g;
    len += rf_pack(&q, frames + len, sizeof frames - len);
  }
  size_t off = 0;
  uint64_t blocked = 0;
  while (off < len) {
    ssize_t w = send(fd, frames + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w > 0) {
      off += (size_t)w;
      blocked = 0;
      continue;
    }
    if (!blocked) blocked = now_ms();
    if (now_ms() - blocked > 1000) break;
    sleep_ms(20);
  }
  uint64_t rtt_max = 0, rss_max = 0, puts = 0;
  uint64_t until = now_ms() + 1000;
  while (now_ms() < until) {
    uint64_t t = now_us();
    int rc = shoal_put(c, "small", 5, "v", 1, NULL);
    CHECK(rc == 0, "no-read: put from a good client: %s", shoal_errname(rc));
    t = now_us() - t;
    if (t > rtt_max) rtt_max = t;
    uint64_t r = rss_bytes(b);
    if (r > rss_max) rss_max = r;
    puts++;
    sleep_ms(10);
  }
  shoal_stats s1 = stats(c);
  const char *g1p = s1.requests ? strstr(s1.requests, "get=") : NULL;
  uint64_t served = (g1p ? strtoull(g1p + 4, NULL, 10) : 0) - gets0;
  CHECK(rtt_max < 1000000, "no-read: a put took %" PRIu64 " us", rtt_max);
  CHECK(rss_max < rss0 + (64u << 20), "no-read: broker RSS %" PRIu64 " -> %" PRIu64,
        rss0, rss_max);
  CHECK(served <= 8, "no-read: the broker served %" PRIu64 " of %d Gets to a client "
        "that never reads (--max-output 256k)", served, FLOOD);
  close(fd);
  uint64_t t0 = now_ms();
  shoal_stats s2;
  do {
    s2 = stats(c);
  } while (s2.connections > s0.connections && now_ms() - t0 < 2000 && (usleep(5000), 1));
  CHECK(s2.connections == s0.connections, "no-read: %" PRIu64 " connections after the "
        "flooder closed, %" PRIu64 " before", s2.connections, s0.connections);
  shoal_close(c);
  int st = stop_broker(SIGTERM);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "no-read: SIGTERM: status 0x%x", st);
  printf("  no-read: --max-output 256k, %d pipelined 1 MiB Gets never read: %zu of %zu "
         "bytes sent, %" PRIu64 " served; other client %" PRIu64 " puts, worst %" PRIu64
         " us; broker RSS %" PRIu64 " -> max %" PRIu64 " KiB\n",
         FLOOD, off, len, served, puts, rtt_max, rss0 >> 10, rss_max >> 10);
  return 0;
}

static int fault_loris(void) {
  new_dirs(NULL);
  start_broker("--size", "16M");
  shoal *c = open_ok(SHOAL_OPEN_NO_SLOT);
  enum { NL = 3 };
  int fds[NL];
  for (int i = 0; i < NL; i++) {
    fds[i] = sock_connect(0);
    REQUIRE(fds[i] >= 0 && raw_hello(fds[i]) == 0, "loris hello");
  }
  Shoal__Ping p = SHOAL__PING__INIT;
  p.has_payload = 1;
  p.payload.data = (uint8_t *)"zz";
  p.payload.len = 2;
  Shoal__Request q = SHOAL__REQUEST__INIT;
  q.has_id = 1;
  q.id = 77;
  q.body_case = SHOAL__REQUEST__BODY_PING;
  q.ping = &p;
  uint8_t buf[64];
  size_t n = rf_pack(&q, buf, sizeof buf);
  uint64_t pings = 0, worst = 0, t0 = now_ms();
  for (size_t i = 0; i < n; i++) {
    for (int l = 0; l < NL; l++)
      /* the last loris gives up half way (a client that vanished) */
      if (!(l == NL - 1 && i >= n / 2)) CHECK(rf_write(fds[l], buf + i, 1) == 0, "loris write");
    if (i == n / 2) close(fds[NL - 1]);
    uint64_t until = now_ms() + 1000;
    while (now_ms() < until) {
      uint64_t t = now_us();
      int rc = shoal_ping(c);
      t = now_us() - t;
      CHECK(rc == 0, "loris: ping of another client: %s", shoal_errname(rc));
      if (t > worst) worst = t;
      pings++;
      sleep_ms(5);
    }
  }
  int answered = 0;
  for (int l = 0; l < NL - 1; l++) {
    Shoal__Response *r = rf_recv(fds[l], 2000, NULL);
    CHECK(r && r->id == 77 && (!r->has_status || r->status == 0),
          "loris %d: no good reply to its slow Ping", l);
    if (r) {
      answered++;
      shoal__response__free_unpacked(r, NULL);
    }
    close(fds[l]);
  }
  CHECK(worst < 100000, "loris: a ping took %" PRIu64 " us", worst);
  shoal_close(c);
  int st = stop_broker(SIGTERM);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "loris: SIGTERM: status 0x%x", st);
  printf("  loris: %d clients sent a %zu-byte Ping frame one byte per second (one "
         "vanished half way): %d answered; another client's %" PRIu64
         " pings meanwhile, worst %" PRIu64 " us; %.1f s\n",
         NL, n, answered, pings, worst, (now_ms() - t0) / 1000.0);
  return 0;
}

static int scenario_faults(void) {
  uint64_t t0 = now_ms();
  printf("faults:\n");
  fault_shm_full();
  fault_size();
  fault_fds();
  fault_no_read();
  fault_loris();
  printf("figures: scenario=faults failures=%d seconds=%.1f\n", g_failed,
         (now_ms() - t0) / 1000.0);
  fflush(stdout);
  return g_failed;
}

/* ================================================================ main */

int main(int argc, char **argv) {
  int kills = 200, rkills = 200;
  const char *scen = "kill,reader-kill,stop,faults";
  g_seed = (uint64_t)time(NULL) ^ (uint64_t)getpid() << 16;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--kills") && i + 1 < argc) kills = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--reader-kills") && i + 1 < argc) rkills = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--scenario") && i + 1 < argc) scen = argv[++i];
    else if (!strcmp(argv[i], "--seed") && i + 1 < argc) g_seed = strtoull(argv[++i], NULL, 0);
    else {
      fprintf(stderr, "usage: broker-torture [--scenario kill,reader-kill,stop,faults|all]"
                      " [--kills N] [--reader-kills N] [--seed N]\n");
      return 2;
    }
  }
  if (!strcmp(scen, "all")) scen = "kill,reader-kill,stop,faults";
  rng_state ^= g_seed * 0x9E3779B97F4A7C15ull;
  g_shoald = getenv("SHOAL_TEST_SHOALD");
  if (!g_shoald || !*g_shoald) g_shoald = SHOAL_TEST_SHOALD_DEFAULT;
  g_inspect = getenv("SHOAL_TEST_INSPECT");
  if (!g_inspect || !*g_inspect) g_inspect = SHOAL_TEST_INSPECT_DEFAULT;
  g_main_pid = getpid();
  atexit(cleanup);
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  signal(SIGALRM, on_signal);
  signal(SIGPIPE, SIG_IGN);
  printf("broker-torture: seed %" PRIu64 " (rerun with --seed %" PRIu64 ")\n", g_seed, g_seed);
  fflush(stdout);
  char list[256];
  snprintf(list, sizeof list, "%s", scen);
  for (char *save = NULL, *s = strtok_r(list, ",", &save); s; s = strtok_r(NULL, ",", &save)) {
    if (!strcmp(s, "kill")) scenario_kill(kills);
    else if (!strcmp(s, "reader-kill")) scenario_reader_kill(rkills);
    else if (!strcmp(s, "stop")) scenario_stop();
    else if (!strcmp(s, "faults")) scenario_faults();
    else {
      fprintf(stderr, "broker-torture: unknown scenario %s\n", s);
      return 2;
    }
    if (g_failed) break;
  }
  if (g_failed) {
    dump_log();
    printf("broker-torture: FAILED (%d)\n", g_failed);
    return 1;
  }
  printf("broker-torture: ok\n");
  return 0;
}
