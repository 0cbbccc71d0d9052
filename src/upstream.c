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

#define UPSTREAM_TIMEOUT_MARGIN_MS 1000 /* statement_timeout upstream: --query-timeout + this */
#define UPSTREAM_AUDIT_USER_MAX    32   /* bytes of the encoded user in the audit suffix */

/* Client startup parameters applied upstream as options (client_encoding and application_name
 * have keywords of their own); everything else the client sends is ignored (credentials and
 * database always come from the operator's DSN). */
static const char *const option_params[] = {"DateStyle", "TimeZone", "IntervalStyle",
                                            "extra_float_digits"};

/* pg_split_opts() splits the options string at every byte isspace() accepts and drops the
 * backslash before any byte. isspace() runs in the database's LC_CTYPE, where a single-byte
 * locale may count a byte >= 0x80 (0x85, 0xA0) as a space: every such byte is escaped too, as
 * are the other control bytes. A backslash before any byte yields that byte, so the value
 * arrives unchanged and stays exactly one option. */
static bool option_byte_special(unsigned char c)
{
    return c == '\\' || c <= 0x20 || c >= 0x7f;
}

long upstream_escape_option(char *out, size_t outlen, const char *value)
{
    size_t o = 0;
    if (outlen == 0)
        return -1;
    for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
        size_t need = option_byte_special(*p) ? 2 : 1;
        if (o + need >= outlen) {
            out[0] = 0;
            return -1; /* never cut: a shortened value would be a different setting */
        }
        if (need == 2)
            out[o++] = '\\';
        out[o++] = (char)*p;
    }
    out[o] = 0;
    return (long)o;
}

/* Printable ASCII but the characters that delimit the audit suffix (and % itself) stays; the
 * rest is %XX, so a user name can neither end the suffix early nor pose as an address. */
static bool audit_user_plain(unsigned char c)
{
    return c > 0x20 && c < 0x7f && c != '%' && c != '@' && c != '[' && c != ']';
}

/* The escaped user within cap bytes (NUL included); cut at a whole escape and marked "..." */
static void audit_user_escape(char *out, size_t cap, const char *user)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t full = 0;
    for (const unsigned char *p = (const unsigned char *)user; *p; p++)
        full += audit_user_plain(*p) ? 1 : 3;
    size_t limit = full < cap ? cap - 1 : (cap > 4 ? cap - 4 : 0);
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)user; *p; p++) {
        size_t need = audit_user_plain(*p) ? 1 : 3;
        if (o + need > limit)
            break;
        if (need == 1) {
            out[o++] = (char)*p;
        } else {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    if (full >= cap && cap > 4) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    if (cap)
        out[o < cap ? o : cap - 1] = 0;
}

void upstream_audit_name(char *out, size_t outlen, const char *app, const char *user,
                         const char *addr)
{
    if (outlen == 0)
        return;
    size_t max = outlen - 1 < 63 ? outlen - 1 : 63;
    char a[64];
    snprintf(a, sizeof(a), "%s", addr ? addr : "?");
    size_t alen = strlen(a);
    /* "[" user "@" addr "]": the address is never shortened; the user gets what is left, up
     * to UPSTREAM_AUDIT_USER_MAX, so that the application's own name keeps some room too */
    size_t user_room = max > alen + 3 ? max - (alen + 3) : 0;
    if (user_room > UPSTREAM_AUDIT_USER_MAX)
        user_room = UPSTREAM_AUDIT_USER_MAX;
    char u[64];
    audit_user_escape(u, user_room + 1 < sizeof(u) ? user_room + 1 : sizeof(u), user ? user : "?");
    char suffix[160];
    int sl = snprintf(suffix, sizeof(suffix), "[%s@%s]", u, a);
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

/* The DSN's own options (if any) plus our -c settings, then the client's allowlisted values,
 * each one "-c name=value" option. 0, or -1 when they do not fit (*too_long names the
 * client's parameter, or is NULL when the proxy's own settings did not fit). */
static int build_options(char *opts, size_t len, const struct upstream_request *req,
                         const char **too_long)
{
    const struct config *cfg = req->cfg;
    *too_long = NULL;
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
    size_t used = strlen(opts);
    if (used + 1 >= len)
        return -1;
    for (size_t i = 0; i < sizeof(option_params) / sizeof(option_params[0]); i++) {
        const char *v = wire_startup_get(req->startup, option_params[i]);
        if (!v || !*v)
            continue;
        int head = snprintf(opts + used, len - used, "-c %s=", option_params[i]);
        long n = head > 0 && (size_t)head < len - used
                     ? upstream_escape_option(opts + used + head, len - used - (size_t)head, v)
                     : -1;
        if (n < 0 || used + (size_t)head + (size_t)n + 1 >= len) {
            opts[used] = 0;
            *too_long = option_params[i];
            return -1;
        }
        used += (size_t)head + (size_t)n;
        opts[used++] = ' ';
        opts[used] = 0;
    }
    return 0;
}

int upstream_check_startup(const struct upstream_request *req, char sqlstate[6], char *err,
                           size_t errlen)
{
    char options[UPSTREAM_OPTIONS_MAX];
    const char *too_long = NULL;
    if (build_options(options, sizeof(options), req, &too_long) == 0)
        return 0;
    if (too_long) {
        memcpy(sqlstate, "22023", 6);
        snprintf(err, errlen, "value of startup parameter \"%s\" is too long to forward", too_long);
    } else {
        memcpy(sqlstate, "XX000", 6);
        snprintf(err, errlen, "the upstream options of --upstream are too long");
    }
    return -1;
}

/* A failure, known by what libpq's message says; the client and the log get only the fixed
 * text of its class (libpq's own text may quote the DSN, password and all). */
struct failure_class {
    const char *needle;
    const char *sqlstate;
    const char *message;
};

static const struct failure_class failure_classes[] = {
    {"password authentication failed", "28P01",
     "could not connect to the upstream server: password authentication failed"},
    {"authentication failed", "28P01",
     "could not connect to the upstream server: authentication failed"},
    {"no pg_hba.conf entry", "28000",
     "could not connect to the upstream server: no pg_hba.conf entry for the proxy"},
    {"too many clients", "53300", "could not connect to the upstream server: too many clients"},
    {"remaining connection slots", "53300",
     "could not connect to the upstream server: too many clients"},
    /* "too many connections for role" / "... for database": the health probe reports both */
    {"too many connections", "53300",
     "could not connect to the upstream server: too many connections"},
    {"database system is starting up", "57P03",
     "could not connect to the upstream server: the database system is starting up"},
    {"database system is shutting down", "57P03",
     "could not connect to the upstream server: the database system is shutting down"},
    {"database system is in recovery mode", "57P03",
     "could not connect to the upstream server: the database system is in recovery mode"},
    {"does not exist", "3D000",
     "could not connect to the upstream server: the database or role does not exist"},
    {"Connection refused", "08001", "could not connect to the upstream server: Connection refused"},
    {"timeout expired", "08001", "could not connect to the upstream server: timeout expired"},
    {"could not translate host name", "08001",
     "could not connect to the upstream server: host name not found"},
    {"closed the connection unexpectedly", "08006",
     "could not connect to the upstream server: the server closed the connection"},
    {"SSL", "08001", "could not connect to the upstream server: TLS negotiation failed"},
    {"out of memory", "53200", "could not connect to the upstream server: out of memory"},
};

/* PostgreSQL's answer to an invalid client value: rebuilt from the client's own value, the
 * name matched against the allowlist, so nothing else of the text can reach the client. */
static bool classify_param_error(const char *msg, const struct wire_startup *startup, char *err,
                                 size_t errlen)
{
    if (!startup || (!strstr(msg, "invalid value for parameter \"") &&
                     !strstr(msg, "outside the valid range for parameter \"")))
        return false;
    static const char *const judged[] = {"DateStyle", "TimeZone", "IntervalStyle",
                                         "extra_float_digits", "client_encoding"};
    for (size_t i = 0; i < sizeof(judged) / sizeof(judged[0]); i++) {
        char quoted[64];
        snprintf(quoted, sizeof(quoted), "parameter \"%s\"", judged[i]);
        const char *v = wire_startup_get(startup, judged[i]);
        if (v && strstr(msg, quoted)) {
            snprintf(err, errlen, "invalid value for parameter \"%s\": \"%s\"", judged[i], v);
            return true;
        }
    }
    return false;
}

void upstream_classify_failure(const char *msg, const struct wire_startup *startup,
                               char sqlstate[6], char *err, size_t errlen)
{
    if (!msg)
        msg = "out of memory";
    if (classify_param_error(msg, startup, err, errlen)) {
        memcpy(sqlstate, "22023", 6);
        return;
    }
    for (size_t i = 0; i < sizeof(failure_classes) / sizeof(failure_classes[0]); i++) {
        if (strstr(msg, failure_classes[i].needle)) {
            memcpy(sqlstate, failure_classes[i].sqlstate, 6);
            snprintf(err, errlen, "%s", failure_classes[i].message);
            return;
        }
    }
    memcpy(sqlstate, "08001", 6);
    snprintf(err, errlen, "could not connect to the upstream server");
}

/* The DSN's user name, when it is a plain one: a safe detail for an authentication error. */
static bool plain_user(const char *u)
{
    if (!u || !*u || strlen(u) > 63)
        return false;
    for (const char *p = u; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-' || *p == '.'))
            return false;
    return true;
}

static void classify_failure(PGconn *conn, const struct wire_startup *startup, char sqlstate[6],
                             char *err, size_t errlen)
{
    upstream_classify_failure(conn ? PQerrorMessage(conn) : NULL, startup, sqlstate, err, errlen);
    const char *user = conn ? PQuser(conn) : NULL;
    if (strcmp(sqlstate, "28P01") == 0 && strstr(err, "password") && plain_user(user)) {
        size_t n = strlen(err);
        snprintf(err + n, errlen - n, " for user \"%s\"", user);
    }
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
    char options[UPSTREAM_OPTIONS_MAX];
    const char *too_long = NULL;
    if (build_options(options, sizeof(options), req, &too_long) != 0)
        return upstream_check_startup(req, sqlstate, err, errlen);
    const char *app = wire_startup_get(req->startup, "application_name");
    char appname[64], where[96];
    /* "<app> [<user>@<addr> <method>]": the method is part of the part that is never cut */
    snprintf(where, sizeof(where), "%s%s%s", req->client_addr ? req->client_addr : "?",
             req->auth_tag ? " " : "", req->auth_tag ? req->auth_tag : "");
    upstream_audit_name(appname, sizeof(appname), app,
                        req->user ? req->user : wire_startup_get(req->startup, "user"), where);
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
    u->startup = req->startup;
    PGconn *conn = PQconnectStartParams(keys, vals, 1);
    if (!conn || PQstatus(conn) == CONNECTION_BAD) {
        classify_failure(conn, req->startup, sqlstate, err, errlen);
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
        classify_failure(conn, u->startup, sqlstate, err, errlen);
        return -1;
    }
    u->startup = NULL; /* the client's startup packet is freed once connected */
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
