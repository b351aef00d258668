/* The AWS event stream framing, decoded incrementally (see evstream.h).
 * A message is checked before anything in it is trusted: the prelude CRC
 * before its lengths, the message CRC before its headers and payload. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "common/evstream.h"

#define EVS_DEFAULT_MAX (EVS_MIN_MSG + EVS_MAX_HEADERS + EVS_MAX_PAYLOAD)

static size_t evs_max = EVS_DEFAULT_MAX;
static uint32_t crc_table[256];

/* Set the cap on one whole message. */
void
evs_set_max(size_t n)
{
	evs_max = n < EVS_MIN_MSG ? EVS_MIN_MSG : n;
}

/* Fill the CRC-32 table once (reflected polynomial 0xEDB88320). */
static void
crc_init(void)
{
	uint32_t c;

	if (crc_table[1] != 0)
		return;
	for (uint32_t i = 0; i < 256; i++) {
		c = i;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
		crc_table[i] = c;
	}
}

/* CRC-32 of n bytes continuing from crc. */
uint32_t
evs_crc32(uint32_t crc, const void *p, size_t n)
{
	const unsigned char *s = p;

	crc_init();
	crc = ~crc;
	while (n--)
		crc = crc_table[(crc ^ *s++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

/* A big-endian 32-bit integer. */
static uint32_t
be32(const char *p)
{
	const unsigned char *u = (const unsigned char *)p;

	return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 |
	       (uint32_t)u[2] << 8 | u[3];
}

/* Record why the stream is malformed; -1. */
static int
evs_fail(struct evs *e, const char *why)
{
	snprintf(e->err, sizeof e->err, "malformed event stream: %s", why);
	return -1;
}

/* The size of a header value of type t at p (n bytes left), or -1. */
static long
evs_value_len(int t, const char *p, size_t n)
{
	static const int fixed[] = {0, 0, 1, 2, 4, 8, -1, -1, 8, 16};
	size_t len;

	if (t < 0 || t > 9)
		return -1;
	if (t != 6 && t != 7)
		return (size_t)fixed[t] <= n ? fixed[t] : -1;
	if (n < 2)
		return -1;
	len = 2 + ((size_t)(unsigned char)p[0] << 8 | (unsigned char)p[1]);
	return len <= n ? (long)len : -1;
}

/* Keep a string header llmfd acts on in m; -1 if it came before. */
static int
evs_keep(struct evs_msg *m, const char *name, size_t nl, const char *v,
         size_t vl)
{
	static const struct {
		const char *name;
		size_t off;
	} keep[] = {
	    {":message-type", offsetof(struct evs_msg, message_type)},
	    {":event-type", offsetof(struct evs_msg, event_type)},
	    {":exception-type", offsetof(struct evs_msg, exception_type)},
	    {":error-code", offsetof(struct evs_msg, error_code)},
	    {":error-message", offsetof(struct evs_msg, error_message)},
	    {":content-type", offsetof(struct evs_msg, content_type)},
	};
	struct evs_str *s;

	for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++) {
		if (strlen(keep[i].name) != nl ||
		    memcmp(keep[i].name, name, nl) != 0)
			continue;
		s = (struct evs_str *)((char *)m + keep[i].off);
		if (s->p != NULL)
			return -1;
		s->p = v;
		s->n = vl;
	}
	return 0;
}

/* Parse hl bytes of headers at p into m; -1 if malformed. */
static int
evs_headers(struct evs *e, const char *p, size_t hl, struct evs_msg *m)
{
	size_t off = 0, nl;
	long vl;
	int t;

	while (off < hl) {
		nl = (unsigned char)p[off];
		if (nl == 0 || off + 1 + nl + 1 > hl)
			return evs_fail(e, "header name out of bounds");
		t = (unsigned char)p[off + 1 + nl];
		vl = evs_value_len(t, p + off + 2 + nl, hl - off - 2 - nl);
		if (vl < 0)
			return evs_fail(e, "header value out of bounds");
		if (t == 7 && evs_keep(m, p + off + 1, nl, p + off + 4 + nl,
		                       (size_t)vl - 2) == -1)
			return evs_fail(e, "duplicate header");
		off += 2 + nl + (size_t)vl;
		m->nheaders++;
	}
	return 0;
}

/* Check the prelude of the held bytes and set e->need; -1 if bad. */
static int
evs_prelude(struct evs *e)
{
	const char *p = e->msg.data;
	uint32_t total = be32(p), hl = be32(p + 4);

	if (evs_crc32(0, p, 8) != be32(p + 8))
		return evs_fail(e, "prelude CRC mismatch");
	if (total < EVS_MIN_MSG || total > evs_max)
		return evs_fail(e, "message length out of bounds");
	if (hl > EVS_MAX_HEADERS || hl > total - EVS_MIN_MSG)
		return evs_fail(e, "headers length out of bounds");
	e->need = total;
	return 0;
}

/* A whole message is held: check it and hand it to cb. */
static int
evs_deliver(struct evs *e, evs_cb cb, void *arg)
{
	const char *p = e->msg.data;
	size_t total = e->need, hl = be32(p + 4);
	struct evs_msg m;

	if (evs_crc32(0, p, total - 4) != be32(p + total - 4))
		return evs_fail(e, "message CRC mismatch");
	memset(&m, 0, sizeof m);
	if (evs_headers(e, p + EVS_PRELUDE, hl, &m) == -1)
		return -1;
	m.payload = p + EVS_PRELUDE + hl;
	m.plen = total - hl - EVS_MIN_MSG;
	return cb(arg, &m);
}

/* Feed bytes; see evstream.h. */
int
evs_feed(struct evs *e, const char *p, size_t n, evs_cb cb, void *arg)
{
	size_t want, k;
	int rc;

	while (n > 0) {
		want = e->need ? e->need : EVS_PRELUDE;
		k = want - e->msg.len < n ? want - e->msg.len : n;
		if (buf_add(&e->msg, p, k) == -1 || e->msg.oom)
			return evs_fail(e, "out of memory");
		p += k;
		n -= k;
		if (e->msg.len < want)
			break;
		if (e->need == 0) {
			if (evs_prelude(e) == -1)
				return -1;
			continue;
		}
		rc = evs_deliver(e, cb, arg);
		buf_reset(&e->msg);
		e->need = 0;
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* Whether an unfinished message is held. */
int
evs_pending(const struct evs *e)
{
	return e->msg.len > 0;
}

/* Forget any partial message. */
void
evs_reset(struct evs *e)
{
	buf_reset(&e->msg);
	e->need = 0;
	e->err[0] = '\0';
}

/* Free the buffer when no message is being assembled. */
void
evs_shrink(struct evs *e)
{
	if (e->msg.len == 0)
		buf_park(&e->msg);
}

/* Free the decoder's buffer. */
void
evs_free(struct evs *e)
{
	buf_free(&e->msg);
	e->need = 0;
}

/* Append a big-endian 32-bit integer. */
static void
put_be32(struct buf *b, uint32_t v)
{
	char q[4] = {(char)(v >> 24), (char)(v >> 16), (char)(v >> 8), (char)v};

	buf_add(b, q, 4);
}

/* Append one message; see evstream.h. */
void
evs_encode(struct buf *out, const struct evs_hdr *h, int nh,
           const void *payload, size_t plen)
{
	size_t start = out->len, hl = 0, nl, vl;

	for (int i = 0; i < nh; i++)
		hl += 4 + strlen(h[i].name) + strlen(h[i].value);
	put_be32(out, (uint32_t)(hl + plen + EVS_MIN_MSG));
	put_be32(out, (uint32_t)hl);
	if (out->oom)
		return;
	put_be32(out, evs_crc32(0, out->data + start, 8));
	for (int i = 0; i < nh; i++) {
		nl = strlen(h[i].name);
		vl = strlen(h[i].value);
		buf_addc(out, (char)nl);
		buf_add(out, h[i].name, nl);
		buf_addc(out, 7);
		buf_addc(out, (char)(vl >> 8));
		buf_addc(out, (char)vl);
		buf_add(out, h[i].value, vl);
	}
	buf_add(out, payload, plen);
	if (!out->oom)
		put_be32(out,
		         evs_crc32(0, out->data + start, out->len - start));
}
