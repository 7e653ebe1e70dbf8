/*
 * itest.h - helpers of the integration tests (tests/integration, STYLE 10).
 *
 * Every test runs a REAL shoald from the build tree (its path comes from the
 * environment: SHOAL_TEST_SHOALD, and the CLI's from SHOAL_TEST_CLI; ctest
 * sets both, and the build bakes in the same paths as defaults) and drives
 * it with real client processes.
 *
 * Isolation and cleanup, like tests/unit:
 *   - an unchecked fixture (in check's runner process, once per TCase)
 *     creates a base directory $SHOAL_TEST_SHM_DIR/shoal-itest-XXXXXX
 *     (default /dev/shm, so the stores sit on a tmpfs) and removes the whole
 *     tree afterwards, even when a test crashed or timed out;
 *   - a checked fixture (in the forked test process) creates the test's own
 *     directory under the base, with run/ (the broker's RUNDIR: socket and
 *     lock) and shm/ (--shm-dir: the two shared objects), and sets
 *     SHOAL_RUNDIR and SHOAL_SOCKET for the clients. Stores are never
 *     created in /dev/shm itself.
 *   - every broker a test starts is recorded; an atexit() hook of the test
 *     process (check exit()s it on a failed assertion) SIGKILLs the ones
 *     still running and removes the test directory. Brokers also get
 *     PR_SET_PDEATHSIG and share the test's process group, which check
 *     SIGKILLs when a test times out.
 *
 * Child processes: it_fork() runs a function in a child that reports by its
 * exit status (0 = all good) and prints what went wrong to stderr. Children
 * must not call ck_assert (that would exit() through check's machinery);
 * they use IT_CHK() below and return 1.
 */
#ifndef SHOAL_TESTS_ITEST_H
#define SHOAL_TESTS_ITEST_H

#include <check.h>
#include <inttypes.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>

#include "shoal/shoal.h"

/* Assert an int-returning expression yields exactly @want; the message names
 * both codes and the handle's last error (@c NULL: the detail of this
 * thread's last failed shoal_open, as libshoal keeps it). */
#define IT_RC(c, expr, want)                                                   \
  do {                                                                         \
    int it_rc_got_ = (int)(expr);                                              \
    int it_rc_want_ = (int)(want);                                             \
    ck_assert_msg(it_rc_got_ == it_rc_want_,                                   \
                  "%s returned %d (%s), expected %d (%s); last error: %s",     \
                  #expr, it_rc_got_, shoal_errname(it_rc_got_), it_rc_want_,   \
                  shoal_errname(it_rc_want_), shoal_last_error(c));            \
  } while (0)
#define IT_OK(c, expr) IT_RC(c, expr, 0)

/* In a child: check @cond, else print the message and return 1. */
#define IT_CHK(cond, ...)                                                      \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "child %d: %s:%d: check failed: %s: ", (int)getpid(),    \
              __FILE__, __LINE__, #cond);                                      \
      fprintf(stderr, __VA_ARGS__);                                            \
      fputc('\n', stderr);                                                     \
      return 1;                                                                \
    }                                                                          \
  } while (0)
/* In a child: an expression must return @want (a shoal code). */
#define IT_CHK_RC(c, expr, want)                                               \
  do {                                                                         \
    int it_crc_ = (int)(expr);                                                 \
    IT_CHK(it_crc_ == (int)(want), "returned %d (%s), expected %s; %s",        \
           it_crc_, shoal_errname(it_crc_), shoal_errname(want),               \
           shoal_last_error(c));                                               \
  } while (0)

/* The store name every test uses (each test has its own directories). */
#define IT_NAME "it"

/* Short enough for a socket path (sun_path holds 108 bytes). */
#define IT_PATH 256
extern char it_base[IT_PATH / 2]; /* per TCase */
extern char it_dir[IT_PATH / 2];  /* per test */
extern char it_rundir[IT_PATH * 3 / 4]; /* it_dir/run */
extern char it_shmdir[IT_PATH * 3 / 4]; /* it_dir/shm */
extern char it_sock[IT_PATH];     /* it_rundir/it.sock */
extern const char *it_shoald;    /* $SHOAL_TEST_SHOALD */
extern const char *it_cli;       /* $SHOAL_TEST_CLI */
extern pid_t it_broker;          /* the broker it_start_broker last started */

/* Fixtures; it_tcase() adds both and a timeout in seconds. */
void it_base_setup(void);
void it_base_teardown(void);
void it_setup(void);
void it_teardown(void);
TCase *it_tcase(const char *name, double timeout);
/* Run the suite in fork mode (CK_FORK=no honoured); returns main()'s status. */
int it_run_suite(Suite *s);

/* Temporary directories: create @parent/@prefixXXXXXX into @buf (mode 0700);
 * 0 or -errno. it_rmtree removes a tree, ignoring errors. */
int it_mkdtemp(char *buf, size_t cap, const char *parent, const char *prefix);
void it_rmtree(const char *path);

/*
 * it_start_broker - start shoald for the test's store and wait until its
 * socket accepts a connection (polling every 10 ms, up to 10 s). Arguments
 * after the built-in "--name it --shm-dir SHMDIR" come from the
 * NULL-terminated list (e.g. "--size", "8388608", NULL). stderr goes to
 * it_dir/broker.log (appended; shown when the start fails). Fails the test
 * if the broker exits or does not listen in time. Sets and returns
 * it_broker.
 */
pid_t it_start_broker(const char *arg, ...);
/* Start shoald without waiting for its socket; its stderr goes to @log
 * (NULL: the shared broker.log). For brokers expected to fail. */
pid_t it_spawn_broker(const char *log, const char *arg, ...);
/* NOTIFY_SOCKET for the brokers started from now on (NULL, the default:
 * none, so a test run under systemd does not leak its socket to them). */
extern const char *it_notify_socket;
/* Send @sig to it_broker and reap it (SIGKILL after 10 s): returns the wait
 * status. it_broker becomes 0. */
int it_stop_broker(int sig);
/* Reap @pid, waiting at most @timeout_ms: the wait status, or -1 if it is
 * still running. */
int it_wait_exit(pid_t pid, int timeout_ms);
/* Print the broker log (last 4 KiB) to stderr. */
void it_dump_log(const char *log);
/* 1 if file @path contains @needle (case-insensitive). */
int it_file_contains(const char *path, const char *needle);
/* Read a whole file (NUL-terminated, malloc'd) or NULL. */
char *it_read_file(const char *path, size_t *len);

/* Fill a sockaddr_un for @path; fails the test if it does not fit. */
struct sockaddr_un;
void it_sockaddr(struct sockaddr_un *sa, const char *path);

/* Open a client handle on the test's broker (explicit socket; connect
 * timeout 5 s, reply timeout 10 s). */
int it_open(shoal **c, unsigned flags);
/* The same with another connect timeout: it also bounds how long a write
 * retries reconnecting while no broker runs before SHOAL_EUNAVAIL. */
int it_open_ct(shoal **c, unsigned flags, int connect_timeout_ms);
/* Open and fail the test on error. */
shoal *it_open_ok(void);

/* Children (see the header comment). it_fork returns the pid; the child
 * arms alarm(@secs) (0: 60 s) and _exit()s with fn's result. */
pid_t it_fork(int (*fn)(void *), void *arg, unsigned secs);
/* Reap @pid and fail the test unless it exited 0; @what names it. */
void it_wait_ok(pid_t pid, const char *what);

/* Shared memory for parent and children (MAP_SHARED | MAP_ANONYMOUS). */
void *it_shared(size_t size);

/* Time. */
uint64_t it_now_us(void); /* CLOCK_MONOTONIC: comparable across processes */
uint64_t it_now_ms(void);
void it_sleep_ms(unsigned ms);

/* Self-checking values: a value of @len >= 16 bytes that carries @gen and
 * a fill derived from (key, gen); it_value_check says whether @p/@n is
 * exactly such a value and stores its gen. */
void it_value_make(void *buf, size_t len, const char *key, uint64_t gen);
int it_value_check(const void *p, size_t n, const char *key, uint64_t *gen);

/* Stats helpers: the "name=value" counter @name in @pairs, or 0. */
uint64_t it_counter(const char *pairs, const char *name);

/* Run a program (argv[0] is the path) with @input on stdin; collect stdout
 * and stderr (NUL-terminated, malloc'd). Returns the exit code, or 128+sig
 * if it was killed; kills it after @timeout_ms (0: 20 s). */
typedef struct it_proc {
  int status; /* exit code, 128 + signal, or -1 */
  char *out, *err;
  size_t outlen, errlen;
} it_proc;
int it_run(it_proc *p, const void *input, size_t inlen, int timeout_ms,
           char *const argv[]);
void it_proc_free(it_proc *p);

#endif
