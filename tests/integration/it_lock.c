/*
 * it_lock.c - one broker per store (DESIGN.md section 2: RUNDIR/NAME.lock,
 * flock): a second shoald on the same store is refused with a non-zero exit
 * and a message that names the lock or the running broker, and leaves the
 * first one (and its socket) alone; once the first is gone, a new one
 * starts.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "itest.h"

static void assert_refused(pid_t pid, const char *log, const char *what) {
  int st = it_wait_exit(pid, 10000);
  if (st == -1) it_dump_log(log);
  ck_assert_msg(st != -1, "%s: the second shoald is still running after 10 s",
                what);
  ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) != 0,
                "%s: the second shoald ended with status 0x%x, expected a "
                "non-zero exit",
                what, st);
  char *text = it_read_file(log, NULL);
  ck_assert_ptr_nonnull(text);
  /* skip the line itest wrote */
  const char *msg = strchr(text, '\n');
  msg = msg ? msg + 1 : text;
  int names_it = strcasestr(msg, "lock") || strcasestr(msg, "already") ||
                 strcasestr(msg, "another");
  ck_assert_msg(names_it, "%s: the message does not mention the lock or the "
                "running broker:\n%s", what, msg);
  free(text);
}

static void assert_first_serves(pid_t first) {
  shoal *c = it_open_ok();
  IT_OK(c, shoal_put(c, "still", 5, "here", 4, NULL));
  shoal_stats st;
  IT_OK(c, shoal_stats_get(c, &st));
  ck_assert_int_eq(st.broker_pid, first);
  shoal_close(c);
}

START_TEST(second_broker_refused) {
  pid_t first = it_start_broker(NULL);
  struct stat sb0;
  ck_assert_int_eq(stat(it_sock, &sb0), 0);

  /* same store, same socket */
  char log[IT_PATH * 2];
  snprintf(log, sizeof log, "%s/second.log", it_dir);
  pid_t second = it_spawn_broker(log, NULL);
  assert_refused(second, log, "same socket");
  /* the first broker's socket is untouched (not unlinked and rebound) */
  struct stat sb1;
  ck_assert_int_eq(stat(it_sock, &sb1), 0);
  ck_assert_uint_eq(sb0.st_ino, sb1.st_ino);
  assert_first_serves(first);

  /* same store through another socket path: the store is what is locked */
  char sock2[IT_PATH * 2];
  snprintf(sock2, sizeof sock2, "%s/other.sock", it_rundir);
  snprintf(log, sizeof log, "%s/third.log", it_dir);
  pid_t third = it_spawn_broker(log, "--socket", sock2, NULL);
  assert_refused(third, log, "another socket");
  assert_first_serves(first);

  /* the first stops; now a new broker may start */
  int st = it_stop_broker(SIGTERM);
  ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status 0x%x", st);
  it_start_broker(NULL);
  shoal *c = it_open_ok();
  char buf[8];
  size_t len = 0;
  IT_OK(c, shoal_get_copy(c, "still", 5, buf, sizeof buf, &len, NULL));
  ck_assert(len == 4 && memcmp(buf, "here", 4) == 0);
  shoal_close(c);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("integration.lock");
  TCase *tc = it_tcase("lock", 40);
  tcase_add_test(tc, second_broker_refused);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return it_run_suite(suite()); }
