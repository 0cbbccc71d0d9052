/* Fingerprints and kinds of statement texts, cached by shape. Two texts with the same cache key
 * differ only in numbers and in the contents of plain '...' strings, which the fingerprint
 * leaves out as well (a literal is a constant to it); where the two would disagree (a string
 * that is no constant, such as COPY's file name) the first text seen names the shape, which is
 * what statistics want. */
#include "guard_fingerprint.h"
#include "guard_internal.h"

#include <errno.h>
#include <pg_query.h>
#include <stdlib.h>
#include <string.h>

#define FP_SETS 256 /* a power of two */
#define FP_WAYS 4

struct fp_slot {
    uint64_t hash;
    uint64_t used; /* LRU tick; 0 = empty */
    size_t klen;
    char *key;
    struct guard_fp fp;
};

struct guard_fp_cache {
    struct fp_slot slot[FP_SETS][FP_WAYS];
    uint64_t tick;
    uint64_t hits, misses;
    char key[GUARD_CACHE_KEY_MAX]; /* the key being looked up: too big for a worker's stack */
};

struct guard_fp_cache *guard_fp_cache_new(void)
{
    return calloc(1, sizeof(struct guard_fp_cache));
}

void guard_fp_cache_free(struct guard_fp_cache *c)
{
    if (!c)
        return;
    for (size_t s = 0; s < FP_SETS; s++)
        for (size_t w = 0; w < FP_WAYS; w++)
            free(c->slot[s][w].key);
    free(c);
}

void guard_fp_cache_counts(const struct guard_fp_cache *c, uint64_t *hits, uint64_t *misses)
{
    *hits = c ? c->hits : 0;
    *misses = c ? c->misses : 0;
}

/* The kind of the parse tree's statement: the first node key inside the first "stmt". */
static const char *tree_kind(const char *json)
{
    static const char mark[] = "{\"stmt\":{\"";
    const char *first = strstr(json, mark);
    if (!first)
        return strstr(json, "\"stmts\":[]") ? "empty" : "other";
    if (strstr(first + 1, mark))
        return "multi"; /* only the top level has a "stmt" key: a second one is a second statement
                         */
    const char *name = first + sizeof(mark) - 1;
    const char *end = strchr(name, '"');
    enum guard_kind k;
    enum guard_node special;
    if (end && guard_kind_of_node(name, (size_t)(end - name), &k, &special))
        return guard_kind_name(k);
    return "other";
}

static int compute(const char *sql, size_t len, struct guard_fp *out)
{
    char *copy = strndup(sql, len);
    if (!copy)
        return -ENOMEM;
    int rc = 0;
    PgQueryFingerprintResult f = pg_query_fingerprint(copy);
    if (f.error) {
        if (f.error->message && strcmp(f.error->message, "out of memory") == 0)
            rc = -ENOMEM;
        out->syntax = true;
        out->kind = "other";
    } else {
        out->fp = f.fingerprint < 2 ? 2 : f.fingerprint;
        PgQueryParseResult p = pg_query_parse(copy);
        out->kind = p.error || !p.parse_tree ? "other" : tree_kind(p.parse_tree);
        pg_query_free_parse_result(p);
    }
    pg_query_free_fingerprint_result(f);
    free(copy);
    guard_parse_release(len);
    out->parsed = true;
    return rc;
}

static struct fp_slot *lookup(struct guard_fp_cache *c, uint64_t h, size_t klen)
{
    struct fp_slot *set = c->slot[h & (FP_SETS - 1)];
    for (size_t w = 0; w < FP_WAYS; w++)
        if (set[w].used && set[w].hash == h && set[w].klen == klen &&
            memcmp(set[w].key, c->key, klen) == 0)
            return &set[w];
    return NULL;
}

static void store(struct guard_fp_cache *c, uint64_t h, size_t klen, const struct guard_fp *fp)
{
    struct fp_slot *set = c->slot[h & (FP_SETS - 1)], *v = &set[0];
    for (size_t w = 1; w < FP_WAYS && v->used; w++)
        if (set[w].used < v->used)
            v = &set[w];
    char *key = malloc(klen);
    if (!key)
        return; /* the next time misses again */
    memcpy(key, c->key, klen);
    free(v->key);
    *v = (struct fp_slot){.hash = h, .used = ++c->tick, .klen = klen, .key = key, .fp = *fp};
    v->fp.parsed = false;
}

int guard_fingerprint(struct guard_fp_cache *c, const char *sql, size_t len, size_t max, bool keyed,
                      struct guard_fp *out)
{
    memset(out, 0, sizeof(*out));
    if (len > max) {
        out->large = true;
        out->kind = "other";
        return 0;
    }
    uint64_t h = 0;
    size_t klen = !c      ? 0
                  : keyed ? guard_cache_key_hashed(sql, len, c->key, sizeof(c->key), &h)
                          : guard_cache_key_once(sql, len, c->key, sizeof(c->key), &h);
    struct fp_slot *hit = klen ? lookup(c, h, klen) : NULL;
    if (hit) {
        hit->used = ++c->tick;
        c->hits++;
        *out = hit->fp;
        return 0;
    }
    if (c)
        c->misses++;
    int rc = compute(sql, len, out);
    if (rc == 0 && klen)
        store(c, h, klen, out);
    return rc;
}
