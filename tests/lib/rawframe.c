/*
 * rawframe.c - raw protocol frames for the tests (see rawframe.h).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "rawframe.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RF_MAX_FRAME (64u << 20)

static uint64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

size_t rf_size(const Shoal__Request *req) {
  return shoal__request__get_packed_size(req) + 4;
}

size_t rf_pack(const Shoal__Request *req, uint8_t *out, size_t cap) {
  size_t n = shoal__request__get_packed_size(req);
  if (n + 4 > cap) return 0;
  out[0] = (uint8_t)n;
  out[1] = (uint8_t)(n >> 8);
  out[2] = (uint8_t)(n >> 16);
  out[3] = (uint8_t)(n >> 24);
  shoal__request__pack(req, out + 4);
  return n + 4;
}

int rf_write(int fd, const void *p, size_t n) {
  const char *b = p;
  while (n) {
    ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return -errno;
    b += w;
    n -= (size_t)w;
  }
  return 0;
}

Shoal__Hello rf_hello_msg(const char *client) {
  Shoal__Hello h = SHOAL__HELLO__INIT;
  h.has_protocol = 1;
  h.protocol = SHOAL__PROTOCOL__PROTOCOL_V1;
  h.has_pid = 1;
  h.pid = (int32_t)getpid();
  h.has_want_slot = 1;
  h.want_slot = 0;
  h.client = (char *)client;
  return h;
}

/* Read exactly @n bytes before @deadline: 1 done, 0 EOF, -1 timeout/error. */
static int read_full(int fd, void *p, size_t n, uint64_t deadline) {
  char *b = p;
  while (n) {
    int64_t left = (int64_t)deadline - (int64_t)mono_ms();
    if (left <= 0) return -1;
    struct pollfd pfd = {fd, POLLIN, 0};
    int r = poll(&pfd, 1, (int)left);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    ssize_t got = read(fd, b, n);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0 && errno == ECONNRESET) return 0;
    if (got < 0) return -1;
    if (got == 0) return 0;
    b += got;
    n -= (size_t)got;
  }
  return 1;
}

Shoal__Response *rf_recv(int fd, int timeout_ms, const char **why) {
  uint64_t deadline = mono_ms() + (uint64_t)timeout_ms;
  uint8_t hdr[4];
  const char *dummy;
  if (!why) why = &dummy;
  int r = read_full(fd, hdr, 4, deadline);
  if (r <= 0) {
    *why = r == 0 ? "eof" : "timeout";
    return NULL;
  }
  uint32_t n = (uint32_t)hdr[0] | (uint32_t)hdr[1] << 8 |
               (uint32_t)hdr[2] << 16 | (uint32_t)hdr[3] << 24;
  if (n > RF_MAX_FRAME) {
    *why = "frame over 64 MiB";
    return NULL;
  }
  uint8_t *buf = malloc(n ? n : 1);
  if (!buf) {
    *why = "out of memory";
    return NULL;
  }
  r = read_full(fd, buf, n, deadline);
  if (r <= 0) {
    free(buf);
    *why = "short frame";
    return NULL;
  }
  Shoal__Response *resp = shoal__response__unpack(NULL, n, buf);
  free(buf);
  if (!resp) *why = "unpack";
  return resp;
}
