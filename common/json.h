/* JSON reading (jsmn tokens over the caller's text, no copies) and writing
 * (an escaping writer that appends to a struct buf). */
#ifndef LLMFD_JSON_H
#define LLMFD_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define JSMN_HEADER
#include <jsmn.h>

#include "common/buf.h"

/* A parsed document. Token storage is owned and reused across parses;
 * js points at the caller's text, which must outlive the tokens. */
struct json {
	const char *js;
	size_t len;
	jsmntok_t *tok;
	int ntok;
	int cap;
	int shallow; /* json_parse_top skipped a container */
	/* json_parse's note of the root object's keys, so that json_get
	 * finds most absent ones without a look: a bit per (length, first
	 * byte) of each key (top_bits), valid when top_ok, unless one holds
	 * an escape (top_esc) */
	int top_ok, top_esc;
	uint64_t top_bits;
};

/* Parse len bytes of js. Grows the token array as needed (up to a limit of
 * 1<<20 tokens). Returns 0, or -1 for invalid or truncated JSON or a
 * document whose top level is not exactly one value. */
int json_parse(struct json *, const char *js, size_t len);
/* json_parse for a reader that needs only part of the document: the
 * values of the top-level members named in skip (NULL-terminated, or
 * NULL) are checked as json_parse checks them, but a container among them
 * gets one token (its type and raw text) with size 0 and no tokens for its
 * members, so json_get and json_at find nothing in it; j->shallow is then
 * set, and json_parse on the same text gives the whole tree. Every other
 * token is the one json_parse would make. Accepts exactly what json_parse
 * accepts. */
int json_parse_top(struct json *, const char *js, size_t len,
                   const char *const *skip);
void json_free(struct json *);

/* The vector code that skips the plain bytes of long strings: the widest
 * the CPU has, up to max (tests use it to check each against the
 * others). Returns the level now in use. AVX-512 runs only where at
 * least 1 KB of the document is left. */
#define JSON_SIMD_SSE2   0
#define JSON_SIMD_AVX2   1
#define JSON_SIMD_AVX512 2
int json_simd(int max);

/* Paths for json_pick, compiled once by json_sel_init: dotted keys and
 * array indexes ("choices.0.delta.content"); a segment of digits is an
 * array index (json_at), any other an object key (json_get). */
#define JSON_SEL_MAX   30
#define JSON_SEL_DEPTH 6
struct json_sel {
	int n;
	struct {
		int nseg;
		const char *seg[JSON_SEL_DEPTH];
		unsigned char len[JSON_SEL_DEPTH];
		int idx[JSON_SEL_DEPTH]; /* array index, or -1 for a key */
	} p[JSON_SEL_MAX];
	/* by level, as bits 1 + path: the first path of each group with the
	 * same segments up to there, each group, and the paths ending */
	uint32_t lead[JSON_SEL_DEPTH];
	uint32_t grp[JSON_SEL_DEPTH][JSON_SEL_MAX + 1];
	uint32_t ends[JSON_SEL_DEPTH];
	/* by level and bit (length * 31 + first + 5 * last byte) % 64 of the
	 * key it looks for, the first path of each group: most keys are
	 * compared with none, the rest with one or two */
	uint32_t by_hint[JSON_SEL_DEPTH][64];
};
int json_sel_init(struct json_sel *, const char *const *paths);
/* Check js exactly as json_parse does (same verdict), but keep only the
 * document (token 0) and the value each path of sel leads to, as the
 * chain of json_get / json_at would find it (the first of duplicate
 * keys); json_picked gives its token, on which the scalar readers,
 * json_type, json_raw and json_size work (json_get, json_at, json_next
 * and json_path do not: the tokens are not a tree). Far cheaper than
 * json_parse on a stream chunk read for a few values. 0 or -1. */
int json_pick(struct json *, const char *js, size_t len,
              const struct json_sel *);
int json_picked(const struct json *, int n); /* token of path n, or -1 */

/* Token helpers; every index argument may be -1, which makes them fail. */
int json_next(const struct json *, int i); /* index after i's subtree */
/* The value of key[0, klen) in object obj, or -1. */
int json_get_n(const struct json *, int obj, const char *key, size_t klen);
int json_at(const struct json *, int arr, int n); /* n-th element or -1 */
int json_size(const struct json *, int i);        /* members or elements */
/* Whether string i decodes to exactly s[0, n). */
bool json_eq_n(const struct json *, int i, const char *s, size_t n);
bool json_is_null(const struct json *, int i);
bool json_is_true(const struct json *, int i);
int json_bool(const struct json *, int i, bool *out); /* 0 / -1 */
int json_int(const struct json *, int i, long long *out);
int json_num(const struct json *, int i, double *out);
/* Raw text of a value as it appears in the input (strings with quotes). */
const char *json_raw(const struct json *, int i, size_t *len);
/* Unescape string token i into out (always NUL-terminated, truncated at a
 * UTF-8 boundary if needed); decodes \uXXXX and surrogate pairs into UTF-8.
 * Returns the full decoded length, or -1 if i is not a valid string. */
int json_str(const struct json *, int i, char *out, size_t outsz);
/* Same, appended to a buf. */
int json_str_buf(const struct json *, int i, struct buf *out);
/* Walk a dotted path of keys and array indexes from token start:
 * json_path(j, 0, "choices.0.delta.content"); -1 if absent. */
int json_path(const struct json *, int start, const char *path);

/* JSMN_* of token i, or -1. */
static inline int
json_type(const struct json *j, int i)
{
	return i >= 0 && i < j->ntok ? (int)j->tok[i].type : -1;
}

/* The value of key in object obj, or -1 (inline: a literal key's length
 * is known when compiling). */
static inline int
json_get(const struct json *j, int obj, const char *key)
{
	return json_get_n(j, obj, key, strlen(key));
}

/* Whether string i decodes to exactly the C string s (false for NULL). */
static inline bool
json_eq(const struct json *j, int i, const char *s)
{
	return s != NULL && json_eq_n(j, i, s, strlen(s));
}

/* Writer. Tracks commas per nesting level (max depth 64). */
struct jw {
	struct buf *b;
	int depth;
	unsigned char need_comma[64];
	unsigned char after_key;
};

void jw_init(struct jw *, struct buf *);
void jw_obj(struct jw *);
void jw_obj_end(struct jw *);
void jw_arr(struct jw *);
void jw_arr_end(struct jw *);
void jw_key(struct jw *, const char *key);
void jw_str(struct jw *, const char *s, size_t n); /* escaped string */
void jw_cstr(struct jw *, const char *s);          /* NULL writes null */
void jw_int(struct jw *, long long);
void jw_num(struct jw *, double); /* %.17g, finite only */
void jw_bool(struct jw *, bool);
void jw_null(struct jw *);
void jw_raw(struct jw *, const char *json, size_t n); /* pre-encoded value */
/* Escape s (n bytes) as JSON string contents (no quotes) into b; invalid
 * UTF-8 bytes become U+FFFD; control characters become \uXXXX. */
void json_escape(struct buf *b, const char *s, size_t n);

#endif
