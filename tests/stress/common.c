/*
 * common.c - keys, values, model matching and reporting shared by every
 * process of shm-stress.
 */
#include <inttypes.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "stress.h"

struct st_opt g_opt;
struct st_keys g_keys;
struct st_ctl *g_ctl;
struct st_kstate *g_table;
struct st_counters *g_cnt;
const char *g_role = "main";
uint64_t g_rng;

uint64_t st_splitmix(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t st_mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void st_sleep_ms(unsigned ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

void st_yield_slow(void) {
  /* One point in eight yields: often enough to reorder the processes at
   * every interesting step, rarely enough to keep the op rate useful. */
  if ((st_rand() & 7) == 0) sched_yield();
}

static void st_vreport(const char *kind, const char *fmt, va_list ap) {
  char msg[2048];
  vsnprintf(msg, sizeof msg, fmt, ap);
  fprintf(stderr, "shm-stress: %s [%s, pid %d, seed %" PRIu64 "]: %s\n", kind,
          g_role, (int)getpid(), g_opt.seed, msg);
}

void st_problem(const char *fmt, ...) {
  static unsigned printed;
  __atomic_add_fetch(&g_ctl->problems, 1, __ATOMIC_RELAXED);
  /* The first problems tell the story; a flood hides it. */
  if (printed++ >= 40) return;
  va_list ap;
  va_start(ap, fmt);
  st_vreport("PROBLEM", fmt, ap);
  va_end(ap);
}

void st_info(const char *fmt, ...) {
  if (!g_opt.verbose) return;
  va_list ap;
  va_start(ap, fmt);
  st_vreport("info", fmt, ap);
  va_end(ap);
}

void st_check_cb(void *arg, const char *problem) {
  st_problem("shm_check (%s): %s", arg ? (const char *)arg : "?", problem);
}

/* ------------------------------------------------------------- hashing -- */

uint32_t st_hash(const void *p, size_t n, uint64_t seed) {
  const uint8_t *b = p;
  uint64_t h = seed ^ ((uint64_t)n * 0x9E3779B97F4A7C15ull);
  while (n >= 8) {
    uint64_t w;
    memcpy(&w, b, 8);
    h ^= w;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 32;
    b += 8;
    n -= 8;
  }
  uint64_t w = 0;
  memcpy(&w, b, n);
  h ^= w;
  h *= 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 29;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 32;
  return (uint32_t)h;
}

static uint64_t st_value_seed(const struct st_vhdr *h) {
  uint64_t s = h->key_id * 0xD6E8FEB86659FD93ull ^ h->wseq;
  s ^= h->expires_at * 0x9E3779B97F4A7C15ull;
  s ^= (uint64_t)h->plen << 40;
  return st_splitmix(&s);
}

size_t st_make_value(uint8_t *buf, uint32_t id, uint64_t wseq,
                     uint64_t expires_at, uint32_t plen) {
  struct st_vhdr h = {id, wseq, expires_at, plen, 0};
  uint8_t *p = buf + sizeof h;
  uint64_t s = (uint64_t)id * 0xA0761D6478BD642Full ^ wseq;
  for (uint32_t i = 0; i < plen; i += 8) {
    uint64_t w = st_splitmix(&s);
    memcpy(p + i, &w, plen - i < 8 ? plen - i : 8);
  }
  h.hash = st_hash(p, plen, st_value_seed(&h));
  memcpy(buf, &h, sizeof h);
  return sizeof h + plen;
}

int st_check_value(const void *data, size_t len, uint32_t id,
                   uint64_t expires_at, struct st_vhdr *h, char *why,
                   size_t cap) {
  if (!data && len) {
    snprintf(why, cap, "NULL data with len %zu", len);
    return -1;
  }
  if (len < sizeof *h) {
    snprintf(why, cap, "value of %zu bytes, shorter than its header", len);
    return -1;
  }
  memcpy(h, data, sizeof *h);
  if (h->plen != len - sizeof *h) {
    snprintf(why, cap, "length %zu but header says payload %u (+32)", len,
             h->plen);
    return -1;
  }
  uint32_t hh =
      st_hash((const uint8_t *)data + sizeof *h, h->plen, st_value_seed(h));
  if (hh != h->hash) {
    snprintf(why, cap,
             "checksum mismatch (wseq %" PRIu64 ", len %zu): torn "
             "or overwritten bytes",
             h->wseq, len);
    return -1;
  }
  if (h->key_id != id) {
    snprintf(why, cap, "value belongs to key id %" PRIu64 " (%s), not %u",
             h->key_id,
             h->key_id < g_keys.n ? st_idname((uint32_t)h->key_id) : "?", id);
    return -1;
  }
  if (h->expires_at != expires_at) {
    snprintf(why, cap,
             "record expires_at %" PRIu64 " but writer passed %" PRIu64,
             expires_at, h->expires_at);
    return -1;
  }
  return 0;
}

/* ---------------------------------------------------------------- keys -- */

int st_kcmp(const void *a, size_t alen, const void *b, size_t blen) {
  size_t m = alen < blen ? alen : blen;
  int c = m ? memcmp(a, b, m) : 0;
  if (c) return c;
  return alen < blen ? -1 : alen > blen;
}

static int st_sort_cmp(const void *x, const void *y) {
  const struct st_key *a = &g_keys.k[*(const uint32_t *)x];
  const struct st_key *b = &g_keys.k[*(const uint32_t *)y];
  return st_kcmp(a->bytes, a->len, b->bytes, b->len);
}

static void st_key_set(struct st_key *k, const void *b, size_t len) {
  free(k->bytes);
  k->bytes = malloc(len ? len : 1);
  if (!k->bytes) abort();
  memcpy(k->bytes, b, len);
  k->len = (uint16_t)len;
}

static void st_random_vkey(struct st_key *k, const struct st_key *prev,
                           uint64_t *rng) {
  uint8_t b[SHM_KEY_MAX];
  size_t len;
  uint64_t r = st_splitmix(rng) % 1000;
  b[0] = 'v';
  b[1] = '/';
  if (prev && r < 300 && prev->len < 200) {
    /* a prefix chain: prev + one byte, so "shorter first" is exercised */
    memcpy(b, prev->bytes, prev->len);
    len = prev->len + 1u;
    b[len - 1] = (uint8_t)st_splitmix(rng);
  } else {
    size_t extra;
    if (r < 305)
      extra = SHM_KEY_MAX - 2; /* exactly SHM_KEY_MAX */
    else if (r < 320)
      extra = 500 + st_splitmix(rng) % 500;
    else
      extra = 1 + st_splitmix(rng) % 40;
    len = 2 + extra;
    for (size_t i = 2; i < len; i++) {
      uint64_t x = st_splitmix(rng);
      /* favour the edge bytes 0x00 and 0xff */
      b[i] = (x & 7) == 0 ? 0x00 : (x & 7) == 1 ? 0xff : (uint8_t)(x >> 8);
    }
  }
  st_key_set(k, b, len);
}

void st_keys_build(struct st_keys *ks, uint32_t nnorm, uint32_t ngroups,
                   uint64_t seed) {
  uint64_t rng = seed ^ 0x5EED5EED5EED5EEDull;
  uint32_t n = nnorm;
  ks->gfirst = calloc(ngroups ? ngroups : 1, sizeof *ks->gfirst);
  ks->gsize = calloc(ngroups ? ngroups : 1, sizeof *ks->gsize);
  for (uint32_t g = 0; g < ngroups; g++) {
    ks->gfirst[g] = n;
    ks->gsize[g] = 2 + g % 11;
    n += ks->gsize[g];
  }
  ks->n = n;
  ks->nnorm = nnorm;
  ks->ngroups = ngroups;
  ks->k = calloc(n, sizeof *ks->k);
  ks->sorted = calloc(n, sizeof *ks->sorted);
  ks->rank = calloc(n, sizeof *ks->rank);
  if (!ks->k || !ks->sorted || !ks->rank || !ks->gfirst || !ks->gsize) abort();
  char buf[64];
  const struct st_key *prevv = NULL;
  for (uint32_t i = 0; i < nnorm; i++) {
    ks->k[i].group = -1;
    if (i == 1) {
      st_key_set(&ks->k[i], "v/", 2); /* a prefix of every v/ key */
      prevv = &ks->k[i];
    } else if (st_splitmix(&rng) % 5 == 0) {
      st_random_vkey(&ks->k[i], prevv, &rng);
      prevv = &ks->k[i];
    } else {
      int len = snprintf(buf, sizeof buf, "k/%06u", i);
      st_key_set(&ks->k[i], buf, (size_t)len);
    }
  }
  for (uint32_t g = 0; g < ngroups; g++)
    for (uint32_t j = 0; j < ks->gsize[g]; j++) {
      int len = snprintf(buf, sizeof buf, "batch/%03u/%02u", g, j);
      struct st_key *k = &ks->k[ks->gfirst[g] + j];
      st_key_set(k, buf, (size_t)len);
      k->group = (int16_t)g;
    }
  /* sort; make the random binary keys unique by growing duplicates */
  for (uint32_t i = 0; i < n; i++)
    ks->sorted[i] = i;
  for (;;) {
    qsort(ks->sorted, n, sizeof *ks->sorted, st_sort_cmp);
    int dup = 0;
    for (uint32_t i = 1; i < n; i++) {
      struct st_key *a = &ks->k[ks->sorted[i - 1]], *b = &ks->k[ks->sorted[i]];
      if (st_kcmp(a->bytes, a->len, b->bytes, b->len) == 0) {
        struct st_key *d = b->bytes[0] == 'v' ? b : a;
        uint8_t tmp[SHM_KEY_MAX];
        size_t len = d->len < SHM_KEY_MAX ? d->len + 1u : d->len;
        memcpy(tmp, d->bytes, d->len);
        tmp[len - 1] = (uint8_t)st_splitmix(&rng);
        st_key_set(d, tmp, len);
        dup = 1;
      }
    }
    if (!dup) break;
  }
  for (uint32_t i = 0; i < n; i++)
    ks->rank[ks->sorted[i]] = i;
}

uint32_t st_lower_bound(const void *key, size_t len) {
  uint32_t lo = 0, hi = g_keys.n;
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2;
    const struct st_key *k = &g_keys.k[g_keys.sorted[mid]];
    if (st_kcmp(k->bytes, k->len, key, len) < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

int64_t st_lookup(const void *key, size_t len) {
  uint32_t r = st_lower_bound(key, len);
  if (r >= g_keys.n) return -1;
  const struct st_key *k = &g_keys.k[g_keys.sorted[r]];
  if (st_kcmp(k->bytes, k->len, key, len) != 0) return -1;
  return g_keys.sorted[r];
}

const char *st_kname(const void *key, size_t len) {
  static char bufs[4][128];
  static unsigned next;
  char *out = bufs[next++ % 4];
  const uint8_t *b = key;
  size_t o = 0;
  for (size_t i = 0; i < len && o < 100; i++) {
    if (b[i] >= 0x20 && b[i] < 0x7f && b[i] != '\\')
      out[o++] = (char)b[i];
    else
      o += (size_t)snprintf(out + o, 8, "\\x%02x", b[i]);
  }
  if (o >= 100) o += (size_t)snprintf(out + o, 20, "...(%zu B)", len);
  out[o] = 0;
  return out;
}

const char *st_idname(uint32_t id) {
  if (id >= g_keys.n) return "<bad id>";
  return st_kname(g_keys.k[id].bytes, g_keys.k[id].len);
}

/* ------------------------------------------------------ model matching -- */

int st_class(const struct st_kstate *k, uint64_t t_lo, uint64_t t_hi) {
  if (!k->present) return ST_ABSENT;
  if (!k->expires_at || k->expires_at > t_hi) return ST_PRESENT;
  if (k->expires_at + ST_CLOCK_SLACK <= t_lo) return ST_EXPIRED;
  return ST_AMBIG;
}

static int st_match_present(uint32_t id, const struct st_kstate *k,
                            int exact_version, uint64_t min_version,
                            const shm_val *val, char *why, size_t cap) {
  struct st_vhdr h;
  char w[200];
  if (st_check_value(val->data, val->len, id, val->expires_at, &h, w,
                     sizeof w)) {
    snprintf(why, cap, "bad value: %s", w);
    return 0;
  }
  if (h.wseq != k->wseq || h.hash != k->hash || h.plen != k->plen ||
      h.expires_at != k->expires_at) {
    snprintf(why, cap,
             "store has write %" PRIu64 " (version %" PRIu64
             ", %u B, exp %" PRIu64 "), model expects write %" PRIu64
             " (version %" PRIu64 ", %u B, exp %" PRIu64 ")",
             h.wseq, val->version, h.plen, h.expires_at, k->wseq, k->version,
             k->plen, k->expires_at);
    return 0;
  }
  if (exact_version ? val->version != k->version
                    : val->version <= min_version) {
    snprintf(why, cap, "version %" PRIu64 ", expected %s %" PRIu64,
             val->version, exact_version ? "exactly" : "above",
             exact_version ? k->version : min_version);
    return 0;
  }
  return 1;
}

int st_match(uint32_t id, const struct st_kstate *k, int exact_version,
             uint64_t min_version, int rc, const shm_val *val, uint64_t t_lo,
             uint64_t t_hi, char *why, size_t cap) {
  int cls = st_class(k, t_lo, t_hi);
  if (rc != 0 && rc != SHOAL_ENOTFOUND) {
    snprintf(why, cap, "get returned %s (%d)", shoal_errname(rc), rc);
    return 0;
  }
  switch (cls) {
  case ST_ABSENT:
  case ST_EXPIRED:
    if (rc == 0) {
      struct st_vhdr h;
      char w[200];
      int bad = st_check_value(val->data, val->len, id, val->expires_at, &h, w,
                               sizeof w);
      snprintf(why, cap,
               "expected absent (%s), found version %" PRIu64 " write %" PRIu64
               " exp %" PRIu64 "%s%s",
               cls == ST_ABSENT ? "deleted/never written" : "TTL passed",
               val->version, bad ? 0 : h.wseq, val->expires_at,
               bad ? " bad value: " : "", bad ? w : "");
      return 0;
    }
    return 1;
  case ST_PRESENT:
    if (rc != 0) {
      snprintf(why, cap,
               "expected write %" PRIu64 " version %" PRIu64 " (exp %" PRIu64
               "), got ENOTFOUND",
               k->wseq, k->version, k->expires_at);
      return 0;
    }
    return st_match_present(id, k, exact_version, min_version, val, why, cap);
  default: /* ST_AMBIG: the TTL passes right now; either is fine */
    if (rc != 0) return 1;
    return st_match_present(id, k, exact_version, min_version, val, why, cap);
  }
}
