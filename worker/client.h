/* client.c: the engine's client_ops over http.c, and the request entry
 * points. */
#ifndef LLMFD_CLIENT_H
#define LLMFD_CLIENT_H

struct worker;
struct hconn;

void client_chat(struct hconn *, struct worker *);
void client_embeddings(struct hconn *, struct worker *);
void client_messages(struct hconn *, struct worker *);
void client_responses(struct hconn *, struct worker *);
void client_count_tokens(struct hconn *, struct worker *);

#endif
