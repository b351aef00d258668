/* libFuzzer: the client request scanner (worker/conn.c, conn_scan_feed).
 * Byte 0 picks the piece size; the rest is what a client sends. Fed in
 * pieces it must reach the same verdict, in the same state, as fed whole,
 * and a verdict is one of the statuses it may answer. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "worker/conn.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
	static const struct conn_limits lim = {
	    .max_bytes = 2048, .max_headers = 16, .max_body = 4096};
	struct conn_scan a, b;
	const char *wa = NULL, *wb = NULL;
	size_t step;
	int ra, rb = 0;

	if (n < 1)
		return 0;
	step = (size_t)data[0] % 13 + 1;
	data++;
	n--;
	conn_scan_init(&a);
	conn_scan_init(&b);
	ra = conn_scan_feed(&a, (const char *)data, n, &lim, &wa);
	for (size_t off = 0; off < n && rb == 0; off += step)
		rb = conn_scan_feed(&b, (const char *)data + off,
		                    off + step > n ? n - off : step, &lim, &wb);
	if (ra != rb || (ra != 0 && (wa == NULL || wb == NULL)))
		__builtin_trap();
	if (ra != 0 && ra != 400 && ra != 405 && ra != 413 && ra != 431)
		__builtin_trap();
	if (ra == 0 &&
	    (a.st != b.st || a.bytes != b.bytes || a.nhdr != b.nhdr ||
	     a.clen != b.clen || a.body != b.body))
		__builtin_trap();
	return 0;
}
