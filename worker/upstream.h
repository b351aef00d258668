/* upstream.c: a non-blocking HTTP/1.1 client with keep-alive pools, one
 * pool per deployment. */
#ifndef LLMFD_UPSTREAM_H
#define LLMFD_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct evdns_base;
struct deploy_cfg;

#define UP_MAX_IDLE 64

/* Interesting response headers only; the rest are skipped. */
struct up_resp {
	int status;
	int chunked;
	int64_t content_length; /* -1 if absent */
	int keepalive;
	int event_stream;       /* content-type text/event-stream */
	int64_t retry_after_ms; /* -1 if absent */
	int should_retry;       /* x-should-retry, -1 if absent */
};

struct up_cbs {
	/* status line and headers are in */
	void (*headers)(void *arg, const struct up_resp *);
	/* body bytes (de-chunked) */
	void (*data)(void *arg, const char *p, size_t n);
	/* body complete */
	void (*done)(void *arg);
	/* transport failure: msg says what (connect, TLS, reset, EOF) */
	void (*error)(void *arg, const char *msg);
};

struct pool;
struct upconn;

struct pool *pool_new(struct event_base *, struct evdns_base *,
                      const struct deploy_cfg *, char **cause);
void pool_free(struct pool *);
void pool_stats(const struct pool *, int *idle, int *total);
/* Start a request; the callbacks fire later, never from inside this call.
 * Returns the connection carrying it (for up_abort), or NULL on memory
 * failure. */
struct upconn *up_request(struct pool *, const char *method, const char *path,
                          size_t plen, const char *hdrs, size_t hlen,
                          const char *body, size_t blen, const struct up_cbs *,
                          void *arg);
/* Abandon the request in flight: the connection is closed; no callback
 * fires afterwards. */
void up_abort(struct upconn *);

#endif
