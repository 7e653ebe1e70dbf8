/*
 * it_conformance.c - the C client's run of tests/conformance/cases.jsonl.
 *
 * The same file is run by the Python and Go suites; tests/conformance/
 * README.md says what each step means. Every step runs in order against one
 * fresh broker; a step whose result differs is reported with its line and
 * case, and the test fails after the whole file ran (so one report lists
 * every drift). Gets go through the zero-copy path inside a read section.
 *
 * The file is JSON Lines; a small JSON reader below (objects, arrays,
 * strings with every escape including \u surrogate pairs, integers,
 * true/false/null) is all this needs, without a library.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "itest.h"

#ifndef SHOAL_CONFORMANCE_DEFAULT
#define SHOAL_CONFORMANCE_DEFAULT "tests/conformance/cases.jsonl"
#endif

/* ----------------------------------------------------------------- JSON -- */

enum jt { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };
struct jv {
  enum jt t;
  long long num;
  char *s; /* J_STR: bytes (may hold NUL), slen */
  size_t slen;
  struct jv *items; /* J_ARR: values; J_OBJ: values, names in keys */
  char **keys;
  size_t n;
};

struct jp {
  const char *p, *end;
  const char *err;
};

static void jfree(struct jv *v) {
  if (!v) return;
  free(v->s);
  for (size_t i = 0; i < v->n; i++) {
    jfree(&v->items[i]);
    if (v->keys) free(v->keys[i]);
  }
  free(v->items);
  free(v->keys);
}

static void ws(struct jp *j) {
  while (j->p < j->end && isspace((unsigned char)*j->p)) j->p++;
}

static int hex4(struct jp *j, unsigned *out) {
  if (j->end - j->p < 4) return -1;
  unsigned x = 0;
  for (int i = 0; i < 4; i++) {
    char c = *j->p++;
    x <<= 4;
    if (c >= '0' && c <= '9') x |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') x |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') x |= (unsigned)(c - 'A' + 10);
    else return -1;
  }
  *out = x;
  return 0;
}

static int jstring(struct jp *j, char **out, size_t *len) {
  if (j->p >= j->end || *j->p != '"') return j->err = "expected a string", -1;
  j->p++;
  size_t cap = 16, n = 0;
  char *b = malloc(cap);
  for (;;) {
    if (j->p >= j->end) {
      free(b);
      return j->err = "unterminated string", -1;
    }
    if (n + 4 >= cap) b = realloc(b, cap *= 2);
    char c = *j->p++;
    if (c == '"') break;
    if (c != '\\') {
      b[n++] = c;
      continue;
    }
    if (j->p >= j->end) break;
    char e = *j->p++;
    unsigned u, lo;
    switch (e) {
    case 'n': b[n++] = '\n'; break;
    case 't': b[n++] = '\t'; break;
    case 'r': b[n++] = '\r'; break;
    case 'b': b[n++] = '\b'; break;
    case 'f': b[n++] = '\f'; break;
    case '/': case '\\': case '"': b[n++] = e; break;
    case 'u':
      if (hex4(j, &u) != 0) goto bad;
      if (u >= 0xD800 && u < 0xDC00) { /* a surrogate pair */
        if (j->end - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u') goto bad;
        j->p += 2;
        if (hex4(j, &lo) != 0 || lo < 0xDC00 || lo > 0xDFFF) goto bad;
        u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
      }
      if (u < 0x80) {
        b[n++] = (char)u;
      } else if (u < 0x800) {
        b[n++] = (char)(0xC0 | (u >> 6));
        b[n++] = (char)(0x80 | (u & 0x3F));
      } else if (u < 0x10000) {
        b[n++] = (char)(0xE0 | (u >> 12));
        b[n++] = (char)(0x80 | ((u >> 6) & 0x3F));
        b[n++] = (char)(0x80 | (u & 0x3F));
      } else {
        b[n++] = (char)(0xF0 | (u >> 18));
        b[n++] = (char)(0x80 | ((u >> 12) & 0x3F));
        b[n++] = (char)(0x80 | ((u >> 6) & 0x3F));
        b[n++] = (char)(0x80 | (u & 0x3F));
      }
      break;
    default:
      goto bad;
    }
  }
  b[n] = 0;
  *out = b;
  *len = n;
  return 0;
bad:
  free(b);
  return j->err = "bad escape in a string", -1;
}

static int jvalue(struct jp *j, struct jv *v, int depth) {
  memset(v, 0, sizeof *v);
  ws(j);
  if (j->p >= j->end) return j->err = "unexpected end", -1;
  if (depth > 16) return j->err = "nested too deeply", -1;
  char c = *j->p;
  if (c == '"') {
    v->t = J_STR;
    return jstring(j, &v->s, &v->slen);
  }
  if (c == '{' || c == '[') {
    int obj = c == '{';
    v->t = obj ? J_OBJ : J_ARR;
    j->p++;
    size_t cap = 0;
    ws(j);
    if (j->p < j->end && *j->p == (obj ? '}' : ']')) {
      j->p++;
      return 0;
    }
    for (;;) {
      if (v->n == cap) {
        cap = cap ? cap * 2 : 8;
        v->items = realloc(v->items, cap * sizeof *v->items);
        if (obj) v->keys = realloc(v->keys, cap * sizeof *v->keys);
      }
      if (obj) {
        ws(j);
        size_t kl;
        if (jstring(j, &v->keys[v->n], &kl) != 0) return -1;
        ws(j);
        if (j->p >= j->end || *j->p++ != ':') {
          free(v->keys[v->n]);
          return j->err = "expected ':'", -1;
        }
      }
      if (jvalue(j, &v->items[v->n], depth + 1) != 0) {
        if (obj) free(v->keys[v->n]);
        return -1;
      }
      v->n++;
      ws(j);
      if (j->p < j->end && *j->p == ',') {
        j->p++;
        continue;
      }
      if (j->p < j->end && *j->p == (obj ? '}' : ']')) {
        j->p++;
        return 0;
      }
      return j->err = "expected ',' or a closing bracket", -1;
    }
  }
  if (c == '-' || isdigit((unsigned char)c)) {
    char *e;
    errno = 0;
    v->t = J_NUM;
    v->num = strtoll(j->p, &e, 10);
    if (e == j->p || errno) return j->err = "bad number", -1;
    j->p = e;
    return 0;
  }
  if (j->end - j->p >= 4 && !memcmp(j->p, "true", 4)) {
    v->t = J_BOOL, v->num = 1, j->p += 4;
    return 0;
  }
  if (j->end - j->p >= 5 && !memcmp(j->p, "false", 5)) {
    v->t = J_BOOL, j->p += 5;
    return 0;
  }
  if (j->end - j->p >= 4 && !memcmp(j->p, "null", 4)) {
    v->t = J_NULL, j->p += 4;
    return 0;
  }
  return j->err = "unexpected character", -1;
}

static const struct jv *jget(const struct jv *o, const char *name) {
  if (!o || o->t != J_OBJ) return NULL;
  for (size_t i = 0; i < o->n; i++)
    if (!strcmp(o->keys[i], name)) return &o->items[i];
  return NULL;
}

static long long jnum(const struct jv *o, const char *name, long long dflt) {
  const struct jv *v = jget(o, name);
  return v && v->t == J_NUM ? v->num : dflt;
}

/* ------------------------------------------------------------ the runner -- */

/* Labels saved by steps ("save"), and the failure list. */
#define MAX_LABELS 256
static struct {
  char name[64];
  uint64_t version;
} labels[MAX_LABELS];
static int nlabels;
static char failures[16384];
static size_t flen;
static int nfail, nsteps;

static void save_label(const char *name, uint64_t v) {
  for (int i = 0; i < nlabels; i++)
    if (!strcmp(labels[i].name, name)) {
      labels[i].version = v;
      return;
    }
  if (nlabels < MAX_LABELS) {
    snprintf(labels[nlabels].name, sizeof labels[nlabels].name, "%s", name);
    labels[nlabels++].version = v;
  }
}

/* A label's version; -1 (as uint64) when it was never saved. */
static int label(const char *name, uint64_t *v) {
  for (int i = 0; i < nlabels; i++)
    if (!strcmp(labels[i].name, name)) {
      *v = labels[i].version;
      return 0;
    }
  return -1;
}

static void mismatch(int line, const struct jv *step, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void mismatch(int line, const struct jv *step, const char *fmt, ...) {
  const struct jv *cs = jget(step, "case");
  nfail++;
  if (flen + 256 >= sizeof failures) return;
  flen += (size_t)snprintf(failures + flen, sizeof failures - flen,
                           "  line %d (case %s): ", line,
                           cs && cs->t == J_STR ? cs->s : "?");
  va_list ap;
  va_start(ap, fmt);
  flen += (size_t)vsnprintf(failures + flen, sizeof failures - flen, fmt, ap);
  va_end(ap);
  if (flen + 1 < sizeof failures) failures[flen++] = '\n';
  failures[flen] = 0;
}

/* @field (a string) repeated @field_repeat times, malloc'd into *out. */
static int bytes_of(const struct jv *o, const char *field, const char *rep,
                    char **out, size_t *len) {
  const struct jv *v = jget(o, field);
  if (!v || v->t != J_STR) {
    *out = NULL;
    *len = 0;
    return 0;
  }
  long long n = jnum(o, rep, 1);
  *len = v->slen * (size_t)n;
  *out = malloc(*len + 1);
  for (long long i = 0; i < n; i++)
    memcpy(*out + (size_t)i * v->slen, v->s, v->slen);
  return 1;
}

/* "expect_version": 0 or a label, plus "expect_delta". */
static uint64_t expect_of(const struct jv *o) {
  const struct jv *ev = jget(o, "expect_version");
  uint64_t v = 0;
  if (ev && ev->t == J_STR) label(ev->s, &v);
  else if (ev && ev->t == J_NUM) v = (uint64_t)ev->num;
  return v + (uint64_t)jnum(o, "expect_delta", 0);
}

static const char *want_result(const struct jv *step) {
  const struct jv *r = jget(step, "result");
  return r && r->t == J_STR ? r->s : "OK";
}

static int result_matches(const char *want, int got) {
  return !strcmp(want, shoal_errname(got));
}

struct scan_acc {
  char **keys;
  size_t *lens;
  size_t n, cap;
  long long limit;
};

static int scan_cb(void *arg, const void *key, size_t klen,
                   const shoal_val *val) {
  (void)val;
  struct scan_acc *a = arg;
  if (a->limit > 0 && (long long)a->n >= a->limit) return 1;
  if (a->n == a->cap) {
    a->cap = a->cap ? a->cap * 2 : 16;
    a->keys = realloc(a->keys, a->cap * sizeof *a->keys);
    a->lens = realloc(a->lens, a->cap * sizeof *a->lens);
  }
  a->keys[a->n] = malloc(klen + 1);
  memcpy(a->keys[a->n], key, klen);
  a->lens[a->n++] = klen;
  return 0;
}

static void version_checks(int line, const struct jv *step, uint64_t got) {
  const struct jv *gt = jget(step, "version_gt");
  uint64_t v;
  if (gt && gt->t == J_STR && (label(gt->s, &v) != 0 || got <= v))
    mismatch(line, step, "version %llu is not greater than %s's", (unsigned long long)got, gt->s);
  const struct jv *sv = jget(step, "save");
  if (sv && sv->t == J_STR) save_label(sv->s, got);
}

static void run_step(shoal *c, int line, const struct jv *step) {
  const struct jv *opv = jget(step, "op");
  const char *op = opv && opv->t == J_STR ? opv->s : "";
  const char *want = want_result(step);
  char *key = NULL, *val = NULL;
  size_t klen = 0, vlen = 0;
  bytes_of(step, "key", "key_repeat", &key, &klen);
  int has_val = bytes_of(step, "value", "value_repeat", &val, &vlen);
  int rc = 0;
  uint64_t ver = 0;
  nsteps++;

  if (!strcmp(op, "put")) {
    long long ttl = jnum(step, "ttl_ms", 0);
    rc = ttl ? shoal_put_ttl(c, key, klen, val, vlen, (uint32_t)ttl, &ver)
             : shoal_put(c, key, klen, val, vlen, &ver);
    if (!result_matches(want, rc))
      mismatch(line, step, "put: %s, expected %s", shoal_errname(rc), want);
    else if (!rc)
      version_checks(line, step, ver);
  } else if (!strcmp(op, "get")) {
    rc = shoal_read_begin(c);
    shoal_val v = {0};
    if (!rc) rc = shoal_get(c, key, klen, &v);
    if (!result_matches(want, rc)) {
      mismatch(line, step, "get: %s, expected %s", shoal_errname(rc), want);
    } else if (!rc) {
      if (has_val && (v.len != vlen || memcmp(v.data, val, vlen) != 0))
        mismatch(line, step, "get: value of %zu bytes differs from the expected %zu bytes",
             v.len, vlen);
      const struct jv *vo = jget(step, "version_of");
      uint64_t lv;
      if (vo && vo->t == J_STR && (label(vo->s, &lv) != 0 || lv != v.version))
        mismatch(line, step, "get: version %llu, expected %s's", (unsigned long long)v.version,
             vo->s);
    }
    shoal_read_end(c);
    free(val);
    val = NULL;
  } else if (!strcmp(op, "del")) {
    rc = shoal_del(c, key, klen);
    if (!result_matches(want, rc))
      mismatch(line, step, "del: %s, expected %s", shoal_errname(rc), want);
  } else if (!strcmp(op, "cas")) {
    rc = shoal_cas(c, key, klen, expect_of(step), val, vlen, &ver);
    if (!result_matches(want, rc))
      mismatch(line, step, "cas: %s, expected %s", shoal_errname(rc), want);
    else if (!rc)
      version_checks(line, step, ver);
  } else if (!strcmp(op, "scan")) {
    struct scan_acc a = {0};
    a.limit = jnum(step, "limit", 0);
    const struct jv *px = jget(step, "prefix"), *st = jget(step, "start"),
                    *en = jget(step, "end");
    if (px && px->t == J_STR)
      rc = shoal_scan_prefix(c, px->s, px->slen, scan_cb, &a);
    else
      rc = shoal_scan(c, st ? st->s : NULL, st ? st->slen : 0, en ? en->s : NULL,
                      en ? en->slen : 0, scan_cb, &a);
    if (rc == 1) rc = 0; /* stopped at the limit */
    const struct jv *keys = jget(step, "keys");
    if (!result_matches(want, rc)) {
      mismatch(line, step, "scan: %s, expected %s", shoal_errname(rc), want);
    } else if (keys && keys->t == J_ARR) {
      int same = keys->n == a.n;
      for (size_t i = 0; same && i < a.n; i++)
        same = keys->items[i].slen == a.lens[i] &&
               !memcmp(keys->items[i].s, a.keys[i], a.lens[i]);
      if (!same) mismatch(line, step, "scan: %zu keys, expected %zu (or different keys)", a.n, keys->n);
    }
    for (size_t i = 0; i < a.n; i++) free(a.keys[i]);
    free(a.keys);
    free(a.lens);
  } else if (!strcmp(op, "batch")) {
    shoal_batch *b = NULL;
    rc = shoal_batch_new(c, &b);
    const struct jv *ops = jget(step, "ops");
    for (size_t i = 0; !rc && ops && ops->t == J_ARR && i < ops->n; i++) {
      const struct jv *o = &ops->items[i];
      const struct jv *bo = jget(o, "op");
      char *bk, *bv;
      size_t bkl, bvl;
      bytes_of(o, "key", "key_repeat", &bk, &bkl);
      bytes_of(o, "value", "value_repeat", &bv, &bvl);
      const char *k = bo && bo->t == J_STR ? bo->s : "";
      if (!strcmp(k, "put")) rc = shoal_batch_put(b, bk, bkl, bv, bvl, 0);
      else if (!strcmp(k, "del")) rc = shoal_batch_del(b, bk, bkl);
      else if (!strcmp(k, "del_any")) rc = shoal_batch_del_any(b, bk, bkl);
      else if (!strcmp(k, "cas")) rc = shoal_batch_cas(b, bk, bkl, expect_of(o), bv, bvl);
      else rc = SHOAL_EINVAL;
      free(bk);
      free(bv);
    }
    if (!rc) rc = shoal_batch_commit(c, b, &ver);
    if (!result_matches(want, rc)) {
      mismatch(line, step, "batch: %s, expected %s", shoal_errname(rc), want);
    } else if (!rc) {
      version_checks(line, step, ver);
    } else {
      long fi = jnum(step, "failed_index", -1);
      if (fi >= 0 && shoal_batch_failed(b) != fi)
        mismatch(line, step, "batch: failed op %ld, expected %ld", shoal_batch_failed(b), fi);
    }
    shoal_batch_free(b);
  } else if (!strcmp(op, "wait")) {
    const struct jv *af = jget(step, "after");
    uint64_t after = 0;
    if (af && af->t == J_STR) label(af->s, &after);
    rc = shoal_wait(c, key, klen, after, (int)jnum(step, "timeout_ms", 1000), &ver);
    if (!result_matches(want, rc))
      mismatch(line, step, "wait: %s, expected %s", shoal_errname(rc), want);
    else if (!rc)
      version_checks(line, step, ver);
  } else if (!strcmp(op, "sleep")) {
    long long ms = jnum(step, "ms", 0);
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
  } else {
    mismatch(line, step, "unknown op '%s'", op);
  }
  free(key);
  free(val);
}

START_TEST(conformance_cases) {
  const char *path = getenv("SHOAL_CONFORMANCE");
  if (!path || !*path) path = SHOAL_CONFORMANCE_DEFAULT;
  size_t len;
  char *text = it_read_file(path, &len);
  ck_assert_msg(text, "cannot read %s (set SHOAL_CONFORMANCE)", path);
  it_start_broker("--size", "67108864", NULL);
  shoal *c;
  IT_OK(NULL, it_open(&c, 0));
  int line = 0;
  for (char *p = text, *nl; p < text + len; p = nl + 1) {
    nl = memchr(p, '\n', (size_t)(text + len - p));
    if (!nl) nl = text + len;
    line++;
    char *s = p;
    while (s < nl && isspace((unsigned char)*s)) s++;
    if (s == nl || *s == '#') continue;
    struct jp j = {s, nl, NULL};
    struct jv step;
    if (jvalue(&j, &step, 0) != 0 || step.t != J_OBJ) {
      ck_abort_msg("%s:%d: not a JSON object: %s", path, line, j.err ? j.err : "?");
    }
    run_step(c, line, &step);
    jfree(&step);
  }
  shoal_close(c);
  free(text);
  ck_assert_msg(nsteps >= 50, "only %d steps ran from %s", nsteps, path);
  ck_assert_msg(nfail == 0, "%d of %d conformance steps differ:\n%s", nfail, nsteps,
                failures);
}
END_TEST

int main(void) {
  Suite *s = suite_create("conformance");
  TCase *tc = it_tcase("cases", 60);
  tcase_add_test(tc, conformance_cases);
  suite_add_tcase(s, tc);
  return it_run_suite(s);
}
