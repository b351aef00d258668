/* Failover event hooks, run by the master (never a worker, so a slow hook
 * cannot delay a request): on_event_exec forks a program that reads the
 * event as one JSON object on stdin; on_event_webhook POSTs the same JSON
 * from the master's loop. Both are bounded: at most HOOK_MAX_RUN at once,
 * HOOK_QUEUE more waiting, the rest dropped and counted. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>

#include "common/buf.h"
#include "common/json.h"
#include "common/log.h"
#include "common/spend.h"
#include "daemon/daemon.h"

#define HOOK_MAX_RUN    4
#define HOOK_QUEUE      256
#define HOOK_TIMEOUT_S  5
#define HOOK_TRIES      3
#define HOOK_BACKOFF_MS 500
#define HOOK_JSON_MAX   2048 /* < PIPE_BUF: one write into an empty pipe */

/* Waiting jobs (JSON texts, heap), oldest first. */
struct hook_queue {
	char *item[HOOK_QUEUE];
	int head, n;
	uint64_t dropped;
};

/* A running exec hook. */
struct hook_proc {
	pid_t pid; /* 0 = free */
	int killed;
	struct event *timer;
};

#define POST_FREE 0
#define POST_SENT 1 /* request in flight */
#define POST_DONE 2 /* callback ran; the timer cleans up */
#define POST_WAIT 3 /* backoff before the next try */

/* A webhook delivery. */
struct hook_post {
	int state;
	char *body;
	int tries;
	int code; /* last HTTP status, 0 = no reply */
	struct evhttp_connection *conn;
	struct event *timer;
};

static struct {
	struct event_base *base;
	struct evdns_base *dns;
	char exec[PATH_MAX];
	char url[CFG_URL_MAX];
	int url_ok;
	char host[256], path[CFG_URL_MAX];
	uint16_t port;
	struct hook_proc procs[HOOK_MAX_RUN];
	struct hook_post posts[HOOK_MAX_RUN];
	struct hook_queue qexec, qpost;
} hk;

static void hook_exec_timeout(evutil_socket_t, short, void *);
static void hook_post_timer(evutil_socket_t, short, void *);

/* Set up timers on the master's loop. */
void
hooks_init(struct event_base *base)
{
	hk.base = base;
	for (int i = 0; i < HOOK_MAX_RUN; i++) {
		hk.procs[i].timer =
		    evtimer_new(base, hook_exec_timeout, &hk.procs[i]);
		hk.posts[i].timer =
		    evtimer_new(base, hook_post_timer, &hk.posts[i]);
		if (hk.procs[i].timer == NULL || hk.posts[i].timer == NULL)
			fatalx("evtimer_new failed");
	}
}

/* Queue a job; drops it (counted, logged sparsely) when the queue is full. */
static void
hook_queue_push(struct hook_queue *q, char *job, const char *what)
{
	if (q->n == HOOK_QUEUE) {
		q->dropped++;
		if ((q->dropped & (q->dropped - 1)) == 0)
			log_warnx("%s queue full: %llu event(s) dropped", what,
			          (unsigned long long)q->dropped);
		free(job);
		return;
	}
	q->item[(q->head + q->n++) % HOOK_QUEUE] = job;
}

/* The oldest waiting job, or NULL. */
static char *
hook_queue_pop(struct hook_queue *q)
{
	char *job;

	if (q->n == 0)
		return NULL;
	job = q->item[q->head];
	q->head = (q->head + 1) % HOOK_QUEUE;
	q->n--;
	return job;
}

/* Follow the config: exec path and webhook URL (reload may change them). */
static void
hooks_configure(const struct cfg *cfg)
{
	const char *why;
	int tls = 0;

	snprintf(hk.exec, sizeof hk.exec, "%s", cfg->on_event_exec);
	if (strcmp(hk.url, cfg->on_event_webhook) == 0)
		return;
	snprintf(hk.url, sizeof hk.url, "%s", cfg->on_event_webhook);
	hk.url_ok = 0;
	if (hk.url[0] == '\0')
		return;
	if (cfg_url_split(hk.url, &tls, hk.host, sizeof hk.host, &hk.port,
	                  hk.path, sizeof hk.path, &why) == -1)
		log_warnx("on_event_webhook: %s; webhook off", why);
	else if (tls)
		log_warnx("on_event_webhook: https is not supported; use an "
		          "http:// endpoint (webhook off)");
	else
		hk.url_ok = 1;
}

/* The event as one JSON object (heap), or NULL. */
static char *
hook_json(const struct event_sh *e, const char *dep, uint64_t seq)
{
	struct buf b = {0};
	struct jw jw;
	time_t t = (time_t)(e->wall_ms / 1000);
	struct tm tm;
	char ts[24], when[32];

	gmtime_r(&t, &tm);
	strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(when, sizeof when, "%s.%03dZ", ts, (int)(e->wall_ms % 1000));
	jw_init(&jw, &b);
	jw_obj(&jw);
	jw_key(&jw, "type");
	jw_cstr(&jw, shm_event_name(e->type));
	jw_key(&jw, "time");
	jw_cstr(&jw, when);
	jw_key(&jw, "deployment");
	jw_cstr(&jw, dep);
	jw_key(&jw, "text");
	jw_str(&jw, e->text, strnlen(e->text, sizeof e->text));
	if (e->client[0] != '\0') {
		jw_key(&jw, "client");
		jw_str(&jw, e->client, strnlen(e->client, sizeof e->client));
	}
	if (e->nusd > 0) {
		char usd[32];

		spend_fmt_usd(usd, sizeof usd, (uint64_t)e->nusd);
		jw_key(&jw, "usd");
		jw_raw(&jw, usd, strlen(usd));
	}
	jw_key(&jw, "seq");
	jw_int(&jw, (long long)seq);
	jw_obj_end(&jw);
	buf_addc(&b, '\n');
	if (b.oom || b.len >= HOOK_JSON_MAX) {
		buf_free(&b);
		return NULL;
	}
	buf_cstr(&b);
	return b.data;
}

/* In the child: stdin from the pipe, a clean environment, then exec. */
static void __attribute__((noreturn))
hook_child(int in, const sigset_t *mask, const char *json)
{
	char ev[64], *argv[] = {hk.exec, NULL};
	char *envp[] = {"PATH=/usr/local/bin:/usr/bin:/bin", ev, NULL};
	const char *type = strstr(json, "\"type\":\"");

	snprintf(ev, sizeof ev, "LLMFD_EVENT=%.*s",
	         type ? (int)strcspn(type + 8, "\"") : 0, type ? type + 8 : "");
	setpgid(0, 0);
	for (int s = 1; s < NSIG; s++)
		signal(s, SIG_DFL);
	sigprocmask(SIG_SETMASK, mask, NULL);
	if (in == STDIN_FILENO)
		fcntl(in, F_SETFD, 0);
	else if (dup2(in, STDIN_FILENO) == -1)
		_exit(126);
	dup2(STDERR_FILENO, STDOUT_FILENO);
	close_range(3, ~0U, 0);
	execve(hk.exec, argv, envp);
	_exit(127);
}

/* Fork the exec hook with json on its stdin; 0 or -1. */
static int
hook_exec_start(struct hook_proc *p, const char *json)
{
	struct timeval tv = {HOOK_TIMEOUT_S, 0};
	size_t len = strlen(json);
	sigset_t all, old;
	int fd[2];
	pid_t pid;

	if (pipe2(fd, O_CLOEXEC) == -1) {
		log_warn("on_event_exec: pipe2 failed");
		return -1;
	}
	/* len < PIPE_BUF: the empty pipe takes it all without blocking */
	if (write(fd[1], json, len) != (ssize_t)len)
		log_warn("on_event_exec: write to pipe failed");
	close(fd[1]);
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, &old);
	if ((pid = fork()) == 0)
		hook_child(fd[0], &old, json);
	sigprocmask(SIG_SETMASK, &old, NULL);
	close(fd[0]);
	if (pid == -1) {
		log_warn("on_event_exec: fork failed");
		return -1;
	}
	setpgid(pid, pid); /* also in the child: no race on kill(-pid) */
	p->pid = pid;
	p->killed = 0;
	evtimer_add(p->timer, &tv);
	log_debug("on_event_exec: %s started, pid %d", hk.exec, (int)pid);
	return 0;
}

/* Start queued exec jobs while there is room. */
static void
hook_exec_pump(void)
{
	for (int i = 0; i < HOOK_MAX_RUN && hk.qexec.n; i++) {
		char *job;

		if (hk.procs[i].pid != 0)
			continue;
		job = hook_queue_pop(&hk.qexec);
		if (hk.exec[0] != '\0')
			hook_exec_start(&hk.procs[i], job);
		free(job);
	}
}

/* An exec hook outlived its time: kill its process group. */
static void
hook_exec_timeout(evutil_socket_t fd, short ev, void *arg)
{
	struct hook_proc *p = arg;

	(void)fd;
	(void)ev;
	if (p->pid <= 0)
		return;
	log_warnx("on_event_exec: pid %d still running after %d s; killed",
	          (int)p->pid, HOOK_TIMEOUT_S);
	p->killed = 1;
	kill(-p->pid, SIGKILL);
}

/* SIGCHLD for pid: 1 if it was an exec hook (now reaped), else 0. */
int
hooks_reap(pid_t pid, int st)
{
	for (int i = 0; i < HOOK_MAX_RUN; i++) {
		struct hook_proc *p = &hk.procs[i];

		if (p->pid != pid)
			continue;
		evtimer_del(p->timer);
		if (WIFSIGNALED(st) && !p->killed)
			log_warnx("on_event_exec: pid %d killed by signal %d",
			          (int)pid, WTERMSIG(st));
		else if (WIFEXITED(st) && WEXITSTATUS(st) != 0)
			log_warnx("on_event_exec: pid %d exited with code %d",
			          (int)pid, WEXITSTATUS(st));
		p->pid = 0;
		hook_exec_pump();
		return 1;
	}
	return 0;
}

/* The webhook answered (or failed): clean up from the timer, not here. */
static void
hook_post_done(struct evhttp_request *req, void *arg)
{
	struct hook_post *p = arg;

	p->code = req ? evhttp_request_get_response_code(req) : 0;
	p->state = POST_DONE;
	event_active(p->timer, EV_TIMEOUT, 1);
}

/* Send one try of p's body; -1 if it could not even be queued. */
static int
hook_post_send(struct hook_post *p)
{
	struct evhttp_request *req;
	struct evkeyvalq *h;
	char host[300], len[24];

	p->tries++;
	p->conn = evhttp_connection_base_new(hk.base, hk.dns, hk.host, hk.port);
	if (p->conn == NULL)
		return -1;
	evhttp_connection_set_timeout(p->conn, HOOK_TIMEOUT_S);
	if ((req = evhttp_request_new(hook_post_done, p)) == NULL)
		return -1;
	h = evhttp_request_get_output_headers(req);
	snprintf(host, sizeof host, strchr(hk.host, ':') ? "[%s]:%u" : "%s:%u",
	         hk.host, (unsigned)hk.port);
	snprintf(len, sizeof len, "%zu", strlen(p->body));
	evhttp_add_header(h, "Host", host);
	evhttp_add_header(h, "Content-Type", "application/json");
	evhttp_add_header(h, "Content-Length", len);
	evhttp_add_header(h, "User-Agent", "llmfd");
	evhttp_add_header(h, "Connection", "close");
	evbuffer_add(evhttp_request_get_output_buffer(req), p->body,
	             strlen(p->body));
	p->state = POST_SENT;
	/* evhttp_make_request frees req itself when it fails */
	return evhttp_make_request(p->conn, req, EVHTTP_REQ_POST,
	                           hk.path[0] ? hk.path : "/");
}

/* Free p's connection and body; start the next queued delivery. */
static void
hook_post_finish(struct hook_post *p)
{
	free(p->body);
	p->body = NULL;
	p->state = POST_FREE;
	if ((p->body = hook_queue_pop(&hk.qpost)) == NULL)
		return;
	p->tries = 0;
	if (hook_post_send(p) == -1) {
		p->state = POST_DONE;
		p->code = 0;
		event_active(p->timer, EV_TIMEOUT, 1);
	}
}

/* After a try: retry with backoff, or give up; after a backoff: send. */
static void
hook_post_timer(evutil_socket_t fd, short ev, void *arg)
{
	struct hook_post *p = arg;
	int64_t ms = (int64_t)HOOK_BACKOFF_MS << (p->tries - 1);
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

	(void)fd;
	(void)ev;
	if (p->conn) {
		evhttp_connection_free(p->conn);
		p->conn = NULL;
	}
	if (p->state == POST_DONE && p->code / 100 == 2) {
		hook_post_finish(p);
	} else if (p->state == POST_DONE && p->tries < HOOK_TRIES) {
		log_info("on_event_webhook: try %d failed (%s %d); retrying",
		         p->tries, p->code ? "status" : "no reply", p->code);
		p->state = POST_WAIT;
		evtimer_add(p->timer, &tv);
	} else if (p->state == POST_DONE) {
		log_warnx("on_event_webhook: giving up after %d tries (last: "
		          "%s %d)",
		          p->tries, p->code ? "status" : "no reply", p->code);
		hook_post_finish(p);
	} else if (hook_post_send(p) == -1) {
		p->state = POST_DONE;
		p->code = 0;
		event_active(p->timer, EV_TIMEOUT, 1);
	}
}

/* Queue a webhook delivery and start it if a slot is free. */
static void
hook_post(char *json)
{
	if (hk.dns == NULL)
		hk.dns = evdns_base_new(hk.base,
		                        EVDNS_BASE_INITIALIZE_NAMESERVERS |
		                            EVDNS_BASE_DISABLE_WHEN_INACTIVE);
	hook_queue_push(&hk.qpost, json, "on_event_webhook");
	for (int i = 0; i < HOOK_MAX_RUN; i++)
		if (hk.posts[i].state == POST_FREE) {
			hook_post_finish(&hk.posts[i]); /* takes the next job */
			return;
		}
}

/* One new event from the table's ring: hand it to the configured hooks. */
void
hooks_event(const struct cfg *cfg, const struct shm *shm, uint64_t seq,
            const struct event_sh *e)
{
	struct slot_sh s;
	const char *dep = NULL;
	char *json;

	hooks_configure(cfg);
	if (hk.exec[0] == '\0' && !hk.url_ok)
		return;
	if (e->slot >= 0 && e->slot < SHM_NSLOTS) {
		shm_read_cfg(&shm->slots[e->slot], &s);
		dep = s.name;
	}
	if ((json = hook_json(e, dep, seq)) == NULL) {
		log_warnx("hooks: event %llu too large; dropped",
		          (unsigned long long)seq);
		return;
	}
	if (hk.url_ok) {
		char *copy = hk.exec[0] ? strdup(json) : json;

		if (copy)
			hook_post(copy);
	}
	if (hk.exec[0] != '\0') {
		hook_queue_push(&hk.qexec, json, "on_event_exec");
		hook_exec_pump();
	}
}

/* In a forked worker: close the sockets of webhook deliveries in flight
 * (the worker never uses them, and must not hold them open). */
void
hooks_child(void)
{
	struct bufferevent *bev;
	evutil_socket_t fd;

	for (int i = 0; i < HOOK_MAX_RUN; i++)
		if (hk.posts[i].conn != NULL &&
		    (bev = evhttp_connection_get_bufferevent(
		         hk.posts[i].conn)) != NULL &&
		    (fd = bufferevent_getfd(bev)) >= 0)
			close(fd);
}

/* Master exit: stop running hooks and free every delivery and job. */
void
hooks_free(void)
{
	char *job;

	for (int i = 0; i < HOOK_MAX_RUN; i++) {
		if (hk.procs[i].pid > 0)
			kill(-hk.procs[i].pid, SIGTERM);
		if (hk.posts[i].conn)
			evhttp_connection_free(hk.posts[i].conn);
		free(hk.posts[i].body);
		if (hk.procs[i].timer)
			event_free(hk.procs[i].timer);
		if (hk.posts[i].timer)
			event_free(hk.posts[i].timer);
	}
	while ((job = hook_queue_pop(&hk.qexec)) != NULL)
		free(job);
	while ((job = hook_queue_pop(&hk.qpost)) != NULL)
		free(job);
	if (hk.dns)
		evdns_base_free(hk.dns, 0);
	memset(&hk, 0, sizeof hk);
}
