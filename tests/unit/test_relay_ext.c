/* The relay's protocol handlers (fe_proto.c, be_proto.c and the extended protocol's fe_ext.c,
 * be_ext.c) driven with scripted bytes: what goes upstream, what reaches the client, without
 * sockets. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "guard.h"
#include "relay.h"
#include "wire.h"

struct out {
    uint8_t data[8192];
    size_t len;
};

struct harness {
    uint16_t audited_params; /* of the last statement_done with a run info */
    struct config cfg;
    struct guard_policy *policy;
    struct relay r;
    struct out cli, up;
};

static int append(struct out *o, const void *p, size_t n)
{
    assert_true(o->len + n <= sizeof(o->data));
    memcpy(o->data + o->len, p, n);
    o->len += n;
    return 0;
}

static int to_client(void *ctx, const void *p, size_t n)
{
    return append(&((struct harness *)ctx)->cli, p, n);
}

static int to_upstream(void *ctx, const void *p, size_t n)
{
    return append(&((struct harness *)ctx)->up, p, n);
}

static bool no(void *ctx)
{
    (void)ctx;
    return false;
}

static size_t zero(void *ctx)
{
    (void)ctx;
    return 0;
}

static void nothing(void *ctx)
{
    (void)ctx;
}

static int policy(void *ctx, const char *sql, size_t len, struct guard_decision *d)
{
    return guard_check(((struct harness *)ctx)->policy, NULL, sql, len, d) ? -1 : 0;
}

static void statement_done(void *ctx, const struct stmt *st, enum stmt_outcome o, uint64_t us,
                           const struct relay_run_info *info)
{
    (void)st, (void)o, (void)us;
    if (info)
        ((struct harness *)ctx)->audited_params = info->nparams;
}

static const struct relay_env env = {.statement_done = statement_done,
                                     .to_client = to_client,
                                     .to_upstream = to_upstream,
                                     .to_upstream_ref = to_upstream,
                                     .upstream_busy = no,
                                     .client_backlog = zero,
                                     .upstream_backlog = zero,
                                     .cancel = nothing,
                                     .cancel_pending = no,
                                     .policy = policy,
                                     .refresh = nothing};

static struct harness *harness_new(void)
{
    struct harness *h = calloc(1, sizeof(*h));
    char err[256];
    const char *deny[] = {"drop"};
    config_defaults(&h->cfg);
    h->cfg.extended_protocol = CONFIG_ALLOW;
    h->policy = guard_policy_new(deny, 1, NULL, 0, false, err, sizeof(err));
    assert_non_null(h->policy);
    relay_init(&h->r, &env, h, 1, "test", &h->cfg);
    h->r.ext_allowed = true;
    return h;
}

static void harness_free(struct harness *h)
{
    relay_release(&h->r);
    guard_policy_free(h->policy);
    config_free(&h->cfg);
    free(h);
}

/* One message: type, then the body's parts (each a NUL-terminated string, or raw bytes). */
static size_t msg(uint8_t *buf, char type, const void *body, size_t blen)
{
    buf[0] = (uint8_t)type;
    uint32_t n = (uint32_t)blen + 4;
    buf[1] = (uint8_t)(n >> 24), buf[2] = (uint8_t)(n >> 16), buf[3] = (uint8_t)(n >> 8);
    buf[4] = (uint8_t)n;
    if (blen) /* an empty body may be NULL, which memcpy must not get */
        memcpy(buf + 5, body, blen);
    return blen + 5;
}

static void client_sends(struct harness *h, const uint8_t *p, size_t n)
{
    uint8_t buf[4096];
    memcpy(buf, p, n);
    size_t need;
    assert_int_equal(fe_proto_process(&h->r, buf, n, &need), n);
}

static void upstream_sends(struct harness *h, const uint8_t *p, size_t n)
{
    uint8_t buf[4096];
    memcpy(buf, p, n);
    size_t need;
    assert_int_equal(be_proto_process(&h->r, buf, n, sizeof(buf), &need), n);
}

/* The message types in o, as a string. */
static void types_of(const struct out *o, char *t, size_t cap)
{
    size_t n = 0;
    for (size_t pos = 0; pos + 5 <= o->len && n + 1 < cap;) {
        t[n++] = (char)o->data[pos];
        pos += 1 + ((size_t)o->data[pos + 1] << 24 | (size_t)o->data[pos + 2] << 16 |
                    (size_t)o->data[pos + 3] << 8 | o->data[pos + 4]);
    }
    t[n] = 0;
}

static size_t pbe(uint8_t *b, const char *sql)
{
    uint8_t body[256];
    size_t n = strlen(sql) + 2;
    body[0] = 0;
    memcpy(body + 1, sql, n - 1);
    memset(body + n, 0, 2);
    size_t len = msg(b, 'P', body, n + 2);
    static const uint8_t bind[] = {0, 0, 0, 0, 0, 0, 0, 0};
    len += msg(b + len, 'B', bind, sizeof(bind));
    static const uint8_t exec[] = {0, 0, 0, 0, 0};
    return len + msg(b + len, 'E', exec, sizeof(exec));
}

static size_t error_msg(uint8_t *b, const char *code)
{
    uint8_t buf[256];
    struct wire_buf w;
    wire_buf_init(&w, buf, sizeof(buf));
    struct wire_error_fields f = {.severity = "ERROR", .code = code, .message = "x"};
    wire_build_error(&w, 'E', &f);
    memcpy(b, w.data, w.len);
    return w.len;
}

/* The client reads the error after a Flush, then sends more of the segment and its Sync: the
 * backend skips all of it and answers the Sync alone. Nothing may stay queued: the next
 * Query goes upstream at once. */
static void test_requests_after_a_reported_error_leave_no_entries(void **state)
{
    (void)state;
    struct harness *h = harness_new();
    uint8_t b[1024];
    size_t n = pbe(b, "select 1/0");
    n += msg(b + n, 'H', NULL, 0);
    client_sends(h, b, n);
    n = msg(b, '1', NULL, 0);
    n += error_msg(b + n, "22012");
    upstream_sends(h, b, n);
    n = pbe(b, "drop table t"); /* refused: a failing Parse goes up, and is skipped */
    n += pbe(b + n, "select 2");
    n += msg(b + n, 'S', NULL, 0);
    client_sends(h, b, n);
    n = msg(b, 'Z', "I", 1);
    upstream_sends(h, b, n);
    char t[64];
    types_of(&h->cli, t, sizeof(t));
    assert_string_equal(t, "1EZ");
    assert_true(relay_ext_empty(h->r.x));
    h->up.len = 0;
    n = msg(b, 'Q', "select 3", 9);
    size_t need;
    fe_proto_process(&h->r, b, n, &need); /* a forwarded Query stays in the buffer */
    types_of(&h->up, t, sizeof(t));
    assert_string_equal(t, "Q");
    harness_free(h);
}

/* A malformed Parse gets its FATAL with the reason in the message field. */
static void test_malformed_parse_fatal_has_its_message(void **state)
{
    (void)state;
    struct harness *h = harness_new();
    uint8_t b[64];
    size_t n = msg(b, 'P', "\0select 1", 9); /* the query's NUL is missing */
    client_sends(h, b, n);
    assert_int_equal(h->r.end, SE_PROTOCOL);
    char t[8];
    types_of(&h->cli, t, sizeof(t));
    assert_string_equal(t, "E");
    const char *m = memmem(h->cli.data, h->cli.len, "Minvalid string in message", 26);
    assert_non_null(m);
    harness_free(h);
}

/* A limit tripped in a segment without Sync: once the run's terminator has arrived nothing
 * runs upstream, and the cancel grace must not end a client that syncs later. */
static void test_tripped_run_over_upstream_waits_only_for_the_client(void **state)
{
    (void)state;
    struct harness *h = harness_new();
    h->cfg.max_rows = 2;
    uint8_t b[1024];
    size_t n = pbe(b, "select g from generate_series(1, 5) g");
    n += msg(b + n, 'H', NULL, 0);
    client_sends(h, b, n);
    static const uint8_t row[] = {0, 1, 0, 0, 0, 1, '1'};
    n = msg(b, '1', NULL, 0);
    n += msg(b + n, '2', NULL, 0);
    for (int i = 0; i < 3; i++)
        n += msg(b + n, 'D', row, sizeof(row));
    upstream_sends(h, b, n);
    assert_true(relay_abort_waits_upstream(&h->r)); /* tripped, the statement still runs */
    n = msg(b, 'C', "SELECT 5", 9);
    upstream_sends(h, b, n);
    assert_true(h->r.ab.active);                     /* the rest of the segment is dropped */
    assert_false(relay_abort_waits_upstream(&h->r)); /* but nothing runs upstream */
    char t[16];
    types_of(&h->cli, t, sizeof(t));
    assert_string_equal(t, "12DDE");
    harness_free(h);
}

/* A statement prepared before a reload and refused at its next Bind is audited with the
 * parameters of that Bind. */
static void test_bind_refused_after_reload_audits_its_params(void **state)
{
    (void)state;
    struct harness *h = harness_new();
    h->r.audit_params = true;
    uint8_t b[256];
    static const uint8_t parse[] = "S_1\0delete from t where id = $1\0\0";
    size_t n = msg(b, 'P', parse, sizeof(parse));
    client_sends(h, b, n);
    char err[256];
    const char *deny[] = {"delete"};
    guard_policy_free(h->policy);
    h->policy = guard_policy_new(deny, 1, NULL, 0, false, err, sizeof(err));
    h->r.gen++; /* a reload */
    static const uint8_t bind[] = {0, 'S', '_', '1', 0, 0, 0, 0, 1, 0, 0, 0, 1, '7', 0, 0};
    h->audited_params = 0;
    n = msg(b, 'B', bind, sizeof(bind));
    client_sends(h, b, n);
    assert_true(h->r.x->discard); /* refused */
    assert_int_equal(h->audited_params, 1);
    harness_free(h);
}

/* A ParameterStatus whose value lacks its NUL, followed in the buffer by a ReadyForQuery (its
 * length word holds NULs): read within its own length it is malformed, the session ends with
 * FATAL 08P01, and neither message reaches the client as the upstream sent it. */
static void test_parameter_status_is_read_within_its_length(void **state)
{
    (void)state;
    struct harness *h = harness_new();
    uint8_t b[64];
    size_t n = msg(b, 'S', "TimeZone\0UTC", 12);
    n += msg(b + n, 'Z', "I", 1);
    size_t need;
    be_proto_process(&h->r, b, n, sizeof(b), &need);
    assert_int_equal(h->r.end, SE_UPSTREAM_LOST);
    char t[8];
    types_of(&h->cli, t, sizeof(t));
    assert_string_equal(t, "E");
    assert_non_null(memmem(h->cli.data, h->cli.len, "C08P01", 6));
    assert_non_null(memmem(h->cli.data, h->cli.len, "Dmalformed ParameterStatus", 26));
    assert_null(memmem(h->cli.data, h->cli.len, "UTC", 3));
    harness_free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_requests_after_a_reported_error_leave_no_entries),
        cmocka_unit_test(test_malformed_parse_fatal_has_its_message),
        cmocka_unit_test(test_tripped_run_over_upstream_waits_only_for_the_client),
        cmocka_unit_test(test_bind_refused_after_reload_audits_its_params),
        cmocka_unit_test(test_parameter_status_is_read_within_its_length),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
