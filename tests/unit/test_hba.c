/* The pg_hba.conf subset: tokenizer, record checks (file:line messages), first-match lookup. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "hba.h"

#pragma GCC diagnostic ignored "-Wunused-parameter"

static char err[512];

static struct hba *parse(const char *text)
{
    err[0] = 0;
    return hba_parse(text, strlen(text), "pg_hba.conf", err, sizeof(err));
}

static struct sockaddr_storage addr(const char *s)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, s, &in->sin_addr) == 1) {
        ss.ss_family = AF_INET;
    } else {
        assert_int_equal(inet_pton(AF_INET6, s, &in6->sin6_addr), 1);
        ss.ss_family = AF_INET6;
    }
    return ss;
}

/* The line of the record that matches, 0 when none. */
static int match(const struct hba *h, bool local, bool ssl, const char *ip, const char *user,
                 const char *db)
{
    struct sockaddr_storage ss;
    if (ip)
        ss = addr(ip);
    struct hba_query q = {
        .local = local, .ssl = ssl, .addr = ip ? &ss : NULL, .user = user, .database = db};
    const struct hba_rule *r = hba_match(h, &q);
    return r ? r->line : 0;
}

static void test_first_match_wins(void **state)
{
    struct hba *h = parse("# comment\n"
                          "hostssl all alice 10.0.0.0/8 reject\n"
                          "\n"
                          "host all all 0.0.0.0/0 scram-sha-256   # trailing comment\n"
                          "local all all peer\n");
    assert_non_null(h);
    assert_int_equal(h->n, 3);
    assert_int_equal(match(h, false, true, "10.1.2.3", "alice", "db"), 2);
    assert_int_equal(h->rules[0].method, HBA_REJECT);
    assert_int_equal(match(h, false, false, "10.1.2.3", "alice", "db"), 4);
    assert_int_equal(match(h, false, true, "10.1.2.3", "bob", "db"), 4);
    assert_int_equal(match(h, false, true, "::1", "bob", "db"), 0); /* no IPv6 rule */
    assert_int_equal(match(h, true, false, NULL, "bob", "db"), 5);
    assert_string_equal(h->rules[1].text,
                        "host all all 0.0.0.0/0 scram-sha-256   # trailing comment");
    hba_free(h);
}

static void test_names_and_keywords(void **state)
{
    struct hba *h = parse("host \"all\" all 127.0.0.1/32 reject\n"
                          "host sameuser all 127.0.0.1/32 trust\n"
                          "host db1,db2 \"bob\",\"carol, the \"\"admin\"\"\" 127.0.0.1/32 cert2\n");
    assert_null(h); /* cert2 is no method */
    assert_non_null(strstr(err, "pg_hba.conf' line 3: invalid authentication method \"cert2\""));
    h = parse("host \"all\" all 127.0.0.1/32 reject\n"
              "host sameuser all 127.0.0.1/32 trust\n"
              "host db1,db2 \"bob\",\"carol, the \"\"admin\"\"\" 127.0.0.1/32 scram-sha-256\n"
              "host all \"all\" 127.0.0.1/32 scram-sha-256\n");
    assert_non_null(h);
    /* a quoted keyword is a name: "all" is the database called all */
    assert_int_equal(match(h, false, false, "127.0.0.1", "x", "all"), 1);
    assert_int_equal(match(h, false, false, "127.0.0.1", "x", "x"), 2);
    assert_int_equal(match(h, false, false, "127.0.0.1", "carol, the \"admin\"", "db2"), 3);
    assert_int_equal(match(h, false, false, "127.0.0.1", "bob", "db1"), 3);
    assert_int_equal(match(h, false, false, "127.0.0.1", "bob", "db3"), 0);
    assert_int_equal(match(h, false, false, "127.0.0.1", "all", "db3"), 4);
    hba_free(h);
}

static void test_continuation_lines(void **state)
{
    struct hba *h = parse("host all \"al\\\nice\" 127.0.0.1/32 \\\n  trust\n"
                          "host all all 127.0.0.1/32 reject # a comment \\\n"
                          "  that goes on\n"
                          "host all bob 127.0.0.1/32 trust\n");
    assert_non_null(h);
    assert_int_equal(h->n, 3);
    assert_int_equal(match(h, false, false, "127.0.0.1", "alice", "d"), 1);
    assert_int_equal(h->rules[0].method, HBA_TRUST);
    assert_int_equal(match(h, false, false, "127.0.0.1", "bob", "d"), 4);
    assert_int_equal(h->rules[2].line, 6); /* line numbers count the physical lines */
    hba_free(h);
}

static void test_addresses(void **state)
{
    struct hba *h = parse("host all all 10.0.0.0 255.0.0.0 trust\n"
                          "host all all fd00::/8 reject\n"
                          "host all all all scram-sha-256\n");
    assert_non_null(h);
    assert_int_equal(match(h, false, false, "10.9.9.9", "u", "d"), 1);
    /* a v4-mapped client counts as IPv4, so v4 rules (and their rejects) apply on a dual-stack
     * listener */
    assert_int_equal(match(h, false, false, "::ffff:10.9.9.9", "u", "d"), 1);
    assert_int_equal(match(h, false, false, "fd12::1", "u", "d"), 2);
    assert_int_equal(match(h, false, false, "192.168.1.1", "u", "d"), 3);
    assert_int_equal(match(h, true, false, NULL, "u", "d"), 0); /* local is not host */
    hba_free(h);
}

struct bad {
    const char *text, *want;
};

static void test_bad_lines(void **state)
{
    static const struct bad bad[] = {
        {"hots all all all trust\n", "invalid connection type \"hots\""},
        {"host\n", "end-of-line before database specification"},
        {"host all\n", "end-of-line before role specification"},
        {"host all all\n", "end-of-line before IP address specification"},
        {"host all all 10.0.0.0/8\n", "end-of-line before authentication method specification"},
        {"host all all 10.0.0.0/33 trust\n", "invalid CIDR mask in address \"10.0.0.0/33\""},
        {"host all all 10.0.0.1 trust\n", "invalid IP mask \"trust\""},
        {"host all all 10.0.0.1\n", "end-of-line before netmask specification"},
        {"host all all 10.0.0.1 255.0.255.0 trust\n", "invalid IP mask \"255.0.255.0\""},
        {"host all all db.example.com trust\n", "host names are not supported"},
        {"host all all samenet trust\n", "\"samenet\" is not supported"},
        {"host all all 10.0.0.0/8,10.1.0.0/16 trust\n", "multiple values specified for host"},
        {"host all all 0.0.0.0/0 md5\n", "invalid authentication method \"md5\""},
        {"host all all 0.0.0.0/0 cert\n",
         "cert authentication is only supported on hostssl connections"},
        {"host all all 0.0.0.0/0 peer\n", "peer authentication is only supported on local"},
        {"hostssl all all 0.0.0.0/0 scram-sha-256 clientcert\n",
         "authentication option not in name=value format: clientcert"},
        {"hostssl all all 0.0.0.0/0 scram-sha-256 map=x\n", "unsupported authentication option"},
        {"host all all 0.0.0.0/0 scram-sha-256 clientcert=verify-full\n",
         "clientcert can only be configured for \"hostssl\" rows"},
        {"host samerole all 0.0.0.0/0 trust\n", "\"samerole\" is not supported"},
        {"host replication all 0.0.0.0/0 trust\n", "\"replication\" is not supported"},
        {"host all +admins 0.0.0.0/0 trust\n", "group membership (+)"},
        {"host all /^a 0.0.0.0/0 trust\n", "regular expressions (/)"},
        {"host all @users.txt 0.0.0.0/0 trust\n", "@file lists"},
        {"include other.conf\n", "include directives are not supported"},
        {"host all \"alice 0.0.0.0/0 trust\n", "unterminated quoted string"},
        {"hostgssenc all all 0.0.0.0/0 trust\n", "invalid connection type \"hostgssenc\""},
        {"local all all 10.0.0.0/8 trust\n", "invalid authentication method \"10.0.0.0/8\""},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char text[256];
        snprintf(text, sizeof(text), "host all all 127.0.0.1/32 trust\n%s", bad[i].text);
        struct hba *h = parse(text);
        if (h || !strstr(err, bad[i].want) || !strstr(err, "'pg_hba.conf' line 2: "))
            fail_msg("'%s': got '%s', want '%s'", bad[i].text, h ? "(accepted)" : err, bad[i].want);
    }
    const char nul[] = "host all all 127.0.0.1/32 trust\0\n";
    assert_null(hba_parse(nul, sizeof(nul) - 1, "f", err, sizeof(err)));
}

static void test_clientcert_option(void **state)
{
    struct hba *h = parse("hostssl all all 0.0.0.0/0 scram-sha-256 clientcert=verify-full\n"
                          "hostssl all all ::/0 cert\n");
    assert_non_null(h);
    assert_true(h->rules[0].clientcert);
    assert_int_equal(h->rules[1].method, HBA_CERT);
    assert_int_equal(match(h, false, false, "127.0.0.1", "u", "d"), 0); /* not TLS */
    assert_int_equal(match(h, false, true, "127.0.0.1", "u", "d"), 1);
    hba_free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_match_wins),   cmocka_unit_test(test_names_and_keywords),
        cmocka_unit_test(test_continuation_lines), cmocka_unit_test(test_addresses),
        cmocka_unit_test(test_bad_lines),          cmocka_unit_test(test_clientcert_option),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
