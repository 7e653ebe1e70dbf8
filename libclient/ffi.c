/*
 * ffi.c - helpers for foreign-function callers (the "FFI helpers" section
 * of shoal.h); libclient/python's ctypes binding is the user.
 *
 * Why they exist: through ctypes every call pays a fixed price (argument
 * conversion, ffi_prep_cif, the result object: 100-150 ns for three
 * arguments on the 2-core test VM), each out-parameter needs a ctypes
 * object, slicing a value out of a buffer is one more Python operation,
 * and a C callback into Python costs a microsecond. A get itself is ~50 ns
 * when cached, ~270 ns for a random key of 100K. So these helpers:
 *   - take one caller-owned parameter block (shoal_ffi_buf: handle, output
 *     buffer, the out-fields a get needs) instead of 5-7 arguments;
 *   - can return the caller's own object (shoal_ffi_get_bytes: the value
 *     copied once, straight into a new Python bytes, by a constructor the
 *     caller hands in), so a Python get is one call and nothing else;
 *   - do a whole get_many in one call: keys packed in one buffer, values
 *     packed into another, one snapshot;
 *   - page a scan into the output buffer instead of calling back per key.
 * They are written on top of the public API only (no client internals),
 * so they follow its rules: one thread per handle, sections nest.
 *
 * Closing: a binding invalidates a handle by setting x->c to NULL before
 * shoal_close; every helper then answers SHOAL_ECLOSED.
 */
#include <string.h>

#include "shoal/shoal.h"

/* Keys go to shoal_get_many in groups of this many: a multiple of its
 * prefetch pipeline's depth, and small enough for the stack. */
#define FFI_CHUNK 128

SHOAL_EXPORT int shoal_ffi_get(shoal_ffi_buf *x, const void *key, int klen) {
  if (!x || klen < 0) return SHOAL_EINVAL;
  if (!x->c) return SHOAL_ECLOSED;
  size_t len;
  x->need = 0;
  int err = shoal_get_copy(x->c, key, (size_t)klen, x->buf, x->cap, &len,
                           &x->version);
  if (err == 0) return (int)len; /* len <= shoal_value_max() < 2^31 */
  if (err == SHOAL_ETOOBIG && len > x->cap) x->need = len;
  return err;
}

SHOAL_EXPORT int shoal_ffi_get_view(shoal_ffi_buf *x, const void *key,
                                    int klen) {
  if (!x || klen < 0) return SHOAL_EINVAL;
  if (!x->c) return SHOAL_ECLOSED;
  shoal_val v;
  int err = shoal_get(x->c, key, (size_t)klen, &v);
  if (err) return err;
  x->at = (uint64_t)(uintptr_t)v.data - x->base;
  x->version = v.version;
  return (int)v.len;
}

/* The caller's object for a code; never called with a NULL @x->code by a
 * caller that follows shoal.h, but a NULL is better than a jump to 0. */
static void *code_obj(shoal_ffi_buf *x, int err) {
  return x->code ? x->code(err) : NULL;
}

SHOAL_EXPORT void *shoal_ffi_get_bytes(shoal_ffi_buf *x, const void *key,
                                       int klen) {
  if (!x) return NULL;
  if (!x->c) return code_obj(x, SHOAL_ECLOSED);
  if (klen < 0 || !x->bytes) return code_obj(x, SHOAL_EINVAL);
  int err = shoal_read_begin(x->c);
  if (err) return code_obj(x, err);
  shoal_val v;
  void *obj;
  err = shoal_get(x->c, key, (size_t)klen, &v);
  if (err == 0) {
    x->version = v.version;
    /* copied inside the section: the value can not be reclaimed meanwhile */
    obj = x->bytes(v.data, (ptrdiff_t)v.len);
  } else {
    obj = code_obj(x, err);
  }
  shoal_read_end(x->c);
  return obj;
}

/* SHOAL_ENOSECTION when @c has no section open, else 0 (a get_many of no
 * keys checks exactly that, and nothing else). */
static int in_section(shoal *c) {
  int r = shoal_get_many(c, 0, NULL, NULL, NULL);
  return r < 0 ? r : 0;
}

SHOAL_EXPORT int shoal_ffi_get_many(shoal_ffi_buf *x, size_t n,
                                    const void *keys, const size_t *klens,
                                    uint64_t *start, uint64_t *end, int *status,
                                    int views) {
  if (!x) return SHOAL_EINVAL;
  if (!x->c) return SHOAL_ECLOSED;
  if (n && (!keys || !klens || !start || !end || !status)) return SHOAL_EINVAL;
  int err;
  if (views && (err = in_section(x->c)) != 0) return err;
  /* nestable: inside the caller's section this shares its snapshot */
  if ((err = shoal_read_begin(x->c)) != 0) return err;
  shoal_key k[FFI_CHUNK];
  shoal_val v[FFI_CHUNK];
  const char *kp = keys;
  char *out = x->buf;
  size_t used = 0;
  int found = 0;
  x->need = 0;
  for (size_t i = 0; i < n && !err; i += FFI_CHUNK) {
    size_t m = n - i < FFI_CHUNK ? n - i : FFI_CHUNK;
    for (size_t j = 0; j < m; j++) {
      k[j].data = kp;
      k[j].len = klens[i + j];
      kp += klens[i + j];
    }
    int r = shoal_get_many(x->c, m, k, v, status + i);
    if (r < 0) {
      err = r;
      break;
    }
    found += r;
    for (size_t j = 0; j < m; j++) {
      uint64_t *s = &start[i + j], *e = &end[i + j];
      *s = *e = 0;
      if (status[i + j]) continue;
      if (views) {
        *s = (uint64_t)(uintptr_t)v[j].data - x->base;
        *e = *s + v[j].len;
        continue;
      }
      /* past the end of @buf: keep counting what it would take */
      if (used <= x->cap && v[j].len <= x->cap - used && v[j].len)
        memcpy(out + used, v[j].data, v[j].len);
      *s = used;
      used += v[j].len;
      *e = used;
    }
  }
  shoal_read_end(x->c);
  if (err) return err;
  if (!views && used > x->cap) {
    x->need = used;
    return SHOAL_ETOOBIG;
  }
  return found;
}

struct scan_page {
  shoal_ffi_buf *x;
  uint64_t *meta;
  size_t max, n, used, need;
  int views, more;
};

/* The shoal_scan callback: copy one item into the page, or stop (1). */
static int scan_one(void *arg, const void *key, size_t klen,
                    const shoal_val *val) {
  struct scan_page *p = arg;
  size_t room = p->x->cap - p->used;
  size_t size = klen + (p->views ? 0 : val->len);
  if (p->n == p->max || size > room) {
    p->more = 1;
    if (p->n == 0) p->need = size; /* not even the first item fits */
    return 1;
  }
  char *out = (char *)p->x->buf + p->used;
  uint64_t *m = p->meta + 5 * p->n;
  if (klen) memcpy(out, key, klen);
  m[0] = p->used;
  m[1] = p->used + klen;
  p->used += klen;
  if (p->views) {
    m[2] = (uint64_t)(uintptr_t)val->data - p->x->base;
    m[3] = m[2] + val->len;
  } else {
    if (val->len) memcpy(out + klen, val->data, val->len);
    m[2] = p->used;
    m[3] = p->used + val->len;
    p->used += val->len;
  }
  m[4] = val->version;
  p->n++;
  return 0;
}

SHOAL_EXPORT int shoal_ffi_scan(shoal_ffi_buf *x, const void *s, size_t slen,
                                const void *e, size_t elen, size_t max,
                                uint64_t *meta, int views, int *more) {
  if (more) *more = 0;
  if (!x) return SHOAL_EINVAL;
  if (!x->c) return SHOAL_ECLOSED;
  if (!meta || !more || !max || (!x->buf && x->cap)) return SHOAL_EINVAL;
  int err;
  if (views && (err = in_section(x->c)) != 0) return err;
  struct scan_page p = {.x = x, .meta = meta, .max = max, .views = views};
  x->need = 0;
  err = shoal_scan(x->c, slen ? s : NULL, slen, elen ? e : NULL, elen, scan_one,
                   &p);
  if (err < 0) return err;
  if (p.need) {
    x->need = p.need;
    return SHOAL_ETOOBIG;
  }
  *more = p.more;
  return (int)p.n;
}
