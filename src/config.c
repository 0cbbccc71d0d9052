#include "config.h"
#include "config_int.h"
#include "guard.h"
#include "log.h"
#include "upstream.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

enum level { LVL_DEFAULT, LVL_FILE, LVL_ENV, LVL_FLAG };

struct loader {
    struct config *c;
    enum level set_at[CONFIG_OPTS_MAX];
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

static char **str_field(struct config *c, const struct config_opt *o)
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

static size_t *list_count(struct config *c, const struct config_opt *o)
{
    if (o->off == CONFIG_OFF(proxy_protocol_from))
        return &c->nproxy_protocol_from;
    if (o->off == CONFIG_OFF(deny))
        return &c->ndeny;
    if (o->off == CONFIG_OFF(peers))
        return &c->npeers;
    if (o->off == CONFIG_OFF(admin_users))
        return &c->nadmin_users;
    return o->off == CONFIG_OFF(permit) ? &c->npermit : &c->nallow;
}

void config_free(struct config *c)
{
    for (size_t i = 0; i < config_nopts; i++) {
        const struct config_opt *o = &config_opts[i];
        if (o->type == OPT_STR) {
            free(*str_field(c, o));
            *str_field(c, o) = NULL;
        } else if (o->type == OPT_LIST) {
            free_list(str_field(c, o), list_count(c, o));
        }
    }
    config_users_free(c);
}

static const char *accepted_form(const struct config_opt *o, char *buf, size_t len)
{
    switch (o->type) {
    case OPT_DURATION:
        return "a duration such as 500ms, 30s, 5m or 0";
    case OPT_SIZE:
        return o->off == CONFIG_OFF(max_rows) ? "a whole number such as 10000 or 0"
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
    int rc = config_vfail(l->err, l->errlen, fmt, ap);
    va_end(ap);
    return rc;
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
static int parse_scalar(const struct config_opt *o, struct config *c, const char *val)
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
            (o->off == CONFIG_OFF(max_rows) && !isdigit((unsigned char)val[strlen(val) - 1])))
            return -EINVAL;
        *(uint64_t *)field = v;
        return 0;
    }
    case OPT_BOOL:
        return config_parse_bool(val, field);
    case OPT_ENUM:
        for (int i = 0; o->choices[i]; i++) {
            if (strcmp(val, o->choices[i]) == 0) {
                if (o->off == CONFIG_OFF(tls_client_cert_required))
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
    const struct config_opt *o = &config_opts[idx];
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
    for (size_t i = 0; i < config_nopts; i++) {
        if (strlen(config_opts[i].name) != len)
            continue;
        bool same = true;
        for (size_t k = 0; k < len && same; k++) {
            char a = name[k] == '_' ? '-' : name[k];
            same = a == config_opts[i].name[k];
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
    else if (!config_user_key_allowed(config_opts[idx].name))
        fail(l, "section [%s]: key '%s' cannot be set per user (per-user keys: %s)", section, name,
             CONFIG_USER_KEYS);
    else if (config_user_record(&l->pending, user, config_opts[idx].name, value, l->file_line))
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
    if (idx < 0 || config_opts[idx].off == CONFIG_OFF(config_file))
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
    for (size_t i = 0; i < config_nopts; i++) {
        char left[64];
        snprintf(left, sizeof(left), "--%s%s%s", config_opts[i].name, config_opts[i].arg ? " " : "",
                 config_opts[i].arg ? config_opts[i].arg : "");
        fprintf(out, "  %-36s %s\n", left, config_opts[i].help);
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
        if (!val && config_opts[idx].type == OPT_BOOL)
            val = "on";
        if (!val) {
            if (i + 1 >= argc) {
                char form[160];
                fail(l, "--%s needs a value: %s", config_opts[idx].name,
                     accepted_form(&config_opts[idx], form, sizeof(form)));
                return CONFIG_ERROR;
            }
            val = argv[++i];
        }
        if (!apply_values && config_opts[idx].off != CONFIG_OFF(config_file))
            continue;
        if (apply(l, (size_t)idx, val, LVL_FLAG))
            return CONFIG_ERROR;
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
        r = config_validate(c, err, errlen) ? CONFIG_ERROR : CONFIG_OK;
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
    for (size_t i = 0; i < config_nopts; i++) {
        const struct config_opt *o = &config_opts[i];
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

char *config_redact_dsn(const char *dsn)
{
    return upstream_dsn_redact(dsn);
}

bool config_option_at(const struct config *c, size_t i, struct config_option *out)
{
    if (i >= config_nopts)
        return false;
    const struct config_opt *o = &config_opts[i];
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
    if (o->off == CONFIG_OFF(tls_client_cert_required))
        out->kind = CONFIG_KIND_ENUM_BOOL; /* stored as a bool, shown as its choice */
    return true;
}
