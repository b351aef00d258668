/* Small allocations in a region of their own: see slab.h.
 *
 * One address range is reserved at first use (MAP_NORESERVE: only the
 * pages touched count) and cut into one part per size class; a pointer's
 * class is its part, so freeing needs no header. Each part is a row of
 * pages, each page with its own free list and count of live slots, and a
 * list of the pages with room. slab_trim gives back the pages with no
 * live slot (a page holding one of libevent's long-lived records stays).
 * When a part is used up, requests of its class go to malloc, and
 * pointers outside the range are malloc's. Single-threaded, as each llmfd
 * process is. */
#include <event2/event.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/slab.h"

#define SLAB_CLASSES 6
#define SLAB_PART    ((size_t)64 << 20) /* address space per class */
#define SLAB_PAGE    4096

/* The largest request of each class; slots are 16-byte multiples. Exactly
 * 16 bytes is a class of its own: libevent's per-fd record (struct
 * evmap_io) has that size, and kept apart from the short strings of 9 to
 * 15 bytes that come and go with each request, the records of a burst's
 * descriptors fill few pages instead of pinning many. */
static const size_t slab_top[SLAB_CLASSES] = {8, 15, 16, 32, 48, SLAB_MAX};

/* One page of a class. */
struct slab_page {
	int32_t free;    /* offset of the first free slot, or -1 */
	int32_t next;    /* the next page with room, or -1 */
	uint16_t live;   /* slots handed out */
	uint16_t carved; /* slots ever cut from it (since it was fresh) */
	uint16_t listed; /* on the list of pages with room */
};

/* One size class. */
struct slab_class {
	size_t sz;
	int per_page;
	struct slab_page *pg; /* SLAB_PART / SLAB_PAGE of them */
	int npages;           /* pages touched */
	int room;             /* the first page with room, or -1 */
};

static char *base; /* the range, or NULL */
static int failed; /* mmap refused: malloc only */
static struct slab_class cls[SLAB_CLASSES];
static size_t in_use;

/* An anonymous mapping of n bytes whose pages cost nothing until used. */
static void *
slab_map(size_t n)
{
	void *p = mmap(NULL, n, PROT_READ | PROT_WRITE,
	               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

/* Reserve the range and the page tables; 0, or -1 (then everything goes
 * to malloc). */
static int
slab_reserve(void)
{
	size_t npg = SLAB_PART / SLAB_PAGE;

	if (base)
		return 0;
	if (failed || sysconf(_SC_PAGESIZE) != SLAB_PAGE ||
	    (base = slab_map(SLAB_PART * SLAB_CLASSES)) == NULL) {
		failed = 1;
		return -1;
	}
	for (int k = 0; k < SLAB_CLASSES; k++) {
		cls[k].sz = (slab_top[k] + 15) & ~(size_t)15;
		cls[k].per_page = (int)(SLAB_PAGE / cls[k].sz);
		cls[k].room = -1;
		if ((cls[k].pg = slab_map(npg * sizeof *cls[k].pg)) == NULL) {
			failed = 1;
			base = NULL; /* the mappings stay; nothing uses them */
			return -1;
		}
	}
	return 0;
}

/* The start of page i of class k. */
static char *
slab_page_at(int k, int i)
{
	return base + SLAB_PART * (size_t)k + (size_t)i * SLAB_PAGE;
}

/* Whether page i of c has no free slot left. */
static int
slab_full(const struct slab_class *c, int i)
{
	return c->pg[i].free < 0 && c->pg[i].carved == c->per_page;
}

/* Put page i of c on the list of pages with room (once). */
static void
slab_list(struct slab_class *c, int i)
{
	if (c->pg[i].listed)
		return;
	c->pg[i].listed = 1;
	c->pg[i].next = c->room;
	c->room = i;
}

/* A page of class k with room (a new one if need be), or -1. */
static int
slab_page_with_room(int k)
{
	struct slab_class *c = &cls[k];
	int i;

	while ((i = c->room) >= 0 && slab_full(c, i)) {
		c->room = c->pg[i].next;
		c->pg[i].listed = 0;
	}
	if (i >= 0)
		return i;
	if ((size_t)c->npages == SLAB_PART / SLAB_PAGE)
		return -1;
	i = c->npages++;
	c->pg[i] = (struct slab_page){.free = -1, .next = -1};
	slab_list(c, i);
	return i;
}

/* n bytes: from the slab when small, else malloc. */
void *
slab_malloc(size_t n)
{
	struct slab_class *c;
	struct slab_page *pg;
	char *page;
	int k, i;
	int32_t off;

	if (n == 0)
		n = 1;
	if (n > SLAB_MAX || slab_reserve() == -1)
		return malloc(n);
	for (k = 0; slab_top[k] < n; k++)
		;
	c = &cls[k];
	if ((i = slab_page_with_room(k)) < 0)
		return malloc(n);
	pg = &c->pg[i];
	page = slab_page_at(k, i);
	if (pg->free >= 0) {
		off = pg->free;
		memcpy(&pg->free, page + off, sizeof pg->free);
	} else
		off = (int32_t)(pg->carved++ * c->sz);
	pg->live++;
	in_use += c->sz;
	return page + off;
}

/* The class of a pointer in the range, or -1. */
static int
slab_class_of(const void *p)
{
	if (base == NULL || (const char *)p < base ||
	    (const char *)p >= base + SLAB_PART * SLAB_CLASSES)
		return -1;
	return (int)((size_t)((const char *)p - base) / SLAB_PART);
}

/* Free p, wherever it came from. */
void
slab_free(void *p)
{
	struct slab_class *c;
	struct slab_page *pg;
	size_t off;
	int k, i;

	if (p == NULL)
		return;
	if ((k = slab_class_of(p)) < 0) {
		free(p);
		return;
	}
	c = &cls[k];
	off = (size_t)((char *)p - base) - SLAB_PART * (size_t)k;
	i = (int)(off / SLAB_PAGE);
	pg = &c->pg[i];
	memcpy(p, &pg->free, sizeof pg->free);
	pg->free = (int32_t)(off % SLAB_PAGE);
	pg->live--;
	in_use -= c->sz;
	slab_list(c, i);
}

/* Resize p; a slot keeps its place while n fits it. */
void *
slab_realloc(void *p, size_t n)
{
	int k = p ? slab_class_of(p) : -1;
	size_t have;
	void *q;

	if (p == NULL)
		return slab_malloc(n);
	if (k < 0)
		return realloc(p, n);
	have = cls[k].sz;
	if (n <= have && n > 0)
		return p;
	if ((q = slab_malloc(n)) == NULL)
		return NULL;
	memcpy(q, p, n < have ? n : have);
	slab_free(p);
	return q;
}

/* Give the pages with no live slot back to the system; how many. */
int
slab_trim(void)
{
	struct slab_page *pg;
	int n = 0;

	for (int k = 0; base && k < SLAB_CLASSES; k++)
		for (int i = 0; i < cls[k].npages; i++) {
			pg = &cls[k].pg[i];
			if (pg->live != 0 || pg->carved == 0)
				continue;
			madvise(slab_page_at(k, i), SLAB_PAGE, MADV_DONTNEED);
			pg->free = -1;
			pg->carved = 0;
			slab_list(&cls[k], i);
			n++;
		}
	return n;
}

/* Bytes in slots handed out. */
size_t
slab_in_use(void)
{
	return in_use;
}

/* Route libevent's allocations through the slab (not under ASan, which
 * then checks libevent's memory too, and whose leak scan does not look
 * into this region). */
void
slab_use_for_libevent(void)
{
#ifndef __SANITIZE_ADDRESS__
	event_set_mem_functions(slab_malloc, slab_realloc, slab_free);
#endif
}
