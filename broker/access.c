/*
 * access.c - file access for the uids and gids of --allow-uid/--allow-gid.
 *
 * Two gates stand between a client and the store:
 *   1. file permissions: connecting to RUNDIR/NAME.sock needs write access
 *      to it (mode 0660), mapping the data object needs read access (0640),
 *      claiming a reader slot needs write access to the readers object
 *      (0660), and RUNDIR must be searchable;
 *   2. SO_PEERCRED on every accepted connection (loop.c), which refuses
 *      any uid/gid not allowed with SHOAL_EDENIED.
 * The modes above admit the broker's user and group only. So that an
 * allowed uid or gid outside that group passes gate 1 without widening the
 * modes for everybody, the broker grants exactly those ids a POSIX access
 * ACL on the four paths: user:U / group:G entries with rw- on the socket
 * and the readers object, r-- on the data object, --x on RUNDIR. The
 * classic mode bits are unchanged (the ACL mask equals the group bits).
 * Started without allow lists, the broker removes such ACLs, so grants of
 * an earlier run do not linger.
 *
 * ACLs go through the kernel's xattr interface (system.posix_acl_access,
 * the format of linux/posix_acl_xattr.h) so no libacl is needed. A
 * filesystem without ACL support gets a warning naming the alternative
 * (run the clients in the broker's group); SO_PEERCRED still applies.
 * Runs once at startup, on the loop's thread; writes only these xattrs.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "broker-internal.h"

#define ACL_XATTR "system.posix_acl_access"
#define ACL_XATTR_VERSION 2u
enum {
  ACL_TAG_USER_OBJ = 0x01,
  ACL_TAG_USER = 0x02,
  ACL_TAG_GROUP_OBJ = 0x04,
  ACL_TAG_GROUP = 0x08,
  ACL_TAG_MASK = 0x10,
  ACL_TAG_OTHER = 0x20,
};
#define ACL_NO_ID 0xffffffffu

struct acl_entry { /* little-endian on disk; x86-64 and arm64 are LE */
  uint16_t tag;
  uint16_t perm;
  uint32_t id;
};

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

_Static_assert(sizeof(uid_t) == sizeof(uint32_t) &&
                   sizeof(gid_t) == sizeof(uint32_t),
               "ACL entries hold 32-bit ids");

/* Sorted, without duplicates and without @skip: the kernel wants named
 * entries in ascending id order, each once. */
static size_t sorted_ids(uint32_t *out, const uint32_t *ids, size_t n,
                         uint32_t skip) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if (ids[i] != skip) out[k++] = ids[i];
  qsort(out, k, sizeof *out, cmp_u32);
  size_t m = 0;
  for (size_t i = 0; i < k; i++)
    if (!m || out[m - 1] != out[i]) out[m++] = out[i];
  return m;
}

/* Give the allowed ids @perm on @path, whose own mode bits are @mode.
 * Returns 0 or -errno. */
static int grant(const struct broker *b, const char *path, unsigned mode,
                 unsigned perm) {
  size_t nu = b->opt.n_allow_uid, ng = b->opt.n_allow_gid;
  uint32_t *uids = calloc(nu + 1, sizeof *uids);
  uint32_t *gids = calloc(ng + 1, sizeof *gids);
  struct acl_entry *e = calloc(nu + ng + 4, sizeof *e);
  char *buf = malloc(4 + (nu + ng + 4) * sizeof *e);
  int err = 0;
  if (!uids || !gids || !e || !buf) {
    err = -ENOMEM;
    goto out;
  }
  nu = sorted_ids(uids, (const uint32_t *)b->opt.allow_uid, nu,
                  (uint32_t)b->uid);
  ng = sorted_ids(gids, (const uint32_t *)b->opt.allow_gid, ng, ACL_NO_ID);
  unsigned group_obj = (mode >> 3) & 7u;
  size_t n = 0;
  e[n++] = (struct acl_entry){ACL_TAG_USER_OBJ, (uint16_t)((mode >> 6) & 7u), ACL_NO_ID};
  for (size_t i = 0; i < nu; i++)
    e[n++] = (struct acl_entry){ACL_TAG_USER, (uint16_t)perm, uids[i]};
  e[n++] = (struct acl_entry){ACL_TAG_GROUP_OBJ, (uint16_t)group_obj, ACL_NO_ID};
  for (size_t i = 0; i < ng; i++)
    e[n++] = (struct acl_entry){ACL_TAG_GROUP, (uint16_t)perm, gids[i]};
  /* the mask bounds every named entry and the owning group; it shows as
   * the group bits of the mode */
  e[n++] = (struct acl_entry){ACL_TAG_MASK, (uint16_t)(group_obj | perm), ACL_NO_ID};
  e[n++] = (struct acl_entry){ACL_TAG_OTHER, (uint16_t)(mode & 7u), ACL_NO_ID};
  uint32_t version = ACL_XATTR_VERSION;
  memcpy(buf, &version, 4);
  memcpy(buf + 4, e, n * sizeof *e);
  if (setxattr(path, ACL_XATTR, buf, 4 + n * sizeof *e, 0) != 0) err = -errno;
out:
  free(uids);
  free(gids);
  free(e);
  free(buf);
  return err;
}

/* 1 if @path had an access ACL and it is gone now. (Some filesystems
 * answer removexattr of an absent ACL with success, so ask first.) */
static int acl_remove(const char *path) {
  if (getxattr(path, ACL_XATTR, NULL, 0) <= 0) return 0; /* none, or no ACLs */
  return removexattr(path, ACL_XATTR) == 0;
}

void broker_grant_access(struct broker *b) {
  struct stat st;
  unsigned rundir_mode = 0700;
  if (stat(b->opt.rundir, &st) == 0) rundir_mode = st.st_mode & 0777u;
  const struct {
    const char *path;
    unsigned mode, perm;
  } paths[] = {
      {b->opt.socket_path, 0660, 6}, /* connect needs write */
      {b->data_object, 0640, 4},     /* mapped read-only */
      {b->readers_object, 0660, 6},  /* clients claim and write slots */
      {b->opt.rundir, rundir_mode, 1},
  };
  int any = b->opt.n_allow_uid || b->opt.n_allow_gid;
  for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
    if (!any) {
      if (acl_remove(paths[i].path))
        broker_log("access_revoked path=%s detail=\"ACL of an earlier run "
                   "with --allow-uid/--allow-gid removed\"",
                   paths[i].path);
      continue;
    }
    int err = grant(b, paths[i].path, paths[i].mode, paths[i].perm);
    if (err)
      broker_log("warning event=access path=%s reason=\"granting the allowed "
                 "uids/gids access with a POSIX ACL failed: %s\" fix=\"put "
                 "the allowed users in the broker's group (gid %u), or mount "
                 "the filesystem with ACL support\"",
                 paths[i].path, strerror(-err), (unsigned)getgid());
  }
}
