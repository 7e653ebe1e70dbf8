/*
 * main.c - shoald: options, startup, shutdown.
 *
 * shoald is the single writer of one store (DESIGN sections 2 and 4). It
 * runs in the foreground under a supervisor (systemd Type=notify,
 * supervisord), logs one line per event to stderr, and owns:
 *
 *   RUNDIR/NAME.lock   flock(LOCK_EX) for the broker's lifetime, pid inside:
 *                      one broker per store name and RUNDIR. Taken before
 *                      anything else is touched, so a second broker changes
 *                      nothing (not even the socket) and exits 3.
 *   SHMDIR/shoal.NAME.data / .readers
 *                      created or re-attached with shm_store_open
 *                      (SHM_CREATE): recovery after a crash happens inside.
 *                      The store's own flock on the data object also
 *                      refuses a second writer that uses another RUNDIR.
 *                      Modes: data 0640 (group may map it read-only),
 *                      readers 0660 (clients write their slots); shm/ sets
 *                      them with fchmod, so the umask can not narrow them.
 *   RUNDIR/NAME.sock   the request socket, mode 0660 (umask 0117 around
 *                      bind). A stale file is removed only while holding
 *                      the lock, and only if nobody answers on it.
 *
 * Startup order: options -> RUNDIR -> lock -> store -> socket -> ACLs for
 * the --allow-uid/--allow-gid ids (access.c) -> epoll ->
 * "ready" (sd_notify READY=1). Shutdown (SIGTERM/SIGINT, loop.c): stop
 * accepting and unlink the socket, serve what clients already sent, flush
 * replies (at most BROKER_DRAIN_MS), close connections (lease policy in
 * handlers.c), close the store cleanly, exit 0. SIGHUP logs a stats line.
 *
 * Exit status: 0 after a clean stop, 1 on a startup or runtime failure,
 * 2 on a usage error, 3 when another broker already serves the store (the
 * unit file tells systemd not to restart on 2 and 3).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "broker-internal.h"

#define EXIT_USAGE 2
#define EXIT_RUNNING 3

static const char usage_text[] =
    "NAME\n"
    "    shoald - the shoal broker: single writer of a shared-memory key-value store\n"
    "\n"
    "SYNOPSIS\n"
    "    shoald [--name N] [--socket P] [--rundir D] [--shm-dir D] [--size BYTES]\n"
    "           [--reader-slots N] [--allow-uid U]... [--allow-gid G]...\n"
    "           [--max-frame BYTES] [--max-output BYTES] [--workers N]\n"
    "           [--sweep-ms MS] [--spin-us US] [--quiet] [--help] [--version]\n"
    "\n"
    "DESCRIPTION\n"
    "    Creates (or re-attaches and recovers) the store NAME in shared memory,\n"
    "    listens on a Unix socket for writes and broker requests from libshoal\n"
    "    clients, and stays in the foreground, logging one line per event to\n"
    "    stderr. Clients read the store directly from shared memory.\n"
    "    SIGTERM/SIGINT: finish the requests already received, flush replies,\n"
    "    close the store cleanly, exit 0. SIGHUP: log a stats line.\n"
    "    With NOTIFY_SOCKET set (systemd Type=notify), sends READY=1 and STOPPING=1.\n"
    "\n"
    "OPTIONS\n"
    "    -n, --name N         store name, [A-Za-z0-9._-]{1,64} (default: default)\n"
    "    -s, --socket P       socket path (default: $SHOAL_SOCKET, else RUNDIR/N.sock)\n"
    "        --rundir D       directory of the socket and the lock file (default:\n"
    "                         $SHOAL_RUNDIR, else $XDG_RUNTIME_DIR/shoal, else\n"
    "                         /tmp/shoal-UID; created 0700, 0750 with --allow-*)\n"
    "        --shm-dir D      directory of the shared objects (default:\n"
    "                         $SHOAL_SHM_DIR, else /dev/shm); any tmpfs or hugetlbfs\n"
    "        --size BYTES     bytes reserved for a new store, sparse; suffixes\n"
    "                         k, M, G, T (powers of 1024); default 1G. An existing\n"
    "                         store keeps its size.\n"
    "        --reader-slots N reader slots of a new store (default 1024); one\n"
    "                         serves the broker's own Get and Scan, the rest\n"
    "                         are leased to client handles, one each\n"
    "        --allow-uid U    also accept clients running as user U (name or\n"
    "                         number); repeatable. The broker's own uid is always\n"
    "                         accepted. Others get SHOAL_EDENIED.\n"
    "        --allow-gid G    also accept clients in group G (primary or\n"
    "                         supplementary); repeatable. Allowed ids get a POSIX\n"
    "                         ACL on the socket, the shared objects and RUNDIR.\n"
    "        --max-frame B    largest request or reply frame (default 16M); values\n"
    "                         may be up to B minus 4 KiB. Larger frames are refused\n"
    "                         and the connection closed.\n"
    "        --max-output B   unsent replies a connection may hold before the\n"
    "                         broker stops reading from it (default 4M)\n"
    "        --workers N      threads that hash and tail files for HashFile and\n"
    "                         TailLog (default 2), so a slow disk or a huge file\n"
    "                         never delays the event loop\n"
    "        --hash-cache-entries N\n"
    "                         digests the hash cache keeps (default 65536; 0: no\n"
    "                         cache); least recently used go first\n"
    "        --hash-cache-bytes B\n"
    "                         memory the hash cache may use (default 16M)\n"
    "        --sweep-ms MS    TTL sweep and reclamation period (default 200)\n"
    "        --spin-us US     while clients send back-to-back, poll this long\n"
    "                         before sleeping (default 50; 0: never): lower round\n"
    "                         trip latency for at most US of CPU per idle gap\n"
    "    -q, --quiet          no per-connection log lines\n"
    "    -h, --help           this text\n"
    "    -V, --version        print the version\n"
    "\n"
    "FILES\n"
    "    RUNDIR/N.sock, RUNDIR/N.lock, SHMDIR/shoal.N.data, SHMDIR/shoal.N.readers\n"
    "\n"
    "EXIT STATUS\n"
    "    0 clean stop, 1 failure, 2 usage error, 3 another shoald serves the store\n";

static void die_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void die_usage(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("shoald: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputs("\nTry 'shoald --help'.\n", stderr);
  va_end(ap);
  exit(EXIT_USAGE);
}

/* "64M", "1G", "4096", "512KiB": powers of 1024. */
static int parse_size(const char *s, uint64_t *out) {
  char *end;
  errno = 0;
  if (!*s || *s == '-') return -1;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s) return -1;
  unsigned shift = 0;
  switch (*end) {
  case 'k': case 'K': shift = 10; end++; break;
  case 'm': case 'M': shift = 20; end++; break;
  case 'g': case 'G': shift = 30; end++; break;
  case 't': case 'T': shift = 40; end++; break;
  default: break;
  }
  if (shift && (!strcmp(end, "iB") || !strcmp(end, "B"))) end += strlen(end);
  else if (!shift && !strcmp(end, "B")) end++;
  if (*end) return -1;
  if (shift && v > (UINT64_MAX >> shift)) return -1;
  *out = (uint64_t)v << shift;
  return 0;
}

static int parse_uint(const char *s, unsigned long long max,
                      unsigned long long *out) {
  char *end;
  errno = 0;
  if (!*s || *s == '-') return -1;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || *end || v > max) return -1;
  *out = v;
  return 0;
}

static const char *env_nonempty(const char *name) {
  const char *v = getenv(name);
  return v && *v ? v : NULL;
}

/* mkdir -p: parents 0755, the last component @mode. A last component
 * created here gets exactly @mode (chmod after mkdir): the umask must not
 * narrow the documented 0750 of a shared RUNDIR (a umask of 077 made it
 * 0700). An existing directory keeps its mode. */
static int make_dirs(const char *path, mode_t mode) {
  char buf[PATH_MAX];
  if (strlen(path) >= sizeof buf) return -ENAMETOOLONG;
  strcpy(buf, path);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -errno;
    *p = '/';
  }
  if (mkdir(buf, mode) == 0) {
    if (chmod(buf, mode) != 0) return -errno;
  } else if (errno != EEXIST) {
    return -errno;
  }
  struct stat st;
  if (stat(buf, &st) != 0) return -errno;
  if (!S_ISDIR(st.st_mode)) return -ENOTDIR;
  return 0;
}

static void add_uid(struct broker_opts *o, const char *arg) {
  unsigned long long v;
  uid_t uid;
  if (parse_uint(arg, UINT32_MAX - 1, &v) == 0) {
    uid = (uid_t)v;
  } else {
    struct passwd *pw = getpwnam(arg);
    if (!pw) die_usage("--allow-uid %s: no such user", arg);
    uid = pw->pw_uid;
  }
  uid_t *n = realloc(o->allow_uid, (o->n_allow_uid + 1) * sizeof *n);
  if (!n) die_usage("out of memory");
  n[o->n_allow_uid++] = uid;
  o->allow_uid = n;
}

static void add_gid(struct broker_opts *o, const char *arg) {
  unsigned long long v;
  gid_t gid;
  if (parse_uint(arg, UINT32_MAX - 1, &v) == 0) {
    gid = (gid_t)v;
  } else {
    struct group *gr = getgrnam(arg);
    if (!gr) die_usage("--allow-gid %s: no such group", arg);
    gid = gr->gr_gid;
  }
  gid_t *n = realloc(o->allow_gid, (o->n_allow_gid + 1) * sizeof *n);
  if (!n) die_usage("out of memory");
  n[o->n_allow_gid++] = gid;
  o->allow_gid = n;
}

static void parse_options(int argc, char **argv, struct broker_opts *o,
                          int *tmp_rundir) {
  enum {
    O_RUNDIR = 256, O_SHMDIR, O_SIZE, O_SLOTS, O_UID, O_GID, O_FRAME,
    O_OUTPUT, O_WORKERS, O_SWEEP, O_SPIN, O_HASH_N, O_HASH_B
  };
  static const struct option longopts[] = {
      {"name", required_argument, NULL, 'n'},
      {"socket", required_argument, NULL, 's'},
      {"rundir", required_argument, NULL, O_RUNDIR},
      {"shm-dir", required_argument, NULL, O_SHMDIR},
      {"size", required_argument, NULL, O_SIZE},
      {"reader-slots", required_argument, NULL, O_SLOTS},
      {"allow-uid", required_argument, NULL, O_UID},
      {"allow-gid", required_argument, NULL, O_GID},
      {"max-frame", required_argument, NULL, O_FRAME},
      {"max-output", required_argument, NULL, O_OUTPUT},
      {"workers", required_argument, NULL, O_WORKERS},
      {"hash-cache-entries", required_argument, NULL, O_HASH_N},
      {"hash-cache-bytes", required_argument, NULL, O_HASH_B},
      {"sweep-ms", required_argument, NULL, O_SWEEP},
      {"spin-us", required_argument, NULL, O_SPIN},
      {"quiet", no_argument, NULL, 'q'},
      {"help", no_argument, NULL, 'h'},
      {"version", no_argument, NULL, 'V'},
      {NULL, 0, NULL, 0},
  };
  *o = (struct broker_opts){.name = "default",
                            .max_frame = BROKER_DEFAULT_MAX_FRAME,
                            .max_output = BROKER_DEFAULT_MAX_OUTPUT,
                            .sweep_ms = BROKER_DEFAULT_SWEEP_MS,
                            .spin_us = BROKER_DEFAULT_SPIN_US,
                            .workers = BROKER_DEFAULT_WORKERS,
                            .hash_cache_entries = BROKER_DEFAULT_HASH_ENTRIES,
                            .hash_cache_bytes = BROKER_DEFAULT_HASH_BYTES};
  const char *socket_opt = NULL, *rundir_opt = NULL, *shm_opt = NULL;
  int ch;
  unsigned long long v;
  while ((ch = getopt_long(argc, argv, "n:s:qhV", longopts, NULL)) != -1) {
    switch (ch) {
    case 'n': o->name = optarg; break;
    case 's': socket_opt = optarg; break;
    case O_RUNDIR: rundir_opt = optarg; break;
    case O_SHMDIR: shm_opt = optarg; break;
    case O_SIZE:
      if (parse_size(optarg, &o->size) || o->size < SHM_MIN_SIZE ||
          o->size > SHM_MAX_SIZE)
        die_usage("--size %s: expected a size between 4M and 64T (suffixes "
                  "k, M, G, T)", optarg);
      break;
    case O_SLOTS:
      if (parse_uint(optarg, SHM_MAX_READER_SLOTS, &v) || v == 0)
        die_usage("--reader-slots %s: expected 1..%u", optarg,
                  SHM_MAX_READER_SLOTS);
      o->reader_slots = (uint32_t)v;
      break;
    case O_UID: add_uid(o, optarg); break;
    case O_GID: add_gid(o, optarg); break;
    case O_FRAME:
      if (parse_size(optarg, &o->max_frame) ||
          o->max_frame < BROKER_MIN_MAX_FRAME ||
          o->max_frame > BROKER_MAX_MAX_FRAME)
        die_usage("--max-frame %s: expected 64k .. 2047M", optarg);
      break;
    case O_OUTPUT:
      if (parse_size(optarg, &o->max_output) ||
          o->max_output < BROKER_MIN_MAX_OUTPUT ||
          o->max_output > (1ull << 40))
        die_usage("--max-output %s: expected at least 64k", optarg);
      break;
    case O_WORKERS:
      if (parse_uint(optarg, 1024, &v) || v == 0)
        die_usage("--workers %s: expected 1..1024", optarg);
      o->workers = (unsigned)v;
      break;
    case O_HASH_N:
      if (parse_uint(optarg, 1u << 26, &v))
        die_usage("--hash-cache-entries %s: expected 0..67108864", optarg);
      o->hash_cache_entries = v;
      break;
    case O_HASH_B:
      if (parse_size(optarg, &o->hash_cache_bytes) ||
          o->hash_cache_bytes > (1ull << 34))
        die_usage("--hash-cache-bytes %s: expected at most 16G (suffixes k, "
                  "M, G)", optarg);
      break;
    case O_SWEEP:
      if (parse_uint(optarg, 60000, &v) || v < 10)
        die_usage("--sweep-ms %s: expected 10..60000", optarg);
      o->sweep_ms = (unsigned)v;
      break;
    case O_SPIN:
      if (parse_uint(optarg, 100000, &v))
        die_usage("--spin-us %s: expected 0..100000", optarg);
      o->spin_us = (unsigned)v;
      break;
    case 'q': o->quiet = 1; break;
    case 'h': fputs(usage_text, stdout); exit(0);
    case 'V': printf("shoald %s\n", SHOAL_VERSION_STRING); exit(0);
    default: die_usage("unknown option");
    }
  }
  if (optind < argc) die_usage("unexpected argument '%s'", argv[optind]);
  char probe[16];
  if (shm_object_path(probe, 1, o->name, "/", "data") == SHOAL_EINVAL)
    die_usage("--name %s: a store name is 1 to 64 of [A-Za-z0-9._-], not "
              "starting with '.'", o->name);

  /* RUNDIR */
  static char rundir[PATH_MAX];
  const char *rd = rundir_opt ? rundir_opt : env_nonempty("SHOAL_RUNDIR");
  *tmp_rundir = 0;
  if (rd) {
    snprintf(rundir, sizeof rundir, "%s", rd);
  } else if (env_nonempty("XDG_RUNTIME_DIR")) {
    snprintf(rundir, sizeof rundir, "%s/shoal", getenv("XDG_RUNTIME_DIR"));
  } else {
    snprintf(rundir, sizeof rundir, "/tmp/shoal-%u", (unsigned)getuid());
    *tmp_rundir = 1;
  }
  o->rundir = rundir;

  /* socket */
  static char sock[PATH_MAX];
  const char *sp = socket_opt ? socket_opt : env_nonempty("SHOAL_SOCKET");
  int sn = sp ? snprintf(sock, sizeof sock, "%s", sp)
              : snprintf(sock, sizeof sock, "%s/%s.sock", rundir, o->name);
  if (sn < 0 || (size_t)sn >= sizeof sock) die_usage("socket path too long");
  o->socket_path = sock;
  if (strlen(sock) >= sizeof(((struct sockaddr_un *)0)->sun_path))
    die_usage("socket path %s is longer than a Unix socket allows (107 "
              "bytes); use a shorter --rundir or --socket", sock);

  /* shm dir: made absolute later (it must exist) */
  o->shm_dir = shm_opt ? shm_opt : env_nonempty("SHOAL_SHM_DIR");
  if (!o->shm_dir) o->shm_dir = "/dev/shm";
}

/* Take RUNDIR/NAME.lock; on success the pid is written into it. */
static int take_lock(const struct broker_opts *o) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/%s.lock", o->rundir, o->name);
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
  if (fd < 0) {
    broker_log("fatal event=lock path=%s reason=\"%s\"", path,
               strerror(errno));
    exit(1);
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int e = errno;
    if (e == EWOULDBLOCK) {
      char buf[32] = "";
      ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
      long holder = n > 0 ? strtol(buf, NULL, 10) : 0;
      if (holder > 0)
        broker_log("refused reason=\"another shoald (pid %ld) already serves "
                   "store %s (it holds %s)\" fix=\"stop that broker first, "
                   "or use another --name\"",
                   holder, o->name, path);
      else
        broker_log("refused reason=\"another shoald already serves store %s "
                   "(it holds %s)\" fix=\"stop that broker first, or use "
                   "another --name\"",
                   o->name, path);
      exit(EXIT_RUNNING);
    }
    broker_log("fatal event=lock path=%s reason=\"flock: %s\"", path,
               strerror(e));
    exit(1);
  }
  char buf[32];
  int n = snprintf(buf, sizeof buf, "%d\n", (int)getpid());
  if (ftruncate(fd, 0) != 0 || pwrite(fd, buf, (size_t)n, 0) != n)
    broker_log("warning event=lock path=%s reason=\"could not record the "
               "pid: %s\"", path, strerror(errno));
  return fd; /* held (and kept open) until exit */
}

/* Bind RUNDIR/NAME.sock, mode 0660. Called with the lock held. */
static int open_socket(const struct broker_opts *o) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s", o->socket_path);
  struct stat st;
  if (lstat(o->socket_path, &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      broker_log("fatal event=socket path=%s reason=\"exists and is not a "
                 "socket\" fix=\"remove it or choose another --socket\"",
                 o->socket_path);
      return -1;
    }
    /* Stale (a crashed broker's) unless someone answers on it: a broker
     * of another RUNDIR pointed at the same --socket. */
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof sa) == 0) {
      close(probe);
      broker_log("refused event=socket path=%s reason=\"another process "
                 "listens on it\" fix=\"stop it, or use another --socket\"",
                 o->socket_path);
      exit(EXIT_RUNNING);
    }
    if (probe >= 0) close(probe);
    if (unlink(o->socket_path) != 0 && errno != ENOENT) {
      broker_log("fatal event=socket path=%s reason=\"removing the stale "
                 "socket: %s\"", o->socket_path, strerror(errno));
      return -1;
    }
    broker_log("stale_socket_removed path=%s", o->socket_path);
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    broker_log("fatal event=socket reason=\"socket: %s\"", strerror(errno));
    return -1;
  }
  mode_t old = umask(0117); /* the socket file is born 0660 */
  int r = bind(fd, (struct sockaddr *)&sa, sizeof sa);
  int e = errno;
  umask(old);
  if (r != 0) {
    broker_log("fatal event=socket path=%s reason=\"bind: %s\"",
               o->socket_path, strerror(e));
    close(fd);
    return -1;
  }
  (void)chmod(o->socket_path, 0660);
  if (listen(fd, 4096) != 0) { /* the kernel caps it at somaxconn */
    broker_log("fatal event=socket path=%s reason=\"listen: %s\"",
               o->socket_path, strerror(errno));
    close(fd);
    unlink(o->socket_path);
    return -1;
  }
  return fd;
}

/* Many clients each hold a connection: use the hard limit. */
static void raise_nofile(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    (void)setrlimit(RLIMIT_NOFILE, &rl);
  }
}

int main(int argc, char **argv) {
  static struct broker B;
  struct broker *b = &B;
  int tmp_rundir;
  parse_options(argc, argv, &b->opt, &tmp_rundir);
  b->pid = getpid();
  b->uid = getuid();
  b->start_ms = broker_mono_ms();
  b->epfd = b->listen_fd = b->signal_fd = b->timer_fd = -1;
  signal(SIGPIPE, SIG_IGN); /* sends use MSG_NOSIGNAL as well */
  raise_nofile();

  /* RUNDIR: private, or group-traversable when other users are allowed */
  int shared = b->opt.n_allow_uid || b->opt.n_allow_gid;
  int err = make_dirs(b->opt.rundir, shared ? 0750 : 0700);
  if (err) {
    broker_log("fatal event=rundir path=%s reason=\"%s\" fix=\"create it or "
               "set --rundir / SHOAL_RUNDIR\"",
               b->opt.rundir, strerror(-err));
    return 1;
  }
  if (tmp_rundir) {
    /* /tmp is shared: a directory planted by another user must not hold
     * our socket. */
    struct stat st;
    if (lstat(b->opt.rundir, &st) != 0 || !S_ISDIR(st.st_mode) ||
        st.st_uid != b->uid) {
      broker_log("fatal event=rundir path=%s reason=\"not a directory owned "
                 "by uid %u\" fix=\"remove it or set --rundir\"",
                 b->opt.rundir, (unsigned)b->uid);
      return 1;
    }
  }
  int lock_fd = take_lock(&b->opt);

  /* the shared objects' directory, absolute: clients get it in Hello */
  static char shm_dir[PATH_MAX];
  if (!realpath(b->opt.shm_dir, shm_dir)) {
    broker_log("fatal event=shm_dir path=%s reason=\"%s\" fix=\"create it, "
               "or set --shm-dir / SHOAL_SHM_DIR\"",
               b->opt.shm_dir, strerror(errno));
    return 1;
  }
  b->opt.shm_dir = shm_dir;
  if (shm_object_path(b->data_object, sizeof b->data_object, b->opt.name,
                      shm_dir, "data") ||
      shm_object_path(b->readers_object, sizeof b->readers_object,
                      b->opt.name, shm_dir, "readers")) {
    broker_log("fatal event=shm_dir path=%s reason=\"path too long\"",
               shm_dir);
    return 1;
  }
  int existed = access(b->data_object, F_OK) == 0;
  shm_config cfg = {.name = b->opt.name,
                    .dir = shm_dir,
                    .size = b->opt.size,
                    .reader_slots = b->opt.reader_slots};
  err = shm_store_open(&b->store, &cfg, SHM_CREATE);
  if (err == SHOAL_ELOCKED) {
    broker_log("refused reason=\"store %s in %s already has a writer (another "
               "shoald, maybe with another RUNDIR): %s\" fix=\"stop that "
               "broker first, or use another --name\"",
               b->opt.name, shm_dir, shm_store_lasterr(NULL));
    return EXIT_RUNNING;
  }
  if (err) {
    broker_log("fatal event=store_open status=%s detail=\"%s\" hint=\"%s\"",
               shoal_errname(err), shm_store_lasterr(NULL),
               shoal_strerror(err));
    return 1;
  }
  err = shm_store_view(b->store, &b->view);
  if (err) {
    broker_log("fatal event=store_view status=%s reason=\"%s\"",
               shoal_errname(err), shoal_strerror(err));
    shm_store_close(b->store, 1);
    return 1;
  }
  b->max_value = b->opt.max_frame - BROKER_FRAME_OVERHEAD;
  if (b->max_value > SHM_VALUE_MAX) b->max_value = SHM_VALUE_MAX;

  b->listen_fd = open_socket(&b->opt);
  if (b->listen_fd < 0) {
    shm_view_close(b->view);
    shm_store_close(b->store, 1);
    return 1;
  }
  broker_grant_access(b);
  /* 256 KiB covers every small request, and a depth-64 pipeline's
   * frames decode one after another in it without a malloc. */
  if (broker_arena_init(&b->arena, 256u << 10) != 0 ||
      (err = broker_loop_init(b)) != 0 || (err = broker_files_init(b)) != 0) {
    broker_log("fatal event=loop_init reason=\"%s\"",
               strerror(err ? -err : ENOMEM));
    unlink(b->opt.socket_path);
    shm_view_close(b->view);
    shm_store_close(b->store, 1);
    return 1;
  }

  shm_stats st;
  shm_store_stats(b->store, &st);
  broker_log("start version=%s name=%s store=%s size=%llu keys=%llu "
             "commit_seq=%llu shm_dir=%s socket=%s rundir=%s max_frame=%llu "
             "max_output=%llu reader_slots_claimed=%llu allow_uid=%zu "
             "allow_gid=%zu",
             SHOAL_VERSION_STRING, b->opt.name,
             existed ? "attached(recovered)" : "created",
             (unsigned long long)st.size, (unsigned long long)st.keys,
             (unsigned long long)st.commit_seq, shm_dir, b->opt.socket_path,
             b->opt.rundir, (unsigned long long)b->opt.max_frame,
             (unsigned long long)b->opt.max_output,
             (unsigned long long)st.readers_claimed, b->opt.n_allow_uid,
             b->opt.n_allow_gid);
  uint64_t asked = b->opt.size;
  if (existed && asked &&
      (asked > st.size ? asked - st.size : st.size - asked) >= SHM_MIN_SIZE)
    broker_log("note event=size detail=\"store %s already exists with %llu "
               "bytes; --size %llu applies to new stores only (to recreate "
               "it, stop shoald and remove %s/shoal.%s.*)\"",
               b->opt.name, (unsigned long long)st.size,
               (unsigned long long)asked, shm_dir, b->opt.name);
  sd_notifyf(0, "READY=1\nSTATUS=serving store %s on %s\nMAINPID=%d",
             b->opt.name, b->opt.socket_path, (int)b->pid);
  broker_log("ready socket=%s", b->opt.socket_path);

  int rc = broker_loop_run(b) == 0 ? 0 : 1;

  if (!b->stopping) sd_notify(0, "STOPPING=1");
  broker_loop_shutdown(b);
  broker_log_stats(b, "stopped");
  shm_view_close(b->view);
  shm_store_close(b->store, 1);
  if (!b->stopping) unlink(b->opt.socket_path); /* else done when it began */
  broker_arena_free(&b->arena);
  close(lock_fd); /* drops the flock; the file stays (unlinking races) */
  free(b->opt.allow_uid);
  free(b->opt.allow_gid);
  return rc;
}
