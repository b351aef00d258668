/* The OpenAI Responses API, served: struct ingress over the converters of
 * responses.c. Errors before the reply are OpenAI-shaped; a stream that
 * fails after bytes reached the client ends with response.failed. The
 * client's body is offered as it is to providers that speak Responses
 * natively. */
#include <string.h>

#include "worker/ingress.h"
#include "worker/ingress/responses.h"
#include "worker/provider.h"

/* llmfd's fields in a Responses body; `metadata` is OpenAI's own. */
static const char *const resp_drop_keys[] = {INGRESS_LLMFD_KEYS, NULL};

/* Per-request state: the stream encoder and the client's request. */
struct ig_resp {
	struct resp_stream s;
	const struct json *req;
};

static int
ig_resp_parse(const struct json *j, struct buf *canon, struct ingress_err *e)
{
	int status = 400;
	const char *code = NULL;

	if (resp_to_chat(j, canon, &status, &code, e->msg, sizeof e->msg) == 0)
		return 0;
	e->status = status;
	e->type = "invalid_request_error";
	e->code = code;
	return -1;
}

static void
ig_resp_init(void *st, const struct json *client)
{
	struct ig_resp *s = st;

	resp_stream_init(&s->s, client);
	s->req = client;
}

static void
ig_resp_fini(void *st)
{
	resp_stream_free(&((struct ig_resp *)st)->s);
}

static int
ig_resp_reply(void *st, const char *canon, size_t n, struct buf *out)
{
	return resp_reply(((struct ig_resp *)st)->req, canon, n, out);
}

static int
ig_resp_chunk(void *st, const char *data, size_t n, struct buf *out)
{
	return resp_stream_chunk(&((struct ig_resp *)st)->s, data, n, out);
}

static void
ig_resp_done(void *st, struct buf *out)
{
	resp_stream_done(&((struct ig_resp *)st)->s, out);
}

static void
ig_resp_fail(void *st, int status, const char *code, const char *msg,
             const char *deployment, struct buf *out)
{
	(void)deployment;
	resp_stream_fail(&((struct ig_resp *)st)->s, status, code, msg, out);
}

const struct ingress ingress_responses = {
    .id = ING_RESPONSES,
    .name = "responses",
    .endpoint = EP_CHAT,
    .fmt = FMT_RESPONSES,
    .drop_keys = resp_drop_keys,
    .parse = ig_resp_parse,
    .state_size = sizeof(struct ig_resp),
    .init = ig_resp_init,
    .fini = ig_resp_fini,
    .reply = ig_resp_reply,
    .chunk = ig_resp_chunk,
    .done = ig_resp_done,
    .fail = ig_resp_fail,
    .error = ingress_openai_error,
    .ping = ingress_sse_comment,
    .stream_type = "text/event-stream",
};
