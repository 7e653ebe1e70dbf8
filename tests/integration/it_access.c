/*
 * it_access.c - access control (issue 3: SO_PEERCRED against --allow-uid /
 * --allow-gid, default the broker's own uid; socket 0660, data object
 * 0640, readers object 0660; denied peers get SHOAL_EDENIED and are closed).
 *
 * Also (issue 7, "Access"): a client writing into its read-only mapping
 * of the data object dies of SIGSEGV and can not mprotect it writable;
 * the modes of RUNDIR, the socket and the shared objects are as DESIGN
 * section 2 and broker/main.c say (also under a umask of 077); HashFile
 * and TailLog read only what the client itself could open (the library
 * opens the path in the client's process and passes the descriptor; a
 * HashFile/TailLog frame without a descriptor is SHOAL_EPROTOCOL).
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
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <sys/socket.h>
#include <sys/un.h>

#include "itest-raw.h"
#include "itest.h"
#include "rawframe.h"

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

/* A raw connection to the test's broker, made in a child (which reports
 * with IT_CHK instead of ck_assert): the descriptor, or -1 with errno. */
static int child_connect(void) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  struct sockaddr_un sa;
  it_sockaddr(&sa, it_sock);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

/* The broker's side alone, without libshoal: a denied peer is told
 * SHOAL_EDENIED (a reply with id 0, unasked) and the connection closed. */
static int raw_denied(void *arg) {
  who *w = arg;
  if (drop(w->uid, w->gid)) return 1;
  int fd = child_connect();
  IT_CHK(fd >= 0, "connect %s: %s", it_sock, strerror(errno));
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

/* ------------------------------------------------ the read-only mapping -- */

/* In a child (as w->uid unless root): get a zero-copy view of "by-root"
 * and store a byte into it. Must die of SIGSEGV before returning. */
static int write_mapping(void *arg) {
  who *w = arg;
  if (w->uid != 0 && drop(w->uid, w->gid)) return 1;
  struct rlimit no_core = {0, 0}; /* the expected crash leaves no core */
  setrlimit(RLIMIT_CORE, &no_core);
  /* the kernel's own SIGSEGV, not a sanitizer's report: ASan and TSan
   * install handlers that would turn the fault into an abort or exit */
  struct sigaction dfl = {.sa_handler = SIG_DFL};
  sigemptyset(&dfl.sa_mask);
  sigaction(SIGSEGV, &dfl, NULL);
  sigaction(SIGBUS, &dfl, NULL);
  shoal *c = NULL;
  IT_CHK_RC(c, it_open(&c, 0), 0);
  IT_CHK_RC(c, shoal_read_begin(c), 0);
  shoal_val v;
  IT_CHK_RC(c, shoal_get(c, "by-root", 7, &v), 0);
  IT_CHK(v.len == 1, "value length %zu", v.len);
  fprintf(stderr,
          "child %d (uid %d): writing into the data mapping at %p; "
          "SIGSEGV expected\n",
          (int)getpid(), (int)getuid(), v.data);
  *(volatile char *)v.data = 'X';
  fprintf(stderr,
          "child %d: the store into the read-only mapping "
          "succeeded\n",
          (int)getpid());
  return 2;
}

/* In a child: the mapping can not be made writable either (the data
 * object is opened O_RDONLY, so mprotect(PROT_WRITE) of its MAP_SHARED
 * mapping is EACCES, even for root). */
static int mprotect_mapping(void *arg) {
  who *w = arg;
  if (w->uid != 0 && drop(w->uid, w->gid)) return 1;
  shoal *c = NULL;
  IT_CHK_RC(c, it_open(&c, 0), 0);
  IT_CHK_RC(c, shoal_read_begin(c), 0);
  shoal_val v;
  IT_CHK_RC(c, shoal_get(c, "by-root", 7, &v), 0);
  long pg = sysconf(_SC_PAGESIZE);
  void *page = (void *)((uintptr_t)v.data & ~(uintptr_t)(pg - 1));
  int r = mprotect(page, (size_t)pg, PROT_READ | PROT_WRITE);
  IT_CHK(r != 0 && errno == EACCES,
         "mprotect(PROT_WRITE) of the data "
         "mapping returned %d (%s), expected EACCES",
         r, r ? strerror(errno) : "success");
  shoal_read_end(c);
  shoal_close(c);
  return 0;
}

static void expect_segv(uid_t uid, gid_t gid, const char *what) {
  who w = {uid, gid, 0};
  pid_t pid = it_fork(write_mapping, &w, 20);
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV,
                "%s: the child writing into its read-only mapping %s %d, "
                "expected death by SIGSEGV",
                what, WIFSIGNALED(st) ? "died of signal" : "exited with",
                WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
}

START_TEST(readonly_mapping) {
  chmod(it_dir, 0777);
  it_start_broker("--allow-uid", "65534", NULL);
  seed_store();
  expect_segv(0, 0, "root");
  expect_segv(NOBODY, NOBODY, "nobody (--allow-uid 65534)");
  who w = {NOBODY, NOBODY, 0};
  it_wait_ok(it_fork(mprotect_mapping, &w, 20), "mprotect as nobody");
  w.uid = w.gid = 0;
  it_wait_ok(it_fork(mprotect_mapping, &w, 20), "mprotect as root");
  /* the store did not change and the broker serves on */
  shoal *c = it_open_ok();
  char v[8];
  size_t n = 0;
  IT_OK(c, shoal_get_copy(c, "by-root", 7, v, sizeof v, &n, NULL));
  ck_assert(n == 1 && v[0] == 'r');
  IT_OK(c, shoal_ping(c));
  shoal_close(c);
  int st = it_stop_broker(SIGTERM);
  ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status 0x%x", st);
}
END_TEST

/* ------------------------------------------------------------ file modes -- */

static void check_mode(const char *path, mode_t type, unsigned mode) {
  struct stat sb;
  ck_assert_msg(lstat(path, &sb) == 0, "stat %s: %s", path, strerror(errno));
  ck_assert_msg((sb.st_mode & S_IFMT) == type, "%s: wrong file type 0%o", path,
                sb.st_mode & S_IFMT);
  ck_assert_msg((sb.st_mode & 0777) == mode, "%s: mode 0%o, expected 0%o", path,
                sb.st_mode & 0777, mode);
  ck_assert_msg(sb.st_uid == getuid(), "%s: owner %d", path, (int)sb.st_uid);
}

/* 1 if @path carries a POSIX access ACL, 0 if not, -1 if the filesystem
 * has none */
static int has_acl(const char *path) {
  ssize_t r = getxattr(path, "system.posix_acl_access", NULL, 0);
  if (r > 0) return 1;
  if (r < 0 && (errno == ENOTSUP || errno == EOPNOTSUPP)) return -1;
  return 0;
}

static void check_store_modes(unsigned rundir_mode) {
  char data[IT_PATH * 2], readers[IT_PATH * 2];
  snprintf(data, sizeof data, "%s/shoal.%s.data", it_shmdir, IT_NAME);
  snprintf(readers, sizeof readers, "%s/shoal.%s.readers", it_shmdir, IT_NAME);
  check_mode(it_rundir, S_IFDIR, rundir_mode);
  check_mode(it_sock, S_IFSOCK, 0660);
  check_mode(data, S_IFREG, 0640);
  check_mode(readers, S_IFREG, 0660);
}

START_TEST(file_modes) {
  /* the broker creates RUNDIR itself (the fixture made it: remove it) */
  ck_assert_int_eq(rmdir(it_rundir), 0);
  mode_t old = umask(022);
  it_start_broker(NULL);
  check_store_modes(0700); /* private without --allow-* */
  ck_assert_int_ne(has_acl(it_sock), 1);
  it_stop_broker(SIGTERM);
  it_rmtree(it_rundir);

  /* with --allow-uid: RUNDIR 0750 and an ACL for uid 65534 on the four
   * paths (broker/access.c); the modes themselves do not widen */
  it_start_broker("--allow-uid", "65534", NULL);
  check_store_modes(0750);
  char data[IT_PATH * 2];
  snprintf(data, sizeof data, "%s/shoal.%s.data", it_shmdir, IT_NAME);
  int acl = has_acl(it_sock);
  if (acl >= 0) {
    ck_assert_msg(acl == 1, "no ACL on the socket with --allow-uid");
    ck_assert_msg(has_acl(data) == 1, "no ACL on the data object");
    ck_assert_msg(has_acl(it_rundir) == 1, "no ACL on RUNDIR");
  } else {
    fprintf(stderr, "note: %s has no POSIX ACLs; ACL checks skipped\n",
            it_shmdir);
  }
  it_stop_broker(SIGTERM);

  /* restarted without --allow-uid: the grants of the earlier run go */
  it_start_broker(NULL);
  if (acl >= 0) {
    ck_assert_msg(has_acl(it_sock) == 0, "the socket kept its ACL");
    ck_assert_msg(has_acl(data) == 0, "the data object kept its ACL");
    ck_assert_msg(has_acl(it_rundir) == 0, "RUNDIR kept its ACL");
  }
  it_stop_broker(SIGTERM);
  it_rmtree(it_rundir);

  /* a umask of 077 does not narrow what clients need (fchmod on the
   * shared objects, umask 0117 around bind) nor RUNDIR's documented
   * 0750 with --allow-* */
  umask(077);
  it_start_broker("--allow-uid", "65534", NULL);
  check_store_modes(0750);
  it_stop_broker(SIGTERM);
  umask(old);
}
END_TEST

/* ------------------------------------- HashFile/TailLog and file access -- */

static char secret_path[IT_PATH * 2], open_path[IT_PATH * 2];

static int files_as_nobody(void *arg) {
  who *w = arg;
  if (drop(w->uid, w->gid)) return 1;
  IT_CHK(access(secret_path, R_OK) != 0 && errno == EACCES,
         "nobody can read %s itself", secret_path);
  shoal *c = NULL;
  IT_CHK_RC(c, it_open(&c, 0), 0);
  char hex[SHOAL_HASH_HEX_MAX];
  /* the library opens the path in this process: -EACCES, nothing sent */
  IT_CHK_RC(c, shoal_hash_file(c, secret_path, NULL, hex, sizeof hex), -EACCES);
  IT_CHK_RC(c, shoal_hash_file(c, secret_path, "sha256", hex, sizeof hex),
            -EACCES);
  shoal_lines *l = NULL;
  IT_CHK_RC(c, shoal_tail(c, secret_path, 10, &l), -EACCES);
  IT_CHK(l == NULL, "tail of an unreadable file returned lines");
  /* a file nobody may read works: the denial above was the open's */
  int n = shoal_hash_file(c, open_path, "sha256", hex, sizeof hex);
  IT_CHK(n == 64, "hash of a readable file returned %d (%s): %s", n,
         shoal_errname(n), shoal_last_error(c));
  IT_CHK_RC(c, shoal_tail(c, open_path, 2, &l), 0);
  IT_CHK(l && l->n == 2 && strcmp(l->line[1], "public 2") == 0, "tail lines");
  shoal_lines_free(l);
  shoal_close(c);
  return 0;
}

/* send @rq as a frame without any descriptor; return the reply's status
 * (1 if there is no reply) */
static int raw_status(int fd, Shoal__Request *rq) {
  if (it_raw_send(fd, rq) != 0) return 1;
  const char *why = "";
  Shoal__Response *r = it_raw_recv(fd, 5000, &why);
  if (!r) {
    fprintf(stderr, "child %d: no reply: %s\n", (int)getpid(), why);
    return 1;
  }
  int st = r->has_status ? r->status : 0;
  if (st)
    fprintf(stderr, "child %d: request %d: %s: %s\n", (int)getpid(),
            (int)rq->body_case, shoal_errname(st), r->error);
  shoal__response__free_unpacked(r, NULL);
  return st;
}

/* As nobody over a raw connection: HashFile and TailLog carry no path,
 * and without a descriptor the broker refuses them (it never opens a
 * file for a client); the connection stays usable. */
static int raw_no_descriptor(void *arg) {
  who *w = arg;
  if (drop(w->uid, w->gid)) return 1;
  int fd = child_connect();
  IT_CHK(fd >= 0, "connect %s: %s", it_sock, strerror(errno));
  Shoal__Hello h = rf_hello_msg("it_access");
  Shoal__Request rq = SHOAL__REQUEST__INIT;
  rq.has_id = 1;
  rq.id = 1;
  rq.body_case = SHOAL__REQUEST__BODY_HELLO;
  rq.hello = &h;
  IT_CHK(raw_status(fd, &rq) == 0, "Hello");
  Shoal__HashFile hf = SHOAL__HASH_FILE__INIT;
  hf.algorithm = (char *)"sha256";
  rq.id = 2;
  rq.body_case = SHOAL__REQUEST__BODY_HASH_FILE;
  rq.hash_file = &hf;
  int st = raw_status(fd, &rq);
  IT_CHK(st == SHOAL_EPROTOCOL, "HashFile without a descriptor: %d (%s)", st,
         shoal_errname(st));
  Shoal__TailLog tl = SHOAL__TAIL_LOG__INIT;
  tl.has_lines = 1;
  tl.lines = 5;
  rq.id = 3;
  rq.body_case = SHOAL__REQUEST__BODY_TAIL_LOG;
  rq.tail_log = &tl;
  st = raw_status(fd, &rq);
  IT_CHK(st == SHOAL_EPROTOCOL, "TailLog without a descriptor: %d (%s)", st,
         shoal_errname(st));
  Shoal__Ping pg = SHOAL__PING__INIT;
  rq.id = 4;
  rq.body_case = SHOAL__REQUEST__BODY_PING;
  rq.ping = &pg;
  IT_CHK(raw_status(fd, &rq) == 0, "Ping after the refusals");
  close(fd);
  return 0;
}

static void write_file(const char *path, const char *text, mode_t mode) {
  FILE *f = fopen(path, "w");
  ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
  fputs(text, f);
  fclose(f);
  ck_assert_int_eq(chmod(path, mode), 0);
  ck_assert_int_eq(chown(path, 0, 0), 0);
}

START_TEST(files_need_client_access) {
  chmod(it_dir, 0777);
  snprintf(secret_path, sizeof secret_path, "%s/secret.log", it_dir);
  snprintf(open_path, sizeof open_path, "%s/public.log", it_dir);
  write_file(secret_path, "secret 1\nsecret 2\n", 0600);
  write_file(open_path, "public 1\npublic 2\n", 0644);
  it_start_broker("--allow-uid", "65534", NULL);
  who w = {NOBODY, NOBODY, 0};
  it_wait_ok(it_fork(files_as_nobody, &w, 20), "hash/tail as nobody");
  it_wait_ok(it_fork(raw_no_descriptor, &w, 20), "raw HashFile/TailLog");
  /* the broker read the public file only: never a byte of the secret */
  shoal *c = it_open_ok();
  shoal_stats st;
  IT_OK(c, shoal_stats_get(c, &st));
  ck_assert_msg(st.hash_bytes_read == 18,
                "the broker hashed %" PRIu64
                " bytes, expected the public file's 18",
                st.hash_bytes_read);
  shoal_close(c);
  it_stop_broker(SIGTERM);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("integration.access");
  TCase *tc = it_tcase("access", 60);
  tcase_add_test(tc, denied_uid);
  tcase_add_test(tc, readonly_mapping);
  tcase_add_test(tc, file_modes);
  tcase_add_test(tc, files_need_client_access);
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
