/*
 * test_recovery.c - crash safety and damage: a writer closed uncleanly or
 * SIGKILLed mid-way loses no acknowledged write, recovery leaves a segment
 * shm_check finds consistent and an allocator that does not hand out live
 * memory, readers keep working across the writer's death (and keep their
 * pinned values through the new writer's recovery), and a damaged heap
 * (index slots, entry key lengths, record offsets and lengths, skiplist
 * links, random byte flips) is reported by shm_check and never crashes a
 * reader: gets return a normal result or SHOAL_ECORRUPT.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "unit.h"

#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shm-internal.h"

/* ------------------------------------------------------------ the model - */

/* Keys r00000..; op j touches key (j*7919)%NK; every 10th op deletes, every
 * 250th op is a batch of 3 puts; sizes vary, some values are page extents. */
enum { NK = 3000 };

static size_t vlen_of(uint64_t j) {
  if (j % 97 == 0) return 20000 + (j * 13) % 5000;
  return 10 + (j * 31) % 400;
}

static int key_of(int idx, char *k) { return snprintf(k, 16, "r%05d", idx); }

struct model {
  int64_t gen[NK]; /* -1 = absent */
};

static void model_init(struct model *m) {
  for (int i = 0; i < NK; i++) m->gen[i] = -1;
}

/* keys touched by op j, and whether it deletes */
static int op_keys(uint64_t j, int idx[3], int *del) {
  int base = (int)((j * 7919) % NK);
  *del = (j % 10 == 9);
  if (j % 250 == 0) {
    for (int i = 0; i < 3; i++) idx[i] = (base + i) % NK;
    return 3;
  }
  idx[0] = base;
  return 1;
}

static void model_apply(struct model *m, uint64_t j) {
  int idx[3], del, n = op_keys(j, idx, &del);
  for (int i = 0; i < n; i++) m->gen[idx[i]] = del ? -1 : (int64_t)j;
}

/* Apply op j to the store; ENOTFOUND of a delete is fine. */
static int store_apply(shm_store *s, uint64_t j) {
  int idx[3], del, n = op_keys(j, idx, &del);
  char keys[3][16];
  static uint8_t vals[3][32768];
  shm_op ops[3];
  for (int i = 0; i < n; i++) {
    int kl = key_of(idx[i], keys[i]);
    size_t vl = vlen_of(j);
    ut_fill(vals[i], vl, keys[i], kl, j);
    ops[i] = (shm_op){.kind = del ? SHM_OP_DEL_ANY : SHM_OP_PUT,
                      .key = keys[i], .klen = kl, .val = vals[i], .vlen = vl};
  }
  if (n == 1) {
    if (del) {
      int rc = shm_del(s, ops[0].key, ops[0].klen, NULL);
      return rc == SHOAL_ENOTFOUND ? 0 : rc;
    }
    return shm_put(s, ops[0].key, ops[0].klen, ops[0].val, ops[0].vlen, 0,
                   NULL);
  }
  return shm_batch(s, ops, n, NULL, NULL);
}

/* Check key idx in a section of v: must be in state gen (-1 absent), or, if
 * alt_ok, in state alt. Returns 0 or a description. */
static const char *check_key(shm_view *v, int idx, int64_t gen, int alt_ok,
                             int64_t alt) {
  char k[16];
  int kl = key_of(idx, k);
  shm_val val;
  int rc = shm_get(v, k, kl, &val);
  int64_t states[2] = {gen, alt};
  for (int i = 0; i < 1 + alt_ok; i++) {
    int64_t g = states[i];
    if (g < 0 && rc == SHOAL_ENOTFOUND) return NULL;
    if (g >= 0 && rc == 0 && val.len == vlen_of(g) &&
        ut_check_bytes(val.data, val.len, k, kl, g))
      return NULL;
  }
  static char msg[200];
  snprintf(msg, sizeof msg, "key %s: get=%s len=%zu, expected gen %" PRId64
           "%s", k, shoal_errname(rc), rc == 0 ? val.len : 0, gen,
           alt_ok ? " or the in-flight op's state" : "");
  return msg;
}

/* Verify the whole store against m; op `inflight` (if >= 0) may or may not
 * have been applied. */
static void verify_model_ex(shm_view *v, const struct model *m,
                            int64_t inflight, int exact_counters) {
  struct model after = *m;
  if (inflight >= 0) model_apply(&after, (uint64_t)inflight);
  CK_OK(shm_read_begin(v));
  /* a batch in flight is all or nothing: decide from its first key */
  int idx[3], del, n = inflight >= 0 ? op_keys(inflight, idx, &del) : 0;
  int applied = -1;
  for (int i = 0; i < NK; i++) {
    int touched = 0;
    for (int t = 0; t < n; t++) touched |= idx[t] == i;
    if (!touched) {
      const char *e = check_key(v, i, m->gen[i], 0, 0);
      ck_assert_msg(e == NULL, "%s", e);
      continue;
    }
    const char *pre = check_key(v, i, m->gen[i], 0, 0);
    const char *post = check_key(v, i, after.gen[i], 0, 0);
    ck_assert_msg(!pre || !post, "in-flight key: %s", pre);
    if (m->gen[i] != after.gen[i]) {
      int now = post == NULL;
      ck_assert_msg(applied < 0 || applied == now,
                    "in-flight batch %" PRId64 " applied in part", inflight);
      applied = now;
    }
  }
  shm_read_end(v);
  shm_stats st;
  memset(&st, 0, sizeof st);
  shm_view_stats(v, &st);
  uint64_t live = 0, live_after = 0;
  for (int i = 0; i < NK; i++) {
    live += m->gen[i] >= 0;
    live_after += after.gen[i] >= 0;
  }
  /* Header counters are figures, not part of a commit: a writer killed
   * while building one may have counted some of its ops. Recovery recounts
   * them, so they are exact from the next attach on. */
  if (exact_counters)
    ck_assert_msg(st.keys == live || st.keys == live_after,
                  "stats.keys %" PRIu64 ", expected %" PRIu64, st.keys, live);
}

static void verify_model(shm_view *v, const struct model *m, int64_t inflight) {
  verify_model_ex(v, m, inflight, 1);
}

static void fill_model(shm_store *s, struct model *m, uint64_t from,
                       uint64_t to) {
  for (uint64_t j = from; j < to; j++) {
    CK_OK(store_apply(s, j));
    model_apply(m, j);
  }
}

static const struct shm_header *view_hdr(shm_view *v) { return v->hdr; }

/* ------------------------------------------------------------ recovery -- */

START_TEST(unclean_close_recovers) {
  struct model *m = malloc(sizeof *m);
  model_init(m);
  fill_model(ut_s, m, 0, 20000);
  shm_store_close(ut_s, 0); /* no clean flag */
  ut_s = NULL;
  ck_assert_uint_eq(view_hdr(ut_v)->clean, 0);
  uint64_t rec0 = view_hdr(ut_v)->recoveries;
  /* readers keep working without a writer */
  verify_model(ut_v, m, -1);
  CK_OK(ut_store_open(&ut_s, 0, 0, 0));
  ck_assert_uint_eq(view_hdr(ut_v)->recoveries, rec0 + 1);
  verify_model(ut_v, m, -1);
  ck_assert_uint_eq(ut_check(ut_v, 1), 0);
  /* the rebuilt allocator does not hand out live memory: write a lot more,
   * then everything old and new must still be right */
  fill_model(ut_s, m, 20000, 40000);
  (void)shm_reclaim(ut_s);
  verify_model(ut_v, m, -1);
  ck_assert_uint_eq(ut_check(ut_v, 1), 0);
  /* and a fresh view agrees */
  CK_OK(ut_view_open(&ut_v2, 0));
  verify_model(ut_v2, m, -1);
  free(m);
}
END_TEST

START_TEST(clean_close_reopen) {
  struct model *m = malloc(sizeof *m);
  model_init(m);
  fill_model(ut_s, m, 0, 5000);
  uint64_t rec0 = view_hdr(ut_v)->recoveries;
  shm_store_close(ut_s, 1);
  ut_s = NULL;
  ck_assert_uint_eq(view_hdr(ut_v)->clean, 1);
  CK_OK(ut_store_open(&ut_s, 0, 0, 0));
  ck_assert_uint_eq(view_hdr(ut_v)->clean, 0);
  ck_assert_uint_eq(view_hdr(ut_v)->recoveries, rec0);
  verify_model(ut_v, m, -1);
  fill_model(ut_s, m, 5000, 10000);
  verify_model(ut_v, m, -1);
  ck_assert_uint_eq(ut_check(ut_v, 1), 0);
  free(m);
}
END_TEST

/* A writer process SIGKILLed mid-way, three times over; the parent's view
 * stays open throughout. */
struct shared {
  uint64_t acked; /* ops [0, acked) are acknowledged */
  uint64_t started;
};

START_TEST(killed_writer_recovers) {
  struct model *m = malloc(sizeof *m);
  model_init(m);
  struct shared *sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                           MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ck_assert_ptr_ne(sh, MAP_FAILED);
  shm_store_close(ut_s, 1);
  ut_s = NULL;
  uint64_t next = 0;
  for (int round = 0; round < 4; round++) {
    sh->acked = next;
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
      ut_child_alarm(60);
      shm_store *s = NULL;
      if (ut_store_open(&s, 0, 0, 0) != 0) _exit(3);
      __atomic_store_n(&sh->started, 1, __ATOMIC_RELEASE);
      for (uint64_t j = next;; j++) {
        if (store_apply(s, j) != 0) _exit(4);
        __atomic_store_n(&sh->acked, j + 1, __ATOMIC_RELEASE);
      }
    }
    /* let it get some work done, then kill it at a random moment */
    uint64_t t0 = ut_now_ms();
    while (__atomic_load_n(&sh->acked, __ATOMIC_ACQUIRE) < next + 2000 &&
           ut_now_ms() - t0 < 20000)
      ut_sleep_ms(1);
    ut_sleep_ms(5 + round * 7);
    kill(pid, SIGKILL);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
                  "writer child failed on its own (status %#x)", st);
    uint64_t acked = __atomic_load_n(&sh->acked, __ATOMIC_ACQUIRE);
    ck_assert_uint_gt(acked, next);
    for (uint64_t j = next; j < acked; j++) model_apply(m, j);
    /* the view that outlived the writer still reads */
    verify_model_ex(ut_v, m, (int64_t)acked, 0);
    /* recovery */
    CK_OK(ut_store_open(&ut_s, 0, 0, 0));
    verify_model(ut_v, m, (int64_t)acked);
    unsigned problems = ut_check(ut_v, 1);
    ck_assert_msg(problems == 0, "round %d: shm_check found %u problems after "
                  "recovery", round, problems);
    /* settle the in-flight op so the model is exact again */
    CK_OK(store_apply(ut_s, acked));
    model_apply(m, acked);
    next = acked + 1;
    verify_model(ut_v, m, -1);
    shm_store_close(ut_s, round % 2); /* sometimes clean */
    ut_s = NULL;
  }
  CK_OK(ut_store_open(&ut_s, 0, 0, 0));
  fill_model(ut_s, m, next, next + 10000);
  verify_model(ut_v, m, -1);
  CK_OK(ut_view_open(&ut_v2, 0));
  verify_model(ut_v2, m, -1);
  ck_assert_uint_eq(ut_check(ut_v2, 1), 0);
  munmap(sh, 4096);
  free(m);
}
END_TEST

/* Regression: an entry created with a value too large to embed has no
 * inline space when its block ends right after its tower and key; the
 * address after it is the next block, which a later record of the same key
 * may occupy. Recovery used to take that address for the entry's inline
 * space (marking it free once "unheld"), and compaction then aborted on the
 * record that merely sat there. Big first values, small overwrites of many
 * sizes (so some land in the block after their own entry), unclean reopens,
 * reclaims, and the full check after each round. */
START_TEST(no_inline_room_recovery) {
  static char big[3600], small[600];
  char k[32];
  uint64_t rng = 0x2545F4914F6CDD1Dull;
  for (int round = 0; round < 12; round++) {
    for (int i = 0; i < 300; i++) {
      int kl = snprintf(k, sizeof k, "r%d-%d", round, i);
      rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
      CK_OK(shm_put(ut_s, k, (size_t)kl, big, 3100 + rng % 400, 0, NULL));
      CK_OK(shm_put(ut_s, k, (size_t)kl, small, 1 + (rng >> 20) % 500, 0,
                    NULL));
    }
    shm_store_close(ut_s, 0); /* unclean: recovery runs */
    ut_s = NULL;
    CK_OK(ut_store_open(&ut_s, 0, 0, 0));
    for (int r = 0; r <= round; r++)
      for (int i = 0; i < 300; i++) {
        int kl = snprintf(k, sizeof k, "r%d-%d", r, i);
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        CK_OK(shm_put(ut_s, k, (size_t)kl, small, 1 + rng % 500, 0, NULL));
      }
    (void)shm_reclaim(ut_s);
    (void)shm_reclaim(ut_s);
    ck_assert_msg(ut_check(ut_v, 1) == 0, "round %d: check failed", round);
  }
}
END_TEST

/* A reader pinned a snapshot before the writer died; the new writer's
 * recovery must not reuse what that reader can still see. */
START_TEST(reader_pinned_across_writer_crash) {
  ut_put_gen(ut_s, "p", 1, 100, 0);
  ut_put_gen(ut_s, "q", 1, 100000, 0);
  ut_put_gen(ut_s, "d", 1, 100, 0);
  shm_store_close(ut_s, 1);
  ut_s = NULL;
  CK_OK(shm_read_begin(ut_v));
  shm_val p0, q0, d0;
  CK_OK(shm_get(ut_v, "p", 1, &p0));
  CK_OK(shm_get(ut_v, "q", 1, &q0));
  CK_OK(shm_get(ut_v, "d", 1, &d0));
  int pp[2];
  ck_assert_int_eq(pipe(pp), 0);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    ut_child_alarm(60);
    shm_store *s = NULL;
    if (ut_store_open(&s, 0, 0, 0) != 0) _exit(3);
    for (int i = 1; i < 1000; i++) ut_put_gen(s, "p", 1, 100, i);
    for (int i = 1; i < 30; i++) ut_put_gen(s, "q", 1, 100000, i);
    if (shm_del(s, "d", 1, NULL) != 0) _exit(5);
    (void)shm_reclaim(s);
    ssize_t w = write(pp[1], "x", 1);
    (void)w;
    pause(); /* killed here, retire queue and all */
    _exit(0);
  }
  close(pp[1]);
  char c;
  ck_assert_int_eq(read(pp[0], &c, 1), 1);
  close(pp[0]);
  kill(pid, SIGKILL);
  int st;
  ck_assert_int_eq(waitpid(pid, &st, 0), pid);
  CK_OK(ut_store_open(&ut_s, 0, 0, 0));
  /* churn every size class the old values used */
  for (int r = 0; r < 50; r++) {
    for (int i = 0; i < 20; i++) {
      char k[16];
      int kl = snprintf(k, sizeof k, "c%d", i);
      ut_put_gen(ut_s, k, kl, 100, r);
      if (r % 10 == 0) ut_put_gen(ut_s, k, kl, 100000, r);
    }
    (void)shm_reclaim(ut_s);
  }
  ck_assert(ut_check_bytes(p0.data, p0.len, "p", 1, 0));
  ck_assert(ut_check_bytes(q0.data, q0.len, "q", 1, 0));
  ck_assert(ut_check_bytes(d0.data, d0.len, "d", 1, 0));
  shm_val again;
  CK_OK(shm_get(ut_v, "p", 1, &again));
  ck_assert_uint_eq(again.version, p0.version);
  CK_OK(shm_get(ut_v, "d", 1, &again));
  shm_read_end(ut_v);
  ut_assert_gen(ut_v, "p", 1, 100, 999);
  ut_assert_gen(ut_v, "q", 1, 100000, 29);
  shm_val val;
  CK_OK(shm_read_begin(ut_v));
  CK_RC(shm_get(ut_v, "d", 1, &val), SHOAL_ENOTFOUND);
  shm_read_end(ut_v);
  /* once the section ends the memory comes back */
  for (int i = 0; i < 8; i++) (void)shm_reclaim(ut_s);
  shm_stats s1;
  ut_stats(ut_s, &s1);
  ck_assert_uint_eq(s1.retired, 0);
  ck_assert_uint_eq(ut_check(ut_v, 1), 0);
}
END_TEST

/* A child reader killed in a section while the writer is also restarted:
 * the new writer clears the dead slot on attach. */
START_TEST(dead_reader_cleared_on_attach) {
  ut_put_gen(ut_s, "k", 1, 10, 0);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    shm_view *v = NULL;
    if (ut_view_open(&v, 0) != 0 || shm_read_begin(v) != 0) _exit(1);
    _exit(0);
  }
  ut_wait_child_ok(pid);
  shm_stats st;
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.readers_busy, 1);
  shm_store_close(ut_s, 0);
  ut_s = NULL;
  CK_OK(ut_store_open(&ut_s, 0, 0, 0));
  ut_stats(ut_s, &st);
  ck_assert_uint_eq(st.readers_busy, 0);
  ck_assert_uint_eq(st.readers_claimed, 1);
}
END_TEST

/* ---------------------------------------------------------- shm_check --- */

START_TEST(check_healthy) {
  ck_assert_uint_eq(ut_check(ut_v, 1), 0); /* empty */
  struct model *m = malloc(sizeof *m);
  model_init(m);
  fill_model(ut_s, m, 0, 8000);
  ut_put_gen(ut_s, "", 0, 0, 1);
  ut_put_gen(ut_s, "big", 3, 3u << 20, 1);
  uint64_t exp = shm_now_ms() - 1;
  CK_OK(shm_put(ut_s, "ttl", 3, "x", 1, exp, NULL));
  ck_assert_uint_eq(ut_check(ut_v, 1), 0);
  /* inside a section, not quiescent, while holding old versions */
  CK_OK(shm_read_begin(ut_v));
  fill_model(ut_s, m, 8000, 9000);
  ck_assert_uint_eq(ut_check(ut_v, 0), 0);
  shm_read_end(ut_v);
  (void)shm_reclaim(ut_s);
  ck_assert_uint_eq(ut_check(ut_v, 1), 0);
  /* NULL callback */
  ck_assert_uint_eq(shm_check(ut_v, 1, NULL, NULL), 0);
  free(m);
}
END_TEST

/* ------------------------------------------------------ damaged heap ---- */

struct img {
  int fd;
  uint8_t *base;
  size_t size;
  uint8_t *pristine; /* copy of [0, top) */
  size_t top;
};

#define DAMAGE_KEYS 400

/* A closed store with DAMAGE_KEYS keys; map it writable ourselves. */
static void img_make(struct img *im) {
  for (int i = 0; i < DAMAGE_KEYS; i++) {
    char k[16];
    int kl = snprintf(k, sizeof k, "d%04d", i);
    ut_put_gen(ut_s, k, kl, i % 50 == 0 ? 9000 : 16 + i % 100, i);
  }
  /* overwrite every third key while a section pins the old records, and
   * close the writer before the section ends: the prev chains stay */
  CK_OK(shm_read_begin(ut_v));
  for (int i = 0; i < DAMAGE_KEYS; i += 3) {
    char k[16];
    int kl = snprintf(k, sizeof k, "d%04d", i);
    ut_put_gen(ut_s, k, kl, 16 + i % 100, i + 1);
  }
  shm_store_close(ut_s, 1);
  ut_s = NULL;
  shm_view_close(ut_v);
  ut_v = NULL;
  char p[1024];
  ut_obj_path(p, sizeof p, ut_dir, ut_name, "data");
  im->fd = open(p, O_RDWR);
  ck_assert_int_ge(im->fd, 0);
  struct stat sb;
  ck_assert_int_eq(fstat(im->fd, &sb), 0);
  im->size = sb.st_size;
  im->base = mmap(NULL, im->size, PROT_READ | PROT_WRITE, MAP_SHARED, im->fd, 0);
  ck_assert_ptr_ne(im->base, MAP_FAILED);
  const struct shm_header *h = (const void *)im->base;
  im->top = h->heap_top; /* the header's heap_top is an offset */
  ck_assert_uint_gt(im->top, h->heap_start);
  ck_assert_uint_le(im->top, im->size);
  im->pristine = malloc(im->top);
  memcpy(im->pristine, im->base, im->top);
}

static void img_restore(struct img *im) {
  memcpy(im->base, im->pristine, im->top);
}

static int dmg_fail;
static char dmg_report[16384];

static void img_free(struct img *im) {
  munmap(im->base, im->size);
  close(im->fd);
  free(im->pristine);
  ck_assert_msg(dmg_fail == 0, "%d damage case(s) mishandled:%s", dmg_fail,
                dmg_report);
}

static struct shm_index *img_index(struct img *im) {
  const struct shm_header *h = (const void *)im->base;
  ck_assert_uint_lt(h->index_off, im->size);
  struct shm_index *ix = (void *)(im->base + h->index_off);
  ck_assert_uint_eq(ix->magic, SHM_INDEX_MAGIC);
  return ix;
}

/* The index slot position of key k, or -1. */
static int64_t img_find_slot(struct img *im, const char *k) {
  struct shm_index *ix = img_index(im);
  size_t kl = strlen(k);
  for (uint64_t i = 0; i < ix->capacity; i++) {
    uint64_t s = ix->slot[i];
    if (s == 0 || s == SHM_SLOT_DELETED) continue;
    struct shm_entry *e = (void *)(im->base + SHM_SLOT_OFF(s));
    if (e->klen == kl &&
        memcmp((uint8_t *)e + shm__entry_key_off(e->tower), k, kl) == 0)
      return (int64_t)i;
  }
  return -1;
}

static struct shm_entry *img_entry(struct img *im, const char *k) {
  int64_t i = img_find_slot(im, k);
  ck_assert_int_ge(i, 0);
  return (void *)(im->base + SHM_SLOT_OFF(img_index(im)->slot[i]));
}

static int count_keys(void *a, const void *k, size_t kl, const shm_val *vv) {
  (void)k;
  (void)kl;
  /* touch the value bytes too */
  volatile uint8_t sum = 0;
  for (size_t b = 0; b < vv->len; b++) sum += ((const uint8_t *)vv->data)[b];
  (void)sum;
  return ++*(size_t *)a > 100000;
}

/* In a child: open a view, get every key, get_many, scan, check. Returns
 * the number of shm_check problems (>= 0), or -100-n for a wrong code. */
/* Which step of probe() is running, for a child that hangs. */
static const char *const probe_steps[] = {
    "view open", "get", "get_many", "scan", "shm_check", "close", "its work"};
static volatile sig_atomic_t probe_step;
static int probe_fd = -1;

static void probe_hung(int sig) {
  (void)sig;
  int r = -1000 - (int)probe_step;
  ssize_t w = write(probe_fd, &r, sizeof r);
  (void)w;
  _exit(0);
}

static int probe(void *arg) {
  (void)arg;
  shm_view *v = NULL;
  probe_step = 0;
  int rc = ut_view_open(&v, 0);
  if (rc == SHOAL_ECORRUPT) return 1000; /* refused at open: fine */
  if (rc != 0) return -1;
  if (shm_read_begin(v) != 0) return -2;
  shm_key keys[DAMAGE_KEYS];
  char kb[DAMAGE_KEYS][16];
  probe_step = 1;
  for (int i = 0; i < DAMAGE_KEYS; i++) {
    int kl = snprintf(kb[i], 16, "d%04d", i);
    keys[i] = (shm_key){kb[i], (size_t)kl};
    shm_val val;
    rc = shm_get(v, kb[i], kl, &val);
    if (rc != 0 && rc != SHOAL_ENOTFOUND && rc != SHOAL_ECORRUPT)
      return -100 - i;
    if (rc == 0) {
      /* touch every byte the store vouched for */
      volatile uint8_t sum = 0;
      for (size_t b = 0; b < val.len; b++) sum += ((const uint8_t *)val.data)[b];
      (void)sum;
    }
  }
  static shm_val out[DAMAGE_KEYS];
  int status[DAMAGE_KEYS];
  probe_step = 2;
  rc = shm_get_many(v, DAMAGE_KEYS, keys, out, status);
  if (rc < 0) return -3;
  for (int i = 0; i < DAMAGE_KEYS; i++)
    if (status[i] != 0 && status[i] != SHOAL_ENOTFOUND &&
        status[i] != SHOAL_ECORRUPT)
      return -4;
  size_t count = 0;
  probe_step = 3;
  rc = shm_scan(v, NULL, 0, NULL, 0, count_keys, &count);
  if (rc != 0 && rc != SHOAL_ECORRUPT) return -5;
  if (count > 100000) return -6; /* a cycle the scan did not notice */
  /* a scan from a start key descends through every level first */
  count = 0;
  rc = shm_scan(v, "d0200", 5, "d0300", 5, count_keys, &count);
  if (rc != 0 && rc != SHOAL_ECORRUPT) return -5;
  if (count > 100000) return -6;
  shm_read_end(v);
  probe_step = 4;
  unsigned n = shm_check(v, 1, NULL, NULL);
  probe_step = 5;
  shm_view_close(v);
  return (int)n;
}

/* Damage cases do not stop at the first mishandled one: each is recorded
 * here and the test fails at img_free() with the whole list. */
static void dmg_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void dmg_note(const char *fmt, ...) {
  size_t used = strlen(dmg_report);
  if (used + 2 >= sizeof dmg_report) return;
  dmg_report[used++] = '\n';
  dmg_report[used] = 0;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(dmg_report + used, sizeof dmg_report - used, fmt, ap);
  va_end(ap);
  dmg_fail++;
}

/* Run fn in a child with a hang guard (GUARD_S seconds). Returns 0 and
 * fn's result in *out, or -1 after noting a crash or hang. */
#define GUARD_S 10
static int guarded(int (*fn)(void *), const char *what, const char *who,
                   int *out) {
  int p[2];
  ck_assert_int_eq(pipe(p), 0);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    probe_fd = p[1];
    probe_step = 6;
    signal(SIGALRM, probe_hung);
    alarm(GUARD_S);
    int r = fn(NULL);
    ssize_t w = write(p[1], &r, sizeof r);
    (void)w;
    _exit(0);
  }
  close(p[1]);
  int r = 0x7fffffff;
  ssize_t n = read(p[0], &r, sizeof r);
  close(p[0]);
  int st;
  ck_assert_int_eq(waitpid(pid, &st, 0), pid);
  if (WIFSIGNALED(st)) {
    dmg_note("%s: %s killed by signal %d (%s)", what, who, WTERMSIG(st),
             strsignal(WTERMSIG(st)));
    return -1;
  }
  if (n != (ssize_t)sizeof r) {
    dmg_note("%s: %s said nothing (exit status %d)", what, who,
             WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    return -1;
  }
  if (r <= -1000 && r > -1000 - (int)(sizeof probe_steps / sizeof *probe_steps)) {
    dmg_note("%s: %s hung (%d s) in %s", what, who, GUARD_S,
             probe_steps[-1000 - r]);
    return -1;
  }
  *out = r;
  return 0;
}

/* Probe in a child with a hang guard. Returns probe's result (>= 0), or -1
 * after noting what went wrong. */
static int probe_child(const char *what) {
  int r;
  if (guarded(probe, what, "reader", &r)) return -1;
  if (r < 0) {
    static const char *why[] = {"", "view open failed", "read_begin failed",
                                "get_many failed", "get_many status",
                                "scan returned a wrong code",
                                "scan looped (>100000 keys)"};
    dmg_note("%s: reader got a wrong result: %s", what,
             r > -7 ? why[-r] : "get returned a code other than 0/ENOTFOUND/ECORRUPT");
    return -1;
  }
  return r;
}

/* The writer attaching to a damaged image: ECORRUPT, or an attach after
 * which shm_check is clean (1000 + problems). */
static int writer_attach(void *arg) {
  (void)arg;
  shm_store *s = NULL;
  int rc = ut_store_open(&s, 0, 0, 0);
  if (rc != 0) return rc;
  shm_view *v = NULL;
  int n = 0;
  if (shm_store_view(s, &v) == 0) {
    n = (int)shm_check(v, 1, NULL, NULL);
    shm_view_close(v);
  }
  shm_store_close(s, 1);
  return 1000 + n;
}

static int get_rc(void *arg) {
  const char *k = arg;
  shm_view *v = NULL;
  int rc = ut_view_open(&v, 0);
  if (rc) return rc;
  if ((rc = shm_read_begin(v)) != 0) return rc;
  shm_val val;
  rc = shm_get(v, k, strlen(k), &val);
  if (rc == 0 && ((const uint8_t *)val.data < (const uint8_t *)v->base ||
                  (const uint8_t *)val.data + val.len > v->base + v->size))
    rc = 99999; /* vouches for bytes outside the mapping */
  shm_read_end(v);
  shm_view_close(v);
  return rc;
}

/* A get of @k on the damaged image must say ECORRUPT. */
static void expect_get_corrupt(const char *k, const char *what) {
  int rc = ut_in_child(get_rc, (void *)k);
  if (rc == 99999)
    dmg_note("%s: shm_get(%s) returned 0 with a value running past the end "
             "of the mapping (expected ECORRUPT)", what, k);
  else if (rc != SHOAL_ECORRUPT)
    dmg_note("%s: shm_get(%s) = %s, expected ECORRUPT", what, k,
             shoal_errname(rc));
}

/* 200 scans from a key above every key: each descends the whole list. A
 * cycle must end each at once, well inside the hang guard. */
static int scan_high_rc(void *arg) {
  (void)arg;
  shm_view *v = NULL;
  int rc = ut_view_open(&v, 0);
  if (rc) return rc;
  if ((rc = shm_read_begin(v)) != 0) return rc;
  for (int i = 0; i < 200; i++) {
    size_t count = 0;
    rc = shm_scan(v, "d9999", 5, NULL, 0, count_keys, &count);
    if (rc != SHOAL_ECORRUPT) break;
  }
  shm_read_end(v);
  shm_view_close(v);
  return rc;
}

static void expect_scan_corrupt(const char *what) {
  int rc;
  if (guarded(scan_high_rc, what, "scan from a start key", &rc)) return;
  if (rc != SHOAL_ECORRUPT)
    dmg_note("%s: shm_scan(start) = %s, expected ECORRUPT", what,
             shoal_errname(rc));
}

/* The value d%04d holds in img_make's store. */
static int damage_key_ok(shm_view *v, int i) {
  char k[16];
  int kl = snprintf(k, sizeof k, "d%04d", i);
  uint64_t gen = i % 3 == 0 ? (uint64_t)i + 1 : (uint64_t)i;
  size_t len = i % 3 == 0 || i % 50 ? 16 + i % 100 : 9000;
  shm_val val;
  if (shm_get(v, k, kl, &val) != 0) return 0;
  return val.len == len && ut_check_bytes(val.data, val.len, k, kl, gen);
}

/* Open the damaged store as the writer. If it is accepted, report what
 * the store looks like afterwards: 1000 + shm_check problems + 10000 per
 * key that is no longer readable with its bytes (1000 = a clean repair). */
static int store_open_child(void *arg) {
  (void)arg;
  shm_store *s = NULL;
  int rc = ut_store_open(&s, 0, 0, 0);
  if (rc != 0) return rc;
  shm_view *v = NULL;
  int n = 0, lost = 0;
  if (shm_store_view(s, &v) == 0) {
    n = (int)shm_check(v, 1, NULL, NULL);
    if (shm_read_begin(v) == 0) {
      for (int i = 0; i < DAMAGE_KEYS; i++) lost += !damage_key_ok(v, i);
      shm_read_end(v);
    }
    shm_view_close(v);
  }
  shm_store_close(s, 1);
  return 1000 + n + 10000 * lost;
}

/* The damage now in the image must be found by shm_check (> 0) and must
 * not crash or hang a reader. The writer must then either refuse the store
 * with ECORRUPT and change nothing (shm.h), or - a repair - attach, leave a
 * segment shm_check accepts and lose no key. */
static void expect_damage(struct img *im, const char *what) {
  int n = probe_child(what);
  if (n == 0) dmg_note("%s: shm_check found no problem", what);
  uint8_t *before = malloc(im->top);
  memcpy(before, im->base, im->top);
  int rc;
  if (guarded(store_open_child, what, "writer attach", &rc)) {
    free(before);
    img_restore(im);
    return;
  }
  if (rc >= 1000) {
    int lost = (rc - 1000) / 10000, left = (rc - 1000) % 10000;
    if (lost || left)
      dmg_note("%s: shm_store_open accepted it (expected ECORRUPT); after "
               "the attach shm_check reports %d problems and %d keys are "
               "lost or wrong", what, left, lost);
  } else if (rc != SHOAL_ECORRUPT) {
    dmg_note("%s: shm_store_open = %s, expected ECORRUPT", what,
             shoal_errname(rc));
  } else if (memcmp(before, im->base, im->top) != 0) {
    dmg_note("%s: a refused shm_store_open changed the segment", what);
  }
  free(before);
  img_restore(im);
}

START_TEST(damaged_index_slots) {
  struct img im;
  img_make(&im);
  ck_assert_int_eq(probe_child("pristine"), 0);
  struct shm_index *ix = img_index(&im);
  int64_t i = img_find_slot(&im, "d0123");
  ck_assert_int_ge(i, 0);
  uint64_t s = ix->slot[i], off = SHM_SLOT_OFF(s), tag = s & ~0xFFFFFFFFFFFFull;

  ix->slot[i] = tag | (im.size + 4096);
  expect_damage(&im, "slot beyond the segment");
  ix->slot[i] = tag | (off + 4);
  expect_damage(&im, "slot misaligned");
  ix->slot[i] = tag | 64;
  expect_damage(&im, "slot into the header");
  ix->slot[i] = tag | (im.size - 8);
  expect_damage(&im, "slot at the last word");
  ix->slot[i] = 0xFFFFFFFFFFFFFFFFull;
  expect_damage(&im, "slot all ones");
  ix->slot[i] = s ^ (1ull << 60);
  expect_damage(&im, "slot tag flipped");
  ix->slot[i] = SHM_SLOT_DELETED;
  expect_damage(&im, "live slot marked deleted");
  /* a duplicate of a live slot in an empty one */
  for (uint64_t j = 0; j < ix->capacity; j++)
    if (ix->slot[j] == 0) {
      ix->slot[j] = s;
      break;
    }
  expect_damage(&im, "slot duplicated");
  /* pointing at another key's entry */
  int64_t i2 = img_find_slot(&im, "d0200");
  ix->slot[i] = tag | SHM_SLOT_OFF(ix->slot[i2]);
  expect_damage(&im, "slot pointing at another entry");
  /* the index header */
  ix->capacity = 1ull << 40;
  expect_damage(&im, "index capacity huge");
  ix->capacity = 1000; /* not a power of two */
  expect_damage(&im, "index capacity not a power of two");
  ix->magic = 0;
  expect_damage(&im, "index magic");
  img_free(&im);
}
END_TEST

START_TEST(damaged_entries) {
  struct img im;
  img_make(&im);
  struct shm_entry *e = img_entry(&im, "d0042");
  struct shm_entry saved = *e;

  e->klen = 0xFFFF;
  expect_damage(&im, "klen 0xffff");
  e->klen = SHM_KEY_MAX + 1;
  expect_damage(&im, "klen SHM_KEY_MAX+1");
  e->klen = 0;
  expect_damage(&im, "klen 0");
  e->klen = saved.klen + 1;
  expect_damage(&im, "klen +1");
  e->tower = 0;
  expect_damage(&im, "tower 0");
  e->tower = 255;
  expect_damage(&im, "tower 255");
  e->height = e->tower + 1;
  expect_damage(&im, "height above tower");
  e->hash32 ^= 1;
  expect_damage(&im, "hash32");
  e->head = im.size + 64;
  expect_get_corrupt("d0042", "head beyond the segment");
  expect_damage(&im, "head beyond the segment");
  e->head = 0;
  expect_damage(&im, "head null");
  e->head = saved.head + 3;
  expect_damage(&im, "head misaligned");
  e->head = 128; /* the header */
  expect_damage(&im, "head into the header");
  ck_assert_mem_eq(e, &saved, sizeof saved);
  img_free(&im);
}
END_TEST

START_TEST(damaged_records) {
  struct img im;
  img_make(&im);
  /* d0050 has a 9000-byte value (an extent or a big class), d0003 has a
   * prev chain (written twice) */
  struct shm_entry *e = img_entry(&im, "d0050");
  struct shm_rec *r = (void *)(im.base + e->head);
  uint32_t len = r->len;
  r->len = 0xFFFFFFF0u;
  expect_get_corrupt("d0050", "record len huge");
  expect_damage(&im, "record len huge");
  r->len = (uint32_t)(im.size - e->head); /* runs past the end by the header */
  expect_get_corrupt("d0050", "record len to the end of the mapping");
  expect_damage(&im, "record len to the end");
  /* longer than everything backed, shorter than the mapping */
  r->len = (uint32_t)(((const struct shm_header *)im.base)->backed_end + 4096);
  expect_get_corrupt("d0050", "record len beyond backed_end");
  expect_damage(&im, "record len beyond backed_end");
  r->len = len + 4096;
  expect_damage(&im, "record len past its block");
  r->flags = 0xF0;
  expect_damage(&im, "record flags unknown");
  r->version = 0;
  expect_damage(&im, "record version 0");
  r->version = 1ull << 62; /* newer than commit_seq */
  expect_damage(&im, "record version from the future");

  struct shm_entry *e3 = img_entry(&im, "d0003");
  struct shm_rec *r3 = (void *)(im.base + e3->head);
  ck_assert(!(r3->flags & SHM_REC_EMBED));
  uint64_t *prev = shm__rec_prev(r3);
  uint64_t pv = *prev;
  ck_assert_uint_ne(pv, 0); /* pinned by img_make's section */
  {
    *prev = im.size + 8;
    expect_damage(&im, "prev beyond the segment");
    *prev = e3->head; /* a cycle */
    expect_damage(&im, "prev pointing at itself");
    struct shm_rec *old = (void *)(im.base + pv);
    old->version = r3->version + 5; /* versions must decrease */
    expect_damage(&im, "prev version not older");
  }
  img_free(&im);
}
END_TEST

START_TEST(damaged_skiplist) {
  struct img im;
  img_make(&im);
  struct shm_header *h = (void *)im.base;
  struct shm_entry *e = img_entry(&im, "d0100");
  uint64_t eoff = (uint8_t *)e - im.base;

  h->skip_next[0] = im.size + 4096;
  expect_damage(&im, "skip head beyond the segment");
  h->skip_next[0] = eoff; /* skips d0000..d0099 */
  expect_damage(&im, "skip head skipping entries");
  e->next[0] = eoff; /* a cycle on level 0 */
  expect_damage(&im, "skip next cycle");
  struct shm_entry *e5 = img_entry(&im, "d0005");
  e->next[0] = (uint8_t *)e5 - im.base; /* backwards: out of order */
  expect_damage(&im, "skip next out of order");
  e->next[0] = 12345;
  expect_damage(&im, "skip next garbage");
  h->skip_height = 200;
  expect_damage(&im, "skip height");
  img_restore(&im);

  /* a cycle on the top level: a scan's descent (from a start key) walks
   * it before level 0's order check could stop it */
  unsigned top = h->skip_height - 1;
  ck_assert_uint_ge(top, 1);
  struct shm_entry *t = (void *)(im.base + h->skip_next[top]);
  t->next[top] = h->skip_next[top];
  expect_scan_corrupt("skip upper level cycle");
  expect_damage(&im, "skip upper level cycle"); /* restores the image */
  img_free(&im);
}
END_TEST

/* The allocator's free lists live in the segment too: a cycle there must
 * not hang shm_check (or the writer's recovery). */
START_TEST(damaged_free_list) {
  struct img im;
  img_make(&im);
  struct shm_header *h = (void *)im.base;
  int c = 0;
  while (c < SHM_NCLASSES && h->class_free[c] == 0) c++;
  ck_assert_msg(c < SHM_NCLASSES, "no free list to damage");
  uint64_t b = h->class_free[c];
  uint64_t *next = (uint64_t *)(im.base + b);
  *next = b; /* a one-block cycle */
  expect_damage(&im, "free list cycle");
  *next = im.size + 4096;
  expect_damage(&im, "free list next beyond the segment");
  h->class_free[c] = 12345;
  expect_damage(&im, "free list head misaligned");
  img_free(&im);
}
END_TEST

/* Random byte flips in the heap (and, one round in four, the page table
 * and the header's allocator fields): shm_check may or may not notice (a
 * value byte is not checkable), but no reader may crash or hang, and the
 * writer either refuses (ECORRUPT) or attaches to a store shm_check accepts.
 * The image differs per run (random SipHash key and towers), so a failure
 * names its seed; SHOAL_FUZZ_ITERS=N runs longer, SHOAL_FUZZ_SAVE=DIR keeps
 * the objects of every failing round for a debugger, SHOAL_FUZZ_VERBOSE=1
 * prints each round. */
START_TEST(damaged_heap_fuzz) {
  struct img im;
  img_make(&im);
  const struct shm_header *h = (const void *)im.base;
  uint64_t lo = h->heap_start, hi = im.top;
  ck_assert_uint_gt(hi, lo);
  unsigned seed = (unsigned)getpid() ^ (unsigned)ut_now_ms();
  const char *env = getenv("SHOAL_FUZZ_SEED");
  if (env) seed = (unsigned)strtoul(env, NULL, 0);
  int iters = 300;
  if (getenv("SHOAL_FUZZ_ITERS")) iters = atoi(getenv("SHOAL_FUZZ_ITERS"));
  for (int it = 0; it < iters; it++) {
    unsigned iter_seed = seed + it;
    unsigned rs = iter_seed;
    int flips = 1 + rand_r(&rs) % 8;
    /* one iteration in four also hits the allocator's page table and the
     * header's writer-only fields (free lists, counters) */
    int meta = rand_r(&rs) % 4 == 0;
    for (int f = 0; f < flips; f++) {
      uint64_t off = lo + ((uint64_t)rand_r(&rs) * RAND_MAX + rand_r(&rs)) % (hi - lo);
      if (meta && f % 2 == 0) {
        uint64_t mlo = offsetof(struct shm_header, heap_top);
        if (rand_r(&rs) % 2)
          off = SHM_PAGETAB_OFF + (uint64_t)rand_r(&rs) % (lo - SHM_PAGETAB_OFF);
        else
          off = mlo + (uint64_t)rand_r(&rs) % (sizeof(struct shm_header) - mlo);
      }
      switch (rand_r(&rs) % 3) {
      case 0:
        im.base[off] ^= (uint8_t)(1u << (rand_r(&rs) % 8));
        break;
      case 1:
        im.base[off] = (uint8_t)rand_r(&rs);
        break;
      default: { /* an aligned word: offsets live there */
        off &= ~7ull;
        uint64_t w = ((uint64_t)rand_r(&rs) << 33) ^ rand_r(&rs);
        memcpy(im.base + off, &w, 8);
      }
      }
    }
    char what[96];
    snprintf(what, sizeof what, "fuzz seed %u (SHOAL_FUZZ_SEED=%u, iter %d)",
             iter_seed, seed, it);
    if (getenv("SHOAL_FUZZ_VERBOSE")) fprintf(stderr, "%s\n", what);
    int fails = dmg_fail;
    (void)probe_child(what);
    int wr;
    if (guarded(writer_attach, what, "writer attach", &wr) == 0) {
      if (wr > 1000)
        dmg_note("%s: the writer attached, then shm_check found %d problems",
                 what, wr - 1000);
      else if (wr != 1000 && wr != SHOAL_ECORRUPT)
        dmg_note("%s: writer attach = %s, expected OK or ECORRUPT", what,
                 shoal_errname(wr));
    }
    const char *save = getenv("SHOAL_FUZZ_SAVE"); /* keep failing images */
    if (save && dmg_fail != fails) {
      char cmd[2048];
      snprintf(cmd, sizeof cmd, "mkdir -p '%s/%u' && cp '%s'/shoal.* '%s/%u/'",
               save, iter_seed, ut_dir, save, iter_seed);
      if (system(cmd) != 0) fprintf(stderr, "saving the image failed\n");
      fprintf(stderr, "saved %s/%u (store name %s)\n", save, iter_seed,
              ut_name);
    }
    img_restore(&im);
  }
  img_free(&im);
}
END_TEST

Suite *recovery_suite(void) {
  Suite *s = suite_create("recovery");
  TCase *tc = ut_tcase("recovery", 1, 240);
  tcase_add_test(tc, unclean_close_recovers);
  tcase_add_test(tc, clean_close_reopen);
  tcase_add_test(tc, killed_writer_recovers);
  tcase_add_test(tc, no_inline_room_recovery);
  tcase_add_test(tc, reader_pinned_across_writer_crash);
  tcase_add_test(tc, dead_reader_cleared_on_attach);
  tcase_add_test(tc, check_healthy);
  suite_add_tcase(s, tc);

  tc = ut_tcase("damage", 1, 240);
  tcase_add_test(tc, damaged_index_slots);
  tcase_add_test(tc, damaged_entries);
  tcase_add_test(tc, damaged_records);
  tcase_add_test(tc, damaged_skiplist);
  tcase_add_test(tc, damaged_free_list);
  tcase_add_test(tc, damaged_heap_fuzz);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return ut_run(recovery_suite()); }
