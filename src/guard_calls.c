/* Functions a statement calls or names, checked against the policy by name (deny lists,
 * groups, read-only side effects, SQL-text functions, function allow lists), and the
 * statements whose verdict depends on values: set_config(), SET/RESET, transaction access
 * modes. Part of the scanner (guard_scan.c). */
#include "guard_scan.h"

#include <stdio.h>
#include <string.h>

void guard_scan_sum(struct guard_scan *sc, char tag, const char *text)
{
    if (!sc->sum)
        return;
    guard_buf_add(sc->sum, &tag, 1);
    guard_buf_add(sc->sum, text, strlen(text) + 1);
}

static bool permitted(const struct guard_policy *p, const char *name, const struct guard_fn *fn)
{
    unsigned g = fn ? fn->groups : 0;
    return guard_name_in(&p->permit_funcs, name) || guard_name_in(&p->allow_funcs, name) ||
           (g & (p->permit_groups | p->allow_groups));
}

static void check_deny(const struct guard_policy *p, struct guard_fn_hits *h, const char *name,
                       const struct guard_fn *fn)
{
    if (h->deny_rule[0])
        return;
    if (guard_name_in(&p->deny_funcs, name)) {
        snprintf(h->deny_rule, sizeof h->deny_rule, "function:%s", name);
    } else if (fn && (fn->groups & p->deny_groups)) {
        unsigned g = (unsigned)__builtin_ctz(fn->groups & p->deny_groups);
        snprintf(h->deny_rule, sizeof h->deny_rule, "group:%s", guard_group_name(g));
    } else {
        return;
    }
    guard_copy_text(h->deny_func, sizeof h->deny_func, name);
}

static bool allowed_fn(const struct guard_policy *p, const char *name, const struct guard_fn *fn)
{
    return guard_name_in(&p->allow_funcs, name) || (fn && (fn->groups & p->allow_groups));
}

/* What one policy's lists make of a function the statement reaches: its deny entries, the
 * SQL-text class (unless permitted) and its function allow list. */
static void check_lists(const struct guard_policy *p, struct guard_fn_hits *h, const char *name,
                        const struct guard_fn *fn, uint32_t nargs, enum guard_how how)
{
    check_deny(p, h, name, fn);
    if (fn && (fn->groups & GUARD_GBIT(SQL_TEXT)) && !h->sql_text[0] && !permitted(p, name, fn)) {
        /* ts_rewrite(query, target, substitute) takes no SQL; with two arguments it runs one */
        bool runs = !(fn->flags & GUARD_FN_SQL_TEXT_2ARGS) || how != HOW_CALL || nargs == 2;
        if (runs)
            guard_copy_text(h->sql_text, sizeof h->sql_text, name);
    }
    /* t.f with t a table passes the whole row: only functions of a row type or "any" can be
     * called so (docs/policy.md); every other field selection counts as a call. */
    if (p->func_allow_list && how != HOW_FIELD_ROW && !h->not_allowed[0] &&
        !allowed_fn(p, name, fn)) {
        guard_copy_text(h->not_allowed, sizeof h->not_allowed, name);
        h->not_allowed_field = how == HOW_FIELD;
    }
}

/* A function the statement calls (how CALL), names for later use (DDL) or may call through
 * attribute notation (FIELD*: a field selection cannot be told from a call without the
 * catalog, so it is decided fail-closed by name). */
void guard_scan_call(struct guard_scan *sc, const char *name, uint32_t nargs, enum guard_how how)
{
    const struct guard_policy *p = sc->p;
    struct guard_stmt *st = &sc->st;
    const struct guard_fn *fn = guard_fn_lookup(name);
    char tag[2] = {(char)how, 0};

    guard_scan_sum(sc, 'F', name);
    guard_scan_sum(sc, 'H', tag);
    check_lists(p, &st->fn, name, fn, nargs, how);
    if (p->shadow)
        check_lists(p->shadow, &st->shadow_fn, name, fn, nargs, how);
    if (fn && fn->ro_reason && p->read_only && !st->ro_func[0] && !permitted(p, name, fn)) {
        guard_copy_text(st->ro_func, sizeof st->ro_func, name);
        st->ro_reason = fn->ro_reason;
    }
    if (fn && how != HOW_FIELD && how != HOW_FIELD_ROW) {
        if (fn->flags & GUARD_FN_IS_SET)
            guard_kind_set_add(&st->implied, GUARD_K_SET);
        if (fn->flags & GUARD_FN_IS_NOTIFY)
            guard_kind_set_add(&st->implied, GUARD_K_NOTIFY);
    }
}

/* PostgreSQL's parse_bool(): true, yes, on, 1 and their unique prefixes. */
static bool bool_true(const char *v)
{
    size_t n = strlen(v);
    if (n == 0)
        return false;
    if (strncmp("true", v, n) == 0 && n <= 4)
        return true;
    if (strncmp("yes", v, n) == 0 && n <= 3)
        return true;
    if (strcmp(v, "on") == 0 || strcmp(v, "1") == 0)
        return true;
    return false;
}

static bool captured_true(const struct guard_slot *s, int i)
{
    return (s->cap[i] == GUARD_CAP_STR || s->cap[i] == GUARD_CAP_NUM ||
            s->cap[i] == GUARD_CAP_BOOL) &&
           !s->long_val[i] && bool_true(s->val[i]);
}

/* A read-only violation described as "<verb> <what>" ("SET role", "BEGIN READ WRITE"). */
static void ro_violation(struct guard_scan *sc, const char *verb, const char *what)
{
    if (sc->p->read_only && !sc->st.ro_what[0])
        snprintf(sc->st.ro_what, sizeof sc->st.ro_what, "%s%s%s", verb, *verb ? " " : "", what);
}

static bool is_identity(const char *name)
{
    return strcmp(name, "role") == 0 || strcmp(name, "session_authorization") == 0;
}

/* set_config(name, value, is_local) is SET name = value. */
static void end_set_config(struct guard_scan *sc, const struct guard_slot *s)
{
    sc->literal = true;
    if (s->nargs == 0)
        return; /* PostgreSQL rejects the call */
    if (s->cap[0] != GUARD_CAP_STR) {
        sc->st.computed_setting = true;
        return;
    }
    const char *name = s->val[0];
    if (s->long_val[0])
        return; /* no setting the policy watches has a name that long */
    if (is_identity(name))
        ro_violation(sc, "set_config", name);
    if ((strcmp(name, "transaction_read_only") == 0 ||
         strcmp(name, "default_transaction_read_only") == 0) &&
        !(s->nargs >= 2 && captured_true(s, 1)))
        ro_violation(sc, "set_config", name);
}

void guard_scan_funccall_end(struct guard_scan *sc, size_t f)
{
    struct guard_frame *b = fr(sc, f);
    if (b->slot == GUARD_NONE)
        return;
    struct guard_slot *s = slot(sc, b->slot);
    if (!s->name[0]) {
        sc->st.malformed = true;
        return;
    }
    guard_scan_call(sc, s->name, s->nargs, HOW_CALL);
    if (strcmp(s->name, "set_config") == 0)
        end_set_config(sc, s);
}

int guard_scan_set_kind(struct guard_span v)
{
    static const char *const names[] = {"VAR_SET_VALUE", "VAR_SET_DEFAULT", "VAR_SET_CURRENT",
                                        "VAR_SET_MULTI", "VAR_RESET",       "VAR_RESET_ALL"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (span_is(v, names[i]))
            return (int)i + 1;
    return 0;
}

int guard_scan_txn_kind(struct guard_span v)
{
    if (span_is(v, "TRANS_STMT_BEGIN"))
        return TX_BEGIN;
    if (span_is(v, "TRANS_STMT_START"))
        return TX_START;
    if (span_is(v, "TRANS_STMT_COMMIT"))
        return TX_COMMIT;
    if (span_is(v, "TRANS_STMT_ROLLBACK"))
        return TX_ROLLBACK;
    if (span_is(v, "TRANS_STMT_PREPARE"))
        return TX_PREPARE;
    if (span_is(v, "TRANS_STMT_COMMIT_PREPARED") || span_is(v, "TRANS_STMT_ROLLBACK_PREPARED"))
        return TX_TWO_PHASE;
    return TX_OTHER;
}

/* The top SET / RESET, decided on what PostgreSQL will do with it. */
void guard_scan_top_set_end(struct guard_scan *sc, const struct guard_slot *s)
{
    const char *name = s->name;
    int kind = (int)s->misc;
    bool value_on = kind == SET_VALUE && s->nargs == 1 && captured_true(s, 0);

    if (kind == SET_MULTI) {
        if (s->txn_ro == 2)
            ro_violation(sc,
                         strcmp(name, "transaction") == 0
                             ? "SET TRANSACTION"
                             : "SET SESSION CHARACTERISTICS AS TRANSACTION",
                         "READ WRITE");
        return;
    }
    if (kind == SET_RESET_ALL)
        return; /* back to the session's start values: read-only mode sets them */
    const char *verb = kind == SET_RESET ? "RESET" : "SET";
    if (is_identity(name)) {
        ro_violation(sc, verb, name);
    } else if (strcmp(name, "transaction_read_only") == 0) {
        /* RESET and DEFAULT make the transaction read-write before its first query */
        sc->literal = true;
        if (!value_on)
            ro_violation(sc, verb, name);
    } else if (strcmp(name, "default_transaction_read_only") == 0) {
        /* RESET and DEFAULT return to the session's start value, which --read-only sets */
        sc->literal = true;
        if (!value_on && kind != SET_RESET && kind != SET_DEFAULT)
            ro_violation(sc, verb, name);
    }
}

void guard_scan_top_txn_end(struct guard_scan *sc, const struct guard_slot *s)
{
    int kind = (int)s->misc;
    if (kind == TX_COMMIT || kind == TX_ROLLBACK || kind == TX_PREPARE)
        sc->st.txn_end = true;
    /* two-phase commit can finish another session's writes */
    if (kind == TX_PREPARE || kind == TX_TWO_PHASE)
        ro_violation(sc, "", "two-phase commit");
    else if ((kind == TX_BEGIN || kind == TX_START) && s->txn_ro == 2)
        ro_violation(sc, kind == TX_BEGIN ? "BEGIN" : "START TRANSACTION", "READ WRITE");
}

/* --- DefElems --- */

/* DefElem names that bind a function in the statements that can hold them. */
static bool funcref_defname(const char *d)
{
    static const char *const names[] = {
        "analyze",    "canonical", "combinefunc", "deserialfunc", "end",      "finalfunc",
        "function",   "gettoken",  "handler",     "headline",     "init",     "input",
        "join",       "lextypes",  "lexize",      "mfinalfunc",   "minvfunc", "msfunc",
        "output",     "procedure", "receive",     "restrict",     "send",     "serialfunc",
        "sfunc",      "start",     "subscript",   "subtype_diff", "support",  "typmod_in",
        "typmod_out", "validator"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(d, names[i]) == 0)
            return true;
    return false;
}

void guard_scan_defelem_name(struct guard_scan *sc, size_t f, struct guard_span v)
{
    struct guard_frame *b = fr(sc, f);
    if (b->slot == GUARD_NONE)
        return;
    struct guard_slot *s = slot(sc, b->slot);
    bool cut;
    char d[FUNC_NAME_MAX];
    guard_scan_text(sc, v, d, sizeof d, &cut);
    struct site st = guard_scan_site(sc, f);
    const struct guard_frame *o = guard_scan_owner(sc, &st);
    if (!o || o->node != GN_STMT)
        return;
    if ((o->special == GUARD_NODE_DEFINE || o->special == GUARD_NODE_FUNCDEF) &&
        funcref_defname(d)) {
        b->flags |= GUARD_FR_FUNCREF;
    } else if ((o->flags & GUARD_FR_TOP) &&
               (o->special == GUARD_NODE_SET || o->special == GUARD_NODE_TXN) &&
               strcmp(d, "transaction_read_only") == 0) {
        b->cap = b->slot * 2;
        s->misc = 1;
    }
}

void guard_scan_defelem_end(struct guard_scan *sc, size_t f)
{
    struct guard_frame *b = fr(sc, f);
    if (b->slot == GUARD_NONE)
        return;
    struct guard_slot *s = slot(sc, b->slot);
    if ((b->flags & GUARD_FR_FUNCREF) && s->name[0])
        guard_scan_call(sc, s->name, 0, HOW_DDL);
    if (s->misc != 1)
        return;
    /* transaction_read_only: the grammar writes 1 for READ ONLY, 0 for READ WRITE; the last
     * one in the list is what PostgreSQL applies */
    struct site st = guard_scan_site(sc, f);
    const struct guard_frame *o = guard_scan_owner(sc, &st);
    if (o && o->slot != GUARD_NONE) {
        bool rw = s->cap[0] != GUARD_CAP_NUM || strcmp(s->val[0], "0") == 0;
        slot(sc, o->slot)->txn_ro = rw ? 2 : 1;
    }
    sc->literal = true;
}
