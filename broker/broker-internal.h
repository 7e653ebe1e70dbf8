/*
 * broker-internal.h - shared state of shoald's parts (prefix broker_).
 *
 * shoald is one process with one thread: main.c parses options, takes the
 * lock, opens the store and the socket; access.c grants allowed uids/gids
 * file access; loop.c runs the epoll loop, owns the connections and their
 * framing; handlers.c turns one decoded Request into store calls and one
 * packed Response (and holds the lease policy); arena.c is the per-frame
 * allocator; stats.c counts and logs. All of it runs on the loop's
 * thread, so nothing here is locked or atomic: the single-writer rule of
 * DESIGN section 4 is this one thread.
 *
 * Memory that client input can make the broker allocate is bounded:
 *   - a connection's input buffer grows only as bytes actually arrive and
 *     never past one frame (<= --max-frame + 4);
 *   - its output buffer stops growing once it holds --max-output bytes:
 *     the connection is not read and its frames are not decoded until the
 *     client has read half of it (so <= --max-output + one response);
 *   - decoded requests live in one arena (struct broker_arena) that is reset
 *     after every frame, so a request's memory is O(its frame).
 */
#ifndef SHOAL_BROKER_INTERNAL_H
#define SHOAL_BROKER_INTERNAL_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <protobuf-c/protobuf-c.h>

#include "shoal.pb-c.h"
#include "shoal/error.h"
#include "shoal/shm.h"

/* "Cannot happen, but handle it" (STYLE 11): asserts in debug builds,
 * evaluates to the condition in release builds so the caller's fallback
 * runs. */
#ifdef NDEBUG
#define BROKER_NEVER(cond) __builtin_expect(!!(cond), 0)
#else
#define BROKER_NEVER(cond) ((cond) ? (assert(!"cannot happen: " #cond), 1) : 0)
#endif

#ifndef SHOAL_VERSION_STRING
#define SHOAL_VERSION_STRING "0.0.0"
#endif

#define BROKER_PROTOCOL 1u

/* Defaults and bounds of the options (main.c explains each in --help). */
#define BROKER_DEFAULT_MAX_FRAME (16u << 20)
#define BROKER_MIN_MAX_FRAME (64u << 10)      /* a max-size key plus room */
#define BROKER_MAX_MAX_FRAME (2047ull << 20)  /* a u32 length, and size_t math stays far from overflow */
#define BROKER_DEFAULT_MAX_OUTPUT (4u << 20)
#define BROKER_MIN_MAX_OUTPUT (64u << 10)
#define BROKER_DEFAULT_SWEEP_MS 200u
#define BROKER_DEFAULT_SPIN_US 50u /* loop.c: adaptive busy-poll */
/* What a frame carries besides a value: the envelope, the id, a key of up
 * to SHM_KEY_MAX bytes and the field tags. A value of max_frame -
 * BROKER_FRAME_OVERHEAD always fits one frame, in a Put and in the
 * Get/Scan reply that returns it. */
#define BROKER_FRAME_OVERHEAD 4096u

/* Per readiness event, at most this many frames of one connection are
 * decoded before the loop serves the others (fairness: a client pipelining
 * thousands of requests delays the rest by at most this many). */
#define BROKER_FRAMES_PER_TURN 256u
/* Read granularity: 64 KiB holds a depth-64 pipeline of small puts many
 * times over, so one read() serves a whole burst. */
#define BROKER_READ_CHUNK (64u << 10)
/* Decoding one frame of n bytes may allocate at most 2n + this: a value's
 * copy is n, and 32 MiB covers the structs of the largest batch
 * (BROKER_MAX_BATCH_OPS) and of a Scan page. Without it a frame made of
 * thousands of tiny fields (protobuf-c allocates a struct or an
 * unknown-field record for each) would cost tens of times its size. */
#define BROKER_DECODE_SLACK (32u << 20)
/* Ops per Batch: enough for bulk loads (a batch is one commit and holds
 * the loop for its duration: 100000 small puts take ~50 ms), small enough
 * to keep the loop responsive and the decode budget above. */
#define BROKER_MAX_BATCH_OPS 100000u
/* Connections that must close after their last reply is flushed get this
 * long to read it (a client that never reads can not keep them open). */
#define BROKER_CLOSE_GRACE_MS 5000u
/* SIGTERM: flushing replies to clients is bounded by this. */
#define BROKER_DRAIN_MS 5000u

/* ------------------------------------------------------------- options -- */

struct broker_opts {
  const char *name;        /* store name */
  const char *socket_path; /* resolved: --socket, $SHOAL_SOCKET or RUNDIR/NAME.sock */
  const char *rundir;      /* resolved */
  const char *shm_dir;     /* resolved, absolute */
  uint64_t size;           /* 0: store default */
  uint32_t reader_slots;   /* 0: store default */
  uid_t *allow_uid;
  size_t n_allow_uid;
  gid_t *allow_gid;
  size_t n_allow_gid;
  uint64_t max_frame;
  uint64_t max_output;
  unsigned workers;        /* worker threads for HashFile/TailLog (files.c) */
  uint64_t hash_cache_entries; /* hash cache bounds (files.c) */
  uint64_t hash_cache_bytes;
  unsigned sweep_ms;
  int quiet;               /* no per-connection log lines */
  unsigned spin_us;        /* busy-poll this long after work before sleeping */
};

/* ---------------------------------------------------------------- arena -- */

/* A bump allocator for protobuf-c's unpack and the handlers' scratch
 * memory; reset after every frame. The first block is kept; larger or
 * later ones are malloc'd and freed by the reset. */
struct broker_arena_block;
struct broker_arena {
  ProtobufCAllocator pb;   /* protobuf-c's view of it (allocator_data = this) */
  char *base;              /* the kept first block */
  size_t base_cap;
  size_t used;             /* bump offset in the current block */
  char *cur;               /* current block */
  size_t cur_cap;
  struct broker_arena_block *extra; /* malloc'd blocks, freed on reset */
  size_t total;            /* bytes handed out since the last reset */
  size_t budget;           /* refuse allocations past this (0: no limit) */
  int failed;              /* an allocation failed since the last reset */
  int over_budget;         /* ... because of the budget */
};

int broker_arena_init(struct broker_arena *a, size_t cap);
void *broker_arena_alloc(struct broker_arena *a, size_t n);
void broker_arena_reset(struct broker_arena *a);
/* Limit what the current frame may allocate (cleared by the reset). */
void broker_arena_budget(struct broker_arena *a, size_t budget);
void broker_arena_free(struct broker_arena *a);

/* ------------------------------------------------------------ connection -- */

/* Descriptors a peer passed (SCM_RIGHTS), waiting for the frame they came
 * with: @at is the stream offset of the byte they arrived with, which is
 * the first byte of that frame's length prefix (files.c). */
#define BROKER_CONN_FDS 8
struct broker_fd_in {
  int fd;
  uint64_t at;
};
struct broker_follower;

struct broker_conn {
  int kind;                /* BROKER_EV_CONN: first, as in every epoll item */
  int fd;
  uint64_t id;             /* connection number, for the log */
  pid_t pid;               /* SO_PEERCRED */
  uid_t uid;
  gid_t gid;
  uint64_t pid_start;      /* the peer's start time when its slot was leased */
  int slot;                /* leased reader slot, -1: none */

  char *in;                /* [in_off, in_len) not yet decoded */
  size_t in_cap, in_off, in_len;
  char *out;               /* [out_off, out_len) not yet written */
  size_t out_cap, out_off, out_len;

  uint32_t events;         /* the epoll mask currently registered */
  unsigned hello : 1;      /* Hello accepted */
  unsigned eof : 1;        /* the peer shut its writing side: no more reads */
  unsigned closing : 1;    /* decode nothing more; close once out is flushed */
  unsigned paused : 1;     /* over --max-output: not read, not decoded */
  unsigned dead : 1;       /* closed; freed at the end of the loop turn */
  unsigned in_dirty : 1;
  unsigned in_pending : 1;
  uint64_t close_by_ms;    /* closing: forced close after this (monotonic) */

  /* files.c: descriptor passing, jobs, follows */
  uint64_t in_base;        /* stream offset of in[0] */
  uint64_t frame_at;       /* stream offset of the frame being handled */
  struct broker_fd_in fds[BROKER_CONN_FDS];
  unsigned nfds;
  unsigned blocked : 1;    /* a job answers the next reply: decode nothing */
  unsigned jobs;           /* jobs in flight that point here (kept alive) */
  struct broker_follower *followers;

  struct broker_conn *prev, *next; /* all open connections */
  struct broker_conn *dirty_next;  /* has output to write this turn */
  struct broker_conn *pending_next;/* has complete frames left undecoded */
  struct broker_conn *dead_next;
};

/* ----------------------------------------------------------------- stats -- */

/* Request types, in the order of Shoal__Request's body (names for Stats). */
enum broker_req_type {
  BROKER_REQ_UNKNOWN = 0,
  BROKER_REQ_HELLO,
  BROKER_REQ_PUT,
  BROKER_REQ_DELETE,
  BROKER_REQ_CAS,
  BROKER_REQ_BATCH,
  BROKER_REQ_GET,
  BROKER_REQ_SCAN,
  BROKER_REQ_STATS,
  BROKER_REQ_PING,
  BROKER_REQ_HASH_FILE,
  BROKER_REQ_TAIL_LOG,
  BROKER_REQ_CANCEL,
  BROKER_REQ__COUNT
};

#define BROKER_ERR_SLOTS 48 /* distinct error codes counted; more go to "other" */

struct broker_stats {
  uint64_t requests[BROKER_REQ__COUNT];
  struct {
    int code;
    uint64_t n;
  } errors[BROKER_ERR_SLOTS];
  unsigned n_errors;
  uint64_t errors_other;
  uint64_t connections_total;
  uint64_t denied;
  uint64_t protocol_errors;
  uint64_t bytes_in, bytes_out;
  uint64_t hash_hits, hash_misses, hash_bytes_read;
};

struct broker_files; /* files.c: worker pool, hash cache, follows */

/* ---------------------------------------------------------------- broker -- */

struct broker {
  struct broker_opts opt;
  shm_store *store;
  shm_view *view;          /* the broker's own reader, for Get and Scan */
  pid_t pid;
  uid_t uid;
  uint64_t start_ms;       /* monotonic, for uptime */
  uint64_t max_value;      /* largest value a Put may carry */
  char data_object[4096];
  char readers_object[4096];

  int epfd;
  int listen_fd;           /* -1 once closed (stopping) */
  int signal_fd;
  int timer_fd;
  int listen_paused;       /* out of descriptors: accept again at the next tick */

  uint64_t next_conn_id;
  uint64_t nconns;
  struct broker_conn *conns;   /* all open connections */
  struct broker_conn *dirty;   /* to flush at the end of this turn */
  struct broker_conn *pending; /* complete frames left by the per-turn budget */
  struct broker_conn *dead;    /* closed this turn, freed at its end */

  struct broker_arena arena;
  struct broker_stats stats;
  struct broker_files *files;

  /* Leases of closed connections whose peer still looked alive: looked at
   * again on the 1 s tick for a while, because a process that is exiting
   * closes its sockets before it is gone (and shm_sweep_readers counts a
   * zombie as alive). See the lease policy in handlers.c. */
  struct broker_recheck {
    unsigned slot;
    pid_t pid;
    uint64_t start;
    uint64_t until_ms;
  } recheck[256];
  unsigned nrecheck;

  int stopping;            /* SIGTERM/SIGINT seen */
  uint64_t stop_by_ms;     /* drain deadline (monotonic) */
  uint64_t last_slow_sweep_ms;  /* 1 s tasks */
  int spin_ok;                  /* the last wait was short: busy-poll */
  uint64_t last_stuck_warn_ms;  /* the old-snapshot warning */
};

/* Item kinds registered with epoll: data.ptr points at an int holding one. */
enum {
  BROKER_EV_LISTEN = 1,
  BROKER_EV_SIGNAL,
  BROKER_EV_TIMER,
  BROKER_EV_CONN,
  BROKER_EV_JOBS,   /* files.c: the workers' completion eventfd */
  BROKER_EV_NOTIFY, /* files.c: the inotify descriptor of follows */
};

/* loop.c */
int broker_loop_init(struct broker *b);
int broker_loop_run(struct broker *b);
void broker_loop_shutdown(struct broker *b);
/* Append one packed Response frame to c's output and schedule the flush. */
int broker_reply(struct broker *b, struct broker_conn *c,
                 const Shoal__Response *resp);
/* The reply to a successful write, Response{id, status 0, version},
 * encoded by hand: the same bytes protobuf_c_message_pack produces (fields
 * in number order), without its two descriptor walks. */
int broker_reply_ok_version(struct broker *b, struct broker_conn *c,
                            uint64_t id, uint64_t version);
/* After the current reply: decode nothing more and close once flushed. */
void broker_conn_close_after_flush(struct broker *b, struct broker_conn *c);

/* handlers.c */
/* Decode and serve one frame's body of @len bytes. */
void broker_handle_frame(struct broker *b, struct broker_conn *c,
                         const uint8_t *data, size_t len);
/* An error Response with no request to echo (id 0): oversized frame,
 * denied peer. */
void broker_reply_error(struct broker *b, struct broker_conn *c, uint64_t id,
                        int status, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* Lease policy on close (see handlers.c). */
void broker_lease_on_close(struct broker *b, struct broker_conn *c);
/* The 1 s tick: release recorded leases whose process has gone since. */
void broker_lease_recheck(struct broker *b);

/* Resume decoding a connection's frames (after a job unblocked it). */
void broker_conn_resume(struct broker *b, struct broker_conn *c);
/* Close a connection now (with a reason for the log). */
void broker_conn_close(struct broker *b, struct broker_conn *c,
                       const char *reason);

/* files.c: HashFile, TailLog, Cancel on a worker pool (see its top). */
#define BROKER_DEFAULT_WORKERS 2u
#define BROKER_DEFAULT_HASH_ENTRIES 65536u
#define BROKER_DEFAULT_HASH_BYTES (16u << 20)
int broker_files_init(struct broker *b);
void broker_files_shutdown(struct broker *b);
/* epoll events of BROKER_EV_JOBS / BROKER_EV_NOTIFY */
void broker_files_on_jobs(struct broker *b);
void broker_files_on_notify(struct broker *b);
/* the sweep tick: follows without inotify, stalled follows */
void broker_files_tick(struct broker *b);
void broker_on_hash_file(struct broker *b, struct broker_conn *c, uint64_t id,
                         const Shoal__HashFile *h);
void broker_on_tail_log(struct broker *b, struct broker_conn *c, uint64_t id,
                        const Shoal__TailLog *t);
void broker_on_cancel(struct broker *b, struct broker_conn *c, uint64_t id,
                      const Shoal__Cancel *x);
/* A frame was handled: close descriptors that came with it unused. */
void broker_files_after_frame(struct broker *b, struct broker_conn *c);
/* The connection is closing: its follows stop, its descriptors close. */
void broker_files_conn_closed(struct broker *b, struct broker_conn *c);
/* A connection's output drained: resume follows held back by it. */
void broker_files_conn_drained(struct broker *b, struct broker_conn *c);
void broker_files_stats(struct broker *b, Shoal__StatsReply *r);

/* access.c: POSIX ACLs for the allowed uids/gids on the socket, the two
 * shared objects and RUNDIR (removed when no --allow-* is given). */
void broker_grant_access(struct broker *b);

/* stats.c */
void broker_count_error(struct broker *b, int code);
void broker_fill_stats(struct broker *b, Shoal__StatsReply *r,
                       Shoal__Counter *req_counters, Shoal__Counter **req_ptrs,
                       Shoal__Counter *err_counters, Shoal__Counter **err_ptrs,
                       char (*names)[24]);
void broker_log_stats(struct broker *b, const char *event);
const char *broker_req_name(int type);

/* log (stats.c): "2024-05-01T12:00:00.123Z shoald[pid]: event k=v ..." */
void broker_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Like broker_log but at most a few lines per second (client-caused
 * events: a misbehaving client can not flood the log). */
void broker_log_limited(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* Monotonic milliseconds, microseconds. */
uint64_t broker_mono_ms(void);
uint64_t broker_mono_us(void);

#endif /* SHOAL_BROKER_INTERNAL_H */
