/* Configuration: read a libconfig file into a flat struct cfg, validating
 * every setting. Errors name the file, the line and the setting; they never
 * quote a secret. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
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
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

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
    "ordered", "weighted", "least-busy", "latency", "usage", "cost", NULL};
static const char *const provider_names[] = {
    "openai", "azure", "anthropic", "gemini", "bedrock", "vertex", NULL};
static const char *const log_level_names[] = {"error", "warn", "info", "debug",
                                              NULL};
static const char *const log_format_names[] = {"text", "json", NULL};
static const char *const resume_names[] = {"off", "continue", NULL};
static const char *const hedge_names[] = {"off", "p95", NULL};
static const char *const affinity_names[] = {"off", "session", NULL};
static const char *const tie_names[] = {"random", "cost", NULL};
static const char *const protocol_names[] = {"chat", "embeddings", "messages",
                                             "responses", NULL};
static const char *const prio_names[] = {"low", "normal", "high", NULL};
static const char *const default_client_names[] = {"allow", "deny", NULL};

_Static_assert(sizeof(((struct cfg *)0)->listen) <=
                   sizeof(((struct sockaddr_un *)0)->sun_path),
               "listen must fit a Unix socket address");

#define FIELD(st, m) .off = offsetof(st, m), .size = sizeof(((st *)0)->m)
#define IN_CFG(m)    FIELD(struct cfg, m)
#define IN_DEPLOY(m) FIELD(struct deploy_cfg, m)
#define IN_GROUP(m)  FIELD(struct group_cfg, m)
#define IN_CLIENT(m) FIELD(struct client_cfg, m)
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
    {"listen_group", CFG_SEC_DAEMON, CFG_STRING, IN_CFG(listen_group),
     .def = "",
     .doc = "Group of the socket file, a name or a number; it must exist.\n"
            "With mode 0660 its members may connect, so applications need "
            "not run as root: put their users in that group.\nEmpty: the "
            "group the socket was created with (the master's).\nIgnored "
            "under socket activation (set\n.Cm SocketGroup=\nin\n"
            ".Pa llmfd.socket ) .\nChanges to the listeners need a "
            "restart."},
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
    {"client_header_timeout_ms", CFG_SEC_DAEMON, CFG_INT, .min = 1,
     .max = INT_MAX, IN_CFG(client_header_timeout_ms), .def = "60000",
     .doc = "Time a client has to send a whole request (head and body) "
            "after it connects, or after the first byte of its next request "
            "on a kept-alive connection; a slower client is disconnected, "
            "however steadily it trickles bytes."},
    {"keepalive_timeout_ms", CFG_SEC_DAEMON, CFG_INT, .min = 1, .max = INT_MAX,
     IN_CFG(keepalive_timeout_ms), .def = "75000",
     .doc = "How long a kept-alive client connection may stay idle between "
            "requests before it is closed."},
    {"max_header_bytes", CFG_SEC_DAEMON, CFG_INT, .min = 1024, .max = 16777216,
     IN_CFG(max_header_bytes), .def = "65536",
     .doc = "Largest request line and headers together; a larger head is "
            "answered 431 at once."},
    {"max_headers", CFG_SEC_DAEMON, CFG_INT, .min = 1, .max = 100000,
     IN_CFG(max_headers), .def = "100",
     .doc = "Most header fields in a request; more are answered 431 at "
            "once.\nFolded (obs-fold) header lines are refused with 400."},
    {"default_client", CFG_SEC_DAEMON, CFG_ENUM, IN_CFG(default_client),
     .def = "allow", .names = default_client_names,
     .doc = "What a caller that matches no entry of\n.Ic clients\ngets:\n"
            ".Cm allow\nserves it as the client\n.Qq default\n(without "
            "limits unless an entry of that name sets them);\n.Cm deny\n"
            "refuses it, 403 on the Unix socket and 401 on TCP (see\n"
            ".Sx CLIENTS ) ."},
    {"tcp_require_key", CFG_SEC_DAEMON, CFG_BOOL, IN_CFG(tcp_require_key),
     .def = "false",
     .doc = "Requests on the TCP listener must carry a configured virtual "
            "key, as\n.Ql Authorization: Bearer KEY\nor\n.Ql x-api-key ;\n"
            "a missing or unknown key is answered 401.\nWith\n"
            ".Ic default_client\nset to\n.Cm deny\nthey must anyway."},
    {"state_dir", CFG_SEC_DAEMON, CFG_PATH, IN_CFG(state_dir), .def = "",
     .doc = "Directory of the spend file\n.Pa spend ,\nwhich keeps what "
            "each client, deployment and model spent per day across "
            "restarts and reloads, so that budgets hold.\nThe master "
            "writes it atomically once a second while spend changes, and "
            "at exit; it is created (mode 0750) if missing.\nEmpty: spend "
            "is kept in the health table only and starts from zero at "
            "each start."},

    {"strategy", CFG_SEC_ROUTER, CFG_ENUM, IN_CFG(strategy), .def = "ordered",
     .names = strategy_names, .parse = cfg_strategy_parse,
     .doc = "How the deployments of a group are ordered for a request: in "
            "configuration order, at random by\n.Ic weight ,\nfewest in "
            "flight first, fastest first (within\n.Ic latency_buffer ) ,\n"
            "lowest share of their rpm/tpm limits (and of the limits the "
            "upstream reports) first, or cheapest first by\n.Ic prices\n"
            "(see\n.Sx ROUTING ) ."},
    {"tie_break", CFG_SEC_ROUTER, CFG_ENUM, IN_CFG(tie_break), .def = "random",
     .names = tie_names,
     .doc = "How\n.Cm least-busy , latency\nand\n.Cm usage\nchoose among "
            "equally good deployments: at random, or the cheapest by\n"
            ".Ic prices\n(then at random)."},
    {"num_retries", CFG_SEC_ROUTER, CFG_INT, .min = 0, .max = 10,
     IN_CFG(num_retries), OVERRIDE(num_retries), .def = "2",
     .doc = "Retries of one deployment on the failures named by\n"
            ".Ic retry_on ,\nand after a short\n.Ql retry-after\n(see\n"
            ".Sx RETRY POLICY ) ."},
    {"retry_on", CFG_SEC_ROUTER, CFG_OTHER, .def = "[ \"5xx\", \"reset\" ]"},
    {"retry_after_max_wait_ms", CFG_SEC_ROUTER, CFG_INT, .min = 0,
     .max = INT_MAX, IN_CFG(retry_after_max_wait_ms), .def = "5000",
     .doc = "A 429 or 5xx whose\n.Ql retry-after\nor\n.Ql retry-after-ms\n"
            "is at most this (and within the deadline) is retried on the "
            "same deployment once that wait is over; a longer one moves on "
            "at once.\n0 never waits."},
    {"backoff_base_ms", CFG_SEC_ROUTER, CFG_INT, .min = 0, .max = INT_MAX,
     IN_CFG(backoff_base_ms), OVERRIDE(backoff_base_ms), .def = "250",
     .doc = "Retry n waits uniform(0, min(backoff_max_ms, "
            "backoff_base_ms\\(mu2^n)) ms.\nAt most backoff_max_ms."},
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
    {"stream_ping_ms", CFG_SEC_ROUTER, CFG_INT, .min = 0, .max = INT_MAX,
     IN_CFG(stream_ping_ms), .def = "10000",
     .doc = "A stream that has sent the client nothing for this long gets "
            "a keep-alive, so that proxies and clients do not take it for "
            "dead: a ping event on a Messages stream (never before its "
            "message_start), an SSE comment line on Chat Completions and "
            "Responses streams.\n0: none."},
    {"allowed_fails", CFG_SEC_ROUTER, CFG_INT, .min = 0, .max = INT_MAX,
     IN_CFG(allowed_fails), .def = "3",
     .doc = "A deployment with more failures than this within a minute "
            "cools down; a success after the cooldown has lapsed clears "
            "the count."},
    {"cooldown_s", CFG_SEC_ROUTER, CFG_INT, .min = 0, .max = INT_MAX,
     IN_CFG(cooldown_s), .def = "30",
     .doc = "How long a cooled-down deployment is skipped; a cooldown "
            "started by a reply with\n.Ql retry-after\nlasts that long "
            "instead."},
    {"circuit_failure_threshold", CFG_SEC_ROUTER, CFG_INT, .min = 1,
     .max = INT_MAX, IN_CFG(circuit_failure_threshold), .def = "5",
     .doc = "Consecutive failures that open a deployment's circuit."},
    {"circuit_recovery_s", CFG_SEC_ROUTER, CFG_INT, .min = 1, .max = INT_MAX,
     IN_CFG(circuit_recovery_s), .def = "30",
     .doc = "An open circuit lets one request through as the probe after "
            "this wait; a success closes it, a failure re-opens it with the "
            "wait doubled up to circuit_max_s and starts no cooldown.\n"
            "At most circuit_max_s."},
    {"circuit_max_s", CFG_SEC_ROUTER, CFG_INT, .min = 1, .max = INT_MAX,
     IN_CFG(circuit_max_s), .def = "30",
     .doc = "Longest wait for a probe of an open circuit.\nUnset, it is "
            "circuit_recovery_s: the wait does not grow, so a deployment "
            "that recovers takes traffic again within about "
            "circuit_recovery_s."},
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
    {"max_response_bytes", CFG_SEC_ROUTER, CFG_INT, .min = 4096, .max = INT_MAX,
     IN_CFG(max_response_bytes), .def = "67108864",
     .doc = "Largest upstream reply (status line, headers and body, streams "
            "included); a larger one fails the attempt like a transport "
            "error, so the next candidate is tried.\nThe default is 64 "
            "MiB."},
    {"max_event_bytes", CFG_SEC_ROUTER, CFG_INT, .min = 1024, .max = INT_MAX,
     IN_CFG(max_event_bytes), .def = "8388608",
     .doc = "Largest single event of an upstream stream (its data lines "
            "together); an event that grows past it fails the attempt.\n"
            "The default is 8 MiB."},

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
    {"region", CFG_SEC_DEPLOY, CFG_STRING, IN_DEPLOY(region), .def = "",
     .doc = "Where the deployment runs, for requests and\n.Ic routes\nthat "
            "require a region (see\n.Sx ROUTING ) ;\nempty: none, so such "
            "requests never reach it.\nFor\n.Cm bedrock\nit is the AWS "
            "region (for example\n.Qq us-east-1 ) ,\nwhich names the "
            "default\n.Ic base_url\nand goes into every signature; "
            "required there."},
    OTHER("pattern", CFG_SEC_DEPLOY),
    OTHER("aws_access_key_id", CFG_SEC_DEPLOY),
    OTHER("aws_secret_access_key", CFG_SEC_DEPLOY),
    OTHER("aws_session_token", CFG_SEC_DEPLOY),
    {"project", CFG_SEC_DEPLOY, CFG_STRING, IN_DEPLOY(project), .def = "",
     .doc = "Vertex: the Google Cloud project; empty: the\n.Ql project_id\n"
            "of\n.Ic credentials_file ."},
    {"location", CFG_SEC_DEPLOY, CFG_STRING, IN_DEPLOY(location),
     .def = "global",
     .doc = "Vertex: the region (for example\n.Qq us-east5 ) ,\n"
            ".Qq global ,\nor the multi-region\n.Qq us\nor\n.Qq eu ,\n"
            "which names the default\n.Ic base_url ."},
    {"credentials_file", CFG_SEC_DEPLOY, CFG_PATH, IN_DEPLOY(credentials_file),
     .def = "",
     .doc = "Vertex: a Google service-account key file (JSON), read when "
            "the configuration is loaded.\nEach worker exchanges a signed "
            "RS256 JWT at its\n.Ql token_uri\nfor an access token, "
            "shares it between the deployments of that account, and "
            "refreshes it in the background before it expires; requests "
            "that arrive with no valid token wait for the one exchange in "
            "flight.\nA failed exchange fails the attempt as an\n.Cm auth\n"
            "error (transient when the token endpoint is down), and the "
            "key is never logged.\nWithout it,\n.Ic api_key\nis sent as "
            "a ready-made access token."},
    OTHER("prefill", CFG_SEC_DEPLOY),
    OTHER("system_prompt_append", CFG_SEC_DEPLOY),
    OTHER("headers", CFG_SEC_DEPLOY),
    OTHER("params", CFG_SEC_DEPLOY),
    OTHER("drop_params", CFG_SEC_DEPLOY),
    OTHER("thinking_budgets", CFG_SEC_DEPLOY),

    OTHER("name", CFG_SEC_GROUP),
    {"strategy", CFG_SEC_GROUP, CFG_ENUM, IN_GROUP(strategy), .def = NULL,
     .names = strategy_names, .parse = cfg_strategy_parse,
     .doc = "As in the router."},
    {"stream_resume", CFG_SEC_GROUP, CFG_ENUM, IN_GROUP(stream_resume),
     .def = "off", .names = resume_names,
     .doc = ".Cm continue\nresumes a stream cut, stalled or failed after its "
            "first bytes on another deployment (see\n.Ic prefill ) .\nThe "
            "start of the continuation is held until it is clear whether it "
            "repeats text the client already has: a restart of the answer "
            "or a repeat of its end is dropped; a repeat with changes ends "
            "the stream with its error event, as does having no candidate "
            "left."},
    {"hedge_after_ms", CFG_SEC_GROUP, CFG_INT, .min = 0, .max = INT_MAX,
     IN_GROUP(hedge_after_ms), .def = "0",
     .doc = "Start a second attempt on the next deployment after this many "
            "ms without an answer; 0: off."},
    {"hedge", CFG_SEC_GROUP, CFG_ENUM, IN_GROUP(hedge_p95), .def = "off",
     .names = hedge_names,
     .doc = ".Cm p95\nhedges after the group's observed p95 instead; not "
            "with\n.Ic hedge_after_ms ."},
    {"affinity", CFG_SEC_GROUP, CFG_ENUM, IN_GROUP(affinity), .def = "off",
     .names = affinity_names,
     .doc = ".Cm session\nkeeps each session on one deployment (rendezvous "
            "hashing over the members that can take it), so the "
            "provider's prompt cache stays warm; it moves only when that "
            "deployment cannot take it (see\n.Sx ROUTING ) ."},
    {"tie_break", CFG_SEC_GROUP, CFG_ENUM, IN_GROUP(tie_break), .def = NULL,
     .names = tie_names, .doc = "As in the router."},

    OTHER("name", CFG_SEC_CLIENT),
    OTHER("uid", CFG_SEC_CLIENT),
    OTHER("gid", CFG_SEC_CLIENT),
    OTHER("key_sha256", CFG_SEC_CLIENT),
    OTHER("groups", CFG_SEC_CLIENT),
    {"rpm", CFG_SEC_CLIENT, CFG_LONG, .min = 0, .max = LONG_MAX, IN_CLIENT(rpm),
     .def = "0",
     .doc = "Requests per minute the client may make (a wall-clock minute, "
            "over all workers); more are answered 429 with\n"
            ".Ql Retry-After\nuntil the next minute.\n0: unlimited."},
    {"tpm", CFG_SEC_CLIENT, CFG_LONG, .min = 0, .max = LONG_MAX, IN_CLIENT(tpm),
     .def = "0",
     .doc = "Tokens per minute (prompt and completion, as the upstreams "
            "report them); once the minute's tokens reach it, requests are "
            "answered 429 until the next minute.\n0: unlimited."},
    {"max_concurrent", CFG_SEC_CLIENT, CFG_INT, .min = 0, .max = INT_MAX,
     IN_CLIENT(max_concurrent), .def = "0",
     .doc = "Requests of the client in flight at once, over all workers; "
            "one more is answered 429.\n0: unlimited."},
    {"priority", CFG_SEC_CLIENT, CFG_ENUM, IN_CLIENT(priority), .def = "normal",
     .names = prio_names,
     .doc = "Its requests' class when capacity is short (every candidate "
            "cooling down or at its rate limit):\n.Cm high\nrequests "
            "wait and are served first,\n.Cm normal\nones wait behind "
            "them, and\n.Cm low\nones are shed at once with 429 and\n"
            ".Ql Retry-After .\nA rule of\n.Ic routes\nmay set a "
            "request's class instead."},
    {"daily_budget_usd", CFG_SEC_CLIENT, CFG_DOUBLE, .min = 0, .max = 999999,
     IN_CLIENT(daily_budget_usd), .def = "0",
     .doc = "US dollars the client may spend per UTC day, priced by\n"
            ".Ic prices ;\nonce spent, its requests are answered 429 "
            "with the reset time in the message and\n.Ql Retry-After .\n"
            "0: no budget."},
    {"monthly_budget_usd", CFG_SEC_CLIENT, CFG_DOUBLE, .min = 0, .max = 999999,
     IN_CLIENT(monthly_budget_usd), .def = "0",
     .doc = "The same per UTC calendar month.\n0: no budget."},
    {"region", CFG_SEC_CLIENT, CFG_STRING, IN_CLIENT(region), .def = "",
     .doc = "A region every request of the client requires (after a "
            "rule's, before the\n.Ql x-llmfd-region\nheader; see\n"
            ".Sx ROUTING ) ;\nempty: none."},
    {"redis", CFG_SEC_FLEET, CFG_STRING, IN_CFG(fleet_redis),
     .def = "127.0.0.1:6379",
     .doc = "The Redis server the fleet shares,\n.Qq address:port\nwith a "
            "numeric IPv4 address,\n.Qq localhost\nor\n.Qq [IPv6] ,\nor "
            "the absolute path of its Unix socket.\nOnly the master talks "
            "to it; a worker never waits for it."},
    {"key_prefix", CFG_SEC_FLEET, CFG_STRING, IN_CFG(fleet_key_prefix),
     .def = "llmfd:",
     .doc = "Prefix of every key llmfd writes; the hosts that share a Redis "
            "and a prefix form one fleet."},
    {"password", CFG_SEC_FLEET, CFG_STRING, IN_CFG(fleet_password), .def = "",
     .doc = "Sent with AUTH after each connect; empty: none.\nWrite\n"
            ".Qq $VAR\nto read it from the environment; it is never "
            "logged or shown."},
    {"sync_ms", CFG_SEC_FLEET, CFG_INT, .min = 10, .max = 10000,
     IN_CFG(fleet_sync_ms), .def = "100",
     .doc = "How often the master merges the fleet's state into the table "
            "and tops up this host's rate grants.\nLocal cooldowns, "
            "circuit changes and probes are published at once; another "
            "host honours them within about two periods."},
    {"host", CFG_SEC_FLEET, CFG_STRING, IN_CFG(fleet_host), .def = "",
     .doc = "This host's name in the fleet (A-Z a-z 0-9 . _ : -), as\n"
            ".Nm llmfctl Ic status --fleet\nlists it; it must differ from "
            "every other host's.\nEmpty: the host name and the master's "
            "pid."},
    {.name = NULL},
};

/* Group id of a group name or number, or -1 if there is no such group. */
int
cfg_group_id(const char *name)
{
	struct group *gr;
	char *end;
	long n = strtol(name, &end, 10);

	if (*name != '\0' && *end == '\0' && n >= 0 && n < INT_MAX)
		return (int)n;
	return (gr = getgrnam(name)) != NULL ? (int)gr->gr_gid : -1;
}

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

/* Split "host:port" or "[IPv6]:port" into host ("localhost" read as
 * 127.0.0.1), port and whether the host was bracketed. 0; -1 when v is
 * not host:port; -2 when the port is not 1..65535. */
static int
split_host_port(const char *v, char *host, size_t hostsz, long *port,
                int *bracketed)
{
	const char *colon, *h = v;
	char *end;
	size_t n;

	if (*v == '[') {
		if ((colon = strstr(v, "]:")) == NULL)
			return -1;
		h = v + 1;
		n = (size_t)(colon - h);
		colon++;
	} else {
		if ((colon = strrchr(v, ':')) == NULL)
			return -1;
		n = (size_t)(colon - v);
	}
	if (n == 0 || n >= hostsz)
		return -1;
	memcpy(host, h, n);
	host[n] = '\0';
	errno = 0;
	*port = strtol(colon + 1, &end, 10);
	if (!isdigit((unsigned char)colon[1]) || *end != '\0' || *port < 1 ||
	    *port > 65535 || errno != 0)
		return -2;
	if (strcmp(host, "localhost") == 0)
		snprintf(host, hostsz, "127.0.0.1");
	*bracketed = h != v;
	return 0;
}

/* Parse "[::1]:port", "localhost:port" or "127.x.y.z:port" into the cfg. */
static int
parse_tcp(struct loader *ld, const config_setting_t *s)
{
	struct cfg *cfg = ld->cfg;
	char host[64];
	long port;
	struct in_addr a4;
	struct in6_addr a6;
	int v6, rc = split_host_port(cfg->tcp, host, sizeof host, &port, &v6);

	if (rc == -1)
		return set_error(ld, s, "expected \"host:port\"");
	if (rc == -2)
		return set_error(ld, s, "port must be 1..65535");
	if (!(!v6 && inet_pton(AF_INET, host, &a4) == 1 &&
	      (ntohl(a4.s_addr) >> 24) == 127) &&
	    !(v6 && inet_pton(AF_INET6, host, &a6) == 1 &&
	      IN6_IS_ADDR_LOOPBACK(&a6)))
		return set_error(ld, s,
		                 "host must be a loopback address "
		                 "(127.0.0.0/8, localhost or [::1])");
	snprintf(cfg->tcp_host, sizeof cfg->tcp_host, "%s", host);
	cfg->tcp_port = (int)port;
	return 0;
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
	if ((s = config_setting_get_member(g, "listen_group")) != NULL &&
	    cfg->listen_group[0] != '\0' &&
	    cfg_group_id(cfg->listen_group) == -1)
		return set_error(ld, s, "no such group");
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

	/* unset, the open window does not grow: probes keep pace with a
	 * recovery */
	if (config_setting_get_member(g, "circuit_max_s") == NULL)
		cfg->circuit_max_s = cfg->circuit_recovery_s;
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

/* router.retry_on: a list of failure kinds, into RETRY_* bits. */
static int
get_retry_on(struct loader *ld, const config_setting_t *g, int *out)
{
	static const struct {
		const char *name;
		int bit;
	} kinds[] = {{"5xx", RETRY_5XX},
	             {"reset", RETRY_RESET},
	             {"timeout", RETRY_TIMEOUT},
	             {"429", RETRY_429}};
	config_setting_t *s = config_setting_get_member(g, "retry_on"), *e;
	const char *v;
	size_t k;

	if (s == NULL)
		return 0;
	if (config_setting_type(s) != CONFIG_TYPE_ARRAY &&
	    config_setting_type(s) != CONFIG_TYPE_LIST)
		return set_error(ld, s,
		                 "expected a list such as [ \"5xx\", "
		                 "\"reset\" ]");
	*out = 0;
	for (int i = 0; i < config_setting_length(s); i++) {
		e = config_setting_get_elem(s, (unsigned)i);
		v = config_setting_type(e) == CONFIG_TYPE_STRING
		        ? config_setting_get_string(e)
		        : "";
		for (k = 0; k < sizeof kinds / sizeof kinds[0]; k++)
			if (strcmp(v, kinds[k].name) == 0)
				break;
		if (k == sizeof kinds / sizeof kinds[0])
			return set_error(ld, s,
			                 "unknown failure kind '%s' (use 5xx, "
			                 "reset, timeout or 429)",
			                 v);
		*out |= kinds[k].bit;
	}
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
	    read_section(ld, g, CFG_SEC_ROUTER, ld->cfg) == -1 ||
	    get_retry_on(ld, g, &ld->cfg->retry_on) == -1)
		return -1;
	return router_check(ld, g);
}

/* fleet.redis: "/unix/path", or "host:port" with a numeric IPv4 address,
 * "localhost" or "[IPv6]" (no name lookup: the master must not block on
 * DNS). */
static int
fleet_addr(struct loader *ld, const config_setting_t *s)
{
	struct cfg *cfg = ld->cfg;
	const char *v = cfg->fleet_redis;
	char host[64];
	struct in_addr a4;
	struct in6_addr a6;
	long port;
	int v6, rc;

	if (v[0] == '/') {
		cfg->fleet_redis_host[0] = '\0';
		cfg->fleet_redis_port = 0;
		return 0;
	}
	if ((rc = split_host_port(v, host, sizeof host, &port, &v6)) == -1)
		return set_error(ld, s,
		                 "expected \"address:port\" or the path of a "
		                 "Unix socket");
	if (rc == -2)
		return set_error(ld, s, "port must be 1..65535");
	if (!(!v6 && inet_pton(AF_INET, host, &a4) == 1) &&
	    !(v6 && inet_pton(AF_INET6, host, &a6) == 1))
		return set_error(ld, s,
		                 "expected a numeric address (a.b.c.d, "
		                 "localhost or [IPv6]), not a host name");
	snprintf(cfg->fleet_redis_host, sizeof cfg->fleet_redis_host, "%s",
	         host);
	cfg->fleet_redis_port = (int)port;
	return 0;
}

/* Whether s is made of the characters allowed in fleet.host. */
static int
fleet_valid_id(const char *s)
{
	return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	                 "0123456789._:-") == strlen(s);
}

/* The fleet section (optional; its presence turns the fleet on). */
static int
parse_fleet(struct loader *ld, const config_setting_t *g)
{
	struct cfg *cfg = ld->cfg;
	config_setting_t *s;

	ld_context(ld, ".", "fleet");
	if (g == NULL)
		return 0;
	cfg->fleet = 1;
	if (check_known(ld, g, CFG_SEC_FLEET, NULL, "fleet") == -1 ||
	    read_section(ld, g, CFG_SEC_FLEET, cfg) == -1)
		return -1;
	s = config_setting_get_member(g, "redis");
	if (fleet_addr(ld, s ? s : g) == -1)
		return -1;
	if ((s = config_setting_get_member(g, "key_prefix")) != NULL &&
	    (cfg->fleet_key_prefix[0] == '\0' ||
	     strpbrk(cfg->fleet_key_prefix, " \t\r\n") != NULL))
		return set_error(ld, s, "must be non-empty, without spaces");
	if ((s = config_setting_get_member(g, "host")) != NULL &&
	    !fleet_valid_id(cfg->fleet_host))
		return set_error(ld, s,
		                 "invalid host name (use A-Z a-z 0-9 . "
		                 "_ : -)");
	return 0;
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

/* The Host header value for d; see cfg.h. */
void
cfg_host_header(const struct deploy_cfg *d, char *out, size_t size)
{
	if ((d->tls && d->port == 443) || (!d->tls && d->port == 80))
		snprintf(out, size, "%s", d->host);
	else if (strchr(d->host, ':'))
		snprintf(out, size, "[%s]:%u", d->host, d->port);
	else
		snprintf(out, size, "%s:%u", d->host, d->port);
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

/* Default base URL of deployment d into out; -1 if its provider has
 * none (azure). Bedrock's follows its region, Vertex's its location. */
static int
default_base_url(const struct deploy_cfg *d, char *out, size_t size)
{
	switch (d->provider) {
	case PROV_OPENAI:
		return snprintf(out, size, "https://api.openai.com/v1"), 0;
	case PROV_ANTHROPIC:
		return snprintf(out, size, "https://api.anthropic.com"), 0;
	case PROV_GEMINI:
		return snprintf(out, size,
		                "https://generativelanguage.googleapis.com"),
		       0;
	case PROV_BEDROCK:
		return snprintf(out, size,
		                "https://bedrock-runtime.%s.amazonaws.com",
		                d->region),
		       0;
	case PROV_VERTEX:
		if (strcmp(d->location, "global") == 0)
			snprintf(out, size,
			         "https://aiplatform.googleapis.com/v1");
		else if (strcmp(d->location, "us") == 0 ||
		         strcmp(d->location, "eu") == 0)
			snprintf(out, size,
			         "https://aiplatform.%s.rep.googleapis.com/v1",
			         d->location);
		else
			snprintf(out, size,
			         "https://%s-aiplatform.googleapis.com/v1",
			         d->location);
		return 0;
	default:
		return -1;
	}
}

/* Deployment base_url, split up. */
static int
deploy_url(struct loader *ld, const config_setting_t *s, struct deploy_cfg *d)
{
	config_setting_t *m;
	const char *why;
	int r;

	r = get_strbuf(ld, s, "base_url", d->base_url, sizeof d->base_url);
	if (r == -1)
		return -1;
	m = config_setting_get_member(s, "base_url");
	if (r == 0 &&
	    default_base_url(d, d->base_url, sizeof d->base_url) == -1)
		return ld_error(ld, s,
		                "deployment '%s': base_url is "
		                "required for provider %s",
		                d->name, cfg_provider_name(d->provider));
	if (cfg_url_split(d->base_url, &d->tls, d->host, sizeof d->host,
	                  &d->port, d->path, sizeof d->path, &why) == -1)
		return set_error(ld, m, "%s", why);
	return 0;
}

/* Deployment pattern: the model names it serves, with one `*` that stands
 * for the model sent upstream. */
static int
deploy_pattern(struct loader *ld, const config_setting_t *s,
               struct deploy_cfg *d)
{
	const char *p = d->pattern;
	int r = get_strbuf(ld, s, "pattern", d->pattern, sizeof d->pattern);

	if (r != 1)
		return r;
	if (strchr(p, '*') == NULL || strchr(p, '*') != strrchr(p, '*'))
		return set_error(
		    ld, config_setting_get_member(s, "pattern"),
		    "must contain exactly one '*' (\"anthropic/*\")");
	for (; *p != '\0'; p++)
		if ((unsigned char)*p <= 0x20 || *p == 0x7f)
			return set_error(
			    ld, config_setting_get_member(s, "pattern"),
			    "must not contain spaces or control characters");
	return 0;
}

/* Deployment model, azure_deployment, base_url, api_version (the provider
 * is read). */
static int
deploy_provider(struct loader *ld, const config_setting_t *s,
                struct deploy_cfg *d)
{
	int r;

	if (deploy_pattern(ld, s, d) == -1 ||
	    (r = get_strbuf(ld, s, "model", d->model, sizeof d->model)) == -1)
		return -1;
	if (strchr(d->model, '*') != NULL &&
	    (d->pattern[0] == '\0' ||
	     strchr(d->model, '*') != strrchr(d->model, '*')))
		return set_error(ld, config_setting_get_member(s, "model"),
		                 "a '*' (at most one) needs a pattern");
	if ((r == 0 || d->model[0] == '\0') && d->pattern[0] != '\0')
		snprintf(d->model, sizeof d->model, "*");
	else if (r == 0 || d->model[0] == '\0') {
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

/* Secret string member name of s (a literal or "$VAR") into dst if
 * present; var gets the variable's name ("" for a literal) when not NULL.
 * The value never reaches a message. */
static int
get_secret(struct loader *ld, const config_setting_t *s, const char *name,
           char *dst, size_t size, char *var, size_t varsz)
{
	config_setting_t *m = config_setting_get_member(s, name);
	const char *v, *raw;

	if (m == NULL)
		return 0;
	if (config_setting_type(m) != CONFIG_TYPE_STRING)
		return set_error(ld, m, "expected a string");
	raw = config_setting_get_string(m);
	if (raw[0] == '$' && raw[1] != '$') {
		if (!valid_var(raw + 1))
			return set_error(ld, m, "invalid variable name");
		if (var != NULL && strlen(raw + 1) >= varsz)
			return set_error(ld, m, "variable name too long");
		if (var != NULL)
			snprintf(var, varsz, "%s", raw + 1);
	}
	if (expand(ld, m, name, raw, &v) == -1)
		return -1;
	if (strlen(v) >= size)
		return set_error(ld, m, "value too long (at most %zu bytes)",
		                 size - 1);
	if (strpbrk(v, "\r\n") != NULL)
		return set_error(ld, m, "value contains a line break");
	memcpy(dst, v, strlen(v) + 1);
	return 0;
}

/* Deployment api_key and the AWS credentials: literals or "$VAR". */
static int
deploy_key(struct loader *ld, const config_setting_t *s, struct deploy_cfg *d)
{
	if (get_secret(ld, s, "api_key", d->api_key, sizeof d->api_key,
	               d->api_key_var, sizeof d->api_key_var) == -1 ||
	    get_secret(ld, s, "aws_access_key_id", d->aws_access_key_id,
	               sizeof d->aws_access_key_id, NULL, 0) == -1 ||
	    get_secret(ld, s, "aws_secret_access_key", d->aws_secret_access_key,
	               sizeof d->aws_secret_access_key, NULL, 0) == -1 ||
	    get_secret(ld, s, "aws_session_token", d->aws_session_token,
	               sizeof d->aws_session_token, NULL, 0) == -1)
		return -1;
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

/* Deployment ca_file, prefill and system_prompt_append. */
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
	d->prefill = -1;
	if (get_bool(ld, s, "prefill", &d->prefill) == -1 ||
	    (r = get_str(ld, s, "system_prompt_append", &v, &m)) == -1)
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

/* Whether a header's value is a secret: it came from the environment, or
 * its name says credential (Authorization, x-api-key, X-Auth-Token, ...). */
static int
header_secret(const char *name, size_t nlen, int from_env)
{
	static const char *const words[] = {"auth",      "key",        "token",
	                                    "secret",    "passw",      "cookie",
	                                    "signature", "credential", NULL};
	char low[CFG_NAME_MAX];

	if (from_env)
		return 1;
	for (size_t i = 0; i < nlen && i < sizeof low - 1; i++)
		low[i] = (char)tolower((unsigned char)name[i]);
	low[nlen < sizeof low - 1 ? nlen : sizeof low - 1] = '\0';
	for (int i = 0; words[i] != NULL; i++)
		if (strstr(low, words[i]) != NULL)
			return 1;
	return 0;
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
	const char *raw;
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
	raw = value;
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
	h->secret = header_secret(name, nlen, value != raw && raw[1] != '$');
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

static int get_str_list(struct loader *, const config_setting_t *, const char *,
                        size_t, char **, int *);

/* Deployment drop_params: request fields never sent to this deployment.
 * Fields the request cannot do without are refused. */
static int
deploy_drop_params(struct loader *ld, const config_setting_t *s,
                   struct deploy_cfg *d)
{
	static const char *const reserved[] = {"model", "messages", "input",
	                                       "stream", NULL};
	config_setting_t *m = config_setting_get_member(s, "drop_params");

	d->ndrop_params = -1;
	if (m == NULL)
		return 0;
	if (get_str_list(ld, s, "drop_params", sizeof *d->drop_params,
	                 (char **)&d->drop_params, &d->ndrop_params) == -1)
		return -1;
	if (d->ndrop_params > CFG_MAX_DROP)
		return set_error(ld, m, "at most %d fields", CFG_MAX_DROP);
	for (int i = 0; i < d->ndrop_params; i++) {
		if (d->drop_params[i][0] == '\0')
			return set_error(ld, m, "an empty field name");
		for (int k = 0; reserved[k] != NULL; k++)
			if (strcmp(d->drop_params[i], reserved[k]) == 0)
				return set_error(ld, m,
				                 "'%s' cannot be dropped",
				                 reserved[k]);
	}
	return 0;
}

/* Deployment thinking_budgets: [low, medium, high] tokens, or [ ]. */
static int
deploy_thinking(struct loader *ld, const config_setting_t *s,
                struct deploy_cfg *d)
{
	config_setting_t *m = config_setting_get_member(s, "thinking_budgets");
	config_setting_t *e;
	int n;

	d->nthink = -1;
	if (m == NULL)
		return 0;
	if (config_setting_type(m) != CONFIG_TYPE_ARRAY &&
	    config_setting_type(m) != CONFIG_TYPE_LIST)
		return set_error(ld, m,
		                 "expected [ low, medium, high ] token "
		                 "budgets, or [ ]");
	if ((n = config_setting_length(m)) != 0 && n != 3)
		return set_error(ld, m,
		                 "expected 3 budgets (low, medium, high), "
		                 "or none");
	for (int i = 0; i < n; i++) {
		e = config_setting_get_elem(m, (unsigned)i);
		if (config_setting_type(e) != CONFIG_TYPE_INT &&
		    config_setting_type(e) != CONFIG_TYPE_INT64)
			return set_error(ld, m, "expected integers");
		d->think_budget[i] = (long)config_setting_get_int64(e);
		if (d->think_budget[i] != 0 &&
		    (d->think_budget[i] < 1024 || d->think_budget[i] > 1000000))
			return set_error(ld, m,
			                 "a budget is 0 (no thinking) or "
			                 "1024-1000000 tokens");
	}
	d->nthink = n;
	return 0;
}

/* Whether s is a non-empty run of [a-z0-9-] (a region or location that
 * goes into a host name). */
static int
valid_region(const char *s)
{
	return *s != '\0' &&
	       strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789-") == strlen(s);
}

/* Bedrock's region and Vertex's location, which name the default host. */
static int
deploy_cloud_names(struct loader *ld, const config_setting_t *s,
                   const struct deploy_cfg *d)
{
	config_setting_t *m;

	if (d->provider == PROV_BEDROCK && !valid_region(d->region)) {
		if ((m = config_setting_get_member(s, "region")) == NULL)
			return ld_error(
			    ld, s,
			    "deployment '%s': region is required for "
			    "provider bedrock",
			    d->name);
		return set_error(ld, m,
		                 "expected a region such as "
		                 "\"us-east-1\"");
	}
	if (d->provider == PROV_VERTEX && !valid_region(d->location))
		return set_error(ld, config_setting_get_member(s, "location"),
		                 "expected a location such as \"us-east5\" "
		                 "or \"global\"");
	return 0;
}

/* Read a whole small file into b; -1 with errno set. */
static int
slurp_small(const char *path, struct buf *b)
{
	char tmp[4096];
	FILE *f = fopen(path, "r");
	size_t n;

	if (f == NULL)
		return -1;
	while ((n = fread(tmp, 1, sizeof tmp, f)) > 0 && b->len < 65536)
		buf_add(b, tmp, n);
	OPENSSL_cleanse(tmp, sizeof tmp);
	fclose(f);
	if (b->len >= 65536 || b->oom) {
		errno = EFBIG;
		return -1;
	}
	buf_cstr(b);
	return 0;
}

/* Copy string member key of the key file's object into dst; the reason
 * it cannot be, or NULL. */
static const char *
sa_field(const struct json *j, const char *key, char *dst, size_t size,
         int required)
{
	int t = json_get(j, 0, key);

	if (t < 0 && !required)
		return NULL;
	if (json_type(j, t) != JSMN_STRING)
		return "a string field is missing";
	if (json_str(j, t, dst, size) < 0 || strlen(dst) + 1 >= size)
		return "a field is too long";
	return NULL;
}

/* Whether PEM text holds an RSA private key OpenSSL can read. */
static int
sa_key_ok(const char *pem)
{
	BIO *bio = BIO_new_mem_buf(pem, -1);
	EVP_PKEY *k =
	    bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
	int ok = k != NULL && EVP_PKEY_base_id(k) == EVP_PKEY_RSA;

	EVP_PKEY_free(k);
	BIO_free(bio);
	ERR_clear_error();
	return ok;
}

/* Take the service account's fields from parsed key file j into d; the
 * reason it cannot be used, or NULL. */
static const char *
sa_take(const struct json *j, struct deploy_cfg *d)
{
	struct buf pem = {0};
	const char *why, *uwhy;
	char host[256], path[CFG_URL_MAX];
	uint16_t port;
	int tls, t = json_get(j, 0, "private_key");

	if (!json_eq(j, json_get(j, 0, "type"), "service_account"))
		return "not a service account key (type is not "
		       "\"service_account\")";
	if ((why = sa_field(j, "client_email", d->sa_email, sizeof d->sa_email,
	                    1)) != NULL ||
	    (why = sa_field(j, "private_key_id", d->sa_key_id,
	                    sizeof d->sa_key_id, 0)) != NULL ||
	    (why = sa_field(j, "token_uri", d->sa_token_uri,
	                    sizeof d->sa_token_uri, 0)) != NULL)
		return why;
	if (d->project[0] == '\0' &&
	    sa_field(j, "project_id", d->project, sizeof d->project, 0))
		return "bad project_id";
	if (d->sa_token_uri[0] == '\0')
		snprintf(d->sa_token_uri, sizeof d->sa_token_uri, "%s",
		         "https://oauth2.googleapis.com/token");
	if (cfg_url_split(d->sa_token_uri, &tls, host, sizeof host, &port, path,
	                  sizeof path, &uwhy) == -1)
		return "token_uri is not an http(s) URL";
	if (json_str_buf(j, t, &pem) <= 0 || pem.oom ||
	    !sa_key_ok(buf_cstr(&pem))) {
		if (pem.data)
			OPENSSL_cleanse(pem.data, pem.len);
		buf_free(&pem);
		return "private_key is not an RSA private key in PEM";
	}
	d->sa_private_key = xstrdup(buf_cstr(&pem));
	OPENSSL_cleanse(pem.data, pem.len);
	buf_free(&pem);
	return NULL;
}

/* Read Vertex's service-account key file (at load, never on a request
 * path); messages name the file, never the key. */
static int
deploy_sa(struct loader *ld, const config_setting_t *s, struct deploy_cfg *d)
{
	config_setting_t *m = config_setting_get_member(s, "credentials_file");
	struct buf b = {0};
	struct json j = {0};
	const char *why = NULL;

	if (slurp_small(d->credentials_file, &b) == -1) {
		set_error(ld, m, "cannot read %s: %s", d->credentials_file,
		          strerror(errno));
		goto out;
	}
	if (json_parse(&j, b.data, b.len) == -1 ||
	    json_type(&j, 0) != JSMN_OBJECT)
		why = "not a JSON object";
	else
		why = sa_take(&j, d);
	if (why != NULL)
		set_error(ld, m, "%s: %s", d->credentials_file, why);
out:
	json_free(&j);
	if (b.data)
		OPENSSL_cleanse(b.data, b.len);
	buf_free(&b);
	return why != NULL || ld->cause != NULL ? -1 : 0;
}

/* The credentials Bedrock and Vertex need: AWS keys (or a Bedrock API
 * key), a service-account file (or a ready access token), a project. */
static int
deploy_cloud_auth(struct loader *ld, const config_setting_t *s,
                  struct deploy_cfg *d)
{
	int aws = d->aws_access_key_id[0] || d->aws_secret_access_key[0];

	if (d->provider == PROV_BEDROCK && aws &&
	    (!d->aws_access_key_id[0] || !d->aws_secret_access_key[0]))
		return ld_error(ld, s,
		                "deployment '%s': aws_access_key_id and "
		                "aws_secret_access_key go together",
		                d->name);
	if (d->provider == PROV_BEDROCK && !aws && !d->api_key[0])
		return ld_error(ld, s,
		                "deployment '%s': provider bedrock needs "
		                "aws_access_key_id and aws_secret_access_key "
		                "(or an api_key)",
		                d->name);
	if (d->provider != PROV_VERTEX)
		return 0;
	if (d->credentials_file[0] && deploy_sa(ld, s, d) == -1)
		return -1;
	if (!d->credentials_file[0] && !d->api_key[0])
		return ld_error(ld, s,
		                "deployment '%s': provider vertex needs a "
		                "credentials_file (or an api_key holding an "
		                "access token)",
		                d->name);
	if (d->project[0] == '\0')
		return ld_error(ld, s,
		                "deployment '%s': provider vertex needs a "
		                "project",
		                d->name);
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
	    deploy_check(ld, s, d) == -1 ||
	    deploy_cloud_names(ld, s, d) == -1 ||
	    deploy_provider(ld, s, d) == -1 || deploy_key(ld, s, d) == -1 ||
	    deploy_cloud_auth(ld, s, d) == -1 || deploy_files(ld, s, d) == -1 ||
	    deploy_headers(ld, s, d) == -1 || deploy_params(ld, s, d) == -1 ||
	    deploy_drop_params(ld, s, d) == -1 ||
	    deploy_thinking(ld, s, d) == -1)
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
		struct group_cfg *g = &cfg->groups[group_index(cfg, d->group)];
		const struct deploy_cfg *first = &cfg->deploy[g->deploy[0]];

		if (strcmp(d->pattern, first->pattern) != 0)
			return ld_error(
			    ld, config_setting_get_elem(list, (unsigned)i),
			    "deployment '%s': pattern \"%s\" differs from "
			    "that of '%s' (\"%s\"), of the same group",
			    d->name, d->pattern, first->name, first->pattern);
		g->pattern = first->pattern[0] ? first->pattern : NULL;
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
	if (!cfg_model_routes(ld->cfg, v) && group_index(ld->cfg, v) != -1)
		return ld_error(
		    ld, m,
		    "%s: to: '%s' serves a pattern; name a model it "
		    "serves",
		    ld->ctx, v);
	if (!cfg_model_routes(ld->cfg, v))
		return ld_error(ld, m, "%s: to: unknown group '%s'", ld->ctx,
		                v);
	if (strlen(v) >= CFG_NAME_MAX)
		return ld_error(ld, m, "%s: to: '%s' is too long", ld->ctx, v);
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

/* ---- prices, aliases, routes ---- */

/* Read number member name of g (>= 0) into *out; 1 if present, 0 if
 * absent, -1 on error. */
static int
get_price(struct loader *ld, const config_setting_t *g, const char *name,
          double *out)
{
	const struct cfg_setting e = {.name = name, .min = 0, .max = 1000000};

	if (config_setting_get_member(g, name) == NULL)
		return 0;
	return get_double(ld, g, &e, out) == -1 ? -1 : 1;
}

/* One element of `prices`. */
static int
parse_price(struct loader *ld, const config_setting_t *s, int idx)
{
	static const char *const keys[] = {"model",
	                                   "input_per_mtok",
	                                   "output_per_mtok",
	                                   "cached_input_per_mtok",
	                                   "cache_write_per_mtok",
	                                   NULL};
	struct price_cfg *p = &ld->cfg->prices[idx];
	int r;

	ld_context(ld, ".", "prices[%d]", idx);
	if (config_setting_type(s) != CONFIG_TYPE_GROUP)
		return ld_error(ld, s, "%s: expected a group { ... }", ld->ctx);
	ld->cfg->nprice = idx + 1;
	if (check_known(ld, s, -1, keys, ld->ctx) == -1 ||
	    (r = get_strbuf(ld, s, "model", p->model, sizeof p->model)) == -1)
		return -1;
	if (r == 0 || p->model[0] == '\0')
		return ld_error(ld, s, "%s: model is required", ld->ctx);
	for (int i = 0; i < idx; i++)
		if (strcmp(ld->cfg->prices[i].model, p->model) == 0)
			return ld_error(
			    ld, s, "prices: duplicate entry for model '%s'",
			    p->model);
	ld_context(ld, ": ", "prices: model '%s'", p->model);
	if ((r = get_price(ld, s, "input_per_mtok", &p->input_per_mtok)) ==
	        -1 ||
	    (r == 0 && ld_error(ld, s, "%s: input_per_mtok is required",
	                        ld->ctx) == -1) ||
	    (r = get_price(ld, s, "output_per_mtok", &p->output_per_mtok)) ==
	        -1 ||
	    (r == 0 &&
	     ld_error(ld, s, "%s: output_per_mtok is required", ld->ctx) == -1))
		return -1;
	p->cached_input_per_mtok = p->input_per_mtok;
	p->cache_write_per_mtok = p->input_per_mtok;
	if (get_price(ld, s, "cached_input_per_mtok",
	              &p->cached_input_per_mtok) == -1 ||
	    get_price(ld, s, "cache_write_per_mtok",
	              &p->cache_write_per_mtok) == -1)
		return -1;
	return 0;
}

/* Whether s is a name clients may send as a model: printable, no spaces,
 * at most CFG_NAME_MAX - 1 bytes. */
static int
valid_model_name(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n >= CFG_NAME_MAX)
		return 0;
	for (; *s != '\0'; s++)
		if ((unsigned char)*s <= 0x20 || *s == 0x7f || *s == '"')
			return 0;
	return 1;
}

/* Whether a model name routes somewhere: a group, a deployment, an alias,
 * a pattern, or "provider/model" of a configured deployment. */
int
cfg_model_routes(const struct cfg *cfg, const char *name)
{
	char cap[128];
	const char *slash = strchr(name, '/');
	char prov[32];
	int k;

	int g = group_index(cfg, name), d = cfg_find_deploy(cfg, name);

	if ((g != -1 && cfg->groups[g].pattern != NULL) ||
	    (d >= 0 && cfg->deploy[d].pattern[0] != '\0'))
		return 0; /* a pattern's group: which model? */
	if (g != -1 || d >= 0 || cfg_find_alias(cfg, name) != NULL ||
	    cfg_find_pattern(cfg, name, cap, sizeof cap) != NULL)
		return 1;
	if (slash == NULL || (size_t)(slash - name) >= sizeof prov)
		return 0;
	snprintf(prov, sizeof prov, "%.*s", (int)(slash - name), name);
	if ((k = cfg_provider_parse(prov)) == -1)
		return 0;
	for (int i = 0; i < cfg->ndeploy; i++)
		if (cfg->deploy[i].provider == k &&
		    strcmp(cfg->deploy[i].model, slash + 1) == 0)
			return 1;
	return 0;
}

/* A rule's model name m (setting s) must route somewhere. */
static int
rule_target(struct loader *ld, const config_setting_t *s, const char *what,
            const char *m)
{
	if (!cfg_model_routes(ld->cfg, m))
		return ld_error(
		    ld, s,
		    "%s: %s: '%s' is not a group, deployment, alias "
		    "or model a pattern serves",
		    ld->ctx, what, m);
	return 0;
}

/* One element of `aliases`. */
static int
parse_alias(struct loader *ld, const config_setting_t *s, int idx)
{
	static const char *const keys[] = {"name", "group", NULL};
	struct cfg *cfg = ld->cfg;
	struct alias_cfg *a = &cfg->aliases[idx];
	int r;

	ld_context(ld, ".", "aliases[%d]", idx);
	if (config_setting_type(s) != CONFIG_TYPE_GROUP)
		return ld_error(ld, s, "%s: expected a group { ... }", ld->ctx);
	cfg->nalias = idx + 1;
	if (check_known(ld, s, -1, keys, ld->ctx) == -1 ||
	    (r = get_strbuf(ld, s, "name", a->name, sizeof a->name)) == -1)
		return -1;
	if (r == 0)
		return ld_error(ld, s, "%s: name is required", ld->ctx);
	if (!valid_model_name(a->name))
		return ld_error(
		    ld, config_setting_get_member(s, "name"),
		    "%s: invalid name (no spaces, at most %d bytes)", ld->ctx,
		    CFG_NAME_MAX - 1);
	if (group_index(cfg, a->name) != -1 ||
	    cfg_find_deploy(cfg, a->name) >= 0)
		return ld_error(ld, config_setting_get_member(s, "name"),
		                "%s: '%s' is already a group or deployment",
		                ld->ctx, a->name);
	for (int i = 0; i < idx; i++)
		if (strcmp(cfg->aliases[i].name, a->name) == 0)
			return ld_error(ld, s, "aliases: duplicate alias '%s'",
			                a->name);
	ld_context(ld, ": ", "alias '%s'", a->name);
	if ((r = get_strbuf(ld, s, "group", a->group, sizeof a->group)) == -1)
		return -1;
	if (r == 0)
		return ld_error(ld, s, "%s: group is required", ld->ctx);
	return rule_target(ld, config_setting_get_member(s, "group"), "group",
	                   a->group);
}

/* Read member name of g as a string or a list of strings into a heap
 * array of n entries of size sz. */
static int
get_str_list(struct loader *ld, const config_setting_t *g, const char *name,
             size_t sz, char **out, int *n)
{
	config_setting_t *s = config_setting_get_member(g, name), *e;
	int cnt, one;

	*n = 0;
	if (s == NULL)
		return 0;
	one = config_setting_type(s) == CONFIG_TYPE_STRING;
	if (!one && config_setting_type(s) != CONFIG_TYPE_ARRAY &&
	    config_setting_type(s) != CONFIG_TYPE_LIST)
		return set_error(ld, s, "expected a string or a list of them");
	cnt = one ? 1 : config_setting_length(s);
	*out = xcalloc(cnt > 0 ? (size_t)cnt : 1, sz);
	for (int i = 0; i < cnt; i++) {
		e = one ? s : config_setting_get_elem(s, (unsigned)i);
		if (config_setting_type(e) != CONFIG_TYPE_STRING)
			return set_error(ld, s, "expected strings");
		if (copy_str(ld, s, config_setting_get_string(e),
		             *out + (size_t)i * sz, sz) == -1)
			return -1;
		*n = i + 1;
	}
	return 0;
}

/* match.metadata: a group of key = "pattern" settings. */
static int
rule_meta(struct loader *ld, const config_setting_t *m, struct rule_cfg *r)
{
	config_setting_t *g = config_setting_get_member(m, "metadata"), *e;
	int n;

	if (g == NULL)
		return 0;
	if (config_setting_type(g) != CONFIG_TYPE_GROUP)
		return set_error(ld, g,
		                 "expected a group { key = \"value\"; }");
	n = config_setting_length(g);
	r->meta = xcalloc(n > 0 ? (size_t)n : 1, sizeof *r->meta);
	for (int i = 0; i < n; i++) {
		e = config_setting_get_elem(g, (unsigned)i);
		if (config_setting_type(e) != CONFIG_TYPE_STRING)
			return set_error(ld, e, "expected a string");
		if (copy_str(ld, e, config_setting_name(e), r->meta[i].key,
		             sizeof r->meta[i].key) == -1 ||
		    copy_str(ld, e, config_setting_get_string(e),
		             r->meta[i].value, sizeof r->meta[i].value) == -1)
			return -1;
		r->nmeta = i + 1;
	}
	return 0;
}

/* match.header: "Name: pattern" strings ("Name" alone: present). */
static int
rule_headers(struct loader *ld, const config_setting_t *m, struct rule_cfg *r)
{
	config_setting_t *s = config_setting_get_member(m, "header");
	char(*h)[320] = NULL;
	const char *c, *v;
	size_t nlen;
	int n, rc;

	rc = get_str_list(ld, m, "header", sizeof *h, (char **)&h, &n);
	if (rc == 0)
		r->header = xcalloc(n > 0 ? (size_t)n : 1, sizeof *r->header);
	for (int i = 0; i < n && rc == 0; i++) {
		c = strchr(h[i], ':');
		nlen = c ? (size_t)(c - h[i]) : strlen(h[i]);
		for (v = c ? c + 1 : "*"; *v == ' ' || *v == '\t'; v++)
			;
		if (!valid_token(h[i], nlen) ||
		    nlen >= sizeof r->header[i].key) {
			rc = set_error(ld, s, "invalid header name in \"%s\"",
			               h[i]);
			break;
		}
		memcpy(r->header[i].key, h[i], nlen);
		r->header[i].key[nlen] = '\0';
		rc = copy_str(ld, s, v, r->header[i].value,
		              sizeof r->header[i].value);
		r->nheader = i + 1;
	}
	free(h);
	return rc;
}

/* match.protocol: names of client protocols. */
static int
rule_protocols(struct loader *ld, const config_setting_t *m, struct rule_cfg *r)
{
	char(*p)[16] = NULL;
	int n, rc, k;

	rc = get_str_list(ld, m, "protocol", sizeof *p, (char **)&p, &n);
	for (int i = 0; i < n && rc == 0; i++) {
		for (k = 0; k < CFG_NPROTO; k++)
			if (strcmp(p[i], protocol_names[k]) == 0)
				break;
		if (k == CFG_NPROTO)
			rc = set_error(
			    ld, config_setting_get_member(m, "protocol"),
			    "unknown protocol '%s' (chat, embeddings, "
			    "messages or responses)",
			    p[i]);
		else
			r->protocols |= 1u << k;
	}
	free(p);
	return rc;
}

/* A rule's match group. */
static int
rule_match(struct loader *ld, const config_setting_t *s, struct rule_cfg *r)
{
	static const char *const keys[] = {
	    "tag", "metadata", "header", "protocol", "model", "client", NULL};
	config_setting_t *m = config_setting_get_member(s, "match"), *c;
	char ctx[sizeof ld->ctx];

	if (m == NULL)
		return 0;
	if (config_setting_type(m) != CONFIG_TYPE_GROUP)
		return set_error(ld, m, "expected a group { ... }");
	snprintf(ctx, sizeof ctx, "%s", ld->ctx);
	ld_context(ld, ".", "%s.match", ctx);
	if (check_known(ld, m, -1, keys, ld->ctx) == -1 ||
	    get_strbuf(ld, m, "tag", r->tag, sizeof r->tag) == -1 ||
	    get_strbuf(ld, m, "model", r->model, sizeof r->model) == -1 ||
	    rule_meta(ld, m, r) == -1 || rule_headers(ld, m, r) == -1 ||
	    rule_protocols(ld, m, r) == -1)
		return -1;
	if (get_strbuf(ld, m, "client", r->client, sizeof r->client) == -1)
		return -1;
	if ((c = config_setting_get_member(m, "client")) != NULL &&
	    cfg_find_client(ld->cfg, r->client) < 0)
		return set_error(ld, c,
		                 "no client named '%s' (see the clients "
		                 "section)",
		                 r->client);
	ld_context(ld, ".", "%s", ctx);
	return 0;
}

/* Whether some deployment is in region want. */
static int
region_known(const struct cfg *cfg, const char *want)
{
	for (int i = 0; i < cfg->ndeploy; i++)
		if (cfg_region_ok(want, cfg->deploy[i].region))
			return 1;
	return 0;
}

/* A rule's actions: group, fallbacks, region. */
static int
rule_actions(struct loader *ld, const config_setting_t *s, struct rule_cfg *r)
{
	config_setting_t *m;
	int rc;

	if ((rc = get_strbuf(ld, s, "group", r->group, sizeof r->group)) ==
	        -1 ||
	    (rc == 1 && rule_target(ld, config_setting_get_member(s, "group"),
	                            "group", r->group) == -1) ||
	    get_str_list(ld, s, "fallbacks", sizeof *r->fallbacks,
	                 (char **)&r->fallbacks, &r->nfallbacks) == -1 ||
	    get_strbuf(ld, s, "region", r->region, sizeof r->region) == -1 ||
	    get_enum(ld, s,
	             &(const struct cfg_setting){.name = "priority",
	                                         .names = prio_names},
	             &r->priority) == -1)
		return -1;
	m = config_setting_get_member(s, "fallbacks");
	for (int i = 0; i < r->nfallbacks; i++)
		if (rule_target(ld, m, "fallbacks", r->fallbacks[i]) == -1)
			return -1;
	m = config_setting_get_member(s, "region");
	if (m != NULL && !region_known(ld->cfg, r->region))
		return ld_error(ld, m, "%s: no deployment is in region '%s'",
		                ld->ctx, r->region);
	if (r->group[0] == '\0' && r->nfallbacks == 0 && r->region[0] == '\0' &&
	    r->priority < 0)
		return ld_error(ld, s,
		                "%s: does nothing (set group, fallbacks, "
		                "region or priority)",
		                ld->ctx);
	return 0;
}

/* One element of `routes`. */
static int
parse_rule(struct loader *ld, const config_setting_t *s, int idx)
{
	static const char *const keys[] = {"match",  "group",    "fallbacks",
	                                   "region", "priority", NULL};
	struct rule_cfg *r = &ld->cfg->rules[idx];

	ld_context(ld, ".", "routes[%d]", idx);
	if (config_setting_type(s) != CONFIG_TYPE_GROUP)
		return ld_error(ld, s, "%s: expected a group { ... }", ld->ctx);
	ld->cfg->nrule = idx + 1;
	r->line = config_setting_source_line(s);
	r->priority = -1;
	if (check_known(ld, s, -1, keys, ld->ctx) == -1 ||
	    rule_match(ld, s, r) == -1)
		return -1;
	return rule_actions(ld, s, r);
}

/* A list section whose elements parse with fn into *v of n elements. */
static int
parse_list(struct loader *ld, const config_setting_t *root, const char *what,
           size_t elsize, void **v,
           int (*fn)(struct loader *, const config_setting_t *, int))
{
	config_setting_t *list;
	int n;

	if (get_section(ld, root, what, CONFIG_TYPE_LIST, &list) == -1)
		return -1;
	if (list == NULL || (n = config_setting_length(list)) == 0)
		return 0;
	*v = xcalloc((size_t)n, elsize);
	for (int i = 0; i < n; i++)
		if (fn(ld, config_setting_get_elem(list, (unsigned)i), i) == -1)
			return -1;
	return 0;
}

/* ---- clients ---- */

/* Decode 64 hex digits into 32 bytes; -1 if v is not that. */
static int
hex_sha256(const char *v, unsigned char out[32])
{
	if (strlen(v) != 64)
		return -1;
	for (int i = 0; i < 32; i++) {
		int hi = buf_hexval(v[2 * i]), lo = buf_hexval(v[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -1;
		out[i] = (unsigned char)(hi << 4 | lo);
	}
	return 0;
}

/* A client's key_sha256: one hash or a list of them (rotation), each 64
 * hex digits. Messages never quote a value. */
static int
client_keys(struct loader *ld, const config_setting_t *s, struct client_cfg *c)
{
	config_setting_t *m = config_setting_get_member(s, "key_sha256"), *e;
	const char *v;
	int n, one;

	if (m == NULL)
		return 0;
	one = config_setting_type(m) == CONFIG_TYPE_STRING;
	if (!one && config_setting_type(m) != CONFIG_TYPE_ARRAY &&
	    config_setting_type(m) != CONFIG_TYPE_LIST)
		return set_error(ld, m,
		                 "expected a SHA-256 hash (64 hex "
		                 "digits) or a list of them");
	n = one ? 1 : config_setting_length(m);
	if (n > CFG_MAX_KEYS)
		return set_error(ld, m, "too many keys (at most %d)",
		                 CFG_MAX_KEYS);
	for (int i = 0; i < n; i++) {
		e = one ? m : config_setting_get_elem(m, (unsigned)i);
		if (config_setting_type(e) != CONFIG_TYPE_STRING ||
		    expand(ld, e, "key_sha256", config_setting_get_string(e),
		           &v) == -1)
			return ld->cause ? -1
			                 : set_error(ld, m,
			                             "expected "
			                             "strings");
		if (hex_sha256(v, c->key_sha256[i]) == -1)
			return set_error(
			    ld, m,
			    "expected the SHA-256 of the key as 64 "
			    "hex digits (printf %%s \"$KEY\" | "
			    "sha256sum)");
		c->nkeys = i + 1;
	}
	return 0;
}

/* uid or gid of a client: a number, or a user / group name looked up at
 * load. *out stays -1 when absent. */
static int
client_id(struct loader *ld, const config_setting_t *s, const char *name,
          long *out)
{
	config_setting_t *m = config_setting_get_member(s, name);
	struct passwd *pw;
	long long v;
	const char *n;
	int gid;

	*out = -1;
	if (m == NULL)
		return 0;
	if (config_setting_type(m) == CONFIG_TYPE_INT ||
	    config_setting_type(m) == CONFIG_TYPE_INT64) {
		v = config_setting_get_int64(m);
		if (v < 0 || v >= (long long)UINT32_MAX)
			return set_error(ld, m, "must be between 0 and %lu",
			                 (unsigned long)UINT32_MAX - 1);
		*out = (long)v;
		return 0;
	}
	if (config_setting_type(m) != CONFIG_TYPE_STRING)
		return set_error(ld, m, "expected a number or a name");
	n = config_setting_get_string(m);
	if (strcmp(name, "uid") == 0) {
		if ((pw = getpwnam(n)) == NULL)
			return set_error(ld, m, "no such user '%s'", n);
		*out = (long)pw->pw_uid;
	} else {
		if ((gid = cfg_group_id(n)) == -1)
			return set_error(ld, m, "no such group '%s'", n);
		*out = gid;
	}
	return 0;
}

/* A client's groups: patterns of the deployment groups it may use; a name
 * without `*` must be a group. */
static int
client_groups(struct loader *ld, const config_setting_t *s,
              struct client_cfg *c)
{
	config_setting_t *m = config_setting_get_member(s, "groups");

	if (get_str_list(ld, s, "groups", sizeof *c->groups,
	                 (char **)&c->groups, &c->ngroups) == -1)
		return -1;
	if (m != NULL && c->ngroups == 0)
		return set_error(ld, m, "must name at least one group");
	for (int i = 0; i < c->ngroups; i++)
		if (strchr(c->groups[i], '*') == NULL &&
		    group_index(ld->cfg, c->groups[i]) == -1)
			return set_error(ld, m, "no group named '%s'",
			                 c->groups[i]);
	return 0;
}

/* Refuse a client whose uid, gid or a key is another's: the first would
 * always win. */
static int
client_unique(struct loader *ld, const config_setting_t *s, int idx)
{
	const struct client_cfg *c = &ld->cfg->clients[idx], *o;

	for (int i = 0; i < idx; i++) {
		o = &ld->cfg->clients[i];
		if (c->uid >= 0 && c->uid == o->uid)
			return ld_error(ld, config_setting_get_member(s, "uid"),
			                "%s: uid %ld is already client '%s''s "
			                "(line %d)",
			                ld->ctx, c->uid, o->name, o->line);
		if (c->gid >= 0 && c->gid == o->gid)
			return ld_error(ld, config_setting_get_member(s, "gid"),
			                "%s: gid %ld is already client '%s''s "
			                "(line %d)",
			                ld->ctx, c->gid, o->name, o->line);
		for (int a = 0; a < c->nkeys; a++)
			for (int b = 0; b < o->nkeys; b++)
				if (memcmp(c->key_sha256[a], o->key_sha256[b],
				           32) == 0)
					return ld_error(
					    ld,
					    config_setting_get_member(
					        s, "key_sha256"),
					    "%s: a key hash is also client "
					    "'%s''s (line %d)",
					    ld->ctx, o->name, o->line);
	}
	return 0;
}

/* Cross-checks of one client: the "default" entry has no identity, a
 * region must exist. */
static int
client_check(struct loader *ld, const config_setting_t *s,
             const struct client_cfg *c)
{
	config_setting_t *m;

	if (strcmp(c->name, CFG_DEFAULT_CLIENT) == 0) {
		if (ld->cfg->default_client == DEFCLIENT_DENY)
			return ld_error(
			    ld, s,
			    "%s: daemon.default_client is \"deny\", "
			    "so this entry would never apply",
			    ld->ctx);
		if (c->uid >= 0 || c->gid >= 0 || c->nkeys > 0)
			return ld_error(
			    ld, s,
			    "%s: takes callers that match no other "
			    "client; it has no uid, gid or key_sha256",
			    ld->ctx);
	} else if (c->uid < 0 && c->gid < 0 && c->nkeys == 0)
		return ld_error(ld, s,
		                "%s: set uid, gid or key_sha256 (nothing would "
		                "identify it)",
		                ld->ctx);
	m = config_setting_get_member(s, "region");
	if (c->region[0] != '\0' && !region_known(ld->cfg, c->region))
		return ld_error(ld, m, "%s: no deployment is in region '%s'",
		                ld->ctx, c->region);
	return 0;
}

/* One element of `clients`. */
static int
parse_client(struct loader *ld, const config_setting_t *s, int idx)
{
	struct client_cfg *c = &ld->cfg->clients[idx];
	config_setting_t *m;
	int r;

	ld_context(ld, ".", "clients[%d]", idx);
	if (config_setting_type(s) != CONFIG_TYPE_GROUP)
		return ld_error(ld, s, "%s: expected a group { ... }", ld->ctx);
	ld->cfg->nclient = idx + 1;
	set_defaults(CFG_SEC_CLIENT, c);
	c->line = config_setting_source_line(s);
	if ((r = get_strbuf(ld, s, "name", c->name, sizeof c->name)) == -1)
		return -1;
	if (r == 0)
		return ld_error(ld, s, "%s: name is required", ld->ctx);
	m = config_setting_get_member(s, "name");
	if (!valid_name(c->name))
		return ld_error(ld, m,
		                "%s: invalid name (use A-Z a-z 0-9 . _ : -, at "
		                "most %d)",
		                ld->ctx, CFG_NAME_MAX - 1);
	for (int i = 0; i < idx; i++)
		if (strcmp(ld->cfg->clients[i].name, c->name) == 0)
			return ld_error(ld, m,
			                "client '%s': duplicate name (first at "
			                "line %d)",
			                c->name, ld->cfg->clients[i].line);
	ld_context(ld, ": ", "client '%s'", c->name);
	if (check_known(ld, s, CFG_SEC_CLIENT, NULL, ld->ctx) == -1 ||
	    read_section(ld, s, CFG_SEC_CLIENT, c) == -1 ||
	    client_id(ld, s, "uid", &c->uid) == -1 ||
	    client_id(ld, s, "gid", &c->gid) == -1 ||
	    client_keys(ld, s, c) == -1 || client_groups(ld, s, c) == -1 ||
	    client_check(ld, s, c) == -1)
		return -1;
	return client_unique(ld, s, idx);
}

/* Whether some client has a key. */
static int
clients_have_keys(const struct cfg *cfg)
{
	for (int i = 0; i < cfg->nclient; i++)
		if (cfg->clients[i].nkeys > 0)
			return 1;
	return 0;
}

/* The clients list, then the implicit "default" client when callers that
 * match none are allowed and no entry configures it. */
static int
parse_clients(struct loader *ld, const config_setting_t *root)
{
	struct cfg *cfg = ld->cfg;
	config_setting_t *list;
	struct client_cfg *d;
	int n = 0;

	if (get_section(ld, root, "clients", CONFIG_TYPE_LIST, &list) == -1)
		return -1;
	if (list != NULL)
		n = config_setting_length(list);
	if (n + 1 > CFG_MAX_CLIENTS)
		return ld_error(ld, list, "clients: too many (at most %d)",
		                CFG_MAX_CLIENTS - 1);
	cfg->clients = xcalloc((size_t)n + 1, sizeof *cfg->clients);
	for (int i = 0; i < n; i++)
		if (parse_client(ld, config_setting_get_elem(list, (unsigned)i),
		                 i) == -1)
			return -1;
	if (cfg->tcp_require_key && !clients_have_keys(cfg))
		return ld_error(
		    ld,
		    config_setting_get_member(
		        config_setting_get_member(root, "daemon"),
		        "tcp_require_key"),
		    "daemon.tcp_require_key: no client has a key_sha256, so "
		    "every TCP request would be refused");
	cfg->def_client = cfg_find_client(cfg, CFG_DEFAULT_CLIENT);
	if (cfg->def_client >= 0 || cfg->default_client == DEFCLIENT_DENY)
		return 0;
	d = &cfg->clients[cfg->nclient];
	set_defaults(CFG_SEC_CLIENT, d);
	snprintf(d->name, sizeof d->name, "%s", CFG_DEFAULT_CLIENT);
	d->uid = d->gid = -1;
	d->implicit = 1;
	cfg->def_client = cfg->nclient++;
	return 0;
}

/* The client called name, or -1. */
int
cfg_find_client(const struct cfg *cfg, const char *name)
{
	for (int i = 0; i < cfg->nclient; i++)
		if (strcmp(cfg->clients[i].name, name) == 0)
			return i;
	return -1;
}

/* Whether client c may use deployment group g. */
int
cfg_client_allows(const struct client_cfg *c, const char *g)
{
	if (c->ngroups == 0)
		return 1;
	for (int i = 0; i < c->ngroups; i++)
		if (cfg_glob(c->groups[i], g))
			return 1;
	return 0;
}

/* Name of a priority class. */
const char *
cfg_prio_name(int p)
{
	return (p >= 0 && p < PRIO__MAX) ? prio_names[p] : "?";
}

/* Each deployment's price, by its upstream model. */
static void
link_prices(struct cfg *cfg)
{
	for (int i = 0; i < cfg->ndeploy; i++) {
		const struct price_cfg *p =
		    cfg_price(cfg, cfg->deploy[i].model);

		cfg->deploy[i].price = p ? (int)(p - cfg->prices) : -1;
	}
}

/* The prices and aliases lists (before the fallbacks, which may name
 * aliases). */
static int
parse_names(struct loader *ld, const config_setting_t *root)
{
	struct cfg *cfg = ld->cfg;

	if (parse_list(ld, root, "prices", sizeof *cfg->prices,
	               (void **)&cfg->prices, parse_price) == -1 ||
	    parse_list(ld, root, "aliases", sizeof *cfg->aliases,
	               (void **)&cfg->aliases, parse_alias) == -1)
		return -1;
	link_prices(cfg);
	return 0;
}

/* Walk the parsed tree into ld->cfg. */
static int
parse_root(struct loader *ld, const config_setting_t *root)
{
	static const char *const keys[] = {"daemon",
	                                   "router",
	                                   "fleet",
	                                   "deployments",
	                                   "groups",
	                                   "fallbacks",
	                                   "context_window_fallbacks",
	                                   "content_policy_fallbacks",
	                                   "prices",
	                                   "aliases",
	                                   "routes",
	                                   "clients",
	                                   NULL};
	config_setting_t *dmn, *router, *deploys, *groups, *fleet;
	struct cfg *cfg = ld->cfg;

	if (check_known(ld, root, -1, keys, NULL) == -1 ||
	    get_section(ld, root, "daemon", CONFIG_TYPE_GROUP, &dmn) ||
	    get_section(ld, root, "router", CONFIG_TYPE_GROUP, &router) ||
	    get_section(ld, root, "deployments", CONFIG_TYPE_LIST, &deploys) ||
	    get_section(ld, root, "groups", CONFIG_TYPE_LIST, &groups) ||
	    get_section(ld, root, "fleet", CONFIG_TYPE_GROUP, &fleet))
		return -1;
	if (parse_daemon(ld, dmn) == -1 || parse_router(ld, router) == -1 ||
	    parse_fleet(ld, fleet) == -1 ||
	    parse_deployments(ld, deploys) == -1 ||
	    build_groups(ld, deploys) == -1 || parse_groups(ld, groups) == -1 ||
	    parse_names(ld, root) == -1 ||
	    parse_fallbacks(ld, root, "fallbacks", &cfg->fallbacks) == -1 ||
	    parse_fallbacks(ld, root, "context_window_fallbacks",
	                    &cfg->cw_fallbacks) == -1 ||
	    parse_fallbacks(ld, root, "content_policy_fallbacks",
	                    &cfg->cp_fallbacks) == -1 ||
	    parse_clients(ld, root) == -1 ||
	    parse_list(ld, root, "routes", sizeof *cfg->rules,
	               (void **)&cfg->rules, parse_rule) == -1)
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
	set_defaults(CFG_SEC_FLEET, ld.cfg);
	ld.cfg->retry_on = RETRY_5XX | RETRY_RESET; /* see cfg_settings[] */
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
		free(d->drop_params);
		if (d->sa_private_key) {
			OPENSSL_cleanse(d->sa_private_key,
			                strlen(d->sa_private_key));
			free(d->sa_private_key);
		}
		OPENSSL_cleanse(d->api_key, sizeof d->api_key);
		OPENSSL_cleanse(d->aws_secret_access_key,
		                sizeof d->aws_secret_access_key);
		OPENSSL_cleanse(d->aws_session_token,
		                sizeof d->aws_session_token);
		OPENSSL_cleanse(d->headers, sizeof d->headers);
	}
	OPENSSL_cleanse(cfg->fleet_password, sizeof cfg->fleet_password);
	free(cfg->deploy);
	for (int i = 0; i < cfg->ngroup; i++)
		free(cfg->groups[i].deploy);
	free(cfg->groups);
	free_fallbacks(&cfg->fallbacks);
	free_fallbacks(&cfg->cw_fallbacks);
	free_fallbacks(&cfg->cp_fallbacks);
	for (int i = 0; i < cfg->nrule; i++) {
		free(cfg->rules[i].meta);
		free(cfg->rules[i].header);
		free(cfg->rules[i].fallbacks);
	}
	free(cfg->rules);
	for (int i = 0; i < cfg->nclient; i++) {
		free(cfg->clients[i].groups);
		OPENSSL_cleanse(cfg->clients[i].key_sha256,
		                sizeof cfg->clients[i].key_sha256);
	}
	free(cfg->clients);
	free(cfg->aliases);
	free(cfg->prices);
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

/* Whether d takes a continuation as an assistant prefill. */
int
cfg_eff_prefill(const struct deploy_cfg *d)
{
	return d->prefill >= 0 ? d->prefill : d->provider == PROV_ANTHROPIC;
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

/* Effective tie-break for group g (NULL: the router's). */
int
cfg_eff_tie_break(const struct cfg *cfg, const struct group_cfg *g)
{
	return (g != NULL && g->tie_break >= 0) ? g->tie_break : cfg->tie_break;
}

/* Name of client protocol i (the worker's ingress ids). */
const char *
cfg_protocol_name(int i)
{
	return (i >= 0 && i < CFG_NPROTO) ? protocol_names[i] : "?";
}

/* The alias called name, or NULL. */
const struct alias_cfg *
cfg_find_alias(const struct cfg *cfg, const char *name)
{
	for (int i = 0; i < cfg->nalias; i++)
		if (strcmp(cfg->aliases[i].name, name) == 0)
			return &cfg->aliases[i];
	return NULL;
}

/* Whether s matches p, each `*` any text (iterative, with one backtrack
 * point: linear in practice). */
int
cfg_glob(const char *p, const char *s)
{
	const char *star = NULL, *mark = NULL;

	while (*s != '\0') {
		if (*p == '*') {
			star = p++;
			mark = s;
		} else if (*p == *s) {
			p++;
			s++;
		} else if (star != NULL) {
			p = star + 1;
			s = ++mark;
		} else
			return 0;
	}
	while (*p == '*')
		p++;
	return *p == '\0';
}

/* Match s against one-star pattern p, the star's text into cap. */
int
cfg_capture(const char *p, const char *s, char *cap, size_t capsz)
{
	const char *star = strchr(p, '*');
	size_t pre, suf, n = strlen(s);

	if (star == NULL)
		return 0;
	pre = (size_t)(star - p);
	suf = strlen(star + 1);
	if (n < pre + suf || strncmp(p, s, pre) != 0 ||
	    strcmp(s + n - suf, star + 1) != 0 || n - pre - suf >= capsz)
		return 0;
	memcpy(cap, s + pre, n - pre - suf);
	cap[n - pre - suf] = '\0';
	return 1;
}

/* The first pattern group that serves model s. */
const struct group_cfg *
cfg_find_pattern(const struct cfg *cfg, const char *s, char *cap, size_t capsz)
{
	for (int i = 0; i < cfg->ngroup; i++)
		if (cfg->groups[i].pattern != NULL &&
		    cfg_capture(cfg->groups[i].pattern, s, cap, capsz) &&
		    cap[0] != '\0')
			return &cfg->groups[i];
	return NULL;
}

/* The price of upstream model `model`: exact, else the first pattern. */
const struct price_cfg *
cfg_price(const struct cfg *cfg, const char *model)
{
	for (int i = 0; i < cfg->nprice; i++)
		if (strcmp(cfg->prices[i].model, model) == 0)
			return &cfg->prices[i];
	for (int i = 0; i < cfg->nprice; i++)
		if (strchr(cfg->prices[i].model, '*') != NULL &&
		    cfg_glob(cfg->prices[i].model, model))
			return &cfg->prices[i];
	return NULL;
}

/* Whether region r satisfies the required region want. */
int
cfg_region_ok(const char *want, const char *r)
{
	size_t n = strlen(want);

	return n > 0 && strncmp(want, r, n) == 0 &&
	       (r[n] == '\0' || r[n] == '-');
}
