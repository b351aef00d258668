/* Integration test harness; see harness.h. */
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define JSMN_STATIC
#define JSMN_STRICT
#include <jsmn.h>

#include <criterion/criterion.h>

#include "tests/integration/harness.h"

#define H_MAX_PROCS 64

struct h_proc {
	pid_t pid;
	bool reaped;
};

static char g_dir[64];
static char g_conf[PATH_MAX];
static struct h_proc g_procs[H_MAX_PROCS];
static int g_nprocs;
static void **g_allocs;
static size_t g_nallocs, g_allocs_cap;
static int g_mock_seq;

/* Growable byte buffer private to this file. */
struct hb {
	char *d;
	size_t len, cap;
};

/* Remember p so teardown frees it; returns p. Dies when out of memory. */
static void *
track(void *p)
{
	if (p == NULL)
		abort();
	if (g_nallocs == g_allocs_cap) {
		size_t n = g_allocs_cap ? g_allocs_cap * 2 : 64;
		void **a = realloc(g_allocs, n * sizeof(*a));
		if (a == NULL)
			abort();
		g_allocs = a;
		g_allocs_cap = n;
	}
	g_allocs[g_nallocs++] = p;
	return p;
}

/* Append n bytes to b, keeping it NUL-terminated. */
static void
hb_add(struct hb *b, const void *p, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t c = b->cap ? b->cap : 256;
		while (c < b->len + n + 1)
			c *= 2;
		char *d = realloc(b->d, c);
		if (d == NULL)
			abort();
		b->d = d;
		b->cap = c;
	}
	memcpy(b->d + b->len, p, n);
	b->len += n;
	b->d[b->len] = '\0';
}

/* Hand the buffer's storage to the harness; returns it ("" if empty). */
static char *
hb_take(struct hb *b)
{
	if (b->d == NULL)
		hb_add(b, "", 0);
	char *d = track(b->d);
	b->d = NULL;
	b->len = b->cap = 0;
	return d;
}

long
h_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
h_sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

/* vprintf into a harness-owned string. */
__attribute__((format(printf, 1, 0))) static char *
vfmt(const char *fmt, va_list ap)
{
	char *s = NULL;

	if (vasprintf(&s, fmt, ap) < 0)
		abort();
	return track(s);
}

char *
h_fmt(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	char *s = vfmt(fmt, ap);
	va_end(ap);
	return s;
}

const char *
h_dir(void)
{
	return g_dir;
}

const char *
h_path(const char *name)
{
	return h_fmt("%s/%s", g_dir, name);
}

const char *
h_bin(const char *name)
{
	const char *b = getenv("LLMFD_BUILD");
	char exe[PATH_MAX];
	ssize_t n;

	if (b != NULL && *b != '\0')
		return h_fmt("%s/%s", b, name);
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		exe[n] = '\0';
		char *slash = strrchr(exe, '/');
		if (slash != NULL) {
			*slash = '\0';
			return h_fmt("%s/%s", exe, name);
		}
	}
	return h_fmt("build/%s", name);
}

/* Write DIR/name from a va_list format; returns the path. */
__attribute__((format(printf, 2, 0))) static const char *
vwrite(const char *name, const char *fmt, va_list ap)
{
	const char *path = h_path(name);
	char *text = vfmt(fmt, ap);
	FILE *f = fopen(path, "w");

	if (f == NULL)
		cr_assert_fail("fopen(%s): %s", path, strerror(errno));
	fputs(text, f);
	fclose(f);
	return path;
}

const char *
h_write(const char *name, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	const char *p = vwrite(name, fmt, ap);
	va_end(ap);
	return p;
}

char *
h_read(const char *path)
{
	struct hb b = {0};
	char tmp[4096];
	size_t n;
	FILE *f = fopen(path, "r");

	if (f == NULL)
		return NULL;
	while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
		hb_add(&b, tmp, n);
	fclose(f);
	return hb_take(&b);
}

/* Processes. */

static void
track_pid(pid_t pid)
{
	if (g_nprocs == H_MAX_PROCS)
		cr_assert_fail("harness: too many child processes");
	g_procs[g_nprocs].pid = pid;
	g_procs[g_nprocs].reaped = false;
	g_nprocs++;
}

static struct h_proc *
find_proc(pid_t pid)
{
	for (int i = 0; i < g_nprocs; i++)
		if (g_procs[i].pid == pid)
			return &g_procs[i];
	return NULL;
}

/* In a forked child: die with the test process, default signals, stdin from
 * /dev/null, stdout and stderr to outfd (if >= 0); then exec argv. */
static void
child_exec(const char *const *argv, int outfd, pid_t parent)
{
	sigset_t none;
	int null;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(127);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	signal(SIGCHLD, SIG_DFL);
	null = open("/dev/null", O_RDONLY);
	if (null >= 0 && null != 0) {
		dup2(null, 0);
		close(null);
	}
	if (outfd >= 0) {
		dup2(outfd, 1);
		dup2(outfd, 2);
		if (outfd > 2)
			close(outfd);
	}
	execvp(argv[0], (char *const *)(uintptr_t)argv);
	fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
	_exit(127);
}

/* Fork and exec argv with output to outfd; the child is tracked. */
static pid_t
spawn(const char *const *argv, int outfd)
{
	pid_t parent = getpid();
	pid_t pid = fork();

	if (pid == -1)
		cr_assert_fail("fork: %s", strerror(errno));
	if (pid == 0)
		child_exec(argv, outfd, parent);
	track_pid(pid);
	return pid;
}

int
h_wait_exit(pid_t pid, int timeout_ms, int *status)
{
	struct h_proc *p = find_proc(pid);
	long end = h_now_ms() + timeout_ms;
	int st;

	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid || (r == -1 && errno == ECHILD)) {
			if (p != NULL)
				p->reaped = true;
			if (status != NULL)
				*status = r == pid ? st : -1;
			return 0;
		}
		if (h_now_ms() >= end)
			return -1;
		h_sleep_ms(10);
	}
}

/* Read /proc/pid/stat: state and ppid; 0 or -1. */
static int
proc_stat(pid_t pid, char *state, pid_t *ppid)
{
	char path[64], buf[512];
	int ppid_i;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* comm may hold spaces and parentheses: parse after the last ')'. */
	char *rp = strrchr(buf, ')');
	if (rp == NULL || sscanf(rp + 1, " %c %d", state, &ppid_i) != 2)
		return -1;
	*ppid = ppid_i;
	return 0;
}

bool
h_alive(pid_t pid)
{
	char st;
	pid_t pp;

	return proc_stat(pid, &st, &pp) == 0 && st != 'Z' && st != 'X';
}

int
h_children(pid_t parent, pid_t *pids, int max)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	int n = 0;

	if (d == NULL)
		return 0;
	while ((e = readdir(d)) != NULL && n < max) {
		char st, *end;
		pid_t pp;
		long pid = strtol(e->d_name, &end, 10);
		if (*end != '\0' || pid <= 0)
			continue;
		if (proc_stat((pid_t)pid, &st, &pp) == 0 && pp == parent &&
		    st != 'Z' && st != 'X')
			pids[n++] = (pid_t)pid;
	}
	closedir(d);
	return n;
}

void
h_mock_startv(struct h_mock *m, const char *name, const char *const *extra)
{
	const char *argv[64];
	int n = 0;
	char portfile[PATH_MAX];
	int logfd;

	snprintf(portfile, sizeof(portfile), "%s/mock%d.port", g_dir,
	         ++g_mock_seq);
	argv[n++] = h_bin("llmf-mock");
	argv[n++] = "--port";
	argv[n++] = "0";
	argv[n++] = "--port-file";
	argv[n++] = portfile;
	argv[n++] = "--name";
	argv[n++] = name;
	for (int i = 0; extra != NULL && extra[i] != NULL && n < 63; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;

	memset(m, 0, sizeof(*m));
	snprintf(m->name, sizeof(m->name), "%s", name);
	logfd = open(h_fmt("%s/mock%d.log", g_dir, g_mock_seq),
	             O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	m->pid = spawn(argv, logfd);
	if (logfd >= 0)
		close(logfd);

	long end = h_now_ms() + H_MOCK_TIMEOUT_MS;
	while (h_now_ms() < end) {
		char *txt = h_read(portfile);
		if (txt != NULL && (m->port = atoi(txt)) > 0)
			return;
		if (h_wait_exit(m->pid, 0, NULL) == 0)
			break;
		h_sleep_ms(20);
	}
	char *log = h_read(h_fmt("%s/mock%d.log", g_dir, g_mock_seq));
	cr_assert_fail("llmf-mock %s did not write its port file (%s); "
	               "output:\n%s",
	               name, argv[0], log ? log : "(none)");
}

void
h_mock_start(struct h_mock *m, const char *name, ...)
{
	const char *extra[48];
	int n = 0;
	va_list ap;
	const char *a;

	va_start(ap, name);
	while ((a = va_arg(ap, const char *)) != NULL && n < 47)
		extra[n++] = a;
	va_end(ap);
	extra[n] = NULL;
	h_mock_startv(m, name, extra);
}

const char *
h_conf(void)
{
	return g_conf;
}

const char *
h_sock(void)
{
	return h_path("llmfd.sock");
}

/* LLMFD_VALGRIND_DIR (make valgrind), or NULL when unset or empty. */
static const char *
valgrind_dir(void)
{
	const char *vg = getenv("LLMFD_VALGRIND_DIR");

	return vg != NULL && *vg != '\0' ? vg : NULL;
}

int
h_slow(int ms)
{
	return valgrind_dir() != NULL ? 5 * ms : ms;
}

pid_t
h_llmfd_spawn(const char *conf)
{
	/* make valgrind: llmfd (and the workers it forks) under memcheck,
	 * a log per process in LLMFD_VALGRIND_DIR */
	const char *vg = valgrind_dir();
	char logopt[PATH_MAX + 32];
	const char *plain[] = {h_bin("llmfd"), "-c", conf, NULL};
	const char *memcheck[] = {"valgrind",
	                          "--leak-check=full",
	                          "--show-leak-kinds=definite",
	                          "--errors-for-leak-kinds=definite",
	                          "--num-callers=30",
	                          logopt,
	                          h_bin("llmfd"),
	                          "-c",
	                          conf,
	                          NULL};
	const char *const *argv = plain;
	int fd = open(h_path("llmfd.log"),
	              O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	pid_t pid;

	if (fd < 0)
		cr_assert_fail("open llmfd.log: %s", strerror(errno));
	if (vg != NULL) {
		snprintf(logopt, sizeof logopt, "--log-file=%s/vg.%%p", vg);
		argv = memcheck;
	}
	pid = spawn(argv, fd);
	close(fd);
	return pid;
}

int
h_llmfd_wait_ready(pid_t pid, int timeout_ms)
{
	long end = h_now_ms() + timeout_ms;

	while (h_now_ms() < end) {
		if (h_wait_exit(pid, 0, NULL) == 0)
			return -1;
		struct h_req q = {.unix_path = h_sock(),
		                  .method = "GET",
		                  .path = "/healthz",
		                  .timeout_ms = 1000};
		if (access(q.unix_path, F_OK) == 0 && h_http(&q)->status == 200)
			return 0;
		h_sleep_ms(50);
	}
	return -1;
}

pid_t
h_llmfd_start(const char *fmt, ...)
{
	va_list ap;
	pid_t pid;

	va_start(ap, fmt);
	snprintf(g_conf, sizeof(g_conf), "%s", vwrite("llmfd.conf", fmt, ap));
	va_end(ap);
	pid = h_llmfd_spawn(g_conf);
	if (h_llmfd_wait_ready(pid, H_READY_TIMEOUT_MS) == 0)
		return pid;
	char *log = h_log();
	fprintf(stderr, "---- llmfd.log (%s) ----\n%s\n---- end ----\n", g_dir,
	        log ? log : "(none)");
	cr_assert_fail("llmfd did not become ready (healthz 200 on %s) within "
	               "%d ms",
	               h_sock(), H_READY_TIMEOUT_MS);
	return -1;
}

int
h_runv(char **out, const char *const *argv)
{
	int pfd[2], st;
	pid_t pid, parent = getpid();
	struct hb b = {0};
	long end = h_now_ms() + H_RUN_TIMEOUT_MS;
	bool timed_out = false;

	*out = hb_take(&b);
	if (pipe2(pfd, O_CLOEXEC) == -1)
		return -1;
	if ((pid = fork()) == -1) {
		close(pfd[0]);
		close(pfd[1]);
		return -1;
	}
	if (pid == 0) {
		close(pfd[0]);
		child_exec(argv, pfd[1], parent);
	}
	track_pid(pid);
	close(pfd[1]);
	for (;;) {
		struct pollfd p = {pfd[0], POLLIN, 0};
		long left = end - h_now_ms();
		char tmp[4096];
		if (left <= 0) {
			timed_out = true;
			break;
		}
		if (poll(&p, 1, (int)left) <= 0)
			continue;
		ssize_t n = read(pfd[0], tmp, sizeof(tmp));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		hb_add(&b, tmp, (size_t)n);
	}
	close(pfd[0]);
	*out = hb_take(&b);
	if (timed_out || h_wait_exit(pid, (int)(end - h_now_ms()), &st) != 0) {
		kill(pid, SIGKILL);
		h_wait_exit(pid, 1000, NULL);
		return -1;
	}
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	if (WIFSIGNALED(st))
		return 128 + WTERMSIG(st);
	return -1;
}

int
h_run(char **out, const char *arg0, ...)
{
	const char *argv[64];
	int n = 0;
	va_list ap;
	const char *a;

	argv[n++] = arg0;
	va_start(ap, arg0);
	while ((a = va_arg(ap, const char *)) != NULL && n < 63)
		argv[n++] = a;
	va_end(ap);
	argv[n] = NULL;
	return h_runv(out, argv);
}

/* Set-up and tear-down. */

void
h_setup(void)
{
	char tmpl[] = "/tmp/llmfd-it.XXXXXX";

	if (mkdtemp(tmpl) == NULL)
		cr_assert_fail("mkdtemp: %s", strerror(errno));
	snprintf(g_dir, sizeof(g_dir), "%s", tmpl);
	snprintf(g_conf, sizeof(g_conf), "%s/llmfd.conf", g_dir);
	g_nprocs = 0;
	g_mock_seq = 0;
	/* Orphans of our children (e.g. llmfd workers whose master was
	 * killed) are re-parented to us, so teardown can reap them. */
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	setenv("TEST_KEY", "sk-test-SECRET-123", 1);
}

/* nftw callback: remove one entry. */
static int
rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

/* SIGKILL and reap every remaining child of ours (orphans re-parented to
 * this subreaper, or tracked children that ignored SIGTERM). */
static void
kill_orphans(void)
{
	pid_t pids[64];
	int n = h_children(getpid(), pids, 64);

	for (int i = 0; i < n; i++)
		kill(pids[i], SIGKILL);
	for (int i = 0; i < n; i++)
		waitpid(pids[i], NULL, 0);
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

void
h_teardown(void)
{
	/* under valgrind, exit takes its leak check: give it time */
	long end = h_now_ms() + (valgrind_dir() ? 5 : 1) * H_TERM_WAIT_MS;
	bool left;

	for (int i = 0; i < g_nprocs; i++)
		if (!g_procs[i].reaped)
			kill(g_procs[i].pid, SIGTERM);
	do {
		left = false;
		for (int i = 0; i < g_nprocs; i++) {
			if (g_procs[i].reaped)
				continue;
			pid_t r = waitpid(g_procs[i].pid, NULL, WNOHANG);
			if (r == g_procs[i].pid || (r == -1 && errno == ECHILD))
				g_procs[i].reaped = true;
			else
				left = true;
		}
		if (left)
			h_sleep_ms(20);
	} while (left && h_now_ms() < end);
	for (int i = 0; i < g_nprocs; i++) {
		if (g_procs[i].reaped)
			continue;
		fprintf(stderr, "harness: pid %d ignored SIGTERM, killing\n",
		        (int)g_procs[i].pid);
		kill(g_procs[i].pid, SIGKILL);
		waitpid(g_procs[i].pid, NULL, 0);
		g_procs[i].reaped = true;
	}
	kill_orphans();
	g_nprocs = 0;

	if (g_dir[0] != '\0') {
		const char *keep = getenv("LLMFD_KEEP_TMP");
		if (keep != NULL && *keep != '\0' && *keep != '0')
			fprintf(stderr, "harness: kept %s\n", g_dir);
		else
			nftw(g_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
		g_dir[0] = '\0';
	}
	for (size_t i = 0; i < g_nallocs; i++)
		free(g_allocs[i]);
	free(g_allocs);
	g_allocs = NULL;
	g_nallocs = g_allocs_cap = 0;
}

/* HTTP client. */

int
h_connect_unix(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -1;
	strcpy(sa.sun_path, path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		return -1;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1) {
		close(fd);
		return -1;
	}
	return fd;
}

int
h_connect_tcp(int port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	int fd;

	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		return -1;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1) {
		close(fd);
		return -1;
	}
	return fd;
}

char *
h_req_text(const char *method, const char *path, const char *headers,
           const char *body)
{
	if (body == NULL)
		return h_fmt("%s %s HTTP/1.1\r\nHost: localhost\r\n"
		             "Connection: close\r\n%s\r\n",
		             method, path, headers ? headers : "");
	return h_fmt("%s %s HTTP/1.1\r\nHost: localhost\r\n"
	             "Connection: close\r\nContent-Type: application/json\r\n"
	             "Content-Length: %zu\r\n%s\r\n%s",
	             method, path, strlen(body), headers ? headers : "", body);
}

int
h_send_all(int fd, const char *s, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		s += w;
		n -= (size_t)w;
	}
	return 0;
}

char *
h_recv_until(int fd, const char *want, long timeout_ms)
{
	struct hb b = {0};
	long t0 = h_now_ms();
	char c[4096];

	while (h_now_ms() - t0 < timeout_ms &&
	       (want == NULL || b.len == 0 || strstr(b.d, want) == NULL)) {
		struct pollfd p = {fd, POLLIN, 0};
		ssize_t k;

		if (poll(&p, 1, 100) <= 0)
			continue;
		if ((k = recv(fd, c, sizeof c, 0)) <= 0)
			break;
		hb_add(&b, c, (size_t)k);
	}
	return hb_take(&b);
}

/* Decode a chunked body from raw (n bytes) into out. Returns 1 when the
 * terminating chunk (and trailer end) was seen, 0 if more is needed, -1 on
 * a framing error. */
static int
dechunk(const char *raw, size_t n, struct hb *out)
{
	size_t i = 0;

	out->len = 0;
	for (;;) {
		const char *eol = memmem(raw + i, n - i, "\r\n", 2);
		if (eol == NULL)
			return 0;
		char *end;
		unsigned long sz = strtoul(raw + i, &end, 16);
		if (end == raw + i)
			return -1;
		i = (size_t)(eol - raw) + 2;
		if (sz == 0) {
			/* Trailers, then an empty line. */
			for (;;) {
				eol = memmem(raw + i, n - i, "\r\n", 2);
				if (eol == NULL)
					return 0;
				if (eol == raw + i)
					return 1;
				i = (size_t)(eol - raw) + 2;
			}
		}
		if (n - i < sz + 2)
			return 0;
		hb_add(out, raw + i, sz);
		i += sz + 2;
	}
}

/* Response framing parsed from the header block. */
struct frame {
	size_t hend; /* offset of the body in the raw data */
	long clen;   /* -1 if none */
	bool chunked;
	bool nobody;
};

/* Parse the status line and framing headers of r->head. */
static void
parse_head(struct h_resp *r, struct frame *f, const char *method)
{
	const char *v;

	if (sscanf(r->head, "HTTP/%*d.%*d %d", &r->status) != 1)
		r->status = 0;
	f->clen = (v = h_header(r, "content-length")) ? atol(v) : -1;
	f->chunked = (v = h_header(r, "transfer-encoding")) != NULL &&
	             strcasestr(v, "chunked") != NULL;
	f->nobody = strcmp(method, "HEAD") == 0 || r->status == 204 ||
	            r->status == 304 || (r->status >= 100 && r->status < 200);
}

/* Whether the body in raw is complete; fills r->body when it is. */
static bool
body_done(struct h_resp *r, const struct frame *f, struct hb *raw,
          struct hb *dec)
{
	const char *b = raw->d + f->hend;
	size_t n = raw->len - f->hend;

	if (f->nobody)
		return true;
	if (f->chunked)
		return dechunk(b, n, dec) == 1;
	if (f->clen >= 0)
		return n >= (size_t)f->clen;
	(void)r;
	return false;
}

/* Finish r from the raw bytes. */
static void
finish(struct h_resp *r, const struct frame *f, struct hb *raw, bool eof)
{
	struct hb dec = {0};

	if (r->head == NULL) {
		if (r->err[0] == '\0')
			snprintf(r->err, sizeof(r->err),
			         "no complete response head (%zu bytes)",
			         raw->len);
		return;
	}
	if (f->nobody) {
		r->complete = true;
	} else if (f->chunked) {
		int rc = dechunk(raw->d + f->hend, raw->len - f->hend, &dec);
		r->complete = rc == 1;
		if (rc == -1)
			snprintf(r->err, sizeof(r->err), "bad chunked framing");
	} else {
		size_t n = raw->len - f->hend;
		if (f->clen >= 0 && n > (size_t)f->clen)
			n = (size_t)f->clen;
		hb_add(&dec, raw->d + f->hend, n);
		r->complete = f->clen >= 0 ? n == (size_t)f->clen : eof;
	}
	if (!r->complete && r->err[0] == '\0')
		snprintf(r->err, sizeof(r->err), "incomplete body");
	r->body_len = dec.len;
	r->body = hb_take(&dec);
}

/* Record one body read's arrival. */
static void
note_read(struct h_resp *r, long ms, size_t bytes)
{
	r->read_ms =
	    realloc(r->read_ms, (size_t)(r->nreads + 1) * sizeof(long));
	r->read_bytes =
	    realloc(r->read_bytes, (size_t)(r->nreads + 1) * sizeof(size_t));
	if (r->read_ms == NULL || r->read_bytes == NULL)
		abort();
	r->read_ms[r->nreads] = ms;
	r->read_bytes[r->nreads] = bytes;
	r->nreads++;
}

/* Read the response on fd into r until complete, closed or deadline. */
static void
read_resp(int fd, struct h_resp *r, const char *method, long t0, long end)
{
	struct hb raw = {0}, dec = {0};
	struct frame f = {0};
	bool eof = false;
	char tmp[16384];

	for (;;) {
		struct pollfd p = {fd, POLLIN, 0};
		long left = end - h_now_ms();
		if (left <= 0) {
			snprintf(r->err, sizeof(r->err), "timeout after %ld ms",
			         h_now_ms() - t0);
			break;
		}
		if (poll(&p, 1, (int)left) <= 0)
			continue;
		ssize_t n = recv(fd, tmp, sizeof(tmp), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			snprintf(r->err, sizeof(r->err), "recv: %s",
			         strerror(errno));
			break;
		}
		if (n == 0) {
			eof = true;
			break;
		}
		long now = h_now_ms() - t0;
		hb_add(&raw, tmp, (size_t)n);
		if (r->head == NULL) {
			const char *e = memmem(raw.d, raw.len, "\r\n\r\n", 4);
			if (e == NULL)
				continue;
			f.hend = (size_t)(e - raw.d) + 4;
			r->head = track(strndup(raw.d, f.hend));
			r->head_ms = now;
			parse_head(r, &f, method);
		}
		if (raw.len > f.hend)
			note_read(r, now, raw.len - f.hend);
		if (body_done(r, &f, &raw, &dec))
			break;
	}
	r->ms = h_now_ms() - t0;
	finish(r, &f, &raw, eof);
	free(raw.d);
	free(dec.d);
	if (r->read_ms != NULL) {
		track(r->read_ms);
		track(r->read_bytes);
	}
}

struct h_resp *
h_http(const struct h_req *q)
{
	struct h_resp *r = track(calloc(1, sizeof(*r)));
	int timeout = q->timeout_ms > 0 ? q->timeout_ms : H_HTTP_TIMEOUT_MS;
	long t0 = h_now_ms();
	int fd;
	char *req;

	r->body = "";
	fd = q->unix_path ? h_connect_unix(q->unix_path)
	                  : h_connect_tcp(q->port);
	if (fd == -1) {
		snprintf(r->err, sizeof(r->err), "connect %s: %s",
		         q->unix_path ? q->unix_path : "tcp", strerror(errno));
		return r;
	}
	req = h_req_text(q->method, q->path, q->headers, q->body);
	if (h_send_all(fd, req, strlen(req)) == -1) {
		snprintf(r->err, sizeof(r->err), "send: %s", strerror(errno));
		/* The server may have answered and closed early: read on. */
	}
	read_resp(fd, r, q->method, t0, t0 + timeout);
	close(fd);
	return r;
}

struct h_resp *
h_unix(const char *method, const char *path, const char *body)
{
	struct h_req q = {.unix_path = h_sock(),
	                  .method = method,
	                  .path = path,
	                  .body = body};

	return h_http(&q);
}

struct h_resp *
h_tcp(int port, const char *method, const char *path, const char *body)
{
	struct h_req q = {
	    .port = port, .method = method, .path = path, .body = body};

	return h_http(&q);
}

const char *
h_header(const struct h_resp *r, const char *name)
{
	size_t nl = strlen(name);
	const char *p;

	if (r->head == NULL || (p = strstr(r->head, "\r\n")) == NULL)
		return NULL;
	for (p += 2; *p != '\0' && strncmp(p, "\r\n", 2) != 0;) {
		const char *eol = strstr(p, "\r\n");
		if (eol == NULL)
			break;
		if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
			const char *v = p + nl + 1;
			while (v < eol && (*v == ' ' || *v == '\t'))
				v++;
			const char *e = eol;
			while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
				e--;
			return track(strndup(v, (size_t)(e - v)));
		}
		p = eol + 2;
	}
	return NULL;
}

const char *
h_desc(const struct h_resp *r)
{
	return h_fmt("status=%d err='%s' ms=%ld body=%.600s", r->status, r->err,
	             r->ms, r->body ? r->body : "");
}

/* JSON. */

/* Parse js; returns the token count with *out owned by the harness, or
 * -1 if js is not exactly one valid JSON value. */
static int
jparse(const char *js, jsmntok_t **out)
{
	jsmn_parser p;
	size_t len;
	int n;

	if (js == NULL)
		return -1;
	len = strlen(js);
	jsmn_init(&p);
	n = jsmn_parse(&p, js, len, NULL, 0);
	if (n <= 0)
		return -1;
	*out = track(calloc((size_t)n, sizeof(jsmntok_t)));
	jsmn_init(&p);
	if (jsmn_parse(&p, js, len, *out, (unsigned)n) != n)
		return -1;
	return n;
}

/* Index of the token after token i's subtree. */
static int
jskip(const jsmntok_t *t, int n, int i)
{
	int todo = t[i].size, j = i + 1;

	while (todo > 0 && j < n) {
		todo += t[j].size - 1;
		j++;
	}
	return j;
}

/* Token for the dotted path, or -1. */
static int
jfind(const char *js, const jsmntok_t *t, int n, const char *path)
{
	int i = 0;

	while (path != NULL && *path != '\0') {
		const char *dot = strchr(path, '.');
		size_t kl = dot ? (size_t)(dot - path) : strlen(path);
		int k = i + 1, found = -1;

		if (t[i].type == JSMN_OBJECT) {
			for (int m = 0; m < t[i].size && k < n; m++) {
				size_t tl = (size_t)(t[k].end - t[k].start);
				if (tl == kl && strncasecmp(js + t[k].start,
				                            path, kl) == 0) {
					found = k + 1;
					break;
				}
				k = jskip(t, n, k + 1);
			}
		} else if (t[i].type == JSMN_ARRAY) {
			char *e;
			long idx = strtol(path, &e, 10);
			if (e != path + kl || idx < 0)
				return -1;
			for (int m = 0; m < t[i].size && k < n; m++) {
				if (m == idx) {
					found = k;
					break;
				}
				k = jskip(t, n, k);
			}
		}
		if (found < 0 || found >= n)
			return -1;
		i = found;
		path = dot ? dot + 1 : NULL;
	}
	return i;
}

bool
h_json_valid(const char *js)
{
	jsmntok_t *t;
	int n = jparse(js, &t);

	return n > 0 && jskip(t, n, 0) == n;
}

/* Append the UTF-8 encoding of code point c. */
static void
put_utf8(struct hb *b, unsigned long c)
{
	char u[4];

	if (c < 0x80) {
		u[0] = (char)c;
		hb_add(b, u, 1);
	} else if (c < 0x800) {
		u[0] = (char)(0xc0 | (c >> 6));
		u[1] = (char)(0x80 | (c & 0x3f));
		hb_add(b, u, 2);
	} else if (c < 0x10000) {
		u[0] = (char)(0xe0 | (c >> 12));
		u[1] = (char)(0x80 | ((c >> 6) & 0x3f));
		u[2] = (char)(0x80 | (c & 0x3f));
		hb_add(b, u, 3);
	} else {
		u[0] = (char)(0xf0 | (c >> 18));
		u[1] = (char)(0x80 | ((c >> 12) & 0x3f));
		u[2] = (char)(0x80 | ((c >> 6) & 0x3f));
		u[3] = (char)(0x80 | (c & 0x3f));
		hb_add(b, u, 4);
	}
}

/* Unescape the JSON string contents s[0..n). */
static char *
unescape(const char *s, size_t n)
{
	struct hb b = {0};

	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c != '\\' || i + 1 >= n) {
			hb_add(&b, &c, 1);
			continue;
		}
		c = s[++i];
		switch (c) {
		case 'n':
			hb_add(&b, "\n", 1);
			break;
		case 't':
			hb_add(&b, "\t", 1);
			break;
		case 'r':
			hb_add(&b, "\r", 1);
			break;
		case 'b':
			hb_add(&b, "\b", 1);
			break;
		case 'f':
			hb_add(&b, "\f", 1);
			break;
		case 'u': {
			char hex[5] = {0};
			unsigned long cp;
			if (i + 4 >= n)
				break;
			memcpy(hex, s + i + 1, 4);
			cp = strtoul(hex, NULL, 16);
			i += 4;
			if (cp >= 0xd800 && cp < 0xdc00 && i + 6 < n &&
			    s[i + 1] == '\\' && s[i + 2] == 'u') {
				memcpy(hex, s + i + 3, 4);
				unsigned long lo = strtoul(hex, NULL, 16);
				cp = 0x10000 + ((cp - 0xd800) << 10) +
				     (lo - 0xdc00);
				i += 6;
			}
			put_utf8(&b, cp);
			break;
		}
		default:
			hb_add(&b, &c, 1);
			break;
		}
	}
	return hb_take(&b);
}

const char *
h_json(const char *js, const char *path)
{
	jsmntok_t *t;
	int n = jparse(js, &t), i;

	if (n <= 0 || (i = jfind(js, t, n, path)) < 0)
		return NULL;
	if (t[i].type == JSMN_STRING)
		return unescape(js + t[i].start,
		                (size_t)(t[i].end - t[i].start));
	return track(strndup(js + t[i].start, (size_t)(t[i].end - t[i].start)));
}

int
h_json_count(const char *js, const char *path)
{
	jsmntok_t *t;
	int n = jparse(js, &t), i;

	if (n <= 0 || (i = jfind(js, t, n, path)) < 0)
		return -1;
	if (t[i].type != JSMN_OBJECT && t[i].type != JSMN_ARRAY)
		return -1;
	return t[i].size;
}

long
h_json_long(const char *js, const char *path, long dflt)
{
	const char *v = h_json(js, path);
	char *e;
	long x;

	if (v == NULL || *v == '\0')
		return dflt;
	x = strtol(v, &e, 10);
	return *e == '\0' || *e == '.' ? x : dflt;
}

/* Mock control. */

long
h_mock_stat(const struct h_mock *m, const char *field)
{
	struct h_resp *r = h_tcp(m->port, "GET", "/_mock/stats", NULL);

	if (r->status != 200)
		return -1;
	return h_json_long(r->body, field, -1);
}

long
h_mock_wait_stat(const struct h_mock *m, const char *field, long want,
                 int timeout_ms)
{
	long end = h_now_ms() + timeout_ms, v;

	while ((v = h_mock_stat(m, field)) < want && h_now_ms() < end)
		h_sleep_ms(20);
	return v;
}

const char *
h_mock_requests(const struct h_mock *m)
{
	struct h_resp *r = h_tcp(m->port, "GET", "/_mock/requests", NULL);

	return r->status == 200 ? r->body : NULL;
}

int
h_mock_config(const struct h_mock *m, const char *json)
{
	return h_tcp(m->port, "POST", "/_mock/config", json)->status == 200
	           ? 0
	           : -1;
}

int
h_mock_reset(const struct h_mock *m)
{
	return h_tcp(m->port, "POST", "/_mock/reset", "{}")->status == 200 ? 0
	                                                                   : -1;
}

/* Log. */

char *
h_log(void)
{
	return h_read(h_path("llmfd.log"));
}

bool
h_log_has(const char *needle)
{
	char *log = h_log();

	return log != NULL && strstr(log, needle) != NULL;
}

/* Fleets: more daemons, and Redis. */

pid_t
h_llmfd_start_in(const char *sub, const char *fmt, ...)
{
	const char *dir = h_path(sub), *conf, *log;
	const char *argv[] = {h_bin("llmfd"), "-c", NULL, NULL};
	struct h_req q = {
	    .method = "GET", .path = "/healthz", .timeout_ms = 1000};
	long end = h_now_ms() + H_READY_TIMEOUT_MS;
	va_list ap;
	pid_t pid;
	int fd;

	mkdir(dir, 0755);
	va_start(ap, fmt);
	conf = vwrite(h_fmt("%s/llmfd.conf", sub), fmt, ap);
	va_end(ap);
	log = h_fmt("%s/llmfd.log", dir);
	q.unix_path = h_fmt("%s/llmfd.sock", dir);
	argv[2] = conf;
	if ((fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)) <
	    0)
		cr_assert_fail("open %s: %s", log, strerror(errno));
	pid = spawn(argv, fd);
	close(fd);
	while (h_now_ms() < end) {
		if (h_wait_exit(pid, 0, NULL) == 0)
			break;
		if (access(q.unix_path, F_OK) == 0 && h_http(&q)->status == 200)
			return pid;
		h_sleep_ms(50);
	}
	char *text = h_read(log);
	fprintf(stderr, "---- %s ----\n%s\n---- end ----\n", log,
	        text ? text : "(none)");
	cr_assert_fail("llmfd in %s did not become ready", dir);
	return -1;
}

/* A free loopback TCP port (bound, then released). */
static int
free_port(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t len = sizeof sa;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = -1;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
		port = ntohs(sa.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

const char *
h_redis_cmd(int port, const char *cmd)
{
	int fd = h_connect_tcp(port);
	struct hb b = {0};
	char tmp[4096];
	long end = h_now_ms() + 2000;

	if (fd < 0)
		return NULL;
	if (h_send_all(fd, cmd, strlen(cmd)) == -1 ||
	    h_send_all(fd, "\r\n", 2) == -1) {
		close(fd);
		return NULL;
	}
	/* one reply: wait for the first line, then a little for the rest */
	while (h_now_ms() < end) {
		struct pollfd p = {fd, POLLIN, 0};
		if (poll(&p, 1, b.len ? 30 : (int)(end - h_now_ms())) <= 0) {
			if (b.len)
				break;
			continue;
		}
		ssize_t n = read(fd, tmp, sizeof tmp);
		if (n <= 0)
			break;
		hb_add(&b, tmp, (size_t)n);
	}
	close(fd);
	return b.len ? hb_take(&b) : (free(b.d), NULL);
}

pid_t
h_redis_start(int *port)
{
	const char *dir = h_path("redis");
	char portbuf[16];
	const char *argv[] = {"redis-server",
	                      "--port",
	                      portbuf,
	                      "--bind",
	                      "127.0.0.1",
	                      "--save",
	                      "",
	                      "--appendonly",
	                      "no",
	                      "--dir",
	                      dir,
	                      "--logfile",
	                      h_fmt("%s/redis.log", dir),
	                      NULL};
	long end = h_now_ms() + H_READY_TIMEOUT_MS;
	const char *r;
	pid_t pid;

	mkdir(dir, 0755);
	if (*port == 0 && (*port = free_port()) <= 0)
		cr_assert_fail("no free port for redis-server");
	snprintf(portbuf, sizeof portbuf, "%d", *port);
	pid = spawn(argv, -1);
	while (h_now_ms() < end) {
		if (h_wait_exit(pid, 0, NULL) == 0)
			break;
		if ((r = h_redis_cmd(*port, "PING")) != NULL &&
		    strncmp(r, "+PONG", 5) == 0)
			return pid;
		h_sleep_ms(20);
	}
	cr_assert_fail("redis-server did not start on port %d (is it "
	               "installed? make deps); log:\n%s",
	               *port, h_read(h_fmt("%s/redis.log", dir)));
	return -1;
}
