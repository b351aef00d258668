/* Configuration: read a libconfig file into a flat struct cfg, validating
 * every setting. Errors name the file, the line and the setting; they never
 * quote a secret. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>
#include <unistd.h>

#include <libconfig.h>
#include <openssl/crypto.h>

#include "common/buf.h"
#include "common/cfg.h"
#include "common/json.h"
#include "common/log.h"
#include "common/xmalloc.h"

#define AZURE_API_VERSION "2024-10-21"
#define PARAMS_MAX_DEPTH  32

/* State of one cfg_load call. */
struct loader {
	struct cfg *cfg;
	const char *file; /* as given, for messages */
	char dir[PATH_MAX];
	char *cause;     /* first error, heap */
	char ctx[160];   /* "router", "deployment 'x'" */
	const char *sep; /* between ctx and a setting name: "." or ": " */
};

static const char *const strategy_names[] = {
    "ordered", "weighted", "least-busy", "latency", "usage", NULL};
static const char *const provider_names[] = {"openai", "azure", "anthropic",
                                             "gemini", NULL};
static const char *const log_level_names[] = {"error", "warn", "info", "debug",
                                              NULL};
static const char *const log_format_names[] = {"text", "json", NULL};
static const char *const resume_names[] = {"off", "continue", NULL};
static const char *const hedge_names[] = {"off", "p95", NULL};

_Static_assert(sizeof(((struct cfg *)0)->listen) <=
                   sizeof(((struct sockaddr_un *)0)->sun_path),
               "listen must fit a Unix socket address");

#define FIELD(st, m) .off = offsetof(st, m), .size = sizeof(((st *)0)->m)
#define IN_CFG(m)    FIELD(struct cfg, m)
#define IN_DEPLOY(m) FIELD(struct deploy_cfg, m)
#define IN_GROUP(m)  FIELD(struct group_cfg, m)
#define OVERRIDE(m)                                                            \
	.dep_off = offsetof(struct deploy_cfg, m),                             \
	.dep_size = sizeof(((struct deploy_cfg *)0)->m)
/* clang-format off */
#define OTHER(name, sec) {name, sec, .type = CFG_OTHER}
/* clang-format on */

/* The scalar settings; see cfg.h. docs/llmfd.conf.5 is checked against it
 * by tests/unit/test_cfg_doc.c, which also regenerates it. */
const struct cfg_setting cfg_settings[] = {
    {"workers", CFG_SEC_DAEMON, CFG_INT, .min = 1, .max = 16, IN_CFG(workers),
     .def = "2", .doc = "Worker processes serving requests."},
    {"listen", CFG_SEC_DAEMON, CFG_PATH, IN_CFG(listen),
     .def = "/run/llmfd/llmfd.sock",
     .doc = "Path of the Unix socket clients connect to, at most 107 bytes.\n"
            "A stale socket file is replaced; a live one or a non-socket "
            "file is an error.\nIgnored under socket activation."},
    {"listen_mode", CFG_SEC_DAEMON, CFG_MODE, .min = 0, .max = 0777,
     IN_CFG(listen_mode), .def = "0660",
     .doc = "Mode of the socket file, an octal string or an integer."},
    {"tcp", CFG_SEC_DAEMON, CFG_STRING, IN_CFG(tcp), .def = "",
     .doc = "Optional loopback TCP listener,\n.Qq host:port\nwith a host "
            "in 127.0.0.0/8,\n.Qq localhost\nor\n.Qq [::1] ;\nempty: "
            "off.\nIgnored under socket activation."},
    {"health_table", CFG_SEC_DAEMON, CFG_PATH, IN_CFG(health_table),
     .def = "/run/llmfd/health",
     .doc = "The shared-memory health table file (mode 0640) that workers "
            "update and\n.Xr llmfctl 8\nreads and writes."},
    {"log_level", CFG_SEC_DAEMON, CFG_ENUM, IN_CFG(log_level), .def = "info",
     .names = log_level_names, .parse = log_parse_level,
     .doc = "It can be changed live with\n.Nm llmfctl Ic log-level ."},
    {"log_format", CFG_SEC_DAEMON, CFG_ENUM, IN_CFG(log_format), .def = "text",
     .names = log_format_names,
     .doc = "Format of the log lines on standard error."},
    {"access_log", CFG_SEC_DAEMON, CFG_STRING, IN_CFG(access_log), .def = "",
     .doc = "File for one line per client request; empty means standard "
            "error,\n.Qq off\nnone."},
    {"drain_timeout_ms", CFG_SEC_DAEMON, CFG_INT, .min = 0, .max = INT_MAX,
     IN_CFG(drain_timeout_ms), .def = "30000",
     .doc = "On stop and on reload, how long workers may take to finish the "
            "requests in flight before they are made to exit."},
    {"user", CFG_SEC_DAEMON, CFG_STRING, IN_CFG(user), .def = "",
     .doc = "When started as root, workers drop privileges to this user; "
            "the master keeps root to bind and to create the table.\n"
            "Empty: stay as started."},
    {"group", CFG_SEC_DAEMON, CFG_STRING, IN_CFG(group), .def = "",
     .doc = "Group the workers drop privileges to; empty: the user's primary "
            "group."},
    {"on_event_exec", CFG_SEC_DAEMON, CFG_PATH, IN_CFG(on_event_exec),
     .def = "",
     .doc = "Program run on health events (cooldown, circuit open and close, "
            "drain); empty: none."},
    {"on_event_webhook", CFG_SEC_DAEMON, CFG_STRING, IN_CFG(on_event_webhook),
     .def = "",
     .doc = "http:// or https:// URL that receives each health event as a "
            "JSON POST; empty: none."},

    {"strategy", CFG_SEC_ROUTER, CFG_ENUM, IN_CFG(strategy), .def = "ordered",
     .names = strategy_names, .parse = cfg_strategy_parse,
     .doc = "How the deployments of a group are ordered for a request: in "
            "configuration order, at random by\n.Ic weight ,\nfewest in "
            "flight first, fastest first (within\n.Ic latency_buffer ) ,\n"
            "or lowest share of their rpm/tpm limits first."},
    {"num_retries", CFG_SEC_ROUTER, CFG_INT, .min = 0, .max = 10,
     IN_CFG(num_retries), OVERRIDE(num_retries), .def = "2",
     .doc = "Retries of one deployment on transient errors."},
    {"backoff_base_ms", CFG_SEC_ROUTER, CFG_INT, .min = 0, .max = INT_MAX,
     IN_CFG(backoff_base_ms), OVERRIDE(backoff_base_ms), .def = "250",
     .doc = "Retry n waits uniform(0, min(backoff_max_ms, "
            "backoff_base_ms\\(mu2^n)) ms, or the upstream's\n"
            ".Ql retry-after .\nAt most backoff_max_ms."},
    {"backoff_max_ms", CFG_SEC_ROUTER, CFG_INT, .min = 0, .max = INT_MAX,
     IN_CFG(backoff_max_ms), .def = "8000", .doc = "Longest backoff wait."},
    {"timeout_ms", CFG_SEC_ROUTER, CFG_INT, .min = 1, .max = INT_MAX,
     IN_CFG(timeout_ms), .def = "60000",
     .doc = "Deadline of a whole request, retries and fallbacks included."},
    {"attempt_timeout_ms", CFG_SEC_ROUTER, CFG_INT, .min = 1, .max = INT_MAX,
     IN_CFG(attempt_timeout_ms), OVERRIDE(attempt_timeout_ms), .def = "30000",
     .doc = "Deadline of one upstream attempt."},
    {"first_token_timeout_ms", CFG_SEC_ROUTER, CFG_INT, .min = 1,
     .max = INT_MAX, IN_CFG(first_token_timeout_ms),
     OVERRIDE(first_token_timeout_ms), .def = "10000",
     .doc = "Wait for the first content chunk of a stream."},
    {"stream_idle_timeout_ms", CFG_SEC_ROUTER, CFG_INT, .min = 1,
     .max = INT_MAX, IN_CFG(stream_idle_timeout_ms),
     OVERRIDE(stream_idle_timeout_ms), .def = "30000",
     .doc = "Longest gap between chunks of a stream after the first."},
    {"allowed_fails", CFG_SEC_ROUTER, CFG_INT, .min = 0, .max = INT_MAX,
     IN_CFG(allowed_fails), .def = "3",
     .doc = "Failures within a minute that cool a deployment down."},
    {"cooldown_s", CFG_SEC_ROUTER, CFG_INT, .min = 0, .max = INT_MAX,
     IN_CFG(cooldown_s), .def = "30",
     .doc = "How long a cooled-down deployment is skipped."},
    {"circuit_failure_threshold", CFG_SEC_ROUTER, CFG_INT, .min = 1,
     .max = INT_MAX, IN_CFG(circuit_failure_threshold), .def = "5",
     .doc = "Consecutive failures that open a deployment's circuit."},
    {"circuit_recovery_s", CFG_SEC_ROUTER, CFG_INT, .min = 1, .max = INT_MAX,
     IN_CFG(circuit_recovery_s), .def = "30",
     .doc = "An open circuit lets one probe through after this wait; each "
            "failed probe doubles it.\nAt most circuit_max_s."},
    {"circuit_max_s", CFG_SEC_ROUTER, CFG_INT, .min = 1, .max = INT_MAX,
     IN_CFG(circuit_max_s), .def = "600",
     .doc = "Longest wait for a probe of an open circuit."},
    {"latency_buffer", CFG_SEC_ROUTER, CFG_DOUBLE, .min = 0, .max = 10,
     IN_CFG(latency_buffer), .def = "0.1",
     .doc = "For\n.Cm latency :\ndeployments within this fraction of the "
            "fastest count as equally fast."},
    {"queue_when_cooling", CFG_SEC_ROUTER, CFG_BOOL, IN_CFG(queue_when_cooling),
     .def = "true",
     .doc = "When every candidate is cooling down, wait for the first to "
            "come back (within the deadline) instead of failing at once."},
    {"retry_budget_ratio", CFG_SEC_ROUTER, CFG_DOUBLE, .min = 0, .max = 1,
     IN_CFG(retry_budget_ratio), .def = "0.2",
     .doc = "Retries may add at most this fraction of the requests of the "
            "last minute."},
    {"retry_budget_floor", CFG_SEC_ROUTER, CFG_INT, .min = 0, .max = INT_MAX,
     IN_CFG(retry_budget_floor), .def = "10",
     .doc = "Retries per minute allowed whatever retry_budget_ratio says."},
    {"max_ttft_p95_ms", CFG_SEC_ROUTER, CFG_INT, .min = 0, .max = INT_MAX,
     IN_CFG(max_ttft_p95_ms), OVERRIDE(max_ttft_p95_ms), .def = "0",
     .doc = "A deployment whose time-to-first-token p95 exceeds this is "
            "degraded: healthy ones are picked first.\n0 turns it off."},

    OTHER("name", CFG_SEC_DEPLOY),
    OTHER("group", CFG_SEC_DEPLOY),
    {"provider", CFG_SEC_DEPLOY, CFG_ENUM, IN_DEPLOY(provider), .def = "openai",
     .names = provider_names, .parse = cfg_provider_parse,
     .doc = "The upstream's API;\n.Cm openai-compatible , ollama\nand\n"
            ".Cm vllm\nmean\n.Cm openai ."},
    OTHER("model", CFG_SEC_DEPLOY),
    OTHER("azure_deployment", CFG_SEC_DEPLOY),
    OTHER("api_version", CFG_SEC_DEPLOY),
    OTHER("base_url", CFG_SEC_DEPLOY),
    OTHER("api_key", CFG_SEC_DEPLOY),
    OTHER("ca_file", CFG_SEC_DEPLOY),
    {"weight", CFG_SEC_DEPLOY, CFG_INT, .min = 0, .max = 1000000,
     IN_DEPLOY(weight), .def = "1",
     .doc = "Share of traffic under\n.Cm weighted ;\n0 takes none.\n"
            ".Nm llmfctl Ic weight\noverrides it live."},
    {"rpm", CFG_SEC_DEPLOY, CFG_LONG, .min = 0, .max = LONG_MAX, IN_DEPLOY(rpm),
     .def = "0",
     .doc = "Requests per minute the deployment may take; 0: unlimited."},
    {"tpm", CFG_SEC_DEPLOY, CFG_LONG, .min = 0, .max = LONG_MAX, IN_DEPLOY(tpm),
     .def = "0",
     .doc = "Tokens per minute the deployment may take; 0: unlimited."},
    {"responses_api", CFG_SEC_DEPLOY, CFG_BOOL, IN_DEPLOY(responses_api),
     .def = "false",
     .doc = "The upstream serves the OpenAI Responses API, so Responses\n"
            "clients are passed through to it unchanged (always on for\n"
            ".Lk https://api.openai.com )."},
    {"context_window", CFG_SEC_DEPLOY, CFG_LONG, .min = 0, .max = LONG_MAX,
     IN_DEPLOY(context_window), .def = "0",
     .doc = "Tokens, for\n.Ic context_window_fallbacks ;\n0: unknown."},
    {"max_tokens", CFG_SEC_DEPLOY, CFG_LONG, .min = 0, .max = LONG_MAX,
     IN_DEPLOY(max_tokens), .def = "0",
     .doc = "Default max_tokens for providers that require one (anthropic)."},
    OTHER("system_prompt_append", CFG_SEC_DEPLOY),
    OTHER("headers", CFG_SEC_DEPLOY),
    OTHER("params", CFG_SEC_DEPLOY),

    OTHER("name", CFG_SEC_GROUP),
    {"strategy", CFG_SEC_GROUP, CFG_ENUM, IN_GROUP(strategy), .def = NULL,
     .names = strategy_names, .parse = cfg_strategy_parse,
     .doc = "As in the router."},
    {"stream_resume", CFG_SEC_GROUP, CFG_ENUM, IN_GROUP(stream_resume),
     .def = "off", .names = resume_names,
     .doc = ".Cm continue\nresumes a stream cut after its first bytes on "
            "another deployment."},
    {"hedge_after_ms", CFG_SEC_GROUP, CFG_INT, .min = 0, .max = INT_MAX,
     IN_GROUP(hedge_after_ms), .def = "0",
     .doc = "Start a second attempt on the next deployment after this many "
            "ms without an answer; 0: off."},
    {"hedge", CFG_SEC_GROUP, CFG_ENUM, IN_GROUP(hedge_p95), .def = "off",
     .names = hedge_names,
     .doc = ".Cm p95\nhedges after the group's observed p95 instead; not "
            "with\n.Ic hedge_after_ms ."},
    {.name = NULL},
};

/* Name of a routing strategy. */
const char *
cfg_strategy_name(int s)
{
	return (s >= 0 && s < STRAT__MAX) ? strategy_names[s] : "?";
}

/* Strategy for a name, or -1. */
int
cfg_strategy_parse(const char *s)
{
	for (int i = 0; i < STRAT__MAX; i++)
		if (strcmp(s, strategy_names[i]) == 0)
			return i;
	return -1;
}

/* Name of a provider kind. */
const char *
cfg_provider_name(int p)
{
	return (p >= 0 && p < PROV__MAX) ? provider_names[p] : "?";
}

/* Provider kind for a name or an OpenAI-compatible alias, or -1. */
int
cfg_provider_parse(const char *s)
{
	static const char *const aliases[] = {"openai-compatible", "ollama",
	                                      "vllm"};

	for (int i = 0; i < PROV__MAX; i++)
		if (strcmp(s, provider_names[i]) == 0)
			return i;
	for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
		if (strcmp(s, aliases[i]) == 0)
			return PROV_OPENAI;
	return -1;
}

static int ld_error(struct loader *, const config_setting_t *, const char *,
                    ...) __attribute__((format(printf, 3, 4)));
static int set_error(struct loader *, const config_setting_t *, const char *,
                     ...) __attribute__((format(printf, 3, 4)));

/* Record the first error as "FILE:LINE: reason" at setting s (or at no line
 * when s is NULL); always returns -1. */
static int
ld_error(struct loader *ld, const config_setting_t *s, const char *fmt, ...)
{
	char msg[512];
	const char *file = NULL;
	int line = 0;
	va_list ap;

	if (ld->cause != NULL)
		return -1;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (s != NULL) {
		line = config_setting_source_line(s);
		file = config_setting_source_file(s);
	}
	if (file == NULL)
		file = ld->file;
	if (line > 0)
		xasprintf(&ld->cause, "%s:%d: %s", file, line, msg);
	else
		xasprintf(&ld->cause, "%s: %s", file, msg);
	return -1;
}

/* ld_error prefixed with the current context and the setting's name. */
static int
set_error(struct loader *ld, const config_setting_t *s, const char *fmt, ...)
{
	char msg[400];
	const char *name = config_setting_name(s);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	return ld_error(ld, s, "%s%s%s: %s", ld->ctx, ld->sep,
	                name ? name : "?", msg);
}

/* Set the context that prefixes setting names in messages. */
static void ld_context(struct loader *ld, const char *sep, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void
ld_context(struct loader *ld, const char *sep, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(ld->ctx, sizeof ld->ctx, fmt, ap);
	va_end(ap);
	ld->sep = sep;
}

/* Whether s is a valid environment variable name. */
static int
valid_var(const char *s)
{
	if (!isalpha((unsigned char)*s) && *s != '_')
		return 0;
	for (; *s != '\0'; s++)
		if (!isalnum((unsigned char)*s) && *s != '_')
			return 0;
	return 1;
}

/* Expand a "$VAR" value from the environment ("$$x" is a literal "$x");
 * other values pass through. Names what as the setting in messages. */
static int
expand(struct loader *ld, const config_setting_t *s, const char *what,
       const char *v, const char **out)
{
	const char *e;

	*out = v;
	if (v[0] != '$')
		return 0;
	if (v[1] == '$') {
		*out = v + 1;
		return 0;
	}
	if (!valid_var(v + 1))
		return 0;
	e = getenv(v + 1);
	if (e == NULL || *e == '\0')
		return ld_error(ld, s, "%s%s%s variable %s is not set", ld->ctx,
		                ld->sep, what, v + 1);
	*out = e;
	return 0;
}

/* Whether setting e belongs to section sec; *ov tells that it does as a
 * router setting a deployment overrides. */
static int
in_section(const struct cfg_setting *e, int sec, int *ov)
{
	*ov = sec == CFG_SEC_DEPLOY && e->section == CFG_SEC_ROUTER &&
	      e->dep_size != 0;
	return (int)e->section == sec || *ov;
}

/* Whether name is a setting of section sec (keys NULL) or one of keys. */
static int
is_known(int sec, const char *const *keys, const char *name)
{
	int ov;

	if (keys != NULL) {
		for (int k = 0; keys[k] != NULL; k++)
			if (strcmp(name, keys[k]) == 0)
				return 1;
		return 0;
	}
	for (const struct cfg_setting *e = cfg_settings; e->name != NULL; e++)
		if (in_section(e, sec, &ov) && strcmp(e->name, name) == 0)
			return 1;
	return 0;
}

/* Fail on any member of group g that is not a setting of section sec in
 * the table, or (keys not NULL) not listed in keys. what names the section
 * in messages; NULL for the top level. */
static int
check_known(struct loader *ld, const config_setting_t *g, int sec,
            const char *const *keys, const char *what)
{
	int n = config_setting_length(g);

	for (int i = 0; i < n; i++) {
		config_setting_t *m = config_setting_get_elem(g, (unsigned)i);
		const char *name = config_setting_name(m);

		if (is_known(sec, keys, name))
			continue;
		if (what == NULL)
			return ld_error(ld, m, "unknown section '%s'", name);
		return ld_error(ld, m, "%s: unknown setting '%s'", what, name);
	}
	return 0;
}

/* Fail on a value outside min..max. */
static int
range_error(struct loader *ld, const config_setting_t *s, long long min,
            long long max)
{
	if (max == INT_MAX || max == LONG_MAX)
		return set_error(ld, s, "must be at least %lld", min);
	return set_error(ld, s, "must be between %lld and %lld", min, max);
}

/* Read integer setting e of g, if present, into the int or long at p. */
static int
get_integer(struct loader *ld, const config_setting_t *g,
            const struct cfg_setting *e, void *p)
{
	config_setting_t *s = config_setting_get_member(g, e->name);
	long long v;

	if (s == NULL)
		return 0;
	if (config_setting_type(s) != CONFIG_TYPE_INT &&
	    config_setting_type(s) != CONFIG_TYPE_INT64)
		return set_error(ld, s, "expected an integer");
	v = config_setting_get_int64(s);
	if (v < e->min || v > e->max)
		return range_error(ld, s, e->min, e->max);
	if (e->type == CFG_LONG)
		*(long *)p = (long)v;
	else
		*(int *)p = (int)v;
	return 0;
}

/* Read number setting e (an integer or a float) of g into *out if
 * present. */
static int
get_double(struct loader *ld, const config_setting_t *g,
           const struct cfg_setting *e, double *out)
{
	config_setting_t *s = config_setting_get_member(g, e->name);
	double v, min = (double)e->min, max = (double)e->max;

	if (s == NULL)
		return 0;
	switch (config_setting_type(s)) {
	case CONFIG_TYPE_INT:
	case CONFIG_TYPE_INT64:
		v = (double)config_setting_get_int64(s);
		break;
	case CONFIG_TYPE_FLOAT:
		v = config_setting_get_float(s);
		break;
	default:
		return set_error(ld, s, "expected a number");
	}
	if (!(v >= min && v <= max))
		return set_error(ld, s, "must be between %g and %g", min, max);
	*out = v;
	return 0;
}

/* Read a boolean member into *out if present. */
static int
get_bool(struct loader *ld, const config_setting_t *g, const char *name,
         int *out)
{
	config_setting_t *s = config_setting_get_member(g, name);

	if (s == NULL)
		return 0;
	if (config_setting_type(s) != CONFIG_TYPE_BOOL)
		return set_error(ld, s, "expected true or false");
	*out = config_setting_get_bool(s) ? 1 : 0;
	return 0;
}

/* Point *out at string member name of g, "$VAR" expanded. Returns 1 if
 * present, 0 if absent, -1 on error. *sp gets the setting if not NULL. */
static int
get_str(struct loader *ld, const config_setting_t *g, const char *name,
        const char **out, config_setting_t **sp)
{
	config_setting_t *s = config_setting_get_member(g, name);

	if (sp != NULL)
		*sp = s;
	if (s == NULL)
		return 0;
	if (config_setting_type(s) != CONFIG_TYPE_STRING)
		return set_error(ld, s, "expected a string");
	if (expand(ld, s, name, config_setting_get_string(s), out) == -1)
		return -1;
	return 1;
}

/* Copy v into dst, failing if it does not fit. */
static int
copy_str(struct loader *ld, const config_setting_t *s, const char *v, char *dst,
         size_t size)
{
	if (strlen(v) >= size)
		return set_error(ld, s, "too long (at most %zu bytes)",
		                 size - 1);
	memcpy(dst, v, strlen(v) + 1);
	return 0;
}

/* Copy string member name into dst if present. Returns like get_str. */
static int
get_strbuf(struct loader *ld, const config_setting_t *g, const char *name,
           char *dst, size_t size)
{
	config_setting_t *s;
	const char *v;
	int r;

	if ((r = get_str(ld, g, name, &v, &s)) != 1)
		return r;
	return copy_str(ld, s, v, dst, size) == -1 ? -1 : 1;
}

/* Make a non-empty relative path in dst absolute against the config file's
 * directory. */
static int
resolve_path(struct loader *ld, const config_setting_t *s, char *dst,
             size_t size)
{
	char tmp[PATH_MAX * 2];

	if (dst[0] == '\0' || dst[0] == '/')
		return 0;
	snprintf(tmp, sizeof tmp, "%s/%s", ld->dir, dst);
	return copy_str(ld, s, tmp, dst, size);
}

/* Read a path member into dst if present, resolving it. */
static int
get_path(struct loader *ld, const config_setting_t *g, const char *name,
         char *dst, size_t size)
{
	int r = get_strbuf(ld, g, name, dst, size);

	if (r != 1)
		return r;
	if (resolve_path(ld, config_setting_get_member(g, name), dst, size) ==
	    -1)
		return -1;
	return 1;
}

/* Value of enumerated setting e for name v, or -1. */
static int
enum_parse(const struct cfg_setting *e, const char *v)
{
	if (e->parse != NULL)
		return e->parse(v);
	for (int i = 0; e->names[i] != NULL; i++)
		if (strcmp(v, e->names[i]) == 0)
			return i;
	return -1;
}

/* The names of enumerated setting e as "a, b or c" into out. */
static void
enum_choices(const struct cfg_setting *e, char *out, size_t size)
{
	size_t n = 0;

	out[0] = '\0';
	for (int i = 0; e->names[i] != NULL && n < size; i++)
		n += (size_t)snprintf(out + n, size - n, "%s%s",
		                      i == 0                    ? ""
		                      : e->names[i + 1] == NULL ? " or "
		                                                : ", ",
		                      e->names[i]);
}

/* Read enumerated setting e of g, if present, into *out. */
static int
get_enum(struct loader *ld, const config_setting_t *g,
         const struct cfg_setting *e, int *out)
{
	config_setting_t *s;
	const char *v;
	char choices[160];
	int r;

	if ((r = get_str(ld, g, e->name, &v, &s)) != 1)
		return r;
	if ((r = enum_parse(e, v)) == -1) {
		enum_choices(e, choices, sizeof choices);
		return set_error(ld, s, "unknown value \"%s\" (expected %s)",
		                 config_setting_get_string(s), choices);
	}
	*out = r;
	return 0;
}

/* Read mode setting e of g, if present: an octal string ("0660") or an
 * integer. */
static int
get_mode(struct loader *ld, const config_setting_t *g,
         const struct cfg_setting *e, int *out)
{
	config_setting_t *s = config_setting_get_member(g, e->name);
	const char *v;
	char *end;
	long m;

	if (s == NULL)
		return 0;
	if (config_setting_type(s) == CONFIG_TYPE_INT) {
		m = config_setting_get_int(s);
	} else if (config_setting_type(s) == CONFIG_TYPE_STRING) {
		v = config_setting_get_string(s);
		m = strtol(v, &end, 8);
		if (*v == '\0' || *end != '\0' ||
		    strspn(v, "01234567") != strlen(v))
			return set_error(ld, s,
			                 "expected an octal mode like "
			                 "\"0660\"");
	} else
		return set_error(ld, s, "expected an octal mode like \"0660\"");
	if (m < e->min || m > e->max)
		return set_error(ld, s, "must be between %04llo and %04llo",
		                 e->min, e->max);
	*out = (int)m;
	return 0;
}

/* Read table setting e of g, if present, into p. */
static int
get_setting(struct loader *ld, const config_setting_t *g,
            const struct cfg_setting *e, void *p)
{
	switch (e->type) {
	case CFG_INT:
	case CFG_LONG:
		return get_integer(ld, g, e, p);
	case CFG_BOOL:
		return get_bool(ld, g, e->name, p);
	case CFG_DOUBLE:
		return get_double(ld, g, e, p);
	case CFG_STRING:
		return get_strbuf(ld, g, e->name, p, e->size) == -1 ? -1 : 0;
	case CFG_PATH:
		return get_path(ld, g, e->name, p, e->size) == -1 ? -1 : 0;
	case CFG_ENUM:
		return get_enum(ld, g, e, p);
	case CFG_MODE:
		return get_mode(ld, g, e, p);
	case CFG_OTHER:
		break;
	}
	return 0;
}

/* Read the table settings of section sec present in g into base, the
 * struct of the section. */
static int
read_section(struct loader *ld, const config_setting_t *g, int sec, void *base)
{
	int ov;

	for (const struct cfg_setting *e = cfg_settings; e->name != NULL; e++)
		if (in_section(e, sec, &ov) &&
		    get_setting(ld, g, e,
		                (char *)base + (ov ? e->dep_off : e->off)) ==
		        -1)
			return -1;
	return 0;
}

/* Store the default of table setting e at p. */
static void
set_default(const struct cfg_setting *e, void *p)
{
	if (e->type == CFG_OTHER)
		return;
	if (e->def == NULL) { /* inherited from elsewhere */
		*(int *)p = -1;
		return;
	}
	switch (e->type) {
	case CFG_INT:
		*(int *)p = (int)strtol(e->def, NULL, 10);
		break;
	case CFG_LONG:
		*(long *)p = strtol(e->def, NULL, 10);
		break;
	case CFG_BOOL:
		*(int *)p = strcmp(e->def, "true") == 0;
		break;
	case CFG_DOUBLE:
		*(double *)p = strtod(e->def, NULL);
		break;
	case CFG_STRING:
	case CFG_PATH:
		snprintf(p, e->size, "%s", e->def);
		break;
	case CFG_ENUM:
		*(int *)p = enum_parse(e, e->def);
		break;
	case CFG_MODE:
		*(int *)p = (int)strtol(e->def, NULL, 8);
		break;
	case CFG_OTHER:
		break;
	}
}

/* Set the table settings of section sec in base to their defaults; the
 * router settings a deployment overrides to -1, unset. */
static void
set_defaults(int sec, void *base)
{
	int ov;

	for (const struct cfg_setting *e = cfg_settings; e->name != NULL; e++) {
		if (!in_section(e, sec, &ov))
			continue;
		if (ov)
			*(int *)((char *)base + e->dep_off) = -1;
		else
			set_default(e, (char *)base + e->off);
	}
}

/* Fetch a section of the given type from the root, NULL if absent. */
static int
get_section(struct loader *ld, const config_setting_t *root, const char *name,
            int type, config_setting_t **out)
{
	config_setting_t *s = config_setting_get_member(root, name);

	*out = s;
	if (s == NULL)
		return 0;
	if (type == CONFIG_TYPE_LIST &&
	    config_setting_type(s) == CONFIG_TYPE_ARRAY &&
	    config_setting_length(s) == 0)
		return 0; /* "x = [ ];" reads as an empty list */
	if (config_setting_type(s) != type)
		return ld_error(ld, s, "%s: expected a %s", name,
		                type == CONFIG_TYPE_GROUP ? "group { ... }"
		                                          : "list ( ... )");
	return 0;
}

/* Parse "[::1]:port", "localhost:port" or "127.x.y.z:port" into the cfg. */
static int
parse_tcp(struct loader *ld, const config_setting_t *s)
{
	struct cfg *cfg = ld->cfg;
	char host[64];
	const char *colon, *p = cfg->tcp;
	char *end;
	long port;
	struct in_addr a4;
	struct in6_addr a6;
	size_t n;

	if (*p == '[') {
		if ((colon = strstr(p, "]:")) == NULL)
			goto bad;
		n = (size_t)(colon - p - 1);
		p++;
		colon++;
	} else {
		if ((colon = strrchr(p, ':')) == NULL)
			goto bad;
		n = (size_t)(colon - p);
	}
	if (n == 0 || n >= sizeof host)
		goto bad;
	memcpy(host, p, n);
	host[n] = '\0';
	errno = 0;
	port = strtol(colon + 1, &end, 10);
	if (!isdigit((unsigned char)colon[1]) || *end != '\0' || port < 1 ||
	    port > 65535 || errno != 0)
		return set_error(ld, s, "port must be 1..65535");
	if (strcmp(host, "localhost") == 0)
		snprintf(host, sizeof host, "127.0.0.1");
	if (inet_pton(AF_INET, host, &a4) == 1) {
		if ((ntohl(a4.s_addr) >> 24) != 127)
			goto notlo;
	} else if (inet_pton(AF_INET6, host, &a6) == 1 && p != cfg->tcp) {
		if (!IN6_IS_ADDR_LOOPBACK(&a6))
			goto notlo;
	} else
		goto notlo;
	snprintf(cfg->tcp_host, sizeof cfg->tcp_host, "%s", host);
	cfg->tcp_port = (int)port;
	return 0;
bad:
	return set_error(ld, s, "expected \"host:port\"");
notlo:
	return set_error(ld, s,
	                 "host must be a loopback address "
	                 "(127.0.0.0/8, localhost or [::1])");
}

/* Checks of the listen, tcp, access_log and on_event_webhook values, which
 * need more than a copy. */
static int
daemon_special(struct loader *ld, const config_setting_t *g)
{
	struct cfg *cfg = ld->cfg;
	char host[256], path[CFG_URL_MAX];
	config_setting_t *s;
	const char *why;
	uint16_t port;
	int tls;

	if ((s = config_setting_get_member(g, "listen")) != NULL &&
	    cfg->listen[0] == '\0')
		return set_error(ld, s, "must not be empty");
	if ((s = config_setting_get_member(g, "tcp")) != NULL &&
	    cfg->tcp[0] != '\0' && parse_tcp(ld, s) == -1)
		return -1;
	if ((s = config_setting_get_member(g, "access_log")) != NULL &&
	    strcmp(cfg->access_log, "off") != 0 &&
	    resolve_path(ld, s, cfg->access_log, sizeof cfg->access_log) == -1)
		return -1;
	if ((s = config_setting_get_member(g, "on_event_webhook")) != NULL &&
	    cfg->on_event_webhook[0] != '\0' &&
	    cfg_url_split(cfg->on_event_webhook, &tls, host, sizeof host, &port,
	                  path, sizeof path, &why) == -1)
		return set_error(ld, s, "%s", why);
	return 0;
}

/* The daemon section. */
static int
parse_daemon(struct loader *ld, const config_setting_t *g)
{
	ld_context(ld, ".", "daemon");
	if (g == NULL)
		return 0;
	if (check_known(ld, g, CFG_SEC_DAEMON, NULL, "daemon") == -1 ||
	    read_section(ld, g, CFG_SEC_DAEMON, ld->cfg) == -1)
		return -1;
	return daemon_special(ld, g);
}

/* The first of members a and b of g that is present. */
static config_setting_t *
either(const config_setting_t *g, const char *a, const char *b)
{
	config_setting_t *s = config_setting_get_member(g, a);

	return s != NULL ? s : config_setting_get_member(g, b);
}

/* Cross-checks of router settings. */
static int
router_check(struct loader *ld, const config_setting_t *g)
{
	struct cfg *cfg = ld->cfg;

	if (cfg->backoff_base_ms > cfg->backoff_max_ms)
		return set_error(
		    ld, either(g, "backoff_base_ms", "backoff_max_ms"),
		    "backoff_base_ms (%d) must not exceed backoff_max_ms (%d)",
		    cfg->backoff_base_ms, cfg->backoff_max_ms);
	if (cfg->circuit_recovery_s > cfg->circuit_max_s)
		return set_error(
		    ld, either(g, "circuit_recovery_s", "circuit_max_s"),
		    "circuit_recovery_s (%d) must not exceed circuit_max_s "
		    "(%d)",
		    cfg->circuit_recovery_s, cfg->circuit_max_s);
	return 0;
}

/* The router section. */
static int
parse_router(struct loader *ld, const config_setting_t *g)
{
	ld_context(ld, ".", "router");
	if (g == NULL)
		return 0;
	if (check_known(ld, g, CFG_SEC_ROUTER, NULL, "router") == -1 ||
	    read_section(ld, g, CFG_SEC_ROUTER, ld->cfg) == -1)
		return -1;
	return router_check(ld, g);
}

/* Whether s is a valid deployment or group name. */
static int
valid_name(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n >= CFG_NAME_MAX)
		return 0;
	return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	                 "0123456789._:-") == n;
}

/* Parse the authority part [host] or [[v6]] with optional :port. */
static int
url_authority(const char *a, size_t alen, char *host, size_t hostsz,
              uint16_t *port, const char **why)
{
	const char *h = a, *pe, *colon = NULL;
	size_t hlen;
	struct in6_addr a6;
	long p = 0;

	if (alen > 0 && *a == '[') {
		if ((pe = memchr(a, ']', alen)) == NULL)
			return (*why = "unterminated [IPv6] address", -1);
		h = a + 1;
		hlen = (size_t)(pe - h);
		if (pe + 1 < a + alen) {
			if (pe[1] != ':')
				return (*why = "bad host", -1);
			colon = pe + 1;
		}
	} else {
		colon = memchr(a, ':', alen);
		hlen = colon ? (size_t)(colon - a) : alen;
		if (colon && memchr(colon + 1, ':', alen - hlen - 1) != NULL)
			return (*why = "IPv6 address must be in [brackets]",
			        -1);
		if (strspn(a, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstu"
		              "vwxyz0123456789.-_") < hlen)
			return (*why = "bad host", -1);
	}
	if (hlen == 0 || hlen >= hostsz)
		return (*why = "missing or overlong host", -1);
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	if (h != a && inet_pton(AF_INET6, host, &a6) != 1)
		return (*why = "bad IPv6 address", -1);
	if (colon != NULL) {
		const char *d = colon + 1, *end = a + alen;

		if (d == end)
			return (*why = "empty port", -1);
		for (; d < end; d++) {
			if (!isdigit((unsigned char)*d) ||
			    (p = p * 10 + (*d - '0')) > 65535)
				return (*why = "port must be 1..65535", -1);
		}
		if (p == 0)
			return (*why = "port must be 1..65535", -1);
		*port = (uint16_t)p;
	}
	return 0;
}

/* Split an http:// or https:// URL; see cfg.h. */
int
cfg_url_split(const char *url, int *tls, char *host, size_t hostsz,
              uint16_t *port, char *path, size_t pathsz, const char **why)
{
	const char *a, *slash;
	size_t alen, plen;

	for (const char *c = url; *c != '\0'; c++)
		if ((unsigned char)*c <= 0x20 || *c == 0x7f)
			return (*why = "URL contains spaces or control "
			               "characters",
			        -1);
	if (strncasecmp(url, "https://", 8) == 0) {
		*tls = 1;
		a = url + 8;
	} else if (strncasecmp(url, "http://", 7) == 0) {
		*tls = 0;
		a = url + 7;
	} else
		return (*why = "URL must start with http:// or https://", -1);
	if (strpbrk(a, "?#") != NULL)
		return (*why = "URL must not have a query or fragment", -1);
	slash = strchr(a, '/');
	alen = slash ? (size_t)(slash - a) : strlen(a);
	if (memchr(a, '@', alen) != NULL)
		return (*why = "credentials in the URL are not supported", -1);
	*port = *tls ? 443 : 80;
	if (url_authority(a, alen, host, hostsz, port, why) == -1)
		return -1;
	plen = slash ? strlen(slash) : 0;
	while (plen > 0 && slash[plen - 1] == '/')
		plen--;
	if (plen >= pathsz)
		return (*why = "URL path too long", -1);
	if (plen > 0)
		memcpy(path, slash, plen);
	path[plen] = '\0';
	return 0;
}

/* Deployment name and group. */
static int
deploy_names(struct loader *ld, const config_setting_t *s, int idx,
             struct deploy_cfg *d)
{
	config_setting_t *m;
	int r;

	ld_context(ld, ".", "deployments[%d]", idx);
	if ((r = get_strbuf(ld, s, "name", d->name, sizeof d->name)) == -1)
		return -1;
	if (r == 0)
		return ld_error(ld, s, "deployments[%d]: name is required",
		                idx);
	m = config_setting_get_member(s, "name");
	if (!valid_name(d->name))
		return ld_error(ld, m,
		                "deployments[%d]: invalid name (use "
		                "A-Z a-z 0-9 . _ : -, at most %d)",
		                idx, CFG_NAME_MAX - 1);
	for (int i = 0; i < idx; i++)
		if (strcmp(ld->cfg->deploy[i].name, d->name) == 0)
			return ld_error(ld, m,
			                "deployment '%s': duplicate "
			                "name (first at line %d)",
			                d->name, ld->cfg->deploy[i].line);
	ld_context(ld, ": ", "deployment '%s'", d->name);
	if ((r = get_strbuf(ld, s, "group", d->group, sizeof d->group)) == -1)
		return -1;
	if (r == 0)
		memcpy(d->group, d->name, sizeof d->group);
	else if (!valid_name(d->group))
		return set_error(
		    ld, config_setting_get_member(s, "group"),
		    "invalid group name (use A-Z a-z 0-9 . _ : -)");
	return 0;
}

/* Default base URL for a provider, NULL if none. */
static const char *
default_base_url(int provider)
{
	switch (provider) {
	case PROV_OPENAI:
		return "https://api.openai.com/v1";
	case PROV_ANTHROPIC:
		return "https://api.anthropic.com";
	case PROV_GEMINI:
		return "https://generativelanguage.googleapis.com";
	default:
		return NULL;
	}
}

/* Deployment base_url, split up. */
static int
deploy_url(struct loader *ld, const config_setting_t *s, struct deploy_cfg *d)
{
	config_setting_t *m;
	const char *why, *def;
	int r;

	r = get_strbuf(ld, s, "base_url", d->base_url, sizeof d->base_url);
	if (r == -1)
		return -1;
	m = config_setting_get_member(s, "base_url");
	if (r == 0) {
		if ((def = default_base_url(d->provider)) == NULL)
			return ld_error(ld, s,
			                "deployment '%s': base_url is "
			                "required for provider %s",
			                d->name,
			                cfg_provider_name(d->provider));
		snprintf(d->base_url, sizeof d->base_url, "%s", def);
	}
	if (cfg_url_split(d->base_url, &d->tls, d->host, sizeof d->host,
	                  &d->port, d->path, sizeof d->path, &why) == -1)
		return set_error(ld, m, "%s", why);
	return 0;
}

/* Deployment model, azure_deployment, base_url, api_version (the provider
 * is read). */
static int
deploy_provider(struct loader *ld, const config_setting_t *s,
                struct deploy_cfg *d)
{
	int r;

	if ((r = get_strbuf(ld, s, "model", d->model, sizeof d->model)) == -1)
		return -1;
	if (r == 0 || d->model[0] == '\0') {
		if (d->provider != PROV_AZURE)
			return ld_error(ld, s,
			                "deployment '%s': model is "
			                "required",
			                d->name);
		snprintf(d->model, sizeof d->model, "%s", d->name);
	}
	r = get_strbuf(ld, s, "azure_deployment", d->azure_deployment,
	               sizeof d->azure_deployment);
	if (r == -1)
		return -1;
	if (r == 0 || d->azure_deployment[0] == '\0')
		snprintf(d->azure_deployment, sizeof d->azure_deployment, "%s",
		         d->model);
	if (deploy_url(ld, s, d) == -1)
		return -1;
	r = get_strbuf(ld, s, "api_version", d->api_version,
	               sizeof d->api_version);
	if (r == -1)
		return -1;
	if (d->provider == PROV_AZURE && d->api_version[0] == '\0')
		snprintf(d->api_version, sizeof d->api_version, "%s",
		         AZURE_API_VERSION);
	return 0;
}

/* Deployment api_key: a literal or "$VAR"; the value never reaches a
 * message. */
static int
deploy_key(struct loader *ld, const config_setting_t *s, struct deploy_cfg *d)
{
	config_setting_t *m = config_setting_get_member(s, "api_key");
	const char *v, *raw;

	if (m == NULL)
		return 0;
	if (config_setting_type(m) != CONFIG_TYPE_STRING)
		return set_error(ld, m, "expected a string");
	raw = config_setting_get_string(m);
	if (raw[0] == '$' && raw[1] != '$') {
		if (!valid_var(raw + 1))
			return set_error(ld, m, "invalid variable name");
		if (strlen(raw + 1) >= sizeof d->api_key_var)
			return set_error(ld, m, "variable name too long");
		snprintf(d->api_key_var, sizeof d->api_key_var, "%s", raw + 1);
	}
	if (expand(ld, m, "api_key", raw, &v) == -1)
		return -1;
	if (strlen(v) >= sizeof d->api_key)
		return set_error(ld, m, "value too long (at most %zu bytes)",
		                 sizeof d->api_key - 1);
	if (strpbrk(v, "\r\n") != NULL)
		return set_error(ld, m, "value contains a line break");
	memcpy(d->api_key, v, strlen(v) + 1);
	return 0;
}

/* A deployment's backoff_base_ms must not exceed the router's
 * backoff_max_ms. */
static int
deploy_check(struct loader *ld, const config_setting_t *s,
             const struct deploy_cfg *d)
{
	if (d->backoff_base_ms > ld->cfg->backoff_max_ms)
		return set_error(
		    ld, config_setting_get_member(s, "backoff_base_ms"),
		    "must not exceed router.backoff_max_ms (%d)",
		    ld->cfg->backoff_max_ms);
	return 0;
}

/* Deployment ca_file and system_prompt_append. */
static int
deploy_files(struct loader *ld, const config_setting_t *s, struct deploy_cfg *d)
{
	config_setting_t *m;
	const char *v;
	int r;

	if ((r = get_path(ld, s, "ca_file", d->ca_file, sizeof d->ca_file)) ==
	    -1)
		return -1;
	if (r == 1 && d->ca_file[0] != '\0' && access(d->ca_file, R_OK) == -1)
		return set_error(ld, config_setting_get_member(s, "ca_file"),
		                 "cannot read %s: %s", d->ca_file,
		                 strerror(errno));
	if ((r = get_str(ld, s, "system_prompt_append", &v, &m)) == -1)
		return -1;
	if (r == 1 && *v != '\0')
		d->system_prompt_append = xstrdup(v);
	return 0;
}

/* Whether s is an HTTP token (a header name). */
static int
valid_token(const char *s, size_t n)
{
	if (n == 0)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) &&
		    strchr("!#$%&'*+-.^_`|~", s[i]) == NULL)
			return 0;
	return 1;
}

/* Add header name: value to d; m is the setting, for messages. */
static int
add_header(struct loader *ld, const config_setting_t *m, int idx,
           struct deploy_cfg *d, const char *name, size_t nlen,
           const char *value)
{
	static const char *const managed[] = {
	    "host", "content-length", "transfer-encoding", "connection", NULL};
	struct cfg_header *h;
	size_t vlen;

	if (d->nheaders == CFG_MAX_HDRS)
		return ld_error(ld, m, "%s: too many headers (at most %d)",
		                ld->ctx, CFG_MAX_HDRS);
	if (!valid_token(name, nlen) || nlen >= sizeof h->name)
		return ld_error(ld, m, "%s: headers[%d]: invalid header name",
		                ld->ctx, idx);
	for (int i = 0; managed[i] != NULL; i++)
		if (strlen(managed[i]) == nlen &&
		    strncasecmp(name, managed[i], nlen) == 0)
			return ld_error(ld, m,
			                "%s: headers[%d]: %s is set by "
			                "llmfd",
			                ld->ctx, idx, managed[i]);
	while (*value == ' ' || *value == '\t')
		value++;
	if (expand(ld, m, "headers", value, &value) == -1)
		return -1;
	vlen = strlen(value);
	while (vlen > 0 && (value[vlen - 1] == ' ' || value[vlen - 1] == '\t'))
		vlen--;
	for (size_t i = 0; i < vlen; i++)
		if (((unsigned char)value[i] < 0x20 && value[i] != '\t') ||
		    value[i] == 0x7f)
			return ld_error(ld, m,
			                "%s: headers[%d]: value contains "
			                "a line break or control character",
			                ld->ctx, idx);
	h = &d->headers[d->nheaders];
	if (vlen >= sizeof h->value)
		return ld_error(ld, m, "%s: headers[%d]: value too long",
		                ld->ctx, idx);
	memcpy(h->name, name, nlen);
	h->name[nlen] = '\0';
	memcpy(h->value, value, vlen);
	h->value[vlen] = '\0';
	d->nheaders++;
	return 0;
}

/* Deployment headers: a list of "Name: value" strings, or a group of
 * Name = "value" settings. */
static int
deploy_headers(struct loader *ld, const config_setting_t *s,
               struct deploy_cfg *d)
{
	config_setting_t *hs = config_setting_get_member(s, "headers");
	int n, grp;

	if (hs == NULL)
		return 0;
	grp = config_setting_type(hs) == CONFIG_TYPE_GROUP;
	if (!grp && !config_setting_is_aggregate(hs))
		return set_error(ld, hs,
		                 "expected a list of \"Name: value\" "
		                 "strings");
	n = config_setting_length(hs);
	for (int i = 0; i < n; i++) {
		config_setting_t *m = config_setting_get_elem(hs, (unsigned)i);
		const char *v, *colon;

		if (config_setting_type(m) != CONFIG_TYPE_STRING)
			return ld_error(ld, m,
			                "%s: headers[%d]: expected a "
			                "string",
			                ld->ctx, i);
		v = config_setting_get_string(m);
		if (grp) {
			if (add_header(ld, m, i, d, config_setting_name(m),
			               strlen(config_setting_name(m)), v) == -1)
				return -1;
			continue;
		}
		if ((colon = strchr(v, ':')) == NULL)
			return ld_error(ld, m,
			                "%s: headers[%d]: expected "
			                "\"Name: value\"",
			                ld->ctx, i);
		if (add_header(ld, m, i, d, v, (size_t)(colon - v),
		               colon + 1) == -1)
			return -1;
	}
	return 0;
}

static int json_value(struct loader *, struct jw *, const config_setting_t *,
                      int);

/* Write the members (object) or elements (array) of aggregate s. */
static int
json_aggregate(struct loader *ld, struct jw *w, const config_setting_t *s,
               int depth)
{
	int obj = config_setting_type(s) == CONFIG_TYPE_GROUP;
	int n = config_setting_length(s);

	if (depth > PARAMS_MAX_DEPTH)
		return ld_error(ld, s, "%s: params nested too deeply", ld->ctx);
	if (obj)
		jw_obj(w);
	else
		jw_arr(w);
	for (int i = 0; i < n; i++) {
		config_setting_t *m = config_setting_get_elem(s, (unsigned)i);

		if (obj)
			jw_key(w, config_setting_name(m));
		if (json_value(ld, w, m, depth + 1) == -1)
			return -1;
	}
	if (obj)
		jw_obj_end(w);
	else
		jw_arr_end(w);
	return 0;
}

/* Write setting s as a JSON value. */
static int
json_value(struct loader *ld, struct jw *w, const config_setting_t *s,
           int depth)
{
	const char *v;
	double f;

	switch (config_setting_type(s)) {
	case CONFIG_TYPE_INT:
	case CONFIG_TYPE_INT64:
		jw_int(w, config_setting_get_int64(s));
		return 0;
	case CONFIG_TYPE_FLOAT:
		if (!isfinite(f = config_setting_get_float(s)))
			return ld_error(ld, s,
			                "%s: params: not a finite "
			                "number",
			                ld->ctx);
		jw_num(w, f);
		return 0;
	case CONFIG_TYPE_BOOL:
		jw_bool(w, config_setting_get_bool(s));
		return 0;
	case CONFIG_TYPE_STRING:
		if (expand(ld, s, "params", config_setting_get_string(s), &v) ==
		    -1)
			return -1;
		jw_cstr(w, v);
		return 0;
	default:
		return json_aggregate(ld, w, s, depth);
	}
}

/* Deployment params: a group serialized to a JSON object. Fields llmfd
 * controls itself are refused. */
static int
deploy_params(struct loader *ld, const config_setting_t *s,
              struct deploy_cfg *d)
{
	static const char *const reserved[] = {"model", "messages", "stream",
	                                       NULL};
	config_setting_t *p = config_setting_get_member(s, "params");
	struct buf b = {0};
	struct jw w;

	if (p == NULL)
		return 0;
	if (config_setting_type(p) != CONFIG_TYPE_GROUP)
		return set_error(ld, p, "expected a group { ... }");
	for (int i = 0; reserved[i] != NULL; i++)
		if (config_setting_get_member(p, reserved[i]) != NULL)
			return ld_error(
			    ld, config_setting_get_member(p, reserved[i]),
			    "%s: params.%s is set by llmfd", ld->ctx,
			    reserved[i]);
	jw_init(&w, &b);
	if (json_aggregate(ld, &w, p, 0) == -1) {
		buf_free(&b);
		return -1;
	}
	if (b.oom)
		fatalx("cfg: out of memory serializing params");
	d->params = xstrdup(buf_cstr(&b));
	buf_free(&b);
	return 0;
}

/* One element of `deployments`. */
static int
parse_deploy(struct loader *ld, const config_setting_t *s, int idx,
             struct deploy_cfg *d)
{
	set_defaults(CFG_SEC_DEPLOY, d);
	d->line = config_setting_source_line(s);
	if (config_setting_type(s) != CONFIG_TYPE_GROUP)
		return ld_error(ld, s,
		                "deployments[%d]: expected a group "
		                "{ ... }",
		                idx);
	if (deploy_names(ld, s, idx, d) == -1 ||
	    check_known(ld, s, CFG_SEC_DEPLOY, NULL, ld->ctx) == -1 ||
	    read_section(ld, s, CFG_SEC_DEPLOY, d) == -1 ||
	    deploy_check(ld, s, d) == -1 || deploy_provider(ld, s, d) == -1 ||
	    deploy_key(ld, s, d) == -1 || deploy_files(ld, s, d) == -1 ||
	    deploy_headers(ld, s, d) == -1 || deploy_params(ld, s, d) == -1)
		return -1;
	return 0;
}

/* The deployments list (required, at least one). */
static int
parse_deployments(struct loader *ld, const config_setting_t *list)
{
	struct cfg *cfg = ld->cfg;
	int n;

	if (list == NULL)
		return ld_error(ld, NULL,
		                "deployments: at least one deployment "
		                "is required");
	if ((n = config_setting_length(list)) == 0)
		return ld_error(ld, list,
		                "deployments: at least one "
		                "deployment is required");
	if (n > CFG_MAX_DEPLOY)
		return ld_error(ld, list, "deployments: too many (at most %d)",
		                CFG_MAX_DEPLOY);
	cfg->deploy = xcalloc((size_t)n, sizeof *cfg->deploy);
	for (int i = 0; i < n; i++) {
		cfg->ndeploy = i + 1;
		if (parse_deploy(ld, config_setting_get_elem(list, (unsigned)i),
		                 i, &cfg->deploy[i]) == -1)
			return -1;
	}
	return 0;
}

/* Index of group name in cfg, or -1. */
static int
group_index(const struct cfg *cfg, const char *name)
{
	for (int i = 0; i < cfg->ngroup; i++)
		if (strcmp(cfg->groups[i].name, name) == 0)
			return i;
	return -1;
}

/* Build cfg->groups from the deployments' `group` names, in order of first
 * appearance; refuse a deployment name that is another group's name. */
static int
build_groups(struct loader *ld, const config_setting_t *list)
{
	struct cfg *cfg = ld->cfg;

	cfg->groups = xcalloc((size_t)cfg->ndeploy, sizeof *cfg->groups);
	for (int i = 0; i < cfg->ndeploy; i++) {
		struct deploy_cfg *d = &cfg->deploy[i];
		int g = group_index(cfg, d->group);

		if (g == -1) {
			g = cfg->ngroup++;
			memcpy(cfg->groups[g].name, d->group, CFG_NAME_MAX);
			set_defaults(CFG_SEC_GROUP, &cfg->groups[g]);
			cfg->groups[g].deploy =
			    xcalloc((size_t)cfg->ndeploy, sizeof(int));
		}
		cfg->groups[g].deploy[cfg->groups[g].ndeploy++] = i;
	}
	for (int i = 0; i < cfg->ndeploy; i++) {
		struct deploy_cfg *d = &cfg->deploy[i];

		if (group_index(cfg, d->name) != -1 &&
		    strcmp(d->name, d->group) != 0)
			return ld_error(
			    ld, config_setting_get_elem(list, (unsigned)i),
			    "deployment '%s': ambiguous name: "
			    "also the name of a group of other deployments",
			    d->name);
	}
	return 0;
}

/* One element of `groups`: settings for an existing group. */
static int
parse_group(struct loader *ld, const config_setting_t *s, int idx, char *seen)
{
	char name[CFG_NAME_MAX];
	struct group_cfg *g;
	int r, gi;

	ld_context(ld, ".", "groups[%d]", idx);
	if (config_setting_type(s) != CONFIG_TYPE_GROUP)
		return ld_error(ld, s, "groups[%d]: expected a group { ... }",
		                idx);
	if ((r = get_strbuf(ld, s, "name", name, sizeof name)) == -1)
		return -1;
	if (r == 0)
		return ld_error(ld, s, "groups[%d]: name is required", idx);
	if ((gi = group_index(ld->cfg, name)) == -1)
		return ld_error(
		    ld, config_setting_get_member(s, "name"),
		    "groups: unknown group '%s' (no deployment has group = "
		    "\"%s\")",
		    name, name);
	if (seen[gi])
		return ld_error(ld, s,
		                "groups: duplicate entry for group "
		                "'%s'",
		                name);
	seen[gi] = 1;
	g = &ld->cfg->groups[gi];
	ld_context(ld, ": ", "group '%s'", name);
	if (check_known(ld, s, CFG_SEC_GROUP, NULL, ld->ctx) == -1 ||
	    read_section(ld, s, CFG_SEC_GROUP, g) == -1)
		return -1;
	if (g->hedge_p95 && g->hedge_after_ms > 0)
		return ld_error(ld, s,
		                "%s: set hedge_after_ms or hedge = "
		                "\"p95\", not both",
		                ld->ctx);
	return 0;
}

/* The optional `groups` list. */
static int
parse_groups(struct loader *ld, const config_setting_t *list)
{
	char *seen;
	int n, r = 0;

	if (list == NULL || (n = config_setting_length(list)) == 0)
		return 0;
	seen = xcalloc((size_t)ld->cfg->ngroup, 1);
	for (int i = 0; i < n && r == 0; i++)
		r = parse_group(ld, config_setting_get_elem(list, (unsigned)i),
		                i, seen);
	free(seen);
	return r;
}

/* Check and store one target of a fallback entry. */
static int
fallback_target(struct loader *ld, const config_setting_t *m,
                struct fallback_cfg *f)
{
	const char *v;

	if (config_setting_type(m) != CONFIG_TYPE_STRING)
		return ld_error(ld, m, "%s: to: expected group names", ld->ctx);
	v = config_setting_get_string(m);
	if (group_index(ld->cfg, v) == -1)
		return ld_error(ld, m, "%s: to: unknown group '%s'", ld->ctx,
		                v);
	if (strcmp(v, f->group) == 0)
		return ld_error(ld, m, "%s: falls back to itself", ld->ctx);
	for (int i = 0; i < f->nto; i++)
		if (strcmp(f->to[i], v) == 0)
			return ld_error(ld, m, "%s: to: '%s' listed twice",
			                ld->ctx, v);
	memcpy(f->to[f->nto++], v, strlen(v) + 1);
	return 0;
}

/* One fallback entry { group = "a"; to = [ "b", "c" ]; }. */
static int
parse_fallback(struct loader *ld, const char *what, const config_setting_t *s,
               int idx, struct fallback_list *fl)
{
	static const char *const keys[] = {"group", "to", NULL};
	struct fallback_cfg *f = &fl->v[idx];
	config_setting_t *to;
	int r, n;

	ld_context(ld, ".", "%s[%d]", what, idx);
	if (config_setting_type(s) != CONFIG_TYPE_GROUP)
		return ld_error(ld, s, "%s: expected a group { ... }", ld->ctx);
	fl->n = idx + 1;
	if (check_known(ld, s, -1, keys, ld->ctx) == -1 ||
	    (r = get_strbuf(ld, s, "group", f->group, sizeof f->group)) == -1)
		return -1;
	if (r == 0)
		return ld_error(ld, s, "%s: group is required", ld->ctx);
	if (group_index(ld->cfg, f->group) == -1)
		return ld_error(ld, config_setting_get_member(s, "group"),
		                "%s: unknown group '%s'", what, f->group);
	for (int i = 0; i < idx; i++)
		if (strcmp(fl->v[i].group, f->group) == 0)
			return ld_error(ld, s,
			                "%s: duplicate entry for group "
			                "'%s'",
			                what, f->group);
	ld_context(ld, ": ", "%s: group '%s'", what, f->group);
	if ((to = config_setting_get_member(s, "to")) == NULL)
		return ld_error(ld, s, "%s: to is required", ld->ctx);
	if (config_setting_type(to) == CONFIG_TYPE_STRING) {
		f->to = xcalloc(1, sizeof *f->to);
		return fallback_target(ld, to, f);
	}
	if (config_setting_type(to) != CONFIG_TYPE_ARRAY &&
	    config_setting_type(to) != CONFIG_TYPE_LIST)
		return ld_error(ld, to,
		                "%s: to: expected a list of group "
		                "names",
		                ld->ctx);
	n = config_setting_length(to);
	f->to = xcalloc(n > 0 ? (size_t)n : 1, sizeof *f->to);
	for (int i = 0; i < n; i++)
		if (fallback_target(
		        ld, config_setting_get_elem(to, (unsigned)i), f) == -1)
			return -1;
	return 0;
}

/* One of the fallback lists. */
static int
parse_fallbacks(struct loader *ld, const config_setting_t *root,
                const char *what, struct fallback_list *fl)
{
	config_setting_t *list;
	int n;

	if (get_section(ld, root, what, CONFIG_TYPE_LIST, &list) == -1)
		return -1;
	if (list == NULL || (n = config_setting_length(list)) == 0)
		return 0;
	fl->v = xcalloc((size_t)n, sizeof *fl->v);
	for (int i = 0; i < n; i++)
		if (parse_fallback(ld, what,
		                   config_setting_get_elem(list, (unsigned)i),
		                   i, fl) == -1)
			return -1;
	return 0;
}

/* Walk the parsed tree into ld->cfg. */
static int
parse_root(struct loader *ld, const config_setting_t *root)
{
	static const char *const keys[] = {"daemon",
	                                   "router",
	                                   "deployments",
	                                   "groups",
	                                   "fallbacks",
	                                   "context_window_fallbacks",
	                                   "content_policy_fallbacks",
	                                   NULL};
	config_setting_t *dmn, *router, *deploys, *groups;
	struct cfg *cfg = ld->cfg;

	if (check_known(ld, root, -1, keys, NULL) == -1 ||
	    get_section(ld, root, "daemon", CONFIG_TYPE_GROUP, &dmn) ||
	    get_section(ld, root, "router", CONFIG_TYPE_GROUP, &router) ||
	    get_section(ld, root, "deployments", CONFIG_TYPE_LIST, &deploys) ||
	    get_section(ld, root, "groups", CONFIG_TYPE_LIST, &groups))
		return -1;
	if (parse_daemon(ld, dmn) == -1 || parse_router(ld, router) == -1 ||
	    parse_deployments(ld, deploys) == -1 ||
	    build_groups(ld, deploys) == -1 || parse_groups(ld, groups) == -1 ||
	    parse_fallbacks(ld, root, "fallbacks", &cfg->fallbacks) == -1 ||
	    parse_fallbacks(ld, root, "context_window_fallbacks",
	                    &cfg->cw_fallbacks) == -1 ||
	    parse_fallbacks(ld, root, "content_policy_fallbacks",
	                    &cfg->cp_fallbacks) == -1)
		return -1;
	return 0;
}

/* Read the file and record its absolute path and directory in ld. */
static int
read_file(struct loader *ld, config_t *c)
{
	char tmp[PATH_MAX], *slash;
	const char *base;
	int saved, n;

	snprintf(tmp, sizeof tmp, "%s", ld->file);
	if ((slash = strrchr(tmp, '/')) == NULL)
		snprintf(tmp, sizeof tmp, ".");
	else if (slash == tmp)
		tmp[1] = '\0';
	else
		*slash = '\0';
	config_set_include_dir(c, tmp);
	errno = 0;
	if (!config_read_file(c, ld->file)) {
		saved = errno;
		if (config_error_type(c) == CONFIG_ERR_FILE_IO)
			xasprintf(&ld->cause, "%s: cannot read: %s", ld->file,
			          strerror(saved ? saved : EIO));
		else
			xasprintf(&ld->cause, "%s:%d: %s",
			          config_error_file(c) ? config_error_file(c)
			                               : ld->file,
			          config_error_line(c), config_error_text(c));
		return -1;
	}
	if (realpath(tmp, ld->dir) == NULL) {
		xasprintf(&ld->cause, "%s: realpath: %s", ld->file,
		          strerror(errno));
		return -1;
	}
	base = strrchr(ld->file, '/') ? strrchr(ld->file, '/') + 1 : ld->file;
	n = snprintf(ld->cfg->file, sizeof ld->cfg->file, "%s%s%s", ld->dir,
	             strcmp(ld->dir, "/") == 0 ? "" : "/", base);
	if (n < 0 || (size_t)n >= sizeof ld->cfg->file) {
		xasprintf(&ld->cause, "%s: path too long", ld->file);
		return -1;
	}
	return 0;
}

/* Load and validate a config file; see cfg.h. */
struct cfg *
cfg_load(const char *file, char **cause)
{
	struct loader ld;
	config_t c;
	int r;

	memset(&ld, 0, sizeof ld);
	ld.file = file;
	ld.sep = ".";
	ld.cfg = xcalloc(1, sizeof *ld.cfg);
	set_defaults(CFG_SEC_DAEMON, ld.cfg);
	set_defaults(CFG_SEC_ROUTER, ld.cfg);
	config_init(&c);
	r = read_file(&ld, &c);
	if (r == 0)
		r = parse_root(&ld, config_root_setting(&c));
	config_destroy(&c);
	if (r == -1) {
		cfg_free(ld.cfg);
		if (ld.cause == NULL)
			xasprintf(&ld.cause, "%s: invalid config", file);
		*cause = ld.cause;
		return NULL;
	}
	*cause = NULL;
	return ld.cfg;
}

/* Free one fallback list. */
static void
free_fallbacks(struct fallback_list *fl)
{
	for (int i = 0; i < fl->n; i++)
		free(fl->v[i].to);
	free(fl->v);
}

/* Free a config, wiping secrets first. */
void
cfg_free(struct cfg *cfg)
{
	if (cfg == NULL)
		return;
	for (int i = 0; i < cfg->ndeploy; i++) {
		struct deploy_cfg *d = &cfg->deploy[i];

		free(d->system_prompt_append);
		free(d->params);
		OPENSSL_cleanse(d->api_key, sizeof d->api_key);
		OPENSSL_cleanse(d->headers, sizeof d->headers);
	}
	free(cfg->deploy);
	for (int i = 0; i < cfg->ngroup; i++)
		free(cfg->groups[i].deploy);
	free(cfg->groups);
	free_fallbacks(&cfg->fallbacks);
	free_fallbacks(&cfg->cw_fallbacks);
	free_fallbacks(&cfg->cp_fallbacks);
	free(cfg);
}

/* Index of the deployment called name, or -1. */
int
cfg_find_deploy(const struct cfg *cfg, const char *name)
{
	for (int i = 0; i < cfg->ndeploy; i++)
		if (strcmp(cfg->deploy[i].name, name) == 0)
			return i;
	return -1;
}

/* The group called name, or NULL. */
const struct group_cfg *
cfg_find_group(const struct cfg *cfg, const char *name)
{
	int i = group_index(cfg, name);

	return i == -1 ? NULL : &cfg->groups[i];
}

/* The fallback entry for group in fl, or NULL. */
const struct fallback_cfg *
cfg_find_fallback(const struct fallback_list *fl, const char *group)
{
	for (int i = 0; i < fl->n; i++)
		if (strcmp(fl->v[i].group, group) == 0)
			return &fl->v[i];
	return NULL;
}

/* The effective value of router setting f for deployment d: its override
 * when set (not -1), else the router's. */
#define EFF(cfg, d, f) ((d)->f != -1 ? (d)->f : (cfg)->f)

/* Effective retries for d. */
int
cfg_eff_num_retries(const struct cfg *cfg, const struct deploy_cfg *d)
{
	return EFF(cfg, d, num_retries);
}

/* Effective per-attempt timeout for d. */
int
cfg_eff_attempt_timeout_ms(const struct cfg *cfg, const struct deploy_cfg *d)
{
	return EFF(cfg, d, attempt_timeout_ms);
}

/* Effective backoff base for d. */
int
cfg_eff_backoff_base_ms(const struct cfg *cfg, const struct deploy_cfg *d)
{
	return EFF(cfg, d, backoff_base_ms);
}

/* Effective first-token timeout for d. */
int
cfg_eff_first_token_timeout_ms(const struct cfg *cfg,
                               const struct deploy_cfg *d)
{
	return EFF(cfg, d, first_token_timeout_ms);
}

/* Effective stream idle timeout for d. */
int
cfg_eff_stream_idle_timeout_ms(const struct cfg *cfg,
                               const struct deploy_cfg *d)
{
	return EFF(cfg, d, stream_idle_timeout_ms);
}

/* Effective TTFT p95 limit for d; 0 is off, whether set on d or inherited. */
int
cfg_eff_max_ttft_p95_ms(const struct cfg *cfg, const struct deploy_cfg *d)
{
	return EFF(cfg, d, max_ttft_p95_ms);
}

/* Effective strategy for group g (NULL: the router's). */
int
cfg_eff_strategy(const struct cfg *cfg, const struct group_cfg *g)
{
	return (g != NULL && g->strategy >= 0) ? g->strategy : cfg->strategy;
}
