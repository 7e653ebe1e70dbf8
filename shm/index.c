/*
 * index.c - the hash index: open addressing with linear probing over u64
 * slots, writer side (the reader's probe is in read.c).
 *
 * A slot is 0 (empty: ends a probe), SHM_SLOT_DELETED (skipped by probes,
 * reused by inserts) or tag<<48 | entry offset, the tag being the top 16
 * bits of the key's SipHash. A reader compares tags in the slot word and
 * touches only entries whose tag matches: about one entry per hit and
 * 1/65536 per probed slot otherwise. The bucket is hash & (capacity - 1);
 * the entry keeps the low 32 hash bits (hash32), so growth rehashes without
 * touching keys (capacity stays <= 2^32).
 *
 * Invariants (checked by shm_check):
 *   - every entry reachable from a slot sits at or after its home bucket
 *     with no empty slot in between (deleted markers do not break chains);
 *   - used = slots that are not empty, live = slots naming an entry;
 *   - used <= 5/8 capacity after every commit (growth happens first).
 *
 * Ordering: a slot is stored with release after its entry is fully written
 * (pairs with the acquire load of the slot in read.c:probe()), so a reader
 * that finds the slot sees the entry's key and head.
 *
 * Growth and compaction never make a reader wait: a new index is built
 * beside the old one, filled, and its offset published with one release
 * store of hdr->index_off (pairs with the acquire in read.c). The old index
 * is retired at commit_seq + 1, so readers that loaded it keep a valid copy
 * until they leave their sections. The copy costs the writer O(capacity)
 * once per doubling (a few ms per million keys); readers are never blocked.
 */
#include <string.h>

#include "store-internal.h"

struct shm_index *shm__index(shm_store *s) {
  return (struct shm_index *)(s->base + s->hdr->index_off);
}

int shm__index_create(shm_store *s, uint64_t cap, uint64_t *off) {
  uint64_t o;
  int err = shm__alloc(s, sizeof(struct shm_index) + cap * 8, &o);
  if (err) return err;
  struct shm_index *ix = (struct shm_index *)(s->base + o);
  memset(ix, 0, sizeof *ix + cap * 8);
  ix->magic = SHM_INDEX_MAGIC;
  ix->capacity = cap;
  *off = o;
  return 0;
}

uint64_t shm__index_find(shm_store *s, uint64_t h, const void *key,
                         size_t klen, uint64_t *slotp) {
  struct shm_index *ix = shm__index(s);
  uint64_t mask = ix->capacity - 1, tag = SHM_HASH_TAG(h);
  uint64_t i = h & mask;
  for (uint64_t n = 0; n <= mask; n++, i = (i + 1) & mask) {
    uint64_t sv = ix->slot[i];
    if (sv == 0) return 0;
    if (sv == SHM_SLOT_DELETED || SHM_SLOT_TAG(sv) != tag) continue;
    struct shm_entry *e = shm__E(s, SHM_SLOT_OFF(sv));
    if (e->hash32 == (uint32_t)h && e->klen == klen &&
        (klen == 0 || memcmp(shm__entry_key(e), key, klen) == 0)) {
      if (slotp) *slotp = i;
      return SHM_SLOT_OFF(sv);
    }
  }
  return 0;
}

static void place(struct shm_index *ix, uint64_t h, uint64_t sv) {
  uint64_t mask = ix->capacity - 1, i = h & mask;
  while (ix->slot[i]) i = (i + 1) & mask;
  ix->slot[i] = sv; /* not yet published: the index is private until then */
}

int shm__index_reserve(shm_store *s, uint64_t extra) {
  struct shm_index *ix = shm__index(s);
  uint64_t cap = ix->capacity;
  /* 5/8: linear probing stays short (about 2 slots, one cache line, for a
   * hit) and a million keys fit 2^21 slots: 16.8 bytes per key. */
  if ((ix->used + extra) * 8 <= cap * 5) return 0;
  uint64_t want = ix->live + extra, ncap = SHM_INDEX_MIN;
  while (ncap * 1 < want * 2) ncap *= 2; /* load <= 1/2 after a rebuild */
  if (ncap > (1ull << 32))
    return shm__errf(s, SHOAL_ENOSPC, "hash index would exceed 2^32 slots");
  uint64_t noff;
  int err = shm__index_create(s, ncap, &noff);
  if (err) return err;
  ix = shm__index(s); /* unchanged offset; re-read after allocating */
  struct shm_index *nx = (struct shm_index *)(s->base + noff);
  uint64_t live = 0;
  for (uint64_t i = 0; i < cap; i++) {
    uint64_t sv = ix->slot[i];
    if (sv == 0 || sv == SHM_SLOT_DELETED) continue;
    struct shm_entry *e = shm__E(s, SHM_SLOT_OFF(sv));
    uint64_t h = ((uint64_t)SHM_SLOT_TAG(sv) << 48) | e->hash32;
    place(nx, h, sv);
    live++;
  }
  nx->used = nx->live = live;
  uint64_t old = s->hdr->index_off;
  /* pairs with the acquire of index_off in read.c */
  shm_store_release(&s->hdr->index_off, noff);
  s->hdr->c_index_used = live;
  shm__retire(s, old, shm_load_relaxed(&s->hdr->commit_seq) + 1, 0, 0);
  return 0;
}

void shm__index_insert(shm_store *s, uint64_t h, uint64_t entry) {
  struct shm_index *ix = shm__index(s);
  uint64_t mask = ix->capacity - 1, i = h & mask;
  while (ix->slot[i] != 0 && ix->slot[i] != SHM_SLOT_DELETED)
    i = (i + 1) & mask;
  if (ix->slot[i] == 0) ix->used++;
  ix->live++;
  /* pairs with the acquire of the slot in read.c:probe() */
  shm_store_release(&ix->slot[i], SHM_MAKE_SLOT(h, entry));
  s->hdr->c_index_used = ix->used;
}

void shm__index_remove(shm_store *s, uint64_t h, uint64_t entry) {
  struct shm_index *ix = shm__index(s);
  uint64_t mask = ix->capacity - 1, i = h & mask;
  for (uint64_t n = 0; n <= mask; n++, i = (i + 1) & mask) {
    uint64_t sv = ix->slot[i];
    if (sv == 0) break;
    if (sv != SHM_SLOT_DELETED && SHM_SLOT_OFF(sv) == entry) {
      /* Readers probing past see a marker, not a hole: chains stay whole.
       * The entry itself is retired by the caller. */
      shm_store_release(&ix->slot[i], SHM_SLOT_DELETED);
      ix->live--;
      return;
    }
  }
  (void)SHM_NEVER(1); /* the entry was not in the index */
}
