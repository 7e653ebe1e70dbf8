/*
 * arena.c - the per-frame bump allocator behind protobuf-c's unpack.
 *
 * Why: protobuf-c allocates the Request, its body and a copy of every bytes
 * field separately; with malloc that is three or four calls per put. The
 * loop decodes one frame at a time on its one thread, so all of a frame's
 * memory can come from one arena that is reset (not freed piecewise) once
 * the frame's reply is packed: decoding a small request touches no malloc
 * at all. protobuf_c_message_free_unpacked is never called on arena
 * memory; the free hook is a no-op.
 *
 * Bounds: the first block (kept across frames) covers every small request;
 * anything larger gets a block of its own from malloc, released by the
 * next reset. What one frame may allocate is capped by a budget set before
 * it is decoded (2 x its size + BROKER_DECODE_SLACK, and its size is
 * already checked against --max-frame); past it, allocations fail and the
 * frame is refused.
 */
#include <stdint.h>
#include <stdlib.h>

#include "broker-internal.h"

struct broker_arena_block {
  struct broker_arena_block *next;
  size_t cap;
  /* then the memory, max_align_t aligned */
  _Alignas(16) char mem[];
};

#define ARENA_ALIGN 16u

static void *pb_alloc(void *data, size_t n) {
  return broker_arena_alloc(data, n);
}

static void pb_free(void *data, void *p) {
  (void)data;
  (void)p; /* released by broker_arena_reset */
}

int broker_arena_init(struct broker_arena *a, size_t cap) {
  *a = (struct broker_arena){0};
  a->base = malloc(cap);
  if (!a->base) return -1;
  a->base_cap = cap;
  a->cur = a->base;
  a->cur_cap = cap;
  a->pb.alloc = pb_alloc;
  a->pb.free = pb_free;
  a->pb.allocator_data = a;
  return 0;
}

void broker_arena_budget(struct broker_arena *a, size_t budget) {
  a->budget = budget;
}

void *broker_arena_alloc(struct broker_arena *a, size_t n) {
  if (n > SIZE_MAX / 2) {
    a->failed = a->over_budget = 1;
    return NULL;
  }
  n = (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
  if (n == 0) n = ARENA_ALIGN;
  if (a->budget && a->total + n > a->budget) {
    a->failed = a->over_budget = 1;
    return NULL;
  }
  a->total += n;
  if (n <= a->cur_cap - a->used) {
    void *p = a->cur + a->used;
    a->used += n;
    return p;
  }
  /* A new block: at least the size of the first, so many medium requests
   * (a batch's ops) still bump; a big one (a 16 MiB value) gets exactly
   * what it needs. */
  size_t cap = n > a->base_cap ? n : a->base_cap;
  struct broker_arena_block *blk = malloc(sizeof *blk + cap);
  if (!blk) {
    a->failed = 1;
    return NULL;
  }
  blk->next = a->extra;
  blk->cap = cap;
  a->extra = blk;
  /* Keep bumping in the block with more room left. */
  if (cap - n >= a->cur_cap - a->used) {
    a->cur = blk->mem;
    a->cur_cap = cap;
    a->used = n;
  }
  return blk->mem;
}

void broker_arena_reset(struct broker_arena *a) {
  while (a->extra) {
    struct broker_arena_block *nx = a->extra->next;
    free(a->extra);
    a->extra = nx;
  }
  a->cur = a->base;
  a->cur_cap = a->base_cap;
  a->used = 0;
  a->total = 0;
  a->budget = 0;
  a->failed = 0;
  a->over_budget = 0;
}

void broker_arena_free(struct broker_arena *a) {
  broker_arena_reset(a);
  free(a->base);
  *a = (struct broker_arena){0};
}
