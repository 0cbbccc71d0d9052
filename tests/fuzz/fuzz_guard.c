/* libFuzzer target for the statement policy. The input is one or two SQL texts (split at the
 * first NUL). Each is decided under several policies (deny lists with groups, an allow list
 * with read-only mode, read-only with exceptions, shadow rules beside enforced ones and alone,
 * no policy), with and without a decision
 * cache, and in three steps (precheck, decide, store): every path must give the same answer,
 * which is what makes the cache's literal-abstracting key safe. The audit redaction runs on
 * each text too. Invariant breaks abort(). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "guard.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

#define NPOLICIES 6

static struct guard_policy *policies[NPOLICIES]; /* the last one stays NULL: no rules */

static void make_policies(void)
{
    static const char *const deny[] = {"drop",
                                       "truncate",
                                       "alter_system",
                                       "function:pg_sleep",
                                       "set",
                                       "group:file_access",
                                       "group:signal",
                                       "shadow:delete",
                                       "shadow:function:now",
                                       "shadow:group:sleep"};
    static const char *const sdeny[] = {"shadow:drop", "shadow:function:pg_sleep",
                                        "shadow:group:signal"};
    static const char *const sallow[] = {"shadow:select", "shadow:show", "shadow:function:count"};
    static const char *const allow[] = {"select", "show", "transaction"};
    static const char *const fallow[] = {"select", "function:count", "group:sleep"};
    static const char *const permit[] = {"function:query_to_xml", "group:large_object", "do"};
    char err[256];
    struct guard_rules r0 = {.deny = deny, .ndeny = sizeof deny / sizeof deny[0]};
    struct guard_rules r1 = {.allow = allow, .nallow = 3, .read_only = true};
    struct guard_rules r2 = {.read_only = true, .permit = permit, .npermit = 3};
    struct guard_rules r3 = {.allow = fallow, .nallow = 3, .max_parse = 1000};
    struct guard_rules r4 = {.deny = sdeny, .ndeny = 3, .allow = sallow, .nallow = 3};
    policies[0] = guard_policy_compile(&r0, err, sizeof err);
    policies[1] = guard_policy_compile(&r1, err, sizeof err);
    policies[2] = guard_policy_compile(&r2, err, sizeof err);
    policies[3] = guard_policy_compile(&r3, err, sizeof err);
    policies[4] = guard_policy_compile(&r4, err, sizeof err);
    CHECK(policies[0] && policies[1] && policies[2] && policies[3] && policies[4]);
}

static void check_decision(const struct guard_decision *d, size_t len)
{
    CHECK(d->verdict >= GUARD_ALLOW && d->verdict <= GUARD_TOO_COMPLEX);
    CHECK(memchr(d->rule, 0, sizeof(d->rule)) && memchr(d->message, 0, sizeof(d->message)));
    CHECK(memchr(d->shadow_rule, 0, sizeof(d->shadow_rule)));
    CHECK(d->verdict == GUARD_ALLOW || d->shadow_rule[0] == 0); /* a refusal has no shadow */
    CHECK(d->cursorpos >= 0 && (size_t)d->cursorpos <= len + 1);
    if (d->verdict != GUARD_ALLOW)
        CHECK(d->rule[0] != 0 && d->message[0] != 0);
}

static bool same(const struct guard_decision *a, const struct guard_decision *b)
{
    return a->verdict == b->verdict && strcmp(a->rule, b->rule) == 0 &&
           strcmp(a->message, b->message) == 0 && a->cursorpos == b->cursorpos &&
           strcmp(a->shadow_rule, b->shadow_rule) == 0;
}

/* The three steps by hand, as a session with a parser pool does them. */
static int stepwise(const struct guard_policy *p, struct guard_cache *c, const char *sql,
                    size_t len, struct guard_decision *out)
{
    struct guard_cache_key key;
    bool cacheable = false;
    if (guard_precheck(p, c, sql, len, 0, out, &key) == 0)
        return 0;
    int rc = guard_decide(p, sql, len, out, &cacheable);
    if (rc == 0 && cacheable)
        guard_cache_store(c, p, &key, out);
    return rc;
}

/* Decides sql without a cache, then through caches (a miss, then maybe a hit). */
static void decide(const struct guard_policy *p, struct guard_cache *cache,
                   struct guard_cache *cache2, const char *sql)
{
    size_t len = strlen(sql);
    struct guard_decision plain, cached;
    if (guard_check(p, NULL, sql, len, &plain) != 0)
        return; /* -ENOMEM */
    check_decision(&plain, len);
    if (!guard_policy_enforces(p)) /* no rules, or shadow ones: nothing is refused but COPY */
        CHECK(plain.verdict == GUARD_ALLOW || plain.verdict == GUARD_COPY);
    if (!p)
        CHECK(plain.verdict == GUARD_ALLOW);
    for (int i = 0; i < 2; i++) {
        if (guard_check(p, cache, sql, len, &cached) != 0)
            return;
        CHECK(same(&plain, &cached));
        if (stepwise(p, cache2, sql, len, &cached) != 0)
            return;
        CHECK(same(&plain, &cached));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    if (!policies[0])
        make_policies();
    char *text = malloc(size + 2);
    CHECK(text);
    memcpy(text, data, size);
    text[size] = text[size + 1] = 0;
    const char *a = text;
    const char *b = text + strlen(text) + 1; /* empty when there was no NUL */

    for (int i = 0; i < NPOLICIES; i++) {
        struct guard_cache *cache = guard_cache_new(), *cache2 = guard_cache_new();
        CHECK(cache && cache2);
        /* b after a shares a's cache: if their keys collide, b must still be decided as b */
        decide(policies[i], cache, cache2, a);
        decide(policies[i], cache, cache2, b);
        decide(policies[i], cache, cache2, a);
        guard_cache_free(cache);
        guard_cache_free(cache2);
    }
    char *r = guard_redact(a, strlen(a), 0);
    CHECK(r);
    free(r);
    free(text);
    return 0;
}
