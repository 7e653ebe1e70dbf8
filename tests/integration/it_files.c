/*
 * it_files.c - HashFile, TailLog and follows through a real shoald
 * (DESIGN.md section 6, UTILITIES.md): digests equal to sha256sum, b2sum
 * and sha512sum; the shared hash cache (hits in Stats, a changed file
 * re-hashed); read_last_n_lines' splitting on its edge cases; bad
 * descriptors answered with a clear error and never a hang; a long hash
 * on a worker while puts go on; a follow that sees every appended line
 * once, a truncation and a rotation.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "itest-raw.h"
#include "itest.h"

static void write_file(const char *path, const void *p, size_t n) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(write(fd, p, n), (ssize_t)n);
  close(fd);
}

static void append_file(const char *path, const char *s) {
  int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(write(fd, s, strlen(s)), (ssize_t)strlen(s));
  close(fd);
}

/* The hex digest a coreutils tool prints for @path. */
static void tool_digest(const char *cmd, const char *path, char *hex,
                        size_t cap) {
  char line[512];
  snprintf(line, sizeof line, "%s '%s'", cmd, path);
  FILE *p = popen(line, "r");
  ck_assert_ptr_nonnull(p);
  ck_assert_ptr_nonnull(fgets(line, sizeof line, p));
  pclose(p);
  char *sp = strchr(line, ' ');
  ck_assert_ptr_nonnull(sp);
  *sp = 0;
  ck_assert_uint_lt(strlen(line), cap);
  memcpy(hex, line, strlen(line) + 1);
}

START_TEST(hash_matches_coreutils) {
  it_start_broker(NULL);
  shoal *c = it_open_ok();
  static const size_t sizes[] = {0, 1, (1u << 18) - 1, 1u << 18,
                                 (1u << 18) + 1, 3u << 20};
  char path[IT_PATH * 2];
  snprintf(path, sizeof path, "%s/f.bin", it_dir);
  unsigned seed = 12345;
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    size_t n = sizes[i];
    unsigned char *buf = malloc(n + 1);
    for (size_t k = 0; k < n; k++) buf[k] = (unsigned char)(rand_r(&seed) >> 7);
    write_file(path, buf, n);
    free(buf);
    static const struct {
      const char *alg, *tool;
    } algs[] = {{"blake2b", "b2sum -l 256"},
                {NULL, "b2sum -l 256"},
                {"sha256", "sha256sum"},
                {"sha512", "sha512sum"}};
    for (size_t a = 0; a < sizeof algs / sizeof algs[0]; a++) {
      char want[SHOAL_HASH_HEX_MAX], got[SHOAL_HASH_HEX_MAX];
      tool_digest(algs[a].tool, path, want, sizeof want);
      int len = shoal_hash_file(c, path, algs[a].alg, got, sizeof got);
      ck_assert_msg(len == (int)strlen(want), "size %zu %s: %d (%s) %s", n,
                    algs[a].tool, len, shoal_errname(len),
                    shoal_last_error(c));
      ck_assert_msg(strcmp(got, want) == 0, "size %zu %s: %s != %s", n,
                    algs[a].tool, got, want);
    }
    /* blake2b-512 (hashlib's blake2b(), b2sum's default) via shoal_hash_fd */
    char want[SHOAL_HASH_HEX_MAX];
    tool_digest("b2sum", path, want, sizeof want);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    unsigned char d[64];
    IT_RC(c, shoal_hash_fd(c, fd, "blake2b", 64, d, sizeof d), 64);
    close(fd);
    char hex[129];
    for (int k = 0; k < 64; k++) sprintf(hex + 2 * k, "%02x", d[k]);
    ck_assert_str_eq(hex, want);
  }
  shoal_close(c);
}
END_TEST

START_TEST(hash_cache) {
  it_start_broker(NULL);
  shoal *c = it_open_ok();
  char path[IT_PATH * 2];
  snprintf(path, sizeof path, "%s/cached.txt", it_dir);
  write_file(path, "hello\n", 6);
  char h1[SHOAL_HASH_HEX_MAX], h2[SHOAL_HASH_HEX_MAX], h3[SHOAL_HASH_HEX_MAX];
  shoal_stats st0, st1, st2, st3;
  IT_OK(c, shoal_stats_get(c, &st0));
  ck_assert_int_gt(shoal_hash_file(c, path, "sha256", h1, sizeof h1), 0);
  IT_OK(c, shoal_stats_get(c, &st1));
  ck_assert_uint_eq(st1.hash_cache_misses, st0.hash_cache_misses + 1);
  ck_assert_uint_eq(st1.hash_bytes_read, st0.hash_bytes_read + 6);
  ck_assert_uint_ge(st1.hash_cache_entries, 1);
  ck_assert_uint_ge(st1.workers, 1);

  /* another client, another descriptor: answered from the cache */
  shoal *c2 = it_open_ok();
  ck_assert_int_gt(shoal_hash_file(c2, path, "sha256", h2, sizeof h2), 0);
  ck_assert_str_eq(h1, h2);
  IT_OK(c, shoal_stats_get(c, &st2));
  ck_assert_uint_eq(st2.hash_cache_hits, st1.hash_cache_hits + 1);
  ck_assert_uint_eq(st2.hash_bytes_read, st1.hash_bytes_read);

  /* another algorithm is another entry */
  ck_assert_int_gt(shoal_hash_file(c2, path, "blake2b", h3, sizeof h3), 0);
  ck_assert_str_ne(h1, h3);

  /* a changed file (same size, new mtime/ctime) is read again */
  it_sleep_ms(20);
  write_file(path, "HELLO\n", 6);
  ck_assert_int_gt(shoal_hash_file(c, path, "sha256", h3, sizeof h3), 0);
  ck_assert_str_ne(h1, h3);
  char want[SHOAL_HASH_HEX_MAX];
  tool_digest("sha256sum", path, want, sizeof want);
  ck_assert_str_eq(h3, want);
  IT_OK(c, shoal_stats_get(c, &st3));
  ck_assert_uint_eq(st3.hash_cache_misses, st2.hash_cache_misses + 2);
  ck_assert_uint_ge(it_counter(st3.requests, "hash_file"), 4);
  shoal_close(c2);
  shoal_close(c);
}
END_TEST

START_TEST(hash_cache_bounded) {
  it_start_broker("--hash-cache-entries", "4", NULL);
  shoal *c = it_open_ok();
  char path[IT_PATH * 2], hex[SHOAL_HASH_HEX_MAX];
  for (int i = 0; i < 10; i++) {
    snprintf(path, sizeof path, "%s/f%d", it_dir, i);
    write_file(path, path, strlen(path));
    ck_assert_int_gt(shoal_hash_file(c, path, NULL, hex, sizeof hex), 0);
  }
  shoal_stats st;
  IT_OK(c, shoal_stats_get(c, &st));
  ck_assert_uint_eq(st.hash_cache_entries, 4);
  ck_assert_uint_eq(st.hash_cache_misses, 10);
  shoal_close(c);
}
END_TEST

START_TEST(bad_descriptors) {
  it_start_broker(NULL);
  shoal *c = it_open_ok();
  char hex[SHOAL_HASH_HEX_MAX];
  shoal_lines *l = NULL;
  /* a directory */
  IT_RC(c, shoal_hash_file(c, it_dir, NULL, hex, sizeof hex), SHOAL_ENOTREG);
  ck_assert_ptr_nonnull(strstr(shoal_last_error(c), "directory"));
  IT_RC(c, shoal_tail(c, it_dir, 5, &l), SHOAL_ENOTREG);
  /* a FIFO: no writer, never a hang */
  char fifo[IT_PATH * 2];
  snprintf(fifo, sizeof fifo, "%s/fifo", it_dir);
  ck_assert_int_eq(mkfifo(fifo, 0600), 0);
  IT_RC(c, shoal_hash_file(c, fifo, NULL, hex, sizeof hex), SHOAL_ENOTREG);
  IT_RC(c, shoal_tail(c, fifo, 5, &l), SHOAL_ENOTREG);
  /* a character device */
  IT_RC(c, shoal_hash_file(c, "/dev/null", NULL, hex, sizeof hex),
        SHOAL_ENOTREG);
  /* missing: the client's open fails, with the path in the message */
  char missing[IT_PATH * 2];
  snprintf(missing, sizeof missing, "%s/nope", it_dir);
  IT_RC(c, shoal_hash_file(c, missing, NULL, hex, sizeof hex), -ENOENT);
  ck_assert_ptr_nonnull(strstr(shoal_last_error(c), "nope"));
  /* a descriptor not open for reading: the broker's read fails */
  char path[IT_PATH * 2];
  snprintf(path, sizeof path, "%s/wo", it_dir);
  write_file(path, "data\n", 5);
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  unsigned char d[64];
  IT_RC(c, shoal_hash_fd(c, fd, NULL, 0, d, sizeof d), -EBADF);
  IT_RC(c, shoal_tail_fd(c, fd, 3, &l), -EBADF);
  close(fd);
  /* a closed descriptor: refused before anything is sent */
  IT_RC(c, shoal_hash_fd(c, fd, NULL, 0, d, sizeof d), -EBADF);
  /* unknown algorithm, bad length, short buffer */
  IT_RC(c, shoal_hash_file(c, path, "md5", hex, sizeof hex), SHOAL_EINVAL);
  ck_assert_ptr_nonnull(strstr(shoal_last_error(c), "sha256"));
  fd = open(path, O_RDONLY | O_CLOEXEC);
  IT_RC(c, shoal_hash_fd(c, fd, "sha256", 20, d, sizeof d), SHOAL_EINVAL);
  IT_RC(c, shoal_hash_fd(c, fd, "sha512", 0, d, 32), SHOAL_ETOOBIG);
  close(fd);
  /* the connection is fine after all of it */
  IT_OK(c, shoal_put(c, "k", 1, "v", 1, NULL));
  IT_OK(c, shoal_ping(c));
  shoal_close(c);
}
END_TEST

START_TEST(raw_without_descriptor) {
  it_start_broker(NULL);
  int fd = it_raw_connect(it_sock);
  ck_assert_int_eq(it_raw_hello(fd), 0);
  Shoal__HashFile h = SHOAL__HASH_FILE__INIT;
  Shoal__Request rq = SHOAL__REQUEST__INIT;
  rq.has_id = 1;
  rq.id = 7;
  rq.body_case = SHOAL__REQUEST__BODY_HASH_FILE;
  rq.hash_file = &h;
  Shoal__Response *r = it_raw_call(fd, &rq);
  ck_assert_ptr_nonnull(r);
  ck_assert_int_eq(r->status, SHOAL_EPROTOCOL);
  ck_assert_ptr_nonnull(strstr(r->error, "SCM_RIGHTS"));
  shoal__response__free_unpacked(r, NULL);
  /* Cancel of a follow that does not exist */
  Shoal__Cancel x = SHOAL__CANCEL__INIT;
  x.has_target = 1;
  x.target = 99;
  rq.id = 8;
  rq.body_case = SHOAL__REQUEST__BODY_CANCEL;
  rq.cancel = &x;
  r = it_raw_call(fd, &rq);
  ck_assert_ptr_nonnull(r);
  ck_assert_int_eq(r->status, SHOAL_ENOTFOUND);
  shoal__response__free_unpacked(r, NULL);
  /* still served */
  Shoal__Ping p = SHOAL__PING__INIT;
  rq.id = 9;
  rq.body_case = SHOAL__REQUEST__BODY_PING;
  rq.ping = &p;
  r = it_raw_call(fd, &rq);
  ck_assert_ptr_nonnull(r);
  ck_assert_int_eq(r->status, 0);
  shoal__response__free_unpacked(r, NULL);
  close(fd);
}
END_TEST

/* read_last_n_lines' splitting, written plainly: all pieces, then the
 * last n. */
static size_t ref_tail(const char *s, size_t len, size_t n, size_t *off,
                       size_t *ln) {
  size_t cnt = 0, start = 0;
  size_t all_off[256], all_len[256];
  for (size_t i = 0; i <= len; i++) {
    if (i == len || s[i] == '\n') {
      if (i == len && start == len && len > 0 && s[len - 1] == '\n') break;
      if (i == len && len == 0) break;
      all_off[cnt] = start;
      all_len[cnt] = i - start;
      cnt++;
      start = i + 1;
    }
  }
  size_t from = cnt > n ? cnt - n : 0;
  for (size_t i = from; i < cnt; i++) {
    off[i - from] = all_off[i];
    ln[i - from] = all_len[i];
  }
  return cnt - from;
}

START_TEST(tail_edge_cases) {
  it_start_broker(NULL);
  shoal *c = it_open_ok();
  static const struct {
    const char *s;
    size_t len;
  } cases[] = {
      {"", 0},
      {"\n", 1},
      {"a", 1},
      {"a\nb\n", 4},
      {"a\nb", 3},
      {"a\r\nb\r\n", 6},
      {"one\ntwo\nthree\n\n\n", 16},
      {"x\0y\nz\n", 6},
      {"\xff\xfe bad utf8\nok\n", 15},
      {"no newline at all", 17},
  };
  char path[IT_PATH * 2];
  snprintf(path, sizeof path, "%s/t.log", it_dir);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    write_file(path, cases[i].s, cases[i].len);
    static const size_t ns[] = {0, 1, 2, 3, 100, (size_t)1 << 40};
    for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
      size_t off[256], ln[256];
      size_t want = ref_tail(cases[i].s, cases[i].len, ns[k], off, ln);
      shoal_lines *l = NULL;
      IT_OK(c, shoal_tail(c, path, ns[k], &l));
      ck_assert_msg(l->n == want, "case %zu n=%zu: %zu lines, want %zu", i,
                    ns[k], l->n, want);
      for (size_t j = 0; j < want; j++) {
        ck_assert_uint_eq(l->len[j], ln[j]);
        ck_assert(memcmp(l->line[j], cases[i].s + off[j], ln[j]) == 0);
        ck_assert_int_eq(l->line[j][ln[j]], 0);
      }
      shoal_lines_free(l);
    }
  }
  shoal_close(c);
}
END_TEST

START_TEST(tail_reads_from_the_end) {
  it_start_broker("--max-frame", "64k", NULL);
  shoal *c = it_open_ok();
  char path[IT_PATH * 2];
  snprintf(path, sizeof path, "%s/sparse.log", it_dir);
  /* 64 GiB of hole, then three lines: answered without reading the hole */
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(ftruncate(fd, (off_t)64 << 30), 0);
  close(fd);
  append_file(path, "\nfirst\nsecond\nthird\n");
  uint64_t t0 = it_now_ms();
  shoal_lines *l = NULL;
  IT_OK(c, shoal_tail(c, path, 3, &l));
  ck_assert_uint_lt(it_now_ms() - t0, 5000);
  ck_assert_uint_eq(l->n, 3);
  ck_assert_str_eq(l->line[0], "first");
  ck_assert_str_eq(l->line[2], "third");
  shoal_lines_free(l);
  /* more than a frame can carry: a clear error, the connection stays */
  snprintf(path, sizeof path, "%s/big.log", it_dir);
  char line[101];
  memset(line, 'x', 99);
  line[99] = '\n';
  line[100] = 0;
  fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  for (int i = 0; i < 2000; i++) ck_assert_int_eq(write(fd, line, 100), 100);
  close(fd);
  IT_RC(c, shoal_tail(c, path, 100000, &l), SHOAL_ETOOBIG);
  ck_assert_ptr_nonnull(strstr(shoal_last_error(c), "fewer"));
  IT_OK(c, shoal_tail(c, path, 100, &l));
  ck_assert_uint_eq(l->n, 100);
  shoal_lines_free(l);
  shoal_close(c);
}
END_TEST

static char big_path[IT_PATH * 2];

static int hash_big(void *arg) {
  (void)arg;
  shoal_options o;
  memset(&o, 0, sizeof o);
  o.socket = it_sock;
  o.timeout_ms = 90000; /* a loaded machine may take a while */
  shoal *c;
  IT_CHK_RC(NULL, shoal_open(&c, IT_NAME, &o), 0);
  char hex[SHOAL_HASH_HEX_MAX];
  int n = shoal_hash_file(c, big_path, "blake2b", hex, sizeof hex);
  IT_CHK(n == 64, "hash: %d %s", n, shoal_last_error(c));
  shoal_close(c);
  return 0;
}

START_TEST(hash_does_not_block_writes) {
  it_start_broker("--workers", "1", NULL);
  snprintf(big_path, sizeof big_path, "%s/big.sparse", it_dir);
  int fd = open(big_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ck_assert_int_ge(fd, 0);
  /* blake2b of 2 GiB of zeros: seconds of worker time, no disk */
  ck_assert_int_eq(ftruncate(fd, (off_t)2 << 30), 0);
  close(fd);
  shoal *c = it_open_ok();
  pid_t child = it_fork(hash_big, NULL, 100);
  /* wait until the broker has the job */
  shoal_stats st;
  for (int i = 0; i < 500; i++) {
    IT_OK(c, shoal_stats_get(c, &st));
    if (st.jobs_queued) break;
    it_sleep_ms(5);
  }
  ck_assert_uint_eq(st.jobs_queued, 1);
  /* the loop serves writes meanwhile */
  for (int i = 0; i < 200; i++) {
    char k[16];
    snprintf(k, sizeof k, "k%d", i);
    IT_OK(c, shoal_put(c, k, strlen(k), "v", 1, NULL));
  }
  IT_OK(c, shoal_stats_get(c, &st));
  ck_assert_msg(st.jobs_queued == 1 && waitpid(child, NULL, WNOHANG) == 0,
                "the hash finished before 200 puts did: this test needs a "
                "longer hash");
  it_wait_ok(child, "hasher");
  shoal_close(c);
}
END_TEST

/* ----------------------------------------------------------------- follow */

struct fstate {
  long next;       /* next number expected */
  int truncated, rotated;
  long stop_at;
};

static int on_event(void *arg, const shoal_follow_event *ev) {
  struct fstate *s = arg;
  if (ev->kind == SHOAL_FOLLOW_TRUNCATED) s->truncated++;
  if (ev->kind == SHOAL_FOLLOW_ROTATED) s->rotated++;
  if (ev->kind != SHOAL_FOLLOW_LINE) return 0;
  char buf[64];
  size_t n = ev->len < sizeof buf - 1 ? ev->len : sizeof buf - 1;
  memcpy(buf, ev->data, n);
  buf[n] = 0;
  long v = strtol(buf + 5, NULL, 10); /* "line 123" */
  if (strncmp(buf, "line ", 5) != 0 || v != s->next) {
    fprintf(stderr, "follow: got '%s', expected line %ld\n", buf, s->next);
    return 99;
  }
  s->next++;
  return s->next == s->stop_at ? 1 : 0;
}

static char follow_path[IT_PATH * 2];

static int writer(void *arg) {
  long from = ((long *)arg)[0], to = ((long *)arg)[1];
  for (long i = from; i < to; i++) {
    char line[64];
    snprintf(line, sizeof line, "line %ld\n", i);
    int fd = open(follow_path, O_WRONLY | O_APPEND | O_CLOEXEC);
    IT_CHK(fd >= 0, "open: %s", strerror(errno));
    /* half a line, then the rest: lines are delivered whole */
    size_t h = strlen(line) / 2;
    IT_CHK(write(fd, line, h) == (ssize_t)h, "write");
    if (i % 97 == 0) it_sleep_ms(2);
    IT_CHK(write(fd, line + h, strlen(line) - h) == (ssize_t)(strlen(line) - h),
           "write");
    close(fd);
    if (i % 50 == 0) it_sleep_ms(1);
  }
  return 0;
}

START_TEST(follow_appends_truncation_rotation) {
  it_start_broker(NULL);
  shoal *c = it_open_ok();
  snprintf(follow_path, sizeof follow_path, "%s/app.log", it_dir);
  write_file(follow_path, "old 1\nline 0\nline 1\n", 20);
  shoal_follow *f;
  IT_OK(c, shoal_follow_open(c, follow_path, 2, SHOAL_FOLLOW_REOPEN, &f));
  shoal_follow_event ev;
  /* the last 2 lines first */
  IT_OK(c, shoal_follow_next(f, 5000, &ev));
  ck_assert_int_eq(ev.kind, SHOAL_FOLLOW_LINE);
  ck_assert_uint_eq(ev.len, 6);
  ck_assert(memcmp(ev.data, "line 0", 6) == 0);
  ck_assert_uint_eq(ev.offset, 6);
  IT_OK(c, shoal_follow_next(f, 5000, &ev));
  ck_assert(memcmp(ev.data, "line 1", 6) == 0);
  IT_RC(c, shoal_follow_next(f, 50, &ev), SHOAL_ETIMEOUT);

  /* appended by another process, in pieces */
  long range[2] = {2, 3000};
  pid_t w = it_fork(writer, range, 60);
  struct fstate s = {.next = 2, .stop_at = 3000};
  while (s.next < 3000) {
    int rc = shoal_follow_next(f, 10000, &ev);
    ck_assert_msg(rc == 0, "follow_next: %s (%s) after line %ld",
                  shoal_errname(rc), shoal_last_error(c), s.next);
    ck_assert_int_eq(on_event(&s, &ev) == 99, 0);
  }
  it_wait_ok(w, "writer");
  IT_RC(c, shoal_follow_next(f, 100, &ev), SHOAL_ETIMEOUT);

  /* truncation (copytruncate): reported, then the new content */
  ck_assert_int_eq(truncate(follow_path, 0), 0);
  append_file(follow_path, "line 3000\n");
  int got_trunc = 0;
  s.stop_at = 3001;
  while (s.next < 3001) {
    IT_OK(c, shoal_follow_next(f, 10000, &ev));
    if (ev.kind == SHOAL_FOLLOW_TRUNCATED) got_trunc = 1;
    ck_assert_int_ne(on_event(&s, &ev), 99);
  }
  ck_assert_int_eq(got_trunc, 1);

  /* rotation: renamed away, a new file at the path; followed from its
   * start (lines written before the follower noticed included) */
  char old[IT_PATH * 2 + 4];
  snprintf(old, sizeof old, "%s.1", follow_path);
  append_file(follow_path, "line 3001\n");
  ck_assert_int_eq(rename(follow_path, old), 0);
  append_file(follow_path, "line 3002\nline 3003\n");
  s.stop_at = 3004;
  int rotated = 0;
  while (s.next < 3004) {
    int rc = shoal_follow_next(f, 10000, &ev);
    ck_assert_msg(rc == 0, "%s: %s", shoal_errname(rc), shoal_last_error(c));
    if (ev.kind == SHOAL_FOLLOW_ROTATED && ev.len) rotated = 1;
    ck_assert_int_ne(on_event(&s, &ev), 99);
  }
  ck_assert_int_eq(rotated, 1);
  /* the old file's follow ends once the broker sees its connection go */
  shoal_stats st;
  for (int i = 0; i < 200; i++) {
    IT_OK(c, shoal_stats_get(c, &st));
    if (st.followers == 1) break;
    it_sleep_ms(10);
  }
  ck_assert_uint_eq(st.followers, 1);
  shoal_follow_close(f);
  for (int i = 0; i < 200; i++) {
    IT_OK(c, shoal_stats_get(c, &st));
    if (st.followers == 0) break;
    it_sleep_ms(10);
  }
  ck_assert_uint_eq(st.followers, 0);
  shoal_close(c);
}
END_TEST

static int stop_after(void *arg, const shoal_follow_event *ev) {
  int *idle = arg;
  if (ev->kind == SHOAL_FOLLOW_IDLE) (*idle)++;
  return *idle >= 3 ? 42 : 0;
}

START_TEST(follow_callback_stops) {
  it_start_broker(NULL);
  shoal *c = it_open_ok();
  char path[IT_PATH * 2];
  snprintf(path, sizeof path, "%s/cb.log", it_dir);
  write_file(path, "a\nb\n", 4);
  int idle = 0;
  IT_RC(c, shoal_tail_follow(c, path, 10, 0, 20, stop_after, &idle), 42);
  ck_assert_int_eq(idle, 3);
  shoal_close(c);
}
END_TEST

int main(void) {
  Suite *s = suite_create("it_files");
  TCase *tc = it_tcase("hash", 120);
  tcase_add_test(tc, hash_matches_coreutils);
  tcase_add_test(tc, hash_cache);
  tcase_add_test(tc, hash_cache_bounded);
  tcase_add_test(tc, hash_does_not_block_writes);
  suite_add_tcase(s, tc);
  tc = it_tcase("errors", 60);
  tcase_add_test(tc, bad_descriptors);
  tcase_add_test(tc, raw_without_descriptor);
  suite_add_tcase(s, tc);
  tc = it_tcase("tail", 60);
  tcase_add_test(tc, tail_edge_cases);
  tcase_add_test(tc, tail_reads_from_the_end);
  suite_add_tcase(s, tc);
  tc = it_tcase("follow", 120);
  tcase_add_test(tc, follow_appends_truncation_rotation);
  tcase_add_test(tc, follow_callback_stops);
  suite_add_tcase(s, tc);
  return it_run_suite(s);
}
