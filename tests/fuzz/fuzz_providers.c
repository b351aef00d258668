/* libFuzzer: every provider's reply translation (whole bodies and stream
 * events) over arbitrary upstream bytes, the error classifier, and native
 * passthrough: replies and events of a native call, and the input as a
 * client's native body and forwarded headers (the body built from it must
 * be a JSON object carrying the deployment's model; headers must stay
 * whole "Name: value\r\n" lines). The first byte picks the provider, a
 * whole reply or an SSE stream, and translated or native. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/classify.h"
#include "common/sse.h"
#include "worker/provider.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static const char *const native_drop[] = {"fallbacks", "timeout", NULL};

struct ctx {
	const struct provider *p;
	struct prov_call *pc;
	struct stream_state *st;
	struct buf *out;
	int done;
};

/* SSE callback: hand the event to the provider until it says stop. */
static int
on_event(void *arg, const char *ev, size_t elen, const char *data, size_t dlen)
{
	struct ctx *c = arg;
	struct upstream_error e;

	if (c->done)
		return 0;
	memset(&e, 0, sizeof e);
	if (c->p->stream_event(c->pc, c->st, ev, elen, data, dlen, c->out,
	                       &e) != 0)
		c->done = 1;
	return 0;
}

/* The native format p takes, or -1. */
static int
native_fmt(const struct provider *p)
{
	if (p->formats & PROV_FMT(FMT_MESSAGES))
		return FMT_MESSAGES;
	if (p->formats & PROV_FMT(FMT_RESPONSES))
		return FMT_RESPONSES;
	return -1;
}

/* Whether every CR in h starts a CRLF and every LF ends one. */
static int
headers_whole(const struct buf *h)
{
	for (size_t i = 0; i < h->len; i++) {
		if (h->data[i] == '\r' &&
		    (i + 1 >= h->len || h->data[i + 1] != '\n'))
			return 0;
		if (h->data[i] == '\n' && (i == 0 || h->data[i - 1] != '\r'))
			return 0;
	}
	return 1;
}

/* Build a native call from the input as body (when it is an object) and
 * as forwarded headers; check what came out. */
static void
fuzz_native_build(const struct provider *p, struct prov_call pc,
                  const uint8_t *data, size_t n)
{
	static struct json body, built;
	struct prov_out o = {0};
	char err[256], *hdr = malloc(n + 1);

	if (hdr == NULL)
		return;
	memcpy(hdr, data, n);
	hdr[n] = '\0';
	pc.fwd_headers = hdr;
	if (json_parse(&body, (const char *)data, n) == 0 &&
	    json_type(&body, 0) == JSMN_OBJECT) {
		pc.native = &body;
		if (p->build(&pc, &o, err, sizeof err) == 0 &&
		    (json_parse(&built, o.body.data, o.body.len) == -1 ||
		     json_type(&built, 0) != JSMN_OBJECT ||
		     !json_eq(&built, json_get(&built, 0, "model"), "m") ||
		     json_get(&built, 0, "fallbacks") >= 0 ||
		     !headers_whole(&o.headers)))
			abort();
	}
	buf_free(&o.path);
	buf_free(&o.headers);
	buf_free(&o.body);
	free(hdr);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
	static const char req[] =
	    "{\"model\":\"g\",\"messages\":[{\"role\":\"user\",\"content\":"
	    "\"hi\"}],\"stream\":true}";
	static struct json j;
	static struct deploy_cfg d;
	const struct provider *p;
	struct prov_call pc;
	struct stream_state st;
	struct buf out = {0};
	struct usage u = {0};
	struct upstream_error e;
	struct sse sse = {0};
	struct ctx c;
	int cf = 0, kind;

	if (n < 1)
		return 0;
	kind = data[0];
	data++;
	n--;
	if (j.ntok == 0)
		json_parse(&j, req, sizeof req - 1);
	strcpy(d.name, "d");
	strcpy(d.model, "m");
	d.provider = (kind >> 2) % PROV__MAX;
	memset(&pc, 0, sizeof pc);
	pc.d = &d;
	pc.req = &j;
	pc.stream = kind & 1;
	pc.include_usage = 1;
	memset(&e, 0, sizeof e);
	classify_http(400 + kind % 200, (const char *)data, n, &e);
	if ((p = provider_get(d.provider)) == NULL)
		return 0;
	if ((kind & 2) && native_fmt(p) != -1) {
		pc.native = &j;
		pc.native_fmt = native_fmt(p);
		pc.drop_keys = native_drop;
		fuzz_native_build(p, pc, data, n);
	}
	if (!(kind & 1)) {
		p->response(&pc, (const char *)data, n, &out, &u, &cf, &e);
	} else {
		memset(&st, 0, sizeof st);
		st.include_usage = 1;
		c = (struct ctx){p, &pc, &st, &out, 0};
		sse_feed(&sse, (const char *)data, n, on_event, &c);
		stream_state_free(&st);
		sse_free(&sse);
	}
	buf_free(&out);
	return 0;
}
