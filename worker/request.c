/* The request engine. One client request, one lifecycle:
 *
 *   req_start      the ingress parses the body into the canonical request
 *   req_next       a loop: pick the next candidate (route.c) and start it,
 *                  or wait for a cooling one, or give up
 *   att_*          one upstream attempt (at most two at once: a hedge);
 *                  its outcome is classified once and req_decide says what
 *                  follows: retry after a backoff, next candidate, switch
 *                  to a context/content chain, or fail
 *   req_finish     the one way out: log, access log, send (whole reply,
 *                  stream end, stream error or error reply), release
 *
 * Replies and stream chunks are canonical (OpenAI Chat Completions shapes)
 * until the ingress encodes them for the client, unless a provider passed
 * the client's own format through. A stream reaches the client only once
 * the first content has arrived, so any earlier failure can still fall
 * back; after that a failure either continues on the next candidate
 * (stream_resume = "continue") or ends the stream with an error event in
 * the client's protocol. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/backoff.h"
#include "common/clock.h"
#include "common/log.h"
#include "worker/ingress.h"
#include "worker/request.h"
#include "worker/route.h"
#include "worker/upstream.h"
#include "worker/worker.h"

#define REQ_MAX_TRAIL 12
#define REQ_MAX_FREE  256 /* recycled request objects kept after a burst */
#define REQ_KEEP_BUF  (64 << 10) /* bigger buffers are freed on recycling */
#define ERRBODY_MAX   65536

struct attempt_rec {
	int d;
	int status;
	int cls;
	int skip;
	int ms;
	char msg[96];
};

/* One upstream attempt; a request runs at most two at once (a hedge).
 * Buffers stay warm across requests; st is cleared for every attempt. */
struct attempt {
	struct req *r;
	struct prov_out po;
	struct buf rbody;
	struct buf out;  /* translated, not yet sent */
	struct buf text; /* content text this attempt produced */
	struct sse sse;
	struct stream_state ss;
	struct event ev_timer; /* attempt / first token / idle */
	struct {
		int active;
		int d;
		int hedge;  /* started by the hedge timer */
		int resume; /* continues a cut stream */
		int native; /* the provider passes the client's format */
		struct upconn *up;
		struct prov_call pc;
		const struct provider *prov;
		int64_t t0_us, ttft_us;
		struct up_resp resp;
		int streaming, complete, in_stream_err;
		struct usage usage;
	} st;
};

/* Everything that belongs to one request, cleared with one memset. */
struct req_st {
	const struct client_ops *ops;
	void *c; /* the client handle; NULL once it is gone */
	const struct ingress *ig;
	int phase;
	char id[24];
	int64_t t0_us, deadline_ms;

	/* the request, as the engine reads it */
	const struct json *doc; /* canonical document: &canon_j or &j */
	char model[CFG_NAME_MAX];
	int stream, include_usage;
	int req_retries;    /* num_retries field, -1 if absent */
	int first_token_ms; /* stream_timeout field, -1 if absent */
	long est_tokens;

	/* candidates */
	const struct group_cfg *groups[ROUTE_MAX_GROUPS];
	int ngroups, gi;
	struct group_cfg single; /* model names one deployment */
	int single_idx;
	uint64_t tried[CFG_MAX_DEPLOY / 64];
	int d, prev_d; /* last deployment started */
	int retries_used, tries_here, attempts;
	int switched; /* context/content fallbacks taken */
	int64_t soonest_ms;
	int n_rate, n_fail, forced, hedged;
	int n_unsupported;
	char build_err[160];
	struct attempt_rec trail[REQ_MAX_TRAIL];
	int ntrail;

	/* the answer */
	int served;         /* deployment that answered, -1 */
	int tool_stream;    /* a tool call was streamed */
	int close_after;    /* end the connection after this reply */
	struct usage usage; /* of the attempt that answered */
	int64_t ttft_us;    /* of the stream that answered, -1 */
	int ig_ready;       /* ingress state initialised */
	int native;         /* the answer passed the client's format through */
	struct upstream_error uerr; /* the failure being handled */
};

struct req {
	LIST_ENTRY(req) link;
	struct req *next_free;
	struct worker *w;
	/* kept warm across requests */
	struct json j; /* the client's body */
	struct json
	    canon_j; /* the canonical body, when the ingress wrote one */
	struct buf canon;
	struct buf out;       /* the reply / chunk being sent */
	struct buf sent_text; /* streamed text, for continuation */
	struct buf fwd;       /* client headers for a same-format upstream */
	void *ig_state;       /* ingress encoder state */
	size_t ig_size;
	struct attempt att[2];
	struct event ev_deadline, ev_wait, ev_hedge;
	struct req_st s;
};

/* The request objects of this worker process. */
static LIST_HEAD(, req) reqs = LIST_HEAD_INITIALIZER(reqs);
static struct req *free_reqs;
static int nfree, ninflight;

/* The end of a request, as req_finish delivers it. */
struct req_end {
	int status; /* 200 with type NULL: success */
	const char *type, *code;
	const char *msg;
	int d; /* the deployment an interrupted stream came from, or -1 */
};

static void req_next(struct req *);
static void att_failed(struct attempt *, enum errclass, int status,
                       const char *msg, int64_t retry_after_ms,
                       int should_retry);
static void req_finish(struct req *, const struct req_end *);
static void req_deadline(evutil_socket_t, short, void *);
static void req_wait_cb(evutil_socket_t, short, void *);
static void req_hedge(evutil_socket_t, short, void *);
static void att_timeout(evutil_socket_t, short, void *);

static const struct up_cbs up_cbs;

/* A recycled (or new) request object with its buffers kept warm. */
static struct req *
req_get(struct worker *w)
{
	struct req *r = free_reqs;

	if (r) {
		free_reqs = r->next_free;
		nfree--;
		return r;
	}
	if ((r = calloc(1, sizeof *r)) == NULL)
		return NULL;
	r->w = w;
	for (int i = 0; i < 2; i++) {
		r->att[i].r = r;
		event_assign(&r->att[i].ev_timer, w->base, -1, 0, att_timeout,
		             &r->att[i]);
	}
	event_assign(&r->ev_deadline, w->base, -1, 0, req_deadline, r);
	event_assign(&r->ev_wait, w->base, -1, 0, req_wait_cb, r);
	event_assign(&r->ev_hedge, w->base, -1, 0, req_hedge, r);
	return r;
}

/* Free a buffer that grew past REQ_KEEP_BUF, else just empty it. */
static void
buf_recycle(struct buf *b)
{
	if (b->cap > REQ_KEEP_BUF)
		buf_free(b);
	else
		buf_reset(b);
}

/* Let go of attempt a's buffers: the request copies always, the reply
 * buffers with how (freed, or recycled). */
static void
att_bufs(struct attempt *a, void (*how)(struct buf *))
{
	buf_free(&a->po.path);
	buf_free(&a->po.headers);
	buf_free(&a->po.body);
	how(&a->rbody);
	how(&a->out);
	how(&a->text);
	stream_state_free(&a->ss);
}

static void
req_destroy(struct req *r)
{
	json_free(&r->j);
	json_free(&r->canon_j);
	for (int i = 0; i < 2; i++) {
		att_bufs(&r->att[i], buf_free);
		sse_free(&r->att[i].sse);
	}
	buf_free(&r->canon);
	buf_free(&r->out);
	buf_free(&r->sent_text);
	buf_free(&r->fwd);
	free(r->ig_state);
	free(r);
}

/* Milliseconds since the request arrived. */
static int
req_elapsed_ms(const struct req *r)
{
	return (int)((clock_us() - r->s.t0_us) / 1000);
}

/* Time left before the deadline, in ms (may be <= 0). */
static int64_t
req_left_ms(const struct req *r)
{
	return r->s.deadline_ms - clock_ms();
}

static void
req_arm(struct event *ev, int64_t ms)
{
	struct timeval tv;

	if (ms < 0)
		ms = 0;
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	event_add(ev, &tv);
}

static int
att_ms(const struct attempt *a)
{
	return (int)((clock_us() - a->st.t0_us) / 1000);
}

static const char *
dname(const struct req *r, int d)
{
	return d >= 0 ? r->w->cfg->deploy[d].name : "-";
}

/* The other attempt of the pair, if it is running. */
static struct attempt *
att_other(struct attempt *a)
{
	struct attempt *o = a == &a->r->att[0] ? &a->r->att[1] : &a->r->att[0];

	return o->st.active ? o : NULL;
}

/* ---- the attempt trail ---- */

/* Note one attempt (or skip) in the trail. */
static void
req_trail(struct req *r, int d, int status, int cls, int skip, int ms,
          const char *msg)
{
	struct attempt_rec *a;

	if (r->s.ntrail >= REQ_MAX_TRAIL)
		return;
	a = &r->s.trail[r->s.ntrail++];
	a->d = d;
	a->status = status;
	a->cls = cls;
	a->skip = skip;
	a->ms = ms;
	snprintf(a->msg, sizeof a->msg, "%.*s", (int)sizeof a->msg - 1,
	         msg ? msg : "");
}

/* The attempt trail as a JSON array. */
static void
req_trail_json(struct req *r, struct buf *b)
{
	struct jw jw;

	jw_init(&jw, b);
	jw_arr(&jw);
	for (int i = 0; i < r->s.ntrail; i++) {
		const struct attempt_rec *a = &r->s.trail[i];

		jw_obj(&jw);
		jw_key(&jw, "deployment");
		jw_cstr(&jw, dname(r, a->d));
		if (a->skip) {
			jw_key(&jw, "skipped");
			jw_cstr(&jw, route_skip_name(a->skip));
		} else {
			jw_key(&jw, "status");
			jw_int(&jw, a->status);
			jw_key(&jw, "class");
			jw_cstr(&jw, errclass_name(a->cls));
			jw_key(&jw, "ms");
			jw_int(&jw, a->ms);
		}
		if (a->msg[0]) {
			jw_key(&jw, "message");
			jw_cstr(&jw, a->msg);
		}
		jw_obj_end(&jw);
	}
	jw_arr_end(&jw);
}

/* The access log's compact trail: "dep:status:class:ms,...". */
static void
req_trail_text(struct req *r, char *t, size_t sz)
{
	size_t n = 0;

	snprintf(t, sz, "-");
	for (int i = 0; i < r->s.ntrail && n < sz; i++) {
		const struct attempt_rec *a = &r->s.trail[i];

		n += (size_t)snprintf(t + n, sz - n, "%s%s:", i ? "," : "",
		                      dname(r, a->d));
		if (n < sz)
			n += (size_t)(a->skip ? snprintf(t + n, sz - n,
			                                 "-:skipped:0")
			                      : snprintf(t + n, sz - n,
			                                 "%d:%s:%d", a->status,
			                                 errclass_name(a->cls),
			                                 a->ms));
	}
}

/* ---- the one way out ---- */

/* The response headers every reply carries. */
static void
req_common_headers(struct req *r)
{
	const struct client_ops *o = r->s.ops;
	char n[16];

	o->header(r->s.c, "x-request-id", r->s.id);
	snprintf(n, sizeof n, "%d", r->s.attempts);
	o->header(r->s.c, "x-llmfd-attempts", n);
	if (r->s.served >= 0) {
		o->header(r->s.c, "x-llmfd-deployment", dname(r, r->s.served));
		o->header(
		    r->s.c, "x-llmfd-provider",
		    cfg_provider_name(r->w->cfg->deploy[r->s.served].provider));
	}
	if (r->s.close_after)
		o->header(r->s.c, "Connection", "close");
}

/* Write the access log line. */
static void
req_access(struct req *r, int status, const char *code)
{
	const struct deploy_cfg *d =
	    r->s.served >= 0 ? &r->w->cfg->deploy[r->s.served] : NULL;
	char trail[REQ_MAX_TRAIL * 96];
	int ok = code == NULL;

	if (!accesslog_enabled())
		return;
	req_trail_text(r, trail, sizeof trail);
	accesslog_write(
	    r->w->cfg,
	    &(struct access_rec){
	        .id = r->s.id,
	        .proto = r->s.ig->name,
	        .model = r->s.model[0] ? r->s.model : "-",
	        .deployment = d ? d->name : "-",
	        .provider = d ? cfg_provider_name(d->provider) : "-",
	        .code = code ? code : "-",
	        .attempts = r->s.attempts,
	        .status = status,
	        .latency_ms = req_elapsed_ms(r),
	        .ttft_ms =
	            ok && r->s.ttft_us >= 0 ? (int)(r->s.ttft_us / 1000) : -1,
	        .prompt_tokens = ok ? r->s.usage.prompt_tokens : 0,
	        .completion_tokens = ok ? r->s.usage.completion_tokens : 0,
	        .stream = r->s.stream,
	        .trail = trail});
}

/* Send the end of the request to the client, as its phase requires. */
static void
req_send_end(struct req *r, const struct req_end *e)
{
	const struct client_ops *o = r->s.ops;
	const struct ingress *ig = r->s.ig;
	void *st = r->ig_state;
	struct buf *b = &r->out;

	if (r->s.phase == REQ_STREAMING) {
		buf_reset(b);
		if (e->type == NULL && ig->done && !r->s.native)
			ig->done(st, b);
		else if (e->type)
			ig->fail(st, e->status, e->code, e->msg, dname(r, e->d),
			         b);
		if (b->len)
			o->chunk(r->s.c, b->data, b->len);
		o->end(r->s.c);
		return;
	}
	req_common_headers(r);
	if (e->type == NULL) { /* the whole reply was encoded into r->out */
		o->reply(r->s.c, 200, "application/json",
		         b->data ? b->data : "", b->len);
		return;
	}
	buf_reset(b);
	if (r->s.ntrail) {
		struct buf t = {0};

		req_trail_json(r, &t);
		ig->error(b, e->status, e->type, e->code, e->msg, r->s.id,
		          t.data, t.len);
		buf_free(&t);
	} else
		ig->error(b, e->status, e->type, e->code, e->msg, r->s.id, NULL,
		          0);
	o->reply(r->s.c, e->status, "application/json", b->data ? b->data : "",
	         b->len);
}

/* Stop an attempt's I/O and timer. */
static void
att_stop(struct attempt *a)
{
	if (a->st.up) {
		up_abort(a->st.up);
		a->st.up = NULL;
	}
	event_del(&a->ev_timer);
	a->st.active = 0;
}

/* Cancel a running attempt that is not needed any more (hedge loser,
 * client gone, request finished): counted as cancelled, not failed. */
static void
att_cancel(struct attempt *a, const char *why)
{
	struct req *r = a->r;

	if (!a->st.active)
		return;
	att_stop(a);
	route_attempt_end(r->w, a->st.d, EC_CANCELLED, clock_us() - a->st.t0_us,
	                  -1, NULL, -1, NULL, 0);
	req_trail(r, a->st.d, 0, EC_CANCELLED, 0, att_ms(a), why);
	log_debug("%s attempt on %s cancelled: %s", r->s.id, dname(r, a->st.d),
	          why);
}

/* Stop the request's timers, let go of its client and its encoder state:
 * after this no callback can reach it. */
static void
req_unhook(struct req *r)
{
	event_del(&r->ev_deadline);
	event_del(&r->ev_wait);
	event_del(&r->ev_hedge);
	if (r->s.c)
		r->s.ops->detach(r->s.c, r);
	r->s.c = NULL;
	if (r->s.ig_ready && r->s.ig->fini)
		r->s.ig->fini(r->ig_state);
	r->s.ig_ready = 0;
}

/* Let go of everything the request holds and recycle the object. */
static void
req_release(struct req *r)
{
	struct worker *w = r->w;

	for (int i = 0; i < 2; i++) {
		struct attempt *a = &r->att[i];

		att_cancel(a, "request finished");
		sse_reset(&a->sse);
		att_bufs(a, buf_recycle);
	}
	req_unhook(r);
	buf_recycle(&r->canon);
	buf_recycle(&r->out);
	buf_recycle(&r->sent_text);
	buf_reset(&r->fwd);
	memset(&r->s, 0, sizeof r->s);
	r->s.phase = REQ_DONE;
	LIST_REMOVE(r, link);
	ninflight--;
	if (nfree >= REQ_MAX_FREE) {
		req_destroy(r);
	} else {
		r->next_free = free_reqs;
		free_reqs = r;
		nfree++;
	}
	worker_req_done(w);
}

/*
 * The one way out of a request: log it, write its access log line, send
 * its end to the client as its phase requires (a whole reply, a stream's
 * end, a stream's error event, or an error reply; nothing when the client
 * is gone), and release it.
 */
static void
req_finish(struct req *r, const struct req_end *e)
{
	int status = e->status, streaming = r->s.phase == REQ_STREAMING;
	const char *code = e->type ? (e->code ? e->code : e->type) : NULL;

	if (r->s.phase == REQ_DONE)
		return;
	if (e->type && r->s.ig->map_status)
		status = r->s.ig->map_status(status);
	if (r->s.c == NULL) {
		log_info("%s client went away after %d ms; cancelling", r->s.id,
		         req_elapsed_ms(r));
		status = 499;
		code = "client_closed";
	} else if (e->type == NULL)
		log_info("%s %s -> 200%s via %s (%d attempts, %d ms)", r->s.id,
		         r->s.model, streaming ? " stream" : "",
		         dname(r, r->s.served), r->s.attempts,
		         req_elapsed_ms(r));
	else if (streaming) {
		log_warnx("%s stream interrupted after %d ms: %s", r->s.id,
		          req_elapsed_ms(r), e->msg);
		status = 200;
		code = "stream_interrupted";
	} else
		log_info("%s %s -> %d %s (%d attempts, %d ms)", r->s.id,
		         r->s.model, status, code, r->s.attempts,
		         req_elapsed_ms(r));
	for (int i = 0; i < 2; i++)
		att_cancel(&r->att[i],
		           r->s.c ? "request finished" : "client went away");
	req_access(r, status, code);
	if (r->s.c)
		req_send_end(r, &(struct req_end){.status = status,
		                                  .type = e->type,
		                                  .code = e->code,
		                                  .msg = e->msg,
		                                  .d = e->d});
	req_release(r);
}

/* Finish with an error. */
static void
req_fail(struct req *r, int status, const char *type, const char *code,
         const char *msg)
{
	req_finish(r, &(struct req_end){.status = status,
	                                .type = type,
	                                .code = code,
	                                .msg = msg,
	                                .d = r->s.d});
}

/* End a stream that was cut after bytes reached the client: an error event
 * in the client's protocol and no normal end, so it cannot be mistaken for
 * complete. */
static void
req_stream_abort(struct req *r, int d, const char *msg)
{
	req_finish(r, &(struct req_end){.status = 502,
	                                .type = "upstream_error",
	                                .code = "stream_interrupted",
	                                .msg = msg,
	                                .d = d});
}

/* ---- attempts ---- */

/* The whole-request deadline passed. */
static void
req_deadline(evutil_socket_t fd, short ev, void *arg)
{
	struct req *r = arg;
	char msg[128];
	int d = r->s.d;

	(void)fd;
	(void)ev;
	for (int i = 0; i < 2; i++) {
		struct attempt *a = &r->att[i];

		if (!a->st.active)
			continue;
		d = a->st.d;
		att_stop(a);
		route_attempt_end(r->w, a->st.d, EC_TRANSIENT,
		                  clock_us() - a->st.t0_us, -1, NULL, -1,
		                  "request deadline reached", 0);
		req_trail(r, a->st.d, 0, EC_TRANSIENT, 0, att_ms(a),
		          "deadline reached");
	}
	if (r->s.phase == REQ_STREAMING) {
		req_stream_abort(r, d, "request deadline reached mid-stream");
		return;
	}
	snprintf(msg, sizeof msg,
	         "request deadline of %d ms reached after %d attempt%s",
	         (int)(r->s.deadline_ms - r->s.t0_us / 1000), r->s.attempts,
	         r->s.attempts == 1 ? "" : "s");
	req_fail(r, 504, "timeout_error", "deadline_exceeded", msg);
}

/* Attempt timer: the whole attempt, the first token, or a stream gap. */
static void
att_timeout(evutil_socket_t fd, short ev, void *arg)
{
	struct attempt *a = arg;
	const struct cfg *cfg = a->r->w->cfg;
	char msg[96];

	(void)fd;
	(void)ev;
	if (a->st.ttft_us >= 0)
		snprintf(
		    msg, sizeof msg, "stream stalled: no chunk for %d ms",
		    cfg_eff_stream_idle_timeout_ms(cfg, &cfg->deploy[a->st.d]));
	else if (a->r->s.stream)
		snprintf(msg, sizeof msg, "no first token after %d ms",
		         att_ms(a));
	else
		snprintf(msg, sizeof msg, "attempt timed out after %d ms",
		         att_ms(a));
	if (a->st.up) {
		up_abort(a->st.up);
		a->st.up = NULL;
	}
	att_failed(a, EC_TRANSIENT, 0, msg, -1, -1);
}

/* Arm the attempt timer: first token for streams, whole attempt otherwise. */
static void
att_arm(struct attempt *a)
{
	struct req *r = a->r;
	const struct cfg *cfg = r->w->cfg;
	const struct deploy_cfg *d = &cfg->deploy[a->st.d];
	int64_t ms = cfg_eff_attempt_timeout_ms(cfg, d);

	if (r->s.stream) {
		int64_t ft = r->s.first_token_ms >= 0
		                 ? r->s.first_token_ms
		                 : cfg_eff_first_token_timeout_ms(cfg, d);
		if (ft > 0 && ft < ms)
			ms = ft;
	}
	req_arm(&a->ev_timer, ms);
}

/* Whether the client's own format can go to deployment d's provider as it
 * is: the provider speaks it, and for Responses the deployment serves it
 * (OpenAI-compatible servers mostly do not). */
static int
att_native(const struct req *r, const struct provider *p,
           const struct deploy_cfg *d)
{
	int f = r->s.ig->fmt;

	if (f <= 0 || (p->formats & PROV_FMT(f)) == 0)
		return 0;
	return f != FMT_RESPONSES || d->responses_api ||
	       strcmp(d->host, "api.openai.com") == 0;
}

/* Build the upstream request for attempt a on d; -1 if the provider
 * cannot express it (the reason in build_err). */
static int
att_build(struct req *r, struct attempt *a, int d)
{
	const struct deploy_cfg *dc = &r->w->cfg->deploy[d];

	a->st.prov = provider_get(dc->provider);
	if (a->st.prov == NULL)
		return -1;
	a->st.native = !a->st.resume && att_native(r, a->st.prov, dc);
	a->st.pc = (struct prov_call){
	    .cfg = r->w->cfg,
	    .d = dc,
	    .req = r->s.doc,
	    .endpoint = r->s.ig->endpoint,
	    .stream = r->s.stream,
	    .include_usage = r->s.include_usage,
	    .drop_keys =
	        a->st.native ? r->s.ig->drop_keys : ingress_canon_drop_keys,
	    .native = a->st.native ? &r->j : NULL,
	    .native_fmt = a->st.native ? r->s.ig->fmt : 0,
	    .fwd_headers = a->st.native && r->fwd.len ? r->fwd.data : NULL,
	    .resume_text = a->st.resume ? r->sent_text.data : NULL,
	    .resume_len = a->st.resume ? r->sent_text.len : 0};
	buf_reset(&a->po.path);
	buf_reset(&a->po.headers);
	buf_reset(&a->po.body);
	return a->st.prov->build(&a->st.pc, &a->po, r->s.build_err,
	                         sizeof r->s.build_err);
}

/* Reset attempt a's per-attempt state for a new try on d. */
static void
att_reset(struct req *r, struct attempt *a, int d, int hedge)
{
	memset(&a->st, 0, sizeof a->st);
	if (!hedge)
		memset(&r->s.uerr, 0, sizeof r->s.uerr);
	a->st.d = d;
	a->st.hedge = hedge;
	a->st.resume = r->s.phase == REQ_STREAMING;
	a->st.ttft_us = -1;
	buf_reset(&a->rbody);
	buf_reset(&a->out);
	buf_reset(&a->text);
	sse_reset(&a->sse);
	stream_state_free(&a->ss);
	memset(&a->ss, 0, sizeof a->ss);
	a->ss.include_usage = r->s.include_usage;
	a->ss.role_sent = a->st.resume;
	if (r->s.stream && r->s.groups[0]->stream_resume == RESUME_CONTINUE)
		a->ss.text = &a->text;
}

/*
 * Start one attempt on deployment d. 0 once it is in flight; -1 when d's
 * provider cannot express the request (d is skipped, not failed: the
 * caller tries the next candidate, and only if none can serve it does the
 * client get a 400 with the reason) or the attempt could not be sent (it
 * was failed through att_failed, which decided what follows).
 */
static int
att_start(struct req *r, int d, int hedge)
{
	struct worker *w = r->w;
	struct attempt *a = r->att[0].st.active ? &r->att[1] : &r->att[0];
	int64_t hd;

	att_reset(r, a, d, hedge);
	r->s.build_err[0] = '\0';
	if (att_build(r, a, d) == -1) {
		if (r->s.build_err[0] == '\0')
			snprintf(r->s.build_err, sizeof r->s.build_err,
			         "provider of '%s' cannot serve this request",
			         dname(r, d));
		r->s.n_unsupported++;
		req_trail(r, d, 0, 0, SKIP_UNSUPPORTED, 0, r->s.build_err);
		return -1;
	}
	r->s.attempts++;
	if (!hedge) {
		if (d != r->s.d)
			r->s.tries_here = 0;
		r->s.d = d;
		r->s.tries_here++;
	}
	a->st.active = 1;
	a->st.t0_us = clock_us();
	if (r->s.phase != REQ_STREAMING)
		r->s.phase = REQ_ATTEMPTING;
	route_attempt_start(w, d);
	log_debug("%s attempt %d on %s%s%s", r->s.id, r->s.attempts,
	          dname(r, d), hedge ? " (hedge)" : "",
	          a->st.resume ? " (continuing)" : "");
	a->st.up = up_request(
	    w->pools[d], "POST", a->po.path.data, a->po.path.len,
	    a->po.headers.data ? a->po.headers.data : "", a->po.headers.len,
	    a->po.body.data ? a->po.body.data : "", a->po.body.len, &up_cbs, a);
	/* copied into the connection: hold no memory in a request that may
	 * stay open for minutes */
	buf_free(&a->po.path);
	buf_free(&a->po.headers);
	buf_free(&a->po.body);
	if (a->st.up == NULL) {
		att_failed(a, EC_TRANSIENT, 0, "out of memory", -1, -1);
		return -1;
	}
	att_arm(a);
	if (!hedge && !r->s.hedged && r->s.phase != REQ_STREAMING &&
	    (hd = route_hedge_delay(w, r->s.groups[0], d)) >= 0)
		req_arm(&r->ev_hedge, hd);
	return 0;
}

/* Record why each untried deployment of g was skipped. */
static void
req_note_skips(struct req *r, const struct group_cfg *g)
{
	for (int i = 0; i < g->ndeploy; i++) {
		int d = g->deploy[i];

		if (r->s.tried[d / 64] & (1ULL << (d % 64)))
			continue;
		r->s.tried[d / 64] |= 1ULL << (d % 64);
		req_trail(r, d, 0, 0, route_why(r->w, d, r->s.est_tokens), 0,
		          NULL);
	}
}

/* The next usable candidate across the groups, or -1. */
static int
req_pick(struct req *r)
{
	int64_t soonest;
	int probe, d;

	for (; r->s.gi < r->s.ngroups; r->s.gi++) {
		d = route_pick(r->w, r->s.groups[r->s.gi], r->s.tried,
		               r->s.est_tokens, &soonest, &probe);
		if (soonest &&
		    (r->s.soonest_ms == 0 || soonest < r->s.soonest_ms))
			r->s.soonest_ms = soonest;
		if (d >= 0) {
			r->s.tried[d / 64] |= 1ULL << (d % 64);
			route_count_fallback(r->w, r->s.prev_d, d, r->s.id);
			return d;
		}
		req_note_skips(r, r->s.groups[r->s.gi]);
	}
	return -1;
}

/* Hedge timer: the first attempt has produced nothing yet; start a second
 * one on the next candidate. The first to produce a token wins. */
static void
req_hedge(evutil_socket_t fd, short ev, void *arg)
{
	struct req *r = arg;
	int d, saved_prev = r->s.prev_d;
	struct attempt *a = r->att[0].st.active ? &r->att[0] : &r->att[1];

	(void)fd;
	(void)ev;
	if (r->s.phase != REQ_ATTEMPTING ||
	    r->att[0].st.active + r->att[1].st.active != 1 ||
	    a->st.ttft_us >= 0 || !route_retry_allowed(r->w))
		return;
	r->s.prev_d = r->s.d;
	while ((d = req_pick(r)) >= 0) {
		r->s.hedged = 1;
		log_debug("%s hedging %s with %s after %d ms", r->s.id,
		          dname(r, r->s.d), dname(r, d), req_elapsed_ms(r));
		if (att_start(r, d, 1) == 0 || !a->st.active)
			return;
	}
	r->s.prev_d = saved_prev;
}

/* Every candidate is exhausted: the most meaningful status. */
void
req_exhausted_verdict(struct req *r, struct req_verdict *v)
{
	memset(v, 0, sizeof *v);
	if (r->s.attempts == 0 && r->s.n_unsupported > 0 &&
	    r->s.soonest_ms == 0) {
		v->status = 400;
		v->type = "invalid_request_error";
		v->code = "unsupported_request";
		snprintf(v->msg, sizeof v->msg, "%s", r->s.build_err);
		return;
	}
	if (r->s.soonest_ms > 0 && r->s.n_fail == 0) {
		int64_t s = (r->s.soonest_ms - clock_ms() + 999) / 1000;

		v->retry_after_s = s < 1 ? 1 : s;
	}
	if (r->s.n_fail == 0 && r->s.n_rate == 0 && r->s.soonest_ms > 0) {
		v->status = 429;
		v->type = "rate_limit_error";
		v->code = "all_deployments_cooling";
		snprintf(v->msg, sizeof v->msg,
		         "every deployment for '%s' is cooling down or at its "
		         "rate limit; retry after %" PRId64 " s",
		         r->s.model, v->retry_after_s);
		return;
	}
	v->status = 502;
	v->type = "upstream_error";
	v->code = "all_deployments_failed";
	if (r->s.n_rate > 0 && r->s.n_fail == 0) {
		v->status = 429;
		v->code = "rate_limited";
		v->type = "rate_limit_error";
	} else if (r->s.n_fail > 0)
		v->status = 503;
	if (r->s.attempts == 0)
		snprintf(v->msg, sizeof v->msg,
		         "no deployment of '%s' is available", r->s.model);
	else
		snprintf(v->msg, sizeof v->msg,
		         "all %d attempt%s for model '%s' failed",
		         r->s.attempts, r->s.attempts == 1 ? "" : "s",
		         r->s.model);
}

/* Every candidate is exhausted: answer. */
static void
req_exhausted(struct req *r)
{
	struct req_verdict v;
	char ra[24];

	req_exhausted_verdict(r, &v);
	if (v.retry_after_s > 0) {
		snprintf(ra, sizeof ra, "%" PRId64, v.retry_after_s);
		r->s.ops->header(r->s.c, "Retry-After", ra);
	}
	req_fail(r, v.status, v.type, v.code, v.msg);
}

/* Whether d was attempted (not merely skipped) in this request. */
static int
req_attempted(const struct req *r, int d)
{
	for (int i = 0; i < r->s.ntrail; i++)
		if (r->s.trail[i].d == d && !r->s.trail[i].skip)
			return 1;
	return 0;
}

/* Everything is cooling or limited: wait for the soonest to come back if
 * that fits the deadline; 0 if queued. */
static int
req_queue(struct req *r)
{
	int64_t wait;

	if (r->s.soonest_ms <= 0 || !r->w->cfg->queue_when_cooling ||
	    r->s.soonest_ms >= r->s.deadline_ms || r->s.n_fail != 0)
		return -1;
	wait = r->s.soonest_ms - clock_ms();
	memset(r->s.tried, 0, sizeof r->s.tried);
	for (int i = 0; i < r->s.ntrail; i++)
		if (!r->s.trail[i].skip)
			r->s.tried[r->s.trail[i].d / 64] |=
			    1ULL << (r->s.trail[i].d % 64);
	r->s.gi = 0;
	r->s.soonest_ms = 0;
	r->s.tries_here = 0;
	r->s.phase = REQ_WAITING;
	log_debug("%s queued %" PRId64 " ms until a deployment recovers",
	          r->s.id, wait);
	req_arm(&r->ev_wait, wait + 1);
	return 0;
}

/* A group's only deployment is tried even while cooling (no
 * self-inflicted outage); its index, or -1. */
static int
req_force_single(struct req *r)
{
	const struct group_cfg *g = r->s.groups[0];
	int probe, d = g->deploy[0];

	if (r->s.forced || g->ndeploy != 1 || req_attempted(r, d))
		return -1;
	r->s.forced = 1;
	return route_force(r->w, d, r->s.est_tokens, &probe) == 0 ? d : -1;
}

/*
 * Pick the next candidate and start it, or queue, or give up. A loop: a
 * candidate whose provider cannot express the request is skipped and the
 * next one tried here, not by recursion.
 */
static void
req_next(struct req *r)
{
	int d, streaming = r->s.phase == REQ_STREAMING;

	for (;;) {
		if (!streaming)
			r->s.phase = REQ_PICKING;
		/* the deadline bounds the time to the first byte: a
		 * continuation is bounded by its own first-token timer */
		if (!streaming && req_left_ms(r) <= 0) {
			req_deadline(-1, 0, r);
			return;
		}
		if ((d = req_pick(r)) < 0 && !streaming)
			d = req_force_single(r);
		if (d < 0)
			break;
		if (att_start(r, d, 0) == 0)
			return;
		if (r->s.phase == REQ_DONE || r->att[0].st.active ||
		    r->att[1].st.active || r->s.phase == REQ_WAITING)
			return; /* att_failed took over */
	}
	if (streaming) {
		req_stream_abort(r, r->s.d,
		                 "no candidate left to continue the "
		                 "interrupted stream");
		return;
	}
	if (req_queue(r) == 0)
		return;
	req_exhausted(r);
}

/* A backoff or queue wait is over: retry the same deployment, or go on. */
static void
req_wait_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct req *r = arg;
	int probe;

	(void)fd;
	(void)ev;
	r->s.phase = REQ_PICKING;
	if (r->s.tries_here > 0 && r->s.d >= 0) {
		/* a retry after backoff: still bound by rpm, circuit, drain */
		if (route_force(r->w, r->s.d, r->s.est_tokens, &probe) == 0 &&
		    att_start(r, r->s.d, 0) == 0)
			return;
		if (r->s.phase == REQ_DONE || r->s.phase == REQ_WAITING)
			return;
		r->s.prev_d = r->s.d;
		r->s.tries_here = 0;
	}
	req_next(r);
}

/* Whether to retry the same deployment after a transient failure. */
static int
req_may_retry(struct req *r, int should_retry)
{
	const struct cfg *cfg = r->w->cfg;
	int cap = r->s.req_retries >= 0
	              ? r->s.req_retries
	              : cfg_eff_num_retries(cfg, &cfg->deploy[r->s.d]);
	int total = r->s.req_retries >= 0 ? r->s.req_retries : cfg->num_retries;

	if (should_retry == 0 || r->s.tries_here > cap)
		return 0;
	if (r->s.retries_used >= (total > cap ? total : cap))
		return 0;
	return route_retry_allowed(r->w);
}

/* The context-window or content-policy chain of the request's group. */
static const struct fallback_cfg *
req_chain(struct req *r, enum errclass cls)
{
	const struct cfg *cfg = r->w->cfg;

	if (r->s.switched)
		return NULL;
	return cfg_find_fallback(cls == EC_CONTEXT_WINDOW ? &cfg->cw_fallbacks
	                                                  : &cfg->cp_fallbacks,
	                         r->s.groups[0]->name);
}

/*
 * What follows a failed attempt (before anything reached the client), by
 * the failure's class: a bad request goes back to the client; a context or
 * content failure switches to its chain if there is one; a transient one
 * is retried on the same deployment after a backoff while the retry caps,
 * the budget and the deadline allow; anything else moves on.
 */
void
req_decide(struct req *r, enum errclass cls, int status, int64_t ra_ms,
           int should_retry, struct req_decision *dc)
{
	const struct cfg *cfg = r->w->cfg;
	int64_t delay;

	memset(dc, 0, sizeof *dc);
	dc->action = DO_NEXT;
	switch (cls) {
	case EC_BAD_REQUEST:
		dc->action = DO_FAIL;
		dc->status = status >= 400 && status < 500 ? status : 400;
		dc->type = "invalid_request_error";
		dc->code = r->s.uerr.code[0] ? r->s.uerr.code : "bad_request";
		return;
	case EC_CONTEXT_WINDOW:
	case EC_CONTENT_POLICY:
		if (req_chain(r, cls)) {
			dc->action = DO_SWITCH;
			return;
		}
		dc->action = DO_FAIL;
		dc->status = 400;
		dc->type = "invalid_request_error";
		dc->code = cls == EC_CONTEXT_WINDOW ? "context_length_exceeded"
		                                    : "content_filter";
		return;
	case EC_TRANSIENT:
		if (!req_may_retry(r, should_retry))
			return;
		delay = backoff_ms(
		    cfg_eff_backoff_base_ms(cfg, &cfg->deploy[r->s.d]),
		    cfg->backoff_max_ms, r->s.retries_used, ra_ms, &r->w->rng);
		if (delay < req_left_ms(r)) {
			dc->action = DO_RETRY;
			dc->delay_ms = delay;
		}
		return;
	default:
		return;
	}
}

/* Switch to the context-window or content-policy chain of cls. */
static void
req_switch(struct req *r, enum errclass cls)
{
	const struct fallback_cfg *f = req_chain(r, cls);

	r->s.switched = 1;
	r->s.ngroups = 0;
	for (int i = 0; i < f->nto && r->s.ngroups < ROUTE_MAX_GROUPS; i++) {
		const struct group_cfg *g = cfg_find_group(r->w->cfg, f->to[i]);
		if (g)
			r->s.groups[r->s.ngroups++] = g;
	}
	r->s.gi = 0;
}

/* A stream failed after bytes reached the client: continue it on the next
 * candidate if the group allows, else end it with an error event. */
static void
req_midstream_failure(struct req *r, int d, const char *msg)
{
	char text[256];

	if (r->s.groups[0]->stream_resume == RESUME_CONTINUE &&
	    !r->s.tool_stream && !r->s.native && r->s.ig->endpoint == EP_CHAT) {
		log_info("%s continuing the interrupted stream of %s", r->s.id,
		         dname(r, d));
		r->s.prev_d = d;
		req_next(r);
		return;
	}
	snprintf(text, sizeof text, "upstream failed mid-stream: %s", msg);
	req_stream_abort(r, d, text);
}

/* An attempt failed with class cls: record it, then do what req_decide
 * says. */
static void
att_failed(struct attempt *a, enum errclass cls, int status, const char *msg,
           int64_t ra_ms, int should_retry)
{
	struct req *r = a->r;
	struct worker *w = r->w;
	struct req_decision dc;

	att_stop(a);
	route_attempt_end(w, a->st.d, cls, clock_us() - a->st.t0_us, -1, NULL,
	                  ra_ms, msg, status);
	req_trail(r, a->st.d, status, cls, 0, att_ms(a), msg);
	log_info("%s attempt %d on %s failed: %s %d %s", r->s.id, r->s.attempts,
	         dname(r, a->st.d), errclass_name(cls), status, msg);
	if (att_other(a)) /* a hedge pair: the other one carries on */
		return;
	event_del(&r->ev_hedge);
	if (a->st.d != r->s.d) { /* the surviving hedge attempt failed */
		r->s.d = a->st.d;
		r->s.tries_here = 1;
	}
	if (r->s.phase == REQ_STREAMING) {
		buf_add(&r->sent_text, a->text.data, a->text.len);
		req_midstream_failure(r, a->st.d, msg);
		return;
	}
	if (cls == EC_RATE_LIMITED)
		r->s.n_rate++;
	else if (cls != EC_BAD_REQUEST && cls != EC_CONTEXT_WINDOW &&
	         cls != EC_CONTENT_POLICY)
		r->s.n_fail++;
	req_decide(r, cls, status, ra_ms, should_retry, &dc);
	switch (dc.action) {
	case DO_FAIL:
		req_fail(r, dc.status, dc.type, dc.code, msg);
		return;
	case DO_RETRY:
		r->s.retries_used++;
		route_count_retry(w, r->s.d);
		r->s.phase = REQ_WAITING;
		req_arm(&r->ev_wait, dc.delay_ms);
		return;
	case DO_SWITCH:
		req_switch(r, cls);
		break;
	}
	r->s.prev_d = r->s.d;
	req_next(r);
}

/* Classify an upstream error reply and fail the attempt with it. */
static void
att_upstream_error(struct attempt *a)
{
	struct upstream_error *e = &a->r->s.uerr;

	memset(e, 0, sizeof *e);
	e->retry_after_ms = a->st.resp.retry_after_ms;
	e->should_retry = a->st.resp.should_retry;
	classify_http(a->st.resp.status, a->rbody.data ? a->rbody.data : "",
	              a->rbody.len, e);
	att_failed(a, e->cls, a->st.resp.status,
	           e->message[0] ? e->message : "upstream error",
	           e->retry_after_ms, e->should_retry);
}

/* ---- streams ---- */

/* The ingress encoder state, initialised on first use. */
static void *
req_ig_state(struct req *r)
{
	const struct ingress *ig = r->s.ig;

	if (r->s.ig_ready || ig->state_size == 0)
		return r->ig_state;
	if (r->ig_size < ig->state_size) {
		free(r->ig_state);
		r->ig_size = 0;
		if ((r->ig_state = calloc(1, ig->state_size)) == NULL)
			return NULL;
		r->ig_size = ig->state_size;
	}
	memset(r->ig_state, 0, ig->state_size);
	if (ig->init)
		ig->init(r->ig_state, &r->j);
	r->s.ig_ready = 1;
	return r->ig_state;
}

/* Encode attempt a's canonical stream lines for the client into r->out:
 * one "data: X\n\n" line at a time through the ingress, or as they are. */
static void
req_encode_stream(struct req *r, struct attempt *a)
{
	const char *p = a->out.data, *end = p + a->out.len, *e;
	void *st = req_ig_state(r);

	if (r->s.ig->chunk == NULL || a->st.native) {
		buf_add(&r->out, a->out.data, a->out.len);
		return;
	}
	while (p < end && (e = memmem(p, (size_t)(end - p), "\n\n", 2))) {
		if ((size_t)(e - p) >= 6 && memcmp(p, "data: ", 6) == 0)
			r->s.ig->chunk(st, p + 6, (size_t)(e - p - 6), &r->out);
		p = e + 2;
	}
}

/* Send what attempt a has pending to the client, starting the reply the
 * first time. */
static void
req_stream_flush(struct req *r, struct attempt *a)
{
	const struct client_ops *o = r->s.ops;

	if (r->s.phase != REQ_STREAMING) {
		r->s.served = a->st.d;
		r->s.native = a->st.native;
		o->header(r->s.c, "Cache-Control", "no-cache");
		req_common_headers(r);
		o->start(r->s.c, 200, r->s.ig->stream_type);
		r->s.phase = REQ_STREAMING;
	}
	r->s.tool_stream |= a->ss.tool_seen;
	if (a->out.len == 0)
		return;
	buf_reset(&r->out);
	req_encode_stream(r, a);
	if (r->out.len)
		o->chunk(r->s.c, r->out.data, r->out.len);
	buf_reset(&a->out);
}

/* One SSE event from the upstream, through the provider. */
static int
att_sse_event(void *arg, const char *ev, size_t elen, const char *data,
              size_t dlen)
{
	struct attempt *a = arg;
	int rc;

	if (a->st.complete)
		return 0;
	rc = a->st.prov->stream_event(&a->st.pc, &a->ss, ev, elen, data, dlen,
	                              &a->out, &a->r->s.uerr);
	if (rc == -1) {
		a->st.in_stream_err = 1;
		return 1;
	}
	if (rc == 1)
		a->st.complete = 1;
	return 0;
}

static void
up_on_headers(void *arg, const struct up_resp *resp)
{
	struct attempt *a = arg;

	a->st.resp = *resp;
	a->st.streaming =
	    a->r->s.stream && resp->status / 100 == 2 && resp->event_stream;
}

/* The first content reached us: this attempt wins; the timer now bounds
 * gaps between chunks, and the deadline no longer applies. */
static void
att_first_content(struct attempt *a)
{
	struct req *r = a->r;
	struct attempt *o = att_other(a);
	const struct cfg *cfg = r->w->cfg;

	a->st.ttft_us = clock_us() - a->st.t0_us;
	if (o)
		att_cancel(o, a->st.hedge ? "lost the hedge race"
		                          : "hedge not needed");
	event_del(&r->ev_hedge);
	event_del(&r->ev_deadline);
	req_arm(&a->ev_timer,
	        cfg_eff_stream_idle_timeout_ms(cfg, &cfg->deploy[a->st.d]));
}

static void
up_on_data(void *arg, const char *p, size_t n)
{
	struct attempt *a = arg;
	struct req *r = a->r;
	struct upstream_error *e = &r->s.uerr;
	int rc;

	if (!a->st.streaming) {
		if (a->st.resp.status / 100 == 2 || a->rbody.len < ERRBODY_MAX)
			buf_add(&a->rbody, p, n);
		return;
	}
	rc = sse_feed(&a->sse, p, n, att_sse_event, a);
	if (rc == -1 || a->st.in_stream_err) {
		if (rc == -1) {
			e->cls = EC_TRANSIENT;
			snprintf(e->message, sizeof e->message,
			         "malformed upstream stream");
		}
		att_failed(a, e->cls ? e->cls : EC_TRANSIENT, a->st.resp.status,
		           e->message, e->retry_after_ms, -1);
		return;
	}
	if (a->ss.content_filter && r->s.phase != REQ_STREAMING &&
	    req_chain(r, EC_CONTENT_POLICY)) {
		att_failed(a, EC_CONTENT_POLICY, a->st.resp.status,
		           "answer blocked by the provider's content filter",
		           -1, -1);
		return;
	}
	if (a->st.ttft_us < 0 && (a->ss.content_seen || a->st.complete))
		att_first_content(a);
	else if (a->st.ttft_us >= 0)
		req_arm(&a->ev_timer,
		        cfg_eff_stream_idle_timeout_ms(
		            r->w->cfg, &r->w->cfg->deploy[a->st.d]));
	if (a->st.ttft_us >= 0 ||
	    (r->s.phase == REQ_STREAMING && !att_other(a)))
		req_stream_flush(r, a);
}

/* OpenAI-compatible servers such as Ollama silently cut a prompt that is
 * longer than their context and answer 200; the only sign is a
 * prompt_tokens count at the context size. When the deployment declares
 * its context_window, flag such an answer to the client and the log. */
static void
req_truncation_check(struct req *r, int d, const struct usage *u)
{
	long cw = r->w->cfg->deploy[d].context_window;

	if (cw <= 0 || u->prompt_tokens < cw - cw / 50)
		return;
	r->s.ops->header(r->s.c, "x-llmfd-warning",
	                 "prompt may have been truncated by the upstream");
	log_warnx("%s %s reported %lld prompt tokens of a %ld context: the "
	          "prompt was probably truncated",
	          r->s.id, dname(r, d), u->prompt_tokens, cw);
}

/* Attempt a answered: it is the request's answer. */
static void
att_won(struct attempt *a, const struct usage *u)
{
	struct req *r = a->r;
	struct attempt *o;

	if ((o = att_other(a)) != NULL)
		att_cancel(o, a->st.hedge ? "lost the hedge race"
		                          : "hedge not needed");
	event_del(&a->ev_timer);
	a->st.active = 0;
	route_attempt_end(r->w, a->st.d, EC_OK, clock_us() - a->st.t0_us,
	                  a->st.ttft_us, u, -1, NULL, 200);
	r->s.served = a->st.d;
	r->s.native = a->st.native;
	r->s.usage = *u;
	r->s.ttft_us = a->st.ttft_us;
}

/* A whole non-stream reply arrived: translate, encode and answer. */
static void
att_whole(struct attempt *a)
{
	struct req *r = a->r;
	struct upstream_error *e = &r->s.uerr;
	struct buf *canon = &a->out;
	int cf = 0;

	buf_reset(canon);
	if (a->st.prov->response(&a->st.pc, a->rbody.data ? a->rbody.data : "",
	                         a->rbody.len, canon, &a->st.usage, &cf,
	                         e) == -1) {
		att_failed(a, e->cls ? e->cls : EC_TRANSIENT, a->st.resp.status,
		           e->message, -1, -1);
		return;
	}
	if (cf && req_chain(r, EC_CONTENT_POLICY)) {
		att_failed(a, EC_CONTENT_POLICY, a->st.resp.status,
		           "answer blocked by the provider's content filter",
		           -1, -1);
		return;
	}
	buf_reset(&r->out);
	if (r->s.ig->reply && !a->st.native &&
	    r->s.ig->reply(req_ig_state(r), canon->data ? canon->data : "",
	                   canon->len, &r->out) == -1) {
		att_failed(a, EC_TRANSIENT, a->st.resp.status,
		           "malformed upstream reply: cannot encode it", -1,
		           -1);
		return;
	}
	if (r->out.len == 0)
		buf_add(&r->out, canon->data ? canon->data : "", canon->len);
	att_won(a, &a->st.usage);
	req_truncation_check(r, a->st.d, &a->st.usage);
	req_finish(r, &(struct req_end){.status = 200});
}

static void
up_on_done(void *arg)
{
	struct attempt *a = arg;
	struct req *r = a->r;

	a->st.up = NULL;
	if (a->st.resp.status / 100 != 2) {
		att_upstream_error(a);
		return;
	}
	if (!r->s.stream) {
		att_whole(a);
		return;
	}
	if (!a->st.streaming) {
		att_failed(a, EC_TRANSIENT, a->st.resp.status,
		           "upstream did not answer with an event stream", -1,
		           -1);
		return;
	}
	if (!a->st.complete) {
		att_failed(a, EC_TRANSIENT, a->st.resp.status,
		           "upstream stream ended before completion", -1, -1);
		return;
	}
	if (a->st.ttft_us < 0)
		att_first_content(a);
	req_stream_flush(r, a);
	att_won(a, &a->ss.usage);
	req_finish(r, &(struct req_end){.status = 200});
}

static void
up_on_error(void *arg, const char *msg)
{
	struct attempt *a = arg;

	a->st.up = NULL;
	att_failed(a, EC_TRANSIENT, 0, msg, -1, -1);
}

static const struct up_cbs up_cbs = {
    .headers = up_on_headers,
    .data = up_on_data,
    .done = up_on_done,
    .error = up_on_error,
};

/* Feed the running attempt an upstream answer as if it had arrived from
 * the network (exported for unit tests): its connection is dropped, then
 * the headers (status, event_stream), the body and, if end, the end. */
void
req_test_upstream(struct req *r, int status, int event_stream, const char *body,
                  size_t n, int end)
{
	struct attempt *a = r->att[0].st.active ? &r->att[0] : &r->att[1];
	struct up_resp resp = {.status = status,
	                       .content_length = -1,
	                       .event_stream = event_stream,
	                       .retry_after_ms = -1,
	                       .should_retry = -1};

	if (!a->st.active)
		return;
	if (a->st.up) {
		up_abort(a->st.up);
		a->st.up = NULL;
		up_on_headers(a, &resp);
	}
	if (n)
		up_on_data(a, body, n);
	if (end && a->st.active)
		up_on_done(a);
}

/* The request's phase (exported for unit tests). */
int
req_phase(const struct req *r)
{
	return r->s.phase;
}

/* ---- the way in ---- */

/* The client went away: cancel everything, no reply. */
void
req_client_gone(struct req *r)
{
	if (r->s.phase == REQ_DONE)
		return;
	r->s.c = NULL; /* the dying connection has let go of it */
	req_finish(r, &(struct req_end){.status = 499,
	                                .type = "client_closed",
	                                .code = "client_closed",
	                                .msg = "client went away",
	                                .d = -1});
}

/* Read one optional number field; -2 if present but invalid. */
static int
req_opt_num(struct req *r, const char *key, double lo, double hi, double *out)
{
	const struct json *j = r->s.doc;
	int t = json_get(j, 0, key);

	if (t < 0 || json_is_null(j, t))
		return -1;
	if (json_num(j, t, out) == -1 || *out < lo || *out > hi)
		return -2;
	return 0;
}

/* Candidate groups: the model's group, then its fallbacks. */
static int
req_candidates(struct req *r)
{
	const struct cfg *cfg = r->w->cfg;
	const struct json *j = r->s.doc;
	const struct group_cfg *g = cfg_find_group(cfg, r->s.model), *fg;
	const struct fallback_cfg *f;
	int t, n;
	char name[CFG_NAME_MAX];

	if (g == NULL) {
		if ((r->s.single_idx = cfg_find_deploy(cfg, r->s.model)) < 0)
			return -1;
		snprintf(r->s.single.name, sizeof r->s.single.name, "%s",
		         cfg->deploy[r->s.single_idx].group);
		r->s.single.strategy = -1;
		r->s.single.ndeploy = 1;
		r->s.single.deploy = &r->s.single_idx;
		g = &r->s.single;
	}
	r->s.groups[r->s.ngroups++] = g;
	t = json_get(j, 0, "fallbacks");
	if (t >= 0 && json_type(j, t) == JSMN_ARRAY) {
		n = json_size(j, t);
		for (int i = 0; i < n && r->s.ngroups < ROUTE_MAX_GROUPS; i++)
			if (json_str(j, json_at(j, t, i), name, sizeof name) >=
			        0 &&
			    (fg = cfg_find_group(cfg, name)) != NULL && fg != g)
				r->s.groups[r->s.ngroups++] = fg;
	} else if ((f = cfg_find_fallback(&cfg->fallbacks, g->name)) != NULL) {
		for (int i = 0; i < f->nto && r->s.ngroups < ROUTE_MAX_GROUPS;
		     i++)
			if ((fg = cfg_find_group(cfg, f->to[i])) != NULL &&
			    fg != g)
				r->s.groups[r->s.ngroups++] = fg;
	}
	return 0;
}

/* Parse the client's body through its ingress and read what the engine
 * needs from the canonical document; -1 after answering. */
static int
req_parse(struct req *r, const char *body, size_t len)
{
	const struct cfg *cfg = r->w->cfg;
	const struct json *j;
	struct ingress_err e = {0};
	double v;
	int t, rc;

	if (json_parse(&r->j, body, len) == -1 ||
	    json_type(&r->j, 0) != JSMN_OBJECT) {
		req_fail(r, 400, "invalid_request_error", "invalid_json",
		         "request body is not a valid JSON object");
		return -1;
	}
	if (r->s.ig->parse(&r->j, &r->canon, &e) == -1) {
		req_fail(r, e.status ? e.status : 400,
		         e.type ? e.type : "invalid_request_error", e.code,
		         e.msg);
		return -1;
	}
	r->s.doc = &r->j;
	if (r->canon.len) {
		if (r->canon.oom || json_parse(&r->canon_j, r->canon.data,
		                               r->canon.len) == -1) {
			req_fail(r, 500, "llmfd_error", "internal_error",
			         "could not translate the request");
			return -1;
		}
		r->s.doc = &r->canon_j;
	}
	j = r->s.doc;
	t = json_get(j, 0, "model");
	if (t < 0 || json_type(j, t) != JSMN_STRING ||
	    json_str(j, t, r->s.model, sizeof r->s.model) <= 0) {
		req_fail(r, 400, "invalid_request_error", "missing_model",
		         "'model' is required and must be a string");
		return -1;
	}
	r->s.stream = r->s.ig->endpoint == EP_CHAT &&
	              json_is_true(j, json_get(j, 0, "stream"));
	r->s.include_usage =
	    json_is_true(j, json_path(j, 0, "stream_options.include_usage"));
	r->s.req_retries = -1;
	if ((rc = req_opt_num(r, "num_retries", 0, 10, &v)) == 0)
		r->s.req_retries = (int)v;
	else if (rc == -2)
		goto badnum;
	r->s.deadline_ms = r->s.t0_us / 1000 + cfg->timeout_ms;
	if ((rc = req_opt_num(r, "timeout", 0.001, 86400, &v)) == 0)
		r->s.deadline_ms = r->s.t0_us / 1000 + (int64_t)(v * 1000);
	else if (rc == -2)
		goto badnum;
	r->s.first_token_ms = -1;
	if ((rc = req_opt_num(r, "stream_timeout", 0.001, 86400, &v)) == 0)
		r->s.first_token_ms = (int)(v * 1000);
	else if (rc == -2)
		goto badnum;
	/* token estimate for the pre-call context check: bytes / 4 */
	r->s.est_tokens = (long)(len / 4);
	return 0;
badnum:
	req_fail(r, 400, "invalid_request_error", "invalid_parameter",
	         "'num_retries' must be 0..10; 'timeout' and 'stream_timeout' "
	         "are positive seconds");
	return -1;
}

/* The client headers a same-format upstream gets, as header lines. */
static void
req_fwd_headers(struct req *r)
{
	const char *const *h = r->s.ig->fwd_headers;
	const char *v;

	for (; h && *h; h++)
		if ((v = r->s.ops->get_header(r->s.c, *h)) != NULL &&
		    strpbrk(v, "\r\n") == NULL)
			buf_printf(&r->fwd, "%s: %s\r\n", *h, v);
}

/* Serve one client request. */
void
req_start(struct worker *w, const struct client_ops *ops, void *c,
          const struct ingress *ig, const char *body, size_t len)
{
	struct req *r;
	char msg[160];

	if ((r = req_get(w)) == NULL) {
		static const char oom[] =
		    "{\"error\":{\"message\":\"out of memory\",\"type\":"
		    "\"llmfd_error\",\"param\":null,\"code\":\"out_of_memory\"}"
		    "}";

		ops->reply(c, 503, "application/json", oom, sizeof oom - 1);
		return;
	}
	LIST_INSERT_HEAD(&reqs, r, link);
	ninflight++;
	w->inflight++;
	memset(&r->s, 0, sizeof r->s);
	r->s.ops = ops;
	r->s.c = c;
	ops->attach(c, r);
	r->s.ig = ig;
	r->s.phase = REQ_PICKING;
	r->s.t0_us = clock_us();
	r->s.d = r->s.prev_d = r->s.served = -1;
	r->s.ttft_us = -1;
	r->s.close_after = w->draining;
	snprintf(r->s.id, sizeof r->s.id, "req-%x-%" PRIx64, (unsigned)getpid(),
	         ++w->next_id);
	req_fwd_headers(r);
	if (req_parse(r, body, len) == -1)
		return;
	if (req_candidates(r) == -1) {
		snprintf(msg, sizeof msg,
		         "model '%s' is not a configured group or deployment",
		         r->s.model);
		req_fail(r, 404, "invalid_request_error", "model_not_found",
		         msg);
		return;
	}
	route_count_request(w, ig->id);
	req_arm(&r->ev_deadline, req_left_ms(r));
	req_next(r);
}

/* Worker drain: every reply from now on closes its connection. */
void
req_drain(struct worker *w)
{
	struct req *r;

	(void)w;
	LIST_FOREACH(r, &reqs, link)
	{
		r->s.close_after = 1;
		if (r->s.c && r->s.phase == REQ_STREAMING)
			r->s.ops->header(r->s.c, "Connection", "close");
	}
}

/* Requests in flight in this worker. */
int
req_inflight(void)
{
	return ninflight;
}

/* Worker exit: abandon requests still in flight and free every object.
 * Each one lets go of its client handle first, so no callback of the
 * connection (freed later with evhttp) can reach a freed request. */
void
req_free_all(struct worker *w)
{
	struct req *r;

	(void)w;
	while ((r = LIST_FIRST(&reqs)) != NULL) {
		for (int i = 0; i < 2; i++)
			att_stop(&r->att[i]);
		req_unhook(r);
		LIST_REMOVE(r, link);
		ninflight--;
		req_destroy(r);
	}
	while ((r = free_reqs) != NULL) {
		free_reqs = r->next_free;
		req_destroy(r);
	}
	nfree = 0;
}
