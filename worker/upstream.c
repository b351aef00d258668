/* Upstream HTTP/1.1 client: non-blocking, plain TCP or TLS (OpenSSL, peer
 * and hostname verified, SNI), asynchronous DNS, keep-alive pools per
 * deployment. Responses are parsed incrementally and handed to the caller
 * as status + a few headers, then de-chunked body bytes. TLS goes through
 * libevent's OpenSSL bufferevent; plain TCP reads and writes the socket
 * itself (a bufferevent asks the kernel with FIONREAD before each read:
 * a syscall per reply for nothing). */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "common/addr.h"
#include "common/clock.h"
#include "common/log.h"
#include "worker/upstream.h"
#include "worker/worker.h"

#define DNS_TTL_MS   60000
#define UP_WRITE_MAX (4 << 20)  /* bytes written in one go (libevent: 16k) */
#define UP_READ      (32 << 10) /* bytes asked of one read (plain TCP) */
#define UP_READS     4          /* reads per wake-up while they fill up */

enum { UC_RESOLVING, UC_CONNECTING, UC_BUSY, UC_IDLE };
enum {
	P_STATUS,
	P_HEADERS,
	P_BODY_LEN,
	P_CHUNK_SIZE,
	P_CHUNK_DATA,
	P_CHUNK_CRLF,
	P_TRAILERS,
	P_BODY_CLOSE,
	P_DONE
};

#define UC_TOO_BIG (-2) /* uc_parse: the reply passed max_bytes */

/* One piece of a request as sent: len bytes at ref (the caller's memory,
 * by reference), or at off in reqbytes when ref is NULL. */
struct up_piece {
	const char *ref;
	size_t off, len;
};

/* A plain TCP connection's own I/O (no bufferevent). */
struct upio {
	int fd;
	struct event rev, wev;
	struct evbuffer *in, *out;
};

struct upconn {
	TAILQ_ENTRY(upconn) q;
	struct pool *pool;
	struct bufferevent *bev; /* TLS */
	struct upio *io;         /* plain TCP */
	int io_err;              /* errno of its last failure */
	struct event defer;      /* async error delivery */
	int state;
	int reused, resent, got_bytes;
	int in_cb, dead;
	int pstate;
	int64_t remaining;
	int64_t rx, max_bytes; /* reply bytes parsed so far, and the cap */
	struct up_resp resp;
	const struct up_cbs *cbs;
	void *arg;
	struct buf
	    reqbytes; /* copied bytes, kept to resend on a stale socket */
	/* the request, in order: UP_MAX_PARTS + 1 pieces, allocated when
	 * one is laid out (and freed while a stream goes on for minutes) */
	struct up_piece *plan;
	int nplan;
	struct up_hold *hold; /* keeps the referenced pieces alive, or NULL */
	char *err;            /* a failure to deliver (uc_fail_later) */
};

#define UC_ERR_MAX 256  /* bytes of a failure's text */
#define UC_REF_MIN 1024 /* shorter body pieces are copied, not referenced */

struct pool {
	struct event_base *base;
	struct evdns_base *dns;
	const struct deploy_cfg *d;
	SSL_CTX *ctx;
	struct sockaddr_storage ss;
	socklen_t sslen;
	int64_t resolved_ms;
	int resolving;
	int is_ip;
	TAILQ_HEAD(upconn_q, upconn) idle;
	TAILQ_HEAD(, upconn) waiting;
	int nidle, total;
	char hosthdr[300];
};

/* Cap of a whole reply (max_response_bytes), set at worker start. */
static int64_t up_max_reply = 64 << 20;
/* Called with 1 before and 0 after a read's bytes are parsed (http_cork). */
static void (*up_read_hook)(int);
static void uc_on_read1(struct upconn *);

static void uc_read_cb(struct bufferevent *, void *);
static void uc_event_cb(struct bufferevent *, short, void *);
static void uc_on_read(struct upconn *);
static void uc_on_event(struct upconn *, short);
static void uc_connect(struct upconn *);
static int uc_send(struct upconn *);

/* Build the TLS context for a deployment: verify peer, trust ca_file. */
static SSL_CTX *
pool_tls_ctx(const struct deploy_cfg *d, char **cause)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	int ok;

	if (ctx == NULL)
		goto fail;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (d->ca_file[0])
		ok = SSL_CTX_load_verify_locations(ctx, d->ca_file, NULL);
	else
		ok = SSL_CTX_set_default_verify_paths(ctx);
	if (ok != 1) {
		if (asprintf(cause, "deployment '%s': cannot load CA file %s",
		             d->name,
		             d->ca_file[0] ? d->ca_file : "(system)") == -1)
			*cause = NULL;
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
fail:
	if (asprintf(cause, "SSL_CTX_new failed") == -1)
		*cause = NULL;
	return NULL;
}

/* Create a pool for one deployment. */
struct pool *
pool_new(struct event_base *base, struct evdns_base *dns,
         const struct deploy_cfg *d, char **cause)
{
	struct pool *p = calloc(1, sizeof *p);

	if (p == NULL)
		return NULL;
	p->base = base;
	p->dns = dns;
	p->d = d;
	TAILQ_INIT(&p->idle);
	TAILQ_INIT(&p->waiting);
	if (d->tls && (p->ctx = pool_tls_ctx(d, cause)) == NULL) {
		free(p);
		return NULL;
	}
	cfg_host_header(d, p->hosthdr, sizeof p->hosthdr);
	p->is_ip = addr_ip(d->host, d->port, &p->ss, &p->sslen) == 0;
	return p;
}

/* Take a reference on h. */
void
up_hold_ref(struct up_hold *h)
{
	h->refs++;
}

/* Drop a reference on h; the last one releases it. */
void
up_hold_unref(struct up_hold *h)
{
	if (--h->refs == 0)
		h->release(h);
}

/* evbuffer_add_reference's cleanup: a referenced piece left the socket's
 * output buffer (written, or the buffer freed). */
static void
uc_unref_cb(const void *data, size_t len, void *arg)
{
	(void)data;
	(void)len;
	up_hold_unref(arg);
}

/* Forget the request's pieces (it can no longer be resent): let go of the
 * memory they refer to. */
static void
uc_drop_req(struct upconn *c)
{
	c->nplan = 0;
	if (c->hold)
		up_hold_unref(c->hold);
	c->hold = NULL;
}

/* The connection's input and output, whichever way it does I/O. */
static struct evbuffer *
uc_in(struct upconn *c)
{
	return c->io ? c->io->in : bufferevent_get_input(c->bev);
}

static struct evbuffer *
uc_out(struct upconn *c)
{
	return c->io ? c->io->out : bufferevent_get_output(c->bev);
}

/* Close the socket (a reconnect makes a new one). */
static void
uc_close_io(struct upconn *c)
{
	if (c->bev)
		bufferevent_free(c->bev);
	c->bev = NULL;
	if (c->io) {
		event_del(&c->io->rev);
		event_del(&c->io->wev);
		close(c->io->fd);
		evbuffer_free(c->io->in);
		evbuffer_free(c->io->out);
		free(c->io);
		c->io = NULL;
	}
}

/* Write what the output holds. On a failure the connection's error event
 * runs (which may free c: -1 then), from the loop when called by the
 * engine (sync: it is inside up_request). */
static int
uc_io_write(struct upconn *c, int sync)
{
	struct upio *io = c->io;

	while (evbuffer_get_length(io->out) > 0) {
		if (evbuffer_write_atmost(io->out, io->fd, UP_WRITE_MAX) >= 0)
			continue;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			event_add(&io->wev, NULL);
			return 0;
		}
		c->io_err = errno;
		if (sync) { /* the write callback meets it again */
			event_active(&io->wev, EV_WRITE, 0);
			return 0;
		}
		event_del(&io->wev);
		uc_on_event(c, BEV_EVENT_WRITING | BEV_EVENT_ERROR);
		return -1;
	}
	event_del(&io->wev);
	return 0;
}

/* The socket is writable: the connect finished, or more can be sent. */
static void
uc_io_write_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct upconn *c = arg;
	int err = 0, one = 1;
	socklen_t len = sizeof err;

	(void)ev;
	if (c->state == UC_CONNECTING) {
		if (c->io_err != 0) /* connect() refused at once */
			err = c->io_err;
		else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
			err = errno;
		if (err != 0) {
			c->io_err = err;
			event_del(&c->io->wev);
			uc_on_event(c, BEV_EVENT_ERROR);
			return;
		}
		c->state = UC_BUSY;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	}
	uc_io_write(c, 0);
}

/* The worker's read buffer for plain TCP replies, lent to a connection's
 * input by reference while it is parsed; what the parse leaves (a reply
 * cut mid-line) is copied out before anyone reads into it again. */
static char *up_rbuf;
static struct evbuffer *up_rbuf_in; /* the input holding it, or NULL */

/* evbuffer_add_reference's cleanup: the read buffer is no longer lent. */
static void
uc_rbuf_back(const void *data, size_t len, void *arg)
{
	(void)data;
	(void)len;
	(void)arg;
	up_rbuf_in = NULL;
}

/* Read into the worker's buffer and parse from there (no chain of the
 * input's own for a reply that arrives whole); 1 when it read, else 0
 * with k the read's result. */
static int
uc_io_read_lent(struct upconn *c, int fd, ssize_t *k)
{
	struct evbuffer *in = c->io->in;
	size_t left;
	char *keep;

	do
		*k = recv(fd, up_rbuf, UP_READ, 0);
	while (*k < 0 && errno == EINTR);
	if (*k <= 0)
		return 0;
	if (evbuffer_add_reference(in, up_rbuf, (size_t)*k, uc_rbuf_back,
	                           NULL) == -1) {
		*k = -1;
		errno = ENOMEM;
		return 0;
	}
	up_rbuf_in = in;
	uc_on_read(c);            /* may free c, and its input with it */
	if (up_rbuf_in != NULL) { /* left in an input: take it back */
		in = up_rbuf_in;
		left = evbuffer_get_length(in);
		if ((keep = malloc(left)) != NULL) {
			evbuffer_remove(in, keep, left);
			evbuffer_add(in, keep, left);
			free(keep);
		}
		up_rbuf_in = NULL;
	}
	return 1;
}

/* The socket is readable: read what is there (a few reads while they
 * fill up), then parse; at the end of the stream or an error, the
 * connection's event. */
static void
uc_io_read_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct upconn *c = arg;
	struct evbuffer *in = c->io->in;
	struct evbuffer_iovec v[2];
	struct iovec iov[2];
	ssize_t k = 0;
	size_t want, left;
	int n, i, got = 0;

	(void)ev;
	if (up_rbuf == NULL)
		up_rbuf = malloc(UP_READ); /* else read the usual way */
	if (evbuffer_get_length(in) == 0 && up_rbuf != NULL) {
		if (uc_io_read_lent(c, fd, &k))
			return;
		if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		goto end;
	}
	for (i = 0; i < UP_READS; i++) {
		if ((n = evbuffer_reserve_space(in, UP_READ, v, 2)) <= 0)
			break;
		want = 0;
		for (int j = 0; j < n; j++) {
			iov[j].iov_base = v[j].iov_base;
			iov[j].iov_len = v[j].iov_len;
			want += v[j].iov_len;
		}
		do
			k = readv(fd, iov, n);
		while (k < 0 && errno == EINTR);
		if (k <= 0) {
			evbuffer_commit_space(in, v, 0);
			break;
		}
		got = 1;
		left = (size_t)k;
		for (int j = 0; j < n; j++) {
			if (v[j].iov_len > left)
				v[j].iov_len = left;
			left -= v[j].iov_len;
		}
		evbuffer_commit_space(in, v, n);
		if ((size_t)k < want)
			break; /* the socket had less than asked */
	}
	/* bytes then the end (or an error): the bytes first, the end on
	 * the next wake-up, the socket staying readable */
	if (got) {
		uc_on_read(c);
		return;
	}
	if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return;
end:
	c->io_err = k < 0 ? errno : 0;
	event_del(&c->io->rev);
	uc_on_event(c, k == 0 ? BEV_EVENT_READING | BEV_EVENT_EOF
	                      : BEV_EVENT_READING | BEV_EVENT_ERROR);
}

/* Open a plain TCP socket to the pool's address; -1 with errno. */
static int
uc_io_open(struct upconn *c)
{
	struct pool *p = c->pool;
	struct upio *io;

	if ((io = calloc(1, sizeof *io)) == NULL)
		return -1;
	io->fd =
	    socket(p->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	           IPPROTO_TCP);
	if (io->fd == -1) {
		free(io);
		return -1;
	}
	if ((io->in = evbuffer_new()) == NULL ||
	    (io->out = evbuffer_new()) == NULL) {
		if (io->in)
			evbuffer_free(io->in);
		close(io->fd);
		free(io);
		errno = ENOMEM;
		return -1;
	}
	event_assign(&io->rev, p->base, io->fd, EV_READ | EV_PERSIST,
	             uc_io_read_cb, c);
	event_assign(&io->wev, p->base, io->fd, EV_WRITE | EV_PERSIST,
	             uc_io_write_cb, c);
	c->io = io;
	c->io_err = 0;
	event_add(&io->rev, NULL);
	event_add(&io->wev, NULL); /* the connect's end */
	/* refused at once: told from the loop, as a connect that fails */
	if (connect(io->fd, (struct sockaddr *)&p->ss, p->sslen) == -1 &&
	    errno != EINPROGRESS) {
		c->io_err = errno;
		event_active(&io->wev, EV_WRITE, 0);
	}
	return 0;
}

static void
uc_free(struct upconn *c)
{
	struct pool *p = c->pool;

	if (c->state == UC_IDLE) {
		TAILQ_REMOVE(&p->idle, c, q);
		p->nidle--;
	} else if (c->state == UC_RESOLVING)
		TAILQ_REMOVE(&p->waiting, c, q);
	if (event_initialized(&c->defer))
		event_del(&c->defer);
	uc_close_io(c);
	uc_drop_req(c);
	buf_free(&c->reqbytes);
	free(c->plan);
	free(c->err);
	p->total--;
	free(c);
}

/* Free a pool and every connection in it (idle ones; busy ones are owned
 * by their requests and must have been aborted first). */
void
pool_free(struct pool *p)
{
	struct upconn *c;

	if (p == NULL)
		return;
	while ((c = TAILQ_FIRST(&p->idle)) != NULL)
		uc_free(c);
	while ((c = TAILQ_FIRST(&p->waiting)) != NULL)
		uc_free(c);
	if (p->ctx)
		SSL_CTX_free(p->ctx);
	free(p);
}

/* Set the cap of a whole upstream reply. */
void
up_set_max_reply(int64_t n)
{
	up_max_reply = n;
}

/* See upstream.h. */
void
up_set_read_hook(void (*hook)(int))
{
	up_read_hook = hook;
}

/* Close the idle connections past keep, the least recently used first. */
void
pool_trim(struct pool *p, int keep)
{
	while (p->nidle > keep)
		uc_free(TAILQ_LAST(&p->idle, upconn_q));
}

/* Idle and total connection counts. */
void
pool_stats(const struct pool *p, int *idle, int *total)
{
	*idle = p->nidle;
	*total = p->total;
}

/* Report a failure to the owner (once) and close the connection. */
static void
uc_fail(struct upconn *c, const char *msg)
{
	const struct up_cbs *cbs = c->cbs;
	void *arg = c->arg;
	char text[UC_ERR_MAX];

	snprintf(text, sizeof text, "%s", msg); /* msg may be c->err */
	c->cbs = NULL;
	c->dead = 1;
	if (cbs && !c->in_cb)
		uc_free(c);
	if (cbs)
		cbs->error(arg, text);
}

static void
uc_defer_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct upconn *c = arg;

	(void)fd;
	(void)ev;
	uc_fail(c, c->err ? c->err : "out of memory");
}

/* Deliver an error from the loop, never from inside the caller's call. */
static void
uc_fail_later(struct upconn *c, const char *what, const char *detail)
{
	free(c->err);
	if ((c->err = malloc(UC_ERR_MAX)) != NULL) /* rare: not in the struct */
		snprintf(c->err, UC_ERR_MAX, "%s%s%.200s", what,
		         detail ? ": " : "", detail ? detail : "");
	if (!event_initialized(&c->defer))
		event_assign(&c->defer, c->pool->base, -1, 0, uc_defer_cb, c);
	event_active(&c->defer, 0, 0);
}

static void
pool_dns_cb(int err, struct evutil_addrinfo *ai, void *arg)
{
	struct pool *p = arg;
	struct evutil_addrinfo *a, *pick = NULL;
	struct upconn *c;

	p->resolving = 0;
	for (a = ai; err == 0 && a; a = a->ai_next)
		if (pick == NULL ||
		    (a->ai_family == AF_INET && pick->ai_family != AF_INET))
			pick = a;
	if (pick && pick->ai_addrlen <= sizeof p->ss) {
		memcpy(&p->ss, pick->ai_addr, pick->ai_addrlen);
		p->sslen = (socklen_t)pick->ai_addrlen;
		p->resolved_ms = clock_ms();
	}
	if (ai)
		evutil_freeaddrinfo(ai);
	while ((c = TAILQ_FIRST(&p->waiting)) != NULL) {
		TAILQ_REMOVE(&p->waiting, c, q);
		if (pick == NULL) {
			c->state = UC_CONNECTING;
			uc_fail_later(c, "cannot resolve the upstream host",
			              err ? evutil_gai_strerror(err)
			                  : "no address");
		} else
			uc_connect(c);
	}
}

/* Resolve the pool's host (asynchronously) unless a fresh answer is cached. */
static void
pool_resolve(struct pool *p)
{
	struct evutil_addrinfo hints;
	char port[8];

	if (p->resolving)
		return;
	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	hints.ai_flags = EVUTIL_AI_ADDRCONFIG;
	snprintf(port, sizeof port, "%u", p->d->port);
	p->resolving = 1;
	evdns_getaddrinfo(p->dns, p->d->host, port, &hints, pool_dns_cb, p);
}

/* Open the socket (and TLS) for a connection whose address is known. */
static void
uc_connect(struct upconn *c)
{
	struct pool *p = c->pool;
	SSL *ssl;
	int opts = BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS;

	c->state = UC_CONNECTING;
	if (p->ctx) {
		if ((ssl = SSL_new(p->ctx)) == NULL) {
			uc_fail_later(c, "SSL_new failed", NULL);
			return;
		}
		SSL_set_tlsext_host_name(ssl, p->d->host);
		if (p->is_ip)
			X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl),
			                              p->d->host);
		else
			SSL_set1_host(ssl, p->d->host);
		c->bev = bufferevent_openssl_socket_new(
		    p->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING, opts);
		if (c->bev == NULL)
			SSL_free(ssl);
		else
			bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
	} else if (uc_io_open(c) == -1) {
		uc_fail_later(c, "connect failed", strerror(errno));
		return;
	}
	if (c->bev == NULL && c->io == NULL) {
		uc_fail_later(c, "cannot create a connection", NULL);
		return;
	}
	if (c->bev) {
		bufferevent_setcb(c->bev, uc_read_cb, NULL, uc_event_cb, c);
		bufferevent_set_max_single_write(c->bev, UP_WRITE_MAX);
		bufferevent_enable(c->bev, EV_READ | EV_WRITE);
		if (bufferevent_socket_connect(c->bev,
		                               (struct sockaddr *)&p->ss,
		                               (int)p->sslen) == -1) {
			uc_fail_later(c, "connect failed", strerror(errno));
			return;
		}
	}
	if (uc_send(c) == -1) {
		uc_fail_later(c, "out of memory", NULL);
		return;
	}
	/* a new socket is never sent on again (uc_retry_stale resends only
	 * on a reused one, once): the request's copy and plan can go now */
	uc_drop_req(c);
	buf_free(&c->reqbytes);
	free(c->plan);
	c->plan = NULL;
}

static void
uc_reset_parse(struct upconn *c)
{
	memset(&c->resp, 0, sizeof c->resp);
	c->resp.content_length = -1;
	c->resp.retry_after_ms = -1;
	c->resp.should_retry = -1;
	c->resp.rl_req_left = c->resp.rl_req_limit = -1;
	c->resp.rl_req_reset_ms = c->resp.rl_tok_left = -1;
	c->resp.rl_tok_limit = c->resp.rl_tok_reset_ms = -1;
	c->resp.keepalive = 1;
	c->pstate = P_STATUS;
	c->got_bytes = 0;
	c->rx = 0;
}

/* The request line, Host and Content-Length, without printf. */
static void
uc_head(struct buf *b, const char *method, const char *path, size_t plen,
        const char *host, size_t blen)
{
	char num[24], *q = num + sizeof num;

	do
		*--q = (char)('0' + blen % 10);
	while ((blen /= 10) != 0);
	buf_adds(b, method);
	buf_addc(b, ' ');
	buf_add(b, path, plen);
	buf_adds(b, " HTTP/1.1\r\nHost: ");
	buf_adds(b, host);
	buf_adds(b, "\r\nContent-Length: ");
	buf_add(b, q, (size_t)(num + sizeof num - q));
	buf_adds(b, "\r\n");
}

/* Add len bytes at p to the request's plan: by reference if ref (while
 * there is room, and unless it is shorter than UC_REF_MIN: libevent gives
 * each reference a chain of 1 KB, more than such a copy), else copied into
 * reqbytes. */
static void
uc_plan(struct upconn *c, const char *p, size_t len, int ref)
{
	struct up_piece *last = c->nplan ? &c->plan[c->nplan - 1] : NULL;

	if (len == 0)
		return;
	if (ref && c->nplan < UP_MAX_PARTS && len >= UC_REF_MIN) {
		c->plan[c->nplan++] = (struct up_piece){p, 0, len};
		return;
	}
	if (last && last->ref == NULL) /* it ends reqbytes: grow it */
		last->len += len;
	else
		c->plan[c->nplan++] =
		    (struct up_piece){NULL, c->reqbytes.len, len};
	buf_add(&c->reqbytes, p, len);
}

/* Queue the request's pieces on the connection's socket from byte skip
 * on (what a direct write did not send): copied pieces copied, referenced
 * ones by reference (each holding the memory until written). -1 when
 * memory ran out. */
static int
uc_queue_from(struct upconn *c, size_t skip)
{
	struct evbuffer *out = uc_out(c);
	const struct up_piece *pc;
	const char *at;
	size_t n;

	for (int i = 0; i < c->nplan; i++) {
		pc = &c->plan[i];
		if (skip >= pc->len) {
			skip -= pc->len;
			continue;
		}
		at = (pc->ref ? pc->ref : c->reqbytes.data + pc->off) + skip;
		n = pc->len - skip;
		skip = 0;
		if (pc->ref == NULL) {
			if (evbuffer_add(out, at, n) == -1)
				return -1;
			continue;
		}
		up_hold_ref(c->hold);
		if (evbuffer_add_reference(out, at, n, uc_unref_cb, c->hold) ==
		    -1) {
			up_hold_unref(c->hold);
			return -1;
		}
	}
	return 0;
}

/* Queue the whole request on the connection's socket; -1 when memory ran
 * out. */
static int
uc_send(struct upconn *c)
{
	return uc_queue_from(c, 0);
}

/* Lay out the request on c: the head copied, the body parts as given. */
static int
uc_prepare(struct upconn *c, const char *method, const char *path, size_t plen,
           const char *hdrs, size_t hlen, const struct up_part *body, int n,
           struct up_hold *hold)
{
	size_t blen = 0;

	for (int i = 0; i < n; i++)
		blen += body[i].len;
	uc_drop_req(c);
	if (c->plan == NULL &&
	    (c->plan = calloc(UP_MAX_PARTS + 1, sizeof *c->plan)) == NULL)
		return -1;
	buf_reset(&c->reqbytes);
	uc_head(&c->reqbytes, method, path, plen, c->pool->hosthdr, blen);
	buf_add(&c->reqbytes, hdrs, hlen);
	buf_add(&c->reqbytes, "\r\n", 2);
	c->plan[0] = (struct up_piece){NULL, 0, c->reqbytes.len};
	c->nplan = 1;
	for (int i = 0; i < n; i++)
		uc_plan(c, body[i].p, body[i].len, body[i].ref && hold);
	for (int i = 0; i < c->nplan && c->hold == NULL; i++)
		if (c->plan[i].ref) {
			c->hold = hold;
			up_hold_ref(hold);
		}
	return c->reqbytes.oom ? -1 : 0;
}

/* Plain TCP with nothing queued: write the request's pieces straight
 * from where they lie (one writev, no copy into an output buffer); only
 * what the socket does not take is queued. A failure is left to the
 * write callback (from the loop: the engine is inside up_request). */
static void
uc_send_direct(struct upconn *c)
{
	struct iovec v[17];
	const struct up_piece *pc;
	ssize_t k;
	int n = 0;

	for (int i = 0; i < c->nplan; i++) {
		pc = &c->plan[i];
		v[n].iov_base =
		    (void *)(uintptr_t)(pc->ref ? pc->ref
		                                : c->reqbytes.data + pc->off);
		v[n++].iov_len = pc->len;
	}
	do
		k = writev(c->io->fd, v, n);
	while (k < 0 && errno == EINTR);
	if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
		/* queued whole: the write callback meets the error again */
		c->io_err = errno;
		if (uc_queue_from(c, 0) == 0)
			event_active(&c->io->wev, EV_WRITE, 0);
		else
			uc_fail_later(c, "out of memory", NULL);
		return;
	}
	if (uc_queue_from(c, k > 0 ? (size_t)k : 0) == -1) {
		uc_fail_later(c, "out of memory", NULL);
		return;
	}
	if (evbuffer_get_length(c->io->out) > 0)
		event_add(&c->io->wev, NULL);
}

/* Send the request on a kept-alive connection. Over plain TCP it is
 * written at once rather than after a round of the loop for EPOLLOUT (two
 * epoll_ctl calls and a wakeup saved); what the socket does not take, and
 * all of it over TLS, the bufferevent writes. */
static void
uc_send_now(struct upconn *c)
{
	struct evbuffer *out;

	if (c->io) {
		if (evbuffer_get_length(c->io->out) == 0 && c->nplan <= 16) {
			uc_send_direct(c);
			return;
		}
		if (uc_send(c) == -1) {
			uc_fail_later(c, "out of memory", NULL);
			return;
		}
		uc_io_write(c, 1);
		return;
	}
	out = bufferevent_get_output(c->bev);
	bufferevent_disable(c->bev, EV_WRITE); /* no write event while adding */
	bufferevent_enable(c->bev, EV_READ);
	if (uc_send(c) == -1) {
		bufferevent_enable(c->bev, EV_WRITE);
		uc_fail_later(c, "out of memory", NULL);
		return;
	}
	if (c->pool->ctx == NULL) { /* as bufferevent_sock.c writes */
		evbuffer_unfreeze(out, 1);
		evbuffer_write_atmost(out, bufferevent_getfd(c->bev),
		                      UP_WRITE_MAX);
		evbuffer_freeze(out, 1);
	}
	if (evbuffer_get_length(out) > 0)
		bufferevent_enable(c->bev, EV_WRITE);
}

/* Send a request on an idle connection, or a new one. */
struct upconn *
up_request(struct pool *p, const char *method, const char *path, size_t plen,
           const char *hdrs, size_t hlen, const struct up_part *body, int n,
           struct up_hold *hold, const struct up_cbs *cbs, void *arg)
{
	struct upconn *c = TAILQ_FIRST(&p->idle);
	int fresh = c == NULL;

	if (fresh) {
		if ((c = calloc(1, sizeof *c)) == NULL)
			return NULL;
		c->pool = p;
		p->total++;
	} else {
		TAILQ_REMOVE(&p->idle, c, q);
		p->nidle--;
		c->reused = 1;
	}
	c->cbs = cbs;
	c->arg = arg;
	c->resent = 0;
	c->dead = 0;
	c->max_bytes = up_max_reply;
	uc_reset_parse(c);
	if (uc_prepare(c, method, path, plen, hdrs, hlen, body, n, hold) ==
	    -1) {
		c->cbs = NULL;
		uc_free(c);
		return NULL;
	}
	if (!fresh) {
		c->state = UC_BUSY;
		if (c->bev)
			bufferevent_setcb(c->bev, uc_read_cb, NULL, uc_event_cb,
			                  c);
		uc_send_now(c);
	} else if (p->sslen &&
	           (p->is_ip || clock_ms() - p->resolved_ms < DNS_TTL_MS)) {
		uc_connect(c);
	} else {
		c->state = UC_RESOLVING;
		TAILQ_INSERT_TAIL(&p->waiting, c, q);
		pool_resolve(p);
	}
	return c;
}

/* Abandon the request on c: close the connection, no more callbacks. */
void
up_abort(struct upconn *c)
{
	if (c == NULL)
		return;
	c->cbs = NULL;
	c->dead = 1;
	if (!c->in_cb)
		uc_free(c);
}

/* Put a finished connection back in the pool, or close it. */
static void
uc_release(struct upconn *c)
{
	struct pool *p = c->pool;

	/* a reply may come before the whole request was written (an early
	 * error): the rest of it must not precede the next request */
	if (!c->resp.keepalive || c->pstate != P_DONE ||
	    evbuffer_get_length(uc_in(c)) != 0 ||
	    evbuffer_get_length(uc_out(c)) != 0 || p->nidle >= UP_MAX_IDLE) {
		uc_free(c);
		return;
	}
	uc_drop_req(c);
	c->state = UC_IDLE;
	c->reused = 0;
	TAILQ_INSERT_HEAD(&p->idle, c, q);
	p->nidle++;
}

/* The decimal number v starts with; -1 if none (or past INT64_MAX). */
static int64_t
hdr_int(const char *v)
{
	const char *p = v;
	int64_t n = 0;

	for (; *p >= '0' && *p <= '9'; p++) {
		if (n > (INT64_MAX - 9) / 10)
			return -1;
		n = n * 10 + (*p - '0');
	}
	return p == v ? -1 : n;
}

/* An OpenAI reset duration ("1s", "6m0s", "1h2m3.5s", "20ms", or bare
 * seconds) in ms; -1 if it is not one. */
static int64_t
rl_duration_ms(const char *v)
{
	double total = 0, x;
	char *end;

	if (*v == '\0')
		return -1;
	while (*v != '\0') {
		x = strtod(v, &end);
		if (end == v || x < 0 || x > 1e9)
			return -1;
		v = end;
		if (strncmp(v, "ms", 2) == 0) {
			total += x;
			v += 2;
		} else if (*v == 'h' || *v == 'm' || *v == 's' || *v == '\0') {
			total += x * (*v == 'h'   ? 3600000
			              : *v == 'm' ? 60000
			                          : 1000);
			v += *v != '\0';
		} else
			return -1;
	}
	return (int64_t)total;
}

/* An RFC 3339 time ("2024-10-08T17:03:00Z", fractions and offsets
 * allowed) as ms from now (0 if past); -1 if it is not one. */
static int64_t
rl_time_ms(const char *v)
{
	struct tm tm;
	const char *p;
	int off = 0, oh, om;
	int64_t t;

	memset(&tm, 0, sizeof tm);
	if ((p = strptime(v, "%Y-%m-%dT%H:%M:%S", &tm)) == NULL)
		return -1;
	if (*p == '.')
		for (p++; *p >= '0' && *p <= '9'; p++)
			;
	if ((*p == '+' || *p == '-') && sscanf(p + 1, "%2d:%2d", &oh, &om) == 2)
		off = (*p == '-' ? -1 : 1) * (oh * 3600 + om * 60);
	else if (*p != 'Z' && *p != 'z')
		return -1;
	t = ((int64_t)timegm(&tm) - off) * 1000 - clock_wall_ms();
	return t > 0 ? t : 0;
}

/* Keep a rate-limit header: 1 if name was one. */
static int
uc_ratelimit(struct upconn *c, const char *name, const char *v)
{
	static const struct {
		const char *name;
		size_t off;
		int reset; /* 0 a count, 1 a duration, 2 an RFC 3339 time */
	} hs[] = {
#define RL(n, f, k) {n, offsetof(struct up_resp, f), k}
	    RL("x-ratelimit-remaining-requests", rl_req_left, 0),
	    RL("x-ratelimit-limit-requests", rl_req_limit, 0),
	    RL("x-ratelimit-reset-requests", rl_req_reset_ms, 1),
	    RL("x-ratelimit-remaining-tokens", rl_tok_left, 0),
	    RL("x-ratelimit-limit-tokens", rl_tok_limit, 0),
	    RL("x-ratelimit-reset-tokens", rl_tok_reset_ms, 1),
	    RL("anthropic-ratelimit-requests-remaining", rl_req_left, 0),
	    RL("anthropic-ratelimit-requests-limit", rl_req_limit, 0),
	    RL("anthropic-ratelimit-requests-reset", rl_req_reset_ms, 2),
	    RL("anthropic-ratelimit-tokens-remaining", rl_tok_left, 0),
	    RL("anthropic-ratelimit-tokens-limit", rl_tok_limit, 0),
	    RL("anthropic-ratelimit-tokens-reset", rl_tok_reset_ms, 2),
#undef RL
	};

	for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) {
		if (strcasecmp(name, hs[i].name) != 0)
			continue;
		*(int64_t *)(void *)((char *)&c->resp + hs[i].off) =
		    hs[i].reset == 0   ? hdr_int(v)
		    : hs[i].reset == 1 ? rl_duration_ms(v)
		                       : rl_time_ms(v);
		return 1;
	}
	return 0;
}

/* Whether v holds word (lower case), ignoring case: strcasestr without
 * its set-up cost on these short values. */
static inline int
hdr_has(const char *v, const char *word)
{
	size_t n = strlen(word);

	for (; *v; v++)
		if ((*v | 0x20) == word[0] && strncasecmp(v, word, n) == 0)
			return 1;
	return 0;
}

/* Keep the headers we act on. */
static void
uc_header(struct upconn *c, char *line)
{
	char *v = strchr(line, ':');
	size_t n, ln;

	if (v == NULL)
		return;
	ln = (size_t)(v - line);
	*v++ = '\0';
	while (*v == ' ' || *v == '\t')
		v++;
	n = strlen(v);
	while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
		v[--n] = '\0';
	if ((line[0] == 'x' || line[0] == 'X' || line[0] == 'a' ||
	     line[0] == 'A') &&
	    uc_ratelimit(c, line, v))
		return;
		/* names compared only when the length matches */
#define IS(name) (ln == sizeof name - 1 && strcasecmp(line, name) == 0)
	if (IS("content-length"))
		c->resp.content_length = hdr_int(v);
	else if (IS("transfer-encoding"))
		c->resp.chunked = hdr_has(v, "chunked");
	else if (IS("connection")) {
		if (hdr_has(v, "close"))
			c->resp.keepalive = 0;
		else if (hdr_has(v, "keep-alive"))
			c->resp.keepalive = 1;
	} else if (IS("content-type")) {
		/* both words have an 'e', most values (application/json)
		 * none past their start: look only from the first */
		const char *e = strpbrk(v, "eE");

		c->resp.event_stream = e && hdr_has(e, "event-stream");
		c->resp.amz_eventstream =
		    e && hdr_has(v, "vnd.amazon.eventstream");
	} else if (IS("x-amzn-errortype"))
		snprintf(c->resp.error_type, sizeof c->resp.error_type, "%.*s",
		         (int)strcspn(v, ":"), v);
	else if (IS("x-should-retry"))
		c->resp.should_retry = strcasecmp(v, "true") == 0;
	else if (IS("retry-after-ms") || IS("x-ms-retry-after-ms") ||
	         IS("retry-after")) {
		int64_t ms = IS("retry-after")
		                 ? classify_retry_after(NULL, NULL, v)
		                 : classify_retry_after(v, NULL, NULL);
		if (ms >= 0 &&
		    (c->resp.retry_after_ms < 0 || !IS("retry-after")))
			c->resp.retry_after_ms = ms;
	}
#undef IS
}

/* Parse the status line; -1 if it is not HTTP. */
static int
uc_status(struct upconn *c, const char *line)
{
	/* "HTTP/1.x NNN ..." by hand: this runs for every response */
	if (strncmp(line, "HTTP/1.", 7) != 0 ||
	    (line[7] != '0' && line[7] != '1') || line[8] != ' ' ||
	    line[9] < '1' || line[9] > '9' || line[10] < '0' ||
	    line[10] > '9' || line[11] < '0' || line[11] > '9' ||
	    (line[12] != ' ' && line[12] != '\0'))
		return -1;
	c->resp.status =
	    (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
	if (line[7] == '0')
		c->resp.keepalive = 0;
	return 0;
}

/* Headers complete: tell the owner and choose how the body ends. */
static void
uc_headers_done(struct upconn *c)
{
	int st = c->resp.status;

	if (st >= 100 && st < 200) {
		int ka = c->resp.keepalive;
		int64_t rx = c->rx;
		uc_reset_parse(c);
		c->resp.keepalive = ka;
		c->rx = rx;
		c->got_bytes = 1;
		return;
	}
	c->in_cb++;
	c->cbs->headers(c->arg, &c->resp);
	c->in_cb--;
	if (c->dead)
		return;
	uc_drop_req(c); /* bytes came back: no resend */
	if (c->resp.event_stream || c->resp.amz_eventstream) { /* minutes */
		buf_free(&c->reqbytes);
		free(c->plan);
		c->plan = NULL;
	}
	if (st == 204 || st == 304)
		c->pstate = P_DONE;
	else if (c->resp.chunked)
		c->pstate = P_CHUNK_SIZE;
	else if (c->resp.content_length >= 0) {
		c->remaining = c->resp.content_length;
		c->pstate = c->remaining ? P_BODY_LEN : P_DONE;
	} else {
		c->resp.keepalive = 0;
		c->pstate = P_BODY_CLOSE;
	}
}

/* Hand up to max bytes of body to the owner; returns bytes consumed. */
static size_t
uc_body(struct upconn *c, struct evbuffer *in, size_t max)
{
	struct evbuffer_iovec v[8];
	size_t done = 0;
	int n;

	n = evbuffer_peek(in, (ev_ssize_t)max, NULL, v, 8);
	for (int i = 0; i < n && i < 8 && done < max && !c->dead; i++) {
		size_t len = v[i].iov_len;

		if (len > max - done)
			len = max - done;
		c->in_cb++;
		c->cbs->data(c->arg, v[i].iov_base, len);
		c->in_cb--;
		done += len;
	}
	evbuffer_drain(in, done);
	return done;
}

#define UP_LINE_MAX 8192

/* The line at p (before e) through its LF, copied into line[] without its
 * CRLF (or LF) and NUL-terminated, *n its length: the bytes it took, 0 if
 * there is no LF, -1 if it is longer than UP_LINE_MAX. */
static long
uc_take_line(const char *p, const char *e, char *line, size_t *n)
{
	const char *lf = memchr(p, '\n', (size_t)(e - p));

	if (lf == NULL)
		return 0;
	if ((*n = (size_t)(lf - p)) >= UP_LINE_MAX)
		return -1;
	if (*n > 0 && lf[-1] == '\r')
		--*n;
	memcpy(line, p, *n);
	line[*n] = '\0';
	return lf + 1 - p;
}

/* Take one CRLF (or LF) terminated line into line[] without allocating:
 * 1 with *n set, 0 if incomplete, -1 if longer than UP_LINE_MAX. */
static int
uc_readline(struct evbuffer *in, char *line, size_t *n)
{
	size_t eol = 0;
	struct evbuffer_iovec v;
	struct evbuffer_ptr p;
	long k;

	/* the common case, the line in the first chunk: found with memchr,
	 * copied, drained (search_eol, remove and drain cost three times it) */
	if (evbuffer_peek(in, -1, NULL, &v, 1) >= 1 &&
	    (k = uc_take_line(v.iov_base, (const char *)v.iov_base + v.iov_len,
	                      line, n)) > 0) {
		evbuffer_drain(in, (size_t)k);
		return 1;
	}
	p = evbuffer_search_eol(in, NULL, &eol, EVBUFFER_EOL_CRLF);

	if (p.pos < 0)
		return evbuffer_get_length(in) > UP_LINE_MAX ? -1 : 0;
	if ((size_t)p.pos >= UP_LINE_MAX)
		return -1;
	evbuffer_remove(in, line, (size_t)p.pos);
	line[p.pos] = '\0';
	evbuffer_drain(in, eol);
	*n = (size_t)p.pos;
	return 1;
}

/* One line of the head (status or header, without its CRLF): 0 to go on,
 * 1 at the blank line that ends it, -1 if the status line is not HTTP. */
static int
uc_head_line(struct upconn *c, char *line, size_t n)
{
	if (c->pstate == P_STATUS) {
		if (uc_status(c, line) == -1)
			return -1;
		c->pstate = P_HEADERS;
		return 0;
	}
	if (n == 0)
		return 1;
	uc_header(c, line);
	return 0;
}

/* The status and header lines: every whole line in the first chunk of in
 * at once (a reply's head usually arrives in one read), drained together;
 * a line across chunks through uc_readline. 1 to go on, 0 to wait for
 * bytes, -1 on error. */
static int
uc_reply_head(struct upconn *c, struct evbuffer *in)
{
	char line[UP_LINE_MAX];
	struct evbuffer_iovec v;
	const char *p = NULL, *e = NULL;
	size_t n;
	long k = 0;
	int rc = 0;

	if (evbuffer_peek(in, -1, NULL, &v, 1) >= 1) {
		p = v.iov_base;
		e = p + v.iov_len;
		k = uc_take_line(p, e, line, &n);
	}
	if (k == 0) { /* no whole line in the first chunk */
		if ((rc = uc_readline(in, line, &n)) != 1)
			return rc;
		rc = uc_head_line(c, line, n);
	} else {
		do {
			if (k == -1)
				return -1;
			p += k;
			rc = uc_head_line(c, line, n);
		} while (rc == 0 && (k = uc_take_line(p, e, line, &n)) != 0);
		evbuffer_drain(in, (size_t)(p - (const char *)v.iov_base));
	}
	if (rc == -1)
		return -1;
	if (rc == 1)
		uc_headers_done(c);
	return 1;
}

/*
 * Chunked framing in the first chunk of in, at once: the CRLF after a
 * chunk's data, the next size line, the data (handed to the owner from
 * where it lies), and so on; drained once. A stream's frame is one chunk,
 * and one read holds one or more whole: this takes it in one pass where
 * line by line it cost three peeks and three drains. It stops, for the
 * line-by-line way to go on, at anything else: a line across reads, a
 * size with a prefix, sign, space or more than 15 digits (which strtoll
 * there reads), the last chunk's trailers, or max_bytes near. Whether it
 * took bytes.
 */
static int
uc_chunks(struct upconn *c, struct evbuffer *in)
{
	struct evbuffer_iovec v;
	const char *b, *p, *e, *q, *lf;
	long long sz;
	size_t n;
	int d;

	if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
		return 0;
	b = p = v.iov_base;
	e = p + v.iov_len;
	while (!c->dead && c->rx + (p - b) <= c->max_bytes) {
		if (c->pstate == P_CHUNK_CRLF) {
			if (e - p >= 1 && p[0] == '\n')
				p += 1;
			else if (e - p >= 2 && p[0] == '\r' && p[1] == '\n')
				p += 2;
			else
				break;
			c->pstate = P_CHUNK_SIZE;
		} else if (c->pstate == P_CHUNK_SIZE) {
			if ((lf = memchr(p, '\n', (size_t)(e - p))) == NULL ||
			    lf - p >= UP_LINE_MAX)
				break;
			for (q = p, sz = 0;
			     q < lf && q - p < 16 && (d = buf_hexval(*q)) >= 0;
			     q++)
				sz = sz * 16 + d;
			if (q == p || q - p > 15 ||
			    (*q != ';' && *q != '\r' && *q != '\n'))
				break;
			p = lf + 1;
			c->remaining = sz;
			c->pstate = sz ? P_CHUNK_DATA : P_TRAILERS;
		} else if (c->pstate == P_CHUNK_DATA && p < e) {
			n = (size_t)(e - p);
			if ((int64_t)n > c->remaining)
				n = (size_t)c->remaining;
			c->in_cb++;
			c->cbs->data(c->arg, p, n);
			c->in_cb--;
			p += n;
			if ((c->remaining -= (int64_t)n) == 0)
				c->pstate = P_CHUNK_CRLF;
		} else {
			break;
		}
	}
	if (p == b)
		return 0;
	evbuffer_drain(in, (size_t)(p - b));
	return 1;
}

/* One parse step; returns 1 to go on, 0 to wait for bytes, -1 on error. */
static int
uc_step(struct upconn *c, struct evbuffer *in)
{
	char buf[UP_LINE_MAX];
	char *line = buf;
	size_t n = 0;
	int rc;

	switch (c->pstate) {
	case P_STATUS:
	case P_HEADERS:
		return uc_reply_head(c, in);
	case P_CHUNK_SIZE:
	case P_CHUNK_CRLF:
	case P_CHUNK_DATA:
		if (uc_chunks(c, in))
			return 1;
		if (c->pstate == P_CHUNK_DATA)
			break;
		/* a line the one pass left: as the trailers' */
		/* FALLTHROUGH */
	case P_TRAILERS:
		if ((rc = uc_readline(in, buf, &n)) != 1)
			return rc;
		break;
	default:
		break;
	}
	switch (c->pstate) {
	case P_STATUS:
	case P_HEADERS:
		break; /* uc_reply_head */
	case P_CHUNK_SIZE: {
		char *end;
		long long sz = strtoll(line, &end, 16);

		if (end == line || sz < 0)
			goto bad;
		c->remaining = sz;
		c->pstate = sz ? P_CHUNK_DATA : P_TRAILERS;
		break;
	}
	case P_CHUNK_CRLF:
		if (n != 0)
			goto bad;
		c->pstate = P_CHUNK_SIZE;
		break;
	case P_TRAILERS:
		if (n == 0)
			c->pstate = P_DONE;
		break;
	case P_BODY_LEN:
	case P_CHUNK_DATA:
	case P_BODY_CLOSE:
		if (evbuffer_get_length(in) == 0)
			return 0;
		n = uc_body(c, in,
		            c->pstate == P_BODY_CLOSE ? evbuffer_get_length(in)
		                                      : (size_t)c->remaining);
		if (c->pstate != P_BODY_CLOSE &&
		    (c->remaining -= (int64_t)n) == 0)
			c->pstate =
			    c->pstate == P_BODY_LEN ? P_DONE : P_CHUNK_CRLF;
		break;
	case P_DONE:
		return 0;
	}
	return 1;
bad:
	return -1;
}

/* Parse what in holds: steps until it needs bytes, the reply is done, the
 * owner let go, or an error; 0, -1 (malformed) or UC_TOO_BIG. */
static int
uc_parse(struct upconn *c, struct evbuffer *in)
{
	size_t before;
	int rc;

	do {
		before = evbuffer_get_length(in);
		rc = uc_step(c, in);
		c->rx += (int64_t)(before - evbuffer_get_length(in));
		if (c->rx > c->max_bytes)
			return UC_TOO_BIG;
	} while (rc == 1 && !c->dead && c->pstate != P_DONE);
	return rc == -1 ? -1 : 0;
}

/* Response finished: hand the connection back, then tell the owner. */
static void
uc_finish(struct upconn *c)
{
	const struct up_cbs *cbs = c->cbs;
	void *arg = c->arg;

	c->cbs = NULL;
	uc_release(c);
	cbs->done(arg);
}

static void
uc_read_cb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	uc_on_read(arg);
}

/* Bytes arrived: parse them. */
static void
uc_on_read(struct upconn *c)
{
	if (up_read_hook)
		up_read_hook(1);
	uc_on_read1(c);
	if (up_read_hook)
		up_read_hook(0);
}

/* uc_on_read, inside the read hook. */
static void
uc_on_read1(struct upconn *c)
{
	struct evbuffer *in = uc_in(c);
	char msg[80];
	int rc;

	if (c->state == UC_IDLE) { /* bytes on an idle socket: drop it */
		uc_free(c);
		return;
	}
	if (c->cbs == NULL)
		return;
	c->got_bytes |= evbuffer_get_length(in) > 0;
	rc = uc_parse(c, in);
	if (c->dead) {
		if (c->cbs == NULL && !c->in_cb)
			uc_free(c);
		return;
	}
	if (rc == UC_TOO_BIG) { /* the message outlives c (uc_fail frees it) */
		snprintf(msg, sizeof msg,
		         "upstream reply larger than %lld bytes",
		         (long long)c->max_bytes);
		uc_fail(c, msg);
	} else if (rc == -1)
		uc_fail(c, "malformed HTTP response from upstream");
	else if (c->pstate == P_DONE)
		uc_finish(c);
}

/*
 * The response parser without a connection, for tests and fuzzing: n bytes
 * arrive in pieces of at most chunk bytes, as from the network, and the
 * callbacks fire as for up_request (never error); the end of the input
 * ends a body framed by the connection's close.
 */
int
up_parse(const char *p, size_t n, size_t chunk, int64_t max_bytes,
         const struct up_cbs *cbs, void *arg)
{
	struct evbuffer *in = evbuffer_new();
	struct upconn c;
	size_t off = 0, k;
	int rc = 0;

	if (in == NULL)
		return -1;
	memset(&c, 0, sizeof c);
	c.cbs = cbs;
	c.arg = arg;
	c.max_bytes = max_bytes;
	uc_reset_parse(&c);
	if (chunk == 0)
		chunk = n ? n : 1;
	while (rc == 0 && c.pstate != P_DONE && off < n) {
		k = n - off < chunk ? n - off : chunk;
		/* each piece a chunk of its own, so lines span chunks */
		evbuffer_add_reference(in, p + off, k, NULL, NULL);
		off += k;
		rc = uc_parse(&c, in);
	}
	if (rc == 0 && c.pstate == P_BODY_CLOSE)
		c.pstate = P_DONE;
	evbuffer_free(in);
	buf_free(&c.reqbytes);
	free(c.plan);
	free(c.err);
	if (rc < 0)
		return rc;
	return c.pstate == P_DONE;
}

/* A reused keep-alive socket the server had closed: send again, once. */
static int
uc_retry_stale(struct upconn *c)
{
	if (!c->reused || c->resent || c->got_bytes)
		return 0;
	c->resent = 1;
	c->reused = 0;
	uc_close_io(c);
	uc_reset_parse(c);
	uc_connect(c);
	return 1;
}

/* Text for a transport error on this connection. */
static void
uc_error_text(struct upconn *c, short what, char *out, size_t outsz)
{
	unsigned long e;
	SSL *ssl =
	    c->bev && c->pool->ctx ? bufferevent_openssl_get_ssl(c->bev) : NULL;
	char es[160];
	int err = c->io ? c->io_err : EVUTIL_SOCKET_ERROR();

	if (ssl && (e = bufferevent_get_openssl_error(c->bev)) != 0) {
		long vr = SSL_get_verify_result(ssl);

		ERR_error_string_n(e, es, sizeof es);
		snprintf(out, outsz, "TLS error with %.100s: %.100s%s%.60s",
		         c->pool->hosthdr, es, vr != X509_V_OK ? ": " : "",
		         vr != X509_V_OK ? X509_verify_cert_error_string(vr)
		                         : "");
	} else if (what & BEV_EVENT_EOF)
		snprintf(out, outsz, "upstream %.100s closed the connection%s",
		         c->pool->hosthdr, c->got_bytes ? " mid-response" : "");
	else
		snprintf(out, outsz, "%s %.100s: %.60s",
		         c->state == UC_CONNECTING ? "cannot connect to"
		                                   : "connection error with",
		         c->pool->hosthdr,
		         err ? strerror(err) : "unknown error");
}

static void
uc_event_cb(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	uc_on_event(arg, what);
}

/* The connection's events (bufferevent's flags): connected, the end of
 * the stream, an error. */
static void
uc_on_event(struct upconn *c, short what)
{
	char msg[256];

	if (what & BEV_EVENT_CONNECTED) {
		int one = 1;

		c->state = UC_BUSY;
		setsockopt(bufferevent_getfd(c->bev), IPPROTO_TCP, TCP_NODELAY,
		           &one, sizeof one);
		return;
	}
	if (c->state == UC_IDLE || c->cbs == NULL) {
		uc_free(c);
		return;
	}
	if ((what & BEV_EVENT_EOF) && c->pstate == P_BODY_CLOSE) {
		c->pstate = P_DONE;
		uc_finish(c);
		return;
	}
	if ((what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) && uc_retry_stale(c))
		return;
	uc_error_text(c, what, msg, sizeof msg);
	uc_fail(c, msg);
}
