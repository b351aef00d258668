/* request.c: the request engine. One client request goes through one
 * lifecycle: parse (by its ingress), pick, attempt, retry / fall back /
 * wait, and one finish, whatever the client protocol and the provider. */
#ifndef LLMFD_REQUEST_H
#define LLMFD_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include "common/classify.h"

struct worker;
struct ingress;
struct req;
struct peer;

/* How the engine talks to its client. server.c implements it over evhttp;
 * unit tests capture it. c is the client handle. */
struct client_ops {
	/* a request header, or NULL */
	const char *(*get_header)(void *c, const char *name);
	void (*header)(void *c, const char *name, const char *value);
	/* header lines the engine built itself, each CRLF-terminated, from
	 * values that need no checking */
	void (*header_lines)(void *c, const char *lines, size_t n);
	/* a whole reply */
	void (*reply)(void *c, int status, const char *ctype, const char *body,
	              size_t n);
	/* a stream: start, data, end */
	void (*start)(void *c, int status, const char *ctype);
	void (*chunk)(void *c, const char *p, size_t n);
	void (*end)(void *c);
	/* the engine holds c for request r / lets go of it (nothing is sent
	 * after this) */
	void (*attach)(void *c, struct req *);
	void (*detach)(void *c, struct req *);
	/* the connection's peer (ident.h), or NULL (unknown: as TCP); the
	 * member may be NULL */
	const struct peer *(*peer)(void *c);
};

/* Request phases. */
#define REQ_PICKING    0 /* choosing the next candidate */
#define REQ_ATTEMPTING 1 /* attempts in flight, nothing sent yet */
#define REQ_WAITING    2 /* a backoff or a queue wait before the next try */
#define REQ_STREAMING  3 /* bytes reached the client */
#define REQ_DONE       4 /* finished; the object is being recycled */

/* Serve one client request: body (len bytes, copied) in the protocol of
 * ig. */
void req_start(struct worker *, const struct client_ops *, void *c,
               const struct ingress *, const char *body, size_t len);
/* The same, taking the body out of in (evhttp's input buffer) without a
 * copy: the request keeps it, and upstream writes refer to it. */
struct evbuffer;
void req_start_buf(struct worker *, const struct client_ops *, void *c,
                   const struct ingress *, struct evbuffer *in);
/* A fresh request id ("req-PID-N", at most REQ_ID_MAX bytes with the NUL),
 * also for an answer given outside the engine, so that every reply carries
 * x-request-id. */
#define REQ_ID_MAX 24
void req_new_id(struct worker *, char *id, size_t n);
/* The client went away: cancel everything, no reply. */
void req_client_gone(struct req *);
/* Worker drain: every request in flight finishes with its connection
 * closed afterwards (ops->header "Connection: close"). */
void req_drain(struct worker *);
/* Worker exit: abandon requests still in flight (their clients see the
 * connection close) and free every object. */
void req_free_all(struct worker *);
int req_inflight(void);
/* An idle worker: keep at most REQ_IDLE_FREE recycled request objects
 * and body holders, so the memory of a burst can go back. */
void req_trim(void);
/* Recycled request objects kept (tests). */
int req_recycled(void);

/* What the engine does after a failed attempt (exported for unit tests). */
#define DO_RETRY  0 /* the same deployment after delay_ms */
#define DO_NEXT   1 /* the next candidate */
#define DO_SWITCH 2 /* to the context-window / content-policy chain */
#define DO_FAIL   3 /* answer the client with status / code */
struct req_decision {
	int action;
	int64_t delay_ms;
	int status;
	const char *type, *code;
};
/* kind is the failure's RETRY_* kind (cfg.h), matched against
 * router.retry_on; ra_ms the upstream's Retry-After (-1: none). */
void req_decide(struct req *, enum errclass, int kind, int status,
                int64_t ra_ms, int should_retry, struct req_decision *);
/* The answer when every candidate is exhausted (exported for tests):
 * status, type, code, a message and the Retry-After seconds (0: none). */
struct req_verdict {
	int status;
	const char *type, *code;
	char msg[256];
	int64_t retry_after_s;
};
void req_exhausted_verdict(struct req *, struct req_verdict *);
/* Unit-test seams: the phase, and an upstream answer fed to the running
 * attempt without the network (event_stream: 0 none, 1 SSE, 2 an AWS
 * event stream). */
int req_phase(const struct req *);
/* Whether it still holds the client's body (a stream lets go of it once
 * nothing can send it again). */
int req_holds_body(const struct req *);
void req_test_upstream(struct req *, int status, int event_stream,
                       const char *body, size_t n, int end);

#endif
