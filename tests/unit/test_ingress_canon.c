/* Unit tests for worker/ingress/canon.c: the canonical readers (replies,
 * chunks, choices, tool calls, usage), the request field validators with a
 * translator's own wording, and the canonical shape writers. The
 * translators' goldens (test_ingress_messages.c, test_ingress_responses.c)
 * cover them end to end. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "worker/ingress/canon.h"

static struct json j;
static struct buf out;
static struct jw jw;
static char err[128];
static const char *bad_key;
static enum canon_want bad_want;

/* A writer on a fresh buffer. */
static void
setup(void)
{
	buf_reset(&out);
	jw_init(&jw, &out);
	err[0] = '\0';
	bad_key = NULL;
	bad_want = 0;
}

/* Free what a test built. */
static void
teardown(void)
{
	json_free(&j);
	buf_free(&out);
}

TestSuite(ingress_canon, .init = setup, .fini = teardown);

/* Parse s into j (a test input, known to be JSON). */
static void
parse(const char *s)
{
	cr_assert(json_parse(&j, s, strlen(s)) == 0, "%s", s);
}

/* A translator's bad function: records the field and the want. */
static int
test_bad(struct canon_rq *rq, const char *key, enum canon_want want)
{
	bad_key = key;
	bad_want = want;
	return canon_fail(rq, "test_code", "%s is wrong", key);
}

/* A request translation over j. */
static struct canon_rq
rq_of(const char *s)
{
	parse(s);
	return (struct canon_rq){
	    .j = &j, .err = err, .errsz = sizeof err, .bad = test_bad};
}

/* The object written so far, closed, as a C string. */
static const char *
written(void)
{
	jw_obj_end(&jw);
	return buf_cstr(&out);
}

/* ---- readers ---- */

Test(ingress_canon, chunk_read_needs_choices_or_usage_and_no_error)
{
	static const char *const bad[] = {
	    "[1]", "{\"id\":\"c\"}", "{\"choices\":{}}",
	    "{\"choices\":[],\"error\":{\"message\":\"x\"}}",
	    "{\"choices\":[]"};
	struct canon_chunk c;
	const char *ok = "{\"id\":\"c1\",\"model\":\"m\",\"usage\":{},"
	                 "\"error\":null}";

	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		cr_assert(canon_chunk_read(&j, bad[i], strlen(bad[i]), &c) ==
		              -1,
		          "%s", bad[i]);
	cr_assert(canon_chunk_read(&j, ok, strlen(ok), &c) == 0);
	cr_assert(json_eq(&j, c.id, "c1") && json_eq(&j, c.model, "m"));
	cr_assert(c.choices == -1 && json_type(&j, c.usage) == JSMN_OBJECT);
}

Test(ingress_canon, choice_next_takes_index_zero_objects)
{
	int i = 0, ch;

	parse("{\"choices\":[{\"index\":1},5,{\"index\":0,\"n\":1},{\"n\":2},"
	      "{\"index\":\"x\",\"n\":3}]}");
	ch = json_get(&j, 0, "choices");
	for (int want = 1; want <= 3; want++) {
		int c = canon_choice_next(&j, ch, &i);
		long long n;

		cr_assert(json_int(&j, json_get(&j, c, "n"), &n) == 0);
		cr_assert(n == want);
	}
	cr_assert(canon_choice_next(&j, ch, &i) == -1);
	i = 0;
	cr_assert(canon_choice_next(&j, -1, &i) == -1);
}

Test(ingress_canon, reply_read_names_the_first_choice)
{
	static const char *const bad[] = {"{\"choices\":[]}",
	                                  "{\"choices\":[{\"message\":\"x\"}]}",
	                                  "{\"choices\":[5]}", "\"x\""};
	const char *ok =
	    "{\"id\":\"r\",\"created\":7,\"choices\":[{\"finish_reason\":"
	    "\"stop\",\"message\":{\"content\":\"hi\",\"refusal\":null,"
	    "\"reasoning\":\"r\",\"tool_calls\":[]}}]}";
	struct canon_reply r;

	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		cr_assert(canon_reply_read(&j, bad[i], strlen(bad[i]), &r) ==
		              -1,
		          "%s", bad[i]);
	cr_assert(canon_reply_read(&j, ok, strlen(ok), &r) == 0);
	cr_assert(json_eq(&j, r.id, "r") && r.model == -1);
	cr_assert(json_eq(&j, r.finish, "stop"));
	cr_assert(json_eq(&j, r.msg.content, "hi"));
	cr_assert(json_is_null(&j, r.msg.refusal));
	cr_assert(r.msg.reasoning == -1);
	cr_assert(json_eq(&j, r.msg.reasoning_alias, "r"));
	cr_assert(json_size(&j, r.msg.tool_calls) == 0);
}

Test(ingress_canon, call_read_index_and_function_members)
{
	struct canon_call c;

	parse("[{\"index\":2,\"id\":\"a\",\"function\":{\"name\":\"f\","
	      "\"arguments\":\"{}\"}},{\"index\":-3},{\"index\":1.5},5]");
	canon_call_read(&j, json_at(&j, 0, 0), &c);
	cr_assert(c.index == 2 && json_eq(&j, c.id, "a"));
	cr_assert(json_eq(&j, c.name, "f") && json_eq(&j, c.args, "{}"));
	for (int i = 1; i < 4; i++) {
		canon_call_read(&j, json_at(&j, 0, i), &c);
		cr_assert(c.index == -1 && c.id == -1 && c.name == -1 &&
		          c.args == -1);
	}
	canon_call_read(&j, -1, &c);
	cr_assert(c.index == -1 && c.name == -1);
}

Test(ingress_canon, usage_read_keeps_what_is_not_given)
{
	struct canon_usage u = {.prompt = 9, .cached = 4};

	parse("{\"a\":{\"completion_tokens\":5,\"prompt_tokens\":-1,"
	      "\"completion_tokens_details\":{\"reasoning_tokens\":2}},"
	      "\"b\":{\"total_tokens\":100,\"prompt_tokens\":-1,"
	      "\"prompt_tokens_details\":{\"cached_tokens\":3}},\"c\":[]}");
	canon_usage_read(&j, json_get(&j, 0, "c"), &u, 0);
	cr_assert(!u.have && u.prompt == 9);
	canon_usage_read(&j, json_get(&j, 0, "a"), &u, 0);
	cr_assert(u.have && u.prompt == 9 && u.completion == 5);
	cr_assert(u.cached == 4 && u.reasoning == 2 && u.total == 14);
	canon_usage_read(&j, json_get(&j, 0, "b"), &u, -5);
	cr_assert(u.prompt == -1 && u.cached == 3 && u.total == 100);
}

/* ---- request fields ---- */

Test(ingress_canon, max_tokens_required_or_optional)
{
	struct canon_rq rq = rq_of("{\"a\":null,\"b\":0,\"c\":1.5,\"d\":64}");

	cr_assert(canon_rq_max_tokens(&rq, &jw, "x", 1) == -1);
	cr_assert(bad_want == CANON_REQUIRED && strcmp(bad_key, "x") == 0);
	cr_assert(strcmp(err, "x is wrong") == 0);
	cr_assert(strcmp(rq.code, "test_code") == 0);
	cr_assert(canon_rq_max_tokens(&rq, &jw, "x", 0) == 0);
	cr_assert(canon_rq_max_tokens(&rq, &jw, "a", 0) == 0);
	cr_assert(canon_rq_max_tokens(&rq, &jw, "a", 1) == -1);
	cr_assert(bad_want == CANON_INTEGER);
	cr_assert(canon_rq_max_tokens(&rq, &jw, "c", 0) == -1);
	cr_assert(bad_want == CANON_INTEGER);
	cr_assert(canon_rq_max_tokens(&rq, &jw, "b", 0) == -1);
	cr_assert(bad_want == CANON_MIN1);
	jw_obj(&jw);
	cr_assert(canon_rq_max_tokens(&rq, &jw, "d", 1) == 0);
	cr_assert_str_eq(written(), "{\"max_completion_tokens\":64}");
}

Test(ingress_canon, number_stream_str_and_types)
{
	struct canon_rq rq = rq_of(
	    "{\"t\":1.50,\"stream\":true,\"u\":\"me\",\"n\":null,\"q\":\"1\","
	    "\"l\":{},\"timeout\":30,\"fallbacks\":[\"b\"]}");

	jw_obj(&jw);
	cr_assert(canon_rq_number(&rq, &jw, "t", "temperature") == 0);
	cr_assert(canon_rq_number(&rq, &jw, "n", "top_p") == 0);
	cr_assert(canon_rq_stream(&rq, &jw) == 0);
	canon_rq_str(&jw, &j, json_get(&j, 0, "u"), "user");
	canon_rq_str(&jw, &j, json_get(&j, 0, "t"), "nope");
	canon_rq_own(&j, &jw);
	cr_assert_str_eq(written(),
	                 "{\"temperature\":1.50,\"stream\":true,"
	                 "\"stream_options\":{\"include_usage\":true},"
	                 "\"user\":\"me\",\"fallbacks\":[\"b\"],"
	                 "\"timeout\":30}");
	cr_assert(canon_rq_number(&rq, &jw, "q", "q") == -1);
	cr_assert(bad_want == CANON_NUMBER);
	cr_assert(canon_rq_want(&rq, json_get(&j, 0, "n"), "n", CANON_LIST) ==
	          0);
	cr_assert(canon_rq_want(&rq, json_get(&j, 0, "l"), "l", CANON_DICT) ==
	          0);
	cr_assert(canon_rq_want(&rq, json_get(&j, 0, "l"), "l", CANON_LIST) ==
	          -1);
	cr_assert(bad_want == CANON_LIST);
	cr_assert(canon_rq_want(&rq, json_get(&j, 0, "t"), "t", CANON_STRING) ==
	          -1);
	cr_assert(bad_want == CANON_STRING);
}

Test(ingress_canon, stream_must_be_a_boolean)
{
	struct canon_rq rq = rq_of("{\"stream\":\"yes\"}");

	cr_assert(canon_rq_stream(&rq, &jw) == -1);
	cr_assert(bad_want == CANON_BOOL && strcmp(bad_key, "stream") == 0);
}

/* ---- writers ---- */

Test(ingress_canon, request_shapes)
{
	struct buf content = {0}, calls = {0};

	parse("{\"id\":\"c1\",\"name\":\"f\",\"args\":\"{\\\"a\\\":1}\","
	      "\"obj\":{\"a\":1}}");
	buf_adds(&content, "hi");
	buf_adds(&calls, "[1]");
	jw_arr(&jw);
	canon_tool_call(&jw, &j, json_get(&j, 0, "id"), json_get(&j, 0, "name"),
	                json_get(&j, 0, "args"));
	canon_tool_call(&jw, &j, json_get(&j, 0, "id"), json_get(&j, 0, "name"),
	                json_get(&j, 0, "obj"));
	canon_assistant(&jw, NULL, &content, &calls);
	canon_assistant(&jw, &content, NULL, NULL);
	canon_open_tool_msg(&jw, &j, json_get(&j, 0, "id"));
	jw_cstr(&jw, "r");
	jw_obj_end(&jw);
	canon_open_typed(&jw, "image_url", 1);
	canon_kstr(&jw, "url", "u");
	jw_obj_end(&jw);
	jw_obj_end(&jw);
	jw_arr_end(&jw);
	cr_assert_str_eq(
	    buf_cstr(&out),
	    "[{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":"
	    "\"f\",\"arguments\":\"{\\\"a\\\":1}\"}},"
	    "{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":"
	    "\"f\",\"arguments\":\"{}\"}},"
	    "{\"role\":\"assistant\",\"content\":null,\"refusal\":\"hi\","
	    "\"tool_calls\":[1]},"
	    "{\"role\":\"assistant\",\"content\":\"hi\"},"
	    "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"r\"},"
	    "{\"type\":\"image_url\",\"image_url\":{\"url\":\"u\"}}]");
	buf_free(&content);
	buf_free(&calls);
}

Test(ingress_canon, function_schema_and_event)
{
	parse("{\"name\":\"f\"}");
	jw_obj(&jw);
	canon_open_schema(&jw);
	jw_cstr(&jw, "out");
	jw_obj_end(&jw);
	jw_obj_end(&jw);
	jw_key(&jw, "tool_choice");
	canon_open_function(&jw, &j, json_get(&j, 0, "name"));
	jw_obj_end(&jw);
	jw_obj_end(&jw);
	cr_assert_str_eq(written(),
	                 "{\"response_format\":{\"type\":\"json_schema\","
	                 "\"json_schema\":{\"name\":\"out\"}},"
	                 "\"tool_choice\":{\"type\":\"function\","
	                 "\"function\":{\"name\":\"f\"}}}");
	buf_reset(&out);
	canon_ev_open(&out, &jw, "ping");
	canon_kint(&jw, "n", 1);
	canon_ev_close(&jw);
	cr_assert_str_eq(buf_cstr(&out),
	                 "event: ping\ndata: {\"type\":\"ping\",\"n\":1}\n\n");
}
