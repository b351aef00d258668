/* The provider seam: one file per provider under worker/providers/.
 * A provider turns the client's OpenAI-shaped request into its own wire
 * format, and its replies (whole, streamed, or errors) back into OpenAI
 * shapes. Providers are pure functions over buffers: no I/O, no event loop,
 * so they are unit-tested with golden files. */
#ifndef LLMFD_PROVIDER_H
#define LLMFD_PROVIDER_H

#include <stddef.h>

#include "common/buf.h"
#include "common/cfg.h"
#include "common/classify.h"
#include "common/json.h"

enum endpoint { EP_CHAT = 0, EP_EMBED };

/* Wire formats a client body can be in (see struct ingress). */
enum wire_fmt { FMT_CHAT = 0, FMT_MESSAGES, FMT_RESPONSES };

/* Everything a provider needs to build one upstream request. */
struct prov_call {
	const struct cfg *cfg;
	const struct deploy_cfg *d;
	const struct json *req; /* parsed client body, token 0 = root */
	int endpoint;
	int stream;
	int include_usage;
	/* Top-level keys of the client body never forwarded (llmfd's own
	 * extensions: fallbacks, num_retries, timeout, stream_timeout,
	 * metadata). NULL-terminated. */
	const char *const *drop_keys;
	/* Stream continuation: text already sent to the client, to be
	 * continued (assistant prefix or instruction). NULL when none. */
	const char *resume_text;
	size_t resume_len;
	/* 1: continue as a true assistant prefill (the partial answer is the
	 * final assistant turn); 0: the instruction form (the partial answer,
	 * then a user turn with PROV_RESUME_INSTRUCTION). */
	int resume_prefill;
	/* Same-format passthrough: the client's own body when the engine
	 * chose it (its format is one the provider speaks natively), else
	 * NULL. Replies and stream events are then written in that format. */
	const struct json *native;
	int native_fmt; /* its FMT_* */
	/* Client headers to forward to a same-family upstream, complete
	 * "Name: value\r\n" lines, or NULL. */
	const char *fwd_headers;
};

/* One upstream request. path includes the query string; headers are
 * complete "Name: value\r\n" lines (auth, version, content-type and the
 * deployment's extra headers); Host/Content-Length/Connection are added by
 * the upstream client. */
struct prov_out {
	struct buf path;
	struct buf headers;
	struct buf body;
};

struct usage {
	long long prompt_tokens;
	long long completion_tokens;
};

/* Per-attempt stream translation state. Zero it before the first event. */
struct stream_state {
	char id[96];
	char model[128];
	long long created;
	int include_usage;
	int role_sent;      /* set by the engine when splicing */
	int content_seen;   /* a content or tool delta was emitted */
	int tool_seen;      /* a tool-call delta was emitted */
	int finished;       /* a finish_reason was emitted */
	int content_filter; /* finish reason was content_filter */
	struct usage usage;
	int ntool;
	int tool_block[64]; /* provider block index -> OpenAI tool index */
	struct buf partial; /* provider scratch (e.g. partial JSON) */
	struct buf *text;   /* if set, emitted text is appended here */
};

struct provider {
	const char *name;
	/* bit (1u << FMT_*) for each wire format taken natively */
	unsigned formats;
	/* Build the upstream request. 0, or -1 with a reason in err (the
	 * request cannot be expressed for this provider: a bad request). */
	int (*build)(const struct prov_call *, struct prov_out *, char *err,
	             size_t errsz);
	/* Translate a whole 2xx reply into an OpenAI chat.completion (or an
	 * embeddings list for EP_EMBED) appended to out; fill usage. -1 with
	 * e filled (class EC_TRANSIENT, "malformed upstream reply ...") when
	 * the body cannot be understood. Sets *content_filter when the answer
	 * was blocked by the provider's filter. */
	int (*response)(const struct prov_call *, const char *body, size_t len,
	                struct buf *out, struct usage *u, int *content_filter,
	                struct upstream_error *e);
	/* Translate one SSE event (event name may be empty; data is the joined
	 * data lines) into zero or more complete OpenAI SSE lines
	 * ("data: {...}\n\n") appended to out. Returns 0 to go on, 1 when the
	 * upstream stream is complete (the provider has written the final
	 * usage chunk if include_usage asked for one; the engine then appends
	 * "data: [DONE]"), -1 on an in-stream error or a malformed event with
	 * e filled and classified. */
	int (*stream_event)(const struct prov_call *, struct stream_state *,
	                    const char *event, size_t elen, const char *data,
	                    size_t dlen, struct buf *out,
	                    struct upstream_error *e);
	/* The stream's body ended cleanly after its finish reason but without
	 * its terminal event: write what that event would have (the usage
	 * chunk if include_usage asked for one). NULL: nothing to add. */
	void (*stream_end)(const struct prov_call *, struct stream_state *,
	                   struct buf *out);
};

extern const struct provider prov_openai;
extern const struct provider prov_azure;
extern const struct provider prov_anthropic;
extern const struct provider prov_gemini;

/* The provider for an enum provider_kind; NULL if not built in. */
const struct provider *provider_get(int kind);
void stream_state_free(struct stream_state *);

/* The instruction sent with a partial answer when a cut stream is continued
 * on a provider that cannot take an assistant prefix. */
#define PROV_RESUME_INSTRUCTION                                                \
	"Your previous answer was cut off. Continue it exactly where it "      \
	"stops, without repeating any of it and without any preamble."

/* providers/provider.c: helpers for OpenAI-shaped providers */
/* Write an OpenAI "usage" member from u. */
void prov_usage(struct jw *, const struct usage *);
void prov_extra_headers(const struct deploy_cfg *, struct buf *);
int prov_is_dropped(const struct prov_call *, int key_tok);
void prov_openai_body(const struct prov_call *, const char *model,
                      struct buf *out);

/* providers/provider.c: helpers for translating providers */
#define PROV_RAW(jw, lit) jw_raw((jw), (lit), sizeof(lit) - 1)
void prov_malformed(struct upstream_error *, const char *what);
void prov_stream_error(const char *data, size_t dlen, struct upstream_error *);
/* The value token of key in the request, else in the deployment's params
 * (*src says which document); -1 when absent or null in both. */
int prov_opt(const struct prov_call *, const char *key,
             const struct json **src);
void prov_urlenc(struct buf *, const char *s);
/* Chunk writer: open writes "data: {id,object,created,model,choices:[{
 * index,delta:" leaving the delta value to the caller; close writes
 * finish_reason (NULL: null) and ends the line. */
void prov_chunk_open(struct stream_state *, struct buf *out, struct jw *,
                     int index);
void prov_chunk_close(struct jw *, const char *finish);
void prov_chunk_usage(struct stream_state *, struct buf *out);
void prov_chunk_text(struct stream_state *, struct buf *out, const char *s,
                     size_t n);
/* Turn writer for role-alternating message lists: consecutive blocks of
 * the same role are merged into one turn. */
struct prov_turns {
	struct buf *out;
	const char *partkey; /* "content" (anthropic) or "parts" (gemini) */
	char role[16];
	int open;
};
void prov_turns_begin(struct prov_turns *, struct buf *out,
                      const char *partkey);
/* Add the elements of the JSON array text arr as a turn of role. */
void prov_turns_add(struct prov_turns *, const char *role, const char *arr,
                    size_t n);
void prov_turns_end(struct prov_turns *);
/* Split "data:MEDIA;base64,DATA"; 0 or -1 if url is not such a URL. */
/* The URL of an OpenAI image_url content part (string or {url}), unescaped
 * into out; 0, or -1 if the part has none. */
int prov_image_url(const struct json *, int part, struct buf *out);
int prov_data_url(const char *url, size_t n, const char **media, size_t *mlen,
                  const char **data, size_t *dlen);

#endif
