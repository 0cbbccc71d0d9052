/* The statement statistics table: rows in one array linked into a hash chain per bucket and one
 * LRU list, by index (the array may move when it grows). Touching a row moves it to the front;
 * a new row past the bound takes the place of the one at the back. */
#include "stmt_stats.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NIL UINT32_MAX

struct node {
    struct stmt_stats_row row;
    uint32_t prev, next; /* LRU list, most recent at head */
    uint32_t hnext;      /* hash chain, or the free list */
};

struct stmt_stats {
    struct node *nodes;
    uint32_t nnodes, capnodes; /* nodes in use or freed / allocated */
    uint32_t *buckets;
    uint32_t nbuckets; /* a power of two */
    uint32_t head, tail, free;
    size_t count;
};

struct stmt_stats *stmt_stats_new(void)
{
    struct stmt_stats *t = calloc(1, sizeof(*t));
    if (t)
        t->head = t->tail = t->free = NIL;
    return t;
}

void stmt_stats_free(struct stmt_stats *t)
{
    if (!t)
        return;
    for (uint32_t i = 0; i < t->nnodes; i++)
        free(t->nodes[i].row.sample);
    free(t->nodes);
    free(t->buckets);
    free(t);
}

size_t stmt_stats_count(const struct stmt_stats *t)
{
    return t ? t->count : 0;
}

static uint32_t bucket_of(const struct stmt_stats *t, uint64_t fp)
{
    return (uint32_t)((fp * UINT64_C(0x9E3779B97F4A7C15)) >> 32) & (t->nbuckets - 1);
}

static uint32_t find(const struct stmt_stats *t, uint64_t fp)
{
    if (!t->nbuckets)
        return NIL;
    for (uint32_t i = t->buckets[bucket_of(t, fp)]; i != NIL; i = t->nodes[i].hnext)
        if (t->nodes[i].row.fp == fp)
            return i;
    return NIL;
}

static void lru_unlink(struct stmt_stats *t, uint32_t i)
{
    struct node *n = &t->nodes[i];
    if (n->prev != NIL)
        t->nodes[n->prev].next = n->next;
    else
        t->head = n->next;
    if (n->next != NIL)
        t->nodes[n->next].prev = n->prev;
    else
        t->tail = n->prev;
}

static void lru_push_front(struct stmt_stats *t, uint32_t i)
{
    struct node *n = &t->nodes[i];
    n->prev = NIL;
    n->next = t->head;
    if (t->head != NIL)
        t->nodes[t->head].prev = i;
    t->head = i;
    if (t->tail == NIL)
        t->tail = i;
}

static void hash_unlink(struct stmt_stats *t, uint32_t i)
{
    uint32_t *p = &t->buckets[bucket_of(t, t->nodes[i].row.fp)];
    while (*p != i)
        p = &t->nodes[*p].hnext;
    *p = t->nodes[i].hnext;
}

static void hash_link(struct stmt_stats *t, uint32_t i)
{
    uint32_t b = bucket_of(t, t->nodes[i].row.fp);
    t->nodes[i].hnext = t->buckets[b];
    t->buckets[b] = i;
}

/* The least recently used row leaves; its node goes to the free list. */
static void evict_tail(struct stmt_stats *t)
{
    uint32_t i = t->tail;
    lru_unlink(t, i);
    hash_unlink(t, i);
    free(t->nodes[i].row.sample);
    memset(&t->nodes[i].row, 0, sizeof(t->nodes[i].row));
    t->nodes[i].hnext = t->free;
    t->free = i;
    t->count--;
}

/* Buckets for at least want rows at a load of at most one half. */
static int rehash(struct stmt_stats *t, size_t want)
{
    uint32_t nb = t->nbuckets ? t->nbuckets : 64;
    while ((size_t)nb < want * 2 && nb < (UINT32_C(1) << 30))
        nb *= 2;
    if (nb == t->nbuckets)
        return 0;
    uint32_t *b = malloc(sizeof(*b) * nb);
    if (!b)
        return -1;
    for (uint32_t i = 0; i < nb; i++)
        b[i] = NIL;
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = nb;
    for (uint32_t i = t->head; i != NIL; i = t->nodes[i].next)
        hash_link(t, i);
    return 0;
}

static uint32_t new_node(struct stmt_stats *t)
{
    if (t->free != NIL) {
        uint32_t i = t->free;
        t->free = t->nodes[i].hnext;
        return i;
    }
    if (t->nnodes == t->capnodes) {
        if (t->capnodes >= UINT32_MAX / 2)
            return NIL;
        uint32_t cap = t->capnodes ? t->capnodes * 2 : 64;
        struct node *n = realloc(t->nodes, sizeof(*n) * cap);
        if (!n)
            return NIL;
        t->nodes = n;
        t->capnodes = cap;
    }
    memset(&t->nodes[t->nnodes], 0, sizeof(t->nodes[0]));
    return t->nnodes++;
}

struct stmt_stats_row *stmt_stats_touch(struct stmt_stats *t, size_t cap, uint64_t fp,
                                        const char *kind, int64_t now_us, bool *created)
{
    *created = false;
    if (!cap)
        return NULL;
    uint32_t i = find(t, fp);
    if (i == NIL) {
        while (t->count >= cap)
            evict_tail(t);
        if (rehash(t, t->count + 1))
            return NULL;
        i = new_node(t);
        if (i == NIL)
            return NULL;
        t->nodes[i].row.fp = fp;
        t->nodes[i].row.kind = kind;
        hash_link(t, i);
        lru_push_front(t, i);
        t->count++;
        *created = true;
    } else if (t->head != i) {
        lru_unlink(t, i);
        lru_push_front(t, i);
    }
    struct stmt_stats_row *r = &t->nodes[i].row;
    if (now_us > r->last_us)
        r->last_us = now_us;
    return r;
}

void stmt_stats_add(struct stmt_stats_row *r, enum stmt_stats_class c, uint64_t us, uint64_t rows,
                    uint64_t bytes)
{
    r->calls++;
    r->errors += c == STMT_STATS_ERROR;
    r->denied += c == STMT_STATS_DENIED;
    r->limited += c == STMT_STATS_LIMITED;
    r->total_us += us;
    if (us > r->max_us)
        r->max_us = us;
    r->rows += rows;
    r->bytes += bytes;
}

static bool is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

void stmt_stats_set_sample(struct stmt_stats_row *r, const char *text)
{
    char buf[STMT_STATS_SAMPLE_MAX + 1];
    size_t o = 0;
    bool space = true; /* leading blanks go */
    const unsigned char *p = (const unsigned char *)text;
    for (; *p && o < STMT_STATS_SAMPLE_MAX; p++) {
        if (is_space(*p)) {
            if (!space)
                buf[o++] = ' ';
            space = true;
            continue;
        }
        space = false;
        buf[o++] = (char)*p;
    }
    if ((*p & 0xC0) == 0x80) { /* cut inside a UTF-8 sequence: it goes whole */
        while (o > 0 && ((unsigned char)buf[o - 1] & 0xC0) == 0x80)
            o--;
        if (o > 0 && (unsigned char)buf[o - 1] >= 0xC0)
            o--;
    }
    while (o > 0 && buf[o - 1] == ' ')
        o--;
    buf[o] = 0;
    free(r->sample);
    r->sample = strdup(buf);
}

int stmt_stats_merge(struct stmt_stats *t, const struct stmt_stats_row *r)
{
    bool created;
    struct stmt_stats_row *d = stmt_stats_touch(t, SIZE_MAX, r->fp, r->kind, r->last_us, &created);
    if (!d)
        return -1;
    d->calls += r->calls;
    d->errors += r->errors;
    d->denied += r->denied;
    d->limited += r->limited;
    d->shadow += r->shadow;
    d->total_us += r->total_us;
    d->rows += r->rows;
    d->bytes += r->bytes;
    if (r->max_us > d->max_us)
        d->max_us = r->max_us;
    if (!d->sample && r->sample)
        d->sample = strdup(r->sample);
    return 0;
}

struct stmt_stats_row *stmt_stats_export(const struct stmt_stats *t, bool with_samples, size_t *n)
{
    *n = 0;
    if (!t || !t->count)
        return NULL;
    struct stmt_stats_row *out = calloc(t->count, sizeof(*out));
    if (!out)
        return NULL;
    size_t k = 0;
    for (uint32_t i = t->head; i != NIL; i = t->nodes[i].next) {
        out[k] = t->nodes[i].row;
        out[k].sample = NULL;
        if (with_samples && t->nodes[i].row.sample)
            out[k].sample = strdup(t->nodes[i].row.sample); /* NULL when out of memory: shown so */
        k++;
    }
    *n = k;
    return out;
}

void stmt_stats_rows_free(struct stmt_stats_row *rows, size_t n)
{
    for (size_t i = 0; rows && i < n; i++)
        free(rows[i].sample);
    free(rows);
}

static int by_recent(const void *a, const void *b)
{
    const struct stmt_stats_row *x = a, *y = b;
    if (x->last_us != y->last_us)
        return x->last_us > y->last_us ? -1 : 1;
    return x->fp < y->fp ? -1 : x->fp > y->fp;
}

static int by_calls(const void *a, const void *b)
{
    const struct stmt_stats_row *x = a, *y = b;
    if (x->calls != y->calls)
        return x->calls > y->calls ? -1 : 1;
    if (x->total_us != y->total_us)
        return x->total_us > y->total_us ? -1 : 1;
    return x->fp < y->fp ? -1 : x->fp > y->fp;
}

void stmt_stats_sort_recent(struct stmt_stats_row *rows, size_t n)
{
    if (n > 1)
        qsort(rows, n, sizeof(*rows), by_recent);
}

void stmt_stats_sort_calls(struct stmt_stats_row *rows, size_t n)
{
    if (n > 1)
        qsort(rows, n, sizeof(*rows), by_calls);
}

const char *stmt_stats_fp_text(uint64_t fp, char *buf, size_t len)
{
    if (fp == STMT_STATS_FP_LARGE)
        snprintf(buf, len, "<large statement>");
    else if (fp == STMT_STATS_FP_SYNTAX)
        snprintf(buf, len, "<syntax error>");
    else
        snprintf(buf, len, "%016" PRIx64, fp);
    return buf;
}
