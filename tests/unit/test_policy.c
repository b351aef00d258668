/* Unit tests for the routing policies: the config of routes, aliases,
 * patterns, prices and regions (common/cfg.c), candidate building
 * (worker/policy.c), strategy cost, session affinity and the upstream's
 * rate-limit headers in route.c, and the parsing of those headers
 * (worker/upstream.c). */
#include <criterion/criterion.h>
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "common/cfg.h"
#include "common/clock.h"
#include "common/json.h"
#include "common/log.h"
#include "common/shm.h"
#include "worker/ingress.h"
#include "worker/policy.h"
#include "worker/upstream.h"
#include "worker/worker.h"

static char tdir[64];
static struct cfg *cfg;
static struct shm shm;
static int slot_of[CFG_MAX_DEPLOY];
static struct worker w;
static struct json body;

/* A fresh temp dir per test. */
static void
setup(void)
{
	snprintf(tdir, sizeof tdir, "/tmp/llmfd-policy-XXXXXX");
	cr_assert_not_null(mkdtemp(tdir));
	log_init(LOG_LVL_WARN, "test_policy");
	memset(&body, 0, sizeof body);
}

/* Free everything, remove the temp dir. */
static void
teardown(void)
{
	DIR *d = opendir(tdir);
	struct dirent *e;
	char p[PATH_MAX];

	if (shm.hdr)
		shm_detach(&shm);
	memset(&shm, 0, sizeof shm);
	cfg_free(cfg);
	cfg = NULL;
	json_free(&body);
	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof p, "%s/%s", tdir, e->d_name);
		unlink(p);
	}
	closedir(d);
	rmdir(tdir);
}

TestSuite(policy_cfg, .init = setup, .fini = teardown);
TestSuite(policy, .init = setup, .fini = teardown);
TestSuite(route_policy, .init = setup, .fini = teardown);
TestSuite(upstream_rl, .init = setup, .fini = teardown);

/* One OpenAI deployment on a dead port, with extra settings. */
#define DEPX(name, group, extra)                                               \
	"  { name = \"" name "\"; group = \"" group "\"; provider = "          \
	"\"openai\"; base_url = \"http://127.0.0.1:9/v1\"; api_key = "         \
	"\"k\"; " extra " }"
#define DEP(name, group, extra) DEPX(name, group, "model = \"m\"; " extra)
#define ANTH(name, group, extra)                                               \
	"  { name = \"" name "\"; group = \"" group "\"; provider = "          \
	"\"anthropic\"; base_url = \"http://127.0.0.1:9\"; api_key = "         \
	"\"k\"; " extra " }"

/* Write the config (deployments list, then extra top-level text) and load
 * it; NULL with *cause on failure. */
static struct cfg *
try_load(const char *deployments, const char *extra, char **cause)
{
	char file[PATH_MAX];
	FILE *f;

	snprintf(file, sizeof file, "%s/llmfd.conf", tdir);
	cr_assert_not_null(f = fopen(file, "w"));
	fprintf(f,
	        "daemon = { listen = \"s.sock\"; health_table = \"health\"; "
	        "};\ndeployments = (\n%s\n);\n%s\n",
	        deployments, extra ? extra : "");
	fclose(f);
	*cause = NULL;
	return cfg_load(file, cause);
}

/* Load a config that must load. */
static void
load(const char *deployments, const char *extra)
{
	char *cause;

	cfg = try_load(deployments, extra, &cause);
	cr_assert_not_null(cfg, "cfg_load: %s", cause ? cause : "?");
}

/* A config that must be refused with reason in its message. */
static void
refused(const char *deployments, const char *extra, const char *reason)
{
	char *cause;
	struct cfg *c = try_load(deployments, extra, &cause);

	cr_assert_null(c, "loaded; expected \"%s\"", reason);
	cr_assert(cause != NULL && strstr(cause, reason) != NULL,
	          "cause \"%s\" lacks \"%s\"", cause ? cause : "", reason);
	cr_assert(strstr(cause, "llmfd.conf:") != NULL, "no file:line: %s",
	          cause);
	free(cause);
}

/* ---- config ---- */

Test(policy_cfg, prices_and_lookup)
{
	const struct price_cfg *p;

	load(DEP("a", "g", "") ",\n" DEPX("b", "h", "model = \"gpt-4o-mini\";"),
	     "prices = ( { model = \"m\"; input_per_mtok = 2.5; "
	     "output_per_mtok = 10; cached_input_per_mtok = 1.25; },\n"
	     "  { model = \"gpt-4o*\"; input_per_mtok = 1; output_per_mtok = "
	     "4; } );");
	cr_assert_eq(cfg->nprice, 2);
	p = cfg_price(cfg, "m");
	cr_assert_not_null(p);
	cr_assert(p->input_per_mtok == 2.5 && p->output_per_mtok == 10 &&
	          p->cached_input_per_mtok == 1.25);
	p = cfg_price(cfg, "gpt-4o-mini");
	cr_assert_not_null(p);
	cr_assert(p->input_per_mtok == 1 && p->cached_input_per_mtok == 1,
	          "cached defaults to input");
	cr_assert_null(cfg_price(cfg, "claude"));
	cr_assert_eq(cfg->deploy[0].price, 0);
	cr_assert_eq(cfg->deploy[1].price, 1);
}

Test(policy_cfg, prices_refused)
{
	refused(DEP("a", "g", ""), "prices = ( { model = \"m\"; } );",
	        "prices: model 'm': input_per_mtok is required");
	refused(DEP("a", "g", ""),
	        "prices = ( { model = \"m\"; input_per_mtok = -1; "
	        "output_per_mtok = 1; } );",
	        "input_per_mtok: must be between");
	refused(DEP("a", "g", ""),
	        "prices = ( { model = \"m\"; input_per_mtok = 1; "
	        "output_per_mtok = 1; },\n { model = \"m\"; input_per_mtok = "
	        "1; output_per_mtok = 1; } );",
	        "duplicate entry for model 'm'");
	refused(DEP("a", "g", ""),
	        "prices = ( { model = \"m\"; input_per_mtok = 1; "
	        "output_per_mtok = 1; cost = 3; } );",
	        "unknown setting 'cost'");
}

Test(policy_cfg, aliases)
{
	load(DEP("a", "g", ""), "aliases = ( { name = \"latest\"; group = "
	                        "\"g\"; }, { name = \"one\"; group = \"a\"; "
	                        "} );");
	cr_assert_eq(cfg->nalias, 2);
	cr_assert_str_eq(cfg_find_alias(cfg, "latest")->group, "g");
	cr_assert_null(cfg_find_alias(cfg, "g"));
	refused(DEP("a", "g", ""),
	        "aliases = ( { name = \"x\"; group = \"nope\"; } );",
	        "alias 'x': group: 'nope' is not a group");
	refused(DEP("a", "g", ""),
	        "aliases = ( { name = \"g\"; group = \"a\"; } );",
	        "'g' is already a group or deployment");
	refused(DEP("a", "g", ""),
	        "aliases = ( { name = \"x\"; group = \"g\"; },\n"
	        "  { name = \"x\"; group = \"g\"; } );",
	        "duplicate alias 'x'");
}

Test(policy_cfg, pattern_deployments)
{
	const struct group_cfg *g;

	load(ANTH("an1", "an", "pattern = \"anthropic/*\";") ",\n" ANTH(
	         "an2", "an", "pattern = \"anthropic/*\"; model = \"x-*-y\";"),
	     NULL);
	g = cfg_find_group(cfg, "an");
	cr_assert_str_eq(g->pattern, "anthropic/*");
	cr_assert_str_eq(cfg->deploy[0].model, "*");
	cr_assert_str_eq(cfg->deploy[1].model, "x-*-y");
	refused(ANTH("an1", "an", "pattern = \"anthropic\";"), NULL,
	        "pattern: must contain exactly one '*'");
	refused(ANTH("an1", "an", "pattern = \"a/*/*\";"), NULL,
	        "exactly one '*'");
	refused(ANTH("an1", "an", "pattern = \"a/*\";") ",\n" ANTH(
	            "an2", "an", "model = \"m\";"),
	        NULL, "pattern \"\" differs from that of 'an1'");
	refused(DEPX("a", "g", "model = \"m*\";"), NULL,
	        "a '*' (at most one) needs a pattern");
	refused(ANTH("an1", "an", "pattern = \"a/*\";") ",\n" DEP("b", "g", ""),
	        "fallbacks = ( { group = \"g\"; to = [ \"an\" ]; } );",
	        "to: 'an' serves a pattern");
}

Test(policy_cfg, fallbacks_name_models)
{
	load(ANTH("an1", "an", "pattern = \"anthropic/*\";") ",\n" DEP("b", "g",
	                                                               ""),
	     "aliases = ( { name = \"al\"; group = \"g\"; } );\n"
	     "fallbacks = ( { group = \"g\"; to = [ \"anthropic/claude-x\" ]; "
	     "} );\n");
	cr_assert_str_eq(cfg->fallbacks.v[0].to[0], "anthropic/claude-x");
	refused(DEP("b", "g", "") ",\n" DEP("c", "h", ""),
	        "fallbacks = ( { group = \"g\"; to = [ \"nope\" ]; } );",
	        "to: unknown group 'nope'");
}

Test(policy_cfg, routes_parsed)
{
	const struct rule_cfg *r;

	load(DEP("a", "g", "region = \"eu-west\";") ",\n" DEP("b", "h", ""),
	     "routes = (\n"
	     " { match = { tag = \"coding\"; metadata = { team = \"in*\"; };\n"
	     "   header = [ \"X-Env: prod\", \"X-Trace\" ];\n"
	     "   protocol = [ \"chat\", \"messages\" ]; model = \"gpt-*\"; };\n"
	     "   group = \"h\"; fallbacks = \"g\"; region = \"eu\"; },\n"
	     " { region = \"eu-west\"; }\n);");
	cr_assert_eq(cfg->nrule, 2);
	r = &cfg->rules[0];
	cr_assert_str_eq(r->tag, "coding");
	cr_assert_eq(r->nmeta, 1);
	cr_assert_str_eq(r->meta[0].key, "team");
	cr_assert_str_eq(r->meta[0].value, "in*");
	cr_assert_eq(r->nheader, 2);
	cr_assert_str_eq(r->header[0].key, "X-Env");
	cr_assert_str_eq(r->header[0].value, "prod");
	cr_assert_str_eq(r->header[1].key, "X-Trace");
	cr_assert_str_eq(r->header[1].value, "*");
	cr_assert_eq(r->protocols, (1u << ING_CHAT) | (1u << ING_MESSAGES));
	cr_assert_str_eq(r->model, "gpt-*");
	cr_assert_str_eq(r->group, "h");
	cr_assert_eq(r->nfallbacks, 1);
	cr_assert_str_eq(r->fallbacks[0], "g");
	cr_assert_str_eq(r->region, "eu");
	cr_assert_eq(r->line, 7);
	for (int i = 0; i < ING__MAX; i++)
		cr_assert_str_eq(cfg_protocol_name(i), ingress_names[i]);
}

Test(policy_cfg, routes_refused)
{
	refused(DEP("a", "g", ""),
	        "routes = ( { match = { tag = \"x\"; }; } );",
	        "routes[0]: does nothing");
	refused(DEP("a", "g", ""), "routes = ( { group = \"nope\"; } );",
	        "routes[0]: group: 'nope' is not a group");
	refused(DEP("a", "g", ""), "routes = ( { region = \"eu\"; } );",
	        "no deployment is in region 'eu'");
	refused(DEP("a", "g", ""),
	        "routes = ( { match = { colour = \"x\"; }; group = \"g\"; } );",
	        "routes[0].match: unknown setting 'colour'");
	refused(DEP("a", "g", ""),
	        "routes = ( { match = { protocol = \"soap\"; }; group = \"g\"; "
	        "} );",
	        "unknown protocol 'soap'");
	refused(
	    DEP("a", "g", ""),
	    "routes = ( { match = { client = \"ci\"; }; group = \"g\"; } );",
	    "routes[0].match.client: no client named 'ci'");
	refused(DEP("a", "g", ""),
	        "routes = ( { match = { header = \"Bad Name: x\"; }; group = "
	        "\"g\"; } );",
	        "invalid header name");
	refused(DEP("a", "g", ""), "routes = ( { fallbacks = [ 1 ]; } );",
	        "expected strings");
}

Test(policy_cfg, group_and_router_rows)
{
	load(DEP("a", "g", "region = \"eu\";"),
	     "router = { strategy = \"cost\"; tie_break = \"cost\"; };\n"
	     "groups = ( { name = \"g\"; affinity = \"session\"; tie_break = "
	     "\"random\"; } );");
	cr_assert_eq(cfg->strategy, STRAT_COST);
	cr_assert_eq(cfg->tie_break, TIE_COST);
	cr_assert_eq(cfg->groups[0].affinity, AFFINITY_SESSION);
	cr_assert_eq(cfg_eff_tie_break(cfg, &cfg->groups[0]), TIE_RANDOM);
	cr_assert_str_eq(cfg->deploy[0].region, "eu");
	cr_assert_str_eq(cfg_strategy_name(STRAT_COST), "cost");
}

Test(policy_cfg, glob_capture_region)
{
	char cap[16];

	cr_assert(cfg_glob("gpt-*", "gpt-4o"));
	cr_assert(cfg_glob("*", ""));
	cr_assert(cfg_glob("a*b*c", "a-b-b-c"));
	cr_assert(!cfg_glob("a*b", "a-c"));
	cr_assert(!cfg_glob("abc", "abcd"));
	cr_assert(
	    cfg_capture("anthropic/*", "anthropic/claude-x", cap, sizeof cap));
	cr_assert_str_eq(cap, "claude-x");
	cr_assert(cfg_capture("p-*-s", "p-mid-s", cap, sizeof cap));
	cr_assert_str_eq(cap, "mid");
	cr_assert(!cfg_capture("anthropic/*", "openai/x", cap, sizeof cap));
	cr_assert(!cfg_capture("a/*", "a/0123456789abcdefgh", cap, sizeof cap),
	          "too long for cap");
	cr_assert(!cfg_capture("ab*ba", "aba", cap, sizeof cap));
	cr_assert(cfg_region_ok("eu", "eu"));
	cr_assert(cfg_region_ok("eu", "eu-west-1"));
	cr_assert(!cfg_region_ok("eu", "europe"));
	cr_assert(!cfg_region_ok("eu", ""));
	cr_assert(!cfg_region_ok("", "eu"));
}

/* ---- candidates ---- */

static const char *hdr_names[8], *hdr_values[8];
static int nhdr;

/* The fake client's request headers. */
static const char *
fake_header(void *c, const char *name)
{
	(void)c;
	for (int i = 0; i < nhdr; i++)
		if (strcasecmp(hdr_names[i], name) == 0)
			return hdr_values[i];
	return NULL;
}

/* A request with body text js for model (from its body), protocol proto
 * and the headers set with hdr(). */
static struct policy_in
req_in(const char *js, int proto)
{
	static char model[128];

	json_free(&body);
	cr_assert_eq(json_parse(&body, js, strlen(js)), 0, "bad json %s", js);
	model[0] = '\0';
	json_str(&body, json_get(&body, 0, "model"), model, sizeof model);
	return (struct policy_in){.body = &body,
	                          .doc = &body,
	                          .model = model,
	                          .proto = proto,
	                          .header = fake_header};
}

/* Add a request header for the next req_in. */
static void
hdr(const char *name, const char *value)
{
	hdr_names[nhdr] = name;
	hdr_values[nhdr++] = value;
}

static struct policy pol;
static const struct group_cfg *groups[ROUTE_MAX_GROUPS];
static int ngroups;
static struct policy_err perr;

/* Resolve js (chat protocol); the return code of policy_resolve. */
static int
resolve(const char *js)
{
	struct policy_in in = req_in(js, ING_CHAT);

	memset(&perr, 0, sizeof perr);
	return policy_resolve(&pol, cfg, &in, groups, &ngroups, &perr);
}

/* The candidate groups as "name[members],..." for assertions. */
static const char *
chain(void)
{
	static char s[512];
	size_t n = 0;

	s[0] = '\0';
	for (int i = 0; i < ngroups; i++) {
		n += (size_t)snprintf(s + n, sizeof s - n, "%s%s[",
		                      i ? "," : "", groups[i]->name);
		for (int k = 0; k < groups[i]->ndeploy; k++)
			n += (size_t)snprintf(
			    s + n, sizeof s - n, "%s%s", k ? " " : "",
			    cfg->deploy[groups[i]->deploy[k]].name);
		n += (size_t)snprintf(s + n, sizeof s - n, "]");
	}
	return s;
}

/* clang-format off */
#define CFG5                                                                   \
	DEP("a1", "a", "region = \"eu\";") ",\n"                                \
	DEP("a2", "a", "region = \"us\";") ",\n"                                \
	DEP("b1", "b", "region = \"eu-west\";") ",\n"                           \
	DEPX("c1", "c", "model = \"gpt-4o\";") ",\n"                            \
	ANTH("an1", "an", "pattern = \"anthropic/*\";")
/* clang-format on */

Test(policy, model_names)
{
	char buf[160];

	nhdr = 0;
	load(CFG5,
	     "aliases = ( { name = \"latest\"; group = \"b\"; },\n"
	     "  { name = \"haiku\"; group = \"anthropic/claude-h\"; } );\n"
	     "fallbacks = ( { group = \"a\"; to = [ \"b\" ]; } );");
	cr_assert_eq(resolve("{\"model\":\"a\"}"), 0);
	cr_assert_str_eq(chain(), "a[a1 a2],b[b1]", "configured chain");
	cr_assert_eq(resolve("{\"model\":\"a2\"}"), 0);
	cr_assert_str_eq(chain(), "a[a2],b[b1]", "a deployment, its chain");
	cr_assert_eq(resolve("{\"model\":\"latest\"}"), 0);
	cr_assert_str_eq(chain(), "b[b1]");
	cr_assert_eq(resolve("{\"model\":\"openai/gpt-4o\"}"), 0);
	cr_assert_str_eq(chain(), "openai/gpt-4o[c1]");
	cr_assert_eq(resolve("{\"model\":\"anthropic/claude-x\"}"), 0);
	cr_assert_str_eq(chain(), "an[an1]");
	cr_assert_str_eq(policy_model(&pol, cfg, 0, 4, buf, sizeof buf),
	                 "claude-x");
	cr_assert_null(policy_model(&pol, cfg, 0, 0, buf, sizeof buf),
	               "not a pattern: the deployment's own");
	cr_assert_eq(resolve("{\"model\":\"haiku\"}"), 0);
	cr_assert_str_eq(policy_model(&pol, cfg, 0, 4, buf, sizeof buf),
	                 "claude-h");
	cr_assert_eq(resolve("{\"model\":\"nope\"}"), -1);
	cr_assert_eq(perr.status, 404);
	cr_assert_str_eq(perr.code, "model_not_found");
	cr_assert_eq(resolve("{\"model\":\"an\"}"), -1);
	cr_assert(strstr(perr.msg, "serves the pattern 'anthropic/*'"), "%s",
	          perr.msg);
	cr_assert_eq(resolve("{\"model\":\"anthropic/\"}"), -1);
	cr_assert_eq(resolve("{\"model\":\"openai/gpt-5\"}"), -1);
	cr_assert_eq(resolve("{\"model\":\"mystery/gpt-4o\"}"), -1);
}

Test(policy, pattern_template)
{
	char buf[160];

	load(ANTH("an1", "an",
	          "pattern = \"bedrock/*\"; model = "
	          "\"us.anthropic.*-v1:0\";"),
	     NULL);
	cr_assert_eq(resolve("{\"model\":\"bedrock/claude-x\"}"), 0);
	cr_assert_str_eq(policy_model(&pol, cfg, 0, 0, buf, sizeof buf),
	                 "us.anthropic.claude-x-v1:0");
}

Test(policy, request_fallbacks)
{
	load(CFG5, "fallbacks = ( { group = \"a\"; to = [ \"b\" ]; } );");
	cr_assert_eq(resolve("{\"model\":\"a\",\"fallbacks\":[\"c\"]}"), 0);
	cr_assert_str_eq(chain(), "a[a1 a2],c[c1]", "replaces the config's");
	cr_assert_eq(resolve("{\"model\":\"a\",\"fallback_models\":[\"gpt-x\","
	                     "\"anthropic/claude-y\",\"c\",\"c\",\"a\"]}"),
	             0);
	cr_assert_str_eq(chain(), "a[a1 a2],an[an1],c[c1]",
	                 "unknown left out, duplicates once");
	cr_assert_str_eq(pol.cand[1].capture, "claude-y");
	cr_assert_eq(resolve("{\"model\":\"a\",\"fallbacks\":[\"b\"],"
	                     "\"fallback_models\":[\"c\"]}"),
	             0);
	cr_assert_str_eq(chain(), "a[a1 a2],b[b1],c[c1]", "both, in order");
}

Test(policy, rules_pick_group_region_fallbacks)
{
	struct policy_in in;

	load(CFG5,
	     "routes = (\n"
	     " { match = { tag = \"coding\"; }; group = \"c\"; fallbacks = "
	     "[ \"b\" ]; },\n"
	     " { match = { metadata = { team = \"res*\"; }; }; group = \"b\"; "
	     "fallbacks = [ \"a\" ]; },\n"
	     " { match = { header = \"X-Residency: eu\"; }; region = \"eu\"; "
	     "},\n"
	     " { match = { protocol = \"messages\"; model = \"claude-*\"; }; "
	     "group = \"anthropic/claude-z\"; }\n);");
	nhdr = 0;
	cr_assert_eq(resolve("{\"model\":\"a\",\"metadata\":{\"tag\":\"coding\""
	                     "}}"),
	             0);
	cr_assert_str_eq(chain(), "c[c1],b[b1]");
	cr_assert_eq(pol.rule, 0);
	cr_assert_eq(resolve("{\"model\":\"a\",\"metadata\":{\"tags\":["
	                     "\"x\",\"coding\"],\"team\":\"research\"}}"),
	             0);
	cr_assert_str_eq(chain(), "c[c1],b[b1],a[a1 a2]",
	                 "first group wins, fallbacks add up");
	cr_assert_eq(resolve("{\"model\":\"a\",\"metadata\":{\"tags\":\"x, "
	                     "coding\"}}"),
	             0);
	cr_assert_str_eq(chain(), "c[c1],b[b1]", "comma-separated tags");
	cr_assert_eq(resolve("{\"model\":\"a\",\"metadata\":{\"tag\":\"cod\"}"
	                     "}"),
	             0);
	cr_assert_str_eq(chain(), "a[a1 a2]", "no rule");
	cr_assert_eq(pol.rule, -1);
	hdr("x-residency", "eu");
	cr_assert_eq(resolve("{\"model\":\"a\"}"), 0);
	cr_assert_str_eq(pol.region, "eu");
	cr_assert_str_eq(chain(), "a[a1]", "a2 is in us");
	cr_assert_eq(resolve("{\"model\":\"a\",\"fallbacks\":[\"c\",\"b\"]}"),
	             0);
	cr_assert_str_eq(chain(), "a[a1],b[b1]", "c has no eu member");
	cr_assert_eq(resolve("{\"model\":\"c\"}"), -1);
	cr_assert_eq(perr.status, 404);
	cr_assert_str_eq(perr.code, "region_unavailable");
	cr_assert(strstr(perr.msg, "region 'eu'"), "%s", perr.msg);
	nhdr = 0;
	in = req_in("{\"model\":\"claude-q\"}", ING_MESSAGES);
	cr_assert_eq(policy_resolve(&pol, cfg, &in, groups, &ngroups, &perr),
	             0);
	cr_assert_str_eq(chain(), "an[an1]");
	cr_assert_str_eq(pol.cand[0].capture, "claude-z");
	cr_assert_eq(resolve("{\"model\":\"claude-q\"}"), -1,
	             "the rule is for messages only");
}

Test(policy, region_header_and_rule_precedence)
{
	struct policy_in in;

	load(CFG5, "routes = ( { match = { model = \"b\"; }; region = "
	           "\"eu-west\"; } );");
	nhdr = 0;
	hdr(POLICY_REGION_HEADER, "us");
	cr_assert_eq(resolve("{\"model\":\"a\"}"), 0);
	cr_assert_str_eq(chain(), "a[a2]");
	cr_assert_eq(resolve("{\"model\":\"b\"}"), 0);
	cr_assert_str_eq(pol.region, "eu-west", "the rule wins");
	cr_assert_str_eq(chain(), "b[b1]");
	in = req_in("{\"model\":\"a\"}", ING_CHAT);
	in.client_region = "eu";
	cr_assert_eq(policy_resolve(&pol, cfg, &in, groups, &ngroups, &perr),
	             0);
	cr_assert_str_eq(chain(), "a[a1]", "the client's beats the header");
}

/* The candidates and the pool grow by need: a synthetic group of 24
 * members (the pool), filtered by region (the pool grows again while the
 * synthetic group points into it), then four fallback groups. */
Test(policy, candidates_and_pool_grow_by_need)
{
	char deps[8192], want[512];
	size_t n = 0, k = 0;

	for (int i = 0; i < 24; i++)
		n += (size_t)snprintf(deps + n, sizeof deps - n,
		                      "%s  { name = \"o%d\"; group = \"g%d\"; "
		                      "provider = \"openai\"; base_url = "
		                      "\"http://127.0.0.1:9/v1\"; api_key = "
		                      "\"k\"; model = \"gpt-4o\"; region = "
		                      "\"%s\"; }",
		                      i ? ",\n" : "", i, i % 4,
		                      i % 2 ? "us" : "eu");
	load(deps, NULL);
	nhdr = 0;
	cr_assert_eq(resolve("{\"model\":\"openai/gpt-4o\"}"), 0);
	cr_assert_eq(ngroups, 1);
	cr_assert_eq(groups[0]->ndeploy, 24);
	hdr(POLICY_REGION_HEADER, "eu");
	cr_assert_eq(resolve("{\"model\":\"openai/gpt-4o\",\"fallbacks\":"
	                     "[\"g1\",\"g2\",\"g3\",\"g0\"]}"),
	             0);
	k += (size_t)snprintf(want + k, sizeof want - k, "openai/gpt-4o[");
	for (int i = 0; i < 24; i += 2)
		k += (size_t)snprintf(want + k, sizeof want - k, "%so%d",
		                      i ? " " : "", i);
	snprintf(want + k, sizeof want - k,
	         "],g2[o2 o6 o10 o14 o18 o22],g0[o0 o4 o8 o12 o16 o20]");
	cr_assert_str_eq(chain(), want, "the us-only groups g1, g3 dropped");
	cr_assert_geq(pol.pool_cap, pol.npool);
	policy_free(&pol);
	cr_assert_null(pol.cand);
	cr_assert_null(pol.pool);
	cr_assert_eq(resolve("{\"model\":\"g2\"}"), 0, "usable again");
	cr_assert_str_eq(chain(), "g2[o2 o6 o10 o14 o18 o22]");
}

Test(policy, switch_stays_in_region)
{
	struct fallback_cfg f = {.group = "a", .nto = 2};
	char to[2][CFG_NAME_MAX] = {"c", "b"};

	load(CFG5, NULL);
	nhdr = 0;
	hdr(POLICY_REGION_HEADER, "eu");
	cr_assert_eq(resolve("{\"model\":\"a\"}"), 0);
	f.to = to;
	ngroups = policy_switch(&pol, cfg, &f, groups);
	cr_assert_str_eq(chain(), "b[b1]");
}

Test(policy, rule_matching)
{
	struct rule_cfg r;
	struct rule_kv kv = {"team", "in*"};
	struct policy_in in;

	memset(&r, 0, sizeof r);
	nhdr = 0;
	in = req_in("{\"model\":\"m\",\"metadata\":{\"team\":\"infra\","
	            "\"n\":5}}",
	            ING_RESPONSES);
	cr_assert(policy_rule_matches(&r, &in), "no conditions: always");
	r.nmeta = 1;
	r.meta = &kv;
	cr_assert(policy_rule_matches(&r, &in));
	snprintf(kv.key, sizeof kv.key, "n");
	snprintf(kv.value, sizeof kv.value, "5");
	cr_assert(policy_rule_matches(&r, &in), "a number by its literal");
	snprintf(kv.value, sizeof kv.value, "6");
	cr_assert(!policy_rule_matches(&r, &in));
	r.nmeta = 0;
	r.protocols = 1u << ING_CHAT;
	cr_assert(!policy_rule_matches(&r, &in));
	r.protocols |= 1u << ING_RESPONSES;
	cr_assert(policy_rule_matches(&r, &in));
	snprintf(r.client, sizeof r.client, "ci-bot");
	cr_assert(!policy_rule_matches(&r, &in), "no identity yet");
	in.client = "ci-bot";
	cr_assert(policy_rule_matches(&r, &in), "the identity hook");
	snprintf(r.tag, sizeof r.tag, "x");
	cr_assert(!policy_rule_matches(&r, &in));
	in = req_in("{\"model\":\"m\"}", ING_CHAT);
	memset(&r, 0, sizeof r);
	snprintf(r.tag, sizeof r.tag, "x");
	cr_assert(!policy_rule_matches(&r, &in), "no metadata");
}

Test(policy, session_keys)
{
	struct policy_in in;
	uint64_t a, b;

	nhdr = 0;
	in = req_in("{\"model\":\"m\",\"user\":\"u1\"}", ING_CHAT);
	a = policy_session(&in);
	cr_assert_neq(a, 0);
	in = req_in("{\"model\":\"m\",\"user\":\"u2\"}", ING_CHAT);
	cr_assert_neq(policy_session(&in), a);
	in = req_in("{\"model\":\"m\",\"user\":\"u1\",\"metadata\":{"
	            "\"session_id\":\"s\"}}",
	            ING_CHAT);
	b = policy_session(&in);
	cr_assert_neq(b, a, "metadata.session_id before user");
	in = req_in("{\"model\":\"m\",\"metadata\":{\"user_id\":\"u\"},"
	            "\"prompt_cache_key\":\"s\"}",
	            ING_RESPONSES);
	cr_assert_eq(policy_session(&in), b, "prompt_cache_key, same text");
	hdr("x-claude-code-session-id", "cc-1");
	a = policy_session(&in);
	cr_assert_neq(a, b, "the header first");
	nhdr = 0;
	hdr("conversation_id", "cc-1");
	cr_assert_eq(policy_session(&in), a, "the same session, any header");
	in = req_in("{\"model\":\"m\"}", ING_CHAT);
	nhdr = 0;
	cr_assert_eq(policy_session(&in), 0);
	in = req_in("{\"model\":\"m\",\"user\":\"\"}", ING_CHAT);
	cr_assert_eq(policy_session(&in), 0, "empty is none");
}

/* ---- route.c: cost, affinity, rate-limit headers ---- */

/* Create the table for cfg with one slot per deployment and a worker in
 * column 0 (as test_route.c). */
static void
table(void)
{
	char *cause = NULL;

	cr_assert_eq(shm_create(&shm, cfg->health_table, &cause), 0,
	             "shm_create: %s", cause ? cause : "?");
	for (int i = 0; i < cfg->ndeploy; i++) {
		struct slot_sh *s = &shm.slots[i];

		shm_write_cfg_begin(s);
		snprintf(s->name, sizeof s->name, "%s", cfg->deploy[i].name);
		s->cfg_weight = cfg->deploy[i].weight;
		s->cfg_index = i;
		shm_write_cfg_end(s);
		atomic_store(&s->live_weight, -1);
		atomic_store(&s->state, SLOT_ACTIVE);
		slot_of[i] = i;
	}
	memset(&w, 0, sizeof w);
	w.cfg = cfg;
	w.shm = &shm;
	w.slot_of = slot_of;
	w.rng = 0x1234567887654321ULL;
}

/* Pick from group g for a request of est tokens with session key k (0:
 * none); the pick, with an attempt on it that succeeded. */
static int
pick_est(const char *g, long est, uint64_t k)
{
	uint64_t tried[CFG_MAX_DEPLOY / 64] = {0};
	int64_t soonest;
	int probe, d;

	d = route_pick(&w, cfg_find_group(cfg, g), tried, est, k, &soonest,
	               &probe);
	if (d >= 0) {
		route_attempt_start(&w, d);
		route_attempt_end(&w, d, EC_OK, 1000, -1, NULL, -1, NULL, 200);
	}
	return d;
}

/* Pick from group g with session key k (0: none). */
static int
pick_k(const char *g, uint64_t k)
{
	return pick_est(g, 1000, k);
}

#define PRICES                                                                 \
	"prices = ( { model = \"cheap\"; input_per_mtok = 0.15; "              \
	"output_per_mtok = 0.6; },\n { model = \"dear\"; input_per_mtok = "    \
	"2.5; output_per_mtok = 10; } );"

Test(route_policy, cost_picks_cheapest_and_moves)
{
	load(DEPX("dear", "g", "model = \"dear\";") ",\n" DEPX(
	         "cheap", "g", "model = \"cheap\";") ",\n" DEP("free", "g", ""),
	     "router = { strategy = \"cost\"; };\n" PRICES);
	table();
	for (int i = 0; i < 20; i++)
		cr_assert_eq(pick_k("g", 0), 1, "pick %d", i);
	atomic_store(&shm.slots[1].cooldown_until_ms, clock_ms() + 60000);
	for (int i = 0; i < 20; i++)
		cr_assert_eq(pick_k("g", 0), 0,
		             "cheap cools: dear, then unpriced");
	atomic_store(&shm.slots[0].admin, ADMIN_DRAINED);
	cr_assert_eq(pick_k("g", 0), 2, "an unpriced one comes last");
	atomic_store(&shm.slots[1].cooldown_until_ms, 0);
	cr_assert_eq(pick_k("g", 0), 1, "back when it recovers");
}

Test(route_policy, cost_ties_by_latency)
{
	load(DEPX("x", "g", "model = \"cheap\";") ",\n" DEPX(
	         "y", "g", "model = \"cheap\";"),
	     "router = { strategy = \"cost\"; };\n" PRICES);
	table();
	atomic_store(&shm.slots[0].lat_ewma_us, 9000);
	atomic_store(&shm.slots[1].lat_ewma_us, 3000);
	for (int i = 0; i < 10; i++) {
		uint64_t tried[CFG_MAX_DEPLOY / 64] = {0};
		int64_t soonest;
		int probe;

		cr_assert_eq(route_pick(&w, cfg_find_group(cfg, "g"), tried,
		                        100, 0, &soonest, &probe),
		             1);
	}
}

Test(route_policy, tie_break_cost)
{
	load(DEPX("dear", "g", "model = \"dear\";") ",\n" DEPX(
	         "cheap", "g", "model = \"cheap\";"),
	     "router = { strategy = \"least-busy\"; tie_break = \"cost\"; "
	     "};\n" PRICES);
	table();
	for (int i = 0; i < 20; i++)
		cr_assert_eq(pick_k("g", 0), 1);
	atomic_fetch_add(&shm.slots[1].inflight[0], 1);
	cr_assert_eq(pick_k("g", 0), 0, "least busy before cheapest");
}

Test(route_policy, affinity_only_drained_sessions_move)
{
	enum { N = 1000 };
	static int first[N];
	int per[3] = {0}, moved = 0, stayed_off = 0, d;

	load(DEP("d0", "g", "") ",\n" DEP("d1", "g", "") ",\n" DEP("d2", "g",
	                                                           ""),
	     "groups = ( { name = \"g\"; affinity = \"session\"; strategy = "
	     "\"weighted\"; } );");
	table();
	for (int k = 0; k < N; k++) {
		first[k] = pick_k("g", (uint64_t)k * 7919 + 1);
		per[first[k]]++;
	}
	for (int i = 0; i < 3; i++)
		cr_assert(per[i] > 250 && per[i] < 420, "share %d: %d", i,
		          per[i]);
	for (int k = 0; k < N; k++)
		cr_assert_eq(pick_k("g", (uint64_t)k * 7919 + 1), first[k],
		             "session %d moved without cause", k);
	atomic_store(&shm.slots[1].admin, ADMIN_DRAINED);
	for (int k = 0; k < N; k++) {
		d = pick_k("g", (uint64_t)k * 7919 + 1);
		cr_assert_neq(d, 1);
		if (d != first[k])
			moved++;
		if (first[k] != 1 && d != first[k])
			stayed_off++;
	}
	cr_assert_eq(moved, per[1], "only d1's sessions move");
	cr_assert_eq(stayed_off, 0);
	cr_assert_eq(atomic_load(&shm.slots[1].affinity_moves),
	             (uint64_t)per[1]);
	cr_assert_eq(atomic_load(&shm.slots[0].affinity_hits) +
	                 atomic_load(&shm.slots[1].affinity_hits) +
	                 atomic_load(&shm.slots[2].affinity_hits),
	             (uint64_t)(3 * N - per[1]));
	atomic_store(&shm.slots[1].admin, ADMIN_ACTIVE);
	for (int k = 0; k < N; k++)
		cr_assert_eq(pick_k("g", (uint64_t)k * 7919 + 1), first[k],
		             "sessions come back");
}

Test(route_policy, no_session_uses_strategy)
{
	int seen[2] = {0};

	load(DEP("d0", "g", "") ",\n" DEP("d1", "g", ""),
	     "groups = ( { name = \"g\"; affinity = \"session\"; strategy = "
	     "\"weighted\"; } );");
	table();
	for (int i = 0; i < 200; i++)
		seen[pick_k("g", 0)]++;
	cr_assert(seen[0] > 50 && seen[1] > 50, "%d/%d", seen[0], seen[1]);
	cr_assert_eq(atomic_load(&shm.slots[0].affinity_hits) +
	                 atomic_load(&shm.slots[1].affinity_hits),
	             0);
}

/* An up_resp with no rate-limit headers. */
static struct up_resp
no_rl(void)
{
	struct up_resp r;

	memset(&r, 0, sizeof r);
	r.rl_req_left = r.rl_req_limit = r.rl_req_reset_ms = -1;
	r.rl_tok_left = r.rl_tok_limit = r.rl_tok_reset_ms = -1;
	return r;
}

Test(route_policy, upstream_exhausted_is_skipped)
{
	struct up_resp r = no_rl();
	int64_t back;

	load(DEP("d0", "g", "") ",\n" DEP("d1", "g", ""), NULL);
	table();
	r.rl_req_left = 1;
	r.rl_req_limit = 100;
	r.rl_req_reset_ms = 30000;
	route_rate_headers(&w, 0, &r);
	cr_assert_eq(pick_k("g", 0), 0, "one left");
	cr_assert_eq(route_why(&w, 0, 10), SKIP_RATE,
	             "the attempt since used it up");
	cr_assert_eq(pick_k("g", 0), 1);
	cr_assert(route_limited(&w, 0));
	back = atomic_load(&shm.slots[0].rl_req_reset_ms) - clock_ms();
	cr_assert(back > 29000 && back <= 30000, "%lld", (long long)back);
	r.rl_req_left = 50; /* a later reply: room again */
	route_rate_headers(&w, 0, &r);
	cr_assert_eq(pick_k("g", 0), 0);
	r = no_rl();
	r.rl_tok_left = 500;
	r.rl_tok_reset_ms = 5000;
	route_rate_headers(&w, 0, &r);
	cr_assert_eq(route_why(&w, 0, 1000), SKIP_RATE, "fewer tokens left");
	cr_assert_eq(pick_est("g", 1000, 0), 1);
	cr_assert_eq(pick_est("g", 400, 0), 0);
	r.rl_tok_reset_ms = 0; /* the window has reset */
	route_rate_headers(&w, 0, &r);
	cr_assert_eq(pick_est("g", 1000, 0), 0);
	r = no_rl(); /* a reply without headers changes nothing */
	route_rate_headers(&w, 0, &r);
	cr_assert_eq(atomic_load(&shm.slots[0].rl_tok_left), 500);
}

Test(route_policy, usage_follows_upstream_headroom)
{
	struct up_resp r = no_rl();

	load(DEP("d0", "g", "") ",\n" DEP("d1", "g", ""),
	     "router = { strategy = \"usage\"; };");
	table();
	r.rl_req_limit = 100;
	r.rl_req_reset_ms = 60000;
	r.rl_req_left = 10;
	route_rate_headers(&w, 0, &r);
	r.rl_req_left = 80;
	route_rate_headers(&w, 1, &r);
	for (int i = 0; i < 20; i++)
		cr_assert_eq(pick_k("g", 0), 1, "pick %d", i);
}

/* ---- upstream.c: the headers parsed ---- */

static struct up_resp seen_resp;

static void
rl_headers(void *arg, const struct up_resp *r)
{
	(void)arg;
	seen_resp = *r;
}

static void
rl_data(void *arg, const char *p, size_t n)
{
	(void)arg;
	(void)p;
	(void)n;
}

static void
rl_done(void *arg)
{
	(void)arg;
}

static void
rl_error(void *arg, const char *msg)
{
	(void)arg;
	cr_assert(0, "parser error: %s", msg);
}

/* Parse a reply head with extra header lines h. */
static void
parse_head(const char *h)
{
	static const struct up_cbs cbs = {rl_headers, rl_data, rl_done,
	                                  rl_error};
	char text[2048];

	snprintf(text, sizeof text,
	         "HTTP/1.1 200 OK\r\n%sContent-Length: 2\r\n\r\n{}", h);
	memset(&seen_resp, 0, sizeof seen_resp);
	cr_assert_eq(up_parse(text, strlen(text), 0, 1 << 20, &cbs, NULL), 1);
}

Test(upstream_rl, openai_headers)
{
	parse_head("x-ratelimit-limit-requests: 500\r\n"
	           "X-RateLimit-Remaining-Requests: 499\r\n"
	           "x-ratelimit-reset-requests: 1m30.5s\r\n"
	           "x-ratelimit-limit-tokens: 30000\r\n"
	           "x-ratelimit-remaining-tokens: 29000\r\n"
	           "x-ratelimit-reset-tokens: 20ms\r\n");
	cr_assert_eq(seen_resp.rl_req_limit, 500);
	cr_assert_eq(seen_resp.rl_req_left, 499);
	cr_assert_eq(seen_resp.rl_req_reset_ms, 90500);
	cr_assert_eq(seen_resp.rl_tok_limit, 30000);
	cr_assert_eq(seen_resp.rl_tok_left, 29000);
	cr_assert_eq(seen_resp.rl_tok_reset_ms, 20);
	parse_head("x-ratelimit-reset-requests: 6m0s\r\n"
	           "x-ratelimit-reset-tokens: 2\r\n");
	cr_assert_eq(seen_resp.rl_req_reset_ms, 360000);
	cr_assert_eq(seen_resp.rl_tok_reset_ms, 2000, "bare seconds");
	cr_assert_eq(seen_resp.rl_req_left, -1);
	parse_head("x-ratelimit-reset-requests: soon\r\n"
	           "x-ratelimit-remaining-requests: lots\r\n");
	cr_assert_eq(seen_resp.rl_req_reset_ms, -1);
	cr_assert_eq(seen_resp.rl_req_left, -1);
	parse_head("");
	cr_assert_eq(seen_resp.rl_tok_left, -1);
}

Test(upstream_rl, anthropic_headers)
{
	char h[512];
	time_t t = time(NULL) + 42;
	struct tm tm;
	char when[64];

	gmtime_r(&t, &tm);
	strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
	snprintf(
	    h, sizeof h,
	    "anthropic-ratelimit-requests-limit: 50\r\n"
	    "anthropic-ratelimit-requests-remaining: 0\r\n"
	    "anthropic-ratelimit-requests-reset: %s\r\n"
	    "anthropic-ratelimit-tokens-remaining: 7000\r\n"
	    "anthropic-ratelimit-tokens-reset: 2000-01-01T00:00:00+01:00\r\n",
	    when);
	parse_head(h);
	cr_assert_eq(seen_resp.rl_req_limit, 50);
	cr_assert_eq(seen_resp.rl_req_left, 0);
	cr_assert(seen_resp.rl_req_reset_ms > 40000 &&
	              seen_resp.rl_req_reset_ms <= 42000,
	          "%lld", (long long)seen_resp.rl_req_reset_ms);
	cr_assert_eq(seen_resp.rl_tok_left, 7000);
	cr_assert_eq(seen_resp.rl_tok_reset_ms, 0, "in the past");
	parse_head("anthropic-ratelimit-requests-reset: 12:00\r\n");
	cr_assert_eq(seen_resp.rl_req_reset_ms, -1);
}
