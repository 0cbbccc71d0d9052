/* One audit record as one JSON line: every ill-formed UTF-8 shape becomes U+FFFD with the raw
 * bytes in a `_hex` sibling, control characters are escaped, and every key is where the README
 * says. Python's json module (strict UTF-8) has the last word on validity. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit_int.h"
#include "audit_test.h"

static const char *json_of(struct audit_text *t, const char *s, size_t len, bool *valid)
{
    t->len = 0;
    *valid = audit_json_string(t, s, len);
    assert_false(t->failed);
    return t->buf;
}

#define R "\xEF\xBF\xBD" /* U+FFFD */

/* Each maximal ill-formed subpart becomes one U+FFFD, as Python's errors="replace" does. */
static void test_invalid_utf8_shapes(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"\x80", "\"" R "\""}, /* lone continuation */
        {"a\xbf"
         "b",
         "\"a" R "b\""},                         /* continuation between ASCII */
        {"\xc0\xaf", "\"" R R "\""},             /* overlong '/' (2 bytes) */
        {"\xc1\xbf", "\"" R R "\""},             /* overlong (C1) */
        {"\xe0\x80\xaf", "\"" R R R "\""},       /* overlong '/' (3 bytes) */
        {"\xf0\x80\x80\xaf", "\"" R R R R "\""}, /* overlong '/' (4 bytes) */
        {"\xed\xa0\x80", "\"" R R R "\""},       /* UTF-16 surrogate */
        {"\xf4\x90\x80\x80", "\"" R R R R "\""}, /* above U+10FFFF */
        {"\xff", "\"" R "\""},                   /* never in UTF-8 */
        {"\xfe\xfe", "\"" R R "\""},             /* never in UTF-8 */
        {"\xe2\x82"
         "x",
         "\"" R "x\""},                                        /* truncated, then ASCII */
        {"\xf0\x9f\x98", "\"" R "\""},                         /* truncated at the end */
        {"\xc3", "\"" R "\""},                                 /* truncated lead at the end */
        {"\xf0\x9f\x98\x80\xf5", "\"\xf0\x9f\x98\x80" R "\""}, /* valid, then F5 */
    };
    struct audit_text t = {0};
    bool valid;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_string_equal(json_of(&t, cases[i].in, strlen(cases[i].in), &valid), cases[i].out);
        assert_false(valid);
        assert_int_not_equal(audit_utf8_valid_prefix(cases[i].in, strlen(cases[i].in)),
                             strlen(cases[i].in));
    }
    const char *ok = "é€😀 \x7f plain";
    assert_string_equal(json_of(&t, ok, strlen(ok), &valid), "\"é€😀 \x7f plain\"");
    assert_true(valid);
    assert_string_equal(json_of(&t, "q\"b\\n\nr\rt\t\x01\x1f", 12, &valid),
                        "\"q\\\"b\\\\n\\nr\\rt\\t\\u0001\\u001f\"");
    assert_string_equal(json_of(&t, "a\0b", 3, &valid), "\"a\\u0000b\"");
    audit_text_free(&t);
}

static void test_hex_sibling_only_when_invalid(void **state)
{
    (void)state;
    struct audit_text t = {0};
    audit_json_text_field(&t, "user", "bob", 3);
    assert_string_equal(t.buf, ",\"user\":\"bob\"");
    t.len = 0;
    audit_json_text_field(&t, "user", "b\xffz", 3);
    assert_string_equal(t.buf, ",\"user\":\"b" R "z\",\"user_hex\":\"62ff7a\"");
    audit_text_free(&t);
}

static void format_entry(struct audit_text *t, const struct audit_record *r)
{
    struct audit_entry e = {.rec = *r, .sql_size = r->sql_len};
    t->len = 0;
    audit_format(t, &e, r->sql, r->sql_len, false);
    assert_false(t->failed);
}

static void test_record_keys(void **state)
{
    (void)state;
    struct audit_text t = {0};
    struct audit_record r = audit_test_record(7, "select 1");
    r.duration_us = 1500;
    r.rows = 1;
    r.bytes = 11;
    format_entry(&t, &r);
    assert_non_null(strstr(t.buf,
                           "\"session\":7,\"client\":\"127.0.0.1:5000\",\"user\":\"alice\","
                           "\"auth\":\"trust\",\"database\":\"app\",\"application\":\"psql\","
                           "\"statement\":\"select 1\",\"duration_ms\":1.500,\"rows\":1,"
                           "\"bytes\":11,\"outcome\":\"ok\",\"sqlstate\":null,"
                           "\"rule\":null,\"protocol\":\"simple\"}\n"));
    assert_int_equal(strncmp(t.buf, "{\"time\":\"", 9), 0);
    /* a proven identity: the method, and the certificate's subject when there is one */
    r.auth = "cert";
    r.cert_subject = "CN=alice,O=Example";
    format_entry(&t, &r);
    assert_non_null(strstr(t.buf, "\"user\":\"alice\",\"auth\":\"cert\","
                                  "\"cert_subject\":\"CN=alice,O=Example\",\"database\""));
    r.auth = NULL;
    r.cert_subject = NULL;

    struct audit_param p[] = {
        {.kind = AUDIT_PARAM_NULL},
        {.kind = AUDIT_PARAM_TEXT, .text = "abc", .len = 3, .size = 3},
        {.kind = AUDIT_PARAM_TEXT, .text = "abc", .len = 3, .size = 10},
        {.kind = AUDIT_PARAM_TEXT, .text = "\xff", .len = 1, .size = 1},
        {.kind = AUDIT_PARAM_BINARY, .size = 16},
    };
    r.outcome = "client_gone";
    r.sqlstate = "57014";
    r.rule = "query-timeout";
    r.protocol = "extended";
    r.upstream_sqlstate = "40001";
    r.upstream_status = "rolled_back";
    r.portal = "p1";
    r.statement_name = "s\xff";
    r.params = p;
    r.nparams = 5;
    r.executes = 3;
    format_entry(&t, &r);
    assert_non_null(strstr(
        t.buf, "\"outcome\":\"client_gone\",\"sqlstate\":\"57014\",\"rule\":\"query-timeout\","
               "\"protocol\":\"extended\",\"upstream_sqlstate\":\"40001\","
               "\"upstream_status\":\"rolled_back\",\"portal\":\"p1\",\"statement_name\":\"s" R
               "\",\"statement_name_hex\":\"73ff\",\"params\":[null,\"abc\","
               "{\"text\":\"abc\",\"bytes\":10},{\"text\":\"" R "\",\"bytes\":1,\"hex\":\"ff\"},"
               "{\"binary\":16}],\"executes\":3}\n"));
    /* a shadow rule that would also have acted follows the rule */
    r.shadow_rule = "deny:truncate";
    format_entry(&t, &r);
    assert_non_null(strstr(t.buf, "\"rule\":\"query-timeout\",\"shadow_rule\":\"deny:truncate\","
                                  "\"protocol\""));
    audit_text_free(&t);
}

/* The parser that matters is the reader's: every invalid shape in every client-supplied field,
 * one record, checked by Python's json module (strict UTF-8) against the raw bytes. */
static void test_invalid_utf8_record_parses_as_json(void **state)
{
    (void)state;
    static const char shapes[] = "\x80|\xbf|\xc0\xaf|\xe0\x80\xaf|\xed\xa0\x80|\xf4\x90\x80\x80|"
                                 "\xff|\xfe|\xe2\x82x|\"\\\n\x01|\xf0\x9f\x98";
    struct audit_param p[] = {{.kind = AUDIT_PARAM_TEXT,
                               .text = shapes,
                               .len = sizeof(shapes) - 1,
                               .size = sizeof(shapes) - 1}};
    struct audit_record r = audit_test_record(1, shapes);
    r.user = r.database = r.application = r.portal = shapes;
    r.protocol = "extended";
    r.params = p;
    r.nparams = 1;
    struct audit_text t = {0};
    format_entry(&t, &r);
    char dir[] = "/tmp/pgwp-audit-json-XXXXXX", path[64], script[64];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/line.json", dir);
    snprintf(script, sizeof(script), "%s/check.py", dir);
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    fwrite(t.buf, 1, t.len, fp);
    fclose(fp);
    char hex[2 * sizeof(shapes) + 1], cmd[256];
    fp = fopen(script, "w");
    assert_non_null(fp);
    fputs("import json, sys\n"
          "raw = open(sys.argv[1], 'rb').read()\n"
          "assert raw.count(b'\\n') == 1 and raw.endswith(b'\\n'), raw\n"
          "rec = json.loads(raw.decode('utf-8'))\n"
          "want = bytes.fromhex(sys.argv[2])\n"
          "for k in ('user', 'database', 'application', 'statement', 'portal'):\n"
          "    assert bytes.fromhex(rec[k + '_hex']) == want, k\n"
          "    assert rec[k] == want.decode('utf-8', 'replace'), k\n"
          "assert bytes.fromhex(rec['params'][0]['hex']) == want\n"
          "assert rec['params'][0]['text'] == want.decode('utf-8', 'replace')\n",
          fp);
    fclose(fp);
    for (size_t i = 0; i + 1 < sizeof(shapes); i++)
        snprintf(hex + 2 * i, 3, "%02x", (unsigned char)shapes[i]);
    snprintf(cmd, sizeof(cmd), "/usr/bin/python3 %s %s %s", script, path, hex);
    assert_int_equal(system(cmd), 0);
    unlink(script);
    unlink(path);
    rmdir(dir);
    audit_text_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invalid_utf8_shapes),
        cmocka_unit_test(test_hex_sibling_only_when_invalid),
        cmocka_unit_test(test_record_keys),
        cmocka_unit_test(test_invalid_utf8_record_parses_as_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
