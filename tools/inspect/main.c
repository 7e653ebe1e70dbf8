/*
 * shoal-inspect - live state of a shoal store, read straight from its
 * shared objects. Needs no socket, so it works while the broker is down,
 * restarting or wedged.
 *
 * Read-only: the data object is mapped PROT_READ and, unless --pin, the
 * readers object too, so inspecting never changes anything. Without a
 * reader slot nothing pins memory, so every read that follows offsets runs
 * in an unpinned section (shm.h, SHM_VIEW_UNPINNED): output is built into
 * a buffer and printed only if shm_read_validate says the broker freed
 * nothing under it; otherwise the section is retried. `keys` goes in
 * chunks of 256 keys, each its own snapshot (as Redis SCAN); --pin claims
 * a reader slot (like any client) so a whole listing is one snapshot.
 *
 * A corrupt or foreign segment is diagnosed by the header check in
 * shm/segment.c (which field, what is wrong) and exits 2; every offset
 * followed afterwards is bounds-checked by shm/, so no content can crash
 * this program.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "inspect.h"
#include "out.h"

#ifndef SHOAL_VERSION_STRING
#define SHOAL_VERSION_STRING "0.1.0"
#endif

/* ------------------------------------------------------------- options -- */

typedef struct opts {
  const char *name, *dir;
  int json, pin, check, all, runs, prometheus;
  uint64_t limit;
  double interval;
  uint64_t count;
  const char *cmd;
  const char *arg; /* PREFIX or KEY */
  int has_arg;
} opts;

typedef struct ctx {
  opts *o;
  shm_view *v;
  char path[4096];
} ctx;

static const char *prog = "shoal-inspect";

static void die_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die_usage(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s: ", prog);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\n'%s --help' for the manual\n", prog);
  exit(EXIT_USAGE);
}

static void help(FILE *f) {
  fprintf(f,
"NAME\n"
"    shoal-inspect - dump the live state of a shoal store from shared memory\n"
"\n"
"SYNOPSIS\n"
"    shoal-inspect [--name NAME] [--shm-dir DIR] [--json] [--pin] COMMAND\n"
"    shoal-inspect [--name NAME] [--shm-dir DIR] [--json] --check\n"
"\n"
"DESCRIPTION\n"
"    Reads the store's shared objects DIR/shoal.NAME.data and\n"
"    DIR/shoal.NAME.readers directly: no socket, no broker needed, so it\n"
"    works while shoald is down, restarting or wedged. It maps both\n"
"    objects read-only and never writes anything. A read that the broker\n"
"    may have overtaken (it freed memory meanwhile) is detected and\n"
"    retried, so what is printed was true at one moment; with the broker\n"
"    writing, `keys` is consistent per chunk of 256 keys (like Redis\n"
"    SCAN) unless --pin is given.\n"
"\n"
"OPTIONS\n"
"    --name NAME     the store (default: default)\n"
"    --shm-dir DIR   where its objects are (default: $SHOAL_SHM_DIR, else\n"
"                    /dev/shm)\n"
"    --json          one JSON object on stdout (top: one per frame and\n"
"                    line); field names below are stable\n"
"    --pin           claim a reader slot like a client (writes the readers\n"
"                    object): one snapshot for the whole command, and the\n"
"                    broker keeps what it shows until the command ends\n"
"    --check         same as the check command\n"
"    -h, --help      this page\n"
"    --version       the version\n"
"\n"
"COMMANDS\n"
"    summary\n"
"        Store name, format, size reserved/used/free, keys, commit_seq,\n"
"        hash index load, allocator size classes and fragmentation, broker\n"
"        pid and state, reader slots and the oldest snapshot's age. The\n"
"        default command. Broker state: running (its pid is alive),\n"
"        stopped (clean shutdown), crashed (died without one: the next\n"
"        shoald runs recovery, nothing acknowledged is lost).\n"
"        JSON: name path format fingerprint store_id created_ms size\n"
"        backed used free meta_bytes heap_top keys key_bytes value_bytes\n"
"        records entries commit_seq commits last_commit_ms\n"
"        index{offset capacity used live load}\n"
"        allocator{classes[{class size used free slabs}] extent_pages\n"
"        free_pages fragmentation} retired retired_bytes reclaimed expired\n"
"        broker{pid alive start_time generation clean_shutdown state\n"
"        recoveries} readers{slots claimed busy oldest_snapshot\n"
"        oldest_snapshot_age_ms oldest_snapshot_lag} pinned\n"
"    keys [PREFIX] [--limit N]\n"
"        Live keys in byte order (default limit 1000; 0: all). Bytes that\n"
"        are not printable are shown as \\xNN.\n"
"        JSON: keys[{key [key_encoding] version len expires_at}] count\n"
"        truncated snapshot\n"
"    get KEY\n"
"        The value (text when printable, else a hex dump), its version,\n"
"        TTL left, and the older versions still retained for older\n"
"        snapshots or not reclaimed yet (history: newest first, without\n"
"        the current one; for an absent key, its tombstone and what lies\n"
"        behind it). Exit 1 if absent.\n"
"        JSON: key found version len expires_at ttl_ms value [encoding]\n"
"        printable history[{version len tombstone expires_at}] snapshot\n"
"    readers [--all]\n"
"        Claimed reader slots (--all: every slot ever used): pid, alive,\n"
"        leased by the broker, snapshot, lag in commits, age, nesting.\n"
"        JSON: slots claimed busy commit_seq readers[{slot pid alive\n"
"        leased busy snapshot lag age_ms nesting}]\n"
"    layout [--runs]\n"
"        Regions and offsets: header, doorbells, page table, heap; the\n"
"        hash index; pages by kind; --runs lists every page run.\n"
"        JSON: size backed_end heap_start heap_top regions[{name offset\n"
"        bytes}] index{offset bytes capacity} pages{meta slab extent free\n"
"        uncarved} [runs[{offset pages kind class}]]\n"
"    top [--interval SEC] [--count N]\n"
"        Refresh every SEC seconds (default 1): commits/s, keys, memory,\n"
"        busy readers and the oldest snapshot's age (reads themselves are\n"
"        invisible: they write nothing). --count N stops after N frames.\n"
"        JSON, one line per frame: time_ms commit_seq commits_per_s keys\n"
"        used readers_busy oldest_snapshot_age_ms broker_alive\n"
"    stats [--prometheus]\n"
"        The figures as `name value` lines, or with --prometheus in the\n"
"        Prometheus text format (HELP, TYPE, label store=\"NAME\") for\n"
"        node_exporter's textfile collector, e.g. every minute:\n"
"          shoal-inspect stats --prometheus > DIR/shoal.prom.$$ &&\n"
"            mv DIR/shoal.prom.$$ DIR/shoal.prom\n"
"        Metrics: shoal_up (broker alive) shoal_keys shoal_commit_seq\n"
"        shoal_commits_total shoal_size_bytes shoal_used_bytes\n"
"        shoal_free_bytes shoal_backed_bytes shoal_index_capacity\n"
"        shoal_index_used shoal_records shoal_retired_bytes\n"
"        shoal_reclaimed_total shoal_expired_total shoal_readers_claimed\n"
"        shoal_readers_busy shoal_oldest_snapshot_age_seconds.\n"
"        `shoal stats --prometheus` adds the broker's own counters.\n"
"    check\n"
"        The full consistency check: header, geometry, every index slot,\n"
"        entry, version chain and skiplist level, the page table and the\n"
"        allocator's counters; prints every problem found. Mode: live\n"
"        (broker running: what must hold at any instant), quiescent\n"
"        (stopped cleanly: also the counters), unclean (crashed: the\n"
"        half-done commit recovery will repair is accepted).\n"
"        JSON: consistent mode problems[]\n"
"\n"
"EXIT STATUS\n"
"    0   ok; check found the store consistent\n"
"    1   get: the key does not exist\n"
"    2   the segment is corrupt, foreign or of another format version\n"
"        (stderr names the field and what is wrong), or check found\n"
"        problems\n"
"    3   the store can not be opened (no such store, permission denied)\n"
"    64  usage error\n"
"\n"
"EXAMPLES\n"
"    shoal-inspect                         # summary of store \"default\"\n"
"    shoal-inspect --name jobs keys status/ --limit 20\n"
"    shoal-inspect get config/region --json\n"
"    shoal-inspect readers                 # who holds old snapshots?\n"
"    shoal-inspect --check || echo \"store damaged\"\n"
"\n"
"SEE ALSO\n"
"    shoald(8), shoal(1)\n");
}

/* ------------------------------------------------------------- helpers -- */

static uint64_t now_ms(void) { return shm_now_ms(); }

static void fmt_bytes(char *b, size_t cap, uint64_t n) {
  static const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double d = (double)n;
  int u = 0;
  while (d >= 1024 && u < 4) {
    d /= 1024;
    u++;
  }
  if (u == 0)
    snprintf(b, cap, "%llu B", (unsigned long long)n);
  else
    snprintf(b, cap, "%.1f %s", d, unit[u]);
}

static void fmt_age(char *b, size_t cap, uint64_t ms) {
  if (ms < 1000)
    snprintf(b, cap, "%llu ms", (unsigned long long)ms);
  else if (ms < 120000)
    snprintf(b, cap, "%.1f s", (double)ms / 1000);
  else if (ms < 7200000)
    snprintf(b, cap, "%.1f min", (double)ms / 60000);
  else
    snprintf(b, cap, "%.1f h", (double)ms / 3600000);
}

static void fmt_time(char *b, size_t cap, uint64_t ms) {
  time_t t = (time_t)(ms / 1000);
  struct tm tm;
  if (!ms || !gmtime_r(&t, &tm) || !strftime(b, cap, "%Y-%m-%dT%H:%M:%SZ", &tm))
    snprintf(b, cap, "-");
}

/* Key bytes for humans: printable ASCII as is, the rest as \xNN. */
static void put_escaped(FILE *f, const void *p, size_t n) {
  const unsigned char *s = p;
  for (size_t i = 0; i < n; i++) {
    if (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '\\')
      putc(s[i], f);
    else if (s[i] == '\\')
      fputs("\\\\", f);
    else
      fprintf(f, "\\x%02x", s[i]);
  }
}

static int printable(const void *p, size_t n) {
  const unsigned char *s = p;
  if (!cli_utf8_valid(p, n)) return 0;
  for (size_t i = 0; i < n; i++)
    if ((s[i] < 0x20 && s[i] != '\n' && s[i] != '\t' && s[i] != '\r') ||
        s[i] == 0x7f)
      return 0;
  return 1;
}

static void hexdump(FILE *f, const void *p, size_t n) {
  const unsigned char *s = p;
  for (size_t off = 0; off < n; off += 16) {
    fprintf(f, "  %08zx  ", off);
    for (size_t i = 0; i < 16; i++) {
      if (off + i < n)
        fprintf(f, "%02x ", s[off + i]);
      else
        fputs("   ", f);
      if (i == 7) putc(' ', f);
    }
    fputs(" |", f);
    for (size_t i = 0; i < 16 && off + i < n; i++)
      putc(s[off + i] >= 0x20 && s[off + i] < 0x7f ? s[off + i] : '.', f);
    fputs("|\n", f);
  }
}

/* Run @fn inside a section until the section validates (unpinned views;
 * a pinned one validates at once). @fn writes into a memory stream that is
 * copied to stdout only when the section held. Returns fn's result, or
 * -EAGAIN if the broker kept freeing memory under every attempt. */
typedef int (*section_fn)(ctx *c, FILE *out, void *arg);

static int in_section(ctx *c, section_fn fn, void *arg, FILE *dst) {
  for (int attempt = 0; attempt < 2000; attempt++) {
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (!m) return -ENOMEM;
    int rc = shm_read_begin(c->v);
    if (rc) {
      fclose(m);
      free(buf);
      return rc;
    }
    rc = fn(c, m, arg);
    int valid = shm_read_validate(c->v);
    shm_read_end(c->v);
    fclose(m);
    if (valid == 0) {
      fwrite(buf, 1, len, dst);
      free(buf);
      return rc;
    }
    free(buf);
    /* the broker was freeing memory: let it finish */
    struct timespec ts = {0, attempt < 10 ? 100000 : 2000000};
    nanosleep(&ts, NULL);
  }
  return -EAGAIN;
}

static void fail_retry(const char *what) {
  fprintf(stderr,
          "%s: %s: the broker kept reclaiming memory during every attempt "
          "(2000); try again, or use --pin for a pinned snapshot\n",
          prog, what);
}

/* --------------------------------------------------------- state --------- */

typedef struct state {
  shm_info in;
  shm_stats st;
  int alive;
  const char *bstate;
  uint64_t used, free_, carved, free_carved;
  double frag, load;
  uint64_t slabs[SHM_NCLASSES];
  uint64_t pages_meta, pages_slab, pages_extent, pages_free, pages_uncarved;
  int runs_ok;
} state;

static int count_run(void *arg, const shm_run_info *r) {
  state *s = arg;
  switch (r->kind) {
  case SHM_RUN_SLAB:
    s->slabs[r->cls]++;
    s->pages_slab += r->pages;
    break;
  case SHM_RUN_EXTENT: s->pages_extent += r->pages; break;
  case SHM_RUN_FREE: s->pages_free += r->pages; break;
  case SHM_RUN_UNCARVED: s->pages_uncarved += r->pages; break;
  }
  return 0;
}

static void load_state(ctx *c, state *s) {
  memset(s, 0, sizeof *s);
  shm_view_info(c->v, &s->in);
  shm_view_stats(c->v, &s->st);
  s->alive = shm_view_writer_alive(c->v);
  s->bstate = s->alive && !s->in.clean ? "running"
              : s->in.clean           ? "stopped"
                                      : "crashed";
  s->used = s->st.meta_bytes + s->st.heap_used;
  if (s->used > s->st.size) s->used = s->st.size;
  s->free_ = s->st.size - s->used;
  s->carved = s->st.heap_top;
  s->free_carved = s->st.heap_free;
  s->frag = s->carved ? (double)s->free_carved / (double)s->carved : 0;
  s->load = s->in.index_capacity
                ? (double)s->in.index_used / (double)s->in.index_capacity
                : 0;
  s->pages_meta = s->in.heap_start / 4096;
  /* the page table moves while the broker allocates: a torn walk is
   * retried, and after a few tries reported as unavailable */
  for (int i = 0; i < 20 && !s->runs_ok; i++) {
    memset(s->slabs, 0, sizeof s->slabs);
    s->pages_slab = s->pages_extent = s->pages_free = s->pages_uncarved = 0;
    s->runs_ok = shm_view_runs(c->v, count_run, s) == 0;
  }
}

/* ------------------------------------------------------------- summary -- */

static void summary_json(ctx *c, state *s, jw *j) {
  char hex[32];
  j_obj(j, NULL);
  j_str(j, "name", s->in.name);
  j_str(j, "path", c->path);
  j_u64(j, "format", s->in.format);
  snprintf(hex, sizeof hex, "0x%08x", s->in.fingerprint);
  j_str(j, "fingerprint", hex);
  snprintf(hex, sizeof hex, "%016llx", (unsigned long long)s->in.store_id);
  j_str(j, "store_id", hex);
  j_u64(j, "created_ms", s->in.created_ms);
  j_u64(j, "size", s->st.size);
  j_u64(j, "backed", s->st.backed);
  j_u64(j, "used", s->used);
  j_u64(j, "free", s->free_);
  j_u64(j, "meta_bytes", s->st.meta_bytes);
  j_u64(j, "heap_top", s->in.heap_top);
  j_u64(j, "keys", s->st.keys);
  j_u64(j, "key_bytes", s->st.key_bytes);
  j_u64(j, "value_bytes", s->st.value_bytes);
  j_u64(j, "records", s->st.records);
  j_u64(j, "entries", s->st.entries);
  j_u64(j, "commit_seq", s->st.commit_seq);
  j_u64(j, "commits", s->st.commits);
  j_u64(j, "last_commit_ms", s->in.last_commit_ms);
  j_obj(j, "index");
  j_u64(j, "offset", s->in.index_off);
  j_u64(j, "capacity", s->in.index_capacity);
  j_u64(j, "used", s->in.index_used);
  j_u64(j, "live", s->in.index_live);
  j_dbl(j, "load", s->load);
  j_end(j, '}');
  j_obj(j, "allocator");
  j_arr(j, "classes");
  for (unsigned k = 0; k < s->st.nclasses && k < SHM_NCLASSES; k++) {
    if (!s->slabs[k] && !s->st.class_used[k] && !s->st.class_free[k]) continue;
    j_obj(j, NULL);
    j_u64(j, "class", k);
    j_u64(j, "size", s->st.class_size[k]);
    j_u64(j, "used", s->st.class_used[k]);
    j_u64(j, "free", s->st.class_free[k]);
    j_u64(j, "slabs", s->slabs[k]);
    j_end(j, '}');
  }
  j_end(j, ']');
  j_u64(j, "extent_pages", s->st.extents_used);
  j_u64(j, "free_pages", s->st.pages_free);
  j_dbl(j, "fragmentation", s->frag);
  j_end(j, '}');
  j_u64(j, "retired", s->st.retired);
  j_u64(j, "retired_bytes", s->st.retired_bytes);
  j_u64(j, "reclaimed", s->st.reclaimed);
  j_u64(j, "expired", s->st.expired);
  j_obj(j, "broker");
  j_u64(j, "pid", s->in.writer_pid);
  j_bool(j, "alive", s->alive);
  j_u64(j, "start_time", s->in.writer_start);
  j_u64(j, "generation", s->in.writer_gen);
  j_bool(j, "clean_shutdown", s->in.clean != 0);
  j_str(j, "state", s->bstate);
  j_u64(j, "recoveries", s->in.recoveries);
  j_end(j, '}');
  j_obj(j, "readers");
  j_u64(j, "slots", s->in.reader_slots);
  j_u64(j, "claimed", s->st.readers_claimed);
  j_u64(j, "busy", s->st.readers_busy);
  j_u64(j, "oldest_snapshot", s->st.oldest_snapshot);
  j_u64(j, "oldest_snapshot_age_ms", s->st.oldest_snapshot_age_ms);
  j_u64(j, "oldest_snapshot_lag",
        s->st.oldest_snapshot && s->st.commit_seq > s->st.oldest_snapshot
            ? s->st.commit_seq - s->st.oldest_snapshot
            : 0);
  j_end(j, '}');
  j_bool(j, "pinned", c->o->pin);
  j_end(j, '}');
}

static int cmd_summary(ctx *c) {
  state s;
  load_state(c, &s);
  if (c->o->json) {
    jw j;
    j_begin(&j, stdout);
    summary_json(c, &s, &j);
    return EXIT_OK;
  }
  char a[32], b[32], d[32], e[32], t[40];
  printf("store:       %s  (%s)\n", s.in.name, c->path);
  fmt_time(t, sizeof t, s.in.created_ms);
  printf("format:      %u, fingerprint 0x%08x, store id %016llx, created %s\n",
         s.in.format, s.in.fingerprint, (unsigned long long)s.in.store_id, t);
  if (!strcmp(s.bstate, "running"))
    printf("broker:      pid %llu, running (generation %llu, %llu recoveries)\n",
           (unsigned long long)s.in.writer_pid,
           (unsigned long long)s.in.writer_gen,
           (unsigned long long)s.in.recoveries);
  else if (!strcmp(s.bstate, "stopped"))
    printf("broker:      stopped (clean shutdown)\n");
  else
    printf("broker:      pid %llu, crashed (no clean shutdown: the next shoald "
           "runs recovery; nothing acknowledged is lost)\n",
           (unsigned long long)s.in.writer_pid);
  fmt_bytes(a, sizeof a, s.st.size);
  fmt_bytes(b, sizeof b, s.st.backed);
  fmt_bytes(d, sizeof d, s.used);
  fmt_bytes(e, sizeof e, s.free_);
  printf("size:        reserved %s, backed %s, used %s, free %s\n", a, b, d, e);
  fmt_bytes(a, sizeof a, s.st.key_bytes);
  fmt_bytes(b, sizeof b, s.st.value_bytes);
  printf("keys:        %llu (keys %s, values %s; %llu records, %llu entries)\n",
         (unsigned long long)s.st.keys, a, b,
         (unsigned long long)s.st.records, (unsigned long long)s.st.entries);
  fmt_age(a, sizeof a,
          s.in.last_commit_ms && now_ms() > s.in.last_commit_ms
              ? now_ms() - s.in.last_commit_ms
              : 0);
  printf("commit_seq:  %llu (%llu commits; last %s ago)\n",
         (unsigned long long)s.st.commit_seq,
         (unsigned long long)s.st.commits, a);
  fmt_bytes(a, sizeof a, s.in.index_bytes);
  printf("index:       capacity %llu, used %llu (load %.2f), live %llu, at "
         "offset %llu (%s)\n",
         (unsigned long long)s.in.index_capacity,
         (unsigned long long)s.in.index_used, s.load,
         (unsigned long long)s.in.index_live,
         (unsigned long long)s.in.index_off, a);
  fmt_bytes(a, sizeof a, s.carved);
  fmt_bytes(b, sizeof b, s.free_carved);
  printf("allocator:   carved %s, free in it %s (fragmentation %.1f%%), "
         "extents %llu pages, free runs %llu pages\n",
         a, b, 100 * s.frag, (unsigned long long)s.st.extents_used,
         (unsigned long long)s.st.pages_free);
  int header = 0;
  for (unsigned k = 0; k < s.st.nclasses && k < SHM_NCLASSES; k++) {
    if (!s.slabs[k] && !s.st.class_used[k] && !s.st.class_free[k]) continue;
    if (!header++)
      printf("  %5s %6s %7s %10s %10s %6s\n", "class", "size", "slabs",
             "used", "free", "fill");
    uint64_t cap = s.slabs[k] * (65536 / s.st.class_size[k]);
    printf("  %5u %6u %7llu %10llu %10llu %5.1f%%\n", k, s.st.class_size[k],
           (unsigned long long)s.slabs[k],
           (unsigned long long)s.st.class_used[k],
           (unsigned long long)s.st.class_free[k],
           cap ? 100.0 * (double)s.st.class_used[k] / (double)cap : 0.0);
  }
  if (!s.runs_ok)
    printf("  (page table not readable as runs: it changed under every try, "
           "or it is damaged; see --check)\n");
  fmt_bytes(a, sizeof a, s.st.retired_bytes);
  printf("reclaim:     retired %llu blocks (%s) waiting for readers, "
         "reclaimed %llu, expired %llu\n",
         (unsigned long long)s.st.retired, a,
         (unsigned long long)s.st.reclaimed, (unsigned long long)s.st.expired);
  printf("readers:     %u slots, %llu claimed, %llu in a section",
         s.in.reader_slots, (unsigned long long)s.st.readers_claimed,
         (unsigned long long)s.st.readers_busy);
  if (s.st.oldest_snapshot) {
    fmt_age(a, sizeof a, s.st.oldest_snapshot_age_ms);
    printf("; oldest snapshot %llu (%llu commits behind, held %s)",
           (unsigned long long)s.st.oldest_snapshot,
           (unsigned long long)(s.st.commit_seq > s.st.oldest_snapshot
                                    ? s.st.commit_seq - s.st.oldest_snapshot
                                    : 0),
           a);
  }
  printf("\n");
  return EXIT_OK;
}

/* ---------------------------------------------------------------- keys -- */

#define CHUNK 256

typedef struct krow {
  unsigned char *key;
  size_t klen;
  uint64_t version, expires_at;
  size_t len;
} krow;

typedef struct kscan {
  krow rows[CHUNK];
  size_t n, want;
  unsigned char *cursor; /* last key emitted: start after it */
  size_t clen;
  int has_cursor;
  int more; /* the chunk stopped at its size, not the range's end */
  uint64_t snap;
} kscan;

static void krows_free(kscan *k) {
  for (size_t i = 0; i < k->n; i++) free(k->rows[i].key);
  k->n = 0;
}

static int kscan_cb(void *arg, const void *key, size_t klen,
                    const shm_val *val) {
  kscan *k = arg;
  if (k->has_cursor) {
    /* byte order, shorter first on a common prefix (as shm_scan) */
    size_t m = klen < k->clen ? klen : k->clen;
    int d = m ? memcmp(key, k->cursor, m) : 0;
    if (!d) d = (klen > k->clen) - (klen < k->clen);
    if (d == 0) return 0;           /* the last key of the previous chunk */
    if (d < 0) return SHOAL_ECORRUPT; /* behind the cursor: a damaged list
                                         would make the listing loop */
  }
  if (k->n == k->want) {
    k->more = 1;
    return 1;
  }
  krow *r = &k->rows[k->n];
  r->key = malloc(klen ? klen : 1);
  if (!r->key) return -ENOMEM;
  memcpy(r->key, key, klen);
  r->klen = klen;
  r->version = val->version;
  r->expires_at = val->expires_at;
  r->len = val->len;
  k->n++;
  return 0;
}

typedef struct karg {
  kscan *k;
  const void *start;
  size_t slen;
  const void *end;
  size_t elen;
} karg;

static int keys_chunk(ctx *c, FILE *out, void *arg) {
  (void)out;
  karg *a = arg;
  krows_free(a->k);
  a->k->more = 0;
  a->k->snap = shm_view_snapshot(c->v);
  const void *st = a->k->has_cursor ? a->k->cursor : a->start;
  size_t sl = a->k->has_cursor ? a->k->clen : a->slen;
  int rc = shm_scan(c->v, st, sl, a->end, a->elen, kscan_cb, a->k);
  return rc == 1 ? 0 : rc; /* 1: stopped at the chunk size */
}

static int cmd_keys(ctx *c) {
  opts *o = c->o;
  const char *prefix = o->has_arg ? o->arg : "";
  size_t plen = strlen(prefix);
  unsigned char endbuf[SHM_KEY_MAX + 1];
  size_t elen = plen ? shm_prefix_end(prefix, plen, endbuf) : 0;
  kscan *k = calloc(1, sizeof *k);
  if (!k) return EXIT_CORRUPT;
  karg a = {k, prefix, plen, elen ? endbuf : NULL, elen};
  jw j;
  if (o->json) {
    j_begin(&j, stdout);
    j_obj(&j, NULL);
    j_arr(&j, "keys");
  }
  uint64_t count = 0, snap = 0;
  int truncated = 0, rc = 0;
  /* --pin: one section around all chunks, so one snapshot */
  if (o->pin && (rc = shm_read_begin(c->v)) != 0) goto fail;
  for (;;) {
    k->want = CHUNK;
    if (o->limit && o->limit - count < k->want) k->want = o->limit - count + 1;
    rc = in_section(c, keys_chunk, &a, stdout);
    if (rc == -EAGAIN) {
      fail_retry("keys");
      break;
    }
    if (rc) break;
    if (!snap) snap = k->snap;
    for (size_t i = 0; i < k->n; i++) {
      if (o->limit && count == o->limit) {
        truncated = 1;
        break;
      }
      krow *r = &k->rows[i];
      count++;
      if (o->json) {
        j_obj(&j, NULL);
        j_bytes(&j, "key", "key_encoding", r->key, r->klen);
        j_u64(&j, "version", r->version);
        j_u64(&j, "len", r->len);
        j_u64(&j, "expires_at", r->expires_at);
        j_end(&j, '}');
      } else {
        put_escaped(stdout, r->key, r->klen);
        putchar('\n');
      }
    }
    if (truncated || !k->more || !k->n) break;
    if (o->limit && count == o->limit) { /* more exist beyond the limit */
      truncated = 1;
      break;
    }
    krow *last = &k->rows[k->n - 1];
    free(k->cursor);
    k->cursor = malloc(last->klen ? last->klen : 1);
    if (!k->cursor) {
      rc = -ENOMEM;
      break;
    }
    memcpy(k->cursor, last->key, last->klen);
    k->clen = last->klen;
    k->has_cursor = 1;
  }
  if (o->pin) shm_read_end(c->v);
fail:
  krows_free(k);
  free(k->cursor);
  free(k);
  if (o->json) {
    j_end(&j, ']');
    j_u64(&j, "count", count);
    j_bool(&j, "truncated", truncated);
    j_u64(&j, "snapshot", snap);
    j_end(&j, '}');
  } else if (truncated) {
    fprintf(stderr, "%s: keys: stopped at --limit %llu (--limit 0 lists all)\n",
            prog, (unsigned long long)o->limit);
  }
  if (rc == SHOAL_ECORRUPT) {
    fprintf(stderr, "%s: keys: the skiplist is damaged (an offset or key is "
            "out of range); run --check for details\n", prog);
    return EXIT_CORRUPT;
  }
  if (rc) {
    if (rc != -EAGAIN)
      fprintf(stderr, "%s: keys: %s\n", prog, shoal_strerror(rc));
    return EXIT_CORRUPT;
  }
  return EXIT_OK;
}

/* ----------------------------------------------------------------- get -- */

#define HIST_MAX 64

typedef struct gres {
  int rc;
  unsigned char *val;
  size_t len;
  uint64_t version, expires_at, snap;
  shm_version hist[HIST_MAX];
  size_t nhist;
} gres;

static int get_fn(ctx *c, FILE *out, void *arg) {
  (void)out;
  gres *g = arg;
  free(g->val);
  g->val = NULL;
  g->nhist = 0;
  g->snap = shm_view_snapshot(c->v);
  const char *key = c->o->arg;
  shm_val v;
  g->rc = shm_get(c->v, key, strlen(key), &v);
  if (g->rc == 0) {
    g->val = malloc(v.len ? v.len : 1);
    if (!g->val) return -ENOMEM;
    memcpy(g->val, v.data, v.len);
    g->len = v.len;
    g->version = v.version;
    g->expires_at = v.expires_at;
  }
  if (g->rc == 0 || g->rc == SHOAL_ENOTFOUND) {
    size_t n = 0;
    int hr = shm_history(c->v, key, strlen(key), g->hist, HIST_MAX, &n);
    if (hr == 0) g->nhist = n < HIST_MAX ? n : HIST_MAX;
    /* history: what is retained besides the value get returned */
    if (hr == 0 && g->rc == 0 && g->nhist && g->hist[0].version == g->version) {
      memmove(g->hist, g->hist + 1, (g->nhist - 1) * sizeof g->hist[0]);
      g->nhist--;
    }
    /* data pointers die with the section: keep only the figures */
    for (size_t i = 0; i < g->nhist; i++) g->hist[i].data = NULL;
    if (hr == SHOAL_ECORRUPT) g->rc = hr;
  }
  return 0;
}

static int cmd_get(ctx *c) {
  const char *key = c->o->arg;
  gres *g = calloc(1, sizeof *g);
  if (!g) return EXIT_CORRUPT;
  int rc = in_section(c, get_fn, g, stdout);
  if (rc == -EAGAIN) {
    fail_retry("get");
    free(g);
    return EXIT_CORRUPT;
  }
  int ex = EXIT_OK;
  uint64_t now = now_ms();
  if (rc || (g->rc && g->rc != SHOAL_ENOTFOUND)) {
    int e = rc ? rc : g->rc;
    fprintf(stderr, "%s: get: %s%s\n", prog, shoal_strerror(e),
            e == SHOAL_ECORRUPT ? " (an offset or length in the key's index "
                                  "slot, entry or records is out of range; "
                                  "run --check for details)"
                                : "");
    ex = EXIT_CORRUPT;
  } else if (c->o->json) {
    jw j;
    j_begin(&j, stdout);
    j_obj(&j, NULL);
    j_bytes(&j, "key", "key_encoding", key, strlen(key));
    j_bool(&j, "found", g->rc == 0);
    if (g->rc == 0) {
      j_u64(&j, "version", g->version);
      j_u64(&j, "len", g->len);
      j_u64(&j, "expires_at", g->expires_at);
      if (g->expires_at)
        j_i64(&j, "ttl_ms", (int64_t)g->expires_at - (int64_t)now);
      else
        j_null(&j, "ttl_ms");
      j_bytes(&j, "value", "encoding", g->val, g->len);
      j_bool(&j, "printable", printable(g->val, g->len));
    }
    j_arr(&j, "history");
    for (size_t i = 0; i < g->nhist; i++) {
      j_obj(&j, NULL);
      j_u64(&j, "version", g->hist[i].version);
      j_u64(&j, "len", g->hist[i].len);
      j_bool(&j, "tombstone", g->hist[i].tombstone);
      j_u64(&j, "expires_at", g->hist[i].expires_at);
      j_end(&j, '}');
    }
    j_end(&j, ']');
    j_u64(&j, "snapshot", g->snap);
    j_end(&j, '}');
    if (g->rc) ex = EXIT_NOTFOUND;
  } else if (g->rc) {
    fprintf(stderr, "%s: get: ", prog);
    put_escaped(stderr, key, strlen(key));
    fprintf(stderr, ": not found (snapshot %llu)%s\n",
            (unsigned long long)g->snap,
            g->nhist ? "; it was deleted or expired: see its versions below"
                     : "");
    for (size_t i = 0; i < g->nhist; i++)
      fprintf(stderr, "  version %llu: %s, %u bytes\n",
              (unsigned long long)g->hist[i].version,
              g->hist[i].tombstone ? "deleted" : "value", g->hist[i].len);
    ex = EXIT_NOTFOUND;
  } else {
    char t[32];
    printf("key:      ");
    put_escaped(stdout, key, strlen(key));
    printf("\nversion:  %llu (snapshot %llu)\n", (unsigned long long)g->version,
           (unsigned long long)g->snap);
    fmt_bytes(t, sizeof t, g->len);
    printf("length:   %s\n", t);
    if (g->expires_at) {
      fmt_age(t, sizeof t, g->expires_at > now ? g->expires_at - now : 0);
      printf("ttl:      %s left\n", t);
    } else {
      printf("ttl:      none\n");
    }
    if (g->nhist) {
      printf("older:    %zu version%s retained (newest first):", g->nhist,
             g->nhist == 1 ? "" : "s");
      for (size_t i = 0; i < g->nhist; i++)
        printf(" %llu%s", (unsigned long long)g->hist[i].version,
               g->hist[i].tombstone ? " (deleted)" : "");
      printf("\n");
    } else {
      printf("older:    none retained\n");
    }
    if (printable(g->val, g->len)) {
      printf("value:\n");
      fwrite(g->val, 1, g->len, stdout);
      if (!g->len || g->val[g->len - 1] != '\n') putchar('\n');
    } else {
      printf("value (hex):\n");
      hexdump(stdout, g->val, g->len);
    }
  }
  free(g->val);
  free(g);
  return ex;
}

/* ------------------------------------------------------------- readers -- */

static int pid_alive(uint32_t pid, uint64_t start) {
  return pid && shm_pid_start_time((pid_t)pid) == start;
}

static int cmd_readers(ctx *c) {
  shm_info in;
  shm_view_info(c->v, &in);
  size_t cap = in.readers_hwm ? in.readers_hwm : 1;
  shm_reader_info *r = calloc(cap, sizeof *r);
  if (!r) return EXIT_CORRUPT;
  size_t n = shm_view_readers(c->v, r, cap, c->o->all);
  uint64_t now = now_ms(), claimed = 0, busy = 0;
  for (size_t i = 0; i < n; i++) {
    claimed += r[i].pid != 0;
    busy += r[i].snap != 0;
  }
  if (c->o->json) {
    jw j;
    j_begin(&j, stdout);
    j_obj(&j, NULL);
    j_u64(&j, "slots", in.reader_slots);
    j_u64(&j, "claimed", claimed);
    j_u64(&j, "busy", busy);
    j_u64(&j, "commit_seq", in.commit_seq);
    j_arr(&j, "readers");
    for (size_t i = 0; i < n; i++) {
      j_obj(&j, NULL);
      j_u64(&j, "slot", r[i].slot);
      j_u64(&j, "pid", r[i].pid);
      j_bool(&j, "alive", pid_alive(r[i].pid, r[i].pid_start));
      j_bool(&j, "leased", r[i].leased);
      j_bool(&j, "busy", r[i].snap != 0);
      j_u64(&j, "snapshot", r[i].snap);
      j_u64(&j, "lag",
            r[i].snap && in.commit_seq > r[i].snap ? in.commit_seq - r[i].snap
                                                   : 0);
      j_u64(&j, "age_ms",
            r[i].snap && now > r[i].begin_ms ? now - r[i].begin_ms : 0);
      j_u64(&j, "nesting", r[i].nest);
      j_end(&j, '}');
    }
    j_end(&j, ']');
    j_end(&j, '}');
  } else {
    printf("%u slots, %llu claimed, %llu in a section; commit_seq %llu\n",
           in.reader_slots, (unsigned long long)claimed,
           (unsigned long long)busy, (unsigned long long)in.commit_seq);
    if (n)
      printf("%6s %8s %-6s %-6s %12s %8s %10s %4s\n", "slot", "pid", "alive",
             "lease", "snapshot", "lag", "age", "nest");
    for (size_t i = 0; i < n; i++) {
      char age[32] = "-";
      if (r[i].snap)
        fmt_age(age, sizeof age, now > r[i].begin_ms ? now - r[i].begin_ms : 0);
      char snap[24] = "-", lag[24] = "-";
      if (r[i].snap) {
        snprintf(snap, sizeof snap, "%llu", (unsigned long long)r[i].snap);
        snprintf(lag, sizeof lag, "%llu",
                 (unsigned long long)(in.commit_seq > r[i].snap
                                          ? in.commit_seq - r[i].snap
                                          : 0));
      }
      printf("%6u %8u %-6s %-6s %12s %8s %10s %4u\n", r[i].slot, r[i].pid,
             !r[i].pid ? "-" : pid_alive(r[i].pid, r[i].pid_start) ? "yes" : "NO",
             r[i].leased ? "broker" : "self", snap, lag, age, r[i].nest);
    }
  }
  free(r);
  return EXIT_OK;
}

/* -------------------------------------------------------------- layout -- */

static const char *run_kind(int k) {
  switch (k) {
  case SHM_RUN_SLAB: return "slab";
  case SHM_RUN_EXTENT: return "extent";
  case SHM_RUN_FREE: return "free";
  default: return "uncarved";
  }
}

typedef struct rlist {
  shm_run_info *r;
  size_t n, cap;
} rlist;

static int collect_run(void *arg, const shm_run_info *r) {
  rlist *l = arg;
  if (l->n == l->cap) {
    size_t nc = l->cap ? l->cap * 2 : 256;
    shm_run_info *p = realloc(l->r, nc * sizeof *p);
    if (!p) return -ENOMEM;
    l->r = p;
    l->cap = nc;
  }
  l->r[l->n++] = *r;
  return 0;
}

static int cmd_layout(ctx *c) {
  state s;
  load_state(c, &s);
  shm_info *in = &s.in;
  rlist l = {0};
  int rrc = -1;
  if (c->o->runs)
    for (int i = 0; i < 20 && rrc; i++) {
      l.n = 0;
      rrc = shm_view_runs(c->v, collect_run, &l);
    }
  struct {
    const char *name;
    uint64_t off, bytes;
  } reg[] = {
      {"header", 0, 4096},
      {"doorbells", 4096, (uint64_t)in->doorbells * 4},
      {"page table", 8192, in->npages * 4},
      {"heap", in->heap_start, in->size - in->heap_start},
  };
  if (c->o->json) {
    jw j;
    j_begin(&j, stdout);
    j_obj(&j, NULL);
    j_u64(&j, "size", in->size);
    j_u64(&j, "backed_end", in->backed_end);
    j_u64(&j, "heap_start", in->heap_start);
    j_u64(&j, "heap_top", in->heap_top);
    j_arr(&j, "regions");
    for (size_t i = 0; i < 4; i++) {
      j_obj(&j, NULL);
      j_str(&j, "name", reg[i].name);
      j_u64(&j, "offset", reg[i].off);
      j_u64(&j, "bytes", reg[i].bytes);
      j_end(&j, '}');
    }
    j_end(&j, ']');
    j_obj(&j, "index");
    j_u64(&j, "offset", in->index_off);
    j_u64(&j, "bytes", in->index_bytes);
    j_u64(&j, "capacity", in->index_capacity);
    j_end(&j, '}');
    j_obj(&j, "pages");
    j_u64(&j, "meta", s.pages_meta);
    j_u64(&j, "slab", s.pages_slab);
    j_u64(&j, "extent", s.pages_extent);
    j_u64(&j, "free", s.pages_free);
    j_u64(&j, "uncarved", s.pages_uncarved);
    j_end(&j, '}');
    if (c->o->runs) {
      j_arr(&j, "runs");
      for (size_t i = 0; i < l.n; i++) {
        j_obj(&j, NULL);
        j_u64(&j, "offset", l.r[i].offset);
        j_u64(&j, "pages", l.r[i].pages);
        j_str(&j, "kind", run_kind(l.r[i].kind));
        j_i64(&j, "class", l.r[i].cls);
        j_end(&j, '}');
      }
      j_end(&j, ']');
    }
    j_end(&j, '}');
  } else {
    char a[32];
    fmt_bytes(a, sizeof a, in->size);
    printf("data object %s: %s (%llu pages)\n", c->path, a,
           (unsigned long long)in->npages);
    printf("  %-12s %14s %14s %12s\n", "region", "offset", "end", "size");
    for (size_t i = 0; i < 4; i++) {
      fmt_bytes(a, sizeof a, reg[i].bytes);
      printf("  %-12s %14llu %14llu %12s\n", reg[i].name,
             (unsigned long long)reg[i].off,
             (unsigned long long)(reg[i].off + reg[i].bytes), a);
    }
    fmt_bytes(a, sizeof a, in->backed_end);
    printf("  backed (fallocate) up to %llu (%s); heap carved up to %llu\n",
           (unsigned long long)in->backed_end, a,
           (unsigned long long)in->heap_top);
    fmt_bytes(a, sizeof a, in->index_bytes);
    printf("  hash index at %llu: %llu slots, %s\n",
           (unsigned long long)in->index_off,
           (unsigned long long)in->index_capacity, a);
    if (s.runs_ok)
      printf("  pages: %llu meta, %llu in slabs, %llu in extents, %llu free, "
             "%llu never carved\n",
             (unsigned long long)s.pages_meta, (unsigned long long)s.pages_slab,
             (unsigned long long)s.pages_extent,
             (unsigned long long)s.pages_free,
             (unsigned long long)s.pages_uncarved);
    else
      printf("  pages: the page table could not be walked (it changed under "
             "every try, or it is damaged; see --check)\n");
    if (c->o->runs) {
      printf("  %14s %8s %-9s %s\n", "offset", "pages", "kind", "class");
      for (size_t i = 0; i < l.n; i++) {
        printf("  %14llu %8llu %-9s", (unsigned long long)l.r[i].offset,
               (unsigned long long)l.r[i].pages, run_kind(l.r[i].kind));
        if (l.r[i].cls >= 0)
          printf(" %d (%u B)", l.r[i].cls, s.st.class_size[l.r[i].cls]);
        putchar('\n');
      }
    }
  }
  free(l.r);
  if (c->o->runs && rrc) {
    fprintf(stderr, "%s: layout: the page table does not parse as runs "
            "(%s); run --check for details\n", prog, shoal_strerror(rrc));
    return EXIT_CORRUPT;
  }
  return EXIT_OK;
}

/* ------------------------------------------------------- stats and top -- */

static void prom(FILE *f, const char *store, int meta, const char *name,
                 const char *type, const char *help, double v) {
  if (meta) {
    fprintf(f, "# HELP %s %s\n", name, help);
    fprintf(f, "# TYPE %s %s\n", name, type);
    fprintf(f, "%s{store=\"%s\"} %.17g\n", name, store, v);
  } else {
    fprintf(f, "%s %.17g\n", name, v);
  }
}

static int cmd_stats(ctx *c) {
  if (c->o->json) return cmd_summary(c); /* the same object */
  state s;
  load_state(c, &s);
  int m = c->o->prometheus;
  const char *n = s.in.name;
  FILE *f = stdout;
  prom(f, n, m, "shoal_up", "gauge",
       "1 if the store's broker (the writer recorded in the segment) is alive",
       s.alive);
  prom(f, n, m, "shoal_keys", "gauge", "Live keys", (double)s.st.keys);
  prom(f, n, m, "shoal_commit_seq", "gauge", "Last published commit",
       (double)s.st.commit_seq);
  prom(f, n, m, "shoal_commits_total", "counter", "Commits published",
       (double)s.st.commits);
  prom(f, n, m, "shoal_size_bytes", "gauge",
       "Bytes reserved for the data object", (double)s.st.size);
  prom(f, n, m, "shoal_used_bytes", "gauge",
       "Bytes in use: metadata and allocated blocks", (double)s.used);
  prom(f, n, m, "shoal_free_bytes", "gauge", "Bytes still allocatable",
       (double)s.free_);
  prom(f, n, m, "shoal_backed_bytes", "gauge",
       "Bytes backed by memory (fallocate) so far", (double)s.st.backed);
  prom(f, n, m, "shoal_index_capacity", "gauge", "Hash index slots",
       (double)s.in.index_capacity);
  prom(f, n, m, "shoal_index_used", "gauge",
       "Hash index slots in use, deleted markers included",
       (double)s.in.index_used);
  prom(f, n, m, "shoal_records", "gauge",
       "Value records, current and retained", (double)s.st.records);
  prom(f, n, m, "shoal_retired_bytes", "gauge",
       "Bytes waiting for readers to leave older snapshots",
       (double)s.st.retired_bytes);
  prom(f, n, m, "shoal_reclaimed_total", "counter",
       "Blocks freed after their grace period", (double)s.st.reclaimed);
  prom(f, n, m, "shoal_expired_total", "counter",
       "Keys deleted because their TTL passed", (double)s.st.expired);
  prom(f, n, m, "shoal_readers_claimed", "gauge", "Reader slots claimed",
       (double)s.st.readers_claimed);
  prom(f, n, m, "shoal_readers_busy", "gauge",
       "Readers inside a read section", (double)s.st.readers_busy);
  prom(f, n, m, "shoal_oldest_snapshot_age_seconds", "gauge",
       "Age of the oldest snapshot a reader holds (0: none)",
       (double)s.st.oldest_snapshot_age_ms / 1000.0);
  return EXIT_OK;
}

static volatile sig_atomic_t stop;
static void on_signal(int sig) {
  (void)sig;
  stop = 1;
}

static int cmd_top(ctx *c) {
  opts *o = c->o;
  int tty = isatty(STDOUT_FILENO) && !o->json;
  struct sigaction sa = {0};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  shm_stats prev;
  shm_view_stats(c->v, &prev);
  uint64_t t_prev = now_ms();
  for (uint64_t frame = 0; !stop && (!o->count || frame < o->count); frame++) {
    if (frame) {
      struct timespec ts = {(time_t)o->interval,
                            (long)((o->interval - (double)(time_t)o->interval) * 1e9)};
      while (nanosleep(&ts, &ts) != 0 && errno == EINTR && !stop) {
      }
      if (stop) break;
    }
    state s;
    load_state(c, &s);
    uint64_t t = now_ms();
    double dt = (double)(t - t_prev) / 1000.0;
    double cps = frame && dt > 0
                     ? (double)(s.st.commits - prev.commits) / dt
                     : 0;
    prev = s.st;
    t_prev = t;
    if (o->json) {
      jw j;
      j_begin(&j, stdout);
      j_obj(&j, NULL);
      j_u64(&j, "time_ms", t);
      j_u64(&j, "commit_seq", s.st.commit_seq);
      j_dbl(&j, "commits_per_s", cps);
      j_u64(&j, "keys", s.st.keys);
      j_u64(&j, "used", s.used);
      j_u64(&j, "readers_busy", s.st.readers_busy);
      j_u64(&j, "oldest_snapshot_age_ms", s.st.oldest_snapshot_age_ms);
      j_bool(&j, "broker_alive", s.alive);
      j_end(&j, '}');
      fflush(stdout);
      continue;
    }
    char used[32], age[32] = "-", tm[40];
    fmt_bytes(used, sizeof used, s.used);
    if (s.st.oldest_snapshot)
      fmt_age(age, sizeof age, s.st.oldest_snapshot_age_ms);
    if (tty) {
      fmt_time(tm, sizeof tm, t);
      printf("\033[H\033[2J");
      printf("shoal-inspect top: store %s (%s), every %.1f s; ^C to "
             "quit\n%s   broker pid %llu %s\n\n",
             s.in.name, c->path, o->interval, tm,
             (unsigned long long)s.in.writer_pid, s.bstate);
    }
    if (tty || frame == 0)
      printf("%12s %10s %12s %12s %8s %8s %10s %-8s\n", "commit_seq",
             "commits/s", "keys", "used", "claimed", "busy", "oldest",
             "broker");
    printf("%12llu %10.0f %12llu %12s %8llu %8llu %10s %-8s\n",
           (unsigned long long)s.st.commit_seq, cps,
           (unsigned long long)s.st.keys, used,
           (unsigned long long)s.st.readers_claimed,
           (unsigned long long)s.st.readers_busy, age, s.bstate);
    fflush(stdout);
  }
  return EXIT_OK;
}

/* --------------------------------------------------------------- check -- */

typedef struct probs {
  char **p;
  size_t n, cap;
} probs;

static void probs_clear(probs *p) {
  for (size_t i = 0; i < p->n; i++) free(p->p[i]);
  p->n = 0;
}

static void on_problem(void *arg, const char *msg) {
  probs *p = arg;
  if (p->n == p->cap) {
    size_t nc = p->cap ? p->cap * 2 : 16;
    char **q = realloc(p->p, nc * sizeof *q);
    if (!q) return;
    p->p = q;
    p->cap = nc;
  }
  char *s = strdup(msg);
  if (s) p->p[p->n++] = s;
}

typedef struct carg {
  unsigned flags;
  probs pr;
} carg;

static int check_fn(ctx *c, FILE *out, void *arg) {
  (void)out;
  carg *a = arg;
  probs_clear(&a->pr);
  shm_check_ex(c->v, a->flags, on_problem, &a->pr);
  return 0;
}

static int cmd_check(ctx *c) {
  int alive = shm_view_writer_alive(c->v);
  shm_info in;
  shm_view_info(c->v, &in);
  const char *mode = alive && !in.clean ? "live" : in.clean ? "quiescent" : "unclean";
  carg a = {0};
  a.flags = !strcmp(mode, "live")        ? 0
            : !strcmp(mode, "quiescent") ? SHM_CHECK_QUIESCENT
                                         : SHM_CHECK_QUIESCENT | SHM_CHECK_TOLERANT;
  int rc = in_section(c, check_fn, &a, stdout);
  if (rc == -EAGAIN) {
    fail_retry("check");
    probs_clear(&a.pr);
    free(a.pr.p);
    return EXIT_CORRUPT;
  }
  if (c->o->json) {
    jw j;
    j_begin(&j, stdout);
    j_obj(&j, NULL);
    j_bool(&j, "consistent", a.pr.n == 0);
    j_str(&j, "mode", mode);
    j_arr(&j, "problems");
    for (size_t i = 0; i < a.pr.n; i++) j_str(&j, NULL, a.pr.p[i]);
    j_end(&j, ']');
    j_end(&j, '}');
  } else {
    for (size_t i = 0; i < a.pr.n; i++) printf("problem: %s\n", a.pr.p[i]);
    if (a.pr.n)
      printf("%s: %zu problem%s found (%s check)\n", c->path, a.pr.n,
             a.pr.n == 1 ? "" : "s", mode);
    else
      printf("%s: consistent (%s check%s)\n", c->path, mode,
             !strcmp(mode, "unclean")
                 ? "; the broker died without a clean shutdown and the next "
                   "shoald will repair what it left half done"
                 : "");
  }
  int ex = a.pr.n ? EXIT_CORRUPT : EXIT_OK;
  probs_clear(&a.pr);
  free(a.pr.p);
  return ex;
}

/* ---------------------------------------------------------------- main -- */

static int opt_is(const char *arg, const char *name, const char **val,
                  int argc, char **argv, int *i) {
  size_t n = strlen(name);
  if (strncmp(arg, name, n) != 0) return 0;
  if (arg[n] == '=') {
    *val = arg + n + 1;
    return 1;
  }
  if (arg[n]) return 0;
  if (*i + 1 >= argc) die_usage("%s needs a value", name);
  *val = argv[++*i];
  return 1;
}

static uint64_t parse_u64(const char *opt, const char *s) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || !*s || *end || *s == '-')
    die_usage("%s wants a whole number, got '%s'", opt, s);
  return v;
}

int main(int argc, char **argv) {
  opts o = {.limit = 1000, .interval = 1.0};
  int dashdash = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *val;
    if (!dashdash && a[0] == '-' && a[1]) {
      if (!strcmp(a, "--")) dashdash = 1;
      else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
        help(stdout);
        return 0;
      } else if (!strcmp(a, "--version")) {
        printf("shoal-inspect %s (segment format %u)\n", SHOAL_VERSION_STRING,
               shm_format_version());
        return 0;
      } else if (opt_is(a, "--name", &val, argc, argv, &i)) o.name = val;
      else if (opt_is(a, "--shm-dir", &val, argc, argv, &i)) o.dir = val;
      else if (!strcmp(a, "--json")) o.json = 1;
      else if (!strcmp(a, "--pin")) o.pin = 1;
      else if (!strcmp(a, "--check")) o.check = 1;
      else if (!strcmp(a, "--all")) o.all = 1;
      else if (!strcmp(a, "--runs")) o.runs = 1;
      else if (!strcmp(a, "--prometheus")) o.prometheus = 1;
      else if (opt_is(a, "--limit", &val, argc, argv, &i))
        o.limit = parse_u64("--limit", val);
      else if (opt_is(a, "--count", &val, argc, argv, &i))
        o.count = parse_u64("--count", val);
      else if (opt_is(a, "--interval", &val, argc, argv, &i)) {
        char *end;
        o.interval = strtod(val, &end);
        if (!*val || *end || !(o.interval >= 0.05 && o.interval <= 3600))
          die_usage("--interval wants seconds between 0.05 and 3600, got '%s'",
                    val);
      } else
        die_usage("unknown option '%s'", a);
      continue;
    }
    if (!o.cmd) o.cmd = a;
    else if (!o.has_arg) {
      o.arg = a;
      o.has_arg = 1;
    } else
      die_usage("unexpected argument '%s'", a);
  }
  if (o.check) {
    if (o.cmd && strcmp(o.cmd, "check"))
      die_usage("--check and the command '%s' exclude each other", o.cmd);
    o.cmd = "check";
  }
  if (!o.cmd) o.cmd = "summary";
  static const char *const cmds[] = {"summary", "keys", "get", "readers",
                                     "layout", "top", "stats", "check"};
  int known = 0;
  for (size_t k = 0; k < sizeof cmds / sizeof cmds[0]; k++)
    known |= !strcmp(o.cmd, cmds[k]);
  if (!known)
    die_usage("unknown command '%s' (summary, keys, get, readers, layout, top, "
              "stats, check)", o.cmd);
  if (!strcmp(o.cmd, "get") && !o.has_arg) die_usage("get needs a KEY");
  if (o.has_arg && strcmp(o.cmd, "get") && strcmp(o.cmd, "keys"))
    die_usage("%s takes no argument (got '%s')", o.cmd, o.arg);
  if (o.has_arg && strlen(o.arg) > SHM_KEY_MAX)
    die_usage("a key is at most %u bytes", SHM_KEY_MAX);

  ctx c = {.o = &o};
  int prc = shm_object_path(c.path, sizeof c.path, o.name, o.dir, "data");
  if (prc)
    die_usage("bad store name '%s': 1 to %u of [A-Za-z0-9._-], not starting "
              "with '.'", o.name ? o.name : "default", SHM_NAME_MAX);
  int rc = shm_view_open(&c.v, o.name, o.dir, o.pin ? 0 : SHM_VIEW_UNPINNED);
  if (rc) {
    const char *why = shm_view_lasterr();
    const char *nm = o.name ? o.name : "default";
    if (rc == -ENOENT) {
      fprintf(stderr, "%s: no store \"%s\": %s\n  (is shoald running with "
              "--name %s? Pass the broker's --shm-dir, or set "
              "SHOAL_SHM_DIR; `ls %.*s/shoal.*` lists the stores there)\n",
              prog, nm, why, nm,
              (int)(strrchr(c.path, '/') - c.path), c.path);
      return EXIT_NOSTORE;
    }
    if (rc == -EACCES || rc == -EPERM) {
      fprintf(stderr, "%s: %s\n  (run as the broker's user or a member of "
              "its group: the data object is mode 0640, the readers object "
              "0660)\n", prog, why);
      return EXIT_NOSTORE;
    }
    if (rc == SHOAL_ENOREADERS) {
      fprintf(stderr, "%s: --pin: every reader slot is taken (%s); run "
              "without --pin\n", prog, shoal_strerror(rc));
      return EXIT_NOSTORE;
    }
    if (rc == SHOAL_EVERSION) {
      fprintf(stderr, "%s: %s\n  (use the shoal-inspect of the shoal release "
              "that created this store; this one reads format %u)\n",
              prog, why, shm_format_version());
      return EXIT_CORRUPT;
    }
    if (rc == SHOAL_ECORRUPT) {
      fprintf(stderr, "%s: %s\n  (the store is damaged or not a shoal store: "
              "shoald will refuse it too. Keep a copy for a bug report, then "
              "stop shoald and remove %.*s/shoal.%s.* to start an empty "
              "store)\n", prog, why,
              (int)(strrchr(c.path, '/') - c.path), c.path, nm);
      return EXIT_CORRUPT;
    }
    fprintf(stderr, "%s: %s (%s)\n", prog, why[0] ? why : c.path,
            shoal_strerror(rc));
    return EXIT_NOSTORE;
  }
  int ex;
  if (!strcmp(o.cmd, "summary")) ex = cmd_summary(&c);
  else if (!strcmp(o.cmd, "keys")) ex = cmd_keys(&c);
  else if (!strcmp(o.cmd, "get")) ex = cmd_get(&c);
  else if (!strcmp(o.cmd, "readers")) ex = cmd_readers(&c);
  else if (!strcmp(o.cmd, "layout")) ex = cmd_layout(&c);
  else if (!strcmp(o.cmd, "top")) ex = cmd_top(&c);
  else if (!strcmp(o.cmd, "stats")) ex = cmd_stats(&c);
  else ex = cmd_check(&c);
  shm_view_close(c.v);
  if (fflush(stdout) != 0 && ex == EXIT_OK) ex = EXIT_NOSTORE;
  return ex;
}
