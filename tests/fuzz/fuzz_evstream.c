/* libFuzzer: the event stream decoder, fed the input in pieces split at
 * the first byte's value, must hand over the same messages (count and
 * payload bytes) and reach the same verdict as when fed whole. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/evstream.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

struct tally {
	size_t msgs, bytes;
};

/* Count a message and touch its fields. */
static int
count(void *arg, const struct evs_msg *m)
{
	struct tally *t = arg;

	t->msgs++;
	t->bytes +=
	    m->plen + m->event_type.n + m->exception_type.n + m->message_type.n;
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
	struct evs a = {0}, b = {0};
	struct tally ta = {0}, tb = {0};
	size_t step;
	int ra, rb = 0;

	if (n < 1)
		return 0;
	step = (size_t)data[0] % 13 + 1;
	data++;
	n--;
	evs_set_max(1 << 20);
	ra = evs_feed(&a, (const char *)data, n, count, &ta);
	for (size_t off = 0; off < n && rb == 0; off += step)
		rb = evs_feed(&b, (const char *)data + off,
		              off + step > n ? n - off : step, count, &tb);
	if (ra != rb || ta.msgs != tb.msgs || ta.bytes != tb.bytes)
		__builtin_trap();
	evs_free(&a);
	evs_free(&b);
	return 0;
}
