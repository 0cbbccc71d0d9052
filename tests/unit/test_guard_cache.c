/* The decision cache: its key (literals abstracted only where our lexer sees PostgreSQL's
 * token boundaries), the per-thread memory of recent keys, hits, bounds and policy changes. */
#include "guard_test.h"

/* The key alone (the memo of recent texts in use, as for the policy). */
static size_t key_of(const char *sql, size_t len, char *key, size_t cap)
{
    uint64_t hash;
    return guard_cache_key_hashed(sql, len, key, cap, &hash);
}

static struct guard_policy *gt_make(const char *deny, const char *allow, bool ro)
{
    return gt_policy(deny, allow, NULL, ro);
}

static void test_cache_key(void **state)
{
    (void)state;
    char a[GUARD_CACHE_KEY_MAX], b[GUARD_CACHE_KEY_MAX];
    size_t la, lb;

#define SAME(x, y)                                                                                 \
    do {                                                                                           \
        la = key_of(x, strlen(x), a, sizeof a);                                                    \
        lb = key_of(y, strlen(y), b, sizeof b);                                                    \
        assert_true(la > 0);                                                                       \
        assert_true(la == lb && memcmp(a, b, la) == 0);                                            \
    } while (0)
#define DIFFERENT(x, y)                                                                            \
    do {                                                                                           \
        la = key_of(x, strlen(x), a, sizeof a);                                                    \
        lb = key_of(y, strlen(y), b, sizeof b);                                                    \
        assert_false(la == lb && memcmp(a, b, la) == 0);                                           \
    } while (0)

    SAME("SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
         "SELECT abalance FROM pgbench_accounts WHERE aid = 7;");
    SAME("SELECT * FROM t WHERE a = 'x'", "SELECT * FROM t WHERE a = 'it''s; DROP TABLE t'");
    SAME("SELECT 1.5, x1 FROM t", "SELECT 22.75, x1 FROM t");
    DIFFERENT("SELECT * FROM t1", "SELECT * FROM t2");
    DIFFERENT("SELECT \"a1\"", "SELECT \"a2\"");
    DIFFERENT("SELECT \"a'b\" FROM t", "SELECT \"a'c\" FROM t");
    DIFFERENT("SELECT 'abc", "SELECT 'abc'");
    DIFFERENT("SELECT $$'$$; DROP TABLE t; --'", "SELECT $$'$$; SELECT 1; --'");
    DIFFERENT("SELECT $1", "SELECT $2");
    DIFFERENT("SELECT E'\\''; DROP TABLE t; --'", "SELECT E'\\''; SELECT 1; --'");
    DIFFERENT("SELECT 1 /* ' */; DROP TABLE t; -- '", "SELECT 1 /* ' */; SELECT 1; -- '");
    DIFFERENT("SELECT U&\"a!0061\" UESCAPE '!'", "SELECT U&\"a!0061\" UESCAPE '#'");
    DIFFERENT("SELECT 0", "SELECT 0 -- x"); /* verbatim and normalized keys never meet */
    /* digits right after an identifier byte name a different table, ASCII or not */
    DIFFERENT("DELETE FROM t_1", "DELETE FROM t_2");
    DIFFERENT("SELECT * FROM \xc3\xa9"
              "1",
              "SELECT * FROM \xc3\xa9"
              "2");
    SAME("SELECT 'a'1", "SELECT 'b'2"); /* after a string, a digit starts a number */

    char big[GUARD_CACHE_KEY_MAX + 100];
    memset(big, ' ', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    memcpy(big, "SELECT 1", 8);
    assert_int_equal(key_of(big, strlen(big), a, sizeof a), 0);
    /* Literals shrink: a long string literal still fits. */
    memset(big + 7, 'x', sizeof big - 9);
    big[7] = '\'';
    big[sizeof big - 2] = '\'';
    assert_true(key_of(big, strlen(big), a, sizeof a) > 0);

    /* A text keyed again, with the same or a smaller buffer, gets exactly the key a fresh pass
     * gives, and a buffer too small for it gets none. */
    const char *q = "SELECT abalance FROM pgbench_accounts WHERE aid = 42";
    la = key_of(q, strlen(q), a, sizeof a);
    lb = key_of(q, strlen(q), b, sizeof b);
    assert_true(la > 0 && la == lb && memcmp(a, b, la) == 0);
    assert_int_equal(key_of(q, strlen(q), b, la), la);
    assert_memory_equal(a, b, la);
    assert_int_equal(key_of(q, strlen(q), b, la - 1), 0);
    /* the same bytes with a shorter length are another text */
    q = "SELECT 1 FROM tab";
    la = key_of(q, strlen(q), a, sizeof a);
    lb = key_of(q, strlen(q) - 1, b, sizeof b);
    assert_false(la == lb && memcmp(a, b, la) == 0);
#undef SAME
#undef DIFFERENT
}

static void test_cache_hits(void **state)
{
    (void)state;
    struct guard_policy *p = gt_make("drop,delete,function:pg_sleep", NULL, false);
    struct guard_cache *c = guard_cache_new();
    struct guard_decision d;

    gt_check(p, c, "SELECT * FROM t WHERE a = 1", &d);
    assert_int_equal(guard_cache_hits(c), 0);
    gt_check(p, c, "SELECT * FROM t WHERE a = 2", &d);
    assert_int_equal(guard_cache_hits(c), 1);
    assert_int_equal(d.verdict, GUARD_ALLOW);
    gt_check(p, c, "DELETE FROM t WHERE a = 5", &d);
    gt_check(p, c, "DELETE FROM t WHERE a = 6", &d);
    assert_int_equal(guard_cache_hits(c), 2);
    assert_int_equal(d.verdict, GUARD_DENY);
    assert_string_equal(d.rule, "deny:delete");

    /* Dollar quotes hide statement boundaries from the key lexer: no shared key. */
    gt_check(p, c, "SELECT $$'$$; SELECT 1; --'", &d);
    assert_int_equal(d.verdict, GUARD_ALLOW);
    gt_check(p, c, "SELECT $$'$$; DROP TABLE t; --'", &d);
    assert_int_equal(d.verdict, GUARD_DENY);
    assert_string_equal(d.rule, "deny:drop");
    /* ... and exact text still hits. */
    uint64_t h = guard_cache_hits(c);
    gt_check(p, c, "SELECT $$'$$; DROP TABLE t; --'", &d);
    assert_int_equal(guard_cache_hits(c), h + 1);
    assert_int_equal(d.verdict, GUARD_DENY);

    /* UESCAPE comes from a string literal and changes the identifier. */
    gt_check(p, c, "SELECT U&\"pg_sl!0065ep\" UESCAPE '#'(1)", &d);
    assert_int_equal(d.verdict, GUARD_ALLOW);
    gt_check(p, c, "SELECT U&\"pg_sl!0065ep\" UESCAPE '!'(1)", &d);
    assert_int_equal(d.verdict, GUARD_DENY);

    /* A syntax error is never cached: the same shape can be valid. The other way round, a
     * cached ALLOW answers for a same-shaped text the parser would reject; PostgreSQL then
     * reports the syntax error itself, and a shape's statement kinds cannot differ. */
    gt_check(p, c, "FETCH 99999999999 FROM c", &d);
    assert_int_equal(d.verdict, GUARD_SYNTAX);
    assert_int_equal(d.cursorpos, 7);
    gt_check(p, c, "FETCH 5 FROM c", &d);
    assert_int_equal(d.verdict, GUARD_ALLOW);
    gt_check(p, c, "FETCH 99999999999 FROM c", &d);
    assert_int_equal(d.verdict, GUARD_ALLOW);
    guard_policy_free(p);

    /* set_config() decisions read a literal: not cached by shape. */
    p = gt_make(NULL, NULL, true);
    gt_check(p, c, "SELECT set_config('work_mem', '1MB', false)", &d);
    assert_int_equal(d.verdict, GUARD_ALLOW);
    gt_check(p, c, "SELECT set_config('role', 'bob', false)", &d);
    assert_int_equal(d.verdict, GUARD_READ_ONLY);
    guard_policy_free(p);

    /* Another policy: old entries must not answer. */
    p = gt_make("drop", NULL, false);
    gt_check(p, c, "DELETE FROM t WHERE a = 7", &d);
    assert_int_equal(d.verdict, GUARD_ALLOW);
    guard_policy_free(p);
    p = gt_make("delete", NULL, false);
    gt_check(p, c, "DELETE FROM t WHERE a = 8", &d);
    assert_int_equal(d.verdict, GUARD_DENY);
    guard_policy_free(p);
    guard_cache_free(c);
    guard_cache_free(NULL);
}

static void test_cache_bounded(void **state)
{
    (void)state;
    struct guard_policy *p = gt_make("drop", NULL, false);
    struct guard_cache *c = guard_cache_new();
    struct guard_decision d;
    char sql[64];

    for (int i = 0; i < 40; i++) {
        snprintf(sql, sizeof sql, "SELECT * FROM t%c%c", 'a' + i / 26, 'a' + i % 26);
        gt_check(p, c, sql, &d);
    }
    assert_int_equal(guard_cache_hits(c), 0);
    gt_check(p, c, "SELECT * FROM tbn", &d); /* the last one is still there */
    assert_int_equal(guard_cache_hits(c), 1);
    gt_check(p, c, "SELECT * FROM taa", &d); /* the first one was evicted */
    assert_int_equal(guard_cache_hits(c), 1);

    /* Past the key limit nothing is cached, but the decision is the same. */
    size_t n = GUARD_CACHE_KEY_MAX + 64;
    char *big = malloc(n + 32);
    strcpy(big, "DROP TABLE t");
    for (size_t i = strlen(big); i < n; i++)
        big[i] = i % 2 ? ' ' : '\n';
    big[n] = '\0';
    gt_check(p, c, big, &d);
    gt_check(p, c, big, &d);
    assert_int_equal(guard_cache_hits(c), 1);
    assert_int_equal(d.verdict, GUARD_DENY);
    free(big);
    guard_cache_free(c);
    guard_policy_free(p);
}

static void test_no_rules_skips_parse(void **state)
{
    (void)state;
    struct guard_cache *c = guard_cache_new();
    struct guard_decision d;

    /* Without rules nothing is parsed and the cache is never touched: even COPY and the
     * string settings are left to PostgreSQL (the relay refuses a COPY the upstream starts). */
    gt_check(NULL, c, "SELECT abalance FROM pgbench_accounts WHERE aid = 1", &d);
    gt_check(NULL, c, "SELECT abalance FROM pgbench_accounts WHERE aid = 2", &d);
    assert_int_equal(d.verdict, GUARD_ALLOW);
    assert_int_equal(guard_cache_hits(c), 0);
    gt_check(NULL, c, "COPY t FROM STDIN", &d);
    gt_check(NULL, c, "COPY t FROM STDIN", &d);
    assert_int_equal(d.verdict, GUARD_ALLOW);
    assert_int_equal(guard_cache_hits(c), 0);
    /* len is honoured as PostgreSQL reads a Query: up to the NUL. */
    const char with_nul[] = "SELECT 1\0COPY t FROM STDIN";
    assert_int_equal(guard_check(NULL, NULL, with_nul, sizeof with_nul - 1, &d), 0);
    assert_int_equal(d.verdict, GUARD_ALLOW);
    guard_cache_free(c);
}

/* The keys of texts keyed lately are remembered per thread (the policy keys a statement when
 * it arrives, the statistics when it ends, and other sessions' statements come in between):
 * whatever is remembered, each answer is exactly the key a fresh pass gives. */
static void test_cache_key_memo(void **state)
{
    (void)state;
    char texts[64][80], first[64][GUARD_CACHE_KEY_MAX], again[GUARD_CACHE_KEY_MAX];
    size_t len[64];
    for (int i = 0; i < 64; i++) {
        /* same length, different bytes: only a whole comparison tells them apart */
        snprintf(texts[i], sizeof texts[i], "SELECT c%02d FROM t WHERE a = %02d", i, 63 - i);
        len[i] = key_of(texts[i], strlen(texts[i]), first[i], sizeof first[i]);
        assert_true(len[i] > 0);
    }
    for (int round = 0; round < 3; round++)
        for (int i = 63; i >= 0; i -= round + 1) {
            size_t n = key_of(texts[i], strlen(texts[i]), again, sizeof again);
            assert_int_equal(n, len[i]);
            assert_memory_equal(again, first[i], n);
        }
    /* two texts that share a key are remembered apart, each with its own bytes */
    const char *a = "SELECT * FROM t WHERE a = 1", *b = "SELECT * FROM t WHERE a = 2";
    size_t la = key_of(a, strlen(a), first[0], sizeof first[0]);
    size_t lb = key_of(b, strlen(b), first[1], sizeof first[1]);
    assert_true(la == lb && memcmp(first[0], first[1], la) == 0);
    /* longer than what is remembered: still the same key each time */
    char big[600];
    memset(big, ' ', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    memcpy(big, "SELECT 12345", 12);
    la = key_of(big, strlen(big), first[0], sizeof first[0]);
    lb = key_of(big, strlen(big), first[1], sizeof first[1]);
    assert_true(la > 0 && la == lb && memcmp(first[0], first[1], la) == 0);
}

/* Keys are built by one loop when the buffer has room for the whole text and by a checked
 * one otherwise: both give the same key (texts past what the memo keeps, so each call keys). */
static void test_cache_key_both_loops(void **state)
{
    (void)state;
    static const char *const shapes[] = {
        "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
        "SELECT 'it''s', \"Col\"\"1\", x1, 12.50e3 FROM t9 WHERE a = 'x' AND b = \"q\"",
        "INSERT INTO t VALUES (1, 'a'), (22, 'bb'), (333, '')",
        "SELECT 'unterminated",
        "SELECT \"unterminated",
        "UPDATE t SET a = a + 1 WHERE id IN (1,2,3) RETURNING *, 'é', ü1",
        "SELECT x1y2, 12a3, 1e5, _1, é1, 'a'1, \"q\"2, 7",
        "42",
        "SELECT t.c1 FROM s1.t2 t WHERE t.c1 = 0x1F AND n = 3.14",
    };
    char sql[400], roomy[GUARD_CACHE_KEY_MAX], checked[GUARD_CACHE_KEY_MAX];
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        size_t n = strlen(shapes[i]);
        memset(sql, ' ', sizeof sql);
        memcpy(sql + sizeof sql - n, shapes[i], n); /* leading blanks: past the memo's 256 */
        size_t lr = key_of(sql, sizeof sql, roomy, sizeof roomy);
        assert_true(lr > 0 && lr <= sizeof sql + 1);
        size_t lc = key_of(sql, sizeof sql, checked, sizeof sql); /* cap == len */
        if (lr <= sizeof sql) {
            assert_int_equal(lc, lr);
            assert_memory_equal(checked, roomy, lr);
        } else {
            assert_int_equal(lc, 0); /* does not fit: not cached */
        }
    }
    /* and on texts made of the bytes that matter to the key, in every order; the roomy loop
     * scans eight bytes at a time, so the alphabet also has the bytes next to the digits
     * and quotes, and the same bytes with the high bit set (none of which stops a run) */
    static const char alphabet[] = "a1_9'\" .x(\xc3\xa9:/0@`&\xb5\xa7\xa2\xb0\xba";
    uint32_t seed = 12345;
    for (int round = 0; round < 3000; round++) {
        size_t n = 300 + round % 100;
        for (size_t i = 0; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            sql[i] = alphabet[(seed >> 16) % (sizeof alphabet - 1)];
        }
        size_t lr = key_of(sql, n, roomy, sizeof roomy);
        size_t lc = key_of(sql, n, checked, n);
        if (lr == 0 || lr > n)
            continue; /* a verbatim key, or one that does not fit the checked buffer */
        assert_int_equal(lc, lr);
        assert_memory_equal(checked, roomy, lr);
    }
}

/* What makes a key verbatim is found at every position (in the sixteen-byte steps and in the
 * bytes after them), and what only looks like it is not. */
static void test_cache_key_exact_at_every_position(void **state)
{
    (void)state;
    static const char *const exact[] = {"$", "\\", "--", "/*", "u&", "U&"};
    static const char *const plain[] = {"-", "/", "&", "*", "x&", "- -"};
    static const size_t lens[] = {5, 16, 21, 40, 48}; /* a last step overlapping, or none */
    char sql[48], key[GUARD_CACHE_KEY_MAX];
    for (size_t l = 0; l < sizeof lens / sizeof lens[0]; l++)
        for (size_t k = 0; k < sizeof exact / sizeof exact[0]; k++)
            for (size_t at = 0, len = lens[l]; at + 3 <= len; at++) {
                memset(sql, 'a', len);
                memcpy(sql + at, exact[k], strlen(exact[k]));
                size_t n = key_of(sql, len, key, sizeof key);
                if (n != len + 1 || key[0] != 'X')
                    fail_msg("%s at %zu of %zu: not keyed verbatim", exact[k], at, len);
                memset(sql, 'a', len);
                memcpy(sql + at, plain[k], strlen(plain[k]));
                n = key_of(sql, len, key, sizeof key);
                if (n == 0 || key[0] != 'N')
                    fail_msg("%s at %zu of %zu: keyed verbatim", plain[k], at, len);
            }
}

/* The hash that comes with a key is the key's own, whether the key was remembered or not. */
static void test_cache_key_hashed(void **state)
{
    (void)state;
    const char *texts[] = {"SELECT 1", "SELECT a FROM t WHERE b = 'x' AND c = 42", "x", "SELECT $1",
                           ""};
    char key[GUARD_CACHE_KEY_MAX];
    for (int round = 0; round < 2; round++) /* a fresh pass, then the memo */
        for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
            uint64_t h = 1;
            size_t n = guard_cache_key_hashed(texts[i], strlen(texts[i]), key, sizeof key, &h);
            assert_true(n > 0);
            assert_true(h == guard_key_hash(key, n));
        }
    uint64_t h = 1;
    assert_int_equal(guard_cache_key_hashed("SELECT 1", 8, key, 1, &h), 0);
    assert_true(h == 0); /* no key, no hash */
}

/* The hash only picks candidates, but it must read every byte: texts that differ in any one
 * byte, at any length, should not all land together. */
static void test_key_hash_reads_every_byte(void **state)
{
    (void)state;
    char buf[40];
    for (size_t n = 1; n <= sizeof buf; n++)
        for (size_t i = 0; i < n; i++) {
            memset(buf, 'a', n);
            uint64_t h0 = guard_key_hash(buf, n);
            buf[i] = 'b';
            assert_true(guard_key_hash(buf, n) != h0);
        }
    memset(buf, 'a', sizeof buf);
    assert_true(guard_key_hash(buf, 8) != guard_key_hash(buf, 9));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cache_key),
        cmocka_unit_test(test_cache_key_memo),
        cmocka_unit_test(test_cache_key_both_loops),
        cmocka_unit_test(test_key_hash_reads_every_byte),
        cmocka_unit_test(test_cache_key_hashed),
        cmocka_unit_test(test_cache_key_exact_at_every_position),
        cmocka_unit_test(test_cache_hits),
        cmocka_unit_test(test_cache_bounded),
        cmocka_unit_test(test_no_rules_skips_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
