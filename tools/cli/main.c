/*
 * main.c - `shoal`, the command-line client of a shoal store (DESIGN.md
 * section 8, issue 3).
 *
 *   shoal [--name N] [--socket P] [--json] [--timeout MS] COMMAND [ARGS...]
 *
 * Every command is one libshoal call on a fresh handle: reads (get, scan,
 * wait) go straight to the shared segment, writes and broker requests
 * (put, del, cas, stats, ping, hash, tail) over the broker's socket. The
 * help texts below are the manual; `shoal --help` prints the whole page and
 * `shoal COMMAND --help` one command's part.
 *
 * Exit status (scripts tell found / not found / error apart, as with grep or
 * redis-cli):
 *   0 ok / found, 1 not found, 2 usage error, 3 conflict (cas),
 *   4 timeout, 5 broker unavailable, 6 any other error.
 * Errors go to stderr as "shoal: CMD: <shoal_strerror> (<shoal_last_error>)".
 *
 * Choices where the brief is silent, written down here:
 *   - `get` writes the value's bytes exactly, with no newline added (so
 *     binary values survive `shoal get k > file`); not found prints nothing
 *     on stdout (`null` with --json) and exits 1.
 *   - `wait` without --after waits for the next change of the key after the
 *     command starts (the key's current version, 0 if absent), like
 *     inotifywait; `--after 0` returns at once if the key exists.
 *   - `scan` exits 0 even when nothing matched: an empty range is an answer,
 *     not a missing key.
 *   - Only arguments that start with "--" (and "-h") are options, so values
 *     such as "-5" need no quoting; "--" ends the options; "-" as a VALUE
 *     means stdin.
 *   - --timeout MS bounds how long the command waits: for the broker's
 *     connection and replies, and for `wait`, for the key to change.
 *   - `hash` and `tail` take files, so they take the short options of the
 *     tools they stand in for (tail's -n N and -f, hash's -a ALG); for them
 *     any other argument starting with '-' (except "-", stdin for hash) is
 *     a usage error, as in sha256sum and tail: "--" before a file name
 *     that starts with '-'.
 *   - `hash` prints sha256sum's format ("HEX  FILE", names holding '\',
 *     '\n' or '\r' escaped and the line led by '\', as coreutils 9 does),
 *     so `shoal hash --alg sha256 F | sha256sum -c` checks. blake2b has
 *     libshoal's default length, 256 bits (shoal_hash_file, Python's
 *     Client.hash_file): the output equals `b2sum -l 256`'s, and b2sum -c
 *     checks it (it takes the length from the digest); --alg blake2b-BITS
 *     for b2sum -l BITS (blake2b-512: b2sum's default). It goes
 *     on after a file that fails (message on stderr) and exits with the
 *     first failure's status; it stops at once when the broker is gone.
 *   - A file that can not be opened (missing, unreadable) is an "other"
 *     error (6, not 1: 1 is for keys), named in the message.
 *   - `tail` writes the lines' bytes as they are; the last line gets no
 *     newline when the file does not end with one (as tail(1)). `tail -f`
 *     always reopens a rotated file (tail -F); -F is accepted as the same.
 *     SIGINT and SIGTERM stop it: exit 0. Its --json output is one JSON
 *     object per line (an event), not one value, since it never ends.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "out.h"
#include "shoal/shoal.h"

/* Exit status; the --help page documents them (keep in sync). */
enum {
  EX_OK = 0,
  EX_NOTFOUND = 1,
  EX_USAGE = 2,
  EX_CONFLICT = 3,
  EX_TIMEOUT = 4,
  EX_UNAVAIL = 5,
  EX_ERROR = 6,
};

/* Command options (bit set of what a command accepts). */
enum {
  O_TTL = 1u << 0,
  O_PREFIX = 1u << 1,
  O_LIMIT = 1u << 2,
  O_KEYS_ONLY = 1u << 3,
  O_AFTER = 1u << 4,
  O_ALG = 1u << 5,    /* hash: --alg, -a */
  O_LINES = 1u << 6,  /* tail: --lines, -n */
  O_FOLLOW = 1u << 7, /* tail: --follow, -f, -F */
  O_PROMETHEUS = 1u << 8, /* stats: --prometheus */
};
/* Commands taking any of these take short options too (see the top). */
#define O_SHORT (O_ALG | O_LINES | O_FOLLOW)

typedef struct cli {
  /* global options */
  const char *name;   /* NULL: "default" */
  const char *socket; /* NULL: $SHOAL_SOCKET, else RUNDIR/NAME.sock */
  int json;
  int timeout_ms; /* -1: not given */
  /* command options */
  unsigned given; /* O_* seen */
  uint64_t ttl_ms;
  const char *prefix;
  uint64_t limit;
  int keys_only;
  uint64_t after;
  uint64_t expect; /* cas */
  const char *alg;  /* hash: --alg as given (NULL: blake2b) */
  const char *alg_name; /* hash: libshoal's name of it */
  size_t digest_len;    /* hash: bytes */
  uint64_t lines;       /* tail: -n (default 10) */
  int follow;           /* tail: -f */
  int prometheus;       /* stats: --prometheus */
  /* the command */
  const struct command *cmd;
  int argc; /* positional arguments */
  char **argv;
  shoal *c;
} cli;

typedef struct command {
  const char *name;
  int (*run)(cli *);
  int (*check)(cli *); /* argument checks before connecting; NULL: none */
  int min_args, max_args;
  unsigned opts;     /* O_* accepted */
  int need_slot;     /* reads the segment: lease a reader slot */
  const char *usage; /* one line, after "shoal " */
  const char *help;  /* the rest of the command's manual entry */
} command;

static const char *progname = "shoal";

/* ---------------------------------------------------------------- output -- */

static void errorf(const cli *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void errorf(const cli *a, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "%s: ", progname);
  if (a && a->cmd) fprintf(stderr, "%s: ", a->cmd->name);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

/* Exit status for a libshoal return code. */
static int exit_code(int rc) {
  switch (rc) {
  case 0: return EX_OK;
  case SHOAL_ENOTFOUND: return EX_NOTFOUND;
  case SHOAL_ECONFLICT: return EX_CONFLICT;
  case SHOAL_ETIMEOUT: return EX_TIMEOUT;
  case SHOAL_EUNAVAIL:
  case SHOAL_ECLOSED: return EX_UNAVAIL;
  case SHOAL_EINVAL: return EX_USAGE;
  default: return EX_ERROR;
  }
}

/* Print "shoal: CMD: <strerror> (<last_error>)" and return the exit
 * status for @rc. */
static int fail(const cli *a, int rc) {
  const char *detail = a->c ? shoal_last_error(a->c) : "";
  if (detail && *detail)
    errorf(a, "%s (%s)", shoal_strerror(rc), detail);
  else
    errorf(a, "%s", shoal_strerror(rc));
  return exit_code(rc);
}

/* Key as text for messages: at most 64 bytes, non-printables as '?'. */
static const char *key_text(const char *k, size_t n) {
  static char buf[80];
  size_t m = n > 64 ? 64 : n, i;
  for (i = 0; i < m; i++) {
    unsigned char ch = (unsigned char)k[i];
    buf[i] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
  }
  if (m < n) {
    memcpy(buf + i, "...", 4);
  } else {
    buf[i] = 0;
  }
  return buf;
}

/* Write bytes to stdout. */
static void put_bytes(const void *p, size_t n) {
  if (n) fwrite(p, 1, n, stdout);
}

/* ------------------------------------------------------------ arguments -- */

/* Parse a whole decimal number in [0, max]; 0 on success, -1 otherwise. */
static int parse_u64(const char *s, uint64_t max, uint64_t *out) {
  if (!s || !*s || *s < '0' || *s > '9') return -1;
  errno = 0;
  char *end;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || *end || v > max) return -1;
  *out = v;
  return 0;
}

/* Read all of stdin into a malloc'd buffer; at most @cap bytes are kept,
 * *over set when there was more. Returns 0 or -errno. */
static int read_stdin(char **out, size_t *len, size_t cap, int *over) {
  size_t n = 0, size = 4096;
  char *buf = malloc(size);
  if (!buf) return -ENOMEM;
  *over = 0;
  for (;;) {
    if (n == size) {
      if (size > cap) { /* read one byte past the limit: enough to know */
        *over = 1;
        break;
      }
      size_t nsize = size * 2;
      char *nb = realloc(buf, nsize);
      if (!nb) {
        free(buf);
        return -ENOMEM;
      }
      buf = nb;
      size = nsize;
    }
    ssize_t r = read(STDIN_FILENO, buf + n, size - n);
    if (r < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      free(buf);
      return -e;
    }
    if (r == 0) break;
    n += (size_t)r;
  }
  if (n > cap) *over = 1;
  *out = buf;
  *len = n;
  return 0;
}

/* The VALUE argument at @idx: the argument itself, or stdin when it is
 * missing or "-". *owned receives a buffer to free (or NULL). */
static int value_arg(cli *a, int idx, const char **val, size_t *vlen,
                     char **owned) {
  *owned = NULL;
  if (idx < a->argc && strcmp(a->argv[idx], "-") != 0) {
    *val = a->argv[idx];
    *vlen = strlen(a->argv[idx]);
    return 0;
  }
  size_t cap = shoal_value_max(a->c);
  int over = 0;
  char *buf = NULL;
  size_t n = 0;
  int rc = read_stdin(&buf, &n, cap, &over);
  if (rc < 0) {
    errorf(a, "reading the value from stdin: %s", strerror(-rc));
    return EX_ERROR;
  }
  if (over) {
    free(buf);
    errorf(a, "%s (the value on stdin is over %zu bytes)",
           shoal_strerror(SHOAL_ETOOBIG), cap);
    return EX_ERROR;
  }
  *owned = buf;
  *val = buf;
  *vlen = n;
  return 0;
}

/* ------------------------------------------------------------- commands -- */

static void json_key_open(const char *key, size_t klen) {
  fputc('{', stdout);
  cli_json_bytes_field(stdout, "key", "key_encoding", key, klen);
}

static int cmd_get(cli *a) {
  const char *key = a->argv[0];
  size_t klen = strlen(key);
  int rc = shoal_read_begin(a->c);
  if (rc) return fail(a, rc);
  shoal_val v;
  rc = shoal_get(a->c, key, klen, &v);
  if (rc == 0) {
    /* written inside the section: the view is valid until read_end */
    if (a->json) {
      json_key_open(key, klen);
      fputc(',', stdout);
      cli_json_bytes_field(stdout, "value", "encoding", v.data, v.len);
      printf(",\"version\":%" PRIu64 ",\"expires_at_ms\":%" PRIu64 "}\n",
             v.version, v.expires_at);
    } else {
      put_bytes(v.data, v.len);
    }
  }
  shoal_read_end(a->c);
  if (rc == SHOAL_ENOTFOUND) {
    if (a->json) puts("null");
    errorf(a, "%s: %s", shoal_strerror(rc), key_text(key, klen));
    return EX_NOTFOUND;
  }
  return rc ? fail(a, rc) : EX_OK;
}

static int cmd_put(cli *a) {
  const char *key = a->argv[0];
  size_t klen = strlen(key);
  const char *val;
  size_t vlen;
  char *owned;
  int ex = value_arg(a, 1, &val, &vlen, &owned);
  if (ex) return ex;
  if (a->ttl_ms > UINT32_MAX) {
    free(owned);
    errorf(a, "--ttl %" PRIu64 " is over %" PRIu32 " ms", a->ttl_ms,
           UINT32_MAX);
    return EX_USAGE;
  }
  uint64_t ver = 0;
  int rc = shoal_put_ttl(a->c, key, klen, val, vlen, (uint32_t)a->ttl_ms,
                         &ver);
  free(owned);
  if (rc) return fail(a, rc);
  if (a->json) {
    json_key_open(key, klen);
    printf(",\"version\":%" PRIu64 "}\n", ver);
  } else {
    printf("%" PRIu64 "\n", ver);
  }
  return EX_OK;
}

static int cmd_del(cli *a) {
  const char *key = a->argv[0];
  size_t klen = strlen(key);
  int rc = shoal_del(a->c, key, klen);
  if (rc && rc != SHOAL_ENOTFOUND) return fail(a, rc);
  if (a->json) {
    json_key_open(key, klen);
    printf(",\"deleted\":%s}\n", rc ? "false" : "true");
  }
  if (rc == SHOAL_ENOTFOUND) {
    errorf(a, "%s: %s", shoal_strerror(rc), key_text(key, klen));
    return EX_NOTFOUND;
  }
  return EX_OK;
}

static int check_cas(cli *a) {
  if (parse_u64(a->argv[1], UINT64_MAX, &a->expect)) {
    errorf(a, "EXPECT must be a version number (0: the key must be absent), "
              "got '%s'", a->argv[1]);
    return EX_USAGE;
  }
  return 0;
}

static int cmd_cas(cli *a) {
  const char *key = a->argv[0];
  size_t klen = strlen(key);
  uint64_t expect = a->expect;
  const char *val;
  size_t vlen;
  char *owned;
  int ex = value_arg(a, 2, &val, &vlen, &owned);
  if (ex) return ex;
  uint64_t ver = 0;
  int rc = shoal_cas(a->c, key, klen, expect, val, vlen, &ver);
  free(owned);
  if (rc == SHOAL_ECONFLICT) {
    if (a->json) {
      json_key_open(key, klen);
      printf(",\"conflict\":true,\"current_version\":%" PRIu64 "}\n", ver);
    }
    errorf(a, "%s: current version %" PRIu64 "%s", shoal_strerror(rc), ver,
           ver ? "" : " (the key is absent)");
    return EX_CONFLICT;
  }
  if (rc) return fail(a, rc);
  if (a->json) {
    json_key_open(key, klen);
    printf(",\"version\":%" PRIu64 "}\n", ver);
  } else {
    printf("%" PRIu64 "\n", ver);
  }
  return EX_OK;
}

typedef struct scan_state {
  cli *a;
  uint64_t n;
} scan_state;

static int scan_one(void *arg, const void *key, size_t klen,
                    const shoal_val *val) {
  scan_state *st = arg;
  cli *a = st->a;
  if ((a->given & O_LIMIT) && st->n >= a->limit) return 1;
  if (a->json) {
    fputs(st->n ? ",\n" : "\n", stdout);
    json_key_open(key, klen);
    if (!a->keys_only) {
      fputc(',', stdout);
      cli_json_bytes_field(stdout, "value", "encoding", val->data, val->len);
    }
    printf(",\"version\":%" PRIu64 ",\"expires_at_ms\":%" PRIu64 "}",
           val->version, val->expires_at);
  } else {
    put_bytes(key, klen);
    if (!a->keys_only) {
      fputc('\t', stdout);
      put_bytes(val->data, val->len);
    }
    fputc('\n', stdout);
  }
  st->n++;
  /* stop early once the limit is reached: no need to visit one more */
  if ((a->given & O_LIMIT) && st->n >= a->limit) return 1;
  return 0;
}

static int check_scan(cli *a) {
  if ((a->given & O_PREFIX) && a->argc > 0) {
    errorf(a, "give --prefix P or START [END], not both");
    return EX_USAGE;
  }
  return 0;
}

static int cmd_scan(cli *a) {
  scan_state st = {a, 0};
  if (a->json) fputc('[', stdout);
  int rc;
  if ((a->given & O_LIMIT) && a->limit == 0) {
    rc = 0;
  } else if (a->given & O_PREFIX) {
    rc = shoal_scan_prefix(a->c, a->prefix, strlen(a->prefix), scan_one, &st);
  } else {
    const char *start = a->argc > 0 ? a->argv[0] : "";
    const char *end = a->argc > 1 ? a->argv[1] : NULL;
    rc = shoal_scan(a->c, start, strlen(start), end, end ? strlen(end) : 0,
                    scan_one, &st);
  }
  if (a->json) fputs(st.n ? "\n]\n" : "]\n", stdout);
  if (rc < 0) return fail(a, rc);
  return EX_OK; /* rc > 0: stopped by --limit */
}

static int cmd_wait(cli *a) {
  const char *key = a->argv[0];
  size_t klen = strlen(key);
  uint64_t after = a->after;
  if (!(a->given & O_AFTER)) {
    /* the next change from now: start from the current version */
    int rc = shoal_read_begin(a->c);
    if (rc) return fail(a, rc);
    shoal_val v;
    rc = shoal_get(a->c, key, klen, &v);
    after = rc == 0 ? v.version : 0;
    shoal_read_end(a->c);
    if (rc && rc != SHOAL_ENOTFOUND) return fail(a, rc);
  }
  uint64_t ver = 0;
  int rc = shoal_wait(a->c, key, klen, after, a->timeout_ms, &ver);
  if (rc == SHOAL_ETIMEOUT) {
    errorf(a, "%s: %s did not change after version %" PRIu64 " within %d ms",
           shoal_strerror(rc), key_text(key, klen), after, a->timeout_ms);
    return EX_TIMEOUT;
  }
  if (rc) return fail(a, rc);
  if (ver) {
    /* a delete wakes the wait too; report it as version 0 whichever
     * version the library hands back for the tombstone */
    shoal_val v;
    if (shoal_read_begin(a->c) == 0) {
      if (shoal_get(a->c, key, klen, &v) == SHOAL_ENOTFOUND) ver = 0;
      shoal_read_end(a->c);
    }
  }
  if (a->json) {
    json_key_open(key, klen);
    printf(",\"version\":%" PRIu64 ",\"deleted\":%s}\n", ver,
           ver ? "false" : "true");
  } else {
    printf("%" PRIu64 "\n", ver);
  }
  return EX_OK;
}

/* Print the "name=value name=value" list @s as "PREFIX.name: value" lines,
 * or as a JSON object. */
static void print_pairs(const char *prefix, const char *s, int json) {
  int first = 1;
  if (json) printf(",\"%s\":{", prefix);
  while (s && *s) {
    while (*s == ' ') s++;
    if (!*s) break;
    const char *eq = strchr(s, '='), *sp = strchr(s, ' ');
    if (!sp) sp = s + strlen(s);
    if (eq && eq < sp) {
      if (json) {
        printf("%s", first ? "" : ",");
        cli_json_string(stdout, s, (size_t)(eq - s));
        printf(":%.*s", (int)(sp - eq - 1), eq + 1);
      } else {
        printf("%s.%.*s: %.*s\n", prefix, (int)(eq - s), s,
               (int)(sp - eq - 1), eq + 1);
      }
      first = 0;
    }
    s = sp;
  }
  if (json) putchar('}');
}

/* ----------------------------------------------------- stats --prometheus
 *
 * The Prometheus text exposition format (version 0.0.4), for
 * node_exporter's textfile collector: "# HELP" and "# TYPE" once per
 * metric, then "name{labels} value" samples. Every sample carries
 * store="NAME"; the names are shared with `shoal-inspect stats
 * --prometheus` where the two overlap (issue 6), so one dashboard reads
 * either. Counters end in _total; sizes are bytes, ages seconds.
 */

/* A label value: backslash, double quote and newline escaped, as the
 * format requires. */
static void prom_label_value(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '\\')
      fputs("\\\\", stdout);
    else if (s[i] == '"')
      fputs("\\\"", stdout);
    else if (s[i] == '\n')
      fputs("\\n", stdout);
    else
      putchar(s[i]);
  }
}

static void prom_head(const char *name, const char *type, const char *help) {
  printf("# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One sample's name and labels: NAME{store="STORE"[,LABEL="VALUE"]}. */
static void prom_sample(const char *name, const char *store, const char *label,
                        const char *value, size_t vlen) {
  printf("%s{store=\"", name);
  prom_label_value(store, strlen(store));
  if (label) {
    printf("\",%s=\"", label);
    prom_label_value(value, vlen);
  }
  fputs("\"} ", stdout);
}

/* A metric of one sample. */
static void prom_u64(const char *name, const char *type, const char *help,
                     const char *store, uint64_t v) {
  prom_head(name, type, help);
  prom_sample(name, store, NULL, NULL, 0);
  printf("%" PRIu64 "\n", v);
}

/* Milliseconds as seconds (a gauge). */
static void prom_secs(const char *name, const char *help, const char *store,
                      uint64_t ms) {
  prom_head(name, "gauge", help);
  prom_sample(name, store, NULL, NULL, 0);
  printf("%" PRIu64 ".%03u\n", ms / 1000, (unsigned)(ms % 1000));
}

/* A counter with one sample per "name=value" pair of @pairs (the Stats
 * reply's requests or errors), labelled @label="name". */
static void prom_pairs(const char *name, const char *help, const char *store,
                       const char *label, const char *pairs) {
  prom_head(name, "counter", help);
  const char *s = pairs;
  while (s && *s) {
    while (*s == ' ')
      s++;
    if (!*s) break;
    const char *eq = strchr(s, '='), *sp = strchr(s, ' ');
    if (!sp) sp = s + strlen(s);
    if (eq && eq < sp) {
      prom_sample(name, store, label, s, (size_t)(eq - s));
      printf("%.*s\n", (int)(sp - eq - 1), eq + 1);
    }
    s = sp;
  }
}

static void print_prometheus(const cli *a, const shoal_stats *st) {
  /* the store the broker serves (its Hello reply): right with --socket
   * and no --name too, where the CLI could only have assumed "default" */
  const char *s = shoal_store_name(a->c);
  if (!*s) s = a->name ? a->name : "default";
  prom_u64("shoal_up", "gauge", "1: the broker answered this Stats request.", s,
           1);
  prom_u64("shoal_keys", "gauge", "Live keys in the store.", s, st->keys);
  prom_u64("shoal_commit_seq", "gauge",
           "Sequence number of the last commit (the store's version).", s,
           st->commit_seq);
  prom_u64("shoal_commits_total", "counter",
           "Commits since the store was created.", s, st->commits);
  prom_u64("shoal_size_bytes", "gauge",
           "Size of the store, fixed when it was created (shoald --size).", s,
           st->size);
  prom_u64("shoal_used_bytes", "gauge",
           "Bytes handed out by the store's allocator.", s, st->bytes_used);
  prom_u64("shoal_free_bytes", "gauge",
           "Bytes of the store not handed out (size - used).", s,
           st->bytes_free);
  prom_u64("shoal_index_capacity", "gauge", "Slots of the hash index.", s,
           st->index_capacity);
  prom_u64("shoal_index_used", "gauge",
           "Occupied slots of the hash index, deleted markers included.", s,
           st->index_used);
  prom_u64("shoal_records", "gauge",
           "Value records allocated: current ones and older versions "
           "still retained.",
           s, st->records);
  prom_u64("shoal_retired_bytes", "gauge",
           "Bytes of replaced or deleted blocks waiting for the readers' "
           "grace period.",
           s, st->retired_bytes);
  prom_u64("shoal_reclaimed_total", "counter",
           "Retired blocks freed after their grace period.", s, st->reclaimed);
  prom_u64("shoal_expired_total", "counter",
           "Keys removed because their TTL passed.", s, st->expired);
  prom_u64("shoal_readers_claimed", "gauge", "Reader slots claimed.", s,
           st->readers_claimed);
  prom_u64("shoal_readers_busy", "gauge",
           "Reader slots inside a read section (holding a snapshot).", s,
           st->readers_busy);
  prom_secs("shoal_oldest_snapshot_age_seconds",
            "Age of the oldest snapshot a reader holds (0: none).", s,
            st->oldest_snapshot_age_ms);
  prom_u64("shoal_connections", "gauge", "Open client connections.", s,
           st->connections);
  prom_pairs("shoal_requests_total", "Requests served by the broker, by type.",
             s, "type", st->requests);
  prom_pairs("shoal_errors_total",
             "Requests answered with an error, by code (SHOAL_E* or errno "
             "name).",
             s, "code", st->errors);
  prom_u64("shoal_bytes_received_total", "counter",
           "Bytes the broker received from clients.", s, st->bytes_in);
  prom_u64("shoal_bytes_sent_total", "counter",
           "Bytes the broker sent to clients.", s, st->bytes_out);
  prom_u64("shoal_denied_total", "counter",
           "Connections refused by the uid/gid check.", s, st->denied);
  prom_u64("shoal_hash_cache_hits_total", "counter",
           "HashFile requests answered from the digest cache.", s,
           st->hash_cache_hits);
  prom_u64("shoal_hash_cache_misses_total", "counter",
           "HashFile requests that read the file.", s, st->hash_cache_misses);
  prom_u64("shoal_followers", "gauge", "Active file follows (tail -f).", s,
           st->followers);
  prom_secs("shoal_uptime_seconds", "Seconds since the broker started.", s,
            st->uptime_ms);
}

static int check_stats(cli *a) {
  if (a->prometheus && a->json) {
    errorf(a, "give --json or --prometheus, not both");
    return EX_USAGE;
  }
  return 0;
}

static int cmd_stats(cli *a) {
  shoal_stats st;
  memset(&st, 0, sizeof st);
  int rc = shoal_stats_get(a->c, &st);
  if (rc) return fail(a, rc);
  if (a->prometheus) {
    print_prometheus(a, &st);
    return EX_OK;
  }
  const struct {
    const char *name;
    uint64_t v;
  } f[] = {
      {"keys", st.keys},
      {"key_bytes", st.key_bytes},
      {"value_bytes", st.value_bytes},
      {"size", st.size},
      {"bytes_used", st.bytes_used},
      {"bytes_free", st.bytes_free},
      {"commit_seq", st.commit_seq},
      {"commits", st.commits},
      {"records", st.records},
      {"retired", st.retired},
      {"retired_bytes", st.retired_bytes},
      {"reclaimed", st.reclaimed},
      {"expired", st.expired},
      {"index_capacity", st.index_capacity},
      {"index_used", st.index_used},
      {"readers_claimed", st.readers_claimed},
      {"readers_busy", st.readers_busy},
      {"oldest_snapshot", st.oldest_snapshot},
      {"oldest_snapshot_age_ms", st.oldest_snapshot_age_ms},
      {"connections", st.connections},
      {"connections_total", st.connections_total},
      {"uptime_ms", st.uptime_ms},
      {"denied", st.denied},
      {"bytes_in", st.bytes_in},
      {"bytes_out", st.bytes_out},
  };
  if (a->json) printf("{\"broker_pid\":%d", st.broker_pid);
  else printf("broker_pid: %d\n", st.broker_pid);
  for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
    if (a->json) printf(",\"%s\":%" PRIu64, f[i].name, f[i].v);
    else printf("%s: %" PRIu64 "\n", f[i].name, f[i].v);
  }
  print_pairs("requests", st.requests, a->json);
  print_pairs("errors", st.errors, a->json);
  if (a->json) puts("}");
  return EX_OK;
}

static uint64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int cmd_ping(cli *a) {
  uint64_t t0 = now_us();
  int rc = shoal_ping(a->c);
  uint64_t dt = now_us() - t0;
  if (rc) return fail(a, rc);
  if (a->json) printf("{\"ok\":true,\"rtt_us\":%" PRIu64 "}\n", dt);
  else printf("PONG (%" PRIu64 ".%03" PRIu64 " ms)\n", dt / 1000, dt % 1000);
  return EX_OK;
}

/* ------------------------------------------------------- hash and tail -- */

/* --alg: blake2b (256 bits, libshoal's default), blake2b-BITS (b2sum -l
 * BITS: a multiple of 8 from 128 to 512), sha256, sha512. Checked before
 * connecting, so a typo is a usage error whatever the broker. */
static int check_hash(cli *a) {
  const char *alg = a->alg ? a->alg : "blake2b";
  uint64_t bits;
  if (strcmp(alg, "blake2b") == 0) {
    a->alg_name = "blake2b";
    a->digest_len = 32;
  } else if (strcmp(alg, "sha256") == 0) {
    a->alg_name = "sha256";
    a->digest_len = 32;
  } else if (strcmp(alg, "sha512") == 0) {
    a->alg_name = "sha512";
    a->digest_len = 64;
  } else if (strncmp(alg, "blake2b-", 8) == 0 &&
             parse_u64(alg + 8, 512, &bits) == 0 && bits >= 128 &&
             bits % 8 == 0) {
    a->alg_name = "blake2b";
    a->digest_len = (size_t)bits / 8;
  } else {
    errorf(a, "unknown algorithm '%s': expected blake2b, blake2b-BITS "
              "(128..512, a multiple of 8), sha256 or sha512", alg);
    return EX_USAGE;
  }
  return 0;
}

/* A file name as sha256sum prints it: names holding '\\', '\n' or '\r' get
 * those escaped and *escaped set (the line is then led by '\\'). */
static void put_name(const char *name, int escape) {
  for (const char *p = name; *p; p++) {
    if (escape && *p == '\\') fputs("\\\\", stdout);
    else if (escape && *p == '\n') fputs("\\n", stdout);
    else if (escape && *p == '\r') fputs("\\r", stdout);
    else fputc(*p, stdout);
  }
}

/* Report a failure on @path: "shoal: CMD: PATH: <strerror> (<detail>)".
 * @detail may be NULL. Returns the exit status. */
static int fail_path(const cli *a, const char *path, int rc,
                     const char *detail) {
  if (detail && *detail && strcmp(detail, shoal_strerror(rc)) != 0)
    errorf(a, "%s: %s (%s)", path, shoal_strerror(rc), detail);
  else
    errorf(a, "%s: %s", path, shoal_strerror(rc));
  return exit_code(rc);
}

/* Open @path for hash or tail: O_NONBLOCK so that a FIFO with no writer
 * does not hang the open (the broker then answers SHOAL_ENOTREG); it
 * changes nothing for a regular file. "-" is stdin when @dash. */
static int open_file(const char *path, int dash) {
  if (dash && strcmp(path, "-") == 0) return STDIN_FILENO;
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  return fd < 0 ? -errno : fd;
}

static int cmd_hash(cli *a) {
  int ex = EX_OK;
  unsigned n = 0;
  if (a->json) fputc('[', stdout);
  for (int i = 0; i < a->argc; i++) {
    const char *path = a->argv[i];
    unsigned char digest[SHOAL_HASH_MAX];
    const char *detail = NULL;
    int fd = open_file(path, 1), rc = fd;
    if (fd >= 0) {
      rc = shoal_hash_fd(a->c, fd, a->alg_name, a->digest_len, digest,
                         sizeof digest);
      if (rc < 0) detail = shoal_last_error(a->c);
      if (fd != STDIN_FILENO) close(fd);
    }
    if (a->json) {
      fputs(n++ ? ",\n{" : "\n{", stdout);
      cli_json_bytes_field(stdout, "file", "file_encoding", path,
                           strlen(path));
    }
    if (rc < 0) {
      int e = fail_path(a, path, rc, detail);
      if (ex == EX_OK) ex = e;
      if (a->json) {
        printf(",\"error\":\"%s\",\"message\":", shoal_errname(rc));
        const char *m = shoal_strerror(rc);
        cli_json_string(stdout, m, strlen(m));
        fputc('}', stdout);
      }
      /* the broker is gone: the other files would fail the same way */
      if (e == EX_UNAVAIL || e == EX_TIMEOUT) break;
      continue;
    }
    char hex[SHOAL_HASH_HEX_MAX];
    for (int k = 0; k < rc; k++) sprintf(hex + 2 * k, "%02x", digest[k]);
    if (a->json) {
      printf(",\"algorithm\":\"%s\",\"digest_bits\":%d,\"digest\":\"%s\"}",
             a->alg_name, rc * 8, hex);
    } else {
      int escape = strpbrk(path, "\\\n\r") != NULL;
      if (escape) fputc('\\', stdout);
      printf("%s  ", hex);
      put_name(path, escape);
      fputc('\n', stdout);
    }
  }
  if (a->json) fputs(n ? "\n]\n" : "]\n", stdout);
  return ex;
}

static int check_tail(cli *a) {
  if (!(a->given & O_LINES)) a->lines = 10;
  return 0;
}

/* Set by SIGINT and SIGTERM during tail -f: a lock-free atomic, which a
 * signal handler may store to. */
static atomic_int stop_signal;

static void on_stop_signal(int sig) { atomic_store(&stop_signal, sig); }

/* Print one line of tail: its bytes, then '\n' if @nl; with --json an
 * object {"line":..} (with "event" and "offset" for tail -f's @event). */
static void put_line(const cli *a, const char *p, size_t n, int nl,
                     const char *event, uint64_t offset) {
  if (a->json) {
    if (event) printf("{\"event\":\"%s\",", event);
    else fputc('{', stdout);
    cli_json_bytes_field(stdout, "line", "encoding", p, n);
    if (event) printf(",\"offset\":%" PRIu64, offset);
    fputc('}', stdout);
  } else {
    put_bytes(p, n);
    if (nl) fputc('\n', stdout);
  }
}

static int tail_follow(cli *a, const char *path) {
  shoal_follow *f = NULL;
  int rc = shoal_follow_open(a->c, path, (size_t)a->lines,
                             SHOAL_FOLLOW_REOPEN, &f);
  if (rc) return fail_path(a, path, rc, shoal_last_error(a->c));
  /* stop cleanly on SIGINT and SIGTERM: no SA_RESTART, so a wait in
   * shoal_follow_next returns -EINTR at once; the timeout bounds how late
   * a signal that came between two calls is seen */
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  int ex = EX_OK;
  while (!atomic_load(&stop_signal)) {
    shoal_follow_event ev;
    rc = shoal_follow_next(f, 200, &ev);
    if (rc == SHOAL_ETIMEOUT || rc == -EINTR) continue;
    if (rc) {
      ex = fail_path(a, path, rc, NULL);
      break;
    }
    switch (ev.kind) {
    case SHOAL_FOLLOW_LINE:
      put_line(a, ev.data, ev.len, 1, "line", ev.offset);
      if (a->json) fputc('\n', stdout);
      break;
    case SHOAL_FOLLOW_TRUNCATED:
      fprintf(stderr, "%s: %s: file truncated\n", progname, path);
      if (a->json)
        printf("{\"event\":\"truncated\",\"offset\":%" PRIu64 "}\n",
               ev.offset);
      break;
    case SHOAL_FOLLOW_ROTATED:
      /* a rotation whose new file did not exist yet comes twice: at once
       * without the path, then with it once the new file is open; report
       * it once, when the lines that follow are the new file's */
      if (ev.len == 0) break;
      fprintf(stderr, "%s: %s: file rotated; following the new file\n",
              progname, path);
      if (a->json) {
        fputs("{\"event\":\"rotated\",", stdout);
        cli_json_bytes_field(stdout, "path", "path_encoding", path,
                             strlen(path));
        fputs("}\n", stdout);
      }
      break;
    default: /* SHOAL_FOLLOW_IDLE: the callback form's */
      break;
    }
    /* a reader of a pipe sees each line as it comes */
    if (fflush(stdout) != 0) {
      errorf(a, "writing to stdout: %s", strerror(errno));
      ex = EX_ERROR;
      break;
    }
  }
  shoal_follow_close(f);
  return ex;
}

static int cmd_tail(cli *a) {
  const char *path = a->argv[0];
  if (a->follow) return tail_follow(a, path);
  int fd = open_file(path, 0);
  if (fd < 0) return fail_path(a, path, fd, NULL);
  shoal_lines *l = NULL;
  int rc = shoal_tail_fd(a->c, fd, (size_t)a->lines, &l);
  if (rc) {
    close(fd);
    return fail_path(a, path, rc, shoal_last_error(a->c));
  }
  /* does the file end with '\n'? (its last line then gets one) */
  int last_nl = 1;
  struct stat st;
  char last;
  if (l->n && fstat(fd, &st) == 0 && st.st_size > 0 &&
      pread(fd, &last, 1, st.st_size - 1) == 1 && last != '\n')
    last_nl = 0;
  close(fd);
  if (a->json) fputc('[', stdout);
  for (size_t i = 0; i < l->n; i++) {
    if (a->json) fputs(i ? ",\n" : "\n", stdout);
    put_line(a, l->line[i], l->len[i], i + 1 < l->n || last_nl, NULL, 0);
  }
  if (a->json) fputs(l->n ? "\n]\n" : "]\n", stdout);
  shoal_lines_free(l);
  return EX_OK;
}

/* ----------------------------------------------------------------- help -- */

static const command commands[] = {
    {"get", cmd_get, NULL, 1, 1, 0, 1, "get KEY",
     "    Write KEY's value to stdout, byte for byte, with no newline added.\n"
     "    Reads the shared segment directly (no broker round trip).\n"
     "    With --json: {\"key\":..,\"value\":..,\"version\":N,"
     "\"expires_at_ms\":N}\n"
     "    (value as a JSON string when it is valid UTF-8, else base64 with\n"
     "    \"encoding\":\"base64\"); a missing key prints null.\n"
     "    Exit 0 found, 1 not found.\n"},
    {"put", cmd_put, NULL, 1, 2, O_TTL, 0, "put KEY [VALUE] [--ttl MS]",
     "    Set KEY to VALUE; VALUE omitted or \"-\" reads it from stdin (all of\n"
     "    it, binary safe). Prints the version of the commit. --ttl MS: the\n"
     "    key expires MS milliseconds from now (0: never).\n"
     "    With --json: {\"key\":..,\"version\":N}.\n"},
    {"del", cmd_del, NULL, 1, 1, 0, 0, "del KEY",
     "    Delete KEY. Prints nothing (--json: {\"key\":..,\"deleted\":bool}).\n"
     "    Exit 0 deleted, 1 not found.\n"},
    {"cas", cmd_cas, check_cas, 2, 3, 0, 0, "cas KEY EXPECT [VALUE]",
     "    Compare and set: set KEY to VALUE only if its version is EXPECT\n"
     "    (0: only if KEY is absent). VALUE omitted or \"-\" reads stdin.\n"
     "    Prints the new version. On a conflict prints the current version\n"
     "    to stderr (--json: {\"key\":..,\"conflict\":true,"
     "\"current_version\":N}\n"
     "    on stdout) and exits 3.\n"},
    {"scan", cmd_scan, check_scan, 0, 2, O_PREFIX | O_LIMIT | O_KEYS_ONLY, 1,
     "scan [--prefix P | START [END]] [--limit N] [--keys-only]",
     "    List keys in byte order: those starting with P, or those in\n"
     "    [START, END) (START alone: to the last key; nothing: all keys),\n"
     "    one consistent snapshot. Prints \"KEY<TAB>VALUE\" lines (--keys-only:\n"
     "    \"KEY\"); bytes are written as they are, so use --json for keys or\n"
     "    values holding tabs or newlines. --limit N: at most N keys.\n"
     "    With --json: an array of {\"key\":..,\"value\":..,\"version\":N,\n"
     "    \"expires_at_ms\":N}. Exit 0, also when nothing matched.\n"},
    {"wait", cmd_wait, NULL, 1, 1, O_AFTER, 1, "wait KEY [--after V] [--timeout MS]",
     "    Block until KEY's version exceeds V, then print the new version\n"
     "    (0: the key was deleted). Without --after, V is KEY's version when\n"
     "    the command starts (0 if absent): wait for the next change.\n"
     "    --after 0 returns at once if KEY exists. No polling: a futex on the\n"
     "    shared segment. --timeout MS: give up after MS ms (exit 4);\n"
     "    default: wait forever.\n"},
    {"stats", cmd_stats, check_stats, 0, 0, O_PROMETHEUS, 0,
     "stats [--prometheus]",
     "    The broker's statistics as \"name: value\" lines (requests and\n"
     "    errors as \"requests.TYPE: N\" and \"errors.CODE: N\"), or one JSON\n"
     "    object with --json.\n"
     "    --prometheus: the Prometheus text format instead, for\n"
     "    node_exporter's textfile collector: # HELP and # TYPE lines, then\n"
     "    one \"NAME{store=\"STORE\"} VALUE\" line per sample (STORE: the\n"
     "    store the broker serves). Gauges: shoal_up (1), shoal_keys,\n"
     "    shoal_commit_seq, shoal_size_bytes, shoal_used_bytes,\n"
     "    shoal_free_bytes, shoal_index_capacity, shoal_index_used,\n"
     "    shoal_records, shoal_retired_bytes, shoal_readers_claimed,\n"
     "    shoal_readers_busy, shoal_oldest_snapshot_age_seconds,\n"
     "    shoal_connections, shoal_followers, shoal_uptime_seconds.\n"
     "    Counters: shoal_commits_total, shoal_reclaimed_total,\n"
     "    shoal_expired_total, shoal_requests_total{type=\"put\",...},\n"
     "    shoal_errors_total{code=\"SHOAL_ECONFLICT\",...},\n"
     "    shoal_bytes_received_total, shoal_bytes_sent_total,\n"
     "    shoal_denied_total, shoal_hash_cache_hits_total,\n"
     "    shoal_hash_cache_misses_total. The names are shoal-inspect's\n"
     "    (shoal-inspect stats --prometheus) where the two overlap. With no\n"
     "    broker nothing is printed and the exit status is 5, so\n"
     "        shoal stats --prometheus > DIR/shoal.prom.$$ &&\n"
     "          mv DIR/shoal.prom.$$ DIR/shoal.prom\n"
     "    (DIR: node_exporter's --collector.textfile.directory) never\n"
     "    leaves a half-written shoal.prom. Not with --json.\n"},
    {"ping", cmd_ping, NULL, 0, 0, 0, 0, "ping",
     "    Round trip to the broker; prints PONG and the time it took.\n"},
    {"hash", cmd_hash, check_hash, 1, INT_MAX, O_ALG, 0,
     "hash FILE... [--alg ALG]",
     "    Print each FILE's digest as sha256sum does, \"HEX  FILE\" (so\n"
     "    `shoal hash --alg sha256 F | sha256sum -c` checks it); \"-\" is\n"
     "    stdin, which must be a regular file. The broker reads the file\n"
     "    through a descriptor this command opened (so only files you can\n"
     "    read) and caches digests of unchanged files for every client.\n"
     "    -a, --alg ALG: blake2b (the default: BLAKE2b-256, as b2sum -l 256;\n"
     "    b2sum -c checks it), blake2b-BITS (b2sum -l BITS: 128..512, a\n"
     "    multiple of 8; blake2b-512 is b2sum's default), sha256, sha512.\n"
     "    A file that fails (missing, a directory, unreadable) is\n"
     "    reported on stderr and the others are still hashed; the exit\n"
     "    status is the first failure's. With --json: an array of\n"
     "    {\"file\":..,\"algorithm\":..,\"digest_bits\":N,\"digest\":HEX}, or\n"
     "    {\"file\":..,\"error\":NAME,\"message\":..} for a failure.\n"},
    {"tail", cmd_tail, check_tail, 1, 1, O_LINES | O_FOLLOW, 0,
     "tail FILE [-n N] [-f]",
     "    Print the last N lines of FILE (default 10), read from its end by\n"
     "    the broker: the cost does not grow with the file's size. Bytes are\n"
     "    written as they are. -n, --lines N: N lines (0: none).\n"
     "    -f, -F, --follow: then print lines as they are appended (pushed\n"
     "    by the broker, no polling), as tail -F: a truncated file is read\n"
     "    again from its start, a rotated one (renamed or removed) is\n"
     "    reopened by name (reported once the new file is open), and\n"
     "    either is reported on stderr, as tail -F does:\n"
     "        shoal: FILE: file truncated\n"
     "        shoal: FILE: file rotated; following the new file\n"
     "    SIGINT or SIGTERM ends it (exit 0).\n"
     "    With --json: an array of {\"line\":..} (base64 with\n"
     "    \"encoding\":\"base64\" when not UTF-8); with -f one object per\n"
     "    line instead: {\"event\":\"line\",\"line\":..,\"offset\":N},\n"
     "    {\"event\":\"truncated\",\"offset\":N}, {\"event\":\"rotated\",\n"
     "    \"path\":..}.\n"},
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

static void help_command(FILE *f, const command *cmd) {
  fprintf(f, "    shoal [OPTIONS] %s\n%s", cmd->usage, cmd->help);
}

static void usage_short(FILE *f) {
  fprintf(f,
          "usage: shoal [--name NAME] [--socket PATH] [--json] "
          "[--timeout MS] COMMAND [ARGS...]\n"
          "commands:");
  for (size_t i = 0; i < NCOMMANDS; i++) fprintf(f, " %s", commands[i].name);
  fprintf(f, "\n'shoal --help' for the manual, 'shoal COMMAND --help' for "
             "one command\n");
}

static void help_full(FILE *f) {
  fprintf(f,
"NAME\n"
"    shoal - command-line client of a shoal shared-memory key-value store\n"
"\n"
"SYNOPSIS\n"
"    shoal [--name NAME] [--socket PATH] [--json] [--timeout MS] COMMAND "
"[ARGS...]\n"
"    shoal COMMAND --help\n"
"    shoal --help | --version\n"
"\n"
"DESCRIPTION\n"
"    Reads and writes the store served by shoald. Reads (get, scan, wait)\n"
"    map the store's shared segment and need no round trip; writes and\n"
"    broker requests go over the broker's Unix socket. hash and tail are\n"
"    the broker's file utilities: this command opens the file and hands\n"
"    the broker its descriptor.\n"
"\n"
"OPTIONS\n"
"    --name NAME     the store (default: default)\n"
"    --socket PATH   the broker's socket (default: $SHOAL_SOCKET, else\n"
"                    RUNDIR/NAME.sock)\n"
"    --json          machine-readable output (one JSON value on stdout)\n"
"    --timeout MS    give up after MS milliseconds: connecting, waiting for\n"
"                    the broker's reply, and the wait command (exit 4)\n"
"    -h, --help      this page; after a command, that command's help\n"
"    --version       print the versions of shoal and libshoal\n"
"    Options may also follow the command. Only arguments starting with\n"
"    \"--\" are options (so a VALUE may be \"-5\"); \"--\" ends them. hash\n"
"    and tail also take their short options (-a, -n, -f) and refuse other\n"
"    arguments starting with '-': put \"--\" before such a file name.\n"
"\n"
"COMMANDS\n");
  for (size_t i = 0; i < NCOMMANDS; i++) {
    fprintf(f, "    %s\n%s\n", commands[i].usage, commands[i].help);
  }
  fprintf(f,
"EXIT STATUS\n"
"    0  ok; the key was found; tail -f stopped by SIGINT or SIGTERM\n"
"    1  not found (get, del)\n"
"    2  usage error (bad option, argument or name)\n"
"    3  conflict (cas: the key's version was not EXPECT)\n"
"    4  timeout (wait --timeout, or no reply within --timeout)\n"
"    5  broker unavailable (shoald is not running or not reachable)\n"
"    6  any other error (key or value too big, store full, access denied,\n"
"       a file missing, unreadable or not a regular file, ...)\n"
"    Errors are printed to stderr as\n"
"        shoal: COMMAND: <what went wrong> (<detail>)\n"
"\n"
"ENVIRONMENT\n"
"    SHOAL_SOCKET     the broker's socket when --socket is not given\n"
"    SHOAL_RUNDIR     RUNDIR; else $XDG_RUNTIME_DIR/shoal, else "
"/tmp/shoal-UID\n"
"\n"
"EXAMPLES\n"
"    shoal put config/mode fast           # prints the version, e.g. 7\n"
"    shoal get config/mode                # fast\n"
"    shoal cas config/mode 7 slow         # only if nobody changed it\n"
"    shoal scan --prefix config/ --json\n"
"    v=$(shoal wait config/mode --timeout 5000) || echo \"no change\"\n"
"    shoal get k >/dev/null; case $? in 0) ;; 1) echo absent;; *) exit 1;; "
"esac\n"
"    shoal hash --alg sha256 *.tar | sha256sum -c\n"
"    shoal tail -n 50 -f /var/log/app.log\n"
"\n"
"SEE ALSO\n"
"    shoald(8), shoal-inspect(1)\n");
}

/* -------------------------------------------------------------- parsing -- */

/* An option's value: "--opt=VALUE" or the next argument. */
static const char *opt_value(int argc, char **argv, int *i, const char *arg,
                             size_t optlen) {
  if (arg[optlen] == '=') return arg + optlen + 1;
  if (*i + 1 >= argc) return NULL;
  return argv[++*i];
}

static int opt_is(const char *arg, const char *name, size_t *len) {
  size_t n = strlen(name);
  if (strncmp(arg, name, n) != 0 || (arg[n] && arg[n] != '=')) return 0;
  *len = n;
  return 1;
}

/* Options valid anywhere. Returns 1 when @arg was one (consumed), 0 when
 * not, -1 on a usage error (message printed). */
static int global_opt(cli *a, int argc, char **argv, int *i) {
  const char *arg = argv[*i], *v;
  size_t n;
  if (opt_is(arg, "--name", &n)) {
    if (!(v = opt_value(argc, argv, i, arg, n))) goto missing;
    a->name = v;
    return 1;
  }
  if (opt_is(arg, "--socket", &n)) {
    if (!(v = opt_value(argc, argv, i, arg, n))) goto missing;
    a->socket = v;
    return 1;
  }
  if (opt_is(arg, "--timeout", &n)) {
    uint64_t t;
    if (!(v = opt_value(argc, argv, i, arg, n))) goto missing;
    if (parse_u64(v, INT_MAX, &t)) {
      errorf(a, "--timeout wants milliseconds (0..%d), got '%s'", INT_MAX, v);
      return -1;
    }
    a->timeout_ms = (int)t;
    return 1;
  }
  if (strcmp(arg, "--json") == 0) {
    a->json = 1;
    return 1;
  }
  return 0;
missing:
  errorf(a, "option %.*s needs a value", (int)n, arg);
  return -1;
}

static int opt_set(cli *a, unsigned o, const char *arg, size_t n,
                   const char *v);

/* Command options. Same return convention as global_opt. */
static int command_opt(cli *a, int argc, char **argv, int *i) {
  const char *arg = argv[*i], *v;
  size_t n;
  unsigned o;
  if (opt_is(arg, "--ttl", &n)) o = O_TTL;
  else if (opt_is(arg, "--prefix", &n)) o = O_PREFIX;
  else if (opt_is(arg, "--limit", &n)) o = O_LIMIT;
  else if (opt_is(arg, "--after", &n)) o = O_AFTER;
  else if (opt_is(arg, "--alg", &n)) o = O_ALG;
  else if (opt_is(arg, "--lines", &n)) o = O_LINES;
  else if (strcmp(arg, "--keys-only") == 0) {
    n = strlen(arg);
    o = O_KEYS_ONLY;
  } else if (strcmp(arg, "--follow") == 0) {
    n = strlen(arg);
    o = O_FOLLOW;
  } else if (strcmp(arg, "--prometheus") == 0) {
    n = strlen(arg);
    o = O_PROMETHEUS;
  } else {
    return 0;
  }
  if (!(a->cmd->opts & o)) {
    errorf(a, "option %.*s does not apply to %s", (int)n, arg, a->cmd->name);
    return -1;
  }
  a->given |= o;
  if (o == O_KEYS_ONLY) {
    a->keys_only = 1;
    return 1;
  }
  if (o == O_FOLLOW) {
    a->follow = 1;
    return 1;
  }
  if (o == O_PROMETHEUS) {
    a->prometheus = 1;
    return 1;
  }
  if (!(v = opt_value(argc, argv, i, arg, n))) {
    errorf(a, "option %.*s needs a value", (int)n, arg);
    return -1;
  }
  return opt_set(a, o, arg, n, v);
}

/* Set option @o (seen as @arg, its name @n bytes long) to @v. */
static int opt_set(cli *a, unsigned o, const char *arg, size_t n,
                   const char *v) {
  if (o == O_PREFIX) {
    a->prefix = v;
    return 1;
  }
  if (o == O_ALG) {
    a->alg = v;
    return 1;
  }
  uint64_t x;
  if (parse_u64(v, o == O_TTL ? UINT32_MAX : UINT64_MAX, &x)) {
    errorf(a, "option %.*s wants a whole number%s, got '%s'", (int)n, arg,
           o == O_TTL ? " of milliseconds (at most 4294967295)" : "", v);
    return -1;
  }
  if (o == O_TTL) a->ttl_ms = x;
  else if (o == O_LIMIT) a->limit = x;
  else if (o == O_LINES) a->lines = x;
  else a->after = x;
  return 1;
}

/* The short options of hash and tail (-a ALG, -n N, -f, -F; a value may
 * be attached: -n5). Returns 1 when @arg was one (consumed), -1 on a
 * usage error (message printed): any other "-X" is one for these
 * commands. */
static int short_opt(cli *a, int argc, char **argv, int *i) {
  const char *arg = argv[*i], *v;
  unsigned o;
  if (strcmp(arg, "-f") == 0 || strcmp(arg, "-F") == 0) o = O_FOLLOW;
  else if (strncmp(arg, "-n", 2) == 0) o = O_LINES;
  else if (strncmp(arg, "-a", 2) == 0) o = O_ALG;
  else {
    errorf(a, "unknown option '%s' (put \"--\" before a file name that "
              "starts with '-')", arg);
    return -1;
  }
  if (!(a->cmd->opts & o)) {
    errorf(a, "option %.2s does not apply to %s", arg, a->cmd->name);
    return -1;
  }
  a->given |= o;
  if (o == O_FOLLOW) {
    a->follow = 1;
    return 1;
  }
  if (arg[2]) {
    v = arg + 2;
  } else if (*i + 1 < argc) {
    v = argv[++*i];
  } else {
    errorf(a, "option %s needs a value", arg);
    return -1;
  }
  return opt_set(a, o, arg, 2, v);
}

static const command *find_command(const char *name) {
  for (size_t i = 0; i < NCOMMANDS; i++)
    if (strcmp(commands[i].name, name) == 0) return &commands[i];
  return NULL;
}

int main(int argc, char **argv) {
  cli a;
  memset(&a, 0, sizeof a);
  a.timeout_ms = -1;
  int i = 1;

  /* global options, up to the command */
  for (; i < argc; i++) {
    const char *arg = argv[i];
    if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
      help_full(stdout);
      return EX_OK;
    }
    if (strcmp(arg, "--version") == 0) {
      printf("shoal %d.%d.%d (libshoal %s)\n", SHOAL_VERSION_MAJOR,
             SHOAL_VERSION_MINOR, SHOAL_VERSION_PATCH, shoal_version());
      return EX_OK;
    }
    if (strcmp(arg, "--") == 0) {
      i++;
      break;
    }
    if (strncmp(arg, "--", 2) != 0) break;
    int r = global_opt(&a, argc, argv, &i);
    if (r < 0) return EX_USAGE;
    if (r == 0) {
      errorf(&a, "unknown option '%s'", arg);
      usage_short(stderr);
      return EX_USAGE;
    }
  }
  if (i >= argc) {
    errorf(&a, "no command given");
    usage_short(stderr);
    return EX_USAGE;
  }
  if (strcmp(argv[i], "help") == 0) {
    const command *hc = i + 1 < argc ? find_command(argv[i + 1]) : NULL;
    if (i + 1 < argc && !hc) {
      errorf(&a, "unknown command '%s'", argv[i + 1]);
      return EX_USAGE;
    }
    if (hc) help_command(stdout, hc);
    else help_full(stdout);
    return EX_OK;
  }
  a.cmd = find_command(argv[i]);
  if (!a.cmd) {
    errorf(&a, "unknown command '%s'", argv[i]);
    usage_short(stderr);
    return EX_USAGE;
  }

  /* the command's arguments: options anywhere, "--" ends them */
  char **pos = calloc((size_t)argc, sizeof *pos);
  if (!pos) {
    errorf(&a, "%s", strerror(ENOMEM));
    return EX_ERROR;
  }
  int npos = 0, opts_done = 0;
  for (i++; i < argc; i++) {
    const char *arg = argv[i];
    if (!opts_done && (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0)) {
      help_command(stdout, a.cmd);
      free(pos);
      return EX_OK;
    }
    if (!opts_done && strcmp(arg, "--") == 0) {
      opts_done = 1;
      continue;
    }
    int is_short = (a.cmd->opts & O_SHORT) && arg[0] == '-' && arg[1] &&
                   arg[1] != '-';
    if (!opts_done && (strncmp(arg, "--", 2) == 0 || is_short)) {
      int r;
      if (is_short) {
        r = short_opt(&a, argc, argv, &i);
      } else {
        r = global_opt(&a, argc, argv, &i);
        if (r == 0) r = command_opt(&a, argc, argv, &i);
        if (r == 0) errorf(&a, "unknown option '%s'", arg);
      }
      if (r <= 0) {
        fprintf(stderr, "usage: shoal %s\n", a.cmd->usage);
        free(pos);
        return EX_USAGE;
      }
      continue;
    }
    pos[npos++] = argv[i];
  }
  if (npos < a.cmd->min_args || npos > a.cmd->max_args) {
    errorf(&a, "%s arguments", npos < a.cmd->min_args ? "missing" : "too many");
    fprintf(stderr, "usage: shoal %s\n", a.cmd->usage);
    free(pos);
    return EX_USAGE;
  }
  a.argc = npos;
  a.argv = pos;
  if (a.cmd->check) {
    int ex = a.cmd->check(&a);
    if (ex) {
      fprintf(stderr, "usage: shoal %s\n", a.cmd->usage);
      free(pos);
      return ex;
    }
  }

  shoal_options o;
  memset(&o, 0, sizeof o);
  o.socket = a.socket;
  if (a.timeout_ms >= 0) {
    /* 0 means "the default" to libshoal; the smallest real bound is 1 ms */
    int t = a.timeout_ms ? a.timeout_ms : 1;
    o.connect_timeout_ms = t;
    o.timeout_ms = t;
  }
  o.flags = a.cmd->need_slot ? 0 : SHOAL_OPEN_NO_SLOT;
  o.client = "shoal-cli";
  int rc = shoal_open(&a.c, a.name, &o);
  if (rc) {
    /* libshoal keeps the detail of a failed open per thread, read with a
     * NULL handle */
    a.c = NULL;
    const char *detail = shoal_last_error(NULL);
    if (detail && *detail)
      errorf(&a, "%s (%s)", shoal_strerror(rc), detail);
    else
      errorf(&a, "%s (store '%s')", shoal_strerror(rc),
             a.name ? a.name : "default");
    free(pos);
    return exit_code(rc);
  }
  int ex = a.cmd->run(&a);
  shoal_close(a.c);
  free(pos);
  if (fflush(stdout) != 0 || ferror(stdout)) {
    errorf(&a, "writing to stdout: %s", strerror(errno));
    if (ex == EX_OK) ex = EX_ERROR;
  }
  return ex;
}
