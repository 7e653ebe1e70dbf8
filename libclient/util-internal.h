/*
 * util-internal.h - building the public shoal_lines (shoal.h) in one
 * allocation, for every libshoal file that returns lines: util.c
 * (shoal_util_read_last_n_lines, from futil_tail_fd) and the broker's
 * TailLog replies. Internal (prefix shoal__, hidden).
 */
#ifndef SHOAL_UTIL_INTERNAL_H
#define SHOAL_UTIL_INTERNAL_H

#include <stddef.h>

#include "futil.h"
#include "shoal/shoal.h"

/*
 * shoal__lines_pack - copy @n lines into one new shoal_lines: line i is
 * @line[i] (when @line is not NULL) or @base + @off[i], @len[i] bytes. Each
 * copy is NUL-terminated. @n == 0 gives an empty shoal_lines (not NULL).
 * Returns 0 with *@out set (free with shoal_lines_free), SHOAL_EINVAL
 * (NULL arrays with @n > 0), -ENOMEM, SHOAL_ETOOBIG (sizes overflow).
 */
int shoal__lines_pack(size_t n, const char *const *line, const char *base,
                      const size_t *off, const size_t *len, shoal_lines **out);

/* shoal__lines_pack of a futil_tail_fd result. */
int shoal__lines_from_futil(const futil_lines *fl, shoal_lines **out);

#endif /* SHOAL_UTIL_INTERNAL_H */
