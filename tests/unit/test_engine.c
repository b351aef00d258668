/* Unit tests for the request engine (worker/request.c) without the
 * network: a real config, table and event base, a client that captures
 * what the engine sends, and upstream answers fed to the running attempt.
 * They reach the engine's decisions (what follows each error class), the
 * skip reasons, and the finish path in each phase. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "common/b64.h"
#include "common/cfg.h"
#include "common/clock.h"
#include "common/evstream.h"
#include "common/log.h"
#include "common/shm.h"
#include "worker/gauth.h"
#include "worker/ingress.h"
#include "worker/request.h"
#include "worker/route.h"
#include "worker/worker.h"

#define DEP(name, group, extra)                                                \
	"  { name = \"" name "\"; group = \"" group "\"; provider = "          \
	"\"openai\"; base_url = \"http://127.0.0.1:9/v1\"; api_key = \"k\"; "  \
	"model = \"m\"; " extra " }"

static char tdir[64];
static struct cfg *cfg;
static struct shm shm;
static int slot_of[CFG_MAX_DEPLOY];
static struct pool *pools[CFG_MAX_DEPLOY];
static struct worker w;

/* What the engine sent to the captured client. */
static struct cap {
	struct req *r;
	int status, started, ended, detached;
	char ctype[64];
	char hdrs[2048];
	struct buf body;
} cap;

/* Append to the captured body, keeping it NUL-terminated for strstr. */
static void
cap_add(const char *p, size_t n)
{
	buf_add(&cap.body, p, n);
	buf_add(&cap.body, "", 1);
	cap.body.len--;
}

static const char *
c_get_header(void *c, const char *name)
{
	(void)c;
	(void)name;
	return NULL;
}

static void
c_header(void *c, const char *name, const char *value)
{
	size_t n = strlen(cap.hdrs);

	(void)c;
	snprintf(cap.hdrs + n, sizeof cap.hdrs - n, "%s: %s\n", name, value);
}

/* Header lines "name: value\r\n", kept as c_header keeps one. */
static void
c_header_lines(void *c, const char *lines, size_t n)
{
	size_t k = strlen(cap.hdrs);

	(void)c;
	for (size_t i = 0; i < n && k + 1 < sizeof cap.hdrs; i++)
		if (lines[i] != '\r')
			cap.hdrs[k++] = lines[i];
	cap.hdrs[k] = '\0';
}

static void
c_reply(void *c, int status, const char *ctype, const char *body, size_t n)
{
	(void)c;
	cap.status = status;
	snprintf(cap.ctype, sizeof cap.ctype, "%s", ctype);
	cap_add(body, n);
}

static void
c_start(void *c, int status, const char *ctype)
{
	(void)c;
	cap.status = status;
	cap.started = 1;
	snprintf(cap.ctype, sizeof cap.ctype, "%s", ctype);
}

static void
c_chunk(void *c, const char *p, size_t n)
{
	(void)c;
	cap_add(p, n);
}

static void
c_end(void *c)
{
	(void)c;
	cap.ended = 1;
}

static void
c_attach(void *c, struct req *r)
{
	(void)c;
	cap.r = r;
}

static void
c_detach(void *c, struct req *r)
{
	(void)c;
	(void)r;
	cap.detached++;
}

static const struct client_ops ops = {
    .get_header = c_get_header,
    .header = c_header,
    .header_lines = c_header_lines,
    .reply = c_reply,
    .start = c_start,
    .chunk = c_chunk,
    .end = c_end,
    .attach = c_attach,
    .detach = c_detach,
};

static void
setup(void)
{
	snprintf(tdir, sizeof tdir, "/tmp/llmfd-engine-XXXXXX");
	cr_assert_not_null(mkdtemp(tdir));
	log_init(LOG_LVL_ERROR, "test_engine");
	memset(&cap, 0, sizeof cap);
}

static void
teardown(void)
{
	DIR *d = opendir(tdir);
	struct dirent *e;
	char p[PATH_MAX];

	if (w.base) {
		req_free_all(&w);
		gauth_free(w.gauth);
		for (int i = 0; cfg && i < cfg->ndeploy; i++)
			pool_free(pools[i]);
		event_base_free(w.base);
	}
	memset(&w, 0, sizeof w);
	if (shm.hdr)
		shm_detach(&shm);
	if (cfg)
		cfg_free(cfg);
	cfg = NULL;
	buf_free(&cap.body);
	while (d && (e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof p, "%s/%s", tdir, e->d_name);
		unlink(p);
	}
	if (d)
		closedir(d);
	rmdir(tdir);
}

TestSuite(engine, .init = setup, .fini = teardown);

/* A config with router body `router`, the deployments, and `extra` top
 * level text; a table, an event base and a pool per deployment. */
static void
start(const char *router, const char *deployments, const char *extra)
{
	char file[PATH_MAX], *cause = NULL;
	FILE *f;

	snprintf(file, sizeof file, "%s/llmfd.conf", tdir);
	cr_assert_not_null(f = fopen(file, "w"));
	fprintf(f,
	        "daemon = { listen = \"s.sock\"; health_table = \"%s/health\"; "
	        "};\nrouter = { %s };\ndeployments = (\n%s\n);\n%s\n",
	        tdir, router, deployments, extra);
	fclose(f);
	cfg = cfg_load(file, &cause);
	cr_assert_not_null(cfg, "cfg_load: %s", cause ? cause : "?");
	cr_assert_eq(shm_create(&shm, cfg->health_table, &cause), 0,
	             "shm_create: %s", cause ? cause : "?");
	memset(&w, 0, sizeof w);
	cr_assert_not_null(w.base = event_base_new());
	for (int i = 0; i < cfg->ndeploy; i++) {
		struct slot_sh *s = &shm.slots[i];

		shm_write_cfg_begin(s);
		snprintf(s->name, sizeof s->name, "%s", cfg->deploy[i].name);
		s->cfg_weight = cfg->deploy[i].weight;
		s->cfg_index = i;
		shm_write_cfg_end(s);
		atomic_store(&s->live_weight, -1);
		atomic_store(&s->state, SLOT_ACTIVE);
		slot_of[i] = i;
		pools[i] = pool_new(w.base, NULL, &cfg->deploy[i], &cause);
		cr_assert_not_null(pools[i]);
	}
	w.cfg = cfg;
	w.shm = &shm;
	w.slot_of = slot_of;
	w.pools = pools;
	w.rng = 42;
}

/* The default two-member group g (a, b), one-member group cw, and a
 * context-window chain g -> cw. */
static void
start_default(void)
{
	start(
	    "num_retries = 2; backoff_base_ms = 1; backoff_max_ms = 2; "
	    "cooldown_s = 0; circuit_failure_threshold = 100;",
	    DEP("a", "g", "") ",\n" DEP("b", "g", "") ",\n" DEP("c", "cw", ""),
	    "context_window_fallbacks = ( { group = \"g\"; to = [ \"cw\" ]; "
	    "} );");
}

/* Send body to the engine as a chat request; returns the request (NULL if
 * it finished at once). */
static struct req *
chat(const char *body)
{
	cap.r = NULL;
	req_start(&w, &ops, &cap, &ingress_chat, body, strlen(body));
	return cap.detached ? NULL : cap.r;
}

#define PLAIN                                                                  \
	"{\"model\":\"g\",\"messages\":[{\"role\":\"user\",\"content\":"       \
	"\"hi\"}]}"
#define STREAM                                                                 \
	"{\"model\":\"g\",\"stream\":true,\"messages\":[{\"role\":\"user\","   \
	"\"content\":\"hi\"}]}"
#define REPLY                                                                  \
	"{\"id\":\"x\",\"object\":\"chat.completion\",\"choices\":[{"          \
	"\"index\":"                                                           \
	"0,\"message\":{\"role\":\"assistant\",\"content\":\"ok\"},"           \
	"\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":3,"         \
	"\"completion_tokens\":1}}"
#define CHUNK(text)                                                            \
	"data: "                                                               \
	"{\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"choices\":"      \
	"[{\"index\":0,\"delta\":{\"content\":\"" text                         \
	"\"},\"finish_reason\":"                                               \
	"null}]}\n\n"

/* ---- decisions after each error class ---- */

Test(engine, decide_by_class)
{
	struct req_decision dc;
	struct req *r;

	start_default();
	cr_assert_not_null(r = chat(PLAIN));
	cr_assert_eq(req_phase(r), REQ_ATTEMPTING);

	req_decide(r, EC_TRANSIENT, RETRY_5XX, 503, -1, -1, &dc);
	cr_assert_eq(dc.action, DO_RETRY);
	cr_assert(dc.delay_ms >= 0 && dc.delay_ms <= 2);
	req_decide(r, EC_TRANSIENT, RETRY_5XX, 503, -1, 0,
	           &dc); /* x-should-retry: false */
	cr_assert_eq(dc.action, DO_NEXT);
	req_decide(r, EC_RATE_LIMITED, RETRY_429, 429, -1, -1, &dc);
	cr_assert_eq(dc.action, DO_NEXT);
	req_decide(r, EC_AUTH, 0, 401, -1, -1, &dc);
	cr_assert_eq(dc.action, DO_NEXT);
	req_decide(r, EC_NOT_FOUND, 0, 404, -1, -1, &dc);
	cr_assert_eq(dc.action, DO_NEXT);
	req_decide(r, EC_QUOTA, 0, 429, -1, -1, &dc);
	cr_assert_eq(dc.action, DO_NEXT);
	req_decide(r, EC_BAD_REQUEST, 0, 422, -1, -1, &dc);
	cr_assert_eq(dc.action, DO_FAIL);
	cr_assert_eq(dc.status, 422);
	cr_assert_str_eq(dc.code, "bad_request");
	req_decide(r, EC_BAD_REQUEST, 0, 500, -1, -1, &dc);
	cr_assert_eq(dc.status, 400);
	req_decide(r, EC_CONTEXT_WINDOW, 0, 400, -1, -1, &dc);
	cr_assert_eq(dc.action, DO_SWITCH, "g has a context-window chain");
	req_decide(r, EC_CONTENT_POLICY, 0, 400, -1, -1, &dc);
	cr_assert_eq(dc.action, DO_FAIL, "g has no content-policy chain");
	cr_assert_eq(dc.status, 400);
	cr_assert_str_eq(dc.code, "content_filter");
}

Test(engine, retry_after_longer_than_deadline_moves_on)
{
	struct req_decision dc;
	struct req *r;

	start_default();
	cr_assert_not_null(r = chat("{\"model\":\"g\",\"timeout\":1,"
	                            "\"messages\":[]}"));
	req_decide(r, EC_TRANSIENT, RETRY_5XX, 503, 5000, -1, &dc);
	cr_assert_eq(dc.action, DO_NEXT);
}

Test(engine, num_retries_zero_never_retries)
{
	struct req_decision dc;
	struct req *r;

	start_default();
	cr_assert_not_null(r = chat("{\"model\":\"g\",\"num_retries\":0,"
	                            "\"messages\":[]}"));
	req_decide(r, EC_TRANSIENT, RETRY_5XX, 503, -1, -1, &dc);
	cr_assert_eq(dc.action, DO_NEXT);
}

/* ---- skip reasons ---- */

Test(engine, skip_reasons)
{
	start("", DEP("a", "g", "context_window = 10;") ",\n" DEP("b", "g", ""),
	      "");
	cr_assert_eq(route_why(&w, 0, 100), SKIP_CONTEXT);
	atomic_store(&shm.slots[1].admin, ADMIN_DRAINED);
	cr_assert_eq(route_why(&w, 1, 0), SKIP_DRAINED);
	atomic_store(&shm.slots[1].admin, ADMIN_ACTIVE);
	atomic_store(&shm.slots[1].live_weight, 0);
	cr_assert_eq(route_why(&w, 1, 0), SKIP_WEIGHT0);
	atomic_store(&shm.slots[1].live_weight, -1);
	atomic_store(&shm.slots[1].cooldown_until_ms, INT64_MAX / 2);
	cr_assert_eq(route_why(&w, 1, 0), SKIP_COOLING);
	atomic_store(&shm.slots[1].circuit, CIRCUIT_OPEN);
	atomic_store(&shm.slots[1].circuit_until_ms, INT64_MAX / 2);
	cr_assert_eq(route_why(&w, 1, 0), SKIP_CIRCUIT);
	cr_assert_str_eq(route_skip_name(SKIP_CIRCUIT), "circuit open");
}

Test(engine, skip_reason_rpm_is_rate)
{
	start("", DEP("a", "g", "rpm = 1;"), "");
	atomic_store(&shm.slots[0].req_cur, 5);
	atomic_store(&shm.slots[0].rate_min,
	             (uint64_t)(clock_wall_ms() / 60000));
	cr_assert_eq(route_why(&w, 0, 0), SKIP_RATE);
}

/* ---- the finish path in each phase ---- */

Test(engine, finish_parse_error)
{
	start_default();
	cr_assert_null(chat("{not json"));
	cr_assert_eq(cap.status, 400);
	cr_assert_not_null(strstr(cap.body.data, "\"invalid_json\""));
	cr_assert_eq(cap.detached, 1);
	cr_assert_eq(req_inflight(), 0);
}

Test(engine, finish_unknown_model)
{
	start_default();
	cr_assert_null(chat("{\"model\":\"nope\",\"messages\":[]}"));
	cr_assert_eq(cap.status, 404);
	cr_assert_not_null(strstr(cap.body.data, "model_not_found"));
	cr_assert_not_null(strstr(cap.hdrs, "x-request-id: req-"));
}

Test(engine, finish_whole_reply)
{
	struct req *r;

	start_default();
	cr_assert_not_null(r = chat(PLAIN));
	req_test_upstream(r, 200, 0, REPLY, strlen(REPLY), 1);
	cr_assert_eq(cap.status, 200);
	cr_assert_eq(cap.body.len, strlen(REPLY));
	cr_assert_eq(memcmp(cap.body.data, REPLY, cap.body.len), 0);
	cr_assert_not_null(strstr(cap.hdrs, "x-llmfd-deployment: "));
	cr_assert_not_null(strstr(cap.hdrs, "x-llmfd-attempts: 1"));
	cr_assert_eq(cap.detached, 1);
	cr_assert_eq(atomic_load(&shm.slots[0].successes) +
	                 atomic_load(&shm.slots[1].successes),
	             1);
}

Test(engine, finish_after_bad_request_no_fallback)
{
	static const char err[] = "{\"error\":{\"message\":\"bad temperature\","
	                          "\"type\":\"invalid_request_error\"}}";
	struct req *r;

	start_default();
	cr_assert_not_null(r = chat(PLAIN));
	req_test_upstream(r, 400, 0, err, sizeof err - 1, 1);
	cr_assert_eq(cap.status, 400);
	cr_assert_not_null(strstr(cap.body.data, "bad temperature"));
	cr_assert_not_null(strstr(cap.body.data, "\"attempts\":[{"));
}

Test(engine, transient_waits_then_retries_same)
{
	struct req *r;

	start_default();
	cr_assert_not_null(r = chat(PLAIN));
	req_test_upstream(r, 503, 0, "{}", 2, 1);
	cr_assert_eq(req_phase(r), REQ_WAITING);
	cr_assert_eq(cap.status, 0, "nothing sent while waiting");
	event_base_loop(w.base, EVLOOP_ONCE);
	cr_assert_eq(req_phase(r), REQ_ATTEMPTING);
	req_test_upstream(r, 200, 0, REPLY, strlen(REPLY), 1);
	cr_assert_eq(cap.status, 200);
	cr_assert_not_null(strstr(cap.hdrs, "x-llmfd-attempts: 2"), "%s",
	                   cap.hdrs);
}

Test(engine, finish_client_gone_while_waiting)
{
	struct req *r;

	start_default();
	cr_assert_not_null(r = chat(PLAIN));
	req_test_upstream(r, 503, 0, "{}", 2, 1);
	cr_assert_eq(req_phase(r), REQ_WAITING);
	req_client_gone(r);
	cr_assert_eq(cap.status, 0, "nothing is sent to a gone client");
	cr_assert_eq(cap.detached, 0, "a gone client is not detached");
	cr_assert_eq(req_inflight(), 0);
}

Test(engine, finish_client_gone_while_attempting_cancels)
{
	struct req *r;

	start_default();
	cr_assert_not_null(r = chat(PLAIN));
	req_client_gone(r);
	cr_assert_eq(cap.status, 0);
	cr_assert_eq(atomic_load(&shm.slots[0].failures[EC_CANCELLED]) +
	                 atomic_load(&shm.slots[1].failures[EC_CANCELLED]),
	             1);
}

Test(engine, exhausted_is_503_with_trail)
{
	struct req *r;

	start(
	    "num_retries = 0; cooldown_s = 0; circuit_failure_threshold = 100;",
	    DEP("a", "g", "") ",\n" DEP("b", "g", ""), "");
	cr_assert_not_null(r = chat(PLAIN));
	req_test_upstream(r, 500, 0, "{}", 2, 1);
	cr_assert_eq(req_phase(r), REQ_ATTEMPTING, "moved to b");
	req_test_upstream(r, 500, 0, "{}", 2, 1);
	cr_assert_eq(cap.status, 503);
	cr_assert_not_null(strstr(cap.body.data, "all_deployments_failed"));
	cr_assert_not_null(strstr(cap.body.data, "\"deployment\":\"a\""));
	cr_assert_not_null(strstr(cap.body.data, "\"deployment\":\"b\""));
}

Test(engine, context_window_switches_chain)
{
	static const char err[] =
	    "{\"error\":{\"message\":\"maximum context length is 10 tokens\","
	    "\"type\":\"invalid_request_error\",\"code\":"
	    "\"context_length_exceeded\"}}";
	struct req *r;

	start_default();
	cr_assert_not_null(r = chat(PLAIN));
	req_test_upstream(r, 400, 0, err, sizeof err - 1, 1);
	cr_assert_eq(req_phase(r), REQ_ATTEMPTING, "now on the cw chain");
	req_test_upstream(r, 200, 0, REPLY, strlen(REPLY), 1);
	cr_assert_eq(cap.status, 200);
	cr_assert_not_null(strstr(cap.hdrs, "x-llmfd-deployment: c"));
}

Test(engine, finish_stream_complete)
{
	static const char s[] = CHUNK("he") CHUNK("llo") "data: [DONE]\n\n";
	struct req *r;

	start_default();
	size_t first = strlen(CHUNK("he"));

	cr_assert_not_null(r = chat(STREAM));
	req_test_upstream(r, 200, 1, s, first - 1, 0);
	cr_assert_eq(req_phase(r), REQ_ATTEMPTING, "no whole event yet");
	req_test_upstream(r, 200, 1, s + first - 1, 1, 0);
	cr_assert_eq(req_phase(r), REQ_STREAMING);
	cr_assert(cap.started);
	req_test_upstream(r, 200, 1, s + first, sizeof s - 1 - first, 1);
	cr_assert(cap.ended);
	cr_assert_not_null(strstr(cap.body.data, "\"llo\""));
	cr_assert_not_null(strstr(cap.body.data, "data: [DONE]\n\n"));
	cr_assert_str_eq(cap.ctype, "text/event-stream");
}

Test(engine, finish_stream_cut_is_an_error_event)
{
	static const char s[] = CHUNK("partial");
	struct req *r;

	start_default();
	cr_assert_not_null(r = chat(STREAM));
	req_test_upstream(r, 200, 1, s, sizeof s - 1, 1);
	cr_assert(cap.ended);
	cr_assert_not_null(strstr(cap.body.data, "stream_interrupted"));
	cr_assert_null(strstr(cap.body.data, "[DONE]"));
}

Test(engine, stream_error_before_content_falls_back)
{
	static const char e[] =
	    "data: {\"error\":{\"message\":\"overloaded\",\"type\":"
	    "\"server_error\"}}\n\n";
	static const char s[] = CHUNK("ok") "data: [DONE]\n\n";
	struct req *r;

	start("num_retries = 0; cooldown_s = 0;",
	      DEP("a", "g", "") ",\n" DEP("b", "g", ""), "");
	cr_assert_not_null(r = chat(STREAM));
	req_test_upstream(r, 200, 1, e, sizeof e - 1, 0);
	cr_assert_eq(req_phase(r), REQ_ATTEMPTING);
	cr_assert_not(cap.started, "the client saw nothing of the failure");
	req_test_upstream(r, 200, 1, s, sizeof s - 1, 1);
	cr_assert(cap.ended);
	cr_assert_not_null(strstr(cap.hdrs, "x-llmfd-attempts: 2"), "%s",
	                   cap.hdrs);
	cr_assert_null(strstr(cap.body.data, "overloaded"));
}

/* A stream keeps the client's body while a failure may still send it
 * again: a fallback before the first content gets it; once content
 * reached the client (no continuation configured) it is let go, and the
 * stream goes on to its end. */
Test(engine, stream_body_released_once_content_sent)
{
	static const char e[] =
	    "data: {\"error\":{\"message\":\"overloaded\",\"type\":"
	    "\"server_error\"}}\n\n";
	static const char role[] =
	    "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\","
	    "\"choices\":[{\"index\":0,\"delta\":{\"role\":"
	    "\"assistant\"},\"finish_reason\":null}]}\n\n";
	static const char s[] = CHUNK("world") "data: [DONE]\n\n";
	struct req *r;

	start("num_retries = 0; cooldown_s = 0;",
	      DEP("a", "g", "") ",\n" DEP("b", "g", ""), "");
	cr_assert_not_null(r = chat(STREAM));
	cr_assert(req_holds_body(r));
	req_test_upstream(r, 200, 1, role, sizeof role - 1, 0);
	cr_assert(req_holds_body(r), "no content yet: a failure falls back");
	req_test_upstream(r, 200, 1, e, sizeof e - 1, 0);
	cr_assert_eq(req_phase(r), REQ_ATTEMPTING, "fell back to b");
	cr_assert(req_holds_body(r), "b's attempt may fail too");
	req_test_upstream(r, 200, 1, CHUNK("hello "), strlen(CHUNK("hello ")),
	                  0);
	cr_assert_eq(req_phase(r), REQ_STREAMING);
	cr_assert_not(req_holds_body(r), "nothing can send the body again");
	req_test_upstream(r, 200, 1, s, sizeof s - 1, 1);
	cr_assert(cap.ended);
	cr_assert_not_null(strstr(cap.hdrs, "x-llmfd-attempts: 2"), "%s",
	                   cap.hdrs);
	cr_assert_not_null(strstr(cap.body.data, "\"world\""));
	cr_assert_not_null(strstr(cap.body.data, "data: [DONE]\n\n"));
	cr_assert_null(strstr(cap.body.data, "stream_interrupted"));
}

/* ---- failover behaviours (issue 13) ---- */

#define FINISH_CHUNK                                                           \
	"data: "                                                               \
	"{\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"choices\":"      \
	"[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"

/* A body that ends cleanly after the finish reason but without [DONE] is
 * complete: the client gets [DONE] and no error event. */
Test(engine, stream_clean_end_without_done_is_complete)
{
	static const char s[] = CHUNK("he") CHUNK("llo") FINISH_CHUNK;
	struct req *r;

	start_default();
	cr_assert_not_null(r = chat(STREAM));
	req_test_upstream(r, 200, 1, s, sizeof s - 1, 1);
	cr_assert(cap.ended);
	cr_assert_not_null(strstr(cap.body.data, "data: [DONE]\n\n"));
	cr_assert_null(strstr(cap.body.data, "stream_interrupted"));
	cr_assert_eq(atomic_load(&shm.slots[0].successes) +
	                 atomic_load(&shm.slots[1].successes),
	             1);
}

/* One malformed event inside a healthy stream is skipped and counted; the
 * stream goes on and completes. */
Test(engine, stream_malformed_event_skipped)
{
	static const char s[] = CHUNK("he") "data: {\"choices\":[{\n\n" CHUNK(
	    "llo") "data: [DONE]\n\n";
	struct req *r;

	start_default();
	cr_assert_not_null(r = chat(STREAM));
	req_test_upstream(r, 200, 1, s, sizeof s - 1, 1);
	cr_assert(cap.ended);
	cr_assert_not_null(strstr(cap.body.data, "\"llo\""));
	cr_assert_not_null(strstr(cap.body.data, "data: [DONE]\n\n"));
	cr_assert_null(strstr(cap.body.data, "stream_interrupted"));
	cr_assert_eq(atomic_load(&shm.slots[0].bad_events) +
	                 atomic_load(&shm.slots[1].bad_events),
	             1);
}

/* A real error event (valid JSON) is not skipped. */
Test(engine, stream_error_event_not_skipped_as_malformed)
{
	static const char c[] = CHUNK("he");
	static const char s[] =
	    "data: {\"error\":{\"message\":"
	    "\"overloaded\",\"type\":\"server_error\"}}\n\n";
	struct req *r;

	start("num_retries = 0; cooldown_s = 0;", DEP("a", "g", ""), "");
	cr_assert_not_null(r = chat(STREAM));
	req_test_upstream(r, 200, 1, c, sizeof c - 1, 0);
	cr_assert_eq(req_phase(r), REQ_STREAMING);
	req_test_upstream(r, 200, 1, s, sizeof s - 1, 0);
	cr_assert(cap.ended);
	cr_assert_not_null(strstr(cap.body.data, "stream_interrupted"));
	cr_assert_eq(atomic_load(&shm.slots[0].bad_events), 0);
}

/* Timeouts move on by default; 5xx and resets are retried (retry_on). */
Test(engine, decide_timeout_moves_on_by_default)
{
	struct req_decision dc;
	struct req *r;

	start_default();
	cr_assert_eq(cfg->retry_on, RETRY_5XX | RETRY_RESET);
	cr_assert_not_null(r = chat(PLAIN));
	req_decide(r, EC_TRANSIENT, RETRY_TIMEOUT, 0, -1, -1, &dc);
	cr_assert_eq(dc.action, DO_NEXT);
	req_decide(r, EC_TRANSIENT, RETRY_RESET, 0, -1, -1, &dc);
	cr_assert_eq(dc.action, DO_RETRY);
	req_decide(r, EC_TRANSIENT, RETRY_5XX, 502, -1, -1, &dc);
	cr_assert_eq(dc.action, DO_RETRY);
}

/* retry_on names the kinds retried on the same deployment. */
Test(engine, decide_retry_on_setting)
{
	struct req_decision dc;
	struct req *r;

	start("num_retries = 2; backoff_base_ms = 1; backoff_max_ms = 2; "
	      "retry_on = [ \"timeout\", \"429\" ];",
	      DEP("a", "g", "") ",\n" DEP("b", "g", ""), "");
	cr_assert_eq(cfg->retry_on, RETRY_TIMEOUT | RETRY_429);
	cr_assert_not_null(r = chat(PLAIN));
	req_decide(r, EC_TRANSIENT, RETRY_TIMEOUT, 0, -1, -1, &dc);
	cr_assert_eq(dc.action, DO_RETRY);
	req_decide(r, EC_RATE_LIMITED, RETRY_429, 429, -1, -1, &dc);
	cr_assert_eq(dc.action, DO_RETRY);
	req_decide(r, EC_TRANSIENT, RETRY_5XX, 503, -1, -1, &dc);
	cr_assert_eq(dc.action, DO_NEXT);
	req_decide(r, EC_TRANSIENT, RETRY_RESET, 0, -1, -1, &dc);
	cr_assert_eq(dc.action, DO_NEXT);
}

/* A bad retry_on is refused with the setting named. */
Test(engine, retry_on_unknown_kind_refused)
{
	char file[PATH_MAX], *cause = NULL;
	FILE *f;

	snprintf(file, sizeof file, "%s/bad.conf", tdir);
	cr_assert_not_null(f = fopen(file, "w"));
	fprintf(f, "router = { retry_on = [ \"5xx\", \"sometimes\" ]; };\n"
	           "deployments = (" DEP("a", "g", "") ");\n");
	fclose(f);
	cr_assert_null(cfg_load(file, &cause));
	cr_assert(cause && strstr(cause, "retry_on") &&
	              strstr(cause, "'sometimes'"),
	          "cause: %s", cause ? cause : "(none)");
	free(cause);
}

/* A first token that is late costs one timeout, then the next candidate:
 * no retry of the same deployment. */
Test(engine, first_token_timeout_moves_to_next)
{
	static const char s[] = CHUNK("ok") "data: [DONE]\n\n";
	struct req *r;

	start("num_retries = 2; cooldown_s = 0;",
	      DEP("a", "g", "first_token_timeout_ms = 1;") ",\n" DEP("b", "g",
	                                                             ""),
	      "");
	cr_assert_not_null(r = chat(STREAM));
	req_test_upstream(r, 200, 1, "", 0, 0); /* headers, then silence */
	while (atomic_load(&shm.slots[0].failures[EC_TRANSIENT]) == 0)
		event_base_loop(w.base, EVLOOP_ONCE); /* a's timer fires */
	cr_assert_eq(req_phase(r), REQ_ATTEMPTING);
	req_test_upstream(r, 200, 1, s, sizeof s - 1, 1);
	cr_assert(cap.ended);
	cr_assert_not_null(strstr(cap.hdrs, "x-llmfd-attempts: 2"), "%s",
	                   cap.hdrs);
	cr_assert_not_null(strstr(cap.hdrs, "x-llmfd-deployment: b"));
}

/* An outage (every attempt failing) is a 503 with a Retry-After, and
 * x-should-retry: false since llmfd spent its own retries. */
Test(engine, exhausted_outage_is_503_with_retry_after)
{
	struct req *r;

	start("num_retries = 0; cooldown_s = 0; circuit_failure_threshold = "
	      "100;",
	      DEP("a", "g", "") ",\n" DEP("b", "g", ""), "");
	cr_assert_not_null(r = chat(PLAIN));
	req_test_upstream(r, 500, 0, "{}", 2, 1);
	req_test_upstream(r, 500, 0, "{}", 2, 1);
	cr_assert_eq(cap.status, 503);
	cr_assert_not_null(strstr(cap.hdrs, "Retry-After: 1\n"), "%s",
	                   cap.hdrs);
	cr_assert_not_null(strstr(cap.hdrs, "x-should-retry: false\n"));
}

/* Every attempt rate-limited: a 429 with a Retry-After. */
Test(engine, exhausted_rate_limit_is_429)
{
	static const char e[] = "{\"error\":{\"message\":\"Rate limit "
	                        "reached\",\"type\":\"rate_limit_exceeded\"}}";
	struct req *r;

	start("num_retries = 0; cooldown_s = 0;",
	      DEP("a", "g", "") ",\n" DEP("b", "g", ""), "");
	cr_assert_not_null(r = chat(PLAIN));
	req_test_upstream(r, 429, 0, e, sizeof e - 1, 1);
	req_test_upstream(r, 429, 0, e, sizeof e - 1, 1);
	cr_assert_eq(cap.status, 429);
	cr_assert_not_null(strstr(cap.body.data, "\"rate_limited\""));
	cr_assert_not_null(strstr(cap.hdrs, "Retry-After: "));
	cr_assert_not_null(strstr(cap.hdrs, "x-should-retry: false\n"));
}

/* Every candidate behind an open circuit (none attempted) is an outage: a
 * 503 whose Retry-After is the time to the soonest probe; nothing was
 * attempted, so no x-should-retry. */
Test(engine, exhausted_open_circuits_is_503)
{
	struct req *r;

	start("queue_when_cooling = false;",
	      DEP("a", "g", "") ",\n" DEP("b", "g", ""), "");
	for (int i = 0; i < 2; i++) {
		atomic_store(&shm.slots[i].circuit, CIRCUIT_OPEN);
		atomic_store(&shm.slots[i].circuit_until_ms,
		             clock_ms() + 7500 + i * 1000);
	}
	cr_assert_null(r = chat(PLAIN));
	cr_assert_eq(cap.status, 503, "%s", cap.body.data);
	cr_assert_not_null(strstr(cap.hdrs, "Retry-After: 8\n"), "%s",
	                   cap.hdrs);
	cr_assert_null(strstr(cap.hdrs, "x-should-retry"));
	cr_assert_not_null(strstr(cap.body.data, "circuit open"));
}

/* Every candidate cooling after 429s: still a rate limit, 429. */
Test(engine, exhausted_cooling_after_429_is_429)
{
	struct req *r;

	start("queue_when_cooling = false; allowed_fails = 0; cooldown_s = "
	      "5;",
	      DEP("a", "g", "") ",\n" DEP("b", "g", ""), "");
	for (int i = 0; i < 2; i++) {
		route_attempt_start(&w, i);
		route_attempt_end(&w, i, EC_RATE_LIMITED, 1000, -1, NULL, -1,
		                  "rate limited", 429);
	}
	cr_assert_null(r = chat(PLAIN));
	cr_assert_eq(cap.status, 429, "%s", cap.body.data);
	cr_assert_not_null(strstr(cap.body.data, "all_deployments_cooling"));
	cr_assert_not_null(strstr(cap.hdrs, "Retry-After: 5\n"), "%s",
	                   cap.hdrs);
}

/* A failure that opens the deployment's circuit is not retried there: the
 * next candidate is tried at once. */
Test(engine, no_retry_into_an_open_circuit)
{
	struct req *r;

	start("num_retries = 2; cooldown_s = 0; circuit_failure_threshold = "
	      "1;",
	      DEP("a", "g", "") ",\n" DEP("b", "g", ""), "");
	cr_assert_not_null(r = chat(PLAIN));
	req_test_upstream(r, 503, 0, "{}", 2, 1);
	cr_assert_eq(req_phase(r), REQ_ATTEMPTING, "waiting to retry a");
	req_test_upstream(r, 200, 0, REPLY, strlen(REPLY), 1);
	cr_assert_not_null(strstr(cap.hdrs, "x-llmfd-deployment: b"));
}

/* ---- continuation that never lies ---- */

#define RESUME_GROUP                                                           \
	"groups = ( { name = \"g\"; stream_resume = \"continue\"; } );"

/* A stream in group g (continue on) whose first attempt on a sends `sent`
 * and is cut; returns the request, now continuing on b (b_extra: more
 * settings of b). */
static struct req *
cut_after(const char *sent, const char *b_extra)
{
	char deps[1024];
	struct buf s = {0};
	struct req *r;

	snprintf(deps, sizeof deps,
	         DEP("a", "g", "") ",\n  { name = \"b\"; group = \"g\"; "
	                           "provider = \"openai\"; base_url = "
	                           "\"http://127.0.0.1:9/v1\"; api_key = "
	                           "\"k\"; model = \"m\"; %s }",
	         b_extra);
	start("num_retries = 0; cooldown_s = 0;", deps, RESUME_GROUP);
	buf_printf(&s, CHUNK("%s"), sent);
	cr_assert_not_null(r = chat(STREAM));
	req_test_upstream(r, 200, 1, s.data, s.len, 0);
	cr_assert_eq(req_phase(r), REQ_STREAMING);
	req_test_upstream(r, 200, 1, "", 0, 1); /* cut */
	cr_assert_eq(req_phase(r), REQ_STREAMING);
	cr_assert_not(cap.ended, "not continued: %s", cap.body.data);
	buf_free(&s);
	return r;
}

/* The content text the client got (all delta.content joined). */
static const char *
client_text(void)
{
	static char t[1024];
	const char *p = cap.body.data ? cap.body.data : "", *q;

	t[0] = '\0';
	while ((p = strstr(p, "\"content\":\"")) != NULL) {
		p += 11;
		q = strchr(p, '"');
		strncat(t, p, (size_t)(q - p));
		p = q;
	}
	return t;
}

/* Feed b's continuation (already formatted chunks) and a clean end. */
static void
continue_with(struct req *r, const char *chunks)
{
	struct buf s = {0};

	buf_printf(&s, "%s" FINISH_CHUNK "data: [DONE]\n\n", chunks);
	req_test_upstream(r, 200, 1, s.data, s.len, 1);
	buf_free(&s);
}

/* With stream_resume = "continue" a stream keeps the client's body
 * after its first content: the continuation is built from it. */
Test(engine, stream_body_kept_for_continuation)
{
	struct req *r = cut_after("Hello", "");

	cr_assert(req_holds_body(r), "continuing on b needs the body");
	continue_with(r, CHUNK(" world"));
	cr_assert(cap.ended);
	cr_assert_str_eq(client_text(), "Hello world");
	cr_assert_null(strstr(cap.body.data, "stream_interrupted"));
}

/* A continuation that restarts the answer has the repeat dropped. */
Test(engine, splice_restart_dropped)
{
	struct req *r = cut_after("The quick brown fox", "");

	continue_with(r, CHUNK("The quick brown fox") CHUNK(" jumps"));
	cr_assert(cap.ended);
	cr_assert_str_eq(client_text(), "The quick brown fox jumps");
	cr_assert_not_null(strstr(cap.body.data, "[DONE]"));
}

/* A restart arriving in pieces is held until it is clear; the chunk that
 * straddles the end of the repeat is rewritten. */
Test(engine, splice_restart_in_pieces)
{
	struct req *r = cut_after("The quick brown fox", "");

	req_test_upstream(r, 200, 1, CHUNK("The qu"), strlen(CHUNK("The qu")),
	                  0);
	cr_assert_str_eq(client_text(), "The quick brown fox", "not held");
	continue_with(r, CHUNK("ick brown fox jum") CHUNK("ps"));
	cr_assert_str_eq(client_text(), "The quick brown fox jumps");
}

/* A continuation that repeats the end of the answer has it dropped. */
Test(engine, splice_tail_repeat_dropped)
{
	struct req *r = cut_after("The quick brown fox jumps over the", "");

	continue_with(r, CHUNK("brown fox jumps over the") CHUNK(" lazy dog"));
	cr_assert_str_eq(client_text(),
	                 "The quick brown fox jumps over the lazy dog");
}

/* A true continuation is passed on as it is. */
Test(engine, splice_plain_continuation_kept)
{
	struct req *r = cut_after("The quick brown fox", "");

	continue_with(r, CHUNK(" jumps") CHUNK(" over"));
	cr_assert_str_eq(client_text(), "The quick brown fox jumps over");
	cr_assert_not_null(strstr(cap.body.data, "[DONE]"));
}

/* A continuation that repeats the answer with changes cannot be spliced:
 * the stream ends with the error event naming the real interruption, and
 * nothing of the continuation reaches the client. */
Test(engine, splice_changed_restart_is_an_error)
{
	struct req *r = cut_after("The quick brown fox jumps", "");

	continue_with(r, CHUNK("The quick brown cat sleeps"));
	cr_assert(cap.ended);
	cr_assert_str_eq(client_text(), "The quick brown fox jumps");
	cr_assert_null(strstr(cap.body.data, "[DONE]"));
	cr_assert_not_null(strstr(cap.body.data, "stream_interrupted"));
	cr_assert_not_null(strstr(cap.body.data, "ended before completion"));
	cr_assert_not_null(strstr(cap.body.data, "\"deployment\":\"a\""));
}

/* A continuation in the prefill form refused with a 400 is retried on the
 * same deployment in the instruction form; the client never sees the 400. */
Test(engine, prefill_refused_retried_as_instruction)
{
	static const char e[] =
	    "{\"error\":{\"message\":\"This model does not support assistant "
	    "message prefill\",\"type\":\"invalid_request_error\"}}";
	struct req *r = cut_after("The quick brown fox", "prefill = true;");

	req_test_upstream(r, 400, 0, e, sizeof e - 1, 1);
	cr_assert_eq(req_phase(r), REQ_STREAMING);
	cr_assert_not(cap.ended, "%s", cap.body.data);
	continue_with(r, CHUNK(" jumps"));
	cr_assert_str_eq(client_text(), "The quick brown fox jumps");
	cr_assert_null(strstr(cap.body.data, "prefill"));
	cr_assert_not_null(strstr(cap.body.data, "[DONE]"));
}

/* A 400 from the continuation in the instruction form (nothing left to
 * try): the error event carries the real interruption, not the 400. */
Test(engine, continuation_400_never_replaces_the_interruption)
{
	static const char e[] = "{\"error\":{\"message\":\"final assistant "
	                        "turn not allowed\",\"type\":"
	                        "\"invalid_request_error\"}}";
	struct req *r = cut_after("The quick brown fox", "");

	req_test_upstream(r, 400, 0, e, sizeof e - 1, 1);
	cr_assert(cap.ended);
	cr_assert_null(strstr(cap.body.data, "final assistant"));
	cr_assert_not_null(strstr(cap.body.data, "ended before completion"));
	cr_assert_not_null(strstr(cap.body.data, "\"deployment\":\"a\""));
	cr_assert_null(strstr(cap.body.data, "[DONE]"));
}

/* A short Retry-After is waited out on the same deployment, whatever
 * retry_on says; a longer one moves on at once. */
Test(engine, decide_short_retry_after_waits)
{
	struct req_decision dc;
	struct req *r;

	start_default();
	cr_assert_eq(cfg->retry_after_max_wait_ms, 5000);
	cr_assert_not_null(r = chat(PLAIN));
	req_decide(r, EC_RATE_LIMITED, RETRY_429, 429, 2000, -1, &dc);
	cr_assert_eq(dc.action, DO_RETRY);
	cr_assert(dc.delay_ms >= 2000 && dc.delay_ms <= 2001);
	req_decide(r, EC_TRANSIENT, RETRY_5XX, 503, 800, -1, &dc);
	cr_assert_eq(dc.action, DO_RETRY);
	req_decide(r, EC_RATE_LIMITED, RETRY_429, 429, 6000, -1, &dc);
	cr_assert_eq(dc.action, DO_NEXT, "longer than the wait allowed");
	req_decide(r, EC_RATE_LIMITED, RETRY_429, 429, 2000, 0, &dc);
	cr_assert_eq(dc.action, DO_NEXT, "x-should-retry: false");
}

/* retry_after_max_wait_ms = 0 never waits. */
Test(engine, decide_retry_after_wait_off)
{
	struct req_decision dc;
	struct req *r;

	start("retry_after_max_wait_ms = 0; retry_on = [ ];",
	      DEP("a", "g", "") ",\n" DEP("b", "g", ""), "");
	cr_assert_eq(cfg->retry_on, 0);
	cr_assert_not_null(r = chat(PLAIN));
	req_decide(r, EC_RATE_LIMITED, RETRY_429, 429, 100, -1, &dc);
	cr_assert_eq(dc.action, DO_NEXT);
	req_decide(r, EC_TRANSIENT, RETRY_5XX, 503, -1, -1, &dc);
	cr_assert_eq(dc.action, DO_NEXT, "retry_on is empty");
}

/* ---- clients: priority under a shortage (issue 17) ---- */

/* Cool both members of g down for ms. */
static void
cool_all(int64_t ms)
{
	for (int i = 0; i < 2; i++)
		atomic_store(&shm.slots[i].cooldown_until_ms, clock_ms() + ms);
}

/* A low-priority request is shed at once when every candidate is cooling,
 * with the time to the soonest recovery; it never waits. */
Test(engine, low_priority_shed_when_capacity_is_short)
{
	start("", DEP("a", "g", "") ",\n" DEP("b", "g", ""),
	      "clients = ( { name = \"default\"; priority = \"low\"; } );");
	cool_all(4500);
	cr_assert_null(chat(PLAIN));
	cr_assert_eq(cap.status, 429, "%s", cap.body.data);
	cr_assert_not_null(strstr(cap.body.data, "\"code\":\"shed\""));
	cr_assert_not_null(strstr(cap.body.data, "client 'default' has low "
	                                         "priority"));
	cr_assert_not_null(strstr(cap.hdrs, "Retry-After: 5\n"), "%s",
	                   cap.hdrs);
	cr_assert_eq(shm_waiting(&shm, PRIO_LOW), 0);
}

/* The same request of class normal waits for capacity instead, counted
 * as waiting; a rule can raise or lower a request's class. */
Test(engine, normal_waits_and_rules_set_priority)
{
	struct req *r;

	start("", DEP("a", "g", "") ",\n" DEP("b", "g", ""),
	      "routes = ( { match = { tag = \"batch\"; }; priority = \"low\"; "
	      "} );");
	cool_all(4500);
	cr_assert_not_null(r = chat(PLAIN));
	cr_assert_eq(req_phase(r), REQ_WAITING);
	cr_assert_eq(shm_waiting(&shm, PRIO_NORMAL), 1);
	req_client_gone(r);
	cr_assert_eq(shm_waiting(&shm, PRIO_NORMAL), 0, "released at finish");
	memset(&cap, 0, sizeof cap);
	cr_assert_null(chat("{\"model\":\"g\",\"metadata\":{\"tag\":\"batch\"},"
	                    "\"messages\":[{\"role\":\"user\",\"content\":"
	                    "\"hi\"}]}"));
	cr_assert_eq(cap.status, 429);
	cr_assert_not_null(strstr(cap.body.data, "\"code\":\"shed\""));
}

/* When capacity comes back, a waiting normal request yields to high ones
 * waiting anywhere (another worker's column here), then goes. */
Test(engine, normal_yields_to_high_when_capacity_returns)
{
	struct req *r;
	int64_t until;

	start("", DEP("a", "g", "") ",\n" DEP("b", "g", ""), "");
	cool_all(30);
	cr_assert_not_null(r = chat(PLAIN));
	cr_assert_eq(req_phase(r), REQ_WAITING);
	atomic_store(&shm.hdr->waiting[5][PRIO_HIGH], 1);
	until = clock_ms() + 150;
	while (clock_ms() < until)
		event_base_loop(w.base, EVLOOP_ONCE);
	cr_assert_eq(req_phase(r), REQ_WAITING, "went before the high one");
	atomic_store(&shm.hdr->waiting[5][PRIO_HIGH], 0);
	while (req_phase(r) == REQ_WAITING)
		event_base_loop(w.base, EVLOOP_ONCE);
	cr_assert_eq(req_phase(r), REQ_ATTEMPTING);
	cr_assert_eq(shm_waiting(&shm, PRIO_NORMAL), 0);
	req_test_upstream(r, 200, 0, REPLY, strlen(REPLY), 1);
	cr_assert_eq(cap.status, 200);
}

/* ---- Bedrock event streams and Vertex tokens (issue 15) ---- */

#define BEDROCK(name, group)                                                   \
	"  { name = \"" name "\"; group = \"" group "\"; provider = "          \
	"\"bedrock\"; base_url = \"http://127.0.0.1:9\"; region = "            \
	"\"us-east-1\"; aws_access_key_id = \"AKIDEXAMPLE\"; "                 \
	"aws_secret_access_key = \"secretsecretsecret\"; model = "             \
	"\"anthropic.claude-3-haiku-20240307-v1:0\"; }"

/* Append an InvokeModelWithResponseStream chunk carrying event json. */
static void
br_chunk(struct buf *b, const char *json)
{
	static const struct evs_hdr h[] = {
	    {":event-type", "chunk"},
	    {":content-type", "application/json"},
	    {":message-type", "event"}};
	struct buf p = {0};

	buf_adds(&p, "{\"bytes\":\"");
	b64_encode(&p, json, strlen(json), 0);
	buf_adds(&p, "\"}");
	evs_encode(b, h, 3, p.data, p.len);
	buf_free(&p);
}

/* Append an exception message of type x. */
static void
br_exception(struct buf *b, const char *x, const char *msg)
{
	struct evs_hdr h[] = {{":exception-type", x},
	                      {":content-type", "application/json"},
	                      {":message-type", "exception"}};
	struct buf p = {0};

	buf_printf(&p, "{\"message\":\"%s\"}", msg);
	evs_encode(b, h, 3, p.data, p.len);
	buf_free(&p);
}

/* The events of a whole Anthropic answer "Hello", as Bedrock chunks. */
static void
br_answer(struct buf *b)
{
	br_chunk(b, "{\"type\":\"message_start\",\"message\":{\"id\":"
	            "\"msg_b\",\"model\":\"claude\",\"usage\":{"
	            "\"input_tokens\":5}}}");
	br_chunk(b, "{\"type\":\"content_block_delta\",\"index\":0,"
	            "\"delta\":{\"type\":\"text_delta\",\"text\":"
	            "\"Hello\"}}");
	br_chunk(b, "{\"type\":\"message_delta\",\"delta\":{"
	            "\"stop_reason\":\"end_turn\"},\"usage\":{"
	            "\"output_tokens\":2}}");
	br_chunk(b, "{\"type\":\"message_stop\"}");
}

/* A Bedrock event stream reaches the client as OpenAI chunks, whatever
 * the pieces its bytes arrive in. */
Test(engine, bedrock_event_stream)
{
	struct buf b = {0};
	struct req *r;

	start("", BEDROCK("b1", "g"), "");
	br_answer(&b);
	cr_assert_not_null(r = chat(STREAM));
	for (size_t off = 0; off < b.len; off += 7)
		req_test_upstream(r, 200, 2, b.data + off,
		                  off + 7 > b.len ? b.len - off : 7, 0);
	req_test_upstream(r, 200, 2, "", 0, 1);
	cr_assert(cap.ended);
	cr_assert_not_null(strstr(cap.body.data, "\"content\":\"Hello\""), "%s",
	                   cap.body.data);
	cr_assert_not_null(strstr(cap.body.data, "data: [DONE]\n\n"));
	cr_assert_not_null(strstr(cap.hdrs, "x-llmfd-provider: bedrock"));
	buf_free(&b);
}

/* A throttlingException before any content falls back at once to the
 * next deployment; the client never sees it. */
Test(engine, bedrock_throttling_before_first_byte_falls_back)
{
	static const char s[] = CHUNK("ok") "data: [DONE]\n\n";
	struct buf b = {0};
	struct req *r;

	start("num_retries = 2; cooldown_s = 0;",
	      BEDROCK("b1", "g") ",\n" DEP("o1", "g", ""), "");
	br_exception(&b, "throttlingException", "Too many tokens");
	cr_assert_not_null(r = chat(STREAM));
	req_test_upstream(r, 200, 2, b.data, b.len, 0);
	cr_assert_eq(req_phase(r), REQ_ATTEMPTING, "on the next deployment");
	cr_assert_not(cap.started);
	req_test_upstream(r, 200, 1, s, sizeof s - 1, 1);
	cr_assert(cap.ended);
	cr_assert_not_null(strstr(cap.hdrs, "x-llmfd-deployment: o1"), "%s",
	                   cap.hdrs);
	cr_assert_not_null(strstr(cap.hdrs, "x-llmfd-attempts: 2"), "%s",
	                   cap.hdrs);
	cr_assert_null(strstr(cap.body.data, "Too many"));
	cr_assert_eq(atomic_load(&shm.slots[0].failures[EC_RATE_LIMITED]), 1);
	buf_free(&b);
}

/* An exception after content reached the client ends the stream with an
 * error event (the truncation contract), never [DONE]. */
Test(engine, bedrock_exception_mid_stream_is_an_error_event)
{
	struct buf b = {0};
	struct req *r;

	start("", BEDROCK("b1", "g"), "");
	br_chunk(&b, "{\"type\":\"message_start\",\"message\":{\"id\":"
	             "\"m\",\"model\":\"c\"}}");
	br_chunk(&b, "{\"type\":\"content_block_delta\",\"index\":0,"
	             "\"delta\":{\"type\":\"text_delta\",\"text\":"
	             "\"Hel\"}}");
	cr_assert_not_null(r = chat(STREAM));
	req_test_upstream(r, 200, 2, b.data, b.len, 0);
	cr_assert(cap.started, "the first content went out");
	buf_reset(&b);
	br_exception(&b, "modelStreamErrorException", "model failed");
	req_test_upstream(r, 200, 2, b.data, b.len, 0);
	cr_assert(cap.ended);
	cr_assert_not_null(strstr(cap.body.data, "Hel"));
	cr_assert_not_null(strstr(cap.body.data, "stream_interrupted"));
	cr_assert_null(strstr(cap.body.data, "[DONE]"));
	buf_free(&b);
}

/* A corrupted event stream (bad CRC) fails the attempt as transient. */
Test(engine, bedrock_bad_crc_fails_attempt)
{
	struct buf b = {0};
	struct req *r;

	start("num_retries = 0;", BEDROCK("b1", "g"), "");
	br_answer(&b);
	b.data[b.len - 1] ^= 1;
	cr_assert_not_null(r = chat(STREAM));
	req_test_upstream(r, 200, 2, b.data, b.len, 1);
	cr_assert(cap.ended || cap.status >= 500, "%d", cap.status);
	cr_assert_not_null(strstr(cap.body.data, "CRC"), "%s", cap.body.data);
	buf_free(&b);
}

/* A Vertex deployment with a service account: requests wait for the one
 * token exchange in flight, then go. */
Test(engine, vertex_requests_wait_for_one_token)
{
	static const char s[] =
	    "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":"
	    "\"ok\"}]},\"finishReason\":\"STOP\"}]}\n\n";
	EVP_PKEY *k = EVP_RSA_gen(2048);
	BIO *bio = BIO_new(BIO_s_mem());
	struct buf esc = {0};
	char file[PATH_MAX], *pem, *cause = NULL;
	struct req *r1, *r2;
	FILE *f;
	long n;

	PEM_write_bio_PrivateKey(bio, k, NULL, NULL, 0, NULL, NULL);
	n = BIO_get_mem_data(bio, &pem);
	json_escape(&esc, pem, (size_t)n);
	snprintf(file, sizeof file, "%s/sa.json", tdir);
	cr_assert_not_null(f = fopen(file, "w"));
	fprintf(f,
	        "{\"type\":\"service_account\",\"project_id\":\"p\","
	        "\"private_key\":\"%s\",\"client_email\":\"a@p\","
	        "\"token_uri\":\"http://127.0.0.1:9/token\"}",
	        buf_cstr(&esc));
	fclose(f);
	BIO_free(bio);
	EVP_PKEY_free(k);
	buf_free(&esc);
	start("",
	      "{ name = \"v\"; group = \"g\"; provider = \"vertex\"; "
	      "model = \"gemini-x\"; base_url = \"http://127.0.0.1:9/v1\"; "
	      "credentials_file = \"sa.json\"; }",
	      "");
	cr_assert_not_null(w.gauth = gauth_new(w.base, NULL, cfg, &cause));
	cr_assert_not_null(r1 = chat(STREAM));
	cr_assert_eq(req_phase(r1), REQ_ATTEMPTING);
	cap.r = NULL;
	req_start(&w, &ops, &cap, &ingress_chat, STREAM, strlen(STREAM));
	cr_assert_not_null(r2 = cap.r);
	cr_assert_eq(gauth_refreshes(w.gauth, 0), 1, "one exchange");
	gauth_test_answer(w.gauth, 0, 200,
	                  "{\"access_token\":\"tok\",\"expires_in\":60}");
	req_test_upstream(r1, 200, 1, s, sizeof s - 1, 1);
	req_test_upstream(r2, 200, 1, s, sizeof s - 1, 1);
	cr_assert_eq(cap.ended, 1);
	cr_assert_not_null(strstr(cap.body.data, "\"content\":\"ok\""), "%s",
	                   cap.body.data);
	cr_assert_eq(gauth_refreshes(w.gauth, 0), 1);
	unlink(file);
}

/* A failed token exchange fails the attempt as auth and the request
 * moves to the next deployment; the message never holds the key. */
Test(engine, vertex_token_failure_is_auth)
{
	static const char s[] = CHUNK("ok") "data: [DONE]\n\n";
	EVP_PKEY *k = EVP_RSA_gen(2048);
	BIO *bio = BIO_new(BIO_s_mem());
	struct buf esc = {0};
	char file[PATH_MAX], *pem, *cause = NULL;
	struct req *r;
	FILE *f;
	long n;

	PEM_write_bio_PrivateKey(bio, k, NULL, NULL, 0, NULL, NULL);
	n = BIO_get_mem_data(bio, &pem);
	json_escape(&esc, pem, (size_t)n);
	snprintf(file, sizeof file, "%s/sa.json", tdir);
	cr_assert_not_null(f = fopen(file, "w"));
	fprintf(f,
	        "{\"type\":\"service_account\",\"project_id\":\"p\","
	        "\"private_key\":\"%s\",\"client_email\":\"a@p\","
	        "\"token_uri\":\"http://127.0.0.1:9/token\"}",
	        buf_cstr(&esc));
	fclose(f);
	BIO_free(bio);
	EVP_PKEY_free(k);
	buf_free(&esc);
	start("cooldown_s = 0;",
	      "{ name = \"v\"; group = \"g\"; provider = \"vertex\"; "
	      "model = \"gemini-x\"; base_url = \"http://127.0.0.1:9/v1\"; "
	      "credentials_file = \"sa.json\"; },\n" DEP("o1", "g", ""),
	      "");
	cr_assert_not_null(w.gauth = gauth_new(w.base, NULL, cfg, &cause));
	cr_assert_not_null(r = chat(STREAM));
	gauth_test_answer(w.gauth, 0, 400,
	                  "{\"error\":\"invalid_grant\",\"error_description\""
	                  ":\"Invalid JWT Signature.\"}");
	cr_assert_eq(req_phase(r), REQ_ATTEMPTING, "on the next deployment");
	cr_assert_eq(atomic_load(&shm.slots[0].failures[EC_AUTH]), 1);
	req_test_upstream(r, 200, 1, s, sizeof s - 1, 1);
	cr_assert(cap.ended);
	cr_assert_not_null(strstr(cap.hdrs, "x-llmfd-deployment: o1"));
	unlink(file);
}

/* After a burst, an idle worker keeps only a few recycled requests. */
Test(engine, trim_after_a_burst)
{
	struct req *r[20];

	start_default();
	for (int i = 0; i < 20; i++)
		cr_assert_not_null(r[i] = chat(PLAIN));
	for (int i = 0; i < 20; i++)
		req_test_upstream(r[i], 200, 0, REPLY, strlen(REPLY), 1);
	cr_assert_eq(req_inflight(), 0);
	cr_assert_eq(req_recycled(), 20);
	req_trim();
	cr_assert_lt(req_recycled(), 20);
	cr_assert_gt(req_recycled(), 0);
	cap.detached = 0;
	cr_assert_not_null(r[0] = chat(PLAIN)); /* and serves on */
	req_test_upstream(r[0], 200, 0, REPLY, strlen(REPLY), 1);
	cr_assert_eq(cap.status, 200);
}

/* ---- count_tokens and keep-alives (issue 12) ---- */

#define ANTH(name, group)                                                      \
	"  { name = \"" name "\"; group = \"" group "\"; provider = "          \
	"\"anthropic\"; base_url = \"http://127.0.0.1:9\"; api_key = \"k\"; "  \
	"model = \"claude-m\"; }"
#define COUNT_BODY                                                             \
	"{\"model\":\"g\",\"messages\":[{\"role\":\"user\",\"content\":"       \
	"\"hello there\"}]}"

/* Send body to the engine in the protocol of ig; the request, or NULL if
 * it finished at once. */
static struct req *
send_as(const struct ingress *ig, const char *body)
{
	cap.r = NULL;
	req_start(&w, &ops, &cap, ig, body, strlen(body));
	return cap.detached ? NULL : cap.r;
}

/* A count goes only to the member that counts tokens (the OpenAI one is
 * never picked: no attempt, no rpm spent), and its answer goes back as it
 * is. */
Test(engine, count_tokens_only_to_counting_deployments)
{
	static const char ans[] = "{\"input_tokens\": 7}";
	struct req *r;

	start("num_retries = 0;",
	      DEP("a", "g", "rpm = 100;") ",\n" ANTH("b", "g"), "");
	cr_assert_not_null(r = send_as(&ingress_count_tokens, COUNT_BODY));
	cr_assert_eq(atomic_load(&shm.slots[0].requests), 0);
	cr_assert_eq(atomic_load(&shm.slots[0].req_cur), 0);
	cr_assert_eq(atomic_load(&shm.slots[1].requests), 1);
	req_test_upstream(r, 200, 0, ans, sizeof ans - 1, 1);
	cr_assert_eq(cap.status, 200);
	cr_assert_str_eq(cap.body.data, ans);
	cr_assert_not_null(strstr(cap.hdrs, "x-llmfd-deployment: b\n"), "%s",
	                   cap.hdrs);
	cr_assert_eq(atomic_load(&shm.slots[1].successes), 1);
}

/* Every member cooling: the estimate at once, never a wait in the queue;
 * and after a failed attempt, the estimate too. */
Test(engine, count_tokens_estimate_instead_of_waiting)
{
	struct req *r;

	start("num_retries = 0; cooldown_s = 0;",
	      ANTH("a", "g") ",\n" ANTH("b", "g"), "");
	cool_all(4500);
	cr_assert_null(send_as(&ingress_count_tokens, COUNT_BODY));
	cr_assert_eq(cap.status, 200, "%s", cap.body.data);
	cr_assert_str_eq(cap.body.data, "{\"input_tokens\":6}");
	cr_assert_not_null(strstr(cap.hdrs, "x-llmfd-deployment: estimate\n"),
	                   "%s", cap.hdrs);
	cr_assert_not_null(strstr(cap.hdrs, "x-llmfd-provider: llmfd\n"));
	cr_assert_not_null(strstr(cap.hdrs, "x-llmfd-attempts: 0\n"));
	cool_all(0);
	buf_free(&cap.body);
	memset(&cap, 0, sizeof cap);
	cr_assert_not_null(r = send_as(&ingress_count_tokens, COUNT_BODY));
	req_test_upstream(r, 529, 0, "{}", 2, 1);
	cr_assert_eq(req_phase(r), REQ_ATTEMPTING, "on the other member");
	req_test_upstream(r, 503, 0, "{}", 2, 1);
	cr_assert_eq(cap.status, 200, "%s", cap.body.data);
	cr_assert_not_null(strstr(cap.hdrs, "x-llmfd-attempts: 2\n"), "%s",
	                   cap.hdrs);
}

/* Run the event loop for ms. */
static void
loop_ms(int ms)
{
	struct timeval tv = {0, ms * 1000};

	event_base_loopexit(w.base, &tv);
	event_base_dispatch(w.base);
}

/* An idle stream gets keep-alives after stream_ping_ms: an SSE comment on
 * Chat Completions, event: ping after message_start on Messages. */
Test(engine, stream_keepalives_when_idle)
{
	static const char s[] = CHUNK("he");
	struct req *r;

	start("stream_ping_ms = 5;", DEP("a", "g", ""), "");
	cr_assert_not_null(r = chat(STREAM));
	req_test_upstream(r, 200, 1, s, sizeof s - 1, 0);
	loop_ms(40);
	cr_assert(strncmp(cap.body.data, "data: {", 7) == 0);
	cr_assert_not_null(strstr(cap.body.data, "\n\n: keepalive\n\n"), "%s",
	                   cap.body.data);
	req_test_upstream(r, 200, 1, "data: [DONE]\n\n", 14, 1);
	cr_assert(cap.ended);

	buf_free(&cap.body);
	memset(&cap, 0, sizeof cap);
	cr_assert_not_null(
	    r = send_as(
	        &ingress_messages,
	        "{\"model\":\"g\",\"max_tokens\":9,\"stream\":true,"
	        "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"));
	req_test_upstream(r, 200, 1, s, sizeof s - 1, 0);
	loop_ms(40);
	cr_assert(strncmp(cap.body.data, "event: message_start\n", 21) == 0);
	cr_assert_not_null(strstr(cap.body.data, "\n\nevent: ping\n"), "%s",
	                   cap.body.data);
	req_test_upstream(r, 200, 1, "data: [DONE]\n\n", 14, 1);
	cr_assert_not_null(strstr(cap.body.data, "event: message_stop"));
}

/* None with stream_ping_ms = 0. */
Test(engine, stream_keepalives_off)
{
	static const char s[] = CHUNK("he");
	struct req *r;

	start("stream_ping_ms = 0;", DEP("a", "g", ""), "");
	cr_assert_not_null(r = chat(STREAM));
	req_test_upstream(r, 200, 1, s, sizeof s - 1, 0);
	loop_ms(40);
	cr_assert_null(strstr(cap.body.data, "keepalive"), "%s", cap.body.data);
	req_test_upstream(r, 200, 1, "data: [DONE]\n\n", 14, 1);
	cr_assert(cap.ended);
}
