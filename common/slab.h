/* A size-class allocator for libevent's small objects, apart from the
 * heap. libevent keeps one 16-byte record per file descriptor it has ever
 * watched (evmap) until the event base is freed; made during a burst of
 * connections they end up strewn among the burst's buffers, and after the
 * burst each one keeps its heap page resident, so a worker that served
 * 10,000 streams stayed at tens of MB with a few MB in use. Given their own
 * region (with the other small, short-lived objects of their size: header
 * strings, callback entries), they no longer pin the heap, and the pages
 * of the region that a burst left empty are given back (slab_trim). */
#ifndef LLMFD_SLAB_H
#define LLMFD_SLAB_H

#include <stddef.h>

#define SLAB_MAX 64 /* larger requests go to malloc */

/* Route libevent's allocations through the slab (before libevent
 * allocates anything). Memory libevent hands its caller to free
 * (evhttp_uridecode, evbuffer_readln, ...) is then freed with slab_free,
 * never free. */
void slab_use_for_libevent(void);
void *slab_malloc(size_t);
void *slab_realloc(void *, size_t);
void slab_free(void *);
/* Give back the pages that hold no live slot (an idle worker); how many. */
int slab_trim(void);
/* Bytes in slots handed out (tests). */
size_t slab_in_use(void);

#endif
