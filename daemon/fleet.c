/*
 * The fleet syncer: the master's one Redis connection (hiredis, async, on
 * the master's event_base). Workers never talk to Redis; they read the
 * table as on one host, so nothing on the request path waits for the
 * network. Every FLEET_POLL_MS the syncer publishes what changed in the
 * local table (a cooldown started or extended, a circuit opened or
 * closed, the half-open probe wanted); every sync_ms it also tops up this
 * host's rate grants, pulls the fleet's cooldowns, circuits and admin
 * state, merges them into the table, and writes its heartbeat. A command
 * unanswered for FLEET_TIMEOUT_MS drops the connection: the host goes on
 * with its local view (workers then enforce a fair share of each rate
 * limit and probe circuits themselves) and reconnects with backoff.
 *
 * Keys (PREFIX is fleet.key_prefix, NAME a deployment), all with expiry:
 *   PREFIXcool:NAME      "UNTIL_WALL_MS HOST"             max-merged
 *   PREFIXcirc:NAME      "STAMP STATE UNTIL_WALL WINDOW HOST"  newest wins
 *   PREFIXadmin:NAME     "STAMP ADMIN HOST"                newest wins
 *   PREFIXweight:NAME    "STAMP WEIGHT HOST" (-1: config)  newest wins
 *   PREFIXprobe:NAME     HOST: the fleet's half-open probe token
 *   PREFIXrpm:NAME:MIN   requests granted in wall-clock minute MIN
 *   PREFIXtpm:NAME:MIN   tokens granted in minute MIN
 *   PREFIXhosts          sorted set: host -> last heartbeat (wall ms)
 *   PREFIXepoch          random id; a new one means Redis lost its data
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "common/backoff.h"
#include "common/clock.h"
#include "common/fleet.h"
#include "common/log.h"
#include "common/secret.h"
#include "daemon/daemon.h"

#define FLEET_POLL_MS       10
#define FLEET_TIMEOUT_MIN   1000 /* or 5 sync periods, the longer */
#define FLEET_BACKOFF_MIN   100
#define FLEET_BACKOFF_MAX   5000
#define FLEET_LOG_EVERY_MS  10000
#define FLEET_COUNTER_TTL   120000 /* a minute's counter: it and the next */
#define FLEET_STATE_TTL     30000  /* circuit and admin keys past their use */
#define FLEET_JITTER_MS     5      /* clock conversion slack */
#define FLEET_HOST_TTL_MIN  3000   /* or 20 sync periods */
#define FLEET_PROBE_TTL_MIN 2000   /* or 10 sync periods */
#define FLEET_KEY_MAX       256

/* What a reply is for. */
enum fleet_kind {
	OP_AUTH,
	OP_EPOCH,
	OP_PUBLISH, /* a set-if-newer or a release: the reply is not needed */
	OP_PROBE,
	OP_RESERVE,
	OP_PULL,
	OP_HOSTS, /* the last reply of a sync round */
};

/* One command in flight (heap; its callback frees it). */
struct fleet_op {
	int kind;
	int slot;        /* OP_PROBE, OP_RESERVE */
	int ctr;         /* OP_RESERVE: 0 requests, 1 tokens */
	uint64_t minute; /* OP_RESERVE */
	char name[SHM_FLEET_ID];
	int n;      /* OP_PULL: slots */
	int *slots; /* OP_PULL (heap) */
};

/* A minute's grants, for one parity of the minute number. */
struct fleet_acct {
	uint64_t minute;
	uint64_t granted[2]; /* requests, tokens granted within the limit */
	uint64_t forced[2];  /* used beyond the grants, counted afterwards */
	uint64_t want[2];    /* the last ask */
	uint64_t fleet[2];   /* fleet-wide count at the last reply */
};

/* What the syncer remembers of one table slot. */
struct fleet_slot {
	char name[SHM_FLEET_ID]; /* "" until first seen */
	int64_t cool_known;      /* mono deadline published or applied */
	uint32_t circ;           /* circuit as last seen */
	uint32_t opens;          /* circuit_opens as last seen */
	int64_t circ_stamp;      /* wall stamp of the newest change known */
	int probe_held, probe_asking;
	int64_t probe_ms;    /* last grant or renewal (mono) */
	int64_t probe_since; /* first grant (mono) */
	int64_t probe_pause; /* no asking before (mono) */
	int64_t admin_stamp, weight_stamp;
	struct fleet_acct acct[2];
	uint64_t last_used[2], last_refused;
	double rate[2]; /* use per sync period */
	int resync;     /* publish current state afresh */
};

static struct {
	struct event_base *base;
	struct shm *shm;
	const struct cfg *cfg;
	struct event *ev_poll, *ev_sync, *ev_retry;
	redisAsyncContext *ac;
	int up;    /* AUTH and epoch answered */
	int round; /* a sync round is in flight */
	int64_t round_us;
	int outstanding;     /* commands awaiting a reply */
	int64_t progress_ms; /* last reply, or when the wait began */
	int fails;           /* connection failures in a row */
	int64_t warned_ms;   /* last warning logged */
	uint64_t unlogged;   /* failures since */
	uint64_t ev_seen;
	char self[SHM_FLEET_ID];
	char epoch[40];
	char want_epoch[40];
	uint64_t rng;
	struct fleet_slot slot[SHM_NSLOTS];
} F;

/* Set-if-newer: the first number of the stored value must be smaller. */
static const char lua_setmax[] =
    "local c = redis.call('GET', KEYS[1]) "
    "if c then local v = tonumber(string.match(c, '^(%-?%d+)')) "
    "if v and v >= tonumber(ARGV[1]) then return 0 end end "
    "redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1";
/* Take or renew the probe token: 1 if this host holds it. */
static const char lua_probe[] =
    "local v = redis.call('GET', KEYS[1]) "
    "if not v then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) "
    "return 1 end "
    "if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) "
    "return 1 end return 0";
/* Give the probe token back if this host holds it. */
static const char lua_unprobe[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then "
    "return redis.call('DEL', KEYS[1]) end return 0";
/* Count force units, then grant at most want within the limit:
 * {granted, fleet-wide count}. */
static const char lua_reserve[] =
    "local used = tonumber(redis.call('GET', KEYS[1]) or '0') or 0 "
    "local force, want = tonumber(ARGV[1]), tonumber(ARGV[2]) "
    "if force > 0 then used = redis.call('INCRBY', KEYS[1], force) end "
    "local room = tonumber(ARGV[3]) - used "
    "if want > room then want = room end "
    "if want < 0 then want = 0 end "
    "if want > 0 then used = redis.call('INCRBY', KEYS[1], want) end "
    "if force > 0 or want > 0 then "
    "redis.call('PEXPIRE', KEYS[1], ARGV[4]) end "
    "return {want, used}";
/* The fleet's epoch, created if missing. */
static const char lua_epoch[] = "redis.call('SET', KEYS[1], ARGV[1], 'NX') "
                                "redis.call('PEXPIRE', KEYS[1], ARGV[2]) "
                                "return redis.call('GET', KEYS[1])";

static void fleet_connect(void);
static void fleet_down(const char *why);

/* Sync period in ms. */
static int64_t
fleet_sync_ms(void)
{
	return F.cfg->fleet_sync_ms;
}

/* How long a command may stay unanswered. */
static int64_t
fleet_timeout_ms(void)
{
	int64_t t = 5 * fleet_sync_ms();

	return t > FLEET_TIMEOUT_MIN ? t : FLEET_TIMEOUT_MIN;
}

/* How long a heartbeat keeps a host listed. */
static int64_t
fleet_host_ttl(void)
{
	int64_t t = 20 * fleet_sync_ms();

	return t > FLEET_HOST_TTL_MIN ? t : FLEET_HOST_TTL_MIN;
}

/* How long the probe token lasts unrenewed. */
static int64_t
fleet_probe_ttl(void)
{
	int64_t t = 10 * fleet_sync_ms();

	return t > FLEET_PROBE_TTL_MIN ? t : FLEET_PROBE_TTL_MIN;
}

/* The key PREFIX+kind+name into out. */
static const char *
fleet_key(char *out, const char *kind, const char *name)
{
	snprintf(out, FLEET_KEY_MAX, "%s%s%s", F.cfg->fleet_key_prefix, kind,
	         name);
	return out;
}

/* Log a failure: the first after a success at once, then at most one line
 * per FLEET_LOG_EVERY_MS with the count in between. */
static void fleet_warn(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static void
fleet_warn(const char *fmt, ...)
{
	char msg[400];
	int64_t now = clock_ms();
	va_list ap;

	atomic_fetch_add(&F.shm->hdr->fleet_failures, 1);
	if (F.warned_ms && now - F.warned_ms < FLEET_LOG_EVERY_MS) {
		F.unlogged++;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	secret_redact(msg);
	if (F.unlogged)
		log_warnx("fleet: %s (%llu more failures since the last "
		          "message)",
		          msg, (unsigned long long)F.unlogged);
	else
		log_warnx("fleet: %s", msg);
	F.warned_ms = now;
	F.unlogged = 0;
}

/* An event in the table's ring (the master's own, never republished). */
static void fleet_event(int slot, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
fleet_event(int slot, const char *fmt, ...)
{
	char text[240];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	shm_event_add(F.shm, SHM_EV_FLEET, slot, text);
}

static void fleet_reply(redisAsyncContext *, void *, void *);

/* A new op for slot k (-1: none), or NULL when memory is short. */
static struct fleet_op *
fleet_op(int kind, int k)
{
	struct fleet_op *op = calloc(1, sizeof *op);

	if (op == NULL)
		return NULL;
	op->kind = kind;
	op->slot = k;
	if (k >= 0)
		memcpy(op->name, F.slot[k].name, sizeof op->name);
	return op;
}

/* Free an op. */
static void
fleet_op_free(struct fleet_op *op)
{
	free(op->slots);
	free(op);
}

/* Queue one command; the op is freed and -1 returned if it cannot be. */
static int
fleet_sendv(struct fleet_op *op, int argc, const char **argv, const size_t *len)
{
	if (op == NULL)
		return -1;
	if (F.ac == NULL || redisAsyncCommandArgv(F.ac, fleet_reply, op, argc,
	                                          argv, len) != REDIS_OK) {
		fleet_op_free(op);
		return -1;
	}
	if (F.outstanding++ == 0)
		F.progress_ms = clock_ms();
	return 0;
}

/* Same with NUL-terminated arguments (at most 8). */
static int
fleet_send(struct fleet_op *op, int argc, const char **argv)
{
	size_t len[8];

	for (int i = 0; i < argc && i < 8; i++)
		len[i] = strlen(argv[i]);
	return fleet_sendv(op, argc, argv, len);
}

/* EVAL of a script with one key and up to four arguments. */
static int
fleet_eval(struct fleet_op *op, const char *lua, const char *key,
           const char *a1, const char *a2, const char *a3, const char *a4)
{
	const char *argv[8] = {"EVAL", lua, "1", key, a1, a2, a3, a4};
	int argc = 4;

	while (argc < 8 && argv[argc] != NULL)
		argc++;
	return fleet_send(op, argc, argv);
}

/* Publish "value" at key unless the stored value's first number is at
 * least num; the key expires after ttl_ms. */
static void
fleet_setmax(const char *key, int64_t num, const char *value, int64_t ttl_ms)
{
	char n[24], t[24];

	snprintf(n, sizeof n, "%lld", (long long)num);
	snprintf(t, sizeof t, "%lld", (long long)(ttl_ms > 1 ? ttl_ms : 1));
	fleet_eval(fleet_op(OP_PUBLISH, -1), lua_setmax, key, n, value, t,
	           NULL);
}

/* The probe gate every active slot should show now. */
static void
fleet_gates(void)
{
	for (int k = 0; k < SHM_NSLOTS; k++) {
		struct slot_sh *s = &F.shm->slots[k];
		uint32_t g = !F.up                  ? FLEET_GATE_OPEN
		             : F.slot[k].probe_held ? FLEET_GATE_MINE
		                                    : FLEET_GATE_WAIT;

		if (atomic_load(&s->fleet_gate) != g)
			atomic_store(&s->fleet_gate, g);
	}
}

/* The syncer's record of active slot k, started afresh when the slot now
 * holds another deployment; NULL for a slot that is not active. */
static struct fleet_slot *
fleet_slot(int k)
{
	struct slot_sh *s = &F.shm->slots[k];
	struct fleet_slot *fs = &F.slot[k];

	if (atomic_load(&s->state) != SLOT_ACTIVE) {
		fs->name[0] = '\0';
		return NULL;
	}
	if (strncmp(fs->name, s->name, sizeof fs->name) != 0) {
		memset(fs, 0, sizeof *fs);
		snprintf(fs->name, sizeof fs->name, "%.*s",
		         (int)sizeof s->name - 1, s->name);
		fs->opens = atomic_load(&s->circuit_opens);
		fs->circ = atomic_load(&s->circuit);
		fs->last_refused = atomic_load(&s->rate_refused);
		fs->resync = 1;
	}
	return fs;
}

/* Publish slot k's cooldown when it started or grew. */
static void
fleet_push_cool(int k, struct slot_sh *s, int64_t now, int64_t wall)
{
	struct fleet_slot *fs = &F.slot[k];
	int64_t until = atomic_load(&s->cooldown_until_ms);
	char key[FLEET_KEY_MAX], val[128];

	if (until <= now ||
	    (until <= fs->cool_known + FLEET_JITTER_MS && !fs->resync))
		return;
	fs->cool_known = until;
	snprintf(val, sizeof val, "%lld %s", (long long)(wall + until - now),
	         F.self);
	fleet_setmax(fleet_key(key, "cool:", fs->name), wall + until - now, val,
	             until - now);
}

/* Publish slot k's circuit when it opened (circuit_opens moved) or
 * closed here. */
static void
fleet_push_circ(int k, struct slot_sh *s, int64_t now, int64_t wall)
{
	struct fleet_slot *fs = &F.slot[k];
	uint32_t c = atomic_load(&s->circuit);
	uint32_t opens = atomic_load(&s->circuit_opens);
	int64_t until = atomic_load(&s->circuit_until_ms);
	int64_t win = atomic_load(&s->circuit_window_ms), stamp, left;
	int opened = opens != fs->opens || (fs->resync && c != CIRCUIT_CLOSED);
	int closed = c == CIRCUIT_CLOSED && fs->circ != CIRCUIT_CLOSED;
	char key[FLEET_KEY_MAX], val[160];

	fs->opens = opens;
	fs->circ = c;
	if (!opened && !closed)
		return;
	stamp = wall > fs->circ_stamp ? wall : fs->circ_stamp + 1;
	fs->circ_stamp = stamp;
	fleet_key(key, "circ:", fs->name);
	if (c == CIRCUIT_CLOSED) {
		snprintf(val, sizeof val, "%lld 0 0 0 %s", (long long)stamp,
		         F.self);
		fleet_setmax(key, stamp, val, FLEET_STATE_TTL);
		return;
	}
	left = until > now ? until - now : (until == 0 ? win : 0);
	snprintf(val, sizeof val, "%lld 1 %lld %lld %s", (long long)stamp,
	         (long long)(wall + left), (long long)win, F.self);
	fleet_setmax(key, stamp, val, left + FLEET_STATE_TTL);
}

/* Give the probe token of slot k back. */
static void
fleet_unprobe(int k)
{
	char key[FLEET_KEY_MAX];

	F.slot[k].probe_held = 0;
	fleet_eval(fleet_op(OP_PUBLISH, k), lua_unprobe,
	           fleet_key(key, "probe:", F.slot[k].name), F.self, NULL, NULL,
	           NULL);
}

/* How long a granted probe may wait unused for a request on this host
 * before the token is left to another host. */
static int64_t
fleet_probe_idle(void)
{
	int64_t t = 3 * fleet_sync_ms();

	return t > 300 ? t : 300;
}

/* Ask for (or renew, or give back) the fleet's probe token of slot k: a
 * host wants it from shortly before its open circuit is due until the
 * probe has reported. */
static void
fleet_push_probe(int k, struct slot_sh *s, int64_t now)
{
	struct fleet_slot *fs = &F.slot[k];
	uint32_t c = atomic_load(&s->circuit);
	int64_t until = atomic_load(&s->circuit_until_ms);
	int need = c == CIRCUIT_HALF_OPEN ||
	           (c == CIRCUIT_OPEN && until - now <= 2 * fleet_sync_ms());
	char key[FLEET_KEY_MAX], ttl[24];

	if (fs->probe_held && c == CIRCUIT_OPEN &&
	    now - until > fleet_probe_idle()) {
		fs->probe_pause = now + fleet_probe_idle(); /* unused here */
		fleet_unprobe(k);
	}
	if (!need || now < fs->probe_pause) {
		if (fs->probe_held)
			fleet_unprobe(k);
		return;
	}
	if (fs->probe_asking ||
	    now - fs->probe_ms <
	        (fs->probe_held ? fleet_probe_ttl() / 4 : fleet_sync_ms() / 2))
		return;
	snprintf(ttl, sizeof ttl, "%lld", (long long)fleet_probe_ttl());
	if (fleet_eval(fleet_op(OP_PROBE, k), lua_probe,
	               fleet_key(key, "probe:", fs->name), F.self, ttl, NULL,
	               NULL) == 0) {
		fs->probe_asking = 1;
		if (!fs->probe_held)
			fs->probe_ms = now;
	}
}

/* Publish what llmfctl ... --fleet asked for on slot k. */
static void
fleet_push_admin(int k, struct slot_sh *s, int64_t wall)
{
	struct fleet_slot *fs = &F.slot[k];
	uint32_t bits = atomic_exchange(&s->fleet_push, 0);
	char key[FLEET_KEY_MAX], val[128];
	int64_t stamp;

	if (bits & FLEET_PUSH_ADMIN) {
		stamp = wall > fs->admin_stamp ? wall : fs->admin_stamp + 1;
		fs->admin_stamp = stamp;
		snprintf(val, sizeof val, "%lld %u %s", (long long)stamp,
		         atomic_load(&s->admin), F.self);
		fleet_setmax(fleet_key(key, "admin:", fs->name), stamp, val,
		             FLEET_STATE_TTL);
		log_info("fleet: published admin state of %s", fs->name);
	}
	if (bits & FLEET_PUSH_WEIGHT) {
		stamp = wall > fs->weight_stamp ? wall : fs->weight_stamp + 1;
		fs->weight_stamp = stamp;
		snprintf(val, sizeof val, "%lld %d %s", (long long)stamp,
		         (int)atomic_load(&s->live_weight), F.self);
		fleet_setmax(fleet_key(key, "weight:", fs->name), stamp, val,
		             FLEET_STATE_TTL);
		log_info("fleet: published weight of %s", fs->name);
	}
}

/* Publish every local change since the last pass. */
static void
fleet_push_all(void)
{
	int64_t now = clock_ms(), wall = clock_wall_ms();

	for (int k = 0; k < SHM_NSLOTS && F.ac; k++) {
		struct slot_sh *s = &F.shm->slots[k];
		struct fleet_slot *fs = fleet_slot(k);

		if (fs == NULL)
			continue;
		fleet_push_cool(k, s, now, wall);
		fleet_push_circ(k, s, now, wall);
		fleet_push_probe(k, s, now);
		fleet_push_admin(k, s, wall);
		fs->resync = 0;
	}
	fleet_gates(); /* before any release reaches Redis */
}

/* The grants record of slot k for a minute, reset when it held an older
 * one. */
static struct fleet_acct *
fleet_acct(int k, uint64_t minute)
{
	struct fleet_acct *a = &F.slot[k].acct[minute & 1];

	if (a->minute != minute) {
		memset(a, 0, sizeof *a);
		a->minute = minute;
	}
	return a;
}

/* Ask Redis for want more units of counter ctr (0 rpm, 1 tpm) of slot k
 * in a minute, first counting force units used beyond the grants. */
static void
fleet_reserve(int k, int ctr, uint64_t minute, uint64_t force, uint64_t want,
              int64_t limit)
{
	struct fleet_op *op = fleet_op(OP_RESERVE, k);
	char key[FLEET_KEY_MAX], name[SHM_FLEET_ID + 32], f[24], w[24], l[24],
	    t[24];

	if (op == NULL)
		return;
	op->ctr = ctr;
	op->minute = minute;
	op->n = (int)(force > INT32_MAX ? INT32_MAX : force);
	snprintf(name, sizeof name, "%s:%llu", F.slot[k].name,
	         (unsigned long long)minute);
	snprintf(f, sizeof f, "%llu", (unsigned long long)op->n);
	snprintf(w, sizeof w, "%llu", (unsigned long long)want);
	snprintf(l, sizeof l, "%lld", (long long)limit);
	snprintf(t, sizeof t, "%d", FLEET_COUNTER_TTL);
	fleet_eval(op, lua_reserve, fleet_key(key, ctr ? "tpm:" : "rpm:", name),
	           f, w, l, t);
}

/* Top up slot k's rate grants for this minute (and for the next one when
 * it starts before the next sync), and learn the fleet-wide counts. */
static void
fleet_rate_slot(int k, struct slot_sh *s, int64_t wall)
{
	struct fleet_slot *fs = &F.slot[k];
	uint64_t minute = (uint64_t)(wall / 60000), used[2], refused;
	int64_t lim[2] = {s->rpm, s->tpm};
	int hosts = (int)atomic_load(&F.shm->hdr->fleet_nhosts);
	struct fleet_acct *a, *b;
	struct fleet_grant_in in;

	if (lim[0] <= 0 && lim[1] <= 0)
		return;
	used[0] = used[1] = 0;
	if (atomic_load(&s->rate_min) == minute) {
		used[0] = atomic_load(&s->req_cur);
		used[1] = atomic_load(&s->tok_cur);
	}
	refused = atomic_load(&s->rate_refused);
	a = fleet_acct(k, minute);
	for (int c = 0; c < 2; c++) {
		uint64_t d = used[c] >= fs->last_used[c]
		                 ? used[c] - fs->last_used[c]
		                 : used[c];

		fs->rate[c] =
		    (double)d > fs->rate[c] / 2 ? (double)d : fs->rate[c] / 2;
		fs->last_used[c] = used[c];
		if (lim[c] <= 0)
			continue;
		in = (struct fleet_grant_in){.limit = (uint64_t)lim[c],
		                             .fleet_used = a->fleet[c],
		                             .granted = a->granted[c],
		                             .used = used[c],
		                             .last_want = a->want[c],
		                             .rate = fs->rate[c],
		                             .hosts = hosts,
		                             .exhausted =
		                                 refused != fs->last_refused};
		a->want[c] = fleet_want(&in);
		fleet_reserve(k, c, minute,
		              used[c] > a->granted[c] + a->forced[c]
		                  ? used[c] - a->granted[c] - a->forced[c]
		                  : 0,
		              a->want[c], lim[c]);
		if (60000 - wall % 60000 > 2 * fleet_sync_ms() + FLEET_POLL_MS)
			continue;
		b = fleet_acct(k, minute + 1); /* the next minute, ahead */
		in.fleet_used = b->fleet[c];
		in.granted = b->granted[c];
		in.used = in.last_want = 0;
		in.exhausted = 0;
		if ((b->want[c] = fleet_want(&in)) > 0)
			fleet_reserve(k, c, minute + 1, 0, b->want[c], lim[c]);
	}
	fs->last_refused = refused;
}

/* MGET of the shared state of every active slot: cooldown, circuit,
 * admin, weight. */
static void
fleet_pull(void)
{
	struct fleet_op *op = fleet_op(OP_PULL, -1);
	static const char *const kinds[4] = {
	    "cool:", "circ:", "admin:", "weight:"};
	const char **argv = NULL;
	size_t *len = NULL;
	char *keys = NULL;
	int n = 0;

	if (op == NULL || (op->slots = calloc(SHM_NSLOTS, sizeof(int))) == NULL)
		goto fail;
	for (int k = 0; k < SHM_NSLOTS; k++)
		if (F.slot[k].name[0] != '\0' &&
		    atomic_load(&F.shm->slots[k].state) == SLOT_ACTIVE)
			op->slots[n++] = k;
	op->n = n;
	if (n == 0)
		goto fail;
	argv = calloc((size_t)(1 + 4 * n), sizeof *argv);
	len = calloc((size_t)(1 + 4 * n), sizeof *len);
	keys = malloc((size_t)(4 * n) * FLEET_KEY_MAX);
	if (argv == NULL || len == NULL || keys == NULL)
		goto fail;
	argv[0] = "MGET";
	len[0] = 4;
	for (int i = 0; i < 4 * n; i++) {
		char *key = keys + (size_t)i * FLEET_KEY_MAX;

		argv[1 + i] =
		    fleet_key(key, kinds[i % 4], F.slot[op->slots[i / 4]].name);
		len[1 + i] = strlen(key);
	}
	fleet_sendv(op, 1 + 4 * n, argv, len);
	op = NULL;
fail:
	if (op)
		fleet_op_free(op);
	free(argv);
	free(len);
	free(keys);
}

/* The heartbeat, and the host list (whose reply ends the round). */
static void
fleet_heartbeat(int64_t wall)
{
	char key[FLEET_KEY_MAX], ekey[FLEET_KEY_MAX], now[24], old[32], ttl[24];

	fleet_key(key, "hosts", "");
	fleet_key(ekey, "epoch", "");
	snprintf(now, sizeof now, "%lld", (long long)wall);
	snprintf(old, sizeof old, "(%lld",
	         (long long)(wall - fleet_host_ttl()));
	snprintf(ttl, sizeof ttl, "%lld", (long long)fleet_host_ttl());
	fleet_send(fleet_op(OP_PUBLISH, -1), 4,
	           (const char *[]){"ZADD", key, now, F.self});
	fleet_send(fleet_op(OP_PUBLISH, -1), 4,
	           (const char *[]){"ZREMRANGEBYSCORE", key, "-inf", old});
	fleet_send(fleet_op(OP_PUBLISH, -1), 3,
	           (const char *[]){"PEXPIRE", key, ttl});
	fleet_send(fleet_op(OP_PUBLISH, -1), 3,
	           (const char *[]){"PEXPIRE", ekey, ttl});
	if (fleet_send(
	        fleet_op(OP_HOSTS, -1), 5,
	        (const char *[]){"ZRANGE", key, "0", "-1", "WITHSCORES"}) == -1)
		F.round = 0;
}

/* Every sync_ms: a round of pushes, grants, pulls and the heartbeat. */
static void
fleet_sync_cb(evutil_socket_t fd, short ev, void *arg)
{
	int64_t wall = clock_wall_ms();

	(void)fd;
	(void)ev;
	(void)arg;
	if (!F.up || F.round || F.ac == NULL)
		return;
	F.round = 1;
	F.round_us = clock_us();
	fleet_push_all();
	for (int k = 0; k < SHM_NSLOTS; k++)
		if (fleet_slot(k) != NULL)
			fleet_rate_slot(k, &F.shm->slots[k], wall);
	fleet_pull();
	fleet_heartbeat(wall);
}

/* A string element, or NULL (nil or another type). */
static const redisReply *
fleet_str(const redisReply *r)
{
	return r != NULL && r->type == REDIS_REPLY_STRING ? r : NULL;
}

/* Merge a cooldown another host published into slot k (deadlines only
 * grow). */
static void
fleet_apply_cool(int k, const redisReply *r, int64_t now, int64_t wall)
{
	struct slot_sh *s = &F.shm->slots[k];
	struct fleet_slot *fs = &F.slot[k];
	char host[SHM_FLEET_ID];
	int64_t v[1], mono, cur;

	if ((r = fleet_str(r)) == NULL ||
	    fleet_parse(r->str, r->len, v, 1, host, sizeof host) != 1 ||
	    strcmp(host, F.self) == 0)
		return;
	mono = fleet_mono(v[0], now, wall);
	cur = atomic_load(&s->cooldown_until_ms);
	if (mono <= now || mono <= cur + FLEET_JITTER_MS) {
		if (mono > fs->cool_known)
			fs->cool_known = mono;
		return;
	}
	while (cur < mono &&
	       !atomic_compare_exchange_weak(&s->cooldown_until_ms, &cur, mono))
		;
	fs->cool_known = mono;
	atomic_fetch_add(&F.shm->hdr->fleet_applied, 1);
	if (cur <= now)
		fleet_event(k, "%s cooling down for %.1fs (fleet, from %s)",
		            fs->name, (double)(mono - now) / 1000.0, host);
}

/* Open (or move) slot k's circuit as another host's newer state says. */
static void
fleet_apply_open(int k, int64_t until, int64_t win, const char *host)
{
	struct slot_sh *s = &F.shm->slots[k];
	uint32_t c = CIRCUIT_CLOSED;
	int64_t cur, now = clock_ms();

	if (until <= 0)
		until = 1; /* 0 reads as "being opened" */
	if (atomic_compare_exchange_strong(&s->circuit, &c, CIRCUIT_OPEN)) {
		atomic_store(&s->circuit_window_ms, win);
		atomic_store(&s->circuit_until_ms, until);
		F.slot[k].circ = CIRCUIT_OPEN;
		atomic_fetch_add(&F.shm->hdr->fleet_applied, 1);
		fleet_event(k, "%s circuit open for %.1fs (fleet, from %s)",
		            F.slot[k].name,
		            (double)(until > now ? until - now : 0) / 1000.0,
		            host);
		return;
	}
	if (c != CIRCUIT_OPEN) /* our own probe is out: it decides */
		return;
	cur = atomic_load(&s->circuit_until_ms);
	if (cur != until &&
	    atomic_compare_exchange_strong(&s->circuit_until_ms, &cur, until))
		atomic_store(&s->circuit_window_ms, win);
}

/* Close slot k's circuit: another host's probe succeeded. */
static void
fleet_apply_close(int k, const char *host)
{
	struct slot_sh *s = &F.shm->slots[k];
	uint32_t c = CIRCUIT_OPEN;

	if (!atomic_compare_exchange_strong(&s->circuit, &c, CIRCUIT_CLOSED))
		return;
	atomic_store(&s->circuit_window_ms, 0);
	atomic_store(&s->circuit_until_ms, 0);
	atomic_store(&s->consec_fail, 0);
	F.slot[k].circ = CIRCUIT_CLOSED;
	if (F.slot[k].probe_held)
		fleet_unprobe(k);
	atomic_fetch_add(&F.shm->hdr->fleet_applied, 1);
	fleet_event(k, "%s circuit closed (fleet, from %s)", F.slot[k].name,
	            host);
}

/* Merge the fleet's circuit state into slot k when it is newer than any
 * change this host knows. */
static void
fleet_apply_circ(int k, const redisReply *r, int64_t now, int64_t wall)
{
	struct fleet_slot *fs = &F.slot[k];
	char host[SHM_FLEET_ID];
	int64_t v[4];

	if ((r = fleet_str(r)) == NULL ||
	    fleet_parse(r->str, r->len, v, 4, host, sizeof host) != 4 ||
	    v[0] <= fs->circ_stamp)
		return;
	fs->circ_stamp = v[0];
	if (strcmp(host, F.self) == 0)
		return;
	if (v[1] == 1)
		fleet_apply_open(k, fleet_mono(v[2], now, wall), v[3], host);
	else if (v[1] == 0)
		fleet_apply_close(k, host);
}

/* Apply a newer admin (what 0) or weight (what 1) value to slot k, and
 * keep its key alive while any host sees it. */
static void
fleet_apply_admin(int k, int what, const redisReply *r)
{
	struct slot_sh *s = &F.shm->slots[k];
	struct fleet_slot *fs = &F.slot[k];
	int64_t *stamp = what ? &fs->weight_stamp : &fs->admin_stamp, v[2];
	char host[SHM_FLEET_ID], key[FLEET_KEY_MAX], ttl[24];

	if ((r = fleet_str(r)) == NULL ||
	    fleet_parse(r->str, r->len, v, 2, host, sizeof host) != 2)
		return;
	snprintf(ttl, sizeof ttl, "%d", FLEET_STATE_TTL);
	fleet_send(fleet_op(OP_PUBLISH, -1), 3,
	           (const char *[]){
	               "PEXPIRE",
	               fleet_key(key, what ? "weight:" : "admin:", fs->name),
	               ttl});
	if (v[0] <= *stamp)
		return;
	*stamp = v[0];
	if (strcmp(host, F.self) == 0)
		return;
	if (what == 0 && (v[1] == ADMIN_ACTIVE || v[1] == ADMIN_DRAINED)) {
		if (atomic_exchange(&s->admin, (uint32_t)v[1]) !=
		    (uint32_t)v[1])
			fleet_event(k, "%s %s (fleet, from %s)", fs->name,
			            v[1] == ADMIN_DRAINED ? "drain" : "undrain",
			            host);
	} else if (what == 1 && v[1] >= -1 && v[1] <= 1000000) {
		atomic_store(&s->live_weight, (int32_t)v[1]);
		fleet_event(k, "weight %s %lld (fleet, from %s)", fs->name,
		            (long long)v[1], host);
	} else
		return;
	atomic_fetch_add(&F.shm->hdr->fleet_applied, 1);
}

/* The MGET reply: four values per slot pulled. */
static void
fleet_on_pull(const struct fleet_op *op, const redisReply *r)
{
	int64_t now = clock_ms(), wall = clock_wall_ms();

	if (r->type != REDIS_REPLY_ARRAY || r->elements != (size_t)op->n * 4) {
		fleet_warn("unexpected reply to MGET (type %d)", r->type);
		return;
	}
	for (int i = 0; i < op->n; i++) {
		int k = op->slots[i];
		redisReply **e = r->element + 4 * i;

		if (fleet_slot(k) == NULL)
			continue;
		fleet_apply_cool(k, e[0], now, wall);
		fleet_apply_circ(k, e[1], now, wall);
		fleet_apply_admin(k, 0, e[2]);
		fleet_apply_admin(k, 1, e[3]);
	}
}

/* A grant reply {granted, fleet-wide count}. */
static void
fleet_on_reserve(const struct fleet_op *op, const redisReply *r)
{
	struct slot_sh *s = &F.shm->slots[op->slot];
	struct fleet_acct *a = &F.slot[op->slot].acct[op->minute & 1];
	uint64_t minute = (uint64_t)(clock_wall_ms() / 60000);

	if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
	    r->element[0]->type != REDIS_REPLY_INTEGER ||
	    r->element[1]->type != REDIS_REPLY_INTEGER ||
	    r->element[0]->integer < 0 || r->element[1]->integer < 0) {
		fleet_warn("unexpected reply to a rate grant");
		return;
	}
	if (fleet_slot(op->slot) == NULL ||
	    strcmp(op->name, F.slot[op->slot].name) != 0 ||
	    a->minute != op->minute)
		return;
	/* forced units are counted in Redis but grant nothing: the slack a
	 * worker may use beyond its grant stays the same 5 % */
	a->granted[op->ctr] += (uint64_t)r->element[0]->integer;
	a->forced[op->ctr] += (uint64_t)op->n;
	a->fleet[op->ctr] = (uint64_t)r->element[1]->integer;
	fleet_set_caps(s, op->minute, a->granted[0], a->granted[1]);
	if (op->minute == minute)
		atomic_store(op->ctr ? &s->fleet_tok_used : &s->fleet_req_used,
		             a->fleet[op->ctr]);
}

/* The probe token reply: 1 held, 0 another host's. */
static void
fleet_on_probe(const struct fleet_op *op, const redisReply *r)
{
	struct fleet_slot *fs = &F.slot[op->slot];

	if (strcmp(op->name, fs->name) != 0)
		return;
	fs->probe_asking = 0;
	if (r->type != REDIS_REPLY_INTEGER) {
		fleet_warn("unexpected reply to the probe token");
		return;
	}
	if (r->integer == 1) {
		if (!fs->probe_held)
			fs->probe_since = clock_ms();
		fs->probe_held = 1;
		fs->probe_ms = clock_ms();
	} else
		fs->probe_held = 0;
	fleet_gates();
}

/* The host list: write it to the table; the sync round is complete. */
static void
fleet_on_hosts(const redisReply *r)
{
	struct shm_hdr_sh *h = F.shm->hdr;
	uint32_t n = 0;

	F.round = 0;
	if (r->type != REDIS_REPLY_ARRAY || r->elements % 2 != 0) {
		fleet_warn("unexpected reply to ZRANGE");
		return;
	}
	atomic_fetch_add(&h->fleet_seq, 1);
	for (size_t i = 0; i + 1 < r->elements && n < SHM_FLEET_HOSTS; i += 2) {
		const redisReply *id = fleet_str(r->element[i]);
		const redisReply *sc = fleet_str(r->element[i + 1]);

		if (id == NULL || sc == NULL)
			continue;
		snprintf(h->fleet_hosts[n].id, sizeof h->fleet_hosts[n].id,
		         "%.*s", (int)(id->len < SHM_FLEET_ID ? id->len : 63),
		         id->str);
		h->fleet_hosts[n].seen_wall_ms = strtoll(sc->str, NULL, 10);
		n++;
	}
	h->fleet_nlisted = n;
	atomic_fetch_add(&h->fleet_seq, 1);
	atomic_store(&h->fleet_nhosts, n ? (uint32_t)(r->elements / 2) : 1);
	atomic_store(&h->fleet_sync_wall_ms, clock_wall_ms());
	atomic_store(&h->fleet_rtt_us, (uint64_t)(clock_us() - F.round_us));
	atomic_fetch_add(&h->fleet_syncs, 1);
}

/* The epoch reply: now synced. A different epoch than before means Redis
 * lost its data (a restart): this host's grants are counted afresh from
 * what it used. */
static void
fleet_on_epoch(const redisReply *r)
{
	struct shm_hdr_sh *h = F.shm->hdr;

	if ((r = fleet_str(r)) == NULL || r->len == 0 ||
	    r->len >= sizeof F.epoch) {
		fleet_down("unexpected reply to the epoch script");
		return;
	}
	if (F.epoch[0] && (strlen(F.epoch) != r->len ||
	                   memcmp(F.epoch, r->str, r->len) != 0)) {
		log_info("fleet: redis %s lost its data; counting this host's "
		         "use afresh",
		         F.cfg->fleet_redis);
		for (int k = 0; k < SHM_NSLOTS; k++)
			memset(F.slot[k].acct, 0, sizeof F.slot[k].acct);
	}
	memcpy(F.epoch, r->str, r->len);
	F.epoch[r->len] = '\0';
	F.up = 1;
	F.fails = 0;
	F.warned_ms = 0;
	for (int k = 0; k < SHM_NSLOTS; k++)
		F.slot[k].resync = 1;
	log_info("fleet: synced with redis %s as host %s", F.cfg->fleet_redis,
	         F.self);
	if (atomic_exchange(&h->fleet_state, FLEET_UP) != FLEET_UP)
		fleet_event(-1, "redis %s reachable; synced as %s",
		            F.cfg->fleet_redis, F.self);
	fleet_gates();
	fleet_sync_cb(-1, 0, NULL);
}

/* An error reply: AUTH's ends the connection; others are counted. */
static void
fleet_on_error(const struct fleet_op *op, const redisReply *r)
{
	char why[200];

	snprintf(why, sizeof why, "%.*s", (int)(r->len < 160 ? r->len : 160),
	         r->str ? r->str : "");
	if (op->kind == OP_AUTH || op->kind == OP_EPOCH) {
		fleet_down(why);
		return;
	}
	if (op->kind == OP_HOSTS)
		F.round = 0;
	if (op->kind == OP_PROBE)
		F.slot[op->slot].probe_asking = 0;
	fleet_warn("redis %s answered an error: %s", F.cfg->fleet_redis, why);
}

/* Every reply (or NULL when the connection is gone) lands here. */
static void
fleet_reply(redisAsyncContext *ac, void *reply, void *priv)
{
	struct fleet_op *op = priv;
	const redisReply *r = reply;

	if (ac != F.ac || r == NULL) {
		fleet_op_free(op);
		return;
	}
	if (F.outstanding > 0)
		F.outstanding--;
	F.progress_ms = clock_ms();
	if (r->type == REDIS_REPLY_ERROR)
		fleet_on_error(op, r);
	else if (op->kind == OP_EPOCH)
		fleet_on_epoch(r);
	else if (op->kind == OP_PULL)
		fleet_on_pull(op, r);
	else if (op->kind == OP_RESERVE)
		fleet_on_reserve(op, r);
	else if (op->kind == OP_PROBE)
		fleet_on_probe(op, r);
	else if (op->kind == OP_HOSTS)
		fleet_on_hosts(r);
	fleet_op_free(op);
}

/* Retry delay after n failures in a row: doubling, jittered. */
static int64_t
fleet_backoff(int n)
{
	int64_t d = (int64_t)FLEET_BACKOFF_MIN << (n < 6 ? n : 6);

	if (d > FLEET_BACKOFF_MAX)
		d = FLEET_BACKOFF_MAX;
	return d / 2 + (int64_t)rng_below(&F.rng, (uint64_t)d / 2 + 1);
}

/* Redis is gone or useless: drop the connection, serve on the local view
 * (fair shares, local probes), and try again later. */
static void
fleet_down(const char *why)
{
	redisAsyncContext *ac = F.ac;
	int64_t ms = fleet_backoff(F.fails++);
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

	F.ac = NULL;
	F.up = 0;
	F.round = 0;
	F.outstanding = 0;
	if (ac != NULL)
		redisAsyncFree(ac); /* callbacks see F.ac changed */
	for (int k = 0; k < SHM_NSLOTS; k++)
		F.slot[k].probe_held = F.slot[k].probe_asking = 0;
	fleet_gates();
	if (atomic_exchange(&F.shm->hdr->fleet_state, FLEET_DOWN) == FLEET_UP)
		fleet_event(-1,
		            "redis %s unreachable (%s); serving on the "
		            "local view",
		            F.cfg->fleet_redis, why);
	fleet_warn("redis %s: %s; serving on the local view, retry in %lld ms",
	           F.cfg->fleet_redis, why, (long long)ms);
	evtimer_add(F.ev_retry, &tv);
}

/* hiredis: the connection was made, or failed. */
static void
fleet_on_connect(const redisAsyncContext *ac, int status)
{
	if (ac != F.ac || status == REDIS_OK)
		return;
	F.ac = NULL; /* hiredis frees it */
	fleet_down(ac->errstr[0] ? ac->errstr : "connect failed");
}

/* hiredis: the connection ended. */
static void
fleet_on_disconnect(const redisAsyncContext *ac, int status)
{
	if (ac != F.ac)
		return;
	F.ac = NULL; /* hiredis frees it */
	fleet_down(status == REDIS_OK ? "connection closed"
	           : ac->errstr[0]    ? ac->errstr
	                              : "connection lost");
}

/* Connect (non-blocking), then AUTH and the epoch. */
static void
fleet_connect(void)
{
	const struct cfg *c = F.cfg;
	char key[FLEET_KEY_MAX], ttl[24], why[160];

	F.ac = c->fleet_redis_port
	           ? redisAsyncConnect(c->fleet_redis_host, c->fleet_redis_port)
	           : redisAsyncConnectUnix(c->fleet_redis);
	if (F.ac == NULL || F.ac->err) {
		snprintf(why, sizeof why, "%s",
		         F.ac ? F.ac->errstr : "out of memory");
		if (F.ac)
			redisAsyncFree(F.ac);
		F.ac = NULL;
		fleet_down(why);
		return;
	}
	fcntl(F.ac->c.fd, F_SETFD, FD_CLOEXEC);
	if (redisLibeventAttach(F.ac, F.base) != REDIS_OK) {
		redisAsyncFree(F.ac);
		F.ac = NULL;
		fleet_down("cannot attach to the event loop");
		return;
	}
	redisAsyncSetConnectCallback(F.ac, fleet_on_connect);
	redisAsyncSetDisconnectCallback(F.ac, fleet_on_disconnect);
	F.outstanding = 0;
	F.progress_ms = clock_ms();
	snprintf(F.want_epoch, sizeof F.want_epoch, "%016llx%016llx",
	         (unsigned long long)rng_next(&F.rng),
	         (unsigned long long)rng_next(&F.rng));
	if (c->fleet_password[0] != '\0')
		fleet_send(fleet_op(OP_AUTH, -1), 2,
		           (const char *[]){"AUTH", c->fleet_password});
	snprintf(ttl, sizeof ttl, "%lld", (long long)fleet_host_ttl());
	fleet_eval(fleet_op(OP_EPOCH, -1), lua_epoch,
	           fleet_key(key, "epoch", ""), F.want_epoch, ttl, NULL, NULL);
}

/* The backoff ran out: connect again. */
static void
fleet_retry_cb(evutil_socket_t fd, short ev, void *arg)
{
	(void)fd;
	(void)ev;
	(void)arg;
	if (F.ac == NULL)
		fleet_connect();
}

/* Every FLEET_POLL_MS: a stalled Redis is dropped; local changes are
 * published at once. */
static void
fleet_poll_cb(evutil_socket_t fd, short ev, void *arg)
{
	char why[64];

	(void)fd;
	(void)ev;
	(void)arg;
	if (F.ac != NULL && F.outstanding > 0 &&
	    clock_ms() - F.progress_ms > fleet_timeout_ms()) {
		snprintf(why, sizeof why, "no reply for %lld ms",
		         (long long)(clock_ms() - F.progress_ms));
		fleet_down(why);
		return;
	}
	if (F.up)
		fleet_push_all();
	else
		fleet_gates();
}

/* This host's id: fleet.host, else hostname:pid. */
static void
fleet_self(const struct cfg *cfg)
{
	char hn[SHM_FLEET_ID] = "host";

	if (cfg->fleet_host[0] != '\0') {
		snprintf(F.self, sizeof F.self, "%s", cfg->fleet_host);
		return;
	}
	if (gethostname(hn, sizeof hn - 1) == -1)
		snprintf(hn, sizeof hn, "host");
	hn[sizeof hn - 1] = '\0';
	for (char *p = hn; *p; p++)
		if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f)
			*p = '_';
	snprintf(F.self, sizeof F.self, "%.40s:%d", hn, (int)getpid());
}

/* Start syncing as cfg says (nothing without a fleet section). */
static void
fleet_start(const struct cfg *cfg)
{
	struct shm_hdr_sh *h = F.shm->hdr;
	struct timeval poll = {0, FLEET_POLL_MS * 1000};
	struct timeval sync = {cfg->fleet_sync_ms / 1000,
	                       (cfg->fleet_sync_ms % 1000) * 1000};

	F.cfg = cfg;
	atomic_store(&h->fleet_nhosts, 1);
	if (!cfg->fleet) {
		atomic_store(&h->fleet_state, FLEET_OFF);
		fleet_gates();
		return;
	}
	fleet_self(cfg);
	atomic_fetch_add(&h->fleet_seq, 1);
	snprintf(h->fleet_redis, sizeof h->fleet_redis, "%s", cfg->fleet_redis);
	snprintf(h->fleet_self, sizeof h->fleet_self, "%s", F.self);
	h->fleet_nlisted = 0;
	atomic_fetch_add(&h->fleet_seq, 1);
	atomic_store(&h->fleet_state, FLEET_DOWN);
	F.ev_poll = event_new(F.base, -1, EV_PERSIST, fleet_poll_cb, NULL);
	F.ev_sync = event_new(F.base, -1, EV_PERSIST, fleet_sync_cb, NULL);
	F.ev_retry = evtimer_new(F.base, fleet_retry_cb, NULL);
	if (F.ev_poll == NULL || F.ev_sync == NULL || F.ev_retry == NULL)
		fatalx("fleet: event_new failed");
	event_add(F.ev_poll, &poll);
	event_add(F.ev_sync, &sync);
	log_info("fleet: redis %s, key prefix %s, sync every %d ms, host %s",
	         cfg->fleet_redis, cfg->fleet_key_prefix, cfg->fleet_sync_ms,
	         F.self);
	fleet_connect();
}

/* Stop syncing: drop the connection and the timers; workers go back to
 * local limits and probes. */
static void
fleet_stop(void)
{
	redisAsyncContext *ac = F.ac;

	F.ac = NULL;
	F.up = 0;
	if (ac != NULL)
		redisAsyncFree(ac);
	if (F.ev_poll)
		event_free(F.ev_poll);
	if (F.ev_sync)
		event_free(F.ev_sync);
	if (F.ev_retry)
		event_free(F.ev_retry);
	F.ev_poll = F.ev_sync = F.ev_retry = NULL;
	memset(F.slot, 0, sizeof F.slot);
	F.epoch[0] = '\0';
	F.round = F.outstanding = F.fails = 0;
	if (F.shm != NULL) {
		atomic_store(&F.shm->hdr->fleet_state, FLEET_OFF);
		fleet_gates();
	}
}

/* Master start: the syncer on the master's loop. */
void
fleet_init(struct event_base *base, struct shm *shm, const struct cfg *cfg)
{
	memset(&F, 0, sizeof F);
	F.base = base;
	F.shm = shm;
	F.rng = (uint64_t)clock_us() ^ ((uint64_t)getpid() << 32) ^ 0x9e3779b9;
	fleet_start(cfg);
}

/* Reload: keep the connection when the fleet settings are the same. */
void
fleet_reload(const struct cfg *cfg)
{
	const struct cfg *o = F.cfg;

	if (o != NULL && o->fleet && cfg->fleet &&
	    strcmp(o->fleet_redis, cfg->fleet_redis) == 0 &&
	    strcmp(o->fleet_key_prefix, cfg->fleet_key_prefix) == 0 &&
	    strcmp(o->fleet_password, cfg->fleet_password) == 0 &&
	    strcmp(o->fleet_host, cfg->fleet_host) == 0 &&
	    o->fleet_sync_ms == cfg->fleet_sync_ms) {
		F.cfg = cfg;
		return;
	}
	fleet_stop();
	fleet_start(cfg);
}

/* In a forked worker: close the inherited Redis socket (the worker never
 * uses it, and must not hold the connection open). */
void
fleet_child(void)
{
	if (F.ac != NULL && F.ac->c.fd >= 0)
		close(F.ac->c.fd);
}

/* Master exit. */
void
fleet_free(void)
{
	fleet_stop();
}
