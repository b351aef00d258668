#include <string.h>

#include "common/sse.h"

static size_t sse_max_event = SSE_MAX_EVENT;

/* Set the cap on one event's data. */
void
sse_set_max_event(size_t n)
{
	sse_max_event = n;
}

/* The longest line worth buffering: no line may exceed either cap. */
static size_t
sse_max_line(void)
{
	return sse_max_event < SSE_MAX_LINE ? sse_max_event : SSE_MAX_LINE;
}

/* Handle one complete line (without its terminator). */
static int
sse_line(struct sse *s, const char *l, size_t n, sse_cb cb, void *arg)
{
	const char *colon, *v;
	size_t fl, vl;
	int rc;

	if (n == 0) {
		if (!s->has_data) {
			buf_reset(&s->event);
			return 0;
		}
		rc = cb(arg, s->event.data ? s->event.data : "", s->event.len,
		        s->data.data ? s->data.data : "", s->data.len);
		buf_reset(&s->event);
		buf_reset(&s->data);
		s->has_data = 0;
		return rc;
	}
	if (l[0] == ':')
		return 0; /* comment */
	colon = memchr(l, ':', n);
	fl = colon ? (size_t)(colon - l) : n;
	v = colon ? colon + 1 : l + n;
	vl = colon ? n - fl - 1 : 0;
	if (vl && *v == ' ') {
		v++;
		vl--;
	}
	if (fl == 4 && memcmp(l, "data", 4) == 0) {
		if (s->data.len + vl + 1 > sse_max_event)
			return -1;
		if (s->has_data)
			buf_addc(&s->data, '\n');
		buf_add(&s->data, v, vl);
		s->has_data = 1;
	} else if (fl == 5 && memcmp(l, "event", 5) == 0) {
		buf_reset(&s->event);
		buf_add(&s->event, v, vl);
	}
	return (s->data.oom || s->event.oom) ? -1 : 0;
}

/* The first CR or LF in [p, end), or end. */
static const char *
sse_eol(const char *p, const char *end)
{
	const char *lf = memchr(p, '\n', (size_t)(end - p));
	const char *cr = memchr(p, '\r', (size_t)((lf ? lf : end) - p));

	return cr ? cr : lf ? lf : end;
}

/* Feed bytes; lines end in LF, CRLF or CR. */
int
sse_feed(struct sse *s, const char *p, size_t n, sse_cb cb, void *arg)
{
	const char *end = p + n;
	int rc;

	while (p < end) {
		const char *q = p;

		if (s->skip_lf) {
			s->skip_lf = 0;
			if (*p == '\n') {
				p++;
				continue;
			}
		}
		q = sse_eol(p, end);
		if (q == end) {
			if (s->line.len + (size_t)(q - p) > sse_max_line())
				return -1;
			if (buf_add(&s->line, p, (size_t)(q - p)) == -1)
				return -1;
			return 0;
		}
		if (*q == '\r')
			s->skip_lf = 1;
		if (s->line.len) {
			if (buf_add(&s->line, p, (size_t)(q - p)) == -1)
				return -1;
			rc = sse_line(s, s->line.data, s->line.len, cb, arg);
			buf_reset(&s->line);
		} else
			rc = sse_line(s, p, (size_t)(q - p), cb, arg);
		if (rc)
			return rc;
		p = q + 1;
	}
	return 0;
}

/* Forget any partial state. */
void
sse_reset(struct sse *s)
{
	buf_reset(&s->line);
	buf_reset(&s->event);
	buf_reset(&s->data);
	s->has_data = 0;
	s->skip_lf = 0;
}

/* Free the buffers that hold nothing (a stream idle between events). */
void
sse_shrink(struct sse *s)
{
	if (s->line.len == 0)
		buf_park(&s->line);
	if (s->event.len == 0)
		buf_park(&s->event);
	if (s->data.len == 0)
		buf_park(&s->data);
}

/* Release memory. */
void
sse_free(struct sse *s)
{
	buf_free(&s->line);
	buf_free(&s->event);
	buf_free(&s->data);
	s->has_data = 0;
	s->skip_lf = 0;
}
