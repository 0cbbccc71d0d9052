"""SIGTERM/SIGINT: drain open transactions up to --shutdown-timeout, then FATAL 57P01; SIGQUIT:
at once."""
import signal
import time

import pytest

from pgwp import (RawClient, describe, errors, only_error, poll, proxy_only, rfq, rows, scalar,
                  tags)

pytestmark = proxy_only


def refuses_new_sessions(p):
    """True once a new client cannot start a session (refused, or told FATAL)."""
    try:
        c = RawClient(p.host, p.port)
    except ConnectionRefusedError:
        return True
    with c:
        try:
            msgs = c.startup(user="postgres", database="postgres")
        except (ConnectionResetError, BrokenPipeError):
            return True
        if msgs and msgs[-1].type == "Z":
            c.terminate()
            return False
        assert not msgs or only_error(msgs)["S"] == "FATAL", msgs
        return True


def fatal_57p01(msgs):
    errs = errors(msgs)
    assert errs, f"no error before the close: {msgs}"
    assert (errs[-1]["S"], errs[-1]["C"]) == ("FATAL", "57P01"), errs[-1]
    return errs[-1]


@pytest.fixture
def sd_table(dconn):
    with dconn.cursor() as cur:
        cur.execute("drop table if exists sd; create table sd (id int primary key)")
    return lambda: scalar(dconn, "select coalesce(string_agg(id::text, ',' order by id), '') "
                                 "from sd")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_idle_session_closed_and_exit_0(start_proxy, sig):
    p = start_proxy("--shutdown-timeout", "30s")
    with p.raw() as c:
        assert rows(c.query("select 1")) == [("1",)]
        p.signal(sig)
        # idle, no transaction: nothing to wait for, closed well before the 30 s grace period
        fatal_57p01(c.read_until_closed())
    assert p.wait() == 0


def test_open_transaction_may_commit_during_shutdown(start_proxy, sd_table):
    p = start_proxy("--shutdown-timeout", "30s")
    with p.raw() as c:
        c.query("begin")
        assert rfq(c.query("insert into sd values (1)")) == "T"
        p.signal(signal.SIGTERM)
        poll(lambda: refuses_new_sessions(p), what="the proxy to refuse new sessions")
        assert p.alive()
        msgs = c.query("insert into sd values (2)")
        assert tags(msgs) == ["INSERT 0 1"] and rfq(msgs) == "T"
        msgs = c.query("commit") + c.read_until_closed()
        assert tags(msgs) == ["COMMIT"], msgs
        fatal_57p01(msgs)
    assert p.wait() == 0
    assert sd_table() == "1,2"


def test_in_flight_statement_finishes_during_shutdown(start_proxy, dconn):
    p = start_proxy("--shutdown-timeout", "30s")
    sql = "select pg_sleep(1), 'finished' -- shutdown in flight"
    with p.raw() as c:
        c.query_send(sql)
        poll(lambda: scalar(dconn, "select count(*) from pg_stat_activity "
                                   "where state = 'active' and query = %s", sql) == 1,
             what="the statement to run upstream")
        p.signal(signal.SIGTERM)
        msgs = c.read_until_closed()
        assert rows(msgs) == [("", "finished")], msgs
        fatal_57p01(msgs)
    assert p.wait() == 0


def test_shutdown_timeout_ends_open_transaction(start_proxy, sd_table):
    p = start_proxy("--shutdown-timeout", "1s")
    with p.raw() as c:
        c.query("begin")
        c.query("insert into sd values (1)")
        p.signal(signal.SIGTERM)
        fatal_57p01(c.read_until_closed())  # after the 1 s grace period
    assert p.wait() == 0
    assert sd_table() == ""  # the open transaction did not commit


def test_second_sigterm_exits_at_once(start_proxy, sd_table):
    p = start_proxy("--shutdown-timeout", "60s")
    p.exit_ok = None  # an immediate exit may report failure
    with p.raw() as c:
        c.query("begin")
        c.query("insert into sd values (1)")
        p.signal(signal.SIGTERM)
        poll(lambda: refuses_new_sessions(p), what="the proxy to refuse new sessions")
        p.signal(signal.SIGTERM)
        p.wait()  # bounded far below the 60 s grace period
        c.read_until_closed()
    assert sd_table() == ""


def test_sigquit_closes_everything_at_once(start_proxy, dconn):
    proxy = start_proxy("--shutdown-timeout", "30s")
    sql = "select pg_sleep(20) -- sigquit in flight"
    with proxy.raw() as c:
        c.query("begin")
        c.query_send(sql)
        poll(lambda: scalar(dconn, "select count(*) from pg_stat_activity "
                                   "where state = 'active' and query = %s", sql) == 1,
             what="the statement to run upstream")
        start = time.monotonic()
        proxy.signal(signal.SIGQUIT)
        msgs = c.read_until_closed()
        assert proxy.wait() == 0
        assert time.monotonic() - start < 5
    err = only_error(msgs)
    assert (err["S"], err["C"]) == ("FATAL", "57P01"), describe(msgs)
