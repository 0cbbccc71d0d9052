/* Statement fingerprints for the statement statistics: libpg_query's fingerprint (literals do
 * not count) and the statement's kind, with a cache keyed by the text's shape (the policy
 * cache's key: digits and string contents abstracted away), so a repeated statement is not
 * parsed again. A cache belongs to one thread. */
#ifndef PGWP_GUARD_FINGERPRINT_H
#define PGWP_GUARD_FINGERPRINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct guard_fp_cache;

struct guard_fp {
    uint64_t fp;      /* pg_query_fingerprint; never 0 or 1 (reserved for the cases below) */
    const char *kind; /* a statement kind ("select", ...), "multi", "empty" or "other" */
    bool large;       /* longer than the bound: not parsed */
    bool syntax;      /* PostgreSQL's parser rejects the text */
    bool parsed;      /* this call parsed (a cache miss) */
};

struct guard_fp_cache *guard_fp_cache_new(void);
void guard_fp_cache_free(struct guard_fp_cache *c);
/* Cache hits and misses so far (tests, SHOW STATS). */
void guard_fp_cache_counts(const struct guard_fp_cache *c, uint64_t *hits, uint64_t *misses);

/* The fingerprint of sql: len bytes with no NUL among them, as the relay frames statements
 * (see guard_precheck). Texts longer than max are not parsed (out->large). c may be NULL (no
 * cache). keyed: the policy keyed this text on this thread when it arrived, so its key is
 * remembered (see guard_cache_key_hashed). Parses on a miss: needs
 * guard_parse_stack_bytes(max) of stack. 0, or -ENOMEM. */
int guard_fingerprint(struct guard_fp_cache *c, const char *sql, size_t len, size_t max, bool keyed,
                      struct guard_fp *out);

#endif
