/*
 * The HTTP/1.1 server of client connections (see http.h), on the sockets
 * themselves rather than evhttp: evhttp parsed each request line with
 * sscanf, kept headers in a list of three allocations each, looked them up
 * with strcasecmp, asked the kernel with FIONREAD before each read and
 * turned the read event off and on around each request; about a third of
 * the instructions of a small request and two of its eight syscalls.
 *
 * Reads go into one worker-wide buffer; a request that arrived whole (the
 * usual case) is served from there, and only what is left of a partial or
 * pipelined request is kept by its connection. A large body is read
 * straight into an allocation of its own size, which the engine then holds
 * by reference. Replies are written with one writev from the engine's own
 * buffers; the connection keeps only what the socket did not take.
 *
 * conn.c's scanner checks the head as it arrives (limits, methods, folded
 * lines, the announced body), its deadlines are this file's one timer per
 * connection, and its answers refuse what it finds.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/listener.h>

#include "common/buf.h"
#include "common/classify.h"
#include "common/clock.h"
#include "common/log.h"
#include "worker/conn.h"
#include "worker/http.h"
#include "worker/ident.h"
#include "worker/request.h"
#include "worker/worker.h"

#define HTTP_RBUF       (64 << 10) /* the worker's read buffer */
#define HTTP_READ       (16 << 10) /* asked of a read into it */
#define HTTP_BUSY_CAP   (64 << 10) /* read past a request being served */
#define HTTP_DIRECT_MIN (8 << 10)  /* a body read into its own memory */
#define HTTP_WRITE_S    3600       /* a reply that does not move */
#define HTTP_LINGER_MS  1000       /* a refused client may read our */
#define HTTP_LINGER_MAX (1 << 20)  /* answer: what we drop meanwhile */
#define HTTP_SWEEP_MS   20
#define HTTP_MAX_ROUTES 32

/* Connection phases. */
enum {
	HP_HEAD,   /* a request is due by the deadline */
	HP_BUSY,   /* its handler or the engine has it */
	HP_IDLE,   /* between requests (keep-alive) */
	HP_REJECT, /* answered at once, closing by the deadline */
	HP_CLOSED  /* closing: freed from the loop */
};

/* A header of the request: offsets into the head, the name's length. */
struct hhdr {
	uint32_t k, v;
	uint32_t klen;
};

struct hconn {
	LIST_ENTRY(hconn) link;
	struct worker *w;
	int fd;
	int phase;
	struct event rev, wev, tev;
	/* tev is armed lazily: it fires at tev_at (0: not armed), and what
	 * is due then (due_ms, HTTP_NOT_DUE for nothing) may have moved
	 * later, when it is armed again for the rest */
	int64_t due_ms, tev_at;
	int64_t deadline_ms;
	int64_t dropped; /* HP_REJECT: bytes read and dropped */
	struct conn_scan scan;
	size_t scanned; /* bytes of this request the scanner has seen */
	struct buf in;  /* the start of the next request(s) */
	/* the request: the head (NUL-separated), its headers */
	struct buf head;
	struct hhdr *hdr;
	int nhdr, ahdr;
	/* the first Connection, Expect, Transfer-Encoding and Content-Length
	 * headers (indexes into hdr, -1 for none), noted while parsing; a
	 * second Content-Length */
	int h_conn, h_expect, h_te, h_clen, h_clen2;
	uint32_t path, target;
	int method, http10, keepalive, expect;
	int parsed; /* head parsed (its length in head_len) */
	size_t head_len;
	/* its body: a run, or an allocation being read into (bmem) */
	const char *bp;
	size_t bn;
	char *bmem;
	size_t bgot, blen;
	struct evbuffer *beb;
	struct buf chunked; /* a chunked body, decoded */
	/* the reply */
	struct buf rh;  /* header lines */
	struct buf out; /* what the socket did not take, from oo */
	size_t oo;
	int close;   /* after this reply */
	int chunk;   /* the stream is chunked */
	int stream;  /* a stream reply is open */
	int replied; /* the reply is all in out (or on the wire) */
	int inhandler;
	int served; /* a request was dispatched on it */
	struct req *req;
	struct peer peer;
	int peer_known;
	LIST_ENTRY(hconn) cork_link; /* holding stream bytes (http_cork) */
	int in_cork;
};

LIST_HEAD(hconn_list, hconn);

struct route {
	const char *path;
	http_cb cb;
};

/* The parser's answers (past what conn.c's scan refuses). */
static const char why_malformed[] = "malformed request head";
static const char why_clen[] = "invalid Content-Length";
static const char why_clen2[] = "more than one Content-Length";
static const char why_te_clen[] = "both Transfer-Encoding and Content-Length";

static struct hconn_list conns = LIST_HEAD_INITIALIZER(conns);
static int nconns;
/* http_cork: how deep, and the connections holding stream bytes */
static int corking;
static struct hconn_list corked = LIST_HEAD_INITIALIZER(corked);
static struct route routes[HTTP_MAX_ROUTES];
static int nroutes;
static http_cb route_notfound;
static struct evconnlistener *listeners[8];
static struct conn_limits lim;
static struct worker *http_w;
static char *rbuf;
static struct event *ev_sweep;
static int draining;

static void http_next(struct hconn *);
static void http_reply_done(struct hconn *);
static void http_close(struct hconn *);

/* A pointer to bytes only read, as iovec and free take them. */
static inline void *
iov_ptr(const void *p)
{
	return (void *)(uintptr_t)p;
}

/* ---- timers ---- */

#define HTTP_NOT_DUE INT64_MAX

/* Arm tev for ms (>= 1) from now (now being clock_ms()). */
static void
http_tev_add(struct hconn *c, int64_t now, int64_t ms)
{
	struct timeval tv;

	c->tev_at = now + ms;
	tv.tv_sec = (time_t)(ms / 1000);
	tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
	event_add(&c->tev, &tv);
}

/* c's timer is due in ms from now. A timer already armed to fire no
 * later is left as it is (its callback arms it again for the rest), so
 * a keep-alive connection does not add and delete a timer per request. */
static void
http_timer(struct hconn *c, int64_t ms)
{
	int64_t now = clock_ms();

	if (ms < 1)
		ms = 1;
	c->due_ms = now + ms;
	if (c->tev_at != 0 && c->tev_at <= c->due_ms)
		return;
	http_tev_add(c, now, ms);
}

/* Nothing is due on c's timer (if it fires, it does nothing). */
static inline void
http_untimer(struct hconn *c)
{
	c->due_ms = HTTP_NOT_DUE;
}

/* A new request's first bytes: its deadline starts. */
static void
http_begin(struct hconn *c)
{
	c->phase = HP_HEAD;
	c->deadline_ms = clock_ms() + http_w->cfg->client_header_timeout_ms;
	conn_scan_init(&c->scan);
	c->scanned = 0;
}

/* ---- closing ---- */

/* Free c now (its request, if any, is cancelled first). */
static void
http_free(struct hconn *c)
{
	struct req *r = c->req;

	c->req = NULL;
	if (r != NULL)
		req_client_gone(r);
	LIST_REMOVE(c, link);
	if (c->in_cork)
		LIST_REMOVE(c, cork_link);
	nconns--;
	event_del(&c->rev);
	event_del(&c->wev);
	event_del(&c->tev);
	close(c->fd);
	buf_free(&c->in);
	buf_free(&c->head);
	buf_free(&c->rh);
	buf_free(&c->out);
	buf_free(&c->chunked);
	free(c->hdr);
	free(c->bmem);
	if (c->beb)
		evbuffer_free(c->beb);
	free(c);
}

/* Close c from the loop, not from inside a caller that still holds it
 * (the engine between its reply and letting go, a handler). */
static void
http_close(struct hconn *c)
{
	if (c->phase == HP_CLOSED)
		return;
	c->phase = HP_CLOSED;
	event_del(&c->rev);
	event_del(&c->wev);
	event_active(&c->tev, EV_TIMEOUT, 0);
}

/* ---- writing ---- */

/* Write what out holds; 0, or -1 when the connection broke (closed). */
static int
http_flush(struct hconn *c)
{
	ssize_t k;

	while (c->oo < c->out.len) {
		k = send(c->fd, c->out.data + c->oo, c->out.len - c->oo,
		         MSG_NOSIGNAL);
		if (k > 0) {
			c->oo += (size_t)k;
			continue;
		}
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			event_add(&c->wev, NULL);
			http_timer(c, (int64_t)HTTP_WRITE_S * 1000);
			return 0;
		}
		http_close(c);
		return -1;
	}
	buf_park(&c->out); /* only a full socket or a cork needs it */
	c->oo = 0;
	event_del(&c->wev);
	if (c->replied)
		http_reply_done(c);
	return 0;
}

/* Send the n pieces of v: straight to the socket when nothing waits
 * before them, what it does not take (or all of it) into out. */
static void
http_send(struct hconn *c, struct iovec *v, int n)
{
	size_t done = 0;
	ssize_t k;
	int hold = 0;

	if (c->phase == HP_CLOSED)
		return;
	if (corking && (c->stream || c->in_cork)) {
		/* a read's first piece goes now (most reads bring one frame),
		 * the rest wait in out for http_cork(0) */
		hold = c->in_cork;
		if (!c->in_cork) {
			LIST_INSERT_HEAD(&corked, c, cork_link);
			c->in_cork = 1;
		}
	}
	if (!hold && c->out.len == c->oo) {
		do
			k = writev(c->fd, v, n);
		while (k < 0 && errno == EINTR);
		if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
			http_close(c);
			return;
		}
		done = k > 0 ? (size_t)k : 0;
	}
	for (int i = 0; i < n; i++) {
		if (done >= v[i].iov_len) {
			done -= v[i].iov_len;
			continue;
		}
		buf_add(&c->out, (const char *)v[i].iov_base + done,
		        v[i].iov_len - done);
		done = 0;
	}
	if (c->out.oom) {
		http_close(c);
		return;
	}
	if (!hold && c->out.len > c->oo) {
		event_add(&c->wev, NULL);
		http_timer(c, (int64_t)HTTP_WRITE_S * 1000);
	}
}

/* See http.h. */
void
http_cork(int on)
{
	struct hconn *c;

	if (on) {
		corking++;
		return;
	}
	if (corking == 0 || --corking > 0)
		return;
	while ((c = LIST_FIRST(&corked)) != NULL) {
		LIST_REMOVE(c, cork_link);
		c->in_cork = 0;
		/* a socket that was full already waits to write it all */
		if (c->phase != HP_CLOSED && c->out.len > c->oo &&
		    !event_pending(&c->wev, EV_WRITE, NULL))
			http_flush(c);
	}
}

/* The socket can take more. */
static void
http_write_cb(evutil_socket_t fd, short ev, void *arg)
{
	(void)fd;
	(void)ev;
	http_flush(arg);
}

/* ---- the request head ---- */

/* Whether header value v (a comma list) holds token t. */
static int
http_has_token(const char *v, const char *t)
{
	size_t n = strlen(t);

	for (const char *p = v; p && *p;) {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (strncasecmp(p, t, n) == 0 && (p[n] == '\0' || p[n] == ',' ||
		                                  p[n] == ' ' || p[n] == '\t'))
			return 1;
		p = strchr(p, ',');
	}
	return 0;
}

/* Note header name[0, n), the nhdr-th, if it is the first of the ones
 * the server itself reads. */
static inline void
http_note(struct hconn *c, const char *name, size_t n)
{
	int *at = NULL;

	switch (n) {
	case 6:
		at = strncasecmp(name, "Expect", 6) == 0 ? &c->h_expect : NULL;
		break;
	case 10:
		at = strncasecmp(name, "Connection", 10) == 0 ? &c->h_conn
		                                              : NULL;
		break;
	case 14:
		at = strncasecmp(name, "Content-Length", 14) == 0 ? &c->h_clen
		                                                  : NULL;
		break;
	case 17:
		at = strncasecmp(name, "Transfer-Encoding", 17) == 0 ? &c->h_te
		                                                     : NULL;
		break;
	}
	if (at != NULL && *at < 0)
		*at = c->nhdr;
	else if (at == &c->h_clen)
		c->h_clen2 = 1;
}

/* The value of header i, or NULL for -1. */
static inline const char *
http_hval(const struct hconn *c, int i)
{
	return i < 0 ? NULL : c->head.data + c->hdr[i].v;
}

/* Parse the head (n bytes at p, up to and including its blank line;
 * checked by the scanner: methods, sizes, no folding) into c; 0, or -1
 * when it is malformed: no blank line where it ends, a NUL anywhere. */
static int
http_parse_head(struct hconn *c, const char *p, size_t n)
{
	char *s, *e, *eol, *sp, *colon, *v, *ve;
	const char *conn;
	size_t k;
	int blank = 0;

	if (memchr(p, '\0', n) != NULL)
		return -1;
	/* room for the head, a NUL and the path after it: no move later */
	buf_reset(&c->head);
	if (buf_reserve(&c->head, 2 * n + 2) == -1)
		return -1;
	memcpy(c->head.data, p, n);
	c->head.data[n] = '\0';
	c->head.len = n + 1;
	s = c->head.data;
	e = s + n;
	/* empty lines ("" or "\r") first, as the scan skips them */
	while (s < e &&
	       (*s == '\n' || (*s == '\r' && s + 1 < e && s[1] == '\n')))
		s += *s == '\r' ? 2 : 1;
	if ((eol = memchr(s, '\n', (size_t)(e - s))) == NULL)
		return -1;
	*eol = '\0';
	if (eol > s && eol[-1] == '\r')
		eol[-1] = '\0';
	/* METHOD SP target SP HTTP/1.x */
	if ((sp = strchr(s, ' ')) == NULL)
		return -1;
	*sp = '\0';
	c->method = strcmp(s, "GET") == 0    ? HTTP_GET
	            : strcmp(s, "HEAD") == 0 ? HTTP_HEAD
	                                     : HTTP_POST;
	s = sp + 1;
	if ((sp = strchr(s, ' ')) == NULL || sp == s)
		return -1;
	*sp = '\0';
	if (strncmp(sp + 1, "HTTP/1.", 7) != 0 || sp[8] < '0' || sp[8] > '9' ||
	    sp[9] != '\0')
		return -1;
	c->http10 = sp[8] == '0';
	c->target = (uint32_t)(s - c->head.data);
	/* the path: the target up to its query, copied after the head */
	c->path = (uint32_t)c->head.len;
	k = strcspn(s, "?#");
	memcpy(c->head.data + c->head.len, s, k);
	c->head.len += k;
	c->head.data[c->head.len] = '\0';
	s = eol + 1;
	c->nhdr = 0;
	c->h_conn = c->h_expect = c->h_te = c->h_clen = -1;
	c->h_clen2 = 0;
	for (; s < e; s = eol + 1) {
		if ((eol = memchr(s, '\n', (size_t)(e - s))) == NULL)
			return -1;
		*eol = '\0';
		if (eol > s && eol[-1] == '\r')
			eol[-1] = '\0';
		if (*s == '\0') { /* the blank line: the head's last */
			blank = eol + 1 == e;
			break;
		}
		/* the name: up to the colon, no whitespace in it (a line with
		 * none, or with a NUL before it, is malformed) */
		colon = s + strcspn(s, ": \t");
		if (*colon != ':' || colon == s)
			return -1;
		*colon = '\0';
		for (v = colon + 1; *v == ' ' || *v == '\t'; v++)
			;
		for (ve = v + strlen(v);
		     ve > v && (ve[-1] == ' ' || ve[-1] == '\t');)
			*--ve = '\0';
		if (c->nhdr == c->ahdr) {
			int a = c->ahdr ? c->ahdr * 2 : 16;
			struct hhdr *h = realloc(c->hdr, (size_t)a * sizeof *h);

			if (h == NULL)
				return -1;
			c->hdr = h;
			c->ahdr = a;
		}
		c->hdr[c->nhdr].klen = (uint32_t)(colon - s);
		c->hdr[c->nhdr].k = (uint32_t)(s - c->head.data);
		c->hdr[c->nhdr].v = (uint32_t)(v - c->head.data);
		http_note(c, s, (size_t)(colon - s));
		c->nhdr++;
	}
	if (!blank)
		return -1;
	conn = http_hval(c, c->h_conn);
	c->keepalive = c->http10 ? conn && http_has_token(conn, "keep-alive")
	                         : !(conn && http_has_token(conn, "close"));
	conn = http_hval(c, c->h_expect);
	c->expect = !c->http10 && conn && strcasecmp(conn, "100-continue") == 0;
	return 0;
}

/* Decode the chunked body at p (n bytes, whole: the scanner saw its end)
 * into c->chunked; the bytes it took, or -1 when it is malformed. */
static long
http_dechunk(struct hconn *c, const char *p, size_t n)
{
	const char *q = p, *e = p + n, *eol;
	size_t size;
	int v, nd;

	/* conn.c's scan_chunk_byte has the grammar */
	buf_reset(&c->chunked);
	for (;;) {
		for (size = 0, nd = 0; q < e && (v = buf_hexval(*q)) >= 0;
		     q++) {
			if (size > (size_t)lim.max_body) /* the scan said 413 */
				return -1;
			size = size * 16 + (size_t)v;
			nd++;
		}
		if (nd == 0 || q >= e)
			return -1;
		if (*q == ' ' || *q == '\t' || *q == ';') { /* an extension */
			if ((eol = memchr(q, '\n', (size_t)(e - q))) == NULL)
				return -1;
			q = eol;
		} else if (*q == '\r')
			q++;
		if (q >= e || *q++ != '\n')
			return -1;
		if (size == 0)
			break;
		if ((size_t)(e - q) < size)
			return -1;
		buf_add(&c->chunked, q, size);
		q += size;
		if (q < e && *q == '\r')
			q++;
		if (q >= e || *q++ != '\n')
			return -1;
	}
	for (;;) { /* trailers, up to the empty line */
		if (q < e && *q == '\r' && (q + 1 >= e || q[1] != '\n'))
			return -1;
		if (q < e && (*q == '\n' || *q == '\r')) {
			q += *q == '\r' ? 2 : 1;
			break;
		}
		if ((eol = memchr(q, '\n', (size_t)(e - q))) == NULL)
			return -1;
		q = eol + 1;
	}
	return c->chunked.oom ? -1 : (long)(q - p);
}

/* ---- serving ---- */

/* Refuse the request at once with status and close after a short linger,
 * dropping what the client still sends meanwhile. */
static void
http_reject(struct hconn *c, int status, const char *why)
{
	struct buf b = {0};
	struct iovec v;

	log_info("refused a client request: %d %s", status, why);
	conn_error_reply(&b, status, why, c->scan.anthropic, c->scan.http10);
	v.iov_base = b.data;
	v.iov_len = b.len;
	http_send(c, &v, 1);
	buf_free(&b);
	if (c->phase == HP_CLOSED)
		return;
	if (c->out.len == c->oo)
		shutdown(c->fd, SHUT_WR);
	c->phase = HP_REJECT;
	c->deadline_ms = clock_ms() + HTTP_LINGER_MS;
	c->dropped = 0;
	buf_reset(&c->in);
	http_timer(c, HTTP_LINGER_MS);
}

/* Run the handler of the request now whole in c. */
static void
http_dispatch(struct hconn *c)
{
	const char *path = c->head.data + c->path;
	http_cb cb = route_notfound;

	c->phase = HP_BUSY;
	c->served = 1;
	c->replied = c->stream = c->chunk = 0;
	c->close = !c->keepalive || draining;
	buf_reset(&c->rh);
	http_untimer(c);
	for (int i = 0; i < nroutes; i++)
		if (strcmp(routes[i].path, path) == 0) {
			cb = routes[i].cb;
			break;
		}
	c->inhandler = 1;
	cb(c, c->w);
	c->inhandler = 0;
	c->bp = NULL;
	c->bn = 0;
	c->parsed = 0;
}

/* The body of the request whose head ends at offset c->head_len of the
 * n bytes at p: 1 when it is all there (c->bp, c->bn set; *used the
 * request's bytes), 0 when more is to come, -1 after refusing it. */
static int
http_body_at(struct hconn *c, const char *p, size_t n, size_t *used)
{
	size_t have = n - c->head_len;
	long k;

	if (c->scan.chunked) {
		if (!conn_scan_done(&c->scan))
			return 0;
		if ((k = http_dechunk(c, p + c->head_len, have)) < 0) {
			http_reject(c, 400, "malformed chunked request body");
			return -1;
		}
		c->bp = c->chunked.data ? c->chunked.data : "";
		c->bn = c->chunked.len;
		*used = c->head_len + (size_t)k;
		return 1;
	}
	if (c->scan.clen <= 0) {
		c->bp = "";
		c->bn = 0;
		*used = c->head_len;
		return 1;
	}
	if (have >= (size_t)c->scan.clen) {
		c->bp = p + c->head_len;
		c->bn = (size_t)c->scan.clen;
		*used = c->head_len + c->bn;
		return 1;
	}
	return 0;
}

/* Refuse with status and why; -1. */
static int
http_quick_no(struct hconn *c, int status, const char *why)
{
	http_reject(c, status, why);
	return -1;
}

/* The parsed head's framing headers: one Content-Length at most, a
 * number and nothing else, not beside Transfer-Encoding (the ways a
 * request is framed differently by two readers). Its value in *clen (-1:
 * none); 0, or -1 after refusing the request. */
static int
http_framing(struct hconn *c, long long *clen)
{
	const char *v;

	*clen = -1;
	if ((v = http_hval(c, c->h_clen)) == NULL)
		return 0;
	if (c->h_clen2)
		return http_quick_no(c, 400, why_clen2);
	if (c->h_te >= 0)
		return http_quick_no(c, 400, why_te_clen);
	if ((*clen = conn_clen(v, strlen(v))) < 0)
		return http_quick_no(c, 400, why_clen);
	return 0;
}

/* The head (scan.bytes of the n bytes at p) is in: parse it, and check
 * its framing and announced length. 0 (c->parsed), or -1 after refusing
 * it. */
static int
http_head_check(struct hconn *c, const char *p, size_t n)
{
	const char *why = NULL;
	long long clen;
	int rc;

	c->head_len = c->scan.bytes;
	if (c->head_len > n || http_parse_head(c, p, c->head_len) == -1)
		return http_quick_no(c, 400, why_malformed);
	if (http_framing(c, &clen) == -1)
		return -1;
	/* the scanner framed the body by the same header */
	if (!c->scan.chunked && clen != c->scan.clen)
		return http_quick_no(c, 400, why_clen);
	if (c->h_te >= 0 && !c->scan.chunked) {
		if ((rc = conn_scan_te(&c->scan, &why)) == 0) {
			rc = 400; /* the scan saw no Transfer-Encoding */
			why = why_malformed;
		}
		return http_quick_no(c, rc, why);
	}
	if (clen > lim.max_body)
		return http_quick_no(c, 413, conn_why_body);
	c->parsed = 1;
	return 0;
}

/* The head of the request at p (n bytes so far) is in: parse it once,
 * and when the body is large and not all there, start reading it into an
 * allocation of its own (1: the n bytes are taken). 0 to wait for more,
 * -1 after refusing it. */
static int
http_head_in(struct hconn *c, const char *p, size_t n)
{
	static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
	struct iovec v;

	if (!c->parsed && http_head_check(c, p, n) == -1)
		return -1;
	if (c->expect &&
	    (c->scan.chunked || n - c->head_len < (size_t)c->scan.clen)) {
		c->expect = 0; /* once */
		v.iov_base = iov_ptr(cont);
		v.iov_len = sizeof cont - 1;
		http_send(c, &v, 1);
	}
	if (c->scan.chunked || c->scan.clen < HTTP_DIRECT_MIN ||
	    n - c->head_len >= (size_t)c->scan.clen)
		return 0;
	c->blen = (size_t)c->scan.clen;
	if ((c->bmem = malloc(c->blen)) == NULL) {
		http_reject(c, 503, "out of memory");
		return -1;
	}
	c->bgot = n - c->head_len;
	memcpy(c->bmem, p + c->head_len, c->bgot);
	return 1;
}

/* The evbuffer's cleanup of a body read into its own allocation. */
static void
http_bmem_free(const void *data, size_t len, void *arg)
{
	(void)len;
	(void)arg;
	free(iov_ptr(data));
}

/* A body read into its own allocation is whole: serve it by reference. */
static void
http_bmem_done(struct hconn *c)
{
	if (c->beb == NULL && (c->beb = evbuffer_new()) == NULL) {
		http_reject(c, 503, "out of memory");
		return;
	}
	if (evbuffer_add_reference(c->beb, c->bmem, c->blen, http_bmem_free,
	                           NULL) == -1) {
		http_reject(c, 503, "out of memory");
		return;
	}
	c->bmem = NULL;
	c->bp = NULL;
	c->bn = c->blen;
	http_dispatch(c);
	evbuffer_drain(c->beb, evbuffer_get_length(c->beb));
}

/* Where the first "\r\n\r\n" of the n bytes at p starts, or NULL (a
 * memchr per line: memmem's general search costs more on a short head). */
static const char *
http_blank(const char *p, size_t n)
{
	const char *q = p, *e = p + n;

	while ((q = memchr(q, '\n', (size_t)(e - q))) != NULL) {
		if (e - q >= 3 && q[1] == '\r' && q[2] == '\n' && q > p &&
		    q[-1] == '\r')
			return q - 1;
		q++;
	}
	return NULL;
}

/*
 * The usual case: the whole head of the request is in the n bytes at p.
 * Check it in one go (what conn.c's scanner checks byte by byte, with its
 * answers) and parse it: 1 when done (c->parsed), 0 to leave it to the
 * scanner (the head is not all there, or the body is chunked), -1 after
 * refusing it.
 */
static int
http_quick(struct hconn *c, const char *p, size_t n)
{
	size_t m = n < lim.max_bytes ? n : lim.max_bytes, len;
	const char *end = http_blank(p, m), *why = NULL;
	long long clen;
	int rc;

	if (end == NULL)
		return 0;
	len = (size_t)(end + 4 - p);
	if ((rc = conn_scan_head(&c->scan, p, len, &lim, &why)) == 1)
		return 0;
	if (rc != 0)
		return http_quick_no(c, rc, why);
	if (http_parse_head(c, p, len) == -1)
		return http_quick_no(c, 400, why_malformed);
	if (http_framing(c, &clen) == -1)
		return -1;
	if (c->h_te >= 0)
		return 0; /* the scanner follows chunks */
	if ((rc = conn_scan_whole(&c->scan, (uint32_t)len, clen, &lim, &why)) !=
	    0)
		return http_quick_no(c, rc, why);
	c->head_len = len;
	c->parsed = 1;
	c->scanned = n;
	return 1;
}

/*
 * Take the n bytes at p, the start of c's next request: scan what is new,
 * and serve the request once whole. How many bytes it used (the rest is
 * the next request's, or this one's still incomplete start); *st -1 when
 * c was refused or closed, 0 to wait for more, 1 when a request was
 * dispatched.
 */
static size_t
http_take(struct hconn *c, const char *p, size_t n, int *st)
{
	const char *why = NULL;
	size_t used = 0;
	int rc;

	*st = 0;
	if (c->scanned == 0 && !c->parsed && (rc = http_quick(c, p, n)) != 0) {
		if (rc < 0) {
			*st = -1;
			return n;
		}
	} else if (c->scanned < n && !conn_scan_done(&c->scan)) {
		rc = conn_scan_feed(&c->scan, p + c->scanned, n - c->scanned,
		                    &lim, &why);
		c->scanned = n;
		/* the scan went on into the body and refused it: the head is
		 * judged first, as when it is checked whole */
		if (rc != 0 && conn_scan_head_done(&c->scan) && !c->parsed &&
		    http_head_check(c, p, n) == -1) {
			*st = -1;
			return n;
		}
		if (rc != 0) {
			http_reject(c, rc, why);
			*st = -1;
			return n;
		}
	}
	if (!conn_scan_head_done(&c->scan))
		return 0;
	switch (http_head_in(c, p, n)) {
	case -1:
		*st = -1;
		return n;
	case 1: /* reading into c->bmem */
		return n;
	}
	if ((rc = http_body_at(c, p, n, &used)) <= 0) {
		*st = rc;
		return rc < 0 ? n : 0;
	}
	*st = 1;
	return used;
}

/* Read into c->bmem; 1 when the body is whole, 0 for more later, -1 when
 * the connection ended. */
static int
http_read_bmem(struct hconn *c)
{
	ssize_t k;

	while (c->bgot < c->blen) {
		k = recv(c->fd, c->bmem + c->bgot, c->blen - c->bgot, 0);
		if (k > 0) {
			c->bgot += (size_t)k;
			continue;
		}
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		return -1;
	}
	return 1;
}

/* Serve the requests c->in holds, one at a time: whole ones are
 * dispatched, the start of an incomplete one is kept. */
static void
http_serve_in(struct hconn *c)
{
	size_t used;
	int st;

	while (c->phase == HP_HEAD && c->in.len > 0) {
		used = http_take(c, c->in.data, c->in.len, &st);
		if (st < 0)
			return;
		if (st == 0) {
			if (c->bmem != NULL)
				buf_reset(&c->in); /* taken into bmem */
			return;
		}
		/* dispatch from c->in: the request's bytes go after */
		http_dispatch(c);
		if (c->phase == HP_CLOSED)
			return;
		memmove(c->in.data, c->in.data + used, c->in.len - used);
		c->in.len -= used;
		if (c->phase == HP_IDLE && c->in.len > 0)
			http_begin(c);
	}
	if (c->in.len == 0) /* only a partial or pipelined request needs it */
		buf_free(&c->in);
}

/* Bytes read into the worker's buffer (n at rbuf) for c in HP_HEAD with
 * nothing kept: serve from there, keep what is left. */
static void
http_serve_rbuf(struct hconn *c, size_t n)
{
	size_t used = 0, k;
	int st;

	while (used < n && c->phase == HP_HEAD && c->in.len == 0) {
		k = http_take(c, rbuf + used, n - used, &st);
		if (st < 0)
			return;
		if (st == 0) {
			if (c->bmem == NULL)
				buf_add(&c->in, rbuf + used, n - used);
			return;
		}
		used += k;
		/* what follows is the next request's: kept before the
		 * handler runs, which may finish the reply at once */
		if (used < n)
			buf_add(&c->in, rbuf + used, n - used);
		http_dispatch(c);
		if (c->phase == HP_IDLE && c->in.len > 0) {
			http_begin(c);
			http_serve_in(c);
		}
		return;
	}
}

/* Readable. */
static void
http_read_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct hconn *c = arg;
	ssize_t k = 0;
	char *at;

	(void)ev;
	switch (c->phase) {
	case HP_REJECT:
		while (c->dropped <= HTTP_LINGER_MAX &&
		       (k = recv(fd, rbuf, HTTP_RBUF, 0)) > 0)
			c->dropped += k;
		if (k == 0 || (k < 0 && errno != EAGAIN) ||
		    c->dropped > HTTP_LINGER_MAX ||
		    clock_ms() >= c->deadline_ms)
			http_free(c);
		return;
	case HP_BUSY: /* watch for a close; keep what comes, up to a cap */
		if (buf_reserve(&c->in, HTTP_READ) == -1) {
			http_free(c);
			return;
		}
		at = c->in.data + c->in.len;
		k = recv(fd, at, c->in.cap - c->in.len - 1, 0);
		if (k > 0) {
			c->in.len += (size_t)k;
			if (c->in.len >= HTTP_BUSY_CAP)
				event_del(&c->rev);
		} else if (k == 0 || (errno != EAGAIN && errno != EINTR))
			http_free(c);
		return;
	case HP_CLOSED:
		return;
	case HP_IDLE:
		http_begin(c);
		break;
	}
	if (c->bmem != NULL) {
		if ((k = http_read_bmem(c)) < 0)
			http_free(c);
		else if (k == 1)
			http_bmem_done(c);
		else if (!c->inhandler)
			http_timer(c, c->deadline_ms - clock_ms());
		return;
	}
	if (c->in.len > c->scanned) { /* kept, not yet looked at */
		http_serve_in(c);
		if (c->phase != HP_HEAD || c->bmem != NULL)
			return;
	}
	if (c->in.len > 0) { /* add to what is kept */
		if (buf_reserve(&c->in, HTTP_READ) == -1) {
			http_free(c);
			return;
		}
		k = recv(fd, c->in.data + c->in.len, c->in.cap - c->in.len - 1,
		         0);
		if (k > 0) {
			c->in.len += (size_t)k;
			http_serve_in(c);
		}
	} else if ((k = recv(fd, rbuf, HTTP_READ, 0)) > 0)
		http_serve_rbuf(c, (size_t)k);
	if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR)) {
		http_free(c);
		return;
	}
	if (c->bmem != NULL && c->phase == HP_HEAD) {
		if ((k = http_read_bmem(c)) < 0) {
			http_free(c);
			return;
		}
		if (k == 1) {
			http_bmem_done(c);
			return;
		}
	}
	if (c->phase == HP_HEAD) /* more to come, by the deadline */
		http_timer(c, c->deadline_ms - clock_ms());
}

/* The timer: a deadline passed, or a close asked from the loop. */
static void
http_timer_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct hconn *c = arg;
	int64_t now;

	(void)fd;
	(void)ev;
	c->tev_at = 0;
	if (c->phase != HP_CLOSED) { /* a close comes at once */
		if (c->due_ms == HTTP_NOT_DUE)
			return;
		if ((now = clock_ms()) < c->due_ms) {
			http_tev_add(c, now, c->due_ms - now);
			return;
		}
	}
	switch (c->phase) {
	case HP_HEAD:
		if ((now = clock_ms()) < c->deadline_ms) {
			http_timer(c, c->deadline_ms - now);
			return;
		}
		if (c->scanned > 0 || c->bmem != NULL || c->in.len > 0)
			log_info("closed a client connection that did not "
			         "send its request within %d ms",
			         http_w->cfg->client_header_timeout_ms);
		break;
	case HP_BUSY: /* a reply the client does not read */
		if (c->out.len == c->oo)
			return;
		log_info("closed a client connection that read nothing of "
		         "its reply for %d s",
		         HTTP_WRITE_S);
		break;
	default: /* idle past keep-alive, a lingering refusal, a close */
		break;
	}
	http_free(c);
}

/* The reply is on the wire: close, or wait for the next request. */
static void
http_reply_done(struct hconn *c)
{
	c->replied = 0;
	if (c->close || draining) {
		http_close(c);
		return;
	}
	c->phase = HP_IDLE;
	http_timer(c, http_w->cfg->keepalive_timeout_ms);
	if (c->in.len >= HTTP_BUSY_CAP)
		event_add(&c->rev, NULL);
	if (c->in.len > 0 && !c->inhandler)
		http_next(c);
}

/* Serve what came behind the reply just finished, from the loop (the
 * engine may still hold the request that replied). */
static void
http_next(struct hconn *c)
{
	event_active(&c->rev, EV_READ, 0);
}

/* ---- the request, for handlers ---- */

int
http_method(const struct hconn *c)
{
	return c->method;
}

const char *
http_path(const struct hconn *c)
{
	return c->head.data + c->path;
}

const char *
http_target(const struct hconn *c)
{
	return c->head.data + c->target;
}

/* A header: see http.h. */
const char *
http_header_n(const struct hconn *c, const char *name, size_t n)
{
	for (int i = 0; i < c->nhdr; i++)
		if (c->hdr[i].klen == n &&
		    strncasecmp(c->head.data + c->hdr[i].k, name, n) == 0)
			return c->head.data + c->hdr[i].v;
	return NULL;
}

const char *
http_body(const struct hconn *c, size_t *len)
{
	*len = c->bn;
	return c->bp;
}

struct evbuffer *
http_body_buf(const struct hconn *c)
{
	return c->bp == NULL && c->beb != NULL ? c->beb : NULL;
}

/* The peer: see http.h. */
const struct peer *
http_peer(struct hconn *c)
{
	if (!c->peer_known) {
		ident_peer(c->fd, &c->peer);
		c->peer_known = 1;
	}
	return &c->peer;
}

/* See http.h. */
void
http_attach(struct hconn *c, struct req *r)
{
	c->req = r;
}

/* ---- the reply ---- */

/* See http.h. */
void
http_add_header_n(struct hconn *c, const char *name, size_t nlen,
                  const char *value, size_t vlen)
{
	if (nlen == 10 && strncasecmp(name, "Connection", 10) == 0) {
		if (http_has_token(value, "close"))
			c->close = 1;
		return;
	}
	if (conn_line_breaks(name, nlen) || memchr(name, ':', nlen) != NULL ||
	    conn_line_breaks(value, vlen))
		return; /* it would end the line */
	buf_add_hline(&c->rh, name, nlen, value, vlen);
}

/* See http.h. */
void
http_add_lines(struct hconn *c, const char *lines, size_t n)
{
	buf_add(&c->rh, lines, n);
}

#define HTTP_CHUNKED ((size_t)-1) /* http_head: a chunked stream */

/* The reply head: the status line, the handler's headers in order, then
 * Content-Type, Date, Content-Length (or Transfer-Encoding) and
 * Connection as evhttp wrote them; HTTP/1.0 gets no Date, and a length
 * and keep-alive only when it asked to keep the connection. */
static void
http_head(struct hconn *c, struct buf *b, int status, const char *ctype,
          size_t n)
{
	char num[BUF_NUM_MAX];

	buf_add(b, c->http10 ? "HTTP/1.0 " : "HTTP/1.1 ", 9);
	buf_add(b, num, buf_fmt_u(num, (unsigned)status));
	buf_addc(b, ' ');
	buf_adds(b, http_reason(status));
	buf_add(b, "\r\n", 2);
	buf_add(b, c->rh.data, c->rh.len);
	buf_add(b, "Content-Type: ", 14);
	buf_adds(b, ctype);
	buf_add(b, "\r\n", 2);
	if (c->http10) {
		if (!c->close && n != HTTP_CHUNKED) {
			buf_add(b, "Content-Length: ", 16);
			buf_add(b, num, buf_fmt_u(num, n));
			buf_add(b, "\r\nConnection: keep-alive\r\n", 26);
		} else if (n == HTTP_CHUNKED)
			buf_add(b, "Connection: close\r\n", 19);
		buf_add(b, "\r\n", 2);
		return;
	}
	if (n == HTTP_CHUNKED)
		buf_add(b, "Transfer-Encoding: chunked\r\n", 28);
	buf_add(b, "Date: ", 6);
	buf_adds(b, conn_date());
	buf_add(b, "\r\n", 2);
	if (n != HTTP_CHUNKED) {
		buf_add(b, "Content-Length: ", 16);
		buf_add(b, num, buf_fmt_u(num, n));
		buf_add(b, "\r\n", 2);
	}
	if (c->close)
		buf_add(b, "Connection: close\r\n", 19);
	buf_add(b, "\r\n", 2);
}

/* See http.h. */
void
http_reply(struct hconn *c, int status, const char *ctype, const char *body,
           size_t n)
{
	static struct buf head; /* reused, never shrunk */
	struct iovec v[2];

	if (c->phase != HP_BUSY || c->stream || c->replied)
		return;
	buf_reset(&head);
	http_head(c, &head, status, ctype, n);
	if (head.oom) {
		http_close(c);
		return;
	}
	v[0].iov_base = head.data;
	v[0].iov_len = head.len;
	v[1].iov_base = iov_ptr(body);
	v[1].iov_len = c->method == HTTP_HEAD ? 0 : n;
	c->replied = 1;
	buf_reset(&c->rh);
	http_send(c, v, 2);
	if (c->phase == HP_BUSY && c->out.len == c->oo)
		http_reply_done(c);
}

/* See http.h. */
void
http_stream_start(struct hconn *c, int status, const char *ctype)
{
	static struct buf head;
	struct iovec v;

	if (c->phase != HP_BUSY || c->stream || c->replied)
		return;
	if (c->http10)
		c->close = 1; /* the close ends the stream */
	c->chunk = !c->http10;
	c->stream = 1;
	buf_reset(&head);
	http_head(c, &head, status, ctype, HTTP_CHUNKED);
	if (head.oom) {
		http_close(c);
		return;
	}
	v.iov_base = head.data;
	v.iov_len = head.len;
	http_send(c, &v, 1);
	/* a stream may last minutes: let go of the request's head now (the
	 * engine read what it needs at the start) and of the reply's */
	buf_free(&c->rh);
	buf_free(&c->head);
	free(c->hdr);
	c->hdr = NULL;
	c->nhdr = c->ahdr = 0;
	c->path = c->target = 0;
	buf_free(&c->chunked);
}

/* See http.h. */
void
http_stream_data(struct hconn *c, const char *p, size_t n)
{
	char hex[20], *q = hex + sizeof hex;
	struct iovec v[3];
	size_t k = n;

	if (!c->stream || n == 0)
		return;
	if (!c->chunk) {
		v[0].iov_base = iov_ptr(p);
		v[0].iov_len = n;
		http_send(c, v, 1);
		return;
	}
	*--q = '\n';
	*--q = '\r';
	do
		*--q = "0123456789abcdef"[k & 15];
	while ((k >>= 4) != 0);
	v[0].iov_base = q;
	v[0].iov_len = (size_t)(hex + sizeof hex - q);
	v[1].iov_base = iov_ptr(p);
	v[1].iov_len = n;
	v[2].iov_base = iov_ptr("\r\n");
	v[2].iov_len = 2;
	http_send(c, v, 3);
}

/* See http.h. */
void
http_stream_end(struct hconn *c)
{
	struct iovec v = {iov_ptr("0\r\n\r\n"), 5};

	if (!c->stream)
		return;
	c->stream = 0;
	c->replied = 1;
	if (c->chunk)
		http_send(c, &v, 1);
	if (c->phase == HP_BUSY && c->out.len == c->oo)
		http_reply_done(c);
}

/* ---- connections ---- */

/* A new connection (from a listener). */
static void
http_accept_cb(struct evconnlistener *lev, evutil_socket_t fd,
               struct sockaddr *sa, int socklen, void *arg)
{
	struct worker *w = arg;
	struct hconn *c;

	(void)lev;
	(void)sa;
	(void)socklen;
	/* one connection per wake-up: see server.c */
	http_listeners(w, 0);
	event_active(w->ev_reaccept, EV_TIMEOUT, 0);
	if ((c = calloc(1, sizeof *c)) == NULL) {
		close(fd);
		return;
	}
	c->w = w;
	c->fd = (int)fd;
	event_assign(&c->rev, w->base, fd, EV_READ | EV_PERSIST, http_read_cb,
	             c);
	event_assign(&c->wev, w->base, fd, EV_WRITE | EV_PERSIST, http_write_cb,
	             c);
	evtimer_assign(&c->tev, w->base, http_timer_cb, c);
	LIST_INSERT_HEAD(&conns, c, link);
	nconns++;
	http_begin(c);
	event_add(&c->rev, NULL);
	http_timer(c, w->cfg->client_header_timeout_ms);
}

/* Listeners on or off (one accept per wake-up; EMFILE back-off). */
void
http_listeners(struct worker *w, int on)
{
	(void)w;
	for (int i = 0; i < 8; i++)
		if (listeners[i] != NULL) {
			if (on)
				evconnlistener_enable(listeners[i]);
			else
				evconnlistener_disable(listeners[i]);
		}
}

/* See http.h. */
int
http_route(const char *path, http_cb cb)
{
	if (nroutes == HTTP_MAX_ROUTES)
		return -1;
	routes[nroutes].path = path;
	routes[nroutes].cb = cb;
	nroutes++;
	return 0;
}

/* See http.h. */
int
http_setup(struct worker *w, http_cb notfound)
{
	http_w = w;
	route_notfound = notfound;
	lim.max_bytes = (uint32_t)w->cfg->max_header_bytes;
	lim.max_headers = (uint32_t)w->cfg->max_headers;
	lim.max_body = CONN_MAX_BODY;
	if (rbuf == NULL && (rbuf = malloc(HTTP_RBUF)) == NULL)
		return -1;
	for (int i = 0; i < w->nlisten && i < 8; i++) {
		listeners[i] = evconnlistener_new(w->base, http_accept_cb, w,
		                                  LEV_OPT_CLOSE_ON_EXEC, -1,
		                                  w->listen_fd[i]);
		if (listeners[i] == NULL) {
			log_warn("listening on fd %d failed", w->listen_fd[i]);
			return -1;
		}
		evconnlistener_set_error_cb(listeners[i], conn_accept_error);
	}
	return 0;
}

/* See http.h. */
void
http_stop_accepting(struct worker *w)
{
	(void)w;
	for (int i = 0; i < 8; i++)
		if (listeners[i] != NULL) {
			evconnlistener_free(listeners[i]);
			listeners[i] = NULL;
		}
}

/* Whether c is a connection just accepted that has sent nothing yet. */
static int
http_fresh(const struct hconn *c)
{
	return !c->served && c->phase == HP_HEAD && c->scanned == 0 &&
	       c->in.len == 0 && c->bmem == NULL;
}

/* Whether c is an idle keep-alive connection: it was served, and has no
 * request, nothing to write, nothing sent by the client that is not read.
 * A connection that has sent nothing yet is not closed: its request may
 * be on its way (the drain's linger serves it). */
static int
http_idle(const struct hconn *c)
{
	int n = 0;

	if (!c->served || c->req != NULL || c->out.len > c->oo ||
	    c->in.len > 0 || c->bmem != NULL || c->scanned > 0 ||
	    (c->phase != HP_HEAD && c->phase != HP_IDLE))
		return 0;
	return ioctl(c->fd, FIONREAD, &n) == 0 && n == 0;
}

/* Close the idle connections. */
static void
http_sweep(evutil_socket_t fd, short ev, void *arg)
{
	struct hconn *c, *next;

	(void)fd;
	(void)ev;
	(void)arg;
	for (c = LIST_FIRST(&conns); c != NULL; c = next) {
		next = LIST_NEXT(c, link);
		if (http_idle(c))
			http_close(c);
	}
}

/*
 * Drain: every reply from now on closes its connection, and idle
 * keep-alive connections are closed at once and then every HTTP_SWEEP_MS
 * as they become idle (a reply still being written, or a request on its
 * way, is finished first), so no client is cut and none stays on the old
 * config.
 */
void
http_drain(struct worker *w)
{
	struct timeval tv = {0, HTTP_SWEEP_MS * 1000};

	draining = 1;
	http_sweep(-1, 0, NULL);
	if (ev_sweep == NULL &&
	    (ev_sweep = event_new(w->base, -1, EV_PERSIST, http_sweep, NULL)))
		event_add(ev_sweep, &tv);
}

/* See http.h. */
int
http_open(void)
{
	const struct hconn *c;
	int n = 0;

	LIST_FOREACH(c, &conns, link)
	if (!http_fresh(c))
		n++;
	return n;
}

/* See http.h. */
void
http_free_all(void)
{
	struct hconn *c;

	while ((c = LIST_FIRST(&conns)) != NULL) {
		c->req = NULL; /* the engine let go already */
		http_free(c);
	}
	http_stop_accepting(http_w);
	if (ev_sweep)
		event_free(ev_sweep);
	ev_sweep = NULL;
	free(rbuf);
	rbuf = NULL;
	nroutes = 0;
	draining = 0;
}
