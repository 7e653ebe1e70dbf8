/*
 * loop.c - shoald's event loop: one epoll, one thread, the single writer.
 *
 * The loop owns every descriptor: the listening socket, a signalfd
 * (SIGTERM, SIGINT, SIGHUP), a timerfd (the sweeps) and the connections.
 * Everything is level-triggered: a connection is in EPOLLIN while it may
 * be read and in EPOLLOUT only while a write could not finish, so a state
 * change is an epoll_ctl and nothing is ever missed because a handler
 * stopped early.
 *
 * One turn:
 *   1. epoll_wait (timeout 0 when work is left over from the last turn);
 *   2. per ready connection: one read() of up to the free space of its
 *      input buffer (64 KiB or the frame being received), then decode and
 *      serve up to BROKER_FRAMES_PER_TURN complete frames; each reply is
 *      packed straight into the connection's output buffer;
 *   3. connections whose budget ran out (the pending list) get another
 *      BROKER_FRAMES_PER_TURN;
 *   4. every connection with new output (the dirty list) gets exactly one
 *      send(): a depth-64 pipeline is answered with one system call.
 * Adaptive busy-poll (--spin-us, default 50): when the previous wait
 * ended within spin-us, step 1 polls with timeout 0 for up to spin-us
 * before it blocks. A client waiting for its reply sends the next request
 * within microseconds; catching it without a sleep spares both sides the
 * scheduler's wake-up latency (tens of microseconds on a VM's idle vCPU),
 * which is most of an unpipelined round trip. The cost is bounded: once a
 * wait outlasts 4 x spin-us (the client went quiet, or it can not run
 * because the core is busy) the loop blocks and stops spinning until
 * traffic is back-to-back again, so an idle or lightly used broker spins
 * at most spin-us per quiet period. --spin-us 0 turns it off.
 *
 * Ordering: frames of a connection are decoded in arrival order and each
 * reply is appended when its request has been served, so replies leave in
 * request order. A write's reply is appended only after shm_put/shm_del/
 * shm_cas/shm_batch returned, and those publish commit_seq (release) before
 * returning: a client that has the reply and then begins a read section
 * sees the write (DESIGN section 6).
 *
 * Bounds (who can make the broker allocate, and how much):
 *   - input: a frame's length prefix is checked against --max-frame before
 *     a byte of it is buffered; the buffer grows by doubling only when full,
 *     so it never exceeds twice what the peer actually sent, nor one frame;
 *   - output: when a connection's unsent output passes --max-output, the
 *     connection leaves EPOLLIN and its buffered frames stay undecoded until
 *     the client has read the output down to half; a client that never
 *     reads costs at most --max-output plus one reply;
 *   - a connection that must close after an error reply, or any connection
 *     at shutdown, gets BROKER_CLOSE_GRACE_MS / BROKER_DRAIN_MS to read it.
 *
 * Closing: a connection closed during a turn is only marked dead (its
 * epoll registration and descriptor are gone at once) and freed at the end
 * of the turn, so an event already returned by epoll_wait for it is
 * skipped, never a use after free.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/types.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "broker-internal.h"

static const int ev_listen = BROKER_EV_LISTEN;
static const int ev_signal = BROKER_EV_SIGNAL;
static const int ev_timer = BROKER_EV_TIMER;

/* How many connections to accept per turn before serving the others. */
#define ACCEPT_PER_TURN 64
/* A connection's buffers shrink back to this when they empty after a big
 * frame or reply, so one large value does not pin memory forever. */
#define SHRINK_ABOVE (1u << 20)

static uint32_t le32(const char *p) {
  const uint8_t *u = (const uint8_t *)p;
  return (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 |
         (uint32_t)u[3] << 24;
}

static void put_le32(char *p, uint32_t v) {
  uint8_t *u = (uint8_t *)p;
  u[0] = (uint8_t)v;
  u[1] = (uint8_t)(v >> 8);
  u[2] = (uint8_t)(v >> 16);
  u[3] = (uint8_t)(v >> 24);
}

/* ---------------------------------------------------------- bookkeeping -- */

static size_t out_pending(const struct broker_conn *c) {
  return c->out_len - c->out_off;
}

static int can_read(const struct broker_conn *c) {
  return !c->dead && !c->eof && !c->closing && !c->paused && !c->blocked;
}

static void update_events(struct broker *b, struct broker_conn *c) {
  if (c->dead) return;
  uint32_t want = 0;
  if (can_read(c)) want |= EPOLLIN;
  if (out_pending(c) && c->events & EPOLLOUT) want |= EPOLLOUT; /* kept by flush */
  if (want == c->events) return;
  struct epoll_event ev = {.events = want, .data.ptr = c};
  if (epoll_ctl(b->epfd, EPOLL_CTL_MOD, c->fd, &ev) == 0) c->events = want;
}

static void set_epollout(struct broker *b, struct broker_conn *c, int on) {
  uint32_t want = (c->events & ~(uint32_t)EPOLLOUT) | (on ? EPOLLOUT : 0);
  if (want == c->events) return;
  struct epoll_event ev = {.events = want, .data.ptr = c};
  if (epoll_ctl(b->epfd, EPOLL_CTL_MOD, c->fd, &ev) == 0) c->events = want;
}

static void mark_dirty(struct broker *b, struct broker_conn *c) {
  if (c->in_dirty || c->dead) return;
  c->in_dirty = 1;
  c->dirty_next = b->dirty;
  b->dirty = c;
}

static void mark_pending(struct broker *b, struct broker_conn *c) {
  if (c->in_pending || c->dead) return;
  c->in_pending = 1;
  c->pending_next = b->pending;
  b->pending = c;
}

void broker_conn_close(struct broker *b, struct broker_conn *c,
                       const char *reason) {
  if (c->dead) return;
  if (!b->opt.quiet)
    broker_log("close conn=%llu pid=%d uid=%u slot=%d reason=\"%s\"",
               (unsigned long long)c->id, (int)c->pid, (unsigned)c->uid,
               c->slot, reason);
  broker_lease_on_close(b, c);
  broker_files_conn_closed(b, c);
  epoll_ctl(b->epfd, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  c->fd = -1;
  c->dead = 1;
  if (c->prev) c->prev->next = c->next;
  else b->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  b->nconns--;
  c->dead_next = b->dead;
  b->dead = c;
}

/* Free what was closed, except connections still threaded on the dirty
 * or pending list (closed after they were queued): those lists skip dead
 * entries and unthread them, and the next turn frees them; and those a
 * worker's job still points at (files.c, I3): freed at a later turn, once
 * the job has come back. */
static void free_dead(struct broker *b) {
  struct broker_conn *keep = NULL;
  while (b->dead) {
    struct broker_conn *c = b->dead;
    b->dead = c->dead_next;
    if (c->in_dirty || c->in_pending || c->jobs) {
      c->dead_next = keep;
      keep = c;
      continue;
    }
    free(c->in);
    free(c->out);
    free(c);
  }
  b->dead = keep;
}

void broker_conn_close_after_flush(struct broker *b, struct broker_conn *c) {
  if (c->closing) return;
  c->closing = 1;
  c->close_by_ms = broker_mono_ms() + BROKER_CLOSE_GRACE_MS;
  mark_dirty(b, c);
  update_events(b, c);
}

/* ------------------------------------------------------------- output -- */

static int out_reserve(struct broker_conn *c, size_t need) {
  if (c->out_cap - c->out_len >= need) return 0;
  if (c->out_off) { /* slide the unsent bytes to the front first */
    memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
    c->out_len -= c->out_off;
    c->out_off = 0;
    if (c->out_cap - c->out_len >= need) return 0;
  }
  size_t cap = c->out_cap ? c->out_cap : BROKER_READ_CHUNK;
  while (cap - c->out_len < need) {
    if (cap > SIZE_MAX / 2) return -ENOMEM;
    cap *= 2;
  }
  char *p = realloc(c->out, cap);
  if (!p) return -ENOMEM;
  c->out = p;
  c->out_cap = cap;
  return 0;
}

int broker_reply(struct broker *b, struct broker_conn *c,
                 const Shoal__Response *resp) {
  if (c->dead) return SHOAL_ECLOSED;
  size_t n = protobuf_c_message_get_packed_size(&resp->base);
  if (resp->has_status && resp->status) broker_count_error(b, resp->status);
  if (BROKER_NEVER(n > UINT32_MAX) || out_reserve(c, 4 + n) != 0) {
    /* No memory for the reply: the stream can not stay in order, so the
     * connection goes (the client sees EUNAVAIL and may retry). */
    broker_log("reply_dropped conn=%llu bytes=%zu reason=\"out of memory\"",
               (unsigned long long)c->id, n);
    c->closing = 1;
    c->close_by_ms = 0; /* at once */
    mark_dirty(b, c);
    return -ENOMEM;
  }
  put_le32(c->out + c->out_len, (uint32_t)n);
  size_t packed = protobuf_c_message_pack(&resp->base,
                                          (uint8_t *)c->out + c->out_len + 4);
  (void)packed; /* == n: both walk the same message */
  c->out_len += 4 + n;
  mark_dirty(b, c);
  return 0;
}

static size_t put_varint(uint8_t *p, uint64_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    p[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  p[n++] = (uint8_t)v;
  return n;
}

int broker_reply_ok_version(struct broker *b, struct broker_conn *c,
                            uint64_t id, uint64_t version) {
  /* tag(1) varint id, tag(2) sint32 0, tag(4) varint version: <= 24 bytes */
  if (c->dead) return SHOAL_ECLOSED;
  if (out_reserve(c, 4 + 24) != 0) {
    Shoal__Response r = SHOAL__RESPONSE__INIT; /* takes the failure path */
    return broker_reply(b, c, &r);
  }
  uint8_t *p = (uint8_t *)c->out + c->out_len + 4;
  size_t n = 0;
  p[n++] = 0x08; /* field 1 (id), varint */
  n += put_varint(p + n, id);
  p[n++] = 0x10; /* field 2 (status), sint32 zigzag 0 */
  p[n++] = 0x00;
  p[n++] = 0x20; /* field 4 (version), varint */
  n += put_varint(p + n, version);
  put_le32(c->out + c->out_len, (uint32_t)n);
  c->out_len += 4 + n;
  mark_dirty(b, c);
  return 0;
}

/* -------------------------------------------------------------- input -- */

/* The key of a Put, Delete or Cas frame, read straight off the wire
 * without decoding it (protobuf: Request field 11/12/13, a length-delimited
 * message whose field 1 is the key). 0 if the frame is anything else or
 * does not parse: this only feeds a prefetch hint, so it gives up early. */
static int peek_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
  uint64_t x = 0;
  for (int shift = 0; shift < 64 && *p < end; shift += 7) {
    uint8_t byte = *(*p)++;
    x |= (uint64_t)(byte & 0x7f) << shift;
    if (!(byte & 0x80)) {
      *v = x;
      return 1;
    }
  }
  return 0;
}

static int peek_field(const uint8_t **p, const uint8_t *end, uint64_t *field,
                      const uint8_t **val, uint64_t *vlen) {
  uint64_t tag, v;
  if (!peek_varint(p, end, &tag)) return 0;
  *field = tag >> 3;
  switch (tag & 7) {
  case 0: /* varint */
    return peek_varint(p, end, &v) ? (*vlen = 0, *val = NULL, 1) : 0;
  case 2: /* length-delimited */
    if (!peek_varint(p, end, &v) || v > (uint64_t)(end - *p)) return 0;
    *val = *p;
    *vlen = v;
    *p += v;
    return 1;
  default:
    return 0;
  }
}

static int peek_write_key(const uint8_t *f, size_t len, shm_op *op) {
  const uint8_t *p = f, *end = f + len, *val, *body = NULL;
  uint64_t field, vlen, blen = 0;
  while (p < end) {
    if (!peek_field(&p, end, &field, &val, &vlen)) return 0;
    if (field >= 11 && field <= 13 && val) {
      body = val;
      blen = vlen;
    }
  }
  if (!body) return 0;
  p = body;
  end = body + blen;
  while (p < end) {
    if (!peek_field(&p, end, &field, &val, &vlen)) return 0;
    if (field == 1 && val) {
      op->key = val;
      op->klen = (size_t)vlen;
      return 1;
    }
  }
  return 0;
}

/* Before serving a run of pipelined frames, prefetch what their writes will
 * touch (shm_prefetch_ops): one put of a random key among a million waits
 * for two or three cache misses, and a run of them would wait for each in
 * turn. Only complete frames within this turn's budget are looked at. */
#define PREFETCH_FRAMES 64
static void prefetch_writes(struct broker *b, struct broker_conn *c) {
  shm_op ops[PREFETCH_FRAMES];
  size_t n = 0, off = c->in_off;
  while (n < PREFETCH_FRAMES && c->in_len - off >= 4) {
    uint32_t len = le32(c->in + off);
    if (len > b->opt.max_frame || c->in_len - off - 4 < len) break;
    memset(&ops[n], 0, sizeof ops[n]);
    if (peek_write_key((const uint8_t *)c->in + off + 4, len, &ops[n])) n++;
    off += 4 + (size_t)len;
  }
  if (n >= 2) shm_prefetch_ops(b->store, ops, n);
}

/* Decode and serve complete frames, at most BROKER_FRAMES_PER_TURN. */
static void conn_process(struct broker *b, struct broker_conn *c) {
  unsigned n = 0;
  if (c->in_len - c->in_off > 8 && !c->closing && !c->blocked)
    prefetch_writes(b, c);
  while (!c->dead && !c->closing && !c->blocked) {
    if (out_pending(c) > b->opt.max_output) {
      /* The client is not reading: stop decoding (and reading) until it
       * has taken half of what waits; conn_flush resumes it. */
      c->paused = 1;
      break;
    }
    size_t avail = c->in_len - c->in_off;
    if (avail < 4) break;
    uint32_t len = le32(c->in + c->in_off);
    if (len > b->opt.max_frame) {
      b->stats.protocol_errors++;
      broker_log_limited("protocol_error conn=%llu pid=%d reason=\"frame of "
                         "%u bytes over --max-frame %llu\"",
                         (unsigned long long)c->id, (int)c->pid, len,
                         (unsigned long long)b->opt.max_frame);
      broker_reply_error(
          b, c, 0, SHOAL_ETOOBIG,
          "frame of %u bytes exceeds the broker's --max-frame of %llu bytes; "
          "send smaller values (or split the batch), or restart shoald with a "
          "larger --max-frame",
          len, (unsigned long long)b->opt.max_frame);
      c->in_off = c->in_len; /* the rest of the stream can not be trusted */
      broker_conn_close_after_flush(b, c);
      break;
    }
    if (avail - 4 < len) break; /* incomplete: wait for the rest */
    if (n == BROKER_FRAMES_PER_TURN) {
      mark_pending(b, c);
      break;
    }
    const uint8_t *frame = (const uint8_t *)c->in + c->in_off + 4;
    c->frame_at = c->in_base + c->in_off;
    c->in_off += 4 + (size_t)len;
    n++;
    broker_handle_frame(b, c, frame, len);
    if (c->nfds) broker_files_after_frame(b, c);
  }
  if (c->dead) return;
  if (c->in_off == c->in_len) {
    c->in_base += c->in_len;
    c->in_off = c->in_len = 0;
    if (c->in_cap > SHRINK_ABOVE) {
      free(c->in);
      c->in = NULL;
      c->in_cap = 0;
    }
  }
  /* The peer stopped sending: once nothing decodable is left, close after
   * the replies are out. A partial frame is dropped (a client that vanished
   * mid-frame). */
  if (c->eof && !c->closing && !c->paused && !c->in_pending && !c->blocked)
    broker_conn_close_after_flush(b, c);
  update_events(b, c);
}

void broker_conn_resume(struct broker *b, struct broker_conn *c) {
  if (c->dead) return;
  conn_process(b, c);
  if (!c->dead) update_events(b, c);
}

/* Queue the descriptors a recvmsg brought, tagged with the stream offset
 * of its first byte; too many (a client passing descriptors without
 * requests to use them) or a truncated list closes the connection. */
static void conn_take_fds(struct broker *b, struct broker_conn *c,
                          struct msghdr *mh, uint64_t at) {
  int over = (mh->msg_flags & MSG_CTRUNC) != 0;
  for (struct cmsghdr *h = CMSG_FIRSTHDR(mh); h; h = CMSG_NXTHDR(mh, h)) {
    if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS) continue;
    size_t n = (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < n; i++) {
      int fd;
      memcpy(&fd, CMSG_DATA(h) + i * sizeof(int), sizeof fd);
      if (c->nfds < BROKER_CONN_FDS) {
        c->fds[c->nfds].fd = fd;
        c->fds[c->nfds].at = at;
        c->nfds++;
      } else {
        close(fd);
        over = 1;
      }
    }
  }
  if (over) {
    b->stats.protocol_errors++;
    broker_log_limited("protocol_error conn=%llu pid=%d reason=\"more than %d "
                       "file descriptors passed ahead of their requests\"",
                       (unsigned long long)c->id, (int)c->pid,
                       BROKER_CONN_FDS);
    broker_reply_error(b, c, 0, SHOAL_EPROTOCOL,
                       "more than %d file descriptors were passed ahead of "
                       "the requests that take them (one per HashFile or "
                       "TailLog frame); closing",
                       BROKER_CONN_FDS);
    broker_conn_close_after_flush(b, c);
  }
}

/* One read() into the free space of the input buffer. */
static void conn_read(struct broker *b, struct broker_conn *c) {
  size_t avail = c->in_len - c->in_off;
  if (c->in_off && c->in_cap - c->in_len < BROKER_READ_CHUNK / 4) {
    memmove(c->in, c->in + c->in_off, avail);
    c->in_base += c->in_off;
    c->in_off = 0;
    c->in_len = avail;
  }
  if (c->in_len == c->in_cap) {
    size_t cap;
    if (!c->in) {
      cap = BROKER_READ_CHUNK;
    } else {
      /* Full. Frames waiting for their turn: do not read more now. */
      if (avail < 4) return; /* cannot happen: the buffer holds >= 64 KiB */
      size_t frame = 4 + (size_t)le32(c->in + c->in_off);
      if (frame <= avail) return;
      /* A frame larger than the buffer (its length was checked against
       * --max-frame by conn_process): double, but never past the frame. */
      cap = c->in_cap * 2;
      if (cap > frame) cap = frame;
    }
    char *p = realloc(c->in, cap);
    if (!p) {
      broker_log("read_dropped conn=%llu reason=\"out of memory for a %zu-byte "
                 "input buffer\"",
                 (unsigned long long)c->id, cap);
      broker_conn_close(b, c, "out of memory");
      return;
    }
    c->in = p;
    c->in_cap = cap;
  }
  /* recvmsg, for descriptors passed with HashFile/TailLog (files.c). A
   * unix stream socket never returns data from past a message that
   * carries descriptors together with data before it, so descriptors
   * always belong to the first byte this call returns. */
  struct iovec iov = {.iov_base = c->in + c->in_len,
                      .iov_len = c->in_cap - c->in_len};
  union {
    struct cmsghdr h;
    char buf[CMSG_SPACE(sizeof(int) * BROKER_CONN_FDS)];
  } cm;
  struct msghdr mh = {.msg_iov = &iov,
                      .msg_iovlen = 1,
                      .msg_control = cm.buf,
                      .msg_controllen = sizeof cm.buf};
  ssize_t r = recvmsg(c->fd, &mh, MSG_CMSG_CLOEXEC);
  if (r > 0 && (mh.msg_controllen || (mh.msg_flags & MSG_CTRUNC)))
    conn_take_fds(b, c, &mh, c->in_base + c->in_len);
  if (c->dead) return;
  if (r > 0) {
    c->in_len += (size_t)r;
    b->stats.bytes_in += (uint64_t)r;
    return;
  }
  if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (r < 0 && errno != ECONNRESET) {
    char why[128];
    snprintf(why, sizeof why, "read: %s", strerror(errno));
    broker_conn_close(b, c, why);
    return;
  }
  /* EOF or reset: no more requests; what is buffered is still served */
  c->eof = 1;
}

/* ------------------------------------------------------------- flushing -- */

static void conn_flush(struct broker *b, struct broker_conn *c) {
  if (c->closing && c->close_by_ms == 0) {
    broker_conn_close(b, c, "out of memory");
    return;
  }
  size_t n = out_pending(c);
  if (n) {
    ssize_t w = send(c->fd, c->out + c->out_off, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
      if (errno != EAGAIN && errno != EINTR) {
        broker_conn_close(b, c, errno == EPIPE || errno == ECONNRESET
                             ? "peer closed before reading its replies"
                             : "write error");
        return;
      }
      w = 0;
    }
    c->out_off += (size_t)w;
    b->stats.bytes_out += (uint64_t)w;
  }
  if (c->out_off == c->out_len) {
    c->out_off = c->out_len = 0;
    if (c->out_cap > SHRINK_ABOVE) {
      free(c->out);
      c->out = NULL;
      c->out_cap = 0;
    }
    set_epollout(b, c, 0);
    if (c->closing) {
      broker_conn_close(b, c, c->eof ? "peer closed" : "closed after error reply");
      return;
    }
  } else {
    set_epollout(b, c, 1);
  }
  if (c->paused && out_pending(c) <= b->opt.max_output / 2) {
    c->paused = 0;
    conn_process(b, c); /* its new replies are flushed next turn */
  }
  if (c->dead) return;
  if (c->followers) broker_files_conn_drained(b, c);
  update_events(b, c);
}

/* ---------------------------------------------------------------- accept -- */

static int gid_allowed(const struct broker *b, gid_t g) {
  for (size_t i = 0; i < b->opt.n_allow_gid; i++)
    if (b->opt.allow_gid[i] == g) return 1;
  return 0;
}

/* SO_PEERCRED's uid/gid against the lists; supplementary groups through
 * SO_PEERGROUPS (Linux 4.13) when --allow-gid is used. */
static int peer_allowed(const struct broker *b, int fd,
                        const struct ucred *cr) {
  if (cr->uid == b->uid) return 1;
  for (size_t i = 0; i < b->opt.n_allow_uid; i++)
    if (b->opt.allow_uid[i] == cr->uid) return 1;
  if (!b->opt.n_allow_gid) return 0;
  if (gid_allowed(b, cr->gid)) return 1;
  gid_t groups[256];
  socklen_t len = sizeof groups;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) == 0) {
    for (size_t i = 0; i < len / sizeof(gid_t); i++)
      if (gid_allowed(b, groups[i])) return 1;
  }
  return 0;
}

static void do_accept(struct broker *b) {
  for (int i = 0; i < ACCEPT_PER_TURN && b->listen_fd >= 0; i++) {
    int fd = accept4(b->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED) return;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
          errno == ENOMEM) {
        /* Level-triggered: the pending connection would wake us at once
         * again. Stop listening until the next timer tick. */
        broker_log_limited("accept_paused reason=\"%s\" connections=%llu "
                           "fix=\"raise LimitNOFILE / ulimit -n\"",
                           strerror(errno), (unsigned long long)b->nconns);
        struct epoll_event ev = {.events = 0, .data.ptr = (void *)&ev_listen};
        epoll_ctl(b->epfd, EPOLL_CTL_MOD, b->listen_fd, &ev);
        b->listen_paused = 1;
        return;
      }
      broker_log_limited("accept_error reason=\"%s\"", strerror(errno));
      return;
    }
    struct ucred cr;
    socklen_t crlen = sizeof cr;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &crlen) != 0) {
      broker_log_limited("accept_error reason=\"SO_PEERCRED: %s\"",
                         strerror(errno));
      close(fd);
      continue;
    }
    struct broker_conn *c = calloc(1, sizeof *c);
    if (!c) {
      close(fd);
      continue;
    }
    c->kind = BROKER_EV_CONN;
    c->fd = fd;
    c->id = ++b->next_conn_id;
    c->pid = cr.pid;
    c->uid = cr.uid;
    c->gid = cr.gid;
    c->slot = -1;
    int allowed = peer_allowed(b, fd, &cr);
    c->events = allowed ? EPOLLIN : 0;
    struct epoll_event ev = {.events = c->events, .data.ptr = c};
    if (epoll_ctl(b->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
      broker_log_limited("accept_error reason=\"epoll_ctl: %s\"",
                         strerror(errno));
      close(fd);
      free(c);
      continue;
    }
    c->next = b->conns;
    if (b->conns) b->conns->prev = c;
    b->conns = c;
    b->nconns++;
    b->stats.connections_total++;
    if (!allowed) {
      b->stats.denied++;
      broker_log_limited("denied conn=%llu pid=%d uid=%u gid=%u "
                         "fix=\"shoald --allow-uid %u (or --allow-gid)\"",
                         (unsigned long long)c->id, (int)cr.pid,
                         (unsigned)cr.uid, (unsigned)cr.gid, (unsigned)cr.uid);
      broker_reply_error(b, c, 0, SHOAL_EDENIED,
                         "uid %u (gid %u) is not allowed on store %s, for "
                         "example: shoald --allow-uid %u",
                         (unsigned)cr.uid, (unsigned)cr.gid, b->opt.name,
                         (unsigned)cr.uid);
      broker_conn_close_after_flush(b, c);
      continue;
    }
    if (!b->opt.quiet)
      broker_log("accept conn=%llu pid=%d uid=%u gid=%u",
                 (unsigned long long)c->id, (int)cr.pid, (unsigned)cr.uid,
                 (unsigned)cr.gid);
  }
}

/* ---------------------------------------------------------------- timers -- */

static void on_tick(struct broker *b) {
  uint64_t ticks;
  ssize_t r = read(b->timer_fd, &ticks, sizeof ticks);
  (void)r;
  uint64_t now = broker_mono_ms();
  if (b->listen_paused && b->listen_fd >= 0) {
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = (void *)&ev_listen};
    if (epoll_ctl(b->epfd, EPOLL_CTL_MOD, b->listen_fd, &ev) == 0)
      b->listen_paused = 0;
  }
  if (!b->stopping) {
    /* TTL sweeper: a bounded step (shm_expire looks at <= 16 slots per key
     * budgeted), so a tick never stalls the loop. */
    size_t expired = 0;
    int err = shm_expire(b->store, 0, 1000, &expired);
    if (err)
      broker_log_limited("expire_error status=%s detail=\"%s\"",
                         shoal_errname(err), shm_store_lasterr(b->store));
    /* Writes reclaim on their own every so often (shm/store.c); this one
     * returns memory while no writes arrive. Not called per write: a
     * reclaim scans the reader table, which is far more than a put costs. */
    shm_reclaim(b->store);
  }
  broker_files_tick(b);
  if (now - b->last_slow_sweep_ms >= 1000) {
    b->last_slow_sweep_ms = now;
    broker_lease_recheck(b);
    unsigned cleared = shm_sweep_readers(b->store);
    if (cleared) broker_log("readers_swept slots=%u reason=\"process gone\"",
                            cleared);
    shm_stats st;
    shm_store_stats(b->store, &st);
    if (st.oldest_snapshot && st.oldest_snapshot_age_ms > 10000 &&
        (b->last_stuck_warn_ms == 0 || now - b->last_stuck_warn_ms >= 10000)) {
      b->last_stuck_warn_ms = now;
      broker_log("warning event=old_snapshot snapshot=%llu age_ms=%llu "
                 "readers_busy=%llu retired_bytes=%llu detail=\"a reader has "
                 "been inside one read section for over 10 s; memory retired "
                 "since then can not be reclaimed; shoal-inspect readers "
                 "names it\"",
                 (unsigned long long)st.oldest_snapshot,
                 (unsigned long long)st.oldest_snapshot_age_ms,
                 (unsigned long long)st.readers_busy,
                 (unsigned long long)st.retired_bytes);
    }
    /* Connections closing after an error reply whose peer does not read. */
    for (struct broker_conn *c = b->conns, *nx; c; c = nx) {
      nx = c->next;
      if (c->closing && c->close_by_ms && now >= c->close_by_ms)
        broker_conn_close(b, c, "peer did not read its last reply in time");
    }
  }
}

/* --------------------------------------------------------------- signals -- */

static void start_stopping(struct broker *b, const char *signame) {
  if (b->stopping) return;
  b->stopping = 1;
  b->stop_by_ms = broker_mono_ms() + BROKER_DRAIN_MS;
  sd_notify(0, "STOPPING=1");
  broker_log("stopping signal=%s connections=%llu", signame,
             (unsigned long long)b->nconns);
  /* No new connections: clients that connect now get ECONNREFUSED/ENOENT
   * and retry against the next broker. */
  if (b->listen_fd >= 0) {
    epoll_ctl(b->epfd, EPOLL_CTL_DEL, b->listen_fd, NULL);
    close(b->listen_fd);
    b->listen_fd = -1;
    unlink(b->opt.socket_path);
  }
  /* Drain: what each client has already sent (buffered, plus one read of
   * what sits in the socket) is served; then it counts as EOF, so every
   * connection closes once its replies are flushed. */
  for (struct broker_conn *c = b->conns, *nx; c; c = nx) {
    nx = c->next;
    if (can_read(c)) conn_read(b, c);
    if (c->dead) continue;
    c->eof = 1;
    conn_process(b, c);
  }
}

static void on_signal(struct broker *b) {
  struct signalfd_siginfo si;
  while (read(b->signal_fd, &si, sizeof si) == (ssize_t)sizeof si) {
    switch (si.ssi_signo) {
    case SIGTERM:
      start_stopping(b, "SIGTERM");
      break;
    case SIGINT:
      start_stopping(b, "SIGINT");
      break;
    case SIGHUP:
      broker_log_stats(b, "stats");
      break;
    default:
      break;
    }
  }
}

/* ------------------------------------------------------------------ loop -- */

int broker_loop_init(struct broker *b) {
  b->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (b->epfd < 0) return -errno;

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  if (sigprocmask(SIG_BLOCK, &set, NULL) != 0) return -errno;
  b->signal_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  if (b->signal_fd < 0) return -errno;

  b->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (b->timer_fd < 0) return -errno;
  struct itimerspec its = {0};
  its.it_interval.tv_sec = b->opt.sweep_ms / 1000;
  its.it_interval.tv_nsec = (long)(b->opt.sweep_ms % 1000) * 1000000L;
  its.it_value = its.it_interval;
  if (timerfd_settime(b->timer_fd, 0, &its, NULL) != 0) return -errno;

  struct epoll_event ev = {.events = EPOLLIN};
  ev.data.ptr = (void *)&ev_listen;
  if (epoll_ctl(b->epfd, EPOLL_CTL_ADD, b->listen_fd, &ev) != 0) return -errno;
  ev.data.ptr = (void *)&ev_signal;
  if (epoll_ctl(b->epfd, EPOLL_CTL_ADD, b->signal_fd, &ev) != 0) return -errno;
  ev.data.ptr = (void *)&ev_timer;
  if (epoll_ctl(b->epfd, EPOLL_CTL_ADD, b->timer_fd, &ev) != 0) return -errno;
  b->last_slow_sweep_ms = broker_mono_ms();
  return 0;
}

static void on_conn_event(struct broker *b, struct broker_conn *c,
                          uint32_t events) {
  if (c->dead) return;
  if (c->blocked && (events & (EPOLLHUP | EPOLLERR))) {
    /* gone while a worker serves its request: nobody to answer (the job
     * finds the connection dead, files.c I3) */
    broker_conn_close(b, c, "peer closed during a file request");
    return;
  }
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
    if (can_read(c)) {
      conn_read(b, c);
      if (c->dead) return;
      conn_process(b, c);
      if (c->dead) return;
    } else {
      /* Not reading (paused, closing, eof) and the peer hung up or
       * errored: a flush finds out (EPIPE closes it, an empty output of a
       * closing connection closes it). */
      mark_dirty(b, c);
    }
  }
  if (events & EPOLLOUT) mark_dirty(b, c);
}

int broker_loop_run(struct broker *b) {
  struct epoll_event evs[256];
  for (;;) {
    uint64_t now = broker_mono_ms();
    if (b->stopping && (b->nconns == 0 || now >= b->stop_by_ms)) break;
    int timeout = -1;
    if (b->pending || b->dirty) timeout = 0;
    else if (b->stopping) timeout = (int)(b->stop_by_ms - now);
    const int cap = (int)(sizeof evs / sizeof evs[0]);
    int n;
    if (timeout == 0 || !b->opt.spin_us || b->stopping) {
      n = epoll_wait(b->epfd, evs, cap, timeout);
    } else {
      /* Adaptive busy-poll (see the top comment): poll for --spin-us
       * before sleeping, but only while the last idle gap was that short,
       * i.e. while a client answers back-to-back. */
      uint64_t t0 = broker_mono_us();
      n = 0;
      if (b->spin_ok) {
        do {
          n = epoll_wait(b->epfd, evs, cap, 0);
        } while (n == 0 && broker_mono_us() - t0 < b->opt.spin_us);
      }
      if (n == 0) n = epoll_wait(b->epfd, evs, cap, timeout);
      /* A blocked wait's gap includes this thread's own wake-up latency,
       * so a client that answered within spin-us may look slower: allow
       * 4x before calling the traffic sparse. */
      b->spin_ok = n > 0 && broker_mono_us() - t0 <= 4ull * b->opt.spin_us;
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      broker_log("fatal reason=\"epoll_wait: %s\"", strerror(errno));
      return -errno;
    }
    for (int i = 0; i < n; i++) {
      int kind = *(const int *)evs[i].data.ptr;
      switch (kind) {
      case BROKER_EV_LISTEN:
        do_accept(b);
        break;
      case BROKER_EV_SIGNAL:
        on_signal(b);
        break;
      case BROKER_EV_TIMER:
        on_tick(b);
        break;
      case BROKER_EV_CONN:
        on_conn_event(b, evs[i].data.ptr, evs[i].events);
        break;
      case BROKER_EV_JOBS:
        broker_files_on_jobs(b);
        break;
      case BROKER_EV_NOTIFY:
        broker_files_on_notify(b);
        break;
      default:
        break;
      }
    }
    /* connections whose frame budget ran out last time */
    struct broker_conn *p = b->pending;
    b->pending = NULL;
    while (p) {
      struct broker_conn *nx = p->pending_next;
      p->in_pending = 0;
      if (!p->dead) conn_process(b, p);
      p = nx;
    }
    /* one send per connection with output */
    struct broker_conn *d = b->dirty;
    b->dirty = NULL;
    while (d) {
      struct broker_conn *nx = d->dirty_next;
      d->in_dirty = 0;
      if (!d->dead) conn_flush(b, d);
      d = nx;
    }
    free_dead(b);
  }
  if (b->nconns)
    broker_log("drain_timeout connections=%llu detail=\"clients did not read "
               "their replies within %u ms\"",
               (unsigned long long)b->nconns, BROKER_DRAIN_MS);
  return 0;
}

void broker_loop_shutdown(struct broker *b) {
  while (b->conns) broker_conn_close(b, b->conns, "broker stopping");
  broker_files_shutdown(b); /* jobs come back: their connections can go */
  for (struct broker_conn *c = b->dirty; c; c = c->dirty_next) c->in_dirty = 0;
  for (struct broker_conn *c = b->pending; c; c = c->pending_next)
    c->in_pending = 0;
  b->dirty = b->pending = NULL;
  free_dead(b);
  if (b->listen_fd >= 0) {
    close(b->listen_fd);
    b->listen_fd = -1;
  }
  if (b->timer_fd >= 0) close(b->timer_fd);
  if (b->signal_fd >= 0) close(b->signal_fd);
  if (b->epfd >= 0) close(b->epfd);
  b->timer_fd = b->signal_fd = b->epfd = -1;
}
