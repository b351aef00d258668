/* Health-driven routing end to end: strategies, cooldown, the circuit
 * breaker across workers, rpm limits across workers, queueing and 429 when
 * everything is cooling, context-window / content-policy fallbacks, the
 * pre-call context skip, the retry budget and the attempt trail. */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "tests/integration/harness.h"

#define CHAT "/v1/chat/completions"
#define HI   "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"
#define BODY "{\"model\":\"main\"," HI "}"
#define MAXB 32

TestSuite(routing, .init = h_setup, .fini = h_teardown, .timeout = 60);

static pid_t master;

/* One deployment entry on 127.0.0.1:port with extra settings. */
static const char *
dep(const char *name, const char *group, int port, const char *extra)
{
	return h_fmt("  { name = \"%s\"; group = \"%s\"; provider = "
	             "\"openai\";\n    base_url = \"http://127.0.0.1:%d/v1\"; "
	             "api_key = \"$TEST_KEY\"; model = \"m\"; %s }",
	             name, group, port, extra);
}

/* Start llmfd with two workers, the router settings, the deployments (one
 * string, entries joined by ",\n") and any extra top-level text. */
static void
start(const char *router, const char *deployments, const char *extra)
{
	master = h_llmfd_start(
	    "daemon = { workers = 2; listen = \"llmfd.sock\";\n"
	    "  health_table = \"health\"; log_level = \"info\"; };\n"
	    "router = { backoff_base_ms = 10; backoff_max_ms = 50;\n"
	    "  timeout_ms = 10000; attempt_timeout_ms = 3000; %s };\n"
	    "deployments = (\n%s\n);\n%s\n",
	    router, deployments, extra ? extra : "");
}

/* POST a chat body to the daemon. */
static struct h_resp *
chat(const char *body)
{
	return h_unix("POST", CHAT, body);
}

/* The deployment that answered r, "" if none. */
static const char *
served_by(const struct h_resp *r)
{
	const char *d = h_header(r, "x-llmfd-deployment");

	return d ? d : "";
}

/* `llmfctl status --json` output. */
static const char *
status_json(void)
{
	char *out;
	int rc = h_run(&out, h_bin("llmfctl"), "-c", h_conf(), "status",
	               "--json", NULL);

	cr_assert_eq(rc, 0, "llmfctl status --json exit %d:\n%s", rc, out);
	cr_assert(h_json_valid(out), "not JSON:\n%s", out);
	return out;
}

/* Field of deployment dep in `llmfctl status --json` (NULL if absent). */
static const char *
dep_field(const char *dname, const char *field)
{
	const char *js = status_json();
	int n = h_json_count(js, "deployments");

	for (int i = 0; i < n; i++) {
		const char *name = h_json(js, h_fmt("deployments.%d.name", i));
		if (name != NULL && strcmp(name, dname) == 0)
			return h_json(js, h_fmt("deployments.%d.%s", i, field));
	}
	return NULL;
}

/* Numeric field of deployment dep in `llmfctl status --json`, -1. */
static long
dep_long(const char *dname, const char *field)
{
	const char *v = dep_field(dname, field);

	return v ? atol(v) : -1;
}

/* Wait until at least 15 s remain in the current wall-clock minute, so an
 * rpm window does not roll over during the test. */
static void
away_from_minute_edge(void)
{
	struct timespec ts;

	for (;;) {
		clock_gettime(CLOCK_REALTIME, &ts);
		if (ts.tv_sec % 60 < 45)
			return;
		h_sleep_ms(500);
	}
}

/* Send n requests at once, each on its own connection, and read every
 * reply; status[i] is the reply's status (0 on failure), and ra[i] its
 * Retry-After (-1 if none), dep[i] its x-llmfd-deployment ("" if none). */
static void
burst(int n, const char *body, int *status, long *ra, const char **dep_of)
{
	int fd[MAXB];
	char *txt[MAXB];
	size_t len[MAXB], cap[MAXB];
	const char *req = h_req_text("POST", CHAT, NULL, body);
	long end = h_now_ms() + 20000;
	int open = 0;

	cr_assert_leq(n, MAXB);
	for (int i = 0; i < n; i++) {
		fd[i] = h_connect_unix(h_sock());
		cr_assert_geq(fd[i], 0, "connect %d", i);
		cr_assert_eq(h_send_all(fd[i], req, strlen(req)), 0);
		cap[i] = 4096;
		len[i] = 0;
		txt[i] = calloc(1, cap[i]);
		cr_assert_not_null(txt[i]);
		open++;
	}
	while (open > 0 && h_now_ms() < end) {
		struct pollfd p[MAXB];

		for (int i = 0; i < n; i++)
			p[i] = (struct pollfd){.fd = fd[i], .events = POLLIN};
		if (poll(p, (nfds_t)n, 200) <= 0)
			continue;
		for (int i = 0; i < n; i++) {
			if (fd[i] < 0 || !(p[i].revents & (POLLIN | POLLHUP)))
				continue;
			if (cap[i] - len[i] < 1024) {
				cap[i] *= 2;
				txt[i] = realloc(txt[i], cap[i]);
				cr_assert_not_null(txt[i]);
			}
			ssize_t k =
			    read(fd[i], txt[i] + len[i], cap[i] - len[i] - 1);
			if (k > 0) {
				len[i] += (size_t)k;
				txt[i][len[i]] = '\0';
				continue;
			}
			close(fd[i]);
			fd[i] = -1;
			open--;
		}
	}
	for (int i = 0; i < n; i++) {
		const char *h;

		if (fd[i] >= 0)
			close(fd[i]);
		status[i] = 0;
		sscanf(txt[i], "HTTP/1.%*d %d", &status[i]);
		if (ra) {
			h = strcasestr(txt[i], "\r\nRetry-After:");
			ra[i] = h ? atol(h + 14) : -1;
		}
		if (dep_of) {
			h = strcasestr(txt[i], "\r\nx-llmfd-deployment:");
			dep_of[i] = "";
			if (h) {
				h += 21;
				h += strspn(h, " ");
				dep_of[i] =
				    h_fmt("%.*s", (int)strcspn(h, "\r\n"), h);
			}
		}
		free(txt[i]);
	}
}

/* The trail element of deployment dname in an error body, or -1. */
static int
trail_index(const char *body, const char *dname)
{
	int n = h_json_count(body, "error.attempts");

	for (int i = 0; i < n; i++) {
		const char *d =
		    h_json(body, h_fmt("error.attempts.%d.deployment", i));
		if (d != NULL && strcmp(d, dname) == 0)
			return i;
	}
	return -1;
}

/* Weights 3:1 over 200 requests give a 75 % share within 10 points. */
Test(routing, weighted_shares)
{
	struct h_mock a, b;

	h_mock_start(&a, "a", NULL);
	h_mock_start(&b, "b", NULL);
	start("strategy = \"weighted\";",
	      h_fmt("%s,\n%s", dep("a", "main", a.port, "weight = 3;"),
	            dep("b", "main", b.port, "weight = 1;")),
	      NULL);
	for (int i = 0; i < 200; i++) {
		struct h_resp *r = chat(BODY);
		cr_assert_eq(r->status, 200, "request %d: %s", i, h_desc(r));
	}
	long na = h_mock_stat(&a, "requests"), nb = h_mock_stat(&b, "requests");
	cr_assert_eq(na + nb, 200, "a %ld + b %ld", na, nb);
	cr_assert(na >= 130 && na <= 170, "a got %ld of 200, want 150 +- 20",
	          na);
}

/* Weight 0, configured or set live by llmfctl, takes no traffic. */
Test(routing, weight_zero_takes_no_traffic)
{
	struct h_mock a, b, c;
	char *out;

	h_mock_start(&a, "a", NULL);
	h_mock_start(&b, "b", NULL);
	h_mock_start(&c, "c", NULL);
	start("strategy = \"weighted\";",
	      h_fmt("%s,\n%s,\n%s", dep("a", "main", a.port, "weight = 1;"),
	            dep("b", "main", b.port, "weight = 0;"),
	            dep("c", "main", c.port, "weight = 1;")),
	      NULL);
	for (int i = 0; i < 30; i++)
		cr_assert_eq(chat(BODY)->status, 200);
	cr_assert_eq(h_mock_stat(&b, "requests"), 0);
	int rc = h_run(&out, h_bin("llmfctl"), "-c", h_conf(), "weight", "c",
	               "0", NULL);
	cr_assert_eq(rc, 0, "llmfctl weight: %s", out);
	cr_assert_eq(dep_long("c", "weight"), 0);
	h_mock_reset(&c);
	for (int i = 0; i < 30; i++)
		cr_assert_eq(chat(BODY)->status, 200);
	cr_assert_eq(h_mock_stat(&c, "requests"), 0);
	cr_assert_eq(h_mock_stat(&b, "requests"), 0);
}

/* Least-busy spreads concurrent requests over equally slow upstreams
 * (ordered would send them all to the first). */
Test(routing, least_busy_spreads_concurrent)
{
	struct h_mock a, b;
	int st[8];

	h_mock_start(&a, "a", "--latency-ms", "800", NULL);
	h_mock_start(&b, "b", "--latency-ms", "800", NULL);
	start("strategy = \"least-busy\";",
	      h_fmt("%s,\n%s", dep("a", "main", a.port, ""),
	            dep("b", "main", b.port, "")),
	      NULL);
	burst(8, BODY, st, NULL, NULL);
	for (int i = 0; i < 8; i++)
		cr_assert_eq(st[i], 200, "request %d: %d", i, st[i]);
	long na = h_mock_stat(&a, "requests"), nb = h_mock_stat(&b, "requests");
	cr_assert_eq(na + nb, 8);
	cr_assert(na >= 2 && nb >= 2, "a %ld, b %ld: not spread", na, nb);
}

/* Latency: after warm-up the fast upstream takes nearly all traffic. */
Test(routing, latency_prefers_fast)
{
	struct h_mock fast, slow;

	h_mock_start(&fast, "fast", NULL);
	h_mock_start(&slow, "slow", "--latency-ms", "200", NULL);
	start("strategy = \"latency\"; latency_buffer = 0.1;",
	      h_fmt("%s,\n%s", dep("slow", "main", slow.port, ""),
	            dep("fast", "main", fast.port, "")),
	      NULL);
	for (int i = 0; i < 6; i++) /* explores both */
		cr_assert_eq(chat(BODY)->status, 200);
	cr_assert_geq(h_mock_stat(&slow, "requests"), 1,
	              "unsampled slow deployment never explored");
	h_mock_reset(&fast);
	h_mock_reset(&slow);
	for (int i = 0; i < 30; i++)
		cr_assert_eq(chat(BODY)->status, 200);
	long nf = h_mock_stat(&fast, "requests");
	cr_assert_geq(nf, 28, "fast got %ld of 30", nf);
}

/* Usage sends traffic to the deployment with the most rpm headroom. */
Test(routing, usage_most_headroom)
{
	struct h_mock a, b;

	away_from_minute_edge();
	h_mock_start(&a, "a", NULL);
	h_mock_start(&b, "b", NULL);
	start("strategy = \"usage\";",
	      h_fmt("%s,\n%s", dep("a", "main", a.port, "rpm = 4;"),
	            dep("b", "main", b.port, "rpm = 100;")),
	      NULL);
	for (int i = 0; i < 12; i++)
		cr_assert_eq(chat(BODY)->status, 200);
	long na = h_mock_stat(&a, "requests");
	cr_assert_leq(na, 1, "tiny-rpm a got %ld of 12", na);
	cr_assert_eq(dep_long("b", "rpm_used"), 12 - na);
	cr_assert_eq(dep_long("b", "rpm_limit"), 100);
}

/* More than allowed_fails failures start a cooldown (skipped, shown by
 * llmfctl); after it expires the deployment is used again. */
Test(routing, cooldown_entry_and_expiry)
{
	struct h_mock a, b;

	h_mock_start(&a, "a", "--mode", "status", "--status", "503", NULL);
	h_mock_start(&b, "b", NULL);
	start("num_retries = 0; allowed_fails = 1; cooldown_s = 2;\n"
	      "  circuit_failure_threshold = 100;",
	      h_fmt("%s,\n%s", dep("a", "main", a.port, ""),
	            dep("b", "main", b.port, "")),
	      NULL);
	cr_assert_str_eq(served_by(chat(BODY)), "b");
	cr_assert_str_eq(dep_field("a", "state"), "healthy");
	cr_assert_str_eq(served_by(chat(BODY)), "b");
	cr_assert_str_eq(dep_field("a", "state"), "cooling");
	long rem = dep_long("a", "cooldown_remaining_s");
	cr_assert(rem >= 1 && rem <= 2, "cooldown_remaining_s %ld", rem);
	char *out;
	h_run(&out, h_bin("llmfctl"), "-c", h_conf(), "status", NULL);
	cr_assert(strstr(out, "cooling") != NULL, "%s", out);
	for (int i = 0; i < 5; i++)
		cr_assert_str_eq(served_by(chat(BODY)), "b");
	cr_assert_eq(h_mock_stat(&a, "requests"), 2, "cooling a was tried");
	h_mock_config(&a, "{\"mode\":\"ok\"}");
	h_sleep_ms(2200);
	cr_assert_str_eq(dep_field("a", "state"), "healthy");
	cr_assert_str_eq(served_by(chat(BODY)), "a");
}

/* A group's only member is still tried while cooling, and that failure
 * extends the cooldown. */
Test(routing, cooldown_extended_single_member_tried)
{
	struct h_mock a;

	h_mock_start(&a, "a", "--mode", "status", "--status", "503", NULL);
	start("num_retries = 0; allowed_fails = 0; cooldown_s = 4;\n"
	      "  circuit_failure_threshold = 100; queue_when_cooling = false;",
	      dep("a", "main", a.port, ""), NULL);
	cr_assert_eq(chat(BODY)->status, 503);
	cr_assert_str_eq(dep_field("a", "state"), "cooling");
	h_sleep_ms(2100);
	long rem = dep_long("a", "cooldown_remaining_s");
	cr_assert_eq(rem, 2, "cooldown_remaining_s %ld after 2.1 s", rem);
	struct h_resp *r = chat(BODY);
	cr_assert_eq(r->status, 503, "%s", h_desc(r));
	cr_assert_eq(h_mock_stat(&a, "requests"), 2,
	             "the only member was not tried while cooling");
	rem = dep_long("a", "cooldown_remaining_s");
	cr_assert_eq(rem, 4, "cooldown not extended: %ld s left", rem);
}

/* With queueing on (the default), a group's only member that is cooling is
 * tried at once rather than queued for its whole cooldown: a flaky but
 * mostly working deployment keeps serving. */
Test(routing, single_member_tried_before_queueing)
{
	struct h_mock a;

	h_mock_start(&a, "a", "--mode", "status", "--status", "503",
	             "--fail-first", "2", NULL);
	start("num_retries = 0; allowed_fails = 1; cooldown_s = 30;\n"
	      "  circuit_failure_threshold = 100;",
	      dep("a", "main", a.port, ""), NULL);
	cr_assert_eq(chat(BODY)->status, 503);
	cr_assert_eq(chat(BODY)->status, 503);
	cr_assert_str_eq(dep_field("a", "state"), "cooling");
	long t0 = h_now_ms();
	struct h_resp *r = chat(BODY);
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_lt(h_now_ms() - t0, 5000, "queued instead of tried");
}

/* The circuit opens at the threshold; once due, exactly one request of a
 * concurrent burst (across two workers) probes the dead upstream; a failed
 * probe re-opens it, a successful one closes it. */
Test(routing, half_open_probe_exactly_one)
{
	struct h_mock dead, b;
	int st[16];
	const char *by[16];

	h_mock_start(&dead, "dead", "--mode", "status", "--status", "503",
	             NULL);
	h_mock_start(&b, "b", NULL);
	start("num_retries = 0; allowed_fails = 1000;\n"
	      "  circuit_failure_threshold = 2; circuit_recovery_s = 1;\n"
	      "  circuit_max_s = 8;",
	      h_fmt("%s,\n%s", dep("dead", "main", dead.port, ""),
	            dep("b", "backup", b.port, "")),
	      "fallbacks = ( { group = \"main\"; to = [ \"backup\" ]; } );");
	cr_assert_str_eq(served_by(chat(BODY)), "b");
	cr_assert_str_eq(served_by(chat(BODY)), "b");
	cr_assert_str_eq(dep_field("dead", "circuit"), "open");
	cr_assert_str_eq(dep_field("dead", "state"), "circuit_open");
	cr_assert_str_eq(served_by(chat(BODY)), "b");
	cr_assert_eq(h_mock_stat(&dead, "requests"), 2);
	h_sleep_ms(1200);
	burst(16, BODY, st, NULL, by);
	for (int i = 0; i < 16; i++) {
		cr_assert_eq(st[i], 200, "request %d: %d", i, st[i]);
		cr_assert_str_eq(by[i], "b");
	}
	long n = h_mock_stat(&dead, "requests");
	cr_assert_eq(n, 3, "dead saw %ld probes, want exactly 1", n - 2);
	cr_assert_str_eq(dep_field("dead", "circuit"), "open");
	h_mock_config(&dead, "{\"mode\":\"ok\"}");
	h_sleep_ms(2200); /* the window doubled to 2 s */
	cr_assert_str_eq(served_by(chat(BODY)), "dead");
	cr_assert_str_eq(dep_field("dead", "circuit"), "closed");
	cr_assert_str_eq(served_by(chat(BODY)), "dead");
}

/* rpm = 5 holds across two workers: a burst of 20 puts exactly 5 on the
 * limited deployment; the rest fall back. */
Test(routing, rpm_limit_across_workers)
{
	struct h_mock a, b;
	int st[20];

	away_from_minute_edge();
	h_mock_start(&a, "a", NULL);
	h_mock_start(&b, "b", NULL);
	start("num_retries = 0;",
	      h_fmt("%s,\n%s", dep("a", "main", a.port, "rpm = 5;"),
	            dep("b", "backup", b.port, "")),
	      "fallbacks = ( { group = \"main\"; to = [ \"backup\" ]; } );");
	burst(20, BODY, st, NULL, NULL);
	for (int i = 0; i < 20; i++)
		cr_assert_eq(st[i], 200, "request %d: %d", i, st[i]);
	cr_assert_eq(h_mock_stat(&a, "requests"), 5);
	cr_assert_eq(h_mock_stat(&b, "requests"), 15);
	cr_assert_str_eq(dep_field("a", "state"), "rate_limited");
	cr_assert_eq(dep_long("a", "rpm_used"), 5);
}

/* rpm = 5 on a group's only member with no fallback: 5 reach it, the rest
 * get 429 with a Retry-After of at most the rest of the minute. */
Test(routing, rpm_limit_single_member_429)
{
	struct h_mock a;
	int st[12];
	long ra[12];

	away_from_minute_edge();
	h_mock_start(&a, "a", NULL);
	start("num_retries = 0; queue_when_cooling = false;",
	      dep("a", "main", a.port, "rpm = 5;"), NULL);
	burst(12, BODY, st, ra, NULL);
	int ok = 0, limited = 0;
	for (int i = 0; i < 12; i++) {
		ok += st[i] == 200;
		if (st[i] == 429) {
			limited++;
			cr_assert(ra[i] >= 1 && ra[i] <= 60, "Retry-After %ld",
			          ra[i]);
		}
	}
	cr_assert_eq(h_mock_stat(&a, "requests"), 5);
	cr_assert_eq(ok, 5);
	cr_assert_eq(limited, 7);
}

/* With queue_when_cooling = false, a request finding every candidate
 * cooling after failures (an outage, not a rate limit: issue 13) gets 503
 * with Retry-After = seconds to the soonest recovery and a trail naming
 * why each was skipped. */
Test(routing, all_cooling_503_retry_after)
{
	struct h_mock a, b;

	h_mock_start(&a, "a", "--mode", "status", "--status", "503", NULL);
	h_mock_start(&b, "b", "--mode", "status", "--status", "503", NULL);
	start("num_retries = 0; allowed_fails = 0; cooldown_s = 5;\n"
	      "  circuit_failure_threshold = 100; queue_when_cooling = false;",
	      h_fmt("%s,\n%s", dep("a", "main", a.port, ""),
	            dep("b", "main", b.port, "")),
	      NULL);
	struct h_resp *r = chat(BODY);
	cr_assert_eq(r->status, 503, "%s", h_desc(r));
	h_sleep_ms(1100);
	r = chat(BODY);
	cr_assert_eq(r->status, 503, "%s", h_desc(r));
	const char *ra = h_header(r, "retry-after");
	cr_assert_not_null(ra, "no Retry-After: %s", h_desc(r));
	cr_assert_eq(atol(ra), 4, "Retry-After %s, want 4", ra);
	int i = trail_index(r->body, "a");
	cr_assert_geq(i, 0, "a not in the trail: %s", r->body);
	cr_assert_str_eq(h_json(r->body, h_fmt("error.attempts.%d.skipped", i)),
	                 "cooling down");
	cr_assert_eq(h_mock_stat(&a, "requests"), 1);
	cr_assert_eq(h_mock_stat(&b, "requests"), 1);
}

/* With queue_when_cooling = true a request waits for the soonest recovery
 * and then succeeds. */
Test(routing, queue_until_recovery)
{
	struct h_mock a, b;

	h_mock_start(&a, "a", "--mode", "status", "--status", "503",
	             "--fail-first", "1", NULL);
	h_mock_start(&b, "b", "--mode", "status", "--status", "503",
	             "--fail-first", "1", NULL);
	start("num_retries = 0; allowed_fails = 0; cooldown_s = 2;\n"
	      "  circuit_failure_threshold = 100; queue_when_cooling = true;",
	      h_fmt("%s,\n%s", dep("a", "main", a.port, ""),
	            dep("b", "main", b.port, "")),
	      NULL);
	cr_assert_eq(chat(BODY)->status, 503);
	struct h_resp *r = chat(BODY);
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert(r->ms >= 1500 && r->ms <= 3500,
	          "answered after %ld ms, want ~2000", r->ms);
}

/* A context-window error follows context_window_fallbacks, not the plain
 * fallbacks. */
Test(routing, context_window_fallback)
{
	struct h_mock a, big, other;

	h_mock_start(&a, "a", "--mode", "status", "--status", "400",
	             "--error-code", "context_length_exceeded", "--message",
	             "This model's maximum context length is 8192 tokens",
	             NULL);
	h_mock_start(&big, "big", NULL);
	h_mock_start(&other, "other", NULL);
	start("num_retries = 2;",
	      h_fmt("%s,\n%s,\n%s", dep("a", "main", a.port, ""),
	            dep("big", "large", big.port, ""),
	            dep("other", "backup", other.port, "")),
	      "fallbacks = ( { group = \"main\"; to = [ \"backup\" ]; } );\n"
	      "context_window_fallbacks = ( { group = \"main\"; "
	      "to = [ \"large\" ]; } );");
	struct h_resp *r = chat(BODY);
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_str_eq(served_by(r), "big");
	cr_assert_eq(h_mock_stat(&a, "requests"), 1, "context error retried");
	cr_assert_eq(h_mock_stat(&other, "requests"), 0);
}

/* A content-filter error follows content_policy_fallbacks. */
Test(routing, content_policy_fallback)
{
	struct h_mock a, safe;

	h_mock_start(&a, "a", "--mode", "status", "--status", "400",
	             "--error-code", "content_filter", "--message",
	             "The response was filtered", NULL);
	h_mock_start(&safe, "safe", NULL);
	start("num_retries = 2;",
	      h_fmt("%s,\n%s", dep("a", "main", a.port, ""),
	            dep("safe", "lenient", safe.port, "")),
	      "content_policy_fallbacks = ( { group = \"main\"; "
	      "to = [ \"lenient\" ]; } );");
	struct h_resp *r = chat(BODY);
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_str_eq(served_by(r), "safe");
	cr_assert_eq(h_mock_stat(&a, "requests"), 1);
}

/* A plain bad request is returned untouched even with every kind of
 * fallback configured. */
Test(routing, bad_request_not_followed)
{
	struct h_mock a, b;

	h_mock_start(&a, "a", "--mode", "status", "--status", "400",
	             "--message", "unsupported parameter zork", NULL);
	h_mock_start(&b, "b", NULL);
	start("num_retries = 2;",
	      h_fmt("%s,\n%s", dep("a", "main", a.port, ""),
	            dep("b", "backup", b.port, "")),
	      "fallbacks = ( { group = \"main\"; to = [ \"backup\" ]; } );\n"
	      "context_window_fallbacks = ( { group = \"main\"; "
	      "to = [ \"backup\" ]; } );\n"
	      "content_policy_fallbacks = ( { group = \"main\"; "
	      "to = [ \"backup\" ]; } );");
	struct h_resp *r = chat(BODY);
	cr_assert_eq(r->status, 400, "%s", h_desc(r));
	cr_assert(strstr(h_json(r->body, "error.message"), "zork") != NULL);
	cr_assert_eq(h_mock_stat(&b, "requests"), 0);
	cr_assert_eq(h_mock_stat(&a, "requests"), 1);
}

/* A 200-byte body over context_window = 10 skips the deployment before any
 * call; with a fallback the fallback answers. */
Test(routing, context_skip_precall_fallback)
{
	struct h_mock a, b;

	h_mock_start(&a, "a", NULL);
	h_mock_start(&b, "b", NULL);
	start("",
	      h_fmt("%s,\n%s", dep("a", "main", a.port, "context_window = 10;"),
	            dep("b", "backup", b.port, "")),
	      "fallbacks = ( { group = \"main\"; to = [ \"backup\" ]; } );");
	char pad[160];
	memset(pad, 'x', sizeof pad - 1);
	pad[sizeof pad - 1] = '\0';
	struct h_resp *r =
	    chat(h_fmt("{\"model\":\"main\",\"messages\":[{\"role\":\"user\","
	               "\"content\":\"%s\"}]}",
	               pad));
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_str_eq(served_by(r), "b");
	cr_assert_eq(h_mock_stat(&a, "requests"), 0);
}

/* The pre-call context skip of a group's only member: no call, and the
 * error trail says skipped. */
Test(routing, context_skip_precall_trail)
{
	struct h_mock a;

	h_mock_start(&a, "a", NULL);
	start("", dep("a", "main", a.port, "context_window = 10;"), NULL);
	char pad[160];
	memset(pad, 'x', sizeof pad - 1);
	pad[sizeof pad - 1] = '\0';
	struct h_resp *r =
	    chat(h_fmt("{\"model\":\"main\",\"messages\":[{\"role\":\"user\","
	               "\"content\":\"%s\"}]}",
	               pad));
	cr_assert_eq(h_mock_stat(&a, "requests"), 0, "%s", h_desc(r));
	cr_assert_geq(r->status, 400, "%s", h_desc(r));
	int i = trail_index(r->body, "a");
	cr_assert_geq(i, 0, "a not in the trail: %s", r->body);
	const char *why =
	    h_json(r->body, h_fmt("error.attempts.%d.skipped", i));
	cr_assert(why != NULL && strstr(why, "context") != NULL, "%s", r->body);
}

/* Retry budget ratio 0 + floor 2: during an outage only 2 retries are
 * spent daemon-wide, whatever num_retries says. */
Test(routing, retry_budget_caps_outage)
{
	struct h_mock a;

	h_mock_start(&a, "a", "--mode", "status", "--status", "503", NULL);
	start("num_retries = 3; allowed_fails = 1000;\n"
	      "  circuit_failure_threshold = 1000;\n"
	      "  retry_budget_ratio = 0.0; retry_budget_floor = 2;",
	      dep("a", "main", a.port, ""), NULL);
	for (int i = 0; i < 6; i++)
		cr_assert_eq(chat(BODY)->status, 503);
	long n = h_mock_stat(&a, "requests");
	cr_assert_eq(n, 6 + 2, "upstream saw %ld, want 6 + 2 retries", n);
}

/* A request's num_retries overrides the router's and the deployment's;
 * the deployment's overrides the router's. */
Test(routing, num_retries_overrides)
{
	struct h_mock a, b, c;

	h_mock_start(&a, "a", "--mode", "status", "--status", "503", NULL);
	h_mock_start(&b, "b", "--mode", "status", "--status", "503", NULL);
	h_mock_start(&c, "c", NULL);
	start("num_retries = 3; allowed_fails = 1000;\n"
	      "  circuit_failure_threshold = 1000;",
	      h_fmt("%s,\n%s,\n%s", dep("a", "main", a.port, ""),
	            dep("b", "one", b.port, "num_retries = 1;"),
	            dep("c", "backup", c.port, "")),
	      "fallbacks = ( { group = \"main\"; to = [ \"backup\" ]; },\n"
	      "  { group = \"one\"; to = [ \"backup\" ]; } );");
	struct h_resp *r =
	    chat("{\"model\":\"main\"," HI ",\"num_retries\":1}");
	cr_assert_str_eq(served_by(r), "c");
	cr_assert_eq(h_mock_stat(&a, "requests"), 2, "request override");
	r = chat("{\"model\":\"one\"," HI "}");
	cr_assert_str_eq(served_by(r), "c");
	cr_assert_eq(h_mock_stat(&b, "requests"), 2, "deployment override");
	h_mock_reset(&a);
	r = chat(BODY);
	cr_assert_str_eq(served_by(r), "c");
	cr_assert_eq(h_mock_stat(&a, "requests"), 4, "router num_retries");
}

/* The error trail names each skipped candidate with its reason beside the
 * attempts that failed. */
Test(routing, trail_names_skipped)
{
	struct h_mock a, b, c;
	char *out;

	h_mock_start(&a, "a", NULL);
	h_mock_start(&b, "b", "--mode", "status", "--status", "503", NULL);
	h_mock_start(&c, "c", NULL);
	start("num_retries = 0; allowed_fails = 1000;\n"
	      "  circuit_failure_threshold = 1000;",
	      h_fmt("%s,\n%s,\n%s", dep("a", "main", a.port, "weight = 0;"),
	            dep("b", "main", b.port, ""), dep("c", "main", c.port, "")),
	      NULL);
	cr_assert_eq(
	    h_run(&out, h_bin("llmfctl"), "-c", h_conf(), "drain", "c", NULL),
	    0, "%s", out);
	cr_assert_str_eq(dep_field("c", "state"), "drained");
	struct h_resp *r = chat(BODY);
	cr_assert_eq(r->status, 503, "%s", h_desc(r));
	int ia = trail_index(r->body, "a"), ib = trail_index(r->body, "b"),
	    ic = trail_index(r->body, "c");
	cr_assert(ia >= 0 && ib >= 0 && ic >= 0, "%s", r->body);
	cr_assert_str_eq(
	    h_json(r->body, h_fmt("error.attempts.%d.skipped", ia)),
	    "weight 0");
	cr_assert_str_eq(
	    h_json(r->body, h_fmt("error.attempts.%d.skipped", ic)), "drained");
	cr_assert_eq(
	    h_json_long(r->body, h_fmt("error.attempts.%d.status", ib), -1),
	    503);
	cr_assert_eq(h_mock_stat(&a, "requests") + h_mock_stat(&c, "requests"),
	             0);
}

/* An OpenAI-compatible upstream (Ollama) that silently truncated the
 * prompt answers 200 with prompt_tokens at the context size: the answer is
 * passed on, flagged with x-llmfd-warning. A normal answer is not flagged. */
Test(routing, silent_truncation_flagged)
{
	struct h_mock a;

	h_mock_start(&a, "a", "--usage", "4096,5", NULL);
	start("num_retries = 0;",
	      dep("a", "main", a.port, "context_window = 4096;"), NULL);
	struct h_resp *r = chat(BODY);
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert(h_header(r, "x-llmfd-warning") != NULL, "%s", h_desc(r));
	cr_assert_eq(h_mock_config(&a, "{\"usage\":\"10,5\"}"), 0);
	r = chat(BODY);
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert(h_header(r, "x-llmfd-warning") == NULL, "%s", h_desc(r));
}
