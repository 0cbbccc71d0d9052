/* A small libpq client for the client-compatibility tests (tests/integration/test_clients.py).
 *
 * Usage: libpq_client CONNINFO [extended]
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
 * With "extended" it runs libpq's extended-protocol calls instead and prints:
 *   exec_params <values>              (PQexecParams, a NULL parameter)
 *   prepared <values>                 (PQprepare once, PQexecPrepared three times)
 *   prepared_error <sqlstate>         (PQexecPrepared of a statement that fails)
 *   pipeline <tuples> <sqlstate> <status> sync <count>   (pipeline mode: an insert, a
 *                                     duplicate, an insert skipped after it, the count after)
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

static int exec_params(PGconn *c)
{
    const char *values[3] = {"41", "it's", NULL};
    PGresult *r =
        PQexecParams(c, "select $1::int + 1, $2::text, $3::text", 3, NULL, values, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "PQexecParams: %s", PQerrorMessage(c));
        PQclear(r);
        return 0;
    }
    printf("exec_params %s %s %s\n", PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1),
           PQgetisnull(r, 0, 2) ? "NULL" : PQgetvalue(r, 0, 2));
    PQclear(r);
    return 1;
}

static int prepared(PGconn *c)
{
    PGresult *r = PQprepare(c, "dbl", "select $1::int * 2", 1, NULL);
    int good = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!good)
        return fprintf(stderr, "PQprepare: %s", PQerrorMessage(c)), 0;
    printf("prepared");
    for (int i = 1; i <= 3; i++) {
        char v[8];
        const char *values[1] = {v};
        snprintf(v, sizeof(v), "%d", i);
        r = PQexecPrepared(c, "dbl", 1, values, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK)
            return fprintf(stderr, "PQexecPrepared: %s", PQerrorMessage(c)), PQclear(r), 0;
        printf(" %s", PQgetvalue(r, 0, 0));
        PQclear(r);
    }
    printf("\n");
    r = PQprepare(c, "div", "select 1 / $1::int", 1, NULL);
    PQclear(r);
    const char *zero[1] = {"0"};
    r = PQexecPrepared(c, "div", 1, zero, NULL, NULL, 0);
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    printf("prepared_error %s\n", state ? state : "-");
    PQclear(r);
    return 1;
}

/* The results of one pipelined query: its tuples, SQLSTATE or status word. */
static void pipeline_result(PGconn *c, char *out, size_t len)
{
    PGresult *r = PQgetResult(c);
    ExecStatusType st = PQresultStatus(r);
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    size_t n = strlen(out);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        snprintf(out + n, len - n, " %s",
                 st == PGRES_TUPLES_OK ? PQgetvalue(r, 0, 0) : PQcmdTuples(r));
    else if (st == PGRES_PIPELINE_SYNC)
        snprintf(out + n, len - n, " sync");
    else
        snprintf(out + n, len - n, " %s", state ? state : PQresStatus(st) + 6);
    PQclear(r);
    if (st != PGRES_PIPELINE_SYNC)
        PQclear(PQgetResult(c)); /* the NULL that ends each query's results */
}

static int pipeline(PGconn *c)
{
    if (!ok(c, "create temp table libpq_pipe (id int primary key)", PGRES_COMMAND_OK))
        return 0;
    if (!PQenterPipelineMode(c))
        return fprintf(stderr, "PQenterPipelineMode: %s", PQerrorMessage(c)), 0;
    const char *one[1] = {"1"}, *two[1] = {"2"};
    const char *ins = "insert into libpq_pipe values ($1::int)";
    if (!PQsendQueryParams(c, ins, 1, NULL, one, NULL, NULL, 0) ||
        !PQsendQueryParams(c, ins, 1, NULL, one, NULL, NULL, 0) ||
        !PQsendQueryParams(c, ins, 1, NULL, two, NULL, NULL, 0) || !PQpipelineSync(c) ||
        !PQsendQueryParams(c, "select count(*) from libpq_pipe", 0, NULL, NULL, NULL, NULL, 0) ||
        !PQpipelineSync(c))
        return fprintf(stderr, "pipeline send: %s", PQerrorMessage(c)), 0;
    char out[256] = "";
    for (int i = 0; i < 6; i++)
        pipeline_result(c, out, sizeof(out));
    if (!PQexitPipelineMode(c))
        return fprintf(stderr, "PQexitPipelineMode: %s", PQerrorMessage(c)), 0;
    /* " 1 23505 PIPELINE_ABORTED sync 0 sync": the last sync ends the line */
    size_t n = strlen(out);
    if (n > 5 && strcmp(out + n - 5, " sync") == 0)
        out[n - 5] = 0;
    printf("pipeline%s\n", out);
    return 1;
}

static int extended(PGconn *c)
{
    return exec_params(c) && prepared(c) && pipeline(c);
}

int main(int argc, char **argv)
{
    if (argc != 2 && !(argc == 3 && strcmp(argv[2], "extended") == 0)) {
        fprintf(stderr, "usage: %s CONNINFO [extended]\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    PGconn *c = PQconnectdb(argv[1]);
    int rc = 1;
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "connect: %s", PQerrorMessage(c));
        goto out;
    }
    if (argc == 3) {
        if (extended(c)) {
            printf("done\n");
            rc = 0;
        }
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
