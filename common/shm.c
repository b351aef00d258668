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
	       SHM_NEVENTS * sizeof(struct event_sh);
}

static void
shm_map_parts(struct shm *s, void *p)
{
	s->hdr = p;
	s->slots = (struct slot_sh *)((char *)p + sizeof(struct shm_hdr_sh));
	s->events = (struct event_sh *)((char *)s->slots +
	                                SHM_NSLOTS * sizeof(struct slot_sh));
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
	         filesz < shm_layout_size())
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
 * Seqlock read of the config block into out (counters are not copied).
 * A writer holds the odd count for a few stores; one that was killed
 * mid-write, or a damaged file, leaves it odd for good, so the retries are
 * bounded: spin a little, then yield, then give up.
 */
int
shm_read_cfg(const struct slot_sh *sl, struct slot_sh *out)
{
	uint32_t a, b;
	int tries = 0;

	for (;;) {
		if (++tries > SHM_SEQ_TRIES)
			return -1;
		if (tries > SHM_SEQ_TRIES / 2)
			sched_yield();
		a = atomic_load_explicit(&sl->seq, memory_order_acquire);
		if (a & 1)
			continue;
		memcpy(out->name, sl->name, sizeof out->name);
		memcpy(out->group, sl->group, sizeof out->group);
		memcpy(out->provider, sl->provider, sizeof out->provider);
		memcpy(out->model, sl->model, sizeof out->model);
		out->cfg_weight = sl->cfg_weight;
		out->cfg_index = sl->cfg_index;
		out->rpm = sl->rpm;
		out->tpm = sl->tpm;
		atomic_thread_fence(memory_order_acquire);
		b = atomic_load_explicit(&sl->seq, memory_order_relaxed);
		if (a == b)
			break;
	}
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
	atomic_fetch_add_explicit(&sl->seq, 1, memory_order_acq_rel);
	atomic_thread_fence(memory_order_release);
}

/* Master: close a config-block write (seq becomes even). */
void
shm_write_cfg_end(struct slot_sh *sl)
{
	atomic_thread_fence(memory_order_release);
	atomic_fetch_add_explicit(&sl->seq, 1, memory_order_release);
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
shm_event_add(struct shm *s, int type, int slot, const char *text)
{
	uint64_t pos = atomic_fetch_add(&s->hdr->ev_head, 1);
	struct event_sh *e = &s->events[pos % SHM_NEVENTS];

	atomic_store_explicit(&e->seq, 0, memory_order_release);
	e->wall_ms = clock_wall_ms();
	e->type = type;
	e->slot = slot;
	snprintf(e->text, sizeof e->text, "%s", text);
	atomic_store_explicit(&e->seq, pos + 1, memory_order_release);
}
