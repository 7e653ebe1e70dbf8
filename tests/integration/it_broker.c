/*
 * it_broker.c - shoald as a supervised service and as a resource owner,
 * against a real broker (issue 3, DESIGN.md sections 2, 4 and 6):
 *
 * supervision
 *   - sd_notify: with NOTIFY_SOCKET set (a datagram socket of the test's
 *     own), the broker sends READY=1 once its socket accepts, and on
 *     SIGTERM STOPPING=1, then exits 0 (the harness passes the socket
 *     through it_notify_socket; other tests' brokers get none);
 *   - SIGHUP logs one stats line ("stats keys=... requests=put:N") to
 *     stderr and the broker keeps serving.
 * output limits
 *   - a client that pipelines 200 Gets of a 1 MiB value and never reads
 *     (--max-output 256k): the broker stops serving it after about one
 *     reply, its RSS stays bounded (not the 200 MiB of replies), a
 *     well-behaved client is served promptly meanwhile, and closing the
 *     flooding connection leaves the broker healthy.
 * reader-slot leases (--reader-slots 8)
 *   - 200 open/read/close cycles in one process never run out of slots
 *     (shoal_close frees its slot);
 *   - 6 SIGKILLed children holding slots: their slots come back within
 *     the 1 s sweep and the freed slots can all be leased again (the
 *     broker's own view holds one of the 8: the 8th client open gets
 *     SHOAL_ENOREADERS);
 *   - a child SIGKILLed inside a read section pins retired memory only
 *     while it lives: readers_busy drops to 0 and reclamation proceeds.
 * stats
 *   - after a known sequence (2 Hellos, 3 puts, 1 broker-side Get, 1 delete
 *     of an absent key): requests by type, errors by code
 *     (SHOAL_ENOTFOUND=1), connections, uptime_ms, broker_pid.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "itest-raw.h"
#include "itest.h"

#define S(s) (s), (sizeof(s) - 1)

static uint64_t next_id = 1000;

static Shoal__Request request(Shoal__Request__BodyCase kind) {
  Shoal__Request r = SHOAL__REQUEST__INIT;
  r.has_id = 1;
  r.id = next_id++;
  r.body_case = kind;
  return r;
}

static ProtobufCBinaryData bin(const void *p, size_t n) {
  ProtobufCBinaryData b = {n, (uint8_t *)p};
  return b;
}

/* A handle without a reader slot: for stats, so it does not change the
 * reader counts it looks at. */
static shoal *open_noslot(void) {
  shoal *c = NULL;
  int rc = it_open(&c, SHOAL_OPEN_NO_SLOT);
  ck_assert_msg(rc == 0, "shoal_open(NO_SLOT): %s (%s)", shoal_errname(rc),
                shoal_last_error(NULL));
  return c;
}

static shoal_stats stats(shoal *c) {
  shoal_stats st;
  memset(&st, 0, sizeof st);
  IT_OK(c, shoal_stats_get(c, &st));
  return st;
}

/* Poll stats until the broker counts @want connections (3 s). */
static shoal_stats wait_connections(shoal *c, uint64_t want) {
  uint64_t deadline = it_now_ms() + 3000;
  shoal_stats st;
  do {
    st = stats(c);
    if (st.connections == want) return st;
    it_sleep_ms(10);
  } while (it_now_ms() < deadline);
  ck_abort_msg("the broker counts %" PRIu64 " connections, expected %" PRIu64
               " within 3 s",
               st.connections, want);
  return st;
}

/* VmRSS of @pid in bytes (0 if unreadable). */
static uint64_t rss_bytes(pid_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  char *s = it_read_file(path, NULL);
  if (!s) return 0;
  uint64_t kb = 0;
  const char *p = strstr(s, "VmRSS:");
  if (p) kb = strtoull(p + 6, NULL, 10);
  free(s);
  return kb * 1024;
}


/* Receive datagrams on @fd until one contains @want (at the start of a
 * line) or @timeout_ms passes; the datagram goes to @buf. 1 found, 0 not. */
static int recv_notify(int fd, const char *want, char *buf, size_t cap,
                       int timeout_ms) {
  uint64_t deadline = it_now_ms() + (uint64_t)timeout_ms;
  for (;;) {
    int64_t left = (int64_t)deadline - (int64_t)it_now_ms();
    if (left <= 0) return 0;
    struct pollfd pfd = {fd, POLLIN, 0};
    int r = poll(&pfd, 1, (int)left);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return 0;
    ssize_t n = recv(fd, buf, cap - 1, 0);
    if (n < 0) continue;
    buf[n] = 0;
    size_t wl = strlen(want);
    for (const char *p = buf; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : p)
      if (strncmp(p, want, wl) == 0 && (p[wl] == 0 || p[wl] == '\n'))
        return 1;
  }
}

/* ------------------------------------------------------------ service --- */

START_TEST(sd_notify_ready_stopping) {
  char npath[IT_PATH + 16];
  snprintf(npath, sizeof npath, "%s/notify", it_dir);
  int nfd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ck_assert_int_ge(nfd, 0);
  struct sockaddr_un sa;
  it_sockaddr(&sa, npath);
  ck_assert_msg(bind(nfd, (struct sockaddr *)&sa, sizeof sa) == 0,
                "bind %s: %s", npath, strerror(errno));

  it_notify_socket = npath;
  pid_t pid = it_spawn_broker(NULL, NULL);
  it_notify_socket = NULL;
  char msg[4096];
  int ready = recv_notify(nfd, "READY=1", msg, sizeof msg, 10000);
  if (!ready) it_dump_log(NULL);
  ck_assert_msg(ready, "no READY=1 on NOTIFY_SOCKET within 10 s");
  /* ready means serving: the socket is there and accepts */
  struct stat sb;
  ck_assert_msg(stat(it_sock, &sb) == 0 && S_ISSOCK(sb.st_mode),
                "READY=1 sent but %s is not a socket", it_sock);
  const char *mp = strstr(msg, "MAINPID=");
  if (mp) ck_assert_int_eq(atoi(mp + 8), pid);
  shoal *c = it_open_ok();
  IT_OK(c, shoal_put(c, S("k"), S("v"), NULL));
  shoal_stats st = stats(c);
  ck_assert_int_eq(st.broker_pid, pid);

  /* SIGTERM with a client still connected: STOPPING=1, then exit 0 */
  ck_assert_int_eq(kill(pid, SIGTERM), 0);
  int stopping = recv_notify(nfd, "STOPPING=1", msg, sizeof msg, 10000);
  ck_assert_msg(stopping, "no STOPPING=1 on NOTIFY_SOCKET within 10 s of "
                "SIGTERM");
  int wst = it_wait_exit(pid, 10000);
  if (wst == -1) it_dump_log(NULL);
  ck_assert_msg(wst != -1, "shoald did not exit within 10 s of SIGTERM");
  ck_assert_msg(WIFEXITED(wst) && WEXITSTATUS(wst) == 0,
                "shoald after SIGTERM: status 0x%x, expected exit 0", wst);
  ck_assert_msg(stat(it_sock, &sb) != 0, "the socket is left behind");
  shoal_close(c);
  close(nfd);
}
END_TEST

/* The first stats line of @log after byte @from, or NULL (malloc'd). */
static char *stats_line(const char *log, size_t from) {
  size_t n;
  char *s = it_read_file(log, &n);
  if (!s) return NULL;
  char *line = NULL;
  if (from < n) {
    char *p = strstr(s + from, " stats keys=");
    if (p) {
      char *b = p;
      while (b > s + from && b[-1] != '\n') b--;
      char *e = strchr(p, '\n');
      line = strndup(b, e ? (size_t)(e - b) : strlen(b));
    }
  }
  free(s);
  return line;
}

START_TEST(sighup_logs_stats) {
  pid_t pid = it_start_broker(NULL);
  shoal *c = it_open_ok();
  IT_OK(c, shoal_put(c, S("a"), S("1"), NULL));
  IT_OK(c, shoal_put(c, S("b"), S("2"), NULL));
  char log[IT_PATH + 16];
  snprintf(log, sizeof log, "%s/broker.log", it_dir);
  size_t from = 0;
  char *s = it_read_file(log, &from);
  free(s);

  ck_assert_int_eq(kill(pid, SIGHUP), 0);
  char *line = NULL;
  uint64_t deadline = it_now_ms() + 2000;
  while (!(line = stats_line(log, from)) && it_now_ms() < deadline)
    it_sleep_ms(10);
  if (!line) it_dump_log(log);
  ck_assert_msg(line, "no stats line in the log within 2 s of SIGHUP");
  ck_assert_msg(strstr(line, "shoald[") && strstr(line, " keys=2 ") &&
                    strstr(line, "put:2") && strstr(line, "connections=1 "),
                "stats line does not show 2 keys, 2 puts and 1 connection: "
                "%s", line);
  free(line);

  /* still serving, same process */
  ck_assert_int_eq(waitpid(pid, NULL, WNOHANG), 0);
  IT_OK(c, shoal_put(c, S("c"), S("3"), NULL));
  char buf[8];
  size_t len = 0;
  IT_OK(c, shoal_get_copy(c, S("c"), buf, sizeof buf, &len, NULL));
  ck_assert_uint_eq(len, 1);
  ck_assert_int_eq(buf[0], '3');
  shoal_stats st = stats(c);
  ck_assert_int_eq(st.broker_pid, pid);
  ck_assert_uint_eq(st.keys, 3);
  shoal_close(c);
  ck_assert_int_eq(it_stop_broker(SIGTERM), 0);
}
END_TEST

/* -------------------------------------------------------- output limit --- */

#define BIG (1u << 20)
#define FLOOD 200

START_TEST(client_never_reads) {
  pid_t pid = it_start_broker("--max-output", "256k", NULL);
  shoal *c = it_open_ok();
  char *big = malloc(BIG);
  ck_assert_ptr_nonnull(big);
  it_value_make(big, BIG, "big", 1);
  IT_OK(c, shoal_put(c, S("big"), big, BIG, NULL));
  free(big);
  /* the broker reads the value once, so its pages count in the baseline */
  int warm = it_raw_connect(NULL);
  ck_assert_int_eq(it_raw_hello(warm), 0);
  Shoal__Get g = SHOAL__GET__INIT;
  g.has_key = 1;
  g.key = bin("big", 3);
  Shoal__Request req = request(SHOAL__REQUEST__BODY_GET);
  req.get = &g;
  Shoal__Response *r = it_raw_call(warm, &req);
  ck_assert_int_eq(r->status, 0);
  ck_assert_int_eq(r->body_case, SHOAL__RESPONSE__BODY_GET);
  ck_assert_msg(it_value_check(r->get->value.data, r->get->value.len, "big",
                               NULL),
                "the 1 MiB value came back wrong");
  shoal__response__free_unpacked(r, NULL);
  close(warm);

  shoal_stats st0 = wait_connections(c, 1);
  uint64_t gets0 = it_counter(st0.requests, "get");
  uint64_t conns0 = st0.connections;
  uint64_t rss0 = rss_bytes(pid);
  ck_assert_uint_gt(rss0, 0);

  /* the flooding client: Hello, then 200 Gets it never reads */
  int fd = it_raw_connect(NULL);
  ck_assert_int_eq(it_raw_hello(fd), 0);
  ck_assert_int_eq(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
  size_t cap = FLOOD * 64, len = 0;
  uint8_t *frames = malloc(cap);
  ck_assert_ptr_nonnull(frames);
  for (int i = 0; i < FLOOD; i++) {
    Shoal__Request q = request(SHOAL__REQUEST__BODY_GET);
    q.get = &g;
    size_t n = shoal__request__get_packed_size(&q);
    ck_assert_uint_le(len + 4 + n, cap);
    frames[len] = (uint8_t)n;
    frames[len + 1] = (uint8_t)(n >> 8);
    frames[len + 2] = frames[len + 3] = 0;
    size_t packed = shoal__request__pack(&q, frames + len + 4);
    ck_assert_uint_eq(packed, n);
    len += 4 + n;
  }
  size_t off = 0;
  uint64_t blocked_since = 0;
  while (off < len) {
    ssize_t w = send(fd, frames + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w > 0) {
      off += (size_t)w;
      blocked_since = 0;
      continue;
    }
    ck_assert_msg(w < 0 && (errno == EAGAIN || errno == EINTR),
                  "send to the broker: %s", strerror(errno));
    if (!blocked_since) blocked_since = it_now_ms();
    if (it_now_ms() - blocked_since >= 1000) break; /* the broker stopped */
    struct pollfd pfd = {fd, POLLOUT, 0};
    int pr = poll(&pfd, 1, 50);
    (void)pr;
  }
  free(frames);

  /* meanwhile: a well-behaved client is served promptly, and the broker
   * holds at most --max-output plus a reply for the flooder */
  uint64_t rss_max = rss0, rtt_max = 0;
  uint64_t until = it_now_ms() + 1000;
  int puts = 0;
  while (it_now_ms() < until || puts < 10) {
    char v[32];
    int vl = snprintf(v, sizeof v, "v%d", puts);
    uint64_t t0 = it_now_us();
    IT_OK(c, shoal_put(c, S("small"), v, (size_t)vl, NULL));
    uint64_t rtt = it_now_us() - t0;
    if (rtt > rtt_max) rtt_max = rtt;
    puts++;
    uint64_t rss = rss_bytes(pid);
    if (rss > rss_max) rss_max = rss;
    it_sleep_ms(20);
  }
  ck_assert_msg(rtt_max < 1000000,
                "a put took %" PRIu64 " us while another client flooded",
                rtt_max);
  ck_assert_msg(rss_max < rss0 + (64u << 20),
                "broker RSS grew from %" PRIu64 " to %" PRIu64
                " bytes for a client that does not read (--max-output 256k)",
                rss0, rss_max);
  shoal_stats st1 = stats(c);
  uint64_t gets = it_counter(st1.requests, "get") - gets0;
  /* --max-output 256k and 1 MiB replies: one reply passes the limit, so
   * the broker stops decoding that connection's frames after it */
  ck_assert_msg(gets >= 1 && gets <= 4,
                "the broker served %" PRIu64 " of %d Gets of a client that "
                "never reads (expected it to stop after about one reply)",
                gets, FLOOD);
  ck_assert_uint_eq(st1.connections, conns0 + 1);
  ck_assert_int_eq(waitpid(pid, NULL, WNOHANG), 0);

  /* the flooder goes away: the broker drops it and stays healthy */
  close(fd);
  wait_connections(c, conns0);
  IT_OK(c, shoal_ping(c));
  IT_OK(c, shoal_put(c, S("after"), S("ok"), NULL));
  char buf[8];
  size_t blen = 0;
  IT_OK(c, shoal_get_copy(c, S("after"), buf, sizeof buf, &blen, NULL));
  ck_assert_uint_eq(blen, 2);
  ck_assert(memcmp(buf, "ok", 2) == 0);
  shoal_close(c);
  ck_assert_int_eq(it_stop_broker(SIGTERM), 0);
}
END_TEST

/* -------------------------------------------------------------- leases --- */

#define SLOTS 8
#define KIDS 6

START_TEST(leases_open_close_cycles) {
  it_start_broker("--reader-slots", "8", "--size", "64M", NULL);
  shoal *s = open_noslot();
  IT_OK(s, shoal_put(s, S("k"), S("value"), NULL));
  uint64_t base = stats(s).readers_claimed; /* the broker's own view */
  ck_assert_uint_lt(base, SLOTS);
  for (int i = 0; i < 200; i++) {
    shoal *c = NULL;
    int rc = it_open(&c, 0);
    ck_assert_msg(rc == 0, "cycle %d: shoal_open: %s (%s)", i,
                  shoal_errname(rc), shoal_last_error(NULL));
    ck_assert_int_ge(shoal_reader_slot(c), 0);
    ck_assert_int_lt(shoal_reader_slot(c), SLOTS);
    IT_OK(c, shoal_read_begin(c));
    shoal_val v;
    int grc = shoal_get(c, S("k"), &v);
    ck_assert_msg(grc == 0, "cycle %d: shoal_get: %s", i, shoal_errname(grc));
    ck_assert_uint_eq(v.len, 5);
    ck_assert(memcmp(v.data, "value", 5) == 0);
    shoal_read_end(c);
    shoal_close(c);
  }
  /* shoal_close released each slot itself */
  ck_assert_uint_eq(stats(s).readers_claimed, base);
  shoal_close(s);
}
END_TEST

static int kid_rd = -1, kid_ready = -1; /* pipes of the children */

static int kid_hold_slot(void *arg) {
  (void)arg;
  shoal *c = NULL;
  IT_CHK_RC(NULL, it_open(&c, 0), 0);
  IT_CHK(shoal_reader_slot(c) >= 0, "no reader slot");
  char b = 'r';
  IT_CHK(write(kid_ready, &b, 1) == 1, "write: %s", strerror(errno));
  /* block until killed */
  ssize_t n = read(kid_rd, &b, 1);
  (void)n;
  return 1; /* never reached: SIGKILL */
}

static void wait_ready(int fd, int n) {
  for (int i = 0; i < n; i++) {
    struct pollfd pfd = {fd, POLLIN, 0};
    ck_assert_msg(poll(&pfd, 1, 10000) == 1, "child %d not ready in 10 s", i);
    char b;
    ck_assert_int_eq(read(fd, &b, 1), 1);
  }
}

static void kill_and_reap(pid_t pid) {
  ck_assert_int_eq(kill(pid, SIGKILL), 0);
  int st = 0;
  ck_assert_int_eq(waitpid(pid, &st, 0), pid);
  ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
                "child %d: status 0x%x (it failed; see its stderr)", (int)pid,
                st);
}

START_TEST(leases_killed_holders) {
  it_start_broker("--reader-slots", "8", "--size", "64M", NULL);
  shoal *s = open_noslot();
  uint64_t base = stats(s).readers_claimed;
  ck_assert_uint_le(base + KIDS, SLOTS);

  int hold[2], ready[2];
  ck_assert_int_eq(pipe2(hold, O_CLOEXEC), 0);
  ck_assert_int_eq(pipe2(ready, O_CLOEXEC), 0);
  kid_rd = hold[0];
  kid_ready = ready[1];
  pid_t kids[KIDS];
  for (int i = 0; i < KIDS; i++) kids[i] = it_fork(kid_hold_slot, NULL, 20);
  wait_ready(ready[0], KIDS);
  shoal_stats st = stats(s);
  ck_assert_msg(st.readers_claimed >= base + KIDS,
                "readers_claimed %" PRIu64 " with %d children holding slots "
                "(broker alone: %" PRIu64 ")",
                st.readers_claimed, KIDS, base);

  for (int i = 0; i < KIDS; i++) kill_and_reap(kids[i]);
  uint64_t t0 = it_now_ms(), deadline = t0 + 3000;
  do {
    st = stats(s);
    if (st.readers_claimed == base) break;
    it_sleep_ms(100);
  } while (it_now_ms() < deadline);
  ck_assert_msg(st.readers_claimed == base,
                "readers_claimed still %" PRIu64 " (expected %" PRIu64
                ") 3 s after the holders were killed",
                st.readers_claimed, base);

  /* every free slot can be leased again; then the table is full */
  shoal *c[SLOTS];
  unsigned nfree = SLOTS - (unsigned)base;
  for (unsigned i = 0; i < nfree; i++) {
    int rc = it_open(&c[i], 0);
    ck_assert_msg(rc == 0, "open %u of %u after the sweep: %s (%s)", i + 1,
                  nfree, shoal_errname(rc), shoal_last_error(NULL));
  }
  shoal *extra = NULL;
  int rc = it_open(&extra, 0);
  ck_assert_msg(rc == SHOAL_ENOREADERS,
                "open with all %d slots taken: %s, expected SHOAL_ENOREADERS",
                SLOTS, shoal_errname(rc));
  ck_assert_ptr_null(extra);
  ck_assert_uint_eq(stats(s).readers_claimed, SLOTS);
  for (unsigned i = 0; i < nfree; i++) shoal_close(c[i]);
  ck_assert_uint_eq(stats(s).readers_claimed, base);
  close(hold[0]);
  close(hold[1]);
  close(ready[0]);
  close(ready[1]);
  shoal_close(s);
}
END_TEST

/* Open, begin a section, read, say so, then SIGKILL itself (still inside
 * the section) when the parent writes a byte. */
static int kid_die_in_section(void *arg) {
  (void)arg;
  shoal *c = NULL;
  IT_CHK_RC(NULL, it_open(&c, 0), 0);
  IT_CHK_RC(c, shoal_read_begin(c), 0);
  shoal_val v;
  IT_CHK_RC(c, shoal_get(c, S("hot"), &v), 0);
  IT_CHK(v.len == 4096, "len %zu", v.len);
  char b = 'r';
  IT_CHK(write(kid_ready, &b, 1) == 1, "write: %s", strerror(errno));
  IT_CHK(read(kid_rd, &b, 1) == 1, "read: %s", strerror(errno));
  raise(SIGKILL);
  return 1;
}

static void overwrite(shoal *c, int n, uint64_t gen0) {
  char v[4096];
  for (int i = 0; i < n; i++) {
    it_value_make(v, sizeof v, "hot", gen0 + (uint64_t)i);
    IT_OK(c, shoal_pipe_put(c, S("hot"), v, sizeof v, 0));
  }
  for (int i = 0; i < n; i++) IT_OK(c, shoal_pipe_recv(c, NULL));
}

START_TEST(leases_killed_in_section) {
  it_start_broker("--reader-slots", "8", "--size", "64M", NULL);
  shoal *s = open_noslot();
  overwrite(s, 1, 0);
  shoal_stats st = stats(s);
  ck_assert_uint_eq(st.readers_busy, 0);

  int cmd[2], ready[2];
  ck_assert_int_eq(pipe2(cmd, O_CLOEXEC), 0);
  ck_assert_int_eq(pipe2(ready, O_CLOEXEC), 0);
  kid_rd = cmd[0];
  kid_ready = ready[1];
  pid_t kid = it_fork(kid_die_in_section, NULL, 20);
  wait_ready(ready[0], 1);
  st = stats(s);
  ck_assert_uint_ge(st.readers_busy, 1);
  ck_assert_uint_gt(st.oldest_snapshot, 0);

  /* while it is in its section, overwritten values can not be freed */
  overwrite(s, 500, 1);
  it_sleep_ms(300); /* a reclaim tick (--sweep-ms 200) */
  st = stats(s);
  ck_assert_msg(st.retired_bytes >= 500u * 4096u / 2,
                "retired_bytes %" PRIu64 " after 500 overwrites of 4 KiB "
                "under a pinned snapshot: memory was freed under a reader",
                st.retired_bytes);

  char b = 'k';
  ck_assert_int_eq(write(cmd[1], &b, 1), 1);
  int wst = 0;
  ck_assert_int_eq(waitpid(kid, &wst, 0), kid);
  ck_assert_msg(WIFSIGNALED(wst) && WTERMSIG(wst) == SIGKILL,
                "child status 0x%x (it failed; see its stderr)", wst);

  uint64_t deadline = it_now_ms() + 3000;
  do {
    st = stats(s);
    if (st.readers_busy == 0) break;
    it_sleep_ms(100);
  } while (it_now_ms() < deadline);
  ck_assert_msg(st.readers_busy == 0,
                "readers_busy %" PRIu64 " 3 s after the reader died in its "
                "section (oldest snapshot %" PRIu64 ", age %" PRIu64 " ms)",
                st.readers_busy, st.oldest_snapshot,
                st.oldest_snapshot_age_ms);

  overwrite(s, 2000, 1000);
  deadline = it_now_ms() + 3000;
  do {
    st = stats(s);
    if (st.retired_bytes < (256u << 10)) break;
    it_sleep_ms(100);
  } while (it_now_ms() < deadline);
  ck_assert_msg(st.retired_bytes < (256u << 10),
                "retired_bytes %" PRIu64 " (%" PRIu64 " records) 3 s after "
                "2000 overwrites with no reader: reclamation is stuck",
                st.retired_bytes, st.retired);
  ck_assert_uint_gt(st.reclaimed, 2000);
  /* the last value is intact */
  char v[4096];
  size_t len = 0;
  shoal *r = it_open_ok();
  IT_OK(r, shoal_get_copy(r, S("hot"), v, sizeof v, &len, NULL));
  uint64_t gen = 0;
  ck_assert(it_value_check(v, len, "hot", &gen));
  ck_assert_uint_eq(gen, 2999);
  shoal_close(r);
  close(cmd[0]);
  close(cmd[1]);
  close(ready[0]);
  close(ready[1]);
  shoal_close(s);
}
END_TEST

/* --------------------------------------------------------------- stats --- */

START_TEST(stats_fields) {
  pid_t pid = it_start_broker(NULL);
  shoal *c = it_open_ok();
  for (int i = 0; i < 3; i++) {
    char k[8];
    int kl = snprintf(k, sizeof k, "s%d", i);
    IT_OK(c, shoal_put(c, k, (size_t)kl, S("val"), NULL));
  }
  int fd = it_raw_connect(NULL);
  ck_assert_int_eq(it_raw_hello(fd), 0);
  Shoal__Get g = SHOAL__GET__INIT;
  g.has_key = 1;
  g.key = bin("s1", 2);
  Shoal__Request req = request(SHOAL__REQUEST__BODY_GET);
  req.get = &g;
  Shoal__Response *r = it_raw_call(fd, &req);
  ck_assert_int_eq(r->status, 0);
  ck_assert_uint_eq(r->get->value.len, 3);
  shoal__response__free_unpacked(r, NULL);
  IT_RC(c, shoal_del(c, S("absent")), SHOAL_ENOTFOUND);

  shoal_stats st = stats(c);
  ck_assert_msg(it_counter(st.requests, "put") == 3 &&
                    it_counter(st.requests, "get") == 1 &&
                    it_counter(st.requests, "delete") == 1 &&
                    it_counter(st.requests, "hello") == 2 &&
                    it_counter(st.requests, "stats") == 1,
                "requests \"%s\": expected put=3 get=1 delete=1 hello=2 "
                "stats=1",
                st.requests);
  ck_assert_msg(it_counter(st.errors, "SHOAL_ENOTFOUND") == 1,
                "errors \"%s\": expected SHOAL_ENOTFOUND=1", st.errors);
  ck_assert_msg(strstr(st.errors, "=") == strrchr(st.errors, '='),
                "errors \"%s\": only the one ENOTFOUND was caused", st.errors);
  ck_assert_uint_eq(st.keys, 3);
  ck_assert_uint_eq(st.connections, 2);
  ck_assert_uint_ge(st.connections_total, 2);
  ck_assert_uint_gt(st.uptime_ms, 0);
  ck_assert_int_eq(st.broker_pid, pid);
  ck_assert_uint_gt(st.bytes_in, 0);
  ck_assert_uint_gt(st.bytes_out, 0);
  ck_assert_uint_ge(st.commits, 3);
  ck_assert_uint_ge(st.readers_claimed, 2); /* broker's view and c */

  /* the same through the raw protocol, and the clock moves */
  it_sleep_ms(50);
  Shoal__Stats sr = SHOAL__STATS__INIT;
  req = request(SHOAL__REQUEST__BODY_STATS);
  req.stats = &sr;
  r = it_raw_call(fd, &req);
  ck_assert_int_eq(r->status, 0);
  ck_assert_int_eq(r->body_case, SHOAL__RESPONSE__BODY_STATS);
  ck_assert_int_eq(r->stats->broker_pid, pid);
  ck_assert_uint_ge(r->stats->uptime_ms, st.uptime_ms + 50);
  int found = 0;
  for (size_t i = 0; i < r->stats->n_errors; i++)
    if (strcmp(r->stats->errors[i]->name, "SHOAL_ENOTFOUND") == 0) {
      ck_assert_uint_eq(r->stats->errors[i]->value, 1);
      found = 1;
    }
  ck_assert_msg(found, "StatsReply.errors has no SHOAL_ENOTFOUND counter");
  shoal__response__free_unpacked(r, NULL);

  close(fd);
  wait_connections(c, 1);
  shoal_close(c);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("broker");
  TCase *tc = it_tcase("service", 30);
  tcase_add_test(tc, sd_notify_ready_stopping);
  tcase_add_test(tc, sighup_logs_stats);
  suite_add_tcase(s, tc);
  tc = it_tcase("output", 30);
  tcase_add_test(tc, client_never_reads);
  suite_add_tcase(s, tc);
  tc = it_tcase("leases", 30);
  tcase_add_test(tc, leases_open_close_cycles);
  tcase_add_test(tc, leases_killed_holders);
  tcase_add_test(tc, leases_killed_in_section);
  suite_add_tcase(s, tc);
  tc = it_tcase("stats", 30);
  tcase_add_test(tc, stats_fields);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return it_run_suite(suite()); }
