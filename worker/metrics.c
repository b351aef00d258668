/* GET /metrics: the shared health table in the Prometheus text exposition
 * format 0.0.4. Every number comes from the table, never from the worker
 * answering, so all workers report the same values. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/status.h"
#include "worker/ingress.h"
#include "worker/worker.h"

#define RLX memory_order_relaxed

/* How to read a field of struct mrow. */
enum mval { MV_U64, MV_U32, MV_I32, MV_I64, MV_INT };

/* One deployment as rendered: the status snapshot plus histogram sums. */
struct mrow {
	struct status_row r;
	uint64_t lat_sum_us, ttft_sum_us;
};

/* A per-deployment metric family read from one field. */
struct mfam {
	const char *name;
	const char *type;
	const char *help;
	size_t off;
	enum mval kind;
};

#define F(x) offsetof(struct mrow, r.x)

static const struct mfam dep_fams[] = {
    {"llmfd_attempts_total", "counter",
     "Upstream attempts started on a deployment.", F(requests), MV_U64},
    {"llmfd_retries_total", "counter",
     "Retries of the same deployment after a transient failure.", F(retries),
     MV_U64},
    {"llmfd_fallbacks_from_total", "counter",
     "Requests that moved on from this deployment to another.",
     F(fallbacks_from), MV_U64},
    {"llmfd_fallbacks_to_total", "counter",
     "Requests that moved to this deployment from another.", F(fallbacks_to),
     MV_U64},
    {"llmfd_skipped_total", "counter",
     "Times the router skipped the deployment (cooling, open, limited).",
     F(skipped), MV_U64},
    {"llmfd_cooldowns_total", "counter",
     "Times the deployment entered a cooldown.", F(cooldowns), MV_U32},
    {"llmfd_circuit_opens_total", "counter",
     "Times the deployment's circuit breaker opened.", F(circuit_opens),
     MV_U32},
    {"llmfd_inflight", "gauge",
     "Upstream attempts in flight on the deployment, over all workers.",
     F(inflight), MV_I32},
    {"llmfd_deployment_state", "gauge",
     "Derived state: 0 healthy, 1 cooling, 2 circuit open, 3 half-open, "
     "4 rate-limited, 5 drained, 6 retired.",
     F(state), MV_INT},
    {"llmfd_deployment_weight", "gauge",
     "Live routing weight (llmfctl override, else configured).", F(weight),
     MV_I32},
    {"llmfd_tokens_in_total", "counter",
     "Prompt tokens reported by the upstream.", F(tokens_in), MV_U64},
    {"llmfd_tokens_out_total", "counter",
     "Completion tokens reported by the upstream.", F(tokens_out), MV_U64},
    {"llmfd_rpm_used", "gauge",
     "Requests sent to the deployment in the current wall-clock minute.",
     F(rpm_used), MV_U64},
    {"llmfd_tpm_used", "gauge",
     "Tokens used on the deployment in the current wall-clock minute.",
     F(tpm_used), MV_U64},
    {"llmfd_rpm_limit", "gauge", "Configured rpm limit (0 = unlimited).",
     F(rpm_limit), MV_I64},
    {"llmfd_tpm_limit", "gauge", "Configured tpm limit (0 = unlimited).",
     F(tpm_limit), MV_I64},
};

/* Read one field of a row as a signed 64-bit value (counters fit). */
static long long
metrics_field(const struct mrow *m, const struct mfam *f)
{
	const char *p = (const char *)m + f->off;

	switch (f->kind) {
	case MV_U64:
		return (long long)*(const uint64_t *)(const void *)p;
	case MV_U32:
		return (long long)*(const uint32_t *)(const void *)p;
	case MV_I32:
		return (long long)*(const int32_t *)(const void *)p;
	case MV_I64:
		return (long long)*(const int64_t *)(const void *)p;
	case MV_INT:
		return (long long)*(const int *)(const void *)p;
	}
	return 0;
}

/* Append a label value escaped as the format wants: \\, \" and \n. */
void
metrics_escape(struct buf *b, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '\\':
			buf_adds(b, "\\\\");
			break;
		case '"':
			buf_adds(b, "\\\"");
			break;
		case '\n':
			buf_adds(b, "\\n");
			break;
		default:
			buf_addc(b, *s);
			break;
		}
	}
}

/* Append microseconds as exact decimal seconds ("0.00025", "2", "1.5"). */
void
metrics_seconds(struct buf *b, uint64_t us)
{
	char frac[8];
	int n;

	n = snprintf(frac, sizeof frac, "%06llu",
	             (unsigned long long)(us % 1000000));
	while (n > 0 && frac[n - 1] == '0')
		frac[--n] = '\0';
	buf_printf(b, "%llu%s%s", (unsigned long long)(us / 1000000),
	           n ? "." : "", frac);
}

/* The HELP and TYPE lines of a family (once per family). */
static void
metrics_head(struct buf *b, const char *name, const char *type,
             const char *help)
{
	buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* The deployment labels, without the closing brace. */
static void
metrics_labels(struct buf *b, const struct status_row *r)
{
	buf_adds(b, "{deployment=\"");
	metrics_escape(b, r->name);
	buf_adds(b, "\",group=\"");
	metrics_escape(b, r->group);
	buf_adds(b, "\",provider=\"");
	metrics_escape(b, r->provider);
	buf_addc(b, '"');
}

/* One per-deployment family from a field of every row. */
static void
metrics_dep_family(struct buf *b, const struct mfam *f, const struct mrow *m,
                   int n)
{
	metrics_head(b, f->name, f->type, f->help);
	for (int i = 0; i < n; i++) {
		buf_adds(b, f->name);
		metrics_labels(b, &m[i].r);
		buf_printf(b, "} %lld\n", metrics_field(&m[i], f));
	}
}

/* Outcomes by class: success, then every failure class. */
static void
metrics_outcomes(struct buf *b, const struct mrow *m, int n)
{
	static const char name[] = "llmfd_attempt_outcomes_total";

	metrics_head(b, name, "counter",
	             "Finished upstream attempts by outcome class.");
	for (int i = 0; i < n; i++)
		for (int c = 0; c < EC__MAX; c++) {
			buf_adds(b, name);
			metrics_labels(b, &m[i].r);
			buf_printf(
			    b, ",class=\"%s\"} %llu\n",
			    c == EC_OK ? "success" : status_class_name(c),
			    (unsigned long long)(c == EC_OK
			                             ? m[i].r.successes
			                             : m[i].r.by_class[c]));
		}
}

/* One deployment's histogram series: cumulative buckets, +Inf, sum,
 * count. +Inf and _count are the same bucket total, so they always agree
 * even while workers add samples. */
static void
metrics_hist_series(struct buf *b, const char *name, const struct status_row *r,
                    const uint64_t *bk, uint64_t sum_us)
{
	uint64_t acc = 0;

	for (int k = 0; k <= SHM_HIST; k++) {
		acc += bk[k];
		buf_printf(b, "%s_bucket", name);
		metrics_labels(b, r);
		buf_adds(b, ",le=\"");
		if (k < SHM_HIST)
			metrics_seconds(b, (uint64_t)shm_hist_bound_us(k));
		else
			buf_adds(b, "+Inf");
		buf_printf(b, "\"} %llu\n", (unsigned long long)acc);
	}
	buf_printf(b, "%s_sum", name);
	metrics_labels(b, r);
	buf_adds(b, "} ");
	metrics_seconds(b, sum_us);
	buf_printf(b, "\n%s_count", name);
	metrics_labels(b, r);
	buf_printf(b, "} %llu\n", (unsigned long long)acc);
}

/* Both latency histogram families. */
static void
metrics_histograms(struct buf *b, const struct mrow *m, int n)
{
	static const char lat[] = "llmfd_request_duration_seconds";
	static const char ttft[] = "llmfd_time_to_first_token_seconds";

	metrics_head(b, lat, "histogram",
	             "Duration of successful upstream attempts.");
	for (int i = 0; i < n; i++)
		metrics_hist_series(b, lat, &m[i].r, m[i].r.lat_b,
		                    m[i].lat_sum_us);
	metrics_head(b, ttft, "histogram",
	             "Time to the first streamed token of upstream attempts.");
	for (int i = 0; i < n; i++)
		metrics_hist_series(b, ttft, &m[i].r, m[i].r.ttft_b,
		                    m[i].ttft_sum_us);
}

/* One daemon-wide sample with its HELP and TYPE. */
static void
metrics_scalar(struct buf *b, const char *name, const char *type,
               const char *help, uint64_t v)
{
	metrics_head(b, name, type, help);
	buf_printf(b, "%s %llu\n", name, (unsigned long long)v);
}

/* The header's daemon-wide counters and gauges. */
static void
metrics_header(struct buf *b, const struct shm_hdr_sh *h)
{
	metrics_scalar(b, "llmfd_requests_total", "counter",
	               "Client requests routed (valid model).",
	               atomic_load_explicit(&h->requests_total, RLX));
	metrics_head(b, "llmfd_requests_by_protocol_total", "counter",
	             "Client requests routed, by client protocol.");
	for (int i = 0; i < ING__MAX; i++)
		buf_printf(b,
		           "llmfd_requests_by_protocol_total{protocol=\"%s\"} "
		           "%llu\n",
		           ingress_names[i],
		           (unsigned long long)atomic_load_explicit(
		               &h->requests_proto[i], RLX));
	metrics_scalar(b, "llmfd_retry_budget_denied_total", "counter",
	               "Retries refused by the daemon-wide retry budget.",
	               atomic_load_explicit(&h->budget_denied, RLX));
	metrics_scalar(b, "llmfd_worker_restarts_total", "counter",
	               "Workers respawned after an unexpected exit.",
	               atomic_load_explicit(&h->worker_restarts, RLX));
	metrics_scalar(b, "llmfd_events_total", "counter",
	               "Health events written to the event ring.",
	               atomic_load_explicit(&h->ev_head, RLX));
	metrics_scalar(b, "llmfd_config_generation", "gauge",
	               "Configuration generation (1 at start, +1 per reload).",
	               atomic_load_explicit(&h->generation, RLX));
}

/* Snapshot every active or retired slot into m; returns the count. */
static int
metrics_rows(const struct shm *t, struct mrow *m, int64_t now_ms,
             int64_t wall_ms)
{
	int n = 0;

	for (int k = 0; k < SHM_NSLOTS; k++) {
		const struct slot_sh *s = &t->slots[k];

		if (atomic_load_explicit(&s->state, RLX) == SLOT_FREE)
			continue;
		status_snapshot(t, k, now_ms, wall_ms, &m[n].r);
		m[n].lat_sum_us = atomic_load_explicit(&s->lat.sum_us, RLX);
		m[n].ttft_sum_us = atomic_load_explicit(&s->ttft.sum_us, RLX);
		n++;
	}
	return n;
}

/* Render a whole table; out->oom is set when memory ran out. */
void
metrics_render_shm(const struct shm *t, int64_t now_ms, int64_t wall_ms,
                   struct buf *out)
{
	struct mrow *m = malloc(SHM_NSLOTS * sizeof *m);
	int n;

	if (m == NULL) {
		out->oom = 1;
		return;
	}
	n = metrics_rows(t, m, now_ms, wall_ms);
	metrics_header(out, t->hdr);
	for (size_t i = 0; i < sizeof dep_fams / sizeof dep_fams[0]; i++)
		metrics_dep_family(out, &dep_fams[i], m, n);
	metrics_outcomes(out, m, n);
	metrics_histograms(out, m, n);
	free(m);
}

/* The exposition for the table this worker shares (out->oom on failure). */
void
metrics_render(struct worker *w, struct buf *out)
{
	metrics_render_shm(w->shm, clock_ms(), clock_wall_ms(), out);
}
