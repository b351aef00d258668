/* Growable byte buffer used on request paths: reused, never shrunk. */
#ifndef LLMFD_BUF_H
#define LLMFD_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
	char *data;
	size_t len;
	size_t cap;
	int oom; /* sticky: set when an append failed */
};

int buf_reserve(struct buf *, size_t);
int buf_add(struct buf *, const void *, size_t);
int buf_adds(struct buf *, const char *);
int buf_addc(struct buf *, char);
int buf_printf(struct buf *, const char *, ...)
    __attribute__((format(printf, 2, 3)));
int buf_vprintf(struct buf *, const char *, va_list)
    __attribute__((format(printf, 2, 0)));
/* Decimal digits of v at out (BUF_NUM_MAX bytes, NUL-terminated), without
 * printf; returns the length. */
#define BUF_NUM_MAX 24
size_t buf_fmt_u(char *out, unsigned long long v);
size_t buf_fmt_d(char *out, long long v);
/* At most n bytes of src (up to a NUL) into dst of size bytes (> 0),
 * truncated to fit and NUL-terminated, as snprintf "%.*s" without printf;
 * the length copied. */
size_t buf_copy(char *dst, size_t size, const char *src, size_t n);
/* The value of hex digit c (either case), or -1. */
int buf_hexval(char c);
/* Append the n bytes at s with %XX escapes decoded (a '%' not followed
 * by two hex digits is kept as it is). */
int buf_add_unescaped(struct buf *, const char *s, size_t n);
/* Append v in decimal, without printf. */
int buf_addu(struct buf *, unsigned long long);
int buf_addd(struct buf *, long long);
void buf_reset(struct buf *);
void buf_free(struct buf *);
/* NUL-terminate without counting the NUL; returns data or "" on OOM. */
const char *buf_cstr(struct buf *);

#endif
