/* The access log: one line per client request, as key=value text or one
 * JSON object, appended by each worker to the configured file (or stderr).
 * Each line goes out in one write(2) on an O_APPEND descriptor, so lines
 * from several workers never interleave. Never the prompt, the answer or
 * a key: only the fields of struct access_rec. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/json.h"
#include "common/log.h"
#include "worker/worker.h"

#define AL_CLOSED (-2) /* not opened yet */
#define AL_OFF    (-1)

static int al_fd = AL_CLOSED;
static int al_own;         /* we opened al_fd (not stderr) */
static struct buf al_line; /* reused for every line */

/* Open the destination named by access_log. */
void
accesslog_open(const struct cfg *cfg)
{
	accesslog_close();
	al_fd = AL_OFF;
	if (strcmp(cfg->access_log, "off") == 0)
		return;
	if (cfg->access_log[0] == '\0') {
		al_fd = STDERR_FILENO;
		return;
	}
	al_fd = open(cfg->access_log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC,
	             0640);
	if (al_fd == -1) {
		log_warn("open(%s) failed; access log off", cfg->access_log);
		al_fd = AL_OFF;
		return;
	}
	al_own = 1;
}

/* Close the destination if we opened it. */
void
accesslog_close(void)
{
	if (al_own && al_fd >= 0)
		close(al_fd);
	al_own = 0;
	buf_free(&al_line);
	al_fd = AL_CLOSED;
}

/* Format wall-clock ms as "2026-01-02T03:04:05.678Z" into out[32]. */
static void
al_time(char *out, int64_t wall_ms)
{
	time_t t = (time_t)(wall_ms / 1000);
	struct tm tm;
	char s[24];

	gmtime_r(&t, &tm);
	strftime(s, sizeof s, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, 32, "%s.%03dZ", s, (int)(wall_ms % 1000));
}

/* True if a text value must be quoted to stay one token. */
static int
al_needs_quote(const char *s)
{
	if (*s == '\0')
		return 1;
	for (; *s; s++)
		if ((unsigned char)*s <= ' ' || *s == '"' || *s == '=' ||
		    *s == '\\' || *s == 0x7f)
			return 1;
	return 0;
}

/* Append " key=value", quoting and escaping the value when needed. */
static void
al_text_str(struct buf *b, const char *key, const char *v)
{
	buf_printf(b, " %s=", key);
	if (!al_needs_quote(v)) {
		buf_adds(b, v);
		return;
	}
	buf_addc(b, '"');
	for (; *v; v++) {
		unsigned char c = (unsigned char)*v;

		if (c == '"' || c == '\\')
			buf_printf(b, "\\%c", c);
		else if (c < ' ' || c == 0x7f)
			buf_printf(b, "\\x%02x", c);
		else
			buf_addc(b, (char)c);
	}
	buf_addc(b, '"');
}

/* The key=value form. */
static void
al_text(struct buf *b, int64_t wall_ms, const struct access_rec *a)
{
	char ts[32];

	al_time(ts, wall_ms);
	buf_printf(b, "time=%s", ts);
	al_text_str(b, "id", a->id);
	al_text_str(b, "proto", a->proto ? a->proto : "-");
	al_text_str(b, "model", a->model);
	al_text_str(b, "deployment", a->deployment);
	al_text_str(b, "provider", a->provider);
	buf_printf(b, " status=%d", a->status);
	al_text_str(b, "code", a->code);
	buf_printf(b, " attempts=%d latency_ms=%d ttft_ms=%d", a->attempts,
	           a->latency_ms, a->ttft_ms);
	buf_printf(b, " prompt_tokens=%lld completion_tokens=%lld stream=%d",
	           a->prompt_tokens, a->completion_tokens, a->stream ? 1 : 0);
	al_text_str(b, "trail", a->trail);
	buf_addc(b, '\n');
}

/* The JSON object form. */
static void
al_json(struct buf *b, int64_t wall_ms, const struct access_rec *a)
{
	struct jw jw;
	char ts[32];

	al_time(ts, wall_ms);
	jw_init(&jw, b);
	jw_obj(&jw);
	jw_key(&jw, "time");
	jw_cstr(&jw, ts);
	jw_key(&jw, "id");
	jw_cstr(&jw, a->id);
	jw_key(&jw, "proto");
	jw_cstr(&jw, a->proto ? a->proto : "-");
	jw_key(&jw, "model");
	jw_cstr(&jw, a->model);
	jw_key(&jw, "deployment");
	jw_cstr(&jw, a->deployment);
	jw_key(&jw, "provider");
	jw_cstr(&jw, a->provider);
	jw_key(&jw, "status");
	jw_int(&jw, a->status);
	jw_key(&jw, "code");
	jw_cstr(&jw, a->code);
	jw_key(&jw, "attempts");
	jw_int(&jw, a->attempts);
	jw_key(&jw, "latency_ms");
	jw_int(&jw, a->latency_ms);
	jw_key(&jw, "ttft_ms");
	jw_int(&jw, a->ttft_ms);
	jw_key(&jw, "prompt_tokens");
	jw_int(&jw, a->prompt_tokens);
	jw_key(&jw, "completion_tokens");
	jw_int(&jw, a->completion_tokens);
	jw_key(&jw, "stream");
	jw_bool(&jw, a->stream != 0);
	jw_key(&jw, "trail");
	jw_cstr(&jw, a->trail);
	jw_obj_end(&jw);
	buf_addc(b, '\n');
}

/* Format one line into b. */
void
accesslog_format(struct buf *b, int log_format, int64_t wall_ms,
                 const struct access_rec *a)
{
	if (log_format == LOGF_JSON)
		al_json(b, wall_ms, a);
	else
		al_text(b, wall_ms, a);
}

/* Whether access lines are written at all (access_log = "off" is not). */
int
accesslog_enabled(void)
{
	return al_fd != AL_CLOSED;
}

/* Write one request's line (best effort: a failed write is not retried). */
void
accesslog_write(const struct cfg *cfg, const struct access_rec *a)
{
	struct buf *b = &al_line;
	ssize_t n;

	if (al_fd == AL_CLOSED)
		accesslog_open(cfg);
	if (al_fd < 0)
		return;
	buf_reset(b);
	accesslog_format(b, cfg->log_format, clock_wall_ms(), a);
	if (b->oom)
		return;
	do
		n = write(al_fd, b->data, b->len);
	while (n == -1 && errno == EINTR);
}
