/* Google Vertex AI: Claude through :rawPredict / :streamRawPredict (the
 * Messages body with anthropic_version "vertex-2023-10-16", the model in
 * the URL) and Gemini through :generateContent /
 * :streamGenerateContent?alt=sse, per project and location. Replies and
 * events are Anthropic's or Gemini's own, translated by those providers.
 * The bearer token of a service account is added by the engine
 * (worker/gauth.c); a deployment without one sends its api_key as the
 * access token. */
#include <stdio.h>
#include <string.h>

#include "common/classify.h"
#include "worker/provider.h"

#define VX_VERSION "vertex-2023-10-16"

static const struct anth_variant vx_anth = {
    .version = VX_VERSION, .model = 0, .stream = 1, .beta_body = 0};

/* Whether model m is Claude (publisher anthropic), else Gemini. */
static int
vx_is_claude_model(const char *m)
{
	return strncmp(m, "claude", 6) == 0;
}

/* Whether the call's model is Claude. */
static int
vx_is_claude(const struct prov_call *pc)
{
	return vx_is_claude_model(prov_model(pc));
}

/* Claude takes a client's Messages body as it is; Gemini does not. */
static unsigned
vx_formats_of(const struct deploy_cfg *d)
{
	return vx_is_claude_model(d->model)
	           ? PROV_FMT(FMT_CHAT) | PROV_FMT(FMT_MESSAGES)
	           : PROV_FMT(FMT_CHAT);
}

/* Append {base}/projects/{p}/locations/{l}/publishers/{pub}/models/{m}:. */
static void
vx_path(const struct prov_call *pc, const char *publisher, const char *m,
        struct buf *p)
{
	const struct deploy_cfg *d = pc->d;

	if (strncmp(m, "models/", 7) == 0)
		m += 7;
	buf_printf(p, "%s/projects/", d->path);
	prov_urlenc(p, d->project);
	buf_adds(p, "/locations/");
	prov_urlenc(p, d->location);
	buf_printf(p, "/publishers/%s/models/", publisher);
	for (; *m; m++) /* '@' stays: claude-sonnet-4-5@20250929 */
		if (*m == '@')
			buf_addc(p, '@');
		else {
			char one[2] = {*m, '\0'};

			prov_urlenc(p, one);
		}
	buf_addc(p, ':');
}

/* The body and path of a Claude or Gemini answer. */
static int
vx_call(const struct prov_call *pc, int claude, struct prov_out *o, char *err,
        size_t errsz)
{
	int rc;

	if (pc->endpoint == EP_EMBED) {
		snprintf(err, errsz,
		         "vertex: embeddings are not supported "
		         "(deployment '%s')",
		         pc->d->name);
		return -1;
	}
	rc = claude ? anth_body_variant(pc, &vx_anth, &o->body, err, errsz)
	            : gem_body(pc, &o->body, err, errsz);
	if (rc == -1)
		return -1;
	vx_path(pc, claude ? "anthropic" : "google", prov_model(pc), &o->path);
	if (claude)
		buf_adds(&o->path,
		         pc->stream ? "streamRawPredict" : "rawPredict");
	else
		buf_adds(&o->path, pc->stream ? "streamGenerateContent?alt=sse"
		                              : "generateContent");
	return 0;
}

/* The body of Claude's count-tokens call: the client's Messages body with
 * its model (kept in the body, not the URL) and anthropic_version. */
static int
vx_count_body(const struct prov_call *pc, int claude, struct buf *out,
              char *err, size_t errsz)
{
	if (!claude || pc->native == NULL || pc->native_fmt != FMT_MESSAGES ||
	    json_type(pc->native, 0) != JSMN_OBJECT) {
		snprintf(
		    err, errsz,
		    "vertex: count_tokens takes a Messages body for Claude");
		return -1;
	}
	prov_copy_obj(pc->native, "model", prov_model(pc), pc->drop_keys, out);
	if (out->oom || out->len < 2 || out->data[out->len - 1] != '}') {
		snprintf(err, errsz, "vertex: out of memory");
		return -1;
	}
	out->len--;
	if (out->data[out->len - 1] != '{')
		buf_addc(out, ',');
	buf_adds(out, "\"anthropic_version\":\"" VX_VERSION "\"}");
	return 0;
}

/* Build the Claude or Gemini call, or Claude's count-tokens call for
 * EP_COUNT ({base}/.../publishers/anthropic/models/count-tokens:rawPredict,
 * the model in the body). */
static int
vx_build(const struct prov_call *pc, struct prov_out *o, char *err,
         size_t errsz)
{
	const struct deploy_cfg *d = pc->d;
	int claude = vx_is_claude(pc);

	if (pc->endpoint == EP_COUNT) {
		if (vx_count_body(pc, claude, &o->body, err, errsz) == -1)
			return -1;
		vx_path(pc, "anthropic", "count-tokens", &o->path);
		buf_adds(&o->path, "rawPredict");
	} else if (vx_call(pc, claude, o, err, errsz) == -1)
		return -1;
	buf_adds(&o->headers, "Content-Type: application/json\r\n");
	if (claude && pc->native)
		prov_fwd_headers(pc, "anthropic-beta", "anthropic-beta",
		                 &o->headers);
	if (d->sa_private_key == NULL && d->api_key[0])
		buf_printf(&o->headers, "Authorization: Bearer %s\r\n",
		           d->api_key);
	prov_extra_headers(d, &o->headers);
	return (o->path.oom || o->headers.oom || o->body.oom) ? -1 : 0;
}

/* Classify a Vertex error: Google's envelope (maybe in a one-element
 * array) or Anthropic's; Claude's 413 "prompt is too long" is a context
 * overflow. */
static void
vx_classify(const struct prov_call *pc, int status, const char *errtype,
            const char *body, size_t len, struct upstream_error *e)
{
	int64_t ra = e->retry_after_ms;
	int sr = e->should_retry;

	(void)pc;
	(void)errtype;
	prov_error(status, body, len, e);
	e->retry_after_ms = ra < 0 ? e->retry_after_ms : ra;
	e->should_retry = sr;
	if (status == 413 && e->cls == EC_BAD_REQUEST)
		e->cls = EC_CONTEXT_WINDOW;
}

/* A whole reply: Anthropic's Message or Gemini's response. */
static int
vx_response(const struct prov_call *pc, const char *body, size_t len,
            struct buf *out, struct usage *u, int *cf, struct upstream_error *e)
{
	const struct provider *p =
	    vx_is_claude(pc) ? &prov_anthropic : &prov_gemini;

	return p->response(pc, body, len, out, u, cf, e);
}

/* One SSE event, Anthropic's or Gemini's. */
static int
vx_stream_event(const struct prov_call *pc, struct stream_state *st,
                const char *ev, size_t elen, const char *data, size_t dlen,
                struct buf *out, struct upstream_error *e)
{
	const struct provider *p =
	    vx_is_claude(pc) ? &prov_anthropic : &prov_gemini;

	return p->stream_event(pc, st, ev, elen, data, dlen, out, e);
}

/* The body ended after the finish without its terminal event. */
static void
vx_stream_end(const struct prov_call *pc, struct stream_state *st,
              struct buf *out)
{
	if (vx_is_claude(pc))
		prov_anthropic.stream_end(pc, st, out);
	else if (st->include_usage)
		prov_chunk_usage(st, out);
}

const struct provider prov_vertex = {
    .name = "vertex",
    .formats = PROV_FMT(FMT_CHAT) | PROV_FMT(FMT_MESSAGES),
    .formats_of = vx_formats_of,
    .counts = PROV_FMT(FMT_MESSAGES),
    .framing = PROV_FRAME_SSE,
    .classify = vx_classify,
    .build = vx_build,
    .response = vx_response,
    .stream_event = vx_stream_event,
    .stream_end = vx_stream_end,
};
