/* The console session: who may open it, its greeting (no upstream: the values a client needs
 * to be content, a key that matches no session), and its protocol: complete messages, the
 * simple query protocol only, one command at a time, and no more reading while its answers
 * wait for the client. A malformed message ends it as it ends any session. */
#include "admin.h"
#include "config.h"
#include "console_int.h"
#include "log.h"
#include "session_int.h"
#include "startup_gate.h"
#include "wire.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OUT_HIGH_WATER (256 * 1024) /* answers queued for a client that does not read */

/* ---------- who may open it ---------- */

static enum session_end refuse(struct session *s, const char *code, const char *message,
                               const char *detail)
{
    LOG_INFO(s->id, "console_refused", "client=%s user=%s auth=%s code=%s %s", s->addr, s->user,
             s->auth_method, code, message);
    session_fatal(s, code, message, detail);
    return code[1] == '8' ? SE_AUTH_FAILED : SE_REJECTED;
}

static bool loopback(const struct sockaddr_storage *a)
{
    if (a->ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)a)->sin_addr.s_addr) >> 24) == 127;
    if (a->ss_family != AF_INET6)
        return false;
    const struct in6_addr *v6 = &((const struct sockaddr_in6 *)a)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(v6) || (IN6_IS_ADDR_V4MAPPED(v6) && v6->s6_addr[12] == 127);
}

static enum session_end not_admin(struct session *s)
{
    char msg[128];
    snprintf(msg, sizeof(msg), "user \"%s\" may not open the pgwire-proxy console", s->user);
    return refuse(s, "28000", msg, "The console is for the users in --admin-users.");
}

/* Under trust the name is only claimed: the Unix socket's peer credentials prove it (as a
 * PostgreSQL peer line would), or, with --admin-trust-loopback, loopback is taken on trust. */
static enum session_end claimed_name(struct session *s, const struct config *top)
{
    if (s->client.ss_family == AF_UNIX) {
        char os_user[256], why[160], msg[128];
        if (session_peer_user(s, os_user, sizeof(os_user), why, sizeof(why)) != 0 ||
            strcmp(os_user, s->user) != 0) {
            snprintf(msg, sizeof(msg), "Peer authentication failed for user \"%s\"", s->user);
            return refuse(s, "28000", msg, NULL);
        }
        s->auth_method = "peer";
        return config_is_admin(top, s->user) ? SE_NONE : not_admin(s);
    }
    if (top->admin_trust_loopback && loopback(&s->client))
        return config_is_admin(top, s->user) ? SE_NONE : not_admin(s);
    return refuse(s, "28000", "the pgwire-proxy console does not take a claimed user name here",
                  "Under --auth-type trust it takes the Unix socket (--unix-socket-dir), where "
                  "the OS user is checked, or loopback with --admin-trust-loopback.");
}

static enum session_end admit_console(struct session *s)
{
    const struct config *top = &s->rt->cfg;
    if (!top->nadmin_users)
        return refuse(s, "28000", "the pgwire-proxy console is off",
                      "--admin-users names no user who may open it.");
    enum session_end e = strcmp(s->auth_method, "trust") == 0 ? claimed_name(s, top)
                         : config_is_admin(top, s->user)      ? SE_NONE
                                                              : not_admin(s);
    if (e != SE_NONE)
        return e;
    struct admin_hub *h = s->env->admin;
    if (!h || atomic_fetch_add(&h->consoles, 1) >= CONSOLE_MAX_SESSIONS) {
        if (h)
            atomic_fetch_sub(&h->consoles, 1);
        return refuse(s, "53300", "too many pgwire-proxy console sessions", NULL);
    }
    return SE_NONE;
}

/* ---------- greeting ---------- */

static int greet(struct session *s)
{
    const char *const params[][2] = {
        {"server_version", "15.0 (pgwire-proxy console)"},
        {"server_encoding", "UTF8"},
        {"client_encoding", "UTF8"},
        {"DateStyle", "ISO, MDY"},
        {"IntervalStyle", "postgres"},
        {"TimeZone", "UTC"},
        {"integer_datetimes", "on"},
        {"standard_conforming_strings", "on"},
        {"is_superuser", "off"},
        {"default_transaction_read_only", "on"},
        {"in_hot_standby", "off"},
        {"application_name", s->app},
        {"session_authorization", s->user},
    };
    uint8_t buf[2048];
    struct wire_buf b;
    wire_buf_init(&b, buf, sizeof(buf));
    wire_build_auth_ok(&b);
    for (size_t i = 0; i < sizeof(params) / sizeof(params[0]); i++)
        wire_build_param_status(&b, params[i][0], params[i][1]);
    wire_build_backend_key(&b, 0, 0); /* pid 0 is no backend's: a cancel finds nothing */
    wire_build_rfq(&b, 'I');
    return b.overflow ? -ENOBUFS : conn_send(&s->cli, b.data, b.len);
}

enum session_end console_begin(struct session *s)
{
    enum session_end e = admit_console(s);
    if (e != SE_NONE)
        return e;
    s->console = calloc(1, sizeof(*s->console));
    if (!s->console) {
        atomic_fetch_sub(&s->env->admin->consoles, 1);
        return SE_INTERNAL;
    }
    startup_gate_leave(s->env->admission, &s->acc); /* out of startup: the console's own cap */
    startup_release(s->su);
    free(s->su);
    s->su = NULL;
    if (conn_reserve(&s->cli, SESSION_CLIENT_BUF))
        return SE_INTERNAL;
    if (greet(s))
        return SE_CLIENT_ERROR;
    s->phase = PH_CONSOLE;
    s->deadline_ms = 0;
    LOG_INFO(s->id, "console_start", "client=%s user=%s auth=%s application=%s", s->addr, s->user,
             s->auth_method, s->app);
    return SE_NONE;
}

void console_free(struct session *s)
{
    struct console *c = s->console;
    if (!c)
        return;
    admin_query_release(c->q);
    atomic_fetch_sub(&s->env->admin->consoles, 1);
    LOG_INFO(s->id, "console_end", "client=%s user=%s reason=%s", s->addr, s->user,
             session_end_name(s->end));
    free(c);
    s->console = NULL;
}

/* ---------- protocol ---------- */

static enum session_end send_out(struct session *s, struct console_out *o)
{
    /* empty while the workers' answers are awaited */
    int rc = o->failed ? -ENOMEM : o->len ? conn_send(&s->cli, o->buf, o->len) : 0;
    console_out_free(o);
    if (rc == -ENOMEM) {
        session_fatal(s, "53200", "out of memory building the console's answer", NULL);
        return SE_INTERNAL;
    }
    return rc ? SE_CLIENT_ERROR : SE_NONE;
}

static enum session_end protocol_fatal(struct session *s, const char *text)
{
    LOG_INFO(s->id, "protocol_error", "client=%s console: %s", s->addr, text);
    session_fatal(s, "08P01", text, NULL);
    return SE_PROTOCOL;
}

static void refuse_extended(struct session *s, struct console_out *o, bool rfq)
{
    console_out_error(o, "0A000",
                      rfq ? "function call protocol is not supported by the pgwire-proxy console"
                          : "extended query protocol is not supported by the pgwire-proxy console",
                      "The console speaks the simple query protocol only.",
                      "Use psql, or a driver's simple query mode.");
    if (rfq)
        console_out_rfq(o);
    else
        s->console->discard = true; /* as PostgreSQL after an error: until Sync */
}

/* One complete message. */
static enum session_end message(struct session *s, const uint8_t *msg, size_t total)
{
    struct console_out o = {0};
    char type = (char)msg[0];
    if (s->console->discard && type != 'S' && type != 'X')
        return SE_NONE;
    switch (type) {
    case 'Q':
        if (total < 6 || msg[total - 1] != 0 || memchr(msg + 5, 0, total - 6))
            return protocol_fatal(s, "invalid string in message");
        console_run(s, (const char *)msg + 5, total - 6, &o);
        break;
    case 'X':
        return SE_CLIENT_EXIT;
    case 'S':
        s->console->discard = false;
        console_out_rfq(&o);
        break;
    case 'F':
        refuse_extended(s, &o, true);
        break;
    case 'd':
    case 'c':
    case 'f':
        return SE_NONE; /* COPY messages outside COPY: ignored, as PostgreSQL does */
    default: {
        if (wire_is_ext_request(type)) {
            refuse_extended(s, &o, false);
            break;
        }
        char text[64];
        snprintf(text, sizeof(text), "invalid frontend message type %d", (unsigned char)type);
        return protocol_fatal(s, text);
    }
    }
    return send_out(s, &o);
}

/* Handles the complete messages in the buffer, one command at a time. */
static enum session_end process(struct session *s)
{
    struct conn *c = &s->cli;
    while (c->rlen > 0 && !s->console->q && conn_send_backlog(c) <= OUT_HIGH_WATER) {
        struct wire_hdr h;
        int rc = wire_read_hdr(c->rbuf, c->rlen, CONSOLE_MAX_MESSAGE + 4, &h);
        if (rc == WIRE_NEED_MORE)
            return SE_NONE;
        if (rc == WIRE_TOO_LONG)
            return protocol_fatal(s, "invalid message length: larger than the console's 64 kB");
        if (rc == WIRE_BAD_LENGTH)
            return protocol_fatal(s, "invalid message length");
        if (h.total > c->rlen) {
            int r = conn_reserve(c, h.total);
            if (r == -ENOBUFS) {
                session_fatal(s, "53200",
                              "out of memory: the proxy's buffers for client "
                              "messages are full",
                              "rule: max-client-memory (pgwire-proxy --max-client-memory)");
                return SE_GUARDRAIL;
            }
            return r ? SE_INTERNAL : SE_NONE;
        }
        enum session_end e = message(s, c->rbuf, h.total);
        conn_consume(c, h.total);
        if (e != SE_NONE)
            return e;
    }
    conn_shrink(c);
    return SE_NONE;
}

static enum session_end finish(struct session *s, bool timed_out)
{
    struct console_out o = {0};
    console_finish(s, timed_out, &o);
    return send_out(s, &o);
}

enum session_end console_step(struct session *s)
{
    struct console *c = s->console;
    if (conn_flush(&s->cli))
        return session_conn_end(s) != SE_NONE ? session_conn_end(s) : SE_CLIENT_ERROR;
    if (c->q && admin_query_finished(c->q)) {
        enum session_end e = finish(s, false);
        if (e != SE_NONE)
            return e;
    }
    for (int reads = 0; reads < 16; reads++) {
        enum session_end e = process(s);
        if (e != SE_NONE)
            return e;
        if (c->q) {
            loop_wait_wake(s->loop, &s->waiter); /* the answers wake the loop */
            return SE_NONE;
        }
        if (!s->cli.can_read || conn_send_backlog(&s->cli) > OUT_HIGH_WATER)
            return SE_NONE; /* a drained queue's EPOLLOUT brings the next turn */
        if (s->cli.rlen == s->cli.rcap)
            return SE_NONE; /* waiting for room it asked for */
        ssize_t n = conn_read(&s->cli);
        if (n == -EAGAIN)
            return SE_NONE;
        if (n <= 0)
            return n == 0 ? SE_CLIENT_EOF : SE_CLIENT_ERROR;
    }
    session_schedule(s);
    return SE_NONE;
}

int64_t console_deadline(const struct session *s)
{
    const struct console *c = s->console;
    int64_t t = c && c->q ? c->deadline_ms : 0;
    uint64_t wt = s->cfg->client_write_timeout_ms;
    if (wt && conn_send_pending(&s->cli)) {
        int64_t w = s->cli.last_write_ms + (int64_t)wt;
        t = !t || w < t ? w : t;
    }
    return t;
}

void console_timer(struct session *s, int64_t now)
{
    struct console *c = s->console;
    if (session_client_stalled(s, now))
        return;
    if (c && c->q && now >= c->deadline_ms && !admin_query_finished(c->q)) {
        enum session_end e = finish(s, true);
        if (e != SE_NONE)
            session_end_with(s, e);
    }
}
