/*
 * json.c - the streaming JSON writer of shoal-inspect (see inspect.h).
 * Strings go through the CLI's escaping and encoding rule (tools/cli/out.c),
 * so `shoal --json` and `shoal-inspect --json` spell bytes the same way.
 */
#include <math.h>
#include <string.h>

#include "inspect.h"
#include "out.h"

void j_begin(jw *j, FILE *f) {
  j->f = f;
  j->depth = 0;
  j->first[0] = 1;
}

/* a comma unless first at this level, then "key": when given */
static void sep(jw *j, const char *key) {
  if (!j->first[j->depth]) putc(',', j->f);
  j->first[j->depth] = 0;
  if (key) fprintf(j->f, "\"%s\":", key);
}

static void open_(jw *j, const char *key, char c) {
  sep(j, key);
  putc(c, j->f);
  if (j->depth + 1 < (int)sizeof j->first) j->depth++;
  j->first[j->depth] = 1;
}

void j_obj(jw *j, const char *key) { open_(j, key, '{'); }
void j_arr(jw *j, const char *key) { open_(j, key, '['); }

void j_end(jw *j, char close) {
  putc(close, j->f);
  if (j->depth > 0) j->depth--;
  if (j->depth == 0) {
    putc('\n', j->f);
    j->first[0] = 1;
  }
}

void j_u64(jw *j, const char *key, uint64_t v) {
  sep(j, key);
  fprintf(j->f, "%llu", (unsigned long long)v);
}

void j_i64(jw *j, const char *key, int64_t v) {
  sep(j, key);
  fprintf(j->f, "%lld", (long long)v);
}

void j_dbl(jw *j, const char *key, double v) {
  sep(j, key);
  if (isfinite(v))
    fprintf(j->f, "%.6g", v);
  else
    fputs("null", j->f);
}

void j_bool(jw *j, const char *key, int v) {
  sep(j, key);
  fputs(v ? "true" : "false", j->f);
}

void j_null(jw *j, const char *key) {
  sep(j, key);
  fputs("null", j->f);
}

void j_str(jw *j, const char *key, const char *s) {
  sep(j, key);
  size_t n = strlen(s);
  if (cli_utf8_valid(s, n))
    cli_json_string(j->f, s, n);
  else
    cli_json_base64(j->f, s, n);
}

void j_bytes(jw *j, const char *key, const char *enckey, const void *p,
             size_t n) {
  sep(j, NULL);
  cli_json_bytes_field(j->f, key, enckey, p, n);
}
