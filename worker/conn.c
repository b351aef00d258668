/* Checks on client requests as their bytes arrive, the answers that
 * refuse them, and accept errors (see conn.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>

#include "common/buf.h"
#include "common/clock.h"
#include "common/json.h"
#include "common/log.h"
#include "worker/conn.h"
#include "worker/http.h"
#include "worker/ingress.h"
#include "worker/worker.h"

/* Scanner states. */
enum {
	CS_REQLINE,
	CS_HDR_START,
	CS_HDR_CR,
	CS_HDR,
	CS_BODY,
	CS_CHUNK_SIZE,
	CS_CHUNK_EXT,
	CS_CHUNK_DATA,
	CS_CHUNK_CRLF,
	CS_TRAILER_START,
	CS_TRAILER,
	CS_DONE
};

/* The scan's answers, for the byte-by-byte scan and the whole head. */
static const char why_method[] = "method not allowed; use POST (or GET for "
                                 "/v1/models, /healthz and /metrics)";
static const char why_fold[] = "obsolete line folding in the request headers";
static const char why_many[] = "too many request header fields";
static const char why_large[] = "request header fields too large";
static const char why_cr[] = "malformed request head: a CR not before LF";
static const char why_te_end[] =
    "Transfer-Encoding does not end in chunked (once)";
static const char why_te_other[] = "Transfer-Encoding other than chunked";
const char conn_why_body[] = "request body is larger than 32 MiB";

static struct worker *conn_w;
static int reserve_fd = -1;
static struct event *ev_backoff;
static int paused;

/* ---- the request scanner ---- */

/* Reset s for a new request. */
void
conn_scan_init(struct conn_scan *s)
{
	memset(s, 0, sizeof *s);
	s->clen = -1;
}

/* The framing header a header line is: decided at its 18th byte (or at
 * its end, when shorter). */
enum { CONN_F_UNSEEN = 0, CONN_F_NONE, CONN_F_CLEN, CONN_F_TE };
#define CONN_F_AT 18 /* strlen("transfer-encoding:") */

/* See conn.h. */
void
conn_clen_byte(struct conn_clen *c, char b)
{
	if (b >= '0' && b <= '9' && c->st <= 1) {
		c->st = 1;
		c->v = c->v > (INT64_MAX - (b - '0')) / 10
		           ? INT64_MAX
		           : c->v * 10 + (b - '0');
	} else if (b == ' ' || b == '\t') {
		if (c->st == 1)
			c->st = 2; /* OWS after the digits */
	} else
		c->st = 3;
}

/* See conn.h. */
int64_t
conn_clen_end(const struct conn_clen *c)
{
	return c->st == 1 || c->st == 2 ? c->v : -1;
}

/* See conn.h. */
int64_t
conn_clen(const char *v, size_t n)
{
	struct conn_clen c = {0, 0};

	for (size_t i = 0; i < n; i++)
		conn_clen_byte(&c, v[i]);
	return conn_clen_end(&c);
}

/* The end of an element of the Transfer-Encoding list (a comma, or the
 * end of its line): an empty one is skipped, as lists allow. */
static void
te_element(struct conn_te *t)
{
	if (t->ph != 0) {
		if (t->last)
			t->after = 1; /* chunked was not the last coding */
		t->last = t->m == 7;
		t->other |= !t->last;
	}
	t->m = 0;
	t->ph = 0;
}

/* One byte of a Transfer-Encoding value: elements are OWS token OWS, the
 * token "chunked" in any case; anything else in one (a parameter, a second
 * word) makes it another coding. */
static void
te_byte(struct conn_te *t, char b)
{
	if (b == ',')
		te_element(t);
	else if (b == ' ' || b == '\t') {
		if (t->ph == 1)
			t->ph = 2;
	} else if (t->ph == 2)
		t->m = 8;
	else {
		t->ph = 1;
		t->m = t->m < 7 && (b | 0x20) == "chunked"[t->m] ? t->m + 1 : 8;
	}
}

/* See conn.h. */
int
conn_scan_te(const struct conn_scan *s, const char **why)
{
	if (!s->te.seen || s->chunked)
		return 0;
	if (s->te.after || !s->te.last) {
		*why = why_te_end;
		return 400;
	}
	*why = why_te_other;
	return 501;
}

/* One byte of the current framing header's value; a CR is held back
 * until the next byte (one just before LF ends the line, as the parser
 * reads it). */
static void
fld_byte(struct conn_scan *s, char b)
{
	if (s->fcr) {
		s->fcr = 0;
		fld_byte(s, '\x01'); /* the CR was in the value: not OWS */
	}
	if (b == '\r') {
		s->fcr = 1;
		return;
	}
	if (s->fld == CONN_F_CLEN)
		conn_clen_byte(&s->fclen, b);
	else
		te_byte(&s->te, b);
}

/* Which framing header the line is, from its kept start (len bytes, at
 * least CONN_F_AT or all of it); the value's bytes kept so far are read. */
static void
fld_decide(struct conn_scan *s, size_t len)
{
	size_t at;

	if (len >= 15 && strncasecmp(s->line, "content-length:", 15) == 0) {
		s->fld = CONN_F_CLEN;
		s->fclen = (struct conn_clen){0, 0};
		at = 15;
	} else if (len >= 18 &&
	           strncasecmp(s->line, "transfer-encoding:", 18) == 0) {
		s->fld = CONN_F_TE;
		s->te.seen = 1;
		at = 18;
	} else {
		s->fld = CONN_F_NONE;
		return;
	}
	s->fcr = 0;
	for (; at < len; at++)
		fld_byte(s, s->line[at]);
}

/* The n bytes at p of a header line, from its byte at on: the value of a
 * framing header is read as it passes, whatever the line's length. */
static void
fld_run(struct conn_scan *s, size_t at, const char *p, size_t n)
{
	size_t i = 0;

	if (s->fld == CONN_F_UNSEEN) {
		if (at + n < CONN_F_AT)
			return;
		i = CONN_F_AT - at;
		fld_decide(s, CONN_F_AT);
	}
	if (s->fld == CONN_F_CLEN || s->fld == CONN_F_TE)
		for (; i < n; i++)
			fld_byte(s, p[i]);
}

/* Keep the n bytes at p of the current line: its start in line (llen
 * counts them all, saturating), the last non-CR ones in tail. */
static void
line_add(struct conn_scan *s, const char *p, size_t n)
{
	const size_t tn = sizeof s->tail - 1;
	char t[sizeof s->tail - 1];
	size_t m = 0, k, at = s->llen;

	if (s->llen < sizeof s->line - 1) {
		k = sizeof s->line - 1 - s->llen;
		memcpy(s->line + s->llen, p, n < k ? n : k);
	}
	s->llen = n < (size_t)(UINT16_MAX - s->llen) ? (uint16_t)(s->llen + n)
	                                             : UINT16_MAX;
	for (k = n; k > 0 && m < tn; k--) /* the last non-CR bytes, back */
		if (p[k - 1] != '\r')
			t[tn - 1 - m++] = p[k - 1];
	memmove(s->tail, s->tail + m, tn - m);
	memcpy(s->tail + tn - m, t + tn - m, m);
	if (s->st == CS_HDR && s->fld != CONN_F_NONE)
		fld_run(s, at, p, n);
}

/* The request's method (mlen bytes at m) and what follows it (plen bytes
 * at path): note the client's error shape; 405 for a method not served. */
static int
scan_method(struct conn_scan *s, const char *m, size_t mlen, const char *path,
            size_t plen, const char **why)
{
	buf_copy(s->method, sizeof s->method, m, mlen);
	s->anthropic = (plen >= 12 && strncmp(path, "/v1/messages", 12) == 0) ||
	               (plen >= 9 && strncmp(path, "/messages", 9) == 0);
	if (strcmp(s->method, "GET") != 0 && strcmp(s->method, "POST") != 0 &&
	    strcmp(s->method, "HEAD") != 0) {
		*why = why_method;
		return 405;
	}
	return 0;
}

/* The request line is in: method and path. */
static int
scan_reqline(struct conn_scan *s, const char **why)
{
	size_t kept =
	    s->llen < sizeof s->line - 1 ? s->llen : sizeof s->line - 1;
	const char *sp, *path;
	size_t mlen;

	s->line[kept] = '\0';
	sp = memchr(s->line, ' ', kept);
	mlen = sp ? (size_t)(sp - s->line) : kept;
	path = sp ? sp + 1 : "";
	s->http10 = strcmp(s->tail, "HTTP/1.0") == 0;
	s->llen = 0;
	s->st = CS_HDR_START;
	return scan_method(s, s->line, mlen, path, strlen(path), why);
}

/* A header line is in: note Content-Length (the last; http.c refuses
 * more than one) and Transfer-Encoding (a list over all its lines). */
static void
scan_header(struct conn_scan *s)
{
	if (s->fld == CONN_F_UNSEEN) /* shorter than CONN_F_AT */
		fld_decide(s, s->llen);
	if (s->fld == CONN_F_CLEN)
		s->clen = conn_clen_end(&s->fclen); /* -1: http.c refuses it */
	else if (s->fld == CONN_F_TE)
		te_element(&s->te);
	s->fld = CONN_F_UNSEEN;
	s->fcr = 0;
	s->llen = 0;
	s->st = CS_HDR_START;
}

/* The head is in: follow the body. Its Content-Length is not judged here
 * but by http.c once it has parsed the head, in the same order as for a
 * head checked whole (a malformed head is 400 before its length is 413). */
static void
scan_head_done(struct conn_scan *s)
{
	s->chunked = s->te.seen && s->te.last && !s->te.after && !s->te.other;
	if (s->te.seen && !s->chunked)
		s->st = CS_DONE; /* no framing to follow: http.c refuses it */
	else if (s->chunked)
		s->st = CS_CHUNK_SIZE;
	else if (s->clen > 0) {
		s->left = s->clen;
		s->st = CS_BODY;
	} else
		s->st = CS_DONE;
}

/* One byte of the head; 0 or a status. */
static int
scan_head_byte(struct conn_scan *s, char c, const struct conn_limits *l,
               const char **why)
{
	if (++s->bytes > l->max_bytes) {
		*why = why_large;
		return 431;
	}
	switch (s->st) {
	case CS_REQLINE:
		if (c != '\n') {
			line_add(s, &c, 1);
			return 0;
		}
		if (s->llen > 1 || (s->llen == 1 && s->line[0] != '\r'))
			return scan_reqline(s, why);
		s->llen = 0; /* an empty line before the request: skipped */
		return 0;
	case CS_HDR_START:
		if (c == ' ' || c == '\t') {
			*why = why_fold;
			return 400;
		}
		if (c == '\r' || c == '\n') {
			s->st = CS_HDR_CR;
			if (c == '\n')
				scan_head_done(s);
			return 0;
		}
		if (++s->nhdr > l->max_headers) {
			*why = why_many;
			return 431;
		}
		s->st = CS_HDR;
		line_add(s, &c, 1);
		return 0;
	case CS_HDR_CR:
		if (c == '\n') {
			scan_head_done(s);
			return 0;
		}
		*why = why_cr; /* a line that starts with a bare CR */
		return 400;
	default: /* CS_HDR */
		if (c == '\n')
			scan_header(s);
		else
			line_add(s, &c, 1);
		return 0;
	}
}

/* The end of a chunk-size line. */
static int
scan_chunk_size_done(struct conn_scan *s, const struct conn_limits *l,
                     const char **why)
{
	if (s->ndig == 0) {
		s->st = CS_DONE; /* malformed: http_dechunk refuses it */
		return 0;
	}
	if (s->left == 0) {
		s->st = CS_TRAILER_START;
		return 0;
	}
	s->body += s->left;
	if (s->body > l->max_body) {
		*why = conn_why_body;
		return 413;
	}
	s->st = CS_CHUNK_DATA;
	return 0;
}

/*
 * One byte of chunk framing; 0 or a status. The grammar, which http.c's
 * decoder (http_dechunk) follows byte for byte: a size line is hex digits,
 * then either a space, tab or ';' and anything up to LF, or LF with one
 * optional CR before it; a chunk's data ends with [CR] LF; trailer lines
 * up to an empty one ([CR] LF). Anything else ends the scan (CS_DONE) for
 * the decoder to refuse, so the request's end does not depend on how its
 * bytes arrived.
 */
static int
scan_chunk_byte(struct conn_scan *s, char c, const struct conn_limits *l,
                const char **why)
{
	int v;

	if (s->cr) {
		s->cr = 0;
		if (c != '\n') {
			s->st = CS_DONE;
			return 0;
		}
	} else if (c == '\r' &&
	           ((s->st == CS_CHUNK_SIZE && s->ndig > 0) ||
	            s->st == CS_CHUNK_CRLF || s->st == CS_TRAILER_START)) {
		s->cr = 1;
		return 0;
	}
	switch (s->st) {
	case CS_CHUNK_SIZE:
		if ((v = buf_hexval(c)) >= 0) {
			s->left = s->left * 16 + v;
			s->ndig++;
			if (s->body + s->left > l->max_body) {
				*why = conn_why_body;
				return 413;
			}
		} else if (s->ndig > 0 && (c == ';' || c == ' ' || c == '\t'))
			s->st = CS_CHUNK_EXT;
		else if (c == '\n')
			return scan_chunk_size_done(s, l, why);
		else
			s->st = CS_DONE;
		return 0;
	case CS_CHUNK_EXT:
		return c == '\n' ? scan_chunk_size_done(s, l, why) : 0;
	case CS_CHUNK_CRLF:
		if (c == '\n') {
			s->st = CS_CHUNK_SIZE;
			s->left = 0;
			s->ndig = 0;
		} else
			s->st = CS_DONE;
		return 0;
	case CS_TRAILER_START:
		s->st = c == '\n' ? CS_DONE : CS_TRAILER;
		return 0;
	default: /* CS_TRAILER */
		if (c == '\n')
			s->st = CS_TRAILER_START;
		return 0;
	}
}

/* Inside the request line or a header line: take the bytes up to the
 * next LF (not included) at once; how many, or 0 with a status in *rc
 * when they pass max_bytes. */
static size_t
scan_line_run(struct conn_scan *s, const char *p, size_t n,
              const struct conn_limits *l, const char **why, int *rc)
{
	const char *lf = memchr(p, '\n', n);
	size_t k = lf ? (size_t)(lf - p) : n;

	if (k == 0)
		return 0;
	if (s->bytes + k > l->max_bytes) {
		*why = why_large;
		*rc = 431;
		return 0;
	}
	s->bytes += (uint32_t)k;
	line_add(s, p, k);
	return k;
}

/* Scan n more bytes: see conn.h. */
int
conn_scan_feed(struct conn_scan *s, const char *p, size_t n,
               const struct conn_limits *l, const char **why)
{
	size_t i = 0, k;
	int rc = 0;

	while (i < n && rc == 0 && s->st != CS_DONE) {
		if (s->st == CS_REQLINE || s->st == CS_HDR) {
			i += scan_line_run(s, p + i, n - i, l, why, &rc);
			if (rc == 0 && i < n)
				rc = scan_head_byte(s, p[i++], l, why);
		} else if (s->st == CS_BODY || s->st == CS_CHUNK_DATA) {
			k = (size_t)s->left < n - i ? (size_t)s->left : n - i;
			s->left -= (int64_t)k;
			i += k;
			if (s->left == 0)
				s->st =
				    s->st == CS_BODY ? CS_DONE : CS_CHUNK_CRLF;
		} else if (s->st <= CS_HDR)
			rc = scan_head_byte(s, p[i++], l, why);
		else
			rc = scan_chunk_byte(s, p[i++], l, why);
	}
	return rc;
}

/* Whether the head is in: see conn.h. */
int
conn_scan_head_done(const struct conn_scan *s)
{
	return s->st >= CS_BODY;
}

/* Check a whole head: see conn.h. */
int
conn_scan_head(struct conn_scan *s, const char *p, size_t len,
               const struct conn_limits *l, const char **why)
{
	const char *end = p + len - 4, *q, *eol, *sp;
	uint32_t nhdr = 0;
	size_t k, m;
	const char *x;
	char t[8];
	int rc;

	/* empty lines ("" or "\r") before the request are skipped */
	for (q = p; q < end && (*q == '\n' || (*q == '\r' && q[1] == '\n'));)
		q += *q == '\r' ? 2 : 1;
	if (q >= end)
		return 1; /* blank lines so far */
	eol = memchr(q, '\n', (size_t)(end + 2 - q));
	/* as the byte-wise scan reads it: the line's first bytes (line) for
	 * the method and path, its last 8 that are not CR (tail) for 1.0 */
	k = (size_t)(eol - q) < sizeof s->line - 1 ? (size_t)(eol - q)
	                                           : sizeof s->line - 1;
	sp = memchr(q, ' ', k);
	for (x = eol, m = 0; x > q && m < 8;)
		if (*--x != '\r')
			t[7 - m++] = *x;
	s->http10 = m == 8 && memcmp(t, "HTTP/1.0", 8) == 0;
	if ((rc =
	         scan_method(s, q, sp ? (size_t)(sp - q) : k, sp ? sp + 1 : eol,
	                     sp ? k - (size_t)(sp - q) - 1 : 0, why)) != 0)
		return rc;
	for (q = eol + 1; q < end + 2; q = eol + 1) {
		eol = memchr(q, '\n', (size_t)(end + 3 - q));
		if (*q == '\n' || (*q == '\r' && q[1] == '\n'))
			return 1; /* an earlier head ended with bare LFs */
		if (*q == '\r') {
			*why = why_cr;
			return 400;
		}
		if (*q == ' ' || *q == '\t') {
			*why = why_fold;
			return 400;
		}
		if (++nhdr > l->max_headers) {
			*why = why_many;
			return 431;
		}
	}
	return 0;
}

/* A head checked whole: see conn.h. */
int
conn_scan_whole(struct conn_scan *s, uint32_t bytes, int64_t clen,
                const struct conn_limits *l, const char **why)
{
	if (clen > l->max_body) {
		*why = conn_why_body;
		return 413;
	}
	s->bytes = bytes;
	s->clen = clen;
	s->chunked = 0;
	s->st = CS_DONE;
	return 0;
}

/* Whether the scan is at the end: see conn.h. */
int
conn_scan_done(const struct conn_scan *s)
{
	return s->st == CS_DONE;
}

/* ---- answers ---- */

/* Anthropic's error type for a status. */
static const char *
anthropic_type(int status)
{
	return status == 413 ? "request_too_large" : "invalid_request_error";
}

/* OpenAI's error code for a status. */
static const char *
openai_code(int status)
{
	switch (status) {
	case 405:
		return "method_not_allowed";
	case 413:
		return "body_too_large";
	case 431:
		return "header_too_large";
	case 501:
		return "not_implemented";
	case 503:
		return "overloaded";
	default:
		return "invalid_request";
	}
}

/* The error reply for status: see conn.h. */
void
conn_error_reply(struct buf *b, int status, const char *why, int anthropic,
                 int http10)
{
	struct buf body = {0};
	struct jw jw;

	if (anthropic) {
		jw_init(&jw, &body);
		jw_obj(&jw);
		jw_key(&jw, "type");
		jw_cstr(&jw, "error");
		jw_key(&jw, "error");
		jw_obj(&jw);
		jw_key(&jw, "type");
		jw_cstr(&jw, anthropic_type(status));
		jw_key(&jw, "message");
		jw_cstr(&jw, why);
		jw_obj_end(&jw);
		jw_obj_end(&jw);
	} else
		ingress_openai_error(&body, status,
		                     status >= 500 ? "llmfd_error"
		                                   : "invalid_request_error",
		                     openai_code(status), why, NULL, NULL, 0);
	buf_printf(b,
	           "HTTP/1.%d %d %s\r\nContent-Type: application/json\r\n"
	           "Content-Length: %zu\r\nConnection: close\r\n%s\r\n",
	           http10 ? 0 : 1, status, http_reason(status), body.len,
	           status == 405 ? "Allow: GET, HEAD, POST\r\n" : "");
	buf_add(b, body.data ? body.data : "", body.len);
	buf_free(&body);
}

/* ---- replies ---- */

/* The Date header's value (RFC 1123, as evhttp writes it), formatted once
 * a second. */
const char *
conn_date(void)
{
	static time_t last = -1;
	static char date[64];
	time_t now = time(NULL);
	struct tm tm;

	if (now != last && gmtime_r(&now, &tm) != NULL) {
		evutil_date_rfc1123(date, sizeof date, &tm);
		last = now;
	}
	return date;
}

/* See conn.h: 8 bytes at a time, looking closer only at a byte below
 * 14. */
int
conn_line_breaks(const char *s, size_t n)
{
	const uint64_t ones = 0x0101010101010101ULL;
	uint64_t v;
	size_t i = 0;

	for (; i + 8 <= n; i += 8) {
		memcpy(&v, s + i, 8);
		if (((v - ones * 14) & ~v & ones * 0x80) != 0)
			break;
	}
	for (; i < n; i++)
		if (s[i] == '\r' || s[i] == '\n')
			return 1;
	return 0;
}

/* ---- accept errors ---- */

/* The back-off is over: accept again. */
static void
conn_backoff_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct worker *w = arg;

	(void)fd;
	(void)ev;
	paused = 0;
	if (!w->draining)
		http_listeners(w, 1);
}

/* At the fd limit: give the reserve fd to one waiting client, answer it
 * 503 and close it, then take the reserve back. */
static void
conn_shed(int lfd)
{
	static const char msg[] = "the server is out of file descriptors; "
	                          "retry shortly";
	struct buf b = {0};
	int fd;

	if (reserve_fd < 0)
		return;
	close(reserve_fd);
	reserve_fd = -1;
	if ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >=
	    0) {
		conn_error_reply(&b, 503, msg, 0, 0);
		(void)!send(fd, b.data, b.len, MSG_NOSIGNAL | MSG_DONTWAIT);
		shutdown(fd, SHUT_WR);
		close(fd);
		buf_free(&b);
	}
	reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

/* accept() failed: see conn.h. */
void
conn_accept_error(struct evconnlistener *lev, void *arg)
{
	struct timeval tv = {0, CONN_BACKOFF_MS * 1000};
	struct worker *w = conn_w;
	int err = EVUTIL_SOCKET_ERROR();

	(void)arg;
	if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM) {
		log_warnx("accept() failed: %s", strerror(err));
		return;
	}
	log_warnx("accept() failed: %s; shedding a connection and pausing "
	          "accepts for %d ms",
	          strerror(err), CONN_BACKOFF_MS);
	conn_shed((int)evconnlistener_get_fd(lev));
	paused = 1;
	http_listeners(w, 0);
	evtimer_add(ev_backoff, &tv);
}

/* Whether accepts are backed off. */
int
conn_accept_paused(void)
{
	return paused;
}

/* ---- set-up ---- */

/* libevent's own warnings go through our (rate-limited) log. */
static void
conn_libevent_log(int severity, const char *msg)
{
	if (severity >= EVENT_LOG_WARN)
		log_warnx("libevent: %s", msg);
}

/* Worker start. */
int
conn_init(struct worker *w)
{
	conn_w = w;
	event_set_log_callback(conn_libevent_log);
	reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if ((ev_backoff = evtimer_new(w->base, conn_backoff_cb, w)) == NULL)
		return -1;
	return 0;
}

/* Worker exit. */
void
conn_free(void)
{
	if (ev_backoff)
		event_free(ev_backoff);
	ev_backoff = NULL;
	if (reserve_fd >= 0)
		close(reserve_fd);
	reserve_fd = -1;
}
