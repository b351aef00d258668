/* Azure OpenAI: OpenAI's wire format behind a per-deployment path, an
 * api-version query and an api-key header. Streams may open with an empty
 * chunk carrying only prompt_filter_results, and may carry chunks without
 * a delta; both are tolerated. */
#include <stdio.h>
#include <string.h>

#include "worker/provider.h"

#define AZURE_API_VERSION "2024-10-21"

/* Build POST {base}/openai/deployments/{dep}/{op}?api-version={v}. */
static int
azure_build(const struct prov_call *pc, struct prov_out *o, char *err,
            size_t errsz)
{
	const struct deploy_cfg *d = pc->d;
	const char *dep = pc->model                ? pc->model
	                  : d->azure_deployment[0] ? d->azure_deployment
	                                           : d->model;

	if (dep[0] == '\0') {
		snprintf(err, errsz,
		         "azure deployment '%s' has no "
		         "azure_deployment or model",
		         d->name);
		return -1;
	}
	buf_printf(&o->path, "%s/openai/deployments/", d->path);
	prov_urlenc(&o->path, dep);
	buf_printf(&o->path, "/%s?api-version=",
	           pc->endpoint == EP_EMBED ? "embeddings"
	                                    : "chat/completions");
	prov_urlenc(&o->path,
	            d->api_version[0] ? d->api_version : AZURE_API_VERSION);
	if (d->api_key[0])
		buf_printf(&o->headers, "api-key: %s\r\n", d->api_key);
	buf_adds(&o->headers, "Content-Type: application/json\r\n");
	prov_extra_headers(d, &o->headers);
	prov_openai_body(pc, NULL, o);
	return (o->path.oom || o->headers.oom || o->body.oom) ? -1 : 0;
}

/* A whole reply is OpenAI's, content_filter finish included. */
static int
azure_response(const struct prov_call *pc, const char *body, size_t len,
               struct buf *out, struct usage *u, int *content_filter,
               struct upstream_error *e)
{
	return prov_openai.response(pc, body, len, out, u, content_filter, e);
}

/* Whether a chunk carries nothing for the client: no choices and no usage
 * (the prompt_filter_results opener), or a choice with neither delta nor
 * finish_reason (a content_filter_results annotation). */
static int
azure_skip_chunk(const struct json *j)
{
	int ch = json_get(j, 0, "choices"), c0, u, f;

	if (json_type(j, ch) != JSMN_ARRAY)
		return 0;
	if (json_size(j, ch) == 0) {
		u = json_get(j, 0, "usage");
		return u < 0 || json_is_null(j, u);
	}
	c0 = json_at(j, ch, 0);
	f = json_get(j, c0, "finish_reason");
	return json_type(j, c0) == JSMN_OBJECT &&
	       json_get(j, c0, "delta") < 0 && (f < 0 || json_is_null(j, f));
}

/* Drop Azure's filter-only chunks, pass the rest as OpenAI's. */
static int
azure_stream_event(const struct prov_call *pc, struct stream_state *st,
                   const char *ev, size_t elen, const char *data, size_t dlen,
                   struct buf *out, struct upstream_error *e)
{
	static struct json j;

	if (dlen == 6 && memcmp(data, "[DONE]", 6) == 0)
		return 1;
	if (prov_json_obj(&j, data, dlen, "stream chunk is not a JSON object",
	                  e) == -1)
		return -1;
	if (azure_skip_chunk(&j))
		return 0;
	return prov_openai.stream_event(pc, st, ev, elen, data, dlen, out, e);
}

const struct provider prov_azure = {
    .name = "azure",
    .formats = PROV_FMT(FMT_CHAT),
    .top_only = prov_openai_top_only,
    .build = azure_build,
    .response = azure_response,
    .stream_event = azure_stream_event,
};
