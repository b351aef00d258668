/* Failover on every known upstream fault (issue 13), end to end through the
 * real daemon and llmf-mock, each one timed: streams that end without
 * [DONE], a malformed chunk, a primary that comes back, timeouts that fail
 * over instead of repeating, short Retry-After, what clients see (status,
 * Retry-After, x-should-retry), continuation that never repeats text, and
 * accounting after a fallback. Each test prints one "MEASURE" line (time
 * and attempt counts) on stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <criterion/criterion.h>

#include "tests/integration/harness.h"

#define CHAT               "/v1/chat/completions"
#define HI                 "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"
#define BODY(model, extra) "{\"model\":\"" model "\"," HI extra "}"
#define STREAM(model, extra)                                                   \
	"{\"model\":\"" model "\"," HI ",\"stream\":true" extra "}"
#define USAGE ",\"stream_options\":{\"include_usage\":true}"

TestSuite(failover, .init = h_setup, .fini = h_teardown, .timeout = 120);

static struct h_mock primary, backup;

/* What a client saw in an SSE body. */
struct sse_view {
	int nevents;  /* data events, [DONE] included */
	int ncontent; /* chunks carrying non-empty delta content */
	int nusage;   /* chunks carrying usage */
	bool done;    /* a data: [DONE] event */
	bool error;   /* a data: {"error":...} event */
	bool after;   /* an event after [DONE] or the error event */
	long prompt, completion;
	char text[2048];
	const char *model; /* of the last chunk */
	const char *err_code, *err_message, *err_dep;
};

/* Split body into SSE events and summarise them. */
static void
sse_view(const char *body, struct sse_view *v)
{
	char *copy = h_fmt("%s", body ? body : ""), *p = copy, *end;

	memset(v, 0, sizeof *v);
	while (p && *p) {
		end = strstr(p, "\n\n");
		if (end)
			*end = '\0';
		if (strncmp(p, "data: ", 6) == 0) {
			const char *d = p + 6, *c;

			v->nevents++;
			if (v->done || v->error)
				v->after = true;
			if (strcmp(d, "[DONE]") == 0) {
				v->done = true;
			} else if (h_json(d, "error") != NULL) {
				v->error = true;
				v->err_code = h_json(d, "error.code");
				v->err_message = h_json(d, "error.message");
				v->err_dep = h_json(d, "error.deployment");
			} else {
				if (h_json(d, "model"))
					v->model = h_json(d, "model");
				if (h_json(d, "usage.prompt_tokens")) {
					v->nusage++;
					v->prompt = h_json_long(
					    d, "usage.prompt_tokens", -1);
					v->completion = h_json_long(
					    d, "usage.completion_tokens", -1);
				}
				c = h_json(d, "choices.0.delta.content");
				if (c != NULL && *c != '\0') {
					v->ncontent++;
					strncat(v->text, c,
					        sizeof v->text -
					            strlen(v->text) - 1);
				}
			}
		}
		p = end ? end + 2 : NULL;
	}
}

/* One line describing a stream view, for assertion messages. */
static const char *
view_desc(const struct sse_view *v)
{
	return h_fmt("%d events, %d content, text '%s', done %d, error %d "
	             "(%s: %s)",
	             v->nevents, v->ncontent, v->text, v->done, v->error,
	             v->err_code ? v->err_code : "-",
	             v->err_message ? v->err_message : "-");
}

/* Start llmfd: router settings `router`; deployment "primary" (group main,
 * provider pprov, on the primary mock) with extra_p; "secondary" (group
 * backup, provider bprov, on the backup mock) with extra_b; main falls
 * back to backup; then tail. */
static void
start_daemon(const char *router, const char *pprov, const char *extra_p,
             const char *bprov, const char *extra_b, const char *tail)
{
	h_llmfd_start(
	    "daemon = { workers = 2; listen = \"llmfd.sock\";\n"
	    "  health_table = \"health\"; log_level = \"debug\";\n"
	    "  access_log = \"access.log\"; };\n"
	    "router = { %s };\n"
	    "deployments = (\n"
	    "  { name = \"primary\"; group = \"main\"; provider = \"%s\";\n"
	    "    base_url = \"http://127.0.0.1:%d%s\"; api_key = "
	    "\"$TEST_KEY\"; model = \"model-p\"; %s },\n"
	    "  { name = \"secondary\"; group = \"backup\"; provider = \"%s\";\n"
	    "    base_url = \"http://127.0.0.1:%d%s\"; api_key = "
	    "\"$TEST_KEY\"; model = \"model-s\"; %s }\n"
	    ");\n"
	    "fallbacks = ( { group = \"main\"; to = [ \"backup\" ]; } );\n"
	    "%s\n",
	    router, pprov, primary.port,
	    strcmp(pprov, "openai") == 0 ? "/v1" : "", extra_p, bprov,
	    backup.port, strcmp(bprov, "openai") == 0 ? "/v1" : "", extra_b,
	    tail);
}

/* Both deployments OpenAI-compatible, default settings otherwise. */
static void
start_openai(const char *router, const char *extra_p, const char *tail)
{
	start_daemon(router, "openai", extra_p, "openai", "", tail);
}

static struct h_resp *
chat(const char *body)
{
	return h_unix("POST", CHAT, body);
}

/* The x-llmfd-deployment header, or "(none)". */
static const char *
served_by(const struct h_resp *r)
{
	const char *d = h_header(r, "x-llmfd-deployment");

	return d ? d : "(none)";
}

/* The x-llmfd-attempts header as a number (-1 if absent). */
static long
attempts(const struct h_resp *r)
{
	const char *a = h_header(r, "x-llmfd-attempts");

	return a ? atol(a) : -1;
}

/* Print one measurement line for the closing note. */
#define MEASURE(...) fprintf(stderr, "MEASURE " __VA_ARGS__)

/* ---- 1. a stream that ends cleanly without [DONE] is complete ---- */

/* An OpenAI stream whose body ends after the finish and usage chunks but
 * without data: [DONE] is complete: llmfd ends it with [DONE] at once,
 * keeps the usage, and neither reports a cut nor tries anything else. */
Test(failover, b1_no_done_openai_is_complete)
{
	struct sse_view v;

	h_mock_start(&primary, "a", "--mode", "no-done", NULL);
	h_mock_start(&backup, "b", NULL);
	start_openai("", "", "");
	struct h_resp *r = chat(STREAM("main", USAGE));
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	sse_view(r->body, &v);
	MEASURE("b1 openai no-done: %ld ms, %ld attempts, done %d error %d, "
	        "usage %ld/%ld\n",
	        r->ms, attempts(r), v.done, v.error, v.prompt, v.completion);
	cr_assert(v.done && !v.error && !v.after, "%s\n%s", view_desc(&v),
	          r->body);
	cr_assert_str_eq(v.text, "mock a says hi mock");
	cr_assert_eq(v.nusage, 1, "%s", r->body);
	cr_assert_eq(v.prompt, 10);
	cr_assert_eq(v.completion, 5);
	cr_assert_str_eq(served_by(r), "primary");
	cr_assert_eq(attempts(r), 1);
	cr_assert_eq(h_mock_stat(&backup, "requests"), 0);
	cr_assert_lt(r->ms, 2000, "took %ld ms", r->ms);
}

/* The same for an Anthropic stream that stops after message_delta without
 * message_stop: the usage chunk llmfd writes at message_stop is still
 * written. */
Test(failover, b1_no_done_anthropic_is_complete)
{
	struct sse_view v;

	h_mock_start(&primary, "a", "--mode", "no-done", NULL);
	h_mock_start(&backup, "b", NULL);
	start_daemon("", "anthropic", "", "openai", "", "");
	struct h_resp *r = chat(STREAM("main", USAGE));
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	sse_view(r->body, &v);
	MEASURE("b1 anthropic no-done: %ld ms, %ld attempts, done %d error "
	        "%d, usage %ld/%ld\n",
	        r->ms, attempts(r), v.done, v.error, v.prompt, v.completion);
	cr_assert(v.done && !v.error && !v.after, "%s\n%s", view_desc(&v),
	          r->body);
	cr_assert_str_eq(v.text, "mock a says hi mock");
	cr_assert_eq(v.nusage, 1, "%s", r->body);
	cr_assert_eq(v.prompt, 10);
	cr_assert_eq(v.completion, 5);
	cr_assert_eq(attempts(r), 1);
	cr_assert_eq(h_mock_stat(&backup, "requests"), 0);
}

/* A stream cut before its finish reason is still a cut. */
Test(failover, b1_cut_without_finish_is_still_a_cut)
{
	struct sse_view v;

	h_mock_start(&primary, "a", "--mode", "cut", "--cut-after", "2", NULL);
	h_mock_start(&backup, "b", NULL);
	start_openai("", "", "");
	struct h_resp *r = chat(STREAM("main", ""));
	sse_view(r->body, &v);
	cr_assert(v.error && !v.done, "%s", view_desc(&v));
	cr_assert_str_eq(v.err_code, "stream_interrupted");
}

/* ---- 2. one malformed event is skipped, the stream goes on ---- */

/* The llmfd_stream_bad_events_total sample of deployment dep (-1). */
static long
bad_events_metric(const char *dep)
{
	struct h_resp *m = h_unix("GET", "/metrics", NULL);
	const char *key =
	    h_fmt("llmfd_stream_bad_events_total{deployment=\"%s\"", dep);
	const char *p = m->body ? strstr(m->body, key) : NULL;

	if (p == NULL || (p = strchr(p, '}')) == NULL)
		return -1;
	return atol(p + 1);
}

/* One bad-chunk stream through provider prov: complete, the bad event
 * skipped and counted. */
static void
check_bad_chunk(const char *prov)
{
	struct sse_view v;

	h_mock_start(&primary, "a", "--mode", "bad-chunk", NULL);
	h_mock_start(&backup, "b", NULL);
	start_daemon("", prov, "", "openai", "", "");
	struct h_resp *r = chat(STREAM("main", USAGE));
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	sse_view(r->body, &v);
	MEASURE("b2 %s bad-chunk: %ld ms, %ld attempts, done %d error %d, "
	        "text '%s'\n",
	        prov, r->ms, attempts(r), v.done, v.error, v.text);
	cr_assert(v.done && !v.error && !v.after, "%s\n%s", view_desc(&v),
	          r->body);
	cr_assert_str_eq(v.text, "mock a says hi mock");
	cr_assert_eq(v.prompt, 10);
	cr_assert_str_eq(served_by(r), "primary");
	cr_assert_eq(attempts(r), 1);
	cr_assert_eq(h_mock_stat(&backup, "requests"), 0);
	cr_assert_eq(bad_events_metric("primary"), 1);
	cr_assert(h_log_has("malformed stream event"), "no debug log line");
}

Test(failover, b2_bad_chunk_openai_skipped)
{
	check_bad_chunk("openai");
}

Test(failover, b2_bad_chunk_anthropic_skipped)
{
	check_bad_chunk("anthropic");
}

Test(failover, b2_bad_chunk_gemini_skipped)
{
	check_bad_chunk("gemini");
}

/* ---- 4. timeouts fail over, they don't repeat ---- */

/* An upstream that accepts and never answers costs one attempt timeout,
 * then the fallback answers: not num_retries more timeouts. */
Test(failover, b4_hang_costs_one_attempt_timeout)
{
	h_mock_start(&primary, "a", "--mode", "hang", NULL);
	h_mock_start(&backup, "b", NULL);
	start_openai("attempt_timeout_ms = 1500;", "", "");
	struct h_resp *r = chat(BODY("main", ""));
	MEASURE("b4 hang (attempt_timeout 1.5 s, num_retries 2): %ld ms, %ld "
	        "attempts, primary %ld requests, served by %s\n",
	        r->ms, attempts(r), h_mock_stat(&primary, "requests"),
	        served_by(r));
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_str_eq(served_by(r), "secondary");
	cr_assert_eq(attempts(r), 2);
	cr_assert_eq(h_mock_stat(&primary, "requests"), 1);
	cr_assert(r->ms >= 1400 && r->ms < 3000, "took %ld ms", r->ms);
}

/* A first token that is late costs one first-token timeout, then the
 * fallback streams the answer. */
Test(failover, b4_slow_first_token_costs_one_timeout)
{
	struct sse_view v;

	h_mock_start(&primary, "a", "--latency-ms", "8000", NULL);
	h_mock_start(&backup, "b", NULL);
	start_openai("first_token_timeout_ms = 1000;", "", "");
	struct h_resp *r = chat(STREAM("main", ""));
	sse_view(r->body, &v);
	MEASURE("b4 slow first token (first_token_timeout 1 s, num_retries "
	        "2): first byte %ld ms, %ld attempts, primary %ld requests\n",
	        r->nreads ? r->read_ms[0] : -1, attempts(r),
	        h_mock_stat(&primary, "requests"));
	cr_assert(v.done && !v.error, "%s", view_desc(&v));
	cr_assert_str_eq(served_by(r), "secondary");
	cr_assert_eq(attempts(r), 2);
	cr_assert_eq(h_mock_stat(&primary, "requests"), 1);
	cr_assert(r->read_ms[0] >= 900 && r->read_ms[0] < 2500,
	          "first byte at %ld ms", r->read_ms[0]);
}

/* retry_on = [ "timeout" ] brings the retry of a timeout back. */
Test(failover, b4_retry_on_timeout_retries)
{
	h_mock_start(&primary, "a", "--mode", "hang", NULL);
	h_mock_start(&backup, "b", NULL);
	start_openai("attempt_timeout_ms = 500; num_retries = 1; "
	             "backoff_base_ms = 10; retry_on = [ \"timeout\" ];",
	             "", "");
	struct h_resp *r = chat(BODY("main", ""));
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_str_eq(served_by(r), "secondary");
	cr_assert_eq(h_mock_stat(&primary, "requests"), 2);
	cr_assert_eq(attempts(r), 3);
}

/* A 5xx is still retried on the same deployment by default. */
Test(failover, b4_5xx_still_retried)
{
	h_mock_start(&primary, "a", "--mode", "status", "--status", "502",
	             "--fail-first", "1", NULL);
	h_mock_start(&backup, "b", NULL);
	start_openai("backoff_base_ms = 10;", "", "");
	struct h_resp *r = chat(BODY("main", ""));
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_str_eq(served_by(r), "primary");
	cr_assert_eq(attempts(r), 2);
}

/* ---- 5. short Retry-After is honoured on the preferred deployment ---- */

/* llmfctl status --json (harness-owned text). */
static char *
status_json(void)
{
	char *out;
	int rc = h_run(&out, h_bin("llmfctl"), "-c", h_conf(), "status",
	               "--json", NULL);

	cr_assert_eq(rc, 0, "llmfctl status --json exit %d:\n%s", rc, out);
	return out;
}

/* A field of deployment dep in llmfctl's JSON, as text (NULL if absent). */
static const char *
dep_field(const char *js, const char *dep, const char *field)
{
	int n = h_json_count(js, "deployments");

	for (int i = 0; i < n; i++) {
		const char *name = h_json(js, h_fmt("deployments.%d.name", i));
		if (name != NULL && strcmp(name, dep) == 0)
			return h_json(js, h_fmt("deployments.%d.%s", i, field));
	}
	return NULL;
}

/* A 429 with Retry-After: 2 is waited out and retried on the primary
 * (the fallback is not used), and the primary cools for 2 s, not 30. */
Test(failover, b5_short_retry_after_retried_on_primary)
{
	h_mock_start(&primary, "a", "--mode", "status", "--status", "429",
	             "--retry-after", "2", "--fail-first", "1", NULL);
	h_mock_start(&backup, "b", NULL);
	start_openai("", "", "");
	struct h_resp *r = chat(BODY("main", ""));
	MEASURE("b5 429 Retry-After 2: %ld ms, %ld attempts, served by %s, "
	        "backup %ld requests\n",
	        r->ms, attempts(r), served_by(r),
	        h_mock_stat(&backup, "requests"));
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_str_eq(served_by(r), "primary");
	cr_assert_eq(attempts(r), 2);
	cr_assert_eq(h_mock_stat(&backup, "requests"), 0);
	cr_assert(r->ms >= 1900 && r->ms < 3500, "took %ld ms", r->ms);
	r = chat(BODY("main", ""));
	cr_assert_str_eq(served_by(r), "primary", "primary still cooling");
}

/* retry-after-ms on a 503 counts too. */
Test(failover, b5_retry_after_ms_on_503)
{
	h_mock_start(&primary, "a", "--mode", "status", "--status", "503",
	             "--retry-after-ms", "800", "--fail-first", "1", NULL);
	h_mock_start(&backup, "b", NULL);
	start_openai("", "", "");
	struct h_resp *r = chat(BODY("main", ""));
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_str_eq(served_by(r), "primary");
	cr_assert(r->ms >= 750 && r->ms < 2500, "took %ld ms", r->ms);
}

/* A Retry-After longer than retry_after_max_wait_ms moves on at once, and
 * the primary cools for the Retry-After. */
Test(failover, b5_long_retry_after_moves_on_at_once)
{
	h_mock_start(&primary, "a", "--mode", "status", "--status", "429",
	             "--retry-after", "20", NULL);
	h_mock_start(&backup, "b", NULL);
	start_openai("", "", "");
	struct h_resp *r = chat(BODY("main", ""));
	MEASURE("b5 429 Retry-After 20: %ld ms, %ld attempts, served by %s\n",
	        r->ms, attempts(r), served_by(r));
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_str_eq(served_by(r), "secondary");
	cr_assert_eq(attempts(r), 2);
	cr_assert_lt(r->ms, 1000);
	const char *cool =
	    dep_field(status_json(), "primary", "cooldown_remaining_s");
	long left = cool ? atol(cool) : -1;
	cr_assert(left >= 18 && left <= 20, "cooldown %ld s, want ~20", left);
}

/* The cooldown a 429 starts lasts its Retry-After: with retries off, a
 * Retry-After of 2 s sends traffic to the fallback for about 2 s, then
 * back to the primary (not 30 s, the cooldown_s). */
Test(failover, b5_cooldown_lasts_the_retry_after)
{
	h_mock_start(&primary, "a", "--mode", "status", "--status", "429",
	             "--retry-after", "2", "--fail-first", "1", NULL);
	h_mock_start(&backup, "b", NULL);
	start_openai("num_retries = 0;", "", "");
	struct h_resp *r = chat(BODY("main", ""));
	cr_assert_str_eq(served_by(r), "secondary");
	long t0 = h_now_ms(), back = -1;
	while (h_now_ms() - t0 < 8000) {
		r = chat(BODY("main", ""));
		if (strcmp(served_by(r), "primary") == 0) {
			back = h_now_ms() - t0;
			break;
		}
		h_sleep_ms(200);
	}
	MEASURE("b5 cooldown after 429 Retry-After 2 (cooldown_s 30): back "
	        "on the primary after %ld ms\n",
	        back);
	cr_assert(back >= 1000 && back < 3500, "back after %ld ms", back);
}

/* ---- 6. what clients see ---- */

/* Send body as an OpenAI / Anthropic SDK would with max_retries 2: retry
 * 408, 409, 429 and 5xx unless x-should-retry says false (no sleep, to
 * keep the test short). Returns the last response; *sent the requests. */
static struct h_resp *
sdk_request(const char *body, int *sent)
{
	struct h_resp *r;
	const char *sr;

	*sent = 0;
	for (;;) {
		r = chat(body);
		++*sent;
		sr = h_header(r, "x-should-retry");
		if (r->status < 400 || *sent > 2 ||
		    (sr && strcmp(sr, "false") == 0))
			return r;
		if (sr && strcmp(sr, "true") == 0)
			continue;
		if (r->status != 408 && r->status != 409 && r->status != 429 &&
		    r->status < 500)
			return r;
	}
}

/* An outage: every candidate answers 503. The client gets a 503 with a
 * Retry-After and x-should-retry: false, so an SDK does not send it again
 * (and multiply the upstream load). */
Test(failover, b6_outage_503_retry_after_no_sdk_retry)
{
	int sent, total = 0;

	h_mock_start(&primary, "a", "--mode", "status", "--status", "503",
	             NULL);
	h_mock_start(&backup, "b", "--mode", "status", "--status", "503", NULL);
	start_openai("backoff_base_ms = 10;", "", "");
	struct h_resp *r[3];
	for (int i = 0; i < 3; i++) {
		r[i] = sdk_request(BODY("main", ""), &sent);
		total += sent;
	}
	long up = h_mock_stat(&primary, "requests") +
	          h_mock_stat(&backup, "requests");
	MEASURE("b6 outage, 3 SDK calls (max_retries 2): %d llmfd requests, "
	        "%ld upstream calls, last %d Retry-After %s x-should-retry "
	        "%s\n",
	        total, up, r[2]->status, h_header(r[2], "retry-after"),
	        h_header(r[2], "x-should-retry"));
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(r[i]->status, 503, "%s", h_desc(r[i]));
		cr_assert_not_null(h_header(r[i], "retry-after"), "%s",
		                   h_desc(r[i]));
		cr_assert_str_eq(h_header(r[i], "x-should-retry"), "false");
	}
	cr_assert_eq(total, 3, "the SDK retried: %d requests", total);
}

/* A request that finds every circuit open is an outage: 503, with the
 * time to the next probe as its Retry-After, not a 429 "rate limit". */
Test(failover, b6_open_circuits_are_503_not_429)
{
	h_mock_start(&primary, "a", "--mode", "status", "--status", "503",
	             NULL);
	h_mock_start(&backup, "b", "--mode", "status", "--status", "503", NULL);
	start_openai("num_retries = 0; circuit_failure_threshold = 1; "
	             "queue_when_cooling = false;",
	             "", "");
	struct h_resp *r = chat(BODY("main", ""));
	cr_assert_eq(r->status, 503, "%s", h_desc(r));
	r = chat(BODY("main", ""));
	MEASURE("b6 open circuits: %d %s, Retry-After %s\n", r->status,
	        h_json(r->body, "error.code"), h_header(r, "retry-after"));
	cr_assert_eq(r->status, 503, "%s", h_desc(r));
	const char *ra = h_header(r, "retry-after");
	cr_assert(ra && atol(ra) >= 25 && atol(ra) <= 30, "Retry-After %s",
	          ra ? ra : "(none)");
	cr_assert_null(h_header(r, "x-should-retry"),
	               "nothing was attempted: the client may retry later");
}

/* A real rate limit stays a 429, with a Retry-After. */
Test(failover, b6_rate_limit_stays_429)
{
	h_mock_start(&primary, "a", "--mode", "status", "--status", "429",
	             NULL);
	h_mock_start(&backup, "b", "--mode", "status", "--status", "429", NULL);
	start_openai("", "", "");
	struct h_resp *r = chat(BODY("main", ""));
	cr_assert_eq(r->status, 429, "%s", h_desc(r));
	cr_assert_str_eq(h_json(r->body, "error.type"), "rate_limit_error");
	cr_assert_not_null(h_header(r, "retry-after"), "%s", h_desc(r));
	cr_assert_str_eq(h_header(r, "x-should-retry"), "false");
}

/* The upstream's own Retry-After reaches the client. */
Test(failover, b6_upstream_retry_after_passed_on)
{
	h_mock_start(&primary, "a", "--mode", "status", "--status", "429",
	             "--retry-after", "17", NULL);
	h_mock_start(&backup, "b", "--mode", "status", "--status", "429",
	             "--retry-after", "12", NULL);
	start_openai("", "", "");
	struct h_resp *r = chat(BODY("main", ""));
	cr_assert_eq(r->status, 429, "%s", h_desc(r));
	cr_assert_str_eq(h_header(r, "retry-after"), "12");
}

/* ---- 3. a primary that comes back is used again ---- */

/*
 * The scenario: group main's only deployment answers 503 for
 * outage_ms and then recovers; one request every every_ms. Every request
 * during the outage must be served by the fallback, and traffic must be
 * back on the primary within within_ms of the recovery. The router gets
 * `router`. Prints the measurement.
 */
static void
check_comes_back(const char *router, long outage_ms, long every_ms,
                 long within_ms)
{
	char rec[16];
	long t0, t, back = -1, failed = 0, outage_fallback = 0, n = 0;

	snprintf(rec, sizeof rec, "%ld", outage_ms);
	h_mock_start(&primary, "a", "--mode", "status", "--status", "503",
	             "--recover-after-ms", rec, NULL);
	h_mock_start(&backup, "b", NULL);
	start_openai(router, "", "");
	cr_assert_eq(h_mock_reset(&primary), 0); /* the outage starts now */
	t0 = h_now_ms();
	while ((t = h_now_ms() - t0) < outage_ms + within_ms + 4 * every_ms) {
		struct h_resp *r = chat(BODY("main", ""));
		const char *by = served_by(r);

		n++;
		if (r->status != 200)
			failed++;
		else if (t < outage_ms - 200 && strcmp(by, "secondary") == 0)
			outage_fallback++;
		if (back < 0 && t >= outage_ms && strcmp(by, "primary") == 0)
			back = t - outage_ms;
		if (back >= 0 && t - outage_ms > back + 3 * every_ms)
			break;
		h_sleep_ms(every_ms - (h_now_ms() - t0 - t) % every_ms);
	}
	MEASURE("b3 primary down %ld ms, a request every %ld ms (%s): %ld "
	        "requests, %ld failed, %ld served by the fallback during the "
	        "outage; back on the primary %ld ms after its recovery; "
	        "primary got %ld upstream requests\n",
	        outage_ms, every_ms, router[0] ? router : "defaults", n, failed,
	        outage_fallback, back, h_mock_stat(&primary, "requests"));
	cr_assert_eq(failed, 0, "%ld requests failed during the outage",
	             failed);
	cr_assert_geq(back, 0, "traffic never came back to the primary");
	cr_assert_leq(back, within_ms,
	              "back on the primary %ld ms after its recovery", back);
}

/* The scenario scaled down by 5 (the cooldown and the circuit's recovery
 * window too): down 12 s, a request every 0.8 s, back within 6 s. */
Test(failover, b3_primary_comes_back_scaled)
{
	check_comes_back("cooldown_s = 6; circuit_recovery_s = 6;", 12000, 800,
	                 6000);
}

/* The scenario at full scale with default settings: down 60 s, a
 * request every 4 s, back within 30 s. Takes two minutes: runs only with
 * LLMFD_SLOW_TESTS=1. */
Test(failover, b3_primary_comes_back_full_scale, .timeout = 200)
{
	if (getenv("LLMFD_SLOW_TESTS") == NULL)
		cr_skip_test("set LLMFD_SLOW_TESTS=1 to run (2 minutes)");
	check_comes_back("", 60000, 4000, 30000);
}

/* ---- 8. accounting after a fallback ---- */

/* The value of the /metrics sample `name` whose labels hold deployment
 * dep and, if given, the label text `also` (-1 if none). */
static long
metric(const char *name, const char *dep, const char *also)
{
	struct h_resp *m = h_unix("GET", "/metrics", NULL);
	const char *want = h_fmt("deployment=\"%s\"", dep);
	char *copy = h_fmt("%s", m->body ? m->body : ""), *line, *save;

	for (line = strtok_r(copy, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		char *lb = strchr(line, '{'), *end = strchr(line, '}');

		if (lb == NULL || end == NULL ||
		    (size_t)(lb - line) != strlen(name) ||
		    strncmp(line, name, strlen(name)) != 0)
			continue;
		*end = '\0';
		if (strstr(lb, want) && (also == NULL || strstr(lb, also)))
			return atol(end + 1);
	}
	return -1;
}

/* The access log line of request id (harness-owned), or NULL. */
static const char *
access_line(const char *id)
{
	char *log = h_read(h_path("access.log")), *line, *save;

	for (line = log ? strtok_r(log, "\n", &save) : NULL; line;
	     line = strtok_r(NULL, "\n", &save))
		if (strstr(line, h_fmt("id=%s ", id)))
			return line;
	return NULL;
}

/* Assert the failed primary is never reported as a completion: no success
 * outcome, no tokens, in /metrics and llmfctl. */
static void
assert_primary_never_completed(void)
{
	const char *st = status_json();

	cr_assert_eq(metric("llmfd_attempt_outcomes_total", "primary",
	                    "class=\"success\""),
	             0);
	cr_assert_eq(metric("llmfd_tokens_in_total", "primary", NULL), 0);
	cr_assert_str_eq(dep_field(st, "primary", "successes"), "0");
	cr_assert_str_eq(dep_field(st, "secondary", "successes"), "1");
	cr_assert_eq(metric("llmfd_tokens_in_total", "secondary", NULL), 7);
	cr_assert_eq(metric("llmfd_tokens_out_total", "secondary", NULL), 3);
}

/* A whole reply after a fallback: its model and usage are the fallback's;
 * the access log, /metrics and llmfctl count one completion, the
 * fallback's, and the primary's attempts as failures. */
Test(failover, b8_fallback_reply_accounting)
{
	h_mock_start(&primary, "a", "--mode", "status", "--status", "503",
	             "--usage", "50,50", NULL);
	h_mock_start(&backup, "b", "--usage", "7,3", NULL);
	start_openai("backoff_base_ms = 10;", "", "");
	struct h_resp *r = chat(BODY("main", ""));
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	const char *line = access_line(h_header(r, "x-request-id"));
	MEASURE("b8 fallback reply: model %s, usage %ld/%ld, %ld attempts; "
	        "access log: %s\n",
	        h_json(r->body, "model"),
	        h_json_long(r->body, "usage.prompt_tokens", -1),
	        h_json_long(r->body, "usage.completion_tokens", -1),
	        attempts(r), line ? line : "(none)");
	cr_assert_str_eq(h_json(r->body, "model"), "model-s");
	cr_assert_eq(h_json_long(r->body, "usage.prompt_tokens", -1), 7);
	cr_assert_eq(h_json_long(r->body, "usage.completion_tokens", -1), 3);
	cr_assert_not_null(line, "no access log line");
	cr_assert(strstr(line, " deployment=secondary ") &&
	              strstr(line, " status=200 ") &&
	              strstr(line, " prompt_tokens=7 completion_tokens=3 "),
	          "%s", line);
	cr_assert_not_null(strstr(line, "trail=primary:503:transient:"), "%s",
	                   line);
	assert_primary_never_completed();
	cr_assert_geq(metric("llmfd_attempt_outcomes_total", "primary",
	                     "class=\"transient\""),
	              1);
}

/* A stream after a fallback: its chunks carry the fallback's model and
 * its usage chunk the fallback's usage. */
Test(failover, b8_fallback_stream_accounting)
{
	struct sse_view v;

	h_mock_start(&primary, "a", "--mode", "stream-error", NULL);
	h_mock_start(&backup, "b", "--usage", "7,3", NULL);
	start_openai("num_retries = 0;", "", "");
	struct h_resp *r = chat(STREAM("main", USAGE));
	sse_view(r->body, &v);
	cr_assert(v.done && !v.error, "%s", view_desc(&v));
	cr_assert_str_eq(v.model, "model-s");
	cr_assert_eq(v.prompt, 7);
	cr_assert_eq(v.completion, 3);
	const char *line = access_line(h_header(r, "x-request-id"));
	cr_assert(line && strstr(line, " deployment=secondary ") &&
	              strstr(line, " prompt_tokens=7 completion_tokens=3 "),
	          "%s", line ? line : "(no access log line)");
	assert_primary_never_completed();
}

/* A stream cut mid-way and continued on the fallback: the usage reported
 * (stream and access log) is the fallback's, and the cut attempt is a
 * failure, not a completion. */
Test(failover, b8_continued_stream_accounting)
{
	struct sse_view v;

	h_mock_start(&primary, "a", "--mode", "cut", "--cut-after", "2",
	             "--usage", "50,50", NULL);
	h_mock_start(&backup, "b", "--usage", "7,3", NULL);
	start_openai("", "",
	             "groups = ( { name = \"main\"; stream_resume = "
	             "\"continue\"; } );");
	struct h_resp *r = chat(STREAM("main", USAGE));
	sse_view(r->body, &v);
	cr_assert(v.done && !v.error, "%s", view_desc(&v));
	cr_assert_eq(v.prompt, 7);
	cr_assert_eq(v.completion, 3);
	const char *line = access_line(h_header(r, "x-request-id"));
	cr_assert(line && strstr(line, " deployment=secondary ") &&
	              strstr(line, " prompt_tokens=7 completion_tokens=3 "),
	          "%s", line ? line : "(no access log line)");
	assert_primary_never_completed();
}

/* ---- 7. continuation that never lies ---- */

#define CONTINUE                                                               \
	"groups = ( { name = \"main\"; stream_resume = \"continue\"; } );"
#define RESUME_INSTR "Your previous answer was cut off"

/* The primary (mock "x", args) fails mid-stream after "mock x"; the backup
 * (provider bprov, extra_b, mock "x" with bargs) answers from the start:
 * "mock x says hi mock". Returns the client's view. */
static struct h_resp *
continued(const char *const *args, const char *router, const char *bprov,
          const char *extra_b, const char *const *bargs, struct sse_view *v)
{
	h_mock_startv(&primary, "x", args);
	h_mock_startv(&backup, "x", bargs);
	start_daemon(router, "openai", "", bprov, extra_b, CONTINUE);
	struct h_resp *r = chat(STREAM("main", ""));
	sse_view(r->body, v);
	return r;
}

/* Assert the client got the answer once, complete, and say so. */
static void
assert_spliced(const char *what, const struct h_resp *r,
               const struct sse_view *v)
{
	MEASURE("b7 %s: %ld ms, text '%s', done %d, error %d, backup %ld "
	        "requests\n",
	        what, r->ms, v->text, v->done, v->error,
	        h_mock_stat(&backup, "requests"));
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert(v->done && !v->error && !v->after, "%s\n%s", view_desc(v),
	          r->body);
	cr_assert_str_eq(v->text, "mock x says hi mock",
	                 "the continuation repeated text: '%s'", v->text);
}

/* The last message the backup received (JSON text of the whole body). */
static const char *
backup_body(void)
{
	struct h_resp *b = h_tcp(backup.port, "GET", "/_mock/last/body", NULL);

	cr_assert_eq(b->status, 200);
	return b->body;
}

/* A cut: the restarted answer's repeat of "mock x" is dropped. */
Test(failover, b7_cut_restart_repeat_dropped)
{
	const char *cut[] = {"--mode", "cut", "--cut-after", "2", NULL};
	struct sse_view v;
	struct h_resp *r = continued(cut, "", "openai", "", NULL, &v);

	assert_spliced("cut, OpenAI target (instruction form)", r, &v);
	const char *body = backup_body();
	int n = h_json_count(body, "messages");
	cr_assert_eq(n, 3, "%s", body);
	cr_assert_str_eq(h_json(body, "messages.1.role"), "assistant");
	cr_assert_str_eq(h_json(body, "messages.1.content"), "mock x");
	cr_assert_not_null(
	    strstr(h_json(body, "messages.2.content"), RESUME_INSTR));
}

/* A stall (idle timeout): the same. */
Test(failover, b7_stall_restart_repeat_dropped)
{
	const char *stall[] = {"--mode", "stall", "--cut-after", "2", NULL};
	struct sse_view v;
	struct h_resp *r = continued(stall, "stream_idle_timeout_ms = 500;",
	                             "openai", "", NULL, &v);

	assert_spliced("stall", r, &v);
}

/* An error event mid-stream: the same. */
Test(failover, b7_mid_stream_error_restart_repeat_dropped)
{
	const char *late[] = {"--mode", "late-error", "--cut-after", "2", NULL};
	struct sse_view v;
	struct h_resp *r = continued(late, "", "openai", "", NULL, &v);

	assert_spliced("mid-stream error event", r, &v);
}

/* An Anthropic target takes the continuation as a true prefill (the last
 * turn is the assistant's partial answer, no instruction). */
Test(failover, b7_anthropic_target_gets_a_prefill)
{
	const char *cut[] = {"--mode", "cut", "--cut-after", "2", NULL};
	struct sse_view v;
	struct h_resp *r = continued(cut, "", "anthropic", "", NULL, &v);

	assert_spliced("cut, Anthropic target (prefill)", r, &v);
	const char *body = backup_body();
	int n = h_json_count(body, "messages");
	cr_assert_str_eq(h_json(body, h_fmt("messages.%d.role", n - 1)),
	                 "assistant", "%s", body);
	cr_assert_str_eq(
	    h_json(body, h_fmt("messages.%d.content.0.text", n - 1)), "mock x");
	cr_assert_null(strstr(body, RESUME_INSTR), "%s", body);
}

/* prefill = true on an OpenAI-compatible target: a final assistant turn. */
Test(failover, b7_prefill_setting_on_openai_target)
{
	const char *cut[] = {"--mode", "cut", "--cut-after", "2", NULL};
	struct sse_view v;
	struct h_resp *r =
	    continued(cut, "", "openai", "prefill = true;", NULL, &v);

	assert_spliced("cut, OpenAI target with prefill = true", r, &v);
	const char *body = backup_body();
	cr_assert_eq(h_json_count(body, "messages"), 2, "%s", body);
	cr_assert_str_eq(h_json(body, "messages.1.role"), "assistant");
	cr_assert_null(strstr(body, RESUME_INSTR), "%s", body);
}

/* A target that rejects prefill (a 400 about the final assistant turn) is
 * retried in the instruction form; the client never sees the 400. */
Test(failover, b7_prefill_rejected_retried_as_instruction)
{
	const char *cut[] = {"--mode", "cut", "--cut-after", "2", NULL};
	const char *rej[] = {"--reject-prefill", "1", NULL};
	struct sse_view v;
	struct h_resp *r = continued(cut, "", "anthropic", "", rej, &v);

	assert_spliced("cut, Anthropic target rejecting prefill", r, &v);
	cr_assert_eq(h_mock_stat(&backup, "requests"), 2);
	cr_assert_null(strstr(r->body, "prefill"), "%s", r->body);
	cr_assert_not_null(strstr(backup_body(), RESUME_INSTR));
}

/* A continuation that repeats the answer with changes cannot be spliced
 * truthfully: the stream ends with the error event, without [DONE]. */
Test(failover, b7_changed_restart_ends_with_error)
{
	struct sse_view v;

	h_mock_start(&primary, "alpha-long-name-one", "--mode", "cut",
	             "--cut-after", "3", NULL);
	h_mock_start(&backup, "alpha-long-name-two", NULL);
	start_openai("", "", CONTINUE);
	struct h_resp *r = chat(STREAM("main", ""));
	sse_view(r->body, &v);
	MEASURE("b7 changed restart: text '%s', done %d, error %d (%s)\n",
	        v.text, v.done, v.error, v.err_message ? v.err_message : "-");
	cr_assert(v.error && !v.done && !v.after, "%s", view_desc(&v));
	cr_assert_str_eq(v.text, "mock alpha-long-name-one says");
	cr_assert_str_eq(v.err_code, "stream_interrupted");
	cr_assert_str_eq(v.err_dep, "primary");
}

/* A continuation target that only answers 400: the error event carries
 * the real interruption (the cut on the primary), not the 400. */
Test(failover, b7_error_event_names_the_real_interruption)
{
	const char *cut[] = {"--mode", "cut", "--cut-after", "2", NULL};
	const char *bad[] = {"--mode",    "status",
	                     "--status",  "400",
	                     "--message", "final assistant turn rejected",
	                     NULL};
	struct sse_view v;
	struct h_resp *r = continued(cut, "", "anthropic", "", bad, &v);

	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert(v.error && !v.done, "%s", view_desc(&v));
	cr_assert_str_eq(v.text, "mock x");
	cr_assert_str_eq(v.err_dep, "primary");
	cr_assert(v.err_message &&
	              strstr(v.err_message, "closed the connection"),
	          "%s", view_desc(&v));
	cr_assert_null(strstr(r->body, "final assistant"), "%s", r->body);
}

/* ---- the other client protocols ---- */

#define MSGS "/v1/messages"
#define RESP "/v1/responses"

/* The answer text an Anthropic Messages or OpenAI Responses stream carried
 * (text_delta / output_text.delta events), and whether it ended with its
 * protocol's terminal event (message_stop / response.completed) or with an
 * error (event: error / response.failed). */
struct proto_view {
	char text[1024];
	bool complete, error;
};

static void
proto_view(const char *body, struct proto_view *v)
{
	char *copy = h_fmt("%s", body ? body : ""), *save, *ln;
	const char *t;

	memset(v, 0, sizeof *v);
	for (ln = strtok_r(copy, "\n", &save); ln;
	     ln = strtok_r(NULL, "\n", &save)) {
		if (strncmp(ln, "event: ", 7) == 0) {
			v->complete |=
			    strcmp(ln + 7, "message_stop") == 0 ||
			    strcmp(ln + 7, "response.completed") == 0;
			v->error |= strcmp(ln + 7, "error") == 0 ||
			            strcmp(ln + 7, "response.failed") == 0;
			continue;
		}
		if (strncmp(ln, "data: ", 6) != 0)
			continue;
		t = h_json(ln + 6, "type");
		if (t && strcmp(t, "content_block_delta") == 0 &&
		    (t = h_json(ln + 6, "delta.text")) != NULL)
			strncat(v->text, t,
			        sizeof v->text - strlen(v->text) - 1);
		else if (t && strcmp(t, "response.output_text.delta") == 0 &&
		         (t = h_json(ln + 6, "delta")) != NULL)
			strncat(v->text, t,
			        sizeof v->text - strlen(v->text) - 1);
	}
}

/* A Messages and a Responses client whose stream is cut and continued on
 * a backup that restarts the answer: each gets the answer once, complete
 * in its own protocol. */
static void
check_ingress_splice(const char *path, const char *body, const char *what)
{
	struct proto_view v;

	h_mock_start(&primary, "x", "--mode", "cut", "--cut-after", "2", NULL);
	h_mock_start(&backup, "x", NULL);
	start_openai("", "", CONTINUE);
	struct h_resp *r = h_unix("POST", path, body);
	proto_view(r->body, &v);
	MEASURE("b7 %s client, cut: text '%s', complete %d, error %d\n", what,
	        v.text, v.complete, v.error);
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert(v.complete && !v.error, "%s", r->body);
	cr_assert_str_eq(v.text, "mock x says hi mock");
}

Test(failover, b7_messages_client_restart_repeat_dropped)
{
	check_ingress_splice(MSGS,
	                     "{\"model\":\"main\",\"max_tokens\":64,"
	                     "\"stream\":true," HI "}",
	                     "Messages");
}

Test(failover, b7_responses_client_restart_repeat_dropped)
{
	check_ingress_splice(
	    RESP, "{\"model\":\"main\",\"input\":\"hi\",\"stream\":true}",
	    "Responses");
}

/* A Messages client whose stream passes through from an Anthropic
 * upstream that stops after message_delta (no message_stop): complete,
 * llmfd writes the message_stop. */
Test(failover, b1_messages_passthrough_no_message_stop)
{
	struct proto_view v;

	h_mock_start(&primary, "a", "--mode", "no-done", NULL);
	h_mock_start(&backup, "b", NULL);
	start_daemon("", "anthropic", "", "openai", "", "");
	struct h_resp *r = h_unix(
	    "POST", MSGS,
	    "{\"model\":\"main\",\"max_tokens\":64,\"stream\":true," HI "}");
	proto_view(r->body, &v);
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert(v.complete && !v.error, "%s", r->body);
	cr_assert_str_eq(v.text, "mock a says hi mock");
	cr_assert_eq(attempts(r), 1);
	cr_assert(h_log_has("without the terminal event"), "%s", h_log());
}

/* A Messages client, OpenAI upstream without [DONE]: message_stop. */
Test(failover, b1_messages_client_no_done)
{
	struct proto_view v;

	h_mock_start(&primary, "a", "--mode", "no-done", NULL);
	h_mock_start(&backup, "b", NULL);
	start_openai("", "", "");
	struct h_resp *r = h_unix(
	    "POST", MSGS,
	    "{\"model\":\"main\",\"max_tokens\":64,\"stream\":true," HI "}");
	proto_view(r->body, &v);
	cr_assert(v.complete && !v.error, "%s", r->body);
	cr_assert_str_eq(v.text, "mock a says hi mock");
}
