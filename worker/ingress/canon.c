/* The canonical format as the ingress translators read and write it; see
 * canon.h. */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>

#include "worker/ingress.h"
#include "worker/ingress/canon.h"
#include "worker/provider.h"

/* Whether token t is absent or null. */
int
canon_absent(const struct json *j, int t)
{
	return t < 0 || json_is_null(j, t);
}

/* Whether token t is a string. */
int
canon_is_str(const struct json *j, int t)
{
	return json_type(j, t) == JSMN_STRING;
}

/* Whether token t is a non-empty string. */
int
canon_has_text(const struct json *j, int t)
{
	return canon_is_str(j, t) && j->tok[t].end > j->tok[t].start;
}

/* Whether token t is absent, null, or of type type. */
int
canon_opt(const struct json *j, int t, int type)
{
	return canon_absent(j, t) || json_type(j, t) == type;
}

/* Write member key: the C string s (NULL: null). */
void
canon_kstr(struct jw *jw, const char *key, const char *s)
{
	jw_key(jw, key);
	jw_cstr(jw, s);
}

/* Write member key: the integer v. */
void
canon_kint(struct jw *jw, const char *key, long long v)
{
	jw_key(jw, key);
	jw_int(jw, v);
}

/* Write member key: token t as it stands in j (null when absent). */
void
canon_kraw(struct jw *jw, const char *key, const struct json *j, int t)
{
	jw_key(jw, key);
	prov_raw(jw, j, t);
}

/* ---- requests ---- */

/* Record why the request is refused; -1. */
int
canon_fail(struct canon_rq *rq, const char *code, const char *fmt, ...)
{
	va_list ap;

	rq->code = code;
	va_start(ap, fmt);
	vsnprintf(rq->err, rq->errsz, fmt, ap);
	va_end(ap);
	return -1;
}

/* Check the JSON type of a field; see canon.h. */
int
canon_rq_want(struct canon_rq *rq, int t, const char *key, enum canon_want want)
{
	int type = want == CANON_LIST   ? JSMN_ARRAY
	           : want == CANON_DICT ? JSMN_OBJECT
	                                : JSMN_STRING;

	return canon_opt(rq->j, t, type) ? 0 : rq->bad(rq, key, want);
}

/* Copy a number field as name (validated). */
int
canon_rq_number(struct canon_rq *rq, struct jw *jw, const char *key,
                const char *name)
{
	int t = json_get(rq->j, 0, key);
	double v;

	if (canon_absent(rq->j, t))
		return 0;
	if (json_num(rq->j, t, &v) == -1)
		return rq->bad(rq, key, CANON_NUMBER);
	canon_kraw(jw, name, rq->j, t);
	return 0;
}

/* Write a token limit field as max_completion_tokens. */
int
canon_rq_max_tokens(struct canon_rq *rq, struct jw *jw, const char *key,
                    int required)
{
	int t = json_get(rq->j, 0, key);
	long long v;

	if (t < 0 && required)
		return rq->bad(rq, key, CANON_REQUIRED);
	if (!required && canon_absent(rq->j, t))
		return 0;
	if (json_int(rq->j, t, &v) == -1)
		return rq->bad(rq, key, CANON_INTEGER);
	if (v < 1)
		return rq->bad(rq, key, CANON_MIN1);
	canon_kint(jw, "max_completion_tokens", v);
	return 0;
}

/* Check stream; when true write it with stream_options.include_usage. */
int
canon_rq_stream(struct canon_rq *rq, struct jw *jw)
{
	int s = json_get(rq->j, 0, "stream");
	bool v;

	if (!canon_absent(rq->j, s) && json_bool(rq->j, s, &v) == -1)
		return rq->bad(rq, "stream", CANON_BOOL);
	if (json_is_true(rq->j, s)) {
		jw_key(jw, "stream");
		jw_bool(jw, true);
		jw_key(jw, "stream_options");
		PROV_RAW(jw, "{\"include_usage\":true}");
	}
	return 0;
}

/* Copy llmfd's own fields unchanged. */
void
canon_rq_own(const struct json *j, struct jw *jw)
{
	static const char *const keys[] = {INGRESS_LLMFD_KEYS, "metadata"};
	int t;

	for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
		if ((t = json_get(j, 0, keys[i])) >= 0)
			canon_kraw(jw, keys[i], j, t);
}

/* Copy a string token as member name. */
void
canon_rq_str(struct jw *jw, const struct json *j, int t, const char *name)
{
	if (canon_is_str(j, t))
		canon_kraw(jw, name, j, t);
}

/* Write "type":type,type: (and open that member's object when nested). */
static void
canon_typed(struct jw *jw, const char *type, int nested)
{
	canon_kstr(jw, "type", type);
	jw_key(jw, type);
	if (nested)
		jw_obj(jw);
}

/* Open {"type":type,type: (and its object when nested). */
void
canon_open_typed(struct jw *jw, const char *type, int nested)
{
	jw_obj(jw);
	canon_typed(jw, type, nested);
}

/* Write a text part from string token t. */
void
canon_text_part(struct jw *jw, const struct json *j, int t)
{
	canon_open_typed(jw, "text", 0);
	prov_raw(jw, j, t);
	jw_obj_end(jw);
}

/* Open a message of role up to its content value. */
void
canon_open_msg(struct jw *jw, const char *role)
{
	jw_obj(jw);
	canon_kstr(jw, "role", role);
	jw_key(jw, "content");
}

/* Open a tool message for call id up to its content value. */
void
canon_open_tool_msg(struct jw *jw, const struct json *j, int id)
{
	jw_obj(jw);
	canon_kstr(jw, "role", "tool");
	canon_kraw(jw, "tool_call_id", j, id);
	jw_key(jw, "content");
}

/* Write an assistant message; see canon.h. */
void
canon_assistant(struct jw *jw, const struct buf *content,
                const struct buf *refusal, const struct buf *calls)
{
	canon_open_msg(jw, "assistant");
	if (content)
		jw_str(jw, content->data ? content->data : "", content->len);
	else
		jw_null(jw);
	if (refusal && refusal->len) {
		jw_key(jw, "refusal");
		jw_str(jw, refusal->data, refusal->len);
	}
	if (calls && calls->len) {
		jw_key(jw, "tool_calls");
		jw_raw(jw, calls->data, calls->len);
	}
	jw_obj_end(jw);
}

/* Open a function tool up to its name. */
void
canon_open_function(struct jw *jw, const struct json *j, int name)
{
	canon_open_typed(jw, "function", 1);
	canon_kraw(jw, "name", j, name);
}

/* Write a tool call; see canon.h. */
void
canon_tool_call(struct jw *jw, const struct json *j, int id, int name, int args)
{
	jw_obj(jw);
	canon_kraw(jw, "id", j, id);
	canon_typed(jw, "function", 1);
	canon_kraw(jw, "name", j, name);
	jw_key(jw, "arguments");
	if (canon_is_str(j, args))
		prov_raw(jw, j, args);
	else
		jw_cstr(jw, "{}");
	jw_obj_end(jw);
	jw_obj_end(jw);
}

/* Open a json_schema response_format up to the schema's name. */
void
canon_open_schema(struct jw *jw)
{
	jw_key(jw, "response_format");
	canon_open_typed(jw, "json_schema", 1);
	jw_key(jw, "name");
}

/* ---- replies and chunks ---- */

/* Read a usage object; see canon.h. */
void
canon_usage_read(const struct json *j, int u, struct canon_usage *o,
                 long long min)
{
	static const char *const paths[] = {
	    "prompt_tokens", "completion_tokens",
	    "prompt_tokens_details.cached_tokens",
	    "completion_tokens_details.reasoning_tokens"};
	long long *dst[] = {&o->prompt, &o->completion, &o->cached,
	                    &o->reasoning};
	long long v;

	if (json_type(j, u) != JSMN_OBJECT)
		return;
	o->have = 1;
	for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
		if (json_int(j, json_path(j, u, paths[i]), &v) == 0 && v >= min)
			*dst[i] = v;
	if (json_int(j, json_get(j, u, "total_tokens"), &v) == 0 && v >= min)
		o->total = v;
	else
		o->total = o->prompt + o->completion;
}

/* Name the members of a message or delta. */
void
canon_msg_read(const struct json *j, int m, struct canon_msg *o)
{
	o->content = json_get(j, m, "content");
	o->refusal = json_get(j, m, "refusal");
	o->tool_calls = json_get(j, m, "tool_calls");
	o->reasoning = json_get(j, m, "reasoning_content");
	o->reasoning_alias = json_get(j, m, "reasoning");
}

/* Name the members of a tool call entry. */
void
canon_call_read(const struct json *j, int tc, struct canon_call *o)
{
	if (json_int(j, json_get(j, tc, "index"), &o->index) == -1 ||
	    o->index < 0)
		o->index = -1;
	o->id = json_get(j, tc, "id");
	o->name = json_path(j, tc, "function.name");
	o->args = json_path(j, tc, "function.arguments");
}

/* Parse and name a chat.completion; see canon.h. */
int
canon_reply_read(struct json *j, const char *s, size_t n, struct canon_reply *r)
{
	int ch, m;

	if (json_parse(j, s, n) == -1 || json_type(j, 0) != JSMN_OBJECT ||
	    json_type(j, ch = json_path(j, 0, "choices.0")) != JSMN_OBJECT ||
	    json_type(j, m = json_get(j, ch, "message")) != JSMN_OBJECT)
		return -1;
	r->id = json_get(j, 0, "id");
	r->model = json_get(j, 0, "model");
	r->created = json_get(j, 0, "created");
	r->usage = json_get(j, 0, "usage");
	r->choices = json_get(j, 0, "choices");
	r->finish = json_get(j, ch, "finish_reason");
	canon_msg_read(j, m, &r->msg);
	return 0;
}

/* Parse and name a chat.completion.chunk; see canon.h. */
int
canon_chunk_read(struct json *j, const char *s, size_t n, struct canon_chunk *c)
{
	if (json_parse(j, s, n) == -1 || json_type(j, 0) != JSMN_OBJECT ||
	    !canon_absent(j, json_get(j, 0, "error")))
		return -1;
	c->id = json_get(j, 0, "id");
	c->model = json_get(j, 0, "model");
	c->choices = json_get(j, 0, "choices");
	c->usage = json_get(j, 0, "usage");
	return json_type(j, c->choices) == JSMN_ARRAY ||
	               json_type(j, c->usage) == JSMN_OBJECT
	           ? 0
	           : -1;
}

/* The next choice of index 0; see canon.h. */
int
canon_choice_next(const struct json *j, int choices, int *i)
{
	int n = json_size(j, choices), c;
	long long idx;

	while (*i < n) {
		c = json_at(j, choices, (*i)++);
		if (json_type(j, c) == JSMN_OBJECT &&
		    (json_int(j, json_get(j, c, "index"), &idx) == -1 ||
		     idx == 0))
			return c;
	}
	return -1;
}

/* ---- client events ---- */

/* Start an event: "event: NAME\ndata: " and a writer for its JSON. */
void
canon_ev_open(struct buf *out, struct jw *jw, const char *name)
{
	buf_printf(out, "event: %s\ndata: ", name);
	jw_init(jw, out);
	jw_obj(jw);
	canon_kstr(jw, "type", name);
}

/* Finish an event begun by canon_ev_open. */
void
canon_ev_close(struct jw *jw)
{
	jw_obj_end(jw);
	buf_adds(jw->b, "\n\n");
}
