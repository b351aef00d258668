/* The official `openai` and `@anthropic-ai/sdk` npm clients, unmodified,
 * against the real daemon: each test starts llmf-mock upstreams and llmfd
 * (Unix socket and a loopback TCP port) and runs a script of tests/sdk
 * with node, which exits 0 only if every answer is what the SDK user must
 * get (tests/sdk/lib.mjs). Most cases go through a failover: the group's
 * first upstream fails (OpenAI 503, Anthropic 529) and a Gemini mock
 * answers, translated into the client's protocol.
 *
 * node and tests/sdk/node_modules come from `make sdk-deps` (which `make
 * check` runs): a missing one fails the test, and nothing is skipped. */
#include <sys/socket.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "tests/integration/harness.h"

#define SECRET "sk-test-SECRET-123"
#define BETA   "context-management-2025-06-27"

/* Deployments are named after their mocks, so "mock NAME says hi" tells
 * the scripts who answered. gpt-4o and claude-sonnet-4-5 fail and fall
 * back to gemini-2.5-flash; claude-opus-4-1 has nothing else;
 * claude-haiku-4-5 and gpt-5 (responses_api) answer directly, a Messages or
 * Responses body passed through to the same format; gpt-4o-mini answers
 * directly on Chat Completions. */
#define CONF                                                                   \
	"daemon = { workers = 1; listen = \"llmfd.sock\";\n"                   \
	"  tcp = \"127.0.0.1:%d\"; health_table = \"health\"; };\n"            \
	"router = { num_retries = 0; timeout_ms = 10000;\n"                    \
	"  attempt_timeout_ms = 5000; allowed_fails = 1000;\n"                 \
	"  circuit_failure_threshold = 1000; };\n"                             \
	"deployments = (\n"                                                    \
	"  { name = \"openai-down\"; group = \"gpt-4o\";\n"                    \
	"    provider = \"openai\"; model = \"gpt-4o\"; api_key = "            \
	"\"$TEST_KEY\";\n"                                                     \
	"    base_url = \"http://127.0.0.1:%d/v1\"; },\n"                      \
	"  { name = \"openai\"; group = \"gpt-4o-mini\";\n"                    \
	"    provider = \"openai\"; model = \"gpt-4o-mini\"; api_key = "       \
	"\"$TEST_KEY\";\n"                                                     \
	"    base_url = \"http://127.0.0.1:%d/v1\"; },\n"                      \
	"  { name = \"anthropic-down\"; group = \"claude-sonnet-4-5\";\n"      \
	"    provider = \"anthropic\"; model = \"claude-sonnet-4-5\"; "        \
	"api_key = \"$TEST_KEY\";\n"                                           \
	"    base_url = \"http://127.0.0.1:%d\"; },\n"                         \
	"  { name = \"anthropic-down-2\"; group = \"claude-opus-4-1\";\n"      \
	"    provider = \"anthropic\"; model = \"claude-opus-4-1\"; api_key "  \
	"= \"$TEST_KEY\";\n"                                                   \
	"    base_url = \"http://127.0.0.1:%d\"; },\n"                         \
	"  { name = \"anthropic\"; group = \"claude-haiku-4-5\";\n"            \
	"    provider = \"anthropic\"; model = \"claude-haiku-4-5\"; api_key " \
	"= \"$TEST_KEY\";\n"                                                   \
	"    base_url = \"http://127.0.0.1:%d\"; },\n"                         \
	"  { name = \"openai-responses\"; group = \"gpt-5\";\n"                \
	"    provider = \"openai\"; model = \"gpt-5\"; responses_api = "       \
	"true;\n"                                                              \
	"    api_key = \"$TEST_KEY\"; base_url = \"http://127.0.0.1:%d/v1\"; " \
	"},\n"                                                                 \
	"  { name = \"gemini\"; group = \"gemini-2.5-flash\";\n"               \
	"    provider = \"gemini\"; model = \"gemini-2.5-flash\"; api_key = "  \
	"\"$TEST_KEY\";\n"                                                     \
	"    base_url = \"http://127.0.0.1:%d\"; }\n"                          \
	");\n"                                                                 \
	"fallbacks = (\n"                                                      \
	"  { group = \"gpt-4o\"; to = [ \"gemini-2.5-flash\" ]; },\n"          \
	"  { group = \"claude-sonnet-4-5\"; to = [ \"gemini-2.5-flash\" ]; "   \
	"}\n"                                                                  \
	");\n"

TestSuite(sdk, .init = h_setup, .fini = h_teardown, .timeout = 40);

static struct h_mock oa_down, an_down, ge, an, oa, oa_resp;
static int g_tcp;

/* One SDK run through llmfd. */
struct sdk_case {
	const char *script;    /* tests/sdk/SCRIPT.mjs */
	const char *cases;     /* its cases, comma-separated */
	const char *model;     /* group asked for */
	const char *served_by; /* deployment that must answer, or NULL */
	struct h_mock *down;   /* mock that must have been tried, or NULL */
	bool unix_sock;        /* over llmfd.sock instead of TCP */
};

/* The directory of the SDK scripts: $LLMFD_SRC/tests/sdk, else ./tests/sdk,
 * else beside the build directory. */
static const char *
sdk_dir(void)
{
	const char *src = getenv("LLMFD_SRC"), *b;
	char cwd[PATH_MAX];

	if (src != NULL && *src != '\0')
		return h_fmt("%s/tests/sdk", src);
	if (access("tests/sdk/package.json", F_OK) == 0 &&
	    getcwd(cwd, sizeof(cwd)) != NULL)
		return h_fmt("%s/tests/sdk", cwd);
	b = h_bin("x");
	return h_fmt("%.*s/../tests/sdk", (int)(strrchr(b, '/') - b), b);
}

/* Fail (never skip) unless node runs and the SDKs are installed. */
static void
sdk_require(void)
{
	static const char *const pkgs[] = {"openai", "@anthropic-ai/sdk",
	                                   "undici"};
	const char *dir = sdk_dir();
	char *out;

	cr_assert(access(h_fmt("%s/package.json", dir), F_OK) == 0,
	          "%s/package.json not found: run from the repository root "
	          "or set LLMFD_SRC",
	          dir);
	int rc = h_run(&out, "node", "--version", NULL);
	cr_assert(rc == 0,
	          "node is not installed or does not run (exit %d: %s): run "
	          "`make sdk-deps` (Debian packages nodejs and npm, then npm "
	          "ci in tests/sdk)",
	          rc, out);
	for (size_t i = 0; i < sizeof(pkgs) / sizeof(pkgs[0]); i++)
		cr_assert(access(h_fmt("%s/node_modules/%s/package.json", dir,
		                       pkgs[i]),
		                 F_OK) == 0,
		          "%s/node_modules/%s is missing: run `make sdk-deps` "
		          "(npm ci in tests/sdk)",
		          dir, pkgs[i]);
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

/* Start the six mocks (answers spelled in four chunks). */
static void
mocks_start(void)
{
	h_mock_start(&oa_down, "openai-down", "--mode", "status", "--status",
	             "503", NULL);
	h_mock_start(&an_down, "anthropic-down", "--mode", "status", "--status",
	             "529", NULL);
	h_mock_start(&ge, "gemini", "--mode", "tools", "--chunks", "4", NULL);
	h_mock_start(&an, "anthropic", "--mode", "tools", "--chunks", "4",
	             NULL);
	h_mock_start(&oa, "openai", "--mode", "tools", "--chunks", "4", NULL);
	h_mock_start(&oa_resp, "openai-responses", "--mode", "tools",
	             "--chunks", "4", NULL);
}

/* Start the mocks and llmfd; a TCP port taken meanwhile by someone else
 * is retried with another. */
static void
sdk_start(void)
{
	sdk_require();
	mocks_start();
	for (int i = 0; i < 3; i++) {
		g_tcp = free_port();
		const char *conf = h_write(
		    "llmfd.conf", CONF, g_tcp, oa_down.port, oa.port,
		    an_down.port, an_down.port, an.port, oa_resp.port, ge.port);
		pid_t pid = h_llmfd_spawn(conf);
		if (h_llmfd_wait_ready(pid, H_READY_TIMEOUT_MS) == 0)
			return;
	}
	char *log = h_log();
	cr_assert_fail("llmfd did not start; log:\n%s", log ? log : "(none)");
}

/* Run node tests/sdk/SCRIPT.mjs URL CASES [flags]; returns its exit code
 * and puts its output in *out. */
static int
sdk_node(char **out, const char *script, const char *url, const char *cases,
         const char *model, const char *served_by, bool direct)
{
	const char *argv[12];
	int n = 0;

	argv[n++] = "node";
	argv[n++] = h_fmt("%s/%s.mjs", sdk_dir(), script);
	argv[n++] = url;
	argv[n++] = cases;
	if (model != NULL) {
		argv[n++] = "--model";
		argv[n++] = model;
	}
	if (served_by != NULL) {
		argv[n++] = "--served-by";
		argv[n++] = served_by;
	}
	if (direct)
		argv[n++] = "--direct";
	argv[n] = NULL;
	return h_runv(out, argv);
}

/* Assert that one node run exits 0. */
static void
sdk_node_ok(const char *script, const char *url, const char *cases,
            const char *model, const char *served_by, bool direct)
{
	char *out;
	int rc = sdk_node(&out, script, url, cases, model, served_by, direct);

	if (rc != 0 && !direct)
		fprintf(stderr, "---- llmfd.log (%s) ----\n%s---- end ----\n",
		        h_dir(), h_log());
	cr_assert_eq(rc, 0, "node %s.mjs %s %s exited %d:\n%s", script, url,
	             cases, rc, out);
}

/* Start everything, run the case (the script checks who answered), and
 * check that the failing upstream was tried. */
static void
sdk_case(const struct sdk_case *c)
{
	sdk_start();
	const char *url = c->unix_sock ? h_fmt("unix:%s", h_sock())
	                               : h_fmt("http://127.0.0.1:%d", g_tcp);
	sdk_node_ok(c->script, url, c->cases, c->model, c->served_by, false);
	if (c->down != NULL)
		cr_assert(h_mock_stat(c->down, "requests") >= 1,
		          "the failing upstream %s was never tried",
		          c->down->name);
}

/* The value of header name in mock m's last request. */
static const char *
last_header(const struct h_mock *m, const char *name)
{
	struct h_resp *r = h_tcp(m->port, "GET", "/_mock/last", NULL);

	cr_assert_eq(r->status, 200, "/_mock/last of %s: %s", m->name,
	             h_desc(r));
	return h_json(r->body, h_fmt("headers.%s", name));
}

/* openai chat.completions: failover OpenAI 503 → Gemini. */

Test(sdk, chat_plain)
{
	sdk_case(&(struct sdk_case){.script = "openai_chat",
	                            .cases = "plain",
	                            .model = "gpt-4o",
	                            .served_by = "gemini",
	                            .down = &oa_down});
}

Test(sdk, chat_stream)
{
	sdk_case(&(struct sdk_case){.script = "openai_chat",
	                            .cases = "stream",
	                            .model = "gpt-4o",
	                            .served_by = "gemini",
	                            .down = &oa_down});
}

Test(sdk, chat_tools)
{
	sdk_case(&(struct sdk_case){.script = "openai_chat",
	                            .cases = "tools",
	                            .model = "gpt-4o",
	                            .served_by = "gemini",
	                            .down = &oa_down});
}

Test(sdk, chat_stream_tools)
{
	sdk_case(&(struct sdk_case){.script = "openai_chat",
	                            .cases = "stream-tools",
	                            .model = "gpt-4o",
	                            .served_by = "gemini",
	                            .down = &oa_down});
}

Test(sdk, chat_errors)
{
	sdk_case(&(struct sdk_case){
	    .script = "openai_chat", .cases = "errors", .model = "gpt-4o"});
}

Test(sdk, chat_unix_socket)
{
	sdk_case(&(struct sdk_case){.script = "openai_chat",
	                            .cases = "plain,stream-tools",
	                            .model = "gpt-4o",
	                            .served_by = "gemini",
	                            .down = &oa_down,
	                            .unix_sock = true});
}

/* Same-format passthrough: the upstream gets llmfd's key, not the
 * client's. */
Test(sdk, chat_passthrough)
{
	sdk_case(&(struct sdk_case){.script = "openai_chat",
	                            .cases = "plain,stream,tools",
	                            .model = "gpt-4o-mini",
	                            .served_by = "openai"});
	const char *auth = last_header(&oa, "authorization");
	cr_assert(auth && strcmp(auth, "Bearer " SECRET) == 0,
	          "upstream authorization: %s", auth ? auth : "(none)");
}

/* openai responses.create: failover OpenAI 503 → Gemini. */

Test(sdk, responses_plain)
{
	sdk_case(&(struct sdk_case){.script = "openai_responses",
	                            .cases = "plain",
	                            .model = "gpt-4o",
	                            .served_by = "gemini",
	                            .down = &oa_down});
}

Test(sdk, responses_stream)
{
	sdk_case(&(struct sdk_case){.script = "openai_responses",
	                            .cases = "stream",
	                            .model = "gpt-4o",
	                            .served_by = "gemini",
	                            .down = &oa_down});
}

Test(sdk, responses_tools)
{
	sdk_case(&(struct sdk_case){.script = "openai_responses",
	                            .cases = "tools",
	                            .model = "gpt-4o",
	                            .served_by = "gemini",
	                            .down = &oa_down});
}

Test(sdk, responses_stream_tools)
{
	sdk_case(&(struct sdk_case){.script = "openai_responses",
	                            .cases = "stream-tools",
	                            .model = "gpt-4o",
	                            .served_by = "gemini",
	                            .down = &oa_down});
}

Test(sdk, responses_errors)
{
	sdk_case(&(struct sdk_case){.script = "openai_responses",
	                            .cases = "errors",
	                            .model = "gpt-4o-mini"});
}

/* Responses to a chat-only OpenAI deployment: translated both ways. */
Test(sdk, responses_to_chat_upstream)
{
	sdk_case(&(struct sdk_case){.script = "openai_responses",
	                            .cases = "plain,stream,tools,stream-tools",
	                            .model = "gpt-4o-mini",
	                            .served_by = "openai"});
	const char *path =
	    h_json(h_tcp(oa.port, "GET", "/_mock/last", NULL)->body, "path");
	cr_assert(path && strcmp(path, "/v1/chat/completions") == 0,
	          "upstream path: %s", path ? path : "(none)");
}

/* Responses to a responses_api deployment: passed through to /responses,
 * with llmfd's key instead of the client's. */
Test(sdk, responses_passthrough)
{
	sdk_case(&(struct sdk_case){.script = "openai_responses",
	                            .cases = "plain,stream,tools,stream-tools",
	                            .model = "gpt-5",
	                            .served_by = "openai-responses"});
	const char *path = h_json(
	    h_tcp(oa_resp.port, "GET", "/_mock/last", NULL)->body, "path");
	cr_assert(path && strcmp(path, "/v1/responses") == 0,
	          "upstream path: %s", path ? path : "(none)");
	const char *auth = last_header(&oa_resp, "authorization");
	cr_assert(auth && strcmp(auth, "Bearer " SECRET) == 0,
	          "upstream authorization: %s", auth ? auth : "(none)");
}

/* anthropic messages: failover Anthropic 529 → Gemini. */

Test(sdk, messages_create)
{
	sdk_case(&(struct sdk_case){.script = "anthropic_messages",
	                            .cases = "create",
	                            .model = "claude-sonnet-4-5",
	                            .served_by = "gemini",
	                            .down = &an_down});
}

Test(sdk, messages_tools)
{
	sdk_case(&(struct sdk_case){.script = "anthropic_messages",
	                            .cases = "tools",
	                            .model = "claude-sonnet-4-5",
	                            .served_by = "gemini",
	                            .down = &an_down});
}

Test(sdk, messages_stream)
{
	sdk_case(&(struct sdk_case){.script = "anthropic_messages",
	                            .cases = "stream",
	                            .model = "claude-sonnet-4-5",
	                            .served_by = "gemini",
	                            .down = &an_down});
}

Test(sdk, messages_stream_tools)
{
	sdk_case(&(struct sdk_case){.script = "anthropic_messages",
	                            .cases = "stream-tools",
	                            .model = "claude-sonnet-4-5",
	                            .served_by = "gemini",
	                            .down = &an_down});
}

/* A group without an Anthropic deployment: llmfd's estimate. */
Test(sdk, messages_count_tokens)
{
	sdk_case(&(struct sdk_case){.script = "anthropic_messages",
	                            .cases = "count-tokens",
	                            .model = "gemini-2.5-flash"});
	cr_assert_eq(h_mock_stat(&ge, "requests"), 0);
}

/* A group with one: it counts, and gets the SDK's anthropic-version. */
Test(sdk, messages_count_tokens_passthrough)
{
	sdk_case(&(struct sdk_case){.script = "anthropic_messages",
	                            .cases = "count-tokens",
	                            .model = "claude-haiku-4-5",
	                            .served_by = "anthropic"});
	const char *path =
	    h_json(h_tcp(an.port, "GET", "/_mock/last", NULL)->body, "path");
	cr_assert(path && strcmp(path, "/v1/messages/count_tokens") == 0,
	          "upstream path: %s", path ? path : "(none)");
	cr_assert(last_header(&an, "anthropic-version") != NULL,
	          "no anthropic-version upstream");
}

/* An unknown model is 404 not_found_error; a group whose only upstream
 * answers 529 is 529 overloaded_error. */
Test(sdk, messages_errors)
{
	sdk_case(&(struct sdk_case){.script = "anthropic_messages",
	                            .cases = "errors",
	                            .model = "claude-opus-4-1",
	                            .down = &an_down});
}

Test(sdk, messages_unix_socket)
{
	sdk_case(&(struct sdk_case){.script = "anthropic_messages",
	                            .cases = "create,stream-tools",
	                            .model = "claude-sonnet-4-5",
	                            .served_by = "gemini",
	                            .down = &an_down,
	                            .unix_sock = true});
}

/* Same-format passthrough to Anthropic: anthropic-version and
 * anthropic-beta reach it, with llmfd's key instead of the client's. */
Test(sdk, messages_passthrough)
{
	sdk_case(&(struct sdk_case){.script = "anthropic_messages",
	                            .cases = "create,tools,stream,stream-tools,"
	                                     "beta",
	                            .model = "claude-haiku-4-5",
	                            .served_by = "anthropic"});
	const char *beta = last_header(&an, "anthropic-beta");
	cr_assert(beta && strstr(beta, BETA) != NULL,
	          "upstream anthropic-beta: %s", beta ? beta : "(none)");
	cr_assert(last_header(&an, "anthropic-version") != NULL,
	          "no anthropic-version upstream");
	const char *key = last_header(&an, "x-api-key");
	cr_assert(key && strcmp(key, SECRET) == 0, "upstream x-api-key: %s",
	          key ? key : "(none)");
}

/* The scripts themselves, against llmf-mock directly (no llmfd): they pass
 * on correct answers in all three protocols... */
Test(sdk, scripts_pass_on_mock)
{
	sdk_require();
	mocks_start();
	const char *oa_url = h_fmt("http://127.0.0.1:%d", oa.port);
	sdk_node_ok("openai_chat", oa_url, "plain,stream,tools,stream-tools",
	            NULL, "openai", true);
	sdk_node_ok("openai_responses", oa_url,
	            "plain,stream,tools,stream-tools", NULL, "openai", true);
	sdk_node_ok("anthropic_messages", h_fmt("http://127.0.0.1:%d", an.port),
	            "create,tools,stream,stream-tools,beta,count-tokens", NULL,
	            "anthropic", true);
}

/* Assert that a node run fails (exit 1) and prints want. */
static void
expect_fail(const char *script, const char *url, const char *cases,
            const char *served_by, bool direct, const char *want)
{
	char *out;
	int rc = sdk_node(&out, script, url, cases, NULL, served_by, direct);

	cr_assert_eq(rc, 1, "node %s.mjs %s: exit %d, want 1:\n%s", script,
	             cases, rc, out);
	cr_assert(strstr(out, want) != NULL, "node %s.mjs %s: no '%s' in:\n%s",
	          script, cases, want, out);
}

/* ...and fail on wrong ones: missing llmfd headers, another upstream's
 * text, a Responses stream without response.completed, a Messages stream
 * without message_stop. */
Test(sdk, scripts_fail_on_wrong_answers)
{
	sdk_require();
	mocks_start();
	const char *oa_url = h_fmt("http://127.0.0.1:%d", oa.port);
	const char *an_url = h_fmt("http://127.0.0.1:%d", an.port);
	expect_fail("openai_chat", oa_url, "plain", "openai", false,
	            "no x-llmfd-deployment header");
	expect_fail("anthropic_messages", an_url, "create", "anthropic", false,
	            "no x-llmfd-deployment header");
	expect_fail("openai_chat", oa_url, "plain", "gemini", true,
	            "want \"mock gemini says hi\"");
	cr_assert_eq(h_mock_config(&oa, "{\"mode\":\"no-done\"}"), 0);
	cr_assert_eq(h_mock_config(&an, "{\"mode\":\"no-done\"}"), 0);
	expect_fail("openai_responses", oa_url, "stream", "openai", true,
	            "no response.completed");
	expect_fail("anthropic_messages", an_url, "stream", "anthropic", true,
	            "FAIL anthropic_messages.mjs stream");
}
