/* Session internals shared by session.c (lifecycle, startup, connect), relay.c (the relay) and
 * worker.c (the event loop that drives them). */
#ifndef PGWP_SESSION_INT_H
#define PGWP_SESSION_INT_H

#include "admission.h"
#include "guard.h"
#include "metrics.h"
#include "netio.h"
#include "session.h"
#include "upstream.h"
#include "wire.h"

#include <stdbool.h>
#include <stdint.h>

struct server;
struct runtime;
struct config;
struct worker;

enum session_phase {
    PH_STARTUP, /* reading SSLRequest / GSSENCRequest / CancelRequest / StartupMessage */
    PH_TLS,     /* TLS handshake with the client */
    PH_CONNECT, /* libpq connecting upstream */
    PH_RELAY,   /* relaying statements */
    PH_CLOSING, /* flushing a last message (e.g. FATAL) to the client, then done */
    PH_DONE,    /* freed by the worker after the current batch of events */
};

enum relay_state {
    ST_IDLE,    /* waiting for a client message */
    ST_QUERY,   /* a Query (or our own statement) runs upstream; waiting for ReadyForQuery */
    ST_DISCARD, /* extended-protocol error sent: discarding client messages until Sync */
};

/* A statement the proxy is ending on its own terms (limit, timeout, COPY): everything upstream
 * sends until ReadyForQuery is dropped, then our error goes out instead. */
struct abort_state {
    bool active;
    bool saw_error; /* upstream ended the statement with an error (e.g. our cancel) */
    int64_t drain_deadline_ms;
    char code[6];
    char message[256];
    char detail[256];
    char hint[256];
    bool append_fate; /* add "; the upstream statement was canceled / had completed" */
    const char *rule;
    enum metrics_query_outcome outcome;
};

struct session {
    struct session *prev, *next; /* worker's list */
    struct worker *w;
    uint64_t id;
    struct server *srv;
    struct runtime *rt;
    const struct config *cfg;
    unsigned rt_gen;
    enum session_phase phase;
    enum session_end end;
    bool admitted;
    bool queued;  /* on the worker's ready list */
    bool requeue; /* stopped with work left: drive again after the other ready sessions */
    struct session *ready_next;

    /* readiness, set by epoll events, cleared when an operation would block. A short read
     * means the socket is drained - unless the peer also closed (the *_hup flags): the EOF
     * then comes with no further edge and must be read now. */
    bool cli_in, cli_out, cli_hup;
    bool up_in, up_out, up_hup;

    struct netio cli;
    struct upstream up;
    bool up_open;
    int up_watched_fd; /* upstream fd registered in epoll, -1 = none */
    bool up_edge;      /* registered edge-triggered for relaying */
    bool cancel_registered;
    struct cancel_ticket *cancel_ticket; /* our own cancel, until delivered */
    uint32_t secret;
    char addr[64];
    char user[64];
    char database[64];
    char app[64];

    int64_t deadline_ms;         /* startup / TLS / connect / closing deadline, 0 = none */
    void *ssl_pending;           /* SSL* during the handshake */
    size_t su_have;              /* startup bytes read so far */
    unsigned su_negotiated;      /* 1: SSLRequest seen, 2: GSSENCRequest seen */
    bool tls_direct;             /* TLS started without an SSLRequest */
    bool proxy_pending;          /* a PROXY header must come first (--proxy-protocol-from) */
    bool su_counted;             /* counted against --max-startup-* until admitted or ended */
    struct admission_key su_key; /* the client address it is counted by */

    /* client output: bytes [ooff, olen) of obuf are waiting for the client */
    uint8_t *obuf;
    size_t ooff, olen, ocap;
    int64_t last_write_ms; /* last progress writing to a client with output pending */

    /* upstream output still to be written (a Query in cbuf, or up_small) */
    const uint8_t *up_pend;
    size_t up_pend_len;
    uint8_t up_small[256];

    char tx; /* upstream transaction status from the last ReadyForQuery */
    enum relay_state st;
    bool shutdown_seen;
    bool fatal_forwarded; /* upstream FATAL already relayed: close quietly */
    bool poisoning;       /* our failing statement runs to fail the client's transaction */
    bool unsafe_setting;  /* upstream reported a setting the policy parser cannot follow */

    uint8_t *cbuf; /* client → proxy */
    size_t clen, ccap;
    uint8_t *ubuf; /* upstream → proxy */
    size_t ulen, ucap;
    size_t pass_remaining; /* rest of a message larger than ubuf, streamed as it arrives */
    bool pass_drop;

    /* current statement */
    int64_t q_start_us;
    int64_t q_deadline_ms; /* 0 = none */
    struct guard_budget budget;
    uint64_t q_rows, q_bytes; /* whole Query, for metrics and audit */
    bool truncating;
    char q_sqlstate[6];
    const char *q_rule;
    struct abort_state ab;
    struct guard_cache *gcache;
    char *q_sql; /* the Query text being run (points into cbuf until ReadyForQuery) */
    size_t q_sql_len;
    size_t q_in_cbuf; /* bytes of the forwarded Query still at the front of cbuf */

    struct startup_state *su; /* only until the upstream connection is made */
};

/* The startup packet and its parse: ~11 KB that an established session no longer needs. */
struct startup_state {
    uint8_t buf[WIRE_MAX_STARTUP_LEN];
    struct wire_startup sp;
};

/* session.c */
/* Runs the session as far as it can go without blocking. */
void session_drive(struct session *s);
/* Called by the worker's periodic scan and on shutdown. */
void session_timers(struct session *s, int64_t now_ms);
void session_destroy(struct session *s);
/* Queues an ErrorResponse with severity FATAL for the client (the caller then ends). */
void session_send_fatal(struct session *s, const char *code, const char *message,
                        const char *detail);
void session_cancel_upstream(struct session *s);
/* True while the proxy's own cancel is still on its way: the next statement must wait, or the
 * late cancel would hit it. */
bool session_cancel_pending(struct session *s);

/* output helpers (relay.c) */
int out_append(struct session *s, const void *buf, size_t len);
int out_span(struct session *s, const void *buf, size_t len);
/* Writes pending client output. 0 (maybe still pending), -1 on a client error. */
int out_flush(struct session *s);
static inline bool out_pending(const struct session *s)
{
    return s->olen > s->ooff;
}

/* relay.c */
int relay_begin(struct session *s);
/* Returns SE_NONE while the session goes on. */
enum session_end relay_drive(struct session *s);
enum session_end relay_timers(struct session *s, int64_t now_ms);

#endif
