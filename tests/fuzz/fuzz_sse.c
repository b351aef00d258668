/* libFuzzer: the SSE parser, fed the input in pieces split at the first
 * byte's value, must see the same events as when fed whole. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/sse.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

struct tally {
	size_t events, bytes;
};

static int
count(void *arg, const char *ev, size_t elen, const char *data, size_t dlen)
{
	struct tally *t = arg;

	(void)ev;
	(void)data;
	t->events++;
	t->bytes += elen + dlen;
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
	struct sse a = {0}, b = {0};
	struct tally ta = {0}, tb = {0};
	size_t step;

	if (n < 1)
		return 0;
	step = (size_t)data[0] % 7 + 1;
	data++;
	n--;
	sse_feed(&a, (const char *)data, n, count, &ta);
	for (size_t off = 0; off < n; off += step)
		sse_feed(&b, (const char *)data + off,
		         off + step > n ? n - off : step, count, &tb);
	if (ta.events != tb.events || ta.bytes != tb.bytes)
		__builtin_trap();
	sse_free(&a);
	sse_free(&b);
	return 0;
}
