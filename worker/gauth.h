/* gauth.c: Google service-account access tokens for the worker. One token
 * per account (client_email, key id, token_uri), shared by every
 * deployment of that account; exchanged for a self-signed RS256 JWT at
 * the account's token_uri through the upstream client, refreshed in the
 * background before it expires, and waited for by the requests that find
 * none usable: one exchange at a time per account, never several. */
#ifndef LLMFD_GAUTH_H
#define LLMFD_GAUTH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "common/buf.h"
#include "common/classify.h"

struct cfg;
struct deploy_cfg;
struct event_base;
struct evdns_base;
struct gauth;
struct gauth_cred;

#define GAUTH_SCOPE      "https://www.googleapis.com/auth/cloud-platform"
#define GAUTH_LIFETIME_S 3600
#define GAUTH_REFRESH_MS 300000 /* refresh when less than this remains */
#define GAUTH_TIMEOUT_MS 10000  /* one exchange at most */

/* The answer to a waiting request: the token, or NULL with the class and
 * a message that never holds the key. */
typedef void (*gauth_cb)(void *arg, const char *token, enum errclass,
                         const char *msg);

/* A request waiting for a token (embedded in its attempt). */
struct gauth_wait {
	TAILQ_ENTRY(gauth_wait) q;
	struct gauth_cred *c; /* queued on, or NULL */
	unsigned gen;         /* the exchange it waits for */
	gauth_cb cb;
	void *arg;
};

/* The accounts of cfg's deployments (maybe none), with a pool to each
 * token_uri; NULL (*cause set, heap, or NULL when memory ran out) if a
 * key cannot be used. */
struct gauth *gauth_new(struct event_base *, struct evdns_base *,
                        const struct cfg *, char **cause);
void gauth_free(struct gauth *);

/*
 * The bearer token for deployment d. 1 with *token set (NULL when d uses
 * no account) when it can be sent now: a token that will expire soon
 * starts one refresh in the background. 0 when the caller must wait: w is
 * queued and its callback fires later from the event loop (never from
 * inside this call). -1 when no exchange can be started (msg filled).
 */
int gauth_token(struct gauth *, int d, struct gauth_wait *, gauth_cb, void *arg,
                const char **token, char *msg, size_t msgsz);
/* Stop waiting (the request went away); harmless if not queued. */
void gauth_cancel(struct gauth_wait *);
/* d's upstream refused token (HTTP 401): forget it, so the next request
 * for that account waits for a fresh one. Whether d uses an account. */
int gauth_invalidate(struct gauth *, int d, const char *token);
/* Exchanges started so far for d's account (tests, logs); -1 if none. */
long gauth_refreshes(const struct gauth *, int d);

/* The signed JWT assertion for an account (pure: key PEM, claims, time);
 * 0, or -1 with err filled (never quoting the key). */
int gauth_jwt(const char *pem, const char *email, const char *kid,
              const char *aud, int64_t now_s, struct buf *out, char *err,
              size_t errsz);
/* Read a token endpoint's 200 reply: the access token into tok and its
 * lifetime in seconds (expires_in, a number or a string; 3600 when
 * absent). 0, or -1 when it holds no token. */
int gauth_parse_token(const char *body, size_t len, struct buf *tok,
                      long long *expires_s);
/* Classify a failed token exchange (HTTP status 0 for transport) and
 * describe it in msg: invalid_grant and other refusals are auth, an
 * endpoint that is down or overloaded is transient. */
enum errclass gauth_classify(int status, const char *body, size_t len,
                             char *msg, size_t msgsz);

/* Unit-test seams: answer the exchange in flight for d's account as if
 * from the network, and move its token's expiry (ms from now). */
void gauth_test_answer(struct gauth *, int d, int status, const char *body);
void gauth_test_expire(struct gauth *, int d, int64_t in_ms);

#endif
