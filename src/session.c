/* Session lifecycle: turns driven by readiness, one timer for every deadline, shutdown, and
 * the one ending path: the client gets its last bytes, the upstream backend really ends
 * (Terminate, then its EOF; a backend that ignores its cancel is terminated from a side
 * connection), and only then does the session stop counting against --max-connections. */
#include "session.h"
#include "cancel.h"
#include "config.h"
#include "guard.h"
#include "log.h"
#include "metrics.h"
#include "reaper.h"
#include "session_int.h"
#include "tls.h"
#include "wire.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define CLOSING_GRACE_MS  1000 /* for the client's last bytes */
#define TERMINATE_WAIT_MS 2000 /* an idle backend's EOF after Terminate */
#define REAP_WAIT_MS      5000 /* a backend's EOF after pg_terminate_backend */
#define CLI_EVENTS        (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET)

#define CONTAINER(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

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
    [SE_UPSTREAM_CONNECT] = "upstream_connect_failed",
    [SE_UPSTREAM_LOST] = "upstream_lost",
    [SE_GUARDRAIL] = "guardrail",
    [SE_SHUTDOWN] = "shutdown",
    [SE_INTERNAL] = "internal_error",
};

const char *session_end_name(enum session_end e)
{
    return (unsigned)e < sizeof(end_names) / sizeof(end_names[0]) ? end_names[e] : "unknown";
}

struct session_link *session_link(struct session *s)
{
    return &s->link;
}

struct session *session_from_link(struct session_link *l)
{
    return CONTAINER(l, struct session, link);
}

void session_schedule(struct session *s)
{
    loop_task_schedule(s->loop, &s->task);
}

void session_fatal(struct session *s, const char *code, const char *message, const char *detail)
{
    if (!s->cli_open)
        return;
    uint8_t buf[1024];
    struct wire_buf b;
    wire_buf_init(&b, buf, sizeof(buf));
    struct wire_error_fields f = {
        .severity = "FATAL", .code = code, .message = message, .detail = detail};
    wire_build_error(&b, 'E', &f);
    if (b.overflow) {
        f.detail = NULL;
        b.overflow = false;
        wire_build_error(&b, 'E', &f);
    }
    conn_send(&s->cli, b.data, b.len);
}

void session_cancel_upstream(struct session *s)
{
    if (!s->cancel_registered)
        return;
    if (s->cancel_ticket) {
        if (!cancel_ticket_done(s->cancel_ticket))
            return; /* one in flight cancels whatever runs now */
        cancel_ticket_release(s->cancel_ticket);
    }
    s->cancel_ticket =
        cancel_forward_tracked(s->env->cancels, s->upc.pid, s->secret, loop_wake_fd(s->loop));
    if (s->cancel_ticket)
        loop_wait_wake(s->loop, &s->waiter);
}

bool session_cancel_pending(struct session *s)
{
    if (!s->cancel_ticket)
        return false;
    if (!cancel_ticket_done(s->cancel_ticket)) {
        loop_wait_wake(s->loop, &s->waiter);
        return true;
    }
    cancel_ticket_release(s->cancel_ticket);
    s->cancel_ticket = NULL;
    return false;
}

static int64_t grace_ms(const struct session *s)
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
        s->up_deadline_ms = now + grace_ms(s);
    } else {
        s->up_deadline_ms = now + TERMINATE_WAIT_MS;
    }
}

static void close_client(struct session *s)
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

static void close_upstream(struct session *s)
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
static void reap_backend(struct session *s)
{
    if (s->reaped || !s->up_connected)
        return;
    s->reaped = true;
    LOG_WARN(s->id, "backend_terminated", "client=%s upstream_pid=%u did not end in time", s->addr,
             s->upc.pid);
    reaper_terminate(s->env->reaper, s->cfg->upstream_dsn, s->upc.pid);
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
            close_upstream(s);
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

static void closing_step(struct session *s, int64_t now)
{
    if (s->cli.io.fd >= 0 &&
        (conn_flush(&s->cli) || !conn_send_pending(&s->cli) || now >= s->deadline_ms))
        close_client(s);
    bool now_mode = atomic_load(&s->env->shutdown->mode) == SHUTDOWN_NOW;
    if (s->up_connected && (s->up.err_dir || now_mode))
        close_upstream(s);
    if (s->up_connected) {
        drain_upstream(s);
        if (s->up_connected && now >= s->up_deadline_ms) {
            if (!s->reaped) {
                reap_backend(s);
                s->up_deadline_ms = now + REAP_WAIT_MS;
            } else {
                LOG_WARN(s->id, "backend_lingering",
                         "client=%s upstream_pid=%u did not end; closing its connection", s->addr,
                         s->upc.pid);
                close_upstream(s);
            }
        }
    } else if (s->up_open) {
        close_upstream(s); /* connecting, or never relayed: nothing to wait for */
    }
    if (s->cli.io.fd < 0 && !s->up_open)
        s->phase = PH_DONE;
}

/* ---------- timers and shutdown ---------- */

static bool relay_idle(const struct session *s)
{
    return !relay_busy(&s->relay) && s->relay.tx == 'I';
}

/* What shutdown asks of this session now (the one place that decides). */
static void shutdown_check(struct session *s, int64_t now)
{
    if (!s->shutdown_seen || s->phase == PH_CLOSING || s->phase == PH_DONE)
        return;
    int mode = atomic_load(&s->env->shutdown->mode);
    int64_t deadline = atomic_load(&s->env->shutdown->deadline_ms);
    if (s->phase == PH_STARTUP) {
        session_end_with(s, SE_SHUTDOWN);
        return;
    }
    bool in_flight = s->phase == PH_RELAY && relay_busy(&s->relay);
    bool end_now = s->phase == PH_CONNECT || mode == SHUTDOWN_NOW || relay_idle(s) ||
                   (now >= deadline && !in_flight) || (in_flight && now >= deadline + grace_ms(s));
    if (!end_now && in_flight && now >= deadline && !s->shutdown_fatal_due) {
        /* the statement's answer goes out first, then the FATAL: a COMMIT that committed
         * must not be reported as failed */
        s->shutdown_fatal_due = true;
        session_cancel_upstream(s);
    }
    if (end_now) {
        session_fatal(s, "57P01", "terminating connection due to administrator command", NULL);
        session_end_with(s, SE_SHUTDOWN);
    }
}

static void relay_timers(struct session *s, int64_t now)
{
    struct relay *r = &s->relay;
    relay_check_deadline(r, now);
    if (r->ab.active && now >= r->ab.started_ms + grace_ms(s)) {
        session_fatal(s, "08006",
                      "terminating connection: the upstream server did not end the canceled "
                      "statement",
                      NULL);
        reap_backend(s);
        session_end_with(s, SE_UPSTREAM_LOST);
        return;
    }
    uint64_t wt = s->cfg->client_write_timeout_ms;
    if (wt && conn_send_pending(&s->cli) && now - s->cli.last_write_ms >= (int64_t)wt) {
        LOG_WARN(s->id, "client_stalled", "client=%s accepted no data for %llums", s->addr,
                 (unsigned long long)wt);
        session_end_with(s, SE_CLIENT_STALLED);
        return;
    }
    uint64_t it = s->cfg->idle_tx_timeout_ms;
    if (it && s->idle_tx_since_ms && now - s->idle_tx_since_ms >= (int64_t)it) {
        LOG_INFO(s->id, "idle_in_transaction_timeout", "client=%s", s->addr);
        metrics_guardrail("idle-in-transaction-timeout");
        session_fatal(s, "25P03", "terminating connection due to idle-in-transaction timeout",
                      "rule: idle-in-transaction-timeout (pgwire-proxy "
                      "--idle-in-transaction-timeout)");
        session_end_with(s, SE_GUARDRAIL);
    }
}

static void session_timers(struct session *s, int64_t now)
{
    switch (s->phase) {
    case PH_STARTUP:
        if (now >= s->deadline_ms) {
            LOG_INFO(s->id, "startup_timeout", "client=%s", s->addr);
            metrics_connection(METRICS_CONN_PROTOCOL_ERROR);
            session_end_with(s, SE_STARTUP_TIMEOUT);
        }
        break;
    case PH_CONNECT:
        if (now >= s->deadline_ms) {
            char code[6], err[256];
            upstream_timeout(&s->upc, code, err, sizeof(err));
            metrics_connection(METRICS_CONN_UPSTREAM_FAILED);
            LOG_WARN(s->id, "upstream_connect_failed", "client=%s code=%s %s", s->addr, code, err);
            session_fatal(s, code, err, NULL);
            session_end_with(s, SE_UPSTREAM_CONNECT);
        }
        break;
    case PH_RELAY:
        relay_timers(s, now);
        break;
    case PH_CLOSING:
    case PH_DONE:
        break;
    }
    shutdown_check(s, now);
}

static int64_t earliest(int64_t a, int64_t b)
{
    return !a || (b && b < a) ? b : a;
}

static int64_t next_deadline(const struct session *s)
{
    const struct relay *r = &s->relay;
    int64_t t = s->phase == PH_RELAY ? 0 : s->deadline_ms;
    if (s->phase == PH_CLOSING) {
        t = s->cli.io.fd >= 0 ? s->deadline_ms : 0;
        if (s->up_connected)
            t = earliest(t, s->up_deadline_ms);
    }
    if (s->phase == PH_RELAY) {
        if (r->st == RS_QUERY && r->stmt.active && !r->ab.active)
            t = earliest(t, r->stmt.deadline_ms);
        if (r->ab.active)
            t = earliest(t, r->ab.started_ms + grace_ms(s));
        uint64_t wt = s->cfg->client_write_timeout_ms;
        if (wt && conn_send_pending(&s->cli))
            t = earliest(t, s->cli.last_write_ms + (int64_t)wt);
        uint64_t it = s->cfg->idle_tx_timeout_ms;
        if (it && s->idle_tx_since_ms)
            t = earliest(t, s->idle_tx_since_ms + (int64_t)it);
    }
    if (s->shutdown_seen && s->phase != PH_CLOSING && s->phase != PH_DONE) {
        int64_t d = atomic_load(&s->env->shutdown->deadline_ms);
        t = earliest(t, s->shutdown_fatal_due ? d + grace_ms(s) : d);
    }
    return t;
}

/* One timer per session, armed at its earliest deadline. A deadline that moved later leaves
 * the timer early: it fires, finds nothing due, and is re-armed. */
static void rearm(struct session *s)
{
    int64_t t = next_deadline(s);
    if (!t || s->phase == PH_DONE) {
        loop_timer_cancel(s->loop, &s->timer);
        return;
    }
    if (!loop_timer_armed(&s->timer) || t < s->timer.when_ms)
        loop_timer_set(s->loop, &s->timer, t);
}

/* ---------- turns ---------- */

static enum session_end startup_step_session(struct session *s)
{
    enum startup_status st = startup_step(s->su, &s->cli, s->rt->tls, s->cfg);
    switch (st) {
    case STARTUP_MORE:
        return SE_NONE;
    case STARTUP_STARTUP:
        return session_startup_done(s);
    case STARTUP_CANCEL: {
        /* the cancel pool closes this socket once the cancel is forwarded */
        int fd = s->cli.io.fd;
        loop_watch_del(s->loop, &s->cli_watch);
        if (s->cli.io.ssl)
            tls_free_ssl(s->cli.io.ssl);
        s->cli.io.ssl = NULL;
        s->cli.io.fd = -1;
        if (cancel_forward_async(s->env->cancels, s->su->sp.cancel_pid, s->su->sp.cancel_secret, fd,
                                 true))
            close(fd);
        return SE_CANCEL_REQUEST;
    }
    case STARTUP_FAILED:
        if (s->su->code[0]) {
            LOG_INFO(s->id, "startup_rejected", "client=%s code=%s %s", s->addr, s->su->code,
                     s->su->message);
            session_fatal(s, s->su->code, s->su->message, NULL);
        } else {
            LOG_WARN(s->id, "tls_handshake_failed", "client=%s %s", s->addr, s->su->message);
        }
        metrics_connection(METRICS_CONN_PROTOCOL_ERROR);
        return SE_PROTOCOL;
    case STARTUP_IO_ERROR:
        return session_conn_end(s) != SE_NONE ? session_conn_end(s) : SE_CLIENT_EOF;
    }
    return SE_PROTOCOL;
}

static enum session_end step(struct session *s, int64_t now)
{
    switch (s->phase) {
    case PH_STARTUP:
        return startup_step_session(s);
    case PH_CONNECT:
        if (s->up.can_read || s->up.can_write || s->up_watched_fd < 0) {
            s->up.can_read = s->up.can_write = false;
            return session_connect_step(s);
        }
        return SE_NONE;
    case PH_RELAY: {
        enum session_end e = session_relay_turn(s);
        if (e == SE_NONE && s->shutdown_fatal_due && !relay_busy(&s->relay)) {
            session_fatal(s, "57P01", "terminating connection due to administrator command", NULL);
            e = SE_SHUTDOWN;
        }
        return e;
    }
    case PH_CLOSING:
        closing_step(s, now);
        return SE_NONE;
    case PH_DONE:
        return SE_NONE;
    }
    return SE_NONE;
}

static void drive(struct session *s)
{
    int64_t now = netio_now_ms();
    for (int i = 0; i < 8 && s->phase != PH_DONE; i++) {
        enum session_phase before = s->phase;
        enum session_end e = step(s, now);
        if (e != SE_NONE) {
            session_end_with(s, e);
            if (e == SE_CANCEL_REQUEST)
                s->phase = PH_DONE;
        }
        if (s->phase == before)
            break;
    }
    shutdown_check(s, now);
    if (s->phase == PH_CLOSING)
        closing_step(s, now);
    if (s->phase == PH_RELAY) {
        bool idle_in_tx = !relay_busy(&s->relay) && s->relay.tx != 'I';
        if (!idle_in_tx)
            s->idle_tx_since_ms = 0;
        else if (!s->idle_tx_since_ms)
            s->idle_tx_since_ms = now;
    }
    if (s->phase == PH_DONE) {
        loop_timer_cancel(s->loop, &s->timer);
        s->env->finished(s->env->host, s);
        return;
    }
    rearm(s);
}

static void on_task(struct loop_task *t)
{
    drive(CONTAINER(t, struct session, task));
}

static void on_timer(struct loop_timer *t)
{
    struct session *s = CONTAINER(t, struct session, timer);
    session_timers(s, netio_now_ms());
    session_schedule(s);
}

static void note_events(struct conn *c, uint32_t e)
{
    bool err = e & (EPOLLERR | EPOLLHUP);
    c->can_read |= (e & EPOLLIN) || err;
    c->can_write |= (e & EPOLLOUT) || err;
    c->peer_closed |= (e & EPOLLRDHUP) || err;
}

static void on_cli_event(struct loop_watch *w, uint32_t e)
{
    struct session *s = CONTAINER(w, struct session, cli_watch);
    note_events(&s->cli, e);
    session_schedule(s);
}

static void on_up_event(struct loop_watch *w, uint32_t e)
{
    struct session *s = CONTAINER(w, struct session, up_watch);
    note_events(&s->up, e);
    session_schedule(s);
}

void session_notify_shutdown(struct session *s)
{
    s->shutdown_seen = true;
    session_schedule(s);
}

/* ---------- creation and cleanup ---------- */

static void format_peer(const struct sockaddr_storage *peer, char *out, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (peer->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)peer;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        port = ntohs(in->sin_port);
    } else if (peer->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)peer;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        port = ntohs(in6->sin6_port);
    } else if (peer->ss_family == AF_UNIX) {
        snprintf(out, len, "[local]");
        return;
    }
    snprintf(out, len, "%s:%d", host, port);
}

struct session *session_new(const struct session_env *env, struct loop *loop, int fd,
                            const struct sockaddr_storage *peer)
{
    struct session *s = calloc(1, sizeof(*s));
    if (!s) {
        close(fd);
        return NULL;
    }
    s->su = malloc(sizeof(*s->su)); /* not calloc: only the bytes read get touched */
    if (!s->su) {
        free(s);
        close(fd);
        return NULL;
    }
    int one = 1;
    if (peer->ss_family != AF_UNIX)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    startup_init(s->su);
    s->env = env;
    s->loop = loop;
    s->task.fn = on_task;
    s->timer.fn = on_timer;
    s->waiter.task = &s->task;
    s->cli_watch.fn = on_cli_event;
    s->up_watch.fn = on_up_event;
    s->up_watched_fd = -1;
    s->id = atomic_fetch_add(env->next_id, 1) + 1;
    s->rt = runtimes_acquire(env->runtimes);
    s->cfg = &s->rt->cfg;
    s->rt_gen = s->rt->gen;
    s->phase = PH_STARTUP;
    s->relay.tx = 'I';
    conn_init(&s->cli, CONN_CLIENT, fd, SESSION_CLIENT_BUF, env->client_mem);
    conn_init(&s->up, CONN_UPSTREAM, -1, SESSION_UPSTREAM_BUF, NULL);
    s->cli_open = true;
    s->deadline_ms = netio_now_ms() + (int64_t)s->cfg->startup_timeout_ms;
    format_peer(peer, s->addr, sizeof(s->addr));
    atomic_fetch_add(&env->counts->live, 1);
    if (loop_watch_add(loop, &s->cli_watch, fd, CLI_EVENTS)) {
        LOG_ERROR(s->id, "epoll_failed", "%s", strerror(errno));
        s->phase = PH_DONE;
        session_free(s);
        return NULL;
    }
    session_schedule(s);
    return s;
}

void session_free(struct session *s)
{
    const struct session_env *env = s->env;
    if (s->admitted && s->end != SE_REJECTED && s->end != SE_UPSTREAM_CONNECT && s->end != SE_NONE)
        LOG_INFO(s->id, "session_end", "client=%s reason=%s", s->addr, session_end_name(s->end));
    if (s->counted_open)
        metrics_session_close();
    loop_task_cancel(s->loop, &s->task);
    loop_timer_cancel(s->loop, &s->timer);
    loop_waiter_cancel(s->loop, &s->waiter);
    cancel_ticket_release(s->cancel_ticket);
    if (s->cancel_registered)
        cancel_unregister(env->cancels, s->upc.pid);
    close_upstream(s);
    close_client(s);
    if (s->su) {
        startup_release(s->su);
        free(s->su);
    }
    guard_cache_free(s->gcache);
    conn_release(&s->cli);
    conn_release(&s->up);
    runtime_release(s->rt);
    if (s->admitted)
        atomic_fetch_sub(&env->counts->admitted, 1);
    atomic_fetch_sub(&env->counts->live, 1);
    free(s);
}
