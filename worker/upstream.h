/* upstream.c: a non-blocking HTTP/1.1 client with keep-alive pools, one
 * pool per deployment. */
#ifndef LLMFD_UPSTREAM_H
#define LLMFD_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct evdns_base;
struct deploy_cfg;

#define UP_MAX_IDLE 256

/* Interesting response headers only; the rest are skipped. */
struct up_resp {
	int status;
	int chunked;
	int64_t content_length; /* -1 if absent */
	int keepalive;
	int event_stream;       /* content-type text/event-stream */
	int amz_eventstream;    /* application/vnd.amazon.eventstream */
	char error_type[64];    /* x-amzn-ErrorType up to its ':', or "" */
	int64_t retry_after_ms; /* -1 if absent */
	int should_retry;       /* x-should-retry, -1 if absent */
	/* Rate-limit headers (OpenAI/Azure x-ratelimit-*, Anthropic's
	 * anthropic-ratelimit-requests-* and -tokens-*): what is left, the
	 * limit, and ms until the window resets; -1 if absent. */
	int64_t rl_req_left, rl_req_limit, rl_req_reset_ms;
	int64_t rl_tok_left, rl_tok_limit, rl_tok_reset_ms;
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

/*
 * Memory an upstream request refers to instead of copying it (the
 * client's body): a count of its users, freed by release once the last one
 * lets go. The request holds it, and so does every connection that may
 * still write from it (until its reply begins), and every piece of a
 * socket's output buffer that points into it.
 */
struct up_hold {
	int refs;
	void (*release)(struct up_hold *);
};
void up_hold_ref(struct up_hold *);
void up_hold_unref(struct up_hold *);

/* A piece of a request body: len bytes at p, copied; with ref set, sent
 * by reference (p lies in the memory of the request's up_hold). */
struct up_part {
	const char *p;
	size_t len;
	int ref;
};
#define UP_MAX_PARTS 8 /* more are copied */

struct pool *pool_new(struct event_base *, struct evdns_base *,
                      const struct deploy_cfg *, char **cause);
void pool_free(struct pool *);
void pool_stats(const struct pool *, int *idle, int *total);
/* Close idle connections past keep (an idle worker after a burst). */
void pool_trim(struct pool *, int keep);
/* Start a request whose body is the n parts (the referenced ones kept
 * alive by hold, which may be NULL when there are none); the callbacks
 * fire later, never from inside this call. Returns the connection carrying
 * it (for up_abort), or NULL on memory failure. */
struct upconn *up_request(struct pool *, const char *method, const char *path,
                          size_t plen, const char *hdrs, size_t hlen,
                          const struct up_part *body, int n,
                          struct up_hold *hold, const struct up_cbs *,
                          void *arg);
/* Abandon the request in flight: the connection is closed; no callback
 * fires afterwards. */
void up_abort(struct upconn *);
/* Cap a whole reply (max_response_bytes): status line, headers and body as
 * parsed. Past it the attempt fails through the error callback ("upstream
 * reply larger than N bytes"). */
void up_set_max_reply(int64_t);
/* A hook called with 1 before an upstream read's bytes are parsed (and
 * their callbacks run) and with 0 after (the worker's http_cork). */
void up_set_read_hook(void (*)(int));
/* The response parser alone (tests, fuzzing): feed p in pieces of at most
 * chunk bytes (0: at once), each a chunk of the buffer of its own; callbacks as
 * for up_request. 1 if the reply completed, 0 if it needs more bytes, -1 if
 * malformed, -2 if larger than max_bytes. */
int up_parse(const char *p, size_t n, size_t chunk, int64_t max_bytes,
             const struct up_cbs *, void *arg);

#endif
