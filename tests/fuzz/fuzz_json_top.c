/* libFuzzer: json_parse_top (the top-level scan of request bodies)
 * against the full tokenizer: the same verdict on every input, the same
 * top-level tokens, skipped containers empty, everything else token for
 * token the same; and the full tokenizer with SSE2 only against the
 * widest vector code the CPU has. Aborts on any difference. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static const char *const skip[] = {"messages", "input", "tools", NULL};

/* Tokens ia of a and ib of b are the same (size too, if size is set). */
static void
same(const struct json *a, int ia, const struct json *b, int ib, int size)
{
	if (a->tok[ia].type != b->tok[ib].type ||
	    a->tok[ia].start != b->tok[ib].start ||
	    a->tok[ia].end != b->tok[ib].end ||
	    (size && a->tok[ia].size != b->tok[ib].size))
		abort();
}

/* Whether top-level key token k of j is one of skip. */
static int
skipped(const struct json *j, int k)
{
	size_t n = (size_t)(j->tok[k].end - j->tok[k].start);

	for (int i = 0; skip[i]; i++)
		if (strlen(skip[i]) == n &&
		    memcmp(j->js + j->tok[k].start, skip[i], n) == 0)
			return 1;
	return 0;
}

/* Compare the members of two object documents. */
static void
same_members(const struct json *f, const struct json *t)
{
	int a, b, na, nb, shallow = 0;

	same(f, 0, t, 0, 1);
	for (a = 1, b = 1; a < f->ntok; a = na, b = nb) {
		if (b + 1 >= t->ntok)
			abort();
		same(f, a, t, b, 1);
		na = json_next(f, a + 1);
		nb = json_next(t, b + 1);
		if (skipped(t, b) && (f->tok[a + 1].type == JSMN_OBJECT ||
		                      f->tok[a + 1].type == JSMN_ARRAY)) {
			same(f, a + 1, t, b + 1, 0);
			if (t->tok[b + 1].size != 0 || nb != b + 2)
				abort();
			shallow = 1;
			continue;
		}
		if (na - a != nb - b)
			abort();
		for (int k = 1; k < na - a; k++)
			same(f, a + k, t, b + k, 1);
	}
	if (b != t->ntok || shallow != t->shallow)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
	static struct json f, t, w;
	const char *s = (const char *)data;
	int rf = json_parse(&f, s, n), rt = json_parse_top(&t, s, n, skip), rw;

	if (rf != rt)
		abort();
	/* the narrowest vector code reads it as the widest the CPU has */
	json_simd(JSON_SIMD_SSE2);
	rw = json_parse(&w, s, n);
	json_simd(JSON_SIMD_AVX512);
	if (rw != rf || (rf == 0 && w.ntok != f.ntok))
		abort();
	if (rf == -1)
		return 0;
	for (int i = 0; i < f.ntok; i++)
		same(&f, i, &w, i, 1);
	if (f.tok[0].type == JSMN_OBJECT) {
		same_members(&f, &t);
		return 0;
	}
	if (f.ntok != t.ntok || t.shallow)
		abort();
	for (int i = 0; i < f.ntok; i++)
		same(&f, i, &t, i, 1);
	return 0;
}
