/* The statement statistics table: counting, the bound with least-recently-used eviction, a
 * smaller bound after a reload, merging the copies of several workers, and the orders and
 * spellings the console and /metrics show. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "stmt_stats.h"

#pragma GCC diagnostic ignored "-Wunused-parameter"

static struct stmt_stats_row *touch(struct stmt_stats *t, size_t cap, uint64_t fp, int64_t now,
                                    bool *created)
{
    struct stmt_stats_row *r = stmt_stats_touch(t, cap, fp, "select", now, created);
    assert_non_null(r);
    return r;
}

static bool has(struct stmt_stats *t, uint64_t fp)
{
    size_t n;
    struct stmt_stats_row *rows = stmt_stats_export(t, false, &n);
    bool found = false;
    for (size_t i = 0; i < n; i++)
        found |= rows[i].fp == fp;
    stmt_stats_rows_free(rows, n);
    return found;
}

static void test_counts(void **state)
{
    struct stmt_stats *t = stmt_stats_new();
    bool created;
    struct stmt_stats_row *r = touch(t, 10, 42, 100, &created);
    assert_true(created);
    stmt_stats_add(r, STMT_STATS_OK, 1500, 3, 300);
    r = touch(t, 10, 42, 200, &created);
    assert_false(created);
    stmt_stats_add(r, STMT_STATS_ERROR, 500, 0, 0);
    stmt_stats_add(r, STMT_STATS_DENIED, 0, 0, 0);
    stmt_stats_add(r, STMT_STATS_LIMITED, 9000, 10, 1000);
    assert_int_equal(r->calls, 4);
    assert_int_equal(r->errors, 1);
    assert_int_equal(r->denied, 1);
    assert_int_equal(r->limited, 1);
    assert_int_equal(r->total_us, 11000);
    assert_int_equal(r->max_us, 9000);
    assert_int_equal(r->rows, 13);
    assert_int_equal(r->bytes, 1300);
    assert_int_equal(r->last_us, 200);
    assert_string_equal(r->kind, "select");
    assert_int_equal(stmt_stats_count(t), 1);
    assert_null(stmt_stats_touch(t, 0, 43, "select", 300, &created)); /* statistics off */
    assert_false(created);
    stmt_stats_free(t);
}

/* The bound holds, and the one evicted is the least recently used, not the oldest. */
static void test_lru_eviction(void **state)
{
    struct stmt_stats *t = stmt_stats_new();
    bool created;
    for (uint64_t fp = 10; fp < 13; fp++)
        stmt_stats_add(touch(t, 3, fp, (int64_t)fp, &created), STMT_STATS_OK, 1, 0, 0);
    touch(t, 3, 10, 20, &created); /* 10 is used again: 11 is now the least recent */
    assert_false(created);
    touch(t, 3, 13, 21, &created);
    assert_true(created);
    assert_int_equal(stmt_stats_count(t), 3);
    assert_false(has(t, 11));
    assert_true(has(t, 10) && has(t, 12) && has(t, 13));
    /* a thousand new shapes through a table of three: never more than three */
    for (uint64_t fp = 100; fp < 1100; fp++) {
        touch(t, 3, fp, (int64_t)fp, &created);
        assert_true(stmt_stats_count(t) <= 3);
    }
    assert_true(has(t, 1099) && has(t, 1098) && has(t, 1097));
    /* the evicted row starts again from zero when it comes back */
    struct stmt_stats_row *r = touch(t, 3, 10, 5000, &created);
    assert_true(created);
    assert_int_equal(r->calls, 0);
    assert_null(r->sample);
    stmt_stats_free(t);
}

/* A reload to a smaller bound: the next new row makes room down to it. */
static void test_smaller_bound(void **state)
{
    struct stmt_stats *t = stmt_stats_new();
    bool created;
    for (uint64_t fp = 2; fp < 202; fp++)
        touch(t, 500, fp, (int64_t)fp, &created);
    assert_int_equal(stmt_stats_count(t), 200);
    touch(t, 10, 1000, 1000, &created);
    assert_int_equal(stmt_stats_count(t), 10);
    assert_true(has(t, 1000) && has(t, 201) && has(t, 193));
    assert_false(has(t, 192));
    for (uint64_t fp = 5000; fp < 5300; fp++) /* the freed nodes are reused */
        touch(t, 300, fp, (int64_t)fp, &created);
    assert_int_equal(stmt_stats_count(t), 300);
    stmt_stats_free(t);
}

static void test_export_order(void **state)
{
    struct stmt_stats *t = stmt_stats_new();
    bool created;
    touch(t, 10, 5, 1, &created);
    touch(t, 10, 6, 2, &created);
    touch(t, 10, 7, 3, &created);
    touch(t, 10, 5, 4, &created);
    size_t n;
    struct stmt_stats_row *rows = stmt_stats_export(t, false, &n);
    assert_int_equal(n, 3);
    assert_int_equal(rows[0].fp, 5); /* most recently used first */
    assert_int_equal(rows[1].fp, 7);
    assert_int_equal(rows[2].fp, 6);
    stmt_stats_rows_free(rows, n);
    stmt_stats_free(t);
    t = stmt_stats_new();
    assert_null(stmt_stats_export(t, true, &n));
    assert_int_equal(n, 0);
    stmt_stats_free(t);
}

/* Two workers' copies of one fingerprint become one row. */
static void test_merge(void **state)
{
    struct stmt_stats_row a = {.fp = 9,
                               .kind = "update",
                               .calls = 3,
                               .errors = 1,
                               .denied = 0,
                               .limited = 1,
                               .shadow = 2,
                               .total_us = 3000,
                               .max_us = 2000,
                               .rows = 5,
                               .bytes = 50,
                               .last_us = 100,
                               .sample = "update t set a = $1"};
    struct stmt_stats_row b = {.fp = 9,
                               .kind = "update",
                               .calls = 2,
                               .errors = 0,
                               .denied = 2,
                               .limited = 0,
                               .shadow = 1,
                               .total_us = 7000,
                               .max_us = 6000,
                               .rows = 1,
                               .bytes = 10,
                               .last_us = 900,
                               .sample = "other sample"};
    struct stmt_stats_row c = {.fp = 11, .kind = "select", .calls = 1, .last_us = 50};
    struct stmt_stats *t = stmt_stats_new();
    assert_int_equal(stmt_stats_merge(t, &a), 0);
    assert_int_equal(stmt_stats_merge(t, &c), 0);
    assert_int_equal(stmt_stats_merge(t, &b), 0);
    size_t n;
    struct stmt_stats_row *rows = stmt_stats_export(t, true, &n);
    assert_int_equal(n, 2);
    stmt_stats_sort_calls(rows, n);
    assert_int_equal(rows[0].fp, 9);
    assert_int_equal(rows[0].calls, 5);
    assert_int_equal(rows[0].errors, 1);
    assert_int_equal(rows[0].denied, 2);
    assert_int_equal(rows[0].limited, 1);
    assert_int_equal(rows[0].shadow, 3);
    assert_int_equal(rows[0].total_us, 10000);
    assert_int_equal(rows[0].max_us, 6000);
    assert_int_equal(rows[0].rows, 6);
    assert_int_equal(rows[0].bytes, 60);
    assert_int_equal(rows[0].last_us, 900);
    assert_string_equal(rows[0].sample, "update t set a = $1"); /* the first one seen */
    assert_int_equal(rows[1].fp, 11);
    assert_null(rows[1].sample);
    stmt_stats_sort_recent(rows, n);
    assert_int_equal(rows[0].fp, 9);
    stmt_stats_rows_free(rows, n);
    stmt_stats_free(t);
}

static void test_sort_ties(void **state)
{
    struct stmt_stats_row r[3] = {{.fp = 3, .calls = 5, .total_us = 10},
                                  {.fp = 2, .calls = 5, .total_us = 20},
                                  {.fp = 1, .calls = 7, .total_us = 1}};
    stmt_stats_sort_calls(r, 3);
    assert_int_equal(r[0].fp, 1);
    assert_int_equal(r[1].fp, 2); /* same calls: more time first */
    assert_int_equal(r[2].fp, 3);
}

static void test_sample(void **state)
{
    struct stmt_stats_row r = {0};
    stmt_stats_set_sample(&r, "  select\n\t$1,\n   $2   from t  ");
    assert_string_equal(r.sample, "select $1, $2 from t");
    /* cut at the bound, never inside a UTF-8 sequence */
    char text[STMT_STATS_SAMPLE_MAX + 8];
    memset(text, 'a', STMT_STATS_SAMPLE_MAX - 1);
    memcpy(text + STMT_STATS_SAMPLE_MAX - 1, "\xc3\xa9xyz", 6);
    stmt_stats_set_sample(&r, text);
    assert_int_equal(strlen(r.sample), STMT_STATS_SAMPLE_MAX - 1);
    memcpy(text + STMT_STATS_SAMPLE_MAX - 2, "\xc3\xa9xyz", 6); /* fits whole */
    stmt_stats_set_sample(&r, text);
    assert_int_equal(strlen(r.sample), STMT_STATS_SAMPLE_MAX);
    assert_memory_equal(r.sample + STMT_STATS_SAMPLE_MAX - 2, "\xc3\xa9", 2);
    free(r.sample);
}

static void test_fp_text(void **state)
{
    char buf[32];
    assert_string_equal(stmt_stats_fp_text(0x50fde20626009abaULL, buf, sizeof(buf)),
                        "50fde20626009aba");
    assert_string_equal(stmt_stats_fp_text(0x2a, buf, sizeof(buf)), "000000000000002a");
    assert_string_equal(stmt_stats_fp_text(STMT_STATS_FP_LARGE, buf, sizeof(buf)),
                        "<large statement>");
    assert_string_equal(stmt_stats_fp_text(STMT_STATS_FP_SYNTAX, buf, sizeof(buf)),
                        "<syntax error>");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts),        cmocka_unit_test(test_lru_eviction),
        cmocka_unit_test(test_smaller_bound), cmocka_unit_test(test_export_order),
        cmocka_unit_test(test_merge),         cmocka_unit_test(test_sort_ties),
        cmocka_unit_test(test_sample),        cmocka_unit_test(test_fp_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
