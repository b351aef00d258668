/* Client protocols (ingress). The path picks one; it checks the client's
 * body and turns it into the canonical request (an OpenAI Chat Completions
 * document, which every provider translates from), and it turns the
 * engine's canonical replies, stream chunks and errors back into the
 * client's protocol. The engine calls these through struct ingress and
 * never knows which protocol the client spoke. */
#ifndef LLMFD_INGRESS_H
#define LLMFD_INGRESS_H

#include <stddef.h>

#include "common/buf.h"
#include "common/json.h"

/* Why a body was refused, as the client will be told. */
struct ingress_err {
	int status;
	const char *type; /* OpenAI error type, mapped by the ingress */
	const char *code;
	char msg[200];
};

/* Ingress ids: metrics count requests by these. */
#define ING_CHAT      0
#define ING_EMBED     1
#define ING_MESSAGES  2
#define ING_RESPONSES 3
#define ING__MAX      4
extern const char *const ingress_names[ING__MAX];

struct ingress {
	int id;           /* ING_* */
	const char *name; /* "chat", "embeddings", ...: logs and metrics */
	/* What providers build: EP_CHAT, EP_EMBED, or EP_COUNT (only by a
	 * provider that counts the client's format natively, see
	 * provider.counts; the other candidates are passed over). */
	int endpoint;
	/* The wire format of the client's body (FMT_*), offered to providers
	 * that speak it natively (same-format passthrough); -1 if none beyond
	 * the canonical form itself. */
	int fmt;
	/* The client's top-level keys never forwarded upstream (llmfd's own
	 * fields), NULL-terminated. */
	const char *const *drop_keys;
	/* The top-level members parse() does not look into (a chat body's
	 * messages and tools): the engine checks them without tokenizing
	 * what they hold (json_parse_top) and parses them only for a
	 * provider that reads them. NULL-terminated, or NULL (all of it). */
	const char *const *bulk_keys;
	/* Request headers forwarded to a same-format upstream, or NULL. */
	const char *const *fwd_headers;
	/* The status the client sees for an engine status (NULL: as is). */
	int (*map_status)(int status);
	/* Check the client's body (j) and write the canonical document to
	 * canon, or leave canon empty when j is canonical already. 0, or -1
	 * with e filled. */
	int (*parse)(const struct json *j, struct buf *canon,
	             struct ingress_err *e);
	/* Per-request encoder state: its size, and init/free. */
	size_t state_size;
	void (*init)(void *st, const struct json *client);
	void (*fini)(void *st);
	/* A whole canonical reply -> the client's reply; NULL: as it is. */
	int (*reply)(void *st, const char *canon, size_t n, struct buf *out);
	/* One canonical stream chunk (the JSON of one data line) -> the
	 * client's events; NULL: canonical lines go out as they are. */
	int (*chunk)(void *st, const char *data, size_t n, struct buf *out);
	/* The stream completed / failed after bytes reached the client. */
	void (*done)(void *st, struct buf *out);
	void (*fail)(void *st, int status, const char *code, const char *msg,
	             const char *deployment, struct buf *out);
	/* An error reply before anything was sent; trail is the attempt trail
	 * as a JSON array text (NULL if none). */
	void (*error)(struct buf *out, int status, const char *type,
	              const char *code, const char *msg, const char *request_id,
	              const char *trail, size_t tlen);
	/* A stream has sent nothing for router.stream_ping_ms: write a
	 * keep-alive (a whole event, or an SSE comment) to out, or nothing.
	 * st is NULL when the stream passes the upstream's events through
	 * (they began with its own first event). NULL: none. */
	void (*ping)(void *st, struct buf *out);
	/* llmfd's own answer when no candidate gave one (every one failed,
	 * was passed over, was cooling or the deadline passed): a whole
	 * reply for the client's body j written to out, 0; -1 to answer the
	 * error as usual. It names itself local_name in x-llmfd-deployment
	 * (x-llmfd-provider "llmfd"). NULL: none. */
	int (*local)(const struct json *j, struct buf *out);
	const char *local_name;
	const char *stream_type; /* Content-Type of a stream */
	/* The client's own request-id header, besides x-request-id (NULL:
	 * none); Anthropic's SDKs read `request-id`. */
	const char *id_header;
};

extern const struct ingress ingress_chat;
extern const struct ingress ingress_embeddings;
extern const struct ingress ingress_messages;
extern const struct ingress ingress_count_tokens;
extern const struct ingress ingress_responses;
/* llmfd's own request fields, in every protocol: read by the engine and
 * never forwarded upstream (LiteLLM's names fallback_models and retries
 * included). The converters copy them into the canonical document. */
#define INGRESS_LLMFD_KEYS                                                     \
	"fallbacks", "fallback_models", "num_retries", "retries", "timeout",   \
	    "stream_timeout"
/* The keys of a canonical document never forwarded (llmfd's fields). */
extern const char *const ingress_canon_drop_keys[];

/* ingress_openai.c: the OpenAI error object, shared by every protocol that
 * answers errors in OpenAI's shape. */
void ingress_openai_error(struct buf *out, int status, const char *type,
                          const char *code, const char *msg,
                          const char *request_id, const char *trail,
                          size_t tlen);
/* A stream keep-alive as an SSE comment (": keepalive"), which SSE
 * clients ignore: Chat Completions' and Responses' ping. */
void ingress_sse_comment(void *st, struct buf *out);

#endif
