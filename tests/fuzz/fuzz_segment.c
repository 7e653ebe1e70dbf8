/*
 * fuzz_segment.c - libFuzzer harness: the reader side of a segment whose
 * bytes an attacker (or a bug, or a torn disk) chose.
 *
 * DESIGN section 3: every offset a reader follows is bounds-checked, so a
 * corrupt segment gives SHOAL_ECORRUPT, never a crash. Readers map the data
 * object read-only and trust nothing in it; this harness maps segments
 * built from fuzzer bytes and runs every reader entry point on them.
 *
 * Input: the first byte picks the mode, the rest is its payload.
 *   raw (bit 0 set): the payload is the first bytes of a data object of
 *     SHM_MIN_SIZE bytes, the rest of the file zero (seeds: the used
 *     prefix of a real segment, so the header checks pass);
 *   patch (bit 0 clear): a real store, made once per process with keys,
 *     overwrites, deletes, TTLs, a batch and a large value, is copied and
 *     the payload is read as patches: u32 LE offset (modulo the segment's
 *     backed size), u8 length, then that many bytes, repeated.
 * Both views are opened on the result, SHM_VIEW_UNPINNED (shoal-inspect's)
 * and a normal one with a reader slot, and each runs: shm_view_info,
 * shm_view_stats, shm_view_readers, shm_get and shm_history of every key
 * the real store holds (and a few absent ones), shm_get_many, full and
 * bounded shm_scan, shm_view_runs, and shm_check_ex with the flags bits 1-2
 * of the mode byte give (SHM_CHECK_QUIESCENT, SHM_CHECK_TOLERANT).
 * Every key and value a reader returns is touched at both ends, so one
 * that points outside the mapping faults here at once.
 *
 * The files are restored between inputs (raw: zeroed; patch: the patched
 * ranges written back from the pristine copy), so inputs are independent.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz-common.h"
#include "shoal/shm.h"

#define SEG_SIZE SHM_MIN_SIZE
#define MAX_SCAN 200000u /* scan callbacks per input: a bound, not a finding */

/* tmpfs, as in production (/dev/shm): a disk file system makes every
 * store creation and patch a page-cache round trip, slow enough under
 * parallel fuzzing to trip libFuzzer's timeout. */
static char root[128];
static char dir_real[512], dir_raw[512], dir_mut[512];
static uint8_t *pristine;  /* the real store's data object */
static uint64_t used;      /* its backed size: patches land below it */
static int fd_raw = -1, fd_mut = -1;

/* The keys the real store was built with, plus absent ones. */
#define NKEYS 16
static char keys[NKEYS][64];
static size_t klens[NKEYS];
static size_t nkeys;

static volatile uint8_t sink;

/* Read the first and the last byte: the mapping is one contiguous range,
 * so a span that leaves it faults on its last byte. (Reading every byte
 * would cost more than the readers under test.) */
static void touch(const void *p, size_t n) {
  const volatile uint8_t *u = p;
  if (n) sink ^= u[0] ^ u[n - 1];
}

static void addkey(const char *k) {
  FUZZ_CHECK(nkeys < NKEYS);
  snprintf(keys[nkeys], sizeof keys[nkeys], "%s", k);
  klens[nkeys] = strlen(k);
  nkeys++;
}

static void put(shm_store *s, const char *k, const void *v, size_t vlen,
                uint64_t exp) {
  uint64_t ver;
  FUZZ_CHECK(shm_put(s, k, strlen(k), v, vlen, exp, &ver) == 0);
}

static void copy_file(const char *from, const char *to, size_t size) {
  int in = open(from, O_RDONLY | O_CLOEXEC);
  FUZZ_CHECK(in >= 0);
  int out = open(to, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  FUZZ_CHECK(out >= 0);
  FUZZ_CHECK(ftruncate(out, (off_t)size) == 0);
  char buf[65536];
  ssize_t n;
  off_t off = 0;
  while ((n = read(in, buf, sizeof buf)) > 0) {
    FUZZ_CHECK(pwrite(out, buf, (size_t)n, off) == n);
    off += n;
  }
  close(in);
  close(out);
}

static void build_real(void) {
  shm_config cfg = {.name = FUZZ_STORE, .dir = dir_real, .size = SEG_SIZE,
                    .reader_slots = 8};
  shm_store *s;
  FUZZ_CHECK(shm_store_open(&s, &cfg, SHM_CREATE | SHM_TRUNC) == 0);
  /* A reader inside a section keeps the overwritten versions retained, so
   * the segment holds value chains, not only current records. */
  shm_view *pin;
  FUZZ_CHECK(shm_store_view(s, &pin) == 0);
  char k[32], v[256];
  for (int i = 0; i < 8; i++) {
    snprintf(k, sizeof k, "key:%02d", i);
    memset(v, 'a' + i, sizeof v);
    put(s, k, v, (size_t)(i * 29 % 200), 0);
    addkey(k);
  }
  FUZZ_CHECK(shm_read_begin(pin) == 0);
  put(s, "key:01", "second", 6, 0);
  put(s, "key:01", "third", 5, 0);
  uint64_t ver;
  FUZZ_CHECK(shm_del(s, "key:02", 6, &ver) == 0);
  put(s, "ttl:past", "gone", 4, 1);
  put(s, "ttl:future", "later", 5, shm_now_ms() + 86400000ull);
  addkey("ttl:past");
  addkey("ttl:future");
  put(s, "", "empty key", 9, 0);
  addkey("");
  /* a value above the slab classes: a page extent */
  size_t big = 100000;
  char *bv = malloc(big);
  FUZZ_CHECK(bv != NULL);
  memset(bv, 'B', big);
  put(s, "big", bv, big, 0);
  free(bv);
  addkey("big");
  shm_op ops[3] = {
      {.kind = SHM_OP_PUT, .key = "batch:a", .klen = 7, .val = "1", .vlen = 1},
      {.kind = SHM_OP_PUT, .key = "batch:b", .klen = 7, .val = "22", .vlen = 2},
      {.kind = SHM_OP_DEL_ANY, .key = "key:07", .klen = 6},
  };
  size_t failed;
  FUZZ_CHECK(shm_batch(s, ops, 3, &ver, &failed) == 0);
  addkey("batch:a");
  addkey("absent");
  shm_read_end(pin);
  shm_view_close(pin);
  shm_store_close(s, 1);
}

static int read_whole(const char *path, uint8_t *buf, size_t size) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  size_t off = 0;
  while (off < size) {
    ssize_t n = pread(fd, buf + off, size - off, (off_t)off);
    if (n <= 0) break;
    off += (size_t)n;
  }
  close(fd);
  return off == size ? 0 : -1;
}

static void cleanup(void) {
  const char *dirs[3] = {dir_real, dir_raw, dir_mut};
  for (int i = 0; i < 3; i++) {
    shm_store_unlink(FUZZ_STORE, dirs[i]);
    rmdir(dirs[i]);
  }
  rmdir(root);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  fuzz_make_dir(root, sizeof root, "segment");
  snprintf(dir_real, sizeof dir_real, "%s/real", root);
  snprintf(dir_raw, sizeof dir_raw, "%s/raw", root);
  snprintf(dir_mut, sizeof dir_mut, "%s/mut", root);
  FUZZ_CHECK(mkdir(dir_real, 0700) == 0 && mkdir(dir_raw, 0700) == 0 &&
             mkdir(dir_mut, 0700) == 0);
  atexit(cleanup);
  build_real();

  char data[600], readers[600], to[600];
  FUZZ_CHECK(shm_object_path(data, sizeof data, FUZZ_STORE, dir_real,
                             "data") == 0);
  FUZZ_CHECK(shm_object_path(readers, sizeof readers, FUZZ_STORE, dir_real,
                             "readers") == 0);
  pristine = malloc(SEG_SIZE);
  FUZZ_CHECK(pristine != NULL);
  FUZZ_CHECK(read_whole(data, pristine, SEG_SIZE) == 0);
  struct stat st;
  FUZZ_CHECK(stat(readers, &st) == 0);

  /* the backed prefix: where a real segment's bytes are */
  shm_view *v;
  FUZZ_CHECK(shm_view_open(&v, FUZZ_STORE, dir_real, SHM_VIEW_UNPINNED) == 0);
  shm_info info;
  shm_view_info(v, &info);
  used = info.backed_end;
  shm_view_close(v);
  FUZZ_CHECK(used > 0 && used <= SEG_SIZE);

  const char *dirs[2] = {dir_raw, dir_mut};
  for (int i = 0; i < 2; i++) {
    FUZZ_CHECK(shm_object_path(to, sizeof to, FUZZ_STORE, dirs[i],
                               "readers") == 0);
    copy_file(readers, to, (size_t)st.st_size);
    FUZZ_CHECK(shm_object_path(to, sizeof to, FUZZ_STORE, dirs[i], "data") ==
               0);
    int fd = open(to, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    FUZZ_CHECK(fd >= 0);
    FUZZ_CHECK(ftruncate(fd, SEG_SIZE) == 0);
    if (i == 1) FUZZ_CHECK(pwrite(fd, pristine, SEG_SIZE, 0) == SEG_SIZE);
    if (i == 0) fd_raw = fd;
    else fd_mut = fd;
  }
  /* SHOAL_FUZZ_SEED_DIR: write the seeds (raw prefix, empty patch) and
   * exit; gen_seeds runs this. */
  const char *sd = getenv("SHOAL_FUZZ_SEED_DIR");
  if (sd) {
    char path[600];
    snprintf(path, sizeof path, "%s/raw-real-prefix", sd);
    FILE *f = fopen(path, "wb");
    FUZZ_CHECK(f != NULL);
    fputc(1, f);
    /* trailing zeros are the file's anyway; the first 256 KiB hold the
     * header, the page table, the index and the first slabs (the patch
     * mode reaches the rest): a bigger seed only slows mutation down */
    uint64_t n = used < (256u << 10) ? used : (256u << 10);
    while (n && !pristine[n - 1]) n--;
    FUZZ_CHECK(fwrite(pristine, 1, n, f) == n);
    fclose(f);
    snprintf(path, sizeof path, "%s/patch-none", sd);
    f = fopen(path, "wb");
    FUZZ_CHECK(f != NULL);
    fputc(0, f);
    fclose(f);
    exit(0);
  }
  return 0;
}

struct scan_state {
  unsigned n;
};

static int scan_cb(void *arg, const void *key, size_t klen, const shm_val *v) {
  struct scan_state *s = arg;
  touch(key, klen);
  touch(v->data, v->len);
  return ++s->n >= MAX_SCAN;
}

static int runs_cb(void *arg, const shm_run_info *r) {
  unsigned *n = arg;
  (void)r;
  return ++*n >= MAX_SCAN;
}

static void problem(void *arg, const char *p) {
  (void)arg;
  touch(p, strlen(p));
}

/* shm_check_ex's flags for this input (bits 1-2 of the mode byte): one
 * full check per view keeps an input fast; the fuzzer picks the flags. */
static unsigned check_flags;

static void exercise(shm_view *v) {
  shm_info info;
  shm_view_info(v, &info);
  shm_stats st;
  shm_view_stats(v, &st);
  shm_reader_info ri[8];
  (void)shm_view_readers(v, ri, 8, 1);
  (void)shm_view_writer_alive(v);
  unsigned nr = 0;
  (void)shm_view_runs(v, runs_cb, &nr);

  if (shm_read_begin(v) != 0) return;
  (void)shm_view_snapshot(v);
  shm_key ks[NKEYS];
  shm_val vals[NKEYS];
  int status[NKEYS];
  for (size_t i = 0; i < nkeys; i++) {
    shm_val val;
    if (shm_get(v, keys[i], klens[i], &val) == 0) touch(val.data, val.len);
    shm_version hist[8];
    size_t n = 0;
    if (shm_history(v, keys[i], klens[i], hist, 8, &n) == 0) {
      for (size_t j = 0; j < n && j < 8; j++) touch(hist[j].data, hist[j].len);
    }
    ks[i] = (shm_key){keys[i], klens[i]};
  }
  if (shm_get_many(v, nkeys, ks, vals, status) >= 0) {
    for (size_t i = 0; i < nkeys; i++)
      if (status[i] == 0) touch(vals[i].data, vals[i].len);
  }
  struct scan_state ss = {0};
  (void)shm_scan(v, NULL, 0, NULL, 0, scan_cb, &ss);
  ss.n = 0;
  (void)shm_scan(v, "key:01", 6, "key:05", 6, scan_cb, &ss);
  ss.n = 0;
  (void)shm_scan(v, "z", 1, NULL, 0, scan_cb, &ss);
  (void)shm_check_ex(v, check_flags, problem, NULL);
  (void)shm_read_validate(v);
  shm_read_end(v);
}

static void run_views(const char *dir) {
  shm_view *v;
  if (shm_view_open(&v, FUZZ_STORE, dir, SHM_VIEW_UNPINNED) == 0) {
    exercise(v);
    shm_view_close(v);
  }
  if (shm_view_open(&v, FUZZ_STORE, dir, 0) == 0) {
    exercise(v);
    shm_view_close(v);
  }
}

static uint32_t le32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  unsigned mode = data[0];
  check_flags = (mode >> 1) & (SHM_CHECK_QUIESCENT | SHM_CHECK_TOLERANT);
  data++;
  size--;
  if (mode & 1) {
    if (size > SEG_SIZE) size = SEG_SIZE;
    FUZZ_CHECK(pwrite(fd_raw, data, size, 0) == (ssize_t)size);
    run_views(dir_raw);
    static const uint8_t zero[65536];
    for (size_t off = 0; off < size; off += sizeof zero) {
      size_t n = size - off < sizeof zero ? size - off : sizeof zero;
      FUZZ_CHECK(pwrite(fd_raw, zero, n, (off_t)off) == (ssize_t)n);
    }
    return 0;
  }
  /* patch mode: remember what was touched, to put it back */
  enum { MAXP = 256 };
  uint64_t poff[MAXP];
  size_t plen[MAXP], np = 0;
  size_t i = 0;
  while (np < MAXP && size - i >= 5) {
    uint64_t off = le32(data + i) % used;
    size_t n = data[i + 4];
    i += 5;
    if (n > size - i) n = size - i;
    if (n > used - off) n = (size_t)(used - off);
    FUZZ_CHECK(pwrite(fd_mut, data + i, n, (off_t)off) == (ssize_t)n);
    poff[np] = off;
    plen[np++] = n;
    i += n;
  }
  run_views(dir_mut);
  for (size_t p = 0; p < np; p++)
    FUZZ_CHECK(pwrite(fd_mut, pristine + poff[p], plen[p], (off_t)poff[p]) ==
               (ssize_t)plen[p]);
  return 0;
}
