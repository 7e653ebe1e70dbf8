/*
 * test_wait.c - shm_wait: a waiter in another process wakes when its key's
 * version moves past @after (put, delete, batch, creation), not for other
 * keys; timeouts return SHOAL_ETIMEOUT in about the right time; the writer
 * calls FUTEX_WAKE only when someone waits.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "unit.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

struct wres {
  int rc;
  uint64_t ver;
  uint64_t elapsed;
};

struct waiter {
  pid_t pid;
  int ready, result;
};

/* Fork a waiter on @key (after @after, @timeout ms). It says 'r' once its
 * view is open, then waits and writes a struct wres. */
static struct waiter start_waiter(const char *key, uint64_t after,
                                  int timeout) {
  int r[2], res[2];
  ck_assert_int_eq(pipe(r), 0);
  ck_assert_int_eq(pipe(res), 0);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    ut_child_alarm(60);
    close(r[0]);
    close(res[0]);
    struct wres w = {0};
    shm_view *v = NULL;
    w.rc = ut_view_open(&v, 0);
    ssize_t n = write(r[1], "r", 1);
    (void)n;
    if (w.rc == 0) {
      uint64_t t0 = ut_now_ms();
      w.rc = shm_wait(v, key, strlen(key), after, timeout, &w.ver);
      w.elapsed = ut_now_ms() - t0;
      shm_view_close(v);
    }
    n = write(res[1], &w, sizeof w);
    _exit(0);
  }
  close(r[1]);
  close(res[1]);
  char c;
  ck_assert_int_eq(read(r[0], &c, 1), 1);
  close(r[0]);
  return (struct waiter){pid, -1, res[0]};
}

static struct wres finish_waiter(struct waiter w) {
  struct wres res = {.rc = 12345};
  ck_assert_int_eq(read(w.result, &res, sizeof res), (ssize_t)sizeof res);
  close(w.result);
  ut_wait_child_ok(w.pid);
  return res;
}

/* Give the waiter time to get into FUTEX_WAIT. */
#define SETTLE_MS 200

START_TEST(wait_wakes_on_put) {
  uint64_t v1 = ut_put_gen(ut_s, "k", 1, 10, 1);
  uint64_t wakes0 = shm_store_wakes(ut_s);
  struct waiter w = start_waiter("k", v1, 5000);
  ut_sleep_ms(SETTLE_MS);
  uint64_t v2 = ut_put_gen(ut_s, "k", 1, 10, 2);
  struct wres r = finish_waiter(w);
  CK_OK(r.rc);
  ck_assert_uint_eq(r.ver, v2);
  ck_assert_msg(r.elapsed >= SETTLE_MS / 2 && r.elapsed < 3000,
                "woke after %" PRIu64 " ms", r.elapsed);
  ck_assert_uint_gt(shm_store_wakes(ut_s), wakes0);
}
END_TEST

START_TEST(wait_for_creation) {
  struct waiter w = start_waiter("newkey", 0, 5000);
  ut_sleep_ms(SETTLE_MS);
  uint64_t v = ut_put_gen(ut_s, "newkey", 6, 10, 1);
  struct wres r = finish_waiter(w);
  CK_OK(r.rc);
  ck_assert_uint_eq(r.ver, v);
  ck_assert_uint_lt(r.elapsed, 3000);
}
END_TEST

/* A delete counts; the version is the tombstone's (shm.h). */
START_TEST(wait_wakes_on_delete) {
  uint64_t v1 = ut_put_gen(ut_s, "k", 1, 10, 1);
  struct waiter w = start_waiter("k", v1, 5000);
  ut_sleep_ms(SETTLE_MS);
  uint64_t dv = 0;
  CK_OK(shm_del(ut_s, "k", 1, &dv));
  struct wres r = finish_waiter(w);
  CK_OK(r.rc);
  ck_assert_uint_eq(r.ver, dv);
  ck_assert_uint_lt(r.elapsed, 3000);
}
END_TEST

START_TEST(wait_wakes_on_batch) {
  uint64_t v1 = ut_put_gen(ut_s, "k", 1, 10, 1);
  struct waiter w = start_waiter("k", v1, 5000);
  ut_sleep_ms(SETTLE_MS);
  shm_op ops[] = {
      {.kind = SHM_OP_PUT, .key = "x", .klen = 1, .val = "1", .vlen = 1},
      {.kind = SHM_OP_CAS, .key = "k", .klen = 1, .expect = v1, .val = "2",
       .vlen = 1},
  };
  uint64_t seq = 0;
  CK_OK(shm_batch(ut_s, ops, 2, &seq, NULL));
  struct wres r = finish_waiter(w);
  CK_OK(r.rc);
  ck_assert_uint_eq(r.ver, seq);
}
END_TEST

/* Writes to other keys (some share the doorbell) do not end the wait. */
START_TEST(wait_ignores_other_keys) {
  uint64_t v1 = ut_put_gen(ut_s, "k", 1, 10, 1);
  struct waiter w = start_waiter("k", v1, 5000);
  ut_sleep_ms(SETTLE_MS);
  uint64_t t0 = ut_now_ms();
  /* 4096 keys > SHM_DOORBELLS: several ring k's doorbell */
  for (int i = 0; i < 4096; i++) {
    char key[16];
    int kl = snprintf(key, sizeof key, "o%d", i);
    ut_put_gen(ut_s, key, kl, 4, i);
  }
  ut_sleep_ms(300);
  uint64_t v2 = ut_put_gen(ut_s, "k", 1, 10, 2);
  uint64_t waited = ut_now_ms() - t0;
  struct wres r = finish_waiter(w);
  CK_OK(r.rc);
  ck_assert_uint_eq(r.ver, v2);
  ck_assert_msg(r.elapsed + 50 >= waited,
                "waiter returned after %" PRIu64 " ms, before its key changed "
                "(%" PRIu64 " ms)", r.elapsed, waited);
}
END_TEST

START_TEST(wait_many_waiters) {
  uint64_t v1 = ut_put_gen(ut_s, "k", 1, 10, 1);
  struct waiter w[4];
  for (int i = 0; i < 4; i++) w[i] = start_waiter("k", v1, 5000);
  ut_sleep_ms(SETTLE_MS);
  uint64_t v2 = ut_put_gen(ut_s, "k", 1, 10, 2);
  for (int i = 0; i < 4; i++) {
    struct wres r = finish_waiter(w[i]);
    CK_OK(r.rc);
    ck_assert_uint_eq(r.ver, v2);
    ck_assert_uint_lt(r.elapsed, 3000);
  }
}
END_TEST

START_TEST(wait_timeout) {
  uint64_t v1 = ut_put_gen(ut_s, "k", 1, 10, 1);
  uint64_t ver = 0;
  uint64_t t0 = ut_now_ms();
  CK_RC(shm_wait(ut_v, "k", 1, v1, 300, &ver), SHOAL_ETIMEOUT);
  uint64_t el = ut_now_ms() - t0;
  ck_assert_msg(el >= 280 && el < 2000, "300 ms timeout took %" PRIu64 " ms",
                el);
  ck_assert_uint_eq(ver, v1);
  /* absent key */
  t0 = ut_now_ms();
  ver = 99;
  CK_RC(shm_wait(ut_v, "absent", 6, 0, 100, &ver), SHOAL_ETIMEOUT);
  el = ut_now_ms() - t0;
  ck_assert_msg(el >= 90 && el < 2000, "100 ms timeout took %" PRIu64 " ms",
                el);
  ck_assert_uint_eq(ver, 0);
  /* 0: just a check */
  t0 = ut_now_ms();
  CK_RC(shm_wait(ut_v, "k", 1, v1, 0, &ver), SHOAL_ETIMEOUT);
  ck_assert_uint_lt(ut_now_ms() - t0, 100);
  /* a timeout in a child too, while the writer keeps writing other keys */
  struct waiter w = start_waiter("k", v1, 400);
  for (int i = 0; i < 50; i++) {
    ut_put_gen(ut_s, "other", 5, 4, i);
    ut_sleep_ms(5);
  }
  struct wres r = finish_waiter(w);
  CK_RC(r.rc, SHOAL_ETIMEOUT);
  ck_assert_msg(r.elapsed >= 380 && r.elapsed < 2500,
                "400 ms timeout took %" PRIu64 " ms", r.elapsed);
}
END_TEST

START_TEST(wait_already_newer) {
  uint64_t v1 = ut_put_gen(ut_s, "k", 1, 10, 1);
  uint64_t ver = 0;
  uint64_t t0 = ut_now_ms();
  CK_OK(shm_wait(ut_v, "k", 1, v1 - 1, 5000, &ver));
  ck_assert_uint_eq(ver, v1);
  ver = 0;
  CK_OK(shm_wait(ut_v, "k", 1, 0, 5000, &ver));
  ck_assert_uint_eq(ver, v1);
  ck_assert_uint_lt(ut_now_ms() - t0, 100);
  /* NULL version pointer */
  CK_OK(shm_wait(ut_v, "k", 1, 0, 5000, NULL));
}
END_TEST

START_TEST(wait_inside_section_einval) {
  uint64_t v1 = ut_put_gen(ut_s, "k", 1, 10, 1);
  CK_OK(shm_read_begin(ut_v));
  uint64_t ver = 0;
  CK_RC(shm_wait(ut_v, "k", 1, v1, 100, &ver), SHOAL_EINVAL);
  shm_read_end(ut_v);
  /* the view still works */
  CK_RC(shm_wait(ut_v, "k", 1, v1 - 1, 100, &ver), 0);
}
END_TEST

/* The writer only calls FUTEX_WAKE when someone waits. */
START_TEST(no_wake_without_waiters) {
  ut_put_gen(ut_s, "k", 1, 10, 0);
  uint64_t w0 = shm_store_wakes(ut_s);
  for (int i = 0; i < 500; i++) ut_put_gen(ut_s, "k", 1, 10, i);
  ck_assert_uint_eq(shm_store_wakes(ut_s), w0);
  /* a waiter that timed out does not leave the waiter count raised */
  uint64_t v = 0;
  CK_RC(shm_wait(ut_v, "k", 1, UINT64_MAX - 1, 50, &v), SHOAL_ETIMEOUT);
  for (int i = 0; i < 100; i++) ut_put_gen(ut_s, "k", 1, 10, i);
  ck_assert_uint_eq(shm_store_wakes(ut_s), w0);
}
END_TEST

/* A waiter killed while waiting does not leave the count raised forever
 * (the writer may wake needlessly, but a correct count is better). */
START_TEST(wait_waiter_killed) {
  uint64_t v1 = ut_put_gen(ut_s, "k", 1, 10, 1);
  struct waiter w = start_waiter("k", v1, 60000);
  ut_sleep_ms(SETTLE_MS);
  kill(w.pid, SIGKILL);
  int st;
  ck_assert_int_eq(waitpid(w.pid, &st, 0), w.pid);
  close(w.result);
  /* the store still works and wakes real waiters */
  struct waiter w2 = start_waiter("k", v1, 5000);
  ut_sleep_ms(SETTLE_MS);
  uint64_t v2 = ut_put_gen(ut_s, "k", 1, 10, 2);
  struct wres r = finish_waiter(w2);
  CK_OK(r.rc);
  ck_assert_uint_eq(r.ver, v2);
}
END_TEST

Suite *wait_suite(void) {
  Suite *s = suite_create("wait");
  TCase *tc = ut_tcase("wait", 1, 60);
  tcase_add_test(tc, wait_wakes_on_put);
  tcase_add_test(tc, wait_for_creation);
  tcase_add_test(tc, wait_wakes_on_delete);
  tcase_add_test(tc, wait_wakes_on_batch);
  tcase_add_test(tc, wait_ignores_other_keys);
  tcase_add_test(tc, wait_many_waiters);
  tcase_add_test(tc, wait_timeout);
  tcase_add_test(tc, wait_already_newer);
  tcase_add_test(tc, wait_inside_section_einval);
  tcase_add_test(tc, no_wake_without_waiters);
  tcase_add_test(tc, wait_waiter_killed);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return ut_run(wait_suite()); }
