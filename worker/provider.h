/* The provider seam: one file per provider under worker/providers/.
 * A provider turns the client's OpenAI-shaped request into its own wire
 * format, and its replies (whole, streamed, or errors) back into OpenAI
 * shapes. When the client spoke the provider's own format (native
 * passthrough), the client's body goes up with only `model` and llmfd's
 * fields changed, and replies and events come back byte for byte.
 * Providers are pure functions over buffers: no I/O, no event loop,
 * so they are unit-tested with golden files. */
#ifndef LLMFD_PROVIDER_H
#define LLMFD_PROVIDER_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/cfg.h"
#include "common/classify.h"
#include "common/json.h"

/* What the client asked for: a chat answer, embeddings, or a count of the
 * prompt's tokens (EP_COUNT: Anthropic's /v1/messages/count_tokens, built
 * only from a native body by a provider whose counts has its format). */
enum endpoint { EP_CHAT = 0, EP_EMBED, EP_COUNT };

/* Wire formats a client or an upstream speaks: OpenAI Chat Completions,
 * Anthropic Messages, OpenAI Responses. */
enum wire_fmt { FMT_CHAT = 0, FMT_MESSAGES, FMT_RESPONSES };
#define PROV_FMT(f) (1u << (f)) /* a bit of struct provider's formats */

/* Everything a provider needs to build one upstream request. */
struct prov_call {
	const struct cfg *cfg;
	const struct deploy_cfg *d;
	/* The model to send upstream, NULL: the deployment's (a pattern's
	 * deployment gets the model the client named); read it with
	 * prov_model(). */
	const char *model;
	const struct json *req; /* parsed client body, token 0 = root */
	int endpoint;
	int stream;
	int include_usage;
	/* Top-level keys of the client body never forwarded (llmfd's own
	 * extensions: fallbacks, num_retries, timeout, stream_timeout, and
	 * metadata for a Chat body; a native Messages body keeps metadata,
	 * which is Anthropic's). The engine picks the list; applied to req,
	 * or to native when set. NULL-terminated. */
	const char *const *drop_keys;
	/* Stream continuation: text already sent to the client, to be
	 * continued (assistant prefix or instruction). NULL when none; not
	 * applied to a native body. */
	const char *resume_text;
	size_t resume_len;
	/* 1: continue as a true assistant prefill (the partial answer is the
	 * final assistant turn); 0: the instruction form (the partial answer,
	 * then a user turn with PROV_RESUME_INSTRUCTION). */
	int resume_prefill;
	/* Native passthrough: the engine sets native only to a format in the
	 * provider's formats. The body is then sent as is but for `model`
	 * (the deployment's) and drop_keys: no params, max_tokens or
	 * system_prompt_append. */
	const struct json *native; /* the client's own body when the engine
	                              chose passthrough, else NULL */
	int native_fmt;            /* its FMT_* */
	const char *fwd_headers;   /* client headers to forward to a
	                              same-family upstream, complete
	                              "Name: value\r\n" lines (anthropic-version,
	                              anthropic-beta), or NULL */
	long long now; /* wall clock seconds for signatures; 0: time(NULL) */
	/* Text that stays valid until the upstream request is written (the
	 * client's body): a body built from long unchanged runs of it refers
	 * to them (prov_out spans) instead of copying them. NULL: none. */
	const char *held;
	size_t held_len;
};

#define PROV_MAX_SPANS 7    /* more are copied */
#define PROV_REF_MIN   2048 /* shorter runs of client text are copied */

/* One upstream request. path includes the query string; headers are
 * complete "Name: value\r\n" lines (auth, version, content-type and the
 * deployment's extra headers); Host/Content-Length/Connection are added by
 * the upstream client. */
struct prov_out {
	struct buf path;
	struct buf headers;
	struct buf body;
	/* With nspan > 0 the body is the spans in order: len bytes at ref
	 * (in prov_call.held, sent by reference), or with ref NULL at off in
	 * body, which then holds only the text written; see prov_put. */
	struct prov_span {
		const char *ref;
		size_t off, len;
	} span[PROV_MAX_SPANS];
	int nspan;
	const char *run; /* client text put and not yet placed */
	size_t runlen, placed;
};

struct usage {
	long long prompt_tokens;      /* cached and cache writes included */
	long long completion_tokens;  /* reasoning included */
	long long cached_tokens;      /* prompt tokens read from a cache */
	long long cache_write_tokens; /* prompt tokens written to a cache */
};

#define PROV_MAX_TOOLS 255 /* tool calls in one streamed answer */

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
	uint8_t tool_block[64]; /* provider block index -> OpenAI tool
	                           index + 1 (at most PROV_MAX_TOOLS) */
	struct buf partial;     /* provider scratch (e.g. partial JSON) */
	char tag[48];           /* provider scratch: ids made for this stream */
	struct buf *text;       /* if set, emitted text is appended here */
};

/* How a provider's streams are framed (struct provider's framing). */
#define PROV_FRAME_SSE         0 /* text/event-stream */
#define PROV_FRAME_EVENTSTREAM 1 /* application/vnd.amazon.eventstream */

struct provider {
	const char *name;
	unsigned formats; /* bit (1u << FMT_*) for each wire format this
	                     provider can take natively */
	/* Whether build reads no more than the top level of pc->req for this
	 * call (the values of an ingress's bulk keys may then be untokenized:
	 * json_parse_top). NULL: it reads all of it. */
	int (*top_only)(const struct prov_call *);
	/* The formats it takes natively for deployment d, when that depends
	 * on the model (Claude on Bedrock or Vertex takes Messages, other
	 * models do not); NULL: formats. */
	unsigned (*formats_of)(const struct deploy_cfg *d);
	/* Bits (1u << FMT_*) of the native formats whose token counting
	 * endpoint build writes for EP_COUNT (the answer, {"input_tokens":N},
	 * comes back as it is); 0: none. */
	unsigned counts;
	/* PROV_FRAME_*. With PROV_FRAME_EVENTSTREAM each binary message of a
	 * stream reaches stream_event with its payload as data and, as the
	 * event name, its :event-type (an event message), "exception:" and
	 * its :exception-type (an exception message), or "error:" and its
	 * :error-code (an error message; data is then its :error-message). */
	int framing;
	/* Classify an HTTP error reply (status, the x-amzn-ErrorType header
	 * up to its ':' or "", the body) into e as classify_http would, but
	 * knowing the provider's own error names; e's retry_after_ms and
	 * should_retry come set from the headers. NULL: classify_http. */
	void (*classify)(const struct prov_call *, int status,
	                 const char *errtype, const char *body, size_t len,
	                 struct upstream_error *e);
	/* Build the upstream request. 0, or -1 with a reason in err (the
	 * request cannot be expressed for this provider: a bad request). */
	int (*build)(const struct prov_call *, struct prov_out *, char *err,
	             size_t errsz);
	/* Translate a whole 2xx reply into an OpenAI chat.completion (or an
	 * embeddings list for EP_EMBED) appended to out; fill usage. -1 with
	 * e filled (class EC_TRANSIENT, "malformed upstream reply ...") when
	 * the body cannot be understood. Sets *content_filter when the answer
	 * was blocked by the provider's filter. With native set the body is
	 * appended unchanged (usage, filter and errors noted all the same). */
	int (*response)(const struct prov_call *, const char *body, size_t len,
	                struct buf *out, struct usage *u, int *content_filter,
	                struct upstream_error *e);
	/* Translate one SSE event (event name may be empty; data is the joined
	 * data lines) into zero or more complete OpenAI SSE lines
	 * ("data: {...}\n\n") appended to out. Returns 0 to go on, 1 when the
	 * upstream stream is complete (the provider has written the final
	 * usage chunk if include_usage asked for one; the engine then appends
	 * "data: [DONE]"), -1 on an in-stream error or a malformed event with
	 * e filled and classified (nothing is written for it).
	 * With native set, the event goes to out unchanged ("event: NAME\n"
	 * when named, "data: DATA\n" per data line, "\n") while the state is
	 * kept as for a translated stream; 1 comes with the provider's last
	 * event (message_stop, response.completed), and the engine must not
	 * append "data: [DONE]". */
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
extern const struct provider prov_bedrock;
extern const struct provider prov_vertex;

/* The provider for an enum provider_kind; NULL if not built in. */
const struct provider *provider_get(int kind);
void stream_state_free(struct stream_state *);

/* The instruction sent with a partial answer when a cut stream is continued
 * on a provider that cannot take an assistant prefix. */
#define PROV_RESUME_INSTRUCTION                                                \
	"Your previous answer was cut off. Continue it exactly where it "      \
	"stops, without repeating any of it and without any preamble."

/* The model sent upstream: pc->model, else the deployment's. */
static inline const char *
prov_model(const struct prov_call *pc)
{
	return pc->model != NULL ? pc->model : pc->d->model;
}

/* The wire formats p takes natively for deployment d. */
unsigned provider_formats(const struct provider *p, const struct deploy_cfg *d);
/* Whether p counts tokens (EP_COUNT) of a native body in format fmt for
 * deployment d. */
int provider_counts(const struct provider *p, const struct deploy_cfg *d,
                    int fmt);

/* anthropic.c: the Messages body for Claude on Bedrock and Vertex. */
struct anth_variant {
	const char *version; /* anthropic_version in the body, NULL: none */
	int model;           /* `model` in the body (else in the URL) */
	int stream;          /* `"stream":true` in a stream's body */
	int beta_body;       /* anthropic-beta as the body's anthropic_beta */
};
int anth_body_variant(const struct prov_call *, const struct anth_variant *,
                      struct buf *out, char *err, size_t errsz);

/* gemini.c: the generateContent body for Gemini on Vertex. */
int gem_body(const struct prov_call *, struct buf *out, char *err,
             size_t errsz);

/* providers/provider.c: bodies that keep the client's bytes */
/* Append text of the client's (in pc->held, or not) to o's body: long
 * contiguous runs of held text become spans by reference, the rest is
 * copied. Text written to o->body directly must come after prov_place. */
void prov_put(const struct prov_call *, struct prov_out *, const char *p,
              size_t len);
/* Place the text put so far (before writing to o->body directly). */
void prov_place(const struct prov_call *, struct prov_out *);
/* Finish a body built with prov_put: the last span. */
void prov_put_end(const struct prov_call *, struct prov_out *);
/* The body as one buffer (spans copied into it, nspan 0). */
void prov_flatten(struct prov_out *);
/* How prov_obj_put rewrites an object. */
struct prov_edit {
	const char *key, *val;   /* key's value becomes the string val (put
	                            first when absent); val NULL: kept */
	const char *const *drop; /* members left out, NULL-terminated */
	const char *extra;       /* members appended ("\"k\":v,..."), or NULL */
	size_t elen;
};
/* Write the JSON object j (token 0) to o byte for byte (by reference where
 * pc allows), with the edits of e, and finish the body. */
void prov_obj_put(const struct prov_call *, const struct json *,
                  const struct prov_edit *, struct prov_out *);
/* prov_obj_put into a plain buffer: the client's object with key's value
 * replaced by val and the members in drop left out. */
void prov_copy_obj(const struct json *, const char *key, const char *val,
                   const char *const *drop, struct buf *out);
/* Append the lines of pc->fwd_headers whose name starts with prefix (any
 * case); whether a line named name was among them. */
int prov_fwd_headers(const struct prov_call *, const char *prefix,
                     const char *name, struct buf *out);
/* Note what one parsed native event says in st: 0, 1 when it ends the
 * stream, or -1 with e filled. */
typedef int prov_note_fn(struct stream_state *, const struct json *,
                         const char *ev, size_t elen, struct upstream_error *);
/* A native stream_event: parse the event, note it with note and, unless
 * that fails, append it to out as it came (see stream_event). */
int prov_native_event(struct stream_state *, const char *ev, size_t elen,
                      const char *data, size_t dlen, prov_note_fn *note,
                      struct buf *out, struct upstream_error *);
/* Note an event of the most frequent type from the values json_pick
 * found (token 1 is its "type"): 0, 1 at the end, -1 with e filled, or 2
 * to have the event noted from its whole tree instead. */
typedef int prov_fast_fn(struct stream_state *, const struct json *,
                         struct upstream_error *);
/* prov_native_event, but an event whose type is fast_type (its data's
 * "type", else the SSE event name) is only checked and picked (json_pick
 * with sel, whose first path is "type") and noted by fast; any other is
 * parsed whole for note. */
int prov_native_fast(struct stream_state *, const char *ev, size_t elen,
                     const char *data, size_t dlen, const struct json_sel *sel,
                     const char *fast_type, prov_fast_fn *fast,
                     prov_note_fn *note, struct buf *out,
                     struct upstream_error *);
/* The index in names (NULL-terminated) of an event's type: its data's
 * "type", else the SSE event name; -1 when none matches. */
int prov_event_index(const struct json *, const char *ev, size_t elen,
                     const char *const *names);

/* providers/provider.c: helpers for OpenAI-shaped providers */
/* Write an OpenAI "usage" member from u. */
void prov_usage(struct jw *, const struct usage *);
void prov_extra_headers(const struct deploy_cfg *, struct buf *);
/* The client's body for an OpenAI-shaped upstream in o: llmfd's fields
 * dropped, `model` replaced (dropped when model is NULL: Azure), params
 * merged, system_prompt_append and a continuation applied. */
void prov_openai_body(const struct prov_call *, const char *model,
                      struct prov_out *o);
/* Whether prov_openai_body reads only the top level of pc->req. */
int prov_openai_top_only(const struct prov_call *);
/* The i-th request field deployment d never gets (drop_params, or the
 * provider's default), NULL past the last. */
const char *prov_drop_param(const struct deploy_cfg *, int i);
/* The thinking budget for the request's reasoning_effort (low, medium,
 * high) on a model of family THINK_*: the deployment's thinking_budgets,
 * else a default for a model that thinks; 0: do not think. */
#define THINK_CLAUDE 0
#define THINK_GEMINI 1
long long prov_thinking_budget(const struct prov_call *, int family);
/* Whether the upstream is asked for a stream's usage that the client did
 * not ask for (stream_options.include_usage), to price the answer. */
int prov_ask_usage(const struct prov_call *);

/* providers/provider.c: helpers for translating providers */
#define PROV_RAW(jw, lit) jw_raw((jw), (lit), sizeof(lit) - 1)
/* Fill e for a reply llmfd cannot understand (transient); -1. */
int prov_malformed(struct upstream_error *, const char *what);
/* Classify an error body as if it came with HTTP status (no hints). */
void prov_error(int status, const char *body, size_t len,
                struct upstream_error *);
/* prov_error for an error object inside a 2xx reply or stream (500). */
void prov_stream_error(const char *data, size_t dlen, struct upstream_error *);
/* A whole-reply writer: the reply for parsed reply j appended to out,
 * usage and content filtering noted; 0, or -1 with e filled. */
typedef int prov_reply_fn(const struct prov_call *, const struct json *j,
                          struct buf *out, struct usage *, int *cf,
                          struct upstream_error *);
/* A provider's response(): parse body, classify an error object in it (a
 * non-null "error", or "type":"error"), else write it with fn (what fn
 * wrote is dropped when it fails). */
int prov_reply(const struct prov_call *, const char *body, size_t len,
               prov_reply_fn *fn, struct buf *out, struct usage *, int *cf,
               struct upstream_error *);
/* Parse s into j; -1 with e filled (malformed: what) unless it is an
 * object. */
int prov_json_obj(struct json *, const char *s, size_t n, const char *what,
                  struct upstream_error *);
/* prov_json_obj, and -1 with e classified when it has a non-null "error". */
int prov_json_reply(struct json *, const char *s, size_t n, const char *what,
                    struct upstream_error *);
/* Write the raw text of token t (null when t is absent). */
void prov_raw(struct jw *, const struct json *, int t);
/* Write JSON text s as a value: parsed when it is an object (any JSON if
 * any is set), else as a string (any) or {}. */
void prov_json_text(struct jw *, const char *s, size_t n, int any);
/* Write a tool call's arguments (an object, or a JSON-text string) as a
 * JSON object; {} when they are neither. */
void prov_args_object(struct jw *, const struct json *, int args);
/* The value token of key in the request, else in the deployment's params
 * (*src says which document); -1 when absent or null in both. */
int prov_opt(const struct prov_call *, const char *key,
             const struct json **src);
/* Write option key (number, clamped to [lo, hi]) as name. */
void prov_num(const struct prov_call *, struct jw *, const char *key,
              const char *name, double lo, double hi);
/* Write option stop (string or array) as the string array name. */
void prov_stop(const struct prov_call *, struct jw *, const char *name);
/* max_completion_tokens or max_tokens (request, params), else the
 * deployment's max_tokens; 0 when none is set. */
long long prov_max_tokens(const struct prov_call *);
/* Write tools as an array of {name, description?, params_key: schema};
 * schema is the function's parameters, else dflt (NULL: left out). */
void prov_tools(struct jw *, const struct json *, int tools,
                const char *params_key, const char *dflt);
void prov_urlenc(struct buf *, const char *s);

/* Request translation for providers with their own message format
 * (anthropic.c, gemini.c): prov_xlate_body walks the messages (system
 * text lifted out, parts translated, consecutive turns of one role
 * merged) and the dialect names what differs. */
struct prov_xlate;
struct prov_dialect {
	const char *name;      /* error prefix ("anthropic") */
	const char *partkey;   /* turn member holding the parts */
	const char *assistant; /* the assistant role's name */
	const char *text_type; /* "type" of a text part, NULL for none */
	/* Image part templates, for a base64 data: URL and for another URL
	 * (NULL: not supported): %m the media type (for the latter guessed
	 * from the extension), %f its subtype ("png"), %d the base64 data,
	 * %u the URL, each written as a JSON string. */
	const char *image[2];
	/* A file part's template (a base64 data: URL, a PDF), NULL: not
	 * supported: %m, %f and %d as above, %n the file name. */
	const char *file;
	int prefill; /* resume text goes in as a last assistant turn */
	int (*tool_calls)(struct prov_xlate *, struct jw *, int tcs);
	/* A role "tool" message m (index i of the messages) as a part. */
	int (*tool_result)(struct prov_xlate *, struct jw *, int m, int i);
	/* Write the body's members, the turns (x->turns) among them. */
	void (*members)(struct prov_xlate *, struct jw *);
};
struct prov_xlate {
	const struct prov_dialect *dl;
	const struct prov_call *pc;
	const struct json *j;
	int msgs;         /* the messages array token */
	struct buf turns; /* the translated messages: a JSON array */
	struct buf sys;   /* system text lifted out of the messages */
	const void *arg;  /* the caller's, for the dialect's functions */
	char *err;
	size_t errsz;
};
/* Build the body for pc in out; -1 with err set if it cannot be. */
int prov_xlate_body(const struct prov_call *, const struct prov_dialect *,
                    struct buf *out, char *err, size_t errsz);
/* prov_xlate_body with arg for the dialect's functions (x->arg). */
int prov_xlate_body_arg(const struct prov_call *, const struct prov_dialect *,
                        const void *arg, struct buf *out, char *err,
                        size_t errsz);
/* Record why the request cannot be sent ("name: what"); always -1. */
int prov_fail(struct prov_xlate *, const char *what);
/* Append text to x->sys, separated by a blank line from what came before. */
void prov_sys_add(struct prov_xlate *, const char *s, size_t n);
/* Append the text of a content (string, or text parts joined by newlines)
 * to t; -1 when it is neither (null or absent: nothing). */
int prov_text_of(const struct json *, int c, struct buf *t);
/* Write a message content (string or text/image_url parts) as parts. */
int prov_content(struct prov_xlate *, struct jw *, int c);

/* Reply writers. The chat.completion head: {"id","object","created",
 * "model" (tokens id and model, else the fallbacks), left open. */
void prov_completion_head(struct jw *, struct buf *out, const struct json *,
                          int id, const char *fbid, int model,
                          const char *fbmodel);
/* "message":{"role":"assistant","content":text (NULL: null),"refusal":null
 * left open for tool_calls. */
void prov_message_open(struct jw *, const struct buf *text);
/* The members of one tool call: "id" (token id, else fbid), "type",
 * "function":{"name","arguments": raw text of args as a string, else
 * noargs}. */
void prov_tool_call(struct jw *, const struct json *, int id, const char *fbid,
                    int name, int args, const char *noargs);
/* Chunk writer: open writes "data: {id,object,created,model,choices:[{
 * index,delta:" leaving the delta value to the caller; close writes
 * finish_reason (NULL: null) and ends the line. */
void prov_chunk_open(struct stream_state *, struct buf *out, struct jw *,
                     int index);
void prov_chunk_close(struct jw *, const char *finish);
void prov_chunk_usage(struct stream_state *, struct buf *out);
/* Unescape string token t into st->partial and send it as a content delta
 * unless empty; its length, or -1 when t is not a string. */
int prov_chunk_str(struct stream_state *, struct buf *out, const struct json *,
                   int t);
/* The assistant role chunk, once (sets role_sent). */
void prov_chunk_role(struct stream_state *, struct buf *out);
/* An empty delta with finish_reason fin; sets finished. */
void prov_chunk_finish(struct stream_state *, struct buf *out, const char *fin);
/* A tool-call delta: open writes up to {"tool_calls":[{"index":index, for
 * the caller's members; close ends the chunk and notes a tool call. */
void prov_tool_delta_open(struct stream_state *, struct buf *out, struct jw *,
                          int index);
void prov_tool_delta_close(struct stream_state *, struct jw *);
#endif
