/* The audit queue: records copied in by the event loops, bounded by count and bytes, taken out
 * by one writer thread per log (audit_writer.c). */
#include "audit_int.h"
#include "guard.h"
#include "log.h"
#include "metrics.h"
#include "netio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Logs closed but still writing their queue; audit_wait_closed() waits for this to empty. */
static pthread_mutex_t closed_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t closed_cv = PTHREAD_COND_INITIALIZER;
static struct audit_log *closed_logs;

/* ---------- copying a record ---------- */

/* What a record takes once copied: its statement cut at AUDIT_STATEMENT_MAX (never inside a
 * UTF-8 sequence), its parameters until their text reaches AUDIT_PARAMS_MAX. */
struct entry_plan {
    size_t size, sql_len, nparams, params_omitted;
};

static size_t str_size(const char *s)
{
    return s ? strlen(s) + 1 : 0;
}

static void plan_entry(const struct audit_record *r, struct entry_plan *p)
{
    size_t sql_len = r->sql ? r->sql_len : 0;
    if (sql_len > AUDIT_STATEMENT_MAX) {
        sql_len = AUDIT_STATEMENT_MAX;
        for (int back = 0;
             back < 3 && sql_len > 0 && ((unsigned char)r->sql[sql_len] & 0xC0) == 0x80; back++)
            sql_len--;
    }
    size_t size = sizeof(struct audit_entry) + sql_len + 1, budget = AUDIT_PARAMS_MAX, n = 0;
    for (; r->params && n < r->nparams; n++) {
        const struct audit_param *q = &r->params[n];
        size_t cost = sizeof(*q) + (q->kind == AUDIT_PARAM_TEXT ? q->len : 0);
        if (cost > budget)
            break;
        budget -= cost;
        size += cost;
    }
    const char *strs[] = {
        r->client_addr, r->user,           r->database, r->application,       r->outcome,
        r->sqlstate,    r->rule,           r->protocol, r->upstream_sqlstate, r->upstream_status,
        r->portal,      r->statement_name, r->auth,     r->cert_subject,      r->shadow_rule};
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
        size += str_size(strs[i]);
    *p = (struct entry_plan){.size = size,
                             .sql_len = sql_len,
                             .nparams = n,
                             .params_omitted = r->params ? r->nparams - n : 0};
}

static const char *copy_str(char **at, const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *out = memcpy(*at, s, n);
    *at += n;
    return out;
}

static struct audit_entry *entry_new(const struct audit_record *r, const struct entry_plan *p)
{
    struct audit_entry *e = malloc(p->size);
    if (!e)
        return NULL;
    *e = (struct audit_entry){.size = p->size,
                              .rec = *r,
                              .sql_size = r->sql ? r->sql_len : 0,
                              .params_omitted = p->params_omitted};
    clock_gettime(CLOCK_REALTIME, &e->when);
    struct audit_param *params = (struct audit_param *)(e + 1);
    char *at = (char *)(params + p->nparams);
    e->rec.params = r->params ? params : NULL;
    e->rec.nparams = p->nparams;
    for (size_t i = 0; i < p->nparams; i++) {
        params[i] = r->params[i];
        if (params[i].kind != AUDIT_PARAM_TEXT || !params[i].text)
            params[i].len = 0;
        params[i].text = memcpy(at, params[i].len ? params[i].text : "", params[i].len);
        at += params[i].len;
    }
    e->rec.sql = memcpy(at, r->sql ? r->sql : "", p->sql_len);
    e->rec.sql_len = p->sql_len;
    at[p->sql_len] = 0;
    at += p->sql_len + 1;
    e->rec.client_addr = copy_str(&at, r->client_addr);
    e->rec.user = copy_str(&at, r->user);
    e->rec.auth = copy_str(&at, r->auth);
    e->rec.cert_subject = copy_str(&at, r->cert_subject);
    e->rec.database = copy_str(&at, r->database);
    e->rec.application = copy_str(&at, r->application);
    e->rec.outcome = copy_str(&at, r->outcome);
    e->rec.sqlstate = copy_str(&at, r->sqlstate);
    e->rec.rule = copy_str(&at, r->rule);
    e->rec.shadow_rule = copy_str(&at, r->shadow_rule);
    e->rec.protocol = copy_str(&at, r->protocol);
    e->rec.upstream_sqlstate = copy_str(&at, r->upstream_sqlstate);
    e->rec.upstream_status = copy_str(&at, r->upstream_status);
    e->rec.portal = copy_str(&at, r->portal);
    e->rec.statement_name = copy_str(&at, r->statement_name);
    return e;
}

/* ---------- the queue (a->mu held) ---------- */

/* An empty queue takes any record: one huge statement can never wait forever. */
static bool queue_full(const struct audit_log *a, size_t need, size_t factor)
{
    if (a->count == 0)
        return false;
    return a->count >= a->lim.max_records * factor || a->bytes + need > a->lim.max_bytes * factor;
}

/* The waiting set holds one eventfd per event loop, however many sessions wait on it. */
static int remember_wake(struct audit_log *a, int fd)
{
    if (fd < 0)
        return 0;
    for (size_t i = 0; i < a->nwake; i++)
        if (a->wake[i] == fd)
            return 0;
    if (a->nwake == a->wake_cap) {
        size_t cap = a->wake_cap ? a->wake_cap * 2 : 8;
        int *w = realloc(a->wake, cap * sizeof(*w));
        if (!w)
            return -ENOMEM;
        a->wake = w;
        a->wake_cap = cap;
    }
    a->wake[a->nwake++] = fd;
    return 0;
}

static int refuse(struct audit_log *a, int wake_fd)
{
    int rc = remember_wake(a, wake_fd) ? -ENOMEM : -EAGAIN;
    pthread_mutex_unlock(&a->mu);
    metrics_audit_queue_full();
    return rc;
}

static void enqueue(struct audit_log *a, struct audit_entry *e)
{
    if (a->tail)
        a->tail->next = e;
    else
        a->head = e;
    a->tail = e;
    a->count++;
    a->bytes += e->size;
    pthread_cond_signal(&a->more);
}

struct audit_entry *audit_queue_pop(struct audit_log *a, int **wake, size_t *nwake)
{
    struct audit_entry *e = a->head;
    a->head = e->next;
    if (!a->head)
        a->tail = NULL;
    a->count--;
    a->bytes -= e->size;
    a->inflight = true;
    *wake = NULL;
    *nwake = 0;
    if (a->nwake && !queue_full(a, 0, 1)) {
        *wake = a->wake;
        *nwake = a->nwake;
        a->wake = NULL;
        a->nwake = a->wake_cap = 0;
    }
    return e;
}

void audit_wake_all(int *wake, size_t nwake)
{
    uint64_t one = 1;
    for (size_t i = 0; i < nwake; i++) {
        ssize_t n = write(wake[i], &one, sizeof(one));
        (void)n; /* EAGAIN: the counter is already non-zero, the loop wakes anyway */
    }
    free(wake);
}

/* ---------- the API ---------- */

int audit_submit(struct audit_log *a, const struct audit_record *r, int wake_fd)
{
    struct entry_plan p;
    plan_entry(r, &p);
    /* a first look spares the copy while the queue stays full */
    pthread_mutex_lock(&a->mu);
    if (queue_full(a, p.size, 1))
        return refuse(a, wake_fd);
    pthread_mutex_unlock(&a->mu);
    struct audit_entry *e = entry_new(r, &p);
    if (!e)
        return -ENOMEM;
    pthread_mutex_lock(&a->mu);
    if (queue_full(a, e->size, 1)) {
        free(e);
        return refuse(a, wake_fd);
    }
    enqueue(a, e);
    pthread_mutex_unlock(&a->mu);
    return 0;
}

static void report_final_drop(struct audit_log *a)
{
    int64_t now = netio_now_ms(), last = atomic_load(&a->final_drop_report_ms);
    if (last && now - last < AUDIT_REPORT_MS)
        return;
    if (atomic_compare_exchange_strong(&a->final_drop_report_ms, &last, now))
        LOG_ERROR(0, "audit_records_dropped",
                  "audit queue holds twice its bound: records of ending sessions are dropped "
                  "(see pgwire_proxy_audit_records_dropped_total)");
}

int audit_submit_final(struct audit_log *a, const struct audit_record *r)
{
    struct entry_plan p;
    plan_entry(r, &p);
    struct audit_entry *e = entry_new(r, &p);
    if (e) {
        pthread_mutex_lock(&a->mu);
        if (!queue_full(a, e->size, 2)) {
            enqueue(a, e);
            pthread_mutex_unlock(&a->mu);
            return 0;
        }
        pthread_mutex_unlock(&a->mu);
        free(e);
    }
    metrics_audit(false);
    report_final_drop(a);
    return -ENOBUFS;
}

struct audit_log *audit_open_limits(const char *path, bool redact, size_t max_parse,
                                    const struct audit_limits *lim, char *err, size_t errlen)
{
    struct audit_log *a = calloc(1, sizeof(*a));
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->redact = redact;
    a->max_parse = max_parse;
    a->lim = (struct audit_limits){AUDIT_QUEUE_RECORDS, AUDIT_QUEUE_BYTES, AUDIT_RETRY_MS};
    if (lim && lim->max_records)
        a->lim.max_records = lim->max_records;
    if (lim && lim->max_bytes)
        a->lim.max_bytes = lim->max_bytes;
    if (lim && lim->retry_ms)
        a->lim.retry_ms = lim->retry_ms;
    a->fd = STDERR_FILENO;
    if (strcmp(path, "-") != 0) {
        a->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        a->own_fd = true;
        if (a->fd < 0) {
            snprintf(err, errlen, "cannot open --audit-log '%s': %s", path, strerror(errno));
            free(a);
            return NULL;
        }
    }
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->more, NULL);
    /* --audit-redact parses on this thread: it gets the parser's stack */
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, guard_parse_stack_bytes(max_parse));
    int rc = pthread_create(&a->th, &attr, audit_writer_main, a);
    pthread_attr_destroy(&attr);
    if (rc) {
        snprintf(err, errlen, "cannot start the audit writer: %s", strerror(rc));
        if (a->own_fd)
            close(a->fd);
        pthread_cond_destroy(&a->more);
        pthread_mutex_destroy(&a->mu);
        free(a);
        return NULL;
    }
    return a;
}

struct audit_log *audit_open(const char *path, bool redact, size_t max_parse, char *err,
                             size_t errlen)
{
    return audit_open_limits(path, redact, max_parse, NULL, err, errlen);
}

void audit_close(struct audit_log *a)
{
    if (!a)
        return;
    pthread_mutex_lock(&closed_mu);
    a->closed_next = closed_logs;
    closed_logs = a;
    pthread_mutex_unlock(&closed_mu);
    /* the writer frees the log once it has written the queue: nobody joins it */
    pthread_detach(a->th);
    pthread_mutex_lock(&a->mu);
    a->closing = true;
    /* nobody submits to a closed log: its waiters' eventfds may be closed by now */
    a->nwake = 0;
    pthread_cond_signal(&a->more);
    pthread_mutex_unlock(&a->mu); /* a may be gone from here on */
}

void audit_closed_done(struct audit_log *a)
{
    pthread_mutex_lock(&closed_mu);
    for (struct audit_log **p = &closed_logs; *p; p = &(*p)->closed_next)
        if (*p == a) {
            *p = a->closed_next;
            break;
        }
    pthread_cond_broadcast(&closed_cv);
    pthread_mutex_unlock(&closed_mu);
}

size_t audit_wait_closed(unsigned timeout_ms)
{
    struct timespec until;
    netio_time_in(CLOCK_REALTIME, timeout_ms, &until);
    size_t left = 0;
    pthread_mutex_lock(&closed_mu);
    while (closed_logs && pthread_cond_timedwait(&closed_cv, &closed_mu, &until) != ETIMEDOUT)
        ;
    for (struct audit_log *a = closed_logs; a; a = a->closed_next) {
        pthread_mutex_lock(&a->mu);
        left += a->count + (a->inflight ? 1 : 0);
        pthread_mutex_unlock(&a->mu);
    }
    pthread_mutex_unlock(&closed_mu);
    return left;
}
