/* Private to the scanner (guard_scan.c, guard_calls.c): frame access, sites, and what the two
 * files call of each other. */
#ifndef PGWP_GUARD_SCAN_H
#define PGWP_GUARD_SCAN_H

#include "guard_internal.h"

#include <string.h>

/* Roles of a String body (frame aux). */
enum { STR_NONE = 0, STR_NAME, STR_FIELD_ROW, STR_FIELD_COL, STR_FIELD_EXPR };

/* How a function is reached, for the allow list and the summary. */
enum guard_how { HOW_CALL = 'C', HOW_DDL = 'D', HOW_FIELD_ROW = 'R', HOW_FIELD = 'F' };

/* Set statement kinds (slot misc). */
enum { SET_VALUE = 1, SET_DEFAULT, SET_CURRENT, SET_MULTI, SET_RESET, SET_RESET_ALL };
/* Transaction statement kinds (slot misc). */
enum { TX_BEGIN = 1, TX_START, TX_COMMIT, TX_ROLLBACK, TX_OTHER, TX_TWO_PHASE, TX_PREPARE };

/* COPY fields seen (frame aux). */
#define COPY_FILE 1u
#define COPY_FROM 2u

static inline struct guard_frame *fr(struct guard_scan *sc, size_t i)
{
    return &sc->fr[i];
}

static inline struct guard_slot *slot(struct guard_scan *sc, uint32_t s)
{
    return &sc->sl[s];
}

/* The JSON string s equals lit (without escapes). */
static inline bool span_is(struct guard_span s, const char *lit)
{
    size_t n = strlen(lit);
    return s.n == n + 2 && s.p[0] == '"' && memcmp(s.p + 1, lit, n) == 0;
}

/* The site a body's value sits in. */
struct site {
    size_t holder; /* the array or object holding the value */
    uint16_t key;  /* the key that holds it */
    uint32_t index;
    uint32_t owner; /* the body that owns the holder */
    bool ok;
};

struct site guard_scan_site(struct guard_scan *sc, size_t f);
const struct guard_frame *guard_scan_owner(struct guard_scan *sc, const struct site *s);
/* A JSON string into buf (lowercased, at most cap-1 bytes cut at a UTF-8 boundary, as
 * PostgreSQL truncates identifiers); *cut tells that it did not fit. */
void guard_scan_text(struct guard_scan *sc, struct guard_span v, char *buf, size_t cap, bool *cut);

/* guard_calls.c */
/* Appends to the dual-reading summary, when one is kept. */
void guard_scan_sum(struct guard_scan *sc, char tag, const char *text);
void guard_scan_call(struct guard_scan *sc, const char *name, uint32_t nargs, enum guard_how how);
void guard_scan_funccall_end(struct guard_scan *sc, size_t f);
int guard_scan_set_kind(struct guard_span v);
int guard_scan_txn_kind(struct guard_span v);
void guard_scan_top_set_end(struct guard_scan *sc, const struct guard_slot *s);
void guard_scan_top_txn_end(struct guard_scan *sc, const struct guard_slot *s);
void guard_scan_defelem_name(struct guard_scan *sc, size_t f, struct guard_span v);
void guard_scan_defelem_end(struct guard_scan *sc, size_t f);

#endif
