/*
 * shoalgo.h - the C side of the Go binding: static inline helpers over
 * libshoal, included by the cgo preamble of the package's files. No
 * library of its own: everything here is compiled into the Go package.
 */
#ifndef SHOALGO_H
#define SHOALGO_H
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <shoal/shoal.h>

// One libshoal handle and the C memory its calls use. Everything a read
// passes to libshoal lives here, in C memory, so that a cgo call carries no
// Go pointer: no cgo pointer check, and nothing of the caller's escapes to
// the heap because it was handed to C.
enum { GS_SCAN_CHUNK = 128 };

typedef struct gs_ent {
	const void *k;
	size_t klen;
	const void *v;
	size_t vlen;
	uint64_t ver;
} gs_ent;

typedef struct gs_handle {
	shoal *c;
	int begun;         // a View's section has begun (gs_ensure)
	shoal_val val;     // out parameter of gs_get
	uint64_t ver;      // out parameter of the writes
	uint8_t *key;      // key buffer of shoal_key_max() bytes
	// get_many: arrays of gm_cap entries, keys copied into arena
	size_t gm_cap, arena_cap;
	shoal_key *gm_keys;
	shoal_val *gm_vals;
	int *gm_status;
	uint8_t *arena;
	struct gs_scan *scan; // the Tx's outermost Scan (gs_scan_new)
} gs_handle;

// A Scan in progress: one chunk of entries, and the range's bounds. A
// Scan called from another's callback gets its own.
typedef struct gs_scan {
	size_t n, skiplen;
	const void *skip;
	int skipped;
	size_t bounds_cap;
	uint8_t *bounds;
	gs_ent ents[GS_SCAN_CHUNK];
} gs_scan;

static inline gs_scan *gs_scan_new(void) { return calloc(1, sizeof(gs_scan)); }

static inline void gs_scan_free(gs_scan *s) {
	if (!s) return;
	free(s->bounds);
	free(s);
}

// shoal_open, and the reason of a failure: shoal_last_error(NULL) is per OS
// thread, and a goroutine may change threads between two cgo calls, so it
// is read in the same call.
static inline int gs_open(gs_handle **out, const char *name, const char *sock,
                   const char *rundir, int cto, int to, unsigned flags,
                   char *err, size_t cap) {
	*out = NULL;
	err[0] = 0;
	gs_handle *h = calloc(1, sizeof *h);
	if (!h || !(h->key = malloc(shoal_key_max()))) {
		free(h);
		snprintf(err, cap, "out of memory");
		return -ENOMEM;
	}
	shoal_options o;
	memset(&o, 0, sizeof o);
	o.socket = sock;
	o.rundir = rundir;
	o.connect_timeout_ms = cto;
	o.timeout_ms = to;
	o.flags = flags;
	o.client = "libshoal-go";
	int r = shoal_open(&h->c, name, &o);
	if (r) {
		snprintf(err, cap, "%s", shoal_last_error(NULL));
		free(h->key);
		free(h);
		return r;
	}
	*out = h;
	return 0;
}

static inline void gs_close(gs_handle *h) {
	if (!h) return;
	shoal_close(h->c);
	free(h->key);
	free(h->gm_keys);
	free(h->gm_vals);
	free(h->gm_status);
	free(h->arena);
	gs_scan_free(h->scan);
	free(h);
}

// Grow the get_many arrays to n entries and the key arena to bytes.
static inline int gs_gm_reserve(gs_handle *h, size_t n, size_t bytes) {
	if (n > h->gm_cap) {
		size_t c = h->gm_cap ? h->gm_cap : 64;
		while (c < n) c *= 2;
		shoal_key *k = realloc(h->gm_keys, c * sizeof *k);
		if (k) h->gm_keys = k;
		shoal_val *v = realloc(h->gm_vals, c * sizeof *v);
		if (v) h->gm_vals = v;
		int *s = realloc(h->gm_status, c * sizeof *s);
		if (s) h->gm_status = s;
		if (!k || !v || !s) return -ENOMEM;
		h->gm_cap = c;
	}
	if (bytes > h->arena_cap) {
		size_t c = h->arena_cap ? h->arena_cap : 4096;
		while (c < bytes) c *= 2;
		uint8_t *a = realloc(h->arena, c);
		if (!a) return -ENOMEM;
		h->arena = a;
		h->arena_cap = c;
	}
	return 0;
}

static inline int gs_bounds_reserve(gs_scan *s, size_t bytes) {
	if (bytes <= s->bounds_cap) return 0;
	size_t c = s->bounds_cap ? s->bounds_cap : 2048;
	while (c < bytes) c *= 2;
	uint8_t *b = realloc(s->bounds, c);
	if (!b) return -ENOMEM;
	s->bounds = b;
	s->bounds_cap = c;
	return 0;
}

// The hot paths take the handle as an integer (gs_handle is C memory the
// Go side never frees while it is in use): cgo checks pointer arguments
// for Go pointers on every call, integers cost nothing.
#define GS_H(u) ((gs_handle *)(u))

// A View begins its section at its first read, inside that read's cgo
// call: a View costs one call fewer (shoal_read_end is the other). The
// snapshot is still taken after View was called, so what the View
// promises holds: a write that returned before it is visible.
static inline int gs_ensure(gs_handle *h) {
	if (__builtin_expect(h->begun, 1)) return 0;
	int r = shoal_read_begin(h->c);
	if (r == 0) h->begun = 1;
	return r;
}

// One cgo call per Tx.Get. The key is in h->key.
static inline int gs_get(uintptr_t u, size_t klen) {
	gs_handle *h = GS_H(u);
	int r = gs_ensure(h);
	if (__builtin_expect(r != 0, 0)) return r;
	return shoal_get(h->c, h->key, klen, &h->val);
}

// End the View's section, if a read began it.
static inline void gs_end(uintptr_t u) {
	gs_handle *h = GS_H(u);
	if (h->begun) {
		h->begun = 0;
		shoal_read_end(h->c);
	}
}

static inline int gs_get_many(uintptr_t u, size_t n) {
	gs_handle *h = GS_H(u);
	int r = gs_ensure(h);
	if (r) return r;
	return shoal_get_many(h->c, n, h->gm_keys, h->gm_vals, h->gm_status);
}

static inline int gs_scan_visit(void *arg, const void *key, size_t klen,
                         const shoal_val *val) {
	gs_scan *s = arg;
	if (s->skip && !s->skipped) {
		s->skipped = 1;
		if (klen == s->skiplen && memcmp(key, s->skip, klen) == 0) return 0;
	}
	gs_ent *e = &s->ents[s->n++];
	e->k = key;
	e->klen = klen;
	e->v = val->data;
	e->vlen = val->len;
	e->ver = val->version;
	return s->n == GS_SCAN_CHUNK ? 1 : 0;
}

// One chunk of a scan, inside a section (whose snapshot keeps every
// pointer valid until it ends): up to GS_SCAN_CHUNK entries of
// [start, end) into s->ents, the first skipped if it equals skip (the last
// key of the previous chunk, which a resumed scan starts from). Returns 1
// if the chunk is full (more may follow), 0 at the end of the range, or a
// negative code.
static inline int gs_scan_chunk(uintptr_t u, gs_scan *s, const void *start,
                                size_t slen, const void *skip, const void *end,
                                size_t elen) {
	gs_handle *h = GS_H(u);
	s->n = 0;
	s->skip = skip;
	s->skiplen = skip ? slen : 0;
	s->skipped = 0;
	int r = gs_ensure(h);
	if (r) return r;
	return shoal_scan(h->c, start, slen, end, elen, gs_scan_visit, s);
}

static inline int gs_put(gs_handle *h, const void *k, size_t kl, const void *v,
                  size_t vl, uint32_t ttl_ms) {
	return ttl_ms ? shoal_put_ttl(h->c, k, kl, v, vl, ttl_ms, &h->ver)
	              : shoal_put(h->c, k, kl, v, vl, &h->ver);
}

static inline int gs_cas(gs_handle *h, const void *k, size_t kl, uint64_t expect,
                  const void *v, size_t vl) {
	return shoal_cas(h->c, k, kl, expect, v, vl, &h->ver);
}

static inline int gs_wait(gs_handle *h, size_t klen, uint64_t after, int ms) {
	return shoal_wait(h->c, h->key, klen, after, ms, &h->ver);
}
// ------------------------------------------------------------ file ops

// shoal_hash_fd of @path, opened here. O_NONBLOCK so that a FIFO without a
// writer does not block the open (the broker then answers SHOAL_ENOTREG);
// it changes nothing for a regular file. Returns the digest's length or a
// negative code (-errno of open(2) included).
static inline int gs_hash_path(gs_handle *h, const char *path, const char *alg,
                               size_t dlen, void *digest, size_t cap) {
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0) return -errno;
	int r = shoal_hash_fd(h->c, fd, alg, dlen, digest, cap);
	close(fd);
	return r;
}

// The line @i of @l: its bytes and length (cgo can not index C arrays).
static inline const char *gs_line(const shoal_lines *l, size_t i, size_t *len) {
	*len = l->len[i];
	return l->line[i];
}

// A follower of the Go side: the libshoal follower, the event it last
// returned, and an eventfd the Go side writes to stop a wait (ctx
// cancelled, Client closed).
typedef struct gs_follow {
	shoal_follow *f;
	int stopfd;
	int reopen;   // SHOAL_FOLLOW_REOPEN was given
	shoal_follow_event ev;
} gs_follow;

static inline int gs_follow_open(gs_handle *h, const char *path, size_t n,
                                 unsigned flags, gs_follow **out) {
	*out = NULL;
	gs_follow *g = calloc(1, sizeof *g);
	if (!g) return -ENOMEM;
	g->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (g->stopfd < 0) {
		int e = -errno;
		free(g);
		return e;
	}
	g->reopen = (flags & SHOAL_FOLLOW_REOPEN) != 0;
	int r = shoal_follow_open(h->c, path, n, flags, &g->f);
	if (r) {
		close(g->stopfd);
		free(g);
		return r;
	}
	*out = g;
	return 0;
}

// Wake gs_follow_next: it returns 1 from now on. Safe from any thread
// while the follower is open.
static inline void gs_follow_stop(gs_follow *g) {
	uint64_t one = 1;
	ssize_t w = write(g->stopfd, &one, sizeof one);
	(void)w;
}

// The next event into g->ev: 0, 1 when stopped by gs_follow_stop, or a
// negative code that ends the follow. Waits with no timeout of its own:
// first for what the follower already holds (timeout 0), then in poll(2)
// on its descriptor and the stop descriptor together.
//
// The poll is bounded all the same, at 100 ms (libshoal's own
// REOPEN_POLL_MS): while a rotated file's successor is awaited nothing
// arrives on the descriptor, and libshoal looks for the path at each call
// (it reports the rotation once, when the new file is followed).
static inline int gs_follow_next(gs_follow *g) {
	for (;;) {
		struct pollfd p[2] = {{.fd = g->stopfd, .events = POLLIN},
		                      {.fd = shoal_follow_fd(g->f), .events = POLLIN}};
		if (poll(p, 1, 0) > 0) return 1;
		int r = shoal_follow_next(g->f, 0, &g->ev);
		if (r != SHOAL_ETIMEOUT && r != -EINTR) return r;
		r = poll(p, 2, 100);
		if (r < 0 && errno != EINTR) return -errno;
		if (r > 0 && (p[0].revents & POLLIN)) return 1;
	}
}

static inline void gs_follow_close(gs_follow *g) {
	if (!g) return;
	shoal_follow_close(g->f);
	close(g->stopfd);
	free(g);
}
#endif
