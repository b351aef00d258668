/* Unit tests for worker/route.c: the pick strategies, cooldown, circuit
 * breaker, rate windows and retry budget on synthetic table states, plus
 * the backoff bounds of common/backoff.c. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/backoff.h"
#include "common/cfg.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/shm.h"
#include "worker/worker.h"

#define DEP(name, group, extra)                                                \
	"  { name = \"" name "\"; group = \"" group "\"; provider = "          \
	"\"openai\"; base_url = \"http://127.0.0.1:9/v1\"; api_key = \"k\"; "  \
	"model = \"m\"; " extra " }"

#define NPICK 10000

static char tdir[64];
static struct cfg *cfg;
static struct shm shm;
static int slot_of[CFG_MAX_DEPLOY];
static struct worker w;
static uint64_t tried[CFG_MAX_DEPLOY / 64];

/* A fresh temp dir per test. */
static void
setup(void)
{
	snprintf(tdir, sizeof tdir, "/tmp/llmfd-route-XXXXXX");
	cr_assert_not_null(mkdtemp(tdir));
	log_init(LOG_LVL_WARN, "test_route");
	memset(tried, 0, sizeof tried);
}

/* Unmap the table, free the config, remove the temp dir. */
static void
teardown(void)
{
	DIR *d = opendir(tdir);
	struct dirent *e;
	char p[PATH_MAX];

	if (shm.hdr)
		shm_detach(&shm);
	if (cfg)
		cfg_free(cfg);
	cfg = NULL;
	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof p, "%s/%s", tdir, e->d_name);
		unlink(p);
	}
	closedir(d);
	rmdir(tdir);
}

TestSuite(route, .init = setup, .fini = teardown);

/* Load a config with the given router body and deployments list, create
 * the table with one slot per deployment (as the master does) and a worker
 * in column 0 with a fixed rng seed. */
static void
start(const char *router, const char *deployments)
{
	char file[PATH_MAX], *cause = NULL;
	FILE *f;

	snprintf(file, sizeof file, "%s/llmfd.conf", tdir);
	cr_assert_not_null(f = fopen(file, "w"));
	fprintf(f,
	        "daemon = { listen = \"s.sock\"; health_table = \"health\"; "
	        "};\nrouter = { %s };\ndeployments = (\n%s\n);\n",
	        router, deployments);
	fclose(f);
	cfg = cfg_load(file, &cause);
	cr_assert_not_null(cfg, "cfg_load: %s", cause ? cause : "?");
	cr_assert_eq(shm_create(&shm, cfg->health_table, &cause), 0,
	             "shm_create: %s", cause ? cause : "?");
	for (int i = 0; i < cfg->ndeploy; i++) {
		struct slot_sh *s = &shm.slots[i];

		shm_write_cfg_begin(s);
		snprintf(s->name, sizeof s->name, "%s", cfg->deploy[i].name);
		snprintf(s->group, sizeof s->group, "%s", cfg->deploy[i].group);
		s->cfg_weight = cfg->deploy[i].weight;
		s->cfg_index = i;
		s->rpm = cfg->deploy[i].rpm;
		s->tpm = cfg->deploy[i].tpm;
		shm_write_cfg_end(s);
		atomic_store(&s->live_weight, -1);
		atomic_store(&s->state, SLOT_ACTIVE);
		slot_of[i] = i;
	}
	memset(&w, 0, sizeof w);
	w.cfg = cfg;
	w.shm = &shm;
	w.slot_of = slot_of;
	w.index = 0;
	w.rng = 0x1234567887654321ULL;
}

/* The group named g. */
static const struct group_cfg *
grp(const char *g)
{
	const struct group_cfg *gc = cfg_find_group(cfg, g);

	cr_assert_not_null(gc, "no group %s", g);
	return gc;
}

/* The slot of deployment index d. */
static struct slot_sh *
sl(int d)
{
	return &shm.slots[slot_of[d]];
}

/* One pick in group g with nothing tried; *probe gets the probe flag. */
static int
pick(const char *g, int *probe)
{
	int64_t soonest;
	int p;

	return route_pick(&w, grp(g), tried, 0, &soonest, probe ? probe : &p);
}

/* One attempt on d that ends with class cls (and a retry-after hint). */
static void
attempt(int d, enum errclass cls, int64_t ra_ms)
{
	route_attempt_start(&w, d);
	route_attempt_end(&w, d, cls, 1000, -1, NULL, ra_ms,
	                  cls == EC_OK ? NULL : "boom",
	                  cls == EC_OK ? 200 : 503);
}

/* Count picks per deployment over n picks of group g. */
static void
count_picks(const char *g, int n, int *counts)
{
	for (int i = 0; i < n; i++) {
		int d = pick(g, NULL);

		cr_assert_geq(d, 0, "pick %d returned -1", i);
		counts[d]++;
	}
}

/* Set d's current-minute request count (and the minute, so no rotation). */
static void
set_rpm_used(int d, uint64_t n)
{
	/* keep the test away from a minute boundary */
	while (clock_wall_ms() % 60000 > 58500)
		usleep(100000);
	atomic_store(&sl(d)->rate_min, (uint64_t)(clock_wall_ms() / 60000));
	atomic_store(&sl(d)->req_cur, n);
}

/* Weighted picks follow the weights 3:1 within 2 percentage points. */
Test(route, weighted_distribution_follows_weights)
{
	int c[3] = {0};

	start("strategy = \"weighted\";",
	      DEP("a", "g", "weight = 3;") ",\n" DEP("b", "g", "weight = 1;"));
	count_picks("g", NPICK, c);
	double share = (double)c[0] / NPICK;
	cr_assert(share > 0.73 && share < 0.77, "a got %.3f, want 0.75", share);
}

/* A deployment with weight 0 (configured or live) never takes traffic. */
Test(route, weight_zero_takes_no_traffic)
{
	int c[3] = {0};

	start("strategy = \"weighted\";",
	      DEP("a", "g", "weight = 2;") ",\n" DEP(
	          "b", "g", "weight = 0;") ",\n" DEP("c", "g", "weight = 1;"));
	count_picks("g", NPICK, c);
	cr_assert_eq(c[1], 0, "weight 0 picked %d times", c[1]);
	atomic_store(&sl(2)->live_weight, 0);
	memset(c, 0, sizeof c);
	count_picks("g", 1000, c);
	cr_assert_eq(c[0], 1000, "live weight 0 ignored: %d %d %d", c[0], c[1],
	             c[2]);
}

/* Weighted picks use the live weight and exclude a cooling deployment. */
Test(route, weighted_live_weight_and_unhealthy_excluded)
{
	int c[2] = {0};

	start("strategy = \"weighted\";",
	      DEP("a", "g", "weight = 1;") ",\n" DEP("b", "g", "weight = 1;"));
	atomic_store(&sl(1)->live_weight, 9);
	count_picks("g", NPICK, c);
	double share = (double)c[1] / NPICK;
	cr_assert(share > 0.88 && share < 0.92, "b got %.3f, want 0.9", share);
	atomic_store(&sl(1)->cooldown_until_ms, clock_ms() + 60000);
	memset(c, 0, sizeof c);
	count_picks("g", 1000, c);
	cr_assert_eq(c[0], 1000, "cooling b picked %d times", c[1]);
}

/* Least-busy picks the fewest in-flight summed over every worker column. */
Test(route, least_busy_picks_min_inflight)
{
	int c[3] = {0};

	start(
	    "strategy = \"least-busy\";",
	    DEP("a", "g", "") ",\n" DEP("b", "g", "") ",\n" DEP("c", "g", ""));
	atomic_store(&sl(0)->inflight[0], 1);
	atomic_store(&sl(0)->inflight[1], 1);
	atomic_store(&sl(1)->inflight[3], 3);
	atomic_store(&sl(2)->inflight[0], 1);
	atomic_store(&sl(2)->inflight[5], 2);
	count_picks("g", 100, c);
	cr_assert_eq(c[0], 100, "picks %d %d %d", c[0], c[1], c[2]);
}

/* Least-busy breaks ties at random among the least busy. */
Test(route, least_busy_ties_random)
{
	int c[3] = {0};

	start(
	    "strategy = \"least-busy\";",
	    DEP("a", "g", "") ",\n" DEP("b", "g", "") ",\n" DEP("c", "g", ""));
	atomic_store(&sl(1)->inflight[0], 1);
	count_picks("g", 1000, c);
	cr_assert_eq(c[1], 0);
	cr_assert(c[0] > 400 && c[2] > 400, "ties %d %d", c[0], c[2]);
}

/* Latency picks randomly inside the latency_buffer band above the fastest,
 * never outside it. */
Test(route, latency_band)
{
	int c[3] = {0};

	start(
	    "strategy = \"latency\"; latency_buffer = 0.1;",
	    DEP("a", "g", "") ",\n" DEP("b", "g", "") ",\n" DEP("c", "g", ""));
	atomic_store(&sl(0)->lat_ewma_us, 100000);
	atomic_store(&sl(1)->lat_ewma_us, 109000);
	atomic_store(&sl(2)->lat_ewma_us, 111000);
	count_picks("g", 1000, c);
	cr_assert_eq(c[2], 0, "outside the band picked %d times", c[2]);
	cr_assert(c[0] > 400 && c[1] > 400, "band %d %d", c[0], c[1]);
}

/* Latency explores an unsampled deployment before using the samples. */
Test(route, latency_explores_unsampled)
{
	int c[3] = {0};

	start(
	    "strategy = \"latency\";",
	    DEP("a", "g", "") ",\n" DEP("b", "g", "") ",\n" DEP("c", "g", ""));
	atomic_store(&sl(0)->lat_ewma_us, 1000);
	atomic_store(&sl(1)->lat_ewma_us, 900000);
	count_picks("g", 50, c);
	cr_assert_eq(c[2], 50, "unsampled c picked %d of 50", c[2]);
	attempt(2, EC_OK, -1);
	cr_assert_eq(atomic_load(&sl(2)->lat_ewma_us), 1000);
	atomic_store(&sl(2)->lat_ewma_us, 500000);
	memset(c, 0, sizeof c);
	count_picks("g", 50, c);
	cr_assert_eq(c[0], 50, "fastest a picked %d of 50", c[0]);
}

/* A success records the latency EWMA that the latency strategy uses. */
Test(route, latency_ewma_recorded)
{
	start("strategy = \"latency\";", DEP("a", "g", ""));
	route_attempt_start(&w, 0);
	route_attempt_end(&w, 0, EC_OK, 80000, -1, NULL, -1, NULL, 200);
	cr_assert_eq(atomic_load(&sl(0)->lat_ewma_us), 80000);
	route_attempt_start(&w, 0);
	route_attempt_end(&w, 0, EC_OK, 900000, 8000, NULL, -1, NULL, 200);
	cr_assert_eq(atomic_load(&sl(0)->lat_ewma_us), 80000 - 10000 + 1000,
	             "a stream's TTFT feeds the EWMA");
	cr_assert_eq(atomic_load(&sl(0)->inflight[0]), 0);
}

/* Usage picks the most headroom against rpm this minute, and each pick
 * reserves one request of it. */
Test(route, usage_most_headroom)
{
	start("strategy = \"usage\";",
	      DEP("a", "g", "rpm = 10;") ",\n" DEP("b", "g", "rpm = 100;"));
	set_rpm_used(0, 2);  /* 80 % left */
	set_rpm_used(1, 50); /* 50 % left */
	cr_assert_eq(pick("g", NULL), 0);
	cr_assert_eq(atomic_load(&sl(0)->req_cur), 3, "pick did not reserve");
	set_rpm_used(0, 6); /* 40 % left */
	cr_assert_eq(pick("g", NULL), 1);
	cr_assert_eq(atomic_load(&sl(1)->req_cur), 51);
}

/* Usage also counts tokens against tpm. */
Test(route, usage_tpm_headroom)
{
	start("strategy = \"usage\";",
	      DEP("a", "g", "tpm = 1000;") ",\n" DEP("b", "g", "tpm = 1000;"));
	set_rpm_used(0, 0);
	set_rpm_used(1, 0);
	atomic_store(&sl(0)->tok_cur, 900);
	atomic_store(&sl(1)->tok_cur, 100);
	for (int i = 0; i < 20; i++)
		cr_assert_eq(pick("g", NULL), 1);
	atomic_store(&sl(1)->tok_cur, 1000); /* at tpm: skipped */
	cr_assert_eq(pick("g", NULL), 0);
}

/* The rpm limit is a reservation: exactly rpm picks this minute, then -1
 * with the next minute as the soonest recovery. */
Test(route, rpm_reservation_limit)
{
	int64_t soonest;
	int probe;

	start("strategy = \"ordered\";", DEP("a", "g", "rpm = 3;"));
	set_rpm_used(0, 0);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(pick("g", NULL), 0, "pick %d", i);
	cr_assert_eq(route_pick(&w, grp("g"), tried, 0, &soonest, &probe), -1);
	cr_assert_eq(atomic_load(&sl(0)->req_cur), 3);
	int64_t left = soonest - clock_ms();
	cr_assert(left > 0 && left <= 60000, "soonest in %lld ms",
	          (long long)left);
	/* a new minute starts with a fresh count */
	atomic_store(&sl(0)->rate_min, (uint64_t)(clock_wall_ms() / 60000) - 1);
	cr_assert_eq(pick("g", NULL), 0);
	cr_assert_eq(atomic_load(&sl(0)->req_prev), 3);
	cr_assert_eq(atomic_load(&sl(0)->req_cur), 1);
}

/* Ordered falls through to the next deployment once the first is tried,
 * and -1 when all are. */
Test(route, tried_excluded)
{
	int64_t soonest;
	int probe;

	start("strategy = \"ordered\";",
	      DEP("a", "g", "") ",\n" DEP("b", "g", ""));
	cr_assert_eq(pick("g", NULL), 0);
	tried[0] |= 1;
	cr_assert_eq(pick("g", NULL), 1);
	tried[0] |= 2;
	cr_assert_eq(route_pick(&w, grp("g"), tried, 0, &soonest, &probe), -1);
	cr_assert_eq(soonest, 0);
}

/* A request estimated over context_window skips that deployment. */
Test(route, context_window_skip)
{
	int64_t soonest;
	int probe;

	start("",
	      DEP("a", "g", "context_window = 10;") ",\n" DEP("b", "g", ""));
	cr_assert_eq(route_pick(&w, grp("g"), tried, 50, &soonest, &probe), 1);
	cr_assert_eq(route_pick(&w, grp("g"), tried, 10, &soonest, &probe), 0);
}

/* Cooldown starts at allowed_fails + 1 failures, not before. */
Test(route, cooldown_after_allowed_fails)
{
	start("allowed_fails = 2; cooldown_s = 5; circuit_failure_threshold = "
	      "100;",
	      DEP("a", "g", "") ",\n" DEP("b", "g", ""));
	attempt(0, EC_TRANSIENT, -1);
	attempt(0, EC_TRANSIENT, -1);
	cr_assert_leq(atomic_load(&sl(0)->cooldown_until_ms), clock_ms());
	cr_assert_eq(pick("g", NULL), 0);
	int64_t t0 = clock_ms();
	attempt(0, EC_TRANSIENT, -1);
	int64_t until = atomic_load(&sl(0)->cooldown_until_ms);
	cr_assert(until >= t0 + 5000 && until <= clock_ms() + 5000,
	          "until %lld, now %lld", (long long)until, (long long)t0);
	cr_assert_eq(atomic_load(&sl(0)->cooldowns), 1);
	for (int i = 0; i < 20; i++)
		cr_assert_eq(pick("g", NULL), 1);
}

/* Classes that are the request's fault never cool a deployment down. */
Test(route, bad_request_does_not_cool)
{
	start("allowed_fails = 0; cooldown_s = 5;", DEP("a", "g", ""));
	attempt(0, EC_BAD_REQUEST, -1);
	attempt(0, EC_CONTEXT_WINDOW, -1);
	attempt(0, EC_CONTENT_POLICY, -1);
	cr_assert_eq(atomic_load(&sl(0)->cooldown_until_ms), 0);
	cr_assert_eq(atomic_load(&sl(0)->consec_fail), 0);
	cr_assert_eq(pick("g", NULL), 0);
}

/* A longer retry-after sets the cooldown length. */
Test(route, cooldown_honours_longer_retry_after)
{
	start("allowed_fails = 0; cooldown_s = 2; circuit_failure_threshold = "
	      "100;",
	      DEP("a", "g", ""));
	attempt(0, EC_RATE_LIMITED, 20000);
	int64_t left = atomic_load(&sl(0)->cooldown_until_ms) - clock_ms();
	cr_assert(left > 19000 && left <= 20000, "left %lld", (long long)left);
}

/* A failure during cooldown extends it. */
Test(route, cooldown_extended_by_failure)
{
	start("allowed_fails = 0; cooldown_s = 5; circuit_failure_threshold = "
	      "100;",
	      DEP("a", "g", ""));
	attempt(0, EC_TRANSIENT, -1);
	atomic_store(&sl(0)->cooldown_until_ms, clock_ms() + 1000);
	attempt(0, EC_TRANSIENT, -1);
	int64_t left = atomic_load(&sl(0)->cooldown_until_ms) - clock_ms();
	cr_assert(left > 4000 && left <= 5000, "left %lld", (long long)left);
	cr_assert_eq(atomic_load(&sl(0)->cooldowns), 1,
	             "an extension counted as a new cooldown");
}

/* A cooldown in the past no longer excludes the deployment. */
Test(route, cooldown_expires)
{
	int64_t soonest;
	int probe;

	start("allowed_fails = 0; cooldown_s = 30; circuit_failure_threshold "
	      "= 100;",
	      DEP("a", "g", ""));
	attempt(0, EC_TRANSIENT, -1);
	cr_assert_eq(route_pick(&w, grp("g"), tried, 0, &soonest, &probe), -1);
	int64_t until = atomic_load(&sl(0)->cooldown_until_ms);
	cr_assert_eq(soonest, until, "soonest %lld, cooldown until %lld",
	             (long long)soonest, (long long)until);
	atomic_store(&sl(0)->cooldown_until_ms, clock_ms() - 1);
	cr_assert_eq(pick("g", NULL), 0);
}

/* Drained deployments are skipped without a recovery time. */
Test(route, drained_skipped)
{
	int64_t soonest;
	int probe;

	start("", DEP("a", "g", ""));
	atomic_store(&sl(0)->admin, ADMIN_DRAINED);
	cr_assert_eq(route_pick(&w, grp("g"), tried, 0, &soonest, &probe), -1);
	cr_assert_eq(soonest, 0);
}

/* The circuit opens at exactly circuit_failure_threshold consecutive
 * failures, and a success in between resets the streak. */
Test(route, circuit_opens_at_threshold)
{
	int64_t soonest;
	int probe;

	start("allowed_fails = 1000; circuit_failure_threshold = 3; "
	      "circuit_recovery_s = 2; circuit_max_s = 8;",
	      DEP("a", "g", ""));
	attempt(0, EC_TRANSIENT, -1);
	attempt(0, EC_TRANSIENT, -1);
	attempt(0, EC_OK, -1);
	attempt(0, EC_TRANSIENT, -1);
	attempt(0, EC_TRANSIENT, -1);
	cr_assert_eq(atomic_load(&sl(0)->circuit), CIRCUIT_CLOSED);
	attempt(0, EC_TRANSIENT, -1);
	cr_assert_eq(atomic_load(&sl(0)->circuit), CIRCUIT_OPEN);
	cr_assert_eq(atomic_load(&sl(0)->circuit_window_ms), 2000);
	cr_assert_eq(route_pick(&w, grp("g"), tried, 0, &soonest, &probe), -1);
	int64_t left = soonest - clock_ms();
	cr_assert(left > 1000 && left <= 2000, "soonest in %lld",
	          (long long)left);
}

/* Open the circuit of d by threshold failures and make it due now. */
static void
open_due(int d, int n)
{
	for (int i = 0; i < n; i++)
		attempt(d, EC_TRANSIENT, -1);
	cr_assert_eq(atomic_load(&sl(d)->circuit), CIRCUIT_OPEN);
	atomic_store(&sl(d)->circuit_until_ms, clock_ms() - 1);
}

/* Once due, exactly one pick takes the half-open probe; a second pick
 * while it is out gets another deployment, or -1 alone. */
Test(route, half_open_probe_taken_once)
{
	int probe, d;

	start("strategy = \"ordered\"; allowed_fails = 1000; "
	      "circuit_failure_threshold = 2; circuit_recovery_s = 1;",
	      DEP("a", "g", "") ",\n" DEP("b", "g", "") ",\n" DEP("solo", "s",
	                                                          ""));
	open_due(0, 2);
	cr_assert_eq(pick("g", &probe), 0);
	cr_assert_eq(probe, 1);
	cr_assert_eq(atomic_load(&sl(0)->circuit), CIRCUIT_HALF_OPEN);
	for (int i = 0; i < 10; i++) {
		d = pick("g", &probe);
		cr_assert_eq(d, 1, "second pick while half-open got %d", d);
		cr_assert_eq(probe, 0);
	}
	open_due(2, 2);
	cr_assert_eq(pick("s", &probe), 2);
	cr_assert_eq(probe, 1);
	cr_assert_eq(pick("s", &probe), -1, "half-open probe taken twice");
	cr_assert_eq(probe, 0);
}

/* A successful probe closes the circuit. */
Test(route, half_open_success_closes)
{
	int probe;

	start("allowed_fails = 1000; circuit_failure_threshold = 2; "
	      "circuit_recovery_s = 1;",
	      DEP("a", "g", ""));
	open_due(0, 2);
	cr_assert_eq(pick("g", &probe), 0);
	cr_assert_eq(probe, 1);
	attempt(0, EC_OK, -1);
	cr_assert_eq(atomic_load(&sl(0)->circuit), CIRCUIT_CLOSED);
	cr_assert_eq(atomic_load(&sl(0)->circuit_window_ms), 0);
	cr_assert_eq(atomic_load(&sl(0)->consec_fail), 0);
	cr_assert_eq(pick("g", &probe), 0);
	cr_assert_eq(probe, 0);
}

/* A failed probe re-opens with the window doubled, up to circuit_max_s. */
Test(route, half_open_failure_doubles_to_cap)
{
	static const int64_t want[] = {2000, 4000, 5000, 5000};
	int probe;

	start("allowed_fails = 1000; circuit_failure_threshold = 2; "
	      "circuit_recovery_s = 1; circuit_max_s = 5;",
	      DEP("a", "g", ""));
	open_due(0, 2);
	cr_assert_eq(atomic_load(&sl(0)->circuit_window_ms), 1000);
	for (int i = 0; i < 4; i++) {
		cr_assert_eq(pick("g", &probe), 0);
		cr_assert_eq(probe, 1);
		int64_t t0 = clock_ms();
		attempt(0, EC_TRANSIENT, -1);
		cr_assert_eq(atomic_load(&sl(0)->circuit), CIRCUIT_OPEN);
		cr_assert_eq(atomic_load(&sl(0)->circuit_window_ms), want[i]);
		int64_t until = atomic_load(&sl(0)->circuit_until_ms);
		cr_assert(until >= t0 + want[i] &&
		          until <= clock_ms() + want[i]);
		atomic_store(&sl(0)->circuit_until_ms, clock_ms() - 1);
	}
	cr_assert_eq(atomic_load(&sl(0)->circuit_opens), 5);
}

/* A cancelled probe gives the probe back for the next request. */
Test(route, cancelled_probe_given_back)
{
	int probe;

	start("allowed_fails = 1000; circuit_failure_threshold = 2;",
	      DEP("a", "g", ""));
	open_due(0, 2);
	cr_assert_eq(pick("g", &probe), 0);
	cr_assert_eq(probe, 1);
	attempt(0, EC_CANCELLED, -1);
	cr_assert_eq(pick("g", &probe), 0, "cancelled probe not given back");
	cr_assert_eq(probe, 1);
}

/* Skips for cooling, an open circuit or a full rpm are counted. */
Test(route, skips_counted)
{
	start("strategy = \"ordered\";",
	      DEP("a", "g", "") ",\n" DEP("b", "g",
	                                  "rpm = 1;") ",\n" DEP("c", "g", ""));
	atomic_store(&sl(0)->cooldown_until_ms, clock_ms() + 60000);
	set_rpm_used(1, 1);
	cr_assert_eq(pick("g", NULL), 2);
	cr_assert_eq(atomic_load(&sl(0)->skipped), 1);
	cr_assert_eq(atomic_load(&sl(1)->skipped), 1);
}

/* The retry budget allows ratio * recent requests + floor, then denies. */
Test(route, retry_budget_cap)
{
	start("retry_budget_ratio = 0.5; retry_budget_floor = 2;",
	      DEP("a", "g", ""));
	while (clock_wall_ms() % 60000 > 58500)
		usleep(100000);
	for (int i = 0; i < 10; i++)
		route_count_request(&w, 0);
	for (int i = 0; i < 7; i++)
		cr_assert_eq(route_retry_allowed(&w), 1, "retry %d denied", i);
	cr_assert_eq(route_retry_allowed(&w), 0);
	cr_assert_eq(atomic_load(&shm.hdr->budget_denied), 1);
	route_count_request(&w, 0);
	route_count_request(&w, 0);
	cr_assert_eq(route_retry_allowed(&w), 1, "budget did not grow");
	cr_assert_eq(route_retry_allowed(&w), 0);
}

/* Ratio 0 leaves exactly the floor. */
Test(route, retry_budget_floor_only)
{
	start("retry_budget_ratio = 0; retry_budget_floor = 2;",
	      DEP("a", "g", ""));
	for (int i = 0; i < 100; i++)
		route_count_request(&w, 0);
	cr_assert_eq(route_retry_allowed(&w), 1);
	cr_assert_eq(route_retry_allowed(&w), 1);
	cr_assert_eq(route_retry_allowed(&w), 0);
}

/* Backoff stays in [0, min(max, base * 2^retry)] and spreads over it. */
Test(route, backoff_bounds_and_jitter)
{
	uint64_t rng = 42;

	for (int retry = 0; retry < 8; retry++) {
		int64_t cap = 100LL << retry, lo = INT64_MAX, hi = -1;

		if (cap > 2000)
			cap = 2000;
		for (int i = 0; i < 2000; i++) {
			int64_t d = backoff_ms(100, 2000, retry, -1, &rng);

			cr_assert(d >= 0 && d <= cap, "retry %d: %lld > %lld",
			          retry, (long long)d, (long long)cap);
			lo = d < lo ? d : lo;
			hi = d > hi ? d : hi;
		}
		cr_assert(lo <= cap / 10 && hi >= cap * 9 / 10,
		          "retry %d: range [%lld, %lld] of %lld", retry,
		          (long long)lo, (long long)hi, (long long)cap);
	}
}

/* A longer server hint replaces the jitter; a shorter one does not. */
Test(route, backoff_hint)
{
	uint64_t rng = 7;

	for (int i = 0; i < 100; i++)
		cr_assert_eq(backoff_ms(100, 1000, 0, 5000, &rng), 5000);
	for (int i = 0; i < 100; i++) {
		int64_t d = backoff_ms(100, 1000, 3, 1, &rng);
		cr_assert(d >= 1 && d <= 800);
	}
	cr_assert_eq(backoff_ms(0, 1000, 5, -1, &rng), 0);
}

/* The forced try of an only member passes its cooldown but nothing else:
 * not a full rpm, the context window, an open circuit or a drain. */
Test(route, force_only_past_cooldown)
{
	int probe;

	start("allowed_fails = 1000; circuit_failure_threshold = 2;",
	      DEP("a", "g", "rpm = 2; context_window = 100;"));
	set_rpm_used(0, 0);
	atomic_store(&sl(0)->cooldown_until_ms, clock_ms() + 60000);
	cr_assert_eq(pick("g", NULL), -1);
	cr_assert_eq(route_force(&w, 0, 10, &probe), 0);
	cr_assert_eq(probe, 0);
	cr_assert_eq(atomic_load(&sl(0)->req_cur), 1, "rpm not reserved");
	cr_assert_eq(route_force(&w, 0, 500, &probe), -1, "context ignored");
	atomic_store(&sl(0)->admin, ADMIN_DRAINED);
	cr_assert_eq(route_force(&w, 0, 10, &probe), -1, "drain ignored");
	atomic_store(&sl(0)->admin, ADMIN_ACTIVE);
	cr_assert_eq(route_force(&w, 0, 10, &probe), 0);
	cr_assert_eq(route_force(&w, 0, 10, &probe), -1, "rpm ignored");
	set_rpm_used(0, 0);
	attempt(0, EC_TRANSIENT, -1);
	attempt(0, EC_TRANSIENT, -1);
	cr_assert_eq(route_force(&w, 0, 10, &probe), -1,
	             "open circuit ignored");
	atomic_store(&sl(0)->circuit_until_ms, clock_ms() - 1);
	cr_assert_eq(route_force(&w, 0, 10, &probe), 0);
	cr_assert_eq(probe, 1);
	cr_assert_eq(route_force(&w, 0, 10, &probe), -1, "second probe");
}
