/* conn.c: guards on client connections, below evhttp. A connection must
 * deliver each request within client_header_timeout_ms and may idle between
 * requests for keepalive_timeout_ms; a request head is capped in size and
 * header count and may not fold lines; CONNECT (and any method but GET, HEAD
 * and POST) and a body past the limit are answered at once. Accept errors
 * (EMFILE) shed one connection from a reserve fd and back the listeners
 * off. */
#ifndef LLMFD_CONN_H
#define LLMFD_CONN_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

struct worker;
struct bufferevent;
struct evhttp_request;
struct evconnlistener;

#define CONN_MAX_BODY   (32 << 20) /* a request body, as client.c */
#define CONN_BACKOFF_MS 100        /* listeners off after EMFILE */

/* What conn_scan_feed allows. */
struct conn_limits {
	uint32_t max_bytes;   /* request line and headers */
	uint32_t max_headers; /* header lines */
	int64_t max_body;
};

/* The incremental scan of one request as its bytes arrive. */
struct conn_scan {
	int st;
	uint32_t bytes, nhdr;
	int64_t clen, left, body;
	int ndig, chunked, http10, anthropic;
	uint16_t llen;
	char line[64]; /* start of the current line */
	char tail[9];  /* end of the request line ("HTTP/1.0") */
	char method[16];
};

/* Reset s for a new request. */
void conn_scan_init(struct conn_scan *);
/*
 * Scan n more bytes of a request. 0 while it is acceptable (bytes past the
 * end of the request, and anything this scan does not understand, are left
 * to evhttp); else the HTTP status to answer at once (400 folded header
 * line, 405 method, 413 body past max_body, 431 head past max_bytes or
 * max_headers) with *why saying so.
 */
int conn_scan_feed(struct conn_scan *, const char *p, size_t n,
                   const struct conn_limits *, const char **why);
/* The error reply for status (whole HTTP message, Connection: close) in
 * the client's shape: Anthropic's for /v1/messages, else OpenAI's. */
void conn_error_reply(struct buf *, int status, const char *why, int anthropic,
                      int http10);

/* Worker start: settings, the fd table, the reserve fd, libevent's log. */
int conn_init(struct worker *);
void conn_free(void);
/* An idle worker: shrink the fd table past the highest open descriptor. */
void conn_trim(void);
/* Entries in the fd table (tests). */
int conn_table_size(void);
/* Guard entries allocated (one per client connection seen, until
 * conn_trim finds its fd closed). */
int conn_entries(void);
/* A connection's bufferevent was just made (evhttp bevcb). */
void conn_new(struct bufferevent *);
/* The loop came round after accepts: arm the new connections' deadlines. */
void conn_settle(void);
/* A request is dispatched to its handler: no deadline while it is served;
 * when its reply is done the connection idles under keepalive_timeout. */
void conn_busy(struct evhttp_request *);
/* A stream reply is about to start: an HTTP/1.0 client learns its end by
 * the connection closing, so the connection is not kept alive. */
void conn_stream_start(struct evhttp_request *);
/* Send a whole reply to req (status, reason phrase, Content-Type, body):
 * the same bytes as evhttp_send_reply, without its printf per header line
 * for HTTP/1.1 clients; evhttp_send_reply for the others. extra (or NULL)
 * holds more headers, "Name: value\r\n" lines that come after req's
 * output headers. */
void conn_reply(struct evhttp_request *, int status, const char *reason,
                const char *ctype, const struct buf *extra, const char *body,
                size_t n);
/* Start a chunked stream reply to req the way evhttp_send_reply_start
 * does (the same bytes, the same state), without its printf per header
 * line, for HTTP/1.1 clients; extra as for conn_reply. -1 when the caller
 * must use evhttp_send_reply_start (HTTP/1.0, a length set, ...). */
int conn_stream_head(struct evhttp_request *, int status, const char *reason,
                     const char *ctype, const struct buf *extra);
/* Add "Name: value\r\n" lines to req's output headers, in order. */
void conn_add_headers(struct evhttp_request *, const char *, size_t);
/* accept() failed on a listener (evconnlistener error callback). */
void conn_accept_error(struct evconnlistener *, void *);
/* Whether the listeners are backed off after EMFILE. */
int conn_accept_paused(void);

#endif
