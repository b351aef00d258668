/* libFuzzer: json_pick (the stream chunk scan) against the full
 * tokenizer: the same verdict on every input, the same document token,
 * and for every path the token the json_get / json_at chain finds (or
 * none). Aborts on any difference. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static const char *const paths[] = {"error",
                                    "usage",
                                    "usage.prompt_tokens",
                                    "usage.prompt_tokens_details.cached_tokens",
                                    "choices",
                                    "choices.0",
                                    "choices.0.delta.content",
                                    "choices.0.delta.tool_calls",
                                    "choices.0.finish_reason",
                                    "choices.1.delta",
                                    "type",
                                    "delta.type",
                                    "delta.text",
                                    "0.a",
                                    NULL};

/* A path followed in a full parse with json_get (keys), json_at (digits). */
static int
walk(const struct json *f, const char *path)
{
	char seg[64];
	const char *dot;
	int cur = 0;
	size_t n;

	for (; cur >= 0; path = dot + 1) {
		dot = strchr(path, '.');
		n = dot ? (size_t)(dot - path) : strlen(path);
		memcpy(seg, path, n);
		seg[n] = '\0';
		if (strspn(seg, "0123456789") == n)
			cur = json_at(f, cur, atoi(seg));
		else
			cur = json_get(f, cur, seg);
		if (dot == NULL)
			break;
	}
	return cur;
}

/* Tokens a of f and b of p are the same. */
static void
same(const struct json *f, int a, const struct json *p, int b)
{
	if (f->tok[a].type != p->tok[b].type ||
	    f->tok[a].start != p->tok[b].start ||
	    f->tok[a].end != p->tok[b].end || f->tok[a].size != p->tok[b].size)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
	static struct json f, p;
	static struct json_sel sel;
	const char *s = (const char *)data;
	int rf, rp, a, b;

	if (sel.n == 0 && json_sel_init(&sel, paths) == -1)
		abort();
	rf = json_parse(&f, s, n);
	rp = json_pick(&p, s, n, &sel);
	if (rf != rp)
		abort();
	if (rf == -1)
		return 0;
	same(&f, 0, &p, 0);
	for (int i = 0; paths[i]; i++) {
		a = walk(&f, paths[i]);
		b = json_picked(&p, i);
		if ((a < 0) != (b < 0))
			abort();
		if (a >= 0)
			same(&f, a, &p, b);
	}
	return 0;
}
