#include "server.h"
#include "audit.h"
#include "cancel.h"
#include "guard.h"
#include "http.h"
#include "log.h"
#include "netio.h"
#include "session.h"
#include "tls.h"
#include "worker.h"

#include <errno.h>
#include <libpq-fe.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_LISTENERS 8

struct runtime *server_runtime_new(struct config *cfg, char *err, size_t errlen)
{
    struct runtime *rt = calloc(1, sizeof(*rt));
    if (!rt) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    rt->cfg = *cfg;
    memset(cfg, 0, sizeof(*cfg)); /* ownership moved */
    atomic_init(&rt->refs, 1);
    struct guard_rules rules;
    config_guard_rules(&rt->cfg, &rules);
    rt->policy = guard_policy_compile(&rules, err, errlen);
    if (!rt->policy)
        goto fail;
    if (rt->cfg.tls_cert) {
        rt->tls = tls_ctx_new(&rt->cfg, err, errlen);
        if (!rt->tls)
            goto fail;
    }
    if (rt->cfg.audit_log) {
        rt->audit = audit_open(rt->cfg.audit_log, rt->cfg.audit_redact,
                               (size_t)rt->cfg.max_parse_size, err, errlen);
        if (!rt->audit)
            goto fail;
    }
    return rt;
fail:
    server_runtime_release(rt);
    return NULL;
}

void server_runtime_release(struct runtime *rt)
{
    if (!rt || atomic_fetch_sub(&rt->refs, 1) != 1)
        return;
    guard_policy_free(rt->policy);
    tls_ctx_free(rt->tls);
    audit_close(rt->audit);
    config_free(&rt->cfg);
    free(rt);
}

struct runtime *server_runtime_acquire(struct server *srv)
{
    pthread_mutex_lock(&srv->rt_mu);
    struct runtime *rt = srv->rt;
    atomic_fetch_add(&rt->refs, 1);
    pthread_mutex_unlock(&srv->rt_mu);
    return rt;
}

static int open_listeners(const struct config *cfg, int *fds, int *nfds, char *err, size_t errlen)
{
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res = NULL;
    char port[16];
    snprintf(port, sizeof(port), "%d", cfg->listen_port);
    int rc = getaddrinfo(cfg->listen_host, port, &hints, &res);
    if (rc) {
        snprintf(err, errlen, "cannot resolve --listen host '%s': %s", cfg->listen_host,
                 gai_strerror(rc));
        return -1;
    }
    *nfds = 0;
    int last_errno = 0;
    for (struct addrinfo *ai = res; ai && *nfds < MAX_LISTENERS; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (ai->ai_family == AF_INET6)
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) || listen(fd, 1024)) {
            last_errno = errno;
            close(fd);
            continue;
        }
        fds[(*nfds)++] = fd;
    }
    freeaddrinfo(res);
    if (*nfds == 0) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s", cfg->listen_host, cfg->listen_port,
                 strerror(last_errno ? last_errno : EADDRNOTAVAIL));
        return -1;
    }
    return 0;
}

static void start_shutdown(struct server *srv, int *lfds, int *nl, bool immediate)
{
    int cur = atomic_load(&srv->shutting_down);
    if (cur == SERVER_RUNNING) {
        for (int i = 0; i < *nl; i++)
            close(lfds[i]);
        *nl = 0;
    }
    if (immediate || cur != SERVER_RUNNING) {
        atomic_store(&srv->shutdown_deadline_ms, netio_now_ms());
        atomic_store(&srv->shutting_down, SERVER_IMMEDIATE);
        LOG_WARN(0, "shutdown_immediate", "closing every session now");
    } else {
        const struct config *cfg = &srv->rt->cfg;
        atomic_store(&srv->shutdown_deadline_ms,
                     netio_now_ms() + (int64_t)cfg->shutdown_timeout_ms);
        atomic_store(&srv->shutting_down, SERVER_DRAINING);
        LOG_INFO(0, "shutdown_started", "draining %d sessions for up to %llums",
                 atomic_load(&srv->admitted), (unsigned long long)cfg->shutdown_timeout_ms);
    }
    uint64_t one = 1;
    ssize_t w = write(srv->shutdown_efd, &one, sizeof(one));
    (void)w;
}

/* Parser stacks were sized from --max-parse-size at start: a reload keeps it. */
static void keep_start_only_options(struct server *srv, struct config *cfg)
{
    pthread_mutex_lock(&srv->rt_mu);
    uint64_t running = srv->rt->cfg.max_parse_size;
    pthread_mutex_unlock(&srv->rt_mu);
    if (cfg->max_parse_size != running)
        LOG_WARN(0, "reload_partial", "--max-parse-size changes need a restart; still %llu bytes",
                 (unsigned long long)running);
    cfg->max_parse_size = running;
}

static void reload(struct server *srv)
{
    struct config cfg;
    char err[512];
    if (config_reload(&cfg, srv->argc, srv->argv, NULL, err, sizeof(err)) != CONFIG_OK) {
        LOG_ERROR(0, "reload_failed", "keeping the running configuration: %s", err);
        return;
    }
    keep_start_only_options(srv, &cfg);
    struct runtime *rt = server_runtime_new(&cfg, err, sizeof(err));
    if (!rt) {
        config_free(&cfg);
        LOG_ERROR(0, "reload_failed", "keeping the running configuration: %s", err);
        return;
    }
    pthread_mutex_lock(&srv->rt_mu);
    struct runtime *old = srv->rt;
    if (strcmp(old->cfg.listen_host, rt->cfg.listen_host) ||
        old->cfg.listen_port != rt->cfg.listen_port)
        LOG_WARN(0, "reload_partial", "--listen changes need a restart; still listening on %s:%d",
                 old->cfg.listen_host, old->cfg.listen_port);
    rt->gen = old->gen + 1;
    cancel_set_peers(srv->cancels, rt->cfg.peer_id, rt->cfg.peers, rt->cfg.npeers);
    srv->rt = rt;
    atomic_store(&srv->rt_gen, rt->gen);
    pthread_mutex_unlock(&srv->rt_mu);
    log_setup(rt->cfg.log_level, rt->cfg.log_format == CONFIG_LOG_JSON);
    server_runtime_release(old);
    LOG_INFO(0, "reloaded", "configuration generation %u in force", rt->gen);
}

static int health(void *arg)
{
    struct server *srv = arg;
    if (atomic_load(&srv->shutting_down) != SERVER_RUNNING)
        return 0;
    struct runtime *rt = server_runtime_acquire(srv);
    const char *keys[] = {"dbname", "connect_timeout", NULL};
    const char *vals[] = {rt->cfg.upstream_dsn, "3", NULL};
    int ok = PQpingParams(keys, vals, 1) == PQPING_OK;
    server_runtime_release(rt);
    return ok;
}

static void accept_all(struct server *srv, int lfd)
{
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage peer;
        socklen_t plen = sizeof(peer);
        int fd = accept4(lfd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                LOG_WARN(0, "accept_failed", "%s", strerror(errno));
            return;
        }
        /* Threads not yet admitted (startup in progress) are bounded too, so a flood of
         * silent connections cannot exhaust the process. */
        int cap = srv->rt->cfg.max_connections * 2 + 1000;
        if (atomic_load(&srv->live) >= cap) {
            LOG_WARN(0, "connection_dropped", "too many connections in startup (%d)", cap);
            close(fd);
            continue;
        }
        int rc = session_spawn(srv, fd, &peer);
        if (rc)
            LOG_ERROR(0, "session_spawn_failed", "%s", strerror(-rc));
    }
}

static int wait_sessions(struct server *srv)
{
    /* sessions end on their own once drained; bound the wait in case one is stuck in I/O */
    for (;;) {
        pthread_mutex_lock(&srv->mu);
        int n = atomic_load(&srv->live);
        if (n > 0) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 100 * 1000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&srv->all_gone, &srv->mu, &ts);
        }
        n = atomic_load(&srv->live);
        pthread_mutex_unlock(&srv->mu);
        if (n == 0)
            return 0;
        if (netio_now_ms() > atomic_load(&srv->shutdown_deadline_ms) + 5000) {
            LOG_WARN(0, "shutdown_forced", "%d sessions did not close in time", n);
            return 0;
        }
    }
}

/* Each session needs two descriptors (client, upstream) plus libpq's during connect: raise the
 * soft limit as far as the hard limit allows, and say so if that is not enough. */
static void raise_fd_limit(const struct config *cfg)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t want = (rlim_t)cfg->max_connections * 2 + 1200;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur < want)
        LOG_WARN(0, "fd_limit",
                 "open-file limit %llu is below the %llu that --max-connections %d "
                 "needs; raise it (ulimit -n / LimitNOFILE=)",
                 (unsigned long long)rl.rlim_cur, (unsigned long long)want, cfg->max_connections);
}

static int signal_setup(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGQUIT);
    /* blocked in every thread; only the main loop reads them, through a signalfd */
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    return signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}

/* Returns false when the loop should stop accepting and drain. */
static void handle_signals(struct server *srv, int sfd, int *lfds, int *nl)
{
    struct signalfd_siginfo si;
    while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        switch (si.ssi_signo) {
        case SIGHUP:
            reload(srv);
            break;
        case SIGQUIT:
            start_shutdown(srv, lfds, nl, true);
            break;
        default:
            start_shutdown(srv, lfds, nl, false);
            break;
        }
    }
}

int server_run(struct config *cfg, int argc, char **argv)
{
    struct server srv = {.argc = argc, .argv = argv};
    int lfds[MAX_LISTENERS], nl = 0, exit_code = 1, sfd = -1;
    struct http_server *http = NULL;
    char err[512];
    log_setup(cfg->log_level, cfg->log_format == CONFIG_LOG_JSON);
    pthread_mutex_init(&srv.rt_mu, NULL);
    pthread_mutex_init(&srv.mu, NULL);
    pthread_cond_init(&srv.all_gone, NULL);
    sfd = signal_setup(); /* before any thread starts, so all inherit the blocked mask */
    srv.shutdown_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    srv.cancels = cancel_table_new();
    srv.rt = server_runtime_new(cfg, err, sizeof(err));
    if (!srv.rt || srv.shutdown_efd < 0 || !srv.cancels || sfd < 0) {
        fprintf(stderr, "pgwire-proxy: %s\n", srv.rt ? strerror(errno) : err);
        if (!srv.rt)
            exit_code = 2; /* TLS files, audit log path: the configuration is unusable */
        goto out;
    }
    const struct config *c = &srv.rt->cfg;
    raise_fd_limit(c);
    cancel_set_peers(srv.cancels, c->peer_id, c->peers, c->npeers);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    /* Default: one worker per two CPUs. The proxy usually shares the machine with clients or
     * PostgreSQL, and fewer loops batch more events per wake-up: on 2 CPUs one worker costs
     * ~20% less CPU per query than two (bench/RESULTS.md). */
    int nw = c->workers > 0 ? c->workers : (ncpu >= 4 ? (int)(ncpu / 2) : 1);
    int rcw = worker_pool_start(&srv, nw);
    if (rcw) {
        fprintf(stderr, "pgwire-proxy: cannot start workers: %s\n", strerror(-rcw));
        goto out;
    }
    if (open_listeners(c, lfds, &nl, err, sizeof(err))) {
        fprintf(stderr, "pgwire-proxy: %s\n", err);
        goto out;
    }
    if (c->metrics_listen) {
        char host[256];
        int port = 0;
        config_parse_hostport(c->metrics_listen, host, sizeof(host), &port);
        http = http_start(host, port, health, &srv, err, sizeof(err));
        if (!http) {
            fprintf(stderr, "pgwire-proxy: %s\n", err);
            goto out;
        }
    }
    char *dsn = config_redact_dsn(c->upstream_dsn);
    LOG_INFO(0, "listening", "on %s:%d, upstream '%s', max %d connections", c->listen_host,
             c->listen_port, dsn ? dsn : "?", c->max_connections);
    free(dsn);
    while (atomic_load(&srv.shutting_down) == SERVER_RUNNING) {
        struct pollfd p[MAX_LISTENERS + 1];
        p[0] = (struct pollfd){.fd = sfd, .events = POLLIN};
        for (int i = 0; i < nl; i++)
            p[i + 1] = (struct pollfd){.fd = lfds[i], .events = POLLIN};
        int rc = poll(p, (nfds_t)nl + 1, -1);
        if (rc < 0 && errno != EINTR)
            break;
        if (p[0].revents & POLLIN)
            handle_signals(&srv, sfd, lfds, &nl);
        for (int i = 0; i < nl; i++)
            if (p[i + 1].revents & POLLIN)
                accept_all(&srv, lfds[i]);
    }
    /* draining: keep reading signals (a second one means now) until sessions are gone */
    while (atomic_load(&srv.live) > 0) {
        struct pollfd p = {.fd = sfd, .events = POLLIN};
        if (poll(&p, 1, 100) > 0)
            handle_signals(&srv, sfd, lfds, &nl);
        if (atomic_load(&srv.shutting_down) == SERVER_IMMEDIATE ||
            netio_now_ms() > atomic_load(&srv.shutdown_deadline_ms)) {
            wait_sessions(&srv);
            break;
        }
    }
    LOG_INFO(0, "shutdown_complete", "bye");
    exit_code = 0;
out:
    if (srv.nworkers) {
        if (atomic_load(&srv.shutting_down) == SERVER_RUNNING)
            start_shutdown(&srv, lfds, &nl, true);
        if (atomic_load(&srv.live) == 0) {
            /* cancel jobs write to the workers' eventfds: finish them before those close */
            cancel_table_free(srv.cancels);
            srv.cancels = NULL;
            worker_pool_join(&srv);
        }
    }
    http_stop(http);
    for (int i = 0; i < nl; i++)
        close(lfds[i]);
    if (sfd >= 0)
        close(sfd);
    if (atomic_load(&srv.live) == 0) {
        server_runtime_release(srv.rt);
        cancel_table_free(srv.cancels);
    }
    return exit_code;
}
