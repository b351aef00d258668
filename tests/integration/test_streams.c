/* Streams that never silently fail, end to end: first-token and idle
 * timers, cuts and in-stream errors before and after the first byte,
 * continuation on another deployment, hedging, many concurrent streams
 * through one worker, and TTFT feeding the health table and routing. */
#include <sys/wait.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "tests/integration/harness.h"

#define CHAT "/v1/chat/completions"
#define HI   "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"
#define STREAM_BODY(model, extra)                                              \
	"{\"model\":\"" model "\"," HI ",\"stream\":true" extra "}"
#define RESUME_INSTR "Your previous answer was cut off"

TestSuite(streams, .init = h_setup, .fini = h_teardown, .timeout = 60);

static struct h_mock primary, backup;
static pid_t master;

/* What a client saw in an SSE body. */
struct sse_view {
	int nevents;  /* data events, [DONE] included */
	int nroles;   /* chunks carrying choices.0.delta.role */
	int ncontent; /* chunks carrying non-empty delta content */
	bool done;    /* a data: [DONE] event */
	bool error;   /* a data: {"error":...} event */
	bool after;   /* an event after [DONE] or the error event */
	char text[1024];
	const char *err_code, *err_type, *err_message, *err_dep;
};

/* Split body into SSE events and summarise them. */
static void
sse_view(const char *body, struct sse_view *v)
{
	char *copy = h_fmt("%s", body ? body : ""), *p = copy, *end;

	memset(v, 0, sizeof *v);
	while (p && *p) {
		end = strstr(p, "\n\n");
		if (end)
			*end = '\0';
		if (strncmp(p, "data: ", 6) == 0) {
			const char *d = p + 6, *c;

			v->nevents++;
			if (v->done || v->error)
				v->after = true;
			if (strcmp(d, "[DONE]") == 0) {
				v->done = true;
			} else if (h_json(d, "error") != NULL) {
				v->error = true;
				v->err_code = h_json(d, "error.code");
				v->err_type = h_json(d, "error.type");
				v->err_message = h_json(d, "error.message");
				v->err_dep = h_json(d, "error.deployment");
			} else {
				if (h_json(d, "choices.0.delta.role") != NULL)
					v->nroles++;
				c = h_json(d, "choices.0.delta.content");
				if (c != NULL && *c != '\0') {
					v->ncontent++;
					strncat(v->text, c,
					        sizeof v->text -
					            strlen(v->text) - 1);
				}
			}
		}
		p = end ? end + 2 : NULL;
	}
}

/* One line describing a stream view, for assertion messages. */
static const char *
view_desc(const struct sse_view *v)
{
	return h_fmt("%d events, %d role, %d content, text '%s', done %d, "
	             "error %d (%s: %s)",
	             v->nevents, v->nroles, v->ncontent, v->text, v->done,
	             v->error, v->err_code ? v->err_code : "-",
	             v->err_message ? v->err_message : "-");
}

/* Start llmfd: router settings extra_router, deployment "primary" (group
 * main) on primary.port with extra_p, "secondary" (group backup) on
 * backup.port with extra_b, main falling back to backup, then tail. */
static void
start_daemon(int workers, const char *extra_router, const char *extra_p,
             const char *extra_b, const char *tail)
{
	master = h_llmfd_start(
	    "daemon = { workers = %d; listen = \"llmfd.sock\";\n"
	    "  health_table = \"health\"; log_level = \"debug\"; };\n"
	    "router = { num_retries = 2; backoff_base_ms = 10;\n"
	    "  backoff_max_ms = 50; timeout_ms = 20000;\n"
	    "  attempt_timeout_ms = 10000; %s };\n"
	    "deployments = (\n"
	    "  { name = \"primary\"; group = \"main\"; provider = \"openai\";\n"
	    "    base_url = \"http://127.0.0.1:%d/v1\"; api_key = "
	    "\"$TEST_KEY\"; model = \"m\"; %s },\n"
	    "  { name = \"secondary\"; group = \"backup\"; provider = "
	    "\"openai\";\n"
	    "    base_url = \"http://127.0.0.1:%d/v1\"; api_key = "
	    "\"$TEST_KEY\"; model = \"m\"; %s }\n"
	    ");\n"
	    "fallbacks = ( { group = \"main\"; to = [ \"backup\" ]; } );\n"
	    "%s\n",
	    workers, extra_router, primary.port, extra_p, backup.port, extra_b,
	    tail);
}

/* Start a primary mock with args, an ok backup mock "b", and the daemon
 * with the given router, primary and group settings. */
static void
start_pair(const char *const *args, const char *router, const char *extra_p,
           const char *tail)
{
	h_mock_startv(&primary, "a", args);
	h_mock_start(&backup, "b", NULL);
	start_daemon(2, router, extra_p, "", tail);
}

/* POST body to the daemon's chat endpoint. */
static struct h_resp *
chat(const char *body)
{
	return h_unix("POST", CHAT, body);
}

/* The x-llmfd-deployment header, or "(none)". */
static const char *
served_by(const struct h_resp *r)
{
	const char *d = h_header(r, "x-llmfd-deployment");

	return d ? d : "(none)";
}

/* Assert r is one clean, complete stream answered by mock NAME via DEP. */
static void
assert_clean_stream(const struct h_resp *r, const char *name, const char *dep)
{
	struct sse_view v;

	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert(r->complete, "%s", h_desc(r));
	sse_view(r->body, &v);
	cr_assert(v.done && !v.error && !v.after, "%s\n%s", view_desc(&v),
	          r->body);
	cr_assert_eq(v.nroles, 1, "%s", view_desc(&v));
	cr_assert(strncmp(v.text, h_fmt("mock %s says hi", name),
	                  strlen("mock a says hi")) == 0,
	          "text '%s', want mock %s's answer", v.text, name);
	cr_assert_str_eq(served_by(r), dep);
}

/* Assert r is a stream that was cut after content reached the client: a
 * final stream_interrupted error event and no [DONE]. */
static void
assert_interrupted(const struct h_resp *r, struct sse_view *v)
{
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	sse_view(r->body, v);
	cr_assert_geq(v->ncontent, 1, "no content before the cut: %s",
	              view_desc(v));
	cr_assert(v->error, "no error event: %s\n%s", view_desc(v), r->body);
	cr_assert(!v->done, "a cut stream ended with [DONE]: %s", view_desc(v));
	cr_assert(!v->after, "events after the error event: %s", r->body);
	cr_assert(v->err_code != NULL &&
	              strcmp(v->err_code, "stream_interrupted") == 0,
	          "error code '%s'", v->err_code ? v->err_code : "(none)");
	cr_assert(v->err_type != NULL && v->err_message != NULL, "%s", r->body);
}

/* llmfctl status --json (harness-owned text). */
static char *
status_json(void)
{
	char *out;
	int rc = h_run(&out, h_bin("llmfctl"), "-c", h_conf(), "status",
	               "--json", NULL);

	cr_assert_eq(rc, 0, "llmfctl status --json exit %d:\n%s", rc, out);
	cr_assert(h_json_valid(out), "not JSON:\n%s", out);
	return out;
}

/* A numeric field of deployment dep in llmfctl's JSON (-1 if absent). */
static double
dep_num(const char *js, const char *dep, const char *field)
{
	int n = h_json_count(js, "deployments");

	for (int i = 0; i < n; i++) {
		const char *name = h_json(js, h_fmt("deployments.%d.name", i));
		if (name != NULL && strcmp(name, dep) == 0) {
			const char *v =
			    h_json(js, h_fmt("deployments.%d.%s", i, field));
			return v ? atof(v) : -1;
		}
	}
	return -1;
}

/* Check a first-token timeout of ~500 ms: the first data arrives from the
 * backup at the timeout and the abandoned primary connection is closed. */
static void
check_first_token_fallback(const struct h_resp *r)
{
	assert_clean_stream(r, "b", "secondary");
	cr_assert_geq(r->nreads, 1, "%s", h_desc(r));
	cr_assert_geq(r->read_ms[0], 450,
	              "first data at %ld ms, before the 500 ms timeout",
	              r->read_ms[0]);
	cr_assert_lt(r->read_ms[0], 2200,
	             "first data at %ld ms: the 500 ms first-token timer did "
	             "not fire (primary answers at 3000 ms)",
	             r->read_ms[0]);
	cr_assert_eq(h_mock_stat(&primary, "requests"), 1);
	long closed = h_mock_wait_stat(&primary, "client_closed", 1, 1000);
	cr_assert_eq(closed, 1, "primary client_closed %ld: attempt not closed",
	             closed);
}

/* The router's first_token_timeout_ms abandons a slow first token and falls
 * back at the timeout. */
Test(streams, first_token_timeout_router)
{
	const char *args[] = {"--latency-ms", "3000", NULL};

	start_pair(args, "first_token_timeout_ms = 500;", "", "");
	check_first_token_fallback(
	    chat(STREAM_BODY("main", ",\"num_retries\":0")));
}

/* A deployment's own first_token_timeout_ms overrides the router's. */
Test(streams, first_token_timeout_per_deployment)
{
	const char *args[] = {"--latency-ms", "3000", NULL};

	start_pair(args, "first_token_timeout_ms = 10000;",
	           "first_token_timeout_ms = 500;", "");
	check_first_token_fallback(
	    chat(STREAM_BODY("main", ",\"num_retries\":0")));
}

/* A request's stream_timeout (seconds) overrides the configured one. */
Test(streams, first_token_timeout_per_request)
{
	const char *args[] = {"--latency-ms", "3000", NULL};

	start_pair(args, "first_token_timeout_ms = 10000;", "", "");
	struct h_resp *r = chat(
	    STREAM_BODY("main", ",\"num_retries\":0,\"stream_timeout\":0.5"));
	check_first_token_fallback(r);
	const char *reqs = h_mock_requests(&primary);
	const char *body = h_json(reqs, "0.body");
	cr_assert(body != NULL && h_json(body, "stream_timeout") == NULL,
	          "stream_timeout forwarded: %s", body ? body : "(none)");
}

/* A stall after bytes reached the client ends, after the idle timeout, with
 * an error event and no [DONE]. */
Test(streams, idle_timeout_mid_stream)
{
	const char *args[] = {"--mode", "stall", "--cut-after", "2", NULL};
	struct sse_view v;

	start_pair(args, "stream_idle_timeout_ms = 500;", "", "");
	struct h_resp *r = chat(STREAM_BODY("main", ""));
	assert_interrupted(r, &v);
	cr_assert_eq(v.ncontent, 2, "%s", view_desc(&v));
	cr_assert_str_eq(v.text, "mock a");
	cr_assert_str_eq(served_by(r), "primary");
	cr_assert(v.err_dep && strcmp(v.err_dep, "primary") == 0,
	          "error.deployment '%s'", v.err_dep ? v.err_dep : "(none)");
	cr_assert_geq(r->ms - r->read_ms[0], 400,
	              "ended %ld ms after the first data, before the 500 ms "
	              "idle timeout",
	              r->ms - r->read_ms[0]);
	cr_assert_lt(r->ms, 2500, "stream ended after %ld ms, want ~500",
	             r->ms);
	cr_assert_eq(h_mock_stat(&backup, "requests"), 0);
	long closed = h_mock_wait_stat(&primary, "client_closed", 1, 1000);
	cr_assert_eq(closed, 1, "stalled upstream not closed: %ld", closed);
}

/* The idle timeout bounds the gap between chunks, not the time since the
 * first: chunks 150 ms apart for over a second pass a 400 ms timeout. */
Test(streams, idle_timeout_counts_from_the_last_chunk)
{
	const char *args[] = {"--chunks", "8", "--chunk-delay-ms", "150", NULL};

	start_pair(args, "stream_idle_timeout_ms = 400;", "", "");
	struct h_resp *r = chat(STREAM_BODY("main", ""));
	assert_clean_stream(r, "a", "primary");
	cr_assert_geq(r->ms, 1000, "stream took only %ld ms", r->ms);
	cr_assert_eq(h_mock_stat(&backup, "requests"), 0);
}

/* The text of n content chunks of mock a: its answer's words, cycling. */
static const char *
burst_text(int n)
{
	static const char *const words[] = {"mock", "a", "says", "hi"};
	static char t[4096];
	size_t k = 0;

	for (int i = 0; i < n && k + 8 < sizeof t; i++)
		k += (size_t)snprintf(t + k, sizeof t - k, "%s%s", i ? " " : "",
		                      words[i % 4]);
	return t;
}

/* Frames sent back to back arrive in few reads, several a read (held and
 * written to the client at once): every one arrives, in order, then
 * [DONE]. */
Test(streams, burst_of_frames_arrives_whole_and_in_order)
{
	const char *args[] = {"--chunks", "200", "--chunk-delay-ms", "0", NULL};
	struct sse_view v;

	start_pair(args, "", "", "");
	for (int i = 0; i < 3; i++) {
		struct h_resp *r = chat(STREAM_BODY("main", ""));
		assert_clean_stream(r, "a", "primary");
		sse_view(r->body, &v);
		cr_assert_eq(v.ncontent, 200, "%s", view_desc(&v));
		cr_assert_str_eq(v.text, burst_text(200));
	}
}

/* A cut after a burst: the frames before it, all and in order, then the
 * error event. */
Test(streams, cut_after_a_burst_sends_the_burst_first)
{
	const char *args[] = {"--mode",   "cut", "--cut-after",      "120",
	                      "--chunks", "200", "--chunk-delay-ms", "0",
	                      NULL};
	struct sse_view v;

	start_pair(args, "", "", "");
	struct h_resp *r = chat(STREAM_BODY("main", ""));
	assert_interrupted(r, &v);
	cr_assert_eq(v.ncontent, 120, "%s", view_desc(&v));
	cr_assert_str_eq(v.text, burst_text(120));
}

/* A cut after bytes reached the client ends with an error event and no
 * [DONE], continuation being off by default. */
Test(streams, cut_mid_stream_error_event)
{
	const char *args[] = {"--mode", "cut", "--cut-after", "2", NULL};
	struct sse_view v;

	start_pair(args, "", "", "");
	struct h_resp *r = chat(STREAM_BODY("main", ""));
	assert_interrupted(r, &v);
	cr_assert_str_eq(v.text, "mock a");
	cr_assert_eq(v.nroles, 1, "%s", view_desc(&v));
	cr_assert_eq(h_mock_stat(&primary, "requests"), 1,
	             "a cut after bytes was retried");
	cr_assert_eq(h_mock_stat(&backup, "requests"), 0,
	             "continued although stream_resume is off");
}

/* An in-stream error event before any content falls back cleanly: one
 * stream from the backup ending in [DONE], no error event. */
Test(streams, stream_error_before_content_falls_back)
{
	const char *args[] = {"--mode", "stream-error", NULL};

	start_pair(args, "", "", "");
	struct h_resp *r = chat(STREAM_BODY("main", ""));
	assert_clean_stream(r, "b", "secondary");
	cr_assert_null(strstr(r->body, "\"error\""), "%s", r->body);
	cr_assert_geq(h_mock_stat(&primary, "requests"), 1);
	cr_assert_eq(h_mock_stat(&backup, "requests"), 1);
}

/* A cut before any content (after the headers) falls back cleanly. */
Test(streams, cut_before_content_falls_back)
{
	const char *args[] = {"--mode", "cut", "--cut-after", "0", NULL};

	start_pair(args, "", "", "");
	struct h_resp *r = chat(STREAM_BODY("main", ",\"num_retries\":0"));
	assert_clean_stream(r, "b", "secondary");
	cr_assert_eq(h_mock_stat(&primary, "requests"), 1);
}

/* An HTTP 503 before the stream is retried, then falls back, exactly as a
 * non-streaming request. */
Test(streams, http_503_before_stream_retried_then_fallback)
{
	const char *args[] = {"--mode", "status", "--status", "503", NULL};

	start_pair(args, "", "", "");
	struct h_resp *r = chat(STREAM_BODY("main", ""));
	assert_clean_stream(r, "b", "secondary");
	cr_assert_eq(h_mock_stat(&primary, "requests"), 3,
	             "primary requests %ld, want 1 + num_retries",
	             h_mock_stat(&primary, "requests"));
	const char *a = h_header(r, "x-llmfd-attempts");
	cr_assert(a != NULL && atoi(a) == 4, "x-llmfd-attempts '%s'",
	          a ? a : "(none)");
}

/* With stream_resume = "continue" a cut stream is continued by the backup:
 * one spliced stream, one role chunk, [DONE], and the backup is asked to
 * continue the partial answer. */
Test(streams, continuation_splices_backup)
{
	const char *args[] = {"--mode", "cut", "--cut-after", "2", NULL};
	struct sse_view v;

	h_mock_startv(&primary, "a", args);
	h_mock_start(&backup, "b", "--chunks", "4", NULL);
	start_daemon(2, "", "", "",
	             "groups = ( { name = \"main\"; stream_resume = "
	             "\"continue\"; } );");
	struct h_resp *r = chat(STREAM_BODY("main", ""));
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	sse_view(r->body, &v);
	cr_assert(v.done && !v.error && !v.after, "%s\n%s", view_desc(&v),
	          r->body);
	cr_assert_eq(v.nroles, 1, "%d role chunks: %s", v.nroles, r->body);
	cr_assert_eq(v.ncontent, 6, "%s", view_desc(&v));
	cr_assert(strncmp(v.text, "mock a", 6) == 0 &&
	              strstr(v.text + 6, "mock b says hi") != NULL,
	          "text '%s': want the primary's words then the backup's",
	          v.text);
	cr_assert_eq(h_mock_stat(&backup, "requests"), 1);

	const char *reqs = h_mock_requests(&backup);
	const char *body = h_json(reqs, "0.body");
	cr_assert(body != NULL && h_json_valid(body), "backup body: %s",
	          body ? body : "(none)");
	int n = h_json_count(body, "messages");
	cr_assert_eq(n, 3, "messages: %s", body);
	cr_assert_str_eq(h_json(body, "messages.0.content"), "hi");
	cr_assert_str_eq(h_json(body, "messages.1.role"), "assistant");
	cr_assert_str_eq(h_json(body, "messages.1.content"), "mock a");
	cr_assert_str_eq(h_json(body, "messages.2.role"), "user");
	const char *instr = h_json(body, "messages.2.content");
	cr_assert(instr && strstr(instr, RESUME_INSTR) != NULL,
	          "no continuation instruction: %s", body);
	cr_assert_str_eq(h_json(body, "stream"), "true");
}

/* Hedging a slow first token: the backup answers long before the primary's
 * first chunk, the primary's connection is closed, and the loser counts as
 * cancelled, not as a transient failure. */
Test(streams, hedge_stream_backup_wins)
{
	const char *args[] = {"--latency-ms", "2000", NULL};

	start_pair(args, "", "",
	           "groups = ( { name = \"main\"; hedge_after_ms = 200; } );");
	struct h_resp *r = chat(STREAM_BODY("main", ""));
	assert_clean_stream(r, "b", "secondary");
	cr_assert_geq(r->read_ms[0], 150, "hedged before 200 ms: %ld",
	              r->read_ms[0]);
	cr_assert_lt(r->ms, 1500, "hedged stream took %ld ms", r->ms);
	long closed = h_mock_wait_stat(&primary, "client_closed", 1, 1000);
	cr_assert_eq(closed, 1, "hedge loser not closed: client_closed %ld",
	             closed);

	char *js = status_json();
	double canc = dep_num(js, "primary", "failures_by_class.cancelled");
	double trans = dep_num(js, "primary", "failures_by_class.transient");
	cr_assert_eq(canc, 1, "primary cancelled %g:\n%s", canc, js);
	cr_assert_eq(trans, 0, "hedge loser counted transient:\n%s", js);
	cr_assert_eq(dep_num(js, "secondary", "successes"), 1, "%s", js);
}

/* Hedging also applies to non-streaming requests. */
Test(streams, hedge_non_stream_backup_wins)
{
	const char *args[] = {"--latency-ms", "2000", NULL};

	start_pair(args, "", "",
	           "groups = ( { name = \"main\"; hedge_after_ms = 200; } );");
	struct h_resp *r = chat("{\"model\":\"main\"," HI "}");
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_str_eq(h_json(r->body, "choices.0.message.content"),
	                 "mock b says hi");
	cr_assert_str_eq(served_by(r), "secondary");
	cr_assert(r->ms >= 150 && r->ms < 1500, "hedged reply after %ld ms",
	          r->ms);
	long closed = h_mock_wait_stat(&primary, "client_closed", 1, 1000);
	cr_assert_eq(closed, 1, "hedge loser not closed: client_closed %ld",
	             closed);
	char *js = status_json();
	cr_assert_eq(dep_num(js, "primary", "failures_by_class.cancelled"), 1,
	             "%s", js);
	cr_assert_eq(dep_num(js, "primary", "failures_by_class.transient"), 0,
	             "%s", js);
}

/* When the original attempt produces its first token before the hedge,
 * the hedge is the one cancelled. */
Test(streams, hedge_original_wins_hedge_cancelled)
{
	const char *args[] = {"--latency-ms", "500", NULL};

	h_mock_startv(&primary, "a", args);
	h_mock_start(&backup, "b", "--latency-ms", "3000", NULL);
	start_daemon(
	    2, "", "", "",
	    "groups = ( { name = \"main\"; hedge_after_ms = 200; } );");
	struct h_resp *r = chat(STREAM_BODY("main", ""));
	assert_clean_stream(r, "a", "primary");
	cr_assert_lt(r->ms, 2000, "stream took %ld ms", r->ms);
	cr_assert_eq(h_mock_stat(&backup, "requests"), 1, "no hedge started");
	long closed = h_mock_wait_stat(&backup, "client_closed", 1, 1000);
	cr_assert_eq(closed, 1, "losing hedge not closed: client_closed %ld",
	             closed);
	char *js = status_json();
	cr_assert_eq(dep_num(js, "secondary", "failures_by_class.cancelled"), 1,
	             "%s", js);
	cr_assert_eq(dep_num(js, "secondary", "failures_by_class.transient"), 0,
	             "%s", js);
	cr_assert_eq(dep_num(js, "primary", "successes"), 1, "%s", js);
}

/* hedge = "p95" hedges after the deployment's own TTFT p95 once it has
 * samples: a suddenly slow primary is overtaken by the backup. */
Test(streams, hedge_p95_after_warmup)
{
	start_pair(NULL, "", "",
	           "groups = ( { name = \"main\"; hedge = \"p95\"; } );");
	for (int i = 0; i < 6; i++)
		assert_clean_stream(chat(STREAM_BODY("main", "")), "a",
		                    "primary");
	cr_assert_eq(h_mock_stat(&backup, "requests"), 0,
	             "hedged a fast primary");
	cr_assert_eq(h_mock_config(&primary, "{\"latency_ms\":3000}"), 0);
	struct h_resp *r = chat(STREAM_BODY("main", ""));
	assert_clean_stream(r, "b", "secondary");
	cr_assert_lt(r->ms, 1500, "p95 hedge took %ld ms", r->ms);
	long closed = h_mock_wait_stat(&primary, "client_closed", 1, 1000);
	cr_assert_eq(closed, 1, "hedge loser not closed: client_closed %ld",
	             closed);
}

/* A continuation that finds no working candidate still ends with an error
 * event and no [DONE]. */
Test(streams, continuation_without_candidate_ends_with_error)
{
	const char *cut[] = {"--mode", "cut", "--cut-after", "2", NULL};
	struct sse_view v;

	h_mock_startv(&primary, "a", cut);
	h_mock_start(&backup, "b", "--mode", "status", "--status", "503", NULL);
	start_daemon(2, "", "", "",
	             "groups = ( { name = \"main\"; stream_resume = "
	             "\"continue\"; } );");
	struct h_resp *r = chat(STREAM_BODY("main", ""));
	assert_interrupted(r, &v);
	cr_assert_str_eq(v.text, "mock a");
	cr_assert_geq(h_mock_stat(&backup, "requests"), 1,
	              "continuation not attempted");
}

/* The request deadline bounds the time to the first byte, not the length
 * of a healthy stream. */
Test(streams, deadline_does_not_cut_healthy_stream)
{
	const char *args[] = {"--chunks", "6", "--chunk-delay-ms", "300", NULL};

	start_pair(args, "", "", "");
	struct h_resp *r = chat(STREAM_BODY("main", ",\"timeout\":1"));
	assert_clean_stream(r, "a", "primary");
	cr_assert_geq(r->ms, 1500, "stream took only %ld ms", r->ms);
}

/* A stream cut after running longer than the request deadline is still
 * continued: the deadline bounded only its first byte. */
Test(streams, continuation_after_deadline_passed)
{
	const char *args[] = {"--mode",           "cut", "--cut-after", "5",
	                      "--chunk-delay-ms", "300", NULL};
	struct sse_view v;

	h_mock_startv(&primary, "a", args);
	h_mock_start(&backup, "b", "--chunks", "4", NULL);
	start_daemon(2, "", "", "",
	             "groups = ( { name = \"main\"; stream_resume = "
	             "\"continue\"; } );");
	struct h_resp *r = chat(STREAM_BODY("main", ",\"timeout\":1"));
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	sse_view(r->body, &v);
	cr_assert(v.done && !v.error, "%s\n%s", view_desc(&v), r->body);
	cr_assert_eq(v.ncontent, 9, "%s", view_desc(&v));
	cr_assert_eq(h_mock_stat(&backup, "requests"), 1);
}

/* A client leaving mid-stream closes the upstream connection. */
Test(streams, client_gone_mid_stream_closes_upstream)
{
	const char *args[] = {"--chunks", "50", "--chunk-delay-ms", "100",
	                      NULL};
	char buf[4096];

	start_pair(args, "", "", "");
	int fd = h_connect_unix(h_sock());
	cr_assert_geq(fd, 0, "connect %s", h_sock());
	const char *req =
	    h_req_text("POST", CHAT, NULL, STREAM_BODY("main", ""));
	cr_assert_eq(h_send_all(fd, req, strlen(req)), 0);
	ssize_t n = read(fd, buf, sizeof buf - 1);
	cr_assert_gt(n, 0, "no stream bytes");
	h_sleep_ms(300);
	close(fd);
	long closed = h_mock_wait_stat(&primary, "client_closed", 1, 1000);
	cr_assert_eq(closed, 1, "upstream still streaming to nobody: %ld",
	             closed);
	cr_assert_eq(h_mock_stat(&backup, "requests"), 0);
}

/* A fast primary is not hedged: the backup is never asked. */
Test(streams, hedge_not_started_when_fast)
{
	start_pair(NULL, "", "",
	           "groups = ( { name = \"main\"; hedge_after_ms = 500; } );");
	struct h_resp *r = chat(STREAM_BODY("main", ""));
	assert_clean_stream(r, "a", "primary");
	h_sleep_ms(700);
	cr_assert_eq(h_mock_stat(&backup, "requests"), 0);
}

#define N_STREAMS 50
#define N_CUT     5

/* Child: one stream request; exit 0 for a complete "mock a" stream, 10 for
 * an interrupted one, 1..9 for anything else. */
static void
stream_child(const char *model)
{
	struct sse_view v;
	struct h_req q = {.unix_path = h_sock(),
	                  .method = "POST",
	                  .path = CHAT,
	                  .body = h_fmt(STREAM_BODY("%s", ""), model),
	                  .timeout_ms = 30000};
	struct h_resp *r = h_http(&q);

	if (r->status != 200)
		_exit(1);
	sse_view(r->body, &v);
	if (v.done && !v.error && !v.after && v.nroles == 1 &&
	    strcmp(v.text, "mock a says hi mock") == 0)
		_exit(0);
	if (v.error && !v.done && v.err_code &&
	    strcmp(v.err_code, "stream_interrupted") == 0 &&
	    strcmp(v.text, "mock b") == 0)
		_exit(10);
	_exit(2);
}

/* Fifty concurrent streams through one worker stay independent, a few cut
 * ones among them ending with their own error events. */
Test(streams, concurrent_streams_one_worker)
{
	const char *cut[] = {"--mode", "cut", "--cut-after", "2", NULL};
	pid_t kids[N_STREAMS];
	int ok = 0, interrupted = 0, other = 0;

	h_mock_start(&primary, "a", "--chunks", "5", "--chunk-delay-ms", "60",
	             NULL);
	h_mock_startv(&backup, "b", cut);
	/* group backup has no fallback: its cut streams end with errors */
	start_daemon(1, "", "", "", "");
	long t0 = h_now_ms();
	for (int i = 0; i < N_STREAMS; i++) {
		kids[i] = fork();
		cr_assert_geq(kids[i], 0, "fork");
		if (kids[i] == 0)
			stream_child(i % (N_STREAMS / N_CUT) == 0 ? "backup"
			                                          : "main");
	}
	for (int i = 0; i < N_STREAMS; i++) {
		int st;
		if (waitpid(kids[i], &st, 0) != kids[i] || !WIFEXITED(st)) {
			other++;
			continue;
		}
		switch (WEXITSTATUS(st)) {
		case 0:
			ok++;
			break;
		case 10:
			interrupted++;
			break;
		default:
			other++;
			break;
		}
	}
	long took = h_now_ms() - t0;
	cr_assert_eq(ok, N_STREAMS - N_CUT,
	             "%d complete, %d interrupted, %d wrong", ok, interrupted,
	             other);
	cr_assert_eq(interrupted, N_CUT,
	             "%d complete, %d interrupted, %d wrong", ok, interrupted,
	             other);
	cr_assert_eq(h_mock_stat(&primary, "requests"), N_STREAMS - N_CUT);
	cr_assert_eq(h_mock_stat(&backup, "requests"), N_CUT);
	/* one by one they would take 45 x 360 ms; together well under 10 s */
	cr_assert_lt(took, 10000, "%d streams took %ld ms: serialised?",
	             N_STREAMS, took);
}

/* Time to first token reaches the health table. */
Test(streams, ttft_recorded_in_health_table)
{
	const char *args[] = {"--latency-ms", "100", NULL};

	start_pair(args, "", "", "");
	for (int i = 0; i < 3; i++)
		assert_clean_stream(chat(STREAM_BODY("main", "")), "a",
		                    "primary");
	char *js = status_json();
	double p50 = dep_num(js, "primary", "ttft_p50_ms");
	cr_assert_gt(p50, 50, "primary ttft_p50_ms %g:\n%s", p50, js);
	cr_assert_lt(p50, 2000, "primary ttft_p50_ms %g:\n%s", p50, js);
}

/* A deployment slow to first token but answering 200 is marked degraded by
 * max_ttft_p95_ms, and routing prefers the fast one. */
Test(streams, slow_ttft_degraded_routing_prefers_fast)
{
	h_mock_start(&primary, "a", "--latency-ms", "600", NULL);
	h_mock_start(&backup, "b", NULL);
	h_llmfd_start(
	    "daemon = { workers = 1; listen = \"llmfd.sock\";\n"
	    "  health_table = \"health\"; log_level = \"debug\"; };\n"
	    "router = { strategy = \"ordered\"; num_retries = 0;\n"
	    "  timeout_ms = 20000; max_ttft_p95_ms = 300; };\n"
	    "deployments = (\n"
	    "  { name = \"slow\"; group = \"main\"; provider = \"openai\";\n"
	    "    base_url = \"http://127.0.0.1:%d/v1\"; api_key = "
	    "\"$TEST_KEY\"; model = \"m\"; },\n"
	    "  { name = \"fast\"; group = \"main\"; provider = \"openai\";\n"
	    "    base_url = \"http://127.0.0.1:%d/v1\"; api_key = "
	    "\"$TEST_KEY\"; model = \"m\"; }\n"
	    ");\n",
	    primary.port, backup.port);
	/* warm-up: ordered sends everything to "slow" until it is degraded */
	for (int i = 0; i < 5; i++) {
		struct h_resp *r = chat(STREAM_BODY("main", ""));
		assert_clean_stream(r, "a", "slow");
	}
	char *js = status_json();
	double p95 = dep_num(js, "slow", "ttft_p95_ms");
	cr_assert_gt(p95, 300, "slow ttft_p95_ms %g:\n%s", p95, js);
	for (int i = 0; i < 5; i++) {
		struct h_resp *r = chat(STREAM_BODY("main", ""));
		assert_clean_stream(r, "b", "fast");
		cr_assert_lt(r->ms, 500, "request %d took %ld ms", i, r->ms);
	}
	cr_assert_eq(h_mock_stat(&primary, "requests"), 5);
}
