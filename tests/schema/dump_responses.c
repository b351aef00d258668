/* Dump what the Responses ingress (worker/ingress/responses.c) produces,
 * for validation against the OpenAI spec by validate_responses.py:
 *
 *   dump_responses OUTDIR BODYDIR FILE...
 *
 * responses/request_X.json: the request itself (OUTDIR/create__X.json) and
 * its canonical Chat body (OUTDIR/chat__X.json), plus the bodies the
 * Anthropic and OpenAI adapters build from that canonical body
 * (BODYDIR/{anthropic,openai}__responses_X.json, for validate.py). An
 * adapter may refuse a canonical body only when it holds a file part
 * (OpenAI alone takes those). responses/reply_X.json (a chat.completion):
 * the Response (OUTDIR/response__X.json), for request_X.json if present,
 * else request_text.json. responses/stream_X.sse: the event stream
 * (OUTDIR/events__X.sse). A translating adapter's golden outputs,
 * ADAPTER/stream_X.out (canonical chunks) and ADAPTER/resp_X.out.json (a
 * chat.completion), are encoded too, for responses/request_tools.json. */
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "worker/ingress/responses.h"
#include "worker/provider.h"

static const char *const drop_keys[] = {
    "fallbacks", "num_retries", "timeout", "stream_timeout", "metadata", NULL};

/* Read a whole file (heap, NUL-terminated) or NULL. */
static char *
slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *s;
	long n;

	if (f == NULL)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	if (n < 0 || (s = malloc((size_t)n + 1)) == NULL ||
	    fread(s, 1, (size_t)n, f) != (size_t)n) {
		fclose(f);
		return NULL;
	}
	s[n] = '\0';
	fclose(f);
	if (len)
		*len = (size_t)n;
	return s;
}

/* Write n bytes to dir/name; 0 or -1. */
static int
put(const char *dir, const char *name, const char *s, size_t n)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof path, "%s/%s", dir, name);
	if ((f = fopen(path, "wb")) == NULL) {
		perror(path);
		return -1;
	}
	fwrite(s, 1, n, f);
	return fclose(f) == 0 ? 0 : -1;
}

/* Parse file into j (text kept in *text); 0 or -1. */
static int
load(const char *file, struct json *j, char **text)
{
	size_t n;

	if ((*text = slurp(file, &n)) == NULL ||
	    json_parse(j, *text, n) == -1) {
		fprintf(stderr, "%s: cannot read or parse\n", file);
		free(*text);
		*text = NULL;
		return -1;
	}
	return 0;
}

/* Build canonical body with adapter p; write it to bodydir. */
static int
adapter(const struct provider *p, const char *bodydir, const char *stem,
        const char *body, size_t n)
{
	static struct json cj;
	static struct deploy_cfg d;
	struct prov_out o = {0};
	struct prov_call pc = {
	    .d = &d, .req = &cj, .endpoint = EP_CHAT, .drop_keys = drop_keys};
	char name[512], err[256] = "";
	int rc = 0;

	snprintf(d.model, sizeof d.model, "model-x");
	if (json_parse(&cj, body, n) == -1)
		return -1;
	pc.stream = json_is_true(&cj, json_get(&cj, 0, "stream"));
	if (p->build(&pc, &o, err, sizeof err) == -1) {
		if (strstr(body, "\"type\":\"file\"") == NULL) {
			fprintf(stderr, "%s refused %s: %s\n", p->name, stem,
			        err);
			rc = -1;
		} else
			printf("note %s refuses %s (file part): %s\n", p->name,
			       stem, err);
	} else {
		snprintf(name, sizeof name, "%s__responses_%s", p->name, stem);
		rc = put(bodydir, name, o.body.data, o.body.len);
	}
	buf_free(&o.path);
	buf_free(&o.headers);
	buf_free(&o.body);
	return rc;
}

/* request_X.json: the request, its canonical body, the adapters' bodies. */
static int
dump_request(const char *dir, const char *bodydir, const char *file,
             const char *stem)
{
	struct json j = {0};
	struct buf b = {0};
	char *text, name[512], err[256];
	const char *code;
	int status, rc = -1;

	if (load(file, &j, &text) == -1)
		return -1;
	if (resp_to_chat(&j, &b, &status, &code, err, sizeof err) == -1) {
		fprintf(stderr, "%s: refused: %s\n", file, err);
		goto out;
	}
	snprintf(name, sizeof name, "create__%s.json", stem);
	rc = put(dir, name, text, strlen(text));
	snprintf(name, sizeof name, "chat__%s.json", stem);
	rc |= put(dir, name, b.data, b.len);
	rc |= adapter(&prov_anthropic, bodydir, stem, b.data, b.len);
	rc |= adapter(&prov_openai, bodydir, stem, b.data, b.len);
out:
	buf_free(&b);
	json_free(&j);
	free(text);
	return rc;
}

/* A chat.completion file: the Response for request file rq. */
static int
dump_reply(const char *dir, const char *file, const char *rq, const char *name)
{
	struct json j = {0};
	struct buf b = {0};
	char *text, *chat;
	size_t n;
	int rc = -1;

	if (load(rq, &j, &text) == -1)
		return -1;
	if ((chat = slurp(file, &n)) == NULL)
		goto out;
	if (resp_reply(&j, chat, n, &b) == -1) {
		/* embeddings lists are not chat completions */
		rc = strstr(chat, "\"object\":\"list\"") ? 0 : -1;
		if (rc)
			fprintf(stderr, "%s: not a chat.completion\n", file);
		goto out;
	}
	rc = put(dir, name, b.data, b.len);
out:
	buf_free(&b);
	json_free(&j);
	free(text);
	free(chat);
	return rc;
}

/* Run the stream encoder over SSE text (data lines, [DONE], "fail:" and
 * adapters' "error: CLASS" lines) into b; -1 if a chunk is refused. */
static int
run_stream(const struct json *req, const char *sse, struct buf *b)
{
	static struct resp_stream st;
	char code[64], msg[256];
	const char *p = sse, *e;
	int status, rc = 0;
	size_t n;

	resp_stream_init(&st, req);
	for (; *p && rc == 0; p = *e ? e + 1 : e) {
		e = strchr(p, '\n');
		if (e == NULL)
			e = p + strlen(p);
		n = (size_t)(e - p);
		if (n == 12 && strncmp(p, "data: [DONE]", 12) == 0)
			resp_stream_done(&st, b);
		else if (n > 6 && strncmp(p, "data: ", 6) == 0)
			rc = resp_stream_chunk(&st, p + 6, n - 6, b);
		else if (sscanf(p, "fail: %d %63s %255[^\n]", &status, code,
		                msg) == 3)
			resp_stream_fail(&st, status, code, msg, b);
		else if (sscanf(p, "error: %63s", code) == 1)
			resp_stream_fail(&st, 500, code, "upstream error", b);
	}
	resp_stream_free(&st);
	return rc;
}

/* A stream file: its events for request rq (NULL: named on line 1). */
static int
dump_stream(const char *dir, const char *file, const char *rq, const char *name)
{
	struct json j = {0};
	struct buf b = {0};
	char *text = NULL, *sse, path[4096], f[256];
	int rc = -1;

	if ((sse = slurp(file, NULL)) == NULL)
		return -1;
	if (rq == NULL) {
		snprintf(path, sizeof path, "%s", file);
		if (sscanf(sse, ": request %255s", f) != 1)
			goto out;
		snprintf(path + strlen(dirname(path)),
		         sizeof path - strlen(path), "/%s", f);
		rq = path;
	}
	if (load(rq, &j, &text) == -1)
		goto out;
	if (run_stream(&j, sse, &b) == -1) {
		fprintf(stderr, "%s: a chunk was refused\n", file);
		goto out;
	}
	rc = put(dir, name, b.data, b.len);
out:
	buf_free(&b);
	json_free(&j);
	free(text);
	free(sse);
	return rc;
}

/* Whether s ends with suffix. */
static int
ends(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);

	return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Dump one fixture by its directory and name. */
static int
dump_file(const char *dir, const char *bodydir, const char *file)
{
	char d[4096], f[4096], p[4096], stem[512], name[1200], rq[4200];
	char *base, *parent, *prov;
	int ours;

	snprintf(d, sizeof d, "%s", file);
	snprintf(f, sizeof f, "%s", file);
	base = basename(f);
	parent = dirname(d);
	snprintf(p, sizeof p, "%s", parent);
	ours = strcmp(basename(p), "responses") == 0;
	snprintf(stem, sizeof stem, "%s", base);
	if (ours && strncmp(base, "request_", 8) == 0 &&
	    !ends(base, ".out.json")) {
		stem[strlen(stem) - 5] = '\0';
		return dump_request(dir, bodydir, file, stem + 8);
	}
	if (ours && strncmp(base, "reply_", 6) == 0 &&
	    !ends(base, ".out.json")) {
		stem[strlen(stem) - 5] = '\0';
		snprintf(rq, sizeof rq, "%s/request_%s.json", parent, stem + 6);
		if (access(rq, R_OK) != 0)
			snprintf(rq, sizeof rq, "%s/request_text.json", parent);
		snprintf(name, sizeof name, "response__%s.json", stem + 6);
		return dump_reply(dir, file, rq, name);
	}
	if (ours && ends(base, ".sse")) {
		stem[strlen(stem) - 4] = '\0';
		snprintf(name, sizeof name, "events__%s.sse", stem);
		return dump_stream(dir, file, NULL, name);
	}
	if (ours)
		return 0; /* expected outputs */
	snprintf(rq, sizeof rq, "%s/../responses/request_tools.json", parent);
	snprintf(p, sizeof p, "%s", parent);
	prov = basename(p);
	if (strncmp(base, "stream_", 7) == 0 && ends(base, ".out")) {
		snprintf(name, sizeof name, "events__%s_%s.sse", prov, stem);
		return dump_stream(dir, file, rq, name);
	}
	if (strncmp(base, "resp_", 5) == 0 && ends(base, ".out.json")) {
		snprintf(name, sizeof name, "response__%s_%s", prov, stem);
		return dump_reply(dir, file, rq, name);
	}
	fprintf(stderr, "%s: not a fixture this tool knows\n", file);
	return -1;
}

/* Dump every FILE; 1 if any failed. */
int
main(int argc, char **argv)
{
	int rc = 0;

	if (argc < 4) {
		fprintf(stderr,
		        "usage: dump_responses OUTDIR BODYDIR FILE...\n");
		return 2;
	}
	for (int i = 3; i < argc; i++)
		if (dump_file(argv[1], argv[2], argv[i]) == -1) {
			fprintf(stderr, "dump_responses: %s failed\n", argv[i]);
			rc = 1;
		}
	return rc;
}
