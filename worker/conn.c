/* Guards on client connections, below evhttp (see conn.h).
 *
 * evhttp's own timeout is an inactivity timeout, so a client that sends a
 * byte a second never trips it, and it caps neither the header count nor
 * folded lines. This module watches the bytes as they arrive (a callback on
 * each connection's input buffer, which runs before evhttp parses them) and
 * moves the connection's read timeout so that it fires at an absolute
 * deadline; libevent and evhttp then close the connection as for any
 * timeout, so no timer or record of ours outlives a connection.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/queue.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/http_struct.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <event2/util.h>

#include "common/buf.h"
#include "common/clock.h"
#include "common/json.h"
#include "common/log.h"
#include "worker/conn.h"
#include "worker/ingress.h"
#include "worker/worker.h"

#define CONN_BUSY_TIMEOUT_S 3600      /* evhttp_set_timeout in server.c */
#define CONN_LINGER_MS      1000      /* a refused client may read our */
#define CONN_LINGER_BYTES   (1 << 20) /* answer: what we drop meanwhile */
#define CONN_MAX_PENDING    16
#define CONN_SLURP_MAX      (256 << 10) /* body bytes read in one go */
#define CONN_SLURP_ROUNDS   8
#define CONN_SLAB_MIN       (16 << 10) /* bodies read into one allocation */

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

/* Connection phases. */
enum {
	CP_NONE = 0, /* not ours (yet) */
	CP_HEAD,     /* a request is due by deadline_ms */
	CP_BUSY,     /* a request is being served */
	CP_IDLE,     /* between requests (keep-alive) */
	CP_REJECT    /* answered and closing by deadline_ms */
};

/* One client connection's guard. */
struct conn {
	struct bufferevent *bev; /* compared, never dereferenced */
	int phase;
	int64_t deadline_ms;
	int64_t dropped; /* CP_REJECT: bytes read and dropped */
	int slabbed;     /* this request's body had its chance at a slab */
	/* the slab of the body being read (borrowed: its pieces in the input
	 * buffer or the request hold it), its size and bytes filled */
	struct conn_slab *slab;
	size_t slab_size, slab_filled;
	struct conn_scan scan;
};

/*
 * The guards, by fd: a pointer per descriptor, an entry only for those
 * that were client connections (upstream sockets share the fd space and
 * need none). An entry is armed in conn_settle, after evhttp gave the new
 * bufferevent its fd and before any byte can arrive, and is only used from
 * that bufferevent's own callbacks (entry bev == the caller's), so an entry
 * left behind by a closed connection is never read: the next connection on
 * the same fd re-arms it, and conn_trim frees it when the fd is closed.
 */
static struct conn **conn_tab;
static int conn_ntab, conn_nent;

static struct worker *conn_w;
static struct conn_limits conn_lim;
static struct bufferevent *pending[CONN_MAX_PENDING];
static int npending;
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

/* Whether line (llen bytes kept) starts with name, case-insensitively. */
static int
line_is(const struct conn_scan *s, const char *name)
{
	size_t n = strlen(name);

	return s->llen >= n && strncasecmp(s->line, name, n) == 0;
}

/* Keep the n bytes at p of the current line: its start in line (llen
 * counts them all, saturating), the last non-CR ones in tail. */
static void
line_add(struct conn_scan *s, const char *p, size_t n)
{
	const size_t tn = sizeof s->tail - 1;
	char t[sizeof s->tail - 1];
	size_t m = 0, k;

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
	buf_copy(s->method, sizeof s->method, s->line, mlen);
	path = sp ? sp + 1 : "";
	s->anthropic = strncmp(path, "/v1/messages", 12) == 0 ||
	               strncmp(path, "/messages", 9) == 0;
	s->http10 = strcmp(s->tail, "HTTP/1.0") == 0;
	s->llen = 0;
	s->st = CS_HDR_START;
	if (strcmp(s->method, "GET") != 0 && strcmp(s->method, "POST") != 0 &&
	    strcmp(s->method, "HEAD") != 0) {
		*why = "method not allowed; use POST (or GET for /v1/models, "
		       "/healthz and /metrics)";
		return 405;
	}
	return 0;
}

/* A header line is in: note Content-Length and Transfer-Encoding. */
static void
scan_header(struct conn_scan *s)
{
	size_t kept =
	    s->llen < sizeof s->line - 1 ? s->llen : sizeof s->line - 1;
	const char *v;
	char *end;

	s->line[kept] = '\0';
	if (line_is(s, "content-length:")) {
		v = s->line + 15;
		while (*v == ' ' || *v == '\t')
			v++;
		errno = 0;
		s->clen = (int64_t)strtoll(v, &end, 10);
		if (end == v || errno != 0 || s->clen < 0)
			s->clen = -1; /* evhttp refuses it */
	} else if (line_is(s, "transfer-encoding:"))
		s->chunked = strcasestr(s->line, "chunked") != NULL;
	s->llen = 0;
	s->st = CS_HDR_START;
}

/* The head is in: check the announced body, then follow it. */
static int
scan_head_done(struct conn_scan *s, const struct conn_limits *l,
               const char **why)
{
	if (!s->chunked && s->clen > l->max_body) {
		*why = "request body is larger than 32 MiB";
		return 413;
	}
	if (s->chunked)
		s->st = CS_CHUNK_SIZE;
	else if (s->clen > 0) {
		s->left = s->clen;
		s->st = CS_BODY;
	} else
		s->st = CS_DONE;
	return 0;
}

/* One byte of the head; 0 or a status. */
static int
scan_head_byte(struct conn_scan *s, char c, const struct conn_limits *l,
               const char **why)
{
	if (++s->bytes > l->max_bytes) {
		*why = "request header fields too large";
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
			*why = "obsolete line folding in the request headers";
			return 400;
		}
		if (c == '\r' || c == '\n') {
			s->st = CS_HDR_CR;
			return c == '\n' ? scan_head_done(s, l, why) : 0;
		}
		if (++s->nhdr > l->max_headers) {
			*why = "too many request header fields";
			return 431;
		}
		s->st = CS_HDR;
		line_add(s, &c, 1);
		return 0;
	case CS_HDR_CR:
		if (c == '\n')
			return scan_head_done(s, l, why);
		s->st = CS_DONE; /* a bare CR: evhttp decides */
		return 0;
	default: /* CS_HDR */
		if (c == '\n')
			scan_header(s);
		else
			line_add(s, &c, 1);
		return 0;
	}
}

/* Value of a hex digit, or -1. */
static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* The end of a chunk-size line. */
static int
scan_chunk_size_done(struct conn_scan *s, const struct conn_limits *l,
                     const char **why)
{
	if (s->ndig == 0) {
		s->st = CS_DONE; /* malformed: evhttp refuses it */
		return 0;
	}
	if (s->left == 0) {
		s->st = CS_TRAILER_START;
		return 0;
	}
	s->body += s->left;
	if (s->body > l->max_body) {
		*why = "request body is larger than 32 MiB";
		return 413;
	}
	s->st = CS_CHUNK_DATA;
	return 0;
}

/* One byte of chunk framing; 0 or a status. */
static int
scan_chunk_byte(struct conn_scan *s, char c, const struct conn_limits *l,
                const char **why)
{
	int v;

	switch (s->st) {
	case CS_CHUNK_SIZE:
		if ((v = hexval(c)) >= 0) {
			s->left = s->left * 16 + v;
			s->ndig++;
			if (s->body + s->left > l->max_body) {
				*why = "request body is larger than 32 MiB";
				return 413;
			}
		} else if (c == ';' || c == ' ' || c == '\t')
			s->st = CS_CHUNK_EXT;
		else if (c == '\n')
			return scan_chunk_size_done(s, l, why);
		else if (c != '\r')
			s->st = CS_DONE;
		return 0;
	case CS_CHUNK_EXT:
		return c == '\n' ? scan_chunk_size_done(s, l, why) : 0;
	case CS_CHUNK_CRLF:
		if (c == '\n') {
			s->st = CS_CHUNK_SIZE;
			s->left = 0;
			s->ndig = 0;
		} else if (c != '\r')
			s->st = CS_DONE;
		return 0;
	case CS_TRAILER_START:
		if (c == '\n')
			s->st = CS_DONE;
		else if (c != '\r')
			s->st = CS_TRAILER;
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
		*why = "request header fields too large";
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

/* ---- the fd table ---- */

/* The guard of bev's connection, or NULL. */
static struct conn *
conn_of(struct bufferevent *bev)
{
	int fd = (int)bufferevent_getfd(bev);

	if (fd < 0 || fd >= conn_ntab || conn_tab[fd] == NULL ||
	    conn_tab[fd]->bev != bev)
		return NULL;
	return conn_tab[fd];
}

/* The entry for fd, growing the table; NULL if memory ran out. */
static struct conn *
conn_slot(int fd)
{
	struct conn **t;
	int n = conn_ntab ? conn_ntab : 256;

	if (fd >= conn_ntab) {
		while (n <= fd)
			n *= 2;
		if ((t = realloc(conn_tab, (size_t)n * sizeof *t)) == NULL)
			return NULL;
		memset(t + conn_ntab, 0, (size_t)(n - conn_ntab) * sizeof *t);
		conn_tab = t;
		conn_ntab = n;
	}
	if (conn_tab[fd] == NULL && (conn_tab[fd] = calloc(1, sizeof **t)))
		conn_nent++;
	return conn_tab[fd];
}

/* Free the entries of closed descriptors and shrink the table to the
 * highest one still open (a burst of 10,000 grew it). */
void
conn_trim(void)
{
	struct conn **t;
	int top = -1, n = 256;

	for (int fd = 0; fd < conn_ntab; fd++) {
		if (conn_tab[fd] == NULL)
			continue;
		if (fcntl(fd, F_GETFD) == -1) {
			free(conn_tab[fd]);
			conn_tab[fd] = NULL;
			conn_nent--;
		} else
			top = fd;
	}
	if (conn_ntab <= n)
		return;
	while (n <= top)
		n *= 2;
	if (n < conn_ntab && (t = realloc(conn_tab, (size_t)n * sizeof *t))) {
		conn_tab = t;
		conn_ntab = n;
	}
}

/* Entries allocated (client connections, open or not yet trimmed). */
int
conn_entries(void)
{
	return conn_nent;
}

/* Entries in the fd table. */
int
conn_table_size(void)
{
	return conn_ntab;
}

/* Set bev's read timeout to ms (its write timeout stays evhttp's). */
static void
conn_read_timeout(struct bufferevent *bev, int64_t ms)
{
	struct timeval rd, wr = {CONN_BUSY_TIMEOUT_S, 0};

	if (ms < 1)
		ms = 1;
	rd.tv_sec = (time_t)(ms / 1000);
	rd.tv_usec = (suseconds_t)(ms % 1000) * 1000;
	bufferevent_set_timeouts(bev, &rd, &wr);
}

/* Close the connection now (evhttp frees it; its fd closes with it). */
static void
conn_close(struct conn *c, struct bufferevent *bev)
{
	bufferevent_event_cb ev;
	void *evcon = NULL;

	c->bev = NULL;
	c->phase = CP_NONE;
	bufferevent_getcb(bev, NULL, NULL, &ev, &evcon);
	if (ev != NULL && evcon != NULL)
		evhttp_connection_free(evcon);
}

/* A new request's first bytes: its deadline starts. */
static void
conn_begin(struct conn *c)
{
	c->phase = CP_HEAD;
	c->deadline_ms = clock_ms() + conn_w->cfg->client_header_timeout_ms;
	c->slabbed = 0;
	c->slab = NULL;
	conn_scan_init(&c->scan);
}

/* Answer status at once and close after a short linger, reading and
 * dropping whatever the client still sends meanwhile. */
static void
conn_reject(struct conn *c, struct bufferevent *bev, struct evbuffer *in,
            int status, const char *why)
{
	struct evbuffer *out = bufferevent_get_output(bev);
	struct buf b = {0};

	log_info("refused a client request: %d %s", status, why);
	conn_error_reply(&b, status, why, c->scan.anthropic, c->scan.http10);
	if (evbuffer_get_length(out) == 0) { /* evhttp is not writing */
		(void)!send(bufferevent_getfd(bev), b.data, b.len,
		            MSG_NOSIGNAL | MSG_DONTWAIT);
		shutdown(bufferevent_getfd(bev), SHUT_WR);
	} else /* behind evhttp's "100 Continue" */
		bufferevent_write(bev, b.data, b.len);
	buf_free(&b);
	c->phase = CP_REJECT;
	c->deadline_ms = clock_ms() + CONN_LINGER_MS;
	c->dropped = 0;
	evbuffer_drain(in, evbuffer_get_length(in));
	conn_read_timeout(bev, CONN_LINGER_MS);
}

/* Scan the last n bytes of in; 0, or a status with *why. */
static int
conn_scan_tail(struct conn *c, struct evbuffer *in, size_t n, const char **why)
{
	struct evbuffer_iovec v[16];
	struct evbuffer_ptr pos;
	size_t len = evbuffer_get_length(in), off = len - n;
	int k, rc = 0;

	while (off < len && rc == 0 && c->scan.st != CS_DONE) {
		if (evbuffer_ptr_set(in, &pos, off, EVBUFFER_PTR_SET) == -1)
			break;
		k = evbuffer_peek(in, (ev_ssize_t)(len - off), &pos, v, 16);
		for (int i = 0; i < k && i < 16 && rc == 0; i++) {
			rc = conn_scan_feed(&c->scan, v[i].iov_base,
			                    v[i].iov_len, &conn_lim, why);
			off += v[i].iov_len;
		}
		if (k <= 0)
			break;
	}
	return rc;
}

/* Bytes of a request (phase CP_HEAD): check them and move the deadline. */
static void
conn_head(struct conn *c, struct bufferevent *bev, struct evbuffer *in,
          size_t added)
{
	int64_t left = c->deadline_ms - clock_ms();
	const char *why = NULL;
	int status;

	if (left <= 0) {
		log_info("closed a client connection that did not send its "
		         "request within %d ms",
		         conn_w->cfg->client_header_timeout_ms);
		conn_close(c, bev);
		return;
	}
	if ((status = conn_scan_tail(c, in, added, &why)) != 0) {
		conn_reject(c, bev, in, status, why);
		return;
	}
	conn_read_timeout(bev, left);
}

/* Read up to want bytes of fd into in at once; the bytes read (0 at EOF,
 * on an error or with nothing there: the bufferevent sees those next). */
static size_t
conn_read_into(struct evbuffer *in, evutil_socket_t fd, size_t want)
{
	struct evbuffer_iovec v[2];
	struct iovec iov[2];
	size_t left = want, got;
	ssize_t r;
	int n;

	if ((n = evbuffer_reserve_space(in, (ev_ssize_t)want, v, 2)) <= 0)
		return 0;
	for (int i = 0; i < n; i++) {
		iov[i].iov_base = v[i].iov_base;
		iov[i].iov_len = v[i].iov_len < left ? v[i].iov_len : left;
		left -= iov[i].iov_len;
	}
	if ((r = readv(fd, iov, n)) <= 0) {
		evbuffer_commit_space(in, v, 0);
		return 0;
	}
	got = (size_t)r;
	for (int i = 0; i < n; i++) {
		v[i].iov_len = iov[i].iov_len < got ? iov[i].iov_len : got;
		got -= v[i].iov_len;
	}
	evbuffer_commit_space(in, v, n);
	return (size_t)r;
}

/* A request read into one allocation, lent to the input buffer. */
struct conn_slab {
	int refs;
	char data[];
};

static int slurping; /* the input buffer is being rearranged: no scans */

/* evbuffer_add_reference's cleanup: the slab's last piece left. */
static void
conn_slab_unref(const void *data, size_t len, void *arg)
{
	struct conn_slab *sl = arg;

	(void)data;
	(void)len;
	if (--sl->refs == 0)
		free(sl);
}

/*
 * A large body: read it into one allocation after what in holds (the head
 * and the body's first bytes, copied there), and make that allocation all
 * of in, by reference (when more than the head is there: every piece lent
 * holds body bytes, which evhttp moves to the request, so the slab lives
 * as long as the body is being read). evhttp then takes the head from it and
 * moves the rest, the whole body in one piece, to the request: the engine reads
 * it where it is, with no copy into one run. 0, or -1 to read as usual.
 */
static int
conn_slurp_slab(struct conn *c, struct bufferevent *bev, struct evbuffer *in)
{
	size_t have = evbuffer_get_length(in), left = (size_t)c->scan.left;
	size_t got = 0;
	struct conn_slab *sl;
	ssize_t r;
	const char *why;

	if (left < CONN_SLAB_MIN || have > CONN_SLURP_MAX ||
	    (sl = malloc(sizeof *sl + have + left)) == NULL)
		return -1;
	sl->refs = 1;
	evbuffer_copyout(in, sl->data, have);
	while (got < left && (r = read(bufferevent_getfd(bev),
	                               sl->data + have + got, left - got)) > 0)
		got += (size_t)r;
	/* Nothing more yet: the piece lent would hold only what evhttp
	 * drains (the head) and go with the slab while more is to come. */
	if (got == 0) {
		free(sl);
		return -1;
	}
	/* the bytes read here: the scanner ends in the body, or at its end */
	conn_scan_feed(&c->scan, sl->data + have, got, &conn_lim, &why);
	slurping = 1;
	evbuffer_drain(in, have);
	if (evbuffer_add_reference(in, sl->data, have + got, conn_slab_unref,
	                           sl) == -1) {
		evbuffer_add(in, sl->data, have + got);
		free(sl);
		sl = NULL;
	}
	slurping = 0;
	c->slab = sl;
	c->slab_size = have + left;
	c->slab_filled = have + got;
	return 0;
}

/*
 * More of a body that has a slab (it was not all there at first). evhttp
 * moves a body to the request only once it is whole, so in holds the
 * body so far, lent from the slab, then the `added` bytes libevent just
 * read. Those are copied into the slab after the rest, what else the
 * client has sent is read straight after them, and in becomes one piece
 * lent from the slab again: the body stays one run of memory.
 */
static void
conn_slab_more(struct conn *c, struct bufferevent *bev, struct evbuffer *in,
               size_t added)
{
	struct conn_slab *sl = c->slab;
	size_t len = evbuffer_get_length(in), old = len - added;
	size_t room = c->slab_size - c->slab_filled, got = 0;
	char *at = sl->data + c->slab_filled;
	struct evbuffer_iovec v[2];
	struct evbuffer_ptr pos;
	ssize_t r;
	const char *why;

	if (added > len || added > room ||
	    (old > 0 && (evbuffer_peek(in, (ev_ssize_t)old, NULL, v, 2) != 1 ||
	                 (char *)v[0].iov_base != at - old)) ||
	    evbuffer_ptr_set(in, &pos, old, EVBUFFER_PTR_SET) == -1) {
		c->slab = NULL; /* not what it expects: read as usual */
		return;
	}
	evbuffer_copyout_from(in, &pos, at, added);
	while (added + got < room &&
	       (r = read(bufferevent_getfd(bev), at + added + got,
	                 room - added - got)) > 0)
		got += (size_t)r;
	conn_scan_feed(&c->scan, at + added, got, &conn_lim, &why);
	slurping = 1;
	sl->refs++; /* for the new piece: the old one goes first */
	evbuffer_drain(in, len);
	if (evbuffer_add_reference(in, at - old, old + added + got,
	                           conn_slab_unref, sl) == -1) {
		evbuffer_add(in, at - old, old + added + got);
		conn_slab_unref(NULL, 0, sl);
		c->slab = NULL;
	}
	slurping = 0;
	c->slab_filled += added + got;
}

/*
 * The head is in and a body follows: read what the client has sent of it
 * at once. libevent 2.1 reads at most 4 KiB per wake-up, so a 100 KB
 * prompt would take 25 turns of the loop, each with an ioctl, a read and
 * an epoll_wait. Never past this request's body (a pipelined request
 * stays in the socket). A large body goes into one allocation
 * (conn_slurp_slab); otherwise the bytes go through this callback again
 * (scanned like any others), and that nested call does not slurp.
 */
static void
conn_slurp(struct conn *c, struct bufferevent *bev, struct evbuffer *in,
           size_t added)
{
	static int busy;
	size_t want, got;

	if (busy || c->scan.st != CS_BODY || c->scan.left <= 0)
		return;
	if (!c->slabbed) {
		c->slabbed = 1;
		if (conn_slurp_slab(c, bev, in) == 0)
			return;
	}
	if (c->slab) {
		conn_slab_more(c, bev, in, added);
		if (c->slab)
			return;
	}
	busy = 1;
	for (int i = 0;
	     i < CONN_SLURP_ROUNDS && c->bev == bev && c->phase == CP_HEAD &&
	     c->scan.st == CS_BODY && c->scan.left > 0;
	     i++) {
		want = c->scan.left < CONN_SLURP_MAX ? (size_t)c->scan.left
		                                     : CONN_SLURP_MAX;
		got = conn_read_into(in, bufferevent_getfd(bev), want);
		if (got < want)
			break;
	}
	busy = 0;
}

/* Bytes arrived on a client connection (before evhttp sees them). */
static void
conn_input_cb(struct evbuffer *in, const struct evbuffer_cb_info *info,
              void *arg)
{
	struct bufferevent *bev = arg;
	struct conn *c;

	if (info->n_added == 0 || slurping || (c = conn_of(bev)) == NULL)
		return;
	switch (c->phase) {
	case CP_IDLE:
		conn_begin(c);
		if (evbuffer_get_length(in) > info->n_added)
			c->scan.st = CS_DONE; /* pipelined: evhttp's caps */
		conn_head(c, bev, in, info->n_added);
		conn_slurp(c, bev, in, info->n_added);
		break;
	case CP_HEAD:
		conn_head(c, bev, in, info->n_added);
		conn_slurp(c, bev, in, info->n_added);
		break;
	case CP_REJECT:
		c->dropped += (int64_t)evbuffer_get_length(in);
		evbuffer_drain(in, evbuffer_get_length(in));
		if (clock_ms() >= c->deadline_ms ||
		    c->dropped > CONN_LINGER_BYTES)
			conn_close(c, bev);
		break;
	default:
		break;
	}
}

/* A connection's bufferevent was just made. */
void
conn_new(struct bufferevent *bev)
{
	evbuffer_add_cb(bufferevent_get_input(bev), conn_input_cb, bev);
	if (npending == CONN_MAX_PENDING)
		return; /* unguarded; evhttp's own limits still apply */
	bufferevent_incref(bev);
	pending[npending++] = bev;
}

/* Arm the deadlines of the connections accepted since the last call. */
void
conn_settle(void)
{
	bufferevent_event_cb ev;
	struct conn *c;
	int fd;

	for (int i = 0; i < npending; i++) {
		struct bufferevent *bev = pending[i];

		bufferevent_getcb(bev, NULL, NULL, &ev, NULL);
		fd = (int)bufferevent_getfd(bev);
		if (ev != NULL && fd >= 0 && (c = conn_slot(fd)) != NULL) {
			c->bev = bev;
			conn_begin(c);
			conn_read_timeout(
			    bev, conn_w->cfg->client_header_timeout_ms);
		}
		bufferevent_decref(bev);
	}
	npending = 0;
}

/* The reply of a request went out: the connection idles. */
static void
conn_done(struct evhttp_request *req, void *arg)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	struct bufferevent *bev;
	struct conn *c;

	(void)arg;
	if (evcon == NULL ||
	    (bev = evhttp_connection_get_bufferevent(evcon)) == NULL ||
	    (c = conn_of(bev)) == NULL)
		return;
	c->phase = CP_IDLE;
	conn_read_timeout(bev, conn_w->cfg->keepalive_timeout_ms);
}

/* A request is dispatched: see conn.h. */
void
conn_busy(struct evhttp_request *req)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	struct bufferevent *bev;
	struct conn *c;

	if (evcon == NULL ||
	    (bev = evhttp_connection_get_bufferevent(evcon)) == NULL ||
	    (c = conn_of(bev)) == NULL)
		return;
	c->phase = CP_BUSY;
	conn_read_timeout(bev, (int64_t)CONN_BUSY_TIMEOUT_S * 1000);
	evhttp_request_set_on_complete_cb(req, conn_done, NULL);
}

/* A stream reply starts: see conn.h. Without Connection: keep-alive from
 * the client, evhttp neither sends Content-Length: 0 nor keeps the
 * connection, so the end of the stream is the connection's close. */
void
conn_stream_start(struct evhttp_request *req)
{
	if (req->major != 1 || req->minor != 0)
		return;
	evhttp_remove_header(evhttp_request_get_input_headers(req),
	                     "Connection");
	evhttp_remove_header(evhttp_request_get_output_headers(req),
	                     "Connection");
	evhttp_add_header(evhttp_request_get_output_headers(req), "Connection",
	                  "close");
}

/* ---- replies without printf ---- */

/* The Date header's value (RFC 1123, as evhttp writes it), formatted once
 * a second. */
static const char *
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

/* Whether conn_reply may write req's reply itself: HTTP/1.1 from the
 * client, not a proxy request, a reply that has a body, nothing queued in
 * evhttp's output buffer. */
static int
conn_reply_plain(struct evhttp_request *req, int status)
{
	return req->evcon != NULL && req->major == 1 && req->minor == 1 &&
	       !(req->flags & EVHTTP_PROXY_REQUEST) &&
	       req->type != EVHTTP_REQ_HEAD &&
	       req->type != EVHTTP_REQ_CONNECT && status >= 200 &&
	       status != 204 && status != 304 &&
	       evbuffer_get_length(req->output_buffer) == 0;
}

/* Append "key: value\r\n" to b. */
static void
conn_head_line(struct buf *b, const char *key, const char *value)
{
	buf_adds(b, key);
	buf_add(b, ": ", 2);
	buf_adds(b, value);
	buf_add(b, "\r\n", 2);
}

#define CONN_CHUNKED ((size_t)-1) /* conn_reply_head: a chunked stream */

/* The head evhttp_send_reply would write for req (status line, the output
 * headers in order, then Content-Type, Date, Content-Length and Connection:
 * close as evhttp adds them), into b; for a body of n CONN_CHUNKED, the
 * head of evhttp_send_reply_start (Transfer-Encoding: chunked before the
 * Date, as evhttp adds them). */
static void
conn_reply_head(struct buf *b, struct evhttp_request *req, int status,
                const char *reason, const char *ctype, const struct buf *extra,
                size_t n)
{
	const char *conn = evhttp_find_header(req->input_headers, "Connection");
	int close = conn != NULL && evutil_ascii_strcasecmp(conn, "close") == 0;
	int date = 0, clen = 0;
	struct evkeyval *h;
	char num[BUF_NUM_MAX];

	buf_add(b, "HTTP/1.1 ", 9);
	buf_add(b, num, buf_fmt_u(num, (unsigned)status));
	buf_addc(b, ' ');
	buf_adds(b, reason);
	buf_add(b, "\r\n", 2);
	TAILQ_FOREACH(h, req->output_headers, next)
	{
		if (close &&
		    (evutil_ascii_strcasecmp(h->key, "Connection") == 0 ||
		     evutil_ascii_strcasecmp(h->key, "Proxy-Connection") == 0))
			continue;
		if (evutil_ascii_strcasecmp(h->key, "Date") == 0)
			date = 1;
		else if (evutil_ascii_strcasecmp(h->key, "Content-Length") ==
		             0 ||
		         evutil_ascii_strcasecmp(h->key, "Transfer-Encoding") ==
		             0)
			clen = 1;
		conn_head_line(b, h->key, h->value);
	}
	if (extra != NULL && extra->len > 0)
		buf_add(b, extra->data, extra->len);
	conn_head_line(b, "Content-Type", ctype);
	if (n == CONN_CHUNKED)
		buf_add(b, "Transfer-Encoding: chunked\r\n", 28);
	if (!date)
		conn_head_line(b, "Date", conn_date());
	if (!clen && n != CONN_CHUNKED) {
		buf_add(b, "Content-Length: ", 16);
		buf_add(b, num, buf_fmt_u(num, n));
		buf_add(b, "\r\n", 2);
	}
	if (close)
		buf_add(b, "Connection: close\r\n", 19);
	buf_add(b, "\r\n", 2);
}

/* Move "Name: value\r\n" lines (as conn_reply takes them) into req's
 * output headers, in order. */
void
conn_add_headers(struct evhttp_request *req, const char *p, size_t n)
{
	const char *end = p + n, *colon, *eol;
	char *line;

	while (p < end && (eol = memchr(p, '\n', (size_t)(end - p))) != NULL) {
		if ((line = strndup(p, (size_t)(eol - 1 - p))) != NULL &&
		    (colon = strstr(line, ": ")) != NULL) {
			line[colon - line] = '\0';
			evhttp_add_header(req->output_headers, line, colon + 2);
		}
		free(line);
		p = eol + 1;
	}
}

/* Send a whole reply: the bytes evhttp_send_reply would send, written
 * without its printf per header line; evhttp then finishes the request as
 * for a reply of its own (keep-alive or close, the next request). */
void
conn_reply(struct evhttp_request *req, int status, const char *reason,
           const char *ctype, const struct buf *extra, const char *body,
           size_t n)
{
	static struct buf head; /* reused, never shrunk */
	struct bufferevent *bev;
	struct evbuffer *out;
	bufferevent_data_cb rd, wr;
	bufferevent_event_cb ev;
	void *arg;

	buf_reset(&head);
	if (!conn_reply_plain(req, status) ||
	    (conn_reply_head(&head, req, status, reason, ctype, extra, n),
	     head.oom)) {
		if (extra != NULL)
			conn_add_headers(req, extra->data, extra->len);
		evhttp_add_header(req->output_headers, "Content-Type", ctype);
		evbuffer_add(req->output_buffer, body, n);
		evhttp_send_reply(req, status, reason, NULL);
		return;
	}
	bev = evhttp_connection_get_bufferevent(req->evcon);
	out = bufferevent_get_output(bev);
	evbuffer_add(out, head.data, head.len);
	evbuffer_add(out, body, n);
	req->response_code = status;
	/* as evhttp_send does: no read callback while writing, only close
	 * detection; the write callback (evhttp's) runs evcon->cb, which
	 * evhttp_send_reply_end sets to finish the request */
	bufferevent_getcb(bev, &rd, &wr, &ev, &arg);
	if (rd != NULL)
		bufferevent_setcb(bev, NULL, wr, ev, arg);
	evhttp_send_reply_end(req);
	/* Write now rather than after a round of the loop for EPOLLOUT (two
	 * epoll_ctl calls and a wakeup saved); when it all went, the write
	 * callback runs deferred, later in this round, as if the bufferevent
	 * had written it (the buffer's start frozen again, as it leaves it). */
	evbuffer_unfreeze(out, 1); /* as bufferevent_sock.c writes */
	evbuffer_write(out, bufferevent_getfd(bev));
	evbuffer_freeze(out, 1);
	if (evbuffer_get_length(out) == 0)
		bufferevent_trigger(bev, EV_WRITE, BEV_TRIG_DEFER_CALLBACKS);
	else
		bufferevent_enable(bev, EV_READ | EV_WRITE);
}

/* Start a chunked stream reply: see conn.h. The head goes out through
 * evhttp_send_reply_chunk while req is not yet chunked (so it is written
 * as it is, with no size line): that also points the connection's write
 * callback at evhttp and clears the completion callback a kept-alive
 * connection keeps from its last request, as evhttp_send_reply_start
 * does; evhttp_send_reply_end then ends the stream as its own. */
int
conn_stream_head(struct evhttp_request *req, int status, const char *reason,
                 const char *ctype, const struct buf *extra)
{
	static struct buf head;       /* reused, never shrunk */
	static struct evbuffer *take; /* emptied by each send */

	if (!conn_reply_plain(req, status) || req->chunked ||
	    evhttp_find_header(req->output_headers, "Content-Length") ||
	    evhttp_find_header(req->output_headers, "Transfer-Encoding") ||
	    (take == NULL && (take = evbuffer_new()) == NULL))
		return -1;
	buf_reset(&head);
	conn_reply_head(&head, req, status, reason, ctype, extra, CONN_CHUNKED);
	if (head.oom || evbuffer_add(take, head.data, head.len) == -1) {
		evbuffer_drain(take, evbuffer_get_length(take));
		return -1;
	}
	req->response_code = status;
	evhttp_send_reply_chunk(req, take);
	if (evbuffer_get_length(take) > 0) { /* not taken: evhttp's way */
		evbuffer_drain(take, evbuffer_get_length(take));
		return -1;
	}
	req->chunked = 1;
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
	for (int i = 0; i < w->nlisten; i++)
		if (w->bound[i])
			evconnlistener_enable(
			    evhttp_bound_socket_get_listener(w->bound[i]));
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
	for (int i = 0; i < w->nlisten; i++)
		if (w->bound[i])
			evconnlistener_disable(
			    evhttp_bound_socket_get_listener(w->bound[i]));
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
	const struct cfg *cfg = w->cfg;

	conn_w = w;
	conn_lim.max_bytes = (uint32_t)cfg->max_header_bytes;
	conn_lim.max_headers = (uint32_t)cfg->max_headers;
	conn_lim.max_body = CONN_MAX_BODY;
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
	for (int i = 0; i < npending; i++)
		bufferevent_decref(pending[i]);
	npending = 0;
	if (ev_backoff)
		event_free(ev_backoff);
	ev_backoff = NULL;
	if (reserve_fd >= 0)
		close(reserve_fd);
	reserve_fd = -1;
	for (int fd = 0; fd < conn_ntab; fd++)
		free(conn_tab[fd]);
	free(conn_tab);
	conn_tab = NULL;
	conn_ntab = conn_nent = 0;
}
