/* OpenAI Chat Completions and Embeddings, served. The client's body is the
 * canonical document itself, and canonical replies and chunks go out as
 * they are; this ingress checks the body, ends streams with [DONE], and
 * writes OpenAI's error object, which every OpenAI-shaped answer shares. */
#include <string.h>

#include "common/json.h"
#include "worker/ingress.h"
#include "worker/provider.h"

/* llmfd's own request fields, never forwarded upstream. */
const char *const ingress_canon_drop_keys[] = {INGRESS_LLMFD_KEYS, "metadata",
                                               NULL};

/* The bulk of a Chat / Embeddings body, which the engine need not
 * tokenize unless a provider translates it. */
static const char *const chat_bulk_keys[] = {"messages", "tools", "functions",
                                             NULL};
static const char *const embed_bulk_keys[] = {"input", NULL};

/* Fill e with a 400 invalid_request_error. */
static int
chat_refuse(struct ingress_err *e, const char *code, const char *msg)
{
	e->status = 400;
	e->type = "invalid_request_error";
	e->code = code;
	strncpy(e->msg, msg, sizeof e->msg - 1);
	return -1;
}

/* `messages` must be an array. */
static int
chat_parse(const struct json *j, struct buf *canon, struct ingress_err *e)
{
	(void)canon;
	if (json_type(j, json_get(j, 0, "messages")) != JSMN_ARRAY)
		return chat_refuse(e, "missing_messages",
		                   "'messages' is required and must be an "
		                   "array");
	return 0;
}

/* `input` must be present. */
static int
embed_parse(const struct json *j, struct buf *canon, struct ingress_err *e)
{
	(void)canon;
	if (json_get(j, 0, "input") < 0)
		return chat_refuse(e, "missing_input", "'input' is required");
	return 0;
}

/* OpenAI's error object: {"error":{message,type,param,code[,attempts]}}. */
void
ingress_openai_error(struct buf *out, int status, const char *type,
                     const char *code, const char *msg, const char *request_id,
                     const char *trail, size_t tlen)
{
	struct jw jw;

	(void)status;
	(void)request_id;
	jw_init(&jw, out);
	jw_obj(&jw);
	jw_key(&jw, "error");
	jw_obj(&jw);
	jw_key(&jw, "message");
	jw_cstr(&jw, msg ? msg : "");
	jw_key(&jw, "type");
	jw_cstr(&jw, type);
	jw_key(&jw, "param");
	jw_null(&jw);
	jw_key(&jw, "code");
	if (code)
		jw_cstr(&jw, code);
	else
		jw_null(&jw);
	if (trail) {
		jw_key(&jw, "attempts");
		jw_raw(&jw, trail, tlen);
	}
	jw_obj_end(&jw);
	jw_obj_end(&jw);
}

/* The stream completed. */
static void
chat_done(void *st, struct buf *out)
{
	(void)st;
	buf_adds(out, "data: [DONE]\n\n");
}

/* A keep-alive on an idle stream: an SSE comment, which clients ignore. */
void
ingress_sse_comment(void *st, struct buf *out)
{
	(void)st;
	buf_adds(out, ": keepalive\n\n");
}

/* A stream cut after bytes reached the client: a final error event and no
 * [DONE], so the client cannot mistake it for complete. */
static void
chat_fail(void *st, int status, const char *code, const char *msg,
          const char *deployment, struct buf *out)
{
	struct jw jw;

	(void)st;
	(void)status;
	buf_adds(out, "data: ");
	jw_init(&jw, out);
	jw_obj(&jw);
	jw_key(&jw, "error");
	jw_obj(&jw);
	jw_key(&jw, "message");
	jw_cstr(&jw, msg);
	jw_key(&jw, "type");
	jw_cstr(&jw, "upstream_error");
	jw_key(&jw, "code");
	jw_cstr(&jw, code ? code : "stream_interrupted");
	if (deployment && strcmp(deployment, "-") != 0) {
		jw_key(&jw, "deployment");
		jw_cstr(&jw, deployment);
	}
	jw_obj_end(&jw);
	jw_obj_end(&jw);
	buf_adds(out, "\n\n");
}

const char *const ingress_names[ING__MAX] = {[ING_CHAT] = "chat",
                                             [ING_EMBED] = "embeddings",
                                             [ING_MESSAGES] = "messages",
                                             [ING_RESPONSES] = "responses"};

const struct ingress ingress_chat = {
    .id = ING_CHAT,
    .name = "chat",
    .endpoint = EP_CHAT,
    .fmt = FMT_CHAT,
    .drop_keys = ingress_canon_drop_keys,
    .bulk_keys = chat_bulk_keys,
    .parse = chat_parse,
    .done = chat_done,
    .fail = chat_fail,
    .error = ingress_openai_error,
    .ping = ingress_sse_comment,
    .stream_type = "text/event-stream",
};

const struct ingress ingress_embeddings = {
    .id = ING_EMBED,
    .name = "embeddings",
    .endpoint = EP_EMBED,
    .fmt = FMT_CHAT,
    .drop_keys = ingress_canon_drop_keys,
    .bulk_keys = embed_bulk_keys,
    .parse = embed_parse,
    .done = chat_done,
    .fail = chat_fail,
    .error = ingress_openai_error,
    .stream_type = "text/event-stream",
};
