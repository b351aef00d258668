/* Routing policy: from a request and the config to the candidate groups
 * route.c picks from. In order:
 *
 *   rules      every rule of `routes` whose match holds applies; of two
 *              that set the group or the region, the earlier wins; their
 *              fallbacks add up
 *   region     a rule's, else the client's (client identity), else the
 *              request's x-llmfd-region header
 *   primary    the rule's group, else the requested model, resolved as a
 *              group, a deployment, an alias, a model a pattern serves, or
 *              "provider/model" (the configured deployments of that
 *              provider with that model)
 *   chain      the request's fallbacks and fallback_models, else the
 *              configured fallbacks of the primary; then the rules'
 *   filter     with a region, every candidate keeps only its members in
 *              that region (a candidate left empty is dropped): no
 *              attempt, retry, hedge or fallback can leave the region
 *   session    when a group has affinity, the request's session key
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "worker/policy.h"

/* Headers and fields that carry a session, most specific first. */
static const char *const session_headers[] = {
    "X-Claude-Code-Session-Id", "session_id", "conversation_id", NULL};
static const char *const session_fields[] = {"metadata.session_id",
                                             "prompt_cache_key",
                                             "metadata.user_id", "user", NULL};

/* FNV-1a of n bytes of s, never 0. */
static uint64_t
pol_hash(const char *s, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)s[i]) * 0x100000001b3ULL;
	return h ? h : 1;
}

/* The session key of a request; see policy.h. */
uint64_t
policy_session(const struct policy_in *in)
{
	const char *v;
	size_t n;
	int t;

	for (int i = 0; in->header && session_headers[i]; i++)
		if ((v = in->header(in->c, session_headers[i])) != NULL &&
		    *v != '\0')
			return pol_hash(v, strlen(v));
	for (int i = 0; session_fields[i]; i++) {
		t = json_path(in->body, 0, session_fields[i]);
		if (json_type(in->body, t) != JSMN_STRING ||
		    (v = json_raw(in->body, t, &n)) == NULL || n <= 2)
			continue;
		return pol_hash(v, n);
	}
	return 0;
}

/* Whether scalar token t of j matches pattern p: a string by its text,
 * a number or boolean by its literal. */
static int
pol_value_is(const struct json *j, int t, const char *p)
{
	char s[256];
	const char *raw;
	size_t n;

	switch (json_type(j, t)) {
	case JSMN_STRING:
		return json_str(j, t, s, sizeof s) >= 0 &&
		       strlen(s) < sizeof s - 1 && cfg_glob(p, s);
	case JSMN_PRIMITIVE:
		if ((raw = json_raw(j, t, &n)) == NULL || n >= sizeof s)
			return 0;
		snprintf(s, sizeof s, "%.*s", (int)n, raw);
		return cfg_glob(p, s);
	default:
		return 0;
	}
}

/* Whether a comma-separated list s names tag. */
static int
pol_in_list(const char *s, const char *tag)
{
	size_t n = strlen(tag);

	for (;;) {
		while (*s == ' ')
			s++;
		if (strncmp(s, tag, n) == 0 &&
		    (s[n] == '\0' || s[n] == ',' || s[n] == ' '))
			return 1;
		if ((s = strchr(s, ',')) == NULL)
			return 0;
		s++;
	}
}

/* Whether the request's metadata carries tag: metadata.tag, an element of
 * metadata.tags, or a name in a comma-separated metadata.tags. */
static int
pol_tag(const struct json *j, int meta, const char *tag)
{
	char s[512];
	int t = json_get(j, meta, "tags"), n;

	if (json_eq(j, json_get(j, meta, "tag"), tag))
		return 1;
	if (json_type(j, t) == JSMN_STRING)
		return json_str(j, t, s, sizeof s) >= 0 && pol_in_list(s, tag);
	if (json_type(j, t) != JSMN_ARRAY)
		return 0;
	n = json_size(j, t);
	for (int i = 0; i < n; i++)
		if (json_eq(j, json_at(j, t, i), tag))
			return 1;
	return 0;
}

/* Whether the metadata conditions of r hold. */
static int
pol_meta(const struct rule_cfg *r, const struct json *j)
{
	int meta;

	if (r->tag[0] == '\0' && r->nmeta == 0)
		return 1;
	meta = json_get(j, 0, "metadata");
	if (json_type(j, meta) != JSMN_OBJECT)
		return 0;
	if (r->tag[0] != '\0' && !pol_tag(j, meta, r->tag))
		return 0;
	for (int i = 0; i < r->nmeta; i++)
		if (!pol_value_is(j, json_get(j, meta, r->meta[i].key),
		                  r->meta[i].value))
			return 0;
	return 1;
}

/* Whether rule r holds for request in. */
int
policy_rule_matches(const struct rule_cfg *r, const struct policy_in *in)
{
	const char *v;

	if (r->protocols != 0 &&
	    (in->proto < 0 || !(r->protocols & (1u << in->proto))))
		return 0;
	if (r->model[0] != '\0' && !cfg_glob(r->model, in->model))
		return 0;
	if (r->client[0] != '\0' &&
	    (in->client == NULL || strcmp(r->client, in->client) != 0))
		return 0;
	for (int i = 0; i < r->nheader; i++)
		if (in->header == NULL ||
		    (v = in->header(in->c, r->header[i].key)) == NULL ||
		    !cfg_glob(r->header[i].value, v))
			return 0;
	return pol_meta(r, in->body);
}

/* ---- candidates ---- */

/* Drop the candidates (their captures freed). */
static void
pol_clear(struct policy *p)
{
	for (int i = 0; i < p->ncand; i++)
		free(p->cand[i].capture);
	p->ncand = 0;
}

/* Room for n more pool entries (grown by need, the members of the
 * candidates that point into it moved along); -1 when memory ran out. */
static int
pol_pool_reserve(struct policy *p, int n)
{
	ptrdiff_t off[ROUTE_MAX_GROUPS];
	int cap = p->pool_cap ? p->pool_cap : 16, *np;

	if (p->npool + n <= p->pool_cap)
		return 0;
	while (cap < p->npool + n)
		cap *= 2;
	for (int i = 0; i < p->ncand; i++) {
		const int *d = p->cand[i].g.deploy;

		off[i] =
		    p->pool != NULL && d >= p->pool && d < p->pool + p->pool_cap
		        ? d - p->pool
		        : -1;
	}
	if ((np = reallocarray(p->pool, (size_t)cap, sizeof *np)) == NULL)
		return -1;
	for (int i = 0; i < p->ncand; i++)
		if (off[i] >= 0)
			p->cand[i].g.deploy = np + off[i];
	p->pool = np;
	p->pool_cap = cap;
	return 0;
}

/* Add group g (the star's text cap, "" for none) unless it is there. */
static int
pol_add(struct policy *p, const struct group_cfg *g, const char *cap)
{
	struct policy_cand *c;
	int n = p->cand_cap ? 2 * p->cand_cap : 1;

	for (int i = 0; i < p->ncand; i++)
		if (p->cand[i].g.deploy == g->deploy &&
		    strcmp(p->cand[i].capture ? p->cand[i].capture : "", cap) ==
		        0)
			return 0;
	if (p->ncand == ROUTE_MAX_GROUPS)
		return 0;
	if (p->ncand == p->cand_cap) { /* grown by need: most have one */
		if (n > ROUTE_MAX_GROUPS)
			n = ROUTE_MAX_GROUPS;
		if ((c = reallocarray(p->cand, (size_t)n, sizeof *c)) == NULL)
			return -1;
		p->cand = c;
		p->cand_cap = n;
	}
	c = &p->cand[p->ncand++];
	c->g = *g;
	c->capture = NULL;
	if (cap[0] != '\0' && (c->capture = strdup(cap)) == NULL) {
		p->ncand--;
		return -1;
	}
	return 0;
}

/* A group of its own for the n deployments in idx (copied to the pool),
 * named name, with the router's settings. */
static int
pol_synthetic(struct policy *p, const char *name, const int *idx, int n)
{
	struct group_cfg g;

	if (n == 0 || p->npool + n > POLICY_POOL ||
	    pol_pool_reserve(p, n) == -1)
		return -1;
	memset(&g, 0, sizeof g);
	snprintf(g.name, sizeof g.name, "%s", name);
	g.strategy = g.tie_break = -1;
	g.deploy = &p->pool[p->npool];
	g.ndeploy = n;
	memcpy(g.deploy, idx, (size_t)n * sizeof *idx);
	p->npool += n;
	return pol_add(p, &g, "");
}

/* "provider/model": the deployments of that provider serving that model
 * (patterns aside), in config order. */
static int
pol_provider_model(struct policy *p, const struct cfg *cfg, const char *name)
{
	const char *slash = strchr(name, '/');
	int idx[CFG_MAX_DEPLOY], n = 0, k;
	char prov[32];

	if (slash == NULL || (size_t)(slash - name) >= sizeof prov)
		return -1;
	snprintf(prov, sizeof prov, "%.*s", (int)(slash - name), name);
	if ((k = cfg_provider_parse(prov)) == -1)
		return -1;
	for (int i = 0; i < cfg->ndeploy; i++)
		if (cfg->deploy[i].provider == k &&
		    cfg->deploy[i].pattern[0] == '\0' &&
		    strcmp(cfg->deploy[i].model, slash + 1) == 0)
			idx[n++] = i;
	return pol_synthetic(p, name, idx, n);
}

/* Add the candidate a model name stands for; -1 if it names nothing. A
 * pattern's own group or deployment names no model, so nothing. */
static int
pol_name(struct policy *p, const struct cfg *cfg, const char *name,
         int alias_ok)
{
	const struct group_cfg *g;
	const struct alias_cfg *a;
	char cap[128];
	int d;

	if ((g = cfg_find_group(cfg, name)) != NULL)
		return g->pattern ? -1 : pol_add(p, g, "");
	if ((d = cfg_find_deploy(cfg, name)) >= 0) {
		if (cfg->deploy[d].pattern[0] != '\0')
			return -1;
		return pol_synthetic(p, cfg->deploy[d].group, &d, 1);
	}
	if (alias_ok && (a = cfg_find_alias(cfg, name)) != NULL)
		return pol_name(p, cfg, a->group, 0);
	if ((g = cfg_find_pattern(cfg, name, cap, sizeof cap)) != NULL)
		return pol_add(p, g, cap);
	return pol_provider_model(p, cfg, name);
}

/* Add the names of request field key (an array of strings); 1 if the
 * field is an array, else 0. Names that route nowhere are left out. */
static int
pol_field(struct policy *p, const struct cfg *cfg, const struct json *j,
          const char *key)
{
	char name[128];
	int t = json_get(j, 0, key), n;

	if (json_type(j, t) != JSMN_ARRAY)
		return 0;
	n = json_size(j, t);
	for (int i = 0; i < n; i++) {
		int len = json_str(j, json_at(j, t, i), name, sizeof name);

		if (len > 0 && (size_t)len < sizeof name)
			pol_name(p, cfg, name, 1);
	}
	return 1;
}

/* The fallback chain after the primary: the request's own (fallbacks,
 * fallback_models), else the configured one. */
static void
pol_chain(struct policy *p, const struct cfg *cfg, const struct json *doc)
{
	const struct fallback_cfg *f;
	int own = pol_field(p, cfg, doc, "fallbacks");

	own |= pol_field(p, cfg, doc, "fallback_models");
	if (own ||
	    (f = cfg_find_fallback(&cfg->fallbacks, p->cand[0].g.name)) == NULL)
		return;
	for (int i = 0; i < f->nto; i++)
		pol_name(p, cfg, f->to[i], 1);
}

/* Whether deployment d may serve: in the required region (if any) and in
 * a group the client may use. */
static int
pol_member_ok(const struct policy *p, const struct cfg *cfg, int d)
{
	return (p->region[0] == '\0' ||
	        cfg_region_ok(p->region, cfg->deploy[d].region)) &&
	       (p->allow == NULL ||
	        cfg_client_allows(p->allow, cfg->deploy[d].group));
}

/* Keep in each candidate only its members in the required region and the
 * client's groups; drop the candidates left empty. */
static void
pol_filter(struct policy *p, const struct cfg *cfg)
{
	int k = 0, n = 0, *out;

	for (int i = 0; i < p->ncand; i++)
		n += p->cand[i].g.ndeploy;
	if (n > POLICY_POOL - p->npool)
		n = POLICY_POOL - p->npool;
	if (pol_pool_reserve(p, n) == -1)
		return; /* unfiltered: the routing checks still apply */
	for (int i = 0; i < p->ncand; i++) {
		struct group_cfg *g = &p->cand[i].g;

		out = &p->pool[p->npool];
		n = 0;
		for (int m = 0; m < g->ndeploy; m++)
			if (pol_member_ok(p, cfg, g->deploy[m]) &&
			    p->npool + n < POLICY_POOL)
				out[n++] = g->deploy[m];
		if (n == 0) {
			free(p->cand[i].capture);
			continue;
		}
		p->npool += n;
		g->deploy = out;
		g->ndeploy = n;
		if (k != i)
			p->cand[k] = p->cand[i];
		k++;
	}
	p->ncand = k;
}

/* Apply the rules that hold: the first group and region win, fallbacks
 * add up (into fb, at most ROUTE_MAX_GROUPS). Returns the model name to
 * route. */
static const char *
pol_rules(struct policy *p, const struct cfg *cfg, const struct policy_in *in,
          const char **fb, int *nfb)
{
	const char *target = NULL;

	*nfb = 0;
	for (int i = 0; i < cfg->nrule; i++) {
		const struct rule_cfg *r = &cfg->rules[i];

		if (!policy_rule_matches(r, in))
			continue;
		if (p->rule < 0)
			p->rule = i;
		if (target == NULL && r->group[0] != '\0')
			target = r->group;
		if (p->region[0] == '\0' && r->region[0] != '\0')
			snprintf(p->region, sizeof p->region, "%s", r->region);
		if (p->priority < 0 && r->priority >= 0)
			p->priority = r->priority;
		for (int k = 0; k < r->nfallbacks && *nfb < ROUTE_MAX_GROUPS;
		     k++)
			fb[(*nfb)++] = r->fallbacks[k];
	}
	return target ? target : in->model;
}

static int pol_fail(struct policy_err *, int, const char *, const char *, ...)
    __attribute__((format(printf, 4, 5)));

/* Fill e (a 4xx invalid_request_error) and return -1. */
static int
pol_fail(struct policy_err *e, int status, const char *code, const char *fmt,
         ...)
{
	va_list ap;

	e->status = status;
	e->type = "invalid_request_error";
	e->code = code;
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof e->msg, fmt, ap);
	va_end(ap);
	return -1;
}

/* The 404 for a model name that routes nowhere. */
static int
pol_unknown(const struct cfg *cfg, const char *name, struct policy_err *e)
{
	const struct group_cfg *g = cfg_find_group(cfg, name);
	int d = cfg_find_deploy(cfg, name);

	if (g == NULL && d >= 0)
		g = cfg_find_group(cfg, cfg->deploy[d].group);
	if (g != NULL && g->pattern != NULL)
		return pol_fail(e, 404, "model_not_found",
		                "'%s' serves the pattern '%s': ask for a model "
		                "it serves",
		                name, g->pattern);
	return pol_fail(e, 404, "model_not_found",
	                "model '%s' is not a configured group, deployment, "
	                "alias or pattern",
	                name);
}

/* The primary candidate (the requested model, or a rule's group) must
 * have a member in a group the client may use: else 403. */
static int
pol_allowed(const struct policy *p, const struct cfg *cfg, const char *target,
            struct policy_err *e)
{
	const struct group_cfg *g = &p->cand[0].g;

	if (p->allow == NULL)
		return 0;
	for (int i = 0; i < g->ndeploy; i++)
		if (cfg_client_allows(p->allow,
		                      cfg->deploy[g->deploy[i]].group))
			return 0;
	pol_fail(e, 403, "model_not_allowed",
	         "client '%s' may not use model '%s'", p->allow->name, target);
	e->type = "permission_error";
	return -1;
}

/* Whether any group of cfg keeps sessions on one deployment. */
static int
pol_affinity(const struct cfg *cfg)
{
	for (int i = 0; i < cfg->ngroup; i++)
		if (cfg->groups[i].affinity == AFFINITY_SESSION)
			return 1;
	return 0;
}

/* The required region from the client's configuration, else from the
 * request's header, if no rule set one. */
static int
pol_region_header(struct policy *p, const struct policy_in *in,
                  struct policy_err *e)
{
	const char *v = in->client_region;

	if (p->region[0] != '\0')
		return 0;
	if ((v == NULL || *v == '\0') &&
	    (in->header == NULL ||
	     (v = in->header(in->c, POLICY_REGION_HEADER)) == NULL ||
	     *v == '\0'))
		return 0;
	if (strlen(v) >= sizeof p->region)
		return pol_fail(e, 400, "invalid_region", "%s is too long",
		                POLICY_REGION_HEADER);
	snprintf(p->region, sizeof p->region, "%s", v);
	return 0;
}

/* Build the candidates of a request; see policy.h. */
int
policy_resolve(struct policy *p, const struct cfg *cfg,
               const struct policy_in *in, const struct group_cfg **groups,
               int *ngroups, struct policy_err *e)
{
	const char *fb[ROUTE_MAX_GROUPS], *target;
	int nfb;

	pol_clear(p);
	p->npool = 0;
	p->region[0] = '\0';
	p->session = 0;
	p->rule = -1;
	p->priority = -1;
	p->allow =
	    in->allow != NULL && in->allow->ngroups > 0 ? in->allow : NULL;
	*ngroups = 0;
	target = pol_rules(p, cfg, in, fb, &nfb);
	if (pol_region_header(p, in, e) == -1)
		return -1;
	if (pol_name(p, cfg, target, 1) == -1 || p->ncand == 0)
		return pol_unknown(cfg, target, e);
	if (pol_allowed(p, cfg, target, e) == -1)
		return -1;
	pol_chain(p, cfg, in->doc);
	for (int i = 0; i < nfb; i++)
		pol_name(p, cfg, fb[i], 1);
	if ((p->region[0] != '\0' || p->allow != NULL) &&
	    (pol_filter(p, cfg), p->ncand == 0))
		return pol_fail(e, 404, "region_unavailable",
		                "no deployment for model '%s' is in region "
		                "'%s'",
		                in->model, p->region);
	if (pol_affinity(cfg))
		p->session = policy_session(in);
	for (int i = 0; i < p->ncand; i++)
		groups[i] = &p->cand[i].g;
	*ngroups = p->ncand;
	return 0;
}

/* Switch to the targets of chain f, within the required region. */
int
policy_switch(struct policy *p, const struct cfg *cfg,
              const struct fallback_cfg *f, const struct group_cfg **groups)
{
	pol_clear(p);
	for (int i = 0; f != NULL && i < f->nto; i++)
		pol_name(p, cfg, f->to[i], 1);
	if (p->region[0] != '\0' || p->allow != NULL)
		pol_filter(p, cfg);
	for (int i = 0; i < p->ncand; i++)
		groups[i] = &p->cand[i].g;
	return p->ncand;
}

/* Free what p holds; see policy.h. */
void
policy_free(struct policy *p)
{
	pol_clear(p);
	free(p->cand);
	free(p->pool);
	p->cand = NULL;
	p->pool = NULL;
	p->ncand = p->cand_cap = p->npool = p->pool_cap = 0;
}

/* Whether candidate c has member d. */
static int
pol_has(const struct policy_cand *c, int d)
{
	for (int i = 0; i < c->g.ndeploy; i++)
		if (c->g.deploy[i] == d)
			return 1;
	return 0;
}

/* The upstream model for d picked from candidate gi; see policy.h. */
const char *
policy_model(const struct policy *p, const struct cfg *cfg, int gi, int d,
             char *buf, size_t n)
{
	const struct deploy_cfg *dc = &cfg->deploy[d];
	const struct policy_cand *c = NULL;
	const char *star;

	if (dc->pattern[0] == '\0' || (star = strchr(dc->model, '*')) == NULL)
		return NULL;
	if (gi >= 0 && gi < p->ncand && pol_has(&p->cand[gi], d))
		c = &p->cand[gi];
	for (int i = 0; c == NULL && i < p->ncand; i++)
		if (pol_has(&p->cand[i], d))
			c = &p->cand[i];
	if (c == NULL || c->capture == NULL)
		return NULL;
	snprintf(buf, n, "%.*s%s%s", (int)(star - dc->model), dc->model,
	         c->capture, star + 1);
	return buf;
}
