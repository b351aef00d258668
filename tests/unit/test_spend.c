/* common/spend.c: month arithmetic without gmtime_r agrees with it. */
#include <stdint.h>
#include <time.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "common/spend.h"

/* spend_month_of_day and spend_month_end_ms as gmtime_r/timegm give them,
 * every day from 1970 to 2400 and at both ends of each day. */
Test(spend, months_match_gmtime)
{
	for (int64_t day = 0; day < 157000; day++) {
		int64_t ms[] = {day * 86400000, day * 86400000 + 86399999};
		time_t t = (time_t)(day * 86400);
		struct tm tm;

		gmtime_r(&t, &tm);
		cr_assert(eq(u32, spend_month_of_day((uint32_t)day),
		             (uint32_t)((tm.tm_year + 1900) * 12 + tm.tm_mon)));
		tm.tm_mday = 1;
		tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
		if (++tm.tm_mon == 12) {
			tm.tm_mon = 0;
			tm.tm_year++;
		}
		for (int i = 0; i < 2; i++)
			cr_assert(eq(i64, spend_month_end_ms(ms[i]),
			             (int64_t)timegm(&tm) * 1000));
	}
}

/* Before 1970 too (a clock set back). */
Test(spend, month_end_before_epoch)
{
	/* 1969-12-31T23:59:59Z ends at 1970-01-01 */
	cr_assert(eq(i64, spend_month_end_ms(-1000), 0));
	/* 1969-11-15 ends at 1969-12-01 = -31 days */
	cr_assert(
	    eq(i64, spend_month_end_ms(-47LL * 86400000), -31LL * 86400000));
}
