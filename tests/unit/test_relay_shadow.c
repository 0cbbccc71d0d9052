/* Shadow rules and --on-limit warn in the relay, driven with scripted bytes: a statement that a
 * shadow rule or a budget would have stopped runs exactly as it would directly (the upstream
 * gets the client's bytes, the client gets the upstream's), and its record, log and counter
 * say what enforcing would have done. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "guard.h"
#include "metrics.h"
#include "relay.h"
#include "wire.h"

struct out {
    uint8_t data[16384];
    size_t len;
};

struct harness {
    struct config cfg;
    struct guard_policy *policy;
    struct relay r;
    struct out cli, up;
    int cancels;
    int done;                 /* statement_done calls */
    enum stmt_outcome last_o; /* of the last one */
    struct stmt last;
    bool last_ext;
    /* the last record as the audit shows it ("" = NULL), taken while its pointers live */
    char outcome[32], rule[96], shadow[96];
};

static int append(struct out *o, const void *p, size_t n)
{
    assert_true(o->len + n <= sizeof(o->data));
    if (n)
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

static void cancel(void *ctx)
{
    ((struct harness *)ctx)->cancels++;
}

static int policy(void *ctx, const char *sql, size_t len, struct guard_decision *d)
{
    return guard_check(((struct harness *)ctx)->policy, NULL, sql, len, d) ? -1 : 0;
}

static void statement_done(void *ctx, const struct stmt *st, enum stmt_outcome o, uint64_t us,
                           const struct relay_run_info *info)
{
    struct harness *h = ctx;
    (void)us;
    h->done++;
    h->last_o = o;
    h->last = *st;
    h->last_ext = info && info->protocol && strcmp(info->protocol, "extended") == 0;
    struct stmt_audit v;
    stmt_audit_view(st, o, &v);
    snprintf(h->outcome, sizeof(h->outcome), "%s", v.outcome);
    snprintf(h->rule, sizeof(h->rule), "%s", v.rule ? v.rule : "");
    snprintf(h->shadow, sizeof(h->shadow), "%s", v.shadow_rule ? v.shadow_rule : "");
}

static const struct relay_env env = {.statement_done = statement_done,
                                     .to_client = to_client,
                                     .to_upstream = to_upstream,
                                     .to_upstream_ref = to_upstream,
                                     .upstream_busy = no,
                                     .client_backlog = zero,
                                     .upstream_backlog = zero,
                                     .cancel = cancel,
                                     .cancel_pending = no,
                                     .policy = policy,
                                     .refresh = nothing};

/* deny, allow: comma-free single entries or NULL. */
static struct harness *harness_new(const char *deny1, const char *deny2, const char *allow)
{
    struct harness *h = calloc(1, sizeof(*h));
    char err[256];
    const char *deny[2];
    size_t nd = 0;
    if (deny1)
        deny[nd++] = deny1;
    if (deny2)
        deny[nd++] = deny2;
    const char *al[] = {allow};
    config_defaults(&h->cfg);
    h->cfg.extended_protocol = CONFIG_ALLOW;
    h->cfg.copy = CONFIG_ALLOW;
    struct guard_rules rules = {
        .deny = deny, .ndeny = nd, .allow = al, .nallow = allow ? 1 : 0, .relay_copy = true};
    h->policy = guard_policy_compile(&rules, err, sizeof(err));
    assert_non_null(h->policy);
    relay_init(&h->r, &env, h, 1, "test", &h->cfg);
    h->r.ext_allowed = true;
    h->r.copy_allowed = true;
    return h;
}

static void harness_free(struct harness *h)
{
    relay_release(&h->r);
    guard_policy_free(h->policy);
    config_free(&h->cfg);
    free(h);
}

static size_t msg(uint8_t *buf, char type, const void *body, size_t blen)
{
    buf[0] = (uint8_t)type;
    uint32_t n = (uint32_t)blen + 4;
    buf[1] = (uint8_t)(n >> 24), buf[2] = (uint8_t)(n >> 16), buf[3] = (uint8_t)(n >> 8);
    buf[4] = (uint8_t)n;
    if (blen)
        memcpy(buf + 5, body, blen);
    return blen + 5;
}

static size_t query(uint8_t *b, const char *sql)
{
    return msg(b, 'Q', sql, strlen(sql) + 1);
}

/* The client's bytes; returns how many the relay took (a forwarded Query stays). */
static size_t client_sends(struct harness *h, const uint8_t *p, size_t n)
{
    static uint8_t buf[16384];
    memcpy(buf, p, n);
    size_t need;
    return fe_proto_process(&h->r, buf, n, &need);
}

static void upstream_sends(struct harness *h, const uint8_t *p, size_t n)
{
    static uint8_t buf[16384];
    memcpy(buf, p, n);
    size_t need;
    assert_int_equal(be_proto_process(&h->r, buf, n, sizeof(buf), &need), n);
}

static size_t error_msg(uint8_t *b, const char *code, const char *text)
{
    uint8_t buf[4096];
    struct wire_buf w;
    wire_buf_init(&w, buf, sizeof(buf));
    struct wire_error_fields f = {.severity = "ERROR", .code = code, .message = text};
    wire_build_error(&w, 'E', &f);
    memcpy(b, w.data, w.len);
    return w.len;
}

/* A result of n one-column rows, its CommandComplete and ReadyForQuery. */
static size_t result(uint8_t *b, int n)
{
    static const uint8_t desc[] = {0, 1, 'g', 0, 0, 0,    0,    0,    0,    0, 0,
                                   0, 0, 23,  0, 4, 0xff, 0xff, 0xff, 0xff, 0, 0};
    static const uint8_t row[] = {0, 1, 0, 0, 0, 1, '7'};
    size_t len = msg(b, 'T', desc, sizeof(desc));
    for (int i = 0; i < n; i++)
        len += msg(b + len, 'D', row, sizeof(row));
    char tag[32];
    snprintf(tag, sizeof(tag), "SELECT %d", n);
    len += msg(b + len, 'C', tag, strlen(tag) + 1);
    return len + msg(b + len, 'Z', "I", 1);
}

static int64_t shadow_count(const char *rule)
{
    char series[160];
    snprintf(series, sizeof(series),
             "pgwire_proxy_guardrail_violations_total{rule=\"%s\",mode=\"shadow\"}", rule);
    return metrics_value(series);
}

static int64_t enforce_count(const char *rule)
{
    char series[160];
    snprintf(series, sizeof(series),
             "pgwire_proxy_guardrail_violations_total{rule=\"%s\",mode=\"enforce\"}", rule);
    return metrics_value(series);
}

static void assert_record(const struct harness *h, const char *outcome, const char *rule,
                          const char *shadow)
{
    assert_string_equal(h->outcome, outcome);
    assert_string_equal(h->rule, rule ? rule : "");
    assert_string_equal(h->shadow, shadow ? shadow : "");
}

static void assert_view(const struct stmt *st, enum stmt_outcome o, const char *outcome,
                        const char *rule, const char *shadow)
{
    struct stmt_audit v;
    stmt_audit_view(st, o, &v);
    assert_string_equal(v.outcome, outcome);
    if (rule)
        assert_string_equal(v.rule, rule);
    else
        assert_null(v.rule);
    if (shadow)
        assert_string_equal(v.shadow_rule, shadow);
    else
        assert_null(v.shadow_rule);
}

/* A shadow-denied Query goes upstream byte for byte and its answer comes back the same. */
static void test_shadow_denied_query_runs(void **state)
{
    (void)state;
    struct harness *h = harness_new("shadow:truncate", NULL, NULL);
    int64_t before = shadow_count("deny:truncate");
    uint8_t b[512], a[512];
    size_t n = query(b, "truncate t");
    assert_int_equal(client_sends(h, b, n), 0); /* forwarded: it stays in the buffer */
    assert_int_equal(h->up.len, n);
    assert_memory_equal(h->up.data, b, n);
    assert_int_equal(h->cli.len, 0);
    assert_int_equal(shadow_count("deny:truncate"), before + 1);
    size_t an = msg(a, 'C', "TRUNCATE TABLE", 15);
    an += msg(a + an, 'Z', "I", 1);
    upstream_sends(h, a, an);
    assert_int_equal(h->cli.len, an);
    assert_memory_equal(h->cli.data, a, an);
    assert_int_equal(h->done, 1);
    assert_int_equal(h->last_o, STMT_OK);
    assert_string_equal(h->last.shadow_rule, "deny:truncate");
    assert_record(h, "would_deny", "deny:truncate", NULL);

    /* a statement the shadow allows is plain ok */
    h->cli.len = h->up.len = 0;
    n = query(b, "select 1");
    client_sends(h, b, n);
    upstream_sends(h, a, result(a, 1));
    assert_int_equal(h->done, 2);
    assert_record(h, "ok", NULL, NULL);
    assert_int_equal(shadow_count("deny:truncate"), before + 1);
    harness_free(h);
}

/* Enforced and shadow on the same statement: refused locally, recorded as denied. */
static void test_enforced_beats_shadow(void **state)
{
    (void)state;
    struct harness *h = harness_new("truncate", "shadow:truncate", NULL);
    int64_t shadow = shadow_count("deny:truncate"), enforced = enforce_count("deny:truncate");
    uint8_t b[512];
    size_t n = query(b, "truncate t");
    assert_int_equal(client_sends(h, b, n), n);
    assert_int_equal(h->up.len, 0);
    assert_int_equal(h->cli.data[0], 'E');
    assert_non_null(memmem(h->cli.data, h->cli.len, "C42501", 7));
    assert_int_equal(h->last_o, STMT_DENIED);
    assert_record(h, "denied", "deny:truncate", NULL);
    assert_int_equal(shadow_count("deny:truncate"), shadow);
    assert_int_equal(enforce_count("deny:truncate"), enforced + 1);
    harness_free(h);
}

/* A shadow-denied statement that fails upstream keeps its outcome and names the shadow rule. */
static void test_shadow_denied_error_keeps_outcome(void **state)
{
    (void)state;
    struct harness *h = harness_new(NULL, NULL, "shadow:select");
    uint8_t b[512], a[512];
    size_t n = query(b, "delete from missing");
    client_sends(h, b, n);
    assert_int_equal(h->up.len, n);
    size_t an = error_msg(a, "42P01", "relation \"missing\" does not exist");
    an += msg(a + an, 'Z', "I", 1);
    upstream_sends(h, a, an);
    assert_int_equal(h->cli.len, an);
    assert_memory_equal(h->cli.data, a, an);
    assert_record(h, "error", NULL, "allow");
    harness_free(h);
}

/* --on-limit warn: every row reaches the client, nothing is canceled, the budget is counted
 * once as a shadow violation and the record is would_limit. */
static void test_on_limit_warn_delivers_everything(void **state)
{
    (void)state;
    struct harness *h = harness_new(NULL, NULL, NULL);
    h->cfg.on_limit = CONFIG_ON_LIMIT_WARN;
    h->cfg.max_rows = 3;
    int64_t before = shadow_count("max-rows"), enforced = enforce_count("max-rows");
    uint8_t b[512], a[4096];
    size_t n = query(b, "select g from generate_series(1, 20) g");
    client_sends(h, b, n);
    size_t an = result(a, 20);
    upstream_sends(h, a, an);
    assert_int_equal(h->cli.len, an);
    assert_memory_equal(h->cli.data, a, an);
    assert_int_equal(h->cancels, 0);
    assert_int_equal(h->last.rows, 20);
    assert_string_equal(h->last.shadow_limit, "max-rows");
    assert_record(h, "would_limit", "max-rows", NULL);
    assert_int_equal(shadow_count("max-rows"), before + 1);
    assert_int_equal(enforce_count("max-rows"), enforced);

    /* the next statement has its budget again, and one within it is ok */
    h->cli.len = 0;
    client_sends(h, b, n);
    upstream_sends(h, a, result(a, 3));
    assert_record(h, "ok", NULL, NULL);
    assert_int_equal(shadow_count("max-rows"), before + 1);
    harness_free(h);
}

/* --on-limit warn past --max-bytes: an upstream error larger than what is left of the budget
 * reaches the client unchanged (error mode replaces it with the proxy's 54000). */
static void test_on_limit_warn_forwards_a_large_error(void **state)
{
    (void)state;
    struct harness *h = harness_new(NULL, NULL, NULL);
    h->cfg.on_limit = CONFIG_ON_LIMIT_WARN;
    h->cfg.max_bytes = 100;
    uint8_t b[512], a[4096];
    char text[1000];
    memset(text, 'x', sizeof(text) - 1);
    text[sizeof(text) - 1] = 0;
    size_t n = query(b, "select 1/0");
    client_sends(h, b, n);
    size_t an = error_msg(a, "22012", text);
    an += msg(a + an, 'Z', "I", 1);
    upstream_sends(h, a, an);
    assert_int_equal(h->cli.len, an);
    assert_memory_equal(h->cli.data, a, an);
    assert_record(h, "error", NULL, "max-bytes");
    harness_free(h);
}

/* --on-limit warn: COPY FROM STDIN data past --max-bytes still flows upstream. */
static void test_on_limit_warn_copy_in_flows(void **state)
{
    (void)state;
    struct harness *h = harness_new(NULL, NULL, NULL);
    h->cfg.on_limit = CONFIG_ON_LIMIT_WARN;
    h->cfg.max_bytes = 50;
    uint8_t b[4096], a[512];
    size_t n = query(b, "copy t from stdin");
    assert_int_equal(client_sends(h, b, n), 0);
    static const uint8_t copy_in[] = {0, 0, 0};
    upstream_sends(h, a, msg(a, 'G', copy_in, sizeof(copy_in)));
    assert_true(h->r.copy_in);
    h->up.len = 0;
    n = 0;
    for (int i = 0; i < 10; i++)
        n += msg(b + n, 'd', "0123456789\n", 11);
    n += msg(b + n, 'c', NULL, 0);
    assert_int_equal(client_sends(h, b, n), n);
    assert_int_equal(h->up.len, n);
    assert_memory_equal(h->up.data, b, n);
    size_t an = msg(a, 'C', "COPY 10", 8);
    an += msg(a + an, 'Z', "I", 1);
    upstream_sends(h, a, an);
    assert_record(h, "would_limit", "max-bytes", NULL);
    harness_free(h);
}

static size_t pbes(uint8_t *b, const char *sql)
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
    len += msg(b + len, 'E', exec, sizeof(exec));
    return len + msg(b + len, 'S', NULL, 0);
}

/* Extended protocol: a shadow-denied Parse goes upstream as sent; its portal run is the record
 * that says would_deny. */
static void test_shadow_denied_parse_runs(void **state)
{
    (void)state;
    struct harness *h = harness_new("shadow:truncate", NULL, NULL);
    int64_t before = shadow_count("deny:truncate");
    uint8_t b[512], a[512];
    size_t n = pbes(b, "truncate t");
    assert_int_equal(client_sends(h, b, n), n);
    assert_int_equal(h->up.len, n);
    assert_memory_equal(h->up.data, b, n);
    assert_int_equal(shadow_count("deny:truncate"), before + 1);
    size_t an = msg(a, '1', NULL, 0);
    an += msg(a + an, '2', NULL, 0);
    an += msg(a + an, 'C', "TRUNCATE TABLE", 15);
    an += msg(a + an, 'Z', "I", 1);
    upstream_sends(h, a, an);
    assert_int_equal(h->cli.len, an);
    assert_memory_equal(h->cli.data, a, an);
    assert_int_equal(h->done, 1);
    assert_true(h->last_ext);
    assert_record(h, "would_deny", "deny:truncate", NULL);

    /* the next Parse of another text replaces the unnamed statement and its verdict */
    h->cli.len = h->up.len = 0;
    client_sends(h, b, pbes(b, "select 1"));
    an = msg(a, '1', NULL, 0);
    an += msg(a + an, '2', NULL, 0);
    an += msg(a + an, 'C', "SELECT 0", 9);
    an += msg(a + an, 'Z', "I", 1);
    upstream_sends(h, a, an);
    assert_int_equal(h->done, 2);
    assert_record(h, "ok", NULL, NULL);
    harness_free(h);
}

/* Extended protocol under --on-limit warn: the portal run gets all its rows. */
static void test_on_limit_warn_extended(void **state)
{
    (void)state;
    struct harness *h = harness_new(NULL, NULL, NULL);
    h->cfg.on_limit = CONFIG_ON_LIMIT_WARN;
    h->cfg.max_rows = 2;
    uint8_t b[512], a[4096];
    client_sends(h, b, pbes(b, "select g from generate_series(1, 5) g"));
    static const uint8_t row[] = {0, 1, 0, 0, 0, 1, '1'};
    size_t an = msg(a, '1', NULL, 0);
    an += msg(a + an, '2', NULL, 0);
    for (int i = 0; i < 5; i++)
        an += msg(a + an, 'D', row, sizeof(row));
    an += msg(a + an, 'C', "SELECT 5", 9);
    an += msg(a + an, 'Z', "I", 1);
    upstream_sends(h, a, an);
    assert_int_equal(h->cli.len, an);
    assert_memory_equal(h->cli.data, a, an);
    assert_int_equal(h->cancels, 0);
    assert_int_equal(h->last.rows, 5);
    assert_record(h, "would_limit", "max-rows", NULL);
    harness_free(h);
}

/* The audit's view of every combination. */
static void test_audit_view(void **state)
{
    (void)state;
    struct stmt st;
    memset(&st, 0, sizeof(st));
    assert_view(&st, STMT_OK, "ok", NULL, NULL);
    snprintf(st.shadow_rule, sizeof(st.shadow_rule), "deny:truncate");
    assert_view(&st, STMT_OK, "would_deny", "deny:truncate", NULL);
    st.shadow_limit = "max-rows";
    assert_view(&st, STMT_OK, "would_deny", "deny:truncate", "max-rows");
    st.shadow_rule[0] = 0;
    assert_view(&st, STMT_OK, "would_limit", "max-rows", NULL);
    st.rule = "query-timeout"; /* an enforced guardrail acted: it is the record's rule */
    assert_view(&st, STMT_LIMITED, "limit", "query-timeout", "max-rows");
    st.rule = "max-rows"; /* --on-limit truncate: ok, with its rule */
    st.shadow_limit = NULL;
    snprintf(st.shadow_rule, sizeof(st.shadow_rule), "allow");
    assert_view(&st, STMT_OK, "ok", "max-rows", "allow");
    st.rule = NULL;
    assert_view(&st, STMT_CLIENT_GONE, "client_gone", NULL, "allow");
    assert_view(&st, STMT_ERROR, "error", NULL, "allow");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shadow_denied_query_runs),
        cmocka_unit_test(test_enforced_beats_shadow),
        cmocka_unit_test(test_shadow_denied_error_keeps_outcome),
        cmocka_unit_test(test_on_limit_warn_delivers_everything),
        cmocka_unit_test(test_on_limit_warn_forwards_a_large_error),
        cmocka_unit_test(test_on_limit_warn_copy_in_flows),
        cmocka_unit_test(test_shadow_denied_parse_runs),
        cmocka_unit_test(test_on_limit_warn_extended),
        cmocka_unit_test(test_audit_view),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
