/* Audit trail: one JSON line per statement ("who ran what, and what happened"). */
#ifndef PGWP_AUDIT_H
#define PGWP_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct audit_log;

struct audit_record {
    uint64_t session_id;
    const char *client_addr;
    const char *user;
    const char *database;
    const char *application;
    const char *sql;
    size_t sql_len;
    uint64_t duration_us;
    uint64_t rows;
    uint64_t bytes;
    const char *outcome;  /* "ok", "error", "denied", "limit", "rejected" */
    const char *sqlstate; /* NULL when ok */
    const char *rule;     /* guardrail rule, or NULL */
};

/* path "-" = stderr. redact: literals replaced by $n (guard_redact, texts up to max_parse
 * bytes). NULL on error. */
struct audit_log *audit_open(const char *path, bool redact, size_t max_parse, char *err,
                             size_t errlen);
void audit_close(struct audit_log *a);
void audit_write(struct audit_log *a, const struct audit_record *r);

#endif
