/* One pass over the JSON that pg_query_parse() prints, with an explicit stack of frames: no
 * recursion (a statement nests as deep as its text allows, and a parser thread's stack is sized
 * for libpg_query, not for us) and no lookups that skip over values (nested calls would make
 * those quadratic). Every byte is examined a bounded number of times; guard_scan.c sees the
 * tree as events (a node body begins or ends, a list begins, an element begins, a scalar
 * member) and keeps whatever per-node state it needs in frames and slots.
 *
 * libpg_query writes a node as {"Type":{fields}}: the inner object is the node's body. Fields
 * that hold one particular struct are written without the wrapper ("funccall":{...}); the
 * scanner names those (owner node, key) pairs in unwrapped(). */
#include "guard_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct name_id {
    const char *s;
    size_t n;
    int id;
};

static const struct name_id keys[] = {
#define GUARD_X_KEYTAB(id, s) {s, sizeof s - 1, GK_##id},
    GUARD_KEY_LIST(GUARD_X_KEYTAB)
#undef GUARD_X_KEYTAB
};

static const struct name_id nodes[] = {
#define GUARD_X_NIDTAB(id, s) {s, sizeof s - 1, GN_##id},
    GUARD_NID_LIST(GUARD_X_NIDTAB)
#undef GUARD_X_NIDTAB
};

/* strcmp() order between a table entry and a length-delimited key. */
static int cmp(const struct name_id *e, const char *k, size_t n)
{
    size_t m = e->n < n ? e->n : n;
    int c = memcmp(e->s, k, m);
    if (c != 0)
        return c;
    return e->n == n ? 0 : e->n < n ? -1 : 1;
}

static int lookup(const struct name_id *t, size_t tn, const char *k, size_t n)
{
    size_t lo = 0, hi = tn;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = cmp(&t[mid], k, n);
        if (c == 0)
            return t[mid].id;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

bool guard_walk_self_check(void)
{
    for (size_t i = 1; i < sizeof keys / sizeof keys[0]; i++)
        if (cmp(&keys[i - 1], keys[i].s, keys[i].n) >= 0)
            return false;
    for (size_t i = 1; i < sizeof nodes / sizeof nodes[0]; i++)
        if (cmp(&nodes[i - 1], nodes[i].s, nodes[i].n) >= 0)
            return false;
    return true;
}

/* A key just read: remembers which node its value is the body of. */
struct pending {
    bool valid;
    uint16_t node;
    int16_t kind;
    uint8_t special;
};

static void node_of_key(struct guard_scan *sc, const char *k, size_t n, struct pending *pd)
{
    enum guard_kind kind;
    enum guard_node special;

    pd->valid = true;
    pd->kind = -1;
    pd->special = 0;
    if (guard_kind_of_node(k, n, &kind, &special)) {
        pd->node = GN_STMT;
        pd->kind = (int16_t)kind;
        pd->special = (uint8_t)special;
        return;
    }
    int id = lookup(nodes, sizeof nodes / sizeof nodes[0], k, n);
    pd->node = id < 0 ? GN_OTHER : (uint16_t)id;
    if (id < 0 && n > 4 && memcmp(k + n - 4, "Stmt", 4) == 0) {
        /* a statement node this table does not know: the scanner says so */
        pd->node = GN_STMT;
        pd->kind = -2;
        if (!sc->st.unknown[0])
            guard_kind_snake(k, n, sc->st.unknown, sizeof sc->st.unknown);
    }
}

/* Node id of a field written without its wrapper, or GN_NONE. */
static uint16_t unwrapped(const struct guard_frame *owner, uint16_t key)
{
    if (key == GK_INTOCLAUSE)
        return GN_INTOCLAUSE;
    switch (owner->node) {
    case GN_A_CONST:
        return (key == GK_SVAL || key == GK_IVAL || key == GK_FVAL || key == GK_BOOLVAL ||
                key == GK_BSVAL)
                   ? GN_VALUE
                   : GN_NONE;
    case GN_CREATEOPCLASSITEM:
        return key == GK_NAME ? GN_OBJECTWITHARGS : GN_NONE;
    case GN_STMT:
        if (owner->special == GUARD_NODE_CALL && key == GK_FUNCCALL)
            return GN_FUNCCALL;
        if (owner->special == GUARD_NODE_INSERT && key == GK_ONCONFLICTCLAUSE)
            return GN_ONCONFLICTCLAUSE;
        if (owner->special == GUARD_NODE_OBJFUNC &&
            (key == GK_FUNC || key == GK_FROMSQL || key == GK_TOSQL))
            return GN_OBJECTWITHARGS;
        return GN_NONE;
    default:
        return GN_NONE;
    }
}

static struct guard_frame *push(struct guard_scan *sc, uint8_t type)
{
    if (sc->nfr == sc->capfr) {
        size_t cap = sc->capfr ? sc->capfr * 2 : 64;
        struct guard_frame *g = realloc(sc->fr, cap * sizeof *g);
        if (!g)
            return NULL;
        sc->fr = g;
        sc->capfr = cap;
    }
    struct guard_frame *f = &sc->fr[sc->nfr];
    memset(f, 0, sizeof *f);
    f->type = type;
    f->slot = f->cap = GUARD_NONE;
    f->kind = -1;
    f->body = sc->nfr ? sc->fr[sc->nfr - 1].body : GUARD_NONE;
    f->flags = type == '{' ? GUARD_FR_KEY : 0;
    sc->nfr++;
    return f;
}

/* A value begins in the top frame: counts it as an array element. */
static void value_starts(struct guard_scan *sc)
{
    if (sc->nfr && sc->fr[sc->nfr - 1].type == '[') {
        sc->fr[sc->nfr - 1].count++;
        guard_scan_elem(sc, sc->nfr - 1);
    }
}

static bool is_stmt_element(const struct guard_scan *sc)
{
    /* root {"version":..,"stmts":[ {element} ]} */
    return sc->nfr == 3 && sc->fr[1].type == '[' && sc->fr[1].key == GK_STMTS;
}

static int open_container(struct guard_scan *sc, char c, struct pending *pd)
{
    value_starts(sc);
    struct guard_frame *parent = sc->nfr ? &sc->fr[sc->nfr - 1] : NULL;
    uint16_t node = GN_NONE;
    int16_t kind = -1;
    uint8_t special = 0;

    if (c == '{' && parent && parent->type == '{') {
        if (pd->valid) {
            node = pd->node;
            kind = pd->kind;
            special = pd->special;
        } else if (parent->node != GN_NONE) {
            node = unwrapped(parent, parent->key);
        }
    }
    uint16_t holder_key = parent ? parent->key : GK_OTHER;
    pd->valid = false;
    struct guard_frame *f = push(sc, (uint8_t)c);
    if (!f)
        return -ENOMEM;
    size_t idx = sc->nfr - 1;
    if (c == '[') {
        f->key = holder_key;
        guard_scan_list(sc, idx);
    } else if (node != GN_NONE) {
        f->node = node;
        f->kind = kind;
        f->special = special;
        f->body = (uint32_t)idx;
        guard_scan_body(sc, idx);
    } else if (is_stmt_element(sc)) {
        guard_scan_stmt_begin(sc);
    }
    return 0;
}

/* Returns false to stop the walk (the statement decided the Query). */
static bool close_container(struct guard_scan *sc, char c)
{
    if (!sc->nfr || sc->fr[sc->nfr - 1].type != (c == '}' ? '{' : '[')) {
        sc->malformed = true;
        return false;
    }
    size_t idx = sc->nfr - 1;
    struct guard_frame *f = &sc->fr[idx];
    bool go = true;
    if (f->type == '[')
        guard_scan_list_end(sc, idx);
    else if (f->node != GN_NONE)
        guard_scan_body_end(sc, idx);
    else if (is_stmt_element(sc))
        go = guard_scan_stmt_end(sc);
    f = &sc->fr[idx];
    if (f->flags & GUARD_FR_OWNS)
        sc->nsl = f->slot;
    sc->nfr--;
    return go;
}

static void read_key(struct guard_scan *sc, struct guard_frame *f, const char *k, size_t n,
                     struct pending *pd)
{
    f->count++;
    f->flags &= (uint8_t)~GUARD_FR_KEY;
    pd->valid = false;
    if (n > 0 && k[0] >= 'A' && k[0] <= 'Z') {
        f->key = GK_OTHER;
        node_of_key(sc, k, n, pd);
        return;
    }
    int id = lookup(keys, sizeof keys / sizeof keys[0], k, n);
    f->key = id < 0 ? GK_OTHER : (uint16_t)id;
}

static size_t scalar_end(struct guard_span s, size_t i)
{
    while (i < s.n && !strchr(",}] \t\r\n", s.p[i]))
        i++;
    return i;
}

int guard_walk(struct guard_scan *sc, const char *json, size_t len)
{
    struct guard_span s = {json, len};
    struct pending pd = {0};
    size_t i = 0;

    while (i < len && !sc->malformed) {
        char c = json[i];
        size_t start = i;
        struct guard_frame *top = sc->nfr ? &sc->fr[sc->nfr - 1] : NULL;
        if (c == '{' || c == '[') {
            if (open_container(sc, c, &pd))
                return -ENOMEM;
            i++;
        } else if (c == '}' || c == ']') {
            i++;
            if (!close_container(sc, c))
                break;
        } else if (c == ',') {
            if (top && top->type == '{')
                top->flags |= GUARD_FR_KEY;
            i++;
        } else if (c == ':' || c == ' ' || c == '\n' || c == '\t' || c == '\r') {
            i++;
        } else if (c == '"') {
            size_t e = guard_json_string_end(s, i);
            if (e == 0) {
                sc->malformed = true;
                break;
            }
            if (top && top->type == '{' && (top->flags & GUARD_FR_KEY)) {
                read_key(sc, top, json + i + 1, e - i - 2, &pd);
            } else {
                value_starts(sc);
                pd.valid = false;
                if (sc->nfr)
                    guard_scan_scalar(sc, sc->nfr - 1, (struct guard_span){json + i, e - i});
            }
            i = e;
        } else {
            size_t e = scalar_end(s, i);
            if (e == i) {
                sc->malformed = true;
                break;
            }
            value_starts(sc);
            pd.valid = false;
            if (sc->nfr)
                guard_scan_scalar(sc, sc->nfr - 1, (struct guard_span){json + i, e - i});
            i = e;
        }
        sc->visits += i - start;
    }
    return sc->oom ? -ENOMEM : 0;
}

uint32_t guard_scan_slot(struct guard_scan *sc)
{
    if (sc->nsl == sc->capsl) {
        size_t cap = sc->capsl ? sc->capsl * 2 : 16;
        struct guard_slot *g = realloc(sc->sl, cap * sizeof *g);
        if (!g) {
            sc->oom = sc->malformed = true;
            return GUARD_NONE;
        }
        sc->sl = g;
        sc->capsl = cap;
    }
    memset(&sc->sl[sc->nsl], 0, sizeof sc->sl[0]);
    return (uint32_t)sc->nsl++;
}

void guard_scan_done(struct guard_scan *sc)
{
    free(sc->fr);
    free(sc->sl);
    sc->fr = NULL;
    sc->sl = NULL;
    sc->nfr = sc->capfr = sc->nsl = sc->capsl = 0;
}
