/* Google service-account access tokens (see gauth.h). The key was read
 * from its file when the configuration was loaded; here it is parsed
 * once per worker, signs JWT assertions (pure CPU, EVP_DigestSign), and
 * the exchange at the token_uri goes through the non-blocking upstream
 * client like any provider call. A token stays in use until shortly
 * before it expires; from half its life (at most GAUTH_REFRESH_MS before
 * the end) the first request to see it starts one refresh in the
 * background. Requests that find no usable token wait on the one
 * exchange in flight. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "common/b64.h"
#include "common/cfg.h"
#include "common/clock.h"
#include "common/json.h"
#include "common/log.h"
#include "common/secret.h"
#include "worker/gauth.h"
#include "worker/upstream.h"

#define GAUTH_MAX_REPLY (64 << 10)
#define GAUTH_GRANT                                                            \
	"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"     \
	"&assertion="

/* One account: its key, its token and the exchange in flight. */
struct gauth_cred {
	const struct deploy_cfg *d; /* the first deployment using it */
	EVP_PKEY *key;
	struct deploy_cfg tok; /* the token endpoint, as a pool target */
	struct pool *pool;
	struct event *ev_timeout;
	char *token; /* heap, or NULL */
	int64_t got_ms, expires_ms;
	int refreshing;
	unsigned gen; /* bumped at each exchange's end */
	struct upconn *up;
	int status;
	struct buf reply;
	long refreshes;
	TAILQ_HEAD(, gauth_wait) waiters;
};

struct gauth {
	int ncred;
	struct gauth_cred *cred; /* ncred of them */
	int *of;                 /* deployment index -> cred, or -1 */
	int ndeploy;
};

static const struct up_cbs gauth_up_cbs;
static void gauth_timeout(evutil_socket_t, short, void *);

/* ---- JWT ---- */

/* Append base64url(s) (n bytes) to out. */
static void
b64url(struct buf *out, const void *s, size_t n)
{
	b64_encode(out, s, n, 1);
}

/* Sign the JWT input that starts at byte from of jwt with key (RS256)
 * and append ".signature" to it. */
static int
jwt_sign(EVP_PKEY *key, struct buf *jwt, size_t from)
{
	const unsigned char *in = (const unsigned char *)jwt->data + from;
	size_t inlen = jwt->len - from;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned char *sig = NULL;
	size_t sl = 0;
	int rc = -1;

	if (ctx == NULL ||
	    EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key) != 1 ||
	    EVP_DigestSign(ctx, NULL, &sl, in, inlen) != 1 ||
	    (sig = malloc(sl)) == NULL ||
	    EVP_DigestSign(ctx, sig, &sl, in, inlen) != 1)
		goto out;
	buf_addc(jwt, '.');
	b64url(jwt, sig, sl);
	rc = jwt->oom ? -1 : 0;
out:
	free(sig);
	EVP_MD_CTX_free(ctx);
	ERR_clear_error();
	return rc;
}

/* The assertion for an account with a parsed key; see gauth_jwt. */
static int
jwt_make(EVP_PKEY *key, const char *email, const char *kid, const char *aud,
         int64_t now, struct buf *out)
{
	struct buf h = {0}, c = {0};
	size_t from = out->len;
	struct jw jw;

	jw_init(&jw, &h);
	jw_obj(&jw);
	jw_key(&jw, "alg");
	jw_cstr(&jw, "RS256");
	jw_key(&jw, "typ");
	jw_cstr(&jw, "JWT");
	if (kid && kid[0]) {
		jw_key(&jw, "kid");
		jw_cstr(&jw, kid);
	}
	jw_obj_end(&jw);
	jw_init(&jw, &c);
	jw_obj(&jw);
	jw_key(&jw, "iss");
	jw_cstr(&jw, email);
	jw_key(&jw, "scope");
	jw_cstr(&jw, GAUTH_SCOPE);
	jw_key(&jw, "aud");
	jw_cstr(&jw, aud);
	jw_key(&jw, "iat");
	jw_int(&jw, now);
	jw_key(&jw, "exp");
	jw_int(&jw, now + GAUTH_LIFETIME_S);
	jw_obj_end(&jw);
	b64url(out, h.data, h.len);
	buf_addc(out, '.');
	b64url(out, c.data, c.len);
	buf_free(&h);
	buf_free(&c);
	return out->oom ? -1 : jwt_sign(key, out, from);
}

/* An RSA private key from PEM text, or NULL. */
static EVP_PKEY *
key_parse(const char *pem)
{
	BIO *bio = BIO_new_mem_buf(pem, -1);
	EVP_PKEY *k =
	    bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;

	BIO_free(bio);
	if (k && EVP_PKEY_base_id(k) != EVP_PKEY_RSA) {
		EVP_PKEY_free(k);
		k = NULL;
	}
	ERR_clear_error();
	return k;
}

/* The signed JWT assertion; see gauth.h. */
int
gauth_jwt(const char *pem, const char *email, const char *kid, const char *aud,
          int64_t now_s, struct buf *out, char *err, size_t errsz)
{
	EVP_PKEY *k = key_parse(pem);
	int rc;

	if (k == NULL) {
		snprintf(err, errsz, "the private key is not an RSA key");
		return -1;
	}
	if ((rc = jwt_make(k, email, kid, aud, now_s, out)) == -1)
		snprintf(err, errsz, "cannot sign the JWT");
	EVP_PKEY_free(k);
	return rc;
}

/* ---- token replies ---- */

/* Read a 200 reply; see gauth.h. */
int
gauth_parse_token(const char *body, size_t len, struct buf *tok,
                  long long *expires_s)
{
	struct json j = {0};
	char num[32];
	int t, rc = -1;

	*expires_s = GAUTH_LIFETIME_S;
	if (json_parse(&j, body, len) == -1 || json_type(&j, 0) != JSMN_OBJECT)
		goto out;
	t = json_get(&j, 0, "access_token");
	if (json_type(&j, t) != JSMN_STRING || json_str_buf(&j, t, tok) <= 0 ||
	    strpbrk(buf_cstr(tok), "\r\n") != NULL)
		goto out;
	t = json_get(&j, 0, "expires_in");
	if (json_int(&j, t, expires_s) == -1 &&
	    json_str(&j, t, num, sizeof num) > 0)
		*expires_s = strtoll(num, NULL, 10);
	if (*expires_s <= 0)
		*expires_s = GAUTH_LIFETIME_S;
	rc = 0;
out:
	json_free(&j);
	return rc;
}

/* Classify a failed exchange; see gauth.h. */
enum errclass
gauth_classify(int status, const char *body, size_t len, char *msg,
               size_t msgsz)
{
	static const char *const again[] = {"internal_failure", "server_error",
	                                    "temporarily_unavailable"};
	struct json j = {0};
	char err[64] = "", desc[160] = "";
	int transient =
	    status == 0 || status == 408 || status == 429 || status >= 500;

	if (json_parse(&j, body, len) == 0 && json_type(&j, 0) == JSMN_OBJECT) {
		json_str(&j, json_get(&j, 0, "error"), err, sizeof err);
		json_str(&j, json_get(&j, 0, "error_description"), desc,
		         sizeof desc);
	}
	json_free(&j);
	for (size_t i = 0; i < sizeof again / sizeof again[0]; i++)
		transient |= strcmp(err, again[i]) == 0;
	snprintf(msg, msgsz, "token exchange failed: HTTP %d%s%s%s%s", status,
	         err[0] ? " " : "", err, desc[0] ? ": " : "", desc);
	secret_redact(msg);
	return transient ? EC_TRANSIENT : EC_AUTH;
}

/* ---- the accounts ---- */

/* The account of d among the first n, or -1. */
static int
cred_find(const struct gauth *g, const struct deploy_cfg *d)
{
	for (int i = 0; i < g->ncred; i++) {
		const struct deploy_cfg *o = g->cred[i].d;

		if (strcmp(o->sa_email, d->sa_email) == 0 &&
		    strcmp(o->sa_key_id, d->sa_key_id) == 0 &&
		    strcmp(o->sa_token_uri, d->sa_token_uri) == 0 &&
		    strcmp(o->sa_private_key, d->sa_private_key) == 0)
			return i;
	}
	return -1;
}

/* Set up account c for deployment d: key, token endpoint, pool. */
static int
cred_init(struct gauth_cred *c, const struct deploy_cfg *d,
          struct event_base *base, struct evdns_base *dns, char **cause)
{
	struct deploy_cfg *t = &c->tok;
	const char *why;

	c->d = d;
	TAILQ_INIT(&c->waiters);
	if ((c->key = key_parse(d->sa_private_key)) == NULL) {
		if (asprintf(cause,
		             "deployment '%s': the service account key of %s "
		             "cannot be used",
		             d->name, d->sa_email) < 0)
			*cause = NULL;
		return -1;
	}
	snprintf(t->name, sizeof t->name, "token:%.50s", d->name);
	snprintf(t->ca_file, sizeof t->ca_file, "%s", d->ca_file);
	if (cfg_url_split(d->sa_token_uri, &t->tls, t->host, sizeof t->host,
	                  &t->port, t->path, sizeof t->path, &why) == -1) {
		if (asprintf(cause, "deployment '%s': token_uri: %s", d->name,
		             why) < 0)
			*cause = NULL;
		return -1;
	}
	if ((c->pool = pool_new(base, dns, t, cause)) == NULL)
		return -1;
	c->ev_timeout = evtimer_new(base, gauth_timeout, c);
	return c->ev_timeout ? 0 : -1;
}

/* The accounts of cfg's deployments; see gauth.h. */
struct gauth *
gauth_new(struct event_base *base, struct evdns_base *dns,
          const struct cfg *cfg, char **cause)
{
	struct gauth *g = calloc(1, sizeof *g);
	int k;

	*cause = NULL;
	if (g == NULL ||
	    (g->of = calloc((size_t)cfg->ndeploy + 1, sizeof *g->of)) == NULL ||
	    (g->cred = calloc((size_t)cfg->ndeploy + 1, sizeof *g->cred)) ==
	        NULL) {
		gauth_free(g);
		return NULL;
	}
	g->ndeploy = cfg->ndeploy;
	for (int i = 0; i < cfg->ndeploy; i++) {
		const struct deploy_cfg *d = &cfg->deploy[i];

		g->of[i] = -1;
		if (d->sa_private_key == NULL)
			continue;
		if ((k = cred_find(g, d)) < 0) {
			k = g->ncred++;
			if (cred_init(&g->cred[k], d, base, dns, cause) == -1) {
				gauth_free(g);
				return NULL;
			}
		}
		g->of[i] = k;
	}
	return g;
}

/* Free every account (no request may still wait on one). */
void
gauth_free(struct gauth *g)
{
	if (g == NULL)
		return;
	for (int i = 0; i < g->ncred; i++) {
		struct gauth_cred *c = &g->cred[i];

		if (c->up)
			up_abort(c->up);
		if (c->ev_timeout)
			event_free(c->ev_timeout);
		pool_free(c->pool);
		EVP_PKEY_free(c->key);
		if (c->token) {
			OPENSSL_cleanse(c->token, strlen(c->token));
			free(c->token);
		}
		buf_free(&c->reply);
	}
	free(g->cred);
	free(g->of);
	free(g);
}

/* The account of deployment d, or NULL. */
static struct gauth_cred *
cred_of(const struct gauth *g, int d)
{
	if (g == NULL || d < 0 || d >= g->ndeploy || g->of[d] < 0)
		return NULL;
	return &g->cred[g->of[d]];
}

/* ---- exchanges ---- */

/* Start one exchange for c; -1 (msg filled) if it cannot be sent. */
static int
cred_refresh(struct gauth_cred *c, char *msg, size_t msgsz)
{
	struct buf body = {0};
	const char *path = c->tok.path[0] ? c->tok.path : "/";
	static const char hdrs[] =
	    "Content-Type: application/x-www-form-urlencoded\r\n"
	    "Accept: application/json\r\n";
	struct timeval tv = {GAUTH_TIMEOUT_MS / 1000, 0};

	buf_adds(&body, GAUTH_GRANT);
	if (jwt_make(c->key, c->d->sa_email, c->d->sa_key_id,
	             c->d->sa_token_uri, clock_wall_ms() / 1000, &body) == -1) {
		snprintf(msg, msgsz,
		         "cannot sign the JWT of service account %s",
		         c->d->sa_email);
		buf_free(&body);
		return -1;
	}
	c->status = 0;
	buf_reset(&c->reply);
	c->up = up_request(c->pool, "POST", path, strlen(path), hdrs,
	                   sizeof hdrs - 1,
	                   &(struct up_part){body.data, body.len, 0}, 1, NULL,
	                   &gauth_up_cbs, c);
	OPENSSL_cleanse(body.data, body.len);
	buf_free(&body);
	if (c->up == NULL) {
		snprintf(msg, msgsz, "out of memory");
		return -1;
	}
	c->refreshing = 1;
	c->refreshes++;
	evtimer_add(c->ev_timeout, &tv);
	log_debug("service account %s: token exchange started", c->d->sa_email);
	return 0;
}

/* The exchange ended: tell the requests that waited for it (a callback
 * may queue a new request, which waits for the next exchange). */
static void
cred_done(struct gauth_cred *c, enum errclass cls, const char *msg)
{
	unsigned gen = c->gen++;
	struct gauth_wait *w;

	c->refreshing = 0;
	c->up = NULL;
	event_del(c->ev_timeout);
	while ((w = TAILQ_FIRST(&c->waiters)) != NULL && w->gen == gen) {
		TAILQ_REMOVE(&c->waiters, w, q);
		w->c = NULL;
		w->cb(w->arg, cls == EC_OK ? c->token : NULL, cls, msg);
	}
}

/* Keep a fresh token: lifetime from now, the old one forgotten. */
static void
cred_take(struct gauth_cred *c, struct buf *tok, long long expires_s)
{
	if (c->token) {
		secret_remove(c->token);
		OPENSSL_cleanse(c->token, strlen(c->token));
		free(c->token);
	}
	c->token = strdup(buf_cstr(tok));
	if (c->token)
		secret_add(c->token);
	c->got_ms = clock_ms();
	c->expires_ms = c->got_ms + expires_s * 1000;
	log_info("service account %s: new access token, valid %lld s",
	         c->d->sa_email, expires_s);
}

/* The reply is in: keep the token or report why there is none. */
static void
cred_finish(struct gauth_cred *c)
{
	struct buf tok = {0};
	long long exp;
	char msg[256];
	enum errclass cls = EC_OK;

	msg[0] = '\0';
	if (c->status == 200 &&
	    gauth_parse_token(c->reply.data ? c->reply.data : "", c->reply.len,
	                      &tok, &exp) == 0) {
		cred_take(c, &tok, exp);
		if (c->token == NULL) {
			cls = EC_TRANSIENT;
			snprintf(msg, sizeof msg, "out of memory");
		}
	} else {
		cls = gauth_classify(c->status,
		                     c->reply.data ? c->reply.data : "",
		                     c->reply.len, msg, sizeof msg);
		log_warnx("service account %s: %s", c->d->sa_email, msg);
	}
	if (tok.data)
		OPENSSL_cleanse(tok.data, tok.len);
	buf_free(&tok);
	cred_done(c, cls, msg);
}

static void
gauth_on_headers(void *arg, const struct up_resp *resp)
{
	struct gauth_cred *c = arg;

	c->status = resp->status;
}

static void
gauth_on_data(void *arg, const char *p, size_t n)
{
	struct gauth_cred *c = arg;

	if (c->reply.len + n <= GAUTH_MAX_REPLY)
		buf_add(&c->reply, p, n);
}

static void
gauth_on_done(void *arg)
{
	struct gauth_cred *c = arg;

	c->up = NULL;
	cred_finish(c);
}

static void
gauth_on_error(void *arg, const char *what)
{
	struct gauth_cred *c = arg;
	char msg[256];

	c->up = NULL;
	snprintf(msg, sizeof msg, "token exchange failed: %s", what);
	log_warnx("service account %s: %s", c->d->sa_email, msg);
	cred_done(c, EC_TRANSIENT, msg);
}

static const struct up_cbs gauth_up_cbs = {
    .headers = gauth_on_headers,
    .data = gauth_on_data,
    .done = gauth_on_done,
    .error = gauth_on_error,
};

/* The exchange took too long: give it up. */
static void
gauth_timeout(evutil_socket_t fd, short ev, void *arg)
{
	struct gauth_cred *c = arg;
	char msg[128];

	(void)fd;
	(void)ev;
	if (c->up)
		up_abort(c->up);
	c->up = NULL;
	snprintf(msg, sizeof msg,
	         "token exchange failed: no answer within %d ms",
	         GAUTH_TIMEOUT_MS);
	log_warnx("service account %s: %s", c->d->sa_email, msg);
	cred_done(c, EC_TRANSIENT, msg);
}

/* ---- requests ---- */

/* How long before its expiry c's token stops being sent, and from when a
 * refresh is started. */
static int64_t
cred_margin(const struct gauth_cred *c, int refresh)
{
	int64_t life = c->expires_ms - c->got_ms;

	if (refresh)
		return life / 2 < GAUTH_REFRESH_MS ? life / 2
		                                   : GAUTH_REFRESH_MS;
	return life / 10 < 10000 ? life / 10 : 10000;
}

/* The bearer token for d; see gauth.h. */
int
gauth_token(struct gauth *g, int d, struct gauth_wait *w, gauth_cb cb,
            void *arg, const char **token, char *msg, size_t msgsz)
{
	struct gauth_cred *c = cred_of(g, d);
	int64_t now = clock_ms();

	*token = NULL;
	if (c == NULL)
		return 1;
	if (c->token && now < c->expires_ms - cred_margin(c, 0)) {
		if (!c->refreshing && now >= c->expires_ms - cred_margin(c, 1))
			(void)cred_refresh(c, msg, msgsz);
		*token = c->token;
		return 1;
	}
	if (!c->refreshing && cred_refresh(c, msg, msgsz) == -1)
		return -1;
	w->c = c;
	w->gen = c->gen;
	w->cb = cb;
	w->arg = arg;
	TAILQ_INSERT_TAIL(&c->waiters, w, q);
	return 0;
}

/* Stop waiting; see gauth.h. */
void
gauth_cancel(struct gauth_wait *w)
{
	if (w->c == NULL)
		return;
	TAILQ_REMOVE(&w->c->waiters, w, q);
	w->c = NULL;
}

/* Forget a token the upstream refused; see gauth.h. */
int
gauth_invalidate(struct gauth *g, int d, const char *token)
{
	struct gauth_cred *c = cred_of(g, d);

	if (c == NULL)
		return 0;
	if (c->token && token && strcmp(c->token, token) == 0) {
		log_info("service account %s: token refused; refreshing",
		         c->d->sa_email);
		c->expires_ms = c->got_ms = clock_ms();
	}
	return 1;
}

/* Exchanges started for d's account. */
long
gauth_refreshes(const struct gauth *g, int d)
{
	const struct gauth_cred *c = cred_of(g, d);

	return c ? c->refreshes : -1;
}

/* Answer the exchange in flight as if from the network (unit tests). */
void
gauth_test_answer(struct gauth *g, int d, int status, const char *body)
{
	struct gauth_cred *c = cred_of(g, d);

	if (c == NULL || !c->refreshing)
		return;
	if (c->up)
		up_abort(c->up);
	c->up = NULL;
	c->status = status;
	buf_reset(&c->reply);
	buf_adds(&c->reply, body);
	cred_finish(c);
}

/* Move the token's expiry to in_ms from now (unit tests). */
void
gauth_test_expire(struct gauth *g, int d, int64_t in_ms)
{
	struct gauth_cred *c = cred_of(g, d);
	int64_t life;

	if (c == NULL || c->token == NULL)
		return;
	life = c->expires_ms - c->got_ms;
	c->expires_ms = clock_ms() + in_ms;
	c->got_ms = c->expires_ms - life;
}
