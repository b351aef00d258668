/* Clocks. Monotonic time is shared by all processes on the host, so the
 * health table stores deadlines in monotonic milliseconds. */
#ifndef LLMFD_CLOCK_H
#define LLMFD_CLOCK_H

#include <stdint.h>

int64_t clock_ms(void);      /* CLOCK_MONOTONIC_COARSE, ms */
int64_t clock_us(void);      /* CLOCK_MONOTONIC, us */
int64_t clock_wall_ms(void); /* CLOCK_REALTIME_COARSE, ms since the epoch */

#endif
