/* The same-format body path end to end: a large Chat body goes upstream
 * with only `model` replaced and llmfd's fields left out, byte for byte
 * otherwise (sent by reference from the client's buffer), on a first
 * attempt, a retry, a fallback and a hedge; a body read at once does not
 * swallow a pipelined request; a body that trickles in still arrives
 * whole. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "common/buf.h"
#include "tests/integration/harness.h"

#define CHAT "/v1/chat/completions"
/* content: whole repeats of PAT, more than one read of 256 KiB */
#define PAT   "lorem ipsum \\\\ \\u00e9 "
#define BIG_N ((sizeof PAT - 1) * 13637)

#define CONF                                                                   \
	"daemon = { workers = 1; listen = \"llmfd.sock\";\n"                   \
	"  health_table = \"health\"; log_level = \"info\"; };\n"              \
	"router = { num_retries = 1; backoff_base_ms = 5; backoff_max_ms = "   \
	"10;"                                                                  \
	"\n  timeout_ms = 10000; attempt_timeout_ms = 5000; };\n"              \
	"deployments = (\n"                                                    \
	"  { name = \"primary\"; group = \"main\"; provider = \"openai\";\n"   \
	"    base_url = \"http://127.0.0.1:%d/v1\"; model = \"m-a\"; },\n"     \
	"  { name = \"secondary\"; group = \"backup\"; provider = "            \
	"\"openai\";\n"                                                        \
	"    base_url = \"http://127.0.0.1:%d/v1\"; model = \"m-b\"; }\n);\n"  \
	"fallbacks = ( { group = \"main\"; to = [ \"backup\" ]; } );\n%s"

TestSuite(bodypath, .init = h_setup, .fini = h_teardown, .timeout = 60);

static struct h_mock a, b;

/* The client's body: a content of n bytes between llmfd's own fields,
 * with odd spacing. */
static char *
big_body(size_t n)
{
	struct buf s = {0};

	buf_adds(&s, "{ \"fallbacks\":[\"backup\"], \"model\" : \"main\",\n "
	             "\"messages\":[{\"role\":\"user\",\"content\":\"");
	for (size_t i = 0; i < n; i++)
		buf_addc(&s, PAT[i % (sizeof PAT - 1)]);
	buf_adds(&s, "x\"}], \"timeout\":30,\"temperature\":0.5 ,"
	             "\"metadata\":{\"a\":1} }");
	return h_fmt("%s", buf_cstr(&s));
}

/* What big_body(n) must be upstream, for a deployment model. */
static char *
big_want(size_t n, const char *model)
{
	struct buf s = {0};

	buf_printf(&s,
	           "{ \"model\" : \"%s\",\n \"messages\":[{\"role\":"
	           "\"user\",\"content\":\"",
	           model);
	for (size_t i = 0; i < n; i++)
		buf_addc(&s, PAT[i % (sizeof PAT - 1)]);
	buf_adds(&s, "x\"}],\"temperature\":0.5 }");
	return h_fmt("%s", buf_cstr(&s));
}

/* The last body mock m received, compared with want byte for byte. */
static void
assert_last_body(const struct h_mock *m, const char *want)
{
	struct h_resp *r = h_tcp(m->port, "GET", "/_mock/last/body", NULL);

	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_eq(r->body_len, strlen(want),
	             "upstream body %zu bytes, want "
	             "%zu",
	             r->body_len, strlen(want));
	cr_assert(memcmp(r->body, want, r->body_len) == 0,
	          "upstream body differs from the client's");
}

static void
start(const char *const *a_args, const char *const *b_args, const char *extra)
{
	h_mock_startv(&a, "a", a_args);
	h_mock_startv(&b, "b", b_args);
	h_llmfd_start(CONF, a.port, b.port, extra);
}

Test(bodypath, big_body_goes_up_unchanged)
{
	start(NULL, NULL, "");
	struct h_resp *r = h_unix("POST", CHAT, big_body(BIG_N));

	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_str_eq(h_json(r->body, "choices.0.message.content"),
	                 "mock a says hi");
	assert_last_body(&a, big_want(BIG_N, "m-a"));
	/* small bodies take the same path (copied, not referenced) */
	r = h_unix("POST", CHAT,
	           "{\"model\":\"main\",\"num_retries\":0,\"messages\":[]}");
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	assert_last_body(&a, "{\"model\":\"m-a\",\"messages\":[]}");
}

Test(bodypath, retry_and_fallback_send_the_same_bytes)
{
	const char *once[] = {"--mode",       "status", "--status", "503",
	                      "--fail-first", "1",      NULL};
	const char *always[] = {"--mode", "status", "--status", "503", NULL};
	struct h_resp *r;

	start(once, NULL, "");
	r = h_unix("POST", CHAT, big_body(BIG_N));
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_eq(h_mock_stat(&a, "requests"), 2);
	assert_last_body(&a, big_want(BIG_N, "m-a"));
	h_teardown();
	h_setup();
	start(always, NULL, "");
	r = h_unix("POST", CHAT, big_body(BIG_N));
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_str_eq(h_header(r, "x-llmfd-deployment"), "secondary");
	assert_last_body(&b, big_want(BIG_N, "m-b"));
}

/* Two attempts at once share the client's body; the loser's connection
 * closes while the winner's request is still referring to it. */
Test(bodypath, hedge_shares_the_body)
{
	const char *slow[] = {"--latency-ms", "1500", NULL};

	struct h_resp *r;

	start(slow, NULL,
	      "groups = ( { name = \"main\"; hedge_after_ms = 100; } );\n");
	r = h_unix("POST", CHAT, big_body(BIG_N));
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	cr_assert_str_eq(h_header(r, "x-llmfd-deployment"), "secondary");
	assert_last_body(&b, big_want(BIG_N, "m-b"));
	cr_assert_eq(h_mock_wait_stat(&a, "client_closed", 1, 2000), 1);
	assert_last_body(&a, big_want(BIG_N, "m-a"));
	/* and the daemon serves on */
	r = h_unix("POST", CHAT, "{\"model\":\"backup\",\"messages\":[]}");
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
}

/* Read one HTTP response with a Content-Length body from fd into *out
 * (buffered in acc across calls); its status, or -1. */
static int
read_response(int fd, struct buf *acc, char **body)
{
	char chunk[65536], *end, *cl;
	ssize_t n;
	size_t head, len;
	int status;

	for (;;) {
		buf_cstr(acc);
		end = acc->data ? strstr(acc->data, "\r\n\r\n") : NULL;
		if (end && (cl = strcasestr(acc->data, "content-length:")) &&
		    cl < end) {
			head = (size_t)(end + 4 - acc->data);
			len = strtoul(cl + 15, NULL, 10);
			if (acc->len >= head + len) {
				status = atoi(acc->data + 9);
				*body =
				    h_fmt("%.*s", (int)len, acc->data + head);
				memmove(acc->data, acc->data + head + len,
				        acc->len - head - len);
				acc->len -= head + len;
				return status;
			}
		}
		if ((n = recv(fd, chunk, sizeof chunk, 0)) <= 0)
			return -1;
		buf_add(acc, chunk, (size_t)n);
	}
}

/* A request after a large body, in the same write: the body is read at
 * once but never past its end, and the second request is answered. */
Test(bodypath, pipelined_request_after_big_body)
{
	const char *big = big_body(BIG_N);
	const char *small = "{\"model\":\"main\",\"messages\":[]}";
	char *req, *body;
	struct buf acc = {0};
	int fd;

	start(NULL, NULL, "");
	req = h_fmt("POST " CHAT " HTTP/1.1\r\nHost: x\r\nContent-Type: "
	            "application/json\r\nContent-Length: %zu\r\n\r\n%s"
	            "POST " CHAT " HTTP/1.1\r\nHost: x\r\nContent-Type: "
	            "application/json\r\nContent-Length: %zu\r\n\r\n%s",
	            strlen(big), big, strlen(small), small);
	cr_assert((fd = h_connect_unix(h_sock())) >= 0);
	cr_assert(h_send_all(fd, req, strlen(req)) == 0);
	cr_assert_eq(read_response(fd, &acc, &body), 200);
	cr_assert_str_eq(h_json(body, "choices.0.message.content"),
	                 "mock a says hi");
	cr_assert_eq(read_response(fd, &acc, &body), 200);
	cr_assert_eq(h_mock_stat(&a, "requests"), 2);
	assert_last_body(&a, "{\"model\":\"m-a\",\"messages\":[]}");
	close(fd);
	buf_free(&acc);
}

/* A body that arrives in pieces, slowly, still goes up whole. */
Test(bodypath, trickled_body_arrives_whole)
{
	const char *big = big_body(BIG_N);
	char *head, *body;
	struct buf acc = {0};
	size_t n = strlen(big), step = n / 7 + 1;
	int fd;

	start(NULL, NULL, "");
	head = h_fmt("POST " CHAT " HTTP/1.1\r\nHost: x\r\nContent-Type: "
	             "application/json\r\nContent-Length: %zu\r\n\r\n",
	             n);
	cr_assert((fd = h_connect_unix(h_sock())) >= 0);
	cr_assert(h_send_all(fd, head, strlen(head)) == 0);
	for (size_t off = 0; off < n; off += step) {
		h_sleep_ms(30);
		cr_assert(h_send_all(fd, big + off,
		                     off + step < n ? step : n - off) == 0);
	}
	cr_assert_eq(read_response(fd, &acc, &body), 200);
	assert_last_body(&a, big_want(BIG_N, "m-a"));
	close(fd);
	buf_free(&acc);
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

/* The inode of the socket listening on 127.0.0.1:port (/proc/net/tcp), or
 * 0. */
static unsigned long
listen_inode(int port)
{
	char line[512];
	unsigned long ino = 0, inode;
	unsigned lp, st;
	FILE *f = fopen("/proc/net/tcp", "r");

	while (f && fgets(line, sizeof line, f))
		if (sscanf(line,
		           " %*d: %*8X:%X %*8X:%*X %X %*X:%*X %*X:%*X %*X "
		           "%*u %*u %lu",
		           &lp, &st, &inode) == 3 &&
		    (int)lp == port && st == 0x0A)
			ino = inode;
	if (f)
		fclose(f);
	return ino;
}

/* A copy (pidfd_getfd) of the descriptor of process pid that is socket
 * inode ino, or -1. */
static int
grab_socket(pid_t pid, unsigned long ino)
{
	char want[64], path[64], got[64];
	int pidfd, fd = -1;
	ssize_t n;

	snprintf(want, sizeof want, "socket:[%lu]", ino);
	for (int i = 0; i < 1024 && fd < 0; i++) {
		snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)pid, i);
		if ((n = readlink(path, got, sizeof got - 1)) <= 0)
			continue;
		got[n] = '\0';
		if (strcmp(got, want) != 0)
			continue;
		if ((pidfd = (int)syscall(SYS_pidfd_open, pid, 0)) < 0)
			return -1;
		fd = (int)syscall(SYS_pidfd_getfd, pidfd, i, 0);
		close(pidfd);
	}
	return fd;
}

/* Stream frames reach a TCP client as they come: with Nagle on the client
 * socket, a frame written while the last one is unacknowledged waits for
 * the client's delayed ACK (up to 40 ms on Linux) and goes out with the
 * next ones (the bench's inter-frame p99 went from 44 to 25 ms). Accepted
 * sockets inherit TCP_NODELAY from the listener: it is set there. */
Test(bodypath, tcp_listener_has_nodelay)
{
	int port = free_port(), fd, on = 0;
	socklen_t len = sizeof on;
	pid_t master;
	struct h_resp *r;

	h_mock_start(&a, "a", NULL);
	master = h_llmfd_start(
	    "daemon = { workers = 1; listen = \"llmfd.sock\"; tcp = "
	    "\"127.0.0.1:%d\";\n  health_table = \"health\"; };\n"
	    "deployments = ( { name = \"primary\"; group = \"main\"; "
	    "provider = \"openai\";\n  base_url = \"http://127.0.0.1:%d/v1\"; "
	    "model = \"m\"; } );\n",
	    port, a.port);
	r = h_tcp(port, "POST", CHAT,
	          "{\"model\":\"main\",\"stream\":true,\"messages\":[]}");
	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	fd = grab_socket(master, listen_inode(port));
	if (fd < 0)
		cr_skip_test(
		    "cannot reach the daemon's socket (pidfd_getfd: %s)",
		    strerror(errno));
	cr_assert(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, &len) == 0);
	cr_assert_eq(on, 1, "TCP_NODELAY is off on the listening socket");
	close(fd);
}
