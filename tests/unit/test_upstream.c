/* Unit tests for the upstream response parser (worker/upstream.c, through
 * up_parse): framing, incremental input, and the max_response_bytes cap. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "worker/upstream.h"

/* What the callbacks saw. */
struct seen {
	int status, headers, chunked, es, amz;
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
	s->es = r->event_stream;
	s->amz = r->amz_eventstream;
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

/* An interim 100 and the final head in one read: the final one counts. */
Test(upstream, interim_and_final_head_in_one_read)
{
	struct seen s;
	const char *t = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"
	                "Content-Length: 2\r\n\r\nok";

	for (size_t chunk = 0; chunk < 3; chunk++) {
		cr_assert(eq(int, parse(&s, t, chunk * 7, 4096), 1));
		cr_assert(eq(int, s.status, 200));
		cr_assert(strcmp(buf_cstr(&s.body), "ok") == 0);
		buf_free(&s.body);
	}
}

/* The stream formats are told by Content-Type in any case and with
 * parameters; other types (with or without an 'e') are neither. */
Test(upstream, content_type_stream_formats)
{
	static const struct {
		const char *ct;
		int es, amz;
	} t[] = {
	    {"application/json", 0, 0},
	    {"text/event-stream", 1, 0},
	    {"TEXT/EVENT-STREAM; charset=utf-8", 1, 0},
	    {"text/plain; x=event", 0, 0},
	    {"application/vnd.amazon.eventstream", 0, 1},
	    {"Application/VND.Amazon.EventStream", 0, 1},
	    {"eevent-stream", 1, 0},
	    {"", 0, 0},
	};
	struct seen s;

	for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
		char *r = NULL;

		cr_assert(asprintf(&r,
		                   "HTTP/1.1 200 OK\r\nContent-Type: %s\r\n"
		                   "Content-Length: 2\r\n\r\nok",
		                   t[i].ct) > 0);
		cr_assert(eq(int, parse(&s, r, 0, 4096), 1));
		cr_assert(eq(int, s.es, t[i].es), "%s", t[i].ct);
		cr_assert(eq(int, s.amz, t[i].amz), "%s", t[i].ct);
		buf_free(&s.body);
		free(r);
	}
}

/* A Content-Length that is not a number frames the body by close. */
Test(upstream, content_length_not_a_number)
{
	struct seen s;

	cr_assert(
	    eq(int,
	       parse(&s, "HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok!", 0,
	             4096),
	       1));
	cr_assert(eq(i64, s.content_length, -1));
	cr_assert(strcmp(buf_cstr(&s.body), "ok!") == 0);
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

/* Chunk size lines as the one-pass framing takes them (uppercase hex, an
 * extension, LF alone) and as it leaves them to strtoll (a 0x prefix, a
 * leading space, 17 digits), and framing errors, at every split of the
 * input into pieces: the same body or the same verdict. */
Test(upstream, chunked_framing_at_every_split)
{
	struct seen s;
	const char *head =
	    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
	const char *good = "5\r\nhello\r\nA;ext=1\r\n0123456789\r\n"
	                   "0x3\r\nabc\r\n 2\r\nde\r\n"
	                   "00000000000000002\r\nxy\r\n1\nz\n0\r\n\r\n";
	const char *bad[] = {"5\r\nhelloXY0\r\n\r\n",
	                     "\r\nhello\r\n",
	                     "-1\r\nx\r\n",
	                     "g\r\nx\r\n",
	                     "5\r\nhello\r\r\n0\r\n\r\n",
	                     NULL};
	char t[512];

	snprintf(t, sizeof t, "%s%s", head, good);
	for (size_t k = 1; k <= strlen(t); k++) {
		cr_assert(eq(int, parse(&s, t, k, 1 << 20), 1), "pieces of %zu",
		          k);
		cr_assert(
		    strcmp(buf_cstr(&s.body), "hello0123456789abcdexyz") == 0,
		    "pieces of %zu: %s", k, buf_cstr(&s.body));
		buf_free(&s.body);
	}
	for (int i = 0; bad[i]; i++) {
		snprintf(t, sizeof t, "%s%s", head, bad[i]);
		for (size_t k = 1; k <= strlen(t); k++) {
			cr_assert(eq(int, parse(&s, t, k, 1 << 20), -1),
			          "bad %d in pieces of %zu", i, k);
			buf_free(&s.body);
		}
	}
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

/* ---- requests over a loopback socket: bodies sent by reference ---- */

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <stdlib.h>

#include "common/cfg.h"

/* A loopback HTTP server that records each request and answers 200 "ok"
 * once it is whole, or (early) as soon as the head is in. */
struct srv {
	struct event_base *base;
	struct evconnlistener *lev;
	struct bufferevent *bev;
	struct bufferevent *bevs[8]; /* open server connections */
	int port, early, mute, answered, accepts;
	struct buf got; /* the last request, head and body */
};

/* A client reply for the test's up_request. */
struct cli {
	int done, failed, status;
	struct buf body;
};

static void
cli_headers(void *arg, const struct up_resp *r)
{
	((struct cli *)arg)->status = r->status;
}

static void
cli_data(void *arg, const char *p, size_t n)
{
	buf_add(&((struct cli *)arg)->body, p, n);
}

static void
cli_done(void *arg)
{
	((struct cli *)arg)->done = 1;
}

static void
cli_error(void *arg, const char *msg)
{
	(void)msg;
	((struct cli *)arg)->failed = 1;
}

static const struct up_cbs cli_cbs = {cli_headers, cli_data, cli_done,
                                      cli_error};

/* Whether s->got holds a whole request (head and Content-Length body). */
static int
srv_whole(struct srv *s)
{
	const char *h = buf_cstr(&s->got), *end = strstr(h, "\r\n\r\n");
	const char *cl = strstr(h, "Content-Length: ");

	if (end == NULL || cl == NULL)
		return 0;
	if (s->early)
		return 1;
	return s->got.len >= (size_t)(end + 4 - h) + strtoul(cl + 16, NULL, 10);
}

static void
srv_read(struct bufferevent *bev, void *arg)
{
	struct srv *s = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t n = evbuffer_get_length(in);

	if (s->answered && s->early)
		return; /* reads nothing more */
	buf_reserve(&s->got, n);
	evbuffer_remove(in, s->got.data + s->got.len, n);
	s->got.len += n;
	if (s->mute || !srv_whole(s))
		return;
	s->answered++;
	if (s->early)
		bufferevent_disable(bev, EV_READ);
	bufferevent_write(bev, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
	                  40);
}

static void
srv_event(struct bufferevent *bev, short what, void *arg)
{
	struct srv *s = arg;

	(void)what;
	for (int i = 0; i < 8; i++)
		if (s->bevs[i] == bev)
			s->bevs[i] = NULL;
	bufferevent_free(bev);
}

/* Close the server's connections and listener. */
static void
srv_stop(struct srv *s)
{
	for (int i = 0; i < 8; i++)
		if (s->bevs[i])
			bufferevent_free(s->bevs[i]);
	evconnlistener_free(s->lev);
}

static void
srv_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
           int len, void *arg)
{
	struct srv *s = arg;

	(void)l;
	(void)sa;
	(void)len;
	s->accepts++;
	s->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
	for (int i = 0; i < 8; i++)
		if (s->bevs[i] == NULL) {
			s->bevs[i] = s->bev;
			break;
		}
	bufferevent_setcb(s->bev, srv_read, NULL, srv_event, s);
	bufferevent_enable(s->bev, EV_READ);
}

/* Listen on 127.0.0.1, a free port. */
static void
srv_start(struct srv *s, struct event_base *base)
{
	struct sockaddr_in sin = {.sin_family = AF_INET};
	socklen_t sl = sizeof sin;

	memset(s, 0, sizeof *s);
	s->base = base;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	s->lev = evconnlistener_new_bind(
	    base, srv_accept, s, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 16,
	    (struct sockaddr *)&sin, sizeof sin);
	cr_assert_not_null(s->lev);
	getsockname(evconnlistener_get_fd(s->lev), (struct sockaddr *)&sin,
	            &sl);
	s->port = ntohs(sin.sin_port);
}

/* A body holder counting its releases. */
struct test_hold {
	struct up_hold h;
	int released;
};

static void
test_release(struct up_hold *h)
{
	((struct test_hold *)h)->released++;
}

/* Run base until c is done or failed, or turns run out. */
static void
run_until(struct event_base *base, struct cli *c, int turns)
{
	for (int i = 0; i < turns && !c->done && !c->failed; i++)
		event_base_loop(base, EVLOOP_ONCE);
}

/* A pool for a deployment at 127.0.0.1:port. */
static struct pool *
test_pool(struct event_base *base, struct deploy_cfg *d, int port)
{
	char *cause = NULL;

	memset(d, 0, sizeof *d);
	snprintf(d->name, sizeof d->name, "t");
	snprintf(d->host, sizeof d->host, "127.0.0.1");
	d->port = (uint16_t)port;
	return pool_new(base, NULL, d, &cause);
}

Test(upstream, body_parts_go_by_reference)
{
	static struct deploy_cfg d;
	struct event_base *base = event_base_new();
	struct test_hold th = {{1, test_release}, 0};
	struct srv s;
	struct cli c = {0};
	struct buf want = {0};
	char *big = malloc(300000);
	struct pool *p;
	struct up_part parts[3];
	const char *body;
	int idle, total;

	memset(big, 'x', 300000);
	srv_start(&s, base);
	cr_assert_not_null(p = test_pool(base, &d, s.port));
	parts[0] = (struct up_part){"{\"a\":\"", 6, 0};
	parts[1] = (struct up_part){big, 300000, 1};
	parts[2] = (struct up_part){"\"}", 2, 0};
	for (int i = 0; i < 3; i++)
		buf_add(&want, parts[i].p, parts[i].len);
	for (int round = 0; round < 2; round++) {
		buf_free(&c.body);
		memset(&c, 0, sizeof c);
		buf_reset(&s.got);
		cr_assert_not_null(up_request(p, "POST", "/x", 2, "A: b\r\n", 6,
		                              parts, 3, &th.h, &cli_cbs, &c));
		run_until(base, &c, 1000);
		cr_assert(c.done && c.status == 200);
		body = strstr(buf_cstr(&s.got), "\r\n\r\n") + 4;
		cr_assert(strstr(buf_cstr(&s.got),
		                 "Content-Length: 300008\r\n") != NULL);
		cr_assert(strstr(buf_cstr(&s.got), "\r\nA: b\r\n") != NULL);
		cr_assert(s.got.len - (size_t)(body - s.got.data) == want.len);
		cr_assert(memcmp(body, want.data, want.len) == 0);
		/* written and replied to: only the test holds the body */
		cr_assert(th.h.refs == 1, "refs %d", th.h.refs);
	}
	pool_stats(p, &idle, &total);
	cr_assert(idle == 1 && total == 1 && s.accepts == 1);
	cr_assert(th.released == 0);
	up_hold_unref(&th.h);
	cr_assert(th.released == 1);
	pool_free(p);
	srv_stop(&s);
	event_base_free(base);
	buf_free(&want);
	buf_free(&s.got);
	buf_free(&c.body);
	free(big);
}

/* A reply before the whole request was written (an early error): the rest
 * must not precede the next request, so the connection is not kept, and
 * the body is let go once the connection is gone. */
Test(upstream, early_reply_connection_not_reused)
{
	static struct deploy_cfg d;
	struct event_base *base = event_base_new();
	struct test_hold th = {{1, test_release}, 0};
	struct srv s;
	struct cli c = {0};
	size_t n = 64 << 20;
	char *big = malloc(n);
	struct pool *p;
	struct up_part part;
	int idle, total;

	memset(big, 'x', n);
	srv_start(&s, base);
	s.early = 1;
	cr_assert_not_null(p = test_pool(base, &d, s.port));
	part = (struct up_part){big, n, 1};
	cr_assert_not_null(up_request(p, "POST", "/x", 2, "", 0, &part, 1,
	                              &th.h, &cli_cbs, &c));
	run_until(base, &c, 1000);
	cr_assert(c.done && c.status == 200);
	pool_stats(p, &idle, &total);
	cr_assert(idle == 0 && total == 0, "idle %d total %d", idle, total);
	for (int i = 0; i < 10 && th.h.refs > 1; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	cr_assert(th.h.refs == 1, "refs %d", th.h.refs);
	up_hold_unref(&th.h);
	pool_free(p);
	srv_stop(&s);
	event_base_free(base);
	buf_free(&s.got);
	buf_free(&c.body);
	free(big);
}

Test(upstream, abort_lets_go_of_the_body)
{
	static struct deploy_cfg d;
	struct event_base *base = event_base_new();
	struct test_hold th = {{1, test_release}, 0};
	struct srv s;
	struct cli c = {0};
	size_t n = 16 << 20;
	char *big = malloc(n);
	struct pool *p;
	struct upconn *uc;
	struct up_part part;

	memset(big, 'x', n);
	srv_start(&s, base);
	s.mute = 1;
	cr_assert_not_null(p = test_pool(base, &d, s.port));
	part = (struct up_part){big, n, 1};
	cr_assert_not_null(uc = up_request(p, "POST", "/x", 2, "", 0, &part, 1,
	                                   &th.h, &cli_cbs, &c));
	cr_assert(th.h.refs > 1, "held while it is being written");
	event_base_loop(base, EVLOOP_NONBLOCK);
	up_abort(uc);
	for (int i = 0; i < 10 && th.h.refs > 1; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	cr_assert(th.h.refs == 1, "refs %d", th.h.refs);
	cr_assert(c.done == 0 && c.failed == 0);
	up_hold_unref(&th.h);
	cr_assert(th.released == 1);
	pool_free(p);
	srv_stop(&s);
	event_base_free(base);
	buf_free(&s.got);
	buf_free(&c.body);
	free(big);
}

/* A new connection never sends its request again (only a reused one
 * does, when the server had closed it): once the body is written the
 * connection holds none of it, nor a copy, while the reply is awaited
 * (a stream's may take minutes). */
Test(upstream, new_connection_lets_go_of_the_body_once_written)
{
	static struct deploy_cfg d;
	struct event_base *base = event_base_new();
	struct test_hold th = {{1, test_release}, 0};
	struct srv s;
	struct cli c = {0};
	char body[4096];
	struct pool *p;
	struct upconn *uc;
	struct up_part part = {body, sizeof body, 1};

	memset(body, 'y', sizeof body);
	srv_start(&s, base);
	s.mute = 1;
	cr_assert_not_null(p = test_pool(base, &d, s.port));
	cr_assert_not_null(uc = up_request(p, "POST", "/x", 2, "", 0, &part, 1,
	                                   &th.h, &cli_cbs, &c));
	for (int i = 0; i < 200 && (s.got.len < sizeof body || th.h.refs > 1);
	     i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	cr_assert_geq(s.got.len, sizeof body, "the server got it all");
	cr_assert_eq(th.h.refs, 1, "refs %d", th.h.refs);
	cr_assert(c.done == 0 && c.failed == 0, "no reply yet");
	up_abort(uc);
	up_hold_unref(&th.h);
	cr_assert(th.released == 1);
	pool_free(p);
	srv_stop(&s);
	event_base_free(base);
	buf_free(&s.got);
	buf_free(&c.body);
}

/* An idle worker keeps a few idle connections per deployment. */
Test(upstream, pool_trim_closes_idle_connections)
{
	static struct deploy_cfg d;
	struct event_base *base = event_base_new();
	struct srv s;
	struct cli c[3];
	struct pool *p;
	struct up_part part = {"{}", 2, 0};
	int idle, total, done = 0;

	memset(c, 0, sizeof c);
	srv_start(&s, base);
	cr_assert_not_null(p = test_pool(base, &d, s.port));
	for (int i = 0; i < 3; i++)
		cr_assert_not_null(up_request(p, "POST", "/x", 2, "", 0, &part,
		                              1, NULL, &cli_cbs, &c[i]));
	for (int i = 0; i < 2000 && done < 3; i++) {
		event_base_loop(base, EVLOOP_ONCE);
		done = c[0].done + c[1].done + c[2].done;
	}
	pool_stats(p, &idle, &total);
	cr_assert(done == 3 && idle == 3 && total == 3, "idle %d total %d",
	          idle, total);
	pool_trim(p, 1);
	pool_stats(p, &idle, &total);
	cr_assert(idle == 1 && total == 1, "idle %d total %d", idle, total);
	pool_free(p);
	srv_stop(&s);
	event_base_free(base);
	buf_free(&s.got);
	for (int i = 0; i < 3; i++)
		buf_free(&c[i].body);
}

/* Header lines ending in CRLF or a bare LF, whole in one chunk or split
 * anywhere between chunks (the CR apart from its LF too), parse alike. */
Test(upstream, lines_across_chunks)
{
	const char *t = "HTTP/1.1 201 Created\r\nX-A: 1\nContent-Length: 2\r\n"
	                "Connection: keep-alive\n\r\nok";

	for (size_t chunk = 0; chunk < 12; chunk++) {
		struct seen s;

		cr_assert(eq(int, parse(&s, t, chunk, 4096), 1), "chunk %zu",
		          chunk);
		cr_assert(eq(int, s.status, 201));
		cr_assert(eq(i64, s.content_length, 2));
		cr_assert(strcmp(buf_cstr(&s.body), "ok") == 0);
		buf_free(&s.body);
	}
}
