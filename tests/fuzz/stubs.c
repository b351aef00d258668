/* What the fuzz targets link but never call. Weak, so that a target which
 * links the real one (fuzz_http links http.c) gets that instead:
 * conn.c's accept back-off turns the listeners of http.c on and off, and
 * http.c tells the engine (request.c, not linked) of a client gone. */
#include "worker/http.h"
#include "worker/request.h"

__attribute__((weak)) void
http_listeners(struct worker *w, int on)
{
	(void)w;
	(void)on;
}

__attribute__((weak)) void
req_client_gone(struct req *r)
{
	(void)r;
}
