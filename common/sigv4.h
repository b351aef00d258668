/* AWS Signature Version 4 (HMAC-SHA256) over the exact bytes of a request:
 * canonical request, string to sign, signing key and the Authorization
 * header value. Pure functions (OpenSSL HMAC and SHA-256). */
#ifndef LLMFD_SIGV4_H
#define LLMFD_SIGV4_H

#include <stddef.h>
#include <time.h>

#include "common/buf.h"

#define SIGV4_DATE_LEN 16 /* YYYYMMDDTHHMMSSZ */

/* One header to sign, as sent (any case; values are trimmed and their
 * whitespace runs folded when signed; repeated names are joined with
 * commas in order). */
struct sigv4_hdr {
	const char *name;
	const char *value;
};

struct sigv4 {
	const char *method;
	const char *path; /* the request target as sent, "?query" included */
	const struct sigv4_hdr *hdrs; /* host, x-amz-date, ... */
	int nhdrs;
	const void *body; /* hashed unless payload_hash is set */
	size_t blen;
	const char *payload_hash; /* hex SHA-256, or NULL */
	const char *amz_date;     /* YYYYMMDDTHHMMSSZ */
	const char *region;
	const char *service;
	const char *access_key_id;
	const char *secret_key;
};

/* The canonical request; 0, or -1 on memory failure. */
int sigv4_canonical(const struct sigv4 *, struct buf *out);
/* The string to sign for a canonical request. */
int sigv4_string_to_sign(const struct sigv4 *, const struct buf *creq,
                         struct buf *out);
/* The whole Authorization header value ("AWS4-HMAC-SHA256 Credential=...,
 * SignedHeaders=..., Signature=..."); 0 or -1. */
int sigv4_authorization(const struct sigv4 *, struct buf *out);
/* Hex SHA-256 of n bytes into out (65 bytes with the NUL). */
void sigv4_sha256_hex(const void *, size_t, char out[65]);
/* t as YYYYMMDDTHHMMSSZ (UTC) into out (SIGV4_DATE_LEN + 1 bytes). */
void sigv4_date(time_t, char *out);

#endif
