/*
 * itest-raw.h - a raw protocol client for the integration tests: frames
 * built and parsed with protoc-c's generated code (shoal_proto), sent over
 * a plain Unix socket, so tests can send what libshoal never would
 * (garbage, oversized frames, requests before Hello, unknown types) and use
 * the request types libshoal does not expose (broker-side Get and Scan).
 */
#ifndef SHOAL_TESTS_ITEST_RAW_H
#define SHOAL_TESTS_ITEST_RAW_H

#include <stddef.h>
#include <stdint.h>

#include "shoal.pb-c.h"

/* Connect to @path (NULL: the test's socket); fails the test on error. */
int it_raw_connect(const char *path);
/* Write all of @p/@n; 0 or -errno (EPIPE when the broker closed). */
int it_raw_write(int fd, const void *p, size_t n);
/* Send @req as one frame (u32 LE length + message). */
int it_raw_send(int fd, const Shoal__Request *req);
/* Receive one Response within @timeout_ms; NULL on EOF, error or timeout
 * (*why, if given, receives "eof", "timeout", "short frame", "unpack").
 * Free with shoal__response__free_unpacked(r, NULL). */
Shoal__Response *it_raw_recv(int fd, int timeout_ms, const char **why);
/* Send and receive; fails the test when no reply comes. */
Shoal__Response *it_raw_call(int fd, const Shoal__Request *req);
/* 1 if the broker closes the connection within @timeout_ms (reads return 0
 * or ECONNRESET; any bytes still in flight are skipped), else 0. */
int it_raw_closed(int fd, int timeout_ms);
/* Hello with this process's pid and want_slot = false; returns the status
 * of the reply (fails the test when there is none). */
int it_raw_hello(int fd);

#endif
