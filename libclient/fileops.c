/*
 * fileops.c - the broker's file services from the client side: HashFile,
 * TailLog and following a file (shoal.h, "utilities"; shoal.proto).
 *
 * The client opens the file (O_NONBLOCK, so opening a FIFO can not hang:
 * the broker then answers SHOAL_ENOTREG) and passes the descriptor with the
 * request (conn.c:shoal__call_fd). The broker reads it with pread, so this
 * process's file offset does not move.
 *
 * A follower (shoal_follow) has a connection of its own: a second handle
 * opened with the first one's socket and timeouts and no reader slot. The
 * broker streams Responses with the TailLog's id on it, each holding
 * complete lines or one event; the follower hands them out one at a time.
 * Its state: `cur` is the Response being handed out (valid until the next
 * frame is read: the connection's arena), `idx` the next line in it, and
 * `event_done` whether its event went out. With SHOAL_FOLLOW_REOPEN, a
 * ROTATED event makes it open the path again; when that names another
 * file (st_dev/st_ino differ) the follower drops its connection and
 * follows the new file from offset 0 on a fresh one, so lines written to
 * the new file before it was noticed are not missed. Until the path
 * exists again, every call tries once more (at least every 100 ms), and
 * the old file's stream goes on; the one ROTATED event is handed out when
 * the new file is followed.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client-internal.h"
#include "futil.h"

/* How often a follower that waits for a rotated file's successor looks. */
#define REOPEN_POLL_MS 100

static int open_ro(shoal *c, const char *path, int *fd) {
  *fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (*fd >= 0) return 0;
  int e = errno;
  return shoal__errf(c, -e, "open %s: %s", path, strerror(e));
}

/* ------------------------------------------------------------- hashing -- */

SHOAL_EXPORT int shoal_hash_fd(shoal *c, int fd, const char *alg,
                               size_t digest_len, void *digest, size_t cap) {
  if (!c || !digest) return SHOAL_EINVAL;
  if (shoal__forked(c)) return SHOAL_EFORKED;
  if (fd < 0) return shoal__errf(c, SHOAL_EINVAL, "negative file descriptor");
  int alg_id;
  size_t len;
  char msg[256];
  if (futil_hash_parse(alg, digest_len, &alg_id, &len, msg, sizeof msg) != 0)
    return shoal__errf(c, SHOAL_EINVAL, "%s", msg);
  if (cap < len)
    return shoal__errf(c, SHOAL_ETOOBIG,
                       "a %s digest is %zu bytes; the buffer holds %zu",
                       futil_hash_name(alg_id), len, cap);
  Shoal__HashFile h = SHOAL__HASH_FILE__INIT;
  h.algorithm = (char *)futil_hash_name(alg_id);
  h.has_digest_size = 1;
  h.digest_size = (uint32_t)len;
  Shoal__Request rq = SHOAL__REQUEST__INIT;
  rq.body_case = SHOAL__REQUEST__BODY_HASH_FILE;
  rq.hash_file = &h;
  Shoal__Response *r;
  int err = shoal__call_fd(c, &rq, fd, &r);
  if (err) return err;
  if (r->body_case != SHOAL__RESPONSE__BODY_HASH_FILE || !r->hash_file ||
      !r->hash_file->has_digest || r->hash_file->digest.len != len)
    return shoal__errf(c, SHOAL_EPROTOCOL,
                       "the broker answered HashFile without a %zu-byte "
                       "digest",
                       len);
  memcpy(digest, r->hash_file->digest.data, len);
  return (int)len;
}

SHOAL_EXPORT int shoal_hash_file(shoal *c, const char *path, const char *alg,
                                 char *hex, size_t cap) {
  if (!c || !path || !hex) return SHOAL_EINVAL;
  if (shoal__forked(c)) return SHOAL_EFORKED;
  uint8_t d[SHOAL_HASH_MAX];
  int fd, err = open_ro(c, path, &fd);
  if (err) return err;
  int n = shoal_hash_fd(c, fd, alg, 0, d, sizeof d);
  close(fd);
  if (n < 0) return n;
  if (cap < 2 * (size_t)n + 1)
    return shoal__errf(c, SHOAL_ETOOBIG,
                       "the hex digest takes %d bytes with its NUL; the "
                       "buffer holds %zu",
                       2 * n + 1, cap);
  static const char xd[] = "0123456789abcdef";
  for (int i = 0; i < n; i++) {
    hex[2 * i] = xd[d[i] >> 4];
    hex[2 * i + 1] = xd[d[i] & 15];
  }
  hex[2 * n] = 0;
  return 2 * n;
}

/* --------------------------------------------------------------- tailing -- */

/* One allocation: the struct, the pointer and length arrays, then each
 * line NUL-terminated. */
static shoal_lines *lines_pack(size_t n, ProtobufCBinaryData *v) {
  size_t bytes = sizeof(shoal_lines) + n * (sizeof(char *) + sizeof(size_t));
  for (size_t i = 0; i < n; i++) bytes += v[i].len + 1;
  shoal_lines *l = malloc(bytes);
  if (!l) return NULL;
  l->n = n;
  l->line = (const char **)(l + 1);
  l->len = (size_t *)(l->line + n);
  char *p = (char *)(l->len + n);
  for (size_t i = 0; i < n; i++) {
    if (v[i].len) memcpy(p, v[i].data, v[i].len);
    p[v[i].len] = 0;
    l->line[i] = p;
    l->len[i] = v[i].len;
    p += v[i].len + 1;
  }
  return l;
}

SHOAL_EXPORT int shoal_tail_fd(shoal *c, int fd, size_t n, shoal_lines **out) {
  if (!out) return SHOAL_EINVAL;
  *out = NULL;
  if (!c) return SHOAL_EINVAL;
  if (shoal__forked(c)) return SHOAL_EFORKED;
  if (fd < 0) return shoal__errf(c, SHOAL_EINVAL, "negative file descriptor");
  if (n > UINT32_MAX) n = UINT32_MAX; /* "all": a reply never holds more */
  Shoal__TailLog t = SHOAL__TAIL_LOG__INIT;
  t.has_lines = 1;
  t.lines = (uint32_t)n;
  Shoal__Request rq = SHOAL__REQUEST__INIT;
  rq.body_case = SHOAL__REQUEST__BODY_TAIL_LOG;
  rq.tail_log = &t;
  Shoal__Response *r;
  int err = shoal__call_fd(c, &rq, fd, &r);
  if (err) return err;
  if (r->body_case != SHOAL__RESPONSE__BODY_TAIL_LOG || !r->tail_log)
    return shoal__errf(c, SHOAL_EPROTOCOL,
                       "the broker answered TailLog without a TailReply");
  shoal_lines *l = lines_pack(r->tail_log->n_lines, r->tail_log->lines);
  if (!l) return shoal__errf(c, -ENOMEM, "out of memory for the lines");
  *out = l;
  return 0;
}

SHOAL_EXPORT int shoal_tail(shoal *c, const char *path, size_t n,
                            shoal_lines **out) {
  if (!out) return SHOAL_EINVAL;
  *out = NULL;
  if (!c || !path) return SHOAL_EINVAL;
  if (shoal__forked(c)) return SHOAL_EFORKED;
  int fd, err = open_ro(c, path, &fd);
  if (err) return err;
  err = shoal_tail_fd(c, fd, n, out);
  close(fd);
  return err;
}

/* ------------------------------------------------------------- following -- */

struct shoal_follow {
  shoal *h;              /* the follower's own connection */
  char *path;
  unsigned flags;
  uint64_t id;           /* the TailLog's request id */
  dev_t dev;             /* the file followed now */
  ino_t ino;
  Shoal__Response *cur;  /* being handed out; NULL: read the next frame */
  size_t idx;
  int event_done;
  uint64_t line_off;     /* file offset of cur's line idx */
  int want_reopen;       /* rotated: open the path again when it exists */
  int ended;             /* the stream's end came: its status */
  int end_status;
  /* settings for reconnecting */
  char want_store[SHM_NAME_MAX + 1];
  char sock[sizeof(((struct sockaddr_un *)0)->sun_path)];
  int connect_timeout_ms, timeout_ms;
};

/* Open a connection and start following @fd: from its start (@from_start)
 * or with its last @n lines. On success f->h, f->id and f->cur (the first
 * reply) are set. */
static int follow_start(shoal *parent, struct shoal_follow *f, int fd,
                        size_t n, int from_start) {
  shoal_options o;
  memset(&o, 0, sizeof o);
  o.socket = f->sock;
  o.connect_timeout_ms = f->connect_timeout_ms;
  o.timeout_ms = f->timeout_ms;
  o.flags = SHOAL_OPEN_NO_SLOT;
  o.client = "libshoal follow";
  shoal *h = NULL;
  int err = shoal_open(&h, f->want_store[0] ? f->want_store : NULL, &o);
  if (err) {
    if (parent) shoal__errf(parent, err, "%s", shoal_last_error(NULL));
    return err;
  }
  Shoal__TailLog t = SHOAL__TAIL_LOG__INIT;
  t.has_lines = 1;
  t.lines = n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
  t.has_follow = 1;
  t.follow = 1;
  if (from_start) {
    t.has_from_start = 1;
    t.from_start = 1;
  }
  Shoal__Request rq = SHOAL__REQUEST__INIT;
  rq.body_case = SHOAL__REQUEST__BODY_TAIL_LOG;
  rq.tail_log = &t;
  Shoal__Response *r;
  err = shoal__call_fd(h, &rq, fd, &r);
  if (!err && (r->body_case != SHOAL__RESPONSE__BODY_TAIL_LOG ||
               !r->tail_log))
    err = shoal__errf(h, SHOAL_EPROTOCOL,
                      "the broker answered a follow without a TailReply");
  if (err) {
    if (parent) shoal__errf(parent, err, "%s", shoal_last_error(h));
    shoal_close(h);
    return err;
  }
  shoal_close(f->h);
  f->h = h;
  f->id = rq.id;
  f->cur = r;
  f->idx = 0;
  f->event_done = 1; /* the first reply carries lines only */
  f->line_off = r->tail_log->has_offset ? r->tail_log->offset : 0;
  f->ended = r->tail_log->has_end && r->tail_log->end;
  return 0;
}

SHOAL_EXPORT int shoal_follow_open(shoal *c, const char *path, size_t n,
                                   unsigned flags, shoal_follow **out) {
  if (!out) return SHOAL_EINVAL;
  *out = NULL;
  if (!c || !path) return SHOAL_EINVAL;
  if (shoal__forked(c)) return SHOAL_EFORKED;
  struct shoal_follow *f = calloc(1, sizeof *f);
  if (!f || !(f->path = strdup(path))) {
    free(f);
    return shoal__errf(c, -ENOMEM, "out of memory");
  }
  f->flags = flags;
  memcpy(f->want_store, c->want_store, sizeof f->want_store);
  memcpy(f->sock, c->sock, sizeof f->sock);
  f->connect_timeout_ms = c->connect_timeout_ms;
  f->timeout_ms = c->timeout_ms;
  int fd, err = open_ro(c, path, &fd);
  if (err) {
    free(f->path);
    free(f);
    return err;
  }
  struct stat st;
  if (fstat(fd, &st) == 0) {
    f->dev = st.st_dev;
    f->ino = st.st_ino;
  }
  err = follow_start(c, f, fd, n, 0);
  close(fd);
  if (err) {
    free(f->path);
    free(f);
    return err;
  }
  *out = f;
  return 0;
}

/* Rotated, with SHOAL_FOLLOW_REOPEN: follow the file now at the path if it
 * is another one. 1: switched; 0: not yet (no file, or the same one). */
static int try_reopen(struct shoal_follow *f) {
  int fd = open(f->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) return 0;
  struct stat st;
  if (fstat(fd, &st) != 0 || (st.st_dev == f->dev && st.st_ino == f->ino)) {
    close(fd);
    return 0;
  }
  int err = follow_start(NULL, f, fd, 0, 1);
  close(fd);
  if (err) return 0; /* the old stream goes on; tried again next call */
  f->dev = st.st_dev;
  f->ino = st.st_ino;
  f->want_reopen = 0;
  return 1;
}

SHOAL_EXPORT int shoal_follow_next(shoal_follow *f, int timeout_ms,
                                   shoal_follow_event *ev) {
  if (!f || !ev) return SHOAL_EINVAL;
  memset(ev, 0, sizeof *ev);
  int64_t waited = 0;
  for (;;) {
    if (f->want_reopen && try_reopen(f)) {
      ev->kind = SHOAL_FOLLOW_ROTATED;
      ev->data = f->path;
      ev->len = strlen(f->path);
      return 0;
    }
    Shoal__TailReply *t = f->cur ? f->cur->tail_log : NULL;
    if (t && f->idx < t->n_lines) {
      ProtobufCBinaryData *l = &t->lines[f->idx++];
      ev->kind = SHOAL_FOLLOW_LINE;
      ev->data = (const char *)l->data;
      ev->len = l->len;
      ev->offset = f->line_off;
      f->line_off += l->len + 1;
      return 0;
    }
    if (t && !f->event_done) {
      f->event_done = 1;
      if (t->has_event && t->event == SHOAL__TAIL_REPLY__EVENT__TRUNCATED) {
        ev->kind = SHOAL_FOLLOW_TRUNCATED;
        ev->offset = t->offset;
        return 0;
      }
      if (t->has_event && t->event == SHOAL__TAIL_REPLY__EVENT__ROTATED) {
        if ((f->flags & SHOAL_FOLLOW_REOPEN) && try_reopen(f)) {
          ev->kind = SHOAL_FOLLOW_ROTATED;
          ev->data = f->path;
          ev->len = strlen(f->path);
          return 0;
        }
        if (f->flags & SHOAL_FOLLOW_REOPEN) {
          /* reported once, when the new file is followed */
          f->want_reopen = 1;
          continue;
        }
        ev->kind = SHOAL_FOLLOW_ROTATED;
        ev->offset = t->offset;
        return 0;
      }
    }
    if (f->ended)
      return shoal__errf(f->h, f->end_status ? f->end_status : SHOAL_ECLOSED,
                         "%s",
                         f->end_status ? shoal_last_error(f->h)
                                       : "the broker ended the follow");
    f->cur = NULL;
    int slice = timeout_ms;
    if (f->want_reopen) {
      if (timeout_ms >= 0 && waited >= timeout_ms) return SHOAL_ETIMEOUT;
      slice = REOPEN_POLL_MS;
      if (timeout_ms >= 0 && timeout_ms - waited < slice)
        slice = (int)(timeout_ms - waited);
    }
    Shoal__Response *r;
    int err = shoal__next_frame(f->h, slice, &r);
    if (err == SHOAL_ETIMEOUT && f->want_reopen) {
      waited += slice;
      continue;
    }
    if (err) return err;
    if (!r->has_id || r->id != f->id)
      return shoal__errf(f->h, SHOAL_EPROTOCOL,
                         "the broker sent request %llu's reply on a "
                         "follower's connection",
                         (unsigned long long)(r->has_id ? r->id : 0));
    int st = shoal__status(f->h, r);
    if (st) {
      f->ended = 1;
      f->end_status = st;
      return st;
    }
    if (r->body_case != SHOAL__RESPONSE__BODY_TAIL_LOG || !r->tail_log)
      return shoal__errf(f->h, SHOAL_EPROTOCOL,
                         "the broker sent a follow message without a "
                         "TailReply");
    f->cur = r;
    f->idx = 0;
    f->event_done = !r->tail_log->has_event ||
                    r->tail_log->event == SHOAL__TAIL_REPLY__EVENT__EVENT_NONE;
    f->line_off = r->tail_log->has_offset ? r->tail_log->offset : f->line_off;
    if (r->tail_log->has_end && r->tail_log->end) f->ended = 1;
  }
}

SHOAL_EXPORT int shoal_follow_fd(const shoal_follow *f) {
  return f && f->h ? f->h->fd : -1;
}

SHOAL_EXPORT void shoal_follow_close(shoal_follow *f) {
  if (!f) return;
  shoal_close(f->h);
  free(f->path);
  free(f);
}

SHOAL_EXPORT int shoal_tail_follow(shoal *c, const char *path, size_t n,
                                   unsigned flags, int idle_ms,
                                   shoal_follow_fn fn, void *arg) {
  if (!c || !path || !fn) return SHOAL_EINVAL;
  shoal_follow *f;
  int err = shoal_follow_open(c, path, n, flags, &f);
  if (err) return err;
  if (idle_ms <= 0) idle_ms = 200;
  for (;;) {
    shoal_follow_event ev;
    err = shoal_follow_next(f, idle_ms, &ev);
    if (err == SHOAL_ETIMEOUT) {
      memset(&ev, 0, sizeof ev);
      ev.kind = SHOAL_FOLLOW_IDLE;
      err = 0;
    } else if (err) {
      shoal__errf(c, err, "%s", shoal_last_error(f->h));
      break;
    }
    int rc = fn(arg, &ev);
    if (rc) {
      err = rc;
      break;
    }
  }
  shoal_follow_close(f);
  return err;
}
