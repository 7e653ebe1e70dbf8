/*
 * alloc.c - the writer's allocator over the heap of the data object.
 *
 * The heap is carved from a bump pointer (heap_top) in whole pages:
 *   - slabs: SHM_SLAB_PAGES pages holding blocks of one size class
 *     (16..3072 bytes, 48 classes, at most 1/8 rounding loss above 256 B);
 *     free blocks form a singly linked list per class through their first
 *     8 bytes (class_free[] in the header). Slabs are never returned to the
 *     page pool (as in memcached): per-class free lists absorb churn.
 *   - extents: runs of whole pages for anything larger (large values, hash
 *     indexes). Freed extents become free runs, coalesced with free
 *     neighbours through the page table and kept in a doubly linked list
 *     (run_free_head); a run that reaches heap_top lowers it instead.
 * The page table (one u32 per page, SHM_PT_*) says what every page below
 * heap_top is, so shm__free() needs only an offset, and recovery can walk
 * the heap and find every block.
 *
 * Only the writer calls anything here; readers never look at free memory
 * (reclamation frees a block only after every reader that could see it has
 * left its section), except unpinned ones (shoal-inspect), which discard
 * what they read if the reclaim seqcount moved (read.c). Pages are backed with fallocate (shm__back) before
 * heap_top moves over them, so the allocator fails with SHOAL_ENOSPC instead
 * of handing out memory that would SIGBUS.
 */
#include <errno.h>
#include <string.h>

#include "store-internal.h"

int shm__class_of(uint64_t n) {
  if (n <= 16) return 0;
  if (n <= 256) return (int)((n + 7) / 8) - 2;
  if (n <= 512) return 30 + (int)((n - 256 + 31) / 32);
  if (n <= 1024) return 38 + (int)((n - 512 + 127) / 128);
  if (n <= 2048) return 42 + (int)((n - 1024 + 255) / 256);
  if (n <= 3072) return 47;
  return -1;
}

uint32_t shm__class_size(int c) {
  if (c <= 30) return 16 + 8 * (uint32_t)c;
  if (c <= 38) return 256 + 32 * (uint32_t)(c - 30);
  if (c <= 42) return 512 + 128 * (uint32_t)(c - 38);
  if (c <= 46) return 1024 + 256 * (uint32_t)(c - 42);
  return 3072;
}

static inline uint64_t *word(shm_store *s, uint64_t off) {
  return (uint64_t *)(s->base + off);
}

/* Continuation pages first, the head last: a writer killed half way leaves
 * either the old head (whose run no longer checks out: recovery turns its
 * pages into free pages) or a complete new run. Stores are relaxed atomics:
 * shoal-inspect may read the table while the writer runs. */
static void mark_run(shm_store *s, uint64_t p, uint64_t np, int tag,
                     uint32_t val) {
  for (uint64_t i = 1; i < np; i++)
    shm_store_relaxed(&s->pagetab[p + i], SHM_PT_MAKE(SHM_PT_CONT, (uint32_t)i));
  shm_store_relaxed(&s->pagetab[p], SHM_PT_MAKE(tag, val));
}

/* ---------------------------------------------------------- free runs -- */

static void run_link(shm_store *s, uint64_t p, uint64_t np) {
  struct shm_header *h = s->hdr;
  uint64_t off = p * SHM_PAGE;
  mark_run(s, p, np, SHM_PT_FREE, (uint32_t)np);
  struct shm_run *r = (struct shm_run *)(s->base + off);
  r->next = h->run_free_head;
  r->prev = 0;
  if (h->run_free_head)
    ((struct shm_run *)(s->base + h->run_free_head))->prev = off;
  h->run_free_head = off;
  h->c_free_pages += np;
}

static void run_unlink(shm_store *s, uint64_t p) {
  struct shm_header *h = s->hdr;
  struct shm_run *r = (struct shm_run *)(s->base + p * SHM_PAGE);
  if (r->prev)
    ((struct shm_run *)(s->base + r->prev))->next = r->next;
  else
    h->run_free_head = r->next;
  if (r->next) ((struct shm_run *)(s->base + r->next))->prev = r->prev;
  h->c_free_pages -= SHM_PT_VAL(s->pagetab[p]);
}

/* Give pages [p, p+np) back: coalesce with free neighbours, or lower
 * heap_top when the run ends there. */
static void pages_free(shm_store *s, uint64_t p, uint64_t np) {
  struct shm_header *h = s->hdr;
  uint64_t first = h->heap_start / SHM_PAGE, top = h->heap_top / SHM_PAGE;
  uint64_t nx = p + np;
  if (nx < top && SHM_PT_TAG(s->pagetab[nx]) == SHM_PT_FREE) {
    uint64_t n2 = SHM_PT_VAL(s->pagetab[nx]);
    run_unlink(s, nx);
    np += n2;
  }
  if (p > first) {
    uint32_t e = s->pagetab[p - 1];
    uint64_t head = p - 1;
    if (SHM_PT_TAG(e) == SHM_PT_CONT) head = p - 1 - SHM_PT_VAL(e);
    if (head >= first && SHM_PT_TAG(s->pagetab[head]) == SHM_PT_FREE) {
      np += SHM_PT_VAL(s->pagetab[head]);
      run_unlink(s, head);
      p = head;
    }
  }
  if (p + np == top) {
    for (uint64_t i = p; i < top; i++) s->pagetab[i] = 0;
    h->heap_top = p * SHM_PAGE;
    return;
  }
  run_link(s, p, np);
}

/* np pages, marked as a run of tag/val: first fit from the free runs,
 * else from the bump pointer. The new run is complete in the page table
 * before heap_top passes it or the rest of a split run is relinked. */
static int pages_alloc(shm_store *s, uint64_t np, int tag, uint32_t val,
                       unsigned flags, uint64_t *off) {
  struct shm_header *h = s->hdr;
  for (uint64_t r = h->run_free_head; r;
       r = ((struct shm_run *)(s->base + r))->next) {
    uint64_t p = r / SHM_PAGE, n = SHM_PT_VAL(s->pagetab[p]);
    if (n < np) continue;
    run_unlink(s, p);
    mark_run(s, p, np, tag, val);
    if (n > np) run_link(s, p + np, n - np);
    *off = r;
    return 0;
  }
  uint64_t top = h->heap_top, need = top + np * SHM_PAGE;
  uint64_t keep = (flags & SHM_ALLOC_RESERVE) ? 0 : SHM_DELETE_RESERVE;
  if (need < top || need + keep > s->size)
    return shm__errf(s, SHOAL_ENOSPC,
                     "store %s is full: %llu more pages do not fit in its "
                     "size of %llu bytes (delete keys or recreate it larger)",
                     s->path, (unsigned long long)np,
                     (unsigned long long)s->size);
  int err = shm__back(s, need + keep);
  if (err) return err;
  mark_run(s, top / SHM_PAGE, np, tag, val);
  shm_store_relaxed(&h->heap_top, need);
  *off = top;
  return 0;
}

/* --------------------------------------------------------- public-ish -- */

void shm__alloc_init_meta(shm_store *s) {
  uint64_t meta_pages = s->hdr->heap_start / SHM_PAGE;
  for (uint64_t i = 0; i < meta_pages; i++)
    s->pagetab[i] = SHM_PT_MAKE(SHM_PT_META, 0);
}

int shm__alloc(shm_store *s, uint64_t n, uint64_t *off) {
  return shm__alloc_ex(s, n, 0, off);
}

int shm__alloc_ex(shm_store *s, uint64_t n, unsigned flags, uint64_t *off) {
  struct shm_header *h = s->hdr;
  int c = shm__class_of(n);
  if (c >= 0) {
    if (!h->class_free[c]) {
      uint64_t so;
      int err = pages_alloc(s, SHM_SLAB_PAGES, SHM_PT_SLAB, (uint32_t)c, flags,
                            &so);
      if (err) return err;
      uint32_t bs = shm__class_size(c), nb = SHM_SLAB / bs;
      /* push in reverse so blocks come out in address order */
      for (uint32_t i = nb; i-- > 0;) {
        uint64_t b = so + (uint64_t)i * bs;
        *word(s, b) = h->class_free[c];
        h->class_free[c] = b;
      }
      h->c_class_free[c] += nb;
      h->c_heap_free += (uint64_t)nb * bs;
    }
    uint64_t b = h->class_free[c];
    h->class_free[c] = *word(s, b);
    h->c_class_free[c]--;
    h->c_class_used[c]++;
    h->c_heap_free -= shm__class_size(c);
    h->c_heap_used += shm__class_size(c);
    *off = b;
    return 0;
  }
  uint64_t np = (n + SHM_PAGE - 1) / SHM_PAGE;
  if (np > SHM_EXTENT_MAX_PAGES)
    return shm__errf(s, SHOAL_ETOOBIG, "allocation of %llu bytes",
                     (unsigned long long)n);
  uint64_t eo;
  int err = pages_alloc(s, np, SHM_PT_EXTENT, (uint32_t)np, flags, &eo);
  if (err) return err;
  h->c_extent_pages += np;
  h->c_heap_used += np * SHM_PAGE;
  *off = eo;
  return 0;
}

/* Head page of the block holding off, or 0. */
static uint64_t head_page(const shm_store *s, uint64_t off) {
  uint64_t p = off / SHM_PAGE;
  uint32_t e = s->pagetab[p];
  if (SHM_PT_TAG(e) == SHM_PT_CONT) p -= SHM_PT_VAL(e);
  return p;
}

uint64_t shm__block_size(const shm_store *s, uint64_t off) {
  uint32_t e = s->pagetab[head_page(s, off)];
  if (SHM_PT_TAG(e) == SHM_PT_SLAB) return shm__class_size((int)SHM_PT_VAL(e));
  if (SHM_PT_TAG(e) == SHM_PT_EXTENT) return (uint64_t)SHM_PT_VAL(e) * SHM_PAGE;
  return 0;
}

void shm__free(shm_store *s, uint64_t off) {
  struct shm_header *h = s->hdr;
  uint64_t p = head_page(s, off);
  uint32_t e = s->pagetab[p];
  if (SHM_PT_TAG(e) == SHM_PT_SLAB) {
    int c = (int)SHM_PT_VAL(e);
    *word(s, off) = h->class_free[c];
    h->class_free[c] = off;
    h->c_class_used[c]--;
    h->c_class_free[c]++;
    h->c_heap_used -= shm__class_size(c);
    h->c_heap_free += shm__class_size(c);
    return;
  }
  if (SHM_NEVER(SHM_PT_TAG(e) != SHM_PT_EXTENT || off != p * SHM_PAGE)) return;
  uint64_t np = SHM_PT_VAL(e);
  h->c_extent_pages -= np;
  h->c_heap_used -= np * SHM_PAGE;
  pages_free(s, p, np);
}

void shm__alloc_reset(shm_store *s) {
  struct shm_header *h = s->hdr;
  memset(h->class_free, 0, sizeof h->class_free);
  memset(h->c_class_used, 0, sizeof h->c_class_used);
  memset(h->c_class_free, 0, sizeof h->c_class_free);
  h->run_free_head = 0;
  h->c_free_pages = 0;
  h->c_extent_pages = 0;
  h->c_heap_used = 0;
  h->c_heap_free = 0;
}

static inline int bit_get(const uint64_t *bits, uint64_t i) {
  return (bits[i >> 6] >> (i & 63)) & 1;
}

/* Recovery: the page table below heap_top has been validated (check.c).
 * Blocks marked in @bits stay used; everything else carved is handed to
 * @unreached (still counted as used: it is retired, not free, because a
 * reader that outlived the old writer may hold it); free runs are relinked,
 * adjacent ones merged. */
void shm__alloc_rebuild(shm_store *s, const uint64_t *bits,
                        void (*unreached)(shm_store *, uint64_t off)) {
  struct shm_header *h = s->hdr;
  shm__alloc_reset(s);
  uint64_t hs = h->heap_start, top = h->heap_top / SHM_PAGE;
  uint64_t run_start = 0, run_len = 0;
  for (uint64_t p = hs / SHM_PAGE; p < top;) {
    uint32_t e = s->pagetab[p];
    int tag = SHM_PT_TAG(e);
    uint64_t np = tag == SHM_PT_SLAB ? SHM_SLAB_PAGES : SHM_PT_VAL(e);
    if (tag == SHM_PT_FREE || tag == SHM_PT_NONE) {
      if (tag == SHM_PT_NONE) np = 1;
      if (!run_len) run_start = p;
      run_len += np;
      p += np;
      continue;
    }
    if (run_len) {
      run_link(s, run_start, run_len);
      run_len = 0;
    }
    uint64_t off = p * SHM_PAGE;
    if (tag == SHM_PT_SLAB) {
      int c = (int)SHM_PT_VAL(e);
      uint32_t bs = shm__class_size(c), nb = SHM_SLAB / bs;
      /* free blocks in reverse so they come out in address order */
      for (uint32_t i = nb; i-- > 0;) {
        uint64_t b = off + (uint64_t)i * bs;
        h->c_class_used[c]++;
        h->c_heap_used += bs;
        if (!bit_get(bits, (b - hs) / 8)) unreached(s, b);
      }
    } else { /* SHM_PT_EXTENT */
      h->c_extent_pages += np;
      h->c_heap_used += np * SHM_PAGE;
      if (!bit_get(bits, (off - hs) / 8)) unreached(s, off);
    }
    p += np;
  }
  if (run_len) {
    if (run_start + run_len == top) {
      for (uint64_t i = run_start; i < top; i++) s->pagetab[i] = 0;
      h->heap_top = run_start * SHM_PAGE;
    } else {
      run_link(s, run_start, run_len);
    }
  }
}
