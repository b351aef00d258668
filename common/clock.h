/* Clocks. Monotonic time is shared by all processes on the host, so the
 * health table stores deadlines in monotonic milliseconds. */
#ifndef LLMFD_CLOCK_H
#define LLMFD_CLOCK_H

#include <stdint.h>

struct event_base;

int64_t clock_ms(void);      /* CLOCK_MONOTONIC, ms */
int64_t clock_us(void);      /* CLOCK_MONOTONIC, us */
int64_t clock_wall_ms(void); /* CLOCK_REALTIME, ms since the epoch */

/* Read the clocks once per iteration of base's event loop (a worker's:
 * a request reads them a dozen times); NULL: on every call. */
void clock_loop(struct event_base *base);

#endif
