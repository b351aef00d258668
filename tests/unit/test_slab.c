/* Unit tests for common/slab.c: size classes apart from the heap, slots
 * reused, realloc across classes, and empty pages given back. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "common/slab.h"

/* Whether a and b are at least a class part apart (different classes). */
static int
far_apart(const void *a, const void *b)
{
	uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;

	return (x > y ? x - y : y - x) >= ((uintptr_t)16 << 20);
}

Test(slab, classes_and_reuse)
{
	char *a = slab_malloc(15), *b = slab_malloc(16), *c = slab_malloc(15);
	char *big = slab_malloc(SLAB_MAX + 1);

	cr_assert(a && b && c && big);
	/* 16 bytes exactly (libevent's per-fd record) is a class apart */
	cr_assert(far_apart(a, b));
	cr_assert(!far_apart(a, c));
	cr_assert(far_apart(a, big)); /* from malloc */
	memset(a, 'x', 15);
	memset(b, 'y', 16);
	cr_assert(slab_in_use() >= 48);
	slab_free(c);
	cr_assert(slab_malloc(9) == c, "a freed slot is reused");
	slab_free(big);
	slab_free(NULL);
	slab_free(a);
	slab_free(b);
	slab_free(c);
}

Test(slab, realloc_keeps_content)
{
	char *p = slab_malloc(10), *q;

	memcpy(p, "abcdefghi", 10);
	cr_assert(slab_realloc(p, 12) == p, "fits its slot: stays");
	q = slab_realloc(p, 40);
	cr_assert_str_eq(q, "abcdefghi");
	q = slab_realloc(q, 1000); /* to malloc */
	cr_assert_str_eq(q, "abcdefghi");
	q = slab_realloc(q, 2000);
	cr_assert_str_eq(q, "abcdefghi");
	slab_free(q);
	q = slab_realloc(NULL, 20);
	cr_assert_not_null(q);
	slab_free(q);
}

/* After a burst, pages with no live slot go back; a page keeping one live
 * slot stays, and everything still works. */
Test(slab, trim_gives_back_empty_pages)
{
	enum { N = 20000 };
	static char *p[N];
	size_t before = slab_in_use();
	int n;

	for (int i = 0; i < N; i++) {
		p[i] = slab_malloc(40);
		memset(p[i], 0xab, 40);
	}
	for (int i = 0; i < N; i++)
		if (i % 5000 != 0)
			slab_free(p[i]);
	n = slab_trim();
	cr_assert(n >= N * 48 / 4096 - 8, "%d pages given back", n);
	cr_assert(slab_trim() == 0);
	for (int i = 0; i < N; i += 5000) {
		cr_assert((unsigned char)p[i][39] == 0xab, "live slot kept");
		slab_free(p[i]);
	}
	cr_assert(slab_in_use() == before);
	for (int i = 0; i < N; i++) { /* fresh pages are carved again */
		p[i] = slab_malloc(40);
		memset(p[i], 0xcd, 40);
	}
	for (int i = 0; i < N; i++)
		slab_free(p[i]);
	cr_assert(slab_in_use() == before);
}
