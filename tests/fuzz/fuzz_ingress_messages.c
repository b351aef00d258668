/* libFuzzer: the Anthropic Messages ingress over arbitrary bytes. The
 * first byte picks what the rest is: a Messages request (msgs_to_chat,
 * msgs_count_tokens), a canonical reply (msgs_reply), canonical chunks one
 * per line fed to the stream encoder (then done or fail), or an upstream
 * error message (msgs_error). Whatever is written must be valid JSON (or
 * SSE events whose data is valid JSON); anything else traps. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "worker/ingress/messages.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

/* Trap unless s (n bytes) is one JSON value. */
static void
must_be_json(const char *s, size_t n)
{
	static struct json j;

	if (json_parse(&j, s, n) == -1)
		__builtin_trap();
}

/* Trap unless s is a run of "event: X\ndata: JSON\n\n" events. */
static void
must_be_events(const char *s, size_t n)
{
	const char *p = s, *e = s + n, *nl, *end;

	while (p < e) {
		if (strncmp(p, "event: ", 7) != 0 ||
		    (nl = memchr(p, '\n', (size_t)(e - p))) == NULL ||
		    strncmp(nl + 1, "data: ", 6) != 0 ||
		    (end = strstr(nl + 7, "\n\n")) == NULL)
			__builtin_trap();
		must_be_json(nl + 7, (size_t)(end - nl - 7));
		p = end + 2;
	}
}

/* Request bytes: translate and estimate. */
static void
fuzz_request(const char *d, size_t n)
{
	static struct json j;
	struct buf out = {0};
	char err[256];

	if (json_parse(&j, d, n) == -1)
		return;
	(void)msgs_count_tokens(&j);
	if (msgs_to_chat(&j, &out, err, sizeof err) == 0)
		must_be_json(out.data, out.len);
	else if (out.len != 0 || err[0] == '\0')
		__builtin_trap();
	buf_free(&out);
}

/* Canonical chunks, one per line, then done or fail. */
static void
fuzz_stream(const char *d, size_t n, int fail, int status)
{
	struct msgs_stream st;
	struct buf out = {0};
	const char *p = d, *e = d + n, *nl;

	msgs_stream_init(&st);
	while (p < e) {
		nl = memchr(p, '\n', (size_t)(e - p));
		if (nl == NULL)
			nl = e;
		(void)msgs_stream_chunk(&st, p, (size_t)(nl - p), &out);
		if (nl - p == 1)
			msgs_ping(&out);
		p = nl + 1;
	}
	if (fail)
		msgs_stream_fail(&st, status, "upstream failed", &out);
	else
		msgs_stream_done(&st, &out);
	must_be_events(buf_cstr(&out), out.len);
	msgs_stream_free(&st);
	buf_free(&out);
}

/* An error message (NUL-terminated copy) in an error body. */
static void
fuzz_error(const char *d, size_t n, int status, int ctx)
{
	struct buf out = {0};
	char *msg = malloc(n + 1);

	if (msg == NULL)
		return;
	memcpy(msg, d, n);
	msg[n] = '\0';
	msgs_error(&out, status, ctx ? "context_length_exceeded" : NULL, msg,
	           "req_1", d, n);
	must_be_json(out.data, out.len);
	(void)msgs_error_type(status);
	free(msg);
	buf_free(&out);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
	const char *d = (const char *)data + 1;
	struct buf out = {0};
	int sel;

	if (n < 1)
		return 0;
	sel = data[0];
	n--;
	switch (sel & 3) {
	case 0:
		fuzz_request(d, n);
		break;
	case 1:
		if (msgs_reply(d, n, &out) == 0)
			must_be_json(out.data, out.len);
		buf_free(&out);
		break;
	case 2:
		fuzz_stream(d, n, sel & 4, 400 + (sel >> 3) * 5);
		break;
	default:
		fuzz_error(d, n, 400 + (sel >> 3) * 5, sel & 4);
		break;
	}
	return 0;
}
