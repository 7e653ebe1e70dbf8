/*
 * atomic-internal.h - the one door for shared-memory accesses (STYLE 7).
 *
 * Every load or store of a field that another process may touch at the same
 * time goes through these wrappers, with its memory order spelled out. They
 * are the GCC/Clang __atomic builtins (the C11 memory model on plain
 * fixed-width fields: the shared structs are a file format, so their fields
 * cannot be _Atomic-qualified). No volatile anywhere.
 *
 * Each acquire names the release it pairs with at the call site, and each
 * full fence names the fence on the other side (see shm/read.c, shm/store.c).
 */
#ifndef SHM_ATOMIC_INTERNAL_H
#define SHM_ATOMIC_INTERNAL_H

#include <stdint.h>

#define shm_load_relaxed(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define shm_load_acquire(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define shm_store_relaxed(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define shm_store_release(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define shm_fetch_add_relaxed(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)
#define shm_fetch_add_release(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELEASE)
#define shm_fetch_sub_release(p, v) __atomic_fetch_sub((p), (v), __ATOMIC_RELEASE)
/* Full barrier: orders earlier stores before later loads (the store-buffer
 * pattern of read_begin vs. reclamation, and of waiters vs. wakers). */
#define shm_fence_seq_cst() __atomic_thread_fence(__ATOMIC_SEQ_CST)
/* smp_wmb / smp_rmb of a seqcount (liburcu's cmm_smp_wmb/cmm_smp_rmb) */
#define shm_fence_release() __atomic_thread_fence(__ATOMIC_RELEASE)
#define shm_fence_acquire() __atomic_thread_fence(__ATOMIC_ACQUIRE)
#define shm_cas_acq_rel(p, expp, v)                                            \
  __atomic_compare_exchange_n((p), (expp), (v), 0, __ATOMIC_ACQ_REL,           \
                              __ATOMIC_ACQUIRE)

#define shm_prefetch(p) __builtin_prefetch((p), 0, 3)
#define shm_likely(x) __builtin_expect(!!(x), 1)
#define shm_unlikely(x) __builtin_expect(!!(x), 0)

#endif
