/*
 * futil.c - whole-file hashing and tail-from-the-end for the broker and
 * libshoal (see futil.h for the API and its guarantees).
 *
 * Hashing: fstat, then pread from offset 0 until pread returns 0 in
 * FUTIL_HASH_BUF pieces (posix_fadvise SEQUENTIAL doubles the kernel's
 * readahead), fed to libsodium's streaming API (its BLAKE2b picks the
 * AVX2/SSSE3 code at sodium_init). Then fstat again: the digest is good
 * only if the size, mtime and ctime did not move and exactly st_size bytes
 * were read; otherwise the file is read again. A writer that finishes
 * within the same timestamp tick as our read can still slip through; the
 * ctime check catches every write that lands after the first fstat on
 * file systems with fine-grained timestamps, which is the best fstat-based
 * validation can do.
 *
 * Tail: the data is collected backwards into one buffer whose filled part
 * sits at its end ([cap - have, cap)); each pread prepends a chunk. It
 * doubles when a chunk does not fit, so copying costs O(bytes read).
 * Reading stops once the first wanted line is known to be complete: the
 * lines are the last n pieces of the data split on '\n', after dropping
 * the empty piece a trailing '\n' leaves, so n newlines must be seen before
 * the end (n + 1 when the data ends with '\n'). read_last_n_lines goes on
 * until it has seen n + 1 in either case; the extra bytes it reads only
 * add pieces it then discards, so the result is the same.
 */
#include "futil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "shoal/error.h"

/* ---------------------------------------------------------------- hashing */

int futil_hash_parse(const char *alg, size_t digest_len, int *alg_id,
                     size_t *out_len, char *err, size_t errcap) {
  static const char valid[] =
      "valid: blake2b (digest length 16..64 bytes, default 32), sha256 "
      "(32), sha512 (64)";
  int id;
  size_t def, lo, hi;
  if (!alg || !*alg || strcmp(alg, "blake2b") == 0) {
    id = FUTIL_BLAKE2B;
    def = crypto_generichash_BYTES; /* 32 */
    lo = crypto_generichash_BYTES_MIN;
    hi = crypto_generichash_BYTES_MAX;
  } else if (strcmp(alg, "sha256") == 0) {
    id = FUTIL_SHA256;
    def = lo = hi = crypto_hash_sha256_BYTES;
  } else if (strcmp(alg, "sha512") == 0) {
    id = FUTIL_SHA512;
    def = lo = hi = crypto_hash_sha512_BYTES;
  } else {
    if (err && errcap)
      snprintf(err, errcap, "unknown hash algorithm \"%.64s\"; %s", alg, valid);
    return SHOAL_EINVAL;
  }
  size_t len = digest_len ? digest_len : def;
  if (len < lo || len > hi) {
    if (err && errcap)
      snprintf(err, errcap, "digest length %zu is not valid for %s; %s",
               digest_len, futil_hash_name(id), valid);
    return SHOAL_EINVAL;
  }
  *alg_id = id;
  *out_len = len;
  if (err && errcap) err[0] = '\0';
  return 0;
}

const char *futil_hash_name(int alg_id) {
  switch (alg_id) {
  case FUTIL_BLAKE2B:
    return "blake2b";
  case FUTIL_SHA256:
    return "sha256";
  case FUTIL_SHA512:
    return "sha512";
  default:
    return "?";
  }
}

/* One streaming state of any of the algorithms. */
typedef struct hash_state {
  int alg;
  union {
    crypto_generichash_state b2;
    crypto_hash_sha256_state s256;
    crypto_hash_sha512_state s512;
  } u;
} hash_state;

static void hash_init(hash_state *h, int alg, size_t len) {
  h->alg = alg;
  switch (alg) {
  case FUTIL_BLAKE2B:
    crypto_generichash_init(&h->u.b2, NULL, 0, len);
    break;
  case FUTIL_SHA256:
    crypto_hash_sha256_init(&h->u.s256);
    break;
  default:
    crypto_hash_sha512_init(&h->u.s512);
    break;
  }
}

static void hash_update(hash_state *h, const uint8_t *p, size_t n) {
  switch (h->alg) {
  case FUTIL_BLAKE2B:
    crypto_generichash_update(&h->u.b2, p, n);
    break;
  case FUTIL_SHA256:
    crypto_hash_sha256_update(&h->u.s256, p, n);
    break;
  default:
    crypto_hash_sha512_update(&h->u.s512, p, n);
    break;
  }
}

static void hash_final(hash_state *h, uint8_t *out, size_t len) {
  switch (h->alg) {
  case FUTIL_BLAKE2B:
    crypto_generichash_final(&h->u.b2, out, len);
    break;
  case FUTIL_SHA256:
    crypto_hash_sha256_final(&h->u.s256, out);
    break;
  default:
    crypto_hash_sha512_final(&h->u.s512, out);
    break;
  }
}

static int hash_len_ok(int alg_id, size_t len) {
  switch (alg_id) {
  case FUTIL_BLAKE2B:
    return len >= crypto_generichash_BYTES_MIN &&
           len <= crypto_generichash_BYTES_MAX;
  case FUTIL_SHA256:
    return len == crypto_hash_sha256_BYTES;
  case FUTIL_SHA512:
    return len == crypto_hash_sha512_BYTES;
  default:
    return 0;
  }
}

/* pread that retries EINTR: bytes read (0 at EOF) or -errno. */
static ssize_t pread_eintr(int fd, void *buf, size_t len, off_t off) {
  for (;;) {
    ssize_t r = pread(fd, buf, len, off);
    if (r >= 0) return r;
    if (errno != EINTR) return -errno;
  }
}

static int same_version(const struct stat *a, const struct stat *b) {
  return a->st_size == b->st_size && a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
         a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
         a->st_ctim.tv_sec == b->st_ctim.tv_sec &&
         a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

int futil_hash_fd(int fd, int alg_id, size_t len, uint8_t *out,
                  struct stat *st) {
  if (!out || !hash_len_ok(alg_id, len)) return SHOAL_EINVAL;
  /* Selects the SIMD implementations; idempotent and thread-safe. */
  if (sodium_init() < 0) return -ENOMEM;

  struct stat before, after;
  if (fstat(fd, &before) < 0) return -errno;
  if (!S_ISREG(before.st_mode)) return SHOAL_ENOTREG;

  uint8_t *buf = malloc(FUTIL_HASH_BUF);
  if (!buf) return -ENOMEM;
  /* crypto_generichash_state wants 64-byte alignment. */
  alignas(64) hash_state h;
  int rc = SHOAL_ECHANGED;
  for (int attempt = 0; attempt < FUTIL_HASH_ATTEMPTS; attempt++) {
    if (attempt > 0 && fstat(fd, &before) < 0) {
      rc = -errno;
      break;
    }
    /* Advice only: a failure changes nothing but speed. */
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    hash_init(&h, alg_id, len);
    off_t pos = 0;
    ssize_t r;
    while ((r = pread_eintr(fd, buf, FUTIL_HASH_BUF, pos)) > 0) {
      hash_update(&h, buf, (size_t)r);
      pos += r;
    }
    if (r < 0) {
      rc = (int)r;
      break;
    }
    if (fstat(fd, &after) < 0) {
      rc = -errno;
      break;
    }
    if (pos == before.st_size && same_version(&before, &after)) {
      hash_final(&h, out, len);
      if (st) *st = after;
      rc = 0;
      break;
    }
  }
  free(buf);
  return rc;
}

/* ------------------------------------------------------------------ tail */

void futil_lines_free(futil_lines *l) {
  if (!l) return;
  free(l->buf);
  free(l->off); /* l->len points into the same block */
  memset(l, 0, sizeof *l);
}

static size_t count_nl(const char *p, size_t n) {
  size_t c = 0;
  const char *end = p + n;
  while (p < end && (p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
    c++;
    p++;
  }
  return c;
}

/* Start of the last @n pieces of [d, d + e) split on '\n' (0 when there are
 * no more than n pieces). */
static size_t last_pieces_start(const char *d, size_t e, size_t n) {
  size_t i = e;
  while (i > 0) {
    const char *nl = memrchr(d, '\n', i);
    if (!nl) return 0;
    i = (size_t)(nl - d);
    if (--n == 0) return i + 1;
  }
  return 0;
}

int futil_tail_fd(int fd, size_t n, size_t chunk, size_t max_bytes,
                  futil_lines *out) {
  if (!out) return SHOAL_EINVAL;
  memset(out, 0, sizeof *out);
  if (chunk == 0) return SHOAL_EINVAL;
  struct stat st;
  if (fstat(fd, &st) < 0) return -errno;
  if (!S_ISREG(st.st_mode)) return SHOAL_ENOTREG;
  uint64_t size = (uint64_t)st.st_size;
  out->start = out->end = size;
  if (n == 0 || size == 0) return 0;

  char *buf = NULL;
  size_t cap = 0, have = 0; /* the data is buf[cap - have, cap) */
  uint64_t pos = size;      /* file offset of the data's first byte */
  size_t nl = 0;            /* newlines in the data */
  size_t need_nl = 0;       /* newlines that make the first line complete */
  int ends_nl = 0, rc = 0;
  for (;;) {
    size_t take = chunk < pos ? chunk : (size_t)pos;
    /* Read no more than one byte past the limit: that byte proves it. */
    if (max_bytes && have + take > max_bytes + 1) take = max_bytes + 1 - have;
    if (have + take > cap) {
      size_t ncap = cap ? cap : 4096;
      while (ncap < have + take)
        ncap = ncap > SIZE_MAX / 2 ? have + take : ncap * 2;
      char *nb = malloc(ncap);
      if (!nb) {
        rc = -ENOMEM;
        goto fail;
      }
      if (have) memcpy(nb + ncap - have, buf + cap - have, have);
      free(buf);
      buf = nb;
      cap = ncap;
    }
    char *dst = buf + cap - have - take;
    for (size_t got = 0; got < take;) {
      ssize_t r =
          pread_eintr(fd, dst + got, take - got, (off_t)(pos - take + got));
      if (r < 0) {
        rc = (int)r;
        goto fail;
      }
      if (r == 0) { /* the file shrank under us */
        rc = SHOAL_ECHANGED;
        goto fail;
      }
      got += (size_t)r;
    }
    if (have == 0) {
      ends_nl = dst[take - 1] == '\n';
      need_nl = ends_nl ? n + 1 : n;
    }
    have += take;
    pos -= take;
    nl += count_nl(dst, take);
    if (nl >= need_nl || pos == 0) break;
    /* The first wanted line starts before pos: all of these are needed. */
    if (max_bytes && have > max_bytes) {
      rc = SHOAL_ETOOBIG;
      goto fail;
    }
  }

  const char *d = buf + cap - have;
  size_t e = ends_nl ? have - 1 : have; /* drop the trailing empty piece */
  size_t s = last_pieces_start(d, e, n);
  size_t used = have - s;
  if (max_bytes && used > max_bytes) {
    rc = SHOAL_ETOOBIG;
    goto fail;
  }
  size_t lines = count_nl(d + s, e - s) + 1;
  out->off = malloc(2 * lines * sizeof(size_t));
  if (!out->off) {
    rc = -ENOMEM;
    goto fail;
  }
  out->len = out->off + lines;
  memmove(buf, d + s, used); /* only what is returned stays */
  out->buf = buf;
  out->n = lines;
  out->start = pos + s;
  out->partial = !ends_nl;
  size_t at = 0, stop = e - s;
  for (size_t i = 0; i < lines; i++) {
    const char *nlp = memchr(buf + at, '\n', stop - at);
    size_t l = nlp ? (size_t)(nlp - (buf + at)) : stop - at;
    out->off[i] = at;
    out->len[i] = l;
    at += l + 1;
  }
  return 0;

fail:
  free(buf);
  memset(out, 0, sizeof *out);
  return rc;
}

int futil_split_lines(const char *buf, size_t len, futil_line_fn fn, void *arg,
                      size_t *consumed) {
  size_t at = 0;
  int rc = 0;
  while (at < len) {
    const char *nl = memchr(buf + at, '\n', len - at);
    if (!nl) break;
    size_t l = (size_t)(nl - (buf + at));
    rc = fn(arg, buf + at, l);
    at += l + 1;
    if (rc) break;
  }
  if (consumed) *consumed = at;
  return rc;
}
