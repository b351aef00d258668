/* Worker process: one event_base serving the Unix socket (and optional
 * loopback TCP), the router, providers and the upstream client. */
#ifndef LLMFD_WORKER_H
#define LLMFD_WORKER_H

#include <sys/queue.h>
#include <sys/socket.h>
#include <stdint.h>

#include <event2/event.h>
#include <event2/event_struct.h>
#include <openssl/ssl.h>

#include "common/buf.h"
#include "common/cfg.h"
#include "common/classify.h"
#include "common/json.h"
#include "common/shm.h"
#include "common/sse.h"
#include "worker/provider.h"

struct evhttp;
struct evhttp_bound_socket;
struct evhttp_request;
struct evdns_base;
struct bufferevent;
struct req;

/* ---- upstream.c: non-blocking HTTP/1.1 client with keep-alive pools ---- */

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

/* ---- route.c: candidate picking and health bookkeeping ---- */

struct worker;

#define ROUTE_MAX_GROUPS 8
#define SKIP_NONE        0
#define SKIP_COOLING     1
#define SKIP_CIRCUIT     2
#define SKIP_RATE        3
#define SKIP_DRAINED     4
#define SKIP_WEIGHT0     5
#define SKIP_CONTEXT     6
#define SKIP_TRIED       7
#define SKIP_UNSUPPORTED 8 /* the provider cannot express this request */

const char *route_skip_name(int);
/* Pick the next deployment of group g not in `tried` (bitset over config
 * indexes). Returns the config index, or -1; *soonest_ms receives the
 * earliest monotonic time a skipped deployment comes back (0 if none). */
int route_pick(struct worker *, const struct group_cfg *, const uint64_t *tried,
               long est_tokens, int64_t *soonest_ms, int *probe);
/* The forced try of a group's only member: 0 if d may be tried ignoring
 * its cooldown (rpm reserved, *probe as route_pick), else -1. */
int route_force(struct worker *, int d, long est_tokens, int *probe);
void route_attempt_start(struct worker *, int d);
void route_attempt_end(struct worker *, int d, enum errclass, int64_t lat_us,
                       int64_t ttft_us, const struct usage *,
                       int64_t retry_after_ms, const char *errtext, int status);
/* Daemon-wide retry budget: 1 if a retry may be spent now. */
int route_retry_allowed(struct worker *);
void route_count_request(struct worker *);

/* ---- request.c: one client request through attempts to a reply ---- */

void req_handle_chat(struct evhttp_request *, void *);
void req_handle_embeddings(struct evhttp_request *, void *);
/* Worker exit: abandon requests still in flight and free every object. */
void req_free_all(struct worker *);

/* ---- server.c: client-facing HTTP ---- */

void server_send_json(struct evhttp_request *, int status, struct buf *);
void server_send_error(struct evhttp_request *, int status, const char *type,
                       const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
int server_setup(struct worker *);
void server_stop_accepting(struct worker *);

/* ---- metrics.c: GET /metrics (Prometheus text format 0.0.4) ---- */

/* The exposition of the shared table; out->oom is set on failure. */
void metrics_render(struct worker *, struct buf *out);
void metrics_render_shm(const struct shm *, int64_t now_ms, int64_t wall_ms,
                        struct buf *out);
/* Label value escaping (\\, \", \n) and exact decimal seconds. */
void metrics_escape(struct buf *, const char *);
void metrics_seconds(struct buf *, uint64_t us);

/* ---- accesslog.c: one line per client request ---- */

/* What the access log says about a finished request. Never the prompt, the
 * answer or a key. Strings are never NULL ("-" when not applicable). */
struct access_rec {
	const char *id;
	const char *model;      /* as the client named it */
	const char *deployment; /* that answered, or "-" */
	const char *provider;   /* of that deployment, or "-" */
	const char *code;       /* error code, or "-" on success */
	int attempts;
	int status; /* HTTP status; 499 = client went away */
	int latency_ms;
	int ttft_ms; /* streams that reached the client, else -1 */
	long long prompt_tokens, completion_tokens;
	int stream;
	const char *trail; /* "dep:status:class:ms,...", "-" if none */
};

/* Open the configured destination ("" stderr, "off" none, else a file
 * opened O_APPEND). Called at worker start; a failure is logged and the
 * access log is off. */
void accesslog_open(const struct cfg *);
void accesslog_close(void);
int accesslog_enabled(void);
void accesslog_write(const struct cfg *, const struct access_rec *);
/* Format one line (newline included) into b: text or JSON. */
void accesslog_format(struct buf *b, int log_format, int64_t wall_ms,
                      const struct access_rec *);

/* ---- worker.c ---- */

struct worker {
	struct event_base *base;
	struct evdns_base *dns;
	struct evhttp *http;
	const struct cfg *cfg;
	struct shm *shm;
	int *slot_of;        /* config index -> table slot */
	struct pool **pools; /* per config index */
	int index;           /* worker column in the table */
	int nlisten;
	int listen_fd[8];
	struct evhttp_bound_socket *bound[8];
	int draining;
	int inflight; /* client requests being served */
	uint64_t rng;
	uint64_t next_id;
	struct event *ev_term, *ev_int, *ev_tick;
	struct event *ev_reaccept; /* listeners back on after one accept */
	struct req *free_reqs;     /* recycled request objects */
	int nfree;
	LIST_HEAD(, req) reqs;
};

extern struct worker *wk;

int worker_main(const struct cfg *, struct shm *, int index,
                const int *listen_fds, int nlisten);
void worker_req_done(struct worker *);

#endif
