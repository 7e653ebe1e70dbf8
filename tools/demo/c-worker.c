/*
 * c-worker.c - the C worker of tools/quickstart (binary shoal-demo-worker,
 * built with the tools, not installed): what a service of a cluster
 * orchestrator would do with shoal, beside tools/demo/worker.py and
 * tools/demo/go-worker, which do the same in Python and Go.
 *
 *   shoal-demo-worker [--name NAME] [--stop-key KEY] [--timeout MS]
 *
 * It reads the shared configuration zero-copy inside one read section,
 * publishes its status with an atomic batch, claims a job with
 * compare-and-swap, then stays attached until another process puts
 * KEY (default signal/stop): it pins a snapshot on a second handle, so
 * `shoal-inspect readers` shows a busy slot while it waits, and puts
 * ready/c once it is waiting, so quickstart knows when to look. Every
 * step is printed, prefixed "[c]". The broker comes from SHOAL_RUNDIR /
 * SHOAL_SOCKET, as for any libshoal program.
 *
 * Exit status: 0 done, 1 a libshoal call failed or KEY did not come
 * within MS milliseconds (default 60000: quickstart puts it within a few
 * seconds; the bound only keeps a forgotten worker from lingering), 2
 * usage.
 */
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shoal/shoal.h"

#define P "[c] "

/* Print "[c] WHAT failed: <strerror> (<detail>)" to stderr; returns 1. */
static int fail(shoal *c, const char *what, int rc) {
  const char *detail = shoal_last_error(c);
  fprintf(stderr, P "%s failed: %s%s%s%s\n", what, shoal_strerror(rc),
          *detail ? " (" : "", detail, *detail ? ")" : "");
  return 1;
}

/* Print @n bytes at @p: printable ASCII as is, the rest as \xNN. */
static void put_text(const void *p, size_t n) {
  const unsigned char *s = p;
  for (size_t i = 0; i < n; i++) {
    if (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '\\')
      putchar(s[i]);
    else
      printf("\\x%02x", s[i]);
  }
}

/* shoal_scan_fn: print one key of config/ as "KEY=VALUE", comma-separated.
 * The pointers are views into the segment, valid in the read section. */
static int print_config(void *arg, const void *key, size_t klen,
                        const shoal_val *val) {
  unsigned *n = arg;
  fputs(*n ? ", " : "", stdout);
  put_text(key, klen);
  putchar('=');
  put_text(val->data, val->len);
  ++*n;
  return 0;
}

static int usage(FILE *f) {
  fprintf(f, "usage: shoal-demo-worker [--name NAME] [--stop-key KEY] "
             "[--timeout MS]\n");
  return f == stdout ? 0 : 2;
}

int main(int argc, char **argv) {
  const char *name = "default", *stop_key = "signal/stop";
  long timeout_ms = 60000;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) return usage(stdout);
    if (i + 1 >= argc) return usage(stderr);
    if (strcmp(a, "--name") == 0) {
      name = argv[++i];
    } else if (strcmp(a, "--stop-key") == 0) {
      stop_key = argv[++i];
    } else if (strcmp(a, "--timeout") == 0) {
      char *end;
      timeout_ms = strtol(argv[++i], &end, 10);
      if (*end || timeout_ms < 0 || timeout_ms > INT_MAX) return usage(stderr);
    } else {
      return usage(stderr);
    }
  }
  /* three workers print at once: one whole line per write */
  setvbuf(stdout, NULL, _IOLBF, 0);

  char me[32];
  snprintf(me, sizeof me, "c-worker-%ld", (long)getpid());
  shoal *c = NULL, *snap = NULL;
  shoal_batch *b = NULL;
  int rc = shoal_open(&c, name, NULL);
  if (rc) return fail(NULL, "shoal_open", rc);
  int ex = 1;

  /* 1. the configuration, zero-copy: both reads see one commit */
  if ((rc = shoal_read_begin(c))) {
    fail(c, "shoal_read_begin", rc);
    goto out;
  }
  shoal_val v;
  rc = shoal_get(c, "config/region", 13, &v);
  if (rc == 0) {
    printf(P "read config/region = ");
    put_text(v.data, v.len); /* a view into shared memory: no copy */
    printf(" (version %" PRIu64 ", zero-copy)\n", v.version);
  } else if (rc == SHOAL_ENOTFOUND) {
    printf(P "config/region is not set\n");
  }
  unsigned n = 0;
  int src = 0;
  if (rc == 0 || rc == SHOAL_ENOTFOUND) {
    printf(P "read config/* in the same snapshot: ");
    src = shoal_scan_prefix(c, "config/", 7, print_config, &n);
    putchar('\n');
  }
  shoal_read_end(c);
  if (rc && rc != SHOAL_ENOTFOUND) {
    fail(c, "shoal_get", rc);
    goto out;
  }
  if (src < 0) {
    fail(c, "shoal_scan_prefix", src);
    goto out;
  }

  /* 2. status and heartbeat in one atomic batch */
  char status_key[64], beat_key[64], pid[24];
  snprintf(status_key, sizeof status_key, "status/%s", me);
  snprintf(beat_key, sizeof beat_key, "heartbeat/%s", me);
  snprintf(pid, sizeof pid, "%ld", (long)getpid());
  uint64_t seq = 0;
  if ((rc = shoal_batch_new(c, &b)) ||
      (rc = shoal_batch_put(b, status_key, strlen(status_key), "running", 7,
                            0)) ||
      (rc = shoal_batch_put(b, beat_key, strlen(beat_key), pid, strlen(pid),
                            0)) ||
      (rc = shoal_batch_commit(c, b, &seq))) {
    fail(c, "the status batch", rc);
    goto out;
  }
  printf(P "wrote %s and %s in one batch (commit %" PRIu64 ")\n", status_key,
         beat_key, seq);

  /* 3. claim the job: expect 0 means "only if nobody owns it yet" */
  uint64_t ver = 0;
  rc = shoal_cas(c, "jobs/42/owner", 13, 0, me, strlen(me), &ver);
  if (rc == 0) {
    printf(P "claimed jobs/42 (version %" PRIu64 ")\n", ver);
  } else if (rc == SHOAL_ECONFLICT) {
    char owner[128];
    size_t len = 0;
    if (shoal_get_copy(c, "jobs/42/owner", 13, owner, sizeof owner, &len,
                       NULL) == 0) {
      printf(P "jobs/42 is already claimed by ");
      put_text(owner, len);
      printf(" (version %" PRIu64 ")\n", ver);
    } else {
      printf(P "jobs/42 is already claimed (version %" PRIu64 ")\n", ver);
    }
  } else {
    fail(c, "shoal_cas", rc);
    goto out;
  }

  /* 4. stay attached: a second handle pins a snapshot (a busy reader
   * slot for shoal-inspect readers; the broker keeps what it sees until
   * it ends), the first waits for the stop key. shoal_wait must be called
   * outside a section, hence two handles. */
  if ((rc = shoal_open(&snap, name, NULL))) {
    fail(NULL, "shoal_open", rc);
    goto out;
  }
  if ((rc = shoal_read_begin(snap))) {
    fail(snap, "shoal_read_begin", rc);
    goto out;
  }
  printf(P "holding a snapshot open on reader slot %d, watching %s "
           "(reader slot %d)\n",
         shoal_reader_slot(snap), stop_key, shoal_reader_slot(c));
  if ((rc = shoal_put(c, "ready/c", 7, pid, strlen(pid), NULL))) {
    fail(c, "shoal_put ready/c", rc);
    goto out;
  }
  rc = shoal_wait(c, stop_key, strlen(stop_key), 0, (int)timeout_ms, &ver);
  shoal_read_end(snap);
  if (rc == SHOAL_ETIMEOUT) {
    fprintf(stderr, P "%s did not come within %ld ms; giving up\n", stop_key,
            timeout_ms);
    goto out;
  }
  if (rc) {
    fail(c, "shoal_wait", rc);
    goto out;
  }
  printf(P "woken: %s is at version %" PRIu64 "; snapshot released\n", stop_key,
         ver);
  if ((rc = shoal_put(c, status_key, strlen(status_key), "done", 4, NULL))) {
    fail(c, "shoal_put", rc);
    goto out;
  }
  printf(P "set %s = done; exiting\n", status_key);
  ex = 0;
out:
  shoal_batch_free(b);
  shoal_close(snap);
  shoal_close(c);
  return ex;
}
