#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/secret.h"

int log_level = LOG_LVL_INFO;
static const char *log_prog = "llmfd";
static char log_proc[32] = "master";

static const char *const lvl_names[] = {"error", "warn", "info", "debug"};

/* Set the level and program name; call once at start-up. */
void
log_init(int level, const char *progname)
{
	log_level = level;
	if (progname)
		log_prog = progname;
}

/* Name this process in every line it logs ("worker 1"). */
void
log_procinit(const char *procname)
{
	snprintf(log_proc, sizeof log_proc, "%s", procname);
}

/* Level number for a name, or -1. */
int
log_parse_level(const char *s)
{
	for (int i = 0; i < 4; i++)
		if (strcasecmp(s, lvl_names[i]) == 0)
			return i;
	if (strcasecmp(s, "warning") == 0)
		return LOG_LVL_WARN;
	return -1;
}

/* Name for a level. */
const char *
log_level_name(int l)
{
	return (l >= 0 && l < 4) ? lvl_names[l] : "?";
}

static void
vlog(int lvl, int err, const char *fmt, va_list ap)
{
	char line[2048];
	size_t n;
	struct tm tm;
	time_t t = time(NULL);
	int k;

	gmtime_r(&t, &tm);
	n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%SZ ", &tm);
	k = snprintf(line + n, sizeof line - n, "%s[%d] %s %s: ", log_prog,
	             (int)getpid(), log_proc, lvl_names[lvl]);
	if (k > 0 && (size_t)k < sizeof line - n)
		n += (size_t)k;
	k = vsnprintf(line + n, sizeof line - n, fmt, ap);
	secret_redact(line + n); /* whatever the caller passed */
	if (k > 0)
		n = (size_t)k < sizeof line - n ? n + (size_t)k
		                                : sizeof line - 1;
	if (err && n < sizeof line - 1)
		n += (size_t)snprintf(line + n, sizeof line - n, ": %s",
		                      strerror(err));
	if (n > sizeof line - 2)
		n = sizeof line - 2;
	line[n++] = '\n';
	(void)!write(STDERR_FILENO, line, n);
}

#define LOGFN(fn, lvl, err)                                                    \
	void fn(const char *fmt, ...)                                          \
	{                                                                      \
		va_list ap;                                                    \
		int e = errno;                                                 \
		if (log_level < (lvl))                                         \
			return;                                                \
		va_start(ap, fmt);                                             \
		vlog(lvl, err ? e : 0, fmt, ap);                               \
		va_end(ap);                                                    \
		errno = e;                                                     \
	}

LOGFN(log_warn, LOG_LVL_WARN, 1)
LOGFN(log_warnx, LOG_LVL_WARN, 0)
LOGFN(log_info, LOG_LVL_INFO, 0)
LOGFN(log_debug, LOG_LVL_DEBUG, 0)

/* Log at error level regardless of the configured level. */
void
log_raw(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(LOG_LVL_ERROR, 0, fmt, ap);
	va_end(ap);
}

/* Log with strerror(errno) and exit 1. */
void
fatal(const char *fmt, ...)
{
	va_list ap;
	int e = errno;

	va_start(ap, fmt);
	vlog(LOG_LVL_ERROR, e, fmt, ap);
	va_end(ap);
	exit(1);
}

/* Log and exit 1. */
void
fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(LOG_LVL_ERROR, 0, fmt, ap);
	va_end(ap);
	exit(1);
}
