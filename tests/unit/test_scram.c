/* SCRAM-SHA-256(-PLUS): RFC 7677's test vector, secrets, base64, and every malformed message
 * with PostgreSQL's SQLSTATE and text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "scram.h"

#pragma GCC diagnostic ignored "-Wunused-parameter"

/* RFC 7677 §3: user "user", password "pencil". */
static const char rfc_secret[] =
    "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
    "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";
static const char rfc_first[] = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
static const char rfc_snonce[] = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
static const char rfc_server_first[] =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
static const char rfc_final[] =
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjf"
    "MHgsqmmiz7AndVQ=";
static const char rfc_server_final[] = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

static char out[4096];
static size_t outlen;

static void start(struct scram_state *st, bool offered, bool plus)
{
    struct scram_secret sec;
    assert_int_equal(scram_parse_secret(rfc_secret, &sec), 0);
    static const uint8_t hash[32] = {1, 2, 3, 4, 5, 6, 7, 8};
    scram_init(st, &sec, false, offered, plus, hash, sizeof(hash));
}

static enum scram_status feed(struct scram_state *st, const char *msg)
{
    return scram_exchange(st, (const uint8_t *)msg, strlen(msg), rfc_snonce, out, sizeof(out),
                          &outlen);
}

static void test_rfc7677_vector(void **state)
{
    struct scram_state st;
    start(&st, false, false);
    assert_int_equal(feed(&st, rfc_first), SCRAM_CONTINUE);
    assert_string_equal(out, rfc_server_first);
    assert_int_equal(outlen, strlen(rfc_server_first));
    assert_int_equal(feed(&st, rfc_final), SCRAM_OK);
    assert_string_equal(out, rfc_server_final);
    /* the exchange is over: a third message is a protocol error */
    assert_int_equal(feed(&st, rfc_final), SCRAM_ERROR);
}

static void test_secret_from_password(void **state)
{
    struct scram_secret a, b;
    assert_int_equal(scram_parse_secret(rfc_secret, &a), 0);
    assert_int_equal(scram_make_secret("pencil", 6, a.salt, a.salt_len, 4096, &b), 0);
    assert_memory_equal(a.stored_key, b.stored_key, 32);
    assert_memory_equal(a.server_key, b.server_key, 32);
    char fmt[SCRAM_SECRET_MAX];
    assert_int_equal(scram_format_secret(&b, fmt, sizeof(fmt)), (int)strlen(rfc_secret));
    assert_string_equal(fmt, rfc_secret);
}

static void test_secret_parse_rejects(void **state)
{
    static const char *const bad[] = {
        "",
        "md5a3556571e93b0d20722ba62be61e8c2d",
        "SCRAM-SHA-256$0:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$x:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$4096:$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4q=:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=",
        "SCRAM-SHA-1$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
    };
    struct scram_secret s;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (scram_parse_secret(bad[i], &s) == 0)
            fail_msg("accepted secret '%s'", bad[i]);
}

static void test_base64_strict(void **state)
{
    uint8_t buf[64];
    assert_int_equal(scram_b64_decode("biws", 4, buf, sizeof(buf)), 3);
    assert_memory_equal(buf, "n,,", 3);
    assert_int_equal(scram_b64_decode("YQ==", 4, buf, sizeof(buf)), 1);
    assert_int_equal(scram_b64_decode("YWI=", 4, buf, sizeof(buf)), 2);
    static const char *const bad[] = {
        "YQ=", "Y Q==", "YQ==YQ==", "=YQ=", "Y=Q=", "YQ=a", "!!!!", "YQ\n=", "Y"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (scram_b64_decode(bad[i], strlen(bad[i]), buf, sizeof(buf)) >= 0)
            fail_msg("decoded '%s'", bad[i]);
    /* a 33-byte proof is not a 32-byte one (OpenSSL's EVP_DecodeBlock would say 33 for 32) */
    char enc[80];
    uint8_t k[33] = {0};
    assert_int_equal(scram_b64_encode(k, 32, enc, sizeof(enc)), 44);
    assert_int_equal(scram_b64_decode(enc, 44, buf, sizeof(buf)), 32);
    assert_int_equal(scram_b64_encode(k, 33, enc, sizeof(enc)), 44);
    assert_int_equal(scram_b64_decode(enc, 44, buf, sizeof(buf)), 33);
}

static void test_mock_secret_stable(void **state)
{
    uint8_t key[32] = {9}, other[32] = {8};
    struct scram_secret a, b, c, d;
    scram_mock_secret(key, "nobody", 4096, &a);
    scram_mock_secret(key, "nobody", 4096, &b);
    scram_mock_secret(key, "somebody", 4096, &c);
    scram_mock_secret(other, "nobody", 4096, &d);
    assert_int_equal(a.salt_len, 16);
    assert_memory_equal(a.salt, b.salt, 16);
    assert_memory_not_equal(a.salt, c.salt, 16);
    assert_memory_not_equal(a.salt, d.salt, 16);
    assert_int_equal(a.iterations, 4096);
    /* a mock exchange runs to the end and fails like a wrong password */
    struct scram_state st;
    scram_init(&st, &a, true, false, false, NULL, 0);
    assert_int_equal(feed(&st, rfc_first), SCRAM_CONTINUE);
    char final[512];
    assert_int_equal(scram_client_final("pencil", rfc_first + 3, out, NULL, final, sizeof(final)),
                     0);
    assert_int_equal(feed(&st, final), SCRAM_FAILED);
}

static void test_wrong_password_fails(void **state)
{
    struct scram_state st;
    start(&st, false, false);
    assert_int_equal(feed(&st, rfc_first), SCRAM_CONTINUE);
    char final[512];
    assert_int_equal(scram_client_final("pencil", rfc_first + 3, out, NULL, final, sizeof(final)),
                     0);
    assert_string_equal(final, rfc_final); /* the client helper reproduces the vector */
    start(&st, false, false);
    assert_int_equal(feed(&st, rfc_first), SCRAM_CONTINUE);
    assert_int_equal(scram_client_final("pencil!", rfc_first + 3, out, NULL, final, sizeof(final)),
                     0);
    assert_int_equal(feed(&st, final), SCRAM_FAILED);
}

static void test_channel_binding(void **state)
{
    static const uint8_t hash[32] = {1, 2, 3, 4, 5, 6, 7, 8};
    uint8_t input[64];
    memcpy(input, "p=tls-server-end-point,,", 24);
    memcpy(input + 24, hash, 32);
    char cb[128], first[] = "p=tls-server-end-point,,n=,r=rOprNGfwEbeRWgbNEkqO", final[512];
    scram_b64_encode(input, 56, cb, sizeof(cb));
    struct scram_state st;
    start(&st, true, true);
    assert_int_equal(feed(&st, first), SCRAM_CONTINUE);
    assert_int_equal(scram_client_final("pencil", first + 24, out, cb, final, sizeof(final)), 0);
    assert_int_equal(feed(&st, final), SCRAM_OK);

    /* a hash of another certificate (a man in the middle's) */
    input[30] ^= 1;
    scram_b64_encode(input, 56, cb, sizeof(cb));
    start(&st, true, true);
    assert_int_equal(feed(&st, first), SCRAM_CONTINUE);
    assert_int_equal(scram_client_final("pencil", first + 24, out, cb, final, sizeof(final)), 0);
    assert_int_equal(feed(&st, final), SCRAM_ERROR);
    assert_string_equal(st.code, "28000");
    assert_string_equal(st.message, "SCRAM channel binding check failed");

    /* 'y' where -PLUS was offered: a downgrade */
    start(&st, true, false);
    assert_int_equal(feed(&st, "y,,n=,r=abc"), SCRAM_ERROR);
    assert_string_equal(st.code, "28000");
    assert_string_equal(st.message, "SCRAM channel binding negotiation error");
    assert_non_null(strstr(st.detail, "However, this server does support channel binding."));

    /* 'y' where nothing was offered (no TLS, or no usable certificate hash): fine, c=eSws */
    start(&st, false, false);
    assert_int_equal(feed(&st, "y,,n=,r=rOprNGfwEbeRWgbNEkqO"), SCRAM_CONTINUE);
    assert_int_equal(scram_client_final("pencil", "n=,r=rOprNGfwEbeRWgbNEkqO", out, "eSws", final,
                                        sizeof(final)),
                     0);
    assert_int_equal(feed(&st, final), SCRAM_OK);

    /* -PLUS selected, but no binding data in the message */
    start(&st, true, true);
    assert_int_equal(feed(&st, "n,,n=,r=abc"), SCRAM_ERROR);
    assert_string_equal(st.code, "08P01");
    assert_non_null(strstr(st.detail, "SCRAM-SHA-256-PLUS, but the SCRAM message does not"));
}

struct bad_case {
    bool plus;         /* -PLUS offered and selected */
    const char *first; /* NULL: the RFC's client-first */
    const char *final; /* NULL: the case is about client-first */
    const char *code, *message, *detail;
};

static const struct bad_case bad_cases[] = {
    {false, "p=tls-server-end-point,,n=,r=abc", NULL, "08P01", "malformed SCRAM message",
     "The client selected SCRAM-SHA-256 without channel binding, but the SCRAM message includes "
     "channel binding data."},
    {true, "p=tls-unique,,n=,r=abc", NULL, "08P01",
     "unsupported SCRAM channel-binding type \"tls-unique\"", ""},
    {false, "x,,n=,r=abc", NULL, "08P01", "malformed SCRAM message",
     "Unexpected channel-binding flag \"x\"."},
    {false, "n;,n=,r=abc", NULL, "08P01", "malformed SCRAM message",
     "Comma expected, but found character \";\"."},
    {false, "n,a=bob,n=,r=abc", NULL, "0A000",
     "client uses authorization identity, but it is not supported", ""},
    {false, "n,x,n=,r=abc", NULL, "08P01", "malformed SCRAM message",
     "Unexpected attribute \"x\" in client-first-message."},
    {false, "n,,m=ext,n=,r=abc", NULL, "0A000", "client requires an unsupported SCRAM extension",
     ""},
    {false, "n,,r=abc", NULL, "08P01", "malformed SCRAM message",
     "Expected attribute \"n\" but found \"r\"."},
    {false, "n,,n,r=abc", NULL, "08P01", "malformed SCRAM message",
     "Expected character \"=\" for attribute \"n\"."},
    {false, "n,,n=,r=ab c", NULL, "08P01", "non-printable characters in SCRAM nonce", ""},
    {false, "n,,n=,r=ab\x80", NULL, "08P01", "non-printable characters in SCRAM nonce", ""},
    {false, "n,,n=,r=abc,1=x", NULL, "08P01", "malformed SCRAM message",
     "Attribute expected, but found invalid character \"1\"."},
    {false, "n,,n=", NULL, "08P01", "malformed SCRAM message",
     "Expected attribute \"r\" but found \"0x00\"."},
    {false, NULL, "c=eSws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=AAAA", "08P01",
     "unexpected SCRAM channel-binding attribute in client-final-message", ""},
    {false, NULL,
     "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k1,p=dHzbZapWIk4jUhN+"
     "Ute9ytag9zjfMHgsqmmiz7AndVQ=",
     "08P01", "invalid SCRAM response", "Nonce does not match."},
    {false, NULL, "c=biws,r=rOprNGfwEbeRWgbNEkqO,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
     "08P01", "invalid SCRAM response", "Nonce does not match."},
    {false, NULL, "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=!!!", "08P01",
     "malformed SCRAM message", "Malformed proof in client-final-message."},
    {false, NULL,
     "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+"
     "Ute9ytag9zjfMHgsqmmiz7AndQ==",
     "08P01", "malformed SCRAM message", "Malformed proof in client-final-message."},
    {false, NULL,
     "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9 "
     "ytag9zjfMHgsqmmiz7AndVQ=",
     "08P01", "malformed SCRAM message", "Malformed proof in client-final-message."},
    {false, NULL,
     "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+"
     "Ute9ytag9zjfMHgsqmmiz7AndVQ=,x=1",
     "08P01", "malformed SCRAM message", "Garbage found at the end of client-final-message."},
    {false, NULL, "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0", "08P01",
     "malformed SCRAM message", "Attribute expected, but found end of string."},
    {false, NULL, "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,c=biws", "08P01",
     "malformed SCRAM message", "Expected attribute \"c\" but found \"r\"."},
};

static void test_malformed_messages(void **state)
{
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        const struct bad_case *c = &bad_cases[i];
        struct scram_state st;
        start(&st, c->plus, c->plus);
        enum scram_status r = feed(&st, c->first ? c->first : rfc_first);
        if (c->final) {
            assert_int_equal(r, SCRAM_CONTINUE);
            r = feed(&st, c->final);
        }
        if (r != SCRAM_ERROR || strcmp(st.code, c->code) || strcmp(st.message, c->message) ||
            strcmp(st.detail, c->detail) || out[0] || outlen)
            fail_msg("case %zu: got %d %s '%s' '%s', want %s '%s' '%s'", i, r, st.code, st.message,
                     st.detail, c->code, c->message, c->detail);
    }
}

static void test_message_length_and_nul(void **state)
{
    struct scram_state st;
    start(&st, false, false);
    assert_int_equal(
        scram_exchange(&st, (const uint8_t *)"", 0, rfc_snonce, out, sizeof(out), &outlen),
        SCRAM_ERROR);
    assert_string_equal(st.detail, "The message is empty.");
    start(&st, false, false);
    assert_int_equal(scram_exchange(&st, (const uint8_t *)"n,,n=\0,r=abc", 12, rfc_snonce, out,
                                    sizeof(out), &outlen),
                     SCRAM_ERROR);
    assert_string_equal(st.code, "08P01");
    assert_string_equal(st.detail, "Message length does not match input length.");
    static char big[2048];
    memset(big, 'a', sizeof(big));
    memcpy(big, "n,,n=,r=", 8);
    start(&st, false, false);
    assert_int_equal(scram_exchange(&st, (const uint8_t *)big, sizeof(big), rfc_snonce, out,
                                    sizeof(out), &outlen),
                     SCRAM_ERROR);
    assert_string_equal(st.code, "08P01");
    /* the longest accepted message still fits the server-first buffer */
    start(&st, false, false);
    assert_int_equal(scram_exchange(&st, (const uint8_t *)big, SCRAM_MAX_MESSAGE, rfc_snonce, out,
                                    sizeof(out), &outlen),
                     SCRAM_CONTINUE);
}

static void initial(const void *p, size_t n, int want_rc, int32_t want_len)
{
    const char *mech = NULL, *why = NULL;
    const uint8_t *data = NULL;
    int32_t len = 0;
    int rc = scram_parse_initial(p, n, &mech, &data, &len, &why);
    assert_int_equal(rc, want_rc);
    if (rc == 0)
        assert_int_equal(len, want_len);
    else
        assert_non_null(why);
}

static void test_initial_response_layout(void **state)
{
    initial("SCRAM-SHA-256\0\0\0\0\x03"
            "abc",
            21, 0, 3);
    initial("SCRAM-SHA-256\0\xff\xff\xff\xff", 18, 0, -1);
    initial("SCRAM-SHA-256\0\x7f\xff\xff\xff"
            "abc",
            21, -1, 0); /* length past the end */
    initial("SCRAM-SHA-256\0\xff\xff\xff\xfe"
            "abc",
            21, -1, 0); /* -2 */
    initial("SCRAM-SHA-256\0\0\0\0\x02"
            "abc",
            21, -1, 0);                        /* bytes left over */
    initial("SCRAM-SHA-256\0\0\0", 16, -1, 0); /* no room for the length */
    initial("SCRAM-SHA-256", 13, -1, 0);       /* no NUL */
    initial("SCRAM-SHA-256\0\xff\xff\xff\xff"
            "x",
            19, -1, 0); /* -1 then data */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc7677_vector),
        cmocka_unit_test(test_secret_from_password),
        cmocka_unit_test(test_secret_parse_rejects),
        cmocka_unit_test(test_base64_strict),
        cmocka_unit_test(test_mock_secret_stable),
        cmocka_unit_test(test_wrong_password_fails),
        cmocka_unit_test(test_channel_binding),
        cmocka_unit_test(test_malformed_messages),
        cmocka_unit_test(test_message_length_and_nul),
        cmocka_unit_test(test_initial_response_layout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
