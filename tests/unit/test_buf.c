/* common/buf.c: decimal numbers written without printf. */
#include <limits.h>
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
