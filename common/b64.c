/* Base64 encoding and decoding (see b64.h). */
#include <stdint.h>

#include "common/b64.h"

static const char b64_std[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64_url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Encode n bytes; see b64.h. */
void
b64_encode(struct buf *out, const void *p, size_t n, int url)
{
	const unsigned char *s = p;
	const char *abc = url ? b64_url : b64_std;
	char q[4];
	uint32_t v;
	size_t i;

	buf_reserve(out, out->len + (n + 2) / 3 * 4 + 1);
	for (i = 0; i + 2 < n; i += 3) {
		v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
		q[0] = abc[v >> 18];
		q[1] = abc[(v >> 12) & 63];
		q[2] = abc[(v >> 6) & 63];
		q[3] = abc[v & 63];
		buf_add(out, q, 4);
	}
	if (i == n)
		return;
	v = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0);
	q[0] = abc[v >> 18];
	q[1] = abc[(v >> 12) & 63];
	q[2] = i + 1 < n ? abc[(v >> 6) & 63] : '=';
	q[3] = '=';
	buf_add(out, q, url ? (i + 1 < n ? 3 : 2) : 4);
}

/* The 6-bit value of a base64 character (either alphabet), or -1. */
static int
b64_val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+' || c == '-')
		return 62;
	if (c == '/' || c == '_')
		return 63;
	return -1;
}

/* Decode n characters; see b64.h. */
int
b64_decode(struct buf *out, const char *s, size_t n)
{
	size_t mark = out->len, bits = 0;
	uint32_t acc = 0;
	int v;

	while (n > 0 && s[n - 1] == '=')
		n--;
	if (n % 4 == 1)
		return -1;
	buf_reserve(out, out->len + n / 4 * 3 + 3);
	for (size_t i = 0; i < n; i++) {
		if ((v = b64_val((unsigned char)s[i])) < 0) {
			out->len = mark;
			return -1;
		}
		acc = acc << 6 | (uint32_t)v;
		if ((bits += 6) >= 8) {
			bits -= 8;
			buf_addc(out, (char)(acc >> bits & 0xff));
		}
	}
	return out->oom ? -1 : 0;
}
