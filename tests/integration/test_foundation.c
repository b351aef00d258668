/* Foundation behaviour of llmfd, end to end: routing, retries, fallbacks,
 * deadlines, streaming, errors, worker respawn, llmfctl, secrets, config
 * test mode, cancellation, shutdown and TLS. */
#include <sys/wait.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "tests/integration/harness.h"

#define SECRET "sk-test-SECRET-123"
#define CHAT   "/v1/chat/completions"
#define HI     "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"
#define BODY   "{\"model\":\"main\"," HI "}"

#define CONF_HEAD                                                              \
	"daemon = { workers = 2; listen = \"llmfd.sock\";\n"                   \
	"  health_table = \"health\"; log_level = \"debug\"; };\n"             \
	"router = { num_retries = 2; backoff_base_ms = 10;\n"                  \
	"  backoff_max_ms = 50; timeout_ms = 10000;\n"                         \
	"  attempt_timeout_ms = 2000; };\n"

#define DEPLOY(name, group, scheme, host)                                      \
	"  { name = \"" name "\"; group = \"" group "\"; "                     \
	"provider = \"openai\";\n    base_url = \"" scheme "://" host          \
	":%d/v1\"; api_key = \"$TEST_KEY\"; model = \"m\"; }"

#define STD_CONF                                                               \
	CONF_HEAD "deployments = (\n" DEPLOY(                                  \
	    "primary", "main", "http",                                         \
	    "127.0.0.1") ",\n" DEPLOY("secondary", "backup", "http",           \
	                              "127.0.0.1") "\n);\n"                    \
	                                           "fallbacks = ( { group = "  \
	                                           "\"main\"; to = [ "         \
	                                           "\"backup\" ]; } );\n"

TestSuite(foundation, .init = h_setup, .fini = h_teardown, .timeout = 40);

static struct h_mock primary, backup;
static pid_t master;

/* Start llmfd with deployments "primary" (group main) on pmain and
 * "secondary" (group backup) on pbackup, main falling back to backup. */
static pid_t
start_std(int pmain, int pbackup)
{
	master = h_llmfd_start(STD_CONF, pmain, pbackup);
	return master;
}

/* Start a primary mock with the given extra arguments (NULL-terminated
 * argv), an ok backup mock, and the daemon. */
static void
start_pair(const char *const *primary_args)
{
	h_mock_startv(&primary, "a", primary_args);
	h_mock_start(&backup, "b", NULL);
	start_std(primary.port, backup.port);
}

/* POST a chat completion body to the daemon. */
static struct h_resp *
chat(const char *body)
{
	return h_unix("POST", CHAT, body);
}

/* Assert r is a 200 chat completion answered by mock NAME through
 * deployment DEP. */
static void
assert_answer(const struct h_resp *r, const char *name, const char *dep)
{
	char want[128];

	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	snprintf(want, sizeof(want), "mock %s says hi", name);
	const char *content = h_json(r->body, "choices.0.message.content");
	cr_assert(content != NULL && strcmp(content, want) == 0,
	          "content '%s', want '%s'; %s", content ? content : "(none)",
	          want, h_desc(r));
	const char *d = h_header(r, "x-llmfd-deployment");
	cr_assert(d != NULL && strcmp(d, dep) == 0,
	          "x-llmfd-deployment '%s', want '%s'", d ? d : "(none)", dep);
}

/* Assert r has an OpenAI-shaped error body. */
static void
assert_error_shape(const struct h_resp *r)
{
	cr_assert(h_json_valid(r->body), "error body not JSON: %s", h_desc(r));
	cr_assert(h_json(r->body, "error.message") != NULL,
	          "no error.message: %s", h_desc(r));
	cr_assert(h_json(r->body, "error.type") != NULL, "no error.type: %s",
	          h_desc(r));
}

/* The attempts header as a number (-1 if absent). */
static long
attempts(const struct h_resp *r)
{
	const char *a = h_header(r, "x-llmfd-attempts");

	return a ? atol(a) : -1;
}

Test(foundation, request_succeeds)
{
	start_pair(NULL);
	struct h_resp *r = chat(BODY);
	assert_answer(r, "a", "primary");
	const char *p = h_header(r, "x-llmfd-provider");
	cr_assert(p != NULL && strcmp(p, "openai") == 0,
	          "x-llmfd-provider '%s'", p ? p : "(none)");
	cr_assert_eq(attempts(r), 1, "x-llmfd-attempts %ld", attempts(r));
	const char *id = h_header(r, "x-request-id");
	cr_assert(id != NULL && *id != '\0', "no x-request-id");
	cr_assert_str_eq(h_json(r->body, "object"), "chat.completion");
	cr_assert_eq(h_mock_stat(&primary, "requests"), 1);
	cr_assert_eq(h_mock_stat(&backup, "requests"), 0);
}

Test(foundation, healthz)
{
	start_pair(NULL);
	struct h_resp *r = h_unix("GET", "/healthz", NULL);
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
}

Test(foundation, models_lists_groups)
{
	start_pair(NULL);
	struct h_resp *r = h_unix("GET", "/v1/models", NULL);
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert(h_json_valid(r->body), "%s", h_desc(r));
	cr_assert_str_eq(h_json(r->body, "object"), "list");
	int n = h_json_count(r->body, "data");
	bool has_main = false, has_backup = false;
	for (int i = 0; i < n; i++) {
		const char *id = h_json(r->body, h_fmt("data.%d.id", i));
		has_main |= id && strcmp(id, "main") == 0;
		has_backup |= id && strcmp(id, "backup") == 0;
	}
	cr_assert(has_main && has_backup, "groups missing: %s", h_desc(r));
}

Test(foundation, transient_503_retried_then_fallback)
{
	const char *args[] = {"--mode", "status", "--status", "503", NULL};

	start_pair(args);
	struct h_resp *r = chat(BODY);
	assert_answer(r, "b", "secondary");
	cr_assert_eq(h_mock_stat(&primary, "requests"), 3,
	             "primary requests %ld, want 1 + num_retries",
	             h_mock_stat(&primary, "requests"));
	cr_assert_eq(attempts(r), 4, "x-llmfd-attempts %ld", attempts(r));
}

Test(foundation, auth_401_not_retried_then_fallback)
{
	const char *args[] = {"--mode", "status", "--status", "401", NULL};

	start_pair(args);
	struct h_resp *r = chat(BODY);
	assert_answer(r, "b", "secondary");
	cr_assert_eq(h_mock_stat(&primary, "requests"), 1,
	             "primary requests %ld, want 1",
	             h_mock_stat(&primary, "requests"));
}

Test(foundation, bad_request_400_returned_without_fallback)
{
	const char *args[] = {"--mode",    "status",
	                      "--status",  "400",
	                      "--message", "unsupported parameter zork",
	                      NULL};

	start_pair(args);
	struct h_resp *r = chat(BODY);
	cr_assert_eq(r->status, 400, "%s", h_desc(r));
	assert_error_shape(r);
	const char *msg = h_json(r->body, "error.message");
	cr_assert(strstr(msg, "unsupported parameter zork") != NULL,
	          "provider message lost: %s", msg);
	cr_assert_eq(h_mock_stat(&primary, "requests"), 1);
	cr_assert_eq(h_mock_stat(&backup, "requests"), 0,
	             "bad request fell back");
}

Test(foundation, hanging_upstream_attempt_timeout_then_fallback)
{
	const char *args[] = {"--mode", "hang", NULL};

	start_pair(args);
	struct h_resp *r =
	    chat("{\"model\":\"main\"," HI ",\"num_retries\":0}");
	assert_answer(r, "b", "secondary");
	cr_assert_geq(r->ms, 1900,
	              "fell back after %ld ms, before the "
	              "2000 ms attempt timeout",
	              r->ms);
	cr_assert_lt(r->ms, 2000 * 1 + 2000, "took %ld ms", r->ms);
	cr_assert_eq(h_mock_stat(&primary, "requests"), 1,
	             "num_retries:0 not honoured: %ld",
	             h_mock_stat(&primary, "requests"));
}

Test(foundation, request_deadline_gives_504)
{
	const char *args[] = {"--mode", "hang", NULL};

	h_mock_start(&primary, "a", NULL);
	h_mock_startv(&backup, "b", args);
	start_std(primary.port, backup.port);
	/* group backup has no fallbacks. */
	struct h_resp *r = chat("{\"model\":\"backup\"," HI ",\"timeout\":1}");
	cr_assert_eq(r->status, 504, "%s", h_desc(r));
	assert_error_shape(r);
	cr_assert(r->ms >= 500 && r->ms <= 1500, "504 after %ld ms, want ~1000",
	          r->ms);
}

Test(foundation, router_fields_not_forwarded)
{
	start_pair(NULL);
	struct h_resp *r = chat("{\"model\":\"main\"," HI
	                        ",\"fallbacks\":[\"backup\"],\"num_retries\":1,"
	                        "\"timeout\":30,\"temperature\":0.5}");
	assert_answer(r, "a", "primary");
	const char *reqs = h_mock_requests(&primary);
	cr_assert(reqs != NULL && h_json_count(reqs, "") == 1,
	          "mock requests: %s", reqs ? reqs : "(none)");
	const char *body = h_json(reqs, "0.body");
	cr_assert(body != NULL && h_json_valid(body), "forwarded body: %s",
	          body ? body : "(none)");
	cr_assert_null(h_json(body, "fallbacks"), "forwarded: %s", body);
	cr_assert_null(h_json(body, "num_retries"), "forwarded: %s", body);
	cr_assert_null(h_json(body, "timeout"), "forwarded: %s", body);
	const char *model = h_json(body, "model");
	cr_assert(model != NULL && strcmp(model, "m") == 0,
	          "model not replaced: %s", body);
	cr_assert_str_eq(h_json(body, "messages.0.content"), "hi");
	cr_assert_str_eq(h_json(body, "temperature"), "0.5");
}

Test(foundation, upstream_gets_bearer_key)
{
	start_pair(NULL);
	struct h_resp *r = chat(BODY);
	assert_answer(r, "a", "primary");
	const char *reqs = h_mock_requests(&primary);
	const char *auth = h_json(reqs, "0.headers.authorization");
	cr_assert(auth != NULL && strcmp(auth, "Bearer " SECRET) == 0,
	          "Authorization '%s'", auth ? auth : "(none)");
}

Test(foundation, streaming_arrives_incrementally)
{
	const char *args[] = {"--chunks", "5", "--chunk-delay-ms", "100", NULL};

	start_pair(args);
	struct h_resp *r = chat("{\"model\":\"main\"," HI ",\"stream\":true}");
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert(r->complete, "%s", h_desc(r));
	const char *ct = h_header(r, "content-type");
	cr_assert(ct != NULL && strstr(ct, "text/event-stream") != NULL,
	          "content-type '%s'", ct ? ct : "(none)");
	cr_assert(strstr(r->body, "data: [DONE]") != NULL, "%s", h_desc(r));
	cr_assert(strstr(r->body, "says") != NULL, "%s", h_desc(r));
	cr_assert_geq(r->nreads, 3, "body came in %d reads", r->nreads);
	cr_assert(r->read_ms[0] + 250 <= r->ms,
	          "first data at %ld ms, end at %ld ms: not incremental",
	          r->read_ms[0], r->ms);
	const char *d = h_header(r, "x-llmfd-deployment");
	cr_assert(d != NULL && strcmp(d, "primary") == 0);
}

Test(foundation, malformed_json_400_then_ok)
{
	start_pair(NULL);
	struct h_resp *r = chat("{\"model\":\"main\",\"messages\":[");
	cr_assert_eq(r->status, 400, "%s", h_desc(r));
	assert_error_shape(r);
	assert_answer(chat(BODY), "a", "primary");
	cr_assert_eq(h_mock_stat(&primary, "requests"), 1);
}

Test(foundation, missing_model_or_messages_400)
{
	start_pair(NULL);
	struct h_resp *r = chat("{" HI "}");
	cr_assert_eq(r->status, 400, "no model: %s", h_desc(r));
	assert_error_shape(r);
	r = chat("{\"model\":\"main\"}");
	cr_assert_eq(r->status, 400, "no messages: %s", h_desc(r));
	assert_error_shape(r);
	cr_assert_eq(h_mock_stat(&primary, "requests"), 0);
}

Test(foundation, unknown_model_404)
{
	start_pair(NULL);
	struct h_resp *r = chat("{\"model\":\"nosuch\"," HI "}");
	cr_assert_eq(r->status, 404, "%s", h_desc(r));
	assert_error_shape(r);
}

/* Wait until master has n live children; returns how many it has. */
static int
wait_workers(pid_t pid, pid_t *w, int n, int timeout_ms)
{
	long end = h_now_ms() + timeout_ms;
	int k;

	while ((k = h_children(pid, w, 16)) < n && h_now_ms() < end)
		h_sleep_ms(20);
	return k;
}

Test(foundation, killed_worker_is_respawned)
{
	pid_t before[16], after[16];

	start_pair(NULL);
	int n = wait_workers(master, before, 2, 3000);
	cr_assert_eq(n, 2, "master %d has %d workers", (int)master, n);
	cr_assert_eq(kill(before[0], SIGKILL), 0);

	long end = h_now_ms() + 3000;
	bool fresh = false;
	while (!fresh && h_now_ms() < end) {
		int k = h_children(master, after, 16);
		for (int i = 0; i < k; i++)
			fresh |= after[i] != before[0] && after[i] != before[1];
		if (!fresh)
			h_sleep_ms(20);
	}
	cr_assert(fresh, "no new worker within 3 s");
	for (int i = 0; i < 10; i++) {
		struct h_resp *r = chat(BODY);
		cr_assert_eq(r->status, 200, "request %d: %s", i, h_desc(r));
	}
}

/* Column index of the header token starting with "fail" in a text table;
 * the row for deployment dep; the value in that column. -1 if absent. */
static long
text_failures(const char *out, const char *dep)
{
	char *copy = h_fmt("%s", out), *save = NULL, *line;
	int col = -1;

	for (line = strtok_r(copy, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save)) {
		char *toks[32], *s2 = NULL, *t;
		int n = 0;
		for (t = strtok_r(line, " \t|", &s2); t != NULL && n < 32;
		     t = strtok_r(NULL, " \t|", &s2))
			toks[n++] = t;
		for (int i = 0; col < 0 && i < n; i++)
			if (strncasecmp(toks[i], "fail", 4) == 0)
				col = i;
		if (col >= 0 && n > col && strcmp(toks[0], dep) == 0)
			return atol(toks[col]);
	}
	return -1;
}

/* Index of the deployment named dep in llmfctl's JSON, or -1. */
static int
json_dep(const char *js, const char *dep)
{
	int n = h_json_count(js, "deployments");

	for (int i = 0; i < n; i++) {
		const char *name = h_json(js, h_fmt("deployments.%d.name", i));
		if (name != NULL && strcmp(name, dep) == 0)
			return i;
	}
	return -1;
}

Test(foundation, llmfctl_status_counts_failures)
{
	const char *args[] = {"--mode", "status", "--status", "503", NULL};
	char *out;

	start_pair(args);
	assert_answer(chat(BODY), "b", "secondary");

	int rc = h_run(&out, h_bin("llmfctl"), "-c", h_conf(), "status", NULL);
	cr_assert_eq(rc, 0, "llmfctl status exit %d:\n%s", rc, out);
	cr_assert(strstr(out, "primary") && strstr(out, "secondary"), "%s",
	          out);
	long f = text_failures(out, "primary");
	cr_assert_gt(f, 0, "primary failures %ld in:\n%s", f, out);

	rc = h_run(&out, h_bin("llmfctl"), "-c", h_conf(), "status", "--json",
	           NULL);
	cr_assert_eq(rc, 0, "llmfctl status --json exit %d:\n%s", rc, out);
	cr_assert(h_json_valid(out), "not JSON:\n%s", out);
	cr_assert_eq(h_json_long(out, "master_pid", -1), (long)master, "%s",
	             out);
	int i = json_dep(out, "primary");
	cr_assert_geq(i, 0, "no primary in:\n%s", out);
	long req = h_json_long(out, h_fmt("deployments.%d.requests", i), -1);
	long fail = h_json_long(out, h_fmt("deployments.%d.failures", i), -1);
	cr_assert_gt(req, 0, "%s", out);
	cr_assert_gt(fail, 0, "%s", out);
	int j = json_dep(out, "secondary");
	cr_assert_geq(j, 0, "no secondary in:\n%s", out);
	cr_assert_geq(
	    h_json_long(out, h_fmt("deployments.%d.successes", j), -1), 1, "%s",
	    out);
}

Test(foundation, api_key_never_logged_or_printed)
{
	const char *args[] = {"--mode", "status", "--status", "401", NULL};
	char *out;

	start_pair(args);
	assert_answer(chat(BODY), "b", "secondary");
	chat("{\"model\":\"nosuch\"," HI "}");
	chat("{\"model\":");
	cr_assert_eq(
	    h_run(&out, h_bin("llmfctl"), "-c", h_conf(), "status", NULL), 0,
	    "%s", out);
	cr_assert_null(strstr(out, SECRET), "llmfctl status prints the key");
	h_run(&out, h_bin("llmfctl"), "-c", h_conf(), "status", "--json", NULL);
	cr_assert_null(strstr(out, SECRET), "llmfctl --json prints the key");
	h_sleep_ms(200); /* let log lines reach the file */
	char *log = h_log();
	cr_assert(log != NULL && *log != '\0', "empty log at debug level");
	cr_assert_null(strstr(log, SECRET), "the key is in llmfd.log");
}

Test(foundation, config_test_ok)
{
	char *out;
	const char *conf =
	    h_write("good.conf",
	            CONF_HEAD "deployments = (\n" DEPLOY(
	                "primary", "main", "http", "127.0.0.1") "\n);\n",
	            9);
	int rc = h_run(&out, h_bin("llmfd"), "-t", "-c", conf, NULL);
	cr_assert_eq(rc, 0, "exit %d:\n%s", rc, out);
	cr_assert(strstr(out, "configuration OK") != NULL, "%s", out);
}

Test(foundation, config_test_bad_names_file_and_line)
{
	char *out;
	const char *conf = h_write(
	    "bad.conf",
	    "daemon = { workers = 2; listen = \"llmfd.sock\";\n"
	    "  health_table = \"health\"; };\n"
	    "router = { num_retries = 2; };\n"
	    "deployments = (\n"
	    "  { name = \"primary\"; group = \"main\"; provider = \"bogus\"; "
	    "base_url = \"http://127.0.0.1:9/v1\"; api_key = \"x\"; model = "
	    "\"m\"; }\n"
	    ");\n");
	int rc = h_run(&out, h_bin("llmfd"), "-t", "-c", conf, NULL);
	cr_assert_eq(rc, 1, "exit %d:\n%s", rc, out);
	cr_assert(strstr(out, h_fmt("%s:5:", conf)) != NULL,
	          "no '%s:5:' in:\n%s", conf, out);
	cr_assert(strstr(out, "configuration OK") == NULL, "%s", out);
}

Test(foundation, config_test_unset_key_var_named)
{
	char *out;
	const char *conf =
	    h_write("unset.conf", CONF_HEAD
	            "deployments = (\n"
	            "  { name = \"primary\"; group = \"main\"; provider = "
	            "\"openai\"; base_url = \"http://127.0.0.1:9/v1\"; "
	            "api_key = \"$LLMFD_IT_UNSET_KEY_VAR\"; model = \"m\"; }\n"
	            ");\n");
	unsetenv("LLMFD_IT_UNSET_KEY_VAR");
	int rc = h_run(&out, h_bin("llmfd"), "-t", "-c", conf, NULL);
	cr_assert_eq(rc, 1, "exit %d:\n%s", rc, out);
	cr_assert(strstr(out, "LLMFD_IT_UNSET_KEY_VAR") != NULL,
	          "variable not named in:\n%s", out);
}

Test(foundation, client_disconnect_cancels_upstream)
{
	const char *args[] = {"--mode", "hang", NULL};

	start_pair(args);
	int fd = h_connect_unix(h_sock());
	cr_assert_geq(fd, 0, "connect %s", h_sock());
	const char *req = h_req_text("POST", CHAT, NULL, BODY);
	cr_assert_eq(h_send_all(fd, req, strlen(req)), 0);
	cr_assert_eq(h_mock_wait_stat(&primary, "requests", 1, 2000), 1,
	             "the request did not reach the mock");
	h_sleep_ms(200);
	close(fd);
	long closed = h_mock_wait_stat(&primary, "client_closed", 1, 1000);
	cr_assert_eq(closed, 1, "mock client_closed %ld within 1 s", closed);
	cr_assert_eq(h_mock_stat(&backup, "requests"), 0,
	             "a cancelled request fell back");
}

Test(foundation, sigterm_drains_and_removes_socket)
{
	pid_t w[16];
	int st;

	start_pair(NULL);
	assert_answer(chat(BODY), "a", "primary");
	int n = wait_workers(master, w, 2, 3000);
	cr_assert_eq(kill(master, SIGTERM), 0);
	cr_assert_eq(h_wait_exit(master, 10000, &st), 0,
	             "master still running 10 s after SIGTERM");
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
	          "master wait status 0x%x", st);
	cr_assert_neq(access(h_sock(), F_OK), 0, "socket file left behind");
	for (int i = 0; i < n; i++)
		cr_assert(!h_alive(w[i]), "worker %d outlived the master",
		          (int)w[i]);
}

/* Create DIR/cert.pem and DIR/key.pem for 127.0.0.1 and localhost. */
static void
make_cert(void)
{
	char *out;
	int rc = h_run(&out, "openssl", "req", "-x509", "-newkey", "ec",
	               "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
	               "-keyout", h_path("key.pem"), "-out", h_path("cert.pem"),
	               "-days", "2", "-subj", "/CN=127.0.0.1", "-addext",
	               "subjectAltName=IP:127.0.0.1,DNS:localhost", NULL);

	cr_assert_eq(rc, 0, "openssl req failed (%d):\n%s", rc, out);
}

/* Start a TLS mock and the daemon with one https deployment "tls" in group
 * main; ca is the deployment's extra settings. */
static void
start_tls(const char *ca)
{
	make_cert();
	h_mock_start(&primary, "t", "--tls", h_path("cert.pem"),
	             h_path("key.pem"), NULL);
	master = h_llmfd_start(
	    CONF_HEAD
	    "deployments = (\n"
	    "  { name = \"tls\"; group = \"main\"; provider = "
	    "\"openai\";\n    base_url = \"https://localhost:%d/v1\"; "
	    "api_key = \"$TEST_KEY\"; model = \"m\"; %s }\n);\n",
	    primary.port, ca);
}

Test(foundation, tls_upstream_with_ca_file)
{
	start_tls("ca_file = \"cert.pem\";");
	struct h_resp *r = chat(BODY);
	assert_answer(r, "t", "tls");
}

Test(foundation, tls_upstream_unverified_fails)
{
	start_tls("");
	struct h_resp *r = chat(BODY);
	cr_assert(r->status == 502 || r->status == 503, "%s", h_desc(r));
	assert_error_shape(r);
	const char *msg = h_json(r->body, "error.message");
	cr_assert(strcasestr(r->body, "certificate") != NULL &&
	              strcasestr(r->body, "verif") != NULL,
	          "message does not mention certificate verification: %s", msg);
}
