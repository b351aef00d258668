/* count_tokens and stream keep-alives through the real daemon.
 *
 * POST /v1/messages/count_tokens goes to the Anthropic-family deployments
 * of the model's candidates only (llmf-mock answers input_tokens = 10000 +
 * the bytes of the body it got, far from llmfd's estimate), falls back
 * along them on transient faults, returns a client's-fault 400 in
 * Anthropic's shape, and is answered with llmfd's estimate
 * (x-llmfd-deployment: estimate) when no such deployment answers.
 *
 * A stream that sends nothing for router.stream_ping_ms gets keep-alives:
 * `event: ping` on Messages (never before message_start), an SSE comment
 * on Chat Completions. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "tests/integration/harness.h"

#define COUNT      "/v1/messages/count_tokens"
#define COUNT_BASE 10000 /* tools/mock.c */
#define HELLO                                                                  \
	"\"messages\":[{\"role\":\"user\",\"content\":\"hello there, how are " \
	"you today?\"}]"
/* llmfd's estimate of HELLO: ceil(31 / 4) + 3 for the message */
#define HELLO_EST 11

TestSuite(count_tokens, .init = h_setup, .fini = h_teardown, .timeout = 60);
TestSuite(keepalive, .init = h_setup, .fini = h_teardown, .timeout = 60);

static struct h_mock an1, an2, ge, oa;

/* Group claude: Anthropic an1, then Anthropic an2, then Gemini ge; group
 * gpt: OpenAI oa and Gemini ge (nothing that counts tokens). */
static void
count_start(const char *const *a1, const char *const *a2)
{
	h_mock_startv(&an1, "an1", a1);
	h_mock_startv(&an2, "an2", a2);
	h_mock_start(&ge, "ge", NULL);
	h_mock_start(&oa, "oa", NULL);
	h_llmfd_start(
	    "daemon = { workers = 1; listen = \"llmfd.sock\"; health_table = "
	    "\"health\"; };\n"
	    "router = { strategy = \"ordered\"; num_retries = 0; "
	    "cooldown_s = 0; };\n"
	    "deployments = (\n"
	    "  { name = \"an1\"; group = \"claude\"; provider = \"anthropic\"; "
	    "model = \"claude-x\"; base_url = \"http://127.0.0.1:%d\"; "
	    "api_key = \"k1\"; },\n"
	    "  { name = \"an2\"; group = \"claude\"; provider = \"anthropic\"; "
	    "model = \"claude-y\"; base_url = \"http://127.0.0.1:%d\"; "
	    "api_key = \"k2\"; },\n"
	    "  { name = \"ge\"; group = \"claude\"; provider = \"gemini\"; "
	    "model = \"gemini-x\"; base_url = \"http://127.0.0.1:%d\"; "
	    "api_key = \"kg\"; },\n"
	    "  { name = \"oa\"; group = \"gpt\"; provider = \"openai\"; "
	    "model = \"gpt-x\"; base_url = \"http://127.0.0.1:%d/v1\"; "
	    "api_key = \"ko\"; },\n"
	    "  { name = \"ge2\"; group = \"gpt\"; provider = \"gemini\"; "
	    "model = \"gemini-x\"; base_url = \"http://127.0.0.1:%d\"; "
	    "api_key = \"kg\"; }\n);\n",
	    an1.port, an2.port, ge.port, oa.port, ge.port);
}

/* POST body to path on the daemon's socket with extra headers. */
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

/* The mock's last request (its log entry). */
static const char *
last(const struct h_mock *m)
{
	struct h_resp *r = h_tcp(m->port, "GET", "/_mock/last", NULL);

	cr_assert_eq(r->status, 200, "/_mock/last of %s: %s", m->name,
	             h_desc(r));
	return r->body;
}

static const char *const down[] = {"--mode", "status", "--status", "503", NULL};
static const char *const closes[] = {"--mode", "close", NULL};

/* An Anthropic deployment counts: its answer comes back as it is, with
 * llmfd's headers; the upstream got the client's body with the
 * deployment's model and without llmfd's fields, the deployment's key,
 * and the client's anthropic-version and anthropic-beta. */
Test(count_tokens, passed_to_anthropic)
{
	struct h_resp *r;
	const char *l, *body;

	count_start(NULL, NULL);
	r = post(
	    COUNT "?beta=true",
	    "anthropic-version: 2023-06-01\r\n"
	    "anthropic-beta: token-counting-2024-11-01\r\n"
	    "x-api-key: client-key\r\n",
	    "{\"model\":\"claude\",\"timeout\":20,\"system\":\"Be brief.\","
	    "" HELLO "}");
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_str_eq(h_header(r, "x-llmfd-deployment"), "an1");
	cr_assert_str_eq(h_header(r, "x-llmfd-provider"), "anthropic");
	cr_assert_str_eq(h_header(r, "x-llmfd-attempts"), "1");
	cr_assert_not_null(h_header(r, "x-request-id"));
	cr_assert_str_eq(h_header(r, "request-id"),
	                 h_header(r, "x-request-id"));
	l = last(&an1);
	cr_assert_str_eq(h_json(l, "path"), COUNT);
	body = h_json(l, "body");
	cr_assert_str_eq(
	    body,
	    "{\"model\":\"claude-x\",\"system\":\"Be brief.\"," HELLO "}");
	cr_assert_eq(h_json_long(r->body, "input_tokens", -1),
	             COUNT_BASE + (long)strlen(body), "%s", r->body);
	cr_assert_str_eq(h_json(l, "headers.anthropic-version"), "2023-06-01");
	cr_assert_str_eq(h_json(l, "headers.anthropic-beta"),
	                 "token-counting-2024-11-01");
	cr_assert_str_eq(h_json(l, "headers.x-api-key"), "k1");
	cr_assert_eq(h_mock_stat(&an1, "count_tokens"), 1);
	cr_assert_eq(h_mock_stat(&ge, "requests"), 0);
}

/* Nothing in the group counts tokens: the estimate, named as such, and no
 * upstream is asked. */
Test(count_tokens, estimate_without_anthropic)
{
	struct h_resp *r;

	count_start(NULL, NULL);
	r = post(COUNT, NULL, "{\"model\":\"gpt\"," HELLO "}");
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_eq(h_json_long(r->body, "input_tokens", -1), HELLO_EST, "%s",
	             r->body);
	cr_assert_str_eq(h_header(r, "x-llmfd-deployment"), "estimate");
	cr_assert_str_eq(h_header(r, "x-llmfd-provider"), "llmfd");
	cr_assert_str_eq(h_header(r, "x-llmfd-attempts"), "0");
	cr_assert_not_null(h_header(r, "x-request-id"));
	cr_assert_eq(h_mock_stat(&oa, "requests"), 0);
	cr_assert_eq(h_mock_stat(&ge, "requests"), 0);
	cr_assert_eq(h_mock_stat(&an1, "requests"), 0);
}

/* A failing Anthropic deployment (503) falls back to the next Anthropic
 * one, never to Gemini. */
Test(count_tokens, falls_back_to_next_anthropic)
{
	struct h_resp *r;

	count_start(down, NULL);
	r = post(COUNT, NULL, "{\"model\":\"claude\"," HELLO "}");
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_str_eq(h_header(r, "x-llmfd-deployment"), "an2");
	cr_assert_str_eq(h_header(r, "x-llmfd-attempts"), "2");
	cr_assert_gt(h_json_long(r->body, "input_tokens", -1), COUNT_BASE);
	cr_assert_str_eq(h_json(h_json(last(&an2), "body"), "model"),
	                 "claude-y");
	cr_assert_eq(h_mock_stat(&an1, "count_tokens"), 1);
	cr_assert_eq(h_mock_stat(&ge, "requests"), 0);
}

/* Every Anthropic deployment fails (a 503, a closed connection): the
 * estimate, after trying each once. */
Test(count_tokens, all_anthropic_down_is_the_estimate)
{
	struct h_resp *r;

	count_start(down, closes);
	r = post(COUNT, NULL, "{\"model\":\"claude\"," HELLO "}");
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_eq(h_json_long(r->body, "input_tokens", -1), HELLO_EST);
	cr_assert_str_eq(h_header(r, "x-llmfd-deployment"), "estimate");
	cr_assert_str_eq(h_header(r, "x-llmfd-attempts"), "2");
	cr_assert_eq(h_mock_stat(&an1, "requests"), 1);
	cr_assert_eq(h_mock_stat(&an2, "requests"), 1);
	cr_assert_eq(h_mock_stat(&ge, "requests"), 0);
	cr_assert(h_log_has("-> 200 via estimate"), "%s", h_log());
}

/* The upstream says the request is bad: the client gets that 400 in
 * Anthropic's shape with the upstream's message, and no fallback. */
Test(count_tokens, client_fault_is_an_anthropic_error)
{
	static const char *const bad[] = {
	    "--mode",    "status",
	    "--status",  "400",
	    "--message", "messages.0.content: Input should be a valid list",
	    NULL};
	struct h_resp *r;

	count_start(bad, NULL);
	r = post(COUNT, NULL, "{\"model\":\"claude\"," HELLO "}");
	cr_assert_eq(r->status, 400, "%s", h_desc(r));
	cr_assert_str_eq(h_json(r->body, "type"), "error");
	cr_assert_str_eq(h_json(r->body, "error.type"),
	                 "invalid_request_error");
	cr_assert_not_null(strstr(h_json(r->body, "error.message"),
	                          "Input should be a valid list"),
	                   "%s", r->body);
	cr_assert_not_null(h_header(r, "x-request-id"));
	cr_assert_eq(h_mock_stat(&an2, "requests"), 0);
}

/* An unknown model is 404 not_found_error; a body without messages is a
 * 400, both in Anthropic's shape and before any upstream is asked. */
Test(count_tokens, unknown_model_and_bad_body)
{
	struct h_resp *r;

	count_start(NULL, NULL);
	r = post(COUNT, NULL, "{\"model\":\"nope\"," HELLO "}");
	cr_assert_eq(r->status, 404, "%s", h_desc(r));
	cr_assert_str_eq(h_json(r->body, "error.type"), "not_found_error");
	cr_assert_not_null(h_header(r, "x-request-id"));
	r = post(COUNT, NULL, "{\"model\":\"claude\"}");
	cr_assert_eq(r->status, 400, "%s", h_desc(r));
	cr_assert_str_eq(h_json(r->body, "error.type"),
	                 "invalid_request_error");
	r = post(COUNT, NULL, "{not json");
	cr_assert_eq(r->status, 400, "%s", h_desc(r));
	cr_assert_eq(h_mock_stat(&an1, "requests"), 0);
}

/* ---- keep-alives ---- */

/* One OpenAI mock (args) and one Anthropic mock (aargs), groups gpt and
 * claude, with stream_ping_ms = ping. */
static void
ka_start(int ping, const char *const *args, const char *const *aargs)
{
	h_mock_startv(&oa, "oa", args);
	h_mock_startv(&an1, "an1", aargs);
	h_llmfd_start(
	    "daemon = { workers = 1; listen = \"llmfd.sock\"; health_table = "
	    "\"health\"; };\n"
	    "router = { num_retries = 0; stream_ping_ms = %d; };\n"
	    "deployments = (\n"
	    "  { name = \"oa\"; group = \"gpt\"; provider = \"openai\"; "
	    "model = \"gpt-x\"; base_url = \"http://127.0.0.1:%d/v1\"; },\n"
	    "  { name = \"an1\"; group = \"claude\"; provider = \"anthropic\"; "
	    "model = \"claude-x\"; base_url = \"http://127.0.0.1:%d\"; }\n);\n",
	    ping, oa.port, an1.port);
}

#define STREAM_BODY(model)                                                     \
	"{\"model\":\"" model "\",\"max_tokens\":64,\"stream\":true," HELLO "}"

/* Occurrences of needle in s. */
static int
count_of(const char *s, const char *needle)
{
	int n = 0;

	for (; (s = strstr(s, needle)) != NULL; s += strlen(needle))
		n++;
	return n;
}

/* Check a Messages stream: message_start first, ping only after it and
 * between the deltas, message_stop last. */
static void
check_messages_stream(const struct h_resp *r)
{
	const char *first_ping, *last_delta;

	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert(strncmp(r->body, "event: message_start\n", 21) == 0, "%s",
	          r->body);
	first_ping =
	    strstr(r->body, "event: ping\ndata: {\"type\":\"ping\"}\n\n");
	cr_assert_not_null(first_ping, "no ping in:\n%s", r->body);
	cr_assert(first_ping < strstr(r->body, " says"), "%s", r->body);
	last_delta = strstr(r->body, " says");
	cr_assert_not_null(strstr(last_delta, "event: message_stop\n"), "%s",
	                   r->body);
	cr_assert_not_null(strstr(r->body, "event: message_delta"), "%s",
	                   r->body);
}

/* A slow translated stream (OpenAI upstream, 600 ms between chunks) and a
 * slow passed-through one (Anthropic upstream): pings between the deltas,
 * and the stream still completes. */
Test(keepalive, messages_stream_pings_while_idle)
{
	static const char *const slow[] = {"--chunks", "3", "--chunk-delay-ms",
	                                   "600", NULL};
	struct h_resp *r;

	ka_start(150, slow, slow);
	r = h_unix("POST", "/v1/messages", STREAM_BODY("gpt"));
	check_messages_stream(r);
	r = h_unix("POST", "/v1/messages", STREAM_BODY("claude"));
	check_messages_stream(r);
}

/* A stream that keeps sending sees no ping; nor does one with
 * stream_ping_ms = 0. */
Test(keepalive, fast_stream_has_no_ping)
{
	static const char *const fast[] = {"--chunks", "5", NULL};
	struct h_resp *r;

	ka_start(2000, fast, fast);
	r = h_unix("POST", "/v1/messages", STREAM_BODY("gpt"));
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_null(strstr(r->body, "event: ping"), "%s", r->body);
	cr_assert_not_null(strstr(r->body, "event: message_stop"), "%s",
	                   r->body);
}

/* With stream_ping_ms = 0 a slow stream gets no keep-alive. */
Test(keepalive, zero_turns_pings_off)
{
	static const char *const slow[] = {"--chunks", "2", "--chunk-delay-ms",
	                                   "500", NULL};
	struct h_resp *r;

	ka_start(0, slow, slow);
	r = h_unix("POST", "/v1/messages", STREAM_BODY("gpt"));
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_null(strstr(r->body, "event: ping"), "%s", r->body);
	r = h_unix("POST", "/v1/chat/completions", STREAM_BODY("gpt"));
	cr_assert_null(strstr(r->body, ": keepalive"), "%s", r->body);
}

/* A slow first token: nothing reaches the client before message_start,
 * pings included (the engine holds the stream until content arrives). */
Test(keepalive, no_ping_before_message_start)
{
	static const char *const late[] = {"--latency-ms", "700", NULL};
	struct h_resp *r;

	ka_start(100, late, late);
	r = h_unix("POST", "/v1/messages", STREAM_BODY("gpt"));
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert(strncmp(r->body, "event: message_start\n", 21) == 0, "%s",
	          r->body);
	cr_assert_not_null(strstr(r->body, "event: message_stop"), "%s",
	                   r->body);
}

/* Chat Completions: an idle stream gets SSE comments, which leave the
 * chunks and [DONE] as they were. */
Test(keepalive, chat_stream_gets_comments)
{
	static const char *const slow[] = {"--chunks", "3", "--chunk-delay-ms",
	                                   "600", NULL};
	struct h_resp *r;

	ka_start(150, slow, NULL);
	r = h_unix("POST", "/v1/chat/completions",
	           "{\"model\":\"gpt\",\"stream\":true," HELLO "}");
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert(strncmp(r->body, "data: {", 7) == 0, "%s", r->body);
	cr_assert_geq(count_of(r->body, "\n: keepalive\n\n"), 2, "%s", r->body);
	cr_assert_eq(count_of(r->body, "data: [DONE]\n\n"), 1, "%s", r->body);
	cr_assert_not_null(strstr(r->body, "\" says\""), "%s", r->body);
}
