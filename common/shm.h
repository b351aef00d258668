/* The health table: one mmap'd file shared by the master, every worker and
 * llmfctl. Fixed-size, pointer-free, versioned records; counters are C11
 * atomics; the config block of a slot is written by the master only, under
 * a per-slot sequence counter that readers retry on. Times are monotonic
 * milliseconds (CLOCK_MONOTONIC is host-wide). */
#ifndef LLMFD_SHM_H
#define LLMFD_SHM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "common/classify.h"

#define SHM_MAGIC       0x544c48444d464c4cULL /* "LLMFDHLT" little-endian */
#define SHM_VERSION     6
#define SHM_NPROTO      8 /* client protocols counted */
#define SHM_NSLOTS      256
#define SHM_NCLIENTS    128  /* client records (issue 17) */
#define SHM_NSPEND      4096 /* spend ledger entries */
#define SHM_NPRIO       3    /* priority classes (enum prio) */
#define SHM_MAX_WORKERS 32
#define SHM_HIST        24 /* bucket k: <= 250us << k; then +Inf */
#define SHM_NEVENTS     256
#define SHM_ERR_MAX     160
#define SHM_FLEET_HOSTS 32 /* hosts listed by llmfctl status --fleet */
#define SHM_FLEET_ID    64

/* slot states */
#define SLOT_FREE    0
#define SLOT_ACTIVE  1
#define SLOT_RETIRED 2 /* removed by reload; freed when in-flight drains */

/* rl_flags: which rate-limit values the upstream reported */
#define SHM_RL_REQ_LEFT  0x1
#define SHM_RL_REQ_LIMIT 0x2
#define SHM_RL_TOK_LEFT  0x4
#define SHM_RL_TOK_LIMIT 0x8

/* admin word (llmfctl) */
#define ADMIN_ACTIVE  0
#define ADMIN_DRAINED 1

/* fleet state (header fleet_state): how workers apply fleet grants */
#define FLEET_OFF  0 /* no fleet section: local limits only */
#define FLEET_DOWN 1 /* Redis unreachable: fair share of each limit */
#define FLEET_UP   2 /* synced: rate grants and the probe token */

/* half-open probe gate (slot fleet_gate), written by the master */
#define FLEET_GATE_OPEN 0 /* probe as on one host (no fleet, or Redis down) */
#define FLEET_GATE_WAIT 1 /* another host may hold the fleet's probe */
#define FLEET_GATE_MINE 2 /* this host holds the fleet's probe token */

/* slot fleet_push bits: llmfctl ... --fleet asks the master to publish */
#define FLEET_PUSH_ADMIN  0x1
#define FLEET_PUSH_WEIGHT 0x2

/* circuit states */
#define CIRCUIT_CLOSED    0
#define CIRCUIT_OPEN      1
#define CIRCUIT_HALF_OPEN 2 /* one probe in flight */

typedef _Atomic uint64_t au64;
typedef _Atomic int64_t ai64;
typedef _Atomic uint32_t au32;
typedef _Atomic int32_t ai32;

struct hist_sh {
	au64 b[SHM_HIST + 1];
	au64 sum_us;
	au64 count;
};

struct slot_sh {
	/* config block: master only, under seq (odd while writing) */
	au32 seq;
	au32 state; /* SLOT_* */
	char name[64];
	char group[64];
	char provider[16];
	char model[96];
	int32_t cfg_weight;
	int32_t cfg_index; /* index in the current config, -1 if retired */
	int64_t rpm, tpm;

	/* llmfctl: single atomic stores */
	ai32 live_weight; /* -1 = use cfg_weight */
	au32 admin;       /* ADMIN_* */

	/* counters: any worker, relaxed */
	au64 requests; /* attempts started */
	au64 successes;
	au64 failures[EC__MAX];
	au64 retries;
	au64 fallbacks_from; /* requests that moved on from here */
	au64 fallbacks_to;   /* requests served here after a fallback */
	au64 skipped;        /* picks skipped (cooling, open, limited) */
	au64 rate_refused;   /* picks refused by an rpm/tpm limit or grant */
	au64 bad_events;     /* malformed stream events skipped */
	au64 tokens_in, tokens_out;
	au32 consec_fail;
	ai32 inflight[SHM_MAX_WORKERS]; /* per worker index */

	/* latency */
	au64 lat_ewma_us;
	au64 ttft_ewma_us;
	struct hist_sh lat;
	struct hist_sh ttft;

	/* cooldown */
	ai64 cooldown_until_ms;
	ai64 fail_win_start_ms;
	au32 fail_win_count;
	au32 cooldowns; /* times entered */

	/* circuit */
	au32 circuit; /* CIRCUIT_* */
	au32 circuit_opens;
	ai64 circuit_until_ms;  /* open until */
	ai64 circuit_window_ms; /* current open window */

	/* rate window (wall-clock minutes) */
	au64 rate_min;
	au64 req_cur, tok_cur, req_prev, tok_prev;

	/* fleet (daemon/fleet.c, the master): rate grants for a wall-clock
	 * minute, two minutes by parity so the next one is granted ahead;
	 * a pair is valid while fleet_cap_min[i] reads the same before and
	 * after the caps */
	au64 fleet_cap_min[2];
	au64 fleet_req_cap[2], fleet_tok_cap[2];
	au64 fleet_req_used, fleet_tok_used; /* fleet-wide, at the last sync */
	au32 fleet_gate;                     /* FLEET_GATE_* */
	au32 fleet_push;                     /* FLEET_PUSH_* (llmfctl) */

	/* session affinity: route.c */
	au64 affinity_hits;  /* sessions served by their own deployment */
	au64 affinity_moves; /* sessions moved away from this deployment */

	/* the upstream's rate-limit headers as last reported (route.c), best
	 * effort: the fields are stored one by one; rl_flags says which came */
	au32 rl_flags;                                   /* SHM_RL_* */
	ai64 rl_req_left, rl_req_limit, rl_req_reset_ms; /* monotonic ms */
	ai64 rl_tok_left, rl_tok_limit, rl_tok_reset_ms;
	au64 rl_req_since; /* attempts started since that report */

	au64 spend_nusd; /* priced answers, nano-USD (restored at start) */

	/* last error: writers take the odd seq by CAS, readers retry */
	au32 err_seq;
	int64_t err_wall_ms;
	int32_t err_status;
	int32_t err_class;
	char err_text[SHM_ERR_MAX];
} __attribute__((aligned(64)));

struct event_sh {
	au64 seq; /* ring position + 1 when complete, 0 while writing */
	int64_t wall_ms;
	int32_t type;
	int32_t slot;
	char text[240];
	char client[64]; /* the client it concerns, "" if none */
	int64_t nusd;    /* an amount it concerns (nano-USD), 0 if none */
} __attribute__((aligned(64)));

/* Why a client's request was refused (client_sh.refused). */
enum client_refusal {
	CREF_FORBIDDEN = 0, /* 403: a group it may not use */
	CREF_RPM,           /* 429: its rpm */
	CREF_TPM,           /* 429: its tpm */
	CREF_CONCURRENT,    /* 429: its max_concurrent */
	CREF_BUDGET,        /* 429: its daily or monthly budget is spent */
	CREF_SHED,          /* 429: shed under a shortage (low priority) */
	CREF__MAX
};
const char *shm_refusal_name(int);

/* One client (issue 17): matched by name across reloads, like slots. */
struct client_sh {
	/* config block: master only, under seq (odd while writing) */
	au32 seq;
	au32 state; /* SLOT_* */
	char name[64];
	char ident[64]; /* how it is recognised: "uid 1001", "key", ... */
	int32_t cfg_index;
	int32_t priority; /* enum prio */
	int32_t max_concurrent;
	int32_t pad;
	int64_t rpm, tpm;
	int64_t daily_nusd, monthly_nusd; /* budgets, 0 = none */

	/* counters: any worker, relaxed */
	au64 requests; /* admitted */
	au64 refused[CREF__MAX];
	au64 tokens_in, tokens_out;
	ai32 inflight[SHM_MAX_WORKERS]; /* per worker column */
	au64 rate_min; /* wall-clock minute of req_cur / tok_cur */
	au64 req_cur, tok_cur, req_prev, tok_prev;
	au64 last_wall_ms; /* last request admitted */

	/* spend, nano-USD: any worker adds; the master restores it at start
	 * from the spend file */
	au64 spend_nusd;  /* over the kept history */
	au64 day;         /* UTC day (since the epoch) of spend_day */
	au64 spend_day;   /* spent that day */
	au64 month;       /* year * 12 + month of spend_month */
	au64 spend_month; /* spent that month */
} __attribute__((aligned(64)));

/* spend_sh states */
#define SPEND_FREE    0
#define SPEND_CLAIMED 1 /* key being written */
#define SPEND_READY   2

/* One row of the spend ledger: what a client spent on a deployment and an
 * upstream model on a UTC day. Workers add to it (claiming a free entry
 * for a new key); the master saves the ledger to the spend file and
 * moves days that can no longer grow out of it. */
struct spend_sh {
	au32 state; /* SPEND_* */
	uint32_t day;
	char client[64];
	char deployment[64];
	char model[96];
	au64 nusd, requests, tokens_in, tokens_out, cached_in;
} __attribute__((aligned(64)));

struct shm_hdr_sh {
	uint64_t magic;
	uint32_t version;
	uint32_t hdr_size;
	uint32_t slot_size;
	uint32_t nslots;
	uint32_t event_size;
	uint32_t nevents;
	au64 generation; /* config generation */
	ai32 master_pid;
	ai32 log_level; /* live log level; llmfctl log-level */
	au64 worker_restarts;
	au64 requests_total;             /* client requests */
	au64 requests_proto[SHM_NPROTO]; /* by client protocol (ingress id) */
	/* retry budget: daemon-wide, per wall-clock minute */
	au64 budget_min;
	au64 budget_req_cur, budget_req_prev;
	au64 budget_retry_cur, budget_retry_prev;
	au64 budget_denied;
	au64 ev_head; /* events written */
	char config_file[256];
	/* clients (issue 17) */
	uint32_t client_size, nclients, spend_size, nspend;
	au64 auth_failures;                       /* 401s */
	ai32 waiting[SHM_MAX_WORKERS][SHM_NPRIO]; /* queued, by class */
	au64 spend_seq;       /* bumped by every spend added */
	au64 ledger_full;     /* spends the ledger had no room for */
	char state_file[256]; /* the spend file, "" if none */

	/* fleet (daemon/fleet.c): written by the master only */
	au32 fleet_state;        /* FLEET_OFF, FLEET_DOWN, FLEET_UP */
	au32 fleet_nhosts;       /* live hosts at the last sync (>= 1) */
	ai64 fleet_sync_wall_ms; /* last completed sync round, 0 never */
	au64 fleet_syncs;        /* completed sync rounds */
	au64 fleet_failures;     /* connection or command failures */
	au64 fleet_rtt_us;       /* round trip of the last sync round */
	au64 fleet_applied;      /* fleet changes applied to this table */
	au32 fleet_seq;          /* odd while the text below is written */
	uint32_t fleet_nlisted;  /* entries of fleet_hosts */
	char fleet_redis[128];
	char fleet_self[SHM_FLEET_ID];
	struct fleet_host_sh {
		char id[SHM_FLEET_ID];
		int64_t seen_wall_ms; /* its last heartbeat */
	} fleet_hosts[SHM_FLEET_HOSTS];
} __attribute__((aligned(64)));

struct shm {
	struct shm_hdr_sh *hdr;
	struct slot_sh *slots;
	struct event_sh *events;
	struct client_sh *clients;
	struct spend_sh *ledger;
	size_t size;
	int fd;
	int writable;
};

size_t shm_layout_size(void);
/* Create (or re-create) the table file with mode 0640. 0 / -1 and *cause. */
int shm_create(struct shm *, const char *path, char **cause);
/* Attach an existing table; refuses wrong magic, version or record size. */
int shm_attach(struct shm *, const char *path, int writable, char **cause);
void shm_detach(struct shm *);

/* Slot lookup by name among active (and retired) slots; -1 if none. */
int shm_find(const struct shm *, const char *name);
/* Copy a slot's config block consistently (seqlock read): 0, or -1 if the
 * slot stayed mid-write past SHM_SEQ_TRIES reads (a writer died there). */
#define SHM_SEQ_TRIES 2000
int shm_read_cfg(const struct slot_sh *, struct slot_sh *out);
/* Master: write a slot's config block. */
void shm_write_cfg_begin(struct slot_sh *);
void shm_write_cfg_end(struct slot_sh *);

/* Histogram helpers. */
int shm_hist_bucket(int64_t us);
int64_t shm_hist_bound_us(int k); /* upper bound of bucket k */
void shm_hist_add(struct hist_sh *, int64_t us);
/* Quantile estimate in us (q in 0..1), 0 with no samples. */
int64_t shm_hist_quantile(const struct hist_sh *, double q);

/* Sum of in-flight over every worker column. */
int32_t shm_inflight(const struct slot_sh *);
/* Live weight (override or configured). */
int32_t shm_weight(const struct slot_sh *);

/* Last error text (best effort: skipped if another writer holds it). */
void shm_set_error(struct slot_sh *, int status, int cls, const char *text);
/* Consistent copy of the last error; 0, or -1 if none. */
int shm_get_error(const struct slot_sh *, char *out, size_t outsz, int *status,
                  int *cls, int64_t *wall_ms);

/* Client record lookup by name among active (and retired) ones; -1. */
int shm_find_client(const struct shm *, const char *name);
/* Consistent copy of a client's config block (seqlock read); 0 or -1. */
int shm_read_client(const struct client_sh *, struct client_sh *out);
void shm_write_client_begin(struct client_sh *);
void shm_write_client_end(struct client_sh *);
/* In-flight requests of a client over every worker column. */
int32_t shm_client_inflight(const struct client_sh *);
/* Queued requests of class prio over every worker column. */
int32_t shm_waiting(const struct shm *, int prio);
/* Hash of a spend key (day, client, deployment, model): FNV-1a. */
uint64_t shm_spend_hash(uint32_t day, const char *client, const char *dep,
                        const char *model);
/* Add to the ledger entry of (day, client, deployment, model), claiming a
 * free one for a new key: 0, or -1 (counted in ledger_full) when there is
 * no room near its hash. Two workers adding a new key at once may claim
 * two entries; readers sum entries of equal keys. */
struct spend_vals {
	uint64_t nusd, requests, tokens_in, tokens_out, cached_in;
};
int shm_spend_add(struct shm *, uint32_t day, const char *client,
                  const char *deployment, const char *model,
                  const struct spend_vals *);

/* Events (issue: observability) */
enum shm_event_type {
	SHM_EV_FALLBACK = 1,
	SHM_EV_COOLDOWN_START,
	SHM_EV_COOLDOWN_END,
	SHM_EV_CIRCUIT_OPEN,
	SHM_EV_CIRCUIT_HALF_OPEN,
	SHM_EV_CIRCUIT_CLOSE,
	SHM_EV_ADMIN,
	SHM_EV_RELOAD,
	SHM_EV_BUDGET, /* a client's daily or monthly budget was spent */
	SHM_EV_FLEET,  /* fleet state applied, Redis lost or back */
	SHM_EV__MAX
};
const char *shm_event_name(int);
void shm_event_add(struct shm *, int type, int slot, const char *text);
/* The same, naming the client it concerns and an amount (nano-USD). */
void shm_event_add_client(struct shm *, int type, int slot, const char *client,
                          int64_t nusd, const char *text);

#endif
