/* One client request: parse, pick candidates, run attempts against
 * upstreams with retries, backoff, fallbacks, hedging and one deadline,
 * and answer the client: whole, or as a stream that is started only once
 * the first content has arrived, so any earlier failure can still fall
 * back. After bytes reached the client a failure either continues on the
 * next candidate (stream_resume = "continue") or ends the stream with an
 * error event and no [DONE]. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>

#include "common/backoff.h"
#include "common/clock.h"
#include "common/log.h"
#include "worker/worker.h"

#define REQ_MAX_BODY  (32 << 20)
#define REQ_MAX_TRAIL 12
#define REQ_MAX_FREE  256 /* recycled request objects kept after a burst */
#define ERRBODY_MAX   65536

struct attempt_rec {
	int d;
	int status;
	int cls;
	int skip;
	int ms;
	char msg[96];
};

/* One upstream attempt; a request runs at most two at once (a hedge). */
struct attempt {
	struct req *r;
	int active;
	int d;
	int hedge;  /* started by the hedge timer */
	int resume; /* continues a cut stream */
	struct upconn *up;
	struct prov_call pc;
	struct prov_out po;
	const struct provider *prov;
	int64_t t0_us, ttft_us;
	struct up_resp resp;
	int streaming, complete, in_stream_err;
	struct buf rbody;
	struct sse sse;
	struct stream_state ss;
	struct buf out;  /* translated, not yet sent */
	struct buf text; /* content text this attempt produced */
	struct usage usage;
	struct event ev_timer; /* attempt / first token / idle */
};

struct req {
	LIST_ENTRY(req) link;
	struct req *next_free;
	struct worker *w;
	struct evhttp_request *hreq;
	char id[24];
	int endpoint;

	/* the client's request */
	struct json j;
	const char *body;
	size_t blen;
	int stream, include_usage;
	int req_retries;    /* num_retries field, -1 if absent */
	int first_token_ms; /* stream_timeout field, -1 if absent */
	long est_tokens;
	int64_t t0_us, deadline_ms;
	char model[CFG_NAME_MAX];

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

	/* attempts and the client side */
	struct attempt att[2];
	int served;           /* deployment that answered, -1 */
	int client_started;   /* stream bytes reached the client */
	int tool_stream;      /* a tool call was streamed */
	struct buf sent_text; /* streamed text, for continuation */
	struct buf out;
	struct evbuffer *chunk; /* reused for every chunk sent to the client */
	struct upstream_error uerr; /* the failure being handled (transient) */
	struct event ev_deadline, ev_wait, ev_hedge;
};

static const char *const drop_keys[] = {
    "fallbacks", "num_retries", "timeout", "stream_timeout", "metadata", NULL};

static void req_next(struct req *);
static void att_start(struct req *, int d, int hedge);
static void att_failed(struct attempt *, enum errclass, int status,
                       const char *msg, int64_t retry_after_ms,
                       int should_retry);
static void req_release(struct req *);
static void req_destroy(struct req *);
static void req_client_closed(struct evhttp_connection *, void *);

static const struct up_cbs up_cbs;

/* A recycled (or new) request object with its buffers kept warm. */
static struct req *
req_get(struct worker *w)
{
	struct req *r = w->free_reqs;

	if (r) {
		w->free_reqs = r->next_free;
		w->nfree--;
		return r;
	}
	if ((r = calloc(1, sizeof *r)) == NULL)
		return NULL;
	r->w = w;
	r->att[0].r = r->att[1].r = r;
	if ((r->chunk = evbuffer_new()) == NULL) {
		free(r);
		return NULL;
	}
	return r;
}

/* Milliseconds since the request arrived. */
static int
req_elapsed_ms(const struct req *r)
{
	return (int)((clock_us() - r->t0_us) / 1000);
}

/* Time left before the deadline, in ms (may be <= 0). */
static int64_t
req_left_ms(const struct req *r)
{
	return r->deadline_ms - clock_ms();
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
	return (int)((clock_us() - a->t0_us) / 1000);
}

static const char *
dname(const struct req *r, int d)
{
	return r->w->cfg->deploy[d].name;
}

static void
req_add_common_headers(struct req *r)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(r->hreq);
	char n[16];

	evhttp_add_header(h, "x-request-id", r->id);
	snprintf(n, sizeof n, "%d", r->attempts);
	evhttp_add_header(h, "x-llmfd-attempts", n);
	if (r->served >= 0) {
		evhttp_add_header(h, "x-llmfd-deployment", dname(r, r->served));
		evhttp_add_header(
		    h, "x-llmfd-provider",
		    cfg_provider_name(r->w->cfg->deploy[r->served].provider));
	}
}

/* Note one attempt (or skip) in the trail. */
static void
req_trail(struct req *r, int d, int status, int cls, int skip, int ms,
          const char *msg)
{
	struct attempt_rec *a;

	if (r->ntrail >= REQ_MAX_TRAIL)
		return;
	a = &r->trail[r->ntrail++];
	a->d = d;
	a->status = status;
	a->cls = cls;
	a->skip = skip;
	a->ms = ms;
	snprintf(a->msg, sizeof a->msg, "%.*s", (int)sizeof a->msg - 1,
	         msg ? msg : "");
}

/* Write the attempt trail as a JSON array. */
static void
req_write_trail(struct req *r, struct jw *jw)
{
	jw_arr(jw);
	for (int i = 0; i < r->ntrail; i++) {
		const struct attempt_rec *a = &r->trail[i];

		jw_obj(jw);
		jw_key(jw, "deployment");
		jw_cstr(jw, dname(r, a->d));
		if (a->skip) {
			jw_key(jw, "skipped");
			jw_cstr(jw, route_skip_name(a->skip));
		} else {
			jw_key(jw, "status");
			jw_int(jw, a->status);
			jw_key(jw, "class");
			jw_cstr(jw, errclass_name(a->cls));
			jw_key(jw, "ms");
			jw_int(jw, a->ms);
		}
		if (a->msg[0]) {
			jw_key(jw, "message");
			jw_cstr(jw, a->msg);
		}
		jw_obj_end(jw);
	}
	jw_arr_end(jw);
}

/* Write the request's access log line (before req_release recycles it);
 * u and ttft_us describe the attempt that answered (NULL / -1 if none). */
static void
req_access(struct req *r, int status, const char *code, const struct usage *u,
           int64_t ttft_us)
{
	const struct deploy_cfg *d =
	    r->served >= 0 ? &r->w->cfg->deploy[r->served] : NULL;
	char trail[REQ_MAX_TRAIL * 96] = "-";
	size_t n = 0;

	if (!accesslog_enabled())
		return;

	for (int i = 0; i < r->ntrail && n < sizeof trail; i++) {
		const struct attempt_rec *a = &r->trail[i];

		n += (size_t)snprintf(trail + n, sizeof trail - n,
		                      "%s%s:", i ? "," : "", dname(r, a->d));
		if (n < sizeof trail)
			n +=
			    (size_t)(a->skip
			                 ? snprintf(trail + n, sizeof trail - n,
			                            "-:skipped:0")
			                 : snprintf(trail + n, sizeof trail - n,
			                            "%d:%s:%d", a->status,
			                            errclass_name(a->cls),
			                            a->ms));
	}
	accesslog_write(
	    r->w->cfg, &(struct access_rec){
	                   .id = r->id,
	                   .model = r->model[0] ? r->model : "-",
	                   .deployment = d ? d->name : "-",
	                   .provider = d ? cfg_provider_name(d->provider) : "-",
	                   .code = code ? code : "-",
	                   .attempts = r->attempts,
	                   .status = status,
	                   .latency_ms = req_elapsed_ms(r),
	                   .ttft_ms = ttft_us >= 0 ? (int)(ttft_us / 1000) : -1,
	                   .prompt_tokens = u ? u->prompt_tokens : 0,
	                   .completion_tokens = u ? u->completion_tokens : 0,
	                   .stream = r->stream,
	                   .trail = trail});
}

/* Answer with an OpenAI-shaped error carrying the attempt trail. */
static void
req_error(struct req *r, int status, const char *type, const char *code,
          const char *msg)
{
	struct buf *b = &r->out;
	struct jw jw;

	buf_reset(b);
	jw_init(&jw, b);
	jw_obj(&jw);
	jw_key(&jw, "error");
	jw_obj(&jw);
	jw_key(&jw, "message");
	jw_cstr(&jw, msg);
	jw_key(&jw, "type");
	jw_cstr(&jw, type);
	jw_key(&jw, "param");
	jw_null(&jw);
	jw_key(&jw, "code");
	jw_cstr(&jw, code);
	if (r->ntrail) {
		jw_key(&jw, "attempts");
		req_write_trail(r, &jw);
	}
	jw_obj_end(&jw);
	jw_obj_end(&jw);
	req_add_common_headers(r);
	log_info("%s %s -> %d %s (%d attempts, %d ms)", r->id, r->model, status,
	         code ? code : type, r->attempts, req_elapsed_ms(r));
	req_access(r, status, code ? code : type, NULL, -1);
	server_send_json(r->hreq, status, b);
	req_release(r);
}

/* Stop an attempt's I/O and timer. */
static void
att_stop(struct attempt *a)
{
	if (a->up) {
		up_abort(a->up);
		a->up = NULL;
	}
	event_del(&a->ev_timer);
	a->active = 0;
}

/* Cancel a running attempt that is not needed any more (hedge loser,
 * client gone): counted as cancelled, not failed. */
static void
att_cancel(struct attempt *a, const char *why)
{
	struct req *r = a->r;

	if (!a->active)
		return;
	att_stop(a);
	route_attempt_end(r->w, a->d, EC_CANCELLED, clock_us() - a->t0_us, -1,
	                  NULL, -1, NULL, 0);
	req_trail(r, a->d, 0, EC_CANCELLED, 0, att_ms(a), why);
	log_debug("%s attempt on %s cancelled: %s", r->id, dname(r, a->d), why);
}

/* The other attempt of the pair, if it is running. */
static struct attempt *
att_other(struct attempt *a)
{
	struct attempt *o = a == &a->r->att[0] ? &a->r->att[1] : &a->r->att[0];

	return o->active ? o : NULL;
}

/* Free per-request state and recycle the object. */
static void
req_release(struct req *r)
{
	struct worker *w = r->w;

	for (int i = 0; i < 2; i++)
		att_cancel(&r->att[i], "request finished");
	event_del(&r->ev_deadline);
	event_del(&r->ev_wait);
	event_del(&r->ev_hedge);
	if (r->hreq) {
		struct evhttp_connection *c =
		    evhttp_request_get_connection(r->hreq);
		if (c)
			evhttp_connection_set_closecb(c, NULL, NULL);
	}
	LIST_REMOVE(r, link);
	r->hreq = NULL;
	for (int i = 0; i < 2; i++) {
		stream_state_free(&r->att[i].ss);
		sse_reset(&r->att[i].sse);
	}
	if (w->nfree >= REQ_MAX_FREE) {
		req_destroy(r);
	} else {
		r->next_free = w->free_reqs;
		w->free_reqs = r;
		w->nfree++;
	}
	worker_req_done(w);
}

/* End a stream that was cut after bytes reached the client: a final error
 * event and no [DONE], so the client cannot mistake it for complete. */
static void
req_stream_abort(struct req *r, int d, const char *msg)
{
	struct evbuffer *eb = r->chunk;
	struct buf *b = &r->out;
	struct jw jw;

	buf_reset(b);
	buf_adds(b, "data: ");
	jw_init(&jw, b);
	jw_obj(&jw);
	jw_key(&jw, "error");
	jw_obj(&jw);
	jw_key(&jw, "message");
	jw_cstr(&jw, msg);
	jw_key(&jw, "type");
	jw_cstr(&jw, "upstream_error");
	jw_key(&jw, "code");
	jw_cstr(&jw, "stream_interrupted");
	if (d >= 0) {
		jw_key(&jw, "deployment");
		jw_cstr(&jw, dname(r, d));
	}
	jw_obj_end(&jw);
	jw_obj_end(&jw);
	buf_adds(b, "\n\n");
	evbuffer_add(eb, b->data, b->len);
	evhttp_send_reply_chunk(r->hreq, eb);
	evhttp_send_reply_end(r->hreq);
	log_warnx("%s stream interrupted after %d ms: %s", r->id,
	          req_elapsed_ms(r), msg);
	req_access(r, 200, "stream_interrupted", NULL, -1);
	req_release(r);
}

/* The whole-request deadline passed. */
static void
req_deadline(evutil_socket_t fd, short ev, void *arg)
{
	struct req *r = arg;
	char msg[128];
	int d = r->d;

	(void)fd;
	(void)ev;
	for (int i = 0; i < 2; i++) {
		struct attempt *a = &r->att[i];

		if (!a->active)
			continue;
		d = a->d;
		att_stop(a);
		route_attempt_end(r->w, a->d, EC_TRANSIENT,
		                  clock_us() - a->t0_us, -1, NULL, -1,
		                  "request deadline reached", 0);
		req_trail(r, a->d, 0, EC_TRANSIENT, 0, att_ms(a),
		          "deadline reached");
	}
	if (r->client_started) {
		req_stream_abort(r, d, "request deadline reached mid-stream");
		return;
	}
	snprintf(msg, sizeof msg,
	         "request deadline of %d ms reached after %d "
	         "attempt%s",
	         (int)(r->deadline_ms - r->t0_us / 1000), r->attempts,
	         r->attempts == 1 ? "" : "s");
	req_error(r, 504, "timeout_error", "deadline_exceeded", msg);
}

/* Attempt timer: the whole attempt, the first token, or a stream gap. */
static void
att_timeout(evutil_socket_t fd, short ev, void *arg)
{
	struct attempt *a = arg;
	char msg[96];

	(void)fd;
	(void)ev;
	if (a->ttft_us >= 0)
		snprintf(msg, sizeof msg, "stream stalled: no chunk for %d ms",
		         cfg_eff_stream_idle_timeout_ms(
		             a->r->w->cfg, &a->r->w->cfg->deploy[a->d]));
	else if (a->r->stream)
		snprintf(msg, sizeof msg, "no first token after %d ms",
		         att_ms(a));
	else
		snprintf(msg, sizeof msg, "attempt timed out after %d ms",
		         att_ms(a));
	if (a->up) {
		up_abort(a->up);
		a->up = NULL;
	}
	att_failed(a, EC_TRANSIENT, 0, msg, -1, -1);
}

/* Arm the attempt timer: first token for streams, whole attempt otherwise. */
static void
att_arm(struct attempt *a)
{
	struct req *r = a->r;
	const struct cfg *cfg = r->w->cfg;
	const struct deploy_cfg *d = &cfg->deploy[a->d];
	int64_t ms = cfg_eff_attempt_timeout_ms(cfg, d);

	if (r->stream) {
		int64_t ft = r->first_token_ms >= 0
		                 ? r->first_token_ms
		                 : cfg_eff_first_token_timeout_ms(cfg, d);
		if (ft > 0 && ft < ms)
			ms = ft;
	}
	req_arm(&a->ev_timer, ms);
}

/* How long to wait before hedging the first attempt on d, or -1. */
static int64_t
req_hedge_delay(struct req *r, int d)
{
	const struct group_cfg *g = r->groups[0];
	struct slot_sh *s = &r->w->shm->slots[r->w->slot_of[d]];

	if (g->hedge_after_ms > 0)
		return g->hedge_after_ms;
	if (g->hedge_p95 && atomic_load(&s->ttft.count) >= 5)
		return shm_hist_quantile(&s->ttft, 0.95) / 1000 + 1;
	return -1;
}

/* Build and send one attempt on deployment d. A deployment whose provider
 * cannot express the request (embeddings on Anthropic, say) is skipped, not
 * failed: the next candidate is tried, and only if none can serve it does
 * the client get a 400 with the reason. */
static void
att_start(struct req *r, int d, int hedge)
{
	struct worker *w = r->w;
	const struct deploy_cfg *dc = &w->cfg->deploy[d];
	struct attempt *a = r->att[0].active ? &r->att[1] : &r->att[0];
	int64_t hd;

	a->d = d;
	a->hedge = hedge;
	a->resume = r->client_started;
	a->prov = provider_get(dc->provider);
	a->pc = (struct prov_call){
	    .cfg = w->cfg,
	    .d = dc,
	    .req = &r->j,
	    .endpoint = r->endpoint,
	    .stream = r->stream,
	    .include_usage = r->include_usage,
	    .drop_keys = drop_keys,
	    .resume_text = a->resume ? r->sent_text.data : NULL,
	    .resume_len = a->resume ? r->sent_text.len : 0};
	buf_reset(&a->po.path);
	buf_reset(&a->po.headers);
	buf_reset(&a->po.body);
	r->build_err[0] = '\0';
	if (a->prov == NULL || a->prov->build(&a->pc, &a->po, r->build_err,
	                                      sizeof r->build_err) == -1) {
		if (r->build_err[0] == '\0')
			snprintf(r->build_err, sizeof r->build_err,
			         "provider of '%s' cannot serve this request",
			         dc->name);
		r->n_unsupported++;
		req_trail(r, d, 0, 0, SKIP_UNSUPPORTED, 0, r->build_err);
		if (!hedge && att_other(a) == NULL)
			req_next(r);
		return;
	}
	r->attempts++;
	if (!hedge) {
		if (d != r->d)
			r->tries_here = 0;
		r->d = d;
		r->tries_here++;
	}
	a->active = 1;
	a->t0_us = clock_us();
	a->ttft_us = -1;
	a->streaming = a->complete = a->in_stream_err = 0;
	buf_reset(&a->rbody);
	buf_reset(&a->out);
	sse_reset(&a->sse);
	stream_state_free(&a->ss);
	memset(&a->ss, 0, sizeof a->ss);
	a->ss.include_usage = r->include_usage;
	a->ss.role_sent = a->resume;
	buf_reset(&a->text);
	if (r->stream && r->groups[0]->stream_resume == RESUME_CONTINUE)
		a->ss.text = &a->text;
	memset(&a->usage, 0, sizeof a->usage);
	memset(&a->r->uerr, 0, sizeof a->r->uerr);
	event_assign(&a->ev_timer, w->base, -1, 0, att_timeout, a);
	route_attempt_start(w, d);
	log_debug("%s attempt %d on %s%s%s", r->id, r->attempts, dc->name,
	          hedge ? " (hedge)" : "", a->resume ? " (continuing)" : "");
	a->up = up_request(
	    w->pools[d], "POST", a->po.path.data, a->po.path.len,
	    a->po.headers.data ? a->po.headers.data : "", a->po.headers.len,
	    a->po.body.data ? a->po.body.data : "", a->po.body.len, &up_cbs, a);
	if (a->up == NULL) {
		att_failed(a, EC_TRANSIENT, 0, "out of memory", -1, -1);
		return;
	}
	if (r->stream) { /* copied into the connection: hold no memory in a
		          * stream that may stay open for minutes */
		buf_free(&a->po.path);
		buf_free(&a->po.headers);
		buf_free(&a->po.body);
	}
	att_arm(a);
	if (!hedge && !r->hedged && !r->client_started &&
	    (hd = req_hedge_delay(r, d)) >= 0)
		req_arm(&r->ev_hedge, hd);
}

/* Record why each untried deployment of g was skipped. */
static void
req_note_skips(struct req *r, const struct group_cfg *g)
{
	int64_t now = clock_ms();

	for (int i = 0; i < g->ndeploy; i++) {
		int d = g->deploy[i], why;
		struct slot_sh *s = &r->w->shm->slots[r->w->slot_of[d]];
		const struct deploy_cfg *dc = &r->w->cfg->deploy[d];

		if (r->tried[d / 64] & (1ULL << (d % 64)))
			continue;
		if (atomic_load(&s->admin) == ADMIN_DRAINED)
			why = SKIP_DRAINED;
		else if (shm_weight(s) == 0)
			why = SKIP_WEIGHT0;
		else if (dc->context_window > 0 &&
		         r->est_tokens > dc->context_window)
			why = SKIP_CONTEXT;
		else if (atomic_load(&s->circuit) != CIRCUIT_CLOSED &&
		         atomic_load(&s->circuit_until_ms) > now)
			why = SKIP_CIRCUIT;
		else if (atomic_load(&s->cooldown_until_ms) > now)
			why = SKIP_COOLING;
		else
			why = SKIP_RATE;
		r->tried[d / 64] |= 1ULL << (d % 64);
		req_trail(r, d, 0, 0, why, 0, NULL);
	}
}

/* Count a move from prev to d as a fallback. */
static void
req_count_fallback(struct req *r, int d)
{
	struct worker *w = r->w;
	char t[200];

	if (r->prev_d < 0 || r->prev_d == d)
		return;
	atomic_fetch_add_explicit(
	    &w->shm->slots[w->slot_of[r->prev_d]].fallbacks_from, 1,
	    memory_order_relaxed);
	atomic_fetch_add_explicit(&w->shm->slots[w->slot_of[d]].fallbacks_to, 1,
	                          memory_order_relaxed);
	snprintf(t, sizeof t, "%s %s -> %s", r->id, dname(r, r->prev_d),
	         dname(r, d));
	shm_event_add(w->shm, SHM_EV_FALLBACK, w->slot_of[d], t);
}

/* The next usable candidate across the groups, or -1. */
static int
req_pick(struct req *r)
{
	int64_t soonest;
	int probe, d;

	for (; r->gi < r->ngroups; r->gi++) {
		d = route_pick(r->w, r->groups[r->gi], r->tried, r->est_tokens,
		               &soonest, &probe);
		if (soonest && (r->soonest_ms == 0 || soonest < r->soonest_ms))
			r->soonest_ms = soonest;
		if (d >= 0) {
			r->tried[d / 64] |= 1ULL << (d % 64);
			req_count_fallback(r, d);
			return d;
		}
		req_note_skips(r, r->groups[r->gi]);
	}
	return -1;
}

/* Hedge timer: the first attempt has produced nothing yet; start a second
 * one on the next candidate. The first to produce a token wins. */
static void
req_hedge(evutil_socket_t fd, short ev, void *arg)
{
	struct req *r = arg;
	int d, saved_prev = r->prev_d;

	(void)fd;
	(void)ev;
	if (r->client_started || r->att[0].active + r->att[1].active != 1 ||
	    (r->att[0].active ? &r->att[0] : &r->att[1])->ttft_us >= 0 ||
	    !route_retry_allowed(r->w))
		return;
	r->prev_d = r->d;
	if ((d = req_pick(r)) < 0) {
		r->prev_d = saved_prev;
		return;
	}
	r->hedged = 1;
	log_debug("%s hedging %s with %s after %d ms", r->id, dname(r, r->d),
	          dname(r, d), req_elapsed_ms(r));
	att_start(r, d, 1);
}

/* Every candidate is exhausted: answer with the most meaningful status. */
static void
req_exhausted(struct req *r)
{
	char msg[256], ra[24];
	int status = 502;
	const char *code = "all_deployments_failed", *type = "upstream_error";

	if (r->attempts == 0 && r->n_unsupported > 0 && r->soonest_ms == 0) {
		req_error(r, 400, "invalid_request_error",
		          "unsupported_request", r->build_err);
		return;
	}
	if (r->soonest_ms > 0 && r->n_fail == 0) {
		int64_t s = (r->soonest_ms - clock_ms() + 999) / 1000;

		snprintf(ra, sizeof ra, "%" PRId64, s < 1 ? 1 : s);
		evhttp_add_header(evhttp_request_get_output_headers(r->hreq),
		                  "Retry-After", ra);
	}
	if (r->n_fail == 0 && r->n_rate == 0 && r->soonest_ms > 0) {
		snprintf(msg, sizeof msg,
		         "every deployment for '%s' is cooling "
		         "down or at its rate limit; retry after %s s",
		         r->model, ra);
		req_error(r, 429, "rate_limit_error", "all_deployments_cooling",
		          msg);
		return;
	}
	if (r->n_rate > 0 && r->n_fail == 0) {
		status = 429;
		code = "rate_limited";
		type = "rate_limit_error";
	} else if (r->n_fail > 0)
		status = 503;
	if (r->attempts == 0)
		snprintf(msg, sizeof msg, "no deployment of '%s' is available",
		         r->model);
	else
		snprintf(msg, sizeof msg,
		         "all %d attempt%s for model '%s' "
		         "failed",
		         r->attempts, r->attempts == 1 ? "" : "s", r->model);
	req_error(r, status, type, code, msg);
}

/* Whether d was attempted (not merely skipped) in this request. */
static int
req_attempted(const struct req *r, int d)
{
	for (int i = 0; i < r->ntrail; i++)
		if (r->trail[i].d == d && !r->trail[i].skip)
			return 1;
	return 0;
}

/* Pick the next candidate and start it, or queue, or give up. */
static void
req_next(struct req *r)
{
	struct worker *w = r->w;
	int d;

	/* the deadline bounds the time to the first byte: a continuation of a
	 * stream already flowing is bounded by its own first-token timer */
	if (!r->client_started && req_left_ms(r) <= 0) {
		req_deadline(-1, 0, r);
		return;
	}
	if ((d = req_pick(r)) >= 0) {
		att_start(r, d, 0);
		return;
	}
	if (r->client_started) {
		req_stream_abort(r, r->d,
		                 "no candidate left to continue the "
		                 "interrupted stream");
		return;
	}
	/* a group's only deployment is tried anyway: no self-inflicted outage
	 */
	if (!r->forced && r->groups[0]->ndeploy == 1 &&
	    !req_attempted(r, r->groups[0]->deploy[0])) {
		int probe;

		d = r->groups[0]->deploy[0];
		r->forced = 1;
		if (route_force(w, d, r->est_tokens, &probe) == 0) {
			att_start(r, d, 0);
			return;
		}
	}
	/* everything is cooling or limited: wait for the soonest if it fits */
	if (r->soonest_ms > 0 && w->cfg->queue_when_cooling &&
	    r->soonest_ms < r->deadline_ms && r->n_fail == 0) {
		int64_t wait = r->soonest_ms - clock_ms();

		memset(r->tried, 0, sizeof r->tried);
		for (int i = 0; i < r->ntrail; i++)
			if (!r->trail[i].skip)
				r->tried[r->trail[i].d / 64] |=
				    1ULL << (r->trail[i].d % 64);
		r->gi = 0;
		r->soonest_ms = 0;
		r->tries_here = 0;
		log_debug("%s queued %" PRId64
		          " ms until a deployment recovers",
		          r->id, wait);
		req_arm(&r->ev_wait, wait + 1);
		return;
	}
	req_exhausted(r);
}

static void
req_wait_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct req *r = arg;
	int probe;

	(void)fd;
	(void)ev;

	if (r->tries_here > 0 && r->d >= 0) {
		/* a retry after backoff: still bound by rpm, circuit, drain */
		if (route_force(r->w, r->d, r->est_tokens, &probe) == 0) {
			att_start(r, r->d, 0);
			return;
		}
		r->prev_d = r->d;
		r->tries_here = 0;
	}
	req_next(r);
}

/* Whether to retry the same deployment after a transient failure. */
static int
req_may_retry(struct req *r, int should_retry)
{
	const struct cfg *cfg = r->w->cfg;
	int cap = r->req_retries >= 0
	              ? r->req_retries
	              : cfg_eff_num_retries(cfg, &cfg->deploy[r->d]);
	int total = r->req_retries >= 0 ? r->req_retries : cfg->num_retries;

	if (should_retry == 0 || r->tries_here > cap)
		return 0;
	if (r->retries_used >= (total > cap ? total : cap))
		return 0;
	return route_retry_allowed(r->w);
}

/* Switch to the context-window or content-policy fallback groups. */
static int
req_switch(struct req *r, const struct fallback_list *fl)
{
	const struct fallback_cfg *f =
	    cfg_find_fallback(fl, r->groups[0]->name);

	if (f == NULL || r->switched)
		return -1;
	r->switched = 1;
	r->ngroups = 0;
	for (int i = 0; i < f->nto && r->ngroups < ROUTE_MAX_GROUPS; i++) {
		const struct group_cfg *g = cfg_find_group(r->w->cfg, f->to[i]);
		if (g)
			r->groups[r->ngroups++] = g;
	}
	r->gi = 0;
	return 0;
}

/* A stream failed after bytes reached the client: continue it on the next
 * candidate if the group allows, else end it with an error event. */
static void
req_midstream_failure(struct req *r, int d, const char *msg)
{
	char text[256];

	if (r->groups[0]->stream_resume == RESUME_CONTINUE && !r->tool_stream &&
	    r->endpoint == EP_CHAT) {
		log_info("%s continuing the interrupted stream of %s", r->id,
		         dname(r, d));
		r->prev_d = d;
		req_next(r);
		return;
	}
	snprintf(text, sizeof text, "upstream failed mid-stream: %s", msg);
	req_stream_abort(r, d, text);
}

/* An attempt failed with class cls: retry, fall back, or answer. */
static void
att_failed(struct attempt *a, enum errclass cls, int status, const char *msg,
           int64_t ra_ms, int should_retry)
{
	struct req *r = a->r;
	struct worker *w = r->w;
	const struct cfg *cfg = w->cfg;
	char code[64];

	att_stop(a);
	route_attempt_end(w, a->d, cls, clock_us() - a->t0_us, -1, NULL, ra_ms,
	                  msg, status);
	req_trail(r, a->d, status, cls, 0, att_ms(a), msg);
	log_info("%s attempt %d on %s failed: %s %d %s", r->id, r->attempts,
	         dname(r, a->d), errclass_name(cls), status, msg);
	if (att_other(a)) /* a hedge pair: the other one carries on */
		return;
	event_del(&r->ev_hedge);
	if (a->d != r->d) { /* the surviving hedge attempt failed */
		r->d = a->d;
		r->tries_here = 1;
	}
	if (r->client_started) {
		buf_add(&r->sent_text, a->text.data, a->text.len);
		req_midstream_failure(r, a->d, msg);
		return;
	}
	snprintf(code, sizeof code, "%s", a->r->uerr.code);
	switch (cls) {
	case EC_BAD_REQUEST:
		req_error(r, status >= 400 && status < 500 ? status : 400,
		          "invalid_request_error",
		          code[0] ? code : "bad_request", msg);
		return;
	case EC_CONTEXT_WINDOW:
		if (req_switch(r, &cfg->cw_fallbacks) == 0)
			break;
		req_error(r, 400, "invalid_request_error",
		          "context_length_exceeded", msg);
		return;
	case EC_CONTENT_POLICY:
		if (req_switch(r, &cfg->cp_fallbacks) == 0)
			break;
		req_error(r, 400, "invalid_request_error", "content_filter",
		          msg);
		return;
	case EC_TRANSIENT:
		r->n_fail++;
		if (req_may_retry(r, should_retry)) {
			int64_t delay = backoff_ms(
			    cfg_eff_backoff_base_ms(cfg, &cfg->deploy[r->d]),
			    cfg->backoff_max_ms, r->retries_used, ra_ms,
			    &w->rng);

			if (delay < req_left_ms(r)) {
				r->retries_used++;
				atomic_fetch_add_explicit(
				    &w->shm->slots[w->slot_of[r->d]].retries, 1,
				    memory_order_relaxed);
				req_arm(&r->ev_wait, delay);
				return;
			}
		}
		break;
	case EC_RATE_LIMITED:
		r->n_rate++;
		break;
	default:
		r->n_fail++;
		break;
	}
	r->prev_d = r->d;
	req_next(r);
}

/* Classify an upstream error reply and fail the attempt with it. */
static void
att_upstream_error(struct attempt *a)
{
	struct upstream_error *e = &a->r->uerr;

	memset(e, 0, sizeof *e);
	e->retry_after_ms = a->resp.retry_after_ms;
	e->should_retry = a->resp.should_retry;
	classify_http(a->resp.status, a->rbody.data ? a->rbody.data : "",
	              a->rbody.len, e);
	att_failed(a, e->cls, a->resp.status,
	           e->message[0] ? e->message : "upstream error",
	           e->retry_after_ms, e->should_retry);
}

/* Send what attempt a has pending to the client, starting the reply the
 * first time. */
static void
req_stream_flush(struct req *r, struct attempt *a)
{
	struct evbuffer *eb;

	if (!r->client_started) {
		struct evkeyvalq *h =
		    evhttp_request_get_output_headers(r->hreq);

		r->served = a->d;
		evhttp_add_header(h, "Content-Type", "text/event-stream");
		evhttp_add_header(h, "Cache-Control", "no-cache");
		req_add_common_headers(r);
		evhttp_send_reply_start(r->hreq, 200, "OK");
		r->client_started = 1;
	}
	r->tool_stream |= a->ss.tool_seen;
	if (a->out.len == 0)
		return;
	eb = r->chunk;
	evbuffer_add(eb, a->out.data, a->out.len);
	evhttp_send_reply_chunk(r->hreq, eb);
	evbuffer_drain(eb, evbuffer_get_length(eb));
	buf_reset(&a->out);
}

/* One SSE event from the upstream, through the provider. */
static int
att_sse_event(void *arg, const char *ev, size_t elen, const char *data,
              size_t dlen)
{
	struct attempt *a = arg;
	int rc;

	if (a->complete)
		return 0;
	rc = a->prov->stream_event(&a->pc, &a->ss, ev, elen, data, dlen,
	                           &a->out, &a->r->uerr);
	if (rc == -1) {
		a->in_stream_err = 1;
		return 1;
	}
	if (rc == 1) {
		a->complete = 1;
		buf_adds(&a->out, "data: [DONE]\n\n");
	}
	return 0;
}

static void
up_on_headers(void *arg, const struct up_resp *resp)
{
	struct attempt *a = arg;

	a->resp = *resp;
	a->streaming =
	    a->r->stream && resp->status / 100 == 2 && resp->event_stream;
}

/* The first content reached us: this attempt wins; the timer now bounds
 * gaps between chunks, and the deadline no longer applies. */
static void
att_first_content(struct attempt *a)
{
	struct req *r = a->r;
	struct attempt *o = att_other(a);
	const struct cfg *cfg = r->w->cfg;

	a->ttft_us = clock_us() - a->t0_us;
	if (o)
		att_cancel(o, a->hedge ? "lost the hedge race"
		                       : "hedge not needed");
	event_del(&r->ev_hedge);
	event_del(&r->ev_deadline);
	req_arm(&a->ev_timer,
	        cfg_eff_stream_idle_timeout_ms(cfg, &cfg->deploy[a->d]));
}

static void
up_on_data(void *arg, const char *p, size_t n)
{
	struct attempt *a = arg;
	struct req *r = a->r;
	int rc;

	if (!a->streaming) {
		if (a->resp.status / 100 == 2 || a->rbody.len < ERRBODY_MAX)
			buf_add(&a->rbody, p, n);
		return;
	}
	rc = sse_feed(&a->sse, p, n, att_sse_event, a);
	if (rc == -1 || a->in_stream_err) {
		if (rc == -1) {
			a->r->uerr.cls = EC_TRANSIENT;
			snprintf(a->r->uerr.message, sizeof a->r->uerr.message,
			         "malformed upstream stream");
		}
		att_failed(a, a->r->uerr.cls ? a->r->uerr.cls : EC_TRANSIENT,
		           a->resp.status, a->r->uerr.message,
		           a->r->uerr.retry_after_ms, -1);
		return;
	}
	if (a->ss.content_filter && !r->client_started && !r->switched &&
	    cfg_find_fallback(&r->w->cfg->cp_fallbacks, r->groups[0]->name)) {
		att_failed(a, EC_CONTENT_POLICY, a->resp.status,
		           "answer blocked by the provider's content filter",
		           -1, -1);
		return;
	}
	if (a->ttft_us < 0 && (a->ss.content_seen || a->complete))
		att_first_content(a);
	else if (a->ttft_us >= 0)
		req_arm(&a->ev_timer, cfg_eff_stream_idle_timeout_ms(
		                          r->w->cfg, &r->w->cfg->deploy[a->d]));
	if (a->ttft_us >= 0 || (r->client_started && !att_other(a)))
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
	evhttp_add_header(evhttp_request_get_output_headers(r->hreq),
	                  "x-llmfd-warning",
	                  "prompt may have been truncated by the upstream");
	log_warnx("%s %s reported %lld prompt tokens of a %ld context: the "
	          "prompt was probably truncated",
	          r->id, dname(r, d), u->prompt_tokens, cw);
}

/* A whole non-stream reply arrived: translate and answer. */
static void
att_whole(struct attempt *a)
{
	struct req *r = a->r;
	struct attempt *o;
	int cf = 0;

	buf_reset(&r->out);
	if (a->prov->response(&a->pc, a->rbody.data ? a->rbody.data : "",
	                      a->rbody.len, &r->out, &a->usage, &cf,
	                      &a->r->uerr) == -1) {
		att_failed(a, a->r->uerr.cls ? a->r->uerr.cls : EC_TRANSIENT,
		           a->resp.status, a->r->uerr.message, -1, -1);
		return;
	}
	if (cf && !r->switched &&
	    cfg_find_fallback(&r->w->cfg->cp_fallbacks, r->groups[0]->name)) {
		att_failed(a, EC_CONTENT_POLICY, a->resp.status,
		           "answer blocked by the provider's content filter",
		           -1, -1);
		return;
	}
	if ((o = att_other(a)) != NULL)
		att_cancel(o, a->hedge ? "lost the hedge race"
		                       : "hedge not needed");
	event_del(&a->ev_timer);
	a->active = 0;
	route_attempt_end(r->w, a->d, EC_OK, clock_us() - a->t0_us, -1,
	                  &a->usage, -1, NULL, 200);
	r->served = a->d;
	req_add_common_headers(r);
	req_truncation_check(r, a->d, &a->usage);
	log_info("%s %s -> 200 via %s (%d attempts, %d ms)", r->id, r->model,
	         dname(r, a->d), r->attempts, req_elapsed_ms(r));
	req_access(r, 200, NULL, &a->usage, -1);
	server_send_json(r->hreq, 200, &r->out);
	req_release(r);
}

static void
up_on_done(void *arg)
{
	struct attempt *a = arg;
	struct req *r = a->r;

	a->up = NULL;
	if (a->resp.status / 100 != 2) {
		att_upstream_error(a);
		return;
	}
	if (!r->stream) {
		att_whole(a);
		return;
	}
	if (!a->streaming) {
		att_failed(a, EC_TRANSIENT, a->resp.status,
		           "upstream did not answer with an event stream", -1,
		           -1);
		return;
	}
	if (!a->complete) {
		att_failed(a, EC_TRANSIENT, a->resp.status,
		           "upstream stream ended before completion", -1, -1);
		return;
	}
	if (a->ttft_us < 0)
		att_first_content(a);
	event_del(&a->ev_timer);
	a->active = 0;
	route_attempt_end(r->w, a->d, EC_OK, clock_us() - a->t0_us, a->ttft_us,
	                  &a->ss.usage, -1, NULL, 200);
	req_stream_flush(r, a);
	evhttp_send_reply_end(r->hreq);
	log_info("%s %s -> 200 stream via %s (%d attempts, %d ms)", r->id,
	         r->model, dname(r, a->d), r->attempts, req_elapsed_ms(r));
	req_access(r, 200, NULL, &a->ss.usage, a->ttft_us);
	req_release(r);
}

static void
up_on_error(void *arg, const char *msg)
{
	struct attempt *a = arg;

	a->up = NULL;
	att_failed(a, EC_TRANSIENT, 0, msg, -1, -1);
}

static const struct up_cbs up_cbs = {
    .headers = up_on_headers,
    .data = up_on_data,
    .done = up_on_done,
    .error = up_on_error,
};

/* The client closed its connection: cancel everything. */
static void
req_client_closed(struct evhttp_connection *c, void *arg)
{
	struct req *r = arg;
	struct evhttp_request *hreq = r->hreq;

	(void)c;
	if (hreq == NULL)
		return;
	log_info("%s client went away after %d ms; cancelling", r->id,
	         req_elapsed_ms(r));
	for (int i = 0; i < 2; i++)
		att_cancel(&r->att[i], "client went away");
	req_access(r, 499, "client_closed", NULL, -1);
	r->hreq = NULL; /* the dying connection has let go of it: ours */
	req_release(r);
	evhttp_request_free(hreq);
}

/* evhttp stops reading once a request is in, so a client hanging up is
 * not seen until we write. Keep reading (without evhttp's read callback,
 * as evhttp itself does while it writes) so EOF reaches the close
 * callback at once and the upstream attempt is cancelled. */
static void
req_watch_close(struct req *r)
{
	struct evhttp_connection *c = evhttp_request_get_connection(r->hreq);
	struct bufferevent *bev = evhttp_connection_get_bufferevent(c);
	bufferevent_data_cb rd, wr;
	bufferevent_event_cb ev;
	void *arg;

	evhttp_connection_set_closecb(c, req_client_closed, r);
	bufferevent_getcb(bev, &rd, &wr, &ev, &arg);
	bufferevent_setcb(bev, NULL, wr, ev, arg);
	bufferevent_enable(bev, EV_READ);
}

/* Read one optional integer/number field; -2 if present but invalid. */
static int
req_opt_num(struct req *r, const char *key, double lo, double hi, double *out)
{
	int t = json_get(&r->j, 0, key);

	if (t < 0 || json_is_null(&r->j, t))
		return -1;
	if (json_num(&r->j, t, out) == -1 || *out < lo || *out > hi)
		return -2;
	return 0;
}

/* Candidate groups: the model's group, then its fallbacks. */
static int
req_candidates(struct req *r)
{
	const struct cfg *cfg = r->w->cfg;
	const struct group_cfg *g = cfg_find_group(cfg, r->model);
	const struct fallback_cfg *f;
	int t, n;
	char name[CFG_NAME_MAX];

	r->ngroups = 0;
	if (g == NULL) {
		if ((r->single_idx = cfg_find_deploy(cfg, r->model)) < 0)
			return -1;
		memset(&r->single, 0, sizeof r->single);
		snprintf(r->single.name, sizeof r->single.name, "%s",
		         cfg->deploy[r->single_idx].group);
		r->single.strategy = -1;
		r->single.ndeploy = 1;
		r->single.deploy = &r->single_idx;
		g = &r->single;
	}
	r->groups[r->ngroups++] = g;
	t = json_get(&r->j, 0, "fallbacks");
	if (t >= 0 && json_type(&r->j, t) == JSMN_ARRAY) {
		n = json_size(&r->j, t);
		for (int i = 0; i < n && r->ngroups < ROUTE_MAX_GROUPS; i++) {
			const struct group_cfg *fg;
			if (json_str(&r->j, json_at(&r->j, t, i), name,
			             sizeof name) < 0)
				continue;
			if ((fg = cfg_find_group(cfg, name)) != NULL && fg != g)
				r->groups[r->ngroups++] = fg;
		}
	} else if ((f = cfg_find_fallback(&cfg->fallbacks, g->name)) != NULL) {
		for (int i = 0; i < f->nto && r->ngroups < ROUTE_MAX_GROUPS;
		     i++) {
			const struct group_cfg *fg =
			    cfg_find_group(cfg, f->to[i]);
			if (fg && fg != g)
				r->groups[r->ngroups++] = fg;
		}
	}
	return 0;
}

/* Validate the body and fill the request fields; -1 after answering. */
static int
req_parse(struct req *r)
{
	const struct cfg *cfg = r->w->cfg;
	double v;
	int t, rc;

	if (json_parse(&r->j, r->body, r->blen) == -1 ||
	    json_type(&r->j, 0) != JSMN_OBJECT) {
		req_error(r, 400, "invalid_request_error", "invalid_json",
		          "request body is not a valid JSON object");
		return -1;
	}
	t = json_get(&r->j, 0, "model");
	if (t < 0 || json_type(&r->j, t) != JSMN_STRING ||
	    json_str(&r->j, t, r->model, sizeof r->model) <= 0) {
		req_error(r, 400, "invalid_request_error", "missing_model",
		          "'model' is required and must be a string");
		return -1;
	}
	t = json_get(&r->j, 0, r->endpoint == EP_CHAT ? "messages" : "input");
	if (t < 0 ||
	    (r->endpoint == EP_CHAT && json_type(&r->j, t) != JSMN_ARRAY)) {
		req_error(r, 400, "invalid_request_error",
		          r->endpoint == EP_CHAT ? "missing_messages"
		                                 : "missing_input",
		          r->endpoint == EP_CHAT
		              ? "'messages' is required and must be an array"
		              : "'input' is required");
		return -1;
	}
	r->stream = r->endpoint == EP_CHAT &&
	            json_is_true(&r->j, json_get(&r->j, 0, "stream"));
	r->include_usage = json_is_true(
	    &r->j, json_path(&r->j, 0, "stream_options.include_usage"));
	r->req_retries = -1;
	if ((rc = req_opt_num(r, "num_retries", 0, 10, &v)) == 0)
		r->req_retries = (int)v;
	else if (rc == -2)
		goto badnum;
	r->deadline_ms = r->t0_us / 1000 + cfg->timeout_ms;
	if ((rc = req_opt_num(r, "timeout", 0.001, 86400, &v)) == 0)
		r->deadline_ms = r->t0_us / 1000 + (int64_t)(v * 1000);
	else if (rc == -2)
		goto badnum;
	r->first_token_ms = -1;
	if ((rc = req_opt_num(r, "stream_timeout", 0.001, 86400, &v)) == 0)
		r->first_token_ms = (int)(v * 1000);
	else if (rc == -2)
		goto badnum;
	/* token estimate for the pre-call context check: bytes / 4 */
	r->est_tokens = (long)(r->blen / 4);
	return 0;
badnum:
	req_error(r, 400, "invalid_request_error", "invalid_parameter",
	          "'num_retries' must be 0..10; 'timeout' and 'stream_timeout' "
	          "are positive seconds");
	return -1;
}

/* Entry point for POST /v1/chat/completions and /v1/embeddings. */
static void
req_handle(struct evhttp_request *hreq, struct worker *w, int endpoint)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(hreq);
	struct req *r;
	size_t len = evbuffer_get_length(in);
	char msg[160];

	if (evhttp_request_get_command(hreq) != EVHTTP_REQ_POST) {
		server_send_error(hreq, 405, "invalid_request_error",
		                  "method_not_allowed", "use POST");
		return;
	}
	if ((r = req_get(w)) == NULL) {
		server_send_error(hreq, 503, "llmfd_error", "out_of_memory",
		                  "out of memory");
		return;
	}
	LIST_INSERT_HEAD(&w->reqs, r, link);
	w->inflight++;
	r->hreq = hreq;
	r->endpoint = endpoint;
	r->t0_us = clock_us();
	snprintf(r->id, sizeof r->id, "req-%x-%" PRIx64, (unsigned)getpid(),
	         ++w->next_id);
	r->d = r->prev_d = r->served = -1;
	r->gi = r->attempts = r->retries_used = r->tries_here = 0;
	r->switched = r->n_rate = r->n_fail = r->forced = r->ntrail = 0;
	r->n_unsupported = 0;
	r->hedged = r->client_started = r->tool_stream = r->stream = 0;
	r->soonest_ms = 0;
	r->model[0] = '\0';
	memset(r->tried, 0, sizeof r->tried);
	buf_reset(&r->out);
	buf_reset(&r->sent_text);
	event_assign(&r->ev_deadline, w->base, -1, 0, req_deadline, r);
	event_assign(&r->ev_wait, w->base, -1, 0, req_wait_cb, r);
	event_assign(&r->ev_hedge, w->base, -1, 0, req_hedge, r);
	req_watch_close(r);
	if (len > REQ_MAX_BODY) {
		req_error(r, 413, "invalid_request_error", "body_too_large",
		          "request body is larger than 32 MiB");
		return;
	}
	r->body = len ? (const char *)evbuffer_pullup(in, -1) : "";
	r->blen = len;
	if (req_parse(r) == -1)
		return;
	if (req_candidates(r) == -1) {
		snprintf(msg, sizeof msg,
		         "model '%s' is not a configured group "
		         "or deployment",
		         r->model);
		req_error(r, 404, "invalid_request_error", "model_not_found",
		          msg);
		return;
	}
	route_count_request(w);
	req_arm(&r->ev_deadline, req_left_ms(r));
	req_next(r);
}

/* POST /v1/chat/completions */
void
req_handle_chat(struct evhttp_request *hreq, void *arg)
{
	req_handle(hreq, arg, EP_CHAT);
}

/* POST /v1/embeddings */
void
req_handle_embeddings(struct evhttp_request *hreq, void *arg)
{
	req_handle(hreq, arg, EP_EMBED);
}

static void
req_destroy(struct req *r)
{
	json_free(&r->j);
	for (int i = 0; i < 2; i++) {
		struct attempt *a = &r->att[i];

		buf_free(&a->po.path);
		buf_free(&a->po.headers);
		buf_free(&a->po.body);
		buf_free(&a->rbody);
		buf_free(&a->out);
		buf_free(&a->text);
		sse_free(&a->sse);
		stream_state_free(&a->ss);
	}
	buf_free(&r->out);
	buf_free(&r->sent_text);
	evbuffer_free(r->chunk);
	free(r);
}

/* Worker exit: abandon requests still in flight and free every object. */
void
req_free_all(struct worker *w)
{
	struct req *r;

	while ((r = LIST_FIRST(&w->reqs)) != NULL) {
		for (int i = 0; i < 2; i++)
			att_stop(&r->att[i]);
		event_del(&r->ev_deadline);
		event_del(&r->ev_wait);
		event_del(&r->ev_hedge);
		LIST_REMOVE(r, link);
		req_destroy(r);
	}
	while ((r = w->free_reqs) != NULL) {
		w->free_reqs = r->next_free;
		req_destroy(r);
	}
}
