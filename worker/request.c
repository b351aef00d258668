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

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/crypto.h>

#include "common/backoff.h"
#include "common/clock.h"
#include "common/evstream.h"
#include "common/log.h"
#include "common/spend.h"
#include "worker/gauth.h"
#include "worker/ident.h"
#include "worker/ingress.h"
#include "worker/limits.h"
#include "worker/policy.h"
#include "worker/request.h"
#include "worker/route.h"
#include "worker/upstream.h"
#include "worker/worker.h"

#define REQ_MAX_TRAIL  12
#define REQ_MAX_FREE   256  /* recycled request objects kept after a burst */
#define BODY_MAX_FREE  64   /* recycled body holders */
#define ATT_BEARER_MAX 2560 /* the longest access token sent */
#define REQ_IDLE_FREE  8    /* what an idle worker keeps of both */
#define REQ_KEEP_BUF   (64 << 10) /* bigger buffers are freed on recycling */
#define REQ_SMALL_BODY 512        /* bodies copied out of their read buffer */
#define REQ_COPY_BODY  (16 << 10) /* req_start: into the holder's memory */
#define PO_KEEP        2048       /* the spare request's buffers kept */
#define ERRBODY_MAX    65536
#define STREAM_MAX_BAD 16 /* malformed events an attempt may skip */
#define REQ_YIELD_MS   20 /* a queued request yields to higher classes */

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
	struct prov_out *po; /* built, until sent (or the token arrives) */
	struct buf rbody;
	struct buf out;  /* translated, not yet sent */
	struct buf text; /* content text this attempt produced */
	struct sse sse;
	struct evs *evs; /* for PROV_FRAME_EVENTSTREAM providers, on use */
	struct stream_state ss;
	struct event ev_timer; /* attempt / first token / idle */
	struct gauth_wait gw;  /* waiting for an access token */
	struct buf bearer;     /* the access token sent, empty if none (a
	                          buffer, not 2.5 KB in every attempt) */
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
		int64_t idle_due_ms; /* stream idle timer due (clock_ms) */
		struct up_resp resp;
		int streaming, complete, in_stream_err;
		int bad_events;   /* malformed events skipped */
		int timed_out;    /* failed by its timer */
		int auth_wait;    /* built, waiting for its access token */
		int reauth;       /* a 401 to refresh the token for */
		int prefill;      /* continues as an assistant prefill */
		int splice;       /* holding a continuation's start */
		size_t drop;      /* leading text bytes that repeat sent text */
		size_t text_sent; /* text bytes that reached the client */
		struct usage usage;
	} st;
	char *model; /* upstream model of a pattern's deployment, or NULL */
};

/* What the log lines need of the connection's peer (struct peer less its
 * groups, which only identification reads). */
struct req_peer {
	int cred; /* uid, pid are known */
	uint32_t uid;
	int32_t pid;
	char comm[16];
};

/* Everything that belongs to one request, cleared with one memset. */
struct req_st {
	const struct client_ops *ops;
	void *c; /* the client handle; NULL once it is gone */
	const struct ingress *ig;
	int phase;
	char id[REQ_ID_MAX];
	int64_t t0_us, deadline_ms;

	/* the request, as the engine reads it */
	const struct json *doc; /* canonical document: &canon_j or &j */
	char model[128];
	int stream, include_usage;
	int req_retries;    /* num_retries field, -1 if absent */
	int first_token_ms; /* stream_timeout field, -1 if absent */
	long est_tokens;

	/* candidates */
	const struct group_cfg *groups[ROUTE_MAX_GROUPS];
	int ngroups, gi; /* groups point into struct req's policy */
	uint64_t tried[CFG_MAX_DEPLOY / 64];
	int d, prev_d; /* last deployment started */
	int retries_used, tries_here, attempts;
	int switched; /* context/content fallbacks taken */
	int64_t soonest_ms;
	int n_rate, n_fail, forced, hedged;
	int n_unsupported;
	int64_t ra_ms; /* the shortest upstream Retry-After seen, -1 */
	uint64_t no_prefill[CFG_MAX_DEPLOY / 64]; /* refused a prefill */
	uint64_t reauthed[CFG_MAX_DEPLOY / 64];   /* token refreshed on 401 */
	int cut_d;  /* the deployment whose stream was cut, -1 */
	int ntrail; /* entries in struct req's trail */

	/* the answer */
	int served;         /* deployment that answered, -1 */
	int tool_stream;    /* a tool call was streamed */
	int close_after;    /* end the connection after this reply */
	struct usage usage; /* of the attempt that answered */
	int64_t ttft_us;    /* of the stream that answered, -1 */
	int ig_ready;       /* ingress state initialised */
	int native;         /* the answer passed the client's format through */
	int local;          /* llmfd answered itself (ingress local) */
	int64_t sent_us;    /* when the stream last sent the client bytes */

	/* the client (issue 17) */
	int client;           /* index in cfg->clients, -1: not identified */
	struct req_peer peer; /* the connection's, for logs (it may close) */
	int prio;             /* enum prio */
	int admitted;         /* limits_admit counted it: release at the end */
	int waiting;          /* counted as waiting for capacity */
	int64_t cost_nusd;    /* the answer's price, -1: not priced */
};

/* The client's body in one run of bytes, kept while the request or any
 * upstream write that refers to it (up_hold) needs it. */
struct req_body {
	struct up_hold h; /* first: the hold is the holder */
	struct evbuffer *eb;
	char *copy; /* a small body (REQ_SMALL_BODY; REQ_COPY_BODY from
	               req_start) in memory of its size, not in eb: evbuffer
	               chains are 1 KB or more; kept by a recycled holder */
	size_t ncopy, copycap;
	struct req_body *next_free;
};

struct req {
	LIST_ENTRY(req) link;
	struct req *next_free;
	struct worker *w;
	struct req_body *bh; /* the client's body: body, blen bytes */
	const char *body;
	size_t blen;
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
	char *served_model; /* a pattern deployment's upstream model, or NULL */
	char *unsup_msg;    /* why the last candidate could not serve it */
	char *cut_msg;      /* why its stream was cut (s.cut_d), or NULL */
	struct attempt_rec *trail; /* the attempts noted, trail_cap room */
	int trail_cap;
	/* att[0] is att0; att[1] (a hedge's) is allocated when first needed */
	struct attempt *att[2];
	struct attempt att0;
	struct event ev_deadline, ev_wait;
	struct event ev_ping;   /* an idle stream's keep-alive */
	struct event *ev_hedge; /* made when a hedge is first armed */
	struct policy pol;      /* the candidates (policy.c) */
	struct req_st s;
};

/* The request objects of this worker process. */
static LIST_HEAD(, req) reqs = LIST_HEAD_INITIALIZER(reqs);
static struct req *free_reqs;
static int nfree, ninflight;
static struct req_body *free_bodies;
static int nfree_bodies, bodies_closing;
static struct prov_out *po_spare; /* one request being built, recycled */
/* The upstream failure being handled. Providers fill it and the engine
 * reads it within one callback (an upstream read, a reply), never across
 * two, so one serves every request of the worker (not 408 bytes in each);
 * it is cleared before each use. */
static struct upstream_error uerr;

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
static int att_reauth(struct attempt *);
static void req_cut_abort(struct req *, const char *why);
static void req_deadline(evutil_socket_t, short, void *);
static void req_wait_cb(evutil_socket_t, short, void *);
static void req_hedge(evutil_socket_t, short, void *);
static void req_ping(evutil_socket_t, short, void *);
static int req_full_doc(struct req *);
static void att_timeout(evutil_socket_t, short, void *);

static const struct up_cbs up_cbs;

/* Make a an idle attempt of r. */
static void
att_init(struct req *r, struct attempt *a)
{
	a->r = r;
	event_assign(&a->ev_timer, r->w->base, -1, 0, att_timeout, a);
}

/* Whether r's attempt i exists and is running. */
static int
att_on(const struct req *r, int i)
{
	return r->att[i] != NULL && r->att[i]->st.active;
}

/* An idle attempt slot of r (the second one allocated on first use), or
 * NULL when memory ran out. */
static struct attempt *
att_slot(struct req *r)
{
	if (!r->att[0]->st.active)
		return r->att[0];
	if (r->att[1] == NULL && (r->att[1] = calloc(1, sizeof *r->att[1])))
		att_init(r, r->att[1]);
	return r->att[1];
}

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
	r->att[0] = &r->att0;
	att_init(r, r->att[0]);
	event_assign(&r->ev_deadline, w->base, -1, 0, req_deadline, r);
	event_assign(&r->ev_wait, w->base, -1, 0, req_wait_cb, r);
	event_assign(&r->ev_ping, w->base, -1, 0, req_ping, r);
	return r;
}

/* Free a body holder. */
static void
req_body_free(struct req_body *b)
{
	if (b->eb)
		evbuffer_free(b->eb);
	free(b->copy);
	free(b);
}

/* The holder's evbuffer, made on first use (a small body needs none). */
static struct evbuffer *
req_body_eb(struct req_body *b)
{
	if (b->eb == NULL)
		b->eb = evbuffer_new();
	return b->eb;
}

/* The last user of a body let go: empty the holder and recycle it. */
static void
req_body_release(struct up_hold *h)
{
	struct req_body *b = (struct req_body *)h;

	if (b->eb)
		evbuffer_drain(b->eb, evbuffer_get_length(b->eb));
	b->ncopy = 0;
	if (bodies_closing || nfree_bodies >= BODY_MAX_FREE) {
		req_body_free(b);
		return;
	}
	b->next_free = free_bodies;
	free_bodies = b;
	nfree_bodies++;
}

/* An empty body holder with one reference (the request's), or NULL. */
static struct req_body *
req_body_get(void)
{
	struct req_body *b = free_bodies;

	if (b) {
		free_bodies = b->next_free;
		nfree_bodies--;
	} else if ((b = calloc(1, sizeof *b)) == NULL) {
		return NULL;
	}
	b->h.refs = 1;
	b->h.release = req_body_release;
	return b;
}

/* The body as one run of bytes: where its pieces already lie end to end
 * in memory (a body conn.c read into one allocation), else pulled up into
 * one; NULL when memory ran out. */
static const char *
req_body_run(struct evbuffer *eb)
{
	struct evbuffer_iovec v[8];
	int n = evbuffer_peek(eb, -1, NULL, v, 8);

	for (int i = 1; i < n && n <= 8; i++)
		if ((const char *)v[i].iov_base !=
		    (const char *)v[i - 1].iov_base + v[i - 1].iov_len) {
			n = 0;
			break;
		}
	if (n >= 1 && n <= 8)
		return v[0].iov_base;
	return (const char *)evbuffer_pullup(eb, -1);
}

/* A small body's own copy in b (NULL when memory ran out): the memory a
 * recycled holder kept when it is large enough (no allocation for a
 * request like the last), else of its size. */
static char *
req_body_small(struct req_body *b, size_t n)
{
	char *p;

	if (b->copycap < n) {
		if ((p = realloc(b->copy, n)) == NULL)
			return NULL;
		b->copy = p;
		b->copycap = n;
	}
	b->ncopy = n;
	return b->copy;
}

/* Move the client's body from in to b. A small one is copied to memory
 * of its own size: the read buffer it lies in (1 KB or more, the head's
 * bytes before it) would otherwise stay with a stream until its first
 * content. */
static int
req_body_take(struct req_body *b, struct evbuffer *in)
{
	size_t n = evbuffer_get_length(in);

	if (n == 0)
		return 0;
	if (n > REQ_SMALL_BODY)
		return req_body_eb(b) ? evbuffer_add_buffer(b->eb, in) : -1;
	if (req_body_small(b, n) == NULL ||
	    evbuffer_remove(in, b->copy, n) != (int)n)
		return -1;
	return 0;
}

/* Let go of the request's body (upstream writes may keep it a while). */
static void
req_body_drop(struct req *r)
{
	if (r->bh)
		up_hold_unref(&r->bh->h);
	r->bh = NULL;
	r->body = NULL;
	r->blen = 0;
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

/* Wipe the access token an attempt kept. */
static void
att_forget_bearer(struct attempt *a)
{
	if (a->bearer.data)
		OPENSSL_cleanse(a->bearer.data, a->bearer.cap);
	buf_reset(&a->bearer);
}

/* Attempt a's request while it is built and sent: a recycled one (its
 * buffers empty), or NULL when memory ran out. */
static struct prov_out *
att_po_get(struct attempt *a)
{
	if (a->po == NULL) {
		a->po = po_spare ? po_spare : calloc(1, sizeof *a->po);
		po_spare = NULL;
	}
	return a->po;
}

/* Empty b, keeping its memory when it is small (the worker's spare
 * request: no allocation per request for its path and headers). */
static void
po_keep(struct buf *b)
{
	if (b->cap > PO_KEEP)
		buf_free(b);
	buf_reset(b);
}

/* Free the worker's spare request and its buffers. */
static void
po_spare_free(void)
{
	if (po_spare == NULL)
		return;
	buf_free(&po_spare->path);
	buf_free(&po_spare->headers);
	buf_free(&po_spare->body);
	free(po_spare);
	po_spare = NULL;
}

/* Attempt a's request is sent (or abandoned): free its buffers (but the
 * spare's small ones) and keep the object for the next attempt of the
 * worker. */
static void
att_po_put(struct attempt *a)
{
	struct prov_out *o = a->po;

	if (o == NULL)
		return;
	a->po = NULL;
	if (po_spare == NULL) { /* kept, with small buffers, for the next */
		po_keep(&o->path);
		po_keep(&o->headers);
		po_keep(&o->body);
		o->nspan = 0;
		o->run = NULL;
		o->runlen = o->placed = 0;
		po_spare = o;
		return;
	}
	buf_free(&o->path);
	buf_free(&o->headers);
	buf_free(&o->body);
	free(o);
}

/* Let go of attempt a's buffers: the request copies always, the reply
 * buffers with how (freed, or recycled). */
static void
att_bufs(struct attempt *a, void (*how)(struct buf *))
{
	att_forget_bearer(a);
	buf_free(&a->bearer);
	att_po_put(a);
	free(a->model);
	a->model = NULL;
	how(&a->rbody);
	how(&a->out);
	how(&a->text);
	stream_state_free(&a->ss);
}

/* Free attempt a's buffers (it is stopped). */
static void
att_destroy(struct attempt *a)
{
	att_bufs(a, buf_free);
	sse_free(&a->sse);
	if (a->evs)
		evs_free(a->evs);
	free(a->evs);
	a->evs = NULL;
}

/* Free r's hedge attempt, if it has one (stopped). */
static void
att_drop_second(struct req *r)
{
	if (r->att[1] == NULL)
		return;
	event_del(&r->att[1]->ev_timer);
	att_destroy(r->att[1]);
	free(r->att[1]);
	r->att[1] = NULL;
}

static void
req_destroy(struct req *r)
{
	json_free(&r->j);
	json_free(&r->canon_j);
	att_destroy(r->att[0]);
	att_drop_second(r);
	free(r->trail);
	free(r->served_model);
	free(r->unsup_msg);
	free(r->cut_msg);
	policy_free(&r->pol);
	if (r->ev_hedge)
		event_free(r->ev_hedge);
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

/* Arm the hedge timer in ms, making it on first use (most groups never
 * hedge; without memory the request just does not hedge). */
static void
req_hedge_arm(struct req *r, int64_t ms)
{
	if (r->ev_hedge == NULL &&
	    (r->ev_hedge = event_new(r->w->base, -1, 0, req_hedge, r)) == NULL)
		return;
	req_arm(r->ev_hedge, ms);
}

/* Disarm the hedge timer. */
static void
req_hedge_del(struct req *r)
{
	if (r->ev_hedge)
		event_del(r->ev_hedge);
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
	struct attempt *o = a == a->r->att[0] ? a->r->att[1] : a->r->att[0];

	return o && o->st.active ? o : NULL;
}

/* ---- the attempt trail ---- */

/* Note one attempt (or skip) in the trail. */
static void
req_trail(struct req *r, int d, int status, int cls, int skip, int ms,
          const char *msg)
{
	struct attempt_rec *a;
	int cap = r->trail_cap ? 2 * r->trail_cap : 2;

	if (r->s.ntrail >= REQ_MAX_TRAIL)
		return;
	if (r->s.ntrail == r->trail_cap) { /* grown by need: most have none */
		if (cap > REQ_MAX_TRAIL)
			cap = REQ_MAX_TRAIL;
		if ((a = reallocarray(r->trail, (size_t)cap, sizeof *a)) ==
		    NULL)
			return;
		r->trail = a;
		r->trail_cap = cap;
	}
	a = &r->trail[r->s.ntrail++];
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
		const struct attempt_rec *a = &r->trail[i];

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
		const struct attempt_rec *a = &r->trail[i];

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

#define HL(b, lit, v, vn) buf_add_hline(b, lit, sizeof lit - 1, v, vn)

/* The response headers every reply carries, built in one buffer (ids,
 * counts, configured names and prices, none of which can hold a CR or
 * LF) and handed to the client at once. */
static void
req_common_headers(struct req *r)
{
	static struct buf b;
	const struct client_ops *o = r->s.ops;
	const char *v;
	char n[BUF_NUM_MAX];

	buf_reset(&b);
	HL(&b, "x-request-id", r->s.id, strlen(r->s.id));
	if (r->s.ig->id_header)
		buf_add_hline(&b, r->s.ig->id_header,
		              strlen(r->s.ig->id_header), r->s.id,
		              strlen(r->s.id));
	HL(&b, "x-llmfd-attempts", n, buf_fmt_d(n, r->s.attempts));
	if (r->s.served >= 0) {
		v = dname(r, r->s.served);
		HL(&b, "x-llmfd-deployment", v, strlen(v));
		v = cfg_provider_name(r->w->cfg->deploy[r->s.served].provider);
		HL(&b, "x-llmfd-provider", v, strlen(v));
	} else if (r->s.local) {
		v = r->s.ig->local_name;
		HL(&b, "x-llmfd-deployment", v, strlen(v));
		HL(&b, "x-llmfd-provider", "llmfd", 5);
	}
	if (r->s.cost_nusd >= 0) {
		char usd[32];

		spend_fmt_usd(usd, sizeof usd, (uint64_t)r->s.cost_nusd);
		HL(&b, "x-llmfd-cost-usd", usd, strlen(usd));
	}
	if (!b.oom)
		o->header_lines(r->s.c, b.data, b.len);
	if (r->s.close_after)
		o->header(r->s.c, "Connection", "close");
}

/* The client's name, "-" if not identified. */
static const char *
req_client_name(const struct req *r)
{
	return r->s.client >= 0 ? r->w->cfg->clients[r->s.client].name : "-";
}

/* Who sent the request, for log lines: " client NAME (uid U pid P COMM)",
 * "" if not identified. */
static void
req_who(const struct req *r, char *out, size_t n)
{
	const struct req_peer *p = &r->s.peer;

	out[0] = '\0';
	if (r->s.client < 0)
		return;
	if (p != NULL && p->cred)
		snprintf(out, n, " client %s (uid %u pid %d %s)",
		         req_client_name(r), (unsigned)p->uid, (int)p->pid,
		         p->comm[0] ? p->comm : "?");
	else
		snprintf(out, n, " client %s", req_client_name(r));
}

/* Price the answer (its deployment's upstream model in `prices`) and
 * count its tokens and spend for the client, the deployment and the
 * ledger. Once, from req_finish. */
static void
req_spend(struct req *r)
{
	const struct cfg *cfg = r->w->cfg;
	const struct deploy_cfg *d;
	const struct price_cfg *p = NULL;
	const struct usage *u = &r->s.usage;
	const char *model;

	r->s.cost_nusd = -1;
	if (r->s.served < 0)
		return;
	d = &cfg->deploy[r->s.served];
	model = r->served_model ? r->served_model : d->model;
	if (r->served_model)
		p = cfg_price(cfg, model);
	else if (d->price >= 0)
		p = &cfg->prices[d->price];
	if (p != NULL)
		r->s.cost_nusd = (int64_t)spend_cost_nusd(
		    p, u->prompt_tokens, u->cached_tokens,
		    u->cache_write_tokens, u->completion_tokens);
	if (r->s.client >= 0)
		limits_spend(r->w, r->s.client, r->s.served, model, u,
		             r->s.cost_nusd > 0 ? (uint64_t)r->s.cost_nusd : 0);
}

/* Write the access log line. */
static void
req_access(struct req *r, int status, const char *code)
{
	const struct deploy_cfg *d =
	    r->s.served >= 0 ? &r->w->cfg->deploy[r->s.served] : NULL;
	char trail[REQ_MAX_TRAIL * 96], cost[32] = "-";
	const struct req_peer *p = &r->s.peer;
	const char *dep = d ? d->name : "-";
	const char *prov = d ? cfg_provider_name(d->provider) : "-";
	int ok = code == NULL, cred = p != NULL && p->cred;

	if (!accesslog_enabled())
		return;
	if (r->s.local) { /* llmfd's own answer */
		dep = r->s.ig->local_name;
		prov = "llmfd";
	}
	req_trail_text(r, trail, sizeof trail);
	if (r->s.cost_nusd >= 0)
		spend_fmt_usd(cost, sizeof cost, (uint64_t)r->s.cost_nusd);
	accesslog_write(
	    r->w->cfg,
	    &(struct access_rec){
	        .id = r->s.id,
	        .proto = r->s.ig->name,
	        .model = r->s.model[0] ? r->s.model : "-",
	        .deployment = dep,
	        .provider = prov,
	        .code = code ? code : "-",
	        .attempts = r->s.attempts,
	        .status = status,
	        .latency_ms = req_elapsed_ms(r),
	        .ttft_ms =
	            ok && r->s.ttft_us >= 0 ? (int)(r->s.ttft_us / 1000) : -1,
	        .prompt_tokens = ok ? r->s.usage.prompt_tokens : 0,
	        .completion_tokens = ok ? r->s.usage.completion_tokens : 0,
	        .stream = r->s.stream,
	        .trail = trail,
	        .client = req_client_name(r),
	        .uid = cred ? (long)p->uid : -1,
	        .pid = cred ? (long)p->pid : -1,
	        .comm = cred && p->comm[0] ? p->comm : "-",
	        .cost = cost});
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
	if (r->s.attempts > 0) /* llmfd spent its retries: SDKs should not */
		o->header(r->s.c, "x-should-retry", "false");
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
	gauth_cancel(&a->gw);
	a->st.auth_wait = 0;
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
	if (evtimer_pending(&r->ev_wait, NULL)) /* rarely: cheaper to ask */
		event_del(&r->ev_wait);
	req_hedge_del(r);
	if (evtimer_pending(&r->ev_ping, NULL))
		event_del(&r->ev_ping);
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
		struct attempt *a = r->att[i];

		if (a == NULL)
			continue;
		att_cancel(a, "request finished");
		sse_reset(&a->sse);
		if (a->evs)
			evs_reset(a->evs);
		att_bufs(a, buf_recycle);
	}
	att_drop_second(r); /* a hedge's: rare, not kept warm */
	req_unhook(r);
	req_body_drop(r);
	if (r->s.waiting)
		limits_wait(w, r->s.prio, -1);
	if (r->s.admitted)
		limits_release(w, r->s.client);
	buf_recycle(&r->canon);
	buf_recycle(&r->out);
	buf_recycle(&r->sent_text);
	buf_reset(&r->fwd);
	free(r->served_model);
	r->served_model = NULL;
	free(r->unsup_msg);
	r->unsup_msg = NULL;
	free(r->cut_msg);
	r->cut_msg = NULL;
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
	char who[160] = "";

	if (r->s.phase == REQ_DONE)
		return;
	if (e->type && r->s.ig->map_status)
		status = r->s.ig->map_status(status);
	if (log_enabled(r->s.c && e->type && streaming ? LOG_LVL_WARN
	                                               : LOG_LVL_INFO))
		req_who(r, who, sizeof who); /* only for a line logged */
	if (r->s.c == NULL) {
		log_info("%s client went away after %d ms; cancelling%s",
		         r->s.id, req_elapsed_ms(r), who);
		status = 499;
		code = "client_closed";
	} else if (e->type == NULL)
		log_info("%s %s -> 200%s via %s (%d attempts, %d ms)%s",
		         r->s.id, r->s.model, streaming ? " stream" : "",
		         r->s.local ? r->s.ig->local_name
		                    : dname(r, r->s.served),
		         r->s.attempts, req_elapsed_ms(r), who);
	else if (streaming) {
		log_warnx("%s stream interrupted after %d ms: %s%s", r->s.id,
		          req_elapsed_ms(r), e->msg, who);
		status = 200;
		code = "stream_interrupted";
	} else
		log_info("%s %s -> %d %s (%d attempts, %d ms)%s", r->s.id,
		         r->s.model, status, code, r->s.attempts,
		         req_elapsed_ms(r), who);
	for (int i = 0; i < 2; i++)
		if (r->att[i])
			att_cancel(r->att[i], r->s.c ? "request finished"
			                             : "client went away");
	req_spend(r);
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

/* llmfd's own answer (the ingress's local one, count_tokens' estimate)
 * when no candidate gave one; 0 once sent, -1 when there is none (the
 * caller answers the error). */
static int
req_local(struct req *r)
{
	const struct ingress *ig = r->s.ig;

	if (ig->local == NULL || r->s.phase == REQ_STREAMING ||
	    req_full_doc(r) == -1)
		return -1;
	buf_reset(&r->out);
	if (ig->local(&r->j, &r->out) == -1)
		return -1;
	r->s.local = 1;
	req_finish(r, &(struct req_end){.status = 200});
	return 0;
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
		struct attempt *a = r->att[i];

		if (!att_on(r, i))
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
	if (req_local(r) == 0)
		return;
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
	int64_t left;

	(void)fd;
	(void)ev;
	/* a stream's idle timer stays armed across chunks: it fires at the
	 * first chunk's due time and waits on for the rest since the last */
	if (a->st.ttft_us >= 0 && (left = a->st.idle_due_ms - clock_ms()) > 0) {
		req_arm(&a->ev_timer, left);
		return;
	}
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
	if (a->st.auth_wait)
		snprintf(msg, sizeof msg, "no access token after %d ms",
		         att_ms(a));
	a->st.timed_out = 1;
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

	if (f <= 0 || (provider_formats(p, d) & PROV_FMT(f)) == 0)
		return 0;
	return f != FMT_RESPONSES || d->responses_api ||
	       strcmp(d->host, "api.openai.com") == 0;
}

/* Whether deployment d can serve the request at all: a token count goes
 * only to a provider that counts the client's format natively. */
static int
req_serves(const struct req *r, int d)
{
	const struct deploy_cfg *dc = &r->w->cfg->deploy[d];
	const struct provider *p = provider_get(dc->provider);

	if (r->s.ig->endpoint != EP_COUNT)
		return 1;
	return p != NULL && att_native(r, p, dc) &&
	       provider_counts(p, dc, r->s.ig->fmt);
}

/* Mark the deployments of g that cannot serve the request as tried, so
 * that the router never picks them (nor spends their rate or a probe). */
static void
req_pass_over(struct req *r, const struct group_cfg *g)
{
	int d;

	if (r->s.ig->endpoint != EP_COUNT)
		return;
	for (int i = 0; i < g->ndeploy; i++)
		if (!req_serves(r, d = g->deploy[i]))
			r->s.tried[d / 64] |= 1ULL << (d % 64);
}

/* The whole token tree of a body first read with json_parse_top (a
 * provider that translates it, an encoder that reads it); -1 if it is
 * past the tokenizer's limits. */
static int
req_full_doc(struct req *r)
{
	if (!r->j.shallow)
		return 0;
	return json_parse(&r->j, r->body, r->blen);
}

/* Why the attempt being built cannot be made: written by att_build and
 * read at once by att_start (one worker, one thread), which keeps a copy
 * for the verdict in the request. */
static char build_err[160];

/* Build the upstream request for attempt a on d; -1 if the provider
 * cannot express it (the reason in build_err). */
static int
att_build(struct req *r, struct attempt *a, int d)
{
	const struct deploy_cfg *dc = &r->w->cfg->deploy[d];
	char mb[160];
	const char *m;

	a->st.prov = provider_get(dc->provider);
	if (a->st.prov == NULL)
		return -1;
	a->st.native = !a->st.resume && att_native(r, a->st.prov, dc);
	if (!req_serves(r, d)) {
		snprintf(build_err, sizeof build_err,
		         "provider of '%s' cannot count tokens", dc->name);
		return -1;
	}
	a->st.prefill = a->st.resume && cfg_eff_prefill(dc) &&
	                !(r->s.no_prefill[d / 64] & (1ULL << (d % 64)));
	free(a->model); /* a pattern's model: rare, so not kept inline */
	a->model = NULL;
	if ((m = policy_model(&r->pol, r->w->cfg, r->s.gi, d, mb, sizeof mb)) &&
	    (a->model = strdup(m)) == NULL) {
		snprintf(build_err, sizeof build_err, "out of memory");
		return -1;
	}
	a->st.pc = (struct prov_call){
	    .cfg = r->w->cfg,
	    .d = dc,
	    .model = a->model,
	    .req = r->s.doc,
	    .endpoint = r->s.ig->endpoint,
	    .stream = r->s.stream,
	    .include_usage = r->s.include_usage,
	    .drop_keys =
	        a->st.native ? r->s.ig->drop_keys : ingress_canon_drop_keys,
	    .native = a->st.native ? &r->j : NULL,
	    .native_fmt = a->st.native ? r->s.ig->fmt : 0,
	    .fwd_headers =
	        a->st.native && r->fwd.len ? buf_cstr(&r->fwd) : NULL,
	    .resume_text = a->st.resume ? r->sent_text.data : NULL,
	    .resume_len = a->st.resume ? r->sent_text.len : 0,
	    .resume_prefill = a->st.prefill,
	    .now = clock_wall_ms() / 1000,
	    .held = r->body,
	    .held_len = r->blen};
	if (r->j.shallow &&
	    !(a->st.prov->top_only && a->st.prov->top_only(&a->st.pc)) &&
	    req_full_doc(r) == -1) {
		snprintf(build_err, sizeof build_err,
		         "request body too large to translate for '%s'",
		         dc->name);
		return -1;
	}
	if (att_po_get(a) == NULL) {
		snprintf(build_err, sizeof build_err, "out of memory");
		return -1;
	}
	buf_reset(&a->po->path);
	buf_reset(&a->po->headers);
	buf_reset(&a->po->body);
	a->po->nspan = 0;
	a->po->run = NULL;
	a->po->runlen = a->po->placed = 0;
	return a->st.prov->build(&a->st.pc, a->po, build_err, sizeof build_err);
}

/* Reset attempt a's per-attempt state for a new try on d. */
static void
att_reset(struct req *r, struct attempt *a, int d, int hedge)
{
	memset(&a->st, 0, sizeof a->st);
	if (!hedge)
		memset(&uerr, 0, sizeof uerr);
	a->st.d = d;
	a->st.hedge = hedge;
	a->st.resume = r->s.phase == REQ_STREAMING;
	a->st.splice = a->st.resume;
	a->st.ttft_us = -1;
	buf_reset(&a->rbody);
	buf_reset(&a->out);
	buf_reset(&a->text);
	sse_reset(&a->sse);
	if (a->evs)
		evs_reset(a->evs);
	att_forget_bearer(a);
	stream_state_free(&a->ss);
	memset(&a->ss, 0, sizeof a->ss);
	a->ss.include_usage = r->s.include_usage;
	a->ss.role_sent = a->st.resume;
	if (r->s.stream && r->s.groups[0]->stream_resume == RESUME_CONTINUE)
		a->ss.text = &a->text;
}

/* Send attempt a's built request (with its access token, if any): the
 * body's spans of the client's text by reference (held by the request's
 * body), the rest copied. 0, or -1 when it could not be sent (a failed
 * through att_failed). */
static int
att_send(struct attempt *a)
{
	struct req *r = a->r;
	struct prov_out *o = a->po;
	struct up_part parts[PROV_MAX_SPANS];
	const char *body;
	int n = 0;

	if (a->bearer.len)
		buf_printf(&o->headers, "Authorization: Bearer %s\r\n",
		           buf_cstr(&a->bearer));
	body = o->body.data ? o->body.data : "";
	if (o->nspan == 0)
		parts[n++] = (struct up_part){body, o->body.len, 0};
	for (int i = 0; i < o->nspan; i++)
		parts[n++] =
		    o->span[i].ref
		        ? (struct up_part){o->span[i].ref, o->span[i].len, 1}
		        : (struct up_part){body + o->span[i].off,
		                           o->span[i].len, 0};
	a->st.up =
	    up_request(r->w->pools[a->st.d], "POST", o->path.data, o->path.len,
	               o->headers.data ? o->headers.data : "", o->headers.len,
	               parts, n, &r->bh->h, &up_cbs, a);
	/* copied into the connection (or held by the request's body): hold
	 * no memory in a request that may stay open for minutes */
	att_po_put(a);
	if (a->st.up == NULL) {
		att_failed(a, EC_TRANSIENT, 0, "out of memory", -1, -1);
		return -1;
	}
	return 0;
}

/* Keep the access token to send, or -1 if it does not fit a header. */
static int
att_bearer(struct attempt *a, const char *token)
{
	size_t n = token ? strlen(token) : 0;

	att_forget_bearer(a);
	if (n == 0) /* no token: no buffer */
		return 0;
	if (n >= ATT_BEARER_MAX || buf_add(&a->bearer, token, n))
		return -1;
	return 0;
}

/* The access token arrived (or the exchange failed): send, or fail. */
static void
att_token_cb(void *arg, const char *token, enum errclass cls, const char *msg)
{
	struct attempt *a = arg;

	a->st.auth_wait = 0;
	if (token == NULL || att_bearer(a, token) == -1) {
		att_failed(a, token ? EC_AUTH : cls, 0,
		           token ? "access token too long" : msg, -1, -1);
		return;
	}
	(void)att_send(a);
}

/* Get the access token d's account needs, if any: at once, or by waiting
 * for the exchange in flight (auth_wait). -1 when none can be had (a
 * failed through att_failed, as an auth failure). */
static int
att_auth(struct attempt *a)
{
	const char *token;
	char msg[160];
	int rc = gauth_token(a->r->w->gauth, a->st.d, &a->gw, att_token_cb, a,
	                     &token, msg, sizeof msg);

	if (rc == 0) {
		a->st.auth_wait = 1;
		return 0;
	}
	if (rc == 1 && att_bearer(a, token) == 0)
		return 0;
	att_failed(a, EC_AUTH, 0, rc == 1 ? "access token too long" : msg, -1,
	           -1);
	return -1;
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
	struct attempt *a = att_slot(r);
	int64_t hd;

	if (a == NULL) { /* only a hedge's slot is allocated here */
		req_trail(r, d, 0, 0, SKIP_UNSUPPORTED, 0, "out of memory");
		return -1;
	}
	att_reset(r, a, d, hedge);
	build_err[0] = '\0';
	if (att_build(r, a, d) == -1) {
		if (build_err[0] == '\0')
			snprintf(build_err, sizeof build_err,
			         "provider of '%s' cannot serve this request",
			         dname(r, d));
		r->s.n_unsupported++;
		free(r->unsup_msg); /* for the verdict, perhaps later */
		r->unsup_msg = strdup(build_err);
		req_trail(r, d, 0, 0, SKIP_UNSUPPORTED, 0, build_err);
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
	if (att_auth(a) == -1 || (!a->st.auth_wait && att_send(a) == -1))
		return -1;
	att_arm(a);
	if (!hedge && !r->s.hedged && r->s.phase != REQ_STREAMING &&
	    (hd = route_hedge_delay(w, r->s.groups[0], d)) >= 0)
		req_hedge_arm(r, hd);
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
		req_pass_over(r, r->s.groups[r->s.gi]);
		d = route_pick(r->w, r->s.groups[r->s.gi], r->s.tried,
		               r->s.est_tokens, r->pol.session, &soonest,
		               &probe);
		if (soonest &&
		    (r->s.soonest_ms == 0 || soonest < r->s.soonest_ms))
			r->s.soonest_ms = soonest;
		if (d >= 0) {
			r->s.tried[d / 64] |= 1ULL << (d % 64);
			route_count_fallback(
			    r->w, r->s.prev_d, d, r->s.id,
			    r->s.client >= 0 ? req_client_name(r) : NULL);
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
	struct attempt *a = att_on(r, 0) ? r->att[0] : r->att[1];

	(void)fd;
	(void)ev;
	if (r->s.phase != REQ_ATTEMPTING || att_on(r, 0) + att_on(r, 1) != 1 ||
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

/* Why the candidates in the trail are out: *rate counts rate limits (a
 * 429, a full rpm window, a cooldown after a 429), *down outages (a
 * failed attempt, an open circuit, a cooldown after failures). Returns
 * the soonest monotonic ms one of them is expected back (0: unknown). */
static int64_t
req_why_out(struct req *r, int *rate, int *down)
{
	int64_t soonest = r->s.soonest_ms, back;

	*rate = *down = 0;
	for (int i = 0; i < r->s.ntrail; i++) {
		const struct attempt_rec *t = &r->trail[i];

		if (t->skip == SKIP_RATE || t->skip == SKIP_COOLING ||
		    t->skip == SKIP_CIRCUIT)
			(route_limited(r->w, t->d) ? (*rate)++ : (*down)++);
		else if (!t->skip &&
		         (t->cls == EC_RATE_LIMITED || t->cls == EC_QUOTA))
			(*rate)++;
		else if (!t->skip && t->cls != EC_CANCELLED)
			(*down)++;
		if ((back = route_back_ms(r->w, t->d)) > 0 &&
		    (soonest == 0 || back < soonest))
			soonest = back;
	}
	return soonest;
}

/*
 * Every candidate is exhausted: the most meaningful status. A 400 when no
 * provider could express the request; a 429 only when every candidate is
 * rate-limited; a 503 for an outage (failed attempts, open circuits,
 * cooldowns after failures). Both carry a Retry-After: the upstream's own,
 * else the time to the soonest recovery, else 1 s.
 */
void
req_exhausted_verdict(struct req *r, struct req_verdict *v)
{
	int rate, down;
	int64_t back = req_why_out(r, &rate, &down), ms;

	memset(v, 0, sizeof *v);
	if (r->s.attempts == 0 && r->s.n_unsupported > 0 &&
	    r->s.soonest_ms == 0) {
		v->status = 400;
		v->type = "invalid_request_error";
		v->code = "unsupported_request";
		snprintf(v->msg, sizeof v->msg, "%s",
		         r->unsup_msg ? r->unsup_msg
		                      : "no candidate can serve it");
		return;
	}
	if (rate + down == 0) {
		v->status = 502;
		v->type = "upstream_error";
		v->code = "all_deployments_failed";
		snprintf(v->msg, sizeof v->msg,
		         "no deployment of '%s' is available", r->s.model);
		return;
	}
	ms = r->s.ra_ms > 0 ? r->s.ra_ms : back > 0 ? back - clock_ms() : 1000;
	v->retry_after_s = ms > 1000 ? (ms + 999) / 1000 : 1;
	v->status = down ? 503 : 429;
	v->type = down ? "upstream_error" : "rate_limit_error";
	if (r->s.attempts == 0) {
		v->code = "all_deployments_cooling";
		snprintf(v->msg, sizeof v->msg,
		         "every deployment for '%s' is %s; retry after %" PRId64
		         " s",
		         r->s.model,
		         down ? "down (cooling down or circuit open)"
		              : "cooling down or at its rate limit",
		         v->retry_after_s);
		return;
	}
	v->code = down ? "all_deployments_failed" : "rate_limited";
	snprintf(v->msg, sizeof v->msg, "all %d attempt%s for model '%s' %s",
	         r->s.attempts, r->s.attempts == 1 ? "" : "s", r->s.model,
	         down ? "failed" : "were rate-limited");
}

/* Every candidate is exhausted: answer. */
static void
req_exhausted(struct req *r)
{
	struct req_verdict v;
	char ra[24];

	if (req_local(r) == 0)
		return;
	req_exhausted_verdict(r, &v);
	if (r->pol.region[0] != '\0') { /* say why the others were not tried */
		size_t n = strlen(v.msg);
		snprintf(v.msg + n, sizeof v.msg - n,
		         " (only deployments in region '%s' may serve it)",
		         r->pol.region);
	}
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
		if (r->trail[i].d == d && !r->trail[i].skip)
			return 1;
	return 0;
}

/* Capacity is short and the request is of the lowest class: answer 429
 * with the time to the soonest recovery rather than queue it. */
static void
req_shed(struct req *r, int64_t wait)
{
	int64_t s = wait > 1000 ? (wait + 999) / 1000 : 1;
	char ra[24], msg[400];

	snprintf(ra, sizeof ra, "%" PRId64, s);
	r->s.ops->header(r->s.c, "Retry-After", ra);
	limits_refused(r->w, r->s.client, CREF_SHED);
	snprintf(msg, sizeof msg,
	         "capacity for '%s' is short (every deployment is cooling down "
	         "or at its rate limit) and client '%s' has %s priority: shed; "
	         "retry after %" PRId64 " s",
	         r->s.model, req_client_name(r), cfg_prio_name(r->s.prio), s);
	req_fail(r, 429, "rate_limit_error", "shed", msg);
}

/* Everything is cooling or limited: wait for the soonest to come back if
 * that fits the deadline (counted as waiting in the request's class), or
 * shed a low-priority request; 0 if queued or shed. */
static int
req_queue(struct req *r)
{
	int64_t wait;

	if (r->s.soonest_ms <= 0 || !r->w->cfg->queue_when_cooling ||
	    r->s.soonest_ms >= r->s.deadline_ms || r->s.n_fail != 0)
		return -1;
	wait = r->s.soonest_ms - clock_ms();
	if (r->s.prio == PRIO_LOW) {
		req_shed(r, wait);
		return 0;
	}
	if (!r->s.waiting) {
		limits_wait(r->w, r->s.prio, 1);
		r->s.waiting = 1;
	}
	memset(r->s.tried, 0, sizeof r->s.tried);
	for (int i = 0; i < r->s.ntrail; i++)
		if (!r->trail[i].skip)
			r->s.tried[r->trail[i].d / 64] |=
			    1ULL << (r->trail[i].d % 64);
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

	if (r->s.forced || g->ndeploy != 1 || req_attempted(r, d) ||
	    !req_serves(r, d))
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
		if (r->s.phase == REQ_DONE || att_on(r, 0) || att_on(r, 1) ||
		    r->s.phase == REQ_WAITING)
			return; /* att_failed took over */
	}
	if (streaming) {
		req_cut_abort(r, "no candidate could continue it");
		return;
	}
	/* with an answer of its own, the request does not wait */
	if (!r->s.ig->local && req_queue(r) == 0)
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
	if (r->s.waiting) {
		/* higher classes take what came back first */
		if (limits_higher_waiting(r->w, r->s.prio) &&
		    req_left_ms(r) > REQ_YIELD_MS) {
			req_arm(&r->ev_wait, REQ_YIELD_MS);
			return;
		}
		limits_wait(r->w, r->s.prio, -1);
		r->s.waiting = 0;
	}
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
	/* this failure opened its circuit: waiting to retry it is futile */
	if (route_why(r->w, r->s.d, r->s.est_tokens) == SKIP_CIRCUIT)
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

/* Retry after the upstream's own Retry-After of ra_ms (a 429 or 503): a
 * short one (retry_after_max_wait_ms at most, within the deadline) on the
 * same deployment; a longer one moves on at once. */
static void
req_decide_retry_after(struct req *r, int64_t ra_ms, int should_retry,
                       struct req_decision *dc)
{
	if (ra_ms <= r->w->cfg->retry_after_max_wait_ms &&
	    ra_ms < req_left_ms(r) && req_may_retry(r, should_retry)) {
		dc->action = DO_RETRY;
		dc->delay_ms = ra_ms + 1; /* the cooldown it started is over */
	}
}

/*
 * What follows a failed attempt (before anything reached the client), by
 * the failure's class: a bad request goes back to the client; a context or
 * content failure switches to its chain if there is one; a transient or
 * rate-limited one with a Retry-After waits for it on the same deployment
 * if it is short, else moves on; without one, a failure whose kind is in
 * router.retry_on (5xx and resets by default, not timeouts) is retried on
 * the same deployment after a backoff while the retry caps, the budget and
 * the deadline allow; anything else moves on.
 */
void
req_decide(struct req *r, enum errclass cls, int kind, int status,
           int64_t ra_ms, int should_retry, struct req_decision *dc)
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
		dc->code = uerr.code[0] ? uerr.code : "bad_request";
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
	case EC_RATE_LIMITED:
		if (ra_ms >= 0) {
			req_decide_retry_after(r, ra_ms, should_retry, dc);
			return;
		}
		if (!(cfg->retry_on & kind) || !req_may_retry(r, should_retry))
			return;
		delay = backoff_ms(
		    cfg_eff_backoff_base_ms(cfg, &cfg->deploy[r->s.d]),
		    cfg->backoff_max_ms, r->s.retries_used, -1, &r->w->rng);
		if (delay < req_left_ms(r)) {
			dc->action = DO_RETRY;
			dc->delay_ms = delay;
		}
		return;
	default:
		return;
	}
}

/* Switch to the context-window or content-policy chain of cls (within
 * the request's region). */
static void
req_switch(struct req *r, enum errclass cls)
{
	const struct fallback_cfg *f = req_chain(r, cls);

	r->s.switched = 1;
	r->s.ngroups = policy_switch(&r->pol, r->w->cfg, f, r->s.groups);
	r->s.gi = 0;
}

/* End an interrupted stream with an error event naming the real
 * interruption (the first cut, not a failed continuation), and why it
 * could not be continued if one was tried. */
static void
req_cut_abort(struct req *r, const char *why)
{
	char text[320];

	snprintf(text, sizeof text, "upstream failed mid-stream: %s%s%s",
	         r->cut_msg ? r->cut_msg : "out of memory", why ? "; " : "",
	         why ? why : "");
	req_stream_abort(r, r->s.cut_d, text);
}

/* A stream failed after bytes reached the client: continue it on the next
 * candidate if the group allows, else end it with an error event. */
static void
req_midstream_failure(struct req *r, int d, const char *msg)
{
	if (r->s.cut_d < 0) {
		r->s.cut_d = d;
		free(r->cut_msg);
		r->cut_msg = strndup(msg, 127); /* a cut is rare: not inline */
	}
	if (r->s.groups[0]->stream_resume == RESUME_CONTINUE &&
	    !r->s.tool_stream && !r->s.native && r->s.ig->endpoint == EP_CHAT) {
		log_info("%s continuing the interrupted stream of %s", r->s.id,
		         dname(r, d));
		r->s.prev_d = d;
		req_next(r);
		return;
	}
	req_cut_abort(r, NULL);
}

/* A continuation in the prefill form was refused with a 400 (a target
 * that takes no final assistant turn): try d again in the instruction
 * form, once. 0 if that attempt is under way. */
static int
att_prefill_refused(struct attempt *a, enum errclass cls)
{
	struct req *r = a->r;
	int d = a->st.d;

	if (!a->st.prefill || cls != EC_BAD_REQUEST)
		return -1;
	r->s.no_prefill[d / 64] |= 1ULL << (d % 64);
	log_info("%s %s refused the continuation as a prefill; trying the "
	         "instruction form",
	         r->s.id, dname(r, d));
	if (att_start(r, d, 0) == 0 || r->s.phase == REQ_DONE || att_on(r, 0) ||
	    att_on(r, 1))
		return 0; /* under way, or a failure of it took over */
	return -1;
}

/* The retry_on kind of a failed attempt (RETRY_*). */
static int
att_fail_kind(const struct attempt *a, enum errclass cls, int status)
{
	if (a->st.timed_out)
		return RETRY_TIMEOUT;
	if (cls == EC_RATE_LIMITED)
		return RETRY_429;
	if (status >= 500 || status == 408 || status == 409 ||
	    a->st.in_stream_err)
		return RETRY_5XX;
	return RETRY_RESET;
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
	req_hedge_del(r);
	if (a->st.d != r->s.d) { /* the surviving hedge attempt failed */
		r->s.d = a->st.d;
		r->s.tries_here = 1;
	}
	if (r->s.phase == REQ_STREAMING) {
		if (a->st.text_sent > a->st.drop)
			buf_add(&r->sent_text, a->text.data + a->st.drop,
			        a->st.text_sent - a->st.drop);
		if (att_prefill_refused(a, cls) == 0)
			return;
		req_midstream_failure(r, a->st.d, msg);
		return;
	}
	if (att_reauth(a) == 0)
		return;
	if (ra_ms >= 0 && (r->s.ra_ms < 0 || ra_ms < r->s.ra_ms))
		r->s.ra_ms = ra_ms;
	if (cls == EC_RATE_LIMITED)
		r->s.n_rate++;
	else if (cls != EC_BAD_REQUEST && cls != EC_CONTEXT_WINDOW &&
	         cls != EC_CONTENT_POLICY)
		r->s.n_fail++;
	req_decide(r, cls, att_fail_kind(a, cls, status), status, ra_ms,
	           should_retry, &dc);
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

/* A 401 on a deployment that sent a service account's token: the token
 * may have been revoked or expired early. The first time in a request
 * the token is dropped and the failure counted as transient (the
 * deployment is not to blame), and att_failed tries d again with a fresh
 * token. */
static void
att_reauth_check(struct attempt *a, struct upstream_error *e)
{
	struct req *r = a->r;
	int d = a->st.d;

	if (e->status != 401 || !a->bearer.len ||
	    (r->s.reauthed[d / 64] & (1ULL << (d % 64))))
		return;
	if (!gauth_invalidate(r->w->gauth, d, buf_cstr(&a->bearer)))
		return;
	r->s.reauthed[d / 64] |= 1ULL << (d % 64);
	a->st.reauth = 1;
	e->cls = EC_TRANSIENT;
	snprintf(e->message + strlen(e->message),
	         sizeof e->message - strlen(e->message),
	         " (access token refused; retrying with a fresh one)");
}

/* After a refused token: d again, with a fresh token. 0 if under way. */
static int
att_reauth(struct attempt *a)
{
	struct req *r = a->r;
	int d = a->st.d;

	if (!a->st.reauth)
		return -1;
	log_info("%s %s refused the access token; retrying with a new one",
	         r->s.id, dname(r, d));
	if (att_start(r, d, 0) == 0 || r->s.phase == REQ_DONE || att_on(r, 0) ||
	    att_on(r, 1))
		return 0;
	return -1;
}

/* Classify an upstream error reply and fail the attempt with it. */
static void
att_upstream_error(struct attempt *a)
{
	struct upstream_error *e = &uerr;

	memset(e, 0, sizeof *e);
	e->retry_after_ms = a->st.resp.retry_after_ms;
	e->should_retry = a->st.resp.should_retry;
	if (a->st.prov->classify)
		a->st.prov->classify(
		    &a->st.pc, a->st.resp.status, a->st.resp.error_type,
		    a->rbody.data ? a->rbody.data : "", a->rbody.len, e);
	else
		classify_http(a->st.resp.status,
		              a->rbody.data ? a->rbody.data : "", a->rbody.len,
		              e);
	att_reauth_check(a, e);
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
	if (ig->init && req_full_doc(r) == -1)
		return NULL;
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

/*
 * Splicing a continuation onto text the client already has (s, m bytes).
 * A continuation (c, n bytes so far; final when it is complete) that
 * begins by repeating the answer from its start, or by repeating the end
 * of it, has that overlap dropped. Returns the bytes of c to drop,
 * SPLICE_MORE to hold c until more arrives, or SPLICE_BAD when c repeats
 * the answer with changes (at least SPLICE_MIN bytes alike, then not), so
 * that no splice would be true.
 */
#define SPLICE_MORE (-1)
#define SPLICE_BAD  (-2)
#define SPLICE_MIN  16  /* shorter likenesses may be chance */
#define SPLICE_TAIL 256 /* longest repeat of the answer's end looked for */

static long
splice_overlap(const char *s, size_t m, const char *c, size_t n, int final)
{
	size_t p = 0, k, top = m < SPLICE_TAIL ? m : SPLICE_TAIL;

	while (p < m && p < n && s[p] == c[p])
		p++;
	if (n > 0 && p == (m < n ? m : n)) { /* a restart so far */
		if (n >= m)
			return (long)m;
		if (!final)
			return SPLICE_MORE;
		return n >= SPLICE_MIN ? SPLICE_BAD : 0;
	}
	if (p >= SPLICE_MIN)
		return SPLICE_BAD;
	for (k = top; k >= SPLICE_MIN; k--) { /* the longest repeated tail */
		if (k > n) {
			if (!final && memcmp(c, s + m - k, n) == 0)
				return SPLICE_MORE;
		} else if (memcmp(c, s + m - k, k) == 0)
			return (long)k;
	}
	return n == 0 && !final ? SPLICE_MORE : 0;
}

/* Drop the first `drop` bytes of content from the canonical chunks in b:
 * a chunk whose content is all dropped goes unless it carries more (a
 * finish reason, usage); the one cut in the middle is rewritten. */
static void
splice_drop(struct buf *b, size_t drop)
{
	static struct json j;
	struct buf out = {0}, t = {0};
	const char *p = b->data, *end = p + b->len, *e, *raw;
	size_t rl;
	int c, f;

	while (p < end && (e = memmem(p, (size_t)(end - p), "\n\n", 2))) {
		e += 2;
		c = -1;
		if (drop > 0 && e - p > 8 && memcmp(p, "data: ", 6) == 0 &&
		    json_parse(&j, p + 6, (size_t)(e - p - 8)) == 0)
			c = json_path(&j, 0, "choices.0.delta.content");
		buf_reset(&t);
		if (json_type(&j, c) != JSMN_STRING ||
		    json_str_buf(&j, c, &t) <= 0) {
			buf_add(&out, p, (size_t)(e - p));
			p = e;
			continue;
		}
		f = json_path(&j, 0, "choices.0.finish_reason");
		if (drop >= t.len && (f < 0 || json_is_null(&j, f)) &&
		    json_get(&j, 0, "usage") < 0) {
			drop -= t.len;
			p = e;
			continue;
		}
		raw = json_raw(&j, c, &rl);
		buf_add(&out, p, (size_t)(raw - p));
		buf_addc(&out, '"');
		if (drop < t.len)
			json_escape(&out, t.data + drop, t.len - drop);
		buf_addc(&out, '"');
		buf_add(&out, raw + rl, (size_t)(e - raw - rl));
		drop = drop < t.len ? 0 : drop - t.len;
		p = e;
	}
	buf_add(&out, p, (size_t)(end - p));
	buf_free(&t);
	buf_free(b);
	*b = out;
}

/* A continuation's start is held until it is clear whether it repeats
 * what the client has. 1 once decided (the overlap dropped from a->out),
 * 0 to keep holding, -1 when it cannot be spliced. */
static int
att_splice(struct req *r, struct attempt *a, int final)
{
	long k = splice_overlap(
	    r->sent_text.data ? r->sent_text.data : "", r->sent_text.len,
	    a->text.data ? a->text.data : "", a->text.len, final);

	if (k == SPLICE_MORE)
		return 0;
	if (k == SPLICE_BAD)
		return -1;
	a->st.splice = 0;
	a->st.drop = (size_t)k;
	if (k > 0) {
		log_info("%s continuation on %s repeated %ld bytes the client "
		         "has; dropped",
		         r->s.id, dname(r, a->st.d), k);
		splice_drop(&a->out, (size_t)k);
	}
	return 1;
}

/* Arm the stream's keep-alive (router.stream_ping_ms, 0: off) unless it
 * is armed: it fires ms after it was armed and looks at s.sent_us, so a
 * frame costs no timer change. */
static void
req_ping_arm(struct req *r, int64_t ms)
{
	if (r->w->cfg->stream_ping_ms > 0 && r->s.ig->ping &&
	    !evtimer_pending(&r->ev_ping, NULL))
		req_arm(&r->ev_ping, ms);
}

/* Send n bytes of the stream to the client and put its keep-alive off. */
static void
req_stream_send(struct req *r, const char *p, size_t n)
{
	r->s.ops->chunk(r->s.c, p, n);
	r->s.sent_us = clock_us();
	req_ping_arm(r, r->w->cfg->stream_ping_ms);
}

/* The keep-alive's timer: the ingress's keep-alive when the stream sent
 * nothing for stream_ping_ms, else wait for the rest of that time. */
static void
req_ping(evutil_socket_t fd, short ev, void *arg)
{
	struct req *r = arg;
	int64_t ms = r->w->cfg->stream_ping_ms;
	int64_t idle = (clock_us() - r->s.sent_us) / 1000;

	(void)fd;
	(void)ev;
	if (r->s.phase != REQ_STREAMING || r->s.c == NULL)
		return;
	if (idle < ms) {
		req_ping_arm(r, ms - idle);
		return;
	}
	buf_reset(&r->out);
	r->s.ig->ping(r->s.ig_ready ? r->ig_state : NULL, &r->out);
	if (r->out.len)
		r->s.ops->chunk(r->s.c, r->out.data, r->out.len);
	r->s.sent_us = clock_us();
	req_ping_arm(r, ms);
}

/* Send what attempt a has pending to the client, starting the reply the
 * first time; a continuation's start is held until it can be spliced.
 * 0, or -1 when the request finished (a continuation that cannot be
 * spliced ends the stream with an error event). */
static int
req_stream_flush(struct req *r, struct attempt *a)
{
	const struct client_ops *o = r->s.ops;
	char why[160];
	int rc;

	if (a->st.splice && (rc = att_splice(r, a, a->st.complete)) <= 0) {
		if (rc == 0)
			return 0;
		snprintf(why, sizeof why,
		         "the continuation on %s repeated the answer with "
		         "changes and cannot be spliced",
		         dname(r, a->st.d));
		log_warnx("%s %s", r->s.id, why);
		req_cut_abort(r, why);
		return -1;
	}
	if (r->s.phase != REQ_STREAMING) {
		r->s.served = a->st.d;
		r->s.native = a->st.native;
		o->header(r->s.c, "Cache-Control", "no-cache");
		req_common_headers(r);
		o->start(r->s.c, 200, r->s.ig->stream_type);
		r->s.phase = REQ_STREAMING;
	}
	r->s.tool_stream |= a->ss.tool_seen;
	a->st.text_sent = a->text.len;
	if (a->out.len == 0)
		return 0;
	if (r->s.ig->chunk == NULL || a->st.native) { /* as they came */
		req_stream_send(r, a->out.data, a->out.len);
		buf_reset(&a->out);
		return 0;
	}
	buf_reset(&r->out);
	req_encode_stream(r, a);
	if (r->out.len)
		req_stream_send(r, r->out.data, r->out.len);
	buf_reset(&a->out);
	return 0;
}

/* Whether r's body is needed no more: its stream reached the client from
 * attempt a alone and a failure from now on cannot try again (no
 * continuation: that rebuilds the request), and the client's encoder has
 * taken what it keeps of the body. */
static int
req_body_spent(struct req *r, struct attempt *a)
{
	return r->s.phase == REQ_STREAMING && a->st.ttft_us >= 0 &&
	       !att_other(a) &&
	       r->s.groups[0]->stream_resume != RESUME_CONTINUE &&
	       (r->s.ig->state_size == 0 || req_ig_state(r) != NULL);
}

/*
 * A stream between two upstream reads holds what it needs and no more:
 * the buffers that carried the last events are let go (parked for the
 * next read's, buf_park), and once the body is spent (req_body_spent)
 * the client's body, its tokens and the canonical copy go too; thousands
 * of long streams then cost little each.
 */
static void
req_stream_idle(struct req *r, struct attempt *a)
{
	sse_shrink(&a->sse);
	if (a->evs)
		evs_shrink(a->evs);
	if (a->out.len == 0)
		buf_park(&a->out);
	if (r->out.len == 0)
		buf_park(&r->out);
	if (r->bh == NULL || !req_body_spent(r, a))
		return;
	req_body_drop(r);
	json_free(&r->j);
	json_free(&r->canon_j);
	buf_free(&r->canon);
	buf_free(&r->fwd);
}

/* A stream event the provider refused: if its data is not JSON at all
 * (one malformed event in an otherwise healthy stream), skip and count it
 * and return 1; a stream that never completes still fails, and so does
 * one with more than STREAM_MAX_BAD of them. 0 for a real error event. */
static int
att_bad_event(struct attempt *a, const char *data, size_t dlen)
{
	static struct json chk;
	struct req *r = a->r;

	if (json_parse(&chk, data, dlen) == 0 ||
	    ++a->st.bad_events > STREAM_MAX_BAD)
		return 0;
	route_count_bad_event(r->w, a->st.d);
	log_debug("%s %s sent a malformed stream event (%zu bytes); skipped",
	          r->s.id, dname(r, a->st.d), dlen);
	memset(&uerr, 0, sizeof uerr);
	return 1;
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
	                              &a->out, &uerr);
	if (rc == -1 && att_bad_event(a, data, dlen))
		return 0;
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
	int framed = a->st.prov->framing == PROV_FRAME_EVENTSTREAM
	                 ? resp->amz_eventstream
	                 : resp->event_stream;

	a->st.resp = *resp;
	route_rate_headers(a->r->w, a->st.d, resp);
	a->st.streaming = a->r->s.stream && resp->status / 100 == 2 && framed;
}

/* One event stream message from the upstream, to the provider as an
 * event (see PROV_FRAME_EVENTSTREAM): its :event-type, or "exception:"
 * and its :exception-type, or "error:" and its :error-code. */
static int
att_evs_msg(void *arg, const struct evs_msg *m)
{
	char name[160];
	const struct evs_str *t = &m->event_type;
	const char *pre = "", *data = m->payload;
	size_t dlen = m->plen;

	if (m->message_type.n == 9 &&
	    memcmp(m->message_type.p, "exception", 9) == 0) {
		pre = "exception:";
		t = &m->exception_type;
	} else if (m->message_type.n == 5 &&
	           memcmp(m->message_type.p, "error", 5) == 0) {
		pre = "error:";
		t = &m->error_code;
		data = m->error_message.p ? m->error_message.p : "";
		dlen = m->error_message.n;
	}
	snprintf(name, sizeof name, "%s%.*s", pre,
	         (int)(t->n < 140 ? t->n : 140), t->p ? t->p : "");
	return att_sse_event(arg, name, strlen(name), data ? data : "", dlen);
}

/* Feed stream bytes to the provider's framing: SSE or event stream. -1
 * with e filled when the framing itself is broken. */
static int
att_feed(struct attempt *a, const char *p, size_t n)
{
	struct upstream_error *e = &uerr;
	int rc;

	memset(e, 0, sizeof *e);
	if (a->st.prov->framing == PROV_FRAME_EVENTSTREAM) {
		if (a->evs == NULL &&
		    (a->evs = calloc(1, sizeof *a->evs)) == NULL) {
			e->cls = EC_TRANSIENT;
			snprintf(e->message, sizeof e->message,
			         "out of memory");
			return -1;
		}
		if ((rc = evs_feed(a->evs, p, n, att_evs_msg, a)) == -1) {
			e->cls = EC_TRANSIENT;
			snprintf(e->message, sizeof e->message, "%s",
			         a->evs->err);
		}
		return rc;
	}
	if ((rc = sse_feed(&a->sse, p, n, att_sse_event, a)) == -1) {
		e->cls = EC_TRANSIENT;
		snprintf(e->message, sizeof e->message,
		         "malformed upstream stream");
	}
	return rc;
}

/* A stream's chunk arrived: its idle timer is due stream_idle_timeout_ms
 * from now (att_timeout moves the armed timer when it fires early, so a
 * chunk touches no timer); that timeout. */
static int64_t
att_idle(struct attempt *a)
{
	const struct cfg *cfg = a->r->w->cfg;
	int64_t ms = cfg_eff_stream_idle_timeout_ms(cfg, &cfg->deploy[a->st.d]);

	a->st.idle_due_ms = clock_ms() + ms;
	return ms;
}

/* The first content reached us: this attempt wins; the timer now bounds
 * gaps between chunks, and the deadline no longer applies. */
static void
att_first_content(struct attempt *a)
{
	struct req *r = a->r;
	struct attempt *o = att_other(a);

	a->st.ttft_us = clock_us() - a->st.t0_us;
	if (o)
		att_cancel(o, a->st.hedge ? "lost the hedge race"
		                          : "hedge not needed");
	req_hedge_del(r);
	event_del(&r->ev_deadline);
	req_arm(&a->ev_timer, att_idle(a));
}

static void
up_on_data(void *arg, const char *p, size_t n)
{
	struct attempt *a = arg;
	struct req *r = a->r;
	struct upstream_error *e = &uerr;
	int rc;

	if (!a->st.streaming) {
		if (a->st.resp.status / 100 == 2 || a->rbody.len < ERRBODY_MAX)
			buf_add(&a->rbody, p, n);
		return;
	}
	rc = att_feed(a, p, n);
	if (rc == -1 || a->st.in_stream_err) {
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
		att_idle(a);
	if ((a->st.ttft_us >= 0 ||
	     (r->s.phase == REQ_STREAMING && !att_other(a))) &&
	    req_stream_flush(r, a) == -1)
		return; /* finished */
	req_stream_idle(r, a);
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
	free(r->served_model);
	r->served_model = a->st.pc.model ? strdup(a->st.pc.model) : NULL;
}

/* A whole non-stream reply arrived: translate, encode and answer. */
static void
att_whole(struct attempt *a)
{
	struct req *r = a->r;
	struct upstream_error *e = &uerr;
	struct buf *canon = &a->out;
	int cf = 0;

	memset(e, 0, sizeof *e);
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

/* The body ended cleanly after a finish reason but without the stream's
 * terminal event ([DONE], message_stop): the answer is complete. The
 * provider writes what the terminal event would have (usage). */
static void
att_stream_end(struct attempt *a)
{
	log_debug("%s %s ended its stream without the terminal event; "
	          "complete after its finish reason",
	          a->r->s.id, dname(a->r, a->st.d));
	if (a->st.prov->stream_end)
		a->st.prov->stream_end(&a->st.pc, &a->ss, &a->out);
	a->st.complete = 1;
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
	if (!a->st.complete && !a->ss.finished) {
		att_failed(a, EC_TRANSIENT, a->st.resp.status,
		           "upstream stream ended before completion", -1, -1);
		return;
	}
	if (!a->st.complete) /* a clean end after the finish: complete */
		att_stream_end(a);
	if (a->st.ttft_us < 0)
		att_first_content(a);
	if (req_stream_flush(r, a) == -1)
		return;
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
 * the headers (status; event_stream 1 for text/event-stream, 2 for an AWS
 * event stream), the body and, if end, the end. */
void
req_test_upstream(struct req *r, int status, int event_stream, const char *body,
                  size_t n, int end)
{
	struct attempt *a = att_on(r, 0) ? r->att[0] : r->att[1];
	struct up_resp resp = {.status = status,
	                       .content_length = -1,
	                       .event_stream = event_stream == 1,
	                       .amz_eventstream = event_stream == 2,
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

/* Whether the request still holds the client's body (unit tests). */
int
req_holds_body(const struct req *r)
{
	return r->bh != NULL;
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

/* Who is calling (ident.c): the client, its priority class; -1 after
 * answering 401 or 403. */
static int
req_identify(struct req *r)
{
	const struct client_ops *o = r->s.ops;
	const struct cfg *cfg = r->w->cfg;
	struct ident_err e;
	const struct peer *p = o->peer ? o->peer(r->s.c) : NULL;

	if (p != NULL) {
		r->s.peer.cred = p->cred;
		r->s.peer.uid = p->uid;
		r->s.peer.pid = p->pid;
		memcpy(r->s.peer.comm, p->comm, sizeof r->s.peer.comm);
	}
	r->s.client =
	    ident_client(cfg, p, o->get_header(r->s.c, "Authorization"),
	                 o->get_header(r->s.c, "x-api-key"), &e);
	if (r->s.client >= 0) {
		r->s.prio = cfg->clients[r->s.client].priority;
		return 0;
	}
	limits_unidentified(r->w);
	if (e.status == 401)
		o->header(r->s.c, "WWW-Authenticate", "Bearer");
	req_fail(r, e.status, e.type, e.code, e.msg);
	return -1;
}

/* The candidate groups, by the routing policy (policy.c), within what the
 * client may use; -1 after answering. */
static int
req_candidates(struct req *r)
{
	const struct client_cfg *cl =
	    r->s.client >= 0 ? &r->w->cfg->clients[r->s.client] : NULL;
	struct policy_err e;
	struct policy_in in = {.body = &r->j,
	                       .doc = r->s.doc,
	                       .model = r->s.model,
	                       .proto = r->s.ig->id,
	                       .header = r->s.ops->get_header,
	                       .c = r->s.c,
	                       .client = cl ? cl->name : NULL,
	                       .client_region =
	                           cl && cl->region[0] ? cl->region : NULL,
	                       .allow = cl};

	if (policy_resolve(&r->pol, r->w->cfg, &in, r->s.groups, &r->s.ngroups,
	                   &e) == 0) {
		if (r->pol.priority >= 0)
			r->s.prio = r->pol.priority;
		return 0;
	}
	if (e.status == 403)
		limits_refused(r->w, r->s.client, CREF_FORBIDDEN);
	req_fail(r, e.status, e.type, e.code, e.msg);
	return -1;
}

/* The client's budgets and limits (limits.c); -1 after answering 429. */
static int
req_admit(struct req *r)
{
	struct limit_verdict v;
	char ra[24];

	if (r->s.client < 0)
		return 0;
	if (limits_admit(r->w, r->s.client, &v) == 0) {
		r->s.admitted = 1;
		return 0;
	}
	snprintf(ra, sizeof ra, "%" PRId64, v.retry_after_s);
	r->s.ops->header(r->s.c, "Retry-After", ra);
	req_fail(r, v.status, v.type, v.code, v.msg);
	return -1;
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

	if (json_parse_top(&r->j, body, len, r->s.ig->bulk_keys) == -1 ||
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
	if ((rc = req_opt_num(r, "num_retries", 0, 10, &v)) == -1)
		rc = req_opt_num(r, "retries", 0, 10, &v); /* LiteLLM's name */
	if (rc == 0)
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
			buf_add_hline(&r->fwd, *h, strlen(*h), v, strlen(v));
}

/* A fresh request id; see request.h. */
void
req_new_id(struct worker *w, char *id, size_t n)
{
	char t[48], *q = t + sizeof t;
	uint64_t k = ++w->next_id;
	unsigned pid;

	if (w->pid == 0)
		w->pid = (unsigned)getpid();
	pid = w->pid; /* "req-%x-%" PRIx64, without printf */
	do
		*--q = "0123456789abcdef"[k & 15];
	while ((k >>= 4) != 0);
	*--q = '-';
	do
		*--q = "0123456789abcdef"[pid & 15];
	while ((pid >>= 4) != 0);
	memcpy(q -= 4, "req-", 4);
	buf_copy(id, n, q, (size_t)(t + sizeof t - q));
}

/* Serve one client request whose body is in holder b. */
static void
req_begin(struct worker *w, const struct client_ops *ops, void *c,
          const struct ingress *ig, struct req_body *b)
{
	static const char oom[] =
	    "{\"error\":{\"message\":\"out of memory\",\"type\":"
	    "\"llmfd_error\",\"param\":null,\"code\":\"out_of_memory\"}}";
	struct req *r;

	if (b == NULL || (r = req_get(w)) == NULL) {
		if (b)
			up_hold_unref(&b->h);
		ops->header(c, "Retry-After", "1");
		ops->reply(c, 503, "application/json", oom, sizeof oom - 1);
		return;
	}
	LIST_INSERT_HEAD(&reqs, r, link);
	ninflight++;
	w->inflight++;
	memset(&r->s, 0, sizeof r->s);
	r->bh = b;
	r->blen = b->ncopy ? b->ncopy : b->eb ? evbuffer_get_length(b->eb) : 0;
	r->body = b->ncopy ? b->copy : r->blen ? req_body_run(b->eb) : "";
	r->s.ops = ops;
	r->s.c = c;
	ops->attach(c, r);
	r->s.ig = ig;
	r->s.phase = REQ_PICKING;
	r->s.t0_us = clock_us();
	r->s.d = r->s.prev_d = r->s.served = -1;
	r->s.ttft_us = -1;
	r->s.ra_ms = -1;
	r->s.cut_d = -1;
	r->s.client = -1;
	r->s.cost_nusd = -1;
	r->s.prio = PRIO_NORMAL;
	r->s.close_after = w->draining;
	req_new_id(w, r->s.id, sizeof r->s.id);
	req_fwd_headers(r);
	if (r->body == NULL) {
		req_fail(r, 503, "llmfd_error", "out_of_memory",
		         "out of memory");
		return;
	}
	if (req_identify(r) == -1 || req_parse(r, r->body, r->blen) == -1 ||
	    req_candidates(r) == -1 || req_admit(r) == -1)
		return;
	route_count_request(w, ig->id);
	req_arm(&r->ev_deadline, req_left_ms(r));
	req_next(r);
}

/* Serve one client request: its body copied. */
void
req_start(struct worker *w, const struct client_ops *ops, void *c,
          const struct ingress *ig, const char *body, size_t len)
{
	struct req_body *b = req_body_get();

	if (b && len > 0 && len <= REQ_COPY_BODY) {
		if (req_body_small(b, len))
			memcpy(b->copy, body, len);
		else {
			up_hold_unref(&b->h);
			b = NULL;
		}
	} else if (b && len > 0 &&
	           (req_body_eb(b) == NULL ||
	            evbuffer_add(b->eb, body, len) == -1)) {
		up_hold_unref(&b->h);
		b = NULL;
	}
	req_begin(w, ops, c, ig, b);
}

/* Serve one client request: its body taken from in without a copy. */
void
req_start_buf(struct worker *w, const struct client_ops *ops, void *c,
              const struct ingress *ig, struct evbuffer *in)
{
	struct req_body *b = req_body_get();

	if (b && req_body_take(b, in) == -1) {
		up_hold_unref(&b->h);
		b = NULL;
	}
	req_begin(w, ops, c, ig, b);
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

/* Recycled request objects kept. */
int
req_recycled(void)
{
	return nfree;
}

/* Free recycled request objects and body holders past REQ_IDLE_FREE. */
void
req_trim(void)
{
	struct req *r;
	struct req_body *b;

	while (nfree > REQ_IDLE_FREE && (r = free_reqs) != NULL) {
		free_reqs = r->next_free;
		nfree--;
		req_destroy(r);
	}
	while (nfree_bodies > REQ_IDLE_FREE && (b = free_bodies) != NULL) {
		free_bodies = b->next_free;
		nfree_bodies--;
		req_body_free(b);
	}
}

/* Worker exit: abandon requests still in flight and free every object.
 * Each one lets go of its client handle first, so no callback of the
 * connection (freed later by http.c) can reach a freed request. */
void
req_free_all(struct worker *w)
{
	struct req *r;
	struct req_body *b;

	(void)w;
	bodies_closing = 1; /* bodies still held are freed when let go */
	while ((r = LIST_FIRST(&reqs)) != NULL) {
		for (int i = 0; i < 2; i++)
			if (r->att[i])
				att_stop(r->att[i]);
		req_unhook(r);
		req_body_drop(r);
		LIST_REMOVE(r, link);
		ninflight--;
		req_destroy(r);
	}
	while ((r = free_reqs) != NULL) {
		free_reqs = r->next_free;
		req_destroy(r);
	}
	nfree = 0;
	while ((b = free_bodies) != NULL) {
		free_bodies = b->next_free;
		req_body_free(b);
	}
	nfree_bodies = 0;
	po_spare_free();
}
