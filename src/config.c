#include "config.h"
#include "config_int.h"
#include "guard.h"
#include "log.h"
#include "upstream.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

enum opt_type {
    OPT_STR,
    OPT_INT,
    OPT_DURATION,
    OPT_SIZE,
    OPT_BOOL,
    OPT_LIST,
    OPT_ENUM,
    OPT_LISTEN,
    OPT_MODE
};

struct opt {
    const char *name; /* flag without "--"; file key; env PGWIRE_PROXY_<NAME upper, '-'→'_'> */
    enum opt_type type;
    size_t off;
    const char *const *choices; /* OPT_ENUM: NULL-terminated; index stored as int */
    long min, max;              /* OPT_INT range */
    const char *arg;            /* shown in --help */
    const char *help;
};

static const char *const on_limit_choices[] = {"error", "truncate", "warn", NULL};
static const char *const tls_mode_choices[] = {"allow", "require", NULL};
static const char *const log_format_choices[] = {"text", "json", NULL};
static const char *const log_level_choices[] = {"error", "warn", "info", "debug", NULL};
static const char *const tls_cc_choices[] = {"none", "require", NULL};
static const char *const tls_ver_choices[] = {"1.2", "1.3", NULL};
static const char *const protocol_choices[] = {"reject", "allow", NULL};
static const char *const auth_type_choices[] = {"trust", "scram-sha-256", "cert", "hba", NULL};

#define OFF(f) offsetof(struct config, f)

static const struct opt opts[] = {
    {"listen", OPT_LISTEN, OFF(listen_host), NULL, 0, 0, "HOST:PORT",
     "address to accept clients on (default 127.0.0.1:5433)"},
    {"unix-socket-dir", OPT_STR, OFF(unix_socket_dir), NULL, 0, 0, "DIR",
     "also accept clients on the Unix socket DIR/.s.PGSQL.<port>, like PostgreSQL (default off)"},
    {"unix-socket-mode", OPT_MODE, OFF(unix_socket_mode), NULL, 0, 0777, "MODE",
     "permissions of that socket, in octal (default 0777)"},
    {"upstream", OPT_STR, OFF(upstream_dsn), NULL, 0, 0, "DSN",
     "upstream PostgreSQL as a libpq conninfo string or URI (required)"},
    {"max-connections", OPT_INT, OFF(max_connections), NULL, 1, 100000, "N",
     "client sessions at once; more get FATAL 53300 (default 100)"},
    {"workers", OPT_INT, OFF(workers), NULL, 0, 256, "N",
     "event-loop threads; 0 = one per two CPUs (default 0)"},
    {"query-timeout", OPT_DURATION, OFF(query_timeout_ms), NULL, 0, 0, "DURATION",
     "per-statement deadline, also sent upstream as statement_timeout; 0 = off (default 30s)"},
    {"idle-in-transaction-timeout", OPT_DURATION, OFF(idle_tx_timeout_ms), NULL, 0, 0, "DURATION",
     "sent upstream as idle_in_transaction_session_timeout; 0 = server default"},
    {"startup-timeout", OPT_DURATION, OFF(startup_timeout_ms), NULL, 0, 0, "DURATION",
     "a client must finish its startup packet within this (default 10s)"},
    {"max-startup-connections", OPT_INT, OFF(max_startup_connections), NULL, 1, 100000, "N",
     "connections not yet through startup, all addresses; more get FATAL 53300 (default 1000)"},
    {"max-startup-per-address", OPT_INT, OFF(max_startup_per_address), NULL, 1, 100000, "N",
     "of those, from one client address (IPv6: one /64); more get FATAL 53300 (default 64)"},
    {"proxy-protocol-from", OPT_LIST, OFF(proxy_protocol_from), NULL, 0, 0, "CIDR,...",
     "load balancers whose connections must start with a PROXY v1/v2 header (default none)"},
    {"shutdown-timeout", OPT_DURATION, OFF(shutdown_timeout_ms), NULL, 0, 0, "DURATION",
     "on SIGTERM, how long open statements and transactions may finish (default 30s)"},
    {"client-write-timeout", OPT_DURATION, OFF(client_write_timeout_ms), NULL, 0, 0, "DURATION",
     "close a client that accepts no result bytes for this long; 0 = off (default 60s)"},
    {"cancel-grace", OPT_DURATION, OFF(cancel_grace_ms), NULL, 0, 0, "DURATION",
     "how long a canceled statement may take to end before its backend is terminated "
     "(default 10s)"},
    {"max-client-memory", OPT_SIZE, OFF(max_client_memory), NULL, 0, 0, "SIZE",
     "memory all sessions together may hold in buffered client messages; 0 = off "
     "(default 256MB)"},
    {"max-rows", OPT_SIZE, OFF(max_rows), NULL, 0, 0, "N",
     "rows one statement may return; 0 = off (default 10000)"},
    {"max-bytes", OPT_SIZE, OFF(max_bytes), NULL, 0, 0, "SIZE",
     "result bytes one statement may return; 0 = off (default 100MB)"},
    {"max-message-size", OPT_SIZE, OFF(max_message_bytes), NULL, 0, 0, "SIZE",
     "largest message a client may send, e.g. a long query (default 64MB)"},
    {"on-limit", OPT_ENUM, OFF(on_limit), on_limit_choices, 0, 0, "error|truncate|warn",
     "what a row/byte limit does: fail the statement, deliver the first rows and warn, or only "
     "record it (audit, log, metrics) and deliver everything"},
    {"deny", OPT_LIST, OFF(deny), NULL, 0, 0, "RULE",
     "deny a statement kind (drop, truncate, ...), function:NAME or group:NAME; shadow:RULE only "
     "records what it would deny; repeatable"},
    {"allow", OPT_LIST, OFF(allow), NULL, 0, 0, "RULE",
     "allow only these statement kinds / functions / group:NAME; shadow:RULE entries form a list "
     "that only records; repeatable"},
    {"permit", OPT_LIST, OFF(permit), NULL, 0, 0, "RULE",
     "function:NAME, group:NAME or do: an exception to the always-refused classes; repeatable"},
    {"max-parse-size", OPT_SIZE, OFF(max_parse_size), NULL, 0, 0, "SIZE",
     "largest statement text the policy parses; larger ones get 54001 (default 1MB)"},
    {"peer-id", OPT_INT, OFF(peer_id), NULL, 0, 255, "N",
     "this instance's id (1-255) in cancel keys, for cancel routing between instances"},
    {"peer", OPT_LIST, OFF(peers), NULL, 0, 0, "ID=HOST:PORT",
     "another instance's id and client address; its cancels are forwarded there; repeatable"},
    {"cancel-rate-limit", OPT_INT, OFF(cancel_rate_limit), NULL, 0, 1000000, "N",
     "CancelRequests per second per client address, bursts of 5 s worth; 0 = off (default 20)"},
    {"read-only", OPT_BOOL, OFF(read_only), NULL, 0, 0, NULL,
     "deny every write (ERROR 25006) and set default_transaction_read_only upstream"},
    {"extended-protocol", OPT_ENUM, OFF(extended_protocol), protocol_choices, 0, 0, "reject|allow",
     "relay the extended query protocol (Parse/Bind/Execute) under the same guardrails, or "
     "refuse it with 0A000 (default reject)"},
    {"copy", OPT_ENUM, OFF(copy), protocol_choices, 0, 0, "reject|allow",
     "relay COPY FROM STDIN / TO STDOUT under the same guardrails, or refuse it with 0A000 "
     "(default reject)"},
    {"policy-cache", OPT_BOOL, OFF(policy_cache), NULL, 0, 0, NULL,
     "cache policy decisions per statement shape (default on)"},
    {"tls-cert", OPT_STR, OFF(tls_cert), NULL, 0, 0, "FILE", "PEM certificate for client TLS"},
    {"tls-key", OPT_STR, OFF(tls_key), NULL, 0, 0, "FILE", "PEM private key for client TLS"},
    {"tls-ca", OPT_STR, OFF(tls_ca), NULL, 0, 0, "FILE", "PEM CA bundle to verify client certs"},
    {"tls-mode", OPT_ENUM, OFF(tls_mode), tls_mode_choices, 0, 0, "allow|require",
     "require refuses plaintext clients with FATAL 28000 (default allow)"},
    {"tls-client-cert", OPT_ENUM, OFF(tls_client_cert_required), tls_cc_choices, 0, 0,
     "none|require", "require a client certificate signed by --tls-ca"},
    {"tls-min-version", OPT_ENUM, OFF(tls_min_version), tls_ver_choices, 0, 0, "1.2|1.3",
     "lowest TLS version accepted (default 1.2)"},
    {"metrics-listen", OPT_STR, OFF(metrics_listen), NULL, 0, 0, "HOST:PORT",
     "serve Prometheus /metrics and /healthz here (default off)"},
    {"log-level", OPT_ENUM, OFF(log_level), log_level_choices, 0, 0, "error|warn|info|debug",
     "log verbosity (default info)"},
    {"log-format", OPT_ENUM, OFF(log_format), log_format_choices, 0, 0, "text|json",
     "log line format (default text)"},
    {"audit-log", OPT_STR, OFF(audit_log), NULL, 0, 0, "FILE|-",
     "append one JSON line per statement to FILE (- = stderr)"},
    {"audit-redact", OPT_BOOL, OFF(audit_redact), NULL, 0, 0, NULL,
     "replace literals in audited statements with $n"},
    {"allow-core-dumps", OPT_BOOL, OFF(allow_core_dumps), NULL, 0, 0, NULL,
     "let the process dump core (off by default: a core would hold the DSN's password)"},
    {"auth-type", OPT_ENUM, OFF(auth_type), auth_type_choices, 0, 0, "trust|scram-sha-256|cert|hba",
     "how clients prove who they are: trust (the name they claim, default), SCRAM-SHA-256 "
     "against --auth-file, a client certificate whose CN is the user, or --auth-hba-file"},
    {"auth-file", OPT_STR, OFF(auth_file), NULL, 0, 0, "FILE",
     "users and SCRAM verifiers (or passwords) in PgBouncer's userlist.txt format; reloaded on "
     "SIGHUP"},
    {"auth-hba-file", OPT_STR, OFF(auth_hba_file), NULL, 0, 0, "FILE",
     "pg_hba.conf rules (local/host/hostssl/hostnossl; trust, reject, scram-sha-256, cert, peer) "
     "for --auth-type hba"},
    {"auth-secret-file", OPT_STR, OFF(auth_secret_file), NULL, 0, 0, "FILE",
     "server secret that unknown users' SCRAM salts derive from, made (0600) on first start "
     "(default <auth-file>.secret)"},
    {"auth-failure-delay", OPT_DURATION, OFF(auth_failure_delay_ms), NULL, 0, 0, "DURATION",
     "answer a failed authentication this much later, without blocking others (default 1s)"},
    {"admin-users", OPT_LIST, OFF(admin_users), NULL, 0, 0, "USER,...",
     "users who may open the console, database pgwire_proxy (default none: console off)"},
    {"admin-trust-loopback", OPT_BOOL, OFF(admin_trust_loopback), NULL, 0, 0, NULL,
     "under --auth-type trust, let admin users open the console over loopback TCP by name "
     "alone (weaker: any local process can)"},
    {"statement-stats", OPT_INT, OFF(statement_stats), NULL, 0, 1000000, "N",
     "statement statistics entries kept per fingerprint, least recently used evicted; 0 = off "
     "(default 5000)"},
    {"config", OPT_STR, OFF(config_file), NULL, 0, 0, "FILE",
     "INI file with the same keys as the flags (flags > env > file > defaults)"},
};
#define NOPTS (sizeof(opts) / sizeof(opts[0]))

enum level { LVL_DEFAULT, LVL_FILE, LVL_ENV, LVL_FLAG };

struct loader {
    struct config *c;
    enum level set_at[NOPTS];
    char *err;
    size_t errlen;
    FILE *file;                    /* config file being read */
    int file_line;                 /* its last line read */
    int err_line;                  /* line whose key or value failed */
    int long_line_max;             /* set to inih's line limit when a line exceeded it */
    struct config_pending pending; /* [user:NAME] keys, applied after flags and env */
};

void config_defaults(struct config *c)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->listen_host, sizeof(c->listen_host), "127.0.0.1");
    c->listen_port = 5433;
    c->max_connections = 100;
    c->query_timeout_ms = 30000;
    c->startup_timeout_ms = 10000;
    c->max_startup_connections = 1000;
    c->max_startup_per_address = 64;
    c->shutdown_timeout_ms = 30000;
    c->cancel_rate_limit = 20;
    c->client_write_timeout_ms = 60000;
    c->cancel_grace_ms = 10000;
    c->max_client_memory = 256ull * 1000 * 1000;
    c->unix_socket_mode = 0777;
    c->max_rows = 10000;
    c->max_bytes = 100ull * 1000 * 1000;
    c->max_message_bytes = 64ull * 1000 * 1000;
    c->on_limit = CONFIG_ON_LIMIT_ERROR;
    c->policy_cache = true;
    c->max_parse_size = GUARD_DEFAULT_MAX_PARSE;
    c->tls_mode = CONFIG_TLS_ALLOW;
    c->tls_min_version = 0; /* index into tls_ver_choices: 1.2 */
    c->log_level = LOGL_INFO;
    c->log_format = CONFIG_LOG_TEXT;
    c->auth_type = CONFIG_AUTH_TRUST;
    c->auth_failure_delay_ms = 1000;
    c->statement_stats = CONFIG_STATEMENT_STATS_DEFAULT;
}

static char **str_field(struct config *c, const struct opt *o)
{
    return (char **)((char *)c + o->off);
}

static void free_list(char **list, size_t *n)
{
    for (size_t i = 0; i < *n; i++) {
        free(list[i]);
        list[i] = NULL;
    }
    *n = 0;
}

static size_t *list_count(struct config *c, const struct opt *o)
{
    if (o->off == OFF(proxy_protocol_from))
        return &c->nproxy_protocol_from;
    if (o->off == OFF(deny))
        return &c->ndeny;
    if (o->off == OFF(peers))
        return &c->npeers;
    if (o->off == OFF(admin_users))
        return &c->nadmin_users;
    return o->off == OFF(permit) ? &c->npermit : &c->nallow;
}

void config_free(struct config *c)
{
    for (size_t i = 0; i < NOPTS; i++) {
        const struct opt *o = &opts[i];
        if (o->type == OPT_STR) {
            free(*str_field(c, o));
            *str_field(c, o) = NULL;
        } else if (o->type == OPT_LIST) {
            free_list(str_field(c, o), list_count(c, o));
        }
    }
    config_users_free(c);
}

/* The leading decimal number of s (no sign, no space); *end points at its unit. */
static int parse_number(const char *s, unsigned long long *v, char **end)
{
    if (!s || !isdigit((unsigned char)*s))
        return -EINVAL;
    errno = 0;
    *v = strtoull(s, end, 10);
    return errno ? -EINVAL : 0;
}

int config_parse_duration_ms(const char *s, uint64_t *out)
{
    char *end = NULL;
    unsigned long long v;
    if (parse_number(s, &v, &end))
        return -EINVAL;
    uint64_t mul;
    if (*end == 0 || strcmp(end, "s") == 0)
        mul = 1000;
    else if (strcmp(end, "ms") == 0)
        mul = 1;
    else if (strcmp(end, "m") == 0 || strcmp(end, "min") == 0)
        mul = 60000;
    else if (strcmp(end, "h") == 0)
        mul = 3600000;
    else
        return -EINVAL;
    if (v > UINT64_MAX / mul || v * mul > (uint64_t)INT_MAX)
        return -EINVAL; /* upstream statement_timeout is an int of milliseconds */
    *out = v * mul;
    return 0;
}

int config_parse_size(const char *s, uint64_t *out)
{
    char *end = NULL;
    unsigned long long v;
    if (parse_number(s, &v, &end))
        return -EINVAL;
    static const struct {
        const char *suffix;
        uint64_t mul;
    } units[] = {{"", 1},
                 {"B", 1},
                 {"kB", 1000},
                 {"KB", 1000},
                 {"MB", 1000000},
                 {"GB", 1000000000ull},
                 {"KiB", 1024},
                 {"MiB", 1024ull * 1024},
                 {"GiB", 1024ull * 1024 * 1024}};
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(end, units[i].suffix) == 0) {
            if (v > UINT64_MAX / units[i].mul)
                return -EINVAL;
            *out = v * units[i].mul;
            return 0;
        }
    }
    return -EINVAL;
}

int config_parse_peer(const char *s, int *id, char *host, size_t hostlen, int *port)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '=' || v < 1 || v > 255)
        return -EINVAL;
    *id = (int)v;
    return config_parse_hostport(end + 1, host, hostlen, port);
}

int config_parse_hostport(const char *s, char *host, size_t hostlen, int *port)
{
    if (!s || !*s)
        return -EINVAL;
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || colon[1] == 0)
        return -EINVAL;
    const char *h = s;
    size_t hl = (size_t)(colon - s);
    if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    if (hl == 0 || hl >= hostlen)
        return -EINVAL;
    if (!isdigit((unsigned char)colon[1]))
        return -EINVAL;
    char *end = NULL;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (errno || *end || p < 0 || p > 65535)
        return -EINVAL;
    memcpy(host, h, hl);
    host[hl] = 0;
    *port = (int)p;
    return 0;
}

static int parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = {"1", "true", "on", "yes"};
    static const char *const no[] = {"0", "false", "off", "no"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -EINVAL;
}

static const char *accepted_form(const struct opt *o, char *buf, size_t len)
{
    switch (o->type) {
    case OPT_DURATION:
        return "a duration such as 500ms, 30s, 5m or 0";
    case OPT_SIZE:
        return o->off == OFF(max_rows) ? "a whole number such as 10000 or 0"
                                       : "a size such as 64kB, 100MB or 0";
    case OPT_BOOL:
        return "on/off, true/false, yes/no or 1/0";
    case OPT_LISTEN:
        return "HOST:PORT such as 127.0.0.1:5433";
    case OPT_MODE:
        return "octal permissions from 0000 to 0777 such as 0770";
    case OPT_INT:
        snprintf(buf, len, "a whole number from %ld to %ld", o->min, o->max);
        return buf;
    case OPT_ENUM: {
        size_t n = 0;
        buf[0] = 0;
        for (size_t i = 0; o->choices[i]; i++)
            n += (size_t)snprintf(buf + n, n < len ? len - n : 0, "%s%s", i ? ", " : "one of ",
                                  o->choices[i]);
        return buf;
    }
    case OPT_STR:
    case OPT_LIST:
        return "a non-empty value";
    }
    return "a valid value";
}

static int fail(struct loader *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct loader *l, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(l->err, l->errlen, fmt, ap);
    va_end(ap);
    for (char *p = l->err; *p; p++)
        if (iscntrl((unsigned char)*p))
            *p = ' '; /* err is one line: values may hold newlines */
    return -EINVAL;
}

static const char *level_name(enum level lvl, char *buf, size_t len, const char *name)
{
    if (lvl == LVL_ENV) {
        size_t n = (size_t)snprintf(buf, len, "environment PGWIRE_PROXY_");
        for (const char *p = name; *p && n + 1 < len; p++)
            buf[n++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
        buf[n < len ? n : len - 1] = 0;
    } else if (lvl == LVL_FILE) {
        snprintf(buf, len, "config key '%s'", name);
    } else {
        snprintf(buf, len, "--%s", name);
    }
    return buf;
}

/* Parses a single-valued option into its field; -EINVAL leaves the field as it was. */
static int parse_scalar(const struct opt *o, struct config *c, const char *val)
{
    void *field = (char *)c + o->off;
    switch (o->type) {
    case OPT_INT: {
        char *end = NULL;
        errno = 0;
        long v = strtol(val, &end, 10);
        if (errno || *end || v < o->min || v > o->max)
            return -EINVAL;
        *(int *)field = (int)v;
        return 0;
    }
    case OPT_DURATION:
        return config_parse_duration_ms(val, field);
    case OPT_SIZE: {
        uint64_t v;
        /* a row count takes no unit */
        if (config_parse_size(val, &v) ||
            (o->off == OFF(max_rows) && !isdigit((unsigned char)val[strlen(val) - 1])))
            return -EINVAL;
        *(uint64_t *)field = v;
        return 0;
    }
    case OPT_BOOL:
        return parse_bool(val, field);
    case OPT_ENUM:
        for (int i = 0; o->choices[i]; i++) {
            if (strcmp(val, o->choices[i]) == 0) {
                if (o->off == OFF(tls_client_cert_required))
                    *(bool *)field = i == 1;
                else
                    *(int *)field = i;
                return 0;
            }
        }
        return -EINVAL;
    case OPT_LISTEN:
        return config_parse_hostport(val, c->listen_host, sizeof(c->listen_host), &c->listen_port);
    case OPT_MODE: {
        char *end = NULL;
        errno = 0;
        long v = strtol(val, &end, 8);
        if (errno || end == val || *end || v < o->min || v > o->max)
            return -EINVAL;
        *(int *)field = (int)v;
        return 0;
    }
    case OPT_STR:
    case OPT_LIST:
        break;
    }
    return -EINVAL;
}

/* Applies one value at a precedence level; lower levels never override higher ones. */
static int apply(struct loader *l, size_t idx, const char *val, enum level lvl)
{
    const struct opt *o = &opts[idx];
    struct config *c = l->c;
    char form[160], who[96];
    if (l->set_at[idx] > lvl)
        return 0;
    if (o->type == OPT_LIST && l->set_at[idx] < lvl)
        free_list(str_field(c, o), list_count(c, o));
    l->set_at[idx] = lvl;
    level_name(lvl, who, sizeof(who), o->name);
    if (!val || (!*val && o->type != OPT_STR && o->type != OPT_LIST))
        return fail(l, "%s needs a value: %s", who, accepted_form(o, form, sizeof(form)));
    void *field = (char *)c + o->off;
    switch (o->type) {
    case OPT_STR: {
        char **s = field;
        free(*s);
        *s = *val ? strdup(val) : NULL;
        return 0;
    }
    case OPT_LIST: {
        size_t *n = list_count(c, o);
        char **list = field;
        /* comma-separated in env and file; one rule per flag */
        const char *p = val;
        while (*p) {
            const char *e = strchr(p, ',');
            size_t len = e ? (size_t)(e - p) : strlen(p);
            while (len && isspace((unsigned char)*p)) {
                p++;
                len--;
            }
            while (len && isspace((unsigned char)p[len - 1]))
                len--;
            if (len) {
                if (*n == CONFIG_MAX_RULES)
                    return fail(l, "%s: at most %d rules", who, CONFIG_MAX_RULES);
                list[(*n)++] = strndup(p, len);
            }
            if (!e)
                break;
            p = e + 1;
        }
        return 0;
    }
    default:
        break;
    }
    if (parse_scalar(o, c, val))
        return fail(l, "invalid value '%s' for %s: expected %s", val, who,
                    accepted_form(o, form, sizeof(form)));
    return 0;
}

static int find_opt(const char *name, size_t len)
{
    for (size_t i = 0; i < NOPTS; i++) {
        if (strlen(opts[i].name) != len)
            continue;
        bool same = true;
        for (size_t k = 0; k < len && same; k++) {
            char a = name[k] == '_' ? '-' : name[k];
            same = a == opts[i].name[k];
        }
        if (same)
            return (int)i;
    }
    return -1;
}

/* A section header: [pgwire-proxy] or [user:NAME]. Anything else is an error: a mistyped
 * [usr:alice] would otherwise leave alice without her guardrails. */
static int section_line(struct loader *l, const char *buf)
{
    const char *p = buf + strspn(buf, " \t");
    if (*p != '[')
        return 0;
    const char *end = strchr(p, ']');
    char name[128];
    size_t n = end ? (size_t)(end - p - 1) : 0;
    snprintf(name, sizeof(name), "%.*s", (int)(n < sizeof(name) ? n : sizeof(name) - 1), p + 1);
    if (end && (!strcmp(name, "pgwire-proxy") || !strcmp(name, "pgwire_proxy")))
        return 0;
    const char *user = NULL;
    int rc = end ? config_user_section(name, &user) : -1;
    if (rc == 0)
        return 0;
    if (rc == -2)
        fail(l, "section [%s]: a user name is 1 to %d bytes", name, CONFIG_USER_MAX - 1);
    else
        fail(l, "unknown section [%s] (the file takes [pgwire-proxy] and [user:NAME])", name);
    l->err_line = l->file_line;
    return -1;
}

/* inih's line reader. Counting lines here lets an error name its own line; it stops at the
 * first bad key or value, and at a line longer than inih's fixed buffer, which inih would
 * otherwise split and parse as two lines (a long DSN's tail read as a key). */
static char *file_read_line(char *buf, int size, void *stream)
{
    struct loader *l = stream;
    if (l->err_line || !fgets(buf, size, l->file))
        return NULL;
    l->file_line++;
    if (section_line(l, buf))
        return NULL;
    size_t n = strlen(buf);
    if (n + 1 == (size_t)size && buf[n - 1] != '\n') {
        int ch = getc(l->file);
        const char *start = buf + strspn(buf, " \t");
        if (*start == ';' || *start == '#') {
            while (ch != EOF && ch != '\n') /* a long comment is harmless: skip its tail */
                ch = getc(l->file);
        } else if (ch != EOF && ch != '\n') {
            l->long_line_max = size - 1;
            return NULL;
        }
    }
    return buf;
}

/* A key in a [user:NAME] section: checked now (a key that is no per-user key is an error at
 * its line), applied once flags and environment have made the top level. */
static int user_value(struct loader *l, const char *user, const char *section, const char *name,
                      const char *value)
{
    int idx = find_opt(name, strlen(name));
    if (idx < 0)
        fail(l, "section [%s]: unknown config key '%s'", section, name);
    else if (!config_user_key_allowed(opts[idx].name))
        fail(l, "section [%s]: key '%s' cannot be set per user (per-user keys: %s)", section, name,
             CONFIG_USER_KEYS);
    else if (config_user_record(&l->pending, user, opts[idx].name, value, l->file_line))
        fail(l, "section [%s]: out of memory or more than %d users", section, CONFIG_MAX_USERS);
    else
        return 1;
    l->err_line = l->file_line;
    return 0;
}

static int file_value(void *user, const char *section, const char *name, const char *value)
{
    struct loader *l = user;
    const char *uname = NULL;
    if (section[0] && config_user_section(section, &uname) == 0)
        return user_value(l, uname, section, name, value);
    int idx = find_opt(name, strlen(name));
    if (idx < 0 || opts[idx].off == OFF(config_file))
        fail(l, "unknown config key '%s'", name);
    else if (apply(l, (size_t)idx, value, LVL_FILE) == 0)
        return 1;
    l->err_line = l->file_line;
    return 0;
}

static int load_file(struct loader *l, const char *path)
{
    l->file = fopen(path, "r");
    if (!l->file)
        return fail(l, "cannot read config file '%s': %s", path, strerror(errno));
    l->err[0] = 0;
    l->file_line = l->err_line = l->long_line_max = 0;
    int rc = ini_parse_stream(file_read_line, l, file_value, l);
    fclose(l->file);
    l->file = NULL;
    if (rc == 0 && !l->long_line_max && !l->err_line)
        return 0;
    if (rc < 0)
        return fail(l, "config file '%s': out of memory", path);
    char inner[384];
    if (rc == 0 && l->err_line) /* a section header, refused by the line reader */
        rc = l->err_line;
    if (rc > 0 && rc == l->err_line)
        snprintf(inner, sizeof(inner), "%s", l->err);
    else if (rc > 0)
        snprintf(inner, sizeof(inner), "syntax error (expected key = value)");
    else
        snprintf(inner, sizeof(inner),
                 "line longer than %d bytes (give a long DSN with --upstream or "
                 "PGWIRE_PROXY_UPSTREAM)",
                 l->long_line_max);
    return fail(l, "config file '%s' line %d: %s", path, rc ? rc : l->file_line, inner);
}

static int load_env(struct loader *l, char **envp)
{
    static const char prefix[] = "PGWIRE_PROXY_";
    for (char **e = envp; e && *e; e++) {
        if (strncmp(*e, prefix, sizeof(prefix) - 1) != 0)
            continue;
        const char *name = *e + sizeof(prefix) - 1;
        const char *eq = strchr(name, '=');
        if (!eq)
            continue;
        char lower[64];
        size_t n = (size_t)(eq - name);
        if (n >= sizeof(lower))
            continue;
        for (size_t i = 0; i < n; i++)
            lower[i] = (char)tolower((unsigned char)name[i]);
        int idx = find_opt(lower, n);
        if (idx < 0)
            continue; /* unknown variables are ignored, as for most tools */
        if (apply(l, (size_t)idx, eq + 1, LVL_ENV))
            return -EINVAL;
    }
    return 0;
}

static void print_help(FILE *out)
{
    fprintf(out, "Usage: pgwire-proxy --upstream DSN [options]\n\n"
                 "A PostgreSQL wire-protocol proxy with guardrails: clients connect to it as to\n"
                 "PostgreSQL; it opens one upstream connection per client from DSN.\n\n"
                 "Options (every option also reads PGWIRE_PROXY_<NAME> from the environment and\n"
                 "key <name> from --config FILE; precedence: flags > env > file > defaults):\n");
    for (size_t i = 0; i < NOPTS; i++) {
        char left[64];
        snprintf(left, sizeof(left), "--%s%s%s", opts[i].name, opts[i].arg ? " " : "",
                 opts[i].arg ? opts[i].arg : "");
        fprintf(out, "  %-36s %s\n", left, opts[i].help);
    }
    fprintf(out, "  %-36s %s\n", "--hash-password",
            "read a password from standard input, print its SCRAM-SHA-256 verifier, exit");
    fprintf(out, "  %-36s %s\n  %-36s %s\n\n", "--version", "print the version and exit", "--help",
            "print this help and exit");
    fprintf(out,
            "Durations: 500ms, 30s, 5m, 1h (a bare number is seconds). Sizes: 64kB, 100MB,\n"
            "1GiB (a bare number is bytes).\n"
            "Signals: SIGHUP reloads the config file; SIGTERM/SIGINT drain sessions for up\n"
            "to --shutdown-timeout, then close them with FATAL 57P01; a second one exits now.\n"
            "Example:\n  pgwire-proxy --upstream 'host=db.internal dbname=app user=ro' "
            "--deny drop --max-rows 5000\n");
}

/* Splits argv into (option index, value) pairs and applies them at flag level. */
static enum config_result load_flags(struct loader *l, int argc, char **argv, FILE *out,
                                     bool apply_values)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            print_help(out);
            return CONFIG_EXIT_OK;
        }
        if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0) {
            fprintf(out, "pgwire-proxy %s\n", PGWP_VERSION);
            return CONFIG_EXIT_OK;
        }
        if (strncmp(a, "--", 2) != 0) {
            fail(l, "unexpected argument '%s' (options start with --; see --help)", a);
            return CONFIG_ERROR;
        }
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        int idx = find_opt(name, nlen);
        if (idx < 0) {
            fail(l, "unknown option '--%.*s' (see --help)", (int)nlen, name);
            return CONFIG_ERROR;
        }
        const char *val = eq ? eq + 1 : NULL;
        if (!val && opts[idx].type == OPT_BOOL)
            val = "on";
        if (!val) {
            if (i + 1 >= argc) {
                char form[160];
                fail(l, "--%s needs a value: %s", opts[idx].name,
                     accepted_form(&opts[idx], form, sizeof(form)));
                return CONFIG_ERROR;
            }
            val = argv[++i];
        }
        if (!apply_values && opts[idx].off != OFF(config_file))
            continue;
        if (apply(l, (size_t)idx, val, LVL_FLAG))
            return CONFIG_ERROR;
    }
    return CONFIG_OK;
}

/* The DSN parsed as libpq will, at start and on reload; the message never quotes it. */
static enum config_result validate_dsn(struct loader *l)
{
    char why[256];
    if (upstream_dsn_check(l->c->upstream_dsn, why, sizeof(why)) == 0)
        return CONFIG_OK;
    fail(l, "invalid value for --upstream: %s (the DSN is not shown: it may hold a password)", why);
    return CONFIG_ERROR;
}

static enum config_result validate_proxy_from(struct loader *l)
{
    struct config *c = l->c;
    for (size_t i = 0; i < c->nproxy_protocol_from; i++) {
        if (proxy_proto_cidr_parse(c->proxy_protocol_from[i], &c->proxy_from[i]) != 0) {
            fail(l,
                 "invalid value '%s' for --proxy-protocol-from: expected addresses or CIDR "
                 "ranges such as 10.0.0.0/8,::1",
                 c->proxy_protocol_from[i]);
            return CONFIG_ERROR;
        }
    }
    return CONFIG_OK;
}

void config_guard_rules(const struct config *c, struct guard_rules *r)
{
    memset(r, 0, sizeof *r);
    r->deny = (const char *const *)c->deny;
    r->ndeny = c->ndeny;
    r->allow = (const char *const *)c->allow;
    r->nallow = c->nallow;
    r->permit = (const char *const *)c->permit;
    r->npermit = c->npermit;
    r->read_only = c->read_only;
    r->relay_copy = c->copy == CONFIG_ALLOW;
    r->max_parse = (size_t)c->max_parse_size;
}

static enum config_result validate_auth(struct loader *l)
{
    const struct config *c = l->c;
    const char *need = NULL;
    if (c->auth_type == CONFIG_AUTH_SCRAM && !c->auth_file)
        need = "--auth-type scram-sha-256 needs --auth-file FILE (userlist.txt format)";
    else if (c->auth_type == CONFIG_AUTH_HBA && !c->auth_hba_file)
        need = "--auth-type hba needs --auth-hba-file FILE (pg_hba.conf format)";
    else if (c->auth_type == CONFIG_AUTH_CERT && (!c->tls_ca || !c->tls_cert))
        need = "--auth-type cert needs --tls-cert, --tls-key and --tls-ca: client certificates can "
               "only be checked if a root certificate store is available";
    else if (c->auth_hba_file && c->auth_type != CONFIG_AUTH_HBA)
        need = "--auth-hba-file needs --auth-type hba";
    if (!need)
        return CONFIG_OK;
    fail(l, "%s", need);
    return CONFIG_ERROR;
}

static enum config_result validate(struct loader *l)
{
    struct config *c = l->c;
    if (!c->upstream_dsn || !*c->upstream_dsn) {
        fail(l, "no upstream: give --upstream DSN or set PGWIRE_PROXY_UPSTREAM "
                "(e.g. 'host=127.0.0.1 port=5432 dbname=app user=app')");
        return CONFIG_ERROR;
    }
    if (validate_dsn(l) != CONFIG_OK || validate_proxy_from(l) != CONFIG_OK)
        return CONFIG_ERROR;
    for (size_t i = 0; i < c->npeers; i++) {
        int id;
        char host[256];
        int port;
        if (config_parse_peer(c->peers[i], &id, host, sizeof(host), &port)) {
            fail(l,
                 "invalid value '%s' for --peer: expected ID=HOST:PORT with ID 1-255, such as "
                 "2=10.0.0.2:5433",
                 c->peers[i]);
            return CONFIG_ERROR;
        }
        if (id == c->peer_id) {
            fail(l, "--peer %s has this instance's own --peer-id %d", c->peers[i], id);
            return CONFIG_ERROR;
        }
    }
    if (c->npeers && !c->peer_id) {
        fail(l, "--peer needs --peer-id: give this instance an id from 1 to 255");
        return CONFIG_ERROR;
    }
    if ((c->tls_cert == NULL) != (c->tls_key == NULL)) {
        fail(l, "--tls-cert and --tls-key go together: give both or neither");
        return CONFIG_ERROR;
    }
    if (c->tls_mode == CONFIG_TLS_REQUIRE && !c->tls_cert) {
        fail(l, "--tls-mode require needs --tls-cert and --tls-key");
        return CONFIG_ERROR;
    }
    if (c->tls_client_cert_required && !c->tls_ca) {
        fail(l, "--tls-client-cert require needs --tls-ca");
        return CONFIG_ERROR;
    }
    if (c->max_parse_size < GUARD_MIN_MAX_PARSE || c->max_parse_size > GUARD_MAX_MAX_PARSE) {
        fail(l, "invalid value %llu bytes for --max-parse-size: expected a size from 1kB to 16MB",
             (unsigned long long)c->max_parse_size);
        return CONFIG_ERROR;
    }
    /* rules are checked here, so an unknown kind exits 2 like any invalid value */
    char gerr[256];
    struct guard_rules rules;
    config_guard_rules(c, &rules);
    struct guard_policy *policy = guard_policy_compile(&rules, gerr, sizeof(gerr));
    if (!policy) {
        fail(l, "%s", gerr);
        return CONFIG_ERROR;
    }
    guard_policy_free(policy);
    if (validate_auth(l) != CONFIG_OK)
        return CONFIG_ERROR;
    if (config_admin_validate(c, l->err, l->errlen))
        return CONFIG_ERROR;
    if (c->metrics_listen) {
        char host[256];
        int port;
        if (config_parse_hostport(c->metrics_listen, host, sizeof(host), &port)) {
            fail(l,
                 "invalid value '%s' for --metrics-listen: expected HOST:PORT such as "
                 "127.0.0.1:9187",
                 c->metrics_listen);
            return CONFIG_ERROR;
        }
    }
    return CONFIG_OK;
}

static enum config_result load_all(struct config *c, int argc, char **argv, char **envp, FILE *out,
                                   char *err, size_t errlen)
{
    struct loader l = {.c = c, .err = err, .errlen = errlen};
    err[0] = 0;
    config_defaults(c);
    if (!envp)
        envp = environ;
    /* First pass: only --help/--version/--config, so the file is read before env and flags.
     * It ends at --help/--version before any value is checked, so help always prints. */
    enum config_result r = load_flags(&l, argc, argv, out, false);
    if (r != CONFIG_OK)
        return r;
    if (!c->config_file) {
        /* envp is the whole environment: a caller's envp must not be mixed with environ */
        const char *p = NULL;
        for (char **e = envp; e && *e; e++)
            if (strncmp(*e, "PGWIRE_PROXY_CONFIG=", 20) == 0)
                p = *e + 20;
        if (p && *p)
            c->config_file = strdup(p);
    }
    if ((c->config_file && load_file(&l, c->config_file)) || load_env(&l, envp)) {
        config_pending_free(&l.pending);
        return CONFIG_ERROR;
    }
    r = load_flags(&l, argc, argv, out, true);
    if (r == CONFIG_OK)
        r = validate(&l);
    /* profiles start from the finished top level; each is checked like it */
    if (r == CONFIG_OK && config_user_build(c, &l.pending, c->config_file, err, errlen))
        r = CONFIG_ERROR;
    config_pending_free(&l.pending);
    return r;
}

enum config_result config_load(struct config *c, int argc, char **argv, char **envp, void *out,
                               char *err, size_t errlen)
{
    enum config_result r = load_all(c, argc, argv, envp, out ? out : stdout, err, errlen);
    if (r != CONFIG_OK)
        config_free(c);
    return r;
}

enum config_result config_reload(struct config *c, int argc, char **argv, char **envp, char *err,
                                 size_t errlen)
{
    return config_load(c, argc, argv, envp, stdout, err, errlen);
}

int config_copy(struct config *dst, const struct config *src)
{
    *dst = *src;
    dst->users = NULL;
    dst->nusers = 0;
    bool ok = true;
    for (size_t i = 0; i < NOPTS; i++) {
        const struct opt *o = &opts[i];
        char **f = str_field(dst, o);
        if (o->type == OPT_STR && *f) {
            *f = strdup(*f);
            ok &= *f != NULL;
        } else if (o->type == OPT_LIST) {
            for (size_t k = 0; k < *list_count(dst, o); k++) {
                f[k] = strdup(f[k]);
                ok &= f[k] != NULL;
            }
        }
    }
    if (!ok)
        config_free(dst);
    return ok ? 0 : -1;
}

int config_apply_key(struct config *c, const char *key, const char *value, bool first, char *err,
                     size_t errlen)
{
    struct loader l = {.c = c, .err = err, .errlen = errlen};
    int idx = find_opt(key, strlen(key));
    if (idx < 0)
        return fail(&l, "unknown config key '%s'", key);
    l.set_at[idx] = first ? LVL_DEFAULT : LVL_FILE; /* the first replaces a list, later add */
    return apply(&l, (size_t)idx, value, LVL_FILE) ? -1 : 0;
}

int config_check_policy(const struct config *c, char *err, size_t errlen)
{
    char why[256];
    if (upstream_dsn_check(c->upstream_dsn, why, sizeof(why)) != 0) {
        snprintf(err, errlen,
                 "invalid value for upstream: %s (the DSN is not shown: it may hold a password)",
                 why);
        return -1;
    }
    struct guard_policy *policy =
        guard_policy_new((const char *const *)c->deny, c->ndeny, (const char *const *)c->allow,
                         c->nallow, c->read_only, err, errlen);
    guard_policy_free(policy);
    return policy ? 0 : -1;
}

char *config_redact_dsn(const char *dsn)
{
    return upstream_dsn_redact(dsn);
}

bool config_option_at(const struct config *c, size_t i, struct config_option *out)
{
    if (i >= NOPTS)
        return false;
    const struct opt *o = &opts[i];
    static const enum config_option_kind kind_of[] = {
        [OPT_STR] = CONFIG_KIND_STR,     [OPT_INT] = CONFIG_KIND_INT,
        [OPT_DURATION] = CONFIG_KIND_MS, [OPT_SIZE] = CONFIG_KIND_U64,
        [OPT_BOOL] = CONFIG_KIND_BOOL,   [OPT_LIST] = CONFIG_KIND_LIST,
        [OPT_ENUM] = CONFIG_KIND_ENUM,   [OPT_LISTEN] = CONFIG_KIND_LISTEN,
        [OPT_MODE] = CONFIG_KIND_MODE};
    *out = (struct config_option){.name = o->name,
                                  .kind = kind_of[o->type],
                                  .field = (const char *)c + o->off,
                                  .choices = o->choices};
    if (o->type == OPT_LIST)
        out->count = *list_count((struct config *)c, o);
    if (o->off == OFF(tls_client_cert_required))
        out->kind = CONFIG_KIND_ENUM_BOOL; /* stored as a bool, shown as its choice */
    return true;
}
