/* Shadow rules and --on-limit warn in the relay, driven with scripted bytes through the relay
 * fake under a compiled policy: a statement that a shadow rule or a budget would have stopped
 * runs exactly as it would directly (the upstream gets the client's bytes, the client gets the
 * upstream's), and its record, log and counter say what enforcing would have done. */
#include "relay_asserts.h"

#include "metrics.h"

/* --extended-protocol allow, --copy allow and a policy of these rules; deny, allow:
 * comma-free single entries or NULL. */
static void use_rules(struct fake *f, const char *deny1, const char *deny2, const char *allow)
{
    char err[256];
    const char *deny[2];
    size_t nd = 0;
    if (deny1)
        deny[nd++] = deny1;
    if (deny2)
        deny[nd++] = deny2;
    const char *al[] = {allow};
    fake_allow_extended(f);
    fake_allow_copy(f);
    struct guard_rules rules = {
        .deny = deny, .ndeny = nd, .allow = al, .nallow = allow ? 1 : 0, .relay_copy = true};
    struct guard_policy *p = guard_policy_compile(&rules, err, sizeof(err));
    assert_non_null(p);
    fake_set_policy(f, p);
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

static void assert_record(const struct fake *f, const char *outcome, const char *rule,
                          const char *shadow)
{
    assert_string_equal(f->audit_outcome, outcome);
    assert_string_equal(f->audit_rule, rule ? rule : "");
    assert_string_equal(f->audit_shadow, shadow ? shadow : "");
}

/* The client got exactly what the upstream sent. */
static void assert_client_got(const struct fake *f, const struct fbuf *a)
{
    assert_int_equal(f->cli_out.len, a->len);
    assert_memory_equal(f->cli_out.p, a->p, a->len);
}

/* The upstream got exactly what the client sent. */
static void assert_upstream_got(const struct fake *f, const struct fbuf *b)
{
    assert_int_equal(f->up_out.len, b->len);
    assert_memory_equal(f->up_out.p, b->p, b->len);
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
    struct fake *f = *state;
    struct fbuf b = {0}, a = {0};
    use_rules(f, "shadow:truncate", NULL, NULL);
    int64_t before = shadow_count("deny:truncate");
    fe_query(&b, "truncate t");
    fake_client_buf(f, &b);
    assert_int_equal(f->cli_len, b.len); /* forwarded: it stays in the buffer */
    assert_upstream_got(f, &b);
    assert_int_equal(f->cli_out.len, 0);
    assert_int_equal(shadow_count("deny:truncate"), before + 1);
    up_complete(&a, "TRUNCATE TABLE");
    up_ready(&a, 'I');
    assert_upstream_taken(f, &a);
    assert_client_got(f, &a);
    assert_int_equal(f->done, 1);
    assert_int_equal(f->outcome, STMT_OK);
    assert_string_equal(f->last.shadow_rule, "deny:truncate");
    assert_record(f, "would_deny", "deny:truncate", NULL);

    /* a statement the shadow allows is plain ok */
    f->cli_out.len = f->up_out.len = 0;
    fake_query(f, "select 1");
    a.len = 0;
    up_select(&a, 1);
    up_ready(&a, 'I');
    assert_upstream_taken(f, &a);
    assert_int_equal(f->done, 2);
    assert_record(f, "ok", NULL, NULL);
    assert_int_equal(shadow_count("deny:truncate"), before + 1);
    fb_free(&b);
    fb_free(&a);
}

/* Enforced and shadow on the same statement: refused locally, recorded as denied. */
static void test_enforced_beats_shadow(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    use_rules(f, "truncate", "shadow:truncate", NULL);
    int64_t shadow = shadow_count("deny:truncate"), enforced = enforce_count("deny:truncate");
    fe_query(&b, "truncate t");
    assert_client_taken(f, &b);
    assert_int_equal(f->up_out.len, 0);
    assert_int_equal(f->cli_out.p[0], 'E');
    assert_non_null(memmem(f->cli_out.p, f->cli_out.len, "C42501", 7));
    assert_int_equal(f->outcome, STMT_DENIED);
    assert_record(f, "denied", "deny:truncate", NULL);
    assert_int_equal(shadow_count("deny:truncate"), shadow);
    assert_int_equal(enforce_count("deny:truncate"), enforced + 1);
    fb_free(&b);
}

/* A shadow-denied statement that fails upstream keeps its outcome and names the shadow rule. */
static void test_shadow_denied_error_keeps_outcome(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0}, a = {0};
    use_rules(f, NULL, NULL, "shadow:select");
    fe_query(&b, "delete from missing");
    fake_client_buf(f, &b);
    assert_int_equal(f->up_out.len, b.len);
    up_error(&a, "ERROR", "42P01", "relation \"missing\" does not exist");
    up_ready(&a, 'I');
    assert_upstream_taken(f, &a);
    assert_client_got(f, &a);
    assert_record(f, "error", NULL, "allow");
    fb_free(&b);
    fb_free(&a);
}

/* --on-limit warn: every row reaches the client, nothing is canceled, the budget is counted
 * once as a shadow violation and the record is would_limit. */
static void test_on_limit_warn_delivers_everything(void **state)
{
    struct fake *f = *state;
    struct fbuf a = {0};
    use_rules(f, NULL, NULL, NULL);
    f->cfg.on_limit = CONFIG_ON_LIMIT_WARN;
    f->cfg.max_rows = 3;
    int64_t before = shadow_count("max-rows"), enforced = enforce_count("max-rows");
    const char *sql = "select g from generate_series(1, 20) g";
    fake_query(f, sql);
    up_select(&a, 20);
    up_ready(&a, 'I');
    assert_upstream_taken(f, &a);
    assert_client_got(f, &a);
    assert_int_equal(f->cancels, 0);
    assert_int_equal(f->last.rows, 20);
    assert_string_equal(f->last.shadow_limit, "max-rows");
    assert_record(f, "would_limit", "max-rows", NULL);
    assert_int_equal(shadow_count("max-rows"), before + 1);
    assert_int_equal(enforce_count("max-rows"), enforced);

    /* the next statement has its budget again, and one within it is ok */
    f->cli_out.len = 0;
    fake_query(f, sql);
    a.len = 0;
    up_select(&a, 3);
    up_ready(&a, 'I');
    assert_upstream_taken(f, &a);
    assert_record(f, "ok", NULL, NULL);
    assert_int_equal(shadow_count("max-rows"), before + 1);
    fb_free(&a);
}

/* --on-limit warn past --max-bytes: an upstream error larger than what is left of the budget
 * reaches the client unchanged (error mode replaces it with the proxy's 54000). */
static void test_on_limit_warn_forwards_a_large_error(void **state)
{
    struct fake *f = *state;
    struct fbuf a = {0};
    use_rules(f, NULL, NULL, NULL);
    f->cfg.on_limit = CONFIG_ON_LIMIT_WARN;
    f->cfg.max_bytes = 100;
    char text[1000];
    memset(text, 'x', sizeof(text) - 1);
    text[sizeof(text) - 1] = 0;
    fake_query(f, "select 1/0");
    up_error(&a, "ERROR", "22012", text);
    up_ready(&a, 'I');
    assert_upstream_taken(f, &a);
    assert_client_got(f, &a);
    assert_record(f, "error", NULL, "max-bytes");
    fb_free(&a);
}

/* --on-limit warn: COPY FROM STDIN data past --max-bytes still flows upstream. */
static void test_on_limit_warn_copy_in_flows(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0}, a = {0};
    use_rules(f, NULL, NULL, NULL);
    f->cfg.on_limit = CONFIG_ON_LIMIT_WARN;
    f->cfg.max_bytes = 50;
    fe_query(&b, "copy t from stdin");
    fake_client_buf(f, &b);
    assert_int_equal(f->cli_len, b.len);
    up_copy(&a, 'G');
    assert_upstream_taken(f, &a);
    assert_true(f->r.copy_in);
    f->up_out.len = 0;
    b.len = 0;
    for (int i = 0; i < 10; i++)
        fb_msg(&b, 'd', "0123456789\n", 11);
    fe_empty(&b, 'c');
    assert_client_taken(f, &b);
    assert_upstream_got(f, &b);
    a.len = 0;
    up_complete(&a, "COPY 10");
    up_ready(&a, 'I');
    assert_upstream_taken(f, &a);
    assert_record(f, "would_limit", "max-bytes", NULL);
    fb_free(&b);
    fb_free(&a);
}

/* Extended protocol: a shadow-denied Parse goes upstream as sent; its portal run is the record
 * that says would_deny. */
static void test_shadow_denied_parse_runs(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0}, a = {0};
    use_rules(f, "shadow:truncate", NULL, NULL);
    int64_t before = shadow_count("deny:truncate");
    fe_extended_query(&b, "truncate t");
    assert_client_taken(f, &b);
    assert_upstream_got(f, &b);
    assert_int_equal(shadow_count("deny:truncate"), before + 1);
    up_empty(&a, '1');
    up_empty(&a, '2');
    up_complete(&a, "TRUNCATE TABLE");
    up_ready(&a, 'I');
    assert_upstream_taken(f, &a);
    assert_client_got(f, &a);
    assert_int_equal(f->done, 1);
    assert_string_equal(f->last_protocol, "extended");
    assert_record(f, "would_deny", "deny:truncate", NULL);

    /* the next Parse of another text replaces the unnamed statement and its verdict */
    f->cli_out.len = f->up_out.len = 0;
    b.len = 0;
    fe_extended_query(&b, "select 1");
    fake_client_buf(f, &b);
    a.len = 0;
    up_empty(&a, '1');
    up_empty(&a, '2');
    up_complete(&a, "SELECT 0");
    up_ready(&a, 'I');
    assert_upstream_taken(f, &a);
    assert_int_equal(f->done, 2);
    assert_record(f, "ok", NULL, NULL);
    fb_free(&b);
    fb_free(&a);
}

/* Extended protocol under --on-limit warn: the portal run gets all its rows. */
static void test_on_limit_warn_extended(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0}, a = {0};
    use_rules(f, NULL, NULL, NULL);
    f->cfg.on_limit = CONFIG_ON_LIMIT_WARN;
    f->cfg.max_rows = 2;
    fe_extended_query(&b, "select g from generate_series(1, 5) g");
    fake_client_buf(f, &b);
    up_empty(&a, '1');
    up_empty(&a, '2');
    for (int i = 0; i < 5; i++)
        up_row(&a, "1");
    up_complete(&a, "SELECT 5");
    up_ready(&a, 'I');
    assert_upstream_taken(f, &a);
    assert_client_got(f, &a);
    assert_int_equal(f->cancels, 0);
    assert_int_equal(f->last.rows, 5);
    assert_record(f, "would_limit", "max-rows", NULL);
    fb_free(&b);
    fb_free(&a);
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
        cmocka_unit_test_setup_teardown(test_shadow_denied_query_runs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_enforced_beats_shadow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shadow_denied_error_keeps_outcome, setup, teardown),
        cmocka_unit_test_setup_teardown(test_on_limit_warn_delivers_everything, setup, teardown),
        cmocka_unit_test_setup_teardown(test_on_limit_warn_forwards_a_large_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_on_limit_warn_copy_in_flows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shadow_denied_parse_runs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_on_limit_warn_extended, setup, teardown),
        cmocka_unit_test(test_audit_view),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
