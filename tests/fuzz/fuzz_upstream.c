/* libFuzzer: the upstream HTTP response parser (worker/upstream.c through
 * up_parse). Byte 0 picks the piece size, byte 1 the reply cap; the rest
 * is the reply. Fed in pieces it must reach the same verdict as fed whole,
 * and, unless the cap stopped it, hand over the same status and body. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "worker/upstream.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

struct tally {
	int headers, status;
	size_t bytes;
	uint32_t sum;
};

static void
on_headers(void *arg, const struct up_resp *r)
{
	struct tally *t = arg;

	t->headers++;
	t->status = r->status;
}

static void
on_data(void *arg, const char *p, size_t n)
{
	struct tally *t = arg;

	for (size_t i = 0; i < n; i++)
		t->sum = t->sum * 31 + (unsigned char)p[i];
	t->bytes += n;
}

static void
on_done(void *arg)
{
	(void)arg;
}

static void
on_error(void *arg, const char *msg)
{
	(void)arg;
	(void)msg;
	__builtin_trap(); /* the parser alone never reports transport errors */
}

static const struct up_cbs cbs = {on_headers, on_data, on_done, on_error};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
	struct tally a = {0}, b = {0};
	size_t step;
	int64_t max;
	int ra, rb;

	if (n < 2)
		return 0;
	step = (size_t)data[0] % 16 + 1;
	max = (int64_t)64 << (data[1] % 12);
	data += 2;
	n -= 2;
	ra = up_parse((const char *)data, n, 0, max, &cbs, &a);
	rb = up_parse((const char *)data, n, step, max, &cbs, &b);
	if (ra != rb || ra < -2 || ra > 1)
		__builtin_trap();
	if (ra != -2 && (a.headers != b.headers || a.status != b.status ||
	                 a.bytes != b.bytes || a.sum != b.sum))
		__builtin_trap();
	if (b.bytes > (size_t)max + step)
		__builtin_trap(); /* at most the cap and one piece */
	return 0;
}
