#include "upstream.h"
#include "config.h"
#include "wire.h"

#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Client startup parameters applied upstream; everything else the client sends is ignored
 * (credentials and database always come from the operator's DSN). */
static const char *const option_params[] = {"DateStyle", "TimeZone", "IntervalStyle",
                                            "extra_float_digits"};

void upstream_escape_option(char *out, size_t outlen, const char *value)
{
    size_t o = 0;
    for (const char *p = value; *p && o + 3 < outlen; p++) {
        if (*p == ' ' || *p == '\\')
            out[o++] = '\\';
        out[o++] = *p;
    }
    out[o] = 0;
}

void upstream_audit_name(char *out, size_t outlen, const char *app, const char *user,
                         const char *addr)
{
    char suffix[128];
    int sl = snprintf(suffix, sizeof(suffix), "[%s@%s]", user ? user : "?", addr ? addr : "?");
    size_t max = outlen - 1 < 63 ? outlen - 1 : 63;
    if (sl < 0)
        sl = 0;
    if ((size_t)sl > max)
        sl = (int)max;
    size_t applen = app ? strlen(app) : 0;
    size_t room = max - (size_t)sl;
    if (applen > 0 && room > 1) {
        size_t take = applen < room - 1 ? applen : room - 1;
        /* never cut a UTF-8 sequence in half: PostgreSQL would reject the name */
        while (take > 0 && take < applen && ((unsigned char)app[take] & 0xC0) == 0x80)
            take--;
        snprintf(out, outlen, "%.*s %.*s", (int)take, app, sl, suffix);
    } else {
        snprintf(out, outlen, "%.*s", sl, suffix);
    }
}

static void append(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void append(char *buf, size_t len, const char *fmt, ...)
{
    size_t n = strlen(buf);
    if (n >= len)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + n, len - n, fmt, ap);
    va_end(ap);
}

/* The DSN's own options (if any) plus our -c settings. */
static void build_options(char *opts, size_t len, const struct upstream_request *req)
{
    const struct config *cfg = req->cfg;
    opts[0] = 0;
    PQconninfoOption *parsed = PQconninfoParse(cfg->upstream_dsn, NULL);
    for (PQconninfoOption *o = parsed; o && o->keyword; o++)
        if (strcmp(o->keyword, "options") == 0 && o->val)
            append(opts, len, "%s ", o->val);
    PQconninfoFree(parsed);
    char num[32];
    snprintf(num, sizeof(num), "%llu", (unsigned long long)cfg->query_timeout_ms);
    append(opts, len, "-c %s=%s ", "statement_timeout", num);
    if (cfg->idle_tx_timeout_ms) {
        snprintf(num, sizeof(num), "%llu", (unsigned long long)cfg->idle_tx_timeout_ms);
        append(opts, len, "-c %s=%s ", "idle_in_transaction_session_timeout", num);
    }
    /* The policy parser reads string literals as standard_conforming_strings=on does. */
    append(opts, len, "-c %s=%s ", "standard_conforming_strings", "on");
    if (cfg->read_only)
        append(opts, len, "-c %s=%s ", "default_transaction_read_only", "on");
    for (size_t i = 0; i < sizeof(option_params) / sizeof(option_params[0]); i++) {
        const char *v = wire_startup_get(req->startup, option_params[i]);
        if (!v || !*v)
            continue;
        char esc[512];
        upstream_escape_option(esc, sizeof(esc), v);
        append(opts, len, "-c %s=%s ", option_params[i], esc);
    }
}

static void classify_failure(PGconn *conn, char sqlstate[6], char *err, size_t errlen)
{
    const char *msg = conn ? PQerrorMessage(conn) : "out of memory";
    /* libpq prefixes "connection to server at ... failed: "; keep the reason readable */
    snprintf(err, errlen, "could not connect to the upstream server: %s", msg);
    size_t n = strlen(err);
    while (n > 0 && (err[n - 1] == '\n' || err[n - 1] == ' '))
        err[--n] = 0;
    for (char *p = err; *p; p++)
        if (*p == '\n')
            *p = ' ';
    memcpy(sqlstate, "08001", 6);
    if (strstr(msg, "password authentication failed") || strstr(msg, "authentication failed"))
        memcpy(sqlstate, "28P01", 6);
    else if (strstr(msg, "no pg_hba.conf entry"))
        memcpy(sqlstate, "28000", 6);
    else if (strstr(msg, "too many clients") || strstr(msg, "remaining connection slots"))
        memcpy(sqlstate, "53300", 6);
    else if (strstr(msg, "does not exist"))
        memcpy(sqlstate, "3D000", 6);
}

/* Drives PQconnectPoll with poll() so a shutdown (wake_fd) or connect_timeout is honoured. */
static int drive_connect(PGconn *conn, int wake_fd)
{
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    for (;;) {
        if (st == PGRES_POLLING_OK)
            return 0;
        if (st == PGRES_POLLING_FAILED)
            return -1;
        struct pollfd p[2] = {
            {.fd = PQsocket(conn), .events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT},
            {.fd = wake_fd, .events = POLLIN}};
        int rc = poll(p, wake_fd >= 0 ? 2 : 1, -1);
        if (rc < 0 && errno != EINTR)
            return -1;
        if (wake_fd >= 0 && (p[1].revents & POLLIN))
            return -2;
        st = PQconnectPoll(conn);
    }
}

int upstream_connect(struct upstream *u, const struct upstream_request *req, char sqlstate[6],
                     char *err, size_t errlen)
{
    memset(u, 0, sizeof(*u));
    u->io.fd = -1;
    char options[2048];
    build_options(options, sizeof(options), req);
    const char *app = wire_startup_get(req->startup, "application_name");
    char appname[64];
    upstream_audit_name(appname, sizeof(appname), app, wire_startup_get(req->startup, "user"),
                        req->client_addr);
    const char *enc = wire_startup_get(req->startup, "client_encoding");
    /* Keywords before dbname are defaults the DSN may override; those after win over it. */
    const char *keys[8], *vals[8];
    int k = 0;
    keys[k] = "connect_timeout", vals[k++] = "10";
    keys[k] = "dbname", vals[k++] = req->cfg->upstream_dsn;
    keys[k] = "application_name", vals[k++] = appname;
    keys[k] = "options", vals[k++] = options;
    if (enc && *enc)
        keys[k] = "client_encoding", vals[k++] = enc;
    keys[k] = NULL, vals[k] = NULL;

    PGconn *conn = PQconnectStartParams(keys, vals, 1);
    if (!conn || PQstatus(conn) == CONNECTION_BAD) {
        classify_failure(conn, sqlstate, err, errlen);
        goto fail;
    }
    int rc = drive_connect(conn, req->wake_fd);
    if (rc == -2) {
        memcpy(sqlstate, "57P01", 6);
        snprintf(err, errlen, "terminating connection due to administrator command");
        goto fail;
    }
    if (rc != 0 || PQstatus(conn) != CONNECTION_OK) {
        classify_failure(conn, sqlstate, err, errlen);
        goto fail;
    }
    u->conn = conn;
    u->cancel = PQgetCancel(conn);
    u->pid = (uint32_t)PQbackendPID(conn);
    SSL *ssl = PQsslStruct(conn, "OpenSSL");
    if (ssl)
        netio_init_tls(&u->io, PQsocket(conn), ssl);
    else
        netio_init_plain(&u->io, PQsocket(conn));
    return 0;
fail:
    PQfinish(conn);
    return -1;
}

const char *upstream_param(const struct upstream *u, const char *name)
{
    return u->conn ? PQparameterStatus(u->conn, name) : NULL;
}

int upstream_cancel(void *cancel_handle, char *err, size_t errlen)
{
    if (!cancel_handle) {
        snprintf(err, errlen, "no cancel handle");
        return -1;
    }
    return PQcancel(cancel_handle, err, (int)errlen) ? 0 : -1;
}

void upstream_close(struct upstream *u)
{
    if (u->cancel)
        PQfreeCancel(u->cancel);
    if (u->conn)
        PQfinish(u->conn);
    u->cancel = NULL;
    u->conn = NULL;
    u->io.fd = -1;
}
