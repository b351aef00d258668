/* Unit tests for worker/ingress/responses.c (the OpenAI Responses API):
 * golden files under tests/data/responses/ for requests
 * (request_X.json -> request_X.out.json, a canonical Chat body), whole
 * replies (reply_X.json, a chat.completion, -> reply_X.out.json, a
 * Response; answered for request_X.json if present, else request_text.json)
 * and streams (stream_X.sse -> stream_X.out: canonical chunk lines fed one
 * at a time; "data: [DONE]" calls resp_stream_done, "fail: STATUS CODE
 * MESSAGE" calls resp_stream_fail; a first line ": request FILE" names the
 * client request). Comparison is semantic: JSON re-serialised, timestamps
 * zeroed, and llmfd's random ids (resp_/msg_/fc_/rs_/call_ + hex) renamed
 * by order of first appearance, so a golden still shows which events share
 * an id. LLMFD_GOLDEN_UPDATE=1 rewrites the expected files. */
#include <criterion/criterion.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker/ingress/responses.h"

static struct json req;
static struct buf out;
static struct resp_stream rs;
static char *text;

/* Free what a test built. */
static void
teardown(void)
{
	json_free(&req);
	buf_free(&out);
	resp_stream_free(&rs);
	free(text);
	text = NULL;
}

TestSuite(responses, .fini = teardown);

/* Path of a data file. */
static const char *
data_path(const char *rel)
{
	static char p[1024];
	const char *dir = getenv("LLMFD_TESTDATA");

	snprintf(p, sizeof p, "%s/%s", dir && dir[0] ? dir : "tests/data", rel);
	return p;
}

/* Read a whole data file (NUL-terminated, heap), or NULL if absent. */
static char *
slurp_opt(const char *rel, size_t *len)
{
	FILE *f = fopen(data_path(rel), "rb");
	char *s;
	long n;

	if (f == NULL)
		return NULL;
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

/* Read a whole data file; fails the test if absent. */
static char *
slurp(const char *rel, size_t *len)
{
	char *s = slurp_opt(rel, len);

	cr_assert(s != NULL,
	          "cannot open %s (run from the repo root or set "
	          "LLMFD_TESTDATA)",
	          data_path(rel));
	return s;
}

/* Ids seen while canonicalising one document or stream. */
struct ids {
	char seen[64][72];
	int n;
};

/* Whether s is an id llmfd minted: PREFIX_ then 24+ lowercase hex. */
static int
minted(const char *s, size_t *plen)
{
	static const char *const pre[] = {"resp_", "msg_", "fc_", "rs_",
	                                  "call_"};
	size_t k, n;

	for (size_t i = 0; i < sizeof pre / sizeof pre[0]; i++) {
		k = strlen(pre[i]);
		if (strncmp(s, pre[i], k) != 0)
			continue;
		for (n = 0; isxdigit((unsigned char)s[k + n]) &&
		            !isupper((unsigned char)s[k + n]);
		     n++)
			;
		if (n >= 24 && s[k + n] == '\0') {
			*plen = k;
			return 1;
		}
	}
	return 0;
}

/* Write string s, renaming a minted id to PREFIX_#n. */
static void
canon_str(struct jw *jw, const char *s, size_t len, struct ids *ids)
{
	char name[96];
	size_t pl;
	int i;

	if (ids == NULL || len >= sizeof ids->seen[0] || !minted(s, &pl)) {
		jw_str(jw, s, len);
		return;
	}
	for (i = 0; i < ids->n && strcmp(ids->seen[i], s) != 0; i++)
		;
	if (i == ids->n) {
		cr_assert(ids->n < 64);
		snprintf(ids->seen[ids->n++], sizeof ids->seen[0], "%s", s);
	}
	snprintf(name, sizeof name, "%.*s#%d", (int)pl, s, i + 1);
	jw_cstr(jw, name);
}

/* Whether key names a timestamp the comparison ignores. */
static int
is_time_key(const char *k)
{
	return strcmp(k, "created") == 0 || strcmp(k, "created_at") == 0 ||
	       strcmp(k, "completed_at") == 0;
}

/* Re-serialise value t of j canonically into jw; returns the next token. */
static int
canon(const struct json *j, int t, struct jw *jw, struct ids *ids)
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
			if (is_time_key(buf_cstr(&k)) &&
			    j->tok[c + 1].type == JSMN_PRIMITIVE &&
			    !json_is_null(j, c + 1)) {
				jw_int(jw, 0);
				c = json_next(j, c + 1);
			} else
				c = canon(j, c + 1, jw, ids);
		}
		jw_obj_end(jw);
		break;
	case JSMN_ARRAY:
		jw_arr(jw);
		for (int i = 0; i < n; i++)
			c = canon(j, c, jw, ids);
		jw_arr_end(jw);
		break;
	case JSMN_STRING:
		json_str_buf(j, t, &k);
		canon_str(jw, buf_cstr(&k), k.len, ids);
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
canon_text(const char *s, size_t n, struct ids *ids)
{
	struct json j = {0};
	struct buf b = {0};
	struct jw jw;

	if (json_parse(&j, s, n) == -1) {
		json_free(&j);
		return NULL;
	}
	jw_init(&jw, &b);
	canon(&j, 0, &jw, ids);
	json_free(&j);
	buf_addc(&b, '\0');
	return b.data;
}

/* Canonical form of SSE text: "data: " lines canonicalised (ids shared
 * across the whole stream), other non-empty lines kept. */
static char *
canon_stream(const char *s)
{
	struct buf b = {0};
	struct ids ids = {.n = 0};
	const char *p = s, *e;
	char *c;

	while (*p) {
		e = strchr(p, '\n');
		if (e == NULL)
			e = p + strlen(p);
		if (e > p) {
			if (strncmp(p, "data: ", 6) == 0 &&
			    (c = canon_text(p + 6, (size_t)(e - p - 6),
			                    &ids)) != NULL) {
				buf_printf(&b, "data: %s\n", c);
				free(c);
			} else {
				buf_add(&b, p, (size_t)(e - p));
				buf_addc(&b, '\n');
			}
		}
		p = *e ? e + 1 : e;
	}
	buf_addc(&b, '\0');
	return b.data;
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

/* Whether expected files are being rewritten. */
static int
golden_update(void)
{
	const char *u = getenv("LLMFD_GOLDEN_UPDATE");

	return u && strcmp(u, "1") == 0;
}

/* Compare JSON got with the expected file, semantically. */
static void
expect_json(const char *rel, const char *got, size_t n)
{
	struct ids ig = {.n = 0}, iw = {.n = 0};
	char *g = canon_text(got, n, &ig), *w, *want;

	cr_assert(g != NULL, "output is not JSON: %.*s", (int)n, got);
	if (golden_update()) {
		struct buf b = {0};
		buf_adds(&b, g);
		buf_addc(&b, '\n');
		golden_write(rel, b.data, b.len);
		buf_free(&b);
	}
	want = slurp(rel, NULL);
	w = canon_text(want, strlen(want), &iw);
	cr_assert(w != NULL, "%s is not JSON", rel);
	cr_assert(strcmp(g, w) == 0, "%s mismatch\n got: %s\nwant: %s", rel, g,
	          w);
	free(g);
	free(w);
	free(want);
}

/* Compare SSE text got with the expected file. */
static void
expect_stream(const char *rel, const char *got)
{
	char *g = canon_stream(got), *w, *exp;

	if (golden_update())
		golden_write(rel, g, strlen(g));
	exp = slurp(rel, NULL);
	w = canon_stream(exp);
	cr_assert(strcmp(g, w) == 0, "%s mismatch\n got:\n%s\nwant:\n%s", rel,
	          g, w);
	free(g);
	free(w);
	free(exp);
}

/* Parse body (copied) into req. */
static void
load_inline(const char *body)
{
	free(text);
	text = strdup(body);
	cr_assert(json_parse(&req, text, strlen(text)) == 0, "bad JSON: %s",
	          body);
}

/* Parse a request data file into req. */
static void
load_req(const char *rel)
{
	size_t n;

	free(text);
	text = slurp(rel, &n);
	cr_assert(json_parse(&req, text, n) == 0, "%s is not JSON", rel);
}

/* ---- requests ---- */

/* Translate responses/request_NAME.json, compare with .out.json. */
static void
request_golden(const char *name)
{
	char in[256], want[256], err[256];
	const char *code;
	int status;

	snprintf(in, sizeof in, "responses/request_%s.json", name);
	snprintf(want, sizeof want, "responses/request_%s.out.json", name);
	load_req(in);
	buf_reset(&out);
	cr_assert(resp_to_chat(&req, &out, &status, &code, err, sizeof err) ==
	              0,
	          "%s refused: %s", in, err);
	expect_json(want, out.data, out.len);
}

/* Translate an inline request that must be refused; returns err. */
static const char *
request_refused(const char *body, const char *want_code)
{
	static char err[256];
	const char *code = NULL;
	int status = 0;

	load_inline(body);
	buf_reset(&out);
	buf_adds(&out, "keep");
	cr_assert(resp_to_chat(&req, &out, &status, &code, err, sizeof err) ==
	              -1,
	          "accepted: %s", body);
	cr_assert(status == 400, "status %d", status);
	cr_assert(code != NULL && strcmp(code, want_code) == 0,
	          "code %s, want %s (%s)", code ? code : "(null)", want_code,
	          err);
	cr_assert(out.len == 4, "output left behind: %s", buf_cstr(&out));
	cr_assert(err[0] != '\0');
	return err;
}

Test(responses, request_text_and_options)
{
	request_golden("text");
}

Test(responses, request_items_merge_calls_and_parts)
{
	request_golden("items");
}

Test(responses, request_tools_flat_to_nested)
{
	request_golden("tools");
}

Test(responses, request_allowed_tools_filter)
{
	request_golden("allowed");
}

Test(responses, request_codex_turn)
{
	request_golden("codex");
}

Test(responses, request_previous_response_id_refused)
{
	const char *e = request_refused(
	    "{\"model\":\"m\",\"input\":\"hi\",\"previous_response_id\":"
	    "\"resp_1\"}",
	    "previous_response_not_found");

	cr_assert(strstr(e, "stateless") && strstr(e, "whole") &&
	              strstr(e, "store: false"),
	          "%s", e);
	request_refused("{\"model\":\"m\",\"input\":\"hi\",\"conversation\":"
	                "{\"id\":\"conv_1\"}}",
	                "previous_response_not_found");
}

Test(responses, request_null_state_fields_accepted)
{
	char err[256];
	const char *code;
	int status;

	load_inline(
	    "{\"model\":\"m\",\"input\":\"hi\",\"previous_response_id\":"
	    "null,\"conversation\":null,\"background\":false}");
	cr_assert(resp_to_chat(&req, &out, &status, &code, err, sizeof err) ==
	          0);
}

Test(responses, request_item_reference_refused)
{
	request_refused("{\"model\":\"m\",\"input\":[{\"type\":"
	                "\"item_reference\",\"id\":\"msg_1\"}]}",
	                "unsupported_value");
	/* type may be omitted on a reference */
	request_refused("{\"model\":\"m\",\"input\":[{\"id\":\"msg_1\"}]}",
	                "unsupported_value");
}

Test(responses, request_builtin_tools_refused)
{
	const char *e = request_refused(
	    "{\"model\":\"m\",\"input\":\"hi\",\"tools\":[{\"type\":"
	    "\"web_search\"}]}",
	    "unsupported_value");

	cr_assert(strstr(e, "web_search"), "%s", e);
	request_refused(
	    "{\"model\":\"m\",\"input\":\"hi\",\"tools\":[{\"type\":"
	    "\"function\",\"name\":\"f\"}],\"tool_choice\":{"
	    "\"type\":\"web_search_preview\"}}",
	    "unsupported_value");
	request_refused(
	    "{\"model\":\"m\",\"input\":\"hi\",\"tools\":[{\"type\":"
	    "\"function\"}]}",
	    "missing_required_parameter");
}

Test(responses, request_file_ids_and_urls_refused)
{
	request_refused("{\"model\":\"m\",\"input\":[{\"role\":\"user\","
	                "\"content\":[{\"type\":\"input_image\",\"file_id\":"
	                "\"file-1\",\"detail\":\"auto\"}]}]}",
	                "unsupported_value");
	request_refused("{\"model\":\"m\",\"input\":[{\"role\":\"user\","
	                "\"content\":[{\"type\":\"input_file\",\"file_url\":"
	                "\"https://x/a.pdf\"}]}]}",
	                "unsupported_value");
	request_refused("{\"model\":\"m\",\"input\":[{\"role\":\"user\","
	                "\"content\":[{\"type\":\"input_file\",\"file_id\":"
	                "\"file-1\"}]}]}",
	                "unsupported_value");
	request_refused("{\"model\":\"m\",\"input\":[{\"role\":\"system\","
	                "\"content\":[{\"type\":\"input_image\","
	                "\"image_url\":\"https://x/a.png\"}]}]}",
	                "unsupported_value");
}

Test(responses, request_bad_items_refused)
{
	request_refused("{\"model\":\"m\",\"input\":[{\"type\":"
	                "\"function_call_output\",\"call_id\":\"c\","
	                "\"output\":[{\"type\":\"input_image\","
	                "\"image_url\":\"https://x/a.png\"}]}]}",
	                "unsupported_value");
	request_refused("{\"model\":\"m\",\"input\":[{\"type\":"
	                "\"local_shell_call\",\"id\":\"x\"}]}",
	                "unsupported_value");
	request_refused("{\"model\":\"m\",\"input\":[{\"role\":\"tool\","
	                "\"content\":\"x\"}]}",
	                "invalid_value");
	request_refused("{\"model\":\"m\",\"input\":[{\"type\":"
	                "\"function_call\",\"name\":\"f\"}]}",
	                "missing_required_parameter");
	request_refused("{\"model\":\"m\",\"input\":[{\"role\":\"user\","
	                "\"content\":5}]}",
	                "invalid_type");
	request_refused("{\"model\":\"m\",\"input\":[\"hi\"]}", "invalid_type");
	request_refused("{\"model\":\"m\",\"input\":[{\"type\":\"reasoning\","
	                "\"summary\":[]}]}",
	                "invalid_value");
}

Test(responses, request_bad_top_level_refused)
{
	request_refused("[1]", "invalid_type");
	request_refused("{\"input\":\"hi\"}", "missing_required_parameter");
	request_refused("{\"model\":\"m\"}", "missing_required_parameter");
	request_refused(
	    "{\"model\":\"m\",\"input\":\"hi\",\"background\":true}",
	    "unsupported_value");
	request_refused("{\"model\":\"m\",\"input\":\"hi\",\"prompt\":{\"id\":"
	                "\"pmpt_1\"}}",
	                "unsupported_parameter");
	request_refused("{\"model\":\"m\",\"input\":\"hi\",\"stream\":\"yes\"}",
	                "invalid_type");
	request_refused("{\"model\":\"m\",\"input\":\"hi\","
	                "\"max_output_tokens\":1.5}",
	                "invalid_value");
	request_refused("{\"model\":\"m\",\"input\":\"hi\",\"temperature\":"
	                "\"hot\"}",
	                "invalid_type");
	request_refused(
	    "{\"model\":\"m\",\"input\":\"hi\",\"text\":{\"format\":"
	    "{\"type\":\"yaml\"}}}",
	    "invalid_value");
	request_refused("{\"model\":\"m\",\"input\":\"hi\",\"tools\":[{"
	                "\"type\":\"function\",\"name\":\"f\"}],"
	                "\"tool_choice\":\"maybe\"}",
	                "invalid_value");
}

/* Shapes clients send that the spec's item schemas would not admit
 * (history without ids, statuses or logprobs) are taken as they are. */
Test(responses, request_lenient_history)
{
	char err[256];
	const char *code;
	int status;

	load_inline("{\"model\":\"m\",\"input\":[{\"role\":\"user\","
	            "\"content\":\"q\"},{\"role\":\"assistant\","
	            "\"content\":[{\"type\":\"output_text\",\"text\":\"a\"}]},"
	            "{\"type\":\"reasoning\",\"summary\":[]},{\"type\":"
	            "\"function_call\",\"call_id\":\"c\",\"name\":\"f\"},"
	            "{\"type\":\"function_call_output\",\"call_id\":\"c\","
	            "\"output\":\"r\"}]}");
	cr_assert(resp_to_chat(&req, &out, &status, &code, err, sizeof err) ==
	              0,
	          "%s", err);
	cr_assert_str_eq(
	    buf_cstr(&out),
	    "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
	    "\"q\"},{\"role\":\"assistant\",\"content\":\"a\",\"tool_calls\":"
	    "[{\"id\":\"c\",\"type\":\"function\",\"function\":{\"name\":"
	    "\"f\",\"arguments\":\"{}\"}}]},{\"role\":\"tool\","
	    "\"tool_call_id\":\"c\",\"content\":\"r\"}]}");
}

Test(responses, request_stream_asks_for_usage)
{
	char err[256];
	const char *code;
	int status;
	struct json c = {0};

	load_inline("{\"model\":\"m\",\"input\":\"hi\",\"stream\":true}");
	cr_assert(resp_to_chat(&req, &out, &status, &code, err, sizeof err) ==
	          0);
	cr_assert(json_parse(&c, out.data, out.len) == 0);
	cr_assert(json_is_true(&c, json_get(&c, 0, "stream")));
	cr_assert(
	    json_is_true(&c, json_path(&c, 0, "stream_options.include_usage")));
	json_free(&c);
}

/* ---- whole replies ---- */

/* Answer responses/reply_NAME.json for its request; compare. */
static void
reply_golden(const char *name)
{
	char in[256], want[256], rq[256];
	char *chat, *r;
	size_t n;

	snprintf(in, sizeof in, "responses/reply_%s.json", name);
	snprintf(want, sizeof want, "responses/reply_%s.out.json", name);
	snprintf(rq, sizeof rq, "responses/request_%s.json", name);
	if ((r = slurp_opt(rq, NULL)) == NULL)
		snprintf(rq, sizeof rq, "responses/request_text.json");
	free(r);
	load_req(rq);
	chat = slurp(in, &n);
	buf_reset(&out);
	cr_assert(resp_reply(&req, chat, n, &out) == 0, "%s refused", in);
	expect_json(want, out.data, out.len);
	free(chat);
}

Test(responses, reply_text_usage_details)
{
	reply_golden("text");
}

Test(responses, reply_reasoning_text_and_calls)
{
	reply_golden("tools");
}

Test(responses, reply_length_is_incomplete)
{
	reply_golden("length");
}

Test(responses, reply_refusal_content_filter)
{
	reply_golden("refusal");
}

Test(responses, reply_malformed_refused)
{
	static const char *const bad[] = {"",
	                                  "[]",
	                                  "{\"choices\":[]}",
	                                  "{\"choices\":[{\"message\":1}]}",
	                                  "{\"error\":{\"message\":\"x\"}}",
	                                  "{\"choices\":[{\"index\":0}]}"};

	load_inline("{\"model\":\"m\",\"input\":\"hi\"}");
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		buf_reset(&out);
		buf_adds(&out, "keep");
		cr_assert(resp_reply(&req, bad[i], strlen(bad[i]), &out) == -1,
		          "accepted %s", bad[i]);
		cr_assert(out.len == 4);
	}
}

Test(responses, reply_ids_unique)
{
	static const char chat[] =
	    "{\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
	    "\"content\":\"a\",\"tool_calls\":[{\"id\":\"c1\",\"type\":"
	    "\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}},"
	    "{\"type\":\"function\",\"function\":{\"name\":\"g\","
	    "\"arguments\":\"{}\"}}]},\"finish_reason\":\"tool_calls\"}]}";
	struct json a = {0}, b = {0};
	struct buf o2 = {0};
	char s[4][96];

	load_inline("{\"model\":\"m\",\"input\":\"hi\"}");
	cr_assert(resp_reply(&req, chat, sizeof chat - 1, &out) == 0);
	cr_assert(resp_reply(&req, chat, sizeof chat - 1, &o2) == 0);
	cr_assert(json_parse(&a, out.data, out.len) == 0);
	cr_assert(json_parse(&b, o2.data, o2.len) == 0);
	json_str(&a, json_get(&a, 0, "id"), s[0], sizeof s[0]);
	json_str(&b, json_get(&b, 0, "id"), s[1], sizeof s[1]);
	cr_assert(strncmp(s[0], "resp_", 5) == 0 && strcmp(s[0], s[1]) != 0);
	json_str(&a, json_path(&a, 0, "output.1.id"), s[2], sizeof s[2]);
	json_str(&a, json_path(&a, 0, "output.2.id"), s[3], sizeof s[3]);
	cr_assert(strncmp(s[2], "fc_", 3) == 0 && strcmp(s[2], s[3]) != 0);
	/* a call without an id gets a minted call_id */
	json_str(&a, json_path(&a, 0, "output.2.call_id"), s[3], sizeof s[3]);
	cr_assert(strncmp(s[3], "call_", 5) == 0, "%s", s[3]);
	json_free(&a);
	json_free(&b);
	buf_free(&o2);
}

/* ---- streams ---- */

/* Run the encoder over SSE text sse for request file rq (or the one its
 * first line names); output in out. */
static void
stream_run(const char *sse, const char *rq)
{
	char file[200], code[64], msg[256];
	const char *p = sse, *e;
	int status;
	size_t n;

	if (rq == NULL) {
		cr_assert(sscanf(sse, ": request %199s", file) == 1);
		snprintf(msg, sizeof msg, "responses/%s", file);
		rq = msg;
	}
	load_req(rq);
	resp_stream_init(&rs, &req);
	buf_reset(&out);
	for (; *p; p = *e ? e + 1 : e) {
		e = strchr(p, '\n');
		if (e == NULL)
			e = p + strlen(p);
		n = (size_t)(e - p);
		if (n == 12 && strncmp(p, "data: [DONE]", 12) == 0)
			resp_stream_done(&rs, &out);
		else if (n > 6 && strncmp(p, "data: ", 6) == 0)
			cr_assert(resp_stream_chunk(&rs, p + 6, n - 6, &out) ==
			              0,
			          "chunk refused: %.*s", (int)n, p);
		else if (sscanf(p, "fail: %d %63s %255[^\n]", &status, code,
		                msg) == 3)
			resp_stream_fail(&rs, status, code, msg, &out);
	}
}

/* Feed responses/stream_NAME.sse and compare with stream_NAME.out. */
static void
stream_golden(const char *name)
{
	char in[256], want[256];
	char *sse;

	snprintf(in, sizeof in, "responses/stream_%s.sse", name);
	snprintf(want, sizeof want, "responses/stream_%s.out", name);
	sse = slurp(in, NULL);
	stream_run(sse, NULL);
	free(sse);
	expect_stream(want, buf_cstr(&out));
}

/* Check sequence numbers count from 0 and each event line names its
 * data's type; returns the number of events. */
static int
check_events(const char *s)
{
	struct json j = {0};
	char ev[128], ty[128];
	const char *p = s, *d, *e;
	long long seq;
	int n = 0;

	while ((p = strstr(p, "event: ")) != NULL) {
		cr_assert(sscanf(p, "event: %127s", ev) == 1);
		cr_assert((d = strstr(p, "\ndata: ")) != NULL);
		d += 7;
		e = strchr(d, '\n');
		cr_assert(e != NULL && e[1] == '\n', "event not ended by a "
		                                     "blank line");
		cr_assert(json_parse(&j, d, (size_t)(e - d)) == 0);
		cr_assert(json_str(&j, json_get(&j, 0, "type"), ty, sizeof ty) >
		          0);
		cr_assert(strcmp(ev, ty) == 0, "event %s carries %s", ev, ty);
		cr_assert(json_int(&j, json_get(&j, 0, "sequence_number"),
		                   &seq) == 0);
		cr_assert(seq == n, "sequence_number %lld at event %d", seq, n);
		n++;
		p = e;
	}
	json_free(&j);
	return n;
}

Test(responses, stream_text)
{
	stream_golden("text");
	check_events(buf_cstr(&out));
}

Test(responses, stream_tool_calls_split_across_deltas)
{
	stream_golden("tools");
	check_events(buf_cstr(&out));
}

Test(responses, stream_reasoning_summary)
{
	stream_golden("reasoning");
}

Test(responses, stream_length_is_incomplete)
{
	stream_golden("length");
	cr_assert(strstr(buf_cstr(&out), "event: response.completed") == NULL);
}

Test(responses, stream_refusal_part)
{
	stream_golden("refusal");
}

Test(responses, stream_failed_rate_limit)
{
	stream_golden("fail");
	cr_assert(strstr(buf_cstr(&out), "event: response.completed") == NULL);
}

Test(responses, stream_failed_context_window)
{
	stream_golden("fail_context");
}

/* The canonical chunks the Anthropic adapter makes (its own golden
 * output) encode as a Responses stream too. */
Test(responses, stream_from_anthropic_chunks)
{
	char *sse = slurp("anthropic/stream_tools.out", NULL);

	stream_run(sse, "responses/request_tools.json");
	free(sse);
	expect_stream("responses/stream_from_anthropic.out", buf_cstr(&out));
	cr_assert(check_events(buf_cstr(&out)) > 10);
}

/* Feed one inline chunk; returns rc. */
static int
chunk(const char *s)
{
	return resp_stream_chunk(&rs, s, strlen(s), &out);
}

#define CH(delta, fin)                                                         \
	"{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"m\","  \
	"\"choices\":[{\"index\":0,\"delta\":" delta ",\"finish_reason\":" fin \
	"}]}"

Test(responses, stream_refuses_bad_chunks_without_output)
{
	static const char *const bad[] = {
	    "",
	    "nope",
	    "[]",
	    "{}",
	    "{\"error\":{\"message\":\"x\"}}",
	    CH("5", "null"),
	    CH("{\"content\":5}", "null"),
	    CH("{\"tool_calls\":{}}", "null"),
	    CH("{\"tool_calls\":[{\"function\":{\"arguments\":\"x\"}}]}",
	       "null"),
	    CH("{\"tool_calls\":[{\"index\":999}]}", "null")};

	load_inline("{\"model\":\"m\",\"input\":\"hi\"}");
	resp_stream_init(&rs, &req);
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		cr_assert(chunk(bad[i]) == -1, "accepted %s", bad[i]);
		cr_assert(out.len == 0, "output after %s", bad[i]);
	}
}

Test(responses, stream_refuses_closed_tool_index)
{
	size_t mark;

	load_inline("{\"model\":\"m\",\"input\":\"hi\"}");
	resp_stream_init(&rs, &req);
	cr_assert(
	    chunk(CH("{\"tool_calls\":[{\"index\":0,\"id\":\"a\","
	             "\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}",
	             "null")) == 0);
	cr_assert(
	    chunk(CH("{\"tool_calls\":[{\"index\":1,\"id\":\"b\","
	             "\"function\":{\"name\":\"g\",\"arguments\":\"\"}}]}",
	             "null")) == 0);
	mark = out.len;
	/* call 0 was closed when call 1 began: a late fragment is refused */
	cr_assert(chunk(CH("{\"tool_calls\":[{\"index\":0,\"function\":{"
	                   "\"arguments\":\"x\"}}]}",
	                   "null")) == -1);
	/* and so is going back within one chunk */
	cr_assert(chunk(CH("{\"tool_calls\":[{\"index\":2,\"function\":{"
	                   "\"arguments\":\"x\"}},{\"index\":1}]}",
	                   "null")) == -1);
	cr_assert(out.len == mark);
	cr_assert(chunk(CH("{\"tool_calls\":[{\"index\":1,\"function\":{"
	                   "\"arguments\":\"{}\"}}]}",
	                   "null")) == 0);
}

Test(responses, stream_done_without_chunks)
{
	load_inline("{\"model\":\"grp\",\"input\":\"hi\"}");
	resp_stream_init(&rs, &req);
	resp_stream_done(&rs, &out);
	cr_assert(check_events(buf_cstr(&out)) == 3);
	cr_assert(strstr(buf_cstr(&out), "event: response.created\n"));
	cr_assert(strstr(buf_cstr(&out), "\"model\":\"grp\""));
	cr_assert(strstr(buf_cstr(&out), "event: response.completed\n"));
}

Test(responses, stream_terminal_once)
{
	size_t n;

	load_inline("{\"model\":\"m\",\"input\":\"hi\"}");
	resp_stream_init(&rs, &req);
	cr_assert(chunk(CH("{\"content\":\"x\"}", "null")) == 0);
	resp_stream_done(&rs, &out);
	n = out.len;
	resp_stream_done(&rs, &out);
	resp_stream_fail(&rs, 500, NULL, "late", &out);
	cr_assert(out.len == n);
	cr_assert(chunk(CH("{\"content\":\"y\"}", "null")) == -1);
	cr_assert(out.len == n);
}

Test(responses, stream_fail_codes)
{
	static const struct {
		int status;
		const char *code, *want;
	} cases[] = {
	    {429, NULL, "rate_limit_exceeded"},
	    {500, "rate_limited", "rate_limit_exceeded"},
	    {400, "context_window", "context_length_exceeded"},
	    {400, "context_length_exceeded", "context_length_exceeded"},
	    {402, NULL, "insufficient_quota"},
	    {403, "quota", "insufficient_quota"},
	    {400, "content_policy", "invalid_prompt"},
	    {502, "stream_interrupted", "server_error"},
	    {504, NULL, "server_error"},
	};
	char want[128];

	load_inline("{\"model\":\"m\",\"input\":\"hi\"}");
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		resp_stream_free(&rs);
		resp_stream_init(&rs, &req);
		buf_reset(&out);
		cr_assert(chunk(CH("{\"content\":\"x\"}", "null")) == 0);
		resp_stream_fail(&rs, cases[i].status, cases[i].code, "boom",
		                 &out);
		snprintf(want, sizeof want,
		         "\"error\":{\"code\":\"%s\",\"message\":\"boom\"}",
		         cases[i].want);
		cr_assert(strstr(buf_cstr(&out), want), "case %zu: %s", i,
		          out.data);
		cr_assert(strstr(buf_cstr(&out), "event: response.failed\n"));
	}
}

Test(responses, stream_ids_unique_per_response)
{
	struct resp_stream other;

	load_inline("{\"model\":\"m\",\"input\":\"hi\"}");
	resp_stream_init(&rs, &req);
	resp_stream_init(&other, &req);
	cr_assert(strncmp(rs.id, "resp_", 5) == 0);
	cr_assert(strcmp(rs.id, other.id) != 0);
	resp_stream_free(&other);
}

/* A pretty-printed request (newlines between tokens) is echoed on one
 * line: each event stays one data line. */
Test(responses, stream_echo_of_multiline_request)
{
	load_req("responses/request_allowed.json");
	cr_assert(strchr(text, '\n') != NULL);
	resp_stream_init(&rs, &req);
	resp_stream_done(&rs, &out);
	cr_assert(check_events(buf_cstr(&out)) == 3);
	cr_assert(strstr(buf_cstr(&out), "\"text\":{\"format\":{\"type\":"
	                                 "\"json_schema\",\"name\":\"plan\""));
}

/* Echo copes with request fields of unexpected types (found by the
 * fuzzer: tools as an object). */
Test(responses, reply_echo_of_odd_request)
{
	static const char chat[] =
	    "{\"choices\":[{\"message\":{\"content\":\"a\"},"
	    "\"finish_reason\":\"stop\"}]}";
	struct json r = {0};

	load_inline("{\"model\":5,\"tools\":{\"a\":[1]},\"text\":[],"
	            "\"metadata\":\"x\",\"tool_choice\":{\"type\":\"f\"},"
	            "\"temperature\":\"hot\"}");
	cr_assert(resp_reply(&req, chat, sizeof chat - 1, &out) == 0);
	cr_assert(json_parse(&r, out.data, out.len) == 0, "%s", out.data);
	cr_assert(json_size(&r, json_get(&r, 0, "tools")) == 0);
	cr_assert(json_eq(&r, json_get(&r, 0, "model"), ""));
	cr_assert(json_type(&r, json_get(&r, 0, "metadata")) == JSMN_OBJECT);
	json_free(&r);
}
