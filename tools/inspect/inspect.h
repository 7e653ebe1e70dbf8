/*
 * inspect.h - shared pieces of shoal-inspect: options, the JSON writer and
 * the section runner (main.c holds the commands).
 */
#ifndef SHOAL_INSPECT_H
#define SHOAL_INSPECT_H

#include <stdint.h>
#include <stdio.h>

#include "shoal/shm.h"

/* Exit status (the --help page documents them; keep in sync). */
enum {
  EXIT_OK = 0,
  EXIT_NOTFOUND = 1, /* get: no such key */
  EXIT_CORRUPT = 2,  /* corrupt, foreign or other-format segment; check
                        found problems */
  EXIT_NOSTORE = 3,  /* cannot open the store: missing, permission */
  EXIT_USAGE = 64,   /* EX_USAGE */
};

/* A minimal streaming JSON writer: keys are ASCII literals; values are
 * numbers, booleans, null, strings (UTF-8 checked) and byte strings (the
 * CLI's rule: a string when valid UTF-8, else base64 + "..._encoding"). */
typedef struct jw {
  FILE *f;
  int depth;
  unsigned char first[32];
} jw;

void j_begin(jw *j, FILE *f);
void j_obj(jw *j, const char *key); /* key NULL inside arrays / at top */
void j_arr(jw *j, const char *key);
void j_end(jw *j, char close); /* '}' or ']' */
void j_u64(jw *j, const char *key, uint64_t v);
void j_i64(jw *j, const char *key, int64_t v);
void j_dbl(jw *j, const char *key, double v);
void j_bool(jw *j, const char *key, int v);
void j_null(jw *j, const char *key);
void j_str(jw *j, const char *key, const char *s);
void j_bytes(jw *j, const char *key, const char *enckey, const void *p,
             size_t n);

#endif
