/* Audit internals shared by audit.c (queue, submit, close), audit_writer.c (the writer
 * thread) and audit_json.c (one record as one JSON line), and visible to the unit tests. */
#ifndef PGWP_AUDIT_INT_H
#define PGWP_AUDIT_INT_H

#include "audit.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Drop reports: one log line per interval, not one per record. */
#define AUDIT_REPORT_MS 10000

/* A queued record: one allocation, its strings and parameters copied behind it. */
struct audit_entry {
    struct audit_entry *next;
    size_t size; /* bytes charged against the queue's byte bound */
    struct timespec when;
    struct audit_record rec; /* pointers into this allocation */
    uint64_t sql_size;       /* the statement's full length: > rec.sql_len when cut */
    size_t params_omitted;   /* parameters past AUDIT_PARAMS_MAX, counted only */
};

struct audit_log {
    int fd;
    bool own_fd;
    bool redact;
    size_t max_parse;
    struct audit_limits lim;
    pthread_t th;
    struct audit_log *closed_next; /* on the list of closed logs still writing */

    pthread_mutex_t mu; /* guards the queue, the wake set and closing */
    pthread_cond_t more;
    struct audit_entry *head, *tail;
    size_t count, bytes;
    bool inflight; /* the writer holds a record it has not finished writing */
    int *wake;     /* eventfds to write once there is room: one per waiting event loop */
    size_t nwake, wake_cap;
    bool closing;

    _Atomic int64_t final_drop_report_ms; /* audit_submit_final's drop log, once an interval */
};

/* A growable output buffer; failed sticks once an allocation fails. */
struct audit_text {
    char *buf;
    size_t len, cap;
    bool failed;
};

void audit_text_free(struct audit_text *t);
void audit_text_append(struct audit_text *t, const char *s, size_t n);

/* Length of the valid UTF-8 prefix of s (RFC 3629: no overlongs, surrogates or code points
 * above U+10FFFF). */
size_t audit_utf8_valid_prefix(const char *s, size_t len);

/* Appends s as a JSON string (quotes included): control characters escaped, and each maximal
 * invalid UTF-8 subpart replaced by U+FFFD, as Python's errors="replace" does. Returns whether
 * s was valid UTF-8. */
bool audit_json_string(struct audit_text *t, const char *s, size_t len);

/* Appends `,"key":"text"`, plus `,"key_hex":"<raw bytes>"` when the text is not valid UTF-8,
 * so the exact bytes survive for forensics. */
void audit_json_text_field(struct audit_text *t, const char *key, const char *s, size_t len);

/* Appends one record as a JSON object and a newline. statement/statement_len: the text to show
 * (the record's own, or its redaction); params are left out when redacted. */
void audit_format(struct audit_text *t, const struct audit_entry *e, const char *statement,
                  size_t statement_len, bool redacted);

/* The writer thread (audit_writer.c): runs until the log is closed and its queue is empty,
 * then closes the file and frees the log. */
void *audit_writer_main(void *arg);
/* Called by the writer once it has freed a closed log (audit.c's list of closed logs). */
void audit_closed_done(struct audit_log *a);
/* Unlinks the queue head and returns it (the caller frees it). Called with a->mu held; when
 * that made room, the waiting eventfds are handed over in *wake / *nwake (the caller writes
 * them once it has dropped the lock, then frees *wake). */
struct audit_entry *audit_queue_pop(struct audit_log *a, int **wake, size_t *nwake);
void audit_wake_all(int *wake, size_t nwake);

#endif
