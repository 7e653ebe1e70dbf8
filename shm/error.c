/*
 * error.c - shoal_strerror() and shoal_errname(), generated from the one
 * X-macro in shoal/error.h (libuv's UV_ERRNO_MAP pattern).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shoal/error.h"

SHOAL_EXPORT const char *shoal_strerror(int err) {
  switch (err) {
  case 0:
    return "success";
#define SHOAL__XX(name, off, msg)                                              \
  case SHOAL_##name:                                                           \
    return msg;
    SHOAL_ERRNO_MAP(SHOAL__XX)
#undef SHOAL__XX
  default:
    break;
  }
  if (err < 0 && err > -4096) {
    /* strerror() is not thread-safe in general; glibc's strerrordesc_np is
     * (a static table) and returns NULL for unknown values. */
    const char *m = strerrordesc_np(-err);
    if (m) return m;
  }
  return "unknown error";
}

SHOAL_EXPORT const char *shoal_errname(int err) {
  switch (err) {
  case 0:
    return "OK";
#define SHOAL__XX(name, off, msg)                                              \
  case SHOAL_##name:                                                           \
    return #name;
    SHOAL_ERRNO_MAP(SHOAL__XX)
#undef SHOAL__XX
  default:
    break;
  }
  if (err < 0 && err > -4096) {
    const char *n = strerrorname_np(-err);
    if (n) return n;
  }
  return "EUNKNOWN";
}

/* SHM_NEVER's failure path in debug builds (shm-internal.h). */
void shm__never(const char *file, int line, const char *what)
    __attribute__((noreturn));
void shm__never(const char *file, int line, const char *what) {
  fprintf(stderr, "%s:%d: cannot happen: %s\n", file, line, what);
  abort();
}
