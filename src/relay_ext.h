/* The extended query protocol's bookkeeping in the relay: the response FIFO (one entry per
 * forwarded request, with the answers it expects and what to do with them), and advisory
 * tables of prepared statements and portals. Nothing the proxy decides depends on an entry
 * existing: the tables only keep texts for re-checks after a reload, and each portal run's
 * clock and budget. All of it is bounded. */
#ifndef PGWP_RELAY_EXT_H
#define PGWP_RELAY_EXT_H

#include "audit.h"
#include "guard.h"
#include "guard_fingerprint.h"
#include "stmt.h"

struct config;

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EXT_FIFO_MAX       65536      /* requests in flight; more is a FATAL 54000 */
#define EXT_MAX_STATEMENTS 4096       /* prepared statements the proxy tracks per session */
#define EXT_MAX_PORTALS    256        /* portals per session */
#define EXT_TABLE_BYTES    (8u << 20) /* texts kept per session */
#define EXT_PARAM_BYTES    (1u << 20) /* Bind parameters kept for the audit per session */
#define EXT_DENIED_NAME    "pgwire_proxy_denied"

enum ext_kind {
    EXT_PARSE = 1, /* answered by ParseComplete '1' */
    EXT_BIND,      /* '2' */
    EXT_DESCRIBE,  /* ['t'] then 'T' or 'n' */
    EXT_EXECUTE,   /* 'D'* then 'C', 'I', 's' (or a COPY response) */
    EXT_CLOSE,     /* '3' */
    EXT_SYNC,      /* 'Z' */
};

enum ext_action {
    EXT_FORWARD,  /* the client's own request: its answer goes to the client */
    EXT_REWRITE,  /* the proxy's failing Parse: its error becomes the guardrail's */
    EXT_SUPPRESS, /* the proxy's own request: its answer is dropped */
};

#define EXT_COPY_REFUSED 1u /* the Execute started a COPY that --copy reject ended */

/* A statement text shared by the statement table, portals and runs (one session's thread). */
struct ext_text {
    int refs;
    size_t len;
    char *shadow_rule;  /* the shadow rule its decision named (malloc'd), NULL = none */
    struct guard_fp fp; /* its fingerprint for the statistics; fp.kind NULL = not known yet */
    char data[];        /* NUL-terminated */
};

/* One portal run: its Executes share its clock, budget and audit record. Referenced by the
 * portal that started it and by each of its Executes in the FIFO, so a Bind that replaces the
 * portal (the unnamed one, at every executemany row) does not end it early. */
#define EXT_NAME_INLINE 32 /* portal names shorter than this live in the object itself */

struct ext_run {
    int refs;
    bool done; /* its record went out */
    struct stmt st;
    struct ext_text *text;
    char *portal; /* portal_buf, or malloc'd when longer */
    char portal_buf[EXT_NAME_INLINE];
    struct audit_param *params;
    uint16_t nparams;
    uint32_t executes;
};

struct ext_entry {
    uint8_t kind;
    uint8_t action;
    uint8_t flags;
    struct ext_run *run; /* EXT_EXECUTE; EXT_CLOSE of a portal: the run it ends */
};

/* The error a refused request gets in place of its failing Parse's. */
struct ext_refusal {
    char code[6];
    char message[256];
    char detail[160];
    const char *hint; /* static text */
    uint32_t position;
};

struct ext_stmt {
    char *name; /* NULL = free slot */
    struct ext_text *text;
    unsigned policy_gen;
};

struct ext_portal {
    char *name; /* name_buf, or malloc'd when longer */
    char name_buf[EXT_NAME_INLINE];
    struct ext_text *text;
    struct audit_param *params; /* one allocation: the array and the cut text values */
    uint16_t nparams;
    size_t params_bytes;
    struct ext_run *run; /* started by its first Execute */
};

struct ext_state {
    struct ext_entry *fifo; /* a ring; fcap and rcap are powers of two */
    size_t fhead, fcount, fcap;
    size_t nsync;           /* Sync entries in the FIFO */
    size_t nexec;           /* Execute entries in the FIFO */
    struct ext_refusal *rw; /* errors of pending EXT_REWRITE entries, in order */
    size_t rhead, rcount, rcap;
    struct ext_stmt *stmts; /* open addressing by name */
    size_t scap, nstmts;
    struct ext_portal *portals[EXT_MAX_PORTALS];
    int portal_top;     /* slots from here up are empty: scans per message stop here, not at 256 */
    size_t bytes;       /* statement texts and names held */
    size_t param_bytes; /* parameters kept for the audit, portals and runs together */
    /* the last portal and run given back, reused by the next: most clients open the unnamed
     * portal once per statement, and an allocation each time is a good part of its cost */
    void *spare_portal; /* a struct ext_portal */
    void *spare_run;    /* a struct ext_run */
    bool discard;       /* dropping client messages until Sync */
    bool seg_open;      /* requests forwarded since the last Sync */
    /* the query timeout of the first Execute in the FIFO: from its forwarding, or from the
     * previous Execute's answer, whichever is later (PostgreSQL holds the answers before it
     * until a Flush, so it need not be the head); 0 = none */
    int64_t exec_deadline_ms;
};

struct ext_state *relay_ext_new(void);
void relay_ext_free(struct ext_state *x);

struct ext_text *relay_ext_text_new(const char *p, size_t len);
static inline struct ext_text *relay_ext_text_ref(struct ext_text *t)
{
    if (t)
        t->refs++;
    return t;
}
void relay_ext_text_unref(struct ext_text *t);
/* Keeps the shadow verdict of the text's latest decision ("" or NULL = none), for the audit
 * records of the portal runs that execute it. -1 when out of memory. */
int relay_ext_text_set_shadow(struct ext_text *t, const char *rule);

/* FIFO; push returns -1 when it is full (the entry takes a reference to run). */
int relay_ext_push(struct ext_state *x, enum ext_kind kind, enum ext_action action,
                   struct ext_run *run);
static inline bool relay_ext_empty(const struct ext_state *x)
{
    return !x || x->fcount == 0;
}
static inline struct ext_entry *relay_ext_head(struct ext_state *x)
{
    return x && x->fcount ? &x->fifo[x->fhead] : NULL;
}
/* The first Execute in the FIFO (the one running upstream), or NULL. */
struct ext_entry *relay_ext_first_execute(struct ext_state *x);
/* Pops the head; the error of a popped failing Parse goes to *rewrite (NULL: dropped). */
void relay_ext_pop(struct ext_state *x, struct ext_refusal *rewrite);
/* Drops entries up to (not including) the next Sync: the backend skips them after an error. */
void relay_ext_skip_to_sync(struct ext_state *x, void (*dropped)(void *arg, struct ext_entry *e),
                            void *arg);
/* A copy-in started at the head: Syncs after it were ignored by the backend. */
void relay_ext_drop_syncs_after_head(struct ext_state *x);
/* The guardrail error an EXT_REWRITE entry pushed right after it will answer with. */
int relay_ext_rewrite_push(struct ext_state *x, const struct ext_refusal *d);

/* Statements: name → text. put replaces (a Parse of the text the name already has keeps
 * the text and takes policy_gen); returns -1 when a bound would be exceeded. */
int relay_ext_stmt_put(struct ext_state *x, const char *name, const char *text, size_t len,
                       unsigned policy_gen);
struct ext_stmt *relay_ext_stmt_get(struct ext_state *x, const char *name);
void relay_ext_stmt_drop(struct ext_state *x, const char *name);

/* Portals: index, or -1 when the table is full. Opening a name replaces its portal. */
int relay_ext_portal_open(struct ext_state *x, const char *name, struct ext_text *text);
int relay_ext_portal_find(struct ext_state *x, const char *name);
void relay_ext_portal_close(struct ext_state *x, int i);
/* Transaction end: portals live until then. */
void relay_ext_portals_clear(struct ext_state *x);
/* The portal's run, started by its first Execute (NULL when out of memory). */
struct ext_run *relay_ext_portal_run(struct ext_state *x, int i, const struct config *cfg);
void relay_ext_run_unref(struct ext_state *x, struct ext_run *run);

#endif
