/* What the console sees of a session and does to it, always on the session's own thread (the
 * console's question reaches each worker through its loop): a snapshot with the running
 * statement redacted, a cancel of that statement, and KILL. */
#include "config.h"
#include "text_len.h"
#include "guard.h"
#include "log.h"
#include "session_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

uint64_t session_id(const struct session *s)
{
    return s->id;
}

bool session_ending(const struct session *s)
{
    return s->phase == PH_CLOSING || s->phase == PH_DONE;
}

/* The statement running now: a Query, or the extended protocol's first Execute upstream. */
static const struct stmt *running(struct session *s)
{
    struct relay *r = &s->relay;
    if (s->phase != PH_RELAY)
        return NULL;
    struct ext_entry *e = r->x ? relay_ext_first_execute(r->x) : NULL;
    if (e && e->run && e->run->st.active)
        return &e->run->st;
    if ((r->st == RS_QUERY || r->st == RS_POLICY) && r->internal == RI_NONE && r->stmt.active &&
        r->stmt.sql)
        return &r->stmt;
    return NULL;
}

static const char *state_of(struct session *s)
{
    switch (s->phase) {
    case PH_STARTUP:
        return "startup";
    case PH_AUTH:
        return "authenticating";
    case PH_CONNECT:
        return "connecting";
    case PH_CONSOLE:
        return "console";
    case PH_RELAY:
        break;
    case PH_CLOSING:
    case PH_DONE:
        return "closing";
    }
    if (relay_busy(&s->relay) || running(s))
        return "active";
    if (s->relay.tx == 'T')
        return "idle in transaction";
    return s->relay.tx == 'E' ? "idle in transaction (aborted)" : "idle";
}

/* Redacted as the audit redacts (it parses): texts longer than the worker parses inline are
 * shown by their size only. */
static char *redacted(const struct stmt *st)
{
    size_t len = text_len(st->sql, st->sql_len);
    if (len > SESSION_INLINE_PARSE) {
        char *m = malloc(48);
        if (m)
            snprintf(m, 48, "<statement of %zu bytes>", len);
        return m;
    }
    return guard_redact(st->sql, len, SESSION_INLINE_PARSE);
}

void session_snapshot(struct session *s, int64_t now_us, struct session_snapshot *out, bool *oom)
{
    memset(out, 0, sizeof(*out));
    out->id = s->id;
    snprintf(out->user, sizeof(out->user), "%s", s->user);
    snprintf(out->client, sizeof(out->client), "%s", s->addr);
    snprintf(out->application, sizeof(out->application), "%s", s->app);
    snprintf(out->database, sizeof(out->database), "%s", s->database);
    bool named = s->phase != PH_STARTUP; /* the startup packet's values are copied at its end */
    if (!named)
        out->user[0] = out->application[0] = out->database[0] = 0;
    out->auth = named && s->phase != PH_AUTH ? s->auth_method : NULL;
    out->state = state_of(s);
    out->upstream_pid = s->up_connected ? s->upc.pid : 0;
    out->tx = s->phase == PH_RELAY ? s->relay.tx : 0;
    out->rows = s->rows_total;
    out->bytes = s->bytes_total;
    out->statements = s->nstatements;
    out->running_ms = -1;
    const struct stmt *st = running(s);
    if (!st)
        return;
    out->running_ms = (now_us - st->start_us) / 1000;
    out->rows += st->rows;
    out->bytes += st->bytes;
    out->statement = redacted(st);
    if (!out->statement)
        *oom = true;
}

bool session_admin_cancel(struct session *s, const char *by)
{
    struct relay *r = &s->relay;
    bool upstream_runs =
        running(s) && (r->st == RS_QUERY || (r->x && relay_ext_first_execute(r->x)));
    LOG_INFO(s->id, "console_cancel", "client=%s by=%s%s", s->addr, by,
             upstream_runs ? "" : " (no statement running)");
    if (upstream_runs)
        session_cancel_upstream(s);
    return upstream_runs;
}

void session_admin_kill(struct session *s, const char *by)
{
    if (s->phase == PH_CLOSING || s->phase == PH_DONE)
        return;
    LOG_WARN(s->id, "console_kill", "client=%s user=%s by=%s", s->addr, s->user, by);
    session_fatal(s, "57P01", "terminating connection due to administrator command",
                  "The session was ended from the pgwire-proxy console.");
    session_end_with(s, SE_KILLED);
    session_schedule(s);
}
