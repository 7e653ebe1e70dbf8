/*
 * test_enospc.c - running out of space (issue 2, Must-show 3).
 *
 * A full tmpfs must be an SHOAL_ENOSPC reply, never a SIGBUS: the store
 * backs memory with fallocate before handing it out. Each tmpfs test mounts
 * its own 8 MiB tmpfs inside a private mount namespace (unshare(CLONE_NEWNS)
 * in check's forked test process, or a user namespace when not root), so no
 * mount outlives the test. Where neither is possible the tmpfs tests print
 * SKIP and pass. The store-size tests need no mount.
 *
 * After ENOSPC: every acknowledged key is still there with the right bytes,
 * reads keep working (in this and another process), deletes succeed, and
 * once keys are deleted and reclaimed, puts succeed again.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "unit.h"

#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store-internal.h" /* SHM_DELETE_RESERVE: the allocator's rule */

static char mnt[400]; /* the tmpfs, or "" when skipped */

static int write_file(const char *path, const char *s) {
  int fd = open(path, O_WRONLY);
  if (fd < 0) return -errno;
  ssize_t n = write(fd, s, strlen(s));
  int e = n == (ssize_t)strlen(s) ? 0 : -errno;
  close(fd);
  return e;
}

/* Mount an @size tmpfs at ut_dir/mnt in a private mount namespace. Returns
 * 0, or 1 with a SKIP message printed. */
static int private_tmpfs(const char *size) {
  snprintf(mnt, sizeof mnt, "%s/mnt", ut_dir);
  ck_assert_int_eq(mkdir(mnt, 0755), 0);
  if (unshare(CLONE_NEWNS) != 0) {
    int e = errno;
    uid_t uid = getuid();
    gid_t gid = getgid();
    if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) {
      printf("SKIP: %s: cannot make a mount namespace (unshare: %s; user "
             "namespace: %s)\n", tcase_name(), strerror(e), strerror(errno));
      fflush(stdout);
      mnt[0] = 0;
      return 1;
    }
    char map[64];
    (void)write_file("/proc/self/setgroups", "deny");
    snprintf(map, sizeof map, "0 %u 1", (unsigned)uid);
    (void)write_file("/proc/self/uid_map", map);
    snprintf(map, sizeof map, "0 %u 1", (unsigned)gid);
    (void)write_file("/proc/self/gid_map", map);
  }
  /* do not propagate our mount back to the parent namespace */
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
    printf("SKIP: %s: cannot make / private: %s\n", tcase_name(),
           strerror(errno));
    fflush(stdout);
    mnt[0] = 0;
    return 1;
  }
  char opts[64];
  snprintf(opts, sizeof opts, "size=%s,mode=0755", size);
  if (mount("tmpfs", mnt, "tmpfs", 0, opts) != 0) {
    printf("SKIP: %s: cannot mount a tmpfs: %s\n", tcase_name(),
           strerror(errno));
    fflush(stdout);
    mnt[0] = 0;
    return 1;
  }
  return 0;
}

/* Close the handles and drop the mount before the generic teardown
 * removes the directory. */
static void tmpfs_teardown(void) {
  if (ut_v2) shm_view_close(ut_v2);
  if (ut_v) shm_view_close(ut_v);
  if (ut_s) shm_store_close(ut_s, 1);
  ut_v2 = ut_v = NULL;
  ut_s = NULL;
  if (mnt[0]) {
    int rc = shm_store_unlink(ut_name, mnt);
    (void)rc;
    umount2(mnt, MNT_DETACH);
    mnt[0] = 0;
  }
  ut_teardown();
}

static int open_in(const char *dir, uint64_t size, unsigned flags) {
  shm_config cfg = {.name = ut_name, .dir = dir, .size = size};
  return shm_store_open(&ut_s, &cfg, flags);
}

static int put_key(int i, size_t vlen, uint64_t gen) {
  char k[16];
  int kl = snprintf(k, sizeof k, "f%06d", i);
  static uint8_t buf[1 << 20];
  ck_assert_uint_le(vlen, sizeof buf);
  ut_fill(buf, vlen, k, kl, gen);
  return shm_put(ut_s, k, kl, buf, vlen, 0, NULL);
}

/* Put keys [from, ...) of @vlen until ENOSPC; returns the count that
 * succeeded. Any code but ENOSPC fails the test. */
static int fill(int from, size_t vlen, uint64_t gen, int limit) {
  int i = from;
  for (; i < from + limit; i++) {
    int rc = put_key(i, vlen, gen);
    if (rc == 0) continue;
    ck_assert_msg(rc == SHOAL_ENOSPC, "put %d (%zu bytes) = %s, expected "
                  "ENOSPC; lasterr: %s", i, vlen, shoal_errname(rc),
                  shm_store_lasterr(ut_s));
    return i - from;
  }
  ck_abort_msg("no ENOSPC after %d puts of %zu bytes", limit, vlen);
  return -1;
}

/* ------------------------------------------------ was ENOSPC honest? -- */

/* Whether a re-put of large values after deletes may fail depends on the
 * allocator's history, not only on the space freed: a re-inserted key's
 * entry gets a new random skiplist tower, and an entry size class with no
 * free block carves a whole slab (SHM_SLAB_PAGES) out of a free run, which
 * may be one a large value needed. So the tests do not guess how many
 * re-puts fail; they check that every ENOSPC was honest: at that moment
 * no run of pages the value needs was left for it. */
struct room {
  uint64_t limit; /* where the pages above heap_top end for the allocator */
  uint64_t largest;
};

static int room_cb(void *arg, const shm_run_info *r) {
  struct room *m = arg;
  uint64_t pages = 0;
  if (r->kind == SHM_RUN_FREE) {
    pages = r->pages;
  } else if (r->kind == SHM_RUN_UNCARVED &&
             m->limit > r->offset + SHM_DELETE_RESERVE) {
    /* alloc.c:pages_alloc leaves SHM_DELETE_RESERVE above heap_top */
    pages = (m->limit - r->offset - SHM_DELETE_RESERVE) / SHM_PAGE;
  }
  if (pages > m->largest) m->largest = pages;
  return 0;
}

/* The largest run of pages a put could still be given: a free run, or the
 * pages above heap_top up to the store's size (@backed_only: up to what is
 * backed, when the tmpfs under the store is full). */
static uint64_t room_pages(int backed_only) {
  shm_info info;
  shm_view_info(ut_v, &info);
  struct room m = {backed_only ? info.backed_end : info.size, 0};
  CK_OK(shm_view_runs(ut_v, room_cb, &m));
  return m.largest;
}

/* The pages of a value of @vlen bytes (a record in a page extent). */
static uint64_t value_pages(size_t vlen) {
  return (shm__rec_bytes(0, vlen) + SHM_PAGE - 1) / SHM_PAGE;
}

/* Put key @i again with @vlen bytes of generation @gen: 0 (stored), or
 * ENOSPC when no run of the pages it needs is left (else the test fails).
 * Any other code fails the test. */
static int reput_or_honest_enospc(int i, size_t vlen, uint64_t gen,
                                  int backed_only) {
  int rc = put_key(i, vlen, gen);
  if (rc == 0) return 0;
  uint64_t room = room_pages(backed_only), need = value_pages(vlen);
  ck_assert_msg(rc == SHOAL_ENOSPC && room < need,
                "re-put %d (%zu bytes, %" PRIu64 " pages): %s (%s), with a "
                "run of %" PRIu64 " pages free",
                i, vlen, need, shoal_errname(rc), shm_store_lasterr(ut_s),
                room);
  return rc;
}

/* Keys [from, to) step @step: present with gen / vlen, or absent. */
static void verify_range(shm_view *v, int from, int to, int step, size_t vlen,
                         uint64_t gen, int present) {
  CK_OK(shm_read_begin(v));
  for (int i = from; i < to; i += step) {
    char k[16];
    int kl = snprintf(k, sizeof k, "f%06d", i);
    shm_val val;
    int rc = shm_get(v, k, kl, &val);
    if (!present) {
      ck_assert_msg(rc == SHOAL_ENOTFOUND, "%s: %s, expected ENOTFOUND", k,
                    shoal_errname(rc));
      continue;
    }
    ck_assert_msg(rc == 0, "acknowledged key %s lost: %s", k, shoal_errname(rc));
    ck_assert_uint_eq(val.len, vlen);
    ck_assert_msg(ut_check_bytes(val.data, val.len, k, kl, gen),
                  "acknowledged key %s has wrong bytes", k);
  }
  shm_read_end(v);
}

/* Put keys [from, to) step @step back (generation 3, @vlen bytes) after
 * they were deleted: each is stored, or refused honestly and then still
 * deleted; more than half must come back. */
static void reput_range(int from, int to, int step, size_t vlen,
                        int backed_only) {
  int back = 0, tried = 0;
  for (int i = from; i < to; i += step) {
    tried++;
    int ok = reput_or_honest_enospc(i, vlen, 3, backed_only) == 0;
    back += ok;
    verify_range(ut_v, i, i + 1, 1, vlen, 3, ok); /* refused: still gone */
  }
  printf("%s: %d of %d re-puts came back\n", tcase_name(), back, tried);
  fflush(stdout);
  ck_assert_msg(back * 2 > tried, "only %d of %d re-puts came back", back,
                tried);
}

struct range {
  const char *dir;
  int n;
  size_t vlen;
};

static int child_reads(void *arg) {
  struct range *r = arg;
  shm_view *v = NULL;
  int rc = shm_view_open(&v, ut_name, r->dir, 0);
  if (rc) return rc;
  if (shm_read_begin(v)) return -1;
  for (int i = 0; i < r->n; i++) {
    char k[16];
    int kl = snprintf(k, sizeof k, "f%06d", i);
    shm_val val;
    rc = shm_get(v, k, kl, &val);
    if (rc) return rc;
    if (val.len != r->vlen || !ut_check_bytes(val.data, val.len, k, kl, 1))
      return -2;
  }
  shm_read_end(v);
  shm_view_close(v);
  return 0;
}

/* The whole story on a full tmpfs. */
static void full_store_story(const char *dir, int n, size_t vlen) {
  /* reads keep working: this process (the view opened before) ... */
  verify_range(ut_v, 0, n, 1, vlen, 1, 1);
  /* ... a new view, and another process */
  CK_OK(shm_view_open(&ut_v2, ut_name, dir, 0));
  verify_range(ut_v2, 0, n, 1, vlen, 1, 1);
  struct range r = {dir, n, vlen};
  CK_OK(ut_in_child(child_reads, &r));
  shm_stats st;
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.keys, (uint64_t)n);
  ck_assert_uint_eq(ut_check(ut_v, 1), 0);
  /* still full: more puts, a big one, a batch and a cas all refuse cleanly */
  CK_RC(put_key(n, vlen, 1), SHOAL_ENOSPC);
  CK_RC(put_key(n + 1, 200000, 1), SHOAL_ENOSPC);
  uint64_t seq0 = st.commit_seq;
  shm_op ops[8];
  char keys[8][16];
  static uint8_t vb[2048];
  for (int i = 0; i < 8; i++) {
    int kl = snprintf(keys[i], 16, "batch%d", i);
    ops[i] = (shm_op){.kind = SHM_OP_PUT, .key = keys[i], .klen = kl,
                      .val = vb, .vlen = sizeof vb};
  }
  int rc = shm_batch(ut_s, ops, 8, NULL, NULL);
  CK_RC(rc, SHOAL_ENOSPC);
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.commit_seq, seq0);
  shm_val val;
  CK_OK(shm_read_begin(ut_v));
  CK_RC(shm_get(ut_v, "batch0", 6, &val), SHOAL_ENOTFOUND);
  shm_read_end(ut_v);
  verify_range(ut_v, 0, n, 1, vlen, 1, 1);
  /* deletes succeed even now */
  for (int i = 0; i < n; i += 2) {
    char k[16];
    int kl = snprintf(k, sizeof k, "f%06d", i);
    rc = shm_del(ut_s, k, kl, NULL);
    ck_assert_msg(rc == 0, "delete %s on a full store: %s (%s)", k,
                  shoal_errname(rc), shm_store_lasterr(ut_s));
  }
  for (int i = 0; i < 8; i++) (void)shm_reclaim(ut_s);
  verify_range(ut_v, 0, n, 2, vlen, 1, 0);
  verify_range(ut_v, 1, n, 2, vlen, 1, 1);
  /* the room comes back: new keys fit again */
  int again = n / 4;
  for (int i = 0; i < again; i++) {
    rc = put_key(n + 100 + i, vlen, 2);
    ck_assert_msg(rc == 0, "put %d of %d after freeing half the keys: %s (%s)",
                  i, again, shoal_errname(rc), shm_store_lasterr(ut_s));
  }
  verify_range(ut_v, n + 100, n + 100 + again, 1, vlen, 2, 1);
  verify_range(ut_v, 1, n, 2, vlen, 1, 1);
  ck_assert_uint_eq(ut_check(ut_v, 1), 0);
}

START_TEST(tmpfs_full) {
  if (private_tmpfs("8m")) return;
  CK_OK(open_in(mnt, 64ull << 20, SHM_CREATE | SHM_EXCL));
  CK_OK(shm_view_open(&ut_v, ut_name, mnt, 0));
  int n = fill(0, 1024, 1, 100000);
  ck_assert_int_gt(n, 1000);
  ck_assert_str_ne(shm_store_lasterr(ut_s), "no error");
  printf("%s: %d x 1 KiB acknowledged before ENOSPC; lasterr: %s\n",
         tcase_name(), n, shm_store_lasterr(ut_s));
  fflush(stdout);
  shm_stats st;
  ut_stats(ut_s, &st);
  ck_assert_uint_le(st.backed, 8ull << 20);
  full_store_story(mnt, n, 1024);
}
END_TEST

/* Large values (page extents) on a full tmpfs. */
START_TEST(tmpfs_full_large_values) {
  if (private_tmpfs("8m")) return;
  CK_OK(open_in(mnt, 64ull << 20, SHM_CREATE | SHM_EXCL));
  CK_OK(shm_view_open(&ut_v, ut_name, mnt, 0));
  int n = fill(0, 300000, 1, 1000);
  ck_assert_int_gt(n, 5);
  verify_range(ut_v, 0, n, 1, 300000, 1, 1);
  /* smaller values may still fit in what is backed */
  int m = fill(n, 1000, 1, 100000);
  verify_range(ut_v, n, n + m, 1, 1000, 1, 1);
  verify_range(ut_v, 0, n, 1, 300000, 1, 1);
  for (int i = 0; i < n; i++) {
    char k[16];
    int kl = snprintf(k, sizeof k, "f%06d", i);
    CK_OK(shm_del(ut_s, k, kl, NULL));
  }
  for (int i = 0; i < 8; i++) (void)shm_reclaim(ut_s);
  /* The freed extents come back: each re-put is stored, or refused only
   * when no run it needs is left (slabs carved for re-inserted entries
   * take pages too), and most come back. */
  reput_range(0, n, 1, 300000, 1);
  verify_range(ut_v, n, n + m, 1, 1000, 1, 1);
  ck_assert_uint_eq(ut_check(ut_v, 1), 0);
}
END_TEST

/* No room even for the metadata: creation fails cleanly and leaves nothing
 * half-made behind. */
START_TEST(tmpfs_full_at_create) {
  if (private_tmpfs("8m")) return;
  char filler[1024];
  snprintf(filler, sizeof filler, "%s/filler", mnt);
  int fd = open(filler, O_WRONLY | O_CREAT, 0600);
  ck_assert_int_ge(fd, 0);
  static char buf[65536];
  memset(buf, 1, sizeof buf);
  while (write(fd, buf, sizeof buf) > 0) {
  }
  while (write(fd, buf, 512) > 0) {
  }
  close(fd);
  int rc = open_in(mnt, 64ull << 20, SHM_CREATE | SHM_EXCL);
  ck_assert_msg(rc == SHOAL_ENOSPC, "create on a full tmpfs = %s",
                shoal_errname(rc));
  ck_assert_ptr_null(ut_s);
  ck_assert_int_eq(unlink(filler), 0);
  rc = open_in(mnt, 64ull << 20, SHM_CREATE | SHM_EXCL);
  ck_assert_msg(rc == 0, "create after freeing the tmpfs = %s (a failed "
                "create left a half-made store?)", shoal_errname(rc));
  CK_OK(shm_view_open(&ut_v, ut_name, mnt, 0));
  CK_OK(put_key(0, 1024, 1));
  verify_range(ut_v, 0, 1, 1, 1024, 1, 1);
}
END_TEST

/* Someone else fills the tmpfs under a running store. */
START_TEST(tmpfs_filled_by_another) {
  if (private_tmpfs("16m")) return;
  CK_OK(open_in(mnt, 64ull << 20, SHM_CREATE | SHM_EXCL));
  CK_OK(shm_view_open(&ut_v, ut_name, mnt, 0));
  for (int i = 0; i < 500; i++) CK_OK(put_key(i, 1024, 1));
  char filler[1024];
  snprintf(filler, sizeof filler, "%s/filler", mnt);
  int fd = open(filler, O_WRONLY | O_CREAT, 0600);
  ck_assert_int_ge(fd, 0);
  static char buf[65536];
  memset(buf, 1, sizeof buf);
  while (write(fd, buf, sizeof buf) > 0) {
  }
  close(fd);
  int m = fill(500, 1024, 1, 100000);
  int n = 500 + m;
  verify_range(ut_v, 0, n, 1, 1024, 1, 1);
  /* the other party frees its file: the store grows again */
  ck_assert_int_eq(unlink(filler), 0);
  for (int i = n; i < n + 3000; i++) {
    int rc = put_key(i, 1024, 1);
    ck_assert_msg(rc == 0, "put %d after the tmpfs was freed: %s (%s)", i,
                  shoal_errname(rc), shm_store_lasterr(ut_s));
  }
  verify_range(ut_v, 0, n + 3000, 1, 1024, 1, 1);
  ck_assert_uint_eq(ut_check(ut_v, 1), 0);
}
END_TEST

/* ------------------------------------------ the store's own size fills -- */

#define SMALL_SIZE (8ull << 20)

START_TEST(store_size_full_small_values) {
  CK_OK(open_in(ut_dir, SMALL_SIZE, SHM_CREATE | SHM_EXCL));
  CK_OK(ut_view_open(&ut_v, 0));
  int n = fill(0, 1024, 1, 100000);
  ck_assert_int_gt(n, 1000);
  full_store_story(ut_dir, n, 1024);
}
END_TEST

START_TEST(store_size_full_large_values) {
  CK_OK(open_in(ut_dir, SMALL_SIZE, SHM_CREATE | SHM_EXCL));
  CK_OK(ut_view_open(&ut_v, 0));
  /* bigger than the whole store, but under SHM_VALUE_MAX: ENOSPC */
  static uint8_t *huge;
  huge = calloc(1, 16u << 20);
  ck_assert_ptr_nonnull(huge);
  CK_RC(shm_put(ut_s, "huge", 4, huge, 16u << 20, 0, NULL), SHOAL_ENOSPC);
  free(huge);
  int n = fill(0, 100000, 1, 1000);
  ck_assert_int_gt(n, 20);
  verify_range(ut_v, 0, n, 1, 100000, 1, 1);
  ck_assert_uint_eq(ut_check(ut_v, 1), 0);
  /* overwrite one in place is refused too or works; never loses it */
  int rc = put_key(0, 100000, 2);
  ck_assert(rc == 0 || rc == SHOAL_ENOSPC);
  uint64_t gen0 = rc == 0 ? 2 : 1;
  verify_range(ut_v, 0, 1, 1, 100000, gen0, 1);
  verify_range(ut_v, 1, n, 1, 100000, 1, 1);
  for (int i = 1; i < n; i += 2) {
    char k[16];
    int kl = snprintf(k, sizeof k, "f%06d", i);
    CK_OK(shm_del(ut_s, k, kl, NULL));
  }
  for (int i = 0; i < 8; i++) (void)shm_reclaim(ut_s);
  /* As in tmpfs_full_large_values: each re-put is stored or refused
   * honestly, and most come back. A refused one changes nothing: the key
   * stays deleted. */
  reput_range(1, n, 2, 100000, 0);
  verify_range(ut_v, 0, 1, 1, 100000, gen0, 1); /* the even keys stay */
  verify_range(ut_v, 2, n, 2, 100000, 1, 1);
  ck_assert_uint_eq(ut_check(ut_v, 1), 0);
}
END_TEST

/* Tiny keys until the index itself cannot grow. */
START_TEST(store_size_full_index) {
  CK_OK(open_in(ut_dir, SMALL_SIZE, SHM_CREATE | SHM_EXCL));
  CK_OK(ut_view_open(&ut_v, 0));
  int n = fill(0, 0, 1, 1000000);
  ck_assert_int_gt(n, 10000);
  verify_range(ut_v, 0, n, 1, 0, 1, 1);
  shm_stats st;
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.keys, (uint64_t)n);
  ck_assert_uint_eq(ut_check(ut_v, 1), 0);
  /* a cas on a full store: refused or done, never half */
  char k[16];
  int kl = snprintf(k, sizeof k, "f%06d", 5);
  shm_val val;
  CK_OK(shm_read_begin(ut_v));
  CK_OK(shm_get(ut_v, k, kl, &val));
  uint64_t v0 = val.version;
  shm_read_end(ut_v);
  static uint8_t big[50000];
  int rc = shm_cas(ut_s, k, kl, v0, big, sizeof big, 0, NULL);
  ck_assert(rc == 0 || rc == SHOAL_ENOSPC);
  if (rc == SHOAL_ENOSPC) verify_range(ut_v, 5, 6, 1, 0, 1, 1);
}
END_TEST

Suite *enospc_suite(void) {
  Suite *s = suite_create("enospc");
  TCase *tc = tcase_create("tmpfs");
  tcase_add_unchecked_fixture(tc, ut_base_setup, ut_base_teardown);
  tcase_add_checked_fixture(tc, ut_setup, tmpfs_teardown);
  tcase_set_timeout(tc, 180);
  tcase_add_test(tc, tmpfs_full);
  tcase_add_test(tc, tmpfs_full_large_values);
  tcase_add_test(tc, tmpfs_full_at_create);
  tcase_add_test(tc, tmpfs_filled_by_another);
  suite_add_tcase(s, tc);

  tc = ut_tcase("size", 0, 180);
  tcase_add_test(tc, store_size_full_small_values);
  tcase_add_test(tc, store_size_full_large_values);
  tcase_add_test(tc, store_size_full_index);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return ut_run(enospc_suite()); }
