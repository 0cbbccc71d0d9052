/* Connections in startup, counted per client address and in all. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "admission.h"

#pragma GCC diagnostic ignored "-Wunused-parameter"

static struct admission_key key(const char *addr)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *in = (void *)&ss;
    struct sockaddr_in6 *in6 = (void *)&ss;
    if (inet_pton(AF_INET, addr, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
    } else {
        assert_int_equal(inet_pton(AF_INET6, addr, &in6->sin6_addr), 1);
        in6->sin6_family = AF_INET6;
    }
    struct admission_key k;
    admission_key_from(&ss, &k);
    return k;
}

/* 1,200 silent sockets from one address once filled the accept cap for everyone. */
static void test_one_address_cannot_take_all(void **state)
{
    struct admission *a = admission_new(42);
    struct admission_key one = key("127.0.0.1"), two = key("127.0.0.2");
    int ok = 0;
    for (int i = 0; i < 1200; i++)
        if (admission_enter(a, &one, 1000, 64) == ADMISSION_OK)
            ok++;
    assert_int_equal(ok, 64);
    assert_int_equal(admission_enter(a, &one, 1000, 64), ADMISSION_ADDRESS);
    assert_int_equal(admission_enter(a, &two, 1000, 64), ADMISSION_OK);
    assert_int_equal(admission_count(a, &one), 64);
    assert_int_equal(admission_count(a, &two), 1);
    assert_int_equal(admission_total(a), 65);
    admission_leave(a, &one);
    assert_int_equal(admission_enter(a, &one, 1000, 64), ADMISSION_OK);
    admission_free(a);
}

static void test_total_cap_and_table_bound(void **state)
{
    struct admission *a = admission_new(7);
    char addr[32];
    struct admission_key keys[300];
    for (int i = 0; i < 300; i++) {
        snprintf(addr, sizeof(addr), "10.0.%d.%d", i / 250, i % 250 + 1);
        keys[i] = key(addr);
    }
    for (int i = 0; i < 300; i++)
        assert_int_equal(admission_enter(a, &keys[i], 250, 64),
                         i < 250 ? ADMISSION_OK : ADMISSION_TOTAL);
    assert_int_equal(admission_total(a), 250);
    assert_int_equal(admission_addresses(a), 250);
    for (int i = 0; i < 250; i++)
        admission_leave(a, &keys[i]);
    /* entries go with their last connection: the table is as small as the startup load */
    assert_int_equal(admission_total(a), 0);
    assert_int_equal(admission_addresses(a), 0);
    /* a leave without an enter (never happens) changes nothing */
    admission_leave(a, &keys[299]);
    assert_int_equal(admission_total(a), 0);
    admission_free(a);
}

static void test_keys(void **state)
{
    struct admission_key a = key("127.0.0.1"), b = key("::ffff:127.0.0.1");
    assert_memory_equal(&a, &b, sizeof(a)); /* IPv4-mapped counts as IPv4 */
    struct admission_key c = key("2001:db8:1:2:aaaa::1"), d = key("2001:db8:1:2:bbbb::7");
    assert_memory_equal(&c, &d, sizeof(c)); /* one /64 */
    struct admission_key e = key("2001:db8:1:3::1");
    assert_memory_not_equal(&c, &e, sizeof(c));
    struct admission *adm = admission_new(1);
    assert_int_equal(admission_enter(adm, &c, 10, 1), ADMISSION_OK);
    assert_int_equal(admission_enter(adm, &d, 10, 1), ADMISSION_ADDRESS);
    assert_int_equal(admission_enter(adm, &e, 10, 1), ADMISSION_OK);
    admission_free(adm); /* frees what is still counted */
}

struct worker_arg {
    struct admission *a;
    int id;
};

static void *hammer(void *p)
{
    struct worker_arg *w = p;
    char addr[32];
    for (int round = 0; round < 2000; round++) {
        snprintf(addr, sizeof(addr), "192.0.2.%d", (w->id * 7 + round) % 16);
        struct admission_key k = key(addr);
        if (admission_enter(w->a, &k, 100000, 100000) == ADMISSION_OK)
            admission_leave(w->a, &k);
    }
    return NULL;
}

static void test_threads(void **state)
{
    struct admission *a = admission_new(99);
    pthread_t t[4];
    struct worker_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (struct worker_arg){a, i};
        pthread_create(&t[i], NULL, hammer, &args[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(admission_total(a), 0);
    assert_int_equal(admission_addresses(a), 0);
    admission_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_address_cannot_take_all),
        cmocka_unit_test(test_total_cap_and_table_bound),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
