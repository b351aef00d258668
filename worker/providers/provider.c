/* Provider registry and the helpers every provider shares: building OpenAI
 * bodies, translating messages for providers with their own format
 * (anthropic.c, gemini.c), and writing OpenAI replies and chunks. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
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
	case PROV_BEDROCK:
		return &prov_bedrock;
	case PROV_VERTEX:
		return &prov_vertex;
	default:
		return NULL;
	}
}

/* The wire formats p takes natively for d. */
unsigned
provider_formats(const struct provider *p, const struct deploy_cfg *d)
{
	return p->formats_of ? p->formats_of(d) : p->formats;
}

/* Whether p counts tokens of a native fmt body for d. */
int
provider_counts(const struct provider *p, const struct deploy_cfg *d, int fmt)
{
	return fmt >= 0 && (provider_formats(p, d) & p->counts & PROV_FMT(fmt));
}

/* Free a stream state's buffers. */
void
stream_state_free(struct stream_state *st)
{
	buf_free(&st->partial);
}

/* Append s as a JSON string. */
static void
prov_quote(struct buf *b, const char *s, size_t n)
{
	buf_addc(b, '"');
	json_escape(b, s, n);
	buf_addc(b, '"');
}

/* Whether key token k of j is named in drop (NULL-terminated, or NULL). */
static int
prov_in(const struct json *j, int k, const char *const *drop)
{
	/* a key can match only a name it starts like (or if escaped) */
	char c = k > 0 && k < j->ntok ? j->js[j->tok[k].start] : '\\';

	for (int i = 0; drop && drop[i]; i++)
		if ((c == drop[i][0] || c == '\\') && json_eq(j, k, drop[i]))
			return 1;
	return 0;
}

/* Whether [p, p + len) lies in the text pc holds. */
static int
prov_held(const struct prov_call *pc, const char *p, size_t len)
{
	return pc && pc->held && p >= pc->held &&
	       (size_t)(p - pc->held) + len <= pc->held_len;
}

/* Place the client text put so far: a long held run as a span (after one
 * for the text written since the last span), anything else copied. */
void
prov_place(const struct prov_call *pc, struct prov_out *o)
{
	const char *p = o->run;
	size_t n = o->runlen;

	o->run = NULL;
	o->runlen = 0;
	if (n == 0)
		return;
	/* room for a copy span before it and the last one after it */
	if (n < PROV_REF_MIN || !prov_held(pc, p, n) ||
	    o->nspan + 3 > PROV_MAX_SPANS) {
		buf_add(&o->body, p, n);
		return;
	}
	if (o->body.len > o->placed)
		o->span[o->nspan++] = (struct prov_span){
		    NULL, o->placed, o->body.len - o->placed};
	o->span[o->nspan++] = (struct prov_span){p, 0, n};
	o->placed = o->body.len;
}

/* Append client text; see provider.h. */
void
prov_put(const struct prov_call *pc, struct prov_out *o, const char *p,
         size_t len)
{
	if (o->run && o->run + o->runlen == p) {
		o->runlen += len;
		return;
	}
	prov_place(pc, o);
	o->run = p;
	o->runlen = len;
}

/* Finish a body built with prov_put. */
void
prov_put_end(const struct prov_call *pc, struct prov_out *o)
{
	prov_place(pc, o);
	if (o->nspan > 0 && o->body.len > o->placed)
		o->span[o->nspan++] = (struct prov_span){
		    NULL, o->placed, o->body.len - o->placed};
	o->placed = o->body.len;
}

/* Copy the spans into one body. */
void
prov_flatten(struct prov_out *o)
{
	struct buf b = {0};
	const struct prov_span *sp;

	if (o->nspan == 0)
		return;
	for (int i = 0; i < o->nspan; i++) {
		sp = &o->span[i];
		buf_add(&b, sp->ref ? sp->ref : o->body.data + sp->off,
		        sp->len);
	}
	b.oom |= o->body.oom;
	buf_free(&o->body);
	o->body = b;
	o->nspan = 0;
	o->placed = b.len;
}

/* Put the text between two members, [p, end), with its comma (if any)
 * removed when first is set, or put in when missing and first is not. */
static void
prov_gap(const struct prov_call *pc, struct prov_out *o, const char *p,
         const char *end, int first)
{
	const char *c = memchr(p, ',', (size_t)(end - p));

	if (c && first) {
		prov_put(pc, o, p, (size_t)(c - p));
		prov_put(pc, o, c + 1, (size_t)(end - c - 1));
		return;
	}
	if (!c && !first) {
		prov_place(pc, o);
		buf_addc(&o->body, ',');
	}
	prov_put(pc, o, p, (size_t)(end - p));
}

/* Write the string val as a JSON string, after the text put so far. */
static void
prov_put_quoted(const struct prov_call *pc, struct prov_out *o, const char *val)
{
	prov_place(pc, o);
	prov_quote(&o->body, val, strlen(val));
}

/* Copy an object member by member: each kept member goes out with the
 * text before it, so every byte but the replaced value is the client's. */
void
prov_obj_put(const struct prov_call *pc, const struct json *j,
             const struct prov_edit *e, struct prov_out *o)
{
	const char *at = j->js + j->tok[0].start + 1, *kr, *vr;
	size_t kl, vl;
	int first = 1, seen = 0;

	o->run = NULL;
	o->runlen = 0;
	if (o->nspan == 0) /* a first span covers what body holds */
		o->placed = 0;
	seen = e->val && json_get(j, 0, e->key) >= 0;
	buf_addc(&o->body, '{');
	if (!seen && e->val) {
		prov_put_quoted(pc, o, e->key);
		buf_addc(&o->body, ':');
		prov_put_quoted(pc, o, e->val);
		first = 0;
	}
	for (int k = 1; k < j->ntok; k = json_next(j, k + 1)) {
		kr = json_raw(j, k, &kl);
		vr = json_raw(j, k + 1, &vl);
		if (!prov_in(j, k, e->drop)) {
			prov_gap(pc, o, at, kr, first);
			prov_put(pc, o, kr, (size_t)(vr - kr));
			if (e->val && json_eq(j, k, e->key))
				prov_put_quoted(pc, o, e->val);
			else
				prov_put(pc, o, vr, vl);
			first = 0;
		}
		at = vr + vl;
	}
	if (e->extra && e->elen) {
		prov_place(pc, o);
		if (!first)
			buf_addc(&o->body, ',');
		buf_add(&o->body, e->extra, e->elen);
	}
	prov_put(pc, o, at, (size_t)(j->js + j->tok[0].end - at));
	prov_put_end(pc, o);
}

/* The client's object with key's value replaced and drop left out. */
void
prov_copy_obj(const struct json *j, const char *key, const char *val,
              const char *const *drop, struct buf *out)
{
	struct prov_out o = {.body = *out};

	prov_obj_put(NULL, j, &(struct prov_edit){key, val, drop, NULL, 0}, &o);
	*out = o.body;
}

/* Forward the client's header lines that start with prefix. */
int
prov_fwd_headers(const struct prov_call *pc, const char *prefix,
                 const char *name, struct buf *out)
{
	const char *p = pc->fwd_headers, *eol, *colon;
	size_t pl = strlen(prefix), nl = strlen(name);
	int found = 0;

	for (; p && (eol = strstr(p, "\r\n")) != NULL; p = eol + 2) {
		colon = memchr(p, ':', (size_t)(eol - p));
		if (colon == NULL || (size_t)(colon - p) < pl ||
		    strncasecmp(p, prefix, pl) != 0 ||
		    memchr(p, '\n', (size_t)(eol - p)) != NULL ||
		    memchr(p, '\r', (size_t)(eol - p)) != NULL)
			continue;
		found |=
		    (size_t)(colon - p) == nl && strncasecmp(p, name, nl) == 0;
		buf_add(out, p, (size_t)(eol + 2 - p));
	}
	return found;
}

/* Append an event as "event: NAME\n", a "data: " line per data line, and
 * the blank line that ends it. */
static void
prov_sse_copy(struct buf *out, const char *ev, size_t elen, const char *data,
              size_t dlen)
{
	const char *nl;

	if (elen) {
		buf_adds(out, "event: ");
		buf_add(out, ev, elen);
		buf_addc(out, '\n');
	}
	do {
		nl = memchr(data, '\n', dlen);
		buf_adds(out, "data: ");
		buf_add(out, data, nl ? (size_t)(nl - data) : dlen);
		buf_addc(out, '\n');
		if (nl) {
			dlen -= (size_t)(nl + 1 - data);
			data = nl + 1;
		}
	} while (nl);
	buf_addc(out, '\n');
}

/* Parse, note and pass on a native event; see provider.h. */
int
prov_native_event(struct stream_state *st, const char *ev, size_t elen,
                  const char *data, size_t dlen, prov_note_fn *note,
                  struct buf *out, struct upstream_error *e)
{
	static struct json j;
	int rc;

	if (prov_json_obj(&j, data, dlen, "stream event is not a JSON object",
	                  e) == -1)
		return -1;
	if ((rc = note(st, &j, ev, elen, e)) != -1)
		prov_sse_copy(out, ev, elen, data, dlen);
	return rc;
}

/* Pick, note and pass on a native event of the frequent type, parse
 * others whole; see provider.h. */
int
prov_native_fast(struct stream_state *st, const char *ev, size_t elen,
                 const char *data, size_t dlen, const struct json_sel *sel,
                 const char *fast_type, prov_fast_fn *fast, prov_note_fn *note,
                 struct buf *out, struct upstream_error *e)
{
	static struct json j;
	size_t n = strlen(fast_type);
	int t, rc;

	if (json_pick(&j, data, dlen, sel) == -1 ||
	    json_type(&j, 0) != JSMN_OBJECT)
		return prov_malformed(e, "stream event is not a JSON object");
	t = json_picked(&j, 0);
	if (!(t >= 0 ? json_eq(&j, t, fast_type)
	             : elen == n && memcmp(ev, fast_type, n) == 0) ||
	    (rc = fast(st, &j, e)) == 2)
		return prov_native_event(st, ev, elen, data, dlen, note, out,
		                         e);
	if (rc != -1)
		prov_sse_copy(out, ev, elen, data, dlen);
	return rc;
}

/* Which of names an event is; see provider.h. */
int
prov_event_index(const struct json *j, const char *ev, size_t elen,
                 const char *const *names)
{
	int t = json_get(j, 0, "type");

	for (int i = 0; names[i]; i++)
		if (t >= 0 ? json_eq(j, t, names[i])
		           : strlen(names[i]) == elen &&
		                 memcmp(names[i], ev, elen) == 0)
			return i;
	return -1;
}

/* Append the deployment's extra headers ("Name: value\r\n"). */
void
prov_extra_headers(const struct deploy_cfg *d, struct buf *h)
{
	for (int i = 0; i < d->nheaders; i++)
		buf_printf(h, "%s: %s\r\n", d->headers[i].name,
		           d->headers[i].value);
}

/* The i-th request field deployment d never gets (drop_params), or NULL
 * past the last. Unset, azure and
 * api.openai.com leave out top_k, which they refuse (INGRESS.md §3). */
const char *
prov_drop_param(const struct deploy_cfg *d, int i)
{
	if (d->ndrop_params >= 0)
		return i < d->ndrop_params ? d->drop_params[i] : NULL;
	if (i == 0 && (d->provider == PROV_AZURE ||
	               (d->provider == PROV_OPENAI &&
	                strcmp(d->host, "api.openai.com") == 0)))
		return "top_k";
	return NULL;
}

/* Whether key token k of the request is one of llmfd's own fields. */
static int
prov_is_dropped(const struct prov_call *pc, int k)
{
	const char *name;

	for (int i = 0; pc->drop_keys && pc->drop_keys[i]; i++)
		if (json_eq(pc->req, k, pc->drop_keys[i]))
			return 1;
	for (int i = 0; (name = prov_drop_param(pc->d, i)) != NULL; i++)
		if (json_eq(pc->req, k, name))
			return 1;
	return 0;
}

/* Whether a top-level key name is one of llmfd's own fields. */
static int
prov_is_dropped_name(const struct prov_call *pc, const char *key)
{
	const char *name;

	for (int i = 0; pc->drop_keys && pc->drop_keys[i]; i++)
		if (strcmp(key, pc->drop_keys[i]) == 0)
			return 1;
	for (int i = 0; (name = prov_drop_param(pc->d, i)) != NULL; i++)
		if (strcmp(key, name) == 0)
			return 1;
	return 0;
}

/* Write one chat message {"role":role,"content":s}. */
static void
prov_chat_msg(struct jw *jw, const char *role, const char *s, size_t n)
{
	jw_obj(jw);
	jw_key(jw, "role");
	jw_cstr(jw, role);
	jw_key(jw, "content");
	jw_str(jw, s, n);
	jw_obj_end(jw);
}

/* Write messages with the deployment's system_prompt_append folded into
 * the first system message (or a new one in front). */
static void
prov_messages_append(const struct prov_call *pc, struct jw *jw, int arr)
{
	const struct json *j = pc->req;
	const char *app = pc->d->system_prompt_append;
	int n = json_size(j, arr), done = 0;

	jw_arr(jw);
	for (int i = 0; i < n; i++) {
		int m = json_at(j, arr, i), c = json_get(j, m, "content");

		if (!done && json_eq(j, json_get(j, m, "role"), "system") &&
		    json_type(j, c) == JSMN_STRING) {
			struct buf t = {0};
			json_str_buf(j, c, &t);
			buf_adds(&t, "\n\n");
			buf_adds(&t, app);
			prov_chat_msg(jw, "system", t.data, t.len);
			buf_free(&t);
			done = 1;
			continue;
		}
		if (!done && i == 0) {
			prov_chat_msg(jw, "system", app, strlen(app));
			done = 1;
		}
		prov_raw(jw, j, m);
	}
	jw_arr_end(jw);
}

/* Write messages plus the continuation turns: the partial answer as an
 * assistant turn; as a prefill it is the last turn (servers that continue
 * a final assistant message, such as vLLM or llama.cpp), else a user turn
 * asks to continue it exactly. */
static void
prov_messages(const struct prov_call *pc, struct jw *jw, int arr)
{
	const struct json *j = pc->req;
	int n = json_size(j, arr);

	jw_arr(jw);
	for (int i = 0; i < n; i++)
		prov_raw(jw, j, json_at(j, arr, i));
	prov_chat_msg(jw, "assistant", pc->resume_text, pc->resume_len);
	if (!pc->resume_prefill)
		prov_chat_msg(jw, "user", PROV_RESUME_INSTRUCTION,
		              strlen(PROV_RESUME_INSTRUCTION));
	jw_arr_end(jw);
}

static const struct json *prov_params_json(const struct deploy_cfg *);

/* Append the deployment's `params` that the request did not set. */
static void
prov_params(const struct prov_call *pc, struct jw *jw)
{
	const struct json *p = prov_params_json(pc->d);
	char key[128];

	for (int k = 1; p && k < p->ntok; k = json_next(p, k + 1)) {
		if (json_str(p, k, key, sizeof key) < 0)
			break;
		if (json_get(pc->req, 0, key) >= 0)
			continue;
		jw_key(jw, key);
		prov_raw(jw, p, k + 1);
	}
}

/* The client's body, re-emitted for an OpenAI-shaped upstream, when its
 * messages change (system_prompt_append, a continuation): llmfd's fields
 * dropped, `model` replaced (unless model is NULL: Azure), params merged.
 * Values are copied raw. */
static void
prov_openai_rebuild(const struct prov_call *pc, const char *model,
                    struct buf *out)
{
	const struct json *j = pc->req;
	struct jw jw;
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
		if (json_str(j, k, key, sizeof key) < 0 ||
		    (prov_ask_usage(pc) && json_eq(j, k, "stream_options")))
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
		prov_raw(&jw, j, k + 1);
	}
	prov_params(pc, &jw);
	if (prov_ask_usage(pc)) {
		jw_key(&jw, "stream_options");
		PROV_RAW(&jw, "{\"include_usage\":true}");
	}
	jw_obj_end(&jw);
}

/* Whether the body needs no more than the top level of the request. */
int
prov_openai_top_only(const struct prov_call *pc)
{
	return pc->native == NULL && pc->d->system_prompt_append == NULL &&
	       pc->resume_text == NULL;
}

/* The client's body for an OpenAI-shaped upstream; see provider.h. Unless
 * its messages change, every byte but `model`'s value is the client's
 * (llmfd's fields left out, params appended), by reference where it can
 * be. */
void
prov_openai_body(const struct prov_call *pc, const char *model,
                 struct prov_out *o)
{
	static struct buf params; /* reused: no allocation per request */
	const char *drop[32], *name;
	struct jw jw;
	int n = 0;

	if (!prov_openai_top_only(pc)) {
		prov_openai_rebuild(pc, model, &o->body);
		return;
	}
	for (; pc->drop_keys && pc->drop_keys[n] && n < 29; n++)
		drop[n] = pc->drop_keys[n];
	for (int i = 0; n < 29 && (name = prov_drop_param(pc->d, i)); i++)
		drop[n++] = name;
	if (model == NULL)
		drop[n++] = "model";
	if (prov_ask_usage(pc)) /* replaced by one that asks for usage */
		drop[n++] = "stream_options";
	drop[n] = NULL;
	jw_init(&jw, &params);
	jw_obj(&jw);
	prov_params(pc, &jw);
	if (prov_ask_usage(pc)) {
		jw_key(&jw, "stream_options");
		PROV_RAW(&jw, "{\"include_usage\":true}");
	}
	jw_obj_end(&jw);
	prov_obj_put(
	    pc, pc->req,
	    &(struct prov_edit){"model", model, drop,
	                        params.len > 2 ? params.data + 1 : NULL,
	                        params.len > 2 ? params.len - 2 : 0},
	    o);
	if (params.cap > 4096)
		buf_free(&params);
	buf_reset(&params);
}

/* Whether a chat stream must ask the upstream for usage the client did
 * not ask for: every answer is priced (issue 17), and OpenAI-shaped
 * servers report a stream's usage only when asked. The usage chunk is
 * then kept from the client (openai_stream_event). */
int
prov_ask_usage(const struct prov_call *pc)
{
	return pc->stream && !pc->include_usage && pc->endpoint == EP_CHAT;
}

/* Fill e for a reply llmfd cannot understand (retryable); -1. */
int
prov_malformed(struct upstream_error *e, const char *what)
{
	memset(e, 0, sizeof *e);
	e->cls = EC_TRANSIENT;
	e->retry_after_ms = -1;
	e->should_retry = -1;
	snprintf(e->message, sizeof e->message, "malformed upstream reply: %s",
	         what);
	return -1;
}

/* Classify an error body as if it came with HTTP status. */
void
prov_error(int status, const char *body, size_t len, struct upstream_error *e)
{
	memset(e, 0, sizeof *e);
	e->retry_after_ms = -1;
	e->should_retry = -1;
	classify_http(status, body, len, e);
}

/* Classify an error object that arrived inside a 2xx reply or stream. */
void
prov_stream_error(const char *data, size_t dlen, struct upstream_error *e)
{
	prov_error(500, data, dlen, e);
}

/* Parse s into j, which must hold an object; else -1, malformed. */
int
prov_json_obj(struct json *j, const char *s, size_t n, const char *what,
              struct upstream_error *e)
{
	if (json_parse(j, s, n) == -1 || json_type(j, 0) != JSMN_OBJECT)
		return prov_malformed(e, what);
	return 0;
}

/* Parse an object reply; -1 classified when it carries an error. */
int
prov_json_reply(struct json *j, const char *s, size_t n, const char *what,
                struct upstream_error *e)
{
	int t;

	if (prov_json_obj(j, s, n, what, e) == -1)
		return -1;
	if ((t = json_get(j, 0, "error")) >= 0 && !json_is_null(j, t)) {
		prov_stream_error(s, n, e);
		return -1;
	}
	return 0;
}

/* Parse, check and write a whole reply; see provider.h. */
int
prov_reply(const struct prov_call *pc, const char *body, size_t len,
           prov_reply_fn *fn, struct buf *out, struct usage *u, int *cf,
           struct upstream_error *e)
{
	static struct json j;
	size_t mark = out->len;

	if (prov_json_reply(&j, body, len, "not a JSON object", e) == -1)
		return -1;
	if (json_eq(&j, json_get(&j, 0, "type"), "error")) {
		prov_stream_error(body, len, e);
		return -1;
	}
	if (fn(pc, &j, out, u, cf, e) == -1) {
		out->len = mark;
		return -1;
	}
	return 0;
}

/* Write the raw text of token t, or null. */
void
prov_raw(struct jw *jw, const struct json *j, int t)
{
	const char *raw;
	size_t rl;

	if ((raw = json_raw(j, t, &rl)) != NULL)
		jw_raw(jw, raw, rl);
	else
		jw_null(jw);
}

/* Write JSON text as a value: see provider.h. */
void
prov_json_text(struct jw *jw, const char *s, size_t n, int any)
{
	static struct json aj;

	if (n && json_parse(&aj, s, n) == 0 &&
	    (any || json_type(&aj, 0) == JSMN_OBJECT))
		prov_raw(jw, &aj, 0);
	else if (any)
		jw_str(jw, s, n);
	else {
		jw_obj(jw);
		jw_obj_end(jw);
	}
}

/* Write tool-call arguments as an object ({} when not one). */
void
prov_args_object(struct jw *jw, const struct json *j, int a)
{
	struct buf t = {0};

	if (json_type(j, a) == JSMN_OBJECT)
		prov_raw(jw, j, a);
	else if (json_str_buf(j, a, &t) > 0)
		prov_json_text(jw, t.data, t.len, 0);
	else
		prov_json_text(jw, "", 0, 0);
	buf_free(&t);
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

/* Write a number option, clamped to [lo, hi], under name. */
void
prov_num(const struct prov_call *pc, struct jw *jw, const char *key,
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

/* Write stop (string or array of strings) as the array name. */
void
prov_stop(const struct prov_call *pc, struct jw *jw, const char *name)
{
	const struct json *s;
	int t = prov_opt(pc, "stop", &s), one = json_type(s, t) == JSMN_STRING;
	int n = one ? 1 : json_size(s, t), e;

	if (!one && json_type(s, t) != JSMN_ARRAY)
		return;
	jw_key(jw, name);
	jw_arr(jw);
	for (int i = 0; i < n; i++) {
		e = one ? t : json_at(s, t, i);
		if (json_type(s, e) == JSMN_STRING)
			prov_raw(jw, s, e);
	}
	jw_arr_end(jw);
}

/* The requested output token limit, else the deployment's, else 0. */
long long
prov_max_tokens(const struct prov_call *pc)
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
	return pc->d->max_tokens > 0 ? pc->d->max_tokens : 0;
}

/* Whether a model thinks when asked (THINK_CLAUDE: extended thinking,
 * from Claude 3.7 on; THINK_GEMINI: thinkingConfig, from Gemini 2.5 on),
 * known by the names of the models before. */
static int
prov_model_thinks(const char *m, int family)
{
	static const char *const before[2][6] = {
	    {"claude-2", "claude-instant", "claude-3-haiku", "claude-3-sonnet",
	     "claude-3-opus", "claude-3-5"},
	    {"gemini-1", "gemini-2.0", "gemini-pro", "gemma", NULL, NULL}};

	if (strstr(m, family == THINK_CLAUDE ? "claude" : "gemini") == NULL)
		return 0;
	for (int i = 0; i < 6 && before[family][i]; i++)
		if (strstr(m, before[family][i]) != NULL)
			return 0;
	return 1;
}

/* See provider.h. */
long long
prov_thinking_budget(const struct prov_call *pc, int family)
{
	static const long long dflt[2][3] = {{1024, 4096, 16384},
	                                     {1024, 8192, 24576}};
	static const char *const levels[] = {"low", "medium", "high", "xhigh"};
	const struct deploy_cfg *d = pc->d;
	const struct json *s;
	int t = prov_opt(pc, "reasoning_effort", &s), lvl = -1;

	for (int i = 0; lvl < 0 && i < 4; i++)
		if (json_eq(s, t, levels[i]))
			lvl = i < 3 ? i : 2;
	if (lvl < 0)
		return 0; /* none, minimal, or not asked */
	if (d->nthink >= 0)
		return d->nthink == 3 ? d->think_budget[lvl] : 0;
	return prov_model_thinks(prov_model(pc), family) ? dflt[family][lvl]
	                                                 : 0;
}

/* Write OpenAI function tools as {name, description, <params_key>}. */
void
prov_tools(struct jw *jw, const struct json *j, int tools,
           const char *params_key, const char *dflt)
{
	int n = json_size(j, tools), f, v;

	jw_arr(jw);
	for (int i = 0; i < n; i++) {
		f = json_get(j, json_at(j, tools, i), "function");
		if (json_type(j, json_get(j, f, "name")) != JSMN_STRING)
			continue;
		jw_obj(jw);
		jw_key(jw, "name");
		prov_raw(jw, j, json_get(j, f, "name"));
		if (json_type(j, v = json_get(j, f, "description")) ==
		    JSMN_STRING) {
			jw_key(jw, "description");
			prov_raw(jw, j, v);
		}
		v = json_get(j, f, "parameters");
		if (json_type(j, v) == JSMN_OBJECT || dflt) {
			jw_key(jw, params_key);
			if (json_type(j, v) == JSMN_OBJECT)
				prov_raw(jw, j, v);
			else
				jw_raw(jw, dflt, strlen(dflt));
		}
		jw_obj_end(jw);
	}
	jw_arr_end(jw);
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

/* Start a chat.completion.chunk line up to the "choices" key. */
static void
prov_chunk_head(struct stream_state *st, struct buf *out, struct jw *jw)
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
}

/* Start a chat.completion.chunk line up to the delta value. */
void
prov_chunk_open(struct stream_state *st, struct buf *out, struct jw *jw,
                int index)
{
	prov_chunk_head(st, out, jw);
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
	if (u->cached_tokens > 0) {
		jw_key(jw, "prompt_tokens_details");
		jw_obj(jw);
		jw_key(jw, "cached_tokens");
		jw_int(jw, u->cached_tokens);
		jw_obj_end(jw);
	}
	jw_obj_end(jw);
}

/* The include_usage chunk: no choices, the totals. */
void
prov_chunk_usage(struct stream_state *st, struct buf *out)
{
	struct jw jw;

	prov_chunk_head(st, out, &jw);
	jw_arr(&jw);
	jw_arr_end(&jw);
	prov_usage(&jw, &st->usage);
	jw_obj_end(&jw);
	buf_adds(out, "\n\n");
}

/* Emit a content delta of n bytes of text and note it. */
static void
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

/* The URL of an OpenAI image_url part; see provider.h. */
static int
prov_image_url(const struct json *j, int part, struct buf *out)
{
	int u = json_get(j, part, "image_url");

	if (json_type(j, u) == JSMN_OBJECT)
		u = json_get(j, u, "url");
	return json_str_buf(j, u, out) <= 0 ? -1 : 0;
}

/* Split a base64 data: URL into media type and payload. */
static int
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

/* Turn writer for role-alternating message lists: consecutive blocks of
 * the same role are merged into one turn. */
struct prov_turns {
	struct buf *out;
	const char *partkey;
	char role[16];
	int open;
};

/* Start an empty list of turns. */
static void
prov_turns_begin(struct prov_turns *t, struct buf *out, const char *partkey)
{
	memset(t, 0, sizeof *t);
	t->out = out;
	t->partkey = partkey;
	buf_addc(out, '[');
}

/* Add the elements of array text arr as (part of) a turn of role. */
static void
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
static void
prov_turns_end(struct prov_turns *t)
{
	buf_adds(t->out, t->open ? "]}]" : "]");
}

/* Record why the request cannot be sent; always -1. */
int
prov_fail(struct prov_xlate *x, const char *what)
{
	snprintf(x->err, x->errsz, "%s: %s", x->dl->name, what);
	return -1;
}

/* Append text to the lifted system prompt. */
void
prov_sys_add(struct prov_xlate *x, const char *s, size_t n)
{
	if (n == 0)
		return;
	if (x->sys.len)
		buf_adds(&x->sys, "\n\n");
	buf_add(&x->sys, s, n);
}

/* Append the text of a content (string or text parts) to t. */
int
prov_text_of(const struct json *j, int c, struct buf *t)
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

/* Lift a system/developer message's text into x->sys. */
static int
prov_sys_msg(struct prov_xlate *x, int c)
{
	struct buf t = {0};
	int rc = prov_text_of(x->j, c, &t);

	if (rc == -1)
		prov_fail(x, "system message content must be text");
	else
		prov_sys_add(x, t.data, t.len);
	buf_free(&t);
	return rc;
}

/* Write a text part of n bytes of text. */
static void
prov_text_obj(struct prov_xlate *x, struct jw *jw, const char *s, size_t n)
{
	jw_obj(jw);
	if (x->dl->text_type) {
		jw_key(jw, "type");
		jw_cstr(jw, x->dl->text_type);
	}
	jw_key(jw, "text");
	jw_str(jw, s, n);
	jw_obj_end(jw);
}

/* Write a text part from string token s, unless the text is empty. */
static void
prov_text_part(struct prov_xlate *x, struct jw *jw, int s)
{
	struct buf t = {0};

	if (json_str_buf(x->j, s, &t) > 0)
		prov_text_obj(x, jw, t.data, t.len);
	buf_free(&t);
}

/* A MIME type guessed from an image URL's extension. */
static const char *
prov_mime_guess(const char *url)
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

/* What a part template (prov_dialect.image, .file) is filled with. */
struct prov_fill {
	const char *m, *d, *u, *n; /* media type, base64 data, URL, name */
	size_t ml, dl, ul, nl;
};

/* Write template tpl filled from f as raw JSON. */
static void
prov_fill(struct jw *jw, const char *tpl, const struct prov_fill *f)
{
	struct buf v = {0};
	const char *sub = memchr(f->m, '/', f->ml), *p;

	sub = sub ? sub + 1 : f->m;
	for (p = tpl; *p; p++) {
		if (*p != '%' || p[1] == '\0')
			buf_addc(&v, *p);
		else if (*++p == 'm')
			prov_quote(&v, f->m, f->ml);
		else if (*p == 'f')
			prov_quote(&v, sub, f->ml - (size_t)(sub - f->m));
		else if (*p == 'd')
			prov_quote(&v, f->d, f->dl);
		else if (*p == 'u')
			prov_quote(&v, f->u, f->ul);
		else if (*p == 'n')
			prov_quote(&v, f->n, f->nl);
	}
	jw_raw(jw, v.data, v.len);
	buf_free(&v);
}

/* Write an image_url part by the dialect's template for its URL. */
static int
prov_image(struct prov_xlate *x, struct jw *jw, int part)
{
	struct buf url = {0};
	struct prov_fill f = {0};
	int b64;

	if (prov_image_url(x->j, part, &url) == -1) {
		buf_free(&url);
		return prov_fail(x, "image_url part without a url");
	}
	b64 = prov_data_url(url.data, url.len, &f.m, &f.ml, &f.d, &f.dl) == 0;
	if (!b64)
		f.ml = strlen(f.m = prov_mime_guess(buf_cstr(&url)));
	if (x->dl->image[!b64] == NULL) {
		buf_free(&url);
		return prov_fail(x, "image URLs are not supported (send the "
		                    "image as a base64 data: URL)");
	}
	f.u = url.data, f.ul = url.len;
	prov_fill(jw, x->dl->image[!b64], &f);
	buf_free(&url);
	return 0;
}

/* A file name as every dialect takes it (Bedrock's is the strictest):
 * letters, digits, '-', '(', ')', '[', ']' and single spaces; the rest,
 * the extension's dot among it, becomes '-'. "document" if none. */
static void
prov_file_name(const struct json *j, int t, char *out, size_t sz)
{
	size_t n = 0;

	if (json_str(j, t, out, sz) < 0 || out[0] == '\0') {
		snprintf(out, sz, "document");
		return;
	}
	for (char *p = out; *p; p++) {
		if (!isalnum((unsigned char)*p) && strchr("-()[] ", *p) == NULL)
			*p = '-';
		if (*p == ' ' && n > 0 && out[n - 1] == ' ')
			continue;
		out[n++] = *p;
	}
	out[n] = '\0';
}

/* Write a file part ({"type":"file","file":{"file_data":data: URL,
 * "filename"}}: a PDF) by the dialect's file template. */
static int
prov_file(struct prov_xlate *x, struct jw *jw, int part)
{
	int fo = json_get(x->j, part, "file");
	struct buf url = {0};
	struct prov_fill f = {0};
	char name[128];

	if (x->dl->file == NULL)
		return prov_fail(x, "file parts are not supported");
	if (json_str_buf(x->j, json_get(x->j, fo, "file_data"), &url) <= 0 ||
	    prov_data_url(url.data, url.len, &f.m, &f.ml, &f.d, &f.dl) == -1) {
		buf_free(&url);
		return prov_fail(x, "a file part needs file_data as a base64 "
		                    "data: URL (file_id refers to OpenAI's "
		                    "storage)");
	}
	prov_file_name(x->j, json_get(x->j, fo, "filename"), name, sizeof name);
	f.n = name, f.nl = strlen(name);
	prov_fill(jw, x->dl->file, &f);
	buf_free(&url);
	return 0;
}

/* Write one content part (text, image_url or file). */
static int
prov_part(struct prov_xlate *x, struct jw *jw, int part)
{
	int t = json_get(x->j, part, "type");

	if (json_eq(x->j, t, "text"))
		prov_text_part(x, jw, json_get(x->j, part, "text"));
	else if (json_eq(x->j, t, "image_url"))
		return prov_image(x, jw, part);
	else if (json_eq(x->j, t, "file"))
		return prov_file(x, jw, part);
	else
		return prov_fail(x, "unsupported content part type (only "
		                    "text, image_url and file)");
	return 0;
}

/* Write a message content (string or parts) as parts. */
int
prov_content(struct prov_xlate *x, struct jw *jw, int c)
{
	const struct json *j = x->j;
	int n;

	switch (json_type(j, c)) {
	case JSMN_STRING:
		prov_text_part(x, jw, c);
		return 0;
	case JSMN_ARRAY:
		n = json_size(j, c);
		for (int i = 0; i < n; i++)
			if (prov_part(x, jw, json_at(j, c, i)) == -1)
				return -1;
		return 0;
	default:
		if (c < 0 || json_is_null(j, c))
			return 0;
		return prov_fail(x, "message content must be a string or an "
		                    "array of parts");
	}
}

/* Write message m's (index i) parts; *role gets the provider's role. */
static int
prov_parts(struct prov_xlate *x, struct jw *jw, int m, int i, const char **role)
{
	const struct json *j = x->j;
	int r = json_get(j, m, "role"), tcs;

	*role = "user";
	if (json_eq(j, r, "user"))
		return prov_content(x, jw, json_get(j, m, "content"));
	if (json_eq(j, r, "tool"))
		return x->dl->tool_result(x, jw, m, i);
	if (!json_eq(j, r, "assistant"))
		return prov_fail(x, "unsupported message role");
	*role = x->dl->assistant;
	if (prov_content(x, jw, json_get(j, m, "content")) == -1)
		return -1;
	tcs = json_get(j, m, "tool_calls");
	return json_type(j, tcs) == JSMN_ARRAY ? x->dl->tool_calls(x, jw, tcs)
	                                       : 0;
}

/* Translate message i into the turn list (or the system prompt). */
static int
prov_message(struct prov_xlate *x, struct prov_turns *t, int i)
{
	const struct json *j = x->j;
	int m = json_at(j, x->msgs, i), r = json_get(j, m, "role"), rc;
	struct buf b = {0};
	struct jw jw;
	const char *role = NULL;

	if (json_type(j, m) != JSMN_OBJECT)
		return prov_fail(x, "each message must be an object");
	if (json_eq(j, r, "system") || json_eq(j, r, "developer"))
		return prov_sys_msg(x, json_get(j, m, "content"));
	jw_init(&jw, &b);
	jw_arr(&jw);
	rc = prov_parts(x, &jw, m, i, &role);
	jw_arr_end(&jw);
	if (rc == 0)
		prov_turns_add(t, role, b.data, b.len);
	buf_free(&b);
	return rc;
}

/* Add a turn of role holding one text part. */
static void
prov_text_turn(struct prov_xlate *x, struct prov_turns *t, const char *role,
               const char *s, size_t n)
{
	struct buf b = {0};
	struct jw jw;

	jw_init(&jw, &b);
	jw_arr(&jw);
	prov_text_obj(x, &jw, s, n);
	jw_arr_end(&jw);
	prov_turns_add(t, role, b.data, b.len);
	buf_free(&b);
}

/* Translate every message into x->turns; a stream continuation adds the
 * partial answer as the last, assistant turn (a prefill), followed in the
 * instruction form (no prefill asked, or the dialect takes none) by a
 * user turn asking to continue it. */
static int
prov_turns_messages(struct prov_xlate *x)
{
	const struct prov_call *pc = x->pc;
	struct prov_turns t;
	int n;

	x->msgs = json_get(x->j, 0, "messages");
	if (json_type(x->j, x->msgs) != JSMN_ARRAY)
		return prov_fail(x, "'messages' must be an array");
	n = json_size(x->j, x->msgs);
	prov_turns_begin(&t, &x->turns, x->dl->partkey);
	for (int i = 0; i < n; i++)
		if (prov_message(x, &t, i) == -1)
			return -1;
	if (pc->resume_text && pc->resume_len) {
		prov_text_turn(x, &t, x->dl->assistant, pc->resume_text,
		               pc->resume_len);
		if (!x->dl->prefill || !pc->resume_prefill)
			prov_text_turn(x, &t, "user", PROV_RESUME_INSTRUCTION,
			               strlen(PROV_RESUME_INSTRUCTION));
	}
	prov_turns_end(&t);
	return 0;
}

/* Build a translated body; see provider.h. */
int
prov_xlate_body(const struct prov_call *pc, const struct prov_dialect *dl,
                struct buf *out, char *err, size_t errsz)
{
	return prov_xlate_body_arg(pc, dl, NULL, out, err, errsz);
}

/* Build a translated body with the caller's arg; see provider.h. */
int
prov_xlate_body_arg(const struct prov_call *pc, const struct prov_dialect *dl,
                    const void *arg, struct buf *out, char *err, size_t errsz)
{
	struct prov_xlate x = {.dl = dl,
	                       .pc = pc,
	                       .j = pc->req,
	                       .arg = arg,
	                       .err = err,
	                       .errsz = errsz};
	struct jw jw;
	int rc = -1;

	if (prov_turns_messages(&x) == 0) {
		jw_init(&jw, out);
		jw_obj(&jw);
		dl->members(&x, &jw);
		jw_obj_end(&jw);
		rc = x.turns.oom || x.sys.oom ? -1 : 0;
	}
	buf_free(&x.turns);
	buf_free(&x.sys);
	return rc;
}

/* Write "key": the string at t, or fallback. */
static void
prov_str_or(struct jw *jw, const char *key, const struct json *j, int t,
            const char *fallback)
{
	jw_key(jw, key);
	if (json_type(j, t) == JSMN_STRING)
		prov_raw(jw, j, t);
	else
		jw_cstr(jw, fallback);
}

/* Open a chat.completion object up to its model. */
void
prov_completion_head(struct jw *jw, struct buf *out, const struct json *j,
                     int id, const char *fbid, int model, const char *fbmodel)
{
	jw_init(jw, out);
	jw_obj(jw);
	prov_str_or(jw, "id", j, id, fbid);
	jw_key(jw, "object");
	jw_cstr(jw, "chat.completion");
	jw_key(jw, "created");
	jw_int(jw, (long long)time(NULL));
	prov_str_or(jw, "model", j, model, fbmodel);
}

/* Open a choice's assistant message with its text (or null). */
void
prov_message_open(struct jw *jw, const struct buf *text)
{
	jw_key(jw, "message");
	jw_obj(jw);
	jw_key(jw, "role");
	jw_cstr(jw, "assistant");
	jw_key(jw, "content");
	if (text)
		jw_str(jw, text->data ? text->data : "", text->len);
	else
		jw_null(jw);
	jw_key(jw, "refusal");
	jw_null(jw);
}

/* Write the members of one OpenAI tool call. */
void
prov_tool_call(struct jw *jw, const struct json *j, int id, const char *fbid,
               int name, int args, const char *noargs)
{
	const char *raw;
	size_t rl;

	prov_str_or(jw, "id", j, id, fbid);
	jw_key(jw, "type");
	jw_cstr(jw, "function");
	jw_key(jw, "function");
	jw_obj(jw);
	jw_key(jw, "name");
	prov_raw(jw, j, name);
	jw_key(jw, "arguments");
	if ((raw = json_raw(j, args, &rl)) != NULL)
		jw_str(jw, raw, rl);
	else
		jw_cstr(jw, noargs);
	jw_obj_end(jw);
}

/* Send string token t as a content delta; see provider.h. */
int
prov_chunk_str(struct stream_state *st, struct buf *out, const struct json *j,
               int t)
{
	buf_reset(&st->partial);
	if (json_str_buf(j, t, &st->partial) == -1)
		return -1;
	if (st->partial.len)
		prov_chunk_text(st, out, st->partial.data, st->partial.len);
	return (int)st->partial.len;
}

/* Send the assistant role chunk unless already sent. */
void
prov_chunk_role(struct stream_state *st, struct buf *out)
{
	struct jw jw;

	if (st->role_sent)
		return;
	prov_chunk_open(st, out, &jw, 0);
	PROV_RAW(&jw, "{\"role\":\"assistant\",\"content\":\"\"}");
	prov_chunk_close(&jw, NULL);
	st->role_sent = 1;
}

/* Send the finish chunk with reason fin. */
void
prov_chunk_finish(struct stream_state *st, struct buf *out, const char *fin)
{
	struct jw jw;

	prov_chunk_open(st, out, &jw, 0);
	jw_obj(&jw);
	jw_obj_end(&jw);
	prov_chunk_close(&jw, fin);
	st->finished = 1;
}

/* Open a tool-call delta chunk for OpenAI tool index. */
void
prov_tool_delta_open(struct stream_state *st, struct buf *out, struct jw *jw,
                     int index)
{
	prov_chunk_open(st, out, jw, 0);
	jw_obj(jw);
	jw_key(jw, "tool_calls");
	jw_arr(jw);
	jw_obj(jw);
	jw_key(jw, "index");
	jw_int(jw, index);
}

/* Close a tool-call delta chunk and note the tool call. */
void
prov_tool_delta_close(struct stream_state *st, struct jw *jw)
{
	jw_obj_end(jw);
	jw_arr_end(jw);
	jw_obj_end(jw);
	prov_chunk_close(jw, NULL);
	st->content_seen = st->tool_seen = 1;
}
