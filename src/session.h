/* One client session: startup, admission, the upstream connection, the relay, and the one
 * cleanup path that reads the end reason. A session lives on one event loop and is touched
 * only by that loop's thread; what it shares with the rest of the process comes through a
 * narrow environment. */
#ifndef PGWP_SESSION_H
#define PGWP_SESSION_H

#include "admission.h"
#include "end.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct cancel_table;
struct conn_mem;
struct loop;
struct reaper;
struct runtimes;
struct session;

enum shutdown_mode { SHUTDOWN_NONE = 0, SHUTDOWN_DRAIN = 1, SHUTDOWN_NOW = 2 };

struct shutdown_state {
    atomic_int mode;          /* enum shutdown_mode */
    atomic_llong deadline_ms; /* when draining ends */
};

/* Sessions counted against --max-connections (admitted, until their backend is gone), and
 * every connection handed to a worker, from the hand-over until its session is freed (live):
 * the process ends only once none is left, so no connection still waiting for its worker can
 * meet a cancel table or a runtime that is already gone. */
struct session_counts {
    atomic_int admitted;
    atomic_int live;
};

/* What the accepting thread learned of a connection. */
struct session_accept {
    struct sockaddr_storage peer;
    bool proxy_pending;       /* a PROXY header must come first (--proxy-protocol-from) */
    bool counted;             /* counted against --max-startup-* until admitted or ended */
    struct admission_key key; /* the client address it is counted by */
};

struct user_limits;
struct admin_hub;
struct guard_fp_cache;
struct stmt_stats;

/* Texts up to this size are parsed on the worker's thread (tens of microseconds); longer ones
 * by the parser pool. Workers need guard_parse_stack_bytes(SESSION_INLINE_PARSE) of stack. */
#define SESSION_INLINE_PARSE (16 * 1024)

struct session_env {
    struct runtimes *runtimes;
    struct user_limits *user_limits; /* per-user session counts (max-connections per user) */
    struct cancel_table *cancels;
    struct conn_mem *client_mem;
    struct reaper *reaper;
    struct guard_pool *parsers; /* policy parses of large texts; NULL = on the loop's thread */
    struct session_counts *counts;
    struct admission *admission;
    struct shutdown_state *shutdown;
    atomic_ullong *next_id;
    struct admin_hub *admin;         /* the console's questions to the workers; NULL = none */
    struct stmt_stats *stats;        /* this worker's statement statistics */
    struct guard_fp_cache *fp_cache; /* this worker's fingerprints of statement shapes */
    /* called on the loop's thread once the session has finished; the host frees it later,
     * outside the loop's callbacks */
    void (*finished)(void *host, struct session *s);
    void *host;
};

/* The host's list of its sessions: the one session field the host touches. */
struct session_link {
    struct session_link *prev, *next;
};
struct session_link *session_link(struct session *s);
struct session *session_from_link(struct session_link *l);

/* Creates a session for an accepted socket and schedules its first turn; it takes over the fd
 * and the connection's count in env->counts->live (made at the hand-over). NULL on allocation
 * or registration failure: the fd is closed and the count given back. */
struct session *session_new(const struct session_env *env, struct loop *loop, int fd,
                            const struct session_accept *acc);
/* Shutdown started (or became immediate): the session decides what to do at its next turn. */
void session_notify_shutdown(struct session *s);
/* Frees a finished session (after session_env.finished, outside loop callbacks). */
void session_free(struct session *s);

/* --- what the console sees and does (session_view.c), on the session's own thread --- */
struct session_snapshot {
    uint64_t id;
    char user[64], client[64], application[64], database[64];
    const char *auth;      /* the method that proved the user */
    const char *state;     /* "active", "idle", "idle in transaction", "console", ... */
    uint32_t upstream_pid; /* 0 = none */
    char tx;               /* the upstream's I/T/E, 0 = not relaying */
    char *statement;       /* malloc'd, redacted as --audit-redact does; NULL = none running */
    int64_t running_ms;    /* -1 = none running */
    uint64_t rows, bytes, statements;
};
uint64_t session_id(const struct session *s);
/* True once the session has ended and only closes (SHOW SESSIONS: state "closing"). */
bool session_ending(const struct session *s);
/* Fills out; statement NULL when it could not be copied (out of memory: *oom). */
void session_snapshot(struct session *s, int64_t now_us, struct session_snapshot *out, bool *oom);
/* The console's CANCEL: the running statement is canceled upstream; false when none runs. */
bool session_admin_cancel(struct session *s, const char *by);
/* The console's KILL: FATAL 57P01 to the client, the upstream closed. */
void session_admin_kill(struct session *s, const char *by);

#endif
