#include <time.h>

#include "common/clock.h"

/* Monotonic milliseconds: CLOCK_MONOTONIC_COARSE, the clock libevent's own
 * timers run on (one kernel tick, 1-4 ms, behind the precise one). A
 * request reads it for its deadlines, backoffs and cooldowns about ten
 * times; the precise clock costs three times as much to read (rdtsc). */
int64_t
clock_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Monotonic microseconds, precise: latencies and time to first token. */
int64_t
clock_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Wall-clock milliseconds since the epoch (coarse, as clock_ms: rate and
 * spend minutes, log and Date stamps). */
int64_t
clock_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME_COARSE, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
