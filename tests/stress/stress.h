/*
 * stress.h - shared declarations of shm-stress, the multi-process torture
 * test of the segment layer (STYLE 10, tier "stress").
 *
 * Processes (all forked from one parent, which creates everything they share
 * before the first fork):
 *   - one writer (shm_store) doing random put/del/cas/batch with TTLs, plus
 *     shm_reclaim / shm_expire / shm_sweep_readers, and checking every
 *     acknowledged result through a view of its own;
 *   - N readers (shm_view_open) doing get / get_many / scan inside sections
 *     and checking what they see (see reader.c for the list of checks);
 *   - short-lived victims and witnesses (reader-kill scenario) and writers
 *     killed with SIGKILL at random moments (writer-kill scenario).
 *
 * Every value carries its identity and a checksum (struct st_vhdr), so a
 * reader can tell a torn, misplaced or stale value from a good one without
 * asking anybody. The writer's model of the store (one struct st_kstate per
 * key) lives in shared anonymous memory so that the parent can check it
 * against the store after the writer was killed.
 */
#ifndef SHOAL_STRESS_H
#define SHOAL_STRESS_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "shoal/error.h"
#include "shoal/shm.h"

#define ST_MAX_PROCS 64    /* counter blocks in the control page */
#define ST_BATCH_MAX 64    /* ops in one batch (3 groups of <= 12 + 9 others) */
#define ST_GROUP_MAX 12    /* keys in one batch group: 2 + g % 11 */
#define ST_PLEN_BIG 40000u /* largest payload: ~10 pages, an extent */
#define ST_VAL_MAX (sizeof(struct st_vhdr) + ST_PLEN_BIG)

/* How far the TTL clock of a section may lag our own shm_now_ms() reading
 * taken just before shm_read_begin: a coarse clock (CLOCK_REALTIME_COARSE)
 * is up to one jiffy (4 ms at HZ=250) behind; 20 ms leaves room. */
#define ST_CLOCK_SLACK 20

/* ------------------------------------------------------------ values --- */

/* Every value starts with this header; payload bytes follow. */
struct st_vhdr {
  uint64_t key_id;     /* which key this value was written for */
  uint64_t wseq;       /* writer's op counter; a batch token for batches */
  uint64_t expires_at; /* the expires_at the writer passed (0 = none) */
  uint32_t plen;       /* payload bytes after the header */
  uint32_t hash;       /* st_hash of header fields and payload */
};
_Static_assert(sizeof(struct st_vhdr) == 32, "value header");

/* Build the value of key @id written by op @wseq into @buf (ST_VAL_MAX
 * bytes); returns its length. The payload is a function of (id, wseq). */
size_t st_make_value(uint8_t *buf, uint32_t id, uint64_t wseq,
                     uint64_t expires_at, uint32_t plen);
/* Check a value seen for key @id whose record says @expires_at. Returns 0
 * and fills @h, or -1 with the reason in @why. */
int st_check_value(const void *data, size_t len, uint32_t id,
                   uint64_t expires_at, struct st_vhdr *h, char *why,
                   size_t cap);
uint32_t st_hash(const void *p, size_t n, uint64_t seed);

/* --------------------------------------------------------------- keys --- */

struct st_key {
  uint8_t *bytes;
  uint16_t len;
  int16_t group; /* batch group, -1 for a normal key */
};

/* The key space, identical in every process (built before fork from the
 * seed). Ids [0, nnorm) are normal keys: "k/%06u", or "v/" + binary bytes
 * (0x00 and 0xff included, prefix chains, a few up to SHM_KEY_MAX long).
 * Ids [nnorm, n) are batch-group keys "batch/%03u/%02u", written only whole
 * by batches and never with a TTL. */
struct st_keys {
  uint32_t n, nnorm, ngroups;
  struct st_key *k;
  uint32_t *sorted; /* ids in key order (memcmp, shorter first) */
  uint32_t *rank;   /* rank[id]: position in sorted */
  uint32_t *gfirst, *gsize;
};

void st_keys_build(struct st_keys *ks, uint32_t nnorm, uint32_t ngroups,
                   uint64_t seed);
int st_kcmp(const void *a, size_t alen, const void *b, size_t blen);
/* First rank whose key is >= @key. */
uint32_t st_lower_bound(const void *key, size_t len);
/* Id of @key or -1. */
int64_t st_lookup(const void *key, size_t len);
/* Printable form of a key (static buffer per call slot, 4 slots). */
const char *st_kname(const void *key, size_t len);
const char *st_idname(uint32_t id);

/* ----------------------------------------------------- shared control --- */

/* The writer's model of one key. */
struct st_kstate {
  uint64_t version; /* commit that wrote it (0 = unknown / never) */
  uint64_t wseq;
  uint64_t expires_at;
  uint32_t plen;
  uint32_t hash;
  uint32_t present;
  uint32_t pad;
};

/*
 * The op the writer may be executing (writer-kill scenario). Protocol:
 * fill ids/old/new, then store active = 1 (release); call shm_*; on success
 * write the new states into the table; then store active = 0. A kill while
 * active leaves the op possibly applied, and the table entries of its keys
 * possibly torn: the parent then accepts for those keys exactly "all old"
 * or "all new" (a batch is atomic).
 */
struct st_inflight {
  uint64_t active;
  uint64_t wseq;
  uint32_t n;
  int32_t kind;
  uint32_t ids[ST_BATCH_MAX];
  struct st_kstate old_[ST_BATCH_MAX];
  struct st_kstate new_[ST_BATCH_MAX];
};

/* Counters, one block per process, summed for the summary. */
/* clang-format off */
#define ST_COUNTERS(X)                                                         \
  X(w_puts) X(w_puts_ttl) X(w_dels) X(w_dels_absent) X(w_cas_ok)               \
  X(w_cas_conflict) X(w_batches) X(w_batch_ops) X(w_batch_failed)              \
  X(w_batch_noop) X(w_group_writes) X(w_expire_calls) X(w_expired)             \
  X(w_reclaim_calls) X(w_reclaimed) X(w_sweeps) X(w_swept) X(w_verified)       \
  X(w_full_verifies) X(w_checks) X(w_expired_seen_present)                     \
  X(r_sections) X(r_nested) X(r_gets) X(r_found) X(r_get_many)                 \
  X(r_get_many_keys) X(r_scans) X(r_scan_keys) X(r_absent_checks)              \
  X(r_group_checks) X(r_groups_present) X(r_long_sections) X(r_ack_checks)     \
  X(r_live_checks) X(r_reopens) X(r_full_scans)
/* clang-format on */

struct st_counters {
#define ST_X(n) uint64_t n;
  ST_COUNTERS(ST_X)
#undef ST_X
};

struct st_ctl {
  int stop; /* parent sets (release), children poll */
  int pad0;
  uint64_t problems;      /* atomic add */
  uint64_t wseq;          /* writer op counter: survives writer restarts */
  uint64_t ack;           /* last acknowledged commit: version<<20 | key id */
  uint64_t max_acked;     /* highest version acknowledged to any writer */
  uint64_t writer_opened; /* writer-kill: the child's shm_store_open returned */
  struct st_inflight inflight;
  struct st_counters cnt[ST_MAX_PROCS];
  /* followed by struct st_kstate table[keys.n] */
};
#define ST_ACK_ID_BITS 20

/* ----------------------------------------------------------- options --- */

struct st_opt {
  unsigned seconds;
  uint64_t seed;
  int yield;
  unsigned readers;
  unsigned nkeys, ngroups;
  unsigned writer_kills;
  unsigned reader_kills;
  unsigned scenarios; /* ST_SC_* bits */
  int verbose;
  int live_check; /* readers run shm_check(quiescent 0) every 1.5 s */
  uint64_t size;
  char dir[256];
  char name[SHM_NAME_MAX + 1];
};
#define ST_SC_CONCURRENT 0x1u
#define ST_SC_READER_KILL 0x2u
#define ST_SC_WRITER_KILL 0x4u

/* ------------------------------------------------------------ globals --- */

extern struct st_opt g_opt;
extern struct st_keys g_keys;
extern struct st_ctl *g_ctl;
extern struct st_kstate *g_table;
extern struct st_counters *g_cnt; /* this process's block */
extern const char *g_role;
extern uint64_t g_rng;

/* ------------------------------------------------------------ helpers --- */

uint64_t st_splitmix(uint64_t *s);
static inline uint64_t st_rand(void) {
  return st_splitmix(&g_rng);
}
static inline uint64_t st_below(uint64_t n) {
  return n ? st_rand() % n : 0;
}
uint64_t st_mono_ms(void);
void st_sleep_ms(unsigned ms);
static inline int st_stopping(void) {
  return __atomic_load_n(&g_ctl->stop, __ATOMIC_ACQUIRE);
}

/* Random yields to widen races (STYLE 10, liburcu debug-yield.h). */
void st_yield_slow(void);
#define ST_YIELD()                                                             \
  do {                                                                         \
    if (g_opt.yield) st_yield_slow();                                          \
  } while (0)

/* Report a violation: counted in g_ctl->problems, printed (rate limited). */
void st_problem(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void st_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Classification of a key of the writer's model at a moment known to lie in
 * [t_lo, t_hi] (CLOCK_REALTIME ms). */
enum { ST_ABSENT, ST_PRESENT, ST_EXPIRED, ST_AMBIG };
int st_class(const struct st_kstate *k, uint64_t t_lo, uint64_t t_hi);

/* Compare what a get returned (@rc, @val) for key @id with model state @k,
 * classified over [t_lo, t_hi]. @exact_version: the version must equal
 * k->version (else any version > @min_version). Returns 1 if consistent;
 * otherwise 0 and a reason in @why. */
int st_match(uint32_t id, const struct st_kstate *k, int exact_version,
             uint64_t min_version, int rc, const shm_val *val, uint64_t t_lo,
             uint64_t t_hi, char *why, size_t cap);

/* Problems reported by shm_check go through this (arg: a label string). */
void st_check_cb(void *arg, const char *problem);

/* Loops (writer.c, reader.c). */
struct st_writer_cfg {
  int kill_mode;  /* log in-flight ops; never stop on our own */
  int own_checks; /* run full verifications and shm_check periodically */
};
int st_writer_run(const struct st_writer_cfg *wc); /* returns exit code */
int st_reader_run(unsigned idx);                   /* returns exit code */
/* Full verification of the model against the store through view @v (not
 * inside a section); used by the writer and by the parent. Returns the
 * number of mismatches (each reported). */
unsigned st_verify_all(shm_view *v, const char *who);

#endif /* SHOAL_STRESS_H */
