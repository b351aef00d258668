/* Secrets llmfd must never show: the configured key values themselves
 * (every deployment's api_key, header values marked secret, the AWS
 * secret key and session token, a service account's private key and the
 * access tokens a worker obtains with it), and anything shaped like a
 * provider key. Text that came from an upstream is masked with
 * secret_redact before it is kept or shown: error replies and their
 * attempt trail, log lines, the table's last error, llmfctl. */
#ifndef LLMFD_SECRET_H
#define LLMFD_SECRET_H

#include <stddef.h>

struct cfg;

/* Values shorter than this are not treated as secrets ("none", "ollama"
 * for local servers); masking them would garble every message. */
#define SECRET_MIN 8

/* Register one secret value (copied); ignored if shorter than SECRET_MIN. */
void secret_add(const char *);
/* Forget one registered value (an access token that was replaced). */
void secret_remove(const char *);
/* Forget every registered value, wiping the copies. */
void secret_clear(void);
/* Replace the registry with the secrets of a config. */
void secret_load(const struct cfg *);
/* Mask, in place, every registered value in s and every word shaped like
 * a provider key (sk-..., AIza...); returns how many were masked. */
size_t secret_redact(char *s);

#endif
