/*
 * shoal/error.h - the one error scheme of shoal (DESIGN.md section 7).
 *
 * Every shoal function that can fail returns an int: 0 on success, a negative
 * code on failure. Codes come from two bands:
 *   - system failures are -errno (e.g. -ENOMEM, -EACCES), as libuv does;
 *   - shoal's own conditions are SHOAL_E* values below SHOAL__EBASE, far from
 *     any errno, so the two can never collide.
 * The enum, shoal_strerror() and shoal_errname() are all generated from the
 * single X-macro SHOAL_ERRNO_MAP below: add a code there and nowhere else.
 * Messages name the cause and, where there is one, the fix.
 */
#ifndef SHOAL_ERROR_H
#define SHOAL_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

#if defined(SHOAL_BUILDING) && defined(__GNUC__)
#define SHOAL_EXPORT __attribute__((visibility("default")))
#else
#define SHOAL_EXPORT
#endif

/* Far below every errno (Linux errnos stay under 4096). */
#define SHOAL__EBASE (-30000)

/* XX(name, offset, message) */
#define SHOAL_ERRNO_MAP(XX)                                                    \
  XX(ENOTFOUND, 1, "key not found")                                            \
  XX(ECONFLICT, 2,                                                             \
     "version conflict: the key changed since the expected version; read it " \
     "again and retry")                                                        \
  XX(ENOSPC, 3,                                                                \
     "no space left in the store: its --size is used up or its tmpfs "        \
     "(/dev/shm) is full; delete keys, free tmpfs space, or recreate the "     \
     "store with a larger --size")                                             \
  XX(ETOOBIG, 4,                                                               \
     "key or value too large: keys are at most shoal_key_max() bytes and "     \
     "values at most shoal_value_max() bytes")                                 \
  XX(ECORRUPT, 5,                                                              \
     "the shared segment is corrupt (an offset or length is out of range); "   \
     "run shoal-inspect --check and recreate the store")                       \
  XX(EVERSION, 6,                                                              \
     "segment format or protocol version mismatch: the store was created by "  \
     "an incompatible shoal build; upgrade the client or recreate the store")  \
  XX(ECLOSED, 7, "the handle or connection is closed")                         \
  XX(EFORKED, 8,                                                               \
     "handle used after fork(): a child process must open its own handle")     \
  XX(EPROTOCOL, 9, "protocol error: malformed or unexpected message")          \
  XX(EDENIED, 10,                                                              \
     "access denied: the broker does not allow this uid/gid; start shoald "    \
     "with --allow-uid or --allow-gid")                                        \
  XX(ETIMEOUT, 11, "timed out")                                                \
  XX(EINVAL, 12, "invalid argument")                                           \
  XX(ELOCKED, 13,                                                              \
     "the store already has a writer (another shoald owns it); stop that "     \
     "broker first or use another --name")                                     \
  XX(ENOREADERS, 14,                                                           \
     "all reader slots are in use; close idle handles or recreate the store "  \
     "with more reader slots")                                                 \
  XX(ENOSECTION, 15,                                                           \
     "not inside a read section: call shoal_read_begin() first")               \
  XX(EBUSY, 16, "the store is busy (a reader still holds a snapshot)")         \
  XX(EUNAVAIL, 17,                                                             \
     "the broker is not running or not reachable; start shoald (reads from "   \
     "an open handle keep working)")                                            \
  XX(ENOTREG, 18,                                                              \
     "not a regular file: hashing and tailing need a regular file, not a "     \
     "directory, FIFO, socket or device")                                      \
  XX(ECHANGED, 19,                                                             \
     "the file changed while it was being read (truncated or rewritten); "     \
     "retry once it is quiet")

typedef enum shoal_errno {
  SHOAL_OK = 0,
#define SHOAL__XX(name, off, msg) SHOAL_##name = SHOAL__EBASE - (off),
  SHOAL_ERRNO_MAP(SHOAL__XX)
#undef SHOAL__XX
} shoal_errno;

/*
 * shoal_strerror - a human-readable message for any shoal return code.
 * @err: 0, a SHOAL_E* code or a -errno value.
 * Returns a static string (never NULL); unknown codes get a generic message.
 * Thread-safe.
 */
SHOAL_EXPORT const char *shoal_strerror(int err);

/*
 * shoal_errname - the symbolic name of a code without the SHOAL_ prefix,
 * e.g. "ENOTFOUND", or the errno name for -errno ("ENOMEM"), "OK" for 0,
 * "EUNKNOWN" otherwise. Stable across releases: bindings map on it.
 */
SHOAL_EXPORT const char *shoal_errname(int err);

#ifdef __cplusplus
}
#endif
#endif /* SHOAL_ERROR_H */
