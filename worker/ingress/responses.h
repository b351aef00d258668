/* OpenAI Responses API served by llmfd (INGRESS.md section 2): a Responses
 * request becomes a canonical Chat Completions body, and canonical replies
 * (a chat.completion object, or chat.completion.chunk objects) become a
 * Response object or Responses stream events. Pure functions over buffers:
 * no I/O, no event loop. llmfd keeps no state between requests, so
 * previous_response_id, conversation and item_reference are refused. */
#ifndef LLMFD_INGRESS_RESPONSES_H
#define LLMFD_INGRESS_RESPONSES_H

#include <stddef.h>

#include "common/buf.h"
#include "common/json.h"
#include "worker/ingress/canon.h"

/* Responses request (parsed; token 0 is the root) -> canonical Chat
 * Completions body appended to out. 0, or -1 with *status (400), a
 * client-facing reason in err and *code set (e.g.
 * "previous_response_not_found", "unsupported_value"); out is then left
 * as it was. */
int resp_to_chat(const struct json *j, struct buf *out, int *status,
                 const char **code, char *err, size_t errsz);

/* Canonical chat.completion JSON -> Response object appended to out. req
 * is the client's request, for the fields a Response echoes. 0, or -1
 * (out left as it was) when chat is not a chat.completion. */
int resp_reply(const struct json *req, const char *chat, size_t n,
               struct buf *out);

/* Stream encoder state; all fields are private to responses.c. */
struct resp_stream {
	char id[48];   /* resp_<hex> */
	char base[32]; /* random hex shared by this response's item ids */
	long long created_at;
	long long seq; /* next sequence_number */
	int started;   /* response.created and .in_progress sent */
	int ended;     /* a terminal event sent */
	int nout;      /* output items opened */
	int finish;    /* RESP_FIN_* of the last finish_reason */
	struct buf model;
	struct buf echo;   /* request fields every Response repeats (object) */
	struct buf output; /* finished output items, comma-separated */
	/* the open output item */
	int item; /* RESP_ITEM_* */
	char item_id[64];
	int part;   /* RESP_PART_* open in a message */
	int nparts; /* parts closed in the open message */
	struct buf
	    parts;       /* closed parts of the open message, comma-separated */
	struct buf text; /* open part text, arguments or summary text */
	struct buf name;
	struct buf call_id;
	int tool;                    /* canonical index of the open call */
	unsigned char tool_done[32]; /* canonical indexes of closed calls */
	struct canon_usage usage;
	struct buf scratch; /* decoded delta text */
	struct json j;      /* chunk parse scratch */
};

/* Start a stream for the client's request req (read only here). */
void resp_stream_init(struct resp_stream *, const struct json *req);
void resp_stream_free(struct resp_stream *);
/* One canonical chunk (the JSON of a "data:" line) -> zero or more
 * Responses SSE events ("event: T\ndata: {...}\n\n") appended to out;
 * response.created and response.in_progress come before the first. 0, or
 * -1 if the chunk is not understood (nothing is appended then). */
int resp_stream_chunk(struct resp_stream *, const char *data, size_t n,
                      struct buf *out);
/* The canonical stream completed: close the open item and send
 * response.completed, or response.incomplete when the finish was length or
 * content_filter, with the whole response (output and usage). */
void resp_stream_done(struct resp_stream *, struct buf *out);
/* The stream failed after bytes reached the client: response.failed with
 * response.error {code, message}. code may be an OpenAI code or an llmfd
 * error class name (or NULL: derived from status); it is mapped onto the
 * codes clients act on (server_error, rate_limit_exceeded,
 * context_length_exceeded, insufficient_quota, invalid_prompt). */
void resp_stream_fail(struct resp_stream *, int status, const char *code,
                      const char *msg, struct buf *out);

#endif
