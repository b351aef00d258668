/* Google Gemini (generativelanguage v1beta): OpenAI chat requests become
 * generateContent / streamGenerateContent calls (contents with user/model
 * roles, systemInstruction, generationConfig, functionDeclarations), and
 * embeddings become embedContent / batchEmbedContents; replies and SSE
 * events (each a whole response) are translated back. */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "worker/provider.h"

/* Translation state for one request body. */
struct gem_ctx {
	const struct prov_call *pc;
	const struct json *j;
	int msgs;
	struct buf sys;
	char *err;
	size_t errsz;
};

/* Record why the request cannot be sent; always -1. */
static int
gem_fail(struct gem_ctx *x, const char *what)
{
	snprintf(x->err, x->errsz, "gemini: %s", what);
	return -1;
}

/* Write the raw text of token t (any JSON value). */
static void
gem_raw(struct jw *jw, const struct json *j, int t)
{
	const char *raw;
	size_t rl;

	if ((raw = json_raw(j, t, &rl)) != NULL)
		jw_raw(jw, raw, rl);
	else
		jw_null(jw);
}

/* The model id for URLs, without a "models/" prefix. */
static const char *
gem_model(const struct deploy_cfg *d)
{
	return strncmp(d->model, "models/", 7) == 0 ? d->model + 7 : d->model;
}

/* Append the text of a content (string or text parts) to t. */
static int
gem_text_of(const struct json *j, int c, struct buf *t)
{
	int n, p;

	if (json_type(j, c) == JSMN_STRING)
		return json_str_buf(j, c, t) < 0 ? -1 : 0;
	if (json_type(j, c) != JSMN_ARRAY)
		return json_is_null(j, c) || c < 0 ? 0 : -1;
	n = json_size(j, c);
	for (int i = 0; i < n; i++) {
		p = json_get(j, json_at(j, c, i), "text");
		if (json_type(j, p) != JSMN_STRING)
			continue;
		if (t->len)
			buf_addc(t, '\n');
		json_str_buf(j, p, t);
	}
	return 0;
}

/* Lift a system/developer message's text into systemInstruction. */
static int
gem_sys_msg(struct gem_ctx *x, int c)
{
	struct buf t = {0};
	int rc = gem_text_of(x->j, c, &t);

	if (rc == -1)
		gem_fail(x, "system message content must be text");
	else if (t.len) {
		if (x->sys.len)
			buf_adds(&x->sys, "\n\n");
		buf_add(&x->sys, t.data, t.len);
	}
	buf_free(&t);
	return rc;
}

/* Write {"text":...} unless the text is empty. */
static void
gem_text_part(struct jw *jw, const struct json *j, int s)
{
	struct buf t = {0};

	if (json_str_buf(j, s, &t) > 0) {
		jw_obj(jw);
		jw_key(jw, "text");
		jw_str(jw, t.data, t.len);
		jw_obj_end(jw);
	}
	buf_free(&t);
}

/* A MIME type guessed from an image URL's extension. */
static const char *
gem_mime_guess(const char *url)
{
	static const char *const map[][2] = {{".png", "image/png"},
	                                     {".gif", "image/gif"},
	                                     {".webp", "image/webp"},
	                                     {".pdf", "application/pdf"}};
	const char *dot = strrchr(url, '.');

	for (size_t i = 0; dot && i < sizeof map / sizeof map[0]; i++)
		if (strcasecmp(dot, map[i][0]) == 0)
			return map[i][1];
	return "image/jpeg";
}

/* Write an image_url part as inlineData (data: URL) or fileData. */
static int
gem_image_part(struct gem_ctx *x, struct jw *jw, int part)
{
	struct buf url = {0};
	const char *media, *data;
	size_t ml, dl;

	if (prov_image_url(x->j, part, &url) == -1) {
		buf_free(&url);
		return gem_fail(x, "image_url part without a url");
	}
	jw_obj(jw);
	if (prov_data_url(url.data, url.len, &media, &ml, &data, &dl) == 0) {
		jw_key(jw, "inlineData");
		jw_obj(jw);
		jw_key(jw, "mimeType");
		jw_str(jw, media, ml);
		jw_key(jw, "data");
		jw_str(jw, data, dl);
	} else {
		jw_key(jw, "fileData");
		jw_obj(jw);
		jw_key(jw, "mimeType");
		jw_cstr(jw, gem_mime_guess(buf_cstr(&url)));
		jw_key(jw, "fileUri");
		jw_str(jw, url.data, url.len);
	}
	jw_obj_end(jw);
	jw_obj_end(jw);
	buf_free(&url);
	return 0;
}

/* Write a message content (string or parts) as parts. */
static int
gem_content(struct gem_ctx *x, struct jw *jw, int c)
{
	const struct json *j = x->j;
	int n, p, t;

	if (json_type(j, c) == JSMN_STRING) {
		gem_text_part(jw, j, c);
		return 0;
	}
	if (json_type(j, c) != JSMN_ARRAY)
		return c < 0 || json_is_null(j, c)
		           ? 0
		           : gem_fail(x,
		                      "message content must be a string or an "
		                      "array of parts");
	n = json_size(j, c);
	for (int i = 0; i < n; i++) {
		p = json_at(j, c, i);
		t = json_get(j, p, "type");
		if (json_eq(j, t, "text"))
			gem_text_part(jw, j, json_get(j, p, "text"));
		else if (json_eq(j, t, "image_url")) {
			if (gem_image_part(x, jw, p) == -1)
				return -1;
		} else
			return gem_fail(x, "unsupported content part type "
			                   "(only text and image_url)");
	}
	return 0;
}

/* Write a JSON text (an arguments string) as a value: parsed when it is a
 * JSON object (or any JSON if any is set), else as a string / {}. */
static void
gem_json_text(struct jw *jw, const char *s, size_t n, int any)
{
	static struct json aj;

	if (n && json_parse(&aj, s, n) == 0 &&
	    (any || json_type(&aj, 0) == JSMN_OBJECT))
		gem_raw(jw, &aj, 0);
	else if (any)
		jw_str(jw, s, n);
	else {
		jw_obj(jw);
		jw_obj_end(jw);
	}
}

/* Write assistant tool_calls as functionCall parts. */
static int
gem_function_calls(struct gem_ctx *x, struct jw *jw, int tcs)
{
	const struct json *j = x->j;
	int n = json_size(j, tcs), f, a;
	struct buf t = {0};

	for (int i = 0; i < n; i++) {
		f = json_get(j, json_at(j, tcs, i), "function");
		if (json_type(j, json_get(j, f, "name")) != JSMN_STRING)
			return gem_fail(x, "tool call without a name");
		a = json_get(j, f, "arguments");
		jw_obj(jw);
		jw_key(jw, "functionCall");
		jw_obj(jw);
		jw_key(jw, "name");
		gem_raw(jw, j, json_get(j, f, "name"));
		jw_key(jw, "args");
		buf_reset(&t);
		if (json_type(j, a) == JSMN_OBJECT)
			gem_raw(jw, j, a);
		else {
			json_str_buf(j, a, &t);
			gem_json_text(jw, t.data, t.len, 0);
		}
		jw_obj_end(jw);
		jw_obj_end(jw);
	}
	buf_free(&t);
	return 0;
}

/* The function name of the tool call with id (string token id) made by an
 * earlier assistant message; -1 if none. */
static int
gem_tool_name(struct gem_ctx *x, int id, int before)
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
gem_tool_response(struct gem_ctx *x, struct jw *jw, int m, int i)
{
	const struct json *j = x->j;
	int name = gem_tool_name(x, json_get(j, m, "tool_call_id"), i);
	struct buf t = {0};

	if (json_type(j, name) != JSMN_STRING)
		name = json_get(j, m, "name");
	if (json_type(j, name) != JSMN_STRING)
		return gem_fail(x, "tool message whose tool_call_id matches "
		                   "no earlier tool call");
	if (gem_text_of(j, json_get(j, m, "content"), &t) == -1) {
		buf_free(&t);
		return gem_fail(x, "tool message content must be text");
	}
	jw_obj(jw);
	jw_key(jw, "functionResponse");
	jw_obj(jw);
	jw_key(jw, "name");
	gem_raw(jw, j, name);
	jw_key(jw, "response");
	jw_obj(jw);
	jw_key(jw, "content");
	gem_json_text(jw, t.data ? t.data : "", t.len, 1);
	jw_obj_end(jw);
	jw_obj_end(jw);
	jw_obj_end(jw);
	buf_free(&t);
	return 0;
}

/* Write one non-system message's parts; *role gets its Gemini role. */
static int
gem_parts(struct gem_ctx *x, struct jw *jw, int m, int i, const char **role)
{
	const struct json *j = x->j;
	int r = json_get(j, m, "role"), tcs;

	if (json_eq(j, r, "user")) {
		*role = "user";
		return gem_content(x, jw, json_get(j, m, "content"));
	}
	if (json_eq(j, r, "tool")) {
		*role = "user";
		return gem_tool_response(x, jw, m, i);
	}
	if (!json_eq(j, r, "assistant"))
		return gem_fail(x, "unsupported message role");
	*role = "model";
	if (gem_content(x, jw, json_get(j, m, "content")) == -1)
		return -1;
	tcs = json_get(j, m, "tool_calls");
	return json_type(j, tcs) == JSMN_ARRAY ? gem_function_calls(x, jw, tcs)
	                                       : 0;
}

/* Translate message i into the contents list (or systemInstruction). */
static int
gem_message(struct gem_ctx *x, struct prov_turns *t, int i)
{
	const struct json *j = x->j;
	int m = json_at(j, x->msgs, i);
	int r = json_get(j, m, "role");
	struct buf b = {0};
	struct jw jw;
	const char *role = NULL;
	int rc;

	if (json_type(j, m) != JSMN_OBJECT)
		return gem_fail(x, "each message must be an object");
	if (json_eq(j, r, "system") || json_eq(j, r, "developer"))
		return gem_sys_msg(x, json_get(j, m, "content"));
	jw_init(&jw, &b);
	jw_arr(&jw);
	rc = gem_parts(x, &jw, m, i, &role);
	jw_arr_end(&jw);
	if (rc == 0)
		prov_turns_add(t, role, b.data, b.len);
	buf_free(&b);
	return rc;
}

/* Translate messages into a contents array in out. */
static int
gem_contents(struct gem_ctx *x, struct buf *out)
{
	struct prov_turns t;
	int n;

	x->msgs = json_get(x->j, 0, "messages");
	if (json_type(x->j, x->msgs) != JSMN_ARRAY)
		return gem_fail(x, "'messages' must be an array");
	n = json_size(x->j, x->msgs);
	prov_turns_begin(&t, out, "parts");
	for (int i = 0; i < n; i++)
		if (gem_message(x, &t, i) == -1)
			return -1;
	prov_turns_end(&t);
	return 0;
}

/* Write tools as one functionDeclarations list (JSON Schema parameters
 * go in parametersJsonSchema, which takes full JSON Schema). */
static void
gem_tools(struct jw *jw, const struct json *j, int tools)
{
	int n = json_size(j, tools), f, v;

	jw_key(jw, "tools");
	jw_arr(jw);
	jw_obj(jw);
	jw_key(jw, "functionDeclarations");
	jw_arr(jw);
	for (int i = 0; i < n; i++) {
		f = json_get(j, json_at(j, tools, i), "function");
		if (json_type(j, json_get(j, f, "name")) != JSMN_STRING)
			continue;
		jw_obj(jw);
		jw_key(jw, "name");
		gem_raw(jw, j, json_get(j, f, "name"));
		if (json_type(j, v = json_get(j, f, "description")) ==
		    JSMN_STRING) {
			jw_key(jw, "description");
			gem_raw(jw, j, v);
		}
		if (json_type(j, v = json_get(j, f, "parameters")) ==
		    JSMN_OBJECT) {
			jw_key(jw, "parametersJsonSchema");
			gem_raw(jw, j, v);
		}
		jw_obj_end(jw);
	}
	jw_arr_end(jw);
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
		gem_raw(jw, s, fn);
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
	const struct json *s;
	double v;
	int t;

	for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
		t = prov_opt(pc, map[i].from, &s);
		if (json_num(s, t, &v) == -1)
			continue;
		jw_key(jw, map[i].to);
		jw_num(jw, v < map[i].lo   ? map[i].lo
		           : v > map[i].hi ? map[i].hi
		                           : v);
	}
}

/* Write maxOutputTokens from the request, params or deployment. */
static void
gem_gen_max(const struct prov_call *pc, struct jw *jw)
{
	static const char *const keys[] = {"max_completion_tokens",
	                                   "max_tokens"};
	const struct json *s;
	long long v = 0;
	int t;

	for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
		t = prov_opt(pc, keys[i], &s);
		if (json_int(s, t, &v) == 0 && v > 0)
			break;
		v = 0;
	}
	if (v <= 0)
		v = pc->d->max_tokens;
	if (v > 0) {
		jw_key(jw, "maxOutputTokens");
		jw_int(jw, v);
	}
}

/* Write stopSequences and the JSON response settings. */
static void
gem_gen_format(const struct prov_call *pc, struct jw *jw)
{
	const struct json *s;
	int t = prov_opt(pc, "stop", &s), n, e, ty, sc;

	if (json_type(s, t) == JSMN_STRING || json_type(s, t) == JSMN_ARRAY) {
		jw_key(jw, "stopSequences");
		jw_arr(jw);
		n = json_type(s, t) == JSMN_STRING ? 1 : json_size(s, t);
		for (int i = 0; i < n; i++) {
			e = json_type(s, t) == JSMN_STRING ? t
			                                   : json_at(s, t, i);
			if (json_type(s, e) == JSMN_STRING)
				gem_raw(jw, s, e);
		}
		jw_arr_end(jw);
	}
	t = prov_opt(pc, "response_format", &s);
	ty = json_get(s, t, "type");
	if (!json_eq(s, ty, "json_object") && !json_eq(s, ty, "json_schema"))
		return;
	jw_key(jw, "responseMimeType");
	jw_cstr(jw, "application/json");
	sc = json_path(s, t, "json_schema.schema");
	if (json_type(s, sc) == JSMN_OBJECT) {
		jw_key(jw, "responseJsonSchema");
		gem_raw(jw, s, sc);
	}
}

/* Write generationConfig when any field is set. */
static void
gem_gen_config(const struct prov_call *pc, struct jw *jw)
{
	struct buf g = {0};
	struct jw gw;

	jw_init(&gw, &g);
	jw_obj(&gw);
	gem_gen_max(pc, &gw);
	gem_gen_numbers(pc, &gw);
	gem_gen_format(pc, &gw);
	jw_obj_end(&gw);
	if (g.len > 2) {
		jw_key(jw, "generationConfig");
		jw_raw(jw, g.data, g.len);
	}
	buf_free(&g);
}

/* Write systemInstruction from the lifted text and the append. */
static void
gem_system(struct gem_ctx *x, struct jw *jw)
{
	const char *app = x->pc->d->system_prompt_append;

	if (app && app[0]) {
		if (x->sys.len)
			buf_adds(&x->sys, "\n\n");
		buf_adds(&x->sys, app);
	}
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

/* The generateContent body; -1 with err set if it cannot be built. */
static int
gem_chat_body(const struct prov_call *pc, struct buf *out, char *err,
              size_t errsz)
{
	struct gem_ctx x = {.pc = pc, .j = pc->req, .err = err, .errsz = errsz};
	struct buf contents = {0};
	struct jw jw;
	const struct json *s;
	int t, rc = -1;

	if (gem_contents(&x, &contents) == -1)
		goto fail;
	jw_init(&jw, out);
	jw_obj(&jw);
	jw_key(&jw, "contents");
	jw_raw(&jw, contents.data, contents.len);
	gem_system(&x, &jw);
	gem_gen_config(pc, &jw);
	t = prov_opt(pc, "tools", &s);
	if (json_type(s, t) == JSMN_ARRAY && json_size(s, t) > 0) {
		gem_tools(&jw, s, t);
		gem_tool_config(pc, &jw);
	}
	jw_obj_end(&jw);
	rc = contents.oom || x.sys.oom ? -1 : 0;
fail:
	buf_free(&contents);
	buf_free(&x.sys);
	return rc;
}

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
	gem_raw(jw, j, s);
	jw_obj_end(jw);
	jw_arr_end(jw);
	jw_obj_end(jw);
	if (json_type(ds, dim) == JSMN_PRIMITIVE) {
		jw_key(jw, "outputDimensionality");
		gem_raw(jw, ds, dim);
	}
}

/* Write the batchEmbedContents requests list for an array of strings. */
static void
gem_embed_batch(const struct prov_call *pc, struct jw *jw, int in)
{
	const struct json *j = pc->req;
	int n = json_size(j, in);
	struct buf m = {0};

	buf_printf(&m, "models/%s", gem_model(pc->d));
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
	prov_urlenc(&o->path, gem_model(pc->d));
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

/* Build the upstream request for chat or embeddings. */
static int
gem_build(const struct prov_call *pc, struct prov_out *o, char *err,
          size_t errsz)
{
	const struct deploy_cfg *d = pc->d;

	if (pc->endpoint == EP_EMBED) {
		if (gem_embed_build(pc, o, err, errsz) == -1)
			return -1;
	} else {
		if (gem_chat_body(pc, &o->body, err, errsz) == -1)
			return -1;
		buf_printf(&o->path, "%s/v1beta/models/", d->path);
		prov_urlenc(&o->path, gem_model(d));
		buf_adds(&o->path, pc->stream ? ":streamGenerateContent?alt=sse"
		                              : ":generateContent");
	}
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

/* Write a functionCall part as one complete OpenAI tool call. */
static int
gem_write_call(struct jw *jw, const struct json *j, int fc, int n)
{
	int name = json_get(j, fc, "name"), args = json_get(j, fc, "args");
	const char *raw;
	size_t rl;
	char id[32];

	if (json_type(j, name) != JSMN_STRING ||
	    (args >= 0 && json_type(j, args) != JSMN_OBJECT))
		return -1;
	jw_key(jw, "id");
	if (json_type(j, json_get(j, fc, "id")) == JSMN_STRING)
		gem_raw(jw, j, json_get(j, fc, "id"));
	else {
		snprintf(id, sizeof id, "call_%d", n);
		jw_cstr(jw, id);
	}
	jw_key(jw, "type");
	jw_cstr(jw, "function");
	jw_key(jw, "function");
	jw_obj(jw);
	jw_key(jw, "name");
	gem_raw(jw, j, name);
	jw_key(jw, "arguments");
	if ((raw = json_raw(j, args, &rl)) != NULL)
		jw_str(jw, raw, rl);
	else
		jw_cstr(jw, "{}");
	jw_obj_end(jw);
	return 0;
}

/* Write candidate c's functionCall parts as tool_calls; -1 if malformed. */
static int
gem_calls_out(struct jw *jw, const struct json *j, int parts, int *ncall)
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
		if (gem_write_call(jw, j, fc, (*ncall)++) == -1)
			return -1;
		jw_obj_end(jw);
	}
	if (k)
		jw_arr_end(jw);
	return k;
}

/* Write the message of candidate c; tool-call count, or -1. */
static int
gem_message_out(struct jw *jw, const struct json *j, int c, int *ncall)
{
	int parts = json_path(j, c, "content.parts"), n, p, any = 0, k;
	struct buf t = {0};

	n = json_type(j, parts) == JSMN_ARRAY ? json_size(j, parts) : 0;
	jw_key(jw, "message");
	jw_obj(jw);
	jw_key(jw, "role");
	jw_cstr(jw, "assistant");
	for (int i = 0; i < n; i++) {
		p = json_at(j, parts, i);
		if (!gem_is_thought(j, p) &&
		    json_str_buf(j, json_get(j, p, "text"), &t) >= 0)
			any = 1;
	}
	jw_key(jw, "content");
	if (any)
		jw_str(jw, t.data ? t.data : "", t.len);
	else
		jw_null(jw);
	buf_free(&t);
	jw_key(jw, "refusal");
	jw_null(jw);
	k = n ? gem_calls_out(jw, j, parts, ncall) : 0;
	jw_obj_end(jw);
	return k;
}

/* Write every candidate as a choice; -1 if one is malformed. */
static int
gem_choices(struct jw *jw, const struct json *j, int cands, int *cf)
{
	int n = json_size(j, cands), c, k, ncall = 0;

	jw_key(jw, "choices");
	jw_arr(jw);
	for (int i = 0; i < n; i++) {
		c = json_at(j, cands, i);
		if (json_type(j, c) != JSMN_OBJECT)
			return -1;
		jw_obj(jw);
		jw_key(jw, "index");
		jw_int(jw, i);
		if ((k = gem_message_out(jw, j, c, &ncall)) == -1)
			return -1;
		jw_key(jw, "finish_reason");
		jw_cstr(jw,
		        gem_finish(j, json_get(j, c, "finishReason"), k, cf));
		jw_obj_end(jw);
	}
	jw_arr_end(jw);
	return 0;
}

/* Write "key": the string at t, or fallback. */
static void
gem_str_or(struct jw *jw, const char *key, const struct json *j, int t,
           const char *fallback)
{
	jw_key(jw, key);
	if (json_type(j, t) == JSMN_STRING)
		gem_raw(jw, j, t);
	else
		jw_cstr(jw, fallback);
}

/* Write the chat.completion for a parsed generateContent reply. */
static int
gem_completion(const struct prov_call *pc, const struct json *j,
               struct buf *out, struct usage *u, int *cf)
{
	struct jw jw;

	gem_usage(j, json_get(j, 0, "usageMetadata"), u);
	jw_init(&jw, out);
	jw_obj(&jw);
	gem_str_or(&jw, "id", j, json_get(j, 0, "responseId"), "gemini");
	jw_key(&jw, "object");
	jw_cstr(&jw, "chat.completion");
	jw_key(&jw, "created");
	jw_int(&jw, (long long)time(NULL));
	gem_str_or(&jw, "model", j, json_get(j, 0, "modelVersion"),
	           gem_model(pc->d));
	if (gem_choices(&jw, j, json_get(j, 0, "candidates"), cf) == -1)
		return -1;
	prov_usage(&jw, u);
	jw_obj_end(&jw);
	return 0;
}

/* Translate an embedContent / batchEmbedContents reply. */
static int
gem_embeddings(const struct prov_call *pc, const struct json *j,
               struct buf *out)
{
	int one = json_get(j, 0, "embedding"),
	    all = json_get(j, 0, "embeddings"), n, v;
	struct jw jw;

	if (json_type(j, one) != JSMN_OBJECT && json_type(j, all) != JSMN_ARRAY)
		return -1;
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
			return -1;
		jw_obj(&jw);
		jw_key(&jw, "object");
		jw_cstr(&jw, "embedding");
		jw_key(&jw, "index");
		jw_int(&jw, i);
		jw_key(&jw, "embedding");
		gem_raw(&jw, j, v);
		jw_obj_end(&jw);
	}
	jw_arr_end(&jw);
	jw_key(&jw, "model");
	jw_cstr(&jw, gem_model(pc->d));
	jw_key(&jw, "usage");
	PROV_RAW(&jw, "{\"prompt_tokens\":0,\"total_tokens\":0}");
	jw_obj_end(&jw);
	return 0;
}

/* Parse a reply or event; -1 with e filled for errors and blocks. */
static int
gem_parse(struct json *j, const char *body, size_t len,
          struct upstream_error *e)
{
	int t;

	if (json_parse(j, body, len) == -1 || json_type(j, 0) != JSMN_OBJECT) {
		prov_malformed(e, "not a JSON object");
		return -1;
	}
	if ((t = json_get(j, 0, "error")) >= 0 && !json_is_null(j, t)) {
		prov_stream_error(body, len, e);
		return -1;
	}
	t = json_path(j, 0, "promptFeedback.blockReason");
	if (t >= 0 && !json_is_null(j, t))
		return gem_blocked(j, t, e);
	return 0;
}

/* Translate a whole reply into a chat.completion or embeddings list. */
static int
gem_response(const struct prov_call *pc, const char *body, size_t len,
             struct buf *out, struct usage *u, int *content_filter,
             struct upstream_error *e)
{
	static struct json j;
	size_t mark = out->len;

	if (gem_parse(&j, body, len, e) == -1)
		return -1;
	if (pc->endpoint == EP_EMBED) {
		if (gem_embeddings(pc, &j, out) == 0)
			return 0;
		out->len = mark;
		prov_malformed(e, "no 'embedding' or 'embeddings' values");
		return -1;
	}
	if (json_type(&j, json_get(&j, 0, "candidates")) != JSMN_ARRAY) {
		prov_malformed(e, "no 'candidates' array");
		return -1;
	}
	if (gem_completion(pc, &j, out, u, content_filter) == -1) {
		out->len = mark;
		prov_malformed(e, "bad candidate or functionCall");
		return -1;
	}
	return 0;
}

/* Emit one functionCall part as a complete tool-call delta. */
static int
gem_ev_call(struct stream_state *st, const struct json *j, int fc,
            struct buf *out)
{
	struct jw jw;
	size_t mark = out->len;

	prov_chunk_open(st, out, &jw, 0);
	jw_obj(&jw);
	jw_key(&jw, "tool_calls");
	jw_arr(&jw);
	jw_obj(&jw);
	jw_key(&jw, "index");
	jw_int(&jw, st->ntool);
	if (gem_write_call(&jw, j, fc, st->ntool) == -1) {
		out->len = mark;
		return -1;
	}
	st->ntool++;
	jw_obj_end(&jw);
	jw_arr_end(&jw);
	jw_obj_end(&jw);
	prov_chunk_close(&jw, NULL);
	st->content_seen = st->tool_seen = 1;
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
		buf_reset(&st->partial);
		if (json_str_buf(j, json_get(j, p, "text"), &st->partial) > 0)
			prov_chunk_text(st, out, st->partial.data,
			                st->partial.len);
	}
	return 0;
}

/* Note id and model and send the role chunk, once. */
static void
gem_ev_first(const struct prov_call *pc, struct stream_state *st,
             const struct json *j, struct buf *out)
{
	struct jw jw;

	if (st->role_sent)
		return;
	if (json_str(j, json_get(j, 0, "responseId"), st->id, sizeof st->id) <=
	    0)
		snprintf(st->id, sizeof st->id, "gemini");
	if (json_str(j, json_get(j, 0, "modelVersion"), st->model,
	             sizeof st->model) <= 0)
		snprintf(st->model, sizeof st->model, "%s", gem_model(pc->d));
	prov_chunk_open(st, out, &jw, 0);
	PROV_RAW(&jw, "{\"role\":\"assistant\",\"content\":\"\"}");
	prov_chunk_close(&jw, NULL);
	st->role_sent = 1;
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
	struct jw jw;

	(void)ev;
	(void)elen;
	if (gem_parse(&j, data, dlen, e) == -1)
		return -1;
	c = json_path(&j, 0, "candidates.0");
	parts = json_path(&j, c, "content.parts");
	if ((c >= 0 && json_type(&j, c) != JSMN_OBJECT) ||
	    (parts >= 0 && json_type(&j, parts) != JSMN_ARRAY)) {
		prov_malformed(e, "bad candidate in stream event");
		return -1;
	}
	gem_ev_first(pc, st, &j, out);
	gem_usage(&j, json_get(&j, 0, "usageMetadata"), &st->usage);
	if (parts >= 0 && gem_ev_parts(st, &j, parts, out) == -1) {
		prov_malformed(e, "bad functionCall in stream event");
		return -1;
	}
	fr = json_get(&j, c, "finishReason");
	if (fr < 0 || json_is_null(&j, fr))
		return 0;
	prov_chunk_open(st, out, &jw, 0);
	jw_obj(&jw);
	jw_obj_end(&jw);
	prov_chunk_close(
	    &jw, gem_finish(&j, fr, st->tool_seen, &st->content_filter));
	st->finished = 1;
	if (st->include_usage)
		prov_chunk_usage(st, out);
	return 1;
}

const struct provider prov_gemini = {
    .name = "gemini",
    .build = gem_build,
    .response = gem_response,
    .stream_event = gem_stream_event,
};
