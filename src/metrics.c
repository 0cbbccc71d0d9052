#include "metrics.h"
#include "metrics_text.h"
#include "metrics_user.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef PGWP_VERSION
#define PGWP_VERSION "dev"
#endif

#define METRIC_PREFIX METRICS_TEXT_PREFIX

/* Bounds are kept in integer microseconds so an observation never touches floating point, and
 * the le label is spelled by hand so the text never shows "0.00050000000000000001". */
struct bucket_bound {
    uint64_t us;
    const char *le;
};

static const struct bucket_bound query_bounds[] = {
    {500, "0.0005"},  {1000, "0.001"},  {2500, "0.0025"}, {5000, "0.005"},  {10000, "0.01"},
    {25000, "0.025"}, {50000, "0.05"},  {100000, "0.1"},  {250000, "0.25"}, {500000, "0.5"},
    {1000000, "1"},   {2500000, "2.5"}, {5000000, "5"},   {10000000, "10"}, {30000000, "30"},
};

static const struct bucket_bound connect_bounds[] = {
    {1000, "0.001"},  {2500, "0.0025"}, {5000, "0.005"},  {10000, "0.01"}, {25000, "0.025"},
    {50000, "0.05"},  {100000, "0.1"},  {250000, "0.25"}, {500000, "0.5"}, {1000000, "1"},
    {2500000, "2.5"}, {5000000, "5"},   {10000000, "10"},
};

#define NELEM(a)         (sizeof(a) / sizeof((a)[0]))
#define HIST_MAX_BUCKETS 16 /* finite bounds plus the +Inf slot */

_Static_assert(NELEM(query_bounds) < HIST_MAX_BUCKETS, "query histogram too wide");
_Static_assert(NELEM(connect_bounds) < HIST_MAX_BUCKETS, "connect histogram too wide");

/* Buckets are stored non-cumulative so one observation is a single atomic add; the renderer
 * accumulates them. There is no separate count: _count is the sum of the buckets, which keeps
 * _count equal to the +Inf bucket in every scrape even while writers are running. */
struct histogram {
    const struct bucket_bound *bounds;
    size_t nbounds;
    _Atomic uint64_t buckets[HIST_MAX_BUCKETS];
    _Atomic uint64_t sum_us;
};

/* PostgreSQL's SQLSTATE classes (its errcodes.txt). Clients choose the codes the server sends
 * (RAISE ... USING ERRCODE accepts any five characters), so only these become labels and
 * everything else is counted as "other": the series set stays fixed. Sorted for bsearch. */
static const char sqlstate_classes[][3] = {
    "00", "01", "02", "03", "08", "09", "0A", "0B", "0F", "0L", "0P", "0Z", "10", "20", "21",
    "22", "23", "24", "25", "26", "27", "28", "2B", "2D", "2F", "34", "38", "39", "3B", "3D",
    "3F", "40", "42", "44", "53", "54", "55", "57", "58", "72", "F0", "HV", "P0", "XX",
};
#define SQLSTATE_CLASSES (sizeof(sqlstate_classes) / sizeof(sqlstate_classes[0]))

/* Guardrail rule labels come from configuration, so the set is small but not known at compile
 * time. A fixed table bounds the series count even if a caller passes something unbounded. */
#define RULE_SLOTS    64
#define RULE_NAME_MAX 96 /* matches guard's rule buffer, e.g. "deny:function:pg_sleep" */

/* mode: enforce (the rule acted) or shadow (a shadow: rule or --on-limit warn only recorded
 * what it would have done). A rule id and its mode share one slot. */
enum rule_mode { RULE_ENFORCE, RULE_SHADOW, RULE_MODES };
static const char *const rule_mode_names[RULE_MODES] = {"enforce", "shadow"};

struct rule_slot {
    char name[RULE_NAME_MAX]; /* immutable once published through rule_used */
    enum rule_mode mode;      /* likewise */
    _Atomic uint64_t count;
};

static const char *const conn_outcome_names[] = {"accepted", "rejected_limit", "upstream_failed",
                                                 "protocol_error"};
static const char *const query_outcome_names[] = {"ok", "error", "denied", "limited", "rejected"};
static const char *const cancel_outcome_names[] = {"forwarded",    "unknown_key", "failed",
                                                   "rate_limited", "dropped",     "coalesced"};
static const char *const probe_result_names[] = {
    "ok", "auth_failed", "too_many_connections", "unreachable", "timeout", "rejected"};
static const char *const http_close_names[] = {"deadline", "evicted", "address_limit"};

_Static_assert(NELEM(conn_outcome_names) == METRICS_CONN_OUTCOME_MAX, "conn outcome names");
_Static_assert(NELEM(query_outcome_names) == METRICS_QUERY_OUTCOME_MAX, "query outcome names");
_Static_assert(NELEM(cancel_outcome_names) == METRICS_CANCEL_OUTCOME_MAX, "cancel outcome names");
_Static_assert(NELEM(probe_result_names) == METRICS_PROBE_RESULT_MAX, "probe result names");
_Static_assert(NELEM(http_close_names) == METRICS_HTTP_CLOSE_MAX, "http close names");

static _Atomic int64_t sessions_active;
static _Atomic uint64_t connections[METRICS_CONN_OUTCOME_MAX];
static _Atomic uint64_t queries[METRICS_QUERY_OUTCOME_MAX];
static struct histogram query_hist = {.bounds = query_bounds, .nbounds = NELEM(query_bounds)};
static _Atomic uint64_t errors_by_class[SQLSTATE_CLASSES];
static _Atomic uint64_t errors_other; /* undefined or malformed classes */
static _Atomic uint64_t rows_sent;
static _Atomic uint64_t bytes_sent;
static struct rule_slot rule_slots[RULE_SLOTS];
static atomic_size_t rule_used;
static _Atomic uint64_t rule_other[RULE_MODES];
static pthread_mutex_t rule_insert_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic uint64_t cancels[METRICS_CANCEL_OUTCOME_MAX];
static _Atomic uint64_t tls_ok;
static _Atomic uint64_t tls_failed;
static struct histogram connect_hist = {.bounds = connect_bounds, .nbounds = NELEM(connect_bounds)};
static _Atomic uint64_t connect_failures;
static _Atomic uint64_t audit_written;
static _Atomic uint64_t audit_dropped;
static _Atomic uint64_t audit_queue_full;
static _Atomic uint64_t probes[METRICS_PROBE_RESULT_MAX];
static atomic_int upstream_up = -1; /* last probe: 1 ok, 0 failed, -1 none yet */
static _Atomic uint64_t http_closed[METRICS_HTTP_CLOSE_MAX];
static uint64_t start_time_us;
static pthread_mutex_t extra_lock = PTHREAD_MUTEX_INITIALIZER;
static char *(*extra_fn)(void *arg);
static void *extra_arg;

static inline void counter_add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static inline uint64_t counter_get(_Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

/* Runs before main() so the start time is the process's, not the first scrape's, without
 * asking main.c to remember an init call. */
__attribute__((constructor)) static void record_start_time(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) == 0)
        start_time_us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void histogram_observe(struct histogram *h, uint64_t us)
{
    size_t i = 0;
    /* Prometheus buckets are "less than or equal": a value on a bound belongs to it. */
    while (i < h->nbounds && us > h->bounds[i].us)
        i++;
    counter_add(&h->buckets[i], 1);
    counter_add(&h->sum_us, us);
}

void metrics_session_open(void)
{
    atomic_fetch_add_explicit(&sessions_active, 1, memory_order_relaxed);
}

void metrics_session_close(void)
{
    atomic_fetch_sub_explicit(&sessions_active, 1, memory_order_relaxed);
}

void metrics_connection(enum metrics_conn_outcome o)
{
    if ((unsigned)o < METRICS_CONN_OUTCOME_MAX)
        counter_add(&connections[o], 1);
}

void metrics_query(enum metrics_query_outcome o, uint64_t duration_us)
{
    if ((unsigned)o < METRICS_QUERY_OUTCOME_MAX)
        counter_add(&queries[o], 1);
    histogram_observe(&query_hist, duration_us);
}

void metrics_rows_bytes(uint64_t rows, uint64_t bytes)
{
    if (rows)
        counter_add(&rows_sent, rows);
    if (bytes)
        counter_add(&bytes_sent, bytes);
}

/* Upper-cases one SQLSTATE character, or returns 0 if it cannot be one. Written out instead of
 * <ctype.h> so the locale cannot change which classes exist. */
static char sqlstate_char(char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z'))
        return c;
    if (c >= 'a' && c <= 'z')
        return (char)(c - 'a' + 'A');
    return 0;
}

static int class_cmp(const void *key, const void *elem)
{
    return memcmp(key, elem, 2);
}

/* Index of the SQLSTATE's class in sqlstate_classes, or -1. */
static int sqlstate_class_index(const char *sqlstate)
{
    if (!sqlstate)
        return -1;
    char cls[2] = {sqlstate_char(sqlstate[0]), 0};
    if (!cls[0])
        return -1;
    cls[1] = sqlstate_char(sqlstate[1]);
    if (!cls[1])
        return -1;
    const char(*hit)[3] =
        bsearch(cls, sqlstate_classes, SQLSTATE_CLASSES, sizeof(sqlstate_classes[0]), class_cmp);
    return hit ? (int)(hit - sqlstate_classes) : -1;
}

const char *metrics_sqlstate_class(const char *sqlstate)
{
    int idx = sqlstate_class_index(sqlstate);
    return idx < 0 ? NULL : sqlstate_classes[idx];
}

void metrics_error_sqlstate(const char *sqlstate)
{
    int idx = sqlstate_class_index(sqlstate);
    if (idx < 0)
        counter_add(&errors_other, 1);
    else
        counter_add(&errors_by_class[idx], 1);
}

/* Label values must be valid UTF-8 in the exposition format; a rule name is operator text, so
 * anything outside printable ASCII becomes '_' rather than risk an unparsable scrape. Returns
 * false when the name does not fit a slot. */
static bool rule_normalize(const char *rule, char out[RULE_NAME_MAX])
{
    size_t i = 0;
    for (; rule[i]; i++) {
        if (i + 1 >= RULE_NAME_MAX)
            return false;
        unsigned char c = (unsigned char)rule[i];
        out[i] = (c < 0x20 || c >= 0x7f) ? '_' : (char)c;
    }
    out[i] = '\0';
    return i > 0;
}

static struct rule_slot *rule_find(const char *name, enum rule_mode mode, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++)
        if (rule_slots[i].mode == mode && strcmp(rule_slots[i].name, name) == 0)
            return &rule_slots[i];
    return NULL;
}

/* Lock-free for names already interned (the common case); the mutex only serialises the first
 * insertion of a name, so two threads can never publish the same label twice. */
static struct rule_slot *rule_intern(const char *name, enum rule_mode mode)
{
    size_t used = atomic_load_explicit(&rule_used, memory_order_acquire);
    struct rule_slot *slot = rule_find(name, mode, 0, used);
    if (slot)
        return slot;

    pthread_mutex_lock(&rule_insert_lock);
    size_t now = atomic_load_explicit(&rule_used, memory_order_relaxed);
    slot = rule_find(name, mode, used, now);
    if (!slot && now < RULE_SLOTS) {
        slot = &rule_slots[now];
        memcpy(slot->name, name, strlen(name) + 1);
        slot->mode = mode;
        atomic_store_explicit(&rule_used, now + 1, memory_order_release);
    }
    pthread_mutex_unlock(&rule_insert_lock);
    return slot;
}

static void guardrail_count(const char *rule, enum rule_mode mode)
{
    char name[RULE_NAME_MAX];
    struct rule_slot *slot = NULL;

    /* "other" is the overflow series itself, so it must never also be an interned label. */
    if (rule && rule_normalize(rule, name) && strcmp(name, "other") != 0)
        slot = rule_intern(name, mode);
    counter_add(slot ? &slot->count : &rule_other[mode], 1);
}

void metrics_guardrail(const char *rule)
{
    guardrail_count(rule, RULE_ENFORCE);
}

void metrics_guardrail_shadow(const char *rule)
{
    guardrail_count(rule, RULE_SHADOW);
}

void metrics_cancel(enum metrics_cancel_outcome o)
{
    if ((unsigned)o < METRICS_CANCEL_OUTCOME_MAX)
        counter_add(&cancels[o], 1);
}

void metrics_tls_handshake(int ok)
{
    counter_add(ok ? &tls_ok : &tls_failed, 1);
}

void metrics_upstream_probe(enum metrics_probe_result r)
{
    if ((unsigned)r >= METRICS_PROBE_RESULT_MAX)
        return;
    counter_add(&probes[r], 1);
    atomic_store_explicit(&upstream_up, r == METRICS_PROBE_OK, memory_order_relaxed);
}

void metrics_http_closed(enum metrics_http_close reason)
{
    if ((unsigned)reason < METRICS_HTTP_CLOSE_MAX)
        counter_add(&http_closed[reason], 1);
}

/* Only successful connects feed the histogram: a failure is usually a timeout or a refusal,
 * and mixing those in would make the latency quantiles describe the failure mode instead. */
void metrics_upstream_connect(uint64_t duration_us, int ok)
{
    if (ok)
        histogram_observe(&connect_hist, duration_us);
    else
        counter_add(&connect_failures, 1);
}

void metrics_audit(bool written)
{
    counter_add(written ? &audit_written : &audit_dropped, 1);
}

void metrics_audit_queue_full(void)
{
    counter_add(&audit_queue_full, 1);
}

/* ---- rendering ---------------------------------------------------------------------------- */

static void render_labeled(struct metrics_text *o, const char *name, const char *label,
                           const char *const *values, _Atomic uint64_t *counters, size_t n)
{
    for (size_t i = 0; i < n; i++)
        metrics_text_printf(o, METRIC_PREFIX "%s{%s=\"%s\"} %" PRIu64 "\n", name, label, values[i],
                            counter_get(&counters[i]));
}

static void render_histogram(struct metrics_text *o, const char *name, struct histogram *h)
{
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= h->nbounds; i++) {
        cumulative += counter_get(&h->buckets[i]);
        metrics_text_printf(o, METRIC_PREFIX "%s_bucket{le=\"%s\"} %" PRIu64 "\n", name,
                            i < h->nbounds ? h->bounds[i].le : "+Inf", cumulative);
    }
    metrics_text_printf(o, METRIC_PREFIX "%s_sum ", name);
    metrics_text_seconds(o, counter_get(&h->sum_us));
    metrics_text_printf(o, "\n" METRIC_PREFIX "%s_count %" PRIu64 "\n", name, cumulative);
}

static void render_process(struct metrics_text *o)
{
    metrics_text_family(o, "build_info", "gauge", "Build information; the value is always 1.");
    metrics_text_printf(o, METRIC_PREFIX "build_info{version=\"");
    metrics_text_label(o, PGWP_VERSION);
    metrics_text_printf(o, "\"} 1\n");

    metrics_text_family(o, "process_start_time_seconds", "gauge",
                        "Start time of the process since the Unix epoch, in seconds.");
    metrics_text_printf(o, METRIC_PREFIX "process_start_time_seconds ");
    metrics_text_seconds(o, start_time_us);
    metrics_text_printf(o, "\n");
}

static void render_sessions(struct metrics_text *o)
{
    metrics_text_family(o, "sessions_active", "gauge", "Client sessions currently open.");
    metrics_text_printf(o, METRIC_PREFIX "sessions_active %" PRId64 "\n",
                        atomic_load_explicit(&sessions_active, memory_order_relaxed));

    metrics_text_family(o, "connections_total", "counter",
                        "Client connections by how they ended up.");
    render_labeled(o, "connections_total", "outcome", conn_outcome_names, connections,
                   METRICS_CONN_OUTCOME_MAX);

    metrics_text_family(o, "tls_handshakes_total", "counter", "Client TLS handshakes by result.");
    metrics_text_printf(o, METRIC_PREFIX "tls_handshakes_total{outcome=\"ok\"} %" PRIu64 "\n",
                        counter_get(&tls_ok));
    metrics_text_printf(o, METRIC_PREFIX "tls_handshakes_total{outcome=\"failed\"} %" PRIu64 "\n",
                        counter_get(&tls_failed));

    metrics_text_family(o, "cancel_requests_total", "counter", "CancelRequest messages by result.");
    render_labeled(o, "cancel_requests_total", "outcome", cancel_outcome_names, cancels,
                   METRICS_CANCEL_OUTCOME_MAX);
}

static void render_errors(struct metrics_text *o)
{
    metrics_text_family(
        o, "errors_total", "counter",
        "ErrorResponses sent to clients, by SQLSTATE class (first two characters).");
    for (size_t i = 0; i < SQLSTATE_CLASSES; i++) {
        uint64_t v = counter_get(&errors_by_class[i]);
        if (v)
            metrics_text_printf(o, METRIC_PREFIX "errors_total{class=\"%s\"} %" PRIu64 "\n",
                                sqlstate_classes[i], v);
    }
    uint64_t other = counter_get(&errors_other);
    if (other)
        metrics_text_printf(o, METRIC_PREFIX "errors_total{class=\"other\"} %" PRIu64 "\n", other);
}

static void render_guardrails(struct metrics_text *o)
{
    metrics_text_family(
        o, "guardrail_violations_total", "counter",
        "Statements or sessions stopped by a guardrail (mode enforce), or that a shadow "
        "rule or --on-limit warn would have stopped (mode shadow), by rule.");
    size_t used = atomic_load_explicit(&rule_used, memory_order_acquire);
    for (size_t i = 0; i < used; i++) {
        metrics_text_printf(o, METRIC_PREFIX "guardrail_violations_total{rule=\"");
        metrics_text_label(o, rule_slots[i].name);
        metrics_text_printf(o, "\",mode=\"%s\"} %" PRIu64 "\n", rule_mode_names[rule_slots[i].mode],
                            counter_get(&rule_slots[i].count));
    }
    for (int m = 0; m < RULE_MODES; m++)
        metrics_text_printf(
            o, METRIC_PREFIX "guardrail_violations_total{rule=\"other\",mode=\"%s\"} %" PRIu64 "\n",
            rule_mode_names[m], counter_get(&rule_other[m]));
}

static void render_queries(struct metrics_text *o)
{
    metrics_text_family(o, "queries_total", "counter",
                        "Simple-protocol Query messages by outcome.");
    render_labeled(o, "queries_total", "outcome", query_outcome_names, queries,
                   METRICS_QUERY_OUTCOME_MAX);

    metrics_text_family(o, "query_duration_seconds", "histogram",
                        "Time from receiving a Query to sending its ReadyForQuery.");
    render_histogram(o, "query_duration_seconds", &query_hist);

    render_errors(o);

    metrics_text_family(o, "rows_sent_total", "counter", "DataRow messages relayed to clients.");
    metrics_text_printf(o, METRIC_PREFIX "rows_sent_total %" PRIu64 "\n", counter_get(&rows_sent));
    metrics_text_family(o, "bytes_sent_total", "counter", "Result bytes relayed to clients.");
    metrics_text_printf(o, METRIC_PREFIX "bytes_sent_total %" PRIu64 "\n",
                        counter_get(&bytes_sent));

    render_guardrails(o);
}

static void render_upstream(struct metrics_text *o)
{
    metrics_text_family(o, "upstream_connect_seconds", "histogram",
                        "Time to open and authenticate a successful upstream connection.");
    render_histogram(o, "upstream_connect_seconds", &connect_hist);

    metrics_text_family(o, "upstream_connect_failures_total", "counter",
                        "Upstream connection attempts that failed.");
    metrics_text_printf(o, METRIC_PREFIX "upstream_connect_failures_total %" PRIu64 "\n",
                        counter_get(&connect_failures));

    metrics_text_family(
        o, "upstream_probes_total", "counter",
        "Upstream health probes behind /healthz (one per interval at most), by result.");
    render_labeled(o, "upstream_probes_total", "result", probe_result_names, probes,
                   METRICS_PROBE_RESULT_MAX);
    int up = atomic_load_explicit(&upstream_up, memory_order_relaxed);
    if (up >= 0) {
        metrics_text_family(o, "upstream_up", "gauge",
                            "1 if the last upstream health probe succeeded.");
        metrics_text_printf(o, METRIC_PREFIX "upstream_up %d\n", up);
    }
}

static void render_http(struct metrics_text *o)
{
    metrics_text_family(o, "http_connections_closed_total", "counter",
                        "Metrics-port connections closed by the proxy, by reason.");
    render_labeled(o, "http_connections_closed_total", "reason", http_close_names, http_closed,
                   METRICS_HTTP_CLOSE_MAX);
}

static void render_audit(struct metrics_text *o)
{
    metrics_text_family(o, "audit_records_total", "counter",
                        "Audit records written to --audit-log.");
    metrics_text_printf(o, METRIC_PREFIX "audit_records_total %" PRIu64 "\n",
                        counter_get(&audit_written));
    metrics_text_family(o, "audit_records_dropped_total", "counter",
                        "Audit records dropped because --audit-log could not be written.");
    metrics_text_printf(o, METRIC_PREFIX "audit_records_dropped_total %" PRIu64 "\n",
                        counter_get(&audit_dropped));
    metrics_text_family(o, "audit_queue_full_total", "counter",
                        "Audit records refused by a full queue; their session waited for room.");
    metrics_text_printf(o, METRIC_PREFIX "audit_queue_full_total %" PRIu64 "\n",
                        counter_get(&audit_queue_full));
}

char *metrics_render(size_t *len)
{
    struct metrics_text o = {0};
    render_process(&o);
    render_sessions(&o);
    render_queries(&o);
    render_upstream(&o);
    render_audit(&o);
    render_http(&o);
    char *users = metrics_user_render();
    if (users)
        metrics_text_printf(&o, "%s", users);
    o.failed |= !users;
    free(users);
    pthread_mutex_lock(&extra_lock);
    char *extra = extra_fn ? extra_fn(extra_arg) : NULL;
    pthread_mutex_unlock(&extra_lock);
    if (extra)
        metrics_text_printf(&o, "%s", extra);
    free(extra);
    return metrics_text_take(&o, len);
}

void metrics_set_extra(char *(*fn)(void *arg), void *arg)
{
    pthread_mutex_lock(&extra_lock);
    extra_fn = fn;
    extra_arg = arg;
    pthread_mutex_unlock(&extra_lock);
}

static size_t total(struct metrics_total *out, size_t n, size_t max, const char *prefix,
                    const char *name, uint64_t value)
{
    if (n >= max)
        return n;
    snprintf(out[n].name, sizeof(out[n].name), "%s%s", prefix, name);
    out[n].value = value;
    return n + 1;
}

static size_t totals_of(struct metrics_total *out, size_t n, size_t max, const char *prefix,
                        const char *const *names, _Atomic uint64_t *values, size_t count)
{
    for (size_t i = 0; i < count; i++)
        n = total(out, n, max, prefix, names[i], counter_get(&values[i]));
    return n;
}

size_t metrics_totals(struct metrics_total *out, size_t max)
{
    size_t n = total(out, 0, max, "", "sessions_active",
                     (uint64_t)atomic_load_explicit(&sessions_active, memory_order_relaxed));
    n = totals_of(out, n, max, "connections_", conn_outcome_names, connections,
                  METRICS_CONN_OUTCOME_MAX);
    n = totals_of(out, n, max, "statements_", query_outcome_names, queries,
                  METRICS_QUERY_OUTCOME_MAX);
    n = totals_of(out, n, max, "cancels_", cancel_outcome_names, cancels,
                  METRICS_CANCEL_OUTCOME_MAX);
    n = total(out, n, max, "", "rows", counter_get(&rows_sent));
    n = total(out, n, max, "", "bytes", counter_get(&bytes_sent));
    n = total(out, n, max, "", "tls_handshakes_ok", counter_get(&tls_ok));
    n = total(out, n, max, "", "tls_handshakes_failed", counter_get(&tls_failed));
    n = total(out, n, max, "", "upstream_connect_failures", counter_get(&connect_failures));
    n = total(out, n, max, "", "audit_records_written", counter_get(&audit_written));
    return total(out, n, max, "", "audit_records_dropped", counter_get(&audit_dropped));
}
