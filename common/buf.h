/* Growable byte buffer used on request paths: reused, never shrunk. */
#ifndef LLMFD_BUF_H
#define LLMFD_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <string.h>

struct buf {
	char *data;
	size_t len;
	size_t cap;
	int oom; /* sticky: set when an append failed */
};

/* buf_reserve's way out when the room is short: grow (or fail). */
int buf_grow(struct buf *, size_t);

/* Make room for at least n more bytes (plus a NUL); -1 on OOM. The
 * appends are inline: a request builds its heads from many short pieces,
 * most of them literals whose length and copy the compiler then knows. */
static inline int
buf_reserve(struct buf *b, size_t n)
{
	return b->len + n + 1 <= b->cap ? 0 : buf_grow(b, n);
}

/* Append n bytes. */
static inline int
buf_add(struct buf *b, const void *p, size_t n)
{
	if (buf_reserve(b, n) == -1)
		return -1;
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

/* Append a C string. */
static inline int
buf_adds(struct buf *b, const char *s)
{
	return buf_add(b, s, strlen(s));
}

/* Append one byte. */
static inline int
buf_addc(struct buf *b, char c)
{
	if (buf_reserve(b, 1) == -1)
		return -1;
	b->data[b->len++] = c;
	return 0;
}

/* Append the header line "name: value\r\n" (name nn bytes, value vn). */
static inline int
buf_add_hline(struct buf *b, const char *name, size_t nn, const char *v,
              size_t vn)
{
	char *at;

	if (buf_reserve(b, nn + vn + 4) == -1)
		return -1;
	at = b->data + b->len;
	memcpy(at, name, nn);
	memcpy(at + nn, ": ", 2);
	memcpy(at + nn + 2, v, vn);
	memcpy(at + nn + 2 + vn, "\r\n", 3);
	b->len += nn + vn + 4;
	return 0;
}

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
/* The value of hex digit c (either case), or -1 (inline: chunk sizes
 * are read with it for every frame of a stream). */
static inline int
buf_hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}
/* Append the n bytes at s with %XX escapes decoded (a '%' not followed
 * by two hex digits is kept as it is). */
int buf_add_unescaped(struct buf *, const char *s, size_t n);
/* Append v in decimal, without printf. */
int buf_addu(struct buf *, unsigned long long);
int buf_addd(struct buf *, long long);
void buf_reset(struct buf *);
void buf_free(struct buf *);
/* Let the buffer's memory go as buf_free does, but keep a small block
 * (up to 32 of at most 1 KB per process) for the next empty buffer that
 * grows: a stream lets its buffers go between reads and takes them back
 * at the next without malloc or free. */
void buf_park(struct buf *);
/* NUL-terminate without counting the NUL; returns data or "" on OOM. */
const char *buf_cstr(struct buf *);

#endif
