/* Unit tests for common/secret.c: the registry of configured secret values
 * and the masking of them (and of key-shaped words) in upstream text. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/cfg.h"
#include "common/secret.h"

static void
teardown(void)
{
	secret_clear();
}

TestSuite(secret, .fini = teardown);

/* Mask a copy of text; the result (static). */
static const char *
masked(const char *text, size_t *n)
{
	static char b[512];

	snprintf(b, sizeof b, "%s", text);
	*n = secret_redact(b);
	return b;
}

Test(secret, registered_values_are_masked)
{
	size_t n;

	secret_add("3f9a1c0e7b4d2a6f8e5c1b0d9a7f3e2c");
	secret_add("Zq9xR7tLm2Vw8Nc4");
	cr_assert(strcmp(masked("bad key 3f9a1c0e7b4d2a6f8e5c1b0d9a7f3e2c, "
	                        "Bearer Zq9xR7tLm2Vw8Nc4!",
	                        &n),
	                 "bad key ********************************, "
	                 "Bearer ****************!") == 0);
	cr_assert(eq(sz, n, 2));
	cr_assert(strcmp(masked("twice Zq9xR7tLm2Vw8Nc4Zq9xR7tLm2Vw8Nc4", &n),
	                 "twice ********************************") == 0);
	cr_assert(strcmp(masked("nothing here", &n), "nothing here") == 0);
	cr_assert(eq(sz, n, 0));
}

/* A value that contains another is masked whole, and short values (local
 * servers' "none", "ollama") are not secrets. */
Test(secret, longest_first_and_short_ignored)
{
	size_t n;

	secret_add("abcdefgh");
	secret_add("abcdefgh-ijklmnop");
	secret_add("ollama");
	cr_assert(strcmp(masked("k=abcdefgh-ijklmnop ollama", &n),
	                 "k=***************** ollama") == 0);
	secret_clear();
	cr_assert(strcmp(masked("k=abcdefgh-ijklmnop", &n),
	                 "k=abcdefgh-ijklmnop") == 0);
}

/* Key shapes are masked whether registered or not. */
Test(secret, shapes)
{
	size_t n;

	cr_assert(strcmp(masked("key sk-abcdefgh12 and AIzaSyA123456789", &n),
	                 "key sk-********** and AIza************") == 0);
	cr_assert(eq(sz, n, 2));
	cr_assert(strcmp(masked("task-abcdefgh12 sk-short", &n),
	                 "task-abcdefgh12 sk-short") == 0);
}

/* secret_load takes every deployment's key and the header values marked
 * secret: from "$VAR", or a credential's name. */
Test(secret, load_from_config)
{
	char dir[] = "/tmp/llmfd-secret-XXXXXX", path[64], *cause = NULL;
	struct cfg *c;
	size_t n;
	FILE *f;

	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/llmfd.conf", dir);
	setenv("LLMFD_TEST_ORG", "org-Secret-From-Env-123", 1);
	f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs("deployments = ( { name = \"a\"; model = \"m\";\n"
	      "  api_key = \"azure0123456789abcdef0123456789ab\";\n"
	      "  headers = ( \"X-Auth-Token: tok-literal-0123456789\",\n"
	      "    \"X-Org: $LLMFD_TEST_ORG\", \"X-Trace: trace-visible-1\" );"
	      " } );\n",
	      f);
	fclose(f);
	c = cfg_load(path, &cause);
	cr_assert_not_null(c, "%s", cause ? cause : "");
	cr_assert(eq(int, c->deploy[0].headers[0].secret, 1));
	cr_assert(eq(int, c->deploy[0].headers[1].secret, 1));
	cr_assert(eq(int, c->deploy[0].headers[2].secret, 0));
	secret_load(c);
	cr_assert(strcmp(masked("azure0123456789abcdef0123456789ab "
	                        "tok-literal-0123456789 "
	                        "org-Secret-From-Env-123 trace-visible-1",
	                        &n),
	                 "********************************* "
	                 "********************** "
	                 "*********************** trace-visible-1") == 0);
	cfg_free(c);
	unlink(path);
	rmdir(dir);
}
