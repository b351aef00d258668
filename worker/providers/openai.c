/* OpenAI Chat Completions and Embeddings, and every OpenAI-compatible
 * server (Ollama, vLLM, llama.cpp): the client's body passes through with
 * llmfd's fields dropped and the model replaced; replies pass through as
 * they are, checked for shape, usage and content filtering. A client's
 * own Responses body (native) goes to /responses the same way, its reply
 * and events checked for usage, content filtering and errors. */
#include <stdio.h>
#include <string.h>

#include "worker/provider.h"

/* Build POST {base}/chat/completions (or /embeddings, or /responses for
 * a native Responses body). */
static int
openai_build(const struct prov_call *pc, struct prov_out *o, char *err,
             size_t errsz)
{
	const struct deploy_cfg *d = pc->d;
	const char *op =
	    pc->endpoint == EP_EMBED ? "/embeddings" : "/chat/completions";

	if (pc->native &&
	    (pc->native_fmt != FMT_RESPONSES || pc->endpoint != EP_CHAT ||
	     json_type(pc->native, 0) != JSMN_OBJECT)) {
		snprintf(err, errsz,
		         "openai: a native body must be a Responses object");
		return -1;
	}
	buf_adds(&o->path, d->path);
	buf_adds(&o->path, pc->native ? "/responses" : op);
	if (d->api_key[0]) {
		buf_adds(&o->headers, "Authorization: Bearer ");
		buf_adds(&o->headers, d->api_key);
		buf_adds(&o->headers, "\r\n");
	}
	buf_adds(&o->headers, "Content-Type: application/json\r\n");
	prov_extra_headers(d, &o->headers);
	if (pc->native)
		prov_obj_put(pc, pc->native,
		             &(struct prov_edit){"model", prov_model(pc),
		                                 pc->drop_keys, NULL, 0},
		             o);
	else
		prov_openai_body(pc, prov_model(pc), o);
	return (o->path.oom || o->headers.oom || o->body.oom) ? -1 : 0;
}

/* Read usage.{in,out} under token root into u (the members that are
 * there): prompt_tokens/completion_tokens, or Responses' input_tokens/
 * output_tokens. */
static void
openai_usage(const struct json *j, int root, struct usage *u, const char *in,
             const char *out)
{
	int us = json_get(j, root, "usage");
	long long v;

	if (json_int(j, json_get(j, us, in), &v) == 0)
		u->prompt_tokens = v;
	if (json_int(j, json_get(j, us, out), &v) == 0)
		u->completion_tokens = v;
	/* Chat's prompt_tokens_details, Responses' input_tokens_details */
	if (json_int(j,
	             json_path(j, us,
	                       in[0] == 'p'
	                           ? "prompt_tokens_details.cached_tokens"
	                           : "input_tokens_details.cached_tokens"),
	             &v) == 0)
		u->cached_tokens = v;
}

/* Note a text delta (string token t): content seen when not empty, and
 * the text kept for a continuation. */
static void
openai_text(struct stream_state *st, const struct json *j, int t)
{
	if (json_type(j, t) != JSMN_STRING || j->tok[t].end == j->tok[t].start)
		return;
	st->content_seen = 1;
	if (st->text)
		json_str_buf(j, t, st->text);
}

/* The HTTP status a Responses error code stands for. */
static int
openai_resp_status(const char *code)
{
	static const char *const bad[] = {"invalid_",
	                                  "image_",
	                                  "unsupported_",
	                                  "empty_",
	                                  "failed_to_download_",
	                                  "context_length_exceeded"};

	if (strcmp(code, "rate_limit_exceeded") == 0 ||
	    strcmp(code, "insufficient_quota") == 0)
		return 429;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		if (strncmp(code, bad[i], strlen(bad[i])) == 0)
			return 400;
	return 500;
}

/* Classify a Responses error object, token err of j (else j itself, or
 * its "error" object): as the HTTP error its code stands for; -1. */
static int
openai_resp_error(const struct json *j, int err, struct upstream_error *e)
{
	char code[64] = "";
	const char *raw;
	size_t rl;

	if (json_type(j, err) != JSMN_OBJECT)
		err = 0;
	if (json_type(j, json_get(j, err, "error")) == JSMN_OBJECT)
		err = json_get(j, err, "error");
	json_str(j, json_get(j, err, "code"), code, sizeof code);
	raw = json_raw(j, err, &rl);
	prov_error(openai_resp_status(code), raw, rl, e);
	if (strstr(code, "content_policy") != NULL)
		e->cls = EC_CONTENT_POLICY;
	return -1;
}

/* Whether a Responses object (token r) stopped at the content filter. */
static int
openai_resp_filtered(const struct json *j, int r)
{
	return json_eq(j, json_path(j, r, "incomplete_details.reason"),
	               "content_filter");
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
	openai_usage(j, 0, u, "prompt_tokens", "completion_tokens");
	*cf = json_eq(j, json_path(j, 0, "choices.0.finish_reason"),
	              "content_filter");
	buf_add(out, j->js, j->len);
	return 0;
}

/* Check a whole Responses reply (a failed one is an error) and pass it
 * through. */
static int
openai_resp_reply(const char *body, size_t len, struct buf *out,
                  struct usage *u, int *cf, struct upstream_error *e)
{
	static struct json j;
	int err;

	if (prov_json_obj(&j, body, len, "not a JSON object", e) == -1)
		return -1;
	err = json_get(&j, 0, "error");
	if ((err >= 0 && !json_is_null(&j, err)) ||
	    json_eq(&j, json_get(&j, 0, "status"), "failed"))
		return openai_resp_error(&j, err, e);
	if (json_type(&j, json_get(&j, 0, "output")) != JSMN_ARRAY)
		return prov_malformed(e, "no 'output' array");
	openai_usage(&j, 0, u, "input_tokens", "output_tokens");
	*cf = openai_resp_filtered(&j, 0);
	buf_add(out, body, len);
	return 0;
}

/* What a whole Chat or Embeddings reply is read for, in the order of
 * openai_reply_paths. */
enum openai_reply_val {
	OR_ERROR = 0,
	OR_TYPE,
	OR_CHOICES,
	OR_DATA,
	OR_PROMPT,
	OR_COMPLETION,
	OR_CACHED,
	OR_FINISH,
};
static const char *const openai_reply_paths[] = {
    "error",
    "type",
    "choices",
    "data",
    "usage.prompt_tokens",
    "usage.completion_tokens",
    "usage.prompt_tokens_details.cached_tokens",
    "choices.0.finish_reason",
    NULL};

/*
 * A whole Chat or Embeddings reply of the usual shape, checked and read
 * the way prov_reply and openai_reply do it but with json_pick (the
 * verdict json_parse gives, without building the tree: most of a small
 * request's JSON work). 0 when it was passed through; 1 when it needs the
 * full path, which then answers exactly as before (not JSON, an error, no
 * choices).
 */
static int
openai_reply_fast(const struct prov_call *pc, const char *body, size_t len,
                  struct buf *out, struct usage *u, int *cf)
{
	static struct json_sel sel;
	static struct json j;
	static int ready;
	int embed = pc->endpoint == EP_EMBED, t;
	long long v;

	if (!ready) {
		if (json_sel_init(&sel, openai_reply_paths) == -1)
			return 1;
		ready = 1;
	}
	if (json_pick(&j, body, len, &sel) == -1 ||
	    json_type(&j, 0) != JSMN_OBJECT)
		return 1;
	if (((t = json_picked(&j, OR_ERROR)) >= 0 && !json_is_null(&j, t)) ||
	    json_eq(&j, json_picked(&j, OR_TYPE), "error") ||
	    json_type(&j, json_picked(&j, embed ? OR_DATA : OR_CHOICES)) !=
	        JSMN_ARRAY)
		return 1;
	if (json_int(&j, json_picked(&j, OR_PROMPT), &v) == 0)
		u->prompt_tokens = v;
	if (json_int(&j, json_picked(&j, OR_COMPLETION), &v) == 0)
		u->completion_tokens = v;
	if (json_int(&j, json_picked(&j, OR_CACHED), &v) == 0)
		u->cached_tokens = v;
	*cf = json_eq(&j, json_picked(&j, OR_FINISH), "content_filter");
	buf_add(out, body, len);
	return 0;
}

/* Check a whole reply and pass it through. */
static int
openai_response(const struct prov_call *pc, const char *body, size_t len,
                struct buf *out, struct usage *u, int *content_filter,
                struct upstream_error *e)
{
	if (pc->native)
		return openai_resp_reply(body, len, out, u, content_filter, e);
	if (openai_reply_fast(pc, body, len, out, u, content_filter) == 0)
		return 0;
	return prov_reply(pc, body, len, openai_reply, out, u, content_filter,
	                  e);
}

/* Responses stream events that matter, in the order of openai_resp_ev. */
enum openai_resp_ev {
	RE_CREATED = 0,
	RE_TEXT,
	RE_ARGS,
	RE_ITEM,
	RE_COMPLETED,
	RE_INCOMPLETE,
	RE_FAILED,
	RE_ERROR,
};
static const char *const openai_resp_events[] = {
    "response.created",
    "response.output_text.delta",
    "response.function_call_arguments.delta",
    "response.output_item.added",
    "response.completed",
    "response.incomplete",
    "response.failed",
    "error",
    NULL};

/* Note what one Responses event says (a prov_note_fn); 1 when it ends
 * the response, -1 for a failure. */
static int
openai_resp_note(struct stream_state *st, const struct json *j, const char *ev,
                 size_t elen, struct upstream_error *e)
{
	int r = json_get(j, 0, "response");

	switch (prov_event_index(j, ev, elen, openai_resp_events)) {
	case RE_CREATED:
		json_str(j, json_get(j, r, "id"), st->id, sizeof st->id);
		json_str(j, json_get(j, r, "model"), st->model,
		         sizeof st->model);
		return 0;
	case RE_TEXT:
		openai_text(st, j, json_get(j, 0, "delta"));
		return 0;
	case RE_ITEM:
		if (!json_eq(j, json_path(j, 0, "item.type"), "function_call"))
			return 0;
		st->ntool++;
		st->content_seen = st->tool_seen = 1;
		return 0;
	case RE_ARGS:
		st->content_seen = st->tool_seen = 1;
		return 0;
	case RE_COMPLETED:
	case RE_INCOMPLETE:
		openai_usage(j, r, &st->usage, "input_tokens", "output_tokens");
		st->content_filter |= openai_resp_filtered(j, r);
		st->finished = 1;
		return 1;
	case RE_FAILED:
		return openai_resp_error(j, json_get(j, r, "error"), e);
	case RE_ERROR:
		return openai_resp_error(j, 0, e);
	default:
		return 0;
	}
}

/* A Responses output_text delta noted as openai_resp_note does, from
 * its picked "type" and "delta" (a prov_fast_fn). */
static int
openai_resp_fast(struct stream_state *st, const struct json *j,
                 struct upstream_error *e)
{
	(void)e;
	openai_text(st, j, json_picked(j, 1));
	return 0;
}

/* A native Responses event: text deltas picked, others parsed. */
static int
openai_resp_event(struct stream_state *st, const char *ev, size_t elen,
                  const char *data, size_t dlen, struct buf *out,
                  struct upstream_error *e)
{
	static const char *const paths[] = {"type", "delta", NULL};
	static struct json_sel sel;
	static int ready;

	if (!ready && json_sel_init(&sel, paths) == 0)
		ready = 1;
	return prov_native_fast(st, ev, elen, data, dlen, &sel,
	                        "response.output_text.delta", openai_resp_fast,
	                        openai_resp_note, out, e);
}

/* What a Chat chunk is read for, in the order of openai_chunk_paths. */
enum openai_chunk_val {
	OC_ERROR = 0,
	OC_USAGE,
	OC_PROMPT,
	OC_COMPLETION,
	OC_CACHED,
	OC_CHOICES,
	OC_CONTENT,
	OC_TOOLS,
	OC_ROLE,
	OC_FINISH,
};
static const char *const openai_chunk_paths[] = {
    "error",
    "usage",
    "usage.prompt_tokens",
    "usage.completion_tokens",
    "usage.prompt_tokens_details.cached_tokens",
    "choices",
    "choices.0.delta.content",
    "choices.0.delta.tool_calls",
    "choices.0.delta.role",
    "choices.0.finish_reason",
    NULL};

/* Check a Chat chunk (a JSON object without an error) and pick what
 * openai_stream_event reads from it: json_pick, checking every byte as
 * json_parse would but keeping no tokens for the rest (the chunk passes
 * through as it came); -1 with e filled. */
static int
openai_chunk_pick(struct json *j, const char *data, size_t dlen,
                  struct upstream_error *e)
{
	static struct json_sel sel;
	static int ready;
	int t;

	if (!ready && json_sel_init(&sel, openai_chunk_paths) == 0)
		ready = 1;
	if (json_pick(j, data, dlen, &sel) == -1 ||
	    json_type(j, 0) != JSMN_OBJECT)
		return prov_malformed(e, "stream chunk is not a JSON object");
	if ((t = json_picked(j, OC_ERROR)) >= 0 && !json_is_null(j, t)) {
		prov_stream_error(data, dlen, e);
		return -1;
	}
	return 0;
}

/* The usage a Chat chunk carries (as openai_usage reads it). */
static void
openai_chunk_usage(const struct json *j, struct usage *u)
{
	long long v;

	if (json_int(j, json_picked(j, OC_PROMPT), &v) == 0)
		u->prompt_tokens = v;
	if (json_int(j, json_picked(j, OC_COMPLETION), &v) == 0)
		u->completion_tokens = v;
	if (json_int(j, json_picked(j, OC_CACHED), &v) == 0)
		u->cached_tokens = v;
}

/* Pass one chunk through, noting content, usage and errors. */
static int
openai_stream_event(const struct prov_call *pc, struct stream_state *st,
                    const char *ev, size_t elen, const char *data, size_t dlen,
                    struct buf *out, struct upstream_error *e)
{
	static struct json j;
	int c, t;

	if (pc->native)
		return openai_resp_event(st, ev, elen, data, dlen, out, e);
	if (dlen == 6 && memcmp(data, "[DONE]", 6) == 0)
		return 1;
	if (openai_chunk_pick(&j, data, dlen, e) == -1)
		return -1;
	openai_chunk_usage(&j, &st->usage);
	if (prov_ask_usage(pc) && json_picked(&j, OC_USAGE) >= 0 &&
	    json_size(&j, json_picked(&j, OC_CHOICES)) <= 0)
		return 0; /* usage we asked for, not the client */
	c = json_picked(&j, OC_CONTENT);
	openai_text(st, &j, c);
	if (json_picked(&j, OC_TOOLS) >= 0)
		st->content_seen = st->tool_seen = 1;
	t = json_picked(&j, OC_FINISH);
	if (st->role_sent && !st->content_seen &&
	    json_picked(&j, OC_ROLE) >= 0 && json_type(&j, c) != JSMN_STRING &&
	    (t < 0 || json_is_null(&j, t)))
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
    .formats = PROV_FMT(FMT_CHAT) | PROV_FMT(FMT_RESPONSES),
    .top_only = prov_openai_top_only,
    .build = openai_build,
    .response = openai_response,
    .stream_event = openai_stream_event,
};
