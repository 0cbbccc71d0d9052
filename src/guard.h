/* Statement policy (libpg_query), row/byte budgets and deadlines. Pure logic: no I/O. */
#ifndef PGWP_GUARD_H
#define PGWP_GUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct guard_policy;
struct guard_cache;

/* --max-parse-size: the largest text the guard parses (bytes). The parser threads' stacks and
 * the memory of a parse are sized from it (guard_parse_stack_bytes, docs/policy.md). */
#define GUARD_DEFAULT_MAX_PARSE ((size_t)1000 * 1000)
#define GUARD_MIN_MAX_PARSE     ((size_t)1000)
#define GUARD_MAX_MAX_PARSE     ((size_t)16 * 1000 * 1000)

enum guard_verdict {
    GUARD_ALLOW = 0,
    GUARD_DENY,        /* 42501: a deny rule matched, an allow list did not, or an always-refused
                          class (SQL given as text, a computed set_config name) */
    GUARD_READ_ONLY,   /* 25006: a write or a side effect in --read-only mode */
    GUARD_COPY,        /* 0A000: COPY FROM STDIN / TO STDOUT while --copy reject */
    GUARD_SYNTAX,      /* 42601: the parser rejected the text; message/cursorpos as PostgreSQL */
    GUARD_TOO_COMPLEX, /* 54001: larger than --max-parse-size while a rule needs the parse */
    GUARD_BUSY,        /* 53000: the parser threads' queue is full; the client may retry */
};

struct guard_decision {
    enum guard_verdict verdict;
    char rule[96];     /* e.g. "deny:drop", "deny:function:pg_sleep", "allow", "read-only" */
    char message[256]; /* primary message for the ErrorResponse */
    int cursorpos;     /* GUARD_SYNTAX: 1-based position, 0 = none */
    /* GUARD_ALLOW: the rule the shadow: entries would have refused the text by, spelled as an
     * enforced rule's id ("deny:truncate", "allow", "sql-text"); "" = none. The statement runs;
     * the relay only records it. */
    char shadow_rule[96];
};

/* Compiles rules (grammar in docs/policy.md). deny/allow entries: a statement kind ("drop",
 * "select", ...), a family ("alter", "create", "drop"), "function:NAME" or "group:NAME", each of
 * them optionally as "shadow:ENTRY": shadow entries form a policy of their own (with the same
 * permit entries, without read-only mode) that is decided alongside and never refuses. permit
 * entries name exceptions to the always-refused classes: "function:NAME", "group:NAME" or "do".
 * max_parse 0 means GUARD_DEFAULT_MAX_PARSE. Errors name the entry (err); NULL then. */
struct guard_rules {
    const char *const *deny;
    size_t ndeny;
    const char *const *allow;
    size_t nallow;
    const char *const *permit;
    size_t npermit;
    bool read_only;
    bool relay_copy; /* --copy allow: COPY FROM STDIN / TO STDOUT is decided like any statement
                        (kind copy; in read-only mode only COPY TO STDOUT) instead of refused */
    size_t max_parse;
};
struct guard_policy *guard_policy_compile(const struct guard_rules *rules, char *err,
                                          size_t errlen);
/* The same without permit entries, at the default ceiling. */
struct guard_policy *guard_policy_new(const char *const *deny, size_t ndeny,
                                      const char *const *allow, size_t nallow, bool read_only,
                                      char *err, size_t errlen);
/* Reference counting (atomic): a queued parse job keeps its policy past a reload. A new
 * policy holds one reference; guard_policy_free() drops it (same as unref). NULL is ignored. */
struct guard_policy *guard_policy_ref(struct guard_policy *p);
void guard_policy_unref(struct guard_policy *p);
void guard_policy_free(struct guard_policy *p);

/* True when a policy needs the full parse of every statement (any rule, shadow or not, or
 * read-only). */
bool guard_policy_parses(const struct guard_policy *p);
/* True when a policy can refuse a statement by its rules (an enforced rule or read-only mode);
 * false for no policy and for one of shadow rules only. */
bool guard_policy_enforces(const struct guard_policy *p);
/* A policy that enforces nothing refuses nothing: a refusal of d (made by the guard, or by its
 * caller: a full parser queue, no memory) becomes GUARD_ALLOW with its rule as shadow_rule. A
 * syntax error is simply allowed (PostgreSQL reports it), a COPY refusal stays (--copy reject
 * is not a rule). No-op for any other policy. */
void guard_shadow_only(const struct guard_policy *p, struct guard_decision *d);
/* The policy's parse ceiling (GUARD_DEFAULT_MAX_PARSE for NULL). */
size_t guard_policy_max_parse(const struct guard_policy *p);

/* Per-session decision cache (may be NULL to disable). */
struct guard_cache *guard_cache_new(void);
void guard_cache_free(struct guard_cache *c);

/* Where guard_precheck() leaves what guard_cache_store() needs later. */
#define GUARD_CACHE_KEY_MAX 4096
struct guard_cache_key {
    uint64_t gen;  /* the policy generation the key was made under */
    size_t len;    /* 0 = do not cache */
    uint64_t hash; /* guard_key_hash of text */
    char text[GUARD_CACHE_KEY_MAX];
};

/* A decision in three steps, so the parse can run off the session's thread.
 *
 * guard_precheck: on the session's thread, cheap. Returns 0 when *out is final (no rule needs
 * a parse, a cache hit, or over max_parse: GUARD_TOO_COMPLEX), 1 when the text must be parsed
 * (key then holds the cache key for guard_cache_store). max_parse 0 = the policy's ceiling.
 * sql is len bytes with no NUL among them, as the relay frames a Query or a Parse (PostgreSQL
 * refuses a message with one): precheck runs on every statement, whose text the relay has
 * searched for a NUL already. guard_decide still reads only up to a NUL, so a text that
 * broke this rule would be judged as PostgreSQL reads it, only keyed apart.
 *
 * guard_decide: parses and decides. Thread-safe and pure (no shared mutable state); needs
 * guard_parse_stack_bytes(guard_policy_max_parse(p)) of stack. Returns 0, or -ENOMEM.
 * *cacheable tells whether the answer holds for every text of the same cache key.
 *
 * guard_cache_store: back on the session's thread, when *cacheable.
 *
 * guard_check: the three in a row (synchronous). sql is a Query string (may hold several
 * statements), read up to its first NUL or len bytes. Returns 0, or -ENOMEM. */
int guard_precheck(const struct guard_policy *p, struct guard_cache *c, const char *sql, size_t len,
                   size_t max_parse, struct guard_decision *out, struct guard_cache_key *key);
int guard_decide(const struct guard_policy *p, const char *sql, size_t len,
                 struct guard_decision *out, bool *cacheable);
void guard_cache_store(struct guard_cache *c, const struct guard_policy *p,
                       const struct guard_cache_key *key, const struct guard_decision *d);
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

/* Returns why a reported upstream setting breaks the guard's reading of SQL text (the session
 * must end), or NULL when it is safe. standard_conforming_strings is always safe: texts that
 * read differently under its two values are decided under both. */
const char *guard_unsafe_setting(const char *name, const char *value);

/* Stack a thread needs to parse, normalize or fingerprint any text of up to max_parse bytes
 * (0 = GUARD_DEFAULT_MAX_PARSE): libpg_query recurses once per nesting level of the tree and
 * checks no stack depth of its own. A measured bound with margin (docs/policy.md). */
size_t guard_parse_stack_bytes(size_t max_parse);

/* After a parse of len bytes on this thread: gives the deep part of the thread's stack and
 * free heap back to the kernel when the text was big (a no-op for small ones). */
void guard_parse_release(size_t len);

/* The statement text an audit record shows under --audit-redact: literals replaced by $n,
 * comments dropped, and SQL held in string arguments of functions that run SQL given as text
 * shown redacted after the statement: `SELECT query_to_xml($1, ...) /+ $1: SELECT f($1) +/`.
 * Texts over max_parse bytes (0 = GUARD_DEFAULT_MAX_PARSE) or that do not lex are replaced by
 * a marker. Parses: call it on a thread with guard_parse_stack_bytes(max_parse) of stack.
 * Returns a malloc'd string, or NULL when out of memory. */
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
