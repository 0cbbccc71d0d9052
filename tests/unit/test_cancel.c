/* Cancel key table: matching, secrets carrying the instance id, peer configuration. */
#include <setjmp.h>
#include <stdarg.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <sys/socket.h>
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

/* A peer that never answers once held both cancel threads, so this instance's own cancels
 * waited seconds behind cancels anyone can send with that peer's id. Peer cancels now have a
 * queue of their own: the local cancel completes while the peer forward is still waiting. */
static void test_unresponsive_peer_does_not_block_local_cancels(void **state)
{
    (void)state;
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(lfd, 16), 0);
    socklen_t alen = sizeof(a);
    getsockname(lfd, (struct sockaddr *)&a, &alen);
    char peer[64];
    snprintf(peer, sizeof(peer), "2=127.0.0.1:%d", ntohs(a.sin_port));
    char *peers[] = {peer};
    struct cancel_table *t = cancel_table_new();
    assert_int_equal(cancel_set_peers(t, 1, peers, 1), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(cancel_forward_async(t, 100 + (uint32_t)i, 0x02000000u, -1, true), 0);
    int efd = eventfd(0, EFD_NONBLOCK);
    struct cancel_ticket *k = cancel_forward_tracked(t, 4242, 1, efd);
    struct pollfd p = {.fd = efd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 10000), 1);
    assert_true(cancel_ticket_done(k));
    /* the peer forward is still in flight: its connection is waiting for us */
    int c = accept(lfd, NULL, NULL);
    assert_true(c >= 0);
    uint8_t pkt[16];
    assert_int_equal(recv(c, pkt, sizeof(pkt), MSG_WAITALL), 16);
    /* not closed by the forwarder yet (it waits for the peer to close, as the protocol has it):
     * the local cancel did not queue behind it */
    char more;
    assert_int_equal(recv(c, &more, 1, MSG_DONTWAIT), -1);
    close(c);
    cancel_ticket_release(k);
    cancel_table_free(t); /* waits for the remaining peer forward to give up */
    close(efd);
    close(lfd);
}

/* A session that ends right after asking for its own cancel unregisters its key at once; the
 * cancel must still be sent with the session's handle (it once found the key gone and
 * left the statement running upstream). */
static void test_tracked_cancel_survives_unregister(void **state)
{
    (void)state;
    struct cancel_table *t = cancel_table_new();
    int efd = eventfd(0, EFD_NONBLOCK);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(cancel_register(t, 777, 5, NULL), 0);
        struct cancel_ticket *k = cancel_forward_tracked(t, 777, 5, efd);
        cancel_unregister(t, 777);
        for (int n = 0; n < 500 && !cancel_ticket_done(k); n++)
            poll(NULL, 0, 10);
        assert_true(cancel_ticket_done(k));
        /* FAILED: the (NULL) handle was used; UNKNOWN_KEY would mean the key was looked up
         * again after the unregister */
        assert_int_equal(cancel_ticket_result(k), CANCEL_FAILED);
        cancel_ticket_release(k);
    }
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
        cmocka_unit_test(test_tracked_cancel_survives_unregister),
        cmocka_unit_test(test_unresponsive_peer_does_not_block_local_cancels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
