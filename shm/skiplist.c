/*
 * skiplist.c - the ordered index over entries, writer side (readers walk it
 * in read.c:shm_scan()).
 *
 * Order: memcmp of key bytes, a shorter key first on a common prefix (the
 * empty key is the smallest). Towers have p = 1/4 per level (expected 1.33
 * links per entry, as in Redis' zset and LevelDB), at most SHM_SKIP_MAXH.
 *
 * Invariants (checked by shm_check, restored by recovery):
 *   - every level is strictly increasing; level i+1 is a subset of level i;
 *   - an entry is linked at exactly the levels below its height, and
 *     height <= tower (tower = next[] capacity, fixed at allocation);
 *   - level 0 holds exactly the entries the hash index holds.
 *
 * Ordering: the single writer links bottom-up: the new entry's next[] are
 * all written first, then each level's predecessor pointer is stored with
 * release (pairs with the acquire loads in read.c), so a reader arriving on
 * the entry at any level finds valid successors there. Unlinking goes
 * top-down with release stores; the entry keeps its next[] pointers, so a
 * reader standing on an unlinked entry still walks on to live successors.
 * Memory is freed only after the grace period (store.c), so neither the
 * entry nor the successors it points to can be reused under a reader.
 * height is updated after each level, so a crash leaves the entry linked at
 * exactly its height's levels or one more, which recovery repairs.
 */
#include <string.h>

#include "store-internal.h"

int shm__keycmp(const void *a, size_t alen, const void *b, size_t blen) {
  size_t m = alen < blen ? alen : blen;
  int r = m ? memcmp(a, b, m) : 0;
  if (r) return r < 0 ? -1 : 1;
  return alen < blen ? -1 : alen > blen;
}

unsigned shm__skip_random_tower(shm_store *s) {
  uint64_t x = s->rng; /* xorshift64 */
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  s->rng = x;
  unsigned h = 1;
  while (h < SHM_SKIP_MAXH && (x & 3) == 0) {
    h++;
    x >>= 2;
  }
  return h;
}

/* preds[i] = the next[] array (an entry's or the header's) whose level-i
 * pointer is the last one before key. */
static void find_preds(shm_store *s, const void *key, size_t klen,
                       uint64_t *preds[SHM_SKIP_MAXH]) {
  uint64_t *cur = s->hdr->skip_next;
  /* levels at and above skip_height are empty: their preds are the head */
  for (int i = SHM_SKIP_MAXH - 1; i >= (int)s->hdr->skip_height; i--)
    preds[i] = cur;
  for (int i = (int)s->hdr->skip_height - 1; i >= 0; i--) {
    for (;;) {
      uint64_t nx = cur[i];
      if (!nx) break;
      struct shm_entry *e = shm__E(s, nx);
      if (shm__keycmp(shm__entry_key(e), e->klen, key, klen) >= 0) break;
      cur = e->next;
    }
    preds[i] = cur;
  }
}

void shm__skip_insert(shm_store *s, uint64_t entry) {
  struct shm_entry *e = shm__E(s, entry);
  uint64_t *preds[SHM_SKIP_MAXH];
  find_preds(s, shm__entry_key(e), e->klen, preds);
  for (unsigned i = 0; i < e->tower; i++)
    shm_store_relaxed(&e->next[i], preds[i][i]);
  for (unsigned i = 0; i < e->tower; i++) {
    /* pairs with the acquire loads of next[] in read.c:shm_scan() */
    shm_store_release(&preds[i][i], entry);
    e->height = (uint8_t)((e->height & SHM_ENTRY_INLINE_FREE) | (i + 1));
  }
  if (e->tower > s->hdr->skip_height)
    shm_store_release(&s->hdr->skip_height, (uint32_t)e->tower);
}

void shm__skip_remove(shm_store *s, uint64_t entry) {
  struct shm_entry *e = shm__E(s, entry);
  uint64_t *preds[SHM_SKIP_MAXH];
  find_preds(s, shm__entry_key(e), e->klen, preds);
  for (int i = (int)SHM_HEIGHT(e) - 1; i >= 0; i--) {
    if (preds[i][i] == entry)
      shm_store_release(&preds[i][i], shm_load_relaxed(&e->next[i]));
    else
      (void)SHM_NEVER(1); /* linked at a level below its height but not found */
    e->height = (uint8_t)((e->height & SHM_ENTRY_INLINE_FREE) | (unsigned)i);
  }
}
