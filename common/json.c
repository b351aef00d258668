/* JSON reading over jsmn tokens and an escaping JSON writer. */

/*
 * jsmn is header-only: this file is the one place its implementation is
 * compiled (with external linkage, so other files may still call
 * jsmn_parse through json.h, which includes it with JSMN_HEADER).
 * It must come before json.h, whose include guard would hide it.
 */
#undef JSMN_HEADER
#undef JSMN_PARENT_LINKS
#undef JSMN_STRICT
#include <jsmn.h>

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/json.h"

#ifdef __SSE2__
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define JSON_AVX2 1
#endif

#define JSON_TOK_INIT  16 /* grown by doubling (a small top level fits) */
#define JSON_TOK_MAX   (1 << 20)
#define JSON_MAX_DEPTH 512  /* deeper documents are rejected */
#define JSON_WIDE_MIN  1024 /* bytes left for the AVX-512 skip to run */

/* Byte offset where token t's text starts, quotes included. */
static int
ext_start(const jsmntok_t *t)
{
	return t->type == JSMN_STRING ? t->start - 1 : t->start;
}

/* Count of leading ASCII digits in s[0, n). */
static size_t
digits(const char *s, size_t n)
{
	size_t i = 0;

	while (i < n && s[i] >= '0' && s[i] <= '9')
		i++;
	return i;
}

/* True if s[0, n) is a JSON number. */
static int
is_number(const char *s, size_t n)
{
	size_t i = 0, d;

	if (i < n && s[i] == '-')
		i++;
	if (i < n && s[i] == '0')
		i++;
	else if ((d = digits(s + i, n - i)) > 0)
		i += d;
	else
		return 0;
	if (i < n && s[i] == '.') {
		if ((d = digits(s + i + 1, n - i - 1)) == 0)
			return 0;
		i += 1 + d;
	}
	if (i < n && (s[i] == 'e' || s[i] == 'E')) {
		i++;
		if (i < n && (s[i] == '+' || s[i] == '-'))
			i++;
		if ((d = digits(s + i, n - i)) == 0)
			return 0;
		i += d;
	}
	return i == n;
}

/* True if s[0, n) is true, false, null or a number. */
static int
is_primitive(const char *s, size_t n)
{
	if (n == 0)
		return 0;
	switch (s[0]) {
	case 't':
		return n == 4 && memcmp(s, "true", 4) == 0;
	case 'f':
		return n == 5 && memcmp(s, "false", 5) == 0;
	case 'n':
		return n == 4 && memcmp(s, "null", 4) == 0;
	default:
		return is_number(s, n);
	}
}

/* Value of the 4 hex digits at p, or -1. */
static long
hex4(const char *p)
{
	long v = 0;
	int d;

	for (int k = 0; k < 4; k++) {
		if ((d = buf_hexval(p[k])) == -1)
			return -1;
		v = v << 4 | d;
	}
	return v;
}

#define TZ_QUIET INT_MAX /* a token checked but not stored */

/* Tokenizer state for one json_parse call. */
struct tz {
	struct json *j;
	const char *js;
	int len;
	int pos;
	int n;                             /* tokens used */
	int depth;                         /* open containers */
	int stack[JSON_MAX_DEPTH];         /* their token indexes */
	unsigned char obj[JSON_MAX_DEPTH]; /* 1 for an object */
	const char *const *skip;           /* top-level keys not looked into */
	int skip_next;                     /* the next value is one of them */
	int quiet; /* the stack level of the container being skipped, 0 */
};

/* Grow the token array to cap tokens; -1 on OOM or past the limit. */
static int
tok_grow(struct json *j, int cap)
{
	jsmntok_t *t;

	if (cap > JSON_TOK_MAX)
		return -1;
	if ((t = realloc(j->tok, (size_t)cap * sizeof(*t))) == NULL)
		return -1;
	j->tok = t;
	j->cap = cap;
	return 0;
}

/* Whether the tokens now scanned are inside a skipped value. */
static inline int
tz_quiet(const struct tz *z)
{
	return z->quiet && z->depth >= z->quiet;
}

/* Append a token; its index, TZ_QUIET inside a skipped value, or -1. */
static int
tz_tok(struct tz *z, jsmntype_t type, int start, int end)
{
	jsmntok_t *t;

	if (tz_quiet(z))
		return TZ_QUIET;
	if (z->n == z->j->cap && tok_grow(z->j, z->j->cap * 2) == -1)
		return -1;
	t = &z->j->tok[z->n];
	t->type = type;
	t->start = start;
	t->end = end;
	t->size = 0;
	return z->n++;
}

/* Skip whitespace; returns the byte there, or -1 at the end. */
static int
tz_ws(struct tz *z)
{
	const char *js = z->js;

	while (z->pos < z->len && (js[z->pos] == ' ' || js[z->pos] == '\n' ||
	                           js[z->pos] == '\r' || js[z->pos] == '\t'))
		z->pos++;
	return z->pos < z->len ? (unsigned char)js[z->pos] : -1;
}

/* Whether any of the 8 bytes at s is '"', '\\' or below 0x20 (SWAR). */
static inline int
word_special(const unsigned char *s)
{
	const uint64_t ones = 0x0101010101010101ULL, high = ones * 0x80;
	uint64_t v, q, b;

	memcpy(&v, s, 8);
	q = v ^ (ones * '"');
	b = v ^ (ones * '\\');
	return (((q - ones) & ~q) | ((b - ones) & ~b) |
	        ((v - ones * 0x20) & ~v)) &
	               high
	           ? 1
	           : 0;
}

#ifdef __SSE2__
/* The bytes of the 16 at s that are '"', '\\' or control bytes. */
static inline __m128i
block_mask(const unsigned char *s)
{
	const __m128i v = _mm_loadu_si128((const __m128i *)(const void *)s);
	const __m128i sp = _mm_set1_epi8(' ');
	/* '"' ^ 2 is ' ' and ^ 2 keeps the control bytes below it: one
	 * unsigned compare (max) finds both */
	const __m128i q = _mm_xor_si128(v, _mm_set1_epi8(2));

	return _mm_or_si128(_mm_cmpeq_epi8(_mm_max_epu8(q, sp), sp),
	                    _mm_cmpeq_epi8(v, _mm_set1_epi8('\\')));
}

/* The offset of the first '"', '\\' or control byte of the 16 at s, or
 * 16 if there is none. */
static inline int
block_special(const unsigned char *s)
{
	int bits = _mm_movemask_epi8(block_mask(s));

	return bits ? __builtin_ctz((unsigned)bits) : 16;
}

/* Whether any of the 64 bytes at s is '"', '\\' or a control byte. */
static inline int
block64_special(const unsigned char *s)
{
	__m128i m =
	    _mm_or_si128(_mm_or_si128(block_mask(s), block_mask(s + 16)),
	                 _mm_or_si128(block_mask(s + 32), block_mask(s + 48)));

	return _mm_movemask_epi8(m) != 0;
}
#endif

#ifdef JSON_AVX2
/* Whether any of the 32 bytes at s is '"', '\\' or a control byte. */
__attribute__((target("avx2"))) static inline __m256i
block32_mask(const unsigned char *s)
{
	const __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)s);
	const __m256i sp = _mm256_set1_epi8(' ');
	const __m256i q =
	    _mm256_xor_si256(v, _mm256_set1_epi8(2)); /* as SSE2 */

	return _mm256_or_si256(_mm256_cmpeq_epi8(_mm256_max_epu8(q, sp), sp),
	                       _mm256_cmpeq_epi8(v, _mm256_set1_epi8('\\')));
}

/* Whether any of the 64 bytes at s is special (AVX2). */
__attribute__((target("avx2"))) static inline int
block64_special_avx2(const unsigned char *s)
{
	__m256i m = _mm256_or_si256(block32_mask(s), block32_mask(s + 32));

	return !_mm256_testz_si256(m, m);
}

/* Skip 64-byte blocks of plain string bytes from p with AVX2, 128 bytes
 * a step (a third of the instructions of SSE2 on a long prompt); where
 * the first block with a special byte starts. */
__attribute__((target("avx2"))) static int
skip_plain_avx2(const unsigned char *s, int p, int len)
{
	__m256i m;

	for (; p + 128 <= len; p += 128) {
		m = _mm256_or_si256(_mm256_or_si256(block32_mask(s + p),
		                                    block32_mask(s + p + 32)),
		                    _mm256_or_si256(block32_mask(s + p + 64),
		                                    block32_mask(s + p + 96)));
		if (!_mm256_testz_si256(m, m))
			return block64_special_avx2(s + p) ? p : p + 64;
	}
	if (p + 64 <= len && !block64_special_avx2(s + p))
		p += 64;
	return p;
}
#endif

#ifdef JSON_AVX2
/* The '"', '\\' and control bytes of the 64 at s, a bit each (AVX-512BW:
 * three compares straight into a mask). */
__attribute__((target("avx512bw"))) static inline uint64_t
block64_bits_avx512(const unsigned char *s)
{
	const __m512i v = _mm512_loadu_si512((const void *)s);

	return _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8('"')) |
	       _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8('\\')) |
	       _mm512_cmplt_epu8_mask(v, _mm512_set1_epi8(' '));
}

/* skip_plain_avx2 with AVX-512BW, 128 bytes a step in half the
 * instructions: the offset of the first special byte itself. */
__attribute__((target("avx512bw"))) static int
skip_plain_avx512(const unsigned char *s, int p, int len)
{
	uint64_t a, b;

	for (; p + 128 <= len; p += 128) {
		a = block64_bits_avx512(s + p);
		b = block64_bits_avx512(s + p + 64);
		if ((a | b) != 0)
			return a ? p + __builtin_ctzll(a)
			         : p + 64 + __builtin_ctzll(b);
	}
	if (p + 64 <= len) {
		a = block64_bits_avx512(s + p);
		p += a ? __builtin_ctzll(a) : 64;
	}
	return p;
}
#endif

/* The widest vector skip this CPU has, capped by json_simd. */
static int simd_level = -1;

int
json_simd(int max)
{
	int have = 0;

#ifdef JSON_AVX2
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx2"))
		have = JSON_SIMD_AVX2;
	if (have && __builtin_cpu_supports("avx512bw"))
		have = JSON_SIMD_AVX512;
#endif
	simd_level = max < have ? max : have;
	return simd_level;
}

#ifdef __SSE2__
/* Skip 64-byte blocks of plain string bytes from p: where the first block
 * with a quote, backslash or control byte starts, or that byte itself (or
 * where the last whole block ends). */
static int
skip_plain(const unsigned char *s, int p, int len)
{
	if (simd_level < 0)
		json_simd(JSON_SIMD_AVX512);
#ifdef JSON_AVX2
	/* 512-bit code only for a long run, which pays for it: the first
	 * 512-bit instruction after a while may slow the core for some µs
	 * (the upper lanes power up; some CPUs lower their clock) */
	if (simd_level == JSON_SIMD_AVX512 && len - p >= JSON_WIDE_MIN)
		return skip_plain_avx512(s, p, len);
	if (simd_level >= JSON_SIMD_AVX2)
		return skip_plain_avx2(s, p, len);
#endif
	while (p + 64 <= len && !block64_special(s + p))
		p += 64;
	return p;
}
#endif

/* Where the string whose text starts at p (after its opening quote) ends:
 * the offset of its closing quote, or -1 if it is invalid or unclosed;
 * *esc set when it holds an escape. */
static inline __attribute__((always_inline)) int
str_close(const unsigned char *s, int p, int len, int *esc)
{
	int k;

	for (; p < len; p++) {
		/* skip plain bytes (no quote, backslash or control) 16 or 8
		 * at a time */
#ifdef __SSE2__
		if (p + 16 <= len) {
			if ((k = block_special(s + p)) < 16) {
				p += k; /* most strings are short */
			} else {
				p += 16;
				p = skip_plain(s, p, len);
				while (p + 16 <= len &&
				       (k = block_special(s + p)) == 16)
					p += 16;
				if (p + 16 <= len)
					p += k;
			}
		}
		if (p + 16 > len)
#endif
			while (p + 8 <= len && !word_special(s + p))
				p += 8;
		if (p >= len)
			break;
		if (s[p] == '"')
			return p;
		if (s[p] < 0x20)
			return -1;
		if (s[p] != '\\')
			continue;
		*esc = 1;
		if (++p >= len)
			return -1;
		if (s[p] == 'u') {
			if (p + 4 >= len || hex4((const char *)s + p + 1) == -1)
				return -1;
			p += 4;
		} else if (strchr("\"\\/bfnrt", s[p]) == NULL || s[p] == 0)
			return -1;
	}
	return -1;
}

/* Scan the string whose quote is at pos into a token; its index (or
 * TZ_QUIET) or -1. */
static int
tz_string(struct tz *z)
{
	int esc = 0, k;
	int p =
	    str_close((const unsigned char *)z->js, z->pos + 1, z->len, &esc);

	if (p == -1)
		return -1;
	k = tz_tok(z, JSMN_STRING, z->pos + 1, p);
	z->pos = p + 1;
	return k;
}

/* Scan a value at pos into tokens; 1 if it opened a container (whose
 * members come next), 0 for a scalar, -1 on error. A container that is
 * the value of a skipped key is checked with no tokens for its members. */
static int
tz_value(struct tz *z)
{
	int c = tz_ws(z), k, p, skip = z->skip_next;

	z->skip_next = 0;
	if (c == '{' || c == '[') {
		if (z->depth == JSON_MAX_DEPTH ||
		    (k = tz_tok(z, c == '{' ? JSMN_OBJECT : JSMN_ARRAY, z->pos,
		                -1)) == -1)
			return -1;
		z->obj[z->depth] = c == '{';
		z->stack[z->depth++] = k;
		if (skip) {
			z->quiet = z->depth;
			z->j->shallow = 1;
		}
		z->pos++;
		return 1;
	}
	if (c == '"')
		return tz_string(z) == -1 ? -1 : 0;
	for (p = z->pos; p < z->len; p++) {
		c = z->js[p];
		if (c == ',' || c == ']' || c == '}' || c == ' ' || c == '\n' ||
		    c == '\r' || c == '\t')
			break;
	}
	if (!is_primitive(z->js + z->pos, (size_t)(p - z->pos)) ||
	    tz_tok(z, JSMN_PRIMITIVE, z->pos, p) == -1)
		return -1;
	z->pos = p;
	return 0;
}

/* Whether key token k (a top-level key) is one of z->skip. */
static int
tz_skipped(const struct tz *z, int k)
{
	const jsmntok_t *t = &z->j->tok[k];
	size_t n = (size_t)(t->end - t->start);

	for (int i = 0; z->skip[i]; i++)
		if (strlen(z->skip[i]) == n &&
		    memcmp(z->js + t->start, z->skip[i], n) == 0)
			return 1;
	return 0;
}

/* A key's bit of 64 by its length, first and last byte: json.top_bits
 * and json_sel.by_hint note keys by it, so that most keys can be told
 * apart without comparing them (a chunk's "created" and "choices" share
 * length and first byte). */
static inline unsigned
key_bit(size_t n, const char *k)
{
	return (unsigned)((n * 31 + (n ? (unsigned char)k[0] +
	                                     (unsigned char)k[n - 1] * 5u
	                               : 0)) &
	                  63);
}

/* Note key token k of the root object in j->top_bits. */
static void
tz_note_top(struct json *j, int k)
{
	const char *s = j->js + j->tok[k].start;
	size_t n = (size_t)(j->tok[k].end - j->tok[k].start);

	if (memchr(s, '\\', n) != NULL)
		j->top_esc = 1;
	else
		j->top_bits |= 1ull << key_bit(n, s);
}

/* Scan an object key and its colon; the key owns the value (size 1). */
static int
tz_key(struct tz *z)
{
	int k;

	if (tz_ws(z) != '"' || (k = tz_string(z)) == -1 || tz_ws(z) != ':')
		return -1;
	if (k != TZ_QUIET) {
		z->j->tok[k].size = 1;
		z->j->tok[z->stack[z->depth - 1]].size++;
		if (z->depth == 1) {
			tz_note_top(z->j, k);
			z->skip_next = z->skip && tz_skipped(z, k);
		}
	}
	z->pos++;
	return 0;
}

/*
 * After a value, or right after an opening bracket (fresh != 0): close
 * containers and take the comma (and key) before the next value.
 * Returns 1 if a value must follow, 0 when the document is complete.
 */
static int
tz_after(struct tz *z, int fresh)
{
	jsmntok_t *top;
	int c, obj, k;

	for (;;) {
		c = tz_ws(z);
		if (z->depth == 0)
			return c == -1 ? 0 : -1;
		k = z->stack[z->depth - 1];
		top = k == TZ_QUIET ? NULL : &z->j->tok[k];
		obj = z->obj[z->depth - 1];
		if (c == (obj ? '}' : ']')) {
			++z->pos;
			if (top)
				top->end = z->pos;
			if (--z->depth < z->quiet)
				z->quiet = 0;
			fresh = 0;
			continue;
		}
		if (fresh || c == ',') {
			z->pos += !fresh;
			if (obj)
				return tz_key(z) == -1 ? -1 : 1;
			if (!tz_quiet(z))
				top->size++;
			return 1;
		}
		return -1;
	}
}

/*
 * A strict single-pass tokenizer producing the tokens jsmn_parse would
 * (same types, offsets and sizes). jsmn itself is not used here: without
 * JSMN_PARENT_LINKS (which json.h's token layout excludes) it rescans
 * earlier siblings at every closing bracket, which is quadratic, and in
 * non-strict mode it accepts barewords, missing separators and several
 * top-level values.
 */
int
json_parse(struct json *j, const char *js, size_t len)
{
	return json_parse_top(j, js, len, NULL);
}

/* Point j at js for a new parse, with room for JSON_TOK_INIT tokens:
 * 0, or -1 (empty, past INT_MAX, out of memory). */
static int
json_begin(struct json *j, const char *js, size_t len)
{
	j->js = js;
	j->len = len;
	j->ntok = 0;
	j->shallow = 0;
	j->top_ok = j->top_esc = 0;
	j->top_bits = 0;
	if (len == 0 || len > INT_MAX)
		return -1;
	if (j->cap < JSON_TOK_INIT && tok_grow(j, JSON_TOK_INIT) == -1)
		return -1;
	return 0;
}

/*
 * json_parse, but the values of the top-level members named in skip are
 * checked without tokens for what they hold (see json.h): the text is
 * checked exactly as json_parse checks it, and every token stored is the
 * one json_parse would store, but for a skipped container's size.
 */
int
json_parse_top(struct json *j, const char *js, size_t len,
               const char *const *skip)
{
	struct tz z;
	int r, fresh;

	if (json_begin(j, js, len) == -1)
		return -1;
	z.j = j;
	z.js = js;
	z.len = (int)len;
	z.pos = z.n = z.depth = 0;
	z.skip = skip;
	z.skip_next = z.quiet = 0;
	do {
		if ((fresh = tz_value(&z)) == -1)
			return -1;
	} while ((r = tz_after(&z, fresh)) == 1);
	if (r == -1)
		return -1;
	j->ntok = z.n;
	j->top_ok = j->tok[0].type == JSMN_OBJECT;
	return 0;
}

/* Whether paths a and b of sel have the same segments up to level L. */
static int
sel_same(const struct json_sel *sel, int a, int b, int L)
{
	for (int k = 0; k <= L; k++)
		if (k >= sel->p[a].nseg || k >= sel->p[b].nseg ||
		    sel->p[a].len[k] != sel->p[b].len[k] ||
		    memcmp(sel->p[a].seg[k], sel->p[b].seg[k],
		           sel->p[a].len[k]) != 0)
			return 0;
	return 1;
}

/* Group sel's paths by level: each is compared once per key through its
 * group's first path (json_pick). */
static void
sel_groups(struct json_sel *sel)
{
	int L, a, b;

	for (L = 0; L < JSON_SEL_DEPTH; L++)
		for (a = 0; a < sel->n; a++) {
			if (sel->p[a].nseg <= L)
				continue;
			if (sel->p[a].nseg == L + 1)
				sel->ends[L] |= 1u << (a + 1);
			for (b = 0; b < a && !sel_same(sel, a, b, L); b++)
				;
			if (b == a)
				sel->lead[L] |= 1u << (a + 1);
			if (b == a && sel->p[a].idx[L] == -1)
				sel->by_hint[L][key_bit(sel->p[a].len[L],
				                        sel->p[a].seg[L])] |=
				    1u << (a + 1);
			sel->grp[L][b + 1] |= 1u << (a + 1);
		}
}

/* Compile paths (NULL-terminated) for json_pick; -1 if there are too many
 * or one is empty, too deep or has an empty segment. */
int
json_sel_init(struct json_sel *sel, const char *const *paths)
{
	const char *seg, *dot;
	size_t n;
	int i, k;

	memset(sel, 0, sizeof *sel);
	for (i = 0; paths[i]; i++) {
		if (i == JSON_SEL_MAX || paths[i][0] == '\0')
			return -1;
		for (k = 0, seg = paths[i];; seg = dot + 1, k++) {
			if ((dot = strchr(seg, '.')) == NULL)
				dot = seg + strlen(seg);
			n = (size_t)(dot - seg);
			if (k == JSON_SEL_DEPTH || n == 0 || n > 255)
				return -1;
			sel->p[i].seg[k] = seg;
			sel->p[i].len[k] = (unsigned char)n;
			sel->p[i].idx[k] = digits(seg, n) == n && n <= 9
			                       ? (int)strtol(seg, NULL, 10)
			                       : -1;
			if (*dot == '\0')
				break;
		}
		sel->p[i].nseg = k + 1;
	}
	sel->n = i;
	sel_groups(sel);
	return 0;
}

/* Whether the escaped key text [s, e) decodes to seg[0, n) (json_get_n). */
static int
pk_key_decoded(const char *js, int s, int e, const char *seg, size_t n)
{
	jsmntok_t t = {JSMN_STRING, s, e, 0};
	struct json kj = {
	    .js = js, .len = (size_t)e, .tok = &t, .ntok = 1, .cap = 1};
	char tmp[256];

	return n < sizeof tmp && json_str(&kj, 0, tmp, sizeof tmp) == (int)n &&
	       memcmp(tmp, seg, n) == 0;
}

/* The groups of the paths m (first paths of groups looked for at level
 * L) that the member with key [ks, ke) (escaped if esc) of an object, or
 * the element at of an array, leads on to or ends at (each group matches
 * once: the first of duplicate keys). */
static uint32_t __attribute__((noinline))
pk_match(const struct json_sel *sel, const char *js, int L, int isobj,
         uint32_t m, int ks, int ke, int esc, int at)
{
	const char *key = js + ks, *seg;
	uint32_t got = 0;
	int b, i;
	size_t kn = (size_t)(ke - ks), n;

	for (; m; m &= m - 1) {
		b = __builtin_ctz(m);
		i = b - 1;
		n = sel->p[i].len[L];
		if (!isobj) {
			if (sel->p[i].idx[L] != at)
				continue;
		} else if (sel->p[i].idx[L] != -1 || kn < n) {
			continue;
		} else if (kn == n) {
			seg = sel->p[i].seg[L];
			if (key[0] != seg[0] || memcmp(key, seg, n) != 0)
				continue;
		} else if (!esc ||
		           !pk_key_decoded(js, ks, ke, sel->p[i].seg[L], n)) {
			continue;
		}
		got |= sel->grp[L][b];
	}
	return got;
}

/* Record the value [s, e) of type t as every path in pick. */
static inline void
pk_record(struct json *j, uint32_t pick, jsmntype_t t, int s, int e)
{
	for (; pick; pick &= pick - 1)
		j->tok[__builtin_ctz(pick)] = (jsmntok_t){t, s, e, 0};
}

/* The bytes that end a primitive (as tz_value stops at them). */
static const unsigned char pk_ends[256] = {
    [','] = 1,  [']'] = 1,  ['}'] = 1, [' '] = 1,
    ['\n'] = 1, ['\r'] = 1, ['\t'] = 1};

/* Skip JSON whitespace from p (below n): the first other offset. */
#define PK_WS(s, p, n)                                                         \
	while ((p) < (n) && (s)[p] <= ' ' &&                                   \
	       ((s)[p] == ' ' || (s)[p] == '\n' || (s)[p] == '\r' ||           \
	        (s)[p] == '\t'))                                               \
	(p)++

/*
 * Check js as json_parse does and keep only the values at sel's paths;
 * see json.h. One loop, its state in locals: a value, then what follows
 * it (closing brackets, a comma, a member's key), then the next value.
 * For each open container up to level JSON_SEL_DEPTH: the paths still
 * looked for below it (want), those that end at it (pick: its size and
 * end are counted) and its members so far (idx).
 */
int
json_pick(struct json *j, const char *js, size_t len,
          const struct json_sel *sel)
{
	const unsigned char *s = (const unsigned char *)js;
	uint32_t want[JSON_SEL_DEPTH + 1], pick[JSON_SEL_DEPTH + 1];
	int idx[JSON_SEL_DEPTH + 1];
	unsigned char obj[JSON_MAX_DEPTH];
	uint32_t nwant, npick, m, g;
	int n = (int)len, pos = 0, depth = 0, ntok = 0, fresh, c, p, L, ks, esc,
	    at;

	if (json_begin(j, js, len) == -1)
		return -1;
	for (int i = 0; i <= sel->n; i++)
		j->tok[i] = (jsmntok_t){JSMN_UNDEFINED, -1, -1, 0};
	npick = 1; /* token 0: the document */
	nwant = sel->n ? ((1u << sel->n) - 1) << 1 : 0;
	for (;;) {
		/* a value, looked for by nwant, recorded as npick */
		PK_WS(s, pos, n);
		if (pos == n || ++ntok > JSON_TOK_MAX)
			return -1;
		c = s[pos];
		if (c == '{' || c == '[') {
			if (depth == JSON_MAX_DEPTH)
				return -1;
			L = depth++;
			obj[L] = c == '{';
			if (L <= JSON_SEL_DEPTH) {
				want[L] = nwant;
				pick[L] = npick;
				idx[L] = 0;
			}
			if (npick)
				pk_record(j, npick,
				          c == '{' ? JSMN_OBJECT : JSMN_ARRAY,
				          pos, -1);
			pos++;
			fresh = 1;
		} else if (c == '"') {
			esc = 0;
			if ((p = str_close(s, pos + 1, n, &esc)) == -1)
				return -1;
			if (npick)
				pk_record(j, npick, JSMN_STRING, pos + 1, p);
			pos = p + 1;
			fresh = 0;
		} else {
			/* a plain integer (most numbers here: counts, times)
			 * is checked as it is scanned */
			p = pos + (c == '-');
			if (p < n && s[p] >= '1' && s[p] <= '9') {
				while (++p < n && s[p] >= '0' && s[p] <= '9')
					;
				if (p < n && !pk_ends[s[p]])
					p = -1;
			} else {
				p = -1;
			}
			if (p == -1) {
				for (p = pos; p < n && !pk_ends[s[p]]; p++)
					;
				if (!is_primitive(js + pos, (size_t)(p - pos)))
					return -1;
			}
			if (npick)
				pk_record(j, npick, JSMN_PRIMITIVE, pos, p);
			pos = p;
			fresh = 0;
		}
		/* what follows: closing brackets, then a comma (or the first
		 * child of a container just opened), or the end */
		for (;;) {
			PK_WS(s, pos, n);
			if (depth == 0) {
				if (pos < n)
					return -1;
				j->ntok = sel->n + 1;
				return 0;
			}
			L = depth - 1;
			c = pos < n ? s[pos] : -1;
			if (c != (obj[L] ? '}' : ']'))
				break;
			pos++;
			if (L <= JSON_SEL_DEPTH)
				for (m = pick[L]; m; m &= m - 1)
					j->tok[__builtin_ctz(m)].end = pos;
			depth--;
			fresh = 0;
		}
		if (!fresh) {
			if (c != ',')
				return -1;
			pos++;
		}
		/* a child of the container at level L: a member's key */
		ks = p = 0;
		esc = 0;
		if (obj[L]) {
			PK_WS(s, pos, n);
			if (pos == n || s[pos] != '"' || ++ntok > JSON_TOK_MAX)
				return -1;
			ks = pos + 1;
			if ((p = str_close(s, ks, n, &esc)) == -1)
				return -1;
			pos = p + 1;
			PK_WS(s, pos, n);
			if (pos == n || s[pos] != ':')
				return -1;
			pos++;
		}
		nwant = npick = 0;
		if (L > JSON_SEL_DEPTH)
			continue;
		for (m = pick[L]; m; m &= m - 1)
			j->tok[__builtin_ctz(m)].size++;
		if (L == JSON_SEL_DEPTH)
			continue;
		at = idx[L]++;
		/* unescaped, a key matches only a segment of its length and
		 * first byte */
		if ((m = want[L] & sel->lead[L]) == 0)
			continue;
		if (obj[L] && !esc &&
		    (p == ks ||
		     (m &=
		      sel->by_hint[L][key_bit((size_t)(p - ks), js + ks)]) ==
		         0))
			continue;
		g = pk_match(sel, js, L, obj[L], m, ks, p, esc, at);
		want[L] &= ~g;
		npick = g & sel->ends[L];
		nwant = g & ~sel->ends[L];
	}
}

/* The token of path n of json_pick's selection, or -1 if absent. */
int
json_picked(const struct json *j, int n)
{
	if (n < 0 || n + 1 >= j->ntok || j->tok[n + 1].type == JSMN_UNDEFINED)
		return -1;
	return n + 1;
}

/* Release the token storage. */
void
json_free(struct json *j)
{
	free(j->tok);
	j->tok = NULL;
	j->ntok = j->cap = 0;
}

/* Token i, or NULL if i is out of range. */
static const jsmntok_t *
tok_at(const struct json *j, int i)
{
	if (i < 0 || i >= j->ntok)
		return NULL;
	return &j->tok[i];
}

/*
 * Index of the first token after i's subtree: the first token that starts
 * at or after i's end offset. For an object key that is its value, since
 * a key's text ends before its value begins.
 */
int
json_next(const struct json *j, int i)
{
	const jsmntok_t *t = tok_at(j, i);
	int n, end;

	if (t == NULL)
		return -1;
	end = t->end;
	for (n = i + 1; n < j->ntok && j->tok[n].start < end; n++)
		;
	return n;
}

/* Value of key[0, klen) in object obj, or -1 (see json.h). */
int
json_get_n(const struct json *j, int obj, const char *key, size_t klen)
{
	const jsmntok_t *t = tok_at(j, obj);
	int k, n;

	if (t == NULL || t->type != JSMN_OBJECT)
		return -1;
	if (obj == 0 && j->top_ok && !j->top_esc &&
	    !(j->top_bits >> key_bit(klen, key) & 1))
		return -1; /* no root key of its length and first byte */
	for (k = obj + 1, n = 0; n < t->size; n++) {
		const jsmntok_t *kt = &j->tok[k];

		if ((size_t)(kt->end - kt->start) == klen &&
		    memcmp(j->js + kt->start, key, klen) == 0)
			return k + 1;
		/* escapes shorten a key: only a longer one can decode to it,
		 * and only one that starts with key's first byte or with an
		 * escape */
		if ((size_t)(kt->end - kt->start) > klen && klen > 0 &&
		    (j->js[kt->start] == key[0] || j->js[kt->start] == '\\') &&
		    memchr(j->js + kt->start, '\\',
		           (size_t)(kt->end - kt->start)) != NULL) {
			/* Escaped key: compare decoded (rare). */
			char tmp[256];

			if (klen < sizeof(tmp) &&
			    json_str(j, k, tmp, sizeof(tmp)) == (int)klen &&
			    memcmp(tmp, key, klen) == 0)
				return k + 1;
		}
		k = json_next(j, k + 1);
	}
	return -1;
}

/* The n-th element of array arr, or -1. */
int
json_at(const struct json *j, int arr, int n)
{
	const jsmntok_t *t = tok_at(j, arr);
	int k, m;

	if (t == NULL || t->type != JSMN_ARRAY || n < 0 || n >= t->size)
		return -1;
	for (k = arr + 1, m = 0; m < n; m++)
		k = json_next(j, k);
	return k;
}

/* Members of an object or elements of an array, or -1. */
int
json_size(const struct json *j, int i)
{
	const jsmntok_t *t = tok_at(j, i);

	if (t == NULL || (t->type != JSMN_OBJECT && t->type != JSMN_ARRAY))
		return -1;
	return t->size;
}

/* True if primitive i's text is exactly lit. */
static bool
prim_is(const struct json *j, int i, const char *lit, size_t n)
{
	const jsmntok_t *t = tok_at(j, i);

	return t != NULL && t->type == JSMN_PRIMITIVE &&
	       (size_t)(t->end - t->start) == n &&
	       memcmp(j->js + t->start, lit, n) == 0;
}

/* True if i is null. */
bool
json_is_null(const struct json *j, int i)
{
	return prim_is(j, i, "null", 4);
}

/* True if i is true. */
bool
json_is_true(const struct json *j, int i)
{
	return prim_is(j, i, "true", 4);
}

/* Store boolean i in *out; -1 if it is not a boolean. */
int
json_bool(const struct json *j, int i, bool *out)
{
	if (prim_is(j, i, "true", 4))
		*out = true;
	else if (prim_is(j, i, "false", 5))
		*out = false;
	else
		return -1;
	return 0;
}

/* Copy number token i NUL-terminated into tmp; -1 if not a number. */
static int
num_text(const struct json *j, int i, char *tmp, size_t tmpsz)
{
	const jsmntok_t *t = tok_at(j, i);
	size_t n;

	if (t == NULL || t->type != JSMN_PRIMITIVE)
		return -1;
	n = (size_t)(t->end - t->start);
	if (n >= tmpsz || !is_number(j->js + t->start, n))
		return -1;
	memcpy(tmp, j->js + t->start, n);
	tmp[n] = '\0';
	return 0;
}

/* The value of s[0, n) if it is a JSON integer of at most 18 digits
 * (what token counts are), else LLONG_MIN. */
static long long
small_int(const char *s, size_t n)
{
	size_t k = n > 0 && s[0] == '-';
	long long v = 0;

	if (n == k || n - k > 18 || (s[k] == '0' && n - k > 1))
		return LLONG_MIN;
	for (size_t i = k; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return LLONG_MIN;
		v = v * 10 + (s[i] - '0');
	}
	return k ? -v : v;
}

/* Store number i in *out if it is an integer that fits; else -1. */
int
json_int(const struct json *j, int i, long long *out)
{
	const jsmntok_t *t;
	char tmp[128];
	char *end;
	long long v;
	double d;

	if ((t = tok_at(j, i)) != NULL && t->type == JSMN_PRIMITIVE &&
	    (v = small_int(j->js + t->start, (size_t)(t->end - t->start))) !=
	        LLONG_MIN) {
		*out = v;
		return 0;
	}
	if (num_text(j, i, tmp, sizeof(tmp)) == -1)
		return -1;
	if (strpbrk(tmp, ".eE") == NULL) {
		errno = 0;
		v = strtoll(tmp, &end, 10);
		if (errno != 0 || *end != '\0')
			return -1;
		*out = v;
		return 0;
	}
	d = strtod(tmp, &end);
	if (*end != '\0' || d != floor(d) || d < -9223372036854775808.0 ||
	    d >= 9223372036854775808.0)
		return -1;
	*out = (long long)d;
	return 0;
}

/* Store number i in *out; -1 if it is not a number. */
int
json_num(const struct json *j, int i, double *out)
{
	char tmp[128];
	char *end;

	if (num_text(j, i, tmp, sizeof(tmp)) == -1)
		return -1;
	*out = strtod(tmp, &end);
	return *end == '\0' ? 0 : -1;
}

/* Raw text of value i (strings with their quotes), or NULL. */
const char *
json_raw(const struct json *j, int i, size_t *len)
{
	const jsmntok_t *t = tok_at(j, i);
	int s;

	if (t == NULL)
		return NULL;
	s = ext_start(t);
	*len = (size_t)(t->end - s) + (t->type == JSMN_STRING);
	return j->js + s;
}

/* Encode code point cp as UTF-8 into u; returns the length. */
static size_t
utf8_put(char *u, uint32_t cp)
{
	if (cp < 0x80) {
		u[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		u[0] = (char)(0xc0 | (cp >> 6));
		u[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		u[0] = (char)(0xe0 | (cp >> 12));
		u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		u[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	u[0] = (char)(0xf0 | (cp >> 18));
	u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	u[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/*
 * Decode the escape sequence at p (p[0] == '\\', e is the end of the
 * string's text) into u; sets *ulen and returns the input bytes used.
 * Lone or malformed surrogates decode as U+FFFD.
 */
static size_t
unescape(const char *p, const char *e, char *u, size_t *ulen)
{
	long hi, lo;

	if (e - p < 2) {
		*ulen = utf8_put(u, 0xfffd);
		return (size_t)(e - p);
	}
	switch (p[1]) {
	case 'b':
		*u = '\b';
		break;
	case 'f':
		*u = '\f';
		break;
	case 'n':
		*u = '\n';
		break;
	case 'r':
		*u = '\r';
		break;
	case 't':
		*u = '\t';
		break;
	case 'u':
		if (e - p < 6 || (hi = hex4(p + 2)) == -1) {
			*ulen = utf8_put(u, 0xfffd);
			return 2;
		}
		if (hi >= 0xd800 && hi <= 0xdbff && e - p >= 12 &&
		    p[6] == '\\' && p[7] == 'u' &&
		    (lo = hex4(p + 8)) >= 0xdc00 && lo <= 0xdfff) {
			*ulen = utf8_put(
			    u, 0x10000 + (((uint32_t)hi - 0xd800) << 10) +
			           ((uint32_t)lo - 0xdc00));
			return 12;
		}
		if (hi >= 0xd800 && hi <= 0xdfff)
			hi = 0xfffd;
		*ulen = utf8_put(u, (uint32_t)hi);
		return 6;
	default:
		*u = p[1];
		break; /* " \ / */
	}
	*ulen = 1;
	return 2;
}

/* Bounds of string token i's text, or -1 if it is not a string. */
static int
str_span(const struct json *j, int i, const char **s, const char **e)
{
	const jsmntok_t *t = tok_at(j, i);

	if (t == NULL || t->type != JSMN_STRING)
		return -1;
	*s = j->js + t->start;
	*e = j->js + t->end;
	return 0;
}

/* Length of the longest prefix of s[0, n) ending on a UTF-8 boundary. */
static size_t
utf8_cut(const char *s, size_t n, size_t room)
{
	if (room >= n)
		return n;
	while (room > 0 && ((unsigned char)s[room] & 0xc0) == 0x80)
		room--;
	return room;
}

/* Unescape string i into out; see json.h. */
int
json_str(const struct json *j, int i, char *out, size_t outsz)
{
	const char *s, *e, *bs;
	size_t total = 0, w = 0, n, ulen, room;
	int full = outsz == 0;
	char u[4];

	if (str_span(j, i, &s, &e) == -1) {
		if (outsz > 0)
			out[0] = '\0';
		return -1;
	}
	room = outsz ? outsz - 1 : 0;
	while (s < e) {
		if ((bs = memchr(s, '\\', (size_t)(e - s))) == NULL)
			bs = e;
		n = (size_t)(bs - s);
		if (!full && n > 0) {
			size_t c = utf8_cut(s, n, room - w);

			memcpy(out + w, s, c);
			w += c;
			full = c < n;
		}
		total += n;
		if (bs == e)
			break;
		s = bs + unescape(bs, e, u, &ulen);
		if (!full && ulen <= room - w) {
			memcpy(out + w, u, ulen);
			w += ulen;
		} else
			full = 1;
		total += ulen;
	}
	if (outsz > 0)
		out[w] = '\0';
	return total > INT_MAX ? INT_MAX : (int)total;
}

/* Unescape string i, appending to out; the decoded length, or -1. */
int
json_str_buf(const struct json *j, int i, struct buf *out)
{
	const char *s, *e, *bs;
	size_t total = 0, ulen;
	char u[4];

	if (str_span(j, i, &s, &e) == -1)
		return -1;
	while (s < e) {
		if ((bs = memchr(s, '\\', (size_t)(e - s))) == NULL)
			bs = e;
		if (buf_add(out, s, (size_t)(bs - s)) == -1)
			return -1;
		total += (size_t)(bs - s);
		if (bs == e)
			break;
		s = bs + unescape(bs, e, u, &ulen);
		if (buf_add(out, u, ulen) == -1)
			return -1;
		total += ulen;
	}
	return total > INT_MAX ? INT_MAX : (int)total;
}

/* True if string i decodes to exactly str[0, slen). */
bool
json_eq_n(const struct json *j, int i, const char *str, size_t slen)
{
	const char *s, *e, *bs;
	size_t n, ulen;
	char u[4];

	if (str_span(j, i, &s, &e) == -1)
		return false;
	/* escapes shorten the text: a shorter one cannot match, one as long
	 * only without escapes */
	if ((size_t)(e - s) < slen)
		return false;
	if ((size_t)(e - s) == slen)
		return memcmp(s, str, slen) == 0 &&
		       memchr(str, '\\', slen) == NULL;
	while (s < e) {
		if ((bs = memchr(s, '\\', (size_t)(e - s))) == NULL)
			bs = e;
		n = (size_t)(bs - s);
		if (n > slen || memcmp(s, str, n) != 0)
			return false;
		str += n;
		slen -= n;
		if (bs == e)
			break;
		s = bs + unescape(bs, e, u, &ulen);
		if (ulen > slen || memcmp(u, str, ulen) != 0)
			return false;
		str += ulen;
		slen -= ulen;
	}
	return slen == 0;
}

/* Walk a dotted path of keys and array indexes from token start. */
int
json_path(const struct json *j, int start, const char *path)
{
	int cur = start;
	const char *seg, *dot;
	size_t n, d;
	long idx;

	if (tok_at(j, cur) == NULL || path == NULL)
		return -1;
	for (seg = path; *seg != '\0' && cur != -1; seg = dot + (*dot != 0)) {
		if ((dot = strchr(seg, '.')) == NULL)
			dot = seg + strlen(seg);
		n = (size_t)(dot - seg);
		if (j->tok[cur].type == JSMN_ARRAY) {
			d = digits(seg, n);
			if (n == 0 || d != n || n > 9)
				return -1;
			idx = strtol(seg, NULL, 10);
			cur = json_at(j, cur, (int)idx);
		} else
			cur = json_get_n(j, cur, seg, n);
	}
	return cur;
}

/* Writer. */

/* Start a writer appending to b. */
void
jw_init(struct jw *w, struct buf *b)
{
	memset(w, 0, sizeof(*w));
	w->b = b;
}

/* Emit the comma a new value needs at this level. */
static void
jw_pre(struct jw *w)
{
	int d = w->depth < 64 ? w->depth : 63;

	if (w->after_key) {
		w->after_key = 0;
		return;
	}
	if (w->need_comma[d])
		buf_addc(w->b, ',');
	w->need_comma[d] = 1;
}

/* Open a container with byte c. Nesting past 64 levels marks the buffer
 * failed (the sticky oom flag) so the caller drops the document. */
static void
jw_open(struct jw *w, char c)
{
	jw_pre(w);
	buf_addc(w->b, c);
	w->depth++;
	if (w->depth >= 64)
		w->b->oom = 1;
	else
		w->need_comma[w->depth] = 0;
}

/* Close a container with byte c. */
static void
jw_close(struct jw *w, char c)
{
	buf_addc(w->b, c);
	if (w->depth > 0)
		w->depth--;
	w->after_key = 0;
}

/* Begin an object. */
void
jw_obj(struct jw *w)
{
	jw_open(w, '{');
}

/* End an object. */
void
jw_obj_end(struct jw *w)
{
	jw_close(w, '}');
}

/* Begin an array. */
void
jw_arr(struct jw *w)
{
	jw_open(w, '[');
}

/* End an array. */
void
jw_arr_end(struct jw *w)
{
	jw_close(w, ']');
}

/* Write an object key; the next value belongs to it. */
void
jw_key(struct jw *w, const char *key)
{
	jw_pre(w);
	buf_addc(w->b, '"');
	json_escape(w->b, key, strlen(key));
	buf_add(w->b, "\":", 2);
	w->after_key = 1;
}

/* Write an escaped string. */
void
jw_str(struct jw *w, const char *s, size_t n)
{
	jw_pre(w);
	buf_addc(w->b, '"');
	json_escape(w->b, s, n);
	buf_addc(w->b, '"');
}

/* Write a C string, or null for NULL. */
void
jw_cstr(struct jw *w, const char *s)
{
	if (s == NULL)
		jw_null(w);
	else
		jw_str(w, s, strlen(s));
}

/* Write an integer. */
void
jw_int(struct jw *w, long long v)
{
	char tmp[24];
	int n;

	jw_pre(w);
	n = snprintf(tmp, sizeof(tmp), "%lld", v);
	buf_add(w->b, tmp, (size_t)n);
}

/* Write a number: integral values without exponent, others in the
 * shortest of %.15g/%.16g/%.17g that reads back exactly; null if not
 * finite. */
void
jw_num(struct jw *w, double v)
{
	char tmp[40];
	int n = 0, prec;

	if (!isfinite(v)) {
		jw_null(w);
		return;
	}
	jw_pre(w);
	if (v == floor(v) && fabs(v) < 1e21)
		n = snprintf(tmp, sizeof(tmp), "%.0f", v);
	else {
		for (prec = 15; prec <= 17; prec++) {
			n = snprintf(tmp, sizeof(tmp), "%.*g", prec, v);
			if (strtod(tmp, NULL) == v)
				break;
		}
	}
	buf_add(w->b, tmp, (size_t)n);
}

/* Write a boolean. */
void
jw_bool(struct jw *w, bool v)
{
	jw_pre(w);
	if (v)
		buf_add(w->b, "true", 4);
	else
		buf_add(w->b, "false", 5);
}

/* Write null. */
void
jw_null(struct jw *w)
{
	jw_pre(w);
	buf_add(w->b, "null", 4);
}

/* Write a pre-encoded JSON value as is. */
void
jw_raw(struct jw *w, const char *json, size_t n)
{
	jw_pre(w);
	buf_add(w->b, json, n);
}

/* Length of the valid UTF-8 sequence at s (s[0] >= 0x80), or 0. */
static size_t
utf8_valid(const unsigned char *s, size_t n)
{
	size_t len, k;
	uint32_t cp;

	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		len = 2;
		cp = s[0] & 0x1f;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		len = 3;
		cp = s[0] & 0x0f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		len = 4;
		cp = s[0] & 0x07;
	} else
		return 0;
	if (n < len)
		return 0;
	for (k = 1; k < len; k++) {
		if ((s[k] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[k] & 0x3f);
	}
	if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
	    (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	return len;
}

/* Escape s[0, n) as JSON string contents into b; see json.h. */
void
json_escape(struct buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)s;
	const unsigned char *const e = p + n;
	const unsigned char *run;
	char esc[6] = {'\\', 'u', '0', '0', 0, 0};
	size_t k;

	while (p < e) {
		for (run = p; p < e && *p >= 0x20 && *p != '"' && *p != '\\';) {
			if (*p < 0x80)
				p++;
			else if ((k = utf8_valid(p, (size_t)(e - p))) > 0)
				p += k;
			else
				break;
		}
		buf_add(b, run, (size_t)(p - run));
		if (p == e)
			break;
		switch (*p) {
		case '"':
			buf_add(b, "\\\"", 2);
			break;
		case '\\':
			buf_add(b, "\\\\", 2);
			break;
		case '\n':
			buf_add(b, "\\n", 2);
			break;
		case '\r':
			buf_add(b, "\\r", 2);
			break;
		case '\t':
			buf_add(b, "\\t", 2);
			break;
		case '\b':
			buf_add(b, "\\b", 2);
			break;
		case '\f':
			buf_add(b, "\\f", 2);
			break;
		default:
			if (*p < 0x20) {
				esc[4] = hex[*p >> 4];
				esc[5] = hex[*p & 0xf];
				buf_add(b, esc, 6);
			} else
				buf_add(b, "\xef\xbf\xbd", 3);
		}
		p++;
	}
}
