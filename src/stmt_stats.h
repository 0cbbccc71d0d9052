/* Statement statistics: one row per statement fingerprint (calls, errors, time, rows, bytes, a
 * redacted sample), bounded, the least recently used evicted. A table belongs to one thread
 * (each worker keeps its own, so the statement path takes no lock); the console and /metrics
 * merge copies of every worker's rows. */
#ifndef PGWP_STMT_STATS_H
#define PGWP_STMT_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STMT_STATS_SAMPLE_MAX 1024 /* bytes of a sample kept, cut on a character boundary */

/* Fingerprints no statement text has: texts counted under a fixed name. */
#define STMT_STATS_FP_LARGE  UINT64_C(0) /* too large to fingerprint on the statement path */
#define STMT_STATS_FP_SYNTAX UINT64_C(1) /* PostgreSQL's parser rejects it */

enum stmt_stats_class { STMT_STATS_OK, STMT_STATS_ERROR, STMT_STATS_DENIED, STMT_STATS_LIMITED };

struct stmt_stats_row {
    uint64_t fp;
    const char *kind; /* static text */
    uint64_t calls;   /* every statement, whatever its outcome */
    uint64_t errors, denied, limited;
    uint64_t shadow; /* ran, but a shadow: rule or --on-limit warn would have stopped it */
    uint64_t total_us, max_us;
    uint64_t rows, bytes;
    int64_t last_us; /* when it last ended (monotonic): the LRU order across workers */
    char *sample;    /* malloc'd, or NULL */
};

struct stmt_stats;

struct stmt_stats *stmt_stats_new(void);
void stmt_stats_free(struct stmt_stats *t);
size_t stmt_stats_count(const struct stmt_stats *t);

/* The row of fp, made when new (*created): the least recently used rows go while the table
 * holds cap or more. The row becomes the most recently used and stays valid until the next
 * call on t. NULL when cap is 0 or out of memory. */
struct stmt_stats_row *stmt_stats_touch(struct stmt_stats *t, size_t cap, uint64_t fp,
                                        const char *kind, int64_t now_us, bool *created);
/* Counts one statement in r. */
void stmt_stats_add(struct stmt_stats_row *r, enum stmt_stats_class c, uint64_t us, uint64_t rows,
                    uint64_t bytes);
/* Sets r's sample to a copy of text cut to STMT_STATS_SAMPLE_MAX bytes (whitespace runs shown
 * as one space). */
void stmt_stats_set_sample(struct stmt_stats_row *r, const char *text);

/* Adds another table's row: counts summed, the larger max, the later last_us, the first sample.
 * 0, or -1 out of memory. */
int stmt_stats_merge(struct stmt_stats *t, const struct stmt_stats_row *r);

/* Copies of every row, most recently used first (samples when with_samples); *n rows. NULL
 * with *n = 0 when empty or out of memory. Free with stmt_stats_rows_free. */
struct stmt_stats_row *stmt_stats_export(const struct stmt_stats *t, bool with_samples, size_t *n);
void stmt_stats_rows_free(struct stmt_stats_row *rows, size_t n);
/* Orders rows: by last_us, latest first (to keep the n most recently used), or by calls then
 * total time, most first (what SHOW STATEMENTS and /metrics list). */
void stmt_stats_sort_recent(struct stmt_stats_row *rows, size_t n);
void stmt_stats_sort_calls(struct stmt_stats_row *rows, size_t n);
/* The fingerprint as SHOW STATEMENTS and /metrics spell it: 16 hex digits, or the fixed name of
 * a reserved one ("<large statement>", "<syntax error>"). Returns buf. */
const char *stmt_stats_fp_text(uint64_t fp, char *buf, size_t len);

#endif
