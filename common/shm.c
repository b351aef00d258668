#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/secret.h"
#include "common/shm.h"

_Static_assert(sizeof(struct slot_sh) % 64 == 0, "slot not cache aligned");
_Static_assert(sizeof(struct event_sh) % 64 == 0, "event not aligned");
_Static_assert(sizeof(struct shm_hdr_sh) % 64 == 0, "header not aligned");
_Static_assert(sizeof(struct client_sh) % 64 == 0, "client not aligned");
_Static_assert(sizeof(struct spend_sh) % 64 == 0, "spend not aligned");

#define RLX memory_order_relaxed

static char *
shm_cause(const char *what, const char *path)
{
	char *s = NULL;

	if (asprintf(&s, "%s %s: %s", what, path, strerror(errno)) == -1)
		s = NULL;
	return s;
}

/* Bytes in the whole file. */
size_t
shm_layout_size(void)
{
	return sizeof(struct shm_hdr_sh) + SHM_NSLOTS * sizeof(struct slot_sh) +
	       SHM_NEVENTS * sizeof(struct event_sh) +
	       SHM_NCLIENTS * sizeof(struct client_sh) +
	       SHM_NSPEND * sizeof(struct spend_sh);
}

static void
shm_map_parts(struct shm *s, void *p)
{
	s->hdr = p;
	s->slots = (struct slot_sh *)((char *)p + sizeof(struct shm_hdr_sh));
	s->events = (struct event_sh *)((char *)s->slots +
	                                SHM_NSLOTS * sizeof(struct slot_sh));
	s->clients =
	    (struct client_sh *)((char *)s->events +
	                         SHM_NEVENTS * sizeof(struct event_sh));
	s->ledger =
	    (struct spend_sh *)((char *)s->clients +
	                        SHM_NCLIENTS * sizeof(struct client_sh));
}

/* Create the table file afresh (mode 0640) and initialise its header. The
 * file is built under a temporary name and renamed into place, so an
 * llmfctl never maps a half-made table. */
int
shm_create(struct shm *s, const char *path, char **cause)
{
	char tmp[4096];
	size_t sz = shm_layout_size();
	void *p;
	int fd;

	memset(s, 0, sizeof *s);
	s->fd = -1;
	if (snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid()) >=
	    (int)sizeof tmp) {
		errno = ENAMETOOLONG;
		*cause = shm_cause("path too long:", path);
		return -1;
	}
	unlink(tmp);
	if ((fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0640)) ==
	    -1) {
		*cause = shm_cause("open() failed for", tmp);
		return -1;
	}
	if (fchmod(fd, 0640) == -1 || ftruncate(fd, (off_t)sz) == -1) {
		*cause = shm_cause("ftruncate() failed for", tmp);
		goto fail;
	}
	p = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		*cause = shm_cause("mmap() failed for", tmp);
		goto fail;
	}
	memset(p, 0, sz);
	shm_map_parts(s, p);
	s->hdr->version = SHM_VERSION;
	s->hdr->hdr_size = sizeof(struct shm_hdr_sh);
	s->hdr->slot_size = sizeof(struct slot_sh);
	s->hdr->nslots = SHM_NSLOTS;
	s->hdr->event_size = sizeof(struct event_sh);
	s->hdr->nevents = SHM_NEVENTS;
	s->hdr->client_size = sizeof(struct client_sh);
	s->hdr->nclients = SHM_NCLIENTS;
	s->hdr->spend_size = sizeof(struct spend_sh);
	s->hdr->nspend = SHM_NSPEND;
	atomic_store(&s->hdr->master_pid, (int32_t)getpid());
	atomic_thread_fence(memory_order_release);
	s->hdr->magic = SHM_MAGIC;
	if (rename(tmp, path) == -1) {
		*cause = shm_cause("rename() failed for", path);
		munmap(p, sz);
		goto fail;
	}
	s->size = sz;
	s->fd = fd;
	s->writable = 1;
	return 0;
fail:
	close(fd);
	unlink(tmp);
	memset(s, 0, sizeof *s);
	s->fd = -1;
	return -1;
}

static int
shm_check(const struct shm_hdr_sh *h, size_t filesz, char **cause,
          const char *path)
{
	const char *why = NULL;

	if (filesz < sizeof *h || h->magic != SHM_MAGIC)
		why = "not an llmfd health table (bad magic)";
	else if (h->version != SHM_VERSION)
		why = "health table layout version differs from this program's";
	else if (h->hdr_size != sizeof(struct shm_hdr_sh) ||
	         h->slot_size != sizeof(struct slot_sh) ||
	         h->event_size != sizeof(struct event_sh) ||
	         h->nslots != SHM_NSLOTS || h->nevents != SHM_NEVENTS ||
	         h->client_size != sizeof(struct client_sh) ||
	         h->nclients != SHM_NCLIENTS ||
	         h->spend_size != sizeof(struct spend_sh) ||
	         h->nspend != SHM_NSPEND || filesz < shm_layout_size())
		why = "health table record size differs from this program's";
	if (why == NULL)
		return 0;
	if (asprintf(cause, "%s: %s (file version %u, expected %u)", path, why,
	             filesz >= sizeof *h ? h->version : 0, SHM_VERSION) == -1)
		*cause = NULL;
	return -1;
}

/* Map an existing table, read-only or read-write, after checking its
 * magic, version and record sizes. */
int
shm_attach(struct shm *s, const char *path, int writable, char **cause)
{
	struct stat st;
	void *p;
	int fd;

	memset(s, 0, sizeof *s);
	s->fd = -1;
	if ((fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC)) ==
	    -1) {
		*cause = shm_cause("cannot open health table", path);
		return -1;
	}
	if (fstat(fd, &st) == -1) {
		*cause = shm_cause("fstat() failed for", path);
		close(fd);
		return -1;
	}
	if ((size_t)st.st_size < sizeof(struct shm_hdr_sh)) {
		errno = EINVAL;
		shm_check(&(struct shm_hdr_sh){0}, (size_t)st.st_size, cause,
		          path);
		close(fd);
		return -1;
	}
	p = mmap(NULL, (size_t)st.st_size,
	         PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		*cause = shm_cause("mmap() failed for", path);
		close(fd);
		return -1;
	}
	if (shm_check(p, (size_t)st.st_size, cause, path) == -1) {
		munmap(p, (size_t)st.st_size);
		close(fd);
		return -1;
	}
	shm_map_parts(s, p);
	s->size = (size_t)st.st_size;
	s->fd = fd;
	s->writable = writable;
	return 0;
}

/* Unmap and close. */
void
shm_detach(struct shm *s)
{
	if (s->hdr)
		munmap(s->hdr, s->size);
	if (s->fd != -1)
		close(s->fd);
	memset(s, 0, sizeof *s);
	s->fd = -1;
}

/* Index of the live slot with this name, or -1. */
int
shm_find(const struct shm *s, const char *name)
{
	for (int i = 0; i < SHM_NSLOTS; i++) {
		const struct slot_sh *sl = &s->slots[i];
		uint32_t st = atomic_load(&sl->state);

		if (st != SLOT_FREE &&
		    strncmp(sl->name, name, sizeof sl->name) == 0)
			return i;
	}
	return -1;
}

/*
 * Seqlock read: copy(out, in) until it ran with seq even and unchanged.
 * A writer holds the odd count for a few stores; one that was killed
 * mid-write, or a damaged file, leaves it odd for good, so the retries are
 * bounded: spin a little, then yield, then give up (-1).
 */
static int
shm_seq_read(const au32 *seq, void (*copy)(void *, const void *), void *out,
             const void *in)
{
	uint32_t a, b;

	for (int tries = 1; tries <= SHM_SEQ_TRIES; tries++) {
		if (tries > SHM_SEQ_TRIES / 2)
			sched_yield();
		a = atomic_load_explicit(seq, memory_order_acquire);
		if (a & 1)
			continue;
		copy(out, in);
		atomic_thread_fence(memory_order_acquire);
		b = atomic_load_explicit(seq, memory_order_relaxed);
		if (a == b)
			return 0;
	}
	return -1;
}

/* Open a seqlock write (seq becomes odd). */
static void
shm_seq_begin(au32 *seq)
{
	atomic_fetch_add_explicit(seq, 1, memory_order_acq_rel);
	atomic_thread_fence(memory_order_release);
}

/* Close a seqlock write (seq becomes even). */
static void
shm_seq_end(au32 *seq)
{
	atomic_thread_fence(memory_order_release);
	atomic_fetch_add_explicit(seq, 1, memory_order_release);
}

/* A slot's config block (counters are not copied). */
static void
shm_copy_cfg(void *o, const void *i)
{
	struct slot_sh *out = o;
	const struct slot_sh *sl = i;

	memcpy(out->name, sl->name, sizeof out->name);
	memcpy(out->group, sl->group, sizeof out->group);
	memcpy(out->provider, sl->provider, sizeof out->provider);
	memcpy(out->model, sl->model, sizeof out->model);
	out->cfg_weight = sl->cfg_weight;
	out->cfg_index = sl->cfg_index;
	out->rpm = sl->rpm;
	out->tpm = sl->tpm;
}

/* Seqlock read of the config block into out (bounded: shm_seq_read). */
int
shm_read_cfg(const struct slot_sh *sl, struct slot_sh *out)
{
	if (shm_seq_read(&sl->seq, shm_copy_cfg, out, sl) == -1)
		return -1;
	out->name[sizeof out->name - 1] = '\0';
	out->group[sizeof out->group - 1] = '\0';
	out->provider[sizeof out->provider - 1] = '\0';
	out->model[sizeof out->model - 1] = '\0';
	return 0;
}

/* Master: open a config-block write (seq becomes odd). */
void
shm_write_cfg_begin(struct slot_sh *sl)
{
	shm_seq_begin(&sl->seq);
}

/* Master: close a config-block write (seq becomes even). */
void
shm_write_cfg_end(struct slot_sh *sl)
{
	shm_seq_end(&sl->seq);
}

/* Histogram bucket for a duration in microseconds. */
int
shm_hist_bucket(int64_t us)
{
	int64_t bound = 250;

	for (int k = 0; k < SHM_HIST; k++, bound <<= 1)
		if (us <= bound)
			return k;
	return SHM_HIST;
}

/* Upper bound of bucket k in microseconds (INT64_MAX for the last). */
int64_t
shm_hist_bound_us(int k)
{
	return k >= SHM_HIST ? INT64_MAX : (int64_t)250 << k;
}

/* Record one sample. */
void
shm_hist_add(struct hist_sh *h, int64_t us)
{
	if (us < 0)
		us = 0;
	atomic_fetch_add_explicit(&h->b[shm_hist_bucket(us)], 1, RLX);
	atomic_fetch_add_explicit(&h->sum_us, (uint64_t)us, RLX);
	atomic_fetch_add_explicit(&h->count, 1, RLX);
}

/* Quantile estimate by linear interpolation inside the bucket. */
int64_t
shm_hist_quantile(const struct hist_sh *h, double q)
{
	uint64_t b[SHM_HIST + 1], total = 0, acc = 0;
	double rank;

	for (int k = 0; k <= SHM_HIST; k++)
		total += b[k] = atomic_load_explicit(&h->b[k], RLX);
	if (total == 0)
		return 0;
	rank = q * (double)total;
	for (int k = 0; k <= SHM_HIST; k++) {
		int64_t lo = k == 0 ? 0 : shm_hist_bound_us(k - 1);
		int64_t hi = k == SHM_HIST ? lo * 2 : shm_hist_bound_us(k);

		if (b[k] && (double)(acc + b[k]) >= rank) {
			double f = (rank - (double)acc) / (double)b[k];
			return lo + (int64_t)(f * (double)(hi - lo));
		}
		acc += b[k];
	}
	return shm_hist_bound_us(SHM_HIST - 1);
}

/* In-flight requests summed over every worker. */
int32_t
shm_inflight(const struct slot_sh *sl)
{
	int32_t n = 0;

	for (int w = 0; w < SHM_MAX_WORKERS; w++)
		n += atomic_load_explicit(&sl->inflight[w], RLX);
	return n < 0 ? 0 : n;
}

/* Effective weight: llmfctl's override, else the configured one. */
int32_t
shm_weight(const struct slot_sh *sl)
{
	int32_t w = atomic_load_explicit(&sl->live_weight, RLX);

	return w >= 0 ? w : sl->cfg_weight;
}

/* Record the last error; skipped if another writer is mid-write. */
void
shm_set_error(struct slot_sh *sl, int status, int cls, const char *text)
{
	uint32_t s = atomic_load_explicit(&sl->err_seq, RLX);

	if ((s & 1) || !atomic_compare_exchange_strong(&sl->err_seq, &s, s + 1))
		return;
	atomic_thread_fence(memory_order_release);
	sl->err_wall_ms = clock_wall_ms();
	sl->err_status = status;
	sl->err_class = cls;
	snprintf(sl->err_text, sizeof sl->err_text, "%s", text);
	secret_redact(sl->err_text);
	atomic_store_explicit(&sl->err_seq, s + 2, memory_order_release);
}

/* Consistent copy of the last error. */
int
shm_get_error(const struct slot_sh *sl, char *out, size_t outsz, int *status,
              int *cls, int64_t *wall_ms)
{
	uint32_t a, b;
	int tries = 0;

	do {
		a = atomic_load_explicit(&sl->err_seq, memory_order_acquire);
		if (a & 1) {
			if (++tries > 1000)
				return -1;
			continue;
		}
		snprintf(out, outsz, "%.*s", (int)sizeof sl->err_text - 1,
		         sl->err_text);
		*status = sl->err_status;
		*cls = sl->err_class;
		*wall_ms = sl->err_wall_ms;
		atomic_thread_fence(memory_order_acquire);
		b = atomic_load_explicit(&sl->err_seq, memory_order_relaxed);
	} while ((a & 1) || a != b);
	return a == 0 ? -1 : 0;
}

static const char *const ev_names[SHM_EV__MAX] = {
    [SHM_EV_FALLBACK] = "fallback",
    [SHM_EV_COOLDOWN_START] = "cooldown_start",
    [SHM_EV_COOLDOWN_END] = "cooldown_end",
    [SHM_EV_CIRCUIT_OPEN] = "circuit_open",
    [SHM_EV_CIRCUIT_HALF_OPEN] = "circuit_half_open",
    [SHM_EV_CIRCUIT_CLOSE] = "circuit_close",
    [SHM_EV_ADMIN] = "admin",
    [SHM_EV_RELOAD] = "reload",
    [SHM_EV_BUDGET] = "budget_spent",
    [SHM_EV_FLEET] = "fleet",
};

/* Name of an event type. */
const char *
shm_event_name(int t)
{
	return (t > 0 && t < SHM_EV__MAX) ? ev_names[t] : "unknown";
}

/* Append an event to the ring: claim a position, fill, then publish. */
void
shm_event_add_client(struct shm *s, int type, int slot, const char *client,
                     int64_t nusd, const char *text)
{
	uint64_t pos = atomic_fetch_add(&s->hdr->ev_head, 1);
	struct event_sh *e = &s->events[pos % SHM_NEVENTS];

	atomic_store_explicit(&e->seq, 0, memory_order_release);
	e->wall_ms = clock_wall_ms();
	e->type = type;
	e->slot = slot;
	snprintf(e->text, sizeof e->text, "%s", text);
	snprintf(e->client, sizeof e->client, "%s", client ? client : "");
	e->nusd = nusd;
	atomic_store_explicit(&e->seq, pos + 1, memory_order_release);
}

/* An event that concerns no client. */
void
shm_event_add(struct shm *s, int type, int slot, const char *text)
{
	shm_event_add_client(s, type, slot, NULL, 0, text);
}

static const char *const refusal_names[CREF__MAX] = {
    [CREF_FORBIDDEN] = "forbidden",
    [CREF_RPM] = "rpm",
    [CREF_TPM] = "tpm",
    [CREF_CONCURRENT] = "concurrency",
    [CREF_BUDGET] = "budget",
    [CREF_SHED] = "shed"};

/* Name of a refusal reason. */
const char *
shm_refusal_name(int r)
{
	return (r >= 0 && r < CREF__MAX) ? refusal_names[r] : "?";
}

/* Index of the live client record with this name, or -1. */
int
shm_find_client(const struct shm *s, const char *name)
{
	for (int i = 0; i < SHM_NCLIENTS; i++) {
		const struct client_sh *c = &s->clients[i];

		if (atomic_load(&c->state) != SLOT_FREE &&
		    strncmp(c->name, name, sizeof c->name) == 0)
			return i;
	}
	return -1;
}

/* A client's config block. */
static void
shm_copy_client(void *o, const void *i)
{
	struct client_sh *out = o;
	const struct client_sh *c = i;

	memcpy(out->name, c->name, sizeof out->name);
	memcpy(out->ident, c->ident, sizeof out->ident);
	out->cfg_index = c->cfg_index;
	out->priority = c->priority;
	out->max_concurrent = c->max_concurrent;
	out->rpm = c->rpm;
	out->tpm = c->tpm;
	out->daily_nusd = c->daily_nusd;
	out->monthly_nusd = c->monthly_nusd;
}

/* Seqlock read of a client's config block into out (bounded, as
 * shm_read_cfg). */
int
shm_read_client(const struct client_sh *c, struct client_sh *out)
{
	if (shm_seq_read(&c->seq, shm_copy_client, out, c) == -1)
		return -1;
	out->name[sizeof out->name - 1] = '\0';
	out->ident[sizeof out->ident - 1] = '\0';
	return 0;
}

/* Master: open a client config-block write. */
void
shm_write_client_begin(struct client_sh *c)
{
	shm_seq_begin(&c->seq);
}

/* Master: close a client config-block write. */
void
shm_write_client_end(struct client_sh *c)
{
	shm_seq_end(&c->seq);
}

/* A client's requests in flight over every worker column. */
int32_t
shm_client_inflight(const struct client_sh *c)
{
	int32_t n = 0;

	for (int w = 0; w < SHM_MAX_WORKERS; w++)
		n += atomic_load_explicit(&c->inflight[w], RLX);
	return n < 0 ? 0 : n;
}

/* Requests of class prio waiting for capacity, over every worker. */
int32_t
shm_waiting(const struct shm *s, int prio)
{
	int32_t n = 0;

	if (prio < 0 || prio >= SHM_NPRIO)
		return 0;
	for (int w = 0; w < SHM_MAX_WORKERS; w++)
		n += atomic_load_explicit(&s->hdr->waiting[w][prio], RLX);
	return n < 0 ? 0 : n;
}

#define SPEND_PROBES 64

/* FNV-1a of a ledger key; see shm.h. */
uint64_t
shm_spend_hash(uint32_t day, const char *client, const char *dep,
               const char *model)
{
	const char *parts[3] = {client, dep, model};
	uint64_t h = 0xcbf29ce484222325ULL ^ day;

	for (int i = 0; i < 3; i++) {
		for (const char *p = parts[i]; *p != '\0'; p++)
			h = (h ^ (unsigned char)*p) * 0x100000001b3ULL;
		h = (h ^ 0xff) * 0x100000001b3ULL;
	}
	return h;
}

/* Whether ready entry e has this key. */
static int
spend_is(const struct spend_sh *e, uint32_t day, const char *client,
         const char *dep, const char *model)
{
	return e->day == day &&
	       strncmp(e->client, client, sizeof e->client) == 0 &&
	       strncmp(e->deployment, dep, sizeof e->deployment) == 0 &&
	       strncmp(e->model, model, sizeof e->model) == 0;
}

/* Add one priced answer to its ledger entry; see shm.h. */
int
shm_spend_add(struct shm *s, uint32_t day, const char *client, const char *dep,
              const char *model, const struct spend_vals *v)
{
	uint64_t h = shm_spend_hash(day, client, dep, model);
	struct spend_sh *e = NULL;

	for (int i = 0; i < SPEND_PROBES && e == NULL; i++) {
		struct spend_sh *c = &s->ledger[(h + (uint64_t)i) % SHM_NSPEND];
		uint32_t st =
		    atomic_load_explicit(&c->state, memory_order_acquire);

		if (st == SPEND_READY && spend_is(c, day, client, dep, model))
			e = c;
		else if (st == SPEND_FREE &&
		         atomic_compare_exchange_strong(&c->state, &st,
		                                        SPEND_CLAIMED)) {
			c->day = day;
			snprintf(c->client, sizeof c->client, "%s", client);
			snprintf(c->deployment, sizeof c->deployment, "%s",
			         dep);
			snprintf(c->model, sizeof c->model, "%s", model);
			atomic_store_explicit(&c->nusd, 0, RLX);
			atomic_store_explicit(&c->requests, 0, RLX);
			atomic_store_explicit(&c->tokens_in, 0, RLX);
			atomic_store_explicit(&c->tokens_out, 0, RLX);
			atomic_store_explicit(&c->cached_in, 0, RLX);
			atomic_store_explicit(&c->state, SPEND_READY,
			                      memory_order_release);
			e = c;
		}
	}
	if (e == NULL) {
		atomic_fetch_add_explicit(&s->hdr->ledger_full, 1, RLX);
		return -1;
	}
	atomic_fetch_add_explicit(&e->nusd, v->nusd, RLX);
	atomic_fetch_add_explicit(&e->requests, v->requests, RLX);
	atomic_fetch_add_explicit(&e->tokens_in, v->tokens_in, RLX);
	atomic_fetch_add_explicit(&e->tokens_out, v->tokens_out, RLX);
	atomic_fetch_add_explicit(&e->cached_in, v->cached_in, RLX);
	atomic_fetch_add_explicit(&s->hdr->spend_seq, 1, RLX);
	return 0;
}
