/* The master process: config, listeners, health table, workers. */
#ifndef LLMFD_DAEMON_H
#define LLMFD_DAEMON_H

#include <sys/types.h>

#include "common/cfg.h"
#include "common/shm.h"
#include "common/spend.h"

#define MAX_PROCS  (SHM_MAX_WORKERS)
#define MAX_LISTEN 8

/* One worker process slot (nginx ngx_process_t). */
struct proc {
	pid_t pid; /* 0 = free */
	int index; /* column in the health table */
	uint64_t generation;
	int64_t started_ms;
	int fails; /* quick deaths in a row, for backoff */
	unsigned respawn : 1;
	unsigned exiting : 1;
};

struct master {
	struct cfg *cfg;
	char conf_path[4096];
	struct shm shm;
	int fds[MAX_LISTEN];
	int nfds;
	int unix_fd;   /* index into fds of the unix socket, -1 */
	int activated; /* listeners came from LISTEN_FDS */
	uint64_t generation;
	struct proc procs[MAX_PROCS];
	int stopping;
	struct event_base *base;
	/* records new to the table since the last state_restore */
	char fresh_slot[SHM_NSLOTS];
	char fresh_client[SHM_NCLIENTS];
	/* the spend file (state.c) */
	char state_path[4096]; /* "" when state_dir is not set */
	struct spend_set hist; /* days moved out of the table's ledger */
	uint64_t saved_seq;    /* spend_seq at the last save */
	uint32_t saved_day;
	int64_t warned_ms; /* last save failure logged */
};

/* fleet.c */
void fleet_init(struct event_base *, struct shm *, const struct cfg *);
void fleet_reload(const struct cfg *);
void fleet_child(void);
void fleet_free(void);

/* hooks.c */
struct event_base;
struct event_sh;
void hooks_init(struct event_base *);
void hooks_event(const struct cfg *, const struct shm *, uint64_t seq,
                 const struct event_sh *);
int hooks_reap(pid_t, int status);
void hooks_free(void);
void hooks_child(void);

/* listen.c */
int listen_open(struct master *, const struct cfg *, char **cause);
void listen_close(struct master *);

/* state.c */
int state_open(struct master *, char **cause);
void state_restore(struct master *);
void state_tick(struct master *);
void state_close(struct master *);

/* master.c */
int master_run(struct master *);
int master_table_sync(struct master *, const struct cfg *);

/* notify.c */
void notify_send(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
