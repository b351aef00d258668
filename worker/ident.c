/* Client identity: the peer's credentials on the Unix socket, virtual keys
 * on any listener (see ident.h).
 *
 * The order: a presented key that matches a configured hash names its
 * client on either listener; on the Unix socket the peer's uid, then its
 * groups (primary, then supplementary) name one; anything else is the
 * "default" client when default_client is "allow". A TCP listener
 * requires a key when tcp_require_key is set or default_client is "deny":
 * there a missing or unknown key is 401. On the Unix socket an unknown
 * key is ignored (SDKs send a placeholder key; the kernel's word is
 * enough), and a peer that matches nothing under "deny" is 403. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "worker/ident.h"

/* The peer's program name from /proc/PID/comm (procfs: no disk wait). */
static void
ident_comm(struct peer *p)
{
	char path[64];
	ssize_t n;
	int fd;

	snprintf(path, sizeof path, "/proc/%d/comm", (int)p->pid);
	if (p->pid <= 0 || (fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return;
	n = read(fd, p->comm, sizeof p->comm - 1);
	close(fd);
	if (n <= 0) {
		p->comm[0] = '\0';
		return;
	}
	p->comm[n] = '\0';
	p->comm[strcspn(p->comm, "\n")] = '\0';
	for (char *c = p->comm; *c != '\0'; c++)
		if (!isprint((unsigned char)*c) || *c == ' ' || *c == '"')
			*c = '_';
}

/* Fill p for connected socket fd. */
void
ident_peer(int fd, struct peer *p)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss, cl;
	struct ucred uc;
	gid_t g[PEER_MAX_GROUPS];

	memset(p, 0, sizeof *p);
	if (fd < 0 || getsockname(fd, (struct sockaddr *)&ss, &sl) == -1 ||
	    ss.ss_family != AF_UNIX)
		return;
	p->local = 1;
	cl = sizeof uc;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &cl) == -1 ||
	    cl != sizeof uc)
		return;
	p->cred = 1;
	p->uid = uc.uid;
	p->gid = uc.gid;
	p->pid = uc.pid;
#ifdef SO_PEERGROUPS
	cl = sizeof g;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &cl) == 0) {
		p->ngroups = (int)(cl / sizeof g[0]);
		for (int i = 0; i < p->ngroups; i++)
			p->groups[i] = g[i];
	}
#else
	(void)g;
#endif
	ident_comm(p);
}

/* The key in the headers: a Bearer token, else x-api-key; NULL if none. */
const char *
ident_key_of(const char *authz, const char *xkey, size_t *n)
{
	const char *k = NULL;

	if (authz != NULL && strncasecmp(authz, "Bearer ", 7) == 0)
		k = authz + 7;
	else if (xkey != NULL)
		k = xkey;
	if (k == NULL)
		return NULL;
	while (*k == ' ' || *k == '\t')
		k++;
	*n = strlen(k);
	while (*n > 0 && (k[*n - 1] == ' ' || k[*n - 1] == '\t'))
		(*n)--;
	return *n > 0 ? k : NULL;
}

/* The client whose key hash matches, comparing every hash (constant time
 * in the key; the count of configured hashes is no secret). */
int
ident_key(const struct cfg *cfg, const char *key, size_t n)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	int found = -1;

	if (EVP_Digest(key, n, md, &mdlen, EVP_sha256(), NULL) != 1 ||
	    mdlen != 32)
		return -1;
	for (int i = 0; i < cfg->nclient; i++)
		for (int k = 0; k < cfg->clients[i].nkeys; k++) {
			int eq =
			    CRYPTO_memcmp(md, cfg->clients[i].key_sha256[k],
			                  32) == 0;

			found = eq && found < 0 ? i : found;
		}
	OPENSSL_cleanse(md, sizeof md);
	return found;
}

/* The first client with the peer's uid, else with one of its groups. */
static int
ident_unix(const struct cfg *cfg, const struct peer *p)
{
	for (int i = 0; i < cfg->nclient; i++)
		if (cfg->clients[i].uid >= 0 &&
		    (uint32_t)cfg->clients[i].uid == p->uid)
			return i;
	for (int i = 0; i < cfg->nclient; i++) {
		long g = cfg->clients[i].gid;

		if (g < 0)
			continue;
		if ((uint32_t)g == p->gid)
			return i;
		for (int k = 0; k < p->ngroups; k++)
			if ((uint32_t)g == p->groups[k])
				return i;
	}
	return -1;
}

/* Fill e with status and a message; returns -1. */
static int
ident_fail(struct ident_err *e, int status, const char *msg)
{
	e->status = status;
	e->type = status == 401 ? "invalid_request_error" : "permission_error";
	e->code = status == 401 ? "invalid_api_key" : "client_not_allowed";
	snprintf(e->msg, sizeof e->msg, "%s", msg);
	return -1;
}

/* The client of a request; see ident.h and the top of this file. */
int
ident_client(const struct cfg *cfg, const struct peer *p, const char *authz,
             const char *xkey, struct ident_err *e)
{
	int local = p != NULL && p->local, i = -1;
	int need_key = !local && (cfg->tcp_require_key ||
	                          cfg->default_client == DEFCLIENT_DENY);
	const char *key;
	size_t n = 0;

	if ((key = ident_key_of(authz, xkey, &n)) != NULL &&
	    (i = ident_key(cfg, key, n)) >= 0)
		return i;
	if (need_key)
		return ident_fail(e, 401,
		                  key ? "invalid API key"
		                      : "an API key is required "
		                        "(Authorization: Bearer or x-api-key)");
	if (local && p->cred && (i = ident_unix(cfg, p)) >= 0)
		return i;
	if (cfg->def_client >= 0)
		return cfg->def_client;
	ident_fail(e, 403, "caller is not a configured client");
	if (local && p->cred)
		snprintf(e->msg, sizeof e->msg,
		         "uid %u is not a configured client of this llmfd",
		         (unsigned)p->uid);
	return -1;
}
