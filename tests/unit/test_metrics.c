/* Unit tests for worker/metrics.c: the Prometheus text exposition of a
 * synthetic health table (HELP/TYPE once per family, label escaping,
 * cumulative histogram buckets, +Inf == _count). */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/shm.h"
#include "common/status.h"
#include "worker/worker.h"

#define NOW  1000000 /* monotonic ms */
#define WALL ((int64_t)29000000 * 60000 + 1234)

static struct shm_hdr_sh hdr;
static struct slot_sh slots[SHM_NSLOTS];
static struct shm tbl = {.hdr = &hdr, .slots = slots};
static struct buf out;

/* Make slot i an active deployment with a name and group. */
static struct slot_sh *
mkslot(int i, const char *name, const char *group)
{
	struct slot_sh *sl = &slots[i];

	memset(sl, 0, sizeof *sl);
	snprintf(sl->name, sizeof sl->name, "%s", name);
	snprintf(sl->group, sizeof sl->group, "%s", group);
	snprintf(sl->provider, sizeof sl->provider, "openai");
	sl->cfg_weight = 1;
	atomic_store(&sl->live_weight, -1);
	atomic_store(&sl->state, SLOT_ACTIVE);
	return sl;
}

/* Render the table into out (NUL-terminated). */
static const char *
render(void)
{
	buf_reset(&out);
	metrics_render_shm(&tbl, NOW, WALL, &out);
	cr_assert(eq(int, out.oom, 0));
	return buf_cstr(&out);
}

/* Value of the sample line that starts with `series ` (-1 if absent). */
static double
sample(const char *text, const char *series)
{
	size_t n = strlen(series);
	const char *p = text;

	for (; *p; p = strchr(p, '\n') + 1) {
		if (strncmp(p, series, n) == 0 && p[n] == ' ')
			return strtod(p + n + 1, NULL);
		if (strchr(p, '\n') == NULL)
			break;
	}
	return -1;
}

/* Occurrences of a whole line in text. */
static int
count_lines(const char *text, const char *line)
{
	size_t n = strlen(line);
	int c = 0;

	for (const char *p = text; (p = strstr(p, line)) != NULL; p += n)
		if ((p == text || p[-1] == '\n') && p[n] == '\n')
			c++;
	return c;
}

static void
setup(void)
{
	memset(&hdr, 0, sizeof hdr);
	memset(slots, 0, sizeof slots);
	mkslot(0, "oai", "gpt-4o");
	mkslot(3, "claude", "claude");
}

static void
teardown(void)
{
	buf_free(&out);
}

TestSuite(metrics, .init = setup, .fini = teardown);

Test(metrics, seconds_are_exact)
{
	struct buf b = {0};

	metrics_seconds(&b, 250);
	metrics_seconds(&b, 2000000);
	metrics_seconds(&b, 1500000);
	metrics_seconds(&b, (uint64_t)250 << 23);
	metrics_seconds(&b, 0);
	cr_assert(strcmp(buf_cstr(&b), "0.0002521.52097.1520") == 0, "%s",
	          buf_cstr(&b));
	buf_free(&b);
}

Test(metrics, help_and_type_once_per_family)
{
	const char *t = render();
	const char *fams[] = {"llmfd_requests_total",
	                      "llmfd_attempts_total",
	                      "llmfd_attempt_outcomes_total",
	                      "llmfd_deployment_state",
	                      "llmfd_request_duration_seconds",
	                      "llmfd_time_to_first_token_seconds",
	                      "llmfd_config_generation"};
	char line[128];

	for (size_t i = 0; i < sizeof fams / sizeof fams[0]; i++) {
		snprintf(line, sizeof line, "# TYPE %s ", fams[i]);
		cr_assert(strstr(t, line) != NULL, "%s", fams[i]);
		cr_assert(strstr(strstr(t, line) + 1, line) == NULL, "%s",
		          fams[i]);
		snprintf(line, sizeof line, "# HELP %s ", fams[i]);
		cr_assert(strstr(strstr(t, line) + 1, line) == NULL, "%s",
		          fams[i]);
	}
	cr_assert(strstr(t, "# TYPE llmfd_request_duration_seconds "
	                    "histogram\n") != NULL);
}

Test(metrics, samples_follow_their_family)
{
	const char *t = render();
	char fam[128] = "";

	/* every sample line's name starts with the last TYPE'd family */
	for (const char *p = t; *p; p = strchr(p, '\n') + 1) {
		if (strncmp(p, "# TYPE ", 7) == 0)
			sscanf(p + 7, "%127s", fam);
		else if (*p != '#')
			cr_assert(strncmp(p, fam, strlen(fam)) == 0, "%.60s",
			          p);
	}
}

Test(metrics, label_values_are_escaped)
{
	const char *t;

	mkslot(5, "a\"b\\c\nd", "g");
	t = render();
	cr_assert(eq(dbl,
	             sample(t, "llmfd_attempts_total{deployment=\"a\\\"b"
	                       "\\\\c\\nd\",group=\"g\",provider="
	                       "\"openai\"}"),
	             0));
	cr_assert(strstr(t, "c\nd") == NULL);
}

Test(metrics, free_slots_are_skipped)
{
	const char *t = render();

	cr_assert(eq(int,
	             count_lines(t, "llmfd_deployment_state{deployment="
	                            "\"oai\",group=\"gpt-4o\",provider="
	                            "\"openai\"} 0"),
	             1));
	cr_assert(strstr(t, "deployment=\"\"") == NULL);
}

/* A slot left mid-write is counted, not rendered, and does not hang. */
Test(metrics, unreadable_slot_is_left_out, .timeout = 5)
{
	const char *t;

	atomic_store(&slots[3].seq, 1);
	t = render();
	cr_assert(strstr(t, "claude") == NULL);
	cr_assert(strstr(t, "deployment=\"oai\"") != NULL);
	cr_assert(eq(dbl, sample(t, "llmfd_table_unreadable_slots"), 1));
	atomic_store(&slots[3].seq, 2);
	t = render();
	cr_assert(strstr(t, "claude") != NULL);
	cr_assert(eq(dbl, sample(t, "llmfd_table_unreadable_slots"), 0));
}

Test(metrics, histogram_buckets_are_cumulative)
{
	struct slot_sh *sl = &slots[0];
	const char *t;
	const char *l = "{deployment=\"oai\",group=\"gpt-4o\","
	                "provider=\"openai\"";
	char s[256];

	shm_hist_add(&sl->lat, 100);              /* bucket 0 */
	shm_hist_add(&sl->lat, 900);              /* bucket 2 (<=1ms) */
	shm_hist_add(&sl->lat, 1000);             /* bucket 2 */
	shm_hist_add(&sl->lat, (int64_t)1 << 40); /* +Inf */
	t = render();
	snprintf(s, sizeof s,
	         "llmfd_request_duration_seconds_bucket%s,"
	         "le=\"0.00025\"}",
	         l);
	cr_assert(eq(dbl, sample(t, s), 1));
	snprintf(s, sizeof s,
	         "llmfd_request_duration_seconds_bucket%s,"
	         "le=\"0.0005\"}",
	         l);
	cr_assert(eq(dbl, sample(t, s), 1));
	snprintf(s, sizeof s,
	         "llmfd_request_duration_seconds_bucket%s,"
	         "le=\"0.001\"}",
	         l);
	cr_assert(eq(dbl, sample(t, s), 3));
	snprintf(s, sizeof s,
	         "llmfd_request_duration_seconds_bucket%s,"
	         "le=\"2097.152\"}",
	         l);
	cr_assert(eq(dbl, sample(t, s), 3));
	snprintf(s, sizeof s,
	         "llmfd_request_duration_seconds_bucket%s,"
	         "le=\"+Inf\"}",
	         l);
	cr_assert(eq(dbl, sample(t, s), 4));
	snprintf(s, sizeof s, "llmfd_request_duration_seconds_count%s}", l);
	cr_assert(eq(dbl, sample(t, s), 4));
	snprintf(s, sizeof s, "llmfd_request_duration_seconds_sum%s}", l);
	cr_assert(
	    eq(dbl, sample(t, s), (2000.0 + (double)((int64_t)1 << 40)) / 1e6));
}

Test(metrics, inf_equals_count_even_if_count_lags)
{
	struct slot_sh *sl = &slots[3];
	const char *t;
	const char *l = "{deployment=\"claude\",group=\"claude\","
	                "provider=\"openai\"";
	char s[256], c[256];

	/* a writer between the bucket and the count increments */
	atomic_fetch_add(&sl->ttft.b[4], 2);
	t = render();
	snprintf(s, sizeof s,
	         "llmfd_time_to_first_token_seconds_bucket%s,"
	         "le=\"+Inf\"}",
	         l);
	snprintf(c, sizeof c, "llmfd_time_to_first_token_seconds_count%s}", l);
	cr_assert(eq(dbl, sample(t, s), 2));
	cr_assert(eq(dbl, sample(t, c), 2));
}

Test(metrics, counters_state_and_header)
{
	struct slot_sh *sl = &slots[0];
	const char *t;
	const char *l = "{deployment=\"oai\",group=\"gpt-4o\","
	                "provider=\"openai\"";
	char s[256];

	atomic_store(&hdr.requests_total, 42);
	atomic_store(&hdr.generation, 3);
	atomic_store(&hdr.budget_denied, 5);
	atomic_store(&sl->requests, 7);
	atomic_store(&sl->successes, 4);
	atomic_store(&sl->failures[EC_RATE_LIMITED], 3);
	atomic_store(&sl->cooldown_until_ms, NOW + 5000);
	t = render();
	cr_assert(eq(dbl, sample(t, "llmfd_requests_total"), 42));
	cr_assert(eq(dbl, sample(t, "llmfd_config_generation"), 3));
	cr_assert(eq(dbl, sample(t, "llmfd_retry_budget_denied_total"), 5));
	snprintf(s, sizeof s, "llmfd_attempts_total%s}", l);
	cr_assert(eq(dbl, sample(t, s), 7));
	snprintf(s, sizeof s,
	         "llmfd_attempt_outcomes_total%s,class="
	         "\"success\"}",
	         l);
	cr_assert(eq(dbl, sample(t, s), 4));
	snprintf(s, sizeof s,
	         "llmfd_attempt_outcomes_total%s,class="
	         "\"rate_limited\"}",
	         l);
	cr_assert(eq(dbl, sample(t, s), 3));
	snprintf(s, sizeof s, "llmfd_deployment_state%s}", l);
	cr_assert(eq(dbl, sample(t, s), STATUS_COOLING));
}
