/* Session internals shared by session.c (lifecycle, turns, timers, shutdown), session_end.c
 * (the one ending path), session_auth.c (the client's authentication), session_connect.c
 * (admission, upstream connect, greeting), session_policy.c (policy decisions, large texts on
 * the parser threads) and session_relay.c (the relay's environment). */
#ifndef PGWP_SESSION_INT_H
#define PGWP_SESSION_INT_H

#include "conn.h"
#include "loop.h"
#include "relay.h"
#include "runtime.h"
#include "session.h"
#include "startup.h"
#include "upstream.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#define SESSION_CLIENT_BUF   8192        /* client receive buffer, grown for big messages */
#define SESSION_UPSTREAM_BUF (64 * 1024) /* upstream receive buffer: messages are streamed */
/* The steady registrations of the two sides, edge-triggered. EPOLLOUT is added only while a
 * side waits for room (session_watch_room): a socket that stays writable reports an edge each
 * time its peer takes in what was sent, which woke the worker once more per statement. */
#define SESSION_WATCH_EVENTS (EPOLLIN | EPOLLRDHUP | EPOLLET)

enum session_phase {
    PH_STARTUP, /* negotiation and TLS with the client */
    PH_AUTH,    /* authenticating the client (SASL exchange, or a failure's delay) */
    PH_CONNECT, /* libpq connecting upstream */
    PH_RELAY,   /* relaying statements */
    PH_CONSOLE, /* the operator console (database pgwire_proxy): no upstream */
    PH_CLOSING, /* last bytes to the client; the upstream backend ends; then done */
    PH_DONE,    /* finished: the host frees it */
};

struct session {
    struct session_link link;
    const struct session_env *env;
    struct loop *loop;
    struct loop_task task;
    struct loop_timer timer;
    struct loop_waiter waiter; /* woken by a cancel delivered, a parse job done, audit room */
    struct loop_watch cli_watch, up_watch;
    uint64_t id;

    struct runtime *rt;
    const struct config *cfg;
    unsigned rt_gen;

    enum session_phase phase;
    enum session_end end;
    bool admitted;
    bool shutdown_seen;
    bool shutdown_fatal_due; /* shutdown deadline passed mid-statement: FATAL after its RFQ */
    int64_t deadline_ms;     /* startup / connect / closing deadline, 0 = none */
    int64_t idle_tx_since_ms;

    struct session_accept acc; /* the client's address, and its --max-startup-* count */
    struct conn cli;
    bool cli_open;   /* the client still gets what the relay produces */
    size_t cli_need; /* size of the incomplete message at the front of its buffer */
    char addr[64];
    struct sockaddr_storage client; /* the client's address: the socket's, or a PROXY header's */
    char user[64];
    char database[64];
    char app[64];
    struct startup *su; /* only until the upstream connection is made */

    /* identity: the method that proved the user ("trust": claimed), a certificate's subject */
    struct session_auth *auth; /* during PH_AUTH only */
    const char *auth_method;
    char cert_subject[256];
    const struct runtime_profile *prof; /* the user's profile in rt */
    atomic_int *user_count;             /* counted against the profile's max-connections */
    int metrics_user;                   /* label slot of the user (or "other") */
    char *upstream_dsn;                 /* the DSN this session connected with (reaper) */

    struct upstream upc; /* libpq during connect, then the cancel handle */
    bool up_open;        /* libpq connection (or its socket) still open */
    bool up_connected;   /* relaying on up */
    int up_watched_fd;
    struct conn up;
    int64_t up_connect_start_us;

    bool cancel_registered;
    struct cancel_ticket *cancel_ticket; /* our own cancel, until delivered */
    uint32_t secret;

    /* closing: the upstream gets Terminate, then its EOF is awaited (the backend is gone) */
    bool up_terminating;
    bool reaped; /* the backend was asked to terminate from a side connection */
    int64_t up_deadline_ms;
    bool counted_open; /* counted in pgwire_proxy_sessions_active */

    struct relay relay;
    struct guard_cache *gcache;
    struct session_parse *parse;   /* a text the parser pool decides (session_policy.c) */
    struct audit_wait *audit_wait; /* a record the full audit queue refused */

    uint64_t nstatements, rows_total, bytes_total; /* statements ended, what they sent */
    struct console *console;                       /* PH_CONSOLE only */
};

/* session.c */
void session_schedule(struct session *s);
/* The proxy's own cancel of whatever runs upstream (one at a time). */
void session_cancel_upstream(struct session *s);
/* True while that cancel is still on its way (the loop is woken once it lands). */
bool session_cancel_pending(struct session *s);
/* A FATAL ErrorResponse queued for the client, while it still gets output. */
void session_fatal(struct session *s, const char *code, const char *message, const char *detail);

/* session_end.c */
void session_end_with(struct session *s, enum session_end e);
/* --client-write-timeout: the client took none of its pending output for that long; the
 * session is ended (SE_CLIENT_STALLED) and true returned. */
bool session_client_stalled(struct session *s, int64_t now);
void session_closing_step(struct session *s, int64_t now);
void session_close_client(struct session *s);
void session_close_upstream(struct session *s);
void session_reap_backend(struct session *s);
int64_t session_grace_ms(const struct session *s);

/* session_auth.c */
enum session_end session_auth_begin(struct session *s);
enum session_end session_auth_step(struct session *s);
/* PH_AUTH's deadline: a failure's delayed answer, or the startup timeout. */
void session_auth_timer(struct session *s, int64_t now);
void session_auth_free(struct session *s);

/* session_connect.c */
enum session_end session_startup_done(struct session *s);
/* The client is authenticated: admission, then the upstream connection. */
enum session_end session_authenticated(struct session *s);
enum session_end session_connect_step(struct session *s);

/* session_policy.c: guard_check's three steps, with the parse off the loop for large texts.
 * decide: 0 decided, 1 pending (the relay gets fe_proto_decided from poll), -1 no memory. */
int session_policy_decide(struct session *s, const char *sql, size_t len, struct guard_decision *d);
void session_policy_poll(struct session *s);
void session_policy_release(struct session *s);
void session_policy_cache(struct session *s);

/* session_stats.c: a statement ended (statistics, the session's totals) */
void session_stats_statement(struct session *s, const struct stmt *st, enum stmt_outcome o,
                             uint64_t us);

/* session_auth.c: the OS user at the other end of a Unix socket (SO_PEERCRED), or -1 with
 * why. */
int session_peer_user(struct session *s, char *name, size_t len, char *why, size_t whylen);

/* console.c: the console phase */
enum session_end console_begin(struct session *s);
enum session_end console_step(struct session *s);
void console_timer(struct session *s, int64_t now);
int64_t console_deadline(const struct session *s);
void console_free(struct session *s);

/* session_relay.c */
int session_relay_begin(struct session *s);
enum session_end session_relay_turn(struct session *s);
/* True while an audit record the queue refused still waits (the next statement waits). */
bool session_audit_waiting(struct session *s);
/* At the end: a waiting record goes in beyond the queue's bounds. */
void session_audit_final(struct session *s);
/* The end reason a failed side recorded, or SE_NONE. */
enum session_end session_conn_end(const struct session *s);

#endif
