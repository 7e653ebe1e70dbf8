/*
 * unit.h - shared helpers of the unit tests (tests/unit, STYLE 10).
 *
 * Every test runs in its own forked child (check's CK_FORK) with a private
 * store directory and a unique store name:
 *
 *   - an *unchecked* fixture (run once per TCase, in the parent runner)
 *     creates a base directory /dev/shm/shoal-unit-XXXXXX and removes the
 *     whole tree afterwards, so even a test that crashes leaks nothing;
 *   - a *checked* fixture (run in the forked child around every test)
 *     creates the test's own directory under the base, and at teardown closes
 *     every handle the test left in ut_s / ut_v / ut_v2, unlinks the store
 *     and removes the directory. It also registers an atexit() hook so a
 *     failing assertion (check exit()s the child) still cleans up.
 *
 * Values written by the tests are derived from (key, generation) so that
 * every byte a get returns can be verified.
 */
#ifndef SHOAL_TESTS_UNIT_H
#define SHOAL_TESTS_UNIT_H

#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>

#include "shoal/error.h"
#include "shoal/shm.h"

/* Assert that an int-returning expression yields exactly @want; the failure
 * message names both codes. */
#define CK_RC(expr, want)                                                      \
  do {                                                                         \
    int ck_rc_got_ = (int)(expr);                                              \
    int ck_rc_want_ = (int)(want);                                             \
    ck_assert_msg(ck_rc_got_ == ck_rc_want_,                                   \
                  "%s returned %d (%s), expected %d (%s)", #expr, ck_rc_got_,  \
                  shoal_errname(ck_rc_got_), ck_rc_want_,                      \
                  shoal_errname(ck_rc_want_));                                 \
  } while (0)
#define CK_OK(expr) CK_RC(expr, 0)

/* Private directory, store name and handles of the current test. */
extern char ut_base[256];
extern char ut_dir[300];
extern char ut_name[SHM_NAME_MAX + 1];
extern shm_store *ut_s;
extern shm_view *ut_v;
extern shm_view *ut_v2;

/* Default reservation of the test stores: sparse, so it costs only what is
 * written, and big enough for the 200k-key and 3 MiB tests. */
#define UT_SIZE (256ull << 20)

void ut_base_setup(void);    /* unchecked fixture */
void ut_base_teardown(void); /* unchecked fixture */
void ut_setup(void);         /* checked: private dir + name only */
void ut_setup_store(void);   /* checked: + store (CREATE|EXCL) + view */
void ut_teardown(void);      /* checked: close all, unlink, rmdir */

/* A TCase with the fixtures above and a timeout in seconds. */
TCase *ut_tcase(const char *name, int with_store, double timeout);

/* Open (create with @flags) the test's store in ut_dir as ut_name. */
int ut_store_open(shm_store **s, uint64_t size, uint32_t slots, unsigned flags);
/* Open a view on the test's store. */
int ut_view_open(shm_view **v, unsigned flags);
/* Path of the test store's object: suffix "data" or "readers". */
void ut_obj_path(char *buf, size_t cap, const char *dir, const char *name,
                 const char *suffix);

/* Deterministic value bytes for (key, generation). */
void ut_fill(void *buf, size_t len, const void *key, size_t klen, uint64_t gen);
/* 1 if @data/@len is exactly what ut_fill would write. */
int ut_check_bytes(const void *data, size_t len, const void *key, size_t klen,
                   uint64_t gen);

/* Convenience: put/get of key "k" with generated values. */
uint64_t ut_put_gen(shm_store *s, const void *key, size_t klen, size_t vlen,
                    uint64_t gen);
/* Get inside a fresh section of @v; returns the shm_get code, copies the
 * value into a malloc'd *copy (if non-NULL; caller frees). */
int ut_get_copy(shm_view *v, const void *key, size_t klen, void **copy,
                size_t *len, uint64_t *version);
/* Assert key holds the generated value of @gen and length @vlen. */
void ut_assert_gen(shm_view *v, const void *key, size_t klen, size_t vlen,
                   uint64_t gen);

/* Fork a child that runs fn(arg) and reports its int result through a pipe.
 * Returns that result; fails the test if the child died or said nothing. */
int ut_in_child(int (*fn)(void *), void *arg);

/* In a forked helper child: die by SIGALRM after @secs seconds. Resets the
 * SIGALRM disposition first - check's own handler (inherited from the test
 * process) would kill the whole process group, test included. */
void ut_child_alarm(unsigned secs);

/* Wait for child @pid; fail the test unless it exited with status 0. */
void ut_wait_child_ok(pid_t pid);

uint64_t ut_now_ms(void); /* CLOCK_MONOTONIC ms */
void ut_sleep_ms(unsigned ms);

/* Run the suite in fork mode; returns the exit status for main(). */
int ut_run(Suite *s);

/* shm_stats of the writer. */
void ut_stats(shm_store *s, shm_stats *st);

/* Collect shm_check problems (prints them; returns the count). */
unsigned ut_check(shm_view *v, int quiescent);

#endif
