/* llmfctl: inspect and change a running llmfd through its health table. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <libconfig.h>

#include "common/buf.h"
#include "common/cfg.h"
#include "common/clock.h"
#include "common/fleet.h"
#include "common/log.h"
#include "common/shm.h"
#include "common/status.h"

#define CTL_CONFIG     "/etc/llmfd/llmfd.conf"
#define CTL_TABLE      "/run/llmfd/health"
#define CTL_MAX_WEIGHT 1000000
#define CTL_MAX_COOL_S (7 * 86400)
#define CTL_BAR        40

enum ctl_cmd {
	CMD_STATUS,
	CMD_SHOW,
	CMD_WATCH,
	CMD_WEIGHT,
	CMD_DRAIN,
	CMD_UNDRAIN,
	CMD_COOLDOWN,
	CMD_RESET,
	CMD_RELOAD,
	CMD_CHECK,
	CMD_EVENTS,
	CMD_LOG_LEVEL,
	CMD__MAX
};

static const char *const cmd_names[CMD__MAX] = {
    [CMD_STATUS] = "status",     [CMD_SHOW] = "show",
    [CMD_WATCH] = "watch",       [CMD_WEIGHT] = "weight",
    [CMD_DRAIN] = "drain",       [CMD_UNDRAIN] = "undrain",
    [CMD_COOLDOWN] = "cooldown", [CMD_RESET] = "reset",
    [CMD_RELOAD] = "reload",     [CMD_CHECK] = "check",
    [CMD_EVENTS] = "events",     [CMD_LOG_LEVEL] = "log-level"};

struct ctl {
	const char *config; /* -c, NULL if not given */
	const char *table;  /* -t, NULL if not given */
	char path[PATH_MAX];
	struct shm shm;
	int argc; /* the command's arguments, name excluded */
	char **argv;
	char *config_bad; /* why the config failed to parse (table path
	                     scanned from its text), or NULL */
};

static volatile sig_atomic_t ctl_stop;
static struct termios ctl_tty_saved;
static int ctl_tty_raw;

/* Print "llmfctl: reason" on stderr; returns exit code 1. */
static int ctl_err(const char *, ...) __attribute__((format(printf, 1, 2)));

static int
ctl_err(const char *fmt, ...)
{
	va_list ap;

	fputs("llmfctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}

/* Print the usage message to f; returns exit code 2. */
static int
ctl_usage(FILE *f)
{
	fputs(
	    "usage: llmfctl [-c config | -t table] command [args]\n"
	    "  status [--json] [--fleet]   every deployment, one row each;\n"
	    "                              --fleet: the hosts and fleet rates\n"
	    "  show NAME [--json]          one deployment in full\n"
	    "  watch [-n secs] [--count N] refreshing status with rates\n"
	    "  weight NAME N | --reset [--fleet]\n"
	    "                              override or restore the weight\n"
	    "  drain | undrain NAME [--fleet]\n"
	    "                              stop or resume new traffic\n"
	    "  cooldown NAME SECONDS       cool a deployment down\n"
	    "  reset NAME                  clear cooldown and circuit\n"
	    "  reload                      SIGHUP the llmfd master\n"
	    "  check [-c] [FILE]           validate a config file\n"
	    "  events [--follow] [-n N]    recent events\n"
	    "  log-level LEVEL             error, warn, info or debug\n",
	    f);
	return 2;
}

/* Parse a decimal integer in [min, max]; 0, or -1 if it is not one. */
static int
ctl_num(const char *s, long long min, long long max, long long *out)
{
	char *end;

	errno = 0;
	*out = strtoll(s, &end, 10);
	if (errno || end == s || *end != '\0' || *out < min || *out > max)
		return -1;
	return 0;
}

/* Remove flag from the command's arguments; 1 if it was there. */
static int
ctl_take_flag(struct ctl *c, const char *flag)
{
	int found = 0, n = 0;

	for (int i = 0; i < c->argc; i++)
		if (strcmp(c->argv[i], flag) == 0)
			found = 1;
		else
			c->argv[n++] = c->argv[i];
	c->argc = n;
	return found;
}

/* The table path v as written in config file: relative paths resolve
 * against the config's directory. */
static void
ctl_table_path(const char *file, const char *v, char *table, size_t tablesz)
{
	if (v[0] != '/' && strchr(file, '/')) {
		int dl = (int)(strrchr(file, '/') - file);
		snprintf(table, tablesz, "%.*s/%s", dl, file, v);
	} else
		snprintf(table, tablesz, "%s", v);
}

/*
 * The one place llmfctl reads a config file. With table set, only copy out
 * daemon.health_table, read with libconfig directly: cfg_load would also
 * resolve every "$VAR" api_key, which an operator's shell rarely has, and
 * llmfctl needs no secret. With table NULL (check), run the full cfg_load.
 * 0, or -1 with *cause.
 */
static int
ctl_config_load(const char *file, char *table, size_t tablesz, char **cause)
{
	struct cfg *cfg;
	config_t lc;
	const char *v = NULL;
	int rc = 0;

	if (table == NULL) {
		if ((cfg = cfg_load(file, cause)) == NULL)
			return -1;
		cfg_free(cfg);
		return 0;
	}
	config_init(&lc);
	if (!config_read_file(&lc, file)) {
		if (config_error_type(&lc) == CONFIG_ERR_FILE_IO)
			rc = asprintf(cause, "cannot read config %s: %s", file,
			              strerror(errno));
		else
			rc = asprintf(
			    cause, "%s:%d: %s",
			    config_error_file(&lc) ? config_error_file(&lc)
			                           : file,
			    config_error_line(&lc), config_error_text(&lc));
		if (rc == -1)
			*cause = NULL;
		rc = -1;
	} else if (!config_lookup_string(&lc, "daemon.health_table", &v) ||
	           v[0] == '\0')
		v = CTL_TABLE;
	if (rc == 0)
		ctl_table_path(file, v, table, tablesz);
	config_destroy(&lc);
	return rc;
}

/*
 * Fallback for a config libconfig refuses (an operator mid-edit, a reload
 * that llmfd will refuse and log): find `health_table = "PATH"` in the
 * file's text, skipping comment lines. 0, or -1 if there is none.
 */
static int
ctl_scan_table(const char *file, char *table, size_t tablesz)
{
	char line[PATH_MAX + 64], *p, *q;
	FILE *f;
	int rc = -1;

	if ((f = fopen(file, "r")) == NULL)
		return -1;
	while (rc == -1 && fgets(line, sizeof line, f) != NULL) {
		p = line + strspn(line, " \t");
		if (*p == '#' || strncmp(p, "//", 2) == 0 ||
		    (p = strstr(p, "health_table")) == NULL)
			continue;
		p += strlen("health_table");
		p += strspn(p, " \t");
		if (*p != '=' && *p != ':')
			continue;
		p += 1 + strspn(p + 1, " \t");
		if (*p != '"' || (q = strchr(p + 1, '"')) == NULL || q == p + 1)
			continue;
		*q = '\0';
		ctl_table_path(file, p + 1, table, tablesz);
		rc = 0;
	}
	fclose(f);
	return rc;
}

/* Resolve the table path: -t, else the config's, else the default. */
static int
ctl_resolve(struct ctl *c)
{
	const char *file = c->config ? c->config : CTL_CONFIG;
	char *cause = NULL;

	if (c->table) {
		snprintf(c->path, sizeof c->path, "%s", c->table);
		return 0;
	}
	if (c->config == NULL && access(CTL_CONFIG, F_OK) == -1) {
		snprintf(c->path, sizeof c->path, "%s", CTL_TABLE);
		return 0;
	}
	if (ctl_config_load(file, c->path, sizeof c->path, &cause) == 0)
		return 0;
	if (cause && access(file, R_OK) == 0 &&
	    ctl_scan_table(file, c->path, sizeof c->path) == 0) {
		c->config_bad = cause; /* reload reports it */
		return 0;
	}
	ctl_err("%s", cause ? cause : "cannot load the configuration");
	free(cause);
	return -1;
}

/* Attach the table; writable for the commands that change it. */
static int
ctl_open(struct ctl *c, int writable)
{
	char *cause = NULL;
	int err;

	if (ctl_resolve(c) == -1)
		return -1;
	if (shm_attach(&c->shm, c->path, writable, &cause) == 0)
		return 0;
	err = errno;
	if (writable && (err == EACCES || err == EPERM || err == EROFS ||
	                 (access(c->path, W_OK) == -1 && errno == EACCES)))
		ctl_err("permission denied: changing the health table needs "
		        "write access to %s",
		        c->path);
	else
		ctl_err("%s", cause ? cause : "cannot attach the health table");
	free(cause);
	return -1;
}

/* Slot index of a deployment name, or -1 after printing the error. */
static int
ctl_find(struct ctl *c, const char *name)
{
	int i = shm_find(&c->shm, name);

	if (i == -1)
		ctl_err("no deployment named %s", name);
	return i;
}

/* Write a buffer to stdout; 0, or 1 on a write error. */
static int
ctl_flush(struct buf *b)
{
	int rc = 0;

	if (b->oom)
		rc = ctl_err("out of memory");
	else if (b->len && fwrite(b->data, 1, b->len, stdout) != b->len)
		rc = ctl_err("write to stdout failed: %s", strerror(errno));
	else if (fflush(stdout) == EOF)
		rc = ctl_err("write to stdout failed: %s", strerror(errno));
	buf_reset(b);
	return rc;
}

/* Terminal width of stdout, 0 if it is not a terminal. */
static int
ctl_columns(void)
{
	struct winsize ws;

	if (!isatty(STDOUT_FILENO) ||
	    ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == -1 || ws.ws_col == 0)
		return 0;
	return ws.ws_col;
}

/* Snapshot every non-free slot into rows (SHM_NSLOTS long); the count. */
static int
ctl_rows(struct ctl *c, struct status_row *rows)
{
	int64_t now = clock_ms(), wall = clock_wall_ms();
	int n = 0;

	for (int i = 0; i < SHM_NSLOTS; i++)
		if (atomic_load(&c->shm.slots[i].state) != SLOT_FREE)
			status_snapshot(&c->shm, i, now, wall, &rows[n++]);
	return n;
}

/* The table's config file name, made printable. */
static void
ctl_config_name(struct ctl *c, char *out, size_t outsz)
{
	char raw[sizeof c->shm.hdr->config_file + 1];

	memcpy(raw, c->shm.hdr->config_file, sizeof raw - 1);
	raw[sizeof raw - 1] = '\0';
	status_printable(out, outsz, raw[0] ? raw : "-", SIZE_MAX);
}

/* The "llmfd pid N, generation N, config FILE" line. */
static void
ctl_header(struct ctl *c, struct buf *b)
{
	char file[512];

	ctl_config_name(c, file, sizeof file);
	buf_printf(b, "llmfd pid %d, generation %llu, config %s\n",
	           (int)atomic_load(&c->shm.hdr->master_pid),
	           (unsigned long long)atomic_load(&c->shm.hdr->generation),
	           file);
}

/* status --json: the header fields and every deployment. */
static void
ctl_status_json(struct ctl *c, struct buf *b, const struct status_row *rows,
                int n)
{
	char raw[sizeof c->shm.hdr->config_file + 1];

	memcpy(raw, c->shm.hdr->config_file, sizeof raw - 1);
	raw[sizeof raw - 1] = '\0';
	buf_printf(
	    b,
	    "{\"generation\":%llu,\"master_pid\":%d,"
	    "\"worker_restarts\":%llu,\"config\":",
	    (unsigned long long)atomic_load(&c->shm.hdr->generation),
	    (int)atomic_load(&c->shm.hdr->master_pid),
	    (unsigned long long)atomic_load(&c->shm.hdr->worker_restarts));
	status_json_str(b, raw);
	buf_adds(b, ",\"deployments\":[");
	for (int i = 0; i < n; i++) {
		if (i)
			buf_addc(b, ',');
		status_json_row(b, &rows[i]);
	}
	buf_adds(b, "]}\n");
}

/* Seconds since wall-clock ms t ("never" for 0) into out. */
static void
ctl_age(char *out, size_t outsz, int64_t t, int64_t wall)
{
	if (t <= 0)
		snprintf(out, outsz, "never");
	else
		snprintf(out, outsz, "%.2fs ago",
		         (double)(wall > t ? wall - t : 0) / 1000.0);
}

/* The fleet lines of status --fleet: the connection and every host. */
static void
ctl_fleet_hosts(struct buf *b, const struct fleet_view *v, int64_t wall)
{
	char age[32], id[SHM_FLEET_ID], redis[sizeof v->redis];

	ctl_age(age, sizeof age, v->sync_wall_ms, wall);
	status_printable(redis, sizeof redis, v->redis, SIZE_MAX);
	status_printable(id, sizeof id, v->self, SIZE_MAX);
	buf_printf(b,
	           "fleet: %s, redis %s, this host %s; last sync %s, rtt "
	           "%.1f ms; %u hosts; %llu failures, %llu changes applied\n",
	           fleet_state_name(v->state), redis, id, age,
	           (double)v->rtt_us / 1000.0, v->nhosts,
	           (unsigned long long)v->failures,
	           (unsigned long long)v->applied);
	buf_printf(b, "%-40s %s\n", "HOST", "LAST SYNC");
	for (uint32_t i = 0; i < v->nlisted; i++) {
		status_printable(id, sizeof id, v->hosts[i].id, SIZE_MAX);
		ctl_age(age, sizeof age, v->hosts[i].seen_wall_ms, wall);
		buf_printf(b, "%-40s %s%s\n", id, age,
		           strcmp(v->hosts[i].id, v->self) == 0 ? " (this host)"
		                                                : "");
	}
	buf_addc(b, '\n');
}

/* "used/limit" of a fleet counter, "-" without a limit. */
static void
ctl_fleet_ratio(char *out, size_t outsz, uint64_t used, int64_t lim)
{
	if (lim <= 0)
		snprintf(out, outsz, "-");
	else
		snprintf(out, outsz, "%llu/%lld", (unsigned long long)used,
		         (long long)lim);
}

/* The fleet-wide rate lines of status --fleet. */
static void
ctl_fleet_rates(struct ctl *c, struct buf *b, const struct status_row *rows,
                int n)
{
	char name[64], r[48], t[48];
	int any = 0;

	for (int i = 0; i < n; i++) {
		const struct slot_sh *s = &c->shm.slots[rows[i].index];

		if (rows[i].rpm_limit <= 0 && rows[i].tpm_limit <= 0)
			continue;
		if (!any++)
			buf_printf(b, "\n%-24s %-16s %s\n", "FLEET RATE", "RPM",
			           "TPM");
		status_printable(name, sizeof name, rows[i].name, 24);
		ctl_fleet_ratio(r, sizeof r, atomic_load(&s->fleet_req_used),
		                rows[i].rpm_limit);
		ctl_fleet_ratio(t, sizeof t, atomic_load(&s->fleet_tok_used),
		                rows[i].tpm_limit);
		buf_printf(b, "%-24s %-16s %s\n", name, r, t);
	}
}

/* The "fleet" member of status --fleet --json. */
static void
ctl_fleet_json(struct ctl *c, struct buf *b, const struct fleet_view *v,
               const struct status_row *rows, int n, int64_t wall)
{
	buf_printf(b, ",\"fleet\":{\"state\":\"%s\",\"redis\":",
	           fleet_state_name(v->state));
	status_json_str(b, v->redis);
	buf_adds(b, ",\"host\":");
	status_json_str(b, v->self);
	buf_printf(
	    b,
	    ",\"last_sync_age_ms\":%lld,\"rtt_us\":%llu,\"hosts_live\":%u,"
	    "\"failures\":%llu,\"applied\":%llu,\"hosts\":[",
	    v->sync_wall_ms ? (long long)(wall - v->sync_wall_ms) : -1LL,
	    (unsigned long long)v->rtt_us, v->nhosts,
	    (unsigned long long)v->failures, (unsigned long long)v->applied);
	for (uint32_t i = 0; i < v->nlisted; i++) {
		buf_adds(b, i ? ",{\"host\":" : "{\"host\":");
		status_json_str(b, v->hosts[i].id);
		buf_printf(b, ",\"last_sync_age_ms\":%lld}",
		           (long long)(wall - v->hosts[i].seen_wall_ms));
	}
	buf_adds(b, "],\"rates\":[");
	for (int i = 0, any = 0; i < n; i++) {
		const struct slot_sh *s = &c->shm.slots[rows[i].index];

		if (rows[i].rpm_limit <= 0 && rows[i].tpm_limit <= 0)
			continue;
		buf_adds(b, any++ ? ",{\"deployment\":" : "{\"deployment\":");
		status_json_str(b, rows[i].name);
		buf_printf(b,
		           ",\"rpm_used\":%llu,\"rpm_limit\":%lld,"
		           "\"tpm_used\":%llu,\"tpm_limit\":%lld}",
		           (unsigned long long)atomic_load(&s->fleet_req_used),
		           (long long)rows[i].rpm_limit,
		           (unsigned long long)atomic_load(&s->fleet_tok_used),
		           (long long)rows[i].tpm_limit);
	}
	buf_adds(b, "]}");
}

/* Header and table (or JSON) of the current status into b; with fleet,
 * the fleet's hosts and rates too. */
static int
ctl_render(struct ctl *c, struct buf *b, int json, int fleet)
{
	struct status_row *rows = calloc(SHM_NSLOTS, sizeof *rows);
	struct fleet_view *v = fleet ? calloc(1, sizeof *v) : NULL;
	int64_t wall = clock_wall_ms();
	int n;

	if (rows == NULL || (fleet && v == NULL)) {
		free(rows);
		return ctl_err("out of memory");
	}
	if (fleet && fleet_view(c->shm.hdr, v) == -1) {
		free(rows);
		free(v);
		return ctl_err("the table's fleet block stays mid-write");
	}
	n = ctl_rows(c, rows);
	if (json) {
		ctl_status_json(c, b, rows, n);
		if (fleet) { /* splice "fleet" in before the closing brace */
			b->len -= 2;
			ctl_fleet_json(c, b, v, rows, n, wall);
			buf_adds(b, "}\n");
		}
	} else {
		ctl_header(c, b);
		if (fleet)
			ctl_fleet_hosts(b, v, wall);
		status_table(b, rows, n, NULL, ctl_columns());
		if (fleet)
			ctl_fleet_rates(c, b, rows, n);
	}
	free(rows);
	free(v);
	return 0;
}

/* llmfctl status [--json] [--fleet] */
static int
cmd_status(struct ctl *c)
{
	struct buf b = {0};
	int fleet = ctl_take_flag(c, "--fleet"), json = 0, rc;

	for (int i = 0; i < c->argc; i++) {
		if (strcmp(c->argv[i], "--json") != 0)
			return ctl_usage(stderr);
		json = 1;
	}
	if (ctl_open(c, 0) == -1)
		return 1;
	if (fleet && atomic_load(&c->shm.hdr->fleet_state) == FLEET_OFF)
		return ctl_err("this llmfd has no fleet section: no fleet to "
		               "show");
	rc = ctl_render(c, &b, json, fleet);
	if (rc == 0)
		rc = ctl_flush(&b);
	buf_free(&b);
	return rc;
}

/* Label of histogram bucket k ("<= 0.25ms", "<= 2s", "> 2097s"). */
static void
ctl_bucket_label(int k, char *out, size_t outsz)
{
	double ms;

	if (k >= SHM_HIST) {
		ms = (double)shm_hist_bound_us(SHM_HIST - 1) / 1000.0;
		snprintf(out, outsz, "> %gs", ms / 1000.0);
		return;
	}
	ms = (double)shm_hist_bound_us(k) / 1000.0;
	if (ms < 1000.0)
		snprintf(out, outsz, "<= %gms", ms);
	else
		snprintf(out, outsz, "<= %gs", ms / 1000.0);
}

/* A histogram as rows from its first to its last non-empty bucket. */
static void
ctl_hist(struct buf *b, const char *title, const uint64_t *h)
{
	uint64_t max = 0;
	int lo = -1, hi = -1;
	char label[32];

	for (int k = 0; k <= SHM_HIST; k++)
		if (h[k]) {
			lo = lo == -1 ? k : lo;
			hi = k;
			max = h[k] > max ? h[k] : max;
		}
	buf_printf(b, "%s histogram:%s\n", title, lo == -1 ? " empty" : "");
	for (int k = lo; lo != -1 && k <= hi; k++) {
		int bar = (int)((h[k] * CTL_BAR + max - 1) / max);

		ctl_bucket_label(k, label, sizeof label);
		buf_printf(b, "  %-12s %8llu %.*s\n", label,
		           (unsigned long long)h[k], bar,
		           "########################################");
	}
}

/* The failures-by-class line of show. */
static void
ctl_show_classes(struct buf *b, const struct status_row *r)
{
	int any = 0;

	buf_adds(b, "failures by class ");
	for (int k = 0; k < EC__MAX; k++)
		if (k != EC_OK && r->by_class[k]) {
			buf_printf(b, "%s%s %llu", any ? ", " : "",
			           status_class_name(k),
			           (unsigned long long)r->by_class[k]);
			any = 1;
		}
	buf_adds(b, any ? "\n" : "none\n");
}

/* Identity, weight and state lines of show. */
static void
ctl_show_ident(struct buf *b, const struct status_row *r)
{
	char s[4][128];

	status_printable(s[0], sizeof s[0], r->name, SIZE_MAX);
	status_printable(s[1], sizeof s[1], r->group, SIZE_MAX);
	status_printable(s[2], sizeof s[2], r->provider, SIZE_MAX);
	status_printable(s[3], sizeof s[3], r->model, SIZE_MAX);
	buf_printf(b, "name              %s (slot %d)\n", s[0], r->index);
	buf_printf(b, "group             %s\n", s[1]);
	buf_printf(b, "provider          %s\n", s[2]);
	buf_printf(b, "model             %s\n", s[3]);
	buf_printf(b, "weight            %d%s (configured %d)\n",
	           (int)r->weight, r->overridden ? " override" : "",
	           (int)r->cfg_weight);
	buf_printf(b, "admin             %s\n",
	           r->admin == ADMIN_DRAINED ? "drained" : "active");
	buf_printf(b, "state             %s\n", r->state_text);
}

/* Counter lines of show. */
static void
ctl_show_counters(struct buf *b, const struct status_row *r)
{
	buf_printf(
	    b,
	    "requests          %llu (successes %llu, failures %llu, "
	    "retries %llu)\n",
	    (unsigned long long)r->requests, (unsigned long long)r->successes,
	    (unsigned long long)r->failures, (unsigned long long)r->retries);
	ctl_show_classes(b, r);
	buf_printf(b, "consecutive fails %u\n", r->consec_fail);
	buf_printf(b, "in flight         %d\n", (int)r->inflight);
	buf_printf(b,
	           "fallbacks         from here %llu, to here %llu; "
	           "skipped %llu\n",
	           (unsigned long long)r->fallbacks_from,
	           (unsigned long long)r->fallbacks_to,
	           (unsigned long long)r->skipped);
	buf_printf(b, "tokens            in %llu, out %llu\n",
	           (unsigned long long)r->tokens_in,
	           (unsigned long long)r->tokens_out);
}

/* A rate window line: used/limit this minute and the previous minute. */
static void
ctl_show_rate(struct buf *b, const char *k, uint64_t used, uint64_t prev,
              int64_t lim)
{
	buf_printf(b, "%-17s %llu", k, (unsigned long long)used);
	if (lim > 0)
		buf_printf(b, "/%lld", (long long)lim);
	else
		buf_adds(b, " (no limit)");
	buf_printf(b, " this minute, %llu the minute before\n",
	           (unsigned long long)prev);
}

/* Cooldown, circuit and rate-window lines of show. */
static void
ctl_show_windows(struct buf *b, const struct status_row *r)
{
	buf_printf(b, "cooldown          ");
	if (r->cooldown_ms > 0)
		buf_printf(b, "%.1fs remaining", (double)r->cooldown_ms / 1e3);
	else
		buf_adds(b, "none");
	buf_printf(b, " (entered %u times; %u fails in window)\n", r->cooldowns,
	           r->fail_win_count);
	buf_printf(b, "circuit           %s", status_circuit_name(r->circuit));
	if (r->circuit_ms > 0)
		buf_printf(b, ", %.1fs remaining", (double)r->circuit_ms / 1e3);
	buf_printf(b, " (window %llds, opened %u times)\n",
	           (long long)(r->circuit_window_ms / 1000), r->circuit_opens);
	ctl_show_rate(b, "rpm", r->rpm_used, r->rpm_prev, r->rpm_limit);
	ctl_show_rate(b, "tpm", r->tpm_used, r->tpm_prev, r->tpm_limit);
}

/* Latency lines and both histograms of show. */
static void
ctl_show_latency(struct buf *b, const struct status_row *r)
{
	buf_printf(b,
	           "latency           p50 %.1f ms, p95 %.1f ms, p99 %.1f ms, "
	           "ewma %.1f ms, %llu samples\n",
	           r->p50_ms, r->p95_ms, r->p99_ms, r->lat_ewma_ms,
	           (unsigned long long)r->lat_count);
	buf_printf(b,
	           "first token       p50 %.1f ms, p95 %.1f ms, ewma %.1f ms, "
	           "%llu samples\n",
	           r->ttft_p50_ms, r->ttft_p95_ms, r->ttft_ewma_ms,
	           (unsigned long long)r->ttft_count);
	ctl_hist(b, "latency", r->lat_b);
	ctl_hist(b, "first-token", r->ttft_b);
}

/* The last-error line of show. */
static void
ctl_show_error(struct buf *b, const struct status_row *r)
{
	char text[SHM_ERR_MAX];

	if (!r->has_error) {
		buf_adds(b, "last error        none\n");
		return;
	}
	status_printable(text, sizeof text, r->err_text, SIZE_MAX);
	buf_printf(b, "last error        status %d, class %s, %llds ago: %s\n",
	           r->err_status, status_class_name(r->err_class),
	           (long long)(r->err_age_ms / 1000), text);
}

/* llmfctl show NAME [--json] */
static int
cmd_show(struct ctl *c)
{
	struct status_row r;
	struct buf b = {0};
	const char *name = NULL;
	int json = 0, i, rc;

	for (i = 0; i < c->argc; i++)
		if (strcmp(c->argv[i], "--json") == 0)
			json = 1;
		else if (name == NULL)
			name = c->argv[i];
		else
			return ctl_usage(stderr);
	if (name == NULL)
		return ctl_usage(stderr);
	if (ctl_open(c, 0) == -1 || (i = ctl_find(c, name)) == -1)
		return 1;
	status_snapshot(&c->shm, i, clock_ms(), clock_wall_ms(), &r);
	if (json) {
		status_json_detail(&b, &r);
		buf_addc(&b, '\n');
	} else {
		ctl_show_ident(&b, &r);
		ctl_show_counters(&b, &r);
		ctl_show_windows(&b, &r);
		ctl_show_latency(&b, &r);
		ctl_show_error(&b, &r);
	}
	rc = ctl_flush(&b);
	buf_free(&b);
	return rc;
}

/* Signal handler: only note that we should stop. */
static void
ctl_on_signal(int sig)
{
	(void)sig;
	ctl_stop = 1;
}

/* SIGINT and SIGTERM stop loops; no SA_RESTART so waits return EINTR. */
static void
ctl_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = ctl_on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
}

/* Put the terminal back as we found it (safe to call twice). */
static void
ctl_tty_restore(void)
{
	if (ctl_tty_raw) {
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &ctl_tty_saved);
		ctl_tty_raw = 0;
	}
}

/* Non-canonical, no-echo input so watch sees a single `q`. */
static void
ctl_tty_setup(void)
{
	struct termios t;

	if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &t) == -1)
		return;
	ctl_tty_saved = t;
	t.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
	t.c_cc[VMIN] = 0;
	t.c_cc[VTIME] = 0;
	if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &t) == 0) {
		ctl_tty_raw = 1;
		atexit(ctl_tty_restore);
	}
}

/* Wait up to ms for a key or a signal; 1 if watch should stop. */
static int
ctl_wait(int ms)
{
	struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};
	int64_t end = clock_ms() + ms;
	char ch;

	while (!ctl_stop) {
		int left = (int)(end - clock_ms());

		if (left <= 0)
			return 0;
		if (poll(&pfd, ctl_tty_raw ? 1 : 0, left) <= 0)
			continue;
		if (read(STDIN_FILENO, &ch, 1) != 1)
			pfd.fd = -1; /* EOF: stop polling the terminal */
		else if (ch == 'q' || ch == 'Q')
			return 1;
	}
	return 1;
}

/* Previous counters of each slot, for watch's rates. */
struct ctl_prev {
	char name[64];
	uint64_t req, fail;
	int seen;
};

/* Rates from the counter deltas since the previous refresh. */
static void
ctl_rates(const struct status_row *rows, int n, struct ctl_prev *prev,
          double dt, struct status_rate *rates)
{
	for (int i = 0; i < n; i++) {
		const struct status_row *r = &rows[i];
		struct ctl_prev *p = &prev[r->index];
		int same = p->seen && strcmp(p->name, r->name) == 0 &&
		           r->requests >= p->req && r->failures >= p->fail &&
		           dt > 0;

		rates[i].req_s = same ? (double)(r->requests - p->req) / dt : 0;
		rates[i].fail_s =
		    same ? (double)(r->failures - p->fail) / dt : 0;
		memcpy(p->name, r->name, sizeof p->name);
		p->req = r->requests;
		p->fail = r->failures;
		p->seen = 1;
	}
}

/* State carried across watch refreshes. */
struct ctl_watch {
	struct status_row rows[SHM_NSLOTS];
	struct status_rate rates[SHM_NSLOTS];
	struct ctl_prev prev[SHM_NSLOTS];
	int64_t last_ms;
	double every;
	int tty;
};

/* One watch frame into b. */
static void
ctl_watch_frame(struct ctl *c, struct ctl_watch *w, struct buf *b)
{
	int64_t now = clock_ms();
	double dt = w->last_ms ? (double)(now - w->last_ms) / 1000.0 : 0;
	int n = ctl_rows(c, w->rows);

	w->last_ms = now;
	ctl_rates(w->rows, n, w->prev, dt, w->rates);
	if (w->tty)
		buf_adds(b, "\033[H\033[2J");
	ctl_header(c, b);
	if (w->tty)
		buf_printf(b, "every %gs; q or Ctrl-C quits\n", w->every);
	status_table(b, w->rows, n, w->rates, ctl_columns());
}

/* Parse watch's -n and --count; 0, or -1 on a usage error. */
static int
ctl_watch_args(struct ctl *c, double *every, long long *count)
{
	char *end;

	for (int i = 0; i < c->argc; i++) {
		if (strcmp(c->argv[i], "-n") == 0 && i + 1 < c->argc) {
			*every = strtod(c->argv[++i], &end);
			if (*end != '\0' || !(*every >= 0.1 && *every <= 3600))
				return -1;
		} else if (strcmp(c->argv[i], "--count") == 0 &&
		           i + 1 < c->argc) {
			if (ctl_num(c->argv[++i], 1, LLONG_MAX, count) == -1)
				return -1;
		} else
			return -1;
	}
	return 0;
}

/* llmfctl watch [-n SECONDS] [--count N] */
static int
cmd_watch(struct ctl *c)
{
	struct ctl_watch *w;
	struct buf b = {0};
	long long count = 0, done = 0;
	double every = 1;
	int rc = 0;

	if (ctl_watch_args(c, &every, &count) == -1)
		return ctl_usage(stderr);
	if (ctl_open(c, 0) == -1)
		return 1;
	if ((w = calloc(1, sizeof *w)) == NULL)
		return ctl_err("out of memory");
	w->every = every;
	w->tty = isatty(STDOUT_FILENO);
	ctl_signals();
	if (w->tty)
		ctl_tty_setup();
	while (rc == 0 && !ctl_stop) {
		if (done && !w->tty)
			buf_addc(&b, '\n');
		ctl_watch_frame(c, w, &b);
		rc = ctl_flush(&b);
		if (++done == count)
			break;
		if (ctl_wait((int)(every * 1000)))
			break;
	}
	ctl_tty_restore();
	buf_free(&b);
	free(w);
	return rc;
}

/* Record an admin change in the event ring and say it on stdout. */
static void ctl_admin_event(struct ctl *, int, const char *, ...)
    __attribute__((format(printf, 3, 4)));

static void
ctl_admin_event(struct ctl *c, int slot, const char *fmt, ...)
{
	char text[240];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	shm_event_add(&c->shm, SHM_EV_ADMIN, slot, text);
	printf("%s\n", text);
}

/* Open writable and find argv[0]; the slot, or -1 (error printed). */
static int
ctl_open_slot(struct ctl *c, int nargs)
{
	if (c->argc != nargs)
		return ctl_usage(stderr), -2;
	if (ctl_open(c, 1) == -1)
		return -1;
	return ctl_find(c, c->argv[0]);
}

/* Exit code for a failed ctl_open_slot. */
static int
ctl_slot_rc(int i)
{
	return i == -2 ? 2 : 1;
}

/* --fleet: ask the master to publish bits of slot i; 0, or 1 (error
 * printed) when this llmfd has no fleet. */
static int
ctl_fleet_push(struct ctl *c, int i, uint32_t bits)
{
	uint32_t st = atomic_load(&c->shm.hdr->fleet_state);

	if (st == FLEET_OFF)
		return ctl_err("this llmfd has no fleet section: changed on "
		               "this host only");
	atomic_fetch_or(&c->shm.slots[i].fleet_push, bits);
	printf(st == FLEET_UP ? "fleet: the master publishes it to every "
	                        "host\n"
	                      : "fleet: redis is unreachable; the master "
	                        "publishes it once it is back\n");
	return 0;
}

/* llmfctl weight NAME N | --reset [--fleet] */
static int
cmd_weight(struct ctl *c)
{
	struct slot_sh *sl;
	int fleet = ctl_take_flag(c, "--fleet");
	long long w = -1;
	int32_t old;
	int i;

	if (c->argc == 2 && strcmp(c->argv[1], "--reset") != 0 &&
	    ctl_num(c->argv[1], 0, CTL_MAX_WEIGHT, &w) == -1)
		return ctl_err("weight must be an integer from 0 to %d, or "
		               "--reset",
		               CTL_MAX_WEIGHT);
	if ((i = ctl_open_slot(c, 2)) < 0)
		return ctl_slot_rc(i);
	sl = &c->shm.slots[i];
	old = shm_weight(sl);
	atomic_store(&sl->live_weight, (int32_t)w);
	ctl_admin_event(c, i, "weight %s %d -> %d%s%s", c->argv[0], (int)old,
	                (int)shm_weight(sl), w < 0 ? " (configured)" : "",
	                fleet ? " (fleet)" : "");
	return fleet ? ctl_fleet_push(c, i, FLEET_PUSH_WEIGHT) : 0;
}

/* llmfctl drain NAME / undrain NAME [--fleet] */
static int
cmd_admin(struct ctl *c, uint32_t admin)
{
	int fleet = ctl_take_flag(c, "--fleet");
	uint32_t old;
	int i;

	if ((i = ctl_open_slot(c, 1)) < 0)
		return ctl_slot_rc(i);
	old = atomic_exchange(&c->shm.slots[i].admin, admin);
	ctl_admin_event(c, i, "%s %s%s%s",
	                admin == ADMIN_DRAINED ? "drain" : "undrain",
	                c->argv[0], old == admin ? " (no change)" : "",
	                fleet ? " (fleet)" : "");
	return fleet ? ctl_fleet_push(c, i, FLEET_PUSH_ADMIN) : 0;
}

/* llmfctl cooldown NAME SECONDS */
static int
cmd_cooldown(struct ctl *c)
{
	long long s = 0;
	int i;

	if (c->argc == 2 && ctl_num(c->argv[1], 0, CTL_MAX_COOL_S, &s) == -1)
		return ctl_err("seconds must be an integer from 0 to %d",
		               CTL_MAX_COOL_S);
	if ((i = ctl_open_slot(c, 2)) < 0)
		return ctl_slot_rc(i);
	atomic_store(&c->shm.slots[i].cooldown_until_ms,
	             clock_ms() + (int64_t)s * 1000);
	ctl_admin_event(c, i, "cooldown %s %llds", c->argv[0], s);
	return 0;
}

/* llmfctl reset NAME: clear cooldown, failure window and circuit. */
static int
cmd_reset(struct ctl *c)
{
	struct slot_sh *sl;
	int i;

	if ((i = ctl_open_slot(c, 1)) < 0)
		return ctl_slot_rc(i);
	sl = &c->shm.slots[i];
	atomic_store(&sl->cooldown_until_ms, 0);
	atomic_store(&sl->consec_fail, 0);
	atomic_store(&sl->fail_win_count, 0);
	atomic_store(&sl->circuit_until_ms, 0);
	atomic_store(&sl->circuit_window_ms, 0);
	atomic_store(&sl->circuit, CIRCUIT_CLOSED);
	ctl_admin_event(c, i, "reset %s (cooldown, failures, circuit)",
	                c->argv[0]);
	return 0;
}

/*
 * What /proc says about pid: 1 if it is an exited (zombie) process or runs
 * something other than llmfd (name in comm), else 0. Without /proc, 0.
 */
static int
ctl_not_llmfd(pid_t pid, char *comm, size_t commsz)
{
	char path[64], stat[512], *l, *r;
	FILE *f;

	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	if ((f = fopen(path, "r")) == NULL)
		return 0;
	if (fgets(stat, sizeof stat, f) == NULL)
		stat[0] = '\0';
	fclose(f);
	if ((l = strchr(stat, '(')) == NULL ||
	    (r = strrchr(stat, ')')) == NULL || r < l)
		return 0;
	*r = '\0';
	status_printable(comm, commsz, l + 1, 32);
	if (r[1] == ' ' && (r[2] == 'Z' || r[2] == 'X'))
		return snprintf(comm, commsz, "an exited process"), 1;
	return strncmp(comm, "llmfd", 5) != 0;
}

/* llmfctl reload: SIGHUP the master named in the table. */
static int
cmd_reload(struct ctl *c)
{
	char comm[64] = "";
	pid_t pid;

	if (c->argc != 0)
		return ctl_usage(stderr);
	if (ctl_open(c, 0) == -1)
		return 1;
	pid = atomic_load(&c->shm.hdr->master_pid);
	if (pid <= 0)
		return ctl_err("%s names no llmfd master pid", c->path);
	if (kill(pid, 0) == -1 && errno == ESRCH)
		return ctl_err("llmfd master pid %d is not running", (int)pid);
	if (ctl_not_llmfd(pid, comm, sizeof comm))
		return ctl_err("pid %d is %s, not the llmfd master; is the "
		               "daemon running?",
		               (int)pid, comm);
	if (kill(pid, SIGHUP) == -1)
		return ctl_err("kill(%d, SIGHUP) failed: %s", (int)pid,
		               strerror(errno));
	printf("sent SIGHUP to llmfd master pid %d\n", (int)pid);
	if (c->config_bad)
		return ctl_err("%s: llmfd will log why and keep its running "
		               "configuration",
		               c->config_bad);
	return 0;
}

/* llmfctl check [-c] [FILE]: validate a config without the daemon. */
static int
cmd_check(struct ctl *c)
{
	const char *file = c->config ? c->config : CTL_CONFIG;
	char *cause = NULL;

	if (c->argc == 2 && strcmp(c->argv[0], "-c") == 0)
		file = c->argv[1];
	else if (c->argc == 1 && c->argv[0][0] != '-')
		file = c->argv[0];
	else if (c->argc != 0)
		return ctl_usage(stderr);
	if (ctl_config_load(file, NULL, 0, &cause) == -1) {
		ctl_err("%s", cause ? cause : "configuration invalid");
		free(cause);
		return 1;
	}
	printf("configuration OK\n");
	return 0;
}

/* Append one event as "TIME TYPE TEXT"; 0, or -1 if it is not ready. */
static int
ctl_event(struct ctl *c, uint64_t pos, struct buf *b)
{
	const struct event_sh *e = &c->shm.events[pos % SHM_NEVENTS];
	char text[sizeof e->text + 1], ts[32], out[512];
	struct tm tm;
	int64_t wall;
	int type;
	time_t t;

	if (atomic_load_explicit(&e->seq, memory_order_acquire) != pos + 1)
		return -1;
	wall = e->wall_ms;
	type = e->type;
	memcpy(text, e->text, sizeof e->text);
	text[sizeof text - 1] = '\0';
	atomic_thread_fence(memory_order_acquire);
	if (atomic_load_explicit(&e->seq, memory_order_relaxed) != pos + 1)
		return -1;
	t = (time_t)(wall / 1000);
	gmtime_r(&t, &tm);
	strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
	status_printable(out, sizeof out, text, SIZE_MAX);
	buf_printf(b, "%s.%03dZ %-17s %s\n", ts, (int)(wall % 1000),
	           shm_event_name(type), out);
	return 0;
}

/* Parse events' --follow and -n; 0, or -1 on a usage error. */
static int
ctl_events_args(struct ctl *c, int *follow, long long *n)
{
	for (int i = 0; i < c->argc; i++) {
		if (strcmp(c->argv[i], "--follow") == 0 ||
		    strcmp(c->argv[i], "-f") == 0)
			*follow = 1;
		else if (strcmp(c->argv[i], "-n") == 0 && i + 1 < c->argc) {
			if (ctl_num(c->argv[++i], 0, LLONG_MAX, n) == -1)
				return -1;
		} else
			return -1;
	}
	return 0;
}

/*
 * Print events from *pos up to the ring head. An entry still being
 * written stops the pass (the next poll retries it) unless its writer
 * has had `patience` polls; an overwritten one is skipped.
 */
static void
ctl_events_from(struct ctl *c, uint64_t *pos, struct buf *b, int *patience)
{
	uint64_t head = atomic_load(&c->shm.hdr->ev_head);

	if (head - *pos > SHM_NEVENTS)
		*pos = head - SHM_NEVENTS;
	for (; *pos < head; (*pos)++) {
		uint64_t seq =
		    atomic_load(&c->shm.events[*pos % SHM_NEVENTS].seq);

		if (ctl_event(c, *pos, b) == 0 || seq > *pos + 1)
			continue;
		if (patience == NULL || ++*patience > 5)
			continue;
		return;
	}
	if (patience)
		*patience = 0;
}

/* llmfctl events [--follow] [-n N] */
static int
cmd_events(struct ctl *c)
{
	struct buf b = {0};
	long long n = 20;
	uint64_t head, pos;
	int follow = 0, rc = 0, patience = 0;

	if (ctl_events_args(c, &follow, &n) == -1)
		return ctl_usage(stderr);
	if (ctl_open(c, 0) == -1)
		return 1;
	head = atomic_load(&c->shm.hdr->ev_head);
	pos = head > (uint64_t)n ? head - (uint64_t)n : 0;
	ctl_events_from(c, &pos, &b, NULL);
	rc = ctl_flush(&b);
	if (follow)
		ctl_signals();
	while (follow && rc == 0 && !ctl_stop) {
		struct timespec ts = {0, 200 * 1000000L};

		nanosleep(&ts, NULL);
		ctl_events_from(c, &pos, &b, &patience);
		rc = ctl_flush(&b);
	}
	buf_free(&b);
	return rc;
}

/* llmfctl log-level LEVEL */
static int
cmd_log_level(struct ctl *c)
{
	int lvl, old;

	if (c->argc != 1)
		return ctl_usage(stderr);
	if ((lvl = log_parse_level(c->argv[0])) == -1)
		return ctl_err(
		    "unknown log level %s (error, warn, info, debug)",
		    c->argv[0]);
	if (ctl_open(c, 1) == -1)
		return 1;
	old = atomic_exchange(&c->shm.hdr->log_level, lvl);
	ctl_admin_event(c, -1, "log-level %s -> %s", log_level_name(old),
	                log_level_name(lvl));
	return 0;
}

/* Run one command. */
static int
ctl_dispatch(struct ctl *c, int cmd)
{
	switch (cmd) {
	case CMD_STATUS:
		return cmd_status(c);
	case CMD_SHOW:
		return cmd_show(c);
	case CMD_WATCH:
		return cmd_watch(c);
	case CMD_WEIGHT:
		return cmd_weight(c);
	case CMD_DRAIN:
		return cmd_admin(c, ADMIN_DRAINED);
	case CMD_UNDRAIN:
		return cmd_admin(c, ADMIN_ACTIVE);
	case CMD_COOLDOWN:
		return cmd_cooldown(c);
	case CMD_RESET:
		return cmd_reset(c);
	case CMD_RELOAD:
		return cmd_reload(c);
	case CMD_CHECK:
		return cmd_check(c);
	case CMD_EVENTS:
		return cmd_events(c);
	case CMD_LOG_LEVEL:
		return cmd_log_level(c);
	}
	return ctl_usage(stderr);
}

/* Command number for a name, or -1. */
static int
ctl_lookup(const char *name)
{
	for (int i = 0; i < CMD__MAX; i++)
		if (strcmp(name, cmd_names[i]) == 0)
			return i;
	return -1;
}

int
main(int argc, char **argv)
{
	struct ctl c;
	int ch, cmd, rc;

	memset(&c, 0, sizeof c);
	c.shm.fd = -1;
	log_init(LOG_LVL_WARN, "llmfctl");
	while ((ch = getopt(argc, argv, "+c:t:h")) != -1) {
		switch (ch) {
		case 'c':
			c.config = optarg;
			break;
		case 't':
			c.table = optarg;
			break;
		case 'h':
			ctl_usage(stdout);
			return 0;
		default:
			return ctl_usage(stderr);
		}
	}
	if (optind >= argc || (c.config && c.table))
		return ctl_usage(stderr);
	if (strcmp(argv[optind], "--help") == 0 ||
	    strcmp(argv[optind], "help") == 0)
		return ctl_usage(stdout), 0;
	if ((cmd = ctl_lookup(argv[optind])) == -1) {
		fprintf(stderr, "llmfctl: unknown command %s\n", argv[optind]);
		return ctl_usage(stderr);
	}
	c.argc = argc - optind - 1;
	c.argv = argv + optind + 1;
	rc = ctl_dispatch(&c, cmd);
	if (c.shm.hdr)
		shm_detach(&c.shm);
	free(c.config_bad);
	return rc;
}
