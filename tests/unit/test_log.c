/* Unit tests for common/log.c: repeated lines are rate-limited with a
 * count, distinct lines are not, and configured secrets are masked. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/secret.h"

static char path[] = "/tmp/llmfd-log-XXXXXX";
static int saved = -1;

/* Send stderr to a temp file. */
static void
setup(void)
{
	int fd = mkstemp(path);

	cr_assert(fd >= 0);
	saved = dup(STDERR_FILENO);
	dup2(fd, STDERR_FILENO);
	close(fd);
	log_init(LOG_LVL_DEBUG, "test");
}

static void
teardown(void)
{
	dup2(saved, STDERR_FILENO);
	close(saved);
	unlink(path);
	secret_clear();
}

TestSuite(log, .init = setup, .fini = teardown);

/* What was logged so far (static buffer). */
static const char *
logged(void)
{
	static char b[1 << 20];
	FILE *f = fopen(path, "r");
	size_t n;

	cr_assert_not_null(f);
	n = fread(b, 1, sizeof b - 1, f);
	b[n] = '\0';
	fclose(f);
	return b;
}

/* Lines of text that contain needle. */
static int
count(const char *text, const char *needle)
{
	int n = 0;

	for (const char *p = text; (p = strstr(p, needle)) != NULL; p++)
		n++;
	return n;
}

Test(log, repeats_are_counted_not_written)
{
	const char *t;

	for (int i = 0; i < 1000; i++)
		log_warnx("accept() failed: %s", "Too many open files");
	t = logged();
	cr_assert(eq(int, count(t, "Too many open files"), 1), "%s", t);
	log_tick(); /* too early: nothing yet */
	cr_assert(eq(int, count(logged(), "suppressed"), 0));
	usleep(1100 * 1000);
	log_tick();
	t = logged();
	cr_assert(strstr(t, "Too many open files (999 identical lines "
	                    "suppressed)") != NULL,
	          "%s", t);
	/* the next one after the window is written again */
	log_warnx("accept() failed: %s", "Too many open files");
	cr_assert(eq(int, count(logged(), "Too many open files"), 2));
}

Test(log, distinct_lines_all_go_out)
{
	for (int i = 0; i < 500; i++)
		log_info("req-%d done", i);
	cr_assert(eq(int, count(logged(), " done\n"), 500));
}

Test(log, secrets_are_masked)
{
	secret_add("3f9a1c0e7b4d2a6f8e5c1b0d9a7f3e2c");
	log_warnx("upstream said: bad key 3f9a1c0e7b4d2a6f8e5c1b0d9a7f3e2c");
	cr_assert(strstr(logged(), "3f9a1c0e") == NULL, "%s", logged());
	cr_assert(strstr(logged(), "bad key ****") != NULL, "%s", logged());
}
