/* Routing: pick a deployment of a group by strategy from the shared health
 * table, and record each attempt's outcome there (counters, latency,
 * cooldown, circuit breaker, rate windows, retry budget). Every decision
 * reads the shared table, so limits hold across all workers. */
#include <stdio.h>
#include <string.h>

#include "common/backoff.h"
#include "common/clock.h"
#include "common/log.h"
#include "worker/route.h"
#include "worker/worker.h"

#define RLX       memory_order_relaxed
#define FAIL_WIN  60000
#define QUOTA_MUL 10

static const char *const skip_names[] = {
    [SKIP_NONE] = "",
    [SKIP_COOLING] = "cooling down",
    [SKIP_CIRCUIT] = "circuit open",
    [SKIP_RATE] = "at rate limit",
    [SKIP_DRAINED] = "drained",
    [SKIP_WEIGHT0] = "weight 0",
    [SKIP_CONTEXT] = "request exceeds context window",
    [SKIP_TRIED] = "already tried",
    [SKIP_UNSUPPORTED] = "provider cannot serve this request"};

/* Why a deployment was skipped, as text. */
const char *
route_skip_name(int s)
{
	return (s >= 0 && s <= SKIP_UNSUPPORTED) ? skip_names[s] : "?";
}

static struct slot_sh *
slot_of(struct worker *w, int d)
{
	return &w->shm->slots[w->slot_of[d]];
}

/* Start a new wall-clock minute in a pair of cur/prev counters. */
static void
rate_rotate(au64 *minp, au64 *cur1, au64 *prev1, au64 *cur2, au64 *prev2,
            uint64_t minute)
{
	uint64_t old = atomic_load_explicit(minp, RLX);

	if (old == minute ||
	    !atomic_compare_exchange_strong(minp, &old, minute))
		return;
	atomic_store_explicit(prev1,
	                      old + 1 == minute ? atomic_exchange(cur1, 0)
	                                        : (atomic_store(cur1, 0), 0),
	                      RLX);
	if (cur2)
		atomic_store_explicit(prev2,
		                      old + 1 == minute
		                          ? atomic_exchange(cur2, 0)
		                          : (atomic_store(cur2, 0), 0),
		                      RLX);
}

static uint64_t
wall_minute(void)
{
	return (uint64_t)(clock_wall_ms() / 60000);
}

/* Monotonic ms at which the next wall-clock minute starts. */
static int64_t
next_minute_ms(void)
{
	int64_t wall = clock_wall_ms();

	return clock_ms() + (60000 - wall % 60000);
}

/* Whether d is usable now (its cooldown ignored if nocool); SKIP_* reason
 * otherwise, with *back set to the monotonic time it is expected back (0 if
 * unknown). */
static int
route_check(struct worker *w, int d, long est_tokens, int64_t now,
            int64_t *back, int nocool)
{
	const struct deploy_cfg *dc = &w->cfg->deploy[d];
	struct slot_sh *s = slot_of(w, d);
	uint32_t circ = atomic_load_explicit(&s->circuit, RLX);
	int64_t until;
	uint64_t minute;

	*back = 0;
	if (atomic_load_explicit(&s->admin, RLX) == ADMIN_DRAINED)
		return SKIP_DRAINED;
	if (shm_weight(s) == 0)
		return SKIP_WEIGHT0;
	if (dc->context_window > 0 && est_tokens > dc->context_window)
		return SKIP_CONTEXT;
	until = atomic_load_explicit(&s->circuit_until_ms, RLX);
	if (circ != CIRCUIT_CLOSED && now < until) {
		*back = circ == CIRCUIT_OPEN ? until : 0;
		return SKIP_CIRCUIT;
	}
	until = atomic_load_explicit(&s->cooldown_until_ms, RLX);
	if (until > now && !nocool) {
		*back = until;
		return SKIP_COOLING;
	}
	if (dc->rpm > 0 || dc->tpm > 0) {
		minute = wall_minute();
		rate_rotate(&s->rate_min, &s->req_cur, &s->req_prev,
		            &s->tok_cur, &s->tok_prev, minute);
		if ((dc->rpm > 0 && atomic_load_explicit(&s->req_cur, RLX) >=
		                        (uint64_t)dc->rpm) ||
		    (dc->tpm > 0 && atomic_load_explicit(&s->tok_cur, RLX) >=
		                        (uint64_t)dc->tpm)) {
			*back = next_minute_ms();
			return SKIP_RATE;
		}
	}
	return SKIP_NONE;
}

/* Why d cannot be picked now: route_check's reason, without side effects
 * beyond rotating its rate window. */
int
route_why(struct worker *w, int d, long est_tokens)
{
	int64_t back;
	int why = route_check(w, d, est_tokens, clock_ms(), &back, 0);

	if (why != SKIP_NONE)
		return why;
	/* passed every check but lost a race: its half-open probe is held by
	 * another request, or its last rpm slot went elsewhere */
	return atomic_load_explicit(&slot_of(w, d)->circuit, RLX) !=
	               CIRCUIT_CLOSED
	           ? SKIP_CIRCUIT
	           : SKIP_RATE;
}

/* Degraded: its TTFT p95 is over max_ttft_p95_ms (per deployment or global). */
static int
route_degraded(struct worker *w, int d)
{
	const struct deploy_cfg *dc = &w->cfg->deploy[d];
	int lim = cfg_eff_max_ttft_p95_ms(w->cfg, dc);
	struct slot_sh *s = slot_of(w, d);

	if (lim <= 0 || atomic_load_explicit(&s->ttft.count, RLX) < 5)
		return 0;
	return shm_hist_quantile(&s->ttft, 0.95) > (int64_t)lim * 1000;
}

static double
headroom(const struct deploy_cfg *dc, struct slot_sh *s)
{
	double h = 1.0, x;

	if (dc->rpm > 0) {
		x = 1.0 - (double)atomic_load_explicit(&s->req_cur, RLX) /
		              (double)dc->rpm;
		h = x < h ? x : h;
	}
	if (dc->tpm > 0) {
		x = 1.0 - (double)atomic_load_explicit(&s->tok_cur, RLX) /
		              (double)dc->tpm;
		h = x < h ? x : h;
	}
	return h;
}

/* Choose among n eligible deployments by strategy. */
static int
route_choose(struct worker *w, int strat, const int *c, int n)
{
	int best[CFG_MAX_DEPLOY], nb = 0;
	double bv = 0, v;
	uint64_t total = 0, r;

	switch (strat) {
	case STRAT_WEIGHTED:
		for (int i = 0; i < n; i++)
			total += (uint64_t)shm_weight(slot_of(w, c[i]));
		if (total == 0)
			return c[0];
		r = rng_below(&w->rng, total);
		for (int i = 0; i < n; i++) {
			uint64_t wt = (uint64_t)shm_weight(slot_of(w, c[i]));
			if (r < wt)
				return c[i];
			r -= wt;
		}
		return c[n - 1];
	case STRAT_LEAST_BUSY:
		for (int i = 0; i < n; i++) {
			v = shm_inflight(slot_of(w, c[i]));
			if (nb == 0 || v < bv) {
				bv = v;
				nb = 0;
			}
			if (v == bv)
				best[nb++] = c[i];
		}
		return best[rng_below(&w->rng, (uint64_t)nb)];
	case STRAT_LATENCY:
		for (int i = 0; i < n; i++) /* explore the unsampled first */
			if (atomic_load_explicit(&slot_of(w, c[i])->lat_ewma_us,
			                         RLX) == 0)
				best[nb++] = c[i];
		if (nb)
			return best[rng_below(&w->rng, (uint64_t)nb)];
		for (int i = 0; i < n; i++) {
			v = (double)atomic_load_explicit(
			    &slot_of(w, c[i])->lat_ewma_us, RLX);
			if (i == 0 || v < bv)
				bv = v;
		}
		for (int i = 0; i < n; i++)
			if ((double)atomic_load_explicit(
			        &slot_of(w, c[i])->lat_ewma_us, RLX) <=
			    bv * (1.0 + w->cfg->latency_buffer))
				best[nb++] = c[i];
		return best[rng_below(&w->rng, (uint64_t)nb)];
	case STRAT_USAGE:
		for (int i = 0; i < n; i++) {
			v = headroom(&w->cfg->deploy[c[i]], slot_of(w, c[i]));
			if (nb == 0 || v > bv) {
				bv = v;
				nb = 0;
			}
			if (v == bv)
				best[nb++] = c[i];
		}
		return best[rng_below(&w->rng, (uint64_t)nb)];
	default:
		return c[0];
	}
}

/* Take the half-open probe for d if its circuit is open and due; 1 if this
 * request is the probe, 0 if the circuit is closed, -1 if another request
 * holds the probe. The probe is the CAS of circuit_until_ms from the due
 * deadline we read to the probe's own deadline: of the requests (in any
 * worker) that saw the same due deadline, exactly one wins. */
static int
route_take_probe(struct worker *w, int d, int64_t now)
{
	struct slot_sh *s = slot_of(w, d);
	int64_t until = atomic_load(&s->circuit_until_ms);

	if (atomic_load(&s->circuit) == CIRCUIT_CLOSED)
		return 0;
	/* until is 0 for a moment while another worker opens the circuit; a
	 * probe that never reports (worker died) is retaken after its
	 * deadline */
	if (until == 0 || now < until ||
	    !atomic_compare_exchange_strong(&s->circuit_until_ms, &until,
	                                    now + w->cfg->timeout_ms + 1000))
		return -1;
	atomic_store(&s->circuit, CIRCUIT_HALF_OPEN);
	shm_event_add(w->shm, SHM_EV_CIRCUIT_HALF_OPEN, w->slot_of[d],
	              w->cfg->deploy[d].name);
	return 1;
}

/* Give back a probe that was not used: the circuit is open and due again. */
static void
route_put_probe(struct worker *w, int d)
{
	struct slot_sh *s = slot_of(w, d);

	atomic_store(&s->circuit, CIRCUIT_OPEN);
	atomic_store(&s->circuit_until_ms, clock_ms());
}

/* Reserve one request of d's rpm for this minute; -1 if it is at its limit. */
static int
route_reserve(struct worker *w, int d)
{
	const struct deploy_cfg *dc = &w->cfg->deploy[d];
	struct slot_sh *s = slot_of(w, d);

	if (dc->rpm <= 0 && dc->tpm <= 0)
		return 0;
	if (atomic_fetch_add(&s->req_cur, 1) >=
	    (uint64_t)(dc->rpm > 0 ? dc->rpm : INT64_MAX)) {
		atomic_fetch_sub(&s->req_cur, 1);
		return -1;
	}
	return 0;
}

/* Pick the next deployment of group g that is not in `tried`. */
int
route_pick(struct worker *w, const struct group_cfg *g, const uint64_t *tried,
           long est_tokens, int64_t *soonest, int *probe)
{
	int ok[CFG_MAX_DEPLOY], slow[CFG_MAX_DEPLOY], nok, nslow, d, why;
	int strat = cfg_eff_strategy(w->cfg, g);
	int64_t now = clock_ms(), back;
	uint64_t skip[CFG_MAX_DEPLOY / 64] = {0};

	*soonest = 0;
	*probe = 0;
	for (;;) {
		nok = nslow = 0;
		for (int i = 0; i < g->ndeploy; i++) {
			d = g->deploy[i];
			if ((tried[d / 64] | skip[d / 64]) & (1ULL << (d % 64)))
				continue;
			why = route_check(w, d, est_tokens, now, &back, 0);
			if (why != SKIP_NONE) {
				if (why == SKIP_COOLING ||
				    why == SKIP_CIRCUIT || why == SKIP_RATE)
					atomic_fetch_add_explicit(
					    &slot_of(w, d)->skipped, 1, RLX);
				if (back && (*soonest == 0 || back < *soonest))
					*soonest = back;
				continue;
			}
			if (route_degraded(w, d))
				slow[nslow++] = d;
			else
				ok[nok++] = d;
		}
		if (nok + nslow == 0)
			return -1;
		d = nok ? route_choose(w, strat, ok, nok)
		        : route_choose(w, strat, slow, nslow);
		if ((*probe = route_take_probe(w, d, now)) != -1 &&
		    route_reserve(w, d) == 0)
			return d;
		if (*probe == 1) /* lost the rate race: give the probe back */
			route_put_probe(w, d);
		*probe = 0;
		skip[d / 64] |= 1ULL << (d % 64);
		atomic_fetch_add_explicit(&slot_of(w, d)->skipped, 1, RLX);
	}
}

/* A group's only member may be tried although it is cooling down (no
 * self-inflicted outage), but not past anything else that excludes it:
 * drained, weight 0, context window, open circuit (or its probe), rate
 * limit. 0 with the rpm reserved and *probe set as route_pick does, or -1. */
int
route_force(struct worker *w, int d, long est_tokens, int *probe)
{
	int64_t now = clock_ms(), back;

	*probe = 0;
	if (route_check(w, d, est_tokens, now, &back, 1) != SKIP_NONE ||
	    (*probe = route_take_probe(w, d, now)) == -1) {
		*probe = 0;
		return -1;
	}
	if (route_reserve(w, d) == -1) {
		if (*probe == 1)
			route_put_probe(w, d);
		*probe = 0;
		return -1;
	}
	return 0;
}

/* An attempt on d begins. */
void
route_attempt_start(struct worker *w, int d)
{
	struct slot_sh *s = slot_of(w, d);

	atomic_fetch_add_explicit(&s->requests, 1, RLX);
	atomic_fetch_add_explicit(&s->inflight[w->index], 1, RLX);
}

static void
ewma(au64 *v, int64_t x)
{
	uint64_t old = atomic_load_explicit(v, RLX);

	atomic_store_explicit(
	    v, old ? old - old / 8 + (uint64_t)x / 8 : (uint64_t)x, RLX);
}

/* Start or extend d's cooldown to at least `until`. */
static void
route_cool(struct worker *w, int d, int64_t until)
{
	struct slot_sh *s = slot_of(w, d);
	int64_t cur = atomic_load(&s->cooldown_until_ms);
	int64_t now = clock_ms();
	char text[160];

	while (cur < until)
		if (atomic_compare_exchange_weak(&s->cooldown_until_ms, &cur,
		                                 until))
			break;
	if (cur >= until)
		return;
	if (cur <= now) {
		atomic_fetch_add_explicit(&s->cooldowns, 1, RLX);
		snprintf(text, sizeof text, "%s cooling down for %.1fs",
		         w->cfg->deploy[d].name,
		         (double)(until - now) / 1000.0);
		shm_event_add(w->shm, SHM_EV_COOLDOWN_START, w->slot_of[d],
		              text);
		log_info("%s", text);
	}
}

/* Count a failure toward the cooldown window and the circuit breaker. */
static void
route_fail_health(struct worker *w, int d, enum errclass cls, int64_t ra_ms)
{
	const struct cfg *cfg = w->cfg;
	struct slot_sh *s = slot_of(w, d);
	int64_t now = clock_ms(), start, until;
	uint32_t n, consec, st;
	int64_t cool = (int64_t)cfg->cooldown_s * 1000;

	if (cls == EC_QUOTA)
		cool *= QUOTA_MUL;
	if (ra_ms > cool)
		cool = ra_ms;
	start = atomic_load_explicit(&s->fail_win_start_ms, RLX);
	if (now - start > FAIL_WIN) {
		atomic_store_explicit(&s->fail_win_start_ms, now, RLX);
		atomic_store_explicit(&s->fail_win_count, 0, RLX);
	}
	n = atomic_fetch_add_explicit(&s->fail_win_count, 1, RLX) + 1;
	until = atomic_load_explicit(&s->cooldown_until_ms, RLX);
	if (cool > 0 &&
	    ((int)n > cfg->allowed_fails || until > now || cls == EC_QUOTA ||
	     (cls == EC_RATE_LIMITED && ra_ms > 0)))
		route_cool(w, d, now + cool);
	consec = atomic_fetch_add_explicit(&s->consec_fail, 1, RLX) + 1;
	st = atomic_load(&s->circuit);
	if (st == CIRCUIT_HALF_OPEN ||
	    (st == CIRCUIT_CLOSED && cfg->circuit_failure_threshold > 0 &&
	     (int)consec >= cfg->circuit_failure_threshold)) {
		int64_t win = atomic_load(&s->circuit_window_ms);

		win = st == CIRCUIT_HALF_OPEN
		          ? win * 2
		          : (int64_t)cfg->circuit_recovery_s * 1000;
		if (win > (int64_t)cfg->circuit_max_s * 1000)
			win = (int64_t)cfg->circuit_max_s * 1000;
		if (win <= 0)
			win = 1000;
		if (!atomic_compare_exchange_strong(&s->circuit, &st,
		                                    CIRCUIT_OPEN))
			return;
		atomic_store(&s->circuit_window_ms, win);
		atomic_store(&s->circuit_until_ms, now + win);
		atomic_fetch_add_explicit(&s->circuit_opens, 1, RLX);
		char text[160];
		snprintf(text, sizeof text, "%s circuit open for %.1fs",
		         cfg->deploy[d].name, (double)win / 1000.0);
		shm_event_add(w->shm, SHM_EV_CIRCUIT_OPEN, w->slot_of[d], text);
		log_info("%s", text);
	}
}

/* Success: clear the failure streak and close a half-open circuit. */
static void
route_ok_health(struct worker *w, int d)
{
	struct slot_sh *s = slot_of(w, d);
	uint32_t st = CIRCUIT_HALF_OPEN;

	atomic_store_explicit(&s->consec_fail, 0, RLX);
	if (atomic_load_explicit(&s->circuit, RLX) != CIRCUIT_CLOSED &&
	    atomic_compare_exchange_strong(&s->circuit, &st, CIRCUIT_CLOSED)) {
		atomic_store(&s->circuit_window_ms, 0);
		atomic_store(&s->circuit_until_ms, 0);
		shm_event_add(w->shm, SHM_EV_CIRCUIT_CLOSE, w->slot_of[d],
		              w->cfg->deploy[d].name);
		log_info("%s circuit closed", w->cfg->deploy[d].name);
	}
}

/* An attempt on d ended with class cls. */
void
route_attempt_end(struct worker *w, int d, enum errclass cls, int64_t lat_us,
                  int64_t ttft_us, const struct usage *u, int64_t ra_ms,
                  const char *errtext, int status)
{
	struct slot_sh *s = slot_of(w, d);

	atomic_fetch_sub_explicit(&s->inflight[w->index], 1, RLX);
	if (u && (u->prompt_tokens || u->completion_tokens)) {
		atomic_fetch_add_explicit(&s->tokens_in,
		                          (uint64_t)u->prompt_tokens, RLX);
		atomic_fetch_add_explicit(&s->tokens_out,
		                          (uint64_t)u->completion_tokens, RLX);
		atomic_fetch_add_explicit(
		    &s->tok_cur,
		    (uint64_t)(u->prompt_tokens + u->completion_tokens), RLX);
	}
	if (cls == EC_CANCELLED) {
		atomic_fetch_add_explicit(&s->failures[cls], 1, RLX);
		if (atomic_load(&s->circuit) == CIRCUIT_HALF_OPEN)
			route_put_probe(w, d);
		return;
	}
	if (ttft_us >= 0) {
		shm_hist_add(&s->ttft, ttft_us);
		ewma(&s->ttft_ewma_us, ttft_us);
	}
	if (cls == EC_OK) {
		atomic_fetch_add_explicit(&s->successes, 1, RLX);
		shm_hist_add(&s->lat, lat_us);
		ewma(&s->lat_ewma_us, ttft_us >= 0 ? ttft_us : lat_us);
		route_ok_health(w, d);
		return;
	}
	atomic_fetch_add_explicit(&s->failures[cls], 1, RLX);
	if (errtext)
		shm_set_error(s, status, cls, errtext);
	switch (cls) {
	case EC_TRANSIENT:
	case EC_RATE_LIMITED:
	case EC_AUTH:
	case EC_QUOTA:
	case EC_NOT_FOUND:
		route_fail_health(w, d, cls, ra_ms);
		break;
	default: /* the request's fault, not the deployment's */
		if (atomic_load(&s->circuit) == CIRCUIT_HALF_OPEN)
			route_ok_health(w, d);
		break;
	}
}

static void
budget_rotate(struct worker *w)
{
	struct shm_hdr_sh *h = w->shm->hdr;

	rate_rotate(&h->budget_min, &h->budget_req_cur, &h->budget_req_prev,
	            &h->budget_retry_cur, &h->budget_retry_prev, wall_minute());
}

/* Count one client request for the retry budget. */
void
route_count_request(struct worker *w, int proto)
{
	budget_rotate(w);
	if (proto >= 0 && proto < SHM_NPROTO)
		atomic_fetch_add_explicit(&w->shm->hdr->requests_proto[proto],
		                          1, RLX);
	atomic_fetch_add_explicit(&w->shm->hdr->budget_req_cur, 1, RLX);
	atomic_fetch_add_explicit(&w->shm->hdr->requests_total, 1, RLX);
}

/* Spend one retry from the daemon-wide budget if it has room. */
int
route_retry_allowed(struct worker *w)
{
	struct shm_hdr_sh *h = w->shm->hdr;
	double reqs, retries;

	budget_rotate(w);
	reqs = (double)(atomic_load_explicit(&h->budget_req_cur, RLX) +
	                atomic_load_explicit(&h->budget_req_prev, RLX));
	retries = (double)(atomic_load_explicit(&h->budget_retry_cur, RLX) +
	                   atomic_load_explicit(&h->budget_retry_prev, RLX));
	if (retries >=
	    w->cfg->retry_budget_ratio * reqs + w->cfg->retry_budget_floor) {
		atomic_fetch_add_explicit(&h->budget_denied, 1, RLX);
		return 0;
	}
	atomic_fetch_add_explicit(&h->budget_retry_cur, 1, RLX);
	return 1;
}

/* A request moved from `from` to `to`: count it on both and log an event. */
void
route_count_fallback(struct worker *w, int from, int to, const char *id)
{
	char t[200];

	if (from < 0 || from == to)
		return;
	atomic_fetch_add_explicit(&slot_of(w, from)->fallbacks_from, 1, RLX);
	atomic_fetch_add_explicit(&slot_of(w, to)->fallbacks_to, 1, RLX);
	snprintf(t, sizeof t, "%s %s -> %s", id, w->cfg->deploy[from].name,
	         w->cfg->deploy[to].name);
	shm_event_add(w->shm, SHM_EV_FALLBACK, w->slot_of[to], t);
}

/* A retry on d was scheduled. */
void
route_count_retry(struct worker *w, int d)
{
	atomic_fetch_add_explicit(&slot_of(w, d)->retries, 1, RLX);
}

/* The group's fixed hedge delay, or d's TTFT p95 once it has 5 samples. */
int64_t
route_hedge_delay(struct worker *w, const struct group_cfg *g, int d)
{
	struct slot_sh *s = slot_of(w, d);

	if (g->hedge_after_ms > 0)
		return g->hedge_after_ms;
	if (g->hedge_p95 && atomic_load_explicit(&s->ttft.count, RLX) >= 5)
		return shm_hist_quantile(&s->ttft, 0.95) / 1000 + 1;
	return -1;
}
