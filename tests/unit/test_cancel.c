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
#include "fake_pg.h"
#include "metrics.h"

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
    cancel_unregister(t, 1234, 42);
    assert_int_equal(cancel_forward(t, 1234, 42), CANCEL_UNKNOWN_KEY);
    cancel_unregister(t, 999, 1); /* unknown key: no-op */
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
    cancel_unregister(t, 7 + 5 * 1024, 5);
    assert_int_equal(cancel_forward(t, 7 + 5 * 1024, 5), CANCEL_UNKNOWN_KEY);
    assert_int_equal(cancel_forward(t, 7 + 6 * 1024, 6), CANCEL_FAILED);
    cancel_table_free(t); /* frees the remaining entries */
}

/* Two upstream hosts can hand out the same pid: each session's key is its own, and ending one
 * session must not take away the other's. */
static void test_same_pid_two_secrets(void **state)
{
    (void)state;
    struct cancel_table *t = cancel_table_new();
    assert_int_equal(cancel_register(t, 4321, 11, NULL), 0);
    assert_int_equal(cancel_register(t, 4321, 22, NULL), 0);
    assert_int_equal(cancel_forward(t, 4321, 11), CANCEL_FAILED); /* found: NULL handle */
    assert_int_equal(cancel_forward(t, 4321, 22), CANCEL_FAILED);
    assert_int_equal(cancel_forward(t, 4321, 33), CANCEL_UNKNOWN_KEY);
    cancel_unregister(t, 4321, 22);
    assert_int_equal(cancel_forward(t, 4321, 22), CANCEL_UNKNOWN_KEY);
    assert_int_equal(cancel_forward(t, 4321, 11), CANCEL_FAILED); /* still there */
    cancel_unregister(t, 4321, 11);
    assert_int_equal(cancel_forward(t, 4321, 11), CANCEL_UNKNOWN_KEY);
    cancel_table_free(t);
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
    struct fake_pg peer;
    assert_int_equal(fake_pg_listen(&peer, 16), 0);
    char spec[64];
    fake_pg_peer(&peer, 2, spec, sizeof(spec));
    char *peers[] = {spec};
    struct cancel_table *t = cancel_table_new();
    assert_int_equal(cancel_set_peers(t, 1, peers, 1), 0);
    for (int i = 0; i < 2; i++) {
        struct cancel_request r = {.pid = 100 + (uint32_t)i, .secret = 0x02000000u, .fd = -1};
        cancel_client_request(t, &r);
    }
    int efd = eventfd(0, EFD_NONBLOCK);
    struct cancel_ticket *k = cancel_forward_tracked(t, 4242, 1, efd);
    struct pollfd p = {.fd = efd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 10000), 1);
    assert_true(cancel_ticket_done(k));
    /* the peer forward is still in flight: its connection is waiting for us */
    int c = fake_pg_accept(&peer, 10000);
    assert_true(c >= 0);
    uint8_t pkt[16];
    assert_int_equal(recv(c, pkt, sizeof(pkt), MSG_WAITALL), 16);
    /* not closed by the forwarder yet (it waits for the peer to close, as the protocol has it):
     * the local cancel did not queue behind it */
    char more;
    assert_int_equal(recv(c, &more, 1, MSG_DONTWAIT), -1);
    close(c);
    cancel_ticket_release(k);
    cancel_table_free(t); /* interrupts the remaining peer forward */
    close(efd);
    fake_pg_close(&peer);
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
        cancel_unregister(t, 777, 5);
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

static int64_t cancels(const char *outcome)
{
    char series[128];
    snprintf(series, sizeof(series), "pgwire_proxy_cancel_requests_total{outcome=\"%s\"}", outcome);
    return metrics_value(series);
}

/* A client re-sending its own valid key once made the proxy queue every copy, each holding the
 * client's socket and opening an upstream cancel connection: thousands of descriptors in
 * seconds. Now a key with a cancel queued or running is not queued again: the copies are
 * answered (closed) at once and only one upstream cancel connection is opened. */
static void test_repeated_cancels_of_one_key_coalesce(void **state)
{
    (void)state;
    struct fake_pg pg;
    void *h[1];
    assert_int_equal(fake_pg_listen(&pg, 64), 0);
    assert_int_equal(fake_pg_cancel_handles(&pg, h, 1), 0);
    struct cancel_table *t = cancel_table_new();
    assert_int_equal(cancel_register(t, 77, 0x0abcdef0u, h[0]), 0);
    int64_t coalesced = cancels("coalesced"), forwarded = cancels("forwarded");
    int first[2];
    assert_int_equal(fake_client_pair(first), 0);
    struct cancel_request r = {.pid = 77, .secret = 0x0abcdef0u, .fd = first[0]};
    cancel_client_request(t, &r);
    /* its upstream cancel is in flight: connected to the fake server, waiting for the close */
    int up = fake_pg_accept(&pg, 10000);
    assert_true(up >= 0);
    uint8_t pkt[16];
    assert_int_equal(fake_pg_read(up, pkt, sizeof(pkt), 5000), 0);
    for (int i = 0; i < 50; i++) {
        int sv[2];
        assert_int_equal(fake_client_pair(sv), 0);
        r.fd = sv[0];
        cancel_client_request(t, &r);
        assert_true(fake_client_closed(sv[1], 5000));
        close(sv[1]);
    }
    assert_int_equal(cancels("coalesced") - coalesced, 50);
    assert_false(fake_pg_pending(&pg)); /* no second upstream cancel */
    assert_false(fake_client_closed(first[1], 0));
    close(up); /* the upstream has canceled */
    assert_true(fake_client_closed(first[1], 10000));
    assert_int_equal(cancels("forwarded") - forwarded, 1);
    /* once done, the same key can be canceled again */
    int again[2];
    assert_int_equal(fake_client_pair(again), 0);
    r.fd = again[0];
    cancel_client_request(t, &r);
    up = fake_pg_accept(&pg, 10000);
    assert_true(up >= 0);
    close(up);
    assert_true(fake_client_closed(again[1], 10000));
    cancel_table_free(t);
    close(first[1]);
    close(again[1]);
    fake_pg_close(&pg);
}

/* Unknown keys (a sweep of guessed secrets) are answered at once: nothing queued, nothing
 * held open. */
static void test_unknown_keys_are_answered_at_once(void **state)
{
    (void)state;
    struct cancel_table *t = cancel_table_new();
    assert_int_equal(cancel_register(t, 55, 0x01020304u, NULL), 0);
    int64_t unknown = cancels("unknown_key");
    for (uint32_t i = 0; i < 500; i++) {
        int sv[2];
        assert_int_equal(fake_client_pair(sv), 0);
        struct cancel_request r = {.pid = 55, .secret = 0x01020304u + 1 + i, .fd = sv[0]};
        cancel_client_request(t, &r);
        assert_true(fake_client_closed(sv[1], 0)); /* closed before the call returned */
        close(sv[1]);
    }
    assert_int_equal(cancels("unknown_key") - unknown, 500);
    cancel_table_free(t);
}

/* The local pool's queue of client cancels is bounded: with both threads busy and the queue
 * full, a further cancel is closed at once and counted as dropped. */
static void test_local_queue_is_bounded(void **state)
{
    (void)state;
    enum { BUSY = 2, EXTRA = 5, N = BUSY + CANCEL_LOCAL_QUEUE_MAX + EXTRA };
    static void *h[N];
    static int sv[N][2];
    struct fake_pg pg;
    assert_int_equal(fake_pg_listen(&pg, N + 8), 0);
    assert_int_equal(fake_pg_cancel_handles(&pg, h, N), 0);
    struct cancel_table *t = cancel_table_new();
    for (int i = 0; i < N; i++) {
        assert_int_equal(cancel_register(t, 1000 + (uint32_t)i, 5, h[i]), 0);
        assert_int_equal(fake_client_pair(sv[i]), 0);
    }
    int64_t dropped = cancels("dropped");
    int up[BUSY];
    for (int i = 0; i < BUSY; i++) {
        struct cancel_request r = {.pid = 1000 + (uint32_t)i, .secret = 5, .fd = sv[i][0]};
        cancel_client_request(t, &r);
        up[i] = fake_pg_accept(&pg, 10000); /* both pool threads are now inside PQcancel */
        assert_true(up[i] >= 0);
    }
    for (int i = BUSY; i < N; i++) {
        struct cancel_request r = {.pid = 1000 + (uint32_t)i, .secret = 5, .fd = sv[i][0]};
        cancel_client_request(t, &r);
    }
    assert_int_equal(cancels("dropped") - dropped, EXTRA);
    for (int i = 0; i < N; i++)
        assert_int_equal(fake_client_closed(sv[i][1], 0), i >= N - EXTRA);
    /* let the rest run: the server goes away, so each queued cancel fails fast */
    fake_pg_close(&pg);
    for (int i = 0; i < BUSY; i++)
        close(up[i]);
    for (int i = 0; i < N; i++) {
        assert_true(fake_client_closed(sv[i][1], 10000));
        close(sv[i][1]);
    }
    cancel_table_free(t);
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
        cmocka_unit_test(test_same_pid_two_secrets),
        cmocka_unit_test(test_session_secret_carries_instance_id),
        cmocka_unit_test(test_parse_peer),
        cmocka_unit_test(test_tracked_cancel_signals_completion),
        cmocka_unit_test(test_tracked_cancel_survives_unregister),
        cmocka_unit_test(test_unresponsive_peer_does_not_block_local_cancels),
        cmocka_unit_test(test_repeated_cancels_of_one_key_coalesce),
        cmocka_unit_test(test_unknown_keys_are_answered_at_once),
        cmocka_unit_test(test_local_queue_is_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
