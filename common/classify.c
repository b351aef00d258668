/* Classification of upstream error replies (PROVIDERS.md section 6). */
#include <ctype.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/classify.h"
#include "common/clock.h"
#include "common/json.h"
#include "common/secret.h"

#define MSG_TEXT_MAX 200             /* bytes of a non-JSON body kept */
#define RETRY_MAX_MS 1000000000000LL /* clamp absurd hints (~31 years) */

/* What a body said beyond the fields struct upstream_error keeps. */
struct perr {
	const char *body;
	size_t len;
	char inner[64];  /* Azure error.innererror.code */
	char reason[64]; /* Gemini ErrorInfo.reason */
	int blocked;     /* a content-policy finish or blockReason */
};

static const char *const ec_names[EC__MAX] = {
    [EC_OK] = "ok",
    [EC_TRANSIENT] = "transient",
    [EC_RATE_LIMITED] = "rate_limited",
    [EC_AUTH] = "auth",
    [EC_QUOTA] = "quota",
    [EC_NOT_FOUND] = "not_found",
    [EC_BAD_REQUEST] = "bad_request",
    [EC_CONTEXT_WINDOW] = "context_window",
    [EC_CONTENT_POLICY] = "content_policy",
    [EC_CANCELLED] = "cancelled",
};

/* Short lowercase name of a class. */
const char *
errclass_name(enum errclass c)
{
	if ((int)c < 0 || c >= EC__MAX)
		return "unknown";
	return ec_names[c];
}

/* True if msg reads as a context-window overflow. */
int
classify_is_context_text(const char *msg)
{
	static const char *const pats[] = {
	    "context_length_exceeded",
	    "prompt is too long",
	    "exceed context limit",
	    "input token count",
	    "exceeds the maximum number of tokens",
	    "maximum context length",
	    "exceed_context_size_error",
	    "model_context_window_exceeded",
	    "context window",
	};
	size_t i;

	if (msg == NULL || *msg == '\0')
		return 0;
	for (i = 0; i < sizeof(pats) / sizeof(pats[0]); i++)
		if (strcasestr(msg, pats[i]) != NULL)
			return 1;
	return 0;
}

/* The one table of reason phrases for HTTP statuses (RFC 9110). */
const char *
http_reason(int status)
{
	switch (status) {
	case 0:
		return "Connection failed";
	case 200:
		return "OK";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 402:
		return "Payment Required";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 408:
		return "Request Timeout";
	case 409:
		return "Conflict";
	case 413:
		return "Content Too Large";
	case 422:
		return "Unprocessable Content";
	case 429:
		return "Too Many Requests";
	case 431:
		return "Request Header Fields Too Large";
	case 500:
		return "Internal Server Error";
	case 501:
		return "Not Implemented";
	case 502:
		return "Bad Gateway";
	case 503:
		return "Service Unavailable";
	case 504:
		return "Gateway Timeout";
	case 529:
		return "Overloaded";
	default:
		return "Error";
	}
}

/* Copy a string, or a number's text, from token i into dst. */
static void
copy_field(const struct json *j, int i, char *dst, size_t dstsz)
{
	const char *raw;
	size_t n;
	double d;

	if (json_type(j, i) == JSMN_STRING) {
		json_str(j, i, dst, dstsz);
	} else if (json_num(j, i, &d) == 0) {
		raw = json_raw(j, i, &n);
		if (n >= dstsz)
			n = dstsz - 1;
		memcpy(dst, raw, n);
		dst[n] = '\0';
	}
}

/* Message for a body that is not JSON: its first printable bytes with
 * whitespace runs folded to one space, or the reason phrase. */
static void
text_message(const char *body, size_t len, int status, char *dst, size_t sz)
{
	size_t i, w = 0, max = sz - 1 < MSG_TEXT_MAX ? sz - 1 : MSG_TEXT_MAX;
	int sp = 0;

	for (i = 0; body != NULL && i < len && w < max; i++) {
		unsigned char c = (unsigned char)body[i];

		if (isspace(c))
			sp = w > 0;
		else if (c > 0x20 && c < 0x7f) {
			if (sp && w + 1 < max)
				dst[w++] = ' ';
			sp = 0;
			dst[w++] = (char)c;
		}
	}
	dst[w] = '\0';
	if (w == 0)
		snprintf(dst, sz, "%s", http_reason(status));
}

/* Parse "<number><suffix>" (digits and one optional dot, surrounding
 * spaces allowed) scaled to ms; -1 if malformed. */
static int64_t
parse_num_ms(const char *s, const char *suffix, double scale)
{
	char *end;
	double v;
	size_t i, dots = 0, ndig = 0;

	while (*s == ' ' || *s == '\t')
		s++;
	for (i = 0; isdigit((unsigned char)s[i]) || s[i] == '.'; i++) {
		if (s[i] == '.')
			dots++;
		else
			ndig++;
	}
	if (ndig == 0 || dots > 1)
		return -1;
	v = strtod(s, &end);
	if (end != s + i || strncmp(end, suffix, strlen(suffix)) != 0)
		return -1;
	for (end += strlen(suffix); *end == ' ' || *end == '\t'; end++)
		;
	if (*end != '\0')
		return -1;
	v *= scale;
	return v >= (double)RETRY_MAX_MS ? RETRY_MAX_MS : llround(v);
}

/* Milliseconds from now until an HTTP date (floor 0), or -1. */
static int64_t
http_date_ms(const char *s)
{
	static const char *const fmts[] = {
	    "%a, %d %b %Y %H:%M:%S GMT", /* IMF-fixdate */
	    "%A, %d-%b-%y %H:%M:%S GMT", /* RFC 850 */
	    "%a %b %e %H:%M:%S %Y",      /* asctime */
	};
	struct tm tm;
	const char *end;
	size_t i;
	int64_t d;

	while (*s == ' ')
		s++;
	for (i = 0; i < sizeof(fmts) / sizeof(fmts[0]); i++) {
		memset(&tm, 0, sizeof(tm));
		if ((end = strptime(s, fmts[i], &tm)) == NULL)
			continue;
		while (*end == ' ')
			end++;
		if (*end != '\0')
			continue;
		d = (int64_t)timegm(&tm) * 1000 - clock_wall_ms();
		return d < 0 ? 0 : d > RETRY_MAX_MS ? RETRY_MAX_MS : d;
	}
	return -1;
}

/* Retry hint from headers: see classify.h. */
int64_t
classify_retry_after(const char *retry_after_ms,
                     const char *x_ms_retry_after_ms, const char *retry_after)
{
	int64_t v;

	if (retry_after_ms != NULL &&
	    (v = parse_num_ms(retry_after_ms, "", 1)) != -1)
		return v;
	if (x_ms_retry_after_ms != NULL &&
	    (v = parse_num_ms(x_ms_retry_after_ms, "", 1)) != -1)
		return v;
	if (retry_after == NULL)
		return -1;
	if ((v = parse_num_ms(retry_after, "", 1000)) != -1)
		return v;
	return http_date_ms(retry_after);
}

/* True if the "@type" of detail d ends with name. */
static int
detail_is(const struct json *j, int d, const char *name)
{
	char t[128];
	size_t n, m = strlen(name);

	t[0] = '\0';
	copy_field(j, json_get(j, d, "@type"), t, sizeof(t));
	n = strlen(t);
	return n >= m && strcmp(t + n - m, name) == 0;
}

/* Pull RetryInfo.retryDelay and ErrorInfo.reason from Gemini details. */
static void
gemini_details(const struct json *j, int arr, struct upstream_error *e,
               struct perr *pe)
{
	char delay[32];
	int n, d, size = json_size(j, arr);
	int64_t ms;

	for (n = 0; n < size; n++) {
		d = json_at(j, arr, n);
		if (detail_is(j, d, "google.rpc.RetryInfo")) {
			delay[0] = '\0';
			copy_field(j, json_get(j, d, "retryDelay"), delay,
			           sizeof(delay));
			ms = parse_num_ms(delay, "s", 1000);
			if (ms != -1 && e->retry_after_ms == -1)
				e->retry_after_ms = ms;
		} else if (detail_is(j, d, "google.rpc.ErrorInfo"))
			copy_field(j, json_get(j, d, "reason"), pe->reason,
			           sizeof(pe->reason));
	}
}

/* True if a 200-style reply body carries a content-policy finish. */
static int
body_blocked(const struct json *j, int root)
{
	static const char *const gem[] = {"SAFETY", "PROHIBITED_CONTENT",
	                                  "BLOCKLIST", "SPII"};
	int f;
	size_t i;

	if (json_path(j, root, "promptFeedback.blockReason") != -1 ||
	    json_eq(j, json_path(j, root, "choices.0.finish_reason"),
	            "content_filter") ||
	    json_eq(j, json_get(j, root, "stop_reason"), "refusal"))
		return 1;
	f = json_path(j, root, "candidates.0.finishReason");
	for (i = 0; f != -1 && i < sizeof(gem) / sizeof(gem[0]); i++)
		if (json_eq(j, f, gem[i]))
			return 1;
	return 0;
}

/* Fill e and pe from a JSON error body; -1 if the body is not JSON. */
static int
parse_body(const char *body, size_t len, struct upstream_error *e,
           struct perr *pe)
{
	static _Thread_local struct json j;
	int root = 0, err, src;

	if (body == NULL || json_parse(&j, body, len) == -1)
		return -1;
	if (json_type(&j, 0) == JSMN_ARRAY) /* Gemini stream: [{error}] */
		root = json_at(&j, 0, 0);
	if (json_type(&j, root) != JSMN_OBJECT)
		return -1;
	pe->blocked = body_blocked(&j, root);
	err = json_get(&j, root, "error");
	if (json_type(&j, err) == JSMN_STRING) {
		copy_field(&j, err, e->message, sizeof(e->message));
		return 0;
	}
	src = json_type(&j, err) == JSMN_OBJECT ? err : root;
	copy_field(&j, json_get(&j, src, "message"), e->message,
	           sizeof(e->message));
	if (e->message[0] == '\0')
		copy_field(&j, json_get(&j, root, "detail"), e->message,
		           sizeof(e->message));
	copy_field(&j, json_get(&j, src, "type"), e->type, sizeof(e->type));
	if (e->type[0] == '\0' &&
	    json_type(&j, json_get(&j, src, "status")) == JSMN_STRING)
		copy_field(&j, json_get(&j, src, "status"), e->type,
		           sizeof(e->type));
	copy_field(&j, json_get(&j, src, "code"), e->code, sizeof(e->code));
	copy_field(&j, json_path(&j, src, "innererror.code"), pe->inner,
	           sizeof(pe->inner));
	gemini_details(&j, json_get(&j, src, "details"), e, pe);
	return 0;
}

/* True if the type, code, inner code or reason equals name (any case). */
static int
has(const struct upstream_error *e, const struct perr *pe, const char *name)
{
	return strcasecmp(e->type, name) == 0 ||
	       strcasecmp(e->code, name) == 0 ||
	       strcasecmp(pe->inner, name) == 0 ||
	       strcasecmp(pe->reason, name) == 0;
}

/* True if any of the NULL-terminated names matches. */
static int
has_any(const struct upstream_error *e, const struct perr *pe,
        const char *const *names)
{
	for (; *names != NULL; names++)
		if (has(e, pe, *names))
			return 1;
	return 0;
}

/* True if s ends with suffix (any case). */
static int
ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && strcasecmp(s + n - m, suffix) == 0;
}

/* Content policy: Azure content_filter, Gemini blockReason, ... */
static int
is_content_policy(const struct upstream_error *e, const struct perr *pe)
{
	static const char *const n[] = {"content_filter",
	                                "ResponsibleAIPolicyViolation",
	                                "content_policy_violation", NULL};

	return pe->blocked || has_any(e, pe, n);
}

/* Context window overflow, by message, code or type text. */
static int
is_context(const struct upstream_error *e, const struct perr *pe)
{
	return classify_is_context_text(e->message) ||
	       classify_is_context_text(e->code) ||
	       classify_is_context_text(e->type) ||
	       classify_is_context_text(pe->inner);
}

/* Bad or unauthorised credentials, or a failed precondition. */
static int
is_auth(const struct upstream_error *e, const struct perr *pe)
{
	static const char *const n[] = {
	    "authentication_error", "permission_error",
	    "PERMISSION_DENIED",    "API_KEY_INVALID",
	    "FAILED_PRECONDITION",  "invalid_api_key",
	    "UNAUTHENTICATED",      NULL};

	return e->status == 401 || e->status == 403 || has_any(e, pe, n);
}

/* Billing exhausted, or a Gemini daily quota. */
static int
is_quota(const struct upstream_error *e, const struct perr *pe)
{
	static const char *const n[] = {"insufficient_quota",
	                                "credit_balance_exhausted",
	                                "organization_usage_limit_exceeded",
	                                "billing_error",
	                                "billing_not_active",
	                                "billing_hard_limit_reached",
	                                NULL};

	if (e->status == 402 || has_any(e, pe, n) ||
	    ends_with(e->code, "_spend_limit_exceeded") ||
	    ends_with(e->type, "_spend_limit_exceeded"))
		return 1;
	return e->status == 429 && has(e, pe, "RESOURCE_EXHAUSTED") &&
	       (strcasestr(e->message, "per day") != NULL ||
	        strcasestr(e->message, "perday") != NULL ||
	        strcasestr(e->message, "per_day") != NULL ||
	        memmem(pe->body, pe->len, "PerDay", 6) != NULL);
}

/* Rate limited. */
static int
is_rate(const struct upstream_error *e, const struct perr *pe)
{
	static const char *const n[] = {
	    "rate_limit_exceeded", "slow_down",         "rate_limit_error",
	    "RESOURCE_EXHAUSTED",  "too_many_requests", NULL};

	return e->status == 429 || has_any(e, pe, n);
}

/* Unknown model or deployment. */
static int
is_not_found(const struct upstream_error *e, const struct perr *pe)
{
	static const char *const n[] = {"model_not_found", "DeploymentNotFound",
	                                "not_found_error", "NOT_FOUND", NULL};

	return e->status == 404 || has_any(e, pe, n);
}

/* Worth retrying: timeouts, conflicts, server errors, overload. */
static int
is_transient(const struct upstream_error *e, const struct perr *pe)
{
	static const char *const n[] = {
	    "overloaded_error", "api_error",         "UNAVAILABLE",
	    "INTERNAL",         "DEADLINE_EXCEEDED", "server_error",
	    "timeout_error",    "unavailable_error", NULL};
	int s = e->status;

	return s == 0 || s == 408 || s == 409 || (s >= 500 && s <= 599) ||
	       has_any(e, pe, n);
}

/* Classify an HTTP error reply: see classify.h. */
void
classify_http(int status, const char *body, size_t len,
              struct upstream_error *e)
{
	static const struct {
		int (*match)(const struct upstream_error *,
		             const struct perr *);
		enum errclass cls;
	} rules[] = {
	    {is_content_policy, EC_CONTENT_POLICY},
	    {is_context, EC_CONTEXT_WINDOW},
	    {is_auth, EC_AUTH},
	    {is_quota, EC_QUOTA},
	    {is_rate, EC_RATE_LIMITED},
	    {is_not_found, EC_NOT_FOUND},
	    {is_transient, EC_TRANSIENT},
	};
	struct perr pe;
	size_t i;

	memset(&pe, 0, sizeof(pe));
	pe.body = body != NULL ? body : "";
	pe.len = body != NULL ? len : 0;
	e->status = status;
	e->message[0] = e->type[0] = e->code[0] = '\0';
	if (parse_body(body, len, e, &pe) == -1)
		text_message(body, len, status, e->message, sizeof(e->message));
	else if (e->message[0] == '\0')
		snprintf(e->message, sizeof(e->message), "%s",
		         http_reason(status));
	secret_redact(e->message);
	secret_redact(e->type);
	secret_redact(e->code);
	e->cls = status >= 400 && status <= 499 ? EC_BAD_REQUEST : EC_TRANSIENT;
	for (i = 0; i < sizeof(rules) / sizeof(rules[0]); i++) {
		if (rules[i].match(e, &pe)) {
			e->cls = rules[i].cls;
			break;
		}
	}
}
