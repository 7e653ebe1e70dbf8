/*
 * itest-raw.c - the raw protocol client of the integration tests (see
 * itest-raw.h).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "itest-raw.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "itest.h"

int it_raw_connect(const char *path) {
  if (!path) path = it_sock;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ck_assert_int_ge(fd, 0);
  struct sockaddr_un sa;
  it_sockaddr(&sa, path);
  ck_assert_msg(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0,
                "connect %s: %s", path, strerror(errno));
  return fd;
}

int it_raw_write(int fd, const void *p, size_t n) {
  const char *b = p;
  while (n) {
    ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    b += w;
    n -= (size_t)w;
  }
  return 0;
}

int it_raw_send(int fd, const Shoal__Request *req) {
  size_t n = shoal__request__get_packed_size(req);
  uint8_t *buf = malloc(n + 4);
  ck_assert_ptr_nonnull(buf);
  buf[0] = (uint8_t)n;
  buf[1] = (uint8_t)(n >> 8);
  buf[2] = (uint8_t)(n >> 16);
  buf[3] = (uint8_t)(n >> 24);
  shoal__request__pack(req, buf + 4);
  int rc = it_raw_write(fd, buf, n + 4);
  free(buf);
  return rc;
}

/* Read exactly @n bytes before @deadline: 1 done, 0 EOF, -1 timeout/error. */
static int read_full(int fd, void *p, size_t n, uint64_t deadline) {
  char *b = p;
  while (n) {
    int64_t left = (int64_t)deadline - (int64_t)it_now_ms();
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

Shoal__Response *it_raw_recv(int fd, int timeout_ms, const char **why) {
  uint64_t deadline = it_now_ms() + (uint64_t)timeout_ms;
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
  if (n > (64u << 20)) {
    *why = "frame over 64 MiB";
    return NULL;
  }
  uint8_t *buf = malloc(n ? n : 1);
  ck_assert_ptr_nonnull(buf);
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

Shoal__Response *it_raw_call(int fd, const Shoal__Request *req) {
  int rc = it_raw_send(fd, req);
  ck_assert_msg(rc == 0, "send: %s", strerror(-rc));
  const char *why = "";
  Shoal__Response *r = it_raw_recv(fd, 5000, &why);
  ck_assert_msg(r != NULL, "no reply to request %d: %s", (int)req->body_case,
                why);
  return r;
}

int it_raw_closed(int fd, int timeout_ms) {
  uint64_t deadline = it_now_ms() + (uint64_t)timeout_ms;
  for (;;) {
    int64_t left = (int64_t)deadline - (int64_t)it_now_ms();
    if (left <= 0) return 0;
    struct pollfd pfd = {fd, POLLIN, 0};
    int r = poll(&pfd, 1, (int)left);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) return 0;
    char buf[4096];
    ssize_t got = read(fd, buf, sizeof buf);
    if (got == 0) return 1;
    if (got < 0 && errno == ECONNRESET) return 1;
    if (got < 0 && errno != EINTR && errno != EAGAIN) return 1;
  }
}

int it_raw_hello(int fd) {
  Shoal__Hello h = SHOAL__HELLO__INIT;
  h.has_protocol = 1;
  h.protocol = SHOAL__PROTOCOL__PROTOCOL_V1;
  h.has_pid = 1;
  h.pid = (int32_t)getpid();
  h.has_want_slot = 1;
  h.want_slot = 0;
  h.client = (char *)"itest-raw";
  Shoal__Request req = SHOAL__REQUEST__INIT;
  req.has_id = 1;
  req.id = 1;
  req.body_case = SHOAL__REQUEST__BODY_HELLO;
  req.hello = &h;
  Shoal__Response *r = it_raw_call(fd, &req);
  int st = r->has_status ? r->status : 0;
  shoal__response__free_unpacked(r, NULL);
  return st;
}
