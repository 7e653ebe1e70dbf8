/*
 * client-internal.h - the client handle and the helpers shared by the files
 * of libshoal (prefix shoal__, hidden). The design is described at the top
 * of client.c (handles, reads, fork, slots) and conn.c (the connection).
 */
#ifndef SHOAL_CLIENT_INTERNAL_H
#define SHOAL_CLIENT_INTERNAL_H

#include <assert.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/un.h>

#include <protobuf-c/protobuf-c.h>

#include "shoal.pb-c.h"
#include "shoal/shm.h"
#include "shoal/shoal.h"

#define shoal_likely(x) __builtin_expect(!!(x), 1)
#define shoal_unlikely(x) __builtin_expect(!!(x), 0)

/* "Cannot happen, but handle it" (STYLE 11): asserts in debug builds,
 * evaluates to the condition in release builds. */
#ifdef NDEBUG
#define SHOAL_NEVER(x) (!!(x))
#else
#define SHOAL_NEVER(x) ((x) ? (assert(!#x), 1) : 0)
#endif

/* Defaults of shoal_options (shoal.h). */
#define SHOAL__CONNECT_TIMEOUT_MS 5000
#define SHOAL__TIMEOUT_MS 30000
/* Until Hello tells the broker's --max-frame: its default. */
#define SHOAL__MAX_FRAME_DEFAULT (16u << 20)
/* Pipelined requests are sent once this much is queued: big enough that a
 * write carries hundreds of small requests, small enough to stay in L2 and
 * under the socket's default send buffer (~208 KiB), so a flush rarely
 * blocks. */
#define SHOAL__FLUSH_BYTES (64u << 10)
/* Replies are read in chunks of at least this much: at depth 64 a single
 * read() brings every reply of the window. */
#define SHOAL__READ_CHUNK (64u << 10)
/* A reply larger than this is not ours to believe (the broker pages scans
 * at about 1 MiB and values are bounded by --max-frame). */
#define SHOAL__MAX_REPLY ((1u << 30) + (1u << 20))
/* The response arena's inline block: every reply to a write, a ping or a
 * Hello unpacks inside it without malloc. */
#define SHOAL__ARENA_INLINE 4096u
#define SHOAL__ERR_MAX 512

/* A byte buffer: out uses [sent, len) as "queued, not yet written"; in uses
 * [head, len) as "read, not yet parsed". */
struct shoal__buf {
  uint8_t *p;
  size_t head, len, cap;
};

/* A bump allocator for protobuf-c's unpack: reset before each reply, so
 * unpacking a reply allocates nothing in the steady state. Blocks that do
 * not fit the inline part are malloc'd and freed at the next reset. */
struct shoal__arena {
  size_t used;
  struct shoal__chunk *extra;
  _Alignas(16) uint8_t inline_buf[SHOAL__ARENA_INLINE];
};

struct shoal {
  /* --- read path (first cache line) --- */
  shm_view *view;      /* NULL with SHOAL_OPEN_NO_SLOT */
  unsigned gen;        /* shoal__fork_gen when opened; differs in a child */
  uint32_t nest;       /* read-section depth, mirrors the view's */
  shm_view *next_view; /* remapped store or new slot, adopted at depth 0 */

  /* --- connection (conn.c) --- */
  int fd;           /* -1: not connected */
  uint64_t next_id; /* id of the last request sent */
  size_t pending;   /* pipelined requests not yet collected */
  struct shoal__buf out, in;
  ProtobufCAllocator alloc; /* the arena below, for unpack */
  struct shoal__arena arena;

  /* --- settings --- */
  char sock[sizeof(((struct sockaddr_un *)0)->sun_path)];
  char want_store[SHM_NAME_MAX + 1]; /* "" when any store will do */
  char *client;
  int connect_timeout_ms; /* -1: forever */
  int timeout_ms;         /* -1: forever */
  int io_timeout_ms;      /* what SO_RCVTIMEO is set to now */
  unsigned flags;

  /* --- what Hello said (the newest: next_view's when set) --- */
  char store[SHM_NAME_MAX + 1];
  char *shm_dir;  /* malloc'd; "" = the client's default */
  dev_t data_dev; /* identity of the data object we mapped */
  ino_t data_ino;
  int slot; /* leased slot, -1 none */
  uint64_t max_frame;
  uint64_t max_value;
  uint32_t max_key;
  int broker_pid;

  /* shoal_stats_get's strings */
  char *stats_requests, *stats_errors;
  char err[SHOAL__ERR_MAX];
};

/* Bumped in every child by the pthread_atfork handler (client.c). */
extern unsigned shoal__fork_gen;

static inline int shoal__forked(const shoal *c) {
  return shoal_unlikely(c->gen !=
                        __atomic_load_n(&shoal__fork_gen, __ATOMIC_RELAXED));
}

/* client.c */
int shoal__errf(shoal *c, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int shoal__check_kv(shoal *c, const void *key, size_t klen, const void *val,
                    size_t vlen);
int shoal__on_hello(shoal *c, const Shoal__HelloReply *hr);
void shoal__adopt_next_view(shoal *c);

/* conn.c */
void shoal__conn_init(shoal *c);
void shoal__conn_free(shoal *c);
void shoal__conn_close(shoal *c);
int shoal__connect(shoal *c, int retry);
int shoal__append(shoal *c, const Shoal__Request *rq);
int shoal__flush(shoal *c);
int shoal__call(shoal *c, Shoal__Request *rq, Shoal__Response **rsp);
/* shoal__call with @fd passed (SCM_RIGHTS) on the request frame's first
 * byte: HashFile, TailLog. */
int shoal__call_fd(shoal *c, Shoal__Request *rq, int fd,
                   Shoal__Response **rsp);
/* The next frame on the connection within @timeout_ms (-1: forever):
 * 0 with *rsp (valid until the next reply), SHOAL_ETIMEOUT (nothing came;
 * the connection stays), -EINTR, or the errors of a reply. */
int shoal__next_frame(shoal *c, int timeout_ms, Shoal__Response **rsp);
int shoal__pipe_begin(shoal *c);
int shoal__pipe_next(shoal *c, Shoal__Response **rsp);
int shoal__drain(shoal *c);
int shoal__status(shoal *c, const Shoal__Response *r);

#endif /* SHOAL_CLIENT_INTERNAL_H */
