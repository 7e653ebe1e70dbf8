/*
 * unit.c - shared helpers of the unit tests; see unit.h for the fixture
 * scheme (a base directory per TCase owned by the runner process, a private
 * directory and store name per test, removed at teardown).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "unit.h"

#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

char ut_base[256];
char ut_dir[300];
char ut_name[SHM_NAME_MAX + 1];
shm_store *ut_s;
shm_view *ut_v;
shm_view *ut_v2;

static int ut_with_store;

/* ------------------------------------------------------------ fixtures -- */

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

void ut_base_setup(void) {
  const char *root = getenv("SHOAL_TEST_SHM_DIR");
  if (!root || !*root) root = "/dev/shm";
  snprintf(ut_base, sizeof ut_base, "%s/shoal-unit-XXXXXX", root);
  if (!mkdtemp(ut_base)) {
    /* /dev/shm may be missing in odd containers: fall back to /tmp. */
    snprintf(ut_base, sizeof ut_base, "/tmp/shoal-unit-XXXXXX");
    if (!mkdtemp(ut_base)) {
      perror("mkdtemp");
      abort();
    }
  }
}

void ut_base_teardown(void) {
  if (ut_base[0]) nftw(ut_base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  ut_base[0] = 0;
}

void ut_setup(void) {
  static unsigned counter;
  ut_s = NULL;
  ut_v = NULL;
  ut_v2 = NULL;
  if (!ut_base[0]) ut_base_setup(); /* CK_FORK=no or a bare call */
  snprintf(ut_dir, sizeof ut_dir, "%s/t-XXXXXX", ut_base);
  ck_assert_msg(mkdtemp(ut_dir) != NULL, "mkdtemp %s: %s", ut_dir,
                strerror(errno));
  snprintf(ut_name, sizeof ut_name, "u-%d-%u", (int)getpid(), counter++);
}

void ut_setup_store(void) {
  ut_setup();
  ut_with_store = 1;
  CK_OK(ut_store_open(&ut_s, UT_SIZE, 0, SHM_CREATE | SHM_EXCL));
  CK_OK(ut_view_open(&ut_v, 0));
}

void ut_teardown(void) {
  if (ut_v2) shm_view_close(ut_v2);
  if (ut_v) shm_view_close(ut_v);
  if (ut_s) shm_store_close(ut_s, 1);
  ut_v2 = NULL;
  ut_v = NULL;
  ut_s = NULL;
  /* The store may not exist (tests of open failures): ignore ENOENT. */
  int rc = shm_store_unlink(ut_name, ut_dir);
  (void)rc;
  nftw(ut_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  ut_with_store = 0;
}

TCase *ut_tcase(const char *name, int with_store, double timeout) {
  TCase *tc = tcase_create(name);
  tcase_add_unchecked_fixture(tc, ut_base_setup, ut_base_teardown);
  tcase_add_checked_fixture(tc, with_store ? ut_setup_store : ut_setup,
                            ut_teardown);
  tcase_set_timeout(tc, timeout);
  return tc;
}

int ut_store_open(shm_store **s, uint64_t size, uint32_t slots,
                  unsigned flags) {
  shm_config cfg = {.name = ut_name, .dir = ut_dir, .size = size,
                    .reader_slots = slots};
  return shm_store_open(s, &cfg, flags);
}

int ut_view_open(shm_view **v, unsigned flags) {
  return shm_view_open(v, ut_name, ut_dir, flags);
}

void ut_obj_path(char *buf, size_t cap, const char *dir, const char *name,
                 const char *suffix) {
  snprintf(buf, cap, "%s/shoal.%s.%s", dir, name, suffix);
}

/* -------------------------------------------------------------- values -- */

static uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}

static uint64_t seed_of(const void *key, size_t klen, uint64_t gen) {
  uint64_t h = 0xcbf29ce484222325ull ^ gen;
  const uint8_t *p = key;
  for (size_t i = 0; i < klen; i++) h = (h ^ p[i]) * 0x100000001b3ull;
  return mix64(h ^ (gen * 0x9e3779b97f4a7c15ull) ^ klen);
}

void ut_fill(void *buf, size_t len, const void *key, size_t klen,
             uint64_t gen) {
  uint64_t x = seed_of(key, klen, gen) | 1;
  uint8_t *b = buf;
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    memcpy(b + i, &x, 8);
  }
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  for (; i < len; i++) b[i] = (uint8_t)(x >> (8 * (i & 7)));
}

int ut_check_bytes(const void *data, size_t len, const void *key, size_t klen,
                   uint64_t gen) {
  uint8_t stackbuf[4096];
  uint8_t *tmp = len <= sizeof stackbuf ? stackbuf : malloc(len);
  ck_assert_ptr_nonnull(tmp);
  ut_fill(tmp, len, key, klen, gen);
  int ok = len == 0 || memcmp(tmp, data, len) == 0;
  if (tmp != stackbuf) free(tmp);
  return ok;
}

uint64_t ut_put_gen(shm_store *s, const void *key, size_t klen, size_t vlen,
                    uint64_t gen) {
  uint8_t stackbuf[4096];
  uint8_t *buf = vlen <= sizeof stackbuf ? stackbuf : malloc(vlen);
  ck_assert_ptr_nonnull(buf);
  ut_fill(buf, vlen, key, klen, gen);
  uint64_t ver = 0;
  CK_OK(shm_put(s, key, klen, buf, vlen, 0, &ver));
  if (buf != stackbuf) free(buf);
  ck_assert_uint_gt(ver, 0);
  return ver;
}

int ut_get_copy(shm_view *v, const void *key, size_t klen, void **copy,
                size_t *len, uint64_t *version) {
  shm_val val;
  CK_OK(shm_read_begin(v));
  int rc = shm_get(v, key, klen, &val);
  if (rc == 0) {
    if (copy) {
      *copy = malloc(val.len ? val.len : 1);
      ck_assert_ptr_nonnull(*copy);
      memcpy(*copy, val.data, val.len);
    }
    if (len) *len = val.len;
    if (version) *version = val.version;
  }
  shm_read_end(v);
  return rc;
}

void ut_assert_gen(shm_view *v, const void *key, size_t klen, size_t vlen,
                   uint64_t gen) {
  shm_val val;
  CK_OK(shm_read_begin(v));
  int rc = shm_get(v, key, klen, &val);
  ck_assert_msg(rc == 0, "get of key (klen %zu, '%.*s') returned %s", klen,
                (int)(klen > 40 ? 40 : klen), (const char *)key,
                shoal_errname(rc));
  ck_assert_msg(val.len == vlen, "key '%.*s': len %zu, expected %zu",
                (int)(klen > 40 ? 40 : klen), (const char *)key, val.len, vlen);
  ck_assert_msg(ut_check_bytes(val.data, val.len, key, klen, gen),
                "key '%.*s': value bytes differ from generation %" PRIu64,
                (int)(klen > 40 ? 40 : klen), (const char *)key, gen);
  shm_read_end(v);
}

/* ------------------------------------------------------------ children -- */

void ut_child_alarm(unsigned secs) {
  signal(SIGALRM, SIG_DFL);
  alarm(secs);
}

int ut_in_child(int (*fn)(void *), void *arg) {
  int p[2];
  ck_assert_int_eq(pipe(p), 0);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    close(p[0]);
    ut_child_alarm(60); /* never outlive a stuck test */
    int r = fn(arg);
    ssize_t w = write(p[1], &r, sizeof r);
    (void)w;
    _exit(0);
  }
  close(p[1]);
  int r = 0x7fffffff;
  ssize_t n = read(p[0], &r, sizeof r);
  close(p[0]);
  int st = 0;
  ck_assert_int_eq(waitpid(pid, &st, 0), pid);
  ck_assert_msg(!WIFSIGNALED(st), "child killed by signal %d (%s)",
                WTERMSIG(st), strsignal(WTERMSIG(st)));
  ck_assert_msg(n == (ssize_t)sizeof r, "child reported nothing (status %d)",
                st);
  return r;
}

void ut_wait_child_ok(pid_t pid) {
  int st = 0;
  ck_assert_int_eq(waitpid(pid, &st, 0), pid);
  ck_assert_msg(!WIFSIGNALED(st), "child killed by signal %d (%s)",
                WTERMSIG(st), strsignal(WTERMSIG(st)));
  ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                "child exited with status %d", WEXITSTATUS(st));
}

/* -------------------------------------------------------------- misc ---- */

uint64_t ut_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void ut_sleep_ms(unsigned ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

int ut_run(Suite *s) {
  SRunner *sr = srunner_create(s);
  srunner_set_fork_status(sr, CK_FORK);
  /* CK_FORK=no in the environment still wins for debugging: check reads it
   * only when the status is CK_FORK_GETENV, so honour it here. */
  const char *f = getenv("CK_FORK");
  if (f && strcmp(f, "no") == 0) srunner_set_fork_status(sr, CK_NOFORK);
  srunner_run_all(sr, CK_ENV);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? 0 : 1;
}

void ut_stats(shm_store *s, shm_stats *st) {
  memset(st, 0, sizeof *st);
  shm_store_stats(s, st);
}

static void print_problem(void *arg, const char *problem) {
  unsigned *n = arg;
  if (*n < 20) fprintf(stderr, "  shm_check: %s\n", problem);
  (*n)++;
}

unsigned ut_check(shm_view *v, int quiescent) {
  unsigned seen = 0;
  unsigned n = shm_check(v, quiescent, print_problem, &seen);
  return n;
}
