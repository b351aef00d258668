/* Routing policies end to end, through the real daemon and mocks: tag
 * rules pick a chain, a region is never left (also on fallback), strategy
 * cost and its recovery, session affinity over 1,000 sessions and a drain,
 * provider-prefixed models reaching a pattern's provider, aliases in
 * /v1/models, fallback_models / retries never forwarded upstream, and the
 * upstream's rate-limit headers steering traffic before a 429. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "tests/integration/harness.h"

#define CHAT "/v1/chat/completions"
#define HI   "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"

TestSuite(policy, .init = h_setup, .fini = h_teardown, .timeout = 120);

/* An OpenAI deployment on mock m, with extra settings. */
static const char *
dep(const char *name, const char *group, const struct h_mock *m,
    const char *extra)
{
	return h_fmt("  { name = \"%s\"; group = \"%s\"; provider = \"openai\";"
	             " base_url = \"http://127.0.0.1:%d/v1\"; api_key = "
	             "\"$TEST_KEY\"; %s }",
	             name, group, m->port, extra);
}

/* Start llmfd (two workers) with router settings, deployments and extra
 * top-level text. */
static void
start(const char *router, const char *deployments, const char *extra)
{
	h_llmfd_start("daemon = { workers = 2; listen = \"llmfd.sock\";\n"
	              "  health_table = \"health\"; log_level = \"info\"; };\n"
	              "router = { backoff_base_ms = 10; backoff_max_ms = 50;\n"
	              "  timeout_ms = 10000; attempt_timeout_ms = 3000; %s };\n"
	              "deployments = (\n%s\n);\n%s\n",
	              router, deployments, extra ? extra : "");
}

/* POST body to path on the socket with extra header lines. */
static struct h_resp *
post(const char *path, const char *headers, const char *body)
{
	struct h_req q = {.unix_path = h_sock(),
	                  .method = "POST",
	                  .path = path,
	                  .headers = headers,
	                  .body = body};

	return h_http(&q);
}

/* A chat request for model with extra body members (",..." or ""). */
static struct h_resp *
chat(const char *model, const char *extra, const char *headers)
{
	return post(CHAT, headers,
	            h_fmt("{\"model\":\"%s\"%s," HI "}", model, extra));
}

/* The deployment that answered r, "" if none. */
static const char *
served_by(const struct h_resp *r)
{
	const char *d = h_header(r, "x-llmfd-deployment");

	return d ? d : "";
}

/* The body of the last request mock m received. */
static const char *
last_body(const struct h_mock *m)
{
	struct h_resp *r = h_tcp(m->port, "GET", "/_mock/last/body", NULL);

	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	return r->body;
}

/* The path of the last request mock m received. */
static const char *
last_path(const struct h_mock *m)
{
	struct h_resp *r = h_tcp(m->port, "GET", "/_mock/last", NULL);

	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	return h_json(r->body, "path");
}

/* Run llmfctl with args (NULL-terminated); exit code 0 required. */
static void
ctl(const char *a, const char *b)
{
	char *out;
	int rc = h_run(&out, h_bin("llmfctl"), "-c", h_conf(), a, b, NULL);

	cr_assert_eq(rc, 0, "llmfctl %s %s: %s", a, b, out);
}

/* A per-deployment sample of /metrics, -1 if absent. */
static long
metric(const char *family, const char *dep_name)
{
	struct h_resp *r = h_unix("GET", "/metrics", NULL);
	const char *p;
	char *needle = h_fmt("%s{deployment=\"%s\"", family, dep_name);

	cr_assert_eq(r->status, 200);
	if ((p = strstr(r->body, needle)) == NULL ||
	    (p = strchr(p, '}')) == NULL)
		return -1;
	return atol(p + 1);
}

/* Tag rules send each request down its chain, fallbacks included. */
Test(policy, tag_rules_pick_chain)
{
	struct h_mock g, c1, c2, w;
	struct h_resp *r;

	h_mock_start(&g, "general", NULL);
	h_mock_start(&c1, "coder", NULL);
	h_mock_start(&c2, "coder2", NULL);
	h_mock_start(&w, "writer", NULL);
	start(
	    "num_retries = 0;",
	    h_fmt("%s,\n%s,\n%s,\n%s",
	          dep("general", "general", &g, "model = \"g\";"),
	          dep("coder", "coding-chain", &c1, "model = \"c\";"),
	          dep("coder2", "coding-backup", &c2, "model = \"c2\";"),
	          dep("writer", "creative", &w, "model = \"w\";")),
	    "fallbacks = ( { group = \"coding-chain\"; to = [ "
	    "\"coding-backup\" ]; } );\n"
	    "routes = (\n"
	    "  { match = { tag = \"coding\"; }; group = \"coding-chain\"; },\n"
	    "  { match = { tag = \"creative\"; }; group = \"creative\"; },\n"
	    "  { match = { header = \"X-Task: review\"; }; group = "
	    "\"coding-chain\"; }\n);");
	r = chat("general", ",\"metadata\":{\"tag\":\"coding\"}", NULL);
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_str_eq(served_by(r), "coder");
	cr_assert_null(strstr(last_body(&c1), "metadata"),
	               "llmfd's metadata went upstream");
	r = chat("general", ",\"metadata\":{\"tags\":[\"x\",\"creative\"]}",
	         NULL);
	cr_assert_str_eq(served_by(r), "writer", "%s", h_desc(r));
	r = chat("general", "", NULL);
	cr_assert_str_eq(served_by(r), "general", "%s", h_desc(r));
	r = chat("general", "", "X-Task: review\r\n");
	cr_assert_str_eq(served_by(r), "coder", "a header rule");
	r = post("/v1/messages", "anthropic-version: 2023-06-01\r\n",
	         "{\"model\":\"general\",\"max_tokens\":10,\"metadata\":{"
	         "\"user_id\":\"u\"},\"messages\":[{\"role\":\"user\","
	         "\"content\":\"hi\"}]}");
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_str_eq(served_by(r), "general", "no tag on Messages");
	/* the chain: coder down, its configured fallback serves */
	cr_assert_eq(h_mock_config(&c1, "{\"mode\":\"status\",\"status\":503}"),
	             0);
	r = chat("general", ",\"metadata\":{\"tag\":\"coding\"}", NULL);
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_str_eq(served_by(r), "coder2");
	cr_assert_eq(h_mock_stat(&w, "requests"), 1);
	cr_assert_eq(h_mock_stat(&g, "requests"), 2);
}

/* An EU-only request never reaches a non-EU deployment, even when every
 * EU one fails and the chain has US deployments; the error says why. */
Test(policy, eu_only_never_leaves_region)
{
	struct h_mock us1, eu1, eu2, us2;
	struct h_resp *r;

	h_mock_start(&us1, "us1", NULL);
	h_mock_start(&eu1, "eu1", NULL);
	h_mock_start(&eu2, "eu2", NULL);
	h_mock_start(&us2, "us2", NULL);
	start("num_retries = 1; cooldown_s = 1;",
	      h_fmt("%s,\n%s,\n%s,\n%s",
	            dep("us1", "main", &us1, "model = \"m\"; region = \"us\";"),
	            dep("eu1", "main", &eu1, "model = \"m\"; region = \"eu\";"),
	            dep("eu2", "backup", &eu2,
	                "model = \"m\"; region = \"eu-west\";"),
	            dep("us2", "backup", &us2,
	                "model = \"m\"; region = "
	                "\"us\";")),
	      "fallbacks = ( { group = \"main\"; to = [ \"backup\" ]; } );\n"
	      "context_window_fallbacks = ( { group = \"main\"; to = [ "
	      "\"backup\" ]; } );\n"
	      "routes = ( { match = { metadata = { residency = \"eu\"; }; };\n"
	      "             region = \"eu\"; } );");
	r = chat("main", "", NULL);
	cr_assert_str_eq(served_by(r), "us1", "no region: config order");
	r = chat("main", "", "x-llmfd-region: eu\r\n");
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_str_eq(served_by(r), "eu1", "us1 is first but in us");
	/* every EU deployment fails */
	cr_assert_eq(
	    h_mock_config(&eu1, "{\"mode\":\"status\",\"status\":503}"), 0);
	cr_assert_eq(
	    h_mock_config(&eu2, "{\"mode\":\"status\",\"status\":500}"), 0);
	h_mock_reset(&us1);
	h_mock_reset(&us2);
	for (int i = 0; i < 4; i++) {
		r = i % 2 ? chat("main", ",\"metadata\":{\"residency\":\"eu\"}",
		                 NULL)
		          : chat("main", ",\"fallbacks\":[\"backup\",\"main\"]",
		                 "x-llmfd-region: eu\r\n");
		cr_assert_eq(r->status, 503, "%s", h_desc(r));
		cr_assert(strstr(r->body, "region 'eu'") != NULL, "%s",
		          r->body);
		cr_assert_null(strstr(r->body, "us1"), "%s", r->body);
		cr_assert_null(strstr(r->body, "us2"), "%s", r->body);
	}
	/* a context-window switch stays in the region too */
	cr_assert_eq(h_mock_config(&eu1, "{\"mode\":\"status\",\"status\":400,"
	                                 "\"error_code\":\"context_length_"
	                                 "exceeded\"}"),
	             0);
	h_sleep_ms(1100); /* the cooldowns lapse */
	r = chat("main", "", "x-llmfd-region: eu\r\n");
	cr_assert_eq(r->status, 503, "%s", h_desc(r));
	cr_assert_eq(h_mock_stat(&us1, "requests"), 0);
	cr_assert_eq(h_mock_stat(&us2, "requests"), 0);
	cr_assert_geq(h_mock_stat(&eu2, "requests"), 3);
	/* no EU deployment for the model at all */
	r = chat("us2", "", "x-llmfd-region: eu\r\n");
	cr_assert_eq(r->status, 404, "%s", h_desc(r));
	cr_assert_str_eq(h_json(r->body, "error.code"), "region_unavailable");
}

#define PRICES                                                                 \
	"prices = ( { model = \"gpt-4o-mini\"; input_per_mtok = 0.15; "        \
	"output_per_mtok = 0.6; },\n"                                          \
	"  { model = \"gpt-4o\"; input_per_mtok = 2.5; output_per_mtok = 10; " \
	"cached_input_per_mtok = 1.25; } );"

/* Strategy cost: the cheaper of two healthy deployments, the other while
 * it cools down, and back when it recovers. */
Test(policy, cost_picks_cheaper_and_moves_when_it_cools)
{
	struct h_mock dear, cheap;
	struct h_resp *r;
	long n;

	h_mock_start(&dear, "dear", NULL);
	h_mock_start(&cheap, "cheap", NULL);
	start("strategy = \"cost\"; num_retries = 0; allowed_fails = 0; "
	      "cooldown_s = 2; circuit_failure_threshold = 100;",
	      h_fmt("%s,\n%s", dep("dear", "g", &dear, "model = \"gpt-4o\";"),
	            dep("cheap", "g", &cheap, "model = \"gpt-4o-mini\";")),
	      PRICES);
	for (int i = 0; i < 10; i++) {
		r = chat("g", "", NULL);
		cr_assert_eq(r->status, 200, "%s", h_desc(r));
		cr_assert_str_eq(served_by(r), "cheap", "request %d", i);
	}
	cr_assert_eq(h_mock_stat(&dear, "requests"), 0);
	cr_assert_eq(
	    h_mock_config(&cheap, "{\"mode\":\"status\",\"status\":503}"), 0);
	r = chat("g", "", NULL);
	cr_assert_str_eq(served_by(r), "dear", "failed over: %s", h_desc(r));
	n = h_mock_stat(&cheap, "requests");
	for (int i = 0; i < 5; i++) { /* cheap cools: dear at once */
		r = chat("g", "", NULL);
		cr_assert_str_eq(served_by(r), "dear");
		cr_assert_str_eq(h_header(r, "x-llmfd-attempts"), "1");
	}
	cr_assert_eq(h_mock_stat(&cheap, "requests"), n, "cheap not tried");
	cr_assert_eq(h_mock_config(&cheap, "{\"mode\":\"ok\"}"), 0);
	h_sleep_ms(2100);
	r = chat("g", "", NULL);
	cr_assert_str_eq(served_by(r), "cheap", "back: %s", h_desc(r));
}

/* 1,000 sessions over three deployments with affinity: none moves while
 * all are up; when one is drained, only its sessions move, and the
 * metrics count them. */
Test(policy, sessions_stay_put_until_drained)
{
	enum { N = 1000 };
	static char first[N][16];
	struct h_mock m[3];
	const char *d;
	long t0 = h_now_ms();
	int per[3] = {0}, again = 0, moved = 0, moved_other = 0;
	char name[16];

	for (int i = 0; i < 3; i++) {
		snprintf(name, sizeof name, "d%d", i);
		h_mock_start(&m[i], name, NULL);
	}
	start("",
	      h_fmt("%s,\n%s,\n%s", dep("d0", "g", &m[0], "model = \"m\";"),
	            dep("d1", "g", &m[1], "model = \"m\";"),
	            dep("d2", "g", &m[2], "model = \"m\";")),
	      "groups = ( { name = \"g\"; affinity = \"session\"; strategy = "
	      "\"weighted\"; } );");
	for (int pass = 0; pass < 3; pass++) {
		if (pass == 2)
			ctl("drain", "d1");
		for (int i = 0; i < N; i++) {
			struct h_resp *r;

			/* Claude Code's header, Codex's, or the body's user */
			if (i % 3 == 0)
				r = chat("g", "",
				         h_fmt("X-Claude-Code-Session-"
				               "Id: cc-%d\r\n",
				               i));
			else if (i % 3 == 1)
				r = chat("g", "",
				         h_fmt("session_id: codex-%d\r\n", i));
			else
				r = chat("g", h_fmt(",\"user\":\"u-%d\"", i),
				         NULL);
			cr_assert_eq(r->status, 200, "%s", h_desc(r));
			d = served_by(r);
			if (pass == 0) {
				snprintf(first[i], sizeof first[i], "%s", d);
				per[d[1] - '0']++;
				continue;
			}
			if (strcmp(d, first[i]) == 0)
				continue;
			if (pass == 1)
				again++;
			else if (strcmp(first[i], "d1") == 0)
				moved++;
			else
				moved_other++;
			cr_assert(pass == 1 || strcmp(d, "d1") != 0);
		}
	}
	fprintf(stderr,
	        "policy/sessions: %d sessions: d0 %d, d1 %d, d2 %d; moves "
	        "while all up %d; after draining d1: %d of its %d moved, %d "
	        "others moved (%ld ms, %d requests)\n",
	        N, per[0], per[1], per[2], again, moved, per[1], moved_other,
	        h_now_ms() - t0, 3 * N);
	for (int i = 0; i < 3; i++)
		cr_assert(per[i] > 250 && per[i] < 420, "d%d has %d", i,
		          per[i]);
	cr_assert_eq(again, 0);
	cr_assert_eq(moved, per[1]);
	cr_assert_eq(moved_other, 0);
	cr_assert_eq(metric("llmfd_affinity_moves_total", "d1"), per[1]);
	cr_assert_eq(metric("llmfd_affinity_hits_total", "d0") +
	                 metric("llmfd_affinity_hits_total", "d1") +
	                 metric("llmfd_affinity_hits_total", "d2"),
	             3 * N - per[1]);
}

/* "anthropic/<model>" reaches the Anthropic mock with that model, with
 * failover between the pattern's deployments; "openai/<model>" names the
 * configured OpenAI deployments of that model; aliases are listed. */
Test(policy, provider_prefixed_models)
{
	struct h_mock a1, a2, o;
	struct h_resp *r;

	h_mock_start(&a1, "anth1", "--mode", "status", "--status", "529", NULL);
	h_mock_start(&a2, "anth2", NULL);
	h_mock_start(&o, "oai", NULL);
	start("num_retries = 0;",
	      h_fmt("  { name = \"anth1\"; group = \"anthropic-any\"; "
	            "provider = \"anthropic\"; pattern = \"anthropic/*\";\n"
	            "    base_url = \"http://127.0.0.1:%d\"; api_key = "
	            "\"$TEST_KEY\"; },\n"
	            "  { name = \"anth2\"; group = \"anthropic-any\"; "
	            "provider = \"anthropic\"; pattern = \"anthropic/*\";\n"
	            "    base_url = \"http://127.0.0.1:%d\"; api_key = "
	            "\"$TEST_KEY\"; },\n%s",
	            a1.port, a2.port,
	            dep("oai", "gpt", &o, "model = \"gpt-4o\";")),
	      "aliases = ( { name = \"claude-latest\"; group = "
	      "\"anthropic/claude-sonnet-4-5\"; },\n"
	      "  { name = \"gpt-latest\"; group = \"gpt\"; } );");
	r = chat("anthropic/claude-3-opus", "", NULL);
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_str_eq(served_by(r), "anth2", "failed over from anth1");
	cr_assert_str_eq(last_path(&a2), "/v1/messages");
	cr_assert_str_eq(h_json(last_body(&a2), "model"), "claude-3-opus");
	cr_assert_str_eq(h_json(last_body(&a1), "model"), "claude-3-opus");
	/* Messages clients pass through with the model replaced */
	r = post("/v1/messages", "anthropic-version: 2023-06-01\r\n",
	         "{\"model\":\"anthropic/claude-haiku-4-5\",\"max_tokens\":10,"
	         "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}");
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_str_eq(h_json(last_body(&a2), "model"), "claude-haiku-4-5");
	r = chat("claude-latest", "", NULL);
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_str_eq(h_json(last_body(&a2), "model"), "claude-sonnet-4-5");
	r = chat("openai/gpt-4o", "", NULL);
	cr_assert_str_eq(served_by(r), "oai", "%s", h_desc(r));
	cr_assert_str_eq(h_json(last_body(&o), "model"), "gpt-4o");
	r = chat("gpt-latest", "", NULL);
	cr_assert_str_eq(served_by(r), "oai", "%s", h_desc(r));
	r = chat("anthropic-any", "", NULL);
	cr_assert_eq(r->status, 404, "a pattern's group names no model");
	r = chat("openai/gpt-5", "", NULL);
	cr_assert_eq(r->status, 404, "%s", h_desc(r));
	r = h_unix("GET", "/v1/models", NULL);
	cr_assert_eq(r->status, 200);
	cr_assert(strstr(r->body, "\"id\":\"claude-latest\"") != NULL, "%s",
	          r->body);
	cr_assert(strstr(r->body, "\"id\":\"gpt-latest\"") != NULL);
	cr_assert_null(strstr(r->body, "\"id\":\"anthropic-any\""));
	r = h_unix("GET", "/v1/models/claude-latest", NULL);
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	r = h_unix("GET", "/v1/models/anthropic/claude-3-opus", NULL);
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_str_eq(h_json(r->body, "id"), "anthropic/claude-3-opus");
	r = h_unix("GET", "/v1/models/anthropic-any", NULL);
	cr_assert_eq(r->status, 404, "%s", h_desc(r));
}

/* fallback_models and retries work like fallbacks and num_retries and
 * never reach an upstream, on every client protocol. */
Test(policy, fallback_models_never_forwarded)
{
	struct h_mock a, b, an;
	struct h_resp *r;
	const char *body;

	h_mock_start(&a, "a", "--mode", "status", "--status", "503", NULL);
	h_mock_start(&b, "b", NULL);
	h_mock_start(&an, "an", NULL);
	start("num_retries = 2;",
	      h_fmt("%s,\n%s,\n  { name = \"an\"; provider = \"anthropic\"; "
	            "model = \"claude-x\";\n    base_url = "
	            "\"http://127.0.0.1:%d\"; api_key = \"$TEST_KEY\"; }",
	            dep("a", "main", &a, "model = \"m\";"),
	            dep("b", "backup", &b, "model = \"m\";"), an.port),
	      NULL);
	r = chat("main",
	         ",\"fallback_models\":[\"nope\",\"backup\"],"
	         "\"retries\":0",
	         NULL);
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_str_eq(served_by(r), "b");
	cr_assert_eq(h_mock_stat(&a, "requests"), 1, "retries = 0");
	cr_assert_str_eq(h_header(r, "x-llmfd-attempts"), "2");
	for (int i = 0; i < 2; i++) {
		body = last_body(i ? &b : &a);
		cr_assert_null(strstr(body, "fallback_models"), "%s", body);
		cr_assert_null(strstr(body, "retries"), "%s", body);
	}
	/* Responses, translated for a chat upstream */
	r = post("/v1/responses", NULL,
	         "{\"model\":\"main\",\"input\":\"hi\",\"fallback_models\":["
	         "\"backup\"],\"retries\":0}");
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_str_eq(served_by(r), "b");
	body = last_body(&b);
	cr_assert_null(strstr(body, "fallback_models"), "%s", body);
	cr_assert_null(strstr(body, "retries"), "%s", body);
	/* Messages, passed through natively to Anthropic */
	r = post("/v1/messages", "anthropic-version: 2023-06-01\r\n",
	         "{\"model\":\"main\",\"max_tokens\":10,\"fallback_models\":["
	         "\"an\"],\"retries\":0,\"messages\":[{\"role\":\"user\","
	         "\"content\":\"hi\"}]}");
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_str_eq(served_by(r), "an");
	body = last_body(&an);
	cr_assert_str_eq(h_json(body, "model"), "claude-x");
	cr_assert_null(strstr(body, "fallback_models"), "%s", body);
	cr_assert_null(strstr(body, "retries"), "%s", body);
	/* Chat passed through to OpenAI: the same */
	r = chat("backup", ",\"fallback_models\":[\"main\"],\"retries\":1",
	         NULL);
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	body = last_body(&b);
	cr_assert_null(strstr(body, "fallback_models"), "%s", body);
	cr_assert_null(strstr(body, "retries"), "%s", body);
}

/* A deployment whose rate-limit headers say nothing is left is skipped
 * before it answers 429: OpenAI's x-ratelimit-* and Anthropic's
 * anthropic-ratelimit-* alike. */
Test(policy, ratelimit_headers_steer_before_429)
{
	struct h_mock lim, free_, alim;
	struct h_resp *r;

	h_mock_start(&lim, "lim", "--headers",
	             "x-ratelimit-limit-requests: 100; "
	             "x-ratelimit-remaining-requests: 0; "
	             "x-ratelimit-reset-requests: 20s",
	             NULL);
	h_mock_start(&free_, "free", NULL);
	h_mock_start(&alim, "alim", "--headers",
	             "anthropic-ratelimit-tokens-remaining: 0; "
	             "anthropic-ratelimit-tokens-reset: 2099-01-01T00:00:00Z",
	             NULL);
	start("",
	      h_fmt("%s,\n  { name = \"alim\"; group = \"g2\"; provider = "
	            "\"anthropic\"; model = \"claude-x\";\n    base_url = "
	            "\"http://127.0.0.1:%d\"; api_key = \"$TEST_KEY\"; },\n"
	            "%s,\n%s",
	            dep("lim", "g", &lim, "model = \"m\";"), alim.port,
	            dep("free", "g", &free_, "model = \"m\";"),
	            dep("free2", "g2", &free_, "model = \"m\";")),
	      NULL);
	r = chat("g", "", NULL);
	cr_assert_str_eq(served_by(r), "lim", "first in order: %s", h_desc(r));
	for (int i = 0; i < 6; i++) {
		r = chat("g", "", NULL);
		cr_assert_eq(r->status, 200, "%s", h_desc(r));
		cr_assert_str_eq(served_by(r), "free", "request %d", i);
		cr_assert_str_eq(h_header(r, "x-llmfd-attempts"), "1");
	}
	cr_assert_eq(h_mock_stat(&lim, "requests"), 1);
	r = chat("g2", "", NULL);
	cr_assert_str_eq(served_by(r), "alim", "%s", h_desc(r));
	for (int i = 0; i < 3; i++) {
		r = chat("g2", "", NULL);
		cr_assert_str_eq(served_by(r), "free2", "request %d", i);
	}
	cr_assert_eq(h_mock_stat(&alim, "requests"), 1);
	cr_assert_eq(metric("llmfd_upstream_requests_left", "lim"), 0);
	cr_assert_eq(metric("llmfd_upstream_tokens_left", "alim"), 0);
	cr_assert_eq(metric("llmfd_deployment_state", "lim"), 4,
	             "rate-limited");
}
