/*
 * test_errors.c - every error code of the shm layer, produced on purpose and
 * asserted exactly: the error table itself (shoal_strerror/shoal_errname),
 * bad names and sizes (EINVAL), -ENOENT/-EEXIST/SHM_TRUNC on open, the
 * single-writer lock (ELOCKED, same process and across fork), damaged
 * headers (EVERSION/ECORRUPT, never a crash), reader slot exhaustion
 * (ENOREADERS), reads outside a section (ENOSECTION) and oversize keys and
 * values (ETOOBIG).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "unit.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shm-internal.h"

/* ----------------------------------------------------------- the table -- */

static const struct {
  int code;
  const char *name;
  const char *msg;
} codes[] = {
#define XX(n, o, m) {SHOAL_##n, #n, m},
    SHOAL_ERRNO_MAP(XX)
#undef XX
};
#define NCODES (sizeof codes / sizeof codes[0])

START_TEST(errname_every_code) {
  ck_assert_uint_ge(NCODES, 17);
  for (size_t i = 0; i < NCODES; i++) {
    const char *n = shoal_errname(codes[i].code);
    const char *m = shoal_strerror(codes[i].code);
    ck_assert_ptr_nonnull(n);
    ck_assert_ptr_nonnull(m);
    ck_assert_str_eq(n, codes[i].name);
    ck_assert_str_eq(m, codes[i].msg);
    /* far from every errno, negative, distinct */
    ck_assert_int_lt(codes[i].code, -4096);
    for (size_t j = 0; j < i; j++) ck_assert_int_ne(codes[i].code, codes[j].code);
  }
  ck_assert_int_eq(SHOAL_ENOTFOUND, SHOAL__EBASE - 1);
  ck_assert_str_eq(shoal_errname(SHOAL_ENOTFOUND), "ENOTFOUND");
  ck_assert_str_eq(shoal_errname(SHOAL_ECONFLICT), "ECONFLICT");
  ck_assert_str_eq(shoal_errname(SHOAL_EUNAVAIL), "EUNAVAIL");
}
END_TEST

START_TEST(errname_errno_and_unknown) {
  ck_assert_str_eq(shoal_errname(0), "OK");
  ck_assert_str_eq(shoal_errname(-ENOMEM), "ENOMEM");
  ck_assert_str_eq(shoal_errname(-ENOENT), "ENOENT");
  ck_assert_str_eq(shoal_errname(-EEXIST), "EEXIST");
  ck_assert_str_eq(shoal_errname(-EACCES), "EACCES");
  ck_assert_str_eq(shoal_errname(-EINTR), "EINTR");
  ck_assert_str_eq(shoal_errname(-ENOSPC), "ENOSPC");
  ck_assert_str_eq(shoal_errname(-EAGAIN), "EAGAIN");
  /* not a code at all */
  ck_assert_str_eq(shoal_errname(1), "EUNKNOWN");
  ck_assert_str_eq(shoal_errname(12345), "EUNKNOWN");
  ck_assert_str_eq(shoal_errname(SHOAL__EBASE), "EUNKNOWN");
  ck_assert_str_eq(shoal_errname(SHOAL__EBASE - 999), "EUNKNOWN");
  ck_assert_str_eq(shoal_errname(-29999), "EUNKNOWN"); /* between the bands */
  int odd[] = {0, -ENOMEM, -EACCES, 1, 12345, SHOAL__EBASE, SHOAL__EBASE - 999,
               -29999, -100000, (int)0x80000000};
  for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
    const char *m = shoal_strerror(odd[i]);
    ck_assert_ptr_nonnull(m);
    ck_assert_int_gt((int)strlen(m), 0);
    ck_assert_ptr_nonnull(shoal_errname(odd[i]));
  }
  /* -errno messages are the system's text */
  ck_assert_str_eq(shoal_strerror(-ENOMEM), strerror(ENOMEM));
}
END_TEST

/* -------------------------------------------------------- names, sizes -- */

static const char *bad_names[] = {
    "",          "a/b",      "/abs",      "a b",     "tab\t",   "nl\n",
    "sl\\ash",   "q\"uote",  "star*",     "\xc3\xa9", /* é */
    "colon:x",
    /* 65 characters */
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
};

START_TEST(bad_names_einval) {
  for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
    const char *n = bad_names[i];
    shm_config cfg = {.name = n, .dir = ut_dir, .size = SHM_MIN_SIZE};
    shm_store *s = NULL;
    shm_view *v = NULL;
    char buf[1024];
    int rc = shm_store_open(&s, &cfg, SHM_CREATE);
    ck_assert_msg(rc == SHOAL_EINVAL, "store_open(\"%s\") = %s", n,
                  shoal_errname(rc));
    rc = shm_view_open(&v, n, ut_dir, 0);
    ck_assert_msg(rc == SHOAL_EINVAL, "view_open(\"%s\") = %s", n,
                  shoal_errname(rc));
    rc = shm_store_unlink(n, ut_dir);
    ck_assert_msg(rc == SHOAL_EINVAL, "store_unlink(\"%s\") = %s", n,
                  shoal_errname(rc));
    rc = shm_object_path(buf, sizeof buf, n, ut_dir, "data");
    ck_assert_msg(rc == SHOAL_EINVAL, "object_path(\"%s\") = %s", n,
                  shoal_errname(rc));
  }
  /* nothing was created in the directory */
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "test -z \"$(ls -A '%s')\"", ut_dir);
  ck_assert_msg(system(cmd) == 0, "a bad name left files in %s", ut_dir);
}
END_TEST

START_TEST(good_names_work) {
  const char *good[] = {
      "Az09._-",
      /* exactly SHM_NAME_MAX */
      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
  };
  ck_assert_uint_eq(strlen(good[1]), SHM_NAME_MAX);
  for (size_t i = 0; i < 2; i++) {
    shm_config cfg = {.name = good[i], .dir = ut_dir, .size = SHM_MIN_SIZE};
    shm_store *s = NULL;
    shm_view *v = NULL;
    CK_OK(shm_store_open(&s, &cfg, SHM_CREATE | SHM_EXCL));
    CK_OK(shm_view_open(&v, good[i], ut_dir, 0));
    char path[1024], want[512];
    snprintf(want, sizeof want, "%s/shoal.%s.data", ut_dir, good[i]);
    ck_assert_msg(access(want, F_OK) == 0, "%s does not exist", want);
    CK_OK(shm_object_path(path, sizeof path, good[i], ut_dir, "data"));
    ck_assert_str_eq(path, want);
    CK_OK(shm_object_path(path, sizeof path, good[i], ut_dir, "readers"));
    snprintf(want, sizeof want, "%s/shoal.%s.readers", ut_dir, good[i]);
    ck_assert_str_eq(path, want);
    ck_assert_msg(access(want, F_OK) == 0, "%s does not exist", want);
    /* too small a buffer */
    CK_RC(shm_object_path(path, 8, good[i], ut_dir, "data"), -ENAMETOOLONG);
    shm_view_close(v);
    shm_store_close(s, 1);
    CK_OK(shm_store_unlink(good[i], ut_dir));
    ck_assert_int_ne(access(want, F_OK), 0);
  }
}
END_TEST

START_TEST(bad_sizes_einval) {
  shm_store *s = NULL;
  CK_RC(ut_store_open(&s, SHM_MIN_SIZE - 1, 0, SHM_CREATE), SHOAL_EINVAL);
  CK_RC(ut_store_open(&s, 4096, 0, SHM_CREATE), SHOAL_EINVAL);
  CK_RC(ut_store_open(&s, SHM_MAX_SIZE + 4096, 0, SHM_CREATE), SHOAL_EINVAL);
  CK_RC(ut_store_open(&s, UINT64_MAX, 0, SHM_CREATE), SHOAL_EINVAL);
  CK_RC(ut_store_open(&s, SHM_MIN_SIZE, SHM_MAX_READER_SLOTS + 1, SHM_CREATE),
        SHOAL_EINVAL);
  /* nothing left behind, so a valid create with EXCL now works */
  CK_OK(ut_store_open(&ut_s, SHM_MIN_SIZE, 0, SHM_CREATE | SHM_EXCL));
  CK_OK(ut_view_open(&ut_v, 0));
  /* the smallest store is usable */
  ut_put_gen(ut_s, "k", 1, 1000, 1);
  ut_assert_gen(ut_v, "k", 1, 1000, 1);
  shm_stats st;
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.size, SHM_MIN_SIZE);
}
END_TEST

START_TEST(null_name_is_default) {
  shm_config cfg = {.name = NULL, .dir = ut_dir, .size = SHM_MIN_SIZE};
  shm_store *s = NULL;
  shm_view *v = NULL;
  CK_OK(shm_store_open(&s, &cfg, SHM_CREATE | SHM_EXCL));
  char p[1024];
  snprintf(p, sizeof p, "%s/shoal.default.data", ut_dir);
  ck_assert_msg(access(p, F_OK) == 0, "%s missing", p);
  CK_OK(shm_view_open(&v, NULL, ut_dir, 0));
  shm_view_close(v);
  shm_store_close(s, 1);
  CK_OK(shm_store_unlink(NULL, ut_dir));
  ck_assert_int_ne(access(p, F_OK), 0);
}
END_TEST

/* ---------------------------------------------------- open flag errors -- */

START_TEST(open_missing_enoent) {
  shm_store *s = NULL;
  shm_view *v = NULL;
  CK_RC(ut_store_open(&s, 0, 0, 0), -ENOENT);
  CK_RC(ut_view_open(&v, 0), -ENOENT);
  CK_RC(ut_view_open(&v, SHM_VIEW_NOSLOT), -ENOENT);
  CK_RC(shm_store_unlink(ut_name, ut_dir), -ENOENT);
  /* a directory that does not exist, even with SHM_CREATE */
  char nodir[1024];
  snprintf(nodir, sizeof nodir, "%s/no/such/dir", ut_dir);
  shm_config cfg = {.name = ut_name, .dir = nodir, .size = SHM_MIN_SIZE};
  CK_RC(shm_store_open(&s, &cfg, SHM_CREATE), -ENOENT);
  /* still nothing in the test directory */
  CK_RC(ut_store_open(&s, 0, 0, 0), -ENOENT);
}
END_TEST

START_TEST(open_excl_eexist_and_attach) {
  CK_OK(ut_store_open(&ut_s, SHM_MIN_SIZE, 0, SHM_CREATE | SHM_EXCL));
  uint64_t v1 = ut_put_gen(ut_s, "keep", 4, 100, 7);
  shm_store_close(ut_s, 1);
  ut_s = NULL;
  shm_store *s = NULL;
  CK_RC(ut_store_open(&s, SHM_MIN_SIZE, 0, SHM_CREATE | SHM_EXCL), -EEXIST);
  /* plain attach and CREATE-without-EXCL both keep the data */
  CK_OK(ut_store_open(&ut_s, 0, 0, 0));
  shm_store_close(ut_s, 1);
  CK_OK(ut_store_open(&ut_s, SHM_MIN_SIZE, 0, SHM_CREATE));
  CK_OK(ut_view_open(&ut_v, 0));
  ut_assert_gen(ut_v, "keep", 4, 100, 7);
  uint64_t ver = 0;
  CK_OK(ut_get_copy(ut_v, "keep", 4, NULL, NULL, &ver));
  ck_assert_uint_eq(ver, v1);
  /* commit_seq survives: a new write gets a newer version */
  ck_assert_uint_gt(ut_put_gen(ut_s, "more", 4, 10, 1), v1);
}
END_TEST

START_TEST(open_trunc_empties) {
  CK_OK(ut_store_open(&ut_s, SHM_MIN_SIZE, 0, SHM_CREATE | SHM_EXCL));
  for (int i = 0; i < 100; i++) {
    char k[16];
    int kl = snprintf(k, sizeof k, "k%d", i);
    ut_put_gen(ut_s, k, kl, 64, i);
  }
  shm_store_close(ut_s, 1);
  ut_s = NULL;
  CK_OK(ut_store_open(&ut_s, SHM_MIN_SIZE, 0, SHM_CREATE | SHM_TRUNC));
  CK_OK(ut_view_open(&ut_v, 0));
  shm_stats st;
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.keys, 0);
  CK_RC(ut_get_copy(ut_v, "k1", 2, NULL, NULL, NULL), SHOAL_ENOTFOUND);
  ck_assert_uint_eq(ut_check(ut_v, 1), 0);
}
END_TEST

/* ------------------------------------------------------------ ELOCKED --- */

START_TEST(elocked_same_process) {
  CK_OK(ut_store_open(&ut_s, SHM_MIN_SIZE, 0, SHM_CREATE | SHM_EXCL));
  shm_store *s2 = NULL;
  CK_RC(ut_store_open(&s2, SHM_MIN_SIZE, 0, SHM_CREATE), SHOAL_ELOCKED);
  CK_RC(ut_store_open(&s2, 0, 0, 0), SHOAL_ELOCKED);
  /* TRUNC must not wipe a store that has a writer */
  ut_put_gen(ut_s, "k", 1, 10, 1);
  CK_RC(ut_store_open(&s2, SHM_MIN_SIZE, 0, SHM_CREATE | SHM_TRUNC),
        SHOAL_ELOCKED);
  CK_OK(ut_view_open(&ut_v, 0));
  ut_assert_gen(ut_v, "k", 1, 10, 1);
  /* readers are never locked out */
  CK_OK(ut_view_open(&ut_v2, 0));
  shm_view_close(ut_v2);
  ut_v2 = NULL;
  /* once the writer is gone the lock is free again */
  shm_store_close(ut_s, 1);
  ut_s = NULL;
  CK_OK(ut_store_open(&ut_s, 0, 0, 0));
  ut_assert_gen(ut_v, "k", 1, 10, 1);
}
END_TEST

static int child_open_writer(void *arg) {
  (void)arg;
  shm_store *s = NULL;
  int rc = ut_store_open(&s, 0, 0, 0);
  if (rc == 0) shm_store_close(s, 1);
  return rc;
}

START_TEST(elocked_in_child) {
  CK_OK(ut_store_open(&ut_s, SHM_MIN_SIZE, 0, SHM_CREATE | SHM_EXCL));
  CK_RC(ut_in_child(child_open_writer, NULL), SHOAL_ELOCKED);
  shm_store_close(ut_s, 1);
  ut_s = NULL;
  CK_RC(ut_in_child(child_open_writer, NULL), 0);
}
END_TEST

/* The child holds the writer; the parent is refused until the child dies
 * (even by _exit without closing: the lock belongs to the process). */
START_TEST(elocked_child_holds) {
  CK_OK(ut_store_open(&ut_s, SHM_MIN_SIZE, 0, SHM_CREATE | SHM_EXCL));
  shm_store_close(ut_s, 1);
  ut_s = NULL;
  int go[2], done[2];
  ck_assert_int_eq(pipe(go), 0);
  ck_assert_int_eq(pipe(done), 0);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    ut_child_alarm(30);
    shm_store *s = NULL;
    int rc = ut_store_open(&s, 0, 0, 0);
    if (rc == 0) {
      uint8_t b[32];
      ut_fill(b, sizeof b, "c", 1, 3);
      rc = shm_put(s, "c", 1, b, sizeof b, 0, NULL);
    }
    ssize_t w = write(go[1], &rc, sizeof rc);
    (void)w;
    char c;
    ssize_t r = read(done[0], &c, 1);
    (void)r;
    _exit(0); /* no close: the kernel drops the lock */
  }
  close(go[1]);
  close(done[0]);
  int crc = -1;
  ck_assert_int_eq(read(go[0], &crc, sizeof crc), (ssize_t)sizeof crc);
  CK_RC(crc, 0);
  shm_store *s = NULL;
  CK_RC(ut_store_open(&s, 0, 0, 0), SHOAL_ELOCKED);
  ck_assert_int_eq(write(done[1], "x", 1), 1);
  close(done[1]);
  close(go[0]);
  ut_wait_child_ok(pid);
  CK_OK(ut_store_open(&ut_s, 0, 0, 0));
  CK_OK(ut_view_open(&ut_v, 0));
  ut_assert_gen(ut_v, "c", 1, 32, 3);
  ck_assert_uint_eq(ut_check(ut_v, 1), 0);
}
END_TEST

/* ------------------------------------------------- damaged headers ------ */

#define DMG_SIZE (8ull << 20)

static void copy_file(const char *from, const char *to) {
  int in = open(from, O_RDONLY);
  ck_assert_msg(in >= 0, "open %s: %s", from, strerror(errno));
  int out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0640);
  ck_assert_msg(out >= 0, "open %s: %s", to, strerror(errno));
  static char buf[1 << 16];
  for (;;) {
    ssize_t n = read(in, buf, sizeof buf);
    ck_assert_int_ge(n, 0);
    if (n == 0) break;
    ck_assert_int_eq(write(out, buf, n), n);
  }
  close(in);
  close(out);
}

static void *slurp(const char *path, size_t *len) {
  int fd = open(path, O_RDONLY);
  ck_assert_int_ge(fd, 0);
  struct stat sb;
  ck_assert_int_eq(fstat(fd, &sb), 0);
  void *p = malloc(sb.st_size ? sb.st_size : 1);
  ck_assert_ptr_nonnull(p);
  size_t got = 0;
  while (got < (size_t)sb.st_size) {
    ssize_t n = read(fd, (char *)p + got, sb.st_size - got);
    ck_assert_int_gt(n, 0);
    got += n;
  }
  close(fd);
  *len = sb.st_size;
  return p;
}

/* A healthy closed store in ut_dir with a few keys. */
static void make_pristine(void) {
  CK_OK(ut_store_open(&ut_s, DMG_SIZE, 8, SHM_CREATE | SHM_EXCL));
  for (int i = 0; i < 300; i++) {
    char k[16];
    int kl = snprintf(k, sizeof k, "key%03d", i);
    ut_put_gen(ut_s, k, kl, (i % 7) * 100 + 1, i);
  }
  ut_put_gen(ut_s, "big", 3, 100000, 1);
  shm_store_close(ut_s, 1);
  ut_s = NULL;
}

/* A copy of the store in a fresh directory (same name): returns the dir. */
static void copy_store(char *dir2, size_t cap) {
  snprintf(dir2, cap, "%s/copy-XXXXXX", ut_base);
  ck_assert_ptr_nonnull(mkdtemp(dir2));
  char a[1024], b[600];
  ut_obj_path(a, sizeof a, ut_dir, ut_name, "data");
  ut_obj_path(b, sizeof b, dir2, ut_name, "data");
  copy_file(a, b);
  ut_obj_path(a, sizeof a, ut_dir, ut_name, "readers");
  ut_obj_path(b, sizeof b, dir2, ut_name, "readers");
  copy_file(a, b);
}

static void poke(const char *dir, const char *suffix, size_t off,
                 const void *bytes, size_t n) {
  char p[1024];
  ut_obj_path(p, sizeof p, dir, ut_name, suffix);
  int fd = open(p, O_RDWR);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(pwrite(fd, bytes, n, off), (ssize_t)n);
  close(fd);
}

static void peek(const char *dir, const char *suffix, size_t off, void *bytes,
                 size_t n) {
  char p[1024];
  ut_obj_path(p, sizeof p, dir, ut_name, suffix);
  int fd = open(p, O_RDONLY);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(pread(fd, bytes, n, off), (ssize_t)n);
  close(fd);
}

struct dmg_try {
  const char *dir;
  int view_rc, store_rc;
};

/* In a child (so a crash is reported as such, with the case's name). */
static int try_view(void *arg) {
  struct dmg_try *t = arg;
  shm_view *v = NULL;
  int rc = shm_view_open(&v, ut_name, t->dir, 0);
  if (rc == 0) {
    /* opened: reads must fail cleanly or work, never crash */
    shm_val val;
    if (shm_read_begin(v) == 0) {
      int g = shm_get(v, "key001", 6, &val);
      (void)g;
      shm_read_end(v);
    }
    shm_view_close(v);
  }
  return rc;
}

static int try_store(void *arg) {
  struct dmg_try *t = arg;
  shm_config cfg = {.name = ut_name, .dir = t->dir};
  shm_store *s = NULL;
  int rc = shm_store_open(&s, &cfg, 0);
  if (rc == 0) shm_store_close(s, 1);
  return rc;
}

/* Damage a copy with @bytes at @off of @suffix; view and store opens must
 * return exactly @want (ECORRUPT/EVERSION) and the failed store open must
 * leave the data object byte for byte as it was. */
static void damage_case(const char *what, const char *suffix, size_t off,
                        const void *bytes, size_t n, int want_view,
                        int want_store) {
  char dir2[300];
  copy_store(dir2, sizeof dir2);
  poke(dir2, suffix, off, bytes, n);
  char p[1024];
  ut_obj_path(p, sizeof p, dir2, ut_name, "data");
  size_t l1, l2;
  void *before = slurp(p, &l1);
  struct dmg_try t = {.dir = dir2};
  int rv = ut_in_child(try_view, &t);
  ck_assert_msg(rv == want_view, "%s: shm_view_open = %d (%s), expected %s",
                what, rv, shoal_errname(rv), shoal_errname(want_view));
  int rs = ut_in_child(try_store, &t);
  ck_assert_msg(rs == want_store, "%s: shm_store_open = %d (%s), expected %s",
                what, rs, shoal_errname(rs), shoal_errname(want_store));
  void *after = slurp(p, &l2);
  ck_assert_msg(l1 == l2 && memcmp(before, after, l1) == 0,
                "%s: failed shm_store_open changed the data object", what);
  free(before);
  free(after);
}

START_TEST(damaged_header_magic) {
  make_pristine();
  uint64_t m;
  peek(ut_dir, "data", offsetof(struct shm_header, magic), &m, 8);
  ck_assert_uint_eq(m, SHM_MAGIC);
  m ^= 0x80;
  damage_case("magic", "data", offsetof(struct shm_header, magic), &m, 8,
              SHOAL_ECORRUPT, SHOAL_ECORRUPT);
  uint64_t zero = 0;
  damage_case("magic zero", "data", 0, &zero, 8, SHOAL_ECORRUPT,
              SHOAL_ECORRUPT);
}
END_TEST

START_TEST(damaged_header_format) {
  make_pristine();
  uint32_t f = SHM_FORMAT_VERSION + 1;
  damage_case("format+1", "data", offsetof(struct shm_header, format), &f, 4,
              SHOAL_EVERSION, SHOAL_EVERSION);
  f = 0;
  damage_case("format 0", "data", offsetof(struct shm_header, format), &f, 4,
              SHOAL_EVERSION, SHOAL_EVERSION);
}
END_TEST

START_TEST(damaged_header_fingerprint) {
  make_pristine();
  uint32_t fp;
  peek(ut_dir, "data", offsetof(struct shm_header, fingerprint), &fp, 4);
  ck_assert_uint_eq(fp, shm__fingerprint());
  fp ^= 1;
  damage_case("fingerprint", "data",
              offsetof(struct shm_header, fingerprint), &fp, 4,
              SHOAL_EVERSION, SHOAL_EVERSION);
}
END_TEST

START_TEST(damaged_header_geometry) {
  make_pristine();
  uint64_t x = DMG_SIZE * 4; /* says 32 MiB, file has 8 */
  damage_case("size", "data", offsetof(struct shm_header, size), &x, 8,
              SHOAL_ECORRUPT, SHOAL_ECORRUPT);
  x = DMG_SIZE + 4096;
  damage_case("heap_start", "data", offsetof(struct shm_header, heap_start),
              &x, 8, SHOAL_ECORRUPT, SHOAL_ECORRUPT);
  x = 3; /* misaligned */
  damage_case("heap_start odd", "data",
              offsetof(struct shm_header, heap_start), &x, 8, SHOAL_ECORRUPT,
              SHOAL_ECORRUPT);
  x = 1ull << 40;
  damage_case("npages", "data", offsetof(struct shm_header, npages), &x, 8,
              SHOAL_ECORRUPT, SHOAL_ECORRUPT);
  uint32_t r = 0;
  damage_case("reader_slots 0", "data",
              offsetof(struct shm_header, reader_slots), &r, 4,
              SHOAL_ECORRUPT, SHOAL_ECORRUPT);
  r = 0x7fffffff;
  damage_case("reader_slots huge", "data",
              offsetof(struct shm_header, reader_slots), &r, 4,
              SHOAL_ECORRUPT, SHOAL_ECORRUPT);
  r = 7;
  damage_case("doorbells", "data", offsetof(struct shm_header, doorbells), &r,
              4, SHOAL_ECORRUPT, SHOAL_ECORRUPT);
}
END_TEST

/* index_off is not geometry: a view may open and must then fail its gets
 * with ECORRUPT (checked in try_view by not crashing); the writer validates
 * every reachable structure and must refuse. */
START_TEST(damaged_index_off) {
  make_pristine();
  uint64_t offs[] = {DMG_SIZE + 8192, 12345, 8, 1ull << 50};
  for (size_t i = 0; i < 4; i++) {
    char dir2[300];
    copy_store(dir2, sizeof dir2);
    poke(dir2, "data", offsetof(struct shm_header, index_off), &offs[i], 8);
    shm_view *v = NULL;
    int rc = shm_view_open(&v, ut_name, dir2, 0);
    ck_assert_msg(rc == 0 || rc == SHOAL_ECORRUPT, "index_off %#" PRIx64
                  ": view_open = %s", offs[i], shoal_errname(rc));
    if (rc == 0) {
      shm_val val;
      CK_OK(shm_read_begin(v));
      CK_RC(shm_get(v, "key001", 6, &val), SHOAL_ECORRUPT);
      shm_read_end(v);
      ck_assert_uint_gt(ut_check(v, 1), 0);
      shm_view_close(v);
    }
    struct dmg_try t = {.dir = dir2};
    CK_RC(ut_in_child(try_store, &t), SHOAL_ECORRUPT);
  }
}
END_TEST

START_TEST(damaged_short_files) {
  make_pristine();
  size_t lens[] = {0, 100, 4096, 8192, DMG_SIZE / 2};
  for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
    char dir2[300], p[1024];
    copy_store(dir2, sizeof dir2);
    ut_obj_path(p, sizeof p, dir2, ut_name, "data");
    ck_assert_int_eq(truncate(p, lens[i]), 0);
    struct dmg_try t = {.dir = dir2};
    int rv = ut_in_child(try_view, &t);
    ck_assert_msg(rv == SHOAL_ECORRUPT, "data truncated to %zu: view_open = %s",
                  lens[i], shoal_errname(rv));
    int rs = ut_in_child(try_store, &t);
    ck_assert_msg(rs == SHOAL_ECORRUPT,
                  "data truncated to %zu: store_open = %s", lens[i],
                  shoal_errname(rs));
  }
}
END_TEST

/* The readers object: a view must refuse a damaged one (it writes its slot
 * there). The writer may either refuse or rebuild it (it owns the object);
 * either way nobody crashes. */
START_TEST(damaged_readers_object) {
  make_pristine();
  char dir2[300];
  uint64_t m = 0x1234;
  copy_store(dir2, sizeof dir2);
  poke(dir2, "readers", offsetof(struct shm_readers_hdr, magic), &m, 8);
  struct dmg_try t = {.dir = dir2};
  int rv = ut_in_child(try_view, &t);
  ck_assert_msg(rv == SHOAL_ECORRUPT || rv == SHOAL_EVERSION,
                "readers magic: view_open = %s", shoal_errname(rv));
  int rs = ut_in_child(try_store, &t);
  ck_assert_msg(rs == 0 || rs == SHOAL_ECORRUPT, "readers magic: store_open = %s",
                shoal_errname(rs));

  copy_store(dir2, sizeof dir2);
  uint64_t id = 0xdeadbeef;
  poke(dir2, "readers", offsetof(struct shm_readers_hdr, store_id), &id, 8);
  t.dir = dir2;
  rv = ut_in_child(try_view, &t);
  ck_assert_msg(rv == SHOAL_ECORRUPT || rv == SHOAL_EVERSION,
                "readers store_id: view_open = %s", shoal_errname(rv));

  copy_store(dir2, sizeof dir2);
  uint32_t n = 1u << 30;
  poke(dir2, "readers", offsetof(struct shm_readers_hdr, nslots), &n, 4);
  t.dir = dir2;
  rv = ut_in_child(try_view, &t);
  ck_assert_msg(rv == SHOAL_ECORRUPT || rv == SHOAL_EVERSION,
                "readers nslots: view_open = %s", shoal_errname(rv));

  copy_store(dir2, sizeof dir2);
  char p[1024];
  ut_obj_path(p, sizeof p, dir2, ut_name, "readers");
  ck_assert_int_eq(truncate(p, 10), 0);
  t.dir = dir2;
  rv = ut_in_child(try_view, &t);
  ck_assert_msg(rv == SHOAL_ECORRUPT || rv == SHOAL_EVERSION,
                "readers truncated: view_open = %s", shoal_errname(rv));
}
END_TEST

/* The original store is untouched by all of the above. */
START_TEST(damage_leaves_original) {
  make_pristine();
  char dir2[300];
  copy_store(dir2, sizeof dir2);
  uint64_t m = 0;
  poke(dir2, "data", 0, &m, 8);
  CK_OK(ut_store_open(&ut_s, 0, 0, 0));
  CK_OK(ut_view_open(&ut_v, 0));
  ut_assert_gen(ut_v, "key123", 6, (123 % 7) * 100 + 1, 123);
  ut_assert_gen(ut_v, "big", 3, 100000, 1);
  ck_assert_uint_eq(ut_check(ut_v, 1), 0);
}
END_TEST

/* -------------------------------------------------------- ENOREADERS ---- */

START_TEST(enoreaders) {
  CK_OK(ut_store_open(&ut_s, SHM_MIN_SIZE, 2, SHM_CREATE | SHM_EXCL));
  ut_put_gen(ut_s, "k", 1, 10, 1);
  shm_view *v3 = NULL, *ns = NULL, *sv = NULL;
  CK_OK(ut_view_open(&ut_v, 0));
  CK_OK(ut_view_open(&ut_v2, 0));
  ck_assert_int_ge(shm_view_slot(ut_v), 0);
  ck_assert_int_ge(shm_view_slot(ut_v2), 0);
  ck_assert_int_ne(shm_view_slot(ut_v), shm_view_slot(ut_v2));
  CK_RC(ut_view_open(&v3, 0), SHOAL_ENOREADERS);
  CK_RC(shm_store_view(ut_s, &sv), SHOAL_ENOREADERS);
  CK_RC(shm_lease_claim(ut_s, getpid()), SHOAL_ENOREADERS);
  shm_stats st;
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.readers_claimed, 2);
  /* a slot-less view still opens, but cannot begin a section */
  CK_OK(ut_view_open(&ns, SHM_VIEW_NOSLOT));
  ck_assert_int_eq(shm_view_slot(ns), -1);
  CK_RC(shm_read_begin(ns), SHOAL_ENOREADERS);
  shm_val val;
  CK_RC(shm_get(ns, "k", 1, &val), SHOAL_ENOSECTION);
  shm_view_close(ns);
  /* closing a view frees its slot */
  shm_view_close(ut_v2);
  ut_v2 = NULL;
  CK_OK(ut_view_open(&v3, 0));
  ut_assert_gen(v3, "k", 1, 10, 1);
  CK_RC(ut_view_open(&ut_v2, 0), SHOAL_ENOREADERS);
  shm_view_close(v3);
  CK_OK(shm_store_view(ut_s, &sv));
  ut_assert_gen(sv, "k", 1, 10, 1);
  shm_view_close(sv);
}
END_TEST

/* -------------------------------------------------------- ENOSECTION ---- */

static int never_called(void *arg, const void *k, size_t kl, const shm_val *v) {
  (void)k;
  (void)kl;
  (void)v;
  ++*(int *)arg;
  return 0;
}

START_TEST(enosection) {
  ut_put_gen(ut_s, "k", 1, 10, 1);
  shm_val val;
  shm_key key = {"k", 1};
  int status = 99, calls = 0;
  ck_assert_uint_eq(shm_view_snapshot(ut_v), 0);
  CK_RC(shm_get(ut_v, "k", 1, &val), SHOAL_ENOSECTION);
  CK_RC(shm_get_many(ut_v, 1, &key, &val, &status), SHOAL_ENOSECTION);
  CK_RC(shm_scan(ut_v, NULL, 0, NULL, 0, never_called, &calls),
        SHOAL_ENOSECTION);
  ck_assert_int_eq(calls, 0);
  CK_OK(shm_read_begin(ut_v));
  ck_assert_uint_gt(shm_view_snapshot(ut_v), 0);
  CK_OK(shm_get(ut_v, "k", 1, &val));
  shm_read_end(ut_v);
  CK_RC(shm_get(ut_v, "k", 1, &val), SHOAL_ENOSECTION);
  ck_assert_uint_eq(shm_view_snapshot(ut_v), 0);
}
END_TEST

/* ------------------------------------------------------------ ETOOBIG --- */

START_TEST(etoobig) {
  static uint8_t key[SHM_KEY_MAX + 1];
  memset(key, 'x', sizeof key);
  /* A readable region of SHM_VALUE_MAX + 1 bytes that costs nothing: the
   * store must refuse on the length alone, but must not fault if it looks. */
  size_t big = (size_t)SHM_VALUE_MAX + 1;
  void *huge = mmap(NULL, big, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS |
                    MAP_NORESERVE, -1, 0);
  ck_assert_ptr_ne(huge, MAP_FAILED);
  shm_stats st0, st1;
  ut_stats(ut_s, &st0);
  uint64_t ver = 77;
  CK_RC(shm_put(ut_s, key, SHM_KEY_MAX + 1, "v", 1, 0, &ver), SHOAL_ETOOBIG);
  CK_RC(shm_put(ut_s, "k", 1, huge, big, 0, &ver), SHOAL_ETOOBIG);
  CK_RC(shm_put(ut_s, key, SIZE_MAX, "v", 1, 0, &ver), SHOAL_ETOOBIG);
  CK_RC(shm_put(ut_s, "k", 1, huge, SIZE_MAX, 0, &ver), SHOAL_ETOOBIG);
  CK_RC(shm_cas(ut_s, key, SHM_KEY_MAX + 1, 0, "v", 1, 0, &ver),
        SHOAL_ETOOBIG);
  CK_RC(shm_cas(ut_s, "k", 1, 0, huge, big, 0, &ver), SHOAL_ETOOBIG);
  CK_RC(shm_del(ut_s, key, SHM_KEY_MAX + 1, &ver), SHOAL_ETOOBIG);
  shm_op ops[3] = {
      {.kind = SHM_OP_PUT, .key = "a", .klen = 1, .val = "1", .vlen = 1},
      {.kind = SHM_OP_PUT, .key = "b", .klen = 1, .val = huge, .vlen = big},
      {.kind = SHM_OP_PUT, .key = "c", .klen = 1, .val = "1", .vlen = 1},
  };
  size_t failed = 99;
  uint64_t seq = 0;
  CK_RC(shm_batch(ut_s, ops, 3, &seq, &failed), SHOAL_ETOOBIG);
  ck_assert_uint_eq(failed, 1);
  ops[1].val = "1";
  ops[1].vlen = 1;
  ops[2].key = key;
  ops[2].klen = SHM_KEY_MAX + 1;
  failed = 99;
  CK_RC(shm_batch(ut_s, ops, 3, &seq, &failed), SHOAL_ETOOBIG);
  ck_assert_uint_eq(failed, 2);
  munmap(huge, big);
  /* nothing happened */
  ut_stats(ut_s, &st1);
  ck_assert_uint_eq(st1.commit_seq, st0.commit_seq);
  ck_assert_uint_eq(st1.keys, 0);
  /* readers refuse the key too */
  shm_val val;
  CK_OK(shm_read_begin(ut_v));
  CK_RC(shm_get(ut_v, key, SHM_KEY_MAX + 1, &val), SHOAL_ETOOBIG);
  CK_RC(shm_get(ut_v, "a", 1, &val), SHOAL_ENOTFOUND);
  shm_key keys[2] = {{key, SHM_KEY_MAX + 1}, {"a", 1}};
  int status[2] = {99, 99};
  shm_val out[2];
  ck_assert_int_eq(shm_get_many(ut_v, 2, keys, out, status), 0);
  CK_RC(status[0], SHOAL_ETOOBIG);
  CK_RC(status[1], SHOAL_ENOTFOUND);
  shm_read_end(ut_v);
  /* exactly the maximum key works */
  ut_put_gen(ut_s, key, SHM_KEY_MAX, 5, 1);
  ut_assert_gen(ut_v, key, SHM_KEY_MAX, 5, 1);
}
END_TEST

/* ------------------------------------------------ no leaked resources -- */

/* Mappings of shoal's objects (".data"/".readers" files of the test's
 * stores). Counting every line of /proc/self/maps would also count the
 * regions a sanitizer's allocator maps as malloc grows, which are no leak. */
static int count_store_maps(void) {
  FILE *f = fopen("/proc/self/maps", "r");
  ck_assert_ptr_nonnull(f);
  char line[4096];
  int n = 0;
  while (fgets(line, sizeof line, f))
    n += strstr(line, "/shoal.") != NULL;
  fclose(f);
  return n;
}

/* Descriptors open on shoal's objects (or on anything under the test's
 * store directory). Counting every descriptor would also count what the
 * test harness or a sanitizer runtime opens lazily, which is no leak of
 * ours. */
static int count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  ck_assert_ptr_nonnull(d);
  int n = 0;
  struct dirent *de;
  while ((de = readdir(d))) {
    char p[300], t[4096];
    if (de->d_name[0] == '.') continue;
    snprintf(p, sizeof p, "/proc/self/fd/%s", de->d_name);
    ssize_t l = readlink(p, t, sizeof t - 1);
    if (l <= 0) continue;
    t[l] = 0;
    n += strstr(t, "/shoal.") != NULL || strstr(t, ut_dir) != NULL;
  }
  closedir(d);
  return n;
}

/* Opening and closing handles - and failing to open them - leaks no file
 * descriptor and no mapping. */
START_TEST(no_leaked_fds_or_maps) {
  CK_OK(ut_store_open(&ut_s, SHM_MIN_SIZE, 4, SHM_CREATE | SHM_EXCL));
  ut_put_gen(ut_s, "k", 1, 10, 1);
  shm_store_close(ut_s, 1);
  ut_s = NULL;
  int fds0 = count_fds(), maps0 = count_store_maps();
  for (int i = 0; i < 50; i++) {
    shm_store *s = NULL, *s2 = NULL;
    shm_view *v = NULL, *v2 = NULL, *sv = NULL;
    CK_OK(ut_store_open(&s, 0, 0, 0));
    CK_RC(ut_store_open(&s2, 0, 0, 0), SHOAL_ELOCKED);
    CK_OK(ut_view_open(&v, 0));
    CK_OK(ut_view_open(&v2, SHM_VIEW_NOSLOT));
    CK_OK(shm_store_view(s, &sv));
    CK_OK(shm_read_begin(v));
    shm_val val;
    CK_OK(shm_get(v, "k", 1, &val));
    shm_read_end(v);
    shm_view_close(sv);
    shm_view_close(v2);
    shm_view_close(v);
    shm_store_close(s, i % 2);
    /* failures */
    shm_view *nv = NULL;
    CK_RC(shm_view_open(&nv, "nope", ut_dir, 0), -ENOENT);
    shm_store *ns = NULL;
    shm_config cfg = {.name = "nope", .dir = ut_dir};
    CK_RC(shm_store_open(&ns, &cfg, 0), -ENOENT);
  }
  /* slots exhausted */
  shm_view *vs[5] = {0};
  for (int i = 0; i < 4; i++) CK_OK(ut_view_open(&vs[i], 0));
  CK_RC(ut_view_open(&vs[4], 0), SHOAL_ENOREADERS);
  for (int i = 0; i < 4; i++) shm_view_close(vs[i]);
  ck_assert_int_eq(count_fds(), fds0);
  ck_assert_int_eq(count_store_maps(), maps0);
}
END_TEST

Suite *errors_suite(void) {
  Suite *s = suite_create("errors");
  TCase *tc = ut_tcase("table", 0, 30);
  tcase_add_test(tc, errname_every_code);
  tcase_add_test(tc, errname_errno_and_unknown);
  suite_add_tcase(s, tc);

  tc = ut_tcase("open", 0, 60);
  tcase_add_test(tc, bad_names_einval);
  tcase_add_test(tc, good_names_work);
  tcase_add_test(tc, bad_sizes_einval);
  tcase_add_test(tc, null_name_is_default);
  tcase_add_test(tc, open_missing_enoent);
  tcase_add_test(tc, open_excl_eexist_and_attach);
  tcase_add_test(tc, open_trunc_empties);
  tcase_add_test(tc, elocked_same_process);
  tcase_add_test(tc, elocked_in_child);
  tcase_add_test(tc, elocked_child_holds);
  tcase_add_test(tc, enoreaders);
  tcase_add_test(tc, no_leaked_fds_or_maps);
  suite_add_tcase(s, tc);

  tc = ut_tcase("damaged", 0, 120);
  tcase_add_test(tc, damaged_header_magic);
  tcase_add_test(tc, damaged_header_format);
  tcase_add_test(tc, damaged_header_fingerprint);
  tcase_add_test(tc, damaged_header_geometry);
  tcase_add_test(tc, damaged_index_off);
  tcase_add_test(tc, damaged_short_files);
  tcase_add_test(tc, damaged_readers_object);
  tcase_add_test(tc, damage_leaves_original);
  suite_add_tcase(s, tc);

  tc = ut_tcase("args", 1, 60);
  tcase_add_test(tc, enosection);
  tcase_add_test(tc, etoobig);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return ut_run(errors_suite()); }
