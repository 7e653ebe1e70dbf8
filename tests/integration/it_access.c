/*
 * it_access.c - access control (issue 3: SO_PEERCRED against --allow-uid /
 * --allow-gid, default the broker's own uid; socket 0660, data object
 * 0640, readers object 0660; denied peers get SHOAL_EDENIED and are closed).
 *
 * Needs root: children drop to uid/gid 65534 (nobody/nogroup) and 65533
 * with setresuid/setresgid. Run as another user, the executable prints why
 * and exits 77, which ctest reports as skipped (SKIP_RETURN_CODE), not
 * passed.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <grp.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sys/socket.h>
#include <sys/un.h>

#include "itest-raw.h"
#include "itest.h"

#define NOBODY 65534
#define OTHER 65533

typedef struct who {
  uid_t uid;
  gid_t gid;
  int want; /* expected shoal_open result */
} who;

static int drop(uid_t uid, gid_t gid) {
  IT_CHK(setgroups(0, NULL) == 0, "setgroups: %s", strerror(errno));
  IT_CHK(setresgid(gid, gid, gid) == 0, "setresgid: %s", strerror(errno));
  IT_CHK(setresuid(uid, uid, uid) == 0, "setresuid: %s", strerror(errno));
  IT_CHK(getuid() == uid && geteuid() == uid && getgid() == gid, "ids");
  return 0;
}

static int client(void *arg) {
  who *w = arg;
  if (drop(w->uid, w->gid)) return 1;
  shoal *c = NULL;
  int rc = it_open(&c, 0);
  IT_CHK(rc == w->want, "uid %d gid %d: shoal_open returned %d (%s: %s), "
         "expected %s; detail: %s",
         (int)w->uid, (int)w->gid, rc, shoal_errname(rc), shoal_strerror(rc),
         shoal_errname(w->want), shoal_last_error(c));
  if (rc) return 0;
  /* allowed: the whole client works - writes over the socket, reads from
   * the mapping (data object 0640) with a reader slot (readers object) */
  uint64_t ver = 0;
  IT_CHK_RC(c, shoal_put(c, "by-other-uid", 12, "hi", 2, &ver), 0);
  IT_CHK_RC(c, shoal_read_begin(c), 0);
  shoal_val v;
  IT_CHK_RC(c, shoal_get(c, "by-other-uid", 12, &v), 0);
  IT_CHK(v.len == 2 && memcmp(v.data, "hi", 2) == 0 && v.version == ver,
         "value");
  IT_CHK_RC(c, shoal_get(c, "by-root", 7, &v), 0);
  shoal_read_end(c);
  IT_CHK_RC(c, shoal_ping(c), 0);
  shoal_close(c);
  return 0;
}

/* The broker's side alone, without libshoal: a denied peer is told
 * SHOAL_EDENIED (a reply with id 0, unasked) and the connection closed. */
static int raw_denied(void *arg) {
  who *w = arg;
  if (drop(w->uid, w->gid)) return 1;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  IT_CHK(fd >= 0, "socket: %s", strerror(errno));
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  memcpy(sa.sun_path, it_sock, strlen(it_sock) + 1);
  IT_CHK(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0, "connect: %s",
         strerror(errno));
  const char *why = "";
  Shoal__Response *r = it_raw_recv(fd, 5000, &why);
  IT_CHK(r != NULL, "no reply to a denied peer: %s", why);
  IT_CHK(r->status == SHOAL_EDENIED, "status %s", shoal_errname(r->status));
  IT_CHK(r->error && strstr(r->error, "--allow-uid"),
         "the message does not name the fix: %s", r->error);
  shoal__response__free_unpacked(r, NULL);
  IT_CHK(it_raw_closed(fd, 5000), "denied connection not closed");
  close(fd);
  return 0;
}

/* Failures are collected, not fatal at once, so one run reports every
 * case (each needs its own broker configuration). */
static char failures[4096];

static void run_fn(int (*fn)(void *), uid_t uid, gid_t gid, int want,
                   const char *what) {
  who w = {uid, gid, want};
  pid_t pid = it_fork(fn, &w, 20);
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    size_t n = strlen(failures);
    snprintf(failures + n, sizeof failures - n, "\n  - %s (expected %s): "
             "failed, see the child's message above", what,
             shoal_errname(want));
  }
}

static void run_as(uid_t uid, gid_t gid, int want, const char *what) {
  run_fn(client, uid, gid, want, what);
}

static uint64_t denied_count(void) {
  shoal *c = it_open_ok();
  shoal_stats st;
  IT_OK(c, shoal_stats_get(c, &st));
  shoal_close(c);
  return st.denied;
}

static void seed_store(void) {
  shoal *c = it_open_ok();
  IT_OK(c, shoal_put(c, "by-root", 7, "r", 1, NULL));
  shoal_close(c);
}

START_TEST(denied_uid) {
  /* the test directories must be reachable by the other uids */
  chmod(it_dir, 0777);
  chmod(it_rundir, 0777);
  chmod(it_shmdir, 0777);

  /* default: only the broker's own uid (root) */
  it_start_broker(NULL);
  seed_store();
  struct stat sb;
  ck_assert_int_eq(stat(it_sock, &sb), 0);
  ck_assert_msg((sb.st_mode & 0777) == 0660, "socket mode %o, expected 0660",
                sb.st_mode & 0777);
  /* 1. a socket anyone may connect to: SO_PEERCRED is what refuses */
  uint64_t d0 = denied_count();
  ck_assert_int_eq(chmod(it_sock, 0666), 0);
  run_fn(raw_denied, NOBODY, NOBODY, SHOAL_EDENIED,
         "nobody, socket 0666, raw connection");
  ck_assert_uint_eq(denied_count(), d0 + 1);
  run_as(NOBODY, NOBODY, SHOAL_EDENIED, "nobody, socket 0666, shoal_open");
  ck_assert_uint_eq(denied_count(), d0 + 2);
  int st = it_stop_broker(SIGTERM);
  ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status 0x%x", st);

  /* 2. --allow-uid 65534: nobody may use the store, all of it */
  it_start_broker("--allow-uid", "65534", NULL);
  run_as(NOBODY, NOBODY, 0, "nobody with --allow-uid 65534");
  run_as(OTHER, OTHER, SHOAL_EDENIED, "uid 65533 with --allow-uid 65534");
  /* root (the broker's own uid) still may */
  seed_store();
  it_stop_broker(SIGTERM);

  /* 3. --allow-gid 65534: any uid whose gid is 65534 */
  it_start_broker("--allow-gid", "65534", NULL);
  run_as(OTHER, NOBODY, 0, "uid 65533 gid 65534 with --allow-gid 65534");
  run_as(OTHER, OTHER, SHOAL_EDENIED, "uid 65533 gid 65533 with --allow-gid");
  it_stop_broker(SIGTERM);

  /* 4. the socket as the broker leaves it (0660, root's): its mode keeps
   *    nobody out before SO_PEERCRED is asked; the library must still say
   *    SHOAL_EDENIED (whose message names the fix, --allow-uid), not a
   *    bare -EACCES */
  it_start_broker(NULL);
  run_as(NOBODY, NOBODY, SHOAL_EDENIED, "nobody, socket 0660");
  ck_assert_msg(failures[0] == 0, "access cases failed:%s", failures);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("integration.access");
  TCase *tc = it_tcase("access", 60);
  tcase_add_test(tc, denied_uid);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  if (getuid() != 0) {
    printf("SKIP: integration.access needs root (it drops to uid 65534 with "
           "setresuid); running as uid %d\n",
           (int)getuid());
    return 77;
  }
  return it_run_suite(suite());
}
