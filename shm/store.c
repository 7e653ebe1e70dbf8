/*
 * store.c - the single writer: commits, MVCC records, reclamation, TTL,
 * reader leases.
 *
 * Progress: one writer thread; readers are wait-free and never block it.
 *
 * A commit (shm_put, shm_del, shm_cas, shm_batch, shm_expire) runs in two
 * phases:
 *   1. plan: every condition (CAS versions, DEL of absent keys, sizes) is
 *      checked and every block is allocated, including hash index growth.
 *      A failure here frees what was allocated (nothing was published) and
 *      returns: all or nothing.
 *   2. apply (cannot fail): records are written with version = seq =
 *      commit_seq + 1 and linked: an existing key's entry->head is stored
 *      with release (pairs with the acquire of head in read.c); a new key's
 *      entry is stored into an index slot with release and linked into the
 *      skiplist. Readers may find these records at once, but every reader's
 *      snapshot is <= commit_seq < seq, so they skip them (the version
 *      filter in read.c:resolve()). Finally commit_seq = seq is stored with
 *      release (pairs with the acquire in shm_read_begin): a batch becomes
 *      visible atomically, with one store.
 *
 * Reclamation (epoch based, across processes):
 *   - a record superseded by the commit seq is retired at seq: only
 *     snapshots < seq can reach it. An entry unlinked by a GC commit u, and
 *     an old hash index replaced before commit u, are retired at u.
 *   - shm_reclaim() issues a full fence (pairs with the fence in
 *     shm_read_begin: the store-buffer pattern; either the writer sees the
 *     reader's slot or the reader sees the new commit_seq), loads every busy
 *     slot's snapshot (acquire; pairs with the release in shm_read_end) and
 *     frees every retired block whose seq <= the minimum. Retire queue
 *     entries are in non-decreasing seq order, so this is a FIFO pop.
 *   - before freeing a record, the prev field pointing to it is zeroed, so
 *     no reachable offset ever names freed memory.
 *   - a deleted key (head = tombstone of version v) is unlinked from index
 *     and skiplist once the minimum snapshot is >= v (nobody can see its old
 *     value), in a GC commit of its own; the entry and the tombstone are
 *     then retired at that commit.
 *   - only items retired at a commit published before that fence are
 *     freed in a pass (the argument covers readers that began before it);
 *   - compaction: once an entry's inline record is reclaimed, the key's head
 *     (a separate record with no older version left) is copied back inline
 *     and head swapped to the copy; the separate record is retired at
 *     commit_seq + 1 and a GC commit publishes it (see compact()).
 * A reader stuck in a section therefore holds memory, never correctness:
 * stats show the oldest snapshot and its age.
 *
 * Doorbells (section 5): after publishing, the commit bumps doorbell
 * [hash % SHM_DOORBELLS] of every key it touched (release), then a full
 * fence (pairs with the fence in shm_wait between waiters++ and the
 * doorbell load), then FUTEX_WAKEs those doorbells only if some process
 * waits.
 */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "store-internal.h"

enum { SHM_OP__EXPIRE = 100 }; /* internal: tombstone if expired */

/* Reclaim once this much is retired (an outgrown hash index, large
 * values), not only every 1024 commits: memory comes back promptly, and a
 * reader-table scan costs far less than the memory it frees. */
#define SHM_RECLAIM_BYTES (1u << 20)

enum {
  RK_RECORD = SHM_RK_RECORD,
  RK_ENTRY = SHM_RK_ENTRY,
  RK_NOFREE = SHM_RK_NOFREE,
  RK_SLOT = SHM_RK_SLOT,
};

/* ------------------------------------------------------------- retire -- */

/* The kind of a retired block is kept in the low 3 bits of off (blocks are
 * 8-aligned). */
uint64_t shm__retire(shm_store *s, uint64_t off, uint64_t seq, uint64_t clear,
                     uint64_t entry) {
  if (s->rq_len == s->rq_cap) {
    size_t ncap = s->rq_cap ? s->rq_cap * 2 : 1024;
    struct shm_retired *n = malloc(ncap * sizeof *n);
    if (SHM_NEVER(!n)) return 0; /* leak the block rather than crash */
    for (size_t i = 0; i < s->rq_len; i++)
      n[i] = s->rq[(s->rq_head + i) % s->rq_cap];
    free(s->rq);
    s->rq = n;
    s->rq_head = 0;
    s->rq_cap = ncap;
  }
  s->rq[(s->rq_head + s->rq_len) % s->rq_cap] =
      (struct shm_retired){off, seq, clear, entry};
  s->rq_len++;
  s->hdr->c_retired++;
  if ((off & 7) != RK_NOFREE && (off & 7) != RK_SLOT)
    s->hdr->c_retired_bytes += shm__block_size(s, off & ~7ull);
  return ++s->rq_pushed;
}

/* Point the still-queued retire item @serial at another prev field. */
static void retire_fix(shm_store *s, uint64_t serial, uint64_t clear) {
  uint64_t first = s->rq_pushed - s->rq_len + 1; /* serial of the head */
  if (SHM_NEVER(serial < first || serial > s->rq_pushed)) return;
  s->rq[(s->rq_head + (serial - first)) % s->rq_cap].clear = clear;
}

static uint64_t retire_kind(shm_store *s, uint64_t off, int kind,
                            uint64_t seq, uint64_t clear, uint64_t entry) {
  return shm__retire(s, off | (uint64_t)kind, seq, clear, entry);
}

static void write_rec(shm_store *s, uint64_t off, uint32_t flags,
                      uint64_t version, uint64_t prev, uint64_t expires,
                      const void *val, size_t vlen);

/*
 * Compaction. An entry's inline space is free once its last occupant (the
 * key's first value, or an earlier copy) has been reclaimed after its grace
 * period: SHM_ENTRY_INLINE_FREE. When the key's head is then a separate
 * record with no older version left (prev 0, cleared by reclamation), copy
 * it back into the inline space (same version, same bytes, same TTL; the
 * EMBED layout has no prev, which answers every snapshot as a prev of 0
 * does) and swap head to the copy with one release store (pairs with the
 * acquire of head in read.c). A get of an overwritten key then costs two
 * misses again, and the separate record's memory comes back. It is retired
 * at commit_seq + 1: a reader that loaded head just before the swap holds a
 * snapshot <= commit_seq. Tombstones stay where the dead-key queue names
 * them.
 */
static int compact(shm_store *s, uint64_t entry) {
  struct shm_entry *e = shm__E(s, entry);
  if (!(e->height & SHM_ENTRY_INLINE_FREE)) return 0;
  uint64_t slot = entry + shm__entry_bytes(e->tower, e->klen);
  uint64_t room = shm__block_size(s, entry) - (slot - entry);
  uint64_t head = e->head;
  struct shm_rec *r = shm__R(s, head);
  /* an embedded head lives in the inline space, which is then not free;
   * without room, slot is the next block and may hold anything */
  if (SHM_NEVER(room && (r->flags & SHM_REC_EMBED))) return 0;
  if (r->flags & (SHM_REC_TOMB | SHM_REC_EMBED)) return 0;
  if (*shm__rec_prev(r) != 0) return 0; /* older versions still needed */
  uint32_t fl = (r->flags & SHM_REC_TTL) | SHM_REC_EMBED;
  if (shm__rec_bytes(fl, r->len) > room) return 0;
  write_rec(s, slot, fl, r->version, 0, shm__rec_expires(r), shm__rec_data(r),
            r->len);
  shm_store_release(&e->head, slot);
  e->height &= (uint8_t)~SHM_ENTRY_INLINE_FREE;
  s->hdr->c_records++;
  retire_kind(s, head, RK_RECORD, shm_load_relaxed(&s->hdr->commit_seq) + 1, 0,
              0);
  s->compactions++;
  return 1;
}

uint64_t shm__min_snapshot(shm_store *s, uint64_t *busy, uint64_t *oldest_ms) {
  /* pairs with the fence in shm_read_begin (store slot; fence; load
   * commit_seq) against our (store commit_seq; fence; load slot) */
  shm_fence_seq_cst();
  uint64_t hwm = shm_load_relaxed(&s->rhdr->hwm), min = UINT64_MAX, nb = 0;
  uint64_t old_ms = 0;
  if (hwm > s->rhdr->nslots) hwm = s->rhdr->nslots;
  for (uint64_t i = 0; i < hwm; i++) {
    /* pairs with the release store of snap in shm_read_end */
    uint64_t snap = shm_load_acquire(&s->slots[i].snap);
    if (!snap) continue;
    nb++;
    if (snap < min) {
      min = snap;
      old_ms = shm_load_relaxed(&s->slots[i].begin_ms);
    }
  }
  if (busy) *busy = nb;
  if (oldest_ms) *oldest_ms = old_ms;
  return min;
}

static uint64_t entry_hash(shm_store *s, struct shm_entry *e) {
  return shm__hash(s->hdr->sipkey, shm__entry_key(e), e->klen);
}

size_t shm_reclaim(shm_store *s) {
  if (s->in_reclaim) return 0;
  s->in_reclaim = 1;
  struct shm_header *h = s->hdr;
  size_t freed = 0, compacted = 0;
  shm__rseq_enter(h);
  for (int round = 0; round < 2; round++) {
    /* Only what was retired at a commit published before the fence in
     * shm__min_snapshot may go: the store-buffer argument (read.c) covers
     * readers that began before that commit_seq was visible. Items pushed
     * during this loop (compaction) carry commit_seq + 1 and wait for the
     * next round, after it is published and the slots are scanned again. */
    uint64_t pub = shm_load_relaxed(&h->commit_seq);
    uint64_t min = shm__min_snapshot(s, NULL, NULL);
    if (min > pub) min = pub;
    while (s->rq_len && s->rq[s->rq_head].seq <= min) {
      struct shm_retired it = s->rq[s->rq_head];
      s->rq_head = (s->rq_head + 1) % s->rq_cap;
      s->rq_len--;
      int kind = (int)(it.off & 7);
      uint64_t off = it.off & ~7ull;
      if (it.clear) shm_store_relaxed((uint64_t *)(s->base + it.clear), 0);
      h->c_retired--;
      if (it.entry) {
        if (kind == RK_NOFREE || kind == RK_SLOT)
          shm__E(s, it.entry)->height |= SHM_ENTRY_INLINE_FREE;
        compacted += compact(s, it.entry);
      }
      if (kind == RK_SLOT) continue;
      if (kind != RK_NOFREE) {
        h->c_retired_bytes -= shm__block_size(s, off);
        shm__free(s, off);
        freed++;
        h->c_reclaimed++;
      }
      if (kind == RK_RECORD || kind == RK_NOFREE) h->c_records--;
      if (kind == RK_ENTRY) h->c_entries--;
    }
    /* unlink deleted keys nobody can see any more */
    size_t unlinked = 0, keep = 0;
    uint64_t u = shm_load_relaxed(&h->commit_seq) + 1;
    for (size_t i = 0; i < s->dq_len; i++) {
      struct shm_dead d = s->dq[i];
      struct shm_entry *e = shm__E(s, d.entry);
      if (e->head != d.tomb) continue; /* resurrected: drop */
      if (d.version > min) {
        s->dq[keep++] = d;
        continue;
      }
      shm__index_remove(s, entry_hash(s, e), d.entry);
      shm__skip_remove(s, d.entry);
      /* the tombstone first, then the entry (its embedded record goes
       * with it). The tombstone's own prev was cleared when the record it
       * replaced was freed above (that was retired at d.version <= min). */
      retire_kind(s, d.tomb, RK_RECORD, u, 0, 0);
      retire_kind(s, d.entry, RK_ENTRY, u, 0, 0);
      unlinked++;
    }
    s->dq_len = keep;
    if (!unlinked && !compacted) break;
    /* a GC commit publishes the unlinks and compactions: sections begun
     * after it cannot reach the unlinked entries or the moved records. */
    shm__commit_publish(s, u);
    compacted = 0;
  }
  shm__rseq_exit(h);
  s->commits_since_reclaim = 0;
  s->in_reclaim = 0;
  return freed;
}

/* ------------------------------------------------------------ commits -- */

static void touch(shm_store *s, uint64_t h) {
  if (s->ntouched == s->touched_cap) {
    size_t n = s->touched_cap ? s->touched_cap * 2 : 64;
    uint32_t *t = realloc(s->touched, n * sizeof *t);
    if (SHM_NEVER(!t)) return;
    s->touched = t;
    s->touched_cap = n;
  }
  s->touched[s->ntouched++] = (uint32_t)(h % SHM_DOORBELLS);
}

void shm__commit_publish(shm_store *s, uint64_t seq) {
  struct shm_header *h = s->hdr;
  h->last_commit_ms = shm_now_ms();
  h->c_commits++;
  /* pairs with the acquire loads of commit_seq in shm_read_begin */
  shm_store_release(&h->commit_seq, seq);
  for (size_t i = 0; i < s->ntouched; i++)
    shm_fetch_add_release(&s->doorbell[s->touched[i]], 1);
  if (s->ntouched) {
    /* pairs with the fence in shm_wait (waiters++; fence; load doorbell) */
    shm_fence_seq_cst();
    if (shm_load_relaxed(&s->rhdr->waiters)) {
      for (size_t i = 0; i < s->ntouched; i++) {
        syscall(SYS_futex, &s->doorbell[s->touched[i]], FUTEX_WAKE, INT_MAX,
                NULL, NULL, 0);
        s->wakes++;
      }
    }
  }
  s->ntouched = 0;
  /* Amortised reclamation: scanning the reader table costs one load per
   * claimed slot, so do it when enough has been retired, not per commit. */
  if (++s->commits_since_reclaim >= 1024 || s->rq_len >= 512 ||
      s->dq_len >= 128 || h->c_retired_bytes >= SHM_RECLAIM_BYTES)
    shm_reclaim(s);
}

struct plan {
  uint64_t h;
  uint64_t entry;       /* existing entry, or 0 */
  int creator;          /* op creating the entry in this batch, or -1 */
  int prior;            /* last earlier op on the same key, or -1 */
  int writes;           /* 0 = no-op */
  int newentry;
  int after_exists;     /* visible (TTL-aware) after this op */
  int after_counted;    /* non-tombstone head after this op */
  uint64_t after_version;
  uint64_t after_vlen;
  uint64_t blk, rec;    /* allocations: entry block and/or record */
  uint64_t retired;     /* serial of the retire item of the record this
                           op's record replaced (0: none) */
  unsigned tower;
  uint32_t rflags;
};

/* The key's state before the batch: visible?, version, counted, len. */
static void head_state(shm_store *s, uint64_t entry, uint64_t now,
                       struct plan *p) {
  p->after_exists = 0;
  p->after_counted = 0;
  p->after_version = 0;
  p->after_vlen = 0;
  if (!entry) return;
  struct shm_rec *r = shm__R(s, shm__E(s, entry)->head);
  if (r->flags & SHM_REC_TOMB) return;
  p->after_counted = 1;
  p->after_vlen = r->len;
  uint64_t exp = shm__rec_expires(r);
  if (exp && exp <= now) return;
  p->after_exists = 1;
  p->after_version = r->version;
}

static void write_rec(shm_store *s, uint64_t off, uint32_t flags,
                      uint64_t version, uint64_t prev, uint64_t expires,
                      const void *val, size_t vlen) {
  struct shm_rec *r = shm__R(s, off);
  r->version = version;
  r->len = (uint32_t)vlen;
  r->flags = flags;
  uint64_t *f = (uint64_t *)(r + 1);
  if (!(flags & SHM_REC_EMBED)) *f++ = prev;
  if (flags & SHM_REC_TTL) *f++ = expires;
  if (vlen) memcpy(f, val, vlen);
}

/* The last op before i on the same key, or -1; records i in the table.
 * Small batches (seen == NULL) look back linearly. */
static int find_prior(const shm_op *ops, struct plan *P, size_t i,
                      uint32_t *seen, uint64_t mask) {
  const shm_op *op = &ops[i];
  uint64_t hh = P[i].h;
  if (!seen) {
    for (size_t j = i; j-- > 0;)
      if (P[j].h == hh && ops[j].klen == op->klen &&
          (op->klen == 0 || memcmp(ops[j].key, op->key, op->klen) == 0))
        return (int)j;
    return -1;
  }
  for (uint64_t k = hh & mask;; k = (k + 1) & mask) {
    uint32_t j = seen[k];
    if (j == UINT32_MAX) {
      seen[k] = (uint32_t)i;
      return -1;
    }
    if (P[j].h == hh && ops[j].klen == op->klen &&
        (op->klen == 0 || memcmp(ops[j].key, op->key, op->klen) == 0)) {
      seen[k] = (uint32_t)i; /* later ops chain to the latest */
      return (int)j;
    }
  }
}

static int debug_yield = -1;
static void maybe_yield(shm_store *s) {
  if (debug_yield < 0) {
    const char *e = getenv("SHOAL_DEBUG_YIELD");
    debug_yield = e && *e && *e != '0';
  }
  if (debug_yield && (shm__skip_random_tower(s) > 1)) sched_yield();
}

/*
 * Overlap the cache misses of looking up many keys, as shm_get_many does:
 * hash a group of keys and prefetch their home slots; then prefetch the
 * entry the first slot with each key's tag names; then that entry's head
 * record. Hints only, nothing is changed or trusted: a later lookup does the
 * real work and finds the lines in cache. A batch of 100 overwrites of
 * random keys among 1M otherwise spends its time in these misses, one after
 * another.
 */
#define PREFETCH_GROUP 32
void shm_prefetch_ops(shm_store *s, const shm_op *ops, size_t n) {
  struct shm_index *ix = shm__index(s);
  uint64_t mask = ix->capacity - 1, hs[PREFETCH_GROUP], es[PREFETCH_GROUP];
  for (size_t g = 0; g < n; g += PREFETCH_GROUP) {
    size_t m = n - g < PREFETCH_GROUP ? n - g : PREFETCH_GROUP;
    for (size_t i = 0; i < m; i++) {
      const shm_op *op = &ops[g + i];
      hs[i] = UINT64_MAX;
      if ((!op->key && op->klen) || op->klen > SHM_KEY_MAX) continue;
      hs[i] = shm__hash(s->hdr->sipkey, op->key, op->klen);
      shm_prefetch(&ix->slot[hs[i] & mask]);
    }
    for (size_t i = 0; i < m; i++) {
      es[i] = 0;
      if (hs[i] == UINT64_MAX) continue;
      uint64_t j = hs[i] & mask, tag = SHM_HASH_TAG(hs[i]);
      for (int probe = 0; probe < 4; probe++, j = (j + 1) & mask) {
        uint64_t sv = ix->slot[j];
        if (!sv) break;
        if (sv == SHM_SLOT_DELETED || SHM_SLOT_TAG(sv) != tag) continue;
        es[i] = SHM_SLOT_OFF(sv);
        shm_prefetch(s->base + es[i]);
        shm_prefetch(s->base + es[i] + 64);
        break;
      }
    }
    for (size_t i = 0; i < m; i++)
      if (es[i]) shm_prefetch(s->base + shm__E(s, es[i])->head);
  }
}

static int batch(shm_store *s, const shm_op *ops, size_t n, uint64_t *seqp,
                 size_t *failed, uint64_t *curver, uint64_t now) {
  struct shm_header *h = s->hdr;
  uint64_t seq = shm_load_relaxed(&h->commit_seq) + 1;
  if (seqp) *seqp = seq - 1;
  if (n == 0) return 0;
  struct plan stack[8], *P = n <= 8 ? stack : calloc(n, sizeof *P);
  if (!P) return shm__errf(s, -ENOMEM, "batch of %zu ops: out of memory", n);
  if (P == stack) memset(stack, 0, sizeof stack);
  int err = 0;
  size_t i, newents = 0, writes = 0;
  if (!now) now = shm_now_ms();
  /* ops on the same key within the batch: a hash table of op indexes for
   * large batches (a linear look back would make loading O(n^2)) */
  uint32_t *seen = NULL;
  uint64_t seen_mask = 0;
  if (n > 16) {
    seen_mask = 64;
    while (seen_mask < 2 * n) seen_mask *= 2;
    seen = malloc(seen_mask * sizeof *seen);
    if (!seen) {
      if (P != stack) free(P);
      return shm__errf(s, -ENOMEM, "batch of %zu ops: out of memory", n);
    }
    memset(seen, 0xff, seen_mask * sizeof *seen);
    seen_mask--;
  }

  /* phase 0: overlap the lookups' cache misses (shm_prefetch_ops) */
  if (n >= 4) shm_prefetch_ops(s, ops, n);

  /* phase 1: plan, check, allocate */
  for (i = 0; i < n; i++) {
    const shm_op *op = &ops[i];
    struct plan *p = &P[i];
    p->creator = p->prior = -1;
    int k = op->kind;
    int is_put = k == SHM_OP_PUT || k == SHM_OP_CAS;
    if (k != SHM_OP_PUT && k != SHM_OP_DEL && k != SHM_OP_CAS &&
        k != SHM_OP_DEL_ANY && k != SHM_OP__EXPIRE) {
      err = shm__errf(s, SHOAL_EINVAL, "op %zu: unknown kind %d", i, k);
      break;
    }
    if ((!op->key && op->klen) || (is_put && !op->val && op->vlen)) {
      err = shm__errf(s, SHOAL_EINVAL, "op %zu: NULL key or value", i);
      break;
    }
    if (op->klen > SHM_KEY_MAX) {
      err = shm__errf(s, SHOAL_ETOOBIG, "op %zu: key of %zu bytes (max %u)", i,
                      op->klen, SHM_KEY_MAX);
      break;
    }
    if (is_put && op->vlen > SHM_VALUE_MAX) {
      err = shm__errf(s, SHOAL_ETOOBIG, "op %zu: value of %zu bytes (max %u)",
                      i, op->vlen, SHM_VALUE_MAX);
      break;
    }
    p->h = shm__hash(h->sipkey, op->key, op->klen);
    p->prior = find_prior(ops, P, i, seen, seen_mask);
    if (p->prior >= 0) {
      struct plan *q = &P[p->prior];
      p->entry = q->entry;
      p->creator = q->creator;
      p->after_exists = q->after_exists;
      p->after_counted = q->after_counted;
      p->after_version = q->after_version;
      p->after_vlen = q->after_vlen;
    } else {
      p->entry = shm__index_find(s, p->h, op->key, op->klen, NULL);
      head_state(s, p->entry, now, p);
    }
    /* p->after_* now describe the state before this op */
    if (k == SHM_OP_DEL && !p->after_exists) {
      err = shm__errf(s, SHOAL_ENOTFOUND, "op %zu: delete of an absent key", i);
      break;
    }
    if (k == SHM_OP_CAS && op->expect != p->after_version) {
      if (curver) *curver = p->after_version;
      err = shm__errf(s, SHOAL_ECONFLICT,
                      "op %zu: expected version %llu, key is at %llu", i,
                      (unsigned long long)op->expect,
                      (unsigned long long)p->after_version);
      break;
    }
    if (k == SHM_OP_DEL_ANY && !p->after_exists) continue;
    if (k == SHM_OP__EXPIRE) {
      /* tombstone only a key still expired (counted but not visible) */
      if (p->prior >= 0 || !p->after_counted || p->after_exists) continue;
    }
    p->writes = 1;
    writes++;
    uint32_t fl = (is_put && op->expires_at) ? SHM_REC_TTL : 0;
    if (!is_put) fl = SHM_REC_TOMB;
    if (is_put && !p->entry && p->creator < 0) {
      p->newentry = 1;
      p->creator = (int)i;
      newents++;
      p->tower = shm__skip_random_tower(s);
      uint64_t eb = shm__entry_bytes(p->tower, op->klen);
      uint64_t rb = shm__rec_bytes(fl | SHM_REC_EMBED, op->vlen);
      if (eb + rb <= shm__class_size(SHM_NCLASSES - 1)) {
        fl |= SHM_REC_EMBED;
        err = shm__alloc(s, eb + rb, &p->blk);
        p->rec = p->blk + eb;
      } else {
        err = shm__alloc(s, eb, &p->blk);
        if (!err && (err = shm__alloc(s, shm__rec_bytes(fl, op->vlen),
                                      &p->rec)) != 0) {
          shm__free(s, p->blk);
          p->blk = 0;
        }
      }
    } else {
      err = shm__alloc_ex(s, shm__rec_bytes(fl, is_put ? op->vlen : 0),
                          is_put ? 0 : SHM_ALLOC_RESERVE, &p->rec);
    }
    p->rflags = fl;
    if (err) {
      p->rec = 0;
      break;
    }
    if (is_put) {
      p->after_exists = !(op->expires_at && op->expires_at <= now);
      p->after_counted = 1;
      p->after_version = seq;
      p->after_vlen = op->vlen;
    } else {
      p->after_exists = p->after_counted = 0;
      p->after_version = 0; /* a CAS after a delete expects 0 */
      p->after_vlen = 0;
    }
  }
  if (!err && newents) err = shm__index_reserve(s, newents);
  if (err) {
    if (failed) *failed = i < n ? i : n - 1;
    for (size_t j = 0; j <= i && j < n; j++) {
      if (P[j].blk) shm__free(s, P[j].blk);
      if (P[j].rec && !(P[j].rflags & SHM_REC_EMBED)) shm__free(s, P[j].rec);
    }
    if (P != stack) free(P);
    free(seen);
    return err;
  }
  free(seen);
  if (!writes) {
    if (P != stack) free(P);
    return 0;
  }

  /* phase 2: apply (no failure past this point) */
  int64_t d_keys = 0, d_kbytes = 0, d_vbytes = 0;
  uint64_t d_expired = 0;
  for (i = 0; i < n; i++) {
    struct plan *p = &P[i];
    const shm_op *op = &ops[i];
    if (!p->writes) {
      if (p->prior >= 0) p->retired = P[p->prior].retired;
      continue;
    }
    int is_put = op->kind == SHM_OP_PUT || op->kind == SHM_OP_CAS;
    /* the state before this op, for the counters */
    int was_counted;
    uint64_t was_vlen;
    if (p->prior >= 0) {
      was_counted = P[p->prior].after_counted;
      was_vlen = P[p->prior].after_vlen;
    } else {
      struct plan tmp = {0};
      head_state(s, p->entry, now, &tmp);
      was_counted = tmp.after_counted;
      was_vlen = tmp.after_vlen;
    }
    if (p->newentry) {
      struct shm_entry *e = shm__E(s, p->blk);
      write_rec(s, p->rec, p->rflags, seq, 0, op->expires_at, op->val,
                op->vlen);
      e->head = p->rec;
      e->hash32 = (uint32_t)p->h;
      e->klen = (uint16_t)op->klen;
      e->tower = (uint8_t)p->tower;
      e->height = 0;
      memset(e->next, 0, 8ull * p->tower);
      if (op->klen) memcpy(shm__entry_key(e), op->key, op->klen);
      shm__index_insert(s, p->h, p->blk); /* publishes e (release) */
      maybe_yield(s);
      shm__skip_insert(s, p->blk);
      h->c_entries++;
      h->c_records++;
      for (size_t j = i + 1; j < n; j++)
        if (P[j].creator == (int)i) P[j].entry = p->blk;
    } else {
      struct shm_entry *e = shm__E(s, p->entry);
      uint64_t old = e->head;
      struct shm_rec *orec = shm__R(s, old);
      int okind = (orec->flags & SHM_REC_EMBED) ? RK_NOFREE : RK_RECORD;
      if (orec->version == seq) {
        /* old was written by an earlier op of this batch: no snapshot can
         * ever see it, so link past it (versions on a chain stay strictly
         * decreasing) and take over the retire item of what it replaced */
        uint64_t older =
            (orec->flags & SHM_REC_EMBED) ? 0 : *shm__rec_prev(orec);
        write_rec(s, p->rec, p->rflags, seq, older, op->expires_at,
                  is_put ? op->val : NULL, is_put ? op->vlen : 0);
        shm_store_release(&e->head, p->rec);
        p->retired = p->prior >= 0 ? P[p->prior].retired : 0;
        if (older && p->retired)
          retire_fix(s, p->retired, p->rec + sizeof(struct shm_rec));
        retire_kind(s, old, okind, seq, 0, p->entry);
      } else {
        write_rec(s, p->rec, p->rflags, seq, old, op->expires_at,
                  is_put ? op->val : NULL, is_put ? op->vlen : 0);
        /* pairs with the acquire of head in read.c:resolve() */
        shm_store_release(&e->head, p->rec);
        p->retired = retire_kind(s, old, okind, seq,
                                 p->rec + sizeof(struct shm_rec), p->entry);
      }
      h->c_records++;
      if (!is_put) {
        if (s->dq_len == s->dq_cap) {
          size_t nc = s->dq_cap ? s->dq_cap * 2 : 256;
          struct shm_dead *d = realloc(s->dq, nc * sizeof *d);
          if (!SHM_NEVER(!d)) {
            s->dq = d;
            s->dq_cap = nc;
          }
        }
        if (s->dq_len < s->dq_cap)
          s->dq[s->dq_len++] = (struct shm_dead){p->entry, p->rec, seq};
      }
      maybe_yield(s);
    }
    if (was_counted) {
      d_keys--;
      d_kbytes -= (int64_t)op->klen;
      d_vbytes -= (int64_t)was_vlen;
    }
    if (is_put) {
      d_keys++;
      d_kbytes += (int64_t)op->klen;
      d_vbytes += (int64_t)op->vlen;
    }
    if (op->kind == SHM_OP__EXPIRE) d_expired++;
    touch(s, p->h);
  }
  if (P != stack) free(P);
  /* the key counters move with the commit, just before it is published */
  h->c_keys += (uint64_t)d_keys;
  h->c_key_bytes += (uint64_t)d_kbytes;
  h->c_value_bytes += (uint64_t)d_vbytes;
  h->c_expired += d_expired;
  shm__commit_publish(s, seq);
  if (seqp) *seqp = seq;
  return 0;
}

/* A store that looks full may only be waiting for reclamation: retired
 * versions whose readers are gone. Reclaim and try once more before
 * answering SHOAL_ENOSPC. */
static int batch_retry(shm_store *s, const shm_op *ops, size_t n,
                       uint64_t *seq, size_t *failed, uint64_t *curver) {
  int err = batch(s, ops, n, seq, failed, curver, 0);
  if (err == SHOAL_ENOSPC && (s->rq_len || s->dq_len) && shm_reclaim(s) > 0)
    err = batch(s, ops, n, seq, failed, curver, 0);
  return err;
}

int shm_batch(shm_store *s, const shm_op *ops, size_t n, uint64_t *seq,
              size_t *failed) {
  return batch_retry(s, ops, n, seq, failed, NULL);
}

int shm_put(shm_store *s, const void *key, size_t klen, const void *val,
            size_t vlen, uint64_t expires_at, uint64_t *version) {
  shm_op op = {SHM_OP_PUT, key, klen, val, vlen, 0, expires_at};
  return batch_retry(s, &op, 1, version, NULL, NULL);
}

int shm_del(shm_store *s, const void *key, size_t klen, uint64_t *version) {
  shm_op op = {SHM_OP_DEL, key, klen, NULL, 0, 0, 0};
  return batch_retry(s, &op, 1, version, NULL, NULL);
}

int shm_cas(shm_store *s, const void *key, size_t klen, uint64_t expect,
            const void *val, size_t vlen, uint64_t expires_at,
            uint64_t *version) {
  shm_op op = {SHM_OP_CAS, key, klen, val, vlen, expect, expires_at};
  uint64_t cur = 0, seq = 0;
  int err = batch_retry(s, &op, 1, &seq, NULL, &cur);
  if (version) *version = err == SHOAL_ECONFLICT ? cur : seq;
  return err;
}

int shm_expire(shm_store *s, uint64_t now_ms, size_t budget, size_t *nout) {
  if (nout) *nout = 0;
  if (!now_ms) now_ms = shm_now_ms();
  if (!budget) return 0;
  struct shm_index *ix = shm__index(s);
  uint64_t cap = ix->capacity, scanned = 0;
  /* Look at a bounded number of slots per call (at most 16 per key
   * budgeted, and the whole index at most once) so a sweep never stalls
   * the event loop; the cursor carries on next time. */
  uint64_t limit = budget * 16 < cap ? budget * 16 : cap;
  shm_op *ops = calloc(budget, sizeof *ops);
  if (!ops) return -ENOMEM;
  size_t k = 0;
  uint64_t i = s->expire_cursor % cap;
  for (; scanned < limit && k < budget; scanned++, i = (i + 1) % cap) {
    uint64_t sv = ix->slot[i];
    if (sv == 0 || sv == SHM_SLOT_DELETED) continue;
    struct shm_entry *e = shm__E(s, SHM_SLOT_OFF(sv));
    struct shm_rec *r = shm__R(s, e->head);
    if (r->flags & SHM_REC_TOMB) continue;
    uint64_t exp = shm__rec_expires(r);
    if (!exp || exp > now_ms) continue;
    ops[k++] = (shm_op){SHM_OP__EXPIRE, shm__entry_key(e), e->klen, NULL, 0,
                        0, 0};
  }
  s->expire_cursor = i;
  int err = 0;
  if (k) {
    uint64_t before = s->hdr->c_expired;
    err = batch(s, ops, k, NULL, NULL, NULL, now_ms);
    if (nout) *nout = (size_t)(s->hdr->c_expired - before);
  }
  free(ops);
  return err;
}

/* --------------------------------------------------------- reader slots - */

int shm_lease_claim(shm_store *s, pid_t pid) {
  uint64_t st = shm_pid_start_time(pid);
  if (!st) return -ESRCH;
  return shm__claim_slot(s->rhdr, s->slots, pid, st, 1);
}

void shm_lease_release(shm_store *s, unsigned slot, pid_t pid) {
  if (slot < s->rhdr->nslots) shm__release_slot(&s->slots[slot], pid);
}

int shm_lease_adopt(shm_store *s, unsigned slot, pid_t pid) {
  if (slot >= s->rhdr->nslots || pid <= 0) return SHOAL_EINVAL;
  struct shm_reader_slot *sl = &s->slots[slot];
  /* pairs with the release of pid in shm__claim_slot/shm__release_slot */
  if (shm_load_acquire(&sl->pid) != (uint32_t)pid) return SHOAL_EINVAL;
  uint64_t start = shm_load_acquire(&sl->pid_start);
  if (start && start != shm_pid_start_time(pid)) return SHOAL_EINVAL;
  return 0;
}

pid_t shm_lease_owner(shm_store *s, unsigned slot) {
  if (slot >= s->rhdr->nslots) return 0;
  return (pid_t)shm_load_acquire(&s->slots[slot].pid);
}

unsigned shm_sweep_readers(shm_store *s) {
  unsigned cleared = 0;
  uint64_t hwm = shm_load_relaxed(&s->rhdr->hwm);
  if (hwm > s->rhdr->nslots) hwm = s->rhdr->nslots;
  for (uint64_t i = 0; i < hwm; i++) {
    struct shm_reader_slot *sl = &s->slots[i];
    uint32_t pid = shm_load_acquire(&sl->pid);
    if (!pid) continue;
    uint64_t start = shm_load_acquire(&sl->pid_start);
    int alive = kill((pid_t)pid, 0) == 0 || errno == EPERM;
    uint64_t now_start = alive ? shm_pid_start_time((pid_t)pid) : 0;
    int dead = !alive || now_start == 0 || (start && now_start != start);
    if (!dead) continue;
    shm_store_relaxed(&sl->nest, 0);
    shm_store_relaxed(&sl->leased, 0);
    shm_store_release(&sl->snap, 0);
    shm_store_relaxed(&sl->pid_start, 0);
    uint32_t expect = pid;
    if (shm_cas_acq_rel(&sl->pid, &expect, 0)) cleared++;
  }
  return cleared;
}

/* --------------------------------------------------------------- stats -- */

void shm_store_stats(shm_store *s, shm_stats *st) {
  shm_view tmp = {0};
  tmp.base = s->base;
  tmp.size = s->size;
  tmp.hdr = s->hdr;
  tmp.rhdr = s->rhdr;
  tmp.slots = s->slots;
  shm_view_stats(&tmp, st);
  st->retired = s->rq_len;
}

uint64_t shm_store_wakes(const shm_store *s) { return s->wakes; }
