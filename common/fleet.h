/* The parts of fleet sharing that need no Redis: how a worker reads the
 * rate grants the master keeps in the table, how the master sizes the
 * next grant, and the text of the values llmfd stores in Redis. The
 * syncer itself (the one Redis connection) is daemon/fleet.c. */
#ifndef LLMFD_FLEET_H
#define LLMFD_FLEET_H

#include <stddef.h>
#include <stdint.h>

#include "common/shm.h"

/* Share of a limit that grants left unused may strand at most (5 %). */
#define FLEET_SLACK_DIV 20

/* The limits a worker enforces on a slot this wall-clock minute, given the
 * configured rpm and tpm (0: unlimited, kept 0): with no fleet the
 * configured ones; synced, this host's grants for the minute plus its
 * share of the 5 % slack (limit / (20 * hosts)); with Redis
 * unreachable (or no grant yet for the minute), the configured limit
 * divided by the number of hosts last seen, rounded up. */
void fleet_limits(const struct shm_hdr_sh *, const struct slot_sh *, long rpm,
                  long tpm, uint64_t minute, uint64_t *rlim, uint64_t *tlim);

/* Whether the fleet still had room under rpm and tpm at the last sync:
 * a refusal then came from this host's grant, topped up next sync. */
int fleet_room(const struct shm_hdr_sh *, const struct slot_sh *, long rpm,
               long tpm);

/* Master: store the grants of one minute in its parity pair. */
void fleet_set_caps(struct slot_sh *, uint64_t minute, uint64_t req,
                    uint64_t tok);

/* What the master knows when it sizes a grant for one counter. */
struct fleet_grant_in {
	uint64_t limit;      /* configured per-minute limit, > 0 */
	uint64_t fleet_used; /* the fleet-wide count at the last reply */
	uint64_t granted;    /* held by this host for the minute */
	uint64_t used;       /* used by this host in the minute */
	uint64_t last_want;  /* the previous want, for growth */
	double rate;         /* this host's use per sync period lately */
	int hosts;           /* live hosts (>= 1) */
	int exhausted;       /* the grant ran out since the last sync */
};

/* How many more units to ask for now: enough headroom for two sync periods
 * at the recent rate (doubling while the grant keeps running out), one
 * while idle only as long as idle hosts together strand under 5 % of the
 * room left, and never more than half the room left (so what a host holds
 * unused shrinks as the fleet nears the limit). */
uint64_t fleet_want(const struct fleet_grant_in *);

/* Parse "N1 N2 ... WORD" values: exactly n integers, then an optional
 * word (a host id) into word (wordsz > 0). Returns n, or -1 if the text is
 * not of that shape. */
int fleet_parse(const char *s, size_t len, int64_t *v, int n, char *word,
                size_t wordsz);

/* A consistent copy of the header's fleet block (llmfctl, /metrics). */
struct fleet_view {
	uint32_t state, nhosts, nlisted;
	int64_t sync_wall_ms;
	uint64_t syncs, failures, rtt_us, applied;
	char redis[128];
	char self[SHM_FLEET_ID];
	struct fleet_host_sh hosts[SHM_FLEET_HOSTS];
};

/* Copy the fleet block; 0, or -1 if it stayed mid-write. */
int fleet_view(const struct shm_hdr_sh *, struct fleet_view *);
/* "off", "down" or "synced". */
const char *fleet_state_name(uint32_t);

/* Monotonic ms for a wall-clock ms, given both clocks read now. */
int64_t fleet_mono(int64_t wall, int64_t now_mono, int64_t now_wall);

#endif
