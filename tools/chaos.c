/* llmf-chaos: a bounded soak of llmfd under random upstream faults and
 * client-side abuse at once (issue 19). It starts three llmf-mock upstreams
 * that draw random faults, a healthy one for latency probes and a slow one,
 * and llmfd in a temp dir (Unix socket, lowered RLIMIT_NOFILE); then, on one
 * libevent loop: keep-alive clients whose every reply is judged (complete,
 * a reported failure, or a truncation), a probe connection timing normal
 * requests, the abuses (each switchable), and SIGHUP reloads. It samples
 * the workers' RSS and CPU from /proc, prints the figures and one pass/fail
 * line per check, and stops every process it started by PID, also on error
 * or interrupt. docs/chaos.md describes the run. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "common/buf.h"
#include "common/clock.h"
#include "common/json.h"
#include "common/sse.h"

#define RESP_BODY_CAP (1 << 20)  /* body bytes kept for judging */
#define RESP_LINE_CAP (64 << 10) /* longest status or header line */
#define FLOOD_BLOCK   (64 << 10) /* repeated block of a flood */
#define MAX_STATUS    600
#define ENDLESS_BYTES (32ULL << 20) /* never-ending header block, per conn */
#define KEEPSEND_CAP  (64ULL << 20) /* sent after a complete request */
#define BIGBODY_CAP   (40ULL << 20) /* body past llmfd's 32 MiB limit */
#define BIGHDR_BYTES  (1 << 20)
#define MANY_HEADERS  100000
#define FOLD_LINES    200000
#define SLOW_HOLD_MS  1000 /* one header byte per second */
#define IDLE_HOLD_MS  4000 /* idle burst: held, then released as long */
#define PRIME_HOLD_MS 1000 /* warm-up: the connection count, held once */
#define PROBE_BAR_MS  50
#define RSS_BAR       0.20
#define LOG_SHOW      5
#define LOG_TRIM      (32 << 20) /* the daemon's log is cut past this */

/* Abuse switches (--only / --without). */
enum {
	A_FAULTS,
	A_RELOAD,
	A_SLOW,
	A_ENDLESS,
	A_BIGHDR,
	A_OBSFOLD,
	A_KEEPSEND,
	A_DISCONNECT,
	A_IDLE,
	A_BIGBODY,
	A_CONNECT,
	A_HTTP10,
	A_N
};

static const char *const abuse_names[A_N] = {
    "faults",   "reload",     "slow", "endless", "bighdr",  "obsfold",
    "keepsend", "disconnect", "idle", "bigbody", "connect", "http10"};

static const char *const abuse_help[A_N] = {
    "upstream faults: each fault mock redrawn every --fault-ms "
    "(random mode, 20-30 % of requests)",
    "SIGHUP every --reload-ms during the first half of the soak",
    "--slow-conns connections sending one header byte per second",
    "2 connections sending a header block that never ends (32 MiB each)",
    "a 1 MiB header and 100,000 headers, every 2 s",
    "200,000 obs-fold continuation lines, every 2 s",
    "2 clients that keep sending after their request (64 MiB each)",
    "4 clients hanging up mid-header, mid-body, waiting, mid-stream",
    "--idle-conns idle connections, held 4 s, released 4 s",
    "Content-Length past the 32 MiB limit; a chunked body past it",
    "a CONNECT request every second",
    "HTTP/1.0 keep-alive streams, then a second request"};

/* Connection kinds. */
enum kind {
	K_NORMAL,
	K_PRIME,
	K_CTL,
	K_SLOW,
	K_ENDLESS,
	K_BIGHDR,
	K_MANYHDR,
	K_OBSFOLD,
	K_KEEPSEND,
	K_DISCONNECT,
	K_IDLE,
	K_BIGBODY,
	K_CHUNKED,
	K_CONNECT,
	K_HTTP10,
	K_N
};

struct kdef {
	const char *name;
	int abuse;       /* A_* that enables it; -1: always on */
	int conns;       /* connections; 0: from the options */
	int period_ms;   /* pause between rounds; -1: one round per trigger */
	int deadline_ms; /* an answer is due within this; 0: none */
	int retry_ms;    /* pause after a failed connect */
};

static const struct kdef kdefs[K_N] = {
    [K_NORMAL] = {"normal", -1, 0, 0, 0, 20},
    [K_PRIME] = {"prime", -1, 0, -1, 0, 200},
    [K_CTL] = {"mock-config", A_FAULTS, 3, -1, 5000, 100},
    [K_SLOW] = {"slow-header", A_SLOW, 0, 1000, 0, 200},
    [K_ENDLESS] = {"endless-header", A_ENDLESS, 2, 500, 30000, 200},
    [K_BIGHDR] = {"1MiB-header", A_BIGHDR, 1, 2000, 10000, 200},
    [K_MANYHDR] = {"100k-headers", A_BIGHDR, 1, 2000, 10000, 200},
    [K_OBSFOLD] = {"obs-fold", A_OBSFOLD, 1, 2000, 20000, 200},
    [K_KEEPSEND] = {"keep-sending", A_KEEPSEND, 2, 100, 10000, 200},
    [K_DISCONNECT] = {"disconnect", A_DISCONNECT, 4, 20, 10000, 50},
    [K_IDLE] = {"idle-burst", A_IDLE, 0, IDLE_HOLD_MS, 0, 200},
    [K_BIGBODY] = {"CL-past-limit", A_BIGBODY, 1, 2000, 10000, 200},
    [K_CHUNKED] = {"chunked-past-limit", A_BIGBODY, 1, 2000, 10000, 200},
    [K_CONNECT] = {"CONNECT", A_CONNECT, 1, 1000, 10000, 200},
    [K_HTTP10] = {"1.0-keepalive-stream", A_HTTP10, 1, 1000, 10000, 200},
};

/* Judgements of a normal reply; J_STREAM_CUT and later are truncations. */
enum {
	J_COMPLETE,
	J_REPORTED,     /* an OpenAI-shaped error reply */
	J_STREAM_ERROR, /* a stream ended by an error event */
	J_NOANSWER,     /* connection closed before any byte */
	J_NOCONNECT,    /* no connection within --hang-ms */
	J_HANG,         /* nothing complete within --hang-ms */
	J_STREAM_CUT,   /* a stream without [DONE] or an error event */
	J_REPLY_CUT,    /* a reply whose framing did not finish */
	J_BAD_JSON,     /* a 200 that is not a completion */
	J_BAD_EVENT,    /* a stream event whose data is not JSON */
	J_BAD_ERROR,    /* an error reply that is not OpenAI-shaped JSON */
	J_N
};

static const char *const judge_names[J_N] = {"complete",
                                             "reported error",
                                             "stream error event",
                                             "closed unanswered",
                                             "could not connect",
                                             "hung",
                                             "stream cut",
                                             "reply cut",
                                             "200 not a completion",
                                             "invalid stream event",
                                             "error not JSON"};

/* How an abuse round ended. */
enum {
	E_ANSWERED,
	E_CLOSED,  /* the server closed without answering */
	E_TIMEOUT, /* no answer by the kind's deadline */
	E_CAP,     /* we sent all we meant to and gave up */
	E_CUT,     /* we hung up on purpose */
	E_N
};

/* Response parser states. */
enum {
	R_STATUS,
	R_HEADER,
	R_BODY,
	R_CSIZE,
	R_CDATA,
	R_CEND,
	R_TRAILER,
	R_EOF,
	R_DONE,
	R_ERROR
};

/* Connection states. */
enum { S_OFF, S_WAIT, S_RETRY, S_ACTIVE };

/* Run phases. */
enum { P_SETUP, P_WARMUP, P_SOAK, P_SETTLE, P_DRAIN, P_END };

/* Disconnect plans. */
enum { D_MIDHEAD, D_NOBODY, D_MIDBODY, D_WAITING, D_STREAMING, D_N };

/* Fault modes the fault mocks draw from. */
#define NMODES 9
static const char *const fault_modes[NMODES] = {
    "status", "hang",  "close",   "garbage",  "stream-error",
    "cut",    "stall", "no-done", "bad-chunk"};

/* Mocks. */
enum { M_FA, M_FB, M_FC, M_PROBE, M_SLOW, M_N };
static const char *const mock_names[M_N] = {"fault-a", "fault-b", "fault-c",
                                            "probe", "slow"};

/* An incremental HTTP/1.x response parser. */
struct resp {
	int state, status, minor, chunked, close, sse, overflow;
	int64_t clen, left, t_first;
	struct buf line, body;
	uint64_t got, extra;
};

/* The probe: normal requests to the healthy "probe" deployment on a keep-
 * alive connection of their own, from a thread of their own, so that the
 * abuse loop's work never delays the measurement. */
struct probe {
	pthread_t th;
	atomic_int run, record;
	const char *sock;
	int interval_ms, hang_ms, fd, reused;
	struct resp rp;
	int64_t *lat; /* latencies while recording, us; INT64_MAX: failed */
	size_t nlat, cap;
	int64_t max_us; /* slowest probe, failed ones included */
	uint64_t fail[J_N];
};

struct chaos;

/* One client connection and the round it is playing. */
struct cc {
	struct chaos *ch;
	int kind, idx, fd, state, connecting;
	struct event rev, wev, dl, tm;
	struct resp rp;
	struct buf out;
	const char *wp; /* bytes to send: wp[woff..wlen) */
	size_t wlen, woff;
	const char *fl; /* then a flood: fl repeated, fl_left bytes more */
	size_t fl_sz, fl_off;
	uint64_t fl_left;
	int64_t t_start, t_us; /* round start, ms and us */
	int stream, reused, resend, sent, plan, step, wdead;
};

struct kstat {
	uint64_t rounds, end[E_N], connfail, anomalies, open, open_peak;
	uint64_t open_end; /* still open when the soak ended */
	uint64_t status[MAX_STATUS], sent;
	int64_t max_ms; /* slowest first answer byte, or longest life */
};

struct nstat {
	uint64_t requests, streams, judged[J_N];
	uint64_t status[MAX_STATUS];
};

struct wproc {
	pid_t pid;
	uint64_t ticks, rss;
	int live;
};

struct opts {
	const char *build, *daemon_set;
	int seconds, warmup, settle, workers, nofile, clients, slow_conns;
	int idle_conns, probe_ms, reload_ms, fault_ms, hang_ms, keep;
	unsigned abuses;
	uint64_t seed;
};

/* The whole run. */
struct chaos {
	struct opts o;
	struct event_base *base;
	char dir[80], sock[108], conf[128], log[128];
	pid_t master, mocks[M_N];
	int mock_port[M_N], phase, soak_s;
	int64_t t_begin, t_soak;
	struct cc *cc;
	int ncc;
	struct event *ev_phase, *ev_reload, *ev_fault, *ev_sample, *ev_cap;
	struct event *ev_int, *ev_term;
	struct nstat ns;
	struct kstat ks[K_N];
	struct probe pr;
	uint64_t reloads, faults_set, faults_failed, faults_refused[NMODES];
	struct wproc *w;
	size_t nw, wcap;
	uint64_t rss_before, rss_peak, rss_after, rss_peak_one;
	int master_dead, master_status, interrupted, overran, daemon_exit;
	int mock_dead;
	uint64_t log_bytes, log_lines_n, log_killed, log_drain_timeout;
	uint64_t log_off, log_trims, log_killed_soak;
	char log_lines[LOG_SHOW][256];
};

/* Prebuilt request texts and flood blocks. */
static struct buf req_slow, req_bighdr, req_manyhdr, req_obsfold, req_connect;
static struct buf req_keepsend, req_bigbody, req_chunked, req_endless;
static struct buf junk_hdr, junk_body, junk_chunk;

static struct chaos *the_chaos; /* for die() */
static uint64_t rng_state = 88172645463325252ULL;

static void cc_round(struct cc *);
static void cc_try_connect(struct cc *);
static void cc_flush(struct cc *);
static void kind_begin(struct cc *);
static void kind_answer(struct cc *);
static void procs_stop(struct chaos *);
static int is_abuse(int);
static void log_poll(struct chaos *);
static void dir_remove(const char *);

/* A pseudo-random number below n (xorshift64). */
static uint32_t
rnd(uint32_t n)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return n ? (uint32_t)(rng_state % n) : 0;
}

/* Print a setup error, stop what was started, remove the dir, exit 2. */
static void __attribute__((noreturn, format(printf, 1, 2)))
die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "llmf-chaos: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	if (the_chaos != NULL) {
		procs_stop(the_chaos);
		if (the_chaos->dir[0] && !the_chaos->o.keep)
			dir_remove(the_chaos->dir);
	}
	exit(2);
}

/* Reset the parser for a new response. */
static void
resp_reset(struct resp *r)
{
	buf_reset(&r->line);
	buf_reset(&r->body);
	r->state = R_STATUS;
	r->status = r->minor = r->chunked = r->close = r->sse = 0;
	r->overflow = 0;
	r->clen = -1;
	r->left = r->t_first = 0;
	r->got = r->extra = 0;
}

/* Keep body bytes, at most RESP_BODY_CAP of them. */
static void
resp_body(struct resp *r, const char *p, size_t n)
{
	if (r->body.len + n > RESP_BODY_CAP) {
		r->overflow = 1;
		n = RESP_BODY_CAP - r->body.len;
	}
	buf_add(&r->body, p, n);
}

/* One header line l (NUL-terminated, no CRLF). */
static void
resp_header(struct resp *r, char *l)
{
	char *v = strchr(l, ':');

	if (v == NULL) {
		r->state = R_ERROR;
		return;
	}
	*v++ = '\0';
	v += strspn(v, " \t");
	if (strcasecmp(l, "content-length") == 0)
		r->clen = strtoll(v, NULL, 10);
	else if (strcasecmp(l, "transfer-encoding") == 0)
		r->chunked = strcasestr(v, "chunked") != NULL;
	else if (strcasecmp(l, "connection") == 0) {
		if (strcasestr(v, "close") != NULL)
			r->close = 1;
		else if (strcasestr(v, "keep-alive") != NULL)
			r->close = 0;
	} else if (strcasecmp(l, "content-type") == 0)
		r->sse = strcasestr(v, "text/event-stream") != NULL;
}

/* The blank line after the headers: choose how the body is framed. */
static void
resp_head_done(struct resp *r)
{
	if (r->status < 200) {
		r->state = R_STATUS;
		r->clen = -1;
		r->chunked = r->close = r->sse = 0;
	} else if (r->status == 204 || r->status == 304)
		r->state = R_DONE;
	else if (r->chunked)
		r->state = R_CSIZE;
	else if (r->clen >= 0) {
		r->left = r->clen;
		r->state = r->clen ? R_BODY : R_DONE;
	} else
		r->state = R_EOF;
}

/* A whole line in a line-oriented state. */
static void
resp_line(struct resp *r)
{
	char *l, *e;
	size_t n;
	unsigned long long sz;

	if (buf_addc(&r->line, '\0') == -1) {
		r->state = R_ERROR;
		return;
	}
	l = r->line.data;
	n = --r->line.len;
	if (n && l[n - 1] == '\r')
		l[--n] = '\0';
	switch (r->state) {
	case R_STATUS:
		if (sscanf(l, "HTTP/1.%d %d", &r->minor, &r->status) != 2 ||
		    r->status < 100 || r->status >= MAX_STATUS)
			r->state = R_ERROR;
		else {
			r->state = R_HEADER;
			r->close = r->minor == 0;
		}
		break;
	case R_HEADER:
		if (n == 0)
			resp_head_done(r);
		else
			resp_header(r, l);
		break;
	case R_CSIZE:
		sz = strtoull(l, &e, 16);
		if (e == l)
			r->state = R_ERROR;
		else if (sz == 0)
			r->state = R_TRAILER;
		else {
			r->left = (int64_t)sz;
			r->state = R_CDATA;
		}
		break;
	case R_CEND:
		r->state = n == 0 ? R_CSIZE : R_ERROR;
		break;
	case R_TRAILER:
		if (n == 0)
			r->state = R_DONE;
		break;
	}
	buf_reset(&r->line);
}

/* Feed received bytes; returns the state after them. */
static int
resp_feed(struct resp *r, const char *p, size_t n)
{
	const char *nl;
	size_t k;

	if (n && !r->got)
		r->t_first = clock_ms();
	r->got += n;
	while (n > 0 && r->state != R_ERROR) {
		switch (r->state) {
		case R_DONE:
			r->extra += n;
			return R_DONE;
		case R_BODY:
		case R_CDATA:
			k = n < (uint64_t)r->left ? n : (size_t)r->left;
			resp_body(r, p, k);
			r->left -= (int64_t)k;
			if (r->left == 0)
				r->state = r->state == R_BODY ? R_DONE : R_CEND;
			break;
		case R_EOF:
			resp_body(r, p, n);
			k = n;
			break;
		default:
			nl = memchr(p, '\n', n);
			k = nl ? (size_t)(nl - p) + 1 : n;
			if (r->line.len + k > RESP_LINE_CAP) {
				r->state = R_ERROR;
				return R_ERROR;
			}
			buf_add(&r->line, p, nl ? k - 1 : k);
			if (nl)
				resp_line(r);
		}
		p += k;
		n -= k;
	}
	return r->state;
}

/* The connection ended: a close-delimited body is now complete. */
static int
resp_eof(struct resp *r)
{
	if (r->state == R_EOF)
		r->state = R_DONE;
	return r->state;
}

/* What a stream's events said. */
struct sse_check {
	int done, last_error, bad;
};

/* One SSE event of a normal stream. */
static int
sse_check_cb(void *arg, const char *ev, size_t elen, const char *data,
             size_t dlen)
{
	struct sse_check *s = arg;
	struct json j = {0};

	(void)ev;
	(void)elen;
	s->last_error = 0;
	if (dlen == 6 && memcmp(data, "[DONE]", 6) == 0) {
		s->done = 1;
		return 0;
	}
	if (json_parse(&j, data, dlen) == -1)
		s->bad++;
	else if (json_type(&j, json_get(&j, 0, "error")) == JSMN_OBJECT)
		s->last_error = 1;
	json_free(&j);
	return 0;
}

/* Judge a streamed reply: [DONE], an error event last, or cut. */
static int
judge_stream(const struct resp *r)
{
	struct sse s = {0};
	struct sse_check k = {0};

	sse_feed(&s, r->body.data ? r->body.data : "", r->body.len,
	         sse_check_cb, &k);
	sse_free(&s);
	if (k.bad)
		return J_BAD_EVENT;
	if (k.done)
		return J_COMPLETE;
	return k.last_error ? J_STREAM_ERROR : J_STREAM_CUT;
}

/* Judge a normal reply whose message framing finished (framed) or not. */
static int
judge(const struct resp *r, int stream, int framed)
{
	struct json j = {0};
	int v, rc;

	if (stream && r->status == 200 && r->sse)
		return judge_stream(r);
	if (!framed)
		return J_REPLY_CUT;
	if (r->overflow || json_parse(&j, r->body.data ? r->body.data : "",
	                              r->body.len) == -1) {
		json_free(&j);
		return r->status == 200 ? J_BAD_JSON : J_BAD_ERROR;
	}
	if (r->status == 200) {
		v = json_get(&j, 0, "choices");
		rc = json_type(&j, v) == JSMN_ARRAY && json_size(&j, v) > 0
		         ? J_COMPLETE
		         : J_BAD_JSON;
	} else {
		v = json_get(&j, 0, "error");
		rc = json_type(&j, v) == JSMN_OBJECT &&
		             json_get(&j, v, "message") != -1
		         ? J_REPORTED
		         : J_BAD_ERROR;
	}
	json_free(&j);
	return rc;
}

/* Canned replies and how the judge must call them (--self-test, and
 * before every run): a checker that misses a cut would report 0
 * truncations for the wrong reason. */
static const struct {
	const char *name;
	int stream, want;
	const char *wire;
} self_cases[] = {
    {"completion", 0, J_COMPLETE,
     "HTTP/1.1 200 OK\r\nContent-Length: 21\r\n\r\n"
     "{\"choices\":[{\"a\":1}]}"},
    {"completion, chunked", 0, J_COMPLETE,
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
     "5\r\n{\"cho\r\n10\r\nices\":[{\"a\":1}]}\r\n0\r\n\r\n"},
    {"completion, close-delimited", 0, J_COMPLETE,
     "HTTP/1.1 200 OK\r\n\r\n{\"choices\":[{\"a\":1}]}"},
    {"completion after 100 Continue", 0, J_COMPLETE,
     "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"
     "Content-Length: 21\r\n\r\n{\"choices\":[{\"a\":1}]}"},
    {"completion cut short", 0, J_REPLY_CUT,
     "HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n{\"choices\":[{"},
    {"200 without choices", 0, J_BAD_JSON,
     "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"},
    {"OpenAI error", 0, J_REPORTED,
     "HTTP/1.1 503 x\r\nContent-Length: 25\r\n\r\n"
     "{\"error\":{\"message\":\"m\"}}"},
    {"HTML error", 0, J_BAD_ERROR,
     "HTTP/1.1 413 x\r\nContent-Length: 13\r\n\r\n<html></html>"},
    {"stream to [DONE]", 1, J_COMPLETE,
     "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
     "Transfer-Encoding: chunked\r\n\r\n"
     "f\r\ndata: {\"a\":1}\n\n\r\ne\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"},
    {"stream ended by an error event", 1, J_STREAM_ERROR,
     "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
     "Transfer-Encoding: chunked\r\n\r\n"
     "f\r\ndata: {\"a\":1}\n\n\r\n"
     "21\r\ndata: {\"error\":{\"message\":\"m\"}}\n\n\r\n0\r\n\r\n"},
    {"stream cut mid-chunk", 1, J_STREAM_CUT,
     "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
     "Transfer-Encoding: chunked\r\n\r\n"
     "f\r\ndata: {\"a\":1}\n\n\r\n40\r\ndata: {\"a\""},
    {"stream ended cleanly without [DONE]", 1, J_STREAM_CUT,
     "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
     "Transfer-Encoding: chunked\r\n\r\n"
     "f\r\ndata: {\"a\":1}\n\n\r\n0\r\n\r\n"},
    {"stream with an invalid event", 1, J_BAD_EVENT,
     "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
     "data: {\"a\":\n\ndata: [DONE]\n\n"},
    {"stream request answered with an error", 1, J_REPORTED,
     "HTTP/1.1 429 x\r\nContent-Length: 25\r\n\r\n"
     "{\"error\":{\"message\":\"m\"}}"},
};

/* Judge wire fed in pieces of step bytes (0: whole), then EOF. */
static int
self_judge(const char *wire, int stream, size_t step)
{
	struct resp r = {0};
	size_t len = strlen(wire), n;
	int j;

	resp_reset(&r);
	for (size_t off = 0; off < len; off += n) {
		n = step && step < len - off ? step : len - off;
		if (resp_feed(&r, wire + off, n) >= R_DONE)
			break;
	}
	j = judge(&r, stream, resp_eof(&r) == R_DONE);
	buf_free(&r.line);
	buf_free(&r.body);
	return j;
}

/* Check the reply parser and the judge on the canned replies, whole and
 * byte by byte; prints failures and returns how many. */
static int
self_test(int verbose)
{
	int fail = 0, pass = 0, j;

	for (size_t i = 0; i < sizeof self_cases / sizeof *self_cases; i++)
		for (size_t step = 0; step <= 1; step++) {
			j = self_judge(self_cases[i].wire, self_cases[i].stream,
			               step);
			if (j == self_cases[i].want) {
				pass++;
				continue;
			}
			fail++;
			fprintf(stderr,
			        "llmf-chaos: self-test: %s%s: judged \"%s\", "
			        "want \"%s\"\n",
			        self_cases[i].name,
			        step ? " (byte by byte)" : "", judge_names[j],
			        judge_names[self_cases[i].want]);
		}
	if (verbose)
		printf("self-test: %d passed, %d failed\n", pass, fail);
	return fail;
}

/* Wait until fd is ready for events or deadline (us) passes: 1 ready,
 * 0 timed out. */
static int
probe_wait(int fd, short events, int64_t deadline)
{
	struct pollfd pf = {.fd = fd, .events = events};
	int64_t left = deadline - clock_us();

	if (left <= 0)
		return 0;
	return poll(&pf, 1, (int)((left + 999) / 1000)) > 0 ? 1 : 0;
}

/* Open the probe's connection, retrying a full backlog until deadline. */
static int
probe_connect(struct probe *p, int64_t deadline)
{
	struct sockaddr_un su = {.sun_family = AF_UNIX};

	snprintf(su.sun_path, sizeof su.sun_path, "%s", p->sock);
	while (clock_us() < deadline) {
		p->fd = socket(AF_UNIX,
		               SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (p->fd == -1)
			return -1;
		if (connect(p->fd, (struct sockaddr *)&su, sizeof su) == 0) {
			p->reused = 0;
			return 0;
		}
		close(p->fd);
		p->fd = -1;
		usleep(2000);
	}
	return -1;
}

/* Close the probe's connection. */
static void
probe_close(struct probe *p)
{
	if (p->fd >= 0)
		close(p->fd);
	p->fd = -1;
}

/* Send req and read the whole reply by deadline: the parser's state, or
 * -1 if the deadline passed. */
static int
probe_exchange(struct probe *p, const char *req, size_t len, int64_t deadline)
{
	char buf[16384];
	size_t off = 0;
	ssize_t n;

	resp_reset(&p->rp);
	while (off < len) {
		if (!probe_wait(p->fd, POLLOUT, deadline))
			return -1;
		if ((n = send(p->fd, req + off, len - off, MSG_NOSIGNAL)) < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			return resp_eof(&p->rp);
		}
		off += (size_t)n;
	}
	for (;;) {
		if (!probe_wait(p->fd, POLLIN, deadline))
			return -1;
		if ((n = read(p->fd, buf, sizeof buf)) < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			return resp_eof(&p->rp);
		}
		if (n == 0)
			return resp_eof(&p->rp);
		if (resp_feed(&p->rp, buf, (size_t)n) >= R_DONE)
			return p->rp.state;
	}
}

/* One probe request by deadline; its judgement. A reused connection the
 * server closed before answering is retried once on a new one. */
static int
probe_once(struct probe *p, const char *req, size_t len, int64_t deadline)
{
	int st, j;

	for (int tries = 0; tries < 2; tries++) {
		if (p->fd < 0 && probe_connect(p, deadline) == -1)
			return J_NOCONNECT;
		if ((st = probe_exchange(p, req, len, deadline)) == -1) {
			probe_close(p);
			return J_HANG;
		}
		if (!p->rp.got && p->reused && tries == 0) {
			probe_close(p);
			continue;
		}
		j = p->rp.got ? judge(&p->rp, 0, st == R_DONE) : J_NOANSWER;
		if (st == R_DONE && !p->rp.close)
			p->reused++;
		else
			probe_close(p);
		return j;
	}
	return J_NOANSWER;
}

/* Keep a probe latency (a failed probe counts as never answered). */
static void
probe_record(struct probe *p, int j, int64_t us)
{
	if (us > p->max_us)
		p->max_us = us;
	if (j != J_COMPLETE) {
		p->fail[j]++;
		us = INT64_MAX;
	}
	if (p->nlat == p->cap) {
		size_t n = p->cap ? p->cap * 2 : 4096;
		int64_t *v = realloc(p->lat, n * sizeof *v);

		if (v == NULL)
			return;
		p->lat = v;
		p->cap = n;
	}
	p->lat[p->nlat++] = us;
}

/* The probe thread: a request every interval_ms until told to stop. */
static void *
probe_main(void *arg)
{
	static const char body[] = "{\"model\":\"probe\",\"messages\":[{"
	                           "\"role\":\"user\",\"content\":\"hi\"}]}";
	struct probe *p = arg;
	struct timespec gap = {p->interval_ms / 1000,
	                       (p->interval_ms % 1000) * 1000000L};
	char req[512];
	int len, j;
	int64_t t0;

	len = snprintf(req, sizeof req,
	               "POST /v1/chat/completions HTTP/1.1\r\nHost: llmfd\r\n"
	               "Content-Type: application/json\r\n"
	               "Content-Length: %zu\r\n\r\n%s",
	               sizeof body - 1, body);
	while (atomic_load(&p->run)) {
		t0 = clock_us();
		j = probe_once(p, req, (size_t)len,
		               t0 + (int64_t)p->hang_ms * 1000);
		if (atomic_load(&p->record))
			probe_record(p, j, clock_us() - t0);
		nanosleep(&gap, NULL);
	}
	probe_close(p);
	return NULL;
}

/* Start the probe thread (signals stay with the main thread). */
static void
probe_start(struct chaos *ch)
{
	struct probe *p = &ch->pr;
	sigset_t all, old;

	p->sock = ch->sock;
	p->interval_ms = ch->o.probe_ms;
	p->hang_ms = ch->o.hang_ms;
	p->fd = -1;
	atomic_store(&p->run, 1);
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	if (pthread_create(&p->th, NULL, probe_main, p) != 0)
		die("pthread_create failed");
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* Stop the probe thread and wait for it (at most --hang-ms). */
static void
probe_stop(struct chaos *ch)
{
	atomic_store(&ch->pr.record, 0);
	atomic_store(&ch->pr.run, 0);
	pthread_join(ch->pr.th, NULL);
	buf_free(&ch->pr.rp.line);
	buf_free(&ch->pr.rp.body);
}

/* Whether the kind of c plays in the current phase. */
static int
kind_on(const struct cc *c)
{
	const struct chaos *ch = c->ch;
	int a = kdefs[c->kind].abuse;

	switch (c->kind) {
	case K_NORMAL:
		return ch->phase >= P_WARMUP && ch->phase <= P_SETTLE;
	case K_PRIME:
		return ch->phase == P_WARMUP;
	case K_CTL:
		return (ch->o.abuses & (1u << A_FAULTS)) &&
		       ch->phase >= P_WARMUP && ch->phase <= P_SETTLE;
	default:
		return ch->phase == P_SOAK && (ch->o.abuses & (1u << a));
	}
}

/* Close the socket of c, if open. */
static void
cc_close(struct cc *c)
{
	if (c->fd < 0)
		return;
	event_del(&c->rev);
	event_del(&c->wev);
	close(c->fd);
	c->fd = -1;
	c->connecting = 0;
	c->ch->ks[c->kind].open--;
}

/* Arm the aux timer of c. */
static void
cc_timer(struct cc *c, int ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

	evtimer_add(&c->tm, &tv);
}

/* The round on c is over: keep or close the socket, then wait delay_ms for
 * the next one (or stop, if the kind is done for this phase). */
static void
cc_next(struct cc *c, int delay_ms, int keep_fd)
{
	event_del(&c->dl);
	event_del(&c->tm);
	if (c->fd >= 0)
		event_del(&c->wev);
	if (!keep_fd)
		cc_close(c);
	if (delay_ms < 0 || !kind_on(c)) {
		cc_close(c);
		c->state = S_OFF;
		return;
	}
	c->state = S_WAIT;
	cc_timer(c, delay_ms);
}

/* Stop c at once (end of its phase). */
static void
cc_stop(struct cc *c)
{
	event_del(&c->dl);
	event_del(&c->tm);
	cc_close(c);
	c->state = S_OFF;
}

/* Account the end of an abuse round and schedule the next. */
static void
abuse_end(struct cc *c, int how)
{
	struct kstat *k = &c->ch->ks[c->kind];
	struct resp *r = &c->rp;
	int64_t ms;

	k->rounds++;
	if (r->status > 0) {
		k->end[E_ANSWERED]++;
		k->status[r->status]++;
		ms = r->t_first - c->t_start;
		if (ms > k->max_ms)
			k->max_ms = ms;
	} else
		k->end[how]++;
	cc_next(c, kdefs[c->kind].period_ms, 0);
}

/* A normal request ended: framed says the reply's framing finished.
 * Judge it, then keep the connection for the next if we can. */
static void
client_end(struct cc *c, int framed)
{
	struct chaos *ch = c->ch;
	struct resp *r = &c->rp;
	int j, keep;

	if (!r->got && c->reused && !c->resend) {
		/* the server closed an idle keep-alive connection as we sent:
		 * send again on a new one, as HTTP clients and SDKs do */
		c->resend = 1;
		cc_close(c);
		cc_try_connect(c);
		return;
	}
	j = r->got ? judge(r, c->stream, framed) : J_NOANSWER;
	ch->ns.judged[j]++;
	if (r->status > 0)
		ch->ns.status[r->status]++;
	keep = framed && r->got && !r->close && c->fd >= 0 && !c->wdead;
	c->resend = 0;
	c->reused = keep ? c->reused + 1 : 0;
	cc_next(c, (int)rnd(5), keep);
}

/* Format a chat request into c->out and point the writer at it. */
static void
cc_chat(struct cc *c, const char *ver, const char *conn, const char *model,
        int stream)
{
	char body[256];
	int n;

	n = snprintf(body, sizeof body,
	             "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\","
	             "\"content\":\"hi\"}]%s}",
	             model, stream ? ",\"stream\":true" : "");
	buf_reset(&c->out);
	buf_printf(&c->out,
	           "POST /v1/chat/completions HTTP/1.%s\r\nHost: llmfd\r\n"
	           "%sContent-Type: application/json\r\n"
	           "Content-Length: %d\r\n\r\n%s",
	           ver, conn, n, body);
	c->wp = c->out.data;
	c->wlen = c->out.len;
	c->woff = 0;
}

/* Send the next normal request on c. */
static void
client_begin(struct cc *c)
{
	struct chaos *ch = c->ch;

	if (!c->resend) {
		c->stream = (int)rnd(2);
		ch->ns.requests++;
		ch->ns.streams += (uint64_t)c->stream;
	}
	cc_chat(c, "1", "", "g", c->stream);
	c->sent = 1;
	cc_flush(c);
}

/* The deadline of a normal request passed. */
static void
client_deadline(struct cc *c)
{
	struct chaos *ch = c->ch;

	if (!c->sent)
		ch->ns.judged[J_NOCONNECT]++;
	else
		ch->ns.judged[J_HANG]++;
	c->resend = 0;
	c->reused = 0;
	cc_next(c, 0, 0);
}

/* Point the writer at a prebuilt request, then an optional flood. */
static void
cc_static(struct cc *c, const struct buf *req, const struct buf *flood,
          uint64_t flood_bytes)
{
	c->wp = req->data;
	c->wlen = req->len;
	c->woff = 0;
	c->fl = flood ? flood->data : NULL;
	c->fl_sz = flood ? flood->len : 0;
	c->fl_off = 0;
	c->fl_left = flood ? flood_bytes : 0;
	cc_flush(c);
}

/* Start a disconnect round: a request cut at a random point. */
static void
disconnect_begin(struct cc *c)
{
	size_t head;
	char *e;

	c->plan = (int)rnd(D_N);
	cc_chat(c, "1", "", "g", c->plan == D_STREAMING || rnd(2));
	e = memmem(c->out.data, c->out.len, "\r\n\r\n", 4);
	head = e ? (size_t)(e - c->out.data) + 4 : c->out.len;
	switch (c->plan) {
	case D_MIDHEAD:
		c->wlen = 1 + rnd((uint32_t)head - 1);
		break;
	case D_NOBODY:
		c->wlen = head;
		break;
	case D_MIDBODY:
		c->wlen = head + (c->out.len - head) / 2;
		break;
	}
	cc_flush(c);
}

/* Start an HTTP/1.0 keep-alive round: a stream, then a second request. */
static void
http10_begin(struct cc *c)
{
	c->step = 0;
	cc_chat(c, "0", "Connection: keep-alive\r\n", "probe", 1);
	cc_flush(c);
}

/* The HTTP/1.0 round got an answer. */
static void
http10_answer(struct cc *c)
{
	struct kstat *k = &c->ch->ks[K_HTTP10];
	struct resp *r = &c->rp;

	if (r->state == R_ERROR || (c->step == 0 && r->status == 200 &&
	                            r->clen == 0 && r->state == R_DONE)) {
		/* a stream announced as Content-Length: 0 breaks the next
		 * request on the connection */
		k->anomalies++;
		abuse_end(c, E_ANSWERED);
		return;
	}
	if (c->step == 0 && r->state == R_DONE && !r->close && c->fd >= 0) {
		k->status[r->status]++;
		c->step = 1;
		resp_reset(r);
		cc_chat(c, "0", "Connection: keep-alive\r\n", "probe", 0);
		cc_flush(c);
		return;
	}
	abuse_end(c, E_ANSWERED);
}

/* A mock-config request: a random fault mode for mock c->idx. */
static void
ctl_begin(struct cc *c)
{
	static const int statuses[] = {429, 500, 503};
	char body[256];
	int n;

	n = snprintf(body, sizeof body,
	             "{\"mode\":\"%s\",\"status\":%d,\"fail_percent\":%u,"
	             "\"cut_after\":%u,\"latency_ms\":%u}",
	             fault_modes[c->plan = (int)rnd(NMODES)], statuses[rnd(3)],
	             20 + rnd(11), 1 + rnd(3), rnd(6));
	buf_reset(&c->out);
	buf_printf(&c->out,
	           "POST /_mock/config HTTP/1.1\r\nHost: mock\r\n"
	           "Connection: close\r\nContent-Type: application/json\r\n"
	           "Content-Length: %d\r\n\r\n%s",
	           n, body);
	c->wp = c->out.data;
	c->wlen = c->out.len;
	c->woff = 0;
	cc_flush(c);
}

/* The socket of c is connected: play the kind's opening. */
static void
kind_begin(struct cc *c)
{
	switch (c->kind) {
	case K_NORMAL:
		client_begin(c);
		break;
	case K_CTL:
		ctl_begin(c);
		break;
	case K_SLOW:
		c->wp = req_slow.data;
		c->wlen = c->woff = 0;
		cc_timer(c, SLOW_HOLD_MS);
		break;
	case K_ENDLESS:
		cc_static(c, &req_endless, &junk_hdr, ENDLESS_BYTES);
		break;
	case K_BIGHDR:
		cc_static(c, &req_bighdr, NULL, 0);
		break;
	case K_MANYHDR:
		cc_static(c, &req_manyhdr, NULL, 0);
		break;
	case K_OBSFOLD:
		cc_static(c, &req_obsfold, NULL, 0);
		break;
	case K_KEEPSEND:
		cc_static(c, &req_keepsend, &junk_body, KEEPSEND_CAP);
		break;
	case K_DISCONNECT:
		disconnect_begin(c);
		break;
	case K_IDLE:
		cc_timer(c, IDLE_HOLD_MS);
		break;
	case K_PRIME:
		cc_timer(c, PRIME_HOLD_MS);
		break;
	case K_BIGBODY:
		cc_static(c, &req_bigbody, &junk_body, BIGBODY_CAP);
		break;
	case K_CHUNKED:
		cc_static(c, &req_chunked, &junk_chunk, BIGBODY_CAP);
		break;
	case K_CONNECT:
		cc_static(c, &req_connect, NULL, 0);
		break;
	case K_HTTP10:
		http10_begin(c);
		break;
	}
}

/* Everything c meant to send is sent. */
static void
kind_drained(struct cc *c)
{
	switch (c->kind) {
	case K_ENDLESS:
		abuse_end(c, E_CAP); /* the server took it all */
		break;
	case K_DISCONNECT:
		if (c->plan != D_STREAMING)
			cc_timer(c, c->plan == D_WAITING ? (int)rnd(1500)
			                                 : (int)rnd(100));
		break;
	}
}

/* The aux timer fired while c plays a round. */
static void
kind_tick(struct cc *c)
{
	switch (c->kind) {
	case K_SLOW:
		if (c->wlen < req_slow.len) {
			c->wlen++;
			cc_flush(c);
			cc_timer(c, SLOW_HOLD_MS);
		}
		break;
	case K_IDLE:
	case K_PRIME:
	case K_DISCONNECT:
		abuse_end(c, E_CUT);
		break;
	}
}

/* The answer deadline of c passed. */
static void
kind_deadline(struct cc *c)
{
	if (c->kind == K_NORMAL)
		client_deadline(c);
	else if (c->kind == K_CTL) {
		c->ch->faults_failed++;
		cc_next(c, -1, 0);
	} else
		abuse_end(c, E_TIMEOUT);
}

/* A whole response (or a parse error) arrived on c. */
static void
kind_answer(struct cc *c)
{
	struct kstat *k = &c->ch->ks[c->kind];
	int64_t life;

	switch (c->kind) {
	case K_NORMAL:
		client_end(c, c->rp.state == R_DONE);
		break;
	case K_CTL:
		if (c->rp.status == 200)
			c->ch->faults_set++;
		else {
			c->ch->faults_failed++;
			c->ch->faults_refused[c->plan]++;
		}
		cc_next(c, -1, 0);
		break;
	case K_HTTP10:
		http10_answer(c);
		break;
	case K_SLOW:
	case K_IDLE:
	case K_PRIME:
		life = clock_ms() - c->t_start;
		if (life > k->max_ms)
			k->max_ms = life;
		k->rounds++;
		k->end[E_ANSWERED]++;
		if (c->rp.status > 0)
			k->status[c->rp.status]++;
		cc_next(c, kdefs[c->kind].period_ms, 0);
		break;
	default:
		if (c->rp.state == R_ERROR)
			k->anomalies++;
		abuse_end(c, E_ANSWERED);
	}
}

/* The server closed c (or reset it) during a round. */
static void
kind_eof(struct cc *c)
{
	struct kstat *k = &c->ch->ks[c->kind];
	int framed = resp_eof(&c->rp) == R_DONE;
	int64_t life;

	c->wdead = 1; /* nothing more can be sent on it */
	switch (c->kind) {
	case K_NORMAL:
		client_end(c, framed);
		break;
	case K_SLOW:
	case K_IDLE:
	case K_PRIME:
		if (c->rp.status > 0) {
			kind_answer(c);
			break;
		}
		life = clock_ms() - c->t_start;
		if (life > k->max_ms)
			k->max_ms = life;
		k->rounds++;
		k->end[E_CLOSED]++;
		cc_next(c, kdefs[c->kind].period_ms, 0);
		break;
	default:
		if (c->rp.status > 0)
			kind_answer(c);
		else if (c->kind == K_CTL) {
			c->ch->faults_failed++;
			cc_next(c, -1, 0);
		} else
			abuse_end(c, E_CLOSED);
	}
}

/* Whether a response head is all the kind of c waits for (the abuses
 * but the HTTP/1.0 one, which checks the framing). */
static int
head_enough(const struct cc *c)
{
	return is_abuse(c->kind) && c->kind != K_HTTP10;
}

/* Bytes arrived on c during a round. */
static void
kind_data(struct cc *c, const char *p, size_t n)
{
	int st;

	if (c->kind == K_DISCONNECT && c->plan == D_STREAMING) {
		resp_feed(&c->rp, p, n);
		abuse_end(c, E_CUT); /* hang up mid-stream */
		return;
	}
	st = resp_feed(&c->rp, p, n);
	if (st == R_DONE || st == R_ERROR || (head_enough(c) && st >= R_BODY))
		kind_answer(c);
}

/* Write what is pending on c (its bytes, then its flood). */
static void
cc_flush(struct cc *c)
{
	struct kstat *k = &c->ch->ks[c->kind];
	const char *p;
	size_t n;
	ssize_t w;
	int budget = 8; /* sends per call: floods must not hog the loop */

	while (!c->wdead && c->fd >= 0) {
		if (budget-- == 0) {
			event_add(&c->wev, NULL);
			return;
		}
		if (c->woff < c->wlen) {
			p = c->wp + c->woff;
			n = c->wlen - c->woff;
		} else if (c->fl_left > 0) {
			p = c->fl + c->fl_off;
			n = c->fl_sz - c->fl_off;
			if (n > c->fl_left)
				n = (size_t)c->fl_left;
		} else
			break;
		if ((w = send(c->fd, p, n, MSG_NOSIGNAL)) == -1) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				event_add(&c->wev, NULL);
				return;
			}
			/* the server closed: read what it said, then EOF */
			c->wdead = 1;
			break;
		}
		k->sent += (uint64_t)w;
		if (c->woff < c->wlen)
			c->woff += (size_t)w;
		else {
			c->fl_left -= (uint64_t)w;
			c->fl_off = (c->fl_off + (size_t)w) % c->fl_sz;
		}
	}
	if (c->fd >= 0)
		event_del(&c->wev);
	if (!c->wdead && c->state == S_ACTIVE && c->fl_left == 0 &&
	    c->woff == c->wlen)
		kind_drained(c);
}

/* Readable: feed the round, or notice an idle keep-alive close. */
static void
cc_read_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct cc *c = arg;
	char buf[65536];
	ssize_t n;

	(void)ev;
	n = read(fd, buf, sizeof buf);
	if (n == -1 && (errno == EAGAIN || errno == EINTR))
		return;
	if (c->state != S_ACTIVE) {
		if (n <= 0)
			cc_close(c); /* idle keep-alive closed by the server */
		return;
	}
	if (n > 0)
		kind_data(c, buf, (size_t)n);
	else
		kind_eof(c);
}

/* The connect on c failed: retry soon. */
static void
cc_connfail(struct cc *c)
{
	c->ch->ks[c->kind].connfail++;
	cc_close(c);
	c->state = S_RETRY;
	event_del(&c->tm);
	cc_timer(c, kdefs[c->kind].retry_ms);
}

/* Writable: a connect finished, or more can be sent. */
static void
cc_write_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct cc *c = arg;
	int err = 0;
	socklen_t len = sizeof err;

	(void)ev;
	if (!c->connecting) {
		cc_flush(c);
		return;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1 || err) {
		cc_connfail(c);
		return;
	}
	c->connecting = 0;
	event_del(&c->wev);
	c->state = S_ACTIVE;
	kind_begin(c);
}

/* Open the socket of c (non-blocking); 0, or -1 if it failed at once. */
static int
cc_connect(struct cc *c)
{
	struct chaos *ch = c->ch;
	struct sockaddr_un su = {.sun_family = AF_UNIX};
	struct sockaddr_in si = {.sin_family = AF_INET};
	struct kstat *k = &ch->ks[c->kind];
	int fd, rc, tcp = c->kind == K_CTL;

	fd = socket(tcp ? AF_INET : AF_UNIX,
	            SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -1;
	if (tcp) {
		si.sin_port = htons((uint16_t)ch->mock_port[c->idx]);
		si.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		rc = connect(fd, (struct sockaddr *)&si, sizeof si);
	} else {
		snprintf(su.sun_path, sizeof su.sun_path, "%s", ch->sock);
		rc = connect(fd, (struct sockaddr *)&su, sizeof su);
	}
	if (rc == -1 && errno != EINPROGRESS) {
		close(fd);
		return -1;
	}
	c->fd = fd;
	c->connecting = rc == -1;
	c->wdead = 0;
	c->reused = 0;
	if (++k->open > k->open_peak)
		k->open_peak = k->open;
	event_assign(&c->rev, ch->base, fd, EV_READ | EV_PERSIST, cc_read_cb,
	             c);
	event_assign(&c->wev, ch->base, fd, EV_WRITE | EV_PERSIST, cc_write_cb,
	             c);
	event_add(&c->rev, NULL);
	if (c->connecting)
		event_add(&c->wev, NULL);
	return 0;
}

/* Connect c and, once connected, begin its round. */
static void
cc_try_connect(struct cc *c)
{
	if (cc_connect(c) == -1) {
		cc_connfail(c);
		return;
	}
	c->state = S_ACTIVE;
	if (!c->connecting)
		kind_begin(c);
}

/* Start a round on c: arm its deadline, then connect (or reuse). */
static void
cc_round(struct cc *c)
{
	int dl = kdefs[c->kind].deadline_ms;

	if (!kind_on(c)) {
		cc_stop(c);
		return;
	}
	if (c->kind == K_NORMAL)
		dl = c->ch->o.hang_ms;
	c->t_start = clock_ms();
	c->t_us = clock_us();
	c->sent = 0;
	c->resend = 0;
	c->wlen = c->woff = 0;
	c->fl_left = 0;
	resp_reset(&c->rp);
	if (dl > 0) {
		struct timeval tv = {dl / 1000, (dl % 1000) * 1000};

		evtimer_add(&c->dl, &tv);
	}
	if (c->fd >= 0 && !c->wdead) {
		c->state = S_ACTIVE;
		kind_begin(c);
		return;
	}
	cc_close(c);
	cc_try_connect(c);
}

/* The aux timer of c. */
static void
cc_tm_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct cc *c = arg;

	(void)fd;
	(void)ev;
	switch (c->state) {
	case S_WAIT:
		cc_round(c);
		break;
	case S_RETRY:
		if (kind_on(c))
			cc_try_connect(c);
		else
			cc_stop(c);
		break;
	case S_ACTIVE:
		kind_tick(c);
		break;
	}
}

/* The deadline timer of c. */
static void
cc_dl_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct cc *c = arg;

	(void)fd;
	(void)ev;
	if (c->state == S_ACTIVE || c->state == S_RETRY)
		kind_deadline(c);
}

/* How many connections kind k uses. */
static int
kind_conns(const struct opts *o, int k)
{
	switch (k) {
	case K_NORMAL:
		return o->clients;
	case K_SLOW:
		return o->slow_conns;
	case K_IDLE:
		return o->idle_conns;
	case K_PRIME:
		return (o->abuses & (1u << A_SLOW) ? o->slow_conns : 0) +
		       (o->abuses & (1u << A_IDLE) ? o->idle_conns : 0);
	default:
		return kdefs[k].conns;
	}
}

/* Allocate every connection object. */
static void
cc_setup(struct chaos *ch)
{
	int n = 0, i = 0;

	for (int k = 0; k < K_N; k++)
		n += kind_conns(&ch->o, k);
	if ((ch->cc = calloc((size_t)n, sizeof *ch->cc)) == NULL)
		die("out of memory");
	ch->ncc = n;
	for (int k = 0; k < K_N; k++)
		for (int j = 0; j < kind_conns(&ch->o, k); j++, i++) {
			struct cc *c = &ch->cc[i];

			c->ch = ch;
			c->kind = k;
			c->idx = j;
			c->fd = -1;
			evtimer_assign(&c->dl, ch->base, cc_dl_cb, c);
			evtimer_assign(&c->tm, ch->base, cc_tm_cb, c);
		}
}

/* Start (or stop) every connection of the kinds matching pred. */
static void
cc_each(struct chaos *ch, int (*pred)(int kind), int start)
{
	for (int i = 0; i < ch->ncc; i++) {
		struct cc *c = &ch->cc[i];

		if (!pred(c->kind))
			continue;
		if (!start)
			cc_stop(c);
		else if (c->state == S_OFF) {
			c->state = S_WAIT;
			cc_timer(c, (int)rnd(200));
		}
	}
}

/* Kind predicates for cc_each. */
static int
is_client(int k)
{
	return k == K_NORMAL;
}

static int
is_abuse(int k)
{
	return k >= K_SLOW;
}

static int
is_prime(int k)
{
	return k == K_PRIME;
}

static int
is_ctl(int k)
{
	return k == K_CTL;
}

/* Append a request line, extra header lines and a JSON body to b. */
static void
req_build(struct buf *b, const char *method_line, const char *extra,
          const char *body)
{
	buf_printf(b,
	           "%s\r\nHost: llmfd\r\n%sContent-Type: application/json\r\n"
	           "Content-Length: %zu\r\n\r\n%s",
	           method_line, extra, strlen(body), body);
}

/* Build the prebuilt requests and flood blocks. */
static void
reqs_setup(void)
{
	static const char body[] = "{\"model\":\"g\",\"messages\":[{\"role\":"
	                           "\"user\",\"content\":\"hi\"}]}";
	static const char slow_body[] = "{\"model\":\"slow\",\"messages\":[{"
	                                "\"role\":\"user\",\"content\":"
	                                "\"hi\"}]}";
	static const char post[] = "POST /v1/chat/completions HTTP/1.1";
	struct buf h = {0};

	/* slow: longer than any soak at one byte per second */
	buf_adds(&h, "User-Agent: slow-");
	for (int i = 0; i < 600; i++)
		buf_addc(&h, 'a' + i % 26);
	buf_adds(&h, "\r\n");
	req_build(&req_slow, post, buf_cstr(&h), body);
	buf_reset(&h);
	buf_adds(&h, "X-Big: ");
	for (int i = 0; i < BIGHDR_BYTES; i++)
		buf_addc(&h, 'b');
	buf_adds(&h, "\r\n");
	req_build(&req_bighdr, post, buf_cstr(&h), body);
	buf_reset(&h);
	for (int i = 0; i < MANY_HEADERS; i++)
		buf_printf(&h, "X-H%d: v\r\n", i);
	req_build(&req_manyhdr, post, buf_cstr(&h), body);
	buf_reset(&h);
	buf_adds(&h, "X-Fold: start\r\n");
	for (int i = 0; i < FOLD_LINES; i++)
		buf_adds(&h, " folded\r\n");
	req_build(&req_obsfold, post, buf_cstr(&h), body);
	buf_free(&h);
	buf_adds(&req_connect, "CONNECT 127.0.0.1:443 HTTP/1.1\r\n"
	                       "Host: 127.0.0.1:443\r\n\r\n");
	req_build(&req_keepsend, post, "", slow_body);
	buf_printf(
	    &req_bigbody,
	    "%s\r\nHost: llmfd\r\nContent-Type: application/json\r\n"
	    "Content-Length: 1073741824\r\n\r\n{\"model\":\"g\",\"x\":\"",
	    post);
	buf_printf(&req_chunked,
	           "%s\r\nHost: llmfd\r\nContent-Type: application/json\r\n"
	           "Transfer-Encoding: chunked\r\n\r\n",
	           post);
	buf_printf(&req_endless, "%s\r\nHost: llmfd\r\n", post);
	while (junk_hdr.len + 64 <= FLOOD_BLOCK)
		buf_adds(&junk_hdr,
		         "X-Endless: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		         "aaaaaaaaaaaaaa\r\n");
	for (int i = 0; i < FLOOD_BLOCK; i++)
		buf_addc(&junk_body, 'z');
	buf_printf(&junk_chunk, "%x\r\n", FLOOD_BLOCK - 16);
	for (int i = 0; i < FLOOD_BLOCK - 16; i++)
		buf_addc(&junk_chunk, 'z');
	buf_adds(&junk_chunk, "\r\n");
}

/* Read /proc/PID/stat: state, parent, CPU ticks and RSS pages. */
static int
proc_stat(pid_t pid, char *state, pid_t *ppid, uint64_t *ticks, uint64_t *rss)
{
	char path[64], buf[1024], *p;
	unsigned long ut, st;
	long rs;
	int pp;
	FILE *f;
	size_t n;

	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	if ((p = strrchr(buf, ')')) == NULL || p[1] == '\0')
		return -1;
	if (sscanf(p + 2,
	           "%c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d "
	           "%*d %*d %*d %*d %*u %*u %ld",
	           state, &pp, &ut, &st, &rs) != 5)
		return -1;
	*ppid = pp;
	*ticks = ut + st;
	*rss = rs > 0 ? (uint64_t)rs * (uint64_t)sysconf(_SC_PAGESIZE) : 0;
	return 0;
}

/* The worker-table entry for pid (added if new), or NULL. */
static struct wproc *
worker_get(struct chaos *ch, pid_t pid)
{
	for (size_t i = 0; i < ch->nw; i++)
		if (ch->w[i].pid == pid)
			return &ch->w[i];
	if (ch->nw == ch->wcap) {
		size_t n = ch->wcap ? ch->wcap * 2 : 64;
		struct wproc *p = realloc(ch->w, n * sizeof *p);

		if (p == NULL)
			return NULL;
		ch->w = p;
		ch->wcap = n;
	}
	ch->w[ch->nw] = (struct wproc){.pid = pid};
	return &ch->w[ch->nw++];
}

/* Sample every live worker (child of the master) from /proc; returns the
 * sum of their RSS. */
static uint64_t
workers_sample(struct chaos *ch)
{
	DIR *d;
	struct dirent *e;
	uint64_t sum = 0;

	for (size_t i = 0; i < ch->nw; i++)
		ch->w[i].live = 0;
	if ((d = opendir("/proc")) == NULL)
		return 0;
	while ((e = readdir(d)) != NULL) {
		pid_t pid = (pid_t)atoi(e->d_name), pp;
		uint64_t ticks, rss;
		struct wproc *w;
		char st;

		if (pid <= 0 || proc_stat(pid, &st, &pp, &ticks, &rss) == -1 ||
		    pp != ch->master || st == 'Z' ||
		    (w = worker_get(ch, pid)) == NULL)
			continue;
		w->ticks = ticks;
		w->rss = rss;
		w->live = 1;
		sum += rss;
		if (rss > ch->rss_peak_one && ch->phase == P_SOAK)
			ch->rss_peak_one = rss;
	}
	closedir(d);
	return sum;
}

/* End the loop now (interrupt, overrun, a dead daemon). */
static void
chaos_abort(struct chaos *ch)
{
	ch->phase = P_END;
	event_base_loopexit(ch->base, NULL);
}

/* Periodic: sample the workers, watch the master. */
static void
sample_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct chaos *ch = arg;
	uint64_t sum;
	int st;

	(void)fd;
	(void)ev;
	if (waitpid(ch->master, &st, WNOHANG) == ch->master) {
		ch->master_dead = 1;
		ch->master_status = st;
		ch->master = 0;
		chaos_abort(ch);
		return;
	}
	for (int i = 0; i < M_N; i++)
		if (waitpid(ch->mocks[i], &st, WNOHANG) == ch->mocks[i]) {
			ch->mock_dead = 1;
			ch->mocks[i] = 0;
			chaos_abort(ch);
			return;
		}
	log_poll(ch);
	sum = workers_sample(ch);
	if (ch->phase == P_SOAK && sum > ch->rss_peak)
		ch->rss_peak = sum;
}

/* Periodic: SIGHUP the master during the first half of the soak. */
static void
reload_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct chaos *ch = arg;

	(void)fd;
	(void)ev;
	if (ch->phase != P_SOAK ||
	    clock_ms() - ch->t_soak > (int64_t)ch->soak_s * 500)
		return;
	if (ch->master > 0 && kill(ch->master, SIGHUP) == 0)
		ch->reloads++;
}

/* Periodic: redraw the fault of each fault mock. */
static void
fault_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct chaos *ch = arg;

	(void)fd;
	(void)ev;
	for (int i = 0; i < ch->ncc; i++)
		if (ch->cc[i].kind == K_CTL && ch->cc[i].state == S_OFF)
			cc_round(&ch->cc[i]);
}

/* Whether any normal client still has a request in flight. */
static int
clients_busy(const struct chaos *ch)
{
	for (int i = 0; i < ch->ncc; i++)
		if (is_client(ch->cc[i].kind) && ch->cc[i].state != S_OFF)
			return 1;
	return 0;
}

/* At the end of the soak: count the abuse connections still open, and
 * let the lives of slow and idle ones count towards their longest. */
static void
soak_end_lives(struct chaos *ch)
{
	int64_t now = clock_ms();

	for (int k = 0; k < K_N; k++)
		ch->ks[k].open_end = ch->ks[k].open;
	for (int i = 0; i < ch->ncc; i++) {
		struct cc *c = &ch->cc[i];
		struct kstat *k = &ch->ks[c->kind];

		if ((c->kind == K_SLOW || c->kind == K_IDLE) && c->fd >= 0 &&
		    now - c->t_start > k->max_ms)
			k->max_ms = now - c->t_start;
	}
}

/* Arm the phase timer. */
static void
phase_after(struct chaos *ch, int ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

	evtimer_add(ch->ev_phase, &tv);
}

/* Move on to the next phase. */
static void
phase_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct chaos *ch = arg;
	struct timeval tv = {ch->o.reload_ms / 1000,
	                     (ch->o.reload_ms % 1000) * 1000};

	(void)fd;
	(void)ev;
	switch (ch->phase) {
	case P_WARMUP:
		ch->rss_before = workers_sample(ch);
		ch->phase = P_SOAK;
		ch->t_soak = clock_ms();
		cc_each(ch, is_abuse, 1);
		atomic_store(&ch->pr.record, 1);
		if (ch->o.abuses & (1u << A_RELOAD))
			evtimer_add(ch->ev_reload, &tv);
		phase_after(ch, ch->soak_s * 1000);
		break;
	case P_SOAK:
		ch->phase = P_SETTLE;
		atomic_store(&ch->pr.record, 0);
		soak_end_lives(ch);
		cc_each(ch, is_abuse, 0);
		evtimer_del(ch->ev_reload);
		phase_after(ch, ch->o.settle * 1000);
		break;
	case P_SETTLE:
		ch->rss_after = workers_sample(ch);
		ch->phase = P_DRAIN;
		evtimer_del(ch->ev_fault);
		cc_each(ch, is_ctl, 0);
		ch->t_soak = clock_ms(); /* now: start of the drain */
		phase_after(ch, 100);
		break;
	case P_DRAIN:
		if (clients_busy(ch) &&
		    clock_ms() - ch->t_soak < ch->o.hang_ms + 1000) {
			phase_after(ch, 100);
			break;
		}
		cc_each(ch, is_client, 0);
		ch->phase = P_END;
		event_base_loopexit(ch->base, NULL);
		break;
	}
}

/* SIGINT / SIGTERM: stop the run, report what was seen, clean up. */
static void
signal_cb(evutil_socket_t sig, short ev, void *arg)
{
	struct chaos *ch = arg;

	(void)sig;
	(void)ev;
	ch->interrupted = 1;
	chaos_abort(ch);
}

/* The hard bound on the whole run. */
static void
cap_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct chaos *ch = arg;

	(void)fd;
	(void)ev;
	ch->overran = 1;
	chaos_abort(ch);
}

/* Fork and exec argv with stdout and stderr appended to logpath and, if
 * nofile > 0, RLIMIT_NOFILE lowered to it (soft and hard). */
static pid_t
proc_spawn(char *const argv[], const char *logpath, long nofile)
{
	pid_t parent = getpid(), pid;
	struct rlimit rl = {(rlim_t)nofile, (rlim_t)nofile};
	sigset_t none;
	int fd;

	if ((pid = fork()) == -1)
		die("fork: %s", strerror(errno));
	if (pid > 0)
		return pid;
	prctl(PR_SET_PDEATHSIG, SIGTERM); /* if we are killed outright */
	if (getppid() != parent)
		_exit(127);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_DFL);
	if ((fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0644)) != -1) {
		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
		close(fd);
	}
	if ((fd = open("/dev/null", O_RDONLY)) != -1) {
		dup2(fd, STDIN_FILENO);
		close(fd);
	}
	if (nofile > 0 && setrlimit(RLIMIT_NOFILE, &rl) == -1)
		fprintf(stderr, "llmf-chaos: setrlimit: %s\n", strerror(errno));
	execv(argv[0], argv);
	fprintf(stderr, "llmf-chaos: exec %s: %s\n", argv[0], strerror(errno));
	_exit(127);
}

/* Stop pid: SIGTERM, then SIGKILL after wait_ms; returns its wait status
 * (or -1). */
static int
proc_stop(pid_t pid, int wait_ms)
{
	int st = -1;
	int64_t end = clock_ms() + wait_ms;

	if (pid <= 0)
		return -1;
	kill(pid, SIGTERM);
	while (clock_ms() < end) {
		if (waitpid(pid, &st, WNOHANG) == pid)
			return st;
		usleep(20000);
	}
	kill(pid, SIGKILL);
	if (waitpid(pid, &st, 0) != pid)
		return -1;
	return st;
}

/* Stop the daemon, then the mocks, each by its PID. */
static void
procs_stop(struct chaos *ch)
{
	int st;

	if (ch->master > 0) {
		st = proc_stop(ch->master, 15000);
		ch->daemon_exit = st;
		ch->master = 0;
	}
	for (int i = 0; i < M_N; i++) {
		proc_stop(ch->mocks[i], 3000);
		ch->mocks[i] = 0;
	}
}

/* nftw callback: remove one entry. */
static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)flag;
	(void)f;
	return remove(path);
}

/* Remove dir and everything in it. */
static void
dir_remove(const char *dir)
{
	nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* A string literal as an argv element (execv takes char *const []). */
static char *
sarg(const char *s)
{
	return (char *)(uintptr_t)s;
}

/* Start mock i on an ephemeral port and wait for its port file. */
static void
mock_start(struct chaos *ch, int i)
{
	char bin[PATH_MAX], pf[256], logp[256], *argv[16];
	const char *name = mock_names[i];
	int n = 0;
	int64_t end = clock_ms() + 5000;
	FILE *f;

	snprintf(bin, sizeof bin, "%s/llmf-mock", ch->o.build);
	snprintf(pf, sizeof pf, "%s/%s.port", ch->dir, name);
	snprintf(logp, sizeof logp, "%s/mock-%s.log", ch->dir, name);
	argv[n++] = bin;
	argv[n++] = sarg("--port");
	argv[n++] = sarg("0");
	argv[n++] = sarg("--port-file");
	argv[n++] = pf;
	argv[n++] = sarg("--name");
	argv[n++] = sarg(name);
	argv[n++] = sarg("--chunks");
	argv[n++] = sarg("6");
	argv[n++] = sarg("--chunk-delay-ms");
	argv[n++] = sarg("3");
	if (i == M_SLOW) {
		argv[n++] = sarg("--latency-ms");
		argv[n++] = sarg("1500");
	}
	argv[n] = NULL;
	ch->mocks[i] = proc_spawn(argv, logp, 0);
	while (clock_ms() < end) {
		if ((f = fopen(pf, "r")) != NULL) {
			int ok = fscanf(f, "%d", &ch->mock_port[i]) == 1;

			fclose(f);
			if (ok && ch->mock_port[i] > 0)
				return;
		}
		if (waitpid(ch->mocks[i], NULL, WNOHANG) == ch->mocks[i]) {
			ch->mocks[i] = 0;
			die("llmf-mock %s exited at start (see %s)", name,
			    logp);
		}
		usleep(20000);
	}
	die("llmf-mock %s did not write its port file", name);
}

/* Write the daemon's config: group g falls back to g2 then g3, each on a
 * fault mock; probe and slow on their own mocks. */
static void
conf_write(struct chaos *ch)
{
	FILE *f;

	if ((f = fopen(ch->conf, "w")) == NULL)
		die("%s: %s", ch->conf, strerror(errno));
	fprintf(f,
	        "daemon = { workers = %d; listen = \"llmfd.sock\";\n"
	        "  health_table = \"health\"; log_level = \"info\";\n"
	        "  access_log = \"off\"; drain_timeout_ms = 3000;\n  %s\n};\n"
	        "router = { num_retries = 1; backoff_base_ms = 10;\n"
	        "  backoff_max_ms = 100; timeout_ms = 3000;\n"
	        "  attempt_timeout_ms = 800; first_token_timeout_ms = 800;\n"
	        "  stream_idle_timeout_ms = 800; allowed_fails = 1000;\n"
	        "  cooldown_s = 1; circuit_failure_threshold = 1000;\n"
	        "  circuit_recovery_s = 1; retry_budget_ratio = 1.0;\n"
	        "  retry_budget_floor = 1000000; };\n"
	        "deployments = (\n",
	        ch->o.workers, ch->o.daemon_set ? ch->o.daemon_set : "");
	for (int i = 0; i < M_N; i++)
		fprintf(f,
		        "  { name = \"%s\"; group = \"%s\"; provider = "
		        "\"openai\";\n    model = \"m\"; base_url = "
		        "\"http://127.0.0.1:%d/v1\";%s }%s\n",
		        mock_names[i],
		        i == M_FA     ? "g"
		        : i == M_FB   ? "g2"
		        : i == M_FC   ? "g3"
		        : i == M_SLOW ? "slow"
		                      : "probe",
		        ch->mock_port[i],
		        i == M_SLOW ? " attempt_timeout_ms = 2500;" : "",
		        i + 1 < M_N ? "," : "");
	fprintf(f, ");\nfallbacks = ( { group = \"g\"; to = [ \"g2\", "
	           "\"g3\" ]; } );\n");
	if (fclose(f) == EOF)
		die("%s: %s", ch->conf, strerror(errno));
}

/* One blocking GET /healthz on the daemon's socket; 1 if it said 200. */
static int
healthz(const char *sock)
{
	static const char req[] = "GET /healthz HTTP/1.1\r\nHost: llmfd\r\n"
	                          "Connection: close\r\n\r\n";
	struct sockaddr_un su = {.sun_family = AF_UNIX};
	struct pollfd p;
	char buf[32] = "";
	ssize_t n;
	int fd, ok = 0;

	snprintf(su.sun_path, sizeof su.sun_path, "%s", sock);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		return 0;
	if (connect(fd, (struct sockaddr *)&su, sizeof su) == 0 &&
	    send(fd, req, sizeof req - 1, MSG_NOSIGNAL) ==
	        (ssize_t)(sizeof req - 1)) {
		p = (struct pollfd){.fd = fd, .events = POLLIN};
		if (poll(&p, 1, 1000) == 1 &&
		    (n = read(fd, buf, sizeof buf - 1)) > 0) {
			buf[n] = '\0';
			ok = strncmp(buf, "HTTP/1.1 200", 12) == 0;
		}
	}
	close(fd);
	return ok;
}

/* Start llmfd on the config and wait until it answers /healthz. */
static void
daemon_start(struct chaos *ch)
{
	char bin[PATH_MAX], *argv[4];
	int64_t end = clock_ms() + 10000;

	snprintf(bin, sizeof bin, "%s/llmfd", ch->o.build);
	argv[0] = bin;
	argv[1] = sarg("-c");
	argv[2] = ch->conf;
	argv[3] = NULL;
	ch->master = proc_spawn(argv, ch->log, ch->o.nofile);
	while (clock_ms() < end) {
		if (healthz(ch->sock))
			return;
		if (waitpid(ch->master, NULL, WNOHANG) == ch->master) {
			ch->master = 0;
			die("llmfd exited at start (see %s; --keep keeps it)",
			    ch->log);
		}
		usleep(50000);
	}
	die("llmfd did not answer /healthz within 10 s");
}

/* Count one line of the daemon's log. */
static void
log_line(struct chaos *ch, const char *line, size_t n)
{
	ch->log_lines_n++;
	if (strstr(line, "drain timeout") != NULL)
		ch->log_drain_timeout++;
	if (strstr(line, "killed by signal") == NULL)
		return;
	if (ch->log_killed < LOG_SHOW)
		snprintf(ch->log_lines[ch->log_killed], sizeof ch->log_lines[0],
		         "%.*s", (int)(n - 1), line);
	ch->log_killed++;
}

/* Scan the daemon's log from where the last scan stopped (whole lines
 * only), then cut the file once it passes LOG_TRIM: a worker at its fd
 * limit may log a million lines a minute. Lines written in the instant
 * between the last read and the cut are not counted. */
static void
log_poll(struct chaos *ch)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	struct stat st;
	FILE *f;

	if (stat(ch->log, &st) == -1 || (f = fopen(ch->log, "r")) == NULL)
		return;
	if ((uint64_t)st.st_size < ch->log_off)
		ch->log_off = 0;
	if (fseeko(f, (off_t)ch->log_off, SEEK_SET) == 0)
		while ((n = getline(&line, &cap, f)) > 0 &&
		       line[n - 1] == '\n') {
			ch->log_off += (uint64_t)n;
			ch->log_bytes += (uint64_t)n;
			log_line(ch, line, (size_t)n);
		}
	free(line);
	fclose(f);
	if (ch->log_off > LOG_TRIM && truncate(ch->log, 0) == 0) {
		ch->log_off = 0;
		ch->log_trims++;
	}
}

/* Compare two int64s for qsort. */
static int
cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

/* The q-quantile (nearest rank) of sorted v[n], in ms. */
static double
quantile_ms(const int64_t *v, size_t n, double q)
{
	size_t i;

	if (n == 0)
		return 0;
	i = (size_t)(q * (double)n + 0.999999);
	if (i < 1)
		i = 1;
	if (i > n)
		i = n;
	return (double)v[i - 1] / 1000.0;
}

/* Bytes in MiB. */
static double
mib(uint64_t b)
{
	return (double)b / (1024.0 * 1024.0);
}

/* Print "status count" pairs of a status table. */
static void
print_statuses(const uint64_t *st, int skip200)
{
	int any = 0;

	for (int s = 100; s < MAX_STATUS; s++)
		if (st[s] && !(skip200 && s == 200)) {
			printf("%s%d x%" PRIu64, any ? ", " : "", s, st[s]);
			any = 1;
		}
	if (!any)
		printf("none");
}

/* The normal-request section of the report. */
static void
report_normal(const struct chaos *ch)
{
	const struct nstat *n = &ch->ns;
	uint64_t trunc = 0;

	for (int j = J_STREAM_CUT; j < J_N; j++)
		trunc += n->judged[j];
	printf("normal requests: %" PRIu64 " (%" PRIu64 " streaming)\n",
	       n->requests, n->streams);
	printf("  completes %" PRIu64 ", reported failures %" PRIu64
	       " (error replies %" PRIu64 ", stream error events %" PRIu64
	       "), truncations %" PRIu64 ", hangs %" PRIu64 "\n",
	       n->judged[J_COMPLETE],
	       n->judged[J_REPORTED] + n->judged[J_STREAM_ERROR],
	       n->judged[J_REPORTED], n->judged[J_STREAM_ERROR], trunc,
	       n->judged[J_HANG]);
	printf("  errors by status: ");
	print_statuses(n->status, 1);
	printf("; closed unanswered %" PRIu64 "; could not connect %" PRIu64
	       " (connect failures %" PRIu64 ")\n",
	       n->judged[J_NOANSWER], n->judged[J_NOCONNECT],
	       ch->ks[K_NORMAL].connfail);
	if (trunc) {
		printf("  truncations by kind:");
		for (int j = J_STREAM_CUT; j < J_N; j++)
			if (n->judged[j])
				printf(" %s %" PRIu64, judge_names[j],
				       n->judged[j]);
		printf("\n");
	}
}

/* A probe quantile for the report: "N.N ms", or "failed" when it falls
 * on a failed probe. */
static const char *
probe_q(const struct probe *pr, double q, double *ms)
{
	static char s[3][32];
	static int k;

	k = (k + 1) % 3;
	*ms = quantile_ms(pr->lat, pr->nlat, q);
	if (pr->nlat && *ms >= (double)INT64_MAX / 1000.0 / 2)
		snprintf(s[k], sizeof s[k], "failed");
	else
		snprintf(s[k], sizeof s[k], "%.1f ms", *ms);
	return s[k];
}

/* The probe section; sets *p99 and *max (ms) and returns the p99 text. */
static const char *
report_probe(struct chaos *ch, double *p99, double *max)
{
	struct probe *pr = &ch->pr;
	uint64_t fails = 0;
	const char *p50s, *p99s;
	double p50;

	qsort(pr->lat, pr->nlat, sizeof *pr->lat, cmp_i64);
	p50s = probe_q(pr, 0.5, &p50);
	p99s = probe_q(pr, 0.99, p99);
	*max = (double)pr->max_us / 1000.0;
	for (int j = 0; j < J_N; j++)
		fails += pr->fail[j];
	printf("normal request latency under abuse (own connection and "
	       "thread, model \"probe\"): %zu requests, p50 %s, p99 %s, max "
	       "%.1f ms, failed %" PRIu64,
	       pr->nlat, p50s, p99s, *max, fails);
	if (fails) {
		printf(" (");
		for (int j = 0, any = 0; j < J_N; j++)
			if (pr->fail[j]) {
				printf("%s%s %" PRIu64, any ? ", " : "",
				       judge_names[j], pr->fail[j]);
				any = 1;
			}
		printf("; a failed probe counts as never answered)");
	}
	printf("\n");
	return p99s;
}

/* A wait status in words. */
static const char *
wait_desc(int st)
{
	static char s[64];

	if (st == -1)
		snprintf(s, sizeof s, "not waited for");
	else if (WIFSIGNALED(st))
		snprintf(s, sizeof s, "llmfd killed by signal %d",
		         WTERMSIG(st));
	else
		snprintf(s, sizeof s, "llmfd exited %d", WEXITSTATUS(st));
	return s;
}

/* The workers section: RSS and CPU. */
static void
report_workers(const struct chaos *ch)
{
	uint64_t ticks = 0, busiest = 0;
	double hz = (double)sysconf(_SC_CLK_TCK);
	struct rusage ru;

	for (size_t i = 0; i < ch->nw; i++) {
		ticks += ch->w[i].ticks;
		if (ch->w[i].ticks > busiest)
			busiest = ch->w[i].ticks;
	}
	printf("worker RSS (sum over workers): before %.1f MiB, peak %.1f "
	       "MiB (largest one worker %.1f MiB), after %.1f MiB\n",
	       mib(ch->rss_before), mib(ch->rss_peak), mib(ch->rss_peak_one),
	       mib(ch->rss_after));
	getrusage(RUSAGE_SELF, &ru);
	printf("worker CPU: %.1f s over %zu worker processes (busiest "
	       "%.1f s); llmf-chaos itself %.1f s; run %.0f s\n",
	       (double)ticks / hz, ch->nw, (double)busiest / hz,
	       (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6,
	       (double)(clock_ms() - ch->t_begin) / 1000.0);
	printf("daemon: %" PRIu64 " SIGHUP reloads, %" PRIu64
	       " fault draws (%" PRIu64 " failed); log %.1f MiB in %" PRIu64
	       " lines%s; %" PRIu64 " drain timeouts; %" PRIu64
	       " workers killed by a signal (%" PRIu64
	       " more at the final stop); %s\n",
	       ch->reloads, ch->faults_set, ch->faults_failed,
	       mib(ch->log_bytes), ch->log_lines_n,
	       ch->log_trims ? " (cut as it grew)" : "", ch->log_drain_timeout,
	       ch->log_killed_soak, ch->log_killed - ch->log_killed_soak,
	       wait_desc(ch->daemon_exit));
	for (int m = 0; m < NMODES; m++)
		if (ch->faults_refused[m])
			printf("  the mocks refused mode %s %" PRIu64
			       " times\n",
			       fault_modes[m], ch->faults_refused[m]);
	for (uint64_t i = 0; i < ch->log_killed && i < LOG_SHOW; i++)
		printf("  %s\n", ch->log_lines[i]);
}

/* One line per abuse kind that ran. */
static void
report_abuses(const struct chaos *ch)
{
	static const char *const ends[E_N] = {"answered", "closed unanswered",
	                                      "timed out", "sent in full",
	                                      "hung up by us"};

	printf("abuses (rounds; how they ended; statuses; slowest answer or "
	       "longest life):\n");
	for (int k = K_SLOW; k < K_N; k++) {
		const struct kstat *s = &ch->ks[k];

		if (!(ch->o.abuses & (1u << kdefs[k].abuse)))
			continue;
		printf("  %-20s %6" PRIu64 " rounds;", kdefs[k].name,
		       s->rounds);
		for (int e = 0; e < E_N; e++)
			if (s->end[e])
				printf(" %s %" PRIu64 ";", ends[e], s->end[e]);
		printf(" statuses ");
		print_statuses(s->status, 0);
		printf("; %" PRId64 " ms; %.1f MiB sent; open: peak %" PRIu64
		       ", at the end %" PRIu64,
		       s->max_ms, mib(s->sent), s->open_peak, s->open_end);
		if (s->connfail)
			printf("; %" PRIu64 " connect failures", s->connfail);
		if (s->anomalies)
			printf("; %" PRIu64 " BAD FRAMING", s->anomalies);
		printf("\n");
	}
}

/* Print one check and count it in tally[0] (passed) or tally[1]. */
static void __attribute__((format(printf, 3, 4)))
check(int *tally, int ok, const char *fmt, ...)
{
	va_list ap;

	printf("  %s  ", ok ? "PASS" : "FAIL");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	tally[ok ? 0 : 1]++;
}

/* The report and the checks; returns the number of failed checks. */
static int
report(struct chaos *ch)
{
	uint64_t trunc = 0, hung;
	double p99, max, growth;
	const char *p99s;
	int tally[2] = {0, 0};

	for (int j = J_STREAM_CUT; j < J_N; j++)
		trunc += ch->ns.judged[j];
	hung = ch->ns.judged[J_HANG] + ch->pr.fail[J_HANG];
	printf("\n");
	report_normal(ch);
	p99s = report_probe(ch, &p99, &max);
	report_workers(ch);
	report_abuses(ch);
	growth = ch->rss_before
	             ? ((double)ch->rss_after / (double)ch->rss_before - 1.0)
	             : 1.0;
	printf("checks:\n");
	check(tally, trunc == 0, "0 truncated (%" PRIu64 ")", trunc);
	check(tally, hung == 0,
	      "0 hung (%" PRIu64 " normal requests, %" PRIu64 " probes)",
	      ch->ns.judged[J_HANG], ch->pr.fail[J_HANG]);
	check(tally, ch->log_killed_soak == 0 && !ch->master_dead,
	      "no worker killed by a signal (%" PRIu64 " in the log)%s",
	      ch->log_killed_soak, ch->master_dead ? "; the daemon died" : "");
	check(tally, ch->pr.nlat > 0 && p99 <= PROBE_BAR_MS,
	      "normal requests answered within %d ms p99 (p99 %s, max %.1f "
	      "ms)",
	      PROBE_BAR_MS, p99s, max);
	check(tally,
	      ch->rss_before > 0 && ch->rss_after > 0 && growth <= RSS_BAR,
	      "worker RSS after within %.0f %% of before (%.1f -> %.1f MiB, "
	      "%+.1f %%)",
	      RSS_BAR * 100, mib(ch->rss_before), mib(ch->rss_after),
	      growth * 100);
	if (ch->interrupted || ch->overran || ch->mock_dead)
		check(tally, 0, "run completed (%s)",
		      ch->interrupted ? "interrupted"
		      : ch->overran   ? "overran its bound"
		                      : "a mock upstream died");
	printf("%d passed, %d failed\n", tally[0], tally[1]);
	return tally[1];
}

/* Print usage and exit 2. */
static void __attribute__((noreturn)) usage(int full, int code)
{
	fprintf(stderr,
	        "usage: llmf-chaos [--seconds N] [--build DIR] [--workers N]\n"
	        "         [--nofile N] [--clients N] [--slow-conns N] "
	        "[--idle-conns N]\n"
	        "         [--probe-ms N] [--reload-ms N] [--fault-ms N] "
	        "[--hang-ms N]\n"
	        "         [--warmup S] [--settle S] [--only LIST] "
	        "[--without LIST]\n"
	        "         [--daemon-set 'name = value;'] [--seed N] "
	        "[--keep] [--list]\n"
	        "       llmf-chaos --self-test\n");
	if (full)
		for (int a = 0; a < A_N; a++)
			fprintf(stderr, "  %-10s %s\n", abuse_names[a],
			        abuse_help[a]);
	exit(code);
}

/* A bounded integer option value. */
static int
arg_int(const char *name, const char *v, int lo, int hi)
{
	char *e;
	long n;

	errno = 0;
	n = strtol(v, &e, 10);
	if (errno || e == v || *e || n < lo || n > hi) {
		fprintf(stderr, "llmf-chaos: --%s: want %d..%d, got \"%s\"\n",
		        name, lo, hi, v);
		exit(2);
	}
	return (int)n;
}

/* A comma-separated list of abuse names as a bit set. */
static unsigned
arg_abuses(const char *v)
{
	unsigned set = 0;
	char *s = strdup(v), *save = NULL, *t;

	if (s == NULL)
		exit(2);
	for (t = strtok_r(s, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		int a;

		for (a = 0; a < A_N && strcmp(t, abuse_names[a]) != 0; a++)
			;
		if (a == A_N && strcmp(t, "all") == 0)
			set |= (1u << A_N) - 1;
		else if (a == A_N && strcmp(t, "none") != 0) {
			fprintf(stderr, "llmf-chaos: unknown abuse \"%s\"\n",
			        t);
			usage(1, 2);
		} else if (a < A_N)
			set |= 1u << a;
	}
	free(s);
	return set;
}

/* Set option `name` (a long option) from v. */
static void
opt_set(struct opts *o, const char *name, const char *v)
{
	static const struct {
		const char *name;
		size_t off;
		int lo, hi;
	} ints[] = {
	    {"seconds", offsetof(struct opts, seconds), 6, 86400},
	    {"warmup", offsetof(struct opts, warmup), 1, 600},
	    {"settle", offsetof(struct opts, settle), 1, 600},
	    {"workers", offsetof(struct opts, workers), 1, 16},
	    {"nofile", offsetof(struct opts, nofile), 0, 1 << 20},
	    {"clients", offsetof(struct opts, clients), 0, 10000},
	    {"slow-conns", offsetof(struct opts, slow_conns), 0, 10000},
	    {"idle-conns", offsetof(struct opts, idle_conns), 0, 100000},
	    {"probe-ms", offsetof(struct opts, probe_ms), 1, 10000},
	    {"reload-ms", offsetof(struct opts, reload_ms), 100, 600000},
	    {"fault-ms", offsetof(struct opts, fault_ms), 100, 600000},
	    {"hang-ms", offsetof(struct opts, hang_ms), 1000, 600000},
	};

	for (size_t i = 0; i < sizeof ints / sizeof *ints; i++)
		if (strcmp(name, ints[i].name) == 0) {
			*(int *)(void *)((char *)o + ints[i].off) =
			    arg_int(name, v, ints[i].lo, ints[i].hi);
			return;
		}
	if (strcmp(name, "build") == 0)
		o->build = v;
	else if (strcmp(name, "daemon-set") == 0)
		o->daemon_set = v;
	else if (strcmp(name, "only") == 0)
		o->abuses = arg_abuses(v);
	else if (strcmp(name, "without") == 0)
		o->abuses &= ~arg_abuses(v);
	else if (strcmp(name, "seed") == 0)
		o->seed = strtoull(v, NULL, 10);
}

/* The directory holding this executable. */
static const char *
self_dir(void)
{
	static char dir[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", dir, sizeof dir - 1);
	char *s;

	if (n <= 0)
		return ".";
	dir[n] = '\0';
	if ((s = strrchr(dir, '/')) != NULL)
		*s = '\0';
	return dir;
}

/* Parse the command line (and CHAOS_SECONDS) into o. */
static void
parse_args(struct opts *o, int argc, char **argv)
{
	static const struct option lo[] = {
	    {"seconds", 1, 0, 0},     {"warmup", 1, 0, 0},
	    {"settle", 1, 0, 0},      {"workers", 1, 0, 0},
	    {"nofile", 1, 0, 0},      {"clients", 1, 0, 0},
	    {"slow-conns", 1, 0, 0},  {"idle-conns", 1, 0, 0},
	    {"probe-ms", 1, 0, 0},    {"reload-ms", 1, 0, 0},
	    {"fault-ms", 1, 0, 0},    {"hang-ms", 1, 0, 0},
	    {"build", 1, 0, 0},       {"daemon-set", 1, 0, 0},
	    {"only", 1, 0, 0},        {"without", 1, 0, 0},
	    {"seed", 1, 0, 0},        {"keep", 0, 0, 'k'},
	    {"self-test", 0, 0, 't'}, {"list", 0, 0, 'l'},
	    {"help", 0, 0, 'h'},      {NULL, 0, 0, 0}};
	const char *env = getenv("CHAOS_SECONDS");
	int c, i;

	*o = (struct opts){.seconds = 180,
	                   .warmup = 3,
	                   .settle = 8,
	                   .workers = 1,
	                   .nofile = 1024,
	                   .clients = 16,
	                   .slow_conns = 300,
	                   .idle_conns = 1000,
	                   .probe_ms = 20,
	                   .reload_ms = 3000,
	                   .fault_ms = 1000,
	                   .hang_ms = 8000,
	                   .abuses = (1u << A_N) - 1,
	                   .seed = (uint64_t)time(NULL)};
	if (env && *env)
		o->seconds = arg_int("CHAOS_SECONDS", env, 6, 86400);
	while ((c = getopt_long(argc, argv, "hklt", lo, &i)) != -1) {
		if (c == 0)
			opt_set(o, lo[i].name, optarg);
		else if (c == 'k')
			o->keep = 1;
		else if (c == 't')
			exit(self_test(1) ? 1 : 0);
		else
			usage(c == 'l' || c == 'h', c == '?' ? 2 : 0);
	}
	if (optind != argc)
		usage(0, 2);
	if (o->build == NULL)
		o->build = self_dir();
	if (o->seconds < o->warmup + o->settle + 4) {
		fprintf(stderr, "llmf-chaos: --seconds must leave a soak of at "
		                "least 4 s after --warmup and --settle\n");
		exit(2);
	}
}

/* Raise our own RLIMIT_NOFILE to the hard limit (hundreds of sockets). */
static void
raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* Print what is about to run. */
static void
print_plan(const struct chaos *ch)
{
	printf("llmf-chaos: %d s (warm-up %d s, soak %d s, settle %d s), seed "
	       "%" PRIu64 ", dir %s\n",
	       ch->o.seconds, ch->o.warmup, ch->soak_s, ch->o.settle,
	       ch->o.seed, ch->dir);
	printf("llmfd: %d worker%s, RLIMIT_NOFILE %d; %d normal clients "
	       "(half streaming), a probe every %d ms\n",
	       ch->o.workers, ch->o.workers == 1 ? "" : "s", ch->o.nofile,
	       ch->o.clients, ch->o.probe_ms);
	printf("abuses:");
	for (int a = 0; a < A_N; a++)
		if (ch->o.abuses & (1u << a))
			printf(" %s", abuse_names[a]);
	printf("\n");
	fflush(stdout);
}

/* Create the loop, its timers and signals, and the connections. */
static void
loop_setup(struct chaos *ch)
{
	struct timeval sample = {0, 200000};
	struct timeval fault = {ch->o.fault_ms / 1000,
	                        (ch->o.fault_ms % 1000) * 1000};
	struct timeval cap = {ch->o.seconds + ch->o.hang_ms / 1000 + 60, 0};

	if ((ch->base = event_base_new()) == NULL)
		die("event_base_new failed");
	ch->ev_phase = evtimer_new(ch->base, phase_cb, ch);
	ch->ev_reload = event_new(ch->base, -1, EV_PERSIST, reload_cb, ch);
	ch->ev_fault = event_new(ch->base, -1, EV_PERSIST, fault_cb, ch);
	ch->ev_sample = event_new(ch->base, -1, EV_PERSIST, sample_cb, ch);
	ch->ev_cap = evtimer_new(ch->base, cap_cb, ch);
	ch->ev_int = evsignal_new(ch->base, SIGINT, signal_cb, ch);
	ch->ev_term = evsignal_new(ch->base, SIGTERM, signal_cb, ch);
	if (!ch->ev_phase || !ch->ev_reload || !ch->ev_fault ||
	    !ch->ev_sample || !ch->ev_cap || !ch->ev_int || !ch->ev_term)
		die("event_new failed");
	event_add(ch->ev_sample, &sample);
	event_add(ch->ev_cap, &cap);
	event_add(ch->ev_int, NULL);
	event_add(ch->ev_term, NULL);
	if (ch->o.abuses & (1u << A_FAULTS))
		event_add(ch->ev_fault, &fault);
	cc_setup(ch);
}

/* Free the loop and everything on it. */
static void
loop_free(struct chaos *ch)
{
	for (int i = 0; i < ch->ncc; i++) {
		cc_stop(&ch->cc[i]);
		buf_free(&ch->cc[i].out);
		buf_free(&ch->cc[i].rp.line);
		buf_free(&ch->cc[i].rp.body);
	}
	free(ch->cc);
	event_free(ch->ev_phase);
	event_free(ch->ev_reload);
	event_free(ch->ev_fault);
	event_free(ch->ev_sample);
	event_free(ch->ev_cap);
	event_free(ch->ev_int);
	event_free(ch->ev_term);
	event_base_free(ch->base);
	free(ch->pr.lat);
	free(ch->w);
}

/* Start the processes: five mocks and the daemon. */
static void
procs_start(struct chaos *ch)
{
	const char *tmp = getenv("TMPDIR");

	snprintf(ch->dir, sizeof ch->dir, "%s/llmf-chaos.XXXXXX",
	         tmp && *tmp && strlen(tmp) < 60 ? tmp : "/tmp");
	if (mkdtemp(ch->dir) == NULL) {
		ch->dir[0] = '\0';
		die("mkdtemp: %s", strerror(errno));
	}
	snprintf(ch->sock, sizeof ch->sock, "%s/llmfd.sock", ch->dir);
	snprintf(ch->conf, sizeof ch->conf, "%s/llmfd.conf", ch->dir);
	snprintf(ch->log, sizeof ch->log, "%s/llmfd.log", ch->dir);
	for (int i = 0; i < M_N; i++)
		mock_start(ch, i);
	conf_write(ch);
	daemon_start(ch);
}

int
main(int argc, char **argv)
{
	static struct chaos chaos;
	struct chaos *ch = &chaos;
	int failed;

	parse_args(&ch->o, argc, argv);
	if (self_test(0))
		die("the reply checker failed its self-test");
	rng_state ^= ch->o.seed * 0x9E3779B97F4A7C15ULL;
	if (rng_state == 0)
		rng_state = 1;
	ch->soak_s = ch->o.seconds - ch->o.warmup - ch->o.settle;
	signal(SIGPIPE, SIG_IGN);
	raise_nofile();
	reqs_setup();
	the_chaos = ch;
	ch->t_begin = clock_ms();
	procs_start(ch);
	print_plan(ch);
	loop_setup(ch);
	ch->phase = P_WARMUP;
	cc_each(ch, is_client, 1);
	cc_each(ch, is_prime, 1);
	probe_start(ch);
	phase_after(ch, ch->o.warmup * 1000);
	event_base_dispatch(ch->base);
	probe_stop(ch);
	log_poll(ch);
	ch->log_killed_soak = ch->log_killed;
	procs_stop(ch);
	log_poll(ch);
	failed = report(ch);
	if (ch->o.keep)
		printf("kept %s\n", ch->dir);
	else
		dir_remove(ch->dir);
	loop_free(ch);
	return failed ? 1 : 0;
}
