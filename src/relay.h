/* The protocol relay between one client and its upstream, without sockets: fe_proto.c handles
 * client → upstream messages (policy, local answers, protocol errors), be_proto.c handles
 * upstream → client messages (budgets, E/Z/C/S, aborts, truncation, poisoning), relay.c holds
 * what both share. Bytes go out through struct relay_env, so the handlers can be driven with
 * scripted byte sequences in unit tests. */
#ifndef PGWP_RELAY_H
#define PGWP_RELAY_H

#include "end.h"
#include "guard.h"
#include "relay_ext.h"
#include "stmt.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config;

enum relay_state {
    RS_IDLE,    /* waiting for a client message */
    RS_POLICY,  /* a Query waits for its policy decision (a large text is parsed by a parser
                   thread, off the event loop) */
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
    /* extended protocol: the tripped Execute's portal run (a reference) */
    bool ext;
    struct ext_run *run;
    bool sync_sent; /* its segment's Sync was already upstream when it tripped */
    bool delivered; /* the proxy's answer went out: the rest of the segment is dropped */
    bool held;      /* it completed with the Sync gone: the answer waits for Z */
    bool hold_overflow;
    bool parse_injected; /* the failing Parse before its segment's Sync went out */
    bool copy_out;       /* it tripped in COPY TO STDOUT: a read, whatever its tag says */
    bool reached;        /* the tripped Execute is the FIFO's head: answers before it went out */
};

/* What an audit record adds for a portal run. */
struct relay_run_info {
    const char *protocol; /* "simple", "extended" */
    const char *portal;
    const char *statement_name;
    const struct audit_param *params; /* the Bind parameters as the audit shows them */
    uint16_t nparams;
    uint32_t executes;
};

struct relay_env {
    /* output; 0, or -1 when that side failed (the side records why) */
    int (*to_client)(void *ctx, const void *p, size_t n);
    int (*to_upstream)(void *ctx, const void *p, size_t n);
    /* bytes that stay valid in the client buffer until upstream_busy() is false */
    int (*to_upstream_ref)(void *ctx, const void *p, size_t n);
    /* a client message forwarded unchanged from the input fe_proto_process() was given, valid
     * until it returns */
    int (*to_upstream_input)(void *ctx, const void *p, size_t n);
    bool (*upstream_busy)(void *ctx);
    size_t (*client_backlog)(void *ctx);
    size_t (*upstream_backlog)(void *ctx);
    /* the proxy's own cancel of whatever runs upstream; pending: still on its way, so the
     * next statement must wait or the late cancel would hit it */
    void (*cancel)(void *ctx);
    bool (*cancel_pending)(void *ctx);
    /* policy decision for a Query: 0 decided (d filled), 1 pending (fe_proto_decided() comes
     * later), -1 out of memory */
    int (*policy)(void *ctx, const char *sql, size_t len, struct guard_decision *d);
    /* a statement is about to start: pick up a reloaded configuration */
    void (*refresh)(void *ctx);
    /* a statement ended (for the audit); duration in microseconds; info NULL for a simple
     * Query */
    void (*statement_done)(void *ctx, const struct stmt *st, enum stmt_outcome o, uint64_t us,
                           const struct relay_run_info *info);
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
    char internal_error[6]; /* the SQLSTATE the proxy's own statement failed with, "" = none */
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

    /* extended protocol (--extended-protocol allow, fixed when the session starts) */
    bool ext_allowed;
    bool copy_allowed;   /* --copy allow, fixed when the session starts */
    bool copy_in;        /* the upstream is in COPY FROM STDIN: the client's CopyData flows */
    bool copy_out;       /* the upstream is in COPY TO STDOUT */
    bool copy_tripped;   /* the client's COPY data went over --max-bytes: the rest is dropped */
    char *sql_owned;     /* a COPY's Query text, kept while the client buffer moves on */
    bool audit_params;   /* keep Bind parameters for the audit */
    unsigned gen;        /* configuration generation: statements prepared under another one are
                            checked again at their next Bind */
    struct ext_state *x; /* allocated at the first extended message */
    bool wait_fifo;      /* a Query or FunctionCall waits for the pipeline's answers */
    uint8_t *hold;       /* answers held back until Z (see relay_abort.held) */
    size_t hold_len;
};

void relay_init(struct relay *r, const struct relay_env *env, void *ctx, uint64_t sid,
                const char *client_addr, const struct config *cfg);
void relay_release(struct relay *r);

/* Client → upstream: handles the complete messages at the front of buf. Returns how many
 * bytes were handled (the caller drops them), stopping at a statement that runs, a decision
 * that is pending, or backlogged output. r->end is set when the session must end; *need is
 * set to the size of an incomplete message so the caller can make room for it. */
size_t fe_proto_process(struct relay *r, uint8_t *buf, size_t len, size_t *need);
/* The policy decision the message at the front waited for (relay_env.policy returned 1);
 * ignored when nothing waits for one. */
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

/* An abort still waits for the upstream to end its statement (the cancel grace runs): not
 * once a tripped portal run's terminator has arrived, when only the client's Sync is due. */
static inline bool relay_abort_waits_upstream(const struct relay *r)
{
    return r->ab.active && !(r->ab.ext && (r->ab.delivered || r->ab.held));
}

/* What became of a client message: handled (the caller drops it), or kept at the front of
 * the buffer (a forwarded Query until its ReadyForQuery, a message waiting for its decision,
 * for the proxy's own statement, or for the pipeline's answers). */
enum fe_msg { FE_DONE, FE_KEEP };
/* fe_ext.c: an extended-protocol message (--extended-protocol allow). next_type: the type of
 * the message after it when already buffered, else -1. */
enum fe_msg fe_ext_message(struct relay *r, uint8_t *msg, size_t total, int next_type);

/* shared by fe_proto.c, fe_ext.c, be_proto.c and be_ext.c (relay.c) */
/* The policy decision for a text: the one that arrived (RS_POLICY), or the policy's. Returns
 * 1 while it is pending. */
int relay_decide(struct relay *r, const char *sql, size_t len, struct guard_decision *d);
/* A statement the policy refused, for metrics, the log and the audit (nothing ran). */
void relay_record_refusal(struct relay *r, const char *sql, size_t len,
                          const struct guard_decision *d, const struct relay_run_info *info);
/* The error a refused extended request gets, from a policy decision. */
void relay_refusal_of(const struct guard_decision *d, struct ext_refusal *out);
/* Ends an extended portal run: metrics and its audit record (once). */
void relay_run_end(struct relay *r, struct ext_run *run, enum stmt_outcome o);
/* Clears an abort, dropping its reference to the tripped run. */
void relay_abort_done(struct relay *r);
void relay_send_fatal(struct relay *r, const char *code, const char *message, const char *detail);
int relay_local_error(struct relay *r, const char *code, const char *message, const char *detail,
                      const char *hint, uint32_t position, bool rfq);
int relay_start_internal(struct relay *r, enum relay_internal what);
void relay_start_abort(struct relay *r, const char *code, const char *message, const char *detail,
                       const char *hint, const char *rule, enum stmt_outcome outcome, bool cancel,
                       bool append_fate);
void relay_limit_abort(struct relay *r, enum stmt_limit which);
/* A statement the shadow rules would have refused (d->shadow_rule) goes on: logged and
 * counted at its decision, where an enforced refusal is. No-op without a shadow verdict. */
void relay_shadow_denied(struct relay *r, const struct guard_decision *d);
/* --on-limit warn: st went past its budget l with a message of n bytes, which goes on and is
 * counted; the first time, it is logged and counted as a shadow violation. */
void relay_limit_warn(struct relay *r, struct stmt *st, enum stmt_limit l, uint64_t n, bool row);
void relay_statement_end(struct relay *r, enum stmt_outcome o);

#endif
