/*
 * rawframe.h - raw frames of the broker protocol for the tests that speak
 * it without libshoal (DESIGN.md section 6: a u32 little-endian length,
 * then a protobuf-c message): the integration tests' raw client
 * (itest-raw.c), broker-torture and shoal-load. No test framework here, so
 * programs that do not use check can link it; the callers decide what a
 * failure means.
 */
#ifndef SHOAL_TESTS_RAWFRAME_H
#define SHOAL_TESTS_RAWFRAME_H

#include <stddef.h>
#include <stdint.h>

#include "shoal.pb-c.h"

/* Bytes of @req as one frame. */
size_t rf_size(const Shoal__Request *req);
/* Pack @req as one frame into @out; returns its size, or 0 (nothing
 * written) when it needs more than @cap bytes. */
size_t rf_pack(const Shoal__Request *req, uint8_t *out, size_t cap);
/* Write all of @p/@n (MSG_NOSIGNAL, EINTR retried): 0 or -errno (EPIPE
 * when the broker closed). */
int rf_write(int fd, const void *p, size_t n);
/* The Hello of a raw client: protocol v1, this process's pid, no reader
 * slot (want_slot = false), @client as its name. */
Shoal__Hello rf_hello_msg(const char *client);
/* One Response within @timeout_ms, or NULL with *why (if given): "eof"
 * (also ECONNRESET), "timeout", "frame over 64 MiB", "short frame",
 * "unpack", "out of memory". Free with shoal__response__free_unpacked. */
Shoal__Response *rf_recv(int fd, int timeout_ms, const char **why);

#endif
