/* The sd_notify protocol, spoken directly: one datagram to $NOTIFY_SOCKET. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/log.h"
#include "daemon/daemon.h"

/* Send "READY=1" and friends to systemd, if it is listening. Never waits:
 * a receiver that stops reading (its queue holds net.unix.max_dgram_qlen
 * datagrams, 10 by default) would otherwise hold the master in sendto for
 * good, deaf to signals and to its workers. A WATCHDOG=1 that does not fit
 * is dropped quietly (the next one follows); any other message, with a
 * warning. */
void
notify_send(const char *fmt, ...)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sun;
	socklen_t len;
	char msg[512];
	va_list ap;
	int fd, n;

	if (path == NULL || (path[0] != '/' && path[0] != '@') ||
	    strlen(path) >= sizeof sun.sun_path)
		return;
	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof msg)
		return;
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, path, strlen(path));
	if (sun.sun_path[0] == '@')
		sun.sun_path[0] = '\0';
	len =
	    (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path));
	if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) == -1)
		return;
	if (sendto(fd, msg, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT,
	           (struct sockaddr *)&sun, len) == -1 &&
	    (errno == EAGAIN || errno == EWOULDBLOCK) &&
	    strcmp(msg, "WATCHDOG=1") != 0)
		log_warnx("sd_notify: %s is full; dropped %.*s", path,
		          (int)strcspn(msg, "\n"), msg);
	close(fd);
}
