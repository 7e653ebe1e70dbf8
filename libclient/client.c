/*
 * client.c - libshoal's handles and its read path (DESIGN.md sections 2, 4,
 * 8). The connection lives in conn.c, the writes in write.c.
 *
 * A handle is two things:
 *   - a connection to the broker (conn.c), used by writes and broker
 *     requests only; and
 *   - a shm_view: the store's data object mapped read-only, plus the reader
 *     slot the broker leased to this process in the readers object.
 * Reads (sections, get, get_many, scan, get_copy, wait) go straight to the
 * view: no system call, no lock, no socket; shoal_get is shm_get plus three
 * predictable branches. So reads keep working while the broker is down or
 * restarting: the mapping stays valid, whatever happens to the socket.
 *
 * Ordering: the broker replies to a write only after its commit is
 * published (release store of commit_seq), and shoal_read_begin loads
 * commit_seq with acquire (shm/read.c), so a section begun after a write
 * returned sees it, in this process or any other that learned of it.
 *
 * Reader slot rule. The slot is leased by the broker (Hello) and adopted
 * with shm_view_attach_slot; the handle releases it itself at close
 * (shm_view_detach_slot(v, 1)): the broker frees only slots of dead
 * processes. On a reconnect the client asks to resume its slot; if the
 * broker leases another one, or the store was recreated (other name,
 * directory or data object inode), a new view is mapped at once but
 * adopted only when no section is open (c->nest == 0): at that reconnect,
 * or at the next shoal_read_begin at depth 0 (or get_copy, scan, wait
 * outside a section). A section never changes mapping or slot under its
 * pointers. The replaced slot is not released: the broker leased another
 * because that one no longer records us, and it may belong to someone else
 * by now (even another handle of this process, which has the same pid).
 *
 * Fork rule. A pthread_atfork child handler bumps shoal__fork_gen; each
 * handle records the generation it was opened in, and every call compares
 * (one load and a compare, no getpid() system call on the read path). In a
 * child, every call on an inherited handle fails with SHOAL_EFORKED, and
 * shoal_close frees only the child's copies: it sends nothing on the
 * parent's socket (it only closes its own descriptor) and never writes the
 * parent's slot. If the fork happened inside a section, the child's copy of
 * the view is left mapped rather than closed, since ending that section
 * would write the parent's slot.
 *
 * Threads: a handle is used by one thread at a time; handles are
 * independent. The only globals are the fork generation and the last
 * shoal_open failure (thread-local).
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client-internal.h"

/* shoal_val and shm_val, shoal_key and shm_key describe the same thing;
 * values are copied field by field (no type punning), but keep them in
 * step. */
_Static_assert(sizeof(shoal_val) == sizeof(shm_val), "shoal_val vs shm_val");
_Static_assert(sizeof(shoal_key) == sizeof(shm_key), "shoal_key vs shm_key");

/* ------------------------------------------------------------- fork ----- */

unsigned shoal__fork_gen;

static void on_fork_child(void) {
  __atomic_fetch_add(&shoal__fork_gen, 1, __ATOMIC_RELAXED);
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void register_atfork(void) {
  /* glibc removes the handler if the library is dlclose()d */
  (void)pthread_atfork(NULL, NULL, on_fork_child);
}

/* ----------------------------------------------------------- errors ----- */

static __thread char open_err[SHOAL__ERR_MAX];

int shoal__errf(shoal *c, int err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->err, sizeof c->err, fmt, ap);
  va_end(ap);
  return err;
}

SHOAL_EXPORT const char *shoal_last_error(const shoal *c) {
  return c ? c->err : open_err;
}

int shoal__check_kv(shoal *c, const void *key, size_t klen, const void *val,
                    size_t vlen) {
  if (!key && klen)
    return shoal__errf(c, SHOAL_EINVAL, "key is NULL but klen is %zu", klen);
  if (klen > c->max_key)
    return shoal__errf(c, SHOAL_ETOOBIG,
                       "key of %zu bytes: keys are at most %u bytes", klen,
                       c->max_key);
  if (!val && vlen)
    return shoal__errf(c, SHOAL_EINVAL, "value is NULL but vlen is %zu", vlen);
  if (vlen > c->max_value)
    return shoal__errf(c, SHOAL_ETOOBIG,
                       "value of %zu bytes: this broker takes at most %llu "
                       "(its --max-frame bounds values)",
                       vlen, (unsigned long long)c->max_value);
  return 0;
}

/* --------------------------------------------------------- open/close --- */

static int resolve_socket(shoal *c, const char *name, const shoal_options *o) {
  const char *s =
      (o && o->socket && *o->socket) ? o->socket : getenv("SHOAL_SOCKET");
  char buf[PATH_MAX];
  int n;
  if (s && *s) {
    n = snprintf(buf, sizeof buf, "%s", s);
  } else {
    const char *rd =
        (o && o->rundir && *o->rundir) ? o->rundir : getenv("SHOAL_RUNDIR");
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    if (rd && *rd)
      n = snprintf(buf, sizeof buf, "%s/%s.sock", rd, name);
    else if (xdg && *xdg)
      n = snprintf(buf, sizeof buf, "%s/shoal/%s.sock", xdg, name);
    else
      n = snprintf(buf, sizeof buf, "/tmp/shoal-%u/%s.sock", (unsigned)getuid(),
                   name);
  }
  if (n < 0 || (size_t)n >= sizeof c->sock)
    return shoal__errf(c, -ENAMETOOLONG,
                       "socket path %.200s%s is longer than the %zu bytes a "
                       "Unix socket address holds; use a shorter "
                       "SHOAL_RUNDIR or --socket",
                       buf, n > 200 ? "..." : "", sizeof c->sock - 1);
  memcpy(c->sock, buf, (size_t)n + 1);
  return 0;
}

static void close_view(shm_view *v, int release) {
  if (!v) return;
  shm_view_detach_slot(v, release);
  shm_view_close(v);
}

static void handle_free(shoal *c) {
  shoal__conn_free(c);
  free(c->client);
  free(c->shm_dir);
  free(c->stats_requests);
  free(c->stats_errors);
  free(c);
}

SHOAL_EXPORT int shoal_open(shoal **out, const char *name,
                            const shoal_options *opts) {
  if (!out) return SHOAL_EINVAL;
  *out = NULL;
  open_err[0] = 0;
  (void)pthread_once(&atfork_once, register_atfork);
  char tmp[PATH_MAX];
  if (name &&
      shm_object_path(tmp, sizeof tmp, name, "/", "data") == SHOAL_EINVAL) {
    snprintf(open_err, sizeof open_err,
             "invalid store name \"%.80s\": use 1 to %u of [A-Za-z0-9._-], "
             "not starting with '.'",
             name, SHM_NAME_MAX);
    return SHOAL_EINVAL;
  }
  shoal *c = calloc(1, sizeof *c);
  if (!c) {
    snprintf(open_err, sizeof open_err, "out of memory");
    return -ENOMEM;
  }
  c->gen = __atomic_load_n(&shoal__fork_gen, __ATOMIC_RELAXED);
  c->slot = -1;
  shoal__conn_init(c);
  c->connect_timeout_ms = SHOAL__CONNECT_TIMEOUT_MS;
  c->timeout_ms = SHOAL__TIMEOUT_MS;
  if (opts) {
    if (opts->connect_timeout_ms)
      c->connect_timeout_ms =
          opts->connect_timeout_ms < 0 ? -1 : opts->connect_timeout_ms;
    if (opts->timeout_ms)
      c->timeout_ms = opts->timeout_ms < 0 ? -1 : opts->timeout_ms;
    c->flags = opts->flags;
  }
  c->io_timeout_ms = c->timeout_ms;
  c->max_frame = SHOAL__MAX_FRAME_DEFAULT;
  c->max_value = SHM_VALUE_MAX;
  c->max_key = SHM_KEY_MAX;
  if (name) snprintf(c->want_store, sizeof c->want_store, "%s", name);
  c->client = strdup(opts && opts->client ? opts->client : "libshoal");
  c->shm_dir = strdup("");
  int err = (!c->client || !c->shm_dir)
                ? shoal__errf(c, -ENOMEM, "out of memory")
                : resolve_socket(c, name ? name : "default", opts);
  if (!err) err = shoal__connect(c, 0);
  if (err) {
    snprintf(open_err, sizeof open_err, "%s",
             c->err[0] ? c->err : shoal_strerror(err));
    if (c->view) close_view(c->view, 1);
    handle_free(c);
    return err;
  }
  *out = c;
  return 0;
}

SHOAL_EXPORT void shoal_close(shoal *c) {
  if (!c) return;
  if (shoal__forked(c)) {
    /* An inherited copy: the parent still uses the socket, the slot and
     * the mappings. Close our descriptor, unmap what we can unmap without
     * writing the readers object (the never-used next view, and the view
     * if no section was open at fork), free our memory. */
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    close_view(c->next_view, 0);
    if (c->nest == 0) close_view(c->view, 0);
    handle_free(c);
    return;
  }
  if (c->next_view) { /* the new lease is ours; the old slot is not */
    close_view(c->next_view, 1);
    close_view(c->view, 0);
  } else {
    close_view(c->view, 1); /* ends a section still open */
  }
  handle_free(c);
}

SHOAL_EXPORT int shoal_reader_slot(const shoal *c) {
  if (!c || shoal__forked(c) || !c->view) return -1;
  return shm_view_slot(c->view);
}

SHOAL_EXPORT const char *shoal_store_name(const shoal *c) {
  return c ? c->store : "";
}

/* -------------------------------------------------- Hello and remapping - */

void shoal__adopt_next_view(shoal *c) {
  if (SHOAL_NEVER(c->nest)) return;
  close_view(c->view, 0);
  c->view = c->next_view;
  c->next_view = NULL;
}

/* Give back a slot the broker leased to us that we will not use (best
 * effort: the broker frees slots of live processes only when asked, and
 * the sweep frees it when we exit anyway). */
static void release_lease(const char *store, const char *dir, int slot) {
  shm_view *v;
  if (slot < 0 ||
      shm_view_open(&v, store, *dir ? dir : NULL, SHM_VIEW_NOSLOT) != 0)
    return;
  if (shm_view_attach_slot(v, (unsigned)slot) == 0) shm_view_detach_slot(v, 1);
  shm_view_close(v);
}

/*
 * Take in a HelloReply (at open or after a reconnect): limits, then the
 * mapping. A new view is mapped when there is none yet, when the broker
 * leased another slot, or when the store is another one than the view
 * maps (name, directory, or the data object's inode: a recreated store is
 * a new file renamed into place). See "Reader slot rule" above.
 */
int shoal__on_hello(shoal *c, const Shoal__HelloReply *hr) {
  char path[PATH_MAX];
  const char *store = hr->store ? hr->store : "";
  if (shm_object_path(path, sizeof path, store, "/", "data") != 0)
    return shoal__errf(c, SHOAL_EPROTOCOL,
                       "the broker at %s named an invalid store \"%.80s\"",
                       c->sock, store);
  const char *dir = hr->shm_dir ? hr->shm_dir : "";
  int slot = hr->has_reader_slot ? hr->reader_slot : -1;
  if (c->want_store[0] && strcmp(store, c->want_store) != 0) {
    release_lease(store, dir, slot); /* leased to us, useless to us */
    return shoal__errf(c, SHOAL_EINVAL,
                       "the broker at %s serves store \"%s\", not \"%s\"",
                       c->sock, store, c->want_store);
  }
  if (hr->has_max_frame && hr->max_frame) c->max_frame = hr->max_frame;
  c->max_value = SHM_VALUE_MAX;
  if (hr->has_max_value && hr->max_value && hr->max_value < c->max_value)
    c->max_value = hr->max_value;
  c->max_key = SHM_KEY_MAX;
  if (hr->has_max_key && hr->max_key && hr->max_key < c->max_key)
    c->max_key = hr->max_key;
  if (hr->has_broker_pid) c->broker_pid = hr->broker_pid;
  if (c->flags & SHOAL_OPEN_NO_SLOT) {
    snprintf(c->store, sizeof c->store, "%s", store);
    return 0;
  }

  if (slot < 0)
    return shoal__errf(c, SHOAL_EPROTOCOL,
                       "the broker at %s leased no reader slot", c->sock);
  int err =
      shm_object_path(path, sizeof path, store, *dir ? dir : NULL, "data");
  if (err)
    return shoal__errf(c, err, "store path in %.200s: %s", dir,
                       shoal_strerror(err));
  /* stat before mapping: if the store is replaced in between, the next
   * Hello sees a new inode and remaps once more, never the reverse */
  struct stat st;
  if (stat(path, &st) != 0) {
    int e = errno;
    return shoal__errf(c, e == EACCES ? SHOAL_EDENIED : -e,
                       "stat %s: %s (the broker's --shm-dir must be visible "
                       "to clients)",
                       path, strerror(e));
  }
  if ((c->view || c->next_view) && slot == c->slot &&
      strcmp(store, c->store) == 0 && strcmp(dir, c->shm_dir) == 0 &&
      st.st_dev == c->data_dev && st.st_ino == c->data_ino)
    return 0; /* the usual reconnect: same store, slot resumed */

  char *ndir = strdup(dir);
  if (!ndir) return shoal__errf(c, -ENOMEM, "out of memory");
  shm_view *v;
  err = shm_view_open(&v, store, *dir ? dir : NULL, SHM_VIEW_NOSLOT);
  if (err) {
    free(ndir);
    if (err == -EACCES || err == -EPERM)
      return shoal__errf(c, SHOAL_EDENIED,
                         "map store %s (%s): permission denied: the data "
                         "object is mode 0640 and the readers object 0660; "
                         "run as the broker's user or in its group",
                         store, path);
    return shoal__errf(c, err, "map store %s (%s): %s", store, path,
                       shoal_strerror(err));
  }
  err = shm_view_attach_slot(v, (unsigned)slot);
  if (err) {
    shm_view_close(v);
    free(ndir);
    return shoal__errf(c, err,
                       "reader slot %d of store %s is not leased "
                       "to pid %d",
                       slot, store, (int)getpid());
  }
  if (c->next_view) close_view(c->next_view, 0); /* superseded lease */
  c->next_view = v;
  if (c->nest == 0) shoal__adopt_next_view(c);
  snprintf(c->store, sizeof c->store, "%s", store);
  free(c->shm_dir);
  c->shm_dir = ndir;
  c->data_dev = st.st_dev;
  c->data_ino = st.st_ino;
  c->slot = slot;
  return 0;
}

/* --------------------------------------------------------------- reads -- */

/* Begin a section: the one place a pending view is adopted. */
static inline int begin(shoal *c) {
  if (c->nest == 0 && shoal_unlikely(c->next_view != NULL))
    shoal__adopt_next_view(c);
  if (shoal_unlikely(!c->view)) return SHOAL_ENOREADERS;
  int err = shm_read_begin(c->view);
  if (shoal_likely(!err)) c->nest++;
  return err;
}

static inline void end(shoal *c) {
  c->nest--;
  shm_read_end(c->view);
}

SHOAL_EXPORT int shoal_read_begin(shoal *c) {
  if (shoal_unlikely(!c)) return SHOAL_EINVAL;
  if (shoal__forked(c)) return SHOAL_EFORKED;
  return begin(c);
}

SHOAL_EXPORT void shoal_read_end(shoal *c) {
  if (shoal_unlikely(!c) || shoal__forked(c) || shoal_unlikely(!c->nest))
    return;
  end(c);
}

SHOAL_EXPORT int shoal_get(shoal *c, const void *key, size_t klen,
                           shoal_val *out) {
  if (shoal_unlikely(!c || !out || (!key && klen))) return SHOAL_EINVAL;
  if (shoal__forked(c)) return SHOAL_EFORKED;
  if (shoal_unlikely(!c->nest)) return SHOAL_ENOSECTION;
  shm_val v;
  int err = shm_get(c->view, key, klen, &v);
  if (shoal_likely(!err)) {
    out->data = v.data;
    out->len = v.len;
    out->version = v.version;
    out->expires_at = v.expires_at;
  }
  return err;
}

SHOAL_EXPORT int shoal_get_copy(shoal *c, const void *key, size_t klen,
                                void *buf, size_t cap, size_t *len,
                                uint64_t *version) {
  if (len) *len = 0;
  if (version) *version = 0;
  if (!c || (!key && klen) || (!buf && cap)) return SHOAL_EINVAL;
  if (shoal__forked(c)) return SHOAL_EFORKED;
  int own = c->nest == 0, err;
  if (own && (err = begin(c)) != 0) return err;
  shm_val v;
  err = shm_get(c->view, key, klen, &v);
  if (!err) {
    if (len) *len = v.len;
    if (version) *version = v.version;
    if (v.len > cap)
      err = SHOAL_ETOOBIG;
    else if (v.len)
      memcpy(buf, v.data, v.len);
  }
  if (own) end(c);
  return err;
}

/* Keys and values go through these in groups: big enough that
 * shm_get_many's prefetch pipeline (3 groups of 8) runs full, small enough
 * for the stack. */
#define GM_CHUNK 128

SHOAL_EXPORT int shoal_get_many(shoal *c, size_t n, const shoal_key *keys,
                                shoal_val *out, int *status) {
  if (!c || (n && (!keys || !out || !status)) || n > INT_MAX)
    return SHOAL_EINVAL;
  if (shoal__forked(c)) return SHOAL_EFORKED;
  if (!c->nest) return SHOAL_ENOSECTION;
  for (size_t i = 0; i < n; i++)
    if (!keys[i].data && keys[i].len) return SHOAL_EINVAL;
  shm_key k[GM_CHUNK];
  shm_val v[GM_CHUNK];
  int found = 0;
  for (size_t i = 0; i < n; i += GM_CHUNK) {
    size_t m = n - i < GM_CHUNK ? n - i : GM_CHUNK;
    for (size_t j = 0; j < m; j++) {
      k[j].data = keys[i + j].data;
      k[j].len = keys[i + j].len;
    }
    int r = shm_get_many(c->view, m, k, v, status + i);
    if (r < 0) return r;
    found += r;
    for (size_t j = 0; j < m; j++) {
      if (status[i + j]) continue;
      out[i + j].data = v[j].data;
      out[i + j].len = v[j].len;
      out[i + j].version = v[j].version;
      out[i + j].expires_at = v[j].expires_at;
    }
  }
  return found;
}

struct scan_ctx {
  shoal_scan_fn fn;
  void *arg;
};

static int scan_visit(void *arg, const void *key, size_t klen,
                      const shm_val *v) {
  const struct scan_ctx *s = arg;
  shoal_val sv = {v->data, v->len, v->version, v->expires_at};
  return s->fn(s->arg, key, klen, &sv);
}

SHOAL_EXPORT int shoal_scan(shoal *c, const void *start, size_t slen,
                            const void *end_key, size_t elen, shoal_scan_fn fn,
                            void *arg) {
  if (!c || !fn || (!start && slen) || (!end_key && elen)) return SHOAL_EINVAL;
  if (shoal__forked(c)) return SHOAL_EFORKED;
  int own = c->nest == 0, err;
  if (own && (err = begin(c)) != 0) return err;
  struct scan_ctx s = {fn, arg};
  err = shm_scan(c->view, start, slen, end_key, elen, scan_visit, &s);
  if (own) end(c);
  return err;
}

SHOAL_EXPORT int shoal_scan_prefix(shoal *c, const void *prefix, size_t plen,
                                   shoal_scan_fn fn, void *arg) {
  if (!c || !fn || (!prefix && plen)) return SHOAL_EINVAL;
  if (shoal__forked(c)) return SHOAL_EFORKED;
  if (plen > SHM_KEY_MAX) return SHOAL_ETOOBIG;
  uint8_t bound[SHM_KEY_MAX];
  size_t elen = plen ? shm_prefix_end(prefix, plen, bound) : 0;
  return shoal_scan(c, prefix, plen, elen ? bound : NULL, elen, fn, arg);
}

SHOAL_EXPORT int shoal_wait(shoal *c, const void *key, size_t klen,
                            uint64_t after_version, int timeout_ms,
                            uint64_t *version) {
  if (version) *version = 0;
  if (!c || (!key && klen)) return SHOAL_EINVAL;
  if (shoal__forked(c)) return SHOAL_EFORKED;
  if (c->nest) return SHOAL_EINVAL; /* would wait for itself */
  if (shoal_unlikely(c->next_view != NULL)) shoal__adopt_next_view(c);
  if (!c->view) return SHOAL_ENOREADERS;
  uint64_t ver = 0;
  int err = shm_wait(c->view, key, klen, after_version, timeout_ms, &ver);
  if (version && (err == 0 || err == SHOAL_ETIMEOUT) && ver) {
    /* shm_wait reports a delete by its tombstone's version; shoal.h
     * promises 0 for "absent", which is also what a caller passes back as
     * after_version to wait for the key to exist again */
    shm_val v;
    if (shm_read_begin(c->view) == 0) {
      int g = shm_get(c->view, key, klen, &v);
      if (g == 0)
        ver = v.version;
      else if (g == SHOAL_ENOTFOUND)
        ver = 0;
      shm_read_end(c->view);
    }
  }
  if (version) *version = ver;
  return err;
}

/* ---------------------------------------------------------------- misc -- */

SHOAL_EXPORT size_t shoal_key_max(void) {
  return SHM_KEY_MAX;
}

SHOAL_EXPORT size_t shoal_value_max(const shoal *c) {
  return c ? (size_t)c->max_value : (size_t)SHM_VALUE_MAX;
}

#define SHOAL__STR2(x) #x
#define SHOAL__STR(x) SHOAL__STR2(x)

SHOAL_EXPORT const char *shoal_version(void) {
  return SHOAL__STR(SHOAL_VERSION_MAJOR) "." SHOAL__STR(
      SHOAL_VERSION_MINOR) "." SHOAL__STR(SHOAL_VERSION_PATCH);
}
