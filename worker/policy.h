/* policy.c: what a request may reach, decided before routing. The routing
 * rules (`routes`), the model name (a group, a deployment, an alias, a
 * pattern's model, or "provider/model"), the fallback chain (the request's
 * fallbacks / fallback_models, else the configured chain, then the rules'
 * additions), the required region, and the session key for affinity. It
 * reads the config and the request, never the health table: route.c picks
 * among the candidates it builds. */
#ifndef LLMFD_POLICY_H
#define LLMFD_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include "common/cfg.h"
#include "common/json.h"
#include "worker/route.h"

/* What the policy reads from a request. */
struct policy_in {
	const struct json *body; /* the client's own body */
	const struct json *doc;  /* the canonical body (llmfd's fields) */
	const char *model;       /* as the client named it */
	int proto;               /* the ingress id (ING_*) */
	/* a request header, or NULL */
	const char *(*header)(void *c, const char *name);
	void *c;
	/* The client's identity, for rules with match.client, and the region
	 * its configuration requires (after a rule's, before the request's
	 * header); NULL when unknown. */
	const char *client;
	const char *client_region;
	/* The client whose `groups` limit the deployments a request may
	 * reach, or NULL (any). */
	const struct client_cfg *allow;
};

/* One candidate group: a copy of the configured group (or a synthetic one
 * for a deployment or "provider/model"), its members limited to the
 * required region. */
struct policy_cand {
	struct group_cfg g;
	char *capture; /* the text a pattern's star stood for, NULL if none */
};

#define POLICY_POOL (2 * CFG_MAX_DEPLOY)

/* The candidates of one request. policy_resolve fills it whole; nothing
 * needs clearing between requests (its arrays stay, policy_free frees
 * them). */
struct policy {
	struct policy_cand *cand; /* grown by need, at most ROUTE_MAX_GROUPS */
	int ncand, cand_cap;
	int *pool; /* members of filtered and synthetic groups, grown by need
	              up to POLICY_POOL */
	int npool, pool_cap;
	char region[CFG_NAME_MAX]; /* the required region, "" if none */
	uint64_t session;          /* the session key, 0 if none */
	int rule;                  /* the first rule that matched, -1 */
	int priority;              /* a rule's priority class, -1 if none */
	const struct client_cfg *allow; /* as policy_in.allow */
};

/* Why a request cannot be routed, as the client is told. */
struct policy_err {
	int status;
	const char *type, *code;
	char msg[200];
};

/* Header that makes a request require a region. */
#define POLICY_REGION_HEADER "x-llmfd-region"

/* Build the candidates of request in: groups[0..*ngroups) point into p.
 * 0, or -1 with e filled (unknown model 404, a model the client may not
 * use 403, no deployment in the required region 404). */
int policy_resolve(struct policy *p, const struct cfg *,
                   const struct policy_in *in, const struct group_cfg **groups,
                   int *ngroups, struct policy_err *e);
/* Free the candidates' memory (p is then empty; it may be reused). */
void policy_free(struct policy *p);
/* Replace the candidates by the targets of chain f (a context-window or
 * content-policy fallback), within the required region; their count. */
int policy_switch(struct policy *p, const struct cfg *,
                  const struct fallback_cfg *f,
                  const struct group_cfg **groups);
/* The model to send upstream for deployment d picked from candidate gi: for
 * a pattern's deployment its model with the star replaced (into buf), else
 * NULL (the deployment's own). */
const char *policy_model(const struct policy *p, const struct cfg *, int gi,
                         int d, char *buf, size_t n);
/* Whether rule r holds for request in (exported for tests). */
int policy_rule_matches(const struct rule_cfg *r, const struct policy_in *in);
/* The session key of request in: its session headers (Claude Code's
 * X-Claude-Code-Session-Id, Codex's session_id and conversation_id), else
 * metadata.session_id, prompt_cache_key, metadata.user_id, user; hashed,
 * 0 if none. */
uint64_t policy_session(const struct policy_in *in);

#endif
