/*
 * store-internal.h - the writer's private state, shared by the writer-side
 * files of shm/ (segment.c, alloc.c, index.c, skiplist.c, store.c, check.c).
 * Nothing here is in shared memory except what the pointers point at.
 */
#ifndef SHM_STORE_INTERNAL_H
#define SHM_STORE_INTERNAL_H

#include <limits.h>

#include "shm-internal.h"

/* Kinds of retired items, in the low 3 bits of shm_retired.off. */
enum {
  SHM_RK_RECORD = 1, /* a value record: freed, counted in c_records */
  SHM_RK_ENTRY = 2,  /* an unlinked entry block */
  SHM_RK_INDEX = 3,  /* an outgrown hash index (unused: indexes are RAW) */
  SHM_RK_RAW = 4,    /* unreachable memory found by recovery */
  SHM_RK_NOFREE = 5, /* a record inside its entry: not freed on its own */
  SHM_RK_SLOT = 6,   /* recovery: an entry's inline space, free after the
                        grace period (no memory, no counter) */
};

/* Bit 7 of shm_entry.height (writer-only; readers never read height):
 * the entry's inline record space is free, its last occupant reclaimed. */
#define SHM_ENTRY_INLINE_FREE 0x80u
#define SHM_HEIGHT(e) ((unsigned)((e)->height & 0x7fu))

/* A block waiting for its grace period: freed when every busy reader's
 * snapshot is >= seq. off has bit 0 set when only the pointer at clear must
 * be zeroed (an embedded record: its memory belongs to its entry). */
struct shm_retired {
  uint64_t off;
  uint64_t seq;
  uint64_t clear; /* offset of a prev field to zero before freeing, or 0 */
  uint64_t entry; /* the key's entry, for records (0 otherwise) */
};

/* A key whose newest record is a tombstone: unlinked from the index and the
 * skiplist once no snapshot older than the tombstone remains. */
struct shm_dead {
  uint64_t entry;
  uint64_t tomb; /* the tombstone record's offset when it was queued */
  uint64_t version;
};

struct shm_store {
  uint8_t *base;
  uint64_t size;
  struct shm_header *hdr;
  uint32_t *doorbell;
  uint32_t *pagetab;
  int fd;  /* data object, flock'ed LOCK_EX */
  int rfd; /* readers object */
  struct shm_readers_hdr *rhdr;
  struct shm_reader_slot *slots;
  size_t rsize;
  char path[PATH_MAX];
  char rpath[PATH_MAX];

  /* retire queue: a FIFO ring, seq non-decreasing from head to tail */
  struct shm_retired *rq;
  size_t rq_head, rq_len, rq_cap;
  uint64_t rq_pushed; /* items ever pushed: names an item while queued */
  /* dead keys awaiting unlink */
  struct shm_dead *dq;
  size_t dq_len, dq_cap;

  uint64_t rng;           /* xorshift state: skiplist tower heights */
  uint64_t expire_cursor; /* next index slot shm_expire looks at */
  uint64_t commits_since_reclaim;
  uint64_t wakes;
  uint64_t compactions; /* heads copied back into their entries */
  int in_reclaim; /* shm_reclaim publishes a GC commit: no recursion */
  uint32_t *touched; /* doorbells rung by the commit being built */
  size_t ntouched, touched_cap;
  char lasterr[512];
};

/* segment.c */
int shm__back(shm_store *s, uint64_t end);
int shm__errf(shm_store *s, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int shm__claim_slot(struct shm_readers_hdr *rh, struct shm_reader_slot *slots,
                    pid_t pid, uint64_t start, int leased);
void shm__release_slot(struct shm_reader_slot *slot, pid_t pid);

/* alloc.c: the writer's allocator. Offsets are 8-aligned. */
int shm__alloc(shm_store *s, uint64_t n, uint64_t *off);
/* Deletes may dip into a reserve of SHM_DELETE_RESERVE backed bytes that
 * every other allocation leaves untouched, so a full store (or a full
 * tmpfs) still accepts the deletes that make room. */
#define SHM_ALLOC_RESERVE 0x1u
#define SHM_DELETE_RESERVE (2ull * SHM_SLAB)
int shm__alloc_ex(shm_store *s, uint64_t n, unsigned flags, uint64_t *off);
void shm__free(shm_store *s, uint64_t off);
uint64_t shm__block_size(const shm_store *s, uint64_t off);
void shm__alloc_reset(shm_store *s);
/* Recovery: every carved block not marked in @bits (one bit per 8 bytes of
 * the heap, set at block starts) is handed to @unreached. */
void shm__alloc_rebuild(shm_store *s, const uint64_t *bits,
                        void (*unreached)(shm_store *, uint64_t off));
void shm__alloc_init_meta(shm_store *s);

/* index.c */
int shm__index_create(shm_store *s, uint64_t cap, uint64_t *off);
struct shm_index *shm__index(shm_store *s);
/* entry offset for key, or 0; *slotp = slot position when found */
uint64_t shm__index_find(shm_store *s, uint64_t h, const void *key,
                         size_t klen, uint64_t *slotp);
/* make room for @extra more entries (grow or compact beside the old index
 * and publish); may fail with SHOAL_ENOSPC and then changes nothing */
int shm__index_reserve(shm_store *s, uint64_t extra);
void shm__index_insert(shm_store *s, uint64_t h, uint64_t entry);
void shm__index_remove(shm_store *s, uint64_t h, uint64_t entry);

/* skiplist.c */
unsigned shm__skip_random_tower(shm_store *s);
void shm__skip_insert(shm_store *s, uint64_t entry);
void shm__skip_remove(shm_store *s, uint64_t entry);
int shm__keycmp(const void *a, size_t alen, const void *b, size_t blen);

/* store.c */
/* Returns the item's serial (see retire_fix in store.c). */
uint64_t shm__retire(shm_store *s, uint64_t off, uint64_t seq, uint64_t clear,
                     uint64_t entry);
void shm__commit_publish(shm_store *s, uint64_t seq);
uint64_t shm__min_snapshot(shm_store *s, uint64_t *busy, uint64_t *oldest_ms);

/* check.c */
int shm__recover(shm_store *s);

/*
 * The reclaim seqcount (header reclaim_seq): odd while the writer frees or
 * rebuilds memory, so that a reader WITHOUT a slot (shoal-inspect, which
 * maps everything read-only) can tell whether what it read may have been
 * freed and reused under it: a seqlock whose readers retry, while pinned
 * readers never need it. Enter leaves an odd value alone (a writer that
 * died inside its bracket left it odd; the next one continues the bracket).
 */
static inline void shm__rseq_enter(struct shm_header *h) {
  uint64_t q = shm_load_relaxed(&h->reclaim_seq);
  if (!(q & 1)) shm_store_relaxed(&h->reclaim_seq, q + 1);
  /* smp_wmb: the odd value is visible before any free or rebuild store
   * below; pairs with the acquire fence in read.c:shm_read_validate */
  shm_fence_release();
}
static inline void shm__rseq_exit(struct shm_header *h) {
  /* the frees above are visible before the even value; pairs with the
   * acquire load in read.c:shm_read_begin (unpinned sections) */
  shm_store_release(&h->reclaim_seq, (shm_load_relaxed(&h->reclaim_seq) | 1) + 1);
}

static inline struct shm_entry *shm__E(const shm_store *s, uint64_t off) {
  return (struct shm_entry *)(s->base + off);
}
static inline struct shm_rec *shm__R(const shm_store *s, uint64_t off) {
  return (struct shm_rec *)(s->base + off);
}
static inline uint8_t *shm__entry_key(struct shm_entry *e) {
  return (uint8_t *)e + shm__entry_key_off(e->tower);
}

#endif
