/* The settings table of common/cfg.c against its documentation: the
 * generated lists of docs/llmfd.conf.5 must match the table, every setting
 * the manual lists must exist, and the shipped llmfd.conf must show every
 * daemon and router setting with its default (unless marked "demo").
 *
 * To regenerate the manual's lists after changing the table:
 *   LLMFD_MAN_UPDATE=1 build/test_unit --filter cfg_doc/man_lists_match_table
 */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/cfg.h"

#define MARK_BEGIN   ".\\\" BEGIN GENERATED "
#define MARK_END     ".\\\" END GENERATED "
#define MAX_SETTINGS 256 /* rows of the seen[] arrays */

/* Per section: its .Sh heading and its marker name. */
static const char *const sec_heading[] = {"DAEMON SETTINGS", "ROUTER SETTINGS",
                                          "DEPLOYMENTS", "GROUPS"};
static const char *const sec_mark[] = {"daemon", "router", "deployments",
                                       "groups"};

TestSuite(cfg_doc);

/* Path of repository file rel: under the parent of the test binary's
 * directory (build/), else in the working directory; NULL if neither. */
static const char *
repo_file(const char *rel, char *out, size_t size)
{
	char exe[PATH_MAX], *slash;
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);

	if (n > 0) {
		exe[n] = '\0';
		for (int i = 0; i < 2 && (slash = strrchr(exe, '/')) != NULL;
		     i++)
			*slash = '\0';
		if (snprintf(out, size, "%s/%s", exe, rel) < (int)size &&
		    access(out, R_OK) == 0)
			return out;
	}
	snprintf(out, size, "%s", rel);
	return access(out, R_OK) == 0 ? out : NULL;
}

/* The whole of file path, NUL-terminated (heap). */
static char *
slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	struct buf b = {0};
	char tmp[4096];
	size_t n;

	cr_assert_not_null(f, "cannot read %s", path);
	while ((n = fread(tmp, 1, sizeof tmp, f)) > 0)
		buf_add(&b, tmp, n);
	fclose(f);
	buf_cstr(&b);
	return b.data;
}

/* Open file rel of the repository or skip the test. */
static char *
read_repo_file(const char *rel, char *path, size_t size)
{
	if (repo_file(rel, path, size) == NULL)
		cr_skip_test("%s not found: run from the repository root", rel);
	return slurp(path);
}

/* Whether e is a setting of section sec (a deployment also takes the router
 * settings it may override). */
static int
in_sec(const struct cfg_setting *e, int sec)
{
	return (int)e->section == sec ||
	       (sec == CFG_SEC_DEPLOY && e->dep_size != 0);
}

/* The table entry for name in section sec, or NULL. */
static const struct cfg_setting *
find(int sec, const char *name)
{
	for (const struct cfg_setting *e = cfg_settings; e->name != NULL; e++) {
		cr_assert_lt(e - cfg_settings, MAX_SETTINGS);
		if (in_sec(e, sec) && strcmp(e->name, name) == 0)
			return e;
	}
	return NULL;
}

/* Whether e's default is written as a string in the file. */
static int
quoted(const struct cfg_setting *e)
{
	return e->type == CFG_STRING || e->type == CFG_PATH ||
	       e->type == CFG_ENUM || e->type == CFG_MODE;
}

/* The "(bounds, default x)" part of e's .It line. */
static void
gen_head(struct buf *b, const struct cfg_setting *e)
{
	int open = e->max == INT_MAX || e->max == LONG_MAX;

	buf_printf(b, ".It Ic %s No (", e->name);
	if (e->type == CFG_MODE)
		buf_printf(b, "%04llo..%04llo, ", e->min, e->max);
	else if ((e->type == CFG_INT || e->type == CFG_LONG ||
	          e->type == CFG_DOUBLE) &&
	         !open)
		buf_printf(b, "%lld..%lld, ", e->min, e->max);
	else if ((e->type == CFG_INT || e->type == CFG_LONG) && e->min > 0)
		buf_printf(b, "at least %lld, ", e->min);
	if (e->def == NULL)
		buf_adds(b, "default: the router's)\n");
	else if (quoted(e))
		buf_printf(b, "default Qq %s )\n",
		           e->def[0] != '\0' ? e->def : "\\&");
	else
		buf_printf(b, "default %s)\n", e->def);
}

/* The choices of enumerated setting e as a sentence. */
static void
gen_names(struct buf *b, const struct cfg_setting *e)
{
	int n = 0;

	while (e->names[n] != NULL)
		n++;
	buf_adds(b, ".Cm");
	for (int i = 0; i < n - 1; i++)
		buf_printf(b, " %s%s", e->names[i], i < n - 2 ? " ," : "");
	if (n > 1)
		buf_adds(b, "\nor\n.Cm");
	buf_printf(b, " %s .\n", e->names[n - 1]);
}

/* Append text, breaking its prose lines (not macro lines) at spaces so that
 * none passes 76 columns where a break can help; never before a word that
 * would start a line with a control character. */
static void
put_wrapped(struct buf *b, const char *text)
{
	const char *ln = text, *nl, *sp, *brk;

	for (; *ln != '\0'; ln = *nl != '\0' ? nl + 1 : nl) {
		nl = ln + strcspn(ln, "\n");
		for (brk = NULL; *ln != '.' && nl - ln > 76; brk = NULL) {
			for (sp = ln; sp < nl && (sp - ln <= 76 || !brk); sp++)
				if (*sp == ' ' && sp[1] != '.' && sp[1] != '\'')
					brk = sp;
			if (brk == NULL)
				break;
			buf_add(b, ln, (size_t)(brk - ln));
			buf_addc(b, '\n');
			ln = brk + 1;
		}
		buf_add(b, ln, (size_t)(nl - ln));
		buf_addc(b, '\n');
	}
}

/* The item listing the router settings a deployment may override. */
static void
gen_overrides(struct buf *b)
{
	const char *sep = ".It Ic";

	for (const struct cfg_setting *e = cfg_settings; e->name != NULL; e++)
		if (e->dep_size != 0) {
			buf_printf(b, "%s %s", sep, e->name);
			sep = " ,";
		}
	buf_adds(b, " No (default: the router's)\n");
	put_wrapped(b,
	            "Per-deployment values of the router settings of the "
	            "same names, within the same bounds.\n"
	            "A value set here, 0 included, replaces the router's for "
	            "this deployment: with\n"
	            ".Ql max_ttft_p95_ms = 0;\n"
	            "the deployment is never marked degraded, whatever the "
	            "router's value.");
}

/* The generated items of section sec: every setting the loader reads from
 * the table, in table order. */
static void
gen_section(struct buf *b, int sec)
{
	for (const struct cfg_setting *e = cfg_settings; e->name != NULL; e++) {
		if ((int)e->section != sec || e->type == CFG_OTHER)
			continue;
		gen_head(b, e);
		if (e->type == CFG_ENUM)
			gen_names(b, e);
		put_wrapped(b, e->doc);
	}
	if (sec == CFG_SEC_DEPLOY)
		gen_overrides(b);
}

/* Replace the text between the markers of section sec in *man with the
 * generated text; returns whether it changed. */
static int
splice(char **man, int sec)
{
	char begin[64], end[64], *a, *z, *out;
	struct buf b = {0};
	size_t len;
	int changed;

	snprintf(begin, sizeof begin, "%s%s\n", MARK_BEGIN, sec_mark[sec]);
	snprintf(end, sizeof end, "%s%s\n", MARK_END, sec_mark[sec]);
	a = strstr(*man, begin);
	cr_assert_not_null(a, "llmfd.conf.5: no marker %s", begin);
	a += strlen(begin);
	z = strstr(a, end);
	cr_assert_not_null(z, "llmfd.conf.5: no marker %s", end);
	gen_section(&b, sec);
	len = (size_t)(z - a);
	changed = len != b.len || memcmp(a, buf_cstr(&b), len) != 0;
	if (changed)
		cr_log_warn("llmfd.conf.5 %s: expected:\n%s", sec_mark[sec],
		            buf_cstr(&b));
	out = malloc(strlen(*man) - len + b.len + 1);
	cr_assert_not_null(out);
	memcpy(out, *man, (size_t)(a - *man));
	memcpy(out + (a - *man), b.data, b.len);
	strcpy(out + (a - *man) + b.len, z);
	free(*man);
	*man = out;
	buf_free(&b);
	return changed;
}

Test(cfg_doc, man_lists_match_table)
{
	char path[PATH_MAX];
	char *man = read_repo_file("docs/llmfd.conf.5", path, sizeof path);
	const char *update = getenv("LLMFD_MAN_UPDATE");
	int changed = 0;
	FILE *f;

	for (int sec = 0; sec < CFG_SEC__MAX; sec++)
		changed |= splice(&man, sec);
	if (changed && update != NULL && *update != '\0') {
		cr_assert_not_null(f = fopen(path, "w"));
		fputs(man, f);
		cr_assert_eq(fclose(f), 0);
		cr_log_warn("rewrote %s", path);
	} else
		cr_assert(!changed,
		          "%s is out of date with cfg_settings[]: run "
		          "LLMFD_MAN_UPDATE=1 build/test_unit --filter "
		          "cfg_doc/man_lists_match_table",
		          path);
	free(man);
}

/* Mark the settings named on .It line ln of section sec in seen (indexed
 * like cfg_settings[]); fail on a name the table lacks. */
static void
check_item(const char *ln, int sec, char (*seen)[CFG_SEC__MAX])
{
	char tmp[512], *tok, *save = NULL;
	const struct cfg_setting *e;

	snprintf(tmp, sizeof tmp, "%s", ln + strlen(".It"));
	for (tok = strtok_r(tmp, " ", &save); tok != NULL;
	     tok = strtok_r(NULL, " ", &save)) {
		if (strcmp(tok, "No") == 0)
			break;
		if (strcmp(tok, "Ic") == 0 || strcmp(tok, ",") == 0)
			continue;
		e = find(sec, tok);
		cr_assert_not_null(e,
		                   "llmfd.conf.5 %s lists '%s', which "
		                   "cfg_settings[] lacks",
		                   sec_heading[sec], tok);
		seen[e - cfg_settings][sec] = 1;
	}
}

/* The section a line of llmfd.conf.5 starts (-1: none of the settings),
 * else sec. */
static int
man_section(const char *ln, int sec)
{
	if (strncmp(ln, ".Sh ", 4) != 0)
		return sec;
	for (int i = 0; i < CFG_SEC__MAX; i++)
		if (strcmp(ln + 4, sec_heading[i]) == 0)
			return i;
	return -1;
}

/* Check line ln of llmfd.conf.5 section sec if it is an item. */
static void
man_line(const char *ln, int sec, char (*seen)[CFG_SEC__MAX])
{
	if (strncmp(ln, ".It ", 4) == 0)
		check_item(ln, sec, seen);
}

/* Pass every line of repository file rel that lies inside a section (as
 * section_of tracks them) to check, which marks the settings seen. */
static void
scan_file(const char *rel, int (*section_of)(const char *, int),
          void (*check)(const char *, int, char (*)[CFG_SEC__MAX]),
          char (*seen)[CFG_SEC__MAX])
{
	char path[PATH_MAX], *save = NULL;
	char *text = read_repo_file(rel, path, sizeof path);
	int sec = -1, next;

	for (char *ln = strtok_r(text, "\n", &save); ln != NULL;
	     ln = strtok_r(NULL, "\n", &save)) {
		next = section_of(ln, sec);
		if (next == sec && sec != -1)
			check(ln, sec, seen);
		sec = next;
	}
	free(text);
}

Test(cfg_doc, man_lists_every_setting)
{
	static char seen[MAX_SETTINGS][CFG_SEC__MAX];

	scan_file("docs/llmfd.conf.5", man_section, man_line, seen);
	for (const struct cfg_setting *e = cfg_settings; e->name != NULL; e++) {
		cr_assert(seen[e - cfg_settings][e->section],
		          "llmfd.conf.5 %s does not list '%s'",
		          sec_heading[e->section], e->name);
		cr_assert(
		    e->dep_size == 0 || seen[e - cfg_settings][CFG_SEC_DEPLOY],
		    "llmfd.conf.5 DEPLOYMENTS does not list '%s'", e->name);
	}
}

/* Check line ln of the shipped config's section sec: a known setting,
 * shown with its default unless marked demo. */
static void
check_shipped(const char *ln, int sec, char (*seen)[CFG_SEC__MAX])
{
	char name[64], val[256], want[256];
	const struct cfg_setting *e;

	if (sscanf(ln, " %63[a-z_0-9] = %255[^;];", name, val) != 2)
		return;
	e = find(sec, name);
	cr_assert_not_null(e, "llmfd.conf: %s: unknown setting %s",
	                   sec_mark[sec], name);
	seen[e - cfg_settings][sec] = 1;
	if (strstr(ln, "# demo") != NULL)
		return;
	snprintf(want, sizeof want, quoted(e) ? "\"%s\"" : "%s", e->def);
	cr_assert_str_eq(val, want,
	                 "llmfd.conf shows %s = %s, the default is %s "
	                 "(or mark the line # demo)",
	                 name, val, want);
}

/* The section a line of llmfd.conf opens or closes, else sec. */
static int
conf_section(const char *ln, int sec)
{
	if (strncmp(ln, "daemon = {", 10) == 0)
		return CFG_SEC_DAEMON;
	if (strncmp(ln, "router = {", 10) == 0)
		return CFG_SEC_ROUTER;
	return strncmp(ln, "};", 2) == 0 ? -1 : sec;
}

Test(cfg_doc, shipped_config_shows_defaults)
{
	static char seen[MAX_SETTINGS][CFG_SEC__MAX];

	scan_file("llmfd.conf", conf_section, check_shipped, seen);
	for (const struct cfg_setting *e = cfg_settings; e->name != NULL; e++)
		cr_assert(e->section > CFG_SEC_ROUTER ||
		              seen[e - cfg_settings][e->section],
		          "llmfd.conf does not show %s.%s",
		          sec_mark[e->section], e->name);
}
