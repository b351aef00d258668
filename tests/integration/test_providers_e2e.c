/* Cross-provider behaviour of llmfd, end to end: fallbacks from OpenAI to
 * Anthropic and Gemini with translated answers and streams, what each
 * upstream receives (paths, auth headers, translated bodies), Azure,
 * provider errors rewritten into OpenAI's shape and classified, per
 * deployment headers and params, embeddings and /v1/models. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <criterion/criterion.h>

#include "tests/integration/harness.h"

#define SECRET "sk-test-SECRET-123"
#define CHAT   "/v1/chat/completions"
#define EMBED  "/v1/embeddings"
#define MSGS                                                                   \
	"\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},"        \
	"{\"role\":\"user\",\"content\":\"hi\"}]"
#define HI "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"

/* One request through main (OpenAI) with its fallback chain spelled out
 * and retries off, so every router field must be dropped upstream. */
#define MAIN_BODY(extra)                                                       \
	"{\"model\":\"main\"," MSGS ",\"num_retries\":0,"                      \
	"\"fallbacks\":[\"claude\",\"gem\"]" extra "}"

#define CONF_HEAD                                                              \
	"daemon = { workers = 2; listen = \"llmfd.sock\";\n"                   \
	"  health_table = \"health\"; log_level = \"debug\"; };\n"             \
	"router = { num_retries = 0; backoff_base_ms = 10;\n"                  \
	"  backoff_max_ms = 50; timeout_ms = 10000;\n"                         \
	"  attempt_timeout_ms = 3000; };\n"

#define DEPLOYS                                                                \
	"deployments = (\n"                                                    \
	"  { name = \"oa\"; group = \"main\"; provider = \"openai\";\n"        \
	"    base_url = \"http://127.0.0.1:%d/v1\"; api_key = "                \
	"\"$TEST_KEY\";\n"                                                     \
	"    model = \"m\"; },\n"                                              \
	"  { name = \"an\"; group = \"claude\"; provider = \"anthropic\";\n"   \
	"    base_url = \"http://127.0.0.1:%d\"; api_key = \"$TEST_KEY\";\n"   \
	"    model = \"claude-x\"; %s },\n"                                    \
	"  { name = \"ge\"; group = \"gem\"; provider = \"gemini\";\n"         \
	"    base_url = \"http://127.0.0.1:%d\"; api_key = \"$TEST_KEY\";\n"   \
	"    model = \"gemini-x\"; %s },\n"                                    \
	"  { name = \"az\"; group = \"azg\"; provider = \"azure\";\n"          \
	"    base_url = \"http://127.0.0.1:%d\"; api_key = \"$TEST_KEY\";\n"   \
	"    model = \"gpt-az\"; azure_deployment = \"dep1\";\n"               \
	"    api_version = \"2024-10-21\"; }%s\n"                              \
	");\n"

TestSuite(providers_e2e, .init = h_setup, .fini = h_teardown, .timeout = 40);

static struct h_mock oa, an, ge, az;

struct setup {
	const char *const *oa_args; /* extra mock arguments, NULL-terminated */
	const char *const *an_args;
	const char *const *ge_args;
	const char *const *az_args;
	const char *an_extra;     /* settings appended to deployment "an" */
	const char *ge_extra;     /* settings appended to deployment "ge" */
	const char *more_deploys; /* ",\n{ ... }" appended to deployments */
	const char *fallbacks; /* fallbacks = ...; default main → claude,gem */
	const char *tail;      /* more top-level settings */
};

/* Start one mock with --chunks 4 (a stream spells the answer once) and
 * the given extra arguments. */
static void
mock(struct h_mock *m, const char *name, const char *const *args)
{
	const char *argv[32] = {"--chunks", "4"};
	int n = 2;

	for (int i = 0; args && args[i] && n < 31; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	h_mock_startv(m, name, argv);
}

/* Start the four mocks and the daemon: groups main (OpenAI "oa"), claude
 * (Anthropic "an"), gem (Gemini "ge"), azg (Azure "az"). */
static void
start(const struct setup *s)
{
	mock(&oa, "openai", s->oa_args);
	mock(&an, "anthropic", s->an_args);
	mock(&ge, "gemini", s->ge_args);
	mock(&az, "azure", s->az_args);
	h_llmfd_start(CONF_HEAD DEPLOYS "%s\n%s\n", oa.port, an.port,
	              s->an_extra ? s->an_extra : "", ge.port,
	              s->ge_extra ? s->ge_extra : "", az.port,
	              s->more_deploys ? s->more_deploys : "",
	              s->fallbacks ? s->fallbacks
	                           : "fallbacks = ( { group = \"main\"; "
	                             "to = [ \"claude\", \"gem\" ]; } );",
	              s->tail ? s->tail : "");
}

static struct h_resp *
post(const char *path, const char *body)
{
	return h_unix("POST", path, body);
}

/* Assert r is a 200 OpenAI chat.completion with "mock NAME says hi",
 * finish_reason stop and usage 10/5/15, served by provider prov. */
static void
assert_completion(const struct h_resp *r, const char *name, const char *prov)
{
	char want[128];

	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert(h_json_valid(r->body), "not JSON: %s", h_desc(r));
	const char *obj = h_json(r->body, "object");
	cr_assert(obj && strcmp(obj, "chat.completion") == 0, "object: %s",
	          h_desc(r));
	snprintf(want, sizeof(want), "mock %s says hi", name);
	const char *c = h_json(r->body, "choices.0.message.content");
	cr_assert(c && strcmp(c, want) == 0, "content '%s', want '%s'; %s",
	          c ? c : "(none)", want, h_desc(r));
	const char *role = h_json(r->body, "choices.0.message.role");
	cr_assert(role && strcmp(role, "assistant") == 0, "role: %s",
	          h_desc(r));
	const char *fin = h_json(r->body, "choices.0.finish_reason");
	cr_assert(fin && strcmp(fin, "stop") == 0, "finish_reason: %s",
	          h_desc(r));
	cr_assert_eq(h_json_long(r->body, "usage.prompt_tokens", -1), 10, "%s",
	             h_desc(r));
	cr_assert_eq(h_json_long(r->body, "usage.completion_tokens", -1), 5,
	             "%s", h_desc(r));
	cr_assert_eq(h_json_long(r->body, "usage.total_tokens", -1), 15, "%s",
	             h_desc(r));
	const char *p = h_header(r, "x-llmfd-provider");
	cr_assert(p && strcmp(p, prov) == 0, "x-llmfd-provider '%s', want '%s'",
	          p ? p : "(none)", prov);
}

/* Assert r is an OpenAI-shaped error with HTTP status st. */
static void
assert_error(const struct h_resp *r, int st)
{
	cr_assert_eq(r->status, st, "%s", h_desc(r));
	cr_assert(h_json_valid(r->body), "error body not JSON: %s", h_desc(r));
	cr_assert(h_json(r->body, "error.message") != NULL,
	          "no error.message: %s", h_desc(r));
	cr_assert(h_json(r->body, "error.type") != NULL, "no error.type: %s",
	          h_desc(r));
}

/* The i-th request a mock received (JSON object text). */
static const char *
mock_req(const struct h_mock *m, int i)
{
	const char *reqs = h_mock_requests(m);

	cr_assert(reqs != NULL, "no request log from mock %s", m->name);
	const char *q = h_json(reqs, h_fmt("%d", i));
	cr_assert(q != NULL, "mock %s has no request %d: %s", m->name, i, reqs);
	return q;
}

/* A field of the i-th request's JSON body. */
static const char *
body_field(const char *req, const char *path)
{
	const char *body = h_json(req, "body");

	cr_assert(body && h_json_valid(body), "upstream body: %s", req);
	return h_json(body, path);
}

/* What a client saw of an OpenAI SSE stream. */
struct sse {
	int nchunks;     /* JSON data events */
	int nfinish;     /* non-null finish_reasons */
	int nusage;      /* chunks with a non-null usage */
	int nerror;      /* events carrying "error" */
	int nempty;      /* chunks with no choices and no usage */
	int done_at;     /* index of [DONE] among data events, -1 */
	int usage_at;    /* index of the last usage chunk, -1 */
	int finish_at;   /* index of the last finish_reason, -1 */
	int ndata;       /* data events */
	bool all_chunks; /* every JSON event is a chat.completion.chunk */
	char text[512];
	char finish[32];
	const char *usage; /* the usage chunk's text */
};

static void
sse_parse(const char *body, struct sse *s)
{
	const char *p = body;

	memset(s, 0, sizeof(*s));
	s->done_at = s->usage_at = s->finish_at = -1;
	s->all_chunks = true;
	while (p && *p) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		if (len > 0 && p[len - 1] == '\r')
			len--;
		if (len >= 6 && strncmp(p, "data: ", 6) == 0) {
			char *d = h_fmt("%.*s", (int)(len - 6), p + 6);
			int idx = s->ndata++;
			if (strcmp(d, "[DONE]") == 0) {
				s->done_at = idx;
			} else {
				s->nchunks++;
				if (h_json(d, "error") != NULL)
					s->nerror++;
				const char *o = h_json(d, "object");
				if (!o ||
				    strcmp(o, "chat.completion.chunk") != 0)
					s->all_chunks = false;
				int nch = h_json_count(d, "choices");
				const char *u = h_json(d, "usage");
				bool has_u = u && strcmp(u, "null") != 0;
				if (has_u) {
					s->nusage++;
					s->usage_at = idx;
					s->usage = d;
				}
				if (nch <= 0 && !has_u)
					s->nempty++;
				const char *c =
				    h_json(d, "choices.0.delta.content");
				if (c && strcmp(c, "null") != 0)
					strncat(s->text, c,
					        sizeof(s->text) -
					            strlen(s->text) - 1);
				const char *f =
				    h_json(d, "choices.0.finish_reason");
				if (f && strcmp(f, "null") != 0) {
					s->nfinish++;
					s->finish_at = idx;
					snprintf(s->finish, sizeof(s->finish),
					         "%s", f);
				}
			}
		}
		p = nl ? nl + 1 : NULL;
	}
}

/* Assert r is one clean OpenAI stream spelling "mock NAME says hi" with
 * one finish_reason "stop", ending with [DONE]; with_usage: a usage chunk
 * (10/5/15) after the finish and before [DONE], else none. */
static void
assert_stream(const struct h_resp *r, const char *name, const char *prov,
              bool with_usage)
{
	struct sse s;
	char want[128];

	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert(r->complete, "%s", h_desc(r));
	const char *ct = h_header(r, "content-type");
	cr_assert(ct && strstr(ct, "text/event-stream"), "content-type: %s",
	          h_desc(r));
	sse_parse(r->body, &s);
	snprintf(want, sizeof(want), "mock %s says hi", name);
	cr_assert(s.all_chunks, "not all chat.completion.chunk: %s", r->body);
	cr_assert_eq(s.nerror, 0, "error event in stream: %s", r->body);
	cr_assert_eq(s.nempty, 0, "empty chunk reached the client: %s",
	             r->body);
	cr_assert_str_eq(s.text, want, "spliced text; stream: %s", r->body);
	cr_assert_eq(s.nfinish, 1, "%d finish_reasons: %s", s.nfinish, r->body);
	cr_assert_str_eq(s.finish, "stop", "%s", r->body);
	cr_assert(s.done_at >= 0 && s.done_at == s.ndata - 1,
	          "[DONE] missing or not last: %s", r->body);
	if (with_usage) {
		cr_assert_eq(s.nusage, 1, "%d usage chunks: %s", s.nusage,
		             r->body);
		cr_assert(s.usage_at > s.finish_at && s.usage_at < s.done_at,
		          "usage chunk misplaced: %s", r->body);
		cr_assert_eq(h_json_count(s.usage, "choices"), 0,
		             "usage chunk has choices: %s", s.usage);
		cr_assert_eq(h_json_long(s.usage, "usage.prompt_tokens", -1),
		             10, "%s", s.usage);
		cr_assert_eq(
		    h_json_long(s.usage, "usage.completion_tokens", -1), 5,
		    "%s", s.usage);
		cr_assert_eq(h_json_long(s.usage, "usage.total_tokens", -1), 15,
		             "%s", s.usage);
	} else {
		cr_assert_eq(s.nusage, 0, "usage without include_usage: %s",
		             r->body);
	}
	const char *p = h_header(r, "x-llmfd-provider");
	cr_assert(p && strcmp(p, prov) == 0, "x-llmfd-provider '%s', want '%s'",
	          p ? p : "(none)", prov);
}

/* Assert what the Anthropic mock's i-th request looked like. */
static void
assert_anthropic_req(int i, bool stream)
{
	const char *q = mock_req(&an, i);

	cr_assert_str_eq(h_json(q, "path"), "/v1/messages", "%s", q);
	const char *k = h_json(q, "headers.x-api-key");
	cr_assert(k && strcmp(k, SECRET) == 0, "x-api-key: %s", q);
	const char *v = h_json(q, "headers.anthropic-version");
	cr_assert(v && *v, "no anthropic-version: %s", q);
	cr_assert_null(h_json(q, "headers.authorization"), "bearer sent: %s",
	               q);
	const char *sys = body_field(q, "system");
	cr_assert(sys && strstr(sys, "be brief"), "system not top-level: %s",
	          q);
	cr_assert_str_eq(body_field(q, "model"), "claude-x", "%s", q);
	cr_assert_str_eq(body_field(q, "messages.0.role"), "user", "%s", q);
	cr_assert_eq(h_json_count(h_json(q, "body"), "messages"), 1,
	             "system left in messages: %s", q);
	const char *mt = body_field(q, "max_tokens");
	cr_assert(mt && atol(mt) > 0, "max_tokens not filled: %s", q);
	cr_assert_null(body_field(q, "fallbacks"), "forwarded: %s", q);
	cr_assert_null(body_field(q, "num_retries"), "forwarded: %s", q);
	cr_assert_null(body_field(q, "stream_options"), "forwarded: %s", q);
	const char *st = body_field(q, "stream");
	if (stream)
		cr_assert(st && strcmp(st, "true") == 0, "stream: %s", q);
	else
		cr_assert(!st || strcmp(st, "false") == 0, "stream: %s", q);
}

/* Assert what the Gemini mock's i-th request looked like. */
static void
assert_gemini_req(int i, bool stream)
{
	const char *q = mock_req(&ge, i);
	const char *want = stream ? "/v1beta/models/"
	                            "gemini-x:streamGenerateContent?alt=sse"
	                          : "/v1beta/models/gemini-x:generateContent";

	cr_assert_str_eq(h_json(q, "path"), want, "%s", q);
	const char *k = h_json(q, "headers.x-goog-api-key");
	cr_assert(k && strcmp(k, SECRET) == 0, "x-goog-api-key: %s", q);
	cr_assert_str_eq(body_field(q, "contents.0.role"), "user", "%s", q);
	cr_assert_str_eq(body_field(q, "contents.0.parts.0.text"), "hi", "%s",
	                 q);
	cr_assert_eq(h_json_count(h_json(q, "body"), "contents"), 1,
	             "system left in contents: %s", q);
	const char *sys = body_field(q, "systemInstruction.parts.0.text");
	cr_assert(sys && strstr(sys, "be brief"), "systemInstruction: %s", q);
	cr_assert_null(body_field(q, "messages"), "OpenAI body sent: %s", q);
	cr_assert_null(body_field(q, "fallbacks"), "forwarded: %s", q);
	cr_assert_null(body_field(q, "num_retries"), "forwarded: %s", q);
	cr_assert_null(body_field(q, "stream"), "stream field sent: %s", q);
}

static const char *const S503[] = {"--mode", "status", "--status", "503", NULL};
static const char *const S529[] = {"--mode", "status", "--status", "529", NULL};

/* Edge: an OpenAI 503 falls back to Anthropic, whose Messages reply is
 * translated into an OpenAI chat.completion. */
Test(providers_e2e, openai_503_falls_back_to_anthropic)
{
	start(&(struct setup){.oa_args = S503});
	struct h_resp *r = post(CHAT, MAIN_BODY(""));
	assert_completion(r, "anthropic", "anthropic");
	cr_assert_str_eq(h_header(r, "x-llmfd-deployment"), "an");
	cr_assert_eq(h_mock_stat(&oa, "requests"), 1, "num_retries 0");
	cr_assert_eq(h_mock_stat(&an, "requests"), 1);
	cr_assert_eq(h_mock_stat(&ge, "requests"), 0);
	assert_anthropic_req(0, false);
}

/* Edge: OpenAI 503 and Anthropic 529 both fail over to Gemini, whose
 * generateContent reply is translated. */
Test(providers_e2e, anthropic_529_falls_back_to_gemini)
{
	start(&(struct setup){.oa_args = S503, .an_args = S529});
	struct h_resp *r = post(CHAT, MAIN_BODY(""));
	assert_completion(r, "gemini", "gemini");
	cr_assert_str_eq(h_header(r, "x-llmfd-deployment"), "ge");
	cr_assert_eq(h_mock_stat(&an, "requests"), 1, "num_retries 0");
	cr_assert_eq(h_mock_stat(&ge, "requests"), 1);
	assert_gemini_req(0, false);
}

/* Edge: a stream that falls back to Anthropic is re-emitted as OpenAI
 * chunks with one finish_reason and [DONE], no usage unless asked. */
Test(providers_e2e, stream_falls_back_to_anthropic)
{
	start(&(struct setup){.oa_args = S503});
	struct h_resp *r = post(CHAT, MAIN_BODY(",\"stream\":true"));
	assert_stream(r, "anthropic", "anthropic", false);
	assert_anthropic_req(0, true);
}

/* Edge: include_usage on a translated Anthropic stream yields a usage
 * chunk between the finish chunk and [DONE]. */
Test(providers_e2e, stream_anthropic_include_usage)
{
	start(&(struct setup){.oa_args = S503});
	struct h_resp *r = post(
	    CHAT, MAIN_BODY(",\"stream\":true,"
	                    "\"stream_options\":{\"include_usage\":true}"));
	assert_stream(r, "anthropic", "anthropic", true);
	assert_anthropic_req(0, true);
}

/* Edge: a stream failing over twice ends on Gemini's SSE
 * (streamGenerateContent?alt=sse), whose empty final frame adds no
 * text. */
Test(providers_e2e, stream_falls_back_to_gemini)
{
	start(&(struct setup){.oa_args = S503, .an_args = S529});
	struct h_resp *r = post(CHAT, MAIN_BODY(",\"stream\":true"));
	assert_stream(r, "gemini", "gemini", false);
	assert_gemini_req(0, true);
}

/* Edge: include_usage on a translated Gemini stream (usage only on the
 * last frame) yields one usage chunk before [DONE]. */
Test(providers_e2e, stream_gemini_include_usage)
{
	start(&(struct setup){.oa_args = S503, .an_args = S529});
	struct h_resp *r = post(
	    CHAT, MAIN_BODY(",\"stream\":true,"
	                    "\"stream_options\":{\"include_usage\":true}"));
	assert_stream(r, "gemini", "gemini", true);
}

/* Edge: an Anthropic in-stream error event before any content falls back
 * to Gemini and the client sees one clean stream. */
Test(providers_e2e, anthropic_stream_error_event_falls_back)
{
	const char *const se[] = {"--mode", "stream-error", NULL};

	start(&(struct setup){.oa_args = S503, .an_args = se});
	struct h_resp *r = post(CHAT, MAIN_BODY(",\"stream\":true"));
	assert_stream(r, "gemini", "gemini", false);
	cr_assert_eq(h_mock_stat(&an, "requests"), 1);
	cr_assert_eq(h_mock_stat(&ge, "requests"), 1);
	cr_assert_null(strstr(r->body, "overloaded"), "error leaked: %s",
	               r->body);
}

/* Edge: Azure gets its deployment path, api-version query and api-key
 * header (no bearer), and its answer passes through. */
Test(providers_e2e, azure_path_and_api_key)
{
	start(&(struct setup){0});
	struct h_resp *r =
	    post(CHAT, "{\"model\":\"azg\"," HI ",\"num_retries\":0}");
	assert_completion(r, "azure", "azure");
	const char *q = mock_req(&az, 0);
	cr_assert_str_eq(h_json(q, "path"),
	                 "/openai/deployments/dep1/chat/completions"
	                 "?api-version=2024-10-21",
	                 "%s", q);
	const char *k = h_json(q, "headers.api-key");
	cr_assert(k && strcmp(k, SECRET) == 0, "api-key: %s", q);
	cr_assert_null(h_json(q, "headers.authorization"), "bearer sent: %s",
	               q);
	cr_assert_null(body_field(q, "num_retries"), "forwarded: %s", q);
}

/* Edge: Azure's empty prompt_filter_results opener chunk is dropped, the
 * client's stream starts with content. */
Test(providers_e2e, azure_stream_drops_filter_chunk)
{
	start(&(struct setup){0});
	struct h_resp *r = post(CHAT, "{\"model\":\"azg\"," HI
	                              ",\"stream\":true,\"stream_options\":{"
	                              "\"include_usage\":true}}");
	assert_stream(r, "azure", "azure", true);
	cr_assert_null(strstr(r->body, "prompt_filter_results"),
	               "filter chunk reached the client: %s", r->body);
}

/* Edge: an Anthropic 400 invalid_request_error reaches the client as an
 * OpenAI 400 error with Anthropic's message, without fallback. */
Test(providers_e2e, anthropic_400_rewritten_openai_shape)
{
	const char *const a400[] = {
	    "--mode", "status",    "--status",
	    "400",    "--message", "messages: roles must alternate zork",
	    NULL};

	start(&(struct setup){.an_args = a400,
	                      .fallbacks =
	                          "fallbacks = ( { group = \"claude\"; "
	                          "to = [ \"gem\" ]; } );"});
	struct h_resp *r = post(CHAT, "{\"model\":\"claude\"," MSGS "}");
	assert_error(r, 400);
	const char *m = h_json(r->body, "error.message");
	cr_assert(strstr(m, "messages: roles must alternate zork"),
	          "message lost: %s", r->body);
	cr_assert_str_eq(h_json(r->body, "error.type"), "invalid_request_error",
	                 "%s", r->body);
	cr_assert_null(h_json(r->body, "type"), "anthropic shape: %s", r->body);
	cr_assert_eq(h_mock_stat(&an, "requests"), 1);
	cr_assert_eq(h_mock_stat(&ge, "requests"), 0, "bad request fell back");
}

/* Edge: Anthropic 529 overloaded is transient, retried num_retries times
 * before falling back. */
Test(providers_e2e, anthropic_529_retried_per_num_retries)
{
	start(&(struct setup){.an_args = S529,
	                      .fallbacks =
	                          "fallbacks = ( { group = \"claude\"; "
	                          "to = [ \"gem\" ]; } );"});
	struct h_resp *r =
	    post(CHAT, "{\"model\":\"claude\"," MSGS ",\"num_retries\":2}");
	assert_completion(r, "gemini", "gemini");
	cr_assert_eq(h_mock_stat(&an, "requests"), 3,
	             "anthropic requests %ld, want 1 + 2 retries",
	             h_mock_stat(&an, "requests"));
	const char *a = h_header(r, "x-llmfd-attempts");
	cr_assert(a && atol(a) == 4, "x-llmfd-attempts %s", a ? a : "(none)");
}

/* Edge: a Gemini 429 RESOURCE_EXHAUSTED is rate-limited: no retry, the
 * next deployment of the group answers. */
Test(providers_e2e, gemini_429_next_deployment_no_retry)
{
	const char *const g429[] = {"--mode", "status", "--status", "429",
	                            NULL};
	struct h_mock ge2;

	mock(&ge2, "gemini2", NULL);
	start(&(struct setup){
	    .ge_args = g429,
	    .more_deploys =
	        h_fmt(",\n  { name = \"ge2\"; group = \"gem\"; "
	              "provider = \"gemini\";\n    base_url = "
	              "\"http://127.0.0.1:%d\"; api_key = \"$TEST_KEY\";\n"
	              "    model = \"gemini-y\"; }",
	              ge2.port)});
	struct h_resp *r =
	    post(CHAT, "{\"model\":\"gem\"," MSGS ",\"num_retries\":2}");
	assert_completion(r, "gemini2", "gemini");
	cr_assert_str_eq(h_header(r, "x-llmfd-deployment"), "ge2");
	cr_assert_eq(h_mock_stat(&ge, "requests"), 1,
	             "rate-limited deployment retried: %ld requests",
	             h_mock_stat(&ge, "requests"));
	cr_assert_eq(h_mock_stat(&ge2, "requests"), 1);
}

static const char *const AZ_CF[] = {"--mode", "status",       "--status",
                                    "400",    "--error-code", "content_filter",
                                    NULL};

/* Edge: an Azure content_filter 400 follows content_policy_fallbacks. */
Test(providers_e2e, azure_content_filter_follows_policy_fallback)
{
	start(&(struct setup){
	    .az_args = AZ_CF,
	    .fallbacks = "fallbacks = ( );\ncontent_policy_fallbacks = ( { "
	                 "group = \"azg\"; to = [ \"claude\" ]; } );"});
	struct h_resp *r =
	    post(CHAT, "{\"model\":\"azg\"," MSGS ",\"num_retries\":2}");
	assert_completion(r, "anthropic", "anthropic");
	cr_assert_eq(h_mock_stat(&az, "requests"), 1, "content filter retried");
	cr_assert_eq(h_mock_stat(&an, "requests"), 1);
}

/* Edge: an Azure content_filter 400 without content_policy_fallbacks is
 * returned to the client as a 400 naming content_filter. */
Test(providers_e2e, azure_content_filter_without_fallback_is_400)
{
	start(
	    &(struct setup){.az_args = AZ_CF, .fallbacks = "fallbacks = ( );"});
	struct h_resp *r =
	    post(CHAT, "{\"model\":\"azg\"," MSGS ",\"num_retries\":2}");
	assert_error(r, 400);
	const char *code = h_json(r->body, "error.code");
	cr_assert(code && strcmp(code, "content_filter") == 0, "error.code: %s",
	          r->body);
	cr_assert_eq(h_mock_stat(&az, "requests"), 1, "content filter retried");
	cr_assert_eq(h_mock_stat(&an, "requests"), 0);
}

/* Edge: Anthropic's "prompt is too long" 400 is a context-window error and
 * follows context_window_fallbacks. */
Test(providers_e2e, anthropic_context_overflow_follows_cw_fallback)
{
	const char *const tl[] = {
	    "--mode",    "status",
	    "--status",  "400",
	    "--message", "prompt is too long: 250000 tokens > 200000 maximum",
	    NULL};

	start(&(struct setup){
	    .an_args = tl,
	    .fallbacks = "fallbacks = ( );\ncontext_window_fallbacks = ( { "
	                 "group = \"claude\"; to = [ \"gem\" ]; } );"});
	struct h_resp *r =
	    post(CHAT, "{\"model\":\"claude\"," MSGS ",\"num_retries\":2}");
	assert_completion(r, "gemini", "gemini");
	cr_assert_eq(h_mock_stat(&an, "requests"), 1, "context error retried");
	cr_assert_eq(h_mock_stat(&ge, "requests"), 1);
}

/* Edge: per-deployment headers and params reach Anthropic and Gemini
 * upstreams, and a request's own temperature wins over params. */
Test(providers_e2e, deployment_headers_and_params_reach_upstream)
{
	start(&(struct setup){.an_extra = "headers = ( \"X-Extra: one\" ); "
	                                  "params = { temperature = 0.3; };",
	                      .ge_extra = "headers = ( \"X-Extra: one\" ); "
	                                  "params = { temperature = 0.3; };"});
	assert_completion(post(CHAT, "{\"model\":\"claude\"," MSGS "}"),
	                  "anthropic", "anthropic");
	assert_completion(
	    post(CHAT, "{\"model\":\"claude\"," MSGS ",\"temperature\":0.7}"),
	    "anthropic", "anthropic");
	assert_completion(post(CHAT, "{\"model\":\"gem\"," MSGS "}"), "gemini",
	                  "gemini");
	assert_completion(
	    post(CHAT, "{\"model\":\"gem\"," MSGS ",\"temperature\":0.7}"),
	    "gemini", "gemini");

	const char *q = mock_req(&an, 0);
	const char *x = h_json(q, "headers.x-extra");
	cr_assert(x && strcmp(x, "one") == 0, "X-Extra: %s", q);
	const char *t = body_field(q, "temperature");
	cr_assert(t && atof(t) == 0.3, "params temperature: %s", q);
	q = mock_req(&an, 1);
	t = body_field(q, "temperature");
	cr_assert(t && atof(t) == 0.7, "request temperature lost: %s", q);

	q = mock_req(&ge, 0);
	x = h_json(q, "headers.x-extra");
	cr_assert(x && strcmp(x, "one") == 0, "X-Extra: %s", q);
	t = body_field(q, "generationConfig.temperature");
	cr_assert(t && atof(t) == 0.3, "params temperature: %s", q);
	q = mock_req(&ge, 1);
	t = body_field(q, "generationConfig.temperature");
	cr_assert(t && atof(t) == 0.7, "request temperature lost: %s", q);
	cr_assert_null(body_field(q, "temperature"), "untranslated: %s", q);
}

/* Assert r is an OpenAI embeddings list of n vectors. */
static void
assert_embeddings(const struct h_resp *r, int n, const char *prov)
{
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert(h_json_valid(r->body), "%s", h_desc(r));
	cr_assert_str_eq(h_json(r->body, "object"), "list", "%s", h_desc(r));
	cr_assert_eq(h_json_count(r->body, "data"), n, "%s", h_desc(r));
	for (int i = 0; i < n; i++) {
		const char *o = h_json(r->body, h_fmt("data.%d.object", i));
		cr_assert(o && strcmp(o, "embedding") == 0, "%s", h_desc(r));
		cr_assert_eq(
		    h_json_long(r->body, h_fmt("data.%d.index", i), -1), i,
		    "%s", h_desc(r));
		cr_assert_gt(
		    h_json_count(r->body, h_fmt("data.%d.embedding", i)), 0,
		    "%s", h_desc(r));
	}
	const char *p = h_header(r, "x-llmfd-provider");
	cr_assert(p && strcmp(p, prov) == 0, "x-llmfd-provider '%s', want '%s'",
	          p ? p : "(none)", prov);
}

/* Edge: embeddings fall back from an OpenAI 503 to Gemini embedContent
 * (string) and batchEmbedContents (array), translated to OpenAI lists. */
Test(providers_e2e, embeddings_fall_back_to_gemini)
{
	start(&(struct setup){.oa_args = S503});
	struct h_resp *r =
	    post(EMBED, "{\"model\":\"main\",\"input\":\"hello\","
	                "\"num_retries\":0,"
	                "\"fallbacks\":[\"gem\"]}");
	assert_embeddings(r, 1, "gemini");
	cr_assert_eq(h_mock_stat(&oa, "requests"), 1);
	const char *q = mock_req(&ge, 0);
	cr_assert_str_eq(h_json(q, "path"),
	                 "/v1beta/models/gemini-x:embedContent", "%s", q);
	const char *k = h_json(q, "headers.x-goog-api-key");
	cr_assert(k && strcmp(k, SECRET) == 0, "x-goog-api-key: %s", q);
	cr_assert_str_eq(body_field(q, "content.parts.0.text"), "hello", "%s",
	                 q);

	r = post(EMBED, "{\"model\":\"main\",\"input\":[\"a\",\"b\"],"
	                "\"num_retries\":0,\"fallbacks\":[\"gem\"]}");
	assert_embeddings(r, 2, "gemini");
	q = mock_req(&ge, 1);
	cr_assert_str_eq(h_json(q, "path"),
	                 "/v1beta/models/gemini-x:batchEmbedContents", "%s", q);
	cr_assert_eq(h_json_count(h_json(q, "body"), "requests"), 2, "%s", q);
	cr_assert_str_eq(body_field(q, "requests.1.content.parts.0.text"), "b",
	                 "%s", q);
}

/* Edge: Azure embeddings go to the deployment's embeddings path with the
 * api-key header. */
Test(providers_e2e, embeddings_azure_path)
{
	start(&(struct setup){0});
	struct h_resp *r =
	    post(EMBED, "{\"model\":\"azg\",\"input\":[\"a\",\"b\"]}");
	assert_embeddings(r, 2, "azure");
	const char *q = mock_req(&az, 0);
	cr_assert_str_eq(h_json(q, "path"),
	                 "/openai/deployments/dep1/embeddings"
	                 "?api-version=2024-10-21",
	                 "%s", q);
	const char *k = h_json(q, "headers.api-key");
	cr_assert(k && strcmp(k, SECRET) == 0, "api-key: %s", q);
}

/* Edge: /v1/models lists every group with its deployments and their
 * providers. */
Test(providers_e2e, models_lists_groups_with_deployments)
{
	static const char *const want[][3] = {{"main", "oa", "openai"},
	                                      {"claude", "an", "anthropic"},
	                                      {"gem", "ge", "gemini"},
	                                      {"azg", "az", "azure"}};

	start(&(struct setup){0});
	struct h_resp *r = h_unix("GET", "/v1/models", NULL);
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert(h_json_valid(r->body), "%s", h_desc(r));
	cr_assert_str_eq(h_json(r->body, "object"), "list");
	int n = h_json_count(r->body, "data");
	for (size_t w = 0; w < sizeof(want) / sizeof(want[0]); w++) {
		bool found = false;
		for (int i = 0; i < n && !found; i++) {
			const char *id =
			    h_json(r->body, h_fmt("data.%d.id", i));
			if (!id || strcmp(id, want[w][0]) != 0)
				continue;
			found = true;
			cr_assert_str_eq(
			    h_json(r->body, h_fmt("data.%d.object", i)),
			    "model");
			cr_assert_eq(
			    h_json_count(r->body,
			                 h_fmt("data.%d.deployments", i)),
			    1, "%s", r->body);
			cr_assert_str_eq(
			    h_json(r->body,
			           h_fmt("data.%d.deployments.0.name", i)),
			    want[w][1], "%s", r->body);
			cr_assert_str_eq(
			    h_json(r->body,
			           h_fmt("data.%d.deployments.0.provider", i)),
			    want[w][2], "%s", r->body);
		}
		cr_assert(found, "group %s missing: %s", want[w][0], r->body);
	}
}

/* Edge: a Gemini in-stream {"error":...} frame before content falls back
 * to Anthropic and the client sees one clean stream. */
Test(providers_e2e, gemini_stream_error_frame_falls_back)
{
	const char *const se[] = {"--mode", "stream-error", NULL};

	start(&(struct setup){.ge_args = se,
	                      .fallbacks = "fallbacks = ( { group = \"gem\"; "
	                                   "to = [ \"claude\" ]; } );"});
	struct h_resp *r =
	    post(CHAT, "{\"model\":\"gem\"," MSGS ",\"num_retries\":0,"
	               "\"stream\":true}");
	assert_stream(r, "anthropic", "anthropic", false);
	cr_assert_eq(h_mock_stat(&ge, "requests"), 1);
	cr_assert_eq(h_mock_stat(&an, "requests"), 1);
}

/* Edge: Gemini's "input token count ... exceeds" 400 is a context-window
 * error and follows context_window_fallbacks. */
Test(providers_e2e, gemini_context_overflow_follows_cw_fallback)
{
	const char *const tl[] = {
	    "--mode",
	    "status",
	    "--status",
	    "400",
	    "--message",
	    "The input token count (300000) exceeds the maximum number of "
	    "tokens allowed (1048576).",
	    NULL};

	start(&(struct setup){
	    .ge_args = tl,
	    .fallbacks = "fallbacks = ( );\ncontext_window_fallbacks = ( { "
	                 "group = \"gem\"; to = [ \"claude\" ]; } );"});
	struct h_resp *r =
	    post(CHAT, "{\"model\":\"gem\"," MSGS ",\"num_retries\":2}");
	assert_completion(r, "anthropic", "anthropic");
	cr_assert_eq(h_mock_stat(&ge, "requests"), 1, "context error retried");
}

/* Edge: an embeddings fallback chain through Anthropic (no embeddings
 * API) skips it without a request and is answered by Gemini. */
Test(providers_e2e, embeddings_skip_anthropic_in_chain)
{
	start(&(struct setup){.oa_args = S503});
	struct h_resp *r =
	    post(EMBED, "{\"model\":\"main\",\"input\":\"hello\","
	                "\"num_retries\":0,"
	                "\"fallbacks\":[\"claude\",\"gem\"]}");
	assert_embeddings(r, 1, "gemini");
	cr_assert_eq(h_mock_stat(&an, "requests"), 0);
	cr_assert_eq(h_mock_stat(&ge, "requests"), 1);
}

/* Edge: embeddings asked of a group whose only provider has no embeddings
 * API is a 400 naming why, the deployment is not contacted and its health
 * is untouched (no failure, no in-flight drift). */
Test(providers_e2e, embeddings_unsupported_everywhere_is_400)
{
	start(&(struct setup){0});
	struct h_resp *r =
	    post(EMBED, "{\"model\":\"claude\",\"input\":\"x\"}");
	cr_assert_eq(r->status, 400, "%s", h_desc(r));
	cr_assert_str_eq(h_json(r->body, "error.code"), "unsupported_request");
	cr_assert(strstr(h_json(r->body, "error.message"), "embeddings"), "%s",
	          r->body);
	cr_assert_eq(h_mock_stat(&an, "requests"), 0);
	char *out;
	cr_assert_eq(h_run(&out, h_bin("llmfctl"), "-c", h_conf(), "status",
	                   "--json", NULL),
	             0);
	cr_assert(strstr(out, "\"failures\":0"), "%s", out);
	cr_assert(!strstr(out, "\"inflight\":-"), "%s", out);
}
