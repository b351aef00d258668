/* ident.c: who is calling (issue 17). On the Unix socket the kernel says
 * (SO_PEERCRED: uid, gid, pid; SO_PEERGROUPS), taken once per connection;
 * on any listener a virtual key (Authorization: Bearer, x-api-key) names
 * a client by the SHA-256 configured for it, compared in constant time.
 * Neither the key nor its hash is ever logged, shown or kept. */
#ifndef LLMFD_IDENT_H
#define LLMFD_IDENT_H

#include <stddef.h>
#include <stdint.h>

#include "common/cfg.h"

#define PEER_MAX_GROUPS 32

/* The peer of a client connection. */
struct peer {
	int local; /* a Unix-socket connection */
	int cred;  /* uid, gid and pid are known */
	uint32_t uid, gid;
	int32_t pid;
	int ngroups; /* supplementary groups, when the kernel gives them */
	uint32_t groups[PEER_MAX_GROUPS];
	char comm[16]; /* /proc/PID/comm, for logs only; "" if unknown */
};

/* Fill p for connected socket fd (once per connection: a getsockname,
 * two getsockopt and a read of /proc/PID/comm, which never waits on a
 * disk). */
void ident_peer(int fd, struct peer *p);

/* Why a caller is refused. */
struct ident_err {
	int status; /* 401 or 403 */
	const char *type, *code;
	char msg[200];
};

/* The client of a request from peer p (NULL: unknown, as TCP) carrying
 * the Authorization and x-api-key header values authz and xkey (NULL if
 * absent): its index in cfg->clients, or -1 with e filled. See
 * docs/design.md "Clients" for the order. */
int ident_client(const struct cfg *, const struct peer *p, const char *authz,
                 const char *xkey, struct ident_err *e);
/* The client whose key hash is SHA-256(key), or -1: every configured hash
 * is compared (CRYPTO_memcmp), whichever matches. */
int ident_key(const struct cfg *, const char *key, size_t n);
/* The key in the header values (a Bearer token, else x-api-key): a
 * pointer into them and its length, or NULL. */
const char *ident_key_of(const char *authz, const char *xkey, size_t *n);

#endif
