/* Unit tests for common/cfg.c: loading, defaults and every refusal. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/cfg.h"
#include "common/log.h"

static char tdir[64];
static char tfile[PATH_MAX];

/* A fresh directory per test; the config goes in tdir/llmfd.conf. */
static void
setup(void)
{
	snprintf(tdir, sizeof tdir, "/tmp/llmfd-cfg-XXXXXX");
	cr_assert_not_null(mkdtemp(tdir));
	snprintf(tfile, sizeof tfile, "%s/llmfd.conf", tdir);
}

/* Remove the test directory and everything in it. */
static void
teardown(void)
{
	DIR *d = opendir(tdir);
	struct dirent *e;
	char p[PATH_MAX * 2];

	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		snprintf(p, sizeof p, "%s/%s", tdir, e->d_name);
		unlink(p);
	}
	closedir(d);
	rmdir(tdir);
}

TestSuite(cfg, .init = setup, .fini = teardown);

/* Write text to tdir/name. */
static void
write_file(const char *name, const char *text)
{
	char p[PATH_MAX * 2];
	FILE *f;

	snprintf(p, sizeof p, "%s/%s", tdir, name);
	cr_assert_not_null(f = fopen(p, "w"));
	fputs(text, f);
	fclose(f);
}

/* Write text as the config and load it. */
static struct cfg *
load(const char *text, char **cause)
{
	write_file("llmfd.conf", text);
	*cause = NULL;
	return cfg_load(tfile, cause);
}

/* Load text, which must succeed. */
static struct cfg *
load_ok(const char *text)
{
	char *cause;
	struct cfg *c = load(text, &cause);

	cr_assert_not_null(c, "load failed: %s", cause ? cause : "?");
	cr_assert_null(cause);
	return c;
}

/* Load text, which must fail at line (0: no line) with reason in it. */
static void
expect_error(const char *text, int line, const char *reason)
{
	char prefix[PATH_MAX + 32], *cause;
	struct cfg *c = load(text, &cause);

	cr_assert_null(c, "loaded, expected \"%s\"", reason);
	cr_assert_not_null(cause);
	if (line > 0)
		snprintf(prefix, sizeof prefix, "%s:%d: ", tfile, line);
	else
		snprintf(prefix, sizeof prefix, "%s: ", tfile);
	cr_assert(strncmp(cause, prefix, strlen(prefix)) == 0,
	          "cause \"%s\" does not start with \"%s\"", cause, prefix);
	cr_assert(strstr(cause, reason) != NULL,
	          "cause \"%s\" does not contain \"%s\"", cause, reason);
	free(cause);
}

#define DEP "deployments = ( { name = \"a\"; model = \"m\"; } );\n"

Test(cfg, full_valid)
{
	struct cfg *c;
	const struct deploy_cfg *d;
	const struct group_cfg *g;

	setenv("TEST_KEY_A", "sk-aaa", 1);
	c = load_ok(
	    "daemon = { workers = 4; listen = \"/tmp/x.sock\";\n"
	    "  listen_mode = \"0600\"; tcp = \"127.0.0.1:4000\";\n"
	    "  health_table = \"/tmp/h\"; log_level = \"debug\";\n"
	    "  log_format = \"json\"; access_log = \"off\";\n"
	    "  drain_timeout_ms = 5000; user = \"nobody\"; group = "
	    "\"nogroup\";\n"
	    "  on_event_exec = \"/bin/true\";\n"
	    "  on_event_webhook = \"http://127.0.0.1:9/hook\"; };\n"
	    "router = { strategy = \"weighted\"; num_retries = 3;\n"
	    "  backoff_base_ms = 100; backoff_max_ms = 1000; timeout_ms = "
	    "9000;\n"
	    "  attempt_timeout_ms = 3000; first_token_timeout_ms = 2000;\n"
	    "  stream_idle_timeout_ms = 4000; allowed_fails = 1; cooldown_s = "
	    "0;\n"
	    "  circuit_failure_threshold = 2; circuit_recovery_s = 5;\n"
	    "  circuit_max_s = 50; latency_buffer = 0.5;\n"
	    "  queue_when_cooling = false; retry_budget_ratio = 0.5;\n"
	    "  retry_budget_floor = 3; max_ttft_p95_ms = 1500; };\n"
	    "deployments = (\n"
	    " { name = \"oai-4o\"; group = \"gpt-4o\"; provider = \"openai\";\n"
	    "   model = \"gpt-4o\"; api_key = \"$TEST_KEY_A\"; weight = 3;\n"
	    "   rpm = 500; tpm = 200000; context_window = 128000;\n"
	    "   max_tokens = 4096; num_retries = 1; attempt_timeout_ms = "
	    "5000;\n"
	    "   backoff_base_ms = 100; first_token_timeout_ms = 2000;\n"
	    "   stream_idle_timeout_ms = 5000; max_ttft_p95_ms = 700;\n"
	    "   system_prompt_append = \"Be brief.\";\n"
	    "   headers = ( \"X-Foo: bar\" ); params = { temperature = 0.2; }; "
	    "},\n"
	    " { name = \"az\"; group = \"gpt-4o\"; provider = \"azure\";\n"
	    "   base_url = \"https://res.openai.azure.com\"; api_key = "
	    "\"lit\"; },\n"
	    " { name = \"claude\"; provider = \"anthropic\"; model = \"c3\"; "
	    "},\n"
	    " { name = \"gem\"; provider = \"gemini\"; model = \"g1\"; }\n"
	    ");\n"
	    "groups = ( { name = \"gpt-4o\"; strategy = \"latency\";\n"
	    "  stream_resume = \"continue\"; hedge_after_ms = 500; } );\n"
	    "fallbacks = ( { group = \"gpt-4o\"; to = [ \"claude\", \"gem\" ]; "
	    "} );\n"
	    "context_window_fallbacks = ( { group = \"gpt-4o\"; to = \"gem\"; "
	    "} );\n"
	    "content_policy_fallbacks = ( );\n");

	cr_assert_eq(c->workers, 4);
	cr_assert_str_eq(c->listen, "/tmp/x.sock");
	cr_assert_eq(c->listen_mode, 0600);
	cr_assert_str_eq(c->tcp_host, "127.0.0.1");
	cr_assert_eq(c->tcp_port, 4000);
	cr_assert_str_eq(c->health_table, "/tmp/h");
	cr_assert_eq(c->log_level, LOG_LVL_DEBUG);
	cr_assert_eq(c->log_format, LOGF_JSON);
	cr_assert_str_eq(c->access_log, "off");
	cr_assert_eq(c->drain_timeout_ms, 5000);
	cr_assert_str_eq(c->user, "nobody");
	cr_assert_str_eq(c->group, "nogroup");
	cr_assert_str_eq(c->on_event_exec, "/bin/true");
	cr_assert_str_eq(c->on_event_webhook, "http://127.0.0.1:9/hook");

	cr_assert_eq(c->strategy, STRAT_WEIGHTED);
	cr_assert_eq(c->num_retries, 3);
	cr_assert_eq(c->backoff_base_ms, 100);
	cr_assert_eq(c->backoff_max_ms, 1000);
	cr_assert_eq(c->timeout_ms, 9000);
	cr_assert_eq(c->attempt_timeout_ms, 3000);
	cr_assert_eq(c->first_token_timeout_ms, 2000);
	cr_assert_eq(c->stream_idle_timeout_ms, 4000);
	cr_assert_eq(c->allowed_fails, 1);
	cr_assert_eq(c->cooldown_s, 0);
	cr_assert_eq(c->circuit_failure_threshold, 2);
	cr_assert_eq(c->circuit_recovery_s, 5);
	cr_assert_eq(c->circuit_max_s, 50);
	cr_assert_float_eq(c->latency_buffer, 0.5, 1e-9);
	cr_assert_eq(c->queue_when_cooling, 0);
	cr_assert_float_eq(c->retry_budget_ratio, 0.5, 1e-9);
	cr_assert_eq(c->retry_budget_floor, 3);
	cr_assert_eq(c->max_ttft_p95_ms, 1500);

	cr_assert_eq(c->ndeploy, 4);
	d = &c->deploy[0];
	cr_assert_str_eq(d->name, "oai-4o");
	cr_assert_str_eq(d->group, "gpt-4o");
	cr_assert_eq(d->provider, PROV_OPENAI);
	cr_assert_str_eq(d->base_url, "https://api.openai.com/v1");
	cr_assert_eq(d->tls, 1);
	cr_assert_str_eq(d->host, "api.openai.com");
	cr_assert_eq(d->port, 443);
	cr_assert_str_eq(d->path, "/v1");
	cr_assert_str_eq(d->api_key, "sk-aaa");
	cr_assert_str_eq(d->api_key_var, "TEST_KEY_A");
	cr_assert_eq(d->weight, 3);
	cr_assert_eq(d->rpm, 500);
	cr_assert_eq(d->tpm, 200000);
	cr_assert_eq(d->context_window, 128000);
	cr_assert_eq(d->max_tokens, 4096);
	cr_assert_eq(d->num_retries, 1);
	cr_assert_eq(d->attempt_timeout_ms, 5000);
	cr_assert_eq(d->backoff_base_ms, 100);
	cr_assert_eq(d->first_token_timeout_ms, 2000);
	cr_assert_eq(d->stream_idle_timeout_ms, 5000);
	cr_assert_eq(d->max_ttft_p95_ms, 700);
	cr_assert_str_eq(d->system_prompt_append, "Be brief.");
	cr_assert_eq(d->nheaders, 1);
	cr_assert_str_eq(d->params, "{\"temperature\":0.2}");
	cr_assert_eq(d->line, 17);

	d = &c->deploy[1];
	cr_assert_eq(d->provider, PROV_AZURE);
	cr_assert_str_eq(d->model, "az");
	cr_assert_str_eq(d->azure_deployment, "az");
	cr_assert_str_eq(d->api_version, "2024-10-21");
	cr_assert_str_eq(d->api_key, "lit");
	cr_assert_str_eq(d->api_key_var, "");
	cr_assert_str_eq(c->deploy[2].base_url, "https://api.anthropic.com");
	cr_assert_str_eq(c->deploy[2].path, "");
	cr_assert_str_eq(c->deploy[2].group, "claude");
	cr_assert_str_eq(c->deploy[3].base_url,
	                 "https://generativelanguage.googleapis.com");

	cr_assert_eq(c->ngroup, 3);
	g = cfg_find_group(c, "gpt-4o");
	cr_assert_not_null(g);
	cr_assert_eq(g->strategy, STRAT_LATENCY);
	cr_assert_eq(g->stream_resume, RESUME_CONTINUE);
	cr_assert_eq(g->hedge_after_ms, 500);
	cr_assert_eq(g->ndeploy, 2);
	cr_assert_eq(g->deploy[0], 0);
	cr_assert_eq(g->deploy[1], 1);
	cr_assert_eq(cfg_eff_strategy(c, g), STRAT_LATENCY);
	cr_assert_eq(cfg_eff_strategy(c, cfg_find_group(c, "claude")),
	             STRAT_WEIGHTED);

	cr_assert_eq(c->fallbacks.n, 1);
	cr_assert_eq(c->fallbacks.v[0].nto, 2);
	cr_assert_str_eq(c->fallbacks.v[0].to[1], "gem");
	cr_assert_not_null(cfg_find_fallback(&c->cw_fallbacks, "gpt-4o"));
	cr_assert_str_eq(c->cw_fallbacks.v[0].to[0], "gem");
	cr_assert_null(cfg_find_fallback(&c->cp_fallbacks, "gpt-4o"));
	cfg_free(c);
}

Test(cfg, defaults)
{
	struct cfg *c = load_ok(DEP);
	const struct deploy_cfg *d = &c->deploy[0];
	char want[PATH_MAX * 2];

	cr_assert_eq(c->workers, 2);
	cr_assert_str_eq(c->listen, "/run/llmfd/llmfd.sock");
	cr_assert_eq(c->listen_mode, 0660);
	cr_assert_str_eq(c->tcp, "");
	cr_assert_eq(c->tcp_port, 0);
	cr_assert_str_eq(c->health_table, "/run/llmfd/health");
	cr_assert_eq(c->log_level, LOG_LVL_INFO);
	cr_assert_eq(c->log_format, LOGF_TEXT);
	cr_assert_str_eq(c->access_log, "");
	cr_assert_eq(c->drain_timeout_ms, 30000);
	cr_assert_eq(c->strategy, STRAT_ORDERED);
	cr_assert_eq(c->num_retries, 2);
	cr_assert_eq(c->backoff_base_ms, 250);
	cr_assert_eq(c->backoff_max_ms, 8000);
	cr_assert_eq(c->timeout_ms, 60000);
	cr_assert_eq(c->attempt_timeout_ms, 30000);
	cr_assert_eq(c->first_token_timeout_ms, 10000);
	cr_assert_eq(c->stream_idle_timeout_ms, 30000);
	cr_assert_eq(c->allowed_fails, 3);
	cr_assert_eq(c->cooldown_s, 30);
	cr_assert_eq(c->circuit_failure_threshold, 5);
	cr_assert_eq(c->circuit_recovery_s, 30);
	cr_assert_eq(c->circuit_max_s, 30); /* no growth unless set */
	cr_assert_float_eq(c->latency_buffer, 0.1, 1e-9);
	cr_assert_eq(c->queue_when_cooling, 1);
	cr_assert_float_eq(c->retry_budget_ratio, 0.2, 1e-9);
	cr_assert_eq(c->retry_budget_floor, 10);
	cr_assert_eq(c->max_ttft_p95_ms, 0);

	cr_assert_str_eq(d->group, "a");
	cr_assert_eq(d->provider, PROV_OPENAI);
	cr_assert_str_eq(d->base_url, "https://api.openai.com/v1");
	cr_assert_eq(d->weight, 1);
	cr_assert_eq(d->rpm, 0);
	cr_assert_str_eq(d->api_key, "");
	cr_assert_str_eq(d->api_version, "");
	cr_assert_null(d->params);
	cr_assert_null(d->system_prompt_append);
	cr_assert_eq(d->nheaders, 0);
	cr_assert_eq(d->num_retries, -1);
	cr_assert_eq(cfg_eff_num_retries(c, d), 2);
	cr_assert_eq(cfg_eff_attempt_timeout_ms(c, d), 30000);
	cr_assert_eq(cfg_eff_backoff_base_ms(c, d), 250);
	cr_assert_eq(cfg_eff_first_token_timeout_ms(c, d), 10000);
	cr_assert_eq(cfg_eff_stream_idle_timeout_ms(c, d), 30000);
	cr_assert_eq(d->max_ttft_p95_ms, -1);
	cr_assert_eq(cfg_eff_max_ttft_p95_ms(c, d), 0);
	cr_assert_eq(cfg_eff_strategy(c, NULL), STRAT_ORDERED);
	cr_assert_eq(c->ngroup, 1);
	cr_assert_eq(c->groups[0].strategy, -1);
	cr_assert_eq(c->fallbacks.n, 0);
	cr_assert_not_null(realpath(tfile, want));
	cr_assert_str_eq(c->file, want);
	cfg_free(c);
}

Test(cfg, eff_overrides)
{
	struct cfg *c = load_ok(
	    "deployments = ( { name = \"a\"; model = \"m\"; num_retries = 0;\n"
	    " attempt_timeout_ms = 7; backoff_base_ms = 0;\n"
	    " first_token_timeout_ms = 8; stream_idle_timeout_ms = 9; } );\n");

	cr_assert_eq(cfg_eff_num_retries(c, &c->deploy[0]), 0);
	cr_assert_eq(cfg_eff_attempt_timeout_ms(c, &c->deploy[0]), 7);
	cr_assert_eq(cfg_eff_backoff_base_ms(c, &c->deploy[0]), 0);
	cr_assert_eq(cfg_eff_first_token_timeout_ms(c, &c->deploy[0]), 8);
	cr_assert_eq(cfg_eff_stream_idle_timeout_ms(c, &c->deploy[0]), 9);
	cfg_free(c);
}

/* The settings table. */

/* The value of table setting e in the struct at base as the file writes
 * it, strings unquoted; "-1" for an unset inherited value. */
static void
value_text(const struct cfg_setting *e, const void *base, char *out,
           size_t size)
{
	const char *p = (const char *)base + e->off;
	int v = *(const int *)p;

	switch (e->type) {
	case CFG_INT:
		snprintf(out, size, "%d", v);
		break;
	case CFG_LONG:
		snprintf(out, size, "%ld", *(const long *)p);
		break;
	case CFG_BOOL:
		snprintf(out, size, "%s", v ? "true" : "false");
		break;
	case CFG_DOUBLE:
		snprintf(out, size, "%g", *(const double *)p);
		break;
	case CFG_STRING:
	case CFG_PATH:
		snprintf(out, size, "%s", p);
		break;
	case CFG_ENUM:
		snprintf(out, size, "%s", v >= 0 ? e->names[v] : "-1");
		break;
	case CFG_MODE:
		snprintf(out, size, "%04o", (unsigned)v);
		break;
	case CFG_OTHER:
		out[0] = '\0';
		break;
	}
}

/* Whether a and b name the same setting of one section, counting router
 * settings a deployment overrides as deployment settings. */
static int
same_setting(const struct cfg_setting *a, const struct cfg_setting *b)
{
	int sa = a->dep_size ? CFG_SEC_DEPLOY : (int)a->section;
	int sb = b->dep_size ? CFG_SEC_DEPLOY : (int)b->section;

	return strcmp(a->name, b->name) == 0 &&
	       (a->section == b->section || sa == sb);
}

/* The field size a setting of type t needs; 0 for strings (any). */
static size_t
type_size(enum cfg_type t)
{
	switch (t) {
	case CFG_LONG:
		return sizeof(long);
	case CFG_DOUBLE:
		return sizeof(double);
	case CFG_STRING:
	case CFG_PATH:
	case CFG_OTHER:
		return 0;
	default:
		return sizeof(int);
	}
}

/* Checks of one numeric or enumerated entry: default in bounds, names. */
static void
check_entry_values(const struct cfg_setting *e)
{
	double d;

	if (e->type == CFG_INT || e->type == CFG_LONG ||
	    e->type == CFG_DOUBLE || e->type == CFG_MODE) {
		cr_assert_leq(e->min, e->max, "%s", e->name);
		if (e->def != NULL) {
			d = e->type == CFG_MODE
			        ? (double)strtol(e->def, NULL, 8)
			        : strtod(e->def, NULL);
			cr_assert(d >= (double)e->min && d <= (double)e->max,
			          "%s: default %s out of bounds", e->name,
			          e->def);
		}
	}
	if (e->type == CFG_ENUM) {
		cr_assert_not_null(e->names, "%s", e->name);
		for (int i = 0; e->names[i] != NULL && e->parse != NULL; i++)
			cr_assert_eq(e->parse(e->names[i]), i, "%s: %s",
			             e->name, e->names[i]);
	}
}

Test(cfg, table_consistent)
{
	int n = 0;

	for (const struct cfg_setting *e = cfg_settings; e->name != NULL;
	     e++, n++) {
		cr_assert_lt(e->section, CFG_SEC__MAX, "%s", e->name);
		for (const struct cfg_setting *o = cfg_settings; o < e; o++)
			cr_assert(!same_setting(o, e), "%s listed twice",
			          e->name);
		if (e->type == CFG_OTHER) {
			cr_assert(e->size == 0 && e->dep_size == 0 &&
			              e->doc == NULL,
			          "%s", e->name);
			continue;
		}
		cr_assert(e->doc != NULL && e->doc[0] != '\0', "%s", e->name);
		cr_assert(type_size(e->type) == 0 ||
		              type_size(e->type) == e->size,
		          "%s: field size %zu", e->name, e->size);
		cr_assert(e->def != NULL || e->type == CFG_INT ||
		              e->type == CFG_ENUM,
		          "%s: only an int can inherit (-1)", e->name);
		/* an override is an int whose -1 cannot be a value */
		cr_assert(e->dep_size == 0 ||
		              (e->section == CFG_SEC_ROUTER &&
		               e->type == CFG_INT && e->min >= 0 &&
		               e->dep_size == sizeof(int)),
		          "%s: bad override", e->name);
		check_entry_values(e);
	}
	cr_assert_geq(n, 40);
}

Test(cfg, defaults_from_table)
{
	struct cfg *c = load_ok(DEP "groups = ( { name = \"a\"; } );\n");
	const void *base[CFG_SEC__MAX] = {
	    c, c, &c->deploy[0], &c->groups[0], &c->clients[c->def_client], c};
	char got[PATH_MAX];
	int n = 0;

	for (const struct cfg_setting *e = cfg_settings; e->name != NULL; e++) {
		if (e->type == CFG_OTHER)
			continue;
		value_text(e, base[e->section], got, sizeof got);
		cr_assert_str_eq(got, e->def ? e->def : "-1", "%s", e->name);
		if (e->dep_size != 0)
			cr_assert_eq(
			    *(const int *)((const char *)&c->deploy[0] +
			                   e->dep_off),
			    -1, "deployment %s not unset", e->name);
		n++;
	}
	cr_assert_geq(n, 30);
	cfg_free(c);
}

/* Config text putting `name = v;` at line 2 or 3 of section sec (a
 * deployment named a, a group named a); its message prefix in pfx. */
static void
setting_at(int sec, const char *name, const char *v, char *text, size_t size,
           char *pfx, size_t pfxsize, int *line)
{
	static const char *const head[] = {
	    "daemon = {\n",
	    "router = {\n",
	    "",
	    "groups = ( { name = \"a\";\n",
	    "clients = ( { name = \"a\"; uid = 5;\n",
	    "fleet = {\n"};
	static const char *const tail[] = {" };\n",   " };\n",   "",
	                                   " } );\n", " } );\n", " };\n"};
	static const char *const names[] = {"daemon", "router", "",
	                                    "",       "",       "fleet"};

	if (sec == CFG_SEC_DEPLOY) {
		snprintf(text, size,
		         "deployments = ( { name = \"a\"; model = \"m\";\n"
		         " %s = %s; } );\n",
		         name, v);
		snprintf(pfx, pfxsize, "deployment 'a': %s: ", name);
		*line = 2;
		return;
	}
	snprintf(text, size, DEP "%s %s = %s;%s", head[sec], name, v,
	         tail[sec]);
	if (sec == CFG_SEC_GROUP)
		snprintf(pfx, pfxsize, "group 'a': %s: ", name);
	else if (sec == CFG_SEC_CLIENT)
		snprintf(pfx, pfxsize, "client 'a': %s: ", name);
	else
		snprintf(pfx, pfxsize, "%s.%s: ", names[sec], name);
	*line = 3;
}

/* A value just outside e's bounds refused at its line with the bounds. */
static void
expect_bounds(const struct cfg_setting *e, int sec)
{
	char text[512], pfx[128], v[32], want[256];
	int line, open = e->max == INT_MAX || e->max == LONG_MAX;

	snprintf(v, sizeof v, "%lld", open ? e->min - 1 : e->max + 1);
	setting_at(sec, e->name, v, text, sizeof text, pfx, sizeof pfx, &line);
	if (open)
		snprintf(want, sizeof want, "%smust be at least %lld", pfx,
		         e->min);
	else
		snprintf(want, sizeof want, "%smust be between %lld and %lld",
		         pfx, e->min, e->max);
	expect_error(text, line, want);
}

Test(cfg, bounds_from_table)
{
	int n = 0;

	for (const struct cfg_setting *e = cfg_settings; e->name != NULL; e++) {
		if (e->type != CFG_INT && e->type != CFG_LONG &&
		    e->type != CFG_DOUBLE)
			continue;
		expect_bounds(e, (int)e->section);
		if (e->dep_size != 0)
			expect_bounds(e, CFG_SEC_DEPLOY);
		n++;
	}
	cr_assert_geq(n, 20);
}

Test(cfg, bound_violation_message)
{
	expect_error(DEP "router = {\n"
	                 " num_retries = 2;\n"
	                 " retry_budget_ratio = 1.5; };\n",
	             4, "router.retry_budget_ratio: must be between 0 and 1");
}

Test(cfg, override_only_where_the_table_says)
{
	expect_error("deployments = ( { name = \"a\"; model = \"m\";\n"
	             " timeout_ms = 5; } );\n",
	             2, "deployment 'a': unknown setting 'timeout_ms'");
	expect_error(DEP "router = {\n weight = 2; };\n", 3,
	             "router: unknown setting 'weight'");
	expect_error(DEP "groups = ( { name = \"a\";\n num_retries = 1; } );\n",
	             3, "group 'a': unknown setting 'num_retries'");
}

Test(cfg, deploy_override_beats_router)
{
	struct cfg *c = load_ok(
	    "router = { num_retries = 3; attempt_timeout_ms = 900;\n"
	    " backoff_base_ms = 50; first_token_timeout_ms = 800;\n"
	    " stream_idle_timeout_ms = 700; max_ttft_p95_ms = 500; };\n"
	    "deployments = ( { name = \"a\"; model = \"m\"; num_retries = 1;\n"
	    " attempt_timeout_ms = 90; backoff_base_ms = 5;\n"
	    " first_token_timeout_ms = 80; stream_idle_timeout_ms = 70;\n"
	    " max_ttft_p95_ms = 200; },\n"
	    " { name = \"b\"; model = \"m\"; } );\n");
	static const struct {
		int (*eff)(const struct cfg *, const struct deploy_cfg *);
		int a, b;
	} want[] = {
	    {cfg_eff_num_retries, 1, 3},
	    {cfg_eff_attempt_timeout_ms, 90, 900},
	    {cfg_eff_backoff_base_ms, 5, 50},
	    {cfg_eff_first_token_timeout_ms, 80, 800},
	    {cfg_eff_stream_idle_timeout_ms, 70, 700},
	    {cfg_eff_max_ttft_p95_ms, 200, 500},
	};

	for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
		cr_assert_eq(want[i].eff(c, &c->deploy[0]), want[i].a, "%zu",
		             i);
		cr_assert_eq(want[i].eff(c, &c->deploy[1]), want[i].b, "%zu",
		             i);
	}
	cfg_free(c);
}

Test(cfg, max_ttft_override_zero_turns_off)
{
	struct cfg *c = load_ok(
	    "router = { max_ttft_p95_ms = 300; };\n"
	    "deployments = (\n"
	    " { name = \"off\"; model = \"m\"; max_ttft_p95_ms = 0; },\n"
	    " { name = \"inherit\"; model = \"m\"; },\n"
	    " { name = \"own\"; model = \"m\"; max_ttft_p95_ms = 100; } );\n");

	cr_assert_eq(c->deploy[0].max_ttft_p95_ms, 0);
	cr_assert_eq(cfg_eff_max_ttft_p95_ms(c, &c->deploy[0]), 0);
	cr_assert_eq(c->deploy[1].max_ttft_p95_ms, -1);
	cr_assert_eq(cfg_eff_max_ttft_p95_ms(c, &c->deploy[1]), 300);
	cr_assert_eq(cfg_eff_max_ttft_p95_ms(c, &c->deploy[2]), 100);
	cfg_free(c);
	/* and on for one deployment while the router's is off */
	c = load_ok("deployments = ( { name = \"on\"; model = \"m\";"
	            " max_ttft_p95_ms = 250; } );\n");
	cr_assert_eq(c->max_ttft_p95_ms, 0);
	cr_assert_eq(cfg_eff_max_ttft_p95_ms(c, &c->deploy[0]), 250);
	cfg_free(c);
}

Test(cfg, shipped_config)
{
	struct cfg *c;
	char *cause = NULL;

	if (access("llmfd.conf", R_OK) == -1)
		cr_skip_test("run from the repository root");
	setenv("LLMFD_DEMO_KEY", "demo", 1);
	c = cfg_load("llmfd.conf", &cause);
	cr_assert_not_null(c, "%s", cause ? cause : "?");
	cr_assert_str_eq(c->listen, "/tmp/llmfd-demo/llmfd.sock");
	cr_assert_str_eq(c->health_table, "/tmp/llmfd-demo/health");
	cr_assert_eq(c->tcp_port, 4000);
	cr_assert_eq(c->ndeploy, 2);
	cr_assert_eq(c->ngroup, 2);
	cr_assert_str_eq(c->deploy[0].group, "gpt-4o");
	cr_assert_eq(c->deploy[0].port, 18081);
	cr_assert_eq(c->deploy[1].port, 18082);
	cr_assert_str_eq(cfg_find_fallback(&c->fallbacks, "gpt-4o")->to[0],
	                 "backup");
	cfg_free(c);

	unsetenv("LLMFD_DEMO_KEY");
	cr_assert_null(cfg_load("llmfd.conf", &cause));
	cr_assert(strstr(cause, "LLMFD_DEMO_KEY is not set") != NULL, "%s",
	          cause);
	free(cause);
}

/* Syntax and structure. */

Test(cfg, syntax_error)
{
	expect_error(DEP "router = { num_retries = ; };\n", 2, "syntax error");
}

Test(cfg, missing_file)
{
	char *cause = NULL;

	cr_assert_null(cfg_load("/nonexistent/llmfd.conf", &cause));
	cr_assert_str_eq(
	    cause,
	    "/nonexistent/llmfd.conf: cannot read: No such file or directory");
	free(cause);
}

Test(cfg, deployments_missing)
{
	expect_error("daemon = { workers = 1; };\n", 0,
	             "deployments: at least one deployment is required");
}

Test(cfg, deployments_empty)
{
	expect_error("\ndeployments = ( );\n", 2,
	             "deployments: at least one deployment is required");
}

Test(cfg, deployments_not_list)
{
	expect_error("deployments = { name = \"a\"; };\n", 1,
	             "deployments: expected a list");
}

Test(cfg, unknown_section)
{
	expect_error(DEP "\nrouterr = { };\n", 3, "unknown section 'routerr'");
}

Test(cfg, unknown_daemon_setting)
{
	expect_error(DEP "daemon = {\n workers = 2;\n worker = 3; };\n", 4,
	             "daemon: unknown setting 'worker'");
}

Test(cfg, unknown_router_setting)
{
	expect_error(DEP "router = {\n num_retry = 3; };\n", 3,
	             "router: unknown setting 'num_retry'");
}

Test(cfg, unknown_deploy_setting)
{
	expect_error("deployments = ( { name = \"a\"; model = \"m\";\n"
	             " wieght = 2; } );\n",
	             2, "deployment 'a': unknown setting 'wieght'");
}

Test(cfg, unknown_group_setting)
{
	expect_error(DEP "groups = ( { name = \"a\";\n strat = \"x\"; } );\n",
	             3, "group 'a': unknown setting 'strat'");
}

Test(cfg, unknown_fallback_setting)
{
	expect_error(DEP "fallbacks = ( { group = \"a\";\n too = [ ]; } );\n",
	             3, "fallbacks[0]: unknown setting 'too'");
}

/* Types. */

Test(cfg, type_int)
{
	expect_error(DEP "router = {\n num_retries = \"2\"; };\n", 3,
	             "router.num_retries: expected an integer");
}

Test(cfg, type_int_float)
{
	expect_error(DEP "daemon = { workers = 2.5; };\n", 2,
	             "daemon.workers: expected an integer");
}

Test(cfg, type_string)
{
	expect_error(DEP "daemon = { log_level = 3; };\n", 2,
	             "daemon.log_level: expected a string");
}

Test(cfg, type_bool)
{
	expect_error(DEP "router = { queue_when_cooling = 1; };\n", 2,
	             "router.queue_when_cooling: expected true or false");
}

Test(cfg, type_number)
{
	expect_error(DEP "router = { latency_buffer = \"x\"; };\n", 2,
	             "router.latency_buffer: expected a number");
}

Test(cfg, type_deploy_int)
{
	expect_error("deployments = ( { name = \"a\"; model = \"m\";\n"
	             " weight = \"3\"; } );\n",
	             2, "deployment 'a': weight: expected an integer");
}

Test(cfg, type_section)
{
	expect_error(DEP "router = 3;\n", 2, "router: expected a group");
}

Test(cfg, int64_and_float_from_int)
{
	struct cfg *c = load_ok(
	    "router = { latency_buffer = 1; retry_budget_ratio = 1; };\n"
	    "deployments = ( { name = \"a\"; model = \"m\"; tpm = 5000000000L;"
	    " rpm = 7L; } );\n");

	cr_assert_float_eq(c->latency_buffer, 1.0, 1e-9);
	cr_assert_eq(c->deploy[0].tpm, 5000000000L);
	cr_assert_eq(c->deploy[0].rpm, 7);
	cfg_free(c);
}

/* Ranges. */

Test(cfg, workers_range)
{
	expect_error(DEP "daemon = { workers = 17; };\n", 2,
	             "daemon.workers: must be between 1 and 16");
}

Test(cfg, workers_zero)
{
	expect_error(DEP "daemon = { workers = 0; };\n", 2,
	             "daemon.workers: must be between 1 and 16");
}

Test(cfg, num_retries_range)
{
	expect_error(DEP "router = { num_retries = 11; };\n", 2,
	             "router.num_retries: must be between 0 and 10");
}

Test(cfg, timeout_positive)
{
	expect_error(DEP "router = { timeout_ms = 0; };\n", 2,
	             "router.timeout_ms: must be at least 1");
}

Test(cfg, deploy_timeout_positive)
{
	expect_error(
	    "deployments = ( { name = \"a\"; model = \"m\";\n"
	    " first_token_timeout_ms = 0; } );\n",
	    2, "deployment 'a': first_token_timeout_ms: must be at least 1");
}

Test(cfg, backoff_order)
{
	expect_error(
	    DEP "router = { backoff_max_ms = 100;\n"
	        " backoff_base_ms = 200; };\n",
	    3,
	    "router.backoff_base_ms: backoff_base_ms (200) must not exceed "
	    "backoff_max_ms (100)");
}

Test(cfg, deploy_backoff_order)
{
	expect_error("deployments = ( { name = \"a\"; model = \"m\";\n"
	             " backoff_base_ms = 9000; } );\n",
	             2,
	             "deployment 'a': backoff_base_ms: must not exceed "
	             "router.backoff_max_ms (8000)");
}

Test(cfg, circuit_order)
{
	expect_error(
	    DEP "router = { circuit_max_s = 10; };\n", 2,
	    "circuit_recovery_s (30) must not exceed circuit_max_s (10)");
}

Test(cfg, weight_range)
{
	expect_error("deployments = ( { name = \"a\"; model = \"m\";\n"
	             " weight = 1000001; } );\n",
	             2,
	             "deployment 'a': weight: must be between 0 and 1000000");
}

Test(cfg, latency_buffer_range)
{
	expect_error(DEP "router = { latency_buffer = 10.5; };\n", 2,
	             "router.latency_buffer: must be between 0 and 10");
}

Test(cfg, retry_budget_ratio_range)
{
	expect_error(DEP "router = { retry_budget_ratio = -0.1; };\n", 2,
	             "router.retry_budget_ratio: must be between 0 and 1");
}

Test(cfg, cooldown_negative)
{
	expect_error(DEP "router = { cooldown_s = -1; };\n", 2,
	             "router.cooldown_s: must be at least 0");
}

Test(cfg, rpm_negative)
{
	expect_error("deployments = ( { name = \"a\"; model = \"m\";\n"
	             " rpm = -5; } );\n",
	             2, "deployment 'a': rpm: must be at least 0");
}

/* Enumerations. */

Test(cfg, log_level_bad)
{
	expect_error(
	    DEP "daemon = { log_level = \"loud\"; };\n", 2,
	    "daemon.log_level: unknown value \"loud\" (expected error, warn, "
	    "info or debug)");
}

Test(cfg, log_format_bad)
{
	expect_error(DEP "daemon = { log_format = \"xml\"; };\n", 2,
	             "daemon.log_format: unknown value \"xml\"");
}

Test(cfg, strategy_bad)
{
	expect_error(DEP "router = { strategy = \"random\"; };\n", 2,
	             "router.strategy: unknown value \"random\"");
}

Test(cfg, strategy_names)
{
	for (int i = 0; i < STRAT__MAX; i++)
		cr_assert_eq(cfg_strategy_parse(cfg_strategy_name(i)), i);
	cr_assert_eq(cfg_strategy_parse("least-busy"), STRAT_LEAST_BUSY);
	cr_assert_eq(cfg_strategy_parse("nope"), -1);
	cr_assert_str_eq(cfg_strategy_name(99), "?");
}

Test(cfg, provider_aliases)
{
	struct cfg *c;

	for (int i = 0; i < PROV__MAX; i++)
		cr_assert_eq(cfg_provider_parse(cfg_provider_name(i)), i);
	cr_assert_eq(cfg_provider_parse("ollama"), PROV_OPENAI);
	cr_assert_eq(cfg_provider_parse("vllm"), PROV_OPENAI);
	cr_assert_eq(cfg_provider_parse("openai-compatible"), PROV_OPENAI);
	cr_assert_eq(cfg_provider_parse("watsonx"), -1);
	c = load_ok(
	    "deployments = (\n"
	    " { name = \"o\"; provider = \"ollama\"; model = \"llama3\";\n"
	    "   base_url = \"http://127.0.0.1:11434/v1\"; },\n"
	    " { name = \"v\"; provider = \"vllm\"; model = \"x\"; },\n"
	    " { name = \"c\"; provider = \"openai-compatible\";"
	    " model = \"y\"; } );\n");
	for (int i = 0; i < 3; i++)
		cr_assert_eq(c->deploy[i].provider, PROV_OPENAI);
	cr_assert_eq(c->deploy[0].port, 11434);
	cfg_free(c);
}

Test(cfg, provider_bad)
{
	expect_error("deployments = ( { name = \"a\"; model = \"m\";\n"
	             " provider = \"watsonx\"; } );\n",
	             2, "deployment 'a': provider: unknown value \"watsonx\"");
}

/* Daemon settings. */

Test(cfg, listen_mode_int)
{
	struct cfg *c = load_ok(DEP "daemon = { listen_mode = 384; };\n");

	cr_assert_eq(c->listen_mode, 0600);
	cfg_free(c);
}

Test(cfg, listen_mode_bad)
{
	expect_error(
	    DEP "daemon = { listen_mode = \"0680\"; };\n", 2,
	    "daemon.listen_mode: expected an octal mode like \"0660\"");
}

Test(cfg, listen_mode_range)
{
	expect_error(DEP "daemon = { listen_mode = \"01777\"; };\n", 2,
	             "daemon.listen_mode: must be between 0000 and 0777");
}

Test(cfg, listen_group)
{
	struct cfg *c = load_ok(DEP "daemon = { listen_group = \"root\"; };\n");

	cr_assert_str_eq(c->listen_group, "root");
	cr_assert_eq(cfg_group_id(c->listen_group), 0);
	cfg_free(c);
	c = load_ok(DEP "daemon = { listen_group = \"4242\"; };\n");
	cr_assert_eq(cfg_group_id(c->listen_group), 4242);
	cfg_free(c);
	c = load_ok(DEP);
	cr_assert_str_eq(c->listen_group, "");
	cfg_free(c);
}

Test(cfg, listen_group_unknown)
{
	expect_error(DEP "daemon = { listen_group = \"no-such-grp\"; };\n", 2,
	             "daemon.listen_group: no such group");
}

Test(cfg, listen_too_long)
{
	char text[512], path[200];

	memset(path, 'x', 110);
	path[0] = '/';
	path[110] = '\0';
	snprintf(text, sizeof text, DEP "daemon = { listen = \"%s\"; };\n",
	         path);
	expect_error(text, 2, "daemon.listen: too long (at most 107 bytes)");
}

Test(cfg, listen_empty)
{
	expect_error(DEP "daemon = { listen = \"\"; };\n", 2,
	             "daemon.listen: must not be empty");
}

Test(cfg, tcp_variants)
{
	struct cfg *c;

	c = load_ok(DEP "daemon = { tcp = \"localhost:8080\"; };\n");
	cr_assert_str_eq(c->tcp_host, "127.0.0.1");
	cr_assert_eq(c->tcp_port, 8080);
	cr_assert_str_eq(c->tcp, "localhost:8080");
	cfg_free(c);
	c = load_ok(DEP "daemon = { tcp = \"[::1]:4001\"; };\n");
	cr_assert_str_eq(c->tcp_host, "::1");
	cr_assert_eq(c->tcp_port, 4001);
	cfg_free(c);
	c = load_ok(DEP "daemon = { tcp = \"127.1.2.3:1\"; };\n");
	cr_assert_str_eq(c->tcp_host, "127.1.2.3");
	cfg_free(c);
	c = load_ok(DEP "daemon = { tcp = \"\"; };\n");
	cr_assert_eq(c->tcp_port, 0);
	cfg_free(c);
}

Test(cfg, tcp_not_loopback)
{
	expect_error(DEP "daemon = { tcp = \"0.0.0.0:4000\"; };\n", 2,
	             "daemon.tcp: host must be a loopback address");
}

Test(cfg, tcp_v6_not_loopback)
{
	expect_error(DEP "daemon = { tcp = \"[::]:4000\"; };\n", 2,
	             "daemon.tcp: host must be a loopback address");
}

Test(cfg, tcp_hostname)
{
	expect_error(DEP "daemon = { tcp = \"example.com:4000\"; };\n", 2,
	             "daemon.tcp: host must be a loopback address");
}

Test(cfg, tcp_bad_port)
{
	expect_error(DEP "daemon = { tcp = \"127.0.0.1:70000\"; };\n", 2,
	             "daemon.tcp: port must be 1..65535");
}

Test(cfg, tcp_no_port)
{
	expect_error(DEP "daemon = { tcp = \"127.0.0.1\"; };\n", 2,
	             "daemon.tcp: expected \"host:port\"");
}

Test(cfg, webhook_bad)
{
	expect_error(
	    DEP "daemon = { on_event_webhook = \"ftp://x\"; };\n", 2,
	    "daemon.on_event_webhook: URL must start with http:// or https://");
}

Test(cfg, relative_paths)
{
	struct cfg *c;
	char dir[PATH_MAX], want[PATH_MAX * 2];

	write_file("ca.pem", "x\n");
	c = load_ok("daemon = { listen = \"llmfd.sock\";\n"
	            " health_table = \"run/health\"; access_log = \"a.log\";\n"
	            " on_event_exec = \"hook.sh\"; };\n"
	            "deployments = ( { name = \"a\"; model = \"m\";"
	            " ca_file = \"ca.pem\"; } );\n");
	cr_assert_not_null(realpath(tdir, dir));
	snprintf(want, sizeof want, "%s/llmfd.sock", dir);
	cr_assert_str_eq(c->listen, want);
	snprintf(want, sizeof want, "%s/run/health", dir);
	cr_assert_str_eq(c->health_table, want);
	snprintf(want, sizeof want, "%s/a.log", dir);
	cr_assert_str_eq(c->access_log, want);
	snprintf(want, sizeof want, "%s/hook.sh", dir);
	cr_assert_str_eq(c->on_event_exec, want);
	snprintf(want, sizeof want, "%s/ca.pem", dir);
	cr_assert_str_eq(c->deploy[0].ca_file, want);
	cfg_free(c);
}

Test(cfg, relative_from_cwd)
{
	struct cfg *c;
	char cause_dir[PATH_MAX], want[PATH_MAX * 2], *cause = NULL;

	write_file("llmfd.conf", DEP "daemon = { listen = \"s.sock\"; };\n");
	cr_assert_eq(chdir(tdir), 0);
	c = cfg_load("llmfd.conf", &cause);
	cr_assert_not_null(c, "%s", cause ? cause : "?");
	cr_assert_not_null(realpath(".", cause_dir));
	snprintf(want, sizeof want, "%s/s.sock", cause_dir);
	cr_assert_str_eq(c->listen, want);
	snprintf(want, sizeof want, "%s/llmfd.conf", cause_dir);
	cr_assert_str_eq(c->file, want);
	cfg_free(c);
}

Test(cfg, ca_file_missing)
{
	expect_error("deployments = ( { name = \"a\"; model = \"m\";\n"
	             " ca_file = \"nope.pem\"; } );\n",
	             2, "deployment 'a': ca_file: cannot read ");
}

/* Deployments. */

Test(cfg, name_required)
{
	expect_error("deployments = (\n { name = \"a\"; model = \"m\"; },\n"
	             " { model = \"m\"; } );\n",
	             3, "deployments[1]: name is required");
}

Test(cfg, name_invalid)
{
	expect_error("deployments = ( { name = \"a b\"; model = \"m\"; } );\n",
	             1, "deployments[0]: invalid name");
}

Test(cfg, name_too_long)
{
	char text[256], name[70];

	memset(name, 'n', 64);
	name[64] = '\0';
	snprintf(text, sizeof text,
	         "deployments = ( { name = \"%s\"; model = \"m\"; } );\n",
	         name);
	expect_error(text, 1, "deployments[0].name: too long (at most 63");
}

Test(cfg, name_duplicate)
{
	expect_error("deployments = (\n { name = \"a\"; model = \"m\"; },\n"
	             " { name = \"a\"; model = \"n\"; } );\n",
	             3, "deployment 'a': duplicate name (first at line 2)");
}

Test(cfg, model_missing)
{
	expect_error("deployments = (\n { name = \"a\";\n"
	             "   provider = \"anthropic\"; } );\n",
	             2, "deployment 'a': model is required");
}

Test(cfg, deploy_not_group)
{
	expect_error("deployments = ( \"a\" );\n", 1,
	             "deployments[0]: expected a group");
}

Test(cfg, azure_defaults)
{
	struct cfg *c =
	    load_ok("deployments = ( { name = \"az\"; provider = \"azure\";\n"
	            " model = \"gpt-4o\"; azure_deployment = \"prod-4o\";\n"
	            " api_version = \"2025-01-01\";\n"
	            " base_url = \"https://r.openai.azure.com/\"; } );\n");

	cr_assert_str_eq(c->deploy[0].model, "gpt-4o");
	cr_assert_str_eq(c->deploy[0].azure_deployment, "prod-4o");
	cr_assert_str_eq(c->deploy[0].api_version, "2025-01-01");
	cr_assert_str_eq(c->deploy[0].path, "");
	cfg_free(c);
}

Test(cfg, azure_needs_base_url)
{
	expect_error(
	    "deployments = (\n { name = \"az\"; provider = \"azure\"; "
	    "} );\n",
	    2, "deployment 'az': base_url is required for provider azure");
}

Test(cfg, url_parsing)
{
	struct cfg *c = load_ok(
	    "deployments = (\n"
	    " { name = \"a\"; model = \"m\"; base_url = \"http://h:8080/\"; "
	    "},\n"
	    " { name = \"b\"; model = \"m\"; base_url = \"https://h/x/y//\"; "
	    "},\n"
	    " { name = \"c\"; model = \"m\"; base_url = \"http://[::1]:9/v1\"; "
	    "},\n"
	    " { name = \"d\"; model = \"m\"; base_url = \"HTTPS://[fe80::1]\"; "
	    "},\n"
	    " { name = \"e\"; model = \"m\"; base_url = \"http://h\"; } );\n");
	const struct deploy_cfg *d = c->deploy;

	cr_assert_eq(d[0].tls, 0);
	cr_assert_str_eq(d[0].host, "h");
	cr_assert_eq(d[0].port, 8080);
	cr_assert_str_eq(d[0].path, "");
	cr_assert_str_eq(d[0].base_url, "http://h:8080/");
	cr_assert_eq(d[1].tls, 1);
	cr_assert_eq(d[1].port, 443);
	cr_assert_str_eq(d[1].path, "/x/y");
	cr_assert_str_eq(d[2].host, "::1");
	cr_assert_eq(d[2].port, 9);
	cr_assert_str_eq(d[2].path, "/v1");
	cr_assert_eq(d[3].tls, 1);
	cr_assert_str_eq(d[3].host, "fe80::1");
	cr_assert_eq(d[3].port, 443);
	cr_assert_eq(d[4].port, 80);
	cfg_free(c);
}

Test(cfg, url_split_errors)
{
	static const struct {
		const char *url, *why;
	} bad[] = {
	    {"ftp://h", "URL must start with http:// or https://"},
	    {"h:80", "URL must start with http:// or https://"},
	    {"http://", "missing or overlong host"},
	    {"http:///v1", "missing or overlong host"},
	    {"http://h:0", "port must be 1..65535"},
	    {"http://h:65536", "port must be 1..65535"},
	    {"http://h:", "empty port"},
	    {"http://h:8x", "port must be 1..65535"},
	    {"http://::1/v1", "IPv6 address must be in [brackets]"},
	    {"http://[::1/v1", "unterminated [IPv6] address"},
	    {"http://[zz]/", "bad IPv6 address"},
	    {"http://[::1]x/", "bad host"},
	    {"http://u:p@h/", "credentials in the URL are not supported"},
	    {"http://h/v1?x=1", "URL must not have a query or fragment"},
	    {"http://h /v1", "URL contains spaces or control characters"},
	    {"http://h!/v1", "bad host"},
	};
	char host[256], path[512];
	uint16_t port;
	int tls;
	const char *why;

	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		why = NULL;
		cr_assert_eq(cfg_url_split(bad[i].url, &tls, host, sizeof host,
		                           &port, path, sizeof path, &why),
		             -1, "%s accepted", bad[i].url);
		cr_assert_str_eq(why, bad[i].why, "%s", bad[i].url);
	}
	cr_assert_eq(cfg_url_split("https://a.b-c_d:1/p", &tls, host,
	                           sizeof host, &port, path, sizeof path, &why),
	             0);
	cr_assert_str_eq(host, "a.b-c_d");
	cr_assert_eq(port, 1);
	cr_assert_str_eq(path, "/p");
}

Test(cfg, url_bad_in_config)
{
	expect_error("deployments = ( { name = \"a\"; model = \"m\";\n"
	             " base_url = \"api.openai.com/v1\"; } );\n",
	             2,
	             "deployment 'a': base_url: URL must start with http:// or "
	             "https://");
}

/* Environment. */

Test(cfg, api_key_var_unset)
{
	char *cause = NULL;
	struct cfg *c;

	unsetenv("LLMFD_TEST_NOKEY");
	c = load("deployments = ( { name = \"x\"; model = \"m\";\n"
	         " api_key = \"$LLMFD_TEST_NOKEY\"; } );\n",
	         &cause);
	cr_assert_null(c);
	cr_assert(strstr(cause, ":2: deployment 'x': api_key variable "
	                        "LLMFD_TEST_NOKEY is not set") != NULL,
	          "%s", cause);
	free(cause);
}

Test(cfg, api_key_var_empty)
{
	setenv("LLMFD_TEST_EMPTY", "", 1);
	expect_error(
	    "deployments = ( { name = \"x\"; model = \"m\";\n"
	    " api_key = \"$LLMFD_TEST_EMPTY\"; } );\n",
	    2, "deployment 'x': api_key variable LLMFD_TEST_EMPTY is not set");
}

Test(cfg, api_key_never_printed)
{
	char *cause = NULL;

	/* A later error in the same deployment must not quote the key. */
	setenv("LLMFD_TEST_SECRET", "sk-very-secret", 1);
	cr_assert_null(load("deployments = ( { name = \"x\"; model = \"m\";\n"
	                    " api_key = \"$LLMFD_TEST_SECRET\";\n"
	                    " weight = -1; } );\n",
	                    &cause));
	cr_assert_null(strstr(cause, "sk-very-secret"));
	free(cause);
	cr_assert_null(load("deployments = ( { name = \"x\"; model = \"m\";\n"
	                    " api_key = \"sk-literal\nmore\"; } );\n",
	                    &cause));
	cr_assert_null(strstr(cause, "sk-literal"), "%s", cause);
	cr_assert(strstr(cause, "api_key: value contains a line break"));
	free(cause);
}

Test(cfg, api_key_literal)
{
	struct cfg *c = load_ok(
	    "deployments = ( { name = \"a\"; model = \"m\"; api_key = "
	    "\"sk-1\"; },\n"
	    " { name = \"b\"; model = \"m\"; api_key = \"$$NOTAVAR\"; } );\n");

	cr_assert_str_eq(c->deploy[0].api_key, "sk-1");
	cr_assert_str_eq(c->deploy[0].api_key_var, "");
	cr_assert_str_eq(c->deploy[1].api_key, "$NOTAVAR");
	cr_assert_str_eq(c->deploy[1].api_key_var, "");
	cfg_free(c);
}

Test(cfg, api_key_bad_var_name)
{
	expect_error("deployments = ( { name = \"a\"; model = \"m\";\n"
	             " api_key = \"$1X\"; } );\n",
	             2, "deployment 'a': api_key: invalid variable name");
}

Test(cfg, env_expansion)
{
	struct cfg *c;

	setenv("LLMFD_TEST_URL", "http://10.0.0.1:7000/v1/", 1);
	setenv("LLMFD_TEST_TOK", "Bearer abc", 1);
	setenv("LLMFD_TEST_SOCK", "/tmp/e.sock", 1);
	setenv("LLMFD_TEST_T", "hot", 1);
	c = load_ok("daemon = { listen = \"$LLMFD_TEST_SOCK\"; };\n"
	            "deployments = ( { name = \"a\"; model = \"m\";\n"
	            " base_url = \"$LLMFD_TEST_URL\";\n"
	            " headers = ( \"Authorization: $LLMFD_TEST_TOK\","
	            " \"X-Lit: $$LLMFD_TEST_TOK\" );\n"
	            " params = { tag = \"$LLMFD_TEST_T\"; }; } );\n");
	cr_assert_str_eq(c->listen, "/tmp/e.sock");
	cr_assert_str_eq(c->deploy[0].base_url, "http://10.0.0.1:7000/v1/");
	cr_assert_str_eq(c->deploy[0].host, "10.0.0.1");
	cr_assert_eq(c->deploy[0].port, 7000);
	cr_assert_str_eq(c->deploy[0].path, "/v1");
	cr_assert_str_eq(c->deploy[0].headers[0].value, "Bearer abc");
	cr_assert_str_eq(c->deploy[0].headers[1].value, "$LLMFD_TEST_TOK");
	cr_assert_str_eq(c->deploy[0].params, "{\"tag\":\"hot\"}");
	cfg_free(c);
}

Test(cfg, env_unset_elsewhere)
{
	unsetenv("LLMFD_TEST_NOURL");
	expect_error(
	    "deployments = ( { name = \"a\"; model = \"m\";\n"
	    " base_url = \"$LLMFD_TEST_NOURL\"; } );\n",
	    2, "deployment 'a': base_url variable LLMFD_TEST_NOURL is not set");
}

Test(cfg, env_unset_header)
{
	unsetenv("LLMFD_TEST_NOHDR");
	expect_error(
	    "deployments = ( { name = \"a\"; model = \"m\";\n"
	    " headers = (\n \"X-K: $LLMFD_TEST_NOHDR\" ); } );\n",
	    3, "deployment 'a': headers variable LLMFD_TEST_NOHDR is not set");
}

/* Headers and params. */

Test(cfg, headers_parsing)
{
	struct cfg *c = load_ok(
	    "deployments = ( { name = \"a\"; model = \"m\";\n"
	    " headers = ( \"X-Foo: bar\", \"X-Empty:\", \"X-Sp:  a b  \","
	    " \"anthropic-beta:x=1\" ); },\n"
	    " { name = \"b\"; model = \"m\";\n"
	    "   headers = { X-Foo = \"bar\"; X-Two = \"2\"; }; } );\n");
	const struct deploy_cfg *d = &c->deploy[0];

	cr_assert_eq(d->nheaders, 4);
	cr_assert_str_eq(d->headers[0].name, "X-Foo");
	cr_assert_str_eq(d->headers[0].value, "bar");
	cr_assert_str_eq(d->headers[1].name, "X-Empty");
	cr_assert_str_eq(d->headers[1].value, "");
	cr_assert_str_eq(d->headers[2].value, "a b");
	cr_assert_str_eq(d->headers[3].name, "anthropic-beta");
	cr_assert_str_eq(d->headers[3].value, "x=1");
	d = &c->deploy[1];
	cr_assert_eq(d->nheaders, 2);
	cr_assert_str_eq(d->headers[1].name, "X-Two");
	cr_assert_str_eq(d->headers[1].value, "2");
	cfg_free(c);
}

Test(cfg, header_bad_name)
{
	expect_error("deployments = ( { name = \"a\"; model = \"m\";\n"
	             " headers = ( \"X-Ok: 1\",\n \"Bad Name: v\" ); } );\n",
	             3, "deployment 'a': headers[1]: invalid header name");
}

Test(cfg, header_no_colon)
{
	expect_error("deployments = ( { name = \"a\"; model = \"m\";\n"
	             " headers = ( \"X-Foo bar\" ); } );\n",
	             2, "deployment 'a': headers[0]: expected \"Name: value\"");
}

Test(cfg, header_crlf)
{
	expect_error("deployments = ( { name = \"a\"; model = \"m\";\n"
	             " headers = ( \"X-Foo: a\\r\\nX-Evil: 1\" ); } );\n",
	             2,
	             "deployment 'a': headers[0]: value contains a line break");
}

Test(cfg, header_managed)
{
	expect_error(
	    "deployments = ( { name = \"a\"; model = \"m\";\n"
	    " headers = ( \"Content-Length: 5\" ); } );\n",
	    2, "deployment 'a': headers[0]: content-length is set by llmfd");
}

Test(cfg, header_not_string)
{
	expect_error("deployments = ( { name = \"a\"; model = \"m\";\n"
	             " headers = ( 5 ); } );\n",
	             2, "deployment 'a': headers[0]: expected a string");
}

Test(cfg, headers_too_many)
{
	char text[4096];
	int n;

	n = snprintf(text, sizeof text,
	             "deployments = ( { name = \"a\"; "
	             "model = \"m\";\n headers = (");
	for (int i = 0; i <= CFG_MAX_HDRS; i++)
		n += snprintf(text + n, sizeof text - (size_t)n,
		              "%s\"X-%d: v\"", i ? ", " : "", i);
	snprintf(text + n, sizeof text - (size_t)n, " ); } );\n");
	expect_error(text, 2, "deployment 'a': too many headers (at most 16)");
}

Test(cfg, params_serialization)
{
	struct cfg *c = load_ok(
	    "deployments = ( { name = \"a\"; model = \"m\";\n"
	    " params = { temperature = 0.2; top_p = 1.0; n = 2; big = 9L;\n"
	    "   seed = -3; logprobs = true; echo = false;\n"
	    "   user = \"q\\\"u\\\\o\\te\"; stop = [ \"a\", \"b\" ];\n"
	    "   mixed = ( 1, \"x\", { k = 0.5; }, ( ) );\n"
	    "   response_format = { type = \"json_object\"; }; }; } );\n");

	/* JSON has one number type: a float 1.0 goes out as 1 */
	cr_assert_str_eq(c->deploy[0].params,
	                 "{\"temperature\":0.2,\"top_p\":1,\"n\":2,\"big\":9,"
	                 "\"seed\":-3,\"logprobs\":true,\"echo\":false,"
	                 "\"user\":\"q\\\"u\\\\o\\te\",\"stop\":[\"a\",\"b\"],"
	                 "\"mixed\":[1,\"x\",{\"k\":0.5},[]],"
	                 "\"response_format\":{\"type\":\"json_object\"}}");
	cfg_free(c);
}

Test(cfg, params_empty_group)
{
	struct cfg *c = load_ok("deployments = ( { name = \"a\"; model = \"m\";"
	                        " params = { }; } );\n");

	cr_assert_str_eq(c->deploy[0].params, "{}");
	cfg_free(c);
}

Test(cfg, params_not_group)
{
	expect_error("deployments = ( { name = \"a\"; model = \"m\";\n"
	             " params = 3; } );\n",
	             2, "deployment 'a': params: expected a group");
}

Test(cfg, params_reserved)
{
	expect_error("deployments = ( { name = \"a\"; model = \"m\";\n"
	             " params = {\n stream = true; }; } );\n",
	             3, "deployment 'a': params.stream is set by llmfd");
}

/* Groups. */

Test(cfg, groups_built_in_order)
{
	struct cfg *c =
	    load_ok("deployments = (\n"
	            " { name = \"a1\"; group = \"A\"; model = \"m\"; },\n"
	            " { name = \"b1\"; group = \"B\"; model = \"m\"; },\n"
	            " { name = \"a2\"; group = \"A\"; model = \"m\"; },\n"
	            " { name = \"solo\"; model = \"m\"; } );\n");

	cr_assert_eq(c->ngroup, 3);
	cr_assert_str_eq(c->groups[0].name, "A");
	cr_assert_str_eq(c->groups[1].name, "B");
	cr_assert_str_eq(c->groups[2].name, "solo");
	cr_assert_eq(c->groups[0].ndeploy, 2);
	cr_assert_eq(c->groups[0].deploy[1], 2);
	cr_assert_eq(c->groups[2].deploy[0], 3);
	cr_assert_eq(cfg_find_deploy(c, "a2"), 2);
	cr_assert_eq(cfg_find_deploy(c, "A"), -1);
	cr_assert_null(cfg_find_group(c, "a1"));
	cr_assert_eq(cfg_find_group(c, "B")->ndeploy, 1);
	cfg_free(c);
}

Test(cfg, group_settings)
{
	struct cfg *c =
	    load_ok(DEP "groups = ( { name = \"a\"; hedge = \"p95\";"
	                " strategy = \"least-busy\"; } );\n");

	cr_assert_eq(c->groups[0].hedge_p95, 1);
	cr_assert_eq(c->groups[0].strategy, STRAT_LEAST_BUSY);
	cr_assert_eq(c->groups[0].stream_resume, RESUME_OFF);
	cfg_free(c);
}

Test(cfg, group_unknown)
{
	expect_error(DEP "groups = (\n { name = \"zz\"; } );\n", 3,
	             "groups: unknown group 'zz'");
}

Test(cfg, group_duplicate)
{
	expect_error(DEP
	             "groups = ( { name = \"a\"; },\n { name = \"a\"; } );\n",
	             3, "groups: duplicate entry for group 'a'");
}

Test(cfg, group_name_required)
{
	expect_error(DEP "groups = (\n { strategy = \"latency\"; } );\n", 3,
	             "groups[0]: name is required");
}

Test(cfg, group_bad_strategy)
{
	expect_error(DEP
	             "groups = ( { name = \"a\";\n strategy = \"fast\"; } );\n",
	             3, "group 'a': strategy: unknown value \"fast\"");
}

Test(cfg, group_bad_resume)
{
	expect_error(
	    DEP "groups = ( { name = \"a\";\n"
	        " stream_resume = \"on\"; } );\n",
	    3,
	    "group 'a': stream_resume: unknown value \"on\" (expected off "
	    "or continue)");
}

Test(cfg, group_bad_hedge)
{
	expect_error(DEP "groups = ( { name = \"a\";\n hedge = \"p99\"; } );\n",
	             3, "group 'a': hedge: unknown value \"p99\"");
}

Test(cfg, group_hedge_both)
{
	expect_error(DEP "groups = (\n { name = \"a\"; hedge = \"p95\";"
	                 " hedge_after_ms = 100; } );\n",
	             3, "group 'a': set hedge_after_ms or hedge");
}

Test(cfg, group_name_invalid)
{
	expect_error("deployments = ( { name = \"a\"; model = \"m\";\n"
	             " group = \"g/1\"; } );\n",
	             2, "deployment 'a': group: invalid group name");
}

Test(cfg, ambiguous_name)
{
	expect_error("deployments = (\n"
	             " { name = \"x\"; group = \"G\"; model = \"m\"; },\n"
	             " { name = \"G\"; group = \"H\"; model = \"m\"; } );\n",
	             3, "deployment 'G': ambiguous name");
}

Test(cfg, name_equals_own_group)
{
	struct cfg *c = load_ok(
	    "deployments = ( { name = \"G\"; group = \"G\"; model = \"m\"; },\n"
	    " { name = \"y\"; group = \"G\"; model = \"m\"; } );\n");

	cr_assert_eq(c->ngroup, 1);
	cfg_free(c);
}

/* Fallbacks. */

#define DEP2                                                                   \
	"deployments = ( { name = \"a\"; model = \"m\"; },\n"                  \
	" { name = \"b\"; model = \"m\"; } );\n"

Test(cfg, fallback_unknown_group)
{
	expect_error(DEP2
	             "fallbacks = (\n { group = \"zz\"; to = [ \"a\" ]; } );\n",
	             4, "fallbacks: unknown group 'zz'");
}

Test(cfg, fallback_unknown_target)
{
	expect_error(
	    DEP2 "context_window_fallbacks = (\n"
	         " { group = \"a\"; to = [ \"b\", \"c\" ]; } );\n",
	    4, "context_window_fallbacks: group 'a': to: unknown group 'c'");
}

Test(cfg, fallback_self)
{
	expect_error(
	    DEP2 "content_policy_fallbacks = (\n"
	         " { group = \"a\"; to = [ \"a\" ]; } );\n",
	    4, "content_policy_fallbacks: group 'a': falls back to itself");
}

Test(cfg, fallback_duplicate)
{
	expect_error(DEP2 "fallbacks = ( { group = \"a\"; to = [ \"b\" ]; },\n"
	                  " { group = \"a\"; to = [ \"b\" ]; } );\n",
	             4, "fallbacks: duplicate entry for group 'a'");
}

Test(cfg, fallback_target_twice)
{
	expect_error(DEP2 "fallbacks = ( { group = \"a\"; to = ( \"b\",\n"
	                  " \"b\" ); } );\n",
	             4, "fallbacks: group 'a': to: 'b' listed twice");
}

Test(cfg, fallback_missing_to)
{
	expect_error(DEP2 "fallbacks = (\n { group = \"a\"; } );\n", 4,
	             "fallbacks: group 'a': to is required");
}

Test(cfg, fallback_missing_group)
{
	expect_error(DEP2 "fallbacks = (\n { to = [ \"a\" ]; } );\n", 4,
	             "fallbacks[0]: group is required");
}

Test(cfg, fallback_not_list)
{
	expect_error(DEP2 "fallbacks = { group = \"a\"; };\n", 3,
	             "fallbacks: expected a list");
}

Test(cfg, fallback_empty_array)
{
	struct cfg *c = load_ok(DEP2 "fallbacks = [ ];\n"
	                             "context_window_fallbacks = (\n"
	                             " { group = \"a\"; to = [ ]; } );\n");

	cr_assert_eq(c->fallbacks.n, 0);
	cr_assert_eq(cfg_find_fallback(&c->cw_fallbacks, "a")->nto, 0);
	cfg_free(c);
}

Test(cfg, include_relative)
{
	struct cfg *c;

	write_file("deploys.inc", DEP);
	c = load_ok("@include \"deploys.inc\"\n");
	cr_assert_eq(c->ndeploy, 1);
	cfg_free(c);
}

/* drop_params */

Test(cfg, drop_params_list_and_unset)
{
	struct cfg *c = load_ok(
	    "deployments = ( { name = \"a\"; model = \"m\";\n"
	    " drop_params = [ \"top_k\", \"reasoning_effort\" ]; },\n"
	    " { name = \"b\"; model = \"m\"; drop_params = \"seed\"; },\n"
	    " { name = \"c\"; model = \"m\"; drop_params = [ ]; },\n"
	    " { name = \"d\"; model = \"m\"; } );\n");

	cr_assert_eq(c->deploy[0].ndrop_params, 2);
	cr_assert_str_eq(c->deploy[0].drop_params[0], "top_k");
	cr_assert_str_eq(c->deploy[0].drop_params[1], "reasoning_effort");
	cr_assert_eq(c->deploy[1].ndrop_params, 1);
	cr_assert_str_eq(c->deploy[1].drop_params[0], "seed");
	cr_assert_eq(c->deploy[2].ndrop_params, 0);
	cr_assert_eq(c->deploy[3].ndrop_params, -1);
	cfg_free(c);
}

Test(cfg, drop_params_refused)
{
	expect_error("deployments = ( { name = \"a\"; model = \"m\";\n"
	             " drop_params = [ \"top_k\", \"messages\" ]; } );\n",
	             2,
	             "deployment 'a': drop_params: 'messages' cannot be "
	             "dropped");
	expect_error("deployments = ( { name = \"a\"; model = \"m\";\n"
	             " drop_params = [ \"\" ]; } );\n",
	             2, "deployment 'a': drop_params: an empty field name");
	expect_error("deployments = ( { name = \"a\"; model = \"m\";\n"
	             " drop_params = 3; } );\n",
	             2,
	             "deployment 'a': drop_params: expected a string or a "
	             "list of them");
	expect_error("deployments = ( { name = \"a\"; model = \"m\";\n"
	             " drop_params = [ \"1\",\"2\",\"3\",\"4\",\"5\",\"6\","
	             "\"7\",\"8\",\"9\",\"10\",\"11\",\"12\",\"13\",\"14\","
	             "\"15\",\"16\",\"17\" ]; } );\n",
	             2, "deployment 'a': drop_params: at most 16 fields");
}

/* thinking_budgets */

Test(cfg, thinking_budgets)
{
	struct cfg *c = load_ok(
	    "deployments = ( { name = \"a\"; model = \"m\";\n"
	    " thinking_budgets = [ 0, 2048, 30000 ]; },\n"
	    " { name = \"b\"; model = \"m\"; thinking_budgets = [ ]; },\n"
	    " { name = \"c\"; model = \"m\"; } );\n");

	cr_assert_eq(c->deploy[0].nthink, 3);
	cr_assert_eq(c->deploy[0].think_budget[0], 0);
	cr_assert_eq(c->deploy[0].think_budget[1], 2048);
	cr_assert_eq(c->deploy[0].think_budget[2], 30000);
	cr_assert_eq(c->deploy[1].nthink, 0);
	cr_assert_eq(c->deploy[2].nthink, -1);
	cfg_free(c);
	expect_error("deployments = ( { name = \"a\"; model = \"m\";\n"
	             " thinking_budgets = [ 1024, 2048 ]; } );\n",
	             2,
	             "deployment 'a': thinking_budgets: expected 3 budgets "
	             "(low, medium, high), or none");
	expect_error("deployments = ( { name = \"a\"; model = \"m\";\n"
	             " thinking_budgets = [ 1024, 100, 4096 ]; } );\n",
	             2,
	             "deployment 'a': thinking_budgets: a budget is 0 (no "
	             "thinking) or 1024-1000000 tokens");
	expect_error("deployments = ( { name = \"a\"; model = \"m\";\n"
	             " thinking_budgets = 1024; } );\n",
	             2,
	             "deployment 'a': thinking_budgets: expected [ low, "
	             "medium, high ] token budgets, or [ ]");
}
