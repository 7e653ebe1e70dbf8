/*
 * test_util.c - the utility functions of UTILITIES.md in C: futil (util/:
 * tail from the end, hashing, line splitting) and the shoal_util_*
 * functions of libshoal (libclient/util.c), each rule and edge case of
 * UTILITIES.md asserted with exact codes.
 *
 * References that do not share our code: tails are compared with a plain
 * split of the whole file (reference_tail below, the rules applied
 * literally); digests with coreutils' sha256sum/sha512sum/b2sum; and the
 * "python" case runs /usr/bin/python3 on libclient/python/shoal/utils.py
 * (SHOAL_NATIVE=0: the pure-Python reference) over the same inputs and
 * compares every answer, exceptions included (skipped when python3 is
 * missing).
 *
 * Every test runs in its own forked child (check's CK_FORK) with a private
 * directory under $TMPDIR (default /tmp), removed at exit even when an
 * assertion fails; environment changes die with the child.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "futil.h"
#include "shoal/shoal.h"

#ifndef SHOAL_SOURCE_DIR
#error "SHOAL_SOURCE_DIR must name the source tree (tests/unit/CMakeLists.txt)"
#endif

/* Assert that an int-returning expression yields exactly @want. */
#define CK_RC(expr, want)                                                      \
  do {                                                                         \
    long ck_rc_got_ = (long)(expr);                                            \
    long ck_rc_want_ = (long)(want);                                           \
    ck_assert_msg(ck_rc_got_ == ck_rc_want_,                                   \
                  "%s returned %ld (%s), expected %ld (%s)", #expr,            \
                  ck_rc_got_, shoal_errname((int)ck_rc_got_), ck_rc_want_,     \
                  shoal_errname((int)ck_rc_want_));                            \
  } while (0)
#define CK_OK(expr) CK_RC(expr, 0)

/* ------------------------------------------------------------ fixture -- */

static char tdir[256];

static int rm_entry(const char *p, const struct stat *st, int flag,
                    struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  remove(p);
  return 0;
}

static void cleanup(void) {
  if (tdir[0]) nftw(tdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  tdir[0] = '\0';
}

static void setup(void) {
  const char *t = getenv("TMPDIR");
  snprintf(tdir, sizeof tdir, "%s/shoal-util-XXXXXX", t && *t ? t : "/tmp");
  ck_assert_ptr_nonnull(mkdtemp(tdir));
  atexit(cleanup); /* a failed assertion exit()s the child */
}

static void teardown(void) {
  cleanup();
}

/* tdir/@name */
static const char *tpath(const char *name) {
  static char p[4][PATH_MAX];
  static int i;
  i = (i + 1) % 4;
  snprintf(p[i], sizeof p[i], "%s/%s", tdir, name);
  return p[i];
}

static const char *write_file(const char *name, const void *data, size_t len) {
  const char *p = tpath(name);
  int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  ck_assert_int_ge(fd, 0);
  const char *d = data;
  while (len) {
    ssize_t w = write(fd, d, len);
    ck_assert_int_gt(w, 0);
    d += w;
    len -= (size_t)w;
  }
  ck_assert_int_eq(close(fd), 0);
  return p;
}

static void fill_random(uint8_t *p, size_t n, uint64_t seed) {
  uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
  for (size_t i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    p[i] = (uint8_t)(x >> 24);
  }
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* --------------------------------------------------------------- tail -- */

/* The rules of UTILITIES.md applied to the whole content: split on '\n',
 * drop the empty piece a trailing '\n' leaves, keep the last n. Fills the
 * pieces' offsets and lengths; returns their count. */
static size_t reference_tail(const char *d, size_t len, size_t n, size_t *off,
                             size_t *ln) {
  if (n == 0 || len == 0) return 0;
  size_t e = d[len - 1] == '\n' ? len - 1 : len;
  size_t count = 1;
  for (size_t i = 0; i < e; i++)
    count += d[i] == '\n';
  size_t skip = count > n ? count - n : 0, k = 0, start = 0, idx = 0;
  for (size_t i = 0; i <= e; i++) {
    if (i == e || d[i] == '\n') {
      if (idx >= skip) {
        off[k] = start;
        ln[k] = i - start;
        k++;
      }
      idx++;
      start = i + 1;
    }
  }
  return k;
}

/* futil_tail_fd of @d (written to a file) against reference_tail. */
static void check_tail(const char *d, size_t len, size_t n, size_t chunk) {
  const char *p = write_file("tail", d, len);
  size_t *roff = malloc((len + 2) * sizeof *roff);
  size_t *rlen = malloc((len + 2) * sizeof *rlen);
  size_t rn = reference_tail(d, len, n, roff, rlen);
  int fd = open(p, O_RDONLY | O_CLOEXEC);
  ck_assert_int_ge(fd, 0);
  futil_lines fl;
  CK_OK(futil_tail_fd(fd, n, chunk, 0, &fl));
  ck_assert_msg(fl.n == rn, "len %zu n %zu chunk %zu: %zu lines, expected %zu",
                len, n, chunk, fl.n, rn);
  ck_assert_uint_eq(fl.end, len);
  for (size_t i = 0; i < rn; i++) {
    ck_assert_uint_eq(fl.len[i], rlen[i]);
    ck_assert_uint_eq(fl.start + fl.off[i], roff[i]);
    ck_assert(memcmp(fl.buf + fl.off[i], d + roff[i], rlen[i]) == 0);
  }
  if (rn) ck_assert_int_eq(fl.partial, d[len - 1] != '\n');
  futil_lines_free(&fl);
  ck_assert_ptr_null(fl.buf);
  close(fd);

  /* the public wrapper: the same lines, NUL-terminated */
  shoal_lines *sl = NULL;
  CK_OK(shoal_util_read_last_n_lines(p, n, chunk, &sl));
  ck_assert_uint_eq(sl->n, rn);
  for (size_t i = 0; i < rn; i++) {
    ck_assert_uint_eq(sl->len[i], rlen[i]);
    ck_assert(memcmp(sl->line[i], d + roff[i], rlen[i]) == 0);
    ck_assert_int_eq(sl->line[i][rlen[i]], '\0');
  }
  shoal_lines_free(sl);
  free(roff);
  free(rlen);
}

static const struct {
  const char *d;
  size_t len;
} tail_inputs[] = {
#define S(x)                                                                   \
  { x, sizeof(x) - 1 }
    S("a\nb\n"),
    S("a\nb"),
    S("\n"),
    S("\n\n"),
    S("\n\n\n"),
    S("abc"),
    S("a\r\nb\r\n"),
    S("a\r\nb\r\nc"),
    S("\r\n"),
    S("x\0y\nz\0\n\0"),
    S("\n\nfoo\n\n"),
    S("a\n\nb\n"),
    S("one line that is longer than several chunks of seven\n"),
    S("l1\nline two\nthird line here\n4\n\nsix six six\nseven\n"),
    S("no newline at all, just one long piece of text"),
#undef S
};

static const size_t chunks[] = {1, 2, 3, 7, 8192};

START_TEST(tail_matches_reference) {
  for (size_t i = 0; i < sizeof tail_inputs / sizeof tail_inputs[0]; i++)
    for (size_t n = 0; n <= 9; n++)
      for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++)
        check_tail(tail_inputs[i].d, tail_inputs[i].len, n, chunks[c]);
}
END_TEST

START_TEST(tail_random_contents) {
  /* lines of random length (some empty, some longer than 8192), random
   * '\r' and NUL bytes: every boundary falls inside some chunk */
  uint8_t r[4096];
  for (uint64_t seed = 1; seed <= 12; seed++) {
    fill_random(r, sizeof r, seed);
    size_t cap = 40000, len = 0;
    char *d = malloc(cap);
    for (size_t k = 0; len < cap - 10000 && k < 200; k++) {
      size_t l = r[k] % 5 == 0 ? 0 : r[k + 1] % 64;
      if (r[k + 2] == 7) l = 9000;
      for (size_t j = 0; j < l; j++)
        d[len++] = (char)(r[(k + j) % sizeof r] % 7 == 0 ? '\r'
                          : r[(k + j) % sizeof r] % 11 == 0
                              ? '\0'
                              : 'a' + r[(k + j) % sizeof r] % 26);
      d[len++] = '\n';
    }
    if (seed % 2) len--; /* half of them without the final '\n' */
    for (size_t n = 1; n <= 300; n = n * 3 + 1)
      for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++)
        check_tail(d, len, n, chunks[c]);
    free(d);
  }
}
END_TEST

START_TEST(tail_spec_examples) {
  shoal_lines *l;
  const char *p = write_file("a", "a\nb\n", 4);
  CK_OK(shoal_util_read_last_n_lines(p, 2, 8192, &l));
  ck_assert_uint_eq(l->n, 2);
  ck_assert_str_eq(l->line[0], "a");
  ck_assert_str_eq(l->line[1], "b");
  shoal_lines_free(l);

  p = write_file("nl", "\n", 1);
  CK_OK(shoal_util_read_last_n_lines(p, 1, 8192, &l));
  ck_assert_uint_eq(l->n, 1);
  ck_assert_uint_eq(l->len[0], 0);
  ck_assert_str_eq(l->line[0], "");
  shoal_lines_free(l);

  /* CRLF: the '\r' stays (rstrip is the caller's) */
  p = write_file("crlf", "x\r\ny\r\n", 6);
  CK_OK(shoal_util_read_last_n_lines(p, 5, 1, &l));
  ck_assert_uint_eq(l->n, 2);
  ck_assert_str_eq(l->line[0], "x\r");
  ck_assert_str_eq(l->line[1], "y\r");
  shoal_lines_free(l);

  /* n larger than the file */
  p = write_file("three", "1\n2\n3", 5);
  CK_OK(shoal_util_read_last_n_lines(p, 1000, 2, &l));
  ck_assert_uint_eq(l->n, 3);
  ck_assert_str_eq(l->line[2], "3");
  shoal_lines_free(l);

  /* n near SIZE_MAX: every line, not an overflowed count */
  CK_OK(shoal_util_read_last_n_lines(p, SIZE_MAX, 1, &l));
  ck_assert_uint_eq(l->n, 3);
  ck_assert_str_eq(l->line[0], "1");
  shoal_lines_free(l);
  p = write_file("three-nl", "1\n2\n3\n", 6);
  CK_OK(shoal_util_read_last_n_lines(p, SIZE_MAX, 1, &l));
  ck_assert_uint_eq(l->n, 3);
  ck_assert_str_eq(l->line[0], "1");
  shoal_lines_free(l);

  /* NUL bytes inside a line: the length tells */
  p = write_file("nul", "a\0b\nc", 5);
  CK_OK(shoal_util_read_last_n_lines(p, 2, 3, &l));
  ck_assert_uint_eq(l->n, 2);
  ck_assert_uint_eq(l->len[0], 3);
  ck_assert(memcmp(l->line[0], "a\0b", 4) == 0);
  shoal_lines_free(l);

  shoal_lines_free(NULL);
}
END_TEST

START_TEST(tail_empty_and_zero) {
  shoal_lines *l;
  const char *p = write_file("empty", "", 0);
  CK_OK(shoal_util_read_last_n_lines(p, 3, 8192, &l));
  ck_assert_uint_eq(l->n, 0);
  shoal_lines_free(l);
  p = write_file("some", "a\nb\n", 4);
  CK_OK(shoal_util_read_last_n_lines(p, 0, 8192, &l));
  ck_assert_uint_eq(l->n, 0);
  shoal_lines_free(l);
  /* n == 0 never reads: a directory exists, so [] as upstream */
  CK_OK(shoal_util_read_last_n_lines(tdir, 0, 8192, &l));
  ck_assert_uint_eq(l->n, 0);
  shoal_lines_free(l);

  int fd = open(tpath("empty"), O_RDONLY | O_CLOEXEC);
  futil_lines fl;
  CK_OK(futil_tail_fd(fd, 5, 7, 0, &fl));
  ck_assert_uint_eq(fl.n, 0);
  ck_assert_uint_eq(fl.end, 0);
  futil_lines_free(&fl);
  close(fd);
}
END_TEST

START_TEST(tail_errors) {
  shoal_lines *l = (shoal_lines *)1;
  CK_RC(shoal_util_read_last_n_lines(tpath("missing"), 1, 8192, &l), -ENOENT);
  ck_assert_ptr_null(l);
  CK_RC(shoal_util_read_last_n_lines(tpath("missing"), 0, 8192, &l), -ENOENT);
  const char *p = write_file("f", "a\n", 2);
  CK_RC(shoal_util_read_last_n_lines(p, 1, 0, &l), SHOAL_EINVAL);
  CK_RC(shoal_util_read_last_n_lines(tdir, 1, 8192, &l), SHOAL_ENOTREG);
  const char *fifo = tpath("fifo");
  ck_assert_int_eq(mkfifo(fifo, 0600), 0);
  CK_RC(shoal_util_read_last_n_lines(fifo, 1, 8192, &l), SHOAL_ENOTREG);

  futil_lines fl;
  int fd = open(tdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  CK_RC(futil_tail_fd(fd, 1, 8192, 0, &fl), SHOAL_ENOTREG);
  close(fd);
  fd = open(fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  CK_RC(futil_tail_fd(fd, 1, 8192, 0, &fl), SHOAL_ENOTREG);
  close(fd);
  fd = open(p, O_RDONLY | O_CLOEXEC);
  CK_RC(futil_tail_fd(fd, 1, 0, 0, &fl), SHOAL_EINVAL);
  close(fd);
  CK_RC(futil_tail_fd(-1, 1, 8192, 0, &fl), -EBADF);
  ck_assert_ptr_null(fl.buf);
}
END_TEST

START_TEST(tail_max_bytes) {
  /* the lines of n=2 span "bb\ncc\n": 6 bytes */
  const char *p = write_file("m", "aaaa\nbb\ncc\n", 11);
  int fd = open(p, O_RDONLY | O_CLOEXEC);
  futil_lines fl;
  for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
    CK_OK(futil_tail_fd(fd, 2, chunks[c], 6, &fl));
    ck_assert_uint_eq(fl.n, 2);
    ck_assert_uint_eq(fl.start, 5);
    futil_lines_free(&fl);
    CK_RC(futil_tail_fd(fd, 2, chunks[c], 5, &fl), SHOAL_ETOOBIG);
    CK_RC(futil_tail_fd(fd, 3, chunks[c], 10, &fl), SHOAL_ETOOBIG);
    CK_OK(futil_tail_fd(fd, 3, chunks[c], 11, &fl));
    ck_assert_uint_eq(fl.n, 3);
    futil_lines_free(&fl);
  }
  close(fd);
}
END_TEST

START_TEST(tail_sparse_64g_is_fast) {
  /* A 64 GiB file, all hole but its last lines: reading from the end
   * touches only those. */
  const char *p = tpath("sparse");
  int fd = open(p, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  ck_assert_int_ge(fd, 0);
  const off_t size = (off_t)64 << 30;
  static const char tail[] = "\nfirst\nsecond\nthird\n";
  ck_assert_int_eq(ftruncate(fd, size - (off_t)(sizeof tail - 1)), 0);
  ck_assert_int_eq(
      pwrite(fd, tail, sizeof tail - 1, size - (off_t)(sizeof tail - 1)),
      (ssize_t)(sizeof tail - 1));
  double t0 = now_s();
  futil_lines fl;
  CK_OK(futil_tail_fd(fd, 2, 8192, 0, &fl));
  ck_assert_uint_eq(fl.n, 2);
  ck_assert(memcmp(fl.buf + fl.off[1], "third", 5) == 0);
  ck_assert_uint_eq(fl.end, (uint64_t)size);
  futil_lines_free(&fl);
  shoal_lines *l;
  CK_OK(shoal_util_read_last_n_lines(p, 3, 1, &l));
  ck_assert_str_eq(l->line[0], "first");
  shoal_lines_free(l);
  /* the hole has no newline: a limit stops the search early */
  CK_RC(futil_tail_fd(fd, 5, 1 << 16, 1 << 20, &fl), SHOAL_ETOOBIG);
  double dt = now_s() - t0;
  ck_assert_msg(dt < 1.0, "tail of a 64 GiB file took %.3f s", dt);
  close(fd);
}
END_TEST

static int collect_line(void *arg, const char *line, size_t len) {
  char *acc = arg;
  strncat(acc, line, len);
  strcat(acc, "|");
  return len == 4 && memcmp(line, "stop", 4) == 0 ? 42 : 0;
}

START_TEST(split_lines_streaming) {
  char acc[256] = "";
  size_t used = 99;
  CK_OK(futil_split_lines("a\n\nbc\r\npartial", 14, collect_line, acc, &used));
  ck_assert_str_eq(acc, "a||bc\r|");
  ck_assert_uint_eq(used, 7); /* "partial" is kept */
  acc[0] = '\0';
  CK_OK(futil_split_lines("no newline", 10, collect_line, acc, &used));
  ck_assert_uint_eq(used, 0);
  ck_assert_str_eq(acc, "");
  CK_RC(futil_split_lines("x\nstop\ny\n", 9, collect_line, acc, &used), 42);
  ck_assert_str_eq(acc, "x|stop|");
  ck_assert_uint_eq(used, 7);
  CK_OK(futil_split_lines("", 0, collect_line, acc, &used));
  ck_assert_uint_eq(used, 0);
}
END_TEST

/* --------------------------------------------------------------- hash -- */

/* The first word of `cmd path` (a coreutils *sum) as bytes; returns the
 * digest's length. */
static size_t tool_digest(const char *cmd, const char *path, uint8_t *out) {
  char line[512], hex[200];
  snprintf(line, sizeof line, "%s '%s'", cmd, path);
  FILE *f = popen(line, "r");
  ck_assert_ptr_nonnull(f);
  ck_assert_int_eq(fscanf(f, "%199s", hex), 1);
  ck_assert_int_eq(pclose(f), 0);
  size_t n = strlen(hex) / 2;
  for (size_t i = 0; i < n; i++) {
    unsigned v;
    ck_assert_int_eq(sscanf(hex + 2 * i, "%2x", &v), 1);
    out[i] = (uint8_t)v;
  }
  return n;
}

START_TEST(hash_matches_coreutils) {
  static const size_t sizes[] = {
      0, 1, (1 << 18) - 1, (1 << 18), (1 << 18) + 1, (3u << 20) + 5};
  static const struct {
    const char *alg;
    size_t len;
    const char *tool;
  } algs[] = {
      {"sha256", 0, "sha256sum"},
      {"sha512", 0, "sha512sum"},
      {"blake2b", 0, "b2sum -l 256"},
      {NULL, 32, "b2sum -l 256"},
      {"", 64, "b2sum"},
      {"blake2b", 64, "b2sum -l 512"},
      {"blake2b", 16, "b2sum -l 128"},
  };
  uint8_t *data = malloc(sizes[5]);
  fill_random(data, sizes[5], 7);
  for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
    const char *p = write_file("h", data, sizes[s]);
    for (size_t a = 0; a < sizeof algs / sizeof algs[0]; a++) {
      uint8_t want[64], got[64];
      size_t wl = tool_digest(algs[a].tool, p, want);
      CK_RC(shoal_util_hash_file(p, algs[a].alg, algs[a].len, got, sizeof got),
            (int)wl);
      ck_assert_msg(memcmp(got, want, wl) == 0, "%s of %zu bytes differs",
                    algs[a].tool, sizes[s]);
    }
  }
  free(data);
}
END_TEST

START_TEST(hash_blake2b_matches_libsodium) {
  /* futil's own BLAKE2b against crypto_generichash: every digest length,
   * every size up to three blocks and a half, block and buffer edges */
  ck_assert_int_ge(sodium_init(), 0);
  size_t max = (3u << 20) + 129;
  uint8_t *data = malloc(max);
  fill_random(data, max, 11);
  static const size_t big[] = {1000,
                               4095,
                               4096,
                               4097,
                               (1u << 20) - 1,
                               1u << 20,
                               (1u << 20) + 1,
                               (1u << 20) + 128,
                               (3u << 20) + 129};
  size_t nsizes = 450 + sizeof big / sizeof big[0];
  for (size_t k = 0; k < nsizes; k++) {
    size_t size = k < 450 ? k : big[k - 450];
    const char *p = write_file("b", data, size);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    for (size_t len = 16; len <= 64; len += (k < 450 && len < 64 ? 1 : 16)) {
      uint8_t got[64], want[64];
      CK_OK(futil_hash_fd(fd, FUTIL_BLAKE2B, len, got, NULL));
      crypto_generichash(want, len, data, size, NULL, 0);
      ck_assert_msg(memcmp(got, want, len) == 0,
                    "blake2b-%zu of %zu bytes differs from libsodium's",
                    len * 8, size);
    }
    close(fd);
  }
  free(data);
}
END_TEST

START_TEST(hash_fd_reads_from_start_and_reports_stat) {
  uint8_t data[100000];
  fill_random(data, sizeof data, 3);
  const char *p = write_file("h", data, sizeof data);
  int fd = open(p, O_RDONLY | O_CLOEXEC);
  ck_assert_int_eq(lseek(fd, 12345, SEEK_SET), 12345);
  uint8_t a[32], b[32], want[32];
  struct stat st, now;
  CK_OK(futil_hash_fd(fd, FUTIL_SHA256, 32, a, &st));
  ck_assert_int_eq(lseek(fd, 0, SEEK_CUR), 12345); /* offset untouched */
  ck_assert_int_eq(fstat(fd, &now), 0);
  ck_assert_int_eq(st.st_size, now.st_size);
  ck_assert_int_eq(st.st_ino, now.st_ino);
  ck_assert_int_eq(st.st_mtim.tv_nsec, now.st_mtim.tv_nsec);
  CK_OK(futil_hash_fd(fd, FUTIL_SHA256, 32, b, NULL));
  ck_assert(memcmp(a, b, 32) == 0);
  tool_digest("sha256sum", p, want);
  ck_assert(memcmp(a, want, 32) == 0);
  CK_RC(futil_hash_fd(fd, FUTIL_SHA256, 64, a, NULL), SHOAL_EINVAL);
  CK_RC(futil_hash_fd(fd, FUTIL_BLAKE2B, 8, a, NULL), SHOAL_EINVAL);
  CK_RC(futil_hash_fd(fd, 99, 32, a, NULL), SHOAL_EINVAL);
  close(fd);
  /* a descriptor opened for writing only */
  fd = open(p, O_WRONLY | O_CLOEXEC);
  CK_RC(futil_hash_fd(fd, FUTIL_SHA256, 32, a, NULL), -EBADF);
  close(fd);
}
END_TEST

START_TEST(hash_parse_rules) {
  int id;
  size_t len;
  char err[256];
  CK_OK(futil_hash_parse(NULL, 0, &id, &len, err, sizeof err));
  ck_assert_int_eq(id, FUTIL_BLAKE2B);
  ck_assert_uint_eq(len, 32);
  CK_OK(futil_hash_parse("", 64, &id, &len, err, sizeof err));
  ck_assert_uint_eq(len, 64);
  CK_OK(futil_hash_parse("blake2b", 16, &id, &len, err, sizeof err));
  CK_RC(futil_hash_parse("blake2b", 15, &id, &len, err, sizeof err),
        SHOAL_EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "16..64"));
  CK_RC(futil_hash_parse("blake2b", 65, &id, &len, err, sizeof err),
        SHOAL_EINVAL);
  CK_OK(futil_hash_parse("sha256", 0, &id, &len, err, sizeof err));
  ck_assert_int_eq(id, FUTIL_SHA256);
  ck_assert_uint_eq(len, 32);
  CK_OK(futil_hash_parse("sha256", 32, &id, &len, err, sizeof err));
  CK_RC(futil_hash_parse("sha256", 64, &id, &len, err, sizeof err),
        SHOAL_EINVAL);
  CK_OK(futil_hash_parse("sha512", 0, &id, &len, err, sizeof err));
  ck_assert_int_eq(id, FUTIL_SHA512);
  ck_assert_uint_eq(len, 64);
  CK_RC(futil_hash_parse("md5", 0, &id, &len, err, sizeof err), SHOAL_EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "md5"));
  ck_assert_ptr_nonnull(strstr(err, "sha256"));
  ck_assert_ptr_nonnull(strstr(err, "sha512"));
  ck_assert_ptr_nonnull(strstr(err, "blake2b"));
  CK_RC(futil_hash_parse("SHA256", 0, &id, &len, NULL, 0), SHOAL_EINVAL);
  ck_assert_str_eq(futil_hash_name(FUTIL_SHA512), "sha512");
}
END_TEST

START_TEST(hash_errors) {
  uint8_t d[64];
  CK_RC(shoal_util_hash_file(tpath("missing"), "sha256", 0, d, sizeof d),
        -ENOENT);
  CK_RC(shoal_util_hash_file(tdir, "sha256", 0, d, sizeof d), SHOAL_ENOTREG);
  const char *fifo = tpath("fifo");
  ck_assert_int_eq(mkfifo(fifo, 0600), 0);
  CK_RC(shoal_util_hash_file(fifo, "sha256", 0, d, sizeof d), SHOAL_ENOTREG);
  const char *p = write_file("f", "x", 1);
  CK_RC(shoal_util_hash_file(p, "sha256", 0, d, 31), SHOAL_ETOOBIG);
  CK_RC(shoal_util_hash_file(p, "sha512", 0, d, 64), 64);
  CK_RC(shoal_util_hash_file(p, "md5", 0, d, sizeof d), SHOAL_EINVAL);
  CK_RC(shoal_util_hash_file(p, "blake2b", 65, d, sizeof d), SHOAL_EINVAL);
}
END_TEST

/* Appends one byte at a time until told to stop. */
static int appender_stop;
static void *appender(void *arg) {
  int fd = *(int *)arg;
  while (!__atomic_load_n(&appender_stop, __ATOMIC_RELAXED))
    if (write(fd, "x", 1) != 1) break;
  return NULL;
}

START_TEST(hash_echanged_while_growing) {
  /* 8 MiB, then a writer that never stops appending: every attempt sees
   * the size move, so the result is SHOAL_ECHANGED, never a digest of
   * bytes that were not all there at once */
  uint8_t *data = calloc(1, 8u << 20);
  const char *p = write_file("g", data, 8u << 20);
  free(data);
  int wfd = open(p, O_WRONLY | O_APPEND | O_CLOEXEC);
  int rfd = open(p, O_RDONLY | O_CLOEXEC);
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, appender, &wfd), 0);
  uint8_t d[32];
  struct stat st;
  int rc = futil_hash_fd(rfd, FUTIL_BLAKE2B, 32, d, &st);
  __atomic_store_n(&appender_stop, 1, __ATOMIC_RELAXED);
  pthread_join(t, NULL);
  CK_RC(rc, SHOAL_ECHANGED);
  close(wfd);
  close(rfd);
}
END_TEST

/* ------------------------------------------------------------- base36 -- */

static void check_b36(const char *in, const char *want) {
  char out[512];
  int rc = shoal_util_base36_encode(in, strlen(in), out, sizeof out);
  if (!want) {
    ck_assert_msg(rc == SHOAL_EINVAL, "base36(\"%s\") = %d, expected EINVAL",
                  in, rc);
    return;
  }
  ck_assert_msg(rc == (int)strlen(want), "base36(\"%s\") = %d (%s)", in, rc,
                shoal_errname(rc));
  ck_assert_str_eq(out, want);
}

START_TEST(base36_rules) {
  check_b36("0", "0");
  check_b36("00000", "0");
  check_b36("-0", "0");
  check_b36("-0x_0", "0");
  check_b36("ff", "73");
  check_b36("FF", "73");
  check_b36("0xff", "73");
  check_b36("0XfF", "73");
  check_b36("0x_ff", "73");
  check_b36("+ff", "73");
  check_b36(" \t\n\v\f\rff \n", "73");
  check_b36("\xc2\xa0"
            "ff\xe3\x80\x80",
            "73"); /* NBSP, ideographic space */
  check_b36("f_f", "73");
  check_b36("0b1", "4x"); /* 0x0b1, not a binary prefix */
  check_b36("23", "z");
  check_b36("24", "10");
  check_b36("ffffffffffffffff", "3w5e11264sgsf");
  check_b36("10000000000000000", "3w5e11264sgsg");
  /* an md5 hexdigest (md5 of "") */
  check_b36("d41d8cd98f00b204e9800998ecf8427e", "ck2u8j60r58fu0sgyxrigm3cu");
  check_b36("", NULL);
  check_b36(" ", NULL);
  check_b36("0x", NULL);
  check_b36("_ff", NULL);
  check_b36("ff_", NULL);
  check_b36("f__f", NULL);
  check_b36("0x__f", NULL);
  check_b36("0_xf", NULL);
  check_b36("-1", NULL);
  check_b36("- 1", NULL);
  check_b36("+-1", NULL);
  check_b36("g", NULL);
  check_b36("f f", NULL);
  check_b36("\x1c"
            "f",
            NULL);             /* str.isspace() but not int()'s */
  check_b36("\xd9\xa3", NULL); /* ARABIC-INDIC THREE: see util.c */
  check_b36("\xff", NULL);
  CK_RC(shoal_util_base36_encode("ff\0", 3, NULL, 0), SHOAL_EINVAL);
  char small[3];
  CK_RC(shoal_util_base36_encode("ff", 2, small, 3), 2);
  CK_RC(shoal_util_base36_encode("24", 2, small, 2), SHOAL_ETOOBIG);
  ck_assert_str_eq(small, "");
}
END_TEST

START_TEST(base36_long) {
  /* 2^(4k) - 1 for many k, checked by converting back */
  char hex[1200], out[1200];
  for (size_t k = 1; k < sizeof hex; k += 37) {
    memset(hex, 'f', k);
    int rc = shoal_util_base36_encode(hex, k, out, sizeof out);
    ck_assert_int_gt(rc, 0);
    /* back to base 16 by schoolbook multiplication */
    uint8_t nib[1200] = {0};
    size_t nn = 1;
    for (int i = 0; i < rc; i++) {
      int v = out[i] <= '9' ? out[i] - '0' : out[i] - 'a' + 10;
      unsigned carry = (unsigned)v;
      for (size_t j = 0; j < nn; j++) {
        unsigned x = nib[j] * 36u + carry;
        nib[j] = (uint8_t)(x & 15);
        carry = x >> 4;
      }
      while (carry) {
        nib[nn++] = (uint8_t)(carry & 15);
        carry >>= 4;
      }
    }
    while (nn > 1 && nib[nn - 1] == 0)
      nn--;
    ck_assert_uint_eq(nn, k);
    for (size_t j = 0; j < nn; j++)
      ck_assert_uint_eq(nib[j], 15);
  }
}
END_TEST

/* ------------------------------------------------------- format_float -- */

static void check_ff(double v, int prec, const char *want) {
  char out[512];
  int rc = shoal_util_format_float(v, prec, out, sizeof out);
  ck_assert_msg(rc == (int)strlen(want), "format_float(%a, %d) = %d (%s)", v,
                prec, rc, rc >= 0 ? out : shoal_errname(rc));
  ck_assert_str_eq(out, want);
}

START_TEST(format_float_rules) {
  check_ff(1.0, 1, "1");
  check_ff(1.5, 1, "1.5");
  check_ff(1.25, 1, "1.2"); /* ties to even, on the exact binary value */
  check_ff(1.35, 1, "1.4");
  check_ff(2.675, 2, "2.67");
  check_ff(0.5, 0, "0");
  check_ff(1.5, 0, "2");
  check_ff(2.5, 0, "2");
  check_ff(-0.0, 3, "-0");
  check_ff(0.0, 3, "0");
  check_ff(-1.25, 3, "-1.250");
  check_ff(1e22, 1, "10000000000000000000000");
  check_ff(123456789012345678.0, 2, "123456789012345680");
  check_ff(5e-324, 2, "0.00");
  check_ff(NAN, 1, "nan");
  check_ff(-NAN, 1, "nan");
  check_ff(INFINITY, 1, "inf");
  check_ff(-INFINITY, 0, "-inf");
  check_ff(0.1, 20, "0.10000000000000000555");
  char out[400];
  CK_RC(shoal_util_format_float(1e300, 1, out, sizeof out), 301);
  CK_RC(shoal_util_format_float(1.5, -1, out, sizeof out), SHOAL_EINVAL);
  CK_RC(shoal_util_format_float(1.5, 1, out, 3), SHOAL_ETOOBIG);
  CK_RC(shoal_util_format_float(1.5, 1, out, 4), 3);
  CK_RC(shoal_util_format_float(0.1, 1000000000, out, sizeof out),
        SHOAL_ETOOBIG);
  /* the process' locale does not leak into the decimal point */
  if (setlocale(LC_NUMERIC, "de_DE.UTF-8") ||
      setlocale(LC_NUMERIC, "fr_FR.UTF-8"))
    check_ff(1.5, 1, "1.5");
}
END_TEST

/* ----------------------------------------------- truncate_long_string -- */

static void check_tr(const char *s, size_t max, int mid, const char *want) {
  char out[512];
  int rc =
      shoal_util_truncate_long_string(s, strlen(s), max, mid, out, sizeof out);
  ck_assert_msg(rc == (int)strlen(want),
                "truncate(\"%s\", %zu, %d) = %d (%s), expected \"%s\"", s, max,
                mid, rc, rc >= 0 ? out : shoal_errname(rc), want);
  ck_assert_str_eq(out, want);
}

START_TEST(truncate_rules) {
  check_tr("short", 35, 0, "short");
  check_tr("exactly5", 8, 0, "exactly5");
  check_tr("abcdefghij", 3, 1, "...");
  check_tr("abcdefghij", 0, 1, "...");
  check_tr("abcdefghij", 4, 1, "a...");
  check_tr("abcdefghij", 5, 1, "a...j");
  check_tr("abcdefghij", 6, 1, "ab...j");
  check_tr("abcdefghij", 9, 1, "abc...hij");
  check_tr("averyveryverylongword and more", 10, 0, "averyveryv...");
  check_tr("hello world foo bar", 12, 0, "hello world ...");
  check_tr("a b c d e f g h i j k l", 5, 0, "a b c d..."); /* spaces */
  check_tr("          x", 3, 0, "         ...");
  check_tr(" leading", 4, 0, " lea...");
  check_tr("abcdefghij", 0, 0, "...");
  /* characters, not bytes */
  check_tr("\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", 4, 0,
           "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9");
  check_tr("\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", 4, 0,
           "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9...");
  check_tr("\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xf0\x9f\x98\x80x", 4, 1,
           "\xe6\x97\xa5...");
  check_tr("\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xf0\x9f\x98\x80xy", 5, 1,
           "\xe6\x97\xa5...y");
  char out[64];
  CK_RC(shoal_util_truncate_long_string("\xff", 1, 35, 0, out, sizeof out),
        SHOAL_EINVAL);
  CK_RC(shoal_util_truncate_long_string("\xc3", 1, 35, 0, out, sizeof out),
        SHOAL_EINVAL);
  CK_RC(shoal_util_truncate_long_string("\xed\xa0\x80", 3, 35, 0, out,
                                        sizeof out),
        SHOAL_EINVAL); /* a surrogate */
  CK_RC(shoal_util_truncate_long_string("\xc0\x80", 2, 35, 0, out, sizeof out),
        SHOAL_EINVAL); /* overlong */
  CK_RC(shoal_util_truncate_long_string("abcdef", 6, 3, 0, out, 7), 6);
  CK_RC(shoal_util_truncate_long_string("abcdef", 6, 3, 0, out, 6),
        SHOAL_ETOOBIG);
  ck_assert_str_eq(out, "");
}
END_TEST

/* --------------------------------------------------------- resources -- */

static void mkdirs(const char *rel) {
  char p[PATH_MAX];
  snprintf(p, sizeof p, "%s/%s", tdir, rel);
  for (char *s = p + strlen(tdir) + 1; *s; s++)
    if (*s == '/') {
      *s = '\0';
      mkdir(p, 0700);
      *s = '/';
    }
  mkdir(p, 0700);
}

static void put(const char *rel, const char *text) {
  char d[PATH_MAX];
  snprintf(d, sizeof d, "%s", rel);
  char *slash = strrchr(d, '/');
  if (slash) {
    *slash = '\0';
    mkdirs(d);
  }
  write_file(rel, text, strlen(text));
}

static int base_cpus(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) < n)
    n = CPU_COUNT(&set);
  return (int)n;
}

static void unset_env(void) {
  unsetenv("SKYPILOT_POD_CPU_CORE_LIMIT");
  unsetenv("SKYPILOT_POD_MEMORY_GB_LIMIT");
  unsetenv("SKYPILOT_POD_MEMORY_BYTES_LIMIT");
}

START_TEST(cpu_count_env) {
  unset_env();
  static const struct {
    const char *v;
    int want;
  } cases[] = {
      {"4", 4},
      {"2.9", 2},
      {" 8 ", 8},
      {"1_0", 10},
      {"1e1", 10},
      {"0", 0},
      {"abc", SHOAL_EINVAL},
      {"", SHOAL_EINVAL},
      {"0x4", SHOAL_EINVAL},
      {"nan", SHOAL_EINVAL},
      {"inf", -ERANGE},
      {"-1", -ERANGE},
      {"1e10", -ERANGE},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    setenv("SKYPILOT_POD_CPU_CORE_LIMIT", cases[i].v, 1);
    int rc = shoal_util_get_cpu_count();
    ck_assert_msg(rc == cases[i].want, "\"%s\": %d, expected %d", cases[i].v,
                  rc, cases[i].want);
  }
}
END_TEST

START_TEST(cpu_count_cgroups) {
  unset_env();
  int base = base_cpus();
  setenv("SHOAL_CGROUP_ROOT", tpath("cg"), 1);
  /* v1 */
  mkdirs("cg");
  ck_assert_int_eq(shoal_util_get_cpu_count(), base); /* nothing: no limit */
  put("cg/cpu/cpu.cfs_quota_us", "-1\n");
  put("cg/cpu/cpu.cfs_period_us", "100000\n");
  ck_assert_int_eq(shoal_util_get_cpu_count(), base);
  put("cg/cpu/cpu.cfs_quota_us", "100000\n");
  ck_assert_int_eq(shoal_util_get_cpu_count(), 1);
  put("cg/cpu/cpu.cfs_quota_us", "50000\n");
  ck_assert_int_eq(shoal_util_get_cpu_count(), 0); /* 0.5 floors to 0 */
  put("cg/cpu/cpu.cfs_period_us", "0\n");
  ck_assert_int_eq(shoal_util_get_cpu_count(), base);
  /* v2 */
  put("cg/cgroup.controllers", "cpu memory\n");
  put("cg/cpu.max", "max 100000\n");
  ck_assert_int_eq(shoal_util_get_cpu_count(), base);
  put("cg/cpu.max", "150000 100000\n");
  ck_assert_int_eq(shoal_util_get_cpu_count(), 1);
  put("cg/cpu.max", "100000 0\n"); /* period 0: no limit */
  ck_assert_int_eq(shoal_util_get_cpu_count(), base);
  put("cg/cpu.max", "100000\n");
  ck_assert_int_eq(shoal_util_get_cpu_count(), base);
  put("cg/cpu.max", "garbage 100000\n");
  ck_assert_int_eq(shoal_util_get_cpu_count(), base);
  put("cg/cpu.max", "");
  ck_assert_int_eq(shoal_util_get_cpu_count(), base);
  put("cg/cpu.max", "50000 100000 7\n");
  ck_assert_int_eq(shoal_util_get_cpu_count(), base);
  put("cg/cpu.max", "\xff");
  ck_assert_int_eq(shoal_util_get_cpu_count(), base); /* not UTF-8: None */
  put("cg/cpu.max", "inf 100000");
  CK_RC(shoal_util_get_cpu_count(), -ERANGE); /* int(inf): OverflowError */
  /* the environment variable still wins */
  setenv("SKYPILOT_POD_CPU_CORE_LIMIT", "3", 1);
  ck_assert_int_eq(shoal_util_get_cpu_count(), 3);
}
END_TEST

START_TEST(mem_size) {
  unset_env();
  double gb;
  setenv("SKYPILOT_POD_MEMORY_GB_LIMIT", "2.5", 1);
  setenv("SKYPILOT_POD_MEMORY_BYTES_LIMIT", "1", 1);
  CK_OK(shoal_util_get_mem_size_gb(&gb));
  ck_assert(gb == 2.5);
  setenv("SKYPILOT_POD_MEMORY_GB_LIMIT", "x", 1);
  CK_RC(shoal_util_get_mem_size_gb(&gb), SHOAL_EINVAL);
  unsetenv("SKYPILOT_POD_MEMORY_GB_LIMIT");
  setenv("SKYPILOT_POD_MEMORY_BYTES_LIMIT", "1610612736", 1);
  CK_OK(shoal_util_get_mem_size_gb(&gb));
  ck_assert(gb == 1.5);
  setenv("SKYPILOT_POD_MEMORY_BYTES_LIMIT", "1.5G", 1);
  CK_RC(shoal_util_get_mem_size_gb(&gb), SHOAL_EINVAL);
  unset_env();

  setenv("SHOAL_CGROUP_ROOT", tpath("cg"), 1);
  setenv("SHOAL_PROC_ROOT", tpath("proc"), 1);
  mkdirs("cg");
  put("proc/meminfo", "MemTotal:        4194304 kB\nMemFree: 1 kB\n");
  CK_OK(shoal_util_get_mem_size_gb(&gb));
  ck_assert(gb == 4.0);
  put("cg/memory/memory.limit_in_bytes", "1073741824\n"); /* v1 */
  CK_OK(shoal_util_get_mem_size_gb(&gb));
  ck_assert(gb == 1.0);
  put("cg/memory/memory.limit_in_bytes", "9223372036854771712\n");
  CK_OK(shoal_util_get_mem_size_gb(&gb));
  ck_assert(gb == 4.0);
  put("cg/cgroup.controllers", "memory\n"); /* v2 */
  put("cg/memory.max", "max\n");
  CK_OK(shoal_util_get_mem_size_gb(&gb));
  ck_assert(gb == 4.0);
  put("cg/memory.max", "536870912\n");
  CK_OK(shoal_util_get_mem_size_gb(&gb));
  ck_assert(gb == 0.5);
  put("cg/memory.max", "0\n");
  CK_OK(shoal_util_get_mem_size_gb(&gb));
  ck_assert(gb == 4.0);
  put("cg/memory.max", "1_073_741_824");
  CK_OK(shoal_util_get_mem_size_gb(&gb));
  ck_assert(gb == 1.0);
  /* no usable MemTotal: sysconf */
  double sys = (double)sysconf(_SC_PAGESIZE) * (double)sysconf(_SC_PHYS_PAGES) /
               1073741824.0;
  put("cg/memory.max", "max\n");
  put("proc/meminfo", "MemTotal: lots kB\n");
  CK_OK(shoal_util_get_mem_size_gb(&gb));
  ck_assert(gb == sys);
  put("proc/meminfo", "MemFree: 1 kB\n");
  CK_OK(shoal_util_get_mem_size_gb(&gb));
  ck_assert(gb == sys);
}
END_TEST

START_TEST(parallel_threads) {
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  int base = (int)(cpus - 1 > 4 ? cpus - 1 : 4);
  ck_assert_int_eq(shoal_util_get_parallel_threads(NULL), base);
  ck_assert_int_eq(shoal_util_get_parallel_threads("aws"), base);
  ck_assert_int_eq(shoal_util_get_parallel_threads("kubernetes"), base * 4);
  ck_assert_int_eq(shoal_util_get_parallel_threads("KuBeRnEtEs"), base * 4);
  /* KELVIN SIGN lowers to 'k' in Python */
  ck_assert_int_eq(shoal_util_get_parallel_threads("\xe2\x84\xaaubernetes"),
                   base * 4);
  ck_assert_int_eq(shoal_util_get_parallel_threads("kubernetes "), base);
  ck_assert_int_eq(shoal_util_get_parallel_threads("kube"), base);
  ck_assert_int_eq(shoal_util_get_parallel_threads(""), base);
}
END_TEST

START_TEST(max_workers) {
  int threads = shoal_util_get_parallel_threads(NULL);
  struct rlimit rl;
  ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
  /* stderr to a file, to see the one-time warning */
  char errp[PATH_MAX];
  snprintf(errp, sizeof errp, "%s", tpath("stderr"));
  int efd = open(errp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  int saved = dup(2);
  dup2(efd, 2);

  rl.rlim_cur = 500;
  ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
  ck_assert_int_eq(shoal_util_get_max_workers_for_file_mounts(NULL, 0, NULL),
                   80 < threads ? 80 : threads);
  mkdirs("src");
  for (int i = 0; i < 30; i++) {
    char n[32];
    snprintf(n, sizeof n, "src/f%d", i);
    put(n, "x");
  }
  const char *srcs[] = {tpath("src"), tpath("src/f1"), tpath("missing")};
  /* 400 // 150 */
  ck_assert_int_eq(shoal_util_get_max_workers_for_file_mounts(srcs, 3, NULL),
                   2 < threads ? 2 : threads);
  rl.rlim_cur = 50; /* (50 - 100) // 5 < 1 */
  ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
  ck_assert_int_eq(shoal_util_get_max_workers_for_file_mounts(srcs, 1, NULL),
                   1);
  rl.rlim_cur = rl.rlim_max > 100000 ? 100000 : rl.rlim_max;
  ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
  if (rl.rlim_cur >= 100000)
    ck_assert_int_eq(
        shoal_util_get_max_workers_for_file_mounts(srcs, 1, "kubernetes"),
        threads * 4);
  CK_RC(shoal_util_get_max_workers_for_file_mounts(NULL, 1, NULL),
        SHOAL_EINVAL);

  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  close(efd);
  char buf[1024] = "";
  FILE *f = fopen(errp, "r");
  size_t got = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[got] = '\0';
  char *w = strstr(buf, "RLIMIT_NOFILE) is 500");
  ck_assert_msg(w != NULL, "no warning in \"%s\"", buf);
  ck_assert_ptr_null(strstr(w + 1, "RLIMIT_NOFILE")); /* once only */
}
END_TEST

START_TEST(process_alive) {
  CK_RC(shoal_util_is_process_alive(getpid()), 1);
  CK_RC(shoal_util_is_process_alive(0), SHOAL_EINVAL);
  CK_RC(shoal_util_is_process_alive(-1), SHOAL_EINVAL);
  CK_RC(shoal_util_is_process_alive((long)INT_MAX + 1), SHOAL_EINVAL);
  CK_RC(shoal_util_is_process_alive(1), 1); /* exists (EPERM or not) */

  /* a zombie: exited, not reaped */
  pid_t z = fork();
  ck_assert_int_ge(z, 0);
  if (z == 0) _exit(0);
  double t0 = now_s();
  while (shoal_util_is_process_alive(z) == 1 && now_s() - t0 < 10)
    usleep(1000);
  CK_RC(shoal_util_is_process_alive(z), 0);
  int status;
  ck_assert_int_eq(waitpid(z, &status, 0), z);
  CK_RC(shoal_util_is_process_alive(z), 0); /* reaped: ESRCH */

  /* SHOAL_PROC_ROOT: the state after the last ')' */
  setenv("SHOAL_PROC_ROOT", tpath("proc"), 1);
  char rel[64], text[128];
  snprintf(rel, sizeof rel, "proc/%d/stat", (int)getpid());
  snprintf(text, sizeof text, "%d (a) b) Z 1 2 3\n", (int)getpid());
  put(rel, text);
  CK_RC(shoal_util_is_process_alive(getpid()), 0);
  snprintf(text, sizeof text, "%d (Z) Z) S 1 2 3\n", (int)getpid());
  put(rel, text);
  CK_RC(shoal_util_is_process_alive(getpid()), 1);
  put(rel, "");
  CK_RC(shoal_util_is_process_alive(getpid()), 1);
  /* no stat file under the root: kill() decides */
  setenv("SHOAL_PROC_ROOT", tpath("nowhere"), 1);
  CK_RC(shoal_util_is_process_alive(getpid()), 1);
}
END_TEST

START_TEST(estimate_fd) {
  mkdirs("d");
  ck_assert_int_eq(shoal_util_estimate_fd_for_directory(tpath("d")), 0);
  put("d/a", "");
  put("d/.hidden", "");
  mkdirs("d/sub");
  ck_assert_int_eq(shoal_util_estimate_fd_for_directory(tpath("d")), 15);
  ck_assert_int_eq(shoal_util_estimate_fd_for_directory(tpath("d/a")), 0);
  ck_assert_int_eq(shoal_util_estimate_fd_for_directory(tpath("none")), 0);
  ck_assert_int_eq(shoal_util_estimate_fd_for_directory(NULL), 0);
}
END_TEST

START_TEST(free_port) {
  int p = shoal_util_find_free_port(20000);
  ck_assert_int_ge(p, 20000);
  ck_assert_int_lt(p, 65535);
  /* hold it: the next search skips it */
  int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)p),
                          .sin_addr.s_addr = htonl(INADDR_ANY)};
  ck_assert_int_eq(bind(s, (struct sockaddr *)&a, sizeof a), 0);
  ck_assert_int_gt(shoal_util_find_free_port(p), p);
  close(s);
  CK_RC(shoal_util_find_free_port(65535), -EADDRINUSE);
  CK_RC(shoal_util_find_free_port(70000), -EADDRINUSE);
  CK_RC(shoal_util_find_free_port(-1), SHOAL_EINVAL);
  CK_RC(shoal_util_find_free_port(0), 0); /* bind(('', 0)) succeeds */
}
END_TEST

/* ------------------------------------------ against utils.py (python) -- */

static void hexs(char *dst, const void *p, size_t n) {
  const uint8_t *b = p;
  dst[0] = 'x'; /* so that an empty value is still a field */
  for (size_t i = 0; i < n; i++)
    sprintf(dst + 1 + 2 * i, "%02x", b[i]);
  dst[1 + 2 * n] = '\0';
}

static const char py_script[] =
    "import os, sys\n"
    "from shoal import utils\n"
    "def run(f):\n"
    "    try:\n"
    "        r = f()\n"
    "    except Exception as e:\n"
    "        return 'ERR ' + type(e).__name__\n"
    "    if isinstance(r, list):\n"
    "        return 'OK ' + str(len(r)) + ' ' + ','.join(\n"
    "            'x' + l.encode('latin-1').hex() for l in r)\n"
    "    return 'OK ' + 'x' + str(r).encode('utf-8').hex()\n"
    "def s(h):\n"
    "    return bytes.fromhex(h[1:]).decode('utf-8')\n"
    "for line in sys.stdin:\n"
    "    p = line.split()\n"
    "    k = p[0]\n"
    "    if k == 'B':\n"
    "        print(run(lambda: utils.base36_encode(s(p[1]))))\n"
    "    elif k == 'F':\n"
    "        print(run(lambda: utils.format_float(float.fromhex(p[1]),\n"
    "                                             int(p[2]))))\n"
    "    elif k == 'T':\n"
    "        print(run(lambda: utils.truncate_long_string(\n"
    "            s(p[1]), int(p[2]), p[3] == '1')))\n"
    "    elif k == 'L':\n"
    "        print(run(lambda: utils.read_last_n_lines(\n"
    "            s(p[1]), int(p[2]), int(p[3]), encoding='latin-1')))\n"
    "    elif k == 'C':\n"
    "        os.environ['SHOAL_CGROUP_ROOT'] = s(p[1])\n"
    "        os.environ['SHOAL_PROC_ROOT'] = s(p[2])\n"
    "        print(run(lambda: '%d %r' % (utils.get_cpu_count(),\n"
    "                                     utils.get_mem_size_gb())))\n"
    "    sys.stdout.flush()\n";

typedef struct py_case {
  char kind;
  char *in; /* the request line */
} py_case;

/* Run utils.py on @n request lines; returns the answer lines (malloc'd). */
static char **run_python(char *const *req, size_t n) {
  const char *sp = write_file("cases.py", py_script, strlen(py_script));
  char in[PATH_MAX + 8];
  snprintf(in, sizeof in, "%s", tpath("cases.in"));
  FILE *f = fopen(in, "w");
  ck_assert_ptr_nonnull(f);
  for (size_t i = 0; i < n; i++)
    fprintf(f, "%s\n", req[i]);
  fclose(f);
  char cmd[3 * PATH_MAX];
  snprintf(cmd, sizeof cmd,
           "PYTHONPATH='%s/libclient/python' SHOAL_NATIVE=0 "
           "PYTHONIOENCODING=utf-8 /usr/bin/python3 '%s' < '%s'",
           SHOAL_SOURCE_DIR, sp, in);
  FILE *p = popen(cmd, "r");
  ck_assert_ptr_nonnull(p);
  char **out = calloc(n, sizeof *out);
  size_t cap = 0;
  for (size_t i = 0; i < n; i++) {
    ssize_t r = getline(&out[i], &cap, p);
    ck_assert_msg(r > 0, "python3 answered %zu of %zu cases", i, n);
    out[i][strcspn(out[i], "\n")] = '\0';
    cap = 0;
  }
  ck_assert_int_eq(pclose(p), 0);
  return out;
}

/* "OK x<hex>" for a C string result, "ERR ValueError" for SHOAL_EINVAL. */
static void c_answer(char *dst, int rc, const char *out) {
  if (rc == SHOAL_EINVAL) {
    strcpy(dst, "ERR ValueError");
  } else if (rc < 0) {
    sprintf(dst, "ERR %s", shoal_errname(rc));
  } else {
    strcpy(dst, "OK ");
    hexs(dst + 3, out, (size_t)rc);
  }
}

START_TEST(python_cross_check) {
  if (access("/usr/bin/python3", X_OK) != 0) return;
  enum { MAXC = 2000 };
  char **req = calloc(MAXC, sizeof *req);
  char **mine = calloc(MAXC, sizeof *mine);
  size_t n = 0;
  char out[4096], h[4096];

  /* base36 */
  static const char *b36[] = {
      "0",
      "-0",
      "ff",
      "0xff",
      "0x_ff",
      "+ff",
      " ff\n",
      "\xc2\xa0"
      "ff",
      "f_f",
      "",
      "0x",
      "_f",
      "f_",
      "-1",
      "g",
      "\x1c"
      "f",
      "0b1",
      "0_x1",
      "+0x_1",
      "d41d8cd98f00b204e9800998ecf8427e",
      "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
      "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"};
  for (size_t i = 0; i < sizeof b36 / sizeof b36[0]; i++) {
    hexs(h, b36[i], strlen(b36[i]));
    req[n] = malloc(strlen(h) + 8);
    sprintf(req[n], "B %s", h);
    int rc = shoal_util_base36_encode(b36[i], strlen(b36[i]), out, sizeof out);
    mine[n] = malloc(4200);
    c_answer(mine[n++], rc, out);
  }
  uint8_t rnd[64];
  for (int i = 0; i < 40; i++) {
    fill_random(rnd, sizeof rnd, (uint64_t)i + 100);
    char hx[130];
    size_t k = 1 + rnd[0] % 60;
    for (size_t j = 0; j < k; j++)
      hx[j] = "0123456789abcdef"[rnd[j + 1] % 16];
    hx[k] = '\0';
    hexs(h, hx, k);
    req[n] = malloc(strlen(h) + 8);
    sprintf(req[n], "B %s", h);
    int rc = shoal_util_base36_encode(hx, k, out, sizeof out);
    mine[n] = malloc(4200);
    c_answer(mine[n++], rc, out);
  }

  /* format_float */
  static const double ff[] = {
      0.0,       -0.0,    1.0,      1.5,  2.5,  -2.5,  1.25,
      1.35,      2.675,   0.05,     0.15, 1e22, 1e300, -1e-300,
      5e-324,    123.456, 1e16 + 2, 0.1,  NAN,  -NAN,  INFINITY,
      -INFINITY, 999.95,  0.995,    9.5,  1e-7};
  for (size_t i = 0; i < sizeof ff / sizeof ff[0]; i++)
    for (int prec = 0; prec <= 25; prec += (prec < 4 ? 1 : 7)) {
      req[n] = malloc(64);
      sprintf(req[n], "F %a %d", ff[i], prec);
      int rc = shoal_util_format_float(ff[i], prec, out, sizeof out);
      mine[n] = malloc(1000);
      c_answer(mine[n++], rc, out);
    }

  /* truncate_long_string */
  static const char *tr[] = {
      "",
      "short",
      "hello world foo bar baz qux",
      "averyveryverylongword x",
      "a b c d e f g h i j k l m n o p",
      "          x",
      " leading space",
      "trailing space ",
      "double  space  here  and  there",
      "\xc3\xa9t\xc3\xa9 \xc3\xa0 la plage avec des \xc3\xa9mojis "
      "\xf0\x9f\x98\x80\xf0\x9f\x98\x80",
      "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xe3\x83\x86\xe3\x82\xad\xe3\x82"
      "\xb9\xe3\x83\x88 \xe6\x96\x87\xe5\xad\x97\xe5\x88\x97",
      "word word word word word word word word word word word word"};
  for (size_t i = 0; i < sizeof tr / sizeof tr[0]; i++)
    for (size_t max = 0; max <= 40; max += (max < 12 ? 1 : 7))
      for (int mid = 0; mid <= 1; mid++) {
        hexs(h, tr[i], strlen(tr[i]));
        req[n] = malloc(strlen(h) + 32);
        sprintf(req[n], "T %s %zu %d", h, max, mid);
        int rc = shoal_util_truncate_long_string(tr[i], strlen(tr[i]), max, mid,
                                                 out, sizeof out);
        mine[n] = malloc(4200);
        c_answer(mine[n++], rc, out);
      }

  /* read_last_n_lines: the C lines rstrip('\r')-ed, '\n' between */
  for (size_t i = 0; i < sizeof tail_inputs / sizeof tail_inputs[0]; i++) {
    char name[32];
    snprintf(name, sizeof name, "t%zu", i);
    const char *p = write_file(name, tail_inputs[i].d, tail_inputs[i].len);
    for (size_t k = 0; k <= 4; k++)
      for (size_t c = 0; c < 3; c++) {
        hexs(h, p, strlen(p));
        req[n] = malloc(strlen(h) + 40);
        sprintf(req[n], "L %s %zu %zu", h, k, chunks[c]);
        shoal_lines *l;
        CK_OK(shoal_util_read_last_n_lines(p, k, chunks[c], &l));
        mine[n] = malloc(4200);
        char *w = mine[n] + sprintf(mine[n], "OK %zu ", l->n);
        for (size_t j = 0; j < l->n; j++) {
          size_t len = l->len[j];
          while (len && l->line[j][len - 1] == '\r')
            len--;
          char line[512];
          memcpy(line, l->line[j], len);
          if (j + 1 < l->n) line[len++] = '\n';
          if (j) *w++ = ',';
          hexs(w, line, len);
          w += strlen(w);
        }
        shoal_lines_free(l);
        n++;
      }
  }

  /* get_cpu_count and get_mem_size_gb over cgroup/proc fixtures */
  unset_env();
  static const struct {
    int v2;
    const char *cpu, *period, *mem, *meminfo;
  } cg[] = {
      {1, "max 100000", NULL, "max", "MemTotal: 2097152 kB"},
      {1, "150000 100000", NULL, "536870912", "MemTotal: 2097152 kB"},
      {1, "50000 100000", NULL, "0", "MemTotal: 1_000_000 kB"},
      {1, "100000 0", NULL, "", "MemTotal: x kB"},
      {1, "1e5 1e5", NULL, " 1073741824 \n", "MemTotal:\t3 kB"},
      {1, "garbage", NULL, "garbage", "Foo: 1\nMemTotal: 8 kB"},
      {0, "-1", "100000", "9223372036854771712", "MemTotal: 4 kB"},
      {0, "200000", "100000", "1000000", "MemTotal: 1048576 kB"},
      {0, "200000", "0", "-5", "MemTotal: 1048576 kB"},
      {0, NULL, "100000", NULL, NULL},
  };
  for (size_t i = 0; i < sizeof cg / sizeof cg[0]; i++) {
    char root[64], proc[64], rel[128];
    snprintf(root, sizeof root, "cg%zu", i);
    snprintf(proc, sizeof proc, "proc%zu", i);
    mkdirs(root);
    mkdirs(proc);
    if (cg[i].v2) {
      snprintf(rel, sizeof rel, "%s/cgroup.controllers", root);
      put(rel, "cpu memory\n");
      snprintf(rel, sizeof rel, "%s/cpu.max", root);
      put(rel, cg[i].cpu);
      snprintf(rel, sizeof rel, "%s/memory.max", root);
      put(rel, cg[i].mem);
    } else {
      if (cg[i].cpu) {
        snprintf(rel, sizeof rel, "%s/cpu/cpu.cfs_quota_us", root);
        put(rel, cg[i].cpu);
      }
      snprintf(rel, sizeof rel, "%s/cpu/cpu.cfs_period_us", root);
      put(rel, cg[i].period);
      if (cg[i].mem) {
        snprintf(rel, sizeof rel, "%s/memory/memory.limit_in_bytes", root);
        put(rel, cg[i].mem);
      }
    }
    if (cg[i].meminfo) {
      snprintf(rel, sizeof rel, "%s/meminfo", proc);
      put(rel, cg[i].meminfo);
    }
    char hr[256], hp[256];
    const char *rp = tpath(root), *pp = tpath(proc);
    hexs(hr, rp, strlen(rp));
    hexs(hp, pp, strlen(pp));
    req[n] = malloc(600);
    sprintf(req[n], "C %s %s", hr, hp);
    setenv("SHOAL_CGROUP_ROOT", rp, 1);
    setenv("SHOAL_PROC_ROOT", pp, 1);
    double gb;
    int cpus = shoal_util_get_cpu_count();
    CK_OK(shoal_util_get_mem_size_gb(&gb));
    /* Python's repr of a float: the shortest round-tripping digits */
    char txt[128], rep[64];
    for (int prec = 1; prec <= 17; prec++) {
      snprintf(rep, sizeof rep, "%.*g", prec, gb);
      if (strtod(rep, NULL) == gb) break;
    }
    snprintf(txt, sizeof txt, "%d %s", cpus, rep);
    mine[n] = malloc(300);
    c_answer(mine[n++], (int)strlen(txt), txt);
  }
  ck_assert_int_lt(n, MAXC);

  char **py = run_python(req, n);
  size_t bad = 0;
  for (size_t i = 0; i < n; i++) {
    char *m = mine[i];
    /* Python's repr adds ".0" to whole floats and uses "e-05" forms:
     * compare the C-case numerically below instead */
    if (req[i][0] == 'C') {
      char a[300], b[300];
      unsigned char ra[150], rb[150];
      size_t la = 0, lb = 0;
      ck_assert(strncmp(py[i], "OK x", 4) == 0);
      snprintf(a, sizeof a, "%s", m + 4);
      snprintf(b, sizeof b, "%s", py[i] + 4);
      for (; a[2 * la] && a[2 * la + 1]; la++) {
        unsigned v;
        sscanf(a + 2 * la, "%2x", &v);
        ra[la] = (unsigned char)v;
      }
      for (; b[2 * lb] && b[2 * lb + 1]; lb++) {
        unsigned v;
        sscanf(b + 2 * lb, "%2x", &v);
        rb[lb] = (unsigned char)v;
      }
      ra[la] = rb[lb] = '\0';
      int ca, cb;
      double ga, gb2;
      ck_assert_int_eq(sscanf((char *)ra, "%d %lf", &ca, &ga), 2);
      ck_assert_int_eq(sscanf((char *)rb, "%d %lf", &cb, &gb2), 2);
      if (ca != cb || ga != gb2) {
        fprintf(stderr, "case %s: C \"%s\", python \"%s\"\n", req[i], ra, rb);
        bad++;
      }
    } else if (strcmp(m, py[i]) != 0) {
      fprintf(stderr, "case \"%s\": C \"%s\", python \"%s\"\n", req[i], m,
              py[i]);
      bad++;
    }
  }
  ck_assert_msg(bad == 0, "%zu of %zu cases differ from utils.py", bad, n);
  for (size_t i = 0; i < n; i++) {
    free(req[i]);
    free(mine[i]);
    free(py[i]);
  }
  free(req);
  free(mine);
  free(py);
}
END_TEST

/* --------------------------------------------------------------- main -- */

static TCase *tcase(const char *name, double timeout) {
  TCase *tc = tcase_create(name);
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, timeout);
  return tc;
}

int main(void) {
  Suite *s = suite_create("util");
  TCase *tc = tcase("tail", 120);
  tcase_add_test(tc, tail_matches_reference);
  tcase_add_test(tc, tail_random_contents);
  tcase_add_test(tc, tail_spec_examples);
  tcase_add_test(tc, tail_empty_and_zero);
  tcase_add_test(tc, tail_errors);
  tcase_add_test(tc, tail_max_bytes);
  tcase_add_test(tc, tail_sparse_64g_is_fast);
  tcase_add_test(tc, split_lines_streaming);
  suite_add_tcase(s, tc);

  tc = tcase("hash", 120);
  tcase_add_test(tc, hash_matches_coreutils);
  tcase_add_test(tc, hash_blake2b_matches_libsodium);
  tcase_add_test(tc, hash_fd_reads_from_start_and_reports_stat);
  tcase_add_test(tc, hash_parse_rules);
  tcase_add_test(tc, hash_errors);
  tcase_add_test(tc, hash_echanged_while_growing);
  suite_add_tcase(s, tc);

  tc = tcase("strings", 60);
  tcase_add_test(tc, base36_rules);
  tcase_add_test(tc, base36_long);
  tcase_add_test(tc, format_float_rules);
  tcase_add_test(tc, truncate_rules);
  suite_add_tcase(s, tc);

  tc = tcase("resources", 60);
  tcase_add_test(tc, cpu_count_env);
  tcase_add_test(tc, cpu_count_cgroups);
  tcase_add_test(tc, mem_size);
  tcase_add_test(tc, parallel_threads);
  tcase_add_test(tc, max_workers);
  tcase_add_test(tc, process_alive);
  tcase_add_test(tc, estimate_fd);
  tcase_add_test(tc, free_port);
  suite_add_tcase(s, tc);

  tc = tcase("python", 120);
  tcase_add_test(tc, python_cross_check);
  suite_add_tcase(s, tc);

  SRunner *sr = srunner_create(s);
  srunner_set_fork_status(sr, CK_FORK);
  const char *f = getenv("CK_FORK");
  if (f && strcmp(f, "no") == 0) srunner_set_fork_status(sr, CK_NOFORK);
  srunner_run_all(sr, CK_ENV);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? 0 : 1;
}
