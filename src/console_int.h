/* Between console.c (the session phase: access, framing, waiting) and console_cmd.c (what the
 * commands do). */
#ifndef PGWP_CONSOLE_INT_H
#define PGWP_CONSOLE_INT_H

#include "console.h"
#include "console_rows.h"

#include <stdbool.h>
#include <stdint.h>

struct admin_query;
struct session;

struct console {
    bool discard;           /* an extended-protocol message was refused: ignore until Sync */
    struct admin_query *q;  /* a question the workers answer, or NULL */
    struct console_cmd cmd; /* the command that asked it */
    int64_t deadline_ms;    /* when an unanswered question fails */
};

/* Runs one Query's command: its answer goes to o (with ReadyForQuery), or the session's
 * question goes to the workers (s->console->q set; the answer comes from console_finish). */
void console_run(struct session *s, const char *sql, size_t len, struct console_out *o);
/* The workers' answers are in (or did not come in time: timed_out): the rest of the answer. */
void console_finish(struct session *s, bool timed_out, struct console_out *o);

#endif
