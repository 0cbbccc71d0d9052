"""Extended query protocol and COPY: rejected with 0A000, session and data stay intact."""
import io
import subprocess

import psycopg
import psycopg2
import pytest

from pgwp import PGBENCH, only_error, proxy_only, psql_env, rfq, rows, tags

pytestmark = proxy_only


def assert_0a000(err, *words):
    assert (err["S"], err["C"]) == ("ERROR", "0A000"), err
    for w in words:
        assert w in err["M"], err


# -- extended query protocol


def test_parse_bind_execute_sync_gets_one_error(proxy):
    with proxy.raw() as c:
        c.parse("select $1::int + 1", types=[23])
        c.bind(params=["41"])
        c.describe_portal()
        c.execute()
        c.sync()
        msgs = c.read_until_rfq()
        assert [m.type for m in msgs] == ["E", "Z"], msgs
        assert_0a000(msgs[0].fields, "extended query protocol", "simple query protocol")
        assert rfq(msgs) == "I"
        assert rows(c.query("select 41 + 1")) == [("42",)]


def test_pipelined_batch_discarded_until_sync(proxy, dconn):
    with dconn.cursor() as cur:
        cur.execute("drop table if exists ext_t; create table ext_t (id int)")
    with proxy.raw() as c:
        for i in range(3):
            c.parse(f"insert into ext_t values ({i})", name=f"s{i}")
            c.bind(stmt=f"s{i}")
            c.execute()
        c.send("C", b"S" + b"s0\0")  # Close
        c.send("H")  # Flush
        c.sync()
        msgs = c.read_until_rfq()
        assert [m.type for m in msgs] == ["E", "Z"], msgs
        assert_0a000(msgs[0].fields)
        # a second batch is rejected the same way
        c.parse("select 1")
        c.sync()
        msgs = c.read_until_rfq()
        assert [m.type for m in msgs] == ["E", "Z"]
        assert rows(c.query("select count(*) from ext_t")) == [("0",)]


def test_extended_protocol_inside_transaction_block(proxy, dconn):
    with dconn.cursor() as cur:
        cur.execute("drop table if exists ext_tx; create table ext_tx (id int)")
    with proxy.raw() as c:
        c.query("begin")
        c.query("insert into ext_tx values (1)")
        c.parse("select 1")
        c.bind()
        c.execute()
        c.sync()
        msgs = c.read_until_rfq()
        assert_0a000(only_error(msgs))
        # like any error in a transaction block: the transaction is failed, COMMIT rolls back
        assert rfq(msgs) == "E"
        msgs = c.query("commit")
        assert (tags(msgs), rfq(msgs)) == (["ROLLBACK"], "I")
        assert rows(c.query("select count(*) from ext_tx")) == [("0",)]


# psycopg 3 sends BEGIN/COMMIT/ROLLBACK itself with the extended protocol (PQsendQueryParams),
# so through the proxy it needs autocommit=True plus ClientCursor (simple protocol), with
# transactions as plain SQL.


def test_psycopg3_prepare_rejected_then_client_cursor_works(proxy, dconn):
    with dconn.cursor() as cur:
        cur.execute("drop table if exists p3_x; create table p3_x (id int)")
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        cur = psycopg.ClientCursor(conn)
        cur.execute("begin")
        cur.execute("insert into p3_x values (%s)", (1,))
        with pytest.raises(psycopg.errors.FeatureNotSupported) as exc:
            conn.execute("select %s::int", (1,), prepare=True)
        assert exc.value.sqlstate == "0A000"
        assert "simple query protocol" in str(exc.value)
        cur.execute("rollback")
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            conn.execute("select %s::int", (1,))  # server-side binding is extended protocol too
        cur.execute("select %s::int + 1, %s", (41, "it's"))
        assert cur.fetchone() == (42, "it's")
        cur.execute("select count(*) from p3_x")
        assert cur.fetchone() == (0,)


def test_psycopg3_client_cursor_application_flow(proxy, dconn):
    with dconn.cursor() as cur:
        cur.execute("drop table if exists p3_t; create table p3_t (id int primary key, v text)")
    with psycopg.connect(proxy.dsn(), autocommit=True, cursor_factory=psycopg.ClientCursor) as conn:
        conn.execute("begin")
        conn.execute("insert into p3_t values (%s, %s), (%s, %s)", (1, "a", 2, None))
        conn.execute("commit")
        conn.execute("begin")
        conn.execute("insert into p3_t values (3, 'gone')")
        conn.execute("rollback")
        got = conn.execute("select id, v from p3_t where id > %s order by id", (0,)).fetchall()
        assert got == [(1, "a"), (2, None)]
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("insert into p3_t values (%s, 'dup')", (1,))
        assert conn.execute("select 'still fine'").fetchone() == ("still fine",)


def pgbench(target, mode, script):
    cmd = [PGBENCH, "-n", "-h", target.host, "-p", str(target.port), "-U", target.user,
           "-M", mode, "-c", "1", "-t", "5", "-f", str(script), "postgres"]
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=60,
                          env=psql_env(target.home))


def test_pgbench_extended_rejected_simple_works(proxy, tmp_path):
    script = tmp_path / "select.sql"
    script.write_text("select 1;\n")
    r = pgbench(proxy, "simple", script)
    assert r.returncode == 0, r.stderr
    assert "number of transactions actually processed: 5/5" in r.stdout
    for mode in ("extended", "prepared"):
        r = pgbench(proxy, mode, script)
        assert r.returncode != 0
        assert "simple query protocol" in r.stderr, r.stderr


# -- COPY


@pytest.fixture
def copy_table(dconn):
    with dconn.cursor() as cur:
        cur.execute("drop table if exists cp; create table cp (id int primary key, v text);"
                    "insert into cp values (1, 'one')")
    return lambda: sorted(_all(dconn, "select * from cp"))


def _all(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


@pytest.mark.parametrize("sql", ["copy cp from stdin", "copy cp to stdout",
                                 "copy (select g from generate_series(1, 200000) g) to stdout"])
def test_raw_copy_rejected_outside_transaction(proxy, copy_table, sql):
    with proxy.raw() as c:
        msgs = c.query(sql)
        assert [m.type for m in msgs] == ["E", "Z"], msgs  # no CopyIn/CopyOut/CopyData leaks
        assert_0a000(msgs[0].fields, "COPY")
        assert rfq(msgs) == "I"
        # nothing of the COPY stream is left over for the next statement
        assert rows(c.query("select 'next'")) == [("next",)]
    assert copy_table() == [(1, "one")]


@pytest.mark.parametrize("sql", ["copy cp from stdin", "copy cp to stdout"])
def test_raw_copy_rejected_inside_transaction(proxy, copy_table, sql):
    with proxy.raw() as c:
        c.query("begin")
        c.query("insert into cp values (2, 'two')")
        msgs = c.query(sql)
        assert_0a000(only_error(msgs), "COPY")
        # like any error in a transaction block: the transaction is failed, COMMIT rolls back
        assert rfq(msgs) == "E"
        msgs = c.query("commit")
        assert (tags(msgs), rfq(msgs)) == (["ROLLBACK"], "I")
    assert copy_table() == [(1, "one")]


def test_psycopg2_copy_expert_rejected(proxy, copy_table):
    conn = proxy.connect(autocommit=True)
    try:
        with conn.cursor() as cur:
            with pytest.raises(psycopg2.errors.FeatureNotSupported):
                cur.copy_expert("copy cp from stdin", io.StringIO("5\tfive\n6\tsix\n"))
            out = io.StringIO()
            with pytest.raises(psycopg2.errors.FeatureNotSupported):
                cur.copy_expert("copy cp to stdout", out)
            assert out.getvalue() == ""
            cur.execute("select count(*) from cp")
            assert cur.fetchone() == (1,)
    finally:
        conn.close()
    assert copy_table() == [(1, "one")]


def test_psycopg2_copy_in_transaction_fails_the_transaction(proxy, copy_table):
    conn = proxy.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("insert into cp values (2, 'two')")
            with pytest.raises(psycopg2.errors.FeatureNotSupported):
                cur.copy_expert("copy cp from stdin", io.StringIO("5\tfive\n"))
            with pytest.raises(psycopg2.errors.InFailedSqlTransaction):
                cur.execute("select 1")
        conn.rollback()
        with conn.cursor() as cur:
            cur.execute("select count(*) from cp")
            assert cur.fetchone() == (1,)
    finally:
        conn.close()
    assert copy_table() == [(1, "one")]


def test_psql_backslash_copy_rejected(proxy, copy_table, tmp_path):
    data = tmp_path / "in.tsv"
    data.write_text("7\tseven\n8\teight\n")
    out = tmp_path / "out.tsv"
    for cmd in (f"\\copy cp from '{data}'", f"\\copy cp to '{out}'"):
        r = proxy.psql("-c", cmd)
        assert r.returncode != 0
        assert "ERROR:" in r.stderr and "COPY" in r.stderr, r.stderr
    assert not out.exists() or out.read_text() == ""
    script = (f"begin;\ninsert into cp values (2, 'two');\n\\copy cp from '{data}'\n"
              "commit;\nselect count(*) from cp;\n")
    r = proxy.psql("-At", input=script)
    assert r.stdout.split()[-2:] == ["ROLLBACK", "1"], (r.stdout, r.stderr)
    assert copy_table() == [(1, "one")]
