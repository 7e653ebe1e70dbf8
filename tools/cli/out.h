/*
 * out.h - output helpers of the shoal CLI: JSON strings, base64 and the
 * UTF-8 test that chooses between them.
 *
 * Keys and values are bytes. In --json output a byte string that is valid
 * UTF-8 is written as a JSON string (escaped per RFC 8259); anything else is
 * written base64-encoded (RFC 4648, with padding) and flagged by a sibling
 * field "encoding": "base64" (values) or "key_encoding": "base64" (keys), so
 * a consumer can always recover the exact bytes.
 */
#ifndef SHOAL_CLI_OUT_H
#define SHOAL_CLI_OUT_H

#include <stddef.h>
#include <stdio.h>

/* 1 if @p/@n is well-formed UTF-8 (no overlong forms, no surrogates, nothing
 * above U+10FFFF), else 0. The empty string is valid. */
int cli_utf8_valid(const void *p, size_t n);

/* Write @p/@n as a quoted JSON string; @p must be valid UTF-8. Control
 * characters, '"' and '\\' are escaped. */
void cli_json_string(FILE *f, const void *p, size_t n);

/* Write @p/@n base64-encoded, quoted. */
void cli_json_base64(FILE *f, const void *p, size_t n);

/* Write `"NAME":"..."` for the bytes @p/@n: a JSON string when they are
 * valid UTF-8, else base64 followed by `,"ENCNAME":"base64"`. */
void cli_json_bytes_field(FILE *f, const char *name, const char *encname,
                          const void *p, size_t n);

#endif
