/*
 * futil.h - file reading shared by the broker (HashFile, TailLog, follow)
 * and libshoal (shoal_util_hash_file, shoal_util_read_last_n_lines):
 * hashing a whole file and taking its last lines from the end. Internal
 * (prefix futil_, hidden visibility): compiled once as the OBJECT library
 * shoal_futil and folded into libshoal and shoald.
 *
 * Every function works on a descriptor the caller opened (the broker gets
 * it by SCM_RIGHTS), reads with pread(2) only (the descriptor's offset is
 * neither used nor moved, so concurrent calls on one descriptor are safe),
 * and never blocks on anything but the file's own I/O. Regular files only:
 * anything else is SHOAL_ENOTREG, so a FIFO or a device can not hang a
 * worker thread. Return values are those of shoal/error.h: 0 or a negative
 * code (-errno of a failed read, SHOAL_E* otherwise).
 *
 * All functions are reentrant and thread-safe (no shared state but
 * libsodium's one-time initialisation).
 */
#ifndef SHOAL_FUTIL_H
#define SHOAL_FUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

/* ---------------------------------------------------------------- hashing */

/* Hash algorithms: those libsodium provides (BLAKE2b is computed by
 * futil.c itself, with results identical to crypto_generichash). */
enum futil_hash_alg {
  FUTIL_BLAKE2B = 1, /* unkeyed BLAKE2b, digest 16..64 bytes */
  FUTIL_SHA256 = 2,  /* crypto_hash_sha256, 32 bytes */
  FUTIL_SHA512 = 3,  /* crypto_hash_sha512, 64 bytes */
};

/* Longest digest (sha512, blake2b-512). */
#define FUTIL_HASH_MAX 64
/* Read size of futil_hash_fd: large enough that the system call costs
 * nothing beside the hashing, small enough to stay in L2. */
#define FUTIL_HASH_BUF (1u << 20)
/* Reads of a file that keeps changing before SHOAL_ECHANGED. */
#define FUTIL_HASH_ATTEMPTS 3

/*
 * futil_hash_parse - check an algorithm name and digest length.
 * @alg:        NULL, "" or "blake2b" (blake2b), "sha256" or "sha512".
 * @digest_len: 0 for the default (blake2b 32, sha256 32, sha512 64);
 *              blake2b takes 16..64, the others only their own length.
 * @alg_id:     receives FUTIL_*.
 * @out_len:    receives the digest length in bytes.
 * @err:        receives a message naming the valid choices on failure
 *              (may be NULL when @errcap is 0).
 * Returns 0, or SHOAL_EINVAL (unknown name or length).
 */
int futil_hash_parse(const char *alg, size_t digest_len, int *alg_id,
                     size_t *out_len, char *err, size_t errcap);

/* The lowercase name of FUTIL_* ("blake2b", "sha256", "sha512"), "?" for
 * anything else: for cache keys and messages. */
const char *futil_hash_name(int alg_id);

/*
 * futil_hash_fd - the digest of the whole regular file open at @fd, read
 * from offset 0 to its end (whatever the descriptor's offset).
 * @alg_id, @len: as futil_hash_parse returned them (not checked again
 *                beyond SHOAL_EINVAL for an impossible pair).
 * @out:          receives @len bytes.
 * @st:           receives the fstat(2) the digest belongs to: its st_size,
 *                st_mtim and st_ctim were the same before and after the
 *                read and st_size bytes were read (may be NULL). A cache
 *                keyed by (st_dev, st_ino, st_size, st_mtim, st_ctim, alg,
 *                len) can serve the digest again while fstat agrees.
 * A file that changes while it is read is read again, at most
 * FUTIL_HASH_ATTEMPTS times in all.
 * Returns 0, or SHOAL_ENOTREG (not a regular file), SHOAL_ECHANGED (it
 * kept changing), -errno of fstat/pread (EINTR is retried; -EBADF when @fd
 * was not opened for reading), -ENOMEM, SHOAL_EINVAL.
 */
int futil_hash_fd(int fd, int alg_id, size_t len, uint8_t *out,
                  struct stat *st);

/* ------------------------------------------------------------------ tail */

/*
 * The last lines of a file as read_last_n_lines (UTILITIES.md) splits
 * them: the data is split on '\n'; when it ends with '\n' the empty piece
 * after that newline is dropped; the last n pieces are the lines. A line
 * is raw bytes without its '\n' (a '\r' before it is kept, NUL bytes may
 * occur): decoding and rstrip('\r') are the caller's.
 *
 * Line i is buf + off[i], len[i] bytes; lines are in file order and
 * contiguous: off[0] == 0, and line i+1 starts just after line i's '\n'.
 * buf[0] is at file offset @start; @end is the file's size when it was
 * read (where a follower continues); @partial is 1 when the data did not
 * end with '\n' (the last line is still being written), else 0.
 */
typedef struct futil_lines {
  char *buf;
  size_t n;
  size_t *off;
  size_t *len;
  uint64_t start;
  uint64_t end;
  int partial;
} futil_lines;

/*
 * futil_tail_fd - the last @n lines of the regular file open at @fd.
 * Reads backwards from the end with pread in @chunk-byte pieces until
 * enough newlines are seen or the start is reached, so the cost depends on
 * @n and the lines' lengths, never on the file's size. The result does not
 * depend on @chunk.
 * @max_bytes: limit on the bytes the lines span (from the first line's
 *             start to the end of the file, newlines included); 0 means no
 *             limit. Reading stops as soon as the limit is known to be
 *             exceeded.
 * @out:       filled on success (free with futil_lines_free); zeroed on
 *             failure. @n == 0 or an empty file: 0 lines.
 * Returns 0, or SHOAL_EINVAL (@chunk 0), SHOAL_ENOTREG, SHOAL_ETOOBIG (over
 * @max_bytes), SHOAL_ECHANGED (the file shrank while it was read), -errno
 * of fstat/pread, -ENOMEM.
 */
int futil_tail_fd(int fd, size_t n, size_t chunk, size_t max_bytes,
                  futil_lines *out);

/* Free what futil_tail_fd allocated and zero @l (NULL or zeroed: no-op). */
void futil_lines_free(futil_lines *l);

/*
 * futil_split_lines - call @fn for every complete line of @buf (each
 * '\n'-terminated piece, passed without its '\n'), in order, for a
 * follower that reads appended data: the bytes after the last '\n' are a
 * partial line to keep until more data comes.
 * @consumed: receives the bytes delivered, '\n's included (the partial
 *            rest is buf + *consumed); when @fn stops the split, up to and
 *            including the line it stopped on.
 * Returns 0, or the first non-zero value @fn returned (the split stops).
 */
typedef int (*futil_line_fn)(void *arg, const char *line, size_t len);
int futil_split_lines(const char *buf, size_t len, futil_line_fn fn, void *arg,
                      size_t *consumed);

#endif /* SHOAL_FUTIL_H */
