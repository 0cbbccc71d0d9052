/* libFuzzer target for the statement policy. The input is one or two SQL texts (split at the
 * first NUL). Each is decided under several policies (deny lists with groups, an allow list
 * with read-only mode, read-only with exceptions, shadow rules beside enforced ones and alone,
 * no rules under --copy reject and --copy allow, no policy), with and without a decision cache,
 * and in three steps (precheck, decide, store): every path must give the same answer,
 * which is what makes the cache's literal-abstracting key safe. --copy allow (relay_copy) only
 * changes the answer for a text refused with the COPY verdict, which it then decides as kind
 * copy; without rules, --copy reject refuses nothing but COPY and --copy allow nothing at all.
 * The audit redaction runs on each text too. Invariant breaks abort(). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "guard.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

#define NPOLICIES 8

static struct guard_policy *policies[NPOLICIES]; /* the last one stays NULL: no policy */
/* policies[0] under --copy allow, without and with a deny copy rule */
static struct guard_policy *copy_relayed, *copy_denied;

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
    struct guard_rules r5 = {0};                  /* no rules, --copy reject */
    struct guard_rules r6 = {.relay_copy = true}; /* no rules, --copy allow */
    policies[0] = guard_policy_compile(&r0, err, sizeof err);
    policies[1] = guard_policy_compile(&r1, err, sizeof err);
    policies[2] = guard_policy_compile(&r2, err, sizeof err);
    policies[3] = guard_policy_compile(&r3, err, sizeof err);
    policies[4] = guard_policy_compile(&r4, err, sizeof err);
    policies[5] = guard_policy_compile(&r5, err, sizeof err);
    policies[6] = guard_policy_compile(&r6, err, sizeof err);
    for (int i = 0; i < NPOLICIES - 1; i++)
        CHECK(policies[i]);
    const char *deny_copy[sizeof deny / sizeof deny[0] + 1];
    memcpy(deny_copy, deny, sizeof deny);
    deny_copy[sizeof deny / sizeof deny[0]] = "copy";
    r0.relay_copy = true;
    copy_relayed = guard_policy_compile(&r0, err, sizeof err);
    r0.deny = deny_copy;
    r0.ndeny++;
    copy_denied = guard_policy_compile(&r0, err, sizeof err);
    CHECK(copy_relayed && copy_denied);
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

/* --copy allow against --copy reject under the same rules, and both without rules. */
static void compare_copy(const char *sql)
{
    size_t len = strlen(sql);
    struct guard_decision rejected, relayed, denied, bare, bare_relayed;
    if (guard_check(policies[0], NULL, sql, len, &rejected) ||
        guard_check(copy_relayed, NULL, sql, len, &relayed) ||
        guard_check(copy_denied, NULL, sql, len, &denied) ||
        guard_check(policies[5], NULL, sql, len, &bare) ||
        guard_check(policies[6], NULL, sql, len, &bare_relayed))
        return; /* -ENOMEM */
    check_decision(&relayed, len);
    check_decision(&denied, len);
    CHECK(relayed.verdict != GUARD_COPY && denied.verdict != GUARD_COPY);
    if (rejected.verdict != GUARD_COPY)
        CHECK(same(&rejected, &relayed)); /* no COPY sub-protocol: nothing changes */
    else
        CHECK(denied.verdict == GUARD_DENY); /* the COPY is decided as kind copy */
    /* without rules: a text is parsed only to find a COPY (refused as such) under --copy
     * reject, never under --copy allow */
    CHECK(bare.verdict == GUARD_ALLOW || bare.verdict == GUARD_COPY);
    CHECK(bare_relayed.verdict == GUARD_ALLOW && bare_relayed.shadow_rule[0] == 0);
    if (bare.verdict == GUARD_COPY) /* a COPY the rules see too */
        CHECK(rejected.verdict != GUARD_ALLOW);
    bool first_copy = strncasecmp(sql, "copy", 4) == 0 && (sql[4] == ' ' || sql[4] == '\n');
    if (rejected.verdict == GUARD_COPY && first_copy)
        CHECK(bare.verdict == GUARD_COPY); /* its first keyword is COPY: parsed without rules */
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
    compare_copy(a);
    compare_copy(b);
    char *r = guard_redact(a, strlen(a), 0);
    CHECK(r);
    free(r);
    free(text);
    return 0;
}
