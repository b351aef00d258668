/* OpenAI Chat Completions and Embeddings, and every OpenAI-compatible
 * server (Ollama, vLLM, llama.cpp): the client's body passes through with
 * llmfd's fields dropped and the model replaced; replies pass through as
 * they are, checked for shape, usage and content filtering. */
#include <stdio.h>
#include <string.h>

#include "worker/provider.h"

/* Build POST {base}/chat/completions (or /embeddings). */
static int
openai_build(const struct prov_call *pc, struct prov_out *o, char *err,
             size_t errsz)
{
	const struct deploy_cfg *d = pc->d;

	(void)err;
	(void)errsz;
	buf_adds(&o->path, d->path);
	buf_adds(&o->path, pc->endpoint == EP_EMBED ? "/embeddings"
	                                            : "/chat/completions");
	if (d->api_key[0]) {
		buf_adds(&o->headers, "Authorization: Bearer ");
		buf_adds(&o->headers, d->api_key);
		buf_adds(&o->headers, "\r\n");
	}
	buf_adds(&o->headers, "Content-Type: application/json\r\n");
	prov_extra_headers(d, &o->headers);
	prov_openai_body(pc, d->model, &o->body);
	return (o->path.oom || o->headers.oom || o->body.oom) ? -1 : 0;
}

static void
openai_usage(const struct json *j, int root, struct usage *u)
{
	long long v;

	if (json_int(j, json_path(j, root, "usage.prompt_tokens"), &v) == 0)
		u->prompt_tokens = v;
	if (json_int(j, json_path(j, root, "usage.completion_tokens"), &v) == 0)
		u->completion_tokens = v;
}

/* Check a parsed reply and pass it through (a prov_reply_fn). */
static int
openai_reply(const struct prov_call *pc, const struct json *j, struct buf *out,
             struct usage *u, int *cf, struct upstream_error *e)
{
	int embed = pc->endpoint == EP_EMBED;

	if (json_type(j, json_get(j, 0, embed ? "data" : "choices")) !=
	    JSMN_ARRAY)
		return prov_malformed(e, embed ? "no 'data' array"
		                               : "no 'choices' array");
	openai_usage(j, 0, u);
	*cf = json_eq(j, json_path(j, 0, "choices.0.finish_reason"),
	              "content_filter");
	buf_add(out, j->js, j->len);
	return 0;
}

/* Check a whole reply and pass it through. */
static int
openai_response(const struct prov_call *pc, const char *body, size_t len,
                struct buf *out, struct usage *u, int *content_filter,
                struct upstream_error *e)
{
	return prov_reply(pc, body, len, openai_reply, out, u, content_filter,
	                  e);
}

/* Pass one chunk through, noting content, usage and errors. */
static int
openai_stream_event(const struct prov_call *pc, struct stream_state *st,
                    const char *ev, size_t elen, const char *data, size_t dlen,
                    struct buf *out, struct upstream_error *e)
{
	static struct json j;
	int c, t;

	(void)pc;
	(void)ev;
	(void)elen;
	if (dlen == 6 && memcmp(data, "[DONE]", 6) == 0)
		return 1;
	if (prov_json_reply(&j, data, dlen, "stream chunk is not a JSON object",
	                    e) == -1)
		return -1;
	openai_usage(&j, 0, &st->usage);
	c = json_path(&j, 0, "choices.0.delta.content");
	if (json_type(&j, c) == JSMN_STRING && j.tok[c].end > j.tok[c].start) {
		st->content_seen = 1;
		if (st->text)
			json_str_buf(&j, c, st->text);
	}
	if (json_path(&j, 0, "choices.0.delta.tool_calls") >= 0)
		st->content_seen = st->tool_seen = 1;
	t = json_path(&j, 0, "choices.0.finish_reason");
	if (st->role_sent && !st->content_seen &&
	    json_path(&j, 0, "choices.0.delta.role") >= 0 &&
	    json_type(&j, c) != JSMN_STRING && (t < 0 || json_is_null(&j, t)))
		return 0; /* a continuation: the client has its role chunk */
	if (st->role_sent && !st->content_seen &&
	    json_type(&j, c) == JSMN_STRING && j.tok[c].end == j.tok[c].start &&
	    (t < 0 || json_is_null(&j, t)))
		return 0;
	if (t >= 0 && !json_is_null(&j, t)) {
		st->finished = 1;
		st->content_filter |= json_eq(&j, t, "content_filter");
	}
	buf_adds(out, "data: ");
	buf_add(out, data, dlen);
	buf_adds(out, "\n\n");
	return 0;
}

const struct provider prov_openai = {
    .name = "openai",
    .build = openai_build,
    .response = openai_response,
    .stream_event = openai_stream_event,
};
