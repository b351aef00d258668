/* Unit tests for common/sse.c: events out of bytes, and the cap on one
 * event (max_event_bytes). */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <string.h>

#include "common/buf.h"
#include "common/sse.h"

static struct buf got;
static int nev;

static int
on_event(void *arg, const char *ev, size_t elen, const char *data, size_t dlen)
{
	(void)arg;
	nev++;
	buf_add(&got, ev, elen);
	buf_addc(&got, '=');
	buf_add(&got, data, dlen);
	buf_addc(&got, ';');
	return 0;
}

static void
setup(void)
{
	buf_reset(&got);
	nev = 0;
	sse_set_max_event(SSE_MAX_EVENT);
}

static void
teardown(void)
{
	buf_free(&got);
	sse_set_max_event(SSE_MAX_EVENT);
}

TestSuite(sse, .init = setup, .fini = teardown);

Test(sse, events_and_multiline_data)
{
	struct sse s = {0};
	const char *t =
	    "event: a\ndata: 1\ndata: 2\n\n: comment\r\ndata: x\r\n\r\n";

	for (size_t i = 0; i < strlen(t); i++)
		cr_assert(eq(int, sse_feed(&s, t + i, 1, on_event, NULL), 0));
	cr_assert(eq(int, nev, 2));
	cr_assert(strcmp(buf_cstr(&got), "a=1\n2;=x;") == 0);
	sse_free(&s);
}

/* A stream that sends data lines and never ends its event is refused once
 * the event passes the cap, instead of growing until a timer fires. */
Test(sse, endless_event_hits_the_cap)
{
	struct sse s = {0};
	const char *line = "data: 0123456789012345678901234567890123456789\n";
	int rc = 0, i;

	sse_set_max_event(4096);
	for (i = 0; i < 100000 && rc == 0; i++)
		rc = sse_feed(&s, line, strlen(line), on_event, NULL);
	cr_assert(eq(int, rc, -1));
	cr_assert(i < 200, "refused after %d lines", i);
	cr_assert(s.data.len <= 4096);
	cr_assert(eq(int, nev, 0));
	sse_free(&s);
}

/* One line longer than the cap, fed in pieces, is refused as well. */
Test(sse, long_partial_line_hits_the_cap)
{
	struct sse s = {0};
	char piece[1000];
	int rc = 0, i;

	sse_set_max_event(4096);
	memset(piece, 'y', sizeof piece);
	rc = sse_feed(&s, "data: ", 6, on_event, NULL);
	for (i = 0; i < 100 && rc == 0; i++)
		rc = sse_feed(&s, piece, sizeof piece, on_event, NULL);
	cr_assert(eq(int, rc, -1));
	cr_assert(s.line.len <= 4096);
	sse_free(&s);
}

/* Events under the cap pass, one after another. */
Test(sse, events_under_the_cap)
{
	struct sse s = {0};
	const char *t = "data: small\n\n";

	sse_set_max_event(1024);
	for (int i = 0; i < 1000; i++)
		cr_assert(
		    eq(int, sse_feed(&s, t, strlen(t), on_event, NULL), 0));
	cr_assert(eq(int, nev, 1000));
	sse_free(&s);
}
