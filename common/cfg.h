/* Configuration (libconfig). A flat, pointer-light record built by the master
 * at start-up and on reload; workers inherit it across fork. */
#ifndef LLMFD_CFG_H
#define LLMFD_CFG_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#define CFG_NAME_MAX   64
#define CFG_URL_MAX    512
#define CFG_KEY_MAX    512
#define CFG_MAX_DEPLOY 256
#define CFG_MAX_HDRS   16

enum strategy {
	STRAT_ORDERED = 0,
	STRAT_WEIGHTED,
	STRAT_LEAST_BUSY,
	STRAT_LATENCY,
	STRAT_USAGE,
	STRAT__MAX
};

enum provider_kind {
	PROV_OPENAI = 0, /* and any OpenAI-compatible server */
	PROV_AZURE,
	PROV_ANTHROPIC,
	PROV_GEMINI,
	PROV__MAX
};

enum log_format { LOGF_TEXT = 0, LOGF_JSON };
enum stream_resume { RESUME_OFF = 0, RESUME_CONTINUE };

const char *cfg_strategy_name(int);
int cfg_strategy_parse(const char *); /* -1 if unknown */
const char *cfg_provider_name(int);
int cfg_provider_parse(const char *); /* -1 if unknown */

struct cfg_header {
	char name[CFG_NAME_MAX];
	char value[256];
};

/* One deployment. A router setting the deployment may override (those with
 * an override in cfg_settings[]) is -1 when unset, else the value set, 0
 * included; read the effective value with the cfg_eff_* helpers. */
struct deploy_cfg {
	char name[CFG_NAME_MAX];
	char group[CFG_NAME_MAX];
	char model[128];
	char azure_deployment[128]; /* azure: deployment id, default model */
	int provider;               /* enum provider_kind */
	char base_url[CFG_URL_MAX]; /* as written (default per provider) */
	/* base_url split up */
	int tls;        /* https */
	char host[256]; /* IPv6 without brackets */
	uint16_t port;
	char path[CFG_URL_MAX];         /* path prefix, no trailing slash */
	char api_key[CFG_KEY_MAX];      /* secret: never log or print */
	char api_key_var[CFG_NAME_MAX]; /* "$VAR" name, "" if literal */
	char ca_file[PATH_MAX];
	char api_version[32]; /* azure */
	int weight;           /* default 1; 0 takes no traffic */
	long rpm, tpm;        /* 0 = unlimited */
	long context_window;  /* tokens, 0 = unknown */
	int responses_api;    /* speaks OpenAI Responses (passthrough target) */
	long max_tokens;      /* default max_tokens (anthropic) */
	int num_retries;      /* -1 = router's */
	int attempt_timeout_ms;     /* -1 = router's */
	int backoff_base_ms;        /* -1 = router's */
	int first_token_timeout_ms; /* -1 = router's */
	int stream_idle_timeout_ms; /* -1 = router's */
	int max_ttft_p95_ms;        /* -1 = router's, 0 = off */
	char *system_prompt_append; /* heap, NULL if none */
	char *params;               /* heap JSON object text, NULL if none */
	int nheaders;
	struct cfg_header headers[CFG_MAX_HDRS];
	int line; /* config line, for messages */
};

/* A group: every deployment sharing a `group`, plus optional settings from
 * the `groups` list. */
struct group_cfg {
	char name[CFG_NAME_MAX];
	int strategy;       /* -1 = router's */
	int stream_resume;  /* enum stream_resume */
	int hedge_after_ms; /* 0 = off */
	int hedge_p95;      /* hedge = "p95" */
	int ndeploy;
	int *deploy; /* heap: indexes into cfg.deploy, config order */
};

/* `fallbacks`, `context_window_fallbacks`, `content_policy_fallbacks`. */
struct fallback_cfg {
	char group[CFG_NAME_MAX];
	int nto;
	char (*to)[CFG_NAME_MAX]; /* heap */
};

struct fallback_list {
	int n;
	struct fallback_cfg *v; /* heap */
};

struct cfg {
	char file[PATH_MAX]; /* absolute path of the file loaded */

	/* daemon */
	int workers;      /* default 2 */
	char listen[108]; /* unix socket path */
	int listen_mode;  /* default 0660 */
	char tcp[64];     /* "127.0.0.1:4000" or "" */
	char tcp_host[64];
	int tcp_port;
	char health_table[PATH_MAX];
	int log_level;             /* LOG_LVL_* */
	int log_format;            /* enum log_format */
	char access_log[PATH_MAX]; /* "" = stderr, "off" = none */
	int drain_timeout_ms;      /* default 30000 */
	char user[64], group[64];  /* drop privileges in workers; "" = no */
	char on_event_exec[PATH_MAX];
	char on_event_webhook[CFG_URL_MAX];

	/* router */
	int strategy;
	int num_retries;               /* default 2 */
	int backoff_base_ms;           /* 250 */
	int backoff_max_ms;            /* 8000 */
	int timeout_ms;                /* 60000 */
	int attempt_timeout_ms;        /* 30000 */
	int first_token_timeout_ms;    /* 10000 */
	int stream_idle_timeout_ms;    /* 30000 */
	int allowed_fails;             /* 3 */
	int cooldown_s;                /* 30 */
	int circuit_failure_threshold; /* 5 */
	int circuit_recovery_s;        /* 30 */
	int circuit_max_s;             /* 600 */
	double latency_buffer;         /* 0.1 */
	int queue_when_cooling;        /* 1 */
	double retry_budget_ratio;     /* 0.2 */
	int retry_budget_floor;        /* 10 per minute */
	int max_ttft_p95_ms;           /* 0 = off */

	int ndeploy;
	struct deploy_cfg *deploy; /* heap */
	int ngroup;
	struct group_cfg *groups; /* heap */
	struct fallback_list fallbacks, cw_fallbacks, cp_fallbacks;
};

/* Load and validate a config file. On failure returns NULL and sets *cause
 * (heap string, caller frees) to "FILE:LINE: reason". Never puts a secret
 * value into *cause. */
struct cfg *cfg_load(const char *file, char **cause);
void cfg_free(struct cfg *);

/* Split an http:// or https:// URL into tls, host (IPv6 without brackets),
 * port (default 80/443) and path (no trailing slash). Returns 0, or -1 with
 * *why set to a static reason that never quotes the URL. */
int cfg_url_split(const char *url, int *tls, char *host, size_t hostsz,
                  uint16_t *port, char *path, size_t pathsz, const char **why);

/* Lookups; -1 / NULL when absent. */
int cfg_find_deploy(const struct cfg *, const char *name);
const struct group_cfg *cfg_find_group(const struct cfg *, const char *name);
const struct fallback_cfg *cfg_find_fallback(const struct fallback_list *,
                                             const char *group);

/* Effective per-deployment settings (override, else router default). */
int cfg_eff_num_retries(const struct cfg *, const struct deploy_cfg *);
int cfg_eff_attempt_timeout_ms(const struct cfg *, const struct deploy_cfg *);
int cfg_eff_backoff_base_ms(const struct cfg *, const struct deploy_cfg *);
int cfg_eff_first_token_timeout_ms(const struct cfg *,
                                   const struct deploy_cfg *);
int cfg_eff_stream_idle_timeout_ms(const struct cfg *,
                                   const struct deploy_cfg *);
int cfg_eff_max_ttft_p95_ms(const struct cfg *, const struct deploy_cfg *);
int cfg_eff_strategy(const struct cfg *, const struct group_cfg *);

/* The table of scalar settings (after tmux options-table.c): the loader,
 * the defaults, the per-deployment overrides, unknown-setting checks and
 * llmfd.conf(5) all read it. */
enum cfg_section {
	CFG_SEC_DAEMON = 0, /* fields of struct cfg */
	CFG_SEC_ROUTER,     /* fields of struct cfg */
	CFG_SEC_DEPLOY,     /* fields of struct deploy_cfg */
	CFG_SEC_GROUP,      /* fields of struct group_cfg */
	CFG_SEC__MAX
};

enum cfg_type {
	CFG_INT = 0, /* int, min..max */
	CFG_LONG,    /* long, min..max */
	CFG_BOOL,    /* int 0 or 1, written true or false */
	CFG_DOUBLE,  /* double, min..max, written as an integer or a float */
	CFG_STRING,  /* char[size], "$VAR" expanded */
	CFG_PATH,    /* a CFG_STRING relative to the file's directory */
	CFG_ENUM,    /* int: the index of its name in names */
	CFG_MODE,    /* int file mode, octal string or integer, min..max */
	CFG_OTHER    /* read by hand-written code, named for the key check */
};

struct cfg_setting {
	const char *name;
	enum cfg_section section;
	enum cfg_type type;
	long long min, max; /* numbers and modes; INT_MAX, LONG_MAX: no limit */
	size_t off, size;   /* the field in the section's struct */
	size_t dep_off;     /* router setting: its override in deploy_cfg, */
	size_t dep_size;    /* which is -1 when unset; dep_size 0: none */
	const char *def;    /* default as written in the file; NULL: -1 */
	const char *const *names;   /* CFG_ENUM, NULL-terminated */
	int (*parse)(const char *); /* CFG_ENUM with aliases, else NULL */
	const char *doc;            /* for llmfd.conf(5); NULL for CFG_OTHER */
};

/* Every setting, in manual order; the last has name NULL. */
extern const struct cfg_setting cfg_settings[];

#endif
