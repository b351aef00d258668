/* Fleet sharing without Redis: grant sizing, the limits workers enforce,
 * stored value parsing, and the fleet config section. */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/cfg.h"
#include "common/fleet.h"
#include "common/secret.h"
#include "common/shm.h"

TestSuite(fleet);

Test(fleet, parse_values)
{
	int64_t v[4];
	char host[64];

	cr_assert_eq(fleet_parse("123 ha", 6, v, 1, host, sizeof host), 1);
	cr_assert_eq(v[0], 123);
	cr_assert_str_eq(host, "ha");
	/* a host id may start with a digit */
	cr_assert_eq(
	    fleet_parse("5 1 9 -1 10.0.0.1:42", 20, v, 4, host, sizeof host),
	    4);
	cr_assert(v[0] == 5 && v[1] == 1 && v[2] == 9 && v[3] == -1);
	cr_assert_str_eq(host, "10.0.0.1:42");
	cr_assert_eq(fleet_parse("7", 1, v, 1, host, sizeof host), 1);
	cr_assert_str_eq(host, "");
	/* the length bounds the text (Redis replies are not terminated) */
	cr_assert_eq(fleet_parse("77 hostXYZ", 4, v, 1, host, sizeof host), 1);
	cr_assert_str_eq(host, "h");
	cr_assert_eq(fleet_parse("x 1", 3, v, 1, host, sizeof host), -1);
	cr_assert_eq(fleet_parse("1", 1, v, 2, host, sizeof host), -1);
	cr_assert_eq(fleet_parse("1,2", 3, v, 2, host, sizeof host), -1);
	cr_assert_eq(fleet_parse("1 a b", 5, v, 1, host, sizeof host), -1);
	cr_assert_eq(
	    fleet_parse("99999999999999999999", 20, v, 1, host, sizeof host),
	    -1);
	cr_assert_eq(fleet_parse("1 abcdefgh", 10, v, 1, host, 4), -1);
	cr_assert_eq(fleet_parse("", 0, v, 1, host, sizeof host), -1);
}

/* A zeroed header and slot in fleet state st with n hosts. */
static void
table(struct shm_hdr_sh *h, struct slot_sh *s, uint32_t st, uint32_t n)
{
	memset(h, 0, sizeof *h);
	memset(s, 0, sizeof *s);
	atomic_store(&h->fleet_state, st);
	atomic_store(&h->fleet_nhosts, n);
}

Test(fleet, limits_by_state)
{
	static struct shm_hdr_sh h;
	static struct slot_sh s;
	uint64_t r, t;

	table(&h, &s, FLEET_OFF, 3);
	fleet_limits(&h, &s, 60, 0, 7, &r, &t);
	cr_assert(r == 60 && t == UINT64_MAX);
	/* down: a fair share, rounded up */
	table(&h, &s, FLEET_DOWN, 3);
	fleet_limits(&h, &s, 61, 1000, 7, &r, &t);
	cr_assert(r == 21 && t == 334, "%llu %llu", (unsigned long long)r,
	          (unsigned long long)t);
	/* up: the grant plus limit / (20 * hosts) */
	table(&h, &s, FLEET_UP, 3);
	fleet_set_caps(&s, 7, 10, 0);
	fleet_limits(&h, &s, 60, 0, 7, &r, &t);
	cr_assert(r == 11 && t == UINT64_MAX, "%llu", (unsigned long long)r);
	fleet_limits(&h, &s, 6000, 0, 7, &r, &t);
	cr_assert_eq(r, 110);
	/* never above the configured limit */
	fleet_set_caps(&s, 7, 60, 0);
	fleet_limits(&h, &s, 60, 0, 7, &r, &t);
	cr_assert_eq(r, 60);
	/* no grant for this minute yet: the fair share */
	fleet_limits(&h, &s, 60, 0, 8, &r, &t);
	cr_assert_eq(r, 20);
	/* the next minute's grant sits in the other pair */
	fleet_set_caps(&s, 8, 4, 0);
	fleet_limits(&h, &s, 60, 0, 8, &r, &t);
	cr_assert_eq(r, 5);
	fleet_limits(&h, &s, 60, 0, 7, &r, &t);
	cr_assert_eq(r, 60);
	/* reusing a pair for a later minute drops the old grant */
	fleet_set_caps(&s, 9, 2, 0);
	fleet_limits(&h, &s, 60, 0, 7, &r, &t);
	cr_assert_eq(r, 20);
	/* no limits: nothing from the fleet applies */
	fleet_limits(&h, &s, 0, 0, 9, &r, &t);
	cr_assert(r == UINT64_MAX && t == UINT64_MAX);
}

Test(fleet, room_only_when_synced)
{
	static struct shm_hdr_sh h;
	static struct slot_sh s;

	table(&h, &s, FLEET_UP, 2);
	atomic_store(&s.fleet_req_used, 59);
	cr_assert(fleet_room(&h, &s, 60, 0));
	atomic_store(&s.fleet_req_used, 60);
	cr_assert(!fleet_room(&h, &s, 60, 0));
	atomic_store(&s.fleet_req_used, 0);
	atomic_store(&s.fleet_tok_used, 500);
	cr_assert(!fleet_room(&h, &s, 60, 500));
	atomic_store(&h.fleet_state, FLEET_DOWN);
	atomic_store(&s.fleet_tok_used, 0);
	cr_assert(!fleet_room(&h, &s, 60, 500));
}

Test(fleet, want_sizes)
{
	struct fleet_grant_in in = {.limit = 60, .hosts = 3};

	/* idle: one ready while idle hosts strand under 5 % of the room */
	cr_assert_eq(fleet_want(&in), 1);
	in.fleet_used = 10;
	cr_assert_eq(fleet_want(&in), 0);
	/* two sync periods at the recent rate, at most half the room */
	in.rate = 3;
	cr_assert_eq(fleet_want(&in), 6);
	in.rate = 30;
	cr_assert_eq(fleet_want(&in), 25);
	/* headroom held counts */
	in.rate = 3;
	in.granted = 10;
	in.used = 6;
	cr_assert_eq(fleet_want(&in), 2);
	/* refused since the last sync: doubling */
	in.exhausted = 1;
	in.last_want = 4;
	cr_assert_eq(fleet_want(&in), 4);
	/* near the limit: still one at a time, never past it */
	in.fleet_used = 59;
	in.granted = in.used = 0;
	cr_assert_eq(fleet_want(&in), 1);
	in.fleet_used = 60;
	cr_assert_eq(fleet_want(&in), 0);
	in.fleet_used = 70;
	cr_assert_eq(fleet_want(&in), 0);
}

/* One host of the simulated fleet. */
struct sim_host {
	uint64_t granted, forced, used, last_used, want, refused, seen;
	double rate;
};

/*
 * Simulate one minute of `rounds` sync periods with n hosts of which
 * `busy` send demand requests per period each, against a limit: what the
 * workers may use (grant + slack), what the master asks and what the
 * shared counter grants, as daemon/fleet.c does. Returns the requests
 * served; *counted gets the shared counter.
 */
static uint64_t
sim(int n, int busy, uint64_t limit, uint64_t demand, int rounds,
    uint64_t *counted)
{
	struct sim_host *h = calloc((size_t)n, sizeof *h);
	uint64_t counter = 0, served = 0;

	cr_assert_not_null(h);
	for (int r = 0; r < rounds; r++) {
		for (int i = 0; i < busy; i++) { /* workers */
			uint64_t slack =
			    limit / (FLEET_SLACK_DIV * (uint64_t)n);
			uint64_t cap = h[i].granted + slack;

			cap = cap < limit ? cap : limit;
			for (uint64_t d = 0; d < demand; d++)
				if (h[i].used < cap) {
					h[i].used++;
					served++;
				} else
					h[i].refused++;
		}
		for (int i = 0; i < n; i++) { /* masters, one by one */
			uint64_t d = h[i].used - h[i].last_used, force = 0;
			struct fleet_grant_in in;

			h[i].rate = (double)d > h[i].rate / 2 ? (double)d
			                                      : h[i].rate / 2;
			h[i].last_used = h[i].used;
			if (h[i].used > h[i].granted + h[i].forced)
				force = h[i].used - h[i].granted - h[i].forced;
			counter += force;
			h[i].forced += force;
			in = (struct fleet_grant_in){
			    .limit = limit,
			    .fleet_used = counter,
			    .granted = h[i].granted,
			    .used = h[i].used,
			    .last_want = h[i].want,
			    .rate = h[i].rate,
			    .hosts = n,
			    .exhausted = h[i].refused != h[i].seen};
			h[i].seen = h[i].refused;
			h[i].want = fleet_want(&in);
			if (h[i].want > (counter < limit ? limit - counter : 0))
				h[i].want =
				    counter < limit ? limit - counter : 0;
			h[i].granted += h[i].want;
			counter += h[i].want;
		}
	}
	free(h);
	*counted = counter;
	return served;
}

Test(fleet, within_five_percent_at_any_host_count)
{
	static const int hosts[] = {1, 2, 3, 5, 10, 30, 100};
	static const uint64_t limits[] = {60, 1000, 100000};

	for (size_t a = 0; a < sizeof hosts / sizeof hosts[0]; a++)
		for (size_t b = 0; b < sizeof limits / sizeof limits[0]; b++)
			for (int busy = 1; busy <= hosts[a];
			     busy = busy == hosts[a]      ? busy + 1
			            : busy * 3 > hosts[a] ? hosts[a]
			                                  : busy * 3) {
				uint64_t lim = limits[b], counted;
				uint64_t dem = lim / (uint64_t)busy / 20 + 1;
				uint64_t s = sim(hosts[a], busy, lim, dem, 600,
				                 &counted);

				/* never more than 5 % over the limit, and
				 * the busy hosts get at least 95 % of it */
				cr_assert_leq(
				    s, lim + lim / 20,
				    "%d hosts, %d busy, limit %llu: %llu",
				    hosts[a], busy, (unsigned long long)lim,
				    (unsigned long long)s);
				cr_assert_geq(
				    s, lim - lim / 20,
				    "%d hosts, %d busy, limit %llu: %llu",
				    hosts[a], busy, (unsigned long long)lim,
				    (unsigned long long)s);
			}
}

/* Load config text from a temp file; NULL with *cause on failure. */
static struct cfg *
load(const char *text, char **cause)
{
	char path[] = "/tmp/llmfd-fleet-cfg.XXXXXX";
	int fd = mkstemp(path);
	struct cfg *c;

	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	c = cfg_load(path, cause);
	unlink(path);
	return c;
}

#define DEP "deployments = ( { name = \"a\"; model = \"m\"; } );\n"

Test(fleet, config_section)
{
	char *cause = NULL;
	struct cfg *c = load(DEP, &cause);

	cr_assert_not_null(c, "%s", cause);
	cr_assert_eq(c->fleet, 0);
	cfg_free(c);
	setenv("LLMFD_TEST_REDIS_PW", "redis-secret-pw", 1);
	c = load(DEP "fleet = { redis = \"10.1.2.3:6380\"; key_prefix = "
	             "\"p:\"; password = \"$LLMFD_TEST_REDIS_PW\"; sync_ms = "
	             "50; host = \"web-1\"; };\n",
	         &cause);
	cr_assert_not_null(c, "%s", cause);
	cr_assert(c->fleet && c->fleet_sync_ms == 50);
	cr_assert_str_eq(c->fleet_redis_host, "10.1.2.3");
	cr_assert_eq(c->fleet_redis_port, 6380);
	cr_assert_str_eq(c->fleet_key_prefix, "p:");
	cr_assert_str_eq(c->fleet_password, "redis-secret-pw");
	cr_assert_str_eq(c->fleet_host, "web-1");
	/* the password is a secret: masked wherever text is shown */
	secret_load(c);
	char msg[] = "AUTH redis-secret-pw failed";
	secret_redact(msg);
	cr_assert_null(strstr(msg, "redis-secret-pw"), "%s", msg);
	secret_clear();
	cfg_free(c);
	c = load(DEP "fleet = { };\n", &cause);
	cr_assert_not_null(c, "%s", cause);
	cr_assert_str_eq(c->fleet_redis_host, "127.0.0.1");
	cr_assert_eq(c->fleet_redis_port, 6379);
	cr_assert_str_eq(c->fleet_key_prefix, "llmfd:");
	cr_assert_eq(c->fleet_sync_ms, 100);
	cfg_free(c);
	c = load(DEP "fleet = { redis = \"[::1]:7000\"; };\n", &cause);
	cr_assert(c && strcmp(c->fleet_redis_host, "::1") == 0);
	cfg_free(c);
	c = load(DEP "fleet = { redis = \"localhost:7000\"; };\n", &cause);
	cr_assert(c && strcmp(c->fleet_redis_host, "127.0.0.1") == 0);
	cfg_free(c);
	c = load(DEP "fleet = { redis = \"/run/redis/redis.sock\"; };\n",
	         &cause);
	cr_assert(c && c->fleet_redis_port == 0);
	cfg_free(c);
}

/* The config must fail with reason in its message. */
static void
refused(const char *text, const char *reason)
{
	char *cause = NULL;
	struct cfg *c = load(text, &cause);

	cr_assert_null(c, "accepted: %s", text);
	cr_assert(cause && strstr(cause, reason), "cause: %s (want %s)", cause,
	          reason);
	free(cause);
}

Test(fleet, config_errors)
{
	refused(DEP "fleet = { redis = \"redis.internal:6379\"; };\n",
	        "fleet.redis: expected a numeric address");
	refused(DEP "fleet = { redis = \"127.0.0.1\"; };\n",
	        "fleet.redis: expected \"address:port\"");
	refused(DEP "fleet = { redis = \"127.0.0.1:0\"; };\n",
	        "fleet.redis: port must be 1..65535");
	refused(DEP "fleet = { redis = \"[::1:6379\"; };\n",
	        "fleet.redis: expected");
	refused(DEP "fleet = { sync_ms = 5; };\n",
	        "fleet.sync_ms: must be between 10 and 10000");
	refused(DEP "fleet = { key_prefix = \"a b\"; };\n",
	        "fleet.key_prefix: must be non-empty");
	refused(DEP "fleet = { host = \"web 1\"; };\n",
	        "fleet.host: invalid host name");
	refused(DEP "fleet = { redis_url = \"x\"; };\n",
	        "fleet: unknown setting 'redis_url'");
	refused(DEP "fleet = ( );\n", "fleet: expected a group");
	unsetenv("LLMFD_TEST_UNSET_PW");
	refused(DEP "fleet = { password = \"$LLMFD_TEST_UNSET_PW\"; };\n",
	        "variable LLMFD_TEST_UNSET_PW is not set");
}
