#include "auth.h"
#include "authfile.h"
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------- configuration ---------- */

static bool hba_needs(const struct hba *h, enum hba_method m, bool clientcert)
{
    for (size_t i = 0; h && i < h->n; i++)
        if (h->rules[i].method == m || (clientcert && h->rules[i].clientcert))
            return true;
    return false;
}

static int load_users(struct auth_conf *a, const struct config *cfg, char *warn, size_t warnlen,
                      char *err, size_t errlen)
{
    char path[4096];
    if (cfg->auth_secret_file)
        snprintf(path, sizeof(path), "%s", cfg->auth_secret_file);
    else
        snprintf(path, sizeof(path), "%s.secret", cfg->auth_file);
    if (authfile_server_key(path, a->key, err, errlen))
        return -1;
    a->users = authfile_load(cfg->auth_file, a->key, err, errlen);
    if (!a->users)
        return -1;
    a->scram = true;
    if (a->users->nplain)
        snprintf(warn, warnlen,
                 "auth file '%s' holds %zu plain-text password(s): store SCRAM verifiers "
                 "instead (pgwire-proxy --hash-password)",
                 cfg->auth_file, a->users->nplain);
    else if (a->users->group_readable)
        snprintf(warn, warnlen, "auth file '%s' is readable by its group", cfg->auth_file);
    return 0;
}

struct auth_conf *auth_conf_new(const struct config *cfg, char *warn, size_t warnlen, char *err,
                                size_t errlen)
{
    char ignored[8];
    if (!warn)
        warn = ignored, warnlen = sizeof(ignored);
    warn[0] = 0;
    struct auth_conf *a = calloc(1, sizeof(*a));
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->type = cfg->auth_type;
    if (cfg->auth_type == CONFIG_AUTH_HBA) {
        a->hba = hba_load(cfg->auth_hba_file, err, errlen);
        if (!a->hba)
            goto fail;
        if (hba_needs(a->hba, HBA_SCRAM, false) && !cfg->auth_file) {
            snprintf(err, errlen, "hba file '%s' has scram-sha-256 records: give --auth-file",
                     cfg->auth_hba_file);
            goto fail;
        }
        if (hba_needs(a->hba, HBA_CERT, true) && !cfg->tls_ca) {
            snprintf(err, errlen,
                     "hba file '%s' checks client certificates: give --tls-ca (client "
                     "certificates can only be checked if a root certificate store is available)",
                     cfg->auth_hba_file);
            goto fail;
        }
    }
    bool scram = cfg->auth_type == CONFIG_AUTH_SCRAM ||
                 (cfg->auth_type == CONFIG_AUTH_HBA && hba_needs(a->hba, HBA_SCRAM, false));
    if ((scram || cfg->auth_file) && load_users(a, cfg, warn, warnlen, err, errlen))
        goto fail;
    return a;
fail:
    auth_conf_free(a);
    return NULL;
}

void auth_conf_free(struct auth_conf *a)
{
    if (!a)
        return;
    authfile_free(a->users);
    hba_free(a->hba);
    memset(a->key, 0, sizeof(a->key));
    free(a);
}

bool auth_conf_knows(const struct auth_conf *a, const char *user)
{
    return a && authfile_find(a->users, user) != NULL;
}

/* ---------- which method ---------- */

void auth_decide(const struct auth_conf *a, const struct auth_query *q, struct auth_decision *d)
{
    memset(d, 0, sizeof(*d));
    switch (a ? a->type : CONFIG_AUTH_TRUST) {
    case CONFIG_AUTH_SCRAM:
        d->method = AUTH_SCRAM;
        return;
    case CONFIG_AUTH_CERT:
        d->method = AUTH_CERT;
        return;
    case CONFIG_AUTH_HBA:
        break;
    default:
        d->method = AUTH_TRUST;
        return;
    }
    struct hba_query hq = {.local = q->local,
                           .ssl = q->ssl,
                           .addr = q->addr,
                           .user = q->user,
                           .database = q->database};
    const struct hba_rule *r = hba_match(a->hba, &hq);
    if (!r) {
        d->method = AUTH_NO_MATCH;
        return;
    }
    static const enum auth_method by_hba[] = {[HBA_TRUST] = AUTH_TRUST,
                                              [HBA_REJECT] = AUTH_REJECT,
                                              [HBA_SCRAM] = AUTH_SCRAM,
                                              [HBA_CERT] = AUTH_CERT,
                                              [HBA_PEER] = AUTH_PEER};
    d->method = by_hba[r->method];
    d->clientcert = r->clientcert;
    d->line = r->line;
    d->record = r->text;
}

const char *auth_method_name(enum auth_method m)
{
    static const char *const n[] = {"trust", "reject", "scram-sha-256", "cert", "peer", "none"};
    return (unsigned)m <= AUTH_NO_MATCH ? n[m] : "?";
}

void auth_hba_refusal(const struct auth_decision *d, const char *host, const char *user,
                      const char *database, bool ssl, char *msg, size_t len)
{
    snprintf(msg, len, "%s for host \"%s\", user \"%s\", database \"%s\", %s",
             d->method == AUTH_REJECT ? "pg_hba.conf rejects connection" : "no pg_hba.conf entry",
             host, user, database, ssl ? "SSL encryption" : "no encryption");
}

/* ---------- SASL ---------- */

static void build_auth(struct wire_buf *out, uint32_t code, const void *data, size_t len)
{
    wire_build_auth(out, code, data, len);
}

void auth_sasl_begin(struct auth_sasl *a, const struct auth_conf *conf, const char *user,
                     const uint8_t *cbind, size_t cbind_len, struct wire_buf *out)
{
    memset(a, 0, sizeof(*a));
    const struct authfile_user *u = conf ? authfile_find(conf->users, user) : NULL;
    /* the mock secret is derived for every user, known or not, so both paths cost the same;
     * an unknown user runs the same exchange with it, with a salt as stable as a real one's
     * and the iteration count most real users have, and fails like a wrong password */
    static const uint8_t no_key[SCRAM_KEY_LEN];
    scram_mock_secret(conf ? conf->key : no_key, user,
                      conf && conf->users ? conf->users->iterations : SCRAM_DEFAULT_ITERATIONS,
                      &a->secret);
    a->mock = !u;
    if (u)
        a->secret = u->secret;
    a->plus_offered = cbind_len > 0 && cbind_len <= SCRAM_CBIND_MAX;
    if (a->plus_offered) {
        memcpy(a->cbind, cbind, cbind_len);
        a->cbind_len = cbind_len;
    }
    /* PostgreSQL lists -PLUS first, and only over TLS (libpq refuses it otherwise) */
    static const char plus[] = SCRAM_MECH_PLUS "\0" SCRAM_MECH "\0";
    static const char plain[] = SCRAM_MECH "\0";
    if (a->plus_offered)
        build_auth(out, 10, plus, sizeof(plus)); /* the final NUL ends the list */
    else
        build_auth(out, 10, plain, sizeof(plain));
}

static enum auth_step sasl_error(struct auth_sasl *a, const char *code, const char *message,
                                 const char *detail)
{
    snprintf(a->code, sizeof(a->code), "%s", code);
    snprintf(a->message, sizeof(a->message), "%s", message);
    snprintf(a->detail, sizeof(a->detail), "%s", detail ? detail : "");
    return AUTH_STEP_ERROR;
}

static enum auth_step exchange(struct auth_sasl *a, const uint8_t *msg, size_t len,
                               const char *server_nonce, struct wire_buf *out)
{
    char reply[2 * SCRAM_MAX_MESSAGE + 256];
    size_t n = 0;
    enum scram_status st =
        scram_exchange(&a->scram, msg, len, server_nonce, reply, sizeof(reply), &n);
    switch (st) {
    case SCRAM_CONTINUE:
        build_auth(out, 11, reply, n);
        return AUTH_STEP_CONTINUE;
    case SCRAM_OK:
        build_auth(out, 12, reply, n);
        return AUTH_STEP_OK;
    case SCRAM_FAILED:
        return AUTH_STEP_FAILED;
    case SCRAM_ERROR:
        break;
    }
    return sasl_error(a, a->scram.code, a->scram.message,
                      a->scram.detail[0] ? a->scram.detail : NULL);
}

/* The SASLInitialResponse: the mechanism, then the client-first message (or none). */
static enum auth_step initial(struct auth_sasl *a, const uint8_t *payload, size_t len,
                              const char *server_nonce, struct wire_buf *out)
{
    const char *mech = NULL, *why = NULL;
    const uint8_t *data = NULL;
    int32_t dlen = 0;
    if (scram_parse_initial(payload, len, &mech, &data, &dlen, &why))
        return sasl_error(a, "08P01", why, NULL);
    bool plus = strcmp(mech, SCRAM_MECH_PLUS) == 0;
    if ((plus && !a->plus_offered) || (!plus && strcmp(mech, SCRAM_MECH) != 0))
        return sasl_error(a, "08P01", "client selected an invalid SASL authentication mechanism",
                          NULL);
    scram_init(&a->scram, &a->secret, a->mock, a->plus_offered, plus, a->cbind, a->cbind_len);
    a->started = true;
    if (dlen == -1) { /* no initial response: an empty challenge asks for client-first */
        build_auth(out, 11, "", 0);
        return AUTH_STEP_CONTINUE;
    }
    return exchange(a, data, (size_t)dlen, server_nonce, out);
}

enum auth_step auth_sasl_message(struct auth_sasl *a, uint8_t type, const uint8_t *payload,
                                 size_t len, const char *server_nonce, struct wire_buf *out)
{
    if (type != 'p') {
        char msg[64];
        snprintf(msg, sizeof(msg), "expected SASL response, got message type %d", type);
        return sasl_error(a, "08P01", msg, NULL);
    }
    if (len > AUTH_SASL_MAX_MESSAGE)
        return sasl_error(a, "08P01", "invalid message length", NULL);
    if (!a->started)
        return initial(a, payload, len, server_nonce, out);
    return exchange(a, payload, len, server_nonce, out);
}
