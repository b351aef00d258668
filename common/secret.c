/* The registry of secret values and their masking (see secret.h). */
#include <ctype.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "common/cfg.h"
#include "common/secret.h"

/* Registered values, longest first (so a value that contains another is
 * masked whole). */
static char **secrets;
static size_t nsecrets, capsecrets;

/* Register one value. */
void
secret_add(const char *v)
{
	size_t len = strlen(v), i;
	char **grown, *copy;

	if (len < SECRET_MIN)
		return;
	for (i = 0; i < nsecrets; i++)
		if (strcmp(secrets[i], v) == 0)
			return;
	if (nsecrets == capsecrets) {
		capsecrets = capsecrets ? capsecrets * 2 : 16;
		if ((grown = realloc(secrets, capsecrets * sizeof *grown)) ==
		    NULL)
			return;
		secrets = grown;
	}
	if ((copy = strdup(v)) == NULL)
		return;
	for (i = nsecrets; i > 0 && strlen(secrets[i - 1]) < len; i--)
		secrets[i] = secrets[i - 1];
	secrets[i] = copy;
	nsecrets++;
}

/* Forget every value, wiping the copies. */
void
secret_clear(void)
{
	for (size_t i = 0; i < nsecrets; i++) {
		OPENSSL_cleanse(secrets[i], strlen(secrets[i]));
		free(secrets[i]);
	}
	free(secrets);
	secrets = NULL;
	nsecrets = capsecrets = 0;
}

/* Forget one value, wiping its copy. */
void
secret_remove(const char *v)
{
	for (size_t i = 0; i < nsecrets; i++) {
		if (strcmp(secrets[i], v) != 0)
			continue;
		OPENSSL_cleanse(secrets[i], strlen(secrets[i]));
		free(secrets[i]);
		memmove(&secrets[i], &secrets[i + 1],
		        (nsecrets - i - 1) * sizeof *secrets);
		nsecrets--;
		return;
	}
}

/* A PEM key: the whole text and each line of its body. */
static void
secret_add_pem(const char *pem)
{
	char line[128];
	size_t n;

	secret_add(pem);
	for (const char *p = pem; *p != '\0'; p += n + (p[n] != '\0')) {
		n = strcspn(p, "\r\n");
		if (n < sizeof line && n > 0 && strncmp(p, "-----", 5) != 0) {
			memcpy(line, p, n);
			line[n] = '\0';
			secret_add(line);
		}
	}
	OPENSSL_cleanse(line, sizeof line);
}

/* Every deployment's key and its header values marked secret, the AWS
 * secret key and session token, a service account's private key, and the
 * fleet's Redis password. */
void
secret_load(const struct cfg *cfg)
{
	secret_clear();
	secret_add(cfg->fleet_password);
	for (int i = 0; i < cfg->ndeploy; i++) {
		const struct deploy_cfg *d = &cfg->deploy[i];

		secret_add(d->api_key);
		secret_add(d->aws_secret_access_key);
		secret_add(d->aws_session_token);
		if (d->sa_private_key)
			secret_add_pem(d->sa_private_key);
		for (int k = 0; k < d->nheaders; k++)
			if (d->headers[k].secret)
				secret_add(d->headers[k].value);
	}
}

/* Mask words shaped like a provider key (sk-..., AIza...): the prefix
 * stays, at least 8 characters after it become '*'. */
static size_t
secret_shapes(char *m)
{
	size_t pre, n = 0;
	char *p, *q;

	for (p = m; *p != '\0'; p++) {
		if (p > m && isalnum((unsigned char)p[-1]))
			continue;
		if (strncmp(p, "sk-", 3) == 0)
			pre = 3;
		else if (strncmp(p, "AIza", 4) == 0)
			pre = 4;
		else
			continue;
		for (q = p + pre; isalnum((unsigned char)*q) || *q == '-' ||
		                  *q == '_' || *q == '*' || *q == '.';)
			q++;
		if (q - p - (ptrdiff_t)pre >= 8) {
			memset(p + pre, '*', (size_t)(q - p) - pre);
			n++;
		}
		p = q - 1;
	}
	return n;
}

/* Mask registered values, then key shapes. */
size_t
secret_redact(char *s)
{
	size_t n = 0, len;
	char *p;

	if (s == NULL)
		return 0;
	for (size_t i = 0; i < nsecrets; i++) {
		len = strlen(secrets[i]);
		for (p = s; (p = strstr(p, secrets[i])) != NULL; p += len) {
			memset(p, '*', len);
			n++;
		}
	}
	return n + secret_shapes(s);
}
