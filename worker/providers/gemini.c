/* Google Gemini (generativelanguage v1beta): OpenAI chat requests become
 * generateContent / streamGenerateContent calls (contents with user/model
 * roles, systemInstruction, generationConfig, functionDeclarations), and
 * embeddings become embedContent / batchEmbedContents; replies and SSE
 * events (each a whole response) are translated back. */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "common/b64.h"
#include "worker/provider.h"

#define GEM_NO_VALUES "no 'embedding' or 'embeddings' values"
#define GEM_IMAGE_B64 "{\"inlineData\":{\"mimeType\":%m,\"data\":%d}}"
#define GEM_IMAGE_URL "{\"fileData\":{\"mimeType\":%m,\"fileUri\":%u}}"
#define GEM_FILE_B64  "{\"inlineData\":{\"mimeType\":%m,\"data\":%d}}"

/* The model id for URLs, without a "models/" prefix. */
static const char *
gem_model(const struct prov_call *pc)
{
	const char *m = prov_model(pc);

	return strncmp(m, "models/", 7) == 0 ? m + 7 : m;
}

/* Write assistant tool_calls as functionCall parts. */
static int
gem_function_calls(struct prov_xlate *x, struct jw *jw, int tcs)
{
	const struct json *j = x->j;
	int n = json_size(j, tcs), f;

	for (int i = 0; i < n; i++) {
		f = json_get(j, json_at(j, tcs, i), "function");
		if (json_type(j, json_get(j, f, "name")) != JSMN_STRING)
			return prov_fail(x, "tool call without a name");
		jw_obj(jw);
		jw_key(jw, "functionCall");
		jw_obj(jw);
		jw_key(jw, "name");
		prov_raw(jw, j, json_get(j, f, "name"));
		jw_key(jw, "args");
		prov_args_object(jw, j, json_get(j, f, "arguments"));
		jw_obj_end(jw);
		jw_obj_end(jw);
	}
	return 0;
}

/* The function name of the tool call with id (string token id) made by an
 * earlier assistant message; -1 if none. */
static int
gem_tool_name(struct prov_xlate *x, int id, int before)
{
	const struct json *j = x->j;
	char want[256];
	int m, tcs, tc, n;

	if (json_str(j, id, want, sizeof want) < 0)
		return -1;
	for (int i = before - 1; i >= 0; i--) {
		m = json_at(j, x->msgs, i);
		tcs = json_get(j, m, "tool_calls");
		n = json_type(j, tcs) == JSMN_ARRAY ? json_size(j, tcs) : 0;
		for (int k = 0; k < n; k++) {
			tc = json_at(j, tcs, k);
			if (json_eq(j, json_get(j, tc, "id"), want))
				return json_path(j, tc, "function.name");
		}
	}
	return -1;
}

/* Write a tool message (index i) as a functionResponse part. */
static int
gem_tool_response(struct prov_xlate *x, struct jw *jw, int m, int i)
{
	const struct json *j = x->j;
	int name = gem_tool_name(x, json_get(j, m, "tool_call_id"), i);
	struct buf t = {0};

	if (json_type(j, name) != JSMN_STRING)
		name = json_get(j, m, "name");
	if (json_type(j, name) != JSMN_STRING)
		return prov_fail(x, "tool message whose tool_call_id matches "
		                    "no earlier tool call");
	if (prov_text_of(j, json_get(j, m, "content"), &t) == -1) {
		buf_free(&t);
		return prov_fail(x, "tool message content must be text");
	}
	jw_obj(jw);
	jw_key(jw, "functionResponse");
	jw_obj(jw);
	jw_key(jw, "name");
	prov_raw(jw, j, name);
	jw_key(jw, "response");
	jw_obj(jw);
	jw_key(jw, "content");
	prov_json_text(jw, t.data ? t.data : "", t.len, 1);
	jw_obj_end(jw);
	jw_obj_end(jw);
	jw_obj_end(jw);
	buf_free(&t);
	return 0;
}

/* Write tools as one functionDeclarations list (JSON Schema parameters
 * go in parametersJsonSchema, which takes full JSON Schema). */
static void
gem_tools(struct jw *jw, const struct json *j, int tools)
{
	jw_key(jw, "tools");
	jw_arr(jw);
	jw_obj(jw);
	jw_key(jw, "functionDeclarations");
	prov_tools(jw, j, tools, "parametersJsonSchema", NULL);
	jw_obj_end(jw);
	jw_arr_end(jw);
}

/* Write toolConfig from tool_choice. */
static void
gem_tool_config(const struct prov_call *pc, struct jw *jw)
{
	const struct json *s;
	int tc = prov_opt(pc, "tool_choice", &s);
	int fn = json_path(s, tc, "function.name");

	if (tc < 0)
		return;
	jw_key(jw, "toolConfig");
	jw_obj(jw);
	jw_key(jw, "functionCallingConfig");
	jw_obj(jw);
	jw_key(jw, "mode");
	if (json_eq(s, tc, "none"))
		jw_cstr(jw, "NONE");
	else if (json_eq(s, tc, "required") || fn >= 0)
		jw_cstr(jw, "ANY");
	else
		jw_cstr(jw, "AUTO");
	if (json_type(s, fn) == JSMN_STRING) {
		jw_key(jw, "allowedFunctionNames");
		jw_arr(jw);
		prov_raw(jw, s, fn);
		jw_arr_end(jw);
	}
	jw_obj_end(jw);
	jw_obj_end(jw);
}

/* Write numeric generationConfig fields mapped from OpenAI names. */
static void
gem_gen_numbers(const struct prov_call *pc, struct jw *jw)
{
	static const struct {
		const char *from, *to;
		double lo, hi;
	} map[] = {
	    {"temperature", "temperature", 0, 2},
	    {"top_p", "topP", 0, 1},
	    {"top_k", "topK", 1, 1e9},
	    {"n", "candidateCount", 1, 8},
	    {"seed", "seed", -2147483648.0, 2147483647.0},
	    {"presence_penalty", "presencePenalty", -2, 2},
	    {"frequency_penalty", "frequencyPenalty", -2, 2},
	};

	for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
		prov_num(pc, jw, map[i].from, map[i].to, map[i].lo, map[i].hi);
}

/* Write stopSequences and the JSON response settings. */
static void
gem_gen_format(const struct prov_call *pc, struct jw *jw)
{
	const struct json *s;
	int t = prov_opt(pc, "response_format", &s);
	int ty = json_get(s, t, "type"), sc;

	prov_stop(pc, jw, "stopSequences");
	if (!json_eq(s, ty, "json_object") && !json_eq(s, ty, "json_schema"))
		return;
	jw_key(jw, "responseMimeType");
	jw_cstr(jw, "application/json");
	sc = json_path(s, t, "json_schema.schema");
	if (json_type(s, sc) == JSMN_OBJECT) {
		jw_key(jw, "responseJsonSchema");
		prov_raw(jw, s, sc);
	}
}

/* Write generationConfig when any field is set (a reasoning_effort as a
 * thinkingConfig budget). */
static void
gem_gen_config(const struct prov_call *pc, struct jw *jw)
{
	struct buf g = {0};
	struct jw gw;
	long long max, budget;

	jw_init(&gw, &g);
	jw_obj(&gw);
	if ((max = prov_max_tokens(pc)) > 0) {
		jw_key(&gw, "maxOutputTokens");
		jw_int(&gw, max);
	}
	gem_gen_numbers(pc, &gw);
	gem_gen_format(pc, &gw);
	if ((budget = prov_thinking_budget(pc, THINK_GEMINI)) > 0) {
		jw_key(&gw, "thinkingConfig");
		jw_obj(&gw);
		jw_key(&gw, "thinkingBudget");
		jw_int(&gw, budget);
		jw_obj_end(&gw);
	}
	jw_obj_end(&gw);
	if (g.len > 2) {
		jw_key(jw, "generationConfig");
		jw_raw(jw, g.data, g.len);
	}
	buf_free(&g);
}

/* Write systemInstruction from the lifted text and the append. */
static void
gem_system(struct prov_xlate *x, struct jw *jw)
{
	const char *app = x->pc->d->system_prompt_append;

	if (app)
		prov_sys_add(x, app, strlen(app));
	if (x->sys.len == 0)
		return;
	jw_key(jw, "systemInstruction");
	jw_obj(jw);
	jw_key(jw, "parts");
	jw_arr(jw);
	jw_obj(jw);
	jw_key(jw, "text");
	jw_str(jw, x->sys.data, x->sys.len);
	jw_obj_end(jw);
	jw_arr_end(jw);
	jw_obj_end(jw);
}

/* The generateContent body members: contents, system, config, tools. */
static void
gem_members(struct prov_xlate *x, struct jw *jw)
{
	const struct prov_call *pc = x->pc;
	const struct json *s;
	int t = prov_opt(pc, "tools", &s);

	jw_key(jw, "contents");
	jw_raw(jw, x->turns.data, x->turns.len);
	gem_system(x, jw);
	gem_gen_config(pc, jw);
	if (json_type(s, t) == JSMN_ARRAY && json_size(s, t) > 0) {
		gem_tools(jw, s, t);
		gem_tool_config(pc, jw);
	}
}

/* How OpenAI messages become Gemini contents. */
static const struct prov_dialect gem_dialect = {
    .name = "gemini",
    .partkey = "parts",
    .assistant = "model",
    .image = {GEM_IMAGE_B64, GEM_IMAGE_URL},
    .file = GEM_FILE_B64,
    .tool_calls = gem_function_calls,
    .tool_result = gem_tool_response,
    .members = gem_members,
};

/* Write {"parts":[{"text":s}]} (plus outputDimensionality) for one input. */
static void
gem_embed_item(const struct prov_call *pc, struct jw *jw, const struct json *j,
               int s)
{
	const struct json *ds;
	int dim = prov_opt(pc, "dimensions", &ds);

	jw_key(jw, "content");
	jw_obj(jw);
	jw_key(jw, "parts");
	jw_arr(jw);
	jw_obj(jw);
	jw_key(jw, "text");
	prov_raw(jw, j, s);
	jw_obj_end(jw);
	jw_arr_end(jw);
	jw_obj_end(jw);
	if (json_type(ds, dim) == JSMN_PRIMITIVE) {
		jw_key(jw, "outputDimensionality");
		prov_raw(jw, ds, dim);
	}
}

/* Write the batchEmbedContents requests list for an array of strings. */
static void
gem_embed_batch(const struct prov_call *pc, struct jw *jw, int in)
{
	const struct json *j = pc->req;
	int n = json_size(j, in);
	struct buf m = {0};

	buf_printf(&m, "models/%s", gem_model(pc));
	jw_key(jw, "requests");
	jw_arr(jw);
	for (int i = 0; i < n; i++) {
		jw_obj(jw);
		jw_key(jw, "model");
		jw_str(jw, m.data, m.len);
		gem_embed_item(pc, jw, j, json_at(j, in, i));
		jw_obj_end(jw);
	}
	jw_arr_end(jw);
	buf_free(&m);
}

/* Build an embedContent (string) or batchEmbedContents (array) call. */
static int
gem_embed_build(const struct prov_call *pc, struct prov_out *o, char *err,
                size_t errsz)
{
	const struct json *j = pc->req;
	int in = json_get(j, 0, "input");
	int batch = json_type(j, in) == JSMN_ARRAY;
	int n = batch ? json_size(j, in) : 1;
	struct jw jw;

	for (int i = 0; i < n; i++)
		if (json_type(j, batch ? json_at(j, in, i) : in) !=
		    JSMN_STRING) {
			snprintf(err, errsz,
			         "gemini: embeddings 'input' must "
			         "be a string or an array of strings");
			return -1;
		}
	buf_printf(&o->path, "%s/v1beta/models/", pc->d->path);
	prov_urlenc(&o->path, gem_model(pc));
	buf_adds(&o->path, batch ? ":batchEmbedContents" : ":embedContent");
	jw_init(&jw, &o->body);
	jw_obj(&jw);
	if (batch)
		gem_embed_batch(pc, &jw, in);
	else
		gem_embed_item(pc, &jw, j, in);
	jw_obj_end(&jw);
	return 0;
}

/* The generateContent body for pc (Gemini on Vertex too). */
int
gem_body(const struct prov_call *pc, struct buf *out, char *err, size_t errsz)
{
	return prov_xlate_body(pc, &gem_dialect, out, err, errsz);
}

/* Build a generateContent (streamGenerateContent) call. */
static int
gem_chat_build(const struct prov_call *pc, struct prov_out *o, char *err,
               size_t errsz)
{
	buf_printf(&o->path, "%s/v1beta/models/", pc->d->path);
	prov_urlenc(&o->path, gem_model(pc));
	buf_adds(&o->path, pc->stream ? ":streamGenerateContent?alt=sse"
	                              : ":generateContent");
	return prov_xlate_body(pc, &gem_dialect, &o->body, err, errsz);
}

/* Build the upstream request for chat or embeddings. */
static int
gem_build(const struct prov_call *pc, struct prov_out *o, char *err,
          size_t errsz)
{
	const struct deploy_cfg *d = pc->d;
	int rc = pc->endpoint == EP_EMBED ? gem_embed_build(pc, o, err, errsz)
	                                  : gem_chat_build(pc, o, err, errsz);

	if (rc == -1)
		return -1;
	if (d->api_key[0])
		buf_printf(&o->headers, "x-goog-api-key: %s\r\n", d->api_key);
	buf_adds(&o->headers, "Content-Type: application/json\r\n");
	prov_extra_headers(d, &o->headers);
	return (o->path.oom || o->headers.oom || o->body.oom) ? -1 : 0;
}

/* OpenAI finish_reason for a Gemini finishReason token. */
static const char *
gem_finish(const struct json *j, int t, int tools, int *content_filter)
{
	static const char *const blocked[] = {
	    "SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST",
	    "SPII",   "RECITATION",         "IMAGE_SAFETY"};

	for (size_t i = 0; i < sizeof blocked / sizeof blocked[0]; i++)
		if (json_eq(j, t, blocked[i])) {
			*content_filter = 1;
			return "content_filter";
		}
	if (json_eq(j, t, "MAX_TOKENS"))
		return "length";
	return tools ? "tool_calls" : "stop";
}

/* Read usageMetadata (thinking tokens count as completion tokens). */
static void
gem_usage(const struct json *j, int um, struct usage *u)
{
	long long v, th = 0;

	if (json_int(j, json_get(j, um, "promptTokenCount"), &v) == 0)
		u->prompt_tokens = v;
	json_int(j, json_get(j, um, "thoughtsTokenCount"), &th);
	if (json_int(j, json_get(j, um, "candidatesTokenCount"), &v) == 0)
		u->completion_tokens = v + th;
	if (json_int(j, json_get(j, um, "cachedContentTokenCount"), &v) == 0)
		u->cached_tokens = v;
}

/* Fill e for a prompt blocked by promptFeedback.blockReason; -1. */
static int
gem_blocked(const struct json *j, int br, struct upstream_error *e)
{
	char why[64];

	memset(e, 0, sizeof *e);
	e->cls = EC_CONTENT_POLICY;
	e->status = 200;
	e->retry_after_ms = -1;
	e->should_retry = -1;
	json_str(j, br, why, sizeof why);
	snprintf(e->message, sizeof e->message, "prompt blocked by gemini: %s",
	         why);
	snprintf(e->code, sizeof e->code, "%s", why);
	return -1;
}

/* Whether a part is model "thinking" (never shown). */
static int
gem_is_thought(const struct json *j, int part)
{
	return json_is_true(j, json_get(j, part, "thought"));
}

/* A tag for the tool-call ids of one reply: its responseId (Gemini's,
 * unique per reply) cut to [A-Za-z0-9_-], else a tag unique in this
 * process and across restarts. Ids must not repeat across the turns of
 * a conversation, where clients match results to calls by id. */
static void
gem_call_tag(const char *rid, char *out, size_t size)
{
	static unsigned long long seq;
	static unsigned salt;
	size_t n = 0;

	for (; rid && *rid && n + 1 < size && n < 40; rid++)
		if (isalnum((unsigned char)*rid) || *rid == '_' || *rid == '-')
			out[n++] = *rid;
	out[n] = '\0';
	if (n > 0)
		return;
	if (salt == 0)
		salt = ((unsigned)time(NULL) ^ (unsigned)getpid() << 16) | 1;
	snprintf(out, size, "%08x%llx", salt, ++seq);
}

/* Write a functionCall part as one complete OpenAI tool call: its own id,
 * else call_TAG_N. */
static int
gem_write_call(struct jw *jw, const struct json *j, int fc, const char *tag,
               int n)
{
	int name = json_get(j, fc, "name"), args = json_get(j, fc, "args");
	char id[96];

	if (json_type(j, name) != JSMN_STRING ||
	    (args >= 0 && json_type(j, args) != JSMN_OBJECT))
		return -1;
	snprintf(id, sizeof id, "call_%s_%d", tag, n);
	prov_tool_call(jw, j, json_get(j, fc, "id"), id, name, args, "{}");
	return 0;
}

/* Write candidate c's functionCall parts as tool_calls; -1 if malformed. */
static int
gem_calls_out(struct jw *jw, const struct json *j, int parts, const char *tag,
              int *ncall)
{
	int n = json_size(j, parts), fc, k = 0;

	for (int i = 0; i < n; i++) {
		fc = json_get(j, json_at(j, parts, i), "functionCall");
		if (fc < 0)
			continue;
		if (k++ == 0) {
			jw_key(jw, "tool_calls");
			jw_arr(jw);
		}
		jw_obj(jw);
		if (gem_write_call(jw, j, fc, tag, (*ncall)++) == -1)
			return -1;
		jw_obj_end(jw);
	}
	if (k)
		jw_arr_end(jw);
	return k;
}

/* Write the message of candidate c; tool-call count, or -1. */
static int
gem_message_out(struct jw *jw, const struct json *j, int c, const char *tag,
                int *ncall)
{
	int parts = json_path(j, c, "content.parts"), n, p, any = 0, k;
	struct buf t = {0};

	n = json_type(j, parts) == JSMN_ARRAY ? json_size(j, parts) : 0;
	for (int i = 0; i < n; i++) {
		p = json_at(j, parts, i);
		if (!gem_is_thought(j, p) &&
		    json_str_buf(j, json_get(j, p, "text"), &t) >= 0)
			any = 1;
	}
	prov_message_open(jw, any ? &t : NULL);
	buf_free(&t);
	k = n ? gem_calls_out(jw, j, parts, tag, ncall) : 0;
	jw_obj_end(jw);
	return k;
}

/* Write every candidate as a choice; -1 if one is malformed. */
static int
gem_choices(struct jw *jw, const struct json *j, int cands, int *cf)
{
	int n = json_size(j, cands), c, k, ncall = 0;
	char rid[64], tag[48];

	rid[0] = '\0';
	json_str(j, json_get(j, 0, "responseId"), rid, sizeof rid);
	gem_call_tag(rid, tag, sizeof tag);

	jw_key(jw, "choices");
	jw_arr(jw);
	for (int i = 0; i < n; i++) {
		c = json_at(j, cands, i);
		if (json_type(j, c) != JSMN_OBJECT)
			return -1;
		jw_obj(jw);
		jw_key(jw, "index");
		jw_int(jw, i);
		if ((k = gem_message_out(jw, j, c, tag, &ncall)) == -1)
			return -1;
		jw_key(jw, "finish_reason");
		jw_cstr(jw,
		        gem_finish(j, json_get(j, c, "finishReason"), k, cf));
		jw_obj_end(jw);
	}
	jw_arr_end(jw);
	return 0;
}

/* Write the chat.completion for a reply's candidates array cands; -1 if
 * one is malformed. */
static int
gem_completion(const struct prov_call *pc, const struct json *j, int cands,
               struct buf *out, struct usage *u, int *cf)
{
	struct jw jw;

	gem_usage(j, json_get(j, 0, "usageMetadata"), u);
	prov_completion_head(&jw, out, j, json_get(j, 0, "responseId"),
	                     "gemini", json_get(j, 0, "modelVersion"),
	                     gem_model(pc));
	if (gem_choices(&jw, j, cands, cf) == -1)
		return -1;
	prov_usage(&jw, u);
	jw_obj_end(&jw);
	return 0;
}

/* Whether the client asked for base64 vectors (encoding_format, which
 * the official OpenAI SDKs send by default). */
static int
gem_want_base64(const struct prov_call *pc)
{
	return json_eq(pc->req, json_get(pc->req, 0, "encoding_format"),
	               "base64");
}

/* Write values array v as OpenAI's base64: the numbers as little-endian
 * float32, base64-encoded; -1 if one is not a number. */
static int
gem_vector_b64(struct jw *jw, const struct json *j, int v)
{
	int n = json_size(j, v);
	struct buf raw = {0}, b = {0};
	unsigned char le[4];
	double d;
	float f;
	uint32_t u;
	int rc = 0;

	for (int i = 0; i < n && rc == 0; i++) {
		if (json_num(j, json_at(j, v, i), &d) == -1) {
			rc = -1;
			break;
		}
		f = (float)d;
		memcpy(&u, &f, sizeof u);
		for (int k = 0; k < 4; k++)
			le[k] = (unsigned char)(u >> (8 * k));
		buf_add(&raw, le, 4);
	}
	if (rc == 0) {
		b64_encode(&b, raw.data ? raw.data : "", raw.len, 0);
		jw_str(jw, b.data ? b.data : "", b.len);
	}
	buf_free(&raw);
	buf_free(&b);
	return rc;
}

/* Translate an embedContent / batchEmbedContents reply. */
static int
gem_embeddings(const struct prov_call *pc, const struct json *j,
               struct buf *out, struct upstream_error *e)
{
	int one = json_get(j, 0, "embedding"),
	    all = json_get(j, 0, "embeddings"), n, v;
	int b64 = gem_want_base64(pc);
	struct jw jw;

	if (json_type(j, one) != JSMN_OBJECT && json_type(j, all) != JSMN_ARRAY)
		return prov_malformed(e, GEM_NO_VALUES);
	n = one >= 0 ? 1 : json_size(j, all);
	jw_init(&jw, out);
	jw_obj(&jw);
	jw_key(&jw, "object");
	jw_cstr(&jw, "list");
	jw_key(&jw, "data");
	jw_arr(&jw);
	for (int i = 0; i < n; i++) {
		v = json_get(j, one >= 0 ? one : json_at(j, all, i), "values");
		if (json_type(j, v) != JSMN_ARRAY)
			return prov_malformed(e, GEM_NO_VALUES);
		jw_obj(&jw);
		jw_key(&jw, "object");
		jw_cstr(&jw, "embedding");
		jw_key(&jw, "index");
		jw_int(&jw, i);
		jw_key(&jw, "embedding");
		if (!b64)
			prov_raw(&jw, j, v);
		else if (gem_vector_b64(&jw, j, v) == -1)
			return prov_malformed(e, "an embedding value is not a "
			                         "number");
		jw_obj_end(&jw);
	}
	jw_arr_end(&jw);
	jw_key(&jw, "model");
	jw_cstr(&jw, gem_model(pc));
	jw_key(&jw, "usage");
	PROV_RAW(&jw, "{\"prompt_tokens\":0,\"total_tokens\":0}");
	jw_obj_end(&jw);
	return 0;
}

/* -1 with e filled when the prompt was blocked (promptFeedback). */
static int
gem_check_blocked(const struct json *j, struct upstream_error *e)
{
	int t = json_path(j, 0, "promptFeedback.blockReason");

	return t >= 0 && !json_is_null(j, t) ? gem_blocked(j, t, e) : 0;
}

/* Write a parsed reply as a chat.completion or embeddings list. */
static int
gem_reply(const struct prov_call *pc, const struct json *j, struct buf *out,
          struct usage *u, int *cf, struct upstream_error *e)
{
	int cands = json_get(j, 0, "candidates");

	if (gem_check_blocked(j, e) == -1)
		return -1;
	if (pc->endpoint == EP_EMBED)
		return gem_embeddings(pc, j, out, e);
	if (json_type(j, cands) != JSMN_ARRAY)
		return prov_malformed(e, "no 'candidates' array");
	if (gem_completion(pc, j, cands, out, u, cf) == -1)
		return prov_malformed(e, "bad candidate or functionCall");
	return 0;
}

/* Translate a whole reply into a chat.completion or embeddings list. */
static int
gem_response(const struct prov_call *pc, const char *body, size_t len,
             struct buf *out, struct usage *u, int *cf,
             struct upstream_error *e)
{
	return prov_reply(pc, body, len, gem_reply, out, u, cf, e);
}

/* Emit one functionCall part as a complete tool-call delta. */
static int
gem_ev_call(struct stream_state *st, const struct json *j, int fc,
            struct buf *out)
{
	struct jw jw;
	size_t mark = out->len;
	char rid[64];

	if (st->tag[0] == '\0') {
		rid[0] = '\0';
		json_str(j, json_get(j, 0, "responseId"), rid, sizeof rid);
		gem_call_tag(rid, st->tag, sizeof st->tag);
	}
	prov_tool_delta_open(st, out, &jw, st->ntool);
	if (gem_write_call(&jw, j, fc, st->tag, st->ntool) == -1) {
		out->len = mark;
		return -1;
	}
	st->ntool++;
	prov_tool_delta_close(st, &jw);
	return 0;
}

/* Emit the text and function calls of one event's first candidate. */
static int
gem_ev_parts(struct stream_state *st, const struct json *j, int parts,
             struct buf *out)
{
	int n = json_size(j, parts), p, t;

	for (int i = 0; i < n; i++) {
		p = json_at(j, parts, i);
		if (gem_is_thought(j, p))
			continue;
		if ((t = json_get(j, p, "functionCall")) >= 0) {
			if (gem_ev_call(st, j, t, out) == -1)
				return -1;
			continue;
		}
		prov_chunk_str(st, out, j, json_get(j, p, "text"));
	}
	return 0;
}

/* Note id and model and send the role chunk, once. */
static void
gem_ev_first(const struct prov_call *pc, struct stream_state *st,
             const struct json *j, struct buf *out)
{
	if (st->role_sent)
		return;
	if (json_str(j, json_get(j, 0, "responseId"), st->id, sizeof st->id) <=
	    0)
		snprintf(st->id, sizeof st->id, "gemini");
	if (json_str(j, json_get(j, 0, "modelVersion"), st->model,
	             sizeof st->model) <= 0)
		snprintf(st->model, sizeof st->model, "%s", gem_model(pc));
	prov_chunk_role(st, out);
}

/* Translate one Gemini SSE event (a whole response) into chunks; 1 on the
 * event carrying finishReason, which is the last. */
static int
gem_stream_event(const struct prov_call *pc, struct stream_state *st,
                 const char *ev, size_t elen, const char *data, size_t dlen,
                 struct buf *out, struct upstream_error *e)
{
	static struct json j;
	int c, parts, fr;

	(void)ev;
	(void)elen;
	if (prov_json_reply(&j, data, dlen, "not a JSON object", e) == -1 ||
	    gem_check_blocked(&j, e) == -1)
		return -1;
	c = json_path(&j, 0, "candidates.0");
	parts = json_path(&j, c, "content.parts");
	if ((c >= 0 && json_type(&j, c) != JSMN_OBJECT) ||
	    (parts >= 0 && json_type(&j, parts) != JSMN_ARRAY))
		return prov_malformed(e, "bad candidate in stream event");
	gem_ev_first(pc, st, &j, out);
	gem_usage(&j, json_get(&j, 0, "usageMetadata"), &st->usage);
	if (parts >= 0 && gem_ev_parts(st, &j, parts, out) == -1)
		return prov_malformed(e, "bad functionCall in stream event");
	fr = json_get(&j, c, "finishReason");
	if (fr < 0 || json_is_null(&j, fr))
		return 0;
	prov_chunk_finish(
	    st, out, gem_finish(&j, fr, st->tool_seen, &st->content_filter));
	if (st->include_usage)
		prov_chunk_usage(st, out);
	return 1;
}

const struct provider prov_gemini = {
    .name = "gemini",
    .formats = PROV_FMT(FMT_CHAT),
    .build = gem_build,
    .response = gem_response,
    .stream_event = gem_stream_event,
};
