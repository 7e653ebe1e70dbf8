/*
 * segment.c - creating, attaching and mapping the two shared objects.
 *
 * Creation is atomic: both objects are built under temporary names, fully
 * initialised, then rename()d into place (readers object first, data object
 * last), so a reader never maps a half-written header. The data object's
 * magic is therefore valid from the first moment its name exists.
 *
 * The writer holds flock(LOCK_EX) on the data object for as long as it is
 * attached: a second writer gets SHOAL_ELOCKED. Readers take no lock.
 *
 * Backing: the data object is ftruncate()d to its full size (sparse) and
 * backed with fallocate() in SHM_BACK_CHUNK steps before the allocator hands
 * out memory above the current backed_end (shm__back). On a full tmpfs
 * fallocate fails with ENOSPC and the write gets SHOAL_ENOSPC; nothing ever
 * touches an unbacked page, so no process can take a SIGBUS. backed_end is
 * published with release (pairs with the acquire in read.c's bounds check):
 * every offset a reader can find lies below it.
 *
 * Reader slots (readers object): a slot is free when pid == 0. It is claimed
 * by CAS on pid (0 -> pid), then pid_start is stored; it is released by
 * clearing snap and pid_start, then pid with release. A sweeper treats
 * pid_start == 0 as "being claimed" and clears such a slot only when the pid
 * is gone. Who writes what is listed in shm-internal.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "store-internal.h"

/* ------------------------------------------------------------ helpers -- */

/* Why the last shm_store_open of this thread failed (its handle is gone). */
static _Thread_local char open_err[640];

uint64_t shm__hash(const uint8_t sipkey[16], const void *key, size_t klen) {
  uint64_t h;
  crypto_shorthash_siphash24((unsigned char *)&h, key, klen, sipkey);
  return h;
}

/* The layout fingerprint (LMDB's MDB_LOCK_FORMAT idea): any change to the
 * shared structs' sizes or key offsets changes it, so a build that disagrees
 * about the format refuses to attach instead of misreading. */
uint32_t shm__fingerprint(void) {
  const uint64_t v[] = {
      sizeof(struct shm_header),
      offsetof(struct shm_header, commit_seq),
      offsetof(struct shm_header, index_off),
      offsetof(struct shm_header, backed_end),
      offsetof(struct shm_header, skip_next),
      offsetof(struct shm_header, heap_top),
      offsetof(struct shm_header, reclaim_seq),
      offsetof(struct shm_header, c_keys),
      sizeof(struct shm_entry),
      offsetof(struct shm_entry, next),
      sizeof(struct shm_rec),
      sizeof(struct shm_index),
      sizeof(struct shm_reader_slot),
      sizeof(struct shm_readers_hdr),
      SHM_PAGE,
      SHM_SLAB_PAGES,
      SHM_SKIP_MAXH,
      SHM_NCLASSES,
      SHM_DOORBELLS,
      SHM_KEY_MAX,
      (uint64_t)shm__class_size(SHM_NCLASSES - 1),
  };
  uint32_t h = 2166136261u; /* FNV-1a */
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
    for (int b = 0; b < 8; b++) {
      h ^= (uint8_t)(v[i] >> (8 * b));
      h *= 16777619u;
    }
  return h;
}

uint64_t shm_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t shm_pid_start_time(pid_t pid) {
  char path[64], buf[1024];
  if (pid <= 0) return 0;
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = 0;
  /* comm may hold spaces and parentheses: fields start after the last ')' */
  char *p = strrchr(buf, ')');
  if (!p) return 0;
  p++;
  /* after ')' come fields 3..; starttime is field 22 */
  for (int field = 2; field < 21 && p; field++) p = strchr(p + 1, ' ');
  if (!p) return 0;
  unsigned long long st = strtoull(p + 1, NULL, 10);
  /* A zombie has exited: report it as gone so its slot is reclaimed. */
  char *state = strrchr(buf, ')');
  if (state && state[1] == ' ' && (state[2] == 'Z' || state[2] == 'X'))
    return 0;
  return st ? st : 1;
}

static int valid_name(const char *name) {
  size_t n = strlen(name);
  if (n == 0 || n > SHM_NAME_MAX) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = name[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
      return 0;
  }
  return !(name[0] == '.');
}

static const char *default_dir(const char *dir) {
  if (dir && *dir) return dir;
  const char *e = getenv("SHOAL_SHM_DIR");
  return (e && *e) ? e : "/dev/shm";
}

int shm_object_path(char *buf, size_t cap, const char *name, const char *dir,
                    const char *suffix) {
  if (!name) name = "default";
  if (!valid_name(name)) return SHOAL_EINVAL;
  int n = snprintf(buf, cap, "%s/shoal.%s.%s", default_dir(dir), name, suffix);
  if (n < 0 || (size_t)n >= cap) return -ENAMETOOLONG;
  return 0;
}

int shm__errf(shm_store *s, int err, const char *fmt, ...) {
  if (s) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->lasterr, sizeof s->lasterr, fmt, ap);
    va_end(ap);
  }
  return err;
}

const char *shm_store_lasterr(const shm_store *s) {
  if (!s) return open_err[0] ? open_err : "no error";
  return s->lasterr[0] ? s->lasterr : "no error";
}

/* Back [backed_end, end) with real tmpfs pages. */
int shm__back(shm_store *s, uint64_t end) {
  uint64_t cur = s->hdr->backed_end;
  if (end <= cur) return 0;
  if (end > s->size)
    return shm__errf(s, SHOAL_ENOSPC,
                     "store %s is full: its size of %llu bytes is used up",
                     s->path, (unsigned long long)s->size);
  uint64_t want = (end + SHM_BACK_CHUNK - 1) / SHM_BACK_CHUNK * SHM_BACK_CHUNK;
  if (want > s->size) want = s->size;
  /* Try the whole chunk; on a nearly full tmpfs fall back to exactly what
   * is needed, so the last few MiB are still usable. */
  while (fallocate(s->fd, 0, (off_t)cur, (off_t)(want - cur)) != 0) {
    int e = errno;
    if (e == EINTR) continue;
    uint64_t exact = (end + SHM_PAGE - 1) / SHM_PAGE * SHM_PAGE;
    if (e == ENOSPC && want > exact) {
      want = exact;
      continue;
    }
    if (e == ENOSPC)
      return shm__errf(s, SHOAL_ENOSPC,
                       "fallocate of %llu bytes at offset %llu of %s: the "
                       "tmpfs is full (free space there or use a larger one)",
                       (unsigned long long)(want - cur),
                       (unsigned long long)cur, s->path);
    return shm__errf(s, -e, "fallocate %s: %s", s->path, strerror(e));
  }
  /* pairs with the acquire of backed_end in read.c (shm__ptr slow path) */
  shm_store_release(&s->hdr->backed_end, want);
  return 0;
}

/* ------------------------------------------------------- reader slots -- */

int shm__claim_slot(struct shm_readers_hdr *rh, struct shm_reader_slot *slots,
                    pid_t pid, uint64_t start, int leased) {
  uint32_t n = rh->nslots;
  for (uint32_t i = 0; i < n; i++) {
    struct shm_reader_slot *sl = &slots[i];
    uint32_t expect = 0;
    if (shm_load_relaxed(&sl->pid) != 0) continue;
    if (!shm_cas_acq_rel(&sl->pid, &expect, (uint32_t)pid)) continue;
    shm_store_relaxed(&sl->snap, 0);
    shm_store_relaxed(&sl->nest, 0);
    shm_store_relaxed(&sl->leased, (uint64_t)leased);
    /* pid_start last: a sweeper skips slots whose pid_start is 0 */
    shm_store_release(&sl->pid_start, start);
    uint64_t hwm = shm_load_relaxed(&rh->hwm);
    while (hwm < i + 1 &&
           !__atomic_compare_exchange_n(&rh->hwm, &hwm, (uint64_t)i + 1, 0,
                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return (int)i;
  }
  return SHOAL_ENOREADERS;
}

void shm__release_slot(struct shm_reader_slot *sl, pid_t pid) {
  if (shm_load_relaxed(&sl->pid) != (uint32_t)pid) return;
  shm_store_relaxed(&sl->nest, 0);
  shm_store_relaxed(&sl->leased, 0);
  shm_store_release(&sl->snap, 0); /* pairs with the writer's acquire */
  shm_store_relaxed(&sl->pid_start, 0);
  shm_store_release(&sl->pid, 0);
}

/* ------------------------------------------------------------- create -- */

static int create_readers(const char *rpath, uint32_t nslots, uint64_t id,
                          mode_t mode) {
  char tmp[PATH_MAX + 32];
  snprintf(tmp, sizeof tmp, "%s.tmp.%d", rpath, (int)getpid());
  size_t bytes = sizeof(struct shm_readers_hdr) +
                 (size_t)nslots * sizeof(struct shm_reader_slot);
  int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return -errno;
  int err = 0;
  (void)fchmod(fd, mode); /* umask must not narrow the mode */
  if (ftruncate(fd, (off_t)bytes) != 0 || fallocate(fd, 0, 0, (off_t)bytes)) {
    err = errno == ENOSPC ? SHOAL_ENOSPC : -errno;
    goto out;
  }
  struct shm_readers_hdr *rh =
      mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (rh == MAP_FAILED) {
    err = -errno;
    goto out;
  }
  rh->format = SHM_FORMAT_VERSION;
  rh->nslots = nslots;
  rh->store_id = id;
  shm_store_release(&rh->magic, SHM_READERS_MAGIC);
  munmap(rh, bytes);
  if (rename(tmp, rpath) != 0) err = -errno;
out:
  close(fd);
  if (err) unlink(tmp);
  return err;
}

static int create_data(shm_store *s, const shm_config *cfg, const char *name,
                       uint64_t size, uint32_t nslots, uint64_t id) {
  char tmp[PATH_MAX + 32];
  snprintf(tmp, sizeof tmp, "%s.tmp.%d", s->path, (int)getpid());
  mode_t mode = cfg && cfg->mode ? cfg->mode : 0640;
  int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0)
    return shm__errf(s, -errno, "create %s: %s", tmp, strerror(errno));
  (void)fchmod(fd, mode);
  int err = 0;
  if (ftruncate(fd, (off_t)size) != 0) {
    err = shm__errf(s, -errno, "ftruncate %s: %s", tmp, strerror(errno));
    goto fail;
  }
  uint8_t *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    err = shm__errf(s, -errno, "mmap %s: %s", tmp, strerror(errno));
    goto fail;
  }
  uint64_t npages = size / SHM_PAGE;
  uint64_t meta = SHM_PAGETAB_OFF + npages * 4;
  uint64_t heap_start = (meta + SHM_SLAB - 1) / SHM_SLAB * SHM_SLAB;
  uint64_t backed = (heap_start + SHM_BACK_CHUNK - 1) / SHM_BACK_CHUNK *
                    SHM_BACK_CHUNK;
  if (backed > size) backed = size;
  if (fallocate(fd, 0, 0, (off_t)backed) != 0) {
    int e = errno;
    munmap(base, size);
    err = e == ENOSPC ? shm__errf(s, SHOAL_ENOSPC,
                                  "%s: no room on the tmpfs for the store's "
                                  "%llu bytes of metadata",
                                  tmp, (unsigned long long)backed)
                      : shm__errf(s, -e, "fallocate %s: %s", tmp, strerror(e));
    goto fail;
  }
  struct shm_header *h = (struct shm_header *)base;
  h->format = SHM_FORMAT_VERSION;
  h->fingerprint = shm__fingerprint();
  h->size = size;
  h->heap_start = heap_start;
  h->npages = npages;
  h->store_id = id;
  h->reader_slots = nslots;
  h->doorbells = SHM_DOORBELLS;
  randombytes_buf(h->sipkey, sizeof h->sipkey);
  /* NUL-padded; a name of exactly SHM_NAME_MAX bytes fills the field */
  memset(h->name, 0, sizeof h->name);
  memcpy(h->name, name, strlen(name));
  h->created_ms = shm_now_ms();
  h->commit_seq = 1;
  h->backed_end = backed;
  h->heap_top = heap_start;
  h->clean = 1;
  s->base = base;
  s->size = size;
  s->hdr = h;
  s->pagetab = (uint32_t *)(base + SHM_PAGETAB_OFF);
  s->doorbell = (uint32_t *)(base + SHM_DOORBELL_OFF);
  s->fd = fd;
  shm__alloc_init_meta(s);
  uint64_t ioff;
  if ((err = shm__index_create(s, SHM_INDEX_MIN, &ioff)) != 0) {
    munmap(base, size);
    s->base = NULL;
    goto fail;
  }
  shm__index(s); /* validates */
  h->index_off = ioff;
  shm_store_release(&h->magic, SHM_MAGIC);
  munmap(base, size);
  s->base = NULL;
  s->fd = -1;
  if (rename(tmp, s->path) != 0) {
    err = shm__errf(s, -errno, "rename %s: %s", tmp, strerror(errno));
    goto fail;
  }
  close(fd);
  return 0;
fail:
  close(fd);
  unlink(tmp);
  return err;
}

/* ------------------------------------------------------------- attach -- */

/* Validate a data header (read with pread, or mapped) against the file
 * size and, when @name is not NULL, the store name the object was opened
 * by. On failure @why (if not NULL) receives which field is wrong and how:
 * shoal-inspect prints it, attach logs it. */
static int check_header(const struct shm_header *h, uint64_t fsize,
                        const char *name, char *why, size_t cap) {
#define BAD(err, ...)                                                          \
  do {                                                                         \
    if (why) snprintf(why, cap, __VA_ARGS__);                                  \
    return (err);                                                              \
  } while (0)
  typedef unsigned long long ull;
  if (fsize < SHM_HEADER_BYTES)
    BAD(SHOAL_ECORRUPT, "the file is %llu bytes, smaller than the %u-byte "
        "header: not a shoal data object", (ull)fsize, SHM_HEADER_BYTES);
  uint64_t magic = shm_load_acquire(&h->magic);
  if (magic != SHM_MAGIC)
    BAD(SHOAL_ECORRUPT, "magic: 0x%016llx is not 0x%016llx (\"SHOALSEG\"): "
        "not a shoal data object", (ull)magic, (ull)SHM_MAGIC);
  if (h->format != SHM_FORMAT_VERSION)
    BAD(SHOAL_EVERSION, "format: version %u, this build reads version %u: "
        "made by another shoal release", h->format, SHM_FORMAT_VERSION);
  if (h->fingerprint != shm__fingerprint())
    BAD(SHOAL_EVERSION, "fingerprint: layout 0x%08x, this build's is 0x%08x: "
        "made by an incompatible shoal build", h->fingerprint,
        shm__fingerprint());
  if (h->size != fsize)
    BAD(SHOAL_ECORRUPT, "size: the header says %llu bytes, the file has %llu",
        (ull)h->size, (ull)fsize);
  if (h->size < SHM_MIN_SIZE || h->size > SHM_MAX_SIZE)
    BAD(SHOAL_ECORRUPT, "size: %llu bytes is outside [%llu, %llu]",
        (ull)h->size, (ull)SHM_MIN_SIZE, (ull)SHM_MAX_SIZE);
  if (h->npages != h->size / SHM_PAGE)
    BAD(SHOAL_ECORRUPT, "npages: %llu, but size / %u = %llu", (ull)h->npages,
        SHM_PAGE, (ull)(h->size / SHM_PAGE));
  if (h->heap_start < SHM_PAGETAB_OFF + h->npages * 4 ||
      h->heap_start % SHM_SLAB || h->heap_start >= h->size)
    BAD(SHOAL_ECORRUPT, "heap_start: %llu is not a %u-aligned offset between "
        "the page table's end (%llu) and size (%llu)", (ull)h->heap_start,
        SHM_SLAB, (ull)(SHM_PAGETAB_OFF + h->npages * 4), (ull)h->size);
  if (h->doorbells != SHM_DOORBELLS)
    BAD(SHOAL_ECORRUPT, "doorbells: %u, the format has %u", h->doorbells,
        SHM_DOORBELLS);
  if (h->reader_slots == 0 || h->reader_slots > SHM_MAX_READER_SLOTS)
    BAD(SHOAL_ECORRUPT, "reader_slots: %u is outside [1, %u]",
        h->reader_slots, SHM_MAX_READER_SLOTS);
  uint64_t be = shm_load_acquire(&h->backed_end);
  if (be < h->heap_start || be > h->size)
    BAD(SHOAL_ECORRUPT, "backed_end: %llu is outside [heap_start %llu, size "
        "%llu]", (ull)be, (ull)h->heap_start, (ull)h->size);
  uint64_t io = shm_load_acquire(&h->index_off);
  if (io < h->heap_start || io + sizeof(struct shm_index) > be || io % 8)
    BAD(SHOAL_ECORRUPT, "index_off: %llu is not an aligned offset inside the "
        "backed heap [%llu, %llu)", (ull)io, (ull)h->heap_start, (ull)be);
  uint32_t sh = shm_load_relaxed(&h->skip_height);
  if (sh > SHM_SKIP_MAXH)
    BAD(SHOAL_ECORRUPT, "skip_height: %u exceeds the format's %d levels", sh,
        SHM_SKIP_MAXH);
  if (name && (strnlen(h->name, SHM_NAME_MAX) != strlen(name) ||
               memcmp(h->name, name, strlen(name)) != 0)) {
    char hn[SHM_NAME_MAX + 1];
    size_t n = strnlen(h->name, SHM_NAME_MAX);
    for (size_t i = 0; i < n; i++)
      hn[i] = (h->name[i] > 32 && h->name[i] < 127) ? h->name[i] : '?';
    hn[n] = 0;
    BAD(SHOAL_ECORRUPT, "name: the header names store \"%s\", the object is "
        "store \"%s\"'s: a renamed or foreign object", hn, name);
  }
  return 0;
#undef BAD
}

/* Why the last shm_view_open of this thread failed. */
static _Thread_local char view_err[512];

const char *shm_view_lasterr(void) { return view_err; }

static void view_errf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void view_errf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(view_err, sizeof view_err, fmt, ap); /* truncation is fine */
  va_end(ap);
}

static int map_readers(const char *rpath, int writable, uint64_t id,
                       uint32_t nslots, int *fdp, struct shm_readers_hdr **rhp,
                       size_t *sizep, char *why, size_t cap) {
  int fd = open(rpath, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) return -errno;
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = -errno;
    close(fd);
    return e;
  }
  size_t need = sizeof(struct shm_readers_hdr) +
                (size_t)nslots * sizeof(struct shm_reader_slot);
  if ((uint64_t)st.st_size < need) {
    close(fd);
    if (why)
      snprintf(why, cap, "readers object: %llu bytes, the data header's %u "
               "reader slots need %zu", (unsigned long long)st.st_size,
               nslots, need);
    return SHOAL_ECORRUPT;
  }
  void *p = mmap(NULL, need, writable ? PROT_READ | PROT_WRITE : PROT_READ,
                 MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    int e = -errno;
    close(fd);
    return e;
  }
  struct shm_readers_hdr *rh = p;
  int err = 0;
  char buf[256];
  if (shm_load_acquire(&rh->magic) != SHM_READERS_MAGIC) {
    err = SHOAL_ECORRUPT;
    snprintf(buf, sizeof buf, "readers object: magic 0x%016llx is not "
             "\"SHOALRDR\"", (unsigned long long)rh->magic);
  } else if (rh->format != SHM_FORMAT_VERSION) {
    err = SHOAL_EVERSION;
    snprintf(buf, sizeof buf, "readers object: format %u, this build reads "
             "%u", rh->format, SHM_FORMAT_VERSION);
  } else if (rh->nslots != nslots) {
    err = SHOAL_ECORRUPT;
    snprintf(buf, sizeof buf, "readers object: %u slots, the data header "
             "says %u", rh->nslots, nslots);
  } else if (rh->store_id != id) {
    err = SHOAL_ECORRUPT; /* a readers object of another incarnation */
    snprintf(buf, sizeof buf, "readers object: store_id %016llx is not the "
             "data object's %016llx: it belongs to another store or an "
             "earlier incarnation of this one",
             (unsigned long long)rh->store_id, (unsigned long long)id);
  }
  if (err && why) snprintf(why, cap, "%s", buf);
  if (err) {
    munmap(p, need);
    close(fd);
    return err;
  }
  *fdp = fd;
  *rhp = rh;
  *sizep = need;
  return 0;
}

static void store_free(shm_store *s) {
  if (!s) return;
  if (s->base) munmap(s->base, s->size);
  if (s->rhdr) munmap(s->rhdr, s->rsize);
  if (s->fd >= 0) close(s->fd);
  if (s->rfd >= 0) close(s->rfd);
  free(s->rq);
  free(s->dq);
  free(s->touched);
  free(s);
}

static int attach(shm_store *s) {
  int fd = open(s->path, O_RDWR | O_CLOEXEC);
  if (fd < 0) return -errno;
  s->fd = fd;
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK)
      return shm__errf(s, SHOAL_ELOCKED,
                       "%s is held by another writer (a running shoald)",
                       s->path);
    return shm__errf(s, -errno, "flock %s: %s", s->path, strerror(errno));
  }
  struct stat st;
  if (fstat(fd, &st) != 0) return -errno;
  if ((uint64_t)st.st_size < SHM_MIN_SIZE)
    return shm__errf(s, SHOAL_ECORRUPT, "%s is too small (%lld bytes)",
                     s->path, (long long)st.st_size);
  /* Check the header through a small read-only window before mapping
   * everything: the size field may be garbage. */
  struct shm_header hb;
  if (pread(fd, &hb, sizeof hb, 0) != (ssize_t)sizeof hb)
    return shm__errf(s, SHOAL_ECORRUPT, "%s: short header", s->path);
  char why[320];
  int err = check_header(&hb, (uint64_t)st.st_size, NULL, why, sizeof why);
  if (err) return shm__errf(s, err, "%s: %s", s->path, why);
  s->size = hb.size;
  s->base = mmap(NULL, s->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (s->base == MAP_FAILED) {
    s->base = NULL;
    return shm__errf(s, -errno, "mmap %s: %s", s->path, strerror(errno));
  }
  s->hdr = (struct shm_header *)s->base;
  s->pagetab = (uint32_t *)(s->base + SHM_PAGETAB_OFF);
  s->doorbell = (uint32_t *)(s->base + SHM_DOORBELL_OFF);
  why[0] = 0;
  err = map_readers(s->rpath, 1, s->hdr->store_id, s->hdr->reader_slots,
                    &s->rfd, &s->rhdr, &s->rsize, why, sizeof why);
  if (err)
    return shm__errf(s, err, "%s: readers object missing or not ours (%s)",
                     s->rpath, why[0] ? why : shoal_strerror(err));
  s->slots = (struct shm_reader_slot *)(s->rhdr + 1);
  return 0;
}

int shm_store_open(shm_store **out, const shm_config *cfg, unsigned flags) {
  *out = NULL;
  if (sodium_init() < 0) return -ENOMEM;
  const char *name = cfg && cfg->name ? cfg->name : "default";
  const char *dir = cfg ? cfg->dir : NULL;
  uint64_t size = cfg && cfg->size ? cfg->size : SHM_DEFAULT_SIZE;
  uint32_t nslots =
      cfg && cfg->reader_slots ? cfg->reader_slots : SHM_DEFAULT_READER_SLOTS;
  if (size < SHM_MIN_SIZE || size > SHM_MAX_SIZE ||
      nslots > SHM_MAX_READER_SLOTS)
    return SHOAL_EINVAL;
  size = size / SHM_SLAB * SHM_SLAB;
  shm_store *s = calloc(1, sizeof *s);
  if (!s) return -ENOMEM;
  s->fd = s->rfd = -1;
  int err = shm_object_path(s->path, sizeof s->path, name, dir, "data");
  if (!err) err = shm_object_path(s->rpath, sizeof s->rpath, name, dir, "readers");
  if (err) {
    free(s);
    return err;
  }
  s->rng = 0x9E3779B97F4A7C15ull ^ ((uint64_t)getpid() << 32) ^ shm_now_ms();

  for (int attempt = 0; attempt < 3; attempt++) {
    int exists = access(s->path, F_OK) == 0;
    if (exists && (flags & SHM_CREATE) && (flags & SHM_EXCL)) {
      store_free(s);
      return -EEXIST;
    }
    if (!exists || (flags & SHM_TRUNC)) {
      if (!(flags & (SHM_CREATE | SHM_TRUNC))) {
        store_free(s);
        return -ENOENT;
      }
      if (exists) {
        /* Replacing a store: only if nobody writes it. */
        int lfd = open(s->path, O_RDWR | O_CLOEXEC);
        if (lfd >= 0) {
          if (flock(lfd, LOCK_EX | LOCK_NB) != 0) {
            close(lfd);
            store_free(s);
            return SHOAL_ELOCKED;
          }
          close(lfd);
        }
      }
      uint64_t id;
      randombytes_buf(&id, sizeof id);
      mode_t rmode = 0660;
      err = create_readers(s->rpath, nslots, id, rmode);
      if (!err) err = create_data(s, cfg, name, size, nslots, id);
      if (err) {
        int e = err;
        store_free(s);
        return e;
      }
      flags &= ~(unsigned)SHM_TRUNC; /* now attach what we made */
    }
    err = attach(s);
    if (err == -ENOENT) { /* raced with an unlink: try again */
      if (s->fd >= 0) close(s->fd);
      s->fd = -1;
      continue;
    }
    break;
  }
  if (!err) err = shm__recover(s);
  if (err) {
    /* the handle dies here: keep its explanation for the caller's log */
    snprintf(open_err, sizeof open_err, "store %s: %s", name,
             s->lasterr[0] ? s->lasterr : shoal_strerror(err));
    store_free(s);
    return err;
  }
  open_err[0] = 0;
  *out = s;
  return 0;
}

void shm_store_close(shm_store *s, int clean) {
  if (!s) return;
  if (clean) {
    shm_reclaim(s);
    shm_store_relaxed(&s->hdr->clean, 1);
  }
  shm_store_relaxed(&s->hdr->writer_pid, 0);
  store_free(s); /* closing the fd drops the flock */
}

int shm_store_unlink(const char *name, const char *dir) {
  char p[PATH_MAX];
  int err = shm_object_path(p, sizeof p, name, dir, "data");
  if (err) return err;
  int r1 = unlink(p) == 0 ? 0 : -errno;
  shm_object_path(p, sizeof p, name, dir, "readers");
  int r2 = unlink(p) == 0 ? 0 : -errno;
  if (r1 == -ENOENT && r2 == -ENOENT) return -ENOENT;
  if (r1 && r1 != -ENOENT) return r1;
  if (r2 && r2 != -ENOENT) return r2;
  return 0;
}

/* ------------------------------------------------------------- views ---- */

static int view_map(shm_view *v, const char *name, const char *dir,
                    unsigned flags) {
  char path[PATH_MAX], rpath[PATH_MAX], why[320];
  int err = shm_object_path(path, sizeof path, name, dir, "data");
  if (!err) err = shm_object_path(rpath, sizeof rpath, name, dir, "readers");
  if (err) {
    view_errf("bad store name or directory: %s",
             shoal_strerror(err));
    return err;
  }
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    err = -errno;
    view_errf("%s: %s", path, strerror(errno));
    return err;
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    err = -errno;
    view_errf("%s: %s", path, strerror(errno));
    close(fd);
    return err;
  }
  struct shm_header hb;
  if ((uint64_t)st.st_size < sizeof hb ||
      pread(fd, &hb, sizeof hb, 0) != (ssize_t)sizeof hb) {
    view_errf("%s: the file is %llu bytes, "
             "smaller than the %u-byte header: not a shoal data object",
             path, (unsigned long long)st.st_size, SHM_HEADER_BYTES);
    close(fd);
    return SHOAL_ECORRUPT;
  }
  err = check_header(&hb, (uint64_t)st.st_size, name ? name : "default", why,
                     sizeof why);
  if (err) {
    view_errf("%s: %s", path, why);
    close(fd);
    return err;
  }
  void *base = mmap(NULL, hb.size, PROT_READ, MAP_SHARED, fd, 0);
  close(fd); /* the mapping keeps the object */
  if (base == MAP_FAILED) {
    view_errf("mmap %s: %s", path, strerror(errno));
    return -errno;
  }
  v->base = base;
  v->size = hb.size;
  v->hdr = base;
  memcpy(v->sipkey, hb.sipkey, sizeof v->sipkey);
  v->limit = shm_load_acquire(&v->hdr->backed_end);
  int rfd;
  int writable = !(flags & SHM_VIEW_RDONLY_READERS);
  why[0] = 0;
  err = map_readers(rpath, writable, hb.store_id, hb.reader_slots, &rfd,
                    &v->rhdr, &v->rsize, why, sizeof why);
  if (err == -EACCES && writable && (flags & SHM_VIEW_NOSLOT))
    err = map_readers(rpath, 0, hb.store_id, hb.reader_slots, &rfd, &v->rhdr,
                      &v->rsize, why, sizeof why);
  if (err) {
    view_errf("%s: %s", rpath,
             why[0] ? why : strerror(err < 0 && err > -4096 ? -err : EINVAL));
    return err;
  }
  close(rfd);
  v->slots = (struct shm_reader_slot *)(v->rhdr + 1);
  return 0;
}

void shm_view_close(shm_view *v) {
  if (!v) return;
  if (v->slot && v->nest) {
    v->nest = 1;
    shm_read_end(v);
  }
  if (v->slot && v->own_slot) shm__release_slot(v->slot, v->pid);
  if (v->base) munmap(v->base, v->size);
  if (v->rhdr) munmap(v->rhdr, v->rsize);
  free(v);
}

int shm_view_open(shm_view **out, const char *name, const char *dir,
                  unsigned flags) {
  *out = NULL;
  view_err[0] = 0;
  if (sodium_init() < 0) return -ENOMEM;
  shm_view *v = calloc(1, sizeof *v);
  if (!v) return -ENOMEM;
  v->slot_idx = -1;
  v->pid = getpid();
  if (flags & SHM_VIEW_UNPINNED) flags |= SHM_VIEW_RDONLY_READERS;
  if (flags & SHM_VIEW_RDONLY_READERS) flags |= SHM_VIEW_NOSLOT;
  v->unpinned = !!(flags & SHM_VIEW_UNPINNED);
  int err = view_map(v, name, dir, flags);
  if (!err && !(flags & SHM_VIEW_NOSLOT)) {
    int idx = shm__claim_slot(v->rhdr, v->slots, v->pid,
                              shm_pid_start_time(v->pid), 0);
    if (idx < 0)
      err = idx;
    else {
      v->slot_idx = idx;
      v->slot = &v->slots[idx];
      v->own_slot = 1;
    }
  }
  if (err) {
    shm_view_close(v);
    return err;
  }
  *out = v;
  return 0;
}

int shm_view_attach_slot(shm_view *v, unsigned idx) {
  if (v->slot || idx >= v->rhdr->nslots) return SHOAL_EINVAL;
  struct shm_reader_slot *sl = &v->slots[idx];
  if (shm_load_acquire(&sl->pid) != (uint32_t)v->pid) return SHOAL_EINVAL;
  v->slot = sl;
  v->slot_idx = (int)idx;
  v->own_slot = 0;
  return 0;
}

void shm_view_detach_slot(shm_view *v, int release) {
  if (!v->slot) return;
  if (v->nest) {
    v->nest = 1;
    shm_read_end(v);
  }
  if (release) shm__release_slot(v->slot, v->pid);
  v->slot = NULL;
  v->slot_idx = -1;
  v->own_slot = 0;
}

int shm_view_slot(const shm_view *v) { return v->slot_idx; }

int shm_store_view(shm_store *s, shm_view **out) {
  *out = NULL;
  shm_view *v = calloc(1, sizeof *v);
  if (!v) return -ENOMEM;
  v->slot_idx = -1;
  v->pid = getpid();
  /* Map read-only again: the writer's own reads go through the same code
   * (and bounds checks) as every client's. */
  void *base = mmap(NULL, s->size, PROT_READ, MAP_SHARED, s->fd, 0);
  if (base == MAP_FAILED) {
    free(v);
    return -errno;
  }
  void *rbase = mmap(NULL, s->rsize, PROT_READ | PROT_WRITE, MAP_SHARED,
                     s->rfd, 0);
  if (rbase == MAP_FAILED) {
    munmap(base, s->size);
    free(v);
    return -errno;
  }
  v->base = base;
  v->size = s->size;
  v->hdr = base;
  memcpy(v->sipkey, s->hdr->sipkey, sizeof v->sipkey);
  v->limit = shm_load_acquire(&v->hdr->backed_end);
  v->rhdr = rbase;
  v->rsize = s->rsize;
  v->slots = (struct shm_reader_slot *)(v->rhdr + 1);
  int idx = shm__claim_slot(v->rhdr, v->slots, v->pid,
                            shm_pid_start_time(v->pid), 0);
  if (idx < 0) {
    shm_view_close(v);
    return idx;
  }
  v->slot_idx = idx;
  v->slot = &v->slots[idx];
  v->own_slot = 1;
  *out = v;
  return 0;
}

uint32_t shm_format_version(void) { return SHM_FORMAT_VERSION; }
