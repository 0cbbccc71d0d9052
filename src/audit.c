#include "audit.h"
#include "guard.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct audit_log {
    int fd;
    bool own_fd;
    bool redact;
    size_t max_parse; /* redaction parses: bounded like every parse */
    pthread_mutex_t mu;
};

struct audit_log *audit_open(const char *path, bool redact, size_t max_parse, char *err,
                             size_t errlen)
{
    struct audit_log *a = calloc(1, sizeof(*a));
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->redact = redact;
    a->max_parse = max_parse;
    if (strcmp(path, "-") == 0) {
        a->fd = STDERR_FILENO;
    } else {
        a->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        a->own_fd = true;
        if (a->fd < 0) {
            snprintf(err, errlen, "cannot open --audit-log '%s': %s", path, strerror(errno));
            free(a);
            return NULL;
        }
    }
    pthread_mutex_init(&a->mu, NULL);
    return a;
}

void audit_close(struct audit_log *a)
{
    if (!a)
        return;
    if (a->own_fd)
        close(a->fd);
    pthread_mutex_destroy(&a->mu);
    free(a);
}

static char *escaped(const char *s, size_t len)
{
    char *copy = strndup(s ? s : "", s ? len : 0);
    if (!copy)
        return NULL;
    size_t cap = strlen(copy) * 6 + 1;
    char *out = malloc(cap);
    if (out)
        log_json_escape(out, cap, copy);
    free(copy);
    return out;
}

void audit_write(struct audit_log *a, const struct audit_record *r)
{
    const char *sql = r->sql;
    size_t sql_len = r->sql_len;
    char *redacted = NULL;
    if (a->redact) {
        redacted = guard_redact(r->sql, r->sql_len, a->max_parse);
        if (redacted) {
            sql = redacted;
            sql_len = strlen(sql);
        }
    }
    char *esql = escaped(sql, sql_len);
    char *eapp = escaped(r->application, r->application ? strlen(r->application) : 0);
    char *euser = escaped(r->user, r->user ? strlen(r->user) : 0);
    char *edb = escaped(r->database, r->database ? strlen(r->database) : 0);
    char when[40];
    log_timestamp(when, sizeof(when));
    char *line = NULL;
    int n = -1;
    if (esql && eapp && euser && edb)
        n = asprintf(&line,
                     "{\"time\":\"%s\",\"session\":%llu,\"client\":\"%s\",\"user\":\"%s\","
                     "\"database\":\"%s\",\"application\":\"%s\",\"statement\":\"%s\","
                     "\"duration_ms\":%.3f,\"rows\":%llu,\"bytes\":%llu,\"outcome\":\"%s\","
                     "\"sqlstate\":%s%s%s,\"rule\":%s%s%s}\n",
                     when, (unsigned long long)r->session_id, r->client_addr, euser, edb, eapp,
                     esql, (double)r->duration_us / 1000.0, (unsigned long long)r->rows,
                     (unsigned long long)r->bytes, r->outcome, r->sqlstate ? "\"" : "",
                     r->sqlstate ? r->sqlstate : "null", r->sqlstate ? "\"" : "",
                     r->rule ? "\"" : "", r->rule ? r->rule : "null", r->rule ? "\"" : "");
    if (n > 0) {
        pthread_mutex_lock(&a->mu);
        ssize_t w = write(a->fd, line, (size_t)n);
        (void)w;
        pthread_mutex_unlock(&a->mu);
    }
    free(line);
    free(esql);
    free(eapp);
    free(euser);
    free(edb);
    free(redacted);
}
