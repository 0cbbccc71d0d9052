/* What bounds a decision: the stack a parse needs (guard_parse_stack_bytes is proven here on
 * the worst shapes at the ceiling, on a thread with exactly that stack, and shown to be needed:
 * a quarter of it crashes), the work of the walk (linear in the text: a counter, not a timer),
 * and the memory of a parse (the factor docs/policy.md states). Each run forks a child, so a
 * crash is a result, not the end of the test program. */
#include <pg_query.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "guard_pool.h"
#include "guard_test.h"

#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

/* The default ceiling; sanitizers make every byte slower and bigger, so they prove a smaller
 * one (the bound is linear: the shapes scale with it). */
#define CEILING (SANITIZED ? (size_t)100000 : GUARD_DEFAULT_MAX_PARSE)

struct shape {
    const char *name, *head, *unit, *tail;
    bool normalize; /* pg_query_normalize is only run on chains: a wide list costs it 4000x */
};

/* The cheapest text per nesting level of every construct that nests without bound in
 * PostgreSQL 15's grammar, and the deepest of those bison caps at 10,000 levels. */
static const struct shape shapes[] = {
    {"a_expr chain", "select 1", "+1", "", true},
    {"custom operator chain", "select 1", "#1", "", true},
    {"cast chain", "select 1", "::t", "", true},
    {"json operator chain", "select a", "->1", "", true},
    {"cross join chain", "select 1 from t", " cross join t", "", true},
    {"union chain", "select 1", " union select 1", "", true},
    {"at time zone chain", "select a", " at time zone a", "", true},
    {"collate chain", "select a", " collate c", "", true},
    {"backslash, both readings", "select 'x\\' , 1", "+1", "", false},
    {"not then chain", "select not not not not not not not not not not 1", "+1", "", true},
};

static char *build(const struct shape *s, size_t ceiling)
{
    size_t fixed = strlen(s->head) + strlen(s->tail);
    return gt_repeat(s->head, s->unit, (ceiling - fixed) / strlen(s->unit), s->tail);
}

/* f(f(f(...))) and NOT NOT ... as deep as bison allows, with a chain filling the rest. */
static char *build_capped(const char *open, const char *close, size_t levels, size_t ceiling)
{
    char *inner = gt_repeat("", open, levels, "1");
    size_t used = strlen(inner) + levels * strlen(close) + 8;
    char *chain = gt_repeat(inner, "+1", ceiling > used ? (ceiling - used) / 2 : 0, "");
    char *closes = gt_repeat("", close, levels, "");
    size_t n = 7 + strlen(chain) + strlen(closes);
    char *q = malloc(n + 1);
    snprintf(q, n + 1, "select %s%s", chain, closes);
    free(inner);
    free(chain);
    free(closes);
    return q;
}

struct job {
    char **texts;
    size_t n;
    const bool *normalize;
    size_t ceiling;
};

static void *run_all(void *arg)
{
    struct job *j = arg;
    struct guard_rules r = {.read_only = true, .max_parse = j->ceiling};
    const char *deny[] = {"drop", "function:pg_sleep"};
    r.deny = deny;
    r.ndeny = 2;
    char err[128];
    struct guard_policy *p = guard_policy_compile(&r, err, sizeof err);
    for (size_t i = 0; i < j->n; i++) {
        const char *q = j->texts[i];
        struct guard_decision d;
        if (guard_check(p, NULL, q, strlen(q), &d) != 0 || d.verdict == GUARD_TOO_COMPLEX)
            _exit(10 + (int)i);
        free(guard_redact(q, strlen(q), j->ceiling));
        PgQueryFingerprintResult f = pg_query_fingerprint(q);
        pg_query_free_fingerprint_result(f);
        if (j->normalize[i]) {
            PgQueryNormalizeResult nr = pg_query_normalize(q);
            pg_query_free_normalize_result(nr);
        }
    }
    guard_policy_free(p);
    return NULL;
}

/* Runs every shape in a child on a thread with stack bytes of stack; returns its wait status. */
static int run_child(struct job *j, size_t stack)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        struct guard_stack s;
        pthread_t th;
        if (guard_stack_alloc(&s, stack) || guard_thread_start(&th, &s, run_all, j))
            _exit(3);
        pthread_join(th, NULL);
        _exit(0);
    }
    int st = 0;
    assert_true(pid > 0);
    assert_int_equal(waitpid(pid, &st, 0), pid);
    return st;
}

static void test_stack_bound(void **state)
{
    (void)state;
    size_t n = sizeof shapes / sizeof shapes[0];
    char *texts[sizeof shapes / sizeof shapes[0] + 2];
    bool norm[sizeof shapes / sizeof shapes[0] + 2];
    for (size_t i = 0; i < n; i++) {
        texts[i] = build(&shapes[i], CEILING);
        assert_true(strlen(texts[i]) <= CEILING);
        norm[i] = shapes[i].normalize;
    }
    texts[n] = build_capped("f(", ")", 4990, CEILING);
    texts[n + 1] = build_capped("not ", "", 9990, CEILING);
    norm[n] = norm[n + 1] = true;
    struct job j = {texts, n + 2, norm, CEILING};

    int st = run_child(&j, guard_parse_stack_bytes(CEILING));
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("worst shapes at a %zu-byte ceiling did not run on %zu bytes of stack "
                 "(status %d)",
                 CEILING, guard_parse_stack_bytes(CEILING), st);
    /* the bound is not generous for nothing: on a quarter of it the stack overflows into the
     * guard page (a sanitizer reports that and exits 1 instead) */
    st = run_child(&j, guard_parse_stack_bytes(CEILING) / 4);
    if (!(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV) &&
        !(SANITIZED && WIFEXITED(st) && WEXITSTATUS(st) == 1))
        fail_msg("a quarter of the stack bound did not overflow (status %d)", st);
    for (size_t i = 0; i < n + 2; i++)
        free(texts[i]);
}

/* Bytes the walk examines grow like the text, for the shapes that were quadratic (nested
 * set_config, nested calls) and the wide and deep ones. */
static void *linear_walk(void *arg)
{
    char *failure = arg; /* cmocka's asserts belong on the main thread */
    static const struct {
        const char *open, *leaf, *close;
        size_t n;
    } nest[] = {
        {"set_config(", "'a'", ",'b',false)", 600},
        {"f(", "1", ")", 600},
        {"coalesce(", "1", ")", 600},
        {"(select ", "1", ")", 400},
    };
    static const struct {
        const char *head, *unit;
        size_t n;
    } flat[] = {
        {"select 1", ",1", 20000},
        {"select 1", "+1", 20000},
        {"select 1", " union select 1", 4000},
        {"select 1 from t", " cross join t", 4000},
        {"select 1", ",set_config('a','b',false)", 2000},
    };
    struct guard_policy *p = gt_policy("drop,function:pg_sleep", NULL, NULL, true);
    for (size_t i = 0; i < sizeof nest / sizeof nest[0] + sizeof flat / sizeof flat[0]; i++) {
        size_t v[3], len[3];
        for (size_t k = 0; k < 3; k++) {
            char *q;
            if (i < sizeof nest / sizeof nest[0]) {
                size_t n = nest[i].n << k;
                char *open = gt_repeat("select ", nest[i].open, n, nest[i].leaf);
                q = gt_repeat(open, nest[i].close, n, "");
                free(open);
            } else {
                size_t f = i - sizeof nest / sizeof nest[0];
                q = gt_repeat(flat[f].head, flat[f].unit, flat[f].n << k, "");
            }
            len[k] = strlen(q);
            v[k] = guard_decide_visits(p, q, len[k]);
            free(q);
        }
        for (size_t k = 1; k < 3; k++)
            if (v[k] > 2.2 * (double)v[k - 1] || v[k] < 1.8 * (double)v[k - 1])
                snprintf(failure, 256,
                         "shape %zu: %zu bytes visited for %zu bytes of text, then %zu for %zu", i,
                         v[k - 1], len[k - 1], v[k], len[k]);
        /* the JSON is at most ~80 bytes per byte of text, and each is examined about once */
        if (v[2] > 128 * len[2])
            snprintf(failure, 256, "shape %zu: %zu visits for %zu bytes", i, v[2], len[2]);
    }
    guard_policy_free(p);
    return NULL;
}

static void test_linear_walk(void **state)
{
    (void)state;
    struct guard_stack s;
    pthread_t th;
    char failure[256] = "";
    /* a parse needs its stack: the main thread's 8 MB is too little for 160 kB of 1+1+... */
    assert_int_equal(guard_stack_alloc(&s, guard_parse_stack_bytes(GUARD_DEFAULT_MAX_PARSE)), 0);
    assert_int_equal(guard_thread_start(&th, &s, linear_walk, failure), 0);
    pthread_join(th, NULL);
    guard_stack_free(&s);
    if (failure[0])
        fail_msg("%s", failure);
}

struct given_back {
    const struct guard_stack *s;
    size_t resident_before, resident_after; /* pages of the stack's deep part */
};

static size_t resident_pages(const struct guard_stack *s, size_t len)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE), n = len / page, count = 0;
    unsigned char *vec = malloc(n);
    char *lo = (char *)s->map + (s->map_len - s->size);
    if (mincore(lo, n * page, vec) == 0)
        for (size_t i = 0; i < n; i++)
            count += vec[i] & 1;
    free(vec);
    return count;
}

static void *decide_big(void *arg)
{
    struct given_back *g = arg;
    struct guard_policy *p = gt_policy("drop", NULL, NULL, false);
    char *q = gt_repeat("select 1", "+1", 400000, "");
    /* the deep end: the lowest 16 MB of a stack the parse needs ~50 MB of */
    g->resident_before = resident_pages(g->s, (size_t)16 << 20);
    struct guard_decision d;
    guard_check(p, NULL, q, strlen(q), &d);
    g->resident_after = resident_pages(g->s, (size_t)16 << 20);
    free(q);
    guard_policy_free(p);
    return NULL;
}

/* After a big parse the deep part of the thread's stack is given back, not left resident. */
static void test_stack_given_back(void **state)
{
    (void)state;
    struct guard_stack s;
    pthread_t th;
    size_t need = guard_parse_stack_bytes(1000000);
    assert_int_equal(guard_stack_alloc(&s, need), 0);
    /* touch all of it first, as a parse that went deep would have */
    memset((char *)s.map + (s.map_len - s.size), 1, s.size - ((size_t)1 << 20));
    struct given_back g = {&s, 0, 0};
    assert_int_equal(guard_thread_start(&th, &s, decide_big, &g), 0);
    pthread_join(th, NULL);
    guard_stack_free(&s);
    assert_true(g.resident_before > 1000);
    assert_int_equal(g.resident_after, 0);
}

static long max_rss_kb(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_maxrss;
}

static void *decide_one(void *arg)
{
    struct job *j = arg;
    struct guard_policy *p = gt_policy("drop", NULL, NULL, true);
    struct guard_decision d;
    long before = max_rss_kb();
    guard_check(p, NULL, j->texts[0], strlen(j->texts[0]), &d);
    long grew = max_rss_kb() - before;
    guard_policy_free(p);
    /* the factor docs/policy.md states is 270; a little room for the allocator */
    _exit(grew * 1024 <= 320 * (long)strlen(j->texts[0]) ? 0 : 1);
}

/* Peak memory of one decision, in multiples of the text's size. */
static void test_memory_factor(void **state)
{
    (void)state;
    if (SANITIZED)
        skip(); /* the sanitizer's own allocator and shadow memory are not the proxy's */
    size_t ceiling = 250000;
    char *q = gt_repeat("select 1", "+1", (ceiling - 8) / 2, "");
    struct job j = {&q, 1, NULL, ceiling};
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        struct guard_stack s;
        pthread_t th;
        /* touch the stack first: the measure is the heap, the stack is given back apart */
        if (guard_stack_alloc(&s, guard_parse_stack_bytes(ceiling)))
            _exit(3);
        memset((char *)s.map + (s.map_len - s.size), 0, s.size);
        if (guard_thread_start(&th, &s, decide_one, &j))
            _exit(3);
        pthread_join(th, NULL);
        _exit(4);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    free(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear_walk),
        cmocka_unit_test(test_memory_factor),
        cmocka_unit_test(test_stack_given_back),
        cmocka_unit_test(test_stack_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
