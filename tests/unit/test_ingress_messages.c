/* Unit tests for worker/ingress/messages.c (Anthropic Messages ingress).
 * Golden files under tests/data/messages/: requests (to_chat_X.in.json ->
 * canonical chat to_chat_X.out.json), canonical replies (reply_X.json ->
 * Messages reply reply_X.out.json), canonical chunk sequences (stream_X.chunks,
 * one "data:" line per chunk, fed one chunk at a time -> the exact SSE text
 * stream_X.out; "[DONE]" calls msgs_stream_done, "!fail STATUS MSG" calls
 * msgs_stream_fail, "!ping" msgs_ping) and error bodies (err_X.json).
 * JSON goldens are compared semantically; SSE goldens byte for byte.
 * LLMFD_GOLDEN_UPDATE=1 rewrites the expected files from the output. Every
 * Messages reply, event and error produced here also passes a structural
 * check of the shapes in INGRESS.md §1.3-1.5 (msgs_shape_*), which is
 * itself checked to reject known-bad bodies. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/sse.h"
#include "worker/ingress.h"
#include "worker/ingress/messages.h"
#include "worker/provider.h"

static struct json req;
static struct buf out;
static struct msgs_stream st;
static char *text;

/* A fresh stream state. */
static void
setup(void)
{
	msgs_stream_init(&st);
}

/* Free what a test built. */
static void
teardown(void)
{
	json_free(&req);
	buf_free(&out);
	msgs_stream_free(&st);
	free(text);
	text = NULL;
}

TestSuite(ingress_messages, .init = setup, .fini = teardown);

/* ---- files and canonical JSON ---- */

/* Path of a data file. */
static const char *
data_path(const char *rel)
{
	static char p[1024];
	const char *dir = getenv("LLMFD_TESTDATA");

	snprintf(p, sizeof p, "%s/messages/%s",
	         dir && dir[0] ? dir : "tests/data", rel);
	return p;
}

/* Read a whole data file (NUL-terminated, heap); fails the test if absent. */
static char *
slurp(const char *rel, size_t *len)
{
	FILE *f = fopen(data_path(rel), "rb");
	char *s;
	long n;

	cr_assert(f != NULL, "cannot open %s (run from the repo root)",
	          data_path(rel));
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	s = malloc((size_t)n + 1);
	cr_assert(s != NULL);
	cr_assert(fread(s, 1, (size_t)n, f) == (size_t)n);
	s[n] = '\0';
	fclose(f);
	if (len)
		*len = (size_t)n;
	return s;
}

/* Whether expected files are being rewritten. */
static int
golden_update(void)
{
	const char *u = getenv("LLMFD_GOLDEN_UPDATE");

	return u && strcmp(u, "1") == 0;
}

/* Write got to an expected file (golden update mode). */
static void
golden_write(const char *rel, const char *got, size_t n)
{
	FILE *f = fopen(data_path(rel), "wb");

	cr_assert(f != NULL);
	fwrite(got, 1, n, f);
	fclose(f);
}

/* Re-serialise value t of j canonically into jw; returns the next token. */
static int
canon(const struct json *j, int t, struct jw *jw)
{
	struct buf k = {0};
	int n = j->tok[t].size, c = t + 1;
	const char *raw;
	size_t rl;

	switch (j->tok[t].type) {
	case JSMN_OBJECT:
		jw_obj(jw);
		for (int i = 0; i < n; i++) {
			buf_reset(&k);
			json_str_buf(j, c, &k);
			jw_key(jw, buf_cstr(&k));
			c = canon(j, c + 1, jw);
		}
		jw_obj_end(jw);
		break;
	case JSMN_ARRAY:
		jw_arr(jw);
		for (int i = 0; i < n; i++)
			c = canon(j, c, jw);
		jw_arr_end(jw);
		break;
	case JSMN_STRING:
		json_str_buf(j, t, &k);
		jw_str(jw, k.data ? k.data : "", k.len);
		break;
	default:
		raw = json_raw(j, t, &rl);
		jw_raw(jw, raw, rl);
		break;
	}
	buf_free(&k);
	return json_next(j, t);
}

/* Canonical text of a JSON document (heap), or NULL if it does not parse. */
static char *
canon_text(const char *s, size_t n)
{
	struct json j = {0};
	struct buf b = {0};
	struct jw jw;

	if (json_parse(&j, s, n) == -1) {
		json_free(&j);
		return NULL;
	}
	jw_init(&jw, &b);
	canon(&j, 0, &jw);
	json_free(&j);
	buf_addc(&b, '\0');
	return b.data;
}

/* Compare JSON got with the expected file, semantically. */
static void
expect_json(const char *rel, const char *got, size_t n)
{
	char *g, *w, *want;

	g = canon_text(got, n);
	cr_assert(g != NULL, "output is not JSON: %.*s", (int)n, got);
	if (golden_update())
		golden_write(rel, g, strlen(g));
	want = slurp(rel, NULL);
	w = canon_text(want, strlen(want));
	cr_assert(w != NULL, "%s is not JSON", rel);
	cr_assert(strcmp(g, w) == 0, "%s mismatch\n got: %s\nwant: %s", rel, g,
	          w);
	free(g);
	free(w);
	free(want);
}

/* Parse JSON text s into req (kept in text). */
static void
parse_req(const char *s, size_t n)
{
	free(text);
	text = malloc(n + 1);
	cr_assert(text != NULL);
	memcpy(text, s, n);
	text[n] = '\0';
	cr_assert(json_parse(&req, text, n) == 0, "not JSON: %s", text);
}

/* ---- structural checks of Messages shapes (INGRESS.md §1.3-1.5) ---- */

/* Whether key of object o is a string (or null when nullable). */
static int
is_str(const struct json *j, int o, const char *key, int nullable)
{
	int t = json_get(j, o, key);

	return json_type(j, t) == JSMN_STRING ||
	       (nullable && t >= 0 && json_is_null(j, t));
}

/* Whether key of object o is a non-negative integer. */
static int
is_count(const struct json *j, int o, const char *key)
{
	long long v;

	return json_int(j, json_get(j, o, key), &v) == 0 && v >= 0;
}

/* Whether stop_reason token t is one of Anthropic's values (or null). */
static int
is_stop_reason(const struct json *j, int t, int nullable)
{
	static const char *const v[] = {"end_turn",
	                                "max_tokens",
	                                "stop_sequence",
	                                "tool_use",
	                                "pause_turn",
	                                "refusal",
	                                "model_context_window_exceeded"};

	if (nullable && json_is_null(j, t))
		return 1;
	for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
		if (json_eq(j, t, v[i]))
			return 1;
	return 0;
}

/* Whether id matches ^[a-zA-Z0-9_-]+$. */
static int
is_tool_id(const struct json *j, int t)
{
	char s[256];
	int n = json_str(j, t, s, sizeof s);

	if (n <= 0 || (size_t)n >= sizeof s)
		return 0;
	return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	                 "0123456789_-") == (size_t)n;
}

/* Whether b is a reply content block (text, thinking, tool_use); with
 * start set, as in content_block_start (empty text, input {}). */
static int
is_block(const struct json *j, int b, int start)
{
	int ty = json_get(j, b, "type"), in = json_get(j, b, "input");

	if (json_eq(j, ty, "text"))
		return is_str(j, b, "text", 0) &&
		       (!start || json_eq(j, json_get(j, b, "text"), ""));
	if (json_eq(j, ty, "thinking"))
		return is_str(j, b, "thinking", 0) &&
		       is_str(j, b, "signature", 0);
	if (json_eq(j, ty, "tool_use"))
		return is_tool_id(j, json_get(j, b, "id")) &&
		       is_str(j, b, "name", 0) &&
		       json_type(j, in) == JSMN_OBJECT &&
		       (!start || json_size(j, in) == 0);
	return 0;
}

/* Whether usage object u has input_tokens and output_tokens. */
static int
is_usage(const struct json *j, int u)
{
	return json_type(j, u) == JSMN_OBJECT &&
	       is_count(j, u, "input_tokens") &&
	       is_count(j, u, "output_tokens");
}

/* Whether message m is a Message (§1.3); streaming: from message_start. */
static int
msgs_shape_message(const struct json *j, int m, int streaming)
{
	int c = json_get(j, m, "content"), n = json_size(j, c);

	if (json_type(j, m) != JSMN_OBJECT || !is_str(j, m, "id", 0) ||
	    !json_eq(j, json_get(j, m, "type"), "message") ||
	    !json_eq(j, json_get(j, m, "role"), "assistant") ||
	    !is_str(j, m, "model", 0) || json_type(j, c) != JSMN_ARRAY ||
	    !is_stop_reason(j, json_get(j, m, "stop_reason"), streaming) ||
	    !is_str(j, m, "stop_sequence", 1) ||
	    !is_usage(j, json_get(j, m, "usage")))
		return 0;
	if (streaming && n != 0)
		return 0;
	for (int i = 0; i < n; i++)
		if (!is_block(j, json_at(j, c, i), 0))
			return 0;
	return 1;
}

/* Whether o is an error object {type, message} of a known type. */
static int
is_error_obj(const struct json *j, int o)
{
	static const char *const v[] = {
	    "invalid_request_error", "authentication_error",
	    "billing_error",         "permission_error",
	    "not_found_error",       "request_too_large",
	    "rate_limit_error",      "api_error",
	    "timeout_error",         "overloaded_error"};
	int t = json_get(j, o, "type");

	for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
		if (json_eq(j, t, v[i]))
			return is_str(j, o, "message", 0);
	return 0;
}

/* Whether an error body is Anthropic-shaped (§1.5): attempts only at the
 * top level, never inside error. */
static int
msgs_shape_error(const char *s, size_t n)
{
	struct json j = {0};
	int ok = json_parse(&j, s, n) == 0 &&
	         json_eq(&j, json_get(&j, 0, "type"), "error") &&
	         is_error_obj(&j, json_get(&j, 0, "error")) &&
	         json_get(&j, json_get(&j, 0, "error"), "attempts") < 0 &&
	         (json_get(&j, 0, "request_id") < 0 ||
	          is_str(&j, 0, "request_id", 0)) &&
	         (json_get(&j, 0, "attempts") < 0 ||
	          json_type(&j, json_get(&j, 0, "attempts")) == JSMN_ARRAY);

	json_free(&j);
	return ok;
}

/* Stream checker state: §1.4's order, one open block at a time. */
struct shape {
	int phase; /* 0 before message_start, 1 blocks, 2 after delta, 3 end */
	int open;  /* -1 none, else the open block index */
	int next;  /* next block index */
	char kind[16];
};

/* Whether delta d fits the open block's kind. */
static int
shape_delta(const struct json *j, int d, const char *kind)
{
	int ty = json_get(j, d, "type");

	if (json_eq(j, ty, "text_delta"))
		return strcmp(kind, "text") == 0 && is_str(j, d, "text", 0);
	if (json_eq(j, ty, "thinking_delta"))
		return strcmp(kind, "thinking") == 0 &&
		       is_str(j, d, "thinking", 0);
	if (json_eq(j, ty, "input_json_delta"))
		return strcmp(kind, "tool_use") == 0 &&
		       is_str(j, d, "partial_json", 0);
	return 0;
}

/* Check one content_block_* event against the state. */
static int
shape_block(struct shape *sh, const struct json *j, const char *name)
{
	long long idx;
	int cb = json_get(j, 0, "content_block");

	if (sh->phase != 1 || json_int(j, json_get(j, 0, "index"), &idx) == -1)
		return 0;
	if (strcmp(name, "content_block_start") == 0) {
		if (sh->open != -1 || idx != sh->next || !is_block(j, cb, 1))
			return 0;
		sh->open = (int)idx;
		sh->next++;
		json_str(j, json_get(j, cb, "type"), sh->kind, sizeof sh->kind);
		return 1;
	}
	if (idx != sh->open)
		return 0;
	if (strcmp(name, "content_block_stop") == 0) {
		sh->open = -1;
		return 1;
	}
	return shape_delta(j, json_get(j, 0, "delta"), sh->kind);
}

/* Check one event (name, data) against the state. */
static int
shape_event(struct shape *sh, const char *name, const struct json *j)
{
	int d = json_get(j, 0, "delta");

	if (!json_eq(j, json_get(j, 0, "type"), name) || sh->phase == 3)
		return 0;
	if (strcmp(name, "ping") == 0)
		return 1;
	if (strcmp(name, "error") == 0) {
		sh->phase = 3;
		return is_error_obj(j, json_get(j, 0, "error"));
	}
	if (strcmp(name, "message_start") == 0) {
		sh->phase = sh->phase == 0 ? 1 : 9;
		return msgs_shape_message(j, json_get(j, 0, "message"), 1);
	}
	if (strncmp(name, "content_block_", 14) == 0)
		return shape_block(sh, j, name);
	if (strcmp(name, "message_delta") == 0) {
		if (sh->phase != 1 || sh->open != -1)
			return 0;
		sh->phase = 2;
		return is_stop_reason(j, json_get(j, d, "stop_reason"), 0) &&
		       is_str(j, d, "stop_sequence", 1) &&
		       is_count(j, json_get(j, 0, "usage"), "output_tokens");
	}
	if (strcmp(name, "message_stop") == 0 && sh->phase == 2) {
		sh->phase = 3;
		return 1;
	}
	return 0;
}

/* Whether SSE text s is a well-formed Messages event stream: every event
 * "event: X\ndata: {type:X,...}\n\n", in §1.4's order; complete says it
 * must end with message_stop (else with an error event). */
static int
msgs_shape_stream(const char *s, int complete)
{
	struct shape sh = {.open = -1};
	struct json j = {0};
	char name[64];
	const char *p = s, *nl, *end;
	int ok = 1, errored = 0;

	while (ok && *p) {
		nl = strchr(p, '\n');
		if (strncmp(p, "event: ", 7) != 0 || nl == NULL ||
		    (size_t)(nl - p - 7) >= sizeof name ||
		    strncmp(nl + 1, "data: ", 6) != 0 ||
		    (end = strstr(nl + 7, "\n\n")) == NULL) {
			ok = 0;
			break;
		}
		snprintf(name, sizeof name, "%.*s", (int)(nl - p - 7), p + 7);
		ok = memchr(nl + 7, '\n', (size_t)(end - nl - 7)) == NULL &&
		     json_parse(&j, nl + 7, (size_t)(end - nl - 7)) == 0 &&
		     shape_event(&sh, name, &j);
		errored = strcmp(name, "error") == 0;
		p = end + 2;
	}
	json_free(&j);
	return ok && sh.phase == 3 && (complete ? !errored : errored);
}

/* Whether a Messages reply body is a complete Message. */
static int
msgs_shape_reply(const char *s, size_t n)
{
	struct json j = {0};
	int ok = json_parse(&j, s, n) == 0 && msgs_shape_message(&j, 0, 0);

	json_free(&j);
	return ok;
}

/* ---- drivers ---- */

/* Translate rel.in.json and compare with rel.out.json. */
static void
req_golden(const char *rel)
{
	char in[256], want[256], err[256];
	char *s;
	size_t n;

	snprintf(in, sizeof in, "%s.in.json", rel);
	snprintf(want, sizeof want, "%s.out.json", rel);
	s = slurp(in, &n);
	parse_req(s, n);
	free(s);
	buf_reset(&out);
	cr_assert(msgs_to_chat(&req, &out, err, sizeof err) == 0, "%s: %s", rel,
	          err);
	expect_json(want, out.data, out.len);
}

/* Translate an inline request; returns rc, reason in err. */
static int
req_inline(const char *body, char *err, size_t errsz)
{
	parse_req(body, strlen(body));
	buf_reset(&out);
	return msgs_to_chat(&req, &out, err, errsz);
}

/* Translate rel.json and compare with rel.out.json. */
static void
resp_golden(const char *rel)
{
	char in[256], want[256];
	char *s;
	size_t n;

	snprintf(in, sizeof in, "%s.json", rel);
	snprintf(want, sizeof want, "%s.out.json", rel);
	s = slurp(in, &n);
	buf_reset(&out);
	cr_assert(msgs_reply(s, n, &out) == 0, "%s not understood", rel);
	free(s);
	cr_assert(msgs_shape_reply(out.data, out.len), "%s: bad shape: %.*s",
	          rel, (int)out.len, out.data);
	expect_json(want, out.data, out.len);
}

/* Feed state for the SSE callback. */
struct feed {
	int rc;
	int failed;
};

/* SSE callback: one chunk (or directive) to the encoder. */
static int
feed_chunk(void *arg, const char *ev, size_t elen, const char *data,
           size_t dlen)
{
	struct feed *f = arg;
	char msg[256];
	int status = 0, off = 0;

	(void)ev;
	(void)elen;
	if (dlen == 6 && memcmp(data, "[DONE]", 6) == 0)
		msgs_stream_done(&st, &out);
	else if (dlen == 5 && memcmp(data, "!ping", 5) == 0)
		msgs_ping(&out);
	else if (dlen > 6 && memcmp(data, "!fail ", 6) == 0) {
		snprintf(msg, sizeof msg, "%.*s", (int)dlen, data);
		sscanf(msg, "!fail %d %n", &status, &off);
		msgs_stream_fail(&st, status, msg + off, &out);
		f->failed = 1;
	} else if ((f->rc = msgs_stream_chunk(&st, data, dlen, &out)) != 0)
		return 1;
	return 0;
}

/* Feed rel.chunks one chunk at a time; compare with rel.out
 * byte for byte and check the stream's shape. */
static void
stream_golden(const char *rel)
{
	char in[256], want[256];
	char *s, *w;
	size_t n;
	struct sse sse = {0};
	struct feed f = {0};

	snprintf(in, sizeof in, "%s.chunks", rel);
	snprintf(want, sizeof want, "%s.out", rel);
	s = slurp(in, &n);
	buf_reset(&out);
	sse_feed(&sse, s, n, feed_chunk, &f);
	sse_free(&sse);
	free(s);
	cr_assert(f.rc == 0, "%s: a chunk was not understood", rel);
	if (golden_update())
		golden_write(want, buf_cstr(&out), out.len);
	w = slurp(want, NULL);
	cr_assert_str_eq(buf_cstr(&out), w, "%s mismatch", rel);
	free(w);
	cr_assert(msgs_shape_stream(buf_cstr(&out), !f.failed),
	          "%s: bad event stream shape", rel);
}

/* Write the error body for status into out, check its shape, and compare
 * with rel.json. */
static void
error_golden(const char *rel, int status, const char *code, const char *msg,
             const char *rid, const char *trail)
{
	char want[256];

	snprintf(want, sizeof want, "%s.json", rel);
	buf_reset(&out);
	msgs_error(&out, status, code, msg, rid, trail,
	           trail ? strlen(trail) : 0);
	cr_assert(msgs_shape_error(out.data, out.len), "%s: bad shape: %s", rel,
	          buf_cstr(&out));
	expect_json(want, out.data, out.len);
}

/* The error message of an error body. */
static char *
error_message(void)
{
	static char m[512];
	struct json j = {0};

	cr_assert(json_parse(&j, out.data, out.len) == 0);
	json_str(&j, json_path(&j, 0, "error.message"), m, sizeof m);
	json_free(&j);
	return m;
}

/* ---- requests ---- */

Test(ingress_messages, req_basic)
{
	req_golden("to_chat_basic");
}

Test(ingress_messages, req_claude_code)
{
	req_golden("to_chat_claude_code");
}

Test(ingress_messages, req_media)
{
	req_golden("to_chat_media");
}

Test(ingress_messages, req_prefill)
{
	req_golden("to_chat_prefill");
}

Test(ingress_messages, req_tool_choice_table)
{
	static const struct {
		const char *in, *want;
	} cases[] = {
	    {"{\"type\":\"auto\"}", "\"tool_choice\":\"auto\""},
	    {"{\"type\":\"any\"}", "\"tool_choice\":\"required\""},
	    {"{\"type\":\"none\"}", "\"tool_choice\":\"none\""},
	    {"{\"type\":\"tool\",\"name\":\"f\"}",
	     "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":"
	     "\"f\"}}"},
	    {"{\"type\":\"any\",\"disable_parallel_tool_use\":true}",
	     "\"tool_choice\":\"required\",\"parallel_tool_calls\":false"},
	    {"{\"type\":\"auto\",\"disable_parallel_tool_use\":false}",
	     "\"tool_choice\":\"auto\",\"reasoning"},
	};
	char body[512], err[256];

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		snprintf(body, sizeof body,
		         "{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{"
		         "\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{"
		         "\"name\":\"f\",\"input_schema\":{\"type\":"
		         "\"object\"}}],\"tool_choice\":%s,\"thinking\":{"
		         "\"type\":\"enabled\",\"budget_tokens\":1024}}",
		         cases[i].in);
		cr_assert(req_inline(body, err, sizeof err) == 0, "%s", err);
		cr_assert(strstr(buf_cstr(&out), cases[i].want) != NULL,
		          "%s -> %s", cases[i].in, buf_cstr(&out));
	}
}

Test(ingress_messages, req_thinking_budget_table)
{
	static const struct {
		long budget;
		const char *effort;
	} cases[] = {{1024, "low"},    {4000, "low"},     {8191, "low"},
	             {8192, "medium"}, {10000, "medium"}, {24575, "medium"},
	             {24576, "high"},  {31999, "high"},   {128000, "high"}};
	char body[512], err[256], want[64];

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		snprintf(body, sizeof body,
		         "{\"model\":\"m\",\"max_tokens\":200000,\"messages\":"
		         "[{\"role\":\"user\",\"content\":\"x\"}],\"thinking\":"
		         "{\"type\":\"enabled\",\"budget_tokens\":%ld}}",
		         cases[i].budget);
		cr_assert(req_inline(body, err, sizeof err) == 0, "%s", err);
		snprintf(want, sizeof want, "\"reasoning_effort\":\"%s\"",
		         cases[i].effort);
		cr_assert(strstr(buf_cstr(&out), want) != NULL, "%ld -> %s",
		          cases[i].budget, buf_cstr(&out));
	}
	cr_assert(req_inline("{\"model\":\"m\",\"max_tokens\":5,\"messages\":"
	                     "[{\"role\":\"user\",\"content\":\"x\"}],"
	                     "\"thinking\":{\"type\":\"adaptive\"}}",
	                     err, sizeof err) == 0);
	cr_assert(strstr(buf_cstr(&out), "reasoning_effort") == NULL);
}

Test(ingress_messages, req_only_typed_tools_drop_choice)
{
	char err[256];

	cr_assert(req_inline("{\"model\":\"m\",\"max_tokens\":5,\"messages\":"
	                     "[{\"role\":\"user\",\"content\":\"x\"}],"
	                     "\"tools\":[{\"type\":\"web_search_20250305\","
	                     "\"name\":\"web_search\"}],\"tool_choice\":{"
	                     "\"type\":\"any\",\"disable_parallel_tool_use\":"
	                     "true}}",
	                     err, sizeof err) == 0,
	          "%s", err);
	cr_assert(strstr(buf_cstr(&out), "tool") == NULL, "%s", buf_cstr(&out));
	cr_assert(strstr(buf_cstr(&out), "parallel") == NULL);
}

Test(ingress_messages, req_billing_header_string_system)
{
	char err[256];

	cr_assert(req_inline("{\"model\":\"m\",\"max_tokens\":5,\"system\":"
	                     "\"x-anthropic-billing-header: cc_version=1; "
	                     "cch=2;\\nYou are helpful.\",\"messages\":[{"
	                     "\"role\":\"user\",\"content\":\"x\"}]}",
	                     err, sizeof err) == 0);
	cr_assert(strstr(buf_cstr(&out),
	                 "{\"role\":\"system\",\"content\":\"You are "
	                 "helpful.\"}") != NULL,
	          "%s", buf_cstr(&out));
	cr_assert(req_inline("{\"model\":\"m\",\"max_tokens\":5,\"system\":"
	                     "\"x-anthropic-billing-header: only\","
	                     "\"messages\":[{\"role\":\"user\",\"content\":"
	                     "\"x\"}]}",
	                     err, sizeof err) == 0);
	cr_assert(strstr(buf_cstr(&out), "system") == NULL, "%s",
	          buf_cstr(&out));
	cr_assert(req_inline("{\"model\":\"m\",\"max_tokens\":5,\"system\":"
	                     "\"Keep this.\\nx-anthropic-billing-header: "
	                     "late\",\"messages\":[{\"role\":\"user\","
	                     "\"content\":\"x\"}]}",
	                     err, sizeof err) == 0);
	cr_assert(strstr(buf_cstr(&out), "late") != NULL,
	          "only a first line is stripped");
}

Test(ingress_messages, req_out_unchanged_on_error)
{
	char err[256];

	buf_reset(&out);
	buf_adds(&out, "KEEP");
	parse_req("{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{\"role\":"
	          "\"user\",\"content\":[{\"type\":\"bogus\"}]}]}",
	          strlen("{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{"
	                 "\"role\":\"user\",\"content\":[{\"type\":"
	                 "\"bogus\"}]}]}"));
	cr_assert(msgs_to_chat(&req, &out, err, sizeof err) == -1);
	cr_assert_str_eq(buf_cstr(&out), "KEEP");
}

Test(ingress_messages, req_rejects_bad_requests_with_reason)
{
	static const struct {
		const char *body, *reason;
	} cases[] = {
	    {"[1]", "request body must be a JSON object"},
	    {"{\"max_tokens\":1,\"messages\":[{\"role\":\"user\",\"content\":"
	     "\"x\"}]}",
	     "model: Field required"},
	    {"{\"model\":7,\"max_tokens\":1,\"messages\":[]}",
	     "model: Input should be a non-empty string"},
	    {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
	     "\"x\"}]}",
	     "max_tokens: Field required"},
	    {"{\"model\":\"m\",\"max_tokens\":\"9\",\"messages\":[{\"role\":"
	     "\"user\",\"content\":\"x\"}]}",
	     "max_tokens: Input should be a valid integer"},
	    {"{\"model\":\"m\",\"max_tokens\":0,\"messages\":[{\"role\":"
	     "\"user\",\"content\":\"x\"}]}",
	     "max_tokens: Input should be greater than or equal to 1"},
	    {"{\"model\":\"m\",\"max_tokens\":1}", "messages: Field required"},
	    {"{\"model\":\"m\",\"max_tokens\":1,\"messages\":{}}",
	     "messages: Input should be a valid list"},
	    {"{\"model\":\"m\",\"max_tokens\":1,\"messages\":[]}",
	     "messages: at least one message is required"},
	    {"{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{\"role\":"
	     "\"system\",\"content\":\"x\"}]}",
	     "messages.0.role: Input should be 'user' or 'assistant'"},
	    {"{\"model\":\"m\",\"max_tokens\":1,\"messages\":[\"hi\"]}",
	     "messages.0: Input should be a valid dictionary"},
	    {"{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{\"role\":"
	     "\"user\",\"content\":5}]}",
	     "messages.0.content: Input should be a valid string or list of "
	     "content blocks"},
	    {"{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{\"role\":"
	     "\"user\",\"content\":[{\"type\":\"video\"}]}]}",
	     "messages.0.content.0.type: unsupported content block type "
	     "'video'"},
	    {"{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{\"role\":"
	     "\"user\",\"content\":[{\"text\":\"no type\"}]}]}",
	     "messages.0.content.0: Input should be a content block with a "
	     "type"},
	    {"{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{\"role\":"
	     "\"user\",\"content\":[{\"type\":\"text\"}]}]}",
	     "messages.0.content.0.text: Field required"},
	    {"{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{\"role\":"
	     "\"user\",\"content\":[{\"type\":\"tool_use\",\"id\":\"a\","
	     "\"name\":\"b\",\"input\":{}}]}]}",
	     "messages.0.content.0: tool_use blocks are only allowed in "
	     "assistant turns"},
	    {"{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{\"role\":"
	     "\"assistant\",\"content\":[{\"type\":\"image\",\"source\":{"
	     "\"type\":\"url\",\"url\":\"u\"}}]}]}",
	     "messages.0.content.0: image blocks are not allowed in assistant "
	     "turns"},
	    {"{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{\"role\":"
	     "\"assistant\",\"content\":[{\"type\":\"tool_use\",\"name\":"
	     "\"b\",\"input\":{}}]}]}",
	     "messages.0.content.0: tool_use needs id and name"},
	    {"{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{\"role\":"
	     "\"assistant\",\"content\":[{\"type\":\"tool_use\",\"id\":\"a\","
	     "\"name\":\"b\",\"input\":\"{}\"}]}]}",
	     "messages.0.content.0.input: Input should be a valid "
	     "dictionary"},
	    {"{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{\"role\":"
	     "\"user\",\"content\":[{\"type\":\"tool_result\"}]}]}",
	     "messages.0.content.0.tool_use_id: Field required"},
	    {"{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{\"role\":"
	     "\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":"
	     "\"t\",\"content\":7}]}]}",
	     "messages.0.content.0.content: Input should be a valid string or "
	     "list of content blocks"},
	    {"{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{\"role\":"
	     "\"user\",\"content\":[{\"type\":\"image\",\"source\":{\"type\":"
	     "\"base64\",\"data\":\"x\"}}]}]}",
	     "messages.0.content.0.source: base64 image needs media_type and "
	     "data"},
	    {"{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{\"role\":"
	     "\"user\",\"content\":[{\"type\":\"image\",\"source\":{\"type\":"
	     "\"file\",\"file_id\":\"f\"}}]}]}",
	     "messages.0.content.0.source.type: image source must be "
	     "'base64' or 'url'"},
	    {"{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{\"role\":"
	     "\"user\",\"content\":[{\"type\":\"document\",\"source\":{"
	     "\"type\":\"url\",\"url\":\"https://x/a.pdf\"}}]}]}",
	     "messages.0.content.0.source: document url sources are not "
	     "supported (llmfd does not fetch URLs)"},
	    {"{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{\"role\":"
	     "\"user\",\"content\":[{\"type\":\"document\",\"source\":{"
	     "\"type\":\"base64\",\"media_type\":\"image/png\",\"data\":"
	     "\"x\"}}]}]}",
	     "messages.0.content.0.source: base64 documents must be "
	     "application/pdf with data"},
	    {"{\"model\":\"m\",\"max_tokens\":1,\"system\":5,\"messages\":[{"
	     "\"role\":\"user\",\"content\":\"x\"}]}",
	     "system: Input should be a valid string or list of text blocks"},
	    {"{\"model\":\"m\",\"max_tokens\":1,\"system\":[{\"type\":"
	     "\"image\"}],\"messages\":[{\"role\":\"user\",\"content\":\"x\"}"
	     "]}",
	     "system.0: Input should be a text block"},
	    {"{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{\"role\":"
	     "\"user\",\"content\":\"x\"}],\"tools\":{}}",
	     "tools: Input should be a valid list"},
	    {"{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{\"role\":"
	     "\"user\",\"content\":\"x\"}],\"tools\":[{\"input_schema\":{}}]}",
	     "tools.0.name: Field required"},
	    {"{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{\"role\":"
	     "\"user\",\"content\":\"x\"}],\"tools\":[{\"name\":\"f\"}]}",
	     "tools.0.input_schema: Field required"},
	    {"{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{\"role\":"
	     "\"user\",\"content\":\"x\"}],\"tool_choice\":{\"type\":"
	     "\"sometimes\"}}",
	     "tool_choice.type: Input should be 'auto', 'any', 'tool' or "
	     "'none'"},
	    {"{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{\"role\":"
	     "\"user\",\"content\":\"x\"}],\"tool_choice\":{\"type\":"
	     "\"tool\"}}",
	     "tool_choice.name: Field required"},
	    {"{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{\"role\":"
	     "\"user\",\"content\":\"x\"}],\"tool_choice\":\"auto\"}",
	     "tool_choice: Input should be a valid dictionary"},
	    {"{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{\"role\":"
	     "\"user\",\"content\":\"x\"}],\"temperature\":\"hot\"}",
	     "temperature: Input should be a valid number"},
	    {"{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{\"role\":"
	     "\"user\",\"content\":\"x\"}],\"top_k\":[]}",
	     "top_k: Input should be a valid number"},
	    {"{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{\"role\":"
	     "\"user\",\"content\":\"x\"}],\"stop_sequences\":\"END\"}",
	     "stop_sequences: Input should be a valid list"},
	    {"{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{\"role\":"
	     "\"user\",\"content\":\"x\"}],\"stop_sequences\":[\"a\",1]}",
	     "stop_sequences.1: Input should be a valid string"},
	    {"{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{\"role\":"
	     "\"user\",\"content\":\"x\"}],\"thinking\":{\"type\":"
	     "\"enabled\"}}",
	     "thinking.budget_tokens: Field required"},
	    {"{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{\"role\":"
	     "\"user\",\"content\":\"x\"}],\"thinking\":{\"type\":\"on\"}}",
	     "thinking.type: Input should be 'enabled', 'disabled' or "
	     "'adaptive'"},
	    {"{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{\"role\":"
	     "\"user\",\"content\":\"x\"}],\"thinking\":true}",
	     "thinking: Input should be a valid dictionary"},
	    {"{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{\"role\":"
	     "\"user\",\"content\":\"x\"}],\"metadata\":\"u\"}",
	     "metadata: Input should be a valid dictionary"},
	    {"{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{\"role\":"
	     "\"user\",\"content\":\"x\"}],\"stream\":\"yes\"}",
	     "stream: Input should be a valid boolean"},
	};
	char err[256];

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		cr_assert(req_inline(cases[i].body, err, sizeof err) == -1,
		          "accepted %s", cases[i].body);
		cr_assert_str_eq(err, cases[i].reason, "for %s", cases[i].body);
		cr_assert(out.len == 0);
	}
}

Test(ingress_messages, req_count_tokens_heuristic)
{
	/* 40 bytes of text = 10 tokens, + 3 per message */
	parse_req("{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
	          "\"content\":\"0123456789012345678901234567890123456789\"}"
	          "]}",
	          strlen("{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
	                 "\"content\":\"0123456789012345678901234567890123456"
	                 "789\"}]}"));
	cr_assert_eq(msgs_count_tokens(&req), 13);
	/* system 8 bytes + image + a 1-byte text: ceil(9/4) + 1600 + 3 */
	parse_req("{\"system\":[{\"type\":\"text\",\"text\":\"12345678\"}],"
	          "\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
	          "\"image\",\"source\":{\"type\":\"url\",\"url\":\"u\"}},{"
	          "\"type\":\"text\",\"text\":\"x\"}]}]}",
	          strlen("{\"system\":[{\"type\":\"text\",\"text\":\"12345678\""
	                 "}],\"messages\":[{\"role\":\"user\",\"content\":[{"
	                 "\"type\":\"image\",\"source\":{\"type\":\"url\","
	                 "\"url\":\"u\"}},{\"type\":\"text\",\"text\":\"x\"}]"
	                 "}]}"));
	cr_assert_eq(msgs_count_tokens(&req), 3 + 1600 + 3);
	/* the Claude Code fixture: tools add 346 and their JSON */
	{
		size_t n;
		char *s = slurp("to_chat_claude_code.in.json", &n);
		long t;

		parse_req(s, n);
		free(s);
		t = msgs_count_tokens(&req);
		cr_assert(t > 346 + 5 * 3 + 1600 && t < 3000, "%ld", t);
	}
	parse_req("{\"messages\":{}}", 15);
	cr_assert_eq(msgs_count_tokens(&req), -1);
	parse_req("[]", 2);
	cr_assert_eq(msgs_count_tokens(&req), -1);
}

/* Build an upstream request from canonical body cj with provider p. */
static int
prov_build(const struct provider *p, const struct json *cj, char *err,
           size_t errsz)
{
	static const char *const drop[] = {"fallbacks", "num_retries",
	                                   "timeout",   "stream_timeout",
	                                   "metadata",  NULL};
	struct deploy_cfg d;
	struct prov_out po = {0};
	struct prov_call pc = {.d = &d,
	                       .req = cj,
	                       .endpoint = EP_CHAT,
	                       .stream =
	                           json_is_true(cj, json_get(cj, 0, "stream")),
	                       .include_usage = 1,
	                       .drop_keys = drop};
	int rc;

	memset(&d, 0, sizeof d);
	snprintf(d.name, sizeof d.name, "d1");
	snprintf(d.model, sizeof d.model, "upstream-model");
	snprintf(d.path, sizeof d.path, "/base");
	rc = p->build(&pc, &po, err, errsz);
	buf_free(&po.path);
	buf_free(&po.headers);
	buf_free(&po.body);
	return rc;
}

/* The canonical bodies are what the engine hands the provider adapters:
 * each adapter builds its upstream request from them. (OpenAI file parts,
 * from PDF documents, are sent as they are to OpenAI-shaped upstreams; the
 * Anthropic and Gemini adapters do not take them yet.) */
Test(ingress_messages, canonical_accepted_by_providers)
{
	static const char *const rels[] = {
	    "to_chat_basic.in.json", "to_chat_claude_code.in.json",
	    "to_chat_prefill.in.json", "to_chat_media.in.json"};
	const struct provider *const provs[] = {&prov_openai, &prov_anthropic,
	                                        &prov_gemini};
	struct json cj = {0};
	char err[256];
	char *s;
	size_t n;

	for (size_t i = 0; i < sizeof rels / sizeof rels[0]; i++) {
		s = slurp(rels[i], &n);
		parse_req(s, n);
		free(s);
		buf_reset(&out);
		cr_assert(msgs_to_chat(&req, &out, err, sizeof err) == 0);
		cr_assert(json_parse(&cj, out.data, out.len) == 0);
		for (size_t k = 0; k < sizeof provs / sizeof provs[0]; k++) {
			if (strstr(rels[i], "media") && k > 0)
				break;
			cr_assert(
			    prov_build(provs[k], &cj, err, sizeof err) == 0,
			    "%s via %s: %s", rels[i], provs[k]->name, err);
		}
	}
	json_free(&cj);
}

/* ---- whole replies ---- */

Test(ingress_messages, resp_text_cached_usage)
{
	resp_golden("reply_text");
}

Test(ingress_messages, resp_tools)
{
	resp_golden("reply_tools");
}

Test(ingress_messages, resp_reasoning_length)
{
	resp_golden("reply_reasoning");
}

Test(ingress_messages, resp_refusal)
{
	resp_golden("reply_refusal");
}

Test(ingress_messages, resp_msg_id_and_tool_stop)
{
	resp_golden("reply_msgid");
}

Test(ingress_messages, resp_not_understood)
{
	static const char *const bad[] = {
	    "",
	    "not json",
	    "[1]",
	    "{\"id\":\"x\"}",
	    "{\"choices\":[]}",
	    "{\"choices\":[1]}",
	    "{\"choices\":[{\"message\":\"hi\"}]}",
	    "{\"error\":{\"message\":\"boom\"}}",
	    "{\"choices\":[{\"message\":{\"content\":5}}]}",
	    "{\"choices\":[{\"message\":{\"tool_calls\":[{\"function\":{}}]}}"
	    "]}",
	    "{\"choices\":[{\"message\":{\"tool_calls\":{}}}]}",
	};

	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		buf_reset(&out);
		buf_adds(&out, "KEEP");
		cr_assert(msgs_reply(bad[i], strlen(bad[i]), &out) == -1,
		          "accepted %s", bad[i]);
		cr_assert_str_eq(buf_cstr(&out), "KEEP");
	}
}

/* ---- streams ---- */

Test(ingress_messages, stream_text)
{
	stream_golden("stream_text");
}

Test(ingress_messages, stream_tools_split_arguments)
{
	stream_golden("stream_tools");
}

Test(ingress_messages, stream_tools_reused_index)
{
	stream_golden("stream_tools_reuse");
}

Test(ingress_messages, stream_reasoning)
{
	stream_golden("stream_reasoning");
}

Test(ingress_messages, stream_refusal_skips_filter_chunk)
{
	stream_golden("stream_refusal");
}

Test(ingress_messages, stream_fail)
{
	stream_golden("stream_fail");
}

Test(ingress_messages, stream_empty)
{
	stream_golden("stream_empty");
}

Test(ingress_messages, stream_preset_input_and_model)
{
	static const char c1[] =
	    "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}";

	st.input_tokens = 77;
	snprintf(st.model, sizeof st.model, "claude-sonnet-4-5");
	cr_assert(msgs_stream_chunk(&st, c1, sizeof c1 - 1, &out) == 0);
	cr_assert(strstr(buf_cstr(&out), "\"input_tokens\":77") != NULL);
	cr_assert(strstr(buf_cstr(&out), "\"model\":\"claude-sonnet-4-5\"") !=
	          NULL);
	cr_assert(strstr(buf_cstr(&out), "\"id\":\"msg_llmfd\"") != NULL);
}

/* The keep-alive is event: ping, never before message_start; a stream
 * passed through (no state) began with the upstream's own. */
Test(ingress_messages, ping_only_after_message_start)
{
	static const char c1[] =
	    "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}";
	static const char ping[] = "event: ping\ndata: {\"type\":\"ping\"}\n\n";

	ingress_messages.ping(&st, &out);
	cr_assert_eq(out.len, 0);
	cr_assert(msgs_stream_chunk(&st, c1, sizeof c1 - 1, &out) == 0);
	cr_assert(strncmp(buf_cstr(&out), "event: message_start\n", 21) == 0);
	buf_reset(&out);
	ingress_messages.ping(&st, &out);
	cr_assert_str_eq(buf_cstr(&out), ping);
	buf_reset(&out);
	ingress_messages.ping(NULL, &out);
	cr_assert_str_eq(buf_cstr(&out), ping);
	buf_reset(&out);
	ingress_chat.ping(NULL, &out);
	cr_assert_str_eq(buf_cstr(&out), ": keepalive\n\n");
	cr_assert(ingress_responses.ping == ingress_chat.ping);
	cr_assert_null(ingress_count_tokens.ping);
}

Test(ingress_messages, stream_rejects_bad_chunks)
{
	static const char *const bad[] = {
	    "",
	    "[DONE]",
	    "[]",
	    "{\"id\":\"x\"}",
	    "{\"choices\":{}}",
	    "{\"choices\":[5]}",
	    "{\"choices\":[{\"delta\":\"x\"}]}",
	    "{\"choices\":[{\"delta\":{\"tool_calls\":{}}}]}",
	    "{\"choices\":[{\"delta\":{\"tool_calls\":[1]}}]}",
	    "{\"choices\":[{\"delta\":{},\"finish_reason\":3}]}",
	    "{\"choices\":[],\"usage\":5}",
	    "{\"error\":{\"message\":\"late\"}}",
	};
	static const char ok[] = "{\"id\":\"c\",\"model\":\"m\",\"choices\":[{"
	                         "\"index\":0,\"delta\":{\"content\":\"a\"}}]}";

	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		buf_reset(&out);
		cr_assert(
		    msgs_stream_chunk(&st, bad[i], strlen(bad[i]), &out) == -1,
		    "accepted %s", bad[i]);
		cr_assert(out.len == 0, "%s wrote output", bad[i]);
		cr_assert(!st.started);
	}
	cr_assert(msgs_stream_chunk(&st, ok, sizeof ok - 1, &out) == 0);
	msgs_stream_done(&st, &out);
	cr_assert(msgs_shape_stream(buf_cstr(&out), 1));
	cr_assert(msgs_stream_chunk(&st, ok, sizeof ok - 1, &out) == -1,
	          "chunk after done");
}

Test(ingress_messages, stream_other_choices_ignored)
{
	static const char c[] =
	    "{\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":1,\"delta\":"
	    "{\"content\":\"B\"}},{\"index\":0,\"delta\":{\"content\":\"A\"}}]"
	    "}";

	cr_assert(msgs_stream_chunk(&st, c, sizeof c - 1, &out) == 0);
	cr_assert(strstr(buf_cstr(&out), "\"text\":\"A\"") != NULL);
	cr_assert(strstr(buf_cstr(&out), "\"text\":\"B\"") == NULL);
}

Test(ingress_messages, stream_fail_after_done_ignored)
{
	msgs_stream_done(&st, &out);
	buf_reset(&out);
	msgs_stream_fail(&st, 500, "x", &out);
	msgs_stream_done(&st, &out);
	cr_assert(out.len == 0);
}

Test(ingress_messages, ping_event)
{
	msgs_ping(&out);
	cr_assert_str_eq(buf_cstr(&out),
	                 "event: ping\ndata: {\"type\":\"ping\"}\n\n");
}

/* ---- errors ---- */

Test(ingress_messages, error_types_by_status)
{
	static const struct {
		int status;
		const char *type;
	} cases[] = {{400, "invalid_request_error"},
	             {401, "authentication_error"},
	             {402, "billing_error"},
	             {403, "permission_error"},
	             {404, "not_found_error"},
	             {408, "timeout_error"},
	             {409, "invalid_request_error"},
	             {413, "request_too_large"},
	             {422, "invalid_request_error"},
	             {429, "rate_limit_error"},
	             {500, "api_error"},
	             {502, "api_error"},
	             {503, "overloaded_error"},
	             {504, "timeout_error"},
	             {529, "overloaded_error"}};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		cr_assert_str_eq(msgs_error_type(cases[i].status),
		                 cases[i].type, "%d", cases[i].status);
}

Test(ingress_messages, error_bodies)
{
	static const char trail[] =
	    "[{\"deployment\":\"oai-1\",\"status\":429,\"class\":\"rate_"
	    "limited\",\"ms\":12},{\"deployment\":\"claude\",\"status\":529,"
	    "\"class\":\"transient\",\"ms\":40}]";

	error_golden("err_400", 400, NULL, "max_tokens: Field required",
	             "req_011CSHoEeqs5C35K2UUqR7Fy", NULL);
	error_golden("err_401", 401, NULL, "invalid x-api-key", "req_1", NULL);
	error_golden("err_403", 403, NULL, NULL, NULL, NULL);
	error_golden("err_404", 404, NULL, "no group or deployment named 'x'",
	             "req_2", NULL);
	error_golden("err_413", 413, NULL, "request body exceeds 32 MB", NULL,
	             NULL);
	error_golden("err_429", 429, "rate_limit_exceeded",
	             "every deployment of group 'claude' is rate-limited",
	             "req_3", trail);
	error_golden("err_500", 500, NULL, "internal error", "req_4", NULL);
	error_golden("err_529", 529, NULL, NULL, "req_5", trail);
	error_golden("err_504", 504, NULL, "deadline of 60 s exceeded", "req_6",
	             trail);
	error_golden("err_context", 400, "context_length_exceeded",
	             "This model's maximum context length is 128000 tokens. "
	             "However, your messages resulted in 130532 tokens. Please "
	             "reduce the length of the messages.",
	             "req_7", NULL);
}

Test(ingress_messages, error_trail_only_when_array)
{
	msgs_error(&out, 500, NULL, "x", NULL, "{\"a\":1}", 7);
	cr_assert(strstr(buf_cstr(&out), "attempts") == NULL);
	cr_assert(strstr(buf_cstr(&out), "request_id") == NULL);
	buf_reset(&out);
	msgs_error(&out, 500, NULL, "x", "", "[1,", 3);
	cr_assert(strstr(buf_cstr(&out), "attempts") == NULL);
	cr_assert(strstr(buf_cstr(&out), "request_id") == NULL);
	cr_assert(msgs_shape_error(out.data, out.len));
}

Test(ingress_messages, error_context_wordings)
{
	static const struct {
		const char *upstream, *want;
	} cases[] = {
	    {"This model's maximum context length is 128000 tokens. However, "
	     "your messages resulted in 130532 tokens.",
	     "prompt is too long: 130532 tokens > 128000 maximum"},
	    {"This model's maximum context length is 4096 tokens. However, "
	     "you requested 5000 tokens (4000 in the messages, 1000 in the "
	     "completion). Please reduce the length of the messages or "
	     "completion.",
	     "prompt is too long: 5000 tokens > 4096 maximum"},
	    {"The input token count (1200000) exceeds the maximum number of "
	     "tokens allowed (1048576).",
	     "prompt is too long: 1200000 tokens > 1048576 maximum"},
	    {"Input tokens exceed the configured limit of 272000 tokens. Your "
	     "messages resulted in 300012 tokens.",
	     "prompt is too long: 300012 tokens > 272000 maximum"},
	    {"Prompt contains 40000 tokens and 0 draft tokens, too large for "
	     "model with 32768 maximum context length",
	     "prompt is too long: 40000 tokens > 32768 maximum"},
	    {"request (9000 tokens) exceeds the available context size (8192 "
	     "tokens), try increasing it",
	     "prompt is too long: 9000 tokens > 8192 maximum"},
	    {"prompt is too long: 208310 tokens > 200000 maximum",
	     "prompt is too long: 208310 tokens > 200000 maximum"},
	    {"Input is too long for requested model.",
	     "prompt is too long: Input is too long for requested model."},
	    {"gpt-4o context exceeded", "prompt is too long: gpt-4o context "
	                                "exceeded"},
	    {"maximum context length is 4096 tokens",
	     "prompt is too long: maximum context length is 4096 tokens"},
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		buf_reset(&out);
		msgs_error(&out, 400, "context_length_exceeded",
		           cases[i].upstream, NULL, NULL, 0);
		cr_assert_str_eq(error_message(), cases[i].want, "from %s",
		                 cases[i].upstream);
		cr_assert(strstr(buf_cstr(&out), "invalid_request_error"));
	}
}

/* ---- the structural checker rejects known-bad bodies ---- */

Test(ingress_messages, shape_checker_rejects_known_bad)
{
	static const char *const bad_replies[] = {
	    "{\"type\":\"message\"}",
	    "{\"id\":\"m\",\"type\":\"message\",\"role\":\"assistant\","
	    "\"model\":\"x\",\"content\":[],\"stop_reason\":\"stop\","
	    "\"stop_sequence\":null,\"usage\":{\"input_tokens\":1,"
	    "\"output_tokens\":1}}",
	    "{\"id\":\"m\",\"type\":\"message\",\"role\":\"assistant\","
	    "\"model\":\"x\",\"content\":[{\"type\":\"tool_use\",\"id\":\"a."
	    "b\","
	    "\"name\":\"f\",\"input\":{}}],\"stop_reason\":\"tool_use\","
	    "\"stop_sequence\":null,\"usage\":{\"input_tokens\":1,"
	    "\"output_tokens\":1}}",
	    "{\"id\":\"m\",\"type\":\"message\",\"role\":\"assistant\","
	    "\"model\":\"x\",\"content\":[{\"type\":\"tool_use\",\"id\":\"a\","
	    "\"name\":\"f\",\"input\":\"{}\"}],\"stop_reason\":\"tool_use\","
	    "\"stop_sequence\":null,\"usage\":{\"input_tokens\":1,"
	    "\"output_tokens\":1}}",
	    "{\"id\":\"m\",\"type\":\"message\",\"role\":\"assistant\","
	    "\"model\":\"x\",\"content\":[],\"stop_reason\":\"end_turn\","
	    "\"stop_sequence\":null,\"usage\":{\"prompt_tokens\":1}}",
	};
	static const char *const bad_streams[] = {
	    "",
	    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
	    "data: {\"type\":\"ping\"}\n\n",
	    "event: ping\ndata: {\"type\":\"message_stop\"}\n\n",
	    /* a block delta before its start */
	    "event: message_start\ndata: {\"type\":\"message_start\","
	    "\"message\":{\"id\":\"m\",\"type\":\"message\",\"role\":"
	    "\"assistant\",\"model\":\"x\",\"content\":[],\"stop_reason\":null,"
	    "\"stop_sequence\":null,\"usage\":{\"input_tokens\":1,"
	    "\"output_tokens\":0}}}\n\nevent: content_block_delta\ndata: "
	    "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
	    "\"text_delta\",\"text\":\"x\"}}\n\n",
	    /* message_delta while a block is open, no message_stop */
	    "event: message_start\ndata: {\"type\":\"message_start\","
	    "\"message\":{\"id\":\"m\",\"type\":\"message\",\"role\":"
	    "\"assistant\",\"model\":\"x\",\"content\":[],\"stop_reason\":null,"
	    "\"stop_sequence\":null,\"usage\":{\"input_tokens\":1,"
	    "\"output_tokens\":0}}}\n\nevent: content_block_start\ndata: "
	    "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":"
	    "{\"type\":\"text\",\"text\":\"\"}}\n\nevent: message_delta\ndata: "
	    "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":"
	    "\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":"
	    "1}}\n\n",
	};
	static const char *const bad_errors[] = {
	    "{\"error\":{\"message\":\"x\",\"type\":\"api_error\"}}",
	    "{\"type\":\"error\",\"error\":{\"type\":\"server_error\","
	    "\"message\":\"x\"}}",
	    "{\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":"
	    "\"x\",\"attempts\":[]}}",
	};
	char *good;
	size_t n;

	for (size_t i = 0; i < sizeof bad_replies / sizeof bad_replies[0]; i++)
		cr_assert(
		    !msgs_shape_reply(bad_replies[i], strlen(bad_replies[i])),
		    "accepted %s", bad_replies[i]);
	for (size_t i = 0; i < sizeof bad_streams / sizeof bad_streams[0]; i++)
		cr_assert(!msgs_shape_stream(bad_streams[i], 1), "accepted %s",
		          bad_streams[i]);
	for (size_t i = 0; i < sizeof bad_errors / sizeof bad_errors[0]; i++)
		cr_assert(
		    !msgs_shape_error(bad_errors[i], strlen(bad_errors[i])),
		    "accepted %s", bad_errors[i]);
	/* and accepts the golden reply and stream */
	good = slurp("reply_tools.out.json", &n);
	cr_assert(msgs_shape_reply(good, n));
	free(good);
	good = slurp("stream_tools.out", NULL);
	cr_assert(msgs_shape_stream(good, 1));
	cr_assert(!msgs_shape_stream(good, 0), "complete stream taken as "
	                                       "failed");
	free(good);
}
