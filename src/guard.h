/* Statement policy (libpg_query), row/byte budgets and deadlines. Pure logic: no I/O. */
#ifndef PGWP_GUARD_H
#define PGWP_GUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct guard_policy;
struct guard_cache;

enum guard_verdict {
    GUARD_ALLOW = 0,
    GUARD_DENY,        /* 42501: a deny rule matched, or an allow list did not */
    GUARD_READ_ONLY,   /* 25006: a write in --read-only mode */
    GUARD_COPY,        /* 0A000: COPY FROM STDIN / TO STDOUT (the proxy does not relay COPY) */
    GUARD_SYNTAX,      /* 42601: the parser rejected the text; message/cursorpos as PostgreSQL */
    GUARD_TOO_COMPLEX, /* 54001: nested too deeply to parse safely */
};

struct guard_decision {
    enum guard_verdict verdict;
    char rule[96];     /* e.g. "deny:drop", "deny:function:pg_sleep", "allow", "read-only" */
    char message[256]; /* primary message for the ErrorResponse */
    int cursorpos;     /* GUARD_SYNTAX: 1-based position, 0 = none */
};

/* Compiles rules. deny/allow entries: a statement kind ("drop", "create_role", "select",
 * ...) or "function:NAME". Unknown kinds are an error (err says which and lists kinds). */
struct guard_policy *guard_policy_new(const char *const *deny, size_t ndeny,
                                      const char *const *allow, size_t nallow, bool read_only,
                                      char *err, size_t errlen);
void guard_policy_free(struct guard_policy *p);

/* --copy allow, before the policy is shared: COPY FROM STDIN / TO STDOUT is decided like any
 * statement (rules, read-only) instead of being refused as a protocol the proxy does not
 * relay, and the statements after it in a Query are still decided. */
void guard_policy_allow_copy(struct guard_policy *p);

/* True when a policy needs the full parse of every statement (any rule or read-only). */
bool guard_policy_parses(const struct guard_policy *p);

/* Per-session decision cache (may be NULL to disable). */
struct guard_cache *guard_cache_new(void);
void guard_cache_free(struct guard_cache *c);

/* Decides a simple-protocol Query string (may hold several statements). sql is NUL-terminated,
 * len = strlen(sql). Returns 0, or -ENOMEM. */
int guard_check(const struct guard_policy *p, struct guard_cache *cache, const char *sql,
                size_t len, struct guard_decision *out);

/* The ErrorResponse a refused statement gets: PostgreSQL's own code and text for syntax errors,
 * otherwise the rule in DETAIL and what to do in HINT. Pointers refer to d or static text. */
struct guard_error {
    const char *code;
    const char *message;
    char detail[128]; /* "" = none */
    const char *hint; /* NULL = none */
    uint32_t position;
};
void guard_error_for(const struct guard_decision *d, struct guard_error *e);

/* Lists every statement kind name, for --help/docs ("NULL"-terminated). */
const char *const *guard_kind_names(void);

/* The parser reads statements as a UTF-8-safe client with standard_conforming_strings=on
 * would send them. Returns why a reported upstream setting breaks that (the session must end),
 * or NULL when it is safe. */
const char *guard_unsafe_setting(const char *name, const char *value);

/* Stack a thread needs to parse, normalize or fingerprint any text of up to max_parse bytes:
 * libpg_query recurses once per nesting level and checks no stack depth of its own. */
size_t guard_parse_stack_bytes(size_t max_parse);

/* The statement text an audit record shows under --audit-redact: literals replaced by $n.
 * Texts over max_parse bytes (0 = no bound) or that do not parse are replaced by a marker.
 * Parses: call it on a thread with guard_parse_stack_bytes(max_parse) of stack. Returns a
 * malloc'd string, or NULL when out of memory. */
char *guard_redact(const char *sql, size_t len, size_t max_parse);

/* --- budgets: per statement, counted on DataRow messages --- */
enum guard_limit { GUARD_LIMIT_NONE = 0, GUARD_LIMIT_ROWS, GUARD_LIMIT_BYTES };

struct guard_budget {
    uint64_t max_rows, max_bytes; /* 0 = off */
    uint64_t rows, bytes;
};

static inline void guard_budget_start(struct guard_budget *b, uint64_t max_rows, uint64_t max_bytes)
{
    b->max_rows = max_rows;
    b->max_bytes = max_bytes;
    b->rows = 0;
    b->bytes = 0;
}

/* Accounts one DataRow of msg_bytes wire bytes; returns which limit it would exceed (the row is
 * then not counted). */
static inline enum guard_limit guard_budget_row(struct guard_budget *b, uint64_t msg_bytes)
{
    if (b->max_rows && b->rows + 1 > b->max_rows)
        return GUARD_LIMIT_ROWS;
    if (b->max_bytes && b->bytes + msg_bytes > b->max_bytes)
        return GUARD_LIMIT_BYTES;
    b->rows++;
    b->bytes += msg_bytes;
    return GUARD_LIMIT_NONE;
}

#endif
