/* Client-facing HTTP: the routes on http.c's server, and the small
 * endpoints (/v1/models, /healthz, /metrics). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "common/clock.h"
#include "common/log.h"
#include "worker/client.h"
#include "worker/conn.h"
#include "worker/http.h"
#include "worker/ingress.h"
#include "worker/worker.h"

/* Send a JSON body with a status. */
void
server_send_json(struct hconn *req, int status, struct buf *b)
{
	http_reply(req, status, "application/json", b->data ? b->data : "",
	           b->len);
}

/* Send an OpenAI-shaped error without a request context. */
void
server_send_error(struct hconn *req, int status, const char *type,
                  const char *code, const char *fmt, ...)
{
	struct buf b = {0}, m = {0};
	va_list ap;

	va_start(ap, fmt);
	buf_vprintf(&m, fmt, ap);
	va_end(ap);
	ingress_openai_error(&b, status, type, code, m.data ? m.data : "", NULL,
	                     NULL, 0);
	if (status == 429 || status == 503) /* every 429/503 says when */
		http_add_header(req, "Retry-After", "1");
	server_send_json(req, status, &b);
	buf_free(&b);
	buf_free(&m);
}

/* Whether the client is an Anthropic SDK (it always sends the version). */
static int
server_anthropic(struct hconn *req)
{
	return http_header(req, "anthropic-version") != NULL;
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

/* The id of model i of the /v1/models list: the groups (but patterns'),
 * then the aliases; NULL when i is not listed (a pattern's group) or past
 * the end (*end set). */
static const char *
server_model_id(const struct cfg *cfg, int i, int *end)
{
	*end = i >= cfg->ngroup + cfg->nalias;
	if (*end)
		return NULL;
	if (i >= cfg->ngroup)
		return cfg->aliases[i - cfg->ngroup].name;
	return cfg->groups[i].pattern ? NULL : cfg->groups[i].name;
}

/* GET /v1/models in Anthropic's shape: the groups and aliases, one page. */
static void
server_models_anthropic(struct hconn *req, const struct cfg *cfg)
{
	const char *id, *first = NULL, *last = NULL;
	struct buf b = {0};
	struct jw jw;
	int end = 0;

	jw_init(&jw, &b);
	jw_obj(&jw);
	jw_key(&jw, "data");
	jw_arr(&jw);
	for (int i = 0; !end; i++)
		if ((id = server_model_id(cfg, i, &end)) != NULL) {
			server_model_anthropic(&jw, id);
			first = first ? first : id;
			last = id;
		}
	jw_arr_end(&jw);
	jw_key(&jw, "has_more");
	jw_bool(&jw, 0);
	jw_key(&jw, "first_id");
	jw_cstr(&jw, first);
	jw_key(&jw, "last_id");
	jw_cstr(&jw, last);
	jw_obj_end(&jw);
	server_send_json(req, 200, &b);
	buf_free(&b);
}

/* Open an OpenAI model object: id, object, created and owned_by written;
 * the caller adds what it has and closes it. */
static void
server_model_open(struct jw *jw, const char *id, long long created)
{
	jw_obj(jw);
	jw_key(jw, "id");
	jw_cstr(jw, id);
	jw_key(jw, "object");
	jw_cstr(jw, "model");
	jw_key(jw, "created");
	jw_int(jw, created);
	jw_key(jw, "owned_by");
	jw_cstr(jw, "llmfd");
}

/* GET /v1/models/{id}: any model name a request may use (a group, a
 * deployment, an alias, a pattern's model, provider/model), in the
 * client's shape. */
static void
server_model_one(struct hconn *req, struct worker *w, const char *id)
{
	const struct cfg *cfg = w->cfg;
	struct buf b = {0};
	struct jw jw;

	if (!cfg_model_routes(cfg, id)) {
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
		server_model_open(&jw, id, clock_wall_ms() / 1000);
		jw_obj_end(&jw);
	}
	server_send_json(req, 200, &b);
	buf_free(&b);
}

/* GET /v1/models: the configured groups (with their deployments), then
 * the aliases (with the name they stand for). */
static void
server_models(struct hconn *req, struct worker *w)
{
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

		if (g->pattern != NULL) /* no model of its own */
			continue;
		server_model_open(&jw, g->name, now);
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
	for (int i = 0; i < cfg->nalias; i++) {
		server_model_open(&jw, cfg->aliases[i].name, now);
		jw_key(&jw, "alias_of");
		jw_cstr(&jw, cfg->aliases[i].group);
		jw_obj_end(&jw);
	}
	jw_arr_end(&jw);
	jw_obj_end(&jw);
	server_send_json(req, 200, &b);
	buf_free(&b);
}

/* GET /healthz */
static void
server_healthz(struct hconn *req, struct worker *w)
{
	struct buf b = {0};

	buf_printf(&b, "{\"status\":\"%s\",\"pid\":%d,\"generation\":%llu}",
	           w->draining ? "draining" : "ok", (int)getpid(),
	           (unsigned long long)atomic_load(&w->shm->hdr->generation));
	server_send_json(req, 200, &b);
	buf_free(&b);
}

/* GET /metrics: the shared table in Prometheus text format 0.0.4. */
static void
server_metrics(struct hconn *req, struct worker *w)
{
	struct buf b = {0};

	metrics_render(w, &b);
	if (b.oom) {
		buf_free(&b);
		server_send_error(req, 503, "llmfd_error", "out_of_memory",
		                  "out of memory");
		return;
	}
	http_reply(req, 200, "text/plain; version=0.0.4; charset=utf-8",
	           b.data ? b.data : "", b.len);
	buf_free(&b);
}

/* Anything else. */
static void
server_notfound(struct hconn *req, struct worker *w)
{
	const char *path = http_path(req);
	char id[CFG_NAME_MAX];
	struct buf dec = {0};

	if (strncmp(path, "/v1/models/", 11) == 0 &&
	    http_method(req) != HTTP_POST) {
		buf_add_unescaped(&dec, path + 11, strlen(path + 11));
		buf_copy(id, sizeof id, dec.data ? dec.data : "", dec.len);
		buf_free(&dec);
		server_model_one(req, w, id);
		return;
	}
	server_send_error(req, 404, "invalid_request_error", "not_found",
	                  "unknown endpoint %s", http_target(req));
}

/* Resume accepting (unless draining, when the listeners are gone, or
 * backed off after EMFILE). All workers wait on the same listening
 * sockets, and libevent would otherwise accept until EAGAIN, letting
 * whichever worker wakes first take a whole burst of connections while
 * the other idles: http.c pauses the listeners after each accept (nginx's
 * multi_accept off) and this resumes them from the loop, so the next
 * connection goes to whichever worker gets there first, usually the less
 * busy one. */
static void
server_reaccept(evutil_socket_t fd, short ev, void *arg)
{
	struct worker *w = arg;

	(void)fd;
	(void)ev;
	if (conn_accept_paused() || w->draining)
		return;
	http_listeners(w, 1);
}

/* Set up the server on the inherited listening sockets. */
int
server_setup(struct worker *w)
{
	int one = 1;

	http_route("/v1/chat/completions", client_chat);
	http_route("/chat/completions", client_chat);
	http_route("/v1/embeddings", client_embeddings);
	http_route("/embeddings", client_embeddings);
	http_route("/v1/messages", client_messages);
	http_route("/messages", client_messages);
	http_route("/v1/messages/count_tokens", client_count_tokens);
	http_route("/v1/responses", client_responses);
	http_route("/responses", client_responses);
	http_route("/v1/models", server_models);
	http_route("/healthz", server_healthz);
	http_route("/metrics", server_metrics);
	if ((w->ev_reaccept = event_new(w->base, -1, 0, server_reaccept, w)) ==
	        NULL ||
	    conn_init(w) == -1)
		return -1;
	/* Accepted TCP sockets inherit TCP_NODELAY from the listener: stream
	 * frames go out at once, not held back by Nagle until the client's
	 * delayed ACK (tens of ms per frame). A Unix socket refuses it. */
	for (int i = 0; i < w->nlisten; i++)
		(void)setsockopt(w->listen_fd[i], IPPROTO_TCP, TCP_NODELAY,
		                 &one, sizeof one);
	return http_setup(w, server_notfound);
}

/* Stop taking new connections; requests in flight go on. */
void
server_stop_accepting(struct worker *w)
{
	http_stop_accepting(w);
}
