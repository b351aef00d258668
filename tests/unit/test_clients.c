/* Unit tests for client identity, limits and spend (issue 17): the
 * `clients` section of common/cfg.c, worker/ident.c, worker/limits.c,
 * common/spend.c (prices, days, the row set and the spend file), the
 * table's ledger, the client families of /metrics, and the policy's
 * allowed groups and priority rules. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "common/cfg.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/shm.h"
#include "common/spend.h"
#include "worker/ident.h"
#include "worker/limits.h"
#include "worker/policy.h"
#include "worker/provider.h"
#include "worker/worker.h"

static char tdir[64];
static char tfile[PATH_MAX];
static struct cfg *cfg;
static struct shm shm;
static struct worker w;
static int slot_of[CFG_MAX_DEPLOY];

/* Remove dir and the files in it. */
static void
rm_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char p[PATH_MAX * 2];

	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
		unlink(p);
	}
	closedir(d);
	rmdir(dir);
}

static void
setup(void)
{
	snprintf(tdir, sizeof tdir, "/tmp/llmfd-clients-XXXXXX");
	cr_assert_not_null(mkdtemp(tdir));
	snprintf(tfile, sizeof tfile, "%s/llmfd.conf", tdir);
	log_init(LOG_LVL_ERROR, "test_clients");
	memset(&w, 0, sizeof w);
}

static void
teardown(void)
{
	free(w.client_slot);
	memset(&w, 0, sizeof w);
	if (shm.hdr)
		shm_detach(&shm);
	if (cfg)
		cfg_free(cfg);
	cfg = NULL;
	rm_dir(tdir);
}

TestSuite(clients_cfg, .init = setup, .fini = teardown);
TestSuite(ident, .init = setup, .fini = teardown);
TestSuite(spend, .init = setup, .fini = teardown);
TestSuite(limits, .init = setup, .fini = teardown);

/* printf %s k | sha256sum */
#define SHA_OF_K                                                               \
	"8254c329a92850f6d539dd376f4816ee2764517da5e0235514af433164480d7a"
#define DEPS                                                                   \
	"deployments = ( { name = \"a\"; group = \"g\"; model = \"gpt-4o\"; "  \
	"},\n"                                                                 \
	"  { name = \"b\"; group = \"h\"; model = \"m2\"; region = \"eu\"; } " \
	");\n"

/* Hex SHA-256 of s. */
static const char *
sha_hex(const char *s)
{
	static char hex[65];
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;

	cr_assert_eq(EVP_Digest(s, strlen(s), md, &n, EVP_sha256(), NULL), 1);
	for (unsigned i = 0; i < n; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	return hex;
}

/* Write text as the config and load it; NULL with *cause on failure. */
static struct cfg *
load(const char *text, char **cause)
{
	FILE *f = fopen(tfile, "w");

	cr_assert_not_null(f);
	fputs(text, f);
	fclose(f);
	*cause = NULL;
	return cfg_load(tfile, cause);
}

/* Load text, which must succeed, into cfg. */
static void
load_ok(const char *text)
{
	char *cause;

	cfg = load(text, &cause);
	cr_assert_not_null(cfg, "load failed: %s", cause ? cause : "?");
}

/* Text must be refused at line with reason in the message. */
static void
refused(const char *text, int line, const char *reason)
{
	char prefix[PATH_MAX + 32], *cause;
	struct cfg *c = load(text, &cause);

	cr_assert_null(c, "loaded, expected \"%s\"", reason);
	snprintf(prefix, sizeof prefix, "%s:%d: ", tfile, line);
	cr_assert(strncmp(cause, prefix, strlen(prefix)) == 0,
	          "cause \"%s\" does not start with \"%s\"", cause, prefix);
	cr_assert(strstr(cause, reason) != NULL, "cause \"%s\" lacks \"%s\"",
	          cause, reason);
	free(cause);
}

/* ---- config ---- */

Test(clients_cfg, parsed_with_implicit_default)
{
	const struct client_cfg *c;
	char text[2048];

	char k1[65];

	snprintf(k1, sizeof k1, "%s", sha_hex("k1"));
	snprintf(text, sizeof text,
	         DEPS "clients = (\n"
	              " { name = \"ci\"; uid = 1001; rpm = 60; tpm = 5000;\n"
	              "   max_concurrent = 2; priority = \"low\";\n"
	              "   groups = [ \"g\" ]; region = \"eu\"; },\n"
	              " { name = \"nb\"; key_sha256 = [ \"%s\", \"%s\" ];\n"
	              "   daily_budget_usd = 1.5; monthly_budget_usd = 20; },\n"
	              " { name = \"staff\"; gid = \"root\"; },\n"
	              " { name = \"me\"; uid = \"root\"; }\n"
	              ");\n",
	         k1, sha_hex("k2"));
	load_ok(text);
	cr_assert_eq(cfg->nclient, 5);
	c = &cfg->clients[0];
	cr_assert_str_eq(c->name, "ci");
	cr_assert_eq(c->uid, 1001);
	cr_assert_eq(c->gid, -1);
	cr_assert_eq(c->rpm, 60);
	cr_assert_eq(c->tpm, 5000);
	cr_assert_eq(c->max_concurrent, 2);
	cr_assert_eq(c->priority, PRIO_LOW);
	cr_assert_eq(c->ngroups, 1);
	cr_assert_str_eq(c->region, "eu");
	cr_assert(cfg_client_allows(c, "g"));
	cr_assert(!cfg_client_allows(c, "h"));
	c = &cfg->clients[1];
	cr_assert_eq(c->nkeys, 2);
	cr_assert_eq(c->priority, PRIO_NORMAL);
	cr_assert_float_eq(c->daily_budget_usd, 1.5, 1e-9);
	cr_assert_float_eq(c->monthly_budget_usd, 20, 1e-9);
	cr_assert(cfg_client_allows(c, "anything"));
	cr_assert_eq(cfg->clients[2].gid, 0);
	cr_assert_eq(cfg->clients[3].uid, 0);
	cr_assert_eq(cfg->def_client, 4);
	cr_assert_str_eq(cfg->clients[4].name, "default");
	cr_assert(cfg->clients[4].implicit);
	cr_assert_eq(cfg_find_client(cfg, "nb"), 1);
	cr_assert_eq(cfg->default_client, DEFCLIENT_ALLOW);
	cr_assert_eq(cfg->tcp_require_key, 0);
}

Test(clients_cfg, default_entry_and_deny)
{
	load_ok(DEPS "clients = ( { name = \"default\"; rpm = 5; } );\n");
	cr_assert_eq(cfg->nclient, 1);
	cr_assert_eq(cfg->def_client, 0);
	cr_assert_eq(cfg->clients[0].rpm, 5);
	cr_assert(!cfg->clients[0].implicit);
	cfg_free(cfg);
	load_ok("daemon = { default_client = \"deny\"; tcp_require_key = "
	        "true; };\n" DEPS "clients = ( { name = \"x\"; uid = 7; },\n"
	        "  { name = \"k\"; key_sha256 = \"" SHA_OF_K "\"; } );\n");
	cr_assert_eq(cfg->nclient, 2);
	cr_assert_eq(cfg->def_client, -1);
	cr_assert_eq(cfg->tcp_require_key, 1);
}

Test(clients_cfg, refusals_name_file_and_line)
{
	char text[2048];

	refused(DEPS "clients = (\n { name = \"x\"; key_sha256 = \"abc\"; } );",
	        4, "client 'x': key_sha256: expected the SHA-256 of the key");
	refused(DEPS "clients = (\n { name = \"x\"; uid = 1; },\n"
	             " { name = \"x\"; uid = 2; } );",
	        5, "client 'x': duplicate name (first at line 4)");
	refused(DEPS "clients = (\n { name = \"x\"; uid = 1; },\n"
	             " { name = \"y\";\n uid = 1; } );",
	        6, "client 'y': uid 1 is already client 'x''s (line 4)");
	snprintf(text, sizeof text,
	         DEPS "clients = (\n { name = \"x\"; key_sha256 = \"%s\"; },\n"
	              " { name = \"y\";\n key_sha256 = \"%s\"; } );",
	         sha_hex("k"), sha_hex("k"));
	refused(text, 6, "a key hash is also client 'x''s");
	refused(DEPS "clients = (\n { name = \"x\"; uid = 1;\n"
	             " groups = [ \"nope\" ]; } );",
	        5, "client 'x': groups: no group named 'nope'");
	refused(DEPS "clients = (\n { name = \"default\"; uid = 1; } );", 4,
	        "client 'default': takes callers that match no other client");
	refused("daemon = { default_client = \"deny\"; };\n" DEPS
	        "clients = (\n { name = \"default\"; } );",
	        5, "default_client is \"deny\"");
	refused(DEPS "clients = (\n { name = \"x\"; rpm = 3; } );", 4,
	        "client 'x': set uid, gid or key_sha256");
	refused(DEPS
	        "clients = (\n { name = \"x\"; uid = 1;\n colour = 2; } );",
	        5, "client 'x': unknown setting 'colour'");
	refused(DEPS
	        "clients = (\n { name = \"x\"; uid = \"no-such-user-x\"; } "
	        ");",
	        4, "client 'x': uid: no such user 'no-such-user-x'");
	refused(DEPS "clients = (\n { name = \"x\"; uid = 1;\n region = "
	             "\"mars\"; } );",
	        5, "no deployment is in region 'mars'");
	refused(DEPS "clients = (\n { name = \"x\"; uid = 1;\n priority = "
	             "\"urgent\"; } );",
	        5,
	        "priority: unknown value \"urgent\" (expected low, normal "
	        "or high)");
	refused(DEPS "clients = (\n { name = \"x\"; uid = 1;\n "
	             "daily_budget_usd = -1; } );",
	        5, "daily_budget_usd: must be between 0 and 999999");
	refused("daemon = {\n tcp_require_key = true; };\n" DEPS
	        "clients = ( { name = \"x\"; uid = 1; } );",
	        2, "daemon.tcp_require_key: no client has a key_sha256");
	refused(DEPS
	        "clients = (\n { name = \"x\"; key_sha256 = [ \"a\", \"b\", "
	        "\"c\", \"d\", \"e\" ]; } );",
	        4, "too many keys (at most 4)");
}

Test(clients_cfg, key_hash_never_in_messages)
{
	char text[1024], *cause;
	const char *h = sha_hex("secret-key");
	struct cfg *c;

	/* 63 of the 64 digits: refused without quoting them */
	snprintf(
	    text, sizeof text,
	    DEPS "clients = ( { name = \"x\"; key_sha256 = \"%.63s\"; } );", h);
	char part[21];

	c = load(text, &cause);
	cr_assert_null(c);
	snprintf(part, sizeof part, "%.20s", h);
	cr_assert_null(strstr(cause, part), "%s", cause);
	free(cause);
}

Test(clients_cfg, rules_match_client_and_set_priority)
{
	load_ok(DEPS "clients = ( { name = \"ci\"; uid = 5; } );\n"
	             "routes = ( { match = { client = \"ci\"; }; priority = "
	             "\"high\"; },\n"
	             " { match = { client = \"default\"; tag = \"batch\"; }; "
	             "priority = \"low\"; } );\n");
	cr_assert_eq(cfg->nrule, 2);
	cr_assert_str_eq(cfg->rules[0].client, "ci");
	cr_assert_eq(cfg->rules[0].priority, PRIO_HIGH);
	cr_assert_eq(cfg->rules[1].priority, PRIO_LOW);
	cfg_free(cfg);
	cfg = NULL;
	refused(DEPS "routes = (\n { match = { client = \"ci\"; }; group = "
	             "\"g\"; } );",
	        4, "routes[0].match.client: no client named 'ci'");
	refused(DEPS "routes = (\n { match = { tag = \"x\"; }; priority = "
	             "\"top\"; } );",
	        4, "priority: unknown value \"top\"");
}

Test(clients_cfg, cache_write_price)
{
	load_ok(DEPS "prices = ( { model = \"gpt-4o\"; input_per_mtok = 3; "
	             "output_per_mtok = 15; cached_input_per_mtok = 0.3; "
	             "cache_write_per_mtok = 3.75; },\n"
	             " { model = \"m2\"; input_per_mtok = 1; output_per_mtok = "
	             "2; } );\n");
	cr_assert_float_eq(cfg->prices[0].cache_write_per_mtok, 3.75, 1e-9);
	cr_assert_float_eq(cfg->prices[1].cache_write_per_mtok, 1, 1e-9);
	cr_assert_float_eq(cfg->prices[1].cached_input_per_mtok, 1, 1e-9);
}

/* ---- identity ---- */

/* A config with a uid client, a gid client and two key clients. */
static void
ident_cfg(const char *daemon)
{
	char text[2048], k1[65];

	snprintf(k1, sizeof k1, "%s", sha_hex("key-one"));
	snprintf(text, sizeof text,
	         "daemon = { %s };\n" DEPS
	         "clients = ( { name = \"u\"; uid = 1001; },\n"
	         " { name = \"grp\"; gid = 2002; },\n"
	         " { name = \"k1\"; key_sha256 = \"%s\"; },\n"
	         " { name = \"k2\"; key_sha256 = [ \"%s\" ]; } );\n",
	         daemon, k1, sha_hex("key-two"));
	load_ok(text);
}

Test(ident, keys_name_clients_on_any_listener)
{
	struct peer unix_p = {.local = 1, .cred = 1, .uid = 1001, .gid = 50};
	struct ident_err e;

	ident_cfg("");
	cr_assert_eq(ident_client(cfg, NULL, "Bearer key-one", NULL, &e), 2);
	cr_assert_eq(ident_client(cfg, NULL, "bearer  key-two ", NULL, &e), 3);
	cr_assert_eq(ident_client(cfg, NULL, NULL, "key-two", &e), 3);
	/* a key beats the uid on the Unix socket */
	cr_assert_eq(ident_client(cfg, &unix_p, "Bearer key-one", NULL, &e), 2);
	/* an unknown key on the socket is ignored: the uid names it */
	cr_assert_eq(
	    ident_client(cfg, &unix_p, "Bearer sk-placeholder", NULL, &e), 0);
	/* TCP without a required key: the default client */
	cr_assert_eq(ident_client(cfg, NULL, "Bearer wrong", NULL, &e),
	             cfg->def_client);
	cr_assert_eq(ident_client(cfg, NULL, NULL, NULL, &e), cfg->def_client);
	cr_assert_eq(ident_key(cfg, "key-one", 7), 2);
	cr_assert_eq(ident_key(cfg, "key-on", 6), -1);
}

Test(ident, unix_uid_then_groups)
{
	struct peer p = {.local = 1, .cred = 1, .uid = 5, .gid = 2002};
	struct ident_err e;

	ident_cfg("");
	cr_assert_eq(ident_client(cfg, &p, NULL, NULL, &e), 1);
	p.gid = 7;
	p.ngroups = 2;
	p.groups[0] = 9;
	p.groups[1] = 2002;
	cr_assert_eq(ident_client(cfg, &p, NULL, NULL, &e), 1);
	p.uid = 1001;
	cr_assert_eq(ident_client(cfg, &p, NULL, NULL, &e), 0);
	p.uid = 3;
	p.ngroups = 0;
	cr_assert_eq(ident_client(cfg, &p, NULL, NULL, &e), cfg->def_client);
}

Test(ident, required_key_and_deny)
{
	struct peer p = {.local = 1, .cred = 1, .uid = 3, .gid = 3};
	struct ident_err e;

	ident_cfg("tcp_require_key = true;");
	cr_assert_eq(ident_client(cfg, NULL, "Bearer wrong", NULL, &e), -1);
	cr_assert_eq(e.status, 401);
	cr_assert_str_eq(e.code, "invalid_api_key");
	cr_assert_str_eq(e.msg, "invalid API key");
	cr_assert_eq(ident_client(cfg, NULL, NULL, NULL, &e), -1);
	cr_assert_eq(e.status, 401);
	cr_assert(strstr(e.msg, "an API key is required") != NULL);
	cr_assert_eq(ident_client(cfg, NULL, NULL, "key-one", &e), 2);
	/* the Unix socket needs no key */
	cr_assert_eq(ident_client(cfg, &p, NULL, NULL, &e), cfg->def_client);
	cfg_free(cfg);
	ident_cfg("default_client = \"deny\";");
	cr_assert_eq(ident_client(cfg, &p, "Bearer nope", NULL, &e), -1);
	cr_assert_eq(e.status, 403);
	cr_assert_str_eq(e.msg, "uid 3 is not a configured client of this "
	                        "llmfd");
	cr_assert_eq(ident_client(cfg, NULL, NULL, NULL, &e), -1);
	cr_assert_eq(e.status, 401);
	p.uid = 1001;
	cr_assert_eq(ident_client(cfg, &p, NULL, NULL, &e), 0);
}

Test(ident, peer_of_a_unix_socket)
{
	int sv[2];
	struct peer p;

	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	ident_peer(sv[0], &p);
	cr_assert(p.local && p.cred);
	cr_assert_eq(p.uid, (uint32_t)getuid());
	cr_assert_eq(p.gid, (uint32_t)getgid());
	cr_assert_eq(p.pid, (int32_t)getpid());
	cr_assert(p.comm[0] != '\0');
	close(sv[0]);
	close(sv[1]);
	ident_peer(-1, &p);
	cr_assert(!p.local && !p.cred);
}

Test(ident, key_of_headers)
{
	size_t n = 0;
	const char *k;

	cr_assert_null(ident_key_of(NULL, NULL, &n));
	cr_assert_null(ident_key_of("Basic abc", NULL, &n));
	cr_assert_null(ident_key_of("Bearer   ", NULL, &n));
	k = ident_key_of("Bearer abc ", "other", &n);
	cr_assert(n == 3 && strncmp(k, "abc", 3) == 0);
	k = ident_key_of("Basic x", " xyz", &n);
	cr_assert(n == 3 && strncmp(k, "xyz", 3) == 0);
}

/* ---- spend ---- */

Test(spend, cost_of_an_answer)
{
	struct price_cfg p = {.input_per_mtok = 2.5,
	                      .output_per_mtok = 10,
	                      .cached_input_per_mtok = 1.25,
	                      .cache_write_per_mtok = 3.125};

	/* 1000 in, 500 out: 0.0025 + 0.005 */
	cr_assert_eq(spend_cost_nusd(&p, 1000, 0, 0, 500), 7500000);
	/* 400 of the 1000 cached: 600 * 2.5 + 400 * 1.25 + 500 * 10 */
	cr_assert_eq(spend_cost_nusd(&p, 1000, 400, 0, 500), 7000000);
	/* 100 written to the cache, 50 read: 850 * 2.5 + 50 * 1.25 +
	 * 100 * 3.125 */
	cr_assert_eq(spend_cost_nusd(&p, 1000, 50, 100, 0), 2500000);
	/* nonsense counts are clamped, never negative */
	cr_assert_eq(spend_cost_nusd(&p, 10, 50, 0, 0), 12500);
	cr_assert_eq(spend_cost_nusd(&p, -5, -1, -1, -1), 0);
}

Test(spend, days_months_and_dollars)
{
	char s[64];
	uint32_t d;
	int64_t t = (int64_t)1709164800 * 1000 + 3600000; /* 2024-02-29 01:00 */

	spend_fmt_day(s, sizeof s, spend_day(t));
	cr_assert_str_eq(s, "2024-02-29");
	cr_assert_eq(spend_day_end_ms(t), (int64_t)1709251200 * 1000);
	cr_assert_eq(spend_month_end_ms(t), (int64_t)1709251200 * 1000);
	cr_assert_eq(spend_month(t), 2024 * 12 + 1);
	spend_fmt_time(s, sizeof s, spend_month_end_ms(t));
	cr_assert_str_eq(s, "2024-03-01T00:00:00Z");
	t = (int64_t)1735603200 * 1000; /* 2024-12-31 */
	spend_fmt_time(s, sizeof s, spend_month_end_ms(t));
	cr_assert_str_eq(s, "2025-01-01T00:00:00Z");
	cr_assert_eq(spend_parse_day("2024-02-29", &d), 0);
	cr_assert_eq(d, spend_day((int64_t)1709164800 * 1000));
	cr_assert_eq(spend_parse_day("2023-02-29", &d), -1);
	cr_assert_eq(spend_parse_day("2024-2-3", &d), -1);
	cr_assert_eq(spend_parse_day("yesterday", &d), -1);
	spend_fmt_usd(s, sizeof s, 7500000);
	cr_assert_str_eq(s, "0.0075");
	spend_fmt_usd(s, sizeof s, 5000000000ULL);
	cr_assert_str_eq(s, "5.00");
	spend_fmt_usd(s, sizeof s, 1);
	cr_assert_str_eq(s, "0.000000001");
	spend_fmt_usd(s, sizeof s, 0);
	cr_assert_str_eq(s, "0.00");
}

/* A row. */
static struct spend_row
row(uint32_t day, const char *c, const char *d, const char *m, uint64_t nusd)
{
	struct spend_row r;

	memset(&r, 0, sizeof r);
	r.day = day;
	snprintf(r.client, sizeof r.client, "%s", c);
	snprintf(r.deployment, sizeof r.deployment, "%s", d);
	snprintf(r.model, sizeof r.model, "%s", m);
	r.v.nusd = nusd;
	r.v.requests = 1;
	r.v.tokens_in = 10;
	r.v.tokens_out = 5;
	return r;
}

Test(spend, set_sums_merges_and_groups)
{
	struct spend_set s = {0}, t = {0}, all = {0}, g = {0};
	struct spend_row r;

	for (int i = 0; i < 1000; i++) {
		char name[16];

		snprintf(name, sizeof name, "c%d", i % 100);
		r = row(20000 + (uint32_t)(i % 3), name, "d", "m", 1);
		spend_set_add(&s, &r);
	}
	cr_assert_eq(s.n, 300);
	r = row(20000, "c1", "d", "m", 0);
	cr_assert_eq(s.v[spend_set_find(&s, &r)].v.nusd, 3); /* 201 501 801 */
	cr_assert_eq(s.v[spend_set_find(&s, &r)].v.requests, 3);
	/* the table's value of a key wins over the file's */
	r = row(20000, "c1", "d", "m", 100);
	spend_set_add(&t, &r);
	spend_merge(&t, &s, &all);
	cr_assert_eq(all.n, 300);
	cr_assert_eq(all.v[spend_set_find(&all, &r)].v.nusd, 100);
	spend_group(&all, SPEND_BY_CLIENT, 20001, &g);
	cr_assert_eq(g.n, 100);
	cr_assert_str_eq(g.v[0].client, "c1"); /* most spent, then by name */
	cr_assert_eq(g.v[0].v.nusd, 7);
	r = row(0, "c5", "", "", 0);
	cr_assert_geq(spend_set_find(&g, &r), 0);
	spend_set_free(&g);
	spend_group(&all, SPEND_BY_MODEL, 0, &g);
	cr_assert_eq(g.n, 1);
	cr_assert_eq(g.v[0].v.nusd, 1000 - 3 + 100);
	spend_set_free(&s);
	spend_set_free(&t);
	spend_set_free(&all);
	spend_set_free(&g);
}

/* The text of file path. */
static char *
slurp(const char *path)
{
	static char buf[65536];
	FILE *f = fopen(path, "r");
	size_t n;

	cr_assert_not_null(f, "%s", path);
	n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	return buf;
}

Test(spend, file_round_trip_and_history_kept)
{
	struct spend_set s = {0}, back = {0};
	struct spend_row r;
	char path[PATH_MAX], *cause = NULL;

	snprintf(path, sizeof path, "%s/spend", tdir);
	r = row(20000, "ci", "d1", "gpt-4o", 7500000);
	r.v.cached_in = 400;
	spend_set_add(&s, &r);
	r = row(20001, "nb", "d2", "odd\tmodel\\with\nbreaks", 1);
	spend_set_add(&s, &r);
	r = row(19000, "old", "d1", "m", 5);
	spend_set_add(&s, &r);
	cr_assert_eq(spend_save(path, &s, 19500), 0);
	{
		char tmp[PATH_MAX + 8];

		snprintf(tmp, sizeof tmp, "%s.tmp", path);
		cr_assert_eq(access(tmp, F_OK), -1); /* renamed into place */
	}
	cr_assert_eq(spend_load(path, &back, &cause), 0, "%s", cause);
	cr_assert_eq(back.n, 2); /* the old row is past the history */
	r = row(20000, "ci", "d1", "gpt-4o", 0);
	cr_assert_eq(back.v[spend_set_find(&back, &r)].v.nusd, 7500000);
	cr_assert_eq(back.v[spend_set_find(&back, &r)].v.cached_in, 400);
	r = row(20001, "nb", "d2", "odd\tmodel\\with\nbreaks", 0);
	cr_assert_geq(spend_set_find(&back, &r), 0);
	cr_assert_not_null(strstr(slurp(path), "odd\\tmodel\\\\with\\nbreaks"));
	spend_set_free(&s);
	spend_set_free(&back);
	/* a missing file reads as empty */
	snprintf(path, sizeof path, "%s/none", tdir);
	cr_assert_eq(spend_load(path, &back, &cause), 0);
	cr_assert_eq(back.n, 0);
}

/* Write text to tdir/bad and expect spend_load to refuse it at line with
 * reason. */
static void
bad_file(const char *text, int line, const char *reason)
{
	char path[PATH_MAX], want[PATH_MAX + 64], *cause = NULL;
	struct spend_set s = {0};
	FILE *f;

	snprintf(path, sizeof path, "%s/bad", tdir);
	cr_assert_not_null(f = fopen(path, "w"));
	fputs(text, f);
	fclose(f);
	cr_assert_eq(spend_load(path, &s, &cause), -1, "%s", text);
	snprintf(want, sizeof want, "%s:%d: %s", path, line, reason);
	cr_assert_str_eq(cause, want);
	free(cause);
	spend_set_free(&s);
}

Test(spend, damaged_files_refused)
{
	bad_file("", 1, "truncated");
	bad_file("# something else\n", 1,
	         "not an llmfd spend file (bad first line)");
	bad_file("# llmfd spend 1\n2024-01-01\ta\tb\tm\t1\t1\t1\t1\t0\n", 3,
	         "truncated (no end line)");
	bad_file("# llmfd spend 1\n2024-01-01\ta\tb\tm\t1\t1\t1\t1\t0\n# end "
	         "2\n",
	         3, "the end line's row count differs (file damaged)");
	bad_file("# llmfd spend 1\n2024-01-01\ta\tb\tm\tx\t1\t1\t1\t0\n# end "
	         "1\n",
	         2, "bad number");
	bad_file("# llmfd spend 1\n2024-13-01\ta\tb\tm\t1\t1\t1\t1\t0\n# end "
	         "1\n",
	         2, "bad day (expected YYYY-MM-DD)");
	bad_file("# llmfd spend 1\n2024-01-01\ta\tb\n# end 1\n", 2,
	         "expected 9 tab-separated fields");
	bad_file("# llmfd spend 1\n# end 0\nmore\n", 2,
	         "text after the end line");
}

Test(spend, save_into_a_missing_directory_fails_cleanly)
{
	struct spend_set s = {0};
	char path[PATH_MAX];

	snprintf(path, sizeof path, "%s/no/such/spend", tdir);
	cr_assert_eq(spend_save(path, &s, 0), -1);
}

/* ---- the ledger and limits, on a real table ---- */

/* Load text, create the table, fill the slots and client records as the
 * master does, and set up the worker. */
static void
start(const char *text)
{
	char *cause = NULL, path[PATH_MAX];

	load_ok(text);
	snprintf(path, sizeof path, "%s/health", tdir);
	cr_assert_eq(shm_create(&shm, path, &cause), 0, "%s", cause);
	for (int i = 0; i < cfg->ndeploy; i++) {
		snprintf(shm.slots[i].name, sizeof shm.slots[i].name, "%s",
		         cfg->deploy[i].name);
		atomic_store(&shm.slots[i].state, SLOT_ACTIVE);
		slot_of[i] = i;
	}
	for (int i = 0; i < cfg->nclient; i++) {
		snprintf(shm.clients[i].name, sizeof shm.clients[i].name, "%s",
		         cfg->clients[i].name);
		atomic_store(&shm.clients[i].state, SLOT_ACTIVE);
	}
	w.cfg = cfg;
	w.shm = &shm;
	w.slot_of = slot_of;
	w.index = 1;
	cr_assert_eq(limits_init(&w), 0);
}

Test(limits, ledger_sums_keys_and_reports_full)
{
	struct spend_set s = {0};
	struct spend_vals v = {.nusd = 5, .requests = 1};
	char name[32];
	int full = 0;

	start(DEPS);
	cr_assert_eq(shm_spend_add(&shm, 1, "c", "a", "m", &v), 0);
	cr_assert_eq(shm_spend_add(&shm, 1, "c", "a", "m", &v), 0);
	cr_assert_eq(shm_spend_add(&shm, 2, "c", "a", "m", &v), 0);
	spend_from_table(&shm, &s);
	cr_assert_eq(s.n, 2);
	cr_assert_eq(s.v[0].v.nusd + s.v[1].v.nusd, 15);
	spend_set_free(&s);
	for (int i = 0; i < SHM_NSPEND + 10; i++) {
		snprintf(name, sizeof name, "m%d", i);
		full += shm_spend_add(&shm, 3, "c", "a", name, &v) == -1;
	}
	cr_assert_gt(full, 0);
	cr_assert_eq(atomic_load(&shm.hdr->ledger_full), (uint64_t)full);
}

Test(limits, rpm_and_concurrency)
{
	struct limit_verdict v;

	start(DEPS "clients = ( { name = \"c\"; uid = 1; rpm = 3; "
	           "max_concurrent = 2; } );\n");
	cr_assert_eq(limits_admit(&w, 0, &v), 0);
	cr_assert_eq(limits_admit(&w, 0, &v), 0);
	cr_assert_eq(limits_admit(&w, 0, &v), -1);
	cr_assert_eq(v.status, 429);
	cr_assert_str_eq(v.code, "concurrency_limit");
	cr_assert_eq(v.retry_after_s, 1);
	cr_assert_eq(v.reason, CREF_CONCURRENT);
	limits_release(&w, 0);
	cr_assert_eq(limits_admit(&w, 0, &v), 0); /* the 3rd of the minute */
	limits_release(&w, 0);
	cr_assert_eq(limits_admit(&w, 0, &v), -1);
	cr_assert_str_eq(v.code, "client_rate_limited");
	cr_assert(strstr(v.msg, "made its 3 requests this minute") != NULL);
	cr_assert(v.retry_after_s >= 1 && v.retry_after_s <= 60);
	cr_assert_eq(shm_client_inflight(&shm.clients[0]), 1);
	cr_assert_eq(atomic_load(&shm.clients[0].refused[CREF_RPM]), 1);
	cr_assert_eq(atomic_load(&shm.clients[0].refused[CREF_CONCURRENT]), 1);
	cr_assert_eq(atomic_load(&shm.clients[0].requests), 3);
	/* the implicit default has no limits */
	for (int i = 0; i < 50; i++)
		cr_assert_eq(limits_admit(&w, cfg->def_client, &v), 0);
}

Test(limits, tpm_counts_answers)
{
	struct limit_verdict v;
	struct usage u = {.prompt_tokens = 60, .completion_tokens = 40};

	start(DEPS "clients = ( { name = \"c\"; uid = 1; tpm = 150; } );\n");
	cr_assert_eq(limits_admit(&w, 0, &v), 0);
	limits_spend(&w, 0, 0, "gpt-4o", &u, 0);
	cr_assert_eq(limits_admit(&w, 0, &v), 0);
	limits_spend(&w, 0, 0, "gpt-4o", &u, 0);
	cr_assert_eq(limits_admit(&w, 0, &v), -1);
	cr_assert_eq(v.reason, CREF_TPM);
	cr_assert_eq(atomic_load(&shm.clients[0].tokens_in), 120);
}

Test(limits, budget_spent_until_the_reset)
{
	struct limit_verdict v;
	struct usage u = {.prompt_tokens = 1000, .completion_tokens = 500};
	int64_t wall = clock_wall_ms(), left;
	char reset[32], want[160];
	uint64_t head;

	start(DEPS "clients = ( { name = \"nb\"; uid = 1; "
	           "daily_budget_usd = 0.02; } );\n");
	head = atomic_load(&shm.hdr->ev_head);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(limits_admit(&w, 0, &v), 0, "%d", i);
		limits_spend(&w, 0, 0, "gpt-4o", &u, 7500000);
		limits_release(&w, 0);
	}
	cr_assert_eq(limits_admit(&w, 0, &v), -1);
	cr_assert_eq(v.status, 429);
	cr_assert_str_eq(v.code, "budget_exceeded");
	spend_fmt_time(reset, sizeof reset, spend_day_end_ms(wall));
	snprintf(want, sizeof want,
	         "the daily budget of $0.02 for client 'nb' is spent "
	         "($0.0225); it resets at %s",
	         reset);
	cr_assert_str_eq(v.msg, want);
	left = (spend_day_end_ms(wall) - wall) / 1000;
	cr_assert(v.retry_after_s >= left - 2 && v.retry_after_s <= left + 2,
	          "%lld vs %lld", (long long)v.retry_after_s, (long long)left);
	/* the crossing is an event naming the client and the amount */
	cr_assert_eq(atomic_load(&shm.hdr->ev_head), head + 1);
	cr_assert_eq(shm.events[head % SHM_NEVENTS].type, SHM_EV_BUDGET);
	cr_assert_str_eq(shm.events[head % SHM_NEVENTS].client, "nb");
	cr_assert_eq(shm.events[head % SHM_NEVENTS].nusd, 22500000);
	/* spend landed in the client, the deployment and the ledger */
	cr_assert_eq(atomic_load(&shm.clients[0].spend_nusd), 22500000);
	cr_assert_eq(atomic_load(&shm.slots[0].spend_nusd), 22500000);
	cr_assert_eq(atomic_load(&shm.hdr->spend_seq), 3);
}

Test(limits, monthly_budget_checked_first)
{
	struct limit_verdict v;
	struct usage u = {.prompt_tokens = 1};

	start(DEPS "clients = ( { name = \"nb\"; uid = 1; daily_budget_usd = "
	           "1; monthly_budget_usd = 1; } );\n");
	limits_spend(&w, 0, 0, "m", &u, 1000000000);
	cr_assert_eq(limits_admit(&w, 0, &v), -1);
	cr_assert(strstr(v.msg, "the monthly budget of $1.00") != NULL, "%s",
	          v.msg);
}

Test(limits, waiting_by_class)
{
	start(DEPS);
	cr_assert(!limits_higher_waiting(&w, PRIO_NORMAL));
	limits_wait(&w, PRIO_HIGH, 1);
	cr_assert(limits_higher_waiting(&w, PRIO_NORMAL));
	cr_assert(limits_higher_waiting(&w, PRIO_LOW));
	cr_assert(!limits_higher_waiting(&w, PRIO_HIGH));
	cr_assert_eq(shm_waiting(&shm, PRIO_HIGH), 1);
	limits_wait(&w, PRIO_HIGH, -1);
	cr_assert(!limits_higher_waiting(&w, PRIO_LOW));
}

Test(limits, metrics_by_client_and_deployment)
{
	struct limit_verdict v;
	struct usage u = {.prompt_tokens = 1000, .completion_tokens = 500};
	struct buf b = {0};
	const char *t;

	start(DEPS "clients = ( { name = \"nb\"; uid = 1; daily_budget_usd = "
	           "2; rpm = 1; } );\n");
	shm_write_client_begin(&shm.clients[0]);
	shm.clients[0].daily_nusd = 2000000000;
	shm_write_client_end(&shm.clients[0]);
	cr_assert_eq(limits_admit(&w, 0, &v), 0);
	limits_spend(&w, 0, 0, "gpt-4o", &u, 7500000);
	cr_assert_eq(limits_admit(&w, 0, &v), -1);
	limits_wait(&w, PRIO_HIGH, 1);
	metrics_render_shm(&shm, clock_ms(), clock_wall_ms(), &b);
	t = buf_cstr(&b);
	cr_assert_not_null(strstr(t,
	                          "llmfd_client_requests_total{client=\"nb\"} "
	                          "1\n"));
	cr_assert_not_null(strstr(t, "llmfd_client_refused_total{client=\"nb\","
	                             "reason=\"rpm\"} 1\n"));
	cr_assert_not_null(strstr(t, "llmfd_client_spend_usd_total{client="
	                             "\"nb\"} 0.0075\n"));
	cr_assert_not_null(strstr(t, "llmfd_client_spend_today_usd{client="
	                             "\"nb\"} 0.0075\n"));
	cr_assert_not_null(strstr(t, "llmfd_client_budget_usd{client=\"nb\","
	                             "period=\"daily\"} 2.00\n"));
	cr_assert_not_null(
	    strstr(t, "llmfd_client_inflight{client=\"nb\"} 1\n"));
	cr_assert_not_null(strstr(t, "llmfd_deployment_spend_usd_total{"
	                             "deployment=\"a\""));
	cr_assert_not_null(strstr(t, "} 0.0075\n"));
	cr_assert_not_null(
	    strstr(t, "llmfd_queue_waiting{priority=\"high\"} 1\n"));
	cr_assert_not_null(
	    strstr(t, "# TYPE llmfd_unidentified_total counter"));
	buf_free(&b);
}

/* ---- the policy: allowed groups, region, priority ---- */

Test(limits, policy_allowed_groups_region_and_priority)
{
	static struct policy p;
	const struct group_cfg *groups[ROUTE_MAX_GROUPS];
	struct policy_err e;
	struct json j = {0};
	const char *body = "{\"model\":\"g\",\"fallbacks\":[\"h\"],"
	                   "\"metadata\":{\"tag\":\"batch\"}}";
	struct policy_in in = {.body = &j, .doc = &j, .model = "g"};
	int n;

	load_ok(DEPS "clients = ( { name = \"ci\"; uid = 1; groups = [ \"g\" "
	             "]; }, { name = \"eu\"; uid = 2; region = \"eu\"; } );\n"
	             "routes = ( { match = { client = \"ci\"; tag = \"batch\"; "
	             "}; priority = \"low\"; } );\n");
	cr_assert_eq(json_parse(&j, body, strlen(body)), 0);
	/* ci may use g, not h: the fallback to h is left out */
	in.client = "ci";
	in.allow = &cfg->clients[0];
	cr_assert_eq(policy_resolve(&p, cfg, &in, groups, &n, &e), 0);
	cr_assert_eq(n, 1);
	cr_assert_str_eq(groups[0]->name, "g");
	cr_assert_eq(p.priority, PRIO_LOW);
	/* h itself: 403 */
	in.model = "h";
	cr_assert_eq(policy_resolve(&p, cfg, &in, groups, &n, &e), -1);
	cr_assert_eq(e.status, 403);
	cr_assert_str_eq(e.type, "permission_error");
	cr_assert_str_eq(e.code, "model_not_allowed");
	cr_assert_str_eq(e.msg, "client 'ci' may not use model 'h'");
	/* another client: no rule, its region keeps only h */
	in.model = "g";
	in.client = "eu";
	in.allow = &cfg->clients[1];
	in.client_region = "eu";
	cr_assert_eq(policy_resolve(&p, cfg, &in, groups, &n, &e), 0);
	cr_assert_eq(n, 1);
	cr_assert_str_eq(groups[0]->name, "h");
	cr_assert_eq(p.priority, -1);
	json_free(&j);
}
