/* Unit tests for the upstream response parser (worker/upstream.c, through
 * up_parse): framing, incremental input, and the max_response_bytes cap. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <string.h>

#include "common/buf.h"
#include "worker/upstream.h"

/* What the callbacks saw. */
struct seen {
	int status, headers, chunked;
	int64_t content_length;
	struct buf body;
};

static void
on_headers(void *arg, const struct up_resp *r)
{
	struct seen *s = arg;

	s->headers++;
	s->status = r->status;
	s->chunked = r->chunked;
	s->content_length = r->content_length;
}

static void
on_data(void *arg, const char *p, size_t n)
{
	buf_add(&((struct seen *)arg)->body, p, n);
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
	cr_assert(0, "error callback from the parser: %s", msg);
}

static const struct up_cbs cbs = {on_headers, on_data, on_done, on_error};

/* Parse text in pieces of chunk bytes with a cap; the result code. */
static int
parse(struct seen *s, const char *text, size_t chunk, int64_t max)
{
	memset(s, 0, sizeof *s);
	return up_parse(text, strlen(text), chunk, max, &cbs, s);
}

#define CL_REPLY                                                               \
	"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"                \
	"Content-Length: 11\r\n\r\n{\"ok\":true}"

Test(upstream, content_length_reply)
{
	struct seen s;

	cr_assert(eq(int, parse(&s, CL_REPLY, 0, 1 << 20), 1));
	cr_assert(eq(int, s.status, 200));
	cr_assert(eq(i64, s.content_length, 11));
	cr_assert(strcmp(buf_cstr(&s.body), "{\"ok\":true}") == 0);
	buf_free(&s.body);
}

Test(upstream, chunked_one_byte_at_a_time)
{
	struct seen s;
	const char *t = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
	                "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";

	cr_assert(eq(int, parse(&s, t, 1, 1 << 20), 1));
	cr_assert(eq(int, s.chunked, 1));
	cr_assert(strcmp(buf_cstr(&s.body), "hello world") == 0);
	buf_free(&s.body);
}

Test(upstream, incomplete_and_close_framed)
{
	struct seen s;

	cr_assert(
	    eq(int, parse(&s, "HTTP/1.1 200 OK\r\nContent-Le", 3, 4096), 0));
	cr_assert(eq(
	    int, parse(&s, "HTTP/1.0 200 OK\r\n\r\nuntil close", 4, 4096), 1));
	cr_assert(strcmp(buf_cstr(&s.body), "until close") == 0);
	buf_free(&s.body);
}

Test(upstream, malformed)
{
	struct seen s;

	cr_assert(eq(int, parse(&s, "SMTP ready\r\n", 0, 4096), -1));
	cr_assert(eq(int,
	             parse(&s,
	                   "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
	                   "\r\nzz\r\n",
	                   0, 4096),
	             -1));
}

/* A body past max_response_bytes stops the parse: the owner never holds
 * more than the cap (plus one read). */
Test(upstream, body_over_the_cap)
{
	struct seen s;
	struct buf t = {0};

	buf_adds(&t, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n");
	for (int i = 0; i < 100000; i++)
		buf_addc(&t, 'x');
	cr_assert(eq(int, parse(&s, buf_cstr(&t), 1000, 10000), -2));
	cr_assert(s.body.len <= 10000 + 1000); /* the cap plus one read */
	cr_assert(eq(int, parse(&s, buf_cstr(&t), 1000, 200000), 1));
	cr_assert(eq(sz, s.body.len, 100000));
	buf_free(&s.body);
	buf_free(&t);
}

/* Endless headers count against the cap too. */
Test(upstream, endless_headers)
{
	struct seen s;
	struct buf t = {0};

	buf_adds(&t, "HTTP/1.1 200 OK\r\n");
	for (int i = 0; i < 5000; i++)
		buf_printf(&t, "X-Filler-%d: yes\r\n", i);
	cr_assert(eq(int, parse(&s, buf_cstr(&t), 512, 8192), -2));
	cr_assert(eq(int, s.headers, 0));
	buf_free(&t);
}
