/* Live operations, end to end: llmfctl weight/drain/cooldown/reset, reload
 * (bad, under load, keeping counters), crash-loop backoff, sd_notify,
 * socket activation, table version and permission checks, exit codes. */
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "common/shm.h"
#include "tests/integration/harness.h"

#define CHAT   "/v1/chat/completions"
#define HI     "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"
#define BODY   "{\"model\":\"g\"," HI "}"
#define STREAM "{\"model\":\"g\"," HI ",\"stream\":true}"

/* Two deployments a and b in group g; %s is the strategy, then the ports. */
#define OPS_CONF                                                               \
	"daemon = { workers = 2; listen = \"llmfd.sock\";\n"                   \
	"  health_table = \"health\"; log_level = \"info\";\n"                 \
	"  drain_timeout_ms = 20000; };\n"                                     \
	"router = { strategy = \"%s\"; num_retries = 1; backoff_base_ms = "    \
	"10;\n  backoff_max_ms = 50; timeout_ms = 10000;\n"                    \
	"  attempt_timeout_ms = 5000; };\n"                                    \
	"deployments = (\n"                                                    \
	"  { name = \"a\"; group = \"g\"; provider = \"openai\"; model = "     \
	"\"m\";\n    base_url = \"http://127.0.0.1:%d/v1\"; },\n"              \
	"  { name = \"b\"; group = \"g\"; provider = \"openai\"; model = "     \
	"\"m\";\n    base_url = \"http://127.0.0.1:%d/v1\"; }\n);\n"

TestSuite(ops, .init = h_setup, .fini = h_teardown, .timeout = 60);

static struct h_mock ma, mb;
static pid_t master;

/* Start mocks a and b (a with extra args) and the daemon. */
static void
start_ops(const char *strategy, const char *const *a_args)
{
	h_mock_startv(&ma, "a", a_args);
	h_mock_start(&mb, "b", NULL);
	master = h_llmfd_start(OPS_CONF, strategy, ma.port, mb.port);
}

/* The deployment that answered a request, "" if none. */
static const char *
dep_of(const struct h_resp *r)
{
	const char *d = h_header(r, "x-llmfd-deployment");

	return d ? d : "";
}

/* Send a request; assert it succeeded; return the deployment name. */
static const char *
chat_ok(const char *body)
{
	struct h_resp *r = h_unix("POST", CHAT, body);

	cr_assert_eq(r->status, 200, "%s", h_desc(r));
	return dep_of(r);
}

/* Run llmfctl -c CONF with up to three arguments; output in *out. */
static int
ctl(char **out, const char *a1, const char *a2, const char *a3)
{
	return h_run(out, h_bin("llmfctl"), "-c", h_conf(), a1, a2, a3, NULL);
}

/* status --json as text (asserted to succeed and be JSON). */
static const char *
status_json(void)
{
	char *out;
	int rc = ctl(&out, "status", "--json", NULL);

	cr_assert_eq(rc, 0, "status --json exit %d:\n%s", rc, out);
	cr_assert(h_json_valid(out), "not JSON:\n%s", out);
	return out;
}

/* Index of deployment dep in status JSON js, or -1. */
static int
json_dep(const char *js, const char *dep)
{
	int n = h_json_count(js, "deployments");

	for (int i = 0; i < n; i++) {
		const char *name = h_json(js, h_fmt("deployments.%d.name", i));
		if (name != NULL && strcmp(name, dep) == 0)
			return i;
	}
	return -1;
}

/* A field of deployment dep in the current status, or dflt. */
static long
dep_long(const char *dep, const char *field, long dflt)
{
	const char *js = status_json();
	int i = json_dep(js, dep);

	return i < 0 ? dflt
	             : h_json_long(js, h_fmt("deployments.%d.%s", i, field),
	                           dflt);
}

/* Poll status --json until generation is at least want; the last seen. */
static long
wait_generation(long want, int timeout_ms)
{
	long end = h_now_ms() + timeout_ms, g;

	while ((g = h_json_long(status_json(), "generation", -1)) < want &&
	       h_now_ms() < end)
		h_sleep_ms(50);
	return g;
}

/* Poll the daemon log for needle. */
static bool
wait_log(const char *needle, int timeout_ms)
{
	long end = h_now_ms() + timeout_ms;

	while (!h_log_has(needle)) {
		if (h_now_ms() >= end)
			return false;
		h_sleep_ms(50);
	}
	return true;
}

/* Weight 0 must stop every pick of a deployment at once, in every
 * worker, and --reset must restore the configured weight. */
Test(ops, weight_zero_stops_traffic_and_reset_restores)
{
	char *out;
	int n_a = 0;

	start_ops("weighted", NULL);
	cr_assert_eq(ctl(&out, "weight", "a", "0"), 0, "%s", out);
	for (int i = 0; i < 20; i++) {
		const char *d = chat_ok(BODY);
		cr_assert_str_eq(d, "b", "request %d went to %s after weight 0",
		                 i, d);
	}
	cr_assert_eq(h_mock_stat(&ma, "requests"), 0);
	cr_assert_eq(ctl(&out, "weight", "a", "--reset"), 0, "%s", out);
	for (int i = 0; i < 20; i++)
		n_a += strcmp(chat_ok(BODY), "a") == 0;
	cr_assert_gt(n_a, 0, "a got no traffic after weight --reset");
	cr_assert_eq(dep_long("a", "weight", -1), 1);
	cr_assert(wait_log("weight a 1 -> 0", 2000), "change not logged");
}

/* In a forked child: send one streaming request, exit 0 if it completed
 * with [DONE] from deployment a, else 1. */
static pid_t
stream_in_child(void)
{
	pid_t pid = fork();

	cr_assert_neq(pid, -1);
	if (pid == 0) {
		struct h_resp *r = h_unix("POST", CHAT, STREAM);
		bool ok = r->status == 200 && r->complete &&
		          strstr(r->body, "data: [DONE]") != NULL &&
		          strcmp(dep_of(r), "a") == 0;
		if (!ok)
			fprintf(stderr, "stream: %s\n", h_desc(r));
		_exit(ok ? 0 : 1);
	}
	return pid;
}

/* Drain lets a slow stream in flight finish but sends every new request
 * elsewhere; undrain brings traffic back. */
Test(ops, drain_finishes_inflight_stream_takes_no_new)
{
	const char *args[] = {"--chunks", "10", "--chunk-delay-ms", "200",
	                      NULL};
	char *out;
	int st;

	start_ops("ordered", args);
	pid_t kid = stream_in_child();
	cr_assert_eq(h_mock_wait_stat(&ma, "requests", 1, 3000), 1,
	             "the stream did not reach a");
	cr_assert_eq(ctl(&out, "drain", "a", NULL), 0, "%s", out);
	for (int i = 0; i < 5; i++)
		cr_assert_str_eq(chat_ok(BODY), "b", "request %d after drain",
		                 i);
	cr_assert_eq(h_mock_stat(&ma, "requests"), 1, "drained a got traffic");
	cr_assert_eq(waitpid(kid, &st, 0), kid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
	          "the in-flight stream did not finish cleanly");
	cr_assert_eq(ctl(&out, "undrain", "a", NULL), 0, "%s", out);
	cr_assert_str_eq(chat_ok(BODY), "a", "undrained a got no traffic");
	cr_assert(wait_log("drain a", 2000), "drain not logged");
}

/* A manual cooldown moves traffic away; reset brings it straight back. */
Test(ops, cooldown_moves_traffic_reset_restores)
{
	char *out;

	start_ops("ordered", NULL);
	cr_assert_str_eq(chat_ok(BODY), "a");
	cr_assert_eq(ctl(&out, "cooldown", "a", "30"), 0, "%s", out);
	for (int i = 0; i < 5; i++)
		cr_assert_str_eq(chat_ok(BODY), "b", "request %d in cooldown",
		                 i);
	cr_assert_gt(dep_long("a", "cooldown_remaining_s", 0), 20);
	cr_assert_eq(ctl(&out, "reset", "a", NULL), 0, "%s", out);
	cr_assert_str_eq(chat_ok(BODY), "a", "a not back after reset");
	cr_assert_eq(dep_long("a", "consecutive_failures", -1), 0);
	cr_assert(wait_log("cooldown a 30s", 2000), "cooldown not logged");
	cr_assert(wait_log("reset a", 2000), "reset not logged");
}

/* A reload with an invalid file keeps the running config and generation
 * and logs the reason. */
Test(ops, bad_reload_keeps_old_config)
{
	char *out;

	start_ops("ordered", NULL);
	cr_assert_eq(h_json_long(status_json(), "generation", -1), 1);
	/* the operator's edit broke the syntax at the end of the file */
	h_write("llmfd.conf",
	        OPS_CONF "fallbacks = ( { group = \"g\"; to = [\n", "ordered",
	        ma.port, mb.port);
	/* llmfctl still signals the daemon, but says the reload will fail */
	cr_assert_eq(ctl(&out, "reload", NULL, NULL), 1, "%s", out);
	cr_assert(strstr(out, "sent SIGHUP") != NULL, "%s", out);
	cr_assert(strstr(out, "keep its running configuration") != NULL, "%s",
	          out);
	cr_assert(wait_log("reload failed", 3000), "no reason logged:\n%s",
	          h_log());
	cr_assert(h_log_has("llmfd.conf:"), "reason lacks FILE:LINE:\n%s",
	          h_log());
	for (int i = 0; i < 5; i++)
		chat_ok(BODY);
	cr_assert_eq(h_json_long(status_json(), "generation", -1), 1,
	             "generation moved on a failed reload");
	cr_assert(h_alive(master));
}

/* In a forked child: requests in a loop (streaming when stream) until
 * DIR/stop exists; exits with the number of failures (at most 100). */
static pid_t
client_loop(bool stream)
{
	pid_t pid = fork();

	cr_assert_neq(pid, -1);
	if (pid != 0)
		return pid;
	int fails = 0, n = 0;
	while (access(h_path("stop"), F_OK) != 0 && fails < 100) {
		struct h_resp *r = h_unix("POST", CHAT, stream ? STREAM : BODY);
		bool ok = r->status == 200 && r->complete &&
		          (!stream || strstr(r->body, "data: [DONE]") != NULL);
		n++;
		if (!ok && fails++ < 5)
			fprintf(stderr, "client %d request %d failed: %s\n",
			        (int)getpid(), n, h_desc(r));
	}
	fprintf(stderr, "client %d: %d requests, %d failed\n", (int)getpid(), n,
	        fails);
	_exit(n == 0 ? 101 : fails);
}

/* Five reloads while four clients send requests lose no request. */
Test(ops, reload_under_load_loses_nothing)
{
	const char *args[] = {"--chunks", "5", "--chunk-delay-ms", "20", NULL};
	pid_t kids[4];
	char *out;
	int failed = 0;

	start_ops("weighted", args);
	for (int i = 0; i < 4; i++)
		kids[i] = client_loop(i % 2 == 1);
	h_sleep_ms(300);
	for (int k = 0; k < 5; k++) {
		cr_assert_eq(ctl(&out, "reload", NULL, NULL), 0, "%s", out);
		cr_assert_eq(wait_generation(k + 2, 5000), k + 2,
		             "reload %d not applied", k + 1);
		h_sleep_ms(300);
	}
	h_write("stop", "1\n");
	for (int i = 0; i < 4; i++) {
		int st;
		cr_assert_eq(waitpid(kids[i], &st, 0), kids[i]);
		cr_assert(WIFEXITED(st), "client %d died: 0x%x", i, st);
		cr_assert_neq(WEXITSTATUS(st), 101, "client %d sent nothing",
		              i);
		failed += WEXITSTATUS(st);
	}
	cr_assert_eq(failed, 0, "%d requests failed across 5 reloads", failed);
	cr_assert(h_alive(master));
}

/* A reload keeps the counters of a surviving deployment, adds a new one
 * and retires (or frees) a removed one. */
Test(ops, reload_keeps_counters_of_survivors)
{
	char *out;

	start_ops("ordered", NULL);
	for (int i = 0; i < 5; i++)
		cr_assert_str_eq(chat_ok(BODY), "a");
	long before = dep_long("a", "requests", -1);
	cr_assert_geq(before, 5);
	cr_assert_eq(ctl(&out, "weight", "a", "7"), 0, "%s", out);
	h_write(
	    "llmfd.conf",
	    "daemon = { workers = 2; listen = \"llmfd.sock\";\n"
	    "  health_table = \"health\"; };\n"
	    "deployments = (\n"
	    "  { name = \"a\"; group = \"g\"; provider = \"openai\"; "
	    "model = \"m\";\n    base_url = \"http://127.0.0.1:%d/v1\"; },\n"
	    "  { name = \"c\"; group = \"g\"; provider = \"openai\"; "
	    "model = \"m\";\n    base_url = \"http://127.0.0.1:%d/v1\"; }\n"
	    ");\n",
	    ma.port, mb.port);
	cr_assert_eq(ctl(&out, "reload", NULL, NULL), 0, "%s", out);
	cr_assert_eq(wait_generation(2, 5000), 2, "reload not applied:\n%s",
	             h_log());
	const char *js = status_json();
	int ia = json_dep(js, "a"), ib = json_dep(js, "b"),
	    ic = json_dep(js, "c");
	cr_assert_geq(ia, 0, "a vanished:\n%s", js);
	cr_assert_geq(h_json_long(js, h_fmt("deployments.%d.requests", ia), -1),
	              before, "a's counters reset:\n%s", js);
	cr_assert_eq(h_json_long(js, h_fmt("deployments.%d.weight", ia), -1), 7,
	             "a's live weight lost:\n%s", js);
	cr_assert_geq(ic, 0, "new deployment c missing:\n%s", js);
	cr_assert_eq(h_json_long(js, h_fmt("deployments.%d.requests", ic), -1),
	             0, "c not fresh:\n%s", js);
	if (ib >= 0) {
		const char *s = h_json(js, h_fmt("deployments.%d.state", ib));
		cr_assert(s != NULL && strcmp(s, "retired") == 0,
		          "removed b is %s", s ? s : "?");
	}
	cr_assert_str_eq(chat_ok(BODY), "a");
	cr_assert_geq(dep_long("a", "requests", -1), before + 1);
}

/* The "respawn in N ms" delays logged so far, in order; their count. */
static int
respawn_delays(long *v, int max)
{
	const char *p = h_log(), *key = "crash-looping; respawn in ";
	int n = 0;

	while (p && n < max && (p = strstr(p, key)) != NULL) {
		p += strlen(key);
		v[n++] = atol(p);
	}
	return n;
}

/* Whether pid is in the list. */
static bool
in_list(pid_t pid, const pid_t *l, int n)
{
	for (int i = 0; i < n; i++)
		if (l[i] == pid)
			return true;
	return false;
}

/* A worker killed again and again just after starting is respawned after
 * a growing delay, and the restarts are counted. */
Test(ops, crash_loop_backs_off)
{
	pid_t seen[64], now[16], victim = 0;
	int nseen, k;
	long d[16];

	start_ops("ordered", NULL);
	nseen = h_children(master, seen, 16);
	cr_assert_eq(nseen, 2, "%d workers", nseen);
	victim = seen[0];
	for (int round = 0; round < 4; round++) {
		cr_assert_eq(kill(victim, SIGKILL), 0);
		long end = h_now_ms() + 5000;
		victim = 0;
		while (victim == 0 && h_now_ms() < end) {
			k = h_children(master, now, 16);
			for (int i = 0; i < k; i++)
				if (!in_list(now[i], seen, nseen))
					victim = now[i];
			if (victim == 0)
				h_sleep_ms(5);
		}
		cr_assert_neq(victim, 0, "no respawn after kill %d", round + 1);
		seen[nseen++] = victim;
	}
	h_sleep_ms(300);
	int n = respawn_delays(d, 16);
	cr_assert_geq(n, 3, "backoff logged %d times:\n%s", n, h_log());
	for (int i = 1; i < n; i++)
		cr_assert_gt(d[i], d[i - 1], "delay %ld then %ld: not growing",
		             d[i - 1], d[i]);
	cr_assert_eq(h_json_long(status_json(), "worker_restarts", -1), 4);
	chat_ok(BODY);
}

/* Bind a datagram socket at DIR/notify.sock; its fd. */
static int
notify_bind(void)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	cr_assert_geq(fd, 0);
	snprintf(sun.sun_path, sizeof sun.sun_path, "%s",
	         h_path("notify.sock"));
	cr_assert_eq(bind(fd, (struct sockaddr *)&sun, sizeof sun), 0, "%s",
	             strerror(errno));
	return fd;
}

/* Read datagrams until one contains want; everything read is appended to
 * *all. */
static bool
notify_expect(int fd, const char *want, char **all, int timeout_ms)
{
	long end = h_now_ms() + timeout_ms;
	char msg[1024];

	for (;;) {
		long left = end - h_now_ms();
		struct pollfd p = {fd, POLLIN, 0};
		if (left <= 0 || poll(&p, 1, (int)left) <= 0)
			return false;
		ssize_t n = recv(fd, msg, sizeof msg - 1, 0);
		if (n <= 0)
			continue;
		msg[n] = '\0';
		*all = h_fmt("%s[%s]", *all, msg);
		if (strstr(msg, want) != NULL)
			return true;
	}
}

/* llmfd tells $NOTIFY_SOCKET READY, WATCHDOG, RELOADING then READY on
 * SIGHUP, and STOPPING on SIGTERM. */
Test(ops, sd_notify_messages)
{
	int fd = notify_bind(), st;
	char *all = "";

	setenv("NOTIFY_SOCKET", h_path("notify.sock"), 1);
	setenv("WATCHDOG_USEC", "500000", 1);
	start_ops("ordered", NULL);
	unsetenv("NOTIFY_SOCKET");
	unsetenv("WATCHDOG_USEC");
	cr_assert(notify_expect(fd, "READY=1", &all, 3000), "no READY: %s",
	          all);
	cr_assert(notify_expect(fd, "WATCHDOG=1", &all, 2000),
	          "no WATCHDOG: %s", all);
	cr_assert_eq(kill(master, SIGHUP), 0);
	cr_assert(notify_expect(fd, "RELOADING=1", &all, 3000),
	          "no RELOADING: %s", all);
	cr_assert(notify_expect(fd, "READY=1", &all, 3000),
	          "no READY after reload: %s", all);
	cr_assert_eq(kill(master, SIGTERM), 0);
	cr_assert(notify_expect(fd, "STOPPING=1", &all, 3000),
	          "no STOPPING: %s", all);
	cr_assert_eq(h_wait_exit(master, h_slow(10000), &st), 0);
	close(fd);
}

/* A notify socket nobody reads (systemd stuck, or a wrong
 * NOTIFY_SOCKET): its queue fills with watchdog pings, and the master
 * still stops on SIGTERM instead of waiting in sendto for good (it did:
 * under valgrind the drain outlasted the ten datagrams the queue holds). */
Test(ops, sd_notify_unread_socket_never_blocks_the_master)
{
	int fd = notify_bind(), st;

	setenv("NOTIFY_SOCKET", h_path("notify.sock"), 1);
	setenv("WATCHDOG_USEC", "100000", 1); /* a ping each 250 ms tick */
	start_ops("ordered", NULL);
	unsetenv("NOTIFY_SOCKET");
	unsetenv("WATCHDOG_USEC");
	h_sleep_ms(h_slow(3500)); /* 14 pings: the queue takes 10 */
	cr_assert_eq(kill(master, SIGHUP), 0);
	h_sleep_ms(h_slow(300));
	cr_assert_eq(h_unix("POST", CHAT, BODY)->status, 200);
	cr_assert_eq(kill(master, SIGTERM), 0);
	cr_assert_eq(h_wait_exit(master, h_slow(5000), &st), 0, "%s", h_log());
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d", st);
	close(fd);
}

/* Bind and listen on a Unix stream socket at path; its fd. */
static int
listen_unix(const char *path)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	cr_assert_geq(fd, 0);
	snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
	cr_assert_eq(bind(fd, (struct sockaddr *)&sun, sizeof sun), 0, "%s",
	             strerror(errno));
	cr_assert_eq(listen(fd, 128), 0);
	return fd;
}

/* Fork llmfd with fd as socket-activated fd 3 (LISTEN_PID set in the
 * child, so it is llmfd's own pid); output to DIR/llmfd.log. */
static pid_t
spawn_activated(int fd, const char *conf)
{
	pid_t pid = fork();

	cr_assert_neq(pid, -1);
	if (pid != 0)
		return pid;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	int log =
	    open(h_path("llmfd.log"), O_WRONLY | O_CREAT | O_APPEND, 0644);
	if (log < 0 || dup2(log, 1) < 0 || dup2(log, 2) < 0)
		_exit(127);
	if (fd != 3 && dup2(fd, 3) < 0)
		_exit(127);
	fcntl(3, F_SETFD, 0);
	setenv("LISTEN_FDS", "1", 1);
	setenv("LISTEN_PID", h_fmt("%d", (int)getpid()), 1);
	execl(h_bin("llmfd"), "llmfd", "-c", conf, (char *)NULL);
	_exit(127);
}

/* llmfd serves on a socket passed as fd 3 with LISTEN_FDS/LISTEN_PID. */
Test(ops, socket_activation)
{
	int fd, st;

	h_mock_start(&ma, "a", NULL);
	h_mock_start(&mb, "b", NULL);
	/* listen names a path llmfd must not bind: the passed fd is used */
	const char *conf = h_write(
	    "llmfd.conf",
	    "daemon = { workers = 2; listen = \"other.sock\";\n"
	    "  health_table = \"health\"; };\n"
	    "deployments = (\n"
	    "  { name = \"a\"; group = \"g\"; provider = \"openai\"; "
	    "model = \"m\";\n    base_url = \"http://127.0.0.1:%d/v1\"; "
	    "}\n);\n",
	    ma.port);
	fd = listen_unix(h_sock());
	pid_t pid = spawn_activated(fd, conf);
	close(fd);
	cr_assert_eq(h_llmfd_wait_ready(pid, 10000), 0,
	             "not ready on the passed socket:\n%s", h_log());
	for (int i = 0; i < 3; i++)
		cr_assert_str_eq(chat_ok(BODY), "a");
	cr_assert_neq(access(h_path("other.sock"), F_OK), 0,
	              "llmfd bound its own socket too");
	cr_assert(h_log_has("passed by the service manager"), "%s", h_log());
	kill(pid, SIGTERM);
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status 0x%x", st);
}

/* Copy src to dst byte for byte. */
static void
copy_file(const char *src, const char *dst)
{
	char buf[65536];
	int in = open(src, O_RDONLY), out;
	ssize_t n;

	cr_assert_geq(in, 0, "%s", src);
	out = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0640);
	cr_assert_geq(out, 0, "%s", dst);
	while ((n = read(in, buf, sizeof buf)) > 0)
		cr_assert_eq(write(out, buf, (size_t)n), n);
	close(in);
	close(out);
}

/* llmfctl refuses a table whose layout version is not its own. */
Test(ops, llmfctl_refuses_other_table_version)
{
	uint32_t v = SHM_VERSION + 41;
	char *out;

	start_ops("ordered", NULL);
	copy_file(h_path("health"), h_path("health.copy"));
	int fd = open(h_path("health.copy"), O_WRONLY);
	cr_assert_geq(fd, 0);
	cr_assert_eq(
	    pwrite(fd, &v, sizeof v, offsetof(struct shm_hdr_sh, version)),
	    (ssize_t)sizeof v);
	close(fd);
	int rc = h_run(&out, h_bin("llmfctl"), "-t", h_path("health.copy"),
	               "status", NULL);
	cr_assert_eq(rc, 1, "exit %d:\n%s", rc, out);
	cr_assert(strstr(out, "version") != NULL, "unclear message:\n%s", out);
	cr_assert(h_run(&out, h_bin("llmfctl"), "-t", h_path("health"),
	                "status", NULL) == 0,
	          "%s", out);
}

/* Exit codes: a usage error is 2, an unknown deployment 1, success 0. */
Test(ops, llmfctl_exit_codes)
{
	char *out;
	int rc;

	start_ops("ordered", NULL);
	rc = ctl(&out, "frobnicate", NULL, NULL);
	cr_assert_eq(rc, 2, "unknown command exit %d:\n%s", rc, out);
	rc = ctl(&out, "weight", "a", NULL);
	cr_assert_eq(rc, 2, "missing argument exit %d:\n%s", rc, out);
	rc = ctl(&out, "weight", "nosuch", "3");
	cr_assert_eq(rc, 1, "unknown deployment exit %d:\n%s", rc, out);
	cr_assert(strstr(out, "nosuch") != NULL, "%s", out);
	rc = ctl(&out, "show", "nosuch", NULL);
	cr_assert_eq(rc, 1, "show unknown exit %d:\n%s", rc, out);
	rc = ctl(&out, "weight", "a", "-5");
	cr_assert_eq(rc, 1, "bad weight exit %d:\n%s", rc, out);
	rc = ctl(&out, "show", "a", NULL);
	cr_assert_eq(rc, 0, "show a exit %d:\n%s", rc, out);
	cr_assert(strstr(out, "latency histogram") != NULL, "%s", out);
	rc = h_run(&out, h_bin("llmfctl"), "check", "-c", h_conf(), NULL);
	cr_assert_eq(rc, 0, "check exit %d:\n%s", rc, out);
	const char *bad = h_write("bad.conf", "daemon = { workers = 99; };\n"
	                                      "deployments = ( );\n");
	rc = h_run(&out, h_bin("llmfctl"), "check", "-c", bad, NULL);
	cr_assert_eq(rc, 1, "check bad exit %d:\n%s", rc, out);
}

/* In a forked child as uid/gid 65534: weight must fail with the
 * permission message and status must work. Exit 0 when both hold. */
static int
as_nobody(const char *table)
{
	pid_t pid = fork();
	int st;

	cr_assert_neq(pid, -1);
	if (pid == 0) {
		char *out;
		if (geteuid() == 0 &&
		    (setgroups(0, NULL) == -1 || setgid(65534) == -1 ||
		     setuid(65534) == -1))
			_exit(10);
		int rc = h_run(&out, h_bin("llmfctl"), "-t", table, "weight",
		               "a", "0", NULL);
		if (rc != 1 || strstr(out, "permission denied") == NULL) {
			fprintf(stderr, "weight rc %d:\n%s\n", rc, out);
			_exit(11);
		}
		rc = h_run(&out, h_bin("llmfctl"), "-t", table, "status", NULL);
		if (rc != 0) {
			fprintf(stderr, "status rc %d:\n%s\n", rc, out);
			_exit(12);
		}
		_exit(0);
	}
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* A read-only table lets a reader see status but refuses a change with a
 * clear permission message. */
Test(ops, llmfctl_needs_write_permission_to_change)
{
	const char *table;

	start_ops("ordered", NULL);
	table = h_path("health");
	if (geteuid() == 0) {
		cr_assert_eq(chown(table, 0, 65534), 0, "%s", strerror(errno));
		cr_assert_eq(chmod(h_dir(), 0711), 0);
	}
	cr_assert_eq(chmod(table, 0440), 0);
	int rc = as_nobody(table);
	cr_assert_eq(rc, 0, "child check %d (10 setuid, 11 weight, 12 status)",
	             rc);
	cr_assert_eq(dep_long("a", "weight", -1), 1, "weight changed anyway");
	chat_ok(BODY);
}
