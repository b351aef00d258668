/* llmf-bench: a libevent load generator for llmfd and its peers. Keep-alive
 * HTTP/1.1 connections, one request in flight on each; closed loop (fixed
 * concurrency) or open loop (fixed rate, timer driven, latency measured from
 * the scheduled start); non-stream or SSE streams (time to first content and
 * to completion, the gap between consecutive frames, streams that lost
 * frames or stalled). Every connection and buffer is allocated at start:
 * the steady state does not call malloc. Several targets separated by
 * "--and" run at the same time on one event loop, each reported on its own:
 * whatever the host does during the run, it does to all of them. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "common/clock.h"

/* Log-linear histogram of microseconds: exact below 2048, then 1024 linear
 * sub-buckets per power of two (relative error under 0.1 %: 16 us at the
 * 20 ms gaps of a paced stream, finer than the 100 us a target reads). */
#define HIST_BITS 10
#define HIST_SUB  (1 << HIST_BITS)
#define HIST_LIN  (2 * HIST_SUB)
#define HIST_E0   (HIST_BITS + 1) /* log2(HIST_LIN) */
#define HIST_EXP  40
#define HIST_N    (HIST_LIN + (HIST_EXP - HIST_E0) * HIST_SUB)
#define RDBUF_SZ  (256 * 1024)
#define LINE_MAX_ 128
#define NSTATUS   600

struct hist {
	uint64_t n[HIST_N];
	uint64_t count, sum, min, max;
};

enum { ERR_STATUS, ERR_CONNECT, ERR_TIMEOUT, ERR_IO, ERR_PARSE, ERR_N };
static const char *const err_names[ERR_N] = {"status", "connect", "timeout",
                                             "io", "parse"};

enum {
	CS_CLOSED,
	CS_IDLE,
	CS_RETRY,
	CS_CONNECTING,
	CS_WRITING,
	CS_READING,
	CS_PAUSE
};
enum {
	P_STATUS,
	P_HEADER,
	P_BODY,
	P_CHUNK_SIZE,
	P_CHUNK_DATA,
	P_CHUNK_CRLF,
	P_TRAILER,
	P_CLOSE,
	P_DONE
};

struct opts {
	const char *unix_path, *tcp, *path, *body_file, *model, *label;
	long body_size, conns, requests;
	double rate, duration, warmup, timeout, max_gap_ms;
	double reconnect_ms; /* close a keep-alive socket about this old */
	long frames;         /* data events a stream must carry (0: any) */
	char headers[1024];  /* extra "Name: value\r\n" lines (-H) */
	int stream, json;
};

struct stats {
	struct hist lat, ttft, gap;
	/* frames stamped by the upstream ("llmf_sent_us", llmf-mock --stamp):
	 * delay from its send to our arrival, and how much longer each gap
	 * was here than at the upstream (the upstream's own pacing jitter
	 * taken out) */
	struct hist delay, gapx;
	uint64_t ok, err[ERR_N], status[NSTATUS], events;
	uint64_t short_streams, stalled; /* complete, but frames lost / gap */
	uint64_t bytes_in, bytes_out, connects, connect_retries;
};

struct bench;

/* One client connection and the request on it. */
struct conn {
	struct conn *next_idle;
	struct bench *b;
	int fd, state, pstate, measured;
	int status, chunked, keepalive, reused, resent, got_bytes;
	int ttft_done, line_data, kmp, lpos;
	int spos, sdigits; /* stamp matcher: pattern bytes matched, digits */
	int64_t sval;      /* the stamp being read */
	int64_t arrived;   /* when the current data line began, us */
	int64_t prev_sent, prev_arrived; /* the last stamped frame */
	long frames;                     /* data events of the current stream */
	struct event rev, wev, tmo;
	size_t woff, llen;
	int64_t remaining, t_start, t_deadline;
	int64_t last_frame, max_gap; /* us */
	int64_t expires;             /* --reconnect-ms: close after, us */
	uint64_t rx, tx;
	char line[LINE_MAX_];
};

/* The whole run. */
struct bench {
	struct opts o;
	struct event_base *base;
	struct event *tick, *stop_ev;
	struct sockaddr_storage ss;
	socklen_t sslen;
	char *req;
	size_t reqlen;
	struct conn *conns, *idle;
	long inflight, issued, issued_measured;
	int64_t t_begin, t_measure, t_end, t_last;
	int stopping, ended;
	const struct timeval *ctmo; /* common timeout for requests */
	struct stats st;
};

/* The targets of one run (--and), and how many have not ended yet. */
#define MAX_BENCH 16
static struct bench benches[MAX_BENCH];
static int nbench, nlive;

static const char content_pat[] = "\"content\":\"";
static const char stamp_pat[] = "\"llmf_sent_us\":";
static int content_fail[sizeof content_pat];
static char rdbuf[RDBUF_SZ];

static void conn_start(struct conn *, int64_t);
static void conn_after(struct conn *, int);
static void conn_write(struct conn *);

/* The bucket index of v microseconds. */
static int
hist_idx(uint64_t v)
{
	int e;

	if (v < HIST_LIN)
		return (int)v;
	e = 63 - __builtin_clzll(v);
	if (e >= HIST_EXP)
		return HIST_N - 1;
	return HIST_LIN + (e - HIST_E0) * HIST_SUB +
	       (int)((v >> (e - HIST_BITS)) & (HIST_SUB - 1));
}

/* The midpoint of bucket i, in microseconds. */
static double
hist_mid(int i)
{
	int e, m;
	uint64_t lo;

	if (i < HIST_LIN)
		return i;
	e = HIST_E0 + (i - HIST_LIN) / HIST_SUB;
	m = (i - HIST_LIN) % HIST_SUB;
	lo = (uint64_t)(HIST_SUB + m) << (e - HIST_BITS);
	return (double)lo + (double)((uint64_t)1 << (e - HIST_BITS)) / 2;
}

/* Record one value. */
static void
hist_add(struct hist *h, int64_t us)
{
	uint64_t v = us < 0 ? 0 : (uint64_t)us;

	h->n[hist_idx(v)]++;
	if (h->count == 0 || v < h->min)
		h->min = v;
	if (v > h->max)
		h->max = v;
	h->count++;
	h->sum += v;
}

/* The q-quantile (0..1) of h, clamped to the recorded range. */
static double
hist_q(const struct hist *h, double q)
{
	uint64_t want, cum = 0;
	double v;

	if (h->count == 0)
		return 0;
	want = (uint64_t)ceil(q * (double)h->count);
	if (want < 1)
		want = 1;
	for (int i = 0; i < HIST_N; i++) {
		if ((cum += h->n[i]) < want)
			continue;
		v = hist_mid(i);
		if (v < (double)h->min)
			v = (double)h->min;
		return v > (double)h->max ? (double)h->max : v;
	}
	return (double)h->max;
}

/* Print usage and exit 2. */
static void __attribute__((noreturn)) usage(void)
{
	fprintf(
	    stderr,
	    "usage: llmf-bench (--unix PATH | --tcp HOST:PORT) [--path P]\n"
	    "         [--body FILE | --body-size N] [--model NAME] [--stream]\n"
	    "         [-c CONNECTIONS] [--rate RPS] [-n REQUESTS | -d "
	    "SECONDS]\n"
	    "         [--warmup SECONDS] [--timeout SECONDS] [--label L] "
	    "[--json]\n"
	    "         [--frames N] [--max-gap-ms MS] [--reconnect-ms MS]\n"
	    "         [-H 'Name: value']...\n"
	    "         [--and TARGET-AND-OPTIONS...]...\n");
	exit(2);
}

/* A number argument in [lo, hi], or usage(). */
static double
arg_num(const char *s, double lo, double hi)
{
	char *end;
	double v = strtod(s, &end);

	if (end == s || *end != '\0' || v < lo || v > hi) {
		fprintf(stderr, "llmf-bench: bad number %s\n", s);
		usage();
	}
	return v;
}

/* Handle one option taking a value; 0, or -1 if name is not one. */
static int
opt_value(struct opts *o, const char *name, const char *v)
{
	if (strcmp(name, "--unix") == 0)
		o->unix_path = v;
	else if (strcmp(name, "--tcp") == 0)
		o->tcp = v;
	else if (strcmp(name, "--path") == 0)
		o->path = v;
	else if (strcmp(name, "--body") == 0)
		o->body_file = v;
	else if (strcmp(name, "--body-size") == 0)
		o->body_size = (long)arg_num(v, 0, 1 << 30);
	else if (strcmp(name, "--model") == 0)
		o->model = v;
	else if (strcmp(name, "--label") == 0)
		o->label = v;
	else if (strcmp(name, "-c") == 0)
		o->conns = (long)arg_num(v, 1, 1000000);
	else if (strcmp(name, "--rate") == 0)
		o->rate = arg_num(v, 0.001, 1e9);
	else if (strcmp(name, "-n") == 0)
		o->requests = (long)arg_num(v, 1, 1e15);
	else if (strcmp(name, "-d") == 0)
		o->duration = arg_num(v, 0.001, 1e7);
	else if (strcmp(name, "--warmup") == 0)
		o->warmup = arg_num(v, 0, 1e7);
	else if (strcmp(name, "--timeout") == 0)
		o->timeout = arg_num(v, 0.001, 1e7);
	else if (strcmp(name, "-H") == 0) {
		size_t n = strlen(o->headers);

		if (strpbrk(v, "\r\n") || n + strlen(v) + 3 > sizeof o->headers)
			usage();
		snprintf(o->headers + n, sizeof o->headers - n, "%s\r\n", v);
	} else if (strcmp(name, "--frames") == 0)
		o->frames = (long)arg_num(v, 0, 1e9);
	else if (strcmp(name, "--max-gap-ms") == 0)
		o->max_gap_ms = arg_num(v, 0.001, 1e7);
	else if (strcmp(name, "--reconnect-ms") == 0)
		o->reconnect_ms = arg_num(v, 1, 1e9);
	else
		return -1;
	return 0;
}

/* Parse the command line into o; exits 2 on a bad one. */
static void
parse_args(struct opts *o, int argc, char **argv)
{
	*o = (struct opts){.path = "/v1/chat/completions",
	                   .model = "main",
	                   .conns = 1,
	                   .timeout = 60,
	                   .max_gap_ms = 200,
	                   .body_size = -1};
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--stream") == 0)
			o->stream = 1;
		else if (strcmp(argv[i], "--json") == 0)
			o->json = 1;
		else if (i + 1 >= argc || opt_value(o, argv[i], argv[i + 1]))
			usage();
		else
			i++;
	}
	if ((o->unix_path == NULL) == (o->tcp == NULL))
		usage();
	if (o->requests == 0 && o->duration == 0)
		o->duration = 10;
}

/* Fill in the target address from --unix or --tcp; -1 on failure. */
static int
resolve_target(struct bench *b)
{
	struct addrinfo hints = {0}, *ai;
	char host[256], *colon;

	if (b->o.unix_path) {
		struct sockaddr_un *sun = (struct sockaddr_un *)&b->ss;

		if (strlen(b->o.unix_path) >= sizeof sun->sun_path)
			return -1;
		sun->sun_family = AF_UNIX;
		strcpy(sun->sun_path, b->o.unix_path);
		b->sslen = sizeof *sun;
		return 0;
	}
	snprintf(host, sizeof host, "%s", b->o.tcp);
	if ((colon = strrchr(host, ':')) == NULL)
		return -1;
	*colon = '\0';
	hints.ai_socktype = SOCK_STREAM;
	if (getaddrinfo(host, colon + 1, &hints, &ai) != 0)
		return -1;
	memcpy(&b->ss, ai->ai_addr, ai->ai_addrlen);
	b->sslen = ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
}

/* Read a whole file into a fresh buffer; NULL on failure. */
static char *
read_file(const char *path, size_t *len)
{
	struct stat sb;
	char *p;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd == -1 || fstat(fd, &sb) == -1) {
		if (fd != -1)
			close(fd);
		return NULL;
	}
	if ((p = malloc((size_t)sb.st_size + 1)) != NULL &&
	    read(fd, p, (size_t)sb.st_size) != sb.st_size) {
		free(p);
		p = NULL;
	}
	close(fd);
	*len = (size_t)sb.st_size;
	return p;
}

/* A chat request whose user message pads the body to about size bytes. */
static char *
make_body(const struct opts *o, size_t *len)
{
#define BODY_FMT                                                               \
	"{\"model\":\"%s\",%s\"messages\":[{\"role\":\"user\",\"content\":\"%" \
	"s\"}]}"
	const char *st = o->stream ? "\"stream\":true," : "";
	size_t base = strlen(BODY_FMT) + strlen(o->model) + strlen(st);
	size_t pad =
	    o->body_size > (long)base ? (size_t)o->body_size - base : 2;
	char *text = malloc(pad + 1), *body;

	if (text == NULL)
		return NULL;
	for (size_t i = 0; i < pad; i++)
		text[i] = "lorem ipsum dolor sit amet "[i % 27];
	text[pad] = '\0';
	if (o->body_size < 0)
		snprintf(text, pad + 1, "hi");
	if (asprintf(&body, BODY_FMT, o->model, st, text) == -1)
		body = NULL;
	free(text);
	*len = body ? strlen(body) : 0;
	return body;
}

/* Build the request bytes every connection sends; -1 on failure. */
static int
build_request(struct bench *b)
{
	size_t body_len;
	char *body = b->o.body_file ? read_file(b->o.body_file, &body_len)
	                            : make_body(&b->o, &body_len);
	int n;

	if (body == NULL)
		return -1;
	n = asprintf(
	    &b->req,
	    "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
	    "Accept: %s\r\n%sContent-Length: %zu\r\n\r\n%.*s",
	    b->o.path, b->o.tcp ? b->o.tcp : "localhost",
	    b->o.stream ? "text/event-stream" : "application/json",
	    b->o.headers, body_len, (int)body_len, body);
	free(body);
	if (n < 0)
		return -1;
	b->reqlen = (size_t)n;
	return 0;
}

/* KMP failure table for the content pattern. */
static void
kmp_init(void)
{
	int k = 0;

	content_fail[0] = 0;
	for (int i = 1; content_pat[i]; i++) {
		while (k > 0 && content_pat[i] != content_pat[k])
			k = content_fail[k - 1];
		if (content_pat[i] == content_pat[k])
			k++;
		content_fail[i] = k;
	}
}

/* Raise RLIMIT_NOFILE to the hard limit. */
static void
raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* Whether a new request may start now. */
static int
may_issue(const struct bench *b, int64_t now)
{
	if (b->stopping)
		return 0;
	if (b->o.duration > 0 && now >= b->t_end)
		return 0;
	return b->o.requests == 0 || now < b->t_measure ||
	       b->issued_measured < b->o.requests;
}

/* Mark b ended once nothing more will happen to it (may_issue never turns
 * true again); stop the loop when every target has. */
static void
bench_check_end(struct bench *b)
{
	if (b->ended || b->inflight > 0 || may_issue(b, clock_us()))
		return;
	b->ended = 1;
	if (--nlive == 0)
		event_base_loopbreak(b->base);
}

/* Close the socket of c, if open. */
static void
conn_close(struct conn *c)
{
	if (c->fd < 0)
		return;
	event_del(&c->rev);
	event_del(&c->wev);
	close(c->fd);
	c->fd = -1;
}

/* Reset the response parser for a new response. */
static void
conn_reset_parse(struct conn *c)
{
	c->pstate = P_STATUS;
	c->status = c->chunked = c->got_bytes = 0;
	c->keepalive = 1;
	c->remaining = -1;
	c->llen = 0;
	c->ttft_done = c->line_data = c->kmp = c->lpos = 0;
	c->frames = 0;
	c->last_frame = c->max_gap = 0;
	c->spos = c->sdigits = 0;
	c->prev_sent = c->prev_arrived = 0;
}

/* A stream ended well: did it carry every frame, without a long gap? */
static void
stream_check(struct conn *c)
{
	struct bench *b = c->b;

	if (c->frames < b->o.frames)
		b->st.short_streams++;
	if (c->max_gap > (int64_t)(b->o.max_gap_ms * 1000))
		b->st.stalled++;
}

/* Account a finished request (ok or failed) and start what comes next. */
static void
conn_finish(struct conn *c, int err)
{
	struct bench *b = c->b;
	int64_t now = clock_us();

	event_del(&c->tmo);
	if (c->fd >= 0)
		event_del(&c->wev);
	b->inflight--;
	if (b->o.reconnect_ms > 0 && now >= c->expires) /* --reconnect-ms */
		conn_close(c);
	c->state = c->fd >= 0 ? CS_IDLE : CS_CLOSED;
	c->reused = c->fd >= 0;
	c->t_deadline = 0;
	if (c->measured) {
		b->st.bytes_in += c->rx;
		b->st.bytes_out += c->tx;
		if (err >= 0)
			b->st.err[err]++;
		else {
			b->st.ok++;
			hist_add(&b->st.lat, now - c->t_start);
			if (b->o.stream)
				stream_check(c);
		}
		if (c->status > 0 && c->status < NSTATUS)
			b->st.status[c->status]++;
		b->t_last = now;
	}
	conn_after(c, err);
}

/* Fail the request on c with an error kind; drop the connection. */
static void
conn_fail(struct conn *c, int err)
{
	conn_close(c);
	conn_finish(c, err);
}

/* Pause a connection after a connect error, so a dead target does not
 * turn the closed loop into a busy loop. */
static void
conn_pause(struct conn *c)
{
	struct timeval tv = {0, 10000};

	c->state = CS_PAUSE;
	event_add(&c->tmo, &tv);
}

/* The response is complete (if the request is still being written, the
 * connection cannot be reused). */
static void
conn_done(struct conn *c)
{
	if (!c->keepalive || c->state == CS_WRITING)
		conn_close(c);
	conn_finish(c, c->status / 100 == 2 ? -1 : ERR_STATUS);
}

/* A data line began: one frame, and the gap since the last one. */
static void
sse_frame(struct conn *c)
{
	int64_t now = clock_us();

	c->frames++;
	c->b->st.events += (uint64_t)c->measured;
	if (c->last_frame) {
		if (c->measured)
			hist_add(&c->b->st.gap, now - c->last_frame);
		if (now - c->last_frame > c->max_gap)
			c->max_gap = now - c->last_frame;
	}
	c->last_frame = c->arrived = now;
}

/* A stamped frame: its delay, and its gap against the upstream's. */
static void
stamp_done(struct conn *c, int64_t sent)
{
	struct stats *s = &c->b->st;

	/* from the frame after the first content on: before it, a gateway
	 * may hold frames back on purpose (and TTFT measures that) */
	if (c->measured && c->ttft_done) {
		hist_add(&s->delay, c->arrived - sent);
		if (c->prev_sent)
			hist_add(&s->gapx, (c->arrived - c->prev_arrived) -
			                       (sent - c->prev_sent));
	}
	c->prev_sent = sent;
	c->prev_arrived = c->arrived;
}

/* One byte of a data line against "llmf_sent_us": and the digits after
 * it. The pattern's only repeated byte is its first ('"'), so a mismatch
 * restarts at 0, or at 1 on a '"'. */
static void
sse_stamp(struct conn *c, char ch)
{
	if (c->spos == (int)sizeof stamp_pat - 1) {
		if (ch >= '0' && ch <= '9' && c->sdigits < 18) {
			c->sval = c->sval * 10 + (ch - '0');
			c->sdigits++;
			return;
		}
		if (c->sdigits)
			stamp_done(c, c->sval);
		c->spos = c->sdigits = 0;
		c->sval = 0;
		return;
	}
	if (ch == stamp_pat[c->spos])
		c->spos++;
	else
		c->spos = ch == '"';
}

/* Match "data:" at the start of a line: lpos 0..4 matching, 5 a data
 * line, 6 another line. */
static void
sse_line_start(struct conn *c, char ch)
{
	if (ch != "data:"[c->lpos]) {
		c->lpos = 6;
	} else if (++c->lpos == 5) {
		c->line_data = 1;
		sse_frame(c);
	}
}

/* One byte of a data line: the first non-empty "content" is the TTFT. */
static void
sse_content(struct conn *c, char ch)
{
	if (c->kmp == (int)sizeof content_pat - 1) {
		c->kmp = 0;
		if (ch != '"') {
			c->ttft_done = 1;
			if (c->measured)
				hist_add(&c->b->st.ttft,
				         clock_us() - c->t_start);
		}
		return;
	}
	while (c->kmp > 0 && ch != content_pat[c->kmp])
		c->kmp = content_fail[c->kmp - 1];
	if (ch == content_pat[c->kmp])
		c->kmp++;
}

/* Scan de-chunked SSE bytes for data lines and the first content. */
static void
sse_scan(struct conn *c, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\n') {
			c->lpos = c->line_data = c->kmp = 0;
			c->spos = c->sdigits = 0;
			c->sval = 0;
		} else if (c->lpos < 5) {
			sse_line_start(c, p[i]);
		} else if (c->line_data) {
			sse_stamp(c, p[i]);
			if (!c->ttft_done)
				sse_content(c, p[i]);
		}
	}
}

/* Hand body bytes to the SSE scanner when streaming. */
static void
conn_body(struct conn *c, const char *p, size_t n)
{
	if (c->b->o.stream && c->status / 100 == 2)
		sse_scan(c, p, n);
}

/* Status line or header in c->line. */
static int
conn_header(struct conn *c)
{
	char *l = c->line;

	if (c->pstate == P_STATUS) {
		if (strncmp(l, "HTTP/1.", 7) != 0 || c->llen < 12)
			return -1;
		c->status = atoi(l + 9);
		c->keepalive = l[7] != '0';
		c->pstate = P_HEADER;
	} else if (strncasecmp(l, "content-length:", 15) == 0)
		c->remaining = strtoll(l + 15, NULL, 10);
	else if (strncasecmp(l, "transfer-encoding:", 18) == 0)
		c->chunked = strcasestr(l + 18, "chunked") != NULL;
	else if (strncasecmp(l, "connection:", 11) == 0)
		c->keepalive = strcasestr(l + 11, "close") == NULL;
	return 0;
}

/* Headers are in: choose how the body ends. */
static void
conn_headers_done(struct conn *c)
{
	if (c->status / 100 == 1) {
		c->pstate = P_STATUS;
		return;
	}
	if (c->status == 204 || c->status == 304 || c->remaining == 0)
		c->pstate = P_DONE;
	else if (c->chunked)
		c->pstate = P_CHUNK_SIZE;
	else if (c->remaining > 0)
		c->pstate = P_BODY;
	else {
		c->keepalive = 0;
		c->pstate = P_CLOSE;
	}
}

/* A complete line (in c->line) in a line state; -1 on a protocol error. */
static int
conn_line(struct conn *c)
{
	char *end;

	switch (c->pstate) {
	case P_STATUS:
		return conn_header(c);
	case P_HEADER:
		if (c->llen == 0)
			conn_headers_done(c);
		else
			return conn_header(c);
		return 0;
	case P_CHUNK_SIZE:
		c->remaining = strtoll(c->line, &end, 16);
		if (end == c->line || c->remaining < 0)
			return -1;
		c->pstate = c->remaining ? P_CHUNK_DATA : P_TRAILER;
		return 0;
	case P_CHUNK_CRLF:
		c->pstate = P_CHUNK_SIZE;
		return c->llen == 0 ? 0 : -1;
	case P_TRAILER:
		if (c->llen == 0)
			c->pstate = P_DONE;
		return 0;
	}
	return -1;
}

/* Accumulate one line; returns bytes used, and sets *eol at its end. */
static size_t
conn_take_line(struct conn *c, const char *p, size_t n, int *eol)
{
	const char *nl = memchr(p, '\n', n);
	size_t take = nl ? (size_t)(nl - p) + 1 : n;
	size_t copy = nl ? take - 1 : take;

	if (copy > LINE_MAX_ - 1 - c->llen)
		copy = LINE_MAX_ - 1 - c->llen;
	memcpy(c->line + c->llen, p, copy);
	c->llen += copy;
	*eol = nl != NULL;
	if (nl) {
		if (c->llen && c->line[c->llen - 1] == '\r')
			c->llen--;
		c->line[c->llen] = '\0';
	}
	return take;
}

/* Feed response bytes; 1 when complete, 0 for more, -1 on error. */
static int
conn_parse(struct conn *c, const char *p, size_t n)
{
	size_t used;
	int eol;

	while (n > 0 && c->pstate != P_DONE) {
		if (c->pstate == P_BODY || c->pstate == P_CHUNK_DATA ||
		    c->pstate == P_CLOSE) {
			used = c->pstate == P_CLOSE || (int64_t)n < c->remaining
			           ? n
			           : (size_t)c->remaining;
			conn_body(c, p, used);
			if (c->pstate != P_CLOSE &&
			    (c->remaining -= (int64_t)used) == 0)
				c->pstate =
				    c->pstate == P_BODY ? P_DONE : P_CHUNK_CRLF;
		} else {
			used = conn_take_line(c, p, n, &eol);
			if (eol) {
				if (conn_line(c) == -1)
					return -1;
				c->llen = 0;
			}
		}
		p += used;
		n -= used;
	}
	return c->pstate == P_DONE;
}

/* Reconnect and resend once when a reused keep-alive socket was stale. */
static int
conn_retry_stale(struct conn *c)
{
	if (!c->reused || c->resent || c->got_bytes)
		return 0;
	c->resent = 1;
	conn_close(c);
	c->woff = 0;
	c->tx = 0;
	conn_reset_parse(c);
	conn_start(c, c->t_start);
	return 1;
}

/* EOF or a read error on c. */
static void
conn_eof(struct conn *c, int err)
{
	if (c->state != CS_WRITING && c->state != CS_READING) {
		conn_close(c);
		if (c->state == CS_IDLE)
			c->state = CS_CLOSED;
		return;
	}
	if (err == 0 && c->pstate == P_CLOSE) {
		conn_close(c);
		conn_done(c);
		return;
	}
	if (conn_retry_stale(c))
		return;
	conn_fail(c, ERR_IO);
}

/* Readable socket: parse what arrived. */
static void
conn_read_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct conn *c = arg;
	ssize_t n;
	int rc;

	(void)ev;
	n = read(fd, rdbuf, sizeof rdbuf);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		conn_eof(c, n < 0 ? errno : 0);
		return;
	}
	if (c->state == CS_IDLE) { /* bytes while idle: drop the socket */
		conn_close(c);
		c->state = CS_CLOSED;
		return;
	}
	c->rx += (uint64_t)n;
	c->got_bytes = 1;
	if ((rc = conn_parse(c, rdbuf, (size_t)n)) == -1)
		conn_fail(c, ERR_PARSE);
	else if (rc == 1)
		conn_done(c);
}

/* Socket connected: start writing. */
static void
conn_connected(struct conn *c)
{
	struct bench *b = c->b;
	int one = 1;

	b->st.connects++;
	/* a lifetime drawn from [0.5, 1.5) x --reconnect-ms, so that the
	 * connections do not all come back at once */
	if (b->o.reconnect_ms > 0)
		c->expires =
		    clock_us() + (int64_t)(b->o.reconnect_ms * 1e3 *
		                           (0.5 + rand() / (RAND_MAX + 1.0)));
	if (b->ss.ss_family != AF_UNIX)
		setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	event_add(&c->rev, NULL);
	conn_write(c);
}

/* Writable socket: finish a connect or a partial write. */
static void
conn_write_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct conn *c = arg;
	int err = 0;
	socklen_t len = sizeof err;

	(void)ev;
	if (c->state == CS_CONNECTING) {
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1 ||
		    err != 0) {
			conn_close(c);
			conn_finish(c, ERR_CONNECT);
			return;
		}
		conn_connected(c);
		return;
	}
	conn_write(c);
}

/* Write what is left of the request. */
static void
conn_write(struct conn *c)
{
	struct bench *b = c->b;
	ssize_t n;

	c->state = CS_WRITING;
	while (c->woff < b->reqlen) {
		n = send(c->fd, b->req + c->woff, b->reqlen - c->woff,
		         MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			event_add(&c->wev, NULL);
			return;
		}
		if (n < 0) {
			if (!conn_retry_stale(c))
				conn_fail(c, ERR_IO);
			return;
		}
		c->woff += (size_t)n;
		c->tx += (uint64_t)n;
	}
	c->state = CS_READING;
}

/* Connect c; the write starts once connected. */
static void
conn_connect(struct conn *c)
{
	struct bench *b = c->b;
	struct timeval tv = {0, 2000 + rand() % 3000};

	c->fd = socket(b->ss.ss_family,
	               SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd == -1) {
		conn_finish(c, ERR_CONNECT);
		return;
	}
	event_assign(&c->rev, b->base, c->fd, EV_READ | EV_PERSIST,
	             conn_read_cb, c);
	event_assign(&c->wev, b->base, c->fd, EV_WRITE, conn_write_cb, c);
	c->reused = 0;
	if (connect(c->fd, (struct sockaddr *)&b->ss, b->sslen) == 0) {
		conn_connected(c);
	} else if (errno == EINPROGRESS) {
		c->state = CS_CONNECTING;
		event_add(&c->wev, NULL);
	} else if (errno == EAGAIN) { /* Unix socket backlog full */
		close(c->fd);
		c->fd = -1;
		c->state = CS_RETRY;
		b->st.connect_retries++;
		event_add(&c->tmo, &tv);
	} else {
		close(c->fd);
		c->fd = -1;
		conn_finish(c, ERR_CONNECT);
	}
}

/* Timer on c: request timeout, connect retry, or the end of a pause. */
static void
conn_timer_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct conn *c = arg;
	int64_t now = clock_us();

	(void)fd;
	(void)ev;
	if (c->state == CS_PAUSE) {
		c->state = CS_CLOSED;
		conn_after(c, -1);
	} else if (now >= c->t_deadline) {
		conn_fail(c, ERR_TIMEOUT);
	} else if (c->state == CS_RETRY) {
		conn_connect(c);
		if (c->state != CS_RETRY && c->t_deadline)
			event_add(&c->tmo, c->b->ctmo);
	}
}

/* Start a request on c, scheduled at t_sched (us). */
static void
conn_start(struct conn *c, int64_t t_sched)
{
	struct bench *b = c->b;

	if (!c->resent) {
		c->t_start = t_sched;
		c->measured = t_sched >= b->t_measure;
		c->rx = c->tx = 0;
		b->inflight++;
		b->issued++;
		b->issued_measured += c->measured;
	}
	c->t_deadline = clock_us() + (int64_t)(b->o.timeout * 1e6);
	c->woff = 0;
	conn_reset_parse(c);
	event_add(&c->tmo, b->ctmo);
	if (c->fd < 0)
		conn_connect(c);
	else
		conn_write(c);
}

/* Start the due open-loop requests on idle connections. */
static void
rate_dispatch(struct bench *b)
{
	int64_t now = clock_us();
	double per = 1e6 / b->o.rate;
	long due = (long)((double)(now - b->t_begin) / per) + 1;
	struct conn *c;

	while (b->issued < due && b->idle && may_issue(b, now)) {
		c = b->idle;
		b->idle = c->next_idle;
		c->resent = 0;
		conn_start(c, b->t_begin + (int64_t)((double)b->issued * per));
	}
}

/* c is free after a request that ended with err (-1: none): start its
 * next request (closed loop, after a pause if it could not connect), or
 * park it for the open-loop dispatcher. */
static void
conn_after(struct conn *c, int err)
{
	struct bench *b = c->b;

	c->resent = 0;
	if (b->o.rate > 0) {
		c->next_idle = b->idle;
		b->idle = c;
		rate_dispatch(b);
	} else if (err == ERR_CONNECT && may_issue(b, clock_us())) {
		conn_pause(c);
		return;
	} else if (may_issue(b, clock_us()))
		conn_start(c, clock_us());
	bench_check_end(b);
}

/* Open-loop timer tick. */
static void
tick_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct bench *b = arg;

	(void)fd;
	(void)ev;
	rate_dispatch(b);
	bench_check_end(b);
}

/* The -d deadline: stop issuing, wait for the rest. */
static void
stop_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct bench *b = arg;

	(void)fd;
	(void)ev;
	b->stopping = 1;
	bench_check_end(b);
}

/* SIGINT: the same for every target. */
static void
sigint_cb(evutil_socket_t fd, short ev, void *arg)
{
	(void)arg;
	for (int i = 0; i < nbench; i++)
		stop_cb(fd, ev, &benches[i]);
}

/* Allocate connections and events; -1 on failure. */
static int
bench_setup(struct bench *b, struct event_base *base)
{
	struct timeval tmo = {
	    (time_t)b->o.timeout,
	    (suseconds_t)((b->o.timeout - floor(b->o.timeout)) * 1e6)};

	b->base = base;
	b->ctmo = event_base_init_common_timeout(b->base, &tmo);
	if ((b->conns = calloc((size_t)b->o.conns, sizeof *b->conns)) == NULL)
		return -1;
	for (long i = 0; i < b->o.conns; i++) {
		struct conn *c = &b->conns[i];

		c->b = b;
		c->fd = -1;
		evtimer_assign(&c->tmo, b->base, conn_timer_cb, c);
	}
	b->stop_ev = evtimer_new(b->base, stop_cb, b);
	if (b->o.rate > 0)
		b->tick = event_new(b->base, -1, EV_PERSIST, tick_cb, b);
	return b->stop_ev ? 0 : -1;
}

/* Start the clocks and the first requests. */
static void
bench_start(struct bench *b)
{
	struct timeval tv;
	double end = b->o.warmup + b->o.duration;

	b->t_begin = clock_us();
	b->t_measure = b->t_begin + (int64_t)(b->o.warmup * 1e6);
	b->t_end = b->t_measure + (int64_t)(b->o.duration * 1e6);
	if (b->o.duration > 0) {
		tv.tv_sec = (time_t)end;
		tv.tv_usec = (suseconds_t)((end - floor(end)) * 1e6);
		event_add(b->stop_ev, &tv);
	}
	if (b->o.rate > 0) {
		tv = (struct timeval){0, 1000};
		for (long i = b->o.conns - 1; i >= 0; i--) {
			b->conns[i].next_idle = b->idle;
			b->idle = &b->conns[i];
		}
		event_add(b->tick, &tv);
		rate_dispatch(b);
		return;
	}
	for (long i = 0; i < b->o.conns && may_issue(b, clock_us()); i++)
		conn_start(&b->conns[i], clock_us());
}

/* Print one histogram as a JSON object. */
static void
json_hist(const char *name, const struct hist *h)
{
	printf(",\"%s\":{\"count\":%" PRIu64 ",\"min\":%" PRIu64
	       ",\"mean\":%.1f,\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,"
	       "\"p999\":%.1f,\"max\":%" PRIu64 "}",
	       name, h->count, h->min,
	       h->count ? (double)h->sum / (double)h->count : 0.0,
	       hist_q(h, .5), hist_q(h, .9), hist_q(h, .99), hist_q(h, .999),
	       h->max);
}

/* Seconds measured: from the end of warmup to the last completion. */
static double
bench_secs(const struct bench *b)
{
	int64_t end = b->t_last > b->t_measure ? b->t_last : clock_us();

	return (double)(end - b->t_measure) / 1e6;
}

/* The whole result as one JSON object on stdout. */
static void
report_json(const struct bench *b)
{
	const struct stats *s = &b->st;
	double secs = bench_secs(b);
	const char *sep = "";

	printf("{\"label\":\"%s\",\"target\":\"%s%s\",\"stream\":%s,"
	       "\"connections\":%ld,\"rate\":%.3f,\"request_bytes\":%zu,"
	       "\"seconds\":%.3f,\"requests\":%" PRIu64 ",\"ok\":%" PRIu64
	       ",\"rps\":%.1f",
	       b->o.label ? b->o.label : "", b->o.unix_path ? "unix:" : "tcp:",
	       b->o.unix_path ? b->o.unix_path : b->o.tcp,
	       b->o.stream ? "true" : "false", b->o.conns, b->o.rate, b->reqlen,
	       secs,
	       s->ok + s->err[0] + s->err[1] + s->err[2] + s->err[3] +
	           s->err[4],
	       s->ok, secs > 0 ? (double)s->ok / secs : 0);
	json_hist("latency_us", &s->lat);
	if (b->o.stream) {
		json_hist("ttft_us", &s->ttft);
		json_hist("gap_us", &s->gap);
		if (s->delay.count) {
			json_hist("frame_delay_us", &s->delay);
			json_hist("gap_excess_us", &s->gapx);
		}
		printf(",\"frames_short\":%" PRIu64 ",\"stalled\":%" PRIu64,
		       s->short_streams, s->stalled);
	}
	printf(",\"errors\":{");
	for (int i = 0; i < ERR_N; i++)
		printf("%s\"%s\":%" PRIu64, i ? "," : "", err_names[i],
		       s->err[i]);
	printf("},\"status\":{");
	for (int i = 0; i < NSTATUS; i++)
		if (s->status[i]) {
			printf("%s\"%d\":%" PRIu64, sep, i, s->status[i]);
			sep = ",";
		}
	printf("},\"sse_events\":%" PRIu64 ",\"bytes_in\":%" PRIu64
	       ",\"bytes_out\":%" PRIu64 ",\"connects\":%" PRIu64
	       ",\"connect_retries\":%" PRIu64 "}\n",
	       s->events, s->bytes_in, s->bytes_out, s->connects,
	       s->connect_retries);
}

/* Print one histogram as a human line. */
static void
human_hist(const char *name, const struct hist *h)
{
	printf("%-8s p50 %9.1f  p90 %9.1f  p99 %9.1f  p99.9 %9.1f  "
	       "max %9" PRIu64 " us\n",
	       name, hist_q(h, .5), hist_q(h, .9), hist_q(h, .99),
	       hist_q(h, .999), h->max);
}

/* The human summary on stdout. */
static void
report_human(const struct bench *b)
{
	const struct stats *s = &b->st;
	double secs = bench_secs(b);

	printf("%s%s%s -> %s%s, %ld connection%s%s, %zu-byte requests%s\n",
	       b->o.label ? "[" : "", b->o.label ? b->o.label : "",
	       b->o.label ? "] " : "", b->o.unix_path ? "unix:" : "tcp:",
	       b->o.unix_path ? b->o.unix_path : b->o.tcp, b->o.conns,
	       b->o.conns == 1 ? "" : "s", b->o.rate > 0 ? ", open loop" : "",
	       b->reqlen, b->o.stream ? ", streaming" : "");
	printf("%" PRIu64 " ok in %.2f s = %.1f req/s; %.1f MB in, "
	       "%.1f MB out\n",
	       s->ok, secs, secs > 0 ? (double)s->ok / secs : 0,
	       (double)s->bytes_in / 1e6, (double)s->bytes_out / 1e6);
	human_hist("latency", &s->lat);
	if (b->o.stream) {
		human_hist("ttft", &s->ttft);
		human_hist("gap", &s->gap);
		if (s->delay.count) {
			human_hist("delay", &s->delay);
			human_hist("gap+", &s->gapx);
		}
		printf("streams short of %ld frames: %" PRIu64
		       "; with a gap over %.0f ms: %" PRIu64 "\n",
		       b->o.frames, s->short_streams, b->o.max_gap_ms,
		       s->stalled);
	}
	printf("errors: status %" PRIu64 ", connect %" PRIu64
	       ", timeout %" PRIu64 ", io %" PRIu64 ", parse %" PRIu64 "\n",
	       s->err[ERR_STATUS], s->err[ERR_CONNECT], s->err[ERR_TIMEOUT],
	       s->err[ERR_IO], s->err[ERR_PARSE]);
}

/* Release everything. */
static void
bench_free(struct bench *b)
{
	for (long i = 0; b->conns && i < b->o.conns; i++) {
		conn_close(&b->conns[i]);
		event_del(&b->conns[i].tmo);
	}
	if (b->tick)
		event_free(b->tick);
	if (b->stop_ev)
		event_free(b->stop_ev);
	free(b->conns);
	free(b->req);
}

/* Split the command line at each "--and" into the targets' options; exits
 * 2 on a bad one. */
static void
parse_targets(int argc, char **argv)
{
	static char *seg[1024];
	int from = 1;

	if (argc > (int)(sizeof seg / sizeof seg[0]))
		usage();
	for (int i = 1; i <= argc; i++) {
		int n = 0;

		if (i < argc && strcmp(argv[i], "--and") != 0)
			continue;
		if (nbench == MAX_BENCH)
			usage();
		seg[n++] = argv[0];
		for (int k = from; k < i; k++)
			seg[n++] = argv[k];
		parse_args(&benches[nbench++].o, n, seg);
		from = i + 1;
	}
}

/* Run the benchmark described by the command line. */
int
main(int argc, char **argv)
{
	struct event_base *base;
	struct event *sigint;
	int rc = 0;

	parse_targets(argc, argv);
	raise_nofile();
	kmp_init();
	srand((unsigned)getpid());
	if ((base = event_base_new()) == NULL ||
	    (sigint = evsignal_new(base, SIGINT, sigint_cb, NULL)) == NULL) {
		fprintf(stderr, "llmf-bench: out of memory\n");
		return 1;
	}
	for (int i = 0; i < nbench; i++) {
		if (resolve_target(&benches[i]) == -1 ||
		    build_request(&benches[i]) == -1) {
			fprintf(stderr, "llmf-bench: bad target or body\n");
			return 2;
		}
		if (bench_setup(&benches[i], base) == -1) {
			fprintf(stderr, "llmf-bench: out of memory\n");
			return 1;
		}
	}
	nlive = nbench;
	event_add(sigint, NULL);
	for (int i = 0; i < nbench; i++)
		bench_start(&benches[i]);
	for (int i = 0; i < nbench; i++)
		bench_check_end(&benches[i]);
	/* everything may have ended already (targets that refuse every
	 * connect): a loopbreak before the loop runs is forgotten by it */
	if (nlive > 0)
		event_base_dispatch(base);
	for (int i = 0; i < nbench; i++) {
		struct bench *b = &benches[i];

		if (b->o.json)
			report_json(b);
		else
			report_human(b);
		if (b->st.ok == 0)
			rc = 1;
		bench_free(b);
	}
	event_free(sigint);
	event_base_free(base);
	return rc;
}
