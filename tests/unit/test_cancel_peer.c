/* Cancel routing between instances: a queue per peer, failing fast for a peer that is down,
 * no second hop for a forwarded cancel, the peers' exemption from the rate limit, and a stop
 * that drops what is queued. Peers are fake listeners on 127.0.0.1. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cancel.h"
#include "fake_pg.h"
#include "metrics.h"
#include "wire.h"

#define PEER_SECRET(id, low) (((uint32_t)(id) << 24) | (low))

static int64_t cancels(const char *outcome)
{
    char series[128];
    snprintf(series, sizeof(series), "pgwire_proxy_cancel_requests_total{outcome=\"%s\"}", outcome);
    return metrics_value(series);
}

static struct sockaddr_in addr_v4(const char *ip, int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, ip, &a.sin_addr);
    return a;
}

/* Sends one client CancelRequest; returns the test's end of its connection. */
static int send_cancel(struct cancel_table *t, uint32_t pid, uint32_t secret,
                       const struct sockaddr_in *from, bool via_peer)
{
    int sv[2];
    assert_int_equal(fake_client_pair(sv), 0);
    struct cancel_request r = {.pid = pid,
                               .secret = secret,
                               .fd = sv[0],
                               .from = (const struct sockaddr *)from,
                               .fromlen = from ? sizeof(*from) : 0,
                               .via_peer = via_peer};
    cancel_client_request(t, &r);
    return sv[1];
}

/* A table with instance id 1 and peers 2 and 3 on the given fake listeners. */
static struct cancel_table *peered(struct fake_pg *p2, struct fake_pg *p3)
{
    static char s2[64], s3[64];
    fake_pg_peer(p2, 2, s2, sizeof(s2));
    fake_pg_peer(p3, 3, s3, sizeof(s3));
    char *peers[] = {s2, s3};
    struct cancel_table *t = cancel_table_new();
    assert_non_null(t);
    assert_int_equal(cancel_set_peers(t, 1, peers, 2), 0);
    return t;
}

/* ~70 forged cancels for a blackholed peer once filled the one peer queue (2 threads, 3 s
 * each) and every legitimate cross-instance cancel was dropped for ~100 s. Peer 2 here takes
 * connections and never answers; peer 3's cancel must land while peer 2's forwards are still
 * waiting (none of them has failed yet). */
static void test_dead_peer_does_not_starve_another(void **state)
{
    (void)state;
    struct fake_pg p2, p3;
    assert_int_equal(fake_pg_listen(&p2, 128), 0);
    assert_int_equal(fake_pg_listen(&p3, 16), 0);
    struct cancel_table *t = peered(&p2, &p3);
    int64_t failed = cancels("failed"), dropped = cancels("dropped");
    int forged[70];
    for (int i = 0; i < 70; i++)
        forged[i] = send_cancel(t, 500 + (uint32_t)i, PEER_SECRET(2, i), NULL, false);
    int legit = send_cancel(t, 900, PEER_SECRET(3, 0xabcdef), NULL, false);
    int c = fake_pg_accept(&p3, 10000);
    assert_true(c >= 0);
    uint8_t pkt[16];
    assert_int_equal(fake_pg_read(c, pkt, sizeof(pkt), 5000), 0);
    assert_int_equal(wire_get_u32(pkt), 16);
    assert_int_equal(wire_get_u32(pkt + 4), WIRE_PEER_CANCEL_CODE);
    assert_int_equal(wire_get_u32(pkt + 8), 900);
    assert_int_equal(wire_get_u32(pkt + 12), PEER_SECRET(3, 0xabcdef));
    close(c); /* peer 3 has canceled */
    assert_true(fake_client_closed(legit, 10000));
    assert_int_equal(cancels("failed") - failed, 0); /* peer 2's forwards still in flight */
    /* peer 2's queue is bounded: most of the forged ones were closed at once */
    assert_true(cancels("dropped") - dropped >= 70 - 20);
    cancel_table_free(t);
    for (int i = 0; i < 70; i++) {
        assert_true(fake_client_closed(forged[i], 0)); /* the stop closed what it held */
        close(forged[i]);
    }
    close(legit);
    fake_pg_close(&p2);
    fake_pg_close(&p3);
}

/* Once a forward to a peer has failed, cancels for that peer fail at once for a while: no new
 * connection, no socket held. */
static void test_down_peer_fails_fast(void **state)
{
    (void)state;
    struct fake_pg p2, p3;
    assert_int_equal(fake_pg_listen(&p2, 16), 0);
    assert_int_equal(fake_pg_listen(&p3, 16), 0);
    struct cancel_table *t = peered(&p2, &p3);
    int64_t failed = cancels("failed");
    int first = send_cancel(t, 1, PEER_SECRET(2, 1), NULL, false);
    int c = fake_pg_accept(&p2, 10000); /* connected and sent; never answered */
    assert_true(c >= 0);
    assert_true(fake_client_closed(first, 10000)); /* the forward gave up */
    assert_int_equal(cancels("failed") - failed, 1);
    close(c);
    int next = send_cancel(t, 2, PEER_SECRET(2, 2), NULL, false);
    assert_true(fake_client_closed(next, 0)); /* failed before the call returned */
    assert_int_equal(cancels("failed") - failed, 2);
    assert_false(fake_pg_pending(&p2));
    cancel_table_free(t);
    close(first);
    close(next);
    fake_pg_close(&p2);
    fake_pg_close(&p3);
}

/* With `--peer 2=<own address>` one cancel once circulated forever: every hop was a new client
 * cancel for peer 2. A forwarded cancel (the peer code) is matched locally and never routed. */
static void test_forwarded_cancel_is_not_routed_again(void **state)
{
    (void)state;
    struct fake_pg p2, p3;
    assert_int_equal(fake_pg_listen(&p2, 16), 0);
    assert_int_equal(fake_pg_listen(&p3, 16), 0);
    struct cancel_table *t = peered(&p2, &p3);
    int64_t unknown = cancels("unknown_key");
    struct sockaddr_in from = addr_v4("127.0.0.1", 40000);
    int fd = send_cancel(t, 7, PEER_SECRET(2, 7), &from, true);
    assert_true(fake_client_closed(fd, 0));
    assert_int_equal(cancels("unknown_key") - unknown, 1);
    assert_false(fake_pg_pending(&p2));
    close(fd);
    cancel_table_free(t);
    fake_pg_close(&p2);
    fake_pg_close(&p3);
}

/* Cancels a peer forwards all come from its address: they are exempt from the per-address
 * limit. The exemption needs both the peer code and a peer's address. */
static void test_peer_forwards_are_exempt_from_the_rate_limit(void **state)
{
    (void)state;
    struct fake_pg p2, p3;
    assert_int_equal(fake_pg_listen(&p2, 16), 0);
    assert_int_equal(fake_pg_listen(&p3, 16), 0);
    struct cancel_table *t = peered(&p2, &p3);
    cancel_set_rate_limit(t, 1); /* burst of CANCEL_RATE_BURST_S */
    struct sockaddr_in peer = addr_v4("127.0.0.1", 40001);
    struct sockaddr_in stranger = addr_v4("192.0.2.99", 40002);
    int64_t limited = cancels("rate_limited");
    for (int i = 0; i < 40; i++)
        close(send_cancel(t, 9, PEER_SECRET(1, i), &peer, true));
    assert_int_equal(cancels("rate_limited") - limited, 0);
    for (int i = 0; i < 40; i++)
        close(send_cancel(t, 9, PEER_SECRET(1, i), &stranger, true));
    assert_int_equal(cancels("rate_limited") - limited, 40 - CANCEL_RATE_BURST_S);
    /* a plain CancelRequest from the peer's address is a client's: limited too */
    limited = cancels("rate_limited");
    for (int i = 0; i < 40; i++)
        close(send_cancel(t, 9, PEER_SECRET(1, i), &peer, false));
    assert_int_equal(cancels("rate_limited") - limited, 40 - CANCEL_RATE_BURST_S);
    cancel_table_free(t);
    fake_pg_close(&p2);
    fake_pg_close(&p3);
}

/* SIGTERM once waited for every queued peer forward to time out (85-96 s). A stop now drops
 * what is queued and interrupts what is in flight; alarm() bounds the test. */
static void test_stop_drops_queued_and_in_flight_forwards(void **state)
{
    (void)state;
    struct fake_pg p2, p3;
    assert_int_equal(fake_pg_listen(&p2, 64), 0);
    assert_int_equal(fake_pg_listen(&p3, 64), 0);
    struct cancel_table *t = peered(&p2, &p3);
    int fds[36];
    for (int i = 0; i < 36; i++)
        fds[i] = send_cancel(t, 300 + (uint32_t)i, PEER_SECRET(2 + i % 2, i), NULL, false);
    int c = fake_pg_accept(&p2, 10000); /* a forward is in flight */
    assert_true(c >= 0);
    alarm(10);
    cancel_table_free(t);
    alarm(0);
    for (int i = 0; i < 36; i++) {
        assert_true(fake_client_closed(fds[i], 0));
        close(fds[i]);
    }
    close(c);
    fake_pg_close(&p2);
    fake_pg_close(&p3);
}

/* A reload keeps the queue of a peer that stays, and drops the jobs of a peer that is gone. */
static void test_reload_keeps_or_drops_peer_queues(void **state)
{
    (void)state;
    struct fake_pg p2, p3;
    assert_int_equal(fake_pg_listen(&p2, 64), 0);
    assert_int_equal(fake_pg_listen(&p3, 64), 0);
    struct cancel_table *t = peered(&p2, &p3);
    int fd2 = send_cancel(t, 1, PEER_SECRET(2, 1), NULL, false);
    int fd3 = send_cancel(t, 2, PEER_SECRET(3, 2), NULL, false);
    int c2 = fake_pg_accept(&p2, 10000), c3 = fake_pg_accept(&p3, 10000);
    assert_true(c2 >= 0 && c3 >= 0);
    char s2[64];
    fake_pg_peer(&p2, 2, s2, sizeof(s2));
    char *only2[] = {s2};
    assert_int_equal(cancel_set_peers(t, 1, only2, 1), 0);
    /* peer 3 is gone: a new cancel for it is no longer routed, just unknown here */
    int64_t unknown = cancels("unknown_key");
    int late = send_cancel(t, 3, PEER_SECRET(3, 3), NULL, false);
    assert_true(fake_client_closed(late, 0));
    assert_int_equal(cancels("unknown_key") - unknown, 1);
    /* the forwards in flight still complete when their peers answer */
    close(c2);
    close(c3);
    assert_true(fake_client_closed(fd2, 10000));
    assert_true(fake_client_closed(fd3, 10000));
    cancel_table_free(t);
    close(fd2);
    close(fd3);
    close(late);
    fake_pg_close(&p2);
    fake_pg_close(&p3);
}

/* Client cancel sockets held by jobs are capped over all queues together. */
static void test_held_cancel_sockets_are_capped(void **state)
{
    (void)state;
    enum { NPEERS = 20, EACH = 18 };
    static struct fake_pg p[NPEERS];
    static char specs[NPEERS][64];
    char *peers[NPEERS];
    for (int i = 0; i < NPEERS; i++) {
        assert_int_equal(fake_pg_listen(&p[i], 64), 0);
        fake_pg_peer(&p[i], 2 + i, specs[i], sizeof(specs[i]));
        peers[i] = specs[i];
    }
    struct cancel_table *t = cancel_table_new();
    assert_int_equal(cancel_set_peers(t, 1, peers, NPEERS), 0);
    static int fds[NPEERS * EACH];
    int held = 0;
    for (int i = 0; i < NPEERS * EACH; i++) {
        fds[i] = send_cancel(t, (uint32_t)i, PEER_SECRET(2 + i % NPEERS, i), NULL, false);
        held += !fake_client_closed(fds[i], 0);
    }
    /* the peer queues would take NPEERS * 16 and more: the cap is what bit */
    assert_int_equal(held, CANCEL_MAX_HELD_FDS);
    alarm(10);
    cancel_table_free(t);
    alarm(0);
    for (int i = 0; i < NPEERS * EACH; i++)
        close(fds[i]);
    for (int i = 0; i < NPEERS; i++)
        fake_pg_close(&p[i]);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dead_peer_does_not_starve_another),
        cmocka_unit_test(test_down_peer_fails_fast),
        cmocka_unit_test(test_forwarded_cancel_is_not_routed_again),
        cmocka_unit_test(test_peer_forwards_are_exempt_from_the_rate_limit),
        cmocka_unit_test(test_stop_drops_queued_and_in_flight_forwards),
        cmocka_unit_test(test_reload_keeps_or_drops_peer_queues),
        cmocka_unit_test(test_held_cancel_sockets_are_capped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
