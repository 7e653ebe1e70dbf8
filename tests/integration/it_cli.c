/*
 * it_cli.c - the `shoal` CLI binary against a real shoald: put/get/del/cas/
 * scan/wait/stats/ping round trips, stdin values, --json output (checked by
 * string matching on the exact text the CLI promises), and the exit codes
 * that let scripts tell found / not found / error apart:
 *   0 ok, 1 not found, 2 usage, 3 conflict, 4 timeout, 5 broker unavailable,
 *   6 other error.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "itest.h"

static it_proc P;

/* Run the CLI with the NULL-terminated arguments; @in (may be NULL) on
 * stdin, @inlen bytes. Returns the exit code; output in P. */
static int run_in(const void *in, size_t inlen, const char *arg, ...) {
  char *argv[64];
  int n = 0;
  argv[n++] = (char *)it_cli;
  va_list ap;
  va_start(ap, arg);
  for (const char *a = arg; a && n < 63; a = va_arg(ap, const char *))
    argv[n++] = (char *)a;
  va_end(ap);
  argv[n] = NULL;
  it_proc_free(&P);
  return it_run(&P, in, inlen, 20000, argv);
}
#define run(...) run_in(NULL, 0, __VA_ARGS__, (const char *)NULL)
#define run_stdin(in, len, ...) run_in(in, len, __VA_ARGS__, (const char *)NULL)

#define EXPECT(call, code)                                                     \
  do {                                                                         \
    int ex_ = (call);                                                          \
    ck_assert_msg(ex_ == (code),                                               \
                  "%s: exit %d, expected %d\nstdout: %s\nstderr: %s", #call,   \
                  ex_, (code), P.out, P.err);                                  \
  } while (0)

#define OUT_HAS(s)                                                             \
  ck_assert_msg(strstr(P.out, (s)) != NULL, "stdout lacks '%s':\n%s", (s),     \
                P.out)
#define ERR_HAS(s)                                                             \
  ck_assert_msg(strstr(P.err, (s)) != NULL, "stderr lacks '%s':\n%s", (s),     \
                P.err)

/* stdout as a version number: digits and one newline */
static uint64_t out_version(void) {
  char *end;
  uint64_t v = strtoull(P.out, &end, 10);
  ck_assert_msg(end != P.out && strcmp(end, "\n") == 0,
                "expected a version and a newline, got '%s'", P.out);
  ck_assert_uint_gt(v, 0);
  return v;
}

/* The number after "\"NAME\":" in stdout. */
static uint64_t json_num(const char *name) {
  char pat[64];
  snprintf(pat, sizeof pat, "\"%s\":", name);
  const char *p = strstr(P.out, pat);
  ck_assert_msg(p != NULL, "no %s in %s", pat, P.out);
  return strtoull(p + strlen(pat), NULL, 10);
}

static void setup_checks(void) {
  ck_assert_msg(it_cli && access(it_cli, X_OK) == 0,
                "SHOAL_TEST_CLI must name the shoal binary, got %s",
                it_cli ? it_cli : "(unset)");
}

START_TEST(cli_usage) {
  setup_checks();
  EXPECT(run("--version"), 0);
  OUT_HAS("0.1.0");
  EXPECT(run("--help"), 0);
  OUT_HAS("SYNOPSIS");
  OUT_HAS("EXIT STATUS");
  for (const char *c = "get\0put\0del\0cas\0scan\0wait\0stats\0ping\0"; *c;
       c += strlen(c) + 1) {
    EXPECT(run(c, "--help"), 0);
    OUT_HAS(c);
  }
  EXPECT(run("help", "scan"), 0);
  OUT_HAS("--prefix");
  EXPECT(run(NULL), 2); /* no command */
  ERR_HAS("usage");
  EXPECT(run("frobnicate"), 2);
  EXPECT(run("--bogus", "get", "k"), 2);
  EXPECT(run("get"), 2);
  EXPECT(run("get", "a", "b"), 2);
  EXPECT(run("put", "a", "b", "c"), 2);
  EXPECT(run("get", "k", "--ttl", "5"), 2); /* not an option of get */
  EXPECT(run("--timeout", "soon", "get", "k"), 2);
  EXPECT(run("put", "k", "v", "--ttl", "-1"), 2);
  EXPECT(run("cas", "k", "notanumber", "v"), 2);
  EXPECT(run("scan", "--prefix", "a", "b"), 2);
}
END_TEST

START_TEST(cli_no_broker) {
  setup_checks();
  EXPECT(run("get", "k"), 5);
  ck_assert_msg(strncmp(P.err, "shoal: get: ", 12) == 0, "stderr: %s", P.err);
  ERR_HAS(shoal_strerror(SHOAL_EUNAVAIL));
  ck_assert_str_eq(P.out, "");
  EXPECT(run("--socket", "/nonexistent/x.sock", "put", "k", "v"), 5);
  ck_assert_msg(strncmp(P.err, "shoal: put: ", 12) == 0, "stderr: %s", P.err);
  EXPECT(run("ping"), 5);
}
END_TEST

START_TEST(cli_put_get_del) {
  setup_checks();
  it_start_broker(NULL);
  /* put prints the version; get prints the bytes, nothing added */
  EXPECT(run("--socket", it_sock, "put", "greeting", "hello"), 0);
  uint64_t v1 = out_version();
  EXPECT(run("get", "greeting"), 0);
  ck_assert_str_eq(P.out, "hello");
  EXPECT(run("--json", "get", "greeting"), 0);
  OUT_HAS("\"key\":\"greeting\"");
  OUT_HAS("\"value\":\"hello\"");
  ck_assert_uint_eq(json_num("version"), v1);
  ck_assert_uint_eq(json_num("expires_at_ms"), 0);
  ck_assert_msg(P.out[0] == '{' && strchr(P.out, '}'), "%s", P.out);
  /* options after the command work too */
  EXPECT(run("get", "greeting", "--json"), 0);
  OUT_HAS("\"value\":\"hello\"");

  /* not found: exit 1, nothing (null with --json) on stdout */
  EXPECT(run("get", "nope"), 1);
  ck_assert_str_eq(P.out, "");
  ERR_HAS("not found");
  EXPECT(run("--json", "get", "nope"), 1);
  ck_assert_str_eq(P.out, "null\n");

  /* values from stdin: omitted and "-" */
  const char text[] = "line one\nline two\n";
  EXPECT(run_stdin(text, sizeof text - 1, "put", "text"), 0);
  EXPECT(run("get", "text"), 0);
  ck_assert_str_eq(P.out, text);
  const char bin[] = {'\0', '\xff', '\x10', 'a'};
  EXPECT(run_stdin(bin, sizeof bin, "put", "bin", "-"), 0);
  uint64_t vb = out_version();
  EXPECT(run("get", "bin"), 0);
  ck_assert_uint_eq(P.outlen, sizeof bin);
  ck_assert(memcmp(P.out, bin, sizeof bin) == 0);
  EXPECT(run("--json", "get", "bin"), 0);
  OUT_HAS("\"value\":\"AP8QYQ==\""); /* base64 of 00 ff 10 61 */
  OUT_HAS("\"encoding\":\"base64\"");
  ck_assert_uint_eq(json_num("version"), vb);
  /* a value that looks like an option */
  EXPECT(run("put", "neg", "-5"), 0);
  EXPECT(run("get", "neg"), 0);
  ck_assert_str_eq(P.out, "-5");
  EXPECT(run("put", "--", "--odd", "--value"), 0);
  EXPECT(run("get", "--", "--odd"), 0);
  ck_assert_str_eq(P.out, "--value");

  /* JSON escaping of UTF-8 text */
  EXPECT(run("put", "esc", "a\"b\\c\n\x01 \xc3\xa9"), 0);
  EXPECT(run("--json", "get", "esc"), 0);
  OUT_HAS("\"value\":\"a\\\"b\\\\c\\n\\u0001 \xc3\xa9\"");
  ck_assert(strstr(P.out, "encoding") == NULL);

  /* TTL */
  EXPECT(run("put", "--ttl", "300", "brief", "x"), 0);
  EXPECT(run("--json", "get", "brief"), 0);
  ck_assert_uint_gt(json_num("expires_at_ms"), 0);
  it_sleep_ms(450);
  EXPECT(run("get", "brief"), 1);

  /* del: 0, then not found */
  EXPECT(run("del", "greeting"), 0);
  ck_assert_str_eq(P.out, "");
  EXPECT(run("del", "greeting"), 1);
  EXPECT(run("get", "greeting"), 1);
  EXPECT(run("--json", "del", "text"), 0);
  OUT_HAS("\"deleted\":true");

  /* errors: too big a key is "other" (6), with the message format */
  char big[2100];
  memset(big, 'k', sizeof big - 1);
  big[sizeof big - 1] = 0;
  EXPECT(run("put", big, "v"), 6);
  ck_assert_msg(strncmp(P.err, "shoal: put: ", 12) == 0, "stderr: %s", P.err);
  ERR_HAS(shoal_strerror(SHOAL_ETOOBIG));
}
END_TEST

START_TEST(cli_cas) {
  setup_checks();
  it_start_broker(NULL);
  EXPECT(run("cas", "c", "0", "first"), 0);
  uint64_t v1 = out_version();
  EXPECT(run("cas", "c", "0", "second"), 3);
  char want[64];
  snprintf(want, sizeof want, "%" PRIu64, v1);
  ERR_HAS(want); /* the current version, on stderr */
  ERR_HAS("shoal: cas: ");
  ck_assert_str_eq(P.out, "");
  EXPECT(run("--json", "cas", "c", "0", "second"), 3);
  ck_assert_uint_eq(json_num("current_version"), v1);
  OUT_HAS("\"conflict\":true");
  EXPECT(run_stdin("third", 5, "cas", "c", want), 0);
  uint64_t v2 = out_version();
  ck_assert_uint_gt(v2, v1);
  EXPECT(run("get", "c"), 0);
  ck_assert_str_eq(P.out, "third");
  EXPECT(run("cas", "absent", "7", "x"), 3);
  ERR_HAS("absent");
}
END_TEST

START_TEST(cli_scan) {
  setup_checks();
  it_start_broker(NULL);
  const char *kv[][2] = {{"s/2", "two"}, {"s/1", "one"}, {"t/1", "tee"},
                         {"s/3", "three"}, {"r/1", "are"}};
  for (size_t i = 0; i < 5; i++) EXPECT(run("put", kv[i][0], kv[i][1]), 0);
  EXPECT(run("scan", "--prefix", "s/"), 0);
  ck_assert_str_eq(P.out, "s/1\tone\ns/2\ttwo\ns/3\tthree\n");
  EXPECT(run("scan", "s/2", "t/"), 0);
  ck_assert_str_eq(P.out, "s/2\ttwo\ns/3\tthree\n");
  EXPECT(run("scan", "s/3"), 0);
  ck_assert_str_eq(P.out, "s/3\tthree\nt/1\ttee\n");
  EXPECT(run("scan"), 0);
  ck_assert_str_eq(P.out, "r/1\tare\ns/1\tone\ns/2\ttwo\ns/3\tthree\nt/1\ttee\n");
  EXPECT(run("scan", "--prefix=s/", "--limit", "2", "--keys-only"), 0);
  ck_assert_str_eq(P.out, "s/1\ns/2\n");
  EXPECT(run("scan", "--prefix", "zzz"), 0); /* nothing matched: still 0 */
  ck_assert_str_eq(P.out, "");
  EXPECT(run("--json", "scan", "--prefix", "s/"), 0);
  ck_assert_msg(P.out[0] == '[', "%s", P.out);
  OUT_HAS("{\"key\":\"s/1\",\"value\":\"one\",\"version\":");
  OUT_HAS("{\"key\":\"s/3\",\"value\":\"three\",\"version\":");
  ck_assert(strstr(P.out, "t/1") == NULL);
  int n = 0;
  for (const char *p = P.out; (p = strstr(p, "\"key\":")); p++) n++;
  ck_assert_int_eq(n, 3);
  ck_assert_msg(strstr(P.out, "]\n") != NULL, "%s", P.out);
  EXPECT(run("--json", "scan", "--prefix", "zzz"), 0);
  ck_assert_str_eq(P.out, "[]\n");
}
END_TEST

/* Start the CLI in the background with stdout to @path. */
static pid_t spawn_cli(const char *path, const char *a1, const char *a2,
                       const char *a3, const char *a4) {
  const char *argv[] = {it_cli, a1, a2, a3, a4, NULL};
  fflush(NULL);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) _exit(126);
    dup2(fd, STDOUT_FILENO);
    signal(SIGALRM, SIG_DFL);
    execv(it_cli, (char *const *)argv);
    _exit(127);
  }
  return pid;
}

START_TEST(cli_wait) {
  setup_checks();
  it_start_broker(NULL);
  EXPECT(run("put", "w", "0"), 0);
  uint64_t v0 = out_version();
  char out[IT_PATH * 2];
  snprintf(out, sizeof out, "%s/wait.out", it_dir);
  /* without --after: the next change */
  pid_t pid = spawn_cli(out, "wait", "w", "--timeout", "10000");
  it_sleep_ms(300);
  ck_assert_int_eq(waitpid(pid, NULL, WNOHANG), 0); /* still waiting */
  EXPECT(run("put", "w", "1"), 0);
  uint64_t v1 = out_version();
  uint64_t t0 = it_now_ms();
  int st = it_wait_exit(pid, 5000);
  ck_assert_msg(st != -1, "shoal wait did not return after the put");
  ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status 0x%x", st);
  ck_assert_uint_lt(it_now_ms() - t0, 1000);
  char *text = it_read_file(out, NULL);
  char want[32];
  snprintf(want, sizeof want, "%" PRIu64 "\n", v1);
  ck_assert_str_eq(text, want);
  free(text);
  /* --after an old version: at once */
  snprintf(want, sizeof want, "%" PRIu64, v0);
  EXPECT(run("wait", "w", "--after", want), 0);
  ck_assert_uint_eq(out_version(), v1);
  EXPECT(run("--json", "wait", "w", "--after", "0"), 0);
  ck_assert_uint_eq(json_num("version"), v1);
  /* timeout: 4 */
  t0 = it_now_ms();
  EXPECT(run("wait", "w", "--timeout", "200"), 4);
  ck_assert_uint_ge(it_now_ms() - t0, 190);
  ERR_HAS("shoal: wait: ");
  EXPECT(run("--timeout", "100", "wait", "never"), 4);
}
END_TEST

START_TEST(cli_stats_ping) {
  setup_checks();
  it_start_broker(NULL);
  EXPECT(run("put", "a", "1"), 0);
  EXPECT(run("put", "b", "2"), 0);
  EXPECT(run("stats"), 0);
  OUT_HAS("\nkeys: 2\n");
  OUT_HAS("requests.put: 2\n");
  char pid[32];
  snprintf(pid, sizeof pid, "broker_pid: %d\n", (int)it_broker);
  OUT_HAS(pid);
  EXPECT(run("--json", "stats"), 0);
  ck_assert_msg(P.out[0] == '{', "%s", P.out);
  ck_assert_uint_eq(json_num("keys"), 2);
  OUT_HAS("\"requests\":{");
  OUT_HAS("\"put\":2");
  EXPECT(run("ping"), 0);
  ck_assert_msg(strncmp(P.out, "PONG", 4) == 0, "%s", P.out);
  EXPECT(run("--json", "ping"), 0);
  OUT_HAS("\"ok\":true");
  /* the broker goes away: 5 */
  it_stop_broker(SIGTERM);
  EXPECT(run("ping"), 5);
  EXPECT(run("stats"), 5);
}
END_TEST

START_TEST(cli_store_lookup) {
  setup_checks();
  it_start_broker(NULL);
  /* no --socket, no SHOAL_SOCKET: RUNDIR/NAME.sock from SHOAL_RUNDIR */
  unsetenv("SHOAL_SOCKET");
  EXPECT(run("--name", "it", "put", "k", "v"), 0);
  EXPECT(run("--name=it", "get", "k"), 0);
  ck_assert_str_eq(P.out, "v");
  /* another name: no broker there */
  EXPECT(run("--name", "other", "get", "k"), 5);
  ERR_HAS("other.sock");
  /* an invalid name is a usage error */
  EXPECT(run("--name", "bad/name", "get", "k"), 2);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("integration.cli");
  TCase *tc = it_tcase("cli", 60);
  tcase_add_test(tc, cli_usage);
  tcase_add_test(tc, cli_no_broker);
  tcase_add_test(tc, cli_put_get_del);
  tcase_add_test(tc, cli_cas);
  tcase_add_test(tc, cli_scan);
  tcase_add_test(tc, cli_wait);
  tcase_add_test(tc, cli_stats_ping);
  tcase_add_test(tc, cli_store_lookup);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return it_run_suite(suite()); }
