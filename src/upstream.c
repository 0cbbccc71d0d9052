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
#define UPSTREAM_TIMEOUT_MARGIN_MS 1000

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
    /* Defence in depth: the proxy's own deadline fires first (its error names the rule); the
     * upstream stops a statement only if the proxy's cancel somehow does not land. */
    if (cfg->query_timeout_ms)
        snprintf(num, sizeof(num), "%llu",
                 (unsigned long long)cfg->query_timeout_ms + UPSTREAM_TIMEOUT_MARGIN_MS);
    else
        snprintf(num, sizeof(num), "0");
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
    else if (strstr(msg, "too many clients") || strstr(msg, "remaining connection slots") ||
             strstr(msg, "too many connections")) /* ... for role / for database: 53300 too */
        memcpy(sqlstate, "53300", 6);
    else if (strstr(msg, "does not exist"))
        memcpy(sqlstate, "3D000", 6);
}

static int64_t connect_timeout_ms(const char *dsn)
{
    long secs = 10; /* libpq's own default is to wait forever */
    PQconninfoOption *parsed = PQconninfoParse(dsn, NULL);
    for (PQconninfoOption *o = parsed; o && o->keyword; o++)
        if (strcmp(o->keyword, "connect_timeout") == 0 && o->val && *o->val)
            secs = strtol(o->val, NULL, 10);
    PQconninfoFree(parsed);
    if (secs <= 0)
        secs = 10;
    if (secs < 2)
        secs = 2; /* as libpq: shorter values are raised to 2 seconds */
    return secs * 1000;
}

int upstream_start(struct upstream *u, const struct upstream_request *req, char sqlstate[6],
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
    keys[k] = "dbname", vals[k++] = req->cfg->upstream_dsn;
    keys[k] = "application_name", vals[k++] = appname;
    keys[k] = "options", vals[k++] = options;
    if (enc && *enc)
        keys[k] = "client_encoding", vals[k++] = enc;
    keys[k] = NULL, vals[k] = NULL;
    u->deadline_ms = netio_now_ms() + connect_timeout_ms(req->cfg->upstream_dsn);
    PGconn *conn = PQconnectStartParams(keys, vals, 1);
    if (!conn || PQstatus(conn) == CONNECTION_BAD) {
        classify_failure(conn, sqlstate, err, errlen);
        PQfinish(conn);
        return -1;
    }
    PQsetnonblocking(conn, 1);
    u->conn = conn;
    u->reading = false;
    return 0;
}

int upstream_socket(const struct upstream *u)
{
    return u->conn ? PQsocket(u->conn) : -1;
}

void upstream_timeout(struct upstream *u, char sqlstate[6], char *err, size_t errlen)
{
    memcpy(sqlstate, "08001", 6);
    snprintf(err, errlen, "could not connect to the upstream server: timeout expired");
}

int upstream_step(struct upstream *u, char sqlstate[6], char *err, size_t errlen)
{
    PGconn *conn = u->conn;
    PostgresPollingStatusType st = PQconnectPoll(conn);
    if (st == PGRES_POLLING_READING || st == PGRES_POLLING_WRITING) {
        u->reading = st == PGRES_POLLING_READING;
        return 0;
    }
    if (st == PGRES_POLLING_FAILED || PQstatus(conn) != CONNECTION_OK) {
        classify_failure(conn, sqlstate, err, errlen);
        return -1;
    }
    u->cancel = PQgetCancel(conn);
    u->pid = (uint32_t)PQbackendPID(conn);
    SSL *ssl = PQsslStruct(conn, "OpenSSL");
    if (ssl)
        netio_init_tls(&u->io, PQsocket(conn), ssl);
    else
        netio_init_plain(&u->io, PQsocket(conn));
    return 1;
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

void upstream_free_cancel(void *cancel_handle)
{
    if (cancel_handle)
        PQfreeCancel(cancel_handle);
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
