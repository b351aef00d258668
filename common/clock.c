#include <event2/event.h>
#include <sys/time.h>
#include <time.h>

#include "common/clock.h"

/* The event loop whose iterations the clock is cached for (clock_loop),
 * the iteration's key (libevent's cached time) and monotonic reading. */
static struct event_base *loop;
static struct timeval loop_key;
static int64_t loop_us;

/* See clock.h. */
void
clock_loop(struct event_base *base)
{
	loop = base;
	loop_key = (struct timeval){0, 0};
}

static int64_t
mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Monotonic microseconds. In a loop's callbacks, read once per iteration:
 * libevent caches the time it woke up at (as it does for its own timers),
 * and that time changes from one iteration to the next, so it keys the
 * reading; outside callbacks it is the current time, which keys a fresh
 * reading whenever a microsecond has passed. */
int64_t
clock_us(void)
{
	struct timeval tv;

	if (loop == NULL)
		return mono_us();
	event_base_gettimeofday_cached(loop, &tv);
	if (tv.tv_sec != loop_key.tv_sec || tv.tv_usec != loop_key.tv_usec) {
		loop_key = tv;
		loop_us = mono_us();
	}
	return loop_us;
}

/* Monotonic milliseconds. */
int64_t
clock_ms(void)
{
	return clock_us() / 1000;
}

/* Wall-clock milliseconds since the epoch (in a loop's callbacks, the
 * time the iteration woke up). */
int64_t
clock_wall_ms(void)
{
	struct timespec ts;
	struct timeval tv;

	if (loop != NULL) {
		event_base_gettimeofday_cached(loop, &tv);
		return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
