/*
 * conn.c - libshoal's connection to the broker: frames, requests, replies,
 * pipelining and reconnecting (DESIGN.md section 6, proto/shoal.proto).
 *
 * Frames: a u32 little-endian length, then one packed Request (out) or
 * Response (in). Requests are packed straight into the output buffer
 * (get_packed_size + pack: no malloc per request); replies are read into
 * the input buffer in large chunks, many per read(), and unpacked with a
 * bump allocator that is reset before each reply (no malloc per reply).
 *
 * Connection states (c->fd):
 *
 *     CLOSED (fd -1) --connect + Hello--> OPEN --EOF, EPIPE, ECONNRESET,
 *        ^                                 |     reply timeout, bad frame
 *        +---------------------------------+
 *
 *   - Only a request moves CLOSED to OPEN: reads never touch the socket,
 *     so they keep working while the broker is down. shoal_open connects
 *     once; a later request retries connecting for up to
 *     connect_timeout_ms (the broker may be restarting) and says Hello
 *     again with resume_slot = the slot this handle holds, so the broker
 *     keeps it; what the new HelloReply changes (another slot, a recreated
 *     store) is adopted by client.c:shoal__on_hello.
 *   - Any transport failure closes the socket at once: after a timeout or a
 *     malformed frame the stream can no longer be matched to requests.
 *
 * Request outcomes:
 *   - a write whose bytes could not be delivered at all (EPIPE on the first
 *     byte: the broker went away while we were idle) was never seen by a
 *     broker, so it is sent once more on a fresh connection; a pipeline
 *     starting on an idle connection checks it first (one MSG_PEEK recv)
 *     for the same reason;
 *   - a request that was delivered but whose reply never came returns
 *     SHOAL_EUNAVAIL and is never resent: it may have been applied;
 *   - every reply must echo its request's id (replies come in request
 *     order); a reply with id 0 is the broker's word about the connection
 *     itself (it could not parse a frame, it is shutting down): its status
 *     is returned and the connection closed.
 *
 * Pipelining: c->pending requests are outstanding; their ids are the
 * c->pending last ones handed out, so the oldest's is next_id - pending + 1.
 * A synchronous request first collects (and discards) them, so it never
 * shares the stream with them. While the output buffer is being written and
 * the socket is full, replies are read into the input buffer meanwhile, so
 * neither side can block the other (the broker bounds its output per
 * connection). After a connection loss, replies already read are still
 * handed out; the rest get SHOAL_EUNAVAIL; no reconnect happens while any
 * remain outstanding, so a reply is never matched across connections.
 *
 * Timeouts: the socket is blocking, with SO_RCVTIMEO = timeout_ms, so
 * waiting for a reply is one recv() (a write plus a read per round trip,
 * as hiredis does); writes use MSG_DONTWAIT plus poll(). The timeout bounds
 * each wait for progress, not a whole multi-read reply.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "client-internal.h"

/* ------------------------------------------------------------- arena ---- */

struct shoal__chunk {
  struct shoal__chunk *next;
  size_t used, cap;
  _Alignas(16) uint8_t data[];
};

/* Overflow chunks are at least this big, so a large reply (Stats, a scan
 * page) costs a few mallocs, not one per field. */
#define ARENA_CHUNK (64u << 10)

static void *arena_alloc(void *data, size_t n) {
  struct shoal__arena *a = data;
  if (n > SIZE_MAX - 64) return NULL;
  n = (n + 15) & ~(size_t)15;
  if (n <= SHOAL__ARENA_INLINE - a->used) {
    void *p = a->inline_buf + a->used;
    a->used += n;
    return p;
  }
  struct shoal__chunk *ch = a->extra;
  if (ch && n <= ch->cap - ch->used) {
    void *p = ch->data + ch->used;
    ch->used += n;
    return p;
  }
  size_t cap = n > ARENA_CHUNK ? n : ARENA_CHUNK;
  ch = malloc(sizeof *ch + cap);
  if (!ch) return NULL;
  ch->next = a->extra;
  ch->used = n;
  ch->cap = cap;
  a->extra = ch;
  return ch->data;
}

/* Everything is freed at once by arena_reset. */
static void arena_free(void *data, void *p) {
  (void)data;
  (void)p;
}

static void arena_reset(struct shoal__arena *a) {
  a->used = 0;
  while (a->extra) {
    struct shoal__chunk *ch = a->extra;
    a->extra = ch->next;
    free(ch);
  }
}

/* ----------------------------------------------------------- buffers ---- */

/* Buffers bigger than this are given back once empty, so one huge batch
 * or scan does not pin its memory for the handle's lifetime. */
#define BUF_KEEP (1u << 20)

static int buf_reserve(struct shoal__buf *b, size_t more) {
  if (b->cap - b->len >= more) return 0;
  if (b->head) { /* compact: the parsed or sent prefix is dead */
    memmove(b->p, b->p + b->head, b->len - b->head);
    b->len -= b->head;
    b->head = 0;
    if (b->cap - b->len >= more) return 0;
  }
  size_t cap = b->cap ? b->cap : 4096;
  while (cap - b->len < more) {
    if (cap > SIZE_MAX / 4) return -ENOMEM;
    cap *= 2;
  }
  uint8_t *p = realloc(b->p, cap);
  if (!p) return -ENOMEM;
  b->p = p;
  b->cap = cap;
  return 0;
}

static void buf_clear(struct shoal__buf *b) {
  b->head = b->len = 0;
  if (b->cap > BUF_KEEP) {
    free(b->p);
    b->p = NULL;
    b->cap = 0;
  }
}

static inline void put_le32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  p[2] = (uint8_t)(v >> 16);
  p[3] = (uint8_t)(v >> 24);
}

static inline uint32_t get_le32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}

/* ------------------------------------------------------------ setup ----- */

void shoal__conn_init(shoal *c) {
  c->fd = -1;
  c->alloc.alloc = arena_alloc;
  c->alloc.free = arena_free;
  c->alloc.allocator_data = &c->arena;
}

void shoal__conn_free(shoal *c) {
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  free(c->out.p);
  free(c->in.p);
  memset(&c->out, 0, sizeof c->out);
  memset(&c->in, 0, sizeof c->in);
  arena_reset(&c->arena);
}

/* Drop the connection. Queued requests are dropped with it; replies
 * already read stay in c->in for the pipelined requests they answer. */
void shoal__conn_close(shoal *c) {
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  buf_clear(&c->out);
}

/* ------------------------------------------------------------- time ----- */

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ms left until @deadline (-1: none) for poll(), at least 0. */
static int left_ms(int64_t deadline) {
  if (deadline < 0) return -1;
  int64_t d = deadline - now_ms();
  if (d <= 0) return 0;
  return d > INT_MAX ? INT_MAX : (int)d;
}

static int64_t deadline_in(int ms) {
  return ms < 0 ? -1 : now_ms() + ms;
}

/* SO_RCVTIMEO: how long one blocking recv() waits (0 = forever). */
static void set_rcvtimeo(shoal *c, int ms) {
  struct timeval tv = {0, 0};
  if (ms > 0) {
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
  } else if (ms == 0) {
    tv.tv_usec = 1000; /* already late: fail the next wait almost at once */
  }
  (void)setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  c->io_timeout_ms = ms;
}

/* ------------------------------------------------------------ errors ---- */

/* The connection is gone: keep what the socket still holds (replies the
 * broker sent before it went away answer pipelined requests), close it and
 * say so. */
static int lost(shoal *c, int sys, const char *what) {
  while (c->fd >= 0 && buf_reserve(&c->in, SHOAL__READ_CHUNK) == 0) {
    ssize_t r =
        recv(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len, MSG_DONTWAIT);
    if (r <= 0) break;
    c->in.len += (size_t)r;
  }
  shoal__conn_close(c);
  if (sys)
    return shoal__errf(c, SHOAL_EUNAVAIL,
                       "connection to the broker at %s lost (%s: %s)", c->sock,
                       what, strerror(sys));
  return shoal__errf(c, SHOAL_EUNAVAIL,
                     "connection to the broker at %s lost (%s)", c->sock, what);
}

static int timed_out(shoal *c, const char *what) {
  shoal__conn_close(c);
  return shoal__errf(c, SHOAL_ETIMEOUT,
                     "no %s from the broker at %s within %d ms; the "
                     "connection was dropped (raise shoal_options.timeout_ms "
                     "if the broker is just busy)",
                     what, c->sock, c->io_timeout_ms);
}

/* ------------------------------------------------------------ frames ---- */

int shoal__append(shoal *c, const Shoal__Request *rq) {
  size_t n = shoal__request__get_packed_size(rq);
  if (n > c->max_frame)
    return shoal__errf(c, SHOAL_ETOOBIG,
                       "request of %zu bytes exceeds the broker's maximum "
                       "frame of %llu bytes (shoald --max-frame); split it",
                       n, (unsigned long long)c->max_frame);
  if (buf_reserve(&c->out, 4 + n) != 0)
    return shoal__errf(c, -ENOMEM, "out of memory queueing %zu bytes", n);
  uint8_t *p = c->out.p + c->out.len;
  put_le32(p, (uint32_t)n);
  size_t w = shoal__request__pack(rq, p + 4);
  if (SHOAL_NEVER(w != n))
    return shoal__errf(c, SHOAL_EPROTOCOL,
                       "protobuf-c packed %zu bytes, "
                       "announced %zu",
                       w, n);
  c->out.len += 4 + n;
  return 0;
}

/* Read what the socket has into c->in: 1 (got bytes), 0 (nothing yet:
 * EINTR, or EAGAIN with MSG_DONTWAIT), SHOAL_ETIMEOUT (a blocking read
 * timed out; the caller decides), SHOAL_EUNAVAIL (lost; closed). */
static int read_some(shoal *c, int flags, size_t want) {
  if (want < SHOAL__READ_CHUNK) want = SHOAL__READ_CHUNK;
  if (buf_reserve(&c->in, want) != 0)
    return shoal__errf(c, -ENOMEM, "out of memory reading a reply");
  ssize_t r = recv(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len, flags);
  if (r > 0) {
    c->in.len += (size_t)r;
    return 1;
  }
  if (r == 0) return lost(c, 0, "the broker closed it");
  if (errno == EINTR) return 0;
  if (errno == EAGAIN || errno == EWOULDBLOCK)
    return (flags & MSG_DONTWAIT) ? 0 : SHOAL_ETIMEOUT;
  return lost(c, errno, "recv");
}

/* Write everything queued. *sent (optional) counts the bytes written, so
 * a caller can tell "nothing delivered" from "delivered, reply lost".
 * Returns 0, SHOAL_EUNAVAIL, SHOAL_ETIMEOUT (both close), -ENOMEM. */
static int flush_out(shoal *c, size_t *sent) {
  struct shoal__buf *o = &c->out;
  if (sent) *sent = 0;
  if (o->head == o->len) {
    o->head = o->len = 0;
    return 0;
  }
  if (c->fd < 0) {
    buf_clear(o);
    return shoal__errf(c, SHOAL_EUNAVAIL, "not connected to the broker");
  }
  int64_t deadline = -2; /* set on the first wait */
  while (o->head < o->len) {
    ssize_t w = send(c->fd, o->p + o->head, o->len - o->head,
                     MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w > 0) {
      o->head += (size_t)w;
      if (sent) *sent += (size_t)w;
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
      return lost(c, errno, "send");
    /* The socket is full. Wait for room, reading replies meanwhile: the
     * broker stops reading us when its output to us is full. */
    if (deadline == -2) deadline = deadline_in(c->io_timeout_ms);
    struct pollfd pf = {.fd = c->fd, .events = POLLOUT | POLLIN};
    int ms = left_ms(deadline);
    if (ms == 0) return timed_out(c, "room to send");
    int r = poll(&pf, 1, ms);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return lost(c, errno, "poll");
    if (r == 0) return timed_out(c, "room to send");
    if (pf.revents & POLLIN) {
      r = read_some(c, MSG_DONTWAIT, 0);
      if (r < 0) return r;
    }
  }
  o->head = o->len = 0;
  if (o->cap > BUF_KEEP) buf_clear(o);
  return 0;
}

int shoal__flush(shoal *c) {
  return flush_out(c, NULL);
}

/* The next reply, unpacked into the arena (valid until the next reply).
 * Sends what is queued before blocking. Returns 0, SHOAL_EUNAVAIL (no reply
 * will come), SHOAL_ETIMEOUT, SHOAL_EPROTOCOL (closed), -ENOMEM. */
static int next_reply(shoal *c, Shoal__Response **rsp) {
  for (;;) {
    size_t avail = c->in.len - c->in.head;
    uint32_t n = avail >= 4 ? get_le32(c->in.p + c->in.head) : 0;
    if (n > SHOAL__MAX_REPLY) {
      shoal__conn_close(c);
      buf_clear(&c->in);
      return shoal__errf(c, SHOAL_EPROTOCOL,
                         "the broker sent a frame of %u bytes (more than "
                         "the %u a reply may have); connection dropped",
                         n, SHOAL__MAX_REPLY);
    }
    if (avail >= 4 && avail - 4 >= n) {
      const uint8_t *p = c->in.p + c->in.head + 4;
      c->in.head += 4 + (size_t)n;
      if (c->in.head == c->in.len) c->in.head = c->in.len = 0;
      /* the frame's bytes stay put until the next read_some */
      arena_reset(&c->arena);
      Shoal__Response *r = shoal__response__unpack(&c->alloc, n, p);
      if (!r) {
        shoal__conn_close(c);
        buf_clear(&c->in);
        return shoal__errf(c, SHOAL_EPROTOCOL,
                           "malformed reply of %u bytes from the broker; "
                           "connection dropped (broker and libshoal built "
                           "from different shoal.proto?)",
                           n);
      }
      /* unpack copied what it needs: a big reply's buffer can go */
      if (c->in.head == c->in.len && c->in.cap > BUF_KEEP) buf_clear(&c->in);
      *rsp = r;
      return 0;
    }
    if (c->fd < 0) {
      buf_clear(&c->in);
      return shoal__errf(c, SHOAL_EUNAVAIL,
                         "the connection to the broker at %s was lost "
                         "before the reply came: the request may or may "
                         "not have been applied",
                         c->sock);
    }
    if (c->out.head < c->out.len) {
      int err = flush_out(c, NULL);
      if (err == SHOAL_ETIMEOUT || err == -ENOMEM) return err;
      continue; /* lost: replies read meanwhile are still good */
    }
    size_t want = avail >= 4 ? (size_t)n + 4 - avail : 0;
    int r = read_some(c, 0, want);
    if (r == SHOAL_ETIMEOUT) return timed_out(c, "reply");
    if (r < 0 && r != SHOAL_EUNAVAIL) return r;
  }
}

/* Positive, or outside the error bands, a status is not one of ours. */
int shoal__status(shoal *c, const Shoal__Response *r) {
  int st = r->has_status ? r->status : 0;
  if (st == 0) return 0;
  if (st > 0)
    return shoal__errf(c, SHOAL_EPROTOCOL,
                       "the broker answered status %d, not a shoal code", st);
  if (r->error && r->error[0])
    shoal__errf(c, st, "%s", r->error);
  else
    shoal__errf(c, st, "%s", shoal_strerror(st));
  return st;
}

/* The reply to request @id: 0 and *rsp (its status not yet looked at) or a
 * transport error. */
static int reply_for(shoal *c, uint64_t id, Shoal__Response **rsp) {
  Shoal__Response *r = NULL;
  int err = next_reply(c, &r);
  if (err) return err;
  *rsp = r;
  if (shoal_likely(r->has_id && r->id == id)) return 0;
  uint64_t got = r->has_id ? r->id : 0;
  shoal__conn_close(c);
  buf_clear(&c->in);
  if (got == 0) { /* about the connection, not a request */
    int st = shoal__status(c, r);
    if (st) return st;
  }
  return shoal__errf(c, SHOAL_EPROTOCOL,
                     "the broker answered request %llu when request %llu "
                     "was next; connection dropped",
                     (unsigned long long)got, (unsigned long long)id);
}

/* --------------------------------------------------- connect + Hello ---- */

static int connect_once(shoal *c, int64_t deadline) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    return shoal__errf(c, -errno, "socket(AF_UNIX): %s", strerror(errno));
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  memcpy(sa.sun_path, c->sock, strlen(c->sock)); /* length checked at open */
  int e = 0;
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    e = errno;
    if (e == EINPROGRESS || e == EINTR) {
      struct pollfd pf = {.fd = fd, .events = POLLOUT};
      int r;
      do
        r = poll(&pf, 1, left_ms(deadline));
      while (r < 0 && errno == EINTR);
      socklen_t len = sizeof e;
      if (r == 0)
        e = ETIMEDOUT;
      else if (r < 0)
        e = errno;
      else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) != 0)
        e = errno;
    }
  }
  if (e) {
    close(fd);
    if (e == ENOENT || e == ECONNREFUSED || e == EAGAIN)
      /* EAGAIN: the listen backlog is full, which a restart can cause */
      return shoal__errf(c, SHOAL_EUNAVAIL,
                         "connect %s: %s; is shoald running? start it "
                         "(shoald --name %s) or point SHOAL_RUNDIR / "
                         "SHOAL_SOCKET at its socket",
                         c->sock, strerror(e),
                         c->want_store[0] ? c->want_store : "default");
    if (e == ETIMEDOUT)
      return shoal__errf(c, SHOAL_ETIMEOUT, "connect %s: timed out", c->sock);
    if (e == EACCES || e == EPERM)
      /* the socket's mode refused us before SO_PEERCRED could: the same
       * denial as the broker's, with the same fix */
      return shoal__errf(c, SHOAL_EDENIED,
                         "connect %s: %s: the socket (mode 0660) admits the "
                         "broker's user and group only; run as one of them, "
                         "or start shoald with --allow-uid/--allow-gid",
                         c->sock, strerror(e));
    return shoal__errf(c, -e, "connect %s: %s", c->sock, strerror(e));
  }
  /* blocking from now on: replies are awaited with one recv() */
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
    e = errno;
    close(fd);
    return shoal__errf(c, -e, "fcntl(%s): %s", c->sock, strerror(e));
  }
  c->fd = fd;
  return 0;
}

static int hello(shoal *c, int64_t deadline) {
  Shoal__Hello h = SHOAL__HELLO__INIT;
  h.has_protocol = 1;
  h.protocol = SHOAL__PROTOCOL__PROTOCOL_V1;
  h.has_pid = 1;
  h.pid = (int32_t)getpid();
  h.has_want_slot = 1;
  h.want_slot = !(c->flags & SHOAL_OPEN_NO_SLOT);
  h.client = c->client;
  h.has_resume_slot = 1;
  h.resume_slot = h.want_slot ? c->slot : -1;
  Shoal__Request rq = SHOAL__REQUEST__INIT;
  rq.has_id = 1;
  rq.id = ++c->next_id;
  rq.body_case = SHOAL__REQUEST__BODY_HELLO;
  rq.hello = &h;

  set_rcvtimeo(c, left_ms(deadline));
  int err = shoal__append(c, &rq);
  if (!err) err = flush_out(c, NULL);
  if (err == SHOAL_EUNAVAIL && c->in.len - c->in.head >= 4) {
    /* A broker that refuses our credentials answers on accept and closes
     * before reading Hello, so sending it may fail (EPIPE) while the
     * refusal already sits in our buffer (lost() drained the socket).
     * Report that refusal, not a lost connection. */
    Shoal__Response *dr = NULL;
    if (next_reply(c, &dr) == 0 && dr) {
      int st = shoal__status(c, dr);
      if (st) return st;
    }
    err = SHOAL_EUNAVAIL;
  }
  Shoal__Response *r = NULL;
  if (!err) err = reply_for(c, rq.id, &r);
  if (!err) err = shoal__status(c, r);
  if (err) {
    if (err == SHOAL_ETIMEOUT)
      shoal__errf(c, err,
                  "no answer to Hello from the broker at %s within "
                  "the connect timeout",
                  c->sock);
    return err;
  }
  if (r->body_case != SHOAL__RESPONSE__BODY_HELLO || !r->hello)
    return shoal__errf(c, SHOAL_EPROTOCOL,
                       "the broker at %s answered Hello without a "
                       "HelloReply",
                       c->sock);
  const Shoal__HelloReply *hr = r->hello;
  if (hr->has_protocol && hr->protocol != SHOAL__PROTOCOL__PROTOCOL_V1)
    return shoal__errf(c, SHOAL_EVERSION,
                       "the broker at %s speaks protocol %u, this libshoal "
                       "%d: use matching versions",
                       c->sock, hr->protocol, SHOAL__PROTOCOL__PROTOCOL_V1);
  err = shoal__on_hello(c, hr);
  if (!err) set_rcvtimeo(c, c->timeout_ms);
  return err;
}

/* Connect and say Hello. @retry: keep trying while the broker is not
 * there (restarting) until connect_timeout_ms passes. Precondition: no
 * pipelined request outstanding (their replies would be lost). */
int shoal__connect(shoal *c, int retry) {
  if (SHOAL_NEVER(c->pending))
    return shoal__errf(c, SHOAL_EUNAVAIL, "replies still outstanding");
  shoal__conn_close(c);
  buf_clear(&c->in);
  buf_clear(&c->out);
  int64_t deadline = deadline_in(c->connect_timeout_ms);
  int backoff = 5; /* ms; doubles to 100: a restart takes tens of ms */
  for (;;) {
    int err = connect_once(c, deadline);
    if (!err) {
      err = hello(c, deadline);
      if (!err) return 0;
      shoal__conn_close(c);
      buf_clear(&c->in);
    }
    if (!retry || err != SHOAL_EUNAVAIL) return err;
    int left = left_ms(deadline);
    if (left == 0) return err;
    int ms = (left >= 0 && left < backoff) ? left : backoff;
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
    if (backoff < 100) backoff *= 2;
  }
}

/* ------------------------------------------------ descriptor passing --- */

/* Send the queued frame (it starts at c->out.head, the buffer holding
 * nothing before it) with @fd attached to its first byte (SCM_RIGHTS):
 * the broker ties a descriptor to the frame whose first byte it came
 * with. What the first sendmsg leaves is sent by flush_out. *sent counts
 * the bytes the first call wrote. */
static int send_fd(shoal *c, int fd, size_t *sent) {
  struct shoal__buf *o = &c->out;
  union {
    struct cmsghdr h;
    char buf[CMSG_SPACE(sizeof(int))];
  } cm;
  memset(&cm, 0, sizeof cm);
  struct iovec iov = {.iov_base = o->p + o->head, .iov_len = o->len - o->head};
  struct msghdr mh = {.msg_iov = &iov,
                      .msg_iovlen = 1,
                      .msg_control = cm.buf,
                      .msg_controllen = sizeof cm.buf};
  struct cmsghdr *h = CMSG_FIRSTHDR(&mh);
  h->cmsg_level = SOL_SOCKET;
  h->cmsg_type = SCM_RIGHTS;
  h->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(h), &fd, sizeof fd);
  *sent = 0;
  int64_t deadline = -2;
  for (;;) {
    ssize_t w = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w > 0) {
      o->head += (size_t)w;
      *sent = (size_t)w;
      return 0;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno == EBADF)
      /* our socket is fine (it was just used): @fd is the bad one */
      return shoal__errf(c, -EBADF, "the file descriptor %d is not open",
                         fd);
    if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
      return lost(c, errno, "sendmsg");
    if (deadline == -2) deadline = deadline_in(c->io_timeout_ms);
    struct pollfd pf = {.fd = c->fd, .events = POLLOUT};
    int ms = left_ms(deadline);
    if (ms == 0) return timed_out(c, "room to send");
    int r = poll(&pf, 1, ms);
    if (r < 0 && errno != EINTR) return lost(c, errno, "poll");
    if (r == 0) return timed_out(c, "room to send");
  }
}

int shoal__call_fd(shoal *c, Shoal__Request *rq, int fd,
                   Shoal__Response **rsp) {
  *rsp = NULL;
  shoal__drain(c);
  for (int attempt = 0;; attempt++) {
    int err;
    if (c->fd < 0 && (err = shoal__connect(c, 1)) != 0) return err;
    if (c->out.head < c->out.len && (err = flush_out(c, NULL)) != 0)
      return err;
    rq->has_id = 1;
    rq->id = c->next_id + 1;
    if ((err = shoal__append(c, rq)) != 0) return err;
    c->next_id++;
    size_t sent;
    err = send_fd(c, fd, &sent);
    /* as shoal__call: nothing reached a broker, so resending is safe */
    if (err == SHOAL_EUNAVAIL && sent == 0 && attempt == 0) continue;
    if (!err) err = flush_out(c, NULL);
    if (err) {
      if (err == -EBADF) buf_clear(&c->out);
      return err;
    }
    if ((err = reply_for(c, rq->id, rsp)) != 0) return err;
    return shoal__status(c, *rsp);
  }
}

int shoal__next_frame(shoal *c, int timeout_ms, Shoal__Response **rsp) {
  *rsp = NULL;
  size_t avail = c->in.len - c->in.head;
  uint32_t n = avail >= 4 ? get_le32(c->in.p + c->in.head) : 0;
  if (!(avail >= 4 && avail - 4 >= n)) {
    if (c->fd < 0)
      return shoal__errf(c, SHOAL_EUNAVAIL,
                         "the connection to the broker at %s was lost",
                         c->sock);
    struct pollfd pf = {.fd = c->fd, .events = POLLIN};
    int r = poll(&pf, 1, timeout_ms);
    if (r < 0 && errno == EINTR) return -EINTR;
    if (r < 0) return lost(c, errno, "poll");
    if (r == 0) return SHOAL_ETIMEOUT;
  }
  return next_reply(c, rsp);
}

/* ----------------------------------------------------------- requests --- */

int shoal__call(shoal *c, Shoal__Request *rq, Shoal__Response **rsp) {
  *rsp = NULL;
  shoal__drain(c);
  for (int attempt = 0;; attempt++) {
    int err;
    if (c->fd < 0 && (err = shoal__connect(c, 1)) != 0) return err;
    rq->has_id = 1;
    rq->id = c->next_id + 1;
    if ((err = shoal__append(c, rq)) != 0) return err;
    c->next_id++;
    size_t sent;
    err = flush_out(c, &sent);
    /* Nothing of it reached any broker (the old one went away while we
     * were idle): resending on a fresh connection is safe. */
    if (err == SHOAL_EUNAVAIL && sent == 0 && attempt == 0) continue;
    if (err) return err;
    if ((err = reply_for(c, rq->id, rsp)) != 0) return err;
    return shoal__status(c, *rsp);
  }
}

int shoal__pipe_begin(shoal *c) {
  if (c->fd >= 0 && c->pending == 0) {
    /* A new pipeline on an idle connection: if the broker went away
     * meanwhile, reconnect now rather than lose the whole burst (a
     * synchronous request finds out by EPIPE and resends instead). One
     * system call per burst, not per request. */
    char b;
    ssize_t r = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (r == 0 ||
        (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
      shoal__conn_close(c);
  }
  if (c->fd >= 0) return 0;
  if (c->pending)
    return shoal__errf(c, SHOAL_EUNAVAIL,
                       "the connection to the broker was lost with %zu "
                       "pipelined requests outstanding; collect them with "
                       "shoal_pipe_recv, then appends reconnect",
                       c->pending);
  return shoal__connect(c, 1);
}

int shoal__pipe_next(shoal *c, Shoal__Response **rsp) {
  *rsp = NULL;
  if (!c->pending)
    return shoal__errf(c, SHOAL_EINVAL, "no pipelined request outstanding");
  uint64_t id = c->next_id - c->pending + 1;
  c->pending--;
  int err = reply_for(c, id, rsp);
  if (err) return err;
  return shoal__status(c, *rsp);
}

int shoal__drain(shoal *c) {
  while (c->pending) {
    Shoal__Response *r;
    (void)shoal__pipe_next(c, &r);
  }
  return 0;
}
