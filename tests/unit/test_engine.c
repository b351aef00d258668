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

#include "common/cfg.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/shm.h"
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

	req_decide(r, EC_TRANSIENT, 503, -1, -1, &dc);
	cr_assert_eq(dc.action, DO_RETRY);
	cr_assert(dc.delay_ms >= 0 && dc.delay_ms <= 2);
	req_decide(r, EC_TRANSIENT, 503, -1, 0,
	           &dc); /* x-should-retry: false */
	cr_assert_eq(dc.action, DO_NEXT);
	req_decide(r, EC_RATE_LIMITED, 429, -1, -1, &dc);
	cr_assert_eq(dc.action, DO_NEXT);
	req_decide(r, EC_AUTH, 401, -1, -1, &dc);
	cr_assert_eq(dc.action, DO_NEXT);
	req_decide(r, EC_NOT_FOUND, 404, -1, -1, &dc);
	cr_assert_eq(dc.action, DO_NEXT);
	req_decide(r, EC_QUOTA, 429, -1, -1, &dc);
	cr_assert_eq(dc.action, DO_NEXT);
	req_decide(r, EC_BAD_REQUEST, 422, -1, -1, &dc);
	cr_assert_eq(dc.action, DO_FAIL);
	cr_assert_eq(dc.status, 422);
	cr_assert_str_eq(dc.code, "bad_request");
	req_decide(r, EC_BAD_REQUEST, 500, -1, -1, &dc);
	cr_assert_eq(dc.status, 400);
	req_decide(r, EC_CONTEXT_WINDOW, 400, -1, -1, &dc);
	cr_assert_eq(dc.action, DO_SWITCH, "g has a context-window chain");
	req_decide(r, EC_CONTENT_POLICY, 400, -1, -1, &dc);
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
	req_decide(r, EC_TRANSIENT, 503, 5000, -1, &dc);
	cr_assert_eq(dc.action, DO_NEXT);
}

Test(engine, num_retries_zero_never_retries)
{
	struct req_decision dc;
	struct req *r;

	start_default();
	cr_assert_not_null(r = chat("{\"model\":\"g\",\"num_retries\":0,"
	                            "\"messages\":[]}"));
	req_decide(r, EC_TRANSIENT, 503, -1, -1, &dc);
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
	cr_assert_not_null(strstr(cap.hdrs, "x-llmfd-attempts: 2"));
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
	cr_assert_not_null(strstr(cap.hdrs, "x-llmfd-attempts: 2"));
	cr_assert_null(strstr(cap.body.data, "overloaded"));
}
