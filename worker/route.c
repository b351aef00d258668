/* Routing: pick a deployment of a group by strategy from the shared health
 * table, and record each attempt's outcome there (counters, latency,
 * cooldown, circuit breaker, rate windows, retry budget). Every decision
 * reads the shared table, so limits hold across all workers. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/backoff.h"
#include "common/clock.h"
#include "common/fleet.h"
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

/* When the upstream's own rate-limit window of slot s (as its headers
 * last reported) refills, if it has no room left for a request of
 * est_tokens now: no requests left (less the attempts started since), or
 * fewer tokens than the request needs; else 0. */
static int64_t
route_upstream_full(struct slot_sh *s, long est_tokens, int64_t now)
{
	uint32_t f = atomic_load_explicit(&s->rl_flags, RLX);
	int64_t t;

	if (f == 0)
		return 0;
	t = atomic_load_explicit(&s->rl_req_reset_ms, RLX);
	if ((f & SHM_RL_REQ_LEFT) && t > now &&
	    atomic_load_explicit(&s->rl_req_left, RLX) -
	            (int64_t)atomic_load_explicit(&s->rl_req_since, RLX) <=
	        0)
		return t;
	t = atomic_load_explicit(&s->rl_tok_reset_ms, RLX);
	if ((f & SHM_RL_TOK_LEFT) && t > now &&
	    atomic_load_explicit(&s->rl_tok_left, RLX) <
	        (est_tokens > 0 ? est_tokens : 1))
		return t;
	return 0;
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
	uint64_t minute, rlim, tlim;

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
	if ((*back = route_upstream_full(s, est_tokens, now)) != 0)
		return SKIP_RATE;
	if (dc->rpm > 0 || dc->tpm > 0) {
		minute = wall_minute();
		rate_rotate(&s->rate_min, &s->req_cur, &s->req_prev,
		            &s->tok_cur, &s->tok_prev, minute);
		fleet_limits(w->shm->hdr, s, dc->rpm, dc->tpm, minute, &rlim,
		             &tlim);
		if (atomic_load_explicit(&s->req_cur, RLX) >= rlim ||
		    atomic_load_explicit(&s->tok_cur, RLX) >= tlim) {
			/* only this host's fleet grant is spent: back after
			 * the next top-up, not the next minute */
			*back = fleet_room(w->shm->hdr, s, dc->rpm, dc->tpm)
			            ? now + 2 * w->cfg->fleet_sync_ms
			            : next_minute_ms();
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

/* The share of the upstream's own reported limits left (1 when it
 * reports none, or its window has reset since). */
static double
upstream_headroom(struct slot_sh *s, int64_t now)
{
	uint32_t f = atomic_load_explicit(&s->rl_flags, RLX);
	double h = 1.0, x;
	int64_t lim;

	lim = atomic_load_explicit(&s->rl_req_limit, RLX);
	if ((f & SHM_RL_REQ_LEFT) && (f & SHM_RL_REQ_LIMIT) && lim > 0 &&
	    atomic_load_explicit(&s->rl_req_reset_ms, RLX) > now) {
		x = (double)(atomic_load_explicit(&s->rl_req_left, RLX) -
		             (int64_t)atomic_load_explicit(&s->rl_req_since,
		                                           RLX)) /
		    (double)lim;
		h = x < h ? x : h;
	}
	lim = atomic_load_explicit(&s->rl_tok_limit, RLX);
	if ((f & SHM_RL_TOK_LEFT) && (f & SHM_RL_TOK_LIMIT) && lim > 0 &&
	    atomic_load_explicit(&s->rl_tok_reset_ms, RLX) > now) {
		x = (double)atomic_load_explicit(&s->rl_tok_left, RLX) /
		    (double)lim;
		h = x < h ? x : h;
	}
	return h < 0 ? 0 : h;
}

/* The share of d's limits left: its rpm/tpm, and the upstream's own. */
static double
headroom(const struct deploy_cfg *dc, struct slot_sh *s)
{
	double h = upstream_headroom(s, clock_ms()), x;

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

/* What a request of est_tokens prompt tokens would cost on d by the price
 * table (USD per million tokens, times tokens): the prompt at the input
 * price plus d's mean answer so far (256 tokens before its first) at the
 * output price; HUGE_VAL when d's model has no price. */
static double
route_cost(struct worker *w, int d, long est_tokens)
{
	const struct deploy_cfg *dc = &w->cfg->deploy[d];
	const struct price_cfg *p;
	struct slot_sh *s = slot_of(w, d);
	uint64_t n = atomic_load_explicit(&s->successes, RLX);
	double out = 256;

	if (dc->price < 0)
		return HUGE_VAL;
	p = &w->cfg->prices[dc->price];
	if (n > 0)
		out = (double)atomic_load_explicit(&s->tokens_out, RLX) /
		      (double)n;
	return p->input_per_mtok * (double)(est_tokens > 0 ? est_tokens : 0) +
	       p->output_per_mtok * out;
}

/* d's latency EWMA in us (0 before its first sample: tried first). */
static double
route_lat(struct worker *w, int d, long est_tokens)
{
	(void)est_tokens;
	return (double)atomic_load_explicit(&slot_of(w, d)->lat_ewma_us, RLX);
}

/* Keep in out those of c[0..n) with the lowest key; returns how many. */
static int
route_lowest(struct worker *w, const int *c, int n,
             double (*key)(struct worker *, int, long), long est, int *out)
{
	double best = 0, v;
	int nb = 0;

	for (int i = 0; i < n; i++) {
		v = key(w, c[i], est);
		if (nb == 0 || v < best) {
			best = v;
			nb = 0;
		}
		if (v == best)
			out[nb++] = c[i];
	}
	return nb;
}

/* One of n equally good deployments: at random, or (tie_break "cost")
 * at random among the cheapest. */
static int
route_tie(struct worker *w, int tie, int *c, int n, long est)
{
	if (tie == TIE_COST && n > 1)
		n = route_lowest(w, c, n, route_cost, est, c);
	return c[rng_below(&w->rng, (uint64_t)n)];
}

/* Choose among n eligible deployments of g by strategy. */
static int
route_choose(struct worker *w, const struct group_cfg *g, const int *c, int n,
             long est)
{
	int best[CFG_MAX_DEPLOY], nb = 0, tie = cfg_eff_tie_break(w->cfg, g);
	double bv = 0, v;
	uint64_t total = 0, r;

	switch (cfg_eff_strategy(w->cfg, g)) {
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
		return route_tie(w, tie, best, nb, est);
	case STRAT_LATENCY:
		for (int i = 0; i < n; i++) /* explore the unsampled first */
			if (atomic_load_explicit(&slot_of(w, c[i])->lat_ewma_us,
			                         RLX) == 0)
				best[nb++] = c[i];
		if (nb)
			return route_tie(w, tie, best, nb, est);
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
		return route_tie(w, tie, best, nb, est);
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
		return route_tie(w, tie, best, nb, est);
	case STRAT_COST: /* the cheapest; ties by latency, then at random */
		nb = route_lowest(w, c, n, route_cost, est, best);
		nb = route_lowest(w, best, nb, route_lat, est, best);
		return best[rng_below(&w->rng, (uint64_t)nb)];
	default:
		return c[0];
	}
}

/* A 64-bit mix (splitmix64's finaliser). */
static uint64_t
mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* Rendezvous score of deployment d for session key k. */
static uint64_t
route_hrw_score(struct worker *w, uint64_t k, int d)
{
	uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a of the name */

	for (const char *p = w->cfg->deploy[d].name; *p; p++)
		h = (h ^ (unsigned char)*p) * 0x100000001b3ULL;
	return mix64(k ^ h);
}

/* The member of c[0..n) session k ranks highest (rendezvous hashing): a
 * session keeps its deployment while that one can take it, and when it
 * cannot, its sessions alone move, each to its next choice. */
static int
route_hrw(struct worker *w, uint64_t k, const int *c, int n)
{
	uint64_t best = 0, v;
	int d = c[0];

	for (int i = 0; i < n; i++)
		if ((v = route_hrw_score(w, k, c[i])) > best || i == 0) {
			best = v;
			d = c[i];
		}
	return d;
}

/* Count an affinity pick of d for session k in g: a hit when d is the
 * session's own deployment, else a move away from its own. */
static void
route_count_affinity(struct worker *w, const struct group_cfg *g, uint64_t k,
                     int d)
{
	int own = route_hrw(w, k, g->deploy, g->ndeploy);

	atomic_fetch_add_explicit(own == d ? &slot_of(w, d)->affinity_hits
	                                   : &slot_of(w, own)->affinity_moves,
	                          1, RLX);
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
	/* in a fleet, only the host holding the fleet's probe token probes */
	if (atomic_load(&s->fleet_gate) == FLEET_GATE_WAIT)
		return -1;
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

	uint64_t rlim, tlim;

	if (dc->rpm <= 0 && dc->tpm <= 0)
		return 0;
	fleet_limits(w->shm->hdr, s, dc->rpm, dc->tpm, wall_minute(), &rlim,
	             &tlim);
	if (atomic_fetch_add(&s->req_cur, 1) >= rlim) {
		atomic_fetch_sub(&s->req_cur, 1);
		atomic_fetch_add_explicit(&s->rate_refused, 1, RLX);
		return -1;
	}
	return 0;
}

/* Pick the next deployment of group g that is not in `tried`. */
int
route_pick(struct worker *w, const struct group_cfg *g, const uint64_t *tried,
           long est_tokens, uint64_t session, int64_t *soonest, int *probe)
{
	int ok[CFG_MAX_DEPLOY], slow[CFG_MAX_DEPLOY], nok, nslow, d, why;
	int aff = g->affinity == AFFINITY_SESSION && session != 0;
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
				if (why == SKIP_RATE)
					atomic_fetch_add_explicit(
					    &slot_of(w, d)->rate_refused, 1,
					    RLX);
				if (back && (*soonest == 0 || back < *soonest))
					*soonest = back;
				continue;
			}
			if (route_degraded(w, d) && !aff)
				slow[nslow++] = d;
			else
				ok[nok++] = d;
		}
		if (nok + nslow == 0)
			return -1;
		if (aff)
			d = route_hrw(w, session, ok, nok);
		else
			d = nok ? route_choose(w, g, ok, nok, est_tokens)
			        : route_choose(w, g, slow, nslow, est_tokens);
		if ((*probe = route_take_probe(w, d, now)) != -1 &&
		    route_reserve(w, d) == 0) {
			if (aff)
				route_count_affinity(w, g, session, d);
			return d;
		}
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
	if (atomic_load_explicit(&s->rl_flags, RLX) != 0)
		atomic_fetch_add_explicit(&s->rl_req_since, 1, RLX);
}

/* Store what the upstream's rate-limit headers in r say about d (nothing
 * when it sent none): the requests and tokens left, the limits, and when
 * each window resets (1 s from now when it does not say). */
void
route_rate_headers(struct worker *w, int d, const struct up_resp *r)
{
	struct slot_sh *s = slot_of(w, d);
	int64_t now = clock_ms();
	uint32_t f = 0;

	if (r->rl_req_left < 0 && r->rl_tok_left < 0)
		return;
	f |= r->rl_req_left >= 0 ? SHM_RL_REQ_LEFT : 0;
	f |= r->rl_req_limit >= 0 ? SHM_RL_REQ_LIMIT : 0;
	f |= r->rl_tok_left >= 0 ? SHM_RL_TOK_LEFT : 0;
	f |= r->rl_tok_limit >= 0 ? SHM_RL_TOK_LIMIT : 0;
	atomic_store_explicit(&s->rl_req_left, r->rl_req_left, RLX);
	atomic_store_explicit(&s->rl_req_limit, r->rl_req_limit, RLX);
	atomic_store_explicit(
	    &s->rl_req_reset_ms,
	    now + (r->rl_req_reset_ms >= 0 ? r->rl_req_reset_ms : 1000), RLX);
	atomic_store_explicit(&s->rl_tok_left, r->rl_tok_left, RLX);
	atomic_store_explicit(&s->rl_tok_limit, r->rl_tok_limit, RLX);
	atomic_store_explicit(
	    &s->rl_tok_reset_ms,
	    now + (r->rl_tok_reset_ms >= 0 ? r->rl_tok_reset_ms : 1000), RLX);
	atomic_store_explicit(&s->rl_req_since, 0, RLX);
	atomic_store_explicit(&s->rl_flags, f, RLX);
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
	if (ra_ms > 0 && (cls == EC_RATE_LIMITED || cls == EC_TRANSIENT))
		cool = ra_ms; /* the upstream said when: no longer than that */
	else if (ra_ms > cool)
		cool = ra_ms;
	start = atomic_load_explicit(&s->fail_win_start_ms, RLX);
	if (now - start > FAIL_WIN) {
		atomic_store_explicit(&s->fail_win_start_ms, now, RLX);
		atomic_store_explicit(&s->fail_win_count, 0, RLX);
	}
	n = atomic_fetch_add_explicit(&s->fail_win_count, 1, RLX) + 1;
	until = atomic_load_explicit(&s->cooldown_until_ms, RLX);
	st = atomic_load(&s->circuit);
	/* a failed half-open probe re-opens the circuit, which alone says
	 * when to probe again: no cooldown on top of it */
	if (cool > 0 && st != CIRCUIT_HALF_OPEN &&
	    ((int)n > cfg->allowed_fails || until > now || cls == EC_QUOTA ||
	     (cls == EC_RATE_LIMITED && ra_ms > 0)))
		route_cool(w, d, now + cool);
	consec = atomic_fetch_add_explicit(&s->consec_fail, 1, RLX) + 1;
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

/* Success: clear the failure streak and the failure window (a lapsed
 * cooldown closes: the next failure starts counting afresh) and close a
 * half-open circuit. */
static void
route_ok_health(struct worker *w, int d)
{
	struct slot_sh *s = slot_of(w, d);
	uint32_t st = CIRCUIT_HALF_OPEN;

	atomic_store_explicit(&s->consec_fail, 0, RLX);
	if (atomic_load_explicit(&s->fail_win_count, RLX) != 0 &&
	    atomic_load_explicit(&s->cooldown_until_ms, RLX) <= clock_ms())
		atomic_store_explicit(&s->fail_win_count, 0, RLX);
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

/* When d's cooldown or open circuit ends (0: neither holds it off). */
int64_t
route_back_ms(struct worker *w, int d)
{
	struct slot_sh *s = slot_of(w, d);
	int64_t now = clock_ms(), back = 0, t;

	t = atomic_load_explicit(&s->cooldown_until_ms, RLX);
	if (t > now)
		back = t;
	t = atomic_load_explicit(&s->circuit_until_ms, RLX);
	if (atomic_load_explicit(&s->circuit, RLX) == CIRCUIT_OPEN && t > now &&
	    t > back)
		back = t;
	return back;
}

/* Whether d is held off by a rate limit rather than by failures. */
int
route_limited(struct worker *w, int d)
{
	int64_t back, wall;
	int why = route_check(w, d, 0, clock_ms(), &back, 0), status, cls;
	char t[SHM_ERR_MAX];

	if (why == SKIP_RATE)
		return 1;
	if (why != SKIP_COOLING || shm_get_error(slot_of(w, d), t, sizeof t,
	                                         &status, &cls, &wall) == -1)
		return 0;
	return cls == EC_RATE_LIMITED || cls == EC_QUOTA;
}

/* A malformed stream event from d was skipped. */
void
route_count_bad_event(struct worker *w, int d)
{
	atomic_fetch_add_explicit(&slot_of(w, d)->bad_events, 1, RLX);
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
