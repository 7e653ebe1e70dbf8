/* consumer.c - a program outside the tree, built against an installed
 * libshoal (pkg-config or find_package): writes through the broker, reads
 * the value back from shared memory. argv[1]: the broker's socket. */
#include <stdio.h>
#include <string.h>

#include <shoal/shoal.h>

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: consumer SOCKET\n");
    return 2;
  }
  shoal_options o = {0};
  o.socket = argv[1];
  o.client = "install-smoke";
  shoal *c;
  int err = shoal_open(&c, NULL, &o);
  if (err) {
    fprintf(stderr, "shoal_open: %s (%s)\n", shoal_strerror(err), shoal_last_error(NULL));
    return 1;
  }
  uint64_t ver = 0;
  if ((err = shoal_put(c, "installed", 9, "yes", 3, &ver)) != 0) {
    fprintf(stderr, "shoal_put: %s (%s)\n", shoal_strerror(err), shoal_last_error(c));
    return 1;
  }
  if ((err = shoal_read_begin(c)) != 0) return 1;
  shoal_val v;
  err = shoal_get(c, "installed", 9, &v);
  int ok = err == 0 && v.len == 3 && memcmp(v.data, "yes", 3) == 0 && v.version == ver;
  shoal_read_end(c);
  shoal_close(c);
  if (!ok) {
    fprintf(stderr, "get after put: %s\n", shoal_strerror(err));
    return 1;
  }
  printf("libshoal %s: put version %llu read back\n", shoal_version(), (unsigned long long)ver);
  return 0;
}
