/* client.c: client connections over evhttp and the request entry points. */
#ifndef LLMFD_CLIENT_H
#define LLMFD_CLIENT_H

struct worker;
struct evhttp_request;

void client_chat(struct evhttp_request *, void *);
void client_embeddings(struct evhttp_request *, void *);
void client_messages(struct evhttp_request *, void *);
void client_responses(struct evhttp_request *, void *);
void client_count_tokens(struct evhttp_request *, void *);
/* Drain: idle keep-alive connections close now, busy ones after their
 * reply. */
void client_drain(struct worker *);
void client_free_all(struct worker *);
/* Client connections still open. */
int client_open(void);

#endif
