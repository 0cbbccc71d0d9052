"""Drivers at their default settings against `--extended-protocol allow` (cases 29-31 of the
design brief's table, the rest of the matrix in docs/clients.md): psycopg 3, asyncpg, libpq's
PQexecParams/PQprepare/pipeline mode and pgbench -M extended/prepared. Each flow runs against
PostgreSQL directly too and must give the same answers (rows, SQLSTATEs, transaction status);
then the proxy's own guardrails are checked where a driver sends them."""
import asyncio
import os
import re

import asyncpg
import psycopg
import pytest

from conftest import upstream_dsn
from pgwp import PG_BIN, PGBENCH, psql_env, recreate, table_rows
from test_clients import check_cancel, check_script_output, libpq_client, lines, run  # noqa: F401

EXT = ("--extended-protocol", "allow")


@pytest.fixture
def ext(start_proxy):
    return start_proxy(*EXT)


# ---------------------------------------------------------------------------------------------
# psycopg 3 (3.1): server-side parameters, its own BEGIN, transaction(), executemany,
# pipeline(), prepare=True, binary, named server-side cursors


def psycopg_flow(target):
    out = {}
    with psycopg.connect(target.dsn(application_name="p3-ext")) as conn:  # not autocommit
        out["params"] = conn.execute("select %s::int + 1, %s::text, %s", (41, "it's", None)
                                     ).fetchall()
        out["status_in_tx"] = conn.info.transaction_status.name  # its own BEGIN went first
        conn.execute("create temp table p3e (id int primary key, v text) on commit preserve rows")
        conn.commit()
        with conn.cursor() as cur:
            cur.executemany("insert into p3e values (%s, %s)", [(i, f"v{i}") for i in range(200)])
        conn.commit()
        try:
            conn.execute("insert into p3e values (%s, 'dup')", (1,))
        except psycopg.errors.UniqueViolation as e:
            out["dup"] = e.sqlstate
        out["status_after_error"] = conn.info.transaction_status.name
        try:
            conn.execute("select 1")
        except psycopg.errors.InFailedSqlTransaction as e:
            out["then"] = e.sqlstate
        conn.rollback()
        out["prepared"] = [conn.execute("select %s::int * 2", (i,), prepare=True).fetchone()[0]
                           for i in range(7)]
        out["threshold"] = [conn.execute("select %s::int + 100", (i,)).fetchone()[0]
                            for i in range(7)]  # prepared by psycopg after 5 runs
        with conn.cursor(binary=True) as cur:
            cur.execute("select %s::int, %s::bytea, %s::numeric, %s::text[]",
                        (7, b"\x00\xff", 1.5, ["a", "b"]))
            out["binary"] = cur.fetchone()
        with conn.cursor(name="srv") as cur:
            cur.itersize = 300
            cur.execute("select g from generate_series(1, 1000) g")
            out["server_cursor"] = sum(r[0] for r in cur)
        conn.commit()
    with psycopg.connect(target.dsn(), autocommit=True) as conn:
        with conn.transaction():
            conn.execute("insert into p3e_shared values (%s)", (1,))
        try:
            with conn.transaction():
                conn.execute("insert into p3e_shared values (%s)", (2,))
                conn.execute("select 1/0")
        except psycopg.errors.DivisionByZero as e:
            out["tx_block_error"] = e.sqlstate
        with conn.pipeline():
            conn.execute("insert into p3e_shared values (%s)", (3,))
            cur = conn.execute("select count(*) from p3e_shared")
        out["pipeline"] = cur.fetchone()[0]
        out["shared"] = conn.execute("select array_agg(id order by id) from p3e_shared"
                                     ).fetchone()[0]
    return out


def test_psycopg3_default_settings_same_as_direct(ext, direct, dconn):
    answers = []
    for target in (direct, ext):
        recreate(dconn, "p3e_shared", "(id int)")
        answers.append(psycopg_flow(target))
    want, got = answers
    assert got == want
    assert got["params"] == [(42, "it's", None)] and got["status_in_tx"] == "INTRANS"
    assert (got["dup"], got["status_after_error"], got["then"]) == ("23505", "INERROR", "25P02")
    assert got["prepared"] == [2 * i for i in range(7)]
    assert got["binary"][1] == b"\x00\xff" and got["server_cursor"] == 500500
    assert got["tx_block_error"] == "22012" and got["shared"] == [1, 3] and got["pipeline"] == 2


def pipeline_flow(target, second):
    """Three statements in one pipeline segment, the second failing: the error psycopg raises
    (at an execute() that finds it already fetched, or when the pipeline ends: that depends on
    timing, directly too) and the rows left afterwards."""
    seen = []
    with psycopg.connect(target.dsn(), autocommit=True) as conn:
        try:
            with conn.pipeline():
                conn.execute("insert into p3_pipe values (%s)", (1,))
                conn.execute(second)
                conn.execute("insert into p3_pipe values (%s)", (2,))
        except psycopg.Error as e:
            seen.append((type(e).__name__, e.sqlstate))
        seen.append(conn.execute("select count(*) from p3_pipe").fetchone()[0])
    return seen


def test_30_psycopg3_pipeline_with_a_denied_statement(start_proxy, direct, dconn):
    """The denied statement fails where PostgreSQL's own error would (the later statement
    never runs) and statement 1 rolls back with the segment."""
    p = start_proxy(*EXT, "--deny", "drop")
    recreate(dconn, "p3_pipe", "(id int)")
    want = pipeline_flow(direct, "drop tabel p3_pipe")
    recreate(dconn, "p3_pipe", "(id int)")
    got = pipeline_flow(p, "drop table p3_pipe")
    assert want == [("SyntaxError", "42601"), 0], want
    assert got == [("InsufficientPrivilege", "42501"), 0], got
    assert table_rows(dconn, "p3_pipe") == []


def test_psycopg3_row_limit_in_a_server_cursor_is_per_fetch(start_proxy):
    """A named cursor's FETCH is a statement of its own (SQL FETCH stays per statement)."""
    p = start_proxy(*EXT, "--max-rows", "100")
    with psycopg.connect(p.dsn()) as conn:
        with conn.cursor(name="big") as cur:
            cur.itersize = 100
            cur.execute("select g from generate_series(1, 1000) g")
            assert sum(1 for _ in cur) == 1000
        with pytest.raises(psycopg.errors.ProgramLimitExceeded):
            conn.execute("select g from generate_series(1, 1000) g").fetchall()


# ---------------------------------------------------------------------------------------------
# asyncpg: prepared statements (Parse + Describe + Flush), executemany, cursors with prefetch


async def asyncpg_flow(target):
    out = {}
    conn = await asyncpg.connect(host=target.host, port=target.port, user=target.user,
                                 database=target.dbname, timeout=10)
    try:
        stmt = await conn.prepare("select $1::int + 1 as v, $2::text as t")
        out["prepared"] = [tuple(await stmt.fetchrow(i, f"x{i}")) for i in range(3)]
        out["params"] = [t.name for t in stmt.get_parameters()]
        await conn.execute("create temp table ap (id int primary key, v text)")
        await conn.executemany("insert into ap values ($1, $2)",
                               [(i, f"v{i}") for i in range(1000)])
        out["count"] = await conn.fetchval("select count(*) from ap")
        try:
            await conn.execute("insert into ap values (1, 'dup')")
        except asyncpg.UniqueViolationError as e:
            out["dup"] = e.sqlstate
        async with conn.transaction():
            out["cursor"] = [r["id"] async for r in
                             conn.cursor("select id from ap order by id", prefetch=100)]
        try:
            async with conn.transaction():
                await conn.execute("insert into ap values (5000, 'x')")
                await conn.execute("select 1/0")
        except asyncpg.DivisionByZeroError as e:
            out["tx_error"] = e.sqlstate
        out["after_rollback"] = await conn.fetchval("select count(*) from ap where id = 5000")
        out["sum"] = await conn.fetchval("select sum(id) from ap")
    finally:
        await conn.close()
    return out


def test_31_asyncpg_same_as_direct(ext, direct):
    want = asyncio.run(asyncpg_flow(direct))
    got = asyncio.run(asyncpg_flow(ext))
    assert got == want
    assert got["prepared"] == [(1, "x0"), (2, "x1"), (3, "x2")] and got["count"] == 1000
    assert got["cursor"] == list(range(1000)) and got["dup"] == "23505"
    assert (got["tx_error"], got["after_rollback"]) == ("22012", 0)


async def asyncpg_cursor_over_the_limit(target):
    conn = await asyncpg.connect(host=target.host, port=target.port, user=target.user,
                                 database=target.dbname, timeout=10)
    seen = []
    try:
        try:
            async with conn.transaction():
                async for r in conn.cursor("select g from generate_series(1, 5000) g",
                                           prefetch=100):
                    seen.append(r[0])
        except asyncpg.PostgresError as e:
            err = (e.sqlstate, e.detail)
        else:
            err = None
        after = await conn.fetchval("select 'usable'")
    finally:
        await conn.close()
    return seen, err, after


def test_asyncpg_row_limit_trips_inside_a_cursor(start_proxy):
    """The cursor's fetches share one portal run's budget: 1,000 rows, then 54000."""
    p = start_proxy(*EXT, "--max-rows", "1000")
    seen, err, after = asyncio.run(asyncpg_cursor_over_the_limit(p))
    assert err is not None and err[0] == "54000" and "max-rows" in err[1], err
    assert seen == list(range(1, len(seen) + 1)) and len(seen) <= 1000, len(seen)
    assert after == "usable"


# ---------------------------------------------------------------------------------------------
# libpq: PQexecParams, PQprepare/PQexecPrepared, pipeline mode


def test_libpq_extended_same_as_direct(ext, direct, libpq_client):  # noqa: F811
    outs = []
    for t in (direct, ext):
        r = run([libpq_client, t.dsn(application_name="libpq_ext"), "extended"],
                env=psql_env(t.home))
        assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
        outs.append(r.stdout)
    want, got = outs
    assert got == want
    d = lines(got)
    assert d["exec_params"] == "42 it's NULL", got
    assert d["prepared"] == "2 4 6", got
    assert d["prepared_error"] == "22012", got
    assert d["pipeline"] == "1 23505 PIPELINE_ABORTED sync 0", got
    assert got.splitlines()[-1] == "done"


def test_libpq_default_script_through_extended_allow(ext, libpq_client):  # noqa: F811
    r = run([libpq_client, ext.dsn(application_name="libpq_client")], env=psql_env(ext.home))
    got = check_script_output(r, extra=[("tx_status_after_error", "E"),
                                        ("commit_tag", "ROLLBACK")])
    check_cancel(got, r.stdout)


# ---------------------------------------------------------------------------------------------
# pgbench -M extended / -M prepared


@pytest.fixture
def bench_db(pg, dconn):
    db = "ext_pgbench"
    with dconn.cursor() as cur:
        cur.execute(f"drop database if exists {db}")
        cur.execute(f"create database {db}")
    try:
        r = run([PGBENCH, "-i", "-q", "-s", "1", "-h", pg.host, "-p", str(pg.port),
                 "-U", "postgres", db], env=psql_env("/tmp"))
        assert r.returncode == 0, r.stderr
        yield db
    finally:
        with dconn.cursor() as cur:
            cur.execute(f"drop database if exists {db} with (force)")


def bench_counts(pg, db):
    sql = ("select (select count(*) from pgbench_branches), (select count(*) from "
           "pgbench_tellers), (select count(*) from pgbench_accounts), (select count(*) from "
           "pgbench_history), (select sum(abalance) from pgbench_accounts), (select "
           "sum(tbalance) from pgbench_tellers), (select sum(bbalance) from pgbench_branches)")
    r = run([os.path.join(PG_BIN, "psql"), "-X", "-A", "-t", "-F", " ", "-h", pg.host, "-p",
             str(pg.port), "-U", "postgres", "-d", db, "-c", sql], env=psql_env("/tmp"))
    assert r.returncode == 0, r.stderr
    return [int(x) for x in r.stdout.split()]


@pytest.mark.parametrize("mode", ["extended", "prepared"])
def test_pgbench_extended_modes(pg, start_proxy, bench_db, mode):
    p = start_proxy(*EXT, dsn=upstream_dsn(pg, dbname=bench_db))
    base = [PGBENCH, "-n", "-M", mode, "-h", p.host, "-p", str(p.port), "-U", p.user,
            "-c", "2", "-j", "2", "-T", "3"]
    r = run(base + ["-S", bench_db], timeout=60, env=psql_env(p.home))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "number of failed transactions: 0" in r.stdout, r.stdout
    r = run(base + [bench_db], timeout=60, env=psql_env(p.home))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "number of failed transactions: 0" in r.stdout, r.stdout
    done = int(re.search(r"number of transactions actually processed: (\d+)", r.stdout)[1])
    assert done > 0
    branches, tellers, accounts, history, a, t, b = bench_counts(pg, bench_db)
    assert (branches, tellers, accounts) == (1, 10, 100000)
    assert history == done  # every committed TPC-B transaction left its row
    assert a == t == b  # each transaction moved the same delta through all three tables
