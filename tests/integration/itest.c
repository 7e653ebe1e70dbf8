/*
 * itest.c - helpers of the integration tests; see itest.h for the fixture
 * and cleanup scheme.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "itest.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

char it_base[IT_PATH / 2];
char it_dir[IT_PATH / 2];
char it_rundir[IT_PATH * 3 / 4];
char it_shmdir[IT_PATH * 3 / 4];
char it_sock[IT_PATH];
const char *it_shoald;
const char *it_cli;
pid_t it_broker;

/* Every broker started by this test process, for the exit hook. */
#define MAX_BROKERS 32
const char *it_notify_socket;
static pid_t brokers[MAX_BROKERS];
static pid_t owner; /* the test process: children never clean up */
static char broker_log[IT_PATH];

/* ------------------------------------------------------------ dirs ------ */

static int rm_one(const char *path, const struct stat *sb, int flag,
                  struct FTW *ftw) {
  (void)sb;
  (void)ftw;
  if (flag == FTW_DP || flag == FTW_D)
    rmdir(path);
  else
    unlink(path);
  return 0;
}

void it_rmtree(const char *path) {
  if (path && *path) nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int it_mkdtemp(char *buf, size_t cap, const char *parent, const char *prefix) {
  int n = snprintf(buf, cap, "%s/%sXXXXXX", parent, prefix);
  if (n < 0 || (size_t)n >= cap) return -ENAMETOOLONG;
  return mkdtemp(buf) ? 0 : -errno;
}

/* ----------------------------------------------------------- fixtures --- */

void it_base_setup(void) {
  const char *root = getenv("SHOAL_TEST_SHM_DIR");
  if (!root || !*root) root = "/dev/shm";
  if (it_mkdtemp(it_base, sizeof it_base, root, "shoal-itest-") != 0 &&
      it_mkdtemp(it_base, sizeof it_base, "/tmp", "shoal-itest-") != 0) {
    perror("mkdtemp");
    abort();
  }
  /* other uids (the access test) must reach the test directories */
  chmod(it_base, 0755);
}

void it_base_teardown(void) {
  it_rmtree(it_base);
  it_base[0] = 0;
}

static void kill_brokers(void) {
  for (int i = 0; i < MAX_BROKERS; i++) {
    if (brokers[i] > 0) {
      kill(brokers[i], SIGKILL);
      waitpid(brokers[i], NULL, 0);
      brokers[i] = 0;
    }
  }
  it_broker = 0;
}

static void exit_hook(void) {
  if (getpid() != owner) return;
  kill_brokers();
  if (it_dir[0]) it_rmtree(it_dir);
  it_dir[0] = 0;
}

void it_setup(void) {
  static int hooked;
  owner = getpid();
  if (!hooked) {
    atexit(exit_hook);
    hooked = 1;
  }
  if (!it_base[0]) it_base_setup(); /* CK_FORK=no */
  it_shoald = getenv("SHOAL_TEST_SHOALD");
  it_cli = getenv("SHOAL_TEST_CLI");
#ifdef SHOAL_TEST_SHOALD_DEFAULT
  if (!it_shoald || !*it_shoald) it_shoald = SHOAL_TEST_SHOALD_DEFAULT;
#endif
#ifdef SHOAL_TEST_CLI_DEFAULT
  if (!it_cli || !*it_cli) it_cli = SHOAL_TEST_CLI_DEFAULT;
#endif
  ck_assert_msg(it_shoald && access(it_shoald, X_OK) == 0,
                "SHOAL_TEST_SHOALD must name the shoald binary, got %s",
                it_shoald ? it_shoald : "(unset)");
  ck_assert_int_eq(it_mkdtemp(it_dir, sizeof it_dir, it_base, "t-"), 0);
  chmod(it_dir, 0755);
  snprintf(it_rundir, sizeof it_rundir, "%s/run", it_dir);
  snprintf(it_shmdir, sizeof it_shmdir, "%s/shm", it_dir);
  snprintf(it_sock, sizeof it_sock, "%s/%s.sock", it_rundir, IT_NAME);
  snprintf(broker_log, sizeof broker_log, "%s/broker.log", it_dir);
  ck_assert_int_eq(mkdir(it_rundir, 0755), 0);
  ck_assert_int_eq(mkdir(it_shmdir, 0755), 0);
  /* the clients' defaults lead to this test's broker */
  setenv("SHOAL_RUNDIR", it_rundir, 1);
  setenv("SHOAL_SOCKET", it_sock, 1);
  setenv("SHOAL_SHM_DIR", it_shmdir, 1);
  /* writes to a dead socket must give EPIPE, not kill the test */
  signal(SIGPIPE, SIG_IGN);
}

void it_teardown(void) {
  kill_brokers();
  it_rmtree(it_dir);
  it_dir[0] = 0;
}

TCase *it_tcase(const char *name, double timeout) {
  TCase *tc = tcase_create(name);
  tcase_add_unchecked_fixture(tc, it_base_setup, it_base_teardown);
  tcase_add_checked_fixture(tc, it_setup, it_teardown);
  tcase_set_timeout(tc, timeout);
  return tc;
}

int it_run_suite(Suite *s) {
  SRunner *sr = srunner_create(s);
  srunner_set_fork_status(sr, CK_FORK);
  const char *f = getenv("CK_FORK");
  if (f && strcmp(f, "no") == 0) srunner_set_fork_status(sr, CK_NOFORK);
  srunner_run_all(sr, CK_ENV);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? 0 : 1;
}

/* ------------------------------------------------------------- broker --- */

static void remember(pid_t pid) {
  for (int i = 0; i < MAX_BROKERS; i++) {
    if (brokers[i] <= 0) {
      brokers[i] = pid;
      return;
    }
  }
}

static void forget(pid_t pid) {
  for (int i = 0; i < MAX_BROKERS; i++)
    if (brokers[i] == pid) brokers[i] = 0;
}

static pid_t spawn(const char *log, const char *first, va_list ap) {
  const char *argv[64];
  int n = 0;
  argv[n++] = it_shoald;
  argv[n++] = "--name";
  argv[n++] = IT_NAME;
  argv[n++] = "--shm-dir";
  argv[n++] = it_shmdir;
  for (const char *a = first; a && n < 62; a = va_arg(ap, const char *))
    argv[n++] = a;
  argv[n] = NULL;
  if (!log) log = broker_log;
  int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  ck_assert_msg(fd >= 0, "open %s: %s", log, strerror(errno));
  {
    char line[1024];
    int len = snprintf(line, sizeof line, "---- itest: starting");
    for (int i = 0; i < n && len < (int)sizeof line - 64; i++)
      len += snprintf(line + len, sizeof line - (size_t)len, " %s", argv[i]);
    line[len++] = '\n';
    ssize_t w = write(fd, line, (size_t)len);
    (void)w;
  }
  pid_t parent = getpid();
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    /* die with the test process, even a SIGKILLed one */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    int nul = open("/dev/null", O_RDONLY);
    if (nul >= 0) dup2(nul, STDIN_FILENO);
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    signal(SIGPIPE, SIG_DFL);
    /* check's alarm/timeout handlers are not the broker's business */
    signal(SIGALRM, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    setenv("SHOAL_RUNDIR", it_rundir, 1);
    setenv("SHOAL_SHM_DIR", it_shmdir, 1);
    /* only a test of sd_notify gives the broker a NOTIFY_SOCKET */
    if (it_notify_socket)
      setenv("NOTIFY_SOCKET", it_notify_socket, 1);
    else
      unsetenv("NOTIFY_SOCKET");
    execv(it_shoald, (char *const *)argv);
    fprintf(stderr, "exec %s: %s\n", it_shoald, strerror(errno));
    _exit(127);
  }
  close(fd);
  remember(pid);
  return pid;
}

pid_t it_spawn_broker(const char *log, const char *arg, ...) {
  va_list ap;
  va_start(ap, arg);
  pid_t pid = spawn(log, arg, ap);
  va_end(ap);
  return pid;
}

static int try_connect(const char *path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  struct sockaddr_un sa;
  it_sockaddr(&sa, path);
  int ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
  close(fd);
  return ok;
}

pid_t it_start_broker(const char *arg, ...) {
  va_list ap;
  va_start(ap, arg);
  pid_t pid = spawn(NULL, arg, ap);
  va_end(ap);
  uint64_t deadline = it_now_ms() + 10000;
  for (;;) {
    if (try_connect(it_sock)) break;
    int st;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) {
      forget(pid);
      it_dump_log(broker_log);
      ck_abort_msg("shoald exited before listening (status 0x%x: %s %d)", st,
                   WIFEXITED(st) ? "exit" : "signal",
                   WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    }
    if (it_now_ms() > deadline) {
      it_dump_log(broker_log);
      ck_abort_msg("shoald did not accept on %s within 10 s", it_sock);
    }
    it_sleep_ms(10);
  }
  it_broker = pid;
  return pid;
}

int it_wait_exit(pid_t pid, int timeout_ms) {
  uint64_t deadline = it_now_ms() + (uint64_t)timeout_ms;
  for (;;) {
    int st;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) {
      forget(pid);
      return st;
    }
    if (r < 0 && errno != EINTR) return -1;
    if (it_now_ms() >= deadline) return -1;
    it_sleep_ms(5);
  }
}

int it_stop_broker(int sig) {
  ck_assert_msg(it_broker > 0, "no broker running");
  pid_t pid = it_broker;
  kill(pid, sig);
  int st = it_wait_exit(pid, 10000);
  if (st == -1) {
    it_dump_log(broker_log);
    kill(pid, SIGKILL);
    st = it_wait_exit(pid, 10000);
    ck_abort_msg("shoald did not exit within 10 s of signal %d", sig);
  }
  it_broker = 0;
  return st;
}

char *it_read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap + 1);
  for (;;) {
    if (n == cap) {
      cap *= 2;
      buf = realloc(buf, cap + 1);
    }
    size_t r = fread(buf + n, 1, cap - n, f);
    if (r == 0) break;
    n += r;
  }
  fclose(f);
  buf[n] = 0;
  if (len) *len = n;
  return buf;
}

void it_dump_log(const char *log) {
  if (!log) log = broker_log;
  size_t n;
  char *s = it_read_file(log, &n);
  if (!s) return;
  const char *p = n > 4096 ? s + n - 4096 : s;
  fprintf(stderr, "---- %s (tail) ----\n%s---- end ----\n", log, p);
  free(s);
}

int it_file_contains(const char *path, const char *needle) {
  char *s = it_read_file(path, NULL);
  if (!s) return 0;
  int found = strcasestr(s, needle) != NULL;
  free(s);
  return found;
}

/* ------------------------------------------------------------- clients -- */

void it_sockaddr(struct sockaddr_un *sa, const char *path) {
  size_t n = strlen(path);
  ck_assert_msg(n < sizeof sa->sun_path, "socket path too long: %s", path);
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  memcpy(sa->sun_path, path, n + 1);
}

int it_open(shoal **c, unsigned flags) { return it_open_ct(c, flags, 5000); }

int it_open_ct(shoal **c, unsigned flags, int connect_timeout_ms) {
  shoal_options o;
  memset(&o, 0, sizeof o);
  o.socket = it_sock;
  o.flags = flags;
  o.client = "itest";
  o.timeout_ms = 10000;
  o.connect_timeout_ms = connect_timeout_ms;
  *c = NULL;
  return shoal_open(c, IT_NAME, &o);
}

shoal *it_open_ok(void) {
  shoal *c = NULL;
  int rc = it_open(&c, 0);
  if (rc) it_dump_log(broker_log);
  ck_assert_msg(rc == 0, "shoal_open: %s (%s)", shoal_errname(rc),
                shoal_last_error(NULL));
  return c;
}

pid_t it_fork(int (*fn)(void *), void *arg, unsigned secs) {
  fflush(NULL);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    signal(SIGALRM, SIG_DFL);
    alarm(secs ? secs : 60); /* never outlive a stuck test */
    int r = fn(arg);
    fflush(NULL);
    _exit(r & 0xff);
  }
  return pid;
}

void it_wait_ok(pid_t pid, const char *what) {
  int st = 0;
  pid_t r;
  while ((r = waitpid(pid, &st, 0)) < 0 && errno == EINTR) {
  }
  ck_assert_int_eq(r, pid);
  ck_assert_msg(!WIFSIGNALED(st), "%s (pid %d) killed by signal %d (%s)", what,
                (int)pid, WTERMSIG(st), strsignal(WTERMSIG(st)));
  ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                "%s (pid %d) failed: exit status %d (see its stderr above)",
                what, (int)pid, WEXITSTATUS(st));
}

void *it_shared(size_t size) {
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                 -1, 0);
  ck_assert_msg(p != MAP_FAILED, "mmap: %s", strerror(errno));
  return p;
}

/* --------------------------------------------------------------- time --- */

uint64_t it_now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t it_now_ms(void) { return it_now_us() / 1000u; }

void it_sleep_ms(unsigned ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* ------------------------------------------------------------- values --- */

static uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}

static uint64_t seed(const char *key, uint64_t gen, size_t len) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (const char *p = key; *p; p++) h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
  return mix64(h ^ mix64(gen) ^ len) | 1;
}

/* Layout: u64 gen, u64 len, then xorshift bytes from seed(key, gen, len). */
void it_value_make(void *buf, size_t len, const char *key, uint64_t gen) {
  uint8_t *b = buf;
  uint64_t l = len;
  memcpy(b, &gen, 8);
  memcpy(b + 8, &l, 8);
  uint64_t x = seed(key, gen, len);
  for (size_t i = 16; i < len; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b[i] = (uint8_t)x;
  }
}

int it_value_check(const void *p, size_t n, const char *key, uint64_t *gen) {
  const uint8_t *b = p;
  uint64_t g, l;
  if (n < 16) return 0;
  memcpy(&g, b, 8);
  memcpy(&l, b + 8, 8);
  if (l != n) return 0;
  uint64_t x = seed(key, g, n);
  for (size_t i = 16; i < n; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    if (b[i] != (uint8_t)x) return 0;
  }
  if (gen) *gen = g;
  return 1;
}

uint64_t it_counter(const char *pairs, const char *name) {
  size_t n = strlen(name);
  const char *s = pairs;
  while (s && *s) {
    while (*s == ' ') s++;
    if (strncmp(s, name, n) == 0 && s[n] == '=')
      return strtoull(s + n + 1, NULL, 10);
    s = strchr(s, ' ');
  }
  return 0;
}

/* ----------------------------------------------------------- programs --- */

static void append(char **buf, size_t *len, size_t *cap, const char *p,
                   size_t n) {
  if (*len + n + 1 > *cap) {
    while (*len + n + 1 > *cap) *cap = *cap ? *cap * 2 : 4096;
    *buf = realloc(*buf, *cap);
  }
  memcpy(*buf + *len, p, n);
  *len += n;
  (*buf)[*len] = 0;
}

int it_run(it_proc *p, const void *input, size_t inlen, int timeout_ms,
           char *const argv[]) {
  memset(p, 0, sizeof *p);
  p->status = -1;
  int in[2], out[2], err[2];
  ck_assert_int_eq(pipe2(in, O_CLOEXEC), 0);
  ck_assert_int_eq(pipe2(out, O_CLOEXEC), 0);
  ck_assert_int_eq(pipe2(err, O_CLOEXEC), 0);
  fflush(NULL);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    dup2(in[0], STDIN_FILENO);
    dup2(out[1], STDOUT_FILENO);
    dup2(err[1], STDERR_FILENO);
    signal(SIGPIPE, SIG_DFL);
    signal(SIGALRM, SIG_DFL);
    execv(argv[0], argv);
    fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  close(err[1]);
  int infd = in[1];
  if (!input || inlen == 0) {
    close(infd);
    infd = -1;
  } else {
    fcntl(infd, F_SETFL, O_NONBLOCK);
  }
  size_t off = 0, ocap = 0, ecap = 0;
  append(&p->out, &p->outlen, &ocap, "", 0);
  append(&p->err, &p->errlen, &ecap, "", 0);
  int ofd = out[0], efd = err[0];
  uint64_t deadline = it_now_ms() + (uint64_t)(timeout_ms ? timeout_ms : 20000);
  int killed = 0;
  while (ofd >= 0 || efd >= 0) {
    struct pollfd fds[3];
    int nf = 0;
    if (ofd >= 0) fds[nf++] = (struct pollfd){ofd, POLLIN, 0};
    if (efd >= 0) fds[nf++] = (struct pollfd){efd, POLLIN, 0};
    if (infd >= 0) fds[nf++] = (struct pollfd){infd, POLLOUT, 0};
    int64_t left = (int64_t)deadline - (int64_t)it_now_ms();
    if (left <= 0) {
      kill(pid, SIGKILL);
      killed = 1;
      break;
    }
    int r = poll(fds, (nfds_t)nf, (int)left);
    if (r < 0 && errno == EINTR) continue;
    for (int i = 0; i < nf; i++) {
      if (!fds[i].revents) continue;
      if (fds[i].fd == infd) {
        ssize_t w = write(infd, (const char *)input + off, inlen - off);
        if (w > 0) off += (size_t)w;
        if (w < 0 && errno != EAGAIN) off = inlen;
        if (off == inlen) {
          close(infd);
          infd = -1;
        }
        continue;
      }
      char buf[65536];
      ssize_t n = read(fds[i].fd, buf, sizeof buf);
      if (n <= 0) {
        close(fds[i].fd);
        if (fds[i].fd == ofd) ofd = -1;
        else efd = -1;
      } else if (fds[i].fd == ofd) {
        append(&p->out, &p->outlen, &ocap, buf, (size_t)n);
      } else {
        append(&p->err, &p->errlen, &ecap, buf, (size_t)n);
      }
    }
  }
  if (infd >= 0) close(infd);
  if (ofd >= 0) close(ofd);
  if (efd >= 0) close(efd);
  int st;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  ck_assert_msg(!killed, "%s did not finish within %d ms", argv[0],
                timeout_ms ? timeout_ms : 20000);
  p->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return p->status;
}

void it_proc_free(it_proc *p) {
  free(p->out);
  free(p->err);
  p->out = p->err = NULL;
}
