/* Client connections over evhttp: the engine's client_ops, one record per
 * connection (so a close reaches the request it carries, and a drain can
 * close idle keep-alive connections at once), and the request entry points
 * for each client protocol. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/queue.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/http_struct.h>
#include <event2/keyvalq_struct.h>

#include "common/log.h"
#include "common/slab.h"
#include "worker/client.h"
#include "worker/conn.h"
#include "worker/ident.h"
#include "worker/ingress.h"
#include "worker/request.h"
#include "worker/worker.h"

#define CONN_BUCKETS 4096
#define REQ_MAX_BODY (32 << 20)
/* Bytes a client may send past its request while it is being served;
 * reading stops there. */
#define CONN_READ_CAP (64 << 10)
#define CONN_SWEEP_MS 20

/* One client connection that has sent at least one request. */
struct conn {
	LIST_ENTRY(conn) link; /* hash chain */
	struct evhttp_connection *evcon;
	struct worker *w;
	struct req *req;  /* the request it carries, or NULL when idle */
	struct peer peer; /* who is at the other end (taken once) */
	struct buf hdr;   /* the reply's headers from the engine, "Name:
	                   * value\r\n", not yet in evhttp's list */
};

#define CONN_HDR_KEEP 1024 /* a header buffer past this goes at detach */

LIST_HEAD(conn_list, conn);

/* This worker's connection records, by evhttp_connection pointer. */
static struct conn_list *bucket;
static int nconn;
static struct event *sweep_ev; /* closes idle connections while draining */

static size_t
conn_hash(const struct evhttp_connection *evcon)
{
	uintptr_t p = (uintptr_t)evcon;

	return (size_t)((p >> 4) ^ (p >> 16)) % CONN_BUCKETS;
}

/* The connection closed (client hang-up, error, or evhttp freeing it):
 * the request it carries is cancelled, and the record goes. */
static void
conn_closed(struct evhttp_connection *evcon, void *arg)
{
	struct conn *c = arg;
	struct req *r = c->req;

	(void)evcon;
	LIST_REMOVE(c, link);
	nconn--;
	buf_free(&c->hdr);
	free(c);
	if (r)
		req_client_gone(r);
}

/* The record of evcon, created (with its close callback) on first use. */
static struct conn *
conn_get(struct worker *w, struct evhttp_connection *evcon)
{
	struct conn_list *l;
	struct conn *c;

	if (bucket == NULL &&
	    (bucket = calloc(CONN_BUCKETS, sizeof *bucket)) == NULL)
		return NULL;
	l = &bucket[conn_hash(evcon)];
	LIST_FOREACH(c, l, link)
	if (c->evcon == evcon)
		return c;
	if ((c = calloc(1, sizeof *c)) == NULL)
		return NULL;
	c->evcon = evcon;
	c->w = w;
	ident_peer(bufferevent_getfd(evhttp_connection_get_bufferevent(evcon)),
	           &c->peer);
	LIST_INSERT_HEAD(l, c, link);
	nconn++;
	evhttp_connection_set_closecb(evcon, conn_closed, c);
	return c;
}

/* Whether a connection is idle: no request, nothing left to write, and
 * nothing sent by the client that we have not read. */
static int
conn_idle(const struct conn *c)
{
	struct bufferevent *bev = evhttp_connection_get_bufferevent(c->evcon);
	int n = 0;

	if (c->req || evbuffer_get_length(bufferevent_get_output(bev)) > 0 ||
	    evbuffer_get_length(bufferevent_get_input(bev)) > 0)
		return 0;
	return ioctl(bufferevent_getfd(bev), FIONREAD, &n) == 0 && n == 0;
}

/* Close the idle connections; how many stay open. */
static int
client_sweep(void)
{
	struct conn *c, *next;
	int open = 0;

	for (int i = 0; bucket && i < CONN_BUCKETS; i++)
		for (c = LIST_FIRST(&bucket[i]); c; c = next) {
			next = LIST_NEXT(c, link);
			if (conn_idle(c))
				evhttp_connection_free(c->evcon);
			else
				open++;
		}
	return open;
}

static void
client_sweep_cb(evutil_socket_t fd, short ev, void *arg)
{
	(void)fd;
	(void)ev;
	(void)arg;
	client_sweep();
}

/*
 * Drain: every reply from now on closes its connection, and idle
 * keep-alive connections are closed at once and then every
 * CONN_SWEEP_MS as they become idle (a reply still being written, or a
 * request on its way, is finished first), so no client is cut and none
 * stays on the old config.
 */
void
client_drain(struct worker *w)
{
	struct timeval tv = {0, CONN_SWEEP_MS * 1000};

	req_drain(w);
	client_sweep();
	if (sweep_ev == NULL &&
	    (sweep_ev = event_new(w->base, -1, EV_PERSIST, client_sweep_cb,
	                          NULL)) != NULL)
		event_add(sweep_ev, &tv);
}

/* Client connections still open (tracked ones: they sent a request). */
int
client_open(void)
{
	return nconn;
}

/* Worker exit: forget the records (evhttp_free closes the connections;
 * their requests have let go already). */
void
client_free_all(struct worker *w)
{
	struct conn *c;

	(void)w;
	for (int i = 0; bucket && i < CONN_BUCKETS; i++)
		while ((c = LIST_FIRST(&bucket[i])) != NULL) {
			evhttp_connection_set_closecb(c->evcon, NULL, NULL);
			LIST_REMOVE(c, link);
			buf_free(&c->hdr);
			free(c);
		}
	free(bucket);
	bucket = NULL;
	nconn = 0;
	if (sweep_ev)
		event_free(sweep_ev);
	sweep_ev = NULL;
}

/* ---- client_ops over evhttp ---- */

static const char *
ev_get_header(void *c, const char *name)
{
	return evhttp_find_header(evhttp_request_get_input_headers(c), name);
}

static struct conn *conn_of(void *);

/* Whether a header may wait in the connection's buffer: not one evhttp
 * looks at or adds itself, nothing that could end a line. */
static int
ev_header_plain(const char *name, const char *value)
{
	static const char *const evhttp_own[] = {
	    "Connection",     "Proxy-Connection",  "Date",
	    "Content-Length", "Transfer-Encoding", "Content-Type"};

	if (strpbrk(name, "\r\n:") != NULL || strpbrk(value, "\r\n") != NULL)
		return 0;
	if (strchr("cdptCDPT", name[0]) == NULL || name[0] == '\0')
		return 1;
	for (size_t i = 0; i < sizeof evhttp_own / sizeof evhttp_own[0]; i++)
		if (strcasecmp(name, evhttp_own[i]) == 0)
			return 0;
	return 1;
}

/* Hand the buffered headers of k's request c to evhttp's list. */
static void
ev_header_flush(void *c, struct conn *k)
{
	if (k == NULL || k->hdr.len == 0)
		return;
	conn_add_headers(c, k->hdr.data, k->hdr.len);
	buf_reset(&k->hdr);
}

/* A reply header: kept in the connection's buffer (no allocation per
 * header, no evhttp list), which conn_reply writes after evhttp's list;
 * others go to evhttp's list behind what is buffered, in order. */
static void
ev_header(void *c, const char *name, const char *value)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(c);
	struct conn *k = conn_of(c);

	if (k != NULL && ev_header_plain(name, value)) {
		buf_adds(&k->hdr, name);
		buf_add(&k->hdr, ": ", 2);
		buf_adds(&k->hdr, value);
		buf_add(&k->hdr, "\r\n", 2);
		return;
	}
	ev_header_flush(c, k);
	if (strcmp(name, "Connection") == 0)
		evhttp_remove_header(h, name);
	evhttp_add_header(h, name, value);
}

static void
ev_reply(void *c, int status, const char *ctype, const char *body, size_t n)
{
	struct conn *k = conn_of(c);

	if (k != NULL && k->hdr.oom) /* a header could not be kept */
		buf_reset(&k->hdr);
	conn_reply(c, status, http_reason(status), ctype, k ? &k->hdr : NULL,
	           body, n);
	if (k != NULL)
		buf_reset(&k->hdr);
}

/* Free the headers of list h but those evhttp reads when a stream ends
 * (Connection, Proxy-Connection). */
static void
ev_drop_list(struct evkeyvalq *h)
{
	struct evkeyval *kv, *next;

	for (kv = TAILQ_FIRST(h); kv != NULL; kv = next) {
		next = TAILQ_NEXT(kv, next);
		if (strcasecmp(kv->key, "Connection") == 0 ||
		    strcasecmp(kv->key, "Proxy-Connection") == 0)
			continue;
		TAILQ_REMOVE(h, kv, next);
		slab_free(kv->key); /* libevent's memory (slab.c) */
		slab_free(kv->value);
		slab_free(kv);
	}
}

/* Once a stream's head is written, drop its request headers (the engine
 * read them at the start: identity, forwarded headers, the session key)
 * and its reply headers (on the wire already): a stream that lasts
 * minutes need not hold two dozen small allocations. */
static void
ev_drop_headers(struct evhttp_request *req)
{
	ev_drop_list(evhttp_request_get_input_headers(req));
	ev_drop_list(evhttp_request_get_output_headers(req));
}

/* Start a stream reply: its head written by conn_stream_head, or by
 * evhttp (HTTP/1.0 and the like). */
static void
ev_start(void *c, int status, const char *ctype)
{
	struct conn *k = conn_of(c);

	if (k != NULL && !k->hdr.oom &&
	    conn_stream_head(c, status, http_reason(status), ctype, &k->hdr) ==
	        0)
		buf_reset(&k->hdr);
	else {
		ev_header_flush(c, k);
		evhttp_add_header(evhttp_request_get_output_headers(c),
		                  "Content-Type", ctype);
		conn_stream_start(c);
		evhttp_send_reply_start(c, status, http_reason(status));
	}
	ev_drop_headers(c);
}

/* One piece of a stream: straight into the connection's output with the
 * chunk framing written here (evhttp_send_reply_chunk wants an evbuffer
 * of its own and formats the size with printf). The write event evhttp
 * enabled when the reply started sends it. */
static void
ev_chunk(void *c, const char *p, size_t n)
{
	struct evhttp_request *req = c;
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	struct evbuffer *out;
	char hex[20], *q = hex + sizeof hex;
	size_t k = n;

	if (evcon == NULL || n == 0)
		return;
	out = bufferevent_get_output(evhttp_connection_get_bufferevent(evcon));
	if (!req->chunked) { /* HTTP/1.0: the close ends the stream */
		evbuffer_add(out, p, n);
		return;
	}
	*--q = '\n';
	*--q = '\r';
	do
		*--q = "0123456789abcdef"[k & 15];
	while ((k >>= 4) != 0);
	evbuffer_add(out, q, (size_t)(hex + sizeof hex - q));
	evbuffer_add(out, p, n);
	evbuffer_add(out, "\r\n", 2);
}

static void
ev_end(void *c)
{
	evhttp_send_reply_end(c);
}

/* The record of the connection carrying request c, or NULL. */
static struct conn *
conn_of(void *c)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(c);
	struct conn *k;

	if (evcon == NULL || bucket == NULL)
		return NULL;
	LIST_FOREACH(k, &bucket[conn_hash(evcon)], link)
	if (k->evcon == evcon)
		return k;
	return NULL;
}

/* The engine took request c: a close of its connection reaches r. */
static void
ev_attach(void *c, struct req *r)
{
	struct conn *k = conn_of(c);

	if (k) {
		k->req = r;
		buf_reset(&k->hdr);
	}
}

/* The engine is done with the request: its connection is idle again and
 * reads normally. */
static void
ev_detach(void *c, struct req *r)
{
	struct conn *k = conn_of(c);

	(void)r;
	if (k == NULL)
		return;
	k->req = NULL;
	if (k->hdr.cap > CONN_HDR_KEEP)
		buf_free(&k->hdr);
	buf_reset(&k->hdr);
	bufferevent_setwatermark(evhttp_connection_get_bufferevent(k->evcon),
	                         EV_READ, 0, 0);
}

/* The peer of the connection carrying request c. */
static const struct peer *
ev_peer(void *c)
{
	struct conn *k = conn_of(c);

	return k ? &k->peer : NULL;
}

static const struct client_ops ev_ops = {
    .get_header = ev_get_header,
    .header = ev_header,
    .reply = ev_reply,
    .start = ev_start,
    .chunk = ev_chunk,
    .end = ev_end,
    .attach = ev_attach,
    .detach = ev_detach,
    .peer = ev_peer,
};

/* evhttp stops reading once a request is in, so a client hanging up is
 * not seen until we write. Keep reading (without evhttp's read callback,
 * as evhttp itself does while it writes) so EOF reaches the close callback
 * at once; a client that keeps sending fills at most CONN_READ_CAP before
 * reading stops. */
static void
client_watch_close(struct evhttp_request *hreq)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(hreq);
	struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
	bufferevent_data_cb rd, wr;
	bufferevent_event_cb ev;
	void *arg;

	bufferevent_getcb(bev, &rd, &wr, &ev, &arg);
	bufferevent_setcb(bev, NULL, wr, ev, arg);
	bufferevent_setwatermark(bev, EV_READ, 0, CONN_READ_CAP);
	bufferevent_enable(bev, EV_READ);
}

/* Hand one request to the engine in the protocol of ig. */
static void
client_handle(struct evhttp_request *hreq, struct worker *w,
              const struct ingress *ig)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(hreq);
	size_t len = evbuffer_get_length(in);
	struct buf b = {0};

	if (evhttp_request_get_command(hreq) != EVHTTP_REQ_POST) {
		server_send_error(hreq, 405, "invalid_request_error",
		                  "method_not_allowed", "use POST");
		return;
	}
	if (w->draining)
		evhttp_add_header(evhttp_request_get_output_headers(hreq),
		                  "Connection", "close");
	if (len > REQ_MAX_BODY) {
		ig->error(&b, 413, "invalid_request_error", "body_too_large",
		          "request body is larger than 32 MiB", NULL, NULL, 0);
		server_send_json(hreq, 413, &b);
		buf_free(&b);
		return;
	}
	if (conn_get(w, evhttp_request_get_connection(hreq)) == NULL) {
		server_send_error(hreq, 503, "llmfd_error", "out_of_memory",
		                  "out of memory");
		return;
	}
	client_watch_close(hreq);
	req_start_buf(w, &ev_ops, hreq, ig, in);
}

/* POST /v1/chat/completions */
void
client_chat(struct evhttp_request *hreq, void *arg)
{
	client_handle(hreq, arg, &ingress_chat);
}

/* POST /v1/messages (also ?beta=true) */
void
client_messages(struct evhttp_request *hreq, void *arg)
{
	client_handle(hreq, arg, &ingress_messages);
}

/* POST /v1/messages/count_tokens (also ?beta=true): counted by an
 * Anthropic-family upstream of the model's candidates, else llmfd's
 * estimate (msgs_count_tokens, INGRESS.md §1.1). */
void
client_count_tokens(struct evhttp_request *hreq, void *arg)
{
	client_handle(hreq, arg, &ingress_count_tokens);
}

/* POST /v1/responses */
void
client_responses(struct evhttp_request *hreq, void *arg)
{
	client_handle(hreq, arg, &ingress_responses);
}

/* POST /v1/embeddings */
void
client_embeddings(struct evhttp_request *hreq, void *arg)
{
	client_handle(hreq, arg, &ingress_embeddings);
}
