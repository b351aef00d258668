/* libFuzzer: worker/http.c, the server of client connections, over a real
 * Unix socket in one event loop. Byte 0 picks the size of the writes the
 * rest is cut into (a loop turn after each); then the client half-closes
 * and reads to the end. The same bytes are then sent again in one write.
 * Routes: /echo answers with the body, /stream with a chunked stream of it
 * in three pieces, any other path 404. Checks, past ASan's: every answer
 * starts as an HTTP/1.x status line; once the client has gone no
 * connection is left open on the server; and the bytes are answered the
 * same whichever way they came (the whole-head check and the byte-wise
 * scanner read a request one way), but for the Date header and the 100
 * Continue that only a body still to come gets. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/cfg.h"
#include "worker/http.h"
#include "worker/worker.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static struct event_base *base;
static struct sockaddr_un sun;
static char out[1 << 16], first[1 << 16];
static size_t outlen;

static void
echo_cb(struct hconn *c, struct worker *w)
{
	size_t n;
	const char *b = http_body(c, &n);

	(void)w;
	http_add_header(c, "x-echo", "1");
	http_reply(c, 200, "application/octet-stream", b ? b : "", b ? n : 0);
}

static void
stream_cb(struct hconn *c, struct worker *w)
{
	static char b[1 << 16];
	size_t n, k;
	const char *body = http_body(c, &n);

	(void)w;
	/* the request (its body too) is let go when the stream starts */
	if (body == NULL)
		n = 0;
	n = n < sizeof b ? n : sizeof b;
	memcpy(b, body ? body : "", n);
	k = n / 3;
	http_stream_start(c, 200, "text/event-stream");
	http_cork(1);
	http_stream_data(c, b, k);
	http_stream_data(c, b + k, k);
	http_cork(0);
	http_stream_data(c, b + 2 * k, n - 2 * k);
	http_stream_end(c);
}

static void
notfound_cb(struct hconn *c, struct worker *w)
{
	(void)w;
	http_reply(c, 404, "text/plain", "no\n", 3);
}

/* Listeners back on after an accept (server.c's part). */
static void
reaccept(evutil_socket_t fd, short ev, void *arg)
{
	(void)fd;
	(void)ev;
	http_listeners(arg, 1);
}

/* One listening socket and the server on it, for the whole run. */
static void
setup(void)
{
	static struct cfg cfg;
	static struct worker w;
	int fd;

	cfg.max_header_bytes = 4096;
	cfg.max_headers = 32;
	cfg.client_header_timeout_ms = 10000;
	cfg.keepalive_timeout_ms = 10000;
	base = event_base_new();
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof sun.sun_path, "/tmp/fuzz_http.%d.sock",
	         (int)getpid());
	unlink(sun.sun_path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (base == NULL || fd < 0 ||
	    bind(fd, (struct sockaddr *)&sun, sizeof sun) == -1 ||
	    listen(fd, 64) == -1)
		abort();
	w.base = base;
	w.cfg = &cfg;
	w.listen_fd[0] = fd;
	w.nlisten = 1;
	w.ev_reaccept = event_new(base, -1, 0, reaccept, &w);
	if (http_route("/echo", echo_cb) == -1 ||
	    http_route("/stream", stream_cb) == -1 ||
	    http_setup(&w, notfound_cb) == -1)
		abort();
}

/* A loop turn, then what the client can read; 1 once the server closed. */
static int
turn(int fd)
{
	char tmp[4096];
	ssize_t r;

	event_base_loop(base, EVLOOP_NONBLOCK);
	for (;;) {
		r = recv(fd, tmp, sizeof tmp, 0);
		if (r == 0 || (r < 0 && errno == ECONNRESET))
			return 1;
		if (r < 0)
			return 0;
		if (outlen < sizeof out) {
			size_t k = (size_t)r < sizeof out - outlen
			               ? (size_t)r
			               : sizeof out - outlen;
			memcpy(out + outlen, tmp, k);
			outlen += k;
		}
	}
}

/* Drop the Date headers' values and the 100 Continue replies from the
 * len bytes at p, in place; the length left. */
static size_t
normalize(char *p, size_t len)
{
	static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
	size_t i = 0, j = 0;

	while (i < len) {
		if (len - i >= sizeof cont - 1 &&
		    memcmp(p + i, cont, sizeof cont - 1) == 0) {
			i += sizeof cont - 1;
			continue;
		}
		if (len - i >= 8 && memcmp(p + i, "\r\nDate: ", 8) == 0) {
			const char *nl = memchr(p + i + 2, '\n', len - i - 2);

			i = nl ? (size_t)(nl - p) - 1 : len;
			continue;
		}
		p[j++] = p[i++];
	}
	return j;
}

/* Send the n bytes at data in writes of step bytes, half-close, read to
 * the end into out (outlen), close, check the server let go. */
static void
exchange(const uint8_t *data, size_t n, size_t step)
{
	size_t off;
	int fd, done = 0, left = 0;

	outlen = 0;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof sun) == -1)
		abort();
	for (off = 0; off < n && !done; off += step) {
		size_t k = off + step > n ? n - off : step;

		if (send(fd, data + off, k, MSG_NOSIGNAL) < 0)
			break;
		done = turn(fd);
	}
	shutdown(fd, SHUT_WR);
	for (int i = 0; i < 64 && !done; i++)
		done = turn(fd);
	if (outlen > 0 && (outlen < 9 || memcmp(out, "HTTP/1.", 7) != 0))
		__builtin_trap();
	close(fd);
	/* the server sees the close in a turn or two (a refusal's linger
	 * included: the client that would read it is gone) */
	for (int i = 0; i < 8; i++) {
		event_base_loop(base, EVLOOP_NONBLOCK);
		if ((left = http_open()) == 0)
			break;
	}
	if (left != 0)
		__builtin_trap();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
	size_t step, a;

	if (base == NULL)
		setup();
	if (n < 1)
		return 0;
	step = (size_t)data[0] % 97 + 1;
	data++;
	n--;
	exchange(data, n, step);
	if (step >= n)
		return 0;
	a = normalize(out, outlen);
	memcpy(first, out, a);
	exchange(data, n, n);
	outlen = normalize(out, outlen);
	if (a != outlen || memcmp(first, out, a) != 0) {
		fprintf(stderr, "in pieces of %zu:\n%.*s\n---- whole:\n%.*s\n",
		        step, (int)a, first, (int)outlen, out);
		__builtin_trap();
	}
	return 0;
}
