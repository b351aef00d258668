/* Socket addresses from configured hosts. */
#ifndef LLMFD_ADDR_H
#define LLMFD_ADDR_H

#include <sys/socket.h>

/* The address of host, an IPv4 or IPv6 literal, and port, in *ss (*len
 * its length); 0, or -1 when host is not a literal (a name to resolve). */
int addr_ip(const char *host, int port, struct sockaddr_storage *ss,
            socklen_t *len);

#endif
