/* Unit tests for the request scanner of worker/conn.c (conn_scan_feed):
 * what it lets through, what it answers at once, and its error replies. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdio.h>
#include <string.h>

#include "common/buf.h"
#include "common/json.h"
#include "worker/conn.h"

static const struct conn_limits lim = {
    .max_bytes = 1024, .max_headers = 8, .max_body = 1000};

/* Scan text whole, or a byte at a time; the verdict and, in *why, why. */
static int
scan(struct conn_scan *s, const char *text, int bytewise, const char **why)
{
	size_t n = strlen(text);
	int rc = 0;

	conn_scan_init(s);
	*why = NULL;
	if (!bytewise)
		return conn_scan_feed(s, text, n, &lim, why);
	for (size_t i = 0; i < n && rc == 0; i++)
		rc = conn_scan_feed(s, text + i, 1, &lim, why);
	return rc;
}

/* The verdict both ways, which must agree. */
static int
verdict(const char *text)
{
	struct conn_scan a, b;
	const char *wa, *wb;
	int ra = scan(&a, text, 0, &wa), rb = scan(&b, text, 1, &wb);

	cr_assert(eq(int, ra, rb), "whole %d, bytewise %d: %s", ra, rb, text);
	return ra;
}

Test(conn, ordinary_requests_pass)
{
	struct conn_scan s;
	const char *why;

	cr_assert(eq(int,
	             verdict("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
	                     "Content-Length: 2\r\n\r\n{}"),
	             0));
	cr_assert(eq(int, verdict("\r\nGET /healthz HTTP/1.1\n\n"), 0));
	cr_assert(eq(int,
	             verdict("POST /v1/messages HTTP/1.0\r\nA: b\r\n"
	                     "Transfer-Encoding: chunked\r\n\r\n"
	                     "5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\n"),
	             0));
	scan(&s, "POST /v1/messages?beta=true HTTP/1.0\r\n\r\n", 1, &why);
	cr_assert(eq(int, s.anthropic, 1));
	cr_assert(eq(int, s.http10, 1));
	scan(&s, "POST /v1/chat/completions HTTP/1.1\r\n\r\n", 0, &why);
	cr_assert(eq(int, s.anthropic, 0));
	cr_assert(eq(int, s.http10, 0));
}

Test(conn, head_limits)
{
	char big[2048];
	struct buf many = {0};

	snprintf(big, sizeof big, "POST /%01500d HTTP/1.1\r\n\r\n", 0);
	cr_assert(eq(int, verdict(big), 431));
	buf_adds(&many, "POST / HTTP/1.1\r\n");
	for (int i = 0; i < 9; i++)
		buf_printf(&many, "X-%d: y\r\n", i);
	cr_assert(eq(int, verdict(buf_cstr(&many)), 431));
	buf_free(&many);
	cr_assert(
	    eq(int, verdict("POST / HTTP/1.1\r\nA: b\r\n c\r\n\r\n"), 400));
	cr_assert(
	    eq(int, verdict("POST / HTTP/1.1\r\nA: b\r\n\tc\r\n\r\n"), 400));
}

Test(conn, methods)
{
	cr_assert(
	    eq(int, verdict("CONNECT example.com:443 HTTP/1.1\r\n"), 405));
	cr_assert(eq(int, verdict("DELETE /v1/models HTTP/1.1\r\n"), 405));
	cr_assert(eq(int, verdict("get / HTTP/1.1\r\n"), 405));
	cr_assert(eq(int, verdict("HEAD /healthz HTTP/1.1\r\n\r\n"), 0));
}

Test(conn, body_limits)
{
	/* a Content-Length is http.c's to judge once the head is parsed
	 * (wire/body_cap_both_ways) */
	cr_assert(eq(int,
	             verdict("POST / HTTP/1.1\r\nContent-Length: 1001\r\n\r\n"),
	             0));
	cr_assert(eq(int,
	             verdict("POST / HTTP/1.1\r\nContent-Length: 1000\r\n\r\n"),
	             0));
	/* chunked: refused at the size line that passes the limit */
	cr_assert(eq(int,
	             verdict("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
	                     "\r\n3e9\r\n"),
	             413));
	cr_assert(eq(int,
	             verdict("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
	                     "\r\n1f4\r\n"),
	             0));
	/* framing the scan does not understand ends it (http.c refuses it) */
	cr_assert(eq(int,
	             verdict("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
	                     "\r\nzz\r\n"),
	             0));
}

/* A line that starts with a CR not before LF is refused where the blank
 * line could be: it used to end the head there, past the body cap. */
Test(conn, bare_cr_line_refused)
{
	struct conn_scan s;
	const char *why;

	cr_assert(eq(int,
	             verdict("POST / HTTP/1.1\r\nContent-Length: 99999\r\n"
	                     "\rX: y\r\n\r\n"),
	             400));
	scan(&s, "POST / HTTP/1.1\r\n\r\r\n", 1, &why);
	cr_assert(why != NULL && strstr(why, "a CR not before LF") != NULL);
	cr_assert(eq(int, verdict("POST / HTTP/1.1\r\nA: b\r\n\r\n"), 0));
}

/* Bytes after a complete request are not scanned (pipelining). */
Test(conn, stops_at_the_end_of_the_request)
{
	cr_assert(eq(int,
	             verdict("POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"
	                     "CONNECT x HTTP/1.1\r\n"),
	             0));
}

/* The answer: a whole HTTP message with a JSON body of its length. */
Test(conn, error_reply)
{
	struct buf b = {0};
	const char *t, *body;
	size_t clen = 0;
	struct json j = {0};

	conn_error_reply(&b, 431, "request header fields too large", 0, 0);
	t = buf_cstr(&b);
	cr_assert(strncmp(t, "HTTP/1.1 431 Request Header Fields Too Large\r\n",
	                  46) == 0,
	          "%s", t);
	cr_assert(strstr(t, "Connection: close\r\n") != NULL);
	cr_assert(sscanf(strstr(t, "Content-Length: "), "Content-Length: %zu",
	                 &clen) == 1);
	body = strstr(t, "\r\n\r\n") + 4;
	cr_assert(eq(sz, clen, strlen(body)));
	cr_assert(eq(int, json_parse(&j, body, strlen(body)), 0));
	buf_reset(&b);
	conn_error_reply(&b, 413, "too big", 1, 1);
	t = buf_cstr(&b);
	cr_assert(strncmp(t, "HTTP/1.0 413 ", 13) == 0, "%s", t);
	cr_assert(strstr(t, "\"type\":\"error\"") != NULL, "%s", t);
	cr_assert(strstr(t, "\"request_too_large\"") != NULL, "%s", t);
	json_free(&j);
	buf_free(&b);
}

/* conn_line_breaks finds a CR or LF at every offset of values of every
 * length up to 40 (its 8-byte steps and the tail), and no other byte
 * (below 14, control, high) counts. */
Test(conn, line_breaks_every_byte_at_every_offset)
{
	char s[41];

	cr_assert(eq(int, conn_line_breaks("", 0), 0));
	for (size_t n = 1; n <= 40; n++)
		for (size_t at = 0; at < n; at++)
			for (int b = 0; b < 256; b++) {
				memset(s, 'a', n);
				s[at] = (char)b;
				cr_assert(eq(int, conn_line_breaks(s, n),
				             b == '\r' || b == '\n'),
				          "byte %d at %zu of %zu", b, at, n);
			}
	memset(s, 0x0d - 1, 40); /* bytes just below CR everywhere */
	cr_assert(eq(int, conn_line_breaks(s, 40), 0));
	s[39] = '\n';
	cr_assert(eq(int, conn_line_breaks(s, 40), 1));
	cr_assert(eq(int, conn_line_breaks("x\r", 1), 0),
	          "the length bounds the scan");
}

/* Content-Length: OWS, digits, OWS and nothing else; past INT64_MAX it
 * saturates (too large, not malformed). */
Test(conn, content_length_values)
{
	cr_assert(eq(i64, conn_clen("41", 2), 41));
	cr_assert(eq(i64, conn_clen(" \t0041 \t", 8), 41));
	cr_assert(eq(i64, conn_clen("0", 1), 0));
	cr_assert(eq(i64, conn_clen("99999999999999999999999", 23), INT64_MAX));
	cr_assert(eq(i64, conn_clen("9223372036854775807", 19), INT64_MAX));
	cr_assert(eq(i64, conn_clen("9223372036854775806", 19), INT64_MAX - 1));
	static const char *const bad[] = {"",    " ",   "+1",   "-0",  "4 1",
	                                  "41x", "0x5", "4\r1", "1e3", "4,4"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		cr_assert(eq(i64, conn_clen(bad[i], strlen(bad[i])), -1), "%s",
		          bad[i]);
}

/* The scan reads a Content-Length line's value whole, however long the
 * line, and one CR before LF ends it; the same value whole or bytewise. */
Test(conn, content_length_scanned_whole)
{
	struct conn_scan a, b;
	const char *why;
	char t[256];

	snprintf(t, sizeof t,
	         "POST / HTTP/1.1\r\nContent-Length: %0120d\r\n\r\n", 7);
	scan(&a, t, 0, &why);
	scan(&b, t, 1, &why);
	cr_assert(eq(i64, a.clen, 7));
	cr_assert(eq(i64, b.clen, 7));
	scan(&a, "POST / HTTP/1.1\r\ncontent-length:7\n\n", 1, &why);
	cr_assert(eq(i64, a.clen, 7));
	scan(&a, "POST / HTTP/1.1\r\nContent-Length: 7\r\r\n\r\n", 1, &why);
	cr_assert(eq(i64, a.clen, -1));
	scan(&a, "POST / HTTP/1.1\r\nContent-Length: 7x\r\n\r\n", 0, &why);
	cr_assert(eq(i64, a.clen, -1));
	/* a header whose name only starts like one is not it */
	scan(&a, "POST / HTTP/1.1\r\nContent-Lengthy: 7\r\n\r\n", 0, &why);
	cr_assert(eq(i64, a.clen, -1));
	scan(&a, "POST / HTTP/1.1\r\nContent-Length: 7\r\n\r\n", 0, &why);
	cr_assert(eq(i64, a.clen, 7));
}

/* The status for a head's Transfer-Encoding, whole and bytewise alike. */
static int
te_verdict(const char *te)
{
	struct conn_scan a, b;
	const char *why, *wa = NULL, *wb = NULL;
	char t[512];
	int ra, rb;

	snprintf(t, sizeof t, "POST / HTTP/1.1\r\n%s\r\n", te);
	cr_assert(eq(int, scan(&a, t, 0, &why), 0), "%s", t);
	cr_assert(eq(int, scan(&b, t, 1, &why), 0), "%s", t);
	ra = conn_scan_te(&a, &wa);
	rb = conn_scan_te(&b, &wb);
	cr_assert(eq(int, ra, rb), "%s", t);
	cr_assert(eq(int, a.chunked, b.chunked), "%s", t);
	cr_assert(eq(int, a.chunked, ra == 0 && a.te.seen), "%s", t);
	return ra;
}

/* Transfer-Encoding is a list over all its lines that must end in one
 * chunked (400), with no other coding before it (501). */
Test(conn, transfer_encoding_lists)
{
	cr_assert(eq(int, te_verdict(""), 0));
	cr_assert(eq(int, te_verdict("Transfer-Encoding: chunked\r\n"), 0));
	cr_assert(eq(int, te_verdict("transfer-encoding:CHUNKED\n"), 0));
	cr_assert(eq(int, te_verdict("Transfer-Encoding: , chunked ,\r\n"), 0));
	cr_assert(eq(int,
	             te_verdict("Transfer-Encoding:\r\n"
	                        "Transfer-Encoding: chunked\r\n"),
	             0));
	cr_assert(
	    eq(int, te_verdict("Transfer-Encoding: gzip, chunked\r\n"), 501));
	cr_assert(eq(int,
	             te_verdict("Transfer-Encoding: gzip\r\n"
	                        "Transfer-Encoding: chunked\r\n"),
	             501));
	static const char *const end[] = {
	    "Transfer-Encoding: gzip\r\n",
	    "Transfer-Encoding: notchunked\r\n",
	    "Transfer-Encoding: chunkedx\r\n",
	    "Transfer-Encoding: chunked, gzip\r\n",
	    "Transfer-Encoding: chunked, chunked\r\n",
	    "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
	    "Transfer-Encoding: chunked;q=1\r\n",
	    "Transfer-Encoding: chun ked\r\n",
	    "Transfer-Encoding: chunked\rx\r\n",
	    "Transfer-Encoding: \r\n"};
	for (size_t i = 0; i < sizeof end / sizeof end[0]; i++)
		cr_assert(eq(int, te_verdict(end[i]), 400), "%s", end[i]);
	/* the list's element past the scanner's kept line start */
	char t[300];
	snprintf(t, sizeof t, "Transfer-Encoding: %200s\r\n", "chunked");
	cr_assert(eq(int, te_verdict(t), 0));
	snprintf(t, sizeof t, "Transfer-Encoding: chunked,%200s\r\n", "gzip");
	cr_assert(eq(int, te_verdict(t), 400));
}
