/* Per-session decision cache. Clients repeat the same statement shapes with different literals
 * (pgbench, ORMs, dashboards), so the key abstracts literals away: digit runs become "0" and
 * the contents of standard '...' strings vanish. That is only sound while our tiny lexer sees
 * the same token boundaries as PostgreSQL's, so text with anything that can hide a boundary or
 * change an identifier from inside a literal is keyed verbatim instead (see key_needs_exact). */
#include "guard_internal.h"

#include <stdlib.h>
#include <string.h>

struct cache_entry {
    uint64_t hash;
    uint64_t used; /* LRU tick; 0 = empty */
    char *key;
    size_t klen, kcap;
    struct guard_decision decision;
};

struct guard_cache {
    uint64_t gen; /* policy generation the entries were decided under */
    uint64_t tick;
    uint64_t hits;
    struct cache_entry e[GUARD_CACHE_SLOTS];
};

struct guard_cache *guard_cache_new(void)
{
    return calloc(1, sizeof(struct guard_cache));
}

void guard_cache_free(struct guard_cache *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < GUARD_CACHE_SLOTS; i++)
        free(c->e[i].key);
    free(c);
}

uint64_t guard_cache_hits(const struct guard_cache *c)
{
    return c ? c->hits : 0;
}

static char lower_ascii(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

/* '$' (dollar quotes, $1), '\\' (E'' escapes), comments, and U& (UESCAPE picks an escape
 * character from a string literal, so an emptied literal could rename an identifier):
 * `SELECT $$'$$; DROP TABLE t; --'` must never share a key with `SELECT $$'$$; SELECT 1; --'`. */
static bool has_pair(const char *s, size_t len, char a, char b)
{
    const char *end = s + len;
    for (const char *p = s; p < end && (p = memchr(p, a, (size_t)(end - p))) != NULL; p++)
        if (p + 1 < end && p[1] == b)
            return true;
    return false;
}

/* memchr passes rather than one loop over the bytes: this runs for every statement the policy
 * or the statement statistics see, and the vectorized search is several times cheaper. */
static bool key_needs_exact(const char *s, size_t len)
{
    if (memchr(s, '$', len) || memchr(s, '\\', len) || has_pair(s, len, '-', '-') ||
        has_pair(s, len, '/', '*'))
        return true;
    const char *end = s + len;
    for (const char *p = s; p < end && (p = memchr(p, '&', (size_t)(end - p))) != NULL; p++)
        if (p > s && lower_ascii(p[-1]) == 'u')
            return true;
    return false;
}

/* 1: a byte of an identifier or keyword (letters, '_', non-ASCII); 2: a digit; 0: other. */
static const unsigned char key_class[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0,
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1,
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
};

static bool ident_char(unsigned char c)
{
    return key_class[c] != 0;
}

/* Copies the quoted run starting at s[*i] (a ' or ") honoring doubled quotes. Identifiers are
 * kept (they name tables and functions); string contents are dropped. */
static bool copy_quoted(const char *s, size_t len, size_t *i, char *key, size_t cap, size_t *o,
                        bool keep)
{
    char q = s[*i];
    size_t j = *i + 1;
    bool closed = false;

    while (j < len) {
        if (s[j] == q) {
            if (j + 1 < len && s[j + 1] == q) {
                j += 2;
                continue;
            }
            j++;
            closed = true;
            break;
        }
        j++;
    }
    /* j is past the closing quote, or len when unterminated (a syntax error: never cached). */
    if (keep) {
        if (*o + (j - *i) > cap)
            return false;
        memcpy(key + *o, s + *i, j - *i);
        *o += j - *i;
    } else {
        if (*o + 2 > cap)
            return false;
        key[(*o)++] = q;
        if (closed)
            key[(*o)++] = q;
    }
    *i = j;
    return true;
}

static size_t normalize(const char *s, size_t len, char *key, size_t cap)
{
    size_t o = 0, i = 0;

    key[o++] = 'N';
    while (i < len) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\'' || c == '"') {
            if (!copy_quoted(s, len, &i, key, cap, &o, c == '"'))
                return 0;
        } else if (key_class[c] == 1) {
            /* an identifier or keyword: digits inside it are part of the name */
            size_t j = i;
            while (j < len && ident_char((unsigned char)s[j]))
                j++;
            if (o + (j - i) > cap)
                return 0;
            memcpy(key + o, s + i, j - i);
            o += j - i;
            i = j;
        } else if (key_class[c] == 2) {
            while (i < len && s[i] >= '0' && s[i] <= '9')
                i++;
            if (o + 1 > cap)
                return 0;
            key[o++] = '0';
        } else {
            if (o + 1 > cap)
                return 0;
            key[o++] = (char)c;
            i++;
        }
    }
    return o;
}

static size_t compute_key(const char *sql, size_t len, char *key, size_t cap)
{
    if (key_needs_exact(sql, len)) {
        /* The prefix keeps verbatim keys apart from normalized ones. */
        if (len + 1 > cap)
            return 0;
        key[0] = 'X';
        memcpy(key + 1, sql, len);
        return len + 1;
    }
    return normalize(sql, len, key, cap);
}

/* The policy's decision cache and the statement statistics key the same text one after the
 * other on the same thread; the last short text keyed here is remembered, so the second costs
 * a comparison instead of another pass. A key is never longer than its text plus one. */
#define KEY_MEMO_TEXT 1024
static _Thread_local struct {
    size_t len, klen; /* klen 0: nothing remembered */
    char sql[KEY_MEMO_TEXT];
    char key[KEY_MEMO_TEXT + 1];
} memo;

size_t guard_cache_key(const char *sql, size_t len, char *key, size_t cap)
{
    if (cap > GUARD_CACHE_KEY_MAX)
        cap = GUARD_CACHE_KEY_MAX;
    if (cap < 2)
        return 0;
    if (memo.klen && memo.len == len && memo.klen <= cap && memcmp(memo.sql, sql, len) == 0) {
        memcpy(key, memo.key, memo.klen);
        return memo.klen;
    }
    size_t klen = compute_key(sql, len, key, cap);
    memo.klen = 0;
    if (klen && len <= KEY_MEMO_TEXT) {
        memcpy(memo.sql, sql, len);
        memcpy(memo.key, key, klen);
        memo.len = len;
        memo.klen = klen;
    }
    return klen;
}

/* FNV-1a: only picks candidates; a hit always compares the whole key. */
static uint64_t key_hash(const char *k, size_t n)
{
    uint64_t h = UINT64_C(14695981039346656037);
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)k[i];
        h *= UINT64_C(1099511628211);
    }
    return h;
}

static void sync_gen(struct guard_cache *c, uint64_t gen)
{
    if (c->gen == gen)
        return;
    /* A new policy may decide differently: forget everything, keep the buffers. */
    for (size_t i = 0; i < GUARD_CACHE_SLOTS; i++)
        c->e[i].used = 0;
    c->gen = gen;
}

bool guard_cache_get(struct guard_cache *c, uint64_t gen, const char *key, size_t klen,
                     struct guard_decision *out)
{
    uint64_t h = key_hash(key, klen);

    sync_gen(c, gen);
    for (size_t i = 0; i < GUARD_CACHE_SLOTS; i++) {
        struct cache_entry *e = &c->e[i];
        if (e->used && e->hash == h && e->klen == klen && memcmp(e->key, key, klen) == 0) {
            e->used = ++c->tick;
            c->hits++;
            *out = e->decision;
            return true;
        }
    }
    return false;
}

void guard_cache_put(struct guard_cache *c, uint64_t gen, const char *key, size_t klen,
                     const struct guard_decision *d)
{
    struct cache_entry *victim = &c->e[0];

    if (klen == 0 || klen > GUARD_CACHE_KEY_MAX)
        return;
    sync_gen(c, gen);
    for (size_t i = 0; i < GUARD_CACHE_SLOTS; i++) {
        if (c->e[i].used < victim->used)
            victim = &c->e[i];
        if (!victim->used)
            break;
    }
    if (victim->kcap < klen) {
        /* Buffers only grow, and each is bounded by GUARD_CACHE_KEY_MAX. */
        size_t cap = (klen + 63) & ~(size_t)63;
        char *k = malloc(cap);
        if (!k) {
            victim->used = 0;
            return; /* a cache that cannot grow just misses */
        }
        free(victim->key);
        victim->key = k;
        victim->kcap = cap;
    }
    memcpy(victim->key, key, klen);
    victim->klen = klen;
    victim->hash = key_hash(key, klen);
    victim->decision = *d;
    victim->used = ++c->tick;
}
