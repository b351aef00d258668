/* The engine's canonical format as the ingress translators (messages.c,
 * responses.c) read and write it: a canonical request is an OpenAI Chat
 * Completions body; canonical replies are chat.completion and
 * chat.completion.chunk objects. Readers name the tokens of a parsed reply
 * or chunk (no copies: each translator decides how to write them, and what
 * else it checks). Writers put the members of a canonical request; field
 * validators refuse in the client format's words (struct canon_rq's bad).
 * Also the member writers and SSE event framing both client formats use.
 * Pure functions over buffers. */
#ifndef LLMFD_INGRESS_CANON_H
#define LLMFD_INGRESS_CANON_H

#include <stddef.h>

#include "common/buf.h"
#include "common/json.h"

/* Token tests; every token argument may be -1 (absent). */
int canon_absent(const struct json *, int t); /* absent or null */
int canon_is_str(const struct json *, int t);
int canon_has_text(const struct json *, int t); /* a non-empty string */
/* Absent, null, or of JSON type type (JSMN_*). */
int canon_opt(const struct json *, int t, int type);

/* Member writers (both client formats write many members): key and a C
 * string (NULL: null), an integer, or the text of token t (null when
 * absent). */
void canon_kstr(struct jw *, const char *key, const char *s);
void canon_kint(struct jw *, const char *key, long long v);
void canon_kraw(struct jw *, const char *key, const struct json *, int t);

/* ---- requests ---- */

/* What a refused field should have been. */
enum canon_want {
	CANON_REQUIRED = 1, /* given */
	CANON_NUMBER,
	CANON_INTEGER,
	CANON_MIN1, /* an integer >= 1 */
	CANON_BOOL,
	CANON_STRING,
	CANON_LIST,
	CANON_DICT
};

/* One request translation: the client's request, where a refusal goes,
 * and how the client format words a refused field. */
struct canon_rq {
	const struct json *j;
	char *err; /* the client-facing reason of a refusal */
	size_t errsz;
	const char *code; /* the refusal's code (canon_fail) */
	/* Refuse field key for not being what want says; -1. */
	int (*bad)(struct canon_rq *, const char *key, enum canon_want);
};

/* Refuse the request with code (or NULL) and a formatted reason; -1. */
int canon_fail(struct canon_rq *, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* 0 when token t (field key) is absent, null or of the JSON type want
 * names (CANON_STRING, CANON_LIST or CANON_DICT); else bad. */
int canon_rq_want(struct canon_rq *, int t, const char *key, enum canon_want);
/* Copy number field key of the request (when set) as name. */
int canon_rq_number(struct canon_rq *, struct jw *, const char *key,
                    const char *name);
/* Write integer field key (>= 1; required: absent is refused, else absent
 * or null writes nothing) as max_completion_tokens. */
int canon_rq_max_tokens(struct canon_rq *, struct jw *, const char *key,
                        int required);
/* Check boolean "stream"; when true write it with include_usage. */
int canon_rq_stream(struct canon_rq *, struct jw *);
/* Copy llmfd's own fields (INGRESS_LLMFD_KEYS and metadata) unchanged
 * for the engine to read. */
void canon_rq_own(const struct json *, struct jw *);
/* Copy token t as member name when it is a string. */
void canon_rq_str(struct jw *, const struct json *, int t, const char *name);

/* Writers of canonical shapes. An "open" writer leaves the value (and the
 * objects it opened) for the caller to finish. */
/* {"type":type,type: and, when nested, that member's object opened. */
void canon_open_typed(struct jw *, const char *type, int nested);
/* A text part {"type":"text","text":<string token t>}. */
void canon_text_part(struct jw *, const struct json *, int t);
/* A message {"role":role,"content": */
void canon_open_msg(struct jw *, const char *role);
/* A tool message {"role":"tool","tool_call_id":<token id>,"content": */
void canon_open_tool_msg(struct jw *, const struct json *, int id);
/* An assistant message: content (NULL: null), then refusal and tool_calls
 * (a JSON array text) unless NULL or empty. */
void canon_assistant(struct jw *, const struct buf *content,
                     const struct buf *refusal, const struct buf *calls);
/* A function tool (or tool_choice) {"type":"function","function":{"name":
 * <token name>; two objects open. */
void canon_open_function(struct jw *, const struct json *, int name);
/* A tool call {"id","type":"function","function":{"name","arguments"}}
 * whose arguments are a JSON-text string token args, copied as it is
 * ("{}" unless a string). prov_tool_call writes one from other text. */
void canon_tool_call(struct jw *, const struct json *, int id, int name,
                     int args);
/* "response_format":{"type":"json_schema","json_schema":{"name": (two
 * objects open). */
void canon_open_schema(struct jw *);

/* ---- replies and chunks ---- */

/* Token counts of canonical usage objects. */
struct canon_usage {
	int have; /* a usage object was read */
	long long prompt, cached, completion, reasoning, total;
};
/* Read usage object u into o: each count that is an integer >= min
 * replaces o's; total, when not given, is prompt + completion. */
void canon_usage_read(const struct json *, int u, struct canon_usage *,
                      long long min);

/* The members of a reply's message or a chunk's delta (-1: absent). */
struct canon_msg {
	int content, refusal, tool_calls;
	int reasoning;       /* reasoning_content */
	int reasoning_alias; /* reasoning (what some compatible servers send) */
};
void canon_msg_read(const struct json *, int m, struct canon_msg *);

/* One entry of a tool_calls array (-1: absent). */
struct canon_call {
	long long index; /* -1 unless a whole number */
	int id, name, args;
};
void canon_call_read(const struct json *, int tc, struct canon_call *);

/* A chat.completion: root members, and its first choice's. */
struct canon_reply {
	int id, model, created, usage, choices;
	int finish; /* finish_reason */
	struct canon_msg msg;
};
/* Parse s into j: 0 with r filled when it is an object whose choices.0 is
 * an object with a message object; else -1. */
int canon_reply_read(struct json *, const char *s, size_t n,
                     struct canon_reply *);

/* A chat.completion.chunk's root members. */
struct canon_chunk {
	int id, model, choices, usage;
};
/* Parse s into j: 0 with c filled when it is an object without an error
 * and with a choices array or a usage object; else -1. */
int canon_chunk_read(struct json *, const char *s, size_t n,
                     struct canon_chunk *);
/* The next choice of choices from position *i on (*i moves past it) that
 * is an object with index 0 or without an integer index; -1 when none. */
int canon_choice_next(const struct json *, int choices, int *i);

/* ---- client events ---- */

/* Start "event: NAME\ndata: {"type":NAME with a writer for the rest. */
void canon_ev_open(struct buf *, struct jw *, const char *name);
/* End an event begun by canon_ev_open. */
void canon_ev_close(struct jw *);

#endif
