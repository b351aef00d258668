#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"

/* Memory buf_park kept: a stack of small blocks, taken back by the next
 * empty buffer that grows (a process is one thread). */
#define BUF_SPARE_N   32
#define BUF_SPARE_CAP 1024
static struct {
	char *data;
	size_t cap;
} spare[BUF_SPARE_N];
static int nspare;

/* See buf.h: the room is short. */
int
buf_grow(struct buf *b, size_t n)
{
	size_t need = b->len + n + 1, cap;
	char *p;

	if (need <= b->cap)
		return 0;
	if (b->data == NULL && nspare > 0 && need <= spare[nspare - 1].cap) {
		nspare--;
		b->data = spare[nspare].data;
		b->cap = spare[nspare].cap;
		return 0;
	}
	cap = b->cap ? b->cap : 256;
	while (cap < need)
		cap *= 2;
	if ((p = realloc(b->data, cap)) == NULL) {
		b->oom = 1;
		return -1;
	}
	b->data = p;
	b->cap = cap;
	return 0;
}

/* Append formatted text. */
int
buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
	va_list ap2;
	int n;

	va_copy(ap2, ap);
	n = vsnprintf(b->data ? b->data + b->len : NULL,
	              b->data ? b->cap - b->len : 0, fmt, ap2);
	va_end(ap2);
	if (n < 0)
		return -1;
	if (b->data == NULL || (size_t)n >= b->cap - b->len) {
		if (buf_reserve(b, (size_t)n) == -1)
			return -1;
		vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
	}
	b->len += (size_t)n;
	return 0;
}

/* Append formatted text. */
int
buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = buf_vprintf(b, fmt, ap);
	va_end(ap);
	return rc;
}

/* Decimal digits of v, NUL-terminated, at out; the length. */
size_t
buf_fmt_u(char *out, unsigned long long v)
{
	char tmp[BUF_NUM_MAX], *q = tmp + sizeof tmp;
	size_t n;

	do
		*--q = (char)('0' + v % 10);
	while ((v /= 10) != 0);
	n = (size_t)(tmp + sizeof tmp - q);
	memcpy(out, q, n);
	out[n] = '\0';
	return n;
}

/* Signed decimal digits of v, NUL-terminated, at out; the length. */
size_t
buf_fmt_d(char *out, long long v)
{
	if (v >= 0)
		return buf_fmt_u(out, (unsigned long long)v);
	out[0] = '-';
	return 1 + buf_fmt_u(out + 1, 0ULL - (unsigned long long)v);
}

/* At most n bytes of src, up to its NUL, into dst (size > 0). */
size_t
buf_copy(char *dst, size_t size, const char *src, size_t n)
{
	n = strnlen(src, n);
	if (n >= size)
		n = size - 1;
	memcpy(dst, src, n);
	dst[n] = '\0';
	return n;
}

/* Append v in decimal. */
int
buf_addu(struct buf *b, unsigned long long v)
{
	char num[BUF_NUM_MAX];

	return buf_add(b, num, buf_fmt_u(num, v));
}

/* Append signed v in decimal. */
int
buf_addd(struct buf *b, long long v)
{
	char num[BUF_NUM_MAX];

	return buf_add(b, num, buf_fmt_d(num, v));
}

/* Empty the buffer, keeping its memory. */
void
buf_reset(struct buf *b)
{
	b->len = 0;
	b->oom = 0;
}

/* Release the buffer's memory. */
void
buf_free(struct buf *b)
{
	free(b->data);
	memset(b, 0, sizeof *b);
}

/* See buf.h. */
void
buf_park(struct buf *b)
{
	if (b->data == NULL) { /* most often: nothing to let go */
		b->len = 0;
		b->oom = 0;
		return;
	}
	if (b->cap <= BUF_SPARE_CAP && nspare < BUF_SPARE_N) {
		spare[nspare].data = b->data;
		spare[nspare].cap = b->cap;
		nspare++;
		memset(b, 0, sizeof *b);
		return;
	}
	buf_free(b);
}

/* NUL-terminated view of the contents. */
const char *
buf_cstr(struct buf *b)
{
	if (buf_reserve(b, 0) == -1)
		return "";
	b->data[b->len] = '\0';
	return b->data;
}

/* Append with %XX decoded: see buf.h. */
int
buf_add_unescaped(struct buf *b, const char *s, size_t n)
{
	int h, l;

	for (size_t i = 0; i < n; i++) {
		if (s[i] == '%' && i + 2 < n &&
		    (h = buf_hexval(s[i + 1])) >= 0 &&
		    (l = buf_hexval(s[i + 2])) >= 0) {
			buf_addc(b, (char)(h << 4 | l));
			i += 2;
		} else
			buf_addc(b, s[i]);
	}
	return b->oom ? -1 : 0;
}
