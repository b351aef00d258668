/* Spend: prices, UTC days and months, the row set and the spend file (see
 * spend.h). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/cfg.h"
#include "common/spend.h"
#include "common/xmalloc.h"

#define DAY_MS      86400000LL
#define FILE_HEADER "# llmfd spend 1"
#define NFIELDS     9

/* Tokens at usd per million tokens, in nano-USD. */
static double
spend_part(long long tokens, double usd_per_mtok)
{
	return tokens > 0 ? (double)tokens * usd_per_mtok * 1000.0 : 0;
}

/* The cost of an answer; see spend.h. */
uint64_t
spend_cost_nusd(const struct price_cfg *p, long long prompt, long long cached,
                long long cache_write, long long completion)
{
	long long plain;
	double n;

	if (cached < 0)
		cached = 0;
	if (cache_write < 0)
		cache_write = 0;
	if (cached > prompt)
		cached = prompt > 0 ? prompt : 0;
	if (cache_write > prompt - cached)
		cache_write = prompt - cached > 0 ? prompt - cached : 0;
	plain = prompt - cached - cache_write;
	n = spend_part(plain, p->input_per_mtok) +
	    spend_part(cached, p->cached_input_per_mtok) +
	    spend_part(cache_write, p->cache_write_per_mtok) +
	    spend_part(completion, p->output_per_mtok);
	return n > 0 && n < 1.8e19 ? (uint64_t)llround(n) : 0;
}

/* UTC day of a wall-clock time. */
uint32_t
spend_day(int64_t wall_ms)
{
	return wall_ms > 0 ? (uint32_t)(wall_ms / DAY_MS) : 0;
}

/* Year and month (1..12) of a day since the epoch, by arithmetic (Howard
 * Hinnant's civil_from_days): no gmtime_r on the request path. */
static void
spend_civil(int64_t z, int64_t *y, unsigned *m)
{
	int64_t era;
	unsigned doe, yoe, doy, mp;

	z += 719468;
	era = (z >= 0 ? z : z - 146096) / 146097;
	doe = (unsigned)(z - era * 146097);
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	*m = mp < 10 ? mp + 3 : mp - 9;
	*y = (int64_t)yoe + era * 400 + (*m <= 2);
}

/* Days since the epoch of the first of month m (1..12) of year y
 * (days_from_civil). */
static int64_t
spend_civil_days(int64_t y, unsigned m)
{
	int64_t era;
	unsigned yoe, doy;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = (unsigned)(y - era * 400);
	doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5;
	return era * 146097 + (int64_t)(yoe * 365 + yoe / 4 - yoe / 100 + doy) -
	       719468;
}

/* UTC month (year * 12 + month) of a day. */
uint32_t
spend_month_of_day(uint32_t day)
{
	int64_t y;
	unsigned m;

	spend_civil(day, &y, &m);
	return (uint32_t)(y * 12 + (m - 1));
}

/* UTC month of a wall-clock time. */
uint32_t
spend_month(int64_t wall_ms)
{
	return spend_month_of_day(spend_day(wall_ms));
}

/* When the UTC day containing wall_ms ends. */
int64_t
spend_day_end_ms(int64_t wall_ms)
{
	return ((int64_t)spend_day(wall_ms) + 1) * DAY_MS;
}

/* When the UTC month containing wall_ms ends. */
int64_t
spend_month_end_ms(int64_t wall_ms)
{
	time_t t = (time_t)(wall_ms / 1000);
	int64_t y, day = (int64_t)t / 86400;
	unsigned m;

	if ((int64_t)t % 86400 < 0) /* before 1970: floor, as gmtime */
		day--;
	spend_civil(day, &y, &m);
	if (++m == 13) {
		m = 1;
		y++;
	}
	return spend_civil_days(y, m) * DAY_MS;
}

/* "YYYY-MM-DD". */
void
spend_fmt_day(char *out, size_t n, uint32_t day)
{
	time_t t = (time_t)day * 86400;
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, n, "%Y-%m-%d", &tm);
}

/* Parse "YYYY-MM-DD" strictly. */
int
spend_parse_day(const char *s, uint32_t *day)
{
	struct tm tm;
	char *end;
	char back[16];
	time_t t;

	memset(&tm, 0, sizeof tm);
	if (strlen(s) != 10 || (end = strptime(s, "%Y-%m-%d", &tm)) == NULL ||
	    *end != '\0' || tm.tm_year < 70)
		return -1;
	t = timegm(&tm);
	if (t < 0)
		return -1;
	*day = (uint32_t)(t / 86400);
	spend_fmt_day(back, sizeof back, *day);
	return strcmp(back, s) == 0 ? 0 : -1; /* 2024-02-30 */
}

/* "YYYY-MM-DDTHH:MM:SSZ". */
void
spend_fmt_time(char *out, size_t n, int64_t wall_ms)
{
	time_t t = (time_t)(wall_ms / 1000);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Dollars, 9 decimals with trailing zeros dropped past the second. */
void
spend_fmt_usd(char *out, size_t n, uint64_t nusd)
{
	int len = snprintf(out, n, "%llu.%09llu",
	                   (unsigned long long)(nusd / SPEND_NUSD),
	                   (unsigned long long)(nusd % SPEND_NUSD));
	char *dot;

	if (len < 0 || (size_t)len >= n || (dot = strchr(out, '.')) == NULL)
		return;
	for (char *e = out + len - 1; e > dot + 2 && *e == '0'; e--)
		*e = '\0';
}

/* ---- the row set ---- */

/* Hash of a row's key. */
static uint64_t
row_hash(const struct spend_row *r)
{
	return shm_spend_hash(r->day, r->client, r->deployment, r->model);
}

/* Whether a and b have the same key. */
static int
row_same(const struct spend_row *a, const struct spend_row *b)
{
	return a->day == b->day && strcmp(a->client, b->client) == 0 &&
	       strcmp(a->deployment, b->deployment) == 0 &&
	       strcmp(a->model, b->model) == 0;
}

/* Put row i into the index. */
static void
set_index(struct spend_set *s, size_t i)
{
	size_t k = row_hash(&s->v[i]) % s->nidx;

	while (s->idx[k] != SIZE_MAX)
		k = (k + 1) % s->nidx;
	s->idx[k] = i;
}

/* Grow rows and index (index at most half full). */
static void
set_grow(struct spend_set *s)
{
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 64;
		s->v = xreallocarray(s->v, s->cap, sizeof *s->v);
	}
	if (2 * (s->n + 1) <= s->nidx)
		return;
	free(s->idx);
	s->nidx = s->nidx ? s->nidx * 2 : 128;
	s->idx = xreallocarray(NULL, s->nidx, sizeof *s->idx);
	for (size_t k = 0; k < s->nidx; k++)
		s->idx[k] = SIZE_MAX;
	for (size_t i = 0; i < s->n; i++)
		set_index(s, i);
}

/* Index of the row with r's key, or -1. */
long
spend_set_find(const struct spend_set *s, const struct spend_row *r)
{
	size_t k;

	if (s->nidx == 0)
		return -1;
	for (k = row_hash(r) % s->nidx; s->idx[k] != SIZE_MAX;
	     k = (k + 1) % s->nidx)
		if (row_same(&s->v[s->idx[k]], r))
			return (long)s->idx[k];
	return -1;
}

/* Add r: summed into the row with its key, else appended. */
void
spend_set_add(struct spend_set *s, const struct spend_row *r)
{
	long i = spend_set_find(s, r);
	struct spend_vals *v;

	if (i < 0) {
		set_grow(s);
		s->v[s->n] = *r;
		set_index(s, s->n++);
		return;
	}
	v = &s->v[i].v;
	v->nusd += r->v.nusd;
	v->requests += r->v.requests;
	v->tokens_in += r->v.tokens_in;
	v->tokens_out += r->v.tokens_out;
	v->cached_in += r->v.cached_in;
}

/* Free the set's memory. */
void
spend_set_free(struct spend_set *s)
{
	free(s->v);
	free(s->idx);
	memset(s, 0, sizeof *s);
}

/* A copy of ledger entry e (ready) as a row. */
void
spend_row_of(const struct spend_sh *e, struct spend_row *r)
{
	memset(r, 0, sizeof *r);
	r->day = e->day;
	memcpy(r->client, e->client, sizeof r->client - 1);
	memcpy(r->deployment, e->deployment, sizeof r->deployment - 1);
	memcpy(r->model, e->model, sizeof r->model - 1);
	r->v.nusd = atomic_load_explicit(&e->nusd, memory_order_relaxed);
	r->v.requests =
	    atomic_load_explicit(&e->requests, memory_order_relaxed);
	r->v.tokens_in =
	    atomic_load_explicit(&e->tokens_in, memory_order_relaxed);
	r->v.tokens_out =
	    atomic_load_explicit(&e->tokens_out, memory_order_relaxed);
	r->v.cached_in =
	    atomic_load_explicit(&e->cached_in, memory_order_relaxed);
}

/* Every ready entry of the ledger. */
void
spend_from_table(const struct shm *t, struct spend_set *s)
{
	struct spend_row r;

	for (int i = 0; t != NULL && i < SHM_NSPEND; i++) {
		const struct spend_sh *e = &t->ledger[i];

		if (atomic_load_explicit(&e->state, memory_order_acquire) !=
		    SPEND_READY)
			continue;
		spend_row_of(e, &r);
		spend_set_add(s, &r);
	}
}

/* More spent first, then by name. */
static int
row_cmp(const void *a, const void *b)
{
	const struct spend_row *x = a, *y = b;
	int c;

	if (x->v.nusd != y->v.nusd)
		return x->v.nusd > y->v.nusd ? -1 : 1;
	if ((c = strcmp(x->client, y->client)) != 0)
		return c;
	if ((c = strcmp(x->deployment, y->deployment)) != 0)
		return c;
	return strcmp(x->model, y->model);
}

/* Sum rows by one name from day since on; see spend.h. */
void
spend_group(const struct spend_set *in, int by, uint32_t since,
            struct spend_set *out)
{
	struct spend_row r;

	for (size_t i = 0; i < in->n; i++) {
		if (in->v[i].day < since)
			continue;
		memset(&r, 0, sizeof r);
		r.v = in->v[i].v;
		if (by == SPEND_BY_CLIENT)
			memcpy(r.client, in->v[i].client, sizeof r.client);
		else if (by == SPEND_BY_DEPLOYMENT)
			memcpy(r.deployment, in->v[i].deployment,
			       sizeof r.deployment);
		else
			memcpy(r.model, in->v[i].model, sizeof r.model);
		spend_set_add(out, &r);
	}
	if (out->n > 1) {
		qsort(out->v, out->n, sizeof *out->v, row_cmp);
		for (size_t k = 0; k < out->nidx; k++)
			out->idx[k] = SIZE_MAX;
		for (size_t i = 0; i < out->n; i++)
			set_index(out, i);
	}
}

/* The ledger's rows, and the file's that the ledger lacks. */
void
spend_merge(const struct spend_set *table, const struct spend_set *file,
            struct spend_set *out)
{
	for (size_t i = 0; i < table->n; i++)
		spend_set_add(out, &table->v[i]);
	for (size_t i = 0; i < file->n; i++)
		if (spend_set_find(table, &file->v[i]) < 0)
			spend_set_add(out, &file->v[i]);
}

/* ---- the file ---- */

/* Append field v with tab, newline and backslash escaped. */
static void
put_field(struct buf *b, const char *v)
{
	for (; *v != '\0'; v++) {
		if (*v == '\t')
			buf_adds(b, "\\t");
		else if (*v == '\n')
			buf_adds(b, "\\n");
		else if (*v == '\\')
			buf_adds(b, "\\\\");
		else
			buf_addc(b, *v);
	}
	buf_addc(b, '\t');
}

/* Undo put_field into dst (n bytes); -1 on a bad escape or overflow. */
static int
get_field(const char *f, char *dst, size_t n)
{
	size_t k = 0;

	for (; *f != '\0'; f++) {
		char c = *f;

		if (c == '\\') {
			f++;
			c = *f == 't' ? '\t' : *f == 'n' ? '\n' : *f;
			if (c != '\t' && c != '\n' && c != '\\')
				return -1;
		}
		if (k + 1 >= n)
			return -1;
		dst[k++] = c;
	}
	dst[k] = '\0';
	return 0;
}

/* Parse a decimal u64 field. */
static int
get_u64(const char *f, uint64_t *out)
{
	char *end;

	if (*f < '0' || *f > '9')
		return -1;
	errno = 0;
	*out = strtoull(f, &end, 10);
	return errno || *end != '\0' ? -1 : 0;
}

/* Parse one data line (NUL-terminated, no newline) into r. */
static const char *
parse_row(char *ln, struct spend_row *r)
{
	char *f[NFIELDS];
	int n = 0;

	memset(r, 0, sizeof *r);
	for (char *p = ln;; p++) { /* split on tabs, keeping empty fields */
		if (n == NFIELDS)
			return "too many fields";
		f[n++] = p;
		if ((p = strchr(p, '\t')) == NULL)
			break;
		*p = '\0';
	}
	if (n != NFIELDS)
		return "expected 9 tab-separated fields";
	if (spend_parse_day(f[0], &r->day) == -1)
		return "bad day (expected YYYY-MM-DD)";
	if (get_field(f[1], r->client, sizeof r->client) == -1 ||
	    get_field(f[2], r->deployment, sizeof r->deployment) == -1 ||
	    get_field(f[3], r->model, sizeof r->model) == -1)
		return "bad or overlong name";
	if (get_u64(f[4], &r->v.nusd) == -1 ||
	    get_u64(f[5], &r->v.requests) == -1 ||
	    get_u64(f[6], &r->v.tokens_in) == -1 ||
	    get_u64(f[7], &r->v.tokens_out) == -1 ||
	    get_u64(f[8], &r->v.cached_in) == -1)
		return "bad number";
	return NULL;
}

/* Check the text of a spend file and add its rows; the reason or NULL,
 * with *line at the failing line. */
static const char *
parse_text(char *text, struct spend_set *s, int *line)
{
	char *ln = text, *nl;
	struct spend_row r;
	unsigned long long want;
	const char *why;
	size_t rows = 0;

	*line = 1;
	if ((nl = strchr(ln, '\n')) == NULL)
		return "truncated";
	*nl = '\0';
	if (strcmp(ln, FILE_HEADER) != 0)
		return "not an llmfd spend file (bad first line)";
	for (ln = nl + 1;; ln = nl + 1) {
		(*line)++;
		if ((nl = strchr(ln, '\n')) == NULL)
			return "truncated (no end line)";
		*nl = '\0';
		if (strncmp(ln, "# end ", 6) == 0)
			break;
		if ((why = parse_row(ln, &r)) != NULL)
			return why;
		spend_set_add(s, &r);
		rows++;
	}
	if (sscanf(ln + 6, "%llu", &want) != 1 || want != rows)
		return "the end line's row count differs (file damaged)";
	return nl[1] != '\0' ? "text after the end line" : NULL;
}

/* Read a spend file. */
int
spend_load(const char *path, struct spend_set *s, char **cause)
{
	struct buf b = {0};
	char tmp[8192];
	const char *why;
	ssize_t n;
	int fd, line = 0;

	*cause = NULL;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		if (errno == ENOENT)
			return 0;
		xasprintf(cause, "%s: cannot read: %s", path, strerror(errno));
		return -1;
	}
	while ((n = read(fd, tmp, sizeof tmp)) > 0)
		buf_add(&b, tmp, (size_t)n);
	close(fd);
	if (n == -1 || b.oom) {
		xasprintf(cause, "%s: cannot read: %s", path,
		          n == -1 ? strerror(errno) : "out of memory");
		buf_free(&b);
		return -1;
	}
	if (memchr(buf_cstr(&b), '\0', b.len) != NULL)
		why = "contains a NUL byte (file damaged)";
	else
		why = parse_text(b.data, s, &line);
	buf_free(&b);
	if (why == NULL)
		return 0;
	xasprintf(cause, "%s:%d: %s", path, line, why);
	return -1;
}

/* The text of a spend file for set s (rows from keep_from on). */
static void
file_text(struct buf *b, const struct spend_set *s, uint32_t keep_from)
{
	char day[16];
	size_t rows = 0;

	buf_adds(b, FILE_HEADER "\n");
	for (size_t i = 0; i < s->n; i++) {
		const struct spend_row *r = &s->v[i];

		if (r->day < keep_from)
			continue;
		spend_fmt_day(day, sizeof day, r->day);
		buf_printf(b, "%s\t", day);
		put_field(b, r->client);
		put_field(b, r->deployment);
		put_field(b, r->model);
		buf_printf(b, "%llu\t%llu\t%llu\t%llu\t%llu\n",
		           (unsigned long long)r->v.nusd,
		           (unsigned long long)r->v.requests,
		           (unsigned long long)r->v.tokens_in,
		           (unsigned long long)r->v.tokens_out,
		           (unsigned long long)r->v.cached_in);
		rows++;
	}
	buf_printf(b, "# end %zu\n", rows);
}

/* Write all of p, n bytes, to fd. */
static int
write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t k = write(fd, p, n);

		if (k == -1 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

/* fsync the directory of path, so a rename in it is durable. */
static int
sync_dir(const char *path)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');
	int fd, rc;

	if (slash == NULL)
		snprintf(dir, sizeof dir, ".");
	else
		snprintf(dir, sizeof dir, "%.*s",
		         slash == path ? 1 : (int)(slash - path), path);
	if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return -1;
	rc = fsync(fd);
	close(fd);
	return rc;
}

/* Write the set atomically. */
int
spend_save(const char *path, const struct spend_set *s, uint32_t keep_from)
{
	char tmp[PATH_MAX];
	struct buf b = {0};
	int fd, saved;

	if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
		errno = ENAMETOOLONG;
		return -1;
	}
	file_text(&b, s, keep_from);
	if (b.oom) {
		buf_free(&b);
		errno = ENOMEM;
		return -1;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	if (fd == -1 || write_all(fd, b.data, b.len) == -1 || fsync(fd) == -1)
		goto fail;
	if (close(fd) == -1) {
		fd = -1;
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path) == -1 || sync_dir(path) == -1)
		goto fail;
	buf_free(&b);
	return 0;
fail:
	saved = errno;
	if (fd != -1)
		close(fd);
	unlink(tmp);
	buf_free(&b);
	errno = saved;
	return -1;
}
