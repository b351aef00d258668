#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/json.h"
#include "common/status.h"

#define RLX   memory_order_relaxed
#define LD(p) atomic_load_explicit((p), RLX)

enum {
	COL_NAME,
	COL_GROUP,
	COL_PROVIDER,
	COL_WEIGHT,
	COL_STATE,
	COL_REQS,
	COL_FAILS,
	COL_P50,
	COL_P95,
	COL_INFL,
	COL_RPM,
	COL_TPM,
	COL_REQS_S,
	COL_FAILS_S,
	COL_ERROR,
	COL__MAX
};

static const char *const col_names[COL__MAX] = {
    "NAME", "GROUP", "PROVIDER", "WEIGHT", "STATE",
    "REQS", "FAILS", "P50",      "P95",    "INFL",
    "RPM",  "TPM",   "REQ/S",    "FAIL/S", "LAST-ERROR"};

/* Right-aligned columns (numbers). */
static const unsigned char col_right[COL__MAX] = {
    [COL_WEIGHT] = 1, [COL_REQS] = 1,   [COL_FAILS] = 1, [COL_P50] = 1,
    [COL_P95] = 1,    [COL_INFL] = 1,   [COL_RPM] = 1,   [COL_TPM] = 1,
    [COL_REQS_S] = 1, [COL_FAILS_S] = 1};

static const char *const state_names[STATUS__MAX] = {
    [STATUS_HEALTHY] = "healthy",           [STATUS_COOLING] = "cooling",
    [STATUS_CIRCUIT_OPEN] = "circuit_open", [STATUS_HALF_OPEN] = "half_open",
    [STATUS_RATE_LIMITED] = "rate_limited", [STATUS_DRAINED] = "drained",
    [STATUS_RETIRED] = "retired",           [STATUS_UNREADABLE] = "unreadable",
};

/* Machine name of a derived state. */
const char *
status_state_name(int st)
{
	return (st >= 0 && st < STATUS__MAX) ? state_names[st] : "unknown";
}

/* Machine name of a circuit state. */
const char *
status_circuit_name(uint32_t c)
{
	switch (c) {
	case CIRCUIT_CLOSED:
		return "closed";
	case CIRCUIT_OPEN:
		return "open";
	case CIRCUIT_HALF_OPEN:
		return "half_open";
	}
	return "unknown";
}

/* Name of an error class. */
const char *
status_class_name(int c)
{
	return (c >= 0 && c < EC__MAX) ? errclass_name((enum errclass)c)
	                               : "unknown";
}

/* Whole seconds left until a deadline, rounded up. */
static long long
st_secs(int64_t ms)
{
	return (long long)((ms + 999) / 1000);
}

/* The requests the upstream said are left while its window runs, less
 * those sent since; -1 when it did not say. */
static int64_t
st_upstream_req(const struct slot_sh *sl, int64_t now_ms)
{
	if (!(LD(&sl->rl_flags) & SHM_RL_REQ_LEFT) ||
	    LD(&sl->rl_req_reset_ms) <= now_ms)
		return -1;
	return LD(&sl->rl_req_left) - (int64_t)LD(&sl->rl_req_since);
}

/* The tokens the upstream said are left while its window runs; -1. */
static int64_t
st_upstream_tok(const struct slot_sh *sl, int64_t now_ms)
{
	if (!(LD(&sl->rl_flags) & SHM_RL_TOK_LEFT) ||
	    LD(&sl->rl_tok_reset_ms) <= now_ms)
		return -1;
	return LD(&sl->rl_tok_left);
}

/* True if the slot used up its rpm or tpm in the current minute, or the
 * upstream said it has no requests or tokens left. */
static int
st_limited(const struct slot_sh *sl, const struct slot_sh *cfg,
           int64_t wall_min, int64_t now_ms)
{
	int64_t r = st_upstream_req(sl, now_ms),
	        t = st_upstream_tok(sl, now_ms);

	if ((r >= 0 && r <= 0) || t == 0)
		return 1;
	if ((int64_t)LD(&sl->rate_min) != wall_min)
		return 0;
	if (cfg->rpm > 0 && (int64_t)LD(&sl->req_cur) >= cfg->rpm)
		return 1;
	return cfg->tpm > 0 && (int64_t)LD(&sl->tok_cur) >= cfg->tpm;
}

/* Derived state of a slot, with its display text. */
int
status_state(const struct slot_sh *sl, int64_t now_ms, int64_t wall_min,
             char *out, size_t outsz)
{
	struct slot_sh cfg;
	uint32_t circ = LD(&sl->circuit);
	int64_t until = LD(&sl->circuit_until_ms);
	int64_t cool = LD(&sl->cooldown_until_ms);
	int st = STATUS_HEALTHY;

	if (shm_read_cfg(sl, &cfg) == -1) {
		snprintf(out, outsz, "%s", state_names[STATUS_UNREADABLE]);
		return STATUS_UNREADABLE;
	}
	if (LD(&sl->state) == SLOT_RETIRED)
		st = STATUS_RETIRED;
	else if (LD(&sl->admin) == ADMIN_DRAINED)
		st = STATUS_DRAINED;
	else if (circ == CIRCUIT_OPEN && until > now_ms) {
		snprintf(out, outsz, "circuit open %llds",
		         st_secs(until - now_ms));
		return STATUS_CIRCUIT_OPEN;
	} else if (circ == CIRCUIT_OPEN || circ == CIRCUIT_HALF_OPEN) {
		snprintf(out, outsz, "half-open");
		return STATUS_HALF_OPEN;
	} else if (cool > now_ms) {
		snprintf(out, outsz, "cooling %llds", st_secs(cool - now_ms));
		return STATUS_COOLING;
	} else if (st_limited(sl, &cfg, wall_min, now_ms))
		st = STATUS_RATE_LIMITED;
	snprintf(out, outsz, "%s",
	         st == STATUS_RATE_LIMITED ? "at rate limit" : state_names[st]);
	return st;
}

/* Copy a histogram's buckets and return its sample count. */
static uint64_t
st_hist(const struct hist_sh *h, uint64_t *b)
{
	for (int k = 0; k <= SHM_HIST; k++)
		b[k] = LD(&h->b[k]);
	return LD(&h->count);
}

/* Counters of a slot into the row. */
static void
st_counters(const struct slot_sh *sl, struct status_row *r)
{
	r->requests = LD(&sl->requests);
	r->successes = LD(&sl->successes);
	for (int c = 0; c < EC__MAX; c++) {
		r->by_class[c] = LD(&sl->failures[c]);
		if (c != EC_OK && c != EC_CANCELLED)
			r->failures += r->by_class[c];
	}
	r->retries = LD(&sl->retries);
	r->fallbacks_from = LD(&sl->fallbacks_from);
	r->fallbacks_to = LD(&sl->fallbacks_to);
	r->skipped = LD(&sl->skipped);
	r->bad_events = LD(&sl->bad_events);
	r->tokens_in = LD(&sl->tokens_in);
	r->tokens_out = LD(&sl->tokens_out);
	r->affinity_hits = LD(&sl->affinity_hits);
	r->affinity_moves = LD(&sl->affinity_moves);
	r->consec_fail = LD(&sl->consec_fail);
	r->inflight = shm_inflight(sl);
	r->cooldowns = LD(&sl->cooldowns);
	r->circuit_opens = LD(&sl->circuit_opens);
	r->fail_win_count = LD(&sl->fail_win_count);
}

/* Latency quantiles, EWMA and histograms into the row. */
static void
st_latency(const struct slot_sh *sl, struct status_row *r)
{
	r->p50_ms = (double)shm_hist_quantile(&sl->lat, .5) / 1000.0;
	r->p95_ms = (double)shm_hist_quantile(&sl->lat, .95) / 1000.0;
	r->p99_ms = (double)shm_hist_quantile(&sl->lat, .99) / 1000.0;
	r->ttft_p50_ms = (double)shm_hist_quantile(&sl->ttft, .5) / 1000.0;
	r->ttft_p95_ms = (double)shm_hist_quantile(&sl->ttft, .95) / 1000.0;
	r->lat_ewma_ms = (double)LD(&sl->lat_ewma_us) / 1000.0;
	r->ttft_ewma_ms = (double)LD(&sl->ttft_ewma_us) / 1000.0;
	r->lat_count = st_hist(&sl->lat, r->lat_b);
	r->ttft_count = st_hist(&sl->ttft, r->ttft_b);
}

/* Rate windows: the current minute's use and the previous minute's. */
static void
st_rate(const struct slot_sh *sl, int64_t wall_min, struct status_row *r)
{
	int64_t m = (int64_t)LD(&sl->rate_min);

	if (m == wall_min) {
		r->rpm_used = LD(&sl->req_cur);
		r->tpm_used = LD(&sl->tok_cur);
		r->rpm_prev = LD(&sl->req_prev);
		r->tpm_prev = LD(&sl->tok_prev);
	} else if (m == wall_min - 1) {
		r->rpm_prev = LD(&sl->req_cur);
		r->tpm_prev = LD(&sl->tok_cur);
	}
}

/* Deadlines (cooldown, circuit) relative to now. */
static void
st_deadlines(const struct slot_sh *sl, int64_t now_ms, struct status_row *r)
{
	int64_t cool = LD(&sl->cooldown_until_ms);
	int64_t until = LD(&sl->circuit_until_ms);

	r->cooldown_ms = cool > now_ms ? cool - now_ms : 0;
	r->circuit = LD(&sl->circuit);
	r->circuit_ms =
	    r->circuit == CIRCUIT_OPEN && until > now_ms ? until - now_ms : 0;
	r->circuit_window_ms = LD(&sl->circuit_window_ms);
}

/* Snapshot slot i: config block under its seqlock, counters relaxed. */
void
status_snapshot(const struct shm *s, int i, int64_t now_ms, int64_t wall_ms,
                struct status_row *r)
{
	const struct slot_sh *sl = &s->slots[i];
	struct slot_sh cfg;
	int32_t lw = LD(&sl->live_weight);
	int64_t ew;

	memset(r, 0, sizeof *r);
	if (shm_read_cfg(sl, &cfg) == -1) {
		memset(&cfg, 0, sizeof cfg);
		snprintf(cfg.name, sizeof cfg.name, "(slot %d)", i);
		snprintf(cfg.group, sizeof cfg.group, "?");
		snprintf(cfg.provider, sizeof cfg.provider, "?");
		r->unreadable = 1;
	}
	r->index = i;
	memcpy(r->name, cfg.name, sizeof r->name);
	memcpy(r->group, cfg.group, sizeof r->group);
	memcpy(r->provider, cfg.provider, sizeof r->provider);
	memcpy(r->model, cfg.model, sizeof r->model);
	r->cfg_weight = cfg.cfg_weight;
	r->overridden = lw >= 0;
	r->weight = lw >= 0 ? lw : cfg.cfg_weight;
	r->rpm_limit = cfg.rpm;
	r->tpm_limit = cfg.tpm;
	r->admin = LD(&sl->admin);
	r->state = status_state(sl, now_ms, wall_ms / 60000, r->state_text,
	                        sizeof r->state_text);
	st_deadlines(sl, now_ms, r);
	st_counters(sl, r);
	st_latency(sl, r);
	st_rate(sl, wall_ms / 60000, r);
	r->upstream_requests_left = st_upstream_req(sl, now_ms);
	r->upstream_tokens_left = st_upstream_tok(sl, now_ms);
	r->err_age_ms = -1;
	if (shm_get_error(sl, r->err_text, sizeof r->err_text, &r->err_status,
	                  &r->err_class, &ew) == 0) {
		r->has_error = 1;
		r->err_age_ms = wall_ms > ew ? wall_ms - ew : 0;
	}
}

/* Length of the valid UTF-8 sequence at p (code point in *cp), 0 if none. */
static size_t
st_utf8(const unsigned char *p, size_t n, uint32_t *cp)
{
	size_t len, i;

	if (p[0] < 0x80)
		len = 1, *cp = p[0];
	else if (p[0] >= 0xc2 && p[0] <= 0xdf)
		len = 2, *cp = p[0] & 0x1f;
	else if ((p[0] & 0xf0) == 0xe0)
		len = 3, *cp = p[0] & 0x0f;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		len = 4, *cp = p[0] & 0x07;
	else
		return 0;
	if (len > n)
		return 0;
	for (i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		*cp = *cp << 6 | (p[i] & 0x3f);
	}
	if ((len == 3 && (*cp < 0x800 || (*cp >= 0xd800 && *cp <= 0xdfff))) ||
	    (len == 4 && (*cp < 0x10000 || *cp > 0x10ffff)))
		return 0;
	return len;
}

/* True for code points a terminal may act on (C0, DEL, C1). */
static int
st_is_control(uint32_t cp)
{
	return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f);
}

/* Display columns of s once made printable (one per code point). */
static size_t
st_columns(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = strlen(s), cols = 0, l;
	uint32_t cp;

	for (size_t i = 0; i < n; i += l ? l : 1, cols++)
		l = st_utf8(p + i, n - i, &cp);
	return cols;
}

/* Printable copy of s, cut to max columns. */
void
status_printable(char *out, size_t outsz, const char *s, size_t max)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = strlen(s), o = 0, cols = 0, l, keep = max;
	uint32_t cp;
	int cut = st_columns(s) > max;

	if (outsz == 0)
		return;
	if (cut && max >= 3)
		keep = max - 3;
	for (size_t i = 0; i < n && cols < keep; i += l ? l : 1, cols++) {
		l = st_utf8(p + i, n - i, &cp);
		if (l == 0 || st_is_control(cp)) {
			if (o + 1 >= outsz)
				break;
			out[o++] = '?';
		} else {
			if (o + l >= outsz)
				break;
			memcpy(out + o, p + i, l);
			o += l;
		}
	}
	if (cut && max >= 3 && o + 3 < outsz)
		memcpy(out + o, "...", 3), o += 3;
	out[o] = '\0';
}

/* Append s as an escaped JSON string; invalid UTF-8 becomes U+FFFD. */
void
status_json_str(struct buf *b, const char *s)
{
	buf_addc(b, '"');
	json_escape(b, s, strlen(s));
	buf_addc(b, '"');
}

/* Text of one table cell for a row. */
static void
st_cell(const struct status_row *r, const struct status_rate *rt, int col,
        char *c, size_t sz)
{
	switch (col) {
	case COL_NAME:
		status_printable(c, sz, r->name, sz);
		break;
	case COL_GROUP:
		status_printable(c, sz, r->group, sz);
		break;
	case COL_PROVIDER:
		status_printable(c, sz, r->provider, sz);
		break;
	case COL_WEIGHT:
		snprintf(c, sz, "%d%s", (int)r->weight,
		         r->overridden ? "*" : "");
		break;
	case COL_STATE:
		snprintf(c, sz, "%s", r->state_text);
		break;
	case COL_REQS:
		snprintf(c, sz, "%llu", (unsigned long long)r->requests);
		break;
	case COL_FAILS:
		snprintf(c, sz, "%llu", (unsigned long long)r->failures);
		break;
	case COL_P50:
		snprintf(c, sz, "%.1f", r->p50_ms);
		break;
	case COL_P95:
		snprintf(c, sz, "%.1f", r->p95_ms);
		break;
	case COL_INFL:
		snprintf(c, sz, "%d", (int)r->inflight);
		break;
	case COL_RPM:
	case COL_TPM: {
		uint64_t u = col == COL_RPM ? r->rpm_used : r->tpm_used;
		int64_t lim = col == COL_RPM ? r->rpm_limit : r->tpm_limit;

		if (lim > 0)
			snprintf(c, sz, "%llu/%lld", (unsigned long long)u,
			         (long long)lim);
		else
			snprintf(c, sz, "%llu", (unsigned long long)u);
		break;
	}
	case COL_REQS_S:
		snprintf(c, sz, "%.1f", rt ? rt->req_s : 0.0);
		break;
	case COL_FAILS_S:
		snprintf(c, sz, "%.1f", rt ? rt->fail_s : 0.0);
		break;
	default:
		status_printable(c, sz, r->has_error ? r->err_text : "-",
		                 SIZE_MAX);
		break;
	}
}

/* True if column col is shown (rates only with watch). */
static int
st_shown(int col, const struct status_rate *rates)
{
	return rates != NULL || (col != COL_REQS_S && col != COL_FAILS_S);
}

/* Column widths over the header and every row. */
static void
st_widths(const struct status_row *rows, int n, const struct status_rate *rates,
          size_t *w)
{
	char c[80];

	for (int col = 0; col < COL_ERROR; col++)
		w[col] = strlen(col_names[col]);
	for (int i = 0; i < n; i++)
		for (int col = 0; col < COL_ERROR; col++) {
			st_cell(&rows[i], rates ? &rates[i] : NULL, col, c,
			        sizeof c);
			if (st_columns(c) > w[col])
				w[col] = st_columns(c);
		}
}

/* One line of the table: the cells of a row, or the header if r is NULL;
 * cut to cols columns when cols > 0, the last error giving way first. */
static void
st_line(struct buf *b, const struct status_row *r, const struct status_rate *rt,
        const struct status_rate *rates, const size_t *w, int cols)
{
	char c[SHM_ERR_MAX + 8], line[2048];
	size_t o = 0, pad, len;

	for (int col = 0; col < COL__MAX; col++) {
		if (!st_shown(col, rates))
			continue;
		if (r)
			st_cell(r, rt, col, c, sizeof c);
		else
			snprintf(c, sizeof c, "%s", col_names[col]);
		pad = col == COL_ERROR ? 0 : w[col] - st_columns(c);
		o += (size_t)snprintf(line + o, sizeof line - o, "%*s%s%*s  ",
		                      col_right[col] ? (int)pad : 0, "", c,
		                      col_right[col] ? 0 : (int)pad, "");
		if (o >= sizeof line)
			break;
	}
	len = strlen(line);
	while (len > 0 && line[len - 1] == ' ')
		line[--len] = '\0';
	if (cols > 0 && st_columns(line) >= (size_t)cols) {
		char cut[sizeof line];

		status_printable(cut, sizeof cut, line, (size_t)cols - 1);
		buf_printf(b, "%s\n", cut);
	} else
		buf_printf(b, "%s\n", line);
}

/* The whole table. */
void
status_table(struct buf *b, const struct status_row *rows, int n,
             const struct status_rate *rates, int cols)
{
	size_t w[COL__MAX];

	st_widths(rows, n, rates, w);
	st_line(b, NULL, NULL, rates, w, cols);
	for (int i = 0; i < n; i++)
		st_line(b, &rows[i], rates ? &rates[i] : NULL, rates, w, cols);
}

/* Key and string value, with a leading comma unless first. */
static void
st_kstr(struct buf *b, const char *k, const char *v)
{
	buf_printf(b, ",\"%s\":", k);
	status_json_str(b, v);
}

/* Key and integer value. */
static void
st_kint(struct buf *b, const char *k, long long v)
{
	buf_printf(b, ",\"%s\":%lld", k, v);
}

/* Key and unsigned value. */
static void
st_kuns(struct buf *b, const char *k, uint64_t v)
{
	buf_printf(b, ",\"%s\":%llu", k, (unsigned long long)v);
}

/* Key and a number with one decimal. */
static void
st_kms(struct buf *b, const char *k, double v)
{
	buf_printf(b, ",\"%s\":%.1f", k, v);
}

/* The failures_by_class object (every class but ok). */
static void
st_json_classes(struct buf *b, const struct status_row *r)
{
	buf_adds(b, ",\"failures_by_class\":{");
	for (int c = EC_OK + 1; c < EC__MAX; c++)
		buf_printf(b, "%s\"%s\":%llu", c == EC_OK + 1 ? "" : ",",
		           status_class_name(c),
		           (unsigned long long)r->by_class[c]);
	buf_addc(b, '}');
}

/* Fields of the status --json element, without braces. */
static void
st_json_fields(struct buf *b, const struct status_row *r)
{
	buf_adds(b, "\"name\":");
	status_json_str(b, r->name);
	st_kstr(b, "group", r->group);
	st_kstr(b, "provider", r->provider);
	st_kstr(b, "model", r->model);
	st_kint(b, "weight", r->weight);
	st_kint(b, "configured_weight", r->cfg_weight);
	st_kstr(b, "admin", r->admin == ADMIN_DRAINED ? "drained" : "active");
	st_kstr(b, "state", status_state_name(r->state));
	st_kint(b, "cooldown_remaining_s", st_secs(r->cooldown_ms));
	st_kuns(b, "requests", r->requests);
	st_kuns(b, "successes", r->successes);
	st_kuns(b, "failures", r->failures);
	st_json_classes(b, r);
	st_kuns(b, "retries", r->retries);
	st_kuns(b, "consecutive_failures", r->consec_fail);
	st_kint(b, "inflight", r->inflight);
	st_kms(b, "p50_ms", r->p50_ms);
	st_kms(b, "p95_ms", r->p95_ms);
	st_kms(b, "p99_ms", r->p99_ms);
	st_kms(b, "ttft_p50_ms", r->ttft_p50_ms);
	st_kms(b, "ttft_p95_ms", r->ttft_p95_ms);
	st_kuns(b, "rpm_used", r->rpm_used);
	st_kint(b, "rpm_limit", r->rpm_limit);
	st_kuns(b, "tpm_used", r->tpm_used);
	st_kint(b, "tpm_limit", r->tpm_limit);
	st_kstr(b, "circuit", status_circuit_name(r->circuit));
	st_kstr(b, "last_error", r->has_error ? r->err_text : "");
	st_kint(b, "last_error_status", r->has_error ? r->err_status : 0);
}

/* One deployment as a JSON object. */
void
status_json_row(struct buf *b, const struct status_row *r)
{
	buf_addc(b, '{');
	st_json_fields(b, r);
	buf_addc(b, '}');
}

/* A histogram as [{"le_ms":x,"count":n},...], the last bound null. */
static void
st_json_hist(struct buf *b, const char *k, const uint64_t *h)
{
	buf_printf(b, ",\"%s\":[", k);
	for (int i = 0; i <= SHM_HIST; i++) {
		if (i < SHM_HIST)
			buf_printf(b, "%s{\"le_ms\":%.2f,", i ? "," : "",
			           (double)shm_hist_bound_us(i) / 1000.0);
		else
			buf_adds(b, ",{\"le_ms\":null,");
		buf_printf(b, "\"count\":%llu}", (unsigned long long)h[i]);
	}
	buf_addc(b, ']');
}

/* One deployment with every counter and both histograms. */
void
status_json_detail(struct buf *b, const struct status_row *r)
{
	buf_addc(b, '{');
	st_json_fields(b, r);
	st_kstr(b, "state_text", r->state_text);
	st_kuns(b, "fallbacks_from", r->fallbacks_from);
	st_kuns(b, "fallbacks_to", r->fallbacks_to);
	st_kuns(b, "skipped", r->skipped);
	st_kuns(b, "bad_events", r->bad_events);
	st_kuns(b, "tokens_in", r->tokens_in);
	st_kuns(b, "tokens_out", r->tokens_out);
	st_kuns(b, "affinity_hits", r->affinity_hits);
	st_kuns(b, "affinity_moves", r->affinity_moves);
	st_kint(b, "upstream_requests_left", r->upstream_requests_left);
	st_kint(b, "upstream_tokens_left", r->upstream_tokens_left);
	st_kuns(b, "cooldowns", r->cooldowns);
	st_kuns(b, "failure_window_count", r->fail_win_count);
	st_kuns(b, "circuit_opens", r->circuit_opens);
	st_kint(b, "circuit_remaining_s", st_secs(r->circuit_ms));
	st_kint(b, "circuit_window_ms", r->circuit_window_ms);
	st_kuns(b, "rpm_prev", r->rpm_prev);
	st_kuns(b, "tpm_prev", r->tpm_prev);
	st_kms(b, "latency_ewma_ms", r->lat_ewma_ms);
	st_kms(b, "ttft_ewma_ms", r->ttft_ewma_ms);
	st_kuns(b, "latency_samples", r->lat_count);
	st_kuns(b, "ttft_samples", r->ttft_count);
	st_json_hist(b, "latency_histogram", r->lat_b);
	st_json_hist(b, "ttft_histogram", r->ttft_b);
	st_kstr(b, "last_error_class",
	        r->has_error ? status_class_name(r->err_class) : "");
	st_kint(b, "last_error_age_s",
	        r->has_error ? r->err_age_ms / 1000 : -1);
	buf_addc(b, '}');
}
