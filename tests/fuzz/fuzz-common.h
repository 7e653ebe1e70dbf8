/*
 * fuzz-common.h - helpers shared by the libFuzzer harnesses (tests/fuzz).
 *
 * FUZZ_PEER_PID: the pid every fuzzed connection claims to be (its
 * SO_PEERCRED stand-in, and the Hello.pid of the seed corpus). pid 1
 * always exists, so Hello leases a reader slot as for a live client, and
 * it is never the harness's own pid, so Hello.resume_slot can never adopt
 * the slot of the broker's own view. Seeds therefore replay identically
 * in every process.
 */
#ifndef SHOAL_FUZZ_COMMON_H
#define SHOAL_FUZZ_COMMON_H

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#define FUZZ_PEER_PID 1
#define FUZZ_STORE "fuzz"

/* The first byte of a request-harness input. */
#define FUZZ_REQ_HELLO_DONE 0x1u /* the connection already said Hello */
#define FUZZ_REQ_EOF 0x2u        /* the peer shut its side after the bytes */

/* Setup failures are harness bugs, not findings: stop loudly. */
#define FUZZ_CHECK(cond)                                                       \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "fuzz harness setup failed: %s (%s:%d)\n", #cond,       \
              __FILE__, __LINE__);                                             \
      abort();                                                                 \
    }                                                                          \
  } while (0)

static int fuzz__rm(const char *p, const struct stat *sb, int flag,
                    struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  remove(p);
  return 0;
}

/* A private directory for one fuzzing process, made with mkdtemp:
 * /dev/shm (else /tmp) / shoal-fuzz-HARNESS-PID-XXXXXX. A process that
 * crashes, times out or is killed never runs its atexit cleanup, and its
 * stores stay behind (12 MiB for segment); libFuzzer's -fork and -jobs
 * modes end such processes all the time. So each process first removes
 * the directories of this harness whose pid no longer exists (a live or
 * reused pid keeps its directory: the sweep is conservative). */
static inline void fuzz_make_dir(char *out, size_t cap, const char *harness) {
  const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  char prefix[64];
  size_t pl = (size_t)snprintf(prefix, sizeof prefix, "shoal-fuzz-%s-",
                               harness);
  DIR *d = opendir(base);
  if (d) {
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
      if (strncmp(de->d_name, prefix, pl) != 0) continue;
      char *end;
      long pid = strtol(de->d_name + pl, &end, 10);
      if (end == de->d_name + pl || *end != '-' || pid <= 0) continue;
      if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
      char path[512];
      snprintf(path, sizeof path, "%s/%s", base, de->d_name);
      (void)nftw(path, fuzz__rm, 16, FTW_DEPTH | FTW_PHYS);
    }
    closedir(d);
  }
  snprintf(out, cap, "%s/%s%ld-XXXXXX", base, prefix, (long)getpid());
  FUZZ_CHECK(mkdtemp(out) != NULL);
}

#endif
