/* A small libpq client for the client-compatibility tests (tests/integration/test_clients.py).
 *
 * Usage: libpq_client CONNINFO
 *
 * Runs the compatibility script with PQexec (simple query protocol) and prints one line per
 * observation, which the test asserts on:
 *   connected <server_version>
 *   row <n> <text>                    (multi-row query)
 *   error <sqlstate> <message>        (select 1/0)
 *   tx_status_after_error <I|T|E>     (inside a failed transaction block)
 *   commit_tag <tag>                  (COMMIT of a failed transaction reports ROLLBACK)
 *   count_after_rollback <n>
 *   count_after_commit <n>
 *   cancel <sqlstate> <ms>            (PQcancel from this process while pg_sleep runs)
 *   done
 * Exit status 0 when every step could run, 1 otherwise (the reason on stderr). */
#include <libpq-fe.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static const char *status_char(PGTransactionStatusType s)
{
    switch (s) {
    case PQTRANS_IDLE:
        return "I";
    case PQTRANS_INTRANS:
        return "T";
    case PQTRANS_INERROR:
        return "E";
    default:
        return "?";
    }
}

/* Runs sql, expects status `want`; returns the result (caller clears) or NULL after printing
 * why. */
static PGresult *run(PGconn *c, const char *sql, ExecStatusType want)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != want) {
        fprintf(stderr, "%s: %s %s", sql, PQresStatus(PQresultStatus(r)), PQerrorMessage(c));
        PQclear(r);
        return NULL;
    }
    return r;
}

static int ok(PGconn *c, const char *sql, ExecStatusType want)
{
    PGresult *r = run(c, sql, want);
    PQclear(r);
    return r != NULL;
}

static int print_count(PGconn *c, const char *label)
{
    PGresult *r = run(c, "select count(*) from libpq_t", PGRES_TUPLES_OK);
    if (!r)
        return 0;
    printf("%s %s\n", label, PQgetvalue(r, 0, 0));
    PQclear(r);
    return 1;
}

static int rows_and_error(PGconn *c)
{
    PGresult *r = run(c, "select g, 'row ' || g from generate_series(1, 5) g", PGRES_TUPLES_OK);
    if (!r)
        return 0;
    for (int i = 0; i < PQntuples(r); i++)
        printf("row %s %s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1));
    PQclear(r);

    r = PQexec(c, "select 1/0");
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    printf("error %s %s\n", state ? state : "-", msg ? msg : "-");
    PQclear(r);
    return 1;
}

static int transactions(PGconn *c)
{
    if (!ok(c, "create temp table libpq_t (x int)", PGRES_COMMAND_OK) ||
        !ok(c, "begin", PGRES_COMMAND_OK) ||
        !ok(c, "insert into libpq_t values (1)", PGRES_COMMAND_OK))
        return 0;
    PGresult *r = PQexec(c, "select 1/0");
    PQclear(r);
    printf("tx_status_after_error %s\n", status_char(PQtransactionStatus(c)));
    r = run(c, "commit", PGRES_COMMAND_OK);
    if (!r)
        return 0;
    printf("commit_tag %s\n", PQcmdStatus(r));
    PQclear(r);
    if (!print_count(c, "count_after_rollback"))
        return 0;
    if (!ok(c, "begin", PGRES_COMMAND_OK) ||
        !ok(c, "insert into libpq_t values (1), (2)", PGRES_COMMAND_OK) ||
        !ok(c, "commit", PGRES_COMMAND_OK))
        return 0;
    return print_count(c, "count_after_commit");
}

/* Waits (up to 10 s) until the statement tagged `tag` runs on the server, watching
 * pg_stat_activity from a second connection, so the cancel cannot overtake the query. */
static int wait_active(const char *conninfo, const char *tag)
{
    PGconn *w = PQconnectdb(conninfo);
    int found = 0;
    char sql[256];
    snprintf(sql, sizeof(sql),
             "select 1 from pg_stat_activity where state = 'active' and query like '%%%s%%' "
             "and pid <> pg_backend_pid()",
             tag);
    for (int i = 0; i < 200 && PQstatus(w) == CONNECTION_OK && !found; i++) {
        PGresult *r = PQexec(w, sql);
        found = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0;
        PQclear(r);
        if (!found) {
            struct timespec pause = {.tv_sec = 0, .tv_nsec = 50 * 1000000L};
            nanosleep(&pause, NULL);
        }
    }
    if (!found)
        fprintf(stderr, "statement %s never became active: %s", tag, PQerrorMessage(w));
    PQfinish(w);
    return found;
}

static int cancel(PGconn *c, const char *conninfo)
{
    char tag[64], sql[128];
    snprintf(tag, sizeof(tag), "libpq_client_%ld", (long)getpid());
    snprintf(sql, sizeof(sql), "select pg_sleep(30) /* %s */", tag);
    if (!PQsendQuery(c, sql)) {
        fprintf(stderr, "PQsendQuery: %s", PQerrorMessage(c));
        return 0;
    }
    if (!wait_active(conninfo, tag))
        return 0;
    PGcancel *cn = PQgetCancel(c);
    char err[256] = "";
    long start = now_ms();
    if (!cn || !PQcancel(cn, err, sizeof(err))) {
        fprintf(stderr, "PQcancel: %s\n", err);
        PQfreeCancel(cn);
        return 0;
    }
    PQfreeCancel(cn);
    char state[6] = "-";
    PGresult *r;
    while ((r = PQgetResult(c)) != NULL) {
        const char *s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        if (s)
            snprintf(state, sizeof(state), "%s", s);
        PQclear(r);
    }
    printf("cancel %s %ld\n", state, now_ms() - start);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CONNINFO\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    PGconn *c = PQconnectdb(argv[1]);
    int rc = 1;
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "connect: %s", PQerrorMessage(c));
        goto out;
    }
    printf("connected %d\n", PQserverVersion(c));
    if (!rows_and_error(c) || !transactions(c) || !cancel(c, argv[1]))
        goto out;
    /* the session is still usable after the cancel */
    if (!ok(c, "select 1", PGRES_TUPLES_OK))
        goto out;
    printf("done\n");
    rc = 0;
out:
    PQfinish(c);
    return rc;
}
