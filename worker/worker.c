/* Worker process main: one event_base, inherited listeners, pools to every
 * deployment, and drain-on-SIGTERM. */
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/event.h>

#include "common/clock.h"
#include "common/evstream.h"
#include "common/log.h"
#include "common/slab.h"
#include "common/secret.h"
#include "worker/client.h"
#include "worker/conn.h"
#include "worker/http.h"
#include "worker/gauth.h"
#include "worker/limits.h"
#include "worker/request.h"
#include "worker/upstream.h"
#include "worker/worker.h"

/* Seconds between malloc_trim calls. */
#define WORKER_TRIM_S 5
/* Idle upstream connections an idle worker keeps per deployment. */
#define WORKER_IDLE_CONNS 8
/* Allocations this large come from mmap and go back to the system when
 * freed (glibc otherwise raises the threshold up to 32 MiB after the first
 * big free, and a 30 MiB body would then stay in the heap). */
#define WORKER_MMAP_MIN (256 << 10)
/* Free heap kept at the top rather than given back at every free: a
 * 100 KB body would otherwise cost a brk pair and page faults per request
 * (malloc_trim gives it all back when the worker idles). */
#define WORKER_TRIM_MIN (8 << 20)
/* How long a draining worker must stay idle before it exits. */
#define DRAIN_LINGER_MS 300

static int64_t drain_deadline_ms;
static struct event *ev_linger;
static pid_t master_pid; /* our parent at start */

static void worker_drain_idle(struct worker *);

/* The linger ran out: leave if still idle (a request that arrived in the
 * meantime re-arms it when it ends). */
static void
worker_linger_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct worker *w = arg;

	(void)fd;
	(void)ev;
	if (w->inflight > 0)
		return;
	if (http_open() > 0) /* replies still being written */
		worker_drain_idle(w);
	else
		event_base_loopexit(w->base, NULL);
}

/*
 * Draining and idle: exit after DRAIN_LINGER_MS, not at once. The reply
 * just sent (the end of a stream included) may still sit in the
 * connection's output buffer, and a connection accepted just before we
 * stopped accepting may not have delivered its request yet; leaving now
 * would cut both.
 */
static void
worker_drain_idle(struct worker *w)
{
	struct timeval tv = {0, DRAIN_LINGER_MS * 1000};

	if (ev_linger == NULL &&
	    (ev_linger = evtimer_new(w->base, worker_linger_cb, w)) == NULL) {
		event_base_loopexit(w->base, NULL);
		return;
	}
	evtimer_add(ev_linger, &tv);
}

/* A client request finished; leave soon if draining and idle. */
void
worker_req_done(struct worker *w)
{
	w->inflight--;
	if (w->draining && w->inflight <= 0)
		worker_drain_idle(w);
}

/* SIGTERM: stop accepting, finish what is in flight, exit. */
static void
worker_sigterm(evutil_socket_t sig, short ev, void *arg)
{
	struct worker *w = arg;

	(void)sig;
	(void)ev;
	if (w->draining)
		return;
	w->draining = 1;
	drain_deadline_ms = clock_ms() + w->cfg->drain_timeout_ms;
	server_stop_accepting(w);
	req_drain(w);
	http_drain(w);
	log_info("draining %d request%s", w->inflight,
	         w->inflight == 1 ? "" : "s");
	if (w->inflight <= 0)
		worker_drain_idle(w);
}

/* Once a second: follow the live log level, notice an orphaning, and end a
 * drain that outlived its timeout. */
static void
worker_tick(evutil_socket_t fd, short ev, void *arg)
{
	struct worker *w = arg;
	int lvl = atomic_load(&w->shm->hdr->log_level);

	(void)fd;
	(void)ev;
	if (lvl >= LOG_LVL_ERROR && lvl <= LOG_LVL_DEBUG && lvl != log_level)
		log_level = lvl;
	log_tick();
	if (getppid() != master_pid) { /* re-parented: to 1, or a subreaper */
		log_warnx("master went away; exiting");
		event_base_loopexit(w->base, NULL);
	}
	if (w->draining && clock_ms() > drain_deadline_ms) {
		log_warnx("drain timeout with %d request%s in flight",
		          w->inflight, w->inflight == 1 ? "" : "s");
		event_base_loopexit(w->base, NULL);
	}
	/* give freed heap back after a burst (a few hundred µs on a small
	 * heap, so it runs under load too); with nothing in flight, first let
	 * go of what is kept for the next burst */
	if (++w->idle_ticks % WORKER_TRIM_S == 0) {
		if (w->inflight == 0) {
			req_trim();
			for (int i = 0; i < w->cfg->ndeploy; i++)
				pool_trim(w->pools[i], WORKER_IDLE_CONNS);
			slab_trim();
		}
		malloc_trim(0);
	}
}

/* Map config indexes to table slots and open a pool per deployment. */
static int
worker_pools(struct worker *w)
{
	const struct cfg *cfg = w->cfg;
	char *cause = NULL;

	w->slot_of = calloc((size_t)cfg->ndeploy, sizeof *w->slot_of);
	w->pools = calloc((size_t)cfg->ndeploy, sizeof *w->pools);
	if (w->slot_of == NULL || w->pools == NULL)
		return -1;
	for (int i = 0; i < cfg->ndeploy; i++) {
		if ((w->slot_of[i] = shm_find(w->shm, cfg->deploy[i].name)) <
		    0) {
			log_warnx("deployment %s has no table slot",
			          cfg->deploy[i].name);
			return -1;
		}
		w->pools[i] =
		    pool_new(w->base, w->dns, &cfg->deploy[i], &cause);
		if (w->pools[i] == NULL) {
			log_warnx("%s", cause ? cause : "pool_new failed");
			free(cause);
			return -1;
		}
	}
	if ((w->gauth = gauth_new(w->base, w->dns, cfg, &cause)) == NULL) {
		log_warnx("%s", cause ? cause : "gauth_new failed");
		free(cause);
		return -1;
	}
	return 0;
}

static void
worker_free(struct worker *w)
{
	req_free_all(w);
	http_free_all();
	conn_free();
	gauth_free(w->gauth);
	for (int i = 0; w->pools && i < w->cfg->ndeploy; i++)
		pool_free(w->pools[i]);
	free(w->pools);
	free(w->slot_of);
	free(w->client_slot);
	if (w->ev_term)
		event_free(w->ev_term);
	if (w->ev_tick)
		event_free(w->ev_tick);
	if (w->ev_reaccept)
		event_free(w->ev_reaccept);
	if (ev_linger)
		event_free(ev_linger);
	ev_linger = NULL;
	if (w->dns)
		evdns_base_free(w->dns, 0);
	event_base_free(w->base);
	accesslog_close();
}

/* The worker's event base. epoll's changes go through libevent's change
 * list, applied once per loop round: an event turned off and back on in
 * one callback costs no epoll_ctl. The list must not see two descriptors
 * for one open file (dup): a worker makes none. */
static struct event_base *
worker_base(void)
{
	struct event_config *ec = event_config_new();
	struct event_base *base;

	if (ec == NULL)
		return NULL;
	event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	base = event_base_new_with_config(ec);
	event_config_free(ec);
	return base;
}

/* Run a worker until it is told to stop. Returns the exit status. */
int
worker_main(const struct cfg *cfg, struct shm *shm, int index, const int *fds,
            int nfds, const sigset_t *mask)
{
	static struct worker w;
	struct timeval sec = {1, 0};
	sigset_t stop;
	char name[32];

	memset(&w, 0, sizeof w);
	master_pid = getppid();
	w.cfg = cfg;
	w.shm = shm;
	w.index = index;
	w.rng = (uint64_t)clock_us() ^ ((uint64_t)getpid() << 32);
	snprintf(name, sizeof name, "worker %d", index);
	log_procinit(name);
	mallopt(M_MMAP_THRESHOLD, WORKER_MMAP_MIN);
	mallopt(M_TRIM_THRESHOLD, WORKER_TRIM_MIN);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGINT, SIG_IGN); /* the master turns ^C into SIGTERM */
	signal(SIGHUP, SIG_IGN);
	if ((w.base = worker_base()) == NULL)
		fatalx("event_base_new failed");
	w.dns = evdns_base_new(w.base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
	                                   EVDNS_BASE_DISABLE_WHEN_INACTIVE);
	if (w.dns == NULL && (w.dns = evdns_base_new(w.base, 0)) == NULL)
		fatalx("evdns_base_new failed");
	for (int i = 0; i < nfds && i < 8; i++)
		w.listen_fd[w.nlisten++] = fds[i];
	if (worker_pools(&w) == -1 || limits_init(&w) == -1 ||
	    server_setup(&w) == -1)
		return 2;
	accesslog_open(cfg);
	secret_load(cfg);
	up_set_max_reply(cfg->max_response_bytes);
	/* the frames one upstream read brings go to their client at once */
	up_set_read_hook(http_cork);
	sse_set_max_event((size_t)cfg->max_event_bytes);
	evs_set_max((size_t)cfg->max_event_bytes + EVS_MAX_HEADERS +
	            EVS_MIN_MSG);
	w.ev_term = evsignal_new(w.base, SIGTERM, worker_sigterm, &w);
	w.ev_tick = event_new(w.base, -1, EV_PERSIST, worker_tick, &w);
	evsignal_add(w.ev_term, NULL);
	event_add(w.ev_tick, &sec);
	/* what came while blocked is delivered now: SIGTERM to its handler */
	sigprocmask(SIG_SETMASK, mask, NULL);
	log_debug("serving");
	event_base_dispatch(w.base);
	log_debug("exiting");
	/* done: freeing the signal events puts back the default action, so a
	 * SIGTERM still on its way (a reload's, after a drain that ended at
	 * once) would kill the worker; held off, it dies with the process */
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	sigaddset(&stop, SIGHUP);
	sigprocmask(SIG_BLOCK, &stop, NULL);
	worker_free(&w);
	return 0;
}
