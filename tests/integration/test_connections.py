"""Sessions: start-up parameters, audit name, connection ceiling, upstream failures."""
import socket

import psycopg2
import pytest

from pgwp import marker
from pgwp import (BOUND, RawClient, only_error, poll, proxy_only, rfq, rows, run_canceled,
                  scalar, startup_or_53300)



def backends(dconn, like):
    """Upstream backends whose application_name contains `like`: [(pid, state, query)]."""
    with dconn.cursor() as cur:
        cur.execute("select pid, state, query from pg_stat_activity "
                    "where application_name like %s", (f"%{like}%",))
        return cur.fetchall()


STARTUP = {
    "client_encoding": "LATIN1",
    "DateStyle": "SQL, DMY",
    "TimeZone": "Asia/Tokyo",
    "IntervalStyle": "iso_8601",
    "extra_float_digits": "0",
}


def test_client_startup_parameters_apply_upstream(proxy):
    app = marker("params")
    with proxy.raw(application_name=app, **STARTUP) as c:
        reported = c.params  # ParameterStatus at start-up
        for name, value in STARTUP.items():
            assert rows(c.query(f"show {name}")) == [(value,)], name
            if name != "extra_float_digits":  # not a GUC_REPORT setting
                assert reported[name] == value, name
        assert app in rows(c.query("show application_name"))[0][0]
        assert rows(c.query("select '2024-02-29'::date, interval '1 day 2 hours', "
                            "'2024-01-01 00:00:00+00'::timestamptz, 1/3::float8")) == [
            ("29/02/2024", "P1DT2H", "01/01/2024 09:00:00 JST", "0.333333333333333")]
        data = [m for m in c.query("select chr(233)") if m.type == "D"][0]
        assert data.payload == b"\0\1\0\0\0\1\xe9"  # é in LATIN1 on the wire


def test_upstream_application_name_names_the_client(proxy, dconn):
    app = marker("audit")
    user = "audit_alice" if proxy.is_proxy else proxy.user
    with proxy.raw(user=user, application_name=app) as c:
        assert rows(c.query("select 1")) == [("1",)]
        with dconn.cursor() as cur:
            cur.execute("select application_name from pg_stat_activity "
                        "where application_name like %s", (f"%{app}%",))
            names = [r[0] for r in cur.fetchall()]
        assert len(names) == 1
        name = names[0]
        assert app in name and len(name.encode()) <= 63
        if proxy.is_proxy:
            assert name != app and user in name, name  # the proxy appends user and address


@proxy_only
def test_connection_limit(start_proxy, dconn, pg):
    p = start_proxy("--max-connections", 2)
    count_sql = ("select count(*) from pg_stat_activity where backend_type = 'client backend' "
                 "and pid <> pg_backend_pid()")
    first, second = p.raw(), p.raw()
    try:
        for c in (first, second):
            assert rows(c.query("select 1")) == [("1",)]
        before = scalar(dconn, count_sql)
        connections_before = pg.log_count("connection received")
        with RawClient(p.host, p.port) as third:
            msgs = third.startup(user="postgres", database="postgres")
            err = only_error(msgs)
            assert (err["S"], err["C"], err["M"]) == ("FATAL", "53300",
                                                       "sorry, too many clients already")
            assert third.read_until_closed() == []
        # refused before any upstream connection was opened
        assert pg.log_count("connection received") == connections_before
        assert scalar(dconn, count_sql) == before
        # the two sessions are unaffected
        assert rows(second.query("select 2")) == [("2",)]
        first.terminate()
        first.close()

        # the freed slot becomes available (polled: the proxy sees the close asynchronously)
        fresh = poll(lambda: startup_or_53300(p), what="a slot to free up")
        assert rows(fresh.query("select 3")) == [("3",)]
        fresh.close()
    finally:
        first.close()
        second.close()


@proxy_only
def test_upstream_unreachable(start_proxy):
    closed_port = 1  # nothing listens on port 1 of 127.0.0.1
    p = start_proxy(dsn=f"host=127.0.0.1 port={closed_port} dbname=postgres user=postgres "
                        "connect_timeout=5")
    for _ in range(2):
        with RawClient(p.host, p.port) as c:
            err = only_error(c.startup(user="postgres", database="postgres"))
            assert (err["S"], err["C"]) == ("FATAL", "08001"), err
            text = err["M"] + err.get("D", "")
            assert "Connection refused" in text, err
            assert c.read_until_closed() == []
    with pytest.raises(psycopg2.OperationalError, match="Connection refused"):
        p.connect()


@proxy_only
def test_wrong_upstream_password_not_leaked(start_proxy):
    secret = "WrongPw-7f3a9c"
    p = start_proxy(dsn=f"host=127.0.0.1 port={start_proxy.pg.port} dbname=postgres "
                        f"user=pwuser password={secret}", user="pwuser")
    with RawClient(p.host, p.port) as c:
        err = only_error(c.startup(user="pwuser", database="postgres"))
        assert (err["S"], err["C"]) == ("FATAL", "28P01"), err
        assert 'password authentication failed for user "pwuser"' in err["M"]
        assert not any(secret in v for v in err.values())
        assert c.read_until_closed() == []
    p.stop()  # exit problems are reported by the fixture
    assert secret not in p.log()


@proxy_only
def test_right_upstream_password_works_and_is_not_logged(start_proxy):
    p = start_proxy("--log-level", "debug",
                    dsn=f"host=127.0.0.1 port={start_proxy.pg.port} dbname=postgres "
                        "user=pwuser password=sekrit-pw", user="pwuser")
    with p.raw() as c:
        assert rows(c.query("select current_user")) == [("pwuser",)]
    p.stop()
    assert "sekrit-pw" not in p.log()


@proxy_only
def test_upstream_over_unix_socket(start_proxy, dconn):
    """A proxy on the database host can reach PostgreSQL over its Unix socket: queries,
    transactions, a client's cancel and the proxy's own timeout cancel all work."""
    pg = start_proxy.pg
    p = start_proxy("--query-timeout", "2s",
                    dsn=f"host={pg.base} port={pg.port} dbname=postgres user=postgres")
    app = marker("unixup")
    with p.raw(application_name=app) as c:
        assert rows(c.query("select 'over the socket'")) == [("over the socket",)]
        # the backend serving the session has no client address: it came over the socket
        assert scalar(dconn, "select count(*) from pg_stat_activity "
                             "where application_name like %s and client_addr is null",
                      f"%{app}%") == 1
        assert rfq(c.query("begin")) == "T"
        assert rfq(c.query("select 2")) == "T"
        assert rfq(c.query("commit")) == "I"
        err = only_error(c.query("select pg_sleep(30)"))
        assert err["C"] == "57014" and "rule: query-timeout" in err.get("D", ""), err
        assert rows(c.query("select 'still usable'")) == [("still usable",)]
    app = marker("unixup-cancel")
    conn = p.connect(autocommit=True, application_name=app)
    try:
        err, _ = run_canceled(conn, dconn, app)
        # the client's cancel, not the 2 s query timeout, ended it
        assert err.pgcode == "57014"
        assert "canceling statement due to user request" in str(err)
    finally:
        conn.close()


def test_upstream_backend_terminated_while_idle(proxy, dconn):
    app = marker("killidle")
    with proxy.raw(application_name=app) as c:
        pid = int(rows(c.query("select pg_backend_pid()"))[0][0])
        assert scalar(dconn, "select pg_terminate_backend(%s)", pid) is True
        # the client is idle: the FATAL must arrive without it sending anything
        msgs = c.read_until_closed()
        err = only_error(msgs)
        assert err["S"] == "FATAL" and err["C"] in ("57P01", "08006"), err
    poll(lambda: backends(dconn, app) == [], what="the backend to go")
    with proxy.raw() as c:
        assert rows(c.query("select 'new session'")) == [("new session",)]


def test_upstream_backend_terminated_mid_query(proxy, dconn):
    app = marker("killbusy")
    with proxy.raw(application_name=app) as c:
        c.query_send("select pg_sleep(60)")
        pid = poll(lambda: [b[0] for b in backends(dconn, app) if b[1] == "active"],
                   what="the query to start")[0]
        assert scalar(dconn, "select pg_terminate_backend(%s)", pid) is True
        msgs = c.read_until_closed()
        err = only_error(msgs)
        assert err["S"] == "FATAL" and err["C"] in ("57P01", "08006"), err
    with proxy.raw() as c:
        assert rows(c.query("select 'new session'")) == [("new session",)]


@pytest.mark.parametrize("sql", [
    "select generate_series(1, 1000000000)",  # the proxy is blocked writing to the client
    "select pg_sleep(3)",  # upstream busy, not sending yet
])
def test_client_vanishing_mid_result(unlimited_proxy, dconn, sql):
    app = marker("vanish")
    c = unlimited_proxy.raw(application_name=app)
    c.query_send(sql)
    poll(lambda: any(b[1] == "active" and b[2] == sql for b in backends(dconn, app)),
         what="the query to run upstream")
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # RST
    c.close()
    poll(lambda: not any(b[1] == "active" for b in backends(dconn, app)), timeout=BOUND,
         what="the upstream query to stop after the client vanished")
    poll(lambda: backends(dconn, app) == [], what="the upstream connection to close")
