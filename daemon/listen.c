/* Listening sockets: the Unix socket (stale file replaced safely), the
 * optional loopback TCP port, or sockets passed by systemd (LISTEN_FDS). */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/addr.h"
#include "common/log.h"
#include "daemon/daemon.h"

#define SD_LISTEN_FDS_START 3
/* The accept queue of each listener: deep enough for a burst of
 * thousands of connects (past it the kernel drops handshakes, and the
 * clients wait out retransmits); the kernel caps it at somaxconn. */
#define LISTEN_BACKLOG 4096

static int
set_cause(char **cause, const char *what, const char *arg)
{
	char msg[512];

	snprintf(msg, sizeof msg, "%s %s: %s", what, arg, strerror(errno));
	*cause = strdup(msg);
	return -1;
}

/* Whether a live server answers on the socket at path. */
static int
unix_in_use(const char *path)
{
	struct sockaddr_un sun;
	int fd, rc;

	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		return 0;
	rc = connect(fd, (struct sockaddr *)&sun, sizeof sun);
	close(fd);
	return rc == 0;
}

/* Bind the Unix socket: refuse a live one, replace a stale one, and only
 * ever unlink a socket (never a regular file someone put there). */
static int
listen_unix(const char *path, int mode, const char *group, char **cause)
{
	struct sockaddr_un sun;
	struct stat st;
	int fd;
	mode_t old;
	int gid = group[0] ? cfg_group_id(group) : -1;

	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			errno = EEXIST;
			return set_cause(
			    cause, "refusing to replace non-socket", path);
		}
		if (unix_in_use(path)) {
			errno = EADDRINUSE;
			return set_cause(
			    cause, "another server is listening on", path);
		}
		unlink(path);
	}
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0)) == -1)
		return set_cause(cause, "socket() failed for", path);
	old = umask(0177);
	if (bind(fd, (struct sockaddr *)&sun, sizeof sun) == -1) {
		umask(old);
		close(fd);
		return set_cause(cause, "bind() failed for", path);
	}
	umask(old);
	if (gid >= 0 && chown(path, (uid_t)-1, (gid_t)gid) == -1) {
		set_cause(cause, "chown() to the listen_group failed for",
		          path);
		close(fd);
		unlink(path);
		return -1;
	}
	if (chmod(path, (mode_t)mode) == -1 ||
	    listen(fd, LISTEN_BACKLOG) == -1) {
		close(fd);
		unlink(path);
		return set_cause(cause, "listen() failed for", path);
	}
	return fd;
}

/* Bind the loopback TCP listener. */
static int
listen_tcp(const char *host, int port, char **cause)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int fd, one = 1;

	if (addr_ip(host, port, &ss, &len) == -1) {
		errno = EINVAL;
		return set_cause(cause, "bad tcp address", host);
	}
	if ((fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0)) == -1)
		return set_cause(cause, "socket() failed for", host);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(fd, (struct sockaddr *)&ss, len) == -1 ||
	    listen(fd, LISTEN_BACKLOG) == -1) {
		close(fd);
		return set_cause(cause, "bind/listen failed for", host);
	}
	return fd;
}

/* Take sockets passed by systemd socket activation; count, or 0. */
static int
listen_activated(struct master *m)
{
	const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
	int n;

	if (pid == NULL || fds == NULL || atoi(pid) != (int)getpid())
		return 0;
	n = atoi(fds);
	if (n <= 0)
		return 0;
	for (int i = 0; i < n && m->nfds < MAX_LISTEN; i++) {
		int fd = SD_LISTEN_FDS_START + i;
		fcntl(fd, F_SETFD, FD_CLOEXEC);
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
		m->fds[m->nfds++] = fd;
	}
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	m->activated = 1;
	return m->nfds;
}

/* Open every listener the config names (or take systemd's). */
int
listen_open(struct master *m, const struct cfg *cfg, char **cause)
{
	int fd;

	m->nfds = 0;
	m->unix_fd = -1;
	if (listen_activated(m) > 0) {
		log_info("using %d socket%s passed by the service manager",
		         m->nfds, m->nfds == 1 ? "" : "s");
		return 0;
	}
	if ((fd = listen_unix(cfg->listen, cfg->listen_mode, cfg->listen_group,
	                      cause)) == -1)
		return -1;
	m->unix_fd = m->nfds;
	m->fds[m->nfds++] = fd;
	if (cfg->tcp[0]) {
		if ((fd = listen_tcp(cfg->tcp_host, cfg->tcp_port, cause)) ==
		    -1) {
			listen_close(m);
			return -1;
		}
		m->fds[m->nfds++] = fd;
	}
	return 0;
}

/* Close the listeners and remove our socket file. */
void
listen_close(struct master *m)
{
	for (int i = 0; i < m->nfds; i++)
		close(m->fds[i]);
	if (m->unix_fd >= 0 && m->cfg)
		unlink(m->cfg->listen);
	m->nfds = 0;
	m->unix_fd = -1;
}
