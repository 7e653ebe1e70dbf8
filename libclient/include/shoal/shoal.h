/*
 * shoal/shoal.h - the public C API of libshoal (DESIGN.md section 8).
 *
 * A client handle connects to the broker (shoald) over its Unix socket for
 * writes and maps the store's data object read-only for reads:
 *
 *   shoal *c;
 *   int err = shoal_open(&c, "default", NULL);
 *   if (err) {
 *     fprintf(stderr, "%s: %s\n", shoal_strerror(err), shoal_last_error(NULL));
 *     ...
 *   }
 *   err = shoal_put(c, "k", 1, "v", 1, NULL);
 *   if (shoal_read_begin(c) == 0) {      // pin a snapshot
 *     shoal_val v;
 *     if (shoal_get(c, "k", 1, &v) == 0) // zero-copy, no system call
 *       fwrite(v.data, 1, v.len, stdout); // valid until shoal_read_end
 *     shoal_read_end(c);
 *   }
 *   shoal_close(c);
 *
 * Return values: 0 on success or a negative code (shoal/error.h): -errno for
 * system failures, SHOAL_E* for shoal's own. shoal_strerror() names the
 * cause and the fix; shoal_last_error() adds the detail of the handle's last
 * failure (the broker's message, the path that could not be opened).
 *
 * Threads: a handle is used by one thread at a time (like a sqlite3 or a
 * redisContext); open one handle per thread. Reads need no lock and make no
 * system call. After fork() the child gets SHOAL_EFORKED from the parent's
 * handles and opens its own (shoal_close on the inherited handle is allowed
 * and only frees the child's memory).
 *
 * Broker restarts: reads from an open handle keep working while the broker
 * is down (the mapping stays valid); writes reconnect on their own. A write
 * whose request was sent but whose reply never came returns SHOAL_EUNAVAIL:
 * it may or may not have been applied.
 */
#ifndef SHOAL_SHOAL_H
#define SHOAL_SHOAL_H

#include <stddef.h>
#include <stdint.h>

#include "shoal/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Compiler-checked contracts (STYLE 12): a result that must be looked at,
 * and pointer arguments that must not be NULL. libshoal itself is built
 * without the nonnull promise (SHOAL_CLIENT_BUILDING) so that it keeps
 * checking them at run time for callers no compiler sees (ctypes, cgo):
 * they get SHOAL_EINVAL rather than a crash. */
#if defined(__GNUC__)
#define SHOAL_WUR __attribute__((warn_unused_result))
#if defined(SHOAL_CLIENT_BUILDING)
#define SHOAL_NONNULL(...)
#else
#define SHOAL_NONNULL(...) __attribute__((nonnull(__VA_ARGS__)))
#endif
#else
#define SHOAL_WUR
#define SHOAL_NONNULL(...)
#endif

#define SHOAL_VERSION_MAJOR 0
#define SHOAL_VERSION_MINOR 1
#define SHOAL_VERSION_PATCH 0

typedef struct shoal shoal;             /* opaque client handle */
typedef struct shoal_batch shoal_batch; /* an atomic batch being built */

/* A value as seen inside a read section: a view into the read-only mapping,
 * valid until shoal_read_end(). */
typedef struct shoal_val {
  const void *data;
  size_t len;
  uint64_t version;    /* the commit that wrote it */
  uint64_t expires_at; /* CLOCK_REALTIME ms; 0 = no TTL */
} shoal_val;

typedef struct shoal_key {
  const void *data;
  size_t len;
} shoal_key;

/* shoal_open options. Zero-initialise and set what you need; NULL = all
 * defaults. */
typedef struct shoal_options {
  /* broker socket; NULL: $SHOAL_SOCKET, else RUNDIR/NAME.sock */
  const char *socket;
  /* NULL: $SHOAL_RUNDIR, $XDG_RUNTIME_DIR/shoal, /tmp/shoal-UID */
  const char *rundir;
  /* connecting and Hello, and how long a write retries reconnecting while
   * the broker restarts; 0: 5000, -1: forever */
  int connect_timeout_ms;
  int timeout_ms;     /* waiting for a reply; 0: 30000, -1: forever */
  unsigned flags;     /* SHOAL_OPEN_* */
  const char *client; /* free text for the broker's log; NULL: "libshoal" */
} shoal_options;

/* shoal_options.flags */
/* No reader slot and no mapping: writes and broker requests only; reads
 * return SHOAL_ENOREADERS. */
#define SHOAL_OPEN_NO_SLOT 0x1u

/* --------------------------------------------------------------- handles */

/*
 * shoal_open - connect to the broker of store @name (NULL: whichever store
 * the socket serves; the socket path then uses "default"), say Hello, map
 * the data object read-only and adopt the reader slot the broker leased to
 * this process.
 * @out:  receives the handle; NULL on failure.
 * @name: store name, [A-Za-z0-9._-]{1,64} not starting with '.'. When given,
 *        the broker must serve that store (else SHOAL_EINVAL).
 * @opts: NULL for defaults. The socket is opts->socket, else $SHOAL_SOCKET,
 *        else RUNDIR/NAME.sock with RUNDIR = opts->rundir, $SHOAL_RUNDIR,
 *        $XDG_RUNTIME_DIR/shoal, /tmp/shoal-UID (first set wins).
 * Opening does not retry: with no broker it fails at once (later writes on
 * an open handle do retry while the broker restarts).
 * Returns 0, SHOAL_EUNAVAIL (no broker listening: start shoald),
 * SHOAL_EDENIED (the broker does not allow this uid/gid, or the socket's or
 * the shared objects' modes keep this process out), SHOAL_EVERSION,
 * SHOAL_ENOREADERS, SHOAL_ETIMEOUT, SHOAL_EPROTOCOL, SHOAL_EINVAL (bad name,
 * or the broker serves another store), -ENAMETOOLONG (socket path),
 * -ENOMEM, other -errno.
 * On failure shoal_last_error(NULL) tells why (per thread).
 * Thread-safe (each call makes its own handle).
 */
SHOAL_EXPORT int shoal_open(shoal **out, const char *name,
                            const shoal_options *opts) SHOAL_WUR
    SHOAL_NONNULL(1);

/* Release the reader slot (ending a section still open), close the
 * connection, unmap, free. Pipelined requests not yet collected are
 * abandoned: those already flushed may still be applied, those still queued
 * are not sent. NULL is a no-op. In a child process after fork() (the
 * handle is inherited) it only frees the child's copy: nothing is sent on
 * the parent's connection and the parent's slot is untouched. */
SHOAL_EXPORT void shoal_close(shoal *c);

/* The detail of this handle's last failure of a call that talks to the
 * broker or validates arguments ("connect /run/shoal/x.sock: No such file
 * or directory", the broker's error text); "" if none. Read-path calls
 * (shoal_get and friends) do not set it: their codes say everything.
 * @c NULL: why the calling thread's last shoal_open failed.
 * Never NULL; valid until the next call on @c (or shoal_open). */
SHOAL_EXPORT const char *shoal_last_error(const shoal *c);

/* The reader slot the handle uses, or -1 (SHOAL_OPEN_NO_SLOT, or after
 * fork). For tools and tests (shoal-inspect readers shows the same). */
SHOAL_EXPORT int shoal_reader_slot(const shoal *c);

/* The name of the store the broker serves, from its Hello reply (the
 * newest, after a reconnect): a handle opened by socket path alone learns
 * it here, for labels and messages. "" for NULL. Never NULL; valid until
 * the next call on @c that talks to the broker. */
SHOAL_EXPORT const char *shoal_store_name(const shoal *c);

/* ------------------------------------------------------------------ reads */

/*
 * Reads go straight to the read-only mapping: no system call, no lock, no
 * socket, so they keep working while the broker is down. Ordering: a write
 * that returned before shoal_read_begin is visible in that section.
 */

/* Pin a snapshot: every read until the matching shoal_read_end sees the
 * store as of one commit. Nestable (inner calls share the snapshot).
 * Wait-free, no system call. Returns 0, SHOAL_EFORKED, SHOAL_ENOREADERS
 * (handle opened with SHOAL_OPEN_NO_SLOT). */
SHOAL_EXPORT int shoal_read_begin(shoal *c) SHOAL_WUR SHOAL_NONNULL(1);
/* End a section (the outermost call unpins). An unmatched call is ignored. */
SHOAL_EXPORT void shoal_read_end(shoal *c) SHOAL_NONNULL(1);

/* Zero-copy get inside a section. Returns 0, SHOAL_ENOTFOUND,
 * SHOAL_ENOSECTION (outside a section), SHOAL_ETOOBIG (klen >
 * shoal_key_max()), SHOAL_EINVAL (NULL key with klen > 0), SHOAL_EFORKED,
 * SHOAL_ECORRUPT. */
SHOAL_EXPORT int shoal_get(shoal *c, const void *key, size_t klen,
                           shoal_val *out) SHOAL_WUR SHOAL_NONNULL(1, 4);

/* Copying get, inside or outside a section (it takes its own). Copies at
 * most @cap bytes into @buf; *len (optional) receives the full length, so
 * a short @buf answers how much to allocate (the return is then
 * SHOAL_ETOOBIG and nothing is copied). *version optional. Also returns
 * SHOAL_ENOREADERS (no slot) and the codes of shoal_get. */
SHOAL_EXPORT int shoal_get_copy(shoal *c, const void *key, size_t klen,
                                void *buf, size_t cap, size_t *len,
                                uint64_t *version) SHOAL_WUR SHOAL_NONNULL(1);

/* Prefetching multi-get inside a section: status[i] is what shoal_get
 * would return for keys[i], out[i] its value when status[i] == 0. Returns
 * the number found (>= 0) or a negative code (SHOAL_ENOSECTION,
 * SHOAL_EFORKED, SHOAL_EINVAL). */
SHOAL_EXPORT int shoal_get_many(shoal *c, size_t n, const shoal_key *keys,
                                shoal_val *out, int *status) SHOAL_WUR
    SHOAL_NONNULL(1);

/* Visit keys in [start, end) in byte order (start NULL/slen 0: from the
 * first key; end NULL or elen 0: to the last key). Inside a section it uses
 * that snapshot; outside, it takes its own for the whole scan. @fn returns
 * 0 to go on, non-zero to stop (shoal_scan then returns that value; use a
 * positive one so it can not be taken for an error). Returns 0 when the
 * range is exhausted, SHOAL_ENOREADERS, SHOAL_EFORKED, SHOAL_EINVAL,
 * SHOAL_ECORRUPT. The key and value pointers are valid until the section
 * ends (for a scan outside a section: until @fn returns). */
typedef int (*shoal_scan_fn)(void *arg, const void *key, size_t klen,
                             const shoal_val *val);
SHOAL_EXPORT int shoal_scan(shoal *c, const void *start, size_t slen,
                            const void *end, size_t elen, shoal_scan_fn fn,
                            void *arg) SHOAL_NONNULL(1, 6);
/* Keys starting with @prefix (plen 0: all keys). SHOAL_ETOOBIG if @plen
 * exceeds shoal_key_max(). */
SHOAL_EXPORT int shoal_scan_prefix(shoal *c, const void *prefix, size_t plen,
                                   shoal_scan_fn fn, void *arg)
    SHOAL_NONNULL(1, 4);

/*
 * shoal_wait - block until @key's version exceeds @after_version (0: until
 * it exists; a delete counts), or @timeout_ms passes (-1: forever). Futex on
 * the shared mapping: no socket traffic, no polling. Call outside a
 * section. *version (optional) receives the key's version when the call
 * returns (0: absent, e.g. deleted; pass it back as @after_version to wait
 * for the key to exist again), on timeout too.
 * Returns 0, SHOAL_ETIMEOUT, -EINTR (a signal arrived), SHOAL_EINVAL
 * (inside a section), SHOAL_ENOREADERS, SHOAL_ETOOBIG, SHOAL_EFORKED.
 */
SHOAL_EXPORT int shoal_wait(shoal *c, const void *key, size_t klen,
                            uint64_t after_version, int timeout_ms,
                            uint64_t *version) SHOAL_WUR SHOAL_NONNULL(1);

/* ----------------------------------------------------------------- writes */

/*
 * Each write is one request to the broker and one commit, acknowledged
 * after it is published: a section begun after the call returns sees it.
 * *version (optional) receives the commit's version.
 * Blocking: up to shoal_options.timeout_ms for the reply (SHOAL_ETIMEOUT;
 * the connection is then dropped because the late reply could not be told
 * apart). A broken connection (the broker restarted) is re-established
 * first, retrying for up to connect_timeout_ms; a request that was sent but
 * got no reply returns SHOAL_EUNAVAIL and may or may not have been applied
 * (it is never resent). Pipelined requests still outstanding are collected
 * and their replies discarded first (see shoal_pipe_*).
 * Errors: SHOAL_ETOOBIG (checked locally, nothing is sent), SHOAL_EINVAL,
 * SHOAL_ENOSPC, SHOAL_EUNAVAIL, SHOAL_ETIMEOUT, SHOAL_EFORKED,
 * SHOAL_EDENIED, SHOAL_EPROTOCOL, -errno; shoal_last_error() has the
 * detail.
 */
SHOAL_EXPORT int shoal_put(shoal *c, const void *key, size_t klen,
                           const void *val, size_t vlen, uint64_t *version)
    SHOAL_NONNULL(1);
/* @ttl_ms 0: no TTL. */
SHOAL_EXPORT int shoal_put_ttl(shoal *c, const void *key, size_t klen,
                               const void *val, size_t vlen, uint32_t ttl_ms,
                               uint64_t *version) SHOAL_NONNULL(1);
/* SHOAL_ENOTFOUND if the key is absent (nothing is written). */
SHOAL_EXPORT int shoal_del(shoal *c, const void *key, size_t klen)
    SHOAL_NONNULL(1);
/* Put if the key's version is @expect (0: must be absent). On
 * SHOAL_ECONFLICT *version receives the current version (0: absent). */
SHOAL_EXPORT int shoal_cas(shoal *c, const void *key, size_t klen,
                           uint64_t expect, const void *val, size_t vlen,
                           uint64_t *version) SHOAL_WUR SHOAL_NONNULL(1);

/* Atomic batches: all operations become visible in one commit, or none.
 * The builder copies keys and values into one growing buffer; it checks
 * each op's sizes at once (SHOAL_ETOOBIG, SHOAL_EINVAL, -ENOMEM; the op is
 * then not added). A batch belongs to no handle until committed and may be
 * committed on any handle; one thread at a time. */
SHOAL_EXPORT int shoal_batch_new(shoal *c, shoal_batch **out) SHOAL_WUR
    SHOAL_NONNULL(2);
SHOAL_EXPORT int shoal_batch_put(shoal_batch *b, const void *key, size_t klen,
                                 const void *val, size_t vlen, uint32_t ttl_ms)
    SHOAL_NONNULL(1);
/* Delete; an absent key fails the whole batch (SHOAL_ENOTFOUND). */
SHOAL_EXPORT int shoal_batch_del(shoal_batch *b, const void *key, size_t klen)
    SHOAL_NONNULL(1);
/* Delete if present. */
SHOAL_EXPORT int shoal_batch_del_any(shoal_batch *b, const void *key,
                                     size_t klen) SHOAL_NONNULL(1);
SHOAL_EXPORT int shoal_batch_cas(shoal_batch *b, const void *key, size_t klen,
                                 uint64_t expect, const void *val, size_t vlen)
    SHOAL_NONNULL(1);
SHOAL_EXPORT size_t shoal_batch_len(const shoal_batch *b);
/* Send and wait (as a single write above). *seq (optional) receives the
 * commit. On failure nothing was applied and shoal_batch_failed() names the
 * op (-1: none, e.g. a transport error). The batch stays valid (commit
 * again, or free it). A batch whose frame exceeds the broker's max frame is
 * refused locally with SHOAL_ETOOBIG. */
SHOAL_EXPORT int shoal_batch_commit(shoal *c, shoal_batch *b,
                                    uint64_t *seq) SHOAL_WUR
    SHOAL_NONNULL(1, 2);
SHOAL_EXPORT long shoal_batch_failed(const shoal_batch *b);
/* Empty the batch, keeping its memory. */
SHOAL_EXPORT void shoal_batch_reset(shoal_batch *b);
SHOAL_EXPORT void shoal_batch_free(shoal_batch *b);

/*
 * Pipelined writes (like hiredis's redisAppendCommand/redisGetReply):
 * queue many requests, then collect the replies in order. Requests are
 * sent when the output buffer passes 64 KiB, at shoal_pipe_flush, or when
 * shoal_pipe_recv has to wait for a reply (one write per flush; replies are
 * read many per read). Each append returns 0 (queued) or an error for that
 * request alone (then it is not queued: SHOAL_ETOOBIG, SHOAL_EINVAL,
 * SHOAL_EFORKED, SHOAL_EUNAVAIL).
 * shoal_pipe_recv returns the status of the oldest outstanding request and
 * its version (or, for a CAS conflict, the current version);
 * SHOAL_EINVAL when nothing is outstanding.
 * Broken connection: each outstanding request whose reply had not arrived
 * gets SHOAL_EUNAVAIL from shoal_pipe_recv (it may have been applied), and
 * appends fail with SHOAL_EUNAVAIL until those are collected; the next
 * append after that reconnects. A reply timeout (SHOAL_ETIMEOUT) drops the
 * connection the same way.
 * A synchronous call on the handle (put, del, cas, batch commit, ping,
 * stats) first collects the outstanding replies and discards them.
 */
SHOAL_EXPORT int shoal_pipe_put(shoal *c, const void *key, size_t klen,
                                const void *val, size_t vlen, uint32_t ttl_ms)
    SHOAL_NONNULL(1);
SHOAL_EXPORT int shoal_pipe_del(shoal *c, const void *key, size_t klen)
    SHOAL_NONNULL(1);
SHOAL_EXPORT int shoal_pipe_cas(shoal *c, const void *key, size_t klen,
                                uint64_t expect, const void *val, size_t vlen)
    SHOAL_NONNULL(1);
/* Send what is queued. Returns 0, SHOAL_EUNAVAIL, SHOAL_ETIMEOUT. */
SHOAL_EXPORT int shoal_pipe_flush(shoal *c) SHOAL_NONNULL(1);
SHOAL_EXPORT int shoal_pipe_recv(shoal *c, uint64_t *version) SHOAL_WUR
    SHOAL_NONNULL(1);
/* Requests appended and not yet collected. */
SHOAL_EXPORT size_t shoal_pipe_pending(const shoal *c);

/* ------------------------------------------------------- broker requests */

/* Round trip to the broker (reconnecting if needed). Returns 0 or the
 * codes of a write. */
SHOAL_EXPORT int shoal_ping(shoal *c) SHOAL_NONNULL(1);

typedef struct shoal_stats {
  uint64_t keys, key_bytes, value_bytes;
  uint64_t size, bytes_used, bytes_free;
  uint64_t commit_seq, commits, records;
  uint64_t retired, retired_bytes, reclaimed, expired;
  uint64_t index_capacity, index_used;
  uint64_t readers_claimed, readers_busy;
  uint64_t oldest_snapshot, oldest_snapshot_age_ms;
  uint64_t connections, connections_total, uptime_ms, denied;
  uint64_t bytes_in, bytes_out;
  int broker_pid;
  /* requests by type and errors by code name, "name=value" pairs joined
   * by spaces ("put=10 get=2"); owned by the handle until the next call */
  const char *requests;
  const char *errors;
  /* utilities (HashFile, TailLog); appended last, so the layout above
   * stays what bindings already mirror */
  uint64_t hash_cache_hits, hash_cache_misses;
  uint64_t hash_cache_entries, hash_cache_bytes, hash_bytes_read;
  uint64_t followers, jobs_queued;
  unsigned workers;
} shoal_stats;

/* The broker's Stats. Returns 0 or the codes of a write. */
SHOAL_EXPORT int shoal_stats_get(shoal *c, shoal_stats *out) SHOAL_WUR
    SHOAL_NONNULL(1, 2);

/* ------------------------------------------------------------ utilities
 *
 * File hashing and log tailing through the broker (DESIGN section 6, the
 * HashFile and TailLog requests): the client opens the file itself and
 * passes the descriptor (SCM_RIGHTS), so the broker reads only what this
 * process could read. The broker keeps one hash cache for every client on
 * the host, keyed by (st_dev, st_ino, size, mtime, ctime, algorithm): a
 * second request for an unchanged file is answered without reading it.
 * Both run on the broker's worker pool, never on its event loop.
 */

/* Longest hex digest plus its NUL (sha512, blake2b-512). */
#define SHOAL_HASH_HEX_MAX 129
#define SHOAL_HASH_MAX 64

/*
 * shoal_hash_fd - the digest of the whole file open at @fd (read from its
 * start, whatever its offset), through the broker.
 * @alg:        "blake2b" (also NULL or ""), "sha256" or "sha512".
 * @digest_len: 0 for the algorithm's default (blake2b 32 bytes, sha256 32,
 *              sha512 64); blake2b takes 16..64 (hashlib's blake2b() is
 *              64, b2sum's default is 64); the others only their own.
 *              The length is part of the cache key (blake2b-256 and
 *              blake2b-512 of one file are two entries).
 * @digest:     receives the raw digest; @cap bytes there.
 * Returns the digest's length (> 0), or SHOAL_EINVAL (unknown algorithm or
 * length: the message lists the valid ones), SHOAL_ENOTREG (a directory,
 * FIFO, socket or device), SHOAL_ECHANGED (the file kept changing while it
 * was read), SHOAL_ETOOBIG (@cap short), -errno of a read (-EIO, -EACCES
 * when @fd was not opened for reading), and the codes of a write
 * (SHOAL_EUNAVAIL, SHOAL_ETIMEOUT, ...).
 */
SHOAL_EXPORT int shoal_hash_fd(shoal *c, int fd, const char *alg,
                               size_t digest_len, void *digest,
                               size_t cap) SHOAL_WUR SHOAL_NONNULL(1);

/* shoal_hash_fd of @path (opened O_RDONLY here), digest as lowercase hex
 * into @hex (SHOAL_HASH_HEX_MAX bytes suffice). @alg's default length.
 * Returns the hex length, or the codes of shoal_hash_fd and of open(2)
 * (-ENOENT, -EACCES, ...). */
SHOAL_EXPORT int shoal_hash_file(shoal *c, const char *path, const char *alg,
                                 char *hex, size_t cap) SHOAL_WUR
    SHOAL_NONNULL(1, 2, 4);

/* Lines returned by a tail: line[i] points at len[i] bytes (the line
 * without its '\n'; a '\r' before it is kept; NUL-terminated as well, but
 * a line may hold NUL bytes), in file order. As read_last_n_lines
 * (UTILITIES.md) splits: when the data does not end with '\n', the last
 * line is the unterminated rest. One allocation: free with
 * shoal_lines_free(). */
typedef struct shoal_lines {
  size_t n;
  const char **line;
  size_t *len;
} shoal_lines;

SHOAL_EXPORT void shoal_lines_free(shoal_lines *l);

/*
 * shoal_tail_fd - the last @n lines of the file open at @fd, read from its
 * end by the broker (the cost does not grow with the file's size).
 * @n == 0 or an empty file: 0 lines. The reply is bounded by the broker's
 * --max-frame: lines that would not fit get SHOAL_ETOOBIG (ask for fewer).
 * Returns 0 with *@out set, or SHOAL_ENOTREG, -errno of a read, the codes
 * of a write.
 */
SHOAL_EXPORT int shoal_tail_fd(shoal *c, int fd, size_t n,
                               shoal_lines **out) SHOAL_WUR
    SHOAL_NONNULL(1, 4);
/* shoal_tail_fd of @path (opened here: also -ENOENT, -EACCES, ...). */
SHOAL_EXPORT int shoal_tail(shoal *c, const char *path, size_t n,
                            shoal_lines **out) SHOAL_WUR
    SHOAL_NONNULL(1, 2, 4);

/*
 * Following a file (tail -f): the last @n lines, then every line appended
 * after them, streamed by the broker as they are written (inotify, no
 * polling). A line is delivered once its '\n' is written. The follower
 * has its own connection to the broker (the handle it was opened from
 * stays usable, and may even be closed first).
 *
 * Events:
 *   SHOAL_FOLLOW_LINE       a line (data/len as shoal_lines; offset: where
 *                           it starts in the file)
 *   SHOAL_FOLLOW_TRUNCATED  the file shrank below what was read (offset: its
 *                           new size); following goes on from its start, as
 *                           a copytruncate rotation needs
 *   SHOAL_FOLLOW_ROTATED    the file was renamed or unlinked (a rotation).
 *                           With SHOAL_FOLLOW_REOPEN the follower then opens
 *                           @path again and follows the new file from its
 *                           start (tail -F): the event comes once, when the
 *                           new file is followed (data: the path; until a
 *                           file exists at the path, the old one is still
 *                           followed). Without it the follower stays on the
 *                           old file (tail -f) and the event comes at once
 *                           (data NULL, offset: where it was).
 *   SHOAL_FOLLOW_IDLE       nothing happened for @idle_ms (callback form
 *                           only: a chance to stop)
 */
enum {
  SHOAL_FOLLOW_LINE = 0,
  SHOAL_FOLLOW_TRUNCATED = 1,
  SHOAL_FOLLOW_ROTATED = 2,
  SHOAL_FOLLOW_IDLE = 3,
};
/* shoal_follow_open flags */
#define SHOAL_FOLLOW_REOPEN 0x1u

typedef struct shoal_follow shoal_follow;
typedef struct shoal_follow_event {
  int kind;        /* SHOAL_FOLLOW_* */
  const char *data; /* valid until the next call on the follower */
  size_t len;
  uint64_t offset;
} shoal_follow_event;

/* Start following @path (opened here). Returns 0 with *@out set, or the
 * codes of shoal_tail. */
SHOAL_EXPORT int shoal_follow_open(shoal *c, const char *path, size_t n,
                                   unsigned flags, shoal_follow **out) SHOAL_WUR
    SHOAL_NONNULL(1, 2, 5);
/* The next event, waiting up to @timeout_ms (-1: forever). Returns 0 with
 * *@ev set, SHOAL_ETIMEOUT when none came, -EINTR, SHOAL_EUNAVAIL (the
 * broker went away: lines may have been missed; open a new follower), or
 * an error the broker reported (it ends the follow). */
SHOAL_EXPORT int shoal_follow_next(shoal_follow *f, int timeout_ms,
                                   shoal_follow_event *ev) SHOAL_WUR
    SHOAL_NONNULL(1, 3);
/* The follower's connection, for event loops: it polls readable when
 * more events arrive from the broker. Events already received are not
 * signalled by it (the first lines, or several lines of one message):
 * drain with shoal_follow_next(f, 0, ...) until SHOAL_ETIMEOUT before
 * waiting on it. */
SHOAL_EXPORT int shoal_follow_fd(const shoal_follow *f) SHOAL_NONNULL(1);
/* Stop following (the broker is told by the connection's close). NULL is a
 * no-op. */
SHOAL_EXPORT void shoal_follow_close(shoal_follow *f);

/* The callback form: calls @fn for each event until it returns non-zero
 * (then returns that value) or an error ends the follow (returns it).
 * @fn is called with SHOAL_FOLLOW_IDLE after @idle_ms without events
 * (0: 200 ms), so it can stop. */
typedef int (*shoal_follow_fn)(void *arg, const shoal_follow_event *ev);
SHOAL_EXPORT int shoal_tail_follow(shoal *c, const char *path, size_t n,
                                   unsigned flags, int idle_ms,
                                   shoal_follow_fn fn, void *arg)
    SHOAL_NONNULL(1, 2, 6);

/* ------------------------------------------------ local utility functions
 *
 * SkyPilot's utility functions (UTILITIES.md) that need no broker: plain
 * functions of libshoal, no socket, for C and Go callers (Python's
 * shoal.utils uses them where a ctypes call costs less than the Python it
 * replaces). Same results as upstream; the string ones write into a
 * caller's buffer and return the length written (without the NUL, which
 * is always written when @cap > 0) or SHOAL_ETOOBIG with nothing useful
 * in @out when @cap is short. Defined in libclient/util.c.
 */

/* int(hex, 16) in base 36 (0-9a-z); "0" for zero. @hex (@len bytes, UTF-8):
 * any length, with what Python's int() accepts around the digits:
 * surrounding whitespace (Unicode spaces included), a '+' (or a '-' on
 * zero: "-0" is "0"), a "0x" prefix, single '_' between digits.
 * SHOAL_EINVAL for anything else: invalid hex, a negative value (utils.py
 * raises ValueError; upstream would loop forever), and non-ASCII digits
 * (which int() would take: a binding falls back to Python for them). */
SHOAL_EXPORT int shoal_util_base36_encode(const char *hex, size_t len,
                                          char *out, size_t cap);
/* format_float for a float: whole -> "%.0f", else "%.{precision}f", as
 * Python prints them (exact digits, ties to even, "nan" whatever the sign,
 * "inf"/"-inf", "-0", '.' whatever the locale). SHOAL_EINVAL for
 * @precision < 0 (Python's ValueError). An int is the binding's str(). */
SHOAL_EXPORT int shoal_util_format_float(double num, int precision, char *out,
                                         size_t cap);
/* truncate_long_string on UTF-8 text, counting characters (code points).
 * SHOAL_EINVAL if @s is not valid UTF-8 (a Python str with lone
 * surrogates can not reach here). */
SHOAL_EXPORT int shoal_util_truncate_long_string(const char *s, size_t len,
                                                 size_t max_length,
                                                 int truncate_middle, char *out,
                                                 size_t cap);
/* get_cpu_count: > 0, or SHOAL_EINVAL when SKYPILOT_POD_CPU_CORE_LIMIT is
 * set but not a number (or nan: int(nan) is ValueError), -ERANGE when it is
 * outside 0..INT_MAX (inf is OverflowError upstream; a negative value,
 * which upstream returns, can not be told from an error here) or a cgroup
 * file holds inf. May be 0 (a fractional cgroup limit below 1, as
 * upstream). Honours $SHOAL_CGROUP_ROOT (default /sys/fs/cgroup). */
SHOAL_EXPORT int shoal_util_get_cpu_count(void);
/* get_mem_size_gb into *@gb: 0, or SHOAL_EINVAL (an unparsable
 * SKYPILOT_POD_MEMORY_* variable). Honours $SHOAL_CGROUP_ROOT and
 * $SHOAL_PROC_ROOT (meminfo). */
SHOAL_EXPORT int shoal_util_get_mem_size_gb(double *gb) SHOAL_NONNULL(1);
/* get_parallel_threads; @cloud may be NULL. */
SHOAL_EXPORT int shoal_util_get_parallel_threads(const char *cloud);
/* get_max_workers_for_file_mounts: @sources are the dict's values. The
 * one-time warning for an RLIMIT_NOFILE below 1024 goes to stderr. Returns
 * >= 1, or -errno when a source directory can not be listed (os.listdir
 * raises upstream), SHOAL_EINVAL for NULL @sources with @n > 0. */
SHOAL_EXPORT int
shoal_util_get_max_workers_for_file_mounts(const char *const *sources, size_t n,
                                           const char *cloud);
/* 1 alive, 0 not (gone, or a zombie), SHOAL_EINVAL for @pid <= 0 or beyond
 * INT_MAX, -errno for a kill(2) failure other than ESRCH/EPERM. Honours
 * $SHOAL_PROC_ROOT (default /proc) for the zombie check. */
SHOAL_EXPORT int shoal_util_is_process_alive(long pid);
/* 5 x the entries directly in @path; 0 if it is not a readable directory. */
SHOAL_EXPORT long shoal_util_estimate_fd_for_directory(const char *path);
/* The first port in [@start_port, 65535) an AF_INET TCP socket can bind on
 * INADDR_ANY (no SO_REUSEADDR, as Python's bind(('', port))); 0 for
 * @start_port 0 (port 0 always binds, as upstream). -EADDRINUSE when none
 * is free (also @start_port >= 65535), SHOAL_EINVAL for a negative one,
 * -errno when no socket can be created (-EMFILE). */
SHOAL_EXPORT int shoal_util_find_free_port(int start_port);
/* read_last_n_lines, locally (no broker): the raw lines as shoal_tail
 * gives them; decoding and rstrip('\r') are the caller's. @chunk_size only
 * sets the read size (the result does not depend on it). @n == 0: 0 lines
 * if @path exists (stat), nothing read, as upstream. Returns 0 with *@out
 * set, SHOAL_EINVAL (@chunk_size 0), SHOAL_ENOTREG (a directory, FIFO,
 * ...), SHOAL_ECHANGED (the file shrank while read), -errno (-ENOENT). */
SHOAL_EXPORT int shoal_util_read_last_n_lines(const char *path, size_t n,
                                              size_t chunk_size,
                                              shoal_lines **out) SHOAL_WUR
    SHOAL_NONNULL(1, 4);
/* hash_file, locally (no broker, no cache): as shoal_hash_fd (the digest's
 * length, or its codes and those of open(2)). */
SHOAL_EXPORT int shoal_util_hash_file(const char *path, const char *alg,
                                      size_t digest_len, void *digest,
                                      size_t cap) SHOAL_WUR SHOAL_NONNULL(1, 4);

/* ---------------------------------------------------------------- misc */

/* shoal_strerror() and shoal_errname() come from shoal/error.h. */
/* Limits, as functions for FFI callers. */
SHOAL_EXPORT size_t shoal_key_max(void);
/* The largest value a put may carry: the broker's (from Hello), or the
 * format's when @c is NULL. */
SHOAL_EXPORT size_t shoal_value_max(const shoal *c);
/* "0.1.0" */
SHOAL_EXPORT const char *shoal_version(void);

/* ============================================================ FFI helpers
 *
 * For callers through a foreign-function interface (Python's ctypes, in
 * libclient/python), where each call costs far more than the work of a get:
 * these fold what would be several calls (or a callback per key) into one,
 * with few arguments. C callers have no reason to use them. Defined in
 * libclient/ffi.c, on top of the functions above only.
 *
 * Every helper takes a shoal_ffi_buf, a parameter block the caller owns:
 * the handle, an output buffer for values, out-fields, and optionally the
 * caller's object constructors. Its @c may be NULL (the caller closed the
 * handle): the helpers then return SHOAL_ECLOSED instead of touching
 * anything, so a binding can invalidate the handle in one store.
 * Threads: one shoal_ffi_buf and its handle are used by one thread at a
 * time (the handle's rule).
 */
typedef struct shoal_ffi_buf {
  shoal *c;         /* the handle; NULL: every helper returns SHOAL_ECLOSED */
  void *buf;        /* output buffer: values (and scanned keys), packed */
  size_t cap;       /* bytes at @buf */
  size_t need;      /* SHOAL_ETOOBIG because @buf is short: bytes needed */
  uint64_t version; /* the value's, after a get of one key */
  uint64_t base;    /* subtracted from every address a helper reports */
  uint64_t at;      /* shoal_ffi_get_view: the value's address - @base */
  /* The caller's object constructors, for shoal_ffi_get_bytes (CPython:
   * PyBytes_FromStringAndSize and PyLong_FromLong, called with the GIL
   * held). Each returns a new object, or NULL (the caller's error). */
  void *(*bytes)(const char *data, ptrdiff_t len);
  void *(*code)(long err);
} shoal_ffi_buf;

/*
 * Addresses in the mapping are reported minus @base: a binding that wraps
 * all memory from @base up as one read-only buffer (Python: one memoryview)
 * then gets indices into it and slices a view with no further call. Key
 * lengths are ints, not size_t, so that ctypes can pass a Python int
 * without declared argument types (it passes a C int); keys are at most
 * shoal_key_max() bytes anyway (a negative @klen is SHOAL_EINVAL).
 */

/*
 * shoal_ffi_get - shoal_get_copy into @x->buf, in or outside a section.
 * Returns the value's length (>= 0; the value is at @x->buf, its version
 * in @x->version), or a negative code: SHOAL_ENOTFOUND, SHOAL_ETOOBIG (the
 * key is too long: @x->need is 0; or @x->buf is short: @x->need is the
 * value's length, nothing was copied: grow and call again), SHOAL_ECLOSED,
 * and the other codes of shoal_get_copy. Values are at most
 * shoal_value_max() (< 2^31), so the length fits the return value.
 */
SHOAL_EXPORT int shoal_ffi_get(shoal_ffi_buf *x, const void *key,
                               int klen) SHOAL_WUR SHOAL_NONNULL(1);

/*
 * shoal_ffi_get_view - shoal_get inside a section (zero-copy): returns the
 * value's length, its address (minus @x->base) in @x->at and its version
 * in @x->version; or the negative codes of shoal_get, or SHOAL_ECLOSED.
 * @x->buf is not used. The address is valid until the section ends.
 */
SHOAL_EXPORT int shoal_ffi_get_view(shoal_ffi_buf *x, const void *key,
                                    int klen) SHOAL_WUR SHOAL_NONNULL(1);

/*
 * shoal_ffi_get_bytes - a get that returns the caller's object: the value
 * copied straight into a new object by @x->bytes (in a section of its own,
 * or in the open one), or @x->code(err) for a negative code (those of
 * shoal_ffi_get; a value never is too big for it). NULL only when a
 * constructor returned NULL. With ctypes (restype py_object) a get is then
 * one call and no slicing, and needs no buffer. @x->version is set.
 */
SHOAL_EXPORT void *shoal_ffi_get_bytes(shoal_ffi_buf *x, const void *key,
                                       int klen) SHOAL_NONNULL(1);

/*
 * shoal_ffi_get_many - look @n keys up in one snapshot (the open section,
 * else one taken for the call) with shoal_get_many's prefetching.
 * @keys:   the keys, packed back to back; @klens[i] is the length of key i.
 * @start, @end: per key, where its value is: [start[i], end[i]).
 * @status: per key, what shoal_get returned (0, SHOAL_ENOTFOUND,
 *          SHOAL_ETOOBIG for a too-long key, ...); start = end = 0 unless 0.
 * @views:  0: values are copied into @x->buf, packed, and start/end are
 *          offsets into it; if they do not fit, nothing is valid, the
 *          return is SHOAL_ETOOBIG and @x->need the bytes all of them take.
 *          1: nothing is copied and start/end are addresses in the mapping
 *          minus @x->base (only inside a section: valid until it ends).
 * Returns the number of keys found (>= 0), or SHOAL_ENOSECTION (@views
 * outside a section), SHOAL_ETOOBIG (@x->buf short, see above),
 * SHOAL_EINVAL, SHOAL_EFORKED, SHOAL_ENOREADERS, SHOAL_ECLOSED.
 */
SHOAL_EXPORT int shoal_ffi_get_many(shoal_ffi_buf *x, size_t n,
                                    const void *keys, const size_t *klens,
                                    uint64_t *start, uint64_t *end, int *status,
                                    int views) SHOAL_WUR SHOAL_NONNULL(1);

/*
 * shoal_ffi_scan - one page of shoal_scan over [@s, @e) (@slen 0: from the
 * first key; @elen 0: to the last), in the open section, else in one taken
 * for the call. At most @max items, and no more than fit in @x->buf.
 * @meta:  5 entries per item: key start, key end (offsets into @x->buf,
 *         where the keys are copied), value start, value end (offsets into
 *         @x->buf when @views is 0; addresses in the mapping minus
 *         @x->base when @views is 1, valid until the section ends: only
 *         inside a section), version.
 * @more:  set to 1 when the page stopped early (@max items, or @x->buf
 *         full) so more items may follow: the next page starts just after
 *         the last key returned (that key plus a 0 byte); 0 when the range
 *         is exhausted.
 * Returns the number of items written, or a negative code: SHOAL_ETOOBIG
 * with @x->need the bytes the first item needs when not even it fits
 * (grow @x->buf and call again), SHOAL_ENOSECTION (@views outside a
 * section), SHOAL_ECLOSED, and the codes of shoal_scan.
 */
SHOAL_EXPORT int shoal_ffi_scan(shoal_ffi_buf *x, const void *s, size_t slen,
                                const void *e, size_t elen, size_t max,
                                uint64_t *meta, int views, int *more) SHOAL_WUR
    SHOAL_NONNULL(1);

#ifdef __cplusplus
}
#endif
#endif /* SHOAL_SHOAL_H */
