/* llmf-mock: a fake LLM upstream that answers in the OpenAI, Azure,
 * Anthropic, Gemini, OpenAI Responses, AWS Bedrock (InvokeModel with AWS
 * event streams, Converse) or Google Vertex AI wire format, checks SigV4
 * signatures and the bearer tokens it issued at its OAuth2 token
 * endpoint, and fails on demand (docs/mock.md). */
#define JSMN_STATIC
#define JSMN_STRICT
#include <jsmn.h>

#include <sys/queue.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include "common/addr.h"
#include "common/b64.h"
#include "common/buf.h"
#include "common/clock.h"
#include "common/evstream.h"
#include "common/log.h"
#include "common/sigv4.h"

#define MOCK_NLOG      64
#define MOCK_LOG_BODY  (1024 * 1024) /* bytes of body kept per log entry */
#define MOCK_MAX_BODY  (64 * 1024 * 1024)
#define MOCK_BACKLOG   4096 /* the listen queue (somaxconn caps it) */
#define MOCK_MAX_TOKS  (8 * 1024 * 1024) /* JSON tokens parsed per body */
#define MOCK_FLUSH_TRY 1000              /* 2 ms waits for output to drain */
#define MOCK_NTOKENS   4096              /* access tokens remembered */

enum fmt {
	FMT_OPENAI,
	FMT_AZURE,
	FMT_ANTHROPIC,
	FMT_GEMINI,
	FMT_RESPONSES,
	FMT_BEDROCK, /* InvokeModel: Anthropic's body, AWS event streams */
	FMT_CONVERSE /* Bedrock Converse / ConverseStream */
};

enum kind {
	KIND_UNKNOWN,
	KIND_CHAT,
	KIND_EMBED,  /* OpenAI / Azure embeddings list */
	KIND_EMBED1, /* Gemini embedContent */
	KIND_EMBEDN, /* Gemini batchEmbedContents */
	KIND_TOKEN,  /* the OAuth2 token endpoint */
	KIND_COUNT   /* Anthropic's count_tokens (Vertex: count-tokens) */
};

/* A count_tokens answer is this plus the request body's length in bytes,
 * far from llmfd's own estimate (about a quarter of the text's bytes). */
#define COUNT_BASE 10000

enum mode {
	MODE_OK,
	MODE_STATUS,
	MODE_HANG,
	MODE_CLOSE,
	MODE_GARBAGE,
	MODE_STREAM_ERROR,
	MODE_CUT,
	MODE_STALL,
	MODE_NO_DONE,
	MODE_BAD_CHUNK,
	MODE_TOOLS,
	MODE_LATE_ERROR,
	MODE_N
};

static const char *const mode_names[MODE_N] = {
    "ok",  "status", "hang",    "close",     "garbage", "stream-error",
    "cut", "stall",  "no-done", "bad-chunk", "tools",   "late-error"};

/* The tool call's fixed arguments, and the pieces a stream sends them in. */
#define TOOL_ARGS    "{\"city\":\"Oslo\"}"
#define TOOL_NPIECES 3
static const char *const tool_pieces[TOOL_NPIECES] = {"{\"city\":", "\"Os",
                                                      "lo\"}"};

/* Behaviour options, settable on the command line and by /_mock/config. */
struct mock_opts {
	int mode;
	int status;
	int retry_after;    /* -1: no header */
	int retry_after_ms; /* -1: no header */
	int fail_first;     /* 0: every request gets the mode */
	int fail_percent;   /* 0: every request gets the mode */
	int latency_ms;
	int chunks;
	int chunk_delay_ms;
	int cut_after;
	int usage_p;
	int usage_c;
	int usage_k;          /* cached prompt tokens, among usage_p */
	int recover_after_ms; /* 0: the mode never wears off */
	int tool_call;        /* answer requests with tools by a tool call */
	int reject_prefill;   /* 400 for a chat ending in an assistant turn */
	char message[512];    /* "": default text for the status */
	char error_code[128];
	char finish[64];
	int echo_auth; /* 1: error messages quote the credential received */
	char headers[1024];    /* "Name: value; Name: value" added to replies */
	char aws_secret[128];  /* "": SigV4 checked for shape only */
	char jwt_pubkey[1024]; /* PEM file: token endpoint on, bearer checked */
	int token_expiry;      /* expires_in of issued tokens, seconds */
	int token_status;      /* 200, or the token endpoint's failure */
	int token_latency_ms;
	int stamp; /* OpenAI chunks carry "llmf_sent_us": the send time */
};

struct mock_stats {
	unsigned long long requests, chat, embeddings, count_tokens, ok, failed;
	unsigned long long client_closed, connections;
	unsigned long long tokens, token_failed;
};

/* One provider request in flight. */
struct mreq {
	LIST_ENTRY(mreq) entry;
	struct evhttp_request *req;
	struct event *ev;
	struct mock_opts o; /* snapshot taken when the request arrived */
	unsigned long long seq;
	int fmt;
	int kind;
	int mode;
	int stream;
	int include_usage;
	int ninputs;
	size_t blen;       /* bytes of the request body */
	int tool;          /* answer with a call to tool_name */
	int prefill;       /* the last message is the assistant's */
	int nchunks;       /* content steps of the stream */
	int evseq;         /* next Responses sequence_number */
	int vertex;        /* a Vertex AI path */
	int google_auth;   /* the error is Google's UNAUTHENTICATED */
	char amz_type[64]; /* x-amzn-ErrorType override, "" by status */
	int step;
	int flush_tries;
	long long created;
	char model[128];
	char tool_name[128]; /* first tool of the request, "" if none */
};

/* The whole server: one per process. */
struct mock {
	struct event_base *base;
	struct evhttp *http;
	SSL_CTX *ssl;
	struct event *sigterm;
	struct event *sigint;
	const char *name;
	struct mock_opts o;
	struct mock_stats st;
	int served; /* requests that got the mode (fail_first) */
	unsigned long long pct_seq; /* requests seen by fail_percent */
	unsigned long long seq;
	long long epoch_ms;   /* recover_after_ms counts from here */
	struct buf last_body; /* raw body of the last provider request */
	struct buf log[MOCK_NLOG];
	size_t log_next;
	size_t log_count;
	LIST_HEAD(, mreq) live;
	long long token_exp[MOCK_NTOKENS]; /* wall ms each issued token dies */
	unsigned ntokens;
};

static struct mock M;

/* ---- JSON output ---- */

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 if invalid. */
static size_t
utf8_len(const unsigned char *s, size_t n)
{
	unsigned c = s[0];
	size_t len, i;

	if (c >= 0xc2 && c <= 0xdf)
		len = 2;
	else if (c >= 0xe0 && c <= 0xef)
		len = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		len = 4;
	else
		return 0;
	if (len > n)
		return 0;
	for (i = 1; i < len; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] >= 0xa0) ||
	    (c == 0xf0 && s[1] < 0x90) || (c == 0xf4 && s[1] >= 0x90))
		return 0;
	return len;
}

/* Append one escaped control or quote byte. */
static void
jesc_byte(struct buf *b, unsigned char c)
{
	switch (c) {
	case '"':
		buf_adds(b, "\\\"");
		break;
	case '\\':
		buf_adds(b, "\\\\");
		break;
	case '\n':
		buf_adds(b, "\\n");
		break;
	case '\r':
		buf_adds(b, "\\r");
		break;
	case '\t':
		buf_adds(b, "\\t");
		break;
	default:
		buf_printf(b, "\\u%04x", c);
		break;
	}
}

/* Append s[0..n) JSON-escaped without quotes; bad UTF-8 becomes U+FFFD. */
static void
jesc_raw(struct buf *b, const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s, *e = p + n, *run;
	size_t l;

	while (p < e) {
		run = p;
		while (p < e && *p >= 0x20 && *p < 0x80 && *p != '"' &&
		       *p != '\\')
			p++;
		buf_add(b, run, (size_t)(p - run));
		if (p == e)
			break;
		if (*p < 0x20 || *p == '"' || *p == '\\')
			jesc_byte(b, *p++);
		else if ((l = utf8_len(p, (size_t)(e - p))) == 0) {
			buf_adds(b, "\\ufffd");
			p++;
		} else {
			buf_add(b, p, l);
			p += l;
		}
	}
}

/* Append a C string as a quoted JSON string. */
static void
jesc(struct buf *b, const char *s)
{
	buf_addc(b, '"');
	jesc_raw(b, s, strlen(s));
	buf_addc(b, '"');
}

/* Append a quoted JSON string, or null when s is NULL or empty. */
static void
jesc_or_null(struct buf *b, const char *s)
{
	if (s == NULL || *s == '\0')
		buf_adds(b, "null");
	else
		jesc(b, s);
}

/* ---- JSON input (jsmn) ---- */

/* Index of the token after token i and everything inside it. */
static int
jskip(const jsmntok_t *t, int i)
{
	int pending = 1;

	while (pending > 0) {
		pending += t[i].size;
		pending--;
		i++;
	}
	return i;
}

/* Whether token t is the string s. */
static int
jeq(const char *js, const jsmntok_t *t, const char *s)
{
	size_t n = strlen(s);

	return t->type == JSMN_STRING && (size_t)(t->end - t->start) == n &&
	       memcmp(js + t->start, s, n) == 0;
}

/* Index of the value of key in object token obj, or -1. */
static int
jget(const char *js, const jsmntok_t *t, int obj, const char *key)
{
	int i = obj + 1, k;

	if (t[obj].type != JSMN_OBJECT)
		return -1;
	for (k = 0; k < t[obj].size; k++) {
		if (jeq(js, &t[i], key))
			return i + 1;
		i = jskip(t, i + 1);
	}
	return -1;
}

/* Whether token i exists and is the literal true. */
static int
jtrue(const char *js, const jsmntok_t *t, int i)
{
	return i >= 0 && t[i].type == JSMN_PRIMITIVE && js[t[i].start] == 't';
}

/* Append the UTF-8 encoding of code point cp to dst; -1 if no room. */
static int
put_utf8(char *dst, size_t size, size_t *n, unsigned cp)
{
	char u[4];
	size_t l;

	if (cp < 0x80) {
		u[0] = (char)cp;
		l = 1;
	} else if (cp < 0x800) {
		u[0] = (char)(0xc0 | (cp >> 6));
		u[1] = (char)(0x80 | (cp & 0x3f));
		l = 2;
	} else {
		u[0] = (char)(0xe0 | (cp >> 12));
		u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		u[2] = (char)(0x80 | (cp & 0x3f));
		l = 3;
	}
	if (*n + l >= size)
		return -1;
	memcpy(dst + *n, u, l);
	*n += l;
	return 0;
}

/* Decode the escape at s (after the backslash) into dst; bytes eaten or -1. */
static int
jstr_escape(const char *s, const char *e, char *dst, size_t size, size_t *n)
{
	char hex[5];
	unsigned c;

	switch (*s) {
	case 'u':
		if (e - s < 5)
			return -1;
		memcpy(hex, s + 1, 4);
		hex[4] = '\0';
		c = (unsigned)strtoul(hex, NULL, 16);
		return put_utf8(dst, size, n, c) == -1 ? -1 : 5;
	case 'n':
		c = '\n';
		break;
	case 't':
		c = '\t';
		break;
	case 'r':
		c = '\r';
		break;
	case 'b':
		c = '\b';
		break;
	case 'f':
		c = '\f';
		break;
	default:
		c = (unsigned char)*s;
		break;
	}
	return put_utf8(dst, size, n, c) == -1 ? -1 : 1;
}

/* Copy token t into dst, decoding string escapes; -1 if it does not fit. */
static int
jstr(const char *js, const jsmntok_t *t, char *dst, size_t size)
{
	const char *s = js + t->start, *e = js + t->end;
	size_t n = 0;
	int k;

	while (s < e) {
		if (*s == '\\' && t->type == JSMN_STRING && s + 1 < e) {
			if ((k = jstr_escape(s + 1, e, dst, size, &n)) == -1)
				return -1;
			s += 1 + k;
			continue;
		}
		if (n + 1 >= size)
			return -1;
		dst[n++] = *s++;
	}
	dst[n] = '\0';
	return 0;
}

/* Parse js into a fresh token array; token count, or -1 if malformed. */
static int
jparse(const char *js, size_t len, jsmntok_t **out)
{
	jsmn_parser p;
	jsmntok_t *t;
	int n;

	*out = NULL;
	jsmn_init(&p);
	n = jsmn_parse(&p, js, len, NULL, 0);
	if (n <= 0 || n > MOCK_MAX_TOKS)
		return -1;
	if ((t = calloc((size_t)n, sizeof *t)) == NULL)
		return -1;
	jsmn_init(&p);
	if (jsmn_parse(&p, js, len, t, (unsigned)n) != n ||
	    t[0].type != JSMN_OBJECT || jskip(t, 0) != n) {
		free(t);
		return -1;
	}
	*out = t;
	return n;
}

/* ---- options ---- */

enum otype { OT_INT, OT_STR, OT_MODE, OT_USAGE };

struct optdef {
	const char *name;
	int type;
	size_t off;
	size_t size;
	int min, max;
};

#define OPT_INT(n, f, lo, hi)                                                  \
	{                                                                      \
		n, OT_INT, offsetof(struct mock_opts, f), 0, lo, hi            \
	}
#define OPT_STR(n, f)                                                          \
	{                                                                      \
		n, OT_STR, offsetof(struct mock_opts, f),                      \
		    sizeof(((struct mock_opts *)0)->f), 0, 0                   \
	}

static const struct optdef optdefs[] = {
    {"mode", OT_MODE, offsetof(struct mock_opts, mode), 0, 0, 0},
    OPT_INT("status", status, 100, 599),
    OPT_STR("message", message),
    OPT_STR("error_code", error_code),
    OPT_INT("retry_after", retry_after, -1, 1000000),
    OPT_INT("retry_after_ms", retry_after_ms, -1, 1000000000),
    OPT_INT("fail_first", fail_first, 0, 1000000000),
    OPT_INT("fail_percent", fail_percent, 0, 100),
    OPT_INT("latency_ms", latency_ms, 0, 86400000),
    OPT_INT("chunks", chunks, 0, 100000),
    OPT_INT("chunk_delay_ms", chunk_delay_ms, 0, 86400000),
    OPT_INT("cut_after", cut_after, 0, 100000),
    {"usage", OT_USAGE, offsetof(struct mock_opts, usage_p), 0, 0, 0},
    OPT_STR("finish", finish),
    OPT_INT("recover_after_ms", recover_after_ms, 0, 86400000),
    OPT_INT("tool_call", tool_call, 0, 1),
    OPT_INT("echo_auth", echo_auth, 0, 1),
    OPT_INT("reject_prefill", reject_prefill, 0, 1),
    OPT_STR("headers", headers),
    OPT_STR("aws_secret", aws_secret),
    OPT_STR("jwt_pubkey", jwt_pubkey),
    OPT_INT("token_expiry", token_expiry, 1, 86400),
    OPT_INT("token_status", token_status, 200, 599),
    OPT_INT("token_latency_ms", token_latency_ms, 0, 86400000),
    OPT_INT("stamp", stamp, 0, 1),
};

/* The option named name ("retry-after" and "retry_after" alike), or NULL. */
static const struct optdef *
opt_find(const char *name)
{
	char norm[64];
	size_t i;

	if (strlen(name) >= sizeof norm)
		return NULL;
	for (i = 0; name[i] != '\0'; i++)
		norm[i] = name[i] == '-' ? '_' : name[i];
	norm[i] = '\0';
	for (i = 0; i < sizeof optdefs / sizeof optdefs[0]; i++)
		if (strcmp(optdefs[i].name, norm) == 0)
			return &optdefs[i];
	return NULL;
}

/* Mode number for a name, or -1. */
static int
mode_find(const char *s)
{
	for (int i = 0; i < MODE_N; i++)
		if (strcmp(mode_names[i], s) == 0)
			return i;
	return -1;
}

/* Parse a decimal int in [min, max]; -1 if it is not one. */
static int
parse_int(const char *s, int min, int max, int *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
		return -1;
	*out = (int)v;
	return 0;
}

/* Set option d of o from its text form v; -1 if v is invalid. */
static int
opt_set(struct mock_opts *o, const struct optdef *d, const char *v)
{
	char *field = (char *)o + d->off;
	int n;

	switch (d->type) {
	case OT_INT:
		if (parse_int(v, d->min, d->max, &n) == -1)
			return -1;
		memcpy(field, &n, sizeof n);
		return 0;
	case OT_STR:
		if (strlen(v) >= d->size)
			return -1;
		memcpy(field, v, strlen(v) + 1);
		return 0;
	case OT_MODE:
		return (o->mode = mode_find(v)) == -1 ? -1 : 0;
	case OT_USAGE:
		o->usage_k = 0;
		return sscanf(v, "%d,%d,%d", &o->usage_p, &o->usage_c,
		              &o->usage_k) >= 2 &&
		               o->usage_p >= 0 && o->usage_c >= 0 &&
		               o->usage_k >= 0 && o->usage_k <= o->usage_p
		           ? 0
		           : -1;
	}
	return -1;
}

/* Fill o with the documented defaults. */
static void
opts_default(struct mock_opts *o)
{
	memset(o, 0, sizeof *o);
	o->mode = MODE_OK;
	o->status = 503;
	o->retry_after = -1;
	o->retry_after_ms = -1;
	o->chunks = 5;
	o->chunk_delay_ms = 10;
	o->cut_after = 2;
	o->usage_p = 10;
	o->usage_c = 5;
	o->token_expiry = 3600;
	o->token_status = 200;
	snprintf(o->finish, sizeof o->finish, "stop");
}

/* Append o as a JSON object. */
static void
opts_json(struct buf *b, const struct mock_opts *o)
{
	buf_adds(b, "{\"mode\":");
	jesc(b, mode_names[o->mode]);
	buf_printf(b,
	           ",\"status\":%d,\"retry_after\":%d,\"retry_after_ms\":%d,"
	           "\"fail_first\":%d,\"fail_percent\":%d,\"latency_ms\":%d,"
	           "\"chunks\":%d,"
	           "\"chunk_delay_ms\":%d,\"cut_after\":%d,\"usage\":\"%d,%d",
	           o->status, o->retry_after, o->retry_after_ms, o->fail_first,
	           o->fail_percent, o->latency_ms, o->chunks, o->chunk_delay_ms,
	           o->cut_after, o->usage_p, o->usage_c);
	if (o->usage_k)
		buf_printf(b, ",%d", o->usage_k);
	buf_addc(b, '"');
	buf_adds(b, ",\"message\":");
	jesc(b, o->message);
	buf_adds(b, ",\"error_code\":");
	jesc(b, o->error_code);
	buf_adds(b, ",\"finish\":");
	jesc(b, o->finish);
	buf_printf(b,
	           ",\"recover_after_ms\":%d,\"tool_call\":%d,"
	           "\"reject_prefill\":%d,\"token_expiry\":%d,"
	           "\"token_status\":%d,\"token_latency_ms\":%d,\"headers\":",
	           o->recover_after_ms, o->tool_call, o->reject_prefill,
	           o->token_expiry, o->token_status, o->token_latency_ms);
	jesc(b, o->headers);
	buf_adds(b, ",\"jwt_pubkey\":");
	jesc(b, o->jwt_pubkey);
	buf_printf(b, ",\"aws_secret\":%s}",
	           o->aws_secret[0] ? "true" : "false");
}

/* ---- provider vocabulary ---- */

struct errdef {
	int status;
	const char *oa_type, *oa_code, *an_type, *gm_status, *msg;
};

static const struct errdef errdefs[] = {
    {400, "invalid_request_error", NULL, "invalid_request_error",
     "INVALID_ARGUMENT", "Invalid request"},
    {401, "invalid_request_error", "invalid_api_key", "authentication_error",
     "PERMISSION_DENIED", "Incorrect API key provided"},
    {402, "insufficient_quota", "insufficient_quota", "billing_error",
     "RESOURCE_EXHAUSTED", "You exceeded your current quota"},
    {403, "invalid_request_error", "unsupported_country_region_territory",
     "permission_error", "PERMISSION_DENIED", "Permission denied"},
    {404, "invalid_request_error", "model_not_found", "not_found_error",
     "NOT_FOUND", "The model does not exist"},
    {408, "server_error", NULL, "timeout_error", "DEADLINE_EXCEEDED",
     "Request timed out"},
    {409, "server_error", NULL, "api_error", "ABORTED", "Conflict"},
    {413, "invalid_request_error", NULL, "request_too_large",
     "INVALID_ARGUMENT", "Request too large"},
    {429, "requests", "rate_limit_exceeded", "rate_limit_error",
     "RESOURCE_EXHAUSTED", "Rate limit reached, please try again later"},
    {500, "server_error", NULL, "api_error", "INTERNAL",
     "Internal server error"},
    {502, "server_error", NULL, "api_error", "UNAVAILABLE", "Bad gateway"},
    {503, "server_error", NULL, "api_error", "UNAVAILABLE",
     "The server is overloaded or not ready yet"},
    {504, "server_error", NULL, "timeout_error", "DEADLINE_EXCEEDED",
     "Gateway timeout"},
    {529, "server_error", NULL, "overloaded_error", "UNAVAILABLE",
     "Overloaded"},
};

/* The error vocabulary for an HTTP status (nearest class if unlisted). */
static const struct errdef *
errdef_find(int status)
{
	size_t i;

	for (i = 0; i < sizeof errdefs / sizeof errdefs[0]; i++)
		if (errdefs[i].status == status)
			return &errdefs[i];
	return status >= 500 ? &errdefs[9] : &errdefs[0];
}

struct findef {
	const char *oa, *an, *gm;
};

static const struct findef findefs[] = {
    {"stop", "end_turn", "STOP"},
    {"length", "max_tokens", "MAX_TOKENS"},
    {"content_filter", "refusal", "SAFETY"},
    {"tool_calls", "tool_use", "STOP"},
};

/* The finish reason f in format fmt (OpenAI names map to native ones). */
static const char *
finish_name(int fmt, const char *f)
{
	size_t i;

	for (i = 0; i < sizeof findefs / sizeof findefs[0]; i++) {
		if (strcmp(findefs[i].oa, f) != 0)
			continue;
		switch (fmt) {
		case FMT_CONVERSE:
			return i == 2 ? "content_filtered" : findefs[i].an;
		case FMT_ANTHROPIC:
		case FMT_BEDROCK:
			return findefs[i].an;
		case FMT_GEMINI:
			return findefs[i].gm;
		default:
			return f;
		}
	}
	return f;
}

/* r's finish reason in format fmt: tool_calls for a tool call answer. */
static const char *
finish_of(const struct mreq *r, int fmt)
{
	return finish_name(fmt, r->tool ? "tool_calls" : r->o.finish);
}

/* ---- bodies ---- */

/* Append the answer text "mock NAME says hi" (unquoted, escaped). */
static void
answer_raw(struct buf *b)
{
	buf_adds(b, "mock ");
	jesc_raw(b, M.name, strlen(M.name));
	buf_adds(b, " says hi");
}

/* Find word k (cycling) of the answer text; its length, 0 if none. */
static size_t
answer_word(char *text, size_t size, int k, const char **w)
{
	int n = 0, i;
	const char *p;
	size_t l;

	snprintf(text, size, "mock %s says hi", M.name);
	for (p = text; *p != '\0'; p += l) {
		p += strspn(p, " ");
		if ((l = strcspn(p, " ")) > 0)
			n++;
	}
	if (n == 0)
		return 0;
	k %= n;
	for (p = text, i = 0;; p += l, i++) {
		p += strspn(p, " ");
		l = strcspn(p, " ");
		if (i == k) {
			*w = p;
			return l;
		}
	}
}

/* Append the text of content chunk k (0-based), escaped, unquoted. */
static void
chunk_raw(struct buf *b, int k)
{
	char text[512];
	const char *w = "";
	size_t l = answer_word(text, sizeof text, k, &w);

	if (k > 0)
		buf_addc(b, ' ');
	jesc_raw(b, w, l);
}

/* Append the text of content chunk k (0-based) as a quoted JSON string. */
static void
chunk_text(struct buf *b, int k)
{
	buf_addc(b, '"');
	chunk_raw(b, k);
	buf_addc(b, '"');
}

/* Append r's whole answer text (escaped, unquoted): what its stream's
 * chunks concatenate to, or the answer text when it does not stream. */
static void
answer_text(struct buf *b, const struct mreq *r)
{
	int k;

	if (!r->stream) {
		answer_raw(b);
		return;
	}
	for (k = 0; k < r->nchunks; k++)
		chunk_raw(b, k);
}

/* Append ",\"choices\":[{...\"message\":{...}" carrying r's tool call. */
static void
oa_tool_message(struct buf *b, const struct mreq *r)
{
	buf_printf(b,
	           ",\"choices\":[{\"index\":0,\"message\":{\"role\":"
	           "\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":"
	           "\"call_mock%llu\",\"type\":\"function\",\"function\":{"
	           "\"name\":",
	           r->seq);
	jesc(b, r->tool_name);
	buf_adds(b, ",\"arguments\":");
	jesc(b, TOOL_ARGS);
	buf_adds(b, "}}],\"refusal\":null}");
}

/* Append an OpenAI usage object (cached tokens in its details). */
static void
oa_usage(struct buf *b, const struct mreq *r)
{
	buf_printf(b,
	           "{\"prompt_tokens\":%d,\"completion_tokens\":%d,"
	           "\"total_tokens\":%d",
	           r->o.usage_p, r->o.usage_c, r->o.usage_p + r->o.usage_c);
	if (r->o.usage_k)
		buf_printf(b,
		           ",\"prompt_tokens_details\":{\"cached_tokens\":%d}",
		           r->o.usage_k);
	buf_addc(b, '}');
}

/* Append an OpenAI / Azure chat.completion. */
static void
body_openai(struct buf *b, struct mreq *r)
{
	buf_printf(
	    b,
	    "{\"id\":\"chatcmpl-mock%llu\",\"object\":\"chat.completion\","
	    "\"created\":%lld,\"model\":",
	    r->seq, r->created);
	jesc(b, r->model);
	if (r->tool)
		oa_tool_message(b, r);
	else {
		buf_adds(b, ",\"choices\":[{\"index\":0,\"message\":{\"role\":"
		            "\"assistant\",\"content\":\"");
		answer_raw(b);
		buf_adds(b, "\",\"refusal\":null}");
	}
	buf_adds(b, ",\"logprobs\":null,\"finish_reason\":");
	jesc(b, finish_of(r, FMT_OPENAI));
	buf_adds(b, "}],\"usage\":");
	oa_usage(b, r);
	buf_addc(b, '}');
}

/* Anthropic's cache-read member when tokens are cached (a static text),
 * else "". */
static const char *
anth_cached(const struct mreq *r)
{
	static char t[64];

	if (r->o.usage_k == 0)
		return "";
	snprintf(t, sizeof t, ",\"cache_read_input_tokens\":%d", r->o.usage_k);
	return t;
}

/* Gemini's cached-token member (a static text). */
static const char *
gem_cached(const struct mreq *r)
{
	static char t[64];

	snprintf(t, sizeof t, ",\"cachedContentTokenCount\":%d", r->o.usage_k);
	return t;
}

/* Append an Anthropic message object. */
static void
body_anthropic(struct buf *b, struct mreq *r)
{
	buf_printf(b,
	           "{\"id\":\"msg_mock%llu\",\"type\":\"message\",\"role\":"
	           "\"assistant\",\"model\":",
	           r->seq);
	jesc(b, r->model);
	if (r->tool) {
		buf_printf(b,
		           ",\"content\":[{\"type\":\"tool_use\",\"id\":"
		           "\"toolu_mock%llu\",\"name\":",
		           r->seq);
		jesc(b, r->tool_name);
		buf_adds(b, ",\"input\":" TOOL_ARGS "}]");
	} else {
		buf_adds(b, ",\"content\":[{\"type\":\"text\",\"text\":\"");
		answer_raw(b);
		buf_adds(b, "\"}]");
	}
	buf_adds(b, ",\"stop_reason\":");
	jesc(b, finish_of(r, FMT_ANTHROPIC));
	buf_printf(b,
	           ",\"stop_sequence\":null,\"usage\":{\"input_tokens\":%d%s,"
	           "\"output_tokens\":%d}}",
	           r->o.usage_p - r->o.usage_k, anth_cached(r), r->o.usage_c);
}

/* Append Gemini usageMetadata, modelVersion and responseId fields. */
static void
gemini_tail(struct buf *b, struct mreq *r, int usage)
{
	if (usage)
		buf_printf(
		    b,
		    ",\"usageMetadata\":{\"promptTokenCount\":%d,"
		    "\"candidatesTokenCount\":%d,\"totalTokenCount\":%d%s}",
		    r->o.usage_p, r->o.usage_c, r->o.usage_p + r->o.usage_c,
		    r->o.usage_k ? gem_cached(r) : "");
	buf_adds(b, ",\"modelVersion\":");
	jesc(b, r->model);
	buf_printf(b, ",\"responseId\":\"mock%llu\"}", r->seq);
}

/* Append a Gemini functionCall part for r's tool call. */
static void
gemini_call(struct buf *b, const struct mreq *r)
{
	buf_adds(b, "{\"functionCall\":{\"name\":");
	jesc(b, r->tool_name);
	buf_adds(b, ",\"args\":" TOOL_ARGS "}}");
}

/* Append a Gemini GenerateContentResponse carrying the whole answer. */
static void
body_gemini(struct buf *b, struct mreq *r)
{
	buf_adds(b, "{\"candidates\":[{\"content\":{\"role\":\"model\","
	            "\"parts\":[");
	if (r->tool)
		gemini_call(b, r);
	else {
		buf_adds(b, "{\"text\":\"");
		answer_raw(b);
		buf_adds(b, "\"}");
	}
	buf_adds(b, "]},\"finishReason\":");
	jesc(b, finish_of(r, FMT_GEMINI));
	buf_adds(b, ",\"index\":0}]");
	gemini_tail(b, r, 1);
}

/* ---- OpenAI Responses ---- */

enum resp_state { RESP_PENDING, RESP_DONE, RESP_FAILED };

/* incomplete_details.reason of r's finished response, or NULL. */
static const char *
resp_incomplete(const struct mreq *r)
{
	if (r->tool)
		return NULL;
	if (strcmp(r->o.finish, "length") == 0)
		return "max_output_tokens";
	if (strcmp(r->o.finish, "content_filter") == 0)
		return "content_filter";
	return NULL;
}

/* Append r's output item, empty and in progress or done. */
static void
resp_item(struct buf *b, const struct mreq *r, int done)
{
	const char *st = !done                ? "in_progress"
	                 : resp_incomplete(r) ? "incomplete"
	                                      : "completed";

	if (r->tool) {
		buf_printf(b,
		           "{\"type\":\"function_call\",\"id\":\"fc_mock%llu\","
		           "\"call_id\":\"call_mock%llu\",\"name\":",
		           r->seq, r->seq);
		jesc(b, r->tool_name);
		buf_adds(b, ",\"arguments\":");
		jesc(b, done ? TOOL_ARGS : "");
		buf_printf(b, ",\"status\":\"%s\"}", st);
		return;
	}
	buf_printf(b,
	           "{\"type\":\"message\",\"id\":\"msg_mock%llu\",\"role\":"
	           "\"assistant\",\"status\":\"%s\",\"content\":[",
	           r->seq, st);
	if (done) {
		buf_adds(b, "{\"type\":\"output_text\",\"text\":\"");
		answer_text(b, r);
		buf_adds(b, "\",\"annotations\":[],\"logprobs\":[]}");
	}
	buf_adds(b, "]}");
}

/* Append the error object of a failed response. */
static void
resp_error(struct buf *b, const struct mreq *r)
{
	const struct errdef *d = errdef_find(r->o.status);
	const char *code = r->o.error_code[0] ? r->o.error_code : d->oa_code;

	buf_adds(b, "{\"code\":");
	jesc(b, code != NULL ? code : "server_error");
	buf_adds(b, ",\"message\":");
	jesc(b, r->o.message[0] ? r->o.message : d->msg);
	buf_addc(b, '}');
}

/* Append a Responses usage object. */
static void
resp_usage(struct buf *b, const struct mreq *r)
{
	buf_printf(
	    b,
	    "{\"input_tokens\":%d,\"input_tokens_details\":{\"cached_"
	    "tokens\":%d},\"output_tokens\":%d,\"output_tokens_details\":"
	    "{\"reasoning_tokens\":0},\"total_tokens\":%d}",
	    r->o.usage_p, r->o.usage_k, r->o.usage_c,
	    r->o.usage_p + r->o.usage_c);
}

/* Append a Responses object in state st (enum resp_state). */
static void
body_responses(struct buf *b, const struct mreq *r, int st)
{
	const char *why = st == RESP_DONE ? resp_incomplete(r) : NULL;
	const char *status = st == RESP_PENDING  ? "in_progress"
	                     : st == RESP_FAILED ? "failed"
	                     : why != NULL       ? "incomplete"
	                                         : "completed";

	buf_printf(b,
	           "{\"id\":\"resp_mock%llu\",\"object\":\"response\","
	           "\"created_at\":%lld,\"status\":\"%s\",\"model\":",
	           r->seq, r->created, status);
	jesc(b, r->model);
	buf_adds(b, ",\"error\":");
	if (st == RESP_FAILED)
		resp_error(b, r);
	else
		buf_adds(b, "null");
	buf_adds(b, ",\"incomplete_details\":");
	if (why != NULL)
		buf_printf(b, "{\"reason\":\"%s\"}", why);
	else
		buf_adds(b, "null");
	buf_adds(b,
	         ",\"instructions\":null,\"metadata\":{},"
	         "\"parallel_tool_calls\":true,\"temperature\":1,\"top_p\":1,"
	         "\"tool_choice\":\"auto\",\"tools\":[],\"output\":[");
	if (st == RESP_DONE)
		resp_item(b, r, 1);
	buf_adds(b, "],\"usage\":");
	if (st == RESP_DONE)
		resp_usage(b, r);
	else
		buf_adds(b, "null");
	buf_addc(b, '}');
}

/* Append an embeddings answer with one vector per input. */
static void
body_embed(struct buf *b, struct mreq *r)
{
	static const char vec[] = "[0.1,0.2,0.3]";
	int i;

	switch (r->kind) {
	case KIND_EMBED1:
		buf_printf(b, "{\"embedding\":{\"values\":%s}}", vec);
		return;
	case KIND_EMBEDN:
		buf_adds(b, "{\"embeddings\":[");
		for (i = 0; i < r->ninputs; i++)
			buf_printf(b, "%s{\"values\":%s}", i ? "," : "", vec);
		buf_adds(b, "]}");
		return;
	}
	buf_adds(b, "{\"object\":\"list\",\"data\":[");
	for (i = 0; i < r->ninputs; i++)
		buf_printf(b,
		           "%s{\"object\":\"embedding\",\"index\":%d,"
		           "\"embedding\":%s}",
		           i ? "," : "", i, vec);
	buf_adds(b, "],\"model\":");
	jesc(b, r->model);
	buf_printf(b, ",\"usage\":{\"prompt_tokens\":%d,\"total_tokens\":%d}}",
	           r->o.usage_p, r->o.usage_p);
}

/* Append a Converse reply. */
static void
body_converse(struct buf *b, struct mreq *r)
{
	buf_adds(b, "{\"output\":{\"message\":{\"role\":\"assistant\","
	            "\"content\":[");
	if (r->tool) {
		buf_printf(b,
		           "{\"toolUse\":{\"toolUseId\":\"tooluse_mock%llu\","
		           "\"name\":",
		           r->seq);
		jesc(b, r->tool_name);
		buf_adds(b, ",\"input\":" TOOL_ARGS "}}");
	} else {
		buf_adds(b, "{\"text\":\"");
		answer_raw(b);
		buf_adds(b, "\"}");
	}
	buf_adds(b, "]}},\"stopReason\":");
	jesc(b, finish_of(r, FMT_CONVERSE));
	buf_printf(b,
	           ",\"usage\":{\"inputTokens\":%d,\"outputTokens\":%d,"
	           "\"totalTokens\":%d},\"metrics\":{\"latencyMs\":1}}",
	           r->o.usage_p, r->o.usage_c, r->o.usage_p + r->o.usage_c);
}

/* Append the complete success body for r. */
static void
body_answer(struct buf *b, struct mreq *r)
{
	if (r->kind == KIND_COUNT) {
		buf_printf(b, "{\"input_tokens\":%zu}", COUNT_BASE + r->blen);
		return;
	}
	if (r->kind != KIND_CHAT) {
		body_embed(b, r);
		return;
	}
	switch (r->fmt) {
	case FMT_ANTHROPIC:
	case FMT_BEDROCK:
		body_anthropic(b, r);
		break;
	case FMT_CONVERSE:
		body_converse(b, r);
		break;
	case FMT_GEMINI:
		body_gemini(b, r);
		break;
	case FMT_RESPONSES:
		body_responses(b, r, RESP_DONE);
		break;
	default:
		body_openai(b, r);
		break;
	}
}

/* Append an OpenAI or Azure error object. */
static void
error_openai(struct buf *b, struct mreq *r, const struct errdef *d,
             const char *msg)
{
	const char *code = r->o.error_code[0] ? r->o.error_code : d->oa_code;
	const char *type = d->oa_type, *param = NULL;

	if (code != NULL && strcmp(code, "insufficient_quota") == 0)
		type = code;
	if (code != NULL && strcmp(code, "context_length_exceeded") == 0)
		param = "messages";
	if (code != NULL && strcmp(code, "content_filter") == 0)
		param = "prompt";
	if (r->fmt == FMT_AZURE && r->o.status == 404 && !r->o.error_code[0])
		code = "DeploymentNotFound";
	buf_adds(b, "{\"error\":{\"message\":");
	jesc(b, msg);
	buf_adds(b, ",\"type\":");
	jesc_or_null(b, type);
	buf_adds(b, ",\"param\":");
	jesc_or_null(b, param);
	buf_adds(b, ",\"code\":");
	jesc_or_null(b, code);
	if (r->fmt == FMT_AZURE)
		buf_printf(b, ",\"status\":%d", r->o.status);
	if (r->fmt == FMT_AZURE && param != NULL && param[0] == 'p')
		buf_adds(b, ",\"innererror\":{\"code\":"
		            "\"ResponsibleAIPolicyViolation\","
		            "\"content_filter_result\":{\"hate\":{\"filtered\":"
		            "true,\"severity\":\"high\"}}}");
	buf_adds(b, "}}");
}

/* Append a Gemini error object. */
static void
error_gemini(struct buf *b, struct mreq *r, const struct errdef *d,
             const char *msg)
{
	int sep = 0;

	buf_printf(b, "{\"error\":{\"code\":%d,\"message\":", r->o.status);
	jesc(b, msg);
	buf_printf(b, ",\"status\":\"%s\",\"details\":[", d->gm_status);
	if (r->o.error_code[0]) {
		buf_adds(b, "{\"@type\":\"type.googleapis.com/google.rpc."
		            "ErrorInfo\",\"reason\":");
		jesc(b, r->o.error_code);
		buf_adds(b, ",\"domain\":\"googleapis.com\"}");
		sep = 1;
	}
	if (r->o.retry_after >= 0)
		buf_printf(
		    b,
		    "%s{\"@type\":\"type.googleapis.com/google.rpc.RetryInfo\","
		    "\"retryDelay\":\"%ds\"}",
		    sep ? "," : "", r->o.retry_after);
	buf_adds(b, "]}}");
}

/* The credential r carried, as sent ("Bearer K", or the key), or "-". */
static const char *
mock_auth(struct mreq *r)
{
	static const char *const names[] = {"Authorization", "api-key",
	                                    "x-api-key", "x-goog-api-key"};
	struct evkeyvalq *h = evhttp_request_get_input_headers(r->req);
	const char *v;

	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		if ((v = evhttp_find_header(h, names[i])) != NULL)
			return v;
	return "-";
}

/* Append the provider-shaped error body for r's status. */
static void
body_error(struct buf *b, struct mreq *r)
{
	const struct errdef *d = errdef_find(r->o.status);
	const char *msg = r->o.message[0] ? r->o.message : d->msg;
	char echo[1024];

	if (r->o.echo_auth) { /* as providers do: "Incorrect API key: K" */
		snprintf(echo, sizeof echo, "%s: %s", msg, mock_auth(r));
		msg = echo;
	}

	if (r->google_auth) { /* Vertex's Google layer, before the model */
		buf_printf(b,
		           "{\"error\":{\"code\":%d,\"message\":", r->o.status);
		jesc(b, msg);
		buf_adds(b, ",\"status\":\"UNAUTHENTICATED\"}}");
		return;
	}
	switch (r->fmt) {
	case FMT_BEDROCK:
	case FMT_CONVERSE:
		buf_adds(b, "{\"message\":");
		jesc(b, msg);
		buf_addc(b, '}');
		break;
	case FMT_ANTHROPIC:
		buf_adds(b, "{\"type\":\"error\",\"error\":{\"type\":");
		jesc(b, d->an_type);
		buf_adds(b, ",\"message\":");
		jesc(b, msg);
		buf_printf(b, "},\"request_id\":\"req_mock_%llu\"}", r->seq);
		break;
	case FMT_GEMINI:
		error_gemini(b, r, d, msg);
		break;
	default:
		error_openai(b, r, d, msg);
		break;
	}
}

/* ---- stream frames ---- */

/* Append the start of an OpenAI chunk, up to and including "choices":. */
static void
oa_chunk_open(struct buf *b, struct mreq *r)
{
	buf_printf(b,
	           "data: {\"id\":\"chatcmpl-mock%llu\",\"object\":"
	           "\"chat.completion.chunk\",\"created\":%lld,",
	           r->seq, r->created);
	if (r->o.stamp)
		buf_printf(b, "\"llmf_sent_us\":%lld,", (long long)clock_us());
	buf_adds(b, "\"model\":");
	jesc(b, r->model);
	buf_adds(b, ",\"choices\":");
}

/* Append the Azure prompt_filter_results frame. */
static void
frame_azure_filter(struct buf *b)
{
	buf_adds(b, "data: {\"choices\":[],\"created\":0,\"id\":\"\",\"model\":"
	            "\"\",\"object\":\"\",\"prompt_filter_results\":[{"
	            "\"prompt_index\":0,\"content_filter_results\":{\"hate\":{"
	            "\"filtered\":false,\"severity\":\"safe\"},\"self_harm\":{"
	            "\"filtered\":false,\"severity\":\"safe\"},\"sexual\":{"
	            "\"filtered\":false,\"severity\":\"safe\"},\"violence\":{"
	            "\"filtered\":false,\"severity\":\"safe\"}}}]}\n\n");
}

/* Append the OpenAI delta for step s (1..nchunks) of a tool call stream:
 * the call's id and name at step 0, then pieces of its arguments. */
static void
oa_tool_delta(struct buf *b, struct mreq *r, int s)
{
	if (s == 0) {
		buf_printf(b,
		           "[{\"index\":0,\"delta\":{\"role\":\"assistant\","
		           "\"content\":null,\"tool_calls\":[{\"index\":0,"
		           "\"id\":\"call_mock%llu\",\"type\":\"function\","
		           "\"function\":{\"name\":",
		           r->seq);
		jesc(b, r->tool_name);
		buf_adds(b, ",\"arguments\":\"\"}}]},\"finish_reason\":null}]}"
		            "\n\n");
		return;
	}
	buf_adds(b, "[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,"
	            "\"function\":{\"arguments\":");
	jesc(b, tool_pieces[s - 1]);
	buf_adds(b, "}}]},\"finish_reason\":null}]}\n\n");
}

/* Append the OpenAI / Azure frames for stream step s. */
static void
frame_openai(struct buf *b, struct mreq *r, int s)
{
	if (s == 0 && r->fmt == FMT_AZURE)
		frame_azure_filter(b);
	oa_chunk_open(b, r);
	if (r->tool && s <= r->nchunks) {
		oa_tool_delta(b, r, s);
		return;
	}
	if (s == 0) {
		buf_adds(b, "[{\"index\":0,\"delta\":{\"role\":\"assistant\","
		            "\"content\":\"\"},\"finish_reason\":null}]}\n\n");
		return;
	}
	if (s <= r->nchunks) {
		buf_adds(b, "[{\"index\":0,\"delta\":{\"content\":");
		chunk_text(b, s - 1);
		buf_adds(b, "},\"finish_reason\":null}]}\n\n");
		return;
	}
	buf_adds(b, "[{\"index\":0,\"delta\":{},\"finish_reason\":");
	jesc(b, finish_of(r, FMT_OPENAI));
	buf_adds(b, "}]}\n\n");
	if (r->include_usage) {
		oa_chunk_open(b, r);
		buf_adds(b, "[],\"usage\":");
		oa_usage(b, r);
		buf_adds(b, "}\n\n");
	}
	if (r->mode != MODE_NO_DONE)
		buf_adds(b, "data: [DONE]\n\n");
}

/* Append the Anthropic message_start, content_block_start and ping events. */
static void
frame_anthropic_start(struct buf *b, struct mreq *r)
{
	buf_printf(b,
	           "event: message_start\ndata: {\"type\":\"message_start\","
	           "\"message\":{\"id\":\"msg_mock%llu\",\"type\":\"message\","
	           "\"role\":\"assistant\",\"content\":[],\"model\":",
	           r->seq);
	jesc(b, r->model);
	buf_printf(b,
	           ",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{"
	           "\"input_tokens\":%d%s,\"output_tokens\":1}}}\n\n",
	           r->o.usage_p - r->o.usage_k, anth_cached(r));
	buf_adds(b, "event: content_block_start\ndata: {\"type\":"
	            "\"content_block_start\",\"index\":0,\"content_block\":");
	if (r->tool) {
		buf_printf(b,
		           "{\"type\":\"tool_use\",\"id\":\"toolu_mock%llu\","
		           "\"name\":",
		           r->seq);
		jesc(b, r->tool_name);
		buf_adds(b, ",\"input\":{}}}\n\n");
	} else
		buf_adds(b, "{\"type\":\"text\",\"text\":\"\"}}\n\n");
	buf_adds(b, "event: ping\ndata: {\"type\":\"ping\"}\n\n");
}

/* Append the Anthropic events for stream step s. */
static void
frame_anthropic(struct buf *b, struct mreq *r, int s)
{
	if (s == 0) {
		frame_anthropic_start(b, r);
		return;
	}
	if (s <= r->nchunks) {
		buf_adds(b, "event: content_block_delta\ndata: {\"type\":"
		            "\"content_block_delta\",\"index\":0,\"delta\":{");
		if (r->tool) {
			buf_adds(b, "\"type\":\"input_json_delta\","
			            "\"partial_json\":");
			jesc(b, tool_pieces[s - 1]);
		} else {
			buf_adds(b, "\"type\":\"text_delta\",\"text\":");
			chunk_text(b, s - 1);
		}
		buf_adds(b, "}}\n\n");
		return;
	}
	buf_adds(b, "event: content_block_stop\ndata: {\"type\":"
	            "\"content_block_stop\",\"index\":0}\n\n");
	buf_adds(b, "event: message_delta\ndata: {\"type\":\"message_delta\","
	            "\"delta\":{\"stop_reason\":");
	jesc(b, finish_of(r, FMT_ANTHROPIC));
	buf_printf(
	    b, ",\"stop_sequence\":null},\"usage\":{\"output_tokens\":%d}}\n\n",
	    r->o.usage_c);
	if (r->mode != MODE_NO_DONE)
		buf_adds(b, "event: message_stop\ndata: {\"type\":"
		            "\"message_stop\"}\n\n");
}

/* Append the Gemini frame for stream step s (none for the preamble). */
static void
frame_gemini(struct buf *b, struct mreq *r, int s)
{
	int last = s > r->nchunks;

	if (s == 0)
		return;
	buf_adds(b, "data: {\"candidates\":[{\"content\":{\"role\":\"model\","
	            "\"parts\":[");
	if (last && r->tool)
		gemini_call(b, r);
	else if (last)
		buf_adds(b, "{\"text\":\"\"}");
	else {
		buf_adds(b, "{\"text\":");
		chunk_text(b, s - 1);
		buf_addc(b, '}');
	}
	buf_adds(b, "]}");
	if (last) {
		buf_adds(b, ",\"finishReason\":");
		jesc(b, finish_of(r, FMT_GEMINI));
	}
	buf_adds(b, ",\"index\":0}]");
	gemini_tail(b, r, last);
	buf_adds(b, "\n\n");
}

/* Append the head of a Responses event, up to its sequence_number. */
static void
resp_event(struct buf *b, struct mreq *r, const char *type)
{
	buf_printf(b,
	           "event: %s\ndata: {\"type\":\"%s\",\"sequence_number\":%d",
	           type, type, r->evseq++);
}

/* Append a Responses event carrying the response object in state st. */
static void
resp_event_obj(struct buf *b, struct mreq *r, const char *type, int st)
{
	resp_event(b, r, type);
	buf_adds(b, ",\"response\":");
	body_responses(b, r, st);
	buf_adds(b, "}\n\n");
}

/* Append the item_id, output_index (and content_index) of r's item. */
static void
resp_ids(struct buf *b, const struct mreq *r)
{
	if (r->tool)
		buf_printf(b, ",\"item_id\":\"fc_mock%llu\",\"output_index\":0",
		           r->seq);
	else
		buf_printf(b,
		           ",\"item_id\":\"msg_mock%llu\",\"output_index\":0,"
		           "\"content_index\":0",
		           r->seq);
}

/* Append an output_item.added / .done event for r's item. */
static void
resp_item_event(struct buf *b, struct mreq *r, int done)
{
	resp_event(b, r,
	           done ? "response.output_item.done"
	                : "response.output_item.added");
	buf_adds(b, ",\"output_index\":0,\"item\":");
	resp_item(b, r, done);
	buf_adds(b, "}\n\n");
}

/* Append Responses step 0: created, in_progress, item (and part) added. */
static void
frame_responses_start(struct buf *b, struct mreq *r)
{
	resp_event_obj(b, r, "response.created", RESP_PENDING);
	resp_event_obj(b, r, "response.in_progress", RESP_PENDING);
	resp_item_event(b, r, 0);
	if (r->tool)
		return;
	resp_event(b, r, "response.content_part.added");
	resp_ids(b, r);
	buf_adds(b, ",\"part\":{\"type\":\"output_text\",\"text\":\"\","
	            "\"annotations\":[]}}\n\n");
}

/* Append the Responses delta event for content chunk k. */
static void
frame_responses_delta(struct buf *b, struct mreq *r, int k)
{
	if (r->tool) {
		resp_event(b, r, "response.function_call_arguments.delta");
		resp_ids(b, r);
		buf_adds(b, ",\"delta\":");
		jesc(b, tool_pieces[k]);
		buf_adds(b, "}\n\n");
		return;
	}
	resp_event(b, r, "response.output_text.delta");
	resp_ids(b, r);
	buf_adds(b, ",\"delta\":");
	chunk_text(b, k);
	buf_adds(b, ",\"logprobs\":[]}\n\n");
}

/* Append the Responses events that close r's text or arguments. */
static void
frame_responses_done(struct buf *b, struct mreq *r)
{
	if (r->tool) {
		resp_event(b, r, "response.function_call_arguments.done");
		resp_ids(b, r);
		buf_adds(b, ",\"name\":");
		jesc(b, r->tool_name);
		buf_adds(b, ",\"arguments\":");
		jesc(b, TOOL_ARGS);
		buf_adds(b, "}\n\n");
		return;
	}
	resp_event(b, r, "response.output_text.done");
	resp_ids(b, r);
	buf_adds(b, ",\"text\":\"");
	answer_text(b, r);
	buf_adds(b, "\",\"logprobs\":[]}\n\n");
	resp_event(b, r, "response.content_part.done");
	resp_ids(b, r);
	buf_adds(b, ",\"part\":{\"type\":\"output_text\",\"text\":\"");
	answer_text(b, r);
	buf_adds(b, "\",\"annotations\":[]}}\n\n");
}

/* Append the OpenAI Responses events for stream step s. */
static void
frame_responses(struct buf *b, struct mreq *r, int s)
{
	if (s == 0) {
		frame_responses_start(b, r);
		return;
	}
	if (s <= r->nchunks) {
		frame_responses_delta(b, r, s - 1);
		return;
	}
	frame_responses_done(b, r);
	resp_item_event(b, r, 1);
	if (r->mode != MODE_NO_DONE)
		resp_event_obj(b, r,
		               resp_incomplete(r) ? "response.incomplete"
		                                  : "response.completed",
		               RESP_DONE);
}

/* ---- AWS Bedrock ---- */

#define BAD_CHUNK "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{"

/* The Bedrock error name for r's status (or its --error-code). */
static const char *
amz_error_type(const struct mreq *r)
{
	static const struct {
		int status;
		const char *name;
	} map[] = {
	    {400, "ValidationException"},        {403, "AccessDeniedException"},
	    {404, "ResourceNotFoundException"},  {408, "ModelTimeoutException"},
	    {424, "ModelErrorException"},        {429, "ThrottlingException"},
	    {503, "ServiceUnavailableException"}};

	if (r->amz_type[0])
		return r->amz_type;
	if (r->o.error_code[0])
		return r->o.error_code;
	for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
		if (map[i].status == r->o.status)
			return map[i].name;
	return "InternalServerException";
}

/* The :exception-type of an in-stream exception for r. */
static const char *
amz_exception_type(const struct mreq *r)
{
	switch (r->o.status) {
	case 429:
		return r->o.error_code[0] ? r->o.error_code
		                          : "throttlingException";
	case 400:
		return r->o.error_code[0] ? r->o.error_code
		                          : "validationException";
	case 503:
		return r->o.error_code[0] ? r->o.error_code
		                          : "serviceUnavailableException";
	case 500:
		return r->o.error_code[0] ? r->o.error_code
		                          : "internalServerException";
	default:
		return r->o.error_code[0] ? r->o.error_code
		                          : "modelStreamErrorException";
	}
}

/* Append one event stream message with the given headers and payload. */
static void
amz_frame(struct buf *b, const char *mtype, const char *key, const char *name,
          const char *payload, size_t plen)
{
	struct evs_hdr h[3] = {{key, name},
	                       {":content-type", "application/json"},
	                       {":message-type", mtype}};

	evs_encode(b, h, 3, payload, plen);
}

/* Append an exception message for r (its message as the payload). */
static void
amz_exception(struct buf *b, const struct mreq *r)
{
	struct buf p = {0};

	buf_adds(&p, "{\"message\":");
	jesc(&p, r->o.message[0] ? r->o.message : "Too many requests");
	buf_addc(&p, '}');
	amz_frame(b, "exception", ":exception-type", amz_exception_type(r),
	          p.data, p.len);
	buf_free(&p);
}

/* Append a Bedrock chunk: {"bytes": base64 of one Anthropic event}. */
static void
amz_chunk(struct buf *b, const char *json, size_t n)
{
	struct buf p = {0};

	buf_adds(&p, "{\"bytes\":\"");
	b64_encode(&p, json, n, 0);
	buf_adds(&p, "\",\"p\":\"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN\"}");
	amz_frame(b, "event", ":event-type", "chunk", p.data, p.len);
	buf_free(&p);
}

/* Turn SSE text (Anthropic events) into Bedrock chunks appended to b. */
static void
amz_chunks_of_sse(struct buf *b, const struct buf *sse)
{
	const char *p = sse->data, *end = p + sse->len, *d, *e;

	while (p && p < end &&
	       (d = memmem(p, (size_t)(end - p), "data: ", 6)) != NULL) {
		d += 6;
		if ((e = memchr(d, '\n', (size_t)(end - d))) == NULL)
			e = end;
		amz_chunk(b, d, (size_t)(e - d));
		p = e;
	}
}

/* Append the Bedrock InvokeModelWithResponseStream frames for step s:
 * Anthropic's events, each in a chunk. */
static void
frame_bedrock(struct buf *b, struct mreq *r, int s)
{
	struct buf sse = {0};

	frame_anthropic(&sse, r, s);
	amz_chunks_of_sse(b, &sse);
	buf_free(&sse);
}

/* Append one ConverseStream event of type with payload json. */
static void
cv_event(struct buf *b, const char *type, const char *json)
{
	amz_frame(b, "event", ":event-type", type, json, strlen(json));
}

/* Append the ConverseStream events for step s. */
static void
frame_converse(struct buf *b, struct mreq *r, int s)
{
	struct buf p = {0};

	if (s == 0) {
		cv_event(b, "messageStart", "{\"role\":\"assistant\"}");
		if (r->tool) {
			buf_printf(&p,
			           "{\"start\":{\"toolUse\":{\"toolUseId\":"
			           "\"tooluse_mock%llu\",\"name\":",
			           r->seq);
			jesc(&p, r->tool_name);
			buf_adds(&p, "}},\"contentBlockIndex\":0}");
			cv_event(b, "contentBlockStart", buf_cstr(&p));
		}
	} else if (s <= r->nchunks) {
		if (r->tool) {
			buf_adds(&p, "{\"delta\":{\"toolUse\":{\"input\":");
			jesc(&p, tool_pieces[s - 1]);
			buf_adds(&p, "}},\"contentBlockIndex\":0}");
		} else {
			buf_adds(&p, "{\"delta\":{\"text\":");
			chunk_text(&p, s - 1);
			buf_adds(&p, "},\"contentBlockIndex\":0}");
		}
		cv_event(b, "contentBlockDelta", buf_cstr(&p));
	} else {
		cv_event(b, "contentBlockStop", "{\"contentBlockIndex\":0}");
		buf_adds(&p, "{\"stopReason\":");
		jesc(&p, finish_of(r, FMT_CONVERSE));
		buf_addc(&p, '}');
		cv_event(b, "messageStop", buf_cstr(&p));
		if (r->mode != MODE_NO_DONE) {
			buf_reset(&p);
			buf_printf(&p,
			           "{\"usage\":{\"inputTokens\":%d,"
			           "\"outputTokens\":%d,\"totalTokens\":%d},"
			           "\"metrics\":{\"latencyMs\":1}}",
			           r->o.usage_p, r->o.usage_c,
			           r->o.usage_p + r->o.usage_c);
			cv_event(b, "metadata", buf_cstr(&p));
		}
	}
	buf_free(&p);
}

/* Whether r came in on a Bedrock path. */
static int
is_amz(const struct mreq *r)
{
	return r->fmt == FMT_BEDROCK || r->fmt == FMT_CONVERSE;
}

/* Append the frames for stream step s in r's format. */
static void
frame_step(struct buf *b, struct mreq *r, int s)
{
	switch (r->fmt) {
	case FMT_ANTHROPIC:
		frame_anthropic(b, r, s);
		break;
	case FMT_BEDROCK:
		frame_bedrock(b, r, s);
		break;
	case FMT_CONVERSE:
		frame_converse(b, r, s);
		break;
	case FMT_GEMINI:
		frame_gemini(b, r, s);
		break;
	case FMT_RESPONSES:
		frame_responses(b, r, s);
		break;
	default:
		frame_openai(b, r, s);
		break;
	}
}

/* Append the in-stream error event in r's format. */
static void
frame_error(struct buf *b, struct mreq *r)
{
	if (is_amz(r)) {
		amz_exception(b, r);
		return;
	}
	if (r->fmt == FMT_ANTHROPIC) {
		buf_adds(b, "event: error\ndata: {\"type\":\"error\",\"error\":"
		            "{\"type\":\"overloaded_error\",\"message\":");
		jesc(b, r->o.message[0] ? r->o.message : "Overloaded");
		buf_adds(b, "}}\n\n");
		return;
	}
	if (r->fmt == FMT_RESPONSES) {
		resp_event_obj(b, r, "response.created", RESP_PENDING);
		resp_event_obj(b, r, "response.failed", RESP_FAILED);
		return;
	}
	buf_adds(b, "data: ");
	body_error(b, r);
	buf_adds(b, "\n\n");
}

/* Append an event whose data is not valid JSON, in r's format. */
static void
frame_bad(struct buf *b, const struct mreq *r)
{
	switch (r->fmt) {
	case FMT_BEDROCK:
		amz_chunk(b, BAD_CHUNK, strlen(BAD_CHUNK));
		break;
	case FMT_CONVERSE:
		cv_event(b, "contentBlockDelta", "{\"delta\":{");
		break;
	case FMT_ANTHROPIC:
		buf_adds(b,
		         "event: content_block_delta\ndata: {\"type\":"
		         "\"content_block_delta\",\"index\":0,\"delta\":{\n\n");
		break;
	case FMT_GEMINI:
		buf_adds(b, "data: {\"candidates\":[{\n\n");
		break;
	case FMT_RESPONSES:
		buf_adds(b,
		         "event: response.output_text.delta\ndata: {\"type\":"
		         "\"response.output_text.delta\",\"delta\":\n\n");
		break;
	default:
		buf_adds(b, "data: {\"choices\":[{\n\n");
		break;
	}
}

/* ---- replies ---- */

/* Add the --headers option's "Name: value" pairs (';'-separated). */
static void
reply_extra_headers(struct evkeyvalq *h)
{
	char all[sizeof M.o.headers], *save = NULL, *p, *v;

	snprintf(all, sizeof all, "%s", M.o.headers);
	for (p = strtok_r(all, ";", &save); p; p = strtok_r(NULL, ";", &save)) {
		while (*p == ' ')
			p++;
		if ((v = strchr(p, ':')) == NULL || v == p)
			continue;
		*v++ = '\0';
		while (*v == ' ')
			v++;
		evhttp_add_header(h, p, v);
	}
}

/* Add the headers every reply carries. */
static void
reply_headers(struct evhttp_request *req, const char *ctype,
              unsigned long long seq)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	char id[40];

	snprintf(id, sizeof id, "req_mock_%llu", seq);
	evhttp_add_header(h, "Content-Type", ctype);
	evhttp_add_header(h, "x-mock-name", M.name);
	evhttp_add_header(h, "x-request-id", id);
	reply_extra_headers(h);
}

/* Reason phrase for statuses evhttp does not know, else NULL (its own). */
static const char *
reason_phrase(int code)
{
	switch (code) {
	case 429:
		return "Too Many Requests";
	case 529:
		return "Overloaded";
	default:
		return NULL;
	}
}

/* Send a complete reply with body b of type ctype (may free the request). */
static void
reply_send_type(struct evhttp_request *req, int code, unsigned long long seq,
                const char *ctype, struct buf *b)
{
	struct evbuffer *evb = evbuffer_new();

	reply_headers(req, ctype, seq);
	if (evb == NULL || b->oom || evbuffer_add(evb, b->data, b->len) == -1) {
		evhttp_send_error(req, 500, "mock out of memory");
		goto out;
	}
	evhttp_send_reply(req, code, reason_phrase(code), evb);
out:
	if (evb != NULL)
		evbuffer_free(evb);
	buf_free(b);
}

/* Send a complete JSON reply with body b (may free the request). */
static void
reply_send(struct evhttp_request *req, int code, unsigned long long seq,
           struct buf *b)
{
	reply_send_type(req, code, seq, "application/json", b);
}

/* Send b as one chunk of a started reply; -1 on failure. */
static int
reply_chunk(struct evhttp_request *req, struct buf *b)
{
	struct evbuffer *evb;
	int rc = -1;

	if (b->len == 0 || b->oom)
		return b->oom ? -1 : 0;
	if ((evb = evbuffer_new()) == NULL)
		return -1;
	if (evbuffer_add(evb, b->data, b->len) == 0) {
		evhttp_send_reply_chunk(req, evb);
		rc = 0;
	}
	evbuffer_free(evb);
	return rc;
}

/* ---- request lifecycle ---- */

static void mreq_timer(evutil_socket_t, short, void *);
static void send_token(struct mreq *);

/* Forget r: cancel its timer, detach its callbacks and free it. */
static void
mreq_free(struct mreq *r)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(r->req);

	if (evcon != NULL)
		evhttp_connection_set_closecb(evcon, NULL, NULL);
	evhttp_request_set_on_complete_cb(r->req, NULL, NULL);
	LIST_REMOVE(r, entry);
	event_free(r->ev);
	free(r);
}

/* Called when r's reply has been fully written. */
static void
mreq_complete(struct evhttp_request *req, void *arg)
{
	(void)req;
	mreq_free(arg);
}

/* Called when the client closed r's connection before the reply ended. */
static void
mreq_closed(struct evhttp_connection *evcon, void *arg)
{
	struct mreq *r = arg;
	struct evhttp_request *req = r->req;
	int detached;

	(void)evcon;
	detached = evhttp_request_get_connection(req) == NULL;
	M.st.client_closed++;
	log_debug("request %llu: client closed the connection", r->seq);
	mreq_free(r);
	/* evhttp hands a request still waiting for its reply back to us. */
	if (detached)
		evhttp_request_free(req);
}

/* Run r's next action after ms milliseconds. */
static void
mreq_schedule(struct mreq *r, int ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

	evtimer_add(r->ev, &tv);
}

/* Close r's connection once its output has drained, frees r and the request. */
static void
mreq_cut(struct mreq *r)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(r->req);
	struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);

	if (evbuffer_get_length(bufferevent_get_output(bev)) > 0 &&
	    r->flush_tries++ < MOCK_FLUSH_TRY) {
		r->mode = MODE_CLOSE;
		mreq_schedule(r, 2);
		return;
	}
	mreq_free(r);
	evhttp_connection_free(evcon);
}

/* Allocate the state for a provider request. */
static struct mreq *
mreq_new(struct evhttp_request *req)
{
	struct mreq *r;

	if ((r = calloc(1, sizeof *r)) == NULL)
		return NULL;
	if ((r->ev = evtimer_new(M.base, mreq_timer, r)) == NULL) {
		free(r);
		return NULL;
	}
	r->req = req;
	r->o = M.o;
	r->seq = ++M.seq;
	r->created = (long long)time(NULL);
	r->ninputs = 1;
	r->nchunks = r->o.chunks;
	snprintf(r->model, sizeof r->model, "mock-model");
	LIST_INSERT_HEAD(&M.live, r, entry);
	evhttp_request_set_on_complete_cb(req, mreq_complete, r);
	evhttp_connection_set_closecb(evhttp_request_get_connection(req),
	                              mreq_closed, r);
	return r;
}

/* ---- behaviours ---- */

/* Reply with the complete answer. */
static void
send_answer(struct mreq *r)
{
	struct buf b = {0};

	body_answer(&b, r);
	reply_send(r->req, 200, r->seq, &b);
}

/* Reply with the provider's error body and retry hints. */
static void
send_error(struct mreq *r)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(r->req);
	struct buf b = {0};
	char v[16];

	if (r->o.retry_after >= 0) {
		snprintf(v, sizeof v, "%d", r->o.retry_after);
		evhttp_add_header(h, "retry-after", v);
	}
	if (r->o.retry_after_ms >= 0) {
		snprintf(v, sizeof v, "%d", r->o.retry_after_ms);
		evhttp_add_header(h, "retry-after-ms", v);
	}
	if (is_amz(r)) {
		char t[256];

		snprintf(t, sizeof t,
		         "%.128s:http://internal.amazon.com/coral/"
		         "com.amazon.bedrock/",
		         amz_error_type(r));
		evhttp_add_header(h, "x-amzn-ErrorType", t);
	}
	body_error(&b, r);
	reply_send(r->req, r->o.status, r->seq, &b);
}

/* Reply 200 with a body that is not JSON. */
static void
send_garbage(struct mreq *r)
{
	struct buf b = {0};

	buf_adds(&b, "<html><body>502 upstream hiccup {\"choices\": [");
	reply_send(r->req, 200, r->seq, &b);
}

/* Non-stream cut/stall: announce the full length, send half, then stop. */
static void
send_partial(struct mreq *r)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(r->req);
	struct buf b = {0};
	char len[24];

	body_answer(&b, r);
	snprintf(len, sizeof len, "%zu", b.len);
	reply_headers(r->req, "application/json", r->seq);
	evhttp_add_header(h, "Content-Length", len);
	evhttp_send_reply_start(r->req, 200, NULL);
	b.len /= 2;
	reply_chunk(r->req, &b);
	buf_free(&b);
	if (r->mode == MODE_CUT)
		mreq_cut(r);
}

/* Send the stream's status line and headers. */
static void
stream_start(struct mreq *r)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(r->req);
	struct evhttp_connection *ec = evhttp_request_get_connection(r->req);
	struct bufferevent *bev =
	    ec ? evhttp_connection_get_bufferevent(ec) : NULL;
	int one = 1;

	/* frames go out as they are made: without this, Nagle holds the
	 * first one until the client's delayed ACK of the headers (40 ms) */
	if (bev != NULL)
		(void)setsockopt(bufferevent_getfd(bev), IPPROTO_TCP,
		                 TCP_NODELAY, &one, sizeof one);
	reply_headers(r->req,
	              is_amz(r) ? "application/vnd.amazon.eventstream"
	                        : "text/event-stream",
	              r->seq);
	evhttp_add_header(h, "Cache-Control", "no-cache");
	if (r->mode == MODE_STREAM_ERROR || r->mode == MODE_LATE_ERROR)
		evhttp_add_header(h, "Connection", "close");
	evhttp_send_reply_start(r->req, 200, NULL);
}

/* Send the in-stream error event, then end the stream and the connection. */
static void
stream_error(struct mreq *r)
{
	struct buf b = {0};

	frame_error(&b, r);
	reply_chunk(r->req, &b);
	buf_free(&b);
	evhttp_send_reply_end(r->req);
}

/* Send stream step r->step, or cut / stall / finish when it is time. */
static void
stream_step(struct mreq *r)
{
	struct buf b = {0};
	int s = r->step, last = r->nchunks + 1;
	int bad =
	    (r->o.cut_after < r->nchunks ? r->o.cut_after : r->nchunks) + 1;

	if (r->mode == MODE_LATE_ERROR && s >= 1 && s - 1 >= r->o.cut_after) {
		stream_error(r);
		return;
	}
	if ((r->mode == MODE_CUT || r->mode == MODE_STALL) && s >= 1 &&
	    s - 1 >= r->o.cut_after) {
		if (r->mode == MODE_CUT)
			mreq_cut(r);
		return; /* stall: stay silent until the client leaves */
	}
	if (r->mode == MODE_BAD_CHUNK && s == bad)
		frame_bad(&b, r);
	frame_step(&b, r, s);
	if (reply_chunk(r->req, &b) == -1)
		log_warnx("request %llu: out of memory", r->seq);
	buf_free(&b);
	if (s == last) {
		evhttp_send_reply_end(r->req);
		return;
	}
	r->step++;
	mreq_schedule(r, r->o.chunk_delay_ms);
}

/* Carry out r's behaviour now that its latency has passed. */
static void
mreq_act(struct mreq *r)
{
	if (r->kind == KIND_TOKEN) {
		send_token(r);
		return;
	}
	switch (r->mode) {
	case MODE_OK:
	case MODE_NO_DONE:
	case MODE_BAD_CHUNK:
	case MODE_LATE_ERROR:
		if (r->stream)
			stream_step(r);
		else
			send_answer(r);
		break;
	case MODE_STATUS:
		send_error(r);
		break;
	case MODE_GARBAGE:
		send_garbage(r);
		break;
	case MODE_CLOSE:
		mreq_cut(r);
		break;
	case MODE_STREAM_ERROR:
		stream_error(r);
		break;
	case MODE_CUT:
	case MODE_STALL:
		if (r->stream)
			stream_step(r);
		else if (r->step++ == 0)
			send_partial(r);
		break;
	}
}

/* Timer callback: act, unless the client already went away. */
static void
mreq_timer(evutil_socket_t fd, short what, void *arg)
{
	struct mreq *r = arg;
	struct evhttp_request *req = r->req;

	(void)fd;
	(void)what;
	if (evhttp_request_get_connection(req) == NULL) {
		M.st.client_closed++;
		mreq_free(r);
		evhttp_request_free(req);
		return;
	}
	mreq_act(r);
}

/*
 * evhttp stops reading once a request is complete and only notices a client
 * close after it starts writing the reply, when evhttp_write_buffer() drops
 * the read callback and re-enables EV_READ so EOF reaches its error callback.
 * Do the same now so a close during latency, hang or stall is seen too.
 */
static void
mreq_watch_close(struct mreq *r)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(r->req);
	struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
	bufferevent_data_cb rd, wr;
	bufferevent_event_cb ev;
	void *arg;

	bufferevent_getcb(bev, &rd, &wr, &ev, &arg);
	bufferevent_setcb(bev, NULL, wr, ev, arg);
	bufferevent_enable(bev, EV_READ);
}

/* Start r: headers now for streams, the rest after the latency. */
static void
mreq_start(struct mreq *r)
{
	mreq_watch_close(r);
	switch (r->mode) {
	case MODE_HANG:
		return;
	case MODE_OK:
	case MODE_STREAM_ERROR:
	case MODE_CUT:
	case MODE_STALL:
	case MODE_NO_DONE:
	case MODE_BAD_CHUNK:
	case MODE_LATE_ERROR:
		if (r->stream)
			stream_start(r);
		break;
	}
	mreq_schedule(r, r->o.latency_ms);
}

/* ---- request intake ---- */

/* Whether s ends with suffix. */
static int
ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Copy the path segment after marker (up to '/' or ':') into r->model. */
static void
model_from_path(struct mreq *r, const char *path, const char *marker)
{
	const char *p = strstr(path, marker);
	size_t n;

	if (p == NULL)
		return;
	p += strlen(marker);
	n = strcspn(p, "/:");
	if (n > 0 && n < sizeof r->model)
		snprintf(r->model, sizeof r->model, "%.*s", (int)n, p);
}

/* A Bedrock path: /model/{id}/invoke[-with-response-stream] or
 * /model/{id}/converse[-stream]; the model id is the decoded segment. */
static void
route_bedrock(struct mreq *r, const char *path)
{
	const char *m = strstr(path, "/model/") + 7, *op = strchr(m, '/');
	size_t n = 0;

	for (const char *p = m; op && p < op && n + 1 < sizeof r->model; p++)
		if (*p == '%' && p + 2 < op) {
			unsigned v;

			if (sscanf(p + 1, "%2x", &v) == 1)
				r->model[n++] = (char)v;
			p += 2;
		} else
			r->model[n++] = *p;
	r->model[n] = '\0';
	if (op == NULL)
		return;
	if (strcmp(op, "/invoke") == 0 ||
	    strcmp(op, "/invoke-with-response-stream") == 0) {
		r->fmt = FMT_BEDROCK;
		r->kind = KIND_CHAT;
		r->stream = op[7] == '-';
	} else if (strcmp(op, "/converse") == 0 ||
	           strcmp(op, "/converse-stream") == 0) {
		r->fmt = FMT_CONVERSE;
		r->kind = KIND_CHAT;
		r->stream = op[9] == '-';
	}
}

/* Set r's format, kind and (Gemini) streaming from the request path. */
static void
route(struct mreq *r, const char *path)
{
	const char *colon = strrchr(path, ':');

	if (strncmp(path, "/model/", 7) == 0 || strstr(path, "/model/")) {
		route_bedrock(r, path);
		return;
	}
	r->vertex = strstr(path, "/publishers/") != NULL;
	if (colon != NULL && strstr(path, "/publishers/anthropic/models/")) {
		r->fmt = FMT_ANTHROPIC;
		r->kind = KIND_CHAT;
		model_from_path(r, path, "/models/");
		r->stream = strcmp(colon, ":streamRawPredict") == 0;
		if (!r->stream && strcmp(colon, ":rawPredict") != 0)
			r->kind = KIND_UNKNOWN;
		else if (!r->stream && strcmp(r->model, "count-tokens") == 0)
			r->kind = KIND_COUNT;
		return;
	}
	if (colon != NULL && strstr(path, "/models/") != NULL) {
		r->fmt = FMT_GEMINI;
		model_from_path(r, path, "/models/");
		if (strcmp(colon, ":generateContent") == 0)
			r->kind = KIND_CHAT;
		else if (strcmp(colon, ":streamGenerateContent") == 0) {
			r->kind = KIND_CHAT;
			r->stream = 1;
		} else if (strcmp(colon, ":embedContent") == 0)
			r->kind = KIND_EMBED1;
		else if (strcmp(colon, ":batchEmbedContents") == 0)
			r->kind = KIND_EMBEDN;
		return;
	}
	if (strstr(path, "/openai/deployments/") != NULL) {
		r->fmt = FMT_AZURE;
		model_from_path(r, path, "/openai/deployments/");
	}
	if (ends_with(path, "/chat/completions"))
		r->kind = KIND_CHAT;
	else if (ends_with(path, "/embeddings"))
		r->kind = KIND_EMBED;
	else if (ends_with(path, "/v1/messages")) {
		r->kind = KIND_CHAT;
		r->fmt = FMT_ANTHROPIC;
	} else if (ends_with(path, "/v1/messages/count_tokens")) {
		r->kind = KIND_COUNT;
		r->fmt = FMT_ANTHROPIC;
	} else if (ends_with(path, "/responses")) {
		r->kind = KIND_CHAT;
		r->fmt = FMT_RESPONSES;
	}
}

/* Number of inputs in an embeddings "input" or "requests" value. */
static int
count_inputs(const jsmntok_t *t, int i)
{
	if (i < 0 || t[i].type != JSMN_ARRAY)
		return 1;
	if (t[i].size > 0 && t[i + 1].type == JSMN_PRIMITIVE)
		return 1; /* one input given as token ids */
	return t[i].size;
}

/* Copy string token i into dst if it is a non-empty string that fits. */
static int
jname(const char *js, const jsmntok_t *t, int i, char *dst, size_t size)
{
	if (i < 0 || t[i].type != JSMN_STRING || t[i].end == t[i].start)
		return -1;
	return jstr(js, &t[i], dst, size);
}

/* Name of tool declaration i (OpenAI Chat "function.name", Gemini
 * "functionDeclarations[0].name", else "name") into r->tool_name. */
static int
tool_decl(struct mreq *r, const char *js, const jsmntok_t *t, int i)
{
	int f;

	if ((f = jget(js, t, i, "function")) >= 0 ||
	    (f = jget(js, t, i, "toolSpec")) >= 0)
		return jname(js, t, jget(js, t, f, "name"), r->tool_name,
		             sizeof r->tool_name);
	if ((f = jget(js, t, i, "functionDeclarations")) < 0)
		f = jget(js, t, i, "function_declarations");
	if (f >= 0)
		return t[f].type == JSMN_ARRAY && t[f].size > 0
		           ? jname(js, t, jget(js, t, f + 1, "name"),
		                   r->tool_name, sizeof r->tool_name)
		           : -1;
	return jname(js, t, jget(js, t, i, "name"), r->tool_name,
	             sizeof r->tool_name);
}

/* Find the first named tool in the body's "tools" array. */
static void
tool_find(struct mreq *r, const char *js, const jsmntok_t *t)
{
	int a = jget(js, t, 0, "tools"), i, k;

	r->tool_name[0] = '\0';
	if (a < 0 && (i = jget(js, t, 0, "toolConfig")) >= 0)
		a = jget(js, t, i, "tools"); /* Converse: [{toolSpec:{name}}] */
	if (a < 0 || t[a].type != JSMN_ARRAY)
		return;
	for (k = 0, i = a + 1; k < t[a].size; k++, i = jskip(t, i))
		if (tool_decl(r, js, t, i) == 0)
			return;
	r->tool_name[0] = '\0';
}

/* Whether the last element of the body's "messages" has role `role`. */
static int
last_role_is(const char *js, const jsmntok_t *t, const char *role)
{
	int a = jget(js, t, 0, "messages"), i, k, last = -1;

	if (a < 0 || t[a].type != JSMN_ARRAY)
		return 0;
	for (k = 0, i = a + 1; k < t[a].size; k++, i = jskip(t, i))
		last = i;
	if (last < 0 || t[last].type != JSMN_OBJECT ||
	    (k = jget(js, t, last, "role")) < 0)
		return 0;
	return jeq(js, &t[k], role);
}

/* Read stream, model and input counts from the body; -1 if malformed. */
static int
parse_body(struct mreq *r, const char *js, size_t len)
{
	jsmntok_t *t;
	int i;

	if (jparse(js, len, &t) == -1)
		return -1;
	r->blen = len;
	if (r->fmt != FMT_GEMINI && !is_amz(r) && !r->vertex &&
	    r->kind != KIND_COUNT) {
		r->stream = jtrue(js, t, jget(js, t, 0, "stream"));
		if ((i = jget(js, t, 0, "stream_options")) >= 0)
			r->include_usage =
			    jtrue(js, t, jget(js, t, i, "include_usage"));
		i = jget(js, t, 0, "model");
		if (i >= 0 && t[i].type == JSMN_STRING &&
		    jstr(js, &t[i], r->model, sizeof r->model) == -1)
			snprintf(r->model, sizeof r->model, "mock-model");
	}
	if (r->kind == KIND_CHAT) {
		tool_find(r, js, t);
		r->prefill = last_role_is(js, t, "assistant");
	}
	if (r->kind == KIND_EMBED)
		r->ninputs = count_inputs(t, jget(js, t, 0, "input"));
	else if (r->kind == KIND_EMBEDN)
		r->ninputs = count_inputs(t, jget(js, t, 0, "requests"));
	free(t);
	return 0;
}

/* Name of an HTTP method. */
static const char *
method_name(enum evhttp_cmd_type cmd)
{
	switch (cmd) {
	case EVHTTP_REQ_GET:
		return "GET";
	case EVHTTP_REQ_POST:
		return "POST";
	case EVHTTP_REQ_PUT:
		return "PUT";
	case EVHTTP_REQ_DELETE:
		return "DELETE";
	case EVHTTP_REQ_HEAD:
		return "HEAD";
	case EVHTTP_REQ_PATCH:
		return "PATCH";
	default:
		return "OTHER";
	}
}

/* Record req in the ring of the last MOCK_NLOG requests. */
static void
log_request(struct evhttp_request *req, const char *body, size_t len)
{
	struct buf *b = &M.log[M.log_next];
	struct evkeyvalq *h = evhttp_request_get_input_headers(req);
	struct evkeyval *kv;
	const char *sep = "";

	M.log_next = (M.log_next + 1) % MOCK_NLOG;
	if (M.log_count < MOCK_NLOG)
		M.log_count++;
	buf_reset(b);
	buf_adds(b, "{\"method\":");
	jesc(b, method_name(evhttp_request_get_command(req)));
	buf_adds(b, ",\"path\":");
	jesc(b, evhttp_request_get_uri(req));
	buf_adds(b, ",\"headers\":{");
	TAILQ_FOREACH(kv, h, next)
	{
		buf_adds(b, sep);
		jesc(b, kv->key);
		buf_addc(b, ':');
		jesc(b, kv->value);
		sep = ",";
	}
	buf_adds(b, "},\"body\":\"");
	jesc_raw(b, body, len < MOCK_LOG_BODY ? len : MOCK_LOG_BODY);
	buf_adds(b, "\"}");
}

/* Whether fail_percent spares this request: the k-th request gets the mode
 * when floor((k+1)P/100) > floor(kP/100), an even deterministic spread. */
static int
pct_spared(void)
{
	unsigned long long k = M.pct_seq++,
	                   p = (unsigned long long)M.o.fail_percent;

	if (p == 0)
		return 0;
	return (k + 1) * p / 100 == k * p / 100;
}

/* Monotonic milliseconds. */
static long long
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Whether recover_after_ms has passed since start-up, config or reset. */
static int
recovered(void)
{
	return M.o.recover_after_ms > 0 &&
	       now_ms() - M.epoch_ms >= M.o.recover_after_ms;
}

/* The mode this request gets, honouring recover_after_ms, fail_percent
 * and fail_first; "tools" becomes "ok" with a tool call. */
static int
pick_mode(struct mreq *r)
{
	int mode = M.o.mode;

	if (recovered() || pct_spared())
		return MODE_OK;
	if (M.o.fail_first > 0 && M.served >= M.o.fail_first)
		return MODE_OK;
	M.served++;
	if (!r->stream &&
	    (mode == MODE_STREAM_ERROR || mode == MODE_LATE_ERROR))
		return MODE_STATUS;
	if (!r->stream && (mode == MODE_NO_DONE || mode == MODE_BAD_CHUNK))
		return MODE_OK;
	if (mode == MODE_TOOLS) {
		r->tool = 1;
		return MODE_OK;
	}
	return mode;
}

/* Settle whether r answers with a tool call, and its stream's length. */
static void
pick_answer(struct mreq *r)
{
	r->tool = r->kind == KIND_CHAT && r->tool_name[0] != '\0' &&
	          (r->tool || r->o.tool_call);
	if (r->tool)
		r->nchunks = r->fmt == FMT_GEMINI ? 0 : TOOL_NPIECES;
}

/* Count r in the stats. */
static void
count_request(const struct mreq *r)
{
	M.st.requests++;
	if (r->kind == KIND_CHAT)
		M.st.chat++;
	else if (r->kind == KIND_COUNT)
		M.st.count_tokens++;
	else if (r->kind != KIND_UNKNOWN)
		M.st.embeddings++;
	if (r->mode == MODE_OK)
		M.st.ok++;
	else
		M.st.failed++;
}

/* Turn r into an immediate error reply with status and message. */
static void
mreq_reject(struct mreq *r, int status, const char *msg)
{
	r->mode = MODE_STATUS;
	r->stream = 0;
	r->o.status = status;
	r->o.latency_ms = 0;
	r->o.retry_after = r->o.retry_after_ms = -1;
	r->o.error_code[0] = '\0';
	snprintf(r->o.message, sizeof r->o.message, "%s", msg);
}

/* ---- credentials: SigV4 and OAuth2 access tokens ---- */

#define JWT_GRANT                                                              \
	"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"     \
	"&assertion="

/* Reject r as a Bedrock auth failure of type t. */
static void
amz_reject(struct mreq *r, int status, const char *t, const char *msg)
{
	mreq_reject(r, status, msg);
	snprintf(r->amz_type, sizeof r->amz_type, "%s", t);
}

/* Copy the text of "key=" from a SigV4 Authorization value into dst (up
 * to the next ',' or the end); -1 if absent or too long. */
static int
sig_field(const char *a, const char *key, char *dst, size_t size)
{
	const char *p = strstr(a, key);
	size_t n;

	if (p == NULL)
		return -1;
	p += strlen(key);
	n = strcspn(p, ", ");
	if (n == 0 || n >= size)
		return -1;
	memcpy(dst, p, n);
	dst[n] = '\0';
	return 0;
}

/* The signed headers of r as the request carried them, in hv (names in
 * names, comma-separated list sh); how many. */
static int
sig_headers(struct mreq *r, char *sh, struct sigv4_hdr *hv, int max)
{
	struct evkeyvalq *h = evhttp_request_get_input_headers(r->req);
	struct evkeyval *kv;
	char *name, *save = NULL;
	int n = 0;

	for (name = strtok_r(sh, ";", &save); name;
	     name = strtok_r(NULL, ";", &save))
		TAILQ_FOREACH(kv, h, next)
		{
			if (strcasecmp(kv->key, name) == 0 && n < max) {
				hv[n].name = name;
				hv[n].value = kv->value;
				n++;
			}
		}
	return n;
}

/* Recompute r's signature with --aws-secret; 0 if it matches. */
static int
sig_recompute(struct mreq *r, const char *auth, const char *body, size_t len)
{
	struct evkeyvalq *h = evhttp_request_get_input_headers(r->req);
	char cred[256], sh[1024], akid[128], date[9], region[64], service[64];
	const char *amz = evhttp_find_header(h, "x-amz-date");
	const char *ph = evhttp_find_header(h, "x-amz-content-sha256");
	char hash[65];
	struct sigv4_hdr hv[64];
	struct buf want = {0};
	struct sigv4 sv;
	int ok;

	if (sig_field(auth, "Credential=", cred, sizeof cred) == -1 ||
	    sig_field(auth, "SignedHeaders=", sh, sizeof sh) == -1 ||
	    sscanf(cred, "%127[^/]/%8[^/]/%63[^/]/%63[^/]/", akid, date, region,
	           service) != 4 ||
	    amz == NULL)
		return -1;
	sigv4_sha256_hex(body, len, hash);
	if (ph != NULL && strcmp(ph, hash) != 0)
		return -1;
	sv = (struct sigv4){.method = "POST",
	                    .path = evhttp_request_get_uri(r->req),
	                    .hdrs = hv,
	                    .nhdrs = sig_headers(r, sh, hv, 64),
	                    .body = body,
	                    .blen = len,
	                    .amz_date = amz,
	                    .region = region,
	                    .service = service,
	                    .access_key_id = akid,
	                    .secret_key = M.o.aws_secret};
	ok = sigv4_authorization(&sv, &want) == 0 &&
	     strcmp(buf_cstr(&want), auth) == 0;
	buf_free(&want);
	return ok ? 0 : -1;
}

/* Whether a is shaped as a SigV4 Authorization for service bedrock. */
static int
sig_shaped(const char *a)
{
	const char *sig = strstr(a, ", Signature=");

	return strncmp(a, "AWS4-HMAC-SHA256 Credential=", 28) == 0 &&
	       strstr(a, "/bedrock/aws4_request, SignedHeaders=") != NULL &&
	       strstr(a, "host;") != NULL && strstr(a, "x-amz-date") != NULL &&
	       sig != NULL && strlen(sig + 12) == 64 &&
	       strspn(sig + 12, "0123456789abcdef") == 64;
}

/* A Bedrock request must carry a SigV4 Authorization shaped right (and,
 * with --aws-secret, right), or a bearer API key. 0, or -1 rejected. */
static int
check_sigv4(struct mreq *r, const char *body, size_t len)
{
	struct evkeyvalq *h = evhttp_request_get_input_headers(r->req);
	const char *a = evhttp_find_header(h, "Authorization");

	if (a == NULL) {
		amz_reject(r, 403, "MissingAuthenticationTokenException",
		           "Missing Authentication Token");
		return -1;
	}
	if (strncmp(a, "Bearer ", 7) == 0 && a[7] != '\0')
		return 0;
	if (!sig_shaped(a) || evhttp_find_header(h, "x-amz-date") == NULL) {
		amz_reject(r, 403, "IncompleteSignatureException",
		           "Authorization header requires a SigV4 signature");
		return -1;
	}
	if (M.o.aws_secret[0] && sig_recompute(r, a, body, len) == -1) {
		amz_reject(r, 403, "InvalidSignatureException",
		           "The request signature we calculated does not match "
		           "the signature you provided.");
		return -1;
	}
	return 0;
}

/* Wall-clock milliseconds. */
static long long
wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* With the token endpoint on, a Vertex request must carry one of the
 * access tokens it issued, unexpired. 0, or -1 rejected (401). */
static int
check_bearer(struct mreq *r)
{
	struct evkeyvalq *h = evhttp_request_get_input_headers(r->req);
	const char *a = evhttp_find_header(h, "Authorization");
	char *end;
	unsigned long n;

	if (!r->vertex || !M.o.jwt_pubkey[0])
		return 0;
	if (a != NULL && strncmp(a, "Bearer mock-token-", 18) == 0) {
		n = strtoul(a + 18, &end, 10);
		if (*end == '\0' && n < M.ntokens && n < MOCK_NTOKENS &&
		    wall_ms() < M.token_exp[n])
			return 0;
	}
	mreq_reject(r, 401,
	            "Request had invalid authentication credentials. Expected "
	            "OAuth 2 access token, login cookie or other valid "
	            "authentication credential.");
	r->google_auth = 1;
	return -1;
}

/* Decode base64url part [p, e) into out; -1 if it is not. */
static int
jwt_b64(const char *p, const char *e, struct buf *out)
{
	return b64_decode(out, p, (size_t)(e - p));
}

/* The integer value of key in JSON js (tokens t), or -1. */
static long long
jnum(const char *js, const jsmntok_t *t, const char *key)
{
	char v[32];
	int i = jget(js, t, 0, key);

	if (i < 0 || t[i].type != JSMN_PRIMITIVE ||
	    jstr(js, &t[i], v, sizeof v) == -1)
		return -1;
	return strtoll(v, NULL, 10);
}

/* Check the JWT's claims (decoded JSON c); why not, or NULL. */
static const char *
jwt_claims(const struct buf *h, const struct buf *c)
{
	jsmntok_t *t = NULL;
	long long iat, exp, now = wall_ms() / 1000;
	char v[512];
	const char *why = NULL;
	int i;

	if (jparse(h->data, h->len, &t) == -1 ||
	    (i = jget(h->data, t, 0, "alg")) < 0 ||
	    !jeq(h->data, &t[i], "RS256"))
		why = "JWT header: alg is not RS256";
	free(t);
	t = NULL;
	if (why == NULL && jparse(c->data, c->len, &t) == -1)
		why = "JWT claims are not a JSON object";
	if (why == NULL &&
	    ((i = jget(c->data, t, 0, "iss")) < 0 ||
	     jstr(c->data, &t[i], v, sizeof v) == -1 || v[0] == '\0'))
		why = "JWT claims: no iss";
	if (why == NULL && ((i = jget(c->data, t, 0, "scope")) < 0 ||
	                    jstr(c->data, &t[i], v, sizeof v) == -1 ||
	                    strstr(v, "cloud-platform") == NULL))
		why = "JWT claims: scope is not cloud-platform";
	if (why == NULL && ((i = jget(c->data, t, 0, "aud")) < 0 ||
	                    jstr(c->data, &t[i], v, sizeof v) == -1 ||
	                    !ends_with(v, "/token")))
		why = "JWT claims: bad aud";
	if (why == NULL) {
		iat = jnum(c->data, t, "iat");
		exp = jnum(c->data, t, "exp");
		if (iat < 0 || exp <= iat || exp - iat > 3600 ||
		    llabs(iat - now) > 300)
			why = "Invalid JWT: Token must be a short-lived token "
			      "(60 minutes) and in a reasonable timeframe.";
	}
	free(t);
	return why;
}

/* Verify input [p, e) against signature sig with the PEM public key. */
static const char *
jwt_signature(const char *p, const char *e, const struct buf *sig)
{
	FILE *f = fopen(M.o.jwt_pubkey, "r");
	EVP_PKEY *k = f ? PEM_read_PUBKEY(f, NULL, NULL, NULL) : NULL;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok;

	if (f)
		fclose(f);
	ok = k && ctx &&
	     EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, k) == 1 &&
	     EVP_DigestVerify(ctx, (const unsigned char *)sig->data, sig->len,
	                      (const unsigned char *)p, (size_t)(e - p)) == 1;
	EVP_MD_CTX_free(ctx);
	EVP_PKEY_free(k);
	ERR_clear_error();
	return ok ? NULL : "Invalid JWT Signature.";
}

/* Check a token request's form body; why it is refused, or NULL. */
static const char *
jwt_check(const char *body, size_t len)
{
	struct buf h = {0}, c = {0}, sig = {0};
	const char *a, *end = body + len, *d1, *d2, *why;

	if (len < sizeof JWT_GRANT - 1 ||
	    memcmp(body, JWT_GRANT, sizeof JWT_GRANT - 1) != 0)
		return "grant_type is not jwt-bearer";
	a = body + sizeof JWT_GRANT - 1;
	if ((d1 = memchr(a, '.', (size_t)(end - a))) == NULL ||
	    (d2 = memchr(d1 + 1, '.', (size_t)(end - d1 - 1))) == NULL ||
	    memchr(d2 + 1, '&', (size_t)(end - d2 - 1)) != NULL)
		return "assertion is not a JWT";
	if (jwt_b64(a, d1, &h) == -1 || jwt_b64(d1 + 1, d2, &c) == -1 ||
	    jwt_b64(d2 + 1, end, &sig) == -1)
		why = "assertion is not base64url";
	else if ((why = jwt_claims(&h, &c)) == NULL)
		why = jwt_signature(a, d2, &sig);
	buf_free(&h);
	buf_free(&c);
	buf_free(&sig);
	return why;
}

/* Answer a token request: a new access token, or the OAuth2 error. */
static void
send_token(struct mreq *r)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(r->req);
	size_t len = evbuffer_get_length(in);
	const char *body = len ? (const char *)evbuffer_pullup(in, -1) : "";
	const char *why =
	    M.o.jwt_pubkey[0] ? jwt_check(body, len) : "token endpoint is off";
	struct buf b = {0};
	unsigned n;

	if (r->o.token_status != 200 || why != NULL) {
		int st = r->o.token_status != 200 ? r->o.token_status : 400;

		M.st.token_failed++;
		buf_printf(&b, "{\"error\":\"%s\",\"error_description\":",
		           st >= 500 ? "temporarily_unavailable"
		                     : "invalid_grant");
		jesc(&b, why ? why : "mock token endpoint failure");
		buf_addc(&b, '}');
		log_debug("token request refused: %s", why ? why : "by option");
		reply_send(r->req, st, r->seq, &b);
		return;
	}
	n = M.ntokens++ % MOCK_NTOKENS;
	M.token_exp[n] = wall_ms() + (long long)r->o.token_expiry * 1000;
	M.st.tokens++;
	buf_printf(&b,
	           "{\"access_token\":\"mock-token-%u\",\"expires_in\":%d,"
	           "\"token_type\":\"Bearer\"}",
	           n, r->o.token_expiry);
	reply_send(r->req, 200, r->seq, &b);
}

/* A request to the token endpoint: answered after --token-latency-ms. */
static void
token_request(struct evhttp_request *req)
{
	struct mreq *r;

	if ((r = mreq_new(req)) == NULL) {
		evhttp_send_error(req, 500, "mock out of memory");
		return;
	}
	r->kind = KIND_TOKEN;
	r->mode = MODE_OK;
	r->o.latency_ms = r->o.token_latency_ms;
	mreq_start(r);
}

/* Bedrock and Vertex credentials; 0, or -1 when r was rejected. */
static int
check_auth(struct mreq *r, const char *body, size_t len)
{
	if (is_amz(r))
		return check_sigv4(r, body, len);
	return check_bearer(r);
}

/* Handle one provider request: record it, then start its behaviour. */
static void
provider_request(struct evhttp_request *req, const char *path)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(in);
	const char *body = "";
	struct mreq *r;

	if (len > 0 && (body = (const char *)evbuffer_pullup(in, -1)) == NULL) {
		evhttp_send_error(req, 500, "mock out of memory");
		return;
	}
	if (ends_with(path, "/token")) {
		token_request(req);
		return;
	}
	log_request(req, body, len);
	buf_reset(&M.last_body);
	buf_add(&M.last_body, body, len);
	if ((r = mreq_new(req)) == NULL) {
		evhttp_send_error(req, 500, "mock out of memory");
		return;
	}
	route(r, path);
	if (r->kind == KIND_UNKNOWN)
		mreq_reject(r, 404, "Unknown mock endpoint");
	else if (parse_body(r, body, len) == -1)
		mreq_reject(r, 400,
		            "We could not parse the JSON body of your "
		            "request.");
	else if (check_auth(r, body, len) == -1)
		; /* rejected: 403 / 401 */
	else if (r->prefill && r->o.reject_prefill)
		mreq_reject(r, 400,
		            "This model does not support assistant message "
		            "prefill. The conversation must end with a user "
		            "message.");
	else
		r->mode = pick_mode(r);
	pick_answer(r);
	if (r->kind != KIND_CHAT)
		r->stream = 0;
	count_request(r);
	log_debug("request %llu %s mode %s", r->seq, path, mode_names[r->mode]);
	mreq_start(r);
}

/* ---- control endpoints ---- */

/* Reply with a small JSON document from the control API. */
static void
control_reply(struct evhttp_request *req, int code, struct buf *b)
{
	reply_send(req, code, ++M.seq, b);
}

/* GET /_mock/stats. */
static void
control_stats(struct evhttp_request *req)
{
	struct buf b = {0};

	buf_printf(
	    &b,
	    "{\"requests\":%llu,\"chat\":%llu,\"embeddings\":%llu,"
	    "\"count_tokens\":%llu,\"ok\":%llu,"
	    "\"failed\":%llu,\"client_closed\":%llu,\"connections\":%llu,"
	    "\"tokens\":%llu,\"token_failed\":%llu}",
	    M.st.requests, M.st.chat, M.st.embeddings, M.st.count_tokens,
	    M.st.ok, M.st.failed, M.st.client_closed, M.st.connections,
	    M.st.tokens, M.st.token_failed);
	control_reply(req, 200, &b);
}

/* GET /_mock/requests: the logged requests, oldest first. */
static void
control_requests(struct evhttp_request *req)
{
	struct buf b = {0};
	size_t i, first = (M.log_next + MOCK_NLOG - M.log_count) % MOCK_NLOG;

	buf_addc(&b, '[');
	for (i = 0; i < M.log_count; i++) {
		struct buf *e = &M.log[(first + i) % MOCK_NLOG];

		if (i > 0)
			buf_addc(&b, ',');
		buf_add(&b, e->data, e->len);
	}
	buf_addc(&b, ']');
	control_reply(req, 200, &b);
}

/* GET /_mock/last (the last request's log entry) or /_mock/last/body (its
 * raw body); 404 before the first provider request. */
static void
control_last(struct evhttp_request *req, int raw)
{
	struct buf b = {0};
	const struct buf *e;

	if (M.log_count == 0) {
		buf_adds(&b, "{\"error\":\"no provider request yet\"}");
		control_reply(req, 404, &b);
		return;
	}
	if (raw) {
		buf_add(&b, M.last_body.data, M.last_body.len);
		reply_send_type(req, 200, ++M.seq, "application/octet-stream",
		                &b);
		return;
	}
	e = &M.log[(M.log_next + MOCK_NLOG - 1) % MOCK_NLOG];
	buf_add(&b, e->data, e->len);
	control_reply(req, 200, &b);
}

/* Apply one "key": value pair of a config object to o; -1 if invalid. */
static int
config_pair(struct mock_opts *o, const char *js, const jsmntok_t *k)
{
	const jsmntok_t *v = k + 1;
	const struct optdef *d;
	char key[64], val[1024];

	if (jstr(js, k, key, sizeof key) == -1 || (d = opt_find(key)) == NULL)
		return -1;
	if (v->type == JSMN_OBJECT || v->type == JSMN_ARRAY)
		return -1;
	if (jstr(js, v, val, sizeof val) == -1)
		return -1;
	if (v->type == JSMN_PRIMITIVE && strcmp(val, "null") == 0)
		snprintf(val, sizeof val, "%s", d->type == OT_INT ? "-1" : "");
	return opt_set(o, d, val);
}

/* Parse a config object into o; -1 if malformed or a field is invalid. */
static int
config_parse(struct mock_opts *o, const char *js, size_t len)
{
	jsmntok_t *t;
	int i = 1, k, rc = 0;

	if (jparse(js, len, &t) == -1)
		return -1;
	for (k = 0; k < t[0].size && rc == 0; k++) {
		rc = config_pair(o, js, &t[i]);
		i = jskip(t, i + 1);
	}
	free(t);
	return rc;
}

/* POST /_mock/config: change options for later requests. */
static void
control_config(struct evhttp_request *req)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(in);
	struct mock_opts o = M.o;
	struct buf b = {0};
	const char *js = (const char *)evbuffer_pullup(in, -1);

	if (js == NULL || config_parse(&o, js, len) == -1) {
		buf_adds(&b, "{\"error\":\"bad config: expected a JSON object "
		             "of known option names with valid values\"}");
		control_reply(req, 400, &b);
		return;
	}
	M.o = o;
	M.served = 0;
	M.pct_seq = 0;
	M.epoch_ms = now_ms();
	opts_json(&b, &M.o);
	control_reply(req, 200, &b);
}

/* POST /_mock/reset: zero the counters and the request log. */
static void
control_reset(struct evhttp_request *req)
{
	struct buf b = {0};

	memset(&M.st, 0, sizeof M.st);
	M.served = 0;
	M.pct_seq = 0;
	M.epoch_ms = now_ms();
	M.log_next = M.log_count = 0;
	buf_reset(&M.last_body);
	buf_adds(&b, "{\"ok\":true}");
	control_reply(req, 200, &b);
}

/* Dispatch a /_mock/ request. */
static void
control_request(struct evhttp_request *req, const char *what)
{
	struct buf b = {0};

	if (strcmp(what, "stats") == 0)
		control_stats(req);
	else if (strcmp(what, "requests") == 0)
		control_requests(req);
	else if (strcmp(what, "config") == 0)
		control_config(req);
	else if (strcmp(what, "reset") == 0)
		control_reset(req);
	else if (strcmp(what, "last") == 0)
		control_last(req, 0);
	else if (strcmp(what, "last/body") == 0)
		control_last(req, 1);
	else if (strcmp(what, "revoke") == 0) {
		/* every access token issued so far stops being accepted */
		memset(M.token_exp, 0, sizeof M.token_exp);
		buf_adds(&b, "{\"ok\":true}");
		control_reply(req, 200, &b);
	} else {
		buf_adds(&b, "{\"error\":\"unknown /_mock endpoint\"}");
		control_reply(req, 404, &b);
	}
}

/* evhttp callback for every request: control API or provider. */
static void
on_request(struct evhttp_request *req, void *arg)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;

	(void)arg;
	if (path == NULL)
		path = "/";
	if (strncmp(path, "/_mock/", 7) == 0)
		control_request(req, path + 7);
	else
		provider_request(req, path);
}

/* ---- connections, TLS, start-up ---- */

/* evhttp callback per accepted connection: count it, wrap it in TLS. */
static struct bufferevent *
on_accept(struct event_base *base, void *arg)
{
	struct bufferevent *bev;
	SSL *ssl;

	(void)arg;
	M.st.connections++;
	if (M.ssl == NULL)
		return bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	if ((ssl = SSL_new(M.ssl)) == NULL) {
		log_warnx("SSL_new failed");
		return NULL;
	}
	bev = bufferevent_openssl_socket_new(
	    base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	if (bev != NULL)
		bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	return bev;
}

/* Build the server TLS context from PEM files; NULL on failure. */
static SSL_CTX *
tls_init(const char *cert, const char *key)
{
	SSL_CTX *ctx;

	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL)
		return NULL;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		ERR_print_errors_fp(stderr);
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

/* Write port to file atomically (temp name, then rename). */
static int
write_port_file(const char *file, int port)
{
	char tmp[4096];
	FILE *f;

	snprintf(tmp, sizeof tmp, "%s.tmp.%ld", file, (long)getpid());
	if ((f = fopen(tmp, "w")) == NULL)
		return -1;
	if (fprintf(f, "%d\n", port) < 0 || fclose(f) != 0) {
		unlink(tmp);
		return -1;
	}
	if (rename(tmp, file) == -1) {
		unlink(tmp);
		return -1;
	}
	return 0;
}

/* The port a bound listener actually got, or -1. */
static int
bound_port(struct evhttp_bound_socket *h)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;
	evutil_socket_t fd = evhttp_bound_socket_get_fd(h);

	if (getsockname(fd, (struct sockaddr *)&ss, &len) == -1)
		return -1;
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* SIGTERM / SIGINT: leave the loop so main can free everything. */
static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	(void)arg;
	log_info("signal %d, exiting", (int)sig);
	event_base_loopbreak(M.base);
}

struct args {
	const char *host, *port_file, *cert, *key;
	int port;
};

/* Print usage and exit 2. */
static void __attribute__((noreturn)) usage(void)
{
	fprintf(
	    stderr,
	    "usage: llmf-mock [--host H] --port N [--port-file F] [--name N]\n"
	    "                 [--tls CERT KEY] [--mode MODE] [--status N]\n"
	    "                 [--message T] [--error-code C] [--retry-after "
	    "S]\n"
	    "                 [--retry-after-ms MS] [--fail-first N]\n"
	    "                 [--fail-percent N]\n"
	    "                 [--latency-ms N] [--chunks N] [--chunk-delay-ms "
	    "N]\n"
	    "                 [--cut-after N] [--usage P,C] [--finish R]\n"
	    "                 [--recover-after-ms MS] [--tool-call 0|1]\n"
	    "                 [--headers \"Name: value; ...\"] [--stamp 0|1] "
	    "[-v]\n");
	exit(2);
}

/* Handle one option that is not a behaviour option; args used or -1. */
static int
parse_arg(struct args *a, int argc, char **argv, int i)
{
	const char *o = argv[i];

	if (strcmp(o, "-v") == 0) {
		log_level = LOG_LVL_DEBUG;
		return 1;
	}
	if (i + 1 >= argc)
		return -1;
	if (strcmp(o, "--host") == 0)
		a->host = argv[i + 1];
	else if (strcmp(o, "--port") == 0)
		return parse_int(argv[i + 1], 0, 65535, &a->port) ? -1 : 2;
	else if (strcmp(o, "--port-file") == 0)
		a->port_file = argv[i + 1];
	else if (strcmp(o, "--name") == 0)
		M.name = argv[i + 1];
	else if (strcmp(o, "--tls") == 0 && i + 2 < argc) {
		a->cert = argv[i + 1];
		a->key = argv[i + 2];
		return 3;
	} else
		return -1;
	return 2;
}

/* Parse the command line into a and M.o; exits 2 on a bad argument. */
static void
parse_args(struct args *a, int argc, char **argv)
{
	const struct optdef *d;
	int i, n;

	for (i = 1; i < argc; i += n) {
		d = strncmp(argv[i], "--", 2) == 0 ? opt_find(argv[i] + 2)
		                                   : NULL;
		if (d != NULL && i + 1 < argc &&
		    opt_set(&M.o, d, argv[i + 1]) == 0)
			n = 2;
		else if (d != NULL || (n = parse_arg(a, argc, argv, i)) == -1) {
			fprintf(stderr, "llmf-mock: bad argument %s\n",
			        argv[i]);
			usage();
		}
	}
	if (a->port < 0)
		usage();
}

/* Create the HTTP server and bind it; the bound port, or -1. */
static int
server_init(const struct args *a)
{
	struct evhttp_bound_socket *h;
	struct evconnlistener *lev;
	struct sockaddr_storage ss;
	socklen_t sslen;

	if ((M.http = evhttp_new(M.base)) == NULL)
		return -1;
	evhttp_set_gencb(M.http, on_request, NULL);
	evhttp_set_bevcb(M.http, on_accept, NULL);
	evhttp_set_max_body_size(M.http, MOCK_MAX_BODY);
	evhttp_set_timeout(M.http, 86400);
	evhttp_set_allowed_methods(
	    M.http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
	                EVHTTP_REQ_DELETE | EVHTTP_REQ_PATCH);
	/* a deep accept queue (evhttp's own bind listens with 128): a burst
	 * of 10,000 connects would overflow it, and a connection whose
	 * handshake's last ACK was dropped waits out retransmits of up to a
	 * minute before the mock sees its request */
	if (addr_ip(a->host, a->port, &ss, &sslen) == -1)
		return -1;
	lev = evconnlistener_new_bind(
	    M.base, NULL, NULL,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_REUSEABLE,
	    MOCK_BACKLOG, (struct sockaddr *)&ss, (int)sslen);
	if (lev == NULL)
		return -1;
	if ((h = evhttp_bind_listener(M.http, lev)) == NULL) {
		evconnlistener_free(lev);
		return -1;
	}
	return bound_port(h);
}

/* Free every live request, the server and the event base. */
static void
mock_free(void)
{
	struct mreq *r;
	struct evhttp_request *req;
	int i;

	while ((r = LIST_FIRST(&M.live)) != NULL) {
		req = r->req;
		i = evhttp_request_get_connection(req) == NULL;
		mreq_free(r);
		if (i)
			evhttp_request_free(req);
	}
	if (M.http != NULL)
		evhttp_free(M.http);
	if (M.sigterm != NULL)
		event_free(M.sigterm);
	if (M.sigint != NULL)
		event_free(M.sigint);
	if (M.ssl != NULL)
		SSL_CTX_free(M.ssl);
	for (i = 0; i < MOCK_NLOG; i++)
		buf_free(&M.log[i]);
	buf_free(&M.last_body);
	event_base_free(M.base);
	libevent_global_shutdown();
}

/* Install the SIGTERM / SIGINT events; -1 on failure. */
static int
signals_init(void)
{
	signal(SIGPIPE, SIG_IGN);
	M.sigterm = evsignal_new(M.base, SIGTERM, on_signal, NULL);
	M.sigint = evsignal_new(M.base, SIGINT, on_signal, NULL);
	if (M.sigterm == NULL || M.sigint == NULL)
		return -1;
	if (evsignal_add(M.sigterm, NULL) == -1 ||
	    evsignal_add(M.sigint, NULL) == -1)
		return -1;
	return 0;
}

/* Parse options, listen, serve until SIGTERM / SIGINT, free everything. */
int
main(int argc, char **argv)
{
	struct args a = {"127.0.0.1", NULL, NULL, NULL, -1};
	int port;

	log_init(LOG_LVL_INFO, "llmf-mock");
	log_procinit("mock");
	M.name = "mock";
	opts_default(&M.o);
	LIST_INIT(&M.live);
	M.epoch_ms = now_ms();
	parse_args(&a, argc, argv);
	if ((M.base = event_base_new()) == NULL)
		fatalx("event_base_new failed");
	if (a.cert != NULL && (M.ssl = tls_init(a.cert, a.key)) == NULL)
		fatalx("cannot load TLS certificate %s / key %s", a.cert,
		       a.key);
	if (signals_init() == -1)
		fatalx("cannot install signal events");
	if ((port = server_init(&a)) == -1)
		fatal("cannot listen on %s:%d", a.host, a.port);
	if (a.port_file != NULL && write_port_file(a.port_file, port) == -1)
		fatal("cannot write port file %s", a.port_file);
	log_info("%s listening on %s:%d%s, mode %s", M.name, a.host, port,
	         M.ssl ? " (TLS)" : "", mode_names[M.o.mode]);
	event_base_dispatch(M.base);
	mock_free();
	return 0;
}
