/* Client protocols end to end: Anthropic Messages (and, once served,
 * OpenAI Responses) clients through the real daemon, with the same
 * failover as Chat Completions: a failing Anthropic mock falls back to a
 * Gemini mock, streaming and not, with tool calls; errors, cuts and
 * context overflows in the client's own protocol. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "tests/integration/harness.h"

#define MSGS "/v1/messages"
#define USER "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"
#define TOOLS                                                                  \
	"\"tools\":[{\"name\":\"get_weather\",\"description\":\"weather\","    \
	"\"input_schema\":{\"type\":\"object\",\"properties\":{\"city\":{"     \
	"\"type\":\"string\"}}}}]"

TestSuite(ingress, .init = h_setup, .fini = h_teardown, .timeout = 60);

static struct h_mock an, ge, oa;

/* Anthropic mock (args), Gemini mock (gargs) and OpenAI mock; group claude
 * (an) falls back to gem (ge), then gpt (oa). */
static void
start3(const char *const *aargs, const char *const *gargs)
{
	h_mock_startv(&an, "an", aargs);
	h_mock_startv(&ge, "ge", gargs);
	h_mock_start(&oa, "oa", NULL);
	h_llmfd_start(
	    "daemon = { workers = 1; listen = \"llmfd.sock\"; health_table = "
	    "\"health\"; access_log = \"access.log\"; };\n"
	    "router = { num_retries = 0; cooldown_s = 0; "
	    "stream_idle_timeout_ms = 2000; };\n"
	    "deployments = (\n"
	    "  { name = \"an\"; group = \"claude\"; provider = \"anthropic\"; "
	    "model = \"claude-x\"; base_url = \"http://127.0.0.1:%d\"; "
	    "api_key = \"ka\"; },\n"
	    "  { name = \"ge\"; group = \"gem\"; provider = \"gemini\"; "
	    "model = \"gemini-x\"; base_url = \"http://127.0.0.1:%d\"; "
	    "api_key = \"kg\"; },\n"
	    "  { name = \"oa\"; group = \"gpt\"; provider = \"openai\"; "
	    "model = \"gpt-x\"; base_url = \"http://127.0.0.1:%d/v1\"; "
	    "api_key = \"ko\"; }\n);\n"
	    "fallbacks = ( { group = \"claude\"; to = [ \"gem\", \"gpt\" ]; } "
	    ");\n",
	    an.port, ge.port, oa.port);
}

static const char *const down[] = {"--mode", "status", "--status", "529", NULL};

/* A Messages client falls back from an overloaded Anthropic to Gemini and
 * gets an Anthropic-shaped message. */
Test(ingress, messages_falls_back_to_gemini)
{
	struct h_resp *r;

	start3(down, NULL);
	r = h_unix("POST", MSGS,
	           "{\"model\":\"claude\",\"max_tokens\":64," USER "}");
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_str_eq(h_header(r, "x-llmfd-deployment"), "ge");
	cr_assert_str_eq(h_header(r, "request-id"),
	                 h_header(r, "x-request-id"));
	cr_assert_str_eq(h_json(r->body, "type"), "message");
	cr_assert_str_eq(h_json(r->body, "role"), "assistant");
	cr_assert_str_eq(h_json(r->body, "content.0.type"), "text");
	cr_assert_str_eq(h_json(r->body, "stop_reason"), "end_turn");
	cr_assert_eq(h_json_long(r->body, "usage.output_tokens", -1), 5);
	cr_assert_eq(h_mock_stat(&an, "requests"), 1);
}

/* Streaming with a tool call: the Gemini tool call reaches the Messages
 * client as a tool_use block with input_json_delta, stop_reason tool_use,
 * and the events in Anthropic's order. */
Test(ingress, messages_stream_tool_call_after_fallback)
{
	static const char *const tools[] = {"--mode", "tools", NULL};
	struct h_resp *r;
	const char *b,
	    *order[] = {"event: message_start",  "event: content_block_start",
	                "\"type\":\"tool_use\"", "event: content_block_delta",
	                "input_json_delta",      "event: content_block_stop",
	                "event: message_delta",  "\"stop_reason\":\"tool_use\"",
	                "event: message_stop"};

	start3(down, tools);
	r = h_unix("POST", MSGS,
	           "{\"model\":\"claude\",\"max_tokens\":64,\"stream\":true,"
	           "" TOOLS "," USER "}");
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_str_eq(h_header(r, "content-type"), "text/event-stream");
	b = r->body;
	for (size_t i = 0; i < sizeof order / sizeof *order; i++) {
		const char *p = strstr(b, order[i]);
		cr_assert_not_null(p, "missing %s after position %ld:\n%s",
		                   order[i], (long)(b - r->body), r->body);
		b = p;
	}
	cr_assert_not_null(strstr(r->body, "Oslo"), "%s", r->body);
	cr_assert_null(strstr(r->body, "[DONE]"));
}

/* Every candidate down: 529 overloaded_error in Anthropic's shape, with
 * the trail at the top level. */
Test(ingress, messages_all_down_is_overloaded)
{
	static const char *const bad[] = {"--mode", "status", "--status", "503",
	                                  NULL};
	struct h_resp *r;

	h_mock_startv(&an, "an", down);
	h_mock_startv(&ge, "ge", bad);
	h_llmfd_start(
	    "daemon = { workers = 1; listen = \"llmfd.sock\"; health_table = "
	    "\"health\"; };\nrouter = { num_retries = 0; };\n"
	    "deployments = (\n"
	    "  { name = \"an\"; group = \"claude\"; provider = \"anthropic\"; "
	    "model = \"c\"; base_url = \"http://127.0.0.1:%d\"; },\n"
	    "  { name = \"ge\"; group = \"claude\"; provider = \"gemini\"; "
	    "model = \"g\"; base_url = \"http://127.0.0.1:%d\"; }\n);\n",
	    an.port, ge.port);
	r = h_unix("POST", MSGS,
	           "{\"model\":\"claude\",\"max_tokens\":64," USER "}");
	cr_assert_eq(r->status, 529, "%s", h_desc(r));
	cr_assert_str_eq(h_json(r->body, "type"), "error");
	cr_assert_str_eq(h_json(r->body, "error.type"), "overloaded_error");
	cr_assert_eq(h_json_count(r->body, "attempts"), 2, "%s", r->body);
	cr_assert_not_null(h_header(r, "x-request-id"));
}

/* Bad input and unknown models answer in Anthropic's shape. */
Test(ingress, messages_errors_in_anthropic_shape)
{
	struct h_resp *r;

	start3(NULL, NULL);
	r = h_unix("POST", MSGS, "{not json");
	cr_assert_eq(r->status, 400);
	cr_assert_str_eq(h_json(r->body, "error.type"),
	                 "invalid_request_error");
	r = h_unix("POST", MSGS, "{\"model\":\"claude\"," USER "}");
	cr_assert_eq(r->status, 400, "max_tokens is required: %s", h_desc(r));
	r = h_unix("POST", MSGS,
	           "{\"model\":\"nope\",\"max_tokens\":5," USER "}");
	cr_assert_eq(r->status, 404);
	cr_assert_str_eq(h_json(r->body, "error.type"), "not_found_error");
	cr_assert_eq(h_mock_stat(&an, "requests"), 0);
}

/* A context overflow from an OpenAI upstream reaches a Messages client in
 * the wording Claude Code acts on. */
Test(ingress, messages_context_overflow_wording)
{
	static const char *const cw[] = {
	    "--mode",
	    "status",
	    "--status",
	    "400",
	    "--message",
	    "This model's maximum context length is 8192 tokens. However, "
	    "your messages resulted in 9000 tokens.",
	    "--error-code",
	    "context_length_exceeded",
	    NULL};
	struct h_resp *r;

	h_mock_startv(&oa, "oa", cw);
	h_llmfd_start(
	    "daemon = { workers = 1; listen = \"llmfd.sock\"; health_table = "
	    "\"health\"; };\nrouter = { num_retries = 0; };\n"
	    "deployments = (\n"
	    "  { name = \"oa\"; group = \"claude\"; provider = \"openai\"; "
	    "model = \"g\"; base_url = \"http://127.0.0.1:%d/v1\"; }\n);\n",
	    oa.port);
	r = h_unix("POST", MSGS,
	           "{\"model\":\"claude\",\"max_tokens\":64," USER "}");
	cr_assert_eq(r->status, 400, "%s", h_desc(r));
	cr_assert_str_eq(h_json(r->body, "error.type"),
	                 "invalid_request_error");
	cr_assert_not_null(strstr(h_json(r->body, "error.message"),
	                          "prompt is too long: 9000 tokens > 8192"),
	                   "%s", r->body);
}

/* A stream cut after bytes reached the client ends with event: error and
 * no message_stop. */
Test(ingress, messages_stream_cut_is_an_error_event)
{
	static const char *const cut[] = {"--mode", "cut", "--cut-after", "2",
	                                  NULL};
	struct h_resp *r;

	h_mock_startv(&ge, "ge", cut);
	h_llmfd_start(
	    "daemon = { workers = 1; listen = \"llmfd.sock\"; health_table = "
	    "\"health\"; };\nrouter = { num_retries = 0; };\n"
	    "deployments = (\n"
	    "  { name = \"ge\"; group = \"claude\"; provider = \"gemini\"; "
	    "model = \"g\"; base_url = \"http://127.0.0.1:%d\"; }\n);\n",
	    ge.port);
	r = h_unix(
	    "POST", MSGS,
	    "{\"model\":\"claude\",\"max_tokens\":64,\"stream\":true," USER
	    "}");
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_not_null(strstr(r->body, "event: content_block_delta"), "%s",
	                   r->body);
	cr_assert_not_null(strstr(r->body, "event: error"), "%s", r->body);
	cr_assert_null(strstr(r->body, "message_stop"), "%s", r->body);
}

/* count_tokens answers (group claude's Anthropic mock counts; more in
 * test_count.c); /v1/models answers in Anthropic's shape when the client
 * sends anthropic-version; /v1/models/{id}. */
Test(ingress, count_tokens_and_models)
{
	struct h_req q = {0};
	struct h_resp *r;

	start3(NULL, NULL);
	r = h_unix("POST", "/v1/messages/count_tokens",
	           "{\"model\":\"claude\",\"messages\":[{\"role\":\"user\","
	           "\"content\":\"hello there, how are you today?\"}]}");
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_gt(h_json_long(r->body, "input_tokens", -1), 0);
	cr_assert_not_null(h_header(r, "x-request-id"), "%s", h_desc(r));
	q.unix_path = h_sock();
	q.method = "GET";
	q.path = "/v1/models";
	q.headers = "anthropic-version: 2023-06-01\r\n";
	r = h_http(&q);
	cr_assert_eq(r->status, 200);
	cr_assert_str_eq(h_json(r->body, "data.0.type"), "model");
	cr_assert_str_eq(h_json(r->body, "has_more"), "false");
	r = h_unix("GET", "/v1/models/claude", NULL);
	cr_assert_eq(r->status, 200);
	cr_assert_str_eq(h_json(r->body, "id"), "claude");
	cr_assert_str_eq(h_json(r->body, "object"), "model");
	r = h_unix("GET", "/v1/models/nope", NULL);
	cr_assert_eq(r->status, 404);
}

/* What a non-Anthropic upstream receives from a Messages client is a
 * canonical chat body: no llmfd fields, no Anthropic-only fields. */
Test(ingress, messages_to_openai_upstream_body)
{
	struct h_resp *r;
	char *body;

	h_mock_start(&oa, "oa", NULL);
	h_llmfd_start(
	    "daemon = { workers = 1; listen = \"llmfd.sock\"; health_table = "
	    "\"health\"; };\nrouter = { num_retries = 0; };\n"
	    "deployments = (\n"
	    "  { name = \"oa\"; group = \"claude\"; provider = \"openai\"; "
	    "model = \"gpt-x\"; base_url = \"http://127.0.0.1:%d/v1\"; }\n);\n",
	    oa.port);
	r = h_unix(
	    "POST", MSGS,
	    "{\"model\":\"claude\",\"max_tokens\":64,\"system\":\"be "
	    "brief\",\"num_retries\":1,\"metadata\":{\"user_id\":\"u1\"},"
	    "\"stop_sequences\":[\"END\"]," USER "}");
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	body = (char *)h_tcp(oa.port, "GET", "/_mock/last/body", NULL)->body;
	cr_assert_str_eq(h_json(body, "model"), "gpt-x");
	cr_assert_str_eq(h_json(body, "messages.0.role"), "system");
	cr_assert_str_eq(h_json(body, "stop.0"), "END");
	cr_assert_null(h_json(body, "num_retries"), "%s", body);
	cr_assert_null(h_json(body, "metadata"), "%s", body);
	cr_assert_null(h_json(body, "system"), "%s", body);
	cr_assert_null(h_json(body, "stop_sequences"), "%s", body);
}

/* A Messages client with thinking on and top_k falls back to an OpenAI
 * model that takes neither: drop_params leaves them out, so the request
 * is answered instead of refused; the other fields still go. */
Test(ingress, messages_to_openai_drop_params)
{
	struct h_resp *r;
	char *body;

	h_mock_startv(&an, "an", down);
	h_mock_start(&oa, "oa", NULL);
	h_llmfd_start(
	    "daemon = { workers = 1; listen = \"llmfd.sock\"; health_table = "
	    "\"health\"; };\nrouter = { num_retries = 0; };\n"
	    "deployments = (\n"
	    "  { name = \"an\"; group = \"claude\"; provider = \"anthropic\"; "
	    "model = \"claude-x\"; base_url = \"http://127.0.0.1:%d\"; },\n"
	    "  { name = \"oa\"; group = \"gpt\"; provider = \"openai\"; "
	    "model = \"gpt-x\"; base_url = \"http://127.0.0.1:%d/v1\"; "
	    "drop_params = [ \"top_k\", \"reasoning_effort\" ]; }\n);\n"
	    "fallbacks = ( { group = \"claude\"; to = [ \"gpt\" ]; } );\n",
	    an.port, oa.port);
	r = h_unix("POST", MSGS,
	           "{\"model\":\"claude\",\"max_tokens\":2048,\"top_k\":5,"
	           "\"temperature\":1,\"thinking\":{\"type\":\"enabled\","
	           "\"budget_tokens\":1024}," USER "}");
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_str_eq(h_json((char *)r->body, "type"), "message");
	body = (char *)h_tcp(oa.port, "GET", "/_mock/last/body", NULL)->body;
	cr_assert_str_eq(h_json(body, "model"), "gpt-x");
	cr_assert_null(h_json(body, "top_k"), "%s", body);
	cr_assert_null(h_json(body, "reasoning_effort"), "%s", body);
	cr_assert_not_null(h_json(body, "temperature"), "%s", body);
}

/* A Messages client's PDF document survives a fallback from a down
 * Anthropic to Gemini as inline data (INGRESS.md: base64 carries). */
Test(ingress, messages_document_falls_back_to_gemini)
{
	struct h_resp *r;
	char *body;

	start3(down, NULL);
	r = h_unix("POST", MSGS,
	           "{\"model\":\"claude\",\"max_tokens\":64,\"messages\":[{"
	           "\"role\":\"user\",\"content\":[{\"type\":\"document\","
	           "\"title\":\"q3.pdf\",\"source\":{\"type\":\"base64\","
	           "\"media_type\":\"application/pdf\",\"data\":\"JVBERi0=\"}},"
	           "{\"type\":\"text\",\"text\":\"sum up\"}]}]}");
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_str_eq(h_json((char *)r->body, "type"), "message");
	body = (char *)h_tcp(ge.port, "GET", "/_mock/last/body", NULL)->body;
	cr_assert_str_eq(h_json(body, "contents.0.parts.0.inlineData.mimeType"),
	                 "application/pdf", "%s", body);
	cr_assert_str_eq(h_json(body, "contents.0.parts.0.inlineData.data"),
	                 "JVBERi0=", "%s", body);
	cr_assert_str_eq(h_json(body, "contents.0.parts.1.text"), "sum up");
}

#define RESP "/v1/responses"
#define FTOOL                                                                  \
	"\"tools\":[{\"type\":\"function\",\"name\":\"get_weather\","          \
	"\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{"       \
	"\"type\":\"string\"}}}}]"

/* OpenAI (down) -> Gemini for Responses clients. */
static void
start_resp(const char *const *gargs)
{
	static const char *const bad[] = {"--mode", "status", "--status", "503",
	                                  NULL};

	h_mock_startv(&oa, "oa", bad);
	h_mock_startv(&ge, "ge", gargs);
	h_llmfd_start(
	    "daemon = { workers = 1; listen = \"llmfd.sock\"; health_table = "
	    "\"health\"; };\nrouter = { num_retries = 0; cooldown_s = 0; };\n"
	    "deployments = (\n"
	    "  { name = \"oa\"; group = \"gpt\"; provider = \"openai\"; "
	    "model = \"gpt-x\"; base_url = \"http://127.0.0.1:%d/v1\"; },\n"
	    "  { name = \"ge\"; group = \"gem\"; provider = \"gemini\"; "
	    "model = \"gemini-x\"; base_url = \"http://127.0.0.1:%d\"; }\n);\n"
	    "fallbacks = ( { group = \"gpt\"; to = [ \"gem\" ]; } );\n",
	    oa.port, ge.port);
}

/* A Responses client falls back from a failing OpenAI to Gemini, with a
 * function tool: the Response carries a function_call output item. */
Test(ingress, responses_tool_call_after_fallback)
{
	static const char *const tools[] = {"--mode", "tools", NULL};
	struct h_resp *r;

	start_resp(tools);
	r = h_unix("POST", RESP,
	           "{\"model\":\"gpt\",\"input\":\"weather in Oslo?\"," FTOOL
	           "}");
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_str_eq(h_header(r, "x-llmfd-deployment"), "ge");
	cr_assert_str_eq(h_json(r->body, "object"), "response");
	cr_assert_str_eq(h_json(r->body, "status"), "completed");
	cr_assert_str_eq(h_json(r->body, "output.0.type"), "function_call",
	                 "%s", r->body);
	cr_assert_str_eq(h_json(r->body, "output.0.name"), "get_weather");
	cr_assert_not_null(
	    strstr(h_json(r->body, "output.0.arguments"), "Oslo"));
	cr_assert_gt(h_json_long(r->body, "usage.total_tokens", -1), 0);
}

/* A Codex-style request with reasoning.effort keeps thinking after the
 * fallback: Gemini gets a thinkingConfig budget for the effort, and the
 * OpenAI upstream had the effort as reasoning_effort. */
Test(ingress, responses_effort_becomes_gemini_thinking)
{
	struct h_resp *r;
	char *body;

	start_resp(NULL);
	r = h_unix("POST", RESP,
	           "{\"model\":\"gpt\",\"input\":\"hi\",\"reasoning\":{"
	           "\"effort\":\"high\",\"summary\":\"auto\"}}");
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_str_eq(h_header(r, "x-llmfd-deployment"), "ge");
	body = (char *)h_tcp(ge.port, "GET", "/_mock/last/body", NULL)->body;
	cr_assert_eq(
	    h_json_long(body, "generationConfig.thinkingConfig.thinkingBudget",
	                -1),
	    24576, "%s", body);
	body = (char *)h_tcp(oa.port, "GET", "/_mock/last/body", NULL)->body;
	cr_assert_str_eq(h_json(body, "reasoning_effort"), "high", "%s", body);
}

/* Streamed: response.created first, text deltas, response.completed
 * last, sequence numbers counting from 0. */
Test(ingress, responses_stream_events)
{
	struct h_resp *r;
	const char *b, *order[] = {"event: response.created",
	                           "\"sequence_number\":0",
	                           "event: response.output_item.added",
	                           "event: response.output_text.delta",
	                           "event: response.output_text.done",
	                           "event: response.output_item.done",
	                           "event: response.completed"};

	start_resp(NULL);
	r = h_unix("POST", RESP,
	           "{\"model\":\"gpt\",\"input\":\"hi\",\"stream\":true}");
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	b = r->body;
	for (size_t i = 0; i < sizeof order / sizeof *order; i++) {
		const char *p = strstr(b, order[i]);
		cr_assert_not_null(p, "missing %s:\n%s", order[i], r->body);
		b = p;
	}
	cr_assert_null(strstr(r->body, "[DONE]"));
}

/* llmfd is stateless: previous_response_id is a clear 400, never a
 * silent wrong answer. */
Test(ingress, responses_previous_response_id_refused)
{
	struct h_resp *r;

	start_resp(NULL);
	r = h_unix("POST", RESP,
	           "{\"model\":\"gpt\",\"input\":\"hi\","
	           "\"previous_response_id\":\"resp_1\"}");
	cr_assert_eq(r->status, 400, "%s", h_desc(r));
	cr_assert_str_eq(h_json(r->body, "error.code"),
	                 "previous_response_not_found");
	cr_assert_eq(h_mock_stat(&oa, "requests"), 0);
}

/* A Responses stream cut after bytes reached the client ends with
 * response.failed and no response.completed. */
Test(ingress, responses_stream_cut_is_failed)
{
	static const char *const cut[] = {"--mode", "cut", "--cut-after", "2",
	                                  NULL};
	struct h_resp *r;

	h_mock_startv(&ge, "ge", cut);
	h_llmfd_start(
	    "daemon = { workers = 1; listen = \"llmfd.sock\"; health_table = "
	    "\"health\"; };\nrouter = { num_retries = 0; };\n"
	    "deployments = (\n"
	    "  { name = \"ge\"; group = \"gpt\"; provider = \"gemini\"; "
	    "model = \"g\"; base_url = \"http://127.0.0.1:%d\"; }\n);\n",
	    ge.port);
	r = h_unix("POST", RESP,
	           "{\"model\":\"gpt\",\"input\":\"hi\",\"stream\":true}");
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_not_null(strstr(r->body, "response.output_text.delta"), "%s",
	                   r->body);
	cr_assert_not_null(strstr(r->body, "event: response.failed"), "%s",
	                   r->body);
	cr_assert_null(strstr(r->body, "response.completed"), "%s", r->body);
}

/* Same-format passthrough: a Messages client's body reaches an Anthropic
 * upstream byte for byte except `model` and llmfd's fields (cache_control,
 * a thinking signature and odd number spellings survive), its
 * anthropic-version and anthropic-beta headers are forwarded, and the
 * stream comes back as the upstream sent it. */
Test(ingress, messages_passthrough_to_anthropic)
{
	static const char body[] =
	    "{\"model\":\"claude\", \"max_tokens\":1.0E+3,"
	    "\"num_retries\":1,\"metadata\":{\"user_id\":\"u1\"},"
	    "\"system\":[{\"type\":\"text\",\"text\":\"sys\",\"cache_control\":"
	    "{\"type\":\"ephemeral\"}}],\"messages\":[{\"role\":\"user\","
	    "\"content\":\"q\"},{\"role\":\"assistant\",\"content\":[{\"type\":"
	    "\"thinking\",\"thinking\":\"t\",\"signature\":\"SIG==\"},{"
	    "\"type\":"
	    "\"text\",\"text\":\"a\"}]},{\"role\":\"user\",\"content\":\"q2\"}]"
	    "}";
	static const char want[] =
	    "{\"model\":\"claude-x\", \"max_tokens\":1.0E+3,"
	    "\"metadata\":{\"user_id\":\"u1\"},"
	    "\"system\":[{\"type\":\"text\",\"text\":\"sys\",\"cache_control\":"
	    "{\"type\":\"ephemeral\"}}],\"messages\":[{\"role\":\"user\","
	    "\"content\":\"q\"},{\"role\":\"assistant\",\"content\":[{\"type\":"
	    "\"thinking\",\"thinking\":\"t\",\"signature\":\"SIG==\"},{"
	    "\"type\":"
	    "\"text\",\"text\":\"a\"}]},{\"role\":\"user\",\"content\":\"q2\"}]"
	    "}";
	struct h_req q = {0};
	struct h_resp *r;
	const char *got, *last;

	start3(NULL, NULL);
	q.unix_path = h_sock();
	q.method = "POST";
	q.path = MSGS;
	q.headers = "anthropic-version: 2023-06-01\r\n"
	            "anthropic-beta: context-management-2025-06-27\r\n";
	q.body = body;
	r = h_http(&q);
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_str_eq(h_header(r, "x-llmfd-deployment"), "an");
	got = h_tcp(an.port, "GET", "/_mock/last/body", NULL)->body;
	cr_assert_str_eq(got, want);
	last = h_tcp(an.port, "GET", "/_mock/last", NULL)->body;
	cr_assert_not_null(strstr(last, "context-management-2025-06-27"), "%s",
	                   last);
	q.body =
	    "{\"model\":\"claude\",\"max_tokens\":9,\"stream\":true," USER "}";
	r = h_http(&q);
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_not_null(strstr(r->body, "event: message_stop"), "%s",
	                   r->body);
	cr_assert_not_null(strstr(r->body, "\"model\":\"claude-x\""), "%s",
	                   r->body);
}

/* A Responses client's body goes to a deployment with responses_api on
 * as it is, except `model` and llmfd's fields. */
Test(ingress, responses_passthrough_to_openai)
{
	static const char body[] = "{\"model\":\"gpt\",\"input\":\"hi\","
	                           "\"store\":false,\"timeout\":30,"
	                           "\"reasoning\":{\"effort\":\"low\"}}";
	static const char want[] = "{\"model\":\"gpt-x\",\"input\":\"hi\","
	                           "\"store\":false,"
	                           "\"reasoning\":{\"effort\":\"low\"}}";
	struct h_resp *r;
	const char *last;

	h_mock_start(&oa, "oa", NULL);
	h_llmfd_start(
	    "daemon = { workers = 1; listen = \"llmfd.sock\"; health_table = "
	    "\"health\"; };\nrouter = { num_retries = 0; };\n"
	    "deployments = (\n"
	    "  { name = \"oa\"; group = \"gpt\"; provider = \"openai\"; "
	    "model = \"gpt-x\"; base_url = \"http://127.0.0.1:%d/v1\"; "
	    "responses_api = true; }\n);\n",
	    oa.port);
	r = h_unix("POST", RESP, body);
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_str_eq(h_json(r->body, "object"), "response");
	last = h_tcp(oa.port, "GET", "/_mock/last", NULL)->body;
	cr_assert_str_eq(h_json(last, "path"), "/v1/responses", "%s", last);
	cr_assert_str_eq(h_tcp(oa.port, "GET", "/_mock/last/body", NULL)->body,
	                 want);
}
