/* The operator's DSN, checked and shown as libpq reads it: a malformed one must never be
 * quoted back (libpq's own messages quote the token that broke, often the password). */
#include "upstream.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What a PQconninfoParse() error is about, in words of our own: libpq's message quotes the
 * offending token, which may be (part of) the password. */
static const char *dsn_parse_error_class(const char *msg)
{
    static const struct {
        const char *needle, *what;
    } classes[] = {
        {"percent-encoded", "invalid percent-encoding (write a literal '%' as %25)"},
        {"unterminated quoted string", "unterminated quoted value (a ' without its closing ')"},
        {"missing \"=\" after", "a word without '=' (quote a value with spaces: password='...')"},
        {"invalid connection option", "an unknown keyword (quote a value with spaces)"},
        {"key/value separator", "a URI query parameter without exactly one '='"},
        {"URI query parameter", "an invalid URI query parameter"},
        {"IPv6", "an invalid IPv6 host address in the URI"},
        {"in URI", "an unexpected character in the URI (percent-encode ':', '/', '@' in a "
                   "user name or password)"},
        {"out of memory", "out of memory"},
    };
    for (size_t i = 0; msg && i < sizeof(classes) / sizeof(classes[0]); i++)
        if (strstr(msg, classes[i].needle))
            return classes[i].what;
    return "it cannot be parsed as a conninfo string or URI";
}

/* libpq takes a URI's user info up to the first '@' or '/': an '@' after that means a user
 * name or password with an unencoded '@' or '/', whose tail libpq would read as host, port
 * or database (and quote in its errors). A URI has no raw spaces either: "URI password=x"
 * would put the keyword and its password into the host name. */
static bool dsn_uri_misencoded(const char *dsn)
{
    const char *p = strstr(dsn, "://");
    if (!p || !(strncmp(dsn, "postgresql://", 13) == 0 || strncmp(dsn, "postgres://", 11) == 0))
        return false;
    for (const char *q = dsn; *q; q++)
        if ((unsigned char)*q <= 0x20 || *q == 0x7f)
            return true;
    p += 3;
    size_t info = strcspn(p, "@/");
    if (p[info] == '@')
        p += info + 1;
    size_t rest = strcspn(p, "?");
    return memchr(p, '@', rest) != NULL;
}

/* A port list ("5432" or "5432,5433"): libpq would otherwise quote a bad one at connect. */
static bool dsn_port_ok(const char *v)
{
    for (const char *p = v; *p;) {
        long n = 0;
        size_t digits = 0;
        while (*p >= '0' && *p <= '9' && digits < 6)
            n = n * 10 + (*p++ - '0'), digits++;
        if ((*p && *p != ',') || n > 65535 || (digits == 0 && *p != ','))
            return false;
        if (*p == ',')
            p++;
    }
    return true;
}

/* "user= password=x" gives user the value "password=x": libpq takes the next word when a
 * value is left empty. A value that reads as another keyword's setting is that mistake. */
static bool dsn_value_is_a_setting(const PQconninfoOption *opts, const char *v)
{
    for (const PQconninfoOption *o = opts; o->keyword; o++) {
        size_t kl = strlen(o->keyword);
        if (strncmp(v, o->keyword, kl) != 0)
            continue;
        const char *p = v + kl;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '=')
            return true;
    }
    return false;
}

int upstream_dsn_check(const char *dsn, char *err, size_t errlen)
{
    char *perr = NULL;
    PQconninfoOption *opts = dsn ? PQconninfoParse(dsn, &perr) : NULL;
    int rc = -1;
    if (!opts) {
        snprintf(err, errlen, "%s", dsn_parse_error_class(perr));
        goto out;
    }
    if (dsn_uri_misencoded(dsn)) {
        snprintf(err, errlen,
                 "a space, or an '@' after the host, in the URI (percent-encode "
                 "' ' as %%20, '@' as %%40 and '/' as %%2F in a user name or "
                 "password)");
        goto out;
    }
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val)
            continue;
        if (dsn_value_is_a_setting(opts, o->val)) {
            snprintf(err, errlen,
                     "a value that reads as another setting (an empty value is "
                     "written '')");
            goto out;
        }
        if (strcmp(o->keyword, "port") == 0 && !dsn_port_ok(o->val)) {
            snprintf(err, errlen, "port is not a number from 0 to 65535");
            goto out;
        }
        if (strcmp(o->keyword, "options") == 0 && strlen(o->val) > UPSTREAM_OPTIONS_MAX / 4) {
            snprintf(err, errlen, "options is longer than %d bytes", UPSTREAM_OPTIONS_MAX / 4);
            goto out;
        }
    }
    rc = 0;
out:
    PQfreemem(perr);
    PQconninfoFree(opts);
    return rc;
}

/* value quoted as libpq reads it back: '...' with ' and \ escaped */
static void append_quoted(char *out, size_t *o, const char *v)
{
    out[(*o)++] = '\'';
    for (const char *p = v; *p; p++) {
        if (*p == '\'' || *p == '\\')
            out[(*o)++] = '\\';
        out[(*o)++] = *p;
    }
    out[(*o)++] = '\'';
}

static bool needs_quotes(const char *v)
{
    if (!*v)
        return true;
    for (const char *p = v; *p; p++)
        if (*p == '\'' || *p == '\\' || *p == ' ' || (unsigned char)*p < 0x21)
            return true;
    return false;
}

char *upstream_dsn_redact(const char *dsn)
{
    char err[256];
    if (!dsn)
        return strdup("");
    if (upstream_dsn_check(dsn, err, sizeof(err)) != 0)
        return strdup("(invalid DSN, not shown)");
    /* rebuilt from libpq's own reading, so whatever libpq takes for a password is hidden,
     * however it was written (quoted, percent-encoded, in a URI query) */
    PQconninfoOption *opts = PQconninfoParse(dsn, NULL);
    if (!opts)
        return NULL;
    size_t cap = 2 * strlen(dsn) + 64;
    for (PQconninfoOption *o = opts; o->keyword; o++)
        cap += strlen(o->keyword) + 16;
    char *out = malloc(cap);
    size_t o = 0;
    for (PQconninfoOption *opt = opts; out && opt->keyword; opt++) {
        if (!opt->val)
            continue;
        if (o)
            out[o++] = ' ';
        size_t kl = strlen(opt->keyword);
        memcpy(out + o, opt->keyword, kl);
        o += kl;
        out[o++] = '=';
        if (opt->dispchar && opt->dispchar[0] == '*') {
            memcpy(out + o, "********", 8);
            o += 8;
        } else if (needs_quotes(opt->val)) {
            append_quoted(out, &o, opt->val);
        } else {
            size_t vl = strlen(opt->val);
            memcpy(out + o, opt->val, vl);
            o += vl;
        }
    }
    if (out)
        out[o] = 0;
    PQconninfoFree(opts);
    return out;
}
