/* conn.c: checks on client requests as their bytes arrive (http.c feeds
 * them): a request head is capped in size and header count and may not
 * fold lines; CONNECT (and any method but GET, HEAD and POST) and a body
 * past the limit are answered at once. Accept errors (EMFILE) shed one
 * connection from a reserve fd and back the listeners off. */
#ifndef LLMFD_CONN_H
#define LLMFD_CONN_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

struct worker;
struct evconnlistener;

#define CONN_MAX_BODY   (32 << 20) /* a request body, as client.c */
#define CONN_BACKOFF_MS 100        /* listeners off after EMFILE */

/* What conn_scan_feed allows. */
struct conn_limits {
	uint32_t max_bytes;   /* request line and headers */
	uint32_t max_headers; /* header lines */
	int64_t max_body;
};

/* A Content-Length value read byte by byte (conn_clen_byte): OWS, 1*DIGIT,
 * OWS, nothing else; a value past INT64_MAX saturates there. */
struct conn_clen {
	int64_t v;
	uint8_t st; /* 0 before the digits, 1 in them, 2 after, 3 malformed */
};

/* A Transfer-Encoding list read byte by byte, across its header lines. */
struct conn_te {
	uint8_t seen;  /* a Transfer-Encoding line */
	uint8_t last;  /* the last coding so far is chunked */
	uint8_t after; /* a coding after chunked (or chunked twice): 400 */
	uint8_t other; /* a coding other than chunked: 501 */
	uint8_t m;     /* the element's bytes matching "chunked" (8: not) */
	uint8_t ph;    /* the element: 0 before its token, 1 in it, 2 after */
};

/* The incremental scan of one request as its bytes arrive. */
struct conn_scan {
	int st;
	uint32_t bytes, nhdr;
	int64_t clen, left, body;
	int ndig, chunked, http10, anthropic;
	int cr; /* chunk framing: a CR that must be followed by LF */
	/* the framing header the current line is (CONN_F_*), its value so
	 * far, and a CR held back (one before LF ends the line) */
	uint8_t fld, fcr;
	struct conn_clen fclen;
	struct conn_te te;
	uint16_t llen;
	char line[64]; /* start of the current line */
	char tail[9];  /* end of the request line ("HTTP/1.0") */
	char method[16];
};

/* Reset s for a new request. */
void conn_scan_init(struct conn_scan *);
/*
 * Scan n more bytes of a request. 0 while it is acceptable (bytes past the
 * end of the request are not looked at; what this scan does not
 * understand ends it, for http.c's parser to refuse); else the HTTP status to
 * answer at once (400 folded header line or a line starting with a bare
 * CR, 405 method, 413 chunked body past max_body, 431 head past max_bytes
 * or max_headers) with *why saying so. A Content-Length past max_body is
 * http.c's to refuse, after it has parsed the head.
 */
int conn_scan_feed(struct conn_scan *, const char *p, size_t n,
                   const struct conn_limits *, const char **why);
/* The error reply for status (whole HTTP message, Connection: close) in
 * the client's shape: Anthropic's for /v1/messages, else OpenAI's. */
void conn_error_reply(struct buf *, int status, const char *why, int anthropic,
                      int http10);

/* Read one byte of a Content-Length value into c. */
void conn_clen_byte(struct conn_clen *c, char b);
/* The Content-Length value c read, or -1 when it is malformed. */
int64_t conn_clen_end(const struct conn_clen *c);
/* The n bytes at v as a Content-Length value (-1: malformed), read by the
 * same rule as the scan reads it as it arrives. */
int64_t conn_clen(const char *v, size_t n);
/* The scanned head's Transfer-Encoding: 0 when it has none or it is
 * chunked alone (s->chunked), else the status to refuse it with (400 a
 * list that does not end in chunked, 501 another coding before it) and
 * *why. */
int conn_scan_te(const struct conn_scan *s, const char **why);

/* Whether the head is in (the scan is in the body, or done). */
int conn_scan_head_done(const struct conn_scan *);
/*
 * Check a whole head (len bytes at p, ending with its blank line "\r\n\r\n",
 * within max_bytes) in one pass, as the byte-by-byte scan checks it, with
 * its answers: 0 when acceptable (the client's error shape noted), 1 when
 * it is not one for a whole check (blank lines only, or an earlier head
 * ended with bare LFs: scan it), else the status with *why.
 */
int conn_scan_head(struct conn_scan *, const char *p, size_t len,
                   const struct conn_limits *, const char **why);
/* The head checked whole was bytes bytes, with no chunked body and a
 * Content-Length of clen (-1 for none): the scan is done; 413 with *why
 * when clen is past max_body. */
int conn_scan_whole(struct conn_scan *, uint32_t bytes, int64_t clen,
                    const struct conn_limits *, const char **why);
/* Whether the scan is at the end of the request. */
int conn_scan_done(const struct conn_scan *);

/* Whether s[0, n) holds a CR or LF (a header value that would end its
 * line). */
int conn_line_breaks(const char *s, size_t n);

/* Worker start: the reserve fd, the back-off timer, libevent's log. */
int conn_init(struct worker *);
void conn_free(void);
/* The Date header's value (RFC 1123), formatted once a second. */
const char *conn_date(void);
/* The 413 reason for a body past max_body. */
extern const char conn_why_body[];
/* accept() failed on a listener (evconnlistener error callback). */
void conn_accept_error(struct evconnlistener *, void *);
/* Whether the listeners are backed off after EMFILE. */
int conn_accept_paused(void);

#endif
