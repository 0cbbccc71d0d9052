/* libFuzzer target: fuzzer bytes become deep and wide statements, every nesting construct of
 * PostgreSQL 15's grammar chained and mixed up to (and past) a parse ceiling, decided by the
 * policy, redacted and fingerprinted on a thread with exactly guard_parse_stack_bytes() of
 * stack. A crash is a stack bound that does not hold; a 54001 must come exactly when the text
 * is over the ceiling. Input: pairs of (construct, repeat) bytes; the rest picks nothing. */
#include <pg_query.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "guard.h"
#include "guard_pool.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

#define CEILING 32000 /* small: a run covers many shapes; the bound is linear in it */

/* Left-recursive chains: each repeat adds one level of the tree to the left. */
static const char *const chains[] = {
    "+1",
    "||'a'",
    "::int",
    "->1",
    " cross join t",
    " union select 1",
    " at time zone 'utc'",
    " collate \"C\"",
    " is null",
    ",1",
    " and true",
    "[1]",
    ".f",
    " natural join t",
    " intersect select 1",
    "#1",
    " is not true",
    " or a",
    "*a",
    "::t[]",
};

/* Nesting constructs: an opening, and what closes it at the end. */
static const char *const nests[][2] = {
    {"(", ")"},
    {"f(", ")"},
    {"not ", ""},
    {"- ", ""},
    {"array[", "]"},
    {"row(", ")"},
    {"(select ", ")"},
    {"case when true then ", " end"},
    {"coalesce(", ")"},
    {"exists(select ", ")"},
    {"set_config(", ",'b',false)"},
    {"query_to_xml(", ",true,false,'')"},
    {"(select 1 from (select ", ") s)"},
    {"1 in (select ", ")"},
    {"cast(", " as int)"},
    {"pg_sleep(", ")"},
};

#define NCHAINS (sizeof chains / sizeof chains[0])
#define NNESTS  (sizeof nests / sizeof nests[0])

struct text {
    char *p;
    size_t n, cap;
};

static void put(struct text *t, const char *s)
{
    size_t n = strlen(s);
    if (t->n + n + 1 > t->cap)
        return; /* the generator stops growing at its cap */
    memcpy(t->p + t->n, s, n);
    t->n += n;
    t->p[t->n] = 0;
}

static char *generate(const uint8_t *data, size_t size)
{
    struct text t = {malloc(CEILING * 2), 0, CEILING * 2};
    CHECK(t.p);
    const char *closes[64];
    size_t nclose = 0;
    put(&t, "select ");
    for (size_t i = 0; i + 1 < size; i += 2) {
        unsigned op = data[i], reps = data[i + 1];
        if (op & 0x80) {
            const char *const *n = nests[op % NNESTS];
            for (unsigned r = 0; r < reps && nclose < 64; r++) {
                put(&t, n[0]);
                closes[nclose++] = n[1];
            }
            if (nclose == 64) {
                /* deeper than the list: close as we go */
                put(&t, "1");
                while (nclose)
                    put(&t, closes[--nclose]);
            }
        } else {
            put(&t, "1");
            for (unsigned r = 0; r < reps * 16u; r++)
                put(&t, chains[op % NCHAINS]);
        }
    }
    put(&t, "1");
    while (nclose)
        put(&t, closes[--nclose]);
    return t.p;
}

static struct guard_policy *policy;
static struct guard_stack stack;

static void *run(void *arg)
{
    const char *sql = arg;
    size_t len = strlen(sql);
    struct guard_decision d;
    if (guard_check(policy, NULL, sql, len, &d) == 0) {
        CHECK(d.verdict >= GUARD_ALLOW && d.verdict <= GUARD_TOO_COMPLEX);
        CHECK((d.verdict == GUARD_TOO_COMPLEX) == (len > CEILING));
    }
    char *r = guard_redact(sql, len, CEILING);
    CHECK(r);
    free(r);
    if (len <= CEILING) {
        PgQueryFingerprintResult f = pg_query_fingerprint(sql);
        pg_query_free_fingerprint_result(f);
    }
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!policy) {
        static const char *const deny[] = {"drop", "function:pg_sleep", "group:sql_text"};
        struct guard_rules r = {.deny = deny, .ndeny = 3, .read_only = true, .max_parse = CEILING};
        char err[256];
        policy = guard_policy_compile(&r, err, sizeof err);
        CHECK(policy);
        CHECK(guard_stack_alloc(&stack, guard_parse_stack_bytes(CEILING)) == 0);
    }
    char *sql = generate(data, size);
    pthread_t th;
    CHECK(guard_thread_start(&th, &stack, run, sql) == 0);
    pthread_join(th, NULL);
    free(sql);
    return 0;
}
