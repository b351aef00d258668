#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/secret.h"

/*
 * Repeated lines. Each distinct message (level and text) is written at
 * most once per LOG_REPEAT_MS; repeats in between are counted, and the
 * count goes out with the message's next line, or from log_tick once the
 * repeats stop. A flood of one line (accept() at the fd limit, a dead
 * upstream) thus costs a line or two a second. Slots are few and
 * direct-mapped: a message that takes another's slot flushes its count.
 */
#define LOG_REPEAT_MS 1000
#define LOG_NREP      64

struct log_rep {
	uint64_t hash;
	int64_t since_ms; /* when the message was last written */
	unsigned suppressed;
	int lvl;
	char text[200];
};

static struct log_rep log_reps[LOG_NREP];

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

/* The "time prog[pid] proc level: " prefix into line; its length. */
static size_t
log_prefix(char *line, size_t size, int lvl)
{
	struct tm tm;
	time_t t = time(NULL);
	size_t n;
	int k;

	gmtime_r(&t, &tm);
	n = strftime(line, size, "%Y-%m-%dT%H:%M:%SZ ", &tm);
	k = snprintf(line + n, size - n, "%s[%d] %s %s: ", log_prog,
	             (int)getpid(), log_proc, lvl_names[lvl]);
	if (k > 0 && (size_t)k < size - n)
		n += (size_t)k;
	return n;
}

/* Write one line: prefix, text, and a count of suppressed repeats. */
static void
log_write(int lvl, const char *text, unsigned suppressed)
{
	char line[2304];
	size_t n = log_prefix(line, sizeof line, lvl);
	int k;

	if (suppressed)
		k = snprintf(line + n, sizeof line - n,
		             "%s (%u identical line%s suppressed)", text,
		             suppressed, suppressed == 1 ? "" : "s");
	else
		k = snprintf(line + n, sizeof line - n, "%s", text);
	if (k > 0)
		n = (size_t)k < sizeof line - n ? n + (size_t)k
		                                : sizeof line - 1;
	if (n > sizeof line - 2)
		n = sizeof line - 2;
	line[n++] = '\n';
	(void)!write(STDERR_FILENO, line, n);
}

/* FNV-1a of a level and a text. */
static uint64_t
log_hash(int lvl, const char *s)
{
	uint64_t h = 1469598103934665603ULL ^ (uint64_t)lvl;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

/* Write text unless it repeats a line written less than LOG_REPEAT_MS
 * ago; always is set for lines that must go out (fatal). */
static void
log_emit(int lvl, const char *text, int always)
{
	uint64_t h = log_hash(lvl, text);
	struct log_rep *r = &log_reps[h % LOG_NREP];
	int64_t now = clock_ms();
	unsigned n = 0;
	size_t len;

	if (!always && r->hash == h && r->since_ms &&
	    now - r->since_ms < LOG_REPEAT_MS) {
		r->suppressed++;
		return;
	}
	if (r->hash == h)
		n = r->suppressed;
	else if (r->suppressed)
		log_write(r->lvl, r->text, r->suppressed);
	r->hash = h;
	r->since_ms = now;
	r->suppressed = 0;
	r->lvl = lvl;
	len = strlen(text) < sizeof r->text ? strlen(text) : sizeof r->text - 1;
	memcpy(r->text, text, len);
	r->text[len] = '\0';
	log_write(lvl, text, n);
}

/* Report repeats that stopped: call about once a second. */
void
log_tick(void)
{
	int64_t now = clock_ms();

	for (int i = 0; i < LOG_NREP; i++) {
		struct log_rep *r = &log_reps[i];

		if (r->suppressed && now - r->since_ms >= LOG_REPEAT_MS) {
			log_write(r->lvl, r->text, r->suppressed);
			r->suppressed = 0;
			r->since_ms = now;
		}
	}
}

static void
vlog(int lvl, int err, int always, const char *fmt, va_list ap)
{
	char text[2048];
	int k;

	k = vsnprintf(text, sizeof text, fmt, ap);
	secret_redact(text); /* whatever the caller passed */
	if (err && k >= 0 && (size_t)k < sizeof text - 1)
		snprintf(text + k, sizeof text - (size_t)k, ": %s",
		         strerror(err));
	log_emit(lvl, text, always);
}

#define LOGFN(fn, lvl, err)                                                    \
	void fn(const char *fmt, ...)                                          \
	{                                                                      \
		va_list ap;                                                    \
		int e = errno;                                                 \
		if (log_level < (lvl))                                         \
			return;                                                \
		va_start(ap, fmt);                                             \
		vlog(lvl, err ? e : 0, 0, fmt, ap);                            \
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
	vlog(LOG_LVL_ERROR, 0, 1, fmt, ap);
	va_end(ap);
}

/* Log with strerror(errno) and exit 1. */
void
fatal(const char *fmt, ...)
{
	va_list ap;
	int e = errno;

	va_start(ap, fmt);
	vlog(LOG_LVL_ERROR, e, 1, fmt, ap);
	va_end(ap);
	exit(1);
}

/* Log and exit 1. */
void
fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(LOG_LVL_ERROR, 0, 1, fmt, ap);
	va_end(ap);
	exit(1);
}
