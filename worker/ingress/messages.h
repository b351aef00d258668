/* Anthropic Messages ingress (INGRESS.md §1): a client's /v1/messages
 * request becomes the engine's canonical OpenAI Chat Completions body, and
 * the engine's canonical replies (a chat.completion, or chat.completion.chunk
 * objects) become Messages replies and events. Pure functions over buffers:
 * no I/O, no event loop. */
#ifndef LLMFD_INGRESS_MESSAGES_H
#define LLMFD_INGRESS_MESSAGES_H

#include <stddef.h>

#include "common/buf.h"
#include "common/json.h"

/* Anthropic Messages request (parsed; token 0 is the root object) ->
 * canonical Chat Completions request body appended to out. 0, or -1 with a
 * client-facing reason in err (the engine answers 400
 * invalid_request_error); out is left as it was on -1.
 *
 * thinking {type:"enabled",budget_tokens:B} becomes reasoning_effort:
 *   B < 8192 -> "low", B < 24576 -> "medium", otherwise "high"
 * (Claude Code's "think" asks 4000, "think hard" 10000, "ultrathink"
 * 31999). {type:"disabled"} and {type:"adaptive"} set none;
 * output_config.effort low/medium/high is used when thinking sets none
 * ("max" -> "high"). max_tokens becomes max_completion_tokens. */
int msgs_to_chat(const struct json *j, struct buf *out, char *err,
                 size_t errsz);

/* Canonical chat.completion JSON -> Messages reply JSON (§1.3) appended to
 * out. -1 (out unchanged) if the canonical body is not understood. */
int msgs_reply(const char *chat, size_t n, struct buf *out);

/* Stream encoder state. The caller may preset input_tokens (an estimate)
 * and model (used when chunks carry none) after msgs_stream_init. */
struct msgs_stream {
	struct json j; /* chunk parse, reused */
	char id[128];  /* msg_... */
	char model[128];
	char tool_id[128]; /* id of the open tool_use block */
	char finish[32];   /* last finish_reason seen */
	long long input_tokens;
	long long cached_tokens;
	long long output_tokens;
	int started;    /* message_start written */
	int ended;      /* done or fail written */
	int nblocks;    /* content blocks opened so far */
	int open;       /* kind of the open block (MSGS_BLOCK_*), 0 none */
	int tool_index; /* canonical index of the open tool call */
	int tool_seen;
	int refusal;
};
#define MSGS_BLOCK_TEXT     1
#define MSGS_BLOCK_THINKING 2
#define MSGS_BLOCK_TOOL     3

void msgs_stream_init(struct msgs_stream *);
void msgs_stream_free(struct msgs_stream *);
/* One canonical chunk (JSON text) -> zero or more Messages SSE events
 * ("event: X\ndata: {...}\n\n") appended to out. -1 if not understood
 * (nothing appended). */
int msgs_stream_chunk(struct msgs_stream *, const char *data, size_t n,
                      struct buf *out);
/* The stream completed: close the open block, message_delta (stop_reason,
 * usage), message_stop. */
void msgs_stream_done(struct msgs_stream *, struct buf *out);
/* The stream failed after bytes reached the client: event: error with the
 * type for status, no message_stop. */
void msgs_stream_fail(struct msgs_stream *, int status, const char *msg,
                      struct buf *out);
void msgs_ping(struct buf *out);

/* Error body in Anthropic's shape for an HTTP status (§1.5), with an
 * optional request_id and an optional attempt trail (a JSON array text,
 * placed under top-level "attempts"; ignored unless it is one). When code
 * is "context_length_exceeded" the message reads "prompt is too long: N
 * tokens > M maximum" when N and M can be read from msg, otherwise
 * "prompt is too long: " + msg. */
void msgs_error(struct buf *out, int status, const char *code, const char *msg,
                const char *request_id, const char *trail, size_t trail_len);
/* Anthropic error.type for an HTTP status. */
const char *msgs_error_type(int status);

/* count_tokens estimate when no Anthropic upstream can answer, or -1 if j
 * is not a request with a messages array. Heuristic: ceil(bytes / 4) over
 * the decoded text of system, text blocks, tool_use inputs, tool results
 * and tool definitions (raw JSON), plus 3 per message, 1600 per image
 * (Anthropic's size cap is about 1.15 megapixels = 1600 tokens), 2000 per
 * started 50 kB of PDF, and 346 when tools are given (the tool-use system
 * prompt). Thinking blocks of earlier turns are not counted. */
long msgs_count_tokens(const struct json *j);

#endif
