/* auth.c: the AuthenticationSASL offer, the SASL message framing (what the session feeds it),
 * method selection and PostgreSQL's refusal texts. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "auth.h"
#include "authfile.h"
#include "config.h"

#pragma GCC diagnostic ignored "-Wunused-parameter"

static uint8_t buf[4096];
static struct wire_buf out;

static struct auth_conf *conf(void)
{
    static struct auth_conf c;
    static const uint8_t key[32] = {5};
    char err[256];
    static const char users[] = "\"alice\" \"pencil\"\n";
    memset(&c, 0, sizeof(c));
    c.type = CONFIG_AUTH_SCRAM;
    memcpy(c.key, key, 32);
    c.users = authfile_parse(users, sizeof(users) - 1, "u", key, err, sizeof(err));
    assert_non_null(c.users);
    return &c;
}

static void reset(void)
{
    wire_buf_init(&out, buf, sizeof(buf));
}

static void test_offer_lists_plus_first_only_with_a_hash(void **state)
{
    struct auth_conf *c = conf();
    struct auth_sasl a;
    static const uint8_t hash[32] = {1};
    reset();
    auth_sasl_begin(&a, c, "alice", hash, sizeof(hash), &out);
    static const uint8_t plus[] = "R\0\0\0\x2a\0\0\0\x0aSCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0";
    assert_int_equal(out.len, sizeof(plus)); /* the array's own NUL ends the list */
    assert_memory_equal(out.data, plus, sizeof(plus));
    assert_false(a.mock);
    reset();
    auth_sasl_begin(&a, c, "nobody", NULL, 0, &out);
    static const uint8_t plain[] = "R\0\0\0\x17\0\0\0\x0aSCRAM-SHA-256\0";
    assert_int_equal(out.len, sizeof(plain));
    assert_memory_equal(out.data, plain, sizeof(plain));
    assert_true(a.mock); /* an unknown user: a mock exchange */
    authfile_free(c->users);
}

static void test_messages(void **state)
{
    struct auth_conf *c = conf();
    struct auth_sasl a;
    reset();
    auth_sasl_begin(&a, c, "alice", NULL, 0, &out);
    reset();
    assert_int_equal(auth_sasl_message(&a, 'Q', NULL, 0, "n", &out), AUTH_STEP_ERROR);
    assert_string_equal(a.code, "08P01");
    assert_string_equal(a.message, "expected SASL response, got message type 81");

    auth_sasl_begin(&a, c, "alice", NULL, 0, &out);
    static const uint8_t plus_unoffered[] = "SCRAM-SHA-256-PLUS\0\xff\xff\xff\xff";
    assert_int_equal(
        auth_sasl_message(&a, 'p', plus_unoffered, sizeof(plus_unoffered) - 1, "n", &out),
        AUTH_STEP_ERROR);
    assert_string_equal(a.message, "client selected an invalid SASL authentication mechanism");

    auth_sasl_begin(&a, c, "alice", NULL, 0, &out);
    assert_int_equal(auth_sasl_message(&a, 'p', buf, AUTH_SASL_MAX_MESSAGE + 1, "n", &out),
                     AUTH_STEP_ERROR);
    assert_string_equal(a.message, "invalid message length");

    /* no initial response: an empty SASLContinue, then client-first */
    auth_sasl_begin(&a, c, "alice", NULL, 0, &out);
    reset();
    static const uint8_t none[] = "SCRAM-SHA-256\0\xff\xff\xff\xff";
    assert_int_equal(auth_sasl_message(&a, 'p', none, sizeof(none) - 1, "n", &out),
                     AUTH_STEP_CONTINUE);
    static const uint8_t empty11[] = "R\0\0\0\x08\0\0\0\x0b";
    assert_int_equal(out.len, 9);
    assert_memory_equal(out.data, empty11, 9);
    reset();
    static const char first[] = "n,,n=,r=abc";
    assert_int_equal(auth_sasl_message(&a, 'p', (const uint8_t *)first, strlen(first), "SN", &out),
                     AUTH_STEP_CONTINUE);
    assert_int_equal(out.data[8], 11);
    assert_memory_equal(out.data + 9, "r=abcSN,s=", 10);
    authfile_free(c->users);
}

static void test_decide_and_refusals(void **state)
{
    char err[256], msg[320];
    static const char text[] = "host all alice 127.0.0.1/32 reject\n"
                               "local all all peer\n";
    struct auth_conf c = {.type = CONFIG_AUTH_HBA};
    c.hba = hba_parse(text, sizeof(text) - 1, "h", err, sizeof(err));
    assert_non_null(c.hba);
    struct sockaddr_storage ss = {0};
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    ss.ss_family = AF_INET;
    in->sin_addr.s_addr = htonl(0x7f000001);
    struct auth_decision d;
    struct auth_query q = {.addr = &ss, .user = "alice", .database = "db"};
    auth_decide(&c, &q, &d);
    assert_int_equal(d.method, AUTH_REJECT);
    assert_int_equal(d.line, 1);
    auth_hba_refusal(&d, "127.0.0.1", "alice", "db", true, msg, sizeof(msg));
    assert_string_equal(msg, "pg_hba.conf rejects connection for host \"127.0.0.1\", user "
                             "\"alice\", database \"db\", SSL encryption");
    q.user = "bob";
    auth_decide(&c, &q, &d);
    assert_int_equal(d.method, AUTH_NO_MATCH);
    auth_hba_refusal(&d, "127.0.0.1", "bob", "db", false, msg, sizeof(msg));
    assert_string_equal(msg, "no pg_hba.conf entry for host \"127.0.0.1\", user \"bob\", "
                             "database \"db\", no encryption");
    q.local = true;
    q.addr = NULL;
    auth_decide(&c, &q, &d);
    assert_int_equal(d.method, AUTH_PEER);
    hba_free(c.hba);
    /* trust: nothing is asked */
    auth_decide(NULL, &q, &d);
    assert_int_equal(d.method, AUTH_TRUST);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_offer_lists_plus_first_only_with_a_hash),
        cmocka_unit_test(test_messages),
        cmocka_unit_test(test_decide_and_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
