/* llmf-mock itself, talked to directly (no llmfd): the no-done, bad-chunk
 * and tools modes, recover_after_ms, retry hints, the OpenAI Responses
 * endpoint, the Anthropic event order and /_mock/last (docs/mock.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "tests/integration/harness.h"

#define CHAT  "/v1/chat/completions"
#define MSGS  "/v1/messages"
#define RESP  "/v1/responses"
#define GM    "/v1beta/models/gm:generateContent"
#define GMS   "/v1beta/models/gm:streamGenerateContent?alt=sse"
#define ARGS  "{\"city\":\"Oslo\"}"
#define MAXEV 64

#define OA_TOOLS                                                               \
	"\"tools\":[{\"type\":\"function\",\"function\":{\"name\":"            \
	"\"get_weather\",\"parameters\":{}}},{\"type\":\"function\","          \
	"\"function\":{\"name\":\"other\",\"parameters\":{}}}]"
#define AN_TOOLS                                                               \
	"\"tools\":[{\"name\":\"get_weather\",\"input_schema\":{}},"           \
	"{\"name\":\"other\",\"input_schema\":{}}]"
#define GM_TOOLS                                                               \
	"\"tools\":[{\"googleSearch\":{}},{\"functionDeclarations\":[{"        \
	"\"name\":\"get_weather\"},{\"name\":\"other\"}]}]"
#define RS_TOOLS                                                               \
	"\"tools\":[{\"type\":\"function\",\"name\":\"get_weather\","          \
	"\"parameters\":{}}]"

TestSuite(mock, .init = h_setup, .fini = h_teardown, .timeout = 30);

static struct h_mock m;

/* One server-sent event: its event: name (or NULL) and data. */
struct ev {
	const char *name;
	const char *data;
};

/* Split an SSE body into events; returns how many (at most MAXEV). */
static int
sse_split(const char *body, struct ev *evs)
{
	char *p = h_fmt("%s", body ? body : ""), *end, *line, *nl;
	int n = 0;

	while (*p != '\0' && n < MAXEV) {
		if ((end = strstr(p, "\n\n")) != NULL)
			*end = '\0';
		evs[n].name = evs[n].data = NULL;
		for (line = p; line != NULL; line = nl) {
			if ((nl = strchr(line, '\n')) != NULL)
				*nl++ = '\0';
			if (strncmp(line, "event: ", 7) == 0)
				evs[n].name = line + 7;
			else if (strncmp(line, "data: ", 6) == 0)
				evs[n].data = line + 6;
		}
		if (evs[n].name != NULL || evs[n].data != NULL)
			n++;
		if (end == NULL)
			break;
		p = end + 2;
	}
	return n;
}

/* POST body to path on the mock; asserts a 200 that ended by its framing. */
static struct h_resp *
post_ok(const char *path, const char *body)
{
	struct h_resp *r = h_tcp(m.port, "POST", path, body);

	cr_assert_eq(r->status, 200, "%s: %s", path, h_desc(r));
	cr_assert(r->complete, "%s: incomplete: %s", path, h_desc(r));
	return r;
}

/* POST to path and split the SSE reply into evs; the event count. */
static int
post_stream(const char *path, const char *body, struct ev *evs)
{
	struct h_resp *r = post_ok(path, body);

	cr_assert(strstr(h_header(r, "Content-Type"), "text/event-stream"),
	          "%s", r->head);
	return sse_split(r->body, evs);
}

/* Configure the running mock; asserts the mock accepted it. */
static void
config(const char *json)
{
	cr_assert_eq(h_mock_config(&m, json), 0, "config %s", json);
}

/* Index of the first event named name at or after from, or -1. */
static int
ev_find(const struct ev *evs, int n, int from, const char *name)
{
	for (int i = from; i < n; i++)
		if (evs[i].name != NULL && strcmp(evs[i].name, name) == 0)
			return i;
	return -1;
}

/* Whether any event's data contains needle. */
static bool
ev_has(const struct ev *evs, int n, const char *needle)
{
	for (int i = 0; i < n; i++)
		if (evs[i].data != NULL && strstr(evs[i].data, needle))
			return true;
	return false;
}

/* Index of the only event whose data is not valid JSON (asserting there is
 * exactly one, [DONE] aside). */
static int
only_bad_event(const struct ev *evs, int n)
{
	int bad = -1, count = 0;

	for (int i = 0; i < n; i++) {
		if (evs[i].data == NULL || strcmp(evs[i].data, "[DONE]") == 0)
			continue;
		if (!h_json_valid(evs[i].data)) {
			bad = i;
			count++;
		}
	}
	cr_assert_eq(count, 1, "%d invalid events", count);
	return bad;
}

Test(mock, no_done_openai_ends_cleanly_without_done)
{
	struct ev evs[MAXEV];
	int n;

	h_mock_start(&m, "a", "--mode", "no-done", NULL);
	n = post_stream(CHAT,
	                "{\"model\":\"m\",\"messages\":[],\"stream\":true,"
	                "\"stream_options\":{\"include_usage\":true}}",
	                evs);
	cr_assert_geq(n, 3);
	for (int i = 0; i < n; i++)
		cr_assert_neq(strcmp(evs[i].data, "[DONE]"), 0, "[DONE] sent");
	cr_assert_str_eq(h_json(evs[n - 2].data, "choices.0.finish_reason"),
	                 "stop");
	cr_assert_eq(h_json_long(evs[n - 1].data, "usage.total_tokens", 0), 15);
	/* Without include_usage the finish chunk is the last event. */
	n = post_stream(
	    CHAT, "{\"model\":\"m\",\"messages\":[],\"stream\":true}", evs);
	cr_assert_str_eq(h_json(evs[n - 1].data, "choices.0.finish_reason"),
	                 "stop");
	cr_assert_eq(h_mock_stat(&m, "failed"), 2);
}

Test(mock, no_done_other_formats_drop_their_terminal_event)
{
	struct ev evs[MAXEV];
	int n;

	h_mock_start(&m, "a", "--mode", "no-done", NULL);
	n = post_stream(
	    MSGS, "{\"model\":\"c\",\"messages\":[],\"stream\":true}", evs);
	cr_assert_str_eq(evs[n - 1].name, "message_delta");
	cr_assert_eq(h_json_long(evs[n - 1].data, "usage.output_tokens", 0), 5);
	cr_assert_eq(ev_find(evs, n, 0, "message_stop"), -1);
	n = post_stream(
	    RESP, "{\"model\":\"g\",\"input\":\"hi\",\"stream\":true}", evs);
	cr_assert_str_eq(evs[n - 1].name, "response.output_item.done");
	cr_assert_eq(ev_find(evs, n, 0, "response.completed"), -1);
	/* A non-stream request has nothing to leave out: a normal answer. */
	struct h_resp *r = post_ok(CHAT, "{\"model\":\"m\",\"messages\":[]}");
	cr_assert_str_eq(h_json(r->body, "choices.0.message.content"),
	                 "mock a says hi");
	cr_assert_eq(h_mock_stat(&m, "ok"), 1);
}

Test(mock, bad_chunk_one_invalid_event_then_normal_end)
{
	struct ev evs[MAXEV];
	int n, bad, i;

	h_mock_start(&m, "a", "--mode", "bad-chunk", "--cut-after", "2", NULL);
	/* OpenAI: role chunk, 2 content chunks, the bad one, the rest. */
	n = post_stream(
	    CHAT, "{\"model\":\"m\",\"messages\":[],\"stream\":true}", evs);
	bad = only_bad_event(evs, n);
	cr_assert_eq(bad, 3, "bad event at %d", bad);
	cr_assert_str_eq(evs[n - 1].data, "[DONE]");
	cr_assert_str_eq(h_json(evs[n - 2].data, "choices.0.finish_reason"),
	                 "stop");
	/* Anthropic: after message_start, content_block_start, ping and two
	 * deltas; message_stop still ends it. */
	n = post_stream(
	    MSGS, "{\"model\":\"c\",\"messages\":[],\"stream\":true}", evs);
	bad = only_bad_event(evs, n);
	cr_assert_eq(bad, 5, "bad event at %d", bad);
	cr_assert_str_eq(evs[n - 1].name, "message_stop");
	/* Gemini: two text frames, the bad one, then the rest with the
	 * finishReason frame last. */
	n = post_stream(GMS, "{\"contents\":[]}", evs);
	bad = only_bad_event(evs, n);
	cr_assert_eq(bad, 2, "bad event at %d", bad);
	cr_assert_str_eq(h_json(evs[n - 1].data, "candidates.0.finishReason"),
	                 "STOP");
	/* Responses: four opening events and two deltas; sequence numbers of
	 * the valid events stay contiguous. */
	n = post_stream(
	    RESP, "{\"model\":\"g\",\"input\":\"hi\",\"stream\":true}", evs);
	bad = only_bad_event(evs, n);
	cr_assert_eq(bad, 6, "bad event at %d", bad);
	cr_assert_str_eq(evs[n - 1].name, "response.completed");
	for (i = 0; i < n - 1; i++)
		cr_assert_eq(h_json_long(evs[i < bad ? i : i + 1].data,
		                         "sequence_number", -1),
		             i);
}

Test(mock, bad_chunk_non_stream_is_a_normal_answer)
{
	struct h_resp *r;

	h_mock_start(&m, "a", "--mode", "bad-chunk", NULL);
	r = post_ok(MSGS, "{\"model\":\"c\",\"messages\":[]}");
	cr_assert(h_json_valid(r->body), "%s", r->body);
	cr_assert_str_eq(h_json(r->body, "content.0.text"), "mock a says hi");
}

Test(mock, recover_after_ms_from_start_and_from_config)
{
	const char *body = "{\"model\":\"m\",\"messages\":[]}";
	long t0 = h_now_ms(), t1; /* before and after the clock starts */
	struct h_resp *r;

	h_mock_start(&m, "a", "--mode", "status", "--status", "503",
	             "--recover-after-ms", "1500", NULL);
	t1 = h_now_ms();
	r = h_tcp(m.port, "POST", CHAT, body);
	cr_assert_eq(r->status, 503, "%s", h_desc(r));
	cr_assert_lt(h_now_ms() - t0, 1500, "too slow to test the window");
	h_sleep_ms(t1 + 1600 - h_now_ms());
	r = h_tcp(m.port, "POST", CHAT, body);
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	/* /_mock/config restarts the clock; it works for any failure mode. */
	t0 = h_now_ms();
	config("{\"mode\":\"close\",\"recover_after_ms\":600}");
	t1 = h_now_ms();
	r = h_tcp(m.port, "POST", CHAT, body);
	cr_assert_eq(r->status, 0, "%s", h_desc(r));
	cr_assert_lt(h_now_ms() - t0, 600, "too slow to test the window");
	h_sleep_ms(t1 + 700 - h_now_ms());
	r = h_tcp(m.port, "POST", CHAT, body);
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_eq(h_mock_stat(&m, "failed"), 2);
	cr_assert_eq(h_mock_stat(&m, "ok"), 2);
}

Test(mock, retry_after_headers_on_status_replies)
{
	struct h_resp *r;

	h_mock_start(&m, "a", "--mode", "status", "--status", "429",
	             "--retry-after", "7", "--retry-after-ms", "2500", NULL);
	r = h_tcp(m.port, "POST", RESP, "{\"model\":\"g\",\"input\":\"hi\"}");
	cr_assert_eq(r->status, 429, "%s", h_desc(r));
	cr_assert_str_eq(h_header(r, "retry-after"), "7");
	cr_assert_str_eq(h_header(r, "retry-after-ms"), "2500");
	cr_assert_str_eq(h_json(r->body, "error.code"), "rate_limit_exceeded");
	config("{\"retry_after\":null}");
	r = h_tcp(m.port, "POST", CHAT, "{\"model\":\"m\",\"messages\":[]}");
	cr_assert_null(h_header(r, "retry-after"), "%s", r->head);
	cr_assert_str_eq(h_header(r, "retry-after-ms"), "2500");
}

Test(mock, tools_openai_chat)
{
	struct ev evs[MAXEV];
	struct h_resp *r;
	char args[256] = "";
	int n, pieces = 0;

	h_mock_start(&m, "a", "--mode", "tools", NULL);
	r = post_ok(CHAT, "{\"model\":\"m\",\"messages\":[]," OA_TOOLS "}");
	cr_assert_str_eq(h_json(r->body, "choices.0.finish_reason"),
	                 "tool_calls");
	cr_assert_str_eq(h_json(r->body, "choices.0.message.content"), "null");
	cr_assert_str_eq(
	    h_json(r->body, "choices.0.message.tool_calls.0.function.name"),
	    "get_weather");
	cr_assert_str_eq(h_json(r->body, "choices.0.message.tool_calls.0."
	                                 "function.arguments"),
	                 ARGS);
	cr_assert(strncmp(h_json(r->body, "choices.0.message.tool_calls.0.id"),
	                  "call_", 5) == 0);
	n = post_stream(
	    CHAT,
	    "{\"model\":\"m\",\"messages\":[],\"stream\":true," OA_TOOLS "}",
	    evs);
	cr_assert_str_eq(evs[n - 1].data, "[DONE]");
	cr_assert_str_eq(h_json(evs[0].data, "choices.0.delta.tool_calls.0."
	                                     "function.name"),
	                 "get_weather");
	for (int i = 1; i < n - 2; i++) {
		const char *a = h_json(evs[i].data, "choices.0.delta."
		                                    "tool_calls.0.function."
		                                    "arguments");
		cr_assert_not_null(a, "event %d: %s", i, evs[i].data);
		strncat(args, a, sizeof args - strlen(args) - 1);
		pieces++;
	}
	cr_assert_geq(pieces, 2);
	cr_assert_str_eq(args, ARGS);
	cr_assert_str_eq(h_json(evs[n - 2].data, "choices.0.finish_reason"),
	                 "tool_calls");
	/* Without tools in the request: the usual text answer. */
	r = post_ok(CHAT, "{\"model\":\"m\",\"messages\":[]}");
	cr_assert_str_eq(h_json(r->body, "choices.0.message.content"),
	                 "mock a says hi");
	cr_assert_str_eq(h_json(r->body, "choices.0.finish_reason"), "stop");
}

Test(mock, tools_anthropic)
{
	struct ev evs[MAXEV];
	struct h_resp *r;
	char args[256] = "";
	int n, start, pieces = 0, i;

	h_mock_start(&m, "a", "--mode", "tools", NULL);
	r = post_ok(MSGS, "{\"model\":\"c\",\"messages\":[]," AN_TOOLS "}");
	cr_assert_str_eq(h_json(r->body, "stop_reason"), "tool_use");
	cr_assert_str_eq(h_json(r->body, "content.0.type"), "tool_use");
	cr_assert_str_eq(h_json(r->body, "content.0.name"), "get_weather");
	cr_assert_str_eq(h_json(r->body, "content.0.input.city"), "Oslo");
	n = post_stream(
	    MSGS,
	    "{\"model\":\"c\",\"messages\":[],\"stream\":true," AN_TOOLS "}",
	    evs);
	start = ev_find(evs, n, 0, "content_block_start");
	cr_assert_geq(start, 0);
	cr_assert_str_eq(h_json(evs[start].data, "content_block.type"),
	                 "tool_use");
	cr_assert_str_eq(h_json(evs[start].data, "content_block.name"),
	                 "get_weather");
	cr_assert_eq(h_json_count(evs[start].data, "content_block.input"), 0);
	for (i = start + 1; i < n; i++) {
		if (strcmp(evs[i].name, "content_block_delta") != 0)
			continue;
		cr_assert_str_eq(h_json(evs[i].data, "delta.type"),
		                 "input_json_delta");
		strncat(args, h_json(evs[i].data, "delta.partial_json"),
		        sizeof args - strlen(args) - 1);
		pieces++;
	}
	cr_assert_geq(pieces, 2);
	cr_assert_str_eq(args, ARGS);
	i = ev_find(evs, n, 0, "message_delta");
	cr_assert_str_eq(h_json(evs[i].data, "delta.stop_reason"), "tool_use");
	cr_assert_str_eq(evs[n - 1].name, "message_stop");
}

Test(mock, tools_gemini)
{
	struct ev evs[MAXEV];
	struct h_resp *r;
	int n;

	h_mock_start(&m, "a", "--mode", "tools", NULL);
	r = post_ok(GM, "{\"contents\":[]," GM_TOOLS "}");
	cr_assert_str_eq(
	    h_json(r->body, "candidates.0.content.parts.0.functionCall.name"),
	    "get_weather");
	cr_assert_str_eq(h_json(r->body, "candidates.0.content.parts.0."
	                                 "functionCall.args.city"),
	                 "Oslo");
	cr_assert_str_eq(h_json(r->body, "candidates.0.finishReason"), "STOP");
	n = post_stream(GMS, "{\"contents\":[]," GM_TOOLS "}", evs);
	cr_assert_eq(n, 1, "Gemini sends the call in one frame, got %d", n);
	cr_assert_str_eq(h_json(evs[0].data, "candidates.0.content.parts.0."
	                                     "functionCall.args.city"),
	                 "Oslo");
	cr_assert_str_eq(h_json(evs[0].data, "candidates.0.finishReason"),
	                 "STOP");
	cr_assert_eq(
	    h_json_long(evs[0].data, "usageMetadata.totalTokenCount", 0), 15);
}

Test(mock, tools_responses)
{
	struct ev evs[MAXEV];
	struct h_resp *r;
	char args[256] = "";
	int n, i;

	h_mock_start(&m, "a", "--mode", "tools", NULL);
	r = post_ok(RESP, "{\"model\":\"g\",\"input\":\"hi\"," RS_TOOLS "}");
	cr_assert_str_eq(h_json(r->body, "status"), "completed");
	cr_assert_str_eq(h_json(r->body, "output.0.type"), "function_call");
	cr_assert_str_eq(h_json(r->body, "output.0.name"), "get_weather");
	cr_assert_str_eq(h_json(r->body, "output.0.arguments"), ARGS);
	cr_assert_not_null(h_json(r->body, "output.0.call_id"));
	n = post_stream(
	    RESP,
	    "{\"model\":\"g\",\"input\":\"hi\",\"stream\":true," RS_TOOLS "}",
	    evs);
	i = ev_find(evs, n, 0, "response.output_item.added");
	cr_assert_str_eq(h_json(evs[i].data, "item.type"), "function_call");
	cr_assert_str_eq(h_json(evs[i].data, "item.arguments"), "");
	while ((i = ev_find(evs, n, i + 1,
	                    "response.function_call_arguments.delta")) >= 0)
		strncat(args, h_json(evs[i].data, "delta"),
		        sizeof args - strlen(args) - 1);
	cr_assert_str_eq(args, ARGS);
	i = ev_find(evs, n, 0, "response.function_call_arguments.done");
	cr_assert_str_eq(h_json(evs[i].data, "arguments"), ARGS);
	cr_assert_str_eq(evs[n - 1].name, "response.completed");
	cr_assert_str_eq(h_json(evs[n - 1].data, "response.output.0.arguments"),
	                 ARGS);
}

Test(mock, tool_call_option_with_cut_mid_arguments)
{
	struct ev evs[MAXEV];
	struct h_resp *r;
	int n;

	h_mock_start(&m, "a", "--mode", "cut", "--cut-after", "1",
	             "--tool-call", "1", NULL);
	r = h_tcp(m.port, "POST", CHAT,
	          "{\"model\":\"m\",\"messages\":[],\"stream\":true," OA_TOOLS
	          "}");
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert(!r->complete, "a cut stream ended cleanly");
	n = sse_split(r->body, evs);
	cr_assert_eq(n, 2, "%d events: %s", n, r->body);
	cr_assert_str_eq(h_json(evs[1].data, "choices.0.delta.tool_calls.0."
	                                     "function.arguments"),
	                 "{\"city\":");
	/* After fail_first the option still makes the ok answer a call. */
	config("{\"fail_first\":1}");
	h_tcp(m.port, "POST", CHAT,
	      "{\"model\":\"m\",\"messages\":[],\"stream\":true," OA_TOOLS "}");
	r = post_ok(MSGS, "{\"model\":\"c\",\"messages\":[]," AN_TOOLS "}");
	cr_assert_str_eq(h_json(r->body, "stop_reason"), "tool_use");
}

Test(mock, responses_stream_event_sequence)
{
	static const char *const want[] = {
	    "response.created",           "response.in_progress",
	    "response.output_item.added", "response.content_part.added",
	    "response.output_text.delta", "response.output_text.delta",
	    "response.output_text.delta", "response.output_text.done",
	    "response.content_part.done", "response.output_item.done",
	    "response.completed"};
	struct ev evs[MAXEV];
	char text[256] = "";
	int n, i;

	h_mock_start(&m, "a", "--chunks", "3", NULL);
	n = post_stream(
	    "/responses",
	    "{\"model\":\"gpt-x\",\"input\":\"hi\",\"stream\":true}", evs);
	cr_assert_eq(n, 11, "%d events", n);
	for (i = 0; i < n; i++) {
		cr_assert_str_eq(evs[i].name, want[i], "event %d", i);
		cr_assert_str_eq(h_json(evs[i].data, "type"), want[i]);
		cr_assert_eq(h_json_long(evs[i].data, "sequence_number", -1),
		             i);
		if (strcmp(want[i], "response.output_text.delta") == 0)
			strncat(text, h_json(evs[i].data, "delta"),
			        sizeof text - strlen(text) - 1);
	}
	cr_assert_str_eq(text, "mock a says");
	cr_assert_str_eq(h_json(evs[0].data, "response.status"), "in_progress");
	cr_assert_eq(h_json_count(evs[0].data, "response.output"), 0);
	cr_assert_str_eq(h_json(evs[7].data, "text"), text);
	cr_assert_str_eq(h_json(evs[10].data, "response.status"), "completed");
	cr_assert_str_eq(h_json(evs[10].data, "response.model"), "gpt-x");
	cr_assert_str_eq(
	    h_json(evs[10].data, "response.output.0.content.0.text"), text);
	cr_assert_eq(
	    h_json_long(evs[10].data, "response.usage.input_tokens", 0), 10);
	cr_assert_eq(
	    h_json_long(evs[10].data, "response.usage.output_tokens", 0), 5);
	cr_assert_eq(
	    h_json_long(evs[10].data, "response.usage.total_tokens", 0), 15);
	cr_assert(!ev_has(evs, n, "[DONE]"));
}

Test(mock, responses_non_stream_object)
{
	struct h_resp *r;

	h_mock_start(&m, "a", "--usage", "7,3", NULL);
	r = post_ok(RESP, "{\"model\":\"gpt-x\",\"input\":\"hi\"}");
	cr_assert_str_eq(h_json(r->body, "object"), "response");
	cr_assert_str_eq(h_json(r->body, "status"), "completed");
	cr_assert(strncmp(h_json(r->body, "id"), "resp_", 5) == 0);
	cr_assert_str_eq(h_json(r->body, "output.0.type"), "message");
	cr_assert_str_eq(h_json(r->body, "output.0.role"), "assistant");
	cr_assert_str_eq(h_json(r->body, "output.0.content.0.type"),
	                 "output_text");
	cr_assert_str_eq(h_json(r->body, "output.0.content.0.text"),
	                 "mock a says hi");
	cr_assert_eq(h_json_long(r->body, "usage.total_tokens", 0), 10);
	cr_assert_eq(h_json_long(r->body,
	                         "usage.input_tokens_details."
	                         "cached_tokens",
	                         -1),
	             0);
	/* finish length maps to status incomplete. */
	config("{\"finish\":\"length\"}");
	r = post_ok(RESP, "{\"model\":\"gpt-x\",\"input\":\"hi\"}");
	cr_assert_str_eq(h_json(r->body, "status"), "incomplete");
	cr_assert_str_eq(h_json(r->body, "incomplete_details.reason"),
	                 "max_output_tokens");
	cr_assert_eq(h_mock_stat(&m, "chat"), 2);
}

Test(mock, responses_failure_modes)
{
	const char *sbody =
	    "{\"model\":\"g\",\"input\":\"hi\",\"stream\":true}";
	struct h_req q = {.port = 0, .method = "POST", .path = RESP};
	struct ev evs[MAXEV];
	struct h_resp *r;
	int n;

	h_mock_start(&m, "a", "--mode", "status", "--status", "503", NULL);
	r = h_tcp(m.port, "POST", RESP, sbody);
	cr_assert_eq(r->status, 503, "%s", h_desc(r));
	cr_assert_str_eq(h_json(r->body, "error.type"), "server_error");
	config("{\"mode\":\"stream-error\",\"status\":429}");
	n = post_stream(RESP, sbody, evs);
	cr_assert_eq(n, 2);
	cr_assert_str_eq(evs[1].name, "response.failed");
	cr_assert_str_eq(h_json(evs[1].data, "response.status"), "failed");
	cr_assert_str_eq(h_json(evs[1].data, "response.error.code"),
	                 "rate_limit_exceeded");
	config("{\"mode\":\"cut\",\"cut_after\":1}");
	r = h_tcp(m.port, "POST", RESP, sbody);
	cr_assert(!r->complete && r->status == 200, "%s", h_desc(r));
	n = sse_split(r->body, evs);
	cr_assert_str_eq(evs[n - 1].name, "response.output_text.delta");
	config("{\"mode\":\"garbage\"}");
	r = h_tcp(m.port, "POST", RESP, "{\"model\":\"g\",\"input\":\"hi\"}");
	cr_assert(r->status == 200 && !h_json_valid(r->body), "%s", r->body);
	config("{\"mode\":\"hang\"}");
	q.port = m.port;
	q.body = sbody;
	q.timeout_ms = 300;
	r = h_http(&q);
	cr_assert_eq(r->status, 0, "%s", h_desc(r));
}

Test(mock, anthropic_stream_event_order)
{
	static const char *const want[] = {
	    "message_start",       "content_block_start", "ping",
	    "content_block_delta", "content_block_delta", "content_block_stop",
	    "message_delta",       "message_stop"};
	struct ev evs[MAXEV];
	int n, i;

	h_mock_start(&m, "a", "--chunks", "2", NULL);
	n = post_stream(
	    MSGS, "{\"model\":\"c\",\"messages\":[],\"stream\":true}", evs);
	cr_assert_eq(n, 8, "%d events", n);
	for (i = 0; i < n; i++) {
		cr_assert_str_eq(evs[i].name, want[i], "event %d", i);
		cr_assert_str_eq(h_json(evs[i].data, "type"), want[i]);
	}
	cr_assert_eq(h_json_long(evs[0].data, "message.usage.input_tokens", 0),
	             10);
	cr_assert_str_eq(h_json(evs[6].data, "delta.stop_reason"), "end_turn");
	cr_assert_eq(h_json_long(evs[6].data, "usage.output_tokens", 0), 5);
}

Test(mock, last_request_body_and_headers)
{
	/* Odd spacing and escapes: /_mock/last/body must be byte-identical. */
	const char *body = "{ \"model\" : \"m\",\"messages\":[],"
	                   "\"x\":\"caf\\u00e9 \\\"q\\\"\"\t}\n";
	struct h_req q = {.method = "POST",
	                  .path = "/v1/chat/completions?x=1",
	                  .headers = "X-Probe: yes\r\n",
	                  .body = body};
	struct h_resp *r;

	h_mock_start(&m, "a", NULL);
	r = h_tcp(m.port, "GET", "/_mock/last", NULL);
	cr_assert_eq(r->status, 404, "%s", h_desc(r));
	q.port = m.port;
	cr_assert_eq(h_http(&q)->status, 200);
	r = h_tcp(m.port, "GET", "/_mock/last", NULL);
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_str_eq(h_json(r->body, "method"), "POST");
	cr_assert_str_eq(h_json(r->body, "path"), "/v1/chat/completions?x=1");
	cr_assert_str_eq(h_json(r->body, "headers.x-probe"), "yes");
	cr_assert_str_eq(h_json(r->body, "body"), body);
	r = h_tcp(m.port, "GET", "/_mock/last/body", NULL);
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_eq(r->body_len, strlen(body));
	cr_assert(memcmp(r->body, body, r->body_len) == 0, "%s", r->body);
	/* The next request replaces it, a bad one included. */
	h_tcp(m.port, "POST", RESP, "not json");
	r = h_tcp(m.port, "GET", "/_mock/last/body", NULL);
	cr_assert_str_eq(r->body, "not json");
	cr_assert_eq(h_mock_reset(&m), 0);
	r = h_tcp(m.port, "GET", "/_mock/last/body", NULL);
	cr_assert_eq(r->status, 404, "%s", h_desc(r));
}

Test(mock, config_new_options_validated)
{
	struct h_resp *r;
	char *out = NULL;
	int rc;

	h_mock_start(&m, "a", NULL);
	cr_assert_eq(h_mock_config(&m, "{\"tool_call\":2}"), -1);
	cr_assert_eq(h_mock_config(&m, "{\"recover_after_ms\":-5}"), -1);
	cr_assert_eq(h_mock_config(&m, "{\"mode\":\"no-dones\"}"), -1);
	r = h_tcp(m.port, "POST", "/_mock/config",
	          "{\"mode\":\"bad-chunk\",\"tool_call\":1,"
	          "\"recover_after_ms\":250}");
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_str_eq(h_json(r->body, "mode"), "bad-chunk");
	cr_assert_eq(h_json_long(r->body, "tool_call", -1), 1);
	cr_assert_eq(h_json_long(r->body, "recover_after_ms", -1), 250);
	rc = h_run(&out, h_bin("llmf-mock"), "--port", "0", "--tool-call", "x",
	           NULL);
	cr_assert_eq(rc, 2, "a bad --tool-call exited %d: %s", rc, out);
}

/* late-error: --cut-after content chunks, then the in-stream error event,
 * then the end of the body. */
Test(mock, late_error_after_content)
{
	struct ev evs[MAXEV];
	int n;

	h_mock_start(&m, "a", "--mode", "late-error", "--cut-after", "2", NULL);
	n = post_stream(
	    CHAT, "{\"model\":\"m\",\"messages\":[],\"stream\":true}", evs);
	cr_assert_geq(n, 3);
	cr_assert(ev_has(evs, n, "\" a\"") && !ev_has(evs, n, "\" says\""));
	cr_assert_not_null(h_json(evs[n - 1].data, "error"), "%s",
	                   evs[n - 1].data);
	n = post_stream(
	    MSGS, "{\"model\":\"c\",\"messages\":[],\"stream\":true}", evs);
	cr_assert_str_eq(evs[n - 1].name, "error");
	cr_assert_geq(ev_find(evs, n, 0, "content_block_delta"), 0);
	/* Not a stream: the error status. */
	struct h_resp *r =
	    h_tcp(m.port, "POST", CHAT, "{\"model\":\"m\",\"messages\":[]}");
	cr_assert_eq(r->status, 503);
}

/* reject_prefill: a chat whose last message is the assistant's gets a 400
 * about prefill; any other gets the mode. */
Test(mock, reject_prefill_only_final_assistant_turn)
{
	h_mock_start(&m, "a", "--reject-prefill", "1", NULL);
	struct h_resp *r = h_tcp(
	    m.port, "POST", MSGS,
	    "{\"model\":\"c\",\"messages\":[{\"role\":\"user\",\"content\":"
	    "\"hi\"},{\"role\":\"assistant\",\"content\":\"Hel\"}]}");
	cr_assert_eq(r->status, 400, "%s", h_desc(r));
	cr_assert_not_null(strstr(h_json(r->body, "error.message"), "prefill"));
	r = post_ok(CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":"
	                  "\"assistant\",\"content\":\"Hel\"},{\"role\":"
	                  "\"user\",\"content\":\"go on\"}]}");
	cr_assert_eq(h_mock_stat(&m, "failed"), 1);
	config("{\"reject_prefill\":0}");
	post_ok(MSGS, "{\"model\":\"c\",\"messages\":[{\"role\":\"assistant\","
	              "\"content\":\"Hel\"}]}");
}

/* count_tokens (Anthropic's path and Vertex's count-tokens): 10000 + the
 * body's bytes, counted in the stats; the failure modes apply, with
 * Anthropic's error shape, and a stream mode is a status reply. */
Test(mock, count_tokens)
{
	static const char body[] =
	    "{\"model\":\"c\",\"messages\":[{\"role\":\"user\",\"content\":"
	    "\"hi\"}]}";
	struct h_resp *r;

	h_mock_start(&m, "an", NULL);
	r = h_tcp(m.port, "POST", "/v1/messages/count_tokens", body);
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_eq(h_json_long(r->body, "input_tokens", -1),
	             10000 + (long)sizeof body - 1, "%s", r->body);
	r = h_tcp(m.port, "POST",
	          "/v1/projects/p/locations/l/publishers/anthropic/models/"
	          "count-tokens:rawPredict",
	          "{}");
	cr_assert_eq(h_json_long(r->body, "input_tokens", -1), 10002, "%s",
	             r->body);
	cr_assert_eq(h_mock_stat(&m, "count_tokens"), 2);
	cr_assert_eq(h_mock_stat(&m, "chat"), 0);
	cr_assert_eq(h_mock_config(&m, "{\"mode\":\"status\",\"status\":529}"),
	             0);
	r = h_tcp(m.port, "POST", "/v1/messages/count_tokens", body);
	cr_assert_eq(r->status, 529, "%s", h_desc(r));
	cr_assert_str_eq(h_json(r->body, "error.type"), "overloaded_error");
	cr_assert_eq(h_mock_config(&m, "{\"mode\":\"stream-error\"}"), 0);
	r = h_tcp(m.port, "POST", "/v1/messages/count_tokens", body);
	cr_assert_eq(r->status, 529, "%s", h_desc(r));
	cr_assert_eq(h_mock_config(&m, "{\"mode\":\"close\"}"), 0);
	r = h_tcp(m.port, "POST", "/v1/messages/count_tokens", body);
	cr_assert_eq(r->status, 0, "%s", h_desc(r));
	cr_assert_eq(h_mock_stat(&m, "failed"), 3);
}

/* llmfd with one worker and one deployment, group "m", on the mock m. */
static void
llmfd_on_mock(void)
{
	h_llmfd_start("daemon = { workers = 1; listen = \"llmfd.sock\";\n"
	              "  health_table = \"health\"; };\n"
	              "deployments = ( { name = \"d\"; group = \"m\";\n"
	              "  provider = \"openai\"; model = \"m\";\n"
	              "  base_url = \"http://127.0.0.1:%d/v1\"; } );\n",
	              m.port);
}

/* --stamp 1: every OpenAI chunk carries its send time, llmfd passes it
 * through, and llmf-bench turns it into per-frame delays and gap excesses
 * (the bench's stream figures; bench/report.py). */
Test(mock, stamped_frames_measured_by_the_bench_through_llmfd)
{
	const char *body = "{\"model\":\"m\",\"stream\":true,\"messages\":"
	                   "[{\"role\":\"user\",\"content\":\"hi\"}]}";
	struct h_resp *r;
	char *out;
	long sent;
	int rc;

	h_mock_start(&m, "stamp", "--stamp", "1", "--chunks", "5",
	             "--chunk-delay-ms", "10", NULL);
	llmfd_on_mock();
	r = h_unix("POST", CHAT, body);
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	/* seven chunks (role, five contents, finish), each stamped once */
	cr_assert_not_null(strstr(r->body, "\"llmf_sent_us\":"));
	sent = 0;
	for (const char *p = r->body; (p = strstr(p, "\"llmf_sent_us\":"));
	     p++) {
		long t = strtol(p + 15, NULL, 10);

		cr_assert_gt(t, sent, "stamps go forward: %s", r->body);
		sent = t;
	}
	rc = h_run(&out, h_bin("llmf-bench"), "--unix", h_sock(), "--model",
	           "m", "--stream", "-n", "2", "--frames", "7", "--warmup", "0",
	           "--json", NULL);
	cr_assert_eq(rc, 0, "%s", out);
	cr_assert_eq(h_json_long(out, "ok", -1), 2, "%s", out);
	cr_assert_eq(h_json_long(out, "frames_short", -1), 0, "%s", out);
	/* counted from the frame after the first content: frames 2..6 of
	 * each stream, and the gaps 1-2 .. 5-6 */
	cr_assert_eq(h_json_long(out, "frame_delay_us.count", -1), 10, "%s",
	             out);
	cr_assert_eq(h_json_long(out, "gap_excess_us.count", -1), 10, "%s",
	             out);
	/* a delay from the mock's clock to ours, not a stamp misread: far
	 * below the time the streams took */
	cr_assert_lt(h_json_long(out, "frame_delay_us.max", -1),
	             h_json_long(out, "latency_us.max", 0), "%s", out);
	cr_assert_geq(h_json_long(out, "frame_delay_us.min", -1), 0, "%s", out);

	/* without --stamp, no stamp and no such figures */
	h_mock_config(&m, "{\"stamp\":0}");
	r = h_unix("POST", CHAT, body);
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_null(strstr(r->body, "llmf_sent_us"), "%s", r->body);
	rc = h_run(&out, h_bin("llmf-bench"), "--unix", h_sock(), "--model",
	           "m", "--stream", "-n", "1", "--warmup", "0", "--json", NULL);
	cr_assert_eq(rc, 0, "%s", out);
	cr_assert_eq(h_json_long(out, "frame_delay_us.count", -1), -1, "%s",
	             out);
}

/* llmf-bench on a target that refuses every connect ends, with the
 * failures counted (it used to wait forever: a loopbreak issued before
 * the event loop ran is forgotten by it). */
Test(mock, bench_ends_on_an_unreachable_target)
{
	char *out;
	int rc;

	rc = h_run(&out, h_bin("llmf-bench"), "--unix", h_path("nothing.sock"),
	           "-n", "1", "--warmup", "0", "--json", NULL);
	cr_assert_eq(rc, 1, "no request ok: %s", out);
	cr_assert_eq(h_json_long(out, "ok", -1), 0, "%s", out);
	cr_assert_eq(h_json_long(out, "errors.connect", -1), 1, "%s", out);
	rc = h_run(&out, h_bin("llmf-bench"), "--unix", h_path("nothing.sock"),
	           "-n", "2", "--warmup", "0.2", "--json", NULL);
	cr_assert_eq(rc, 1, "no request ok: %s", out);
	cr_assert_eq(h_json_long(out, "errors.connect", -1), 2, "%s", out);
}

/* llmf-bench TARGET --and TARGET...: the targets run at the same time on
 * one event loop (the bench's side-by-side streams), each reported on its
 * own line under its own label; one that fails ends without holding the
 * others, and the exit status says a target had no success. */
Test(mock, bench_runs_targets_side_by_side)
{
	char *out, *line, *save, *mport;
	const char *res[3] = {0};
	long t0, took;
	int rc, n = 0;

	h_mock_start(&m, "side", "--stamp", "1", "--chunks", "5",
	             "--chunk-delay-ms", "300", NULL);
	llmfd_on_mock();
	mport = h_fmt("127.0.0.1:%d", m.port);
	t0 = h_now_ms();
	rc = h_run(&out, h_bin("llmf-bench"), "--tcp", mport, "--model", "m",
	           "--stream", "-n", "2", "--frames", "7", "--warmup", "0",
	           "--json", "--label", "direct", "--and", "--unix", h_sock(),
	           "--model", "m", "--stream", "-n", "2", "--frames", "7",
	           "--warmup", "0", "--json", "--label", "llmfd", "--and",
	           "--unix", h_path("nothing.sock"), "-n", "1", "--warmup", "0",
	           "--json", "--label", "dead", NULL);
	took = h_now_ms() - t0;
	cr_assert_eq(rc, 1, "one target had no success: %s", out);
	for (line = strtok_r(out, "\n", &save); line && n < 3;
	     line = strtok_r(NULL, "\n", &save))
		res[n++] = line;
	cr_assert_eq(n, 3, "a line per target");
	cr_assert_not_null(strstr(res[0], "\"label\":\"direct\""), "%s",
	                   res[0]);
	cr_assert_not_null(strstr(res[1], "\"label\":\"llmfd\""), "%s", res[1]);
	cr_assert_not_null(strstr(res[2], "\"label\":\"dead\""), "%s", res[2]);
	for (int i = 0; i < 2; i++) {
		cr_assert_eq(h_json_long(res[i], "ok", -1), 2, "%s", res[i]);
		cr_assert_eq(h_json_long(res[i], "frames_short", -1), 0, "%s",
		             res[i]);
		cr_assert_eq(h_json_long(res[i], "gap_excess_us.count", -1), 10,
		             "%s", res[i]);
	}
	cr_assert_eq(h_json_long(res[2], "ok", -1), 0, "%s", res[2]);
	cr_assert_eq(h_json_long(res[2], "errors.connect", -1), 1, "%s",
	             res[2]);
	/* two streams of 5 chunks 300 ms apart one after the other on each
	 * target: about 3 s if they ran side by side, 6 s if one target
	 * waited for the other */
	cr_assert_lt(took, 5000, "side by side, not in turn: %ld ms", took);
	cr_assert_eq(h_mock_stat(&m, "requests"), 4);
}

/* --reconnect-ms: each connection closes after a lifetime of about that
 * many ms (drawn from [0.5, 1.5) x) and the next request connects anew, so
 * a ladder step samples how a server's workers split the connections
 * instead of keeping the one split it drew; without it, one connection
 * each. */
Test(mock, bench_reconnects_after_lifetime)
{
	char *out, *port;
	int rc;

	h_mock_start(&m, "rc", "--latency-ms", "20", NULL);
	port = h_fmt("127.0.0.1:%d", m.port);
	rc = h_run(&out, h_bin("llmf-bench"), "--tcp", port, "--model", "m",
	           "-c", "2", "-n", "40", "--warmup", "0", "--reconnect-ms",
	           "60", "--json", NULL);
	cr_assert_eq(rc, 0, "%s", out);
	cr_assert_eq(h_json_long(out, "ok", -1), 40, "%s", out);
	/* 20 requests of >= 20 ms on each connection, lifetimes < 90 ms:
	 * at least 5 connects each */
	cr_assert_geq(h_json_long(out, "connects", -1), 10, "%s", out);
	/* the mock saw them (and the stats request's own connection) */
	cr_assert_eq(h_mock_stat(&m, "connections"),
	             h_json_long(out, "connects", -1) + 1, "%s", out);
	rc = h_run(&out, h_bin("llmf-bench"), "--tcp", port, "--model", "m",
	           "-c", "2", "-n", "10", "--warmup", "0", "--json", NULL);
	cr_assert_eq(rc, 0, "%s", out);
	cr_assert_eq(h_json_long(out, "connects", -1), 2, "%s", out);
}
