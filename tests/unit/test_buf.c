/* common/buf.c: decimal numbers written without printf. */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "common/buf.h"

/* buf_fmt_u and buf_fmt_d agree with printf at the edges. */
Test(buf, fmt_numbers)
{
	const long long sv[] = {0,   1,         -1,        9,        10,
	                        -10, 123456789, LLONG_MAX, LLONG_MIN};
	const unsigned long long uv[] = {0, 7, 10, 99, 100, ULLONG_MAX};
	char got[BUF_NUM_MAX], want[64];

	for (size_t i = 0; i < sizeof sv / sizeof sv[0]; i++) {
		snprintf(want, sizeof want, "%lld", sv[i]);
		cr_assert(eq(sz, buf_fmt_d(got, sv[i]), strlen(want)));
		cr_assert(eq(str, got, want));
	}
	for (size_t i = 0; i < sizeof uv / sizeof uv[0]; i++) {
		snprintf(want, sizeof want, "%llu", uv[i]);
		cr_assert(eq(sz, buf_fmt_u(got, uv[i]), strlen(want)));
		cr_assert(eq(str, got, want));
	}
}

/* buf_addu and buf_addd append. */
Test(buf, add_numbers)
{
	struct buf b = {0};

	buf_adds(&b, "n=");
	buf_addu(&b, 42);
	buf_addc(&b, ',');
	buf_addd(&b, -7);
	cr_assert(strcmp(buf_cstr(&b), "n=42,-7") == 0);
	buf_free(&b);
}

/* buf_copy stops at n, at a NUL and at the size, as snprintf "%.*s". */
Test(buf, copy)
{
	char d[6];

	cr_assert(eq(sz, buf_copy(d, sizeof d, "abc", 2), 2));
	cr_assert(eq(str, d, "ab"));
	cr_assert(eq(sz, buf_copy(d, sizeof d, "a\0bc", 4), 1));
	cr_assert(eq(str, d, "a"));
	cr_assert(eq(sz, buf_copy(d, sizeof d, "abcdefgh", SIZE_MAX), 5));
	cr_assert(eq(str, d, "abcde"));
	cr_assert(eq(sz, buf_copy(d, 1, "abc", 3), 0));
	cr_assert(eq(str, d, ""));
}

/* Hex digits in either case; %XX decoded, a '%' without two hex digits
 * after it kept as it is. */
Test(buf, unescapes_percent_escapes)
{
	struct buf b = {0};

	cr_assert(buf_hexval('0') == 0 && buf_hexval('9') == 9);
	cr_assert(buf_hexval('a') == 10 && buf_hexval('F') == 15);
	cr_assert(buf_hexval('g') == -1 && buf_hexval('%') == -1);
	cr_assert(buf_add_unescaped(&b, "openai%2fgpt%2D4o", 17) == 0);
	cr_assert(strcmp(buf_cstr(&b), "openai/gpt-4o") == 0, "%s", b.data);
	buf_reset(&b);
	cr_assert(buf_add_unescaped(&b, "a%zzb%4", 7) == 0);
	cr_assert(strcmp(buf_cstr(&b), "a%zzb%4") == 0, "%s", b.data);
	buf_reset(&b);
	/* n bounds the escape: "%41" cut after its first digit stays */
	cr_assert(buf_add_unescaped(&b, "x%41", 3) == 0);
	cr_assert(strcmp(buf_cstr(&b), "x%4") == 0, "%s", b.data);
	buf_free(&b);
}

/* A parked small block comes back to the next empty buffer that grows
 * (the last parked first); a large one, or one past the 32 kept, is
 * freed; a parked buffer is empty, and one never grown parks as it is. */
Test(buf, park_keeps_small_blocks_for_the_next)
{
	struct buf a = {0}, b = {0}, big = {0}, many[40], none = {0};
	char *pa;

	buf_adds(&a, "hello");
	pa = a.data;
	buf_park(&a);
	cr_assert(a.data == NULL && a.len == 0 && a.cap == 0);
	buf_adds(&b, "world, a little longer");
	cr_assert(b.data == pa, "the parked block was not taken back");
	cr_assert(strcmp(buf_cstr(&b), "world, a little longer") == 0);
	for (int i = 0; i < 2000; i++) /* past the block: grows as ever */
		buf_addc(&b, 'x');
	cr_assert(b.len == 2022 && b.cap >= 2023);
	buf_park(&b); /* over 1 KB: freed */
	cr_assert(b.data == NULL && b.cap == 0);
	buf_adds(&big, "x");
	cr_assert(big.cap == 256, "a fresh buffer's block is 256 bytes");
	for (int i = 0; i < 40; i++) {
		memset(&many[i], 0, sizeof many[i]);
		buf_addd(&many[i], i);
	}
	for (int i = 0; i < 40; i++)
		buf_park(&many[i]);
	for (int i = 0; i < 40; i++)
		buf_addd(&many[i], 1000 + i);
	for (int i = 0; i < 40; i++) { /* no block went to two buffers */
		char want[16];

		snprintf(want, sizeof want, "%d", 1000 + i);
		cr_assert(strcmp(buf_cstr(&many[i]), want) == 0);
	}
	none.oom = 1;
	buf_park(&none);
	cr_assert(none.data == NULL && none.oom == 0);
	for (int i = 0; i < 40; i++)
		buf_free(&many[i]);
	buf_free(&big);
}
