/*
 * check.c - the full consistency check (shm_check) and the writer's
 * recovery (shm__recover), which share one walker over the segment.
 *
 * The walker reads the segment through bounds-checked offsets only, so a
 * corrupt or foreign segment gives a list of problems, never a crash. Two
 * modes:
 *   strict (shm_check): what must hold after every commit: versions <=
 *     commit_seq, towers linked at exactly their height's levels, level 0
 *     holding exactly the index's entries, counters equal to a recount
 *     (counters only when @quiescent).
 *   tolerant (recovery): also accepts the states a writer killed at any
 *     instruction can leave: records of an unpublished commit (version
 *     commit_seq + 1) on a chain, an entry in the index but not (or not
 *     fully) in the skiplist, an entry unlinked from the index but still in
 *     the skiplist. Everything else is corruption: recovery then refuses to
 *     touch the segment (SHOAL_ECORRUPT).
 *
 * Recovery (a new writer attaching) then repairs in place, while readers
 * that outlived the old writer may still be reading:
 *   1. trims unpublished records from chain heads (release stores; readers'
 *      snapshots are <= commit_seq, so they never followed those records);
 *   2. drops entries that hold no published record from the index;
 *   3. relinks every skiplist level from the sorted set of kept entries,
 *      back to front, so each pointer a reader can load names an entry
 *      whose own pointers are already right;
 *   4. marks every reachable block and rebuilds the allocator: unreachable
 *      blocks are retired, not freed, and older records on chains are
 *      retired too: all of them at commit_seq + 1, which it then publishes
 *      as an empty commit, so they are reused only after every reader that
 *      began before the crash has left its section.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store-internal.h"

struct walker {
  const uint8_t *base;
  const struct shm_header *h;
  uint64_t size, limit, heap_start, top, seq;
  uint64_t snap; /* live check: the section's snapshot (0: quiescent) */
  const uint64_t *live_top, *live_limit; /* re-read on a miss when live */
  const uint32_t *pt;
  uint32_t *fix; /* recovery: the writable page table, to repair */
  int strict, quiescent;
  shm_check_fn fn;
  void *arg;
  unsigned problems;
  uint64_t *in_index, *in_list; /* bitmaps, one bit per 8 heap bytes */
  uint64_t nbits;
  /* results */
  uint64_t *ents; /* entries found through the index */
  size_t nents;
  uint64_t *list; /* level 0 in order */
  size_t nlist;
  uint64_t keys, key_bytes, value_bytes, records, idx_used, idx_live;
};

static void problem(struct walker *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void problem(struct walker *w, const char *fmt, ...) {
  w->problems++;
  if (!w->fn || w->problems > 1000) return; /* bound the report */
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  w->fn(w->arg, buf);
}

static inline int bit(const uint64_t *b, uint64_t i) {
  return (b[i >> 6] >> (i & 63)) & 1;
}
static inline void setbit(uint64_t *b, uint64_t i) {
  b[i >> 6] |= 1ull << (i & 63);
}
static inline uint64_t bidx(struct walker *w, uint64_t off) {
  return (off - w->heap_start) / 8;
}

static int inheap(struct walker *w, uint64_t off, uint64_t len) {
  if ((off & 7) == 0 && off >= w->heap_start && len <= w->top &&
      off <= w->top - len)
    return 1;
  if (!w->snap) return 0;
  /* live: the writer may have carved more since we looked */
  uint64_t lim = shm_load_acquire(w->live_limit);
  uint64_t top = shm_load_acquire(w->live_top);
  if (lim > w->size || top > lim) return 0;
  w->limit = lim;
  w->top = top;
  return (off & 7) == 0 && off >= w->heap_start && len <= w->top &&
         off <= w->top - len;
}

/* The block containing off: its start and size, or 0 if off is not inside
 * a carved block. */
static uint64_t block_of(struct walker *w, uint64_t off, uint64_t *bsize) {
  uint64_t p = off / SHM_PAGE;
  uint32_t e = w->pt[p];
  if (SHM_PT_TAG(e) == SHM_PT_CONT) {
    if (SHM_PT_VAL(e) > p) return 0;
    p -= SHM_PT_VAL(e);
    e = w->pt[p];
  }
  uint64_t ho = p * SHM_PAGE;
  if (SHM_PT_TAG(e) == SHM_PT_SLAB && SHM_PT_VAL(e) < SHM_NCLASSES) {
    uint32_t bs = shm__class_size((int)SHM_PT_VAL(e));
    uint64_t i = (off - ho) / bs;
    if (i >= SHM_SLAB / bs) return 0;
    *bsize = bs;
    return ho + i * bs;
  }
  if (SHM_PT_TAG(e) == SHM_PT_EXTENT) {
    *bsize = (uint64_t)SHM_PT_VAL(e) * SHM_PAGE;
    return ho;
  }
  return 0;
}

/* A run of pages that checks out: a known head tag, and every later page a
 * continuation at the right distance, all below heap_top. Returns its
 * length, or 0. */
static uint64_t run_ok(struct walker *w, uint64_t p, uint64_t top) {
  uint32_t e = w->pt[p];
  int tag = SHM_PT_TAG(e);
  uint64_t np;
  if (tag == SHM_PT_SLAB) {
    if (SHM_PT_VAL(e) >= SHM_NCLASSES) return 0;
    np = SHM_SLAB_PAGES;
  } else if (tag == SHM_PT_EXTENT || tag == SHM_PT_FREE) {
    np = SHM_PT_VAL(e);
  } else {
    return 0;
  }
  if (np == 0 || p + np > top) return 0;
  for (uint64_t i = 1; i < np; i++)
    if (w->pt[p + i] != SHM_PT_MAKE(SHM_PT_CONT, i)) return 0;
  return np;
}

/* Strict mode reports the first bad run. Recovery mode repairs: a writer
 * killed while splitting, merging or marking runs (alloc.c writes the
 * continuation pages first and the head last, and moves heap_top only over
 * complete runs) leaves only pages that belong to no block anyone can
 * reach; they become free pages (SHM_PT_NONE, relinked as free runs by the
 * rebuild). A reachable block inside such pages is then caught by
 * block_of() as corruption. */
static int check_pages(struct walker *w) {
  uint64_t first = w->heap_start / SHM_PAGE, top = w->top / SHM_PAGE;
  for (uint64_t p = 0; p < first; p++)
    if (SHM_PT_TAG(w->pt[p]) != SHM_PT_META) {
      problem(w, "page table: metadata page %llu is tagged %u",
              (unsigned long long)p, SHM_PT_TAG(w->pt[p]));
      return -1;
    }
  for (uint64_t p = first; p < top;) {
    uint64_t np = run_ok(w, p, top);
    if (np) {
      p += np;
      continue;
    }
    if (!w->fix) {
      problem(w, "page table: page %llu (entry %#x) does not start a valid "
                 "run",
              (unsigned long long)p, w->pt[p]);
      return -1;
    }
    w->fix[p] = SHM_PT_MAKE(SHM_PT_NONE, 0);
    p++;
  }
  return 0;
}

/* Validate entry at eo; return 0 if usable. */
static int check_entry(struct walker *w, uint64_t eo, const char *where) {
  uint64_t bs;
  if (!inheap(w, eo, 16)) {
    problem(w, "%s: entry offset %llu out of range", where,
            (unsigned long long)eo);
    return -1;
  }
  uint64_t b = block_of(w, eo, &bs);
  if (b != eo) {
    problem(w, "%s: entry %llu is not at the start of an allocated block",
            where, (unsigned long long)eo);
    return -1;
  }
  const struct shm_entry *e = (const void *)(w->base + eo);
  if (e->tower == 0 || e->tower > SHM_SKIP_MAXH || SHM_HEIGHT(e) > e->tower ||
      e->klen > SHM_KEY_MAX) {
    problem(w, "%s: entry %llu has tower %u height %u klen %u", where,
            (unsigned long long)eo, e->tower, SHM_HEIGHT(e), e->klen);
    return -1;
  }
  if (shm__entry_bytes(e->tower, e->klen) > bs) {
    problem(w, "%s: entry %llu overruns its block", where,
            (unsigned long long)eo);
    return -1;
  }
  uint64_t hh = shm__hash(w->h->sipkey,
                          (const uint8_t *)e + shm__entry_key_off(e->tower),
                          e->klen);
  if ((uint32_t)hh != e->hash32) {
    problem(w, "%s: entry %llu hash does not match its key", where,
            (unsigned long long)eo);
    return -1;
  }
  return 0;
}

/* Validate the record chain of entry eo. */
static int check_chain(struct walker *w, uint64_t eo, int *live,
                       uint64_t *vlen, uint64_t *nrec) {
  const struct shm_entry *e = (const void *)(w->base + eo);
  uint64_t ro = e->head, prev_ver = UINT64_MAX, bs;
  uint64_t embed_at = eo + shm__entry_bytes(e->tower, e->klen);
  int first = 1;
  *live = 0;
  *nrec = 0;
  while (ro) { /* bounded: versions strictly decrease (checked below) */
    if (!inheap(w, ro, 16)) {
      problem(w, "entry %llu: record offset %llu out of range",
              (unsigned long long)eo, (unsigned long long)ro);
      return -1;
    }
    const struct shm_rec *r = (const void *)(w->base + ro);
    if (r->flags & ~SHM_REC_FLAGS) {
      problem(w, "record %llu: bad flags %#x", (unsigned long long)ro,
              r->flags);
      return -1;
    }
    uint64_t need = shm__rec_hdr_bytes(r->flags) + r->len;
    if (r->flags & SHM_REC_EMBED) {
      uint64_t b = block_of(w, eo, &bs);
      if (ro != embed_at || b != eo || embed_at + need > eo + bs) {
        problem(w, "record %llu: embedded record misplaced",
                (unsigned long long)ro);
        return -1;
      }
    } else if (block_of(w, ro, &bs) != ro || need > bs) {
      problem(w, "record %llu: not an allocated block of its size",
              (unsigned long long)ro);
      return -1;
    }
    if ((r->flags & SHM_REC_TOMB) && r->len) {
      problem(w, "record %llu: tombstone with length", (unsigned long long)ro);
      return -1;
    }
    if (r->version == 0 || r->version >= prev_ver) {
      problem(w, "entry %llu: versions not strictly decreasing (%llu after "
                 "%llu)",
              (unsigned long long)eo, (unsigned long long)r->version,
              (unsigned long long)prev_ver);
      return -1;
    }
    /* A killed writer can leave records of the one commit it was building
     * (commit_seq + 1), never anything newer. */
    if (!w->strict && r->version > w->seq + 1) {
      problem(w, "record %llu: version %llu is beyond commit_seq %llu + 1",
              (unsigned long long)ro, (unsigned long long)r->version,
              (unsigned long long)w->seq);
      return -1;
    }
    if (w->strict && !w->snap && r->version > w->seq) {
      problem(w, "record %llu: version %llu newer than commit_seq %llu",
              (unsigned long long)ro, (unsigned long long)r->version,
              (unsigned long long)w->seq);
    }
    if (first) {
      *live = !(r->flags & SHM_REC_TOMB);
      *vlen = r->len;
      first = 0;
    }
    prev_ver = r->version;
    (*nrec)++;
    if (r->flags & SHM_REC_EMBED) {
      /* the inline space is marked free only once nothing holds it (the
       * writer flips the bit and head apart: quiescent only) */
      if (w->quiescent && (e->height & SHM_ENTRY_INLINE_FREE))
        problem(w, "entry %llu: inline space marked free but holds record "
                   "%llu", (unsigned long long)eo, (unsigned long long)ro);
      break;
    }
    /* live: records older than the first one our snapshot sees may have
     * been freed already (they were retired at a version <= snap) */
    if (w->snap && r->version <= w->snap) break;
    ro = *(const uint64_t *)(r + 1);
  }
  if (first) {
    problem(w, "entry %llu has no record", (unsigned long long)eo);
    return -1;
  }
  return 0;
}

static int grow(uint64_t **a, size_t *n, size_t *cap, uint64_t v) {
  if (*n == *cap) {
    size_t c = *cap ? *cap * 2 : 1024;
    uint64_t *x = realloc(*a, c * sizeof *x);
    if (!x) return -ENOMEM;
    *a = x;
    *cap = c;
  }
  (*a)[(*n)++] = v;
  return 0;
}

static const uint8_t *ekey(struct walker *w, uint64_t eo, size_t *klen) {
  const struct shm_entry *e = (const void *)(w->base + eo);
  *klen = e->klen;
  return (const uint8_t *)e + shm__entry_key_off(e->tower);
}

/* Walk everything. Returns 0 when the structure could be walked (problems
 * may still have been reported), -1 when it is too broken to go on. */
static int walk(struct walker *w) {
  const struct shm_header *h = w->h;
  w->heap_start = h->heap_start;
  w->top = shm_load_relaxed(&h->heap_top);
  w->seq = shm_load_acquire(&h->commit_seq);
  if (w->top < w->heap_start || w->top > w->limit || w->top % SHM_PAGE) {
    problem(w, "heap_top %llu outside [heap_start, backed_end]",
            (unsigned long long)w->top);
    return -1;
  }
  /* live, runs are split and merged under us: the page table is checked
   * only when quiescent (block_of still validates every block we follow) */
  if (!w->snap && check_pages(w)) return -1;
  /* one bit per 8 heap bytes of the whole mapping: a live walk may follow
   * the writer past the heap_top it started with (inheap() re-reads it);
   * calloc'd pages cost nothing until a bit is set there */
  w->nbits = (w->size - w->heap_start) / 8 + 64;
  w->in_index = calloc(w->nbits / 64 + 1, 8);
  w->in_list = calloc(w->nbits / 64 + 1, 8);
  if (!w->in_index || !w->in_list) return -1;

  /* index */
  uint64_t io = shm_load_acquire(&h->index_off), bs;
  if (!inheap(w, io, 64) || block_of(w, io, &bs) != io) {
    problem(w, "index offset %llu is not an allocated block",
            (unsigned long long)io);
    return -1;
  }
  const struct shm_index *ix = (const void *)(w->base + io);
  uint64_t cap = ix->capacity;
  if (ix->magic != SHM_INDEX_MAGIC || !cap || (cap & (cap - 1)) ||
      cap > (1ull << 32) || 64 + cap * 8 > bs) {
    problem(w, "index at %llu: bad magic or capacity %llu",
            (unsigned long long)io, (unsigned long long)cap);
    return -1;
  }
  size_t ecap = 0;
  uint64_t mask = cap - 1;
  for (uint64_t i = 0; i < cap; i++) {
    uint64_t sv = shm_load_acquire(&ix->slot[i]);
    if (!sv) continue;
    w->idx_used++;
    if (sv == SHM_SLOT_DELETED) continue;
    uint64_t eo = SHM_SLOT_OFF(sv);
    char where[64];
    snprintf(where, sizeof where, "index slot %llu", (unsigned long long)i);
    if (check_entry(w, eo, where)) {
      if (!w->strict) return -1;
      continue;
    }
    const struct shm_entry *e = (const void *)(w->base + eo);
    size_t kl;
    const uint8_t *k = ekey(w, eo, &kl);
    uint64_t hh = shm__hash(h->sipkey, k, kl);
    if (SHM_HASH_TAG(hh) != SHM_SLOT_TAG(sv))
      problem(w, "index slot %llu: tag does not match the key's hash",
              (unsigned long long)i);
    /* no empty slot between home and here */
    for (uint64_t j = hh & mask; j != i; j = (j + 1) & mask)
      if (ix->slot[j] == 0) {
        problem(w, "index slot %llu: unreachable from its home bucket %llu",
                (unsigned long long)i, (unsigned long long)(hh & mask));
        break;
      }
    if (bit(w->in_index, bidx(w, eo))) {
      problem(w, "entry %llu appears twice in the index",
              (unsigned long long)eo);
      if (!w->strict) return -1;
      continue;
    }
    setbit(w->in_index, bidx(w, eo));
    if (grow(&w->ents, &w->nents, &ecap, eo)) return -1;
    w->idx_live++;
    int live;
    uint64_t vlen = 0, nrec;
    if (check_chain(w, eo, &live, &vlen, &nrec)) {
      if (!w->strict) return -1;
      continue;
    }
    w->records += nrec;
    if (live) {
      w->keys++;
      w->key_bytes += e->klen;
      w->value_bytes += vlen;
    }
  }
  if (w->strict && !w->snap && ix->used != w->idx_used)
    problem(w, "index: used count %llu, found %llu",
            (unsigned long long)ix->used, (unsigned long long)w->idx_used);
  if (w->strict && !w->snap && w->idx_used * 8 > cap * 5)
    problem(w, "index: load above 5/8 (%llu of %llu)",
            (unsigned long long)w->idx_used, (unsigned long long)cap);

  /* skiplist level 0 */
  size_t lcap = 0;
  uint64_t nx = shm_load_acquire(&h->skip_next[0]);
  const uint8_t *pk = NULL;
  size_t pkl = 0;
  while (nx) {
    if (check_entry(w, nx, "skiplist")) return -1;
    if (bit(w->in_list, bidx(w, nx))) {
      problem(w, "skiplist: entry %llu linked twice (cycle)",
              (unsigned long long)nx);
      return -1;
    }
    size_t kl;
    const uint8_t *k = ekey(w, nx, &kl);
    if (pk && shm__keycmp(pk, pkl, k, kl) >= 0) {
      problem(w, "skiplist: level 0 out of order at entry %llu",
              (unsigned long long)nx);
      return -1;
    }
    setbit(w->in_list, bidx(w, nx));
    if (grow(&w->list, &w->nlist, &lcap, nx)) return -1;
    if (!bit(w->in_index, bidx(w, nx))) {
      if (w->strict && w->snap)
        ; /* inserted or unlinked since the index pass: not comparable */
      else if (w->strict)
        problem(w, "skiplist: entry %llu is not in the index",
                (unsigned long long)nx);
      else {
        int live;
        uint64_t vlen, nrec;
        if (check_chain(w, nx, &live, &vlen, &nrec)) return -1;
      }
    }
    pk = k;
    pkl = kl;
    nx = shm_load_acquire(&((const struct shm_entry *)(w->base + nx))->next[0]);
  }
  /* The cross-checks below compare two passes over structures the writer
   * changes between them: only meaningful when nothing commits. */
  if (!w->strict || w->snap) return 0;

  for (size_t i = 0; i < w->nents; i++)
    if (!bit(w->in_list, bidx(w, w->ents[i])))
      problem(w, "index entry %llu is not in the skiplist",
              (unsigned long long)w->ents[i]);
  /* upper levels: sorted, subsets, and linked exactly below height */
  unsigned sh = shm_load_relaxed(&h->skip_height);
  if (sh == 0 && w->nlist)
    problem(w, "skiplist: skip_height is 0 but level 0 holds %zu entries",
            w->nlist);
  for (unsigned lvl = 1; lvl < SHM_SKIP_MAXH; lvl++) {
    uint64_t cur = shm_load_acquire(&h->skip_next[lvl]);
    size_t pos = 0; /* position in level 0 */
    if (lvl >= sh && cur)
      problem(w, "skiplist: level %u used above skip_height %u", lvl, sh);
    while (cur) {
      while (pos < w->nlist && w->list[pos] != cur) {
        const struct shm_entry *e = (const void *)(w->base + w->list[pos]);
        if (SHM_HEIGHT(e) > lvl)
          problem(w, "skiplist: entry %llu (height %u) missing at level %u",
                  (unsigned long long)w->list[pos], SHM_HEIGHT(e), lvl);
        pos++;
      }
      if (pos == w->nlist) {
        problem(w, "skiplist: level %u not a sorted subset of level 0", lvl);
        break;
      }
      const struct shm_entry *e = (const void *)(w->base + cur);
      if (SHM_HEIGHT(e) <= lvl || e->tower <= lvl) {
        problem(w, "skiplist: entry %llu linked at level %u above its "
                   "height %u",
                (unsigned long long)cur, lvl, SHM_HEIGHT(e));
        break;
      }
      pos++;
      cur = shm_load_acquire(&e->next[lvl]);
    }
    for (; pos < w->nlist; pos++) {
      const struct shm_entry *e = (const void *)(w->base + w->list[pos]);
      if (SHM_HEIGHT(e) > lvl)
        problem(w, "skiplist: entry %llu (height %u) missing at level %u",
                (unsigned long long)w->list[pos], SHM_HEIGHT(e), lvl);
    }
  }
  return 0;
}

static void walker_free(struct walker *w) {
  free(w->in_index);
  free(w->in_list);
  free(w->ents);
  free(w->list);
}

unsigned shm_check(shm_view *v, int quiescent, shm_check_fn fn, void *arg) {
  return shm_check_ex(v, quiescent ? SHM_CHECK_QUIESCENT : 0, fn, arg);
}

unsigned shm_check_ex(shm_view *v, unsigned flags, shm_check_fn fn,
                      void *arg) {
  int quiescent = !!(flags & SHM_CHECK_QUIESCENT);
  struct walker w = {0};
  w.base = v->base;
  w.h = v->hdr;
  w.size = v->size;
  w.limit = shm_load_acquire(&v->hdr->backed_end);
  w.pt = (const uint32_t *)(v->base + SHM_PAGETAB_OFF);
  w.strict = !(flags & SHM_CHECK_TOLERANT);
  w.quiescent = quiescent;
  w.fn = fn;
  w.arg = arg;
  const struct shm_header *h = v->hdr;
  if (h->magic != SHM_MAGIC || h->format != SHM_FORMAT_VERSION ||
      h->fingerprint != shm__fingerprint()) {
    problem(&w, "header: bad magic, format or fingerprint");
    return w.problems;
  }
  if (h->size != v->size || w.limit > v->size || h->heap_start >= v->size ||
      h->npages != h->size / SHM_PAGE ||
      h->heap_start < SHM_PAGETAB_OFF + h->npages * 4) {
    problem(&w, "header: geometry does not match the object");
    return w.problems;
  }
  int began = (v->slot || v->unpinned) && shm_read_begin(v) == 0;
  if (!quiescent) {
    if (!began) {
      problem(&w, "a live check needs a reader slot to pin its snapshot");
      return w.problems;
    }
    w.snap = v->snap;
    w.live_top = &h->heap_top;
    w.live_limit = &h->backed_end;
  }
  if (walk(&w) == 0 && quiescent && w.strict) { /* recovery recounts */
#define CNT(field, val)                                                        \
  if (shm_load_relaxed(&h->field) != (val))                                    \
    problem(&w, "counter " #field " is %llu, recount %llu",                    \
            (unsigned long long)h->field, (unsigned long long)(val));
    CNT(c_keys, w.keys)
    CNT(c_key_bytes, w.key_bytes)
    CNT(c_value_bytes, w.value_bytes)
    CNT(c_index_used, w.idx_used)
#undef CNT
    /* allocator: free list lengths agree with the per-class counters */
    for (int c = 0; c < SHM_NCLASSES; c++) {
      /* a free list cannot hold more blocks than the heap has room for:
       * past that it is a cycle */
      uint64_t n = 0, bs, most = (w.top - w.heap_start) / shm__class_size(c);
      for (uint64_t b = h->class_free[c]; b; n++) {
        if (n > most) {
          problem(&w, "class %d free list: a cycle", c);
          break;
        }
        if (!inheap(&w, b, 8) || block_of(&w, b, &bs) != b ||
            bs != shm__class_size(c)) {
          problem(&w, "class %d free list: bad block %llu", c,
                  (unsigned long long)b);
          break;
        }
        b = *(const uint64_t *)(w.base + b);
      }
      if (n != h->c_class_free[c])
        problem(&w, "class %d: %llu blocks on the free list, counter %llu", c,
                (unsigned long long)n, (unsigned long long)h->c_class_free[c]);
    }
  }
  if (began) shm_read_end(v);
  walker_free(&w);
  return w.problems;
}

/* ------------------------------------------------------------ recovery -- */

static struct walker *cmp_w;
static int cmp_entries(const void *a, const void *b) {
  size_t al, bl;
  const uint8_t *ka = ekey(cmp_w, *(const uint64_t *)a, &al);
  const uint8_t *kb = ekey(cmp_w, *(const uint64_t *)b, &bl);
  return shm__keycmp(ka, al, kb, bl);
}

static uint64_t *rec_bits;
static uint64_t rec_heap_start;
static void mark(uint64_t off) {
  uint64_t i = (off - rec_heap_start) / 8;
  rec_bits[i >> 6] |= 1ull << (i & 63);
}
/* Blocks that were on the old writer's free lists (rec_free): no reader
 * can hold one (a block is freed only after its grace period), so they are
 * free again at once. Every other unreachable block may still be in a
 * surviving reader's snapshot (the crashed commit's, or one retired but
 * not yet freed): retired, reused after the grace period. Retiring the
 * free blocks too made every restart park all free slab space for a grace
 * period while the writes after it carved new slabs: the heap ratcheted up
 * by one window of writes per crash until the store was full (ENOSPC after
 * ~100 kill -9s under load, tests/stress broker-torture). */
static uint64_t *rec_free;
static void unreached(shm_store *s, uint64_t off) {
  uint64_t i = (off - rec_heap_start) / 8;
  if (rec_free && (rec_free[i >> 6] >> (i & 63)) & 1)
    shm__free(s, off);
  else
    shm__retire(s, off | SHM_RK_RAW, s->hdr->commit_seq + 1, 0, 0);
}

/* Mark the blocks on the old free lists in rec_free. The lists are
 * followed defensively (a crash or damage may have left a bad link): each
 * block must be a block of its class inside a carved slab, and a list can
 * not be longer than the heap has blocks; the first bad link ends that
 * list, whose rest is then simply retired. */
static void mark_free_lists(shm_store *s, const struct walker *w) {
  struct shm_header *h = s->hdr;
  uint64_t hs = h->heap_start, top = h->heap_top;
  for (int c = 0; c < SHM_NCLASSES; c++) {
    uint64_t bs = shm__class_size(c), most = (top - hs) / bs + 1, n = 0;
    for (uint64_t b = h->class_free[c]; b && n < most; n++) {
      uint64_t got;
      if (b < hs || b >= top || b % 8 ||
          block_of((struct walker *)w, b, &got) != b || got != bs)
        break;
      uint64_t i = (b - hs) / 8;
      if (rec_bits[i >> 6] >> (i & 63) & 1) break; /* reachable: damage */
      rec_free[i >> 6] |= 1ull << (i & 63);
      b = *(const uint64_t *)(s->base + b);
    }
  }
}

static void fail_log(void *arg, const char *msg) {
  shm_store *s = arg;
  if (!s->lasterr[0]) snprintf(s->lasterr, sizeof s->lasterr, "%s", msg);
}

int shm__recover(shm_store *s) {
  struct shm_header *h = s->hdr;
  struct walker w = {0};
  w.base = s->base;
  w.h = h;
  w.size = s->size;
  w.limit = h->backed_end;
  /* Page-table repairs go to a private copy first: a refused attach must
   * leave the segment exactly as it found it. */
  uint32_t *ptcopy = malloc(h->npages * sizeof *ptcopy);
  if (!ptcopy) return -ENOMEM;
  memcpy(ptcopy, s->pagetab, h->npages * sizeof *ptcopy);
  w.pt = ptcopy;
  w.fix = ptcopy;
  w.fn = fail_log;
  w.arg = s;
  s->lasterr[0] = 0;
  int unclean = !h->clean;
  if (walk(&w) != 0 || w.problems) {
    walker_free(&w);
    free(ptcopy);
    char why[512];
    snprintf(why, sizeof why, "%s", s->lasterr);
    return shm__errf(s, SHOAL_ECORRUPT,
                     "%s: consistency check failed, nothing was changed: %s",
                     s->path, why);
  }
  /* repairs and the allocator rebuild write into memory an unpinned
   * reader may be looking at: bracket them (shm__rseq_enter) */
  shm__rseq_enter(h);
  for (uint64_t p = 0; p < h->npages; p++)
    if (ptcopy[p] != s->pagetab[p]) shm_store_relaxed(&s->pagetab[p], ptcopy[p]);
  free(ptcopy);
  w.pt = s->pagetab;
  w.fix = NULL;
  uint64_t seq = h->commit_seq, u = seq + 1;

  /* 1-2: trim unpublished records; find the entries to keep */
  uint64_t *keep = NULL, *chain = NULL;
  size_t nkeep = 0, kcap = 0, nchain = 0, chcap = 0;
  int err = 0;
  struct shm_index *ix = shm__index(s);
  for (size_t pass = 0; pass < 2 && !err; pass++) {
    uint64_t *arr = pass ? w.list : w.ents;
    size_t n = pass ? w.nlist : w.nents;
    for (size_t i = 0; i < n; i++) {
      uint64_t eo = arr[i];
      if (pass && bit(w.in_index, bidx(&w, eo))) continue; /* done in pass 0 */
      struct shm_entry *e = shm__E(s, eo);
      uint64_t ro = e->head;
      for (;;) {
        struct shm_rec *r = shm__R(s, ro);
        if (r->version <= seq) break;
        ro = (r->flags & SHM_REC_EMBED) ? 0 : *shm__rec_prev(r);
        if (!ro) break;
      }
      if (ro != e->head && ro) shm_store_release(&e->head, ro);
      int published = ro != 0;
      int live = published && !(shm__R(s, ro)->flags & SHM_REC_TOMB);
      uint64_t hh = shm__hash(h->sipkey, shm__entry_key(e), e->klen);
      if (!pass) {
        if (!published) { /* an insert that never committed */
          shm__index_remove(s, hh, eo);
          continue;
        }
      } else {
        /* in the skiplist but not the index: a GC unlink that died half
         * way (dead), or, if live, an index slot to restore */
        if (!live) continue;
        if (shm__index_reserve(s, 1) == 0) shm__index_insert(s, hh, eo);
      }
      if ((err = grow(&keep, &nkeep, &kcap, eo)) != 0) break;
    }
  }
  if (err) goto out;

  /* 3: relink the skiplist from the sorted kept set */
  cmp_w = &w;
  if (nkeep) qsort(keep, nkeep, sizeof *keep, cmp_entries);
  unsigned maxh = 0;
  for (int lvl = SHM_SKIP_MAXH - 1; lvl >= 0; lvl--) {
    uint64_t next = 0;
    for (size_t i = nkeep; i-- > 0;) {
      struct shm_entry *e = shm__E(s, keep[i]);
      if (e->tower <= lvl) continue;
      if (e->next[lvl] != next) shm_store_release(&e->next[lvl], next);
      next = keep[i];
    }
    if (h->skip_next[lvl] != next) shm_store_release(&h->skip_next[lvl], next);
    if (next && !maxh) maxh = (unsigned)lvl + 1;
  }
  for (size_t i = 0; i < nkeep; i++) {
    struct shm_entry *e = shm__E(s, keep[i]);
    e->height = e->tower;
  }
  shm_store_release(&h->skip_height, maxh);

  /* 4: reachability, allocator, retire lists, counters */
  ix = shm__index(s);
  uint64_t nbits = (h->heap_top - h->heap_start) / 8 + 64;
  rec_bits = calloc(nbits / 64 + 1, 8);
  if (!rec_bits) {
    err = -ENOMEM;
    goto out;
  }
  rec_heap_start = h->heap_start;
  mark(h->index_off);
  s->rq_len = 0;
  s->dq_len = 0;
  h->c_retired = h->c_retired_bytes = 0;
  uint64_t keys = 0, kb = 0, vb = 0, recs = 0;
  for (size_t i = 0; i < nkeep; i++) {
    struct shm_entry *e = shm__E(s, keep[i]);
    mark(keep[i]);
    for (uint64_t ro = e->head; ro;) {
      struct shm_rec *r = shm__R(s, ro);
      if (!(r->flags & SHM_REC_EMBED)) mark(ro);
      recs++;
      ro = (r->flags & SHM_REC_EMBED) ? 0 : *shm__rec_prev(r);
    }
  }
  rec_free = calloc(nbits / 64 + 1, 8); /* none: all are retired */
  if (rec_free) mark_free_lists(s, &w);
  shm__alloc_rebuild(s, rec_bits, unreached);
  free(rec_free);
  rec_free = NULL;
  free(rec_bits);
  rec_bits = NULL;
  for (size_t i = 0; i < nkeep; i++) {
    struct shm_entry *e = shm__E(s, keep[i]);
    struct shm_rec *hr = shm__R(s, e->head);
    if (hr->flags & SHM_REC_TOMB) {
      if (s->dq_len == s->dq_cap) {
        size_t nc = s->dq_cap ? s->dq_cap * 2 : 256;
        struct shm_dead *d = realloc(s->dq, nc * sizeof *d);
        if (!d) {
          err = -ENOMEM;
          goto out;
        }
        s->dq = d;
        s->dq_cap = nc;
      }
      s->dq[s->dq_len++] = (struct shm_dead){keep[i], e->head, hr->version};
    } else {
      keys++;
      kb += e->klen;
      vb += hr->len;
    }
    /* older records: retire oldest first, each clearing its successor's
     * prev before it is freed (the FIFO frees in push order) */
    nchain = 0;
    for (uint64_t ro = e->head; ro;) {
      struct shm_rec *r = shm__R(s, ro);
      if (r->flags & SHM_REC_EMBED) break;
      uint64_t pv = *shm__rec_prev(r);
      if (!pv) break;
      int emb = (shm__R(s, pv)->flags & SHM_REC_EMBED) != 0;
      if ((err = grow(&chain, &nchain, &chcap, pv | (emb ? SHM_RK_NOFREE : SHM_RK_RECORD))) != 0 ||
          (err = grow(&chain, &nchain, &chcap, ro + sizeof(struct shm_rec))))
        goto out;
      ro = pv;
    }
    for (size_t j = nchain; j >= 2; j -= 2)
      shm__retire(s, chain[j - 2], u, chain[j - 1], keep[i]);
    /* the inline space, if no record on the chain holds it, may still be
     * read by a reader that outlived the old writer: mark it free only
     * after the grace period (compaction may then use it) */
    /* (an entry whose block ends at its tower and key has no inline
     * space: the address after it is the next block, not a slot) */
    uint64_t slot = keep[i] + shm__entry_bytes(e->tower, e->klen);
    int held = slot >= keep[i] + shm__block_size(s, keep[i]);
    for (uint64_t ro = e->head; ro && !held;) {
      struct shm_rec *r = shm__R(s, ro);
      held = (r->flags & SHM_REC_EMBED) != 0;
      ro = held ? 0 : *shm__rec_prev(r);
    }
    if (!held) shm__retire(s, slot | SHM_RK_SLOT, u, 0, keep[i]);
  }
  h->c_keys = keys;
  h->c_key_bytes = kb;
  h->c_value_bytes = vb;
  h->c_records = recs;
  h->c_entries = nkeep;
  /* the index's own counts are recounted too: damage that loses no key
   * (an empty slot flipped to a deleted marker) leaves them off, and the
   * load factor that decides growth must be true */
  uint64_t used = 0, live = 0;
  for (uint64_t i = 0; i < ix->capacity; i++) {
    uint64_t sv = ix->slot[i];
    used += sv != 0;
    live += sv != 0 && sv != SHM_SLOT_DELETED;
  }
  ix->used = used;
  ix->live = live;
  h->c_index_used = ix->used;

  /* identity of the new writer; the empty commit u publishes the repairs */
  h->writer_pid = (uint64_t)getpid();
  h->writer_start = shm_pid_start_time(getpid());
  h->writer_gen++;
  if (unclean && h->writer_gen > 1) h->recoveries++;
  shm_store_relaxed(&h->clean, 0);
  shm__rseq_exit(h);
  shm__commit_publish(s, u);
  shm_sweep_readers(s);
  shm_reclaim(s);
out:
  if (err) shm__rseq_exit(h); /* out of memory part way: close the bracket */
  free(chain);
  free(keep);
  walker_free(&w);
  return err;
}
