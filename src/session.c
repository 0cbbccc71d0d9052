/* Session lifecycle: turns driven by readiness, one timer for every deadline, and shutdown.
 * How a session ends is in session_end.c; it counts against --max-connections until its
 * upstream backend is gone. */
#include "session.h"
#include "cancel.h"
#include "config.h"
#include "guard.h"
#include "log.h"
#include "metrics.h"
#include "metrics_user.h"
#include "session_int.h"
#include "startup_gate.h"
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

#define CONTAINER(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

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
    wire_build_fatal(&b, code, message, detail);
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
    if (s->phase == PH_STARTUP || s->phase == PH_AUTH) {
        session_end_with(s, SE_SHUTDOWN);
        return;
    }
    if (s->phase == PH_CONSOLE) { /* nothing of it runs upstream: it ends at once */
        session_fatal(s, "57P01", "terminating connection due to administrator command", NULL);
        session_end_with(s, SE_SHUTDOWN);
        return;
    }
    bool in_flight = s->phase == PH_RELAY && relay_busy(&s->relay);
    bool end_now = s->phase == PH_CONNECT || mode == SHUTDOWN_NOW || relay_idle(s) ||
                   (now >= deadline && !in_flight) ||
                   (in_flight && now >= deadline + session_grace_ms(s));
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
    if (relay_abort_waits_upstream(r) && now >= r->ab.started_ms + session_grace_ms(s)) {
        session_fatal(s, "08006",
                      "terminating connection: the upstream server did not end the canceled "
                      "statement",
                      NULL);
        session_reap_backend(s);
        session_end_with(s, SE_UPSTREAM_LOST);
        return;
    }
    if (session_client_stalled(s, now))
        return;
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
    case PH_AUTH:
        session_auth_timer(s, now);
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
    case PH_CONSOLE:
        console_timer(s, now);
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
    if (s->phase == PH_CONSOLE)
        t = console_deadline(s);
    if (s->phase == PH_CLOSING) {
        t = s->cli.io.fd >= 0 ? s->deadline_ms : 0;
        if (s->up_connected)
            t = earliest(t, s->up_deadline_ms);
    }
    if (s->phase == PH_RELAY) {
        if (r->st == RS_QUERY && r->stmt.active && !r->ab.active)
            t = earliest(t, r->stmt.deadline_ms);
        if (r->x && !r->ab.active)
            t = earliest(t, r->x->exec_deadline_ms);
        if (relay_abort_waits_upstream(r))
            t = earliest(t, r->ab.started_ms + session_grace_ms(s));
        uint64_t wt = s->cfg->client_write_timeout_ms;
        if (wt && conn_send_pending(&s->cli))
            t = earliest(t, s->cli.last_write_ms + (int64_t)wt);
        uint64_t it = s->cfg->idle_tx_timeout_ms;
        if (it && s->idle_tx_since_ms)
            t = earliest(t, s->idle_tx_since_ms + (int64_t)it);
    }
    if (s->shutdown_seen && s->phase != PH_CLOSING && s->phase != PH_DONE) {
        int64_t d = atomic_load(&s->env->shutdown->deadline_ms);
        t = earliest(t, s->shutdown_fatal_due ? d + session_grace_ms(s) : d);
    }
    return t;
}

/* One timer per session, armed at its earliest deadline. A deadline that moved later, or is
 * gone (the statement ended), leaves the timer early: it fires once, finds nothing due, and is
 * re-armed only if something is. So a statement that ends before its query timeout costs the
 * timer heap nothing, where cancelling at its end and arming at the next one moved two heap
 * entries a statement. */
static void rearm(struct session *s)
{
    int64_t t = next_deadline(s);
    if (!t)
        return;
    if (!loop_timer_armed(&s->timer) || t < s->timer.when_ms)
        loop_timer_set(s->loop, &s->timer, t);
}

/* ---------- turns ---------- */

/* Gives the connection of a CancelRequest to the cancel module, which closes it once the cancel
 * took effect (or at once, when it refuses it); the client's address drives its rate limit. */
static enum session_end hand_over_cancel(struct session *s)
{
    struct sockaddr_storage from;
    socklen_t fromlen = sizeof(from);
    int fd = s->cli.io.fd;
    bool known = getpeername(fd, (struct sockaddr *)&from, &fromlen) == 0;
    loop_watch_del(s->loop, &s->cli_watch);
    /* a CancelRequest inside TLS: the SSL object ends here, without a word on the socket
     * that now belongs to the cancel module */
    tls_drop_ssl(s->cli.io.ssl);
    s->cli.io.ssl = NULL;
    s->cli.io.fd = -1;
    struct cancel_request r = {.pid = s->su->sp.cancel_pid,
                               .secret = s->su->sp.cancel_secret,
                               .fd = fd,
                               .from = known ? (struct sockaddr *)&from : NULL,
                               .fromlen = known ? fromlen : 0,
                               .via_peer = s->su->sp.cancel_from_peer};
    cancel_client_request(s->env->cancels, &r);
    return SE_CANCEL_REQUEST;
}

static enum session_end startup_step_session(struct session *s)
{
    if (s->acc.proxy_pending) {
        enum session_end e = startup_gate_read_proxy_header(s);
        if (e != SE_NONE || s->acc.proxy_pending)
            return e;
    }
    enum startup_status st = startup_step(s->su, &s->cli, s->rt->tls, s->cfg);
    switch (st) {
    case STARTUP_MORE:
        return SE_NONE;
    case STARTUP_STARTUP:
        return session_startup_done(s);
    case STARTUP_CANCEL:
        return hand_over_cancel(s);
    case STARTUP_FAILED:
        if (s->su->proxy_header) {
            /* from a source not in --proxy-protocol-from a header could claim any address */
            LOG_WARN(s->id, "proxy_header_refused",
                     "client=%s sent a PROXY protocol header but is not in "
                     "--proxy-protocol-from",
                     s->addr);
        } else if (s->su->code[0]) {
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
    case PH_AUTH:
        return session_auth_step(s);
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
    case PH_CONSOLE:
        return console_step(s);
    case PH_CLOSING:
        session_closing_step(s, now);
        return SE_NONE;
    case PH_DONE:
        return SE_NONE;
    }
    return SE_NONE;
}

/* EPOLLOUT in a side's registration exactly while it waits for room. Adding it reports the
 * socket at once if it became writable meanwhile, so no edge is lost. */
static int watch_room(struct loop *l, struct loop_watch *w, struct conn *c)
{
    bool want = !c->can_write;
    if (want == c->out_watched)
        return 0;
    int rc = loop_watch_mod(l, w, SESSION_WATCH_EVENTS | (want ? EPOLLOUT : 0));
    if (rc == 0)
        c->out_watched = want;
    return rc;
}

static int watch_rooms(struct session *s)
{
    int rc = 0;
    if (s->cli.io.fd >= 0)
        rc |= watch_room(s->loop, &s->cli_watch, &s->cli);
    /* before it is connected libpq's own wait owns the upstream registration */
    if (s->up_connected && s->up.io.fd >= 0 && s->up_watched_fd == s->up.io.fd)
        rc |= watch_room(s->loop, &s->up_watch, &s->up);
    return rc;
}

static void drive(struct session *s)
{
    int64_t now = loop_now_ms(s->loop);
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
        session_closing_step(s, now);
    if (s->phase != PH_DONE && watch_rooms(s)) {
        session_end_with(s, SE_INTERNAL); /* without the edge it waits for it would hang */
        session_schedule(s);
    }
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
    session_timers(s, loop_now_ms(s->loop));
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

struct session *session_new(const struct session_env *env, struct loop *loop, int fd,
                            const struct session_accept *acc)
{
    const struct sockaddr_storage *peer = &acc->peer;
    struct session *s = calloc(1, sizeof(*s));
    if (s)
        s->su = malloc(sizeof(*s->su)); /* not calloc: only the bytes read get touched */
    if (!s || !s->su) {
        struct session_accept left = *acc;
        startup_gate_leave(env->admission, &left);
        atomic_fetch_sub(&env->counts->live, 1);
        free(s);
        close(fd);
        return NULL;
    }
    int one = 1;
    if (peer->ss_family != AF_UNIX)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    startup_init(s->su);
    s->env = env;
    s->acc = *acc;
    s->client = acc->peer;
    s->loop = loop;
    s->task.fn = on_task;
    s->timer.fn = on_timer;
    s->waiter.task = &s->task;
    s->cli_watch.fn = on_cli_event;
    s->up_watch.fn = on_up_event;
    s->up_watched_fd = -1;
    s->id = atomic_fetch_add(env->next_id, 1) + 1;
    s->rt = runtimes_acquire(env->runtimes);
    s->prof = &s->rt->base;
    s->cfg = &s->rt->cfg;
    s->auth_method = "trust";
    s->metrics_user = -1; /* "other" until the user is known */
    s->rt_gen = s->rt->gen;
    s->phase = PH_STARTUP;
    s->relay.tx = 'I';
    conn_init(&s->cli, CONN_CLIENT, fd, SESSION_CLIENT_BUF, env->client_mem);
    conn_init(&s->up, CONN_UPSTREAM, -1, SESSION_UPSTREAM_BUF, NULL);
    s->cli_open = true;
    int64_t limit = (int64_t)s->cfg->startup_timeout_ms;
    if (acc->proxy_pending && (limit == 0 || limit > STARTUP_GATE_HEADER_TIMEOUT_MS))
        limit = STARTUP_GATE_HEADER_TIMEOUT_MS;
    s->deadline_ms = netio_now_ms() + limit;
    startup_gate_format_peer(peer, s->addr, sizeof(s->addr));
    if (loop_watch_add(loop, &s->cli_watch, fd, SESSION_WATCH_EVENTS)) {
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
    if (s->counted_open) {
        metrics_session_close();
        metrics_user_session(s->metrics_user, -1);
    }
    if (s->user_count)
        atomic_fetch_sub(s->user_count, 1);
    session_auth_free(s);
    console_free(s);
    free(s->upstream_dsn);
    loop_task_cancel(s->loop, &s->task);
    loop_timer_cancel(s->loop, &s->timer);
    loop_waiter_cancel(s->loop, &s->waiter);
    session_audit_final(s);
    startup_gate_leave(env->admission, &s->acc);
    cancel_ticket_release(s->cancel_ticket);
    if (s->cancel_registered)
        cancel_unregister(env->cancels, s->upc.pid, s->secret);
    session_close_upstream(s);
    session_close_client(s);
    if (s->su) {
        startup_release(s->su);
        free(s->su);
    }
    session_policy_release(s);
    guard_cache_free(s->gcache);
    relay_release(&s->relay);
    conn_release(&s->cli);
    conn_release(&s->up);
    runtime_release(s->rt);
    if (s->admitted)
        atomic_fetch_sub(&env->counts->admitted, 1);
    atomic_fetch_sub(&env->counts->live, 1);
    free(s);
}
