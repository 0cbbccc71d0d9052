/* Process-wide counters and histograms (relaxed atomics: no lock on the relay path), rendered
 * as Prometheus text. */
#ifndef PGWP_METRICS_H
#define PGWP_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum metrics_conn_outcome {
    METRICS_CONN_ACCEPTED,       /* session admitted and upstream connected */
    METRICS_CONN_REJECTED_LIMIT, /* FATAL 53300 */
    METRICS_CONN_UPSTREAM_FAILED,
    METRICS_CONN_PROTOCOL_ERROR, /* bad startup, timeout, TLS required ... */
    METRICS_CONN_OUTCOME_MAX
};

enum metrics_query_outcome {
    METRICS_QUERY_OK,
    METRICS_QUERY_ERROR,    /* upstream ErrorResponse */
    METRICS_QUERY_DENIED,   /* policy */
    METRICS_QUERY_LIMITED,  /* row/byte/time limit */
    METRICS_QUERY_REJECTED, /* unsupported protocol feature (extended, COPY, ...) */
    METRICS_QUERY_OUTCOME_MAX
};

enum metrics_cancel_outcome {
    METRICS_CANCEL_FORWARDED,
    METRICS_CANCEL_UNKNOWN_KEY,
    METRICS_CANCEL_FAILED,
    METRICS_CANCEL_RATE_LIMITED, /* over --cancel-rate-limit for its address */
    METRICS_CANCEL_DROPPED,      /* a queue or the cancel-socket cap was full */
    METRICS_CANCEL_COALESCED,    /* the same key already had a cancel queued or running */
    METRICS_CANCEL_OUTCOME_MAX
};

/* Results of the shared upstream probe behind /healthz. */
enum metrics_probe_result {
    METRICS_PROBE_OK,
    METRICS_PROBE_AUTH_FAILED,          /* 28P01 / 28000: the DSN's credentials are refused */
    METRICS_PROBE_TOO_MANY_CONNECTIONS, /* 53300 */
    METRICS_PROBE_UNREACHABLE,          /* refused, no route, DNS */
    METRICS_PROBE_TIMEOUT,
    METRICS_PROBE_REJECTED, /* any other refusal, e.g. 3D000 database does not exist */
    METRICS_PROBE_RESULT_MAX
};

/* Metrics-port connections the HTTP server closed on its own. */
enum metrics_http_close {
    METRICS_HTTP_DEADLINE,      /* no complete request and answer within the deadline */
    METRICS_HTTP_EVICTED,       /* all slots taken: the oldest idle or slow one made room */
    METRICS_HTTP_ADDRESS_LIMIT, /* its address already had its share of slots */
    METRICS_HTTP_CLOSE_MAX
};

void metrics_session_open(void);  /* active +1 */
void metrics_session_close(void); /* active -1 */
void metrics_connection(enum metrics_conn_outcome o);
void metrics_query(enum metrics_query_outcome o, uint64_t duration_us);
void metrics_rows_bytes(uint64_t rows, uint64_t bytes);
/* sqlstate: 5 chars; counted by class (first two chars) when it is one of PostgreSQL's
 * defined classes, as "other" otherwise: clients choose the codes they raise. */
void metrics_error_sqlstate(const char *sqlstate);
/* rule: "deny:drop", "max-rows", "query-timeout", ... (bounded set: labels are interned).
 * metrics_guardrail counts a guardrail that acted (mode="enforce"); metrics_guardrail_shadow
 * one that only recorded what it would have done (mode="shadow": a shadow: rule, --on-limit
 * warn). */
void metrics_guardrail(const char *rule);
void metrics_guardrail_shadow(const char *rule);
void metrics_cancel(enum metrics_cancel_outcome o);
void metrics_tls_handshake(int ok);
void metrics_upstream_probe(enum metrics_probe_result r);
void metrics_http_closed(enum metrics_http_close reason);
void metrics_upstream_connect(uint64_t duration_us, int ok);
/* An audit record written to --audit-log (true), or dropped because it could not be. */
void metrics_audit(bool written);
/* An audit record refused because the queue was full: its session waits. */
void metrics_audit_queue_full(void);

/* Families another module renders (the statement statistics, gathered from the workers),
 * appended by metrics_render: fn returns malloc'd text or NULL (then they are left out). NULL
 * removes it, after any render that is calling it has returned. */
void metrics_set_extra(char *(*fn)(void *arg), void *arg);

/* What the console's SHOW STATS lists: every process total by name ("statements_ok", ...). */
struct metrics_total {
    char name[40];
    uint64_t value;
};
#define METRICS_TOTALS_MAX 48
size_t metrics_totals(struct metrics_total *out, size_t max);

/* Renders the Prometheus text exposition format. Returns a malloc'd string (caller frees) and
 * its length in *len, or NULL on allocation failure. */
char *metrics_render(size_t *len);

/* The SQLSTATE class an error of this code is counted under ("42"), or NULL when it is
 * counted as "other". */
const char *metrics_sqlstate_class(const char *sqlstate);

/* Test helper: reads a counter by its full Prometheus series name, e.g.
 * "pgwire_proxy_queries_total{outcome=\"ok\"}". Returns -1 when unknown. */
int64_t metrics_value(const char *series);

#endif
