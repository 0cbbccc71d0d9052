/* Session internals shared by session.c (lifecycle, startup) and relay.c (the relay loop). */
#ifndef PGWP_SESSION_INT_H
#define PGWP_SESSION_INT_H

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

enum relay_state {
    ST_IDLE,    /* waiting for a client message */
    ST_QUERY,   /* a Query (or our own statement) runs upstream; waiting for ReadyForQuery */
    ST_DISCARD, /* extended-protocol error sent: discarding client messages until Sync */
};

/* A statement the proxy is ending on its own terms (limit, timeout, COPY): everything upstream
 * sends until ReadyForQuery is dropped, then our error goes out instead. */
struct abort_state {
    bool active;
    bool saw_error;    /* upstream ended the statement with an error (e.g. our cancel) */
    bool cancel_sent;
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
    uint64_t id;
    struct server *srv;
    struct runtime *rt;
    const struct config *cfg;
    unsigned rt_gen;
    struct netio cli;
    struct upstream up;
    bool up_open;
    bool cancel_registered;
    uint32_t secret;
    char addr[64];
    char user[64];
    char database[64];
    char app[64];

    char tx;  /* upstream transaction status from the last ReadyForQuery */
    enum relay_state st;
    bool shutdown_seen;
    bool fatal_forwarded; /* upstream FATAL already relayed: close quietly */
    bool poisoning;       /* our failing statement runs to fail the client's transaction */

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
    const char *q_outcome;
    const char *q_rule;
    struct abort_state ab;
    struct guard_cache *gcache;
    char *q_sql; /* the Query text being run (points into cbuf until ReadyForQuery) */
    size_t q_sql_len;
    size_t q_in_cbuf; /* bytes of the forwarded Query still at the front of cbuf */

    enum session_end end;
    uint8_t startup[WIRE_MAX_STARTUP_LEN];
    struct wire_startup sp;
};

/* relay.c */
enum session_end relay_run(struct session *s);
/* Sends an ErrorResponse (severity FATAL) to the client, best effort. */
void session_send_fatal(struct session *s, const char *code, const char *message,
                        const char *detail);
int session_client_write(struct session *s, const void *buf, size_t len);

#endif
