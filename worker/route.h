/* route.c: candidate picking and the only writer of deployment health in
 * the shared table (counters, latency, cooldown, circuit breaker, rate
 * windows, fallbacks, retries, retry budget). The request engine asks; it
 * never reads or writes the table itself. */
#ifndef LLMFD_ROUTE_H
#define LLMFD_ROUTE_H

#include <stdint.h>

#include "common/cfg.h"
#include "common/classify.h"

struct worker;
struct usage;

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
/* Why deployment d cannot be picked now (SKIP_*): the same checks in the
 * same order route_pick makes. A deployment that passes them but lost a
 * race for its rpm slot or half-open probe reports SKIP_RATE or
 * SKIP_CIRCUIT. */
int route_why(struct worker *, int d, long est_tokens);
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
/* A request moved from deployment `from` to `to` (request id for the
 * event text). */
void route_count_fallback(struct worker *, int from, int to, const char *id);
/* A retry on d was scheduled. */
void route_count_retry(struct worker *, int d);
/* How long to wait before hedging a first attempt on d in group g, or -1
 * for no hedge. */
int64_t route_hedge_delay(struct worker *, const struct group_cfg *, int d);
/* Daemon-wide retry budget: 1 if a retry may be spent now. */
int route_retry_allowed(struct worker *);
/* Count one client request (for the retry budget and by protocol). */
void route_count_request(struct worker *, int proto);

#endif
