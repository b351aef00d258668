/* Dump the upstream request bodies llmfd builds for schema validation:
 * dump_bodies OUTDIR FILE...: each FILE is an OpenAI-shaped client body;
 * for each, the Anthropic and OpenAI bodies are written to
 * OUTDIR/{anthropic,openai}__[defaults__]NAME, once plainly and once with
 * deployment defaults (params, system_prompt_append, max_tokens). */
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
	*len = (size_t)n;
	return s;
}

/* Build body with provider p and write it to dir/prefix__name; 0 or -1. */
static int
dump(const struct provider *p, const struct deploy_cfg *d,
     const struct json *req, const char *dir, const char *prefix,
     const char *name)
{
	struct prov_out o = {0};
	struct prov_call pc = {
	    .d = d,
	    .req = req,
	    .endpoint = EP_CHAT,
	    .stream = json_is_true(req, json_get(req, 0, "stream")),
	    .drop_keys = drop_keys};
	char path[4096], err[256] = "";
	FILE *f;
	int rc = -1;

	if (p->build(&pc, &o, err, sizeof err) == -1) {
		fprintf(stderr, "%s %s: build failed: %s\n", prefix, name, err);
		goto out;
	}
	snprintf(path, sizeof path, "%s/%s__%s", dir, prefix, name);
	if ((f = fopen(path, "wb")) == NULL)
		goto out;
	fwrite(o.body.data, 1, o.body.len, f);
	rc = fclose(f) == 0 ? 0 : -1;
out:
	buf_free(&o.path);
	buf_free(&o.headers);
	buf_free(&o.body);
	return rc;
}

/* Dump one client body for every provider and deployment variant. */
static int
dump_file(const char *dir, const char *file)
{
	static struct json req;
	static struct deploy_cfg plain, dflt, oplain, odflt;
	static char oparams[] = "{\"temperature\":0.2,\"max_tokens\":1000,"
	                        "\"stop\":\"END\"}";
	static char aparams[] = "{\"temperature\":0.2,\"max_tokens\":1000,"
	                        "\"stop\":\"END\",\"top_k\":5}";
	static char append[] = "Answer briefly.";
	char *text, *base, tmp[4096];
	size_t n;
	int rc = 0;

	snprintf(plain.model, sizeof plain.model, "claude-sonnet-4-5");
	dflt = plain;
	dflt.params = aparams;
	dflt.system_prompt_append = append;
	dflt.max_tokens = 2048;
	snprintf(oplain.model, sizeof oplain.model, "gpt-4o");
	odflt = oplain;
	odflt.params = oparams;
	odflt.system_prompt_append = append;
	if ((text = slurp(file, &n)) == NULL ||
	    json_parse(&req, text, n) == -1) {
		fprintf(stderr, "%s: cannot read or parse\n", file);
		free(text);
		return -1;
	}
	snprintf(tmp, sizeof tmp, "%s", file);
	base = basename(tmp);
	rc |= dump(&prov_anthropic, &plain, &req, dir, "anthropic", base);
	rc |= dump(&prov_anthropic, &dflt, &req, dir, "anthropic__defaults",
	           base);
	rc |= dump(&prov_openai, &oplain, &req, dir, "openai", base);
	rc |= dump(&prov_openai, &odflt, &req, dir, "openai__defaults", base);
	free(text);
	return rc;
}

/* Dump every FILE into OUTDIR; 1 if any failed. */
int
main(int argc, char **argv)
{
	int rc = 0;

	if (argc < 3) {
		fprintf(stderr, "usage: dump_bodies OUTDIR FILE...\n");
		return 2;
	}
	for (int i = 2; i < argc; i++)
		rc |= dump_file(argv[1], argv[i]);
	return rc ? 1 : 0;
}
