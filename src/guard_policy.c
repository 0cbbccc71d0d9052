/* Policy compilation: deny/allow/permit rules and read-only mode into kind sets, function
 * lists and group masks. The rule grammar is documented in docs/policy.md. */
#include "guard_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Not configuration: a process-wide counter, so a freed policy's address reused by a new one
 * can never revive stale cache entries. 0 is the NULL policy. */
static _Atomic uint64_t next_policy_gen = 1;

static const char *const families[] = {"alter", "create", "drop"};

enum list { L_DENY, L_ALLOW, L_PERMIT };
static const char *const list_names[] = {"deny", "allow", "permit"};

__attribute__((format(printf, 3, 4))) static void set_err(char *err, size_t errlen, const char *fmt,
                                                          ...)
{
    va_list ap;
    if (!err || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Trimmed, lowercased copy of a rule; false when empty or too long. */
static bool rule_text(const char *in, char *buf, size_t cap)
{
    size_t n;
    while (*in == ' ' || *in == '\t')
        in++;
    n = strlen(in);
    while (n > 0 && (in[n - 1] == ' ' || in[n - 1] == '\t'))
        n--;
    if (n == 0 || n >= cap)
        return false;
    for (size_t i = 0; i < n; i++)
        buf[i] = (in[i] >= 'A' && in[i] <= 'Z') ? (char)(in[i] - 'A' + 'a') : in[i];
    buf[n] = '\0';
    return true;
}

bool guard_name_in(const struct guard_name_list *l, const char *name)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->names[i], name) == 0)
            return true;
    return false;
}

static int add_function(struct guard_name_list *l, const char *name, char *err, size_t errlen)
{
    const char *dot = strrchr(name, '.');

    /* Calls are matched on their last name component (pg_sleep() reaches pg_catalog through
     * search_path anyway), so a schema in the rule is dropped: one rule catches both spellings. */
    if (dot)
        name = dot + 1;
    size_t len = strlen(name);
    if (len == 0 || len >= FUNC_NAME_MAX) {
        set_err(err, errlen, "invalid function rule \"function:%s\": expected 1 to %d bytes", name,
                FUNC_NAME_MAX - 1);
        return -EINVAL;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '$' ||
              c >= 0x80)) {
            set_err(err, errlen, "invalid function rule \"function:%s\": unexpected character",
                    name);
            return -EINVAL;
        }
    }
    char(*grown)[FUNC_NAME_MAX] = realloc(l->names, (l->n + 1) * sizeof *l->names);
    if (!grown) {
        set_err(err, errlen, "out of memory");
        return -ENOMEM;
    }
    l->names = grown;
    memcpy(grown[l->n], name, len + 1);
    l->n++;
    return 0;
}

static int add_group(struct guard_policy *p, const char *name, enum list which, char *err,
                     size_t errlen)
{
    int g = guard_group_lookup(name);
    if (g < 0) {
        char all[160] = "";
        for (unsigned i = 0; i < GUARD_G_COUNT; i++) {
            strcat(all, i ? ", " : "");
            strcat(all, guard_group_name(i));
        }
        set_err(err, errlen, "unknown function group \"group:%s\" in %s list (groups: %s)", name,
                list_names[which], all);
        return -EINVAL;
    }
    unsigned *mask = which == L_DENY    ? &p->deny_groups
                     : which == L_ALLOW ? &p->allow_groups
                                        : &p->permit_groups;
    *mask |= 1u << (unsigned)g;
    return 0;
}

static void unknown_kind_err(const char *rule, enum list which, char *err, size_t errlen)
{
    size_t o;
    if (!err || errlen == 0)
        return;
    set_err(err, errlen,
            "unknown statement kind \"%s\" in %s list (use a kind, a family alter/create/drop, "
            "function:NAME or group:NAME; see docs/policy.md; kinds:",
            rule, list_names[which]);
    o = strlen(err);
    for (const char *const *k = guard_kind_names(); *k; k++) {
        size_t n = strlen(*k);
        if (o + n + 6 >= errlen) {
            if (o + 5 < errlen)
                memcpy(err + o, " ...)", 6);
            return;
        }
        err[o++] = ' ';
        memcpy(err + o, *k, n);
        o += n;
    }
    if (o + 2 <= errlen) {
        err[o++] = ')';
        err[o] = '\0';
    }
}

/* A kind or a family into the deny or allow set. */
static int add_kinds(struct guard_policy *p, const char *r, enum list which, char *err,
                     size_t errlen)
{
    const char *family = NULL;
    bool matched = false;

    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++)
        if (strcmp(r, families[i]) == 0)
            family = families[i];
    for (int k = 0; k < GUARD_K_COUNT; k++) {
        const char *name = guard_kind_name((enum guard_kind)k);
        size_t fl = family ? strlen(family) : 0;
        bool hit =
            strcmp(name, r) == 0 || (family && strncmp(name, family, fl) == 0 && name[fl] == '_');
        if (!hit)
            continue;
        matched = true;
        if (which == L_DENY) {
            guard_kind_set_add(&p->deny, (enum guard_kind)k);
            if (!p->deny_rule[k])
                p->deny_rule[k] = family ? family : name; /* static strings: no ownership */
        } else {
            guard_kind_set_add(&p->allow, (enum guard_kind)k);
            p->kind_allow_list = true;
        }
    }
    if (!matched) {
        unknown_kind_err(r, which, err, errlen);
        return -EINVAL;
    }
    return 0;
}

static int add_entry(struct guard_policy *p, const char *r, enum list which, char *err,
                     size_t errlen);

static struct guard_policy *policy_alloc(void)
{
    struct guard_policy *p = calloc(1, sizeof *p);
    if (p) {
        atomic_init(&p->refs, 1);
        p->gen = atomic_fetch_add(&next_policy_gen, 1);
    }
    return p;
}

/* "shadow:ENTRY": ENTRY goes into the shadow policy's list of the same name. */
static int add_shadow(struct guard_policy *p, const char *r, enum list which, char *err,
                      size_t errlen)
{
    const char *entry = r + 7;
    char why[512];

    if (which == L_PERMIT) {
        set_err(err, errlen,
                "invalid permit rule \"%s\": shadow: applies to deny and allow entries; a "
                "permit entry serves both",
                r);
        return -EINVAL;
    }
    while (*entry == ' ' || *entry == '\t')
        entry++;
    if (!*entry) {
        set_err(err, errlen,
                "empty shadow rule \"%s\" in %s list: expected shadow:KIND, "
                "shadow:function:NAME or shadow:group:NAME",
                r, list_names[which]);
        return -EINVAL;
    }
    if (strncmp(entry, "shadow:", 7) == 0) {
        set_err(err, errlen, "invalid rule \"%s\" in %s list: shadow: is given twice", r,
                list_names[which]);
        return -EINVAL;
    }
    if (!p->shadow && !(p->shadow = policy_alloc())) {
        set_err(err, errlen, "out of memory");
        return -ENOMEM;
    }
    int rc = add_entry(p->shadow, entry, which, why, sizeof why);
    if (rc)
        set_err(err, errlen, "\"%s\": %s", r, why);
    return rc;
}

static int add_rule(struct guard_policy *p, const char *raw, enum list which, char *err,
                    size_t errlen)
{
    char r[128];

    if (!raw || !rule_text(raw, r, sizeof r)) {
        set_err(err, errlen, "empty or overlong rule in %s list", list_names[which]);
        return -EINVAL;
    }
    if (strncmp(r, "shadow:", 7) == 0)
        return add_shadow(p, r, which, err, errlen);
    return add_entry(p, r, which, err, errlen);
}

/* One trimmed, lowercased entry that is not a shadow: entry. */
static int add_entry(struct guard_policy *p, const char *r, enum list which, char *err,
                     size_t errlen)
{
    if (which != L_PERMIT)
        p->has_rules = true; /* permit entries only make exceptions: never a policy of their own */
    if (strncmp(r, "function:", 9) == 0) {
        struct guard_name_list *l = which == L_DENY    ? &p->deny_funcs
                                    : which == L_ALLOW ? &p->allow_funcs
                                                       : &p->permit_funcs;
        if (which == L_ALLOW)
            p->func_allow_list = true;
        return add_function(l, r + 9, err, errlen);
    }
    if (strncmp(r, "group:", 6) == 0) {
        if (which == L_ALLOW)
            p->func_allow_list = true;
        return add_group(p, r + 6, which, err, errlen);
    }
    if (which == L_PERMIT) {
        if (strcmp(r, "do") == 0) {
            p->permit_do = true;
            return 0;
        }
        set_err(err, errlen,
                "invalid permit rule \"%s\": expected function:NAME, group:NAME or do "
                "(see docs/policy.md)",
                r);
        return -EINVAL;
    }
    return add_kinds(p, r, which, err, errlen);
}

static int add_list(struct guard_policy *p, const char *const *rules, size_t n, enum list which,
                    char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++)
        if (add_rule(p, rules[i], which, err, errlen) != 0)
            return -EINVAL;
    return 0;
}

/* The shadow policy takes the enforced one's permit entries and ceiling: it is what the policy
 * would be with its shadow: entries enforced in place of the others. */
static int finish_shadow(struct guard_policy *p, char *err, size_t errlen)
{
    struct guard_policy *s = p->shadow;
    if (!s)
        return 0;
    s->relay_copy = p->relay_copy;
    s->max_parse = p->max_parse;
    s->permit_do = p->permit_do;
    s->permit_groups = p->permit_groups;
    for (size_t i = 0; i < p->permit_funcs.n; i++)
        if (add_function(&s->permit_funcs, p->permit_funcs.names[i], err, errlen))
            return -ENOMEM;
    return 0;
}

struct guard_policy *guard_policy_compile(const struct guard_rules *r, char *err, size_t errlen)
{
    struct guard_policy *p = policy_alloc();

    if (!p) {
        set_err(err, errlen, "out of memory");
        return NULL;
    }
    p->read_only = r->read_only;
    p->relay_copy = r->relay_copy;
    p->max_parse = r->max_parse ? r->max_parse : GUARD_DEFAULT_MAX_PARSE;
    if (add_list(p, r->deny, r->ndeny, L_DENY, err, errlen) ||
        add_list(p, r->allow, r->nallow, L_ALLOW, err, errlen) ||
        add_list(p, r->permit, r->npermit, L_PERMIT, err, errlen) || finish_shadow(p, err, errlen))
        goto fail;
    return p;
fail:
    guard_policy_unref(p);
    return NULL;
}

struct guard_policy *guard_policy_new(const char *const *deny, size_t ndeny,
                                      const char *const *allow, size_t nallow, bool read_only,
                                      char *err, size_t errlen)
{
    struct guard_rules r = {
        .deny = deny, .ndeny = ndeny, .allow = allow, .nallow = nallow, .read_only = read_only};
    return guard_policy_compile(&r, err, errlen);
}

struct guard_policy *guard_policy_ref(struct guard_policy *p)
{
    if (p)
        atomic_fetch_add(&p->refs, 1);
    return p;
}

void guard_policy_unref(struct guard_policy *p)
{
    if (!p || atomic_fetch_sub(&p->refs, 1) != 1)
        return;
    guard_policy_unref(p->shadow);
    free(p->deny_funcs.names);
    free(p->allow_funcs.names);
    free(p->permit_funcs.names);
    free(p);
}

void guard_policy_free(struct guard_policy *p)
{
    guard_policy_unref(p);
}

bool guard_policy_parses(const struct guard_policy *p)
{
    return p && (p->read_only || p->has_rules || p->shadow);
}

bool guard_policy_enforces(const struct guard_policy *p)
{
    return p && (p->read_only || p->has_rules);
}

void guard_shadow_only(const struct guard_policy *p, struct guard_decision *d)
{
    if (!p || guard_policy_enforces(p) || d->verdict == GUARD_ALLOW || d->verdict == GUARD_COPY)
        return;
    if (d->verdict != GUARD_SYNTAX && !d->shadow_rule[0])
        guard_copy_text(d->shadow_rule, sizeof d->shadow_rule, d->rule);
    d->verdict = GUARD_ALLOW;
    memset(d->rule, 0, sizeof d->rule);
    memset(d->message, 0, sizeof d->message);
    d->cursorpos = 0;
}

size_t guard_policy_max_parse(const struct guard_policy *p)
{
    return p ? p->max_parse : GUARD_DEFAULT_MAX_PARSE;
}
