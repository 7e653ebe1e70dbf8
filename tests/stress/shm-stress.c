/*
 * shm-stress - multi-process torture test of the segment layer (shm/).
 *
 * Scenarios (--scenario, default all):
 *   concurrent   one writer process and --readers reader processes for
 *                --seconds (env SHOAL_STRESS_SECONDS, default 10); every
 *                ~0.8 s a victim reader is SIGKILLed inside a section. After
 *                the writer's clean close the parent reattaches, sweeps the
 *                dead readers' slots, reclaims, compares the whole store with
 *                the writer's model and runs shm_check(quiescent).
 *   reader-kill  the parent is the writer, idle but for what it does here:
 *                a witness and a victim pin a snapshot; the parent overwrites
 *                the keys they read and reclaims; the witness must still
 *                read intact bytes; the victim is SIGKILLed; the slot must
 *                stay busy until shm_sweep_readers clears it, and then
 *                shm_reclaim must bring retired / heap_used back to the
 *                baseline. --reader-kills rounds (default 4).
 *   writer-kill  readers keep reading while a writer child is SIGKILLed
 *                after a random 5..200 ms, --writer-kills times (default
 *                20). After each kill the parent recovers the store
 *                (shm_store_open), checks that every acknowledged write is
 *                there (the in-flight op, if any, all or nothing), that
 *                commit_seq did not go back, that the dead writer's reader
 *                slot is gone, and that shm_check(quiescent) finds nothing.
 * Checks made by the writer and the readers: see writer.c and reader.c.
 *
 * --yield makes every process call sched_yield() at random points (and sets
 * SHOAL_DEBUG_YIELD for the store's own yield points).
 * --no-live-check stops the readers' shm_check(quiescent 0) inside sections
 * (every 1.5 s), to tell its findings from the other checks'.
 * --seed N reproduces the key space, the values and every random choice
 * (the interleaving of processes is up to the kernel).
 * Exits 0 if no problem was found, 1 otherwise, 2 on a setup failure.
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "stress.h"

static pid_t g_parent;
static pid_t g_kids[256];
static unsigned g_nkids;
static uint64_t g_spawns;
static char g_name_main[SHM_NAME_MAX + 1], g_name_kill[SHM_NAME_MAX + 1];

#define SLOT_PARENT 0
#define SLOT_WRITER 1
#define SLOT_VICTIM 2
#define SLOT_READER0 3

/* ------------------------------------------------------------ children -- */

static void kid_track(pid_t p) {
  if (g_nkids < sizeof g_kids / sizeof g_kids[0]) g_kids[g_nkids++] = p;
}

static void kid_untrack(pid_t p) {
  for (unsigned i = 0; i < g_nkids; i++)
    if (g_kids[i] == p) {
      g_kids[i] = g_kids[--g_nkids];
      return;
    }
}

static void rm_dir_contents(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  char path[512];
  while ((e = readdir(d)) != NULL) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    unlink(path);
  }
  closedir(d);
}

/* A run killed with SIGKILL cannot clean up: the next run removes the
 * directories "shoal-stress.PID.*" of ours whose PID is gone. */
static void remove_stale_dirs(const char *base) {
  DIR *d = opendir(base);
  if (!d) return;
  struct dirent *e;
  char path[512];
  while ((e = readdir(d)) != NULL) {
    int pid = 0, n = 0;
    if (sscanf(e->d_name, "shoal-stress.%d.%n", &pid, &n) != 1 || n == 0 ||
        pid <= 0)
      continue;
    if (kill(pid, 0) == 0 || errno != ESRCH) continue;
    snprintf(path, sizeof path, "%s/%s", base, e->d_name);
    struct stat st;
    if (lstat(path, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != getuid())
      continue;
    rm_dir_contents(path);
    rmdir(path);
  }
  closedir(d);
}

/* Kill every child, remove the stores and the directory. Safe to call more
 * than once; only the parent does anything. */
static void st_cleanup(void) {
  if (getpid() != g_parent) return;
  for (unsigned i = 0; i < g_nkids; i++)
    kill(g_kids[i], SIGKILL);
  for (unsigned i = 0; i < g_nkids; i++)
    waitpid(g_kids[i], NULL, 0);
  g_nkids = 0;
  if (g_opt.dir[0]) {
    shm_store_unlink(g_name_main, g_opt.dir);
    shm_store_unlink(g_name_kill, g_opt.dir);
    rm_dir_contents(g_opt.dir);
    rmdir(g_opt.dir);
    g_opt.dir[0] = 0;
  }
}

static void on_fatal_signal(int sig) {
  if (sig == SIGALRM) {
    static const char m[] = "shm-stress: PROBLEM: watchdog expired: something "
                            "hangs (a writer, a reader or a recovery)\n";
    if (write(2, m, sizeof m - 1) < 0) {
    }
  }
  st_cleanup();
  signal(sig, SIG_DFL);
  raise(sig);
}

typedef int (*kid_fn)(void *arg);

static pid_t spawn(const char *role, unsigned slot, kid_fn fn, void *arg) {
  fflush(stdout);
  fflush(stderr);
  uint64_t spawn_no = ++g_spawns;
  pid_t pid = fork();
  if (pid < 0) {
    st_problem("fork: %s", strerror(errno));
    return -1;
  }
  if (pid == 0) {
    static char rolebuf[64];
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != g_parent) _exit(3);
    alarm(0);
    signal(SIGALRM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    g_nkids = 0;
    snprintf(rolebuf, sizeof rolebuf, "%s", role);
    g_role = rolebuf;
    g_cnt = &g_ctl->cnt[slot];
    uint64_t s = g_opt.seed ^ (spawn_no * 0x9E3779B97F4A7C15ull);
    g_rng = st_splitmix(&s);
    int code = fn(arg);
    exit(code);
  }
  kid_track(pid);
  return pid;
}

static const char *status_str(int status) {
  static char buf[64];
  if (WIFSIGNALED(status))
    snprintf(buf, sizeof buf, "killed by signal %d (%s)", WTERMSIG(status),
             strsignal(WTERMSIG(status)));
  else if (WIFEXITED(status))
    snprintf(buf, sizeof buf, "exit code %d", WEXITSTATUS(status));
  else
    snprintf(buf, sizeof buf, "status 0x%x", status);
  return buf;
}

/* Wait for @pid up to @ms; 0 and *status, or -1 on timeout. */
static int wait_for(pid_t pid, unsigned ms, int *status) {
  uint64_t until = st_mono_ms() + ms;
  for (;;) {
    pid_t r = waitpid(pid, status, WNOHANG);
    if (r == pid) {
      kid_untrack(pid);
      return 0;
    }
    if (r < 0 && errno != EINTR) return -1;
    if (st_mono_ms() >= until) return -1;
    st_sleep_ms(2);
  }
}

/* Stop and reap @pid: it must exit 0 within @ms, or it hangs. */
static void reap(pid_t pid, const char *role, unsigned ms) {
  int status = 0;
  if (wait_for(pid, ms, &status) != 0) {
    st_problem("%s (pid %d) did not stop within %u ms: hang? killing it", role,
               (int)pid, ms);
    kill(pid, SIGKILL);
    wait_for(pid, 10000, &status);
    return;
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    st_problem("%s (pid %d) ended badly: %s", role, (int)pid,
               status_str(status));
}

static void kill_and_reap(pid_t pid) {
  int status;
  kill(pid, SIGKILL);
  if (wait_for(pid, 10000, &status) != 0)
    st_problem("pid %d survives SIGKILL for 10 s", (int)pid);
}

/* Read one byte from @fd within @ms. */
static int read_byte(int fd, unsigned ms, char *c) {
  struct pollfd p = {fd, POLLIN, 0};
  int r = poll(&p, 1, (int)ms);
  if (r <= 0) return -1;
  return read(fd, c, 1) == 1 ? 0 : -1;
}

/* -------------------------------------------------------- kid bodies ---- */

static int kid_writer(void *arg) {
  return st_writer_run((const struct st_writer_cfg *)arg);
}

static int kid_reader(void *arg) {
  return st_reader_run((unsigned)(uintptr_t)arg);
}

struct pin_arg {
  int ready_fd; /* write one byte when the section is pinned */
  int go_fd;    /* witness: read one byte, then re-check and leave */
  const uint32_t *ids;
  unsigned n;
  int witness;
};

/* A reader that pins a snapshot. The victim then waits to be killed; the
 * witness waits for the parent's go and checks its bytes survived. */
static int kid_pin(void *arg) {
  struct pin_arg *a = arg;
  shm_view *v;
  int rc = shm_view_open(&v, g_opt.name, g_opt.dir, 0);
  if (rc) {
    st_problem("pin: shm_view_open: %s", shoal_errname(rc));
    return 2;
  }
  rc = shm_read_begin(v);
  if (rc) {
    st_problem("pin: shm_read_begin: %s", shoal_errname(rc));
    return 2;
  }
  uint64_t snap = shm_view_snapshot(v);
  shm_val *vals = calloc(a->n, sizeof *vals);
  int *rcs = calloc(a->n, sizeof *rcs);
  if (!vals || !rcs) abort();
  char why[256];
  struct st_vhdr h;
  for (unsigned i = 0; i < a->n; i++) {
    const struct st_key *k = &g_keys.k[a->ids[i]];
    rcs[i] = shm_get(v, k->bytes, k->len, &vals[i]);
    if (rcs[i] == 0 && st_check_value(vals[i].data, vals[i].len, a->ids[i],
                                      vals[i].expires_at, &h, why, sizeof why))
      st_problem("pin: bad value of %s: %s", st_idname(a->ids[i]), why);
    if (rcs[i] != 0 && rcs[i] != SHOAL_ENOTFOUND)
      st_problem("pin: get %s: %s", st_idname(a->ids[i]),
                 shoal_errname(rcs[i]));
  }
  if (write(a->ready_fd, a->witness ? "w" : "v", 1) != 1) return 2;
  if (!a->witness) {
    for (;;)
      pause(); /* SIGKILL comes inside the section */
  }
  char c;
  if (read_byte(a->go_fd, 60000, &c) != 0) {
    st_problem("witness: no go from the parent");
    return 2;
  }
  unsigned bad = 0;
  for (unsigned i = 0; i < a->n; i++) {
    const struct st_key *k = &g_keys.k[a->ids[i]];
    if (rcs[i] == 0 &&
        st_check_value(vals[i].data, vals[i].len, a->ids[i], vals[i].expires_at,
                       &h, why, sizeof why)) {
      if (bad++ < 5)
        st_problem("witness: value of %s (version %" PRIu64 ") read at "
                   "snapshot %" PRIu64 " was freed or reused while pinned: %s",
                   st_idname(a->ids[i]), vals[i].version, snap, why);
    }
    shm_val g;
    int grc = shm_get(v, k->bytes, k->len, &g);
    if (grc != rcs[i] || (grc == 0 && g.version != vals[i].version)) {
      if (bad++ < 5)
        st_problem("witness: %s at snapshot %" PRIu64 " was %s v%" PRIu64
                   ", now %s v%" PRIu64,
                   st_idname(a->ids[i]), snap, shoal_errname(rcs[i]),
                   rcs[i] ? 0 : vals[i].version, shoal_errname(grc),
                   grc ? 0 : g.version);
    }
  }
  if (shm_view_snapshot(v) != snap) st_problem("witness: snapshot moved");
  shm_read_end(v);
  shm_view_close(v);
  free(vals);
  free(rcs);
  return bad ? 1 : 0;
}

/* ------------------------------------------------------------ parent ---- */

static shm_config store_cfg(const char *name) {
  shm_config c = {name, g_opt.dir, g_opt.size, 0, 0};
  return c;
}

static void use_store(const char *name) {
  snprintf(g_opt.name, sizeof g_opt.name, "%s", name);
}

/* The parent writes like the writer does (model kept in g_table). */
static int parent_put(shm_store *s, uint32_t id, uint32_t plen) {
  static uint8_t *buf;
  if (!buf && !(buf = malloc(ST_VAL_MAX))) abort();
  uint64_t wseq = __atomic_add_fetch(&g_ctl->wseq, 1, __ATOMIC_SEQ_CST);
  size_t vlen = st_make_value(buf, id, wseq, 0, plen);
  uint64_t ver = 0;
  const struct st_key *k = &g_keys.k[id];
  int rc = shm_put(s, k->bytes, k->len, buf, vlen, 0, &ver);
  if (rc) {
    st_problem("parent put %s: %s: %s", st_idname(id), shoal_errname(rc),
               shm_store_lasterr(s));
    return rc;
  }
  if (ver <= __atomic_load_n(&g_ctl->max_acked, __ATOMIC_ACQUIRE))
    st_problem("parent put %s got version %" PRIu64 ", not above the last "
               "acknowledged %" PRIu64,
               st_idname(id), ver, g_ctl->max_acked);
  struct st_vhdr h;
  memcpy(&h, buf, sizeof h);
  struct st_kstate ns = {ver, wseq, 0, plen, h.hash, 1, 0};
  g_table[id] = ns;
  __atomic_store_n(&g_ctl->max_acked, ver, __ATOMIC_RELEASE);
  __atomic_store_n(&g_ctl->ack, ver << ST_ACK_ID_BITS | id, __ATOMIC_RELEASE);
  return 0;
}

static void reclaim_all(shm_store *s) {
  /* A few rounds: one grace period may need two scans in some designs. */
  for (int i = 0; i < 8; i++)
    if (shm_reclaim(s) == 0 && i >= 2) break;
}

static void quiescent_check(shm_view *v, const char *label) {
  int rc = shm_read_begin(v);
  if (rc) {
    st_problem("%s: shm_read_begin: %s", label, shoal_errname(rc));
    return;
  }
  unsigned p = shm_check(v, 1, st_check_cb, (void *)label);
  if (p) st_problem("%s: shm_check found %u problems", label, p);
  shm_read_end(v);
  g_ctl->cnt[SLOT_PARENT].w_checks++;
}

static void sum_counters(struct st_counters *t) {
  memset(t, 0, sizeof *t);
  for (unsigned i = 0; i < ST_MAX_PROCS; i++) {
#define ST_X(n) t->n += g_ctl->cnt[i].n;
    ST_COUNTERS(ST_X)
#undef ST_X
  }
}

static void print_counters(const char *scenario, double secs) {
  struct st_counters t;
  sum_counters(&t);
  uint64_t wops = t.w_puts + t.w_puts_ttl + t.w_dels + t.w_dels_absent +
                  t.w_cas_ok + t.w_cas_conflict + t.w_batches +
                  t.w_batch_failed;
  printf("  [%s] %.1f s\n", scenario, secs);
  printf("    writer: %" PRIu64 " ops (%.0f/s): put %" PRIu64
         ", put+ttl %" PRIu64 ", del %" PRIu64 " (+%" PRIu64
         " ENOTFOUND), cas %" PRIu64 " ok / %" PRIu64
         " conflict, batch %" PRIu64 " (%" PRIu64 " ops, %" PRIu64
         " group rewrites, %" PRIu64 " failed as planned, %" PRIu64
         " wrote nothing)\n",
         wops, secs > 0 ? (double)wops / secs : 0.0, t.w_puts, t.w_puts_ttl,
         t.w_dels, t.w_dels_absent, t.w_cas_ok, t.w_cas_conflict, t.w_batches,
         t.w_batch_ops, t.w_group_writes, t.w_batch_failed, t.w_batch_noop);
  printf("    writer: reclaim %" PRIu64 " calls / %" PRIu64
         " blocks, expire %" PRIu64 " calls / %" PRIu64 " keys, sweep %" PRIu64
         " calls / %" PRIu64 " slots, %" PRIu64
         " keys verified after commit, %" PRIu64 " full verifications, %" PRIu64
         " quiescent shm_check\n",
         t.w_reclaim_calls, t.w_reclaimed, t.w_expire_calls, t.w_expired,
         t.w_sweeps, t.w_swept, t.w_verified, t.w_full_verifies, t.w_checks);
  if (t.w_expired_seen_present)
    printf("    note: %" PRIu64 " deletes of keys whose TTL had passed "
           "succeeded (writer treats expired-unswept keys as present)\n",
           t.w_expired_seen_present);
  printf("    readers: %" PRIu64 " sections (%" PRIu64 " nested, %" PRIu64
         " long), %" PRIu64 " gets verified (%" PRIu64
         " found), get_many %" PRIu64 " (%" PRIu64 " keys)\n",
         t.r_sections, t.r_nested, t.r_long_sections, t.r_gets, t.r_found,
         t.r_get_many, t.r_get_many_keys);
  printf("    readers: %" PRIu64 " scans (%" PRIu64 " keys, %" PRIu64
         " full), %" PRIu64 " skipped-key absence checks, %" PRIu64
         " group checks (%" PRIu64 " present), %" PRIu64 " ack checks, %" PRIu64
         " live shm_check, %" PRIu64 " reopens\n",
         t.r_scans, t.r_scan_keys, t.r_full_scans, t.r_absent_checks,
         t.r_group_checks, t.r_groups_present, t.r_ack_checks, t.r_live_checks,
         t.r_reopens);
  memset(g_ctl->cnt, 0, sizeof g_ctl->cnt);
}

static void print_stats(const char *label, const shm_stats *st) {
  if (!g_opt.verbose) return;
  printf("    %s: commit_seq %" PRIu64 ", keys %" PRIu64 ", heap_used %" PRIu64
         ", heap_free %" PRIu64 ", retired %" PRIu64 " (%" PRIu64
         " B), reclaimed %" PRIu64 ", readers busy %" PRIu64 " claimed %" PRIu64
         "\n",
         label, st->commit_seq, st->keys, st->heap_used, st->heap_free,
         st->retired, st->retired_bytes, st->reclaimed, st->readers_busy,
         st->readers_claimed);
}

/* --------------------------------------------------- scenario: concurrent */

static void victim_round(unsigned *victims) {
  int pfd[2];
  if (pipe(pfd) != 0) return;
  uint32_t ids[16];
  for (unsigned i = 0; i < 16; i++)
    ids[i] = (uint32_t)st_below(g_keys.n);
  struct pin_arg a = {pfd[1], -1, ids, 16, 0};
  pid_t p = spawn("victim", SLOT_VICTIM, kid_pin, &a);
  close(pfd[1]);
  if (p > 0) {
    char c;
    if (read_byte(pfd[0], 20000, &c) != 0)
      st_problem("victim reader never entered its section");
    kill_and_reap(p);
    (*victims)++;
  }
  close(pfd[0]);
}

static shm_store *scenario_concurrent(unsigned *victims_out) {
  uint64_t t0 = st_mono_ms();
  use_store(g_name_main);
  shm_config cfg = store_cfg(g_opt.name);
  shm_store *s = NULL;
  int rc = shm_store_open(&s, &cfg, SHM_CREATE | SHM_EXCL);
  if (rc) {
    st_problem("create store: %s: %s", shoal_errname(rc),
               s ? shm_store_lasterr(s) : "");
    return NULL;
  }
  shm_store_close(s, 1);
  s = NULL;

  static struct st_writer_cfg wc = {0, 1};
  pid_t writer = spawn("writer", SLOT_WRITER, kid_writer, &wc);
  pid_t readers[ST_MAX_PROCS];
  char rnames[ST_MAX_PROCS][24];
  for (unsigned i = 0; i < g_opt.readers; i++) {
    snprintf(rnames[i], sizeof rnames[i], "reader %u", i);
    readers[i] =
        spawn(rnames[i], SLOT_READER0 + i, kid_reader, (void *)(uintptr_t)i);
  }
  uint64_t until = st_mono_ms() + 1000ull * g_opt.seconds;
  uint64_t next_victim = st_mono_ms() + 400;
  unsigned victims = 0;
  while (st_mono_ms() < until) {
    st_sleep_ms(20);
    int status;
    pid_t p = waitpid(-1, &status, WNOHANG);
    if (p > 0) {
      kid_untrack(p);
      st_problem("%s (pid %d) ended early: %s",
                 p == writer ? "writer" : "a reader", (int)p,
                 status_str(status));
      if (p == writer) writer = -1;
      for (unsigned i = 0; i < g_opt.readers; i++)
        if (readers[i] == p) readers[i] = -1;
      if (writer < 0) break;
    }
    if (st_mono_ms() >= next_victim) {
      victim_round(&victims);
      next_victim = st_mono_ms() + 800;
    }
  }
  __atomic_store_n(&g_ctl->stop, 1, __ATOMIC_RELEASE);
  if (writer > 0) reap(writer, "writer", 60000);
  for (unsigned i = 0; i < g_opt.readers; i++)
    if (readers[i] > 0) reap(readers[i], rnames[i], 60000);
  __atomic_store_n(&g_ctl->stop, 0, __ATOMIC_RELEASE);
  *victims_out = victims;

  /* Reattach: a clean close, so no recovery; the dead victims' slots go. */
  rc = shm_store_open(&s, &cfg, 0);
  if (rc) {
    st_problem("reattach after the concurrent run: %s", shoal_errname(rc));
    return NULL;
  }
  g_role = "main";
  unsigned swept = shm_sweep_readers(s);
  reclaim_all(s);
  shm_stats st;
  shm_store_stats(s, &st);
  print_stats("after run, swept + reclaimed", &st);
  if (st.readers_busy || st.readers_claimed)
    st_problem("no reader left, after shm_sweep_readers (%u cleared) stats "
               "still show %" PRIu64 " busy / %" PRIu64 " claimed slots",
               swept, st.readers_busy, st.readers_claimed);
  if (st.retired)
    st_problem("no reader busy, yet %" PRIu64 " blocks (%" PRIu64 " B) stay "
               "retired after shm_reclaim",
               st.retired, st.retired_bytes);
  shm_view *v;
  rc = shm_store_view(s, &v);
  if (rc) {
    st_problem("shm_store_view: %s", shoal_errname(rc));
  } else {
    st_verify_all(v, "parent after the concurrent run");
    quiescent_check(v, "parent after the concurrent run");
    shm_view_close(v);
  }
  print_counters("concurrent", (double)(st_mono_ms() - t0) / 1000.0);
  printf("    %u victim readers killed inside a section\n", victims);
  return s;
}

/* -------------------------------------------------- scenario: reader-kill */

static void scenario_reader_kill(shm_store *s) {
  uint64_t t0 = st_mono_ms();
  enum { NP = 200 };
  uint32_t ids[NP], plens[NP];
  unsigned np = 0;
  while (np < NP && np < g_keys.nnorm) {
    uint32_t id = (uint32_t)st_below(g_keys.nnorm);
    int dup = 0;
    for (unsigned i = 0; i < np; i++)
      dup |= ids[i] == id;
    if (dup) continue;
    ids[np] = id;
    plens[np] = st_below(20) == 0 ? 4097 + (uint32_t)st_below(12000)
                                  : (uint32_t)st_below(2001);
    np++;
  }
  /* warm up: every key gets a non-embedded current record of its size */
  for (int round = 0; round < 2; round++)
    for (unsigned i = 0; i < np; i++)
      parent_put(s, ids[i], plens[i]);
  shm_sweep_readers(s);
  reclaim_all(s);
  shm_stats base;
  shm_store_stats(s, &base);
  print_stats("baseline", &base);
  unsigned rounds_ok = 0;
  uint64_t max_pinned = 0;
  for (unsigned round = 0; round < g_opt.reader_kills; round++) {
    int ready[2], go[2];
    if (pipe(ready) || pipe(go)) {
      st_problem("pipe: %s", strerror(errno));
      return;
    }
    struct pin_arg wa = {ready[1], go[0], ids, np, 1};
    struct pin_arg va = {ready[1], -1, ids, np, 0};
    pid_t witness = spawn("witness", SLOT_VICTIM, kid_pin, &wa);
    pid_t victim = spawn("victim", SLOT_VICTIM, kid_pin, &va);
    close(ready[1]);
    close(go[0]);
    char c;
    int pinned = 0;
    for (int i = 0; i < 2; i++)
      if (read_byte(ready[0], 20000, &c) == 0) pinned++;
    if (pinned != 2)
      st_problem("round %u: pins never entered their sections", round);
    shm_stats st0, st1, st2, st3, st4, st5;
    shm_store_stats(s, &st0);
    if (st0.readers_busy < 2)
      st_problem("round %u: two readers inside sections, stats say %" PRIu64
                 " busy",
                 round, st0.readers_busy);
    /* overwrite everything they read, three times, and try to reclaim */
    for (int k = 0; k < 3; k++)
      for (unsigned i = 0; i < np; i++)
        parent_put(s, ids[i], plens[i]);
    reclaim_all(s);
    shm_store_stats(s, &st1);
    print_stats("pinned by witness + victim, after reclaim", &st1);
    if (st1.heap_used <= base.heap_used && st1.retired <= base.retired)
      st_problem("round %u: %u keys overwritten under two pinned snapshots, "
                 "yet nothing is retained (heap_used %" PRIu64
                 " <= baseline %" PRIu64 ")",
                 round, np, st1.heap_used, base.heap_used);
    if (st1.heap_used > base.heap_used &&
        st1.heap_used - base.heap_used > max_pinned)
      max_pinned = st1.heap_used - base.heap_used;
    /* the witness checks its bytes survived, and leaves */
    if (write(go[1], "g", 1) != 1) st_problem("write go");
    reap(witness, "witness", 30000);
    reclaim_all(s);
    shm_store_stats(s, &st2);
    print_stats("pinned by victim, after reclaim", &st2);
    if (st2.heap_used <= base.heap_used && st2.retired <= base.retired)
      st_problem("round %u: the victim still pins its snapshot, yet the "
                 "memory it can see was freed (heap_used %" PRIu64
                 " <= baseline %" PRIu64 ", retired %" PRIu64 ")",
                 round, st2.heap_used, base.heap_used, st2.retired);
    kill_and_reap(victim);
    reclaim_all(s);
    shm_store_stats(s, &st3);
    print_stats("victim killed, before sweep", &st3);
    if (st3.readers_busy != 1)
      st_info("round %u: after the kill, before the sweep: %" PRIu64
              " busy slots (expected the dead victim's 1)",
              round, st3.readers_busy);
    unsigned swept = shm_sweep_readers(s);
    shm_store_stats(s, &st4);
    if (st4.readers_busy != 0 || st4.readers_claimed != 0)
      st_problem("round %u: after shm_sweep_readers (cleared %u) the killed "
                 "reader's slot remains: %" PRIu64 " busy, %" PRIu64 " claimed",
                 round, swept, st4.readers_busy, st4.readers_claimed);
    if (st3.readers_claimed >= 1 && swept == 0)
      st_problem("round %u: shm_sweep_readers cleared nothing though the "
                 "victim's slot was claimed",
                 round);
    reclaim_all(s);
    shm_store_stats(s, &st5);
    print_stats("swept + reclaimed", &st5);
    int ok = 1;
    if (st5.retired > base.retired) {
      st_problem("round %u: after sweep + reclaim %" PRIu64 " blocks (%" PRIu64
                 " B) stay retired (baseline %" PRIu64 ")",
                 round, st5.retired, st5.retired_bytes, base.retired);
      ok = 0;
    }
    /* Same keys, same sizes: the heap must come back to the baseline
     * (64 KiB of slack for a slab carved on the way). */
    if (st5.heap_used > base.heap_used + 65536) {
      st_problem("round %u: heap_used %" PRIu64 " after sweep + reclaim, "
                 "baseline %" PRIu64 ": memory retired while the reader was "
                 "pinned was not freed",
                 round, st5.heap_used, base.heap_used);
      ok = 0;
    }
    rounds_ok += ok;
    close(ready[0]);
    close(go[1]);
  }
  shm_view *v;
  if (shm_store_view(s, &v) == 0) {
    st_verify_all(v, "parent after reader kills");
    quiescent_check(v, "parent after reader kills");
    shm_view_close(v);
  }
  printf("  [reader-kill] %.1f s\n", (double)(st_mono_ms() - t0) / 1000.0);
  printf("    %u rounds (witness + victim pinned, %u keys overwritten x3, "
         "victim SIGKILLed), %u came back to baseline; up to %" PRIu64
         " B held by pinned snapshots; baseline heap_used %" PRIu64 "\n",
         g_opt.reader_kills, np, rounds_ok, max_pinned, base.heap_used);
  memset(g_ctl->cnt, 0, sizeof g_ctl->cnt);
}

/* -------------------------------------------------- scenario: writer-kill */

struct kill_figs {
  unsigned kills, before_open, inflight, applied, not_applied, either;
  unsigned recoveries, early_exits;
  uint64_t rec_ms_sum, rec_ms_max, keys_checked;
};

static void state_from_obs(struct st_kstate *k, int rc, const shm_val *val) {
  if (rc == 0 && val->len >= sizeof(struct st_vhdr)) {
    struct st_vhdr h;
    memcpy(&h, val->data, sizeof h);
    struct st_kstate ns = {
        val->version, h.wseq, h.expires_at, h.plen, h.hash, 1, 0};
    *k = ns;
  } else {
    k->present = 0;
  }
}

/* Compare the recovered store with what the killed writer acknowledged. */
static void check_after_kill(shm_view *v, unsigned kill_no,
                             struct kill_figs *f) {
  struct st_inflight *fl = &g_ctl->inflight;
  int active = (int)__atomic_load_n(&fl->active, __ATOMIC_ACQUIRE);
  char why[512], why2[512];
  uint8_t *infl = calloc(g_keys.n, 1);
  if (!infl) abort();
  if (active)
    for (uint32_t i = 0; i < fl->n; i++)
      infl[fl->ids[i]] = 1;
  int rcs[ST_BATCH_MAX];
  shm_val vals[ST_BATCH_MAX];
  uint64_t t_lo = shm_now_ms();
  int rc = shm_read_begin(v);
  if (rc) {
    st_problem("after kill %u: shm_read_begin: %s", kill_no, shoal_errname(rc));
    free(infl);
    return;
  }
  uint64_t snap = shm_view_snapshot(v);
  uint64_t acked = __atomic_load_n(&g_ctl->max_acked, __ATOMIC_ACQUIRE);
  if (snap < acked)
    st_problem("after kill %u: recovered commit_seq %" PRIu64 " is below the "
               "last acknowledged commit %" PRIu64,
               kill_no, snap, acked);
  unsigned lost = 0;
  for (uint32_t id = 0; id < g_keys.n; id++) {
    if (infl[id]) continue;
    const struct st_key *k = &g_keys.k[id];
    shm_val val;
    memset(&val, 0, sizeof val);
    rc = shm_get(v, k->bytes, k->len, &val);
    f->keys_checked++;
    if (!st_match(id, &g_table[id], 1, 0, rc, &val, t_lo, shm_now_ms(), why,
                  sizeof why)) {
      if (lost++ < 10)
        st_problem("after kill %u (recovered, snapshot %" PRIu64
                   "): key %s: %s",
                   kill_no, snap, st_idname(id), why);
      state_from_obs(&g_table[id], rc, &val); /* don't cascade */
    }
  }
  if (lost > 10)
    st_problem("after kill %u: %u keys in all differ", kill_no, lost);
  if (active) {
    f->inflight++;
    int all_old = 1, all_new = 1;
    char detail[1024];
    size_t o = 0;
    for (uint32_t i = 0; i < fl->n; i++) {
      uint32_t id = fl->ids[i];
      const struct st_key *k = &g_keys.k[id];
      memset(&vals[i], 0, sizeof vals[i]);
      rcs[i] = shm_get(v, k->bytes, k->len, &vals[i]);
      uint64_t t_hi = shm_now_ms();
      f->keys_checked++;
      int mo = st_match(id, &fl->old_[i], 1, 0, rcs[i], &vals[i], t_lo, t_hi,
                        why, sizeof why);
      int mn = st_match(id, &fl->new_[i], fl->new_[i].version != 0,
                        fl->old_[i].version, rcs[i], &vals[i], t_lo, t_hi, why2,
                        sizeof why2);
      /* a delete's new state is "absent", whatever the version */
      all_old &= mo;
      all_new &= mn;
      if (!mo && !mn && o < sizeof detail - 200)
        o += (size_t)snprintf(detail + o, sizeof detail - o,
                              " [%s: neither old (%s) nor new (%s)]",
                              st_idname(id), why, why2);
    }
    if (all_old && all_new)
      f->either++;
    else if (all_new)
      f->applied++;
    else if (all_old)
      f->not_applied++;
    else {
      st_problem(
          "after kill %u: the in-flight op (kind %d, %u keys, write %" PRIu64
          ") is neither wholly applied nor wholly absent:%s",
          kill_no, fl->kind, fl->n, fl->wseq, o ? detail : " (mixed)");
    }
    for (uint32_t i = 0; i < fl->n; i++)
      state_from_obs(&g_table[fl->ids[i]], rcs[i], &vals[i]);
    __atomic_store_n(&fl->active, 0, __ATOMIC_RELEASE);
  }
  shm_read_end(v);
  free(infl);
}

static void scenario_writer_kill(void) {
  uint64_t t0 = st_mono_ms();
  use_store(g_name_kill);
  shm_config cfg = store_cfg(g_opt.name);
  memset(g_table, 0, sizeof(struct st_kstate) * g_keys.n);
  memset(&g_ctl->inflight, 0, sizeof g_ctl->inflight);
  g_ctl->ack = 0;
  g_ctl->max_acked = 0;
  shm_store *s = NULL;
  int rc = shm_store_open(&s, &cfg, SHM_CREATE | SHM_EXCL);
  if (rc) {
    st_problem("create kill store: %s", shoal_errname(rc));
    return;
  }
  shm_store_close(s, 1);
  s = NULL;

  pid_t readers[ST_MAX_PROCS];
  char rnames[ST_MAX_PROCS][24];
  for (unsigned i = 0; i < g_opt.readers; i++) {
    snprintf(rnames[i], sizeof rnames[i], "kill-reader %u", i);
    readers[i] =
        spawn(rnames[i], SLOT_READER0 + i, kid_reader, (void *)(uintptr_t)i);
  }
  static struct st_writer_cfg wc = {1, 1};
  struct kill_figs f;
  memset(&f, 0, sizeof f);
  for (unsigned kill_no = 1; kill_no <= g_opt.writer_kills; kill_no++) {
    __atomic_store_n(&g_ctl->writer_opened, 0, __ATOMIC_SEQ_CST);
    pid_t w = spawn("kill-writer", SLOT_WRITER, kid_writer, &wc);
    if (w < 0) break;
    /* 5..200 ms; one kill in three within 5..40 ms, where the child is
     * often still recovering in shm_store_open */
    unsigned delay = 5 + (unsigned)st_below(st_below(3) == 0 ? 36 : 196);
    uint64_t until = st_mono_ms() + delay;
    int status, early = 0;
    while (st_mono_ms() < until) {
      st_sleep_ms(1);
      if (waitpid(w, &status, WNOHANG) == w) {
        kid_untrack(w);
        st_problem("kill %u: the writer ended on its own after < %u ms: %s",
                   kill_no, delay, status_str(status));
        early = 1;
        f.early_exits++;
        break;
      }
    }
    if (!early) {
      kill_and_reap(w);
      f.kills++;
      if (!__atomic_load_n(&g_ctl->writer_opened, __ATOMIC_ACQUIRE))
        f.before_open++;
    }
    /* readers must live through it */
    for (unsigned i = 0; i < g_opt.readers; i++) {
      if (readers[i] > 0 &&
          waitpid(readers[i], &status, WNOHANG) == readers[i]) {
        kid_untrack(readers[i]);
        st_problem("kill %u: %s died: %s", kill_no, rnames[i],
                   status_str(status));
        readers[i] = -1;
      }
    }
    uint64_t r0 = st_mono_ms();
    rc = shm_store_open(&s, &cfg, 0);
    uint64_t rms = st_mono_ms() - r0;
    if (rc) {
      st_problem("kill %u: recovery (shm_store_open) failed: %s (%d)%s%s",
                 kill_no, shoal_errname(rc), rc, s ? ": " : "",
                 s ? shm_store_lasterr(s) : "");
      break;
    }
    f.recoveries++;
    f.rec_ms_sum += rms;
    if (rms > f.rec_ms_max) f.rec_ms_max = rms;
    shm_stats st;
    shm_store_stats(s, &st);
    if (st.readers_claimed > g_opt.readers)
      st_problem("kill %u: after recovery %" PRIu64 " reader slots are "
                 "claimed, only %u readers live (the dead writer's view slot "
                 "was not cleared?)",
                 kill_no, st.readers_claimed, g_opt.readers);
    if (st.commit_seq < g_ctl->max_acked)
      st_problem("kill %u: recovered commit_seq %" PRIu64
                 " < acknowledged %" PRIu64,
                 kill_no, st.commit_seq, g_ctl->max_acked);
    shm_view *v = NULL;
    rc = shm_store_view(s, &v);
    if (rc) {
      st_problem("kill %u: shm_store_view: %s", kill_no, shoal_errname(rc));
      shm_store_close(s, 0);
      break;
    }
    check_after_kill(v, kill_no, &f);
    quiescent_check(v, "after writer kill");
    /* the recovered store takes writes again, above every old version */
    parent_put(s, (uint32_t)st_below(g_keys.nnorm), (uint32_t)st_below(3000));
    shm_view_close(v);
    shm_store_close(s, (int)st_below(2));
    s = NULL;
  }
  __atomic_store_n(&g_ctl->stop, 1, __ATOMIC_RELEASE);
  for (unsigned i = 0; i < g_opt.readers; i++)
    if (readers[i] > 0) reap(readers[i], rnames[i], 60000);
  __atomic_store_n(&g_ctl->stop, 0, __ATOMIC_RELEASE);
  /* final: one more attach, full comparison with the model */
  rc = shm_store_open(&s, &cfg, 0);
  if (rc == 0) {
    shm_sweep_readers(s);
    shm_view *v;
    if (shm_store_view(s, &v) == 0) {
      st_verify_all(v, "after the writer kills");
      quiescent_check(v, "after the writer kills");
      shm_view_close(v);
    }
    shm_store_close(s, 1);
  } else {
    st_problem("final attach of the kill store: %s", shoal_errname(rc));
  }
  print_counters("writer-kill", (double)(st_mono_ms() - t0) / 1000.0);
  printf("    %u writer kills (%u before its shm_store_open returned, %u "
         "ended early), %u recoveries (avg %.1f ms, max %" PRIu64
         " ms), %" PRIu64 " key states checked after recovery\n",
         f.kills, f.before_open, f.early_exits, f.recoveries,
         f.recoveries ? (double)f.rec_ms_sum / f.recoveries : 0.0, f.rec_ms_max,
         f.keys_checked);
  printf("    in-flight at the kill: %u ops: %u applied, %u not applied, %u "
         "indistinguishable\n",
         f.inflight, f.applied, f.not_applied, f.either);
}

/* -------------------------------------------------------------- main ---- */

static void usage(FILE *out) {
  fprintf(
      out,
      "usage: shm-stress [--seconds N] [--seed N] [--yield] [--readers N]\n"
      "                  [--keys N] [--groups N] [--writer-kills N]\n"
      "                  [--reader-kills N] [--size-mb N] [--verbose] "
      "[--no-live-check]\n"
      "                  [--scenario concurrent,reader-kill,writer-kill|all]\n"
      "  --seconds N       concurrent run length (env SHOAL_STRESS_SECONDS, "
      "default 10)\n"
      "  --yield           sched_yield() at random points (also env "
      "SHOAL_STRESS_YIELD=1)\n"
      "  --writer-kills N  SIGKILLs of the writer (default 20)\n"
      "  --reader-kills N  reader-kill rounds (default 4)\n"
      "  --no-live-check   readers skip shm_check(quiescent 0) in sections\n"
      "  --verbose         allocator figures of every reader-kill step\n");
}

static unsigned parse_scenarios(const char *s) {
  unsigned m = 0;
  char buf[128];
  snprintf(buf, sizeof buf, "%s", s);
  for (char *save = NULL, *t = strtok_r(buf, ",", &save); t;
       t = strtok_r(NULL, ",", &save)) {
    if (!strcmp(t, "all"))
      m |= ST_SC_CONCURRENT | ST_SC_READER_KILL | ST_SC_WRITER_KILL;
    else if (!strcmp(t, "concurrent"))
      m |= ST_SC_CONCURRENT;
    else if (!strcmp(t, "reader-kill"))
      m |= ST_SC_READER_KILL;
    else if (!strcmp(t, "writer-kill"))
      m |= ST_SC_WRITER_KILL;
    else
      return 0;
  }
  return m;
}

int main(int argc, char **argv) {
  const char *env = getenv("SHOAL_STRESS_SECONDS");
  g_opt.seconds = env && *env ? (unsigned)strtoul(env, NULL, 10) : 10;
  env = getenv("SHOAL_STRESS_YIELD");
  g_opt.yield = env && *env && strcmp(env, "0") != 0;
  g_opt.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 16);
  g_opt.seed %= 1000000007ull; /* short enough to retype */
  g_opt.readers = 3;
  g_opt.nkeys = 3000;
  g_opt.ngroups = 40;
  g_opt.writer_kills = 20;
  g_opt.reader_kills = 4;
  g_opt.live_check = 1;
  g_opt.scenarios = ST_SC_CONCURRENT | ST_SC_READER_KILL | ST_SC_WRITER_KILL;
  g_opt.size = 256ull << 20;
  static const struct option lo[] = {
      {"seconds", required_argument, 0, 's'},
      {"seed", required_argument, 0, 'S'},
      {"yield", no_argument, 0, 'y'},
      {"readers", required_argument, 0, 'r'},
      {"keys", required_argument, 0, 'k'},
      {"groups", required_argument, 0, 'g'},
      {"writer-kills", required_argument, 0, 'W'},
      {"reader-kills", required_argument, 0, 'R'},
      {"scenario", required_argument, 0, 'c'},
      {"size-mb", required_argument, 0, 'm'},
      {"verbose", no_argument, 0, 'v'},
      {"no-live-check", no_argument, 0, 'L'},
      {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "s:S:yr:k:g:W:R:c:m:vLh", lo, NULL)) !=
         -1) {
    switch (c) {
    case 's':
      g_opt.seconds = (unsigned)strtoul(optarg, NULL, 10);
      break;
    case 'S':
      g_opt.seed = strtoull(optarg, NULL, 10);
      break;
    case 'y':
      g_opt.yield = 1;
      break;
    case 'r':
      g_opt.readers = (unsigned)strtoul(optarg, NULL, 10);
      break;
    case 'k':
      g_opt.nkeys = (unsigned)strtoul(optarg, NULL, 10);
      break;
    case 'g':
      g_opt.ngroups = (unsigned)strtoul(optarg, NULL, 10);
      break;
    case 'W':
      g_opt.writer_kills = (unsigned)strtoul(optarg, NULL, 10);
      break;
    case 'R':
      g_opt.reader_kills = (unsigned)strtoul(optarg, NULL, 10);
      break;
    case 'c':
      g_opt.scenarios = parse_scenarios(optarg);
      if (!g_opt.scenarios) {
        usage(stderr);
        return 2;
      }
      break;
    case 'm':
      g_opt.size = strtoull(optarg, NULL, 10) << 20;
      break;
    case 'v':
      g_opt.verbose = 1;
      break;
    case 'L':
      g_opt.live_check = 0;
      break;
    case 'h':
      usage(stdout);
      return 0;
    default:
      usage(stderr);
      return 2;
    }
  }
  if (g_opt.readers > ST_MAX_PROCS - SLOT_READER0)
    g_opt.readers = ST_MAX_PROCS - SLOT_READER0;
  if (g_opt.nkeys < 64) g_opt.nkeys = 64;
  if (g_opt.nkeys + g_opt.ngroups * ST_GROUP_MAX >= (1u << ST_ACK_ID_BITS)) {
    fprintf(stderr, "shm-stress: too many keys\n");
    return 2;
  }
  /* the store's own yield points (shm/store.c maybe_yield) */
  if (g_opt.yield) setenv("SHOAL_DEBUG_YIELD", "1", 1);
  setvbuf(stdout, NULL, _IOLBF, 0);
  g_parent = getpid();
  g_rng = g_opt.seed;

  st_keys_build(&g_keys, g_opt.nkeys, g_opt.ngroups, g_opt.seed);
  size_t ctl_bytes =
      sizeof(struct st_ctl) + sizeof(struct st_kstate) * g_keys.n;
  void *m = mmap(NULL, ctl_bytes, PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) {
    perror("mmap");
    return 2;
  }
  g_ctl = m;
  g_table = (struct st_kstate *)(g_ctl + 1);
  g_cnt = &g_ctl->cnt[SLOT_PARENT];

  const char *base = getenv("SHOAL_SHM_DIR");
  base = base && *base ? base : "/dev/shm";
  remove_stale_dirs(base);
  snprintf(g_opt.dir, sizeof g_opt.dir, "%s/shoal-stress.%d.XXXXXX", base,
           (int)getpid());
  if (!mkdtemp(g_opt.dir)) {
    fprintf(stderr, "shm-stress: mkdtemp %s: %s\n", g_opt.dir, strerror(errno));
    g_opt.dir[0] = 0;
    return 2;
  }
  snprintf(g_name_main, sizeof g_name_main, "stress-%d", (int)getpid());
  snprintf(g_name_kill, sizeof g_name_kill, "stress-%d-k", (int)getpid());
  atexit(st_cleanup);
  signal(SIGINT, on_fatal_signal);
  signal(SIGTERM, on_fatal_signal);
  signal(SIGHUP, on_fatal_signal);
  signal(SIGALRM, on_fatal_signal);
  signal(SIGPIPE, SIG_IGN);
  unsigned budget = 180 + 3 * g_opt.seconds + 10 * g_opt.writer_kills +
                    20 * g_opt.reader_kills;
  alarm(budget);

  printf("shm-stress: seed %" PRIu64 ", %u s, %u readers, %u keys + %u groups "
         "(%u keys), %s, store %s in %s\n",
         g_opt.seed, g_opt.seconds, g_opt.readers, g_keys.nnorm, g_keys.ngroups,
         g_keys.n, g_opt.yield ? "random yields" : "no yields", g_name_main,
         g_opt.dir);
  printf("  reproduce: shm-stress --seed %" PRIu64 " --seconds %u --readers %u "
         "--keys %u --groups %u --writer-kills %u --reader-kills %u%s\n",
         g_opt.seed, g_opt.seconds, g_opt.readers, g_opt.nkeys, g_opt.ngroups,
         g_opt.writer_kills, g_opt.reader_kills, g_opt.yield ? " --yield" : "");
  if (!g_opt.live_check) printf("  (live shm_check off)\n");

  shm_store *s = NULL;
  unsigned victims = 0;
  if (g_opt.scenarios & (ST_SC_CONCURRENT | ST_SC_READER_KILL)) {
    if (g_opt.scenarios & ST_SC_CONCURRENT) {
      s = scenario_concurrent(&victims);
    } else {
      /* reader-kill alone: a store with some content */
      use_store(g_name_main);
      shm_config cfg = store_cfg(g_opt.name);
      int rc = shm_store_open(&s, &cfg, SHM_CREATE | SHM_EXCL);
      if (rc) {
        st_problem("create store: %s", shoal_errname(rc));
        s = NULL;
      }
    }
    if (s && (g_opt.scenarios & ST_SC_READER_KILL)) scenario_reader_kill(s);
    if (s) shm_store_close(s, 1);
  }
  if (g_opt.scenarios & ST_SC_WRITER_KILL) scenario_writer_kill();

  uint64_t problems = __atomic_load_n(&g_ctl->problems, __ATOMIC_ACQUIRE);
  printf("shm-stress: %s: %" PRIu64 " problem%s (seed %" PRIu64 ")\n",
         problems ? "FAILED" : "passed", problems, problems == 1 ? "" : "s",
         g_opt.seed);
  st_cleanup();
  munmap(m, ctl_bytes);
  return problems ? 1 : 0;
}
