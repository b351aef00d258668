/* The spend file (issue 17), owned by the master so that no worker does
 * file I/O. At start it is read back: the last two days go into the
 * table's ledger, where workers keep adding, older days stay in the
 * master's memory (hist), and every client's and deployment's spend
 * counters are restored from it, so budgets hold across restarts. Once a
 * second, when anything was spent (or the day turned), days that can no
 * longer grow move from the ledger to hist and the whole is written
 * atomically (spend_save); at exit once more. A crash (kill -9) loses at
 * most the last second; a reload keeps the table, and so everything. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/xmalloc.h"
#include "daemon/daemon.h"

#define RLX           memory_order_relaxed
#define WARN_EVERY_MS 60000

/* Sums of a set's rows for one client or deployment name. */
struct sums {
	uint64_t total, day, month;
};

/* The rows of hist and the table's ledger together. */
static void
state_all(struct master *m, struct spend_set *all)
{
	for (size_t i = 0; i < m->hist.n; i++)
		spend_set_add(all, &m->hist.v[i]);
	spend_from_table(&m->shm, all);
}

/* What name spent in set (as a client when client, else as a
 * deployment): in total, today and this month. */
static struct sums
state_sum(const struct spend_set *all, const char *name, int client,
          uint32_t today)
{
	uint32_t month = spend_month_of_day(today);
	struct sums s = {0, 0, 0};

	for (size_t i = 0; i < all->n; i++) {
		const struct spend_row *r = &all->v[i];

		if (strcmp(client ? r->client : r->deployment, name) != 0)
			continue;
		s.total += r->v.nusd;
		if (r->day == today)
			s.day += r->v.nusd;
		if (spend_month_of_day(r->day) == month)
			s.month += r->v.nusd;
	}
	return s;
}

/* Fill the records new to the table with their recorded spend. */
void
state_restore(struct master *m)
{
	uint32_t today = spend_day(clock_wall_ms());
	struct spend_set all = {0};
	struct sums s;

	state_all(m, &all);
	for (int k = 0; k < SHM_NCLIENTS; k++) {
		struct client_sh *c = &m->shm.clients[k];

		if (!m->fresh_client[k])
			continue;
		m->fresh_client[k] = 0;
		s = state_sum(&all, c->name, 1, today);
		atomic_store_explicit(&c->spend_nusd, s.total, RLX);
		atomic_store_explicit(&c->spend_day, s.day, RLX);
		atomic_store_explicit(&c->day, today, RLX);
		atomic_store_explicit(&c->spend_month, s.month, RLX);
		atomic_store_explicit(&c->month, spend_month_of_day(today),
		                      RLX);
	}
	for (int k = 0; k < SHM_NSLOTS; k++) {
		if (!m->fresh_slot[k])
			continue;
		m->fresh_slot[k] = 0;
		s = state_sum(&all, m->shm.slots[k].name, 0, today);
		atomic_store_explicit(&m->shm.slots[k].spend_nusd, s.total,
		                      RLX);
	}
	spend_set_free(&all);
}

/* Move ledger entries of days before yesterday to hist: no worker adds to
 * them any more. Returns how many moved. */
static int
state_retire(struct master *m, uint32_t today)
{
	struct spend_row r;
	int n = 0;

	for (int i = 0; i < SHM_NSPEND; i++) {
		struct spend_sh *e = &m->shm.ledger[i];

		if (atomic_load(&e->state) != SPEND_READY ||
		    e->day + 1 >= today)
			continue;
		spend_row_of(e, &r);
		spend_set_add(&m->hist, &r);
		atomic_store(&e->state, SPEND_FREE);
		n++;
	}
	return n;
}

/* Drop hist rows older than the kept history. */
static void
state_prune(struct master *m, uint32_t today)
{
	struct spend_set keep = {0};

	for (size_t i = 0; i < m->hist.n; i++)
		if (m->hist.v[i].day + SPEND_HISTORY_DAYS > today)
			spend_set_add(&keep, &m->hist.v[i]);
	spend_set_free(&m->hist);
	m->hist = keep;
}

/* Write the file now; 0 or -1 (logged, at most once a minute). */
static int
state_save(struct master *m, uint32_t today)
{
	struct spend_set all = {0};
	uint64_t seq = atomic_load(&m->shm.hdr->spend_seq);
	int rc;

	state_all(m, &all);
	rc = spend_save(m->state_path, &all,
	                today > SPEND_HISTORY_DAYS ? today - SPEND_HISTORY_DAYS
	                                           : 0);
	spend_set_free(&all);
	if (rc == 0) {
		m->saved_seq = seq;
		m->saved_day = today;
		return 0;
	}
	if (clock_ms() - m->warned_ms >= WARN_EVERY_MS || m->warned_ms == 0) {
		log_warn("cannot write the spend file %s", m->state_path);
		m->warned_ms = clock_ms();
	}
	return -1;
}

/* Put the rows of a loaded file in their places: the last two days into
 * the ledger, older ones into hist. */
static void
state_place(struct master *m, const struct spend_set *f, uint32_t today)
{
	for (size_t i = 0; i < f->n; i++) {
		const struct spend_row *r = &f->v[i];

		if (r->day + 1 >= today &&
		    shm_spend_add(&m->shm, r->day, r->client, r->deployment,
		                  r->model, &r->v) == 0)
			continue;
		spend_set_add(&m->hist, r);
	}
}

/* Start: the directory, the file read back, the counters restored, and a
 * first write (so a state_dir that cannot be written fails the start). */
int
state_open(struct master *m, char **cause)
{
	const char *dir = m->cfg->state_dir;
	uint32_t today = spend_day(clock_wall_ms());
	struct spend_set f = {0};

	m->state_path[0] = '\0';
	if (dir[0] == '\0') {
		state_restore(m);
		for (int i = 0; i < m->cfg->nclient; i++)
			if (m->cfg->clients[i].daily_budget_usd > 0 ||
			    m->cfg->clients[i].monthly_budget_usd > 0) {
				log_warnx("clients have budgets but state_dir "
				          "is not set: spend starts from zero "
				          "at each start");
				break;
			}
		return 0;
	}
	if (mkdir(dir, 0750) == -1 && errno != EEXIST) {
		xasprintf(cause, "state_dir %s: mkdir() failed: %s", dir,
		          strerror(errno));
		return -1;
	}
	if (snprintf(m->state_path, sizeof m->state_path, "%.4000s/%s", dir,
	             SPEND_FILE) >= (int)sizeof m->state_path) {
		xasprintf(cause, "state_dir %s: path too long", dir);
		return -1;
	}
	if (spend_load(m->state_path, &f, cause) == -1) {
		char *why = *cause;

		xasprintf(cause,
		          "%s (move it away to start with no recorded spend)",
		          why);
		free(why);
		spend_set_free(&f);
		return -1;
	}
	state_place(m, &f, today);
	log_info("spend file %s: %zu rows", m->state_path, f.n);
	spend_set_free(&f);
	state_restore(m);
	snprintf(m->shm.hdr->state_file, sizeof m->shm.hdr->state_file, "%.*s",
	         (int)sizeof m->shm.hdr->state_file - 1, m->state_path);
	if (state_save(m, today) == -1) {
		xasprintf(cause, "cannot write the spend file %s: %s",
		          m->state_path, strerror(errno));
		return -1;
	}
	return 0;
}

/* Once a second: retire old days and save when anything changed. */
void
state_tick(struct master *m)
{
	uint32_t today = spend_day(clock_wall_ms());
	int moved;

	if (m->state_path[0] == '\0')
		return;
	moved = state_retire(m, today);
	if (today != m->saved_day)
		state_prune(m, today);
	if (moved == 0 && today == m->saved_day &&
	    atomic_load(&m->shm.hdr->spend_seq) == m->saved_seq)
		return;
	state_save(m, today);
}

/* Exit: the last write, then let go of hist. */
void
state_close(struct master *m)
{
	if (m->state_path[0] != '\0')
		state_save(m, spend_day(clock_wall_ms()));
	spend_set_free(&m->hist);
}
