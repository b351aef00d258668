/* AWS Signature Version 4 (see sigv4.h). The canonical request follows
 * botocore's auth.py: the path as sent, each byte but unreserved ones and
 * '/' percent-encoded again; the query split, decoded, re-encoded and
 * sorted; headers lowercased, trimmed, folded, joined and sorted. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "common/sigv4.h"

#define SIGV4_ALGO "AWS4-HMAC-SHA256"
#define SIGV4_MAXH 64 /* distinct signed header names */

/* Hex of n bytes into out (2n + 1 bytes). */
static void
hex(const unsigned char *p, size_t n, char *out)
{
	static const char d[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = d[p[i] >> 4];
		out[2 * i + 1] = d[p[i] & 15];
	}
	out[2 * n] = '\0';
}

/* Hex SHA-256 of n bytes. */
void
sigv4_sha256_hex(const void *p, size_t n, char out[65])
{
	unsigned char md[SHA256_DIGEST_LENGTH];

	SHA256(p, n, md);
	hex(md, sizeof md, out);
}

/* t as an X-Amz-Date. */
void
sigv4_date(time_t t, char *out)
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, SIGV4_DATE_LEN + 1, "%Y%m%dT%H%M%SZ", &tm);
}

/* Whether c is unreserved (RFC 3986). */
static int
unreserved(unsigned char c)
{
	return isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~';
}

/* Append n bytes of s percent-encoded; '/' kept when slash is set. */
static void
uri_encode(struct buf *b, const char *s, size_t n, int slash)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (unreserved(c) || (slash && c == '/'))
			buf_addc(b, (char)c);
		else
			buf_printf(b, "%%%02X", c);
	}
}

/* Append n bytes of a query component, decoded then encoded. */
static void
query_part(struct buf *b, const char *s, size_t n)
{
	struct buf d = {0};

	buf_add_unescaped(&d, s, n);
	uri_encode(b, d.data ? d.data : "", d.len, 0);
	buf_free(&d);
}

/* qsort comparator for canonical "k=v" strings: by key, then value. */
static int
cmp_param(const void *a, const void *b)
{
	const char *x = *(char *const *)a, *y = *(char *const *)b;
	size_t kx = strcspn(x, "="), ky = strcspn(y, "=");
	int c = strncmp(x, y, kx < ky ? kx : ky);

	if (c != 0 || kx != ky)
		return c != 0 ? c : kx < ky ? -1 : 1;
	return strcmp(x + kx, y + ky);
}

/* Append the canonical query string of q (n bytes). */
static int
canon_query(struct buf *out, const char *q, size_t n)
{
	struct buf one = {0};
	char **v = NULL, **g;
	size_t nv = 0, i, k, e;
	int rc = -1;

	for (i = 0; i <= n; i = e + 1) {
		e = i;
		while (e < n && q[e] != '&')
			e++;
		if (e == i)
			continue;
		buf_reset(&one);
		k = i;
		while (k < e && q[k] != '=')
			k++;
		query_part(&one, q + i, k - i);
		buf_addc(&one, '=');
		if (k < e)
			query_part(&one, q + k + 1, e - k - 1);
		if ((g = realloc(v, (nv + 1) * sizeof *v)) == NULL || one.oom)
			goto out;
		v = g;
		if ((v[nv] = strdup(buf_cstr(&one))) == NULL)
			goto out;
		nv++;
	}
	qsort(v, nv, sizeof *v, cmp_param);
	for (i = 0; i < nv; i++) {
		if (i)
			buf_addc(out, '&');
		buf_adds(out, v[i]);
	}
	rc = 0;
out:
	for (i = 0; i < nv; i++)
		free(v[i]);
	free(v);
	buf_free(&one);
	return rc;
}

/* A header name lowercased into out (at most sz - 1 bytes). */
static void
lower(const char *s, char *out, size_t sz)
{
	size_t i;

	for (i = 0; s[i] && i + 1 < sz; i++)
		out[i] = (char)tolower((unsigned char)s[i]);
	out[i] = '\0';
}

/* Append a header value trimmed, whitespace runs folded to one space. */
static void
fold_value(struct buf *b, const char *v)
{
	int sp = 0, any = 0;

	for (; *v; v++) {
		if (*v == ' ' || *v == '\t' || *v == '\r' || *v == '\n') {
			sp = any;
			continue;
		}
		if (sp)
			buf_addc(b, ' ');
		sp = 0;
		any = 1;
		buf_addc(b, *v);
	}
}

/* qsort comparator for lowercased header names. */
static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The distinct lowercased header names of s, sorted, into names; their
 * count, or -1 if there are too many. */
static int
header_names(const struct sigv4 *s, char names[][128], char **sorted)
{
	int n = 0, k;
	char low[128];

	for (int i = 0; i < s->nhdrs; i++) {
		lower(s->hdrs[i].name, low, sizeof low);
		for (k = 0; k < n && strcmp(names[k], low) != 0; k++)
			;
		if (k < n)
			continue;
		if (n == SIGV4_MAXH)
			return -1;
		memcpy(names[n], low, sizeof low);
		sorted[n] = names[n];
		n++;
	}
	qsort(sorted, (size_t)n, sizeof *sorted, cmp_str);
	return n;
}

/* Append the canonical headers block and, to signed, the names. */
static int
canon_headers(const struct sigv4 *s, struct buf *out, struct buf *signed_)
{
	char names[SIGV4_MAXH][128], *sorted[SIGV4_MAXH], low[128];
	int n = header_names(s, names, sorted), first;

	if (n < 0)
		return -1;
	for (int i = 0; i < n; i++) {
		buf_adds(out, sorted[i]);
		buf_addc(out, ':');
		first = 1;
		for (int k = 0; k < s->nhdrs; k++) {
			lower(s->hdrs[k].name, low, sizeof low);
			if (strcmp(low, sorted[i]) != 0)
				continue;
			if (!first)
				buf_addc(out, ',');
			fold_value(out, s->hdrs[k].value);
			first = 0;
		}
		buf_addc(out, '\n');
		if (i)
			buf_addc(signed_, ';');
		buf_adds(signed_, sorted[i]);
	}
	return 0;
}

/* The canonical request and its signed header names. */
static int
canonical(const struct sigv4 *s, struct buf *out, struct buf *signed_)
{
	const char *q = strchr(s->path, '?');
	size_t plen = q ? (size_t)(q - s->path) : strlen(s->path);
	char h[65];

	buf_adds(out, s->method);
	buf_addc(out, '\n');
	if (plen == 0)
		buf_addc(out, '/');
	uri_encode(out, s->path, plen, 1);
	buf_addc(out, '\n');
	if (q && canon_query(out, q + 1, strlen(q + 1)) == -1)
		return -1;
	buf_addc(out, '\n');
	if (canon_headers(s, out, signed_) == -1)
		return -1;
	buf_addc(out, '\n');
	buf_add(out, signed_->data, signed_->len);
	buf_addc(out, '\n');
	if (s->payload_hash)
		buf_adds(out, s->payload_hash);
	else {
		sigv4_sha256_hex(s->body ? s->body : "", s->blen, h);
		buf_adds(out, h);
	}
	return out->oom || signed_->oom ? -1 : 0;
}

/* The canonical request; see sigv4.h. */
int
sigv4_canonical(const struct sigv4 *s, struct buf *out)
{
	struct buf sh = {0};
	int rc = canonical(s, out, &sh);

	buf_free(&sh);
	return rc;
}

/* The credential scope: YYYYMMDD/region/service/aws4_request. */
static void
scope(const struct sigv4 *s, struct buf *out)
{
	buf_printf(out, "%.8s/%s/%s/aws4_request", s->amz_date, s->region,
	           s->service);
}

/* The string to sign; see sigv4.h. */
int
sigv4_string_to_sign(const struct sigv4 *s, const struct buf *creq,
                     struct buf *out)
{
	char h[65];

	sigv4_sha256_hex(creq->data ? creq->data : "", creq->len, h);
	buf_adds(out, SIGV4_ALGO "\n");
	buf_adds(out, s->amz_date);
	buf_addc(out, '\n');
	scope(s, out);
	buf_addc(out, '\n');
	buf_adds(out, h);
	return out->oom ? -1 : 0;
}

/* HMAC-SHA256 of msg with key into md (32 bytes). */
static void
hmac(const void *key, size_t klen, const char *msg, unsigned char *md)
{
	unsigned int len = SHA256_DIGEST_LENGTH;

	HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg,
	     strlen(msg), md, &len);
}

/* The signature (hex) of sts. */
static void
signature(const struct sigv4 *s, const struct buf *sts, char out[65])
{
	unsigned char k[SHA256_DIGEST_LENGTH], sig[SHA256_DIGEST_LENGTH];
	struct buf secret = {0};
	char date[9];
	unsigned int len = sizeof sig;

	snprintf(date, sizeof date, "%.8s", s->amz_date);
	buf_printf(&secret, "AWS4%s", s->secret_key);
	hmac(secret.data ? secret.data : "", secret.len, date, k);
	hmac(k, sizeof k, s->region, k);
	hmac(k, sizeof k, s->service, k);
	hmac(k, sizeof k, "aws4_request", k);
	HMAC(EVP_sha256(), k, sizeof k, (const unsigned char *)sts->data,
	     sts->len, sig, &len);
	hex(sig, sizeof sig, out);
	if (secret.data)
		OPENSSL_cleanse(secret.data, secret.len);
	OPENSSL_cleanse(k, sizeof k);
	buf_free(&secret);
}

/* The Authorization header value; see sigv4.h. */
int
sigv4_authorization(const struct sigv4 *s, struct buf *out)
{
	struct buf creq = {0}, sh = {0}, sts = {0};
	char sig[65];
	int rc = -1;

	if (canonical(s, &creq, &sh) == -1 ||
	    sigv4_string_to_sign(s, &creq, &sts) == -1)
		goto out;
	signature(s, &sts, sig);
	buf_adds(out, SIGV4_ALGO " Credential=");
	buf_adds(out, s->access_key_id);
	buf_addc(out, '/');
	scope(s, out);
	buf_adds(out, ", SignedHeaders=");
	buf_add(out, sh.data, sh.len);
	buf_adds(out, ", Signature=");
	buf_adds(out, sig);
	rc = out->oom ? -1 : 0;
out:
	buf_free(&creq);
	buf_free(&sh);
	buf_free(&sts);
	return rc;
}
