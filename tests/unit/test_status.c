/* Unit tests for common/status.c: derived slot states and their rendering
 * (the formatting llmfctl status / show / watch use). */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdio.h>
#include <string.h>

#include "common/buf.h"
#include "common/shm.h"
#include "common/status.h"

#define NOW  1000000 /* monotonic ms */
#define WALL ((int64_t)29000000 * 60000 + 1234)
#define MIN  (WALL / 60000)

static struct slot_sh slots[2];

/* A fresh active slot with a name and configured weight. */
static struct slot_sh *
mkslot(int i)
{
	struct slot_sh *sl = &slots[i];

	memset(sl, 0, sizeof *sl);
	snprintf(sl->name, sizeof sl->name, "dep%d", i);
	snprintf(sl->group, sizeof sl->group, "gpt-4o");
	snprintf(sl->provider, sizeof sl->provider, "openai");
	sl->cfg_weight = 3;
	atomic_store(&sl->live_weight, -1);
	atomic_store(&sl->state, SLOT_ACTIVE);
	return sl;
}

/* State number and text of a slot at NOW / MIN. */
static int
state(const struct slot_sh *sl, char *text)
{
	return status_state(sl, NOW, MIN, text, 32);
}

Test(status, healthy)
{
	char t[32];

	cr_assert(eq(int, state(mkslot(0), t), STATUS_HEALTHY));
	cr_assert(eq(str, t, "healthy"));
	cr_assert(strcmp(status_state_name(STATUS_HEALTHY), "healthy") == 0);
}

Test(status, cooling_rounds_up)
{
	struct slot_sh *sl = mkslot(0);
	char t[32];

	atomic_store(&sl->cooldown_until_ms, NOW + 11001);
	cr_assert(eq(int, state(sl, t), STATUS_COOLING));
	cr_assert(eq(str, t, "cooling 12s"));
	atomic_store(&sl->cooldown_until_ms, NOW);
	cr_assert(eq(int, state(sl, t), STATUS_HEALTHY));
}

Test(status, circuit_open)
{
	struct slot_sh *sl = mkslot(0);
	char t[32];

	atomic_store(&sl->circuit, CIRCUIT_OPEN);
	atomic_store(&sl->circuit_until_ms, NOW + 5000);
	atomic_store(&sl->cooldown_until_ms, NOW + 60000);
	cr_assert(eq(int, state(sl, t), STATUS_CIRCUIT_OPEN));
	cr_assert(eq(str, t, "circuit open 5s"));
	cr_assert(strcmp(status_state_name(STATUS_CIRCUIT_OPEN),
	                 "circuit_open") == 0);
}

Test(status, half_open)
{
	struct slot_sh *sl = mkslot(0);
	char t[32];

	atomic_store(&sl->circuit, CIRCUIT_HALF_OPEN);
	cr_assert(eq(int, state(sl, t), STATUS_HALF_OPEN));
	cr_assert(eq(str, t, "half-open"));
	/* open with an expired window reads as half-open too */
	atomic_store(&sl->circuit, CIRCUIT_OPEN);
	atomic_store(&sl->circuit_until_ms, NOW - 1);
	cr_assert(eq(int, state(sl, t), STATUS_HALF_OPEN));
}

Test(status, rate_limited_only_in_current_minute)
{
	struct slot_sh *sl = mkslot(0);
	char t[32];

	sl->rpm = 10;
	atomic_store(&sl->rate_min, (uint64_t)MIN);
	atomic_store(&sl->req_cur, 9);
	cr_assert(eq(int, state(sl, t), STATUS_HEALTHY));
	atomic_store(&sl->req_cur, 10);
	cr_assert(eq(int, state(sl, t), STATUS_RATE_LIMITED));
	cr_assert(eq(str, t, "at rate limit"));
	atomic_store(&sl->rate_min, (uint64_t)MIN - 1);
	cr_assert(eq(int, state(sl, t), STATUS_HEALTHY));
}

Test(status, token_limited)
{
	struct slot_sh *sl = mkslot(0);
	char t[32];

	sl->tpm = 1000;
	atomic_store(&sl->rate_min, (uint64_t)MIN);
	atomic_store(&sl->tok_cur, 1000);
	cr_assert(eq(int, state(sl, t), STATUS_RATE_LIMITED));
	sl->tpm = 0; /* no limit */
	cr_assert(eq(int, state(sl, t), STATUS_HEALTHY));
}

Test(status, drained_beats_circuit)
{
	struct slot_sh *sl = mkslot(0);
	char t[32];

	atomic_store(&sl->admin, ADMIN_DRAINED);
	atomic_store(&sl->circuit, CIRCUIT_OPEN);
	atomic_store(&sl->circuit_until_ms, NOW + 5000);
	cr_assert(eq(int, state(sl, t), STATUS_DRAINED));
	cr_assert(eq(str, t, "drained"));
}

Test(status, retired_beats_drained)
{
	struct slot_sh *sl = mkslot(0);
	char t[32];

	atomic_store(&sl->admin, ADMIN_DRAINED);
	atomic_store(&sl->state, SLOT_RETIRED);
	cr_assert(eq(int, state(sl, t), STATUS_RETIRED));
	cr_assert(eq(str, t, "retired"));
}

/* Snapshot slot i of the two test slots. */
static void
snap(int i, struct status_row *r)
{
	struct shm s = {.slots = slots};

	status_snapshot(&s, i, NOW, WALL, r);
}

Test(status, snapshot_counts_and_rates)
{
	struct slot_sh *sl = mkslot(0);
	struct status_row r;

	sl->rpm = 500;
	atomic_store(&sl->live_weight, 0);
	atomic_store(&sl->requests, 120);
	atomic_store(&sl->failures[EC_TRANSIENT], 4);
	atomic_store(&sl->failures[EC_AUTH], 1);
	atomic_store(&sl->failures[EC_CANCELLED], 7);
	atomic_store(&sl->inflight[0], 2);
	atomic_store(&sl->inflight[5], 1);
	atomic_store(&sl->rate_min, (uint64_t)MIN);
	atomic_store(&sl->req_cur, 12);
	snap(0, &r);
	cr_assert(eq(u64, r.failures, 5)); /* cancelled excluded */
	cr_assert(eq(i32, r.inflight, 3));
	cr_assert(eq(i32, r.weight, 0));
	cr_assert(eq(int, r.overridden, 1));
	cr_assert(eq(u64, r.rpm_used, 12));
	atomic_store(&sl->rate_min, (uint64_t)MIN - 1);
	snap(0, &r);
	cr_assert(eq(u64, r.rpm_used, 0));
	cr_assert(eq(u64, r.rpm_prev, 12));
}

/* A writer killed mid-update leaves the seqlock odd for good: readers
 * give up after a bounded number of tries and say so. */
Test(status, odd_seq_is_unreadable, .timeout = 5)
{
	struct slot_sh *sl = mkslot(0);
	struct slot_sh cfg;
	struct status_row r;
	char t[32];

	atomic_store(&sl->requests, 7);
	atomic_store(&sl->seq, 3);
	cr_assert(eq(int, shm_read_cfg(sl, &cfg), -1));
	cr_assert(eq(int, state(sl, t), STATUS_UNREADABLE));
	cr_assert(eq(str, t, "unreadable"));
	snap(0, &r);
	cr_assert(eq(int, r.unreadable, 1));
	cr_assert(eq(int, r.state, STATUS_UNREADABLE));
	cr_assert(eq(str, r.name, "(slot 0)"));
	cr_assert(eq(u64, r.requests, 7)); /* counters are still read */
	atomic_store(&sl->seq, 4);
	cr_assert(eq(int, shm_read_cfg(sl, &cfg), 0));
	cr_assert(eq(str, cfg.name, "dep0"));
	snap(0, &r);
	cr_assert(eq(int, r.unreadable, 0));
	cr_assert(eq(str, r.name, "dep0"));
}

Test(status, table_row)
{
	struct slot_sh *sl = mkslot(0);
	struct status_row r;
	struct buf b = {0};

	sl->rpm = 500;
	atomic_store(&sl->live_weight, 3);
	atomic_store(&sl->rate_min, (uint64_t)MIN);
	atomic_store(&sl->req_cur, 12);
	for (int i = 0; i < 10; i++)
		shm_hist_add(&sl->lat, 1000);
	shm_set_error(sl, 503, EC_TRANSIENT, "bad\x1b[2Jgateway");
	snap(0, &r);
	status_table(&b, &r, 1, NULL, 0);
	buf_cstr(&b);
	cr_assert(strstr(b.data, "NAME") == b.data);
	cr_assert(strstr(b.data, " 3* ") != NULL);
	cr_assert(strstr(b.data, " 12/500 ") != NULL);
	cr_assert(strstr(b.data, "bad?[2Jgateway\n") != NULL);
	cr_assert(strchr(b.data, '\x1b') == NULL);
	buf_free(&b);
}

Test(status, table_fits_columns)
{
	struct status_row r;
	struct buf b = {0};
	char *nl;

	mkslot(0);
	shm_set_error(
	    &slots[0], 500, EC_TRANSIENT,
	    "a long upstream error message that does not fit in 100 columns");
	snap(0, &r);
	status_table(&b, &r, 1, NULL, 100);
	buf_cstr(&b);
	nl = strchr(b.data, '\n');
	cr_assert(strlen(nl + 1) <= 100);
	cr_assert(strstr(nl + 1, "...\n") != NULL);
	buf_free(&b);
}

Test(status, json_row)
{
	struct status_row r;
	struct buf b = {0};

	mkslot(1);
	atomic_store(&slots[1].failures[EC_QUOTA], 2);
	shm_set_error(&slots[1], 429, EC_QUOTA, "quota \"exceeded\"\n");
	snap(1, &r);
	status_json_row(&b, &r);
	buf_cstr(&b);
	cr_assert(strstr(b.data, "{\"name\":\"dep1\",") == b.data);
	cr_assert(strstr(b.data, "\"quota\":2") != NULL);
	cr_assert(strstr(b.data, "\"state\":\"healthy\"") != NULL);
	cr_assert(
	    strstr(b.data, "\"last_error\":\"quota \\\"exceeded\\\"\\n\"") !=
	    NULL);
	cr_assert(strstr(b.data, "\"last_error_status\":429}") != NULL);
	buf_free(&b);
}

Test(status, json_escapes)
{
	struct buf b = {0};

	/* the shared JSON escaper: quotes, backslashes and controls escaped,
	 * DEL passed as is (legal JSON), an invalid byte becomes U+FFFD */
	status_json_str(&b, "a\"b\\c\x01\x7f\xff\xc3\xa9");
	buf_cstr(&b);
	cr_assert(
	    eq(str, b.data, "\"a\\\"b\\\\c\\u0001\x7f\xef\xbf\xbd\xc3\xa9\""));
	buf_free(&b);
}

Test(status, printable_cuts_at_utf8)
{
	char out[64];

	status_printable(out, sizeof out, "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9xyz",
	                 5);
	cr_assert(eq(str, out, "\xc3\xa9\xc3\xa9..."));
	status_printable(out, sizeof out, "ok\tno\xc2\x9b", 80);
	cr_assert(eq(str, out, "ok?no?"));
	status_printable(out, 4, "abcdef", 80);
	cr_assert(eq(str, out, "abc"));
}
