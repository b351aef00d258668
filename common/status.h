/* Status of the deployments in the health table, as llmfctl shows it and
 * as /metrics can reuse it: the derived state of a slot, a consistent-enough
 * snapshot of one slot, and its rendering as a table row or a JSON object.
 * Nothing here writes to the table. */
#ifndef LLMFD_STATUS_H
#define LLMFD_STATUS_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/shm.h"

/* Derived states, in order of precedence. */
enum status_state {
	STATUS_HEALTHY = 0,
	STATUS_COOLING,
	STATUS_CIRCUIT_OPEN,
	STATUS_HALF_OPEN,
	STATUS_RATE_LIMITED,
	STATUS_DRAINED,
	STATUS_RETIRED,
	STATUS_UNREADABLE, /* config block left mid-write (seqlock odd) */
	STATUS__MAX
};

/* A copy of one slot taken at one moment (now_ms monotonic, wall_ms real). */
struct status_row {
	int index;
	int unreadable; /* config block unreadable: name etc. are "?" */
	char name[64];
	char group[64];
	char provider[16];
	char model[96];
	int32_t weight; /* live */
	int32_t cfg_weight;
	int overridden; /* llmfctl set live_weight */
	uint32_t admin;
	int state; /* enum status_state */
	char state_text[32];
	int64_t cooldown_ms; /* remaining, 0 if none */
	uint32_t circuit;    /* CIRCUIT_* */
	int64_t circuit_ms;  /* open: remaining, 0 if none */
	int64_t circuit_window_ms;
	uint32_t circuit_opens;
	uint32_t cooldowns;
	uint32_t fail_win_count;
	uint64_t requests, successes, failures, retries;
	uint64_t by_class[EC__MAX];
	uint64_t fallbacks_from, fallbacks_to, skipped, bad_events;
	uint64_t tokens_in, tokens_out;
	uint64_t affinity_hits, affinity_moves;
	/* the upstream's rate-limit headers, while their window runs: -1 when
	 * not reported (or the window has reset since) */
	int64_t upstream_requests_left, upstream_tokens_left;
	uint32_t consec_fail;
	int32_t inflight;
	double p50_ms, p95_ms, p99_ms, ttft_p50_ms, ttft_p95_ms;
	double lat_ewma_ms, ttft_ewma_ms;
	uint64_t lat_b[SHM_HIST + 1], ttft_b[SHM_HIST + 1];
	uint64_t lat_count, ttft_count;
	uint64_t rpm_used, tpm_used, rpm_prev, tpm_prev;
	int64_t rpm_limit, tpm_limit;
	int has_error;
	char err_text[SHM_ERR_MAX];
	int err_status;
	int err_class;
	int64_t err_age_ms; /* -1 if no error */
};

/* State of a slot: writes its text ("circuit open 12s") to out and returns
 * the enum status_state. wall_min is clock_wall_ms() / 60000. */
int status_state(const struct slot_sh *, int64_t now_ms, int64_t wall_min,
                 char *out, size_t outsz);
/* Machine name of a state ("circuit_open"). */
const char *status_state_name(int);
/* Name of a circuit state ("half_open"). */
const char *status_circuit_name(uint32_t);
/* Name of an error class (until common/classify.c lands: errclass_name). */
const char *status_class_name(int);
/* Snapshot slot i of the table. */
void status_snapshot(const struct shm *, int i, int64_t now_ms, int64_t wall_ms,
                     struct status_row *);

/* Per-row extras for llmfctl watch; NULL in status_table for none. */
struct status_rate {
	double req_s;
	double fail_s;
};

/* The status table for n rows, header first. Last-error text is cut so a
 * line fits in cols columns (0: no limit). */
void status_table(struct buf *, const struct status_row *, int n,
                  const struct status_rate *, int cols);
/* One deployment as a JSON object (the `status --json` element). */
void status_json_row(struct buf *, const struct status_row *);
/* Same, plus histograms, EWMA and every counter (`show --json`). */
void status_json_detail(struct buf *, const struct status_row *);
/* Append s as a JSON string, quotes included, escaped. */
void status_json_str(struct buf *, const char *s);
/* Copy s into out with control characters replaced by '?', cut to at most
 * max display columns at a UTF-8 boundary ("..." marks a cut). */
void status_printable(char *out, size_t outsz, const char *s, size_t max);

#endif
