/* The session's side of authentication: it decides the method (auth.c), moves the SASL
 * messages between the client connection and the exchange, checks certificates and peer
 * credentials, and answers a failure only when --auth-failure-delay has passed, from the
 * session's one timer: the event loop never waits. Nothing here reaches the upstream: an
 * unauthenticated client never causes an upstream connection. */
#include "auth.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "metrics_user.h"
#include "session_int.h"
#include "tls.h"
#include "wire.h"

#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

struct session_auth {
    struct auth_decision how;
    struct auth_sasl sasl;
    char nonce[32]; /* server nonce: base64 of 18 random bytes */
    bool failed;    /* the answer waits for the delay */
    char code[6];
    char message[200];
};

void session_auth_free(struct session *s)
{
    if (s->auth) {
        memset(s->auth, 0, sizeof(*s->auth)); /* the exchange's secrets */
        free(s->auth);
        s->auth = NULL;
    }
}

static const char *metrics_method(const struct session *s)
{
    enum auth_method m = s->auth ? s->auth->how.method : AUTH_TRUST;
    return m == AUTH_REJECT || m == AUTH_NO_MATCH ? "hba" : auth_method_name(m);
}

/* Authenticated: the identity is recorded, then admission and the upstream connection. */
static enum session_end authenticated(struct session *s, const char *method)
{
    s->auth_method = method;
    metrics_auth(method, METRICS_AUTH_OK);
    bool bound = s->auth && s->auth->sasl.started && s->auth->sasl.scram.plus;
    if (strcmp(method, "trust") != 0) /* a claimed name: session_start says auth=trust */
        LOG_INFO(s->id, "authenticated", "client=%s user=%s method=%s%s%s%s%s", s->addr, s->user,
                 method, bound ? " channel_binding=tls-server-end-point" : "",
                 s->cert_subject[0] ? " identity=\"" : "", s->cert_subject,
                 s->cert_subject[0] ? "\"" : "");
    session_auth_free(s);
    return session_authenticated(s);
}

/* A refusal answered at once (PostgreSQL's hba and certificate checks: no auth_delay). */
static enum session_end refuse(struct session *s, const char *code, const char *message,
                               enum metrics_auth_outcome o)
{
    metrics_auth(metrics_method(s), o);
    LOG_INFO(s->id, "auth_refused", "client=%s user=%s code=%s %s", s->addr, s->user, code,
             message);
    session_fatal(s, code, message, NULL);
    return SE_AUTH_FAILED;
}

/* A failed proof: the same answer for a wrong password and an unknown user, and only after
 * the delay (the session stops reading the client meanwhile). why goes to the log only. */
static enum session_end fail_later(struct session *s, const char *code, const char *what,
                                   const char *why)
{
    struct session_auth *a = s->auth;
    a->failed = true;
    snprintf(a->code, sizeof(a->code), "%s", code);
    snprintf(a->message, sizeof(a->message), "%s authentication failed for user \"%s\"", what,
             s->user);
    metrics_auth(metrics_method(s), METRICS_AUTH_FAILED);
    metrics_user_connection(s->metrics_user, false);
    LOG_INFO(s->id, "auth_failed", "client=%s user=%s method=%s %s", s->addr, s->user,
             metrics_method(s), why);
    s->deadline_ms = netio_now_ms() + (int64_t)s->cfg->auth_failure_delay_ms;
    if (s->cfg->auth_failure_delay_ms == 0)
        session_auth_timer(s, s->deadline_ms);
    return SE_NONE;
}

void session_auth_timer(struct session *s, int64_t now)
{
    if (now < s->deadline_ms)
        return;
    if (s->auth && s->auth->failed) {
        session_fatal(s, s->auth->code, s->auth->message, NULL);
        session_end_with(s, SE_AUTH_FAILED);
        return;
    }
    LOG_INFO(s->id, "startup_timeout", "client=%s during authentication", s->addr);
    metrics_connection(METRICS_CONN_PROTOCOL_ERROR);
    session_end_with(s, SE_STARTUP_TIMEOUT);
}

/* The certificate's CN must be the user (PostgreSQL's clientcert=verify-full rule); SAN
 * names and wildcards never count. 0, or -1 with why. */
static int cert_matches(struct session *s, const char **why)
{
    char cn[256];
    int rc = tls_peer_cn(s->cli.io.ssl, cn, sizeof(cn));
    tls_peer_subject(s->cli.io.ssl, s->cert_subject, sizeof(s->cert_subject));
    if (rc == -2)
        *why = "the certificate's common name contains an embedded null or is too long";
    else if (rc != 0)
        *why = "client certificate contains no user name";
    else if (strcmp(cn, s->user) != 0)
        *why = "the certificate's common name does not match the user name";
    else
        return 0;
    return -1;
}

static enum session_end cert_auth(struct session *s)
{
    if (!tls_peer_verified(s->cli.io.ssl))
        return refuse(s, "28000", "connection requires a valid client certificate",
                      METRICS_AUTH_REFUSED);
    const char *why = NULL;
    if (cert_matches(s, &why))
        return fail_later(s, "28000", "certificate", why);
    return authenticated(s, "cert");
}

int session_peer_user(struct session *s, char *name, size_t len, char *why, size_t whylen)
{
    struct ucred cred;
    socklen_t clen = sizeof(cred);
    struct passwd pw, *found = NULL;
    char buf[4096];
    if (getsockopt(s->cli.io.fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0) {
        snprintf(why, whylen, "could not get peer credentials: %s", strerror(errno));
        return -1;
    }
    if (getpwuid_r(cred.uid, &pw, buf, sizeof(buf), &found) != 0 || !found) {
        snprintf(why, whylen, "could not look up local user ID %ld", (long)cred.uid);
        return -1;
    }
    snprintf(name, len, "%s", found->pw_name);
    return 0;
}

/* SO_PEERCRED's uid, its name by getpwuid_r (thread-safe), compared with the user. */
static enum session_end peer_auth(struct session *s)
{
    char os_user[256], why[160];
    if (session_peer_user(s, os_user, sizeof(os_user), why, sizeof(why)) != 0)
        return fail_later(s, "28000", "Peer", why);
    if (strcmp(os_user, s->user) != 0) {
        snprintf(why, sizeof(why), "local user \"%.64s\" is not the user name", os_user);
        return fail_later(s, "28000", "Peer", why);
    }
    return authenticated(s, "peer");
}

static int new_nonce(char out[32])
{
    uint8_t raw[SCRAM_NONCE_RAW_LEN];
    if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw))
        return -1;
    return scram_b64_encode(raw, sizeof(raw), out, 32) < 0 ? -1 : 0;
}

static enum session_end scram_begin(struct session *s)
{
    const uint8_t *cb = NULL;
    size_t cblen = 0;
    if (s->cli.io.ssl && tls_server_end_point(s->cli.io.ssl, &cb, &cblen) != 0)
        cblen = 0; /* no usable certificate hash: -PLUS is not offered */
    if (new_nonce(s->auth->nonce))
        return SE_INTERNAL;
    uint8_t buf[128];
    struct wire_buf b;
    wire_buf_init(&b, buf, sizeof(buf));
    auth_sasl_begin(&s->auth->sasl, s->rt->auth, s->user, cb, cblen, &b);
    if (b.overflow || conn_send(&s->cli, b.data, b.len))
        return SE_CLIENT_ERROR;
    s->phase = PH_AUTH; /* the startup deadline goes on: it covers authentication too */
    return SE_NONE;
}

enum session_end session_auth_begin(struct session *s)
{
    s->auth = calloc(1, sizeof(*s->auth));
    if (!s->auth)
        return SE_INTERNAL;
    char host[64];
    bool local = s->client.ss_family == AF_UNIX;
    struct auth_query q = {.local = local,
                           .ssl = s->cli.io.ssl != NULL,
                           .addr = local ? NULL : &s->client,
                           .user = s->user,
                           .database = s->database};
    auth_decide(s->rt->auth, &q, &s->auth->how);
    const struct auth_decision *d = &s->auth->how;
    if (d->line)
        LOG_DEBUG(s->id, "hba_match", "client=%s user=%s line=%d method=%s", s->addr, s->user,
                  d->line, auth_method_name(d->method));
    switch (d->method) {
    case AUTH_TRUST:
        return authenticated(s, "trust");
    case AUTH_REJECT:
    case AUTH_NO_MATCH: {
        char msg[320];
        const char *colon = local ? NULL : strrchr(s->addr, ':'); /* "ip:port": the ip */
        snprintf(host, sizeof(host), "%.*s", colon ? (int)(colon - s->addr) : 63, s->addr);
        auth_hba_refusal(d, host, s->user, s->database, q.ssl, msg, sizeof(msg));
        return refuse(s, "28000", msg, METRICS_AUTH_REFUSED);
    }
    case AUTH_CERT:
        return cert_auth(s);
    case AUTH_PEER:
        return peer_auth(s);
    case AUTH_SCRAM:
        if (d->clientcert && !tls_peer_verified(s->cli.io.ssl))
            return refuse(s, "28000", "connection requires a valid client certificate",
                          METRICS_AUTH_REFUSED);
        return scram_begin(s);
    }
    return SE_INTERNAL;
}

/* A proven password; with clientcert=verify-full the certificate must name the user too (a
 * mismatch fails as a wrong password does, as in PostgreSQL). */
static enum session_end scram_done(struct session *s, struct wire_buf *out)
{
    const char *why = NULL;
    if (s->auth->how.clientcert && cert_matches(s, &why))
        return fail_later(s, "28P01", "password", why);
    if (conn_send(&s->cli, out->data, out->len))
        return SE_CLIENT_ERROR;
    return authenticated(s, "scram-sha-256");
}

/* One complete client message during the exchange. */
static enum session_end sasl_message(struct session *s, uint8_t type, const uint8_t *p, size_t n)
{
    uint8_t buf[2 * SCRAM_MAX_MESSAGE + 64];
    struct wire_buf b;
    wire_buf_init(&b, buf, sizeof(buf));
    struct auth_sasl *a = &s->auth->sasl;
    switch (auth_sasl_message(a, type, p, n, s->auth->nonce, &b)) {
    case AUTH_STEP_CONTINUE:
        return conn_send(&s->cli, b.data, b.len) ? SE_CLIENT_ERROR : SE_NONE;
    case AUTH_STEP_OK:
        return scram_done(s, &b);
    case AUTH_STEP_FAILED:
        return fail_later(s, "28P01", "password",
                          a->mock ? "no valid SCRAM secret for the user" : "wrong proof");
    case AUTH_STEP_ERROR:
        break;
    }
    metrics_auth("scram-sha-256", METRICS_AUTH_ERROR);
    metrics_connection(METRICS_CONN_PROTOCOL_ERROR);
    LOG_INFO(s->id, "auth_refused", "client=%s user=%s code=%s %s", s->addr, s->user, a->code,
             a->message);
    session_fatal(s, a->code, a->message, a->detail[0] ? a->detail : NULL);
    return SE_PROTOCOL;
}

/* Handles the complete messages in the buffer; *done when the exchange ended. */
static enum session_end process(struct session *s, bool *done)
{
    struct conn *c = &s->cli;
    while (c->rlen > 0 && s->phase == PH_AUTH && s->auth && !s->auth->failed) {
        if (c->rbuf[0] != 'p') /* answered before its length is even read, as PostgreSQL does */
            return sasl_message(s, c->rbuf[0], NULL, 0);
        if (c->rlen < 5)
            return SE_NONE;
        uint32_t len = wire_get_u32(c->rbuf + 1);
        if (len < 4 || len - 4 > AUTH_SASL_MAX_MESSAGE)
            return sasl_message(s, 'p', NULL, AUTH_SASL_MAX_MESSAGE + 1);
        if (c->rlen < 1 + (size_t)len)
            return SE_NONE;
        enum session_end e = sasl_message(s, 'p', c->rbuf + 5, len - 4);
        conn_consume(c, 1 + (size_t)len);
        if (e != SE_NONE)
            return e;
    }
    *done = s->phase != PH_AUTH || !s->auth || s->auth->failed;
    return SE_NONE;
}

enum session_end session_auth_step(struct session *s)
{
    if (conn_flush(&s->cli))
        return session_conn_end(s) != SE_NONE ? session_conn_end(s) : SE_CLIENT_ERROR;
    for (int reads = 0; reads < 16; reads++) {
        if (s->auth && s->auth->failed) /* waiting for the delay: nothing more is read */
            return s->cli.peer_closed ? SE_CLIENT_EOF : SE_NONE;
        bool done = false;
        enum session_end e = process(s, &done);
        if (e != SE_NONE || done || !s->cli.can_read)
            return e;
        ssize_t n = conn_read(&s->cli);
        if (n == -EAGAIN)
            return SE_NONE;
        if (n <= 0) /* psql's first try leaves after R10 to ask for the password: no failure */
            return n == 0 ? SE_CLIENT_EOF : SE_CLIENT_ERROR;
    }
    session_schedule(s);
    return SE_NONE;
}
