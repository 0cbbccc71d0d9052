/* Shared by be_proto.c (the upstream side, simple protocol and what both share) and be_ext.c
 * (the answers to extended-protocol requests); not for other modules. */
#ifndef PGWP_BE_INT_H
#define PGWP_BE_INT_H

#include "relay.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bytes [span, pos) of the input are pending forwarding. */
struct fwd {
    const uint8_t *buf;
    size_t span;
};

enum be_action { FORWARD, DROP };

int be_flush_span(struct relay *r, struct fwd *f, size_t upto);
/* Puts locally built bytes into the output at position `at` of the input. */
int be_emit(struct relay *r, struct fwd *f, size_t at, const void *p, size_t n);
void be_io_failed(struct relay *r);
/* The upstream broke the protocol at input position `at`: what it sent before still reaches
 * the client, then the FATAL, the last message the client gets; the session ends. */
void be_upstream_broken(struct relay *r, struct fwd *f, size_t at, const char *what);
int be_emit_error(struct relay *r, struct fwd *f, size_t at, const char *severity, const char *code,
                  const char *message, const char *detail, const char *hint);
/* The error a refused request gets (DETAIL rule, HINT), as an ErrorResponse. */
int be_emit_refusal(struct relay *r, struct fwd *f, size_t at, const struct ext_refusal *e);
/* The COPY refusal of --copy reject, as an ErrorResponse. */
int be_emit_copy_refused(struct relay *r, struct fwd *f, size_t at);
/* CommandComplete tags of statements that change data. */
bool be_tag_is_write(const char *tag);
void be_copy_tag(char *dst, size_t cap, const uint8_t *body, size_t len);
/* --on-limit truncate: WARNING and a CommandComplete that counts what the client got. */
int be_emit_truncated_complete(struct relay *r, struct fwd *f, size_t at, const struct stmt *st,
                               const char *tag);
/* A write that tripped a limit but had committed: WARNING and its real CommandComplete. */
int be_emit_committed_report(struct relay *r, struct fwd *f, size_t at, struct stmt *st);
/* The proxy's error for an aborted statement, with its fate. */
int be_emit_abort_error(struct relay *r, struct fwd *f, size_t at, struct stmt *st);
/* What the upstream made of a statement, from its ReadyForQuery status. */
enum stmt_upstream be_fate(const struct stmt *st, char status, bool failed);
/* Counts a message against st's budget; on a trip, truncates or aborts. FORWARD when the
 * message may reach the client. st NULL or inactive: not budgeted. */
enum be_action be_charge(struct relay *r, struct stmt *st, size_t total, bool row);
/* The statement the upstream is answering now: the head Execute's portal run, or the Query. */
struct stmt *be_current(struct relay *r);

/* be_ext.c: an answer to an extended-protocol request (FIFO not empty). *handled false: the
 * message is not tied to a request (notices, notifications, parameter changes, a FATAL) and
 * is treated as in the simple protocol. */
enum be_action be_ext_message(struct relay *r, struct fwd *f, size_t at, char type,
                              const uint8_t *body, size_t blen, size_t mlen, bool *handled);

#endif
