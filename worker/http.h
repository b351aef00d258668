/* http.c: the HTTP/1.1 server of client connections, on the sockets
 * themselves. One request at a time per connection (pipelined ones wait
 * their turn); a request is read whole before its handler runs, a reply
 * is written at once and only what the socket does not take is kept. */
#ifndef LLMFD_HTTP_H
#define LLMFD_HTTP_H

#include <stddef.h>
#include <string.h>

struct worker;
struct evbuffer;
struct peer;
struct req;
struct hconn;

/* Request methods (the others are refused while the head is read). */
#define HTTP_GET  1
#define HTTP_HEAD 2
#define HTTP_POST 3

/* A route's handler: the request is whole; it answers now or later. */
typedef void (*http_cb)(struct hconn *, struct worker *);

/* Listen on w's sockets and serve; routes (exact paths) added first. -1 if
 * the listeners could not be made. */
int http_route(const char *path, http_cb);
int http_setup(struct worker *, http_cb notfound);
/* Stop accepting (drain); what is open goes on. */
void http_stop_accepting(struct worker *);
/* Drain: idle connections close now, busy ones after their reply. */
void http_drain(struct worker *);
/* Worker exit: close every connection (requests have let go already). */
void http_free_all(void);
/* Client connections open but those just accepted that have sent
 * nothing yet (a drain does not wait for those). */
int http_open(void);
/* Turn the listeners on or off (one accept per wake-up; conn.c's
 * back-off after EMFILE). */
void http_listeners(struct worker *, int on);
/* Hold stream bytes (on), then write what each connection held with one
 * send (off; nests): the frames one upstream read brings reach their
 * client in two writes at most (the first goes at once: most reads bring
 * one), not one each. */
void http_cork(int on);

/* ---- the request ---- */

int http_method(const struct hconn *);
/* The path (no query) and the target as sent. */
const char *http_path(const struct hconn *);
const char *http_target(const struct hconn *);
/* A request header's value, or NULL (names compared case-insensitively). */
const char *http_header_n(const struct hconn *, const char *name, size_t n);
static inline const char *
http_header(const struct hconn *c, const char *name)
{
	return http_header_n(c, name, strlen(name));
}
/* The body: a run of memory (valid while the handler runs, and until it
 * starts a stream, which lets go of the request) or, for a body read
 * straight into its own allocation, an evbuffer to take it from. */
const char *http_body(const struct hconn *, size_t *len);
struct evbuffer *http_body_buf(const struct hconn *);
/* Who is at the other end (taken on first use). */
const struct peer *http_peer(struct hconn *);
/* The request the engine serves on this connection (close reaches it). */
void http_attach(struct hconn *, struct req *);

/* ---- the reply ---- */

/* Add a header line to the reply ("Connection: close" closes the
 * connection after it instead). */
void http_add_header_n(struct hconn *, const char *name, size_t nlen,
                       const char *value, size_t vlen);
static inline void
http_add_header(struct hconn *c, const char *name, const char *value)
{
	http_add_header_n(c, name, strlen(name), value, strlen(value));
}
/* Add header lines already checked and CRLF-terminated. */
void http_add_lines(struct hconn *, const char *lines, size_t n);
/* A whole reply. */
void http_reply(struct hconn *, int status, const char *ctype, const char *body,
                size_t n);
/* A stream: chunked on HTTP/1.1; on HTTP/1.0 the close ends it. */
void http_stream_start(struct hconn *, int status, const char *ctype);
void http_stream_data(struct hconn *, const char *p, size_t n);
void http_stream_end(struct hconn *);

#endif
