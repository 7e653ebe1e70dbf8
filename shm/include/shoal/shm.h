/*
 * shoal/shm.h - the shared-memory store: internal API (prefix shm_).
 *
 * Used by the broker (the single writer, through shm_store) and by libshoal
 * and shoal-inspect (readers, through shm_view). No sockets, no threads here.
 *
 * Objects of a store named NAME in directory DIR (default /dev/shm):
 *   DIR/shoal.NAME.data     header, hash index, skiplist, entries, values,
 *                           allocator state; writer maps it read-write,
 *                           readers read-only.
 *   DIR/shoal.NAME.readers  reader slots and the watch waiter count; mapped
 *                           read-write by everyone.
 *
 * Concurrency contract (details in shm/store.c and shm/read.c):
 *   - exactly one thread of one process mutates the store (shm_store_*);
 *     a second writer on the same objects gets SHOAL_ELOCKED;
 *   - readers never lock, never write the data object and never retry a get:
 *     shm_get/shm_get_many/shm_scan are wait-free;
 *   - a read section (shm_read_begin .. shm_read_end) sees the store exactly
 *     as of one commit; everything a get returns stays valid and unchanged
 *     until the section ends.
 *   - a shm_view is used by one thread at a time.
 */
#ifndef SHOAL_SHM_H
#define SHOAL_SHM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "shoal/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define SHM_WUR __attribute__((warn_unused_result))
#else
#define SHM_WUR
#endif

/* Limits. A key is at most 1 KiB: an entry (header, tower, key, first value)
 * must stay small enough to keep the get path at two cache misses, and Redis,
 * LMDB (511) and memcached (250) users already keep keys short. Values may be
 * up to 1 GiB (u32 length); the broker's --max-frame bounds them further. */
#define SHM_KEY_MAX 1024u
#define SHM_VALUE_MAX (1u << 30)
#define SHM_DEFAULT_SIZE (1ull << 30)      /* 1 GiB reserved, sparse */
#define SHM_MIN_SIZE (4ull << 20)          /* room for metadata + a few slabs */
#define SHM_MAX_SIZE (1ull << 46)          /* offsets fit the 48-bit slot field */
#define SHM_DEFAULT_READER_SLOTS 1024u
#define SHM_MAX_READER_SLOTS 65536u
#define SHM_DOORBELLS 1024u                /* watch doorbells in the header */
#define SHM_NAME_MAX 64u                   /* [A-Za-z0-9._-]{1,64} */

/* ---------------------------------------------------------------- types -- */

typedef struct shm_store shm_store; /* the writer's handle */
typedef struct shm_view shm_view;   /* a reader's handle: mapping + slot */

/* A value as seen inside a read section. data points into the read-only
 * mapping and stays valid until shm_read_end(). */
typedef struct shm_val {
  const void *data;
  size_t len;
  uint64_t version;    /* commit_seq of the commit that wrote it */
  uint64_t expires_at; /* CLOCK_REALTIME ms, 0 = never */
} shm_val;

typedef struct shm_key {
  const void *data;
  size_t len;
} shm_key;

typedef struct shm_config {
  const char *name;       /* store name; NULL = "default" */
  const char *dir;        /* directory of the objects; NULL = $SHOAL_SHM_DIR or /dev/shm */
  uint64_t size;          /* bytes reserved for the data object; 0 = default */
  uint32_t reader_slots;  /* 0 = default */
  uint32_t mode;          /* data object mode; 0 = 0640 (readers object: 0660) */
} shm_config;

/* shm_store_open flags */
#define SHM_CREATE 0x1u   /* create the store if it does not exist */
#define SHM_EXCL 0x2u     /* with SHM_CREATE: fail with -EEXIST if it exists */
#define SHM_TRUNC 0x4u    /* replace an existing store with an empty one */

/* Batch operations (shm_batch). */
enum shm_op_kind {
  SHM_OP_PUT = 1, /* set key to val (expires_at optional) */
  SHM_OP_DEL = 2, /* delete key; SHOAL_ENOTFOUND if absent fails the batch */
  SHM_OP_CAS = 3, /* put only if the key's version == expect (0: absent) */
  SHM_OP_DEL_ANY = 4, /* delete if present; absent is not an error */
};

typedef struct shm_op {
  int kind;
  const void *key;
  size_t klen;
  const void *val;
  size_t vlen;
  uint64_t expect;     /* SHM_OP_CAS */
  uint64_t expires_at; /* CLOCK_REALTIME ms, 0 = never */
} shm_op;

/* Store-wide figures. Filled by the writer (shm_store_stats) or, from the
 * header counters, by any reader (shm_view_stats). */
#define SHM_NCLASSES 48
typedef struct shm_stats {
  uint64_t size;           /* bytes reserved */
  uint64_t backed;         /* bytes backed with fallocate so far */
  uint64_t heap_used;      /* bytes handed out by the allocator (blocks, rounded) */
  uint64_t heap_free;      /* bytes in free lists (reusable) */
  uint64_t heap_top;       /* bytes between heap start and the bump pointer */
  uint64_t meta_bytes;     /* header + doorbells + page table */
  uint64_t keys;           /* live keys (not tombstoned, TTL not considered) */
  uint64_t key_bytes;      /* sum of live key lengths */
  uint64_t value_bytes;    /* sum of live current value lengths */
  uint64_t records;        /* value records allocated, current and retained */
  uint64_t entries;        /* entries allocated, live and dead */
  uint64_t commit_seq;
  uint64_t commits;
  uint64_t index_capacity; /* slots of the current hash index */
  uint64_t index_used;     /* occupied slots (incl. deleted markers) */
  uint64_t retired;        /* blocks waiting for the grace period */
  uint64_t retired_bytes;
  uint64_t reclaimed;      /* blocks freed after their grace period, total */
  uint64_t expired;        /* keys deleted because their TTL passed, total */
  uint64_t readers_busy;   /* reader slots inside a section */
  uint64_t readers_claimed;
  uint64_t oldest_snapshot;    /* smallest snapshot of a busy reader, 0 none */
  uint64_t oldest_snapshot_age_ms;
  uint32_t nclasses;
  uint32_t class_size[SHM_NCLASSES];
  uint64_t class_used[SHM_NCLASSES];  /* blocks in use per class */
  uint64_t class_free[SHM_NCLASSES];  /* blocks on the free list per class */
  uint64_t extents_used;              /* pages in large-value extents */
  uint64_t pages_free;                /* pages in free page runs */
} shm_stats;

/* ------------------------------------------------------- writer: shm_store */

/*
 * shm_store_open - create or attach the store as its single writer.
 * @out:   receives the handle.
 * @cfg:   name, dir, size, reader slots; NULL for all defaults.
 * @flags: SHM_CREATE, SHM_EXCL, SHM_TRUNC.
 *
 * Attaching an existing store validates the header (magic, format version,
 * layout fingerprint, geometry) and every reachable structure, then rebuilds
 * the allocator's free lists from what is reachable (recovery after a crash
 * of the previous writer) and clears reader slots of dead processes. Memory
 * that was allocated but unreachable is retired, not reused at once, because
 * readers that outlived the old writer may still hold it.
 *
 * What recovery repairs: every state a writer killed at any instruction can
 * leave (records of the unpublished commit, half-linked skiplist towers, an
 * entry unlinked from one structure but not the other, half-written
 * page-table runs), and, by the same relinking, damage that loses no key (a
 * skiplist link skipping entries, a live entry's index slot marked
 * deleted). Anything else (a bad offset, length, hash, tag or version order)
 * is refused with SHOAL_ECORRUPT and the segment is left byte for byte as it
 * was. A successful attach publishes one empty commit (stats.commits counts
 * it) so that sections begun afterwards see the repairs.
 *
 * Returns 0, -ENOENT (no store and no SHM_CREATE), -EEXIST (SHM_EXCL),
 * SHOAL_ELOCKED (another writer holds the store), SHOAL_EVERSION (format or
 * fingerprint mismatch), SHOAL_ECORRUPT (validation failed; nothing is
 * changed), SHOAL_ENOSPC (no room to back the metadata), SHOAL_EINVAL (bad
 * name or size), or another -errno. On failure shm_store_lasterr(NULL)
 * explains it (per thread) for the caller's log; nothing is printed.
 * Call from one thread; the handle is then that writer's.
 */
SHM_WUR int shm_store_open(shm_store **out, const shm_config *cfg, unsigned flags);

/* shm_store_close - detach. @clean != 0 marks a clean shutdown in the header
 * (the next attach still validates). Readers keep working on their mappings. */
void shm_store_close(shm_store *s, int clean);

/* shm_store_unlink - remove both objects of store @name in @dir (NULL:
 * default). Mapped handles keep working until closed. Returns 0 or -errno. */
int shm_store_unlink(const char *name, const char *dir);

/*
 * Writes. Each is one commit: on success the new commit_seq is stored with
 * release semantics before the function returns, so every section begun
 * afterwards (in any process) sees the write; *version (if non-NULL)
 * receives it. On failure nothing is visible and nothing is lost.
 *
 * @expires_at: CLOCK_REALTIME milliseconds; 0 = no TTL. A value in the past
 * is accepted and is immediately invisible.
 *
 * Errors: SHOAL_ETOOBIG (klen > SHM_KEY_MAX or vlen > SHM_VALUE_MAX),
 * SHOAL_ENOSPC (store full or tmpfs full: the store still serves reads and
 * accepts deletes), SHOAL_ENOTFOUND (shm_del of an absent key),
 * SHOAL_ECONFLICT (shm_cas whose @expect does not match; *version then
 * receives the current version, 0 if absent), SHOAL_ECORRUPT.
 */
SHM_WUR int shm_put(shm_store *s, const void *key, size_t klen, const void *val,
                    size_t vlen, uint64_t expires_at, uint64_t *version);
SHM_WUR int shm_del(shm_store *s, const void *key, size_t klen, uint64_t *version);
SHM_WUR int shm_cas(shm_store *s, const void *key, size_t klen, uint64_t expect,
                    const void *val, size_t vlen, uint64_t expires_at,
                    uint64_t *version);

/*
 * shm_batch - apply @n operations as one commit, all or none.
 * Every CAS and DEL condition is checked and all memory is reserved before
 * anything is linked; if any check fails, nothing is applied, *failed (if
 * non-NULL) receives the index of the failing op and its code is returned.
 * Later ops see earlier ops of the same batch (put then cas on the new
 * version is not expressible; a cas sees the version before the batch).
 * @n == 0 is a no-op returning 0 with *seq = the current commit_seq; so is
 * a batch whose ops change nothing (only SHM_OP_DEL_ANY of absent keys): no
 * commit is made and no version is consumed.
 */
SHM_WUR int shm_batch(shm_store *s, const shm_op *ops, size_t n, uint64_t *seq,
                      size_t *failed);

/*
 * shm_prefetch_ops - a hint: bring the index slots, entries and current
 * records of the @n ops' keys into cache, overlapping their misses, so that
 * writes to them right afterwards do not wait for memory one key at a time.
 * Only key/klen of each op are used; nothing is changed. The broker calls
 * it for the pipelined writes it is about to apply; shm_batch does it
 * itself.
 */
void shm_prefetch_ops(shm_store *s, const shm_op *ops, size_t n);

/*
 * shm_expire - delete up to @budget keys whose TTL has passed at @now_ms
 * (0 = now). One commit if anything expired. *n (optional) receives the
 * count. Keys are found through a cursor kept in the writer, so repeated
 * calls sweep the whole store in bounded steps.
 */
int shm_expire(shm_store *s, uint64_t now_ms, size_t budget, size_t *n);

/*
 * shm_reclaim - scan the reader table and free retired memory whose grace
 * period is over; also unlink deleted keys nobody can see any more.
 * Writes call it on their own every so often; the broker calls it from its
 * timer too, so memory comes back while no writes arrive. Returns the number
 * of blocks freed.
 */
size_t shm_reclaim(shm_store *s);

/*
 * shm_sweep_readers - clear the slots of readers whose process is gone:
 * the pid does not exist, or it exists with another start time (pid reuse).
 * Returns the number of slots cleared. Cheap enough for a 1 s timer.
 */
unsigned shm_sweep_readers(shm_store *s);

/* Reader slots on behalf of clients (the broker's leases, DESIGN section 4).
 * shm_lease_claim reserves a free slot for process @pid (start time read
 * from /proc) and returns its index (>= 0) or SHOAL_ENOREADERS / -errno.
 * shm_lease_release frees it (a no-op if it now belongs to another pid). */
int shm_lease_claim(shm_store *s, pid_t pid);
void shm_lease_release(shm_store *s, unsigned slot, pid_t pid);
/* shm_lease_adopt - a client reconnecting after a broker restart asks to
 * keep slot @slot: 0 if it is still recorded for live process @pid (same
 * start time), SHOAL_EINVAL otherwise (then claim a new one).
 * shm_lease_owner - the pid recorded in @slot (0: free). */
int shm_lease_adopt(shm_store *s, unsigned slot, pid_t pid);
pid_t shm_lease_owner(shm_store *s, unsigned slot);

void shm_store_stats(shm_store *s, shm_stats *st);

/* The last error's detail ("fallocate of 4 MiB at offset 12 MiB in
 * /dev/shm/shoal.x.data: No space left on device"), for logs. Never NULL.
 * @s NULL: why this thread's last shm_store_open failed. */
const char *shm_store_lasterr(const shm_store *s);

/* A reader view on the writer's own mapping, for the broker's Get/Scan
 * requests. Uses a slot of its own; close it with shm_view_close. */
SHM_WUR int shm_store_view(shm_store *s, shm_view **out);

/* Writer-side wake hook for tests: how many FUTEX_WAKE calls were made. */
uint64_t shm_store_wakes(const shm_store *s);

/* ------------------------------------------------------- reader: shm_view */

/* shm_view_open flags */
#define SHM_VIEW_NOSLOT 0x1u /* do not claim a reader slot (inspect only:
                                shm_read_begin then fails with ENOREADERS) */
#define SHM_VIEW_RDONLY_READERS 0x2u /* map the readers object read-only too
                                        (implies NOSLOT): for shoal-inspect */
#define SHM_VIEW_UNPINNED 0x4u /* RDONLY_READERS, and sections that pin
                                  nothing: shm_read_begin succeeds without a
                                  slot, and shm_read_validate says whether
                                  the writer may have freed what the section
                                  read (shoal-inspect: never writes) */

/*
 * shm_view_open - map store @name in @dir (NULL: default) for reading.
 * The data object is mapped PROT_READ; the readers object read-write.
 * Unless SHM_VIEW_NOSLOT, a free reader slot is claimed for this process
 * (CAS on the slot's owner; the pid and its start time are recorded so a
 * dead reader's slot can be cleared by the writer).
 * Returns 0, -ENOENT (no such store), -EACCES, SHOAL_EVERSION,
 * SHOAL_ECORRUPT (bad magic, geometry or size), SHOAL_ENOREADERS.
 */
SHM_WUR int shm_view_open(shm_view **out, const char *name, const char *dir,
                          unsigned flags);

/* shm_view_attach_slot - like shm_view_open with SHM_VIEW_NOSLOT, then adopt
 * reader slot @slot, which the writer leased to this process (its pid must
 * be recorded there). Returns SHOAL_EINVAL if the slot is not ours. */
SHM_WUR int shm_view_attach_slot(shm_view *v, unsigned slot);

/* shm_view_detach_slot - stop using the attached slot (a section still open
 * is ended first); @release != 0 also frees it in the readers object, for
 * a client closing its handle (only if it still records this pid). */
void shm_view_detach_slot(shm_view *v, int release);

/* Why the last shm_view_open of this thread failed, naming the object and
 * the field ("/dev/shm/shoal.x.data: magic: 0x... is not ..."); "" if it
 * did not fail. Never NULL. */
const char *shm_view_lasterr(void);

/* Releases the slot (if claimed by the view itself) and unmaps. A section
 * still open is ended first. */
void shm_view_close(shm_view *v);

/*
 * shm_read_begin - enter a read section and pin a snapshot: the last
 * published commit. Nestable: inner calls share the outer snapshot.
 * Wait-free: a few loads and stores and one full fence, no system call.
 * Returns 0 or SHOAL_ENOREADERS (view without a slot).
 */
SHM_WUR int shm_read_begin(shm_view *v);
void shm_read_end(shm_view *v);

/*
 * shm_read_validate - for a section of an SHM_VIEW_UNPINNED view: 0 if
 * nothing the section read can have been freed or reused by the writer
 * since shm_read_begin (a seqlock over the writer's reclamation), -EAGAIN
 * if it may have been: discard what was read and begin again. Sections of
 * a view with a slot always validate (0). SHOAL_ENOSECTION outside one.
 * Whatever an unpinned section reads is bounds-checked like any read, so
 * a failed validation costs a retry, never a crash.
 */
int shm_read_validate(shm_view *v);

/* 1 if the writer recorded in the header (pid and start time) is alive. */
int shm_view_writer_alive(const shm_view *v);

/* The snapshot of the current section (0 outside a section). */
uint64_t shm_view_snapshot(const shm_view *v);

/*
 * shm_get - look @key up as of the section's snapshot. Wait-free.
 * Must be called inside a section (else SHOAL_ENOSECTION).
 * Returns 0 and fills @out (a view into the mapping, valid until
 * shm_read_end), SHOAL_ENOTFOUND (absent, deleted or expired at the
 * section's first look at the clock), SHOAL_ETOOBIG (klen > SHM_KEY_MAX),
 * SHOAL_ECORRUPT (an offset or length out of range: never a crash).
 */
SHM_WUR int shm_get(shm_view *v, const void *key, size_t klen, shm_val *out);

/*
 * shm_get_many - @n gets with the memory latency overlapped: hashes first,
 * then the index slots are prefetched, then the entries, in groups.
 * status[i] receives what shm_get would return for keys[i] (0, ENOTFOUND,
 * ...), out[i] the value when status[i] == 0. Returns the number of keys
 * found (>= 0) or SHOAL_ENOSECTION.
 */
int shm_get_many(shm_view *v, size_t n, const shm_key *keys, shm_val *out,
                 int *status);

/*
 * shm_scan - visit the keys in [start, end) in byte order (memcmp, shorter
 * first on a common prefix) as of the section's snapshot.
 * @start NULL/@slen 0: from the first key. @end NULL: to the last key
 * (an empty non-NULL @end is also "no bound" so callers can pass buffers).
 * @fn returns 0 to continue, non-zero to stop (shm_scan then returns that
 * value). Returns 0 when the range is exhausted, SHOAL_ENOSECTION,
 * SHOAL_ECORRUPT.
 */
typedef int (*shm_scan_fn)(void *arg, const void *key, size_t klen,
                           const shm_val *val);
int shm_scan(shm_view *v, const void *start, size_t slen, const void *end,
             size_t elen, shm_scan_fn fn, void *arg);

/* shm_prefix_end - write into @buf the smallest key greater than every key
 * starting with @prefix; returns its length, or 0 when no such key exists
 * (prefix empty or all 0xff: scan to the end). @buf holds @plen bytes. */
size_t shm_prefix_end(const void *prefix, size_t plen, void *buf);

/*
 * shm_wait - block until @key's version is greater than @after (0: any
 * version at all; a delete counts: version then is the tombstone's), or
 * @timeout_ms passes (-1: forever). Uses FUTEX_WAIT on a doorbell word of
 * the read-only mapping: no socket, no polling. Must be called OUTSIDE a
 * section (it takes its own). *version receives the key's version (0 if
 * absent). Returns 0, SHOAL_ETIMEOUT, -EINTR, SHOAL_EINVAL (inside a section).
 */
int shm_wait(shm_view *v, const void *key, size_t klen, uint64_t after,
             int timeout_ms, uint64_t *version);

/* Header figures without a slot (counters, commit_seq, readers). */
void shm_view_stats(shm_view *v, shm_stats *st);

/* The slot index of this view, or -1. */
int shm_view_slot(const shm_view *v);

/* ----------------------------------------------------- consistency check */

/* One problem found by shm_check. */
typedef void (*shm_check_fn)(void *arg, const char *problem);

/*
 * shm_check - full consistency check of a mapped segment: header, geometry,
 * hash index (every slot's tag and offset, probe chains), every entry (key
 * length, hash, tower), every value chain (versions strictly decreasing,
 * offsets in range), the skiplist (sorted at every level, same set of
 * entries as the index), the page table and allocator counters. Reports
 * each problem through @fn (may be NULL) and returns the number found
 * (0 = consistent). Reads only; safe while the writer runs only if called
 * inside a section of @v (it pins the snapshot); a live writer may make
 * counter checks race, so those are checked only when the store is idle
 * (@quiescent != 0).
 */
unsigned shm_check(shm_view *v, int quiescent, shm_check_fn fn, void *arg);

/* shm_check_ex flags */
#define SHM_CHECK_QUIESCENT 0x1u /* no writer runs: check counters too */
#define SHM_CHECK_TOLERANT 0x2u  /* accept what a writer killed at any
                                    instruction leaves and recovery repairs
                                    (unpublished records, half-linked
                                    towers): for a store whose broker died */

/* shm_check with flags; an SHM_VIEW_UNPINNED view may check a live store
 * (the caller then validates with shm_read_validate after it returns
 * inside its own section, or simply reruns: see shoal-inspect). */
unsigned shm_check_ex(shm_view *v, unsigned flags, shm_check_fn fn, void *arg);

/* --------------------------------------------------- inspection (tools) */

/* The header's identity and geometry, for shoal-inspect (no slot needed). */
typedef struct shm_info {
  char name[SHM_NAME_MAX + 1];
  uint32_t format, fingerprint;
  uint64_t store_id, created_ms;
  uint64_t size, heap_start, npages, backed_end, heap_top;
  uint32_t reader_slots, doorbells, skip_height;
  uint64_t commit_seq, last_commit_ms;
  uint64_t index_off, index_bytes, index_capacity, index_used, index_live;
  uint64_t writer_pid, writer_start, writer_gen, clean, recoveries;
  uint64_t reclaim_seq;
  uint64_t readers_hwm; /* one past the highest slot ever claimed */
} shm_info;
void shm_view_info(shm_view *v, shm_info *out);

/* One reader slot, copied. */
typedef struct shm_reader_info {
  unsigned slot;
  uint32_t pid;     /* 0: free */
  uint32_t nest;
  uint64_t pid_start, snap, begin_ms;
  int leased;
} shm_reader_info;
/* Copy up to @cap slots below the high-water mark into @out (all of them
 * with @all, else only claimed ones); returns how many were copied. */
size_t shm_view_readers(shm_view *v, shm_reader_info *out, size_t cap,
                        int all);

/* One record of a key's version chain (shm_history). */
typedef struct shm_version {
  uint64_t version;
  uint64_t expires_at;
  const void *data; /* valid until shm_read_end */
  uint32_t len;
  int tombstone;
} shm_version;
/*
 * shm_history - inside a section: the records of @key's chain that the
 * section's snapshot can see, newest first (the current value, then the
 * older versions still retained for older snapshots or not yet reclaimed).
 * Up to @cap go to @out; *n receives how many exist (may exceed @cap).
 * Returns 0, SHOAL_ENOTFOUND (no entry for the key), SHOAL_ENOSECTION,
 * SHOAL_ETOOBIG, SHOAL_ECORRUPT.
 */
int shm_history(shm_view *v, const void *key, size_t klen, shm_version *out,
                size_t cap, size_t *n);

/* A run of pages in the heap (the allocator's page table). */
enum shm_run_kind {
  SHM_RUN_SLAB = 1,   /* a slab of one size class (@cls) */
  SHM_RUN_EXTENT = 2, /* a large value or a hash index */
  SHM_RUN_FREE = 3,   /* a free page run */
  SHM_RUN_UNCARVED = 4, /* from heap_top to the end: never handed out */
};
typedef struct shm_run_info {
  uint64_t offset, pages;
  int kind;
  int cls; /* SHM_RUN_SLAB: class index, else -1 */
} shm_run_info;
/* Walk the heap's page runs in address order, calling @fn (non-zero stops
 * the walk and is returned). Bounds-checked: a corrupt page table gives
 * SHOAL_ECORRUPT (after the runs before the bad entry), never a loop. */
int shm_view_runs(shm_view *v, int (*fn)(void *arg, const shm_run_info *r),
                  void *arg);

/* Names of the objects (for tools and tests): writes "DIR/shoal.NAME.data"
 * or ".readers" into @buf. Returns 0, SHOAL_EINVAL (bad name) or -ENAMETOOLONG. */
int shm_object_path(char *buf, size_t cap, const char *name, const char *dir,
                    const char *suffix);

/* The segment format version this build reads and writes (the header's
 * format field; a mismatch is SHOAL_EVERSION). */
uint32_t shm_format_version(void);

/* The current CLOCK_REALTIME in milliseconds (the TTL clock). */
uint64_t shm_now_ms(void);

/* Read the start time (clock ticks since boot, /proc/PID/stat field 22) of
 * @pid; 0 if the process does not exist. */
uint64_t shm_pid_start_time(pid_t pid);

#ifdef __cplusplus
}
#endif
#endif /* SHOAL_SHM_H */
