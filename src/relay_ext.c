#include "relay_ext.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool ext_rewrite_pop(struct ext_state *x, struct ext_refusal *d);

struct ext_state *relay_ext_new(void)
{
    return calloc(1, sizeof(struct ext_state));
}

void relay_ext_free(struct ext_state *x)
{
    if (!x)
        return;
    while (x->fcount)
        relay_ext_pop(x, NULL);
    for (size_t i = 0; i < x->scap; i++) {
        free(x->stmts[i].name);
        relay_ext_text_unref(x->stmts[i].text);
    }
    relay_ext_portals_clear(x);
    free(x->spare_portal);
    free(x->spare_run);
    free(x->stmts);
    free(x->fifo);
    free(x->rw);
    free(x);
}

struct ext_text *relay_ext_text_new(const char *p, size_t len)
{
    struct ext_text *t = malloc(sizeof(*t) + len + 1);
    if (!t)
        return NULL;
    t->refs = 1;
    t->len = len;
    t->shadow_rule = NULL;
    t->fp = (struct guard_fp){0};
    memcpy(t->data, p, len);
    t->data[len] = 0;
    return t;
}

void relay_ext_text_unref(struct ext_text *t)
{
    if (t && --t->refs == 0) {
        free(t->shadow_rule);
        free(t);
    }
}

int relay_ext_text_set_shadow(struct ext_text *t, const char *rule)
{
    char *copy = rule && *rule ? strdup(rule) : NULL;
    if (rule && *rule && !copy)
        return -1;
    free(t->shadow_rule);
    t->shadow_rule = copy;
    return 0;
}

/* ---------- FIFO ---------- */

int relay_ext_push(struct ext_state *x, enum ext_kind kind, enum ext_action action,
                   struct ext_run *run)
{
    if (x->fcount == x->fcap) {
        if (x->fcap >= EXT_FIFO_MAX)
            return -1;
        size_t cap = x->fcap ? x->fcap * 2 : 32;
        struct ext_entry *n = malloc(cap * sizeof(*n));
        if (!n)
            return -1;
        for (size_t i = 0; i < x->fcount; i++)
            n[i] = x->fifo[(x->fhead + i) & (x->fcap - 1)];
        free(x->fifo);
        x->fifo = n;
        x->fcap = cap;
        x->fhead = 0;
    }
    struct ext_entry *e = &x->fifo[(x->fhead + x->fcount) & (x->fcap - 1)];
    e->kind = (uint8_t)kind;
    e->action = (uint8_t)action;
    e->flags = 0;
    e->run = run;
    if (run)
        run->refs++;
    x->fcount++;
    if (kind == EXT_SYNC)
        x->nsync++;
    if (kind == EXT_EXECUTE)
        x->nexec++;
    return 0;
}

struct ext_entry *relay_ext_first_execute(struct ext_state *x)
{
    for (size_t i = 0; x && x->nexec && i < x->fcount; i++) {
        struct ext_entry *e = &x->fifo[(x->fhead + i) & (x->fcap - 1)];
        if (e->kind == EXT_EXECUTE)
            return e;
    }
    return NULL;
}

void relay_ext_pop(struct ext_state *x, struct ext_refusal *rewrite)
{
    if (!x->fcount)
        return;
    struct ext_entry *e = &x->fifo[x->fhead];
    if (e->kind == EXT_SYNC)
        x->nsync--;
    if (e->kind == EXT_EXECUTE)
        x->nexec--;
    if (e->action == EXT_REWRITE) {
        struct ext_refusal unused;
        ext_rewrite_pop(x, rewrite ? rewrite : &unused);
    }
    relay_ext_run_unref(x, e->run);
    x->fhead = (x->fhead + 1) & (x->fcap - 1);
    x->fcount--;
}

void relay_ext_skip_to_sync(struct ext_state *x, void (*dropped)(void *arg, struct ext_entry *e),
                            void *arg)
{
    while (x->fcount && x->fifo[x->fhead].kind != EXT_SYNC) {
        if (dropped)
            dropped(arg, &x->fifo[x->fhead]);
        relay_ext_pop(x, NULL); /* a skipped failing Parse's error never comes */
    }
}

void relay_ext_drop_syncs_after_head(struct ext_state *x)
{
    size_t keep = 1;
    for (size_t i = 1; i < x->fcount; i++) {
        struct ext_entry *e = &x->fifo[(x->fhead + i) & (x->fcap - 1)];
        if (e->kind == EXT_SYNC) {
            x->nsync--;
            continue;
        }
        x->fifo[(x->fhead + keep++) & (x->fcap - 1)] = *e;
    }
    x->fcount = x->fcount ? keep : 0;
}

int relay_ext_rewrite_push(struct ext_state *x, const struct ext_refusal *d)
{
    if (x->rcount == x->rcap) {
        size_t cap = x->rcap ? x->rcap * 2 : 4;
        struct ext_refusal *n = malloc(cap * sizeof(*n));
        if (!n)
            return -1;
        for (size_t i = 0; i < x->rcount; i++)
            n[i] = x->rw[(x->rhead + i) & (x->rcap - 1)];
        free(x->rw);
        x->rw = n;
        x->rcap = cap;
        x->rhead = 0;
    }
    x->rw[(x->rhead + x->rcount) & (x->rcap - 1)] = *d;
    x->rcount++;
    return 0;
}

static bool ext_rewrite_pop(struct ext_state *x, struct ext_refusal *d)
{
    if (!x->rcount)
        return false;
    *d = x->rw[x->rhead];
    x->rhead = (x->rhead + 1) & (x->rcap - 1);
    x->rcount--;
    return true;
}

/* ---------- statements: open addressing, linear probing, backward-shift deletion ---------- */

static size_t name_hash(const char *s)
{
    size_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static size_t slot_of(const struct ext_state *x, const char *name)
{
    size_t mask = x->scap - 1, i = name_hash(name) & mask;
    /* the first bytes first: most lookups are of the unnamed statement, whose name is "" */
    while (x->stmts[i].name &&
           (x->stmts[i].name[0] != name[0] || (name[0] && strcmp(x->stmts[i].name, name) != 0)))
        i = (i + 1) & mask;
    return i;
}

static int grow_stmts(struct ext_state *x)
{
    size_t cap = x->scap ? x->scap * 2 : 16;
    struct ext_stmt *old = x->stmts;
    size_t oldcap = x->scap;
    x->stmts = calloc(cap, sizeof(*x->stmts));
    if (!x->stmts) {
        x->stmts = old;
        return -1;
    }
    x->scap = cap;
    for (size_t i = 0; i < oldcap; i++)
        if (old[i].name)
            x->stmts[slot_of(x, old[i].name)] = old[i];
    free(old);
    return 0;
}

struct ext_stmt *relay_ext_stmt_get(struct ext_state *x, const char *name)
{
    if (!x->scap)
        return NULL;
    struct ext_stmt *s = &x->stmts[slot_of(x, name)];
    return s->name ? s : NULL;
}

void relay_ext_stmt_drop(struct ext_state *x, const char *name)
{
    if (!x->scap)
        return;
    size_t mask = x->scap - 1, i = slot_of(x, name);
    if (!x->stmts[i].name)
        return;
    x->bytes -= strlen(x->stmts[i].name) + x->stmts[i].text->len;
    free(x->stmts[i].name);
    relay_ext_text_unref(x->stmts[i].text);
    memset(&x->stmts[i], 0, sizeof(x->stmts[i]));
    x->nstmts--;
    /* close the gap: move back later entries of the cluster that hash at or before it */
    for (size_t j = (i + 1) & mask; x->stmts[j].name; j = (j + 1) & mask) {
        size_t home = name_hash(x->stmts[j].name) & mask;
        bool movable = i <= j ? (home <= i || home > j) : (home <= i && home > j);
        if (movable) {
            x->stmts[i] = x->stmts[j];
            memset(&x->stmts[j], 0, sizeof(x->stmts[j]));
            i = j;
        }
    }
}

int relay_ext_stmt_put(struct ext_state *x, const char *name, const char *text, size_t len,
                       unsigned policy_gen)
{
    struct ext_stmt *old = relay_ext_stmt_get(x, name);
    if (old && old->text->len == len && memcmp(old->text->data, text, len) == 0) {
        old->policy_gen = policy_gen; /* the unnamed statement of a client repeating itself */
        return 0;
    }
    relay_ext_stmt_drop(x, name);
    size_t need = strlen(name) + len;
    if (x->nstmts >= EXT_MAX_STATEMENTS || x->bytes + need > EXT_TABLE_BYTES)
        return -1;
    if ((x->nstmts + 1) * 2 > x->scap && grow_stmts(x))
        return -1;
    char *n = strdup(name);
    struct ext_text *t = n ? relay_ext_text_new(text, len) : NULL;
    if (!t) {
        free(n);
        return -1;
    }
    struct ext_stmt *s = &x->stmts[slot_of(x, name)];
    *s = (struct ext_stmt){.name = n, .text = t, .policy_gen = policy_gen};
    x->nstmts++;
    x->bytes += need;
    return 0;
}

/* ---------- portals and their runs ---------- */

int relay_ext_portal_find(struct ext_state *x, const char *name)
{
    for (int i = 0; i < x->portal_top; i++)
        if (x->portals[i] && strcmp(x->portals[i]->name, name) == 0)
            return i;
    return -1;
}

/* name into buf when it fits, else a copy; NULL when out of memory */
static char *keep_name(char *buf, const char *name)
{
    size_t n = strlen(name);
    return n < EXT_NAME_INLINE ? memcpy(buf, name, n + 1) : strdup(name);
}

/* A zeroed object: the spare, or a new one. */
static void *take(void **spare, size_t size)
{
    void *p = *spare;
    *spare = NULL;
    return p ? memset(p, 0, size) : calloc(1, size);
}

static void give_back(void **spare, void *p)
{
    if (*spare)
        free(p);
    else
        *spare = p;
}

void relay_ext_run_unref(struct ext_state *x, struct ext_run *run)
{
    if (!run || --run->refs > 0)
        return;
    x->param_bytes -= run->params ? run->nparams * sizeof(struct audit_param) : 0;
    for (uint16_t i = 0; run->params && i < run->nparams; i++)
        x->param_bytes -= run->params[i].len;
    relay_ext_text_unref(run->text);
    if (run->portal != run->portal_buf)
        free(run->portal);
    free(run->params);
    give_back(&x->spare_run, run);
}

void relay_ext_portal_close(struct ext_state *x, int i)
{
    struct ext_portal *p = i >= 0 && i < EXT_MAX_PORTALS ? x->portals[i] : NULL;
    if (!p)
        return;
    x->param_bytes -= p->params_bytes;
    relay_ext_run_unref(x, p->run);
    relay_ext_text_unref(p->text);
    if (p->name != p->name_buf)
        free(p->name);
    free(p->params);
    give_back(&x->spare_portal, p);
    x->portals[i] = NULL;
    while (x->portal_top > 0 && !x->portals[x->portal_top - 1])
        x->portal_top--;
}

int relay_ext_portal_open(struct ext_state *x, const char *name, struct ext_text *text)
{
    relay_ext_portal_close(
        x, relay_ext_portal_find(x, name)); /* its run, if any, lives on in the FIFO */
    int slot = x->portal_top < EXT_MAX_PORTALS ? x->portal_top : -1;
    for (int i = 0; i < x->portal_top; i++)
        if (!x->portals[i]) {
            slot = i;
            break;
        }
    struct ext_portal *p = slot >= 0 ? take(&x->spare_portal, sizeof(*p)) : NULL;
    if (!p || !(p->name = keep_name(p->name_buf, name))) {
        free(p);
        return -1;
    }
    p->text = relay_ext_text_ref(text);
    x->portals[slot] = p;
    if (slot >= x->portal_top)
        x->portal_top = slot + 1;
    return slot;
}

void relay_ext_portals_clear(struct ext_state *x)
{
    for (int i = x->portal_top - 1; i >= 0; i--)
        relay_ext_portal_close(x, i);
}

struct ext_run *relay_ext_portal_run(struct ext_state *x, int i, const struct config *cfg)
{
    struct ext_portal *p = x->portals[i];
    if (p->run && !p->run->done)
        return p->run;
    relay_ext_run_unref(x, p->run);
    struct ext_run *run = take(&x->spare_run, sizeof(*run));
    if (!run || !(run->portal = keep_name(run->portal_buf, p->name))) {
        free(run);
        p->run = NULL;
        return NULL;
    }
    run->refs = 1;
    run->text = relay_ext_text_ref(p->text);
    /* the parameters go with the run: the portal's one execution */
    run->params = p->params;
    run->nparams = p->nparams;
    p->params = NULL;
    p->nparams = 0;
    p->params_bytes = 0;
    stmt_begin(&run->st, cfg, run->text ? run->text->data : "", run->text ? run->text->len : 0);
    if (run->text && run->text->shadow_rule)
        snprintf(run->st.shadow_rule, sizeof(run->st.shadow_rule), "%s", run->text->shadow_rule);
    run->st.fp_memo = run->text ? &run->text->fp : NULL;
    p->run = run;
    return run;
}
