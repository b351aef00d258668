/* libFuzzer: the JSON tokenizer and every reader over its tokens. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
	static struct json j;
	struct buf out = {0};
	char s[64];
	long long v;
	double d;

	if (json_parse(&j, (const char *)data, n) == -1)
		return 0;
	for (int i = 0; i < j.ntok; i++) {
		size_t rl;

		(void)json_next(&j, i);
		(void)json_size(&j, i);
		(void)json_raw(&j, i, &rl);
		(void)json_str(&j, i, s, sizeof s);
		buf_reset(&out);
		(void)json_str_buf(&j, i, &out);
		(void)json_int(&j, i, &v);
		(void)json_num(&j, i, &d);
		(void)json_get(&j, i, "model");
		(void)json_at(&j, i, 1);
	}
	(void)json_path(&j, 0, "choices.0.delta.content");
	/* the writer must escape anything the reader decoded */
	buf_reset(&out);
	json_escape(&out, (const char *)data, n);
	buf_free(&out);
	return 0;
}
