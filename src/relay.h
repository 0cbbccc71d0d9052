/* The protocol relay between one client and its upstream, without sockets: fe_proto.c handles
 * client → upstream messages (policy, local answers, protocol errors), be_proto.c handles
 * upstream → client messages (budgets, E/Z/C/S, aborts, truncation, poisoning), relay.c holds
 * what both share. Bytes go out through struct relay_env, so the handlers can be driven with
 * scripted byte sequences in unit tests. */
#ifndef PGWP_RELAY_H
#define PGWP_RELAY_H

#include "end.h"
#include "guard.h"
#include "stmt.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config;

enum relay_state {
    RS_IDLE,    /* waiting for a client message */
    RS_POLICY,  /* a Query waits for its policy decision (parsed off the event loop) */
    RS_QUERY,   /* a Query (or the proxy's own statement) runs upstream, until ReadyForQuery */
    RS_DISCARD, /* extended-protocol error sent: discarding client messages until Sync */
};

/* A statement the proxy sends on its own; its output never reaches the client. */
enum relay_internal {
    RI_NONE,
    RI_POISON,    /* fails the client's transaction block after a local error; its Z is the
                     answer the client waits for */
    RI_READ_ONLY, /* makes the session read-only upstream after a reload turned --read-only on;
                     its Z is dropped and the client's pending Query goes next */
};

/* A statement the proxy is ending on its own terms (limit, timeout, COPY): everything upstream
 * sends until ReadyForQuery is dropped (but notices, notifications and parameter changes),
 * then the proxy's error, or the truncation report when a write had already committed. */
struct relay_abort {
    bool active;
    bool saw_error;     /* upstream ended a statement with an error (e.g. our cancel) */
    bool completed;     /* the tripped statement's CommandComplete arrived */
    bool later_results; /* statements after the tripped one sent results (dropped) */
    bool append_fate;   /* add "; the upstream statement was canceled / had completed" */
    bool report_commit; /* a completed write may be reported as what happened */
    char code[6];
    char message[192];
    char detail[192];
    const char *hint;
    const char *rule;
    char tag[64]; /* the tripped statement's CommandComplete tag */
    enum stmt_outcome outcome;
    int64_t started_ms;
};

struct relay_env {
    /* output; 0, or -1 when that side failed (the side records why) */
    int (*to_client)(void *ctx, const void *p, size_t n);
    int (*to_upstream)(void *ctx, const void *p, size_t n);
    /* bytes that stay valid in the client buffer until upstream_busy() is false */
    int (*to_upstream_ref)(void *ctx, const void *p, size_t n);
    bool (*upstream_busy)(void *ctx);
    size_t (*client_backlog)(void *ctx);
    /* the proxy's own cancel of whatever runs upstream; pending: still on its way, so the
     * next statement must wait or the late cancel would hit it */
    void (*cancel)(void *ctx);
    bool (*cancel_pending)(void *ctx);
    /* policy decision for a Query: 0 decided (d filled), 1 pending (fe_proto_decided() comes
     * later), -1 out of memory */
    int (*policy)(void *ctx, const char *sql, size_t len, struct guard_decision *d);
    /* a statement is about to start: pick up a reloaded configuration */
    void (*refresh)(void *ctx);
    /* a statement ended (for the audit); duration in microseconds */
    void (*statement_done)(void *ctx, const struct stmt *st, enum stmt_outcome o, uint64_t us);
    /* the upstream reported a setting change (after the relay's own checks) */
    void (*setting)(void *ctx, const char *name, const char *value);
};

struct relay {
    const struct relay_env *env;
    void *ctx;
    uint64_t sid; /* for log lines */
    const char *client_addr;
    const struct config *cfg; /* the session's current configuration generation */

    enum relay_state st;
    char tx; /* upstream transaction status from the last ReadyForQuery */
    enum relay_internal internal;
    bool read_only_pending; /* make the upstream read-only before the next statement */
    bool fatal_forwarded;   /* the upstream's FATAL went to the client: nothing follows */
    bool truncating;        /* --on-limit truncate tripped: drop rows until CommandComplete */
    bool decided;           /* RS_POLICY: the decision has arrived */
    struct guard_decision decision;
    enum session_end end; /* set when a handler decides the session must end */

    /* a message larger than the buffer, streamed through as it arrives */
    size_t pass_remaining;
    bool pass_drop;

    size_t query_len; /* the forwarded Query's bytes at the front of the client buffer */
    struct stmt stmt;
    struct relay_abort ab;
};

void relay_init(struct relay *r, const struct relay_env *env, void *ctx, uint64_t sid,
                const char *client_addr, const struct config *cfg);

/* Client → upstream: handles the complete messages at the front of buf. Returns how many
 * bytes were handled (the caller drops them), stopping at a statement that runs, a decision
 * that is pending, or backlogged output. r->end is set when the session must end; *need is
 * set to the size of an incomplete message so the caller can make room for it. */
size_t fe_proto_process(struct relay *r, uint8_t *buf, size_t len, size_t *need);
/* The policy decision a pending Query waited for. */
void fe_proto_decided(struct relay *r, const struct guard_decision *d);
/* True when client input should be read and handled now. */
bool fe_proto_ready(const struct relay *r);

/* Upstream → client: handles what is in buf (a buffer of cap bytes), forwarding spans.
 * Returns the bytes handled; r->end is set when the session must end; *need is set when a
 * control message needs a buffer of that many bytes. */
size_t be_proto_process(struct relay *r, uint8_t *buf, size_t len, size_t cap, size_t *need);

/* Timers: starts the query-timeout abort when it is due. */
void relay_check_deadline(struct relay *r, int64_t now_ms);

/* A statement runs or the proxy's own statement does: the session is not idle upstream. */
static inline bool relay_busy(const struct relay *r)
{
    return r->st == RS_QUERY || r->st == RS_POLICY || r->internal != RI_NONE;
}

/* shared by fe_proto.c and be_proto.c (relay.c) */
void relay_send_fatal(struct relay *r, const char *code, const char *message, const char *detail);
int relay_local_error(struct relay *r, const char *code, const char *message, const char *detail,
                      const char *hint, uint32_t position, bool rfq);
int relay_start_internal(struct relay *r, enum relay_internal what);
void relay_start_abort(struct relay *r, const char *code, const char *message, const char *detail,
                       const char *hint, const char *rule, enum stmt_outcome outcome, bool cancel,
                       bool append_fate);
void relay_limit_abort(struct relay *r, enum stmt_limit which);
void relay_statement_end(struct relay *r, enum stmt_outcome o);

#endif
