/* The checks a loaded configuration passes before it is used, at start and on reload: the
 * ones no single value can make alone (pairs of options, the DSN as libpq reads it, the rules
 * as the guard compiles them). */
#include "config.h"
#include "config_int.h"
#include "guard.h"
#include "upstream.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

struct check {
    struct config *c;
    char *err;
    size_t errlen;
};

static int fail(struct check *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct check *l, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = config_vfail(l->err, l->errlen, fmt, ap);
    va_end(ap);
    return rc;
}

/* The DSN parsed as libpq will, at start and on reload; the message never quotes it. */
static enum config_result validate_dsn(struct check *l)
{
    char why[256];
    if (upstream_dsn_check(l->c->upstream_dsn, why, sizeof(why)) == 0)
        return CONFIG_OK;
    fail(l, "invalid value for --upstream: %s (the DSN is not shown: it may hold a password)", why);
    return CONFIG_ERROR;
}

static enum config_result validate_proxy_from(struct check *l)
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

static enum config_result validate_auth(struct check *l)
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

static enum config_result check_all(struct check *l)
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
        /* The endpoint binds one socket to one address; a name could resolve to several or
         * to none at bind time, so it is refused here, where a typo costs exit 2. */
        unsigned char a[16];
        if (inet_pton(AF_INET, host, a) != 1 && inet_pton(AF_INET6, host, a) != 1) {
            fail(l,
                 "invalid value '%s' for --metrics-listen: the host must be a numeric IPv4 or "
                 "IPv6 address such as 127.0.0.1:9187 or [::1]:9187",
                 c->metrics_listen);
            return CONFIG_ERROR;
        }
    }
    return CONFIG_OK;
}

int config_validate(struct config *c, char *err, size_t errlen)
{
    struct check l = {.c = c, .err = err, .errlen = errlen};
    return check_all(&l) == CONFIG_OK ? 0 : -1;
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
