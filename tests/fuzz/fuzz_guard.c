/* libFuzzer target for the statement policy. The input is one or two SQL texts (split at the
 * first NUL). Each is decided under a deny policy, an allow + read-only policy and no policy,
 * with and without a decision cache: a cached answer must equal the uncached one, which is
 * what makes the cache's literal-abstracting key safe. The deny policy under --copy allow
 * never answers with the COPY verdict, and decides every text the same as without it unless
 * that was a COPY verdict. Invariant breaks abort(). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "guard.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

#define NPOLICIES 3

static struct guard_policy *policies[NPOLICIES]; /* the last one stays NULL: no rules */
static struct guard_policy *copy_deny;           /* policies[0] under --copy allow */

static void make_policies(void)
{
    static const char *const deny[] = {"drop", "truncate", "alter_system", "function:pg_sleep",
                                       "set"};
    static const char *const allow[] = {"select", "show"};
    char err[256];
    policies[0] =
        guard_policy_new(deny, sizeof(deny) / sizeof(deny[0]), NULL, 0, false, err, sizeof(err));
    policies[1] =
        guard_policy_new(NULL, 0, allow, sizeof(allow) / sizeof(allow[0]), true, err, sizeof(err));
    copy_deny =
        guard_policy_new(deny, sizeof(deny) / sizeof(deny[0]), NULL, 0, false, err, sizeof(err));
    CHECK(policies[0] && policies[1] && copy_deny);
    guard_policy_allow_copy(copy_deny);
}

static bool same(const struct guard_decision *a, const struct guard_decision *b);

/* --copy allow only takes the COPY verdict away. */
static void compare_copy_allowed(const char *sql)
{
    size_t len = strlen(sql);
    struct guard_decision rejected, allowed;
    if (guard_check(policies[0], NULL, sql, len, &rejected) != 0 ||
        guard_check(copy_deny, NULL, sql, len, &allowed) != 0)
        return; /* -ENOMEM */
    CHECK(allowed.verdict != GUARD_COPY);
    if (rejected.verdict != GUARD_COPY)
        CHECK(same(&rejected, &allowed));
}

static void check_decision(const struct guard_decision *d, size_t len)
{
    CHECK(d->verdict >= GUARD_ALLOW && d->verdict <= GUARD_SYNTAX);
    CHECK(memchr(d->rule, 0, sizeof(d->rule)) && memchr(d->message, 0, sizeof(d->message)));
    CHECK(d->cursorpos >= 0 && (size_t)d->cursorpos <= len + 1);
    if (d->verdict != GUARD_ALLOW)
        CHECK(d->rule[0] != 0 && d->message[0] != 0);
}

static bool same(const struct guard_decision *a, const struct guard_decision *b)
{
    return a->verdict == b->verdict && strcmp(a->rule, b->rule) == 0 &&
           strcmp(a->message, b->message) == 0 && a->cursorpos == b->cursorpos;
}

/* Decides sql without a cache, then twice through cache (a miss, then maybe a hit). */
static void decide(const struct guard_policy *p, struct guard_cache *cache, const char *sql)
{
    size_t len = strlen(sql);
    struct guard_decision plain, cached;
    if (guard_check(p, NULL, sql, len, &plain) != 0)
        return; /* -ENOMEM */
    check_decision(&plain, len);
    for (int i = 0; i < 2; i++) {
        if (guard_check(p, cache, sql, len, &cached) != 0)
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
        struct guard_cache *cache = guard_cache_new();
        CHECK(cache);
        /* b after a shares a's cache: if their keys collide, b must still be decided as b */
        decide(policies[i], cache, a);
        decide(policies[i], cache, b);
        decide(policies[i], cache, a);
        guard_cache_free(cache);
    }
    compare_copy_allowed(a);
    compare_copy_allowed(b);
    free(text);
    return 0;
}
