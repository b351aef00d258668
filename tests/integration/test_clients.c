/* Client identity, limits, budgets and spend end to end (issue 17): two
 * uids on the socket get their own limits (the test creates a second
 * user: it must run as root, as CI does); a bad TCP key gets 401 and no
 * key or hash appears in any log, metric, error, spend file or llmfctl
 * output; a budget is spent by the mock's known usage and then refused
 * until its reset; spend survives kill -9 of the master and a reload; a
 * low-priority client is shed while a high-priority one waits for
 * capacity and is served. */
#include <arpa/inet.h>
#include <errno.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <openssl/evp.h>

#include "tests/integration/harness.h"

#define CHAT  "/v1/chat/completions"
#define MSGS  "/v1/messages"
#define HI    "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"
#define KEY_A "llmfd-test-key-notebook-7c1e9a"
#define KEY_B "llmfd-test-key-batch-3f5d2b08"
#define KEY_X "llmfd-wrong-key-aa55aa55aa55"

static char g_user[32]; /* the user a test created, "" if none */

/* Remove the user a test created, then the harness's tear-down. */
static void
teardown(void)
{
	char *out;

	if (g_user[0] != '\0')
		h_run(&out, "/usr/sbin/userdel", g_user, NULL);
	g_user[0] = '\0';
	h_teardown();
}

TestSuite(clients, .init = h_setup, .fini = teardown, .timeout = 120);

/* Lower-case hex SHA-256 of s (harness-owned). */
static const char *
sha_hex(const char *s)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;
	char hex[65];

	cr_assert_eq(EVP_Digest(s, strlen(s), md, &n, EVP_sha256(), NULL), 1);
	for (unsigned i = 0; i < n; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	return h_fmt("%s", hex);
}

/* The same in upper case. */
static const char *
upper(const char *s)
{
	char *u = h_fmt("%s", s);

	for (char *p = u; *p; p++)
		if (*p >= 'a' && *p <= 'f')
			*p = (char)(*p - 'a' + 'A');
	return u;
}

/* A loopback TCP port that was free a moment ago. */
static int
free_port(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = -1;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
		port = ntohs(sa.sin_port);
	if (fd >= 0)
		close(fd);
	cr_assert(port > 0, "no free port: %s", strerror(errno));
	return port;
}

/* An OpenAI deployment on mock m. */
static const char *
dep(const char *name, const char *group, const struct h_mock *m)
{
	return h_fmt(
	    "  { name = \"%s\"; group = \"%s\"; provider = \"openai\";"
	    " model = \"gpt-4o\"; base_url = \"http://127.0.0.1:%d/v1\";"
	    " api_key = \"sk-upstream-0123456789abcdef\"; }",
	    name, group, m->port);
}

#define PRICES                                                                 \
	"prices = ( { model = \"gpt-4o\"; input_per_mtok = 2.5; "              \
	"output_per_mtok = 10; cached_input_per_mtok = 1.25; } );\n"

/* Start llmfd: daemon settings, deployments, the rest. */
static pid_t
start(const char *daemon, const char *deployments, const char *rest)
{
	return h_llmfd_start(
	    "daemon = { workers = 2; listen = \"llmfd.sock\"; health_table = "
	    "\"health\"; access_log = \"access.log\"; %s };\n"
	    "router = { backoff_base_ms = 10; backoff_max_ms = 50; };\n"
	    "deployments = (\n%s\n);\n" PRICES "%s\n",
	    daemon, deployments, rest);
}

/* POST body to path over the socket (port 0) or TCP with header lines. */
static struct h_resp *
post(int port, const char *path, const char *headers, const char *body)
{
	struct h_req q = {.unix_path = port ? NULL : h_sock(),
	                  .port = port,
	                  .method = "POST",
	                  .path = path,
	                  .headers = headers,
	                  .body = body};

	return h_http(&q);
}

/* A chat request for model g (or model) with header lines. */
static struct h_resp *
chat(int port, const char *headers)
{
	return post(port, CHAT, headers, "{\"model\":\"g\"," HI "}");
}

/* llmfctl with up to three arguments; exit code 0 required. */
static char *
ctl(const char *a, const char *b, const char *c)
{
	char *out;
	int rc = h_run(&out, h_bin("llmfctl"), "-c", h_conf(), a, b, c, NULL);

	cr_assert_eq(rc, 0, "llmfctl %s %s %s: %s", a, b ? b : "", c ? c : "",
	             out);
	return out;
}

/* GET /metrics over the socket. */
static const char *
metrics(void)
{
	struct h_resp *r = h_unix("GET", "/metrics", NULL);

	cr_assert_eq(r->status, 200);
	return r->body;
}

/* ---- two uids ---- */

/* Create a system user for the test (root only); its uid and gid. */
static void
make_user(uid_t *uid, gid_t *gid)
{
	struct passwd *pw;
	char *out;

	if (geteuid() != 0)
		cr_assert_fail("this test creates a second user and must run "
		               "as root (CI does)");
	snprintf(g_user, sizeof g_user, "llmfdt%d", (int)getpid() % 1000000);
	h_run(&out, "/usr/sbin/userdel", g_user, NULL); /* a leftover */
	cr_assert_eq(h_run(&out, "/usr/sbin/useradd", "-M", "-N", "-r", "-s",
	                   "/usr/sbin/nologin", g_user, NULL),
	             0, "useradd: %s", out);
	cr_assert_not_null(pw = getpwnam(g_user), "no user %s", g_user);
	*uid = pw->pw_uid;
	*gid = pw->pw_gid;
}

/* Send n chat requests on the socket as uid/gid from a child process;
 * their statuses into st. */
static void
chat_as(uid_t uid, gid_t gid, int n, int *st)
{
	int pfd[2], k = 0;
	pid_t pid;

	cr_assert_eq(pipe(pfd), 0);
	if ((pid = fork()) == 0) {
		close(pfd[0]);
		if (setgroups(0, NULL) == -1 || setgid(gid) == -1 ||
		    setuid(uid) == -1)
			_exit(3);
		for (int i = 0; i < n; i++) {
			int s = chat(0, NULL)->status;

			if (write(pfd[1], &s, sizeof s) != sizeof s)
				_exit(4);
		}
		_exit(0);
	}
	close(pfd[1]);
	while (k < n && read(pfd[0], &st[k], sizeof st[k]) == sizeof st[k])
		k++;
	close(pfd[0]);
	cr_assert_eq(waitpid(pid, NULL, 0), pid);
	cr_assert_eq(k, n, "the child as uid %u answered %d of %d", uid, k, n);
}

/* Two uids on the socket, two clients: each gets its own rpm. */
Test(clients, two_uids_get_their_own_limits)
{
	struct h_mock m;
	uid_t uid;
	gid_t gid;
	int st[3];
	char *out, *log;

	make_user(&uid, &gid);
	h_mock_start(&m, "m", NULL);
	start("listen_mode = \"0666\";", dep("d1", "g", &m),
	      h_fmt("clients = ( { name = \"admin\"; uid = 0; rpm = 100; },\n"
	            "  { name = \"app2\"; uid = \"%s\"; rpm = 2; } );",
	            g_user));
	cr_assert_eq(chmod(h_dir(), 0755), 0);
	chat_as(uid, gid, 3, st);
	cr_assert_eq(st[0], 200);
	cr_assert_eq(st[1], 200);
	cr_assert_eq(st[2], 429, "app2's third request in a minute");
	for (int i = 0; i < 4; i++)
		cr_assert_eq(chat(0, NULL)->status, 200,
		             "admin is not limited");
	out = ctl("clients", "--json", NULL);
	cr_assert_not_null(strstr(out, h_fmt("{\"name\":\"app2\",\"identity\":"
	                                     "\"uid %u\"",
	                                     (unsigned)uid)),
	                   "%s", out);
	cr_assert_not_null(strstr(out, "\"requests\":2,\"refused\":1"), "%s",
	                   out);
	cr_assert_not_null(strstr(out, "{\"name\":\"admin\",\"identity\":"
	                               "\"uid 0\""),
	                   "%s", out);
	out = ctl("clients", NULL, NULL);
	cr_assert_not_null(strstr(out, "app2"), "%s", out);
	log = h_read(h_path("access.log"));
	cr_assert_not_null(
	    strstr(log, h_fmt("client=app2 uid=%u pid=", (unsigned)uid)), "%s",
	    log);
	cr_assert_not_null(strstr(log, "code=client_rate_limited"), "%s", log);
	cr_assert_not_null(strstr(log, "client=admin uid=0 pid="), "%s", log);
	cr_assert(h_log_has(h_fmt("client app2 (uid %u pid", (unsigned)uid)));
	cr_assert_not_null(strstr(metrics(),
	                          "llmfd_client_refused_total{"
	                          "client=\"app2\",reason=\"rpm\"} 1"));
}

/* ---- keys ---- */

/* Whether text holds any form of the keys or the hash. */
static void
no_secret(const char *what, const char *text)
{
	const char *keys[] = {KEY_A, KEY_X, sha_hex(KEY_A),
	                      upper(sha_hex(KEY_A)),
	                      h_fmt("%.16s", sha_hex(KEY_A))};

	cr_assert_not_null(text, "%s: nothing to read", what);
	for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
		cr_assert_null(strstr(text, keys[i]), "%s shows \"%s\":\n%s",
		               what, keys[i], text);
}

/* The head and body of a response, for the secret check. */
static const char *
whole(const struct h_resp *r)
{
	return h_fmt("%s\n%s", r->head ? r->head : "", r->body ? r->body : "");
}

/* A bad or missing TCP key is 401 in the client's protocol; no key or
 * hash shows anywhere. */
Test(clients, bad_tcp_key_401_and_never_shown)
{
	struct h_mock m;
	struct h_resp *r, *rs[8];
	int port = free_port(), n = 0;
	const char *last;

	h_mock_start(&m, "m", NULL);
	start(h_fmt("tcp = \"127.0.0.1:%d\"; tcp_require_key = true; "
	            "log_level = \"debug\"; state_dir = \"state\";",
	            port),
	      h_fmt("%s,\n%s", dep("d1", "g", &m), dep("d2", "other", &m)),
	      h_fmt("clients = ( { name = \"notebook\"; key_sha256 = \"%s\"; "
	            "groups = [ \"g\" ]; } );",
	            sha_hex(KEY_A)));
	rs[n++] = r = chat(port, NULL);
	cr_assert_eq(r->status, 401, "%s", h_desc(r));
	cr_assert_str_eq(h_json(r->body, "error.code"), "invalid_api_key");
	cr_assert_not_null(h_header(r, "WWW-Authenticate"));
	rs[n++] = r = chat(port, "Authorization: Bearer " KEY_X "\r\n");
	cr_assert_eq(r->status, 401, "%s", h_desc(r));
	cr_assert_str_eq(h_json(r->body, "error.message"), "invalid API key");
	rs[n++] = r = post(port, MSGS, "x-api-key: " KEY_X "\r\n",
	                   "{\"model\":\"g\",\"max_tokens\":9," HI "}");
	cr_assert_eq(r->status, 401, "%s", h_desc(r));
	cr_assert_str_eq(h_json(r->body, "type"), "error");
	cr_assert_str_eq(h_json(r->body, "error.type"), "authentication_error");
	rs[n++] = r = chat(port, "Authorization: Bearer " KEY_A "\r\n");
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	/* the mock's 10 + 5 tokens at 2.5 and 10 USD per Mtok */
	cr_assert_str_eq(h_header(r, "x-llmfd-cost-usd"), "0.000075");
	rs[n++] = r = post(port, MSGS, "x-api-key: " KEY_A "\r\n",
	                   "{\"model\":\"g\",\"max_tokens\":9," HI "}");
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	/* a group the client may not use: 403 in each protocol */
	rs[n++] = r = post(port, CHAT, "Authorization: Bearer " KEY_A "\r\n",
	                   "{\"model\":\"other\"," HI "}");
	cr_assert_eq(r->status, 403, "%s", h_desc(r));
	cr_assert_str_eq(h_json(r->body, "error.code"), "model_not_allowed");
	rs[n++] = r = post(port, MSGS, "x-api-key: " KEY_A "\r\n",
	                   "{\"model\":\"other\",\"max_tokens\":9," HI "}");
	cr_assert_eq(r->status, 403, "%s", h_desc(r));
	cr_assert_str_eq(h_json(r->body, "error.type"), "permission_error");
	/* the Unix socket ignores a key it does not know */
	rs[n++] = r = chat(0, "Authorization: Bearer " KEY_X "\r\n");
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	h_sleep_ms(1500); /* the spend file is written */
	for (int i = 0; i < n; i++)
		no_secret(h_fmt("response %d", i), whole(rs[i]));
	last = h_tcp(m.port, "GET", "/_mock/last", NULL)->body;
	no_secret("the upstream request", last);
	no_secret("llmfd.log", h_log());
	no_secret("access.log", h_read(h_path("access.log")));
	no_secret("state/spend", h_read(h_path("state/spend")));
	no_secret("/metrics", metrics());
	no_secret("llmfctl clients", ctl("clients", NULL, NULL));
	no_secret("llmfctl clients --json", ctl("clients", "--json", NULL));
	no_secret("llmfctl spend", ctl("spend", "--by", "client"));
	no_secret("llmfctl spend --json", ctl("spend", "--json", NULL));
	no_secret("llmfctl status", ctl("status", "--json", NULL));
	no_secret("llmfctl events", ctl("events", NULL, NULL));
	no_secret("llmfctl show", ctl("show", "d1", NULL));
	cr_assert_not_null(strstr(ctl("clients", NULL, NULL), "1 key"));
	cr_assert_not_null(strstr(metrics(), "llmfd_unidentified_total 3\n"));
}

/* ---- budgets ---- */

/* The start of the next UTC day as "YYYY-MM-DDT00:00:00Z", and the
 * seconds until it. */
static const char *
next_midnight(long *secs)
{
	time_t now = time(NULL), t = (now / 86400 + 1) * 86400;
	struct tm tm;
	char s[32];

	gmtime_r(&t, &tm);
	strftime(s, sizeof s, "%Y-%m-%dT%H:%M:%SZ", &tm);
	*secs = (long)(t - now);
	return h_fmt("%s", s);
}

/* A daily budget is spent by known usage (1000 + 500 tokens at 2.5 / 10
 * USD per Mtok: 0.0075 a request), then refused until midnight UTC in
 * each protocol; the crossing reaches the event hook with the client and
 * the amount; cached tokens are priced as such. */
Test(clients, budget_spent_then_refused_until_reset)
{
	struct h_mock m, mc;
	struct h_resp *r;
	const char *reset, *ev = NULL, *hook;
	long secs, ra;

	hook =
	    h_write("hook.sh", "#!/bin/sh\ncat >> %s\n", h_path("events.json"));
	cr_assert_eq(chmod(hook, 0755), 0);
	h_mock_start(&m, "m", "--usage", "1000,500", NULL);
	h_mock_start(&mc, "cached", "--usage", "1000,500,400", NULL);
	start(h_fmt("on_event_exec = \"%s\";", hook),
	      h_fmt("%s,\n%s", dep("d1", "g", &m), dep("d2", "gc", &mc)),
	      "clients = ( { name = \"me\"; uid = 0; daily_budget_usd = 0.02; "
	      "} );");
	r = post(0, CHAT, NULL, "{\"model\":\"gc\"," HI "}");
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	/* 600 * 2.5 + 400 * 1.25 + 500 * 10 */
	cr_assert_str_eq(h_header(r, "x-llmfd-cost-usd"), "0.007");
	for (int i = 0; i < 2; i++) {
		r = chat(0, NULL);
		cr_assert_eq(r->status, 200, "%d: %s", i, h_desc(r));
		cr_assert_str_eq(h_header(r, "x-llmfd-cost-usd"), "0.0075");
	}
	r = chat(0, NULL);
	cr_assert_eq(r->status, 429, "0.022 spent: %s", h_desc(r));
	reset = next_midnight(&secs);
	cr_assert_str_eq(h_json(r->body, "error.code"), "budget_exceeded");
	cr_assert_str_eq(h_json(r->body, "error.message"),
	                 h_fmt("the daily budget of $0.02 for client 'me' is "
	                       "spent ($0.022); it resets at %s",
	                       reset));
	ra = atol(h_header(r, "Retry-After"));
	cr_assert(ra >= secs - 5 && ra <= secs + 5,
	          "Retry-After %ld, %ld s "
	          "to midnight",
	          ra, secs);
	r = post(0, MSGS, NULL, "{\"model\":\"g\",\"max_tokens\":9," HI "}");
	cr_assert_eq(r->status, 429, "%s", h_desc(r));
	cr_assert_str_eq(h_json(r->body, "error.type"), "rate_limit_error");
	cr_assert_not_null(strstr(h_json(r->body, "error.message"), reset));
	/* the hook runs as its own process, and appends: wait for this
	 * event, not for the file (under valgrind the exec takes seconds) */
	for (int i = 0; i < h_slow(5000) / 50; i++) {
		ev = h_read(h_path("events.json"));
		if (ev && strstr(ev, "\"type\":\"budget_spent\""))
			break;
		h_sleep_ms(50);
	}
	for (int i = 0; i < 100 && !h_log_has("event budget_spent"); i++)
		h_sleep_ms(50);
	cr_assert(h_log_has("event budget_spent"));
	cr_assert_not_null(ev, "the hook never ran");
	cr_assert_not_null(strstr(ev, "\"type\":\"budget_spent\""), "%s", ev);
	cr_assert_not_null(strstr(ev, "\"client\":\"me\""), "%s", ev);
	cr_assert_not_null(strstr(ev, "\"usd\":0.022"), "%s", ev);
	cr_assert_not_null(
	    strstr(h_read(h_path("access.log")), "client=me uid=0 pid="));
	cr_assert_not_null(
	    strstr(h_read(h_path("access.log")), "cost_usd=0.007\n"));
	cr_assert_not_null(strstr(metrics(), "llmfd_client_refused_total{"
	                                     "client=\"me\",reason=\"budget\"} "
	                                     "2\n"));
}

/* A stream is priced too: llmfd asks the OpenAI-shaped upstream for its
 * usage and keeps that chunk from a client that did not ask for it. */
Test(clients, streams_are_priced)
{
	struct h_mock m;
	struct h_resp *r;
	const char *body;

	h_mock_start(&m, "m", "--usage", "1000,500", NULL);
	start("", dep("d1", "g", &m), "");
	r = post(0, CHAT, NULL, "{\"model\":\"g\",\"stream\":true," HI "}");
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_null(strstr(r->body, "\"usage\""), "%s", r->body);
	cr_assert_not_null(strstr(r->body, "data: [DONE]"));
	body = h_tcp(m.port, "GET", "/_mock/last/body", NULL)->body;
	cr_assert_not_null(strstr(body, "\"stream_options\":{\"include_usage\""
	                                ":true}"),
	                   "%s", body);
	r = post(0, CHAT, NULL,
	         "{\"model\":\"g\",\"stream\":true,\"stream_options\":{"
	         "\"include_usage\":true}," HI "}");
	cr_assert_not_null(strstr(r->body, "\"usage\""), "asked: %s", r->body);
	h_sleep_ms(200);
	cr_assert_not_null(strstr(h_read(h_path("access.log")),
	                          "stream=1 trail=- client=default uid=0"));
	cr_assert_null(strstr(h_read(h_path("access.log")), "cost_usd=-"));
	cr_assert_not_null(strstr(metrics(), "llmfd_client_spend_usd_total{"
	                                     "client=\"default\"} 0.015\n"));
}

/* ---- restarts ---- */

/* Wait until the n pids in w are gone: orphaned workers hold the socket
 * until then, and a new master rightly refuses a socket something still
 * listens on (no answer to /healthz is not enough: a draining worker does
 * not answer but still listens). */
static void
wait_gone(const pid_t *w, int n)
{
	for (int i = 0; i < n; i++) {
		for (long end = h_now_ms() + h_slow(5000);
		     h_alive(w[i]) && h_now_ms() < end;)
			h_sleep_ms(50);
		cr_assert(!h_alive(w[i]), "worker %d outlived its master",
		          (int)w[i]);
	}
}

/* Wait until nothing answers on the socket. */
static void
wait_socket_dead(void)
{
	struct h_req q = {.unix_path = h_sock(),
	                  .method = "GET",
	                  .path = "/healthz",
	                  .timeout_ms = 500};

	for (int i = 0; i < 100; i++) {
		if (h_http(&q)->status == 0)
			return;
		h_sleep_ms(50);
	}
	cr_assert_fail("the old workers still answer");
}

/* Spend survives kill -9 of the master (the file written within a
 * second) and a reload (the table kept): the budget stays spent. */
Test(clients, spend_survives_kill9_and_reload)
{
	struct h_mock m;
	struct h_resp *r;
	pid_t master, w[8];
	char *out, *f = NULL;
	int nw;

	h_mock_start(&m, "m", "--usage", "1000,500", NULL);
	master = start("state_dir = \"state\";", dep("d1", "g", &m),
	               "clients = ( { name = \"me\"; uid = 0; "
	               "daily_budget_usd = 0.02; } );");
	for (int i = 0; i < 3; i++)
		cr_assert_eq(chat(0, NULL)->status, 200);
	cr_assert_eq(chat(0, NULL)->status, 429);
	for (int i = 0; i < 60; i++) {
		f = h_read(h_path("state/spend"));
		if (f &&
		    strstr(f, "\tme\td1\tgpt-4o\t22500000\t3\t3000\t1500\t0\n"))
			break;
		h_sleep_ms(50);
	}
	cr_assert_not_null(strstr(f, "\tme\td1\tgpt-4o\t22500000\t3\t"), "%s",
	                   f);
	nw = h_children(master, w, 8);
	cr_assert_eq(kill(master, SIGKILL), 0);
	cr_assert_eq(h_wait_exit(master, 5000, NULL), 0);
	wait_gone(w, nw);
	wait_socket_dead();
	master = h_llmfd_spawn(h_conf());
	cr_assert_eq(h_llmfd_wait_ready(master, H_READY_TIMEOUT_MS), 0, "%s",
	             h_log());
	r = chat(0, NULL);
	cr_assert_eq(r->status, 429, "after kill -9: %s", h_desc(r));
	cr_assert_not_null(
	    strstr(h_json(r->body, "error.message"), "is spent ($0.0225)"));
	out = ctl("clients", "--json", NULL);
	cr_assert_not_null(strstr(out, "\"spend_today_usd\":0.0225"), "%s",
	                   out);
	cr_assert_not_null(strstr(metrics(), "llmfd_deployment_spend_usd_total{"
	                                     "deployment=\"d1\",group=\"g\","
	                                     "provider=\"openai\"} 0.0225\n"));
	/* a reload that raises the budget keeps what was spent */
	f = h_read(h_conf());
	cr_assert_not_null(strstr(f, "0.02; } );"));
	h_write("llmfd.conf", "%.*s0.03; } );\n",
	        (int)(strstr(f, "0.02; } );") - f), f);
	cr_assert_eq(kill(master, SIGHUP), 0);
	for (int i = 0; i < 100 && !h_log_has("configuration reloaded"); i++)
		h_sleep_ms(50);
	cr_assert(h_log_has("configuration reloaded"), "%s", h_log());
	for (int i = 0; i < 100 && chat(0, NULL)->status != 200; i++)
		h_sleep_ms(50);
	r = chat(0, NULL);
	cr_assert_eq(r->status, 429, "0.0225 + 0.0075 = 0.03: %s", h_desc(r));
	cr_assert_not_null(strstr(h_json(r->body, "error.message"),
	                          "the daily budget of $0.03 for client 'me' "
	                          "is spent ($0.03)"),
	                   "%s", r->body);
	out = ctl("spend", "--since", "today");
	cr_assert_not_null(strstr(out, "me "), "%s", out);
	cr_assert_not_null(strstr(out, " 0.03 "), "%s", out);
	out = ctl("spend", "--by", "model");
	cr_assert_not_null(strstr(out, "gpt-4o"), "%s", out);
	out = ctl("spend", "--by", "deployment");
	cr_assert_not_null(strstr(out, "d1 "), "%s", out);
}

/* ---- priority ---- */

/* A request on the socket with key from a child; its status and time
 * through a pipe (read by collect). */
static pid_t
chat_bg(const char *key, int *rfd)
{
	int pfd[2];
	pid_t pid;

	cr_assert_eq(pipe(pfd), 0);
	if ((pid = fork()) == 0) {
		long t0 = h_now_ms();
		int v[2];

		close(pfd[0]);
		v[0] =
		    chat(0, h_fmt("Authorization: Bearer %s\r\n", key))->status;
		v[1] = (int)(h_now_ms() - t0);
		_exit(write(pfd[1], v, sizeof v) == sizeof v ? 0 : 1);
	}
	close(pfd[1]);
	*rfd = pfd[0];
	return pid;
}

/* The status and ms of a chat_bg request. */
static void
collect(pid_t pid, int fd, int *status, int *ms)
{
	int v[2] = {0, 0};

	cr_assert_eq(read(fd, v, sizeof v), (ssize_t)sizeof v);
	close(fd);
	cr_assert_eq(waitpid(pid, NULL, 0), pid);
	*status = v[0];
	*ms = v[1];
}

/* Every deployment cooling: the low-priority client is shed at once with
 * a Retry-After while the high-priority one waits and is served when the
 * capacity comes back. */
Test(clients, low_priority_shed_before_high)
{
	struct h_mock m1, m2;
	struct h_resp *r;
	int fd, st, ms;
	pid_t pid;
	long t0;

	h_mock_start(&m1, "m1", NULL);
	h_mock_start(&m2, "m2", NULL);
	start("", h_fmt("%s,\n%s", dep("d1", "g", &m1), dep("d2", "g", &m2)),
	      h_fmt("clients = ( { name = \"batch\"; key_sha256 = \"%s\"; "
	            "priority = \"low\"; },\n"
	            "  { name = \"app\"; key_sha256 = \"%s\"; priority = "
	            "\"high\"; } );",
	            sha_hex(KEY_B), sha_hex(KEY_A)));
	ctl("cooldown", "d1", "2");
	ctl("cooldown", "d2", "2");
	pid = chat_bg(KEY_A, &fd);
	for (int i = 0; i < 100 && !strstr(metrics(), "llmfd_queue_waiting{"
	                                              "priority=\"high\"} 1");
	     i++)
		h_sleep_ms(20);
	t0 = h_now_ms();
	r = chat(0, "Authorization: Bearer " KEY_B "\r\n");
	cr_assert_eq(r->status, 429, "%s", h_desc(r));
	cr_assert_lt(h_now_ms() - t0, 1000, "shed at once");
	cr_assert_str_eq(h_json(r->body, "error.code"), "shed");
	cr_assert(atol(h_header(r, "Retry-After")) >= 1);
	collect(pid, fd, &st, &ms);
	cr_assert_eq(st, 200, "the high-priority request is served");
	cr_assert_geq(ms, 1000, "after waiting for the cooldown (%d ms)", ms);
	cr_assert_not_null(strstr(metrics(),
	                          "llmfd_client_refused_total{"
	                          "client=\"batch\",reason=\"shed\"} "
	                          "1\n"));
	cr_assert_not_null(strstr(metrics(), "llmfd_client_refused_total{"
	                                     "client=\"app\",reason=\"shed\"} "
	                                     "0\n"));
	cr_assert_not_null(
	    strstr(metrics(), "llmfd_queue_waiting{priority=\"high\"} 0\n"));
}
