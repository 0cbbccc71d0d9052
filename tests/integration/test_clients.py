"""Client compatibility matrix: real drivers and tools against the proxy.

Each client does the same script through the proxy: connect, a multi-row query, an error with
its SQLSTATE, a transaction (a failed block rolls back, a good one commits) and — where the
client can — a cancel of a running `pg_sleep(30)`. The results are summarized in
docs/clients.md. Clients that need something this machine may lack (javac, node/npm, the
JDBC jar) skip with the reason."""
import os
import shutil
import subprocess
import time

import psycopg2
import psycopg2.errors
import pytest

from conftest import upstream_dsn
from pgwp import marker
from pgwp import (DIRECT, PG_BIN, PGBENCH, REPO, cancel_in_thread, cancel_took, proxy_only,
                  psql_env)

CLIENTS = os.path.join(REPO, "tests", "clients")
NODE_DIR = os.path.join(CLIENTS, "node")
JDBC_JAR = "/usr/share/java/postgresql.jar"
CANCEL_BOUND = 5  # seconds from a cancel to the client seeing 57014

# The rows every client's multi-row query returns (`select g, 'row ' || g ... 1..5`).
ROW_LINES = [f"row {i} row {i}" for i in range(1, 6)]



def run(cmd, timeout=90, **kw):
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=timeout, **kw)


def lines(out):
    """'key rest' lines of a client program's output -> {key: rest} (first occurrence)."""
    d = {}
    for ln in out.splitlines():
        k, _, rest = ln.partition(" ")
        d.setdefault(k, rest)
    return d


def check_script_output(r, extra=()):
    """The observations every scripted client (libpq, JDBC, node) prints."""
    assert r.returncode == 0, f"client failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    out = r.stdout.splitlines()
    assert [ln for ln in out if ln.startswith("row ")] == ROW_LINES, r.stdout
    got = lines(r.stdout)
    assert got["error"].split()[0] == "22012", r.stdout
    assert "division by zero" in got["error"], r.stdout
    assert got["count_after_rollback"] == "0", r.stdout
    assert got["count_after_commit"] == "2", r.stdout
    assert out[-1] == "done", r.stdout
    for key, want in extra:
        assert got.get(key) == want, f"{key}: {got.get(key)!r} != {want!r}\n{r.stdout}"
    return got


def check_cancel(got, stdout):
    state, ms = got["cancel"].split()
    assert state == "57014", stdout
    assert 0 <= int(ms) < CANCEL_BOUND * 1000, f"cancel took {ms} ms:\n{stdout}"


# ---------------------------------------------------------------------------------------------
# psql 15 (light: psql is covered in depth by test_psql.py; its Ctrl-C cancel by
# test_cancel.py::test_psql_ctrl_c_cancels)


def test_psql(proxy):
    script = ("\\set VERBOSITY verbose\n"
              "select g, 'row ' || g as t from generate_series(1, 5) g;\n"
              "select 1/0;\n"
              "create temp table psql_t (x int);\n"
              "begin;\ninsert into psql_t values (1);\nselect 1/0;\ncommit;\n"
              "select 'after_rollback', count(*) from psql_t;\n"
              "begin;\ninsert into psql_t values (1), (2);\ncommit;\n"
              "select 'after_commit', count(*) from psql_t;\n")
    r = proxy.psql("-A", "-t", "-F", " ", input=script)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[:5] == [f"{i} row {i}" for i in range(1, 6)]
    assert "ERROR:  22012: division by zero" in r.stderr
    assert "ERROR:  25P02" not in r.stderr  # commit of the failed block just rolls back
    assert "ROLLBACK" in out
    assert "after_rollback 0" in out and "after_commit 2" in out
    assert r.stdout.count("COMMIT") == 1


# ---------------------------------------------------------------------------------------------
# libpq PQexec from C


@pytest.fixture(scope="module")
def libpq_client(tmp_path_factory):
    if not shutil.which("cc"):
        pytest.skip("no C compiler (cc)")
    incdir = run([os.path.join(PG_BIN, "pg_config"), "--includedir"]) \
        if os.path.exists(os.path.join(PG_BIN, "pg_config")) else None
    inc = ["-I", incdir.stdout.strip()] if incdir and incdir.returncode == 0 else \
        ["-I", "/usr/include/postgresql"]
    exe = str(tmp_path_factory.mktemp("libpq") / "libpq_client")
    r = run(["cc", "-std=c11", "-D_POSIX_C_SOURCE=200809L", "-Wall", "-Wextra", "-Werror",
             "-o", exe, os.path.join(CLIENTS, "libpq_client.c")] + inc + ["-lpq"])
    assert r.returncode == 0, f"compiling libpq_client.c failed:\n{r.stderr}"
    return exe


def test_libpq_pqexec(proxy, libpq_client):
    r = run([libpq_client, proxy.dsn(application_name="libpq_client")],
            env=psql_env(proxy.home))
    got = check_script_output(r, extra=[("tx_status_after_error", "E"),
                                        ("commit_tag", "ROLLBACK")])
    assert got["connected"][:1].isdigit(), r.stdout  # the server version
    check_cancel(got, r.stdout)


# ---------------------------------------------------------------------------------------------
# pgbench -M simple: built-in TPC-B-like transactions, then a custom script with an error


@pytest.fixture
def bench_db(pg, dconn):
    """A separate database initialized by pgbench -i directly (the init uses COPY, which the
    proxy refuses by design)."""
    db = "clients_pgbench"
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


def pgbench(target, db, *args):
    cmd = [PGBENCH, "-n", "-M", "simple", "-h", target.host, "-p", str(target.port),
           "-U", target.user] + list(args) + [db]
    return run(cmd, timeout=120, env=psql_env(target.home))


def test_pgbench_simple(pg, start_proxy, bench_db, tmp_path):
    proxy = start_proxy(dsn=upstream_dsn(pg, dbname=bench_db))
    # TPC-B-like: BEGIN; 3 UPDATEs, SELECT, INSERT; END — 2 clients, 200 transactions each
    r = pgbench(proxy, bench_db, "-c", "2", "-j", "2", "-t", "200")
    assert r.returncode == 0, r.stderr
    assert "number of transactions actually processed: 400/400" in r.stdout, r.stdout
    assert "number of failed transactions: 0" in r.stdout, r.stdout
    history = run([os.path.join(PG_BIN, "psql"), "-X", "-A", "-t", "-h", pg.host, "-p",
                   str(pg.port), "-U", "postgres", "-d", bench_db, "-c",
                   "select count(*) from pgbench_history"], env=psql_env("/tmp"))
    assert history.stdout.strip() == "400"  # every committed transaction left its row

    # rows: \gset reads a multi-row aggregate; \if fails the run if the value is wrong
    check = tmp_path / "rows.sql"
    check.write_text("select count(*) as n, sum(g) as s from generate_series(1, 5) g \\gset\n"
                     "\\if :n != 5\n  select 1/0;\n\\endif\n"
                     "\\if :s != 15\n  select 1/0;\n\\endif\n")
    r = pgbench(proxy, bench_db, "-c", "1", "-t", "20", "-f", str(check))
    assert r.returncode == 0, r.stderr
    assert "number of transactions actually processed: 20/20" in r.stdout

    # an error aborts the pgbench client (pgbench prints the message, not the SQLSTATE)
    bad = tmp_path / "error.sql"
    bad.write_text("select 1/0;\n")
    r = pgbench(proxy, bench_db, "-c", "1", "-t", "1", "-f", str(bad))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "ERROR:  division by zero" in r.stderr


# ---------------------------------------------------------------------------------------------
# psycopg2


def test_psycopg2_rows_error_transaction(proxy):
    conn = proxy.connect(application_name="psycopg2-matrix")
    try:
        with conn.cursor() as cur:
            cur.execute("select g, 'row ' || g from generate_series(1, 5) g")
            assert cur.fetchall() == [(i, f"row {i}") for i in range(1, 6)]
            cur.execute("create temp table p2_t (x int)")
            conn.commit()

            # psycopg2 sends parameters inline: simple protocol, so %s works
            cur.execute("insert into p2_t values (%s)", (1,))
            with pytest.raises(psycopg2.errors.DivisionByZero) as exc:
                cur.execute("select 1/0")
            assert exc.value.pgcode == "22012"
            assert conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_INERROR
            with pytest.raises(psycopg2.errors.InFailedSqlTransaction) as exc:
                cur.execute("select 1")
            assert exc.value.pgcode == "25P02"
            conn.rollback()
            cur.execute("select count(*) from p2_t")
            assert cur.fetchone() == (0,)

            cur.execute("insert into p2_t values (1), (2)")
            conn.commit()
            cur.execute("select count(*) from p2_t")
            assert cur.fetchone() == (2,)
    finally:
        conn.close()


def test_psycopg2_cancel(proxy, dconn):
    app = marker("psycopg2-cancel")
    conn = proxy.connect(application_name=app)
    try:
        with conn.cursor() as cur:
            cur.execute("select 1")
            # only now: a watcher started before could see `select 1` active and cancel it
            t, fired = cancel_in_thread(conn, dconn, app)
            with pytest.raises(psycopg2.errors.QueryCanceled) as exc:
                cur.execute("select pg_sleep(30)")
            assert cancel_took(t, fired, time.monotonic()) < CANCEL_BOUND
            assert exc.value.pgcode == "57014"
            conn.rollback()
            cur.execute("select 'usable'")
            assert cur.fetchone() == ("usable",)
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# psycopg 3: ClientCursor (client-side binding, simple protocol) works; the default
# server-side binding (Parse/Bind/Execute) gets 0A000 and the session stays usable.

try:
    import psycopg
except ImportError:  # Debian package python3-psycopg
    psycopg = None
needs_psycopg3 = pytest.mark.skipif(psycopg is None, reason="psycopg 3 not installed "
                                    "(python3-psycopg)")


def p3_connect(target, app, **kw):
    return psycopg.connect(target.dsn(application_name=app), **kw)


# psycopg 3 runs its own BEGIN/COMMIT/ROLLBACK (conn.commit(), conn.transaction(), the implicit
# BEGIN of a non-autocommit connection) with PQsendQueryParams, i.e. the extended protocol. So
# through the proxy it needs autocommit=True, and transactions as plain SQL.


@needs_psycopg3
def test_psycopg3_client_cursor(proxy):
    with p3_connect(proxy, "psycopg3-matrix", cursor_factory=psycopg.ClientCursor,
                    autocommit=True) as conn:
        cur = conn.cursor()
        assert isinstance(cur, psycopg.ClientCursor)
        cur.execute("select g, %s || g from generate_series(1, %s) g", ("row ", 5))
        assert cur.fetchall() == [(i, f"row {i}") for i in range(1, 6)]
        cur.execute("create temp table p3_t (x int)")

        cur.execute("begin")
        cur.execute("insert into p3_t values (%s)", (1,))
        with pytest.raises(psycopg.errors.DivisionByZero) as exc:
            cur.execute("select 1/0")
        assert exc.value.sqlstate == "22012"
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            cur.execute("select 1")
        cur.execute("commit")
        assert cur.statusmessage == "ROLLBACK"
        cur.execute("select count(*) from p3_t")
        assert cur.fetchone() == (0,)

        cur.execute("begin")
        cur.execute("insert into p3_t values (%s), (%s)", (1, 2))
        cur.execute("commit")
        cur.execute("select count(*) from p3_t")
        assert cur.fetchone() == (2,)


@needs_psycopg3
@proxy_only
def test_psycopg3_server_side_binding_gets_0A000(proxy):
    with p3_connect(proxy, "psycopg3-default", autocommit=True) as conn:
        with pytest.raises(psycopg.errors.FeatureNotSupported) as exc:
            conn.execute("select %s", (1,))
        assert exc.value.sqlstate == "0A000"
        assert "simple query protocol" in str(exc.value)
        # a query without parameters goes out as a simple Query: the session is still usable
        assert conn.execute("select 'still usable'").fetchone() == ("still usable",)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


@needs_psycopg3
@proxy_only
def test_psycopg3_driver_transactions_get_0A000(proxy):
    """Without autocommit psycopg 3 sends its implicit BEGIN with the extended protocol."""
    with p3_connect(proxy, "psycopg3-tx", cursor_factory=psycopg.ClientCursor) as conn:
        with pytest.raises(psycopg.errors.FeatureNotSupported) as exc:
            conn.execute("select 1")
        assert exc.value.sqlstate == "0A000"
        conn.autocommit = True
        assert conn.execute("select 2").fetchone() == (2,)


@needs_psycopg3
def test_psycopg3_cancel(proxy, dconn):
    app = marker("psycopg3-cancel")
    with p3_connect(proxy, app, cursor_factory=psycopg.ClientCursor, autocommit=True) as conn:
        t, fired = cancel_in_thread(conn, dconn, app)
        with pytest.raises(psycopg.errors.QueryCanceled) as exc:
            conn.execute("select pg_sleep(30)")
        assert cancel_took(t, fired, time.monotonic()) < CANCEL_BOUND
        assert exc.value.sqlstate == "57014"
        assert conn.execute("select 1").fetchone() == (1,)


# ---------------------------------------------------------------------------------------------
# JDBC (pgjdbc from Debian's libpostgresql-jdbc-java, Java 17)


@pytest.fixture(scope="module")
def jdbc_classes(tmp_path_factory):
    for tool in ("java", "javac"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not installed (default-jdk-headless)")
    if not os.path.exists(JDBC_JAR):
        pytest.skip(f"{JDBC_JAR} missing (Debian package libpostgresql-jdbc-java)")
    out = tmp_path_factory.mktemp("jdbc")
    r = run(["javac", "-d", str(out), "-cp", JDBC_JAR,
             os.path.join(CLIENTS, "JdbcClient.java")], timeout=180)
    assert r.returncode == 0, f"javac failed:\n{r.stderr}"
    return str(out)


def jdbc_url(target, **params):
    q = dict(user=target.user, sslmode="disable", gssEncMode="disable", connectTimeout=10,
             ApplicationName="jdbc-matrix")
    q.update(params)
    return (f"jdbc:postgresql://{target.host}:{target.port}/{target.dbname}?"
            + "&".join(f"{k}={v}" for k, v in q.items()))


def run_jdbc(classes, url, *args):
    return run(["java", "-Xshare:auto", "-XX:TieredStopAtLevel=1", "-cp",
                f"{JDBC_JAR}:{classes}", "JdbcClient", url] + list(args), timeout=120)


def test_jdbc_simple_query_mode(proxy, jdbc_classes):
    r = run_jdbc(jdbc_classes, jdbc_url(proxy, preferQueryMode="simple"))
    got = check_script_output(r, extra=[("tx_error_then", "25P02")])
    assert got["connected"][:1].isdigit(), r.stdout  # the server version
    check_cancel(got, r.stdout)


@proxy_only
def test_jdbc_default_extended_mode_gets_0A000(proxy, jdbc_classes):
    # pgjdbc's default mode runs its setup query (SET extra_float_digits = 3) with the
    # extended protocol: the connection attempt itself fails, with the proxy's clear 0A000
    r = run_jdbc(jdbc_classes, jdbc_url(proxy), "extended")
    assert r.returncode == 0, r.stdout + r.stderr
    got = lines(r.stdout)
    assert got["connect_error"].startswith("0A000"), r.stdout
    assert "simple query protocol" in got["connect_error"], r.stdout

    # with assumeMinServerVersion=9.0 that setting goes into the startup packet instead, the
    # connection works, and each extended-protocol statement gets 0A000 (session usable)
    r = run_jdbc(jdbc_classes, jdbc_url(proxy, assumeMinServerVersion="9.0"), "extended")
    assert r.returncode == 0, r.stdout + r.stderr
    got = lines(r.stdout)
    assert got["connected"][:1].isdigit(), r.stdout  # the server version
    assert got["extended_error"].startswith("0A000"), r.stdout
    assert "simple query protocol" in got["extended_error"], r.stdout
    assert got.get("after_extended_error") == "0A000", r.stdout
    assert r.stdout.splitlines()[-1] == "done"


# ---------------------------------------------------------------------------------------------
# node-postgres (pg@8)


@pytest.fixture(scope="module")
def node_client():
    if not shutil.which("node") or not shutil.which("npm"):
        pytest.skip("node and npm are needed for the node-postgres test")
    if not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "pg")):
        r = run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, timeout=300)
        assert r.returncode == 0, f"npm ci failed (npm registry unreachable?):\n{r.stderr}"
    return os.path.join(NODE_DIR, "client.js")


def test_node_pg(proxy, node_client):
    env = dict(os.environ, PGHOST=proxy.host, PGPORT=str(proxy.port), PGUSER=proxy.user,
               PGDATABASE=proxy.dbname, PGAPPNAME="node-matrix")
    env.pop("PGPASSWORD", None)
    r = run(["node", node_client], env=env)
    got = check_script_output(r, extra=[("tx_error_then", "25P02"),
                                        ("commit_command", "ROLLBACK"),
                                        ("after_extended", "7")])
    assert got["connected"][:1].isdigit(), r.stdout  # the server version
    if DIRECT:
        return
    # pg sends Parse/Bind/Execute for a query with values: a clear 0A000, session usable
    assert got["extended_error"].startswith("0A000"), r.stdout
    assert "simple query protocol" in got["extended_error"]


def test_node_pg_cancel(proxy, node_client):
    """pg's Client#cancel(client, query): a CancelRequest on a second connection, with the key
    the proxy gave the first one."""
    env = dict(os.environ, PGHOST=proxy.host, PGPORT=str(proxy.port), PGUSER=proxy.user,
               PGDATABASE=proxy.dbname, PGAPPNAME="node-cancel")
    env.pop("PGPASSWORD", None)
    r = run(["node", os.path.join(NODE_DIR, "cancel.js")], env=env)
    assert r.returncode == 0, f"client failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    got = lines(r.stdout)
    check_cancel(got, r.stdout)
    assert got.get("after_cancel") == "7", r.stdout
    assert r.stdout.splitlines()[-1] == "done", r.stdout
