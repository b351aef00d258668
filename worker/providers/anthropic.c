/* Anthropic Messages: OpenAI chat requests translated to /v1/messages
 * (system lifted out, tool calls and results as content blocks, turns
 * merged so roles alternate), and replies and event streams translated
 * back into chat.completion objects and chunks. A client's own Messages
 * body (native) passes through, and so do the replies and events. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "worker/provider.h"

#define ANTH_VERSION    "2023-06-01"
#define ANTH_MAX_TOKENS 4096
#define ANTH_JSON_ONLY  "Respond with a JSON object only."
#define ANTH_NO_SCHEMA  "{\"type\":\"object\",\"properties\":{}}"
#define ANTH_IMAGE_B64                                                         \
	"{\"type\":\"image\",\"source\":{\"type\":\"base64\","                 \
	"\"media_type\":%m,\"data\":%d}}"
#define ANTH_IMAGE_URL                                                         \
	"{\"type\":\"image\",\"source\":{\"type\":\"url\",\"url\":%u}}"
#define ANTH_FILE_B64                                                          \
	"{\"type\":\"document\",\"source\":{\"type\":\"base64\","              \
	"\"media_type\":%m,\"data\":%d}}"

/* Write assistant tool_calls as tool_use blocks. */
static int
anth_tool_uses(struct prov_xlate *x, struct jw *jw, int tcs)
{
	const struct json *j = x->j;
	int n = json_size(j, tcs), tc, f;

	for (int i = 0; i < n; i++) {
		tc = json_at(j, tcs, i);
		f = json_get(j, tc, "function");
		if (json_type(j, json_get(j, tc, "id")) != JSMN_STRING ||
		    json_type(j, json_get(j, f, "name")) != JSMN_STRING)
			return prov_fail(x, "tool call without id or name");
		jw_obj(jw);
		jw_key(jw, "type");
		jw_cstr(jw, "tool_use");
		jw_key(jw, "id");
		prov_raw(jw, j, json_get(j, tc, "id"));
		jw_key(jw, "name");
		prov_raw(jw, j, json_get(j, f, "name"));
		jw_key(jw, "input");
		prov_args_object(jw, j, json_get(j, f, "arguments"));
		jw_obj_end(jw);
	}
	return 0;
}

/* Write a tool message as a tool_result block. */
static int
anth_tool_result(struct prov_xlate *x, struct jw *jw, int m, int i)
{
	const struct json *j = x->j;
	int id = json_get(j, m, "tool_call_id");
	int c = json_get(j, m, "content");

	(void)i;
	if (json_type(j, id) != JSMN_STRING)
		return prov_fail(x, "tool message without tool_call_id");
	jw_obj(jw);
	jw_key(jw, "type");
	jw_cstr(jw, "tool_result");
	jw_key(jw, "tool_use_id");
	prov_raw(jw, j, id);
	jw_key(jw, "content");
	if (json_type(j, c) == JSMN_ARRAY) {
		jw_arr(jw);
		if (prov_content(x, jw, c) == -1)
			return -1;
		jw_arr_end(jw);
	} else if (json_type(j, c) == JSMN_STRING)
		prov_raw(jw, j, c);
	else
		jw_cstr(jw, "");
	jw_obj_end(jw);
	return 0;
}

/* Write tool_choice; parallel_tool_calls:false disables parallel use. */
static void
anth_tool_choice(const struct prov_call *pc, struct jw *jw)
{
	const struct json *s, *ps;
	int tc = prov_opt(pc, "tool_choice", &s), fn;
	int par = prov_opt(pc, "parallel_tool_calls", &ps);
	int nopar = par >= 0 && !json_is_true(ps, par);

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
		prov_raw(jw, s, fn);
	} else
		jw_cstr(jw, "auto");
	if (nopar) {
		jw_key(jw, "disable_parallel_tool_use");
		jw_bool(jw, true);
	}
	jw_obj_end(jw);
}

/* Write metadata.user_id from the OpenAI `user` field. */
static void
anth_user(const struct prov_call *pc, struct jw *jw)
{
	const struct json *s;
	int t = prov_opt(pc, "user", &s);

	if (json_type(s, t) != JSMN_STRING)
		return;
	jw_key(jw, "metadata");
	jw_obj(jw);
	jw_key(jw, "user_id");
	prov_raw(jw, s, t);
	jw_obj_end(jw);
}

/* Fold response_format and system_prompt_append into the system text. */
static void
anth_sys_extras(struct prov_xlate *x)
{
	const struct json *s;
	int rf = prov_opt(x->pc, "response_format", &s);
	int ty = json_get(s, rf, "type"), sc;
	const char *raw, *app = x->pc->d->system_prompt_append;
	size_t rl;

	if (json_eq(s, ty, "json_object"))
		prov_sys_add(x, ANTH_JSON_ONLY, strlen(ANTH_JSON_ONLY));
	else if (json_eq(s, ty, "json_schema")) {
		prov_sys_add(x, ANTH_JSON_ONLY, strlen(ANTH_JSON_ONLY));
		sc = json_path(s, rf, "json_schema.schema");
		if ((raw = json_raw(s, sc, &rl)) != NULL) {
			buf_adds(&x->sys, " It must match this JSON schema: ");
			buf_add(&x->sys, raw, rl);
		}
	}
	if (app && app[0])
		prov_sys_add(x, app, strlen(app));
}

/* The thinking budget for the request's reasoning_effort: at most half
 * of max (the budget is part of max_tokens, and the answer needs room), at
 * least Anthropic's 1024; 0 when the request says how to think itself or
 * forces a tool (which thinking refuses). */
static long long
anth_budget(const struct prov_call *pc, long long max)
{
	const struct json *s;
	int tc = prov_opt(pc, "tool_choice", &s);
	long long b;

	if ((tc >= 0 && !json_eq(s, tc, "auto") && !json_eq(s, tc, "none")) ||
	    prov_opt(pc, "thinking", &s) >= 0 ||
	    (b = prov_thinking_budget(pc, THINK_CLAUDE)) <= 0)
		return 0;
	if (b > max / 2)
		b = max / 2;
	return b >= 1024 ? b : 0;
}

/* Write the fields after messages: tools, sampling (none when thinking,
 * which refuses it), thinking, stream (when the variant has it in the
 * body), metadata. */
static void
anth_options(const struct prov_call *pc, const struct anth_variant *v,
             long long max, struct jw *jw)
{
	const struct json *s;
	int t = prov_opt(pc, "tools", &s);
	long long budget = anth_budget(pc, max);

	if (json_type(s, t) == JSMN_ARRAY && json_size(s, t) > 0) {
		jw_key(jw, "tools");
		prov_tools(jw, s, t, "input_schema", ANTH_NO_SCHEMA);
		anth_tool_choice(pc, jw);
	}
	prov_stop(pc, jw, "stop_sequences");
	if (budget > 0) {
		jw_key(jw, "thinking");
		jw_obj(jw);
		jw_key(jw, "type");
		jw_cstr(jw, "enabled");
		jw_key(jw, "budget_tokens");
		jw_int(jw, budget);
		jw_obj_end(jw);
	} else {
		prov_num(pc, jw, "temperature", "temperature", 0, 1);
		prov_num(pc, jw, "top_p", "top_p", 0, 1);
		prov_num(pc, jw, "top_k", "top_k", 0, 1e9);
	}
	if ((t = prov_opt(pc, "thinking", &s)) >= 0 &&
	    json_type(s, t) == JSMN_OBJECT) {
		jw_key(jw, "thinking");
		prov_raw(jw, s, t);
	}
	anth_user(pc, jw);
	if (pc->stream && v->stream) {
		jw_key(jw, "stream");
		jw_bool(jw, true);
	}
}

/* The variant of Anthropic's own API. */
static const struct anth_variant anth_api = {
    .version = NULL, .model = 1, .stream = 1, .beta_body = 0};

/* The Messages body members around the translated turns, as the variant
 * (x->arg, NULL: Anthropic's own API) wants them. */
static void
anth_members(struct prov_xlate *x, struct jw *jw)
{
	const struct prov_call *pc = x->pc;
	const struct anth_variant *v = x->arg ? x->arg : &anth_api;
	long long max = prov_max_tokens(pc);

	anth_sys_extras(x);
	if (v->version) {
		jw_key(jw, "anthropic_version");
		jw_cstr(jw, v->version);
	}
	if (v->model) {
		jw_key(jw, "model");
		jw_cstr(jw, prov_model(pc));
	}
	if (max <= 0)
		max = ANTH_MAX_TOKENS;
	jw_key(jw, "max_tokens");
	jw_int(jw, max);
	if (x->sys.len) {
		jw_key(jw, "system");
		jw_str(jw, x->sys.data, x->sys.len);
	}
	jw_key(jw, "messages");
	jw_raw(jw, x->turns.data, x->turns.len);
	anth_options(pc, v, max, jw);
}

/* How OpenAI messages become Messages turns. */
static const struct prov_dialect anth_dialect = {
    .name = "anthropic",
    .partkey = "content",
    .assistant = "assistant",
    .text_type = "text",
    .image = {ANTH_IMAGE_B64, ANTH_IMAGE_URL},
    .file = ANTH_FILE_B64,
    .tool_calls = anth_tool_uses,
    .prefill = 1,
    .tool_result = anth_tool_result,
    .members = anth_members,
};

/* Write n bytes at v, trimmed, as a string member of the array; 1 if it
 * was not empty. */
static int
anth_beta_one(struct jw *jw, const char *v, size_t n)
{
	while (n > 0 && (*v == ' ' || *v == '\t')) {
		v++;
		n--;
	}
	while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
		n--;
	if (n > 0)
		jw_str(jw, v, n);
	return n > 0;
}

/* Append the client's anthropic-beta values (comma-separated, maybe on
 * several lines) as the members of a JSON array; how many. */
static int
anth_betas(const struct prov_call *pc, struct jw *jw)
{
	struct buf h = {0};
	const char *p, *e, *v, *end;
	int k = 0;

	prov_fwd_headers(pc, "anthropic-beta", "anthropic-beta", &h);
	for (p = buf_cstr(&h); (e = strstr(p, "\r\n")) != NULL; p = e + 2) {
		if ((v = memchr(p, ':', (size_t)(e - p))) == NULL)
			continue;
		for (v++; v < e; v = end + 1) {
			if ((end = memchr(v, ',', (size_t)(e - v))) == NULL)
				end = e;
			k += anth_beta_one(jw, v, (size_t)(end - v));
		}
	}
	buf_free(&h);
	return k;
}

/* A native Messages body for a variant: model and llmfd's fields dropped
 * (and stream, when the URL says it), anthropic_version set, the
 * client's anthropic-beta values as anthropic_beta. */
static void
anth_native_variant(const struct prov_call *pc, const struct anth_variant *v,
                    struct buf *out)
{
	const char *drop[24];
	struct buf betas = {0};
	struct jw jw;
	int n = 0;

	for (int i = 0; pc->drop_keys && pc->drop_keys[i] && n < 20; i++)
		drop[n++] = pc->drop_keys[i];
	drop[n++] = "model";
	if (!v->stream)
		drop[n++] = "stream";
	if (v->beta_body)
		drop[n++] = "anthropic_beta";
	drop[n] = NULL;
	prov_copy_obj(pc->native, "anthropic_version", v->version, drop, out);
	jw_init(&jw, &betas);
	jw_arr(&jw);
	if (!v->beta_body || anth_betas(pc, &jw) == 0 || out->len < 2) {
		buf_free(&betas);
		return;
	}
	jw_arr_end(&jw);
	out->len--; /* the closing brace */
	if (out->data[out->len - 1] != '{')
		buf_addc(out, ',');
	buf_adds(out, "\"anthropic_beta\":");
	buf_add(out, betas.data, betas.len);
	buf_addc(out, '}');
	buf_free(&betas);
}

/* The body for a variant: the client's own Messages body (native), or
 * one translated from the Chat request. */
int
anth_body_variant(const struct prov_call *pc, const struct anth_variant *v,
                  struct buf *out, char *err, size_t errsz)
{
	if (pc->native == NULL)
		return prov_xlate_body_arg(pc, &anth_dialect, v, out, err,
		                           errsz);
	if (pc->native_fmt != FMT_MESSAGES ||
	    json_type(pc->native, 0) != JSMN_OBJECT) {
		snprintf(err, errsz,
		         "anthropic: a native body must be a Messages object");
		return -1;
	}
	if (v->model)
		prov_copy_obj(pc->native, "model", prov_model(pc),
		              pc->drop_keys, out);
	else
		anth_native_variant(pc, v, out);
	return 0;
}

/* The body: the client's own Messages body (native: model replaced,
 * llmfd's fields dropped), or one translated from the Chat request. */
static int
anth_body(const struct prov_call *pc, struct buf *out, char *err, size_t errsz)
{
	return anth_body_variant(pc, &anth_api, out, err, errsz);
}

/* Build POST {base}/v1/messages (or .../count_tokens for EP_COUNT, from
 * the client's own body); the client's anthropic-version and
 * anthropic-beta headers are forwarded. */
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
	if (pc->endpoint == EP_COUNT && pc->native == NULL) {
		snprintf(err, errsz,
		         "anthropic: count_tokens takes a Messages body");
		return -1;
	}
	if (anth_body(pc, &o->body, err, errsz) == -1)
		return -1;
	buf_printf(&o->path, "%s/v1/messages%s", d->path,
	           pc->endpoint == EP_COUNT ? "/count_tokens" : "");
	if (d->api_key[0])
		buf_printf(&o->headers, "x-api-key: %s\r\n", d->api_key);
	if (!prov_fwd_headers(pc, "anthropic-", "anthropic-version",
	                      &o->headers))
		buf_adds(&o->headers,
		         "anthropic-version: " ANTH_VERSION "\r\n");
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
	if (json_int(j, json_get(j, u, "cache_read_input_tokens"), &v) == 0)
		out->cached_tokens = v;
	if (json_int(j, json_get(j, u, "cache_creation_input_tokens"), &v) == 0)
		out->cache_write_tokens = v;
}

/* Write tool_use blocks as tool_calls; -1 if one is malformed. */
static int
anth_resp_tools(struct jw *jw, const struct json *j, int content)
{
	int n = json_size(j, content), b, in, any = 0;

	for (int i = 0; i < n; i++) {
		b = json_at(j, content, i);
		if (!json_eq(j, json_get(j, b, "type"), "tool_use"))
			continue;
		in = json_get(j, b, "input");
		if (json_type(j, json_get(j, b, "id")) != JSMN_STRING ||
		    json_type(j, json_get(j, b, "name")) != JSMN_STRING ||
		    in < 0)
			return -1;
		if (!any++) {
			jw_key(jw, "tool_calls");
			jw_arr(jw);
		}
		jw_obj(jw);
		prov_tool_call(jw, j, json_get(j, b, "id"), NULL,
		               json_get(j, b, "name"), in, NULL);
		jw_obj_end(jw);
	}
	if (any)
		jw_arr_end(jw);
	return 0;
}

/* Write the message: text blocks joined (or null), then tool calls. */
static int
anth_resp_message(struct jw *jw, const struct json *j, int content)
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
	prov_message_open(jw, any ? &t : NULL);
	buf_free(&t);
	if (anth_resp_tools(jw, j, content) == -1)
		return -1;
	jw_obj_end(jw);
	return 0;
}

/* Write the chat.completion of a parsed message (a prov_reply_fn). */
static int
anth_completion(const struct prov_call *pc, const struct json *j,
                struct buf *out, struct usage *u, int *cf,
                struct upstream_error *e)
{
	int content = json_get(j, 0, "content");
	const char *fin;
	struct jw jw;

	if (json_type(j, content) != JSMN_ARRAY)
		return prov_malformed(e, "no 'content' array");
	fin = anth_finish(j, json_get(j, 0, "stop_reason"), cf);
	prov_completion_head(&jw, out, j, json_get(j, 0, "id"), "msg",
	                     json_get(j, 0, "model"), prov_model(pc));
	jw_key(&jw, "choices");
	jw_arr(&jw);
	jw_obj(&jw);
	jw_key(&jw, "index");
	jw_int(&jw, 0);
	if (anth_resp_message(&jw, j, content) == -1)
		return prov_malformed(
		    e, "tool_use block without id, name or input");
	jw_key(&jw, "finish_reason");
	jw_cstr(&jw, fin);
	jw_obj_end(&jw);
	jw_arr_end(&jw);
	anth_usage(j, json_get(j, 0, "usage"), u);
	prov_usage(&jw, u);
	jw_obj_end(&jw);
	return 0;
}

/* Pass a parsed message through unchanged, noting usage and a refusal
 * (a prov_reply_fn). */
static int
anth_native_reply(const struct prov_call *pc, const struct json *j,
                  struct buf *out, struct usage *u, int *cf,
                  struct upstream_error *e)
{
	(void)pc;
	if (json_type(j, json_get(j, 0, "content")) != JSMN_ARRAY)
		return prov_malformed(e, "no 'content' array");
	anth_finish(j, json_get(j, 0, "stop_reason"), cf);
	anth_usage(j, json_get(j, 0, "usage"), u);
	buf_add(out, j->js, j->len);
	return 0;
}

/* Pass a count_tokens answer through unchanged once it is seen to carry
 * its count (a prov_reply_fn). */
static int
anth_count_reply(const struct prov_call *pc, const struct json *j,
                 struct buf *out, struct usage *u, int *cf,
                 struct upstream_error *e)
{
	double n;

	(void)pc;
	(void)u;
	(void)cf;
	if (json_num(j, json_get(j, 0, "input_tokens"), &n) == -1 || n < 0)
		return prov_malformed(e, "no 'input_tokens' count");
	buf_add(out, j->js, j->len);
	return 0;
}

/* Translate a whole Messages reply into a chat.completion, or pass it
 * through (native, and a count_tokens answer). */
static int
anth_response(const struct prov_call *pc, const char *body, size_t len,
              struct buf *out, struct usage *u, int *content_filter,
              struct upstream_error *e)
{
	prov_reply_fn *fn = pc->native ? anth_native_reply : anth_completion;

	if (pc->endpoint == EP_COUNT)
		fn = anth_count_reply;
	return prov_reply(pc, body, len, fn, out, u, content_filter, e);
}

/* Stream event types, in the order of anth_events. */
enum anth_ev {
	AE_MESSAGE_START = 0,
	AE_BLOCK_START,
	AE_BLOCK_DELTA,
	AE_BLOCK_STOP,
	AE_MESSAGE_DELTA,
	AE_MESSAGE_STOP,
	AE_PING,
	AE_ERROR,
};
static const char *const anth_events[] = {"message_start",
                                          "content_block_start",
                                          "content_block_delta",
                                          "content_block_stop",
                                          "message_delta",
                                          "message_stop",
                                          "ping",
                                          "error",
                                          NULL};

/* message_start: remember id and model, take input usage, send the role. */
static int
anth_ev_start(struct stream_state *st, const struct json *j, struct buf *out,
              struct upstream_error *e)
{
	int m = json_get(j, 0, "message");

	if (json_type(j, m) != JSMN_OBJECT)
		return prov_malformed(e, "message_start without a message");
	json_str(j, json_get(j, m, "id"), st->id, sizeof st->id);
	json_str(j, json_get(j, m, "model"), st->model, sizeof st->model);
	anth_usage(j, json_get(j, m, "usage"), &st->usage);
	prov_chunk_role(st, out);
	return 0;
}

/* The tool_block slot of an event's "index"; -1 when out of range. */
static int
anth_block_index(const struct json *j)
{
	long long bi;

	if (json_int(j, json_get(j, 0, "index"), &bi) == -1 || bi < 0 ||
	    bi >= 64)
		return -1;
	return (int)bi;
}

/* content_block_start: a tool_use block opens an OpenAI tool call. */
static int
anth_ev_block_start(struct stream_state *st, const struct json *j,
                    struct buf *out, struct upstream_error *e)
{
	int cb = json_get(j, 0, "content_block"), id, name, bi;
	struct jw jw;

	if (json_eq(j, json_get(j, cb, "type"), "text")) {
		prov_chunk_str(st, out, j, json_get(j, cb, "text"));
		return 0;
	}
	if (!json_eq(j, json_get(j, cb, "type"), "tool_use"))
		return 0;
	id = json_get(j, cb, "id");
	name = json_get(j, cb, "name");
	if ((bi = anth_block_index(j)) == -1 ||
	    json_type(j, id) != JSMN_STRING ||
	    json_type(j, name) != JSMN_STRING)
		return prov_malformed(e, "bad tool_use content_block_start");
	if (st->ntool >= PROV_MAX_TOOLS)
		return prov_malformed(e, "more than 255 tool calls");
	st->tool_block[bi] = (uint8_t)++st->ntool;
	prov_tool_delta_open(st, out, &jw, st->ntool - 1);
	prov_tool_call(&jw, j, id, NULL, name, -1, "");
	prov_tool_delta_close(st, &jw);
	return 0;
}

/* input_json_delta: pass the fragment on as the tool call's arguments. */
static int
anth_json_delta(struct stream_state *st, const struct json *j, int d,
                struct buf *out, struct upstream_error *e)
{
	int bi = anth_block_index(j), pj = json_get(j, d, "partial_json");
	struct jw jw;

	if (bi == -1 || st->tool_block[bi] == 0 ||
	    json_type(j, pj) != JSMN_STRING)
		return prov_malformed(
		    e, "input_json_delta outside a tool_use block");
	buf_reset(&st->partial);
	if (json_str_buf(j, pj, &st->partial) <= 0)
		return 0;
	prov_tool_delta_open(st, out, &jw, st->tool_block[bi] - 1);
	jw_key(&jw, "function");
	jw_obj(&jw);
	jw_key(&jw, "arguments");
	jw_str(&jw, st->partial.data, st->partial.len);
	jw_obj_end(&jw);
	prov_tool_delta_close(st, &jw);
	return 0;
}

/* content_block_delta: text or tool-argument fragments; others ignored. */
static int
anth_ev_block_delta(struct stream_state *st, const struct json *j,
                    struct buf *out, struct upstream_error *e)
{
	int d = json_get(j, 0, "delta"), ty = json_get(j, d, "type");

	if (json_eq(j, ty, "text_delta")) {
		if (prov_chunk_str(st, out, j, json_get(j, d, "text")) == -1)
			return prov_malformed(e, "text_delta without text");
		return 0;
	}
	if (json_eq(j, ty, "input_json_delta"))
		return anth_json_delta(st, j, d, out, e);
	if (ty < 0)
		return prov_malformed(
		    e, "content_block_delta without a delta type");
	return 0;
}

/* message_delta: the stop reason and the output usage. */
static int
anth_ev_message_delta(struct stream_state *st, const struct json *j,
                      struct buf *out)
{
	int sr = json_path(j, 0, "delta.stop_reason");

	anth_usage(j, json_get(j, 0, "usage"), &st->usage);
	if (sr >= 0 && !json_is_null(j, sr) && !st->finished)
		prov_chunk_finish(st, out,
		                  anth_finish(j, sr, &st->content_filter));
	return 0;
}

/* message_stop: close the stream (finish and usage chunks as needed). */
static int
anth_ev_message_stop(struct stream_state *st, struct buf *out)
{
	if (!st->finished)
		prov_chunk_finish(st, out, "stop");
	if (st->include_usage)
		prov_chunk_usage(st, out);
	return 1;
}

/* Translate one parsed Anthropic stream event into OpenAI chunks. */
static int
anth_event(struct stream_state *st, const struct json *j, const char *ev,
           size_t elen, struct buf *out, struct upstream_error *e)
{
	switch (prov_event_index(j, ev, elen, anth_events)) {
	case AE_MESSAGE_START:
		return anth_ev_start(st, j, out, e);
	case AE_BLOCK_START:
		return anth_ev_block_start(st, j, out, e);
	case AE_BLOCK_DELTA:
		return anth_ev_block_delta(st, j, out, e);
	case AE_MESSAGE_DELTA:
		return anth_ev_message_delta(st, j, out);
	case AE_MESSAGE_STOP:
		return anth_ev_message_stop(st, out);
	case AE_ERROR:
		prov_stream_error(j->js, j->len, e);
		return -1;
	default:
		return 0;
	}
}

/* Note a native event in st by translating it, as for a translated
 * stream, into chunks that are thrown away (a prov_note_fn). */
static int
anth_note(struct stream_state *st, const struct json *j, const char *ev,
          size_t elen, struct upstream_error *e)
{
	static struct buf sink;

	buf_reset(&sink);
	return anth_event(st, j, ev, elen, &sink, e);
}

/* What a native content_block_delta is read for (prov_native_fast). */
enum anth_fast_val { AF_TYPE = 0, AF_DELTA_TYPE, AF_TEXT };
static const char *const anth_fast_paths[] = {"type", "delta.type",
                                              "delta.text", NULL};

/* Note a native text_delta as anth_ev_block_delta does (its text kept,
 * content seen); 2 for any other delta (a prov_fast_fn). */
static int
anth_fast(struct stream_state *st, const struct json *j,
          struct upstream_error *e)
{
	if (!json_eq(j, json_picked(j, AF_DELTA_TYPE), "text_delta"))
		return 2;
	buf_reset(&st->partial);
	if (json_str_buf(j, json_picked(j, AF_TEXT), &st->partial) == -1)
		return prov_malformed(e, "text_delta without text");
	if (st->partial.len == 0)
		return 0;
	if (st->created == 0) /* as the chunk prov_chunk_str writes */
		st->created = (long long)time(NULL);
	st->content_seen = 1;
	if (st->text)
		buf_add(st->text, st->partial.data, st->partial.len);
	return 0;
}

/* A native event: text deltas picked, others parsed and noted. */
static int
anth_native_event(struct stream_state *st, const char *ev, size_t elen,
                  const char *data, size_t dlen, struct buf *out,
                  struct upstream_error *e)
{
	static struct json_sel sel;
	static int ready;

	if (!ready && json_sel_init(&sel, anth_fast_paths) == 0)
		ready = 1;
	return prov_native_fast(st, ev, elen, data, dlen, &sel,
	                        "content_block_delta", anth_fast, anth_note,
	                        out, e);
}

/* Translate one stream event, or pass it through (native). */
static int
anth_stream_event(const struct prov_call *pc, struct stream_state *st,
                  const char *ev, size_t elen, const char *data, size_t dlen,
                  struct buf *out, struct upstream_error *e)
{
	static struct json j;

	if (pc->native)
		return anth_native_event(st, ev, elen, data, dlen, out, e);
	if (prov_json_obj(&j, data, dlen, "stream event is not a JSON object",
	                  e) == -1)
		return -1;
	return anth_event(st, &j, ev, elen, out, e);
}

/* The body ended after message_delta without message_stop: close the
 * stream as message_stop would (a native stream gets the event itself). */
static void
anth_stream_end(const struct prov_call *pc, struct stream_state *st,
                struct buf *out)
{
	if (pc->native)
		buf_adds(out, "event: message_stop\ndata: "
		              "{\"type\":\"message_stop\"}\n\n");
	else
		(void)anth_ev_message_stop(st, out);
}

const struct provider prov_anthropic = {
    .name = "anthropic",
    .formats = PROV_FMT(FMT_CHAT) | PROV_FMT(FMT_MESSAGES),
    .counts = PROV_FMT(FMT_MESSAGES),
    .build = anth_build,
    .response = anth_response,
    .stream_event = anth_stream_event,
    .stream_end = anth_stream_end,
};
