/* Incremental Server-Sent Events parser: bytes in, whole events out. */
#ifndef LLMFD_SSE_H
#define LLMFD_SSE_H

#include <stddef.h>

#include "common/buf.h"

#define SSE_MAX_LINE  (8 << 20) /* a line longer than this is an error */
#define SSE_MAX_EVENT (8 << 20) /* default cap of one event's data */

struct sse {
	struct buf line;  /* partial line carried between feeds */
	struct buf event; /* current event name */
	struct buf data;  /* current data lines, joined with \n */
	int has_data;
	int skip_lf; /* last byte was CR: a following LF is part of it */
};

/* Called per complete event; return non-zero to stop feeding. */
typedef int (*sse_cb)(void *arg, const char *event, size_t elen,
                      const char *data, size_t dlen);

/* Feed bytes. Returns 0, the callback's non-zero value if it stopped, or
 * -1 if a line exceeded SSE_MAX_LINE, an event's data grew past the event
 * cap (sse_set_max_event) or memory ran out. */
int sse_feed(struct sse *, const char *p, size_t n, sse_cb, void *arg);
/* The process-wide cap on one event's data (joined data lines); a stream
 * that never ends its event cannot grow past it. Default SSE_MAX_EVENT. */
void sse_set_max_event(size_t);
void sse_reset(struct sse *);
void sse_free(struct sse *);
/* Free the buffers that hold nothing (their bytes are reallocated when an
 * event arrives): a stream idle between events then holds no buffer. */
void sse_shrink(struct sse *);

#endif
