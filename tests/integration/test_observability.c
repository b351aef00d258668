/* Observability, end to end: /metrics values before and after known
 * requests (and promtool check metrics), access log lines (text and json)
 * for a success, a failure and a client that went away, an exec hook and a
 * webhook receiving a fallback event, webhook retries, and a hanging hook
 * that must not slow requests down. */
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "tests/integration/harness.h"

#define CHAT "/v1/chat/completions"
#define BODY(model, stream)                                                    \
	"{\"model\":\"" model "\",\"stream\":" stream ",\"messages\":[{"       \
	"\"role\":\"user\",\"content\":\"PROMPT-TEXT\"}]}"

/* Groups: primary (bad) falls back to backup (good); broken (bad2) has no
 * fallback; slow (a slow mock). Args: log_format, hook path, webhook URL,
 * then the ports of bad, good, bad, slow. */
#define OBS_CONF                                                               \
	"daemon = { workers = 2; listen = \"llmfd.sock\";\n"                   \
	"  health_table = \"health\"; log_level = \"info\";\n"                 \
	"  log_format = \"%s\"; access_log = \"access.log\";\n"                \
	"  on_event_exec = \"%s\"; on_event_webhook = \"%s\"; };\n"            \
	"router = { num_retries = 0; allowed_fails = 100;\n"                   \
	"  circuit_failure_threshold = 1000; timeout_ms = 10000; };\n"         \
	"deployments = (\n"                                                    \
	"  { name = \"bad\"; group = \"primary\"; provider = \"openai\";\n"    \
	"    model = \"m\"; api_key = \"$TEST_KEY\";\n"                        \
	"    base_url = \"http://127.0.0.1:%d/v1\"; },\n"                      \
	"  { name = \"good\"; group = \"backup\"; provider = \"openai\";\n"    \
	"    model = \"m\"; api_key = \"$TEST_KEY\";\n"                        \
	"    base_url = \"http://127.0.0.1:%d/v1\"; },\n"                      \
	"  { name = \"bad2\"; group = \"broken\"; provider = \"openai\";\n"    \
	"    model = \"m\"; api_key = \"$TEST_KEY\";\n"                        \
	"    base_url = \"http://127.0.0.1:%d/v1\"; },\n"                      \
	"  { name = \"slow\"; group = \"slow\"; provider = \"openai\";\n"      \
	"    model = \"m\"; api_key = \"$TEST_KEY\";\n"                        \
	"    base_url = \"http://127.0.0.1:%d/v1\"; }\n);\n"                   \
	"fallbacks = ( { group = \"primary\"; to = [ \"backup\" ]; } );\n"

#define L_GOOD "{deployment=\"good\",group=\"backup\",provider=\"openai\"}"
#define L_BAD  "{deployment=\"bad\",group=\"primary\",provider=\"openai\"}"

TestSuite(obs, .init = h_setup, .fini = h_teardown, .timeout = 60);

static struct h_mock good, bad, slow, sink;
static pid_t master;

/* A hook script that appends its stdin to hook.out and its environment's
 * event type and key (if any) to hook.env; sleeps first if hang is set. */
static const char *
write_hook(int hang)
{
	const char *p = h_write(
	    "hook.sh",
	    "#!/bin/sh\n%s"
	    "cat >>'%s'\n"
	    "echo \"env=$LLMFD_EVENT key=${TEST_KEY:-none}\" >>'%s'\n",
	    hang ? "sleep 60\n" : "", h_path("hook.out"), h_path("hook.env"));
	cr_assert(h_run(&(char *){NULL}, "/bin/chmod", "+x", p, NULL) == 0);
	return p;
}

/* Start the mocks and the daemon with a log format and hooks. */
static void
start(const char *fmt, const char *hook, int webhook)
{
	h_mock_start(&good, "good", NULL);
	h_mock_start(&bad, "bad", "--mode", "status", "--status", "503", NULL);
	h_mock_start(&slow, "slow", "--latency-ms", "3000", NULL);
	h_mock_start(&sink, "sink", NULL);
	master =
	    h_llmfd_start(OBS_CONF, fmt, hook ? hook : "",
	                  webhook ? h_fmt("http://127.0.0.1:%d/hook/v1/chat/"
	                                  "completions",
	                                  sink.port)
	                          : "",
	                  bad.port, good.port, bad.port, slow.port);
}

/* POST a chat body; returns the status. */
static int
chat(const char *body)
{
	return h_unix("POST", CHAT, body)->status;
}

/* A scrape of /metrics (asserts 200). */
static const char *
scrape(void)
{
	struct h_resp *r = h_unix("GET", "/metrics", NULL);

	cr_assert(r->status == 200, "%s", h_desc(r));
	return r->body;
}

/* Value of the sample whose series (name and labels) is s; 0 if absent. */
static double
val(const char *text, const char *s)
{
	size_t n = strlen(s);

	for (const char *p = text; p && *p; p = strchr(p, '\n')) {
		p += *p == '\n';
		if (strncmp(p, s, n) == 0 && p[n] == ' ')
			return strtod(p + n + 1, NULL);
	}
	return 0;
}

/* promtool check metrics on a scrape: 0 if it is clean. */
static int
promtool(const char *text)
{
	char *out;
	int rc = h_run(&out, "/bin/sh", "-c",
	               h_fmt("promtool check metrics <'%s' 2>&1",
	                     h_write("scrape.txt", "%s", text)),
	               NULL);

	cr_log_info("promtool: %s", out);
	return rc;
}

/* Wait until file name contains needle (or 8 s pass); its text. */
static const char *
wait_for(const char *name, const char *needle)
{
	const char *t = NULL;

	for (int i = 0; i < 80; i++) {
		if ((t = h_read(h_path(name))) != NULL && strstr(t, needle))
			return t;
		h_sleep_ms(100);
	}
	return t ? t : "";
}

/* The access log line containing needle, or NULL. */
static char *
line_with(const char *log, const char *needle)
{
	const char *p = strstr(log, needle), *b, *e;

	if (p == NULL)
		return NULL;
	for (b = p; b > log && b[-1] != '\n'; b--)
		;
	e = strchr(p, '\n');
	return h_fmt("%.*s", (int)(e ? e - b : (long)strlen(b)), b);
}

Test(obs, metrics_follow_known_requests)
{
	const char *m0, *m1;
	struct h_resp *r;

	start("text", NULL, 0);
	m0 = scrape();
	r = h_unix("GET", "/metrics", NULL);
	cr_assert(strncmp(h_header(r, "content-type"),
	                  "text/plain; version=0.0.4", 25) == 0);
	cr_assert(promtool(m0) == 0, "promtool rejected the idle scrape");
	cr_assert(chat(BODY("primary", "false")) == 200);
	cr_assert(chat(BODY("backup", "true")) == 200);
	cr_assert(chat(BODY("broken", "false")) == 503);
	m1 = scrape();
	cr_assert(promtool(m1) == 0, "promtool rejected the scrape");
#define D(s) (val(m1, s) - val(m0, s))
	cr_assert(D("llmfd_requests_total") == 3);
	cr_assert(D("llmfd_attempts_total" L_GOOD) == 2);
	cr_assert(D("llmfd_attempts_total" L_BAD) == 1);
	cr_assert(D("llmfd_attempt_outcomes_total{deployment=\"good\",group="
	            "\"backup\",provider=\"openai\",class=\"success\"}") == 2);
	cr_assert(D("llmfd_attempt_outcomes_total{deployment=\"bad\",group="
	            "\"primary\",provider=\"openai\",class=\"transient\"}") ==
	          1);
	cr_assert(D("llmfd_fallbacks_from_total" L_BAD) == 1);
	cr_assert(D("llmfd_fallbacks_to_total" L_GOOD) == 1);
	/* both answers' usage, the stream's included (llmfd asks for it) */
	cr_assert(D("llmfd_tokens_in_total" L_GOOD) == 20);
	cr_assert(D("llmfd_tokens_out_total" L_GOOD) == 10);
	cr_assert(D("llmfd_events_total") >= 1);
#undef D
	cr_assert(val(m1, "llmfd_request_duration_seconds_count" L_GOOD) == 2);
	cr_assert(val(m1, "llmfd_request_duration_seconds_bucket{deployment="
	                  "\"good\",group=\"backup\",provider=\"openai\","
	                  "le=\"+Inf\"}") == 2);
	cr_assert(val(m1, "llmfd_time_to_first_token_seconds_count" L_GOOD) ==
	          1);
	cr_assert(val(m1, "llmfd_deployment_state" L_GOOD) == 0);
	cr_assert(val(m1, "llmfd_config_generation") == 1);
	cr_assert(strstr(m1, "# TYPE llmfd_request_duration_seconds "
	                     "histogram\n") != NULL);
}

Test(obs, metrics_show_cooldown_state)
{
	const char *m;

	start("text", NULL, 0);
	cr_assert(h_run(&(char *){NULL}, h_bin("llmfctl"), "-c", h_conf(),
	                "cooldown", "bad", "30", NULL) == 0);
	m = scrape();
	cr_assert(val(m, "llmfd_deployment_state" L_BAD) == 1, "%s", m);
}

Test(obs, access_log_text)
{
	const char *log;
	char *l;

	start("text", NULL, 0);
	cr_assert(chat(BODY("primary", "false")) == 200);
	cr_assert(chat(BODY("backup", "true")) == 200);
	cr_assert(chat(BODY("broken", "false")) == 503);
	log = wait_for("access.log", "model=broken");
	l = line_with(log, "model=primary");
	cr_assert(l && strstr(l, " deployment=good provider=openai status=200 "
	                         "code=- attempts=2 "),
	          "%s", log);
	cr_assert(strstr(l, " ttft_ms=-1 prompt_tokens=10 completion_tokens=5 "
	                    "stream=0 trail=bad:503:transient:"));
	cr_assert(strncmp(l, "time=20", 7) == 0 && strstr(l, " id=req-"));
	l = line_with(log, "model=backup");
	cr_assert(l && strstr(l, " stream=1 trail=-") &&
	              !strstr(l, "ttft_ms=-1"),
	          "%s", l);
	l = line_with(log, "model=broken");
	cr_assert(l && strstr(l, " deployment=- provider=- status=503 "
	                         "code=all_deployments_failed attempts=1 "),
	          "%s", l);
	cr_assert(strstr(l, " trail=bad2:503:transient:"));
	cr_assert(!strstr(log, "PROMPT-TEXT") && !strstr(log, "says hi") &&
	          !strstr(log, "SECRET"));
}

Test(obs, access_log_json)
{
	const char *log;
	char *l;

	start("json", NULL, 0);
	cr_assert(chat(BODY("backup", "false")) == 200);
	cr_assert(chat(BODY("broken", "true")) == 503);
	log = wait_for("access.log", "\"broken\"");
	l = line_with(log, "\"backup\"");
	cr_assert(l && h_json_valid(l), "%s", log);
	cr_assert_str_eq(h_json(l, "deployment"), "good");
	cr_assert_str_eq(h_json(l, "provider"), "openai");
	cr_assert_str_eq(h_json(l, "code"), "-");
	cr_assert_str_eq(h_json(l, "stream"), "false");
	cr_assert_str_eq(h_json(l, "trail"), "-");
	cr_assert(h_json_long(l, "status", 0) == 200);
	cr_assert(h_json_long(l, "attempts", 0) == 1);
	cr_assert(h_json_long(l, "prompt_tokens", 0) == 10);
	cr_assert(h_json_long(l, "completion_tokens", 0) == 5);
	cr_assert(h_json_long(l, "ttft_ms", 0) == -1);
	l = line_with(log, "\"broken\"");
	cr_assert(l && h_json_valid(l), "%s", log);
	cr_assert(h_json_long(l, "status", 0) == 503);
	cr_assert_str_eq(h_json(l, "deployment"), "-");
	cr_assert_str_eq(h_json(l, "code"), "all_deployments_failed");
	cr_assert_str_eq(h_json(l, "stream"), "true");
	cr_assert(strncmp(h_json(l, "trail"), "bad2:503:transient:", 19) == 0);
}

Test(obs, access_log_client_went_away)
{
	struct h_req q = {.method = "POST",
	                  .path = CHAT,
	                  .body = BODY("slow", "false"),
	                  .timeout_ms = 300};
	const char *log;
	char *l;

	start("text", NULL, 0);
	q.unix_path = h_sock();
	cr_assert(h_http(&q)->status == 0);
	log = wait_for("access.log", "model=slow");
	l = line_with(log, "model=slow");
	cr_assert(l && strstr(l, " status=499 code=client_closed "), "%s", log);
	cr_assert(strstr(l, " trail=slow:0:cancelled:"), "%s", l);
}

Test(obs, exec_hook_gets_fallback_event)
{
	const char *out, *env, *ev;

	start("text", write_hook(0), 0);
	cr_assert(chat(BODY("primary", "false")) == 200);
	out = wait_for("hook.out", "\"fallback\"");
	ev = line_with(out, "\"fallback\"");
	cr_assert(ev && h_json_valid(ev), "%s", out);
	cr_assert_str_eq(h_json(ev, "deployment"), "good");
	cr_assert(strstr(h_json(ev, "text"), "bad -> good") != NULL);
	cr_assert(strlen(h_json(ev, "time")) == 24 &&
	          h_json(ev, "time")[23] == 'Z');
	env = wait_for("hook.env", "env=fallback");
	cr_assert(strstr(env, "env=fallback key=none") != NULL,
	          "hook saw the key: %s", env);
}

Test(obs, webhook_gets_fallback_event)
{
	const char *reqs = NULL;

	start("text", NULL, 1);
	cr_assert(chat(BODY("primary", "false")) == 200);
	h_mock_wait_stat(&sink, "ok", 1, 8000);
	reqs = h_mock_requests(&sink);
	cr_assert(reqs && h_json_count(reqs, "") == 1, "%s", reqs);
	cr_assert_str_eq(h_json(reqs, "0.path"), "/hook/v1/chat/completions");
	cr_assert_str_eq(h_json(reqs, "0.headers.content-type"),
	                 "application/json");
	cr_assert(strstr(h_json(reqs, "0.body"), "\"type\":\"fallback\""));
	cr_assert_str_eq(h_json(h_json(reqs, "0.body"), "deployment"), "good");
}

Test(obs, webhook_retries_a_failing_endpoint)
{
	start("text", NULL, 1);
	cr_assert(h_mock_config(&sink, "{\"mode\":\"status\",\"status\":503,"
	                               "\"fail_first\":2}") == 0);
	cr_assert(chat(BODY("primary", "false")) == 200);
	cr_assert(h_mock_wait_stat(&sink, "ok", 1, 8000) == 1);
	cr_assert(h_mock_stat(&sink, "failed") == 2);
	cr_assert(h_log_has("on_event_webhook: try 2 failed (status 503); "
	                    "retrying"));
}

/* How many of pid's descriptors are TCP connections to port on the
 * loopback (by socket inode, from /proc/net/tcp). */
static int
conns_to(pid_t pid, int port)
{
	unsigned long inodes[64], ino;
	unsigned rport, st;
	int n = 0, found = 0;
	char line[512], path[64], link[64];
	FILE *f = fopen("/proc/net/tcp", "r");
	DIR *d;
	struct dirent *e;

	cr_assert(f != NULL);
	while (fgets(line, sizeof line, f) && n < 64)
		if (sscanf(line,
		           " %*d: %*x:%*x %*x:%x %x %*x:%*x %*x:%*x %*x "
		           "%*u %*d %lu",
		           &rport, &st, &ino) == 3 &&
		    (int)rport == port && st == 1 /* ESTABLISHED */)
			inodes[n++] = ino;
	fclose(f);
	snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
	cr_assert((d = opendir(path)) != NULL);
	while ((e = readdir(d)) != NULL) {
		char fp[384];
		ssize_t k;

		snprintf(fp, sizeof fp, "%s/%s", path, e->d_name);
		if ((k = readlink(fp, link, sizeof link - 1)) <= 0)
			continue;
		link[k] = '\0';
		if (sscanf(link, "socket:[%lu]", &ino) != 1)
			continue;
		for (int i = 0; i < n; i++)
			found += inodes[i] == ino;
	}
	closedir(d);
	return found;
}

/* A worker forked while the master delivers a webhook does not inherit
 * the delivery's connection (it would hold it open past the master's
 * close, and could write into it). */
Test(obs, respawned_worker_holds_no_webhook_connection)
{
	pid_t before[8], after[8];
	int n, m = 0, fresh = -1;

	start("text", NULL, 1);
	cr_assert(h_mock_config(&sink, "{\"latency_ms\":5000}") == 0);
	cr_assert(chat(BODY("primary", "false")) == 200);
	for (int i = 0; i < 100 && conns_to(master, sink.port) == 0; i++)
		usleep(20000);
	cr_assert(conns_to(master, sink.port) == 1,
	          "the master is not delivering the webhook");
	n = h_children(master, before, 8);
	cr_assert(n == 2);
	kill(before[0], SIGKILL);
	for (int i = 0; i < 200 && fresh < 0; i++) {
		usleep(10000);
		m = h_children(master, after, 8);
		for (int k = 0; k < m; k++)
			if (after[k] != before[0] && after[k] != before[1])
				fresh = after[k];
	}
	cr_assert(fresh > 0, "the worker was not respawned");
	cr_assert(conns_to(master, sink.port) == 1, "delivery over already");
	/* a fork holds the master's descriptors until the worker's setup
	 * closes them: the test may look in between (it did under valgrind) */
	for (int i = 0; i < h_slow(2000) / 20 && conns_to(fresh, sink.port);
	     i++)
		usleep(20000);
	cr_assert_eq(conns_to(fresh, sink.port), 0,
	             "the new worker holds the webhook's connection");
}

Test(obs, hanging_hook_does_not_slow_requests)
{
	long t0;

	start("text", write_hook(1), 0);
	t0 = h_now_ms();
	for (int i = 0; i < 8; i++)
		cr_assert(chat(BODY("primary", "false")) == 200);
	cr_assert(h_now_ms() - t0 < 2000, "8 requests took %ld ms",
	          h_now_ms() - t0);
	for (int i = 0; i < 80 && !h_log_has("still running after 5 s"); i++)
		h_sleep_ms(100);
	cr_assert(h_log_has("on_event_exec: pid "));
	cr_assert(h_log_has("still running after 5 s; killed"));
}
