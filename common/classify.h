/* Classification of upstream outcomes (PROVIDERS.md section 6). */
#ifndef LLMFD_CLASSIFY_H
#define LLMFD_CLASSIFY_H

#include <stddef.h>
#include <stdint.h>

enum errclass {
	EC_OK = 0,
	EC_TRANSIENT,      /* 5xx, 408, 409, 529, reset, timeout: retry */
	EC_RATE_LIMITED,   /* 429 rate: cool down, next deployment */
	EC_AUTH,           /* 401/403/key/precondition: no retry, cool down */
	EC_QUOTA,          /* billing / quota: as auth, long cool-down */
	EC_NOT_FOUND,      /* 404 model/deployment: next deployment */
	EC_BAD_REQUEST,    /* other 400/413/422: back to the client */
	EC_CONTEXT_WINDOW, /* context overflow: context_window_fallbacks */
	EC_CONTENT_POLICY, /* content filter: content_policy_fallbacks */
	EC_CANCELLED,      /* client went away, or a hedge loser */
	EC__MAX
};

const char *errclass_name(enum errclass);

/* What we learned from one failed upstream reply. */
struct upstream_error {
	enum errclass cls;
	int status;             /* HTTP status, 0 for transport */
	int64_t retry_after_ms; /* from headers or body, -1 if none */
	int should_retry;       /* x-should-retry: 1, 0, or -1 absent */
	char message[256];      /* provider's message (never a key) */
	char type[64];          /* provider's error type / status */
	char code[64];          /* provider's code (string or int) */
};

/* Classify an HTTP error reply from any provider by status and body (the
 * body may be any provider's error JSON, or not JSON at all). Fills e.
 * retry_after_ms / should_retry are left as the caller set them from
 * headers, except that a Gemini RetryInfo.retryDelay in the body fills
 * retry_after_ms when it is -1. */
void classify_http(int status, const char *body, size_t len,
                   struct upstream_error *e);

/* Parse retry hints from header values (any may be NULL): retry-after-ms,
 * x-ms-retry-after-ms, retry-after (seconds or an HTTP date). ms or -1. */
int64_t classify_retry_after(const char *retry_after_ms,
                             const char *x_ms_retry_after_ms,
                             const char *retry_after);

/* True if a message text reads as a context-window overflow. */
int classify_is_context_text(const char *msg);

/* The reason phrase for an HTTP status ("Error" if unknown). */
const char *http_reason(int status);

#endif
