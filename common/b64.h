/* Base64 (RFC 4648): the standard alphabet with padding, and the URL-safe
 * alphabet without it (JWT). */
#ifndef LLMFD_B64_H
#define LLMFD_B64_H

#include <stddef.h>

#include "common/buf.h"

/* Append the encoding of n bytes of p to out: standard with '=' padding,
 * or (url) '-' and '_' without padding. */
void b64_encode(struct buf *out, const void *p, size_t n, int url);
/* Append the decoding of n characters of s to out; either alphabet,
 * padding optional. 0, or -1 (out unchanged) if s is not base64. */
int b64_decode(struct buf *out, const char *s, size_t n);

#endif
