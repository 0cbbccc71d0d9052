/* The console's answers as protocol bytes: result sets of text columns (RowDescription,
 * DataRow, CommandComplete), errors and notices, in a buffer that grows as needed, and the
 * rows of each SHOW command built from what the workers reported. Pure: no sockets. */
#ifndef PGWP_CONSOLE_ROWS_H
#define PGWP_CONSOLE_ROWS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config;
struct metrics_total;
struct runtime;
struct session_snapshot;
struct stmt_stats_row;

struct console_out {
    uint8_t *buf;
    size_t len, cap;
    bool failed; /* out of memory: the answer is incomplete */
};

void console_out_free(struct console_out *o);
/* A result set's header: ncols text columns. */
void console_out_columns(struct console_out *o, const char *const *names, size_t ncols);
/* One row; a NULL value is SQL NULL. */
void console_out_row(struct console_out *o, const char *const *values, size_t ncols);
void console_out_complete(struct console_out *o, const char *tag);
void console_out_empty_query(struct console_out *o);
void console_out_error(struct console_out *o, const char *code, const char *message,
                       const char *detail, const char *hint);
void console_out_notice(struct console_out *o, const char *message);
void console_out_rfq(struct console_out *o);

/* The result sets, each ending with its CommandComplete ("SHOW n"). */
void console_rows_sessions(struct console_out *o, const struct session_snapshot *s, size_t n);
void console_rows_statements(struct console_out *o, const struct stmt_stats_row *r, size_t n);
void console_rows_stats(struct console_out *o, const struct metrics_total *t, size_t n);
void console_rows_config(struct console_out *o, const struct config *c);
void console_rows_policy(struct console_out *o, const struct runtime *rt);
void console_rows_version(struct console_out *o);

#endif
