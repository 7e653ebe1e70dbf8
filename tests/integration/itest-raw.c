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
#include "rawframe.h"

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
  return rf_write(fd, p, n);
}

int it_raw_send(int fd, const Shoal__Request *req) {
  size_t n = rf_size(req);
  uint8_t *buf = malloc(n);
  ck_assert_ptr_nonnull(buf);
  ck_assert_uint_eq(rf_pack(req, buf, n), n);
  int rc = rf_write(fd, buf, n);
  free(buf);
  return rc;
}

Shoal__Response *it_raw_recv(int fd, int timeout_ms, const char **why) {
  return rf_recv(fd, timeout_ms, why);
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
  Shoal__Hello h = rf_hello_msg("itest-raw");
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
