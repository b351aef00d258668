/* Anthropic Messages: OpenAI chat requests translated to /v1/messages
 * (system lifted out, tool calls and results as content blocks, turns
 * merged so roles alternate), and replies and event streams translated
 * back into chat.completion objects and chunks. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "worker/provider.h"

#define ANTH_VERSION    "2023-06-01"
#define ANTH_MAX_TOKENS 4096
#define ANTH_JSON_ONLY  "Respond with a JSON object only."

/* Translation state for one request body. */
struct anth_ctx {
	const struct prov_call *pc;
	const struct json *j;
	struct buf sys;
	char *err;
	size_t errsz;
};

static int anth_content(struct anth_ctx *, struct jw *, int c);

/* Record why the request cannot be sent; always -1. */
static int
anth_fail(struct anth_ctx *x, const char *what)
{
	snprintf(x->err, x->errsz, "anthropic: %s", what);
	return -1;
}

/* Append text to the system prompt, separated from what came before. */
static void
anth_sys_add(struct anth_ctx *x, const char *s, size_t n)
{
	if (n == 0)
		return;
	if (x->sys.len)
		buf_adds(&x->sys, "\n\n");
	buf_add(&x->sys, s, n);
}

/* Lift a system/developer message's text (string or text parts). */
static int
anth_sys_msg(struct anth_ctx *x, int c)
{
	const struct json *j = x->j;
	struct buf t = {0};
	int n, p;

	if (json_type(j, c) == JSMN_STRING)
		json_str_buf(j, c, &t);
	else if (json_type(j, c) == JSMN_ARRAY) {
		n = json_size(j, c);
		for (int i = 0; i < n; i++) {
			p = json_get(j, json_at(j, c, i), "text");
			if (json_type(j, p) != JSMN_STRING)
				continue;
			if (t.len)
				buf_addc(&t, '\n');
			json_str_buf(j, p, &t);
		}
	} else if (!json_is_null(j, c)) {
		return anth_fail(x, "system message content must be text");
	}
	anth_sys_add(x, t.data, t.len);
	buf_free(&t);
	return 0;
}

/* Write {"type":"text","text":...} unless the text is empty. */
static void
anth_text_block(struct jw *jw, const struct json *j, int s)
{
	struct buf t = {0};

	if (json_str_buf(j, s, &t) > 0) {
		jw_obj(jw);
		jw_key(jw, "type");
		jw_cstr(jw, "text");
		jw_key(jw, "text");
		jw_str(jw, t.data, t.len);
		jw_obj_end(jw);
	}
	buf_free(&t);
}

/* Write an image block from an image_url part (data: or http URL). */
static int
anth_image_block(struct anth_ctx *x, struct jw *jw, int part)
{
	struct buf url = {0};
	const char *media, *data;
	size_t ml, dl;

	if (prov_image_url(x->j, part, &url) == -1) {
		buf_free(&url);
		return anth_fail(x, "image_url part without a url");
	}
	jw_obj(jw);
	jw_key(jw, "type");
	jw_cstr(jw, "image");
	jw_key(jw, "source");
	jw_obj(jw);
	jw_key(jw, "type");
	if (prov_data_url(url.data, url.len, &media, &ml, &data, &dl) == 0) {
		jw_cstr(jw, "base64");
		jw_key(jw, "media_type");
		jw_str(jw, media, ml);
		jw_key(jw, "data");
		jw_str(jw, data, dl);
	} else {
		jw_cstr(jw, "url");
		jw_key(jw, "url");
		jw_str(jw, url.data, url.len);
	}
	jw_obj_end(jw);
	jw_obj_end(jw);
	buf_free(&url);
	return 0;
}

/* Write one content part as a block. */
static int
anth_part(struct anth_ctx *x, struct jw *jw, int part)
{
	const struct json *j = x->j;
	int t = json_get(j, part, "type");

	if (json_eq(j, t, "text"))
		anth_text_block(jw, j, json_get(j, part, "text"));
	else if (json_eq(j, t, "image_url"))
		return anth_image_block(x, jw, part);
	else
		return anth_fail(x, "unsupported content part type (only "
		                    "text and image_url)");
	return 0;
}

/* Write a message content (string or parts) as blocks. */
static int
anth_content(struct anth_ctx *x, struct jw *jw, int c)
{
	const struct json *j = x->j;
	int n;

	switch (json_type(j, c)) {
	case JSMN_STRING:
		anth_text_block(jw, j, c);
		return 0;
	case JSMN_ARRAY:
		n = json_size(j, c);
		for (int i = 0; i < n; i++)
			if (anth_part(x, jw, json_at(j, c, i)) == -1)
				return -1;
		return 0;
	default:
		if (c < 0 || json_is_null(j, c))
			return 0;
		return anth_fail(x, "message content must be a string or an "
		                    "array of parts");
	}
}

/* Write a tool-call arguments string as a JSON object ({} if invalid). */
static void
anth_tool_input(struct jw *jw, const struct json *j, int a)
{
	static struct json aj;
	struct buf t = {0};
	const char *raw;
	size_t rl;

	if (json_type(j, a) == JSMN_OBJECT) {
		raw = json_raw(j, a, &rl);
		jw_raw(jw, raw, rl);
		return;
	}
	if (json_str_buf(j, a, &t) > 0 && json_parse(&aj, t.data, t.len) == 0 &&
	    json_type(&aj, 0) == JSMN_OBJECT) {
		raw = json_raw(&aj, 0, &rl);
		jw_raw(jw, raw, rl);
	} else {
		jw_obj(jw);
		jw_obj_end(jw);
	}
	buf_free(&t);
}

/* Write assistant tool_calls as tool_use blocks. */
static int
anth_tool_uses(struct anth_ctx *x, struct jw *jw, int tcs)
{
	const struct json *j = x->j;
	int n = json_size(j, tcs), tc, f;
	const char *raw;
	size_t rl;

	for (int i = 0; i < n; i++) {
		tc = json_at(j, tcs, i);
		f = json_get(j, tc, "function");
		if (json_type(j, json_get(j, tc, "id")) != JSMN_STRING ||
		    json_type(j, json_get(j, f, "name")) != JSMN_STRING)
			return anth_fail(x, "tool call without id or name");
		jw_obj(jw);
		jw_key(jw, "type");
		jw_cstr(jw, "tool_use");
		jw_key(jw, "id");
		raw = json_raw(j, json_get(j, tc, "id"), &rl);
		jw_raw(jw, raw, rl);
		jw_key(jw, "name");
		raw = json_raw(j, json_get(j, f, "name"), &rl);
		jw_raw(jw, raw, rl);
		jw_key(jw, "input");
		anth_tool_input(jw, j, json_get(j, f, "arguments"));
		jw_obj_end(jw);
	}
	return 0;
}

/* Write a tool message as a tool_result block. */
static int
anth_tool_result(struct anth_ctx *x, struct jw *jw, int m)
{
	const struct json *j = x->j;
	int id = json_get(j, m, "tool_call_id");
	int c = json_get(j, m, "content");
	const char *raw;
	size_t rl;

	if (json_type(j, id) != JSMN_STRING)
		return anth_fail(x, "tool message without tool_call_id");
	jw_obj(jw);
	jw_key(jw, "type");
	jw_cstr(jw, "tool_result");
	jw_key(jw, "tool_use_id");
	raw = json_raw(j, id, &rl);
	jw_raw(jw, raw, rl);
	jw_key(jw, "content");
	if (json_type(j, c) == JSMN_ARRAY) {
		jw_arr(jw);
		if (anth_content(x, jw, c) == -1)
			return -1;
		jw_arr_end(jw);
	} else if (json_type(j, c) == JSMN_STRING) {
		raw = json_raw(j, c, &rl);
		jw_raw(jw, raw, rl);
	} else {
		jw_cstr(jw, "");
	}
	jw_obj_end(jw);
	return 0;
}

/* Write one non-system message's blocks; *role gets its Anthropic role. */
static int
anth_blocks(struct anth_ctx *x, struct jw *jw, int m, const char **role)
{
	const struct json *j = x->j;
	int r = json_get(j, m, "role");
	int tcs;

	if (json_eq(j, r, "user")) {
		*role = "user";
		return anth_content(x, jw, json_get(j, m, "content"));
	}
	if (json_eq(j, r, "tool")) {
		*role = "user";
		return anth_tool_result(x, jw, m);
	}
	if (!json_eq(j, r, "assistant"))
		return anth_fail(x, "unsupported message role");
	*role = "assistant";
	if (anth_content(x, jw, json_get(j, m, "content")) == -1)
		return -1;
	tcs = json_get(j, m, "tool_calls");
	if (json_type(j, tcs) == JSMN_ARRAY)
		return anth_tool_uses(x, jw, tcs);
	return 0;
}

/* Translate one message into the turn list (or the system prompt). */
static int
anth_message(struct anth_ctx *x, struct prov_turns *t, int m)
{
	const struct json *j = x->j;
	int r = json_get(j, m, "role");
	struct buf b = {0};
	struct jw jw;
	const char *role = NULL;
	int rc;

	if (json_type(j, m) != JSMN_OBJECT)
		return anth_fail(x, "each message must be an object");
	if (json_eq(j, r, "system") || json_eq(j, r, "developer"))
		return anth_sys_msg(x, json_get(j, m, "content"));
	jw_init(&jw, &b);
	jw_arr(&jw);
	rc = anth_blocks(x, &jw, m, &role);
	jw_arr_end(&jw);
	if (rc == 0)
		prov_turns_add(t, role, b.data, b.len);
	buf_free(&b);
	return rc;
}

/* Add a turn of role holding one text block. */
static void
anth_text_turn(struct prov_turns *t, const char *role, const char *s, size_t n)
{
	struct buf b = {0};
	struct jw jw;

	jw_init(&jw, &b);
	jw_arr(&jw);
	jw_obj(&jw);
	jw_key(&jw, "type");
	jw_cstr(&jw, "text");
	jw_key(&jw, "text");
	jw_str(&jw, s, n);
	jw_obj_end(&jw);
	jw_arr_end(&jw);
	prov_turns_add(t, role, b.data, b.len);
	buf_free(&b);
}

/* Translate the messages array into out; the stream-resume text becomes
 * an assistant prefill, followed in the instruction form by a user turn
 * asking to continue it. */
static int
anth_messages(struct anth_ctx *x, struct buf *out)
{
	const struct json *j = x->j;
	int ms = json_get(j, 0, "messages");
	int n = json_size(j, ms);
	struct prov_turns t;

	if (json_type(j, ms) != JSMN_ARRAY)
		return anth_fail(x, "'messages' must be an array");
	prov_turns_begin(&t, out, "content");
	for (int i = 0; i < n; i++)
		if (anth_message(x, &t, json_at(j, ms, i)) == -1)
			return -1;
	if (x->pc->resume_text && x->pc->resume_len) {
		anth_text_turn(&t, "assistant", x->pc->resume_text,
		               x->pc->resume_len);
		if (!x->pc->resume_prefill)
			anth_text_turn(&t, "user", PROV_RESUME_INSTRUCTION,
			               sizeof PROV_RESUME_INSTRUCTION - 1);
	}
	prov_turns_end(&t);
	return 0;
}

/* Write tools as {name, description, input_schema}. */
static void
anth_tools(struct jw *jw, const struct json *j, int tools)
{
	int n = json_size(j, tools), f, v;
	const char *raw;
	size_t rl;

	jw_key(jw, "tools");
	jw_arr(jw);
	for (int i = 0; i < n; i++) {
		f = json_get(j, json_at(j, tools, i), "function");
		if (json_type(j, json_get(j, f, "name")) != JSMN_STRING)
			continue;
		jw_obj(jw);
		jw_key(jw, "name");
		raw = json_raw(j, json_get(j, f, "name"), &rl);
		jw_raw(jw, raw, rl);
		if (json_type(j, v = json_get(j, f, "description")) ==
		    JSMN_STRING) {
			jw_key(jw, "description");
			raw = json_raw(j, v, &rl);
			jw_raw(jw, raw, rl);
		}
		jw_key(jw, "input_schema");
		if (json_type(j, v = json_get(j, f, "parameters")) ==
		    JSMN_OBJECT) {
			raw = json_raw(j, v, &rl);
			jw_raw(jw, raw, rl);
		} else
			PROV_RAW(jw, "{\"type\":\"object\",\"properties\":{}}");
		jw_obj_end(jw);
	}
	jw_arr_end(jw);
}

/* Write tool_choice; parallel_tool_calls:false disables parallel use. */
static void
anth_tool_choice(const struct prov_call *pc, struct jw *jw)
{
	const struct json *s, *ps;
	int tc = prov_opt(pc, "tool_choice", &s), fn;
	int par = prov_opt(pc, "parallel_tool_calls", &ps);
	int nopar = par >= 0 && !json_is_true(ps, par);
	const char *raw;
	size_t rl;

	fn = json_path(s, tc, "function.name");
	if (tc < 0 && !nopar)
		return;
	if (tc >= 0 && json_eq(s, tc, "none")) {
		jw_key(jw, "tool_choice");
		PROV_RAW(jw, "{\"type\":\"none\"}");
		return;
	}
	jw_key(jw, "tool_choice");
	jw_obj(jw);
	jw_key(jw, "type");
	if (tc >= 0 && json_eq(s, tc, "required"))
		jw_cstr(jw, "any");
	else if (tc >= 0 && json_type(s, fn) == JSMN_STRING) {
		jw_cstr(jw, "tool");
		jw_key(jw, "name");
		raw = json_raw(s, fn, &rl);
		jw_raw(jw, raw, rl);
	} else
		jw_cstr(jw, "auto");
	if (nopar) {
		jw_key(jw, "disable_parallel_tool_use");
		jw_bool(jw, true);
	}
	jw_obj_end(jw);
}

/* Write stop (string or array) as stop_sequences. */
static void
anth_stop(const struct prov_call *pc, struct jw *jw)
{
	const struct json *s;
	int t = prov_opt(pc, "stop", &s), n;
	const char *raw;
	size_t rl;

	if (json_type(s, t) != JSMN_STRING && json_type(s, t) != JSMN_ARRAY)
		return;
	jw_key(jw, "stop_sequences");
	jw_arr(jw);
	n = json_type(s, t) == JSMN_STRING ? 1 : json_size(s, t);
	for (int i = 0; i < n; i++) {
		int e = json_type(s, t) == JSMN_STRING ? t : json_at(s, t, i);
		if (json_type(s, e) != JSMN_STRING)
			continue;
		raw = json_raw(s, e, &rl);
		jw_raw(jw, raw, rl);
	}
	jw_arr_end(jw);
}

/* max_tokens: the request's, the params', the deployment's, or 4096. */
static long long
anth_max_tokens(const struct prov_call *pc)
{
	static const char *const keys[] = {"max_completion_tokens",
	                                   "max_tokens"};
	const struct json *s;
	long long v;
	int t;

	for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
		t = prov_opt(pc, keys[i], &s);
		if (json_int(s, t, &v) == 0 && v > 0)
			return v;
	}
	return pc->d->max_tokens > 0 ? pc->d->max_tokens : ANTH_MAX_TOKENS;
}

/* Write a number option, clamped to [lo, hi], under name. */
static void
anth_num(const struct prov_call *pc, struct jw *jw, const char *key,
         const char *name, double lo, double hi)
{
	const struct json *s;
	double v;
	int t = prov_opt(pc, key, &s);

	if (json_num(s, t, &v) == -1)
		return;
	jw_key(jw, name);
	jw_num(jw, v < lo ? lo : v > hi ? hi : v);
}

/* Write metadata.user_id from the OpenAI `user` field. */
static void
anth_user(const struct prov_call *pc, struct jw *jw)
{
	const struct json *s;
	int t = prov_opt(pc, "user", &s);
	const char *raw;
	size_t rl;

	if (json_type(s, t) != JSMN_STRING)
		return;
	jw_key(jw, "metadata");
	jw_obj(jw);
	jw_key(jw, "user_id");
	raw = json_raw(s, t, &rl);
	jw_raw(jw, raw, rl);
	jw_obj_end(jw);
}

/* Fold response_format and system_prompt_append into the system text. */
static void
anth_sys_extras(struct anth_ctx *x)
{
	const struct json *s;
	int rf = prov_opt(x->pc, "response_format", &s);
	int ty = json_get(s, rf, "type"), sc;
	const char *raw, *app = x->pc->d->system_prompt_append;
	size_t rl;

	if (json_eq(s, ty, "json_object"))
		anth_sys_add(x, ANTH_JSON_ONLY, strlen(ANTH_JSON_ONLY));
	else if (json_eq(s, ty, "json_schema")) {
		anth_sys_add(x, ANTH_JSON_ONLY, strlen(ANTH_JSON_ONLY));
		sc = json_path(s, rf, "json_schema.schema");
		if ((raw = json_raw(s, sc, &rl)) != NULL) {
			buf_adds(&x->sys, " It must match this JSON schema: ");
			buf_add(&x->sys, raw, rl);
		}
	}
	if (app && app[0])
		anth_sys_add(x, app, strlen(app));
}

/* Write the fields after messages: tools, sampling, stream, metadata. */
static void
anth_options(const struct prov_call *pc, struct jw *jw)
{
	const struct json *s;
	int t = prov_opt(pc, "tools", &s);
	const char *raw;
	size_t rl;

	if (json_type(s, t) == JSMN_ARRAY && json_size(s, t) > 0) {
		anth_tools(jw, s, t);
		anth_tool_choice(pc, jw);
	}
	anth_stop(pc, jw);
	anth_num(pc, jw, "temperature", "temperature", 0, 1);
	anth_num(pc, jw, "top_p", "top_p", 0, 1);
	anth_num(pc, jw, "top_k", "top_k", 0, 1e9);
	if ((t = prov_opt(pc, "thinking", &s)) >= 0 &&
	    json_type(s, t) == JSMN_OBJECT) {
		jw_key(jw, "thinking");
		raw = json_raw(s, t, &rl);
		jw_raw(jw, raw, rl);
	}
	anth_user(pc, jw);
	if (pc->stream) {
		jw_key(jw, "stream");
		jw_bool(jw, true);
	}
}

/* The Messages request body; -1 with err set if it cannot be built. */
static int
anth_body(const struct prov_call *pc, struct buf *out, char *err, size_t errsz)
{
	struct anth_ctx x = {
	    .pc = pc, .j = pc->req, .err = err, .errsz = errsz};
	struct buf msgs = {0};
	struct jw jw;
	int rc = -1;

	if (anth_messages(&x, &msgs) == -1)
		goto fail;
	anth_sys_extras(&x);
	jw_init(&jw, out);
	jw_obj(&jw);
	jw_key(&jw, "model");
	jw_cstr(&jw, pc->d->model);
	jw_key(&jw, "max_tokens");
	jw_int(&jw, anth_max_tokens(pc));
	if (x.sys.len) {
		jw_key(&jw, "system");
		jw_str(&jw, x.sys.data, x.sys.len);
	}
	jw_key(&jw, "messages");
	jw_raw(&jw, msgs.data, msgs.len);
	anth_options(pc, &jw);
	jw_obj_end(&jw);
	rc = msgs.oom || x.sys.oom ? -1 : 0;
fail:
	buf_free(&msgs);
	buf_free(&x.sys);
	return rc;
}

/* Build POST {base}/v1/messages. */
static int
anth_build(const struct prov_call *pc, struct prov_out *o, char *err,
           size_t errsz)
{
	const struct deploy_cfg *d = pc->d;

	if (pc->endpoint == EP_EMBED) {
		snprintf(err, errsz,
		         "anthropic has no embeddings endpoint "
		         "(deployment '%s')",
		         d->name);
		return -1;
	}
	if (anth_body(pc, &o->body, err, errsz) == -1)
		return -1;
	buf_printf(&o->path, "%s/v1/messages", d->path);
	if (d->api_key[0])
		buf_printf(&o->headers, "x-api-key: %s\r\n", d->api_key);
	buf_adds(&o->headers, "anthropic-version: " ANTH_VERSION "\r\n");
	buf_adds(&o->headers, "Content-Type: application/json\r\n");
	prov_extra_headers(d, &o->headers);
	return (o->path.oom || o->headers.oom || o->body.oom) ? -1 : 0;
}

/* OpenAI finish_reason for an Anthropic stop_reason token. */
static const char *
anth_finish(const struct json *j, int t, int *content_filter)
{
	if (json_eq(j, t, "max_tokens") ||
	    json_eq(j, t, "model_context_window_exceeded"))
		return "length";
	if (json_eq(j, t, "tool_use"))
		return "tool_calls";
	if (json_eq(j, t, "refusal")) {
		*content_filter = 1;
		return "content_filter";
	}
	return "stop";
}

/* Read a usage object (cached input counts as prompt tokens). */
static void
anth_usage(const struct json *j, int u, struct usage *out)
{
	static const char *const in[] = {"input_tokens",
	                                 "cache_creation_input_tokens",
	                                 "cache_read_input_tokens"};
	long long v, sum = 0;
	int any = 0;

	for (size_t i = 0; i < sizeof in / sizeof in[0]; i++)
		if (json_int(j, json_get(j, u, in[i]), &v) == 0) {
			sum += v;
			any = 1;
		}
	if (any)
		out->prompt_tokens = sum;
	if (json_int(j, json_get(j, u, "output_tokens"), &v) == 0)
		out->completion_tokens = v;
}

/* Write the message's text blocks joined, or null. */
static void
anth_resp_text(struct jw *jw, const struct json *j, int content)
{
	struct buf t = {0};
	int n = json_size(j, content), b, any = 0;

	for (int i = 0; i < n; i++) {
		b = json_at(j, content, i);
		if (!json_eq(j, json_get(j, b, "type"), "text"))
			continue;
		json_str_buf(j, json_get(j, b, "text"), &t);
		any = 1;
	}
	jw_key(jw, "content");
	if (any)
		jw_str(jw, t.data ? t.data : "", t.len);
	else
		jw_null(jw);
	buf_free(&t);
}

/* Write tool_use blocks as tool_calls; -1 if one is malformed. */
static int
anth_resp_tools(struct jw *jw, const struct json *j, int content)
{
	int n = json_size(j, content), b, in, any = 0;
	const char *raw;
	size_t rl;

	for (int i = 0; i < n; i++) {
		b = json_at(j, content, i);
		if (!json_eq(j, json_get(j, b, "type"), "tool_use"))
			continue;
		in = json_get(j, b, "input");
		if (json_type(j, json_get(j, b, "id")) != JSMN_STRING ||
		    json_type(j, json_get(j, b, "name")) != JSMN_STRING ||
		    (raw = json_raw(j, in, &rl)) == NULL)
			return -1;
		if (!any++) {
			jw_key(jw, "tool_calls");
			jw_arr(jw);
		}
		jw_obj(jw);
		jw_key(jw, "id");
		raw = json_raw(j, json_get(j, b, "id"), &rl);
		jw_raw(jw, raw, rl);
		jw_key(jw, "type");
		jw_cstr(jw, "function");
		jw_key(jw, "function");
		jw_obj(jw);
		jw_key(jw, "name");
		raw = json_raw(j, json_get(j, b, "name"), &rl);
		jw_raw(jw, raw, rl);
		jw_key(jw, "arguments");
		raw = json_raw(j, in, &rl);
		jw_str(jw, raw, rl);
		jw_obj_end(jw);
		jw_obj_end(jw);
	}
	if (any)
		jw_arr_end(jw);
	return 0;
}

/* Write "key": <string token t>, or fallback when t is not a string. */
static void
anth_str_or(struct jw *jw, const char *key, const struct json *j, int t,
            const char *fallback)
{
	const char *raw;
	size_t rl;

	jw_key(jw, key);
	if (json_type(j, t) == JSMN_STRING) {
		raw = json_raw(j, t, &rl);
		jw_raw(jw, raw, rl);
	} else
		jw_cstr(jw, fallback);
}

/* Write the chat.completion for a parsed message. */
static int
anth_completion(const struct prov_call *pc, const struct json *j,
                struct buf *out, struct usage *u, int *cf)
{
	int content = json_get(j, 0, "content");
	struct jw jw;
	const char *fin = anth_finish(j, json_get(j, 0, "stop_reason"), cf);

	jw_init(&jw, out);
	jw_obj(&jw);
	anth_str_or(&jw, "id", j, json_get(j, 0, "id"), "msg");
	jw_key(&jw, "object");
	jw_cstr(&jw, "chat.completion");
	jw_key(&jw, "created");
	jw_int(&jw, (long long)time(NULL));
	anth_str_or(&jw, "model", j, json_get(j, 0, "model"), pc->d->model);
	jw_key(&jw, "choices");
	jw_arr(&jw);
	jw_obj(&jw);
	jw_key(&jw, "index");
	jw_int(&jw, 0);
	jw_key(&jw, "message");
	jw_obj(&jw);
	jw_key(&jw, "role");
	jw_cstr(&jw, "assistant");
	anth_resp_text(&jw, j, content);
	jw_key(&jw, "refusal");
	jw_null(&jw);
	if (anth_resp_tools(&jw, j, content) == -1)
		return -1;
	jw_obj_end(&jw);
	jw_key(&jw, "finish_reason");
	jw_cstr(&jw, fin);
	jw_obj_end(&jw);
	jw_arr_end(&jw);
	anth_usage(j, json_get(j, 0, "usage"), u);
	prov_usage(&jw, u);
	jw_obj_end(&jw);
	return 0;
}

/* Translate a whole Messages reply into a chat.completion. */
static int
anth_response(const struct prov_call *pc, const char *body, size_t len,
              struct buf *out, struct usage *u, int *content_filter,
              struct upstream_error *e)
{
	static struct json j;
	int t;
	size_t mark = out->len;

	if (json_parse(&j, body, len) == -1 ||
	    json_type(&j, 0) != JSMN_OBJECT) {
		prov_malformed(e, "not a JSON object");
		return -1;
	}
	if (json_eq(&j, json_get(&j, 0, "type"), "error") ||
	    ((t = json_get(&j, 0, "error")) >= 0 && !json_is_null(&j, t))) {
		prov_stream_error(body, len, e);
		return -1;
	}
	if (json_type(&j, json_get(&j, 0, "content")) != JSMN_ARRAY) {
		prov_malformed(e, "no 'content' array");
		return -1;
	}
	if (anth_completion(pc, &j, out, u, content_filter) == -1) {
		out->len = mark;
		prov_malformed(e, "tool_use block without id, name or input");
		return -1;
	}
	return 0;
}

/* Stream event types. */
enum anth_ev {
	AE_UNKNOWN = 0,
	AE_MESSAGE_START,
	AE_BLOCK_START,
	AE_BLOCK_DELTA,
	AE_BLOCK_STOP,
	AE_MESSAGE_DELTA,
	AE_MESSAGE_STOP,
	AE_PING,
	AE_ERROR,
};

/* The event type of a parsed event (data's "type", else the event name). */
static enum anth_ev
anth_ev_type(const struct json *j, const char *ev, size_t elen)
{
	static const struct {
		const char *name;
		enum anth_ev type;
	} map[] = {
	    {"message_start", AE_MESSAGE_START},
	    {"content_block_start", AE_BLOCK_START},
	    {"content_block_delta", AE_BLOCK_DELTA},
	    {"content_block_stop", AE_BLOCK_STOP},
	    {"message_delta", AE_MESSAGE_DELTA},
	    {"message_stop", AE_MESSAGE_STOP},
	    {"ping", AE_PING},
	    {"error", AE_ERROR},
	};
	int t = json_get(j, 0, "type");

	for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
		if (t >= 0 ? json_eq(j, t, map[i].name)
		           : (strlen(map[i].name) == elen &&
		              memcmp(map[i].name, ev, elen) == 0))
			return map[i].type;
	}
	return AE_UNKNOWN;
}

/* message_start: remember id and model, take input usage, send the role. */
static int
anth_ev_start(struct stream_state *st, const struct json *j, struct buf *out,
              struct upstream_error *e)
{
	int m = json_get(j, 0, "message");
	struct jw jw;

	if (json_type(j, m) != JSMN_OBJECT) {
		prov_malformed(e, "message_start without a message");
		return -1;
	}
	json_str(j, json_get(j, m, "id"), st->id, sizeof st->id);
	json_str(j, json_get(j, m, "model"), st->model, sizeof st->model);
	anth_usage(j, json_get(j, m, "usage"), &st->usage);
	if (st->role_sent)
		return 0;
	prov_chunk_open(st, out, &jw, 0);
	PROV_RAW(&jw, "{\"role\":\"assistant\",\"content\":\"\"}");
	prov_chunk_close(&jw, NULL);
	st->role_sent = 1;
	return 0;
}

/* Write a tool_calls delta head: [{"index":i (, id, type, name)}. */
static void
anth_tool_delta(struct jw *jw, int index)
{
	jw_obj(jw);
	jw_key(jw, "tool_calls");
	jw_arr(jw);
	jw_obj(jw);
	jw_key(jw, "index");
	jw_int(jw, index);
}

/* content_block_start: a tool_use block opens an OpenAI tool call. */
static int
anth_ev_block_start(struct stream_state *st, const struct json *j,
                    struct buf *out, struct upstream_error *e)
{
	int cb = json_get(j, 0, "content_block"), id, name;
	long long bi;
	struct jw jw;
	const char *raw;
	size_t rl;

	if (json_eq(j, json_get(j, cb, "type"), "text")) {
		buf_reset(&st->partial);
		if (json_str_buf(j, json_get(j, cb, "text"), &st->partial) > 0)
			prov_chunk_text(st, out, st->partial.data,
			                st->partial.len);
		return 0;
	}
	if (!json_eq(j, json_get(j, cb, "type"), "tool_use"))
		return 0;
	id = json_get(j, cb, "id");
	name = json_get(j, cb, "name");
	if (json_int(j, json_get(j, 0, "index"), &bi) == -1 || bi < 0 ||
	    bi >= 64 || json_type(j, id) != JSMN_STRING ||
	    json_type(j, name) != JSMN_STRING) {
		prov_malformed(e, "bad tool_use content_block_start");
		return -1;
	}
	st->tool_block[bi] = ++st->ntool;
	prov_chunk_open(st, out, &jw, 0);
	anth_tool_delta(&jw, st->ntool - 1);
	jw_key(&jw, "id");
	raw = json_raw(j, id, &rl);
	jw_raw(&jw, raw, rl);
	jw_key(&jw, "type");
	jw_cstr(&jw, "function");
	jw_key(&jw, "function");
	jw_obj(&jw);
	jw_key(&jw, "name");
	raw = json_raw(j, name, &rl);
	jw_raw(&jw, raw, rl);
	jw_key(&jw, "arguments");
	jw_cstr(&jw, "");
	jw_obj_end(&jw);
	jw_obj_end(&jw);
	jw_arr_end(&jw);
	jw_obj_end(&jw);
	prov_chunk_close(&jw, NULL);
	st->content_seen = st->tool_seen = 1;
	return 0;
}

/* input_json_delta: pass the fragment on as the tool call's arguments. */
static int
anth_json_delta(struct stream_state *st, const struct json *j, int d,
                struct buf *out, struct upstream_error *e)
{
	long long bi;
	struct jw jw;
	int pj = json_get(j, d, "partial_json");

	if (json_int(j, json_get(j, 0, "index"), &bi) == -1 || bi < 0 ||
	    bi >= 64 || st->tool_block[bi] == 0 ||
	    json_type(j, pj) != JSMN_STRING) {
		prov_malformed(e, "input_json_delta outside a tool_use block");
		return -1;
	}
	buf_reset(&st->partial);
	if (json_str_buf(j, pj, &st->partial) <= 0)
		return 0;
	prov_chunk_open(st, out, &jw, 0);
	anth_tool_delta(&jw, st->tool_block[bi] - 1);
	jw_key(&jw, "function");
	jw_obj(&jw);
	jw_key(&jw, "arguments");
	jw_str(&jw, st->partial.data, st->partial.len);
	jw_obj_end(&jw);
	jw_obj_end(&jw);
	jw_arr_end(&jw);
	jw_obj_end(&jw);
	prov_chunk_close(&jw, NULL);
	st->content_seen = st->tool_seen = 1;
	return 0;
}

/* content_block_delta: text or tool-argument fragments; others ignored. */
static int
anth_ev_block_delta(struct stream_state *st, const struct json *j,
                    struct buf *out, struct upstream_error *e)
{
	int d = json_get(j, 0, "delta"), ty = json_get(j, d, "type");

	if (json_eq(j, ty, "text_delta")) {
		buf_reset(&st->partial);
		if (json_str_buf(j, json_get(j, d, "text"), &st->partial) ==
		    -1) {
			prov_malformed(e, "text_delta without text");
			return -1;
		}
		if (st->partial.len)
			prov_chunk_text(st, out, st->partial.data,
			                st->partial.len);
		return 0;
	}
	if (json_eq(j, ty, "input_json_delta"))
		return anth_json_delta(st, j, d, out, e);
	if (ty < 0) {
		prov_malformed(e, "content_block_delta without a delta type");
		return -1;
	}
	return 0;
}

/* Emit the finish chunk with reason fin. */
static void
anth_finish_chunk(struct stream_state *st, struct buf *out, const char *fin)
{
	struct jw jw;

	prov_chunk_open(st, out, &jw, 0);
	jw_obj(&jw);
	jw_obj_end(&jw);
	prov_chunk_close(&jw, fin);
	st->finished = 1;
}

/* message_delta: the stop reason and the output usage. */
static int
anth_ev_message_delta(struct stream_state *st, const struct json *j,
                      struct buf *out)
{
	int sr = json_path(j, 0, "delta.stop_reason");

	anth_usage(j, json_get(j, 0, "usage"), &st->usage);
	if (sr >= 0 && !json_is_null(j, sr) && !st->finished)
		anth_finish_chunk(st, out,
		                  anth_finish(j, sr, &st->content_filter));
	return 0;
}

/* message_stop: close the stream (finish and usage chunks as needed). */
static int
anth_ev_message_stop(struct stream_state *st, struct buf *out)
{
	if (!st->finished)
		anth_finish_chunk(st, out, "stop");
	if (st->include_usage)
		prov_chunk_usage(st, out);
	return 1;
}

/* Translate one Anthropic stream event into OpenAI chunks. */
static int
anth_stream_event(const struct prov_call *pc, struct stream_state *st,
                  const char *ev, size_t elen, const char *data, size_t dlen,
                  struct buf *out, struct upstream_error *e)
{
	static struct json j;

	(void)pc;
	if (json_parse(&j, data, dlen) == -1 ||
	    json_type(&j, 0) != JSMN_OBJECT) {
		prov_malformed(e, "stream event is not a JSON object");
		return -1;
	}
	switch (anth_ev_type(&j, ev, elen)) {
	case AE_MESSAGE_START:
		return anth_ev_start(st, &j, out, e);
	case AE_BLOCK_START:
		return anth_ev_block_start(st, &j, out, e);
	case AE_BLOCK_DELTA:
		return anth_ev_block_delta(st, &j, out, e);
	case AE_MESSAGE_DELTA:
		return anth_ev_message_delta(st, &j, out);
	case AE_MESSAGE_STOP:
		return anth_ev_message_stop(st, out);
	case AE_ERROR:
		prov_stream_error(data, dlen, e);
		return -1;
	case AE_BLOCK_STOP:
	case AE_PING:
	case AE_UNKNOWN:
		return 0;
	}
	return 0;
}

/* The body ended after message_delta without message_stop: close the
 * stream as message_stop would. */
static void
anth_stream_end(const struct prov_call *pc, struct stream_state *st,
                struct buf *out)
{
	(void)pc;
	(void)anth_ev_message_stop(st, out);
}

const struct provider prov_anthropic = {
    .name = "anthropic",
    .build = anth_build,
    .response = anth_response,
    .stream_event = anth_stream_event,
    .stream_end = anth_stream_end,
};
