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

#include <stdio.h>
#include <stdlib.h>

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

#endif
