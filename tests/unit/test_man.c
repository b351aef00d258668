/* The manual pages: `mandoc -Tlint` has nothing to say about them (but that
 * the pages they cross-reference are not installed), and llmfd.conf(5)
 * renders its list syntax as written. Needs mandoc (make deps). */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/buf.h"

TestSuite(man);

/* Absolute path of repository file rel (the test binary lives in build/),
 * else rel itself. */
static const char *
repo_path(const char *rel)
{
	static char out[PATH_MAX * 2];
	char exe[PATH_MAX], *slash;
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);

	if (n > 0) {
		exe[n] = '\0';
		for (int i = 0; i < 2 && (slash = strrchr(exe, '/')) != NULL;
		     i++)
			*slash = '\0';
		snprintf(out, sizeof out, "%s/%s", exe, rel);
		if (access(out, R_OK) == 0)
			return out;
	}
	return rel;
}

/* Output (stdout and stderr) of a shell command, into b. */
static void
run(struct buf *b, const char *cmd)
{
	FILE *p = popen(cmd, "r");
	char tmp[4096];
	size_t n;

	cr_assert_not_null(p, "popen %s", cmd);
	while ((n = fread(tmp, 1, sizeof tmp, p)) > 0)
		buf_add(b, tmp, n);
	pclose(p);
}

/* Lint messages for page, without "referenced manual not found" (the
 * pages refer to each other and are not installed) and mandoc.db notes. */
static const char *
lint(struct buf *b, const char *page)
{
	char cmd[PATH_MAX * 3];

	cr_assert(system("command -v mandoc >/dev/null") == 0,
	          "mandoc is not installed: run make deps");
	snprintf(cmd, sizeof cmd,
	         "mandoc -Tlint %s 2>&1 | grep -v 'referenced manual not "
	         "found' | grep -v 'mandoc.db'",
	         repo_path(page));
	buf_reset(b);
	run(b, cmd);
	return buf_cstr(b);
}

Test(man, lint_clean)
{
	static const char *const pages[] = {"docs/llmfd.8", "docs/llmfctl.8",
	                                    "docs/llmfd.conf.5"};
	struct buf b = {0};

	for (size_t i = 0; i < sizeof pages / sizeof pages[0]; i++)
		cr_assert(strcmp(lint(&b, pages[i]), "") == 0, "%s:\n%s",
		          pages[i], buf_cstr(&b));
	buf_free(&b);
}

/* mdoc delimiters in the list syntax are escaped: "( ... )" renders as
 * itself, not as "(`...')". */
Test(man, conf_list_syntax_renders)
{
	struct buf b = {0};
	char cmd[PATH_MAX * 3];
	const char *t;

	cr_assert(system("command -v mandoc >/dev/null") == 0,
	          "mandoc is not installed: run make deps");
	snprintf(cmd, sizeof cmd, "mandoc -Tascii %s 2>/dev/null | col -b",
	         repo_path("docs/llmfd.conf.5"));
	run(&b, cmd);
	t = buf_cstr(&b);
	cr_assert(strstr(t, "`( ... )'") != NULL, "%s", t);
	cr_assert(strstr(t, "`[ ... ]'") != NULL, "%s", t);
	cr_assert(strstr(t, "`name = value;'") != NULL, "%s", t);
	cr_assert(strstr(t, "(`") == NULL && strstr(t, "[`") == NULL, "%s", t);
	buf_free(&b);
}
