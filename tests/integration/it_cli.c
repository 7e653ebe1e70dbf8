/*
 * it_cli.c - the `shoal` CLI binary against a real shoald: put/get/del/cas/
 * scan/wait/stats/ping round trips, stats --prometheus (parsed line by
 * line), stdin values, --json output (checked by string matching on the
 * exact text the CLI promises), hash (byte for byte
 * against sha256sum, sha512sum and b2sum, and checked by sha256sum -c),
 * tail (-n edge cases, a big file) and tail -f (a writer appending,
 * truncating and rotating, the CLI stopped by SIGTERM), and the exit codes
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
  for (const char *c =
           "get\0put\0del\0cas\0scan\0wait\0stats\0ping\0hash\0tail\0";
       *c;
       c += strlen(c) + 1) {
    EXPECT(run(c, "--help"), 0);
    OUT_HAS(c);
  }
  EXPECT(run("help", "scan"), 0);
  OUT_HAS("--prefix");
  EXPECT(run("help", "tail"), 0);
  OUT_HAS("-f");
  OUT_HAS("file rotated; following the new file");
  EXPECT(run("--help"), 0);
  OUT_HAS("hash FILE... [--alg ALG]");
  OUT_HAS("tail FILE [-n N] [-f]");
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
  EXPECT(run("hash", "/etc/hostname"), 5);
  EXPECT(run("tail", "/etc/hostname"), 5);
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

/* `stats --prometheus`: the text exposition format, parsed line by line.
 * Comments are "# HELP NAME TEXT" or "# TYPE NAME gauge|counter", each
 * metric's TYPE before its samples; every other line is
 * `name{labels} value` with store="it" among the labels. */
static int prom_name_char(char ch, int first) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' ||
         ch == ':' || (!first && ch >= '0' && ch <= '9');
}

/* Parse @line as a sample; the metric name goes to @name. Returns NULL or
 * what is wrong with it. */
static const char *prom_sample_line(const char *line, char *name, size_t cap,
                                    int *has_store) {
  const char *p = line;
  size_t n = 0;
  if (!prom_name_char(*p, 1)) return "the name does not start right";
  while (prom_name_char(*p, 0)) {
    if (n + 1 < cap) name[n++] = *p;
    p++;
  }
  name[n] = 0;
  *has_store = 0;
  if (*p != '{') return "no '{' after the name";
  p++;
  while (*p != '}') {
    const char *lname = p;
    if (!prom_name_char(*p, 1)) return "a label name does not start right";
    while (prom_name_char(*p, 0))
      p++;
    size_t lnlen = (size_t)(p - lname);
    if (p[0] != '=' || p[1] != '"') return "no =\" after a label name";
    p += 2;
    const char *val = p;
    while (*p && *p != '"') {
      if (*p == '\\') {
        if (p[1] != '\\' && p[1] != '"' && p[1] != 'n')
          return "a bad escape in a label value";
        p++;
      }
      p++;
    }
    if (*p != '"') return "an unterminated label value";
    if (lnlen == 5 && strncmp(lname, "store", 5) == 0 && p - val == 2 &&
        strncmp(val, "it", 2) == 0)
      *has_store = 1;
    p++;
    if (*p == ',')
      p++;
    else if (*p != '}')
      return "no ',' or '}' after a label";
  }
  p++;
  if (*p != ' ') return "no space before the value";
  p++;
  char *end;
  errno = 0;
  double v = strtod(p, &end);
  if (end == p || *end || errno || v < 0) return "the value is not a number";
  return NULL;
}

START_TEST(cli_stats_prometheus) {
  setup_checks();
  EXPECT(run("stats", "--help"), 0);
  OUT_HAS("--prometheus");
  OUT_HAS("shoal_requests_total");
  EXPECT(run("--json", "stats", "--prometheus"), 2);
  ERR_HAS("not both");
  EXPECT(run("get", "k", "--prometheus"), 2); /* stats only */

  it_start_broker(NULL);
  EXPECT(run("put", "a", "1"), 0);
  EXPECT(run("put", "b", "2"), 0);
  EXPECT(run("cas", "a", "999", "x"), 3); /* an error to count */
  EXPECT(run("--name", IT_NAME, "stats", "--prometheus"), 0);

  static const char *const want[] = {"shoal_up",
                                     "shoal_keys",
                                     "shoal_commit_seq",
                                     "shoal_commits_total",
                                     "shoal_size_bytes",
                                     "shoal_used_bytes",
                                     "shoal_free_bytes",
                                     "shoal_index_capacity",
                                     "shoal_index_used",
                                     "shoal_records",
                                     "shoal_retired_bytes",
                                     "shoal_reclaimed_total",
                                     "shoal_expired_total",
                                     "shoal_readers_claimed",
                                     "shoal_readers_busy",
                                     "shoal_oldest_snapshot_age_seconds",
                                     "shoal_connections",
                                     "shoal_requests_total",
                                     "shoal_errors_total",
                                     "shoal_bytes_received_total",
                                     "shoal_bytes_sent_total",
                                     "shoal_denied_total",
                                     "shoal_hash_cache_hits_total",
                                     "shoal_hash_cache_misses_total",
                                     "shoal_followers",
                                     "shoal_uptime_seconds"};
  enum { NWANT = sizeof want / sizeof want[0] };
  int seen[NWANT] = {0};
  char typed[64][64]; /* metrics whose TYPE line came */
  int ntyped = 0, nsamples = 0;
  char *text = strdup(P.out), *save = NULL;
  ck_assert_ptr_nonnull(text);
  ck_assert_msg(strlen(text) > 0 && text[strlen(text) - 1] == '\n',
                "output must end with a newline:\n%s", P.out);
  for (char *line = strtok_r(text, "\n", &save); line;
       line = strtok_r(NULL, "\n", &save)) {
    char name[64];
    if (line[0] == '#') {
      char kind[8], type[16];
      int k = sscanf(line, "# %7s %63s %15s", kind, name, type);
      ck_assert_msg(
          k >= 2 && (strcmp(kind, "HELP") == 0 || strcmp(kind, "TYPE") == 0),
          "bad comment line '%s'", line);
      if (strcmp(kind, "TYPE") == 0) {
        ck_assert_msg(k == 3 && (strcmp(type, "gauge") == 0 ||
                                 strcmp(type, "counter") == 0),
                      "bad TYPE line '%s'", line);
        ck_assert_msg(strcmp(type, "counter") != 0 ||
                          strstr(name, "_total") != NULL,
                      "a counter not named *_total: '%s'", line);
        ck_assert_int_lt(ntyped, 64);
        snprintf(typed[ntyped++], sizeof typed[0], "%s", name);
      }
      continue;
    }
    int has_store;
    const char *why = prom_sample_line(line, name, sizeof name, &has_store);
    ck_assert_msg(why == NULL, "sample line '%s': %s", line, why);
    ck_assert_msg(has_store, "sample line '%s' lacks store=\"it\"", line);
    int t = 0;
    for (int i = 0; i < ntyped; i++)
      t |= strcmp(typed[i], name) == 0;
    ck_assert_msg(t, "sample '%s' before its TYPE line", line);
    for (int i = 0; i < NWANT; i++)
      if (strcmp(want[i], name) == 0) seen[i] = 1;
    nsamples++;
  }
  free(text);
  for (int i = 0; i < NWANT; i++)
    ck_assert_msg(seen[i], "no sample of %s in:\n%s", want[i], P.out);
  ck_assert_int_ge(nsamples, NWANT);
  /* values and labels as the broker counted them */
  OUT_HAS("\nshoal_up{store=\"it\"} 1\n");
  OUT_HAS("\nshoal_keys{store=\"it\"} 2\n");
  OUT_HAS("\nshoal_requests_total{store=\"it\",type=\"put\"} 2\n");
  OUT_HAS("\nshoal_errors_total{store=\"it\",code=\"SHOAL_ECONFLICT\"} 1\n");
  OUT_HAS("# TYPE shoal_requests_total counter\n");
  OUT_HAS("# TYPE shoal_keys gauge\n");
  /* by socket path alone the label is still the store the broker serves
   * (shoal_store_name), not an assumed "default" */
  EXPECT(run("--socket", it_sock, "stats", "--prometheus"), 0);
  OUT_HAS("\nshoal_up{store=\"it\"} 1\n");
  OUT_HAS("\nshoal_keys{store=\"it\"} 2\n");

  /* no broker: nothing on stdout (a textfile never half-written), exit 5 */
  it_stop_broker(SIGTERM);
  EXPECT(run("--name", IT_NAME, "stats", "--prometheus"), 5);
  ck_assert_msg(P.out[0] == 0, "stdout: %s", P.out);
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

/* ------------------------------------------------------- hash and tail -- */

/* Write @len bytes of @data to it_dir/@name; the path into @path. */
static void make_file(char *path, size_t cap, const char *name,
                      const void *data, size_t len) {
  snprintf(path, cap, "%s/%s", it_dir, name);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ck_assert_msg(fd >= 0, "create %s: %s", path, strerror(errno));
  ck_assert_int_eq(write(fd, data, len), (ssize_t)len);
  close(fd);
}

static void append_file(const char *path, const char *text) {
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  ck_assert_msg(fd >= 0, "open %s: %s", path, strerror(errno));
  size_t n = strlen(text);
  ck_assert_int_eq(write(fd, text, n), (ssize_t)n);
  close(fd);
}

/* Run a coreutils program on the NULL-terminated arguments (stdout into
 * @out, malloc'd): 0, or -1 if the program is not installed. */
static int run_tool(char **out, const char *tool, ...) {
  char prog[64];
  snprintf(prog, sizeof prog, "/usr/bin/%s", tool);
  if (access(prog, X_OK) != 0) return -1;
  char *argv[64];
  int n = 0;
  argv[n++] = prog;
  va_list ap;
  va_start(ap, tool);
  for (const char *a = va_arg(ap, const char *); a && n < 63;
       a = va_arg(ap, const char *))
    argv[n++] = (char *)a;
  va_end(ap);
  argv[n] = NULL;
  it_proc q;
  int st = it_run(&q, NULL, 0, 20000, argv);
  ck_assert_msg(st == 0, "%s exited %d: %s", tool, st, q.err);
  *out = q.out;
  q.out = NULL;
  it_proc_free(&q);
  return 0;
}

START_TEST(cli_hash) {
  setup_checks();
  it_start_broker(NULL);
  char f_empty[IT_PATH * 2], f_abc[IT_PATH * 2], f_big[IT_PATH * 2],
      f_odd[IT_PATH * 2], f_nl[IT_PATH * 2];
  make_file(f_empty, sizeof f_empty, "empty", "", 0);
  make_file(f_abc, sizeof f_abc, "abc", "abc", 3);
  size_t blen = 3 << 20; /* 3 MiB of every byte value: several reads */
  unsigned char *big = malloc(blen);
  ck_assert_ptr_nonnull(big);
  for (size_t i = 0; i < blen; i++) big[i] = (unsigned char)(i * 7 + i / 251);
  make_file(f_big, sizeof f_big, "big.bin", big, blen);
  free(big);
  /* names sha256sum escapes: a backslash, a newline */
  make_file(f_odd, sizeof f_odd, "back\\slash", "x\n", 2);
  make_file(f_nl, sizeof f_nl, "new\nline", "y\n", 2);

  /* the output is sha256sum's, sha512sum's, b2sum's, byte for byte */
  const struct {
    const char *alg, *tool, *l;
  } tools[] = {{"sha256", "sha256sum", NULL},
               {"sha512", "sha512sum", NULL},
               {"blake2b", "b2sum", "256"},
               {"blake2b-512", "b2sum", NULL},
               {"blake2b-128", "b2sum", "128"}};
  for (size_t t = 0; t < sizeof tools / sizeof tools[0]; t++) {
    char *want = NULL;
    int have = tools[t].l
                   ? run_tool(&want, tools[t].tool, "-l", tools[t].l, f_empty,
                              f_abc, f_big, f_odd, f_nl, (const char *)NULL)
                   : run_tool(&want, tools[t].tool, f_empty, f_abc, f_big,
                              f_odd, f_nl, (const char *)NULL);
    EXPECT(run("hash", "--alg", tools[t].alg, f_empty, f_abc, f_big, f_odd,
               f_nl),
           0);
    if (have == 0) {
      ck_assert_msg(strcmp(P.out, want) == 0, "--alg %s:\n%s\n%s says:\n%s",
                    tools[t].alg, P.out, tools[t].tool, want);
      free(want);
    }
  }
  /* blake2b-256 is the default (RFC 7693's BLAKE2b-512 of "abc" below);
   * b2sum -c takes it; -a is --alg */
  EXPECT(run("hash", "--alg", "blake2b-512", f_abc), 0);
  ck_assert_msg(strncmp(P.out, "ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b7"
                               "4b12bb6fdbffa2d17d87c5392aab792dc252d5de4533cc"
                               "9518d38aa8dbf1925ab92386edd4009923  ",
                        130) == 0,
                "blake2b-512(abc): %s", P.out);
  EXPECT(run("hash", f_abc), 0);
  ck_assert_msg(strlen(P.out) == 64 + 2 + strlen(f_abc) + 1, "%s", P.out);
  if (access("/usr/bin/b2sum", X_OK) == 0) {
    char *sums = strdup(P.out);
    char *argv[] = {"/usr/bin/b2sum", "-c", "--strict", NULL};
    it_proc q;
    int st = it_run(&q, sums, strlen(sums), 20000, argv);
    ck_assert_msg(st == 0, "b2sum -c: %d\n%s%s", st, q.out, q.err);
    it_proc_free(&q);
    free(sums);
  }
  EXPECT(run("hash", "-a", "sha256", f_abc), 0);
  OUT_HAS("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  ");
  EXPECT(run("hash", f_abc, "-asha256"), 0);
  OUT_HAS("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  ");

  /* sha256sum -c accepts what hash prints */
  if (access("/usr/bin/sha256sum", X_OK) == 0) {
    EXPECT(run("hash", "--alg", "sha256", f_abc, f_odd, f_nl), 0);
    char *sums = strdup(P.out);
    char *argv[] = {"/usr/bin/sha256sum", "-c", "--strict", NULL};
    it_proc q;
    int st = it_run(&q, sums, strlen(sums), 20000, argv);
    ck_assert_msg(st == 0, "sha256sum -c: %d\n%s%s", st, q.out, q.err);
    it_proc_free(&q);
    free(sums);
  }

  /* a second run is answered from the broker's cache: same digests */
  EXPECT(run("hash", "--alg", "sha512", f_big), 0);
  char *first = strdup(P.out);
  EXPECT(run("hash", "--alg", "sha512", f_big), 0);
  ck_assert_str_eq(P.out, first);
  free(first);

  /* a file that fails: named on stderr, the others still hashed, exit 6 */
  char missing[IT_PATH * 2];
  snprintf(missing, sizeof missing, "%s/no-such-file", it_dir);
  EXPECT(run("hash", "--alg", "sha256", missing, f_abc), 6);
  ERR_HAS("shoal: hash: ");
  ERR_HAS(missing);
  ERR_HAS("No such file or directory");
  OUT_HAS("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  ");
  EXPECT(run("hash", it_dir), 6);
  ERR_HAS(it_dir);
  ERR_HAS("not a regular file");
  ck_assert_str_eq(P.out, "");
  /* stdin: a pipe is no regular file */
  EXPECT(run_stdin("abc", 3, "hash", "-"), 6);
  ERR_HAS("not a regular file");

  /* --json: an array, a failure as an element */
  EXPECT(run("--json", "hash", "--alg", "sha256", f_abc, missing), 6);
  ck_assert_msg(P.out[0] == '[', "%s", P.out);
  OUT_HAS("\"algorithm\":\"sha256\"");
  OUT_HAS("\"digest_bits\":256");
  OUT_HAS("\"digest\":\"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61"
          "f20015ad\"");
  OUT_HAS("\"error\":\"ENOENT\"");
  ck_assert_msg(strstr(P.out, "]\n") != NULL, "%s", P.out);
  EXPECT(run("--json", "hash", f_nl), 0);
  OUT_HAS("\"file\":\"");
  OUT_HAS("new\\nline\"");

  /* usage */
  EXPECT(run("hash"), 2);
  EXPECT(run("hash", "--alg", "md5", f_abc), 2);
  ERR_HAS("md5");
  EXPECT(run("hash", "--alg", "blake2b-100", f_abc), 2);
  EXPECT(run("hash", "--alg"), 2);
  EXPECT(run("hash", "-x", f_abc), 2);
  EXPECT(run("hash", "-n", "3", f_abc), 2); /* tail's, not hash's */
  /* "--" before a name starting with '-' */
  char dash[IT_PATH * 2];
  make_file(dash, sizeof dash, "-odd", "abc", 3);
  ck_assert_int_eq(chdir(it_dir), 0);
  EXPECT(run("hash", "-a", "sha256", "--", "-odd"), 0);
  ck_assert_str_eq(P.out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb4"
                          "10ff61f20015ad  -odd\n");
}
END_TEST

START_TEST(cli_tail) {
  setup_checks();
  it_start_broker(NULL);
  char f[IT_PATH * 2];
  make_file(f, sizeof f, "three", "one\ntwo\nthree\n", 14);
  EXPECT(run("tail", f), 0);
  ck_assert_str_eq(P.out, "one\ntwo\nthree\n");
  EXPECT(run("tail", f, "-n", "2"), 0);
  ck_assert_str_eq(P.out, "two\nthree\n");
  EXPECT(run("tail", "-n2", f), 0);
  ck_assert_str_eq(P.out, "two\nthree\n");
  EXPECT(run("tail", "--lines=1", f), 0);
  ck_assert_str_eq(P.out, "three\n");
  EXPECT(run("tail", "--lines", "100", f), 0);
  ck_assert_str_eq(P.out, "one\ntwo\nthree\n");
  EXPECT(run("tail", "-n", "0", f), 0);
  ck_assert_str_eq(P.out, "");

  /* edge cases: the bytes come out as they are */
  const struct {
    const char *data, *n, *want;
  } cases[] = {
      {"", "5", ""},
      {"\n", "1", "\n"},
      {"\n\n\n", "2", "\n\n"},
      {"a", "1", "a"},
      {"a\nb", "1", "b"},          /* no newline at the end: none added */
      {"a\nb", "5", "a\nb"},
      {"a\r\nb\r\n", "1", "b\r\n"}, /* CRs kept, unlike read_last_n_lines */
      {"x\xff\xfey\n", "1", "x\xff\xfey\n"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    make_file(f, sizeof f, "edge", cases[i].data, strlen(cases[i].data));
    EXPECT(run("tail", "-n", cases[i].n, f), 0);
    ck_assert_msg(strcmp(P.out, cases[i].want) == 0,
                  "tail -n %s of %s: got '%s'", cases[i].n, cases[i].data,
                  P.out);
  }
  /* NUL bytes inside a line */
  make_file(f, sizeof f, "nul", "a\0b\nc\0\n", 7);
  EXPECT(run("tail", "-n", "2", f), 0);
  ck_assert_uint_eq(P.outlen, 7);
  ck_assert(memcmp(P.out, "a\0b\nc\0\n", 7) == 0);

  /* the default: 10 lines; a big file, read from its end */
  size_t cap = 100000 * 24, len = 0;
  char *big = malloc(cap);
  ck_assert_ptr_nonnull(big);
  for (int i = 0; i < 100000; i++)
    len += (size_t)snprintf(big + len, cap - len, "line %d\n", i);
  make_file(f, sizeof f, "big", big, len);
  free(big);
  EXPECT(run("tail", f), 0);
  ck_assert_msg(strncmp(P.out, "line 99990\n", 11) == 0, "%s", P.out);
  ck_assert_msg(strstr(P.out, "line 99999\n") != NULL, "%s", P.out);
  int nl = 0;
  for (size_t i = 0; i < P.outlen; i++) nl += P.out[i] == '\n';
  ck_assert_int_eq(nl, 10);
  EXPECT(run("tail", "-n", "3", f), 0);
  ck_assert_str_eq(P.out, "line 99997\nline 99998\nline 99999\n");

  /* --json: an array of {"line":..}, base64 for what is not UTF-8 */
  make_file(f, sizeof f, "json", "a\"b\n\xff\n\xc3\xa9\n", 9);
  EXPECT(run("--json", "tail", f), 0);
  ck_assert_str_eq(P.out, "[\n{\"line\":\"a\\\"b\"},\n"
                          "{\"line\":\"/w==\",\"encoding\":\"base64\"},\n"
                          "{\"line\":\"\xc3\xa9\"}\n]\n");
  make_file(f, sizeof f, "json", "", 0);
  EXPECT(run("--json", "tail", f), 0);
  ck_assert_str_eq(P.out, "[]\n");

  /* errors: the path is named */
  char missing[IT_PATH * 2];
  snprintf(missing, sizeof missing, "%s/no-such-log", it_dir);
  EXPECT(run("tail", missing), 6);
  ERR_HAS("shoal: tail: ");
  ERR_HAS(missing);
  ERR_HAS("No such file or directory");
  ck_assert_str_eq(P.out, "");
  EXPECT(run("tail", "-f", missing), 6);
  ERR_HAS(missing);
  EXPECT(run("tail", it_dir), 6);
  ERR_HAS("not a regular file");

  /* usage */
  EXPECT(run("tail"), 2);
  EXPECT(run("tail", f, f), 2);
  EXPECT(run("tail", "-n", "x", f), 2);
  EXPECT(run("tail", "-n", "-3", f), 2);
  EXPECT(run("tail", f, "-n"), 2);
  EXPECT(run("tail", "-q", f), 2);
  EXPECT(run("tail", "--alg", "sha256", f), 2);
}
END_TEST

/* Start `shoal tail -f` in the background, stdout and stderr to files. */
static pid_t spawn_follow(const char *out, const char *err, const char *file,
                          const char *n) {
  const char *argv[] = {it_cli, "tail", "-f", "-n", n, file, NULL};
  fflush(NULL);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int o = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int e = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (o < 0 || e < 0) _exit(126);
    dup2(o, STDOUT_FILENO);
    dup2(e, STDERR_FILENO);
    signal(SIGALRM, SIG_DFL);
    execv(it_cli, (char *const *)argv);
    _exit(127);
  }
  return pid;
}

/* Wait up to 5 s for file @path to contain @needle. */
static void await_text(const char *path, const char *needle) {
  uint64_t deadline = it_now_ms() + 5000;
  for (;;) {
    char *s = it_read_file(path, NULL);
    int found = s && strstr(s, needle) != NULL;
    if (found || it_now_ms() > deadline) {
      ck_assert_msg(found, "%s lacks '%s' after 5 s:\n%s", path, needle,
                    s ? s : "(unreadable)");
      free(s);
      return;
    }
    free(s);
    it_sleep_ms(10);
  }
}

START_TEST(cli_tail_follow) {
  setup_checks();
  it_start_broker(NULL);
  char log[IT_PATH * 2], out[IT_PATH * 2], err[IT_PATH * 2], old[IT_PATH * 3];
  make_file(log, sizeof log, "app.log", "early 1\nearly 2\n", 16);
  snprintf(out, sizeof out, "%s/follow.out", it_dir);
  snprintf(err, sizeof err, "%s/follow.err", it_dir);
  snprintf(old, sizeof old, "%s.1", log);
  pid_t pid = spawn_follow(out, err, log, "1");
  await_text(out, "early 2\n");

  /* a writer appends, a line at a time and a partial line */
  char line[64];
  for (int i = 1; i <= 30; i++) {
    snprintf(line, sizeof line, "append %d\n", i);
    append_file(log, line);
    if (i % 10 == 0) it_sleep_ms(20);
  }
  append_file(log, "partial");
  await_text(out, "append 30\n");
  it_sleep_ms(100);
  char *text = it_read_file(out, NULL);
  ck_assert_msg(strstr(text, "partial") == NULL, "a line before its newline:"
                "\n%s", text);
  free(text);
  append_file(log, " line\n");
  await_text(out, "partial line\n");

  /* copytruncate */
  ck_assert_int_eq(truncate(log, 0), 0);
  await_text(err, "shoal: ");
  await_text(err, ": file truncated\n");
  append_file(log, "after truncate\n");
  await_text(out, "after truncate\n");

  /* rotation: rename, a new file, the writer goes on in it */
  append_file(log, "last of the old file\n");
  ck_assert_int_eq(rename(log, old), 0);
  append_file(log, "first of the new file\n");
  await_text(out, "first of the new file\n");
  await_text(err, ": file rotated; following the new file\n");
  append_file(log, "second of the new file\n");
  await_text(out, "second of the new file\n");

  /* SIGTERM: a clean exit 0, promptly */
  ck_assert_int_eq(kill(pid, SIGTERM), 0);
  int st = it_wait_exit(pid, 2000);
  if (st == -1) kill(pid, SIGKILL);
  ck_assert_msg(st != -1, "shoal tail -f ignored SIGTERM for 2 s");
  ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status 0x%x", st);

  /* every line once, in order */
  char want[4096];
  size_t w = (size_t)snprintf(want, sizeof want, "early 2\n");
  for (int i = 1; i <= 30; i++)
    w += (size_t)snprintf(want + w, sizeof want - w, "append %d\n", i);
  snprintf(want + w, sizeof want - w,
           "partial line\nafter truncate\nlast of the old file\n"
           "first of the new file\nsecond of the new file\n");
  text = it_read_file(out, NULL);
  ck_assert_str_eq(text, want);
  free(text);
  /* the log's name in the messages, each reported once */
  text = it_read_file(err, NULL);
  char msg[IT_PATH * 6];
  snprintf(msg, sizeof msg,
           "shoal: %s: file truncated\n"
           "shoal: %s: file rotated; following the new file\n",
           log, log);
  ck_assert_str_eq(text, msg);
  free(text);

  /* SIGINT too; --json: one event object per line */
  pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int o = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (o < 0) _exit(126);
    dup2(o, STDOUT_FILENO);
    signal(SIGALRM, SIG_DFL);
    execl(it_cli, it_cli, "--json", "tail", "--follow", "--lines", "1", log,
          (char *)NULL);
    _exit(127);
  }
  await_text(out, "{\"event\":\"line\",\"line\":\"second of the new file\","
                  "\"offset\":22}\n");
  append_file(log, "json \xff\n");
  await_text(out, "{\"event\":\"line\",\"line\":\"anNvbiD/\",\"encoding\":"
                  "\"base64\",\"offset\":45}\n");
  ck_assert_int_eq(kill(pid, SIGINT), 0);
  st = it_wait_exit(pid, 2000);
  if (st == -1) kill(pid, SIGKILL);
  ck_assert_msg(st != -1, "shoal tail -f ignored SIGINT for 2 s");
  ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status 0x%x", st);
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
  tcase_add_test(tc, cli_stats_prometheus);
  tcase_add_test(tc, cli_store_lookup);
  tcase_add_test(tc, cli_hash);
  tcase_add_test(tc, cli_tail);
  tcase_add_test(tc, cli_tail_follow);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return it_run_suite(suite()); }
