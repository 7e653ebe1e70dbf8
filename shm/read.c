/*
 * read.c - the reader side: sections, get, get_many, scan, wait.
 *
 * Progress: wait-free. No lock, no retry, no system call on the read path
 * (the TTL clock is a vDSO read, made at most once per section and only when
 * a record with a TTL is met). Readers never write the data object; they
 * write only their own slot in the readers object.
 *
 * Snapshot pinning (read_begin), the store-buffer argument:
 *     reader                              writer (store.c)
 *     S  = load_acquire(commit_seq)       store_release(commit_seq, r)
 *     store(slot.snap, S)                 ... retire X at r ...
 *     fence (seq_cst)                     fence (seq_cst)  [min_snapshot]
 *     S2 = load_acquire(commit_seq)       load_acquire(slot.snap)
 * The section uses S2. If the writer's slot load missed our store, our
 * reload after the fence sees commit_seq >= r, so S2 >= r and we never need
 * X (only snapshots < r can reach it). If the writer saw our slot, it holds
 * S <= S2 and the writer keeps everything retired after S. Raising the slot
 * to S2 afterwards only releases memory no snapshot >= S2 needs.
 *
 * Version filter (resolve): a get starts from the entry's newest record
 * (head, acquire; pairs with the release in store.c) and follows prev
 * (acquire) to the first record whose version <= snapshot. Records of a
 * commit not yet published carry version commit_seq + 1 > any snapshot, so
 * a batch is seen whole or not at all. A prev of 0 below the snapshot means
 * the older records were freed, which happens only once no snapshot could
 * need them: the key did not exist then.
 *
 * Bounds: every offset read from the segment is checked before use (8-byte
 * aligned, inside the heap, below backed_end); a bad one gives
 * SHOAL_ECORRUPT, never a wild read. backed_end is cached per view and
 * re-read (acquire; pairs with the release in segment.c:shm__back) only on
 * a miss, because the writer may have backed more since.
 *
 * Unpinned sections (SHM_VIEW_UNPINNED; shoal-inspect, which must not
 * write even the readers object): begin publishes nothing, so the writer
 * may free and reuse what such a section reads. The writer brackets every
 * free and rebuild with the header's reclaim_seq (odd inside; see
 * store-internal.h:shm__rseq_enter), a seqcount:
 *     reader                              writer (shm_reclaim, recovery)
 *     q1 = load_acquire(reclaim_seq)      store(reclaim_seq, odd)
 *     ... reads (bounds-checked) ...      fence (release)      [smp_wmb]
 *     fence (acquire)         [smp_rmb]   ... frees, rebuilds ...
 *     q2 = load(reclaim_seq)              store_release(reclaim_seq, even)
 * If a read saw a store made after the writer's release fence, the
 * reader's acquire fence synchronises with it and q2 is the odd value or
 * later, so q2 != q1 and the section is discarded (shm_read_validate). A
 * free that completed before q1 was loaded made its block unreachable
 * first (prev cleared, entry unlinked, index replaced), so the section
 * cannot have followed an offset to it. An odd q1 == q2 is valid only if
 * the writer is dead (it died inside the bracket; nothing moves).
 */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "shm-internal.h"

/* A pointer to [off, off+len) in the mapping, or NULL if out of bounds. */
static inline const uint8_t *ptr(shm_view *v, uint64_t off, uint64_t len) {
  if (shm_likely((off & 7) == 0 && off >= v->hdr->heap_start &&
                 len <= v->limit && off <= v->limit - len))
    return v->base + off;
  if ((off & 7) || off < SHM_PAGETAB_OFF || len > v->size) return NULL;
  uint64_t be = shm_load_acquire(&v->hdr->backed_end);
  if (be > v->size) return NULL;
  v->limit = be;
  if (len > be || off < v->hdr->heap_start || off > be - len) return NULL;
  return v->base + off;
}

static inline uint64_t section_now(shm_view *v) {
  if (!v->now_ms) v->now_ms = shm_now_ms();
  return v->now_ms;
}

int shm_read_begin(shm_view *v) {
  if (v->nest++) return 0;
  struct shm_reader_slot *sl = v->slot;
  if (shm_unlikely(!sl)) {
    if (v->unpinned) {
      /* An unpinned section (shoal-inspect): nothing is published, so the
       * writer may free what we read; shm_read_validate tells. Pairs with
       * the release store in store-internal.h:shm__rseq_exit. */
      v->rseq = shm_load_acquire(&v->hdr->reclaim_seq);
      v->snap = shm_load_acquire(&v->hdr->commit_seq);
      v->now_ms = 0;
      return 0;
    }
    v->nest = 0;
    return SHOAL_ENOREADERS;
  }
  /* pairs with the release of commit_seq in store.c:shm__commit_publish */
  uint64_t s = shm_load_acquire(&v->hdr->commit_seq);
  shm_store_relaxed(&sl->snap, s);
  /* pairs with the fence in store.c:shm__min_snapshot (see top comment) */
  shm_fence_seq_cst();
  uint64_t s2 = shm_load_acquire(&v->hdr->commit_seq);
  if (s2 != s) shm_store_relaxed(&sl->snap, s2);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME_COARSE, &ts); /* vDSO: no system call */
  shm_store_relaxed(&sl->begin_ms,
                    (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000);
  shm_store_relaxed(&sl->nest, 1);
  v->snap = s2;
  v->now_ms = 0;
  return 0;
}

void shm_read_end(shm_view *v) {
  if (!v->nest || --v->nest) return;
  v->snap = 0;
  if (shm_unlikely(!v->slot)) return; /* unpinned */
  shm_store_relaxed(&v->slot->nest, 0);
  /* pairs with the acquire of snap in store.c:shm__min_snapshot: our reads
   * of the section happen before the writer frees what they touched */
  shm_store_release(&v->slot->snap, 0);
}

uint64_t shm_view_snapshot(const shm_view *v) { return v->nest ? v->snap : 0; }

int shm_view_writer_alive(const shm_view *v) {
  const struct shm_header *h = v->hdr;
  uint64_t pid = shm_load_relaxed(&h->writer_pid);
  uint64_t start = shm_load_relaxed(&h->writer_start);
  if (pid == 0 || pid > INT32_MAX || start == 0) return 0;
  return shm_pid_start_time((pid_t)pid) == start;
}

int shm_read_validate(shm_view *v) {
  if (!v->nest) return SHOAL_ENOSECTION;
  if (v->slot) return 0; /* pinned: nothing we saw can be freed */
  /* smp_rmb: the section's reads happen before this load; pairs with the
   * release fence in store-internal.h:shm__rseq_enter */
  shm_fence_acquire();
  uint64_t q = shm_load_relaxed(&v->hdr->reclaim_seq);
  if (q != v->rseq) return -EAGAIN;
  /* odd and unchanged: a writer is freeing (retry), or one died inside
   * its bracket and nothing moves any more */
  if ((q & 1) && shm_view_writer_alive(v)) return -EAGAIN;
  return 0;
}

/* The record of entry e visible at the snapshot: 0 and *out filled, or
 * ENOTFOUND (absent, tombstone, expired), or ECORRUPT. With want_tomb, a
 * tombstone's version is reported too (for shm_wait). */
static int resolve(shm_view *v, const struct shm_entry *e, shm_val *out,
                   int want_tomb) {
  /* pairs with the release of head in store.c (phase 2) */
  uint64_t ro = shm_load_acquire(&e->head), newer = UINT64_MAX;
  for (;;) {
    const struct shm_rec *r = (const struct shm_rec *)ptr(v, ro, sizeof *r);
    /* versions strictly decrease along a chain: that bounds the walk (and
     * catches a cycle) without capping how many versions a long-lived
     * section may keep alive */
    if (shm_unlikely(!r || (r->flags & ~SHM_REC_FLAGS) || r->version >= newer))
      return SHOAL_ECORRUPT;
    newer = r->version;
    if (r->version <= v->snap) {
      if (!ptr(v, ro, shm__rec_hdr_bytes(r->flags) + (uint64_t)r->len))
        return SHOAL_ECORRUPT;
      if (r->flags & SHM_REC_TOMB) {
        if (want_tomb) out->version = r->version;
        return SHOAL_ENOTFOUND;
      }
      uint64_t exp = shm__rec_expires(r);
      if (exp && exp <= section_now(v)) {
        if (want_tomb) out->version = r->version;
        return SHOAL_ENOTFOUND;
      }
      out->data = shm__rec_data(r);
      out->len = r->len;
      out->version = r->version;
      out->expires_at = exp;
      return 0;
    }
    if (r->flags & SHM_REC_EMBED) return SHOAL_ENOTFOUND; /* born later */
    /* pairs with the release of prev's clearing in store.c:shm_reclaim */
    ro = shm_load_acquire((const uint64_t *)(r + 1));
    if (!ro) return SHOAL_ENOTFOUND;
  }
}

static inline const struct shm_index *load_index(shm_view *v) {
  /* pairs with the release of index_off in index.c:shm__index_reserve */
  uint64_t io = shm_load_acquire(&v->hdr->index_off);
  const struct shm_index *ix = (const struct shm_index *)ptr(v, io, 64);
  if (!ix || ix->magic != SHM_INDEX_MAGIC) return NULL;
  uint64_t cap = ix->capacity;
  if (cap == 0 || (cap & (cap - 1)) || cap > (1ull << 32) ||
      !ptr(v, io, 64 + cap * 8))
    return NULL;
  return ix;
}

/* Probe from slot i: 0 (found, *eo set), ENOTFOUND, ECORRUPT. */
static int probe(shm_view *v, const struct shm_index *ix, uint64_t h,
                 const void *key, size_t klen, const struct shm_entry **ep) {
  uint64_t mask = ix->capacity - 1, i = h & mask, tag = SHM_HASH_TAG(h);
  for (uint64_t n = 0; n <= mask; n++, i = (i + 1) & mask) {
    /* pairs with the release of the slot in index.c:shm__index_insert */
    uint64_t sv = shm_load_acquire(&ix->slot[i]);
    if (sv == 0) return SHOAL_ENOTFOUND;
    if (sv == SHM_SLOT_DELETED || SHM_SLOT_TAG(sv) != tag) continue;
    uint64_t eo = SHM_SLOT_OFF(sv);
    const struct shm_entry *e = (const struct shm_entry *)ptr(v, eo, 16);
    if (!e) return SHOAL_ECORRUPT;
    /* the entry's second line (key tail, embedded value) is fetched in
     * parallel with the first instead of after it */
    shm_prefetch((const uint8_t *)e + 64);
    if (e->hash32 != (uint32_t)h || e->klen != klen) continue;
    if (e->tower == 0 || e->tower > SHM_SKIP_MAXH ||
        !ptr(v, eo, shm__entry_bytes(e->tower, klen)))
      return SHOAL_ECORRUPT;
    if (klen && memcmp((const uint8_t *)e + shm__entry_key_off(e->tower), key,
                       klen) != 0)
      continue;
    *ep = e;
    return 0;
  }
  return SHOAL_ECORRUPT; /* no empty slot: the index is not ours */
}

/* The entry of @key in the current index (shm_get, shm_history). */
static inline int lookup(shm_view *v, const void *key, size_t klen,
                         const struct shm_entry **ep) {
  if (shm_unlikely(!v->nest)) return SHOAL_ENOSECTION;
  if (shm_unlikely(klen > SHM_KEY_MAX)) return SHOAL_ETOOBIG;
  const struct shm_index *ix = load_index(v);
  if (!ix) return SHOAL_ECORRUPT;
  return probe(v, ix, shm__hash(v->sipkey, key, klen), key, klen, ep);
}

int shm_get(shm_view *v, const void *key, size_t klen, shm_val *out) {
  const struct shm_entry *e;
  int err = lookup(v, key, klen, &e);
  if (err) return err;
  return resolve(v, e, out, 0);
}

/* A three-stage software pipeline over groups of GM_GROUP keys:
 *   stage A (group g+2): hash, prefetch the home slot;
 *   stage B (group g+1): load the slot, prefetch the entry it names (both
 *                        lines: header and embedded value);
 *   stage C (group g):   probe and resolve, now mostly from cache.
 * Up to 2 * GM_GROUP misses are in flight while the CPU hashes and compares,
 * so the DRAM latencies overlap instead of adding up; a get costs one of
 * them alone, get_many a fraction per key. */
#define GM_GROUP 8
int shm_get_many(shm_view *v, size_t n, const shm_key *keys, shm_val *out,
                 int *status) {
  if (shm_unlikely(!v->nest)) return SHOAL_ENOSECTION;
  const struct shm_index *ix = load_index(v);
  if (!ix) {
    for (size_t i = 0; i < n; i++) status[i] = SHOAL_ECORRUPT;
    return 0;
  }
  uint64_t mask = ix->capacity - 1;
  uint64_t hs[3][GM_GROUP];
  size_t ngroups = (n + GM_GROUP - 1) / GM_GROUP;
  int found = 0;
  for (size_t g = 0; g < ngroups + 2; g++) {
    if (g < ngroups) { /* A */
      uint64_t *h = hs[g % 3];
      for (size_t i = g * GM_GROUP, k = 0; i < n && k < GM_GROUP; i++, k++) {
        if (keys[i].len > SHM_KEY_MAX) {
          h[k] = 0;
          continue;
        }
        h[k] = shm__hash(v->sipkey, keys[i].data, keys[i].len);
        shm_prefetch(&ix->slot[h[k] & mask]);
      }
    }
    if (g >= 1 && g - 1 < ngroups) { /* B */
      size_t b = g - 1;
      const uint64_t *h = hs[b % 3];
      for (size_t i = b * GM_GROUP, k = 0; i < n && k < GM_GROUP; i++, k++) {
        uint64_t sv = shm_load_acquire(&ix->slot[h[k] & mask]);
        if (sv > SHM_SLOT_DELETED && SHM_SLOT_TAG(sv) == SHM_HASH_TAG(h[k])) {
          const uint8_t *e = ptr(v, SHM_SLOT_OFF(sv), 128);
          if (e) {
            shm_prefetch(e);
            shm_prefetch(e + 64);
          }
        }
      }
    }
    if (g >= 2) { /* C */
      size_t c = g - 2;
      const uint64_t *h = hs[c % 3];
      for (size_t i = c * GM_GROUP, k = 0; i < n && k < GM_GROUP; i++, k++) {
        int st;
        const struct shm_entry *e;
        if (keys[i].len > SHM_KEY_MAX)
          st = SHOAL_ETOOBIG;
        else if ((st = probe(v, ix, h[k], keys[i].data, keys[i].len, &e)) == 0)
          st = resolve(v, e, &out[i], 0);
        status[i] = st;
        if (st == 0) found++;
      }
    }
  }
  return found;
}

size_t shm_prefix_end(const void *prefix, size_t plen, void *buf) {
  const uint8_t *p = prefix;
  uint8_t *b = buf;
  size_t n = plen;
  while (n > 0 && p[n - 1] == 0xff) n--;
  if (n == 0) return 0;
  memcpy(b, p, n);
  b[n - 1]++;
  return n;
}

static int keycmp(const uint8_t *a, size_t alen, const void *b, size_t blen) {
  size_t m = alen < blen ? alen : blen;
  int r = m ? memcmp(a, b, m) : 0;
  if (r) return r;
  return alen < blen ? -1 : alen > blen;
}

/* An entry at offset eo, checked, with its key. */
static const struct shm_entry *entry_at(shm_view *v, uint64_t eo,
                                        const uint8_t **key) {
  const struct shm_entry *e = (const struct shm_entry *)ptr(v, eo, 16);
  if (!e || e->tower == 0 || e->tower > SHM_SKIP_MAXH || e->klen > SHM_KEY_MAX ||
      !ptr(v, eo, shm__entry_bytes(e->tower, e->klen)))
    return NULL;
  *key = (const uint8_t *)e + shm__entry_key_off(e->tower);
  return e;
}

int shm_scan(shm_view *v, const void *start, size_t slen, const void *end,
             size_t elen, shm_scan_fn fn, void *arg) {
  if (shm_unlikely(!v->nest)) return SHOAL_ENOSECTION;
  if (!start) slen = 0;
  if (end && elen == 0) end = NULL;
  /* descend to the last entry < start at each level */
  const uint64_t *cur = v->hdr->skip_next;
  unsigned height = shm_load_acquire(&v->hdr->skip_height);
  if (height > SHM_SKIP_MAXH) return SHOAL_ECORRUPT;
  const uint8_t *key;
  for (int i = (int)height - 1; i >= 0; i--) {
    /* A damaged level may loop. Brent's cycle finding bounds the walk at
     * one compare per step: the mark jumps to the current entry after 1,
     * 2, 4, ... steps, so a cycle of length L entered after m steps is
     * caught within 2(m + L) steps. (An intact level holds each entry
     * once: keys strictly increase.) Without a cycle the walk is bounded
     * by the entries in the heap. */
    uint64_t mark = 0;
    unsigned run = 0, lap = 1;
    for (;;) {
      /* pairs with the release stores in skiplist.c */
      uint64_t nx = shm_load_acquire(&cur[i]);
      if (!nx) break;
      if (shm_unlikely(nx == mark)) return SHOAL_ECORRUPT; /* a cycle */
      if (++run == lap) {
        mark = nx;
        run = 0;
        lap = lap < (1u << 31) ? lap << 1 : lap;
      }
      const struct shm_entry *e = entry_at(v, nx, &key);
      if (!e || e->tower <= (unsigned)i) return SHOAL_ECORRUPT;
      if (keycmp(key, e->klen, start, slen) >= 0) break;
      cur = e->next;
    }
  }
  /* walk level 0: strictly increasing keys, which also bounds the walk */
  const uint8_t *prev = NULL;
  size_t prevlen = 0;
  /* the descent leaves us before the first key >= start; a damaged header
   * (skip_height too low) may not: skip what lies below start */
  int below = slen != 0;
  uint64_t nx = shm_load_acquire(&cur[0]);
  while (nx) {
    const struct shm_entry *e = entry_at(v, nx, &key);
    if (!e) return SHOAL_ECORRUPT;
    if (prev && keycmp(prev, prevlen, key, e->klen) >= 0) return SHOAL_ECORRUPT;
    prev = key;
    prevlen = e->klen;
    if (shm_unlikely(below)) {
      if (keycmp(key, e->klen, start, slen) < 0) {
        nx = shm_load_acquire(&e->next[0]);
        continue;
      }
      below = 0;
    }
    if (end && keycmp(key, e->klen, end, elen) >= 0) break;
    shm_val val;
    int st = resolve(v, e, &val, 0);
    if (st == 0) {
      int r = fn(arg, key, e->klen, &val);
      if (r) return r;
    } else if (st != SHOAL_ENOTFOUND) {
      return st;
    }
    nx = shm_load_acquire(&e->next[0]);
  }
  return 0;
}

/* The key's version at a fresh snapshot: the newest visible record's,
 * tombstones included (a delete is a change a watcher wants to see). */
static uint64_t current_version(shm_view *v, const void *key, size_t klen) {
  if (shm_read_begin(v) != 0) return 0;
  uint64_t ver = 0;
  const struct shm_index *ix = load_index(v);
  const struct shm_entry *e;
  if (ix && probe(v, ix, shm__hash(v->sipkey, key, klen), key, klen, &e) == 0) {
    shm_val val = {0};
    int st = resolve(v, e, &val, 1);
    if (st == 0 || st == SHOAL_ENOTFOUND) ver = val.version;
  }
  shm_read_end(v);
  return ver;
}

int shm_wait(shm_view *v, const void *key, size_t klen, uint64_t after,
             int timeout_ms, uint64_t *version) {
  if (v->nest) return SHOAL_EINVAL;
  if (!v->slot) return SHOAL_ENOREADERS;
  if (klen > SHM_KEY_MAX) return SHOAL_ETOOBIG;
  uint32_t *bell = (uint32_t *)(v->base + SHM_DOORBELL_OFF) +
                   shm__hash(v->sipkey, key, klen) % SHM_DOORBELLS;
  struct timespec deadline;
  clock_gettime(CLOCK_MONOTONIC, &deadline);
  if (timeout_ms >= 0) {
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
    if (deadline.tv_nsec >= 1000000000) {
      deadline.tv_sec++;
      deadline.tv_nsec -= 1000000000;
    }
  }
  shm_fetch_add_relaxed(&v->rhdr->waiters, 1);
  /* pairs with the fence in store.c:shm__commit_publish (bump doorbell;
   * fence; load waiters): either the writer sees us waiting and wakes the
   * doorbell, or we see its bump below */
  shm_fence_seq_cst();
  int err = 0;
  uint64_t ver = 0;
  for (;;) {
    uint32_t d = shm_load_acquire(bell);
    ver = current_version(v, key, klen);
    if (after == 0 ? ver != 0 : ver > after) break;
    struct timespec ts, *tsp = NULL;
    if (timeout_ms >= 0) {
      struct timespec now;
      clock_gettime(CLOCK_MONOTONIC, &now);
      int64_t ns = (int64_t)(deadline.tv_sec - now.tv_sec) * 1000000000 +
                   (deadline.tv_nsec - now.tv_nsec);
      if (ns <= 0) {
        err = SHOAL_ETIMEOUT;
        break;
      }
      ts.tv_sec = ns / 1000000000;
      ts.tv_nsec = ns % 1000000000;
      tsp = &ts;
    }
    /* FUTEX_WAIT on the read-only mapping: the kernel only reads the word.
     * Shared (not PRIVATE): the writer wakes through its own mapping. */
    long r = syscall(SYS_futex, bell, FUTEX_WAIT, d, tsp, NULL, 0);
    if (r != 0 && errno == EINTR) {
      err = -EINTR;
      break;
    }
  }
  shm_fetch_sub_release(&v->rhdr->waiters, 1);
  if (version) *version = ver;
  return err;
}

void shm_view_stats(shm_view *v, shm_stats *st) {
  const struct shm_header *h = v->hdr;
  memset(st, 0, sizeof *st);
  st->size = h->size;
  st->backed = shm_load_relaxed(&h->backed_end);
  st->heap_used = shm_load_relaxed(&h->c_heap_used);
  st->heap_free = shm_load_relaxed(&h->c_heap_free) +
                  shm_load_relaxed(&h->c_free_pages) * SHM_PAGE;
  st->heap_top = shm_load_relaxed(&h->heap_top) - h->heap_start;
  st->meta_bytes = h->heap_start;
  st->keys = shm_load_relaxed(&h->c_keys);
  st->key_bytes = shm_load_relaxed(&h->c_key_bytes);
  st->value_bytes = shm_load_relaxed(&h->c_value_bytes);
  st->records = shm_load_relaxed(&h->c_records);
  st->entries = shm_load_relaxed(&h->c_entries);
  st->commit_seq = shm_load_acquire(&h->commit_seq);
  st->commits = shm_load_relaxed(&h->c_commits);
  st->index_used = shm_load_relaxed(&h->c_index_used);
  st->retired = shm_load_relaxed(&h->c_retired);
  st->retired_bytes = shm_load_relaxed(&h->c_retired_bytes);
  st->reclaimed = shm_load_relaxed(&h->c_reclaimed);
  st->expired = shm_load_relaxed(&h->c_expired);
  st->extents_used = shm_load_relaxed(&h->c_extent_pages);
  st->pages_free = shm_load_relaxed(&h->c_free_pages);
  uint64_t io = shm_load_acquire(&h->index_off);
  if (io >= h->heap_start && io + 64 <= st->backed)
    st->index_capacity = ((const struct shm_index *)(v->base + io))->capacity;
  st->nclasses = SHM_NCLASSES;
  for (int c = 0; c < SHM_NCLASSES; c++) {
    st->class_size[c] = shm__class_size(c);
    st->class_used[c] = shm_load_relaxed(&h->c_class_used[c]);
    st->class_free[c] = shm_load_relaxed(&h->c_class_free[c]);
  }
  uint64_t hwm = shm_load_relaxed(&v->rhdr->hwm), min = 0, min_ms = 0;
  if (hwm > v->rhdr->nslots) hwm = v->rhdr->nslots;
  for (uint64_t i = 0; i < hwm; i++) {
    const struct shm_reader_slot *sl = &v->slots[i];
    if (shm_load_relaxed(&sl->pid)) st->readers_claimed++;
    uint64_t snap = shm_load_acquire(&sl->snap);
    if (!snap) continue;
    st->readers_busy++;
    if (!min || snap < min) {
      min = snap;
      min_ms = shm_load_relaxed(&sl->begin_ms);
    }
  }
  st->oldest_snapshot = min;
  if (min) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    st->oldest_snapshot_age_ms = now > min_ms ? now - min_ms : 0;
  }
}

/* ------------------------------------------------------------ history -- */

int shm_history(shm_view *v, const void *key, size_t klen, shm_version *out,
                size_t cap, size_t *n) {
  *n = 0;
  const struct shm_entry *e;
  int err = lookup(v, key, klen, &e);
  if (err) return err;
  /* the same walk as resolve(), not stopping at the first visible record */
  uint64_t ro = shm_load_acquire(&e->head), newer = UINT64_MAX;
  while (ro) {
    const struct shm_rec *r = (const struct shm_rec *)ptr(v, ro, sizeof *r);
    if (!r || (r->flags & ~SHM_REC_FLAGS) || r->version >= newer ||
        !ptr(v, ro, shm__rec_hdr_bytes(r->flags) + (uint64_t)r->len))
      return SHOAL_ECORRUPT;
    newer = r->version;
    if (r->version <= v->snap) {
      if (*n < cap)
        out[*n] = (shm_version){.version = r->version,
                                .expires_at = shm__rec_expires(r),
                                .data = shm__rec_data(r),
                                .len = r->len,
                                .tombstone = !!(r->flags & SHM_REC_TOMB)};
      ++*n;
    }
    if (r->flags & SHM_REC_EMBED) break;
    /* pairs with the release of prev's clearing in store.c:shm_reclaim */
    ro = shm_load_acquire((const uint64_t *)(r + 1));
  }
  return 0;
}
