/* Client-facing HTTP: evhttp on the inherited listeners, routes, and the
 * small endpoints (/v1/models, /healthz, /metrics). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <event2/bufferevent.h>

#include "common/clock.h"
#include "common/log.h"
#include "worker/client.h"
#include "worker/ingress.h"
#include "worker/worker.h"

/* Send a JSON body with a status. */
void
server_send_json(struct evhttp_request *req, int status, struct buf *b)
{
	evhttp_add_header(evhttp_request_get_output_headers(req),
	                  "Content-Type", "application/json");
	evbuffer_add(evhttp_request_get_output_buffer(req),
	             b->data ? b->data : "", b->len);
	evhttp_send_reply(req, status, http_reason(status), NULL);
}

/* Send an OpenAI-shaped error without a request context. */
void
server_send_error(struct evhttp_request *req, int status, const char *type,
                  const char *code, const char *fmt, ...)
{
	struct buf b = {0}, m = {0};
	va_list ap;

	va_start(ap, fmt);
	buf_vprintf(&m, fmt, ap);
	va_end(ap);
	ingress_openai_error(&b, status, type, code, m.data ? m.data : "", NULL,
	                     NULL, 0);
	server_send_json(req, status, &b);
	buf_free(&b);
	buf_free(&m);
}

/* Whether the client is an Anthropic SDK (it always sends the version). */
static int
server_anthropic(struct evhttp_request *req)
{
	return evhttp_find_header(evhttp_request_get_input_headers(req),
	                          "anthropic-version") != NULL;
}

/* One model entry in Anthropic's shape (INGRESS.md §1.1). */
static void
server_model_anthropic(struct jw *jw, const char *id)
{
	jw_obj(jw);
	jw_key(jw, "type");
	jw_cstr(jw, "model");
	jw_key(jw, "id");
	jw_cstr(jw, id);
	jw_key(jw, "display_name");
	jw_cstr(jw, id);
	jw_key(jw, "created_at");
	jw_cstr(jw, "2024-01-01T00:00:00Z");
	jw_obj_end(jw);
}

/* GET /v1/models in Anthropic's shape: the groups, one page. */
static void
server_models_anthropic(struct evhttp_request *req, const struct cfg *cfg)
{
	struct buf b = {0};
	struct jw jw;

	jw_init(&jw, &b);
	jw_obj(&jw);
	jw_key(&jw, "data");
	jw_arr(&jw);
	for (int i = 0; i < cfg->ngroup; i++)
		server_model_anthropic(&jw, cfg->groups[i].name);
	jw_arr_end(&jw);
	jw_key(&jw, "has_more");
	jw_bool(&jw, 0);
	jw_key(&jw, "first_id");
	if (cfg->ngroup)
		jw_cstr(&jw, cfg->groups[0].name);
	else
		jw_null(&jw);
	jw_key(&jw, "last_id");
	if (cfg->ngroup)
		jw_cstr(&jw, cfg->groups[cfg->ngroup - 1].name);
	else
		jw_null(&jw);
	jw_obj_end(&jw);
	server_send_json(req, 200, &b);
	buf_free(&b);
}

/* GET /v1/models/{id}: one group or deployment, in the client's shape. */
static void
server_model_one(struct evhttp_request *req, struct worker *w, const char *id)
{
	const struct cfg *cfg = w->cfg;
	struct buf b = {0};
	struct jw jw;

	if (cfg_find_group(cfg, id) == NULL && cfg_find_deploy(cfg, id) < 0) {
		if (server_anthropic(req)) {
			buf_printf(&b,
			           "{\"type\":\"error\",\"error\":{\"type\":"
			           "\"not_found_error\",\"message\":\"model "
			           "not found\"}}");
			server_send_json(req, 404, &b);
			buf_free(&b);
		} else
			server_send_error(
			    req, 404, "invalid_request_error",
			    "model_not_found",
			    "model '%s' is not a configured group "
			    "or deployment",
			    id);
		return;
	}
	jw_init(&jw, &b);
	if (server_anthropic(req))
		server_model_anthropic(&jw, id);
	else {
		jw_obj(&jw);
		jw_key(&jw, "id");
		jw_cstr(&jw, id);
		jw_key(&jw, "object");
		jw_cstr(&jw, "model");
		jw_key(&jw, "created");
		jw_int(&jw, clock_wall_ms() / 1000);
		jw_key(&jw, "owned_by");
		jw_cstr(&jw, "llmfd");
		jw_obj_end(&jw);
	}
	server_send_json(req, 200, &b);
	buf_free(&b);
}

/* GET /v1/models: the configured groups, then single deployments. */
static void
server_models(struct evhttp_request *req, void *arg)
{
	struct worker *w = arg;
	const struct cfg *cfg = w->cfg;
	struct buf b = {0};
	struct jw jw;
	long long now = clock_wall_ms() / 1000;

	if (server_anthropic(req)) {
		server_models_anthropic(req, cfg);
		return;
	}

	jw_init(&jw, &b);
	jw_obj(&jw);
	jw_key(&jw, "object");
	jw_cstr(&jw, "list");
	jw_key(&jw, "data");
	jw_arr(&jw);
	for (int i = 0; i < cfg->ngroup; i++) {
		const struct group_cfg *g = &cfg->groups[i];

		jw_obj(&jw);
		jw_key(&jw, "id");
		jw_cstr(&jw, g->name);
		jw_key(&jw, "object");
		jw_cstr(&jw, "model");
		jw_key(&jw, "created");
		jw_int(&jw, now);
		jw_key(&jw, "owned_by");
		jw_cstr(&jw, "llmfd");
		jw_key(&jw, "deployments");
		jw_arr(&jw);
		for (int k = 0; k < g->ndeploy; k++) {
			const struct deploy_cfg *d = &cfg->deploy[g->deploy[k]];
			jw_obj(&jw);
			jw_key(&jw, "name");
			jw_cstr(&jw, d->name);
			jw_key(&jw, "provider");
			jw_cstr(&jw, cfg_provider_name(d->provider));
			jw_key(&jw, "model");
			jw_cstr(&jw, d->model);
			jw_obj_end(&jw);
		}
		jw_arr_end(&jw);
		jw_obj_end(&jw);
	}
	jw_arr_end(&jw);
	jw_obj_end(&jw);
	server_send_json(req, 200, &b);
	buf_free(&b);
}

/* GET /healthz */
static void
server_healthz(struct evhttp_request *req, void *arg)
{
	struct worker *w = arg;
	struct buf b = {0};

	buf_printf(&b, "{\"status\":\"%s\",\"pid\":%d,\"generation\":%llu}",
	           w->draining ? "draining" : "ok", (int)getpid(),
	           (unsigned long long)atomic_load(&w->shm->hdr->generation));
	server_send_json(req, 200, &b);
	buf_free(&b);
}

/* GET /metrics: the shared table in Prometheus text format 0.0.4. */
static void
server_metrics(struct evhttp_request *req, void *arg)
{
	struct worker *w = arg;
	struct buf b = {0};

	metrics_render(w, &b);
	if (b.oom) {
		buf_free(&b);
		server_send_error(req, 503, "llmfd_error", "out_of_memory",
		                  "out of memory");
		return;
	}
	evhttp_add_header(evhttp_request_get_output_headers(req),
	                  "Content-Type",
	                  "text/plain; version=0.0.4; charset=utf-8");
	evbuffer_add(evhttp_request_get_output_buffer(req), b.data, b.len);
	evhttp_send_reply(req, 200, "OK", NULL);
	buf_free(&b);
}

/* Anything else. */
static void
server_notfound(struct evhttp_request *req, void *arg)
{
	const char *path =
	    evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
	char id[CFG_NAME_MAX];

	if (path && strncmp(path, "/v1/models/", 11) == 0 &&
	    evhttp_request_get_command(req) == EVHTTP_REQ_GET) {
		char *dec = evhttp_uridecode(path + 11, 0, NULL);

		snprintf(id, sizeof id, "%s", dec ? dec : "");
		free(dec);
		server_model_one(req, arg, id);
		return;
	}
	server_send_error(req, 404, "invalid_request_error", "not_found",
	                  "unknown endpoint %s", evhttp_request_get_uri(req));
}

/* Accept one connection per wake-up (nginx's multi_accept off): all
 * workers wait on the same listening sockets, and libevent would otherwise
 * accept until EAGAIN, letting whichever worker wakes first take a whole
 * burst of connections while the other idles. The listeners are paused
 * after each accept and resumed from the loop, so the next connection goes
 * to whichever worker gets there first, usually the less busy one. */
static struct bufferevent *
server_bevcb(struct event_base *base, void *arg)
{
	struct worker *w = arg;

	for (int i = 0; i < w->nlisten; i++)
		if (w->bound[i])
			evconnlistener_disable(
			    evhttp_bound_socket_get_listener(w->bound[i]));
	event_active(w->ev_reaccept, EV_TIMEOUT, 0);
	return bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
}

/* Resume accepting (unless draining, when the listeners are gone). */
static void
server_reaccept(evutil_socket_t fd, short ev, void *arg)
{
	struct worker *w = arg;

	(void)fd;
	(void)ev;
	for (int i = 0; i < w->nlisten; i++)
		if (w->bound[i])
			evconnlistener_enable(
			    evhttp_bound_socket_get_listener(w->bound[i]));
}

/* Set up evhttp on the inherited listening sockets. */
int
server_setup(struct worker *w)
{
	if ((w->http = evhttp_new(w->base)) == NULL)
		return -1;
	evhttp_set_allowed_methods(w->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST |
	                                        EVHTTP_REQ_HEAD);
	evhttp_set_max_body_size(w->http, (ev_ssize_t)(32 << 20) + 1);
	evhttp_set_timeout(w->http, 3600);
	evhttp_set_cb(w->http, "/v1/chat/completions", client_chat, w);
	evhttp_set_cb(w->http, "/chat/completions", client_chat, w);
	evhttp_set_cb(w->http, "/v1/embeddings", client_embeddings, w);
	evhttp_set_cb(w->http, "/embeddings", client_embeddings, w);
	evhttp_set_cb(w->http, "/v1/messages", client_messages, w);
	evhttp_set_cb(w->http, "/messages", client_messages, w);
	evhttp_set_cb(w->http, "/v1/messages/count_tokens", client_count_tokens,
	              w);
	evhttp_set_cb(w->http, "/v1/responses", client_responses, w);
	evhttp_set_cb(w->http, "/responses", client_responses, w);
	evhttp_set_cb(w->http, "/v1/models", server_models, w);
	evhttp_set_cb(w->http, "/healthz", server_healthz, w);
	evhttp_set_cb(w->http, "/metrics", server_metrics, w);
	evhttp_set_gencb(w->http, server_notfound, w);
	if ((w->ev_reaccept = event_new(w->base, -1, 0, server_reaccept, w)) ==
	    NULL)
		return -1;
	evhttp_set_bevcb(w->http, server_bevcb, w);
	for (int i = 0; i < w->nlisten; i++)
		if ((w->bound[i] = evhttp_accept_socket_with_handle(
		         w->http, w->listen_fd[i])) == NULL) {
			log_warn("evhttp_accept_socket(%d) failed",
			         w->listen_fd[i]);
			return -1;
		}
	return 0;
}

/* Stop taking new connections; requests in flight go on. */
void
server_stop_accepting(struct worker *w)
{
	for (int i = 0; i < w->nlisten; i++)
		if (w->bound[i]) {
			evhttp_del_accept_socket(w->http, w->bound[i]);
			w->bound[i] = NULL;
		}
}
