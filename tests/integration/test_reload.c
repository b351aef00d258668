/* Reloads and drains under keep-alive traffic, the way SDKs connect: one
 * connection reused for many requests. A draining worker finishes the
 * request in flight on each connection with Connection: close and closes
 * idle keep-alive connections at once, so no request is lost, no worker
 * dies, and the old config stops serving as soon as each connection's
 * in-flight request is done. */
#include <sys/socket.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "tests/integration/harness.h"

#define CHAT   "/v1/chat/completions"
#define HI     "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"
#define BODY   "{\"model\":\"g\"," HI "}"
#define STREAM "{\"model\":\"g\"," HI ",\"stream\":true}"

/* Group g served by deployment %s at port %d. */
#define RELOAD_CONF                                                            \
	"daemon = { workers = 2; listen = \"llmfd.sock\";\n"                   \
	"  health_table = \"health\"; log_level = \"info\";\n"                 \
	"  drain_timeout_ms = %d; };\n"                                        \
	"router = { num_retries = 1; backoff_base_ms = 10; backoff_max_ms = "  \
	"50;\n  timeout_ms = 10000; attempt_timeout_ms = 5000; };\n"           \
	"deployments = (\n"                                                    \
	"  { name = \"%s\"; group = \"g\"; provider = \"openai\"; model = "    \
	"\"m\";\n    base_url = \"http://127.0.0.1:%d/v1\"; }\n);\n"

TestSuite(reload, .init = h_setup, .fini = h_teardown, .timeout = 90);

/* A keep-alive client connection. */
struct ka {
	int fd;
	int reused; /* requests already answered on fd */
	char buf[65536];
	size_t len;
};

/* Read more into k->buf; bytes read, 0 on EOF, -1 on error or timeout. */
static ssize_t
ka_fill(struct ka *k)
{
	struct pollfd p = {.fd = k->fd, .events = POLLIN};
	ssize_t n;

	if (k->len == sizeof k->buf || poll(&p, 1, 10000) != 1)
		return -1;
	n = read(k->fd, k->buf + k->len, sizeof k->buf - k->len);
	if (n > 0)
		k->len += (size_t)n;
	return n;
}

/* Drop the first n bytes of k->buf. */
static void
ka_consume(struct ka *k, size_t n)
{
	memmove(k->buf, k->buf + n, k->len - n);
	k->len -= n;
}

/* Read a de-chunked body into out (at most outsz - 1 bytes kept). */
static int
ka_chunked(struct ka *k, char *out, size_t outsz, size_t *olen)
{
	for (;;) {
		char *e;
		size_t sz;

		while ((e = memmem(k->buf, k->len, "\r\n", 2)) == NULL)
			if (ka_fill(k) <= 0)
				return -1;
		sz = strtoul(k->buf, NULL, 16);
		ka_consume(k, (size_t)(e - k->buf) + 2);
		while (k->len < sz + 2)
			if (ka_fill(k) <= 0)
				return -1;
		if (*olen + sz < outsz) {
			memcpy(out + *olen, k->buf, sz);
			*olen += sz;
			out[*olen] = '\0';
		}
		ka_consume(k, sz + 2);
		if (sz == 0)
			return 0;
	}
}

/*
 * One request on the keep-alive connection (opened if needed). Returns the
 * status, with the body in out and *dep set from x-llmfd-deployment; 0 if
 * the connection failed. A reused connection the server closed before any
 * byte of the answer is retried once on a new one, as HTTP clients and the
 * SDKs do (the server may close an idle connection just as a request is
 * sent); *retried counts those.
 */
static int
ka_request(struct ka *k, const char *body, char *out, size_t outsz, char *dep,
           size_t depsz, int *retried)
{
	char *req = h_fmt("POST " CHAT " HTTP/1.1\r\nHost: localhost\r\n"
	                  "Content-Type: application/json\r\n"
	                  "Content-Length: %zu\r\n\r\n%s",
	                  strlen(body), body),
	     *he, *v;
	int status, close_after, chunked;
	size_t clen = 0, olen = 0;
	ssize_t n;

again:
	if (k->fd < 0) {
		if ((k->fd = h_connect_unix(h_sock())) < 0)
			return 0;
		k->reused = 0;
		k->len = 0;
	}
	if (h_send_all(k->fd, req, strlen(req)) == -1)
		goto dead;
	while ((he = memmem(k->buf, k->len, "\r\n\r\n", 4)) == NULL)
		if ((n = ka_fill(k)) <= 0)
			goto dead;
	*he = '\0';
	status = atoi(k->buf + 9);
	close_after = strcasestr(k->buf, "\r\nConnection: close") != NULL;
	chunked = strcasestr(k->buf, "\r\nTransfer-Encoding: chunked") != NULL;
	if ((v = strcasestr(k->buf, "\r\nContent-Length:")) != NULL)
		clen = strtoul(v + 17, NULL, 10);
	dep[0] = '\0';
	if ((v = strcasestr(k->buf, "\r\nx-llmfd-deployment: ")) != NULL)
		sscanf(v + 22, "%63[^\r]", dep);
	(void)depsz;
	ka_consume(k, (size_t)(he - k->buf) + 4);
	out[0] = '\0';
	if (chunked) {
		if (ka_chunked(k, out, outsz, &olen) == -1) {
			snprintf(out, outsz, "chunked body cut");
			return 0;
		}
	} else {
		while (k->len < clen)
			if (ka_fill(k) <= 0) {
				snprintf(out, outsz, "body cut");
				return 0;
			}
		olen = clen < outsz - 1 ? clen : outsz - 1;
		memcpy(out, k->buf, olen);
		out[olen] = '\0';
		ka_consume(k, clen);
	}
	k->reused++;
	if (close_after) {
		close(k->fd);
		k->fd = -1;
	}
	return status;
dead:
	close(k->fd);
	k->fd = -1;
	if (k->reused > 0 && k->len == 0) {
		(*retried)++;
		k->reused = 0;
		goto again;
	}
	snprintf(out, outsz, "no answer (%zu bytes of head, reused %d)", k->len,
	         k->reused);
	return 0;
}

/* In a child: keep-alive requests until DIR/stop exists; writes
 * "requests failed retried" to DIR/client.N and exits with the failures
 * (at most 100). */
static pid_t
ka_client(int i, bool stream)
{
	pid_t pid = fork();

	cr_assert_neq(pid, -1);
	if (pid != 0)
		return pid;
	struct ka k = {.fd = -1};
	static char out[65536];
	char dep[64];
	int fails = 0, n = 0, retried = 0;

	while (access(h_path("stop"), F_OK) != 0 && fails < 100) {
		int st = ka_request(&k, stream ? STREAM : BODY, out, sizeof out,
		                    dep, sizeof dep, &retried);
		bool ok = st == 200 &&
		          (!stream || strstr(out, "data: [DONE]") != NULL);
		n++;
		if (!ok && fails++ < 5)
			fprintf(stderr,
			        "client %d request %d failed: %d %.200s\n", i,
			        n, st, out);
	}
	h_write(h_fmt("client.%d", i), "%d %d %d\n", n, fails, retried);
	_exit(n == 0 ? 101 : fails);
}

/* Stop the clients and sum their failures. */
static int
stop_clients(const pid_t *kids, int n)
{
	int failed = 0;

	h_write("stop", "1\n");
	for (int i = 0; i < n; i++) {
		int st;

		cr_assert_eq(waitpid(kids[i], &st, 0), kids[i]);
		cr_assert(WIFEXITED(st), "client %d died: 0x%x", i, st);
		cr_assert_neq(WEXITSTATUS(st), 101, "client %d sent nothing",
		              i);
		failed += WEXITSTATUS(st);
		fprintf(stderr, "client %d: %s", i,
		        h_read(h_path(h_fmt("client.%d", i))));
	}
	return failed;
}

/* SIGHUPs in a storm under keep-alive load, streaming and not: nothing
 * fails and no worker is killed by a signal. */
Test(reload, sighup_storm_under_keepalive_load)
{
	struct h_mock m;
	pid_t master, kids[4];
	int failed;

	h_mock_start(&m, "a", "--chunks", "4", "--chunk-delay-ms", "10", NULL);
	master = h_llmfd_start(RELOAD_CONF, 1000, "a", m.port);
	for (int i = 0; i < 4; i++)
		kids[i] = ka_client(i, i % 2 == 1);
	h_sleep_ms(300);
	for (int k = 0; k < 20; k++) {
		cr_assert_eq(kill(master, SIGHUP), 0);
		h_sleep_ms(250);
	}
	h_sleep_ms(500);
	failed = stop_clients(kids, 4);
	cr_assert_eq(failed, 0, "%d requests failed across 20 reloads", failed);
	cr_assert_not(h_log_has("killed by signal"), "%s", h_log());
	cr_assert(h_alive(master));
}

/* The children of pid now, from /proc/PID/task/PID/children (fast enough
 * to catch a worker just forked); how many. */
static int
fresh_children(pid_t pid, pid_t *out, int max)
{
	char path[64], buf[512], *p = buf, *end;
	int fd, n = 0;
	ssize_t len;

	snprintf(path, sizeof path, "/proc/%d/task/%d/children", (int)pid,
	         (int)pid);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return 0;
	len = read(fd, buf, sizeof buf - 1);
	close(fd);
	buf[len > 0 ? len : 0] = '\0';
	for (long v; n < max && (v = strtol(p, &end, 10)) > 0; p = end)
		out[n++] = (pid_t)v;
	return n;
}

/* A worker told to stop the moment it is forked (the next reload comes
 * while it is still setting up) drains and exits; it is not killed by the
 * signal, whose default action it had until its handler was in place. */
Test(reload, sigterm_right_after_fork_drains_the_new_worker)
{
	pid_t master, now[16], top = 0;
	int nn, sniped = 0;

	master = h_llmfd_start(RELOAD_CONF, 1000, "a", 1);
	/* a new worker is one with a pid above all seen before the SIGHUP
	 * (pids go up): a read of the children list that races the master's
	 * forks can miss an old worker, which "not in the last read" then
	 * took for a new one */
	for (int k = 0; k < 20; k++) {
		pid_t before;
		long end;

		nn = fresh_children(master, now, 16);
		for (int i = 0; i < nn; i++)
			top = now[i] > top ? now[i] : top;
		before = top;
		cr_assert_eq(kill(master, SIGHUP), 0);
		for (end = h_now_ms() + h_slow(2000); h_now_ms() < end;) {
			int hit = 0;

			nn = fresh_children(master, now, 16);
			for (int i = 0; i < nn; i++) {
				top = now[i] > top ? now[i] : top;
				if (now[i] > before &&
				    kill(now[i], SIGTERM) == 0)
					hit = 1;
			}
			if (hit) {
				sniped++;
				break;
			}
		}
		h_sleep_ms(150);
	}
	cr_assert_gt(sniped, 10, "caught only %d new workers", sniped);
	h_sleep_ms(800);
	cr_assert_not(h_log_has("killed by signal"), "%s", h_log());
	cr_assert(h_alive(master));
	/* and it still serves */
	cr_assert(h_llmfd_wait_ready(master, 5000) == 0);
}

/* A deployment removed by a reload serves nothing once each keep-alive
 * connection's in-flight request is done. */
Test(reload, removed_deployment_stops_serving)
{
	struct h_mock a, b;
	pid_t master, kids[3];
	long n1, n2;

	h_mock_start(&a, "a", "--chunks", "3", "--chunk-delay-ms", "20", NULL);
	h_mock_start(&b, "b", NULL);
	master = h_llmfd_start(RELOAD_CONF, 30000, "a", a.port);
	for (int i = 0; i < 3; i++)
		kids[i] = ka_client(i, i == 2);
	h_sleep_ms(400);
	cr_assert_gt(h_mock_stat(&a, "requests"), 0);
	h_write("llmfd.conf", RELOAD_CONF, 30000, "b", b.port);
	cr_assert_eq(kill(master, SIGHUP), 0);
	/* the new workers are up once b serves; each connection then has at
	 * most its in-flight request (under 200 ms) left on the old config */
	cr_assert_gt(h_mock_wait_stat(&b, "requests", 1, 5000), 0,
	             "the new config never served:\n%s", h_log());
	h_sleep_ms(500);
	n1 = h_mock_stat(&a, "requests");
	h_sleep_ms(1500);
	n2 = h_mock_stat(&a, "requests");
	cr_assert_eq(n1, n2, "the removed deployment served %ld more requests",
	             n2 - n1);
	cr_assert_eq(stop_clients(kids, 3), 0);
	cr_assert(h_alive(master));
}

/* SIGTERM with a request in flight on a keep-alive connection: it is
 * answered (with Connection: close) and the daemon exits 0. */
Test(reload, sigterm_finishes_inflight_keepalive_request)
{
	struct h_mock m;
	struct ka k = {.fd = -1};
	static char out[65536];
	char dep[64];
	int retried = 0, st;
	pid_t master, pid;

	h_mock_start(&m, "a", "--chunks", "5", "--chunk-delay-ms", "200", NULL);
	master = h_llmfd_start(RELOAD_CONF, 5000, "a", m.port);
	cr_assert_eq(
	    ka_request(&k, BODY, out, sizeof out, dep, sizeof dep, &retried),
	    200);
	cr_assert_geq(k.fd, 0, "the connection is kept alive");
	pid = fork();
	cr_assert_neq(pid, -1);
	if (pid == 0) {
		h_sleep_ms(300);
		kill(master, SIGTERM);
		_exit(0);
	}
	st = ka_request(&k, STREAM, out, sizeof out, dep, sizeof dep, &retried);
	cr_assert_eq(st, 200);
	cr_assert_not_null(strstr(out, "data: [DONE]"), "%s", out);
	cr_assert_eq(retried, 0);
	if (k.fd >= 0) { /* the stream began before the drain: the server
		          * closes the connection after its end */
		struct pollfd p = {.fd = k.fd, .events = POLLIN};
		char c;

		cr_assert_eq(poll(&p, 1, 2000), 1,
		             "the connection stayed open");
		cr_assert_eq(read(k.fd, &c, 1), 0, "expected EOF");
		close(k.fd);
	}
	cr_assert_eq(h_wait_exit(master, 10000, &st), 0);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status 0x%x", st);
	waitpid(pid, NULL, 0);
}

/* VmRSS of pid in kB, or -1. */
static long
rss_kb(pid_t pid)
{
	char *s = h_read(h_fmt("/proc/%d/status", (int)pid)), *p;

	if (s == NULL || (p = strstr(s, "VmRSS:")) == NULL)
		return -1;
	return strtol(p + 6, NULL, 10);
}

/* A reload whose drain times out with a stream in flight: the old worker
 * exits at drain_timeout_ms (the stream is cut, never completed), without
 * crashing, and the daemon keeps serving. The use-after-free this once
 * caused shows under make asan. */
Test(reload, drain_timeout_with_stream_in_flight)
{
	struct h_mock m;
	pid_t master, pid;
	struct h_resp *r;
	int st;

	h_mock_start(&m, "a", "--chunks", "20", "--chunk-delay-ms", "200",
	             NULL);
	master = h_llmfd_start(RELOAD_CONF, 1000, "a", m.port);
	pid = fork();
	cr_assert_neq(pid, -1);
	if (pid == 0) {
		r = h_unix("POST", CHAT, STREAM);
		_exit(r->status == 200 && strstr(r->body, "[DONE]") ? 0 : 1);
	}
	h_sleep_ms(500);
	cr_assert_eq(kill(master, SIGHUP), 0);
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1,
	          "a 4 s stream cannot finish within a 1 s drain");
	cr_assert(h_log_has("drain timeout"), "%s", h_log());
	cr_assert_not(h_log_has("killed by signal"), "%s", h_log());
	r = h_unix("POST", CHAT, BODY);
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert(h_alive(master));
}

/* Connect, send body, wait ms, hang up. */
static void
send_and_hang_up(const char *body, int ms)
{
	int fd = h_connect_unix(h_sock());
	char *req = h_req_text("POST", CHAT, NULL, body);

	cr_assert_geq(fd, 0);
	cr_assert_eq(h_send_all(fd, req, strlen(req)), 0);
	h_sleep_ms(ms);
	close(fd);
}

/* A client that hangs up in each phase (attempting, waiting for a backoff,
 * streaming) is cancelled cleanly: 499 in the access log, the worker goes
 * on serving. */
Test(reload, client_hangs_up_in_each_phase)
{
	struct h_mock slow, flaky, str;
	struct h_resp *r;
	char *log;

	h_mock_start(&slow, "slow", "--latency-ms", "2000", NULL);
	h_mock_start(&flaky, "flaky", "--mode", "status", "--status", "503",
	             NULL);
	h_mock_start(&str, "str", "--chunks", "20", "--chunk-delay-ms", "100",
	             NULL);
	h_llmfd_start(
	    "daemon = { workers = 1; listen = \"llmfd.sock\"; health_table = "
	    "\"health\"; access_log = \"access.log\"; };\n"
	    "router = { num_retries = 3; backoff_base_ms = 3000; "
	    "backoff_max_ms = 3000; cooldown_s = 0; };\n"
	    "deployments = (\n"
	    "  { name = \"slow\"; group = \"slow\"; provider = \"openai\"; "
	    "model = \"m\"; base_url = \"http://127.0.0.1:%d/v1\"; },\n"
	    "  { name = \"flaky\"; group = \"flaky\"; provider = \"openai\"; "
	    "model = \"m\"; base_url = \"http://127.0.0.1:%d/v1\"; },\n"
	    "  { name = \"str\"; group = \"str\"; provider = \"openai\"; "
	    "model = \"m\"; base_url = \"http://127.0.0.1:%d/v1\"; }\n);\n",
	    slow.port, flaky.port, str.port);
	send_and_hang_up("{\"model\":\"slow\"," HI "}", 300);
	send_and_hang_up("{\"model\":\"flaky\"," HI "}", 500);
	send_and_hang_up("{\"model\":\"str\"," HI ",\"stream\":true}", 500);
	h_sleep_ms(300);
	log = h_read(h_path("access.log"));
	cr_assert_not_null(log);
	for (int i = 0; i < 3; i++) {
		const char *m = i == 0   ? "model=slow "
		                : i == 1 ? "model=flaky "
		                         : "model=str ";
		char *l = strstr(log, m), *e;

		cr_assert_not_null(l, "%s not logged:\n%s", m, log);
		e = strchr(l, '\n');
		cr_assert(e && memmem(l, (size_t)(e - l), "status=499", 10),
		          "%s", log);
	}
	r = h_unix("POST", CHAT, "{\"model\":\"str\"," HI "}");
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
}

/* kill -9 of a worker under keep-alive load: the master respawns it and
 * the clients go on (requests in flight on the killed worker may fail). */
Test(reload, kill9_worker_under_load)
{
	struct h_mock m;
	pid_t master, kids[2], w[16];
	struct h_resp *r;
	int n;

	h_mock_start(&m, "a", NULL);
	master = h_llmfd_start(RELOAD_CONF, 1000, "a", m.port);
	for (int i = 0; i < 2; i++)
		kids[i] = ka_client(i, i == 1);
	h_sleep_ms(300);
	n = h_children(master, w, 16);
	cr_assert_geq(n, 1);
	cr_assert_eq(kill(w[0], SIGKILL), 0);
	h_sleep_ms(800);
	cr_assert_leq(stop_clients(kids, 2), 4);
	r = h_unix("POST", CHAT, BODY);
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert(h_alive(master));
}

/* A client that keeps sending after its request, while the upstream is
 * slow, cannot push more than a small cap into the worker; its request is
 * still answered. */
Test(reload, client_that_keeps_sending_is_capped)
{
	struct h_mock m;
	pid_t master, w[16];
	long before, after;
	static char junk[1 << 16];
	char *req;
	int fd, sent = 0;

	h_mock_start(&m, "a", "--latency-ms", "1500", NULL);
	master = h_llmfd_start(RELOAD_CONF, 1000, "a", m.port);
	cr_assert_eq(h_children(master, w, 16), 2);
	h_sleep_ms(200);
	before = rss_kb(w[0]) + rss_kb(w[1]);
	fd = h_connect_unix(h_sock());
	cr_assert_geq(fd, 0);
	req = h_fmt("POST " CHAT " HTTP/1.1\r\nHost: x\r\nContent-Length: "
	            "%zu\r\n\r\n%s",
	            strlen(BODY), BODY);
	cr_assert_eq(h_send_all(fd, req, strlen(req)), 0);
	memset(junk, 'x', sizeof junk);
	for (int i = 0; i < 1600; i++) { /* up to 100 MiB, until it blocks */
		struct pollfd p = {.fd = fd, .events = POLLOUT};
		ssize_t k;

		if (poll(&p, 1, 200) != 1)
			break;
		if ((k = send(fd, junk, sizeof junk, MSG_NOSIGNAL)) <= 0)
			break;
		sent += (int)(k >> 10);
	}
	after = rss_kb(w[0]) + rss_kb(w[1]);
	cr_assert_lt(after - before, 8 * 1024,
	             "workers grew by %ld kB after the client sent %d kB",
	             after - before, sent);
	close(fd);
}

/* A connection the old generation accepted just before its drain, whose
 * request comes a moment after the drain began, is answered (the drain
 * closes idle keep-alive connections, not ones that have sent nothing
 * yet). */
Test(reload, request_just_after_drain_on_accepted_connection)
{
	struct h_mock m;
	const char *req = h_req_text("POST", CHAT, "Host: x\r\n", BODY);
	char *got;
	long t0;
	pid_t master;
	int fd;

	h_mock_start(&m, "a", NULL);
	master = h_llmfd_start(RELOAD_CONF, 5000, "a", m.port);
	cr_assert(master > 0);
	fd = h_connect_unix(h_sock());
	cr_assert(fd >= 0);
	h_sleep_ms(200); /* accepted by a worker of generation 1 */
	cr_assert_eq(kill(master, SIGHUP), 0);
	for (t0 = h_now_ms(); !h_log_has("draining") && h_now_ms() - t0 < 5000;)
		h_sleep_ms(5);
	cr_assert(h_log_has("draining"), "no drain:\n%s", h_log());
	h_sleep_ms(30);
	cr_assert_eq(h_send_all(fd, req, strlen(req)), 0,
	             "the connection "
	             "was closed");
	got = h_recv_until(fd, NULL, 5000);
	close(fd);
	cr_assert(strncmp(got, "HTTP/1.1 200 OK\r\n", 17) == 0, "%s", got);
	cr_assert(strstr(got, "Connection: close\r\n") != NULL, "%s", got);
}
