/* Fleet helpers that need no Redis (see fleet.h). */
#include <ctype.h>
#include <math.h>
#include <string.h>

#include "common/fleet.h"

#define RLX memory_order_relaxed

/* limit / n rounded up; UINT64_MAX (no limit) stays. */
static uint64_t
fleet_share(uint64_t limit, uint32_t n)
{
	if (limit == UINT64_MAX || n <= 1)
		return limit;
	return (limit + n - 1) / n;
}

/* Lower limit *lim (UINT64_MAX: none, kept) to this host's grant plus its
 * slack: the 5 % of the limit the fleet may overshoot, shared among the
 * hosts, so a burst or a stalled Redis is absorbed without refusing or
 * waiting, and the fleet stays within 5 % of the limit. */
static void
fleet_cap(uint64_t *lim, uint64_t granted, uint32_t hosts)
{
	uint64_t slack;

	if (*lim == UINT64_MAX)
		return;
	slack = *lim / (FLEET_SLACK_DIV * (uint64_t)(hosts ? hosts : 1));
	if (granted + slack < *lim)
		*lim = granted + slack;
}

/* The limits a worker enforces now; UINT64_MAX means none. */
void
fleet_limits(const struct shm_hdr_sh *h, const struct slot_sh *s, long rpm,
             long tpm, uint64_t minute, uint64_t *rlim, uint64_t *tlim)
{
	uint32_t st = atomic_load_explicit(&h->fleet_state, RLX);
	int i = (int)(minute & 1);
	uint64_t m1, m2, r, t;

	*rlim = rpm > 0 ? (uint64_t)rpm : UINT64_MAX;
	*tlim = tpm > 0 ? (uint64_t)tpm : UINT64_MAX;
	if (st == FLEET_OFF || (rpm <= 0 && tpm <= 0))
		return;
	if (st == FLEET_UP) {
		m1 = atomic_load_explicit(&s->fleet_cap_min[i],
		                          memory_order_acquire);
		r = atomic_load_explicit(&s->fleet_req_cap[i], RLX);
		t = atomic_load_explicit(&s->fleet_tok_cap[i], RLX);
		atomic_thread_fence(memory_order_acquire);
		m2 = atomic_load_explicit(&s->fleet_cap_min[i], RLX);
		if (m1 == minute && m2 == minute) {
			fleet_cap(rlim, r,
			          atomic_load_explicit(&h->fleet_nhosts, RLX));
			fleet_cap(tlim, t,
			          atomic_load_explicit(&h->fleet_nhosts, RLX));
			return;
		}
	}
	*rlim = fleet_share(*rlim, atomic_load_explicit(&h->fleet_nhosts, RLX));
	*tlim = fleet_share(*tlim, atomic_load_explicit(&h->fleet_nhosts, RLX));
}

/* Whether the fleet had room under both limits at the last sync (so a
 * refusal came from this host's grant, which the next sync tops up). */
int
fleet_room(const struct shm_hdr_sh *h, const struct slot_sh *s, long rpm,
           long tpm)
{
	if (atomic_load_explicit(&h->fleet_state, RLX) != FLEET_UP)
		return 0;
	return (rpm <= 0 || atomic_load_explicit(&s->fleet_req_used, RLX) <
	                        (uint64_t)rpm) &&
	       (tpm <= 0 ||
	        atomic_load_explicit(&s->fleet_tok_used, RLX) < (uint64_t)tpm);
}

/* Store one minute's grants; a reader never pairs them with another
 * minute (the minute is cleared first when the pair is reused). */
void
fleet_set_caps(struct slot_sh *s, uint64_t minute, uint64_t req, uint64_t tok)
{
	int i = (int)(minute & 1);

	if (atomic_load(&s->fleet_cap_min[i]) != minute)
		atomic_store(&s->fleet_cap_min[i], 0);
	atomic_store(&s->fleet_req_cap[i], req);
	atomic_store(&s->fleet_tok_cap[i], tok);
	atomic_store_explicit(&s->fleet_cap_min[i], minute,
	                      memory_order_release);
}

/* How many more units to reserve now; see fleet.h. */
uint64_t
fleet_want(const struct fleet_grant_in *g)
{
	uint64_t hosts = g->hosts > 0 ? (uint64_t)g->hosts : 1;
	uint64_t room = g->limit > g->fleet_used ? g->limit - g->fleet_used : 0;
	uint64_t head = g->granted > g->used ? g->granted - g->used : 0;
	uint64_t target, most;

	if (room == 0)
		return 0;
	target = g->rate > 0 ? (uint64_t)ceil(g->rate * 2.0) : 0;
	if (g->exhausted) {
		uint64_t grow = g->last_want ? g->last_want * 2 : 1;
		target = grow > target ? grow : target;
	}
	if (target == 0 && room >= FLEET_SLACK_DIV * hosts)
		target = 1; /* idle: one ready, while that strands < 5 % */
	most = room / 2;    /* what two periods of use justify, up to half */
	if (most == 0)
		most = 1;
	if (target > most)
		target = most;
	if (target <= head)
		return 0;
	return target - head < room ? target - head : room;
}

/* Parse exactly n space-separated integers, then an optional word. */
int
fleet_parse(const char *s, size_t len, int64_t *v, int n, char *word,
            size_t wordsz)
{
	size_t i = 0, w = 0;

	word[0] = '\0';
	for (int k = 0; k < n; k++) {
		int neg = i < len && s[i] == '-';
		int64_t x = 0;

		i += (size_t)neg;
		if (i >= len || !isdigit((unsigned char)s[i]))
			return -1;
		for (; i < len && isdigit((unsigned char)s[i]); i++) {
			if (x > (INT64_MAX - 9) / 10)
				return -1;
			x = x * 10 + (s[i] - '0');
		}
		v[k] = neg ? -x : x;
		if (i < len && s[i++] != ' ')
			return -1;
	}
	for (; i < len; i++) {
		if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] >= 0x7f ||
		    w + 1 >= wordsz)
			return -1;
		word[w++] = s[i];
	}
	word[w] = '\0';
	return n;
}

/* Copy the header's fleet block under its sequence counter. */
int
fleet_view(const struct shm_hdr_sh *h, struct fleet_view *v)
{
	uint32_t a, b;

	for (int tries = 0; tries < SHM_SEQ_TRIES; tries++) {
		a = atomic_load_explicit(&h->fleet_seq, memory_order_acquire);
		if (a & 1)
			continue;
		v->nlisted = h->fleet_nlisted;
		memcpy(v->redis, h->fleet_redis, sizeof v->redis);
		memcpy(v->self, h->fleet_self, sizeof v->self);
		memcpy(v->hosts, h->fleet_hosts, sizeof v->hosts);
		atomic_thread_fence(memory_order_acquire);
		b = atomic_load_explicit(&h->fleet_seq, RLX);
		if (a != b)
			continue;
		v->redis[sizeof v->redis - 1] = '\0';
		v->self[sizeof v->self - 1] = '\0';
		if (v->nlisted > SHM_FLEET_HOSTS)
			v->nlisted = SHM_FLEET_HOSTS;
		for (uint32_t i = 0; i < v->nlisted; i++)
			v->hosts[i].id[SHM_FLEET_ID - 1] = '\0';
		v->state = atomic_load(&h->fleet_state);
		v->nhosts = atomic_load(&h->fleet_nhosts);
		v->sync_wall_ms = atomic_load(&h->fleet_sync_wall_ms);
		v->syncs = atomic_load(&h->fleet_syncs);
		v->failures = atomic_load(&h->fleet_failures);
		v->rtt_us = atomic_load(&h->fleet_rtt_us);
		v->applied = atomic_load(&h->fleet_applied);
		return 0;
	}
	return -1;
}

/* Name of a fleet state. */
const char *
fleet_state_name(uint32_t st)
{
	return st == FLEET_UP ? "synced" : st == FLEET_DOWN ? "down" : "off";
}

/* Convert a wall-clock deadline to the monotonic clock. */
int64_t
fleet_mono(int64_t wall, int64_t now_mono, int64_t now_wall)
{
	return now_mono + (wall - now_wall);
}
