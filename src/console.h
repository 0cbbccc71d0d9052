/* The operator console: the virtual database pgwire_proxy, for the users in --admin-users.
 * A console session never connects upstream: it answers SHOW SESSIONS, SHOW STATEMENTS, SHOW
 * STATS, SHOW CONFIG, SHOW POLICY, SHOW VERSION, CANCEL, KILL, RELOAD and SHUTDOWN itself, as
 * ordinary result sets of text columns (docs/console.md). */
#ifndef PGWP_CONSOLE_H
#define PGWP_CONSOLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONSOLE_DATABASE     "pgwire_proxy"
#define CONSOLE_MAX_SESSIONS 16 /* console sessions at once, not counted against the rest */
#define CONSOLE_MAX_MESSAGE  (64 * 1024) /* longest message a console client may send */
#define CONSOLE_ANSWER_MS    5000 /* a question the workers have not answered by then fails */

/* --- commands (console_cmd.c) --- */
enum console_cmd_kind {
    CONSOLE_EMPTY, /* only blanks and ';': EmptyQueryResponse, as PostgreSQL answers */
    CONSOLE_SHOW_SESSIONS,
    CONSOLE_SHOW_STATEMENTS,
    CONSOLE_SHOW_STATS,
    CONSOLE_SHOW_CONFIG,
    CONSOLE_SHOW_POLICY,
    CONSOLE_SHOW_VERSION,
    CONSOLE_CANCEL,
    CONSOLE_KILL,
    CONSOLE_RELOAD,
    CONSOLE_SHUTDOWN,
    CONSOLE_BEGIN, /* BEGIN / COMMIT / ROLLBACK: accepted, nothing to do (drivers send them) */
    CONSOLE_COMMIT,
    CONSOLE_ROLLBACK,
    CONSOLE_UNKNOWN, /* ERROR 42601 with the command list in HINT */
};

struct console_cmd {
    enum console_cmd_kind kind;
    uint64_t id;       /* CANCEL / KILL */
    char message[160]; /* CONSOLE_UNKNOWN: what is wrong */
};

/* The command list the HINT of an unknown command gives. */
extern const char console_cmd_hint[];
/* Parses one Query text (len bytes, no NUL needed): case-insensitive, surrounding blanks and a
 * trailing ';' ignored. */
void console_cmd_parse(const char *text, size_t len, struct console_cmd *out);
/* The CommandComplete tag of a command. */
const char *console_cmd_tag(enum console_cmd_kind k);

#endif
