/* Per-session decision cache. Clients repeat the same statement shapes with different literals
 * (pgbench, ORMs, dashboards), so the key abstracts literals away: digit runs become "0" and
 * the contents of standard '...' strings vanish. That is only sound while our tiny lexer sees
 * the same token boundaries as PostgreSQL's, so text with anything that can hide a boundary or
 * change an identifier from inside a literal is keyed verbatim instead (see key_needs_exact). */
#include "guard_internal.h"

#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

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
 * `SELECT $$'$$; DROP TABLE t; --'` must never share a key with `SELECT $$'$$; SELECT 1; --'`.
 * s[i] is one of the bytes key_needs_exact() looks for. */
static bool exact_at(const char *s, size_t len, size_t i)
{
    switch (s[i]) {
    case '-':
        return i + 1 < len && s[i + 1] == '-';
    case '/':
        return i + 1 < len && s[i + 1] == '*';
    case '&':
        return i > 0 && lower_ascii(s[i - 1]) == 'u';
    default:
        return true; /* '$', '\\' */
    }
}

static bool exact_byte(char c)
{
    return c == '$' || c == '\\' || c == '-' || c == '/' || c == '&';
}

/* One pass, sixteen bytes a step where SSE2 is there (the last step overlapping the one
 * before it, its bytes already seen masked off): this runs for every statement the policy or
 * the statement statistics key. */
#ifdef __SSE2__
static unsigned exact_bytes16(const char *p)
{
    __m128i x = _mm_loadu_si128((const __m128i *)(const void *)p);
    __m128i m = _mm_or_si128(
        _mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('$')), _mm_cmpeq_epi8(x, _mm_set1_epi8('\\'))),
        _mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('-')), _mm_cmpeq_epi8(x, _mm_set1_epi8('/'))));
    return (unsigned)_mm_movemask_epi8(_mm_or_si128(m, _mm_cmpeq_epi8(x, _mm_set1_epi8('&'))));
}
#endif

static bool key_needs_exact(const char *s, size_t len)
{
    size_t i = 0;
#ifdef __SSE2__
    for (; len >= 16 && i < len; i += 16) {
        size_t at = i + 16 <= len ? i : len - 16;
        unsigned bits = exact_bytes16(s + at) >> (i - at) << (i - at);
        for (; bits; bits &= bits - 1)
            if (exact_at(s, len, at + (size_t)__builtin_ctz(bits)))
                return true;
    }
#endif
    for (; i < len; i++)
        if (exact_byte(s[i]) && exact_at(s, len, i))
            return true;
    return false;
}

/* 1: a byte that starts an identifier or keyword (letters, '_', non-ASCII); 2: a digit (inside
 * an identifier, part of it); 3: a quote, ' or "; 0: other. */
static const unsigned char key_class[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 3, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0,
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1,
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
};

static bool ident_char(unsigned char c)
{
    return key_class[c] == 1 || key_class[c] == 2;
}

/* The end of the quoted run starting at s[i]: past its closing quote, or len when it is
 * unterminated (a syntax error: never cached). */
static size_t quoted_end(const char *s, size_t len, size_t i, bool *closed)
{
    char q = s[i];
    size_t j = i + 1;
    *closed = false;
    while (j < len) {
        if (s[j] == q) {
            if (j + 1 < len && s[j + 1] == q) {
                j += 2;
                continue;
            }
            *closed = true;
            return j + 1;
        }
        j++;
    }
    return j;
}

/* Copies the quoted run starting at s[*i] (a ' or ") honoring doubled quotes. Identifiers are
 * kept (they name tables and functions); string contents are dropped. */
static bool copy_quoted(const char *s, size_t len, size_t *i, char *key, size_t cap, size_t *o,
                        bool keep)
{
    char q = s[*i];
    bool closed;
    size_t j = quoted_end(s, len, *i, &closed);
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

/* The first byte at or after i that normalize_roomy() does not copy as it is (a digit or a
 * quote, classes 2 and 3), or len. Nearly every byte of every statement keyed goes through
 * here: sixteen bytes a step with SSE2 (texts of sixteen bytes or more), else one. */
static size_t copy_run_end(const char *s, size_t i, size_t len)
{
#ifdef __SSE2__
    /* signed comparisons: bytes over 0x7f are negative, never within '0'..'9'; the last step
     * overlaps the one before it, with the bytes before i masked off */
    const __m128i squote = _mm_set1_epi8('\''), dquote = _mm_set1_epi8('"'),
                  below0 = _mm_set1_epi8('0' - 1), above9 = _mm_set1_epi8('9' + 1);
    for (; len >= 16 && i < len; i += 16) {
        size_t at = i + 16 <= len ? i : len - 16;
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(s + at));
        __m128i digit = _mm_and_si128(_mm_cmpgt_epi8(x, below0), _mm_cmplt_epi8(x, above9));
        __m128i quote = _mm_or_si128(_mm_cmpeq_epi8(x, squote), _mm_cmpeq_epi8(x, dquote));
        unsigned bits = (unsigned)_mm_movemask_epi8(_mm_or_si128(digit, quote));
        bits = bits >> (i - at) << (i - at);
        if (bits)
            return at + (size_t)__builtin_ctz(bits);
    }
    if (len >= 16)
        return len;
#endif
    while (i < len && key_class[(unsigned char)s[i]] < 2)
        i++;
    return i;
}

/* normalize() with room for the whole text: a key is never longer than its text plus one (a
 * digit run becomes one digit, a string's contents vanish, everything else is copied), so
 * this loop needs no bounds checks, and copies the runs between digits and quotes (classes 2
 * and 3) whole. It gives the same key as the checked loop: a digit is part of an identifier
 * exactly when the byte before it is an identifier byte, because a number's digit run is
 * always taken whole. It runs for nearly every statement. */
static size_t normalize_roomy(const char *s, size_t len, char *key)
{
    size_t o = 0, i = 0;
    key[o++] = 'N';
    while (i < len) {
        size_t j = copy_run_end(s, i, len);
        memcpy(key + o, s + i, j - i);
        o += j - i;
        i = j;
        if (i == len)
            break;
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\'') {
            bool closed;
            j = quoted_end(s, len, i, &closed);
            if (c == '"') {
                memcpy(key + o, s + i, j - i);
                o += j - i;
            } else {
                key[o++] = '\'';
                if (closed)
                    key[o++] = '\'';
            }
        } else if (i > 0 && ident_char((unsigned char)s[i - 1])) {
            /* digits inside an identifier are part of the name, and so is what follows */
            for (j = i; j < len && ident_char((unsigned char)s[j]); j++)
                key[o++] = s[j];
        } else {
            for (j = i; j < len && s[j] >= '0' && s[j] <= '9'; j++)
                ;
            key[o++] = '0';
        }
        i = j;
    }
    return o;
}

static size_t normalize(const char *s, size_t len, char *key, size_t cap)
{
    if (cap > len)
        return normalize_roomy(s, len, key);
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

/* Eight bytes a step, the last eight overlapping the word before them: every statement keyed
 * is hashed once (its key memo keeps the hash). */
uint64_t guard_key_hash(const char *k, size_t n)
{
    uint64_t h = UINT64_C(0x9e3779b97f4a7c15) ^ n, w = 0;
    if (n >= 8) {
        const char *last = k + n - 8;
        for (; k < last; k += 8) {
            memcpy(&w, k, 8);
            h = (h ^ w) * UINT64_C(0xff51afd7ed558ccd);
            h ^= h >> 32;
        }
        memcpy(&w, last, 8); /* the last eight bytes, overlapping the word before them */
    } else {
        for (size_t i = 0; i < n; i++)
            w |= (uint64_t)(unsigned char)k[i] << (8 * i);
    }
    h = (h ^ w) * UINT64_C(0xc4ceb9fe1a85ec53);
    return h ^ (h >> 29);
}

/* The policy's decision cache and the statement statistics key the same text on the same
 * thread, the first when the statement arrives and the second when it ends; between the two
 * the worker's other sessions key theirs. Short texts keyed lately are remembered, so the
 * second costs a comparison instead of another pass. A key is never longer than its text plus
 * one. */
#define MEMO_TEXT 256
#define MEMO_SETS 16 /* a power of two */
#define MEMO_WAYS 2
struct key_memo {
    uint64_t tail;      /* the text's last eight bytes (fewer: all of them), see memo_tail() */
    uint64_t khash;     /* guard_key_hash of the key */
    uint16_t len, klen; /* klen 0: empty */
    char sql[MEMO_TEXT];
    char key[MEMO_TEXT + 1];
};
struct key_memo_set {
    unsigned next; /* the way written next: the older one */
    struct key_memo way[MEMO_WAYS];
};
static _Thread_local struct key_memo_set memo[MEMO_SETS];

/* Texts that differ only in a literal mostly differ near their end, where statements keep
 * their WHERE clause: the last eight bytes pick the set and reject a wrong way without a
 * full comparison, which is the usual case when every statement has literals of its own. */
static uint64_t memo_tail(const char *s, size_t len)
{
    uint64_t w = 0;
    memcpy(&w, len >= 8 ? s + len - 8 : s, len >= 8 ? 8 : len);
    return w;
}

static size_t cache_key(const char *sql, size_t len, char *key, size_t cap, uint64_t *hash,
                        bool remember)
{
    *hash = 0;
    if (cap > GUARD_CACHE_KEY_MAX)
        cap = GUARD_CACHE_KEY_MAX;
    if (cap < 2)
        return 0;
    uint64_t tail = remember && len <= MEMO_TEXT ? memo_tail(sql, len) : 0;
    struct key_memo_set *set =
        remember && len <= MEMO_TEXT
            ? &memo[((tail ^ len) * UINT64_C(0x9e3779b97f4a7c15)) >> 60 & (MEMO_SETS - 1)]
            : NULL;
    for (int w = 0; set && w < MEMO_WAYS; w++) {
        struct key_memo *m = &set->way[w];
        if (m->klen && m->len == len && m->tail == tail && m->klen <= cap &&
            memcmp(m->sql, sql, len) == 0) {
            memcpy(key, m->key, m->klen);
            *hash = m->khash;
            return m->klen;
        }
    }
    size_t klen = compute_key(sql, len, key, cap);
    if (!klen)
        return 0;
    *hash = guard_key_hash(key, klen);
    if (set) {
        struct key_memo *m = &set->way[set->next];
        set->next = (set->next + 1) % MEMO_WAYS;
        m->tail = tail;
        m->khash = *hash;
        m->len = (uint16_t)len;
        m->klen = (uint16_t)klen;
        memcpy(m->sql, sql, len);
        memcpy(m->key, key, klen);
    }
    return klen;
}

size_t guard_cache_key_hashed(const char *sql, size_t len, char *key, size_t cap, uint64_t *hash)
{
    return cache_key(sql, len, key, cap, hash, true);
}

size_t guard_cache_key_once(const char *sql, size_t len, char *key, size_t cap, uint64_t *hash)
{
    return cache_key(sql, len, key, cap, hash, false);
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

bool guard_cache_get(struct guard_cache *c, uint64_t gen, const char *key, size_t klen, uint64_t h,
                     struct guard_decision *out)
{
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
                     uint64_t hash, const struct guard_decision *d)
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
    victim->hash = hash;
    victim->decision = *d;
    victim->used = ++c->tick;
}
