/* Audit trail: one JSON line per statement ("who ran what, and what happened").
 *
 * The event loop only copies a record into a bounded queue (audit_submit); a writer thread
 * per audit log formats it, redacts it (--audit-redact parses the statement) and writes it.
 * A full queue refuses the record instead of dropping it: the caller keeps it and is woken
 * through its eventfd when there is room again. Records are dropped only when the file cannot
 * be written at all (after retrying for a bounded time), and counted. */
#ifndef PGWP_AUDIT_H
#define PGWP_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct audit_log;

/* Queue bounds (README, "Audit trail"): whichever is reached first refuses a record. */
#define AUDIT_QUEUE_RECORDS 4096
#define AUDIT_QUEUE_BYTES   ((size_t)16 << 20)
/* Statement text kept in a record; longer text is cut (at a character boundary) and the
 * record says "statement_truncated": a record always fits an empty queue. */
#define AUDIT_STATEMENT_MAX ((size_t)1 << 20)
/* Parameter text kept per record, all values together; the rest are counted, not listed. */
#define AUDIT_PARAMS_MAX ((size_t)256 << 10)
/* A write error is retried with backoff this long before records are dropped. */
#define AUDIT_RETRY_MS 5000
/* At exit, closed logs get this long to write what they hold. */
#define AUDIT_CLOSE_WAIT_MS 5000

enum audit_param_kind { AUDIT_PARAM_NULL, AUDIT_PARAM_TEXT, AUDIT_PARAM_BINARY };

/* One bound parameter as the relay saw it. text: the first len bytes of a text value (already
 * cut by the caller); size: the value's full length in bytes (> len when cut). */
struct audit_param {
    enum audit_param_kind kind;
    const char *text;
    size_t len;
    uint64_t size;
};

/* Every pointer is only read during audit_submit(): the queue keeps its own copy. NULL strings
 * are written as null (sqlstate, rule) or left out (the optional keys below). */
struct audit_record {
    uint64_t session_id;
    const char *client_addr;
    const char *user;
    const char *auth;         /* how user was proven: "trust" (claimed), "scram-sha-256", ... */
    const char *cert_subject; /* the client certificate's subject (RFC 2253), or NULL */
    const char *database;
    const char *application;
    const char *sql;
    size_t sql_len;
    uint64_t duration_us;
    uint64_t rows;
    uint64_t bytes;
    /* "ok", "error", "denied", "limit", "rejected", "client_gone", "discarded", and for a
     * statement that ran as it would have directly: "would_deny", "would_limit" */
    const char *outcome;
    const char *sqlstate;    /* what the client was told; NULL when ok */
    const char *rule;        /* guardrail rule, or NULL */
    const char *shadow_rule; /* optional: a shadow rule or --on-limit warn that would also have
                                acted, when rule does not name it */
    /* optional: what the upstream did, when known */
    const char *upstream_sqlstate;
    const char *upstream_status; /* stmt_upstream_name(): "committed", "rolled_back", ... */
    const char *protocol;        /* "simple" (when NULL), "extended", "copy" */
    const char *portal;          /* extended protocol: names as the client sent them */
    const char *statement_name;
    const struct audit_param *params; /* not written under --audit-redact */
    size_t nparams;
    uint64_t executes; /* Execute messages of a portal; written for "extended" */
};

/* Bounds of one log; audit_open uses the AUDIT_* defaults. Zero fields take the default. */
struct audit_limits {
    size_t max_records;
    size_t max_bytes;
    unsigned retry_ms;
};

/* path "-" = stderr. redact: literals replaced by $n (guard_redact, texts up to max_parse bytes,
 * 0 = the default --max-parse-size). Starts the writer thread. NULL on error (err says why). */
struct audit_log *audit_open(const char *path, bool redact, size_t max_parse, char *err,
                             size_t errlen);
struct audit_log *audit_open_limits(const char *path, bool redact, size_t max_parse,
                                    const struct audit_limits *lim, char *err, size_t errlen);

/* Copies r into the queue and returns 0 at once. -EAGAIN: the queue is full and nothing was
 * queued; wake_fd (an eventfd, or -1) gets written 1 once there is room, and the caller
 * submits again. -ENOMEM: out of memory (nothing queued, nothing remembered). */
int audit_submit(struct audit_log *a, const struct audit_record *r, int wake_fd);

/* For a caller that cannot wait (a session that is ending): accepted beyond the bounds, up to
 * twice them; past that the record is dropped and counted (the writer has been stalled long
 * enough to hold 2 x AUDIT_QUEUE_BYTES). Returns 0, or -ENOBUFS when dropped. */
int audit_submit_final(struct audit_log *a, const struct audit_record *r);

/* Stops taking records and hands the log to its writer, which writes everything queued, then
 * closes the file and frees the log. Returns at once: the last reference to an old
 * configuration generation may be dropped on an event loop. */
void audit_close(struct audit_log *a);

/* Waits up to timeout_ms for every closed log to be written out (at process exit). Returns
 * the number of records still queued when it gave up (0 = all written or dropped). */
size_t audit_wait_closed(unsigned timeout_ms);

#endif
