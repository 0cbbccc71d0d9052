/*
 * idle_sessions — open N concurrent idle PostgreSQL sessions fast (non-blocking
 * libpq connects), measure a target process's memory before/after, and time
 * `select 1` on sessions while all of them are open.
 *
 * Part of the pgwire-proxy benchmark suite (bench/run.sh compiles it with
 * `cc -O2 ... -lpq`). Not a test: it prints measurements, it asserts nothing.
 *
 * usage: idle_sessions -d CONNINFO [-n SESSIONS] [-p PID] [-j IN_FLIGHT]
 *                      [-t TIMEOUT_S] [-k SAMPLES]
 *
 * Output on stdout, one `key=value` per line:
 *   opened, failed, open_seconds, rss_before_kib, rss_after_kib,
 *   kib_per_session, rss_after_queries_kib, select1_ms_median, select1_ms_max
 *   (first `select 1` on each sampled idle session), select1_again_ms_median (a second
 *   one on the same session)
 * (rss_* and kib_per_session only with -p). Exit status 0 when all N sessions
 * opened and every sampled `select 1` succeeded, 1 otherwise, 2 on usage errors.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

enum conn_state { ST_NEW, ST_CONNECTING, ST_OPEN, ST_FAILED };

struct slot {
    PGconn *conn;
    enum conn_state state;
    PostgresPollingStatusType want; /* what PQconnectPoll asked for last */
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* VmRSS of a process in KiB, or -1. */
static long rss_kib(long pid)
{
    char path[64];
    char line[256];
    long kib = -1;
    FILE *f;

    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    f = fopen(path, "r");
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kib = strtol(line + 6, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kib;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;
    return (x > y) - (x < y);
}

static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s -d CONNINFO [-n SESSIONS=1000] [-p PID] [-j IN_FLIGHT=100]\n"
            "          [-t TIMEOUT_S=120] [-k SAMPLES=21]\n",
            argv0);
}

int main(int argc, char **argv)
{
    const char *conninfo = NULL;
    long n = 1000;
    long pid = 0;
    long in_flight_max = 100;
    double timeout_s = 120.0;
    long samples = 21;
    int opt;

    while ((opt = getopt(argc, argv, "d:n:p:j:t:k:")) != -1) {
        switch (opt) {
        case 'd':
            conninfo = optarg;
            break;
        case 'n':
            n = strtol(optarg, NULL, 10);
            break;
        case 'p':
            pid = strtol(optarg, NULL, 10);
            break;
        case 'j':
            in_flight_max = strtol(optarg, NULL, 10);
            break;
        case 't':
            timeout_s = strtod(optarg, NULL);
            break;
        case 'k':
            samples = strtol(optarg, NULL, 10);
            break;
        default:
            usage(argv[0]);
            return 2;
        }
    }
    if (conninfo == NULL || n < 1 || n > 100000 || in_flight_max < 1 || samples < 1 ||
        timeout_s <= 0) {
        usage(argv[0]);
        return 2;
    }
    if (samples > n)
        samples = n;

    raise_fd_limit();

    struct slot *slots = calloc((size_t)n, sizeof *slots);
    struct pollfd *pfds = calloc((size_t)in_flight_max, sizeof *pfds);
    long *pidx = calloc((size_t)in_flight_max, sizeof *pidx);
    double *lat_ms = calloc((size_t)samples, sizeof *lat_ms);
    double *warm_ms = calloc((size_t)samples, sizeof *warm_ms);
    if (slots == NULL || pfds == NULL || pidx == NULL || lat_ms == NULL || warm_ms == NULL) {
        fprintf(stderr, "idle_sessions: out of memory\n");
        return 1;
    }

    long rss_before = pid > 0 ? rss_kib(pid) : -1;
    if (pid > 0 && rss_before < 0) {
        fprintf(stderr, "idle_sessions: cannot read /proc/%ld/status\n", pid);
        return 1;
    }

    double t0 = now_s();
    double deadline = t0 + timeout_s;
    long started = 0, opened = 0, failed = 0, connecting = 0;
    int first_error_printed = 0;

    /* Bounded by the deadline: every iteration either makes progress or polls
     * with a 100 ms timeout. */
    while (opened + failed < n && now_s() < deadline) {
        while (connecting < in_flight_max && started < n) {
            struct slot *s = &slots[started++];
            s->conn = PQconnectStart(conninfo);
            if (s->conn == NULL || PQstatus(s->conn) == CONNECTION_BAD) {
                if (!first_error_printed && s->conn != NULL) {
                    fprintf(stderr, "idle_sessions: connect: %s", PQerrorMessage(s->conn));
                    first_error_printed = 1;
                }
                s->state = ST_FAILED;
                failed++;
                continue;
            }
            s->state = ST_CONNECTING;
            s->want = PGRES_POLLING_WRITING; /* as documented for PQconnectStart */
            connecting++;
        }

        /* Collect in-flight connections (scan is O(n) but n is small). */
        nfds_t nfds = 0;
        for (long i = 0; i < started && nfds < (nfds_t)in_flight_max; i++) {
            struct slot *s = &slots[i];
            if (s->state != ST_CONNECTING)
                continue;
            pfds[nfds].fd = PQsocket(s->conn);
            pfds[nfds].events = s->want == PGRES_POLLING_READING ? POLLIN : POLLOUT;
            pfds[nfds].revents = 0;
            pidx[nfds] = i;
            nfds++;
        }
        if (nfds == 0)
            continue;

        int rc = poll(pfds, nfds, 100);
        if (rc < 0) {
            if (errno == EINTR)
                continue;
            perror("idle_sessions: poll");
            break;
        }
        for (nfds_t k = 0; k < nfds && rc > 0; k++) {
            if (pfds[k].revents == 0)
                continue;
            struct slot *s = &slots[pidx[k]];
            PostgresPollingStatusType st = PQconnectPoll(s->conn);
            if (st == PGRES_POLLING_OK) {
                s->state = ST_OPEN;
                opened++;
                connecting--;
            } else if (st == PGRES_POLLING_FAILED) {
                if (!first_error_printed) {
                    fprintf(stderr, "idle_sessions: connect: %s", PQerrorMessage(s->conn));
                    first_error_printed = 1;
                }
                s->state = ST_FAILED;
                failed++;
                connecting--;
            } else {
                s->want = st;
            }
        }
    }
    double open_s = now_s() - t0;
    long timed_out = n - opened - failed;

    printf("opened=%ld\n", opened);
    printf("failed=%ld\n", failed + timed_out);
    printf("open_seconds=%.3f\n", open_s);

    int ok = (opened == n);
    if (!ok)
        fprintf(stderr,
                "idle_sessions: only %ld of %ld sessions opened (%ld failed, %ld timed out)\n",
                opened, n, failed, timed_out);

    /* Let the target settle (e.g. finish bookkeeping after the last handshake). */
    struct timespec settle = {0, 300 * 1000 * 1000};
    nanosleep(&settle, NULL);

    if (pid > 0) {
        long rss_after = rss_kib(pid);
        printf("rss_before_kib=%ld\n", rss_before);
        printf("rss_after_kib=%ld\n", rss_after);
        if (opened > 0 && rss_after >= 0)
            printf("kib_per_session=%.2f\n", (double)(rss_after - rss_before) / (double)opened);
    }

    /* `select 1` on idle sessions spread over the whole set, all others open: the first
     * query a session sends (what a user who comes back to an idle session waits for),
     * then a second one on the same session. */
    long got = 0;
    if (opened > 0) {
        for (long k = 0; k < samples; k++) {
            long i = (k * n) / samples;
            long tries = 0;
            while (slots[i].state != ST_OPEN && tries++ < n)
                i = (i + 1) % n;
            if (slots[i].state != ST_OPEN)
                break;
            double t[3];
            int good = 1;
            t[0] = now_s();
            for (int rep = 0; rep < 2 && good; rep++) {
                PGresult *res = PQexec(slots[i].conn, "select 1");
                t[rep + 1] = now_s();
                if (PQresultStatus(res) != PGRES_TUPLES_OK) {
                    fprintf(stderr, "idle_sessions: select 1: %s", PQerrorMessage(slots[i].conn));
                    ok = 0;
                    good = 0;
                }
                PQclear(res);
            }
            if (good) {
                lat_ms[got] = (t[1] - t[0]) * 1000.0;
                warm_ms[got] = (t[2] - t[1]) * 1000.0;
                got++;
            }
        }
    }
    if (pid > 0)
        printf("rss_after_queries_kib=%ld\n", rss_kib(pid));
    if (got > 0) {
        qsort(lat_ms, (size_t)got, sizeof *lat_ms, cmp_double);
        qsort(warm_ms, (size_t)got, sizeof *warm_ms, cmp_double);
        printf("select1_ms_median=%.3f\n", lat_ms[got / 2]);
        printf("select1_ms_max=%.3f\n", lat_ms[got - 1]);
        printf("select1_again_ms_median=%.3f\n", warm_ms[got / 2]);
    } else {
        ok = 0;
    }
    if (got < samples)
        ok = 0;

    for (long i = 0; i < started; i++)
        if (slots[i].conn != NULL)
            PQfinish(slots[i].conn);
    free(slots);
    free(pfds);
    free(pidx);
    free(lat_ms);
    free(warm_ms);
    fflush(stdout);
    return ok ? 0 : 1;
}
