/* Per-client limits and spend in the shared table (see limits.h). Counters
 * are relaxed atomics; a limit is taken by adding first and giving back
 * when over, so two workers racing for the last unit may both be refused
 * but never both admitted. Without the table's client records (the engine
 * unit tests) every request is admitted and nothing is counted. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/spend.h"
#include "worker/limits.h"
#include "worker/provider.h"
#include "worker/worker.h"

#define RLX memory_order_relaxed

/* The table record of client ci, or NULL. */
static struct client_sh *
lim_rec(struct worker *w, int ci)
{
	if (w->client_slot == NULL || ci < 0 || ci >= w->cfg->nclient ||
	    w->client_slot[ci] < 0)
		return NULL;
	return &w->shm->clients[w->client_slot[ci]];
}

/* Map each configured client to its table record. */
int
limits_init(struct worker *w)
{
	const struct cfg *cfg = w->cfg;

	w->client_slot = calloc((size_t)cfg->nclient + 1, sizeof(int));
	if (w->client_slot == NULL)
		return -1;
	for (int i = 0; i < cfg->nclient; i++)
		if ((w->client_slot[i] =
		         shm_find_client(w->shm, cfg->clients[i].name)) < 0) {
			log_warnx("client %s has no table record",
			          cfg->clients[i].name);
			return -1;
		}
	return 0;
}

/* Start period `now` in *per, zeroing *val when it changes. */
static void
lim_rotate(au64 *per, au64 *val, uint64_t now)
{
	uint64_t old = atomic_load_explicit(per, RLX);

	if (old < now && atomic_compare_exchange_strong(per, &old, now))
		atomic_store_explicit(val, 0, RLX);
}

/* Start the wall-clock minute (of wall, ms) in the client's rpm/tpm
 * window. */
static void
lim_minute(struct client_sh *s, int64_t wall)
{
	uint64_t m = (uint64_t)(wall / 60000),
	         old = atomic_load_explicit(&s->rate_min, RLX);

	if (old == m || !atomic_compare_exchange_strong(&s->rate_min, &old, m))
		return;
	atomic_store_explicit(
	    &s->req_prev, old + 1 == m ? atomic_exchange(&s->req_cur, 0) : 0,
	    RLX);
	atomic_store_explicit(
	    &s->tok_prev, old + 1 == m ? atomic_exchange(&s->tok_cur, 0) : 0,
	    RLX);
	if (old + 1 != m) {
		atomic_store_explicit(&s->req_cur, 0, RLX);
		atomic_store_explicit(&s->tok_cur, 0, RLX);
	}
}

/* Seconds until wall-clock time until_ms (at least 1). */
static int64_t
lim_secs_to(int64_t until_ms)
{
	int64_t ms = until_ms - clock_wall_ms();

	return ms > 1000 ? (ms + 999) / 1000 : 1;
}

/* Fill v as a 429 for reason and return -1. */
static int
lim_refuse(struct client_sh *s, struct limit_verdict *v, int reason,
           const char *code, int64_t retry_s)
{
	v->status = 429;
	v->type = "rate_limit_error";
	v->code = code;
	v->reason = reason;
	v->retry_after_s = retry_s;
	atomic_fetch_add_explicit(&s->refused[reason], 1, RLX);
	return -1;
}

/* A budget of limit nusd over a period ending at end_ms: -1 with v when
 * spent is at or past it. */
static int
lim_budget(const struct client_cfg *c, struct client_sh *s, const char *what,
           double usd, uint64_t spent, int64_t end_ms, struct limit_verdict *v)
{
	char lim[32], got[32], when[32];

	if (usd <= 0 || (double)spent < usd * 1e9)
		return 0;
	spend_fmt_usd(lim, sizeof lim, (uint64_t)llround(usd * 1e9));
	spend_fmt_usd(got, sizeof got, spent);
	spend_fmt_time(when, sizeof when, end_ms);
	snprintf(v->msg, sizeof v->msg,
	         "the %s budget of $%s for client '%s' is spent ($%s); it "
	         "resets at %s",
	         what, lim, c->name, got, when);
	return lim_refuse(s, v, CREF_BUDGET, "budget_exceeded",
	                  lim_secs_to(end_ms));
}

/* The client's budgets at wall (ms): the monthly one first (its reset is
 * later). */
static int
lim_budgets(const struct client_cfg *c, struct client_sh *s, int64_t wall,
            struct limit_verdict *v)
{
	lim_rotate(&s->day, &s->spend_day, spend_day(wall));
	lim_rotate(&s->month, &s->spend_month, spend_month(wall));
	if (lim_budget(c, s, "monthly", c->monthly_budget_usd,
	               atomic_load_explicit(&s->spend_month, RLX),
	               spend_month_end_ms(wall), v) == -1)
		return -1;
	return lim_budget(c, s, "daily", c->daily_budget_usd,
	                  atomic_load_explicit(&s->spend_day, RLX),
	                  spend_day_end_ms(wall), v);
}

/* The client's rate limits: tpm (as counted so far), then max_concurrent
 * and rpm, each taken by adding and given back when over. */
static int
lim_rates(struct worker *w, const struct client_cfg *c, struct client_sh *s,
          int64_t wall, struct limit_verdict *v)
{
	int64_t next = (wall / 60000 + 1) * 60000;

	lim_minute(s, wall);
	if (c->tpm > 0 &&
	    atomic_load_explicit(&s->tok_cur, RLX) >= (uint64_t)c->tpm) {
		snprintf(v->msg, sizeof v->msg,
		         "client '%s' used its %ld tokens per minute", c->name,
		         c->tpm);
		return lim_refuse(s, v, CREF_TPM, "client_rate_limited",
		                  lim_secs_to(next));
	}
	atomic_fetch_add_explicit(&s->inflight[w->index], 1, RLX);
	if (c->max_concurrent > 0 &&
	    shm_client_inflight(s) > c->max_concurrent) {
		atomic_fetch_sub_explicit(&s->inflight[w->index], 1, RLX);
		snprintf(v->msg, sizeof v->msg,
		         "client '%s' has %d requests in flight, its limit",
		         c->name, c->max_concurrent);
		return lim_refuse(s, v, CREF_CONCURRENT, "concurrency_limit",
		                  1);
	}
	if (c->rpm > 0 && atomic_fetch_add_explicit(&s->req_cur, 1, RLX) >=
	                      (uint64_t)c->rpm) {
		atomic_fetch_sub_explicit(&s->req_cur, 1, RLX);
		atomic_fetch_sub_explicit(&s->inflight[w->index], 1, RLX);
		snprintf(v->msg, sizeof v->msg,
		         "client '%s' made its %ld requests this minute",
		         c->name, c->rpm);
		return lim_refuse(s, v, CREF_RPM, "client_rate_limited",
		                  lim_secs_to(next));
	}
	if (c->rpm <= 0)
		atomic_fetch_add_explicit(&s->req_cur, 1, RLX);
	return 0;
}

/* Admit one request of client ci (the clock read once). */
int
limits_admit(struct worker *w, int ci, struct limit_verdict *v)
{
	struct client_sh *s = lim_rec(w, ci);
	const struct client_cfg *c;
	int64_t wall;

	memset(v, 0, sizeof *v);
	if (s == NULL)
		return 0;
	c = &w->cfg->clients[ci];
	wall = clock_wall_ms();
	if (lim_budgets(c, s, wall, v) == -1 ||
	    lim_rates(w, c, s, wall, v) == -1)
		return -1;
	atomic_fetch_add_explicit(&s->requests, 1, RLX);
	atomic_store_explicit(&s->last_wall_ms, (uint64_t)wall, RLX);
	return 0;
}

/* An admitted request finished. */
void
limits_release(struct worker *w, int ci)
{
	struct client_sh *s = lim_rec(w, ci);

	if (s != NULL)
		atomic_fetch_sub_explicit(&s->inflight[w->index], 1, RLX);
}

/* Announce a budget that spend moved from below to at or past it. */
static void
lim_budget_event(struct worker *w, const struct client_cfg *c, const char *what,
                 double usd, uint64_t before, uint64_t after, int64_t end_ms)
{
	double lim = usd * 1e9;
	char l[32], when[32], t[240];

	if (usd <= 0 || (double)before >= lim || (double)after < lim)
		return;
	spend_fmt_usd(l, sizeof l, (uint64_t)llround(lim));
	spend_fmt_time(when, sizeof when, end_ms);
	snprintf(t, sizeof t,
	         "client %s spent its %s budget of $%s; refused until %s",
	         c->name, what, l, when);
	log_warnx("%s", t);
	shm_event_add_client(w->shm, SHM_EV_BUDGET, -1, c->name, (int64_t)after,
	                     t);
}

/* Add nusd to the client's day, month and total spend, at wall (ms). */
static void
lim_add_spend(struct worker *w, const struct client_cfg *c, struct client_sh *s,
              uint64_t nusd, int64_t wall)
{
	uint64_t d0, m0;

	lim_rotate(&s->day, &s->spend_day, spend_day(wall));
	lim_rotate(&s->month, &s->spend_month, spend_month(wall));
	d0 = atomic_fetch_add_explicit(&s->spend_day, nusd, RLX);
	m0 = atomic_fetch_add_explicit(&s->spend_month, nusd, RLX);
	atomic_fetch_add_explicit(&s->spend_nusd, nusd, RLX);
	lim_budget_event(w, c, "daily", c->daily_budget_usd, d0, d0 + nusd,
	                 spend_day_end_ms(wall));
	lim_budget_event(w, c, "monthly", c->monthly_budget_usd, m0, m0 + nusd,
	                 spend_month_end_ms(wall));
}

/* Count an answer's tokens and spend; see limits.h. */
void
limits_spend(struct worker *w, int ci, int d, const char *model,
             const struct usage *u, uint64_t nusd)
{
	struct client_sh *s = lim_rec(w, ci);
	const struct client_cfg *c;
	uint64_t tin = u->prompt_tokens > 0 ? (uint64_t)u->prompt_tokens : 0,
	         tout = u->completion_tokens > 0
	                    ? (uint64_t)u->completion_tokens
	                    : 0;
	int64_t wall;

	if (s == NULL || d < 0)
		return;
	c = &w->cfg->clients[ci];
	wall = clock_wall_ms();
	lim_minute(s, wall);
	atomic_fetch_add_explicit(&s->tok_cur, tin + tout, RLX);
	atomic_fetch_add_explicit(&s->tokens_in, tin, RLX);
	atomic_fetch_add_explicit(&s->tokens_out, tout, RLX);
	if (nusd > 0) {
		lim_add_spend(w, c, s, nusd, wall);
		atomic_fetch_add_explicit(
		    &w->shm->slots[w->slot_of[d]].spend_nusd, nusd, RLX);
	}
	shm_spend_add(
	    w->shm, spend_day(wall), c->name, w->cfg->deploy[d].name, model,
	    &(struct spend_vals){.nusd = nusd,
	                         .requests = 1,
	                         .tokens_in = tin,
	                         .tokens_out = tout,
	                         .cached_in = u->cached_tokens > 0
	                                          ? (uint64_t)u->cached_tokens
	                                          : 0});
}

/* A caller refused before it was identified. */
void
limits_unidentified(struct worker *w)
{
	if (w->shm != NULL && w->shm->hdr != NULL)
		atomic_fetch_add_explicit(&w->shm->hdr->auth_failures, 1, RLX);
}

/* Count a refusal made outside limits_admit. */
void
limits_refused(struct worker *w, int ci, int reason)
{
	struct client_sh *s = lim_rec(w, ci);

	if (s != NULL && reason >= 0 && reason < CREF__MAX)
		atomic_fetch_add_explicit(&s->refused[reason], 1, RLX);
}

/* A request of class prio starts or stops waiting. */
void
limits_wait(struct worker *w, int prio, int delta)
{
	if (w->shm == NULL || prio < 0 || prio >= SHM_NPRIO || w->index < 0 ||
	    w->index >= SHM_MAX_WORKERS)
		return;
	atomic_fetch_add_explicit(&w->shm->hdr->waiting[w->index][prio], delta,
	                          RLX);
}

/* Whether a class above prio has requests waiting. */
int
limits_higher_waiting(struct worker *w, int prio)
{
	for (int p = prio + 1; w->shm != NULL && p < SHM_NPRIO; p++)
		if (shm_waiting(w->shm, p) > 0)
			return 1;
	return 0;
}
