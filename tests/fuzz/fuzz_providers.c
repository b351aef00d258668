/* libFuzzer: every provider's reply translation (whole bodies and stream
 * events) over arbitrary upstream bytes, and the error classifier. The
 * first byte picks the provider and whether the rest is a whole reply or
 * an SSE stream. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/classify.h"
#include "common/sse.h"
#include "worker/provider.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

struct ctx {
	const struct provider *p;
	struct prov_call *pc;
	struct stream_state *st;
	struct buf *out;
	int done;
};

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

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
	static const char req[] =
	    "{\"model\":\"g\",\"messages\":[{\"role\":\"user\",\"content\":"
	    "\"hi\"}],\"stream\":true}";
	static struct json j;
	static struct deploy_cfg d;
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
	d.provider = (kind >> 1) % PROV__MAX;
	memset(&pc, 0, sizeof pc);
	pc.d = &d;
	pc.req = &j;
	pc.stream = kind & 1;
	pc.include_usage = 1;
	memset(&e, 0, sizeof e);
	classify_http(400 + kind % 200, (const char *)data, n, &e);
	if (provider_get(d.provider) == NULL)
		return 0;
	if (!(kind & 1)) {
		provider_get(d.provider)
		    ->response(&pc, (const char *)data, n, &out, &u, &cf, &e);
	} else {
		memset(&st, 0, sizeof st);
		st.include_usage = 1;
		c = (struct ctx){provider_get(d.provider), &pc, &st, &out, 0};
		sse_feed(&sse, (const char *)data, n, on_event, &c);
		stream_state_free(&st);
		sse_free(&sse);
	}
	buf_free(&out);
	return 0;
}
