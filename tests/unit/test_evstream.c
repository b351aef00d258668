/* Unit tests for common/evstream.c: the public event stream vectors
 * (tests/data/evstream, from botocore) decoded whole and split at every
 * byte, corrupted CRCs and lengths refused, truncated streams held as
 * pending, and the encoder round-tripping through the decoder. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/evstream.h"

/* What the decoder handed over: a copy of each message's fields. */
struct seen {
	int n;
	char mtype[32], etype[32], xtype[64], ecode[32], emsg[32], ctype[32];
	int nheaders;
	struct buf payload;
};

/* Copy a string header into dst. */
static void
copy(char *dst, size_t sz, const struct evs_str *s)
{
	snprintf(dst, sz, "%.*s", (int)s->n, s->p ? s->p : "");
}

/* Callback: record the message. */
static int
on_msg(void *arg, const struct evs_msg *m)
{
	struct seen *s = arg;

	s->n++;
	copy(s->mtype, sizeof s->mtype, &m->message_type);
	copy(s->etype, sizeof s->etype, &m->event_type);
	copy(s->xtype, sizeof s->xtype, &m->exception_type);
	copy(s->ecode, sizeof s->ecode, &m->error_code);
	copy(s->emsg, sizeof s->emsg, &m->error_message);
	copy(s->ctype, sizeof s->ctype, &m->content_type);
	s->nheaders = m->nheaders;
	buf_add(&s->payload, m->payload, m->plen);
	return 0;
}

/* Read a vector file (heap). */
static char *
vec(const char *name, size_t *len)
{
	char p[512];
	FILE *f;
	char *s;
	long n;

	snprintf(p, sizeof p, "tests/data/evstream/%s", name);
	cr_assert_not_null(f = fopen(p, "rb"), "cannot open %s", p);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	s = malloc((size_t)n + 1);
	cr_assert_eq(fread(s, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return s;
}

/* Decode p whole: the feed's result, the messages in s. */
static int
decode(const char *p, size_t n, struct seen *s)
{
	struct evs e = {0};
	int rc;

	memset(s, 0, sizeof *s);
	rc = evs_feed(&e, p, n, on_msg, s);
	evs_free(&e);
	return rc;
}

Test(evstream, crc32_matches_zlib)
{
	cr_assert_eq(evs_crc32(0, "123456789", 9), 0xCBF43926u);
	cr_assert_eq(evs_crc32(0, "", 0), 0u);
}

Test(evstream, empty_message)
{
	size_t n;
	char *p = vec("empty.bin", &n);
	struct seen s;

	cr_assert_eq(decode(p, n, &s), 0);
	cr_assert_eq(s.n, 1);
	cr_assert_eq(s.nheaders, 0);
	cr_assert_eq(s.payload.len, 0);
	buf_free(&s.payload);
	free(p);
}

Test(evstream, header_and_payload)
{
	size_t n;
	char *p = vec("payload_one_str_header.bin", &n);
	struct seen s;

	cr_assert_eq(n, 61);
	cr_assert_eq(decode(p, n, &s), 0);
	cr_assert_eq(s.n, 1);
	cr_assert_str_eq(s.ctype, "");
	cr_assert_eq(s.nheaders, 1);
	cr_assert_eq(s.payload.len, 13);
	cr_assert_eq(memcmp(s.payload.data, "{'foo':'bar'}", 13), 0);
	buf_free(&s.payload);
	free(p);
}

Test(evstream, every_header_type)
{
	static const char *const names[] = {
	    "int8_header.bin",        "int16_header.bin",
	    "int32_header.bin",       "int64_header.bin",
	    "payload_no_headers.bin", "all_header_types.bin"};
	static const int nh[] = {1, 1, 1, 1, 0, 10};
	struct seen s;
	size_t n;
	char *p;

	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		p = vec(names[i], &n);
		cr_assert_eq(decode(p, n, &s), 0, "%s", names[i]);
		cr_assert_eq(s.n, 1, "%s", names[i]);
		cr_assert_eq(s.nheaders, nh[i], "%s", names[i]);
		buf_free(&s.payload);
		free(p);
	}
}

Test(evstream, error_message_headers)
{
	size_t n;
	char *p = vec("error_message.bin", &n);
	struct seen s;

	cr_assert_eq(decode(p, n, &s), 0);
	cr_assert_str_eq(s.mtype, "error");
	cr_assert_str_eq(s.ecode, "code");
	cr_assert_str_eq(s.emsg, "message");
	buf_free(&s.payload);
	free(p);
}

/* All positive vectors back to back, split at every byte offset: the
 * same messages every time. */
Test(evstream, split_at_every_byte)
{
	static const char *const names[] = {"empty.bin",
	                                    "int8_header.bin",
	                                    "int16_header.bin",
	                                    "int32_header.bin",
	                                    "int64_header.bin",
	                                    "payload_no_headers.bin",
	                                    "error_message.bin",
	                                    "all_header_types.bin",
	                                    "payload_one_str_header.bin"};
	struct buf all = {0};
	struct seen s;
	struct evs e = {0};
	size_t n;
	char *p;

	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		p = vec(names[i], &n);
		buf_add(&all, p, n);
		free(p);
	}
	for (size_t cut = 0; cut <= all.len; cut++) {
		memset(&s, 0, sizeof s);
		evs_reset(&e);
		cr_assert_eq(evs_feed(&e, all.data, cut, on_msg, &s), 0);
		cr_assert_eq(
		    evs_feed(&e, all.data + cut, all.len - cut, on_msg, &s), 0);
		cr_assert_eq(s.n, 9, "cut at %zu: %d messages", cut, s.n);
		cr_assert_str_eq(s.ctype, "");
		cr_assert_eq(evs_pending(&e), 0);
		buf_free(&s.payload);
	}
	/* one byte at a time */
	memset(&s, 0, sizeof s);
	evs_reset(&e);
	for (size_t i = 0; i < all.len; i++)
		cr_assert_eq(evs_feed(&e, all.data + i, 1, on_msg, &s), 0);
	cr_assert_eq(s.n, 9);
	buf_free(&s.payload);
	evs_free(&e);
	buf_free(&all);
}

Test(evstream, bad_crcs_and_lengths_refused)
{
	static const char *const names[] = {
	    "bad_corrupted_header_length.bin",
	    "bad_corrupted_headers.bin",
	    "bad_corrupted_length.bin",
	    "bad_corrupted_payload.bin",
	    "bad_invalid_headers_length.bin",
	    "bad_invalid_payload_length_prelude.bin"};
	static const char *const why[] = {"prelude CRC",    "message CRC",
	                                  "prelude CRC",    "message CRC",
	                                  "headers length", "message length"};
	struct seen s = {0};
	struct evs e = {0};
	size_t n;
	char *p;

	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		p = vec(names[i], &n);
		evs_reset(&e);
		cr_assert_eq(evs_feed(&e, p, n, on_msg, &s), -1, "%s",
		             names[i]);
		cr_assert(strstr(e.err, why[i]) != NULL, "%s: %s", names[i],
		          e.err);
		free(p);
	}
	cr_assert_eq(s.n, 0);
	evs_free(&e);
}

Test(evstream, truncated_is_pending)
{
	size_t n;
	char *p = vec("payload_one_str_header.bin", &n);
	struct seen s = {0};
	struct evs e = {0};

	for (size_t k = 1; k < n; k++) {
		evs_reset(&e);
		cr_assert_eq(evs_feed(&e, p, k, on_msg, &s), 0);
		cr_assert_eq(evs_pending(&e), 1, "after %zu bytes", k);
	}
	cr_assert_eq(s.n, 0);
	evs_free(&e);
	free(p);
}

Test(evstream, duplicate_kept_header_refused)
{
	static const struct evs_hdr h[] = {{":event-type", "chunk"},
	                                   {":event-type", "chunk"}};
	struct buf b = {0};
	struct seen s;

	evs_encode(&b, h, 2, "{}", 2);
	cr_assert_eq(decode(b.data, b.len, &s), -1);
	buf_free(&b);
}

Test(evstream, encode_round_trip)
{
	static const struct evs_hdr h[] = {
	    {":event-type", "chunk"},
	    {":content-type", "application/json"},
	    {":message-type", "event"}};
	struct buf b = {0};
	struct seen s;
	size_t n;
	char *p = vec("payload_one_str_header.bin", &n);

	evs_encode(
	    &b, (const struct evs_hdr[]){{"content-type", "application/json"}},
	    1, "{'foo':'bar'}", 13);
	cr_assert_eq(b.len, n);
	cr_assert_eq(memcmp(b.data, p, n), 0, "encoder differs from vector");
	buf_reset(&b);
	evs_encode(&b, h, 3, "{\"bytes\":\"e30=\"}", 16);
	cr_assert_eq(decode(b.data, b.len, &s), 0);
	cr_assert_str_eq(s.etype, "chunk");
	cr_assert_str_eq(s.ctype, "application/json");
	cr_assert_str_eq(s.mtype, "event");
	cr_assert_eq(s.payload.len, 16);
	buf_free(&s.payload);
	buf_free(&b);
	free(p);
}

/* Callback: count the message and stop. */
static int
on_msg_stop(void *arg, const struct evs_msg *m)
{
	(void)m;
	(*(int *)arg)++;
	return 7;
}

Test(evstream, callback_stops_feed)
{
	struct buf b = {0};
	struct evs e = {0};
	int n = 0;

	evs_encode(&b, NULL, 0, "x", 1);
	evs_encode(&b, NULL, 0, "y", 1);
	cr_assert_eq(evs_feed(&e, b.data, b.len, on_msg_stop, &n), 7);
	cr_assert_eq(n, 1);
	evs_free(&e);
	buf_free(&b);
}
