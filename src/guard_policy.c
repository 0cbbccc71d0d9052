/* Policy compilation: deny/allow rules and read-only mode into kind sets and function lists.
 * Rule syntax and semantics are documented in docs/policy.md. */
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

static int add_function(struct guard_policy *p, const char *name, bool deny, char *err,
                        size_t errlen)
{
    const char *dot = strrchr(name, '.');
    char(**list)[FUNC_NAME_MAX] = deny ? &p->deny_funcs : &p->allow_funcs;
    size_t *n = deny ? &p->ndeny_funcs : &p->nallow_funcs;

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
    char(*grown)[FUNC_NAME_MAX] = realloc(*list, (*n + 1) * sizeof **list);
    if (!grown) {
        set_err(err, errlen, "out of memory");
        return -ENOMEM;
    }
    *list = grown;
    memcpy(grown[*n], name, len + 1);
    (*n)++;
    return 0;
}

static void unknown_kind_err(const char *rule, bool deny, char *err, size_t errlen)
{
    size_t o;
    if (!err || errlen == 0)
        return;
    set_err(err, errlen,
            "unknown statement kind \"%s\" in %s list (use a kind, a family alter/create/drop or "
            "function:NAME; see docs/policy.md; kinds:",
            rule, deny ? "deny" : "allow");
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

static int add_rule(struct guard_policy *p, const char *raw, bool deny, char *err, size_t errlen)
{
    char r[128];
    const char *family = NULL;
    bool matched = false;

    if (!raw || !rule_text(raw, r, sizeof r)) {
        set_err(err, errlen, "empty or overlong rule in %s list", deny ? "deny" : "allow");
        return -EINVAL;
    }
    if (strncmp(r, "function:", 9) == 0)
        return add_function(p, r + 9, deny, err, errlen);
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
        if (deny) {
            guard_kind_set_add(&p->deny, (enum guard_kind)k);
            if (!p->deny_rule[k])
                p->deny_rule[k] = family ? family : name; /* static strings: no ownership */
        } else {
            guard_kind_set_add(&p->allow, (enum guard_kind)k);
            p->kind_allow_list = true;
        }
    }
    if (!matched) {
        unknown_kind_err(r, deny, err, errlen);
        return -EINVAL;
    }
    return 0;
}

struct guard_policy *guard_policy_new(const char *const *deny, size_t ndeny,
                                      const char *const *allow, size_t nallow, bool read_only,
                                      char *err, size_t errlen)
{
    struct guard_policy *p = calloc(1, sizeof *p);

    if (!p) {
        set_err(err, errlen, "out of memory");
        return NULL;
    }
    p->gen = atomic_fetch_add(&next_policy_gen, 1);
    p->read_only = read_only;
    for (size_t i = 0; i < ndeny; i++)
        if (add_rule(p, deny[i], true, err, errlen) != 0)
            goto fail;
    for (size_t i = 0; i < nallow; i++)
        if (add_rule(p, allow[i], false, err, errlen) != 0)
            goto fail;
    p->has_rules = ndeny > 0 || nallow > 0;
    return p;
fail:
    guard_policy_free(p);
    return NULL;
}

void guard_policy_free(struct guard_policy *p)
{
    if (!p)
        return;
    free(p->deny_funcs);
    free(p->allow_funcs);
    free(p);
}

void guard_policy_allow_copy(struct guard_policy *p)
{
    p->copy_allowed = true;
}

bool guard_policy_parses(const struct guard_policy *p)
{
    return p && (p->read_only || p->has_rules);
}
