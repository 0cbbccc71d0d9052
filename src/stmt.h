/* One statement's lifecycle (a simple Query, or an extended-protocol portal run): its clock,
 * deadline, row and byte budget, what it sent, and the one outcome table that feeds metrics and the
 * audit. */
#ifndef PGWP_STMT_H
#define PGWP_STMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config;
struct guard_fp;
struct stmt;

/* The outcomes: metrics spell them as in metrics_query_outcome, the audit as audit_name. */
enum stmt_outcome {
    STMT_OK,
    STMT_ERROR,       /* the upstream answered with an ErrorResponse */
    STMT_DENIED,      /* policy */
    STMT_LIMITED,     /* row/byte/time limit */
    STMT_REJECTED,    /* unsupported protocol feature (extended, COPY, ...) */
    STMT_CLIENT_GONE, /* the client left before the result */
    STMT_DISCARDED,   /* skipped by the upstream after an earlier error of its pipeline */
    STMT_OUTCOME_MAX
};

/* What the upstream made of the statement, when known: the audit says whether it stuck. */
enum stmt_upstream {
    STMT_UP_UNKNOWN = 0, /* the session ended before the upstream said */
    STMT_UP_COMMITTED,   /* completed, and ReadyForQuery said idle: autocommit committed it */
    STMT_UP_IN_BLOCK,    /* completed inside a transaction block: its fate is the block's */
    STMT_UP_ERROR,       /* the upstream failed it (its SQLSTATE in upstream_sqlstate) */
    STMT_UP_ROLLED_BACK, /* completed, but its transaction did not commit */
    STMT_UP_NOT_SENT,    /* refused before it reached the upstream */
};

const char *stmt_outcome_audit_name(enum stmt_outcome o);
const char *stmt_upstream_name(enum stmt_upstream u);
/* Records an upstream error of the statement (the first one counts). */
void stmt_upstream_error(struct stmt *st, const char code[6]);

enum stmt_limit { STMT_LIMIT_NONE = 0, STMT_LIMIT_ROWS, STMT_LIMIT_BYTES };

/* Budget of one statement part (each statement of a multi-statement Query has its own). */
struct stmt_budget {
    uint64_t max_rows, max_bytes; /* 0 = off */
    uint64_t rows, bytes;
};

struct stmt {
    bool active;
    int64_t start_us;
    int64_t deadline_ms; /* query timeout; 0 = none */
    struct stmt_budget budget;
    uint64_t rows, bytes; /* the whole Query: what reached the client */
    char sqlstate[6];     /* the error the client saw, "" = none */
    const char *rule;     /* guardrail that acted, or NULL */
    const char *sql;      /* the text (in the client's buffer, or a copy the relay keeps) */
    size_t sql_len;
    bool upstream_error;       /* some part of it ended with an upstream error */
    char upstream_sqlstate[6]; /* the upstream's first error, "" = none */
    enum stmt_upstream upstream;
    bool copy; /* it ran the COPY sub-protocol (the audit's protocol "copy") */
    /* what enforcing would have stopped, while it ran unchanged: a shadow: rule's verdict
     * (guard_decision.shadow_rule, "" = none), and the budget --on-limit warn let it pass
     * ("max-rows", "max-bytes"; NULL = none) */
    char shadow_rule[96];
    const char *shadow_limit;
    /* where the statistics keep the text's fingerprint once known (a prepared statement's
     * text lives longer than one run of it), NULL = nowhere */
    struct guard_fp *fp_memo;
};

/* How the audit shows a statement. A statement that succeeded with no guardrail acting, but
 * that a shadow rule or --on-limit warn would have stopped, is "would_deny" or "would_limit"
 * with that rule (metrics count it as ok: that is what the client saw). Any other outcome
 * keeps its name and rule, and shadow_rule names what would also have acted. */
struct stmt_audit {
    const char *outcome;
    const char *rule;        /* NULL = none */
    const char *shadow_rule; /* NULL = none */
};
void stmt_audit_view(const struct stmt *st, enum stmt_outcome o, struct stmt_audit *out);

void stmt_begin(struct stmt *st, const struct config *cfg, const char *sql, size_t len);
/* Starts the next statement part's budget. */
void stmt_part(struct stmt *st, const struct config *cfg);

/* Accounts one message of n wire bytes bound for the client; a DataRow (row) also counts
 * against the row budget. Returns the limit it would exceed (then nothing is counted). */
enum stmt_limit stmt_charge(struct stmt *st, uint64_t n, bool row);
/* --on-limit warn, after stmt_charge returned l: the statement part goes on without a budget
 * and the message is counted. Returns true the first time a statement passes a budget (the
 * caller then logs and counts it once, as the enforced limit would have acted once). */
bool stmt_pass_limit(struct stmt *st, enum stmt_limit l, uint64_t n, bool row);

/* Ends the statement: records metrics; returns its duration in microseconds. */
uint64_t stmt_end(struct stmt *st, enum stmt_outcome o);

#endif
