/* AWS Bedrock and Google Vertex AI end to end (issue 15): an OpenAI-style
 * client falls back from a failing Anthropic mock to a Bedrock mock (SigV4
 * checked by the mock against the same secret, AWS event streams) and to
 * a Vertex mock (bearer tokens from its token endpoint, which checks the
 * JWT's RS256 signature with the public key of a service account this
 * test generates), streaming and not, with tool calls; throttling inside
 * a Bedrock stream before the first byte falls back cleanly; expired
 * tokens are refreshed once under concurrent load, early ones in the
 * background, refused ones once; token failures are auth failures. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "common/b64.h"
#include "common/buf.h"
#include "common/json.h"
#include "tests/integration/harness.h"

#define CHAT       "/v1/chat/completions"
#define AWS_SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define HI         "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"
#define TOOLS                                                                  \
	",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":"           \
	"\"get_weather\",\"parameters\":{\"type\":\"object\",\"properties\":"  \
	"{\"city\":{\"type\":\"string\"}}}}}]"

#define CONF_HEAD                                                              \
	"daemon = { workers = %d; listen = \"llmfd.sock\";\n"                  \
	"  health_table = \"health\"; log_level = \"debug\"; };\n"             \
	"router = { num_retries = 0; backoff_base_ms = 10;\n"                  \
	"  backoff_max_ms = 50; timeout_ms = 10000; cooldown_s = 0;\n"         \
	"  attempt_timeout_ms = 4000; };\n"

/* claude (Anthropic) -> claude-aws (Bedrock) -> claude-gcp (Vertex). */
#define DEPLOYS                                                                \
	"deployments = (\n"                                                    \
	"  { name = \"an\"; group = \"claude\"; provider = \"anthropic\";\n"   \
	"    base_url = \"http://127.0.0.1:%d\"; api_key = \"sk-ant-test\";\n" \
	"    model = \"claude-sonnet-4-5\"; },\n"                              \
	"  { name = \"br\"; group = \"claude-aws\"; provider = \"bedrock\";\n" \
	"    base_url = \"http://127.0.0.1:%d\"; region = \"us-east-1\";\n"    \
	"    aws_access_key_id = \"AKIDEXAMPLE\";\n"                           \
	"    aws_secret_access_key = \"$TEST_AWS_SECRET\";\n"                  \
	"    aws_session_token = \"FQoGZXIvYXdzEXAMPLESESSION\";\n"            \
	"    model = \"%s\"; },\n"                                             \
	"  { name = \"vx\"; group = \"claude-gcp\"; provider = \"vertex\";\n"  \
	"    base_url = \"http://127.0.0.1:%d/v1\"; location = "               \
	"\"us-east5\";\n"                                                      \
	"    credentials_file = \"sa.json\"; model = \"%s\"; }%s\n"            \
	");\n"                                                                 \
	"fallbacks = ( { group = \"claude\"; to = [ \"claude-aws\", "          \
	"\"claude-gcp\" ]; } );\n"

#define BR_CLAUDE "anthropic.claude-sonnet-4-5-20250929-v1:0"
#define VX_CLAUDE "claude-sonnet-4-5@20250929"

TestSuite(cloud, .init = h_setup, .fini = h_teardown, .timeout = 60);

static struct h_mock an, br, vx, oa;

/* A fresh service account: DIR/sa.json (its private key, token_uri at the
 * Vertex mock) and DIR/pub.pem (its public key, for the mock). */
static void
service_account(int token_port)
{
	EVP_PKEY *k = EVP_RSA_gen(2048);
	BIO *priv = BIO_new(BIO_s_mem()), *pub = BIO_new(BIO_s_mem());
	struct buf esc = {0};
	char *p;
	long n;

	cr_assert_not_null(k);
	PEM_write_bio_PrivateKey(priv, k, NULL, NULL, 0, NULL, NULL);
	PEM_write_bio_PUBKEY(pub, k);
	n = BIO_get_mem_data(priv, &p);
	json_escape(&esc, p, (size_t)n);
	h_write("sa.json",
	        "{\"type\":\"service_account\",\"project_id\":\"proj-1\","
	        "\"private_key_id\":\"kid-1\",\"private_key\":\"%s\","
	        "\"client_email\":\"llmfd@proj-1.iam.gserviceaccount.com\","
	        "\"token_uri\":\"http://127.0.0.1:%d/token\"}",
	        buf_cstr(&esc), token_port);
	n = BIO_get_mem_data(pub, &p);
	h_write("pub.pem", "%.*s", (int)n, p);
	BIO_free(priv);
	BIO_free(pub);
	EVP_PKEY_free(k);
	buf_free(&esc);
}

/* Options of one start. */
struct setup {
	const char *const *an_args; /* extra mock arguments, NULL-terminated */
	const char *const *br_args;
	const char *const *vx_args;
	const char *br_model, *vx_model;
	const char *more;         /* ",\n{ ... }" more deployments */
	const char *llmfd_secret; /* the AWS secret llmfd signs with */
	int workers;              /* 0: 2 */
};

/* Start one mock with the given extra arguments after base ones. */
static void
mock(struct h_mock *m, const char *name, const char *const *base,
     const char *const *args)
{
	const char *argv[40];
	int n = 0;

	for (int i = 0; base && base[i] && n < 20; i++)
		argv[n++] = base[i];
	for (int i = 0; args && args[i] && n < 39; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	h_mock_startv(m, name, argv);
}

/* Start the Anthropic, Bedrock and Vertex mocks and the daemon. */
static void
start(const struct setup *s)
{
	const char *const an_base[] = {"--chunks", "4", NULL};
	const char *const br_base[] = {"--chunks", "4", "--aws-secret",
	                               AWS_SECRET, NULL};
	const char *vx_base[8] = {"--chunks", "4", "--jwt-pubkey", NULL};

	mock(&an, "anthropic", an_base, s->an_args);
	mock(&br, "bedrock", br_base, s->br_args);
	/* the key must exist before the Vertex mock checks tokens */
	h_write("pub.pem", "pending\n");
	vx_base[3] = h_path("pub.pem");
	mock(&vx, "vertex", vx_base, s->vx_args);
	service_account(vx.port);
	setenv("TEST_AWS_SECRET",
	       s->llmfd_secret ? s->llmfd_secret : AWS_SECRET, 1);
	h_llmfd_start(CONF_HEAD DEPLOYS, s->workers ? s->workers : 2, an.port,
	              br.port, s->br_model ? s->br_model : BR_CLAUDE, vx.port,
	              s->vx_model ? s->vx_model : VX_CLAUDE,
	              s->more ? s->more : "");
}

static struct h_resp *
post(const char *body)
{
	return h_unix("POST", CHAT, body);
}

/* The i-th request a mock received (JSON object text). */
static const char *
mock_req(const struct h_mock *m, int i)
{
	const char *reqs = h_mock_requests(m);
	const char *q;

	cr_assert(reqs != NULL, "no request log from mock %s", m->name);
	q = h_json(reqs, h_fmt("%d", i));
	cr_assert(q != NULL, "mock %s has no request %d: %s", m->name, i, reqs);
	return q;
}

/* The number of requests a mock logged. */
static int
mock_nreq(const struct h_mock *m)
{
	const char *reqs = h_mock_requests(m);

	return reqs ? h_json_count(reqs, "") : 0;
}

/* Assert a whole chat.completion from mock name via provider prov: text
 * "mock NAME says hi", or (tool) a get_weather call. */
static void
assert_completion(const struct h_resp *r, const char *name, const char *prov,
                  int tool)
{
	const char *p = h_header(r, "x-llmfd-provider"), *c;

	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert(p && strcmp(p, prov) == 0, "provider %s: %s", p ? p : "-",
	          h_desc(r));
	cr_assert_str_eq(h_json(r->body, "object"), "chat.completion");
	if (tool) {
		cr_assert_str_eq(
		    h_json(r->body, "choices.0.message.tool_calls.0.function."
		                    "name"),
		    "get_weather", "%s", r->body);
		cr_assert_str_eq(
		    h_json(r->body, "choices.0.message.tool_calls.0.function."
		                    "arguments"),
		    "{\"city\":\"Oslo\"}", "%s", r->body);
		cr_assert_str_eq(h_json(r->body, "choices.0.finish_reason"),
		                 "tool_calls");
		return;
	}
	c = h_json(r->body, "choices.0.message.content");
	cr_assert(c && strcmp(c, h_fmt("mock %s says hi", name)) == 0, "%s",
	          r->body);
	cr_assert_eq(h_json_long(r->body, "usage.total_tokens", -1), 15, "%s",
	             r->body);
}

/* What a client saw of an OpenAI stream: the text, tool call name and
 * arguments joined, the finish reason, [DONE] last, errors. */
struct sse {
	char text[512], name[64], args[256], finish[32];
	int done_last, nerror, nusage;
};

static void
sse_parse(const char *body, struct sse *s)
{
	const char *p = body, *nl, *d, *v;
	int last_done = 0;

	memset(s, 0, sizeof *s);
	for (; p && *p; p = nl ? nl + 1 : NULL) {
		nl = strchr(p, '\n');
		if (strncmp(p, "data: ", 6) != 0)
			continue;
		d = h_fmt("%.*s", (int)(nl ? nl - p - 6 : (long)strlen(p + 6)),
		          p + 6);
		last_done = strcmp(d, "[DONE]") == 0;
		if (last_done)
			continue;
		if (h_json(d, "error"))
			s->nerror++;
		if ((v = h_json(d, "usage")) && strcmp(v, "null") != 0)
			s->nusage++;
		if ((v = h_json(d, "choices.0.delta.content")) &&
		    strcmp(v, "null") != 0)
			strncat(s->text, v,
			        sizeof s->text - strlen(s->text) - 1);
		if ((v = h_json(d, "choices.0.delta.tool_calls.0.function."
		                   "name")))
			snprintf(s->name, sizeof s->name, "%s", v);
		if ((v = h_json(d, "choices.0.delta.tool_calls.0.function."
		                   "arguments")))
			strncat(s->args, v,
			        sizeof s->args - strlen(s->args) - 1);
		if ((v = h_json(d, "choices.0.finish_reason")) &&
		    strcmp(v, "null") != 0)
			snprintf(s->finish, sizeof s->finish, "%s", v);
	}
	s->done_last = last_done;
}

/* Assert a clean stream from mock name via prov (text or tool call). */
static void
assert_stream(const struct h_resp *r, const char *name, const char *prov,
              int tool)
{
	const char *p = h_header(r, "x-llmfd-provider");
	struct sse s;

	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert(p && strcmp(p, prov) == 0, "provider %s: %s", p ? p : "-",
	          h_desc(r));
	sse_parse(r->body, &s);
	cr_assert_eq(s.nerror, 0, "%s", r->body);
	cr_assert(s.done_last, "[DONE] not last: %s", r->body);
	if (tool) {
		cr_assert_str_eq(s.name, "get_weather", "%s", r->body);
		cr_assert_str_eq(s.args, "{\"city\":\"Oslo\"}", "%s", r->body);
		cr_assert_str_eq(s.finish, "tool_calls", "%s", r->body);
		return;
	}
	cr_assert_str_eq(s.text, h_fmt("mock %s says hi", name), "%s", r->body);
	cr_assert_str_eq(s.finish, "stop", "%s", r->body);
}

/* Assert a Bedrock request the mock logged: path, SigV4 headers. */
static void
assert_bedrock_req(int i, const char *op)
{
	const char *q = mock_req(&br, i), *a, *body;

	cr_assert_str_eq(h_json(q, "path"),
	                 h_fmt("/model/anthropic.claude-sonnet-4-5-20250929-"
	                       "v1%%3A0/%s",
	                       op),
	                 "%s", q);
	a = h_json(q, "headers.authorization");
	cr_assert(a && strncmp(a, "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/",
	                       40) == 0,
	          "%s", q);
	cr_assert_not_null(strstr(a, "/us-east-1/bedrock/aws4_request"));
	cr_assert_not_null(strstr(a, "x-amz-security-token"), "%s", a);
	cr_assert_str_eq(h_json(q, "headers.x-amz-security-token"),
	                 "FQoGZXIvYXdzEXAMPLESESSION");
	body = h_json(q, "body");
	cr_assert_str_eq(h_json(body, "anthropic_version"),
	                 "bedrock-2023-05-31", "%s", body);
	cr_assert_null(h_json(body, "model"), "%s", body);
	cr_assert_null(h_json(body, "stream"), "%s", body);
	cr_assert_null(strstr(q, AWS_SECRET), "the secret went upstream");
}

static const char *const DOWN[] = {"--mode", "status", "--status", "503", NULL};
static const char *const TOOL[] = {"--tool-call", "1", NULL};

/* Anthropic is down: Bedrock answers, whole and streamed, with text and
 * with tool calls; every request is signed right (the mock recomputes
 * the signature with the same secret). */
Test(cloud, anthropic_down_falls_back_to_bedrock)
{
	struct h_resp *r;

	start(&(struct setup){.an_args = DOWN, .br_args = TOOL});
	r = post("{\"model\":\"claude\"," HI "}");
	assert_completion(r, "bedrock", "bedrock", 0);
	assert_bedrock_req(0, "invoke");
	r = post("{\"model\":\"claude\",\"stream\":true," HI "}");
	assert_stream(r, "bedrock", "bedrock", 0);
	assert_bedrock_req(1, "invoke-with-response-stream");
	r = post("{\"model\":\"claude\"," HI TOOLS "}");
	assert_completion(r, "bedrock", "bedrock", 1);
	r = post("{\"model\":\"claude\",\"stream\":true," HI TOOLS "}");
	assert_stream(r, "bedrock", "bedrock", 1);
	cr_assert_eq(h_mock_stat(&br, "failed"), 0, "a signature was refused");
	cr_assert(h_mock_stat(&an, "requests") >= 4);
}

/* Anthropic and Bedrock are down: Vertex answers Claude, whole and
 * streamed, with and without tools, carrying the token its own endpoint
 * issued for the JWT it verified. */
Test(cloud, anthropic_and_bedrock_down_fall_back_to_vertex)
{
	struct h_resp *r;
	const char *q;

	start(
	    &(struct setup){.an_args = DOWN, .br_args = DOWN, .vx_args = TOOL});
	r = post("{\"model\":\"claude\"," HI "}");
	assert_completion(r, "vertex", "vertex", 0);
	q = mock_req(&vx, 0);
	cr_assert_str_eq(h_json(q, "path"),
	                 "/v1/projects/proj-1/locations/us-east5/publishers/"
	                 "anthropic/models/claude-sonnet-4-5@20250929:"
	                 "rawPredict",
	                 "%s", q);
	cr_assert_str_eq(h_json(q, "headers.authorization"),
	                 "Bearer mock-token-0", "%s", q);
	cr_assert_str_eq(h_json(h_json(q, "body"), "anthropic_version"),
	                 "vertex-2023-10-16");
	r = post("{\"model\":\"claude\",\"stream\":true," HI "}");
	assert_stream(r, "vertex", "vertex", 0);
	cr_assert(
	    strstr(h_json(mock_req(&vx, 1), "path"), ":streamRawPredict"));
	r = post("{\"model\":\"claude\"," HI TOOLS "}");
	assert_completion(r, "vertex", "vertex", 1);
	r = post("{\"model\":\"claude\",\"stream\":true," HI TOOLS "}");
	assert_stream(r, "vertex", "vertex", 1);
	cr_assert(
	    h_mock_stat(&vx, "tokens") >= 1 && h_mock_stat(&vx, "tokens") <= 2,
	    "one token per worker, reused: %ld", h_mock_stat(&vx, "tokens"));
	cr_assert_eq(h_mock_stat(&vx, "failed"), 0);
	cr_assert_not(h_log_has("PRIVATE KEY"), "the key reached the log");
}

/* Bedrock with a non-Anthropic model goes through Converse (and
 * ConverseStream's event stream), tools included; Vertex with a Gemini
 * model through generateContent. */
Test(cloud, converse_and_vertex_gemini)
{
	struct h_resp *r;
	const char *q;

	start(&(struct setup){.an_args = DOWN,
	                      .br_args = TOOL,
	                      .vx_args = TOOL,
	                      .br_model = "meta.llama3-70b-instruct-v1:0",
	                      .vx_model = "gemini-2.5-pro"});
	r = post("{\"model\":\"claude\",\"stream\":true," HI TOOLS "}");
	assert_stream(r, "bedrock", "bedrock", 1);
	q = mock_req(&br, 0);
	cr_assert_str_eq(
	    h_json(q, "path"),
	    "/model/meta.llama3-70b-instruct-v1%3A0/converse-stream");
	cr_assert_str_eq(
	    h_json(h_json(q, "body"), "toolConfig.tools.0.toolSpec.name"),
	    "get_weather");
	r = post("{\"model\":\"claude\"," HI "}");
	assert_completion(r, "bedrock", "bedrock", 0);
	r = post("{\"model\":\"claude-gcp\"," HI TOOLS "}");
	assert_completion(r, "vertex", "vertex", 1);
	r = post("{\"model\":\"claude-gcp\",\"stream\":true," HI "}");
	assert_stream(r, "vertex", "vertex", 0);
	q = mock_req(&vx, 1);
	cr_assert_str_eq(h_json(q, "path"),
	                 "/v1/projects/proj-1/locations/us-east5/publishers/"
	                 "google/models/gemini-2.5-pro:streamGenerateContent?"
	                 "alt=sse");
}

/* A throttlingException inside the Bedrock stream, before any content:
 * the client sees nothing of it, and Vertex answers. */
Test(cloud, bedrock_stream_throttling_falls_back)
{
	static const char *const THROTTLE[] = {
	    "--mode",    "stream-error",
	    "--status",  "429",
	    "--message", "Too many tokens, please wait before trying again.",
	    NULL};
	struct h_resp *r;
	struct sse s;

	start(&(struct setup){.an_args = DOWN, .br_args = THROTTLE});
	r = post("{\"model\":\"claude\",\"stream\":true," HI "}");
	assert_stream(r, "vertex", "vertex", 0);
	sse_parse(r->body, &s);
	cr_assert_null(strstr(r->body, "Too many tokens"));
	cr_assert_str_eq(h_header(r, "x-llmfd-attempts"), "3");
	cr_assert_eq(h_mock_stat(&br, "requests"), 1, "no retry of a 429");
	cr_assert(h_log_has("rate_limited"), "throttling not classified");
}

/* A Bedrock exception after the first content ends the stream with an
 * error event and no [DONE] (the truncation contract). */
Test(cloud, bedrock_late_exception_truncates)
{
	static const char *const LATE[] = {"--mode", "late-error",  "--status",
	                                   "500",    "--cut-after", "2",
	                                   NULL};
	struct h_resp *r;
	struct sse s;

	start(&(struct setup){.an_args = DOWN, .br_args = LATE});
	r = post("{\"model\":\"claude\",\"stream\":true," HI "}");
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	sse_parse(r->body, &s);
	cr_assert_str_eq(s.text, "mock bedrock", "%s", r->body);
	cr_assert_eq(s.nerror, 1, "%s", r->body);
	cr_assert_not(s.done_last, "%s", r->body);
	cr_assert_eq(h_mock_stat(&vx, "requests"), 0);
}

/* llmfd signing with a wrong secret: the mock's check refuses the
 * signature (InvalidSignatureException), an auth failure; Vertex serves. */
Test(cloud, bad_signature_is_auth)
{
	struct h_resp *r;

	start(
	    &(struct setup){.an_args = DOWN, .llmfd_secret = "not-the-secret"});
	r = post("{\"model\":\"claude\"," HI "}");
	assert_completion(r, "vertex", "vertex", 0);
	cr_assert_eq(h_mock_stat(&br, "failed"), 1);
	cr_assert(h_log_has("InvalidSignatureException") ||
	              h_log_has("signature we calculated"),
	          "%s", h_log());
	cr_assert_not(h_log_has("not-the-secret"), "the secret was logged");
}

/* Fork n clients that each send body; how many got a 200. */
static int
concurrent(int n, const char *body)
{
	pid_t pid[32];
	int ok = 0, st;

	for (int i = 0; i < n; i++) {
		if ((pid[i] = fork()) == 0) {
			struct h_resp *r = post(body);

			_exit(r->status == 200 ? 0 : 1);
		}
	}
	for (int i = 0; i < n; i++)
		if (waitpid(pid[i], &st, 0) == pid[i] && WIFEXITED(st) &&
		    WEXITSTATUS(st) == 0)
			ok++;
	return ok;
}

/* Tokens that live 3 s: after they expired, 12 concurrent requests (on a
 * one-worker daemon, so one cache) wait on one exchange, never several. */
Test(cloud, expired_token_refreshed_once_under_load)
{
	static const char *const SHORT[] = {"--token-expiry", "3",
	                                    "--token-latency-ms", "300", NULL};
	const char *body = "{\"model\":\"claude-gcp\"," HI "}";
	long before;

	start(&(struct setup){.vx_args = SHORT, .workers = 1});
	cr_assert_eq(post(body)->status, 200);
	cr_assert_eq(concurrent(4, body), 4);
	cr_assert_eq(h_mock_stat(&vx, "tokens"), 1);
	h_sleep_ms(3200); /* the token has expired */
	before = h_mock_stat(&vx, "tokens");
	cr_assert_eq(concurrent(12, body), 12, "%s", h_log());
	cr_assert_eq(h_mock_stat(&vx, "tokens"), before + 1,
	             "%ld exchanges for 12 waiting requests",
	             h_mock_stat(&vx, "tokens") - before);
	cr_assert_eq(h_mock_stat(&vx, "failed"), 0,
	             "an expired token was sent");
}

/* From half its life a token is refreshed in the background: the request
 * that notices goes at once with the old token. */
Test(cloud, token_refreshed_before_expiry_without_waiting)
{
	static const char *const MID[] = {"--token-expiry", "4",
	                                  "--token-latency-ms", "800", NULL};
	const char *body = "{\"model\":\"claude-gcp\"," HI "}";
	struct h_resp *r;
	long t0;

	start(&(struct setup){.vx_args = MID, .workers = 1});
	cr_assert_eq(post(body)->status, 200);
	cr_assert_eq(h_mock_stat(&vx, "tokens"), 1);
	h_sleep_ms(2300); /* past half of 4 s, not near its end */
	t0 = h_now_ms();
	r = post(body);
	cr_assert_eq(r->status, 200);
	cr_assert_lt(h_now_ms() - t0, 700,
	             "the request waited for the refresh");
	cr_assert_eq(h_mock_wait_stat(&vx, "tokens", 2, 3000), 2);
	cr_assert_eq(post(body)->status, 200);
	cr_assert_eq(h_mock_stat(&vx, "tokens"), 2, "one refresh only");
}

/* A token the upstream refuses (401) is dropped and the request tried
 * once more on the same deployment with a fresh one. */
Test(cloud, refused_token_refreshed_once)
{
	const char *body = "{\"model\":\"claude-gcp\"," HI "}";
	struct h_resp *r;

	/* one worker: with two, the request after the revoke could go to
	 * one that never fetched a token, and answer in one attempt */
	start(&(struct setup){.workers = 1});
	for (int i = 0; i < 4; i++)
		cr_assert_eq(post(body)->status, 200);
	cr_assert_eq(h_tcp(vx.port, "POST", "/_mock/revoke", "")->status, 200);
	r = post(body);
	assert_completion(r, "vertex", "vertex", 0);
	cr_assert_str_eq(h_header(r, "x-llmfd-attempts"), "2");
	cr_assert(h_log_has("refused the access token"));
}

/* A token endpoint that refuses the JWT fails the attempt as auth with a
 * clear message (never the key); the next deployment answers. */
Test(cloud, token_failure_is_auth)
{
	static const char *const BADTOK[] = {"--token-status", "400", NULL};
	struct h_resp *r;

	h_mock_start(&oa, "openai", NULL);
	start(&(struct setup){
	    .vx_args = BADTOK,
	    .more = h_fmt(",\n  { name = \"oa\"; group = \"claude-gcp\"; "
	                  "provider = \"openai\";\n    base_url = "
	                  "\"http://127.0.0.1:%d/v1\"; model = \"m\"; }",
	                  oa.port)});
	r = post("{\"model\":\"claude-gcp\"," HI "}");
	assert_completion(r, "openai", "openai", 0);
	cr_assert(h_log_has("token exchange failed: HTTP 400 invalid_grant"),
	          "%s", h_log());
	cr_assert(h_log_has("failed: auth 0 token exchange failed"), "%s",
	          h_log());
	cr_assert_not(h_log_has("PRIVATE KEY"));
	cr_assert_eq(h_mock_stat(&vx, "requests"), 0);
}

/* A Messages client (Claude Code) reaches Bedrock with its own body: the
 * model goes into the URL, anthropic_version and anthropic_beta into the
 * body. */
Test(cloud, messages_client_native_to_bedrock)
{
	struct h_req q = {.unix_path = h_sock(),
	                  .method = "POST",
	                  .path = "/v1/messages",
	                  .headers = "anthropic-version: 2023-06-01\r\n"
	                             "anthropic-beta: beta-1\r\n",
	                  .body = "{\"model\":\"claude\",\"max_tokens\":64,"
	                          "\"messages\":[{\"role\":\"user\","
	                          "\"content\":\"hi\"}]}"};
	struct h_resp *r;
	const char *b;

	start(&(struct setup){.an_args = DOWN});
	r = h_http(&q);
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_str_eq(h_json(r->body, "type"), "message", "%s", r->body);
	cr_assert_str_eq(h_json(r->body, "content.0.text"),
	                 "mock bedrock says hi");
	b = h_json(mock_req(&br, 0), "body");
	cr_assert_str_eq(h_json(b, "anthropic_version"), "bedrock-2023-05-31");
	cr_assert_str_eq(h_json(b, "anthropic_beta.0"), "beta-1", "%s", b);
	cr_assert_null(h_json(b, "model"), "%s", b);
	cr_assert_eq(mock_nreq(&br), 1);
}

/* The two Gemini defects found with the official OpenAI SDK: embeddings
 * with encoding_format "base64" (the SDK's default) come back as base64
 * little-endian float32, and tool-call ids differ from turn to turn. */
Test(cloud, gemini_base64_embeddings_and_unique_tool_ids)
{
	struct h_resp *r;
	struct buf raw = {0};
	const char *e, *id1, *id2;
	float f[3];

	h_mock_start(&oa, "gemini", "--tool-call", "1", NULL);
	start(&(struct setup){
	    .more = h_fmt(",\n  { name = \"ge\"; group = \"gem\"; provider = "
	                  "\"gemini\";\n    base_url = \"http://127.0.0.1:%d\";"
	                  " api_key = \"AIzaTESTKEY123\"; model = \"g\"; }",
	                  oa.port)});
	r = h_unix("POST", "/v1/embeddings",
	           "{\"model\":\"gem\",\"input\":\"hi\","
	           "\"encoding_format\":\"base64\"}");
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	e = h_json(r->body, "data.0.embedding");
	cr_assert(e && e[0] != '[', "%s", r->body);
	cr_assert_eq(b64_decode(&raw, e, strlen(e)), 0, "%s", e);
	cr_assert_eq(raw.len, 12, "three float32 values");
	memcpy(f, raw.data, sizeof f); /* the host is little-endian */
	cr_assert(f[0] > 0.0999f && f[0] < 0.1001f && f[2] > 0.2999f &&
	              f[2] < 0.3001f,
	          "%g %g %g", f[0], f[1], f[2]);
	r = h_unix("POST", "/v1/embeddings",
	           "{\"model\":\"gem\",\"input\":\"hi\"}");
	cr_assert_eq(h_json_count(r->body, "data.0.embedding"), 3, "%s",
	             r->body);
	r = post("{\"model\":\"gem\"," HI TOOLS "}");
	id1 = h_json(r->body, "choices.0.message.tool_calls.0.id");
	r = post("{\"model\":\"gem\"," HI TOOLS "}");
	id2 = h_json(r->body, "choices.0.message.tool_calls.0.id");
	cr_assert(id1 && id2 && strcmp(id1, id2) != 0, "ids %s, %s",
	          id1 ? id1 : "-", id2 ? id2 : "-");
	buf_free(&raw);
}

/* count_tokens along the chain: Anthropic down, Bedrock passed over (its
 * CountTokens is not used: never asked), Claude on Vertex counts at
 * count-tokens:rawPredict with its token, the model and anthropic_version
 * in the body. */
Test(cloud, count_tokens_on_vertex)
{
	struct h_resp *r;
	const char *q, *body;

	start(&(struct setup){.an_args = DOWN});
	r = h_unix("POST", "/v1/messages/count_tokens",
	           "{\"model\":\"claude\"," HI "}");
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_str_eq(h_header(r, "x-llmfd-deployment"), "vx");
	cr_assert_str_eq(h_header(r, "x-llmfd-provider"), "vertex");
	cr_assert_eq(mock_nreq(&br), 0);
	q = mock_req(&vx, 0);
	cr_assert_str_eq(h_json(q, "path"),
	                 "/v1/projects/proj-1/locations/us-east5/publishers/"
	                 "anthropic/models/count-tokens:rawPredict",
	                 "%s", q);
	cr_assert_str_eq(h_json(q, "headers.authorization"),
	                 "Bearer mock-token-0", "%s", q);
	body = h_json(q, "body");
	cr_assert_str_eq(h_json(body, "model"), VX_CLAUDE);
	cr_assert_str_eq(h_json(body, "anthropic_version"),
	                 "vertex-2023-10-16");
	cr_assert_eq(h_json_long(r->body, "input_tokens", -1),
	             10000 + (long)strlen(body), "%s", r->body);
	cr_assert_eq(h_mock_stat(&an, "count_tokens"), 1);
}
