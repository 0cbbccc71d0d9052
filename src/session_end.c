/* The one ending path: the client gets its last bytes, the upstream backend really ends
 * (Terminate, then its EOF; a backend that ignores its cancel is terminated from a side
 * connection), and only then is the session done. */
#include "cancel.h"
#include "config.h"
#include "log.h"
#include "reaper.h"
#include "session_int.h"
#include "tls.h"

#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#define CLOSING_GRACE_MS  1000 /* for the client's last bytes */
#define TERMINATE_WAIT_MS 2000 /* an idle backend's EOF after Terminate */
#define REAP_WAIT_MS      5000 /* a backend's EOF after pg_terminate_backend */

static const char *const end_names[] = {
    [SE_NONE] = "none",
    [SE_CLIENT_EXIT] = "client_terminate",
    [SE_CLIENT_EOF] = "client_eof",
    [SE_CLIENT_ERROR] = "client_error",
    [SE_CLIENT_STALLED] = "client_stalled",
    [SE_PROTOCOL] = "protocol_error",
    [SE_STARTUP_TIMEOUT] = "startup_timeout",
    [SE_CANCEL_REQUEST] = "cancel_request",
    [SE_REJECTED] = "rejected",
    [SE_AUTH_FAILED] = "auth_failed",
    [SE_UPSTREAM_CONNECT] = "upstream_connect_failed",
    [SE_UPSTREAM_LOST] = "upstream_lost",
    [SE_GUARDRAIL] = "guardrail",
    [SE_SHUTDOWN] = "shutdown",
    [SE_KILLED] = "killed",
    [SE_INTERNAL] = "internal_error",
};

const char *session_end_name(enum session_end e)
{
    return (unsigned)e < sizeof(end_names) / sizeof(end_names[0]) ? end_names[e] : "unknown";
}

int64_t session_grace_ms(const struct session *s)
{
    return (int64_t)s->cfg->cancel_grace_ms;
}

/* ---------- ending ---------- */

/* How a statement still running when the session ended is recorded. */
static enum stmt_outcome gone_outcome(const struct session *s)
{
    bool client = s->end == SE_CLIENT_EOF || s->end == SE_CLIENT_ERROR ||
                  s->end == SE_CLIENT_STALLED || s->end == SE_CLIENT_EXIT;
    return client ? STMT_CLIENT_GONE : STMT_ERROR;
}

void session_end_with(struct session *s, enum session_end e)
{
    if (s->phase == PH_CLOSING || s->phase == PH_DONE)
        return;
    int64_t now = netio_now_ms();
    s->end = e;
    s->phase = PH_CLOSING;
    s->deadline_ms = now + CLOSING_GRACE_MS;
    s->cli_open = false; /* nothing more for the client but what is queued */
    if (!s->up_connected || s->up.err_dir)
        return;
    if (relay_busy(&s->relay)) {
        session_cancel_upstream(s); /* nothing of it may keep running upstream */
        s->up_deadline_ms = now + session_grace_ms(s);
    } else {
        s->up_deadline_ms = now + TERMINATE_WAIT_MS;
    }
}

bool session_client_stalled(struct session *s, int64_t now)
{
    uint64_t wt = s->cfg->client_write_timeout_ms;
    if (!wt || !conn_send_pending(&s->cli) || now - s->cli.last_write_ms < (int64_t)wt)
        return false;
    LOG_WARN(s->id, "client_stalled", "client=%s accepted no data for %llums", s->addr,
             (unsigned long long)wt);
    session_end_with(s, SE_CLIENT_STALLED);
    return true;
}

void session_close_client(struct session *s)
{
    if (s->cli.io.fd < 0)
        return;
    loop_watch_del(s->loop, &s->cli_watch);
    if (s->cli.io.ssl)
        tls_free_ssl(s->cli.io.ssl);
    s->cli.io.ssl = NULL;
    close(s->cli.io.fd);
    s->cli.io.fd = -1;
}

void session_close_upstream(struct session *s)
{
    if (s->relay.stmt.active)
        relay_statement_end(&s->relay, gone_outcome(s));
    if (s->up_watched_fd >= 0)
        loop_watch_del(s->loop, &s->up_watch);
    s->up_watched_fd = -1;
    if (s->up_open)
        upstream_close(&s->upc);
    s->up_open = s->up_connected = false;
    s->up.io.fd = -1;
}

/* The backend ignored its cancel (or Terminate): end it from a side connection. */
void session_reap_backend(struct session *s)
{
    if (s->reaped || !s->up_connected)
        return;
    s->reaped = true;
    LOG_WARN(s->id, "backend_terminated", "client=%s upstream_pid=%u did not end in time", s->addr,
             s->upc.pid);
    reaper_terminate(s->env->reaper, s->upstream_dsn ? s->upstream_dsn : s->cfg->upstream_dsn,
                     s->upc.pid);
}

static void send_terminate(struct session *s)
{
    static const uint8_t terminate[5] = {'X', 0, 0, 0, 4};
    s->up_terminating = true;
    conn_send(&s->up, terminate, sizeof(terminate));
    conn_flush(&s->up);
    if (!s->up.io.ssl)
        shutdown(s->up.io.fd, SHUT_WR);
}

/* Terminate goes out at once (after the cancel of a running statement): the backend reads it
 * when its statement is over and exits. Until its EOF, what it still sends is read through the
 * relay, so the statement's audit record says what became of it. */
static void drain_upstream(struct session *s)
{
    if (!s->up_terminating)
        send_terminate(s);
    while (s->up.can_read) {
        ssize_t n = conn_read(&s->up);
        if (n == -EAGAIN)
            return;
        if (n <= 0) {
            session_close_upstream(s);
            return;
        }
        if (s->relay.end != SE_NONE || !s->relay.stmt.active) {
            s->up.rlen = 0; /* nothing left to learn from it but its EOF */
            continue;
        }
        size_t need = 0;
        size_t used = be_proto_process(&s->relay, s->up.rbuf, s->up.rlen, s->up.rcap, &need);
        conn_consume(&s->up, used);
        if (need && conn_reserve(&s->up, need))
            s->up.rlen = 0;
    }
}

void session_closing_step(struct session *s, int64_t now)
{
    if (s->cli.io.fd >= 0 &&
        (conn_flush(&s->cli) || !conn_send_pending(&s->cli) || now >= s->deadline_ms))
        session_close_client(s);
    bool now_mode = atomic_load(&s->env->shutdown->mode) == SHUTDOWN_NOW;
    if (s->up_connected && (s->up.err_dir || now_mode))
        session_close_upstream(s);
    if (s->up_connected) {
        drain_upstream(s);
        if (s->up_connected && now >= s->up_deadline_ms) {
            if (!s->reaped) {
                session_reap_backend(s);
                s->up_deadline_ms = now + REAP_WAIT_MS;
            } else {
                LOG_WARN(s->id, "backend_lingering",
                         "client=%s upstream_pid=%u did not end; closing its connection", s->addr,
                         s->upc.pid);
                session_close_upstream(s);
            }
        }
    } else if (s->up_open) {
        session_close_upstream(s); /* connecting, or never relayed: nothing to wait for */
    }
    if (s->cli.io.fd < 0 && !s->up_open)
        s->phase = PH_DONE;
}
