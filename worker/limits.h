/* limits.c: what each client may do and what it spent, held in the shared
 * table so that the limits hold across workers (issue 17): budgets (UTC
 * day and month), rpm and tpm (wall-clock minutes), requests in flight
 * (a column per worker, as deployments), refusals, and spend by client,
 * deployment and ledger row. The only writer of the table's client
 * records and ledger besides the master. */
#ifndef LLMFD_LIMITS_H
#define LLMFD_LIMITS_H

#include <stdint.h>

struct worker;
struct usage;

/* Why a request of a client is refused before routing. */
struct limit_verdict {
	int status; /* 429 */
	const char *type, *code;
	char msg[256];
	int64_t retry_after_s;
	int reason; /* CREF_* */
};

/* Worker start: each configured client's table record. -1 if one is
 * missing. */
int limits_init(struct worker *);
/* Admit one request of client ci: its budgets, tpm, max_concurrent and
 * rpm. 0 (it now counts in flight and in the minute), or -1 with v. */
int limits_admit(struct worker *, int ci, struct limit_verdict *v);
/* A request admitted by limits_admit finished. */
void limits_release(struct worker *, int ci);
/* The answer of a request of client ci came from deployment d (upstream
 * model model) with usage u costing nusd (0: not priced): its tokens count
 * in the client's minute, the spend in the client's day, month and total,
 * the deployment's total and the ledger. A budget this spend uses up is
 * announced as an event. */
void limits_spend(struct worker *, int ci, int d, const char *model,
                  const struct usage *u, uint64_t nusd);
/* A caller was refused before it was identified (401, or 403 under
 * default_client "deny"). */
void limits_unidentified(struct worker *);
/* Count a refusal made elsewhere (403, a shed). */
void limits_refused(struct worker *, int ci, int reason);
/* A request of class prio starts (+1) or stops (-1) waiting for capacity. */
void limits_wait(struct worker *, int prio, int delta);
/* Whether requests of a class above prio are waiting, in any worker. */
int limits_higher_waiting(struct worker *, int prio);

#endif
