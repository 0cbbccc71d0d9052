/* The exposition-format text builder every metrics renderer writes through. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "metrics_text.h"

static void test_label_escaping(void **state)
{
    (void)state;
    struct metrics_text t = {0};
    metrics_text_printf(&t, "x{user=\"");
    metrics_text_label(&t, "a\\b\"c\nd");
    metrics_text_printf(&t, "\"} 1\n");
    size_t len = 0;
    char *s = metrics_text_take(&t, &len);
    assert_string_equal(s, "x{user=\"a\\\\b\\\"c\\nd\"} 1\n");
    assert_int_equal(len, strlen(s));
    free(s);
}

static void test_family_and_seconds(void **state)
{
    (void)state;
    struct metrics_text t = {0};
    metrics_text_family(&t, "q_total", "counter", "Queries.");
    metrics_text_seconds(&t, 1000001);
    metrics_text_printf(&t, " ");
    metrics_text_seconds(&t, 0);
    char *s = metrics_text_take(&t, NULL);
    assert_string_equal(s, "# HELP pgwire_proxy_q_total Queries.\n"
                           "# TYPE pgwire_proxy_q_total counter\n1.000001 0.000000");
    free(s);
}

/* Lines longer than the first allocation and many short ones both arrive whole. */
static void test_growth(void **state)
{
    (void)state;
    struct metrics_text t = {0};
    char *big = malloc(10000);
    memset(big, 'b', 9999);
    big[9999] = 0;
    metrics_text_printf(&t, "%s", big);
    for (int i = 0; i < 5000; i++)
        metrics_text_printf(&t, "%d\n", i % 10);
    size_t len = 0;
    char *s = metrics_text_take(&t, &len);
    assert_non_null(s);
    assert_int_equal(len, 9999 + 5000 * 2);
    assert_int_equal(strlen(s), len);
    assert_memory_equal(s, big, 9999);
    assert_memory_equal(s + len - 2, "9\n", 2);
    free(s);
    free(big);
}

static void test_empty_and_failed(void **state)
{
    (void)state;
    struct metrics_text t = {0};
    char *s = metrics_text_take(&t, NULL);
    assert_string_equal(s, "");
    free(s);
    t.failed = true; /* as after an allocation failure: nothing is returned, nothing leaks */
    metrics_text_printf(&t, "dropped");
    size_t len = 7;
    assert_null(metrics_text_take(&t, &len));
    assert_int_equal(len, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_label_escaping),
        cmocka_unit_test(test_family_and_seconds),
        cmocka_unit_test(test_growth),
        cmocka_unit_test(test_empty_and_failed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
