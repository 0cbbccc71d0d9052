/* Per-address CancelRequest rate limit (token buckets in a fixed table) and the address keys
 * it uses, at the lowest layer: explicit clock, no sockets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include "addr.h"
#include "cancel_limit.h"

static struct addr_key v4(const char *ip)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(1234)};
    inet_pton(AF_INET, ip, &a.sin_addr);
    struct addr_key k;
    addr_key_from((struct sockaddr *)&a, sizeof(a), &k);
    return k;
}

static struct addr_key v6(const char *ip)
{
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(1234)};
    inet_pton(AF_INET6, ip, &a.sin6_addr);
    struct addr_key k;
    addr_key_from((struct sockaddr *)&a, sizeof(a), &k);
    return k;
}

static void test_address_keys(void **state)
{
    (void)state;
    struct addr_key a = v4("192.0.2.7"), b = v4("192.0.2.8");
    assert_false(addr_key_equal(&a, &b));
    /* the same IPv4 client over a dual-stack socket */
    struct addr_key m = v6("::ffff:192.0.2.7");
    assert_true(addr_key_equal(&a, &m));
    /* one /64 is one client: its hosts share a key, another /64 does not */
    struct addr_key x = v6("2001:db8:1:2::1"), y = v6("2001:db8:1:2:ffff::9");
    struct addr_key z = v6("2001:db8:1:3::1");
    assert_true(addr_key_equal(&x, &y));
    assert_false(addr_key_equal(&x, &z));
    char buf[64];
    addr_key_format(&a, buf, sizeof(buf));
    assert_string_equal(buf, "192.0.2.7");
    addr_key_format(&x, buf, sizeof(buf));
    assert_string_equal(buf, "2001:db8:1:2::/64");
    /* unknown family: one shared all-zero key */
    struct addr_key n1, n2;
    addr_key_from(NULL, 0, &n1);
    struct sockaddr u = {.sa_family = AF_UNIX};
    addr_key_from(&u, sizeof(u), &n2);
    assert_true(addr_key_equal(&n1, &n2));
    /* the host comparison ignores ports */
    struct sockaddr_in p1 = {.sin_family = AF_INET, .sin_port = htons(1)};
    struct sockaddr_in p2 = {.sin_family = AF_INET, .sin_port = htons(2)};
    inet_pton(AF_INET, "127.0.0.1", &p1.sin_addr);
    inet_pton(AF_INET, "127.0.0.1", &p2.sin_addr);
    assert_true(addr_same_host((struct sockaddr *)&p1, (struct sockaddr *)&p2));
    inet_pton(AF_INET, "127.0.0.2", &p2.sin_addr);
    assert_false(addr_same_host((struct sockaddr *)&p1, (struct sockaddr *)&p2));
}

/* 7,800 cancels a second from one client once went through unchecked: a 24-bit secret was
 * swept in under an hour. A client now gets its burst, then `rate` a second. */
static void test_bucket_allows_burst_then_rate(void **state)
{
    (void)state;
    struct cancel_limiter *l = cancel_limiter_new();
    cancel_limiter_configure(l, 10, 50);
    struct addr_key a = v4("198.51.100.1"), b = v4("198.51.100.2");
    int64_t now = 1000;
    for (int i = 0; i < 50; i++)
        assert_int_equal(cancel_limiter_take(l, &a, now), CANCEL_LIMIT_ALLOW);
    assert_int_equal(cancel_limiter_take(l, &a, now), CANCEL_LIMIT_REFUSE_FIRST);
    assert_int_equal(cancel_limiter_take(l, &a, now), CANCEL_LIMIT_REFUSE);
    /* another address has a bucket of its own */
    assert_int_equal(cancel_limiter_take(l, &b, now), CANCEL_LIMIT_ALLOW);
    /* 100 ms later one token (10/s) has come back, and only one */
    now += 100;
    assert_int_equal(cancel_limiter_take(l, &a, now), CANCEL_LIMIT_ALLOW);
    assert_int_equal(cancel_limiter_take(l, &a, now), CANCEL_LIMIT_REFUSE_FIRST);
    /* a sustained flood gets exactly the rate: 7,800 tries a second for 10 s */
    int allowed = 0;
    for (int ms = 1; ms <= 10000; ms++)
        for (int k = 0; k < 8; k++)
            allowed += cancel_limiter_take(l, &a, now + ms) == CANCEL_LIMIT_ALLOW;
    assert_int_equal(allowed, 100);
    /* after a long pause the bucket is full again, not fuller */
    now += 3600 * 1000;
    allowed = 0;
    for (int i = 0; i < 60; i++)
        allowed += cancel_limiter_take(l, &a, now) == CANCEL_LIMIT_ALLOW;
    assert_int_equal(allowed, 50);
    cancel_limiter_free(l);
}

static void test_rate_zero_is_no_limit(void **state)
{
    (void)state;
    struct cancel_limiter *l = cancel_limiter_new();
    struct addr_key a = v4("203.0.113.5");
    for (int i = 0; i < 10000; i++)
        assert_int_equal(cancel_limiter_take(l, &a, 5), CANCEL_LIMIT_ALLOW); /* unconfigured */
    cancel_limiter_configure(l, 1, 1);
    assert_int_equal(cancel_limiter_take(l, &a, 5), CANCEL_LIMIT_ALLOW);
    assert_int_equal(cancel_limiter_take(l, &a, 5), CANCEL_LIMIT_REFUSE_FIRST);
    cancel_limiter_configure(l, 0, 0);
    assert_int_equal(cancel_limiter_take(l, &a, 5), CANCEL_LIMIT_ALLOW);
    cancel_limiter_free(l);
}

/* The table never grows: far more addresses than slots all get served (a new or evicted
 * address starts with a full bucket), and an address that keeps sending keeps its (empty)
 * bucket while other addresses come and go, as long as it is not the least recently seen of
 * its set. */
static void test_table_is_bounded_and_evicts_the_oldest(void **state)
{
    (void)state;
    struct cancel_limiter *l = cancel_limiter_new();
    cancel_limiter_configure(l, 1, 2);
    struct addr_key hot = v4("10.9.9.9");
    int64_t now = 1000;
    assert_int_equal(cancel_limiter_take(l, &hot, now), CANCEL_LIMIT_ALLOW);
    assert_int_equal(cancel_limiter_take(l, &hot, now), CANCEL_LIMIT_ALLOW);
    assert_int_equal(cancel_limiter_take(l, &hot, now), CANCEL_LIMIT_REFUSE_FIRST);
    int n = CANCEL_LIMIT_SETS * CANCEL_LIMIT_WAYS * 4;
    for (int i = 0; i < n; i++) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x0a000000u + i)};
        struct addr_key k;
        addr_key_from((struct sockaddr *)&a, sizeof(a), &k);
        assert_int_equal(cancel_limiter_take(l, &k, now), CANCEL_LIMIT_ALLOW);
        /* the hot address stays most recently seen in its set: still refused */
        if (i % 64 == 0)
            assert_int_not_equal(cancel_limiter_take(l, &hot, now), CANCEL_LIMIT_ALLOW);
    }
    cancel_limiter_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_address_keys),
        cmocka_unit_test(test_bucket_allows_burst_then_rate),
        cmocka_unit_test(test_rate_zero_is_no_limit),
        cmocka_unit_test(test_table_is_bounded_and_evicts_the_oldest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
