#include "common/backoff.h"

/* Next value of a xorshift64* generator. */
uint64_t
rng_next(uint64_t *s)
{
	uint64_t x = *s ? *s : 0x9e3779b97f4a7c15ULL;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545f4914f6cdd1dULL;
}

/* Uniform integer below n (n > 0), by rejection to avoid modulo bias. */
uint64_t
rng_below(uint64_t *s, uint64_t n)
{
	uint64_t lim, r;

	if (n <= 1)
		return 0;
	lim = UINT64_MAX - UINT64_MAX % n;
	do
		r = rng_next(s);
	while (r >= lim);
	return r % n;
}

/* Full-jitter exponential backoff, honouring a longer server hint. */
int64_t
backoff_ms(int base_ms, int max_ms, int retry, int64_t hint_ms, uint64_t *rng)
{
	int64_t cap = base_ms < 0 ? 0 : base_ms;
	int64_t d;

	for (int i = 0; i < retry && cap < max_ms; i++)
		cap *= 2;
	if (cap > max_ms)
		cap = max_ms;
	if (cap < 0)
		cap = 0;
	d = (int64_t)rng_below(rng, (uint64_t)cap + 1);
	if (hint_ms > d)
		d = hint_ms;
	return d;
}
