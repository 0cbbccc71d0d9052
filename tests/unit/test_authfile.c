/* userlist.txt: quoting, comments, refused entries, plain passwords derived once with a stable
 * salt, the file's permissions, the persistent server secret. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "authfile.h"

#pragma GCC diagnostic ignored "-Wunused-parameter"

static char err[512];
static const uint8_t key[32] = {1, 2, 3};

static const char rfc_secret[] =
    "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
    "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

static struct authfile *parse(const char *text)
{
    err[0] = 0;
    return authfile_parse(text, strlen(text), "userlist.txt", key, err, sizeof(err));
}

static void test_format(void **state)
{
    char text[1024];
    snprintf(text, sizeof(text),
             "; a comment\n"
             "\"user\" \"%s\" the rest is ignored\n"
             "   \n"
             "\"o\"\"brien\"\t\"pw with \"\"quotes\"\"\"\n"
             "\"zed\" \"plain\"\r\n",
             rfc_secret);
    struct authfile *a = parse(text);
    assert_non_null(a);
    assert_int_equal(a->n, 3);
    assert_int_equal(a->nplain, 2);
    const struct authfile_user *u = authfile_find(a, "user");
    assert_non_null(u);
    assert_false(u->plain);
    assert_int_equal(u->secret.iterations, 4096);
    u = authfile_find(a, "o\"brien");
    assert_non_null(u);
    assert_true(u->plain);
    struct scram_secret want;
    assert_int_equal(scram_make_secret("pw with \"quotes\"", 16, u->secret.salt, u->secret.salt_len,
                                       4096, &want),
                     0);
    assert_memory_equal(want.stored_key, u->secret.stored_key, 32);
    assert_null(authfile_find(a, "nobody"));
    assert_null(authfile_find(a, "use"));
    assert_int_equal(a->iterations, 4096);
    authfile_free(a);
}

static void test_plain_salt_is_stable(void **state)
{
    struct authfile *a = parse("\"alice\" \"secret1\"\n"), *b = parse("\"alice\" \"secret1\"\n");
    struct authfile *c = parse("\"bob\" \"secret1\"\n");
    assert_memory_equal(a->users[0].secret.salt, b->users[0].secret.salt, 16);
    assert_memory_equal(a->users[0].secret.stored_key, b->users[0].secret.stored_key, 32);
    assert_memory_not_equal(a->users[0].secret.salt, c->users[0].secret.salt, 16);
    authfile_free(a);
    authfile_free(b);
    authfile_free(c);
}

static void test_non_ascii_plain_matches_libpq(void **state)
{
    /* NFC text: SASLprep leaves it alone, so the stable salt is kept */
    struct authfile *a = parse("\"u\" \"p\xc3\xa4sswort\"\n");
    assert_non_null(a);
    struct scram_secret raw;
    assert_int_equal(scram_make_secret("p\xc3\xa4sswort", 9, a->users[0].secret.salt,
                                       a->users[0].secret.salt_len, 4096, &raw),
                     0);
    assert_memory_equal(raw.stored_key, a->users[0].secret.stored_key, 32);
    uint8_t salt[32];
    scram_derive(key, "plain-salt", "u", salt);
    assert_memory_equal(a->users[0].secret.salt, salt, 16);
    authfile_free(a);
    /* fullwidth letters: NFKC maps them to ASCII, as libpq does before hashing */
    a = parse("\"u\" \"\xef\xbd\x90\xef\xbd\x97\"\n"); /* "ｐｗ" */
    assert_non_null(a);
    assert_int_equal(scram_make_secret("pw", 2, a->users[0].secret.salt,
                                       a->users[0].secret.salt_len, 4096, &raw),
                     0);
    assert_memory_equal(raw.stored_key, a->users[0].secret.stored_key, 32);
    authfile_free(a);
}

struct bad {
    const char *text, *want;
};

static void test_refused(void **state)
{
    static const struct bad bad[] = {
        {"\"alice\" \"md5a3556571e93b0d20722ba62be61e8c2d\"\n", "line 2: MD5 secrets"},
        {"\"alice\" \"\"\n", "line 2: empty password"},
        {"\"\" \"pw\"\n", "line 2: empty user name"},
        {"alice pw\n", "line 2: expected user name in double quotes"},
        {"# not a comment here\n", "line 2: expected user name"},
        {"\"alice\"\n", "line 2: expected password in double quotes"},
        {"\"alice\" \"pw\n", "line 2: unterminated quoted field"},
        {"\"alice\" \"SCRAM-SHA-256$4096:abc\"\n", "line 2: invalid SCRAM-SHA-256 verifier"},
        {"\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\" \"pw\"\n",
         "line 2: user name longer than 63 bytes"},
        {"\"ok\" \"again\"\n", "user \"ok\" is listed twice"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char text[256];
        snprintf(text, sizeof(text), "\"ok\" \"pw\"\n%s\"after\" \"pw\"\n", bad[i].text);
        struct authfile *a = parse(text);
        if (a || !strstr(err, bad[i].want) || !strstr(err, "userlist.txt"))
            fail_msg("'%s': got '%s', want '%s'", bad[i].text, a ? "(accepted)" : err, bad[i].want);
        /* the error never quotes a secret */
        assert_null(strstr(err, "a3556571"));
    }
}

static void test_dominant_iterations(void **state)
{
    struct scram_secret s;
    char v1[256], v2[256], text[1024];
    uint8_t salt[16] = {0};
    scram_make_secret("x", 1, salt, 16, 8192, &s);
    scram_format_secret(&s, v1, sizeof(v1));
    scram_make_secret("y", 1, salt, 16, 4096, &s);
    scram_format_secret(&s, v2, sizeof(v2));
    snprintf(text, sizeof(text), "\"a\" \"%s\"\n\"b\" \"%s\"\n\"c\" \"%s\"\n", v1, v1, v2);
    struct authfile *a = parse(text);
    assert_non_null(a);
    assert_int_equal(a->iterations, 8192); /* mocks announce what most users have */
    authfile_free(a);
}

static void test_load_permissions(void **state)
{
    char path[] = "/tmp/pgwp-authfile-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "\"a\" \"pw\"\n", 9), 9);
    close(fd);
    chmod(path, 0644);
    assert_null(authfile_load(path, key, err, sizeof(err)));
    assert_non_null(strstr(err, "must not be world-accessible (mode 0644)"));
    chmod(path, 0640);
    struct authfile *a = authfile_load(path, key, err, sizeof(err));
    assert_non_null(a);
    assert_true(a->group_readable);
    authfile_free(a);
    chmod(path, 0600);
    a = authfile_load(path, key, err, sizeof(err));
    assert_non_null(a);
    assert_false(a->group_readable);
    authfile_free(a);
    unlink(path);
    assert_null(authfile_load(path, key, err, sizeof(err)));
    assert_non_null(strstr(err, "cannot read auth file"));
}

static void test_server_key(void **state)
{
    char dir[] = "/tmp/pgwp-key-XXXXXX", path[64];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/secret", dir);
    uint8_t k1[32], k2[32];
    assert_int_equal(authfile_server_key(path, k1, err, sizeof(err)), 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(authfile_server_key(path, k2, err, sizeof(err)), 0);
    assert_memory_equal(k1, k2, 32); /* the same after a restart */
    chmod(path, 0604);
    assert_int_equal(authfile_server_key(path, k2, err, sizeof(err)), -1);
    unlink(path);
    rmdir(dir);
    assert_int_equal(authfile_server_key("/nonexistent-dir/secret", k2, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "--auth-secret-file"));
}

static void test_hash_password(void **state)
{
    char v[SCRAM_SECRET_MAX];
    struct scram_secret s, check;
    assert_int_equal(authfile_hash_password("pencil", v, sizeof(v)), 0);
    assert_int_equal(scram_parse_secret(v, &s), 0);
    assert_int_equal(s.iterations, 4096);
    assert_int_equal(scram_make_secret("pencil", 6, s.salt, s.salt_len, 4096, &check), 0);
    assert_memory_equal(check.stored_key, s.stored_key, 32);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_plain_salt_is_stable),
        cmocka_unit_test(test_non_ascii_plain_matches_libpq),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_dominant_iterations),
        cmocka_unit_test(test_load_permissions),
        cmocka_unit_test(test_server_key),
        cmocka_unit_test(test_hash_password),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
