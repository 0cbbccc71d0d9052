/* pg_hba.conf subset: tokenizer (as PostgreSQL's: blanks, commas, quotes with "" escapes,
 * '#' comments, a trailing '\' continues the line), record checks with PostgreSQL's messages,
 * and first-match lookup. */
#include "hba.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FIELDS 16
#define MAX_ITEMS  256

struct item {
    char *text;
    bool quoted;
};

struct field {
    struct item items[MAX_ITEMS];
    size_t n;
};

struct record {
    struct field fields[MAX_FIELDS];
    size_t n;
    int line;
    char *text;
};

struct parse {
    const char *path;
    char *err;
    size_t errlen;
};

static int fail(struct parse *p, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(struct parse *p, int line, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(p->err, p->errlen, "hba file '%s' line %d: %s", p->path, line, msg);
    return -1;
}

static void record_clear(struct record *r)
{
    for (size_t f = 0; f < r->n; f++)
        for (size_t i = 0; i < r->fields[f].n; i++)
            free(r->fields[f].items[i].text);
    free(r->text);
    memset(r, 0, sizeof(*r));
}

static bool blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

/* Splits one logical line into fields of comma-separated items. */
static int tokenize(struct parse *p, const char *s, struct record *r)
{
    char buf[4096];
    while (*s) {
        while (blank(*s))
            s++;
        if (!*s || *s == '#')
            break;
        if (r->n == MAX_FIELDS)
            return fail(p, r->line, "too many fields");
        struct field *f = &r->fields[r->n++];
        for (;;) { /* one item */
            size_t n = 0;
            bool quoted = false, in_q = false;
            while (*s && (in_q || (!blank(*s) && *s != ',' && *s != '#'))) {
                if (*s == '"') {
                    if (in_q && s[1] == '"') {
                        s++;
                    } else {
                        in_q = !in_q;
                        quoted = true;
                        s++;
                        continue;
                    }
                }
                if (n + 1 >= sizeof(buf))
                    return fail(p, r->line, "field too long");
                buf[n++] = *s++;
            }
            if (in_q)
                return fail(p, r->line, "unterminated quoted string");
            if (f->n == MAX_ITEMS)
                return fail(p, r->line, "too many names in a list");
            buf[n] = 0;
            f->items[f->n].text = strdup(buf);
            f->items[f->n++].quoted = quoted;
            if (!f->items[f->n - 1].text)
                return fail(p, r->line, "out of memory");
            if (*s != ',')
                break;
            s++;
        }
    }
    return 0;
}

static bool kw(const struct item *it, const char *word)
{
    return !it->quoted && strcmp(it->text, word) == 0;
}

static int names(struct parse *p, int line, const struct field *f, struct hba_names *out,
                 bool database)
{
    static const char *const refused_db[] = {"samerole", "samegroup", "replication"};
    for (size_t i = 0; i < f->n; i++) {
        const struct item *it = &f->items[i];
        if (kw(it, "all")) {
            out->all = true;
            continue;
        }
        if (database && kw(it, "sameuser")) {
            out->sameuser = true;
            continue;
        }
        for (size_t k = 0; database && k < sizeof(refused_db) / sizeof(refused_db[0]); k++)
            if (kw(it, refused_db[k]))
                return fail(p, line, "\"%s\" is not supported by pgwire-proxy", it->text);
        if (!it->quoted && (it->text[0] == '+' || it->text[0] == '/' || it->text[0] == '@'))
            return fail(p, line,
                        "\"%s\": group membership (+), regular expressions (/) and @file lists "
                        "are not supported; list the names",
                        it->text);
        if (!it->text[0])
            return fail(p, line, "empty name in a list");
        char **nn = realloc(out->names, (out->n + 1) * sizeof(*nn));
        if (!nn)
            return fail(p, line, "out of memory");
        out->names = nn;
        out->names[out->n] = strdup(it->text);
        if (!out->names[out->n++])
            return fail(p, line, "out of memory");
    }
    return 0;
}

static int mask_prefix(const char *s, int family, int *prefix)
{
    uint8_t b[16];
    if (inet_pton(family, s, b) != 1)
        return -1;
    int n = family == AF_INET ? 4 : 16, bits = 0;
    bool ended = false;
    for (int i = 0; i < n; i++) {
        for (int k = 7; k >= 0; k--) {
            bool one = b[i] >> k & 1;
            if (one && ended)
                return -1; /* not contiguous */
            ended |= !one;
            bits += one;
        }
    }
    *prefix = bits;
    return 0;
}

/* The address field (and a netmask after it). *next: the index of the method field. */
static int address(struct parse *p, const struct record *r, struct hba_rule *rule, size_t *next)
{
    if (r->n <= 3)
        return fail(p, r->line, "end-of-line before IP address specification");
    const struct field *f = &r->fields[3];
    const char *a = f->items[0].text;
    *next = 4;
    if (f->n != 1)
        return fail(p, r->line, "multiple values specified for host address");
    if (kw(&f->items[0], "all")) {
        rule->any_addr = true;
        return 0;
    }
    if (kw(&f->items[0], "samehost") || kw(&f->items[0], "samenet"))
        return fail(p, r->line, "\"%s\" is not supported by pgwire-proxy; give CIDR ranges", a);
    if (strchr(a, '/')) {
        if (proxy_proto_cidr_parse(a, &rule->addr) != 0)
            return fail(p, r->line, "invalid CIDR mask in address \"%s\"", a);
        return 0;
    }
    if (proxy_proto_cidr_parse(a, &rule->addr) != 0)
        return fail(p, r->line,
                    "invalid IP address \"%s\" (host names are not supported; give CIDR ranges)",
                    a);
    if (r->n <= 4)
        return fail(p, r->line, "end-of-line before netmask specification");
    if (mask_prefix(r->fields[4].items[0].text, rule->addr.family, &rule->addr.prefix) != 0)
        return fail(p, r->line, "invalid IP mask \"%s\"", r->fields[4].items[0].text);
    *next = 5;
    return 0;
}

static int method(struct parse *p, const struct record *r, size_t at, struct hba_rule *rule)
{
    static const char *const names_[] = {"trust", "reject", "scram-sha-256", "cert", "peer"};
    if (r->n <= at)
        return fail(p, r->line, "end-of-line before authentication method specification");
    const char *m = r->fields[at].items[0].text;
    size_t i = 0;
    while (i < 5 && strcmp(m, names_[i]) != 0)
        i++;
    if (i == 5 || r->fields[at].n != 1)
        return fail(p, r->line,
                    "invalid authentication method \"%s\" (pgwire-proxy supports trust, reject, "
                    "scram-sha-256, cert and peer)",
                    m);
    rule->method = (enum hba_method)i;
    if (rule->method == HBA_CERT && rule->conn != HBA_HOSTSSL)
        return fail(p, r->line, "cert authentication is only supported on hostssl connections");
    if (rule->method == HBA_PEER && rule->conn != HBA_LOCAL)
        return fail(p, r->line, "peer authentication is only supported on local sockets");
    for (size_t o = at + 1; o < r->n; o++) {
        const char *opt = r->fields[o].items[0].text;
        if (!strchr(opt, '='))
            return fail(p, r->line, "authentication option not in name=value format: %s", opt);
        if (strcmp(opt, "clientcert=verify-full") != 0)
            return fail(p, r->line,
                        "unsupported authentication option \"%s\" (only clientcert=verify-full)",
                        opt);
        if (rule->conn != HBA_HOSTSSL)
            return fail(p, r->line, "clientcert can only be configured for \"hostssl\" rows");
        rule->clientcert = true;
    }
    return 0;
}

static int record(struct parse *p, const struct record *r, struct hba_rule *rule)
{
    static const char *const conns[] = {"local", "host", "hostssl", "hostnossl"};
    const char *c = r->fields[0].items[0].text;
    size_t i = 0;
    while (i < 4 && strcmp(c, conns[i]) != 0)
        i++;
    if (!strncmp(c, "include", 7))
        return fail(p, r->line, "include directives are not supported");
    if (i == 4 || r->fields[0].n != 1)
        return fail(p, r->line, "invalid connection type \"%s\"", c);
    rule->conn = (enum hba_conn)i;
    rule->line = r->line;
    if (r->n <= 1)
        return fail(p, r->line, "end-of-line before database specification");
    if (r->n <= 2)
        return fail(p, r->line, "end-of-line before role specification");
    if (names(p, r->line, &r->fields[1], &rule->databases, true) ||
        names(p, r->line, &r->fields[2], &rule->users, false))
        return -1;
    size_t at = 3;
    if (rule->conn != HBA_LOCAL && address(p, r, rule, &at))
        return -1;
    return method(p, r, at, rule);
}

/* Joins continued lines ('\' at the end: both removed, even in quotes or a comment). Returns
 * the logical line (malloc'd) and advances *s; *lines counts the physical lines used. */
static char *logical_line(const char **s, const char *end, int *lines)
{
    size_t cap = 256, n = 0;
    char *out = malloc(cap);
    *lines = 0;
    while (out && *s < end) {
        const char *nl = memchr(*s, '\n', (size_t)(end - *s));
        size_t len = nl ? (size_t)(nl - *s) : (size_t)(end - *s);
        (*lines)++;
        bool cont = len > 0 && (*s)[len - 1] == '\\';
        size_t take = cont ? len - 1 : len;
        if (n + take + 1 > cap) {
            cap = n + take + 256;
            char *o = realloc(out, cap);
            if (!o) {
                free(out);
                return NULL;
            }
            out = o;
        }
        memcpy(out + n, *s, take);
        n += take;
        *s = nl ? nl + 1 : end;
        if (!cont)
            break;
    }
    if (out)
        out[n] = 0;
    return out;
}

static void rule_free(struct hba_rule *r)
{
    for (size_t i = 0; i < r->databases.n; i++)
        free(r->databases.names[i]);
    for (size_t i = 0; i < r->users.n; i++)
        free(r->users.names[i]);
    free(r->databases.names);
    free(r->users.names);
    free(r->text);
}

static int add_rule(struct parse *p, struct hba *h, size_t *cap, struct record *r)
{
    if (h->n == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        struct hba_rule *nr = realloc(h->rules, nc * sizeof(*nr));
        if (!nr)
            return fail(p, r->line, "out of memory");
        h->rules = nr;
        *cap = nc;
    }
    struct hba_rule *rule = &h->rules[h->n++];
    memset(rule, 0, sizeof(*rule));
    rule->text = r->text;
    r->text = NULL;
    return record(p, r, rule);
}

struct hba *hba_parse(const char *text, size_t len, const char *path, char *err, size_t errlen)
{
    struct parse p = {.path = path, .err = err, .errlen = errlen};
    struct hba *h = calloc(1, sizeof(*h));
    struct record *r = calloc(1, sizeof(*r));
    const char *s = text, *end = text + len;
    size_t cap = 0;
    int lineno = 1, rc = (h && r) ? 0 : fail(&p, 0, "out of memory");
    if (rc == 0 && memchr(text, 0, len))
        rc = fail(&p, 0, "NUL byte in the file");
    while (rc == 0 && s < end) {
        int used = 0;
        char *ln = logical_line(&s, end, &used);
        r->line = lineno;
        lineno += used;
        if (!ln) {
            rc = fail(&p, r->line, "out of memory");
            break;
        }
        rc = tokenize(&p, ln, r);
        if (rc == 0 && r->n > 0) {
            r->text = ln;
            ln = NULL;
            rc = add_rule(&p, h, &cap, r);
        }
        free(ln);
        record_clear(r);
    }
    free(r);
    if (rc != 0) {
        hba_free(h);
        return NULL;
    }
    return h;
}

struct hba *hba_load(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot read hba file '%s': %s", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(HBA_MAX_FILE + 1);
    size_t n = buf ? fread(buf, 1, HBA_MAX_FILE + 1, f) : 0;
    bool bad = ferror(f) || !buf;
    fclose(f);
    struct hba *h = NULL;
    if (bad)
        snprintf(err, errlen, "cannot read hba file '%s'", path);
    else if (n > HBA_MAX_FILE)
        snprintf(err, errlen, "hba file '%s' is larger than %d bytes", path, HBA_MAX_FILE);
    else
        h = hba_parse(buf, n, path, err, errlen);
    free(buf);
    return h;
}

void hba_free(struct hba *h)
{
    if (!h)
        return;
    for (size_t i = 0; i < h->n; i++)
        rule_free(&h->rules[i]);
    free(h->rules);
    free(h);
}

static bool in_names(const struct hba_names *n, const char *v)
{
    for (size_t i = 0; i < n->n; i++)
        if (strcmp(n->names[i], v) == 0)
            return true;
    return false;
}

static bool conn_matches(enum hba_conn c, const struct hba_query *q)
{
    switch (c) {
    case HBA_LOCAL:
        return q->local;
    case HBA_HOST:
        return !q->local;
    case HBA_HOSTSSL:
        return !q->local && q->ssl;
    case HBA_HOSTNOSSL:
        return !q->local && !q->ssl;
    }
    return false;
}

const struct hba_rule *hba_match(const struct hba *h, const struct hba_query *q)
{
    for (size_t i = 0; h && i < h->n; i++) {
        const struct hba_rule *r = &h->rules[i];
        if (!conn_matches(r->conn, q))
            continue;
        bool db = r->databases.all || (r->databases.sameuser && !strcmp(q->database, q->user)) ||
                  in_names(&r->databases, q->database);
        if (!db || !(r->users.all || in_names(&r->users, q->user)))
            continue;
        /* an IPv4-mapped IPv6 client counts as IPv4, so a v4 rule also bites on a dual-stack
         * listener */
        if (r->conn != HBA_LOCAL && !r->any_addr &&
            (!q->addr || !proxy_proto_cidr_match(&r->addr, 1, q->addr)))
            continue;
        return r;
    }
    return NULL;
}

const char *hba_method_name(enum hba_method m)
{
    static const char *const n[] = {"trust", "reject", "scram-sha-256", "cert", "peer"};
    return (unsigned)m < 5 ? n[m] : "?";
}
