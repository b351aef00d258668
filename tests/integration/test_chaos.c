/* llmf-chaos (`make chaos`) keeps working: its reply checker passes its
 * self-test, and a short run with no abuse starts the mocks and llmfd,
 * prints every figure and check, and leaves no process or file behind. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "tests/integration/harness.h"

TestSuite(chaos, .init = h_setup, .fini = h_teardown, .timeout = 60);

/* Whether any process's command line mentions s. */
static int
any_process_mentions(const char *s)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	int found = 0;

	cr_assert_not_null(d);
	while (!found && (e = readdir(d)) != NULL) {
		char path[300], buf[4096];
		size_t n;
		FILE *f;

		if (atoi(e->d_name) <= 0)
			continue;
		snprintf(path, sizeof path, "/proc/%s/cmdline", e->d_name);
		if ((f = fopen(path, "r")) == NULL)
			continue;
		n = fread(buf, 1, sizeof buf - 1, f);
		fclose(f);
		for (size_t i = 0; i < n; i++)
			if (buf[i] == '\0')
				buf[i] = ' ';
		buf[n] = '\0';
		found = strstr(buf, s) != NULL;
	}
	closedir(d);
	return found;
}

/* The checker judges canned replies (cut, error events, framing) right,
 * whole and byte by byte. */
Test(chaos, reply_checker_self_test)
{
	char *out;
	int rc = h_run(&out, h_bin("llmf-chaos"), "--self-test", NULL);

	cr_assert(rc == 0, "exit %d: %s", rc, out);
	cr_assert(strstr(out, " passed, 0 failed") != NULL, "%s", out);
}

/* A 6-second run without abuse: figures and checks printed, temp dir
 * removed, no process left that was started in it. */
Test(chaos, short_run_reports_and_cleans_up)
{
	char *out, dir[256] = "";
	const char *p;
	int rc;

	setenv("TMPDIR", h_dir(), 1);
	rc = h_run(&out, h_bin("llmf-chaos"), "--seconds", "6", "--warmup", "1",
	           "--settle", "1", "--only", "none", "--clients", "2", NULL);
	/* 1: a check failed (the latency bar may, on a loaded machine) */
	cr_assert(rc == 0 || rc == 1, "exit %d: %s", rc, out);
	cr_assert(strstr(out, "normal requests: ") != NULL, "%s", out);
	cr_assert(strstr(out, "worker RSS (sum over workers): before") != NULL,
	          "%s", out);
	cr_assert(strstr(out, "PASS  0 truncated (0)") != NULL, "%s", out);
	cr_assert(strstr(out, "PASS  0 hung") != NULL, "%s", out);
	cr_assert(strstr(out, "PASS  no worker killed by a signal") != NULL,
	          "%s", out);
	cr_assert(strstr(out, " passed, ") != NULL, "%s", out);
	cr_assert_not_null(p = strstr(out, ", dir "), "%s", out);
	sscanf(p + 6, "%255s", dir);
	cr_assert(strncmp(dir, h_dir(), strlen(h_dir())) == 0, "%s", dir);
	cr_assert(access(dir, F_OK) == -1, "%s was left behind", dir);
	cr_assert(!any_process_mentions(dir), "a process of %s is left", dir);
}
