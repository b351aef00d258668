/* Unit tests for the Bedrock and Vertex providers (worker/providers/
 * bedrock.c, vertex.c) and the service-account tokens (worker/gauth.c):
 * what each builds (paths, signed headers over the exact bytes, the
 * Messages body variants, Converse), how replies, event stream messages
 * and exceptions are translated and classified, the RS256 JWT, token
 * replies, and the token cache (one exchange for many waiters, refresh
 * before expiry, failures). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "common/b64.h"
#include "common/cfg.h"
#include "common/evstream.h"
#include "common/log.h"
#include "common/secret.h"
#include "common/sigv4.h"
#include "worker/gauth.h"
#include "worker/provider.h"

#define AKID   "AKIDEXAMPLE"
#define SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define T0     1440938160 /* 20150830T123600Z */
#define HAIKU  "anthropic.claude-3-haiku-20240307-v1:0"
#define CHAT_TOOLS                                                             \
	"{\"model\":\"x\",\"max_tokens\":100,\"temperature\":0.5,"             \
	"\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},"        \
	"{\"role\":\"user\",\"content\":\"weather?\"},"                        \
	"{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":"    \
	"\"c1\",\"type\":\"function\",\"function\":{\"name\":\"wx\","          \
	"\"arguments\":\"{\\\"city\\\":\\\"Oslo\\\"}\"}}]},"                   \
	"{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"sunny\"}],"  \
	"\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"wx\","     \
	"\"parameters\":{\"type\":\"object\"}}}],\"tool_choice\":"             \
	"\"required\"}"

static const char *const drop_keys[] = {
    "fallbacks", "num_retries", "timeout", "stream_timeout", "metadata", NULL};

static struct deploy_cfg dc;
static struct json req, nat;
static struct prov_out po;
static struct buf out;
static struct stream_state st;
static struct upstream_error ue;
static struct prov_call pc;

/* A Bedrock deployment signing as the SigV4 suite's key. */
static void
setup(void)
{
	memset(&dc, 0, sizeof dc);
	memset(&st, 0, sizeof st);
	memset(&ue, 0, sizeof ue);
	memset(&pc, 0, sizeof pc);
	snprintf(dc.name, sizeof dc.name, "br");
	snprintf(dc.model, sizeof dc.model, HAIKU);
	snprintf(dc.region, sizeof dc.region, "us-east-1");
	snprintf(dc.host, sizeof dc.host,
	         "bedrock-runtime.us-east-1."
	         "amazonaws.com");
	dc.tls = 1;
	dc.port = 443;
	dc.provider = PROV_BEDROCK;
	snprintf(dc.aws_access_key_id, sizeof dc.aws_access_key_id, AKID);
	snprintf(dc.aws_secret_access_key, sizeof dc.aws_secret_access_key,
	         SECRET);
	snprintf(dc.project, sizeof dc.project, "p1");
	snprintf(dc.location, sizeof dc.location, "us-east5");
	pc.d = &dc;
	pc.req = &req;
	pc.drop_keys = drop_keys;
	pc.now = T0;
}

static void
teardown(void)
{
	json_free(&req);
	json_free(&nat);
	buf_free(&po.path);
	buf_free(&po.headers);
	buf_free(&po.body);
	memset(&po, 0, sizeof po);
	buf_free(&out);
	stream_state_free(&st);
}

TestSuite(bedrock, .init = setup, .fini = teardown);
TestSuite(vertex, .init = setup, .fini = teardown);

/* Parse body into req and build with p. */
static int
build(const struct provider *p, const char *body, int stream)
{
	char err[200];

	cr_assert_eq(json_parse(&req, body, strlen(body)), 0);
	pc.stream = stream;
	return p->build(&pc, &po, err, sizeof err);
}

/* The value of header name in o's headers (static copy), or NULL. */
static const char *
hdr(const char *name)
{
	static char v[4096];
	const char *p = buf_cstr(&po.headers), *e;
	size_t n = strlen(name);

	for (; (e = strstr(p, "\r\n")) != NULL; p = e + 2)
		if (strncasecmp(p, name, n) == 0 && p[n] == ':') {
			snprintf(v, sizeof v, "%.*s", (int)(e - p - n - 2),
			         p + n + 2);
			return v;
		}
	return NULL;
}

/* ---- Bedrock requests ---- */

Test(bedrock, invoke_signed_over_the_bytes_sent)
{
	char hash[65];
	const char *a;

	cr_assert_eq(build(&prov_bedrock, CHAT_TOOLS, 0), 0);
	cr_assert_str_eq(buf_cstr(&po.path), "/model/anthropic.claude-3-"
	                                     "haiku-20240307-v1%3A0/invoke");
	cr_assert_not_null(strstr(buf_cstr(&po.body),
	                          "\"anthropic_version\":"
	                          "\"bedrock-2023-05-31\""));
	cr_assert_null(strstr(buf_cstr(&po.body), "\"model\""));
	cr_assert_str_eq(hdr("X-Amz-Date"), "20150830T123600Z");
	sigv4_sha256_hex(po.body.data, po.body.len, hash);
	cr_assert_str_eq(hdr("X-Amz-Content-Sha256"), hash);
	cr_assert_not_null(a = hdr("Authorization"));
	cr_assert(strncmp(a,
	                  "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/"
	                  "us-east-1/bedrock/aws4_request, SignedHeaders="
	                  "accept;content-type;host;x-amz-content-sha256;"
	                  "x-amz-date, Signature=",
	                  strlen("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"
	                         "20150830/us-east-1/bedrock/aws4_request, "
	                         "SignedHeaders=accept;content-type;host;x-amz-"
	                         "content-sha256;x-amz-date, Signature=")) == 0,
	          "%s", a);
	/* the signature is the suite key's over these exact headers and body */
	{
		struct sigv4_hdr h[] = {
		    {"host", "bedrock-runtime.us-east-1.amazonaws.com"},
		    {"content-type", "application/json"},
		    {"accept", "application/json"},
		    {"x-amz-date", "20150830T123600Z"},
		    {"x-amz-content-sha256", hash}};
		struct sigv4 sv = {.method = "POST",
		                   .path = buf_cstr(&po.path),
		                   .hdrs = h,
		                   .nhdrs = 5,
		                   .body = po.body.data,
		                   .blen = po.body.len,
		                   .amz_date = "20150830T123600Z",
		                   .region = "us-east-1",
		                   .service = "bedrock",
		                   .access_key_id = AKID,
		                   .secret_key = SECRET};
		struct buf want = {0};

		cr_assert_eq(sigv4_authorization(&sv, &want), 0);
		cr_assert_str_eq(a, buf_cstr(&want));
		buf_free(&want);
	}
}

Test(bedrock, session_token_sent_and_signed)
{
	snprintf(dc.aws_session_token, sizeof dc.aws_session_token,
	         "FQoGZXIvYXdzEXAMPLETOKEN");
	cr_assert_eq(build(&prov_bedrock, CHAT_TOOLS, 0), 0);
	cr_assert_str_eq(hdr("X-Amz-Security-Token"),
	                 "FQoGZXIvYXdzEXAMPLETOKEN");
	cr_assert_not_null(
	    strstr(hdr("Authorization"), ";x-amz-security-token, Signature="));
}

Test(bedrock, non_default_port_is_signed_as_sent)
{
	const char *a;

	snprintf(dc.host, sizeof dc.host, "127.0.0.1");
	dc.tls = 0;
	dc.port = 8080;
	cr_assert_eq(build(&prov_bedrock, CHAT_TOOLS, 0), 0);
	a = hdr("Authorization");
	{
		char hash[65];
		struct sigv4_hdr h[] = {{"host", "127.0.0.1:8080"},
		                        {"content-type", "application/json"},
		                        {"accept", "application/json"},
		                        {"x-amz-date", "20150830T123600Z"},
		                        {"x-amz-content-sha256", hash}};
		struct sigv4 sv = {.method = "POST",
		                   .path = buf_cstr(&po.path),
		                   .hdrs = h,
		                   .nhdrs = 5,
		                   .body = po.body.data,
		                   .blen = po.body.len,
		                   .amz_date = "20150830T123600Z",
		                   .region = "us-east-1",
		                   .service = "bedrock",
		                   .access_key_id = AKID,
		                   .secret_key = SECRET};
		struct buf want = {0};

		sigv4_sha256_hex(po.body.data, po.body.len, hash);
		cr_assert_eq(sigv4_authorization(&sv, &want), 0);
		cr_assert_str_eq(a, buf_cstr(&want));
		buf_free(&want);
	}
}

Test(bedrock, invoke_stream_path_and_body)
{
	cr_assert_eq(build(&prov_bedrock, CHAT_TOOLS, 1), 0);
	cr_assert(strstr(buf_cstr(&po.path), "/invoke-with-response-stream"));
	cr_assert_null(strstr(buf_cstr(&po.body), "\"stream\""),
	               "the URL says stream: %s", buf_cstr(&po.body));
	cr_assert_str_eq(hdr("X-Amzn-Bedrock-Accept"), "application/json");
	cr_assert_str_eq(hdr("Accept"), "application/vnd.amazon.eventstream");
	cr_assert_not_null(strstr(buf_cstr(&po.body), "\"tool_use\""));
	cr_assert_not_null(
	    strstr(buf_cstr(&po.body), "\"system\":\"be brief\""));
}

Test(bedrock, api_key_is_a_bearer_token)
{
	dc.aws_access_key_id[0] = dc.aws_secret_access_key[0] = '\0';
	snprintf(dc.api_key, sizeof dc.api_key, "ABSKbedrockkey123");
	cr_assert_eq(build(&prov_bedrock, CHAT_TOOLS, 0), 0);
	cr_assert_str_eq(hdr("Authorization"), "Bearer ABSKbedrockkey123");
	cr_assert_null(hdr("X-Amz-Date"));
}

Test(bedrock, native_messages_body)
{
	static const char body[] =
	    "{\"model\":\"claude\",\"max_tokens\":10,\"stream\":true,"
	    "\"metadata\":{\"user_id\":\"u\"},\"messages\":[{\"role\":"
	    "\"user\",\"content\":\"hi\"}],\"num_retries\":1}";
	static const char *const ndrop[] = {"num_retries", NULL};
	char err[100];

	cr_assert_eq(json_parse(&nat, body, sizeof body - 1), 0);
	cr_assert_eq(json_parse(&req, body, sizeof body - 1), 0);
	pc.native = &nat;
	pc.native_fmt = FMT_MESSAGES;
	pc.drop_keys = ndrop;
	pc.stream = 1;
	pc.fwd_headers = "anthropic-version: 2023-06-01\r\n"
	                 "anthropic-beta: a-2025, b-2025\r\n";
	cr_assert_eq(prov_bedrock.build(&pc, &po, err, sizeof err), 0, "%s",
	             err);
	cr_assert_str_eq(
	    buf_cstr(&po.body),
	    "{\"anthropic_version\":\"bedrock-2023-05-31\","
	    "\"max_tokens\":10,\"metadata\":{\"user_id\":\"u\"},"
	    "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
	    "\"anthropic_beta\":[\"a-2025\",\"b-2025\"]}");
}

Test(bedrock, formats_follow_the_model)
{
	cr_assert(provider_formats(&prov_bedrock, &dc) &
	          PROV_FMT(FMT_MESSAGES));
	snprintf(dc.model, sizeof dc.model, "meta.llama3-70b-instruct-v1:0");
	cr_assert_not(provider_formats(&prov_bedrock, &dc) &
	              PROV_FMT(FMT_MESSAGES));
}

Test(bedrock, converse_request)
{
	const char *b;

	snprintf(dc.model, sizeof dc.model, "meta.llama3-70b-instruct-v1:0");
	cr_assert_eq(build(&prov_bedrock, CHAT_TOOLS, 0), 0);
	cr_assert_str_eq(buf_cstr(&po.path),
	                 "/model/meta.llama3-70b-instruct-v1%3A0/converse");
	b = buf_cstr(&po.body);
	cr_assert_str_eq(
	    b,
	    "{\"messages\":[{\"role\":\"user\",\"content\":[{\"text\":"
	    "\"weather?\"}]},{\"role\":\"assistant\",\"content\":[{\"toolUse\":"
	    "{\"toolUseId\":\"c1\",\"name\":\"wx\",\"input\":{\"city\":"
	    "\"Oslo\"}}}]},{\"role\":\"user\",\"content\":[{\"toolResult\":{"
	    "\"toolUseId\":\"c1\",\"content\":[{\"text\":\"sunny\"}]}}]}],"
	    "\"system\":[{\"text\":\"be brief\"}],\"inferenceConfig\":{"
	    "\"maxTokens\":100,\"temperature\":0.5},\"toolConfig\":{\"tools\":"
	    "[{\"toolSpec\":{\"name\":\"wx\",\"inputSchema\":{\"json\":{"
	    "\"type\":\"object\"}}}}],\"toolChoice\":{\"any\":{}}}}");
	build(&prov_bedrock, CHAT_TOOLS, 1);
}

Test(bedrock, converse_stream_path)
{
	snprintf(dc.model, sizeof dc.model, "amazon.nova-pro-v1:0");
	cr_assert_eq(build(&prov_bedrock, CHAT_TOOLS, 1), 0);
	cr_assert_str_eq(buf_cstr(&po.path),
	                 "/model/amazon.nova-pro-v1%3A0/converse-stream");
}

Test(bedrock, converse_image_needs_base64)
{
	static const char img[] =
	    "{\"model\":\"x\",\"messages\":[{\"role\":\"user\",\"content\":[{"
	    "\"type\":\"image_url\",\"image_url\":{\"url\":"
	    "\"data:image/png;base64,iVBORw0=\"}}]}]}";
	static const char url[] =
	    "{\"model\":\"x\",\"messages\":[{\"role\":\"user\",\"content\":[{"
	    "\"type\":\"image_url\",\"image_url\":{\"url\":"
	    "\"https://x/cat.png\"}}]}]}";

	snprintf(dc.model, sizeof dc.model, "amazon.nova-pro-v1:0");
	cr_assert_eq(build(&prov_bedrock, img, 0), 0);
	cr_assert_not_null(strstr(buf_cstr(&po.body),
	                          "{\"image\":{\"format\":\"png\",\"source\":{"
	                          "\"bytes\":\"iVBORw0=\"}}}"));
	json_free(&req);
	buf_reset(&po.body);
	buf_reset(&po.path);
	buf_reset(&po.headers);
	cr_assert_eq(build(&prov_bedrock, url, 0), -1);
}

Test(bedrock, embeddings_unsupported)
{
	char err[120];

	cr_assert_eq(json_parse(&req, "{\"input\":\"x\"}", 13), 0);
	pc.endpoint = EP_EMBED;
	cr_assert_eq(prov_bedrock.build(&pc, &po, err, sizeof err), -1);
	cr_assert_not_null(strstr(err, "embeddings"));
}

/* ---- Bedrock replies ---- */

Test(bedrock, invoke_reply_is_a_message)
{
	static const char m[] =
	    "{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\","
	    "\"model\":\"claude\",\"content\":[{\"type\":\"text\",\"text\":"
	    "\"hi\"}],\"stop_reason\":\"end_turn\",\"usage\":{"
	    "\"input_tokens\":3,\"output_tokens\":1}}";
	struct usage u = {0};
	int cf = 0;

	cr_assert_eq(
	    prov_bedrock.response(&pc, m, sizeof m - 1, &out, &u, &cf, &ue), 0);
	cr_assert_not_null(strstr(buf_cstr(&out), "\"content\":\"hi\""));
	cr_assert_eq(u.prompt_tokens, 3);
}

Test(bedrock, converse_reply)
{
	static const char m[] =
	    "{\"output\":{\"message\":{\"role\":\"assistant\",\"content\":[{"
	    "\"text\":\"Let me check.\"},{\"toolUse\":{\"toolUseId\":\"tu1\","
	    "\"name\":\"wx\",\"input\":{\"city\":\"Oslo\"}}}]}},"
	    "\"stopReason\":\"tool_use\",\"usage\":{\"inputTokens\":12,"
	    "\"outputTokens\":7,\"totalTokens\":19},\"metrics\":{"
	    "\"latencyMs\":100}}";
	struct usage u = {0};
	int cf = 0;
	const char *o;

	snprintf(dc.model, sizeof dc.model, "amazon.nova-pro-v1:0");
	cr_assert_eq(json_parse(&req, "{}", 2), 0);
	cr_assert_eq(
	    prov_bedrock.response(&pc, m, sizeof m - 1, &out, &u, &cf, &ue), 0);
	o = buf_cstr(&out);
	cr_assert_not_null(strstr(o, "\"content\":\"Let me check.\""), "%s", o);
	cr_assert_not_null(strstr(o, "\"tool_calls\":[{\"id\":\"tu1\","
	                             "\"type\":\"function\",\"function\":{"
	                             "\"name\":\"wx\",\"arguments\":\"{\\\""
	                             "city\\\":\\\"Oslo\\\"}\"}}]"),
	                   "%s", o);
	cr_assert_not_null(strstr(o, "\"finish_reason\":\"tool_calls\""));
	cr_assert_eq(u.prompt_tokens, 12);
	cr_assert_eq(u.completion_tokens, 7);
}

Test(bedrock, converse_guardrail_is_content_filter)
{
	static const char m[] =
	    "{\"output\":{\"message\":{\"role\":\"assistant\",\"content\":[]}},"
	    "\"stopReason\":\"guardrail_intervened\",\"usage\":{}}";
	struct usage u = {0};
	int cf = 0;

	snprintf(dc.model, sizeof dc.model, "amazon.nova-pro-v1:0");
	cr_assert_eq(
	    prov_bedrock.response(&pc, m, sizeof m - 1, &out, &u, &cf, &ue), 0);
	cr_assert_eq(cf, 1);
}

/* ---- Bedrock event streams ---- */

/* Decode event stream bytes as the engine does and translate each
 * message; the last stream_event result. */
struct feed {
	int rc;
};

static int
feed_msg(void *arg, const struct evs_msg *m)
{
	struct feed *f = arg;
	char name[200];
	const char *pre = "";
	const struct evs_str *t = &m->event_type;

	if (m->message_type.n == 9 &&
	    memcmp(m->message_type.p, "exception", 9) == 0) {
		pre = "exception:";
		t = &m->exception_type;
	}
	snprintf(name, sizeof name, "%s%.*s", pre, (int)t->n, t->p ? t->p : "");
	f->rc = prov_bedrock.stream_event(&pc, &st, name, strlen(name),
	                                  m->payload, m->plen, &out, &ue);
	return f->rc == 0 ? 0 : 1;
}

/* Append an InvokeModelWithResponseStream chunk carrying event json. */
static void
chunk(struct buf *b, const char *json)
{
	static const struct evs_hdr h[] = {
	    {":event-type", "chunk"},
	    {":content-type", "application/json"},
	    {":message-type", "event"}};
	struct buf p = {0};

	buf_adds(&p, "{\"bytes\":\"");
	b64_encode(&p, json, strlen(json), 0);
	buf_adds(&p, "\",\"p\":\"abcdefgh\"}");
	evs_encode(b, h, 3, p.data, p.len);
	buf_free(&p);
}

/* Append an exception message of type x with a {"message"} payload. */
static void
exception(struct buf *b, const char *x, const char *msg)
{
	struct evs_hdr h[] = {{":exception-type", x},
	                      {":content-type", "application/json"},
	                      {":message-type", "exception"}};
	struct buf p = {0};

	buf_printf(&p, "{\"message\":\"%s\"}", msg);
	evs_encode(b, h, 3, p.data, p.len);
	buf_free(&p);
}

Test(bedrock, invoke_stream_through_anthropic)
{
	struct buf b = {0};
	struct evs e = {0};
	struct feed f = {0};
	const char *o;

	chunk(&b, "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_b\","
	          "\"model\":\"claude\",\"usage\":{\"input_tokens\":5}}}");
	chunk(&b, "{\"type\":\"content_block_start\",\"index\":0,"
	          "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}");
	chunk(&b, "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{"
	          "\"type\":\"text_delta\",\"text\":\"Hello\"}}");
	chunk(&b, "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":"
	          "\"end_turn\"},\"usage\":{\"output_tokens\":2}}");
	chunk(&b, "{\"type\":\"message_stop\",\"amazon-bedrock-"
	          "invocationMetrics\":{\"inputTokenCount\":5}}");
	st.include_usage = 1;
	cr_assert_eq(evs_feed(&e, b.data, b.len, feed_msg, &f), 1);
	cr_assert_eq(f.rc, 1, "message_stop ends the stream");
	o = buf_cstr(&out);
	cr_assert_not_null(strstr(o, "\"id\":\"msg_b\""), "%s", o);
	cr_assert_not_null(strstr(o, "\"content\":\"Hello\""), "%s", o);
	cr_assert_not_null(strstr(o, "\"finish_reason\":\"stop\""), "%s", o);
	cr_assert_not_null(strstr(o, "\"prompt_tokens\":5"), "%s", o);
	evs_free(&e);
	buf_free(&b);
}

Test(bedrock, stream_exceptions_classified)
{
	static const struct {
		const char *type, *msg;
		enum errclass cls;
	} x[] = {
	    {"throttlingException", "Too many requests", EC_RATE_LIMITED},
	    {"serviceUnavailableException", "down", EC_TRANSIENT},
	    {"internalServerException", "oops", EC_TRANSIENT},
	    {"modelStreamErrorException", "model failed", EC_TRANSIENT},
	    {"modelTimeoutException", "slow", EC_TRANSIENT},
	    {"validationException", "bad input", EC_BAD_REQUEST},
	    {"validationException", "Input is too long for requested model",
	     EC_CONTEXT_WINDOW},
	    {"accessDeniedException", "no", EC_AUTH},
	    {"someNewException", "new", EC_TRANSIENT},
	};

	for (size_t i = 0; i < sizeof x / sizeof x[0]; i++) {
		struct buf b = {0};
		struct evs e = {0};
		struct feed f = {0};

		memset(&ue, 0, sizeof ue);
		exception(&b, x[i].type, x[i].msg);
		evs_feed(&e, b.data, b.len, feed_msg, &f);
		cr_assert_eq(f.rc, -1, "%s", x[i].type);
		cr_assert_eq(ue.cls, x[i].cls, "%s: class %d", x[i].type,
		             ue.cls);
		cr_assert_str_eq(ue.message, x[i].msg);
		evs_free(&e);
		buf_free(&b);
	}
}

Test(bedrock, converse_stream_with_tool)
{
	static const struct {
		const char *type, *json;
	} ev[] = {
	    {"messageStart", "{\"role\":\"assistant\",\"p\":\"xx\"}"},
	    {"contentBlockDelta",
	     "{\"delta\":{\"text\":\"Hi\"},\"contentBlockIndex\":0}"},
	    {"contentBlockStop", "{\"contentBlockIndex\":0}"},
	    {"contentBlockStart",
	     "{\"start\":{\"toolUse\":{\"toolUseId\":\"tu9\",\"name\":\"wx\"}},"
	     "\"contentBlockIndex\":1}"},
	    {"contentBlockDelta",
	     "{\"delta\":{\"toolUse\":{\"input\":\"{\\\"city\\\":\"}},"
	     "\"contentBlockIndex\":1}"},
	    {"contentBlockDelta",
	     "{\"delta\":{\"toolUse\":{\"input\":\"\\\"Oslo\\\"}\"}},"
	     "\"contentBlockIndex\":1}"},
	    {"contentBlockStop", "{\"contentBlockIndex\":1}"},
	    {"messageStop", "{\"stopReason\":\"tool_use\"}"},
	    {"metadata", "{\"usage\":{\"inputTokens\":4,\"outputTokens\":9,"
	                 "\"totalTokens\":13},\"metrics\":{\"latencyMs\":5}}"},
	};
	int rc = 0;
	const char *o;

	snprintf(dc.model, sizeof dc.model, "amazon.nova-pro-v1:0");
	st.include_usage = 1;
	for (size_t i = 0; i < sizeof ev / sizeof ev[0]; i++) {
		rc = prov_bedrock.stream_event(&pc, &st, ev[i].type,
		                               strlen(ev[i].type), ev[i].json,
		                               strlen(ev[i].json), &out, &ue);
		cr_assert_eq(rc, i + 1 == sizeof ev / sizeof ev[0] ? 1 : 0,
		             "%s: %d %s", ev[i].type, rc, ue.message);
	}
	o = buf_cstr(&out);
	cr_assert_not_null(strstr(o, "\"role\":\"assistant\""), "%s", o);
	cr_assert_not_null(strstr(o, "\"content\":\"Hi\""), "%s", o);
	cr_assert_not_null(strstr(o, "\"id\":\"tu9\""), "%s", o);
	cr_assert_not_null(strstr(o, "\"arguments\":\"\\\"Oslo\\\"}\""), "%s",
	                   o);
	cr_assert_not_null(strstr(o, "\"finish_reason\":\"tool_calls\""));
	cr_assert_not_null(strstr(o, "\"total_tokens\":13"), "%s", o);
	cr_assert(st.tool_seen);
}

Test(bedrock, http_errors_by_error_type)
{
	static const struct {
		int status;
		const char *type, *body;
		enum errclass cls;
	} x[] = {
	    {429, "ThrottlingException", "{\"message\":\"Too many\"}",
	     EC_RATE_LIMITED},
	    {400, "ServiceQuotaExceededException", "{\"message\":\"quota\"}",
	     EC_RATE_LIMITED},
	    {429, "ModelNotReadyException", "{\"message\":\"warming\"}",
	     EC_TRANSIENT},
	    {424, "ModelErrorException", "{\"message\":\"model\"}",
	     EC_TRANSIENT},
	    {403, "AccessDeniedException", "{\"message\":\"denied\"}", EC_AUTH},
	    {403, "InvalidSignatureException", "{\"message\":\"sig\"}",
	     EC_AUTH},
	    {404, "ResourceNotFoundException", "{\"message\":\"model\"}",
	     EC_NOT_FOUND},
	    {400, "ValidationException", "{\"message\":\"Malformed input\"}",
	     EC_BAD_REQUEST},
	    {400, "", "{\"message\":\"Malformed input\"}", EC_BAD_REQUEST},
	    {503, "", "{\"message\":\"down\"}", EC_TRANSIENT},
	};

	for (size_t i = 0; i < sizeof x / sizeof x[0]; i++) {
		memset(&ue, 0, sizeof ue);
		ue.retry_after_ms = 1500;
		ue.should_retry = -1;
		prov_bedrock.classify(&pc, x[i].status, x[i].type, x[i].body,
		                      strlen(x[i].body), &ue);
		cr_assert_eq(ue.cls, x[i].cls, "%d %s: %d", x[i].status,
		             x[i].type, ue.cls);
		cr_assert_eq(ue.retry_after_ms, 1500, "header hint kept");
	}
}

/* ---- Vertex ---- */

Test(vertex, claude_raw_predict)
{
	dc.provider = PROV_VERTEX;
	snprintf(dc.model, sizeof dc.model, "claude-sonnet-4-5@20250929");
	snprintf(dc.path, sizeof dc.path, "/v1");
	snprintf(dc.api_key, sizeof dc.api_key, "ya29.static-token");
	cr_assert_eq(build(&prov_vertex, CHAT_TOOLS, 1), 0);
	cr_assert_str_eq(buf_cstr(&po.path),
	                 "/v1/projects/p1/locations/us-east5/publishers/"
	                 "anthropic/models/claude-sonnet-4-5@20250929:"
	                 "streamRawPredict");
	cr_assert(strncmp(buf_cstr(&po.body),
	                  "{\"anthropic_version\":\"vertex-2023-10-16\","
	                  "\"max_tokens\":100,",
	                  58) == 0,
	          "%s", buf_cstr(&po.body));
	cr_assert_not_null(strstr(buf_cstr(&po.body), "\"stream\":true"));
	cr_assert_null(strstr(buf_cstr(&po.body), "\"model\""));
	cr_assert_str_eq(hdr("Authorization"), "Bearer ya29.static-token");
}

Test(vertex, claude_native_keeps_stream_drops_model)
{
	static const char body[] =
	    "{\"model\":\"claude\",\"max_tokens\":10,\"stream\":true,"
	    "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
	char err[100];

	dc.provider = PROV_VERTEX;
	snprintf(dc.model, sizeof dc.model, "claude-sonnet-4-5@20250929");
	cr_assert_eq(json_parse(&nat, body, sizeof body - 1), 0);
	cr_assert_eq(json_parse(&req, body, sizeof body - 1), 0);
	pc.native = &nat;
	pc.native_fmt = FMT_MESSAGES;
	pc.stream = 1;
	pc.fwd_headers = "anthropic-beta: x-1\r\n";
	cr_assert_eq(prov_vertex.build(&pc, &po, err, sizeof err), 0);
	cr_assert_str_eq(buf_cstr(&po.body),
	                 "{\"anthropic_version\":\"vertex-2023-10-16\","
	                 "\"max_tokens\":10,\"stream\":true,\"messages\":[{"
	                 "\"role\":\"user\",\"content\":\"hi\"}]}");
	cr_assert_str_eq(hdr("anthropic-beta"), "x-1");
}

/* Claude's count-tokens on Vertex: one path per project and location,
 * the model (the deployment's) kept in the body with anthropic_version;
 * Gemini models and Bedrock do not count. */
Test(vertex, claude_count_tokens)
{
	static const char body[] =
	    "{\"model\":\"claude\",\"num_retries\":1,"
	    "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
	char err[100];

	dc.provider = PROV_VERTEX;
	snprintf(dc.model, sizeof dc.model, "claude-sonnet-4-5@20250929");
	snprintf(dc.path, sizeof dc.path, "/v1");
	cr_assert_eq(json_parse(&nat, body, sizeof body - 1), 0);
	cr_assert_eq(json_parse(&req, body, sizeof body - 1), 0);
	pc.native = &nat;
	pc.native_fmt = FMT_MESSAGES;
	pc.endpoint = EP_COUNT;
	pc.fwd_headers = "anthropic-beta: x-1\r\n";
	cr_assert(provider_counts(&prov_vertex, &dc, FMT_MESSAGES));
	cr_assert_eq(prov_vertex.build(&pc, &po, err, sizeof err), 0, "%s",
	             err);
	cr_assert_str_eq(buf_cstr(&po.path),
	                 "/v1/projects/p1/locations/us-east5/publishers/"
	                 "anthropic/models/count-tokens:rawPredict");
	cr_assert_str_eq(
	    buf_cstr(&po.body),
	    "{\"model\":\"claude-sonnet-4-5@20250929\","
	    "\"messages\":[{\"role\":\"user\",\"content\":"
	    "\"hi\"}],\"anthropic_version\":\"vertex-2023-10-16\"}");
	cr_assert_str_eq(hdr("anthropic-beta"), "x-1");
	snprintf(dc.model, sizeof dc.model, "gemini-2.5-pro");
	cr_assert_not(provider_counts(&prov_vertex, &dc, FMT_MESSAGES));
	cr_assert_eq(prov_vertex.build(&pc, &po, err, sizeof err), -1);
	dc.provider = PROV_BEDROCK;
	snprintf(dc.model, sizeof dc.model, HAIKU);
	cr_assert_not(provider_counts(&prov_bedrock, &dc, FMT_MESSAGES));
	cr_assert_eq(prov_bedrock.build(&pc, &po, err, sizeof err), -1);
	cr_assert_not_null(strstr(err, "count_tokens"), "%s", err);
}

Test(vertex, gemini_generate_content)
{
	dc.provider = PROV_VERTEX;
	snprintf(dc.model, sizeof dc.model, "gemini-2.5-pro");
	snprintf(dc.location, sizeof dc.location, "global");
	snprintf(dc.path, sizeof dc.path, "/v1");
	dc.sa_private_key = (char *)(uintptr_t) "x"; /* an account: no key */
	cr_assert_eq(build(&prov_vertex, CHAT_TOOLS, 1), 0);
	cr_assert_str_eq(buf_cstr(&po.path),
	                 "/v1/projects/p1/locations/global/publishers/google/"
	                 "models/gemini-2.5-pro:streamGenerateContent?alt=sse");
	cr_assert_not_null(strstr(buf_cstr(&po.body), "\"contents\":["));
	cr_assert_null(hdr("Authorization"), "the engine adds the token");
	cr_assert_not(provider_formats(&prov_vertex, &dc) &
	              PROV_FMT(FMT_MESSAGES));
	dc.sa_private_key = NULL;
}

Test(vertex, errors_classified)
{
	static const char ctx[] = "{\"type\":\"error\",\"error\":{\"type\":"
	                          "\"invalid_request_error\",\"message\":"
	                          "\"Prompt is too long\"}}";
	static const char big[] = "{\"error\":{\"message\":\"too big\"}}";
	static const char quota[] =
	    "[{\"error\":{\"code\":429,\"message\":\"Quota exceeded for "
	    "aiplatform.googleapis.com/online_prediction_requests_per_base_"
	    "model\",\"status\":\"RESOURCE_EXHAUSTED\"}}]";
	static const char prec[] =
	    "{\"error\":{\"code\":400,\"message\":\"Project is not allowed to "
	    "use Publisher Model\",\"status\":\"FAILED_PRECONDITION\"}}";

	ue.retry_after_ms = -1;
	prov_vertex.classify(&pc, 400, "", ctx, sizeof ctx - 1, &ue);
	cr_assert_eq(ue.cls, EC_CONTEXT_WINDOW);
	prov_vertex.classify(&pc, 413, "", big, sizeof big - 1, &ue);
	cr_assert_eq(ue.cls, EC_CONTEXT_WINDOW);
	prov_vertex.classify(&pc, 429, "", quota, sizeof quota - 1, &ue);
	cr_assert_eq(ue.cls, EC_RATE_LIMITED);
	prov_vertex.classify(&pc, 400, "", prec, sizeof prec - 1, &ue);
	cr_assert_eq(ue.cls, EC_AUTH);
}

/* ---- Gemini defects (issue 15) ---- */

Test(vertex, gemini_embeddings_base64)
{
	static const char r[] = "{\"embedding\":{\"values\":[1.0,-2.5]}}";
	static const char q[] =
	    "{\"model\":\"e\",\"input\":\"x\",\"encoding_format\":\"base64\"}";
	struct usage u = {0};
	int cf = 0;
	struct buf want = {0};
	float f[2] = {1.0f, -2.5f};
	unsigned char le[8];

	for (int i = 0; i < 2; i++) {
		uint32_t v;

		memcpy(&v, &f[i], 4);
		for (int k = 0; k < 4; k++)
			le[i * 4 + k] = (unsigned char)(v >> (8 * k));
	}
	b64_encode(&want, le, 8, 0);
	snprintf(dc.model, sizeof dc.model, "text-embedding-004");
	cr_assert_eq(json_parse(&req, q, sizeof q - 1), 0);
	pc.endpoint = EP_EMBED;
	cr_assert_eq(
	    prov_gemini.response(&pc, r, sizeof r - 1, &out, &u, &cf, &ue), 0);
	cr_assert_str_eq(buf_cstr(&want), "AACAPwAAIMA=");
	cr_assert_not_null(strstr(buf_cstr(&out), "\"embedding\":\"AACAPwAAIMA"
	                                          "=\""),
	                   "%s", buf_cstr(&out));
	buf_free(&want);
}

Test(vertex, gemini_tool_ids_unique_across_turns)
{
	static const char r[] =
	    "{\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{"
	    "\"name\":\"wx\",\"args\":{}}}]},\"finishReason\":\"STOP\"}]}";
	struct usage u = {0};
	int cf = 0;
	char a[64], b[64];
	static struct json j;

	cr_assert_eq(json_parse(&req, "{}", 2), 0);
	cr_assert_eq(
	    prov_gemini.response(&pc, r, sizeof r - 1, &out, &u, &cf, &ue), 0);
	cr_assert_eq(json_parse(&j, out.data, out.len), 0);
	json_str(&j, json_path(&j, 0, "choices.0.message.tool_calls.0.id"), a,
	         sizeof a);
	buf_reset(&out);
	cr_assert_eq(
	    prov_gemini.response(&pc, r, sizeof r - 1, &out, &u, &cf, &ue), 0);
	cr_assert_eq(json_parse(&j, out.data, out.len), 0);
	json_str(&j, json_path(&j, 0, "choices.0.message.tool_calls.0.id"), b,
	         sizeof b);
	cr_assert(strncmp(a, "call_", 5) == 0, "%s", a);
	cr_assert_str_neq(a, b, "two turns got the same id %s", a);
	json_free(&j);
}

/* ---- service-account tokens ---- */

static char tdir[64];
static struct cfg *gcfg;
static struct event_base *gbase;
static struct gauth *g;
static char *pem_pub;

/* What a waiting request was told. */
static struct told {
	int n;
	char token[64];
	enum errclass cls;
	char msg[256];
} told[4];

static void
on_token(void *arg, const char *token, enum errclass cls, const char *msg)
{
	struct told *t = arg;

	t->n++;
	snprintf(t->token, sizeof t->token, "%s", token ? token : "");
	t->cls = cls;
	snprintf(t->msg, sizeof t->msg, "%s", msg ? msg : "");
}

/* An RSA key as private PEM (heap) and public PEM (pem_pub, heap). */
static char *
gen_key(void)
{
	EVP_PKEY *k = EVP_RSA_gen(2048);
	BIO *b = BIO_new(BIO_s_mem()), *pb = BIO_new(BIO_s_mem());
	char *p, *s;
	long n;

	cr_assert_not_null(k);
	PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL);
	PEM_write_bio_PUBKEY(pb, k);
	n = BIO_get_mem_data(b, &p);
	s = strndup(p, (size_t)n);
	n = BIO_get_mem_data(pb, &p);
	pem_pub = strndup(p, (size_t)n);
	BIO_free(b);
	BIO_free(pb);
	EVP_PKEY_free(k);
	return s;
}

/* A service-account key file and a config with two Vertex deployments
 * of that account; the accounts set up on an event base. */
static void
gsetup(void)
{
	char file[128], *cause = NULL, *pem = gen_key();
	struct buf esc = {0};
	FILE *f;

	log_init(LOG_LVL_ERROR, "test_cloud");
	snprintf(tdir, sizeof tdir, "/tmp/llmfd-gauth-XXXXXX");
	cr_assert_not_null(mkdtemp(tdir));
	json_escape(&esc, pem, strlen(pem));
	snprintf(file, sizeof file, "%s/sa.json", tdir);
	cr_assert_not_null(f = fopen(file, "w"));
	fprintf(f,
	        "{\"type\":\"service_account\",\"project_id\":\"proj-1\","
	        "\"private_key_id\":\"kid-1\",\"private_key\":\"%s\","
	        "\"client_email\":\"llmfd@proj-1.iam.gserviceaccount.com\","
	        "\"token_uri\":\"http://127.0.0.1:9/token\"}",
	        buf_cstr(&esc));
	fclose(f);
	buf_free(&esc);
	free(pem);
	snprintf(file, sizeof file, "%s/llmfd.conf", tdir);
	cr_assert_not_null(f = fopen(file, "w"));
	fprintf(f, "deployments = (\n"
	           " { name = \"v1\"; provider = \"vertex\"; model = "
	           "\"claude-x\"; credentials_file = \"sa.json\"; },\n"
	           " { name = \"v2\"; provider = \"vertex\"; model = "
	           "\"gemini-x\"; credentials_file = \"sa.json\"; },\n"
	           " { name = \"o\"; model = \"m\"; } );\n");
	fclose(f);
	gcfg = cfg_load(file, &cause);
	cr_assert_not_null(gcfg, "%s", cause ? cause : "?");
	cr_assert_not_null(gbase = event_base_new());
	g = gauth_new(gbase, NULL, gcfg, &cause);
	cr_assert_not_null(g, "%s", cause ? cause : "?");
	memset(told, 0, sizeof told);
}

static void
gteardown(void)
{
	char p[128];

	gauth_free(g);
	if (gbase)
		event_base_free(gbase);
	cfg_free(gcfg);
	free(pem_pub);
	snprintf(p, sizeof p, "%s/sa.json", tdir);
	unlink(p);
	snprintf(p, sizeof p, "%s/llmfd.conf", tdir);
	unlink(p);
	rmdir(tdir);
}

TestSuite(gauth, .init = gsetup, .fini = gteardown);

/* Decode base64url part i of a JWT into out. */
static void
jwt_part(const char *jwt, int i, struct buf *dst)
{
	const char *p = jwt, *e;

	for (; i > 0; i--)
		p = strchr(p, '.') + 1;
	e = strchr(p, '.');
	cr_assert_eq(b64_decode(dst, p, e ? (size_t)(e - p) : strlen(p)), 0);
}

Test(gauth, config_reads_the_key_file)
{
	const struct deploy_cfg *d = &gcfg->deploy[0];

	cr_assert_str_eq(d->sa_email, "llmfd@proj-1.iam.gserviceaccount.com");
	cr_assert_str_eq(d->sa_key_id, "kid-1");
	cr_assert_str_eq(d->project, "proj-1", "project from the key file");
	cr_assert_str_eq(d->location, "global");
	cr_assert_str_eq(d->base_url, "https://aiplatform.googleapis.com/v1");
	cr_assert_not_null(strstr(d->sa_private_key, "PRIVATE KEY"));
}

Test(gauth, jwt_is_rs256_signed)
{
	struct buf jwt = {0}, h = {0}, c = {0}, sig = {0}, in = {0};
	char err[100];
	const char *dot2;
	EVP_PKEY *pub;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	BIO *bio;

	buf_adds(&jwt, "assertion="); /* appended after what out holds */
	cr_assert_eq(gauth_jwt(gcfg->deploy[0].sa_private_key,
	                       "sa@p.iam.gserviceaccount.com", "kid-1",
	                       "https://oauth2.googleapis.com/token",
	                       1700000000, &jwt, err, sizeof err),
	             0, "%s", err);
	memmove(jwt.data, jwt.data + 10, jwt.len - 10);
	jwt.len -= 10;
	cr_assert_null(strchr(buf_cstr(&jwt), '='), "no padding");
	jwt_part(jwt.data, 0, &h);
	jwt_part(jwt.data, 1, &c);
	jwt_part(jwt.data, 2, &sig);
	cr_assert_str_eq(
	    buf_cstr(&h),
	    "{\"alg\":\"RS256\",\"typ\":\"JWT\",\"kid\":\"kid-1\"}");
	cr_assert_str_eq(buf_cstr(&c),
	                 "{\"iss\":\"sa@p.iam.gserviceaccount.com\",\"scope\":"
	                 "\"https://www.googleapis.com/auth/cloud-platform\","
	                 "\"aud\":\"https://oauth2.googleapis.com/token\","
	                 "\"iat\":1700000000,\"exp\":1700003600}");
	dot2 = strrchr(jwt.data, '.');
	buf_add(&in, jwt.data, (size_t)(dot2 - jwt.data));
	cr_assert_not_null(bio = BIO_new_mem_buf(pem_pub, -1));
	cr_assert_not_null(pub = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL));
	cr_assert_eq(EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, pub),
	             1);
	cr_assert_eq(EVP_DigestVerify(ctx, (unsigned char *)sig.data, sig.len,
	                              (unsigned char *)in.data, in.len),
	             1, "signature verifies with the public key");
	EVP_MD_CTX_free(ctx);
	EVP_PKEY_free(pub);
	BIO_free(bio);
	buf_free(&jwt);
	buf_free(&h);
	buf_free(&c);
	buf_free(&sig);
	buf_free(&in);
}

Test(gauth, jwt_bad_key_refused_without_quoting_it)
{
	struct buf jwt = {0};
	char err[100];

	cr_assert_eq(gauth_jwt("-----BEGIN PRIVATE KEY-----\nnotakey\n", "a",
	                       "", "b", 1, &jwt, err, sizeof err),
	             -1);
	cr_assert_null(strstr(err, "notakey"));
	buf_free(&jwt);
}

#define PARSE(s)        gauth_parse_token(s, strlen(s), &t, &e)
#define CLASSIFY(st, s) gauth_classify(st, s, strlen(s), msg, sizeof msg)

Test(gauth, token_replies)
{
	struct buf t = {0};
	long long e;
	char msg[200];

	cr_assert_eq(PARSE("{\"access_token\":\"ya29.a\",\"expires_in\":3599,"
	                   "\"token_type\":\"Bearer\"}"),
	             0);
	cr_assert_str_eq(buf_cstr(&t), "ya29.a");
	cr_assert_eq(e, 3599);
	buf_reset(&t);
	cr_assert_eq(PARSE("{\"access_token\":\"b\",\"expires_in\":\"120\"}"),
	             0);
	cr_assert_eq(e, 120, "expires_in may be a string");
	buf_reset(&t);
	cr_assert_eq(PARSE("{\"token_type\":\"Bearer\"}"), -1);
	cr_assert_eq(CLASSIFY(400, "{\"error\":\"invalid_grant\","
	                           "\"error_description\":\"Invalid JWT "
	                           "Signature.\"}"),
	             EC_AUTH);
	cr_assert_not_null(strstr(msg, "invalid_grant: Invalid JWT Signature"),
	                   "%s", msg);
	cr_assert_eq(gauth_classify(503, "", 0, msg, sizeof msg), EC_TRANSIENT);
	cr_assert_eq(CLASSIFY(400, "{\"error\":\"temporarily_unavailable\"}"),
	             EC_TRANSIENT);
	cr_assert_eq(gauth_classify(0, "", 0, msg, sizeof msg), EC_TRANSIENT);
	buf_free(&t);
}

Test(gauth, one_exchange_for_many_waiters_then_cached)
{
	struct gauth_wait w[3];
	const char *tok = NULL;
	char msg[160];

	memset(w, 0, sizeof w);
	cr_assert_eq(
	    gauth_token(g, 2, &w[0], on_token, &told[0], &tok, msg, sizeof msg),
	    1, "no account: go at once");
	cr_assert_null(tok);
	cr_assert_eq(
	    gauth_token(g, 0, &w[0], on_token, &told[0], &tok, msg, sizeof msg),
	    0);
	cr_assert_eq(
	    gauth_token(g, 1, &w[1], on_token, &told[1], &tok, msg, sizeof msg),
	    0, "the other deployment of the account waits too");
	cr_assert_eq(
	    gauth_token(g, 0, &w[2], on_token, &told[2], &tok, msg, sizeof msg),
	    0);
	cr_assert_eq(gauth_refreshes(g, 0), 1, "one exchange, not three");
	cr_assert_eq(gauth_refreshes(g, 1), 1, "shared by the account");
	gauth_cancel(&w[2]);
	gauth_test_answer(g, 0, 200,
	                  "{\"access_token\":\"tok-1\",\"expires_in\":3600}");
	cr_assert_eq(told[0].n, 1);
	cr_assert_str_eq(told[0].token, "tok-1");
	cr_assert_eq(told[1].n, 1);
	cr_assert_eq(told[2].n, 0, "a cancelled waiter is not called");
	cr_assert_eq(
	    gauth_token(g, 1, &w[0], on_token, &told[0], &tok, msg, sizeof msg),
	    1);
	cr_assert_str_eq(tok, "tok-1");
	cr_assert_eq(gauth_refreshes(g, 0), 1, "served from the cache");
}

Test(gauth, refreshed_in_background_before_expiry)
{
	struct gauth_wait w;
	const char *tok = NULL;
	char msg[160];

	memset(&w, 0, sizeof w);
	gauth_token(g, 0, &w, on_token, &told[0], &tok, msg, sizeof msg);
	gauth_test_answer(g, 0, 200,
	                  "{\"access_token\":\"tok-1\",\"expires_in\":3600}");
	gauth_test_expire(g, 0, 200000); /* 200 s left: under 5 min */
	cr_assert_eq(
	    gauth_token(g, 0, &w, on_token, &told[1], &tok, msg, sizeof msg), 1,
	    "the old token is still used");
	cr_assert_str_eq(tok, "tok-1");
	cr_assert_eq(gauth_refreshes(g, 0), 2, "one refresh started");
	cr_assert_eq(
	    gauth_token(g, 1, &w, on_token, &told[1], &tok, msg, sizeof msg),
	    1);
	cr_assert_eq(gauth_refreshes(g, 0), 2, "never two at once");
	gauth_test_answer(g, 0, 200,
	                  "{\"access_token\":\"tok-2\",\"expires_in\":3600}");
	cr_assert_eq(told[1].n, 0, "nobody waited");
	gauth_token(g, 0, &w, on_token, &told[1], &tok, msg, sizeof msg);
	cr_assert_str_eq(tok, "tok-2");
}

Test(gauth, expired_token_waits_and_failure_is_auth)
{
	struct gauth_wait w;
	const char *tok = NULL;
	char msg[160];

	memset(&w, 0, sizeof w);
	gauth_token(g, 0, &w, on_token, &told[0], &tok, msg, sizeof msg);
	gauth_test_answer(g, 0, 200,
	                  "{\"access_token\":\"tok-1\",\"expires_in\":3600}");
	gauth_test_expire(g, 0, 0);
	cr_assert_eq(
	    gauth_token(g, 0, &w, on_token, &told[1], &tok, msg, sizeof msg), 0,
	    "an expired token is never sent");
	gauth_test_answer(g, 0, 400,
	                  "{\"error\":\"invalid_grant\",\"error_description\":"
	                  "\"Invalid JWT Signature.\"}");
	cr_assert_eq(told[1].n, 1);
	cr_assert_str_eq(told[1].token, "");
	cr_assert_eq(told[1].cls, EC_AUTH);
	cr_assert_not_null(strstr(told[1].msg, "invalid_grant"));
	cr_assert_null(strstr(told[1].msg, "PRIVATE"));
}

Test(gauth, refused_token_is_dropped)
{
	struct gauth_wait w;
	const char *tok = NULL;
	char msg[160];

	memset(&w, 0, sizeof w);
	gauth_token(g, 0, &w, on_token, &told[0], &tok, msg, sizeof msg);
	gauth_test_answer(g, 0, 200,
	                  "{\"access_token\":\"tok-1\",\"expires_in\":3600}");
	cr_assert_eq(gauth_invalidate(g, 2, "tok-1"), 0, "no account");
	cr_assert_eq(gauth_invalidate(g, 0, "other"), 1);
	cr_assert_eq(
	    gauth_token(g, 0, &w, on_token, &told[1], &tok, msg, sizeof msg), 1,
	    "another token was refused: this one stays");
	cr_assert_eq(gauth_invalidate(g, 0, "tok-1"), 1);
	cr_assert_eq(
	    gauth_token(g, 0, &w, on_token, &told[1], &tok, msg, sizeof msg), 0,
	    "a refused token is not sent again");
	gauth_cancel(&w);
}

Test(gauth, config_errors_name_the_file_not_the_key)
{
	char file[128], *cause = NULL;
	FILE *f;

	snprintf(file, sizeof file, "%s/bad.json", tdir);
	cr_assert_not_null(f = fopen(file, "w"));
	fprintf(f, "{\"type\":\"service_account\",\"client_email\":\"a@b\","
	           "\"private_key\":\"-----BEGIN PRIVATE KEY-----\\nSECRETBITS"
	           "\\n-----END PRIVATE KEY-----\\n\"}");
	fclose(f);
	snprintf(file, sizeof file, "%s/bad.conf", tdir);
	cr_assert_not_null(f = fopen(file, "w"));
	fprintf(f, "deployments = ( { name = \"v\"; provider = \"vertex\"; "
	           "model = \"m\"; project = \"p\"; credentials_file = "
	           "\"bad.json\"; } );\n");
	fclose(f);
	cr_assert_null(cfg_load(file, &cause));
	cr_assert_not_null(strstr(cause, "bad.json"), "%s", cause);
	cr_assert_not_null(strstr(cause, "not an RSA private key"), "%s",
	                   cause);
	cr_assert_null(strstr(cause, "SECRETBITS"));
	free(cause);
	unlink(file);
	snprintf(file, sizeof file, "%s/bad.json", tdir);
	unlink(file);
}

/* The AWS secret key and session token, every line of a service
 * account's key and the access tokens in use are masked everywhere. */
Test(gauth, secrets_registered)
{
	struct gauth_wait w;
	const char *tok = NULL, *pem = gcfg->deploy[0].sa_private_key;
	char line[128], text[512], msg[160];
	struct cfg c;
	struct deploy_cfg d[2];
	size_t n;

	memcpy(d, gcfg->deploy, sizeof d[0]);
	memset(&d[1], 0, sizeof d[1]);
	snprintf(d[1].aws_secret_access_key, sizeof d[1].aws_secret_access_key,
	         "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY");
	snprintf(d[1].aws_session_token, sizeof d[1].aws_session_token,
	         "FQoGZXIvYXdzEXAMPLESESSION");
	memset(&c, 0, sizeof c);
	c.ndeploy = 2;
	c.deploy = d;
	secret_load(&c);
	n = strcspn(strchr(pem, '\n') + 1, "\n");
	snprintf(line, sizeof line, "%.*s", (int)n, strchr(pem, '\n') + 1);
	snprintf(text, sizeof text,
	         "x %s y wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY "
	         "FQoGZXIvYXdzEXAMPLESESSION",
	         line);
	cr_assert_eq(secret_redact(text), 3, "%s", text);
	cr_assert_null(strstr(text, line));
	memset(&w, 0, sizeof w);
	gauth_token(g, 0, &w, on_token, &told[0], &tok, msg, sizeof msg);
	gauth_test_answer(g, 0, 200,
	                  "{\"access_token\":\"ya29.secret-token-1\","
	                  "\"expires_in\":3600}");
	snprintf(text, sizeof text, "bearer ya29.secret-token-1");
	cr_assert_eq(secret_redact(text), 1, "%s", text);
	secret_clear();
}

/* A PDF (a Chat file part, or a Messages/Responses document) becomes a
 * Converse document block, its name as Bedrock allows. */
Test(bedrock, converse_file_is_a_document)
{
	static const char pdf[] =
	    "{\"model\":\"x\",\"messages\":[{\"role\":\"user\",\"content\":[{"
	    "\"type\":\"file\",\"file\":{\"filename\":\"q3  report.v2.pdf\","
	    "\"file_data\":\"data:application/pdf;base64,JVBERi0=\"}},{"
	    "\"type\":\"text\",\"text\":\"sum up\"}]}]}";

	snprintf(dc.model, sizeof dc.model, "amazon.nova-pro-v1:0");
	cr_assert_eq(build(&prov_bedrock, pdf, 0), 0);
	cr_assert_not_null(
	    strstr(buf_cstr(&po.body),
	           "{\"document\":{\"format\":\"pdf\",\"name\":\"q3 "
	           "report-v2-pdf\",\"source\":{\"bytes\":\"JVBERi0=\"}}},"
	           "{\"text\":\"sum up\"}"),
	    "%s", buf_cstr(&po.body));
}
