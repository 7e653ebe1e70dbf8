/*
 * shm-internal.h - the segment format (a file format: fixed-width fields,
 * offsets never pointers, a magic and a layout fingerprint) and the helpers
 * shared by the files of shm/.
 *
 * Data object layout (all offsets from the mapping's base; 0 is null):
 *
 *   [0, 4 KiB)          struct shm_header
 *   [4 KiB, 8 KiB)      u32 doorbell[SHM_DOORBELLS]      (watch, section 5)
 *   [8 KiB, heap_start) u32 pagetab[npages]              (allocator)
 *   [heap_start, size)  the heap: 64 KiB slabs of one size class each, and
 *                       page extents (large values, hash indexes)
 *
 * Heap objects:
 *   entry   one per key:  struct shm_entry, tower next[tower], key bytes,
 *           and (usually) the key's first value record right behind, so a
 *           get costs the index slot and this one block: two cache misses.
 *   record  struct shm_rec, [prev], [expires_at], value bytes. Immutable once
 *           reachable, except prev, which the writer clears (release) when
 *           the record it points to is freed.
 *   index   struct shm_index + u64 slot[capacity] in a page extent. A slot is
 *           0 (empty), SHM_SLOT_DELETED, or tag<<48 | entry offset.
 *
 * Who writes what: only the writer writes the data object. Readers write
 * only their own slot in the readers object and the waiter count.
 */
#ifndef SHM_INTERNAL_H
#define SHM_INTERNAL_H

#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "atomic-internal.h"
#include "shoal/shm.h"

#define SHM_MAGIC 0x4745534C414F4853ull  /* bytes "SHOALSEG" */
#define SHM_READERS_MAGIC 0x5244524C414F4853ull /* bytes "SHOALRDR" */
#define SHM_FORMAT_VERSION 1u

#define SHM_PAGE 4096u
#define SHM_SLAB_PAGES 16u                  /* a slab is 64 KiB */
#define SHM_SLAB (SHM_PAGE * SHM_SLAB_PAGES)
#define SHM_ALIGN 8u                        /* every block is 8-aligned */
#define SHM_SKIP_MAXH 24                    /* 4^24 >> any key count */
#define SHM_BACK_CHUNK (4u << 20)           /* fallocate granularity */
#define SHM_HEADER_BYTES 4096u
#define SHM_DOORBELL_OFF 4096u
#define SHM_PAGETAB_OFF 8192u
#define SHM_INDEX_MIN 1024u                 /* initial hash index slots */

/* ------------------------------------------------------------ header ---- */

/*
 * struct shm_header - page 0 of the data object.
 * "W" = written by the writer only; "R" = read by readers (clients, inspect).
 * Fields of the hot line are accessed with the atomic wrappers.
 */
struct shm_header {
  /* identity: written once at creation (W), read by all (R) */
  uint64_t magic;          /* SHM_MAGIC */
  uint32_t format;         /* SHM_FORMAT_VERSION */
  uint32_t fingerprint;    /* shm__fingerprint(): sizes/offsets of this file */
  uint64_t size;           /* bytes reserved (== file size) */
  uint64_t heap_start;     /* first heap byte; slab aligned */
  uint64_t npages;         /* size / SHM_PAGE: entries in the page table */
  uint64_t store_id;       /* random; the readers object carries the same */
  uint32_t reader_slots;   /* slots in the readers object */
  uint32_t doorbells;      /* SHM_DOORBELLS */
  uint8_t sipkey[16];      /* SipHash-2-4 key (libsodium crypto_shorthash) */
  char name[SHM_NAME_MAX]; /* store name, NUL-padded */
  uint64_t created_ms;     /* CLOCK_REALTIME ms */
  uint8_t pad0[256 - 144];

  /* hot line: W with release, R with acquire */
  alignas(64) uint64_t commit_seq; /* last published commit (starts at 1) */
  uint64_t index_off;              /* current hash index (struct shm_index) */
  uint64_t backed_end;             /* bytes backed by fallocate: every
                                      reachable offset lies below it */
  uint32_t skip_height;            /* levels in use in skip_next (W, R) */
  uint32_t pad1;
  uint8_t pad2[32];
  /* skiplist head tower: skip_next[i] = first entry at level i (W rel, R acq) */
  alignas(64) uint64_t skip_next[SHM_SKIP_MAXH];
  uint8_t pad3[256 - 8 * SHM_SKIP_MAXH];

  /* writer process (W; inspect reads to tell whether the broker is alive) */
  alignas(64) uint64_t writer_pid;
  uint64_t writer_start;   /* writer's start time (clock ticks since boot) */
  uint64_t writer_gen;     /* attaches so far */
  uint64_t clean;          /* 1 after a clean close, 0 while a writer runs */
  uint64_t last_commit_ms; /* CLOCK_REALTIME ms of the last commit */
  uint64_t recoveries;     /* unclean attaches that ran recovery */
  uint64_t reclaim_seq;    /* seqcount, odd while the writer frees or
                              rebuilds memory (shm_reclaim, recovery):
                              W release; unpinned readers (shoal-inspect)
                              validate against it, see read.c */
  uint8_t pad4[8];

  /* allocator (W only; rebuilt on every attach, inspect reads) */
  alignas(64) uint64_t heap_top; /* bump pointer: heap below it is carved */
  uint64_t run_free_head;        /* free page runs, doubly linked */
  uint64_t class_free[SHM_NCLASSES]; /* per-class free lists (next in block) */

  /* counters (W relaxed, R relaxed: figures, not synchronisation) */
  alignas(64) uint64_t c_keys;
  uint64_t c_key_bytes;
  uint64_t c_value_bytes;
  uint64_t c_records;
  uint64_t c_entries;
  uint64_t c_commits;
  uint64_t c_expired;
  uint64_t c_reclaimed;
  uint64_t c_index_used;
  uint64_t c_heap_used;
  uint64_t c_heap_free;
  uint64_t c_retired;
  uint64_t c_retired_bytes;
  uint64_t c_extent_pages;
  uint64_t c_free_pages;
  uint64_t c_class_used[SHM_NCLASSES];
  uint64_t c_class_free[SHM_NCLASSES];
};

_Static_assert(offsetof(struct shm_header, commit_seq) == 256, "hot line");
_Static_assert(offsetof(struct shm_header, skip_next) == 320, "skip head");
_Static_assert(offsetof(struct shm_header, writer_pid) == 576, "writer");
_Static_assert(offsetof(struct shm_header, reclaim_seq) == 624, "reclaim seq");
_Static_assert(sizeof(struct shm_header) <= SHM_HEADER_BYTES, "header page");
_Static_assert(SHM_DOORBELLS * 4 == SHM_PAGETAB_OFF - SHM_DOORBELL_OFF,
               "doorbells fill page 1");

/* ----------------------------------------------------------- entries ---- */

struct shm_entry {
  uint64_t head;   /* newest record: W release (put), R acquire */
  uint32_t hash32; /* low 32 bits of the hash (the slot tag holds the top
                      16): rejects mismatches before memcmp, rehashes growth */
  uint16_t klen;
  uint8_t tower;   /* next[] capacity, 1..SHM_SKIP_MAXH (fixed at alloc) */
  uint8_t height;  /* bits 0-6: levels currently linked; bit 7: the inline
                      record space is free (W only; readers never read it) */
  uint64_t next[]; /* next[i]: following entry at level i (W release, R acq) */
  /* then klen key bytes, padding to 8, maybe the embedded first record */
};
_Static_assert(sizeof(struct shm_entry) == 16, "entry header");

#define SHM_REC_TOMB 0x1u  /* delete marker: len 0 */
#define SHM_REC_EMBED 0x2u /* lives inside its entry's block: no prev field */
#define SHM_REC_TTL 0x4u   /* an expires_at field follows */
#define SHM_REC_FLAGS 0x7u

struct shm_rec {
  uint64_t version; /* commit_seq that wrote it */
  uint32_t len;     /* value bytes */
  uint32_t flags;   /* SHM_REC_* */
  /* [u64 prev] unless EMBED; [u64 expires_at] if TTL; then len bytes */
};
_Static_assert(sizeof(struct shm_rec) == 16, "record header");

struct shm_index {
  uint64_t magic;    /* SHM_INDEX_MAGIC */
  uint64_t capacity; /* power of two */
  uint64_t used;     /* occupied slots incl. deleted markers (W) */
  uint64_t live;     /* slots naming an entry (W) */
  uint8_t pad[32];
  uint64_t slot[]; /* W release, R acquire */
};
_Static_assert(sizeof(struct shm_index) == 64, "slots start on a line");
#define SHM_INDEX_MAGIC 0x58444E494C414F53ull /* "SOALINDX" */

#define SHM_SLOT_DELETED 1ull
#define SHM_SLOT_OFF(s) ((s) & 0xFFFFFFFFFFFFull)
#define SHM_SLOT_TAG(s) ((s) >> 48)
#define SHM_HASH_TAG(h) ((h) >> 48)
#define SHM_MAKE_SLOT(h, off) ((SHM_HASH_TAG(h) << 48) | (off))

/* ---------------------------------------------------------- page table -- */

/* One u32 per page: tag in the top 4 bits, a count in the rest. */
#define SHM_PT_TAG(e) ((e) >> 28)
#define SHM_PT_VAL(e) ((e)&0x0FFFFFFFu)
#define SHM_PT_MAKE(t, v) (((uint32_t)(t) << 28) | (uint32_t)(v))
enum {
  SHM_PT_NONE = 0,   /* above heap_top, never carved */
  SHM_PT_META = 1,   /* header, doorbells, page table */
  SHM_PT_SLAB = 2,   /* first page of a slab; value = class index */
  SHM_PT_EXTENT = 3, /* first page of a used extent; value = pages */
  SHM_PT_FREE = 4,   /* first page of a free run; value = pages */
  SHM_PT_CONT = 5,   /* later page of a slab/extent/run; value = distance */
};
#define SHM_EXTENT_MAX_PAGES 0x0FFFFFFFu

/* A free page run starts with this (writer only). */
struct shm_run {
  uint64_t next, prev; /* offsets of neighbouring free runs in the list */
};

/* ------------------------------------------------------ readers object -- */

struct shm_readers_hdr {
  uint64_t magic;    /* SHM_READERS_MAGIC */
  uint32_t format;   /* SHM_FORMAT_VERSION */
  uint32_t nslots;
  uint64_t store_id; /* equals the data header's store_id */
  uint32_t waiters;  /* processes inside shm_wait: R fetch_add, W load */
  uint32_t pad0;
  uint64_t hwm;      /* one past the highest slot ever claimed */
  uint8_t pad[24];
};
_Static_assert(sizeof(struct shm_readers_hdr) == 64, "readers header line");

/* One reader: a cache line each so readers never share a line. */
struct shm_reader_slot {
  uint64_t snap;      /* 0 idle, else the pinned snapshot (reader stores,
                         writer loads; the fences pair, see read.c) */
  uint32_t pid;       /* owner, 0 = free: claimed by CAS */
  uint32_t nest;      /* nesting depth (informational) */
  uint64_t pid_start; /* owner's start time, to detect pid reuse */
  uint64_t begin_ms;  /* CLOCK_REALTIME_COARSE ms of the outer begin */
  uint64_t leased;    /* 1: assigned by the writer (broker lease) */
  uint8_t pad[24];
};
_Static_assert(sizeof(struct shm_reader_slot) == 64, "one line per reader");

/* --------------------------------------------------------- view state --- */

struct shm_view {
  uint8_t *base;         /* data mapping (PROT_READ for clients) */
  uint64_t size;         /* mapping length */
  const struct shm_header *hdr;
  struct shm_readers_hdr *rhdr;
  struct shm_reader_slot *slots;
  size_t rsize;          /* readers mapping length */
  struct shm_reader_slot *slot; /* ours, or NULL */
  int slot_idx;
  int own_slot;          /* claimed by us: release on close */
  uint32_t nest;
  uint64_t snap;
  uint64_t limit;        /* cached backed_end; re-read on a miss */
  uint64_t now_ms;       /* TTL clock for this section, 0 = not read yet */
  uint64_t rseq;         /* unpinned section: reclaim_seq at its begin */
  int unpinned;          /* SHM_VIEW_UNPINNED: sections without a slot */
  uint8_t sipkey[16];
  pid_t pid;
};

/* ---------------------------------------------------------- helpers ----- */

static inline uint64_t shm__align8(uint64_t x) { return (x + 7) & ~7ull; }

static inline uint64_t shm__entry_key_off(unsigned tower) {
  return sizeof(struct shm_entry) + 8ull * tower;
}
static inline uint64_t shm__entry_bytes(unsigned tower, size_t klen) {
  return shm__align8(shm__entry_key_off(tower) + klen);
}
static inline uint64_t shm__rec_hdr_bytes(uint32_t flags) {
  return sizeof(struct shm_rec) + ((flags & SHM_REC_EMBED) ? 0 : 8) +
         ((flags & SHM_REC_TTL) ? 8 : 0);
}
static inline uint64_t shm__rec_bytes(uint32_t flags, size_t vlen) {
  return shm__align8(shm__rec_hdr_bytes(flags) + vlen);
}
/* prev field of a non-embedded record */
static inline uint64_t *shm__rec_prev(struct shm_rec *r) {
  return (uint64_t *)(r + 1);
}
static inline uint64_t shm__rec_expires(const struct shm_rec *r) {
  if (!(r->flags & SHM_REC_TTL)) return 0;
  const uint64_t *p = (const uint64_t *)(r + 1);
  return (r->flags & SHM_REC_EMBED) ? p[0] : p[1];
}
static inline const uint8_t *shm__rec_data(const struct shm_rec *r) {
  return (const uint8_t *)r + shm__rec_hdr_bytes(r->flags);
}

/* SipHash-2-4 of the key with the store's key. */
uint64_t shm__hash(const uint8_t sipkey[16], const void *key, size_t klen);
uint32_t shm__fingerprint(void);
/* Size class index for n bytes, or -1 for an extent. */
int shm__class_of(uint64_t n);
uint32_t shm__class_size(int c);

/* "Cannot happen, but handle it" (STYLE 11): asserts in debug builds,
 * evaluates to the condition in release builds. */
#ifdef NDEBUG
#define SHM_NEVER(x) (!!(x))
#else
void shm__never(const char *file, int line, const char *what)
    __attribute__((noreturn));
#define SHM_NEVER(x) ((x) ? (shm__never(__FILE__, __LINE__, #x), 1) : 0)
#endif

#endif /* SHM_INTERNAL_H */
