/* Unit tests for common/json.c. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/json.h"

static struct json j;

static void
teardown(void)
{
	json_free(&j);
}

TestSuite(json, .fini = teardown);

/* Parse a C string. */
static int
parse(const char *s)
{
	return json_parse(&j, s, strlen(s));
}

/* Decode string at path into a static buffer. */
static const char *
str_at(const char *path)
{
	static char out[512];

	if (json_str(&j, json_path(&j, 0, path), out, sizeof(out)) == -1)
		return NULL;
	return out;
}

/* Write with a callback and return the NUL-terminated output. */
static struct buf wb;

static const char *
esc(const char *s, size_t n)
{
	buf_reset(&wb);
	json_escape(&wb, s, n);
	return buf_cstr(&wb);
}

Test(json, parses_nested_document)
{
	cr_assert(parse(" {\"a\": {\"b\": [1, 2, {\"c\": \"d\"}]}, \"e\": "
	                "true, \"f\": null} ") == 0);
	cr_assert(json_type(&j, 0) == JSMN_OBJECT);
	cr_assert(json_size(&j, 0) == 3);
	cr_assert(strcmp(str_at("a.b.2.c"), "d") == 0);
	cr_assert(json_is_true(&j, json_get(&j, 0, "e")));
	cr_assert(json_is_null(&j, json_get(&j, 0, "f")));
	cr_assert(json_size(&j, json_path(&j, 0, "a.b")) == 3);
	cr_assert(json_get(&j, 0, "zz") == -1);
}

Test(json, accepts_scalars_at_top_level)
{
	cr_assert(parse("42") == 0);
	cr_assert(parse(" \"x\" ") == 0);
	cr_assert(parse("null") == 0);
	cr_assert(parse("[]") == 0);
	cr_assert(parse("{}") == 0);
	cr_assert(json_size(&j, 0) == 0);
}

Test(json, rejects_truncated_input)
{
	const char *full = "{\"a\":[1,2,{\"b\":\"xyz\"}],\"c\":true}";
	size_t n;

	for (n = 0; n < strlen(full); n++)
		cr_assert(json_parse(&j, full, n) == -1, "prefix %zu", n);
	cr_assert(json_parse(&j, full, strlen(full)) == 0);
	cr_assert(parse("\"abc") == -1);
	cr_assert(parse("\"ab\\") == -1);
	cr_assert(parse("[\"\\u12") == -1);
}

Test(json, rejects_trailing_garbage)
{
	cr_assert(parse("{} x") == -1);
	cr_assert(parse("{}{}") == -1);
	cr_assert(parse("1 2") == -1);
	cr_assert(parse("[1]]") == -1);
	cr_assert(parse("{}\n\t ") == 0);
	cr_assert(json_parse(&j, "{}\0junk", 7) == -1);
}

Test(json, rejects_barewords)
{
	cr_assert(parse("[tru]") == -1);
	cr_assert(parse("[True]") == -1);
	cr_assert(parse("{\"a\": nul}") == -1);
	cr_assert(parse("{a: 1}") == -1);
	cr_assert(parse("[undefined]") == -1);
	cr_assert(parse("[NaN]") == -1);
	cr_assert(parse("hello") == -1);
}

Test(json, rejects_bad_numbers)
{
	cr_assert(parse("[01]") == -1);
	cr_assert(parse("[1.]") == -1);
	cr_assert(parse("[.5]") == -1);
	cr_assert(parse("[1e]") == -1);
	cr_assert(parse("[+1]") == -1);
	cr_assert(parse("[-]") == -1);
	cr_assert(parse("[0x10]") == -1);
	cr_assert(parse("[-0.5e+10, 0, 1E3]") == 0);
}

Test(json, rejects_broken_structure)
{
	cr_assert(parse("[1 2]") == -1);
	cr_assert(parse("{\"a\" 1}") == -1);
	cr_assert(parse("{\"a\":1 \"b\":2}") == -1);
	cr_assert(parse("{\"a\":1,}") == -1);
	cr_assert(parse("[1,]") == -1);
	cr_assert(parse("[,1]") == -1);
	cr_assert(parse("{\"a\"}") == -1);
	cr_assert(parse("[\"a\":1]") == -1);
	cr_assert(parse("{\"a\":1:2}") == -1);
	cr_assert(parse("{1:2}") == -1);
	cr_assert(parse("[1}") == -1);
	cr_assert(parse("]") == -1);
	cr_assert(parse("") == -1);
	cr_assert(parse("   ") == -1);
	cr_assert(parse("[\"a\nb\"]") == -1); /* raw control char */
}

Test(json, grows_token_storage)
{
	struct buf b = {0};
	int n, i;
	long long v;

	buf_addc(&b, '[');
	for (n = 0; n < 5000; n++)
		buf_printf(&b, "%s{\"i\":%d}", n ? "," : "", n);
	buf_addc(&b, ']');
	cr_assert(json_parse(&j, b.data, b.len) == 0);
	cr_assert(j.cap >= j.ntok);
	cr_assert(j.ntok == 1 + 5000 * 3);
	cr_assert(json_size(&j, 0) == 5000);
	i = json_path(&j, 0, "4321.i");
	cr_assert(json_int(&j, i, &v) == 0 && v == 4321);
	/* The storage is reused by a smaller parse. */
	cr_assert(parse("[1]") == 0 && j.cap >= 15001);
	buf_free(&b);
}

Test(json, rejects_too_deep_nesting)
{
	char *s = malloc(2001);
	int n;

	for (n = 0; n < 1000; n++) {
		s[n] = '[';
		s[1999 - n] = ']';
	}
	s[2000] = '\0';
	cr_assert(parse(s) == -1);
	cr_assert(json_parse(&j, s + 800, 400) == 0); /* depth 200 is fine */
	free(s);
}

Test(json, next_skips_subtrees)
{
	int a, b, c;

	cr_assert(parse("[{\"x\":[1,2,[3]]},\"s\",{\"y\":{}},4]") == 0);
	a = json_at(&j, 0, 0);
	b = json_next(&j, a);
	cr_assert(json_eq(&j, b, "s"));
	c = json_next(&j, b);
	cr_assert(json_type(&j, c) == JSMN_OBJECT);
	cr_assert(json_next(&j, json_next(&j, c)) == j.ntok);
	cr_assert(json_next(&j, 0) == j.ntok);
	/* A key's next token is its value. */
	cr_assert(json_type(&j, json_next(&j, a + 1)) == JSMN_ARRAY);
	cr_assert(json_next(&j, -1) == -1);
	cr_assert(json_next(&j, j.ntok) == -1);
}

Test(json, path_walks_keys_and_indexes)
{
	cr_assert(parse("{\"choices\":[{\"delta\":{\"content\":\"hi\"}},"
	                "{\"delta\":{\"content\":\"yo\"}}],\"3\":\"k\"}") == 0);
	cr_assert(strcmp(str_at("choices.0.delta.content"), "hi") == 0);
	cr_assert(strcmp(str_at("choices.1.delta.content"), "yo") == 0);
	cr_assert(strcmp(str_at("3"), "k") == 0);
	cr_assert(json_path(&j, 0, "choices.2") == -1);
	cr_assert(json_path(&j, 0, "choices.x") == -1);
	cr_assert(json_path(&j, 0, "choices.-1") == -1);
	cr_assert(json_path(&j, 0, "choices.0.delta.content.z") == -1);
	cr_assert(json_path(&j, 0, "") == 0);
	cr_assert(json_path(&j, -1, "a") == -1);
}

Test(json, helpers_reject_bad_indexes)
{
	bool bv;
	long long iv;
	double dv;
	char out[8] = "x";
	size_t n;

	cr_assert(parse("[1]") == 0);
	cr_assert(json_type(&j, -1) == -1);
	cr_assert(json_get(&j, -1, "a") == -1);
	cr_assert(json_at(&j, -1, 0) == -1);
	cr_assert(json_at(&j, 0, 1) == -1);
	cr_assert(json_size(&j, -1) == -1);
	cr_assert(!json_eq(&j, -1, "a"));
	cr_assert(!json_is_null(&j, -1));
	cr_assert(json_bool(&j, -1, &bv) == -1);
	cr_assert(json_int(&j, -1, &iv) == -1);
	cr_assert(json_num(&j, -1, &dv) == -1);
	cr_assert(json_raw(&j, -1, &n) == NULL);
	cr_assert(json_str(&j, -1, out, sizeof(out)) == -1 && out[0] == 0);
	cr_assert(json_str(&j, 1, out, sizeof(out)) == -1); /* a number */
	cr_assert(parse("{") == -1);
	cr_assert(json_type(&j, 0) == -1); /* no stale tokens */
}

Test(json, integers_and_floats)
{
	long long v;
	double d;
	bool b;

	cr_assert(parse("[9223372036854775807,-9223372036854775808,"
	                "9223372036854775808,1.5,2.0,1e3,-0,3.25e-2,true,"
	                "\"7\",false]") == 0);
	cr_assert(json_int(&j, json_at(&j, 0, 0), &v) == 0 &&
	          v == 9223372036854775807LL);
	cr_assert(json_int(&j, json_at(&j, 0, 1), &v) == 0 &&
	          v == (-9223372036854775807LL - 1));
	cr_assert(json_int(&j, json_at(&j, 0, 2), &v) == -1);
	cr_assert(json_num(&j, json_at(&j, 0, 2), &d) == 0 &&
	          d == 9223372036854775808.0);
	cr_assert(json_int(&j, json_at(&j, 0, 3), &v) == -1);
	cr_assert(json_num(&j, json_at(&j, 0, 3), &d) == 0 && d == 1.5);
	cr_assert(json_int(&j, json_at(&j, 0, 4), &v) == 0 && v == 2);
	cr_assert(json_int(&j, json_at(&j, 0, 5), &v) == 0 && v == 1000);
	cr_assert(json_int(&j, json_at(&j, 0, 6), &v) == 0 && v == 0);
	cr_assert(json_num(&j, json_at(&j, 0, 7), &d) == 0 && d == 0.0325);
	cr_assert(json_int(&j, json_at(&j, 0, 8), &v) == -1);
	cr_assert(json_int(&j, json_at(&j, 0, 9), &v) == -1);
	cr_assert(json_bool(&j, json_at(&j, 0, 8), &b) == 0 && b);
	cr_assert(json_bool(&j, json_at(&j, 0, 10), &b) == 0 && !b);
	cr_assert(json_bool(&j, json_at(&j, 0, 0), &b) == -1);
}

/* Plain integers of up to 18 digits are read without strtoll; longer
 * ones, and texts that are not JSON integers, go the general way. */
Test(json, integers_short_and_long)
{
	long long v;

	cr_assert(parse("[999999999999999999,-999999999999999999,"
	                "1000000000000000000,-17,0,-0,10,1E2]") == 0);
	cr_assert(json_int(&j, json_at(&j, 0, 0), &v) == 0 &&
	          v == 999999999999999999LL);
	cr_assert(json_int(&j, json_at(&j, 0, 1), &v) == 0 &&
	          v == -999999999999999999LL);
	cr_assert(json_int(&j, json_at(&j, 0, 2), &v) == 0 &&
	          v == 1000000000000000000LL);
	cr_assert(json_int(&j, json_at(&j, 0, 3), &v) == 0 && v == -17);
	cr_assert(json_int(&j, json_at(&j, 0, 4), &v) == 0 && v == 0);
	cr_assert(json_int(&j, json_at(&j, 0, 5), &v) == 0 && v == 0);
	cr_assert(json_int(&j, json_at(&j, 0, 6), &v) == 0 && v == 10);
	cr_assert(json_int(&j, json_at(&j, 0, 7), &v) == 0 && v == 100);
}

Test(json, raw_includes_quotes)
{
	const char *r;
	size_t n;

	cr_assert(parse("{\"a\":\"x\\n\",\"b\":[1, 2],\"c\":-1.5}") == 0);
	r = json_raw(&j, json_get(&j, 0, "a"), &n);
	cr_assert(n == 5 && memcmp(r, "\"x\\n\"", 5) == 0);
	r = json_raw(&j, json_get(&j, 0, "b"), &n);
	cr_assert(n == 6 && memcmp(r, "[1, 2]", 6) == 0);
	r = json_raw(&j, json_get(&j, 0, "c"), &n);
	cr_assert(n == 4 && memcmp(r, "-1.5", 4) == 0);
}

Test(json, decodes_simple_escapes)
{
	cr_assert(parse("[\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\te\"]") == 0);
	cr_assert(strcmp(str_at("0"), "a\"b\\c/d\b\f\n\r\te") == 0);
}

Test(json, decodes_unicode_escapes)
{
	cr_assert(parse("[\"\\u0041\\u00e9\\u20AC\\u0000x\"]") == 0);
	/* The embedded NUL ends the C string; the length says so. */
	char out[32];
	int n = json_str(&j, json_at(&j, 0, 0), out, sizeof(out));
	cr_assert(n == 1 + 2 + 3 + 1 + 1);
	cr_assert(memcmp(out, "A\xc3\xa9\xe2\x82\xac\0x", 8) == 0);
}

Test(json, decodes_surrogate_pairs)
{
	cr_assert(parse("[\"\\ud83d\\ude00!\", \"\\uD834\\uDD1E\"]") == 0);
	cr_assert(strcmp(str_at("0"), "\xf0\x9f\x98\x80!") == 0);
	cr_assert(strcmp(str_at("1"), "\xf0\x9d\x84\x9e") == 0);
}

Test(json, lone_surrogates_become_replacement)
{
	cr_assert(parse("[\"a\\ud83db\", \"\\ude00\", \"\\ud83d\\u0041\","
	                "\"\\ud83d\"]") == 0);
	cr_assert(strcmp(str_at("0"), "a\xef\xbf\xbd"
	                              "b") == 0);
	cr_assert(strcmp(str_at("1"), "\xef\xbf\xbd") == 0);
	cr_assert(strcmp(str_at("2"), "\xef\xbf\xbd"
	                              "A") == 0);
	cr_assert(strcmp(str_at("3"), "\xef\xbf\xbd") == 0);
}

Test(json, str_passes_raw_utf8)
{
	cr_assert(parse("[\"h\xc3\xa9llo \xe4\xb8\x96\"]") == 0);
	cr_assert(strcmp(str_at("0"), "h\xc3\xa9llo \xe4\xb8\x96") == 0);
}

Test(json, str_truncates_at_utf8_boundary)
{
	char out[5];
	int n;

	/* "ab" + e-acute (2 bytes) + euro (3 bytes) */
	cr_assert(parse("[\"ab\xc3\xa9\xe2\x82\xac\", \"ab\\u00e9\\u20ac\"]") ==
	          0);
	n = json_str(&j, json_at(&j, 0, 0), out, sizeof(out));
	cr_assert(n == 7);
	cr_assert(strcmp(out, "ab\xc3\xa9") == 0);
	n = json_str(&j, json_at(&j, 0, 0), out, 4);
	cr_assert(n == 7 && strcmp(out, "ab") == 0);
	n = json_str(&j, json_at(&j, 0, 1), out, 4);
	cr_assert(n == 7 && strcmp(out, "ab") == 0);
	n = json_str(&j, json_at(&j, 0, 1), out, sizeof(out));
	cr_assert(n == 7 && strcmp(out, "ab\xc3\xa9") == 0);
	n = json_str(&j, json_at(&j, 0, 1), NULL, 0);
	cr_assert(n == 7);
}

Test(json, str_buf_appends)
{
	struct buf b = {0};

	buf_adds(&b, ">");
	cr_assert(parse("[\"x\\u00e9\\ud83d\\ude00y\", 1]") == 0);
	cr_assert(json_str_buf(&j, json_at(&j, 0, 0), &b) == 8);
	cr_assert(strcmp(buf_cstr(&b), ">x\xc3\xa9\xf0\x9f\x98\x80y") == 0);
	cr_assert(json_str_buf(&j, json_at(&j, 0, 1), &b) == -1);
	buf_free(&b);
}

Test(json, eq_compares_decoded)
{
	cr_assert(parse("{\"k\\u0065y\":\"v\\n\",\"plain\":\"abc\"}") == 0);
	cr_assert(json_eq(&j, json_get(&j, 0, "plain"), "abc"));
	cr_assert(!json_eq(&j, json_get(&j, 0, "plain"), "ab"));
	cr_assert(!json_eq(&j, json_get(&j, 0, "plain"), "abcd"));
	cr_assert(json_eq(&j, json_get(&j, 0, "key"), "v\n"));
	cr_assert(!json_eq(&j, json_get(&j, 0, "key"), "v"));
	cr_assert(json_eq(&j, 1, "key"));
	/* a key whose first character is escaped, behind longer keys with
	 * other first bytes */
	cr_assert(parse("{\"xmodel\":1,\"\\u006dodel\":2}") == 0);
	cr_assert(json_get(&j, 0, "model") == 4);
	cr_assert(json_get(&j, 0, "mode") == -1);
}

Test(json, escapes_specials)
{
	cr_assert(strcmp(esc("a\"b\\c", 5), "a\\\"b\\\\c") == 0);
	cr_assert(strcmp(esc("\n\r\t\b\f", 5), "\\n\\r\\t\\b\\f") == 0);
	cr_assert(strcmp(esc("\x01\x1f\x7f", 3), "\\u0001\\u001f\x7f") == 0);
	cr_assert(strcmp(esc("x\0y", 3), "x\\u0000y") == 0);
	cr_assert(strcmp(esc("a/b", 3), "a/b") == 0);
}

Test(json, escape_passes_valid_utf8)
{
	const char *s = "h\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80";

	cr_assert(strcmp(esc(s, strlen(s)), s) == 0);
}

Test(json, escape_replaces_invalid_utf8)
{
	cr_assert(strcmp(esc("a\xff"
	                     "b",
	                     3),
	                 "a\xef\xbf\xbd"
	                 "b") == 0);
	/* Truncated sequence at the end. */
	cr_assert(strcmp(esc("a\xe2\x82", 3), "a\xef\xbf\xbd\xef\xbf\xbd") ==
	          0);
	/* Overlong '/' and an encoded surrogate. */
	cr_assert(strcmp(esc("\xc0\xaf", 2), "\xef\xbf\xbd\xef\xbf\xbd") == 0);
	cr_assert(strcmp(esc("\xed\xa0\x80", 3),
	                 "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd") == 0);
	/* Above U+10FFFF. */
	cr_assert(strcmp(esc("\xf4\x90\x80\x80", 4),
	                 "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd") ==
	          0);
	/* A stray continuation byte. */
	cr_assert(strcmp(esc("\x80z", 2), "\xef\xbf\xbdz") == 0);
}

Test(json, writer_handles_commas_and_nesting)
{
	struct buf b = {0};
	struct jw w;

	jw_init(&w, &b);
	jw_obj(&w);
	jw_key(&w, "model");
	jw_cstr(&w, "gpt");
	jw_key(&w, "messages");
	jw_arr(&w);
	jw_obj(&w);
	jw_key(&w, "role");
	jw_cstr(&w, "user");
	jw_key(&w, "content");
	jw_str(&w, "hi\n", 3);
	jw_obj_end(&w);
	jw_obj(&w);
	jw_obj_end(&w);
	jw_arr(&w);
	jw_arr_end(&w);
	jw_arr_end(&w);
	jw_key(&w, "n");
	jw_int(&w, -3);
	jw_key(&w, "t");
	jw_bool(&w, true);
	jw_key(&w, "f");
	jw_bool(&w, false);
	jw_key(&w, "z");
	jw_cstr(&w, NULL);
	jw_key(&w, "raw");
	jw_raw(&w, "{\"a\":[1]}", 9);
	jw_key(&w, "e");
	jw_arr(&w);
	jw_null(&w);
	jw_int(&w, 1);
	jw_arr_end(&w);
	jw_obj_end(&w);
	cr_assert(strcmp(buf_cstr(&b),
	                 "{\"model\":\"gpt\",\"messages\":[{\"role\":\"user\","
	                 "\"content\":\"hi\\n\"},{},[]],\"n\":-3,\"t\":true,"
	                 "\"f\":false,\"z\":null,\"raw\":{\"a\":[1]},"
	                 "\"e\":[null,1]}") == 0,
	          "%s", buf_cstr(&b));
	cr_assert(w.depth == 0 && !b.oom);
	/* The output parses back. */
	cr_assert(json_parse(&j, b.data, b.len) == 0);
	buf_free(&b);
}

Test(json, writer_escapes_keys)
{
	struct buf b = {0};
	struct jw w;

	jw_init(&w, &b);
	jw_obj(&w);
	jw_key(&w, "a\"b");
	jw_int(&w, 1);
	jw_obj_end(&w);
	cr_assert(strcmp(buf_cstr(&b), "{\"a\\\"b\":1}") == 0);
	buf_free(&b);
}

Test(json, writer_flags_too_deep)
{
	struct buf b = {0};
	struct jw w;
	int n;

	jw_init(&w, &b);
	for (n = 0; n < 63; n++)
		jw_arr(&w);
	cr_assert(!b.oom);
	jw_arr(&w);
	cr_assert(b.oom);
	buf_free(&b);
}

/* Format one number with jw_num. */
static const char *
num(double v)
{
	struct jw w;

	buf_reset(&wb);
	jw_init(&w, &wb);
	jw_num(&w, v);
	return buf_cstr(&wb);
}

Test(json, writer_numbers)
{
	cr_assert(strcmp(num(0), "0") == 0);
	cr_assert(strcmp(num(42), "42") == 0);
	cr_assert(strcmp(num(-7), "-7") == 0);
	cr_assert(strcmp(num(1e15), "1000000000000000") == 0);
	cr_assert(strcmp(num(9007199254740993.0), "9007199254740992") == 0);
	cr_assert(strcmp(num(0.7), "0.7") == 0);
	cr_assert(strcmp(num(0.1 + 0.2), "0.30000000000000004") == 0);
	cr_assert(strcmp(num(-1.5), "-1.5") == 0);
	cr_assert(strcmp(num(1e300), "1.0000000000000001e+300") == 0 ||
	          strcmp(num(1e300), "1e+300") == 0);
	cr_assert(strcmp(num(NAN), "null") == 0);
	cr_assert(strcmp(num(INFINITY), "null") == 0);
	cr_assert(strcmp(num(-INFINITY), "null") == 0);
	cr_assert(strtod(num(1e-7), NULL) == 1e-7);
}

Test(json, writer_numbers_in_array)
{
	struct buf b = {0};
	struct jw w;

	jw_init(&w, &b);
	jw_arr(&w);
	jw_num(&w, 1);
	jw_num(&w, NAN);
	jw_num(&w, 2.5);
	jw_int(&w, 9223372036854775807LL);
	jw_arr_end(&w);
	cr_assert(strcmp(buf_cstr(&b), "[1,null,2.5,9223372036854775807]") ==
	          0);
	buf_free(&b);
}

Test(json, roundtrips_escaped_strings)
{
	struct buf b = {0};
	struct jw w;
	const char *s = "q\"\\\x01\n\xc3\xa9\xf0\x9f\x98\x80";
	char out[64];

	jw_init(&w, &b);
	jw_arr(&w);
	jw_cstr(&w, s);
	jw_arr_end(&w);
	cr_assert(json_parse(&j, b.data, b.len) == 0);
	cr_assert(json_str(&j, 1, out, sizeof(out)) == (int)strlen(s));
	cr_assert(strcmp(out, s) == 0);
	buf_free(&b);
}

/* Our tokens match jsmn's for valid documents. */
static void
same_as_jsmn(const char *s)
{
	jsmntok_t t[64];
	jsmn_parser p;
	int n, i;

	jsmn_init(&p);
	n = jsmn_parse(&p, s, strlen(s), t, 64);
	cr_assert(parse(s) == 0, "%s", s);
	cr_assert(n == j.ntok, "%s: jsmn %d, ours %d", s, n, j.ntok);
	for (i = 0; i < n; i++) {
		cr_assert(t[i].type == j.tok[i].type, "%s tok %d", s, i);
		cr_assert(t[i].start == j.tok[i].start, "%s tok %d", s, i);
		cr_assert(t[i].end == j.tok[i].end, "%s tok %d", s, i);
		cr_assert(t[i].size == j.tok[i].size, "%s tok %d", s, i);
	}
}

Test(json, tokens_match_jsmn)
{
	same_as_jsmn("{\"a\": {\"b\": [1, 2, {\"c\": \"d\"}]}, \"e\": true}");
	same_as_jsmn(" [ [], {}, [[]], {\"x\":{}} , \"s\\\"q\", -1.5e3 ] ");
	same_as_jsmn("\"top\"");
	same_as_jsmn("17");
	same_as_jsmn("{\"k\\u0041\":null,\"\":\"\",\"z\":[false]}");
}

/* Linear-time parsing is measured by the bench, not asserted on a clock. */
Test(json, parses_large_message_arrays)
{
	struct buf b = {0};
	int n;

	buf_addc(&b, '[');
	for (n = 0; n < 30000; n++)
		buf_printf(&b, "%s{\"role\":\"user\",\"content\":\"m%d\"}",
		           n ? "," : "", n);
	buf_addc(&b, ']');
	cr_assert(json_parse(&j, b.data, b.len) == 0);
	cr_assert(j.ntok == 1 + 30000 * 5);
	buf_free(&b);
}

/* The 8-byte string scanner finds a quote, an escape or a control byte at
 * every offset of a long string, and never reads past the input. */
Test(json, word_scanner_finds_specials_at_every_offset)
{
	static const char specials[] = {'\\', '\x01'};
	char doc[64];

	for (int off = 0; off < 40; off++) {
		/* a plain string closed at off */
		memset(doc, 'a', sizeof doc);
		doc[0] = '"';
		doc[1 + off] = '"';
		cr_assert(json_parse(&j, doc, (size_t)off + 2) == 0, "off %d",
		          off);
		cr_assert(j.tok[0].end - j.tok[0].start == off);
		for (size_t k = 0; k < sizeof specials; k++) {
			memset(doc, 'a', sizeof doc);
			doc[0] = '"';
			doc[1 + off] = specials[k];
			doc[2 + off] = 'n';
			doc[3 + off] = '"';
			int rc = json_parse(&j, doc, (size_t)off + 4);
			/* "\n" is a valid escape; a raw control byte is not */
			cr_assert(rc == (specials[k] == '\\' ? 0 : -1),
			          "off %d special %zu", off, k);
		}
	}
}

/* The 16-byte scanner never takes a UTF-8 byte (0x80 and up) for a control
 * byte, wherever it sits in a block. */
Test(json, block_scanner_passes_high_bytes)
{
	char doc[80];

	for (int off = 0; off < 40; off++) {
		memset(doc, 'a', sizeof doc);
		doc[0] = '"';
		doc[1 + off] = '\xc3';
		doc[2 + off] = '\xa9';
		doc[60] = '"';
		cr_assert(json_parse(&j, doc, 61) == 0, "off %d", off);
		cr_assert(j.tok[0].end == 60);
	}
}

static const char *const top_skip[] = {"messages", "input", NULL};

/* Whether the token storage of a and b agree on tokens ia and ib. */
static int
tok_same(const struct json *a, int ia, const struct json *b, int ib)
{
	return a->tok[ia].type == b->tok[ib].type &&
	       a->tok[ia].start == b->tok[ib].start &&
	       a->tok[ia].end == b->tok[ib].end;
}

/*
 * The contract of json_parse_top against json_parse on s: the same verdict;
 * for an object, the same token for every top-level key and value, a
 * skipped container with size 0 and nothing under it, and every other
 * subtree token for token the same; for anything else, the same tokens.
 */
static void
top_matches_full(const char *s, size_t n)
{
	static struct json full, top;
	int rf = json_parse(&full, s, n);
	int rt = json_parse_top(&top, s, n, top_skip);
	int a, b, na, nb;

	cr_assert(rf == rt, "verdicts differ on %.*s", (int)n, s);
	if (rf == -1)
		return;
	if (json_type(&full, 0) != JSMN_OBJECT) {
		cr_assert(full.ntok == top.ntok);
		for (int i = 0; i < full.ntok; i++)
			cr_assert(tok_same(&full, i, &top, i) &&
			          full.tok[i].size == top.tok[i].size);
		return;
	}
	cr_assert(tok_same(&full, 0, &top, 0));
	cr_assert(full.tok[0].size == top.tok[0].size);
	for (a = 1, b = 1; a < full.ntok; a = na, b = nb) {
		cr_assert(b < top.ntok);
		cr_assert(tok_same(&full, a, &top, b), "key %d", a);
		cr_assert(tok_same(&full, a + 1, &top, b + 1), "value %d", a);
		na = json_next(&full, a + 1);
		nb = json_next(&top, b + 1);
		if (nb - b - 1 != na - a - 1) { /* a skipped container */
			cr_assert(top.shallow);
			cr_assert(json_eq(&top, b, "messages") ||
			          json_eq(&top, b, "input"));
			cr_assert(top.tok[b + 1].size == 0 && nb == b + 2);
			continue;
		}
		for (int k = 1; k < na - a; k++)
			cr_assert(tok_same(&full, a + k, &top, b + k) &&
			          full.tok[a + k].size == top.tok[b + k].size);
	}
	cr_assert(b == top.ntok);
}

#define TOP(lit) top_matches_full(lit, sizeof(lit) - 1)

Test(json, top_skips_bulk_members)
{
	static const char s[] =
	    "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
	    "\"hi\"},{\"role\":\"assistant\",\"content\":[{\"type\":\"text\"}]}"
	    "],\"stream_options\":{\"include_usage\":true},\"n\":2}";
	int m;
	size_t rl;
	const char *raw;

	cr_assert(json_parse_top(&j, s, sizeof s - 1, top_skip) == 0);
	cr_assert(j.shallow);
	cr_assert(j.ntok == 1 + 2 + 2 + 2 + 2 + 2);
	m = json_get(&j, 0, "messages");
	cr_assert(json_type(&j, m) == JSMN_ARRAY);
	cr_assert(json_size(&j, m) == 0);
	cr_assert(json_at(&j, m, 0) == -1);
	raw = json_raw(&j, m, &rl);
	cr_assert(rl > 2 && raw[0] == '[' && raw[rl - 1] == ']');
	cr_assert(
	    json_is_true(&j, json_path(&j, 0, "stream_options.include_usage")));
	cr_assert(json_eq(&j, json_get(&j, 0, "model"), "m"));
	cr_assert(json_get(&j, 0, "n") ==
	          json_next(&j, json_get(&j, 0, "stream_options")) + 1);
	/* the whole tree from the same text */
	cr_assert(json_parse(&j, s, sizeof s - 1) == 0);
	cr_assert(!j.shallow);
	cr_assert(json_size(&j, json_get(&j, 0, "messages")) == 2);
	TOP(s);
}

Test(json, top_looks_only_at_the_top_level)
{
	/* nested "messages" and scalar values of skipped keys are tokens */
	cr_assert(json_parse_top(&j,
	                         "{\"a\":{\"messages\":[1]},\"input\":\"x\"}",
	                         34, top_skip) == 0);
	cr_assert(!j.shallow);
	cr_assert(json_size(&j, json_path(&j, 0, "a.messages")) == 1);
	TOP("{\"a\":{\"messages\":[1,{\"b\":2}]},\"input\":\"x\"}");
	TOP("[{\"messages\":[1]},{\"input\":{}}]");
	TOP("\"messages\"");
	TOP("{\"messages\":[],\"messages\":{},\"input\":[[[]]],\"z\":[1]}");
	TOP("{\"mess\\u0061ges\":[1,2],\"input\":{\"k\":[true,null]}}");
	TOP(" { \"input\" : [ 1 , [ 2 ] ] , \"x\" : { \"y\" : [ ] } } ");
}

Test(json, top_rejects_what_parse_rejects)
{
	static const char *const bad[] = {
	    "{\"messages\":[\"a\\x\"]}",  "{\"messages\":[\"a\x01\"]}",
	    "{\"messages\":[01]}",        "{\"messages\":[1,]}",
	    "{\"messages\":[{\"a\" 1}]}", "{\"messages\":[{\"a\":1,}]}",
	    "{\"messages\":[tru]}",       "{\"messages\":[1}",
	    "{\"messages\":{\"a\":[}]}",  "{\"messages\":[\"\\ud83d\\u12\"]}",
	    "{\"messages\":[]} x",        "{\"messages\":[[[[[",
	    "{\"input\":{\"a\":1}}}",     "{\"input\":[1 2]}",
	};
	char deep[2000];
	int n = 0;

	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		cr_assert(
		    json_parse_top(&j, bad[i], strlen(bad[i]), top_skip) == -1,
		    "%s", bad[i]);
		top_matches_full(bad[i], strlen(bad[i]));
	}
	/* the depth limit holds inside a skipped value */
	n += snprintf(deep, sizeof deep, "{\"messages\":");
	for (int i = 0; i < 600; i++)
		deep[n++] = '[';
	for (int i = 0; i < 600; i++)
		deep[n++] = ']';
	deep[n++] = '}';
	cr_assert(json_parse_top(&j, deep, (size_t)n, top_skip) == -1);
	top_matches_full(deep, (size_t)n);
}

/* A pseudo-random number. */
static unsigned
rnd(unsigned *seed)
{
	*seed = *seed * 1103515245 + 12345;
	return *seed >> 16;
}

/* Append a random JSON value (depth levels at most) to b. */
static void
gen_value(struct buf *b, unsigned *seed, int depth)
{
	static const char *const keys[] = {"\"messages\"", "\"input\"", "\"k\"",
	                                   "\"mess\\u0061ges\"", "\"\""};
	static const char *const atoms[] = {
	    "\"s\\n\\u00e9\\\"\"",         "1", "-2.5e3", "true", "null",
	    "\"\xc3\xa9 plain text here\""};
	unsigned r = rnd(seed), n = rnd(seed) % 4;

	if (depth == 0 || r % 3 == 0) {
		buf_adds(b, atoms[rnd(seed) % 6]);
		return;
	}
	buf_addc(b, r % 3 == 1 ? '{' : '[');
	for (unsigned i = 0; i < n; i++) {
		if (i)
			buf_adds(b, rnd(seed) % 4 ? "," : " , ");
		if (r % 3 == 1) {
			buf_adds(b, keys[rnd(seed) % 5]);
			buf_addc(b, ':');
		}
		gen_value(b, seed, depth - 1);
	}
	buf_addc(b, r % 3 == 1 ? '}' : ']');
}

/* Random documents, a third of them broken by one byte: json_parse_top
 * agrees with json_parse (tests/fuzz/fuzz_json_top.c does the same with
 * libFuzzer). */
Test(json, top_agrees_with_parse_on_random_documents)
{
	struct buf b = {0};
	unsigned seed = 12345, r;
	int valid = 0;

	for (int round = 0; round < 20000; round++) {
		buf_reset(&b);
		buf_adds(&b, "{\"messages\":");
		gen_value(&b, &seed, 4);
		buf_adds(&b, ",\"input\":");
		gen_value(&b, &seed, 3);
		buf_adds(&b, ",\"k\":");
		gen_value(&b, &seed, 3);
		buf_addc(&b, '}');
		if ((r = rnd(&seed)) % 3 == 0)
			b.data[rnd(&seed) % b.len] = (char)(r >> 4);
		valid += json_parse(&j, b.data, b.len) == 0;
		top_matches_full(b.data, b.len);
	}
	cr_assert(valid > 10000 && valid < 19000, "%d valid", valid);
	buf_free(&b);
}

/* Long strings (the 64-byte steps, SSE2 or AVX2): a quote, a backslash, a
 * control byte or a UTF-8 byte at every offset of the first 300 is found
 * or passed as it must be. */
Test(json, long_string_scanner_every_offset)
{
	/* long enough for the AVX-512 skip (1 KB left) at every offset; a
	 * quote ends the string early, spaces fill the rest */
	static char doc[1500];
	static const char specials[] = {'"', '\\', '\x01', '\xc3'};

	/* at every vector width this CPU has (the widest last, as it stays) */
	for (int lv = JSON_SIMD_SSE2; lv <= JSON_SIMD_AVX512; lv++)
		for (int off = 0; off < (json_simd(lv) == lv ? 300 : 0); off++)
			for (size_t k = 0; k < sizeof specials; k++) {
				memset(doc, 'a', sizeof doc);
				doc[0] = '"';
				doc[1 + off] = specials[k];
				if (specials[k] == '\\')
					doc[2 + off] = 'n';
				if (specials[k] == '\xc3')
					doc[2 + off] = '\xa9';
				doc[1450] = '"';
				if (specials[k] == '"')
					memset(doc + 2 + off, ' ',
					       (size_t)(1451 - (2 + off)));
				int rc = json_parse(&j, doc, 1451);
				if (specials[k] == '\x01')
					cr_assert(rc == -1,
					          "off %d control byte", off);
				else
					cr_assert(rc == 0 &&
					              j.tok[0].end ==
					                  (specials[k] == '"'
					                       ? 1 + off
					                       : 1450),
					          "off %d special %zu", off, k);
			}
}

/* Every ASCII byte at offsets in the short, 16-, 64- and 128-byte steps of
 * the string scanners is told right: a control byte is an error, a quote
 * ends the string, a backslash starts an escape, anything else passes. */
Test(json, string_scanners_classify_every_byte)
{
	static const int offs[] = {0,   3,   9,   20,  40,  70,  100,
	                           127, 135, 199, 255, 260, 300, 330};
	static char doc[400];

	for (int lv = JSON_SIMD_SSE2; lv <= JSON_SIMD_AVX512; lv++)
		for (size_t i = 0;
		     i <
		     (json_simd(lv) == lv ? sizeof offs / sizeof offs[0] : 0);
		     i++)
			for (int b = 0; b < 0x80; b++) {
				int off = offs[i], rc, want_end = 349;

				/* ["aaa...b...aaa"]: a quote splits it in two
				 * strings
				 */
				memset(doc, 'a', sizeof doc);
				doc[0] = '[';
				doc[1] = '"';
				doc[2 + off] = (char)b;
				if (b == '\\')
					doc[3 + off] = 'n';
				if (b == '"') {
					doc[3 + off] = ',';
					doc[4 + off] = '"';
					want_end = 2 + off;
				}
				doc[349] = '"';
				doc[350] = ']';
				rc = json_parse(&j, doc, 351);
				if (b < 0x20)
					cr_assert(rc == -1, "off %d byte %#x",
					          off, b);
				else
					cr_assert(rc == 0 &&
					              j.tok[1].end == want_end,
					          "off %d byte %#x", off, b);
			}
}

/* Long strings with specials at random places (quotes, escapes, control
 * bytes, UTF-8) read alike at every vector width: the same answer and the
 * same tokens as the narrowest, for json_parse and json_parse_top. */
Test(json, vector_widths_agree_on_long_strings)
{
	static const char specials[] = {'"', '\\', '\x01', '\xc3', '\x1f', ' '};
	static const char *const skip[] = {"messages", NULL};
	static char doc[4200];
	struct json k = {0};
	unsigned seed = 12345;
	int levels = 0;

	for (int lv = JSON_SIMD_AVX2; lv <= JSON_SIMD_AVX512; lv++)
		levels += json_simd(lv) == lv;
	for (int it = 0; it < 3000; it++) {
		int n = 20 + (int)((seed = seed * 1103515245 + 12345) % 4096);
		int nsp = (int)((seed = seed * 1103515245 + 12345) % 4), pos;

		memcpy(doc, "{\"messages\":[\"", 14);
		memset(doc + 14, 'x', (size_t)n);
		for (int q = 0; q < nsp; q++) {
			seed = seed * 1103515245 + 12345;
			pos = 14 + (int)(seed % (unsigned)n);
			doc[pos] = specials[(seed >> 16) % sizeof specials];
		}
		memcpy(doc + 14 + n, "\"],\"model\":\"m\"}", 15);
		for (int top = 0; top < 2; top++) {
			json_simd(JSON_SIMD_SSE2);
			int want =
			    top ? json_parse_top(&k, doc, (size_t)n + 29, skip)
			        : json_parse(&k, doc, (size_t)n + 29);
			for (int lv = JSON_SIMD_AVX2; lv <= JSON_SIMD_AVX512;
			     lv++) {
				if (json_simd(lv) != lv)
					continue;
				int got =
				    top ? json_parse_top(&j, doc,
				                         (size_t)n + 29, skip)
				        : json_parse(&j, doc, (size_t)n + 29);
				cr_assert_eq(got, want, "it %d level %d top %d",
				             it, lv, top);
				if (got == 0) {
					cr_assert_eq(j.ntok, k.ntok,
					             "it %d level %d", it, lv);
					for (int t = 0; t < j.ntok; t++)
						cr_assert(
						    j.tok[t].start ==
						            k.tok[t].start &&
						        j.tok[t].end ==
						            k.tok[t].end,
						    "it %d level %d tok %d", it,
						    lv, t);
				}
			}
		}
	}
	json_simd(JSON_SIMD_AVX512);
	json_free(&k);
	cr_log_info("vector widths checked against SSE2: %d", levels);
}

/* json_eq and json_get by length first: an escaped text decodes to the
 * shorter string, never to its own raw spelling. */
Test(json, eq_and_get_with_escapes)
{
	const char *doc = "{\"\\\"\":1,\"m\\u006fdel\":2,\"ab\":3,\"a\":4}";
	int q, m, ab, a;

	cr_assert_eq(json_parse(&j, doc, strlen(doc)), 0);
	q = 1;
	m = json_next(&j, q + 1);
	ab = json_next(&j, m + 1);
	a = json_next(&j, ab + 1);
	cr_assert(json_eq(&j, q, "\""));
	cr_assert(!json_eq(&j, q, "\\\""));
	cr_assert(json_eq(&j, m, "model"));
	cr_assert(!json_eq(&j, m, "m\\u006fdel"));
	cr_assert(json_eq(&j, ab, "ab"));
	cr_assert(!json_eq(&j, ab, "a"));
	cr_assert(!json_eq(&j, a, "ab"));
	cr_assert(!json_eq(&j, ab, "abc"));
	cr_assert_eq(json_get(&j, 0, "model"), m + 1);
	cr_assert_eq(json_get(&j, 0, "\""), q + 1);
	cr_assert_eq(json_get(&j, 0, "a"), a + 1);
	cr_assert_eq(json_get(&j, 0, "mo"), -1);
	json_free(&j);
}

/* Paths json_pick is tested with: the Chat chunk's, and more. */
static const char *const pick_paths[] = {
    "error",
    "usage",
    "usage.prompt_tokens",
    "usage.prompt_tokens_details.cached_tokens",
    "choices",
    "choices.0",
    "choices.0.delta.content",
    "choices.0.delta.tool_calls",
    "choices.0.finish_reason",
    "choices.1.delta",
    "delta.content",
    "type",
    "message.usage.input_tokens",
    "0.content",
    NULL};

/* Path n of pick_paths followed in a full parse with json_get (keys)
 * and json_at (digits), as the provider code reads it. */
static int
pick_walk(const struct json *f, const char *path)
{
	char seg[64];
	const char *dot;
	int cur = 0;
	size_t n;

	for (; cur >= 0; path = dot + 1) {
		dot = strchr(path, '.');
		n = dot ? (size_t)(dot - path) : strlen(path);
		memcpy(seg, path, n);
		seg[n] = '\0';
		if (strspn(seg, "0123456789") == n)
			cur = json_at(f, cur, atoi(seg));
		else
			cur = json_get(f, cur, seg);
		if (dot == NULL)
			break;
	}
	return cur;
}

/* json_pick gives json_parse's verdict and, for each path, the token the
 * json_get / json_at chain finds (or none). */
static void
pick_matches_full(const char *s, size_t n)
{
	static struct json f, p;
	static struct json_sel sel;
	int rf, rp, a, b;

	cr_assert(json_sel_init(&sel, pick_paths) == 0);
	rf = json_parse(&f, s, n);
	rp = json_pick(&p, s, n, &sel);
	cr_assert(rf == rp, "verdict %d / %d on %.*s", rf, rp, (int)n, s);
	if (rf == -1)
		return;
	cr_assert(p.tok[0].type == f.tok[0].type &&
	          p.tok[0].start == f.tok[0].start &&
	          p.tok[0].end == f.tok[0].end &&
	          p.tok[0].size == f.tok[0].size);
	for (int i = 0; pick_paths[i]; i++) {
		a = pick_walk(&f, pick_paths[i]);
		b = json_picked(&p, i);
		cr_assert((a < 0) == (b < 0), "%s on %.*s", pick_paths[i],
		          (int)n, s);
		if (a < 0)
			continue;
		cr_assert(f.tok[a].type == p.tok[b].type &&
		              f.tok[a].start == p.tok[b].start &&
		              f.tok[a].end == p.tok[b].end &&
		              f.tok[a].size == p.tok[b].size,
		          "%s on %.*s", pick_paths[i], (int)n, s);
	}
}

/* Each data line of a golden stream file, whole and cut short. */
static int
pick_stream_file(const char *path)
{
	char line[65536];
	FILE *fp = fopen(path, "r");
	int frames = 0;
	size_t n;

	cr_assert(fp, "%s", path);
	while (fgets(line, sizeof line, fp)) {
		if (strncmp(line, "data: ", 6) != 0)
			continue;
		n = strcspn(line + 6, "\r\n");
		pick_matches_full(line + 6, n);
		for (size_t cut = 0; cut < n; cut += 7)
			pick_matches_full(line + 6, cut);
		frames++;
	}
	fclose(fp);
	return frames;
}

/* Every frame of the golden streams under tests/data, and every cut of
 * them: json_pick agrees with the full tokenizer. */
Test(json, pick_agrees_with_parse_on_golden_streams)
{
	static const char *const files[] = {
	    "anthropic/native_stream.sse",      "anthropic/stream_text.sse",
	    "anthropic/stream_tools.sse",       "anthropic/stream_error.sse",
	    "azure/stream_filter.sse",          "azure/stream_text.sse",
	    "gemini/stream_text.sse",           "gemini/stream_tools.sse",
	    "openai_responses/stream_text.sse", "responses/stream_tools.sse",
	    "responses/stream_reasoning.sse",
	};
	char p[512];
	const char *dir = getenv("LLMFD_TESTDATA");
	int frames = 0;

	for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
		snprintf(p, sizeof p, "%s/%s",
		         dir && dir[0] ? dir : "tests/data", files[i]);
		frames += pick_stream_file(p);
	}
	cr_assert(frames > 40, "%d frames", frames);
}

/* Chunks json_pick must refuse as json_parse does, and picks through
 * escaped and duplicate keys and odd shapes. */
Test(json, pick_rejects_malformed_chunks)
{
	static const char *const docs[] = {
	    "{\"choices\":[{\"delta\":{\"content\":\"hi\"",
	    "{\"choices\":[{\"delta\":{\"content\":\"h\\x\"}}]}",
	    "{\"choices\":[{\"delta\":{\"content\":\"a\x01\"}}]}",
	    "{\"choices\":[01]}",
	    "{\"choices\":[1,]}",
	    "{\"choices\":[]} x",
	    "{\"choices\":[]}{}",
	    "{\"usage\":{\"prompt_tokens\":tru}}",
	    "{\"error\" null}",
	    "{\"a\":1,}",
	    "not json",
	    "",
	    "{\"choices\":[{\"delta\":{\"c\\u006fntent\":\"x\"}}]}",
	    "{\"choices\":[{\"delta\":{\"content\":\"x\",\"content\":\"y\"}}]}",
	    "{\"choices\":[{\"delta\":1},{\"delta\":{\"content\":\"z\"}}],"
	    "\"choices\":[{\"delta\":{\"content\":\"w\"}}]}",
	    "{\"choices\":{\"0\":{\"delta\":{\"content\":\"o\"}}}}",
	    "[{\"content\":1},{\"content\":2}]",
	    "{\"usage\":[{\"prompt_tokens\":1}],\"error\":null}",
	    "  {\"type\" : \"x\" , \"error\" : {\"message\":\"m\"} }  ",
	};
	char deep[2000];
	int n = 0;

	for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++)
		pick_matches_full(docs[i], strlen(docs[i]));
	cr_assert(json_pick(&j, docs[0], strlen(docs[0]),
	                    &(struct json_sel){0}) == -1);
	n += snprintf(deep, sizeof deep, "{\"choices\":");
	for (int i = 0; i < 600; i++)
		deep[n++] = '[';
	for (int i = 0; i < 600; i++)
		deep[n++] = ']';
	deep[n++] = '}';
	pick_matches_full(deep, (size_t)n);
}

/* Append a random chunk-like value (depth levels at most) to b. */
static void
gen_chunk(struct buf *b, unsigned *seed, int depth)
{
	static const char *const keys[] = {
	    "\"choices\"", "\"delta\"",         "\"content\"",
	    "\"usage\"",   "\"ch\\u006fices\"", "\"0\"",
	    "\"error\"",   "\"prompt_tokens\""};
	static const char *const atoms[] = {
	    "\"s\\n\\u00e9\"", "7", "null", "\"\"", "false", "\"text here\""};
	unsigned r = rnd(seed), n = rnd(seed) % 4;

	if (depth == 0 || r % 3 == 0) {
		buf_adds(b, atoms[rnd(seed) % 6]);
		return;
	}
	buf_addc(b, r % 3 == 1 ? '{' : '[');
	for (unsigned i = 0; i < n; i++) {
		if (i)
			buf_adds(b, rnd(seed) % 4 ? "," : " , ");
		if (r % 3 == 1) {
			buf_adds(b, keys[rnd(seed) % 8]);
			buf_addc(b, ':');
		}
		gen_chunk(b, seed, depth - 1);
	}
	buf_addc(b, r % 3 == 1 ? '}' : ']');
}

/* Random chunk-like documents, a third of them broken by one byte:
 * json_pick agrees with json_parse (tests/fuzz/fuzz_json_pick.c does
 * the same with libFuzzer). */
Test(json, pick_agrees_with_parse_on_random_documents)
{
	struct buf b = {0};
	unsigned seed = 777, r;
	int valid = 0, found = 0;

	for (int round = 0; round < 20000; round++) {
		buf_reset(&b);
		if (round % 2) {
			gen_chunk(&b, &seed, 5);
		} else { /* the shape of a chunk, values at random */
			buf_adds(&b, "{\"choices\":[{\"delta\":");
			gen_chunk(&b, &seed, 3);
			buf_adds(&b, "}],\"usage\":");
			gen_chunk(&b, &seed, 3);
			buf_addc(&b, '}');
		}
		if ((r = rnd(&seed)) % 3 == 0)
			b.data[rnd(&seed) % b.len] = (char)(r >> 4);
		if (json_parse(&j, b.data, b.len) == 0) {
			valid++;
			found += pick_walk(&j, "choices.0.delta.content") >= 0;
		}
		pick_matches_full(b.data, b.len);
	}
	cr_assert(valid > 10000 && valid < 19000, "%d valid", valid);
	cr_assert(found > 20, "%d found", found);
	buf_free(&b);
}

/* The first member of the root object whose key decodes to key, found
 * by walking every member (what json_get must agree with). */
static int
walk_get(const struct json *f, const char *key)
{
	char k[64];
	int t = 1;

	for (int m = 0; m < f->tok[0].size; m++) {
		if (json_str(f, t, k, sizeof k) == (int)strlen(key) &&
		    strcmp(k, key) == 0)
			return t + 1;
		t = json_next(f, t + 1);
	}
	return -1;
}

/* json_get on the root object skips keys it can tell are absent (by
 * length and first byte) yet finds every present one: random objects of
 * keys alike in length and first byte, some escaped, some repeated, with
 * values that hold the same keys one level down; json_parse_top too. */
Test(json, get_on_root_agrees_with_a_walk)
{
	static const char *const keys[] = {
	    "model",       "mode",         "modem",  "m",       "",
	    "stream",      "strean",       "tools",  "timeout", "top",
	    "mo\\u0064el", "str\\u0065am", "\\u006d"};
	static const char *const plain[] = {
	    "model", "mode",    "modem", "m", "",    "stream",  "strean",
	    "tools", "timeout", "top",   "x", "mod", "streams", "tool"};
	static const char *const skip[] = {"tools", NULL};
	struct buf b = {0};
	unsigned seed = 99;
	int found = 0;

	for (int round = 0; round < 3000; round++) {
		unsigned n = rnd(&seed) % 6;

		buf_reset(&b);
		buf_addc(&b, '{');
		for (unsigned i = 0; i < n; i++) {
			const char *k = keys[rnd(&seed) % 13];

			buf_adds(&b, i ? ",\"" : "\"");
			buf_adds(&b, k);
			buf_adds(&b, "\":");
			if (rnd(&seed) % 3 == 0) {
				buf_adds(&b, "{\"");
				buf_adds(&b, plain[rnd(&seed) % 14]);
				buf_adds(&b, "\":1}");
			} else {
				buf_addc(&b, (char)('0' + i));
			}
		}
		buf_addc(&b, '}');
		for (int top = 0; top < 2; top++) {
			cr_assert(
			    top ? json_parse_top(&j, b.data, b.len, skip) == 0
			        : json_parse(&j, b.data, b.len) == 0,
			    "%s", b.data);
			for (int i = 0; i < 14; i++) {
				int want = walk_get(&j, plain[i]);

				cr_assert(json_get(&j, 0, plain[i]) == want,
				          "%s in %s", plain[i], b.data);
				found += want >= 0;
			}
		}
	}
	cr_assert(found > 3000, "%d found", found);
	/* a document that is not an object, and one parsed by json_pick,
	 * are not filtered by a stale note */
	cr_assert(json_parse(&j, "[1]", 3) == 0);
	cr_assert(json_get(&j, 0, "model") == -1);
	buf_free(&b);
}
