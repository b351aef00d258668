/* AWS Bedrock: Anthropic models through InvokeModel and
 * InvokeModelWithResponseStream (the Messages body with
 * anthropic_version "bedrock-2023-05-31", the model in the URL), any
 * other model through Converse and ConverseStream. Requests are signed
 * with SigV4 over the exact bytes sent (or carry a Bedrock API key as a
 * bearer token); streams come as AWS event stream messages, whose
 * exceptions are classified like HTTP errors. */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/b64.h"
#include "common/classify.h"
#include "common/sigv4.h"
#include "worker/provider.h"

#define BR_VERSION    "bedrock-2023-05-31"
#define BR_SERVICE    "bedrock"
#define BR_MAX_TOKENS 4096
#define BR_IMAGE_B64  "{\"image\":{\"format\":%f,\"source\":{\"bytes\":%d}}}"
#define BR_FILE_B64                                                            \
	"{\"document\":{\"format\":%f,\"name\":%n,"                            \
	"\"source\":{\"bytes\":%d}}}"
#define BR_MAX_HDRS  32   /* header lines signed */
#define BR_NAME_MAX  128  /* a signed header's name */
#define BR_VALUE_MAX 4608 /* its value (a session token fits) */

static const struct anth_variant br_anth = {
    .version = BR_VERSION, .model = 0, .stream = 0, .beta_body = 1};

/* Whether model m is served through InvokeModel with the Messages body:
 * an Anthropic model id, inference profile or ARN. */
static int
br_is_anthropic_model(const char *m)
{
	return strstr(m, "anthropic.") != NULL || strstr(m, "claude") != NULL;
}

/* Whether the call's model goes through InvokeModel. */
static int
br_is_anthropic(const struct prov_call *pc)
{
	return br_is_anthropic_model(prov_model(pc));
}

/* Claude takes a client's Messages body as it is; Converse models none. */
static unsigned
br_formats_of(const struct deploy_cfg *d)
{
	return br_is_anthropic_model(d->model)
	           ? PROV_FMT(FMT_CHAT) | PROV_FMT(FMT_MESSAGES)
	           : PROV_FMT(FMT_CHAT);
}

/* ---- Converse requests ---- */

/* Write assistant tool_calls as toolUse blocks. */
static int
br_tool_uses(struct prov_xlate *x, struct jw *jw, int tcs)
{
	const struct json *j = x->j;
	int n = json_size(j, tcs), tc, f;

	for (int i = 0; i < n; i++) {
		tc = json_at(j, tcs, i);
		f = json_get(j, tc, "function");
		if (json_type(j, json_get(j, tc, "id")) != JSMN_STRING ||
		    json_type(j, json_get(j, f, "name")) != JSMN_STRING)
			return prov_fail(x, "tool call without id or name");
		jw_obj(jw);
		jw_key(jw, "toolUse");
		jw_obj(jw);
		jw_key(jw, "toolUseId");
		prov_raw(jw, j, json_get(j, tc, "id"));
		jw_key(jw, "name");
		prov_raw(jw, j, json_get(j, f, "name"));
		jw_key(jw, "input");
		prov_args_object(jw, j, json_get(j, f, "arguments"));
		jw_obj_end(jw);
		jw_obj_end(jw);
	}
	return 0;
}

/* Write a tool message as a toolResult block (its text as one part). */
static int
br_tool_result(struct prov_xlate *x, struct jw *jw, int m, int i)
{
	const struct json *j = x->j;
	int id = json_get(j, m, "tool_call_id");
	struct buf t = {0};

	(void)i;
	if (json_type(j, id) != JSMN_STRING)
		return prov_fail(x, "tool message without tool_call_id");
	if (prov_text_of(j, json_get(j, m, "content"), &t) == -1) {
		buf_free(&t);
		return prov_fail(x, "tool message content must be text");
	}
	jw_obj(jw);
	jw_key(jw, "toolResult");
	jw_obj(jw);
	jw_key(jw, "toolUseId");
	prov_raw(jw, j, id);
	jw_key(jw, "content");
	jw_arr(jw);
	jw_obj(jw);
	jw_key(jw, "text");
	jw_str(jw, t.data ? t.data : "", t.len);
	jw_obj_end(jw);
	jw_arr_end(jw);
	jw_obj_end(jw);
	jw_obj_end(jw);
	buf_free(&t);
	return 0;
}

/* Write inferenceConfig when any of its fields is set. */
static void
br_inference(const struct prov_call *pc, struct jw *jw)
{
	struct buf g = {0};
	struct jw gw;
	long long max = prov_max_tokens(pc);

	jw_init(&gw, &g);
	jw_obj(&gw);
	if (max > 0) {
		jw_key(&gw, "maxTokens");
		jw_int(&gw, max);
	}
	prov_num(pc, &gw, "temperature", "temperature", 0, 1);
	prov_num(pc, &gw, "top_p", "topP", 0, 1);
	prov_stop(pc, &gw, "stopSequences");
	jw_obj_end(&gw);
	if (g.len > 2) {
		jw_key(jw, "inferenceConfig");
		jw_raw(jw, g.data, g.len);
	}
	buf_free(&g);
}

/* Write one OpenAI function tool as a toolSpec. */
static void
br_tool_spec(struct jw *jw, const struct json *j, int f)
{
	int v;

	jw_obj(jw);
	jw_key(jw, "toolSpec");
	jw_obj(jw);
	jw_key(jw, "name");
	prov_raw(jw, j, json_get(j, f, "name"));
	if (json_type(j, v = json_get(j, f, "description")) == JSMN_STRING) {
		jw_key(jw, "description");
		prov_raw(jw, j, v);
	}
	jw_key(jw, "inputSchema");
	jw_obj(jw);
	jw_key(jw, "json");
	if (json_type(j, v = json_get(j, f, "parameters")) == JSMN_OBJECT)
		prov_raw(jw, j, v);
	else
		PROV_RAW(jw, "{\"type\":\"object\",\"properties\":{}}");
	jw_obj_end(jw);
	jw_obj_end(jw);
	jw_obj_end(jw);
}

/* Write toolChoice from tool_choice (Converse has no "none": left out). */
static void
br_tool_choice(const struct prov_call *pc, struct jw *jw)
{
	const struct json *s;
	int tc = prov_opt(pc, "tool_choice", &s);
	int fn = json_path(s, tc, "function.name");

	if (tc < 0 || json_eq(s, tc, "none"))
		return;
	jw_key(jw, "toolChoice");
	if (json_type(s, fn) == JSMN_STRING) {
		jw_obj(jw);
		jw_key(jw, "tool");
		jw_obj(jw);
		jw_key(jw, "name");
		prov_raw(jw, s, fn);
		jw_obj_end(jw);
		jw_obj_end(jw);
	} else if (json_eq(s, tc, "required"))
		PROV_RAW(jw, "{\"any\":{}}");
	else
		PROV_RAW(jw, "{\"auto\":{}}");
}

/* Write toolConfig from tools and tool_choice. */
static void
br_tool_config(const struct prov_call *pc, struct jw *jw)
{
	const struct json *s;
	int t = prov_opt(pc, "tools", &s), n, f;

	if (json_type(s, t) != JSMN_ARRAY || (n = json_size(s, t)) == 0)
		return;
	jw_key(jw, "toolConfig");
	jw_obj(jw);
	jw_key(jw, "tools");
	jw_arr(jw);
	for (int i = 0; i < n; i++) {
		f = json_get(s, json_at(s, t, i), "function");
		if (json_type(s, json_get(s, f, "name")) == JSMN_STRING)
			br_tool_spec(jw, s, f);
	}
	jw_arr_end(jw);
	br_tool_choice(pc, jw);
	jw_obj_end(jw);
}

/* The Converse body members: messages, system, inferenceConfig,
 * toolConfig, and top_k as an additional model request field. */
static void
br_members(struct prov_xlate *x, struct jw *jw)
{
	const struct prov_call *pc = x->pc;
	const char *app = pc->d->system_prompt_append;
	const struct json *s;
	int t;

	if (app && app[0])
		prov_sys_add(x, app, strlen(app));
	jw_key(jw, "messages");
	jw_raw(jw, x->turns.data, x->turns.len);
	if (x->sys.len) {
		jw_key(jw, "system");
		jw_arr(jw);
		jw_obj(jw);
		jw_key(jw, "text");
		jw_str(jw, x->sys.data, x->sys.len);
		jw_obj_end(jw);
		jw_arr_end(jw);
	}
	br_inference(pc, jw);
	br_tool_config(pc, jw);
	if ((t = prov_opt(pc, "top_k", &s)) >= 0 &&
	    json_type(s, t) == JSMN_PRIMITIVE) {
		jw_key(jw, "additionalModelRequestFields");
		jw_obj(jw);
		jw_key(jw, "top_k");
		prov_raw(jw, s, t);
		jw_obj_end(jw);
	}
}

/* How OpenAI messages become Converse messages. */
static const struct prov_dialect br_dialect = {
    .name = "bedrock",
    .partkey = "content",
    .assistant = "assistant",
    .image = {BR_IMAGE_B64, NULL},
    .file = BR_FILE_B64,
    .tool_calls = br_tool_uses,
    .tool_result = br_tool_result,
    .members = br_members,
};

/* ---- signing ---- */

/* Split header lines ("Name: value\r\n") in h into hv, the names and
 * values copied into names and vals; how many, at most max. */
static int
br_header_list(const struct buf *h, struct sigv4_hdr *hv,
               char (*names)[BR_NAME_MAX], char (*vals)[BR_VALUE_MAX], int max)
{
	const char *p = h->data, *end = p + h->len, *eol, *colon, *v;
	int n = 0;

	for (; p < end && n < max; p = eol + 2) {
		if ((eol = memmem(p, (size_t)(end - p), "\r\n", 2)) == NULL)
			break;
		if ((colon = memchr(p, ':', (size_t)(eol - p))) == NULL)
			continue;
		for (v = colon + 1; v < eol && (*v == ' ' || *v == '\t'); v++)
			;
		snprintf(names[n], BR_NAME_MAX, "%.*s", (int)(colon - p), p);
		snprintf(vals[n], BR_VALUE_MAX, "%.*s", (int)(eol - v), v);
		hv[n].name = names[n];
		hv[n].value = vals[n];
		n++;
	}
	return n;
}

/* Sign the request in o: X-Amz-Date, X-Amz-Content-Sha256 and
 * X-Amz-Security-Token are added, then the Authorization header over the
 * host (as the upstream client sends it), every header line and the body
 * bytes. */
static int
br_sign(const struct prov_call *pc, struct prov_out *o)
{
	static char names[BR_MAX_HDRS][BR_NAME_MAX];
	static char vals[BR_MAX_HDRS][BR_VALUE_MAX];
	const struct deploy_cfg *d = pc->d;
	struct sigv4_hdr hv[BR_MAX_HDRS];
	char host[300], date[SIGV4_DATE_LEN + 1], hash[65];
	struct sigv4 sv;
	struct buf auth = {0};
	int n, rc;

	sigv4_date(pc->now ? (time_t)pc->now : time(NULL), date);
	sigv4_sha256_hex(o->body.data ? o->body.data : "", o->body.len, hash);
	buf_printf(&o->headers, "X-Amz-Date: %s\r\n", date);
	buf_printf(&o->headers, "X-Amz-Content-Sha256: %s\r\n", hash);
	if (d->aws_session_token[0])
		buf_printf(&o->headers, "X-Amz-Security-Token: %s\r\n",
		           d->aws_session_token);
	cfg_host_header(d, host, sizeof host);
	hv[0] = (struct sigv4_hdr){"host", host};
	n = 1 +
	    br_header_list(&o->headers, hv + 1, names, vals, BR_MAX_HDRS - 1);
	sv = (struct sigv4){.method = "POST",
	                    .path = buf_cstr(&o->path),
	                    .hdrs = hv,
	                    .nhdrs = n,
	                    .payload_hash = hash,
	                    .amz_date = date,
	                    .region = d->region,
	                    .service = BR_SERVICE,
	                    .access_key_id = d->aws_access_key_id,
	                    .secret_key = d->aws_secret_access_key};
	rc = sigv4_authorization(&sv, &auth);
	if (rc == 0)
		buf_printf(&o->headers, "Authorization: %s\r\n",
		           buf_cstr(&auth));
	buf_free(&auth);
	return rc;
}

/* ---- requests ---- */

/* Build POST {base}/model/{id}/{invoke[-with-response-stream] |
 * converse[-stream]}, signed (or with the Bedrock API key). */
static int
br_build(const struct prov_call *pc, struct prov_out *o, char *err,
         size_t errsz)
{
	const struct deploy_cfg *d = pc->d;
	int anth = br_is_anthropic(pc), rc;

	if (pc->endpoint != EP_CHAT) {
		snprintf(err, errsz,
		         "bedrock: %s not supported (deployment '%s')",
		         pc->endpoint == EP_EMBED ? "embeddings are"
		                                  : "count_tokens is",
		         d->name);
		return -1;
	}
	rc = anth ? anth_body_variant(pc, &br_anth, &o->body, err, errsz)
	          : prov_xlate_body(pc, &br_dialect, &o->body, err, errsz);
	if (rc == -1)
		return -1;
	buf_printf(&o->path, "%s/model/", d->path);
	prov_urlenc(&o->path, prov_model(pc));
	buf_adds(&o->path,
	         anth
	             ? (pc->stream ? "/invoke-with-response-stream" : "/invoke")
	             : (pc->stream ? "/converse-stream" : "/converse"));
	buf_adds(&o->headers, "Content-Type: application/json\r\n");
	buf_adds(&o->headers, pc->stream ? "Accept: application/"
	                                   "vnd.amazon.eventstream\r\n"
	                                 : "Accept: application/json\r\n");
	if (pc->stream && anth)
		buf_adds(&o->headers,
		         "X-Amzn-Bedrock-Accept: application/json\r\n");
	prov_extra_headers(d, &o->headers);
	if (o->path.oom || o->headers.oom || o->body.oom)
		return -1;
	if (!d->aws_access_key_id[0]) {
		buf_printf(&o->headers, "Authorization: Bearer %s\r\n",
		           d->api_key);
		return o->headers.oom ? -1 : 0;
	}
	return br_sign(pc, o);
}

/* ---- errors ---- */

/* The class of a Bedrock error or exception name (with or without the
 * "Exception" suffix, any case); EC_OK when unknown. */
static enum errclass
br_error_class(const char *name, size_t n)
{
	static const struct {
		const char *name;
		enum errclass cls;
	} map[] = {
	    {"throttling", EC_RATE_LIMITED},
	    {"servicequotaexceeded", EC_RATE_LIMITED},
	    {"accessdenied", EC_AUTH},
	    {"unrecognizedclient", EC_AUTH},
	    {"invalidsignature", EC_AUTH},
	    {"incompletesignature", EC_AUTH},
	    {"expiredtoken", EC_AUTH},
	    {"missingauthenticationtoken", EC_AUTH},
	    {"resourcenotfound", EC_NOT_FOUND},
	    {"validation", EC_BAD_REQUEST},
	    {"modelnotready", EC_TRANSIENT},
	    {"modeltimeout", EC_TRANSIENT},
	    {"internalserver", EC_TRANSIENT},
	    {"serviceunavailable", EC_TRANSIENT},
	    {"modelerror", EC_TRANSIENT},
	    {"modelstreamerror", EC_TRANSIENT},
	};
	size_t k;

	if (n > 9 && strncasecmp(name + n - 9, "exception", 9) == 0)
		n -= 9;
	for (k = 0; k < sizeof map / sizeof map[0]; k++)
		if (strlen(map[k].name) == n &&
		    strncasecmp(map[k].name, name, n) == 0)
			return map[k].cls;
	return EC_OK;
}

/* Fill e from a Bedrock error named name (n bytes) with a {"message"}
 * body; a validation error reading as a context overflow is one. */
static void
br_named_error(int status, const char *name, size_t n, const char *body,
               size_t len, struct upstream_error *e)
{
	enum errclass cls = br_error_class(name, n);

	prov_error(status, body, len, e);
	snprintf(e->type, sizeof e->type, "%.*s", (int)n, name);
	if (cls == EC_OK)
		return;
	e->cls = cls;
	if (cls == EC_BAD_REQUEST &&
	    (classify_is_context_text(e->message) ||
	     strcasestr(e->message, "input is too long") != NULL))
		e->cls = EC_CONTEXT_WINDOW;
}

/* Classify an HTTP error reply by its x-amzn-ErrorType, else its body. */
static void
br_classify(const struct prov_call *pc, int status, const char *errtype,
            const char *body, size_t len, struct upstream_error *e)
{
	int64_t ra = e->retry_after_ms;
	int sr = e->should_retry;

	(void)pc;
	if (errtype && errtype[0])
		br_named_error(status, errtype, strlen(errtype), body, len, e);
	else
		prov_error(status, body, len, e);
	e->retry_after_ms = ra;
	e->should_retry = sr;
}

/* An exception or error message inside a stream: classified as its HTTP
 * counterpart would be; always -1. */
static int
br_stream_exception(const char *ev, size_t elen, const char *data, size_t dlen,
                    struct upstream_error *e)
{
	const char *name = (const char *)memchr(ev, ':', elen) + 1;
	size_t n = elen - (size_t)(name - ev);
	enum errclass cls = br_error_class(name, n);
	int status = cls == EC_RATE_LIMITED  ? 429
	             : cls == EC_BAD_REQUEST ? 400
	             : cls == EC_AUTH        ? 403
	             : cls == EC_NOT_FOUND   ? 404
	                                     : 500;

	if (elen > 6 && memcmp(ev, "error:", 6) == 0) {
		prov_error(500, NULL, 0, e);
		snprintf(e->message, sizeof e->message, "%.*s",
		         (int)(dlen < 200 ? dlen : 200), data);
		snprintf(e->type, sizeof e->type, "%.*s", (int)n, name);
		return -1;
	}
	br_named_error(status, name, n, data, dlen, e);
	if (cls == EC_OK)
		e->cls = EC_TRANSIENT;
	return -1;
}

/* ---- Converse replies ---- */

/* OpenAI finish_reason for a Converse stopReason token. */
static const char *
br_finish(const struct json *j, int t, int *cf)
{
	if (json_eq(j, t, "max_tokens") ||
	    json_eq(j, t, "model_context_window_exceeded"))
		return "length";
	if (json_eq(j, t, "tool_use"))
		return "tool_calls";
	if (json_eq(j, t, "guardrail_intervened") ||
	    json_eq(j, t, "content_filtered")) {
		*cf = 1;
		return "content_filter";
	}
	return "stop";
}

/* Read a Converse usage object. */
static void
br_usage(const struct json *j, int u, struct usage *out)
{
	long long v, c = 0;

	if (json_int(j, json_get(j, u, "inputTokens"), &v) == 0) {
		json_int(j, json_get(j, u, "cacheReadInputTokens"), &c);
		out->prompt_tokens = v + c;
		c = 0;
		json_int(j, json_get(j, u, "cacheWriteInputTokens"), &c);
		out->prompt_tokens += c;
	}
	if (json_int(j, json_get(j, u, "outputTokens"), &v) == 0)
		out->completion_tokens = v;
}

/* Write the toolUse blocks of content as tool_calls; -1 if malformed. */
static int
br_resp_tools(struct jw *jw, const struct json *j, int content)
{
	int n = json_size(j, content), tu, any = 0;

	for (int i = 0; i < n; i++) {
		tu = json_get(j, json_at(j, content, i), "toolUse");
		if (tu < 0)
			continue;
		if (json_type(j, json_get(j, tu, "toolUseId")) != JSMN_STRING ||
		    json_type(j, json_get(j, tu, "name")) != JSMN_STRING)
			return -1;
		if (!any++) {
			jw_key(jw, "tool_calls");
			jw_arr(jw);
		}
		jw_obj(jw);
		prov_tool_call(jw, j, json_get(j, tu, "toolUseId"), NULL,
		               json_get(j, tu, "name"),
		               json_get(j, tu, "input"), "{}");
		jw_obj_end(jw);
	}
	if (any)
		jw_arr_end(jw);
	return 0;
}

/* Write the chat.completion of a parsed Converse reply. */
static int
br_completion(const struct prov_call *pc, const struct json *j, struct buf *out,
              struct usage *u, int *cf, struct upstream_error *e)
{
	int content = json_path(j, 0, "output.message.content"), n, t;
	const char *fin;
	struct buf text = {0};
	struct jw jw;
	int any = 0;

	if (json_type(j, content) != JSMN_ARRAY)
		return prov_malformed(e, "no 'output.message.content' array");
	fin = br_finish(j, json_get(j, 0, "stopReason"), cf);
	n = json_size(j, content);
	for (int i = 0; i < n; i++)
		if ((t = json_get(j, json_at(j, content, i), "text")) >= 0 &&
		    json_str_buf(j, t, &text) >= 0)
			any = 1;
	prov_completion_head(&jw, out, j, -1, "chatcmpl-bedrock", -1,
	                     prov_model(pc));
	jw_key(&jw, "choices");
	jw_arr(&jw);
	jw_obj(&jw);
	jw_key(&jw, "index");
	jw_int(&jw, 0);
	prov_message_open(&jw, any ? &text : NULL);
	buf_free(&text);
	if (br_resp_tools(&jw, j, content) == -1)
		return prov_malformed(e, "toolUse without toolUseId or name");
	jw_obj_end(&jw);
	jw_key(&jw, "finish_reason");
	jw_cstr(&jw, fin);
	jw_obj_end(&jw);
	jw_arr_end(&jw);
	br_usage(j, json_get(j, 0, "usage"), u);
	prov_usage(&jw, u);
	jw_obj_end(&jw);
	return 0;
}

/* A whole reply: a Message (InvokeModel, through Anthropic's
 * translation) or a Converse reply. */
static int
br_response(const struct prov_call *pc, const char *body, size_t len,
            struct buf *out, struct usage *u, int *cf, struct upstream_error *e)
{
	if (br_is_anthropic(pc))
		return prov_anthropic.response(pc, body, len, out, u, cf, e);
	return prov_reply(pc, body, len, br_completion, out, u, cf, e);
}

/* ---- streams ---- */

/* An InvokeModelWithResponseStream chunk: {"bytes":"<base64 of one
 * Anthropic event>"} through Anthropic's stream translation, with the
 * event's type as its name. */
static int
br_invoke_chunk(const struct prov_call *pc, struct stream_state *st,
                const char *data, size_t dlen, struct buf *out,
                struct upstream_error *e)
{
	static struct json j, ev;
	static struct buf raw;
	const char *bs;
	size_t bl;
	char type[64];
	int t;

	if (prov_json_obj(&j, data, dlen, "chunk is not a JSON object", e) ==
	    -1)
		return -1;
	t = json_get(&j, 0, "bytes");
	if (json_type(&j, t) != JSMN_STRING)
		return prov_malformed(e, "chunk without 'bytes'");
	bs = json_raw(&j, t, &bl);
	buf_reset(&raw);
	if (b64_decode(&raw, bs + 1, bl - 2) == -1)
		return prov_malformed(e, "chunk 'bytes' is not base64");
	if (prov_json_obj(&ev, buf_cstr(&raw), raw.len,
	                  "chunk event is not a JSON object", e) == -1)
		return -1;
	type[0] = '\0';
	json_str(&ev, json_get(&ev, 0, "type"), type, sizeof type);
	return prov_anthropic.stream_event(pc, st, type, strlen(type), raw.data,
	                                   raw.len, out, e);
}

/* ConverseStream event types, in the order of br_events. */
enum br_ev {
	BE_MESSAGE_START = 0,
	BE_BLOCK_START,
	BE_BLOCK_DELTA,
	BE_BLOCK_STOP,
	BE_MESSAGE_STOP,
	BE_METADATA,
};
static const char *const br_events[] = {"messageStart",
                                        "contentBlockStart",
                                        "contentBlockDelta",
                                        "contentBlockStop",
                                        "messageStop",
                                        "metadata",
                                        NULL};

/* The tool_block slot of an event's contentBlockIndex, or -1. */
static int
br_block(const struct json *j)
{
	long long bi;

	if (json_int(j, json_get(j, 0, "contentBlockIndex"), &bi) == -1 ||
	    bi < 0 || bi >= 64)
		return -1;
	return (int)bi;
}

/* contentBlockStart with a toolUse: open an OpenAI tool call. */
static int
br_ev_block_start(struct stream_state *st, const struct json *j,
                  struct buf *out, struct upstream_error *e)
{
	int tu = json_path(j, 0, "start.toolUse"), bi = br_block(j), id, name;
	struct jw jw;

	if (tu < 0)
		return 0;
	id = json_get(j, tu, "toolUseId");
	name = json_get(j, tu, "name");
	if (bi < 0 || json_type(j, id) != JSMN_STRING ||
	    json_type(j, name) != JSMN_STRING)
		return prov_malformed(e, "bad toolUse contentBlockStart");
	if (st->ntool >= PROV_MAX_TOOLS)
		return prov_malformed(e, "more than 255 tool calls");
	st->tool_block[bi] = (uint8_t)++st->ntool;
	prov_tool_delta_open(st, out, &jw, st->ntool - 1);
	prov_tool_call(&jw, j, id, NULL, name, -1, "");
	prov_tool_delta_close(st, &jw);
	return 0;
}

/* A toolUse input fragment: the tool call's arguments. */
static int
br_ev_tool_delta(struct stream_state *st, const struct json *j, int in,
                 struct buf *out, struct upstream_error *e)
{
	int bi = br_block(j);
	struct jw jw;

	if (bi < 0 || st->tool_block[bi] == 0 ||
	    json_type(j, in) != JSMN_STRING)
		return prov_malformed(e, "toolUse delta outside a toolUse");
	buf_reset(&st->partial);
	if (json_str_buf(j, in, &st->partial) <= 0)
		return 0;
	prov_tool_delta_open(st, out, &jw, st->tool_block[bi] - 1);
	jw_key(&jw, "function");
	jw_obj(&jw);
	jw_key(&jw, "arguments");
	jw_str(&jw, st->partial.data, st->partial.len);
	jw_obj_end(&jw);
	prov_tool_delta_close(st, &jw);
	return 0;
}

/* contentBlockDelta: text, or tool input; reasoning is not shown. */
static int
br_ev_block_delta(struct stream_state *st, const struct json *j,
                  struct buf *out, struct upstream_error *e)
{
	int d = json_get(j, 0, "delta"), t;

	if (json_type(j, d) != JSMN_OBJECT)
		return prov_malformed(e, "contentBlockDelta without a delta");
	if ((t = json_get(j, d, "text")) >= 0) {
		if (prov_chunk_str(st, out, j, t) == -1)
			return prov_malformed(e, "text delta is not a string");
		return 0;
	}
	if ((t = json_path(j, d, "toolUse.input")) >= 0)
		return br_ev_tool_delta(st, j, t, out, e);
	return 0;
}

/* metadata: the usage, the last event. */
static int
br_ev_metadata(struct stream_state *st, const struct json *j, struct buf *out)
{
	br_usage(j, json_get(j, 0, "usage"), &st->usage);
	if (!st->finished)
		prov_chunk_finish(st, out, "stop");
	if (st->include_usage)
		prov_chunk_usage(st, out);
	return 1;
}

/* Translate one ConverseStream event into OpenAI chunks. */
static int
br_converse_event(const struct prov_call *pc, struct stream_state *st,
                  const char *ev, size_t elen, const char *data, size_t dlen,
                  struct buf *out, struct upstream_error *e)
{
	static struct json j;

	if (prov_json_obj(&j, data, dlen, "stream event is not a JSON object",
	                  e) == -1)
		return -1;
	switch (prov_event_index(&j, ev, elen, br_events)) {
	case BE_MESSAGE_START:
		if (st->id[0] == '\0')
			snprintf(st->id, sizeof st->id, "chatcmpl-bedrock");
		if (st->model[0] == '\0')
			snprintf(st->model, sizeof st->model, "%s",
			         prov_model(pc));
		prov_chunk_role(st, out);
		return 0;
	case BE_BLOCK_START:
		return br_ev_block_start(st, &j, out, e);
	case BE_BLOCK_DELTA:
		return br_ev_block_delta(st, &j, out, e);
	case BE_MESSAGE_STOP:
		if (!st->finished)
			prov_chunk_finish(
			    st, out,
			    br_finish(&j, json_get(&j, 0, "stopReason"),
			              &st->content_filter));
		return 0;
	case BE_METADATA:
		return br_ev_metadata(st, &j, out);
	default:
		return 0;
	}
}

/* One event stream message: an exception or error is classified; a
 * chunk goes through Anthropic's translation, a Converse event through
 * ours. */
static int
br_stream_event(const struct prov_call *pc, struct stream_state *st,
                const char *ev, size_t elen, const char *data, size_t dlen,
                struct buf *out, struct upstream_error *e)
{
	if ((elen > 10 && memcmp(ev, "exception:", 10) == 0) ||
	    (elen > 6 && memcmp(ev, "error:", 6) == 0))
		return br_stream_exception(ev, elen, data, dlen, e);
	if (br_is_anthropic(pc)) {
		if (elen == 5 && memcmp(ev, "chunk", 5) == 0)
			return br_invoke_chunk(pc, st, data, dlen, out, e);
		return 0;
	}
	return br_converse_event(pc, st, ev, elen, data, dlen, out, e);
}

/* The body ended after the finish without its terminal event. */
static void
br_stream_end(const struct prov_call *pc, struct stream_state *st,
              struct buf *out)
{
	if (br_is_anthropic(pc)) {
		prov_anthropic.stream_end(pc, st, out);
		return;
	}
	if (st->include_usage)
		prov_chunk_usage(st, out);
}

const struct provider prov_bedrock = {
    .name = "bedrock",
    .formats = PROV_FMT(FMT_CHAT) | PROV_FMT(FMT_MESSAGES),
    .formats_of = br_formats_of,
    .framing = PROV_FRAME_EVENTSTREAM,
    .classify = br_classify,
    .build = br_build,
    .response = br_response,
    .stream_event = br_stream_event,
    .stream_end = br_stream_end,
};
