/* Statement fingerprints for the statistics: a text over the bound is never parsed (whatever
 * its nesting), texts that differ only in literals share a fingerprint and a cache entry, the
 * kind comes from the parse tree, and a syntax error is reported as such. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "guard_fingerprint.h"

#pragma GCC diagnostic ignored "-Wunused-parameter"

#define BOUND (16 * 1024)

/* Every other call as if the policy had keyed the text first: both ways find the same entry. */
static struct guard_fp fingerprint(struct guard_fp_cache *c, const char *sql)
{
    static bool keyed;
    keyed = !keyed;
    struct guard_fp f;
    assert_int_equal(guard_fingerprint(c, sql, strlen(sql), BOUND, keyed, &f), 0);
    return f;
}

static void test_large_texts_are_not_parsed(void **state)
{
    /* one byte over the bound, nested deeper than bison's cap: parsing it would fail or need
     * a stack the worker does not have */
    size_t n = BOUND + 1;
    char *deep = malloc(n + 1);
    assert_non_null(deep);
    memcpy(deep, "select ", 7);
    memset(deep + 7, '(', n - 7);
    deep[n] = 0;
    struct guard_fp_cache *c = guard_fp_cache_new();
    struct guard_fp f = fingerprint(c, deep);
    assert_true(f.large);
    assert_false(f.parsed);
    assert_string_equal(f.kind, "other");
    uint64_t hits, misses;
    guard_fp_cache_counts(c, &hits, &misses);
    assert_int_equal(hits + misses, 0); /* not even looked up */
    /* at the bound exactly it is parsed (and is a syntax error) */
    deep[BOUND] = 0;
    f = fingerprint(c, deep);
    assert_false(f.large);
    assert_true(f.parsed && f.syntax);
    guard_fp_cache_free(c);
    free(deep);
}

static void test_literals_share_a_fingerprint(void **state)
{
    struct guard_fp_cache *c = guard_fp_cache_new();
    struct guard_fp a = fingerprint(c, "select * from t where a = 1 and b = 'x'");
    struct guard_fp b = fingerprint(c, "select * from t where a = 22 and b = 'yy'");
    assert_true(a.parsed);
    assert_false(b.parsed); /* the same shape: a cache hit */
    assert_int_equal(a.fp, b.fp);
    assert_true(a.fp > 1); /* 0 and 1 name <large statement> and <syntax error> */
    /* a different shape the cache has not seen, with the same fingerprint (aliases and case
     * do not count) */
    struct guard_fp d = fingerprint(c, "SELECT * FROM t AS t WHERE a = 3 AND b = 'z'");
    assert_true(d.parsed);
    assert_int_equal(d.fp, a.fp);
    struct guard_fp e = fingerprint(c, "select * from t where a = 1 or b = 'x'");
    assert_true(e.fp != a.fp);
    uint64_t hits, misses;
    guard_fp_cache_counts(c, &hits, &misses);
    assert_int_equal(hits, 1);
    assert_int_equal(misses, 3);
    /* without a cache: the same answer, parsed each time */
    struct guard_fp n = fingerprint(NULL, "select * from t where a = 5 and b = ''");
    assert_true(n.parsed);
    assert_int_equal(n.fp, a.fp);
    guard_fp_cache_free(c);
}

static void test_kinds(void **state)
{
    assert_string_equal(fingerprint(NULL, "select 1").kind, "select");
    assert_string_equal(fingerprint(NULL, "insert into t values (1)").kind, "insert");
    assert_string_equal(fingerprint(NULL, "truncate t").kind, "truncate");
    assert_string_equal(fingerprint(NULL, "select 1; select 2").kind, "multi");
    assert_string_equal(fingerprint(NULL, "select '{\"stmt\":{\"x' ").kind, "select");
    assert_string_equal(fingerprint(NULL, " ; ").kind, "empty");
}

static void test_syntax_error(void **state)
{
    struct guard_fp f = fingerprint(NULL, "selec 1");
    assert_true(f.syntax);
    assert_string_equal(f.kind, "other");
    /* the length bounds the text: what follows is not read */
    struct guard_fp g;
    assert_int_equal(guard_fingerprint(NULL, "select 1 garbage(", 8, BOUND, false, &g), 0);
    assert_false(g.syntax);
    assert_string_equal(g.kind, "select");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_large_texts_are_not_parsed),
        cmocka_unit_test(test_literals_share_a_fingerprint),
        cmocka_unit_test(test_kinds),
        cmocka_unit_test(test_syntax_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
