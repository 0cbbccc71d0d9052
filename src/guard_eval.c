/* One statement's verdict from what guard_scan.c found in it. The checks run in a fixed order
 * and the first that fails decides (docs/policy.md, "How a Query is decided"). */
#include "guard_internal.h"

#include <stdio.h>
#include <string.h>

void guard_copy_text(char *dst, size_t cap, const char *src)
{
    /* the text ends up in an ErrorResponse, and clients reject invalid UTF-8 */
    size_t n = strlen(src);
    if (cap == 0)
        return;
    if (n >= cap) {
        n = cap - 1;
        while (n > 0 && ((unsigned char)src[n] & 0xC0) == 0x80)
            n--;
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
}

void guard_decide_fill(struct guard_decision *out, enum guard_verdict v, const char *rule,
                       const char *message)
{
    out->verdict = v;
    guard_copy_text(out->rule, sizeof out->rule, rule);
    guard_copy_text(out->message, sizeof out->message, message);
    out->cursorpos = 0;
}

/* First kind in both sets, or -1. */
static int first_common(const struct guard_kind_set *a, const struct guard_kind_set *b)
{
    for (int w = 0; w < GUARD_KIND_WORDS; w++) {
        uint64_t x = a->w[w] & b->w[w];
        if (x)
            return w * 64 + __builtin_ctzll(x);
    }
    return -1;
}

static bool eval_deny(const struct guard_policy *p, const struct guard_stmt *st,
                      const struct guard_fn_hits *h, struct guard_decision *out)
{
    char rule[128], msg[256];
    int k = -1;

    if (st->top >= 0 && guard_kind_set_has(&p->deny, (enum guard_kind)st->top))
        k = st->top;
    if (k < 0)
        k = first_common(&st->nested, &p->deny);
    if (k < 0)
        k = first_common(&st->implied, &p->deny);
    if (k >= 0) {
        const char *name = guard_kind_name((enum guard_kind)k);
        snprintf(rule, sizeof rule, "deny:%s", p->deny_rule[k]);
        if (strcmp(name, p->deny_rule[k]) == 0)
            snprintf(msg, sizeof msg, "statement denied by pgwire-proxy policy: %s", rule);
        else
            snprintf(msg, sizeof msg, "statement denied by pgwire-proxy policy: %s (%s)", rule,
                     name);
    } else if (h->deny_rule[0]) {
        snprintf(rule, sizeof rule, "deny:%s", h->deny_rule);
        if (strncmp(h->deny_rule, "group:", 6) == 0)
            snprintf(msg, sizeof msg, "statement denied by pgwire-proxy policy: %s (%s)", rule,
                     h->deny_func);
        else
            snprintf(msg, sizeof msg, "statement denied by pgwire-proxy policy: %s", rule);
    } else {
        return false;
    }
    guard_decide_fill(out, GUARD_DENY, rule, msg);
    return true;
}

/* First kind of s that read-only mode refuses, or NULL. */
static const char *first_write(const struct guard_kind_set *s)
{
    for (int k = 0; k < GUARD_K_COUNT; k++)
        if (guard_kind_set_has(s, (enum guard_kind)k) &&
            !(guard_kind_flags((enum guard_kind)k) & GUARD_KF_READ))
            return guard_kind_name((enum guard_kind)k);
    return NULL;
}

static bool eval_read_only(const struct guard_stmt *st, bool after_txn_end,
                           struct guard_decision *out)
{
    const char *what = NULL;
    char msg[256];

    if (after_txn_end) {
        /* the next transaction's access mode is known only at ReadyForQuery */
        guard_decide_fill(out, GUARD_READ_ONLY, "read-only",
                          "cannot run more statements after the end of a transaction in the "
                          "same query in read-only mode");
        return true;
    }
    if (st->top < 0)
        what = st->unknown;
    else if (!(guard_kind_flags((enum guard_kind)st->top) & GUARD_KF_READ) &&
             !(st->top == GUARD_K_COPY && st->copy_out))
        what = guard_kind_name((enum guard_kind)st->top);
    else if (st->select_into)
        what = "SELECT INTO";
    if (!what)
        what = first_write(&st->nested);
    if (!what)
        what = first_write(&st->implied);
    if (!what && st->unknown_nested)
        what = st->unknown;
    /* Row locks block writers; read-only mode promises not to, like LOCK. */
    if (!what && st->locking)
        what = "SELECT FOR UPDATE/SHARE";
    if (!what && st->ro_what[0])
        what = st->ro_what;
    if (what) {
        snprintf(msg, sizeof msg, "cannot execute %s in read-only mode", what);
    } else if (st->ro_func[0]) {
        snprintf(msg, sizeof msg, "cannot execute %s() in read-only mode: it %s", st->ro_func,
                 st->ro_reason);
    } else {
        return false;
    }
    guard_decide_fill(out, GUARD_READ_ONLY, "read-only", msg);
    return true;
}

/* A nested or implied kind the allow list must cover, or NULL. */
static const char *first_not_allowed(const struct guard_policy *p, const struct guard_stmt *st)
{
    for (int k = 0; k < GUARD_K_COUNT; k++) {
        enum guard_kind kk = (enum guard_kind)k;
        if (guard_kind_set_has(&p->allow, kk))
            continue;
        /* a nested clause is part of its parent's syntax; an implied kind never is */
        if ((guard_kind_set_has(&st->nested, kk) && !(guard_kind_flags(kk) & GUARD_KF_CLAUSE)) ||
            guard_kind_set_has(&st->implied, kk))
            return guard_kind_name(kk);
    }
    return NULL;
}

static bool eval_allow(const struct guard_policy *p, const struct guard_stmt *st,
                       const struct guard_fn_hits *h, struct guard_decision *out)
{
    const char *what = NULL;
    char msg[256];

    if (p->kind_allow_list) {
        if (st->top < 0)
            what = st->unknown;
        else if (!guard_kind_set_has(&p->allow, (enum guard_kind)st->top))
            what = guard_kind_name((enum guard_kind)st->top);
        if (!what)
            what = first_not_allowed(p, st);
        if (!what && st->unknown_nested)
            what = st->unknown;
    }
    if (what) {
        snprintf(msg, sizeof msg,
                 "statement denied by pgwire-proxy policy: allow (%s is not in the allow list)",
                 what);
    } else if (h->not_allowed[0]) {
        snprintf(msg, sizeof msg,
                 h->not_allowed_field
                     ? "statement denied by pgwire-proxy policy: allow (field selection .%s can "
                       "call a function, and %s is not in the allow list)"
                     : "statement denied by pgwire-proxy policy: allow (function %s is not in "
                       "the allow list)",
                 h->not_allowed, h->not_allowed);
    } else {
        return false;
    }
    guard_decide_fill(out, GUARD_DENY, "allow", msg);
    return true;
}

/* Code the guard cannot read: functions that run SQL given as text, and DO blocks. */
static bool eval_sql_text(const struct guard_policy *p, const struct guard_stmt *st,
                          const struct guard_fn_hits *h, struct guard_decision *out)
{
    char msg[256];
    bool has_do = st->top == GUARD_K_DO || guard_kind_set_has(&st->nested, GUARD_K_DO);
    bool do_named =
        p->permit_do || (p->kind_allow_list && guard_kind_set_has(&p->allow, GUARD_K_DO));

    if (h->sql_text[0])
        snprintf(msg, sizeof msg,
                 "statement denied by pgwire-proxy policy: sql-text (%s() runs SQL given as "
                 "text, which the policy cannot read)",
                 h->sql_text);
    else if (has_do && !do_named)
        snprintf(msg, sizeof msg,
                 "statement denied by pgwire-proxy policy: sql-text (DO runs code given as "
                 "text, which the policy cannot read)");
    else
        return false;
    guard_decide_fill(out, GUARD_DENY, "sql-text", msg);
    return true;
}

bool guard_eval_stmt(const struct guard_policy *p, const struct guard_stmt *st,
                     const struct guard_fn_hits *hits, bool after_txn_end,
                     struct guard_decision *out)
{
    if (st->malformed) {
        guard_decide_fill(out, GUARD_DENY, "internal",
                          "pgwire-proxy could not analyze this statement");
        return true;
    }
    if (st->copy_protocol && !p->relay_copy) {
        guard_decide_fill(out, GUARD_COPY, "copy-protocol",
                          "COPY is not supported through pgwire-proxy");
        return true;
    }
    if (!p->has_rules && !p->read_only)
        return false; /* parsed only to find the COPY sub-protocol */
    /* Every policy reads later statements, so a setting it cannot name is refused. */
    if (st->computed_setting) {
        guard_decide_fill(out, GUARD_DENY, "set-config",
                          "set_config() with a computed setting name is not allowed through "
                          "pgwire-proxy");
        return true;
    }
    if (eval_deny(p, st, hits, out))
        return true;
    if (p->read_only && eval_read_only(st, after_txn_end, out))
        return true;
    if (eval_allow(p, st, hits, out))
        return true;
    return eval_sql_text(p, st, hits, out);
}
