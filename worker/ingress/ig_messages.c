/* The Anthropic Messages API, served: struct ingress over the converters of
 * messages.c. The client's body is offered to Anthropic-family upstreams as
 * it is (same-format passthrough, with anthropic-version and
 * anthropic-beta forwarded); other upstreams get the canonical form.
 * count_tokens goes only to Anthropic-family upstreams, with llmfd's
 * estimate when none answers. */
#include <stdio.h>
#include <string.h>

#include "worker/ingress.h"
#include "worker/ingress/messages.h"
#include "worker/provider.h"

/* llmfd's fields in a Messages body; `metadata` is Anthropic's own. */
static const char *const msgs_drop_keys[] = {INGRESS_LLMFD_KEYS, NULL};
static const char *const msgs_fwd_headers[] = {"anthropic-version",
                                               "anthropic-beta", NULL};

static int
ig_msgs_parse(const struct json *j, struct buf *canon, struct ingress_err *e)
{
	if (msgs_to_chat(j, canon, e->msg, sizeof e->msg) == 0)
		return 0;
	e->status = 400;
	e->type = "invalid_request_error";
	e->code = "invalid_request_error";
	return -1;
}

/* The stream state starts with the client's model name. */
static void
ig_msgs_init(void *st, const struct json *client)
{
	struct msgs_stream *s = st;

	msgs_stream_init(s);
	json_str(client, json_get(client, 0, "model"), s->model,
	         sizeof s->model);
}

static void
ig_msgs_fini(void *st)
{
	msgs_stream_free(st);
}

static int
ig_msgs_reply(void *st, const char *canon, size_t n, struct buf *out)
{
	(void)st;
	return msgs_reply(canon, n, out);
}

static int
ig_msgs_chunk(void *st, const char *data, size_t n, struct buf *out)
{
	return msgs_stream_chunk(st, data, n, out);
}

static void
ig_msgs_done(void *st, struct buf *out)
{
	msgs_stream_done(st, out);
}

static void
ig_msgs_fail(void *st, int status, const char *code, const char *msg,
             const char *deployment, struct buf *out)
{
	(void)code;
	(void)deployment;
	msgs_stream_fail(st, status, msg, out);
}

static void
ig_msgs_error(struct buf *out, int status, const char *type, const char *code,
              const char *msg, const char *request_id, const char *trail,
              size_t tlen)
{
	(void)type;
	msgs_error(out, status, code, msg, request_id, trail, tlen);
}

/* A ping on an idle stream, never before message_start (st NULL: the
 * upstream's own events pass through and began with its message_start). */
static void
ig_msgs_ping(void *st, struct buf *out)
{
	const struct msgs_stream *s = st;

	if (s == NULL || s->started)
		msgs_ping(out);
}

/* Every candidate down is Anthropic's "overloaded" (529), which its clients
 * retry later; the rest keep their status. */
static int
ig_msgs_status(int status)
{
	return status == 503 ? 529 : status;
}

const struct ingress ingress_messages = {
    .id = ING_MESSAGES,
    .name = "messages",
    .endpoint = EP_CHAT,
    .fmt = FMT_MESSAGES,
    .drop_keys = msgs_drop_keys,
    .fwd_headers = msgs_fwd_headers,
    .map_status = ig_msgs_status,
    .parse = ig_msgs_parse,
    .state_size = sizeof(struct msgs_stream),
    .init = ig_msgs_init,
    .fini = ig_msgs_fini,
    .reply = ig_msgs_reply,
    .chunk = ig_msgs_chunk,
    .done = ig_msgs_done,
    .fail = ig_msgs_fail,
    .error = ig_msgs_error,
    .ping = ig_msgs_ping,
    .stream_type = "text/event-stream",
    .id_header = "request-id",
};

/* A count_tokens body: a configured model and an array of messages; it goes
 * upstream as it is, so there is no canonical form. */
static int
ig_count_parse(const struct json *j, struct buf *canon, struct ingress_err *e)
{
	(void)canon;
	if (msgs_count_tokens(j) >= 0)
		return 0;
	e->status = 400;
	e->type = "invalid_request_error";
	e->code = "invalid_request_error";
	snprintf(e->msg, sizeof e->msg,
	         "messages: an array of messages is required");
	return -1;
}

/* The estimate, when no Anthropic-family upstream counted: see
 * msgs_count_tokens. */
static int
ig_count_local(const struct json *j, struct buf *out)
{
	long n = msgs_count_tokens(j);

	if (n < 0)
		return -1;
	buf_printf(out, "{\"input_tokens\":%ld}", n);
	return out->oom ? -1 : 0;
}

/* POST /v1/messages/count_tokens: counted as a Messages request (metrics,
 * routing rules), passed as it is to the candidates that count Messages
 * natively (Anthropic, Claude on Vertex), their answer returned as it is;
 * the estimate when none answers. */
const struct ingress ingress_count_tokens = {
    .id = ING_MESSAGES,
    .name = "count_tokens",
    .endpoint = EP_COUNT,
    .fmt = FMT_MESSAGES,
    .drop_keys = msgs_drop_keys,
    .fwd_headers = msgs_fwd_headers,
    .map_status = ig_msgs_status,
    .parse = ig_count_parse,
    .error = ig_msgs_error,
    .local = ig_count_local,
    .local_name = "estimate",
    .id_header = "request-id",
};
