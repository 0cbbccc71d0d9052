/* Cancel key table: matching, secrets carrying the instance id, peer configuration. */
#include <setjmp.h>
#include <stdarg.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "cancel.h"
#include "config.h"

static void test_secret_equal(void **state)
{
    (void)state;
    assert_true(cancel_secret_equal(0, 0));
    assert_true(cancel_secret_equal(0xdeadbeef, 0xdeadbeef));
    assert_false(cancel_secret_equal(0xdeadbeef, 0xdeadbeee));
    assert_false(cancel_secret_equal(0x80000000, 0));
}

static void test_random_secrets_differ(void **state)
{
    (void)state;
    uint32_t a = 0, b = 0;
    assert_int_equal(cancel_new_secret(&a), 0);
    assert_int_equal(cancel_new_secret(&b), 0);
    uint32_t c = 0;
    assert_int_equal(cancel_new_secret(&c), 0);
    /* three equal 32-bit draws would mean no randomness at all */
    assert_false(a == b && b == c);
}

static void test_unknown_keys_are_ignored(void **state)
{
    (void)state;
    struct cancel_table *t = cancel_table_new();
    assert_non_null(t);
    assert_int_equal(cancel_forward(t, 1234, 5678), CANCEL_UNKNOWN_KEY);
    /* registered pid, wrong secret: still unknown, and the handle is never used */
    assert_int_equal(cancel_register(t, 1234, 42, NULL), 0);
    assert_int_equal(cancel_forward(t, 1234, 43), CANCEL_UNKNOWN_KEY);
    assert_int_equal(cancel_forward(t, 1235, 42), CANCEL_UNKNOWN_KEY);
    /* right key, but no upstream handle: the forward fails rather than pretending */
    assert_int_equal(cancel_forward(t, 1234, 42), CANCEL_FAILED);
    cancel_unregister(t, 1234);
    assert_int_equal(cancel_forward(t, 1234, 42), CANCEL_UNKNOWN_KEY);
    cancel_unregister(t, 999); /* unknown pid: no-op */
    cancel_table_free(t);
}

static void test_many_keys_same_bucket(void **state)
{
    (void)state;
    struct cancel_table *t = cancel_table_new();
    for (uint32_t i = 0; i < 10; i++)
        assert_int_equal(cancel_register(t, 7 + i * 1024, i, NULL), 0);
    for (uint32_t i = 0; i < 10; i++)
        assert_int_equal(cancel_forward(t, 7 + i * 1024, i + 1), CANCEL_UNKNOWN_KEY);
    cancel_unregister(t, 7 + 5 * 1024);
    assert_int_equal(cancel_forward(t, 7 + 5 * 1024, 5), CANCEL_UNKNOWN_KEY);
    assert_int_equal(cancel_forward(t, 7 + 6 * 1024, 6), CANCEL_FAILED);
    cancel_table_free(t); /* frees the remaining entries */
}

static void test_session_secret_carries_instance_id(void **state)
{
    (void)state;
    struct cancel_table *t = cancel_table_new();
    uint32_t s = 0;
    char *peers[] = {"2=127.0.0.1:5434", "3=[::1]:5435"};
    assert_int_equal(cancel_set_peers(t, 7, peers, 2), 0);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(cancel_session_secret(t, &s), 0);
        assert_int_equal(s >> 24, 7);
    }
    char *bad[] = {"0=127.0.0.1:1"};
    assert_int_equal(cancel_set_peers(t, 7, bad, 1), -EINVAL);
    assert_int_equal(cancel_set_peers(t, 0, NULL, 0), 0);
    cancel_table_free(t);
}

/* The proxy's own cancel must be known delivered before the session's next statement goes
 * upstream (a late cancel once hit the following statement): the ticket turns done, and the
 * worker's eventfd is written, only after the forward finished. */
static void test_tracked_cancel_signals_completion(void **state)
{
    (void)state;
    struct cancel_table *t = cancel_table_new();
    int efd = eventfd(0, EFD_NONBLOCK);
    assert_true(efd >= 0);
    struct cancel_ticket *k = cancel_forward_tracked(t, 4242, 1, efd);
    assert_non_null(k);
    struct pollfd p = {.fd = efd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 5000), 1);
    assert_true(cancel_ticket_done(k));
    cancel_ticket_release(k);
    /* without a wake-up fd it completes as well */
    k = cancel_forward_tracked(t, 4243, 1, -1);
    for (int i = 0; i < 500 && !cancel_ticket_done(k); i++)
        poll(NULL, 0, 10);
    assert_true(cancel_ticket_done(k));
    cancel_ticket_release(k);
    cancel_table_free(t);
    close(efd);
}

static void test_parse_peer(void **state)
{
    (void)state;
    int id = 0, port = 0;
    char host[64];
    assert_int_equal(config_parse_peer("2=10.0.0.2:5433", &id, host, sizeof(host), &port), 0);
    assert_int_equal(id, 2);
    assert_string_equal(host, "10.0.0.2");
    assert_int_equal(port, 5433);
    assert_int_not_equal(config_parse_peer("256=h:1", &id, host, sizeof(host), &port), 0);
    assert_int_not_equal(config_parse_peer("x=h:1", &id, host, sizeof(host), &port), 0);
    assert_int_not_equal(config_parse_peer("2=h", &id, host, sizeof(host), &port), 0);
    assert_int_not_equal(config_parse_peer("2:h:1", &id, host, sizeof(host), &port), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_secret_equal),
        cmocka_unit_test(test_random_secrets_differ),
        cmocka_unit_test(test_unknown_keys_are_ignored),
        cmocka_unit_test(test_many_keys_same_bucket),
        cmocka_unit_test(test_session_secret_carries_instance_id),
        cmocka_unit_test(test_parse_peer),
        cmocka_unit_test(test_tracked_cancel_signals_completion),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
