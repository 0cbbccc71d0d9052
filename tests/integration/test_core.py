"""Queries, results, transactions and asynchronous messages through the proxy."""
import select
import time

import psycopg2
import pytest

from pgwp import BOUND, only_error, parameter_status, recreate, rfq, rows, table_rows, tags

KV = "(id int primary key, v text)"




def test_multi_statement_returns_every_result(proxy, direct):
    sql = "select 1 as a; select 'two' as b, null as c; values (3), (4)"
    with proxy.raw() as c, direct.raw() as d:
        via, ref = c.query(sql), d.query(sql)
    assert rows(via) == [("1",), ("two", None), ("3",), ("4",)]
    assert tags(via) == ["SELECT 1", "SELECT 1", "SELECT 2"]
    assert rfq(via) == "I"
    assert via == ref


SCRIPTS = [
    # an error in the middle: the implicit transaction rolls back the earlier insert
    "insert into ms values (1, 'a'); select 1/0; insert into ms values (2, 'b')",
    # a failing later statement after an explicit COMMIT: the committed part stays
    "begin; insert into ms values (1, 'a'); commit; insert into ms values (2, 'b'); select 1/0",
    # a duplicate key inside the string
    "insert into ms values (1, 'a'); insert into ms values (1, 'again')",
    # everything fine
    "insert into ms values (1, 'a'); update ms set v = 'b' where id = 1; select * from ms",
    # an open transaction block left behind by the string
    "begin; insert into ms values (5, 'x')",
]


@pytest.mark.parametrize("sql", SCRIPTS)
def test_multi_statement_semantics_same_as_direct(proxy, direct, dconn, sql):
    results = []
    recreate(dconn, "ms", KV)
    for target in (proxy, direct):
        with dconn.cursor() as cur:
            cur.execute("truncate ms")  # not re-created: RowDescription carries the table OID
        with target.raw() as c:
            msgs = c.query(sql)
            status = rfq(msgs)
            if status != "I":
                c.query("rollback")
        results.append((msgs, status, table_rows(dconn, "ms")))
    assert results[0] == results[1]


def test_multi_statement_error_rolls_back_earlier_statements(proxy, dconn):
    recreate(dconn, "ms", KV)
    with proxy.raw() as c:
        msgs = c.query("insert into ms values (1, 'a'); select 1/0; insert into ms values (2, 'b')")
    assert tags(msgs) == ["INSERT 0 1"]
    assert only_error(msgs)["C"] == "22012"
    assert rfq(msgs) == "I"
    assert table_rows(dconn, "ms") == []


def test_returning_rows_and_command_tags(proxy, dconn):
    recreate(dconn, "ret", "(id serial primary key, name text)")
    with proxy.raw() as c:
        ins = c.query("insert into ret (name) values ('a'), ('b') returning id, name")
        upd = c.query("update ret set name = upper(name) where id = 2 returning name")
        dele = c.query("delete from ret where id = 1 returning *")
        none = c.query("update ret set name = 'z' where id = 99 returning id")
    assert (rows(ins), tags(ins)) == ([("1", "a"), ("2", "b")], ["INSERT 0 2"])
    assert (rows(upd), tags(upd)) == ([("B",)], ["UPDATE 1"])
    assert (rows(dele), tags(dele)) == ([("1", "a")], ["DELETE 1"])
    assert (rows(none), tags(none)) == ([], ["UPDATE 0"])
    assert table_rows(dconn, "ret") == [(2, "B")]


def test_transaction_status_in_ready_for_query(proxy, dconn):
    recreate(dconn, "txs", KV)
    with proxy.raw() as c:
        assert rfq(c.query("select 1")) == "I"
        assert rfq(c.query("begin")) == "T"
        assert rfq(c.query("insert into txs values (1, 'kept')")) == "T"
        msgs = c.query("commit")
        assert (tags(msgs), rfq(msgs)) == (["COMMIT"], "I")
        assert rfq(c.query("begin")) == "T"
        assert rfq(c.query("insert into txs values (2, 'dropped')")) == "T"
        msgs = c.query("rollback")
        assert (tags(msgs), rfq(msgs)) == (["ROLLBACK"], "I")
    assert table_rows(dconn, "txs") == [(1, "kept")]


def test_failed_transaction_block(proxy, dconn):
    recreate(dconn, "txf", KV)
    with proxy.raw() as c:
        c.query("begin")
        c.query("insert into txf values (1, 'lost')")
        msgs = c.query("select 1/0")
        assert (only_error(msgs)["C"], rfq(msgs)) == ("22012", "E")
        msgs = c.query("select 1")
        err = only_error(msgs)
        assert err["C"] == "25P02" and rfq(msgs) == "E"
        assert "current transaction is aborted" in err["M"]
        msgs = c.query("rollback")
        assert (tags(msgs), rfq(msgs)) == (["ROLLBACK"], "I")
        # COMMIT of a failed block reports ROLLBACK, as PostgreSQL does
        c.query("begin")
        c.query("insert into txf values (2, 'lost too')")
        c.query("select nope")
        msgs = c.query("commit")
        assert (tags(msgs), rfq(msgs)) == (["ROLLBACK"], "I")
        assert rows(c.query("select 42")) == [("42",)]
    assert table_rows(dconn, "txf") == []


def test_notice_and_warning_reach_psycopg2(proxy):
    conn = proxy.connect(autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("do $$ begin raise notice 'hello %', 42; raise warning 'careful'; end $$")
        assert conn.notices == ["NOTICE:  hello 42\n", "WARNING:  careful\n"]
    finally:
        conn.close()


def test_notice_fields_same_as_direct(proxy, direct):
    sql = ("do $$ begin raise notice using message = 'm', detail = 'd', hint = 'h', "
           "errcode = '01000'; end $$")
    with proxy.raw() as c, direct.raw() as d:
        assert c.query(sql) == d.query(sql)


@pytest.mark.parametrize("sql, name, value", [
    ("set TimeZone = 'Asia/Tokyo'", "TimeZone", "Asia/Tokyo"),
    ("set application_name = 'renamed-app'", "application_name", "renamed-app"),
    ("set DateStyle = 'German, DMY'", "DateStyle", "German, DMY"),
    ("set client_encoding = 'LATIN1'", "client_encoding", "LATIN1"),
])
def test_parameter_status_after_set(proxy, sql, name, value):
    with proxy.raw() as c:
        msgs = c.query(sql)
        assert parameter_status(msgs) == {name: value}
        assert tags(msgs) == ["SET"] and rfq(msgs) == "I"


def test_listen_notify_between_sessions(proxy):
    listener, notifier = proxy.connect(autocommit=True), proxy.connect(autocommit=True)
    try:
        with listener.cursor() as cur:
            cur.execute("listen pgwp_channel")
        with notifier.cursor() as cur:
            cur.execute("notify pgwp_channel, 'hello there'")
            cur.execute("select pg_notify('pgwp_channel', 'second')")
        deadline = time.monotonic() + BOUND
        # the listener is idle: the notifications must arrive without it sending anything
        while len(listener.notifies) < 2 and time.monotonic() < deadline:
            select.select([listener], [], [], 0.5)
            listener.poll()
        assert [(n.channel, n.payload) for n in listener.notifies] == [
            ("pgwp_channel", "hello there"), ("pgwp_channel", "second")]
        assert listener.notifies[0].pid == notifier.get_backend_pid()
    finally:
        listener.close()
        notifier.close()


@pytest.mark.parametrize("sql", ["", ";", "  -- only a comment", "/* c */ ;"])
def test_empty_query_response(proxy, direct, sql):
    with proxy.raw() as c, direct.raw() as d:
        via, ref = c.query(sql), d.query(sql)
        assert [m.type for m in via] == ["I", "Z"]
        assert via == ref
        assert rows(c.query("select 1")) == [("1",)]


def test_psycopg2_application_flow(proxy, dconn):
    recreate(dconn, "app_flow", "(id serial primary key, name text, price numeric, "
                                "born date, tags text[], note text)")
    conn = proxy.connect()
    try:
        cur = conn.cursor()
        cur.execute("insert into app_flow (name, price, born, tags, note) "
                    "values (%s, %s, %s, %s, %s) returning id",
                    ("O'Brien; drop table x --", 12.5, "2024-02-29", ["a", "b"], None))
        first_id = cur.fetchone()[0]
        cur.executemany("insert into app_flow (name, price) values (%s, %s)",
                        [(f"n{i}", i) for i in range(20)])
        conn.commit()
        cur.execute("insert into app_flow (name) values ('rolled back')")
        conn.rollback()
        cur.execute("select name, price::text, born::text, tags, note from app_flow where id = %s",
                    (first_id,))
        assert cur.fetchone() == ("O'Brien; drop table x --", "12.5", "2024-02-29", ["a", "b"],
                                  None)
        cur.execute("select count(*) from app_flow")
        assert cur.fetchone()[0] == 21
        cur.execute("select name from app_flow where name like 'n%%' order by id")
        assert [r[0] for r in cur] == [f"n{i}" for i in range(20)]
        assert cur.rowcount == 20
        with pytest.raises(psycopg2.errors.UniqueViolation):
            cur.execute("insert into app_flow (id, name) values (%s, 'dup')", (first_id,))
        conn.rollback()
        cur.execute("select 1")
        assert cur.fetchone() == (1,)
        conn.commit()
    finally:
        conn.close()
    assert table_rows(dconn, "app_flow")[0][1] == "O'Brien; drop table x --"


def test_psycopg2_named_cursor_iteration(proxy):
    """Server-side cursor: DECLARE + FETCH in a transaction, all simple protocol."""
    conn = proxy.connect()
    try:
        with conn.cursor(name="pgwp_cur") as cur:
            cur.itersize = 1000
            cur.execute("select g from generate_series(1, 5000) g")
            total = sum(r[0] for r in cur)
        assert total == 5000 * 5001 // 2
        conn.commit()
    finally:
        conn.close()


def test_many_sequential_sessions(proxy):
    """Sessions open and close cleanly (no leaked slots or upstream connections)."""
    for i in range(30):
        with proxy.raw() as c:
            assert rows(c.query(f"select {i}")) == [(str(i),)]
            c.terminate()
