/* Provider registry and helpers shared by OpenAI-shaped providers. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "worker/provider.h"

/* The provider for an enum provider_kind. */
const struct provider *
provider_get(int kind)
{
	switch (kind) {
	case PROV_OPENAI:
		return &prov_openai;
	case PROV_AZURE:
		return &prov_azure;
	case PROV_ANTHROPIC:
		return &prov_anthropic;
	case PROV_GEMINI:
		return &prov_gemini;
	default:
		return NULL;
	}
}

/* Free a stream state's buffers. */
void
stream_state_free(struct stream_state *st)
{
	buf_free(&st->partial);
}

/* Append the deployment's extra headers ("Name: value\r\n"). */
void
prov_extra_headers(const struct deploy_cfg *d, struct buf *h)
{
	for (int i = 0; i < d->nheaders; i++)
		buf_printf(h, "%s: %s\r\n", d->headers[i].name,
		           d->headers[i].value);
}

/* Whether key token k of the request is one of llmfd's own fields. */
int
prov_is_dropped(const struct prov_call *pc, int k)
{
	for (int i = 0; pc->drop_keys && pc->drop_keys[i]; i++)
		if (json_eq(pc->req, k, pc->drop_keys[i]))
			return 1;
	return 0;
}

/* Whether a top-level key name is one of llmfd's own fields. */
static int
prov_is_dropped_name(const struct prov_call *pc, const char *key)
{
	for (int i = 0; pc->drop_keys && pc->drop_keys[i]; i++)
		if (strcmp(key, pc->drop_keys[i]) == 0)
			return 1;
	return 0;
}

/* Write messages with the deployment's system_prompt_append folded into
 * the first system message (or a new one in front). */
static void
prov_messages_append(const struct prov_call *pc, struct jw *jw, int arr)
{
	const struct json *j = pc->req;
	const char *app = pc->d->system_prompt_append;
	int n = json_size(j, arr), done = 0;
	size_t rl;
	const char *raw;

	jw_arr(jw);
	for (int i = 0; i < n; i++) {
		int m = json_at(j, arr, i), c = json_get(j, m, "content");

		if (!done && json_eq(j, json_get(j, m, "role"), "system") &&
		    json_type(j, c) == JSMN_STRING) {
			struct buf t = {0};
			json_str_buf(j, c, &t);
			buf_adds(&t, "\n\n");
			buf_adds(&t, app);
			jw_obj(jw);
			jw_key(jw, "role");
			jw_cstr(jw, "system");
			jw_key(jw, "content");
			jw_str(jw, t.data, t.len);
			jw_obj_end(jw);
			buf_free(&t);
			done = 1;
			continue;
		}
		if (!done && i == 0) {
			jw_obj(jw);
			jw_key(jw, "role");
			jw_cstr(jw, "system");
			jw_key(jw, "content");
			jw_cstr(jw, app);
			jw_obj_end(jw);
			done = 1;
		}
		raw = json_raw(j, m, &rl);
		jw_raw(jw, raw, rl);
	}
	jw_arr_end(jw);
}

/* Stream continuation for OpenAI-shaped upstreams: the partial answer goes
 * in as an assistant turn; as a prefill it is the last turn (servers that
 * continue a final assistant message, such as vLLM or llama.cpp), else a
 * user turn asks to continue it exactly (the documented instruction). */
static void
prov_messages_resume(const struct prov_call *pc, struct jw *jw)
{
	jw_obj(jw);
	jw_key(jw, "role");
	jw_cstr(jw, "assistant");
	jw_key(jw, "content");
	jw_str(jw, pc->resume_text, pc->resume_len);
	jw_obj_end(jw);
	if (pc->resume_prefill)
		return;
	jw_obj(jw);
	jw_key(jw, "role");
	jw_cstr(jw, "user");
	jw_key(jw, "content");
	jw_cstr(jw, PROV_RESUME_INSTRUCTION);
	jw_obj_end(jw);
}

/* Write messages, plus the continuation turns when resuming. */
static void
prov_messages(const struct prov_call *pc, struct jw *jw, int arr)
{
	const struct json *j = pc->req;
	int n = json_size(j, arr);
	const char *raw;
	size_t rl;

	jw_arr(jw);
	for (int i = 0; i < n; i++) {
		raw = json_raw(j, json_at(j, arr, i), &rl);
		jw_raw(jw, raw, rl);
	}
	if (pc->resume_text)
		prov_messages_resume(pc, jw);
	jw_arr_end(jw);
}

/* Append the deployment's `params` that the request did not set. */
static void
prov_params(const struct prov_call *pc, struct jw *jw)
{
	static struct json p;
	const char *raw;
	size_t rl;
	char key[128];

	if (pc->d->params == NULL ||
	    json_parse(&p, pc->d->params, strlen(pc->d->params)) == -1 ||
	    json_type(&p, 0) != JSMN_OBJECT)
		return;
	for (int k = 1; k < p.ntok; k = json_next(&p, k + 1)) {
		if (json_str(&p, k, key, sizeof key) < 0)
			break;
		if (json_get(pc->req, 0, key) >= 0)
			continue;
		jw_key(jw, key);
		raw = json_raw(&p, k + 1, &rl);
		jw_raw(jw, raw, rl);
	}
}

/* The client's body, re-emitted for an OpenAI-shaped upstream: llmfd's
 * fields dropped, `model` replaced (unless model is NULL: Azure), params
 * merged, system_prompt_append applied. Values are copied raw. */
void
prov_openai_body(const struct prov_call *pc, const char *model, struct buf *out)
{
	const struct json *j = pc->req;
	struct jw jw;
	const char *raw;
	size_t rl;
	char key[128];

	jw_init(&jw, out);
	jw_obj(&jw);
	for (int k = 1; k < j->ntok; k = json_next(j, k + 1)) {
		if (prov_is_dropped(pc, k))
			continue;
		if (json_eq(j, k, "model")) {
			if (model) {
				jw_key(&jw, "model");
				jw_cstr(&jw, model);
			}
			continue;
		}
		if (json_str(j, k, key, sizeof key) < 0)
			continue;
		jw_key(&jw, key);
		if (pc->d->system_prompt_append && json_eq(j, k, "messages") &&
		    json_type(j, k + 1) == JSMN_ARRAY && !pc->resume_text) {
			prov_messages_append(pc, &jw, k + 1);
			continue;
		}
		if (pc->resume_text && json_eq(j, k, "messages") &&
		    json_type(j, k + 1) == JSMN_ARRAY) {
			prov_messages(pc, &jw, k + 1);
			continue;
		}
		raw = json_raw(j, k + 1, &rl);
		jw_raw(&jw, raw, rl);
	}
	prov_params(pc, &jw);
	jw_obj_end(&jw);
}

/* Fill e for a reply llmfd cannot understand (retryable). */
void
prov_malformed(struct upstream_error *e, const char *what)
{
	memset(e, 0, sizeof *e);
	e->cls = EC_TRANSIENT;
	e->retry_after_ms = -1;
	e->should_retry = -1;
	snprintf(e->message, sizeof e->message, "malformed upstream reply: %s",
	         what);
}

/* Classify an error object that arrived inside a 2xx reply or stream. */
void
prov_stream_error(const char *data, size_t dlen, struct upstream_error *e)
{
	memset(e, 0, sizeof *e);
	e->retry_after_ms = -1;
	e->should_retry = -1;
	classify_http(500, data, dlen, e);
}

/* Parsed deployment params, or NULL. Parsed on each call (they are small
 * and a reload may put new text at the same address). */
static const struct json *
prov_params_json(const struct deploy_cfg *d)
{
	static struct json p;

	if (d->params == NULL ||
	    json_parse(&p, d->params, strlen(d->params)) == -1 ||
	    json_type(&p, 0) != JSMN_OBJECT)
		return NULL;
	return &p;
}

/* The value of key in the request, else in the deployment's params. */
int
prov_opt(const struct prov_call *pc, const char *key, const struct json **src)
{
	const struct json *p;
	int t;

	*src = pc->req;
	if (prov_is_dropped_name(pc, key))
		return -1;
	t = json_get(pc->req, 0, key);
	if (t >= 0) {
		return json_is_null(pc->req, t) ? -1 : t;
	}
	if ((p = prov_params_json(pc->d)) == NULL)
		return -1;
	t = json_get(p, 0, key);
	*src = p;
	return t < 0 || json_is_null(p, t) ? -1 : t;
}

/* Append s percent-encoded for a URL path segment. */
void
prov_urlenc(struct buf *b, const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~')
			buf_addc(b, (char)c);
		else
			buf_printf(b, "%%%02X", c);
	}
}

/* Start a chat.completion.chunk line up to the delta value. */
void
prov_chunk_open(struct stream_state *st, struct buf *out, struct jw *jw,
                int index)
{
	if (st->created == 0)
		st->created = (long long)time(NULL);
	buf_adds(out, "data: ");
	jw_init(jw, out);
	jw_obj(jw);
	jw_key(jw, "id");
	jw_cstr(jw, st->id);
	jw_key(jw, "object");
	jw_cstr(jw, "chat.completion.chunk");
	jw_key(jw, "created");
	jw_int(jw, st->created);
	jw_key(jw, "model");
	jw_cstr(jw, st->model);
	jw_key(jw, "choices");
	jw_arr(jw);
	jw_obj(jw);
	jw_key(jw, "index");
	jw_int(jw, index);
	jw_key(jw, "delta");
}

/* Finish a chunk line begun by prov_chunk_open. */
void
prov_chunk_close(struct jw *jw, const char *finish)
{
	jw_key(jw, "finish_reason");
	jw_cstr(jw, finish);
	jw_obj_end(jw);
	jw_arr_end(jw);
	jw_obj_end(jw);
	buf_adds(jw->b, "\n\n");
}

/* Write "usage":{prompt_tokens,completion_tokens,total_tokens}. */
void
prov_usage(struct jw *jw, const struct usage *u)
{
	jw_key(jw, "usage");
	jw_obj(jw);
	jw_key(jw, "prompt_tokens");
	jw_int(jw, u->prompt_tokens);
	jw_key(jw, "completion_tokens");
	jw_int(jw, u->completion_tokens);
	jw_key(jw, "total_tokens");
	jw_int(jw, u->prompt_tokens + u->completion_tokens);
	jw_obj_end(jw);
}

/* The include_usage chunk: no choices, the totals. */
void
prov_chunk_usage(struct stream_state *st, struct buf *out)
{
	struct jw jw;

	if (st->created == 0)
		st->created = (long long)time(NULL);
	buf_adds(out, "data: ");
	jw_init(&jw, out);
	jw_obj(&jw);
	jw_key(&jw, "id");
	jw_cstr(&jw, st->id);
	jw_key(&jw, "object");
	jw_cstr(&jw, "chat.completion.chunk");
	jw_key(&jw, "created");
	jw_int(&jw, st->created);
	jw_key(&jw, "model");
	jw_cstr(&jw, st->model);
	jw_key(&jw, "choices");
	jw_arr(&jw);
	jw_arr_end(&jw);
	prov_usage(&jw, &st->usage);
	jw_obj_end(&jw);
	buf_adds(out, "\n\n");
}

/* Emit a content delta of n bytes of text and note it. */
void
prov_chunk_text(struct stream_state *st, struct buf *out, const char *s,
                size_t n)
{
	struct jw jw;

	prov_chunk_open(st, out, &jw, 0);
	jw_obj(&jw);
	jw_key(&jw, "content");
	jw_str(&jw, s, n);
	jw_obj_end(&jw);
	prov_chunk_close(&jw, NULL);
	st->content_seen = 1;
	if (st->text)
		buf_add(st->text, s, n);
}

/* Start an empty list of turns. */
void
prov_turns_begin(struct prov_turns *t, struct buf *out, const char *partkey)
{
	memset(t, 0, sizeof *t);
	t->out = out;
	t->partkey = partkey;
	buf_addc(out, '[');
}

/* Add the elements of array text arr as (part of) a turn of role. */
void
prov_turns_add(struct prov_turns *t, const char *role, const char *arr,
               size_t n)
{
	if (n <= 2)
		return;
	if (t->open && strcmp(t->role, role) == 0) {
		buf_addc(t->out, ',');
	} else {
		if (t->open)
			buf_adds(t->out, "]},");
		buf_printf(t->out, "{\"role\":\"%s\",\"%s\":[", role,
		           t->partkey);
		snprintf(t->role, sizeof t->role, "%s", role);
		t->open = 1;
	}
	buf_add(t->out, arr + 1, n - 2);
}

/* Close the list of turns. */
void
prov_turns_end(struct prov_turns *t)
{
	buf_adds(t->out, t->open ? "]}]" : "]");
}

/* The URL of an OpenAI image_url part; see provider.h. */
int
prov_image_url(const struct json *j, int part, struct buf *out)
{
	int u = json_get(j, part, "image_url");

	if (json_type(j, u) == JSMN_OBJECT)
		u = json_get(j, u, "url");
	return json_str_buf(j, u, out) <= 0 ? -1 : 0;
}

/* Split a base64 data: URL into media type and payload. */
int
prov_data_url(const char *url, size_t n, const char **media, size_t *mlen,
              const char **data, size_t *dlen)
{
	const char *semi, *comma;

	if (n < 5 || memcmp(url, "data:", 5) != 0)
		return -1;
	if ((comma = memchr(url, ',', n)) == NULL ||
	    (semi = memchr(url, ';', (size_t)(comma - url))) == NULL)
		return -1;
	if ((size_t)(comma - semi) != 7 || memcmp(semi, ";base64", 7) != 0)
		return -1;
	*media = url + 5;
	*mlen = (size_t)(semi - url - 5);
	*data = comma + 1;
	*dlen = n - (size_t)(comma + 1 - url);
	return *mlen ? 0 : -1;
}
