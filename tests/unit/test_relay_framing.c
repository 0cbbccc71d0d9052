/* The upstream-side handler must not care where reads split the stream: every scripted reply
 * is fed whole, split into two reads at every boundary, and one byte at a time, and the client
 * must receive the same bytes (and the upstream, the statement's end and the session's end must
 * be the same). Messages larger than the 64 kB buffer are streamed through or dropped on their
 * first bytes; a control message larger than the buffer asks for room; one over 1 MiB is an
 * upstream protocol error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "log.h"
#include "relay_fake.h"

#define PEEK_BYTES 2048 /* be_proto.c decides a large E/N on this many bytes */

/* One statement: setup (config, a transaction block, a verdict), the client's Query, and the
 * upstream's reply in up to two phases (the second follows what the first made the relay send
 * upstream, like the client's Query after the proxy's own SET). */
struct script {
    const char *name;
    void (*setup)(struct fake *f);
    const char *sql;
    void (*reply[2])(struct fbuf *b);
    const char *types; /* what the client receives, checked on the whole run */
};

static void deliver(struct fake *f, const struct fbuf *b, size_t split, bool bytewise)
{
    if (bytewise) {
        for (size_t i = 0; i < b->len; i++)
            fake_upstream(f, b->p + i, 1);
    } else if (split && split < b->len) {
        fake_upstream(f, b->p, split);
        fake_upstream(f, b->p + split, b->len - split);
    } else {
        fake_upstream_buf(f, b);
    }
}

static struct fake *run(const struct script *s, size_t split, bool bytewise)
{
    struct fake *f = fake_new();
    if (s->setup)
        s->setup(f);
    fake_query(f, s->sql);
    for (int i = 0; i < 2 && s->reply[i]; i++) {
        struct fbuf b = {0};
        s->reply[i](&b);
        deliver(f, &b, split, bytewise);
        fb_free(&b);
    }
    return f;
}

static size_t reply_len(const struct script *s)
{
    size_t n = 0;
    for (int i = 0; i < 2 && s->reply[i]; i++) {
        struct fbuf b = {0};
        s->reply[i](&b);
        n = b.len > n ? b.len : n;
        fb_free(&b);
    }
    return n;
}

static bool same_bytes(const struct fbuf *a, const struct fbuf *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->p, b->p, a->len) == 0);
}

static void assert_same(const struct script *s, const struct fake *want, struct fake *got,
                        size_t split, bool bytewise)
{
    bool ok = same_bytes(&want->cli_out, &got->cli_out) &&
              same_bytes(&want->up_out, &got->up_out) && want->done == got->done &&
              want->outcome == got->outcome && want->r.end == got->r.end &&
              want->r.tx == got->r.tx && want->r.st == got->r.st && want->cancels == got->cancels &&
              want->last.rows == got->last.rows && want->last.bytes == got->last.bytes;
    if (!ok)
        fail_msg("%s: %s differs from the whole run (client got \"%s\", %zu bytes)", s->name,
                 bytewise ? "one byte at a time" : "split", fake_types(got), got->cli_out.len);
    (void)split;
}

/* Split points: every one for small replies; for large ones the edges of the header, the peek,
 * the buffer and a stride through the rest. */
static bool split_here(size_t k, size_t len)
{
    if (len < 4096)
        return true;
    return k < 64 || (k > PEEK_BYTES - 16 && k < PEEK_BYTES + 16) ||
           (k > FAKE_UP_BASE - 16 && k < FAKE_UP_BASE + 16) || k > len - 64 || k % 7919 == 0;
}

static void check_script(const struct script *s)
{
    struct fake *whole = run(s, 0, false);
    if (s->types && strcmp(fake_types(whole), s->types) != 0)
        fail_msg("%s: client got \"%s\", want \"%s\"", s->name, fake_types(whole), s->types);
    size_t len = reply_len(s);
    for (size_t k = 1; k < len; k++) {
        if (!split_here(k, len))
            continue;
        struct fake *f = run(s, k, false);
        if (!same_bytes(&whole->cli_out, &f->cli_out))
            print_message("%s: split at %zu\n", s->name, k);
        assert_same(s, whole, f, k, false);
        fake_free(f);
    }
    struct fake *f = run(s, 0, true);
    assert_same(s, whole, f, 0, true);
    fake_free(f);
    fake_free(whole);
}

/* ---------- setups ---------- */

static void max_rows_2(struct fake *f)
{
    f->cfg.max_rows = 2;
}

static void truncate_1(struct fake *f)
{
    f->cfg.on_limit = CONFIG_ON_LIMIT_TRUNCATE;
    f->cfg.max_rows = 1;
}

static void max_bytes_60(struct fake *f)
{
    f->cfg.max_bytes = 60;
}

static void max_bytes_100k(struct fake *f)
{
    f->cfg.max_bytes = 100 * 1000;
}

static void read_only(struct fake *f)
{
    f->cfg.read_only = true;
}

static void denied_in_block(struct fake *f)
{
    fake_in_block(f);
    fake_verdict(f, GUARD_DENY, "deny:drop", "statement kind drop is not allowed", 0);
}

static void limit_in_block(struct fake *f)
{
    fake_in_block(f);
    f->cfg.max_rows = 1;
}

static void reload_read_only(struct fake *f)
{
    f->reload_read_only = true;
}

/* ---------- replies ---------- */

static void r_select(struct fbuf *b)
{
    up_select(b, 3);
    up_ready(b, 'I');
}

static void r_multi(struct fbuf *b)
{
    up_rowdesc(b, "a");
    up_rows(b, 1);
    up_notice(b, "between rows");
    up_complete(b, "SELECT 1");
    up_rowdesc(b, "b");
    up_notify(b, 7, "ch", "payload");
    up_rows(b, 1);
    up_complete(b, "SELECT 1");
    up_complete(b, "UPDATE 3");
    up_ready(b, 'I');
}

static void r_error_mid_result(struct fbuf *b)
{
    up_rowdesc(b, "a");
    up_rows(b, 2);
    up_error(b, "ERROR", "22012", "division by zero");
    up_ready(b, 'I');
}

static void r_rows_canceled(struct fbuf *b)
{
    up_rowdesc(b, "a");
    up_rows(b, 4);
    up_error(b, "ERROR", "57014", "canceling statement due to user request");
    up_ready(b, 'I');
}

static void r_delete_returning(struct fbuf *b)
{
    up_rowdesc(b, "a");
    up_rows(b, 4);
    up_complete(b, "DELETE 4");
    up_ready(b, 'I');
}

static void r_two_selects_notify(struct fbuf *b)
{
    up_rowdesc(b, "a");
    up_rows(b, 2);
    up_notify(b, 7, "ch", "payload");
    up_complete(b, "SELECT 2");
    up_select(b, 2);
    up_ready(b, 'I');
}

static void r_long_error(struct fbuf *b)
{
    up_rowdesc(b, "a");
    up_report(b, 'E', "ERROR", "22P02", "invalid input syntax", 40);
    up_ready(b, 'I');
}

static void r_copy_in(struct fbuf *b)
{
    up_copy(b, 'G');
    up_error(b, "ERROR", "57014", "COPY from stdin failed");
    up_ready(b, 'I');
}

static void r_copy_out(struct fbuf *b)
{
    up_copy(b, 'H');
    fb_msg(b, 'd', "1\n", 2);
    fb_msg(b, 'd', "2\n", 2);
    fb_msg(b, 'c', NULL, 0);
    up_complete(b, "COPY 2");
    up_ready(b, 'I');
}

static void r_settings_first(struct fbuf *b)
{
    up_param(b, "application_name", "x");
    up_notify(b, 7, "ch", "payload");
    up_notice(b, "hello");
    up_select(b, 1);
    up_ready(b, 'I');
}

static void r_read_only_lost(struct fbuf *b)
{
    up_rowdesc(b, "a");
    up_param(b, "default_transaction_read_only", "off");
    up_rows(b, 1);
    up_complete(b, "SELECT 1");
    up_ready(b, 'I');
}

static void r_broken_param(struct fbuf *b)
{
    up_rowdesc(b, "a");
    up_rows(b, 1);
    fb_msg(b, 'S', "ab", 2);
    up_ready(b, 'I');
}

static void r_bad_length(struct fbuf *b)
{
    up_rowdesc(b, "a");
    up_rows(b, 1);
    fb_put(b, "D\0\0\0\3", 5);
}

static void r_fatal(struct fbuf *b)
{
    up_rowdesc(b, "a");
    up_rows(b, 1);
    up_error(b, "FATAL", "57P01", "terminating connection due to administrator command");
}

static void r_poison(struct fbuf *b)
{
    up_error(b, "ERROR", "P0001", "pgwire-proxy: transaction aborted after a guardrail error");
    up_ready(b, 'E');
}

static void r_limit_then_poison(struct fbuf *b)
{
    up_select(b, 2);
    up_ready(b, 'T');
    r_poison(b); /* the reply to the poison the relay sends at that Z */
}

static void r_set_read_only(struct fbuf *b)
{
    up_param(b, "default_transaction_read_only", "on");
    up_complete(b, "SET");
    up_ready(b, 'I');
}

static const struct script small_scripts[] = {
    {"select", NULL, "SELECT a FROM t", {r_select}, "TDDDCZ"},
    {"multi-statement", NULL, "SELECT 1; SELECT 2; UPDATE t", {r_multi}, "TDNCTADCCZ"},
    {"error mid-result", NULL, "SELECT 1/a FROM t", {r_error_mid_result}, "TDDEZ"},
    {"row limit canceled", max_rows_2, "SELECT a FROM t", {r_rows_canceled}, "TDDEZ"},
    {"row limit committed",
     max_rows_2,
     "DELETE FROM t RETURNING a",
     {r_delete_returning},
     "TDDNCZ"},
    {"truncate two selects",
     truncate_1,
     "SELECT 1; SELECT 2",
     {r_two_selects_notify},
     "TDANCTDNCZ"},
    {"error over bytes left", max_bytes_60, "SELECT a::int FROM t", {r_long_error}, "TEZ"},
    {"copy in", NULL, "COPY t FROM STDIN", {r_copy_in}, "EZ"},
    {"copy out", NULL, "COPY t TO STDOUT", {r_copy_out}, "EZ"},
    {"settings first", NULL, "SELECT 1", {r_settings_first}, "SANTDCZ"},
    {"read-only lost", read_only, "SELECT 1", {r_read_only_lost}, "TE"},
    {"broken ParameterStatus", NULL, "SELECT 1", {r_broken_param}, "TDE"},
    {"bad length", NULL, "SELECT 1", {r_bad_length}, "TDE"},
    {"upstream fatal", NULL, "SELECT 1", {r_fatal}, "TDE"},
    {"denied in block", denied_in_block, "DROP TABLE t", {r_poison}, "EZ"},
    {"limit in block", limit_in_block, "SELECT a FROM t", {r_limit_then_poison}, "TDEZ"},
    {"read-only switch", reload_read_only, "SELECT 1", {r_set_read_only, r_select}, "STDDDCZ"},
};

static void test_small_replies_same_bytes_however_split(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(small_scripts) / sizeof(small_scripts[0]); i++)
        check_script(&small_scripts[i]);
}

/* ---------- messages larger than the buffer ---------- */

static void r_big_row(struct fbuf *b)
{
    up_rowdesc(b, "a");
    up_row_sized(b, 300 * 1000);
    up_complete(b, "SELECT 1");
    up_ready(b, 'I');
}

static void r_big_row_canceled(struct fbuf *b)
{
    up_rowdesc(b, "a");
    up_row_sized(b, 300 * 1000);
    up_error(b, "ERROR", "57014", "canceling statement due to user request");
    up_ready(b, 'I');
}

static void r_big_error(struct fbuf *b)
{
    up_rowdesc(b, "a");
    up_report(b, 'E', "ERROR", "22P02", "invalid input syntax: ", 200 * 1000);
    up_ready(b, 'I');
}

static void r_big_notice(struct fbuf *b)
{
    up_rowdesc(b, "a");
    up_report(b, 'N', "NOTICE", "00000", "long notice: ", 200 * 1000);
    up_rows(b, 1);
    up_complete(b, "SELECT 1");
    up_ready(b, 'I');
}

static void r_big_fatal(struct fbuf *b)
{
    up_rowdesc(b, "a");
    up_report(b, 'E', "FATAL", "XX000", "long fatal: ", 200 * 1000);
}

static void r_big_param(struct fbuf *b)
{
    size_t at = fb_begin(b, 'S');
    fb_str(b, "application_name");
    fb_fill(b, 'p', 100 * 1000);
    fb_u8(b, 0);
    fb_end(b, at);
    r_select(b);
}

static const struct script large_scripts[] = {
    {"300 kB row streamed", NULL, "SELECT a FROM t", {r_big_row}, "TDCZ"},
    {"300 kB row over the budget", max_bytes_100k, "SELECT a FROM t", {r_big_row_canceled}, "TEZ"},
    {"200 kB error streamed", NULL, "SELECT a FROM t", {r_big_error}, "TEZ"},
    {"200 kB error over the budget", max_bytes_100k, "SELECT a FROM t", {r_big_error}, "TEZ"},
    {"200 kB notice streamed", NULL, "SELECT a FROM t", {r_big_notice}, "TNDCZ"},
    {"200 kB notice over the budget", max_bytes_100k, "SELECT a FROM t", {r_big_notice}, "TEZ"},
    {"200 kB fatal streamed", max_bytes_100k, "SELECT a FROM t", {r_big_fatal}, "TE"},
    {"100 kB ParameterStatus buffered", NULL, "SELECT a FROM t", {r_big_param}, "STDDDCZ"},
};

static void test_large_messages_same_bytes_however_split(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(large_scripts) / sizeof(large_scripts[0]); i++)
        check_script(&large_scripts[i]);
}

static bool reply_forwarded_verbatim(const struct script *s, struct fake *f)
{
    struct fbuf b = {0};
    s->reply[0](&b);
    bool same = same_bytes(&b, &f->cli_out);
    fb_free(&b);
    return same;
}

static void test_large_row_streamed_without_growing_buffer(void **state)
{
    (void)state;
    struct fake *f = run(&large_scripts[0], 0, false);
    assert_true(reply_forwarded_verbatim(&large_scripts[0], f));
    assert_int_equal(f->max_up_cap, FAKE_UP_BASE);
    assert_int_equal(f->last.rows, 1);
    fake_free(f);
}

static void test_large_error_over_budget_replaced_on_first_bytes(void **state)
{
    (void)state;
    struct fake *f = run(&large_scripts[3], 0, true);
    struct fmsg e = fake_msg(f, 1);
    assert_string_equal(fmsg_field(&e, 'C'), "54000");
    assert_true(e.len < 1024);
    assert_int_equal(f->max_up_cap, FAKE_UP_BASE);
    fake_free(f);
}

static void test_large_error_and_fatal_streamed_verbatim(void **state)
{
    (void)state;
    const struct script *s[] = {&large_scripts[2], &large_scripts[4], &large_scripts[6]};
    for (size_t i = 0; i < 3; i++) {
        struct fake *f = run(s[i], 0, false);
        assert_true(reply_forwarded_verbatim(s[i], f));
        assert_int_equal(f->max_up_cap, FAKE_UP_BASE);
        fake_free(f);
    }
}

static void test_large_control_message_asks_for_room(void **state)
{
    (void)state;
    struct fake *f = fake_new();
    struct fbuf b = {0};
    fake_query(f, "SELECT a FROM t");
    r_big_param(&b);
    size_t total = 1 + wire_get_u32(b.p + 1), need = 0;
    assert_int_equal(be_proto_process(&f->r, b.p, FAKE_UP_BASE, FAKE_UP_BASE, &need), 0);
    assert_int_equal(need, total);
    assert_int_equal(f->cli_out.len, 0);
    fake_upstream_buf(f, &b); /* the fake grows its buffer like conn_reserve */
    assert_true(reply_forwarded_verbatim(&large_scripts[7], f));
    assert_true(f->max_up_cap >= total);
    assert_int_equal(f->up_cap, FAKE_UP_BASE); /* and gives it back */
    fb_free(&b);
    fake_free(f);
}

static void test_control_message_over_1mib_is_protocol_error(void **state)
{
    (void)state;
    struct fake *f = fake_new();
    fake_query(f, "SELECT a FROM t");
    uint8_t hdr[5] = {'C'};
    wire_put_u32(hdr + 1, (1u << 20) + 1);
    size_t need = 0;
    assert_int_equal(be_proto_process(&f->r, hdr, 5, FAKE_UP_BASE, &need), 0);
    assert_int_equal(need, 0);
    assert_string_equal(fake_types(f), "E");
    struct fmsg e = fake_msg(f, 0);
    assert_string_equal(fmsg_field(&e, 'V'), "FATAL");
    assert_string_equal(fmsg_field(&e, 'C'), "08P01");
    assert_string_equal(fmsg_field(&e, 'D'), "oversized control message");
    assert_int_equal(f->r.end, SE_UPSTREAM_LOST);
    fake_free(f);
}

static void test_large_row_dropped_after_its_header(void **state)
{
    (void)state;
    struct fake *f = fake_new();
    f->cfg.max_bytes = 100 * 1000;
    fake_query(f, "SELECT a FROM t");
    struct fbuf b = {0};
    up_row_sized(&b, 300 * 1000);
    size_t need = 0;
    /* decided on its header alone: the rest streams into nothing */
    assert_int_equal(be_proto_process(&f->r, b.p, 5, FAKE_UP_BASE, &need), 5);
    assert_int_equal(f->r.pass_remaining, 300 * 1000 - 5);
    assert_true(f->r.pass_drop);
    assert_int_equal(f->cancels, 1);
    assert_int_equal(be_proto_process(&f->r, b.p + 5, b.len - 5, FAKE_UP_BASE, &need), b.len - 5);
    assert_int_equal(f->r.pass_remaining, 0);
    assert_int_equal(f->cli_out.len, 0);
    fb_free(&b);
    fake_free(f);
}

int main(void)
{
    log_setup(-1, 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_replies_same_bytes_however_split),
        cmocka_unit_test(test_large_messages_same_bytes_however_split),
        cmocka_unit_test(test_large_row_streamed_without_growing_buffer),
        cmocka_unit_test(test_large_error_over_budget_replaced_on_first_bytes),
        cmocka_unit_test(test_large_error_and_fatal_streamed_verbatim),
        cmocka_unit_test(test_large_control_message_asks_for_room),
        cmocka_unit_test(test_control_message_over_1mib_is_protocol_error),
        cmocka_unit_test(test_large_row_dropped_after_its_header),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
