/* The engine's client_ops over http.c's connections, and the request
 * entry points for each client protocol. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "worker/client.h"
#include "worker/conn.h"
#include "worker/http.h"
#include "worker/ident.h"
#include "worker/ingress.h"
#include "worker/request.h"
#include "worker/worker.h"

#define REQ_MAX_BODY (32 << 20)

static const char *
ev_get_header(void *c, const char *name)
{
	return http_header(c, name);
}

static void
ev_header(void *c, const char *name, const char *value)
{
	http_add_header(c, name, value);
}

static void
ev_header_lines(void *c, const char *lines, size_t n)
{
	http_add_lines(c, lines, n);
}

static void
ev_reply(void *c, int status, const char *ctype, const char *body, size_t n)
{
	http_reply(c, status, ctype, body, n);
}

static void
ev_start(void *c, int status, const char *ctype)
{
	http_stream_start(c, status, ctype);
}

static void
ev_chunk(void *c, const char *p, size_t n)
{
	http_stream_data(c, p, n);
}

static void
ev_end(void *c)
{
	http_stream_end(c);
}

/* The engine took request c: a close of its connection reaches r. */
static void
ev_attach(void *c, struct req *r)
{
	http_attach(c, r);
}

/* The engine is done with the request. */
static void
ev_detach(void *c, struct req *r)
{
	(void)r;
	http_attach(c, NULL);
}

static const struct peer *
ev_peer(void *c)
{
	return http_peer(c);
}

static const struct client_ops ev_ops = {
    .get_header = ev_get_header,
    .header = ev_header,
    .header_lines = ev_header_lines,
    .reply = ev_reply,
    .start = ev_start,
    .chunk = ev_chunk,
    .end = ev_end,
    .attach = ev_attach,
    .detach = ev_detach,
    .peer = ev_peer,
};

/* Hand one request to the engine in the protocol of ig. */
static void
client_handle(struct hconn *hc, struct worker *w, const struct ingress *ig)
{
	struct evbuffer *eb = http_body_buf(hc);
	size_t len;
	const char *body = http_body(hc, &len);
	struct buf b = {0};

	if (http_method(hc) != HTTP_POST) {
		server_send_error(hc, 405, "invalid_request_error",
		                  "method_not_allowed", "use POST");
		return;
	}
	if (w->draining)
		http_add_header(hc, "Connection", "close");
	if (len > REQ_MAX_BODY) {
		ig->error(&b, 413, "invalid_request_error", "body_too_large",
		          "request body is larger than 32 MiB", NULL, NULL, 0);
		server_send_json(hc, 413, &b);
		buf_free(&b);
		return;
	}
	if (eb != NULL)
		req_start_buf(w, &ev_ops, hc, ig, eb);
	else
		req_start(w, &ev_ops, hc, ig, body, len);
}

/* POST /v1/chat/completions */
void
client_chat(struct hconn *hreq, struct worker *arg)
{
	client_handle(hreq, arg, &ingress_chat);
}

/* POST /v1/messages (also ?beta=true) */
void
client_messages(struct hconn *hreq, struct worker *arg)
{
	client_handle(hreq, arg, &ingress_messages);
}

/* POST /v1/messages/count_tokens (also ?beta=true): counted by an
 * Anthropic-family upstream of the model's candidates, else llmfd's
 * estimate (msgs_count_tokens, INGRESS.md §1.1). */
void
client_count_tokens(struct hconn *hreq, struct worker *arg)
{
	client_handle(hreq, arg, &ingress_count_tokens);
}

/* POST /v1/responses */
void
client_responses(struct hconn *hreq, struct worker *arg)
{
	client_handle(hreq, arg, &ingress_responses);
}

/* POST /v1/embeddings */
void
client_embeddings(struct hconn *hreq, struct worker *arg)
{
	client_handle(hreq, arg, &ingress_embeddings);
}
