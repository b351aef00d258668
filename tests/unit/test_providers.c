/* Unit tests for worker/providers: golden files under tests/data/<provider>/
 * for requests (X.in.json -> X.out.json), whole replies (X.json ->
 * X.out.json) and recorded SSE streams (X.sse -> X.out). JSON is compared
 * semantically: both sides are re-serialised canonically (key order kept,
 * whitespace and escapes normalised, "created" zeroed). Set
 * LLMFD_TESTDATA to point at another data directory, and
 * LLMFD_GOLDEN_UPDATE=1 to rewrite the expected files from the output.
 * Native passthrough (a client body in the provider's own format) is
 * compared byte for byte instead, against files never rewritten. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/sse.h"
#include "worker/provider.h"

static const char *const drop_keys[] = {
    "fallbacks", "num_retries", "timeout", "stream_timeout", "metadata", NULL};
/* For a native body: metadata is the provider's own there. */
static const char *const native_drop_keys[] = {
    "fallbacks", "num_retries", "timeout", "stream_timeout", NULL};

static struct deploy_cfg dc;
static struct json req;
static struct prov_out po;
static struct buf out;
static struct stream_state st;
static struct upstream_error ue;
static char *text;

/* A fresh test deployment and stream state. */
static void
setup(void)
{
	memset(&dc, 0, sizeof dc);
	snprintf(dc.name, sizeof dc.name, "d1");
	snprintf(dc.path, sizeof dc.path, "/base");
	snprintf(dc.api_key, sizeof dc.api_key, "KEY");
	memset(&st, 0, sizeof st);
	memset(&ue, 0, sizeof ue);
}

/* Free what a test built. */
static void
teardown(void)
{
	json_free(&req);
	buf_free(&po.path);
	buf_free(&po.headers);
	buf_free(&po.body);
	buf_free(&out);
	stream_state_free(&st);
	free(text);
	text = NULL;
}

TestSuite(providers, .init = setup, .fini = teardown);

/* Path of a data file. */
static const char *
data_path(const char *rel)
{
	static char p[1024];
	const char *dir = getenv("LLMFD_TESTDATA");

	snprintf(p, sizeof p, "%s/%s", dir && dir[0] ? dir : "tests/data", rel);
	return p;
}

/* Read a whole data file (NUL-terminated, heap); fails the test if absent. */
static char *
slurp(const char *rel, size_t *len)
{
	FILE *f = fopen(data_path(rel), "rb");
	char *s;
	long n;

	cr_assert(f != NULL,
	          "cannot open %s (run from the repo root or set "
	          "LLMFD_TESTDATA)",
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
			if (strcmp(buf_cstr(&k), "created") == 0 &&
			    j->tok[c + 1].type == JSMN_PRIMITIVE) {
				jw_int(jw, 0);
				c = json_next(j, c + 1);
			} else
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

/* Canonical form of an SSE output or expected file: one line per event,
 * "data: <canonical JSON>" (or the text as is when it is not JSON). */
static char *
canon_stream(const char *s)
{
	struct buf b = {0};
	const char *p = s, *e;
	char *c;

	while (*p) {
		e = strchr(p, '\n');
		if (e == NULL)
			e = p + strlen(p);
		if (e > p) {
			if (strncmp(p, "data: ", 6) == 0 &&
			    (c = canon_text(p + 6, (size_t)(e - p - 6))) !=
			        NULL) {
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
	char *g, *w, *want;

	if (golden_update()) {
		struct buf b = {0};
		char *c = canon_text(got, n);
		cr_assert(c != NULL, "output is not JSON: %.*s", (int)n, got);
		buf_adds(&b, c);
		buf_addc(&b, '\n');
		golden_write(rel, b.data, b.len);
		free(c);
		buf_free(&b);
	}
	want = slurp(rel, NULL);
	g = canon_text(got, n);
	w = canon_text(want, strlen(want));
	cr_assert(g != NULL, "output is not JSON: %.*s", (int)n, got);
	cr_assert(w != NULL, "%s is not JSON", rel);
	cr_assert(strcmp(g, w) == 0, "%s mismatch\n got: %s\nwant: %s", rel, g,
	          w);
	free(g);
	free(w);
	free(want);
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

/* A prov_call over req for the test deployment. */
static struct prov_call
call(int endpoint, int stream)
{
	return (struct prov_call){
	    .d = &dc,
	    .req = &req,
	    .endpoint = endpoint,
	    .stream = stream,
	    .include_usage = json_is_true(
	        &req, json_path(&req, 0, "stream_options.include_usage")),
	    .drop_keys = drop_keys};
}

/* Build rel.in.json with p and compare with rel.out.json; returns rc. */
static int
build_golden(const struct provider *p, const char *rel, int endpoint)
{
	char in[256], want[256], err[256] = "";
	struct prov_call pc;
	int rc;

	snprintf(in, sizeof in, "%s.in.json", rel);
	snprintf(want, sizeof want, "%s.out.json", rel);
	load_req(in);
	pc = call(endpoint, json_is_true(&req, json_get(&req, 0, "stream")));
	rc = p->build(&pc, &po, err, sizeof err);
	cr_assert(rc == 0, "build %s failed: %s", rel, err);
	expect_json(want, po.body.data, po.body.len);
	return rc;
}

/* Build a request given inline; returns rc and the error in err. */
static int
build_inline(const struct provider *p, const char *body, int endpoint,
             char *err, size_t errsz)
{
	struct prov_call pc;

	free(text);
	text = strdup(body);
	cr_assert(json_parse(&req, text, strlen(text)) == 0);
	pc = call(endpoint, json_is_true(&req, json_get(&req, 0, "stream")));
	err[0] = '\0';
	return p->build(&pc, &po, err, errsz);
}

/* Translate whole reply file rel.json, compare with rel.out.json. */
static int
resp_golden(const struct provider *p, const char *rel, int endpoint,
            struct usage *u, int *cf)
{
	char in[256], want[256];
	char *body;
	size_t n;
	struct prov_call pc;
	int rc;

	snprintf(in, sizeof in, "%s.json", rel);
	snprintf(want, sizeof want, "%s.out.json", rel);
	cr_assert(json_parse(&req, "{}", 2) == 0);
	pc = call(endpoint, 0);
	buf_reset(&out);
	body = slurp(in, &n);
	rc = p->response(&pc, body, n, &out, u, cf, &ue);
	if (rc == 0)
		expect_json(want, out.data, out.len);
	free(body);
	return rc;
}

/* Translate a whole reply given inline. */
static int
resp_inline(const struct provider *p, const char *body, int endpoint)
{
	struct usage u = {0};
	int cf = 0;
	struct prov_call pc;

	cr_assert(json_parse(&req, "{}", 2) == 0);
	pc = call(endpoint, 0);
	buf_reset(&out);
	memset(&ue, 0, sizeof ue);
	return p->response(&pc, body, strlen(body), &out, &u, &cf, &ue);
}

/* Stream feeding state for the SSE callback. */
struct feed {
	const struct provider *p;
	struct prov_call pc;
	int rc;
};

/* SSE callback: hand one event to the provider, as the engine does (which
 * appends [DONE] only to a translated stream). */
static int
feed_event(void *arg, const char *ev, size_t elen, const char *data,
           size_t dlen)
{
	struct feed *f = arg;

	f->rc =
	    f->p->stream_event(&f->pc, &st, ev, elen, data, dlen, &out, &ue);
	if (f->rc == 1 && f->pc.native == NULL)
		buf_adds(&out, "data: [DONE]\n\n");
	else if (f->rc == -1 && f->pc.native == NULL)
		buf_printf(&out, "error: %s\n", errclass_name(ue.cls));
	return f->rc != 0;
}

/* Feed recorded stream file rel in chunks of step bytes into out; returns
 * the last stream_event rc. */
static int
feed_file(struct feed *f, const char *rel, size_t step)
{
	struct sse s = {0};
	size_t n;
	char *sse_text = slurp(rel, &n);

	for (size_t i = 0; i < n && f->rc == 0; i += step)
		sse_feed(&s, sse_text + i, n - i < step ? n - i : step,
		         feed_event, f);
	sse_free(&s);
	free(sse_text);
	return f->rc;
}

/* Feed stream file rel translated (not native), output unchecked. */
static int
stream_golden_rc(const struct provider *p, const char *rel)
{
	struct feed f = {.p = p};

	cr_assert(json_parse(&req, "{}", 2) == 0);
	f.pc = call(EP_CHAT, 1);
	return feed_file(&f, rel, 4096);
}

/* Feed a recorded stream rel.sse in chunks of step bytes and compare the
 * output with rel.out; returns the last stream_event rc. */
static int
stream_golden(const struct provider *p, const char *rel, int include_usage,
              size_t step)
{
	char in[256], want[256];
	char *w, *g, *exp;
	struct feed f = {.p = p};

	snprintf(in, sizeof in, "%s.sse", rel);
	snprintf(want, sizeof want, "%s.out", rel);
	cr_assert(json_parse(&req, "{}", 2) == 0);
	f.pc = call(EP_CHAT, 1);
	f.pc.include_usage = include_usage;
	st.include_usage = include_usage;
	feed_file(&f, in, step);
	g = canon_stream(buf_cstr(&out));
	if (golden_update())
		golden_write(want, g, strlen(g));
	exp = slurp(want, NULL);
	w = canon_stream(exp);
	cr_assert(strcmp(g, w) == 0, "%s mismatch\n got:\n%s\nwant:\n%s", rel,
	          g, w);
	free(g);
	free(w);
	free(exp);
	return f.rc;
}

/* Feed one inline event. */
static int
event_inline(const struct provider *p, const char *ev, const char *data)
{
	struct prov_call pc;

	cr_assert(json_parse(&req, "{}", 2) == 0);
	pc = call(EP_CHAT, 1);
	memset(&ue, 0, sizeof ue);
	return p->stream_event(&pc, &st, ev, strlen(ev), data, strlen(data),
	                       &out, &ue);
}

/* ---- registry ---- */

Test(providers, registry_has_every_kind)
{
	cr_assert(provider_get(PROV_OPENAI) == &prov_openai);
	cr_assert(provider_get(PROV_AZURE) == &prov_azure);
	cr_assert(provider_get(PROV_ANTHROPIC) == &prov_anthropic);
	cr_assert(provider_get(PROV_GEMINI) == &prov_gemini);
	cr_assert(provider_get(PROV__MAX) == NULL);
}

/* ---- Azure ---- */

Test(providers, azure_build_path_header_body)
{
	char err[256];

	dc.provider = PROV_AZURE;
	snprintf(dc.model, sizeof dc.model, "gpt-4o");
	snprintf(dc.azure_deployment, sizeof dc.azure_deployment, "my dep");
	snprintf(dc.api_version, sizeof dc.api_version, "2024-10-21");
	cr_assert(build_inline(&prov_azure,
	                       "{\"model\":\"g\",\"messages\":[],"
	                       "\"fallbacks\":[\"x\"],\"temperature\":0.5}",
	                       EP_CHAT, err, sizeof err) == 0);
	cr_assert_str_eq(buf_cstr(&po.path),
	                 "/base/openai/deployments/my%20dep"
	                 "/chat/completions?api-version=2024-10-21");
	cr_assert(strstr(buf_cstr(&po.headers), "api-key: KEY\r\n") != NULL);
	cr_assert(strstr(buf_cstr(&po.headers), "Authorization") == NULL);
	cr_assert_str_eq(buf_cstr(&po.body), "{\"messages\":[],"
	                                     "\"temperature\":0.5}");
}

Test(providers, azure_build_embeddings)
{
	char err[256];

	snprintf(dc.azure_deployment, sizeof dc.azure_deployment, "emb");
	snprintf(dc.api_version, sizeof dc.api_version, "2024-06-01");
	cr_assert(build_inline(&prov_azure,
	                       "{\"model\":\"e\",\"input\":\"hi\"}", EP_EMBED,
	                       err, sizeof err) == 0);
	cr_assert_str_eq(buf_cstr(&po.path),
	                 "/base/openai/deployments/emb/"
	                 "embeddings?api-version=2024-06-01");
}

Test(providers, azure_stream_skips_filter_chunks)
{
	cr_assert(stream_golden(&prov_azure, "azure/stream_filter", 1, 7) == 1);
	cr_assert(st.content_seen);
	cr_assert(st.finished);
	cr_assert(st.content_filter);
	cr_assert(st.usage.prompt_tokens == 12);
}

Test(providers, azure_stream_text)
{
	cr_assert(stream_golden(&prov_azure, "azure/stream_text", 0, 64) == 1);
	cr_assert(!st.content_filter);
}

Test(providers, azure_response_content_filter)
{
	struct usage u = {0};
	int cf = 0;

	cr_assert(resp_golden(&prov_azure, "azure/resp_filter", EP_CHAT, &u,
	                      &cf) == 0);
	cr_assert(cf == 1);
	cr_assert(u.prompt_tokens == 20 && u.completion_tokens == 3);
}

Test(providers, azure_malformed)
{
	cr_assert(resp_inline(&prov_azure, "{\"choices\":", EP_CHAT) == -1);
	cr_assert(ue.cls == EC_TRANSIENT);
	cr_assert(strstr(ue.message, "malformed") != NULL);
	cr_assert(event_inline(&prov_azure, "", "[1,2") == -1);
	cr_assert(ue.cls == EC_TRANSIENT);
}

/* ---- Anthropic ---- */

Test(providers, anthropic_build_headers_path)
{
	char err[256];

	snprintf(dc.model, sizeof dc.model, "claude-x");
	cr_assert(build_inline(&prov_anthropic,
	                       "{\"model\":\"m\",\"messages\":"
	                       "[{\"role\":\"user\",\"content\":\"hi\"}]}",
	                       EP_CHAT, err, sizeof err) == 0);
	cr_assert_str_eq(buf_cstr(&po.path), "/base/v1/messages");
	cr_assert(strstr(buf_cstr(&po.headers), "x-api-key: KEY\r\n"));
	cr_assert(
	    strstr(buf_cstr(&po.headers), "anthropic-version: 2023-06-01\r\n"));
	cr_assert(strstr(buf_cstr(&po.headers),
	                 "Content-Type: application/json\r\n"));
	cr_assert_str_eq(
	    buf_cstr(&po.body),
	    "{\"model\":\"claude-x\","
	    "\"max_tokens\":4096,\"messages\":[{\"role\":\"user\",\"content\":"
	    "[{\"type\":\"text\",\"text\":\"hi\"}]}]}");
}

Test(providers, anthropic_req_system_params)
{
	snprintf(dc.model, sizeof dc.model, "claude-x");
	build_golden(&prov_anthropic, "anthropic/req_system", EP_CHAT);
}

Test(providers, anthropic_req_tools)
{
	snprintf(dc.model, sizeof dc.model, "claude-x");
	build_golden(&prov_anthropic, "anthropic/req_tools", EP_CHAT);
}

Test(providers, anthropic_req_images_stop)
{
	snprintf(dc.model, sizeof dc.model, "claude-x");
	build_golden(&prov_anthropic, "anthropic/req_images", EP_CHAT);
}

Test(providers, anthropic_req_deploy_defaults)
{
	char params[] = "{\"temperature\":0.2,\"max_tokens\":1000,\"top_k\":5,"
	                "\"stop\":\"END\"}";
	char append[] = "Be brief.";

	snprintf(dc.model, sizeof dc.model, "claude-x");
	dc.params = params;
	dc.system_prompt_append = append;
	dc.max_tokens = 2048;
	build_golden(&prov_anthropic, "anthropic/req_defaults", EP_CHAT);
}

Test(providers, anthropic_no_embeddings)
{
	char err[256];

	cr_assert(build_inline(&prov_anthropic,
	                       "{\"model\":\"m\",\"input\":"
	                       "\"x\"}",
	                       EP_EMBED, err, sizeof err) == -1);
	cr_assert(strstr(err, "embeddings") != NULL);
}

Test(providers, anthropic_rejects_unknown_part)
{
	char err[256];

	cr_assert(build_inline(&prov_anthropic,
	                       "{\"model\":\"m\",\"messages\":"
	                       "[{\"role\":\"user\",\"content\":[{\"type\":"
	                       "\"input_audio\"}]}]}",
	                       EP_CHAT, err, sizeof err) == -1);
	cr_assert(strstr(err, "content part") != NULL);
	cr_assert(build_inline(&prov_anthropic,
	                       "{\"model\":\"m\",\"messages\":"
	                       "[{\"role\":\"wizard\",\"content\":\"x\"}]}",
	                       EP_CHAT, err, sizeof err) == -1);
	cr_assert(build_inline(&prov_anthropic,
	                       "{\"model\":\"m\",\"messages\":"
	                       "[7]}",
	                       EP_CHAT, err, sizeof err) == -1);
}

Test(providers, anthropic_resp_text)
{
	struct usage u = {0};
	int cf = 0;

	cr_assert(resp_golden(&prov_anthropic, "anthropic/resp_text", EP_CHAT,
	                      &u, &cf) == 0);
	cr_assert(cf == 0);
	cr_assert(u.prompt_tokens == 25 && u.completion_tokens == 9);
}

Test(providers, anthropic_resp_tools)
{
	struct usage u = {0};
	int cf = 0;

	cr_assert(resp_golden(&prov_anthropic, "anthropic/resp_tools", EP_CHAT,
	                      &u, &cf) == 0);
	cr_assert(u.prompt_tokens == 400 + 100 + 50);
}

Test(providers, anthropic_resp_refusal)
{
	struct usage u = {0};
	int cf = 0;

	cr_assert(resp_golden(&prov_anthropic, "anthropic/resp_refusal",
	                      EP_CHAT, &u, &cf) == 0);
	cr_assert(cf == 1);
}

Test(providers, anthropic_resp_malformed)
{
	static const char *const bad[] = {"",
	                                  "not json",
	                                  "[1]",
	                                  "{\"id\":\"x\"}",
	                                  "{\"content\":{}}",
	                                  "{\"content\":[{\"type\":"
	                                  "\"tool_use\",\"name\":3}]}",
	                                  "{\"content\":[",
	                                  "\"\\ud800\""};

	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		cr_assert(resp_inline(&prov_anthropic, bad[i], EP_CHAT) == -1,
		          "accepted %s", bad[i]);
		cr_assert(ue.cls == EC_TRANSIENT, "%s", bad[i]);
		cr_assert(strstr(ue.message, "malformed upstream reply") !=
		          NULL);
	}
	cr_assert(
	    resp_inline(
	        &prov_anthropic,
	        "{\"type\":\"error\",\"error\":"
	        "{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}",
	        EP_CHAT) == -1);
	cr_assert(ue.cls == EC_TRANSIENT);
	cr_assert_str_eq(ue.message, "Overloaded");
}

Test(providers, anthropic_stream_text)
{
	cr_assert(
	    stream_golden(&prov_anthropic, "anthropic/stream_text", 1, 5) == 1);
	cr_assert(st.content_seen && st.finished && !st.tool_seen);
	cr_assert(st.usage.prompt_tokens == 12);
	cr_assert(st.usage.completion_tokens == 15);
}

Test(providers, anthropic_stream_tools)
{
	cr_assert(stream_golden(&prov_anthropic, "anthropic/stream_tools", 0,
	                        3) == 1);
	cr_assert(st.tool_seen && st.ntool == 2);
}

Test(providers, anthropic_stream_error)
{
	cr_assert(stream_golden(&prov_anthropic, "anthropic/stream_error", 0,
	                        4096) == -1);
	cr_assert(ue.cls == EC_TRANSIENT);
	cr_assert_str_eq(ue.message, "Overloaded");
}

Test(providers, anthropic_stream_refusal)
{
	cr_assert(stream_golden(&prov_anthropic, "anthropic/stream_refusal", 0,
	                        4096) == 1);
	cr_assert(st.content_filter);
}

Test(providers, anthropic_stream_malformed)
{
	cr_assert(
	    event_inline(&prov_anthropic, "message_start", "{\"type\":") == -1);
	cr_assert(ue.cls == EC_TRANSIENT);
	cr_assert(event_inline(&prov_anthropic, "message_start",
	                       "{\"type\":\"message_start\"}") == -1);
	cr_assert(event_inline(
	              &prov_anthropic, "content_block_delta",
	              "{\"type\":\"content_block_delta\",\"index\":9,\"delta\":"
	              "{\"type\":"
	              "\"input_json_delta\",\"partial_json\":\"{\"}}") == -1);
	cr_assert(
	    event_inline(&prov_anthropic, "content_block_start",
	                 "{\"type\":\"content_block_start\",\"index\":99999,"
	                 "\"content_block\":{\"type\":\"tool_use\",\"id\":"
	                 "\"t\",\"name\":"
	                 "\"n\",\"input\":{}}}") == -1);
	cr_assert(event_inline(&prov_anthropic, "content_block_delta",
	                       "{\"type\":\"content_block_delta\",\"index\":0,"
	                       "\"delta\":{\"type\":"
	                       "\"text_delta\",\"text\":5}}") == -1);
	cr_assert(
	    event_inline(&prov_anthropic, "ping", "{\"type\":\"ping\"}") == 0);
	cr_assert(
	    event_inline(&prov_anthropic, "future", "{\"type\":\"new\"}") == 0);
}

/* ---- Gemini ---- */

Test(providers, gemini_build_paths)
{
	char err[256];

	snprintf(dc.model, sizeof dc.model, "models/gemini-2.0-flash");
	cr_assert(build_inline(&prov_gemini,
	                       "{\"model\":\"m\",\"messages\":"
	                       "[{\"role\":\"user\",\"content\":\"hi\"}]}",
	                       EP_CHAT, err, sizeof err) == 0);
	cr_assert_str_eq(
	    buf_cstr(&po.path),
	    "/base/v1beta/models/gemini-2.0-flash:generateContent");
	cr_assert(strstr(buf_cstr(&po.headers), "x-goog-api-key: KEY\r\n"));
	cr_assert_str_eq(buf_cstr(&po.body),
	                 "{\"contents\":[{\"role\":"
	                 "\"user\",\"parts\":[{\"text\":\"hi\"}]}]}");
	buf_reset(&po.path);
	buf_reset(&po.body);
	cr_assert(build_inline(&prov_gemini,
	                       "{\"model\":\"m\",\"stream\":true,"
	                       "\"messages\":[]}",
	                       EP_CHAT, err, sizeof err) == 0);
	cr_assert_str_eq(buf_cstr(&po.path),
	                 "/base/v1beta/models/"
	                 "gemini-2.0-flash:streamGenerateContent?alt=sse");
}

Test(providers, gemini_req_tools)
{
	snprintf(dc.model, sizeof dc.model, "gemini-2.0-flash");
	build_golden(&prov_gemini, "gemini/req_tools", EP_CHAT);
}

Test(providers, gemini_req_config)
{
	char append[] = "Be brief.";

	snprintf(dc.model, sizeof dc.model, "gemini-2.0-flash");
	dc.system_prompt_append = append;
	build_golden(&prov_gemini, "gemini/req_config", EP_CHAT);
}

Test(providers, gemini_req_unknown_tool_result)
{
	char err[256];

	cr_assert(build_inline(&prov_gemini,
	                       "{\"model\":\"m\",\"messages\":["
	                       "{\"role\":\"tool\",\"tool_call_id\":\"nope\","
	                       "\"content\":\"1\"}]}",
	                       EP_CHAT, err, sizeof err) == -1);
	cr_assert(strstr(err, "tool_call_id") != NULL);
}

Test(providers, gemini_embed_requests)
{
	char err[256];

	snprintf(dc.model, sizeof dc.model, "text-embedding-004");
	cr_assert(build_inline(&prov_gemini,
	                       "{\"model\":\"m\",\"input\":"
	                       "\"hello\"}",
	                       EP_EMBED, err, sizeof err) == 0);
	cr_assert_str_eq(buf_cstr(&po.path),
	                 "/base/v1beta/models/text-embedding-004:embedContent");
	cr_assert_str_eq(buf_cstr(&po.body), "{\"content\":{\"parts\":[{"
	                                     "\"text\":\"hello\"}]}}");
	buf_reset(&po.path);
	buf_reset(&po.body);
	cr_assert(build_inline(&prov_gemini,
	                       "{\"model\":\"m\",\"input\":"
	                       "[\"a\",\"b\"],\"dimensions\":8}",
	                       EP_EMBED, err, sizeof err) == 0);
	cr_assert_str_eq(
	    buf_cstr(&po.path),
	    "/base/v1beta/models/text-embedding-004:batchEmbedContents");
	cr_assert_str_eq(
	    buf_cstr(&po.body),
	    "{\"requests\":[{\"model\":"
	    "\"models/text-embedding-004\",\"content\":{\"parts\":[{\"text\":"
	    "\"a\"}]},\"outputDimensionality\":8},{\"model\":"
	    "\"models/text-embedding-004\",\"content\":{\"parts\":[{\"text\":"
	    "\"b\"}]},\"outputDimensionality\":8}]}");
	cr_assert(build_inline(&prov_gemini,
	                       "{\"model\":\"m\",\"input\":"
	                       "[[1,2]]}",
	                       EP_EMBED, err, sizeof err) == -1);
}

Test(providers, gemini_embed_responses)
{
	struct usage u = {0};
	int cf = 0;

	snprintf(dc.model, sizeof dc.model, "text-embedding-004");
	cr_assert(resp_golden(&prov_gemini, "gemini/resp_embed", EP_EMBED, &u,
	                      &cf) == 0);
	cr_assert(resp_golden(&prov_gemini, "gemini/resp_embed_batch", EP_EMBED,
	                      &u, &cf) == 0);
	cr_assert(resp_inline(&prov_gemini, "{\"embedding\":{}}", EP_EMBED) ==
	          -1);
	cr_assert(ue.cls == EC_TRANSIENT);
}

Test(providers, gemini_resp_text)
{
	struct usage u = {0};
	int cf = 0;

	cr_assert(resp_golden(&prov_gemini, "gemini/resp_text", EP_CHAT, &u,
	                      &cf) == 0);
	cr_assert(u.prompt_tokens == 8 && u.completion_tokens == 12 + 30);
	cr_assert(cf == 0);
}

Test(providers, gemini_resp_tools)
{
	struct usage u = {0};
	int cf = 0;

	cr_assert(resp_golden(&prov_gemini, "gemini/resp_tools", EP_CHAT, &u,
	                      &cf) == 0);
}

Test(providers, gemini_resp_safety)
{
	struct usage u = {0};
	int cf = 0;

	cr_assert(resp_golden(&prov_gemini, "gemini/resp_safety", EP_CHAT, &u,
	                      &cf) == 0);
	cr_assert(cf == 1);
}

Test(providers, gemini_resp_prompt_blocked)
{
	cr_assert(
	    resp_inline(&prov_gemini,
	                "{\"promptFeedback\":{"
	                "\"blockReason\":\"SAFETY\"},\"usageMetadata\":{}}",
	                EP_CHAT) == -1);
	cr_assert(ue.cls == EC_CONTENT_POLICY);
	cr_assert(strstr(ue.message, "SAFETY") != NULL);
}

Test(providers, gemini_resp_malformed)
{
	static const char *const bad[] = {
	    "",
	    "{",
	    "[]",
	    "{\"candidates\":3}",
	    "{\"candidates\":[1]}",
	    "{\"candidates\":[{\"content\":{\"parts\":"
	    "[{\"functionCall\":{\"name\":1}}]}}]}",
	    "{\"candidates\":[{"
	    "\"content\":{\"parts\":[{\"functionCall\":{\"name\":\"f\","
	    "\"args\":\"x\"}}]}}]}"};

	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		cr_assert(resp_inline(&prov_gemini, bad[i], EP_CHAT) == -1,
		          "accepted %s", bad[i]);
		cr_assert(ue.cls == EC_TRANSIENT, "%s", bad[i]);
	}
	cr_assert(
	    resp_inline(&prov_gemini,
	                "{\"error\":{\"code\":503,"
	                "\"message\":\"The model is overloaded.\",\"status\":"
	                "\"UNAVAILABLE\"}}",
	                EP_CHAT) == -1);
	cr_assert(ue.cls == EC_TRANSIENT);
}

Test(providers, gemini_stream_text)
{
	cr_assert(stream_golden(&prov_gemini, "gemini/stream_text", 1, 11) ==
	          1);
	cr_assert(st.usage.prompt_tokens == 5);
	cr_assert(st.usage.completion_tokens == 9);
}

Test(providers, gemini_stream_tools)
{
	cr_assert(stream_golden(&prov_gemini, "gemini/stream_tools", 0, 4096) ==
	          1);
	cr_assert(st.tool_seen && st.ntool == 2);
}

Test(providers, gemini_stream_error)
{
	cr_assert(stream_golden(&prov_gemini, "gemini/stream_error", 0, 4096) ==
	          -1);
	cr_assert(ue.cls == EC_RATE_LIMITED);
}

Test(providers, gemini_stream_safety)
{
	cr_assert(
	    stream_golden(&prov_gemini, "gemini/stream_safety", 0, 4096) == 1);
	cr_assert(st.content_filter);
}

Test(providers, gemini_stream_malformed)
{
	cr_assert(event_inline(&prov_gemini, "", "{\"candidates\":[") == -1);
	cr_assert(ue.cls == EC_TRANSIENT);
	cr_assert(event_inline(&prov_gemini, "",
	                       "{\"candidates\":[{\"content\":"
	                       "{\"parts\":{}}}]}") == -1);
	cr_assert(event_inline(&prov_gemini, "", "{\"candidates\":[7]}") == -1);
	cr_assert(event_inline(&prov_gemini, "",
	                       "{\"promptFeedback\":{"
	                       "\"blockReason\":\"OTHER\"}}") == -1);
	cr_assert(ue.cls == EC_CONTENT_POLICY);
}

/* ---- native passthrough ---- */

/* A prov_call for req as a native body of format fmt. */
static struct prov_call
native_call(int fmt, int stream)
{
	struct prov_call pc = call(EP_CHAT, stream);

	pc.native = &req;
	pc.native_fmt = fmt;
	pc.drop_keys = native_drop_keys;
	return pc;
}

/* Compare got with data file rel byte for byte (its final newline, which
 * editors add, aside). */
static void
expect_bytes(const char *rel, const char *got, size_t n)
{
	size_t wl;
	char *want = slurp(rel, &wl);

	if (wl && want[wl - 1] == '\n' && (n == 0 || got[n - 1] != '\n'))
		want[--wl] = '\0';
	cr_assert(n == wl && memcmp(got, want, n) == 0,
	          "%s differs\n got: %.*s\nwant: %s", rel, (int)n, got, want);
	free(want);
}

/* Feed stream file rel natively (format fmt) in chunks of step bytes. */
static int
stream_native(const struct provider *p, int fmt, const char *rel, size_t step)
{
	struct feed f = {.p = p};

	cr_assert(json_parse(&req, "{}", 2) == 0);
	f.pc = native_call(fmt, 1);
	st.include_usage = 1;
	return feed_file(&f, rel, step);
}

/* Translate a whole reply natively; the body in text. */
static int
resp_native(const struct provider *p, int fmt, const char *body,
            struct usage *u, int *cf)
{
	struct prov_call pc;

	cr_assert(json_parse(&req, "{}", 2) == 0);
	pc = native_call(fmt, 0);
	buf_reset(&out);
	memset(&ue, 0, sizeof ue);
	return p->response(&pc, body, strlen(body), &out, u, cf, &ue);
}

/* Feed one inline event natively. */
static int
event_native(const struct provider *p, int fmt, const char *ev,
             const char *data)
{
	struct prov_call pc;

	cr_assert(json_parse(&req, "{}", 2) == 0);
	pc = native_call(fmt, 1);
	memset(&ue, 0, sizeof ue);
	return p->stream_event(&pc, &st, ev, strlen(ev), data, strlen(data),
	                       &out, &ue);
}

Test(providers, formats_say_what_passes_through)
{
	cr_assert(prov_anthropic.formats ==
	          (PROV_FMT(FMT_CHAT) | PROV_FMT(FMT_MESSAGES)));
	cr_assert(prov_openai.formats ==
	          (PROV_FMT(FMT_CHAT) | PROV_FMT(FMT_RESPONSES)));
	cr_assert(prov_gemini.formats == PROV_FMT(FMT_CHAT));
	cr_assert(prov_azure.formats == PROV_FMT(FMT_CHAT));
}

Test(providers, copy_obj_replaces_model_and_drops_fields)
{
	static const struct {
		const char *in, *val, *want;
	} cases[] = {
	    {"{\"model\":\"a\",\"x\":1}", "M", "{\"model\":\"M\",\"x\":1}"},
	    {"{ \"x\" : 1.50 ,\n \"model\" :\"a\" }", "M",
	     "{ \"x\" : 1.50 ,\n \"model\" :\"M\" }"},
	    {"{\"x\":1e3}", "M", "{\"model\":\"M\",\"x\":1e3}"},
	    {"{}", "M", "{\"model\":\"M\"}"},
	    {"{\"timeout\":1,\"model\":\"a\"}", "M", "{\"model\":\"M\"}"},
	    {"{\"model\":\"a\" , \"timeout\":1 }", "M", "{\"model\":\"M\" }"},
	    {"{\"timeout\":1}", "M", "{\"model\":\"M\"}"},
	    {"{\"timeout\":1, \"x\":2}", "M", "{\"model\":\"M\", \"x\":2}"},
	    {"{\"fallbacks\":[\"b\"],\"num_retries\":2,\"x\":[]}", "M",
	     "{\"model\":\"M\",\"x\":[]}"},
	    {"{\"a\":{\"model\":\"keep\",\"timeout\":5},\"model\":\"z\"}", "M",
	     "{\"a\":{\"model\":\"keep\",\"timeout\":5},\"model\":\"M\"}"},
	    {"{\"model\":\"a\",\"timeout\":1}", NULL, "{\"model\":\"a\"}"},
	    {"{\"model\":1}", "q\"\\m", "{\"model\":\"q\\\"\\\\m\"}"},
	    /* llmfd's keys escaped are still llmfd's keys */
	    {"{\"\\u006eum_retries\":2,\"t\\u0069meout\":1,\"model\":\"a\"}",
	     "M", "{\"model\":\"M\"}"},
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		cr_assert(json_parse(&req, cases[i].in, strlen(cases[i].in)) ==
		          0);
		buf_reset(&out);
		prov_copy_obj(&req, "model", cases[i].val, native_drop_keys,
		              &out);
		cr_assert_str_eq(buf_cstr(&out), cases[i].want, "case %zu", i);
	}
}

Test(providers, anthropic_native_body_passes_through)
{
	char err[256] = "", params[] = "{\"temperature\":0.2}";
	char append[] = "Be brief.";
	struct prov_call pc;

	snprintf(dc.model, sizeof dc.model, "claude-x");
	dc.params = params;
	dc.system_prompt_append = append;
	dc.max_tokens = 99;
	load_req("anthropic/native_req.in.json");
	pc = native_call(FMT_MESSAGES, 0);
	cr_assert(prov_anthropic.build(&pc, &po, err, sizeof err) == 0, "%s",
	          err);
	expect_bytes("anthropic/native_req.out.json", po.body.data,
	             po.body.len);
	cr_assert_str_eq(buf_cstr(&po.path), "/base/v1/messages");
	cr_assert(strstr(buf_cstr(&po.headers), "x-api-key: KEY\r\n"));
	cr_assert(
	    strstr(buf_cstr(&po.headers), "anthropic-version: 2023-06-01\r\n"));
}

Test(providers, anthropic_native_forwards_version_and_betas)
{
	char err[256];
	struct prov_call pc;
	const char *h, *v;

	free(text);
	text = strdup("{\"model\":\"m\",\"max_tokens\":5,\"messages\":[]}");
	cr_assert(json_parse(&req, text, strlen(text)) == 0);
	pc = native_call(FMT_MESSAGES, 0);
	pc.fwd_headers = "anthropic-version: 2024-10-22\r\n"
	                 "anthropic-beta: prompt-caching-2024-07-31,"
	                 "interleaved-thinking-2025-05-14\r\n"
	                 "X-Api-Key: stolen\r\n"
	                 "Anthropic-Beta: token-efficient-tools-2025-02-19\r\n"
	                 "anthropic-beta: a\nx-injected: 1\r\n"
	                 "anthropic-beta-no-colon\r\n";
	cr_assert(prov_anthropic.build(&pc, &po, err, sizeof err) == 0);
	h = buf_cstr(&po.headers);
	v = strstr(h, "anthropic-version: ");
	cr_assert(v && strncmp(v, "anthropic-version: 2024-10-22\r\n", 31) == 0,
	          "%s", h);
	cr_assert(strstr(v + 1, "anthropic-version") == NULL, "%s", h);
	cr_assert(strstr(h, "anthropic-beta: prompt-caching-2024-07-31,"
	                    "interleaved-thinking-2025-05-14\r\n"));
	cr_assert(strstr(h, "Anthropic-Beta: token-efficient-tools-2025-02-19"
	                    "\r\n"));
	cr_assert(strstr(h, "stolen") == NULL &&
	              strstr(h, "injected") == NULL &&
	              strstr(h, "no-colon") == NULL,
	          "%s", h);
	cr_assert(strstr(h, "x-api-key: KEY\r\n"));
}

Test(providers, anthropic_native_rejects_other_bodies)
{
	char err[256] = "";
	struct prov_call pc;

	free(text);
	text = strdup("[1]");
	cr_assert(json_parse(&req, text, strlen(text)) == 0);
	pc = native_call(FMT_MESSAGES, 0);
	cr_assert(prov_anthropic.build(&pc, &po, err, sizeof err) == -1);
	cr_assert(strstr(err, "native") != NULL);
	cr_assert(json_parse(&req, "{}", 2) == 0);
	pc = native_call(FMT_RESPONSES, 0);
	cr_assert(prov_anthropic.build(&pc, &po, err, sizeof err) == -1);
}

/* count_tokens: the client's own body to {base}/v1/messages/count_tokens,
 * model replaced and llmfd's fields dropped, anthropic-version and
 * anthropic-beta forwarded; a translated body is refused. */
Test(providers, anthropic_count_tokens_build)
{
	char err[256] = "";
	struct prov_call pc;

	snprintf(dc.model, sizeof dc.model, "claude-x");
	free(text);
	text = strdup("{\"model\":\"claude\",\"timeout\":3,\"system\":\"s\","
	              "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}");
	cr_assert(json_parse(&req, text, strlen(text)) == 0);
	pc = native_call(FMT_MESSAGES, 0);
	pc.endpoint = EP_COUNT;
	pc.fwd_headers = "anthropic-version: 2023-06-01\r\n"
	                 "anthropic-beta: token-counting-2024-11-01\r\n";
	cr_assert(prov_anthropic.build(&pc, &po, err, sizeof err) == 0, "%s",
	          err);
	cr_assert_str_eq(buf_cstr(&po.path), "/base/v1/messages/count_tokens");
	cr_assert_str_eq(buf_cstr(&po.body),
	                 "{\"model\":\"claude-x\",\"system\":\"s\","
	                 "\"messages\":[{\"role\":\"user\",\"content\":"
	                 "\"hi\"}]}");
	cr_assert(strstr(buf_cstr(&po.headers), "x-api-key: KEY\r\n"));
	cr_assert(
	    strstr(buf_cstr(&po.headers), "anthropic-version: 2023-06-01\r\n"));
	cr_assert(strstr(buf_cstr(&po.headers),
	                 "anthropic-beta: token-counting-2024-11-01\r\n"));
	pc.native = NULL;
	cr_assert(prov_anthropic.build(&pc, &po, err, sizeof err) == -1);
	cr_assert(strstr(err, "count_tokens") != NULL, "%s", err);
}

/* A count answer goes back as it is; one without its count is malformed
 * (transient), an error object is classified. */
Test(providers, anthropic_count_tokens_response)
{
	static const char ok[] = "{\"input_tokens\": 42 }";
	static const char err[] = "{\"type\":\"error\",\"error\":{\"type\":"
	                          "\"overloaded_error\",\"message\":"
	                          "\"Overloaded\"}}";
	struct prov_call pc;
	struct usage u = {0};
	int cf = 0;

	cr_assert(json_parse(&req, "{}", 2) == 0);
	pc = native_call(FMT_MESSAGES, 0);
	pc.endpoint = EP_COUNT;
	cr_assert(prov_anthropic.response(&pc, ok, sizeof ok - 1, &out, &u, &cf,
	                                  &ue) == 0);
	cr_assert_str_eq(buf_cstr(&out), ok);
	buf_reset(&out);
	cr_assert(prov_anthropic.response(&pc, "{\"content\":[]}", 14, &out, &u,
	                                  &cf, &ue) == -1);
	cr_assert_eq(ue.cls, EC_TRANSIENT);
	cr_assert_eq(out.len, 0);
	memset(&ue, 0, sizeof ue);
	cr_assert(prov_anthropic.response(&pc, err, sizeof err - 1, &out, &u,
	                                  &cf, &ue) == -1);
	cr_assert_eq(ue.cls, EC_TRANSIENT);
	cr_assert(strstr(ue.message, "Overloaded") != NULL, "%s", ue.message);
}

/* Who counts tokens: Anthropic for a Messages body only; the providers
 * that never take one natively do not. */
Test(providers, counts_say_who_counts_tokens)
{
	cr_assert(provider_counts(&prov_anthropic, &dc, FMT_MESSAGES));
	cr_assert_not(provider_counts(&prov_anthropic, &dc, FMT_CHAT));
	cr_assert_not(provider_counts(&prov_openai, &dc, FMT_MESSAGES));
	cr_assert_not(provider_counts(&prov_openai, &dc, FMT_RESPONSES));
	cr_assert_not(provider_counts(&prov_gemini, &dc, FMT_MESSAGES));
	cr_assert_not(provider_counts(&prov_azure, &dc, FMT_MESSAGES));
	cr_assert_not(provider_counts(&prov_anthropic, &dc, -1));
}

Test(providers, anthropic_native_response_passes_through)
{
	struct usage u = {0};
	int cf = 0;
	size_t n;
	char *body;

	body = slurp("anthropic/native_resp.json", &n);
	cr_assert(resp_native(&prov_anthropic, FMT_MESSAGES, body, &u, &cf) ==
	          0);
	cr_assert(out.len == n && memcmp(out.data, body, n) == 0);
	cr_assert(u.prompt_tokens == 21 + 1500 + 3000);
	cr_assert(u.completion_tokens == 9);
	cr_assert(cf == 0);
	free(body);
	cr_assert(resp_native(&prov_anthropic, FMT_MESSAGES,
	                      "{\"type\":\"message\",\"content\":[],"
	                      "\"stop_reason\":\"refusal\"}",
	                      &u, &cf) == 0);
	cr_assert(cf == 1);
	cr_assert(resp_native(&prov_anthropic, FMT_MESSAGES,
	                      "{\"type\":\"error\",\"error\":{\"type\":"
	                      "\"rate_limit_error\",\"message\":\"slow\"}}",
	                      &u, &cf) == -1);
	cr_assert(ue.cls == EC_RATE_LIMITED);
	cr_assert(out.len == 0);
	cr_assert(resp_native(&prov_anthropic, FMT_MESSAGES, "{\"id\":1}", &u,
	                      &cf) == -1);
	cr_assert(strstr(ue.message, "malformed") != NULL);
}

Test(providers, anthropic_native_stream_passes_through)
{
	struct buf said = {0};
	struct stream_state tr;

	st.text = &said;
	cr_assert(stream_native(&prov_anthropic, FMT_MESSAGES,
	                        "anthropic/native_stream.sse", 7) == 1);
	expect_bytes("anthropic/native_stream.sse", out.data, out.len);
	cr_assert(strstr(buf_cstr(&out), "[DONE]") == NULL);
	cr_assert(st.usage.prompt_tokens == 12 + 100 + 2000);
	cr_assert(st.usage.completion_tokens == 89);
	cr_assert(st.content_seen && st.tool_seen && st.finished);
	cr_assert(st.ntool == 1 && !st.content_filter);
	cr_assert_str_eq(buf_cstr(&said), "Hello w\xc3\xb6rld");
	/* The same state as when the stream is translated. */
	tr = st;
	memset(&st, 0, sizeof st);
	buf_reset(&out);
	cr_assert(stream_golden_rc(&prov_anthropic,
	                           "anthropic/native_stream.sse") == 1);
	cr_assert(st.usage.prompt_tokens == tr.usage.prompt_tokens &&
	          st.usage.completion_tokens == tr.usage.completion_tokens);
	cr_assert(st.content_seen == tr.content_seen &&
	          st.tool_seen == tr.tool_seen && st.finished == tr.finished &&
	          st.ntool == tr.ntool &&
	          st.content_filter == tr.content_filter);
	stream_state_free(&tr);
	buf_free(&said);
}

Test(providers, anthropic_native_stream_refusal)
{
	cr_assert(stream_native(&prov_anthropic, FMT_MESSAGES,
	                        "anthropic/stream_refusal.sse", 4096) == 1);
	expect_bytes("anthropic/stream_refusal.sse", out.data, out.len);
	cr_assert(st.content_filter && st.finished);
}

Test(providers, anthropic_native_stream_error_classified)
{
	cr_assert(stream_native(&prov_anthropic, FMT_MESSAGES,
	                        "anthropic/native_stream_error.sse", 5) == -1);
	expect_bytes("anthropic/native_stream_error.out", out.data, out.len);
	cr_assert(ue.cls == EC_TRANSIENT);
	cr_assert_str_eq(ue.message, "Overloaded");
	cr_assert(st.content_seen && !st.finished);
	cr_assert(event_native(&prov_anthropic, FMT_MESSAGES, "message_start",
	                       "{\"type\":") == -1);
	cr_assert(strstr(ue.message, "malformed") != NULL);
}

Test(providers, openai_responses_body_passes_through)
{
	char err[256] = "";
	struct prov_call pc;

	snprintf(dc.model, sizeof dc.model, "gpt-4.1");
	load_req("openai_responses/req.in.json");
	pc = native_call(FMT_RESPONSES, 1);
	cr_assert(prov_openai.build(&pc, &po, err, sizeof err) == 0, "%s", err);
	expect_bytes("openai_responses/req.out.json", po.body.data,
	             po.body.len);
	cr_assert_str_eq(buf_cstr(&po.path), "/base/responses");
	cr_assert(
	    strstr(buf_cstr(&po.headers), "Authorization: Bearer KEY\r\n"));
}

Test(providers, openai_responses_rejects_other_bodies)
{
	char err[256] = "";
	struct prov_call pc;

	cr_assert(json_parse(&req, "{}", 2) == 0);
	pc = native_call(FMT_MESSAGES, 0);
	cr_assert(prov_openai.build(&pc, &po, err, sizeof err) == -1);
	cr_assert(strstr(err, "native") != NULL);
	pc = native_call(FMT_RESPONSES, 0);
	pc.endpoint = EP_EMBED;
	cr_assert(prov_openai.build(&pc, &po, err, sizeof err) == -1);
}

Test(providers, openai_responses_reply_passes_through)
{
	struct usage u = {0};
	int cf = 0;
	size_t n;
	char *body = slurp("openai_responses/resp.json", &n);

	cr_assert(resp_native(&prov_openai, FMT_RESPONSES, body, &u, &cf) == 0);
	cr_assert(out.len == n && memcmp(out.data, body, n) == 0);
	cr_assert(u.prompt_tokens == 36 && u.completion_tokens == 87);
	cr_assert(cf == 0);
	free(body);
	cr_assert(
	    resp_native(&prov_openai, FMT_RESPONSES,
	                "{\"status\":\"incomplete\",\"incomplete_details\":"
	                "{\"reason\":\"content_filter\"},\"output\":[]}",
	                &u, &cf) == 0);
	cr_assert(cf == 1);
	cr_assert(
	    resp_native(&prov_openai, FMT_RESPONSES,
	                "{\"status\":\"failed\",\"error\":{\"code\":"
	                "\"rate_limit_exceeded\",\"message\":\"slow down\"},"
	                "\"output\":[]}",
	                &u, &cf) == -1);
	cr_assert(ue.cls == EC_RATE_LIMITED);
	cr_assert_str_eq(ue.message, "slow down");
	cr_assert(resp_native(&prov_openai, FMT_RESPONSES,
	                      "{\"status\":\"failed\",\"error\":null,"
	                      "\"output\":[]}",
	                      &u, &cf) == -1);
	cr_assert(ue.cls == EC_TRANSIENT);
	cr_assert(resp_native(&prov_openai, FMT_RESPONSES,
	                      "{\"status\":\"completed\"}", &u, &cf) == -1);
	cr_assert(strstr(ue.message, "malformed") != NULL);
}

Test(providers, openai_responses_stream_text)
{
	struct buf said = {0};

	st.text = &said;
	cr_assert(stream_native(&prov_openai, FMT_RESPONSES,
	                        "openai_responses/stream_text.sse", 5) == 1);
	expect_bytes("openai_responses/stream_text.sse", out.data, out.len);
	cr_assert(st.usage.prompt_tokens == 37);
	cr_assert(st.usage.completion_tokens == 11);
	cr_assert(st.content_seen && !st.tool_seen && st.finished);
	cr_assert(!st.content_filter);
	cr_assert_str_eq(st.id, "resp_1");
	cr_assert_str_eq(st.model, "gpt-4.1-2025-04-14");
	cr_assert_str_eq(buf_cstr(&said), "Hi th\xc3\xa9re");
	buf_free(&said);
}

Test(providers, openai_responses_stream_tools)
{
	cr_assert(stream_native(&prov_openai, FMT_RESPONSES,
	                        "openai_responses/stream_tools.sse", 64) == 1);
	expect_bytes("openai_responses/stream_tools.sse", out.data, out.len);
	cr_assert(st.content_seen && st.tool_seen && st.ntool == 1);
	cr_assert(st.finished);
}

Test(providers, openai_responses_stream_incomplete)
{
	cr_assert(stream_native(&prov_openai, FMT_RESPONSES,
	                        "openai_responses/stream_incomplete.sse",
	                        4096) == 1);
	expect_bytes("openai_responses/stream_incomplete.sse", out.data,
	             out.len);
	cr_assert(st.content_filter && st.finished);
	cr_assert(st.usage.prompt_tokens == 5 &&
	          st.usage.completion_tokens == 2);
}

Test(providers, openai_responses_stream_failed)
{
	cr_assert(stream_native(&prov_openai, FMT_RESPONSES,
	                        "openai_responses/stream_failed.sse", 9) == -1);
	expect_bytes("openai_responses/stream_failed.out", out.data, out.len);
	cr_assert(ue.cls == EC_TRANSIENT);
	cr_assert_str_eq(ue.message,
	                 "The model failed to generate a response.");
	cr_assert(!st.finished);
}

Test(providers, openai_responses_error_codes)
{
	static const struct {
		const char *data;
		enum errclass cls;
	} cases[] = {
	    {"{\"type\":\"error\",\"code\":\"rate_limit_exceeded\",\"message\":"
	     "\"x\",\"param\":null,\"sequence_number\":3}",
	     EC_RATE_LIMITED},
	    {"{\"type\":\"error\",\"code\":\"context_length_exceeded\","
	     "\"message\":\"x\"}",
	     EC_CONTEXT_WINDOW},
	    {"{\"type\":\"error\",\"code\":\"server_error\",\"message\":\"x\"}",
	     EC_TRANSIENT},
	    {"{\"type\":\"error\",\"code\":\"invalid_prompt\",\"message\":"
	     "\"x\"}",
	     EC_BAD_REQUEST},
	    {"{\"type\":\"error\",\"code\":\"image_content_policy_violation\","
	     "\"message\":\"x\"}",
	     EC_CONTENT_POLICY},
	    {"{\"type\":\"error\",\"code\":\"insufficient_quota\",\"message\":"
	     "\"x\"}",
	     EC_QUOTA},
	    {"{\"type\":\"error\",\"code\":null,\"message\":\"x\"}",
	     EC_TRANSIENT},
	    {"{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_"
	     "error\","
	     "\"code\":\"context_length_exceeded\",\"message\":\"x\"}}",
	     EC_CONTEXT_WINDOW},
	    {"{\"type\":\"response.failed\",\"response\":{\"status\":"
	     "\"failed\","
	     "\"error\":{\"code\":\"rate_limit_exceeded\",\"message\":\"x\"}}}",
	     EC_RATE_LIMITED},
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		buf_reset(&out);
		cr_assert(event_native(&prov_openai, FMT_RESPONSES, "",
		                       cases[i].data) == -1,
		          "case %zu", i);
		cr_assert(ue.cls == cases[i].cls, "case %zu: %s", i,
		          errclass_name(ue.cls));
		cr_assert(out.len == 0);
	}
	cr_assert(event_native(&prov_openai, FMT_RESPONSES, "response.created",
	                       "[1]") == -1);
	cr_assert(strstr(ue.message, "malformed") != NULL);
	cr_assert(event_native(&prov_openai, FMT_RESPONSES, "keepalive",
	                       "{\"type\":\"keepalive\"}") == 0);
}

/* ---- bodies that keep the client's bytes (prov_obj_put, spans) ---- */

static const char *const bulk_keys[] = {"messages", "tools", NULL};

/* A chat body with a content of n bytes between llmfd's fields, odd
 * spacing around them; in text and req (read with json_parse_top). */
static void
big_body(size_t n)
{
	struct buf b = {0};

	buf_adds(&b,
	         "{ \"fallbacks\":[\"x\"], \"model\" : \"g\",\n \"messages\":"
	         "[{\"role\":\"user\",\"content\":\"");
	for (size_t i = 0; i < n; i++)
		buf_addc(&b, "lorem ipsum "[i % 12]);
	buf_adds(&b, "\"}], \"timeout\":30,\"temperature\":0.5 ,"
	             "\"metadata\":{\"a\":1} }");
	free(text);
	text = strdup(buf_cstr(&b));
	buf_free(&b);
	cr_assert(json_parse_top(&req, text, strlen(text), bulk_keys) == 0);
	cr_assert(req.shallow);
}

/* The body po holds, spans joined. */
static const char *
po_text(void)
{
	prov_flatten(&po);
	return buf_cstr(&po.body);
}

/* What big_body(n) must become upstream: llmfd's fields gone, the model
 * replaced, every other byte the client's; extra before the end. */
static char *
big_want(size_t n, const char *model, const char *extra)
{
	struct buf b = {0};
	char *s;

	if (model)
		buf_printf(&b, "{ \"model\" : \"%s\",\n ", model);
	else
		buf_adds(&b, "{\n ");
	buf_adds(&b, "\"messages\":[{\"role\":\"user\",\"content\":\"");
	for (size_t i = 0; i < n; i++)
		buf_addc(&b, "lorem ipsum "[i % 12]);
	buf_printf(&b, "\"}],\"temperature\":0.5%s }", extra ? extra : "");
	s = strdup(buf_cstr(&b));
	buf_free(&b);
	return s;
}

Test(providers, openai_body_refers_to_the_clients_bytes)
{
	char err[256] = "", *want;
	struct prov_call pc;
	int refs = 0;

	snprintf(dc.model, sizeof dc.model, "m");
	big_body(100000);
	pc = call(EP_CHAT, 0);
	pc.held = text;
	pc.held_len = strlen(text);
	cr_assert(prov_openai.top_only(&pc));
	cr_assert(prov_openai.build(&pc, &po, err, sizeof err) == 0, "%s", err);
	cr_assert(po.nspan >= 2);
	for (int i = 0; i < po.nspan; i++)
		if (po.span[i].ref) {
			refs++;
			cr_assert(po.span[i].ref >= text &&
			          po.span[i].ref + po.span[i].len <=
			              text + strlen(text));
			cr_assert(po.span[i].len >= PROV_REF_MIN);
		}
	cr_assert(refs == 1, "%d spans by reference", refs);
	cr_assert(po.body.len < 100, "%zu bytes copied", po.body.len);
	want = big_want(100000, "m", NULL);
	cr_assert(strcmp(po_text(), want) == 0);
	free(want);
}

Test(providers, openai_body_is_the_same_copied)
{
	char err[256] = "", *want;
	struct prov_call pc;

	snprintf(dc.model, sizeof dc.model, "m");
	big_body(5000);
	pc = call(EP_CHAT, 0);
	cr_assert(prov_openai.build(&pc, &po, err, sizeof err) == 0, "%s", err);
	cr_assert(po.nspan == 0);
	want = big_want(5000, "m", NULL);
	cr_assert_str_eq(buf_cstr(&po.body), want);
	free(want);
}

Test(providers, openai_body_params_and_azure_model)
{
	char err[256] = "", *want,
	     params[] = "{\"temperature\":1,\"top_p\":0.9}";
	struct prov_call pc;

	snprintf(dc.model, sizeof dc.model, "m");
	dc.params = params;
	big_body(9000);
	pc = call(EP_CHAT, 0);
	pc.held = text;
	pc.held_len = strlen(text);
	cr_assert(prov_openai.build(&pc, &po, err, sizeof err) == 0, "%s", err);
	want = big_want(9000, "m", ",\"top_p\":0.9");
	cr_assert(strcmp(po_text(), want) == 0);
	free(want);
	/* Azure: model left out (the deployment is in the path) */
	dc.params = NULL;
	snprintf(dc.azure_deployment, sizeof dc.azure_deployment, "dep");
	memset(&po.body, 0, sizeof po.body);
	po.nspan = 0;
	cr_assert(prov_azure.build(&pc, &po, err, sizeof err) == 0, "%s", err);
	want = big_want(9000, NULL, NULL);
	cr_assert(strcmp(po_text(), want) == 0, "%s", po.body.data);
	free(want);
}

/* More long runs than spans: the rest is copied, the bytes the same. */
Test(providers, obj_put_spans_run_out)
{
	struct prov_call pc = {.held = NULL};
	struct buf b = {0}, w = {0};
	const char *const drop[] = {"d", NULL};

	buf_addc(&b, '{');
	buf_addc(&w, '{');
	for (int i = 0; i < 3 * PROV_MAX_SPANS; i++) {
		buf_printf(&b, "%s\"k%d\":\"", i ? "," : "", i);
		buf_printf(&w, "%s\"k%d\":\"", i ? "," : "", i);
		for (int k = 0; k < PROV_REF_MIN; k++) {
			buf_addc(&b, 'a');
			buf_addc(&w, 'a');
		}
		buf_printf(&b, "\",\"d\":%d", i);
		buf_addc(&w, '"');
	}
	buf_addc(&b, '}');
	buf_addc(&w, '}');
	cr_assert(json_parse(&req, b.data, b.len) == 0);
	pc.held = b.data;
	pc.held_len = b.len;
	prov_obj_put(&pc, &req,
	             &(struct prov_edit){"model", NULL, drop, NULL, 0}, &po);
	cr_assert(po.nspan >= PROV_MAX_SPANS - 1 && po.nspan <= PROV_MAX_SPANS,
	          "%d spans", po.nspan);
	cr_assert_str_eq(po_text(), buf_cstr(&w));
	buf_free(&b);
	buf_free(&w);
}

/* drop_params: the request fields a deployment never gets. */

/* Parse s into req (and text). */
static void
str_req(const char *s)
{
	free(text);
	text = strdup(s);
	cr_assert(json_parse(&req, text, strlen(text)) == 0);
}

/* Build body s for provider p and return the body text. */
static const char *
drop_build(const struct provider *p, const char *s)
{
	char err[256] = "";
	struct prov_call pc;

	str_req(s);
	buf_free(&po.path);
	buf_free(&po.headers);
	buf_free(&po.body);
	po.nspan = 0;
	pc = call(EP_CHAT, 0);
	cr_assert(p->build(&pc, &po, err, sizeof err) == 0, "%s", err);
	return po_text();
}

#define DROP_BODY                                                              \
	"{\"model\":\"g\",\"messages\":[{\"role\":\"user\",\"content\":"       \
	"\"hi\"}],\"top_k\":5,\"reasoning_effort\":\"high\","                  \
	"\"temperature\":0.5}"

Test(providers, drop_params_default_top_k_for_openai_and_azure)
{
	snprintf(dc.model, sizeof dc.model, "m");
	dc.ndrop_params = -1; /* not set in the config */
	snprintf(dc.host, sizeof dc.host, "api.openai.com");
	dc.provider = PROV_OPENAI;
	cr_assert(strstr(drop_build(&prov_openai, DROP_BODY), "top_k") == NULL);
	cr_assert(strstr(buf_cstr(&po.body), "\"temperature\":0.5"));
	cr_assert(strstr(buf_cstr(&po.body), "\"reasoning_effort\":\"high\""));
	/* an OpenAI-compatible server (vLLM, Ollama) takes top_k */
	snprintf(dc.host, sizeof dc.host, "127.0.0.1");
	cr_assert(strstr(drop_build(&prov_openai, DROP_BODY), "\"top_k\":5"));
	/* Azure refuses it wherever it is */
	dc.provider = PROV_AZURE;
	snprintf(dc.azure_deployment, sizeof dc.azure_deployment, "dep");
	cr_assert(strstr(drop_build(&prov_azure, DROP_BODY), "top_k") == NULL);
	cr_assert(strstr(buf_cstr(&po.body), "\"messages\""));
}

Test(providers, drop_params_configured_list_replaces_the_default)
{
	char names[2][CFG_NAME_MAX] = {"reasoning_effort", "temperature"};

	snprintf(dc.model, sizeof dc.model, "m");
	snprintf(dc.host, sizeof dc.host, "api.openai.com");
	dc.provider = PROV_OPENAI;
	dc.drop_params = names;
	dc.ndrop_params = 2;
	drop_build(&prov_openai, DROP_BODY);
	cr_assert(strstr(buf_cstr(&po.body), "reasoning_effort") == NULL);
	cr_assert(strstr(buf_cstr(&po.body), "temperature") == NULL);
	cr_assert(strstr(buf_cstr(&po.body), "\"top_k\":5")); /* not listed */
	/* the rebuilt body (messages changed) leaves them out too */
	dc.system_prompt_append = "Be brief.";
	drop_build(&prov_openai, DROP_BODY);
	cr_assert(strstr(buf_cstr(&po.body), "Be brief."));
	cr_assert(strstr(buf_cstr(&po.body), "reasoning_effort") == NULL);
	cr_assert(strstr(buf_cstr(&po.body), "temperature") == NULL);
	dc.system_prompt_append = NULL;
	/* an empty list: nothing dropped, not even the default */
	dc.ndrop_params = 0;
	cr_assert(strstr(drop_build(&prov_openai, DROP_BODY), "\"top_k\":5"));
	dc.drop_params = NULL;
}

Test(providers, drop_params_apply_to_translating_providers)
{
	char names[1][CFG_NAME_MAX] = {"top_k"};

	snprintf(dc.model, sizeof dc.model, "m");
	dc.provider = PROV_ANTHROPIC;
	dc.max_tokens = 100;
	cr_assert(
	    strstr(drop_build(&prov_anthropic, DROP_BODY), "\"top_k\":5"));
	dc.drop_params = names;
	dc.ndrop_params = 1;
	cr_assert(strstr(drop_build(&prov_anthropic, DROP_BODY), "top_k") ==
	          NULL);
	cr_assert(strstr(buf_cstr(&po.body), "\"temperature\":0.5"));
	dc.drop_params = NULL;
}

/* PDFs: a Chat file part (what Messages documents and Responses
 * input_file become) goes to each translating provider in its own form;
 * one without inline data is refused, saying why. */

#define PDF_BODY(part)                                                         \
	"{\"model\":\"g\",\"max_tokens\":9,\"messages\":[{\"role\":\"user\","  \
	"\"content\":[" part ",{\"type\":\"text\",\"text\":\"sum up\"}]}]}"
#define PDF_PART                                                               \
	"{\"type\":\"file\",\"file\":{\"filename\":\"a.pdf\",\"file_data\":"   \
	"\"data:application/pdf;base64,JVBERi0=\"}}"

Test(providers, file_part_to_anthropic_document)
{
	snprintf(dc.model, sizeof dc.model, "m");
	drop_build(&prov_anthropic, PDF_BODY(PDF_PART));
	cr_assert_not_null(
	    strstr(buf_cstr(&po.body),
	           "\"content\":[{\"type\":\"document\",\"source\":{\"type\":"
	           "\"base64\",\"media_type\":\"application/pdf\",\"data\":"
	           "\"JVBERi0=\"}},{\"type\":\"text\",\"text\":\"sum up\"}]"),
	    "%s", buf_cstr(&po.body));
}

Test(providers, file_part_to_gemini_inline_data)
{
	snprintf(dc.model, sizeof dc.model, "m");
	drop_build(&prov_gemini, PDF_BODY(PDF_PART));
	cr_assert_not_null(
	    strstr(buf_cstr(&po.body),
	           "\"parts\":[{\"inlineData\":{\"mimeType\":"
	           "\"application/pdf\",\"data\":\"JVBERi0=\"}},{\"text\":"
	           "\"sum up\"}]"),
	    "%s", buf_cstr(&po.body));
}

Test(providers, file_part_without_data_is_refused)
{
	char err[256] = "";
	struct prov_call pc;

	snprintf(dc.model, sizeof dc.model, "m");
	str_req(PDF_BODY("{\"type\":\"file\",\"file\":{\"file_id\":\"f1\"}}"));
	pc = call(EP_CHAT, 0);
	cr_assert_eq(prov_anthropic.build(&pc, &po, err, sizeof err), -1);
	cr_assert_not_null(strstr(err, "file_data as a base64 data: URL"), "%s",
	                   err);
	str_req(PDF_BODY("{\"type\":\"file\",\"file\":{\"file_data\":"
	                 "\"https://x/a.pdf\"}}"));
	pc = call(EP_CHAT, 0);
	cr_assert_eq(prov_gemini.build(&pc, &po, err, sizeof err), -1);
	cr_assert_not_null(strstr(err, "file_data"), "%s", err);
}

/* reasoning_effort -> a thinking budget (INGRESS.md §3: effort<->budget
 * per deployment). */

#define EFFORT_BODY(effort, extra)                                             \
	"{\"model\":\"g\",\"max_tokens\":64000,\"messages\":[{\"role\":"       \
	"\"user\",\"content\":\"hi\"}],\"temperature\":0.5,\"top_k\":4,"       \
	"\"reasoning_effort\":\"" effort "\"" extra "}"

Test(providers, effort_to_claude_thinking_by_model)
{
	const char *b;

	dc.nthink = -1; /* not set: by model */
	snprintf(dc.model, sizeof dc.model, "claude-sonnet-4-5");
	b = drop_build(&prov_anthropic, EFFORT_BODY("high", ""));
	cr_assert_not_null(strstr(b, "\"thinking\":{\"type\":\"enabled\","
	                             "\"budget_tokens\":16384}"),
	                   "%s", b);
	/* extended thinking refuses sampling settings */
	cr_assert_null(strstr(b, "temperature"), "%s", b);
	cr_assert_null(strstr(b, "top_k"), "%s", b);
	b = drop_build(&prov_anthropic, EFFORT_BODY("low", ""));
	cr_assert_not_null(strstr(b, "\"budget_tokens\":1024"), "%s", b);
	/* none and minimal do not think */
	b = drop_build(&prov_anthropic, EFFORT_BODY("minimal", ""));
	cr_assert_null(strstr(b, "thinking"), "%s", b);
	cr_assert_not_null(strstr(b, "\"temperature\":0.5"), "%s", b);
	/* a model from before extended thinking is not asked to */
	snprintf(dc.model, sizeof dc.model, "claude-3-5-haiku-20241022");
	b = drop_build(&prov_anthropic, EFFORT_BODY("high", ""));
	cr_assert_null(strstr(b, "thinking"), "%s", b);
	cr_assert_not_null(strstr(b, "\"top_k\":4"), "%s", b);
}

Test(providers, effort_to_claude_thinking_within_max_tokens)
{
	const char *b;

	dc.nthink = -1;
	snprintf(dc.model, sizeof dc.model, "claude-opus-4-1");
	/* at most half of max_tokens */
	b = drop_build(&prov_anthropic,
	               "{\"model\":\"g\",\"max_tokens\":5000,\"messages\":[{"
	               "\"role\":\"user\",\"content\":\"hi\"}],"
	               "\"reasoning_effort\":\"high\"}");
	cr_assert_not_null(strstr(b, "\"budget_tokens\":2500"), "%s", b);
	/* under Anthropic's 1024 minimum: no thinking */
	b = drop_build(&prov_anthropic,
	               "{\"model\":\"g\",\"max_tokens\":1500,\"messages\":[{"
	               "\"role\":\"user\",\"content\":\"hi\"}],"
	               "\"reasoning_effort\":\"medium\"}");
	cr_assert_null(strstr(b, "thinking"), "%s", b);
	/* a forced tool choice cannot think */
	b = drop_build(&prov_anthropic,
	               EFFORT_BODY("high", ",\"tools\":[{\"type\":\"function\","
	                                   "\"function\":{\"name\":\"f\"}}],"
	                                   "\"tool_choice\":\"required\""));
	cr_assert_null(strstr(b, "thinking"), "%s", b);
	cr_assert_not_null(strstr(b, "\"type\":\"any\""), "%s", b);
}

Test(providers, effort_budgets_configured)
{
	const char *b;

	snprintf(dc.model, sizeof dc.model, "claude-3-5-sonnet");
	dc.nthink = 3;
	dc.think_budget[0] = 0;
	dc.think_budget[1] = 3000;
	dc.think_budget[2] = 5000;
	b = drop_build(&prov_anthropic, EFFORT_BODY("medium", ""));
	cr_assert_not_null(strstr(b, "\"budget_tokens\":3000"), "%s", b);
	b = drop_build(&prov_anthropic, EFFORT_BODY("low", ""));
	cr_assert_null(strstr(b, "thinking"), "%s", b);
	dc.nthink = 0; /* thinking_budgets = [ ] */
	snprintf(dc.model, sizeof dc.model, "claude-sonnet-4-5");
	b = drop_build(&prov_anthropic, EFFORT_BODY("high", ""));
	cr_assert_null(strstr(b, "thinking"), "%s", b);
}

Test(providers, effort_to_gemini_thinking_config)
{
	const char *b;

	dc.nthink = -1;
	snprintf(dc.model, sizeof dc.model, "gemini-2.5-pro");
	b = drop_build(&prov_gemini, EFFORT_BODY("medium", ""));
	cr_assert_not_null(
	    strstr(b, "\"thinkingConfig\":{\"thinkingBudget\":8192}"), "%s", b);
	cr_assert_not_null(strstr(b, "\"temperature\":0.5"), "%s", b);
	snprintf(dc.model, sizeof dc.model, "gemini-2.0-flash");
	b = drop_build(&prov_gemini, EFFORT_BODY("medium", ""));
	cr_assert_null(strstr(b, "thinkingConfig"), "%s", b);
}

/* Native text deltas are only picked (prov_native_fast), never parsed
 * whole: still refused when broken, noted when whole, and other deltas
 * still noted from the whole event. */
Test(providers, native_text_deltas_picked)
{
	struct buf said = {0};

	memset(&st, 0, sizeof st);
	st.text = &said;
	cr_assert(event_native(
	              &prov_anthropic, FMT_MESSAGES, "content_block_delta",
	              "{\"type\":\"content_block_delta\",\"index\":0,"
	              "\"delta\":{\"type\":\"text_delta\",\"text\":5}}") == -1);
	cr_assert(strstr(ue.message, "text_delta without text") != NULL);
	cr_assert(
	    event_native(&prov_anthropic, FMT_MESSAGES, "content_block_delta",
	                 "{\"type\":\"content_block_delta\",\"delta\":{"
	                 "\"type\":\"text_delta\",\"text\":\"a\"}") == -1);
	cr_assert(strstr(ue.message, "malformed") != NULL);
	cr_assert(event_native(&prov_anthropic, FMT_MESSAGES,
	                       "content_block_delta",
	                       "{\"delta\":{\"type\":\"text_delta\",\"text\":"
	                       "\"\"}}") == 0);
	cr_assert(!st.content_seen && said.len == 0);
	cr_assert(event_native(&prov_anthropic, FMT_MESSAGES, "x",
	                       "{\"type\":\"content_block_delta\",\"index\":0,"
	                       "\"delta\":{\"type\":\"text_delta\",\"text\":"
	                       "\"h\\u00e9\"}}") == 0);
	cr_assert(st.content_seen && st.created != 0);
	cr_assert_str_eq(buf_cstr(&said), "h\xc3\xa9");
	/* an argument delta outside a tool block goes the whole way */
	cr_assert(event_native(&prov_anthropic, FMT_MESSAGES,
	                       "content_block_delta",
	                       "{\"type\":\"content_block_delta\",\"index\":3,"
	                       "\"delta\":{\"type\":\"input_json_delta\","
	                       "\"partial_json\":\"{\"}}") == -1);
	cr_assert(strstr(ue.message, "outside a tool_use block") != NULL);
	memset(&st, 0, sizeof st);
	buf_reset(&said);
	st.text = &said;
	cr_assert(event_native(&prov_openai, FMT_RESPONSES,
	                       "response.output_text.delta",
	                       "{\"type\":\"response.output_text.delta\","
	                       "\"delta\":\"x\"") == -1);
	cr_assert(strstr(ue.message, "malformed") != NULL);
	cr_assert(event_native(&prov_openai, FMT_RESPONSES,
	                       "response.output_text.delta",
	                       "{\"delta\":\"y\\n\"}") == 0);
	cr_assert(st.content_seen);
	cr_assert_str_eq(buf_cstr(&said), "y\n");
	buf_free(&said);
}

/* A whole OpenAI reply is read with json_pick when it has the usual shape
 * and by the full parse otherwise: either way the verdict, the usage, the
 * content-filter flag and the bytes passed through are what the full
 * parse gives. */
Test(providers, openai_whole_reply_read_as_before)
{
	static const char ok[] =
	    "{\"id\":\"c\",\"object\":\"chat.completion\",\"choices\":[{"
	    "\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":"
	    "\"hi \\\"there\\\"\"},\"finish_reason\":\"stop\"}],\"usage\":{"
	    "\"prompt_tokens\":11,\"completion_tokens\":7,"
	    "\"prompt_tokens_details\":{\"cached_tokens\":5}},\"error\":null}";
	static const char filt[] =
	    "{\"choices\":[{\"finish_reason\":\"content_filter\"}],"
	    "\"usage\":7,\"choices\":5}";
	static const char emb[] = "{\"data\":[{\"embedding\":[0.1]}],"
	                          "\"usage\":{\"prompt_tokens\":3}}";
	struct prov_call pc;
	struct usage u;
	int cf;

	cr_assert(json_parse(&req, "{}", 2) == 0);
	pc = call(EP_CHAT, 0);
	memset(&u, 0, sizeof u);
	cf = -1;
	buf_reset(&out);
	cr_assert(prov_openai.response(&pc, ok, sizeof ok - 1, &out, &u, &cf,
	                               &ue) == 0);
	cr_assert(out.len == sizeof ok - 1 &&
	          memcmp(out.data, ok, out.len) == 0);
	cr_assert(u.prompt_tokens == 11 && u.completion_tokens == 7 &&
	          u.cached_tokens == 5 && cf == 0);

	/* content_filter; usage that is not an object is not read; the
	 * first of duplicate keys counts, as json_get reads it */
	memset(&u, 0, sizeof u);
	buf_reset(&out);
	cr_assert(prov_openai.response(&pc, filt, sizeof filt - 1, &out, &u,
	                               &cf, &ue) == 0);
	cr_assert(cf == 1 && u.prompt_tokens == 0);

	/* errors and odd shapes answer as the full parse does */
	cr_assert(resp_inline(&prov_openai,
	                      "{\"error\":{\"message\":\"boom\",\"type\":"
	                      "\"server_error\"},\"choices\":[]}",
	                      EP_CHAT) == -1);
	cr_assert(strstr(ue.message, "boom") != NULL, "%s", ue.message);
	cr_assert(resp_inline(&prov_openai,
	                      "{\"type\":\"error\",\"error\":{\"type\":"
	                      "\"overloaded_error\",\"message\":\"busy\"},"
	                      "\"choices\":[]}",
	                      EP_CHAT) == -1);
	cr_assert(strstr(ue.message, "busy") != NULL, "%s", ue.message);
	cr_assert(resp_inline(&prov_openai, "{\"object\":\"x\"}", EP_CHAT) ==
	          -1);
	cr_assert(strstr(ue.message, "no 'choices' array") != NULL, "%s",
	          ue.message);
	cr_assert(resp_inline(&prov_openai, "{\"choices\":{}}", EP_CHAT) == -1);
	cr_assert(resp_inline(&prov_openai, "[1]", EP_CHAT) == -1);
	cr_assert(strstr(ue.message, "not a JSON object") != NULL, "%s",
	          ue.message);
	cr_assert(resp_inline(&prov_openai, "{\"choices\":[1,]}", EP_CHAT) ==
	          -1);
	cr_assert(ue.cls == EC_TRANSIENT);

	/* embeddings: data, not choices */
	pc = call(EP_EMBED, 0);
	memset(&u, 0, sizeof u);
	buf_reset(&out);
	cr_assert(prov_openai.response(&pc, emb, sizeof emb - 1, &out, &u, &cf,
	                               &ue) == 0);
	cr_assert(u.prompt_tokens == 3);
	cr_assert(resp_inline(&prov_openai, "{\"choices\":[]}", EP_EMBED) ==
	          -1);
}
