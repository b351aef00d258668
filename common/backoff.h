/* Retry delays: exponential backoff with full jitter, and a small PRNG. */
#ifndef LLMFD_BACKOFF_H
#define LLMFD_BACKOFF_H

#include <stdint.h>

/* xorshift64*; never seed with 0. */
uint64_t rng_next(uint64_t *state);
/* Uniform in [0, n). */
uint64_t rng_below(uint64_t *state, uint64_t n);

/* Delay before retry number `retry` (0 = first retry): uniform in
 * [0, min(max_ms, base_ms * 2^retry)]. A server hint (>= 0) replaces the
 * jittered value when it is longer. */
int64_t backoff_ms(int base_ms, int max_ms, int retry, int64_t hint_ms,
                   uint64_t *rng);

#endif
