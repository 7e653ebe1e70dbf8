/*
 * util.c - SkyPilot's utility functions (UTILITIES.md) as plain libshoal
 * functions: the "local utility functions" section of shoal.h, plus
 * shoal_lines_free and the shoal_lines builder of util-internal.h.
 *
 * The reference is libclient/python/shoal/utils.py (upstream-identical):
 * every function here gives its results, including its documented
 * deviations (base36 of a negative value and pid <= 0 are errors, cgroup v2
 * "quota 0" periods and an unlimited RLIMIT_NOFILE mean no limit) and its
 * test hooks ($SHOAL_CGROUP_ROOT, $SHOAL_PROC_ROOT). Where utils.py parses
 * text with Python's int(), float(), str.strip(), str.split() or
 * str.splitlines(), this file implements the same grammar (sign, "0x",
 * '_' between digits, "inf"/"nan", Python's whitespace and line breaks,
 * non-ASCII ones included), so a cgroup file or an environment variable is
 * accepted or rejected alike. One gap: Python also accepts non-ASCII
 * decimal digits ("٣"); they are SHOAL_EINVAL here.
 *
 * Python exceptions map to codes: ValueError -> SHOAL_EINVAL, OverflowError
 * -> -ERANGE, OSError -> -errno (each function's comment in shoal.h lists
 * them). File hashing and tailing are futil's (util/futil.c), shared with
 * the broker.
 *
 * Thread-safety: every function is reentrant. Floats are printed and
 * parsed in the "C" locale through uselocale()/strtod_l() whatever the
 * process' locale, as Python does; the one-time RLIMIT_NOFILE warning is
 * an atomic flag.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "futil.h"
#include "shoal/shoal.h"
#include "util-internal.h"

/* utils.py's constants. */
#define GIB 1073741824.0         /* 1024**3 */
#define FD_WARN_BELOW 1024       /* warn about RLIMIT_NOFILE below this */
#define FD_UNLIMITED (1LL << 62) /* RLIM_INFINITY counts as this many */
#define FD_PER_RSYNC 5           /* descriptors one rsync holds */
#define KUBERNETES_MULT 4        /* threads per CPU for Kubernetes */

/* --------------------------------------------------------- output buffer */

/* A caller's buffer filled piece by piece; over it stays NUL-terminated
 * and remembers that it ran out. */
typedef struct sbuf {
  char *out;
  size_t cap, n;
  int over;
} sbuf;

static void sb_put(sbuf *b, const char *p, size_t len) {
  if (b->over) return;
  if (len >= b->cap - b->n || b->cap == 0) {
    b->over = 1;
    return;
  }
  memcpy(b->out + b->n, p, len);
  b->n += len;
  b->out[b->n] = '\0';
}

/* The length written or SHOAL_ETOOBIG (then "" when @cap > 0). */
static int sb_done(sbuf *b) {
  if (b->over || b->n > INT_MAX) {
    if (b->cap) b->out[0] = '\0';
    return SHOAL_ETOOBIG;
  }
  return (int)b->n;
}

static int out_args_ok(const char *out, size_t cap) {
  return out || cap == 0;
}

/* ------------------------------------------------------- Python's text */

/*
 * The byte length of a Python whitespace character at @p (0 if none).
 * @str_mode 1: str.isspace()/str.strip()/str.split(), which include the
 * ASCII separators 0x1C-0x1F. 0: what int() and float() skip around a
 * number, which does not (CPython maps only non-ASCII spaces to ' ' before
 * its ASCII parser).
 */
static size_t py_space(const unsigned char *p, const unsigned char *end,
                       int str_mode) {
  size_t left = (size_t)(end - p);
  if (left == 0) return 0;
  unsigned c = p[0];
  if (c == ' ' || (c >= '\t' && c <= '\r')) return 1;
  if (c >= 0x1c && c <= 0x1f) return str_mode ? 1 : 0;
  if (c == 0xc2 && left >= 2 && (p[1] == 0x85 || p[1] == 0xa0)) return 2;
  if (left < 3) return 0;
  if (c == 0xe1 && p[1] == 0x9a && p[2] == 0x80) return 3; /* U+1680 */
  if (c == 0xe2 && p[1] == 0x80 &&
      (p[2] <= 0x8a || p[2] == 0xa8 || p[2] == 0xa9 || p[2] == 0xaf) &&
      p[2] >= 0x80)
    return 3; /* U+2000-200A, U+2028, U+2029, U+202F */
  if (c == 0xe2 && p[1] == 0x81 && p[2] == 0x9f) return 3; /* U+205F */
  if (c == 0xe3 && p[1] == 0x80 && p[2] == 0x80) return 3; /* U+3000 */
  return 0;
}

/* The byte length of a str.splitlines() line break at @p (0 if none):
 * \n \r \r\n \v \f \x1c \x1d \x1e U+0085 U+2028 U+2029. */
static size_t py_linebreak(const unsigned char *p, const unsigned char *end) {
  size_t left = (size_t)(end - p);
  if (left == 0) return 0;
  unsigned c = p[0];
  if (c == '\r') return left >= 2 && p[1] == '\n' ? 2 : 1;
  if (c == '\n' || c == '\v' || c == '\f' || (c >= 0x1c && c <= 0x1e)) return 1;
  if (c == 0xc2 && left >= 2 && p[1] == 0x85) return 2;
  if (c == 0xe2 && left >= 3 && p[1] == 0x80 && (p[2] == 0xa8 || p[2] == 0xa9))
    return 3;
  return 0;
}

/* Trim Python whitespace (@str_mode as py_space) from both ends of
 * [*s, *e). Whitespace at the end is found by scanning from the start, as
 * a multi-byte character can not be recognised backwards cheaply. */
static void py_strip(const unsigned char **s, const unsigned char **e,
                     int str_mode) {
  const unsigned char *p = *s, *end = *e, *last = p;
  size_t k;
  while ((k = py_space(p, end, str_mode)) != 0)
    p += k;
  *s = p;
  last = p;
  while (p < end) {
    if ((k = py_space(p, end, str_mode)) != 0) {
      p += k;
    } else {
      p++;
      last = p;
    }
  }
  *e = last;
}

/* 1 if [s, s + len) is valid UTF-8 (no overlongs, surrogates or values past
 * U+10FFFF: what Python's decoder accepts); *@ncp receives the number of
 * code points. */
static int utf8_valid(const unsigned char *s, size_t len, size_t *ncp) {
  size_t i = 0, n = 0;
  while (i < len) {
    unsigned c = s[i];
    size_t k;
    unsigned lo = 0x80, hi = 0xbf;
    if (c < 0x80) {
      i++;
      n++;
      continue;
    } else if (c >= 0xc2 && c <= 0xdf) {
      k = 1;
    } else if (c >= 0xe0 && c <= 0xef) {
      k = 2;
      if (c == 0xe0) lo = 0xa0;
      if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      k = 3;
      if (c == 0xf0) lo = 0x90;
      if (c == 0xf4) hi = 0x8f;
    } else {
      return 0;
    }
    if (len - i <= k) return 0;
    if (s[i + 1] < lo || s[i + 1] > hi) return 0;
    for (size_t j = 2; j <= k; j++)
      if ((s[i + j] & 0xc0) != 0x80) return 0;
    i += k + 1;
    n++;
  }
  if (ncp) *ncp = n;
  return 1;
}

/* The byte offset of code point @k in valid UTF-8 [s, s + len) (len if
 * there are no more than k). */
static size_t cp_offset(const unsigned char *s, size_t len, size_t k) {
  size_t i = 0;
  while (i < len) {
    if ((s[i] & 0xc0) != 0x80) {
      if (k == 0) return i;
      k--;
    }
    i++;
  }
  return len;
}

static int hexval(unsigned c) {
  if (c >= '0' && c <= '9') return (int)(c - '0');
  if (c >= 'a' && c <= 'f') return (int)(c - 'a' + 10);
  if (c >= 'A' && c <= 'F') return (int)(c - 'A' + 10);
  return -1;
}

/*
 * Python's int(s, base) grammar for base 10 or 16: whitespace, a sign,
 * for base 16 an optional "0x"/"0X" that one '_' may follow, digits with
 * single '_' between them, whitespace. @digits (room for @len bytes)
 * receives the digit values, most significant first, *@nd their count,
 * *@neg the sign. Returns 0 or SHOAL_EINVAL.
 */
static int py_int_scan(const char *str, size_t len, int base, int *neg,
                       uint8_t *digits, size_t *nd) {
  const unsigned char *p = (const unsigned char *)str, *end = p + len;
  py_strip(&p, &end, 0);
  *neg = 0;
  *nd = 0;
  if (p < end && (*p == '+' || *p == '-')) *neg = *p++ == '-';
  if (base == 16 && end - p >= 2 && p[0] == '0' &&
      (p[1] == 'x' || p[1] == 'X')) {
    p += 2;
    if (p < end && *p == '_') p++;
  }
  size_t n = 0;
  int prev_digit = 0;
  for (; p < end; p++) {
    int v = hexval(*p);
    if (v >= 0 && v < base) {
      digits[n++] = (uint8_t)v;
      prev_digit = 1;
    } else if (*p == '_' && prev_digit && p + 1 < end) {
      prev_digit = 0; /* a digit must follow: checked by the next turn */
    } else {
      return SHOAL_EINVAL;
    }
  }
  if (n == 0 || !prev_digit) return SHOAL_EINVAL;
  *nd = n;
  return 0;
}

/* The "C" locale, created once (NULL if newlocale failed: the process'
 * locale is used then, which is "C" unless the program changed it). */
static locale_t c_locale_obj;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;
static void c_locale_init(void) {
  c_locale_obj = newlocale(LC_ALL_MASK, "C", (locale_t)0);
}
static locale_t c_locale(void) {
  pthread_once(&c_locale_once, c_locale_init);
  return c_locale_obj;
}

/* Python's int(s) (base 10) as a double: exact below 2^53, correctly
 * rounded above (an int is only ever compared and divided by a power of
 * two here, so the rounding never changes a result). Returns 0 or
 * SHOAL_EINVAL. */
static int py_int10(const char *s, size_t len, double *v) {
  uint8_t small[64];
  uint8_t *dg = len <= sizeof small ? small : malloc(len);
  char *txt = NULL;
  int neg, rc;
  size_t nd;
  if (!dg) return -ENOMEM;
  rc = py_int_scan(s, len, 10, &neg, dg, &nd);
  if (rc == 0) {
    txt = malloc(nd + 2);
    if (!txt) {
      rc = -ENOMEM;
    } else {
      txt[0] = neg ? '-' : '+';
      for (size_t i = 0; i < nd; i++)
        txt[i + 1] = (char)('0' + dg[i]);
      txt[nd + 1] = '\0';
      locale_t loc = c_locale();
      *v = loc ? strtod_l(txt, NULL, loc) : strtod(txt, NULL);
    }
  }
  free(txt);
  if (dg != small) free(dg);
  return rc;
}

/* ASCII case-insensitive: does [p, end) start with @word? */
static int starts_ci(const unsigned char *p, const unsigned char *end,
                     const char *word) {
  size_t n = strlen(word);
  if ((size_t)(end - p) < n) return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned c = p[i];
    if (c >= 'A' && c <= 'Z') c += 'a' - 'A';
    if (c != (unsigned char)word[i]) return 0;
  }
  return 1;
}

/* Digits with single '_' between them at *p; appends them to @t. Returns
 * the number of digits (0: none, or a misplaced '_'). */
static size_t float_digitpart(const unsigned char **pp,
                              const unsigned char *end, char *t, size_t *tn) {
  const unsigned char *p = *pp;
  size_t n = 0;
  while (p < end) {
    if (*p >= '0' && *p <= '9') {
      t[(*tn)++] = (char)*p++;
      n++;
    } else if (*p == '_' && n > 0 && p + 1 < end && p[1] >= '0' &&
               p[1] <= '9') {
      p++;
    } else {
      break;
    }
  }
  *pp = p;
  return n;
}

/*
 * Python's float(s): whitespace, a sign, then "inf", "infinity" or "nan"
 * (any case), or digits with an optional '.' and fraction and an optional
 * exponent, '_' allowed between digits; whitespace. No hex floats, no
 * "nan(...)" (which strtod alone would take). Returns 0 or SHOAL_EINVAL.
 */
static int py_float(const char *s, size_t len, double *v) {
  const unsigned char *p = (const unsigned char *)s, *end = p + len;
  py_strip(&p, &end, 0);
  int neg = 0;
  if (p < end && (*p == '+' || *p == '-')) neg = *p++ == '-';
  size_t rest = (size_t)(end - p);
  if ((rest == 3 && starts_ci(p, end, "inf")) ||
      (rest == 8 && starts_ci(p, end, "infinity"))) {
    *v = neg ? -INFINITY : INFINITY;
    return 0;
  }
  if (rest == 3 && starts_ci(p, end, "nan")) {
    *v = neg ? -NAN : NAN;
    return 0;
  }
  char small[128];
  char *t = rest + 2 <= sizeof small ? small : malloc(rest + 2);
  if (!t) return -ENOMEM;
  size_t tn = 0;
  int rc = SHOAL_EINVAL;
  t[tn++] = neg ? '-' : '+';
  size_t ip = float_digitpart(&p, end, t, &tn), fp = 0;
  if (p < end && *p == '.') {
    t[tn++] = *p++;
    fp = float_digitpart(&p, end, t, &tn);
  }
  if (ip + fp == 0) goto out;
  if (p < end && (*p == 'e' || *p == 'E')) {
    t[tn++] = (char)*p++;
    if (p < end && (*p == '+' || *p == '-')) t[tn++] = (char)*p++;
    if (float_digitpart(&p, end, t, &tn) == 0) goto out;
  }
  if (p != end) goto out;
  t[tn] = '\0';
  locale_t loc = c_locale();
  *v = loc ? strtod_l(t, NULL, loc) : strtod(t, NULL);
  rc = 0;
out:
  if (t != small) free(t);
  return rc;
}

/* Python's float(env) of an environment variable (a NUL ends it). */
static int py_float_cstr(const char *s, double *v) {
  return py_float(s, strlen(s), v);
}

/* ----------------------------------------------------------- base36 */

SHOAL_EXPORT int shoal_util_base36_encode(const char *hex, size_t len,
                                          char *out, size_t cap) {
  static const char b36[] = "0123456789abcdefghijklmnopqrstuvwxyz";
  /* 36^6 < 2^32: one division by it yields six base-36 digits, and the
   * running remainder times 2^32 plus a limb fits in 64 bits. */
  const uint64_t chunk = 2176782336u; /* 36^6 */
  if ((!hex && len) || !out_args_ok(out, cap)) return SHOAL_EINVAL;
  if (cap) out[0] = '\0';
  uint8_t *dg = malloc(len ? len : 1);
  if (!dg) return -ENOMEM;
  int neg, rc;
  size_t nd;
  rc = py_int_scan(hex, len, 16, &neg, dg, &nd);
  if (rc) {
    free(dg);
    return rc;
  }
  size_t z = 0;
  while (z < nd && dg[z] == 0)
    z++;         /* leading zeros */
  if (z == nd) { /* zero, "-0" included, as int() */
    free(dg);
    sbuf b = {out, cap, 0, 0};
    sb_put(&b, "0", 1);
    return sb_done(&b);
  }
  if (neg) { /* utils.py: ValueError (upstream would loop forever) */
    free(dg);
    return SHOAL_EINVAL;
  }
  /* Nibbles to 32-bit limbs, most significant first. */
  size_t nn = nd - z, nl = (nn + 7) / 8;
  uint32_t *limb = calloc(nl, sizeof *limb);
  /* 4 bits per hex digit, > 5.16 bits per base-36 digit: nn + 6 is ample */
  char *rev = malloc(nn + 6);
  if (!limb || !rev) {
    free(limb);
    free(rev);
    free(dg);
    return -ENOMEM;
  }
  for (size_t i = 0; i < nn; i++) {
    size_t bit = (nn - 1 - i) * 4; /* from the least significant end */
    limb[nl - 1 - bit / 32] |= (uint32_t)dg[z + i] << (bit % 32);
  }
  free(dg);
  size_t nr = 0, top = 0; /* limb[top] is the first non-zero one */
  while (top < nl) {
    uint64_t r = 0;
    for (size_t i = top; i < nl; i++) {
      uint64_t cur = (r << 32) | limb[i];
      limb[i] = (uint32_t)(cur / chunk);
      r = cur % chunk;
    }
    while (top < nl && limb[top] == 0)
      top++;
    for (int k = 0; k < 6 && (top < nl || r); k++) {
      rev[nr++] = b36[r % 36];
      r /= 36;
    }
  }
  free(limb);
  sbuf b = {out, cap, 0, 0};
  if (nr + 1 > cap) {
    b.over = 1;
  } else {
    for (size_t i = 0; i < nr; i++)
      out[i] = rev[nr - 1 - i];
    out[nr] = '\0';
    b.n = nr;
  }
  free(rev);
  return sb_done(&b);
}

/* ------------------------------------------------------- format_float */

SHOAL_EXPORT int shoal_util_format_float(double num, int precision, char *out,
                                         size_t cap) {
  if (!out_args_ok(out, cap) || precision < 0) return SHOAL_EINVAL;
  sbuf b = {out, cap, 0, 0};
  if (cap) out[0] = '\0';
  /* Python prints NaN as "nan" whatever its sign bit (printf: "-nan"). */
  if (isnan(num)) {
    sb_put(&b, "nan", 3);
    return sb_done(&b);
  }
  if (isinf(num)) {
    sb_put(&b, num < 0 ? "-inf" : "inf", num < 0 ? 4 : 3);
    return sb_done(&b);
  }
  int p = num == trunc(num) ? 0 : precision; /* float.is_integer() */
  /* At least "0." and p digits plus the NUL: refuse before printf would
   * build a huge string. */
  if (p > 0 && (size_t)p + 3 > cap) return sb_done(&(sbuf){out, cap, 0, 1});
  /* glibc's %f is exact and rounds half to even, as Python's formatting;
   * only the decimal point depends on the locale. */
  locale_t loc = c_locale(), old = (locale_t)0;
  if (loc) old = uselocale(loc);
  int n = snprintf(out, cap, "%.*f", p, num);
  int e = errno;
  if (loc) uselocale(old);
  if (n < 0) {
    if (cap) out[0] = '\0';
    return -e;
  }
  if ((size_t)n >= cap) b.over = 1;
  b.n = (size_t)n;
  return sb_done(&b);
}

/* ------------------------------------------------ truncate_long_string */

SHOAL_EXPORT int shoal_util_truncate_long_string(const char *s, size_t len,
                                                 size_t max_length,
                                                 int truncate_middle, char *out,
                                                 size_t cap) {
  const unsigned char *u = (const unsigned char *)s;
  size_t ncp;
  if ((!s && len) || !out_args_ok(out, cap)) return SHOAL_EINVAL;
  if (cap) out[0] = '\0';
  if (!utf8_valid(u, len, &ncp)) return SHOAL_EINVAL;
  sbuf b = {out, cap, 0, 0};
  if (ncp <= max_length) {
    sb_put(&b, s, len);
    return sb_done(&b);
  }
  if (truncate_middle) {
    if (max_length <= 3) {
      sb_put(&b, "...", 3);
      return sb_done(&b);
    }
    size_t each = (max_length - 3) / 2;
    size_t start = each + (max_length - 3) % 2;
    sb_put(&b, s, cp_offset(u, len, start));
    sb_put(&b, "...", 3);
    if (each > 0) {
      size_t at = cp_offset(u, len, ncp - each);
      sb_put(&b, s + at, len - at);
    }
    return sb_done(&b);
  }
  /* words = s.split(" "): ' ' never occurs inside a multi-byte sequence */
  const char *sp = memchr(s, ' ', len);
  size_t w0b = sp ? (size_t)(sp - s) : len;
  size_t w0;
  (void)utf8_valid(u, w0b, &w0);
  if (w0 > max_length) {
    sb_put(&b, s, cp_offset(u, w0b, max_length));
    sb_put(&b, "...", 3);
    return sb_done(&b);
  }
  /* Keep words while the running total of their lengths stays below
   * max_length; the prefix is " ".join(words[:i]), which is s up to the
   * space before word i. */
  size_t wb = 0, wcp = 0, total = 0; /* word i's start: byte, code point */
  for (;;) {
    const char *nsp = memchr(s + wb, ' ', len - wb);
    size_t we = nsp ? (size_t)(nsp - s) : len, wl;
    (void)utf8_valid(u + wb, we - wb, &wl);
    total += wl;
    if (total >= max_length || !nsp) break;
    wb = we + 1;
    wcp += wl + 1;
  }
  size_t pb = wb ? wb - 1 : 0, pcp = wcp ? wcp - 1 : 0;
  if (pcp < max_length) pb = cp_offset(u, len, max_length); /* pad from s */
  sb_put(&b, s, pb);
  sb_put(&b, "...", 3);
  return sb_done(&b);
}

/* ------------------------------------------------------------ resources */

static const char *env_root(const char *var, const char *def) {
  const char *v = getenv(var);
  return v && *v ? v : def;
}

/* utils.py's _read_text: the whole file, which must decode as UTF-8, with
 * Python whitespace stripped. Returns a malloc'd NUL-terminated string (*n
 * its length) or NULL when unreadable (None). */
static char *read_text(const char *path, size_t *n) {
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) return NULL;
  size_t cap = 4096, len = 0;
  char *buf = malloc(cap);
  for (;;) {
    if (!buf) break;
    if (len + 1 >= cap) {
      char *nb = realloc(buf, cap * 2);
      if (!nb) {
        free(buf);
        buf = NULL;
        break;
      }
      buf = nb;
      cap *= 2;
    }
    ssize_t r = read(fd, buf + len, cap - 1 - len);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      free(buf);
      buf = NULL;
      break;
    }
    if (r == 0) break;
    len += (size_t)r;
  }
  close(fd);
  if (!buf) return NULL;
  if (!utf8_valid((unsigned char *)buf, len, NULL)) {
    free(buf);
    return NULL;
  }
  const unsigned char *s = (unsigned char *)buf, *e = s + len;
  py_strip(&s, &e, 1);
  *n = (size_t)(e - s);
  memmove(buf, s, *n);
  buf[*n] = '\0';
  return buf;
}

static int join_path(char *dst, size_t cap, const char *root, const char *a,
                     const char *b) {
  int n = b ? snprintf(dst, cap, "%s/%s/%s", root, a, b)
            : snprintf(dst, cap, "%s/%s", root, a);
  return n >= 0 && (size_t)n < cap;
}

/* cgroup v2 when ROOT/cgroup.controllers is a regular file (isfile). */
static int cgroup_v2(const char *root) {
  char p[PATH_MAX];
  struct stat st;
  return join_path(p, sizeof p, root, "cgroup.controllers", NULL) &&
         stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* The text of a file under @root, NULL if unreadable. */
static char *root_text(const char *root, const char *a, const char *b,
                       size_t *n) {
  char p[PATH_MAX];
  if (!join_path(p, sizeof p, root, a, b)) return NULL;
  return read_text(p, n);
}

/* str.split() of [s, e): the next field at or after *pos, as [*fs, *fe).
 * Returns 0 when there is none. */
static int next_field(const unsigned char **pos, const unsigned char *e,
                      const unsigned char **fs, const unsigned char **fe) {
  const unsigned char *p = *pos;
  size_t k;
  while ((k = py_space(p, e, 1)) != 0)
    p += k;
  if (p >= e) return 0;
  *fs = p;
  while (p < e && py_space(p, e, 1) == 0)
    p++;
  *fe = p;
  *pos = p;
  return 1;
}

/* _cgroup_cpu_limit: 1 with *@limit in CPUs, 0 for no limit. */
static int cgroup_cpu_limit(double *limit) {
  const char *root = env_root("SHOAL_CGROUP_ROOT", "/sys/fs/cgroup");
  double quota, period;
  size_t n;
  if (cgroup_v2(root)) {
    char *t = root_text(root, "cpu.max", NULL, &n);
    if (!t || n == 0) {
      free(t);
      return 0;
    }
    const unsigned char *pos = (unsigned char *)t, *e = pos + n;
    const unsigned char *f[3][2];
    int nf = 0;
    while (nf < 3 && next_field(&pos, e, &f[nf][0], &f[nf][1]))
      nf++;
    int ok = nf == 2 &&
             !(f[0][1] - f[0][0] == 3 && memcmp(f[0][0], "max", 3) == 0) &&
             py_float((const char *)f[0][0], (size_t)(f[0][1] - f[0][0]),
                      &quota) == 0 &&
             py_float((const char *)f[1][0], (size_t)(f[1][1] - f[1][0]),
                      &period) == 0;
    free(t);
    if (!ok) return 0;
  } else {
    size_t qn, pn;
    char *q = root_text(root, "cpu", "cpu.cfs_quota_us", &qn);
    char *p = root_text(root, "cpu", "cpu.cfs_period_us", &pn);
    int ok =
        q && p && py_float(q, qn, &quota) == 0 && py_float(p, pn, &period) == 0;
    free(q);
    free(p);
    if (!ok) return 0;
  }
  if (quota > 0 && period > 0) {
    *limit = quota / period;
    return 1;
  }
  return 0;
}

/* _cgroup_memory_limit: 1 with *@limit in bytes, 0 for none. */
static int cgroup_memory_limit(double *limit) {
  const char *root = env_root("SHOAL_CGROUP_ROOT", "/sys/fs/cgroup");
  size_t n;
  char *t = cgroup_v2(root)
                ? root_text(root, "memory.max", NULL, &n)
                : root_text(root, "memory", "memory.limit_in_bytes", &n);
  int ok = t && n > 0 && !(n == 3 && memcmp(t, "max", 3) == 0) &&
           py_int10(t, n, limit) == 0 && *limit > 0;
  free(t);
  return ok;
}

/* _total_ram: MemTotal of PROC/meminfo in bytes, else sysconf. */
static double total_ram(void) {
  char p[PATH_MAX];
  size_t n;
  char *t = NULL;
  if (join_path(p, sizeof p, env_root("SHOAL_PROC_ROOT", "/proc"), "meminfo",
                NULL))
    t = read_text(p, &n);
  if (t && n > 0) {
    const unsigned char *s = (unsigned char *)t, *e = s + n;
    while (s < e) {
      /* one line of splitlines() */
      const unsigned char *le = s;
      size_t k = 0;
      while (le < e && (k = py_linebreak(le, e)) == 0)
        le++;
      if (le - s >= 9 && memcmp(s, "MemTotal:", 9) == 0) {
        const unsigned char *pos = s, *fs, *fe;
        double kb;
        if (next_field(&pos, le, &fs, &fe) && next_field(&pos, le, &fs, &fe) &&
            py_int10((const char *)fs, (size_t)(fe - fs), &kb) == 0) {
          free(t);
          return kb * 1024;
        }
        break; /* IndexError / ValueError: fall back to sysconf */
      }
      s = le + k;
    }
  }
  free(t);
  return (double)sysconf(_SC_PAGESIZE) * (double)sysconf(_SC_PHYS_PAGES);
}

/* os.cpu_count(): online CPUs, 1 when unknown (None). */
static long online_cpus(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n >= 1 ? n : 1;
}

/* len(os.sched_getaffinity(0)), 0 when it can not be read. */
static long affinity_cpus(void) {
  for (int ncpu = 1024; ncpu <= (1 << 20); ncpu *= 2) {
    cpu_set_t *set = CPU_ALLOC(ncpu);
    if (!set) return 0;
    size_t sz = CPU_ALLOC_SIZE(ncpu);
    if (sched_getaffinity(0, sz, set) == 0) {
      long n = CPU_COUNT_S(sz, set);
      CPU_FREE(set);
      return n;
    }
    CPU_FREE(set);
    if (errno != EINVAL) return 0;
  }
  return 0;
}

SHOAL_EXPORT int shoal_util_get_cpu_count(void) {
  const char *env = getenv("SKYPILOT_POD_CPU_CORE_LIMIT");
  if (env) {
    double v;
    int rc = py_float_cstr(env, &v);
    if (rc) return rc;
    if (isnan(v)) return SHOAL_EINVAL; /* int(nan): ValueError */
    v = trunc(v);
    if (!(v >= 0 && v <= INT_MAX)) return -ERANGE;
    return (int)v;
  }
  long count = online_cpus();
  long aff = affinity_cpus();
  if (aff > 0 && aff < count) count = aff;
  double limit;
  if (cgroup_cpu_limit(&limit)) {
    if (isnan(limit)) return SHOAL_EINVAL; /* int(inf / inf) */
    if (isinf(limit)) return -ERANGE;      /* int(inf) */
    if (limit < (double)count) count = (long)limit;
  }
  return count > INT_MAX ? INT_MAX : (int)count;
}

SHOAL_EXPORT int shoal_util_get_mem_size_gb(double *gb) {
  if (!gb) return SHOAL_EINVAL;
  const char *env = getenv("SKYPILOT_POD_MEMORY_GB_LIMIT");
  double v;
  if (env) {
    int rc = py_float_cstr(env, &v);
    if (rc == 0) *gb = v;
    return rc;
  }
  env = getenv("SKYPILOT_POD_MEMORY_BYTES_LIMIT");
  if (env) {
    int rc = py_float_cstr(env, &v);
    if (rc == 0) *gb = v / GIB;
    return rc;
  }
  double size = total_ram(), limit;
  if (cgroup_memory_limit(&limit) && limit < size) size = limit;
  /* int / int in Python: an int too large for a float is OverflowError */
  if (isinf(size)) return -ERANGE;
  *gb = size / GIB;
  return 0;
}

/* cloud_str.lower() == "kubernetes": ASCII letters of any case, and the
 * KELVIN SIGN U+212A, whose lower() is 'k' (the only non-ASCII character
 * that lowers into this word). */
static int is_kubernetes(const char *cloud) {
  static const char word[] = "kubernetes";
  const unsigned char *p = (const unsigned char *)cloud;
  for (const char *w = word; *w; w++) {
    unsigned c = *p;
    if (c >= 'A' && c <= 'Z') c += 'a' - 'A';
    if (c == (unsigned char)*w) {
      p++;
    } else if (*w == 'k' && p[0] == 0xe2 && p[1] == 0x84 && p[2] == 0xaa) {
      p += 3;
    } else {
      return 0;
    }
  }
  return *p == '\0';
}

SHOAL_EXPORT int shoal_util_get_parallel_threads(const char *cloud) {
  long cpus = online_cpus();
  long mult = cloud && is_kubernetes(cloud) ? KUBERNETES_MULT : 1;
  long t = (cpus - 1 > 4 ? cpus - 1 : 4) * mult;
  return t > INT_MAX ? INT_MAX : (int)t;
}

/* Entries of the directory @path (without "." and ".."), or -errno. */
static long count_entries(const char *path) {
  DIR *d = opendir(path);
  if (!d) return -errno;
  long n = 0;
  struct dirent *de;
  for (;;) {
    errno = 0;
    de = readdir(d);
    if (!de) break;
    if (de->d_name[0] == '.' &&
        (de->d_name[1] == '\0' ||
         (de->d_name[1] == '.' && de->d_name[2] == '\0')))
      continue;
    n++;
  }
  int e = errno;
  closedir(d);
  return e ? -e : n;
}

static int fd_warned; /* the one-time RLIMIT_NOFILE warning was printed */

SHOAL_EXPORT int
shoal_util_get_max_workers_for_file_mounts(const char *const *sources, size_t n,
                                           const char *cloud) {
  if (!sources && n) return SHOAL_EINVAL;
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) < 0) return -errno;
  int threads = shoal_util_get_parallel_threads(cloud);
  long long fd_limit;
  if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (rlim_t)FD_UNLIMITED) {
    fd_limit = FD_UNLIMITED;
  } else {
    fd_limit = (long long)rl.rlim_cur;
    if (fd_limit < FD_WARN_BELOW &&
        !__atomic_exchange_n(&fd_warned, 1, __ATOMIC_RELAXED))
      fprintf(stderr,
              "shoal: warning: The open file limit (RLIMIT_NOFILE) is %lld, "
              "below %d: file mounts will be synced with few workers. Raise "
              "it with `ulimit -n`.\n",
              fd_limit, FD_WARN_BELOW);
  }
  long long fd_per_rsync = FD_PER_RSYNC;
  for (size_t i = 0; i < n; i++) {
    struct stat st;
    if (!sources[i]) return SHOAL_EINVAL;
    if (stat(sources[i], &st) < 0 || !S_ISDIR(st.st_mode)) continue;
    long e = count_entries(sources[i]); /* os.listdir raises: so do we */
    if (e < 0) return (int)e;
    if (e * FD_PER_RSYNC > fd_per_rsync) fd_per_rsync = e * FD_PER_RSYNC;
  }
  /* Python's // floors; fd_limit - 100 < 0 only gives workers < 1. */
  long long workers =
      fd_limit - 100 >= 0 ? (fd_limit - 100) / fd_per_rsync : -1;
  if (workers < 1) workers = 1;
  return workers < threads ? (int)workers : threads;
}

/* ------------------------------------------------------------ processes */

/* kill(pid, 0): 1 exists (or EPERM), 0 ESRCH, -errno otherwise. */
static int pid_exists(pid_t pid) {
  if (kill(pid, 0) == 0 || errno == EPERM) return 1;
  return errno == ESRCH ? 0 : -errno;
}

SHOAL_EXPORT int shoal_util_is_process_alive(long pid) {
  if (pid <= 0 || pid > INT_MAX) return SHOAL_EINVAL;
  int rc = pid_exists((pid_t)pid);
  if (rc <= 0) return rc;
  char p[PATH_MAX], num[24];
  snprintf(num, sizeof num, "%ld", pid);
  if (!join_path(p, sizeof p, env_root("SHOAL_PROC_ROOT", "/proc"), num,
                 "stat"))
    return 1; /* ENAMETOOLONG: an OSError other than "not found" */
  int fd = open(p, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) {
    /* reaped between kill() and open(), or no /proc: ask kill() again */
    if (errno == ENOENT) return pid_exists((pid_t)pid);
    return 1;
  }
  size_t cap = 1024, len = 0;
  char *buf = malloc(cap);
  int ok = buf != NULL;
  while (ok) {
    if (len == cap) {
      char *nb = realloc(buf, cap * 2);
      if (!nb) {
        ok = 0;
        break;
      }
      buf = nb;
      cap *= 2;
    }
    ssize_t r = read(fd, buf + len, cap - len);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) ok = 0;
    if (r <= 0) break;
    len += (size_t)r;
  }
  close(fd);
  if (!ok) {
    free(buf);
    return 1;
  }
  /* "pid (comm) S ...": comm may hold spaces and parentheses; the state
   * is the first bytes.split() field after the last ')'. */
  char *rp = memrchr(buf, ')', len);
  size_t i = rp ? (size_t)(rp - buf) + 1 : 0;
  while (i < len && (buf[i] == ' ' || (buf[i] >= '\t' && buf[i] <= '\r')))
    i++;
  size_t j = i;
  while (j < len && !(buf[j] == ' ' || (buf[j] >= '\t' && buf[j] <= '\r')))
    j++;
  int zombie = j - i == 1 && buf[i] == 'Z';
  free(buf);
  return !zombie;
}

/* ---------------------------------------------------------------- files */

SHOAL_EXPORT long shoal_util_estimate_fd_for_directory(const char *path) {
  if (!path) return 0;
  long n = count_entries(path);
  return n > 0 ? FD_PER_RSYNC * n : 0;
}

SHOAL_EXPORT int shoal_util_find_free_port(int start_port) {
  /* bind(('', port)) of a negative port: OverflowError */
  if (start_port < 0) return SHOAL_EINVAL;
  for (int port = start_port; port < 65535; port++) {
    /* Python's socket(AF_INET, SOCK_STREAM): close-on-exec, no
     * SO_REUSEADDR, so a port in TIME_WAIT counts as taken, as upstream */
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) return -errno;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    a.sin_port = htons((uint16_t)port);
    int ok = bind(s, (struct sockaddr *)&a, sizeof a) == 0;
    close(s);
    if (ok) return port;
  }
  return -EADDRINUSE;
}

/* ------------------------------------------------------------ lines */

int shoal__lines_pack(size_t n, const char *const *line, const char *base,
                      const size_t *off, const size_t *len, shoal_lines **out) {
  if (!out) return SHOAL_EINVAL;
  *out = NULL;
  if (n && (!len || (!line && (!base || !off)))) return SHOAL_EINVAL;
  /* [shoal_lines][line pointers][lengths][bytes, each + NUL] */
  size_t head = sizeof(shoal_lines), bytes = 0;
  if (n > (SIZE_MAX - head) / (sizeof(char *) + sizeof(size_t)))
    return SHOAL_ETOOBIG;
  head += n * (sizeof(char *) + sizeof(size_t));
  for (size_t i = 0; i < n; i++) {
    if (len[i] >= SIZE_MAX - head - bytes) return SHOAL_ETOOBIG;
    bytes += len[i] + 1;
  }
  char *mem = malloc(head + bytes);
  if (!mem) return -ENOMEM;
  shoal_lines *l = (shoal_lines *)mem;
  const char **lp = (const char **)(mem + sizeof(shoal_lines));
  size_t *ln = (size_t *)(lp + n);
  char *dst = mem + head;
  for (size_t i = 0; i < n; i++) {
    const char *src = line ? line[i] : base + off[i];
    if (len[i]) memcpy(dst, src, len[i]);
    dst[len[i]] = '\0';
    lp[i] = dst;
    ln[i] = len[i];
    dst += len[i] + 1;
  }
  l->n = n;
  l->line = lp;
  l->len = ln;
  *out = l;
  return 0;
}

int shoal__lines_from_futil(const futil_lines *fl, shoal_lines **out) {
  return shoal__lines_pack(fl->n, NULL, fl->buf, fl->off, fl->len, out);
}

SHOAL_EXPORT void shoal_lines_free(shoal_lines *l) {
  free(l); /* one allocation: shoal__lines_pack */
}

SHOAL_EXPORT int shoal_util_read_last_n_lines(const char *path, size_t n,
                                              size_t chunk_size,
                                              shoal_lines **out) {
  if (!out) return SHOAL_EINVAL;
  *out = NULL;
  if (!path || chunk_size == 0) return SHOAL_EINVAL;
  if (n == 0) {
    /* upstream asserts the path exists, then returns [] unread */
    struct stat st;
    if (stat(path, &st) < 0) return -errno;
    return shoal__lines_pack(0, NULL, NULL, NULL, NULL, out);
  }
  /* O_NONBLOCK: a FIFO opens at once and is refused as SHOAL_ENOTREG */
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) return -errno;
  futil_lines fl;
  int rc = futil_tail_fd(fd, n, chunk_size, 0, &fl);
  close(fd);
  if (rc) return rc;
  rc = shoal__lines_from_futil(&fl, out);
  futil_lines_free(&fl);
  return rc;
}

SHOAL_EXPORT int shoal_util_hash_file(const char *path, const char *alg,
                                      size_t digest_len, void *digest,
                                      size_t cap) {
  int id;
  size_t len;
  if (!path || !digest) return SHOAL_EINVAL;
  int rc = futil_hash_parse(alg, digest_len, &id, &len, NULL, 0);
  if (rc) return rc;
  if (cap < len) return SHOAL_ETOOBIG;
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) return -errno;
  rc = futil_hash_fd(fd, id, len, digest, NULL);
  close(fd);
  return rc ? rc : (int)len;
}
