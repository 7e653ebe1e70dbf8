/*
 * files.c - HashFile, TailLog (with follows) and Cancel: file work on a
 * worker pool, never on the event loop (DESIGN section 6, UTILITIES.md).
 *
 * Descriptors, not paths. The client opens the file and passes the
 * descriptor with SCM_RIGHTS on the first byte of the request's frame
 * (loop.c records the stream offset each descriptor arrived at, and the
 * frame handled at that offset takes it). The broker never opens a path a
 * client names, so it reads exactly what that client could read. A request
 * that needs a descriptor and has none, and a descriptor that came with a
 * frame that takes none, are protocol errors (the latter is closed).
 *
 * The pool. --workers threads (default 2) take jobs from a liburcu
 * wait-free concurrent queue (wfcqueue): the loop enqueues (wait-free) and
 * posts one count to an EFD_SEMAPHORE eventfd; a worker's blocking read of
 * that eventfd takes one count, then it dequeues one job (the dequeue side
 * takes the queue's mutex: several workers dequeue). Finished jobs go on a
 * second wfcqueue, and a write to the loop's eventfd (in epoll) wakes the
 * loop, which is the only dequeuer of that queue (the lock-free
 * __cds_wfcq_dequeue_blocking).
 *
 * Invariants:
 *   I1  a job belongs to exactly one side at a time: the loop until
 *       cds_wfcq_enqueue(jobs), the worker until cds_wfcq_enqueue(done),
 *       the loop after its dequeue. Neither side touches a job it does not
 *       own.
 *       Barriers: cds_wfcq_enqueue is a full barrier (uatomic_xchg on the
 *       tail) before the node becomes reachable, and the dequeue reads the
 *       node's next pointer with a load that the xchg's publication pairs
 *       with (CMM_LOAD_SHARED after the enqueuer's CMM_STORE_SHARED of
 *       ->next, ordered by the xchg). So every field the owner wrote
 *       before enqueueing is visible to the side that dequeues it.
 *   I2  no lost wake-up: each enqueue on `done` is followed by a write to
 *       the loop's eventfd, and the loop reads (resets) the eventfd BEFORE
 *       draining `done`; a job enqueued after the drain has its write
 *       after the read, so epoll reports the eventfd again. Workers: the
 *       semaphore eventfd holds exactly one count per job enqueued.
 *   I3  a connection a job points at is not freed while the job is out:
 *       c->jobs counts them and loop.c's free_dead keeps a dead
 *       connection until it is 0. The completion of a job whose
 *       connection died is dropped.
 *   I4  a follower is touched by the loop only while !busy; while busy its
 *       state (offset) is the job's (I1). Cancel, close and inotify events
 *       on a busy follower only set flags the completion looks at.
 *   I5  replies stay in request order: a HashFile/TailLog that goes to a
 *       worker sets c->blocked, and the connection decodes nothing more
 *       until the job's reply is appended. A follow's later messages carry
 *       the TailLog's id and interleave with other replies (shoal.proto).
 *
 * Hash cache (loop thread only): key (st_dev, st_ino, size, mtime, ctime
 * in ns, algorithm, digest length) -> digest. A request fstat()s its
 * descriptor on the loop (no disk I/O: the inode is in memory while the
 * descriptor is open) and a hit is answered at once, so any client's
 * second request for an unchanged file costs a round trip, not a read.
 * futil_hash_fd stats the file before and after reading and retries when
 * it changed meanwhile; the entry is stored under the stat that matched
 * the bytes read. Bounded by --hash-cache-entries and --hash-cache-bytes
 * (least recently used goes first). A file rewritten within one mtime
 * tick with the same size is indistinguishable by stat: ctime catches
 * most such rewrites, as it does for make and rsync.
 *
 * Follows (TailLog.follow): the follower owns the passed descriptor and
 * an inotify watch on it (inotify_add_watch on /proc/self/fd/N resolves to
 * the file itself, renamed or unlinked ones included). IN_MODIFY schedules
 * a read job; IN_MOVE_SELF and IN_ATTRIB with st_nlink 0 mean the file was
 * rotated away: what is left is read and a ROTATED event sent (once).
 * A size below the offset read so far is a truncation: a TRUNCATED event,
 * then reading from 0. Only complete lines are sent; a line longer than
 * FOLLOW_CHUNK is sent in FOLLOW_CHUNK pieces. When inotify refuses the
 * watch (it needs read permission on the inode, which the broker's uid may
 * lack though the descriptor allows reading) the follow is polled on every
 * sweep tick instead. A follow whose connection has more than
 * --max-output unsent is held (nothing is lost: the bytes stay in the
 * file) until its client reads.
 */
#define _LGPL_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <urcu/wfcqueue.h>

#include "broker-internal.h"
#include "futil.h"

/* ThreadSanitizer does not see liburcu 0.13's atomics (x86 inline asm and
 * volatile accesses), so it misses the hand-off I1 relies on and reports
 * every job field as a race. The two macros tell it about that edge: a
 * release on the node before each enqueue, an acquire on it after each
 * dequeue (the ordering uatomic_xchg gives). The queue's own accesses are
 * suppressed in tests/tsan.supp. Nothing is generated outside TSan builds. */
#if defined(__SANITIZE_THREAD__)
#define FILES_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define FILES_TSAN 1
#endif
#endif
#ifdef FILES_TSAN
#include <sanitizer/tsan_interface.h>
#define job_tsan_release(node) __tsan_release(node)
#define job_tsan_acquire(node) __tsan_acquire(node)
#else
#define job_tsan_release(node) ((void)(node))
#define job_tsan_acquire(node) ((void)(node))
#endif

/* A follow reads at most this much per job (and sends lines of at most
 * this length). */
#define FOLLOW_CHUNK (1u << 20)
/* The backward scan for a follow's first lines reads this much at a time. */
#define SCAN_CHUNK (64u << 10)
/* Tail replies carry this much besides the lines: envelope, tags. */
#define TAIL_LINE_OVERHEAD 8u

enum job_kind { JOB_HASH, JOB_TAIL, JOB_FOLLOW, JOB_STOP };

struct broker_follower {
  struct broker_follower *next; /* the connection's follows */
  struct broker_conn *c;
  uint64_t id;                  /* the TailLog's request id */
  int fd;
  int wd;                       /* inotify watch, -1: polled on the tick */
  uint64_t offset;              /* next byte to read */
  size_t first_lines;           /* lines to start with (until started) */
  uint64_t cancel_id;           /* Cancel waiting for the stream's end */
  unsigned busy : 1;            /* a job owns the offset (I4) */
  unsigned again : 1;           /* the file changed while busy */
  unsigned moved : 1;           /* IN_MOVE_SELF seen */
  unsigned rotated_sent : 1;
  unsigned started : 1;         /* the first reply went out */
  unsigned from_start : 1;
  unsigned dead : 1;            /* its connection closed: free when idle */
  unsigned held : 1;            /* waiting for the client to read */
  unsigned cancel : 1;
};

struct job {
  struct cds_wfcq_node node;
  int kind;
  struct broker_conn *c; /* I3 */
  uint64_t id;
  int fd;                /* HASH, TAIL: the job's (closed by the worker) */
  int status;
  char err[256];
  /* HASH */
  int alg;
  size_t dlen;
  uint8_t digest[FUTIL_HASH_MAX];
  struct stat st;
  int cached_hit;
  /* TAIL */
  size_t n, max_bytes;
  futil_lines lines;
  /* FOLLOW: lines of [offset, next_off) in buf */
  struct broker_follower *f;
  int start;             /* the follow's first job */
  size_t first_lines;
  int from_start;
  uint64_t offset, next_off, size;
  int truncated, rotated, more;
  char *buf;
  size_t nl, *loff, *llen;
};

struct hentry {
  struct hentry *hnext, *newer, *older;
  uint64_t dev, ino, size, mtime_ns, ctime_ns;
  uint32_t alg, dlen;
  uint8_t digest[FUTIL_HASH_MAX];
};

struct broker_files {
  /* pool */
  pthread_t *threads;
  unsigned nthreads;
  struct cds_wfcq_head jobs_head; /* many dequeuers: the mutex variant */
  struct cds_wfcq_tail jobs_tail;
  struct __cds_wfcq_head done_head; /* one dequeuer: the loop */
  struct cds_wfcq_tail done_tail;
  int jobs_efd;  /* EFD_SEMAPHORE: one count per queued job */
  int done_efd;  /* the loop's wake-up (epoll) */
  uint64_t inflight;
  /* follows */
  int ifd;       /* inotify, -1 if unavailable */
  uint64_t nfollowers;
  /* hash cache */
  struct hentry **tab;
  size_t tab_cap, n, max_n;
  struct hentry *newest, *oldest;
};

static const int ev_jobs = BROKER_EV_JOBS;
static const int ev_notify = BROKER_EV_NOTIFY;

/* ------------------------------------------------------------ the pool -- */

static void job_free(struct job *j) {
  if (!j) return;
  if (j->fd >= 0) close(j->fd);
  futil_lines_free(&j->lines);
  free(j->buf);
  free(j->loff);
  free(j->llen);
  free(j);
}

static int lines_push(struct job *j, size_t *cap, size_t off, size_t len) {
  if (j->nl == *cap) {
    size_t nc = *cap ? *cap * 2 : 64;
    size_t *a = realloc(j->loff, nc * sizeof *a);
    if (!a) return -ENOMEM;
    j->loff = a;
    size_t *l = realloc(j->llen, nc * sizeof *l);
    if (!l) return -ENOMEM;
    j->llen = l;
    *cap = nc;
  }
  j->loff[j->nl] = off;
  j->llen[j->nl] = len;
  j->nl++;
  return 0;
}

/* pread all of [off, off+len) or to EOF: bytes read, or -errno. */
static ssize_t pread_full(int fd, char *p, size_t len, uint64_t off) {
  size_t got = 0;
  while (got < len) {
    ssize_t r = pread(fd, p + got, len - got, (off_t)(off + got));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -errno;
    if (r == 0) break;
    got += (size_t)r;
  }
  return (ssize_t)got;
}

/* Where the last @n lines of [0, size) start, for a follow's first reply:
 * the byte after the (n+1)-th '\n' from the end when the data ends with
 * '\n' (the n-th otherwise: the unterminated rest counts as a line), or 0.
 * Reads back from the end, so its cost is that of the n lines. */
static int scan_back(int fd, uint64_t size, size_t n, uint64_t *start) {
  if (n == 0 || size == 0) {
    *start = size;
    return 0;
  }
  char *buf = malloc(SCAN_CHUNK);
  if (!buf) return -ENOMEM;
  uint64_t pos = size;
  size_t need = n, seen = 0;
  int first = 1;
  *start = 0;
  while (pos > 0) {
    size_t len = pos < SCAN_CHUNK ? (size_t)pos : SCAN_CHUNK;
    pos -= len;
    ssize_t r = pread_full(fd, buf, len, pos);
    if (r < 0) {
      free(buf);
      return (int)r;
    }
    if ((size_t)r < len) { /* shrank meanwhile: the read job sees it */
      *start = pos + (uint64_t)r;
      break;
    }
    if (first) {
      if (buf[len - 1] == '\n') need = n + 1;
      first = 0;
    }
    for (size_t i = len; i-- > 0;) {
      if (buf[i] == '\n' && ++seen == need) {
        *start = pos + i + 1;
        free(buf);
        return 0;
      }
    }
  }
  free(buf);
  return 0;
}

/* One follow read: complete lines of [offset, size), at most FOLLOW_CHUNK. */
static void run_follow(struct job *j) {
  struct stat st;
  if (fstat(j->f->fd, &st) != 0) {
    j->status = -errno;
    snprintf(j->err, sizeof j->err, "fstat of the followed file: %s",
             strerror(errno));
    return;
  }
  j->size = (uint64_t)st.st_size;
  if (st.st_nlink == 0) j->rotated = 1;
  if (j->start) {
    if (j->from_start) {
      j->offset = 0;
    } else {
      int err = scan_back(j->f->fd, j->size, j->first_lines, &j->offset);
      if (err) {
        j->status = err;
        snprintf(j->err, sizeof j->err, "reading the followed file: %s",
                 strerror(-err));
        return;
      }
    }
  }
  if (j->size < j->offset) {
    j->truncated = 1;
    j->offset = 0;
  }
  j->next_off = j->offset;
  uint64_t avail = j->size - j->offset;
  if (avail == 0) return;
  size_t want = avail < FOLLOW_CHUNK ? (size_t)avail : FOLLOW_CHUNK;
  j->buf = malloc(want);
  if (!j->buf) {
    j->status = -ENOMEM;
    snprintf(j->err, sizeof j->err, "out of memory for a %zu-byte read", want);
    return;
  }
  ssize_t r = pread_full(j->f->fd, j->buf, want, j->offset);
  if (r < 0) {
    j->status = (int)r;
    snprintf(j->err, sizeof j->err, "reading the followed file: %s",
             strerror((int)-r));
    return;
  }
  size_t got = (size_t)r, cap = 0, from = 0;
  for (;;) {
    const char *nl = memchr(j->buf + from, '\n', got - from);
    if (!nl) break;
    size_t end = (size_t)(nl - j->buf);
    if (lines_push(j, &cap, from, end - from) != 0) {
      j->status = -ENOMEM;
      snprintf(j->err, sizeof j->err, "out of memory splitting lines");
      return;
    }
    from = end + 1;
  }
  if (from == 0 && got == FOLLOW_CHUNK) {
    /* one line longer than a chunk: send this piece of it */
    if (lines_push(j, &cap, 0, got) != 0) {
      j->status = -ENOMEM;
      return;
    }
    from = got;
  }
  j->next_off = j->offset + from;
  /* capped at a chunk: the rest is read by the next job at once */
  j->more = got == want && (uint64_t)want < avail;
}

static void run_job(struct broker_files *fs, struct job *j) {
  (void)fs;
  switch (j->kind) {
  case JOB_HASH:
    j->status = futil_hash_fd(j->fd, j->alg, j->dlen, j->digest, &j->st);
    break;
  case JOB_TAIL:
    j->status = futil_tail_fd(j->fd, j->n, SCAN_CHUNK, j->max_bytes, &j->lines);
    break;
  case JOB_FOLLOW:
    run_follow(j);
    break;
  default:
    break;
  }
  if (j->fd >= 0) { /* the worker closes what it read */
    close(j->fd);
    j->fd = -1;
  }
}

static void *worker_main(void *arg) {
  struct broker_files *fs = arg;
  for (;;) {
    uint64_t one;
    ssize_t r = read(fs->jobs_efd, &one, sizeof one); /* takes one count */
    if (r < 0 && errno == EINTR) continue;
    if (r != (ssize_t)sizeof one) continue;
    /* I2: the count was posted after the enqueue, so a job is there (the
     * blocking dequeue waits out an enqueuer still linking it in). */
    struct cds_wfcq_node *node =
        cds_wfcq_dequeue_blocking(&fs->jobs_head, &fs->jobs_tail);
    if (!node) continue;
    job_tsan_acquire(node);
    struct job *j = caa_container_of(node, struct job, node);
    if (j->kind == JOB_STOP) {
      free(j);
      return NULL;
    }
    run_job(fs, j);
    /* I1: hand the job back; the enqueue's barrier publishes its fields */
    cds_wfcq_node_init(&j->node);
    job_tsan_release(&j->node);
    cds_wfcq_enqueue(&fs->done_head, &fs->done_tail, &j->node);
    uint64_t v = 1;
    while (write(fs->done_efd, &v, sizeof v) < 0 && errno == EINTR) {
    }
  }
}

static void submit(struct broker *b, struct job *j) {
  struct broker_files *fs = b->files;
  if (j->c) j->c->jobs++;
  fs->inflight++;
  cds_wfcq_node_init(&j->node);
  job_tsan_release(&j->node);
  cds_wfcq_enqueue(&fs->jobs_head, &fs->jobs_tail, &j->node);
  uint64_t v = 1;
  while (write(fs->jobs_efd, &v, sizeof v) < 0 && errno == EINTR) {
  }
}

/* -------------------------------------------------------------- replies -- */

static void reply_status(struct broker *b, struct broker_conn *c, uint64_t id,
                         int status, const char *msg) {
  Shoal__Response r = SHOAL__RESPONSE__INIT;
  r.has_id = 1;
  r.id = id;
  r.has_status = 1;
  r.status = status;
  if (status) r.error = (char *)(msg && *msg ? msg : shoal_strerror(status));
  broker_reply(b, c, &r);
}

/* One TailReply message: lines (from @lines/@off/@len or a futil_lines) or
 * an event. */
static void reply_tail(struct broker *b, struct broker_conn *c, uint64_t id,
                       const char *buf, size_t n, const size_t *off,
                       const size_t *len, uint64_t offset, int event,
                       int following, int end) {
  ProtobufCBinaryData *lines = NULL;
  if (n) {
    lines = malloc(n * sizeof *lines);
    if (!lines) {
      reply_status(b, c, id, -ENOMEM, "out of memory packing lines");
      return;
    }
    for (size_t i = 0; i < n; i++) {
      lines[i].data = (uint8_t *)buf + off[i];
      lines[i].len = len[i];
    }
  }
  Shoal__TailReply t = SHOAL__TAIL_REPLY__INIT;
  t.n_lines = n;
  t.lines = lines;
  t.has_offset = 1;
  t.offset = offset;
  if (event) {
    t.has_event = 1;
    t.event = (Shoal__TailReply__Event)event;
  }
  if (following) {
    t.has_following = 1;
    t.following = 1;
  }
  if (end) {
    t.has_end = 1;
    t.end = 1;
  }
  Shoal__Response r = SHOAL__RESPONSE__INIT;
  r.has_id = 1;
  r.id = id;
  r.has_status = 1;
  r.status = 0;
  r.body_case = SHOAL__RESPONSE__BODY_TAIL_LOG;
  r.tail_log = &t;
  broker_reply(b, c, &r);
  free(lines);
}

static void reply_hash(struct broker *b, struct broker_conn *c, uint64_t id,
                       int alg, const uint8_t *digest, size_t dlen,
                       uint64_t size, int cached) {
  Shoal__HashReply h = SHOAL__HASH_REPLY__INIT;
  h.has_digest = 1;
  h.digest.data = (uint8_t *)digest;
  h.digest.len = dlen;
  h.algorithm = (char *)futil_hash_name(alg);
  h.has_cached = 1;
  h.cached = cached;
  h.has_size = 1;
  h.size = size;
  Shoal__Response r = SHOAL__RESPONSE__INIT;
  r.has_id = 1;
  r.id = id;
  r.has_status = 1;
  r.status = 0;
  r.body_case = SHOAL__RESPONSE__BODY_HASH_FILE;
  r.hash_file = &h;
  broker_reply(b, c, &r);
}

/* ----------------------------------------------------------- hash cache -- */

static uint64_t ts_ns(struct timespec t) {
  return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static uint64_t mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  h ^= h >> 31;
  h *= 0xbf58476d1ce4e5b9ull;
  return h ^ (h >> 29);
}

static void hkey(struct hentry *k, const struct stat *st, int alg,
                 size_t dlen) {
  memset(k, 0, sizeof *k);
  k->dev = (uint64_t)st->st_dev;
  k->ino = (uint64_t)st->st_ino;
  k->size = (uint64_t)st->st_size;
  k->mtime_ns = ts_ns(st->st_mtim);
  k->ctime_ns = ts_ns(st->st_ctim);
  k->alg = (uint32_t)alg;
  k->dlen = (uint32_t)dlen;
}

static size_t hslot(const struct broker_files *fs, const struct hentry *k) {
  uint64_t h = mix(mix(mix(k->dev, k->ino), mix(k->size, k->mtime_ns)),
                   mix(k->ctime_ns, (uint64_t)k->alg << 8 | k->dlen));
  return (size_t)(h & (fs->tab_cap - 1));
}

static int hsame(const struct hentry *a, const struct hentry *k) {
  return a->dev == k->dev && a->ino == k->ino && a->size == k->size &&
         a->mtime_ns == k->mtime_ns && a->ctime_ns == k->ctime_ns &&
         a->alg == k->alg && a->dlen == k->dlen;
}

static void lru_unlink(struct broker_files *fs, struct hentry *e) {
  if (e->newer) e->newer->older = e->older;
  else fs->newest = e->older;
  if (e->older) e->older->newer = e->newer;
  else fs->oldest = e->newer;
  e->newer = e->older = NULL;
}

static void lru_front(struct broker_files *fs, struct hentry *e) {
  e->newer = NULL;
  e->older = fs->newest;
  if (fs->newest) fs->newest->newer = e;
  fs->newest = e;
  if (!fs->oldest) fs->oldest = e;
}

static struct hentry *hfind(struct broker_files *fs, const struct hentry *k) {
  if (!fs->tab) return NULL;
  for (struct hentry *e = fs->tab[hslot(fs, k)]; e; e = e->hnext)
    if (hsame(e, k)) return e;
  return NULL;
}

static void hremove(struct broker_files *fs, struct hentry *e) {
  struct hentry **pp = &fs->tab[hslot(fs, e)];
  while (*pp && *pp != e) pp = &(*pp)->hnext;
  if (*pp) *pp = e->hnext;
  lru_unlink(fs, e);
  free(e);
  fs->n--;
}

static void hinsert(struct broker_files *fs, const struct hentry *k,
                    const uint8_t *digest) {
  if (!fs->tab || fs->max_n == 0) return;
  struct hentry *e = hfind(fs, k);
  if (e) {
    memcpy(e->digest, digest, k->dlen);
    lru_unlink(fs, e);
    lru_front(fs, e);
    return;
  }
  /* an entry for an older state of the same file is dead weight */
  while (fs->n >= fs->max_n && fs->oldest) hremove(fs, fs->oldest);
  e = malloc(sizeof *e);
  if (!e) return; /* a cache miss later, nothing worse */
  *e = *k;
  memcpy(e->digest, digest, k->dlen);
  size_t s = hslot(fs, e);
  e->hnext = fs->tab[s];
  fs->tab[s] = e;
  lru_front(fs, e);
  fs->n++;
}

static size_t cache_bytes(const struct broker_files *fs) {
  return fs->n * sizeof(struct hentry) + fs->tab_cap * sizeof(struct hentry *);
}

/* ------------------------------------------------------- descriptors in -- */

/* The descriptor that came with the frame being handled, or -1. */
static int take_fd(struct broker_conn *c) {
  for (unsigned i = 0; i < c->nfds; i++) {
    if (c->fds[i].at == c->frame_at) {
      int fd = c->fds[i].fd;
      memmove(&c->fds[i], &c->fds[i + 1], (c->nfds - i - 1) * sizeof c->fds[0]);
      c->nfds--;
      return fd;
    }
  }
  return -1;
}

void broker_files_after_frame(struct broker *b, struct broker_conn *c) {
  /* descriptors that arrived with this frame (or an earlier one) and were
   * not taken: the client attached them to a request that takes none */
  unsigned k = 0;
  for (unsigned i = 0; i < c->nfds; i++) {
    if (c->fds[i].at <= c->frame_at) {
      close(c->fds[i].fd);
      b->stats.protocol_errors++;
      broker_log_limited("protocol_error conn=%llu pid=%d reason=\"a file "
                         "descriptor came with a request that takes none; "
                         "closed\"",
                         (unsigned long long)c->id, (int)c->pid);
    } else {
      c->fds[k++] = c->fds[i];
    }
  }
  c->nfds = k;
}

static int need_fd(struct broker *b, struct broker_conn *c, uint64_t id,
                   const char *what) {
  int fd = take_fd(c);
  if (fd >= 0) return fd;
  char msg[256];
  snprintf(msg, sizeof msg,
           "%s carries no file descriptor: open the file and pass the "
           "descriptor with SCM_RIGHTS on the frame's first byte (libshoal "
           "does this); the broker never opens paths",
           what);
  b->stats.protocol_errors++;
  reply_status(b, c, id, SHOAL_EPROTOCOL, msg);
  return -1;
}

/* fstat and require a regular file; replies itself on failure. */
static int check_regular(struct broker *b, struct broker_conn *c, uint64_t id,
                         int fd, struct stat *st) {
  if (fstat(fd, st) != 0) {
    int e = errno;
    char msg[160];
    snprintf(msg, sizeof msg, "fstat of the passed descriptor: %s",
             strerror(e));
    reply_status(b, c, id, -e, msg);
    return -1;
  }
  if (!S_ISREG(st->st_mode)) {
    const char *kind = S_ISDIR(st->st_mode)    ? "a directory"
                       : S_ISFIFO(st->st_mode) ? "a FIFO or pipe"
                       : S_ISSOCK(st->st_mode) ? "a socket"
                       : S_ISCHR(st->st_mode)  ? "a character device"
                       : S_ISBLK(st->st_mode)  ? "a block device"
                                               : "not a regular file";
    char msg[200];
    snprintf(msg, sizeof msg,
             "the passed descriptor is %s: hashing and tailing need a "
             "regular file",
             kind);
    reply_status(b, c, id, SHOAL_ENOTREG, msg);
    return -1;
  }
  return 0;
}

/* ------------------------------------------------------------- requests -- */

void broker_on_hash_file(struct broker *b, struct broker_conn *c, uint64_t id,
                         const Shoal__HashFile *h) {
  int fd = need_fd(b, c, id, "HashFile");
  if (fd < 0) return;
  int alg;
  size_t dlen;
  char err[256];
  int rc = futil_hash_parse(h->algorithm, h->has_digest_size ? h->digest_size : 0,
                            &alg, &dlen, err, sizeof err);
  if (rc) {
    close(fd);
    reply_status(b, c, id, rc, err);
    return;
  }
  struct stat st;
  if (check_regular(b, c, id, fd, &st) != 0) {
    close(fd);
    return;
  }
  struct broker_files *fs = b->files;
  struct hentry k;
  hkey(&k, &st, alg, dlen);
  struct hentry *e = hfind(fs, &k);
  if (e) {
    close(fd);
    b->stats.hash_hits++;
    lru_unlink(fs, e);
    lru_front(fs, e);
    reply_hash(b, c, id, alg, e->digest, dlen, (uint64_t)st.st_size, 1);
    return;
  }
  struct job *j = calloc(1, sizeof *j);
  if (!j) {
    close(fd);
    reply_status(b, c, id, -ENOMEM, "out of memory queueing the hash");
    return;
  }
  b->stats.hash_misses++;
  j->kind = JOB_HASH;
  j->c = c;
  j->id = id;
  j->fd = fd;
  j->alg = alg;
  j->dlen = dlen;
  c->blocked = 1; /* I5 */
  submit(b, j);
}

void broker_on_tail_log(struct broker *b, struct broker_conn *c, uint64_t id,
                        const Shoal__TailLog *t) {
  int fd = need_fd(b, c, id, "TailLog");
  if (fd < 0) return;
  struct stat st;
  if (check_regular(b, c, id, fd, &st) != 0) {
    close(fd);
    return;
  }
  size_t n = t->has_lines ? t->lines : 0;
  struct job *j = calloc(1, sizeof *j);
  if (!j) {
    close(fd);
    reply_status(b, c, id, -ENOMEM, "out of memory queueing the tail");
    return;
  }
  j->c = c;
  j->id = id;
  j->fd = -1;
  if (!(t->has_follow && t->follow)) {
    j->kind = JOB_TAIL;
    j->fd = fd;
    j->n = n;
    /* the reply must fit a frame: lines plus a few bytes of tags each */
    j->max_bytes = b->opt.max_frame - BROKER_FRAME_OVERHEAD;
    c->blocked = 1; /* I5 */
    submit(b, j);
    return;
  }
  struct broker_follower *f = calloc(1, sizeof *f);
  if (!f) {
    close(fd);
    free(j);
    reply_status(b, c, id, -ENOMEM, "out of memory starting the follow");
    return;
  }
  struct broker_files *fs = b->files;
  f->c = c;
  f->id = id;
  f->fd = fd;
  f->wd = -1;
  f->first_lines = n;
  f->from_start = t->has_from_start && t->from_start;
  if (fs->ifd >= 0) {
    /* before the first read, so no change after it is missed */
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    f->wd = inotify_add_watch(fs->ifd, path,
                              IN_MODIFY | IN_ATTRIB | IN_MOVE_SELF |
                                  IN_DELETE_SELF);
    if (f->wd < 0)
      broker_log_limited("follow_polled conn=%llu pid=%d reason=\"inotify: "
                         "%s; polling every %u ms instead\"",
                         (unsigned long long)c->id, (int)c->pid,
                         strerror(errno), b->opt.sweep_ms);
  }
  f->next = c->followers;
  c->followers = f;
  fs->nfollowers++;
  f->busy = 1;
  j->kind = JOB_FOLLOW;
  j->f = f;
  j->start = 1;
  j->first_lines = n;
  j->from_start = f->from_start;
  c->blocked = 1; /* I5: until the first reply */
  submit(b, j);
}

static void follower_free(struct broker *b, struct broker_follower *f) {
  struct broker_files *fs = b->files;
  if (f->wd >= 0 && fs->ifd >= 0) {
    /* watches are per inode: another follow of the same file shares it */
    int shared = 0;
    for (struct broker_conn *c = b->conns; c && !shared; c = c->next)
      for (struct broker_follower *g = c->followers; g; g = g->next)
        if (g != f && g->wd == f->wd) {
          shared = 1;
          break;
        }
    if (!shared) inotify_rm_watch(fs->ifd, f->wd);
  }
  if (f->fd >= 0) close(f->fd);
  fs->nfollowers--;
  free(f);
}

static void follower_unlink(struct broker_conn *c, struct broker_follower *f) {
  struct broker_follower **pp = &c->followers;
  while (*pp && *pp != f) pp = &(*pp)->next;
  if (*pp) *pp = f->next;
}

/* End a follow: its last message (end set), then the Cancel's reply. */
static void follow_end(struct broker *b, struct broker_follower *f) {
  struct broker_conn *c = f->c;
  reply_tail(b, c, f->id, NULL, 0, NULL, NULL, f->offset, 0, 0, 1);
  if (f->cancel) reply_status(b, c, f->cancel_id, 0, NULL);
  follower_unlink(c, f);
  follower_free(b, f);
}

void broker_on_cancel(struct broker *b, struct broker_conn *c, uint64_t id,
                      const Shoal__Cancel *x) {
  uint64_t target = x->has_target ? x->target : 0;
  struct broker_follower *f = c->followers;
  while (f && (f->id != target || f->cancel)) f = f->next;
  if (!f) {
    char msg[160];
    snprintf(msg, sizeof msg,
             "Cancel: no follow started by request %llu runs on this "
             "connection",
             (unsigned long long)target);
    reply_status(b, c, id, SHOAL_ENOTFOUND, msg);
    return;
  }
  f->cancel = 1;
  f->cancel_id = id;
  if (f->busy) {
    c->blocked = 1; /* I5: the Cancel's reply waits for the stream's end */
    return;
  }
  follow_end(b, f);
}

static void follow_read(struct broker *b, struct broker_follower *f) {
  struct job *j = calloc(1, sizeof *j);
  if (!j) {
    f->again = 1; /* the next tick tries again */
    return;
  }
  j->kind = JOB_FOLLOW;
  j->c = f->c;
  j->id = f->id;
  j->fd = -1;
  j->f = f;
  j->offset = f->offset;
  j->rotated = f->moved;
  f->busy = 1;
  f->again = 0;
  submit(b, j);
}

static int over_output(const struct broker *b, const struct broker_conn *c) {
  return c->out_len - c->out_off > b->opt.max_output;
}

/* Schedule a read unless one runs or the client is behind. */
static void follow_kick(struct broker *b, struct broker_follower *f) {
  if (f->dead || f->cancel) return;
  if (f->busy) {
    f->again = 1;
    return;
  }
  if (over_output(b, f->c)) {
    f->held = 1;
    f->again = 1;
    return;
  }
  follow_read(b, f);
}

static void follow_done(struct broker *b, struct job *j) {
  struct broker_follower *f = j->f;
  struct broker_conn *c = f->c;
  f->busy = 0;
  if (f->dead) {
    follower_free(b, f);
    return;
  }
  if (j->status) {
    /* the follow ends with the error (and its end message) */
    Shoal__TailReply t = SHOAL__TAIL_REPLY__INIT;
    t.has_end = 1;
    t.end = 1;
    Shoal__Response r = SHOAL__RESPONSE__INIT;
    r.has_id = 1;
    r.id = f->id;
    r.has_status = 1;
    r.status = j->status;
    r.error = j->err[0] ? j->err : (char *)shoal_strerror(j->status);
    r.body_case = SHOAL__RESPONSE__BODY_TAIL_LOG;
    r.tail_log = &t;
    broker_reply(b, c, &r);
    if (f->cancel) reply_status(b, c, f->cancel_id, 0, NULL);
    follower_unlink(c, f);
    follower_free(b, f);
    return;
  }
  if (j->start) {
    reply_tail(b, c, f->id, j->buf, j->nl, j->loff, j->llen, j->offset, 0, 1,
               0);
    f->started = 1;
  } else {
    if (j->truncated)
      reply_tail(b, c, f->id, NULL, 0, NULL, NULL, j->size,
                 SHOAL__TAIL_REPLY__EVENT__TRUNCATED, 0, 0);
    if (j->nl)
      reply_tail(b, c, f->id, j->buf, j->nl, j->loff, j->llen, j->offset, 0, 0,
                 0);
  }
  f->offset = j->next_off;
  /* ROTATED only after a read that began once the rotation was known
   * (j->rotated: f->moved when the job was made, or st_nlink 0 in its own
   * fstat) and reached the end: whatever was written to the old file
   * before the rename is then sent first. A rotation seen while a job ran
   * set f->again, so another read follows. */
  if (j->rotated) f->moved = 1;
  if (j->rotated && !j->more && !f->rotated_sent) {
    f->rotated_sent = 1;
    reply_tail(b, c, f->id, NULL, 0, NULL, NULL, f->offset,
               SHOAL__TAIL_REPLY__EVENT__ROTATED, 0, 0);
  }
  if (f->cancel) {
    follow_end(b, f);
    return;
  }
  if (j->more || f->again) follow_kick(b, f);
}

void broker_files_on_jobs(struct broker *b) {
  struct broker_files *fs = b->files;
  uint64_t v;
  /* I2: reset the eventfd first, then drain */
  while (read(fs->done_efd, &v, sizeof v) < 0 && errno == EINTR) {
  }
  struct cds_wfcq_node *node;
  while ((node = __cds_wfcq_dequeue_blocking(&fs->done_head,
                                             &fs->done_tail)) != NULL) {
    job_tsan_acquire(node);
    struct job *j = caa_container_of(node, struct job, node);
    struct broker_conn *c = j->c;
    fs->inflight--;
    c->jobs--;
    int unblock = 0;
    if (j->kind == JOB_FOLLOW) {
      /* a follow's first reply, or a Cancel waiting for its end, held the
       * connection (I5) */
      unblock = j->start || j->f->cancel;
      if (j->f->dead) { /* its connection closed meanwhile */
        j->f->busy = 0;
        follower_free(b, j->f);
      } else {
        follow_done(b, j);
      }
    } else if (!c->dead) {
      unblock = 1;
      if (j->kind == JOB_HASH) {
        if (j->status == 0) {
          struct hentry k;
          hkey(&k, &j->st, j->alg, j->dlen);
          hinsert(fs, &k, j->digest);
          b->stats.hash_bytes_read += (uint64_t)j->st.st_size;
          reply_hash(b, c, j->id, j->alg, j->digest, j->dlen,
                     (uint64_t)j->st.st_size, 0);
        } else {
          char msg[300];
          if (j->status == SHOAL_ECHANGED)
            snprintf(msg, sizeof msg,
                     "the file kept changing while it was hashed (size or "
                     "times differed after each of 3 reads); hash it once "
                     "it is quiet");
          else
            snprintf(msg, sizeof msg, "hashing the file: %s",
                     shoal_strerror(j->status));
          reply_status(b, c, j->id, j->status, msg);
        }
      } else if (j->kind == JOB_TAIL) {
        if (j->status == 0) {
          reply_tail(b, c, j->id, j->lines.buf, j->lines.n, j->lines.off,
                     j->lines.len, j->lines.start, 0, 0, 0);
        } else {
          char msg[300];
          if (j->status == SHOAL_ETOOBIG)
            snprintf(msg, sizeof msg,
                     "the last %zu lines exceed what one reply may carry "
                     "(--max-frame %llu bytes); ask for fewer lines",
                     j->n, (unsigned long long)b->opt.max_frame);
          else
            snprintf(msg, sizeof msg, "reading the file: %s",
                     shoal_strerror(j->status));
          reply_status(b, c, j->id, j->status, msg);
        }
      }
    }
    job_free(j);
    if (unblock && !c->dead && c->blocked) {
      c->blocked = 0;
      broker_conn_resume(b, c);
    }
  }
}

void broker_files_on_notify(struct broker *b) {
  struct broker_files *fs = b->files;
  _Alignas(struct inotify_event) char buf[4096];
  for (;;) {
    ssize_t r = read(fs->ifd, buf, sizeof buf);
    if (r <= 0) break;
    for (char *p = buf; p < buf + r;) {
      const struct inotify_event *ev = (const struct inotify_event *)p;
      p += sizeof *ev + ev->len;
      for (struct broker_conn *c = b->conns; c; c = c->next)
        for (struct broker_follower *f = c->followers; f; f = f->next) {
          if (f->wd != ev->wd) continue;
          if (ev->mask & (IN_MOVE_SELF | IN_DELETE_SELF)) f->moved = 1;
          if (ev->mask & IN_IGNORED) f->wd = -1; /* gone: poll from now */
          follow_kick(b, f);
        }
    }
  }
}

void broker_files_tick(struct broker *b) {
  for (struct broker_conn *c = b->conns; c; c = c->next)
    for (struct broker_follower *f = c->followers; f; f = f->next) {
      if (!f->started) continue;
      if (f->wd < 0 || f->held || f->again) follow_kick(b, f);
    }
}

void broker_files_conn_drained(struct broker *b, struct broker_conn *c) {
  for (struct broker_follower *f = c->followers; f; f = f->next)
    if (f->held && !over_output(b, c)) {
      f->held = 0;
      follow_kick(b, f);
    }
}

void broker_files_conn_closed(struct broker *b, struct broker_conn *c) {
  for (unsigned i = 0; i < c->nfds; i++) close(c->fds[i].fd);
  c->nfds = 0;
  struct broker_follower *f = c->followers;
  c->followers = NULL;
  while (f) {
    struct broker_follower *nx = f->next;
    f->next = NULL;
    if (f->busy) f->dead = 1; /* the completion frees it (I4) */
    else follower_free(b, f);
    f = nx;
  }
}

void broker_files_stats(struct broker *b, Shoal__StatsReply *r) {
  struct broker_files *fs = b->files;
  r->has_hash_cache_hits = 1;
  r->hash_cache_hits = b->stats.hash_hits;
  r->has_hash_cache_misses = 1;
  r->hash_cache_misses = b->stats.hash_misses;
  r->has_hash_bytes_read = 1;
  r->hash_bytes_read = b->stats.hash_bytes_read;
  if (!fs) return;
  r->has_hash_cache_entries = 1;
  r->hash_cache_entries = fs->n;
  r->has_hash_cache_bytes = 1;
  r->hash_cache_bytes = cache_bytes(fs);
  r->has_followers = 1;
  r->followers = fs->nfollowers;
  r->has_jobs_queued = 1;
  r->jobs_queued = fs->inflight;
  r->has_workers = 1;
  r->workers = fs->nthreads;
}

/* ------------------------------------------------------------ lifecycle -- */

int broker_files_init(struct broker *b) {
  struct broker_files *fs = calloc(1, sizeof *fs);
  if (!fs) return -ENOMEM;
  b->files = fs;
  fs->jobs_efd = fs->done_efd = fs->ifd = -1;
  cds_wfcq_init(&fs->jobs_head, &fs->jobs_tail);
  __cds_wfcq_init(&fs->done_head, &fs->done_tail);
  fs->jobs_efd = eventfd(0, EFD_SEMAPHORE | EFD_CLOEXEC);
  fs->done_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fs->jobs_efd < 0 || fs->done_efd < 0) return -errno;
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = (void *)&ev_jobs};
  if (epoll_ctl(b->epfd, EPOLL_CTL_ADD, fs->done_efd, &ev) != 0) return -errno;
  fs->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fs->ifd >= 0) {
    ev.data.ptr = (void *)&ev_notify;
    if (epoll_ctl(b->epfd, EPOLL_CTL_ADD, fs->ifd, &ev) != 0) {
      close(fs->ifd);
      fs->ifd = -1;
    }
  }
  if (fs->ifd < 0)
    broker_log("warning event=no_inotify detail=\"inotify unavailable (%s): "
               "follows are polled every %u ms\"",
               strerror(errno), b->opt.sweep_ms);

  /* hash cache: the table is sized for the entry bound once */
  uint64_t max_n = b->opt.hash_cache_entries;
  uint64_t per = sizeof(struct hentry) + sizeof(struct hentry *);
  if (max_n > b->opt.hash_cache_bytes / per)
    max_n = b->opt.hash_cache_bytes / per;
  fs->max_n = (size_t)max_n;
  if (fs->max_n) {
    size_t cap = 16;
    while (cap < fs->max_n) cap *= 2;
    fs->tab = calloc(cap, sizeof *fs->tab);
    if (!fs->tab) return -ENOMEM;
    fs->tab_cap = cap;
  }

  unsigned n = b->opt.workers ? b->opt.workers : BROKER_DEFAULT_WORKERS;
  fs->threads = calloc(n, sizeof *fs->threads);
  if (!fs->threads) return -ENOMEM;
  for (unsigned i = 0; i < n; i++) {
    int rc = pthread_create(&fs->threads[i], NULL, worker_main, fs);
    if (rc) return -rc;
    fs->nthreads++;
  }
  return 0;
}

void broker_files_shutdown(struct broker *b) {
  struct broker_files *fs = b->files;
  if (!fs) return;
  for (unsigned i = 0; i < fs->nthreads; i++) {
    struct job *j = calloc(1, sizeof *j);
    if (!j) break;
    j->kind = JOB_STOP;
    j->fd = -1;
    cds_wfcq_node_init(&j->node);
    job_tsan_release(&j->node);
    cds_wfcq_enqueue(&fs->jobs_head, &fs->jobs_tail, &j->node);
    uint64_t v = 1;
    while (write(fs->jobs_efd, &v, sizeof v) < 0 && errno == EINTR) {
    }
  }
  int joined = 1;
  for (unsigned i = 0; i < fs->nthreads; i++) {
    /* a worker deep in a 10 GB hash is not waited for past 2 s: the
     * process exits and takes it along */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 2;
    if (pthread_timedjoin_np(fs->threads[i], NULL, &ts) != 0) joined = 0;
  }
  if (!joined) {
    broker_log("workers_busy detail=\"a worker was still reading a file at "
               "shutdown; exiting without waiting for it\"");
    return; /* its queues and jobs may still be in use: leave them */
  }
  struct cds_wfcq_node *node;
  while ((node = __cds_wfcq_dequeue_blocking(&fs->done_head,
                                             &fs->done_tail)) != NULL) {
    job_tsan_acquire(node);
    struct job *j = caa_container_of(node, struct job, node);
    if (j->c) j->c->jobs--; /* I3: free_dead may free it now */
    if (j->kind == JOB_FOLLOW && j->f) {
      j->f->busy = 0;
      if (j->f->dead) follower_free(b, j->f);
    }
    job_free(j);
  }
  while (fs->newest) hremove(fs, fs->newest);
  free(fs->tab);
  free(fs->threads);
  if (fs->jobs_efd >= 0) close(fs->jobs_efd);
  if (fs->done_efd >= 0) close(fs->done_efd);
  if (fs->ifd >= 0) close(fs->ifd);
  cds_wfcq_destroy(&fs->jobs_head, &fs->jobs_tail);
  free(fs);
  b->files = NULL;
}
