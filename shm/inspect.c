/*
 * inspect.c - read-only figures for shoal-inspect: the header's identity
 * and geometry, the reader slots and the heap's page runs.
 *
 * Nothing here needs a slot or writes anything. Every field is loaded once
 * (relaxed, or acquire where read.c does) and every offset is
 * bounds-checked before it is followed, so a live writer or a corrupt
 * segment gives odd figures at worst, never a crash or an endless loop.
 */
#include <string.h>

#include "shm-internal.h"

void shm_view_info(shm_view *v, shm_info *o) {
  const struct shm_header *h = v->hdr;
  memset(o, 0, sizeof *o);
  for (size_t i = 0; i < SHM_NAME_MAX && h->name[i]; i++) o->name[i] = h->name[i];
  o->format = h->format;
  o->fingerprint = h->fingerprint;
  o->store_id = h->store_id;
  o->created_ms = h->created_ms;
  o->size = h->size;
  o->heap_start = h->heap_start;
  o->npages = h->npages;
  o->backed_end = shm_load_acquire(&h->backed_end);
  o->heap_top = shm_load_relaxed(&h->heap_top);
  o->reader_slots = h->reader_slots;
  o->doorbells = h->doorbells;
  o->skip_height = shm_load_relaxed(&h->skip_height);
  o->commit_seq = shm_load_acquire(&h->commit_seq);
  o->last_commit_ms = shm_load_relaxed(&h->last_commit_ms);
  o->writer_pid = shm_load_relaxed(&h->writer_pid);
  o->writer_start = shm_load_relaxed(&h->writer_start);
  o->writer_gen = shm_load_relaxed(&h->writer_gen);
  o->clean = shm_load_relaxed(&h->clean);
  o->recoveries = shm_load_relaxed(&h->recoveries);
  o->reclaim_seq = shm_load_acquire(&h->reclaim_seq);
  /* pairs with the release of index_off in index.c:shm__index_reserve */
  uint64_t io = shm_load_acquire(&h->index_off);
  o->index_off = io;
  if (io >= h->heap_start && io % 8 == 0 && io <= o->backed_end &&
      o->backed_end - io >= sizeof(struct shm_index) &&
      o->backed_end <= v->size) {
    const struct shm_index *ix = (const struct shm_index *)(v->base + io);
    uint64_t cap = ix->capacity;
    if (ix->magic == SHM_INDEX_MAGIC && cap && !(cap & (cap - 1)) &&
        cap <= (1ull << 32)) {
      o->index_capacity = cap;
      o->index_bytes = sizeof *ix + cap * 8;
      o->index_used = shm_load_relaxed(&ix->used);
      o->index_live = shm_load_relaxed(&ix->live);
    }
  }
  uint64_t hwm = shm_load_relaxed(&v->rhdr->hwm);
  o->readers_hwm = hwm > v->rhdr->nslots ? v->rhdr->nslots : hwm;
}

size_t shm_view_readers(shm_view *v, shm_reader_info *out, size_t cap,
                        int all) {
  uint64_t hwm = shm_load_relaxed(&v->rhdr->hwm);
  if (hwm > v->rhdr->nslots) hwm = v->rhdr->nslots;
  size_t n = 0;
  for (uint64_t i = 0; i < hwm && n < cap; i++) {
    const struct shm_reader_slot *sl = &v->slots[i];
    uint32_t pid = shm_load_relaxed(&sl->pid);
    if (!pid && !all) continue;
    out[n++] = (shm_reader_info){
        .slot = (unsigned)i,
        .pid = pid,
        .nest = shm_load_relaxed(&sl->nest),
        .pid_start = shm_load_relaxed(&sl->pid_start),
        /* pairs with the release of snap in read.c:shm_read_end */
        .snap = shm_load_acquire(&sl->snap),
        .begin_ms = shm_load_relaxed(&sl->begin_ms),
        .leased = shm_load_relaxed(&sl->leased) != 0,
    };
  }
  return n;
}

int shm_view_runs(shm_view *v, int (*fn)(void *arg, const shm_run_info *r),
                  void *arg) {
  const struct shm_header *h = v->hdr;
  const uint32_t *pt = (const uint32_t *)(v->base + SHM_PAGETAB_OFF);
  uint64_t first = h->heap_start / SHM_PAGE, npages = h->npages;
  uint64_t top = shm_load_relaxed(&h->heap_top);
  if (top % SHM_PAGE || top < h->heap_start || top > v->size)
    return SHOAL_ECORRUPT;
  uint64_t last = top / SHM_PAGE; /* pages [first, last) are carved */
  if (last > npages) return SHOAL_ECORRUPT;
  int rc;
  for (uint64_t p = first; p < last;) {
    uint32_t e = shm_load_relaxed(&pt[p]);
    shm_run_info r = {.offset = p * SHM_PAGE, .pages = 0, .kind = 0, .cls = -1};
    switch (SHM_PT_TAG(e)) {
    case SHM_PT_SLAB:
      if (SHM_PT_VAL(e) >= SHM_NCLASSES) return SHOAL_ECORRUPT;
      r.kind = SHM_RUN_SLAB;
      r.cls = (int)SHM_PT_VAL(e);
      r.pages = SHM_SLAB_PAGES;
      break;
    case SHM_PT_EXTENT:
      r.kind = SHM_RUN_EXTENT;
      r.pages = SHM_PT_VAL(e);
      break;
    case SHM_PT_FREE:
      r.kind = SHM_RUN_FREE;
      r.pages = SHM_PT_VAL(e);
      break;
    default: /* a run must start here: anything else is corrupt (or the
                writer is relinking it this instant: run again) */
      return SHOAL_ECORRUPT;
    }
    if (r.pages == 0 || r.pages > last - p) return SHOAL_ECORRUPT;
    if ((rc = fn(arg, &r)) != 0) return rc;
    p += r.pages;
  }
  if (last < npages) {
    shm_run_info r = {.offset = top, .pages = npages - last,
                      .kind = SHM_RUN_UNCARVED, .cls = -1};
    if ((rc = fn(arg, &r)) != 0) return rc;
  }
  return 0;
}
