/* libFuzzer: the Responses ingress (worker/ingress/responses.c) over
 * arbitrary bytes. The first byte picks what the rest is: a client request
 * (to a canonical Chat body, and echoed by a reply and a stream), a
 * chat.completion (to a Response), or canonical chunks one per line (to
 * events, ended by done or fail). So that the JSON and SSE files under
 * tests/data seed every mode, a document starting with '{' is tried as
 * both a request and a reply, and one starting with 'd' (data:) or ':' as
 * a stream whose "data: " prefixes are dropped. Whatever is produced must be
 * valid JSON (each event's data line), and a refused request must leave out as
 * it was with a 400 and a code. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "worker/ingress/responses.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static const char fixed_req[] =
    "{\"model\":\"m\",\"instructions\":\"x\",\"input\":\"hi\",\"tools\":[{"
    "\"type\":\"function\",\"name\":\"f\",\"parameters\":{}}],"
    "\"metadata\":{\"a\":\"b\"},\"stream\":true}";
static const char fixed_chat[] =
    "{\"id\":\"c\",\"object\":\"chat.completion\",\"model\":\"m\","
    "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
    "\"content\":\"hi\",\"reasoning_content\":\"r\",\"tool_calls\":[{\"id\":"
    "\"t\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":"
    "\"{}\"}}]},\"finish_reason\":\"length\"}],\"usage\":{\"prompt_tokens\":"
    "1,\"completion_tokens\":2,\"total_tokens\":3}}";

/* Abort unless s[0, n) is one JSON document. */
static void
must_json(const char *s, size_t n)
{
	static struct json j;

	if (json_parse(&j, s, n) == -1)
		abort();
}

/* Abort unless every "data: " line of out is JSON. */
static void
must_events(const struct buf *out)
{
	const char *p = out->data, *end = out->data + out->len, *e;

	while (p && p < end) {
		e = memchr(p, '\n', (size_t)(end - p));
		if (e == NULL)
			e = end;
		if (e - p > 6 && memcmp(p, "data: ", 6) == 0)
			must_json(p + 6, (size_t)(e - p - 6));
		p = e + 1;
	}
}

/* The rest as a client request: translate it, and echo it. */
static void
fuzz_request(const char *s, size_t n)
{
	static struct json j;
	struct buf out = {0};
	struct resp_stream st;
	const char *code = NULL;
	char err[256];
	int status = 0;

	if (json_parse(&j, s, n) == -1)
		return;
	buf_adds(&out, "x");
	if (resp_to_chat(&j, &out, &status, &code, err, sizeof err) == 0)
		must_json(out.data + 1, out.len - 1);
	else if (out.len != 1 || status != 400 || code == NULL)
		abort();
	buf_reset(&out);
	if (resp_reply(&j, fixed_chat, sizeof fixed_chat - 1, &out) == 0)
		must_json(out.data, out.len);
	buf_reset(&out);
	resp_stream_init(&st, &j);
	resp_stream_done(&st, &out);
	must_events(&out);
	resp_stream_free(&st);
	buf_free(&out);
}

/* The rest as a chat.completion. */
static void
fuzz_reply(const struct json *req, const char *s, size_t n)
{
	struct buf out = {0};

	if (resp_reply(req, s, n, &out) == 0)
		must_json(out.data, out.len);
	buf_free(&out);
}

/* The rest as chunks, one per line; ended as the first byte says. */
static void
fuzz_stream(const struct json *req, int kind, const char *s, size_t n)
{
	struct resp_stream st;
	struct buf out = {0};
	const char *p = s, *end = s + n, *e;

	resp_stream_init(&st, req);
	while (p < end) {
		e = memchr(p, '\n', (size_t)(end - p));
		if (e == NULL)
			e = end;
		if (e - p > 6 && memcmp(p, "data: ", 6) == 0)
			p += 6;
		if (e > p)
			(void)resp_stream_chunk(&st, p, (size_t)(e - p), &out);
		p = e + 1;
	}
	if (kind & 4)
		resp_stream_fail(&st, 400 + (kind >> 3), "context_window", "x",
		                 &out);
	else
		resp_stream_done(&st, &out);
	must_events(&out);
	resp_stream_free(&st);
	buf_free(&out);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
	static struct json req;
	const char *s = (const char *)data + 1;
	int kind;

	if (n < 1)
		return 0;
	kind = data[0];
	if (kind == '{' || kind == 'd' || kind == ':')
		s--; /* the whole document */
	else
		n--;
	if (req.ntok == 0 &&
	    json_parse(&req, fixed_req, sizeof fixed_req - 1) == -1)
		abort();
	if (kind == '{') {
		fuzz_request(s, n);
		fuzz_reply(&req, s, n);
		return 0;
	}
	if (kind == 'd' || kind == ':') {
		fuzz_stream(&req, 0, s, n);
		return 0;
	}
	switch (kind % 3) {
	case 0:
		fuzz_request(s, n);
		break;
	case 1:
		fuzz_reply(&req, s, n);
		break;
	default:
		fuzz_stream(&req, kind, s, n);
		break;
	}
	return 0;
}
