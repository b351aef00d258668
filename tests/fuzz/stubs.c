/* What the fuzz targets link but never call: conn.c's accept back-off
 * turns the listeners of http.c (not linked here) on and off. */
#include "worker/http.h"

void
http_listeners(struct worker *w, int on)
{
	(void)w;
	(void)on;
}
