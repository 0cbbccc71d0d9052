/* The option table read back as text: what the console's SHOW CONFIG lists. Values are spelled
 * as the flags take them, so a listed value can be given back as it is; the upstream DSN is
 * shown with its passwords replaced. */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What a SIGHUP does not change for running sessions (README's reload column). Every other
 * option applies to the next statement. */
static const struct {
    const char *name;
    const char *when;
} reload_rows[] = {
    {"listen", "no"},
    {"unix-socket-dir", "no"},
    {"unix-socket-mode", "no"},
    {"workers", "no"},
    {"allow-core-dumps", "no"},
    {"max-parse-size", "no"},
    {"metrics-listen", "no"},
    {"config", "no"},
    {"upstream", "new connections"},
    {"idle-in-transaction-timeout", "new connections"},
    {"proxy-protocol-from", "new connections"},
    {"extended-protocol", "new connections"},
    {"copy", "new connections"},
    {"tls-cert", "new connections"},
    {"tls-key", "new connections"},
    {"tls-ca", "new connections"},
    {"tls-mode", "new connections"},
    {"tls-client-cert", "new connections"},
    {"tls-min-version", "new connections"},
    {"auth-type", "new connections"},
    {"auth-file", "new connections"},
    {"auth-hba-file", "new connections"},
    {"auth-secret-file", "new connections"},
    {"auth-failure-delay", "new connections"},
    {"admin-users", "new connections"},
    {"admin-trust-loopback", "new connections"},
};

const char *config_option_reload(const char *name)
{
    for (size_t i = 0; i < sizeof(reload_rows) / sizeof(reload_rows[0]); i++)
        if (strcmp(reload_rows[i].name, name) == 0)
            return reload_rows[i].when;
    return "yes";
}

static void duration_text(uint64_t ms, char *buf, size_t len)
{
    if (ms == 0)
        snprintf(buf, len, "0");
    else if (ms % 3600000 == 0)
        snprintf(buf, len, "%" PRIu64 "h", ms / 3600000);
    else if (ms % 60000 == 0)
        snprintf(buf, len, "%" PRIu64 "m", ms / 60000);
    else if (ms % 1000 == 0)
        snprintf(buf, len, "%" PRIu64 "s", ms / 1000);
    else
        snprintf(buf, len, "%" PRIu64 "ms", ms);
}

static void size_text(const char *name, uint64_t v, char *buf, size_t len)
{
    static const struct {
        uint64_t mul;
        const char *unit;
    } units[] = {{1000000000ull, "GB"}, {1000000, "MB"}, {1000, "kB"}};
    if (strcmp(name, "max-rows") != 0 && v) /* a row count has no unit */
        for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
            if (v % units[i].mul == 0) {
                snprintf(buf, len, "%" PRIu64 "%s", v / units[i].mul, units[i].unit);
                return;
            }
    snprintf(buf, len, "%" PRIu64, v);
}

static void list_text(const struct config_option *o, char *buf, size_t len)
{
    char *const *items = o->field;
    size_t n = 0;
    buf[0] = 0;
    for (size_t i = 0; i < o->count && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n, "%s%s", i ? "," : "", items[i]);
}

static void string_text(const struct config *c, const struct config_option *o, char *buf,
                        size_t len)
{
    const char *v = *(char *const *)o->field;
    if (!v) {
        buf[0] = 0;
        return;
    }
    if (strcmp(o->name, "upstream") == 0) {
        char *red = config_redact_dsn(c->upstream_dsn);
        snprintf(buf, len, "%s", red ? red : "********");
        free(red);
        return;
    }
    snprintf(buf, len, "%s", v);
}

const char *config_option_text(const struct config *c, const struct config_option *o, char *buf,
                               size_t len)
{
    switch (o->kind) {
    case CONFIG_KIND_STR:
        string_text(c, o, buf, len);
        break;
    case CONFIG_KIND_INT:
        snprintf(buf, len, "%d", *(const int *)o->field);
        break;
    case CONFIG_KIND_MS:
        duration_text(*(const uint64_t *)o->field, buf, len);
        break;
    case CONFIG_KIND_U64:
        size_text(o->name, *(const uint64_t *)o->field, buf, len);
        break;
    case CONFIG_KIND_BOOL:
        snprintf(buf, len, "%s", *(const bool *)o->field ? "on" : "off");
        break;
    case CONFIG_KIND_LIST:
        list_text(o, buf, len);
        break;
    case CONFIG_KIND_ENUM:
        snprintf(buf, len, "%s", o->choices[*(const int *)o->field]);
        break;
    case CONFIG_KIND_ENUM_BOOL:
        snprintf(buf, len, "%s", o->choices[*(const bool *)o->field ? 1 : 0]);
        break;
    case CONFIG_KIND_LISTEN:
        snprintf(buf, len, strchr(c->listen_host, ':') ? "[%s]:%d" : "%s:%d", c->listen_host,
                 c->listen_port);
        break;
    case CONFIG_KIND_MODE:
        snprintf(buf, len, "%04o", (unsigned)*(const int *)o->field);
        break;
    }
    return buf;
}
