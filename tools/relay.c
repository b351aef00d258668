/* llmf-relay: the least a proxy can do, for the bench to compare with.
 * Accepts on 127.0.0.1:PORT and, per client, connects to HOST:PORT and
 * copies bytes both ways with one blocking read and one write per chunk,
 * a thread per direction: no parsing, no buffering, no event loop. What a
 * paced stream gains in delay through it is one more process hop with no
 * proxy work: the host's scheduling of that hop. */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static struct addrinfo *up;

struct pipe_ {
	int from, to;
};

/* Copy from -> to until either side ends, then shut both down. */
static void *
copy(void *arg)
{
	struct pipe_ *p = arg;
	char buf[65536];
	ssize_t n;

	while ((n = read(p->from, buf, sizeof buf)) > 0)
		for (ssize_t off = 0, w; off < n; off += w)
			if ((w = write(p->to, buf + off, (size_t)(n - off))) <=
			    0)
				goto out;
out:
	shutdown(p->from, SHUT_RDWR);
	shutdown(p->to, SHUT_RDWR);
	return NULL;
}

/* One client: connect upstream, copy both ways, close. */
static void *
serve(void *arg)
{
	int c = (int)(long)arg, u, one = 1;
	struct pipe_ a, b;
	pthread_t t;

	u = socket(up->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (u == -1 || connect(u, up->ai_addr, up->ai_addrlen) == -1) {
		if (u != -1)
			close(u);
		close(c);
		return NULL;
	}
	setsockopt(u, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	a = (struct pipe_){c, u};
	b = (struct pipe_){u, c};
	if (pthread_create(&t, NULL, copy, &a) != 0) {
		close(u);
		close(c);
		return NULL;
	}
	copy(&b);
	pthread_join(t, NULL);
	close(u);
	close(c);
	return NULL;
}

int
main(int argc, char **argv)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
	struct sockaddr_in sin = {.sin_family = AF_INET};
	char host[256], *colon;
	int l, c, one = 1;
	pthread_attr_t at;
	pthread_t t;

	if (argc != 3) {
		fprintf(stderr, "usage: llmf-relay PORT HOST:PORT\n");
		return 2;
	}
	snprintf(host, sizeof host, "%s", argv[2]);
	if ((colon = strrchr(host, ':')) == NULL) {
		fprintf(stderr, "llmf-relay: %s: no port\n", argv[2]);
		return 2;
	}
	*colon = '\0';
	if (getaddrinfo(host, colon + 1, &hints, &up) != 0) {
		fprintf(stderr, "llmf-relay: %s: cannot resolve\n", argv[2]);
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	sin.sin_port = htons((uint16_t)atoi(argv[1]));
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (l == -1 || bind(l, (struct sockaddr *)&sin, sizeof sin) == -1 ||
	    listen(l, 4096) == -1) {
		fprintf(stderr, "llmf-relay: listen on %s: %s\n", argv[1],
		        strerror(errno));
		return 1;
	}
	pthread_attr_init(&at);
	pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&at, 256 << 10);
	for (;;) {
		if ((c = accept4(l, NULL, NULL, SOCK_CLOEXEC)) == -1) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			usleep(10000); /* EMFILE and the like */
			continue;
		}
		if (pthread_create(&t, &at, serve, (void *)(long)c) != 0)
			close(c);
	}
}
