/* Unit tests for common/classify.c: every row of PROVIDERS.md section 6. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/classify.h"

static struct upstream_error e;

/* Classify body at status with no header hints. */
static enum errclass
cls(int status, const char *body)
{
	memset(&e, 0xab, sizeof(e));
	e.retry_after_ms = -1;
	e.should_retry = -1;
	classify_http(status, body, body ? strlen(body) : 0, &e);
	return e.cls;
}

#define CLS(st, body, want)                                                    \
	cr_assert(cls((st), (body)) == (want), "got %s, want %s for %d %s",    \
	          errclass_name(e.cls), errclass_name(want), (st), (body))

/* Row 1: content policy. */

Test(classify, azure_prompt_content_filter)
{
	CLS(400,
	    "{\"error\":{\"message\":\"The response was filtered due to the "
	    "prompt triggering Azure OpenAI's content management policy.\","
	    "\"type\":null,\"param\":\"prompt\",\"code\":\"content_filter\","
	    "\"status\":400,\"innererror\":{\"code\":"
	    "\"ResponsibleAIPolicyViolation\",\"content_filter_result\":{"
	    "\"hate\":{\"filtered\":true,\"severity\":\"high\"}}}}}",
	    EC_CONTENT_POLICY);
	cr_assert(strcmp(e.code, "content_filter") == 0);
	cr_assert(strncmp(e.message, "The response was filtered", 25) == 0);
	cr_assert(e.status == 400);
}

Test(classify, azure_innererror_only)
{
	CLS(400,
	    "{\"error\":{\"message\":\"blocked\",\"code\":\"BadRequest\","
	    "\"innererror\":{\"code\":\"ResponsibleAIPolicyViolation\"}}}",
	    EC_CONTENT_POLICY);
}

Test(classify, finish_reason_content_filter)
{
	CLS(200,
	    "{\"id\":\"x\",\"choices\":[{\"index\":0,\"finish_reason\":"
	    "\"content_filter\",\"delta\":{}}]}",
	    EC_CONTENT_POLICY);
}

Test(classify, anthropic_stop_reason_refusal)
{
	CLS(200,
	    "{\"type\":\"message\",\"role\":\"assistant\",\"content\":[],"
	    "\"stop_reason\":\"refusal\"}",
	    EC_CONTENT_POLICY);
}

Test(classify, gemini_block_reason)
{
	CLS(200,
	    "{\"promptFeedback\":{\"blockReason\":\"SAFETY\","
	    "\"safetyRatings\":[]},\"usageMetadata\":{\"promptTokenCount\":8}}",
	    EC_CONTENT_POLICY);
}

Test(classify, gemini_safety_finish_reasons)
{
	const char *r[] = {"SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII"};
	char body[256];
	size_t i;

	for (i = 0; i < 4; i++) {
		snprintf(body, sizeof(body),
		         "{\"candidates\":[{\"content\":{\"parts\":[]},"
		         "\"finishReason\":\"%s\",\"index\":0}]}",
		         r[i]);
		CLS(200, body, EC_CONTENT_POLICY);
	}
	CLS(200,
	    "{\"candidates\":[{\"finishReason\":\"STOP\"}],\"error\":{"
	    "\"code\":500,\"status\":\"INTERNAL\",\"message\":\"x\"}}",
	    EC_TRANSIENT);
}

Test(classify, openai_content_policy_violation)
{
	CLS(400,
	    "{\"error\":{\"message\":\"Your request was rejected as a result "
	    "of our safety system.\",\"type\":\"invalid_request_error\","
	    "\"param\":null,\"code\":\"content_policy_violation\"}}",
	    EC_CONTENT_POLICY);
}

/* Row 2: context window. */

Test(classify, openai_context_length_exceeded)
{
	CLS(400,
	    "{\"error\":{\"message\":\"This model's maximum context length is "
	    "8192 tokens. However, your messages resulted in 9000 tokens.\","
	    "\"type\":\"invalid_request_error\",\"param\":\"messages\","
	    "\"code\":\"context_length_exceeded\"}}",
	    EC_CONTEXT_WINDOW);
	cr_assert(strcmp(e.type, "invalid_request_error") == 0);
	cr_assert(strcmp(e.code, "context_length_exceeded") == 0);
}

Test(classify, context_code_alone)
{
	CLS(400,
	    "{\"error\":{\"message\":\"too big\",\"code\":"
	    "\"context_length_exceeded\"}}",
	    EC_CONTEXT_WINDOW);
}

Test(classify, anthropic_prompt_too_long)
{
	CLS(400,
	    "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\","
	    "\"message\":\"prompt is too long: 210000 tokens > 200000 "
	    "maximum\"},\"request_id\":\"req_011\"}",
	    EC_CONTEXT_WINDOW);
	cr_assert(strcmp(e.type, "invalid_request_error") == 0);
}

Test(classify, anthropic_exceed_context_limit)
{
	CLS(400,
	    "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\","
	    "\"message\":\"input length and `max_tokens` exceed context limit: "
	    "198000 + 8192 > 200000, decrease input length or `max_tokens` and "
	    "try again\"}}",
	    EC_CONTEXT_WINDOW);
}

Test(classify, gemini_input_token_count)
{
	CLS(400,
	    "{\"error\":{\"code\":400,\"message\":\"The input token count "
	    "(1200000) exceeds the maximum number of tokens allowed "
	    "(1048576).\",\"status\":\"INVALID_ARGUMENT\"}}",
	    EC_CONTEXT_WINDOW);
	cr_assert(strcmp(e.code, "400") == 0);
	cr_assert(strcmp(e.type, "INVALID_ARGUMENT") == 0);
}

Test(classify, vllm_maximum_context_length)
{
	CLS(400,
	    "{\"error\":{\"message\":\"This model's maximum context length is "
	    "4096 tokens. However, you requested 5000 tokens (4000 in the "
	    "messages, 1000 in the completion).\",\"type\":\"BadRequestError\","
	    "\"param\":null,\"code\":400}}",
	    EC_CONTEXT_WINDOW);
	cr_assert(strcmp(e.code, "400") == 0);
}

Test(classify, vllm_flat_error)
{
	CLS(400,
	    "{\"object\":\"error\",\"message\":\"This model's maximum context "
	    "length is 2048 tokens.\",\"type\":\"BadRequestError\","
	    "\"param\":null,\"code\":400}",
	    EC_CONTEXT_WINDOW);
	cr_assert(strcmp(e.type, "BadRequestError") == 0);
	cr_assert(strcmp(e.code, "400") == 0);
	CLS(400,
	    "{\"object\":\"error\",\"message\":\"bad temperature\",\"type\":"
	    "\"BadRequestError\",\"param\":null,\"code\":400}",
	    EC_BAD_REQUEST);
	cr_assert(strcmp(e.message, "bad temperature") == 0);
}

Test(classify, llamacpp_exceed_context_size)
{
	CLS(400,
	    "{\"error\":{\"code\":400,\"message\":\"the request exceeds the "
	    "available context size, try increasing it\",\"type\":"
	    "\"exceed_context_size_error\",\"n_prompt_tokens\":5000,"
	    "\"n_ctx\":4096}}",
	    EC_CONTEXT_WINDOW);
}

Test(classify, model_context_window_exceeded)
{
	CLS(400,
	    "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\","
	    "\"message\":\"model_context_window_exceeded\"}}",
	    EC_CONTEXT_WINDOW);
	CLS(400,
	    "{\"error\":{\"message\":\"Input exceeds the context window "
	    "of this model\"}}",
	    EC_CONTEXT_WINDOW);
}

Test(classify, context_text_matcher)
{
	cr_assert(classify_is_context_text("Prompt Is Too Long"));
	cr_assert(classify_is_context_text("xx MAXIMUM CONTEXT LENGTH xx"));
	cr_assert(classify_is_context_text("exceed_context_size_error"));
	cr_assert(!classify_is_context_text("rate limit reached"));
	cr_assert(!classify_is_context_text(""));
	cr_assert(!classify_is_context_text(NULL));
	/* A Gemini quota metric is not a context overflow. */
	cr_assert(!classify_is_context_text(
	    "Quota exceeded for metric: generativelanguage.googleapis.com/"
	    "generate_content_free_tier_input_token_count, limit: 0"));
}

/* Row 3: auth. */

Test(classify, openai_invalid_api_key)
{
	CLS(401,
	    "{\"error\":{\"message\":\"Incorrect API key provided: "
	    "sk-proj-abcdefghijklmnopqrstuvwxyz012345. You can find your API "
	    "key at https://platform.openai.com/account/api-keys.\",\"type\":"
	    "\"invalid_request_error\",\"param\":null,\"code\":"
	    "\"invalid_api_key\"}}",
	    EC_AUTH);
	/* A key echoed in the message is masked. */
	cr_assert(strstr(e.message, "abcdefghij") == NULL, "%s", e.message);
	cr_assert(strstr(e.message, "sk-****") != NULL, "%s", e.message);
	cr_assert(strstr(e.message, "You can find your API key") != NULL);
}

Test(classify, anthropic_authentication_error)
{
	CLS(401,
	    "{\"type\":\"error\",\"error\":{\"type\":\"authentication_error\","
	    "\"message\":\"invalid x-api-key\"}}",
	    EC_AUTH);
	cr_assert(strcmp(e.message, "invalid x-api-key") == 0);
	/* The type alone is enough, e.g. with an odd status. */
	CLS(400,
	    "{\"type\":\"error\",\"error\":{\"type\":\"authentication_error\","
	    "\"message\":\"x\"}}",
	    EC_AUTH);
}

Test(classify, anthropic_permission_error)
{
	CLS(403,
	    "{\"type\":\"error\",\"error\":{\"type\":\"permission_error\","
	    "\"message\":\"Your API key does not have permission to use the "
	    "specified resource.\"}}",
	    EC_AUTH);
}

Test(classify, gemini_permission_denied)
{
	CLS(403,
	    "{\"error\":{\"code\":403,\"message\":\"Method doesn't allow "
	    "unregistered callers.\",\"status\":\"PERMISSION_DENIED\"}}",
	    EC_AUTH);
	cr_assert(strcmp(e.type, "PERMISSION_DENIED") == 0);
}

Test(classify, gemini_api_key_invalid)
{
	CLS(400,
	    "{\"error\":{\"code\":400,\"message\":\"API key not valid. Please "
	    "pass a valid API key.\",\"status\":\"INVALID_ARGUMENT\","
	    "\"details\":[{\"@type\":\"type.googleapis.com/google.rpc."
	    "ErrorInfo\",\"reason\":\"API_KEY_INVALID\",\"domain\":"
	    "\"googleapis.com\",\"metadata\":{\"service\":"
	    "\"generativelanguage.googleapis.com\"}}]}}",
	    EC_AUTH);
	cr_assert(strcmp(e.message,
	                 "API key not valid. Please pass a valid API key.") ==
	          0);
}

Test(classify, gemini_failed_precondition)
{
	CLS(400,
	    "{\"error\":{\"code\":400,\"message\":\"User location is not "
	    "supported for the API use.\",\"status\":\"FAILED_PRECONDITION\"}}",
	    EC_AUTH);
}

Test(classify, status_401_403_without_body)
{
	CLS(401, "", EC_AUTH);
	cr_assert(strcmp(e.message, "Unauthorized") == 0);
	CLS(403, NULL, EC_AUTH);
	cr_assert(strcmp(e.message, "Forbidden") == 0);
	CLS(401,
	    "{\"error\":{\"code\":\"401\",\"message\":\"Access denied due to "
	    "invalid subscription key or wrong API endpoint.\"}}",
	    EC_AUTH); /* Azure */
}

/* Row 4: quota. */

Test(classify, openai_insufficient_quota)
{
	CLS(429,
	    "{\"error\":{\"message\":\"You exceeded your current quota, "
	    "please check your plan and billing details.\",\"type\":"
	    "\"insufficient_quota\",\"param\":null,\"code\":"
	    "\"insufficient_quota\"}}",
	    EC_QUOTA);
}

Test(classify, billing_codes)
{
	CLS(429,
	    "{\"error\":{\"message\":\"m\",\"code\":"
	    "\"credit_balance_exhausted\"}}",
	    EC_QUOTA);
	CLS(429,
	    "{\"error\":{\"message\":\"m\",\"code\":"
	    "\"organization_usage_limit_exceeded\"}}",
	    EC_QUOTA);
	CLS(429,
	    "{\"error\":{\"message\":\"m\",\"code\":"
	    "\"monthly_spend_limit_exceeded\"}}",
	    EC_QUOTA);
	CLS(429,
	    "{\"error\":{\"message\":\"m\",\"code\":"
	    "\"project_spend_limit_exceeded\"}}",
	    EC_QUOTA);
	CLS(400,
	    "{\"type\":\"error\",\"error\":{\"type\":\"billing_error\","
	    "\"message\":\"Your credit balance is too low to access the "
	    "Anthropic API.\"}}",
	    EC_QUOTA);
}

Test(classify, status_402)
{
	CLS(402,
	    "{\"error\":{\"code\":402,\"message\":\"Your prepayment credits "
	    "are depleted.\",\"status\":\"RESOURCE_EXHAUSTED\"}}",
	    EC_QUOTA);
	CLS(402, "Payment required", EC_QUOTA);
}

Test(classify, gemini_daily_quota)
{
	CLS(429,
	    "{\"error\":{\"code\":429,\"message\":\"You exceeded your current "
	    "quota. Quota exceeded for quota metric 'Generate Content API "
	    "requests per day'\",\"status\":\"RESOURCE_EXHAUSTED\"}}",
	    EC_QUOTA);
	/* Daily only in the QuotaFailure details. */
	CLS(429,
	    "{\"error\":{\"code\":429,\"message\":\"You exceeded your current "
	    "quota, please check your plan and billing details.\",\"status\":"
	    "\"RESOURCE_EXHAUSTED\",\"details\":[{\"@type\":"
	    "\"type.googleapis.com/google.rpc.QuotaFailure\",\"violations\":[{"
	    "\"quotaMetric\":\"generativelanguage.googleapis.com/"
	    "generate_content_free_tier_requests\",\"quotaId\":"
	    "\"GenerateRequestsPerDayPerProjectPerModel-FreeTier\"}]},{"
	    "\"@type\":\"type.googleapis.com/google.rpc.RetryInfo\","
	    "\"retryDelay\":\"41s\"}]}}",
	    EC_QUOTA);
	cr_assert(e.retry_after_ms == 41000);
}

/* Row 5: rate limited. */

Test(classify, openai_rate_limit_exceeded)
{
	CLS(429,
	    "{\"error\":{\"message\":\"Rate limit reached for gpt-4o in "
	    "organization org-x on tokens per min (TPM): Limit 30000, Used "
	    "29000, Requested 2000. Please try again in 2s.\",\"type\":"
	    "\"tokens\",\"param\":null,\"code\":\"rate_limit_exceeded\"}}",
	    EC_RATE_LIMITED);
	cr_assert(e.retry_after_ms == -1);
}

Test(classify, slow_down)
{
	CLS(429,
	    "{\"error\":{\"message\":\"Please slow down\",\"type\":"
	    "\"slow_down\",\"code\":\"slow_down\"}}",
	    EC_RATE_LIMITED);
}

Test(classify, anthropic_rate_limit_error)
{
	CLS(429,
	    "{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\","
	    "\"message\":\"Number of request tokens has exceeded your "
	    "per-minute rate limit\"}}",
	    EC_RATE_LIMITED);
}

Test(classify, gemini_resource_exhausted_with_retry_info)
{
	CLS(429,
	    "{\"error\":{\"code\":429,\"message\":\"Resource has been "
	    "exhausted (e.g. check quota).\",\"status\":\"RESOURCE_EXHAUSTED\","
	    "\"details\":[{\"@type\":\"type.googleapis.com/google.rpc."
	    "QuotaFailure\",\"violations\":[{\"quotaId\":"
	    "\"GenerateRequestsPerMinutePerProjectPerModel-FreeTier\"}]},{"
	    "\"@type\":\"type.googleapis.com/google.rpc.RetryInfo\","
	    "\"retryDelay\":\"1.5s\"}]}}",
	    EC_RATE_LIMITED);
	cr_assert(e.retry_after_ms == 1500);
	cr_assert(strcmp(e.type, "RESOURCE_EXHAUSTED") == 0);
	cr_assert(strcmp(e.code, "429") == 0);
}

Test(classify, gemini_stream_array_body)
{
	CLS(429,
	    "[{\"error\":{\"code\":429,\"message\":\"Resource exhausted\","
	    "\"status\":\"RESOURCE_EXHAUSTED\",\"details\":[{\"@type\":"
	    "\"type.googleapis.com/google.rpc.RetryInfo\",\"retryDelay\":"
	    "\"2s\"}]}}]",
	    EC_RATE_LIMITED);
	cr_assert(e.retry_after_ms == 2000);
	cr_assert(strcmp(e.message, "Resource exhausted") == 0);
}

Test(classify, retry_delay_does_not_override_header)
{
	const char *b =
	    "{\"error\":{\"code\":429,\"status\":"
	    "\"RESOURCE_EXHAUSTED\",\"message\":\"x\",\"details\":[{"
	    "\"@type\":\"type.googleapis.com/google.rpc.RetryInfo\","
	    "\"retryDelay\":\"2s\"}]}}";

	memset(&e, 0, sizeof(e));
	e.retry_after_ms = 7000;
	e.should_retry = 1;
	classify_http(429, b, strlen(b), &e);
	cr_assert(e.cls == EC_RATE_LIMITED);
	cr_assert(e.retry_after_ms == 7000);
	cr_assert(e.should_retry == 1);
}

Test(classify, azure_429)
{
	CLS(429,
	    "{\"error\":{\"code\":\"429\",\"message\":\"Requests to the "
	    "ChatCompletions_Create Operation under Azure OpenAI API version "
	    "2024-02-01 have exceeded token rate limit of your current "
	    "pricing tier.\"}}",
	    EC_RATE_LIMITED);
	CLS(429, "", EC_RATE_LIMITED);
	cr_assert(strcmp(e.message, "Too Many Requests") == 0);
}

/* Row 6: not found. */

Test(classify, openai_model_not_found)
{
	CLS(404,
	    "{\"error\":{\"message\":\"The model `gpt-9` does not exist or "
	    "you do not have access to it.\",\"type\":"
	    "\"invalid_request_error\",\"param\":null,\"code\":"
	    "\"model_not_found\"}}",
	    EC_NOT_FOUND);
	CLS(400, "{\"error\":{\"message\":\"m\",\"code\":\"model_not_found\"}}",
	    EC_NOT_FOUND);
}

Test(classify, azure_deployment_not_found)
{
	CLS(404,
	    "{\"error\":{\"code\":\"DeploymentNotFound\",\"message\":\"The API "
	    "deployment for this resource does not exist.\"}}",
	    EC_NOT_FOUND);
	cr_assert(strcmp(e.code, "DeploymentNotFound") == 0);
	cr_assert(e.type[0] == '\0');
}

Test(classify, anthropic_not_found_error)
{
	CLS(404,
	    "{\"type\":\"error\",\"error\":{\"type\":\"not_found_error\","
	    "\"message\":\"model: claude-9\"}}",
	    EC_NOT_FOUND);
}

Test(classify, gemini_not_found)
{
	CLS(404,
	    "{\"error\":{\"code\":404,\"message\":\"models/gemini-9 is not "
	    "found for API version v1beta\",\"status\":\"NOT_FOUND\"}}",
	    EC_NOT_FOUND);
}

Test(classify, ollama_string_error)
{
	CLS(404,
	    "{\"error\":\"model \\\"llama9\\\" not found, try pulling it "
	    "first\"}",
	    EC_NOT_FOUND);
	cr_assert(strcmp(e.message,
	                 "model \"llama9\" not found, try pulling it first") ==
	          0);
}

/* Row 7: transient. */

Test(classify, transient_statuses)
{
	int st[] = {408, 409, 500, 502, 503, 504, 529, 599};
	size_t i;

	for (i = 0; i < sizeof(st) / sizeof(st[0]); i++)
		CLS(st[i], "", EC_TRANSIENT);
	CLS(0, NULL, EC_TRANSIENT);
}

Test(classify, anthropic_overloaded)
{
	CLS(529,
	    "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
	    "\"message\":\"Overloaded\"}}",
	    EC_TRANSIENT);
	/* Mid-stream, after a 200. */
	CLS(200,
	    "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
	    "\"message\":\"Overloaded\"}}",
	    EC_TRANSIENT);
	CLS(500,
	    "{\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":"
	    "\"Internal server error\"}}",
	    EC_TRANSIENT);
}

Test(classify, gemini_server_statuses)
{
	CLS(503,
	    "{\"error\":{\"code\":503,\"message\":\"The model is overloaded. "
	    "Please try again later.\",\"status\":\"UNAVAILABLE\"}}",
	    EC_TRANSIENT);
	CLS(500,
	    "{\"error\":{\"code\":500,\"message\":\"An internal error has "
	    "occurred.\",\"status\":\"INTERNAL\"}}",
	    EC_TRANSIENT);
	CLS(504,
	    "{\"error\":{\"code\":504,\"message\":\"Deadline expired\","
	    "\"status\":\"DEADLINE_EXCEEDED\"}}",
	    EC_TRANSIENT);
	CLS(200, "{\"error\":{\"code\":503,\"status\":\"UNAVAILABLE\"}}",
	    EC_TRANSIENT);
}

Test(classify, openai_server_error)
{
	CLS(500,
	    "{\"error\":{\"message\":\"The server had an error while "
	    "processing your request. Sorry about that!\",\"type\":"
	    "\"server_error\",\"param\":null,\"code\":null}}",
	    EC_TRANSIENT);
	cr_assert(e.code[0] == '\0');
	CLS(200, "{\"error\":{\"message\":\"x\",\"type\":\"server_error\"}}",
	    EC_TRANSIENT);
}

Test(classify, llamacpp_unavailable)
{
	CLS(503,
	    "{\"error\":{\"code\":503,\"message\":\"Loading model\","
	    "\"type\":\"unavailable_error\"}}",
	    EC_TRANSIENT);
	cr_assert(strcmp(e.type, "unavailable_error") == 0);
	cr_assert(strcmp(e.code, "503") == 0);
}

Test(classify, html_gateway_page)
{
	CLS(502,
	    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>"
	    "\r\n<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n"
	    "</html>\r\n",
	    EC_TRANSIENT);
	cr_assert(strncmp(e.message,
	                  "<html> <head><title>502 Bad Gateway</title></head>",
	                  50) == 0,
	          "%s", e.message);
}

/* Row 8: bad request. */

Test(classify, bad_requests)
{
	CLS(400,
	    "{\"error\":{\"message\":\"Invalid value for 'temperature'\","
	    "\"type\":\"invalid_request_error\",\"param\":\"temperature\","
	    "\"code\":\"invalid_value\"}}",
	    EC_BAD_REQUEST);
	CLS(413,
	    "{\"type\":\"error\",\"error\":{\"type\":\"request_too_large\","
	    "\"message\":\"Request exceeds the maximum allowed number of "
	    "bytes.\"}}",
	    EC_BAD_REQUEST);
	CLS(422, "{\"detail\":\"Unprocessable\"}", EC_BAD_REQUEST);
	cr_assert(strcmp(e.message, "Unprocessable") == 0);
	CLS(400,
	    "{\"error\":{\"code\":400,\"message\":\"Invalid JSON payload "
	    "received.\",\"status\":\"INVALID_ARGUMENT\"}}",
	    EC_BAD_REQUEST);
	CLS(418, "I'm a teapot", EC_BAD_REQUEST);
	CLS(400, "", EC_BAD_REQUEST);
	cr_assert(strcmp(e.message, "Bad Request") == 0);
}

/* Order: first match wins. */

Test(classify, first_match_wins)
{
	/* Content policy beats context text. */
	CLS(400,
	    "{\"error\":{\"message\":\"maximum context length\",\"code\":"
	    "\"content_filter\"}}",
	    EC_CONTENT_POLICY);
	/* Context beats auth-ish and rate-ish statuses. */
	CLS(429, "{\"error\":{\"message\":\"prompt is too long\"}}",
	    EC_CONTEXT_WINDOW);
	/* Auth beats quota. */
	CLS(403,
	    "{\"error\":{\"message\":\"m\",\"code\":"
	    "\"insufficient_quota\"}}",
	    EC_AUTH);
	/* Quota beats rate. */
	CLS(429, "{\"error\":{\"type\":\"insufficient_quota\"}}", EC_QUOTA);
	/* Rate beats transient. */
	CLS(503, "{\"error\":{\"type\":\"rate_limit_error\"}}",
	    EC_RATE_LIMITED);
	/* Not found beats transient. */
	CLS(500, "{\"error\":{\"code\":\"DeploymentNotFound\"}}", EC_NOT_FOUND);
}

/* Messages. */

Test(classify, non_json_body_message)
{
	char body[600];

	memset(body, 'x', sizeof(body) - 1);
	body[sizeof(body) - 1] = '\0';
	CLS(503, body, EC_TRANSIENT);
	cr_assert(strlen(e.message) == 200);
	CLS(500, "  upstream\tconnect \x01 error\n\n or disconnect ",
	    EC_TRANSIENT);
	cr_assert(strcmp(e.message, "upstream connect error or disconnect") ==
	              0,
	          "%s", e.message);
	CLS(503, "\x01\x02\xff", EC_TRANSIENT);
	cr_assert(strcmp(e.message, "Service Unavailable") == 0);
	/* Invalid JSON is treated as text. */
	CLS(500, "{\"error\":", EC_TRANSIENT);
	cr_assert(strcmp(e.message, "{\"error\":") == 0);
}

Test(classify, json_without_message_uses_reason)
{
	CLS(404, "{\"foo\":1}", EC_NOT_FOUND);
	cr_assert(strcmp(e.message, "Not Found") == 0);
	cr_assert(e.type[0] == 0 && e.code[0] == 0);
}

Test(classify, long_message_truncated_at_utf8_boundary)
{
	char body[1200];
	size_t n, i;

	n = (size_t)snprintf(body, sizeof(body), "{\"error\":{\"message\":\"");
	for (i = 0; i < 300; i++) {
		memcpy(body + n, "\xc3\xa9", 2); /* e-acute */
		n += 2;
	}
	memcpy(body + n, "\"}}", 4);
	CLS(400, body, EC_BAD_REQUEST);
	n = strlen(e.message);
	cr_assert(n == 254, "%zu", n);
	cr_assert(((unsigned char)e.message[n - 2] & 0xe0) == 0xc0);
}

Test(classify, message_unescaped)
{
	CLS(400,
	    "{\"error\":{\"message\":\"bad \\\"x\\\" \\u00e9\\ud83d\\ude00\","
	    "\"type\":\"invalid_request_error\"}}",
	    EC_BAD_REQUEST);
	cr_assert(strcmp(e.message, "bad \"x\" \xc3\xa9\xf0\x9f\x98\x80") == 0);
}

Test(classify, redacts_google_key)
{
	CLS(400,
	    "{\"error\":{\"message\":\"key AIzaSyA1234567890abcdefghij "
	    "is bad; task-force sk-x ok\"}}",
	    EC_BAD_REQUEST);
	cr_assert(strstr(e.message, "AIza*****") != NULL, "%s", e.message);
	cr_assert(strstr(e.message, "1234567890") == NULL);
	cr_assert(strstr(e.message, "task-force sk-x ok") != NULL);
}

Test(classify, names)
{
	cr_assert(strcmp(errclass_name(EC_OK), "ok") == 0);
	cr_assert(strcmp(errclass_name(EC_TRANSIENT), "transient") == 0);
	cr_assert(strcmp(errclass_name(EC_RATE_LIMITED), "rate_limited") == 0);
	cr_assert(strcmp(errclass_name(EC_AUTH), "auth") == 0);
	cr_assert(strcmp(errclass_name(EC_QUOTA), "quota") == 0);
	cr_assert(strcmp(errclass_name(EC_NOT_FOUND), "not_found") == 0);
	cr_assert(strcmp(errclass_name(EC_BAD_REQUEST), "bad_request") == 0);
	cr_assert(strcmp(errclass_name(EC_CONTEXT_WINDOW), "context_window") ==
	          0);
	cr_assert(strcmp(errclass_name(EC_CONTENT_POLICY), "content_policy") ==
	          0);
	cr_assert(strcmp(errclass_name(EC_CANCELLED), "cancelled") == 0);
	cr_assert(strcmp(errclass_name(EC__MAX), "unknown") == 0);
}

/* Retry hints. */

Test(classify, retry_after_ms_first)
{
	cr_assert(classify_retry_after("1500", "2000", "3") == 1500);
	cr_assert(classify_retry_after(NULL, "2000", "3") == 2000);
	cr_assert(classify_retry_after(NULL, NULL, "3") == 3000);
	cr_assert(classify_retry_after(NULL, NULL, NULL) == -1);
	cr_assert(classify_retry_after("250.6", NULL, NULL) == 251);
}

Test(classify, retry_after_seconds)
{
	cr_assert(classify_retry_after(NULL, NULL, "0") == 0);
	cr_assert(classify_retry_after(NULL, NULL, " 20 ") == 20000);
	cr_assert(classify_retry_after(NULL, NULL, "1.5") == 1500);
	cr_assert(classify_retry_after(NULL, NULL, "0.1") == 100);
	cr_assert(classify_retry_after(NULL, NULL, "-1") == -1);
	cr_assert(classify_retry_after(NULL, NULL, "abc") == -1);
	cr_assert(classify_retry_after(NULL, NULL, "1e3") == -1);
	cr_assert(classify_retry_after(NULL, NULL, "") == -1);
	cr_assert(classify_retry_after(NULL, NULL, "1.2.3") == -1);
	cr_assert(classify_retry_after(NULL, NULL, "99999999999999999999") ==
	          1000000000000LL);
}

Test(classify, retry_after_bad_ms_falls_through)
{
	cr_assert(classify_retry_after("soon", "x", "4") == 4000);
	cr_assert(classify_retry_after("", NULL, "4") == 4000);
}

Test(classify, retry_after_http_date)
{
	char d[64];
	time_t t = time(NULL) + 60;
	struct tm tm;
	int64_t v;
	size_t n;

	gmtime_r(&t, &tm);
	strftime(d, sizeof(d), "%a, %d %b %Y %H:%M:%S GMT", &tm);
	v = classify_retry_after(NULL, NULL, d);
	cr_assert(v > 58000 && v <= 60000, "%lld", (long long)v);
	/* RFC 850 and asctime forms. */
	n = strftime(d, sizeof(d), "%A, %d-%b-", &tm);
	snprintf(d + n, sizeof(d) - n, "%02d", tm.tm_year % 100);
	strftime(d + n + 2, sizeof(d) - n - 2, " %H:%M:%S GMT", &tm);
	v = classify_retry_after(NULL, NULL, d);
	cr_assert(v > 58000 && v <= 60000, "%lld", (long long)v);
	strftime(d, sizeof(d), "%a %b %e %H:%M:%S %Y", &tm);
	v = classify_retry_after(NULL, NULL, d);
	cr_assert(v > 58000 && v <= 60000, "%lld", (long long)v);
	/* In the past: zero. */
	cr_assert(classify_retry_after(NULL, NULL,
	                               "Wed, 21 Oct 2015 07:28:00 GMT") == 0);
	cr_assert(classify_retry_after(
	              NULL, NULL, "Wed, 21 Oct 2015 07:28:00 GMT junk") == -1);
}

#define DELAY_FMT                                                              \
	"{\"error\":{\"code\":429,\"status\":\"RESOURCE_EXHAUSTED\","          \
	"\"message\":\"x\",\"details\":[{\"@type\":"                           \
	"\"type.googleapis.com/google.rpc.RetryInfo\",\"retryDelay\":"         \
	"\"%s\"}]}}"

Test(classify, gemini_retry_delay_forms)
{
	char body[512];

	snprintf(body, sizeof(body), DELAY_FMT, "30s");
	cls(429, body);
	cr_assert(e.retry_after_ms == 30000);
	snprintf(body, sizeof(body), DELAY_FMT, "0.250s");
	cls(429, body);
	cr_assert(e.retry_after_ms == 250);
	snprintf(body, sizeof(body), DELAY_FMT, "bogus");
	cls(429, body);
	cr_assert(e.retry_after_ms == -1);
	snprintf(body, sizeof(body), DELAY_FMT, "5");
	cls(429, body);
	cr_assert(e.retry_after_ms == -1);
}
