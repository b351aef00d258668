/* OpenAI Responses API served by llmfd (INGRESS.md section 2). Requests
 * become canonical Chat Completions bodies (what every provider adapter
 * reads); canonical replies and chunks become Response objects and the
 * Responses event stream of section 2.5.
 *
 * llmfd's choices (INGRESS.md section 2 gives the wire formats):
 * - no server state: previous_response_id, conversation and item_reference
 *   are refused (400, previous_response_not_found / unsupported_value),
 *   as are background runs and stored prompts (prompt);
 * - only function tools can cross providers: built-in tools (web_search,
 *   file_search, local_shell, custom, mcp, ...) are refused, not dropped,
 *   so a client never silently loses a capability it asked for;
 *   allowed_tools becomes a filtered tools list plus its mode;
 *   tool_choice and parallel_tool_calls are sent only with tools;
 * - reasoning items in the input are dropped (their encrypted content only
 *   means something to the family that issued it);
 * - file_id (OpenAI file storage) and file_url (llmfd never fetches) are
 *   refused; send image_url or file_data inline;
 * - max_output_tokens becomes max_completion_tokens (every adapter reads
 *   it first); safety_identifier (else user) becomes user; store, include,
 *   truncation, top_logprobs, max_tool_calls, reasoning.summary and
 *   stream_options are not forwarded;
 * - function_call_output parts: text parts joined with "\n"; image and
 *   file parts are refused (a Chat tool message holds text only). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "worker/ingress/canon.h"
#include "worker/ingress/responses.h"
#include "worker/provider.h"

enum { RESP_FIN_NONE = 0, RESP_FIN_STOP, RESP_FIN_LENGTH, RESP_FIN_FILTER };
enum {
	RESP_ITEM_NONE = 0,
	RESP_ITEM_MESSAGE,
	RESP_ITEM_FUNCTION,
	RESP_ITEM_REASONING
};
enum { RESP_PART_NONE = 0, RESP_PART_TEXT, RESP_PART_REFUSAL };

#define RESP_MAX_TOOLS 256 /* canonical tool-call indexes a stream may use */

/* Request translation state. */
struct resp_rq {
	struct canon_rq rq;
	struct jw mjw;   /* writer of the messages array */
	int nmsg;        /* non-system messages written */
	int asst;        /* an assistant message is pending */
	int has_content; /* ... with text */
	struct buf content;
	struct buf refusal;
	struct buf calls; /* "[call,call" of the pending message */
};

/* Refuse field key as having the wrong type or value; -1. */
static int
resp_rq_bad(struct canon_rq *rq, const char *key, enum canon_want want)
{
	static const char *const what[] = {
	    [CANON_REQUIRED] = "given",
	    [CANON_NUMBER] = "a number",
	    [CANON_INTEGER] = "a positive integer",
	    [CANON_MIN1] = "a positive integer",
	    [CANON_BOOL] = "a boolean",
	    [CANON_STRING] = "a string",
	    [CANON_LIST] = "an array",
	    [CANON_DICT] = "an object",
	};

	return canon_fail(rq,
	                  want == CANON_INTEGER || want == CANON_MIN1
	                      ? "invalid_value"
	                      : "invalid_type",
	                  "'%s' must be %s", key, what[want]);
}

/* Refuse the type or role name in token t: "what 't' is not supported"
 * and then rest; -1. */
static int
resp_unsupported(struct resp_rq *x, const char *code, const char *what, int t,
                 const char *rest)
{
	char s[64];

	if (json_str(x->rq.j, t, s, sizeof s) < 0)
		snprintf(s, sizeof s, "?");
	return canon_fail(&x->rq, code, "%s '%s' is not supported%s", what, s,
	                  rest);
}

/* Refuse server-side state and the modes llmfd cannot serve. */
static int
resp_rq_check(struct resp_rq *x)
{
	const struct json *j = x->rq.j;
	static const char *const state[] = {"previous_response_id",
	                                    "conversation"};

	for (size_t i = 0; i < sizeof state / sizeof state[0]; i++)
		if (!canon_absent(j, json_get(j, 0, state[i])))
			return canon_fail(
			    &x->rq, "previous_response_not_found",
			    "'%s' is not supported: llmfd is stateless and "
			    "stores no responses; send the whole conversation "
			    "in 'input' (store: false)",
			    state[i]);
	if (json_is_true(j, json_get(j, 0, "background")))
		return canon_fail(&x->rq, "unsupported_value",
		                  "'background' is not supported: llmfd is "
		                  "stateless and answers in the request");
	if (!canon_absent(j, json_get(j, 0, "prompt")))
		return canon_fail(&x->rq, "unsupported_parameter",
		                  "'prompt' (a stored prompt template) is not "
		                  "supported; send 'instructions' and 'input'");
	if (json_type(j, json_get(j, 0, "model")) != JSMN_STRING)
		return canon_fail(&x->rq, "missing_required_parameter",
		                  "'model' is required and must be a string");
	return 0;
}

/* Open the pending assistant message (idempotent). */
static void
resp_asst_open(struct resp_rq *x)
{
	if (x->asst)
		return;
	x->asst = 1;
	x->has_content = 0;
	buf_reset(&x->content);
	buf_reset(&x->refusal);
	buf_reset(&x->calls);
}

/* Write the pending assistant message, if any. */
static void
resp_asst_flush(struct resp_rq *x)
{
	if (!x->asst)
		return;
	x->asst = 0;
	x->nmsg++;
	if (x->calls.len)
		buf_addc(&x->calls, ']');
	canon_assistant(&x->mjw, x->has_content ? &x->content : NULL,
	                &x->refusal, &x->calls);
}

/* Append the text of assistant part p to the pending message. */
static int
resp_asst_part(struct resp_rq *x, int p)
{
	const struct json *j = x->rq.j;
	int t = json_get(j, p, "type");

	if (json_eq(j, t, "output_text") || json_eq(j, t, "input_text")) {
		if (json_str_buf(j, json_get(j, p, "text"), &x->content) < 0)
			return canon_fail(
			    &x->rq, "invalid_type",
			    "an assistant text part needs a string "
			    "'text'");
		x->has_content = 1;
		return 0;
	}
	if (json_eq(j, t, "refusal")) {
		if (json_str_buf(j, json_get(j, p, "refusal"), &x->refusal) < 0)
			return canon_fail(&x->rq, "invalid_type",
			                  "a refusal part needs a string "
			                  "'refusal'");
		return 0;
	}
	return resp_unsupported(x, "unsupported_value",
	                        "assistant content part type", t,
	                        " (output_text and refusal are)");
}

/* An assistant message item: its text joins the pending message. */
static int
resp_rq_assistant(struct resp_rq *x, int c)
{
	const struct json *j = x->rq.j;
	int n;

	resp_asst_flush(x);
	resp_asst_open(x);
	if (json_type(j, c) == JSMN_STRING) {
		json_str_buf(j, c, &x->content);
		x->has_content = 1;
		return 0;
	}
	n = json_size(j, c);
	for (int i = 0; i < n; i++)
		if (resp_asst_part(x, json_at(j, c, i)) == -1)
			return -1;
	return 0;
}

/* Write a text part {type:"text",text} from part p's key. */
static int
resp_text_part(struct resp_rq *x, int p, const char *key)
{
	const struct json *j = x->rq.j;
	int t = json_get(j, p, key);

	if (json_type(j, t) != JSMN_STRING)
		return canon_fail(&x->rq, "invalid_type",
		                  "a text content part needs a string '%s'",
		                  key);
	canon_text_part(&x->mjw, j, t);
	return 0;
}

/* The string token key of part p (inline data), or -1 with a reason:
 * alt_why when p names alt (a source llmfd cannot read) instead, else
 * code and why. */
static int
resp_inline(struct resp_rq *x, int p, const char *key, const char *alt,
            const char *alt_why, const char *code, const char *why)
{
	const struct json *j = x->rq.j;
	int t = json_get(j, p, key);

	if (canon_is_str(j, t))
		return t;
	if (!canon_absent(j, json_get(j, p, alt)))
		return canon_fail(&x->rq, "unsupported_value", "%s", alt_why);
	return canon_fail(&x->rq, code, "%s", why);
}

/* Write an input_image part as an image_url part. */
static int
resp_image_part(struct resp_rq *x, int p)
{
	const struct json *j = x->rq.j;
	int d = json_get(j, p, "detail"), u;
	struct jw *jw = &x->mjw;

	u = resp_inline(x, p, "image_url", "file_id",
	                "input_image 'file_id' is not supported (OpenAI file "
	                "storage); send the image as 'image_url' (a data: "
	                "URL or https)",
	                "missing_required_parameter",
	                "input_image needs 'image_url'");
	if (u < 0)
		return -1;
	canon_open_typed(jw, "image_url", 1);
	canon_kraw(jw, "url", j, u);
	if (json_eq(j, d, "auto") || json_eq(j, d, "low") ||
	    json_eq(j, d, "high")) {
		canon_kraw(jw, "detail", j, d);
	}
	jw_obj_end(jw);
	jw_obj_end(jw);
	return 0;
}

/* Write an input_file part as a Chat file part (inline data only). */
static int
resp_file_part(struct resp_rq *x, int p)
{
	struct jw *jw = &x->mjw;
	int fd;

	fd = resp_inline(x, p, "file_data", "file_url",
	                 "input_file 'file_url' is not supported (llmfd does "
	                 "not fetch URLs); send 'file_data'",
	                 "unsupported_value",
	                 "input_file needs 'file_data' ('file_id' refers to "
	                 "OpenAI file storage, which llmfd cannot read)");
	if (fd < 0)
		return -1;
	canon_open_typed(jw, "file", 1);
	canon_rq_str(jw, x->rq.j, json_get(x->rq.j, p, "filename"), "filename");
	canon_kraw(jw, "file_data", x->rq.j, fd);
	jw_obj_end(jw);
	jw_obj_end(jw);
	return 0;
}

/* Write one user (or, text only, system) content part. */
static int
resp_part(struct resp_rq *x, int p, int text_only)
{
	const struct json *j = x->rq.j;
	int t = json_get(j, p, "type");

	if (json_type(j, p) != JSMN_OBJECT)
		return canon_fail(&x->rq, "invalid_type",
		                  "each content part must be an object");
	if (json_eq(j, t, "input_text") || json_eq(j, t, "output_text"))
		return resp_text_part(x, p, "text");
	if (json_eq(j, t, "refusal"))
		return resp_text_part(x, p, "refusal");
	if (!text_only && json_eq(j, t, "input_image"))
		return resp_image_part(x, p);
	if (!text_only && json_eq(j, t, "input_file"))
		return resp_file_part(x, p);
	return resp_unsupported(x, "unsupported_value", "content part type", t,
	                        " here");
}

/* A user, system or developer message item. */
static int
resp_rq_message(struct resp_rq *x, const char *role, int c)
{
	const struct json *j = x->rq.j;
	struct jw *jw = &x->mjw;
	int n, sys = strcmp(role, "user") != 0;

	resp_asst_flush(x);
	x->nmsg += !sys;
	canon_open_msg(jw, role);
	if (json_type(j, c) == JSMN_STRING) {
		prov_raw(jw, j, c);
	} else {
		jw_arr(jw);
		n = json_size(j, c);
		for (int i = 0; i < n; i++)
			if (resp_part(x, json_at(j, c, i), sys) == -1)
				return -1;
		jw_arr_end(jw);
	}
	jw_obj_end(jw);
	return 0;
}

/* A message item (type "message", or no type but a role). */
static int
resp_rq_item_message(struct resp_rq *x, int it)
{
	const struct json *j = x->rq.j;
	int r = json_get(j, it, "role"), c = json_get(j, it, "content");
	static const char *const roles[] = {"user", "system", "developer"};

	if (json_type(j, c) != JSMN_STRING && json_type(j, c) != JSMN_ARRAY)
		return canon_fail(&x->rq, "invalid_type",
		                  "message 'content' must be a string or an "
		                  "array of content parts");
	if (json_eq(j, r, "assistant"))
		return resp_rq_assistant(x, c);
	for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++)
		if (json_eq(j, r, roles[i]))
			return resp_rq_message(x, roles[i], c);
	return resp_unsupported(x, "invalid_value", "message role", r,
	                        " (user, assistant, system, developer)");
}

/* A function_call item: a tool call of the pending assistant message. */
static int
resp_rq_call(struct resp_rq *x, int it)
{
	const struct json *j = x->rq.j;
	int id = json_get(j, it, "call_id"), name = json_get(j, it, "name");
	int args = json_get(j, it, "arguments");
	struct jw cw;

	if (json_type(j, id) != JSMN_STRING ||
	    json_type(j, name) != JSMN_STRING)
		return canon_fail(&x->rq, "missing_required_parameter",
		                  "a function_call item needs string 'call_id' "
		                  "and 'name'");
	resp_asst_open(x);
	buf_addc(&x->calls, x->calls.len ? ',' : '[');
	jw_init(&cw, &x->calls);
	canon_tool_call(&cw, j, id, name, args);
	return 0;
}

/* The text of function_call_output parts, joined with "\n", into t. */
static int
resp_output_parts(struct resp_rq *x, int o, struct buf *t)
{
	const struct json *j = x->rq.j;
	int n = json_size(j, o), p, ty;

	for (int i = 0; i < n; i++) {
		p = json_at(j, o, i);
		ty = json_get(j, p, "type");
		if (!json_eq(j, ty, "input_text") &&
		    !json_eq(j, ty, "output_text"))
			return resp_unsupported(
			    x, "unsupported_value",
			    "function_call_output part type", ty,
			    " (text only)");
		if (i)
			buf_addc(t, '\n');
		if (json_str_buf(j, json_get(j, p, "text"), t) < 0)
			return canon_fail(&x->rq, "invalid_type",
			                  "a text part needs a string 'text'");
	}
	return 0;
}

/* A function_call_output item: a tool message. */
static int
resp_rq_output(struct resp_rq *x, int it)
{
	const struct json *j = x->rq.j;
	int id = json_get(j, it, "call_id"), o = json_get(j, it, "output");
	struct jw *jw = &x->mjw;
	struct buf t = {0};
	int rc = 0;

	if (json_type(j, id) != JSMN_STRING)
		return canon_fail(&x->rq, "missing_required_parameter",
		                  "a function_call_output item needs a string "
		                  "'call_id'");
	if (json_type(j, o) == JSMN_ARRAY)
		rc = resp_output_parts(x, o, &t);
	else if (json_type(j, o) != JSMN_STRING)
		rc = canon_fail(&x->rq, "invalid_type",
		                "function_call_output 'output' must be a "
		                "string or an array of parts");
	if (rc == 0) {
		resp_asst_flush(x);
		x->nmsg++;
		canon_open_tool_msg(jw, j, id);
		if (json_type(j, o) == JSMN_STRING)
			prov_raw(jw, j, o);
		else
			jw_str(jw, t.data ? t.data : "", t.len);
		jw_obj_end(jw);
	}
	buf_free(&t);
	return rc;
}

/* Translate one input item. */
static int
resp_rq_item(struct resp_rq *x, int it)
{
	const struct json *j = x->rq.j;
	int t = json_get(j, it, "type");

	if (json_type(j, it) != JSMN_OBJECT)
		return canon_fail(&x->rq, "invalid_type",
		                  "each 'input' item must be an object");
	if (json_eq(j, t, "message") ||
	    (canon_absent(j, t) && json_get(j, it, "role") >= 0))
		return resp_rq_item_message(x, it);
	if (json_eq(j, t, "function_call"))
		return resp_rq_call(x, it);
	if (json_eq(j, t, "function_call_output"))
		return resp_rq_output(x, it);
	if (json_eq(j, t, "reasoning"))
		return 0;
	if (json_eq(j, t, "item_reference") || canon_absent(j, t))
		return canon_fail(&x->rq, "unsupported_value",
		                  "item references are not supported: llmfd is "
		                  "stateless; send the items themselves");
	return resp_unsupported(x, "unsupported_value", "input item type", t,
	                        " (llmfd carries messages, function_call and "
	                        "function_call_output items across providers)");
}

/* Write the messages array: instructions, then the input items. */
static int
resp_rq_messages(struct resp_rq *x, struct buf *b)
{
	const struct json *j = x->rq.j;
	int ins = json_get(j, 0, "instructions"), in = json_get(j, 0, "input");
	int n;

	if (canon_rq_want(&x->rq, ins, "instructions", CANON_STRING) == -1)
		return -1;
	jw_init(&x->mjw, b);
	jw_arr(&x->mjw);
	if (canon_has_text(j, ins)) {
		canon_open_msg(&x->mjw, "system");
		prov_raw(&x->mjw, j, ins);
		jw_obj_end(&x->mjw);
	}
	if (json_type(j, in) == JSMN_STRING) {
		if (resp_rq_message(x, "user", in) == -1)
			return -1;
	} else if (json_type(j, in) == JSMN_ARRAY) {
		n = json_size(j, in);
		for (int i = 0; i < n; i++)
			if (resp_rq_item(x, json_at(j, in, i)) == -1)
				return -1;
	} else
		return canon_fail(
		    &x->rq, "missing_required_parameter",
		    "'input' is required: a string or an array of "
		    "items");
	resp_asst_flush(x);
	jw_arr_end(&x->mjw);
	if (x->nmsg == 0)
		return canon_fail(&x->rq, "invalid_value",
		                  "'input' holds no message to answer");
	return 0;
}

/* Whether function name token nm is allowed by an allowed_tools list. */
static int
resp_allowed(const struct json *j, int allowed, int nm)
{
	int n = json_size(j, allowed), e;
	size_t al, bl;
	const char *a, *b;

	if (allowed < 0)
		return 1;
	b = json_raw(j, nm, &bl);
	for (int i = 0; i < n; i++) {
		e = json_at(j, allowed, i);
		if (!json_eq(j, json_get(j, e, "type"), "function"))
			continue;
		a = json_raw(j, json_get(j, e, "name"), &al);
		if (a && al == bl && memcmp(a, b, al) == 0)
			return 1;
	}
	return 0;
}

/* Write one flat function tool nested the Chat way. */
static void
resp_tool(struct jw *jw, const struct json *j, int t)
{
	static const char *const keys[] = {"description", "parameters",
	                                   "strict"};
	int v;

	canon_open_function(jw, j, json_get(j, t, "name"));
	for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
		v = json_get(j, t, keys[i]);
		if (canon_absent(j, v))
			continue;
		canon_kraw(jw, keys[i], j, v);
	}
	jw_obj_end(jw);
	jw_obj_end(jw);
}

/* Write tools (filtered by allowed_tools' list when given) into b as a
 * JSON array; *count gets how many. */
static int
resp_rq_tools(struct resp_rq *x, int allowed, struct buf *b, int *count)
{
	const struct json *j = x->rq.j;
	int tools = json_get(j, 0, "tools"), n, t, ty;
	struct jw jw;

	*count = 0;
	if (canon_rq_want(&x->rq, tools, "tools", CANON_LIST) == -1)
		return -1;
	if (canon_absent(j, tools))
		return 0;
	jw_init(&jw, b);
	jw_arr(&jw);
	n = json_size(j, tools);
	for (int i = 0; i < n; i++) {
		t = json_at(j, tools, i);
		ty = json_get(j, t, "type");
		if (!json_eq(j, ty, "function"))
			return resp_unsupported(
			    x, "unsupported_value", "tool type", ty,
			    ": llmfd serves every provider through Chat "
			    "Completions, which carries function tools only");
		if (json_type(j, json_get(j, t, "name")) != JSMN_STRING)
			return canon_fail(
			    &x->rq, "missing_required_parameter",
			    "a function tool needs a string 'name'");
		if (!resp_allowed(j, allowed, json_get(j, t, "name")))
			continue;
		resp_tool(&jw, j, t);
		(*count)++;
	}
	jw_arr_end(&jw);
	return 0;
}

/* Write tool_choice (tc: the request's token, not allowed_tools). */
static int
resp_rq_tool_choice(struct resp_rq *x, struct jw *jw, int tc)
{
	const struct json *j = x->rq.j;
	int ty = json_get(j, tc, "type"), nm = json_get(j, tc, "name");

	if (json_eq(j, tc, "none") || json_eq(j, tc, "auto") ||
	    json_eq(j, tc, "required")) {
		canon_kraw(jw, "tool_choice", j, tc);
		return 0;
	}
	if (json_eq(j, ty, "function") && json_type(j, nm) == JSMN_STRING) {
		jw_key(jw, "tool_choice");
		canon_open_function(jw, j, nm);
		jw_obj_end(jw);
		jw_obj_end(jw);
		return 0;
	}
	if (json_type(j, tc) == JSMN_STRING)
		return canon_fail(
		    &x->rq, "invalid_value",
		    "'tool_choice' must be none, auto or required");
	return resp_unsupported(x, "unsupported_value", "tool_choice type", ty,
	                        " (function and allowed_tools are)");
}

/* Write tools, tool_choice and parallel_tool_calls (only with tools). */
static int
resp_rq_tooling(struct resp_rq *x, struct jw *jw)
{
	const struct json *j = x->rq.j;
	int tc = json_get(j, 0, "tool_choice"), allowed = -1, mode = -1, n;
	int par = json_get(j, 0, "parallel_tool_calls"), rc = -1;
	struct buf tools = {0};

	if (json_eq(j, json_get(j, tc, "type"), "allowed_tools")) {
		allowed = json_get(j, tc, "tools");
		mode = json_get(j, tc, "mode");
		if (json_type(j, allowed) != JSMN_ARRAY ||
		    !(json_eq(j, mode, "auto") || json_eq(j, mode, "required")))
			return canon_fail(&x->rq, "invalid_value",
			                  "allowed_tools needs 'mode' (auto or "
			                  "required) and a 'tools' array");
	}
	if (resp_rq_tools(x, allowed, &tools, &n) == -1)
		goto out;
	rc = 0;
	if (n == 0)
		goto out;
	jw_key(jw, "tools");
	jw_raw(jw, tools.data, tools.len);
	if (mode >= 0) {
		canon_kraw(jw, "tool_choice", j, mode);
	} else if (!canon_absent(j, tc))
		rc = resp_rq_tool_choice(x, jw, tc);
	if (json_type(j, par) == JSMN_PRIMITIVE && !json_is_null(j, par)) {
		jw_key(jw, "parallel_tool_calls");
		jw_bool(jw, json_is_true(j, par));
	}
out:
	buf_free(&tools);
	return rc;
}

/* Write text.format as response_format and text.verbosity. */
static int
resp_rq_text(struct resp_rq *x, struct jw *jw)
{
	const struct json *j = x->rq.j;
	int f = json_path(j, 0, "text.format"), ty = json_get(j, f, "type");
	int v = json_path(j, 0, "text.verbosity"), k;
	static const char *const keys[] = {"description", "schema", "strict"};

	if (json_eq(j, ty, "json_object")) {
		jw_key(jw, "response_format");
		jw_raw(jw, "{\"type\":\"json_object\"}", 22);
	} else if (json_eq(j, ty, "json_schema")) {
		canon_open_schema(jw);
		if (json_type(j, k = json_get(j, f, "name")) == JSMN_STRING)
			prov_raw(jw, j, k);
		else
			jw_cstr(jw, "response");
		for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
			if (canon_absent(j, k = json_get(j, f, keys[i])))
				continue;
			canon_kraw(jw, keys[i], j, k);
		}
		jw_obj_end(jw);
		jw_obj_end(jw);
	} else if (!canon_absent(j, f) && !json_eq(j, ty, "text"))
		return canon_fail(&x->rq, "invalid_value",
		                  "text.format type must be text, json_object "
		                  "or json_schema");
	if (json_type(j, v) == JSMN_STRING) {
		canon_kraw(jw, "verbosity", j, v);
	}
	return 0;
}

/* Write service_tier when Chat Completions knows the value. */
static void
resp_rq_tier(struct resp_rq *x, struct jw *jw)
{
	static const char *const tiers[] = {"auto",  "default",  "flex",
	                                    "scale", "priority", "fast"};
	int t = json_get(x->rq.j, 0, "service_tier");

	for (size_t i = 0; i < sizeof tiers / sizeof tiers[0]; i++)
		if (json_eq(x->rq.j, t, tiers[i])) {
			canon_rq_str(jw, x->rq.j, t, "service_tier");
			return;
		}
}

/* Write sampling, limits, reasoning, identity and service options. */
static int
resp_rq_options(struct resp_rq *x, struct jw *jw)
{
	const struct json *j = x->rq.j;
	int sid = json_get(j, 0, "safety_identifier");

	if (resp_rq_text(x, jw) == -1 ||
	    canon_rq_max_tokens(&x->rq, jw, "max_output_tokens", 0) == -1 ||
	    canon_rq_number(&x->rq, jw, "temperature", "temperature") == -1 ||
	    canon_rq_number(&x->rq, jw, "top_p", "top_p") == -1)
		return -1;
	canon_rq_str(jw, j, json_path(j, 0, "reasoning.effort"),
	             "reasoning_effort");
	canon_rq_str(jw, j, canon_is_str(j, sid) ? sid : json_get(j, 0, "user"),
	             "user");
	canon_rq_str(jw, j, json_get(j, 0, "prompt_cache_key"),
	             "prompt_cache_key");
	resp_rq_tier(x, jw);
	return 0;
}

/* Write the canonical body; -1 with the reason set. */
static int
resp_rq_body(struct resp_rq *x, struct buf *out)
{
	struct buf msgs = {0};
	struct jw jw;
	int rc = -1;

	if (resp_rq_messages(x, &msgs) == -1)
		goto out;
	jw_init(&jw, out);
	jw_obj(&jw);
	canon_kraw(&jw, "model", x->rq.j, json_get(x->rq.j, 0, "model"));
	jw_key(&jw, "messages");
	jw_raw(&jw, msgs.data, msgs.len);
	if (resp_rq_tooling(x, &jw) == -1 || resp_rq_options(x, &jw) == -1 ||
	    canon_rq_stream(&x->rq, &jw) == -1)
		goto out;
	canon_rq_own(x->rq.j, &jw);
	jw_obj_end(&jw);
	rc = 0;
out:
	buf_free(&msgs);
	return rc;
}

/* Responses request -> canonical Chat Completions body; see the header. */
int
resp_to_chat(const struct json *j, struct buf *out, int *status,
             const char **code, char *err, size_t errsz)
{
	struct resp_rq x = {
	    .rq = {.j = j, .err = err, .errsz = errsz, .bad = resp_rq_bad}};
	size_t mark = out->len;
	int rc;

	*status = 0;
	if (errsz)
		err[0] = '\0';
	if (json_type(j, 0) != JSMN_OBJECT)
		rc = canon_fail(&x.rq, "invalid_type",
		                "the request body must be a JSON object");
	else
		rc = resp_rq_check(&x) == -1 ? -1 : resp_rq_body(&x, out);
	buf_free(&x.content);
	buf_free(&x.refusal);
	buf_free(&x.calls);
	if (rc == -1)
		*status = 400;
	else if (out->oom) {
		rc = canon_fail(&x.rq, "server_error", "out of memory");
		*status = 500;
	}
	if (rc == -1)
		out->len = mark;
	*code = x.rq.code;
	return rc;
}

/* ---- Response objects ---- */

/* What one Response object says besides the request's echo. */
struct resp_obj {
	const char *id;
	long long created_at;
	const char *status;
	const char *incomplete; /* incomplete_details.reason, or NULL */
	const char *err_code;   /* error {code, message}, or NULL */
	const char *err_msg;
	const char *model;
	size_t model_len;
	const struct buf *echo; /* JSON object of echoed request fields */
	const char *output;     /* JSON array */
	size_t output_len;
	const struct canon_usage *usage; /* omitted unless have */
};

/* Fill base with fresh random hex for a response's ids. */
static void
resp_new_base(char *base, size_t n)
{
	unsigned char r[12];
	size_t k = 0;

	arc4random_buf(r, sizeof r);
	for (size_t i = 0; i < sizeof r && k + 2 < n; i++, k += 2)
		snprintf(base + k, n - k, "%02x", r[i]);
}

/* An item id: prefix, the response's random base, the item's index. */
static void
resp_item_id(char *out, size_t n, const char *prefix, const char *base, int idx)
{
	snprintf(out, n, "%s_%s%04x", prefix, base, (unsigned)idx & 0xffff);
}

/* Write "usage" as a Response reports it. */
static void
resp_usage_write(struct jw *jw, const struct canon_usage *u)
{
	jw_key(jw, "usage");
	jw_obj(jw);
	canon_kint(jw, "input_tokens", u->prompt);
	jw_key(jw, "input_tokens_details");
	jw_obj(jw);
	canon_kint(jw, "cached_tokens", u->cached);
	canon_kint(jw, "cache_write_tokens", 0);
	jw_obj_end(jw);
	canon_kint(jw, "output_tokens", u->completion);
	jw_key(jw, "output_tokens_details");
	jw_obj(jw);
	canon_kint(jw, "reasoning_tokens", u->reasoning);
	jw_obj_end(jw);
	canon_kint(jw, "total_tokens", u->total);
	jw_obj_end(jw);
}

/* Copy value token t of j without the whitespace between its tokens, so
 * that it can sit on one SSE data line. */
static void
resp_compact(struct jw *jw, const struct json *j, int t)
{
	struct buf b = {0};
	size_t rl = 0;
	const char *raw = json_raw(j, t, &rl);
	int in = 0;

	for (size_t i = 0; raw && i < rl; i++) {
		char c = raw[i];

		if (in && c == '\\' && i + 1 < rl) {
			buf_add(&b, raw + i++, 2);
			continue;
		}
		if (c == '"')
			in = !in;
		else if (!in &&
		         (c == ' ' || c == '\t' || c == '\n' || c == '\r'))
			continue;
		buf_addc(&b, c);
	}
	jw_raw(jw, b.data ? b.data : "null", b.data ? b.len : 4);
	buf_free(&b);
}

/* Write key: the request's value of key, or the default literal dflt. */
static void
resp_echo_or(struct jw *jw, const struct json *req, const char *key, int type,
             const char *dflt)
{
	int t = json_get(req, 0, key);

	jw_key(jw, key);
	if (t >= 0 && (type < 0 || json_type(req, t) == type) &&
	    !json_is_null(req, t))
		resp_compact(jw, req, t);
	else
		jw_raw(jw, dflt, strlen(dflt));
}

/* Write the request's tools, function tools in their full shape. */
static void
resp_echo_tools(struct jw *jw, const struct json *req)
{
	int tools = json_get(req, 0, "tools"), n = 0, t, v;
	static const char *const keys[] = {"description", "parameters",
	                                   "strict"};

	if (json_type(req, tools) == JSMN_ARRAY)
		n = json_size(req, tools);
	jw_key(jw, "tools");
	jw_arr(jw);
	for (int i = 0; i < n; i++) {
		t = json_at(req, tools, i);
		if (!json_eq(req, json_get(req, t, "type"), "function") ||
		    json_type(req, json_get(req, t, "name")) != JSMN_STRING) {
			resp_compact(jw, req, t);
			continue;
		}
		jw_obj(jw);
		canon_kstr(jw, "type", "function");
		jw_key(jw, "name");
		resp_compact(jw, req, json_get(req, t, "name"));
		for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
			v = json_get(req, t, keys[k]);
			if (v < 0 && k == 0)
				continue;
			jw_key(jw, keys[k]);
			if (v < 0)
				jw_null(jw);
			else
				resp_compact(jw, req, v);
		}
		jw_obj_end(jw);
	}
	jw_arr_end(jw);
}

/* The request fields a Response repeats, as a JSON object in b. */
static void
resp_echo(const struct json *req, struct buf *b)
{
	static const char *const opt[] = {"safety_identifier",
	                                  "prompt_cache_key", "user"};
	struct jw jw;

	jw_init(&jw, b);
	jw_obj(&jw);
	resp_echo_or(&jw, req, "instructions", JSMN_STRING, "null");
	resp_echo_or(&jw, req, "max_output_tokens", JSMN_PRIMITIVE, "null");
	resp_echo_or(&jw, req, "metadata", JSMN_OBJECT, "{}");
	resp_echo_or(&jw, req, "parallel_tool_calls", JSMN_PRIMITIVE, "true");
	jw_key(&jw, "previous_response_id");
	jw_null(&jw);
	resp_echo_or(&jw, req, "reasoning", JSMN_OBJECT, "null");
	resp_echo_or(&jw, req, "temperature", JSMN_PRIMITIVE, "1");
	resp_echo_or(&jw, req, "text", JSMN_OBJECT,
	             "{\"format\":{\"type\":\"text\"}}");
	resp_echo_or(&jw, req, "tool_choice", -1, "\"auto\"");
	resp_echo_tools(&jw, req);
	resp_echo_or(&jw, req, "top_p", JSMN_PRIMITIVE, "1");
	canon_kstr(&jw, "truncation", "disabled");
	for (size_t i = 0; i < sizeof opt / sizeof opt[0]; i++)
		if (json_type(req, json_get(req, 0, opt[i])) == JSMN_STRING)
			resp_echo_or(&jw, req, opt[i], JSMN_STRING, "null");
	jw_obj_end(&jw);
}

/* Write the members of JSON object text obj into the open object. */
static void
resp_splice(struct jw *jw, const struct buf *obj)
{
	struct json e = {0};
	char key[64];

	if (obj->len && json_parse(&e, obj->data, obj->len) == 0)
		for (int k = 1; k < e.ntok; k = json_next(&e, k + 1)) {
			if (json_str(&e, k, key, sizeof key) < 0)
				break;
			canon_kraw(jw, key, &e, k + 1);
		}
	json_free(&e);
}

/* Write a whole Response object. */
static void
resp_obj_write(struct jw *jw, const struct resp_obj *o)
{
	jw_obj(jw);
	canon_kstr(jw, "id", o->id);
	canon_kstr(jw, "object", "response");
	canon_kint(jw, "created_at", o->created_at);
	canon_kstr(jw, "status", o->status);
	if (strcmp(o->status, "completed") == 0) {
		canon_kint(jw, "completed_at", (long long)time(NULL));
	}
	jw_key(jw, "background");
	jw_bool(jw, false);
	jw_key(jw, "error");
	if (o->err_code) {
		jw_obj(jw);
		canon_kstr(jw, "code", o->err_code);
		canon_kstr(jw, "message", o->err_msg);
		jw_obj_end(jw);
	} else
		jw_null(jw);
	jw_key(jw, "incomplete_details");
	if (o->incomplete) {
		jw_obj(jw);
		canon_kstr(jw, "reason", o->incomplete);
		jw_obj_end(jw);
	} else
		jw_null(jw);
	jw_key(jw, "model");
	jw_str(jw, o->model ? o->model : "", o->model ? o->model_len : 0);
	jw_key(jw, "output");
	jw_raw(jw, o->output, o->output_len);
	resp_splice(jw, o->echo);
	if (o->usage && o->usage->have)
		resp_usage_write(jw, o->usage);
	jw_obj_end(jw);
}

/* Append a content part: output_text or refusal with its text. */
static void
resp_part_json(struct buf *b, int kind, const char *s, size_t n)
{
	struct jw jw;

	jw_init(&jw, b);
	jw_obj(&jw);
	jw_key(&jw, "type");
	if (kind == RESP_PART_REFUSAL) {
		jw_cstr(&jw, "refusal");
		jw_key(&jw, "refusal");
		jw_str(&jw, s ? s : "", n);
	} else {
		jw_cstr(&jw, "output_text");
		jw_key(&jw, "text");
		jw_str(&jw, s ? s : "", n);
		jw_key(&jw, "annotations");
		jw_arr(&jw);
		jw_arr_end(&jw);
		jw_key(&jw, "logprobs");
		jw_arr(&jw);
		jw_arr_end(&jw);
	}
	jw_obj_end(&jw);
}

/* Append a message item; parts is comma-separated part JSON. */
static void
resp_msg_json(struct buf *b, const char *id, const char *status,
              const char *parts, size_t n)
{
	struct buf arr = {0};
	struct jw jw;

	buf_addc(&arr, '[');
	buf_add(&arr, parts, n);
	buf_addc(&arr, ']');
	jw_init(&jw, b);
	jw_obj(&jw);
	canon_kstr(&jw, "type", "message");
	canon_kstr(&jw, "id", id);
	canon_kstr(&jw, "status", status);
	canon_kstr(&jw, "role", "assistant");
	jw_key(&jw, "content");
	jw_raw(&jw, arr.data, arr.len);
	jw_obj_end(&jw);
	buf_free(&arr);
}

/* A function call item's strings. */
struct resp_call {
	const char *id, *call_id, *name, *args;
	size_t call_id_len, name_len, args_len;
};

/* Append a function_call item. */
static void
resp_call_json(struct buf *b, const struct resp_call *c, const char *status)
{
	struct jw jw;

	jw_init(&jw, b);
	jw_obj(&jw);
	canon_kstr(&jw, "type", "function_call");
	canon_kstr(&jw, "id", c->id);
	jw_key(&jw, "call_id");
	jw_str(&jw, c->call_id ? c->call_id : "", c->call_id_len);
	jw_key(&jw, "name");
	jw_str(&jw, c->name ? c->name : "", c->name_len);
	jw_key(&jw, "arguments");
	jw_str(&jw, c->args ? c->args : "", c->args_len);
	canon_kstr(&jw, "status", status);
	jw_obj_end(&jw);
}

/* Append a reasoning item whose summary is text (none if NULL). */
static void
resp_reasoning_json(struct buf *b, const char *id, const char *s, size_t n)
{
	struct jw jw;

	jw_init(&jw, b);
	jw_obj(&jw);
	canon_kstr(&jw, "type", "reasoning");
	canon_kstr(&jw, "id", id);
	jw_key(&jw, "summary");
	jw_arr(&jw);
	if (s) {
		jw_obj(&jw);
		canon_kstr(&jw, "type", "summary_text");
		jw_key(&jw, "text");
		jw_str(&jw, s, n);
		jw_obj_end(&jw);
	}
	jw_arr_end(&jw);
	jw_obj_end(&jw);
}

/* Status and incomplete reason for a canonical finish (RESP_FIN_*). */
static const char *
resp_status(int fin, const char **incomplete)
{
	*incomplete = fin == RESP_FIN_LENGTH   ? "max_output_tokens"
	              : fin == RESP_FIN_FILTER ? "content_filter"
	                                       : NULL;
	return *incomplete ? "incomplete" : "completed";
}

/* RESP_FIN_* for a finish_reason token. */
static int
resp_finish(const struct json *j, int t)
{
	if (json_eq(j, t, "length"))
		return RESP_FIN_LENGTH;
	if (json_eq(j, t, "content_filter"))
		return RESP_FIN_FILTER;
	return json_type(j, t) == JSMN_STRING ? RESP_FIN_STOP : RESP_FIN_NONE;
}

/* ---- whole replies ---- */

/* Decoded text of string token t into b (reset first); its length, or
 * -1 when t is not a non-empty string. */
static long
resp_text(const struct json *j, int t, struct buf *b)
{
	buf_reset(b);
	if (json_str_buf(j, t, b) <= 0)
		return -1;
	return (long)b->len;
}

/* Append the message item of a chat message (text and refusal), if any. */
static int
resp_reply_message(const struct json *c, const struct canon_msg *m,
                   const char *base, int idx, const char *status,
                   struct buf *out)
{
	struct buf parts = {0}, t = {0};
	char id[64];

	if (!canon_is_str(c, m->content) && resp_text(c, m->refusal, &t) < 0) {
		buf_free(&t);
		return 0;
	}
	if (canon_is_str(c, m->content)) {
		buf_reset(&t);
		json_str_buf(c, m->content, &t);
		resp_part_json(&parts, RESP_PART_TEXT, t.data, t.len);
	}
	if (resp_text(c, m->refusal, &t) >= 0) {
		if (parts.len)
			buf_addc(&parts, ',');
		resp_part_json(&parts, RESP_PART_REFUSAL, t.data, t.len);
	}
	resp_item_id(id, sizeof id, "msg", base, idx);
	if (out->len > 1)
		buf_addc(out, ',');
	resp_msg_json(out, id, status, parts.data, parts.len);
	buf_free(&parts);
	buf_free(&t);
	return 1;
}

/* Append one chat tool call as a function_call item. */
static void
resp_reply_call(const struct json *c, int tc, const char *base, int idx,
                struct buf *out)
{
	struct buf cid = {0}, name = {0}, args = {0};
	struct canon_call cc;
	struct resp_call rc;
	const char *raw;
	size_t rl;
	char id[64];

	canon_call_read(c, tc, &cc);
	if (json_str_buf(c, cc.id, &cid) <= 0) {
		buf_reset(&cid);
		buf_printf(&cid, "call_%s%04x", base, (unsigned)idx & 0xffff);
	}
	json_str_buf(c, cc.name, &name);
	if (canon_is_str(c, cc.args))
		json_str_buf(c, cc.args, &args);
	else if ((raw = json_raw(c, cc.args, &rl)) != NULL)
		buf_add(&args, raw, rl);
	resp_item_id(id, sizeof id, "fc", base, idx);
	rc = (struct resp_call){id,      cid.data, name.data, args.data,
	                        cid.len, name.len, args.len};
	if (out->len > 1)
		buf_addc(out, ',');
	resp_call_json(out, &rc, "completed");
	buf_free(&cid);
	buf_free(&name);
	buf_free(&args);
}

/* The output array of a chat message into out. */
static void
resp_reply_output(const struct json *c, const struct canon_msg *m,
                  const char *base, const char *status, struct buf *out)
{
	int n = json_size(c, m->tool_calls), idx = 0;
	struct buf t = {0};
	char id[64];

	buf_addc(out, '[');
	if (resp_text(c, m->reasoning, &t) >= 0) {
		resp_item_id(id, sizeof id, "rs", base, idx++);
		resp_reasoning_json(out, id, t.data, t.len);
	}
	idx += resp_reply_message(c, m, base, idx, status, out);
	for (int i = 0; i < n; i++)
		resp_reply_call(c, json_at(c, m->tool_calls, i), base, idx++,
		                out);
	buf_addc(out, ']');
	buf_free(&t);
}

/* Canonical chat.completion -> Response object; see the header. */
int
resp_reply(const struct json *req, const char *chat, size_t n, struct buf *out)
{
	struct json c = {0};
	struct buf output = {0}, echo = {0}, model = {0};
	struct canon_usage u = {0};
	struct canon_reply r;
	struct resp_obj o = {0};
	char base[32], id[48];
	long long created;
	struct jw jw;

	if (canon_reply_read(&c, chat, n, &r) == -1 ||
	    json_type(&c, r.choices) != JSMN_ARRAY) {
		json_free(&c);
		return -1;
	}
	resp_new_base(base, sizeof base);
	snprintf(id, sizeof id, "resp_%s", base);
	o.status = resp_status(resp_finish(&c, r.finish), &o.incomplete);
	resp_reply_output(&c, &r.msg, base,
	                  o.incomplete ? "incomplete" : "completed", &output);
	canon_usage_read(&c, r.usage, &u, LLONG_MIN);
	resp_echo(req, &echo);
	if (json_str_buf(&c, r.model, &model) <= 0) {
		buf_reset(&model);
		json_str_buf(req, json_get(req, 0, "model"), &model);
	}
	if (json_int(&c, r.created, &created) == -1)
		created = (long long)time(NULL);
	o.id = id;
	o.created_at = created;
	o.model = model.data;
	o.model_len = model.len;
	o.echo = &echo;
	o.output = output.data;
	o.output_len = output.len;
	o.usage = &u;
	jw_init(&jw, out);
	resp_obj_write(&jw, &o);
	json_free(&c);
	buf_free(&output);
	buf_free(&echo);
	buf_free(&model);
	return 0;
}

/* ---- streams ---- */

/* Start an event line "event: T\ndata: {type, sequence_number". */
static void
resp_ev_open(struct resp_stream *st, struct buf *out, struct jw *jw,
             const char *type)
{
	canon_ev_open(out, jw, type);
	canon_kint(jw, "sequence_number", st->seq++);
}

/* Write item_id and output_index of the open item. */
static void
resp_ev_item(struct resp_stream *st, struct jw *jw)
{
	canon_kstr(jw, "item_id", st->item_id);
	canon_kint(jw, "output_index", st->nout - 1);
}

/* The open item's JSON (with its open part, if any) appended to b. */
static void
resp_open_json(struct resp_stream *st, const char *status, struct buf *b)
{
	struct buf parts = {0};
	struct resp_call c;

	switch (st->item) {
	case RESP_ITEM_MESSAGE:
		buf_add(&parts, st->parts.data, st->parts.len);
		if (st->part != RESP_PART_NONE) {
			if (parts.len)
				buf_addc(&parts, ',');
			resp_part_json(&parts, st->part, st->text.data,
			               st->text.len);
		}
		resp_msg_json(b, st->item_id, status, parts.data, parts.len);
		break;
	case RESP_ITEM_FUNCTION:
		c = (struct resp_call){st->item_id,     st->call_id.data,
		                       st->name.data,   st->text.data,
		                       st->call_id.len, st->name.len,
		                       st->text.len};
		resp_call_json(b, &c, status);
		break;
	case RESP_ITEM_REASONING:
		resp_reasoning_json(b, st->item_id,
		                    st->text.len ? st->text.data : NULL,
		                    st->text.len);
		break;
	}
	buf_free(&parts);
}

/* The output array so far; with the open item (as incomplete) if open. */
static void
resp_output_array(struct resp_stream *st, int open, struct buf *b)
{
	buf_addc(b, '[');
	buf_add(b, st->output.data, st->output.len);
	if (open && st->item != RESP_ITEM_NONE) {
		if (st->output.len)
			buf_addc(b, ',');
		resp_open_json(st, "incomplete", b);
	}
	buf_addc(b, ']');
}

/* Emit a response.* event carrying the whole response object. */
static void
resp_ev_response(struct resp_stream *st, struct buf *out, const char *type,
                 struct resp_obj *o, int open)
{
	struct buf arr = {0};
	struct jw jw;

	resp_output_array(st, open, &arr);
	o->id = st->id;
	o->created_at = st->created_at;
	o->model = st->model.data;
	o->model_len = st->model.len;
	o->echo = &st->echo;
	o->output = arr.data;
	o->output_len = arr.len;
	resp_ev_open(st, out, &jw, type);
	jw_key(&jw, "response");
	resp_obj_write(&jw, o);
	canon_ev_close(&jw);
	buf_free(&arr);
}

/* response.created and response.in_progress, once. */
static void
resp_start(struct resp_stream *st, struct buf *out)
{
	struct resp_obj o = {.status = "in_progress"};

	if (st->started)
		return;
	st->started = 1;
	resp_ev_response(st, out, "response.created", &o, 0);
	resp_ev_response(st, out, "response.in_progress", &o, 0);
}

/* Emit output_item.added or .done for the open item. */
static void
resp_ev_output_item(struct resp_stream *st, struct buf *out, const char *type,
                    const char *item, size_t n)
{
	struct jw jw;

	resp_ev_open(st, out, &jw, type);
	canon_kint(&jw, "output_index", st->nout - 1);
	jw_key(&jw, "item");
	jw_raw(&jw, item, n);
	canon_ev_close(&jw);
}

/* Open a new output item of kind with an id of prefix; output_item.added. */
static void
resp_item_begin(struct resp_stream *st, struct buf *out, int kind,
                const char *prefix)
{
	struct buf b = {0};

	st->item = kind;
	resp_item_id(st->item_id, sizeof st->item_id, prefix, st->base,
	             st->nout++);
	st->part = RESP_PART_NONE;
	st->nparts = 0;
	buf_reset(&st->parts);
	buf_reset(&st->text);
	resp_open_json(st, "in_progress", &b);
	resp_ev_output_item(st, out, "response.output_item.added", b.data,
	                    b.len);
	buf_free(&b);
}

/* Write the summary_index/part members of a reasoning summary event. */
static void
resp_ev_summary(struct resp_stream *st, struct jw *jw, int part)
{
	resp_ev_item(st, jw);
	canon_kint(jw, "summary_index", 0);
	if (!part)
		return;
	jw_key(jw, "part");
	jw_obj(jw);
	canon_kstr(jw, "type", "summary_text");
	jw_key(jw, "text");
	jw_str(jw, st->text.data ? st->text.data : "", st->text.len);
	jw_obj_end(jw);
}

/* Open a reasoning item and its summary part. */
static void
resp_reasoning_begin(struct resp_stream *st, struct buf *out)
{
	struct jw jw;

	resp_item_begin(st, out, RESP_ITEM_REASONING, "rs");
	resp_ev_open(st, out, &jw, "response.reasoning_summary_part.added");
	resp_ev_summary(st, &jw, 1);
	canon_ev_close(&jw);
}

/* Close a reasoning item's summary text and part. */
static void
resp_reasoning_end(struct resp_stream *st, struct buf *out)
{
	struct jw jw;

	resp_ev_open(st, out, &jw, "response.reasoning_summary_text.done");
	resp_ev_summary(st, &jw, 0);
	jw_key(&jw, "text");
	jw_str(&jw, st->text.data ? st->text.data : "", st->text.len);
	canon_ev_close(&jw);
	resp_ev_open(st, out, &jw, "response.reasoning_summary_part.done");
	resp_ev_summary(st, &jw, 1);
	canon_ev_close(&jw);
}

/* Write item_id, output_index, content_index of the open part. */
static void
resp_ev_part(struct resp_stream *st, struct jw *jw)
{
	resp_ev_item(st, jw);
	canon_kint(jw, "content_index", st->nparts);
}

/* Emit content_part.added or .done for the open part. */
static void
resp_ev_content_part(struct resp_stream *st, struct buf *out, const char *type)
{
	struct buf p = {0};
	struct jw jw;

	resp_part_json(&p, st->part, st->text.data, st->text.len);
	resp_ev_open(st, out, &jw, type);
	resp_ev_part(st, &jw);
	jw_key(&jw, "part");
	jw_raw(&jw, p.data, p.len);
	canon_ev_close(&jw);
	buf_free(&p);
}

/* Open a content part of kind in the open message. */
static void
resp_part_begin(struct resp_stream *st, struct buf *out, int kind)
{
	st->part = kind;
	buf_reset(&st->text);
	resp_ev_content_part(st, out, "response.content_part.added");
}

/* Close the open content part: text/refusal done, content_part.done. */
static void
resp_part_end(struct resp_stream *st, struct buf *out)
{
	int refusal = st->part == RESP_PART_REFUSAL;
	struct jw jw;

	if (st->part == RESP_PART_NONE)
		return;
	resp_ev_open(st, out, &jw,
	             refusal ? "response.refusal.done"
	                     : "response.output_text.done");
	resp_ev_part(st, &jw);
	jw_key(&jw, refusal ? "refusal" : "text");
	jw_str(&jw, st->text.data ? st->text.data : "", st->text.len);
	if (!refusal) {
		jw_key(&jw, "logprobs");
		jw_arr(&jw);
		jw_arr_end(&jw);
	}
	canon_ev_close(&jw);
	resp_ev_content_part(st, out, "response.content_part.done");
	if (st->parts.len)
		buf_addc(&st->parts, ',');
	resp_part_json(&st->parts, st->part, st->text.data, st->text.len);
	st->nparts++;
	st->part = RESP_PART_NONE;
}

/* Close a function call: arguments done. */
static void
resp_call_end(struct resp_stream *st, struct buf *out)
{
	struct jw jw;

	resp_ev_open(st, out, &jw, "response.function_call_arguments.done");
	resp_ev_item(st, &jw);
	jw_key(&jw, "name");
	jw_str(&jw, st->name.data ? st->name.data : "", st->name.len);
	jw_key(&jw, "arguments");
	jw_str(&jw, st->text.data ? st->text.data : "", st->text.len);
	canon_ev_close(&jw);
	if (st->tool >= 0 && st->tool < RESP_MAX_TOOLS)
		st->tool_done[st->tool / 8] |= 1u << (st->tool % 8);
}

/* Close the open output item with status; output_item.done. */
static void
resp_item_end(struct resp_stream *st, struct buf *out, const char *status)
{
	struct buf b = {0};

	switch (st->item) {
	case RESP_ITEM_NONE:
		return;
	case RESP_ITEM_MESSAGE:
		resp_part_end(st, out);
		break;
	case RESP_ITEM_FUNCTION:
		resp_call_end(st, out);
		break;
	case RESP_ITEM_REASONING:
		resp_reasoning_end(st, out);
		break;
	}
	resp_open_json(st, status, &b);
	resp_ev_output_item(st, out, "response.output_item.done", b.data,
	                    b.len);
	if (st->output.len)
		buf_addc(&st->output, ',');
	buf_add(&st->output, b.data, b.len);
	buf_free(&b);
	st->item = RESP_ITEM_NONE;
	st->tool = -1;
}

/* Text (kind RESP_PART_*) for the message item; opens what is needed. */
static void
resp_delta_text(struct resp_stream *st, struct buf *out, int kind,
                const struct buf *d)
{
	int refusal = kind == RESP_PART_REFUSAL;
	struct jw jw;

	if (st->item != RESP_ITEM_MESSAGE) {
		resp_item_end(st, out, "completed");
		resp_item_begin(st, out, RESP_ITEM_MESSAGE, "msg");
	}
	if (st->part != kind) {
		resp_part_end(st, out);
		resp_part_begin(st, out, kind);
	}
	buf_add(&st->text, d->data, d->len);
	resp_ev_open(st, out, &jw,
	             refusal ? "response.refusal.delta"
	                     : "response.output_text.delta");
	resp_ev_part(st, &jw);
	jw_key(&jw, "delta");
	jw_str(&jw, d->data, d->len);
	if (!refusal) {
		jw_key(&jw, "logprobs");
		jw_arr(&jw);
		jw_arr_end(&jw);
	}
	canon_ev_close(&jw);
}

/* Reasoning text for the reasoning item's summary. */
static void
resp_delta_reasoning(struct resp_stream *st, struct buf *out,
                     const struct buf *d)
{
	struct jw jw;

	if (st->item != RESP_ITEM_REASONING) {
		resp_item_end(st, out, "completed");
		resp_reasoning_begin(st, out);
	}
	buf_add(&st->text, d->data, d->len);
	resp_ev_open(st, out, &jw, "response.reasoning_summary_text.delta");
	resp_ev_summary(st, &jw, 0);
	jw_key(&jw, "delta");
	jw_str(&jw, d->data, d->len);
	canon_ev_close(&jw);
}

/* Open a function_call item for canonical tool-call entry c. */
static void
resp_call_begin(struct resp_stream *st, struct buf *out, const struct json *j,
                const struct canon_call *c)
{
	buf_reset(&st->name);
	buf_reset(&st->call_id);
	json_str_buf(j, c->name, &st->name);
	if (json_str_buf(j, c->id, &st->call_id) <= 0) {
		buf_reset(&st->call_id);
		buf_printf(&st->call_id, "call_%s%04x", st->base,
		           (unsigned)st->nout & 0xffff);
	}
	resp_item_begin(st, out, RESP_ITEM_FUNCTION, "fc");
	st->tool = (int)c->index;
}

/* One canonical tool-call delta entry (checked by resp_chunk_check). */
static void
resp_delta_tool(struct resp_stream *st, struct buf *out, const struct json *j,
                int e)
{
	struct canon_call c;
	struct jw jw;

	canon_call_read(j, e, &c);
	if (st->item != RESP_ITEM_FUNCTION || st->tool != (int)c.index) {
		resp_item_end(st, out, "completed");
		resp_call_begin(st, out, j, &c);
	} else if (st->name.len == 0)
		json_str_buf(j, c.name, &st->name);
	buf_reset(&st->scratch);
	if (json_str_buf(j, c.args, &st->scratch) <= 0)
		return;
	buf_add(&st->text, st->scratch.data, st->scratch.len);
	resp_ev_open(st, out, &jw, "response.function_call_arguments.delta");
	resp_ev_item(st, &jw);
	jw_key(&jw, "delta");
	jw_str(&jw, st->scratch.data, st->scratch.len);
	canon_ev_close(&jw);
}

/* Whether tool-call index idx was closed (bit set in done). */
static int
resp_bit(const unsigned char *done, long long idx)
{
	return (done[idx / 8] >> (idx % 8)) & 1;
}

/* Check a delta's tool calls: objects with an index in range, and no
 * index that this stream already closed (calls arrive one after another). */
static int
resp_check_tools(const struct resp_stream *st, const struct json *j,
                 const struct canon_msg *m)
{
	int n = json_size(j, m->tool_calls);
	unsigned char done[sizeof st->tool_done];
	long long cur = st->item == RESP_ITEM_FUNCTION ? st->tool : -1, idx;
	struct canon_call c;

	if (canon_absent(j, m->tool_calls))
		return 0;
	if (json_type(j, m->tool_calls) != JSMN_ARRAY)
		return -1;
	memcpy(done, st->tool_done, sizeof done);
	if (canon_has_text(j, m->content) || canon_has_text(j, m->refusal) ||
	    canon_has_text(j, m->reasoning))
		cur = -1; /* text first closes the open call */
	for (int i = 0; i < n; i++) {
		canon_call_read(j, json_at(j, m->tool_calls, i), &c);
		if ((idx = c.index) < 0 || idx >= RESP_MAX_TOOLS)
			return -1;
		if (idx == cur)
			continue;
		if (cur >= 0)
			done[cur / 8] |= 1u << (cur % 8);
		if (resp_bit(done, idx))
			return -1;
		cur = idx;
	}
	return 0;
}

/* Whether choice c of a read chunk is one this encoder understands: its
 * delta (if any) an object with string texts and ordered tool calls. */
static int
resp_chunk_check(const struct resp_stream *st, const struct json *j, int c)
{
	int d = json_get(j, c, "delta");
	struct canon_msg m;

	if (c < 0 || canon_absent(j, d))
		return 0;
	if (json_type(j, d) != JSMN_OBJECT)
		return -1;
	canon_msg_read(j, d, &m);
	if (!canon_opt(j, m.content, JSMN_STRING) ||
	    !canon_opt(j, m.refusal, JSMN_STRING) ||
	    !canon_opt(j, m.reasoning, JSMN_STRING))
		return -1;
	return resp_check_tools(st, j, &m);
}

/* Apply a delta's reasoning, text, refusal and tool calls in that order. */
static void
resp_delta(struct resp_stream *st, struct buf *out, const struct json *j, int d)
{
	struct canon_msg m;
	int n;

	canon_msg_read(j, d, &m);
	if (resp_text(j, m.reasoning, &st->scratch) >= 0)
		resp_delta_reasoning(st, out, &st->scratch);
	if (resp_text(j, m.content, &st->scratch) >= 0)
		resp_delta_text(st, out, RESP_PART_TEXT, &st->scratch);
	if (resp_text(j, m.refusal, &st->scratch) >= 0)
		resp_delta_text(st, out, RESP_PART_REFUSAL, &st->scratch);
	n = json_size(j, m.tool_calls);
	for (int i = 0; i < n; i++)
		resp_delta_tool(st, out, j, json_at(j, m.tool_calls, i));
}

/* Start a stream; see the header. */
void
resp_stream_init(struct resp_stream *st, const struct json *req)
{
	memset(st, 0, sizeof *st);
	resp_new_base(st->base, sizeof st->base);
	snprintf(st->id, sizeof st->id, "resp_%s", st->base);
	st->created_at = (long long)time(NULL);
	st->tool = -1;
	json_str_buf(req, json_get(req, 0, "model"), &st->model);
	resp_echo(req, &st->echo);
}

/* Free a stream's buffers. */
void
resp_stream_free(struct resp_stream *st)
{
	buf_free(&st->model);
	buf_free(&st->echo);
	buf_free(&st->output);
	buf_free(&st->parts);
	buf_free(&st->text);
	buf_free(&st->name);
	buf_free(&st->call_id);
	buf_free(&st->scratch);
	json_free(&st->j);
}

/* One canonical chunk -> events; see the header. */
int
resp_stream_chunk(struct resp_stream *st, const char *data, size_t n,
                  struct buf *out)
{
	const struct json *j = &st->j;
	struct canon_chunk ck;
	int c, fin, i = 0;

	if (st->ended || canon_chunk_read(&st->j, data, n, &ck) == -1)
		return -1;
	c = canon_choice_next(j, ck.choices, &i);
	if (resp_chunk_check(st, j, c) == -1)
		return -1;
	if (!st->started) {
		if (resp_text(j, ck.model, &st->scratch) >= 0) {
			buf_reset(&st->model);
			buf_add(&st->model, st->scratch.data, st->scratch.len);
		}
		resp_start(st, out);
	}
	canon_usage_read(j, ck.usage, &st->usage, LLONG_MIN);
	if (c < 0)
		return 0;
	if (json_type(j, json_get(j, c, "delta")) == JSMN_OBJECT)
		resp_delta(st, out, j, json_get(j, c, "delta"));
	if ((fin = resp_finish(j, json_get(j, c, "finish_reason"))) !=
	    RESP_FIN_NONE)
		st->finish = fin;
	return 0;
}

/* The stream completed; see the header. */
void
resp_stream_done(struct resp_stream *st, struct buf *out)
{
	struct resp_obj o = {0};

	if (st->ended)
		return;
	resp_start(st, out);
	o.status = resp_status(st->finish, &o.incomplete);
	o.usage = &st->usage;
	resp_item_end(st, out, o.incomplete ? "incomplete" : "completed");
	resp_ev_response(
	    st, out,
	    o.incomplete ? "response.incomplete" : "response.completed", &o, 0);
	st->ended = 1;
}

/* A Responses error code for a failure's status and llmfd/OpenAI code. */
static const char *
resp_fail_code(int status, const char *code)
{
	static const struct {
		const char *in, *out;
	} map[] = {
	    {"rate_limited", "rate_limit_exceeded"},
	    {"rate_limit_exceeded", "rate_limit_exceeded"},
	    {"rate_limit_error", "rate_limit_exceeded"},
	    {"context_window", "context_length_exceeded"},
	    {"context_length_exceeded", "context_length_exceeded"},
	    {"quota", "insufficient_quota"},
	    {"insufficient_quota", "insufficient_quota"},
	    {"billing_error", "insufficient_quota"},
	    {"content_policy", "invalid_prompt"},
	    {"content_filter", "invalid_prompt"},
	    {"bad_request", "invalid_prompt"},
	    {"invalid_prompt", "invalid_prompt"},
	};

	for (size_t i = 0; code && i < sizeof map / sizeof map[0]; i++)
		if (strcmp(code, map[i].in) == 0)
			return map[i].out;
	if (status == 429)
		return "rate_limit_exceeded";
	if (status == 402)
		return "insufficient_quota";
	if (status == 400 || status == 413 || status == 422)
		return "invalid_prompt";
	return "server_error";
}

/* The stream failed; see the header. */
void
resp_stream_fail(struct resp_stream *st, int status, const char *code,
                 const char *msg, struct buf *out)
{
	struct resp_obj o = {0};

	if (st->ended)
		return;
	resp_start(st, out);
	o.status = "failed";
	o.err_code = resp_fail_code(status, code);
	o.err_msg = msg && msg[0] ? msg : "the upstream stream failed";
	o.usage = &st->usage;
	resp_ev_response(st, out, "response.failed", &o, 1);
	st->ended = 1;
}
