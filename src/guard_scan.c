/* What a statement's tree contains, read from guard_walk.c's events: kinds (top, nested and
 * implied), every function it calls or names for later use (calls, attribute notation, DDL
 * that binds a function), settings it changes, transaction access modes, COPY direction.
 * Findings go into sc->st; guard_eval.c turns them into a verdict. docs/policy.md describes
 * the semantics. */
#include "guard_scan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void guard_scan_text(struct guard_scan *sc, struct guard_span v, char *buf, size_t cap, bool *cut)
{
    char tmp[4 * GUARD_VAL_MAX];
    bool ok = v.n >= 2 && v.p[0] == '"';
    sc->visits += v.n < sizeof tmp ? v.n : sizeof tmp;
    *cut = false;
    if (ok && !guard_json_text(v, tmp, sizeof tmp, true)) {
        ok = false;
        *cut = true;
    }
    if (!ok) {
        buf[0] = '\0';
        return;
    }
    if (strlen(tmp) >= cap)
        *cut = true;
    guard_copy_text(buf, cap, tmp);
}

/* --- the site a body's value sits in --- */

struct site guard_scan_site(struct guard_scan *sc, size_t f)
{
    struct site s = {0, GK_OTHER, 0, GUARD_NONE, false};
    if (f == 0)
        return s;
    const struct guard_frame *par = fr(sc, f - 1);
    if (par->node != GN_NONE) { /* unwrapped field of a body */
        s.holder = f - 1;
    } else {
        if (f < 2)
            return s;
        s.holder = f - 2;
    }
    const struct guard_frame *h = fr(sc, s.holder);
    s.key = h->key;
    s.index = h->type == '[' && h->count ? h->count - 1 : 0;
    s.owner = h->body;
    s.ok = true;
    return s;
}

const struct guard_frame *guard_scan_owner(struct guard_scan *sc, const struct site *s)
{
    return s->ok && s->owner != GUARD_NONE ? fr(sc, s->owner) : NULL;
}

static void end_stmt(struct guard_scan *sc, size_t f)
{
    struct guard_frame *b = fr(sc, f);
    struct guard_stmt *st = &sc->st;

    if (b->kind == -2)
        return; /* unknown: noted when it began */
    if (b->special == GUARD_NODE_COPY) {
        /* STDIN/STDOUT is the absence of a file name; PROGRAM keeps its command there */
        if (!(b->aux & COPY_FILE)) {
            st->copy_protocol = true;
            st->copy_out = !(b->aux & COPY_FROM);
        }
        guard_kind_set_add(b->aux & COPY_FROM ? &st->implied : &st->nested,
                           b->aux & COPY_FROM ? GUARD_K_INSERT : GUARD_K_SELECT);
    }
    if (b->flags & GUARD_FR_TOP) {
        st->top = b->kind;
        if (b->slot != GUARD_NONE && b->special == GUARD_NODE_SET)
            guard_scan_top_set_end(sc, slot(sc, b->slot));
        if (b->slot != GUARD_NONE && b->special == GUARD_NODE_TXN)
            guard_scan_top_txn_end(sc, slot(sc, b->slot));
    } else {
        guard_kind_set_add(&st->nested, (enum guard_kind)b->kind);
    }
}

/* Gives frame f a slot of its own, popped with it (none when out of memory: sc->oom says so). */
static void own_slot(struct guard_scan *sc, struct guard_frame *f)
{
    f->slot = guard_scan_slot(sc);
    if (f->slot != GUARD_NONE)
        f->flags |= GUARD_FR_OWNS;
}

static void begin_stmt(struct guard_scan *sc, size_t f)
{
    struct guard_frame *b = fr(sc, f);
    bool top = !sc->top_seen;

    sc->top_seen = true;
    if (b->kind == -2) {
        if (top)
            sc->st.top = -1;
        else
            sc->st.unknown_nested = true;
        return;
    }
    if (top)
        b->flags |= GUARD_FR_TOP;
    if (b->special == GUARD_NODE_VACUUM)
        b->kind = GUARD_K_ANALYZE; /* until is_vacuumcmd says otherwise */
    if (top && (b->special == GUARD_NODE_SET || b->special == GUARD_NODE_TXN))
        own_slot(sc, b);
}

static void stmt_scalar(struct guard_scan *sc, struct guard_frame *b, struct guard_span v)
{
    bool cut;
    switch (b->special) {
    case GUARD_NODE_SET:
        if (b->slot == GUARD_NONE)
            return;
        if (b->key == GK_KIND)
            slot(sc, b->slot)->misc = (uint32_t)guard_scan_set_kind(v);
        else if (b->key == GK_NAME)
            guard_scan_text(sc, v, slot(sc, b->slot)->name, FUNC_NAME_MAX, &cut);
        return;
    case GUARD_NODE_TXN:
        if (b->slot != GUARD_NONE && b->key == GK_KIND)
            slot(sc, b->slot)->misc = (uint32_t)guard_scan_txn_kind(v);
        return;
    case GUARD_NODE_COPY:
        if (b->key == GK_FILENAME)
            b->aux |= COPY_FILE;
        else if (b->key == GK_IS_FROM && v.n == 4 && memcmp(v.p, "true", 4) == 0)
            b->aux |= COPY_FROM;
        return;
    case GUARD_NODE_VACUUM:
        if (b->key == GK_IS_VACUUMCMD && v.n == 4 && memcmp(v.p, "true", 4) == 0)
            b->kind = GUARD_K_VACUUM;
        return;
    case GUARD_NODE_CTAS:
        if (b->key == GK_OBJTYPE && span_is(v, "OBJECT_MATVIEW"))
            b->kind = GUARD_K_CREATE_MATERIALIZED_VIEW;
        return;
    case GUARD_NODE_DEFINE:
        if (b->key != GK_KIND)
            return;
        if (span_is(v, "OBJECT_AGGREGATE"))
            b->kind = GUARD_K_CREATE_AGGREGATE;
        else if (span_is(v, "OBJECT_OPERATOR"))
            b->kind = GUARD_K_CREATE_OPERATOR;
        else if (span_is(v, "OBJECT_COLLATION"))
            b->kind = GUARD_K_CREATE_COLLATION;
        else if (v.n > 11 && memcmp(v.p, "\"OBJECT_TS", 10) == 0)
            b->kind = GUARD_K_CREATE_TEXT_SEARCH;
        return;
    default:
        return;
    }
}

/* --- captured arguments (A_Const values) --- */

static void set_cap(struct guard_scan *sc, uint32_t cap, enum guard_cap what, const char *val)
{
    if (cap == GUARD_NONE || cap / 2 >= sc->nsl)
        return;
    struct guard_slot *s = slot(sc, cap / 2);
    s->cap[cap % 2] = (uint8_t)what;
    if (val)
        guard_copy_text(s->val[cap % 2], GUARD_VAL_MAX, val);
}

/* An A_Const argument of a function that runs SQL given as text: the redaction shows it. */
static void collect_sqlarg(struct guard_scan *sc, struct guard_frame *b, const struct site *st)
{
    const struct guard_frame *o = guard_scan_owner(sc, st);
    struct guard_sqlargs *a = sc->sqlargs;
    if (!o || o->node != GN_FUNCCALL || st->key != GK_ARGS || o->slot == GUARD_NONE)
        return;
    const struct guard_fn *fn = guard_fn_lookup(slot(sc, o->slot)->name);
    if (!fn || !(fn->groups & GUARD_GBIT(SQL_TEXT)) || a->oom)
        return;
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 8;
        struct guard_sqlarg *g = realloc(a->v, cap * sizeof *g);
        if (!g) {
            a->oom = true;
            return;
        }
        a->v = g;
        a->cap = cap;
    }
    a->v[a->n] = (struct guard_sqlarg){-1, {NULL, 0}};
    b->aux = (uint32_t)++a->n;
}

/* A body at a site that captures a value: an A_Const fills it (through TypeCasts), anything
 * else makes it computed. */
static void capture_site(struct guard_scan *sc, size_t f, const struct site *st)
{
    struct guard_frame *b = fr(sc, f);
    if (!st->ok)
        return;
    if (sc->sqlargs && b->node == GN_A_CONST)
        collect_sqlarg(sc, b, st);
    const struct guard_frame *h = fr(sc, st->holder);
    uint32_t cap = GUARD_NONE;
    if (h->type == '[')
        cap = h->cap;
    else if (st->key == GK_ARG && (h->node == GN_TYPECAST || h->node == GN_DEFELEM))
        cap = h->cap;
    if (cap == GUARD_NONE)
        return;
    if (b->node == GN_A_CONST || b->node == GN_TYPECAST)
        b->cap = cap;
    else
        set_cap(sc, cap, GUARD_CAP_OTHER, "");
}

static void value_body(struct guard_scan *sc, size_t f, const struct site *st)
{
    const struct guard_frame *c = fr(sc, st->holder); /* the A_Const */
    struct guard_frame *b = fr(sc, f);
    b->cap = c->cap;
    b->aux = st->key;
    /* JSON leaves zero values out: {"ival":{}} is 0, {"sval":{}} is '' */
    if (st->key == GK_SVAL)
        set_cap(sc, b->cap, GUARD_CAP_STR, "");
    else if (st->key == GK_IVAL || st->key == GK_FVAL)
        set_cap(sc, b->cap, GUARD_CAP_NUM, "0");
    else if (st->key == GK_BOOLVAL)
        set_cap(sc, b->cap, GUARD_CAP_BOOL, "false");
    else
        set_cap(sc, b->cap, GUARD_CAP_OTHER, "");
}

static void value_scalar(struct guard_scan *sc, struct guard_frame *b, struct guard_span v)
{
    const struct guard_frame *c = b - 1; /* the A_Const whose value this is */
    if (sc->sqlargs && c->aux && b->key == GK_SVAL && b->aux == GK_SVAL)
        sc->sqlargs->v[c->aux - 1].val = v;
    if (b->cap == GUARD_NONE || b->key != b->aux)
        return;
    struct guard_slot *s = slot(sc, b->cap / 2);
    unsigned i = b->cap % 2;
    if (b->key == GK_SVAL) {
        bool cut;
        guard_scan_text(sc, v, s->val[i], GUARD_VAL_MAX, &cut);
        s->long_val[i] = cut;
    } else if (v.n < GUARD_VAL_MAX) {
        bool quoted = v.n >= 2 && v.p[0] == '"';
        size_t n = quoted ? v.n - 2 : v.n;
        memcpy(s->val[i], v.p + (quoted ? 1 : 0), n);
        s->val[i][n] = '\0';
    } else {
        s->long_val[i] = true;
    }
}

/* --- events --- */

static void string_body(struct guard_scan *sc, size_t f, const struct site *st)
{
    struct guard_frame *b = fr(sc, f);
    const struct guard_frame *h = st->ok ? fr(sc, st->holder) : NULL;
    const struct guard_frame *o = guard_scan_owner(sc, st);
    if (!h)
        return;
    if ((h->flags & GUARD_FR_NAME) ||
        (h->node == GN_DEFELEM && (h->flags & GUARD_FR_FUNCREF) && st->key == GK_ARG)) {
        b->aux = STR_NAME;
        b->slot = h->slot;
    } else if (o && o->node == GN_COLUMNREF && st->key == GK_FIELDS && st->index >= 1) {
        b->aux = st->index == 1 ? STR_FIELD_ROW : STR_FIELD_COL;
    } else if (o && o->node == GN_A_INDIRECTION && st->key == GK_INDIRECTION) {
        b->aux = STR_FIELD_EXPR;
    }
}

static void string_scalar(struct guard_scan *sc, struct guard_frame *b, struct guard_span v)
{
    char name[FUNC_NAME_MAX];
    bool cut;
    if (b->key != GK_SVAL || b->aux == STR_NONE)
        return;
    if (b->aux == STR_NAME) {
        if (b->slot != GUARD_NONE)
            guard_scan_text(sc, v, slot(sc, b->slot)->name, FUNC_NAME_MAX, &cut);
        return;
    }
    guard_scan_text(sc, v, name, sizeof name, &cut);
    if (name[0])
        guard_scan_call(sc, name, 1,
                        b->aux == STR_FIELD_ROW                               ? HOW_FIELD_ROW
                        : b->aux == STR_FIELD_COL || b->aux == STR_FIELD_EXPR ? HOW_FIELD
                                                                              : HOW_CALL);
}

static void objfunc_body(struct guard_scan *sc, size_t f, const struct site *st)
{
    struct guard_frame *b = fr(sc, f);
    const struct guard_frame *o = guard_scan_owner(sc, st);
    if (!o)
        return;
    bool ref = (o->node == GN_STMT && o->special == GUARD_NODE_OBJFUNC) ||
               (o->node == GN_CREATEOPCLASSITEM && o->aux == 2); /* OPCLASS_ITEM_FUNCTION */
    if (!ref)
        return;
    b->flags |= GUARD_FR_FUNCREF;
    own_slot(sc, b);
}

void guard_scan_body(struct guard_scan *sc, size_t f)
{
    struct guard_frame *b = fr(sc, f);
    struct site st = guard_scan_site(sc, f);

    capture_site(sc, f, &st);
    switch (b->node) {
    case GN_STMT:
        begin_stmt(sc, f);
        break;
    case GN_FUNCCALL:
    case GN_DEFELEM:
        own_slot(sc, b);
        break;
    case GN_STRING:
        string_body(sc, f, &st);
        break;
    case GN_VALUE:
        value_body(sc, f, &st);
        break;
    case GN_OBJECTWITHARGS:
        objfunc_body(sc, f, &st);
        break;
    case GN_TYPENAME:
    case GN_LIST: {
        /* the argument of a DefElem that names a function */
        const struct guard_frame *h = st.ok ? fr(sc, st.holder) : NULL;
        if (h && h->node == GN_DEFELEM && (h->flags & GUARD_FR_FUNCREF) && st.key == GK_ARG) {
            b->flags |= GUARD_FR_NAME;
            b->slot = h->slot;
        }
        break;
    }
    case GN_LOCKINGCLAUSE:
        sc->st.locking = true;
        break;
    case GN_INTOCLAUSE:
        /* SELECT ... INTO is CREATE TABLE AS in another spelling */
        sc->st.select_into = true;
        guard_kind_set_add(&sc->st.implied, GUARD_K_CREATE_TABLE_AS);
        break;
    default:
        break;
    }
}

void guard_scan_body_end(struct guard_scan *sc, size_t f)
{
    struct guard_frame *b = fr(sc, f);
    switch (b->node) {
    case GN_STMT:
        end_stmt(sc, f);
        break;
    case GN_FUNCCALL:
        guard_scan_funccall_end(sc, f);
        break;
    case GN_DEFELEM:
        guard_scan_defelem_end(sc, f);
        break;
    case GN_OBJECTWITHARGS:
        if ((b->flags & GUARD_FR_FUNCREF) && b->slot != GUARD_NONE && slot(sc, b->slot)->name[0])
            guard_scan_call(sc, slot(sc, b->slot)->name, 0, HOW_DDL);
        break;
    default:
        break;
    }
}

void guard_scan_scalar(struct guard_scan *sc, size_t f, struct guard_span v)
{
    struct guard_frame *b = fr(sc, f);
    if (b->type != '{')
        return;
    switch (b->node) {
    case GN_STMT:
        stmt_scalar(sc, b, v);
        break;
    case GN_STRING:
        string_scalar(sc, b, v);
        break;
    case GN_VALUE:
        value_scalar(sc, b, v);
        break;
    case GN_A_CONST:
        if (b->key == GK_LOCATION && sc->sqlargs && b->aux)
            sc->sqlargs->v[b->aux - 1].loc = strtol(v.p, NULL, 10);
        else if (b->key == GK_OTHER && v.n == 4 && memcmp(v.p, "true", 4) == 0)
            set_cap(sc, b->cap, GUARD_CAP_OTHER, ""); /* isnull */
        break;
    case GN_DEFELEM:
        if (b->key == GK_DEFNAME)
            guard_scan_defelem_name(sc, f, v);
        break;
    case GN_CREATEOPCLASSITEM:
        if (b->key == GK_ITEMTYPE)
            b->aux = (uint32_t)strtoul(v.p, NULL, 10) & 0xff;
        break;
    case GN_MERGEWHENCLAUSE:
        if (b->key == GK_COMMANDTYPE) {
            if (span_is(v, "CMD_UPDATE"))
                guard_kind_set_add(&sc->st.implied, GUARD_K_UPDATE);
            else if (span_is(v, "CMD_INSERT"))
                guard_kind_set_add(&sc->st.implied, GUARD_K_INSERT);
            else if (span_is(v, "CMD_DELETE"))
                guard_kind_set_add(&sc->st.implied, GUARD_K_DELETE);
        }
        break;
    case GN_ONCONFLICTCLAUSE:
        if (b->key == GK_ACTION && span_is(v, "ONCONFLICT_UPDATE"))
            guard_kind_set_add(&sc->st.implied, GUARD_K_UPDATE);
        break;
    default:
        break;
    }
}

static bool funclist_key(uint16_t key)
{
    return key == GK_FUNCNAME || key == GK_PLHANDLER || key == GK_PLINLINE ||
           key == GK_PLVALIDATOR || key == GK_HANDLER_NAME || key == GK_FUNC_NAME;
}

void guard_scan_list(struct guard_scan *sc, size_t f)
{
    struct guard_frame *a = fr(sc, f);
    if (a->body == GUARD_NONE)
        return;
    struct guard_frame *o = fr(sc, a->body);
    if (o->node == GN_FUNCCALL && a->key == GK_FUNCNAME) {
        a->flags |= GUARD_FR_NAME;
        a->slot = o->slot;
    } else if (o->node == GN_STMT && o->special == GUARD_NODE_FUNCLIST && funclist_key(a->key)) {
        a->flags |= GUARD_FR_NAME;
        own_slot(sc, a);
    } else if ((o->node == GN_OBJECTWITHARGS && (o->flags & GUARD_FR_FUNCREF) &&
                a->key == GK_OBJNAME) ||
               ((o->node == GN_TYPENAME || o->node == GN_LIST) && (o->flags & GUARD_FR_NAME))) {
        a->flags |= GUARD_FR_NAME;
        a->slot = o->slot;
    }
}

void guard_scan_elem(struct guard_scan *sc, size_t f)
{
    struct guard_frame *a = fr(sc, f);
    if (a->body == GUARD_NONE)
        return;
    struct guard_frame *o = fr(sc, a->body);
    uint32_t i = a->count - 1;
    if (o->node == GN_FUNCCALL && a->key == GK_ARGS && o->slot != GUARD_NONE) {
        struct guard_slot *s = slot(sc, o->slot);
        s->nargs++;
        a->cap = (i < 2 && strcmp(s->name, "set_config") == 0) ? o->slot * 2 + i : GUARD_NONE;
    } else if (o->node == GN_STMT && (o->flags & GUARD_FR_TOP) && o->special == GUARD_NODE_SET &&
               a->key == GK_ARGS && o->slot != GUARD_NONE) {
        slot(sc, o->slot)->nargs++;
        a->cap = i == 0 ? o->slot * 2 : GUARD_NONE;
    }
}

void guard_scan_list_end(struct guard_scan *sc, size_t f)
{
    struct guard_frame *a = fr(sc, f);
    if ((a->flags & GUARD_FR_OWNS) && (a->flags & GUARD_FR_NAME) && a->slot != GUARD_NONE &&
        slot(sc, a->slot)->name[0])
        guard_scan_call(sc, slot(sc, a->slot)->name, 0, HOW_DDL);
}

void guard_scan_stmt_begin(struct guard_scan *sc)
{
    memset(&sc->st, 0, sizeof sc->st);
    sc->st.top = -1;
    sc->in_stmt = true;
    sc->top_seen = false;
}

bool guard_scan_stmt_end(struct guard_scan *sc)
{
    sc->in_stmt = false;
    if (!sc->top_seen)
        sc->st.malformed = true;
    if (sc->sum) {
        char k[8];
        snprintf(k, sizeof k, "%d", sc->st.top);
        guard_scan_sum(sc, 'S', k);
        guard_buf_add(sc->sum, &sc->st.nested, sizeof sc->st.nested);
        guard_buf_add(sc->sum, &sc->st.implied, sizeof sc->st.implied);
    }
    return sc->on_stmt(sc);
}

void guard_buf_add(struct guard_buf *b, const void *data, size_t n)
{
    if (b->oom || n == 0)
        return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->n + n)
            cap *= 2;
        char *g = realloc(b->p, cap);
        if (!g) {
            b->oom = true;
            return;
        }
        b->p = g;
        b->cap = cap;
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
}
