/* Spend (issue 17): the price of an answer, UTC days and months for
 * budgets, and the spend file that keeps the ledger across restarts:
 * one row per (day, client, deployment, upstream model). Shared by the
 * workers (pricing), the master (the file) and llmfctl (reports). */
#ifndef LLMFD_SPEND_H
#define LLMFD_SPEND_H

#include <stddef.h>
#include <stdint.h>

#include "common/shm.h"

struct price_cfg;

#define SPEND_FILE         "spend"
#define SPEND_HISTORY_DAYS 400           /* rows older than this are dropped */
#define SPEND_NUSD         1000000000ULL /* nano-USD per USD */

/* One row of the ledger. */
struct spend_row {
	uint32_t day; /* UTC days since the epoch */
	char client[64];
	char deployment[64];
	char model[96];
	struct spend_vals v;
};

/* Rows with distinct keys (adding a row with an existing key sums it). */
struct spend_set {
	struct spend_row *v;
	size_t n, cap;
	size_t *idx; /* open-addressing index into v, SIZE_MAX = empty */
	size_t nidx;
};

/* The cost in nano-USD of an answer at price p: prompt tokens (cached
 * reads and cache writes among them) and completion tokens (reasoning
 * among them, billed as output by every provider). */
uint64_t spend_cost_nusd(const struct price_cfg *p, long long prompt,
                         long long cached, long long cache_write,
                         long long completion);

/* UTC day (since the epoch) and month (year * 12 + month 0..11) of a
 * wall-clock time; when the day and the month containing it end. */
uint32_t spend_day(int64_t wall_ms);
uint32_t spend_month(int64_t wall_ms);
uint32_t spend_month_of_day(uint32_t day);
int64_t spend_day_end_ms(int64_t wall_ms);
int64_t spend_month_end_ms(int64_t wall_ms);
/* "YYYY-MM-DD" of a day; parse one back (0, or -1). */
void spend_fmt_day(char *out, size_t n, uint32_t day);
int spend_parse_day(const char *s, uint32_t *day);
/* "YYYY-MM-DDTHH:MM:SSZ" of a wall-clock time. */
void spend_fmt_time(char *out, size_t n, int64_t wall_ms);
/* Dollars with up to 9 decimals and at least 2 ("0.000025", "5.00"). */
void spend_fmt_usd(char *out, size_t n, uint64_t nusd);

/* The set. */
void spend_set_add(struct spend_set *, const struct spend_row *);
/* Index of the row with r's key, or -1. */
long spend_set_find(const struct spend_set *, const struct spend_row *r);
void spend_set_free(struct spend_set *);
/* A copy of a (ready) ledger entry as a row. */
void spend_row_of(const struct spend_sh *, struct spend_row *);
/* Add every ready ledger entry of the table (nothing when it is NULL). */
void spend_from_table(const struct shm *, struct spend_set *);

/* How spend_group groups rows. */
#define SPEND_BY_CLIENT     0
#define SPEND_BY_DEPLOYMENT 1
#define SPEND_BY_MODEL      2
/* Rows of in from day since on, summed by client, deployment or model
 * into out (day 0, the other names ""), most spent first. */
void spend_group(const struct spend_set *in, int by, uint32_t since,
                 struct spend_set *out);
/* The rows of the table's ledger and of the file's set (rows the ledger
 * also has are the ledger's: it holds their current value). */
void spend_merge(const struct spend_set *table, const struct spend_set *file,
                 struct spend_set *out);

/* Read a spend file into set: 0 (a missing file reads as empty), or -1
 * with *cause (heap) "FILE:LINE: reason". */
int spend_load(const char *path, struct spend_set *, char **cause);
/* Write set to path atomically (a temporary file, fsync, rename, fsync of
 * the directory): a crash leaves the old file or the new one, never a
 * part. Rows older than keep_from (a day) are left out. 0, or -1 with
 * errno. */
int spend_save(const char *path, const struct spend_set *, uint32_t keep_from);

#endif
