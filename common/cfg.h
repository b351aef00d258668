/* Configuration (libconfig). A flat, pointer-light record built by the master
 * at start-up and on reload; workers inherit it across fork. */
#ifndef LLMFD_CFG_H
#define LLMFD_CFG_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#define CFG_NAME_MAX       64
#define CFG_URL_MAX        512
#define CFG_KEY_MAX        512
#define CFG_MAX_DEPLOY     256
#define CFG_MAX_HDRS       16
#define CFG_MAX_CLIENTS    100 /* configured clients, "default" included */
#define CFG_MAX_KEYS       4   /* virtual keys per client (rotation) */
#define CFG_DEFAULT_CLIENT "default"

enum strategy {
	STRAT_ORDERED = 0,
	STRAT_WEIGHTED,
	STRAT_LEAST_BUSY,
	STRAT_LATENCY,
	STRAT_USAGE,
	STRAT_COST,
	STRAT__MAX
};

enum provider_kind {
	PROV_OPENAI = 0, /* and any OpenAI-compatible server */
	PROV_AZURE,
	PROV_ANTHROPIC,
	PROV_GEMINI,
	PROV_BEDROCK, /* AWS Bedrock: InvokeModel (Anthropic), Converse */
	PROV_VERTEX,  /* Google Vertex AI: Claude and Gemini */
	PROV__MAX
};

enum log_format { LOGF_TEXT = 0, LOGF_JSON };

/* Priority classes of requests (clients, rules): under a shortage the
 * higher is served first and the lowest is shed first. */
enum prio { PRIO_LOW = 0, PRIO_NORMAL, PRIO_HIGH, PRIO__MAX };
/* daemon.default_client: callers that match no client. */
enum default_client { DEFCLIENT_ALLOW = 0, DEFCLIENT_DENY };
const char *cfg_prio_name(int);

/* Failure kinds for router.retry_on: which failures are retried on the
 * same deployment (after a backoff) before the next candidate. */
#define RETRY_5XX     0x1 /* HTTP 5xx, 408, 409; an error event in a stream */
#define RETRY_RESET   0x2 /* refused, reset or closed; a reply cut short */
#define RETRY_TIMEOUT 0x4 /* attempt or first-token timeout */
#define RETRY_429     0x8 /* rate limited (without a short Retry-After) */
enum stream_resume { RESUME_OFF = 0, RESUME_CONTINUE };
enum affinity { AFFINITY_OFF = 0, AFFINITY_SESSION };
enum tie_break { TIE_RANDOM = 0, TIE_COST };

const char *cfg_strategy_name(int);
int cfg_strategy_parse(const char *); /* -1 if unknown */
const char *cfg_provider_name(int);
int cfg_provider_parse(const char *); /* -1 if unknown */

struct cfg_header {
	char name[CFG_NAME_MAX];
	char value[256];
	int secret; /* from "$VAR", or a credential's name: never shown */
};

/* One deployment. A router setting the deployment may override (those with
 * an override in cfg_settings[]) is -1 when unset, else the value set, 0
 * included; read the effective value with the cfg_eff_* helpers. */
#define CFG_MAX_DROP 16 /* drop_params */

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
	int prefill;                /* takes an assistant prefill; -1 = auto */
	char region[CFG_NAME_MAX];  /* "" = none */
	char pattern[128];          /* model names it serves, "" = none */
	int price; /* index in cfg.prices for model, -1 = none */
	/* bedrock (its AWS region is `region`) */
	char aws_access_key_id[128];
	char aws_secret_access_key[CFG_KEY_MAX]; /* secret */
	char aws_session_token[4096];            /* secret, "" if none */
	/* vertex */
	char project[128];
	char location[64];
	char credentials_file[PATH_MAX];
	/* the service account read from credentials_file at load */
	char sa_email[256];
	char sa_key_id[128];
	char sa_token_uri[CFG_URL_MAX];
	char *sa_private_key;       /* heap PEM, secret; NULL if none */
	char *system_prompt_append; /* heap, NULL if none */
	char *params;               /* heap JSON object text, NULL if none */
	/* Top-level keys left out of an OpenAI-shaped body for this
	 * deployment; -1: not set (azure and api.openai.com leave out
	 * top_k, which they refuse). */
	int ndrop_params;
	char (*drop_params)[CFG_NAME_MAX]; /* heap, at most CFG_MAX_DROP */
	/* Thinking budgets (tokens) for reasoning_effort low, medium and
	 * high sent to an Anthropic or Gemini model; nthink -1: not set
	 * (by model), 0: never think, 3: these. */
	int nthink;
	long think_budget[3];
	int nheaders;
	struct cfg_header headers[CFG_MAX_HDRS];
	int line; /* config line, for messages */
};

/* A group: every deployment sharing a `group`, plus optional settings from
 * the `groups` list. */
struct group_cfg {
	char name[CFG_NAME_MAX];
	int strategy;        /* -1 = router's */
	int stream_resume;   /* enum stream_resume */
	int hedge_after_ms;  /* 0 = off */
	int hedge_p95;       /* hedge = "p95" */
	int affinity;        /* enum affinity */
	int tie_break;       /* enum tie_break, -1 = router's */
	const char *pattern; /* its deployments' pattern, NULL if none */
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

/* `prices`: USD per million tokens of an upstream model (a name, or a
 * pattern with one `*`). */
struct price_cfg {
	char model[128];
	double input_per_mtok;
	double output_per_mtok;
	double cached_input_per_mtok; /* input_per_mtok when unset */
	double cache_write_per_mtok;  /* input_per_mtok when unset */
};

/* `aliases`: another name for a group or a deployment. */
struct alias_cfg {
	char name[CFG_NAME_MAX];
	char group[CFG_NAME_MAX];
};

/* Client protocols a rule can match (the worker's ingress ids). */
#define CFG_NPROTO 4
const char *cfg_protocol_name(int); /* "chat", "embeddings", ... */

/* One `metadata` or header condition of a rule: value is a pattern ("*"
 * any text), NULL-free. */
struct rule_kv {
	char key[CFG_NAME_MAX];
	char value[256];
};

/* `routes`: a rule. Every condition set must hold; see policy.c. */
struct rule_cfg {
	/* match */
	char tag[128]; /* metadata.tag, or an element of metadata.tags */
	int nmeta;
	struct rule_kv *meta; /* heap */
	int nheader;
	struct rule_kv *header; /* heap */
	unsigned protocols;     /* bit per CFG_NPROTO id, 0 = any */
	char model[128];        /* pattern on the requested model, "" = any */
	char client[CFG_NAME_MAX]; /* a configured client's name */
	/* actions */
	char group[128]; /* a model name to route to instead, "" = none */
	int nfallbacks;
	char (*fallbacks)[128];    /* heap: appended to the chain */
	char region[CFG_NAME_MAX]; /* required region, "" = none */
	int priority;              /* enum prio, -1 = none */
	int line;
};

/* `clients`: who may call, and within what. A caller is identified by a
 * virtual key (any listener), else on the Unix socket by the peer's uid,
 * then its groups; a caller that matches nothing is the client named
 * "default" (implicit, without limits, unless configured) when
 * daemon.default_client is "allow". */
struct client_cfg {
	char name[CFG_NAME_MAX];
	long uid, gid; /* -1 = not matched by it */
	int nkeys;
	unsigned char key_sha256[CFG_MAX_KEYS][32]; /* never logged or shown */
	int ngroups;
	char (*groups)[CFG_NAME_MAX]; /* heap patterns; 0 = every group */
	long rpm, tpm;                /* 0 = unlimited */
	int max_concurrent;           /* 0 = unlimited */
	int priority;                 /* enum prio */
	double daily_budget_usd;      /* 0 = none */
	double monthly_budget_usd;    /* 0 = none */
	char region[CFG_NAME_MAX];    /* region its requests require, "" */
	int implicit;                 /* the "default" nobody configured */
	int line;
};

struct cfg {
	char file[PATH_MAX]; /* absolute path of the file loaded */

	/* daemon */
	int workers;           /* default 2 */
	char listen[108];      /* unix socket path */
	int listen_mode;       /* default 0660 */
	char listen_group[64]; /* group of the socket file, "" = as created */
	char tcp[64];          /* "127.0.0.1:4000" or "" */
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
	int client_header_timeout_ms; /* a whole request, from its start */
	int keepalive_timeout_ms;     /* idle between requests */
	int max_header_bytes;         /* request line and headers */
	int max_headers;              /* header fields */
	int default_client;           /* enum default_client */
	int tcp_require_key;          /* TCP requests need a valid key */
	char state_dir[PATH_MAX];     /* spend file's directory, "" = none */

	/* router */
	int strategy;
	int num_retries;               /* default 2 */
	int backoff_base_ms;           /* 250 */
	int backoff_max_ms;            /* 8000 */
	int timeout_ms;                /* 60000 */
	int attempt_timeout_ms;        /* 30000 */
	int first_token_timeout_ms;    /* 10000 */
	int stream_idle_timeout_ms;    /* 30000 */
	int stream_ping_ms;            /* 10000, 0: no keep-alives */
	int allowed_fails;             /* 3 */
	int cooldown_s;                /* 30 */
	int circuit_failure_threshold; /* 5 */
	int circuit_recovery_s;        /* 30 */
	int circuit_max_s;             /* circuit_recovery_s when unset */
	double latency_buffer;         /* 0.1 */
	int queue_when_cooling;        /* 1 */
	double retry_budget_ratio;     /* 0.2 */
	int retry_budget_floor;        /* 10 per minute */
	int max_ttft_p95_ms;           /* 0 = off */
	int max_response_bytes;        /* whole upstream reply */
	int max_event_bytes;           /* one upstream SSE event */
	int retry_on;                  /* RETRY_* bits: 5xx, reset */
	int retry_after_max_wait_ms;   /* 5000 */
	int tie_break;                 /* enum tie_break */

	/* fleet (optional section; see daemon/fleet.c) */
	int fleet;                 /* the section is present */
	char fleet_redis[128];     /* "host:port" or a Unix socket path */
	char fleet_redis_host[64]; /* parsed: numeric address, "" for Unix */
	int fleet_redis_port;      /* parsed: 1..65535, 0 for Unix */
	char fleet_key_prefix[64]; /* "llmfd:" */
	char fleet_password[256];  /* secret: never log or print */
	int fleet_sync_ms;         /* 100 */
	char fleet_host[64];       /* this host's id; "" = hostname:pid */

	int ndeploy;
	struct deploy_cfg *deploy; /* heap */
	int ngroup;
	struct group_cfg *groups; /* heap */
	struct fallback_list fallbacks, cw_fallbacks, cp_fallbacks;
	int nprice;
	struct price_cfg *prices; /* heap */
	int nalias;
	struct alias_cfg *aliases; /* heap */
	int nrule;
	struct rule_cfg *rules; /* heap */
	int nclient;
	struct client_cfg *clients; /* heap; "default" included when allowed */
	int def_client;             /* index of "default", -1 (deny) */
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

/* The Host header value for d's base_url (the port only when it is not
 * the scheme's), as the upstream client sends it and SigV4 signs it. */
void cfg_host_header(const struct deploy_cfg *, char *out, size_t size);

/* Group id of a group name or number (getgrnam: start-up and reload only),
 * or -1 if there is no such group. */
int cfg_group_id(const char *);

/* Lookups; -1 / NULL when absent. */
int cfg_find_deploy(const struct cfg *, const char *name);
const struct group_cfg *cfg_find_group(const struct cfg *, const char *name);
const struct fallback_cfg *cfg_find_fallback(const struct fallback_list *,
                                             const char *group);
const struct alias_cfg *cfg_find_alias(const struct cfg *, const char *name);
/* The price of upstream model `model`: an exact entry, else the first
 * pattern that matches; NULL if none. Shared by routing (strategy "cost")
 * and spend accounting. */
const struct price_cfg *cfg_price(const struct cfg *, const char *model);
/* Whether s matches pattern p, where each `*` stands for any text. */
int cfg_glob(const char *p, const char *s);
/* Match s against a pattern with exactly one `*`: 1 with the text the star
 * stands for copied to cap, else 0 (also when it does not fit). */
int cfg_capture(const char *p, const char *s, char *cap, size_t capsz);
/* The first group whose deployments serve model names matching its
 * pattern, for model s: the group with the star's text in cap, or NULL. */
const struct group_cfg *cfg_find_pattern(const struct cfg *, const char *s,
                                         char *cap, size_t capsz);
/* Whether a model name routes somewhere: a group, a deployment, an alias,
 * a model a pattern serves, or "provider/model" of a configured
 * deployment (a pattern's own group or deployment names no model). */
int cfg_model_routes(const struct cfg *, const char *name);
/* The client called name, or -1. */
int cfg_find_client(const struct cfg *, const char *name);
/* Whether client c may use deployment group g (its groups patterns). */
int cfg_client_allows(const struct client_cfg *c, const char *group);
/* Whether deployment region r satisfies a required region want: the same,
 * or r starts with want and "-" ("eu" takes "eu-west"). */
int cfg_region_ok(const char *want, const char *r);

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
int cfg_eff_tie_break(const struct cfg *, const struct group_cfg *);
/* Whether d continues a cut stream with an assistant prefill: its prefill
 * setting, else on for Anthropic and off for the others. */
int cfg_eff_prefill(const struct deploy_cfg *);

/* The table of scalar settings (after tmux options-table.c): the loader,
 * the defaults, the per-deployment overrides, unknown-setting checks and
 * llmfd.conf(5) all read it. */
enum cfg_section {
	CFG_SEC_DAEMON = 0, /* fields of struct cfg */
	CFG_SEC_ROUTER,     /* fields of struct cfg */
	CFG_SEC_DEPLOY,     /* fields of struct deploy_cfg */
	CFG_SEC_GROUP,      /* fields of struct group_cfg */
	CFG_SEC_CLIENT,     /* fields of struct client_cfg */
	CFG_SEC_FLEET,      /* fields of struct cfg */
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
