/*
 * out.c - JSON string escaping, base64 and UTF-8 validation for the shoal
 * CLI (see out.h for the encoding rule).
 */
#include "out.h"

#include <stdint.h>

int cli_utf8_valid(const void *p, size_t n) {
  const uint8_t *s = p;
  size_t i = 0;
  while (i < n) {
    uint8_t c = s[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t len;
    uint32_t cp, min;
    if ((c & 0xe0) == 0xc0) {
      len = 2;
      cp = c & 0x1f;
      min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3;
      cp = c & 0x0f;
      min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4;
      cp = c & 0x07;
      min = 0x10000;
    } else {
      return 0; /* a continuation byte or 0xf8..0xff where a lead belongs */
    }
    if (n - i < len) return 0;
    for (size_t k = 1; k < len; k++) {
      if ((s[i + k] & 0xc0) != 0x80) return 0;
      cp = (cp << 6) | (s[i + k] & 0x3f);
    }
    if (cp < min) return 0;                      /* overlong */
    if (cp >= 0xd800 && cp <= 0xdfff) return 0;  /* UTF-16 surrogate */
    if (cp > 0x10ffff) return 0;
    i += len;
  }
  return 1;
}

void cli_json_string(FILE *f, const void *p, size_t n) {
  static const char hex[] = "0123456789abcdef";
  const uint8_t *s = p;
  putc('"', f);
  for (size_t i = 0; i < n; i++) {
    uint8_t c = s[i];
    switch (c) {
    case '"': fputs("\\\"", f); break;
    case '\\': fputs("\\\\", f); break;
    case '\b': fputs("\\b", f); break;
    case '\f': fputs("\\f", f); break;
    case '\n': fputs("\\n", f); break;
    case '\r': fputs("\\r", f); break;
    case '\t': fputs("\\t", f); break;
    default:
      if (c < 0x20 || c == 0x7f) {
        fprintf(f, "\\u00%c%c", hex[c >> 4], hex[c & 15]);
      } else {
        putc(c, f);
      }
    }
  }
  putc('"', f);
}

void cli_json_base64(FILE *f, const void *p, size_t n) {
  static const char tab[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const uint8_t *s = p;
  putc('"', f);
  size_t i = 0;
  for (; i + 3 <= n; i += 3) {
    uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
    putc(tab[v >> 18], f);
    putc(tab[(v >> 12) & 63], f);
    putc(tab[(v >> 6) & 63], f);
    putc(tab[v & 63], f);
  }
  if (n - i == 1) {
    uint32_t v = (uint32_t)s[i] << 16;
    putc(tab[v >> 18], f);
    putc(tab[(v >> 12) & 63], f);
    fputs("==", f);
  } else if (n - i == 2) {
    uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8;
    putc(tab[v >> 18], f);
    putc(tab[(v >> 12) & 63], f);
    putc(tab[(v >> 6) & 63], f);
    putc('=', f);
  }
  putc('"', f);
}

void cli_json_bytes_field(FILE *f, const char *name, const char *encname,
                          const void *p, size_t n) {
  fprintf(f, "\"%s\":", name);
  if (cli_utf8_valid(p, n)) {
    cli_json_string(f, p, n);
  } else {
    cli_json_base64(f, p, n);
    fprintf(f, ",\"%s\":\"base64\"", encname);
  }
}
