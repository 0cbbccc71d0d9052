/* The audit writer thread: takes records from its log's queue, redacts and formats them, and
 * writes each as one whole line. A slow file only slows this thread (the queue then fills and
 * sessions wait); a file that cannot be written is retried for a bounded time, then records
 * are dropped, counted and reported once an interval. */
#include "audit_int.h"
#include "guard.h"
#include "log.h"
#include "metrics.h"
#include "netio.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BACKOFF_MIN_MS 10
#define BACKOFF_MAX_MS 1000
#define LINE_KEEP      ((size_t)4 << 20) /* a line buffer grown past this is given back */

struct writer {
    struct audit_log *a;
    struct audit_text line;
    bool partial;            /* a dropped line left a fragment: the next starts on a new line */
    int64_t outage_since_ms; /* first failed write of the current outage, 0 = none */
    int64_t reported_ms;
    uint64_t unreported; /* records dropped since the last report */
    int last_err;
};

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void report_drops(struct writer *w, bool now_anyway)
{
    int64_t now = netio_now_ms();
    if (!w->unreported || (!now_anyway && w->reported_ms && now - w->reported_ms < AUDIT_REPORT_MS))
        return;
    LOG_ERROR(0, "audit_records_dropped",
              "%llu audit records dropped: cannot write --audit-log: %s",
              (unsigned long long)w->unreported, strerror(w->last_err));
    w->unreported = 0;
    w->reported_ms = now;
}

/* Notes a failed write; returns how long to wait before the next try, or 0 to give up. */
static int64_t write_failed(struct writer *w, int err, int64_t *backoff)
{
    int64_t now = netio_now_ms();
    w->last_err = err;
    if (!w->outage_since_ms) {
        w->outage_since_ms = now;
        LOG_ERROR(0, "audit_write_failed",
                  "cannot write --audit-log: %s; retrying for %ums before dropping records",
                  strerror(err), w->a->lim.retry_ms);
    }
    int64_t left = w->outage_since_ms + (int64_t)w->a->lim.retry_ms - now;
    if (left <= 0)
        return 0;
    int64_t wait = *backoff < left ? *backoff : left;
    *backoff = *backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : *backoff * 2;
    return wait;
}

/* Writes buf whole, completing short writes. Within an outage's retry window a failing write
 * is retried; past it, each record gets one try. Returns whether the line was written. */
static bool write_line(struct writer *w, const char *buf, size_t len)
{
    size_t off = 0;
    int64_t backoff = BACKOFF_MIN_MS;
    while (off < len) {
        ssize_t n = write(w->a->fd, buf + off, len - off);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        int err = n < 0 ? errno : EIO;
        if (err == EINTR)
            continue;
        if (err == EAGAIN || err == EWOULDBLOCK) {
            /* an inherited non-blocking stderr: a slow reader, not a failure */
            struct pollfd p = {.fd = w->a->fd, .events = POLLOUT};
            poll(&p, 1, BACKOFF_MAX_MS);
            continue;
        }
        int64_t wait = write_failed(w, err, &backoff);
        if (!wait) {
            w->partial |= off > 0;
            return false;
        }
        sleep_ms(wait);
    }
    w->partial = false;
    if (w->outage_since_ms) {
        report_drops(w, true);
        LOG_WARN(0, "audit_write_recovered", "--audit-log is written again");
        w->outage_since_ms = 0;
    }
    return true;
}

static void write_entry(struct writer *w, const struct audit_entry *e)
{
    const char *sql = e->rec.sql;
    size_t len = e->rec.sql_len;
    char *redacted = NULL;
    if (w->a->redact) {
        /* the hex sibling then shows the redacted text too: literals never reach the file */
        redacted = guard_redact(sql, len, w->a->max_parse);
        sql = redacted ? redacted : "<statement redacted>";
        len = strlen(sql);
    }
    w->line.len = 0;
    w->line.failed = false;
    if (w->partial)
        audit_text_append(&w->line, "\n", 1);
    audit_format(&w->line, e, sql, len, w->a->redact);
    free(redacted);
    bool ok = false;
    if (w->line.failed)
        w->last_err = ENOMEM;
    else
        ok = write_line(w, w->line.buf, w->line.len);
    metrics_audit(ok);
    if (!ok)
        w->unreported++;
    if (w->line.cap > LINE_KEEP)
        audit_text_free(&w->line);
}

/* Closes the file and frees the log: everything queued has been written (or dropped). */
static void writer_finish(struct writer *w)
{
    struct audit_log *a = w->a;
    report_drops(w, true);
    if (a->own_fd)
        close(a->fd);
    audit_text_free(&w->line);
    audit_closed_done(a);
    free(a->wake);
    pthread_cond_destroy(&a->more);
    pthread_mutex_destroy(&a->mu);
    free(a);
}

void *audit_writer_main(void *arg)
{
    struct writer w = {.a = arg};
    struct audit_log *a = w.a;
    for (;;) {
        pthread_mutex_lock(&a->mu);
        a->inflight = false;
        while (!a->head && !a->closing)
            pthread_cond_wait(&a->more, &a->mu);
        int *wake = NULL;
        size_t nwake = 0;
        struct audit_entry *e = a->head ? audit_queue_pop(a, &wake, &nwake) : NULL;
        pthread_mutex_unlock(&a->mu);
        audit_wake_all(wake, nwake);
        if (!e)
            break; /* closing, and nothing left */
        write_entry(&w, e);
        free(e);
        report_drops(&w, false);
    }
    writer_finish(&w);
    return NULL;
}
