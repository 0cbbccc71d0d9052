/* The process: configuration generations, listeners and accept (on the main thread, with
 * signals through a signalfd), reload, and shutdown orchestration. */
#include "server.h"
#include "admin.h"
#include "admission.h"
#include "audit.h"
#include "cancel.h"
#include "guard_pool.h"
#include "conn.h"
#include "health.h"
#include "http.h"
#include "listen.h"
#include "log.h"
#include "metrics.h"
#include "netio.h"
#include "reaper.h"
#include "runtime.h"
#include "session.h"
#include "startup_gate.h"
#include "user_limits.h"
#include "worker.h"

#include <errno.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#define ACCEPT_BATCH       64
#define ACCEPT_BACKOFF_MIN 50   /* ms without accepting after EMFILE/ENFILE ... */
#define ACCEPT_BACKOFF_MAX 1000 /* ... doubling up to this */
#define ACCEPT_LOG_EVERY   10000

struct server {
    int argc;
    char **argv;
    struct runtimes runtimes;
    struct cancel_table *cancels;
    struct admission *admission; /* connections in startup, per client address */
    struct health *health; /* the upstream probe behind /healthz; NULL without --metrics-listen */
    struct reaper *reaper;
    struct guard_pool *parsers;
    struct user_limits *user_limits;
    struct conn_mem client_mem;
    struct session_counts counts;
    struct admin_hub admin; /* the console's questions to the workers */
    struct shutdown_state shutdown;
    atomic_ullong next_id;
    int shutdown_efd;
    struct worker_pool *workers;
    int lfds[LISTEN_MAX_TCP + 1];
    int nl;
    struct listen_unix unix_sock;
    int64_t accept_paused_until, accept_backoff_ms, accept_logged_ms;
    unsigned long accept_failures;
};

static void apply_limits(struct server *srv, const struct config *c)
{
    atomic_store(&srv->client_mem.limit, (size_t)c->max_client_memory);
}

static void close_listeners(struct server *srv)
{
    for (int i = 0; i < srv->nl; i++)
        if (srv->lfds[i] != srv->unix_sock.fd)
            close(srv->lfds[i]);
    srv->nl = 0;
    listen_unix_close(&srv->unix_sock);
}

static void start_shutdown(struct server *srv, bool immediate)
{
    int cur = atomic_load(&srv->shutdown.mode);
    if (cur == SHUTDOWN_NONE)
        close_listeners(srv);
    if (immediate || cur != SHUTDOWN_NONE) {
        atomic_store(&srv->shutdown.deadline_ms, netio_now_ms());
        atomic_store(&srv->shutdown.mode, SHUTDOWN_NOW);
        LOG_WARN(0, "shutdown_immediate", "closing every session now");
    } else {
        struct runtime *rt = runtimes_acquire(&srv->runtimes);
        uint64_t grace = rt->cfg.shutdown_timeout_ms;
        runtime_release(rt);
        atomic_store(&srv->shutdown.deadline_ms, netio_now_ms() + (int64_t)grace);
        atomic_store(&srv->shutdown.mode, SHUTDOWN_DRAIN);
        LOG_INFO(0, "shutdown_started", "draining %d sessions for up to %llums",
                 atomic_load(&srv->counts.admitted), (unsigned long long)grace);
    }
    uint64_t one = 1;
    ssize_t w = write(srv->shutdown_efd, &one, sizeof(one));
    (void)w;
}

/* Parser stacks were sized from --max-parse-size at start: a reload keeps it. */
static void keep_start_only_options(struct server *srv, struct config *cfg)
{
    struct runtime *rt = runtimes_acquire(&srv->runtimes);
    uint64_t running = rt->cfg.max_parse_size;
    runtime_release(rt);
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
    struct runtime *rt = runtime_new(&cfg, err, sizeof(err));
    if (!rt) {
        config_free(&cfg);
        LOG_ERROR(0, "reload_failed", "keeping the running configuration: %s", err);
        return;
    }
    struct runtime *cur = runtimes_acquire(&srv->runtimes);
    if (strcmp(cur->cfg.listen_host, rt->cfg.listen_host) ||
        cur->cfg.listen_port != rt->cfg.listen_port)
        LOG_WARN(0, "reload_partial", "--listen changes need a restart; still listening on %s:%d",
                 cur->cfg.listen_host, cur->cfg.listen_port);
    runtime_release(cur);
    cancel_apply_config(srv->cancels, &rt->cfg);
    if (srv->health)
        health_set_upstream(srv->health, rt->cfg.upstream_dsn);
    apply_limits(srv, &rt->cfg);
    log_setup(rt->cfg.log_level, rt->cfg.log_format == CONFIG_LOG_JSON);
    if (rt->auth_warning[0])
        LOG_WARN(0, "auth_file", "%s", rt->auth_warning);
    unsigned gen;
    struct runtime *old = runtimes_install(&srv->runtimes, rt);
    gen = rt->gen;
    runtime_release(old);
    LOG_INFO(0, "reloaded", "configuration generation %u in force", gen);
}

/* /healthz: 503 while shutting down (so a load balancer stops sending sessions), otherwise the
 * shared upstream probe's last answer (health.c); never a PostgreSQL round trip per check. */
static int health(void *arg, char *reason, size_t len)
{
    struct server *srv = arg;
    if (atomic_load(&srv->shutdown.mode) != SHUTDOWN_NONE) {
        snprintf(reason, len, "shutting down");
        return 0;
    }
    return health_check(srv->health, reason, len);
}

/* At the descriptor limit accept fails at once and would be retried at once: the listeners
 * rest a while instead (existing sessions go on), and the failure is logged now and then. */
static void accept_failed(struct server *srv, int err)
{
    int64_t now = netio_now_ms();
    srv->accept_failures++;
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        srv->accept_backoff_ms =
            srv->accept_backoff_ms ? srv->accept_backoff_ms * 2 : ACCEPT_BACKOFF_MIN;
        if (srv->accept_backoff_ms > ACCEPT_BACKOFF_MAX)
            srv->accept_backoff_ms = ACCEPT_BACKOFF_MAX;
        srv->accept_paused_until = now + srv->accept_backoff_ms;
    }
    if (!srv->accept_logged_ms || now - srv->accept_logged_ms >= ACCEPT_LOG_EVERY) {
        LOG_WARN(0, "accept_failed", "%s (%lu failures; not accepting for %lldms)", strerror(err),
                 srv->accept_failures, (long long)srv->accept_backoff_ms);
        srv->accept_logged_ms = now;
        srv->accept_failures = 0;
    }
}

static void accept_all(struct server *srv, int lfd)
{
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        struct sockaddr_storage peer;
        int fd = listen_accept(lfd, &peer);
        if (fd < 0) {
            if (fd != -EAGAIN && fd != -EWOULDBLOCK && fd != -EINTR && fd != -ECONNABORTED)
                accept_failed(srv, -fd);
            return;
        }
        srv->accept_backoff_ms = 0;
        struct runtime *rt = runtimes_acquire(&srv->runtimes);
        const struct config *cfg = &rt->cfg;
        /* a last bound on every session, admitted or not, that keeps the descriptors in reach;
         * connections in startup are capped per address and in all by the gate */
        int cap = cfg->max_connections * 2 + cfg->max_startup_connections + 64;
        struct session_accept acc = {.peer = peer};
        if (atomic_load(&srv->counts.live) >= cap) {
            LOG_WARN(0, "connection_dropped", "too many connections open (%d)", cap);
            close(fd);
        } else if (startup_gate_accept(srv->admission, cfg, fd, &acc)) {
            worker_pool_assign(srv->workers, fd, &acc);
        }
        runtime_release(rt);
    }
}

/* Each session needs two descriptors (client, upstream) plus libpq's during connect: raise the
 * soft limit as far as the hard limit allows, and say so if that is not enough. */
static void raise_fd_limit(const struct config *cfg)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t want = (rlim_t)cfg->max_connections * 2 + (rlim_t)cfg->max_startup_connections + 200;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur < want)
        LOG_WARN(0, "fd_limit",
                 "open-file limit %llu is below the %llu that --max-connections %d and "
                 "--max-startup-connections %d need; raise it (ulimit -n / LimitNOFILE=)",
                 (unsigned long long)rl.rlim_cur, (unsigned long long)want, cfg->max_connections,
                 cfg->max_startup_connections);
}

/* A core dump holds the DSN and its password: none unless the operator asks for them. */
static void protect_secrets(const struct config *cfg)
{
    if (!cfg->allow_core_dumps && prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
        LOG_WARN(0, "not_protected", "cannot make the process non-dumpable: %s", strerror(errno));
}

static struct admission *admission_start(void)
{
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof(seed), 0) != (ssize_t)sizeof(seed))
        seed = (uint64_t)netio_now_us() ^ (uint64_t)getpid() << 32;
    return admission_new(seed);
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

/* What a SIGTERM, SIGINT or SIGQUIT means once the main loop no longer reads the signalfd:
 * sessions are closed or being closed, so "now" is all that is left to do. */
static void exit_at_once(int sig)
{
    (void)sig;
    _exit(0);
}

/* Called where the main loop stops reading the signalfd: from then on a SIGTERM, SIGINT or
 * SIGQUIT ends the process at once, so no wait of the teardown (a cancel inside libpq, the
 * sessions' last writes) can make a repeated signal go unheard. Signals already queued were
 * sent before this point and have had their effect (the shutdown is under way). */
static void signals_end_process(int sfd)
{
    struct signalfd_siginfo si;
    while (sfd >= 0 && read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
        ;
    struct sigaction sa = {.sa_handler = exit_at_once};
    sigemptyset(&sa.sa_mask);
    sigset_t set;
    sigemptyset(&set);
    int sigs[] = {SIGTERM, SIGINT, SIGQUIT};
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        sigaction(sigs[i], &sa, NULL);
        sigaddset(&set, sigs[i]);
    }
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

static void handle_signals(struct server *srv, int sfd)
{
    struct signalfd_siginfo si;
    while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (si.ssi_signo == SIGHUP)
            reload(srv);
        else
            start_shutdown(srv, si.ssi_signo == SIGQUIT);
    }
}

static int open_listeners(struct server *srv, const struct config *c, char *err, size_t errlen)
{
    int n =
        listen_tcp(c->listen_host, c->listen_port, 1024, srv->lfds, LISTEN_MAX_TCP, err, errlen);
    if (n < 0)
        return -1;
    srv->nl = n;
    if (c->unix_socket_dir) {
        if (listen_unix(c->unix_socket_dir, c->listen_port, (unsigned)c->unix_socket_mode, 1024,
                        &srv->unix_sock, err, errlen))
            return -1;
        srv->lfds[srv->nl++] = srv->unix_sock.fd;
    }
    return 0;
}

/* Accepts and reads signals until shutdown starts, then waits for the sessions to end (a
 * second signal makes it immediate). */
static void main_loop(struct server *srv, int sfd)
{
    while (atomic_load(&srv->shutdown.mode) == SHUTDOWN_NONE) {
        struct pollfd p[LISTEN_MAX_TCP + 2];
        int64_t now = netio_now_ms();
        bool paused = now < srv->accept_paused_until;
        p[0] = (struct pollfd){.fd = sfd, .events = POLLIN};
        for (int i = 0; i < srv->nl; i++)
            p[i + 1] = (struct pollfd){.fd = srv->lfds[i], .events = paused ? 0 : POLLIN};
        int rc = poll(p, (nfds_t)srv->nl + 1, paused ? (int)(srv->accept_paused_until - now) : -1);
        if (rc < 0 && errno != EINTR)
            break;
        if (p[0].revents & POLLIN)
            handle_signals(srv, sfd);
        for (int i = 0; i < srv->nl && atomic_load(&srv->shutdown.mode) == SHUTDOWN_NONE; i++)
            if (p[i + 1].revents & POLLIN)
                accept_all(srv, srv->lfds[i]);
    }
    while (atomic_load(&srv->counts.live) > 0) {
        struct pollfd p = {.fd = sfd, .events = POLLIN};
        if (poll(&p, 1, 100) > 0 && sfd >= 0)
            handle_signals(srv, sfd);
        int64_t deadline = atomic_load(&srv->shutdown.deadline_ms);
        if (atomic_load(&srv->shutdown.mode) == SHUTDOWN_NOW) {
            signals_end_process(sfd); /* sessions close at once; one more signal exits now */
            sfd = -1;
        }
        if (netio_now_ms() > deadline + 15000) {
            LOG_WARN(0, "shutdown_forced", "%d sessions did not close in time",
                     atomic_load(&srv->counts.live));
            break;
        }
    }
}

/* Closed audit logs write what they still hold before the process exits (bounded). */
static void audit_drain_at_exit(void)
{
    size_t left = audit_wait_closed(AUDIT_CLOSE_WAIT_MS);
    if (left)
        LOG_ERROR(0, "audit_unwritten", "%zu audit records not written before exit", left);
}

int server_run(struct config *cfg, int argc, char **argv)
{
    struct server srv = {.argc = argc, .argv = argv, .shutdown_efd = -1};
    int exit_code = 1, sfd = -1;
    struct http_server *http = NULL;
    char err[512];
    srv.unix_sock.fd = -1;
    log_setup(cfg->log_level, cfg->log_format == CONFIG_LOG_JSON);
    protect_secrets(cfg);
    /* large buffers are mapped directly and given back when freed, instead of staying in the
     * heap once glibc's adaptive threshold has grown past them */
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);
    sfd = signal_setup(); /* before any thread starts, so all inherit the blocked mask */
    srv.shutdown_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    srv.cancels = cancel_table_new();
    srv.reaper = reaper_new();
    srv.admission = admission_start();
    srv.user_limits = user_limits_new();
    struct runtime *rt = runtime_new(cfg, err, sizeof(err));
    if (!rt || srv.shutdown_efd < 0 || !srv.cancels || !srv.reaper || !srv.admission ||
        !srv.user_limits || sfd < 0) {
        fprintf(stderr, "pgwire-proxy: %s\n", rt ? strerror(errno) : err);
        if (!rt)
            exit_code = 2; /* TLS files, audit log path: the configuration is unusable */
        goto out;
    }
    rt->gen = 1;
    runtimes_init(&srv.runtimes, rt);
    if (rt->auth_warning[0])
        LOG_WARN(0, "auth_file", "%s", rt->auth_warning);
    const struct config *c = &rt->cfg;
    apply_limits(&srv, c);
    raise_fd_limit(c);
    cancel_apply_config(srv.cancels, c);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    /* Default: one worker per two CPUs. The proxy usually shares the machine with clients or
     * PostgreSQL, and fewer loops batch more events per wake-up: on 2 CPUs one worker costs
     * ~20% less CPU per query than two (bench/RESULTS.md). */
    int nw = c->workers > 0 ? c->workers : (ncpu >= 4 ? (int)(ncpu / 2) : 1);
    /* the parser threads take the large texts: parsing is CPU work, one thread per CPU */
    srv.parsers = guard_pool_new(ncpu < 1   ? 1
                                 : ncpu > 8 ? 8
                                            : (int)ncpu,
                                 (size_t)c->max_parse_size, err, sizeof(err));
    if (!srv.parsers) {
        fprintf(stderr, "pgwire-proxy: %s\n", err);
        goto out;
    }
    struct session_env env = {.runtimes = &srv.runtimes,
                              .user_limits = srv.user_limits,
                              .cancels = srv.cancels,
                              .client_mem = &srv.client_mem,
                              .reaper = srv.reaper,
                              .parsers = srv.parsers,
                              .counts = &srv.counts,
                              .admission = srv.admission,
                              .shutdown = &srv.shutdown,
                              .next_id = &srv.next_id,
                              .admin = &srv.admin};
    /* a worker parses only texts up to SESSION_INLINE_PARSE itself */
    srv.workers =
        worker_pool_start(nw, &env, srv.shutdown_efd, guard_parse_stack_bytes(SESSION_INLINE_PARSE),
                          err, sizeof(err));
    if (!srv.workers) {
        fprintf(stderr, "pgwire-proxy: %s\n", err);
        goto out;
    }
    if (c->metrics_listen) {
        char host[256];
        int port = 0;
        config_parse_hostport(c->metrics_listen, host, sizeof(host), &port);
        srv.health = health_start();
        if (srv.health)
            health_set_upstream(srv.health, c->upstream_dsn);
        snprintf(err, sizeof(err), "cannot start the health probe thread");
        metrics_set_extra(admin_statement_metrics, &srv.admin);
        http = srv.health ? http_start(host, port, health, &srv, err, sizeof(err)) : NULL;
        if (!http) {
            fprintf(stderr, "pgwire-proxy: %s\n", err);
            goto out;
        }
    }
    /* The SQL port opens last: whoever sees it listening (a supervisor, a test, a load
     * balancer) can already scrape /metrics and ask /health. */
    if (open_listeners(&srv, c, err, sizeof(err))) {
        fprintf(stderr, "pgwire-proxy: %s\n", err);
        goto out;
    }
    char *dsn = config_redact_dsn(c->upstream_dsn);
    LOG_INFO(0, "listening", "on %s:%d%s%s, upstream '%s', max %d connections", c->listen_host,
             c->listen_port, srv.unix_sock.fd >= 0 ? " and " : "",
             srv.unix_sock.fd >= 0 ? srv.unix_sock.path : "", dsn ? dsn : "?", c->max_connections);
    free(dsn);
    main_loop(&srv, sfd);
    LOG_INFO(0, "shutdown_complete", "bye");
    exit_code = 0;
out:
    signals_end_process(sfd);
    /* the metrics thread asks the workers: it stops before they go */
    http_stop(http);
    http = NULL;
    metrics_set_extra(NULL, NULL);
    if (srv.workers) {
        if (atomic_load(&srv.shutdown.mode) == SHUTDOWN_NONE)
            start_shutdown(&srv, true);
        if (atomic_load(&srv.counts.live) == 0) {
            /* cancel jobs write to the workers' eventfds: finish them before those close */
            cancel_table_free(srv.cancels);
            srv.cancels = NULL;
            worker_pool_join(srv.workers);
            srv.workers = NULL;
        }
    }
    http_stop(http);
    health_stop(srv.health);
    close_listeners(&srv);
    if (sfd >= 0)
        close(sfd);
    if (!srv.workers) {
        guard_pool_free(srv.parsers); /* no session holds a job now */
        reaper_free(srv.reaper);
        admission_free(srv.admission);
        user_limits_free(srv.user_limits);
        if (srv.runtimes.cur)
            runtime_release(srv.runtimes.cur);
        cancel_table_free(srv.cancels);
    }
    audit_drain_at_exit();
    return exit_code;
}
