/* A fleet: three llmfd hosts (own sockets, tables and temp dirs) in front
 * of shared mocks, sharing cooldowns, circuits, the probe token and rpm
 * through a real redis-server on loopback. */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/shm.h"
#include "tests/integration/harness.h"

#define SYNC_MS 100
#define NHOSTS  3
#define CHAT                                                                   \
	"{\"model\":\"g\",\"messages\":[{\"role\":\"user\",\"content\":"       \
	"\"hi\"}]}"

TestSuite(fleet, .init = h_setup, .fini = h_teardown, .timeout = 60);

static const char *const host_names[NHOSTS] = {"ha", "hb", "hc"};

/* Start NHOSTS daemons sharing the Redis at rport, with router settings
 * and deployments as given. */
static void
hosts_start(int rport, const char *router, const char *deploys)
{
	for (int i = 0; i < NHOSTS; i++)
		h_llmfd_start_in(
		    host_names[i],
		    "daemon = { workers = 2; listen = \"llmfd.sock\"; "
		    "health_table = \"health\"; access_log = \"off\"; };\n"
		    "router = { %s };\n"
		    "fleet = { redis = \"127.0.0.1:%d\"; key_prefix = \"t:\"; "
		    "sync_ms = %d; host = \"%s\"; };\n"
		    "deployments = ( %s );\n",
		    router, rport, SYNC_MS, host_names[i], deploys);
}

/* Socket of host i. */
static const char *
sock_of(int i)
{
	return h_path(h_fmt("%s/llmfd.sock", host_names[i]));
}

/* The table of host i, attached read-only (detached at exit). */
static struct shm *
table_of(int i)
{
	static struct shm t[NHOSTS];
	char *cause = NULL;

	if (t[i].hdr == NULL &&
	    shm_attach(&t[i], h_path(h_fmt("%s/health", host_names[i])), 0,
	               &cause) == -1)
		cr_assert_fail("attach %s: %s", host_names[i], cause);
	return &t[i];
}

/* Slot of deployment name in host i's table. */
static struct slot_sh *
slot_of(int i, const char *name)
{
	struct shm *t = table_of(i);
	int k = shm_find(t, name);

	cr_assert_geq(k, 0, "no %s in %s's table", name, host_names[i]);
	return &t->slots[k];
}

/* Wait until every host's fleet state is st; returns the ms waited, or
 * -1 on timeout. */
static long
wait_state(uint32_t st, long timeout_ms)
{
	long start = h_now_ms();

	while (h_now_ms() - start < timeout_ms) {
		int n = 0;

		for (int i = 0; i < NHOSTS; i++)
			n += atomic_load(&table_of(i)->hdr->fleet_state) == st;
		if (n == NHOSTS)
			return h_now_ms() - start;
		h_sleep_ms(5);
	}
	return -1;
}

/* Client load: conc connections per host, each sending one request after
 * another until the time is up; in-flight requests are let finish. */
struct load {
	long duration_ms;
	int conc;
	long at_ms; /* call at(arg) once at this time (0: no) */
	void (*at)(void *);
	void *arg;
	int n, ok, limited, other; /* results */
	long lat[8192];
	int nlat;
	char first_other[128];
};

struct lconn {
	int fd;
	int host;
	long start;
	char head[64];
	size_t len;
};

/* Start one request on c; 0, or -1 (counted as a failure). */
static int
load_start(struct load *l, struct lconn *c)
{
	const char *req =
	    h_req_text("POST", "/v1/chat/completions", NULL, CHAT);

	c->len = 0;
	c->start = h_now_ms();
	if ((c->fd = h_connect_unix(sock_of(c->host))) == -1 ||
	    h_send_all(c->fd, req, strlen(req)) == -1) {
		if (c->fd != -1)
			close(c->fd);
		c->fd = -1;
		l->n++;
		l->other++;
		snprintf(l->first_other, sizeof l->first_other,
		         "connect/send: %s", strerror(errno));
		return -1;
	}
	return 0;
}

/* A request on c ended (the server closed): count its status. */
static void
load_end(struct load *l, struct lconn *c)
{
	int status = 0;
	long ms = h_now_ms() - c->start;

	c->head[c->len < sizeof c->head ? c->len : sizeof c->head - 1] = '\0';
	sscanf(c->head, "HTTP/1.1 %d", &status);
	close(c->fd);
	c->fd = -1;
	l->n++;
	if (status == 200)
		l->ok++;
	else if (status == 429)
		l->limited++;
	else {
		l->other++;
		if (!l->first_other[0])
			snprintf(l->first_other, sizeof l->first_other,
			         "status %d after %ld ms", status, ms);
	}
	if (l->nlat < (int)(sizeof l->lat / sizeof l->lat[0]))
		l->lat[l->nlat++] = ms;
}

/* Read what c has; end it at EOF. */
static void
load_read(struct load *l, struct lconn *c)
{
	char tmp[4096];
	ssize_t n = read(c->fd, tmp, sizeof tmp);

	if (n > 0) {
		size_t take = c->len < sizeof c->head - 1
		                  ? sizeof c->head - 1 - c->len
		                  : 0;
		if ((size_t)n < take)
			take = (size_t)n;
		memcpy(c->head + c->len, tmp, take);
		c->len += (size_t)n;
		return;
	}
	if (n < 0 && errno == EINTR)
		return;
	load_end(l, c);
}

/* Run the load on every host. */
static void
load_run(struct load *l)
{
	struct lconn c[NHOSTS * 8];
	struct pollfd p[NHOSTS * 8];
	int nc = NHOSTS * l->conc, live;
	long start = h_now_ms();

	cr_assert_leq(nc, NHOSTS * 8);
	for (int i = 0; i < nc; i++)
		c[i] = (struct lconn){.fd = -1, .host = i % NHOSTS};
	for (;;) {
		long now = h_now_ms();
		int running = now - start < l->duration_ms;

		if (l->at && now - start >= l->at_ms) {
			l->at(l->arg);
			l->at = NULL;
		}
		live = 0;
		for (int i = 0; i < nc; i++) {
			if (c[i].fd == -1 && running)
				load_start(l, &c[i]);
			p[i] = (struct pollfd){c[i].fd, POLLIN, 0};
			live += c[i].fd != -1;
		}
		if (!live && !running)
			break;
		if (poll(p, (nfds_t)nc, 20) <= 0)
			continue;
		for (int i = 0; i < nc; i++)
			if (c[i].fd != -1 &&
			    (p[i].revents & (POLLIN | POLLHUP)))
				load_read(l, &c[i]);
	}
}

/* Latency quantile q of a load's requests. */
static long
load_quantile(struct load *l, double q)
{
	long tmp[8192];
	int n = l->nlat;

	if (n == 0)
		return 0;
	memcpy(tmp, l->lat, (size_t)n * sizeof tmp[0]);
	for (int i = 1; i < n; i++) /* insertion sort: n is small */
		for (int j = i; j > 0 && tmp[j - 1] > tmp[j]; j--) {
			long t = tmp[j];
			tmp[j] = tmp[j - 1];
			tmp[j - 1] = t;
		}
	return tmp[(int)(q * (n - 1))];
}

/* Sleep into the next wall-clock minute unless need_ms are left in this
 * one (rpm windows are wall-clock minutes). */
static void
minute_room(long need_ms)
{
	long left = 60000 - (long)(clock_wall_ms() % 60000);

	if (left < need_ms)
		h_sleep_ms(left + 150);
}

/* Whether host sub's log shows needle within 2 s (the master logs the
 * event ring every 250 ms). */
static int
wait_log(const char *sub, const char *needle)
{
	long t0 = h_now_ms();
	char *log;

	do {
		log = h_read(h_path(h_fmt("%s/llmfd.log", sub)));
		if (log && strstr(log, needle))
			return 1;
		h_sleep_ms(20);
	} while (h_now_ms() - t0 < 2000);
	return 0;
}

Test(fleet, rpm_limit_holds_across_hosts)
{
	struct h_mock m;
	struct load *l = calloc(1, sizeof *l);
	int rport = 0;
	long served;

	h_mock_start(&m, "m", NULL);
	h_redis_start(&rport);
	hosts_start(rport,
	            "num_retries = 0; timeout_ms = 3000; "
	            "queue_when_cooling = false;",
	            h_fmt("{ name = \"x\"; group = \"g\"; base_url = "
	                  "\"http://127.0.0.1:%d/v1\"; api_key = \"k\"; "
	                  "model = \"m\"; rpm = 60; }",
	                  m.port));
	cr_assert_neq(wait_state(FLEET_UP, 3000), -1, "hosts not synced");
	h_sleep_ms(3 * SYNC_MS); /* every host has seen the others */
	minute_room(6000);
	l->duration_ms = 3000;
	l->conc = 3;
	load_run(l);
	served = h_mock_stat(&m, "requests");
	fprintf(stderr,
	        "fleet rpm: limit 60 on %d hosts under load: the upstream "
	        "got %ld (%+.1f %%); clients %d ok, %d limited, %d other\n",
	        NHOSTS, served, (double)(served - 60) * 100.0 / 60.0, l->ok,
	        l->limited, l->other);
	cr_assert_leq(served, 63, "the fleet sent %ld > 63", served);
	cr_assert_geq(served, 57, "the fleet used only %ld of 60", served);
	cr_assert_eq(l->ok, served);
	cr_assert_eq(l->other, 0, "%s", l->first_other);
	cr_assert_gt(l->limited, 0);
	free(l);
}

Test(fleet, cooldown_reaches_other_hosts_within_two_syncs)
{
	struct h_mock bad, good;
	struct h_resp *r;
	int rport = 0;
	long t0, lag = -1;

	h_mock_start(&bad, "bad", "--mode", "status", "--status", "500", NULL);
	h_mock_start(&good, "good", NULL);
	h_redis_start(&rport);
	hosts_start(
	    rport,
	    "num_retries = 0; allowed_fails = 0; cooldown_s = 30; "
	    "circuit_failure_threshold = 100;",
	    h_fmt(
	        "{ name = \"x\"; group = \"g\"; base_url = "
	        "\"http://127.0.0.1:%d/v1\"; api_key = \"k\"; model = \"m\"; },"
	        "{ name = \"y\"; group = \"g\"; base_url = "
	        "\"http://127.0.0.1:%d/v1\"; api_key = \"k\"; model = \"m\"; }",
	        bad.port, good.port));
	cr_assert_neq(wait_state(FLEET_UP, 3000), -1, "hosts not synced");
	r = h_http(&(struct h_req){.unix_path = sock_of(0),
	                           .method = "POST",
	                           .path = "/v1/chat/completions",
	                           .body = CHAT});
	t0 = h_now_ms();
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_gt(atomic_load(&slot_of(0, "x")->cooldown_until_ms),
	             clock_ms(), "host a did not cool x down");
	while (h_now_ms() - t0 < 2000) {
		if (atomic_load(&slot_of(1, "x")->cooldown_until_ms) >
		        clock_ms() &&
		    atomic_load(&slot_of(2, "x")->cooldown_until_ms) >
		        clock_ms()) {
			lag = h_now_ms() - t0;
			break;
		}
		h_sleep_ms(1);
	}
	fprintf(stderr,
	        "fleet cooldown: honoured by the other hosts %ld ms after "
	        "host a's reply (sync_ms %d)\n",
	        lag, SYNC_MS);
	cr_assert_neq(lag, -1, "the cooldown never reached hosts b and c");
	cr_assert_leq(lag, 2 * SYNC_MS);
	for (int i = 1; i < NHOSTS; i++) {
		r = h_http(&(struct h_req){.unix_path = sock_of(i),
		                           .method = "POST",
		                           .path = "/v1/chat/completions",
		                           .body = CHAT});
		cr_assert_eq(r->status, 200, "%s", h_desc(r));
		cr_assert_str_eq(h_header(r, "x-llmfd-deployment"), "y");
	}
	cr_assert_eq(h_mock_stat(&bad, "requests"), 1);
}

Test(fleet, one_half_open_probe_for_the_fleet)
{
	struct h_mock bad, good;
	struct load *l = calloc(1, sizeof *l);
	struct h_resp *r;
	int rport = 0, closed = 0;
	long t0;

	h_mock_start(&bad, "bad", "--mode", "status", "--status", "500", NULL);
	h_mock_start(&good, "good", NULL);
	h_redis_start(&rport);
	hosts_start(
	    rport,
	    "num_retries = 0; allowed_fails = 100; cooldown_s = 0; "
	    "circuit_failure_threshold = 1; circuit_recovery_s = 2; "
	    "circuit_max_s = 2; timeout_ms = 10000;",
	    h_fmt(
	        "{ name = \"x\"; group = \"g\"; base_url = "
	        "\"http://127.0.0.1:%d/v1\"; api_key = \"k\"; model = \"m\"; },"
	        "{ name = \"y\"; group = \"g\"; base_url = "
	        "\"http://127.0.0.1:%d/v1\"; api_key = \"k\"; model = \"m\"; }",
	        bad.port, good.port));
	cr_assert_neq(wait_state(FLEET_UP, 3000), -1, "hosts not synced");
	for (int i = 0; i < NHOSTS; i++) { /* every host opens its circuit */
		r = h_http(&(struct h_req){.unix_path = sock_of(i),
		                           .method = "POST",
		                           .path = "/v1/chat/completions",
		                           .body = CHAT});
		cr_assert_eq(r->status, 200, "%s", h_desc(r));
		cr_assert_eq(atomic_load(&slot_of(i, "x")->circuit),
		             CIRCUIT_OPEN);
	}
	/* the probe will hang 1.5 s: every host keeps sending meanwhile */
	cr_assert_eq(
	    h_mock_config(&bad, "{\"mode\":\"ok\",\"latency_ms\":1500}"), 0);
	h_mock_reset(&bad);
	l->duration_ms = 3000;
	l->conc = 2;
	load_run(l);
	fprintf(stderr,
	        "fleet probe: %ld half-open probe(s) reached the upstream "
	        "from %d hosts (%d client requests, %d ok)\n",
	        h_mock_stat(&bad, "requests"), NHOSTS, l->n, l->ok);
	cr_assert_eq(h_mock_stat(&bad, "requests"), 1);
	cr_assert_eq(l->other, 0, "%s", l->first_other);
	t0 = h_now_ms();
	while (!closed && h_now_ms() - t0 < 2000) {
		closed = 1;
		for (int i = 0; i < NHOSTS; i++)
			closed &= atomic_load(&slot_of(i, "x")->circuit) ==
			          CIRCUIT_CLOSED;
		h_sleep_ms(5);
	}
	cr_assert(closed, "the probe's success did not close every host's "
	                  "circuit");
	cr_assert_eq(h_mock_stat(&bad, "requests"), 1);
	free(l);
}

/* Redis control for the load's timed action. */
struct redis_ctl {
	pid_t pid;
	int port;
	int step;
};

/* Kill Redis (step 0), then restart it on the same port (step 1). */
static void
redis_kill_restart(void *arg)
{
	struct redis_ctl *rc = arg;

	if (rc->step++ == 0) {
		kill(rc->pid, SIGKILL);
		h_wait_exit(rc->pid, 2000, NULL);
	} else
		rc->pid = h_redis_start(&rc->port);
}

Test(fleet, redis_killed_under_load_fails_nothing_and_resyncs)
{
	struct h_mock m;
	struct load *l = calloc(1, sizeof *l);
	struct redis_ctl rc = {0};
	const char *v;
	char *out;
	long ms;

	h_mock_start(&m, "m", NULL);
	rc.pid = h_redis_start(&rc.port);
	hosts_start(rc.port, "num_retries = 0; timeout_ms = 5000;",
	            h_fmt("{ name = \"x\"; group = \"g\"; base_url = "
	                  "\"http://127.0.0.1:%d/v1\"; api_key = \"k\"; "
	                  "model = \"m\"; rpm = 1000000; }",
	                  m.port));
	cr_assert_neq(wait_state(FLEET_UP, 3000), -1, "hosts not synced");
	minute_room(8000);
	l->duration_ms = 1000;
	l->conc = 2;
	l->at_ms = 400;
	l->at = redis_kill_restart;
	l->arg = &rc;
	load_run(l); /* Redis dies at 0.4 s */
	cr_assert_neq(wait_state(FLEET_DOWN, 3000), -1, "hosts not down");
	l->at_ms = 1000;
	l->at = redis_kill_restart;
	l->duration_ms = 2500;
	load_run(l); /* on the local view; Redis back at 1 s */
	ms = wait_state(FLEET_UP, 6000);
	fprintf(stderr,
	        "fleet redis restart: %d requests, %d ok, %d failed; hosts "
	        "resynced %ld ms after the load\n",
	        l->n, l->ok, l->other + l->limited, ms);
	cr_assert_eq(l->ok, l->n, "%d of %d failed: %s", l->n - l->ok, l->n,
	             l->first_other);
	cr_assert_neq(ms, -1, "hosts did not resync with the new redis");
	h_sleep_ms(3 * SYNC_MS);
	v = h_redis_cmd(rc.port, "ZCARD t:hosts");
	cr_assert(v && strncmp(v, ":3", 2) == 0, "hosts: %s", v ? v : "-");
	v = h_redis_cmd(rc.port, h_fmt("GET t:rpm:x:%lld",
	                               (long long)(clock_wall_ms() / 60000)));
	cr_assert(v && v[0] == '$' && atol(strchr(v, '\n') + 1) >= l->ok / 2,
	          "the new redis does not count the minute's use: %s",
	          v ? v : "-");
	cr_assert_eq(h_run(&out, h_bin("llmfctl"), "-t", h_path("hb/health"),
	                   "status", "--fleet", NULL),
	             0, "%s", out);
	cr_assert(strstr(out, "fleet: synced") && strstr(out, "3 hosts"), "%s",
	          out);
	cr_assert(wait_log("ha", "serving on the local view"));
	cr_assert(wait_log("ha", "lost its data"));
	free(l);
}

Test(fleet, stopped_redis_does_not_raise_latency)
{
	struct h_mock m;
	struct load *base = calloc(1, sizeof *base);
	struct load *stall = calloc(1, sizeof *stall);
	int rport = 0;
	pid_t rpid;
	long b50, b99, s50, s99, s100;

	h_mock_start(&m, "m", NULL);
	rpid = h_redis_start(&rport);
	hosts_start(rport, "num_retries = 0;",
	            h_fmt("{ name = \"x\"; group = \"g\"; base_url = "
	                  "\"http://127.0.0.1:%d/v1\"; api_key = \"k\"; "
	                  "model = \"m\"; rpm = 1000000; }",
	                  m.port));
	cr_assert_neq(wait_state(FLEET_UP, 3000), -1, "hosts not synced");
	base->duration_ms = 1000;
	base->conc = 1;
	load_run(base);
	kill(rpid, SIGSTOP);
	stall->duration_ms = 2000; /* across the master's 1 s timeout */
	stall->conc = 1;
	load_run(stall);
	kill(rpid, SIGCONT);
	b50 = load_quantile(base, 0.5);
	b99 = load_quantile(base, 0.99);
	s50 = load_quantile(stall, 0.5);
	s99 = load_quantile(stall, 0.99);
	s100 = load_quantile(stall, 1.0);
	fprintf(stderr,
	        "fleet SIGSTOP: latency p50/p99 %ld/%ld ms before, %ld/%ld ms "
	        "(max %ld) while redis was stopped (%d requests)\n",
	        b50, b99, s50, s99, s100, stall->n);
	cr_assert_eq(stall->ok, stall->n, "%s", stall->first_other);
	/* a request that waited for the master to give up on Redis would
	 * take about its 1 s timeout */
	cr_assert_leq(s50, b50 + 20);
	cr_assert_leq(s99, b99 + 150);
	cr_assert_lt(s100, 800);
	cr_assert(wait_log("ha", "no reply for"));
	cr_assert_neq(wait_state(FLEET_UP, 8000), -1,
	              "hosts did not resync after SIGCONT");
	free(base);
	free(stall);
}

Test(fleet, garbage_from_redis_never_stalls_requests)
{
	struct h_mock fake, m;
	struct h_resp *r;

	/* an HTTP server answers Redis commands with HTTP: garbage */
	h_mock_start(&fake, "fake", NULL);
	h_mock_start(&m, "m", NULL);
	h_llmfd_start(
	    "daemon = { workers = 1; listen = \"llmfd.sock\"; "
	    "health_table = \"health\"; };\n"
	    "fleet = { redis = \"localhost:%d\"; sync_ms = 20; };\n"
	    "deployments = ( { name = \"x\"; group = \"g\"; base_url = "
	    "\"http://127.0.0.1:%d/v1\"; api_key = \"k\"; model = \"m\"; "
	    "rpm = 100; } );\n",
	    fake.port, m.port);
	for (int i = 0; i < 20; i++) {
		r = h_unix("POST", "/v1/chat/completions", CHAT);
		cr_assert_eq(r->status, 200, "%s", h_desc(r));
		cr_assert_lt(r->ms, 500);
		h_sleep_ms(20);
	}
	cr_assert(h_log_has("fleet: redis localhost:"), "%s", h_log());
	r = h_unix("GET", "/metrics", NULL);
	cr_assert(strstr(r->body, "\nllmfd_fleet_connected 0\n"), "%s",
	          r->body);
	cr_assert(strstr(r->body, "llmfd_fleet_sync_failures_total"));
}

Test(fleet, drain_and_weight_reach_every_host)
{
	struct h_mock m;
	int rport = 0;
	char *out;
	long t0;

	h_mock_start(&m, "m", NULL);
	h_redis_start(&rport);
	hosts_start(rport, "num_retries = 0;",
	            h_fmt("{ name = \"x\"; group = \"g\"; base_url = "
	                  "\"http://127.0.0.1:%d/v1\"; api_key = \"k\"; "
	                  "model = \"m\"; }",
	                  m.port));
	cr_assert_neq(wait_state(FLEET_UP, 3000), -1, "hosts not synced");
	cr_assert_eq(h_run(&out, h_bin("llmfctl"), "-t", h_path("ha/health"),
	                   "drain", "x", "--fleet", NULL),
	             0, "%s", out);
	cr_assert(strstr(out, "publishes it to every host"), "%s", out);
	t0 = h_now_ms();
	while (h_now_ms() - t0 < 2000 &&
	       (atomic_load(&slot_of(1, "x")->admin) != ADMIN_DRAINED ||
	        atomic_load(&slot_of(2, "x")->admin) != ADMIN_DRAINED))
		h_sleep_ms(5);
	cr_assert_eq(atomic_load(&slot_of(2, "x")->admin), ADMIN_DRAINED);
	cr_assert_leq(h_now_ms() - t0, 2 * SYNC_MS + 50);
	cr_assert(wait_log("hb", "x drain (fleet, from ha)"));
	/* a local undrain stays local; --fleet undrains everywhere */
	cr_assert_eq(h_run(&out, h_bin("llmfctl"), "-t", h_path("hb/health"),
	                   "weight", "x", "7", "--fleet", NULL),
	             0, "%s", out);
	cr_assert_eq(h_run(&out, h_bin("llmfctl"), "-t", h_path("hc/health"),
	                   "undrain", "x", "--fleet", NULL),
	             0, "%s", out);
	t0 = h_now_ms();
	while (h_now_ms() - t0 < 2000 &&
	       (atomic_load(&slot_of(0, "x")->admin) != ADMIN_ACTIVE ||
	        atomic_load(&slot_of(0, "x")->live_weight) != 7 ||
	        atomic_load(&slot_of(2, "x")->live_weight) != 7))
		h_sleep_ms(5);
	cr_assert_eq(atomic_load(&slot_of(0, "x")->admin), ADMIN_ACTIVE);
	cr_assert_eq(atomic_load(&slot_of(0, "x")->live_weight), 7);
	cr_assert_eq(atomic_load(&slot_of(2, "x")->live_weight), 7);
	/* the merged view, with every host's last sync */
	cr_assert_eq(h_run(&out, h_bin("llmfctl"), "-t", h_path("hc/health"),
	                   "status", "--fleet", NULL),
	             0, "%s", out);
	for (int i = 0; i < NHOSTS; i++)
		cr_assert(strstr(out, host_names[i]), "%s", out);
	cr_assert(strstr(out, "(this host)") && strstr(out, "s ago"), "%s",
	          out);
	cr_assert_eq(h_run(&out, h_bin("llmfctl"), "-t", h_path("hc/health"),
	                   "status", "--fleet", "--json", NULL),
	             0, "%s", out);
	cr_assert(h_json_valid(out), "%s", out);
	cr_assert_eq(h_json_count(out, "fleet.hosts"), NHOSTS, "%s", out);
	cr_assert_str_eq(h_json(out, "fleet.state"), "synced");
	cr_assert_leq(h_json_long(out, "fleet.hosts.0.last_sync_age_ms", -1),
	              1000);
}

/* How many times needle occurs in text. */
static int
count_of(const char *text, const char *needle)
{
	int n = 0;

	for (const char *p = text; p && (p = strstr(p, needle)) != NULL; p++)
		n++;
	return n;
}

Test(fleet, reload_keeps_or_ends_the_fleet)
{
	struct h_mock m;
	int rport = 0;
	char *out;
	pid_t pid;
	long t0;
	const char *fleet;
#define RELOAD_CONF                                                            \
	"daemon = { workers = 1; listen = \"llmfd.sock\"; "                    \
	"health_table = \"health\"; };\n"                                      \
	"%s"                                                                   \
	"deployments = ( { name = \"x\"; group = \"g\"; "                      \
	"base_url = \"http://127.0.0.1:%d/v1\"; api_key = \"k\"; "             \
	"model = \"m\"; } );\n"

	h_mock_start(&m, "m", NULL);
	h_redis_start(&rport);
	fleet = h_fmt("fleet = { redis = \"127.0.0.1:%d\"; host = \"solo\"; "
	              "};\n",
	              rport);
	pid = h_llmfd_start(RELOAD_CONF, fleet, m.port);
	cr_assert_eq(h_run(&out, h_bin("llmfctl"), "-c", h_conf(), "status",
	                   "--fleet", NULL),
	             0, "%s", out);
	/* same fleet settings: the connection stays (synced once) */
	h_write("llmfd.conf", RELOAD_CONF, fleet, m.port);
	kill(pid, SIGHUP);
	t0 = h_now_ms();
	while (h_now_ms() - t0 < 3000 && !h_log_has("configuration reloaded"))
		h_sleep_ms(20);
	h_sleep_ms(300);
	cr_assert_eq(count_of(h_log(), "fleet: synced with redis"), 1, "%s",
	             h_log());
	cr_assert_eq(h_run(&out, h_bin("llmfctl"), "-c", h_conf(), "status",
	                   "--fleet", NULL),
	             0, "%s", out);
	cr_assert(strstr(out, "fleet: synced"), "%s", out);
	/* no fleet section: back to one host */
	h_write("llmfd.conf", RELOAD_CONF, "", m.port);
	kill(pid, SIGHUP);
	t0 = h_now_ms();
	while (h_now_ms() - t0 < 3000 &&
	       h_run(&out, h_bin("llmfctl"), "-c", h_conf(), "status",
	             "--fleet", NULL) == 0)
		h_sleep_ms(50);
	cr_assert(strstr(out, "no fleet section"), "%s", out);
	cr_assert_eq(h_unix("POST", "/v1/chat/completions", CHAT)->status, 200);
	cr_assert_eq(h_run(&out, h_bin("llmfctl"), "-c", h_conf(), "drain", "x",
	                   "--fleet", NULL),
	             1, "%s", out);
}
