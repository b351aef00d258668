/* Integration test harness: real llmfd and llmf-mock processes in a fresh
 * temp dir per test, a small HTTP/1.1 client (Unix socket and loopback TCP),
 * JSON lookups, and process bookkeeping that cleans up on any test outcome.
 *
 * Use as a criterion suite's .init/.fini (h_setup / h_teardown). Criterion
 * runs each test in its own process, so all state here is per test. Every
 * allocation a helper returns is owned by the harness and freed at
 * teardown; tests never free. */
#ifndef LLMFD_HARNESS_H
#define LLMFD_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define H_MOCK_TIMEOUT_MS  5000
#define H_READY_TIMEOUT_MS 10000
#define H_HTTP_TIMEOUT_MS  15000
#define H_RUN_TIMEOUT_MS   15000
#define H_TERM_WAIT_MS     3000

/* Per-test set-up and tear-down (criterion .init / .fini). */
void h_setup(void);
void h_teardown(void);

/* The test's temp dir, and DIR/name as a harness-owned string. */
const char *h_dir(void);
const char *h_path(const char *name);
/* Absolute path of a built binary: $LLMFD_BUILD/name, else the directory of
 * the running test binary. */
const char *h_bin(const char *name);
/* printf into a harness-owned string. */
char *h_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Write DIR/name from a format; returns the full path. */
const char *h_write(const char *name, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Read a whole file into a harness-owned string (NULL if unreadable). */
char *h_read(const char *path);
/* Sleep for ms milliseconds; monotonic milliseconds since an arbitrary
 * origin. */
void h_sleep_ms(long ms);
long h_now_ms(void);

/* Processes. */
struct h_mock {
	pid_t pid;
	int port;
	char name[64];
};

/* Start llmf-mock --port 0 --port-file DIR/mockN.port --name NAME followed by
 * the NULL-terminated extra arguments; waits for the port file. Fails the
 * test on error. */
void h_mock_start(struct h_mock *, const char *name, ...)
    __attribute__((sentinel));
/* Same, with the extra arguments as an argv array (NULL-terminated). */
void h_mock_startv(struct h_mock *, const char *name, const char *const *extra);

/* Write DIR/llmfd.conf from fmt and start `llmfd -c DIR/llmfd.conf`
 * (stdout and stderr to DIR/llmfd.log); waits until GET /healthz on
 * DIR/llmfd.sock answers 200. Fails the test (printing the log) otherwise.
 * Returns the master pid. */
pid_t h_llmfd_start(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Start llmfd on an existing config file without waiting. */
pid_t h_llmfd_spawn(const char *conf);
/* Wait until the socket answers /healthz 200; 0, or -1 if the process died
 * or the timeout passed. */
int h_llmfd_wait_ready(pid_t, int timeout_ms);
/* The config file and socket of the running daemon. */
const char *h_conf(void);
const char *h_sock(void);

/* Wait for a tracked child to exit; 0 with its wait status in *status, or
 * -1 on timeout. The child is then not signalled at teardown. */
int h_wait_exit(pid_t, int timeout_ms, int *status);
/* A wait of ms stretched for how slowly llmfd runs here: 5 times under
 * make valgrind (memcheck runs it several times slower), else as is. For
 * waits on llmfd's own pace (a fork, a drain, an exit), not for what a
 * test asserts llmfd does within a time. */
int h_slow(int ms);
/* Whether pid exists and is not a zombie. */
bool h_alive(pid_t);
/* Fill pids with the live children of parent (from /proc/<pid>/stat);
 * returns how many (at most max). */
int h_children(pid_t parent, pid_t *pids, int max);

/* Run argv (NULL-terminated, argv[0] a path) with stdout and stderr captured
 * together into *out (harness-owned); returns the exit code, 128+signal, or
 * -1 if it could not run or timed out. */
int h_run(char **out, const char *arg0, ...) __attribute__((sentinel));
int h_runv(char **out, const char *const *argv);

/* HTTP. */
struct h_resp {
	int status;    /* 0 if no status line was received */
	char err[160]; /* transport error, "" if none */
	bool complete; /* the message ended by its framing (or close) */
	char *head;    /* status line and headers, NUL-terminated */
	char *body;    /* body, de-chunked, NUL-terminated */
	size_t body_len;
	long ms;      /* request start to end of response */
	long head_ms; /* request start to end of headers */
	/* Each read that carried body bytes: arrival time (ms since request
	 * start) and raw body bytes received so far. */
	int nreads;
	long *read_ms;
	size_t *read_bytes;
};

struct h_req {
	const char *unix_path; /* or NULL to use TCP */
	int port;              /* 127.0.0.1:port */
	const char *method;
	const char *path;
	const char *headers; /* extra "Name: value\r\n" lines, or NULL */
	const char *body;    /* NULL: no body */
	int timeout_ms;      /* 0: H_HTTP_TIMEOUT_MS */
};

/* Send one request (Connection: close) and read the whole response. Never
 * NULL; on failure status is 0 and err says why. */
struct h_resp *h_http(const struct h_req *);
/* Shorthands: the daemon's socket, and 127.0.0.1:port. */
struct h_resp *h_unix(const char *method, const char *path, const char *body);
struct h_resp *h_tcp(int port, const char *method, const char *path,
                     const char *body);
/* Header value by case-insensitive name (first occurrence), or NULL. */
const char *h_header(const struct h_resp *, const char *name);
/* One line describing a response, for assertion messages. */
const char *h_desc(const struct h_resp *);

/* Connect to a Unix socket / 127.0.0.1:port; fd or -1. */
int h_connect_unix(const char *path);
int h_connect_tcp(int port);
/* Format a request with Content-Length (harness-owned). */
char *h_req_text(const char *method, const char *path, const char *headers,
                 const char *body);
/* Write all of s; 0 or -1. */
int h_send_all(int fd, const char *s, size_t n);
/* Read fd until want shows up in what was read (want NULL: until the
 * peer closes), the peer closes or timeout_ms pass; the text read
 * (harness-owned). */
char *h_recv_until(int fd, const char *want, long timeout_ms);

/* JSON lookups on text (jsmn). Paths are dotted keys and array indexes
 * ("choices.0.message.content"); keys match case-insensitively. */
bool h_json_valid(const char *js);
/* A value: strings unescaped, other values as raw text; NULL if absent. */
const char *h_json(const char *js, const char *path);
/* Members of an object / elements of an array at path, or -1. */
int h_json_count(const char *js, const char *path);
/* An integer value, or dflt if absent or not a number. */
long h_json_long(const char *js, const char *path, long dflt);

/* The mock's control endpoints. */
long h_mock_stat(const struct h_mock *, const char *field); /* -1 */
const char *h_mock_requests(const struct h_mock *); /* JSON text or NULL */
int h_mock_config(const struct h_mock *, const char *json);
int h_mock_reset(const struct h_mock *);
/* Poll a stat until it is at least want; returns the last value. */
long h_mock_wait_stat(const struct h_mock *, const char *field, long want,
                      int timeout_ms);

/* More daemons in one test (a fleet): write DIR/sub/llmfd.conf from fmt
 * (relative paths in it resolve in DIR/sub), start llmfd on it with its
 * log in DIR/sub/llmfd.log, and wait until DIR/sub/llmfd.sock answers
 * /healthz 200. Fails the test otherwise. Returns the master pid. */
pid_t h_llmfd_start_in(const char *sub, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* redis-server on 127.0.0.1:port (port 0: a free one) in DIR/redis, no
 * persistence; waits for PONG. Fails the test if it cannot start (make
 * deps installs it). Returns the pid; *port gets the port. */
pid_t h_redis_start(int *port);
/* One command to the Redis at 127.0.0.1:port in the inline protocol;
 * returns the raw reply text (harness-owned) or NULL on error/timeout. */
const char *h_redis_cmd(int port, const char *cmd);

/* The daemon's log (DIR/llmfd.log). */
char *h_log(void);
bool h_log_has(const char *needle);

#endif
