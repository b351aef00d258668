/* Unit tests for common/clock.c: the millisecond clocks are the coarse
 * ones, about a kernel tick behind the precise clocks and never ahead;
 * all of them only move forward. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <time.h>

#include "common/clock.h"

/* The precise clock c in ms. */
static int64_t
precise_ms(clockid_t c)
{
	struct timespec ts;

	clock_gettime(c, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

Test(clock, coarse_ms_within_a_tick_of_precise)
{
	struct timespec tick, nap = {0, 3000000};
	int64_t b, a, ms = 0, us, wall, prev_ms = 0, prev_us = 0, t, first;

	clock_getres(CLOCK_MONOTONIC_COARSE, &tick);
	first = clock_ms();
	/* a tick, with room for a vCPU the host kept waiting */
	t = tick.tv_nsec / 1000000 + 100;
	for (int i = 0; i < 20; i++) {
		/* each between precise readings before and after it: behind
		 * by about a tick, never ahead (however long we were off the
		 * CPU in between) */
		b = precise_ms(CLOCK_MONOTONIC);
		ms = clock_ms();
		us = clock_us();
		a = precise_ms(CLOCK_MONOTONIC);
		cr_assert(ms >= b - t && ms <= a, "%lld not in %lld-%lld..%lld",
		          (long long)ms, (long long)b, (long long)t,
		          (long long)a);
		cr_assert(us / 1000 >= b && us / 1000 <= a);
		b = precise_ms(CLOCK_REALTIME);
		wall = clock_wall_ms();
		a = precise_ms(CLOCK_REALTIME);
		cr_assert(wall >= b - t && wall <= a);
		cr_assert_geq(ms, prev_ms);
		cr_assert_gt(us, prev_us);
		prev_ms = ms;
		prev_us = us;
		nanosleep(&nap, NULL);
	}
	/* 20 naps of 3 ms: the coarse clock moved on too (by whole ticks) */
	cr_assert_geq(clock_ms() - first, 40);
}
