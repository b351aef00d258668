/* Allocation that dies on failure, for start-up and config code only
 * (tmux xmalloc.c). Request paths check and fail the one request. */
#ifndef LLMFD_XMALLOC_H
#define LLMFD_XMALLOC_H

#include <stddef.h>

void *xmalloc(size_t);
void *xcalloc(size_t, size_t);
void *xreallocarray(void *, size_t, size_t);
char *xstrdup(const char *);
int xasprintf(char **, const char *, ...) __attribute__((format(printf, 2, 3)));

#endif
