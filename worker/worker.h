/* Worker process: one event_base serving the Unix socket (and optional
 * loopback TCP), the router, providers and the upstream client. */
#ifndef LLMFD_WORKER_H
#define LLMFD_WORKER_H

#include <signal.h>
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
#include "worker/route.h"
#include "worker/upstream.h"

struct hconn;
struct evdns_base;
struct bufferevent;
struct req;

/* ---- server.c: client-facing HTTP ---- */

void server_send_json(struct hconn *, int status, struct buf *);
void server_send_error(struct hconn *, int status, const char *type,
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
	const char *proto;      /* client protocol: chat, messages, ... */
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
	const char *trail;  /* "dep:status:class:ms,...", "-" if none */
	const char *client; /* the client's name, "-" if not identified */
	long uid, pid;      /* the Unix-socket peer's, -1 if none */
	const char *comm;   /* the peer's program name, "-" if none */
	const char *cost;   /* USD, "-" when not priced */
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
	const struct cfg *cfg;
	struct shm *shm;
	int *slot_of;        /* config index -> table slot */
	int *client_slot;    /* client index -> table record (limits.c) */
	struct pool **pools; /* per config index */
	struct gauth *gauth; /* service-account tokens, NULL if none */
	int index;           /* worker column in the table */
	int nlisten;
	int listen_fd[8];
	int draining;
	int inflight;        /* client requests being served */
	unsigned idle_ticks; /* ticks (seconds) seen */
	uint64_t rng;
	uint64_t next_id;
	unsigned pid; /* request ids: set on first use */
	struct event *ev_term, *ev_int, *ev_tick;
	struct event *ev_reaccept; /* listeners back on after one accept */
};

/* Entered with every signal blocked; mask is restored once the worker's
 * own handlers are in place. */
int worker_main(const struct cfg *, struct shm *, int index,
                const int *listen_fds, int nlisten, const sigset_t *mask);
void worker_req_done(struct worker *);

#endif
