/* One client request: parse, pick candidates, run attempts against
 * upstreams with retries, backoff, fallbacks and one deadline, and answer
 * the client (whole, or as a stream that is started only once the first
 * content has arrived, so any earlier failure can still fall back). */
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
#include <event2/http_struct.h>

#include "common/backoff.h"
#include "common/clock.h"
#include "common/log.h"
#include "worker/worker.h"

#define REQ_MAX_BODY  (32 << 20)
#define REQ_MAX_TRAIL 16
#define ERRBODY_MAX   65536

struct attempt_rec {
	int  d;
	int  status;
	int  cls;
	int  skip;
	int  ms;
	char msg[128];
};

struct req {
	LIST_ENTRY(req)        link;
	struct req            *next_free;
	struct worker         *w;
	struct evhttp_request *hreq;
	char                   id[24];
	int                    endpoint;
	int                    gone; /* client went away */

	/* the client's request */
	struct json  j;
	const char  *body;
	size_t       blen;
	int          stream, include_usage;
	int          req_retries; /* num_retries field, -1 if absent */
	int          first_token_ms; /* stream_timeout field, -1 if absent */
	long         est_tokens;
	int64_t      t0_us, deadline_ms;
	char         model[CFG_NAME_MAX];

	/* candidates */
	const struct group_cfg *groups[ROUTE_MAX_GROUPS];
	int                     ngroups, gi, base_group_n;
	struct group_cfg        single; /* model names one deployment */
	int                     single_idx;
	uint64_t                tried[CFG_MAX_DEPLOY / 64];
	int                     d, prev_d;
	int                     retries_used, tries_here, attempts;
	int                     switched; /* context/content fallbacks taken */
	int64_t                 soonest_ms;
	int                     n_rate, n_fail, forced;
	struct attempt_rec      trail[REQ_MAX_TRAIL];
	int                     ntrail;

	/* the attempt in flight */
	struct upconn         *up;
	struct prov_call       pc;
	struct prov_out        po;
	const struct provider *prov;
	int64_t                att_t0_us, ttft_us;
	struct up_resp         resp;
	int                    got_headers, streaming, upstream_complete;
	struct buf             rbody;
	struct sse             sse;
	struct stream_state    ss;
	struct buf             out;
	int                    client_started;
	struct upstream_error  uerr;
	struct usage           usage;
	struct event           ev_deadline, ev_attempt, ev_wait;
	int                    in_stream_err;
};

static const char *const drop_keys[] = {"fallbacks", "num_retries", "timeout",
    "stream_timeout", "metadata", NULL};

static void req_next(struct req *);
static void req_attempt(struct req *);
static void req_fail_attempt(struct req *, enum errclass, int status,
    const char *msg, int64_t retry_after_ms, int should_retry);
static void req_release(struct req *);

static const struct up_cbs up_cbs;

/* A recycled (or new) request object with its buffers kept warm. */
static struct req *
req_get(struct worker *w)
{
	struct req *r = w->free_reqs;

	if (r) {
		w->free_reqs = r->next_free;
		return r;
	}
	if ((r = calloc(1, sizeof *r)) == NULL)
		return NULL;
	r->w = w;
	event_assign(&r->ev_deadline, w->base, -1, 0, NULL, NULL);
	return r;
}

/* Milliseconds since the request arrived. */
static int
req_elapsed_ms(const struct req *r)
{
	return (int)((clock_us() - r->t0_us) / 1000);
}

static void
req_add_common_headers(struct req *r)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(r->hreq);
	char              n[16];

	evhttp_add_header(h, "x-request-id", r->id);
	snprintf(n, sizeof n, "%d", r->attempts);
	evhttp_add_header(h, "x-llmfd-attempts", n);
	if (r->d >= 0) {
		evhttp_add_header(h, "x-llmfd-deployment",
		    r->w->cfg->deploy[r->d].name);
		evhttp_add_header(h, "x-llmfd-provider",
		    cfg_provider_name(r->w->cfg->deploy[r->d].provider));
	}
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
		jw_cstr(jw, r->w->cfg->deploy[a->d].name);
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

/* Answer with an OpenAI-shaped error carrying the attempt trail. */
static void
req_error(struct req *r, int status, const char *type, const char *code,
    const char *msg)
{
	struct buf *b = &r->out;
	struct jw   jw;

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
	log_info("%s %s -> %d %s (%d attempts, %d ms)", r->id, r->model,
	    status, code ? code : type, r->attempts, req_elapsed_ms(r));
	server_send_json(r->hreq, status, b);
	req_release(r);
}

/* Stop the attempt timer and forget the connection. */
static void
req_attempt_clear(struct req *r)
{
	event_del(&r->ev_attempt);
	r->up = NULL;
}

/* Free per-request state and recycle the object. */
static void
req_release(struct req *r)
{
	struct worker *w = r->w;

	if (r->up) {
		up_abort(r->up);
		r->up = NULL;
	}
	event_del(&r->ev_deadline);
	event_del(&r->ev_attempt);
	event_del(&r->ev_wait);
	if (r->hreq && !r->gone) {
		struct evhttp_connection *c =
		    evhttp_request_get_connection(r->hreq);
		if (c)
			evhttp_connection_set_closecb(c, NULL, NULL);
	}
	LIST_REMOVE(r, link);
	r->hreq = NULL;
	stream_state_free(&r->ss);
	sse_reset(&r->sse);
	r->next_free = w->free_reqs;
	w->free_reqs = r;
	worker_req_done(w);
}

/* Attempt timer or deadline fired while an attempt runs. */
static void
req_attempt_timeout(evutil_socket_t fd, short ev, void *arg)
{
	struct req *r = arg;
	char        msg[96];

	(void)fd;
	(void)ev;
	snprintf(msg, sizeof msg, "%s after %d ms",
	    r->streaming ? "stream stalled" : "attempt timed out",
	    (int)((clock_us() - r->att_t0_us) / 1000));
	if (r->up) {
		up_abort(r->up);
		r->up = NULL;
	}
	req_fail_attempt(r, EC_TRANSIENT, 0, msg, -1, -1);
}

/* The whole-request deadline passed. */
static void
req_deadline(evutil_socket_t fd, short ev, void *arg)
{
	struct req *r = arg;
	char        msg[128];

	(void)fd;
	(void)ev;
	if (r->up) {
		up_abort(r->up);
		route_attempt_end(r->w, r->d, EC_TRANSIENT,
		    clock_us() - r->att_t0_us, -1, NULL, -1,
		    "request deadline reached", 0);
		if (r->ntrail < REQ_MAX_TRAIL)
			r->trail[r->ntrail++] = (struct attempt_rec){.d = r->d,
			    .cls = EC_TRANSIENT, .ms = (int)((clock_us() -
			    r->att_t0_us) / 1000), .msg = "deadline reached"};
		r->up = NULL;
	}
	if (r->client_started) {
		struct evbuffer *eb = evbuffer_new();
		evbuffer_add_printf(eb, "data: {\"error\":{\"message\":\"request "
		    "deadline reached mid-stream\",\"type\":\"llmfd_error\","
		    "\"code\":\"stream_interrupted\"}}\n\n");
		evhttp_send_reply_chunk(r->hreq, eb);
		evbuffer_free(eb);
		evhttp_send_reply_end(r->hreq);
		req_release(r);
		return;
	}
	snprintf(msg, sizeof msg, "request deadline of %d ms reached after %d "
	    "attempts", (int)(r->deadline_ms - r->t0_us / 1000), r->attempts);
	req_error(r, 504, "timeout_error", "deadline_exceeded", msg);
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

/* Arm the attempt timer: first-token for streams, whole attempt otherwise. */
static void
req_arm_attempt(struct req *r)
{
	const struct cfg        *cfg = r->w->cfg;
	const struct deploy_cfg *d = &cfg->deploy[r->d];
	int64_t                  ms = cfg_eff_attempt_timeout_ms(cfg, d);

	if (r->stream) {
		int64_t ft = r->first_token_ms >= 0 ? r->first_token_ms :
		    cfg_eff_first_token_timeout_ms(cfg, d);
		if (ft > 0 && ft < ms)
			ms = ft;
	}
	req_arm(&r->ev_attempt, ms);
}

/* Note one attempt (or skip) in the trail. */
static void
req_trail(struct req *r, int d, int status, int cls, int skip, const char *msg)
{
	struct attempt_rec *a;

	if (r->ntrail >= REQ_MAX_TRAIL)
		return;
	a = &r->trail[r->ntrail++];
	a->d = d;
	a->status = status;
	a->cls = cls;
	a->skip = skip;
	a->ms = skip ? 0 : (int)((clock_us() - r->att_t0_us) / 1000);
	snprintf(a->msg, sizeof a->msg, "%s", msg ? msg : "");
}

/* Build and send one attempt on r->d. */
static void
req_attempt(struct req *r)
{
	struct worker           *w = r->w;
	const struct deploy_cfg *d = &w->cfg->deploy[r->d];
	char                     err[256];

	r->attempts++;
	r->tries_here++;
	r->att_t0_us = clock_us();
	r->ttft_us = -1;
	r->got_headers = r->streaming = r->upstream_complete = 0;
	r->in_stream_err = 0;
	buf_reset(&r->rbody);
	sse_reset(&r->sse);
	stream_state_free(&r->ss);
	memset(&r->ss, 0, sizeof r->ss);
	r->ss.include_usage = r->include_usage;
	memset(&r->usage, 0, sizeof r->usage);
	r->prov = provider_get(d->provider);
	r->pc = (struct prov_call){.cfg = w->cfg, .d = d, .req = &r->j,
	    .endpoint = r->endpoint, .stream = r->stream,
	    .include_usage = r->include_usage, .drop_keys = drop_keys};
	buf_reset(&r->po.path);
	buf_reset(&r->po.headers);
	buf_reset(&r->po.body);
	err[0] = '\0';
	if (r->prov == NULL || r->prov->build(&r->pc, &r->po, err,
	    sizeof err) == -1) {
		r->d = -1;
		req_error(r, 400, "invalid_request_error", "unsupported_request",
		    err[0] ? err : "provider not available");
		return;
	}
	route_attempt_start(w, r->d);
	log_debug("%s attempt %d on %s", r->id, r->attempts, d->name);
	r->up = up_request(w->pools[r->d], "POST", r->po.path.data,
	    r->po.path.len, r->po.headers.data ? r->po.headers.data : "",
	    r->po.headers.len, r->po.body.data ? r->po.body.data : "",
	    r->po.body.len, &up_cbs, r);
	if (r->up == NULL) {
		req_fail_attempt(r, EC_TRANSIENT, 0, "out of memory", -1, -1);
		return;
	}
	req_arm_attempt(r);
}

static void
req_wait_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct req *r = arg;

	(void)fd;
	(void)ev;
	if (r->d >= 0 && r->tries_here > 0)
		req_attempt(r);
	else
		req_next(r);
}

/* Every candidate is exhausted: answer with the most meaningful status. */
static void
req_exhausted(struct req *r)
{
	char msg[256];
	int  status = 502;
	const char *code = "all_deployments_failed";

	if (r->n_fail == 0 && r->n_rate == 0 && r->soonest_ms > 0) {
		int64_t s = (r->soonest_ms - clock_ms() + 999) / 1000;
		char    ra[24];

		snprintf(ra, sizeof ra, "%" PRId64, s < 1 ? 1 : s);
		evhttp_add_header(evhttp_request_get_output_headers(r->hreq),
		    "Retry-After", ra);
		snprintf(msg, sizeof msg, "every deployment for '%s' is cooling "
		    "down or at its rate limit; retry after %s s", r->model, ra);
		r->d = -1;
		req_error(r, 429, "rate_limit_error", "all_deployments_cooling",
		    msg);
		return;
	}
	if (r->n_rate > 0 && r->n_fail == 0) {
		status = 429;
		code = "rate_limited";
		if (r->soonest_ms > 0) {
			int64_t s = (r->soonest_ms - clock_ms() + 999) / 1000;
			char    ra[24];
			snprintf(ra, sizeof ra, "%" PRId64, s < 1 ? 1 : s);
			evhttp_add_header(evhttp_request_get_output_headers(
			    r->hreq), "Retry-After", ra);
		}
	} else if (r->n_fail > 0)
		status = 503;
	snprintf(msg, sizeof msg, "all %d attempt%s for model '%s' failed",
	    r->attempts, r->attempts == 1 ? "" : "s", r->model);
	r->d = -1;
	req_error(r, status, status == 429 ? "rate_limit_error" :
	    "upstream_error", code, msg);
}

/* Record why each untried deployment of g was skipped. */
static void
req_note_skips(struct req *r, const struct group_cfg *g)
{
	int64_t back;

	for (int i = 0; i < g->ndeploy; i++) {
		int d = g->deploy[i], why;

		if (r->tried[d / 64] & (1ULL << (d % 64)))
			continue;
		why = 0;
		{
			/* re-derive the reason for the trail */
			struct slot_sh *s =
			    &r->w->shm->slots[r->w->slot_of[d]];
			int64_t now = clock_ms();
			if (atomic_load(&s->admin) == ADMIN_DRAINED)
				why = SKIP_DRAINED;
			else if (shm_weight(s) == 0)
				why = SKIP_WEIGHT0;
			else if (r->w->cfg->deploy[d].context_window > 0 &&
			    r->est_tokens > r->w->cfg->deploy[d].context_window)
				why = SKIP_CONTEXT;
			else if (atomic_load(&s->circuit) != CIRCUIT_CLOSED &&
			    atomic_load(&s->circuit_until_ms) > now)
				why = SKIP_CIRCUIT;
			else if (atomic_load(&s->cooldown_until_ms) > now)
				why = SKIP_COOLING;
			else
				why = SKIP_RATE;
			(void)back;
		}
		r->tried[d / 64] |= 1ULL << (d % 64);
		req_trail(r, d, 0, 0, why, NULL);
	}
}

/* Pick the next candidate and start it, or queue, or give up. */
static void
req_next(struct req *r)
{
	struct worker *w = r->w;
	int64_t        soonest;
	int            probe, d;

	if (req_left_ms(r) <= 0) {
		req_deadline(-1, 0, r);
		return;
	}
	for (; r->gi < r->ngroups; r->gi++) {
		const struct group_cfg *g = r->groups[r->gi];

		d = route_pick(w, g, r->tried, r->est_tokens, &soonest, &probe);
		if (soonest && (r->soonest_ms == 0 || soonest < r->soonest_ms))
			r->soonest_ms = soonest;
		if (d >= 0) {
			if (r->prev_d >= 0 && r->prev_d != d) {
				atomic_fetch_add_explicit(&w->shm->slots[
				    w->slot_of[r->prev_d]].fallbacks_from, 1,
				    memory_order_relaxed);
				atomic_fetch_add_explicit(&w->shm->slots[
				    w->slot_of[d]].fallbacks_to, 1,
				    memory_order_relaxed);
				if (r->gi > 0 || r->switched) {
					char t[200];
					snprintf(t, sizeof t, "%s %s -> %s",
					    r->id, w->cfg->deploy[r->prev_d].name,
					    w->cfg->deploy[d].name);
					shm_event_add(w->shm, SHM_EV_FALLBACK,
					    w->slot_of[d], t);
				}
			}
			r->d = d;
			r->tries_here = 0;
			r->tried[d / 64] |= 1ULL << (d % 64);
			req_attempt(r);
			return;
		}
		req_note_skips(r, g);
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
		r->d = -1;
		log_debug("%s queued %" PRId64 " ms until a deployment recovers",
		    r->id, wait);
		req_arm(&r->ev_wait, wait + 1);
		return;
	}
	/* a group's only deployment is tried anyway: no self-inflicted outage */
	if (!r->forced && r->groups[0]->ndeploy == 1 && r->attempts == 0) {
		d = r->groups[0]->deploy[0];
		r->forced = 1;
		if (atomic_load(&w->shm->slots[w->slot_of[d]].admin) !=
		    ADMIN_DRAINED && shm_weight(&w->shm->slots[w->slot_of[d]])) {
			r->d = d;
			r->tries_here = 0;
			req_attempt(r);
			return;
		}
	}
	req_exhausted(r);
}

/* Whether to retry the same deployment after a transient failure. */
static int
req_may_retry(struct req *r, int should_retry)
{
	const struct cfg *cfg = r->w->cfg;
	int cap = r->req_retries >= 0 ? r->req_retries :
	    cfg_eff_num_retries(cfg, &cfg->deploy[r->d]);
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

/* Emit the final error event of a stream that was cut after bytes reached
 * the client: no [DONE], so the client cannot mistake it for complete. */
static void
req_stream_abort(struct req *r, const char *msg)
{
	struct evbuffer *eb = evbuffer_new();
	struct buf      *b = &r->out;
	struct jw        jw;

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
	jw_key(&jw, "deployment");
	jw_cstr(&jw, r->w->cfg->deploy[r->d].name);
	jw_obj_end(&jw);
	jw_obj_end(&jw);
	buf_adds(b, "\n\n");
	if (eb) {
		evbuffer_add(eb, b->data, b->len);
		evhttp_send_reply_chunk(r->hreq, eb);
		evbuffer_free(eb);
	}
	evhttp_send_reply_end(r->hreq);
	log_warnx("%s stream from %s interrupted: %s", r->id,
	    r->w->cfg->deploy[r->d].name, msg);
	req_release(r);
}

/* An attempt failed with class cls: retry, fall back, or answer. */
static void
req_fail_attempt(struct req *r, enum errclass cls, int status, const char *msg,
    int64_t ra_ms, int should_retry)
{
	struct worker *w = r->w;
	const struct cfg *cfg = w->cfg;
	char           text[256];

	req_attempt_clear(r);
	route_attempt_end(w, r->d, cls, clock_us() - r->att_t0_us, -1, NULL,
	    ra_ms, msg, status);
	req_trail(r, r->d, status, cls, 0, msg);
	log_info("%s attempt %d on %s failed: %s %d %s", r->id, r->attempts,
	    cfg->deploy[r->d].name, errclass_name(cls), status, msg);
	if (r->client_started) {
		snprintf(text, sizeof text, "upstream failed mid-stream: %s",
		    msg);
		req_stream_abort(r, text);
		return;
	}
	switch (cls) {
	case EC_BAD_REQUEST:
		req_error(r, status >= 400 && status < 500 ? status : 400,
		    "invalid_request_error", r->uerr.code[0] ? r->uerr.code :
		    "bad_request", msg);
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
			    cfg->backoff_max_ms, r->retries_used, ra_ms, &w->rng);

			if (delay < req_left_ms(r)) {
				r->retries_used++;
				atomic_fetch_add_explicit(&w->shm->slots[
				    w->slot_of[r->d]].retries, 1,
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
req_upstream_error(struct req *r)
{
	struct upstream_error *e = &r->uerr;

	memset(e, 0, sizeof *e);
	e->retry_after_ms = r->resp.retry_after_ms;
	e->should_retry = r->resp.should_retry;
	classify_http(r->resp.status, r->rbody.data ? r->rbody.data : "",
	    r->rbody.len, e);
	req_fail_attempt(r, e->cls, r->resp.status, e->message[0] ?
	    e->message : "upstream error", e->retry_after_ms, e->should_retry);
}

/* Send what is pending in r->out to the client, starting the reply if
 * needed. */
static void
req_stream_flush(struct req *r)
{
	struct evbuffer *eb;

	if (!r->client_started) {
		struct evkeyvalq *h = evhttp_request_get_output_headers(r->hreq);

		evhttp_add_header(h, "Content-Type", "text/event-stream");
		evhttp_add_header(h, "Cache-Control", "no-cache");
		req_add_common_headers(r);
		evhttp_send_reply_start(r->hreq, 200, "OK");
		r->client_started = 1;
	}
	if (r->out.len == 0)
		return;
	if ((eb = evbuffer_new()) == NULL)
		return;
	evbuffer_add(eb, r->out.data, r->out.len);
	evhttp_send_reply_chunk(r->hreq, eb);
	evbuffer_free(eb);
	buf_reset(&r->out);
}

/* One SSE event from the upstream. */
static int
req_sse_event(void *arg, const char *ev, size_t elen, const char *data,
    size_t dlen)
{
	struct req *r = arg;
	int         rc;

	if (r->upstream_complete)
		return 0;
	rc = r->prov->stream_event(&r->pc, &r->ss, ev, elen, data, dlen,
	    &r->out, &r->uerr);
	if (rc == -1) {
		r->in_stream_err = 1;
		return 1;
	}
	if (rc == 1) {
		r->upstream_complete = 1;
		buf_adds(&r->out, "data: [DONE]\n\n");
	}
	return 0;
}

static void
up_on_headers(void *arg, const struct up_resp *resp)
{
	struct req *r = arg;

	r->resp = *resp;
	r->got_headers = 1;
	r->streaming = r->stream && resp->status / 100 == 2 &&
	    resp->event_stream;
}

/* The first content reached us: TTFT, switch the timer to idle mode. */
static void
req_first_content(struct req *r)
{
	const struct cfg *cfg = r->w->cfg;

	r->ttft_us = clock_us() - r->att_t0_us;
	event_del(&r->ev_deadline); /* the deadline bounds time to first byte */
	req_arm(&r->ev_attempt, cfg_eff_stream_idle_timeout_ms(cfg,
	    &cfg->deploy[r->d]));
}

static void
up_on_data(void *arg, const char *p, size_t n)
{
	struct req *r = arg;
	int         rc;

	if (!r->streaming) {
		if (r->resp.status / 100 == 2 || r->rbody.len < ERRBODY_MAX)
			buf_add(&r->rbody, p, n);
		return;
	}
	rc = sse_feed(&r->sse, p, n, req_sse_event, r);
	if (rc == -1 || r->in_stream_err) {
		struct upconn *c = r->up;

		if (rc == -1) {
			r->uerr.cls = EC_TRANSIENT;
			snprintf(r->uerr.message, sizeof r->uerr.message,
			    "malformed upstream stream");
		}
		r->up = NULL;
		up_abort(c);
		req_fail_attempt(r, r->uerr.cls, r->resp.status,
		    r->uerr.message, r->uerr.retry_after_ms, -1);
		return;
	}
	if (r->ttft_us < 0 && (r->ss.content_seen || r->upstream_complete))
		req_first_content(r);
	else if (r->ttft_us >= 0)
		req_arm(&r->ev_attempt, cfg_eff_stream_idle_timeout_ms(
		    r->w->cfg, &r->w->cfg->deploy[r->d]));
	if (r->client_started || r->ss.content_seen || r->upstream_complete)
		req_stream_flush(r);
}

/* A whole non-stream reply arrived: translate and answer. */
static void
req_complete_whole(struct req *r)
{
	int cf = 0;

	buf_reset(&r->out);
	if (r->prov->response(&r->pc, r->rbody.data ? r->rbody.data : "",
	    r->rbody.len, &r->out, &r->usage, &cf, &r->uerr) == -1) {
		req_fail_attempt(r, r->uerr.cls ? r->uerr.cls : EC_TRANSIENT,
		    r->resp.status, r->uerr.message, -1, -1);
		return;
	}
	if (cf && cfg_find_fallback(&r->w->cfg->cp_fallbacks,
	    r->groups[0]->name) && !r->switched) {
		req_fail_attempt(r, EC_CONTENT_POLICY, r->resp.status,
		    "answer blocked by the provider's content filter", -1, -1);
		return;
	}
	route_attempt_end(r->w, r->d, EC_OK, clock_us() - r->att_t0_us, -1,
	    &r->usage, -1, NULL, 200);
	req_add_common_headers(r);
	log_info("%s %s -> 200 via %s (%d attempts, %d ms)", r->id, r->model,
	    r->w->cfg->deploy[r->d].name, r->attempts, req_elapsed_ms(r));
	server_send_json(r->hreq, 200, &r->out);
	req_release(r);
}

static void
up_on_done(void *arg)
{
	struct req *r = arg;

	req_attempt_clear(r);
	if (r->resp.status / 100 != 2) {
		req_upstream_error(r);
		return;
	}
	if (!r->stream || !r->streaming) {
		if (r->stream && !r->streaming) {
			req_fail_attempt(r, EC_TRANSIENT, r->resp.status,
			    "upstream did not answer with an event stream", -1,
			    -1);
			return;
		}
		req_complete_whole(r);
		return;
	}
	if (!r->upstream_complete) {
		req_fail_attempt(r, EC_TRANSIENT, r->resp.status,
		    "upstream stream ended before completion", -1, -1);
		return;
	}
	if (r->ttft_us < 0)
		r->ttft_us = clock_us() - r->att_t0_us;
	r->usage = r->ss.usage;
	route_attempt_end(r->w, r->d, EC_OK, clock_us() - r->att_t0_us,
	    r->ttft_us, &r->usage, -1, NULL, 200);
	req_stream_flush(r);
	evhttp_send_reply_end(r->hreq);
	log_info("%s %s -> 200 stream via %s (%d attempts, %d ms)", r->id,
	    r->model, r->w->cfg->deploy[r->d].name, r->attempts,
	    req_elapsed_ms(r));
	req_release(r);
}

static void
up_on_error(void *arg, const char *msg)
{
	struct req *r = arg;

	r->up = NULL;
	req_fail_attempt(r, EC_TRANSIENT, 0, msg, -1, -1);
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

	(void)c;
	if (r->hreq == NULL)
		return;
	log_info("%s client went away after %d ms; cancelling", r->id,
	    req_elapsed_ms(r));
	r->gone = 1;
	if (r->up) {
		up_abort(r->up);
		r->up = NULL;
		route_attempt_end(r->w, r->d, EC_CANCELLED,
		    clock_us() - r->att_t0_us, -1, NULL, -1, NULL, 0);
	}
	/* evhttp detached the request from the dying connection; it is ours */
	evhttp_request_free(r->hreq);
	req_release(r);
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
	const struct cfg          *cfg = r->w->cfg;
	const struct group_cfg    *g = cfg_find_group(cfg, r->model);
	const struct fallback_cfg *f;
	int                        t, n;
	char                       name[CFG_NAME_MAX];

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
			const struct group_cfg *fg = cfg_find_group(cfg,
			    f->to[i]);
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
	double            v;
	int               t, rc;

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
	if (t < 0 || (r->endpoint == EP_CHAT && json_type(&r->j, t) !=
	    JSMN_ARRAY)) {
		req_error(r, 400, "invalid_request_error", r->endpoint ==
		    EP_CHAT ? "missing_messages" : "missing_input",
		    r->endpoint == EP_CHAT ?
		    "'messages' is required and must be an array" :
		    "'input' is required");
		return -1;
	}
	r->stream = r->endpoint == EP_CHAT &&
	    json_is_true(&r->j, json_get(&r->j, 0, "stream"));
	r->include_usage = json_is_true(&r->j, json_path(&r->j, 0,
	    "stream_options.include_usage"));
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
	struct req      *r;
	size_t           len = evbuffer_get_length(in);
	char             msg[160];

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
	r->gone = 0;
	snprintf(r->id, sizeof r->id, "req-%x-%" PRIx64, (unsigned)getpid(),
	    ++w->next_id);
	r->d = r->prev_d = -1;
	r->gi = r->attempts = r->retries_used = r->tries_here = 0;
	r->switched = r->n_rate = r->n_fail = r->forced = r->ntrail = 0;
	r->client_started = 0;
	r->soonest_ms = 0;
	r->model[0] = '\0';
	memset(r->tried, 0, sizeof r->tried);
	buf_reset(&r->out);
	event_assign(&r->ev_deadline, w->base, -1, 0, req_deadline, r);
	event_assign(&r->ev_attempt, w->base, -1, 0, req_attempt_timeout, r);
	event_assign(&r->ev_wait, w->base, -1, 0, req_wait_cb, r);
	evhttp_connection_set_closecb(evhttp_request_get_connection(hreq),
	    req_client_closed, r);
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
		snprintf(msg, sizeof msg, "model '%s' is not a configured group "
		    "or deployment", r->model);
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
	buf_free(&r->po.path);
	buf_free(&r->po.headers);
	buf_free(&r->po.body);
	buf_free(&r->rbody);
	buf_free(&r->out);
	sse_free(&r->sse);
	stream_state_free(&r->ss);
	free(r);
}

/* Worker exit: abandon requests still in flight and free every object. */
void
req_free_all(struct worker *w)
{
	struct req *r;

	while ((r = LIST_FIRST(&w->reqs)) != NULL) {
		if (r->up) {
			up_abort(r->up);
			r->up = NULL;
		}
		event_del(&r->ev_deadline);
		event_del(&r->ev_attempt);
		event_del(&r->ev_wait);
		LIST_REMOVE(r, link);
		req_destroy(r);
	}
	while ((r = w->free_reqs) != NULL) {
		w->free_reqs = r->next_free;
		req_destroy(r);
	}
}
