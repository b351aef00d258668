/* Unit tests for common/clock.c: in an event loop's callbacks (clock_loop)
 * the clocks read once per loop iteration; outside them, and without
 * clock_loop, on every call. */
#include <criterion/criterion.h>
#include <event2/event.h>
#include <stdint.h>
#include <time.h>

#include "common/clock.h"

/* What the callbacks saw. */
static int64_t first_a, first_b, second, wall_a, wall_b;

/* Sleep ms milliseconds (the clock has moved on after it). */
static void
nap(int ms)
{
	struct timespec ts = {0, ms * 1000000L};

	nanosleep(&ts, NULL);
}

/* The first iteration: two readings around a nap, then a timer for a
 * later iteration (arg). */
static void
first_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct timeval ms = {0, 1000};

	(void)fd;
	(void)ev;
	first_a = clock_us();
	wall_a = clock_wall_ms();
	nap(3);
	first_b = clock_us();
	wall_b = clock_wall_ms();
	evtimer_add((struct event *)arg, &ms);
}

static void
second_cb(evutil_socket_t fd, short ev, void *arg)
{
	(void)fd;
	(void)ev;
	(void)arg;
	second = clock_us();
}

/* The config a worker uses: precise monotonic time in libevent's cache. */
static struct event_base *
precise_base(void)
{
	struct event_config *ec = event_config_new();
	struct event_base *b;

	event_config_set_flag(ec, EVENT_BASE_FLAG_PRECISE_TIMER);
	b = event_base_new_with_config(ec);
	event_config_free(ec);
	return b;
}

Test(clock, once_per_loop_iteration)
{
	struct event_base *b = precise_base();
	struct timeval t1 = {0, 1000};
	struct event *e1, *e2;
	int64_t before, after;

	cr_assert(b != NULL);
	e2 = evtimer_new(b, second_cb, NULL);
	e1 = evtimer_new(b, first_cb, e2);
	evtimer_add(e1, &t1);
	clock_loop(b);
	before = clock_us();
	event_base_dispatch(b);
	after = clock_us();
	/* one iteration: one reading, however long the callback takes */
	cr_assert_eq(first_a, first_b);
	cr_assert_eq(wall_a, wall_b);
	/* the next iteration reads again; outside callbacks, every call */
	cr_assert_gt(first_a, before);
	cr_assert_geq(second - first_a, 3000);
	cr_assert_gt(after, second);
	cr_assert_geq(clock_ms(), after / 1000);
	/* without a loop, every call reads the clock */
	clock_loop(NULL);
	before = clock_us();
	nap(2);
	cr_assert_geq(clock_us() - before, 2000);
	event_free(e1);
	event_free(e2);
	event_base_free(b);
}
