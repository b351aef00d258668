/* The master: owns listeners, the health table and the config generation;
 * forks workers and respawns them (with backoff when they crash-loop);
 * reloads on SIGHUP keeping health; drains on SIGTERM. It never serves. */
#include <errno.h>
#include <grp.h>
#include <math.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/secret.h"
#include "daemon/daemon.h"
#include "worker/worker.h"

#define RESPAWN_MIN_MS 100
#define RESPAWN_MAX_MS 10000
#define QUICK_DEATH_MS 2000

static struct event *ev_sig[5], *ev_tick, *ev_respawn, *ev_kill;
static uint64_t ev_seen, ticks;
static int64_t watchdog_ms, watchdog_last;

/* Copy one deployment's config into its table slot. */
static void
table_fill(struct slot_sh *s, const struct deploy_cfg *d, int idx)
{
	shm_write_cfg_begin(s);
	snprintf(s->name, sizeof s->name, "%s", d->name);
	snprintf(s->group, sizeof s->group, "%s", d->group);
	snprintf(s->provider, sizeof s->provider, "%s",
	         cfg_provider_name(d->provider));
	snprintf(s->model, sizeof s->model, "%.*s", (int)sizeof s->model - 1,
	         d->model);
	s->cfg_weight = d->weight;
	s->cfg_index = idx;
	s->rpm = d->rpm;
	s->tpm = d->tpm;
	shm_write_cfg_end(s);
}

/* How client c is recognised, for llmfctl: never a key or its hash. */
static void
client_ident(char *out, size_t n, const struct client_cfg *c)
{
	size_t k = 0;

	out[0] = '\0';
	if (c->uid >= 0)
		k += (size_t)snprintf(out + k, n - k, "uid %ld", c->uid);
	if (c->gid >= 0 && k < n)
		k += (size_t)snprintf(out + k, n - k, "%sgid %ld",
		                      k ? ", " : "", c->gid);
	if (c->nkeys > 0 && k < n)
		k += (size_t)snprintf(out + k, n - k, "%s%d key%s",
		                      k ? ", " : "", c->nkeys,
		                      c->nkeys == 1 ? "" : "s");
	if (k == 0)
		snprintf(out, n, "%s", "anyone else");
}

/* Copy one client's config into its table record. */
static void
client_fill(struct client_sh *s, const struct client_cfg *c, int idx)
{
	shm_write_client_begin(s);
	snprintf(s->name, sizeof s->name, "%s", c->name);
	client_ident(s->ident, sizeof s->ident, c);
	s->cfg_index = idx;
	s->priority = c->priority;
	s->max_concurrent = c->max_concurrent;
	s->rpm = c->rpm;
	s->tpm = c->tpm;
	s->daily_nusd = (int64_t)llround(c->daily_budget_usd * 1e9);
	s->monthly_nusd = (int64_t)llround(c->monthly_budget_usd * 1e9);
	shm_write_client_end(s);
}

/* The client records: as the slots, by name (a new name gets a zeroed
 * record, which state_restore fills with its recorded spend). -1 if the
 * table has no room (checked first, nothing changed). */
static int
client_sync(struct master *m, const struct cfg *cfg)
{
	struct shm *t = &m->shm;
	char seen[SHM_NCLIENTS] = {0};
	int need = 0, nfree = 0, k;

	for (int i = 0; i < cfg->nclient; i++)
		need += shm_find_client(t, cfg->clients[i].name) < 0;
	for (k = 0; k < SHM_NCLIENTS; k++)
		nfree += atomic_load(&t->clients[k].state) == SLOT_FREE;
	if (need > nfree)
		return -1;
	for (int i = 0; i < cfg->nclient; i++) {
		if ((k = shm_find_client(t, cfg->clients[i].name)) < 0) {
			for (k = 0;
			     atomic_load(&t->clients[k].state) != SLOT_FREE;
			     k++)
				;
			memset(&t->clients[k], 0, sizeof t->clients[k]);
			m->fresh_client[k] = 1;
		}
		client_fill(&t->clients[k], &cfg->clients[i], i);
		atomic_store(&t->clients[k].state, SLOT_ACTIVE);
		seen[k] = 1;
	}
	for (k = 0; k < SHM_NCLIENTS; k++)
		if (!seen[k] &&
		    atomic_load(&t->clients[k].state) == SLOT_ACTIVE) {
			t->clients[k].cfg_index = -1;
			atomic_store(&t->clients[k].state, SLOT_RETIRED);
			log_info("client %s retired", t->clients[k].name);
		}
	return 0;
}

/* Make the table match a config: surviving names keep their slot and
 * counters, new names get fresh zeroed slots, removed ones are retired;
 * the same for clients. */
int
master_table_sync(struct master *m, const struct cfg *cfg)
{
	struct shm *t = &m->shm;
	char seen[SHM_NSLOTS] = {0};
	int need = 0, nfree = 0, cneed = 0, cfree = 0;

	/* check for room first, so a failed reload leaves the table as it was
	 */
	for (int i = 0; i < cfg->ndeploy; i++)
		need += shm_find(t, cfg->deploy[i].name) < 0;
	for (int k = 0; k < SHM_NSLOTS; k++)
		nfree += atomic_load(&t->slots[k].state) == SLOT_FREE;
	for (int i = 0; i < cfg->nclient; i++)
		cneed += shm_find_client(t, cfg->clients[i].name) < 0;
	for (int k = 0; k < SHM_NCLIENTS; k++)
		cfree += atomic_load(&t->clients[k].state) == SLOT_FREE;
	if (need > nfree || cneed > cfree)
		return -1;
	for (int i = 0; i < cfg->ndeploy; i++) {
		int k = shm_find(t, cfg->deploy[i].name);

		if (k < 0) {
			for (k = 0; k < SHM_NSLOTS; k++)
				if (atomic_load(&t->slots[k].state) ==
				    SLOT_FREE)
					break;
			if (k == SHM_NSLOTS)
				return -1;
			memset(&t->slots[k], 0, sizeof t->slots[k]);
			atomic_store(&t->slots[k].live_weight, -1);
			m->fresh_slot[k] = 1;
		}
		table_fill(&t->slots[k], &cfg->deploy[i], i);
		atomic_store(&t->slots[k].state, SLOT_ACTIVE);
		seen[k] = 1;
	}
	for (int k = 0; k < SHM_NSLOTS; k++)
		if (!seen[k] &&
		    atomic_load(&t->slots[k].state) == SLOT_ACTIVE) {
			t->slots[k].cfg_index = -1;
			atomic_store(&t->slots[k].state, SLOT_RETIRED);
			log_info("deployment %s retired", t->slots[k].name);
		}
	return client_sync(m, cfg);
}

/* Zero worker column i of every slot and client record (a fresh or dead
 * worker holds nothing in flight and nothing waiting). */
static void
zero_column(struct master *m, int i)
{
	for (int k = 0; k < SHM_NSLOTS; k++)
		atomic_store(&m->shm.slots[k].inflight[i], 0);
	for (int k = 0; k < SHM_NCLIENTS; k++)
		atomic_store(&m->shm.clients[k].inflight[i], 0);
	for (int p = 0; p < SHM_NPRIO; p++)
		atomic_store(&m->shm.hdr->waiting[i][p], 0);
}

/* Drop root in a worker when the config names a user. */
static void
drop_privileges(const struct cfg *cfg)
{
	struct passwd *pw;
	struct group *gr;
	gid_t gid;

	if (cfg->user[0] == '\0' || geteuid() != 0)
		return;
	if ((pw = getpwnam(cfg->user)) == NULL)
		fatalx("unknown user %s", cfg->user);
	gid = pw->pw_gid;
	if (cfg->group[0]) {
		if ((gr = getgrnam(cfg->group)) == NULL)
			fatalx("unknown group %s", cfg->group);
		gid = gr->gr_gid;
	}
	if (setgroups(1, &gid) == -1 || setgid(gid) == -1 ||
	    setuid(pw->pw_uid) == -1) {
		log_warn("dropping privileges to %s failed", cfg->user);
		exit(2);
	}
}

static int
proc_free_index(struct master *m)
{
	int used[MAX_PROCS] = {0};

	for (int i = 0; i < MAX_PROCS; i++)
		if (m->procs[i].pid > 0)
			used[m->procs[i].index] = 1;
	for (int i = 0; i < MAX_PROCS; i++)
		if (!used[i])
			return i;
	return -1;
}

/* Fork one worker into proc slot p. */
static int
spawn(struct master *m, struct proc *p)
{
	sigset_t all, old;
	pid_t pid;

	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, &old);
	pid = fork();
	if (pid == 0) {
		int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGCHLD, SIGUSR1};
		for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
			signal(sigs[i], SIG_DFL);
		/* the master's loop is not ours: give it a private epoll set
		 * (so nothing touches the parent's) and drop it */
		hooks_child();
		event_reinit(m->base);
		event_base_free(m->base);
		m->base = NULL;
		fleet_child();
		/* signals stay blocked until the worker has its own handlers:
		 * a SIGTERM (a reload right after this one) or a ^C that comes
		 * sooner waits for them instead of killing it */
		drop_privileges(m->cfg);
		_exit(worker_main(m->cfg, &m->shm, p->index, m->fds, m->nfds,
		                  &old));
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (pid == -1) {
		log_warn("fork failed");
		return -1;
	}
	zero_column(m, p->index); /* a fresh column */
	p->pid = pid;
	p->generation = m->generation;
	p->started_ms = clock_ms();
	p->respawn = 1;
	p->exiting = 0;
	log_info("worker %d started, pid %d", p->index, (int)pid);
	return 0;
}

/* Start `workers` new workers of the current generation. */
static void
spawn_generation(struct master *m)
{
	for (int n = 0; n < m->cfg->workers; n++) {
		int idx = proc_free_index(m), i;

		for (i = 0; i < MAX_PROCS && m->procs[i].pid; i++)
			;
		if (idx < 0 || i == MAX_PROCS) {
			log_warnx("too many worker processes");
			return;
		}
		memset(&m->procs[i], 0, sizeof m->procs[i]);
		m->procs[i].index = idx;
		spawn(m, &m->procs[i]);
	}
}

static int
live_procs(const struct master *m)
{
	int n = 0;

	for (int i = 0; i < MAX_PROCS; i++)
		n += m->procs[i].pid > 0;
	return n;
}

/* Respawn workers whose backoff has run out. */
static void
respawn_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct master *m = arg;
	int64_t now = clock_ms(), next = 0;

	(void)fd;
	(void)ev;
	for (int i = 0; i < MAX_PROCS; i++) {
		struct proc *p = &m->procs[i];
		int64_t due;

		if (p->pid != -1 || m->stopping)
			continue;
		due = p->started_ms;
		if (due <= now)
			spawn(m, p);
		else if (next == 0 || due < next)
			next = due;
	}
	if (next) {
		struct timeval tv = {(next - now) / 1000,
		                     ((next - now) % 1000) * 1000};
		event_add(ev_respawn, &tv);
	}
}

/* A child exited: an event hook (hooks.c reaps it), or a worker: log how,
 * and respawn it unless it should stay down. */
static void
reap(struct master *m, pid_t pid, int st)
{
	struct proc *p = NULL;
	int64_t now = clock_ms(), delay;

	if (hooks_reap(pid, st))
		return;
	for (int i = 0; i < MAX_PROCS; i++)
		if (m->procs[i].pid == pid)
			p = &m->procs[i];
	if (p == NULL)
		return;
	zero_column(m, p->index);
	if (WIFSIGNALED(st))
		log_warnx("worker %d (pid %d) killed by signal %d%s", p->index,
		          (int)pid, WTERMSIG(st),
		          WCOREDUMP(st) ? " (core dumped)" : "");
	else if (WEXITSTATUS(st) != 0 || !p->exiting)
		log_info("worker %d (pid %d) exited with code %d", p->index,
		         (int)pid, WEXITSTATUS(st));
	if (p->exiting || m->stopping || p->generation != m->generation) {
		p->pid = 0;
		return;
	}
	if (WIFEXITED(st) && WEXITSTATUS(st) == 2) {
		log_warnx("worker %d failed on configuration or privileges; "
		          "not respawning",
		          p->index);
		p->pid = 0;
		return;
	}
	atomic_fetch_add(&m->shm.hdr->worker_restarts, 1);
	p->fails = now - p->started_ms < QUICK_DEATH_MS ? p->fails + 1 : 0;
	delay = p->fails ? RESPAWN_MIN_MS << (p->fails - 1) : 0;
	if (delay > RESPAWN_MAX_MS)
		delay = RESPAWN_MAX_MS;
	if (delay)
		log_warnx("worker %d crash-looping; respawn in %lld ms",
		          p->index, (long long)delay);
	p->pid = -1; /* waiting for respawn; started_ms = due time */
	p->started_ms = now + delay;
	respawn_cb(-1, 0, m);
}

static void
sigchld_cb(evutil_socket_t sig, short ev, void *arg)
{
	struct master *m = arg;
	pid_t pid;
	int st;

	(void)sig;
	(void)ev;
	while ((pid = waitpid(-1, &st, WNOHANG)) > 0)
		reap(m, pid, st);
	if (m->stopping && live_procs(m) == 0)
		event_base_loopexit(m->base, NULL);
}

/* Tell every worker of older generations (or all) to drain and exit. */
static void
signal_workers(struct master *m, int all, int sig)
{
	for (int i = 0; i < MAX_PROCS; i++) {
		struct proc *p = &m->procs[i];

		if (p->pid == -1 && all)
			p->pid = 0;
		if (p->pid <= 0 || (!all && p->generation == m->generation))
			continue;
		p->exiting = 1;
		kill(p->pid, sig);
	}
}

static void
kill_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct master *m = arg;

	(void)fd;
	(void)ev;
	log_warnx("drain timeout: killing remaining workers");
	signal_workers(m, 1, SIGKILL);
}

/* SIGTERM / SIGINT: drain and stop. */
static void
sigterm_cb(evutil_socket_t sig, short ev, void *arg)
{
	struct master *m = arg;
	struct timeval tv = {m->cfg->drain_timeout_ms / 1000 + 2, 0};

	(void)ev;
	if (m->stopping)
		return;
	log_info("%s: draining and stopping", strsignal((int)sig));
	notify_send("STOPPING=1");
	m->stopping = 1;
	signal_workers(m, 1, SIGTERM);
	event_add(ev_kill, &tv);
	if (live_procs(m) == 0)
		event_base_loopexit(m->base, NULL);
}

/* SIGHUP: load the new config beside the old; on success start a new
 * generation and drain the old one; on failure keep everything. */
static void
sighup_cb(evutil_socket_t sig, short ev, void *arg)
{
	struct master *m = arg;
	struct cfg *nc;
	char *cause = NULL;

	(void)sig;
	(void)ev;
	if (m->stopping)
		return;
	notify_send("RELOADING=1");
	log_info("reloading %s", m->conf_path);
	if ((nc = cfg_load(m->conf_path, &cause)) == NULL) {
		log_warnx("reload failed, keeping the running config: %s",
		          cause ? cause : "?");
		free(cause);
		notify_send("READY=1\nSTATUS=reload failed; old config kept");
		return;
	}
	if (strcmp(nc->listen, m->cfg->listen) != 0 ||
	    strcmp(nc->tcp, m->cfg->tcp) != 0 ||
	    nc->listen_mode != m->cfg->listen_mode ||
	    strcmp(nc->listen_group, m->cfg->listen_group) != 0)
		log_warnx("listen, listen_mode, listen_group and tcp changes "
		          "need a restart; keeping the current listeners");
	if (master_table_sync(m, nc) == -1) {
		log_warnx("reload failed: health table is full");
		cfg_free(nc);
		notify_send("READY=1\nSTATUS=reload failed; old config kept");
		return;
	}
	if (strcmp(nc->state_dir, m->cfg->state_dir) != 0)
		log_warnx("state_dir changes need a restart; keeping %s",
		          m->cfg->state_dir[0] ? m->cfg->state_dir
		                               : "no spend file");
	state_restore(m);
	fleet_reload(nc);
	cfg_free(m->cfg);
	m->cfg = nc;
	secret_load(nc);
	log_init(nc->log_level, "llmfd");
	atomic_store(&m->shm.hdr->log_level, nc->log_level);
	m->generation++;
	atomic_store(&m->shm.hdr->generation, m->generation);
	spawn_generation(m);
	signal_workers(m, 0, SIGTERM);
	shm_event_add(&m->shm, SHM_EV_RELOAD, -1, "configuration reloaded");
	notify_send("READY=1\nSTATUS=generation %llu, %d workers",
	            (unsigned long long)m->generation, m->cfg->workers);
}

/* Whether a worker of an older generation is still draining (it may still
 * use a retired slot, which must not be reused under it). */
static int
old_workers_alive(const struct master *m)
{
	for (int i = 0; i < MAX_PROCS; i++)
		if (m->procs[i].pid > 0 &&
		    m->procs[i].generation != m->generation)
			return 1;
	return 0;
}

/* Log new events from the table's ring (admin changes from llmfctl,
 * fallbacks, cooldowns, circuits), free drained retired slots, and pet
 * the watchdog. */
static void
tick_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct master *m = arg;
	uint64_t head = atomic_load(&m->shm.hdr->ev_head);

	int lvl = atomic_load(&m->shm.hdr->log_level);

	(void)fd;
	(void)ev;
	if (lvl >= LOG_LVL_ERROR && lvl <= LOG_LVL_DEBUG && lvl != log_level) {
		log_level = lvl;
		log_info("log level now %s", log_level_name(lvl));
	}
	log_tick();
	if (head - ev_seen > SHM_NEVENTS)
		ev_seen = head - SHM_NEVENTS;
	for (; ev_seen < head; ev_seen++) {
		struct event_sh *e = &m->shm.events[ev_seen % SHM_NEVENTS];

		if (atomic_load(&e->seq) != ev_seen + 1)
			continue;
		log_info("event %s: %.*s", shm_event_name(e->type),
		         (int)sizeof e->text, e->text);
		hooks_event(m->cfg, &m->shm, ev_seen, e);
	}
	for (int k = 0; k < SHM_NSLOTS && !old_workers_alive(m); k++) {
		struct slot_sh *s = &m->shm.slots[k];

		if (atomic_load(&s->state) == SLOT_RETIRED &&
		    shm_inflight(s) == 0) {
			atomic_store(&s->state, SLOT_FREE);
			log_info("retired deployment %s freed", s->name);
		}
	}
	for (int k = 0; k < SHM_NCLIENTS && !old_workers_alive(m); k++) {
		struct client_sh *c = &m->shm.clients[k];

		if (atomic_load(&c->state) == SLOT_RETIRED &&
		    shm_client_inflight(c) == 0)
			atomic_store(&c->state, SLOT_FREE);
	}
	if (++ticks % 4 == 0) /* once a second */
		state_tick(m);
	if (watchdog_ms && clock_ms() - watchdog_last >= watchdog_ms / 2) {
		watchdog_last = clock_ms();
		notify_send("WATCHDOG=1");
	}
}

/* Set up signals and timers on the master's loop. */
static void
master_events(struct master *m)
{
	int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGCHLD};
	event_callback_fn cbs[] = {sigterm_cb, sigterm_cb, sighup_cb,
	                           sigchld_cb};
	struct timeval tv = {0, 250000};
	const char *wd = getenv("WATCHDOG_USEC");

	for (int i = 0; i < 4; i++) {
		ev_sig[i] = evsignal_new(m->base, sigs[i], cbs[i], m);
		evsignal_add(ev_sig[i], NULL);
	}
	signal(SIGPIPE, SIG_IGN);
	ev_tick = event_new(m->base, -1, EV_PERSIST, tick_cb, m);
	event_add(ev_tick, &tv);
	ev_respawn = evtimer_new(m->base, respawn_cb, m);
	ev_kill = evtimer_new(m->base, kill_cb, m);
	if (wd && atoll(wd) > 0)
		watchdog_ms = atoll(wd) / 1000;
}

/* Run the master until stopped; returns the exit status. */
int
master_run(struct master *m)
{
	char *cause = NULL;

	if (listen_open(m, m->cfg, &cause) == -1) {
		log_raw("%s", cause ? cause : "cannot listen");
		free(cause);
		return 1;
	}
	if (shm_create(&m->shm, m->cfg->health_table, &cause) == -1) {
		log_raw("health table: %s", cause ? cause : "?");
		free(cause);
		listen_close(m);
		return 1;
	}
	m->generation = 1;
	atomic_store(&m->shm.hdr->generation, 1);
	atomic_store(&m->shm.hdr->log_level, m->cfg->log_level);
	snprintf(m->shm.hdr->config_file, sizeof m->shm.hdr->config_file,
	         "%.*s", (int)sizeof m->shm.hdr->config_file - 1, m->cfg->file);
	if (master_table_sync(m, m->cfg) == -1)
		fatalx("health table is full");
	if (state_open(m, &cause) == -1) {
		log_raw("%s", cause ? cause : "cannot open the spend file");
		free(cause);
		shm_detach(&m->shm);
		listen_close(m);
		return 1;
	}
	if ((m->base = event_base_new()) == NULL)
		fatalx("event_base_new failed");
	master_events(m);
	hooks_init(m->base);
	secret_load(m->cfg);
	fleet_init(m->base, &m->shm, m->cfg);
	spawn_generation(m);
	log_info("llmfd ready: %d workers on %s%s%s", m->cfg->workers,
	         m->cfg->listen, m->cfg->tcp[0] ? " and " : "", m->cfg->tcp);
	notify_send("READY=1\nSTATUS=%d workers\nMAINPID=%d", m->cfg->workers,
	            (int)getpid());
	event_base_dispatch(m->base);
	listen_close(m);
	state_close(m);
	log_info("stopped");
	for (int i = 0; i < 4; i++)
		event_free(ev_sig[i]);
	event_free(ev_tick);
	event_free(ev_respawn);
	event_free(ev_kill);
	hooks_free();
	fleet_free();
	event_base_free(m->base);
	shm_detach(&m->shm);
	cfg_free(m->cfg);
	return 0;
}
