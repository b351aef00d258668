/* Unit tests for common/addr.c: socket addresses from IP literals. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <netinet/in.h>

#include "common/addr.h"

Test(addr, ip_literals_and_names)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	socklen_t len = 0;
	int loop;

	cr_assert(eq(int, addr_ip("127.0.0.1", 8080, &ss, &len), 0));
	cr_assert(eq(int, ss.ss_family, AF_INET));
	cr_assert(eq(int, ntohs(sin->sin_port), 8080));
	cr_assert(eq(u32, ntohl(sin->sin_addr.s_addr), 0x7f000001));
	cr_assert(eq(int, (int)len, (int)sizeof *sin));
	cr_assert(eq(int, addr_ip("::1", 0, &ss, &len), 0));
	cr_assert(eq(int, ss.ss_family, AF_INET6));
	cr_assert(eq(int, ntohs(sin6->sin6_port), 0));
	loop = IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr);
	cr_assert(loop);
	cr_assert(eq(int, (int)len, (int)sizeof *sin6));
	/* names are resolved elsewhere; brackets are not part of a literal */
	cr_assert(eq(int, addr_ip("localhost", 80, &ss, &len), -1));
	cr_assert(eq(int, addr_ip("[::1]", 80, &ss, &len), -1));
	cr_assert(eq(int, addr_ip("", 80, &ss, &len), -1));
}
