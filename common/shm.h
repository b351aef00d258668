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
#define SHM_VERSION     2
#define SHM_NPROTO      8 /* client protocols counted */
#define SHM_NSLOTS      256
#define SHM_MAX_WORKERS 32
#define SHM_HIST        24 /* bucket k: <= 250us << k; then +Inf */
#define SHM_NEVENTS     256
#define SHM_ERR_MAX     160

/* slot states */
#define SLOT_FREE    0
#define SLOT_ACTIVE  1
#define SLOT_RETIRED 2 /* removed by reload; freed when in-flight drains */

/* admin word (llmfctl) */
#define ADMIN_ACTIVE  0
#define ADMIN_DRAINED 1

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
	au64 requests_total; /* client requests */
	au64 requests_proto[SHM_NPROTO]; /* by client protocol (ingress id) */
	/* retry budget: daemon-wide, per wall-clock minute */
	au64 budget_min;
	au64 budget_req_cur, budget_req_prev;
	au64 budget_retry_cur, budget_retry_prev;
	au64 budget_denied;
	au64 ev_head; /* events written */
	char config_file[256];
} __attribute__((aligned(64)));

struct shm {
	struct shm_hdr_sh *hdr;
	struct slot_sh *slots;
	struct event_sh *events;
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
/* Copy a slot's config block consistently (seqlock read). */
void shm_read_cfg(const struct slot_sh *, struct slot_sh *out);
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
	SHM_EV__MAX
};
const char *shm_event_name(int);
void shm_event_add(struct shm *, int type, int slot, const char *text);

#endif
