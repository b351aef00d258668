/* Anthropic Messages ingress: Messages requests into canonical Chat
 * Completions bodies, canonical replies and chunks back into Messages
 * replies and events (INGRESS.md §1, §3). The canonical side is read and
 * written with canon.c, shared with responses.c. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "worker/ingress/canon.h"
#include "worker/ingress/messages.h"
#include "worker/provider.h"

static int msgs_parts(struct canon_rq *, struct jw *, int blocks,
                      const char *where, int *nparts);

/* Refuse field key in pydantic's words (Anthropic's); -1. */
static int
msgs_bad(struct canon_rq *rq, const char *key, enum canon_want want)
{
	static const char *const type[] = {
	    [CANON_NUMBER] = "number", [CANON_INTEGER] = "integer",
	    [CANON_BOOL] = "boolean",  [CANON_STRING] = "string",
	    [CANON_LIST] = "list",     [CANON_DICT] = "dictionary"};

	if (want == CANON_REQUIRED)
		return canon_fail(rq, NULL, "%s: Field required", key);
	if (want == CANON_MIN1)
		return canon_fail(
		    rq, NULL, "%s: Input should be greater than or equal to 1",
		    key);
	return canon_fail(rq, NULL, "%s: Input should be a valid %s", key,
	                  type[want]);
}

/* snprintf for location strings and ids, where truncation is harmless. */
static void __attribute__((format(printf, 3, 4)))
msgs_fmt(char *out, size_t outsz, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(out, outsz, fmt, ap);
	va_end(ap);
}

/* ---- system ---- */

/* Drop a first line "x-anthropic-billing-header: ..." (it changes per
 * request and defeats prefix caching upstream). */
static void
msgs_strip_billing(struct buf *s)
{
	static const char h[] = "x-anthropic-billing-header:";
	const char *nl;
	size_t cut;

	if (s->len < sizeof h - 1 || memcmp(s->data, h, sizeof h - 1) != 0)
		return;
	nl = memchr(s->data, '\n', s->len);
	cut = nl ? (size_t)(nl - s->data) + 1 : s->len;
	while (cut < s->len && s->data[cut] == '\n')
		cut++;
	memmove(s->data, s->data + cut, s->len - cut);
	s->len -= cut;
}

/* The system text (string, or text blocks joined by blank lines) into s. */
static int
msgs_system_text(struct canon_rq *x, int sys, struct buf *s)
{
	const struct json *j = x->j;
	int n, b, t;

	if (canon_is_str(j, sys)) {
		json_str_buf(j, sys, s);
		return 0;
	}
	if (json_type(j, sys) != JSMN_ARRAY)
		return canon_fail(x, NULL,
		                  "system: Input should be a valid string "
		                  "or list of text blocks");
	n = json_size(j, sys);
	for (int i = 0; i < n; i++) {
		b = json_at(j, sys, i);
		t = json_get(j, b, "text");
		if (!json_eq(j, json_get(j, b, "type"), "text") ||
		    !canon_is_str(j, t))
			return canon_fail(x, NULL,
			                  "system.%d: Input should be a "
			                  "text block",
			                  i);
		if (s->len)
			buf_adds(s, "\n\n");
		json_str_buf(j, t, s);
	}
	return 0;
}

/* Write the system message, if the request has system text. */
static int
msgs_system(struct canon_rq *x, struct jw *jw)
{
	const struct json *j = x->j;
	int sys = json_get(j, 0, "system");
	struct buf s = {0};

	if (sys < 0 || json_is_null(j, sys))
		return 0;
	if (msgs_system_text(x, sys, &s) == -1) {
		buf_free(&s);
		return -1;
	}
	msgs_strip_billing(&s);
	if (s.len) {
		canon_open_msg(jw, "system");
		jw_str(jw, s.data, s.len);
		jw_obj_end(jw);
	}
	buf_free(&s);
	return 0;
}

/* ---- user content parts ---- */

/* Append "data:MEDIA;base64,DATA" from a base64 source to u; 0 or -1. */
static int
msgs_data_url(const struct json *j, int src, struct buf *u)
{
	int mt = json_get(j, src, "media_type"), d = json_get(j, src, "data");

	if (!canon_is_str(j, mt) || !canon_is_str(j, d))
		return -1;
	buf_adds(u, "data:");
	json_str_buf(j, mt, u);
	buf_adds(u, ";base64,");
	json_str_buf(j, d, u);
	return 0;
}

/* Write an image block as an image_url part. */
static int
msgs_image(struct canon_rq *x, struct jw *jw, int b, const char *where)
{
	const struct json *j = x->j;
	int src = json_get(j, b, "source"), ty = json_get(j, src, "type");
	struct buf u = {0};

	if (json_eq(j, ty, "base64")) {
		if (msgs_data_url(j, src, &u) == -1) {
			buf_free(&u);
			return canon_fail(x, NULL,
			                  "%s.source: base64 image needs "
			                  "media_type and data",
			                  where);
		}
	} else if (json_eq(j, ty, "url") &&
	           canon_is_str(j, json_get(j, src, "url"))) {
		json_str_buf(j, json_get(j, src, "url"), &u);
	} else
		return canon_fail(x, NULL,
		                  "%s.source.type: image source must be "
		                  "'base64' or 'url'",
		                  where);
	canon_open_typed(jw, "image_url", 1);
	jw_key(jw, "url");
	jw_str(jw, u.data ? u.data : "", u.len);
	jw_obj_end(jw);
	jw_obj_end(jw);
	buf_free(&u);
	return 0;
}

/* Write a base64 PDF document as an OpenAI file part. */
static int
msgs_pdf(struct canon_rq *x, struct jw *jw, int b, int src, const char *where)
{
	const struct json *j = x->j;
	int title = json_get(j, b, "title");
	struct buf u = {0};

	if (!json_eq(j, json_get(j, src, "media_type"), "application/pdf") ||
	    msgs_data_url(j, src, &u) == -1) {
		buf_free(&u);
		return canon_fail(x, NULL,
		                  "%s.source: base64 documents must be "
		                  "application/pdf with data",
		                  where);
	}
	canon_open_typed(jw, "file", 1);
	jw_key(jw, "filename");
	if (canon_is_str(j, title))
		prov_raw(jw, j, title);
	else
		jw_cstr(jw, "document.pdf");
	jw_key(jw, "file_data");
	jw_str(jw, u.data, u.len);
	jw_obj_end(jw);
	jw_obj_end(jw);
	buf_free(&u);
	return 0;
}

/* Write a plain-text document as a text part (title first, if any). */
static void
msgs_doc_text(struct jw *jw, const struct json *j, int b, int data)
{
	struct buf t = {0};

	if (canon_is_str(j, json_get(j, b, "title"))) {
		json_str_buf(j, json_get(j, b, "title"), &t);
		buf_adds(&t, "\n\n");
	}
	json_str_buf(j, data, &t);
	canon_open_typed(jw, "text", 0);
	jw_str(jw, t.data ? t.data : "", t.len);
	jw_obj_end(jw);
	buf_free(&t);
}

/* Write a document block; *nparts grows by the parts written. */
static int
msgs_document(struct canon_rq *x, struct jw *jw, int b, const char *where,
              int *nparts)
{
	const struct json *j = x->j;
	int src = json_get(j, b, "source"), ty = json_get(j, src, "type");
	int c = json_get(j, src, "content"), d = json_get(j, src, "data");
	char w[128];

	if (json_eq(j, ty, "base64")) {
		(*nparts)++;
		return msgs_pdf(x, jw, b, src, where);
	}
	if (json_eq(j, ty, "text") && canon_is_str(j, d)) {
		(*nparts)++;
		msgs_doc_text(jw, j, b, d);
		return 0;
	}
	if (json_eq(j, ty, "content") && canon_is_str(j, c)) {
		(*nparts)++;
		msgs_doc_text(jw, j, b, c);
		return 0;
	}
	if (json_eq(j, ty, "content") && json_type(j, c) == JSMN_ARRAY) {
		msgs_fmt(w, sizeof w, "%s.source.content", where);
		return msgs_parts(x, jw, c, w, nparts);
	}
	if (json_eq(j, ty, "url"))
		return canon_fail(x, NULL,
		                  "%s.source: document url sources are not "
		                  "supported (llmfd does not fetch URLs)",
		                  where);
	return canon_fail(x, NULL,
	                  "%s.source.type: document source must be "
	                  "'base64', 'text' or 'content'",
	                  where);
}

/* Write search_result content (its text blocks) as text parts. */
static int
msgs_search_result(struct canon_rq *x, struct jw *jw, int b, const char *where,
                   int *nparts)
{
	const struct json *j = x->j;
	int c = json_get(j, b, "content"), n = json_size(j, c), t;

	if (json_type(j, c) != JSMN_ARRAY)
		return canon_fail(
		    x, NULL, "%s.content: Input should be a valid list", where);
	for (int i = 0; i < n; i++) {
		t = json_get(j, json_at(j, c, i), "text");
		if (!canon_is_str(j, t))
			continue;
		canon_text_part(jw, j, t);
		(*nparts)++;
	}
	return 0;
}

/* Write one user block (not a tool_result) as parts. */
static int
msgs_part(struct canon_rq *x, struct jw *jw, int b, const char *where,
          int *nparts)
{
	const struct json *j = x->j;
	int ty = json_get(j, b, "type"), t;

	if (json_type(j, b) != JSMN_OBJECT || !canon_is_str(j, ty))
		return canon_fail(x, NULL,
		                  "%s: Input should be a content block with "
		                  "a type",
		                  where);
	if (json_eq(j, ty, "text")) {
		if (!canon_is_str(j, t = json_get(j, b, "text")))
			return canon_fail(x, NULL, "%s.text: Field required",
			                  where);
		canon_text_part(jw, j, t);
		(*nparts)++;
		return 0;
	}
	if (json_eq(j, ty, "image")) {
		(*nparts)++;
		return msgs_image(x, jw, b, where);
	}
	if (json_eq(j, ty, "document"))
		return msgs_document(x, jw, b, where, nparts);
	if (json_eq(j, ty, "search_result"))
		return msgs_search_result(x, jw, b, where, nparts);
	if (json_eq(j, ty, "tool_use") || json_eq(j, ty, "thinking") ||
	    json_eq(j, ty, "redacted_thinking"))
		return canon_fail(x, NULL,
		                  "%s: %.*s blocks are only allowed in "
		                  "assistant turns",
		                  where, j->tok[ty].end - j->tok[ty].start,
		                  j->js + j->tok[ty].start);
	return canon_fail(
	    x, NULL, "%s.type: unsupported content block type '%.*s'", where,
	    j->tok[ty].end - j->tok[ty].start, j->js + j->tok[ty].start);
}

/* Write the non-tool_result blocks of array blocks as parts. */
static int
msgs_parts(struct canon_rq *x, struct jw *jw, int blocks, const char *where,
           int *nparts)
{
	const struct json *j = x->j;
	int n = json_size(j, blocks), b;
	char w[128];

	for (int i = 0; i < n; i++) {
		b = json_at(j, blocks, i);
		if (json_eq(j, json_get(j, b, "type"), "tool_result"))
			continue;
		msgs_fmt(w, sizeof w, "%s.%d", where, i);
		if (msgs_part(x, jw, b, w, nparts) == -1)
			return -1;
	}
	return 0;
}

/* ---- tool results ---- */

/* Append the text of a tool_result's content to t (images dropped). */
static int
msgs_result_text(struct canon_rq *x, int c, struct buf *t, const char *where)
{
	const struct json *j = x->j;
	int n, b, s, any = 0;
	size_t start = t->len;

	if (c < 0 || json_is_null(j, c))
		return 0;
	if (canon_is_str(j, c)) {
		json_str_buf(j, c, t);
		return 0;
	}
	if (json_type(j, c) != JSMN_ARRAY)
		return canon_fail(x, NULL,
		                  "%s.content: Input should be a valid "
		                  "string or list of content blocks",
		                  where);
	n = json_size(j, c);
	for (int i = 0; i < n; i++) {
		b = json_at(j, c, i);
		s = json_get(j, b, "text");
		if (!canon_is_str(j, s) &&
		    json_eq(j, json_get(j, b, "type"), "document"))
			s = json_path(j, b, "source.data");
		if (!canon_is_str(j, s) ||
		    json_eq(j, json_path(j, b, "source.type"), "base64"))
			continue;
		if (any++ && t->len > start)
			buf_addc(t, '\n');
		json_str_buf(j, s, t);
	}
	return 0;
}

/* Write a tool_result block as a role:"tool" message. */
static int
msgs_tool_result(struct canon_rq *x, struct jw *jw, int b, const char *where)
{
	const struct json *j = x->j;
	int id = json_get(j, b, "tool_use_id");
	struct buf t = {0};

	if (!canon_is_str(j, id))
		return canon_fail(x, NULL, "%s.tool_use_id: Field required",
		                  where);
	if (json_is_true(j, json_get(j, b, "is_error")))
		buf_adds(&t, "Error: ");
	if (msgs_result_text(x, json_get(j, b, "content"), &t, where) == -1) {
		buf_free(&t);
		return -1;
	}
	canon_open_tool_msg(jw, j, id);
	jw_str(jw, t.data ? t.data : "", t.len);
	jw_obj_end(jw);
	buf_free(&t);
	return 0;
}

/* ---- turns ---- */

/* The text token of the one non-tool_result block of c when that block is
 * a text block, else -1. */
static int
msgs_only_text(const struct json *j, int c)
{
	int n = json_size(j, c), b, t = -1, others = 0;

	for (int i = 0; i < n; i++) {
		b = json_at(j, c, i);
		if (json_eq(j, json_get(j, b, "type"), "tool_result"))
			continue;
		others++;
		if (json_eq(j, json_get(j, b, "type"), "text"))
			t = json_get(j, b, "text");
	}
	return others == 1 ? t : -1;
}

/* A user turn of blocks: its tool results first (each a tool message,
 * so they follow the assistant's tool calls as Chat requires), then one
 * user message with the other blocks (a string for a single text). */
static int
msgs_user(struct canon_rq *x, struct jw *jw, int c, const char *where)
{
	const struct json *j = x->j;
	int n = json_size(j, c), b, np = 0, nres = 0;
	struct buf pb = {0};
	struct jw pw;
	char w[128];

	for (int i = 0; i < n; i++) {
		b = json_at(j, c, i);
		if (!json_eq(j, json_get(j, b, "type"), "tool_result"))
			continue;
		msgs_fmt(w, sizeof w, "%s.%d", where, i);
		if (msgs_tool_result(x, jw, b, w) == -1)
			return -1;
		nres++;
	}
	jw_init(&pw, &pb);
	jw_arr(&pw);
	if (msgs_parts(x, &pw, c, where, &np) == -1) {
		buf_free(&pb);
		return -1;
	}
	jw_arr_end(&pw);
	if (np > 0 || nres == 0) {
		canon_open_msg(jw, "user");
		if (np == 1 && (b = msgs_only_text(j, c)) >= 0)
			prov_raw(jw, j, b);
		else if (np == 0)
			jw_cstr(jw, "");
		else
			jw_raw(jw, pb.data, pb.len);
		jw_obj_end(jw);
	}
	buf_free(&pb);
	return 0;
}

/* Write a tool_use block as a tool call (arguments = serialized input). */
static int
msgs_tool_use(struct canon_rq *x, struct jw *jw, int b, const char *where)
{
	const struct json *j = x->j;
	int id = json_get(j, b, "id"), name = json_get(j, b, "name");
	int in = json_get(j, b, "input");

	if (!canon_is_str(j, id) || !canon_is_str(j, name))
		return canon_fail(x, NULL, "%s: tool_use needs id and name",
		                  where);
	if (in >= 0 && json_type(j, in) != JSMN_OBJECT)
		return canon_fail(x, NULL,
		                  "%s.input: Input should be a valid "
		                  "dictionary",
		                  where);
	jw_obj(jw);
	prov_tool_call(jw, j, id, NULL, name, in, "{}");
	jw_obj_end(jw);
	return 0;
}

/* Whether an assistant block type is one llmfd drops: thinking (its
 * signature is only valid for the issuing family) and server-tool blocks
 * (server_tool_use, web_search_tool_result, mcp_tool_use, ...). */
static int
msgs_dropped_block(const struct json *j, int ty)
{
	const char *s = j->js + j->tok[ty].start;
	int n = j->tok[ty].end - j->tok[ty].start;

	if (json_eq(j, ty, "thinking") || json_eq(j, ty, "redacted_thinking"))
		return 1;
	if (json_eq(j, ty, "tool_use") || json_eq(j, ty, "tool_result"))
		return 0;
	return (n >= 9 && memcmp(s + n - 9, "_tool_use", 9) == 0) ||
	       (n >= 12 && memcmp(s + n - 12, "_tool_result", 12) == 0);
}

/* Gather an assistant turn's text (t) and tool calls (tc, *ncalls). */
static int
msgs_assistant_blocks(struct canon_rq *x, int c, const char *where,
                      struct buf *t, struct jw *tc, int *ncalls)
{
	const struct json *j = x->j;
	int n = json_size(j, c), b, ty, s;
	char w[128];

	for (int i = 0; i < n; i++) {
		b = json_at(j, c, i);
		ty = json_get(j, b, "type");
		msgs_fmt(w, sizeof w, "%s.%d", where, i);
		if (json_type(j, b) != JSMN_OBJECT || !canon_is_str(j, ty))
			return canon_fail(x, NULL,
			                  "%s: Input should be a content "
			                  "block with a type",
			                  w);
		if (json_eq(j, ty, "text")) {
			if (!canon_is_str(j, s = json_get(j, b, "text")))
				return canon_fail(x, NULL,
				                  "%s.text: Field required", w);
			if (t->len)
				buf_adds(t, "\n\n");
			json_str_buf(j, s, t);
		} else if (json_eq(j, ty, "tool_use")) {
			if (msgs_tool_use(x, tc, b, w) == -1)
				return -1;
			(*ncalls)++;
		} else if (!msgs_dropped_block(j, ty))
			return canon_fail(x, NULL,
			                  "%s: %.*s blocks are not allowed "
			                  "in assistant turns",
			                  w, j->tok[ty].end - j->tok[ty].start,
			                  j->js + j->tok[ty].start);
	}
	return 0;
}

/* An assistant turn of blocks: one assistant message with the text and
 * the tool calls; nothing when only dropped blocks remain. */
static int
msgs_assistant(struct canon_rq *x, struct jw *jw, int c, const char *where)
{
	struct buf t = {0}, tb = {0};
	struct jw tc;
	int ncalls = 0, rc;

	jw_init(&tc, &tb);
	jw_arr(&tc);
	rc = msgs_assistant_blocks(x, c, where, &t, &tc, &ncalls);
	jw_arr_end(&tc);
	if (rc == 0 && (t.len || ncalls))
		canon_assistant(jw, t.len ? &t : NULL, NULL,
		                ncalls ? &tb : NULL);
	buf_free(&t);
	buf_free(&tb);
	return rc;
}

/* Write message i (one Messages turn) as one or more Chat messages. */
static int
msgs_message(struct canon_rq *x, struct jw *jw, int i, int m)
{
	const struct json *j = x->j;
	int r = json_get(j, m, "role"), c = json_get(j, m, "content");
	int user = json_eq(j, r, "user");
	char w[128];

	if (json_type(j, m) != JSMN_OBJECT)
		return canon_fail(x, NULL,
		                  "messages.%d: Input should be a valid "
		                  "dictionary",
		                  i);
	if (!user && !json_eq(j, r, "assistant"))
		return canon_fail(x, NULL,
		                  "messages.%d.role: Input should be 'user' "
		                  "or 'assistant'",
		                  i);
	if (canon_is_str(j, c)) {
		canon_open_msg(jw, user ? "user" : "assistant");
		prov_raw(jw, j, c);
		jw_obj_end(jw);
		return 0;
	}
	if (json_type(j, c) != JSMN_ARRAY)
		return canon_fail(x, NULL,
		                  "messages.%d.content: Input should be a "
		                  "valid string or list of content blocks",
		                  i);
	msgs_fmt(w, sizeof w, "messages.%d.content", i);
	return user ? msgs_user(x, jw, c, w) : msgs_assistant(x, jw, c, w);
}

/* Write "messages": system message, then every turn. */
static int
msgs_messages(struct canon_rq *x, struct jw *jw)
{
	const struct json *j = x->j;
	int ms = json_get(j, 0, "messages"), n = json_size(j, ms);

	if (ms < 0 || json_type(j, ms) != JSMN_ARRAY)
		return msgs_bad(x, "messages",
		                ms < 0 ? CANON_REQUIRED : CANON_LIST);
	if (n == 0)
		return canon_fail(x, NULL,
		                  "messages: at least one message is "
		                  "required");
	jw_key(jw, "messages");
	jw_arr(jw);
	if (msgs_system(x, jw) == -1)
		return -1;
	for (int i = 0; i < n; i++)
		if (msgs_message(x, jw, i, json_at(j, ms, i)) == -1)
			return -1;
	jw_arr_end(jw);
	return 0;
}

/* ---- tools ---- */

/* Write one client tool as a function tool (1); typed (server) tools such
 * as web_search_* or bash_* are skipped (0). */
static int
msgs_tool(struct canon_rq *x, struct jw *jw, int i, int t)
{
	const struct json *j = x->j;
	int ty = json_get(j, t, "type"), name = json_get(j, t, "name");
	int sch = json_get(j, t, "input_schema"), v;

	if (json_type(j, t) != JSMN_OBJECT)
		return canon_fail(x, NULL,
		                  "tools.%d: Input should be a valid "
		                  "dictionary",
		                  i);
	if (ty >= 0 && !json_is_null(j, ty) && !json_eq(j, ty, "custom"))
		return 0;
	if (!canon_is_str(j, name) || j->tok[name].end == j->tok[name].start)
		return canon_fail(x, NULL, "tools.%d.name: Field required", i);
	if (json_type(j, sch) != JSMN_OBJECT)
		return canon_fail(x, NULL,
		                  "tools.%d.input_schema: Field required", i);
	canon_open_function(jw, j, name);
	if (canon_is_str(j, v = json_get(j, t, "description"))) {
		canon_kraw(jw, "description", j, v);
	}
	canon_kraw(jw, "parameters", j, sch);
	if (json_type(j, v = json_get(j, t, "strict")) == JSMN_PRIMITIVE &&
	    !json_is_null(j, v)) {
		jw_key(jw, "strict");
		jw_bool(jw, json_is_true(j, v));
	}
	jw_obj_end(jw);
	jw_obj_end(jw);
	return 1;
}

/* Write "tools" (when any function tool remains; *ntools says how many). */
static int
msgs_tools(struct canon_rq *x, struct jw *jw, int *ntools)
{
	const struct json *j = x->j;
	int ts = json_get(j, 0, "tools"), n = json_size(j, ts), rc;
	struct buf b = {0};
	struct jw tw;

	if (canon_rq_want(x, ts, "tools", CANON_LIST) == -1)
		return -1;
	if (canon_absent(j, ts))
		return 0;
	jw_init(&tw, &b);
	jw_arr(&tw);
	for (int i = 0; i < n; i++) {
		if ((rc = msgs_tool(x, &tw, i, json_at(j, ts, i))) == -1) {
			buf_free(&b);
			return -1;
		}
		*ntools += rc;
	}
	jw_arr_end(&tw);
	if (*ntools) {
		jw_key(jw, "tools");
		jw_raw(jw, b.data, b.len);
	}
	buf_free(&b);
	return 0;
}

/* Write tool_choice and parallel_tool_calls (only with tools). */
static int
msgs_tool_choice(struct canon_rq *x, struct jw *jw, int ntools)
{
	const struct json *j = x->j;
	int tc = json_get(j, 0, "tool_choice"), ty = json_get(j, tc, "type");
	int name = json_get(j, tc, "name");

	if (canon_rq_want(x, tc, "tool_choice", CANON_DICT) == -1)
		return -1;
	if (canon_absent(j, tc))
		return 0;
	if (json_eq(j, ty, "tool") && !canon_is_str(j, name))
		return canon_fail(x, NULL, "tool_choice.name: Field required");
	if (!json_eq(j, ty, "auto") && !json_eq(j, ty, "any") &&
	    !json_eq(j, ty, "tool") && !json_eq(j, ty, "none"))
		return canon_fail(x, NULL,
		                  "tool_choice.type: Input should be 'auto', "
		                  "'any', 'tool' or 'none'");
	if (ntools == 0)
		return 0;
	jw_key(jw, "tool_choice");
	if (json_eq(j, ty, "tool")) {
		canon_open_function(jw, j, name);
		jw_obj_end(jw);
		jw_obj_end(jw);
	} else
		jw_cstr(jw, json_eq(j, ty, "any")    ? "required"
		            : json_eq(j, ty, "none") ? "none"
		                                     : "auto");
	if (json_is_true(j, json_get(j, tc, "disable_parallel_tool_use"))) {
		jw_key(jw, "parallel_tool_calls");
		jw_bool(jw, false);
	}
	return 0;
}

/* ---- options ---- */

/* Write stop_sequences as stop. */
static int
msgs_stop(struct canon_rq *x, struct jw *jw)
{
	const struct json *j = x->j;
	int t = json_get(j, 0, "stop_sequences"), n = json_size(j, t);
	char w[64];

	if (canon_rq_want(x, t, "stop_sequences", CANON_LIST) == -1)
		return -1;
	for (int i = 0; i < n; i++) {
		msgs_fmt(w, sizeof w, "stop_sequences.%d", i);
		if (!canon_is_str(j, json_at(j, t, i)))
			return msgs_bad(x, w, CANON_STRING);
	}
	if (n <= 0)
		return 0;
	canon_kraw(jw, "stop", j, t);
	return 0;
}

/* Reasoning effort for a thinking budget (table in messages.h). */
static const char *
msgs_effort(long long budget)
{
	if (budget < 8192)
		return "low";
	if (budget < 24576)
		return "medium";
	return "high";
}

/* The effort asked by thinking or output_config.effort, or NULL. */
static int
msgs_thinking(struct canon_rq *x, const char **effort)
{
	static const char *const efforts[][2] = {{"low", "low"},
	                                         {"medium", "medium"},
	                                         {"high", "high"},
	                                         {"max", "high"}};
	const struct json *j = x->j;
	int th = json_get(j, 0, "thinking"), ty = json_get(j, th, "type");
	int oe = json_path(j, 0, "output_config.effort");
	long long b;

	*effort = NULL;
	if (canon_rq_want(x, th, "thinking", CANON_DICT) == -1)
		return -1;
	if (json_eq(j, ty, "enabled")) {
		if (json_int(j, json_get(j, th, "budget_tokens"), &b) == -1)
			return msgs_bad(x, "thinking.budget_tokens",
			                CANON_REQUIRED);
		*effort = msgs_effort(b);
	} else if (!canon_absent(j, th) && !json_eq(j, ty, "disabled") &&
	           !json_eq(j, ty, "adaptive"))
		return canon_fail(x, NULL,
		                  "thinking.type: Input should be "
		                  "'enabled', 'disabled' or 'adaptive'");
	for (size_t i = 0;
	     *effort == NULL && i < sizeof efforts / sizeof efforts[0]; i++)
		if (json_eq(j, oe, efforts[i][0]))
			*effort = efforts[i][1];
	return 0;
}

/* Write reasoning_effort and response_format (output_config.format). */
static int
msgs_reasoning(struct canon_rq *x, struct jw *jw)
{
	const struct json *j = x->j;
	int f = json_path(j, 0, "output_config.format");
	int sch = json_get(j, f, "schema");
	const char *effort;

	if (msgs_thinking(x, &effort) == -1)
		return -1;
	if (effort) {
		canon_kstr(jw, "reasoning_effort", effort);
	}
	if (json_eq(j, json_get(j, f, "type"), "json_schema") &&
	    json_type(j, sch) == JSMN_OBJECT) {
		canon_open_schema(jw);
		jw_cstr(jw, "output");
		canon_kraw(jw, "schema", j, sch);
		jw_obj_end(jw);
		jw_obj_end(jw);
	}
	return 0;
}

/* Write user (metadata.user_id) and stream with include_usage. */
static int
msgs_user_stream(struct canon_rq *x, struct jw *jw)
{
	const struct json *j = x->j;
	int md = json_get(j, 0, "metadata");

	if (canon_rq_want(x, md, "metadata", CANON_DICT) == -1)
		return -1;
	canon_rq_str(jw, j, json_get(j, md, "user_id"), "user");
	return canon_rq_stream(x, jw);
}

/* Write the body's fields in order; -1 at the first invalid one. */
static int
msgs_body(struct canon_rq *x, struct jw *jw)
{
	static const char *const nums[] = {"temperature", "top_p", "top_k"};
	const struct json *j = x->j;
	int m = json_get(j, 0, "model"), ntools = 0;

	if (m < 0)
		return canon_fail(x, NULL, "model: Field required");
	if (!canon_is_str(j, m) || j->tok[m].end == j->tok[m].start)
		return canon_fail(x, NULL,
		                  "model: Input should be a non-empty "
		                  "string");
	canon_kraw(jw, "model", j, m);
	if (msgs_messages(x, jw) == -1 ||
	    canon_rq_max_tokens(x, jw, "max_tokens", 1) == -1 ||
	    msgs_stop(x, jw) == -1)
		return -1;
	for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++)
		if (canon_rq_number(x, jw, nums[i], nums[i]) == -1)
			return -1;
	if (msgs_tools(x, jw, &ntools) == -1 ||
	    msgs_tool_choice(x, jw, ntools) == -1 ||
	    msgs_reasoning(x, jw) == -1 || msgs_user_stream(x, jw) == -1)
		return -1;
	canon_rq_own(j, jw);
	return 0;
}

/* Messages request -> canonical Chat Completions body; see messages.h. */
int
msgs_to_chat(const struct json *j, struct buf *out, char *err, size_t errsz)
{
	struct canon_rq x = {
	    .j = j, .err = err, .errsz = errsz, .bad = msgs_bad};
	size_t mark = out->len;
	struct jw jw;

	if (errsz)
		err[0] = '\0';
	if (json_type(j, 0) != JSMN_OBJECT) {
		canon_fail(&x, NULL, "request body must be a JSON object");
		return -1;
	}
	jw_init(&jw, out);
	jw_obj(&jw);
	if (msgs_body(&x, &jw) == -1) {
		out->len = mark;
		return -1;
	}
	jw_obj_end(&jw);
	if (out->oom) {
		out->len = mark;
		canon_fail(&x, NULL, "out of memory");
		return -1;
	}
	return 0;
}

/* ---- replies ---- */

/* Anthropic stop_reason for a Chat finish_reason. */
static const char *
msgs_stop_reason(const char *finish, int tools, int refusal)
{
	if (refusal || strcmp(finish, "content_filter") == 0)
		return "refusal";
	if (strcmp(finish, "length") == 0)
		return "max_tokens";
	if (tools || strcmp(finish, "tool_calls") == 0 ||
	    strcmp(finish, "function_call") == 0)
		return "tool_use";
	return "end_turn";
}

/* Write "msg_..." for a Chat id (kept when it already is one). */
static void
msgs_make_id(const struct json *j, int id, char *out, size_t outsz)
{
	char s[96];

	if (json_str(j, id, s, sizeof s) <= 0)
		snprintf(s, sizeof s, "llmfd");
	if (strncmp(s, "msg_", 4) == 0)
		snprintf(out, outsz, "%s", s);
	else
		snprintf(out, outsz, "msg_%s", s);
}

/* Copy s into out keeping only [A-Za-z0-9_-] (Anthropic's id pattern). */
static void
msgs_safe_id(const char *s, size_t n, char *out, size_t outsz)
{
	size_t w = 0;

	for (size_t i = 0; i < n && w + 1 < outsz; i++) {
		unsigned char c = (unsigned char)s[i];
		out[w++] = isalnum(c) || c == '_' || c == '-' ? (char)c : '_';
	}
	out[w] = '\0';
}

/* A tool_use id: the call's id made safe, or one minted from the message
 * id and the block index when it has none. */
static void
msgs_tool_id(const struct json *j, int id, const char *msg_id, int n, char *out,
             size_t outsz)
{
	char s[128];
	int len = json_str(j, id, s, sizeof s);

	if (len > 0 && (size_t)len < sizeof s)
		msgs_safe_id(s, (size_t)len, out, outsz);
	else {
		msgs_safe_id(msg_id, strlen(msg_id), s, sizeof s);
		msgs_fmt(out, outsz, "toolu_%s_%d", s, n);
	}
}

/* Write the usage object (Chat's prompt_tokens include cached ones). */
static void
msgs_usage(struct jw *jw, long long in, long long cached, long long out)
{
	jw_key(jw, "usage");
	jw_obj(jw);
	canon_kint(jw, "input_tokens", in > cached ? in - cached : 0);
	canon_kint(jw, "cache_creation_input_tokens", 0);
	canon_kint(jw, "cache_read_input_tokens", cached);
	canon_kint(jw, "output_tokens", out);
	jw_obj_end(jw);
}

/* The reasoning text token of a message or delta (reasoning_content, else
 * the alias some compatible servers send), or -1 when empty. */
static int
msgs_reasoning_tok(const struct json *j, const struct canon_msg *m)
{
	int t =
	    canon_is_str(j, m->reasoning) ? m->reasoning : m->reasoning_alias;

	return canon_has_text(j, t) ? t : -1;
}

/* Append the text of a message's content (string or text parts) to t. */
static int
msgs_content_text(const struct json *j, int c, struct buf *t)
{
	int n;

	if (canon_absent(j, c))
		return 0;
	if (canon_is_str(j, c))
		return json_str_buf(j, c, t) < 0 ? -1 : 0;
	if (json_type(j, c) != JSMN_ARRAY)
		return -1;
	n = json_size(j, c);
	for (int i = 0; i < n; i++)
		json_str_buf(j, json_get(j, json_at(j, c, i), "text"), t);
	return 0;
}

/* Write tool_calls as tool_use blocks (input: the arguments string as an
 * object); -1 if one has no name. */
static int
msgs_reply_tools(struct jw *jw, const struct json *j, int tcs,
                 const char *msg_id, int first)
{
	int n = json_size(j, tcs);
	struct canon_call c;
	char id[128];

	for (int i = 0; i < n; i++) {
		canon_call_read(j, json_at(j, tcs, i), &c);
		if (!canon_is_str(j, c.name))
			return -1;
		msgs_tool_id(j, c.id, msg_id, first + i, id, sizeof id);
		jw_obj(jw);
		canon_kstr(jw, "type", "tool_use");
		canon_kstr(jw, "id", id);
		canon_kraw(jw, "name", j, c.name);
		jw_key(jw, "input");
		prov_args_object(jw, j, canon_is_str(j, c.args) ? c.args : -1);
		jw_obj_end(jw);
	}
	return 0;
}

/* Write the content blocks of a Chat message; counts blocks in *nb. */
static int
msgs_reply_content(struct jw *jw, const struct json *j,
                   const struct canon_msg *m, const char *msg_id, int *nb,
                   int *refusal)
{
	int r = msgs_reasoning_tok(j, m);
	struct buf t = {0};

	if (r >= 0) {
		json_str_buf(j, r, &t);
		canon_open_typed(jw, "thinking", 0);
		jw_str(jw, t.data, t.len);
		canon_kstr(jw, "signature", "");
		jw_obj_end(jw);
		buf_reset(&t);
		(*nb)++;
	}
	if (msgs_content_text(j, m->content, &t) == -1) {
		buf_free(&t);
		return -1;
	}
	if (canon_has_text(j, m->refusal)) {
		json_str_buf(j, m->refusal, &t);
		*refusal = 1;
	}
	if (t.len) {
		canon_open_typed(jw, "text", 0);
		jw_str(jw, t.data, t.len);
		jw_obj_end(jw);
		(*nb)++;
	}
	buf_free(&t);
	if (json_type(j, m->tool_calls) == JSMN_ARRAY)
		return msgs_reply_tools(jw, j, m->tool_calls, msg_id, *nb);
	return canon_absent(j, m->tool_calls) ? 0 : -1;
}

/* Write the Message for a read chat.completion. */
static int
msgs_reply_write(const struct json *j, const struct canon_reply *r,
                 struct buf *out)
{
	struct canon_usage u = {0};
	char id[128], fin[32] = "stop";
	int nb = 0, refusal = 0;
	struct jw jw;

	msgs_make_id(j, r->id, id, sizeof id);
	json_str(j, r->finish, fin, sizeof fin);
	jw_init(&jw, out);
	jw_obj(&jw);
	canon_kstr(&jw, "id", id);
	canon_kstr(&jw, "type", "message");
	canon_kstr(&jw, "role", "assistant");
	jw_key(&jw, "model");
	if (canon_is_str(j, r->model))
		prov_raw(&jw, j, r->model);
	else
		jw_cstr(&jw, "");
	jw_key(&jw, "content");
	jw_arr(&jw);
	if (msgs_reply_content(&jw, j, &r->msg, id, &nb, &refusal) == -1)
		return -1;
	jw_arr_end(&jw);
	jw_key(&jw, "stop_reason");
	jw_cstr(&jw, msgs_stop_reason(fin, json_size(j, r->msg.tool_calls) > 0,
	                              refusal));
	jw_key(&jw, "stop_sequence");
	jw_null(&jw);
	canon_usage_read(j, r->usage, &u, 0);
	msgs_usage(&jw, u.prompt, u.cached, u.completion);
	jw_obj_end(&jw);
	return 0;
}

/* Canonical chat.completion -> Messages reply; see messages.h. */
int
msgs_reply(const char *chat, size_t n, struct buf *out)
{
	struct json j = {0};
	struct canon_reply r;
	size_t mark = out->len;
	int rc = -1;

	if (canon_reply_read(&j, chat, n, &r) == 0 &&
	    canon_absent(&j, json_get(&j, 0, "error")))
		rc = msgs_reply_write(&j, &r, out);
	if (rc == -1 || out->oom) {
		out->len = mark;
		rc = -1;
	}
	json_free(&j);
	return rc;
}

/* ---- stream ---- */

/* Zero a stream state. */
void
msgs_stream_init(struct msgs_stream *st)
{
	memset(st, 0, sizeof *st);
}

/* Free a stream state's buffers. */
void
msgs_stream_free(struct msgs_stream *st)
{
	json_free(&st->j);
}

/* Write "event: ping". */
void
msgs_ping(struct buf *out)
{
	buf_adds(out, "event: ping\ndata: {\"type\":\"ping\"}\n\n");
}

/* message_start, with the id and model of the first chunk. */
static void
msgs_ev_start(struct msgs_stream *st, struct buf *out)
{
	struct jw jw;

	if (st->id[0] == '\0')
		snprintf(st->id, sizeof st->id, "msg_llmfd");
	canon_ev_open(out, &jw, "message_start");
	jw_key(&jw, "message");
	jw_obj(&jw);
	canon_kstr(&jw, "id", st->id);
	canon_kstr(&jw, "type", "message");
	canon_kstr(&jw, "role", "assistant");
	canon_kstr(&jw, "model", st->model);
	jw_key(&jw, "content");
	PROV_RAW(&jw, "[]");
	jw_key(&jw, "stop_reason");
	jw_null(&jw);
	jw_key(&jw, "stop_sequence");
	jw_null(&jw);
	msgs_usage(&jw, st->input_tokens, st->cached_tokens, 0);
	jw_obj_end(&jw);
	canon_ev_close(&jw);
	st->started = 1;
}

/* Start a content_block_* event for block index (a writer for the rest). */
static void
msgs_ev_block(struct buf *out, struct jw *jw, const char *name, int index)
{
	canon_ev_open(out, jw, name);
	canon_kint(jw, "index", index);
}

/* content_block_stop for the open block, if any. */
static void
msgs_block_close(struct msgs_stream *st, struct buf *out)
{
	struct jw jw;

	if (!st->open)
		return;
	msgs_ev_block(out, &jw, "content_block_stop", st->nblocks - 1);
	canon_ev_close(&jw);
	st->open = 0;
}

/* content_block_start for a block of kind (closing the open one) up to
 * its content_block value, which the caller writes. */
static void
msgs_block_start(struct msgs_stream *st, struct buf *out, struct jw *jw,
                 int kind)
{
	msgs_block_close(st, out);
	msgs_ev_block(out, jw, "content_block_start", st->nblocks++);
	jw_key(jw, "content_block");
	st->open = kind;
}

/* content_block_start for a text or thinking block (closing another). */
static void
msgs_block_open(struct msgs_stream *st, struct buf *out, int kind)
{
	struct jw jw;

	if (st->open == kind)
		return;
	msgs_block_start(st, out, &jw, kind);
	if (kind == MSGS_BLOCK_TEXT)
		PROV_RAW(&jw, "{\"type\":\"text\",\"text\":\"\"}");
	else
		PROV_RAW(&jw, "{\"type\":\"thinking\",\"thinking\":\"\","
		              "\"signature\":\"\"}");
	canon_ev_close(&jw);
}

/* content_block_delta of kind dtype carrying string token s as key. */
static void
msgs_block_delta(struct msgs_stream *st, struct buf *out, const char *dtype,
                 const char *key, const struct json *j, int s)
{
	struct jw jw;

	msgs_ev_block(out, &jw, "content_block_delta", st->nblocks - 1);
	jw_key(&jw, "delta");
	jw_obj(&jw);
	canon_kstr(&jw, "type", dtype);
	canon_kraw(&jw, key, j, s);
	jw_obj_end(&jw);
	canon_ev_close(&jw);
}

/* Open a tool_use block for tool call c (closing the open block). */
static void
msgs_tool_open(struct msgs_stream *st, struct buf *out, const struct json *j,
               const struct canon_call *c, int index)
{
	struct jw jw;

	msgs_block_close(st, out);
	msgs_tool_id(j, c->id, st->id, st->nblocks, st->tool_id,
	             sizeof st->tool_id);
	msgs_block_start(st, out, &jw, MSGS_BLOCK_TOOL);
	jw_obj(&jw);
	canon_kstr(&jw, "type", "tool_use");
	canon_kstr(&jw, "id", st->tool_id);
	jw_key(&jw, "name");
	if (canon_is_str(j, c->name))
		prov_raw(&jw, j, c->name);
	else
		jw_cstr(&jw, "");
	jw_key(&jw, "input");
	PROV_RAW(&jw, "{}");
	jw_obj_end(&jw);
	canon_ev_close(&jw);
	st->tool_index = index;
	st->tool_seen = 1;
}

/* Whether tool call c starts a new block: another index, or the same
 * index with a different id (servers that reuse index 0). */
static int
msgs_tool_is_new(struct msgs_stream *st, const struct json *j,
                 const struct canon_call *c, int index)
{
	char s[128], safe[128];
	int n;

	if (st->open != MSGS_BLOCK_TOOL || st->tool_index != index)
		return 1;
	if ((n = json_str(j, c->id, s, sizeof s)) <= 0 || (size_t)n >= sizeof s)
		return 0;
	msgs_safe_id(s, (size_t)n, safe, sizeof safe);
	return strcmp(safe, st->tool_id) != 0;
}

/* Tool-call deltas: a block per call, arguments as input_json_delta. */
static void
msgs_tool_deltas(struct msgs_stream *st, const struct json *j, int tcs,
                 struct buf *out)
{
	int n = json_type(j, tcs) == JSMN_ARRAY ? json_size(j, tcs) : 0;
	struct canon_call c;
	int index;

	for (int i = 0; i < n; i++) {
		canon_call_read(j, json_at(j, tcs, i), &c);
		index = c.index < 0 || c.index > 1 << 20 ? i : (int)c.index;
		if (msgs_tool_is_new(st, j, &c, index))
			msgs_tool_open(st, out, j, &c, index);
		if (canon_has_text(j, c.args))
			msgs_block_delta(st, out, "input_json_delta",
			                 "partial_json", j, c.args);
	}
}

/* One delta: reasoning, then text (or refusal text), then tool calls. */
static void
msgs_delta(struct msgs_stream *st, const struct json *j, int d, struct buf *out)
{
	struct canon_msg m;
	int r, c;

	if (json_type(j, d) != JSMN_OBJECT)
		return;
	canon_msg_read(j, d, &m);
	if ((r = msgs_reasoning_tok(j, &m)) >= 0) {
		msgs_block_open(st, out, MSGS_BLOCK_THINKING);
		msgs_block_delta(st, out, "thinking_delta", "thinking", j, r);
	}
	c = m.content;
	if (canon_has_text(j, m.refusal)) {
		st->refusal = 1;
		c = m.refusal;
	}
	if (canon_has_text(j, c)) {
		msgs_block_open(st, out, MSGS_BLOCK_TEXT);
		msgs_block_delta(st, out, "text_delta", "text", j, c);
	}
	msgs_tool_deltas(st, j, m.tool_calls, out);
}

/* Whether a choice has a canonical shape (delta object, tool_calls an
 * array of objects, finish_reason string or null). */
static int
msgs_choice_ok(const struct json *j, int c)
{
	int d = json_get(j, c, "delta"), tcs = json_get(j, d, "tool_calls");
	int n = json_size(j, tcs);

	if (json_type(j, c) != JSMN_OBJECT || !canon_opt(j, d, JSMN_OBJECT) ||
	    !canon_opt(j, tcs, JSMN_ARRAY) ||
	    !canon_opt(j, json_get(j, c, "finish_reason"), JSMN_STRING))
		return 0;
	for (int i = 0; i < n; i++)
		if (json_type(j, json_at(j, tcs, i)) != JSMN_OBJECT)
			return 0;
	return 1;
}

/* Whether a read chunk has the whole canonical shape: choices (if any) an
 * array of canonical choices, usage (if any) an object. */
static int
msgs_chunk_ok(const struct json *j, const struct canon_chunk *c)
{
	int n = json_size(j, c->choices);

	if (!canon_opt(j, c->choices, JSMN_ARRAY) ||
	    !canon_opt(j, c->usage, JSMN_OBJECT))
		return 0;
	for (int i = 0; i < n; i++)
		if (!msgs_choice_ok(j, json_at(j, c->choices, i)))
			return 0;
	return 1;
}

/* Take the counts of usage object u into st. */
static void
msgs_take_usage(struct msgs_stream *st, const struct json *j, int u)
{
	struct canon_usage cu = {.prompt = st->input_tokens,
	                         .cached = st->cached_tokens,
	                         .completion = st->output_tokens};

	canon_usage_read(j, u, &cu, 0);
	st->input_tokens = cu.prompt;
	st->cached_tokens = cu.cached;
	st->output_tokens = cu.completion;
}

/* Take id and model from the first chunk; write message_start. */
static void
msgs_chunk_first(struct msgs_stream *st, const struct json *j,
                 const struct canon_chunk *c, struct buf *out)
{
	msgs_make_id(j, c->id, st->id, sizeof st->id);
	if (canon_has_text(j, c->model))
		json_str(j, c->model, st->model, sizeof st->model);
	msgs_take_usage(st, j, c->usage);
	msgs_ev_start(st, out);
}

/* Handle every choice of index 0 in a checked chunk. */
static void
msgs_choices(struct msgs_stream *st, const struct json *j, int ch,
             struct buf *out)
{
	int c, f;

	for (int i = 0; (c = canon_choice_next(j, ch, &i)) >= 0;) {
		msgs_delta(st, j, json_get(j, c, "delta"), out);
		f = json_get(j, c, "finish_reason");
		if (canon_is_str(j, f))
			json_str(j, f, st->finish, sizeof st->finish);
	}
}

/* One canonical chunk -> Messages events; see messages.h. */
int
msgs_stream_chunk(struct msgs_stream *st, const char *data, size_t n,
                  struct buf *out)
{
	const struct json *j = &st->j;
	struct canon_chunk c;

	if (st->ended || canon_chunk_read(&st->j, data, n, &c) == -1 ||
	    !msgs_chunk_ok(j, &c))
		return -1;
	if (!st->started && json_size(j, c.choices) <= 0 &&
	    json_type(j, c.usage) != JSMN_OBJECT)
		return 0; /* e.g. Azure's prompt_filter_results chunk */
	if (!st->started)
		msgs_chunk_first(st, j, &c, out);
	msgs_choices(st, j, c.choices, out);
	msgs_take_usage(st, j, c.usage);
	return out->oom ? -1 : 0;
}

/* The stream completed: close, message_delta, message_stop. */
void
msgs_stream_done(struct msgs_stream *st, struct buf *out)
{
	struct jw jw;

	if (st->ended)
		return;
	if (!st->started)
		msgs_ev_start(st, out);
	msgs_block_close(st, out);
	canon_ev_open(out, &jw, "message_delta");
	jw_key(&jw, "delta");
	jw_obj(&jw);
	canon_kstr(&jw, "stop_reason",
	           msgs_stop_reason(st->finish, st->tool_seen, st->refusal));
	jw_key(&jw, "stop_sequence");
	jw_null(&jw);
	jw_obj_end(&jw);
	msgs_usage(&jw, st->input_tokens, st->cached_tokens, st->output_tokens);
	canon_ev_close(&jw);
	canon_ev_open(out, &jw, "message_stop");
	canon_ev_close(&jw);
	st->ended = 1;
}

/* Anthropic's error type and default message for an HTTP status; the
 * last two entries stand for any other status >= 500, and the rest. */
static const struct msgs_err {
	int status;
	const char *type, *msg;
} msgs_errs[] = {
    {401, "authentication_error", "Authentication failed"},
    {402, "billing_error", "Invalid request"},
    {403, "permission_error", "Permission denied"},
    {404, "not_found_error", "Not found"},
    {408, "timeout_error", "Request timed out"},
    {413, "request_too_large", "Request too large"},
    {429, "rate_limit_error", "Rate limited"},
    {503, "overloaded_error", "Overloaded"},
    {504, "timeout_error", "Request timed out"},
    {529, "overloaded_error", "Overloaded"},
    {500, "api_error", "Internal server error"},
    {400, "invalid_request_error", "Invalid request"},
};

/* The msgs_errs entry for status. */
static const struct msgs_err *
msgs_err(int status)
{
	size_t n = sizeof msgs_errs / sizeof msgs_errs[0];

	for (size_t i = 0; i < n - 2; i++)
		if (msgs_errs[i].status == status)
			return &msgs_errs[i];
	return &msgs_errs[status >= 500 ? n - 2 : n - 1];
}

/* Write the "error":{type,message} member. */
static void
msgs_error_obj(struct jw *jw, int status, const char *msg, size_t n)
{
	jw_key(jw, "error");
	jw_obj(jw);
	canon_kstr(jw, "type", msgs_error_type(status));
	jw_key(jw, "message");
	jw_str(jw, msg, n);
	jw_obj_end(jw);
}

/* The stream failed after bytes reached the client; see messages.h. */
void
msgs_stream_fail(struct msgs_stream *st, int status, const char *msg,
                 struct buf *out)
{
	struct jw jw;

	if (st->ended)
		return;
	if (msg == NULL || msg[0] == '\0')
		msg = msgs_err(status)->msg;
	canon_ev_open(out, &jw, "error");
	msgs_error_obj(&jw, status, msg, strlen(msg));
	canon_ev_close(&jw);
	st->ended = 1;
}

/* ---- errors ---- */

/* Anthropic error.type for an HTTP status. */
const char *
msgs_error_type(int status)
{
	return msgs_err(status)->type;
}

/* The integer starting at s[i] if it stands alone (not part of a word such
 * as "gpt-4o" or "v1.5"); its end in *end. -1 if none. */
static long long
msgs_int_at(const char *s, size_t n, size_t i, size_t *end)
{
	long long v = 0;
	size_t k = i;

	if (i > 0 && (isalpha((unsigned char)s[i - 1]) || s[i - 1] == '-' ||
	              s[i - 1] == '.' || isdigit((unsigned char)s[i - 1])))
		return -1;
	while (k < n && isdigit((unsigned char)s[k]) && v < 1000000000000LL)
		v = v * 10 + (s[k++] - '0');
	if (k == i || (k < n && (isalpha((unsigned char)s[k]) ||
	                         isdigit((unsigned char)s[k]))))
		return -1;
	*end = k;
	return v;
}

/* Case-insensitive search for word in s; offset or -1. */
static long
msgs_find(const char *s, size_t n, const char *word)
{
	size_t wl = strlen(word);

	for (size_t i = 0; i + wl <= n; i++)
		if (strncasecmp(s + i, word, wl) == 0)
			return (long)i;
	return -1;
}

/* The limit M of a context overflow message: the first number within 48
 * bytes after a keyword ("maximum", "context length", ...), else the last
 * one within 24 bytes before it. Its offset in *at. -1 if none. */
static long long
msgs_ctx_max(const char *s, size_t n, size_t *at)
{
	static const char *const kw[] = {"maximum", "context length",
	                                 "context size", "context window",
	                                 "limit"};
	long long v, best;
	size_t e;
	long k;

	for (size_t w = 0; w < sizeof kw / sizeof kw[0]; w++) {
		if ((k = msgs_find(s, n, kw[w])) < 0)
			continue;
		for (size_t i = (size_t)k; i < n && i < (size_t)k + 48; i++)
			if ((v = msgs_int_at(s, n, i, &e)) >= 0) {
				*at = i;
				return v;
			}
		best = -1;
		for (size_t i = (size_t)k > 24 ? (size_t)k - 24 : 0;
		     i < (size_t)k; i++)
			if ((v = msgs_int_at(s, n, i, &e)) >= 0) {
				best = v;
				*at = i;
			}
		if (best >= 0)
			return best;
	}
	return -1;
}

/* Read N (prompt) and M (limit) from an upstream's context overflow
 * message: M from msgs_ctx_max, N the largest other number above M. */
static int
msgs_ctx_numbers(const char *s, long long *np, long long *mp)
{
	size_t n = strlen(s), at = 0, e;
	long long m = msgs_ctx_max(s, n, &at), v, best = -1;

	if (m <= 0)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (i != at && (v = msgs_int_at(s, n, i, &e)) > m && v > best)
			best = v;
	if (best < 0)
		return -1;
	*np = best;
	*mp = m;
	return 0;
}

/* The message of a context overflow, phrased so Claude Code compacts. */
static void
msgs_ctx_message(struct buf *b, const char *msg)
{
	long long n, m;

	if (strncasecmp(msg, "prompt is too long", 18) == 0)
		buf_adds(b, msg);
	else if (msgs_ctx_numbers(msg, &n, &m) == 0)
		buf_printf(b, "prompt is too long: %lld tokens > %lld maximum",
		           n, m);
	else
		buf_printf(b, "prompt is too long: %s", msg);
}

/* Whether t (len bytes) is a JSON array. */
static int
msgs_is_array(const char *t, size_t len)
{
	struct json j = {0};
	int ok = json_parse(&j, t, len) == 0 && json_type(&j, 0) == JSMN_ARRAY;

	json_free(&j);
	return ok;
}

/* Error body in Anthropic's shape; see messages.h. */
void
msgs_error(struct buf *out, int status, const char *code, const char *msg,
           const char *request_id, const char *trail, size_t trail_len)
{
	struct buf m = {0};
	struct jw jw;

	if (msg == NULL || msg[0] == '\0')
		msg = msgs_err(status)->msg;
	if (code && strcmp(code, "context_length_exceeded") == 0)
		msgs_ctx_message(&m, msg);
	else
		buf_adds(&m, msg);
	jw_init(&jw, out);
	jw_obj(&jw);
	canon_kstr(&jw, "type", "error");
	msgs_error_obj(&jw, status, buf_cstr(&m), m.len);
	if (request_id && request_id[0]) {
		canon_kstr(&jw, "request_id", request_id);
	}
	if (trail && trail_len && msgs_is_array(trail, trail_len)) {
		jw_key(&jw, "attempts");
		jw_raw(&jw, trail, trail_len);
	}
	jw_obj_end(&jw);
	buf_free(&m);
}

/* ---- count_tokens ---- */

#define MSGS_TOK_MESSAGE 3
#define MSGS_TOK_IMAGE   1600
#define MSGS_TOK_PDF     2000 /* per started MSGS_PDF_CHUNK bytes */
#define MSGS_PDF_CHUNK   50000
#define MSGS_TOK_TOOLS   346

/* Token estimate state: text bytes and fixed-cost tokens. */
struct msgs_count {
	long long bytes;
	long long tokens;
};

/* Count the decoded length of string token t. */
static void
msgs_count_str(struct msgs_count *c, const struct json *j, int t)
{
	int n = json_str(j, t, NULL, 0);

	if (n > 0)
		c->bytes += n;
}

static void msgs_count_blocks(struct msgs_count *, const struct json *, int c);

/* Count one content block. */
static void
msgs_count_block(struct msgs_count *c, const struct json *j, int b)
{
	int ty = json_get(j, b, "type"), src = json_get(j, b, "source");
	size_t rl = 0;

	if (json_eq(j, ty, "text"))
		msgs_count_str(c, j, json_get(j, b, "text"));
	else if (json_eq(j, ty, "image"))
		c->tokens += MSGS_TOK_IMAGE;
	else if (json_eq(j, ty, "document") &&
	         json_eq(j, json_get(j, src, "type"), "base64")) {
		if (json_raw(j, json_get(j, src, "data"), &rl) == NULL)
			rl = 0;
		c->tokens +=
		    MSGS_TOK_PDF * (long long)(rl * 3 / 4 / MSGS_PDF_CHUNK + 1);
	} else if (json_eq(j, ty, "document")) {
		msgs_count_str(c, j, json_get(j, src, "data"));
		msgs_count_blocks(c, j, json_get(j, src, "content"));
	} else if (json_eq(j, ty, "tool_use")) {
		msgs_count_str(c, j, json_get(j, b, "name"));
		if (json_raw(j, json_get(j, b, "input"), &rl))
			c->bytes += (long long)rl;
	} else if (json_eq(j, ty, "tool_result"))
		msgs_count_blocks(c, j, json_get(j, b, "content"));
}

/* Count a content value: a string or an array of blocks. */
static void
msgs_count_blocks(struct msgs_count *c, const struct json *j, int v)
{
	int n = json_size(j, v);

	if (canon_is_str(j, v))
		msgs_count_str(c, j, v);
	for (int i = 0; i < n && json_type(j, v) == JSMN_ARRAY; i++)
		msgs_count_block(c, j, json_at(j, v, i));
}

/* count_tokens estimate; see messages.h. */
long
msgs_count_tokens(const struct json *j)
{
	struct msgs_count c = {0, 0};
	int ms = json_get(j, 0, "messages"), ts = json_get(j, 0, "tools");
	int n = json_size(j, ms);
	size_t rl;

	if (json_type(j, 0) != JSMN_OBJECT || json_type(j, ms) != JSMN_ARRAY)
		return -1;
	msgs_count_blocks(&c, j, json_get(j, 0, "system"));
	for (int i = 0; i < n; i++) {
		msgs_count_blocks(&c, j,
		                  json_get(j, json_at(j, ms, i), "content"));
		c.tokens += MSGS_TOK_MESSAGE;
	}
	if (json_size(j, ts) > 0) {
		json_raw(j, ts, &rl);
		c.bytes += (long long)rl;
		c.tokens += MSGS_TOK_TOOLS;
	}
	return (long)(c.tokens + (c.bytes + 3) / 4);
}
