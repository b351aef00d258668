/* Provider registry and helpers shared by OpenAI-shaped providers. */
#include <string.h>

#include "worker/provider.h"

/* The provider for an enum provider_kind. */
const struct provider *
provider_get(int kind)
{
	switch (kind) {
	case PROV_OPENAI:
		return &prov_openai;
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

/* Write messages with the deployment's system_prompt_append folded into
 * the first system message (or a new one in front). */
static void
prov_messages_append(const struct prov_call *pc, struct jw *jw, int arr)
{
	const struct json *j = pc->req;
	const char        *app = pc->d->system_prompt_append;
	int                n = json_size(j, arr), done = 0;
	size_t             rl;
	const char        *raw;

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

/* Stream continuation for OpenAI-shaped upstreams, which cannot take an
 * assistant prefix: the partial answer goes in as an assistant turn and a
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
	int                n = json_size(j, arr);
	const char        *raw;
	size_t             rl;

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
	const char        *raw;
	size_t             rl;
	char               key[128];

	if (pc->d->params == NULL || json_parse(&p, pc->d->params,
	    strlen(pc->d->params)) == -1 || json_type(&p, 0) != JSMN_OBJECT)
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
prov_openai_body(const struct prov_call *pc, const char *model,
    struct buf *out)
{
	const struct json *j = pc->req;
	struct jw          jw;
	const char        *raw;
	size_t             rl;
	char               key[128];

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
