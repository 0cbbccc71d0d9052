"""--read-only has a backstop: whatever path turns the upstream's
default_transaction_read_only off (here a SECURITY DEFINER function the statement policy cannot
see into), the session ends before it can run another statement; and read-only turned on by
SIGHUP reaches sessions that are already open."""
import signal

import pytest

from pgwp import (describe, free_port, log_events, metric, only_error, poll,
                  proxy_only, query_message, rfq, rows, scrape, table_rows, tags)

pytestmark = proxy_only

RULE = "read-only"


@pytest.fixture
def ro_objects(dconn):
    """A table role app may write, a function that writes it, and a SECURITY DEFINER function
    owned by postgres that switches default_transaction_read_only off for the session (its
    set_config outlives the call: the function has no SET clause)."""
    with dconn.cursor() as cur:
        cur.execute("""
            drop table if exists rob_t cascade;
            create table rob_t (id int);
            grant select, insert on rob_t to app;
            create or replace function rob_write(v int) returns int language plpgsql as
              $$ begin insert into rob_t values (v); return v; end $$;
            grant execute on function rob_write(int) to app;
            create or replace function rob_unlock() returns int language plpgsql
              security definer as
              $$ begin perform set_config('default_transaction_read_only', 'off', false);
                 return 1; end $$;
            alter function rob_unlock() owner to postgres;
            revoke all on function rob_unlock() from public;
            grant execute on function rob_unlock() to app;
        """)
    return lambda: [r[0] for r in table_rows(dconn, "rob_t")]


def assert_read_only_fatal(msgs):
    """The statement's own result, then FATAL 25006 naming the rule, and nothing after it: no
    ReadyForQuery on which a client could send the next statement."""
    assert rows(msgs) == [("1",)] and tags(msgs) == ["SELECT 1"], describe(msgs)
    assert not any(m.type == "Z" for m in msgs), f"a ReadyForQuery was sent: {describe(msgs)}"
    err = only_error(msgs)
    assert (err["S"], err["C"]) == ("FATAL", "25006"), describe(msgs)
    assert f"rule: {RULE}" in err.get("D", ""), err
    assert msgs[-1].type == "E", f"messages after the FATAL: {describe(msgs)}"


def test_read_only_lost_ends_the_session(start_proxy, ro_objects):
    mport = free_port()
    p = start_proxy("--read-only", "--metrics-listen", f"127.0.0.1:{mport}", user="app")
    before = metric(scrape(mport), "pgwire_proxy_guardrail_violations_total", rule=RULE,
                    mode="enforce")
    with p.raw() as c:
        # the policy sees a SELECT of a function; the upstream reports the setting it changed
        msgs = c.query("select rob_unlock()")
        assert_read_only_fatal(msgs)
        assert c.read_until_closed() == []
    poll(lambda: log_events(p, "read_only_lost"), what="a read_only_lost log event")
    assert metric(scrape(mport), "pgwire_proxy_guardrail_violations_total",
                  rule=RULE, mode="enforce") == before + 1
    assert not log_events(p, "read_only_superuser"), "the DSN role app is no superuser"
    with p.raw() as c:  # other sessions are unaffected, and still read-only
        err = only_error(c.query("select rob_write(1)"))
        assert err["C"] == "25006", err
    assert ro_objects() == []


def test_pipelined_write_after_read_only_lost_never_runs(start_proxy, ro_objects):
    """The write is sent before the answer to the statement that unlocked the session: it must
    not reach PostgreSQL."""
    p = start_proxy("--read-only", user="app")
    with p.raw() as c:
        c.send_raw(query_message("select rob_unlock()") + query_message("select rob_write(7)"))
        first = c.read_until_rfq()
        second = c.read_until_rfq()
    assert ro_objects() == [], f"the pipelined write ran upstream: {describe(first + second)}"
    assert_read_only_fatal(first)
    assert second == [], f"the pipelined write was answered: {describe(second)}"


def test_superuser_dsn_with_read_only_is_warned_about(start_proxy):
    """A superuser can switch read-only off by many paths (SECURITY DEFINER is only one): the
    operator is told."""
    p = start_proxy("--read-only")  # DSN user postgres
    with p.raw() as c:
        assert rows(c.query("select 1")) == [("1",)]
    warns = poll(lambda: log_events(p, "read_only_superuser"),
                 what="a read_only_superuser warning in the log")
    assert warns[0]["level"] == "warn", warns[0]["line"]


# ---------------------------------------------------------------------------------------------
# Reload into read-only


def test_reload_into_read_only_reaches_existing_sessions(start_proxy, ro_objects, tmp_path):
    path = tmp_path / "proxy.ini"
    path.write_text("read-only = off\n")
    p = start_proxy("--config", str(path), user="app")
    idle, intx = p.raw(), p.raw()
    try:
        assert rows(idle.query("select rob_write(1)")) == [("1",)]  # writable before
        assert rfq(intx.query("begin")) == "T"
        msgs = intx.query("insert into rob_t values (2)")
        assert tags(msgs) == ["INSERT 0 1"] and rfq(msgs) == "T"

        seen = len(log_events(p, "reloaded"))
        path.write_text("read-only = on\n")
        p.signal(signal.SIGHUP)
        poll(lambda: len(log_events(p, "reloaded")) > seen, what="a reloaded log event")

        # an idle session: its next statement runs read-only upstream, so the function's
        # INSERT fails with PostgreSQL's own error
        msgs = idle.query("select rob_write(3)")
        err = only_error(msgs)
        assert err["C"] == "25006", err
        assert "cannot execute INSERT in a read-only transaction" in err["M"], err
        assert rfq(msgs) == "I"
        assert rows(idle.query("show default_transaction_read_only")) == [("on",)]

        # a transaction block that already wrote cannot carry on, nor commit
        msgs = intx.query("select 1")
        err = only_error(msgs)
        assert (err["S"], err["C"]) == ("ERROR", "25006"), err
        assert f"rule: {RULE}" in err.get("D", ""), err
        assert rfq(msgs) == "E"
        msgs = intx.query("commit")
        assert (tags(msgs), rfq(msgs)) == (["ROLLBACK"], "I"), describe(msgs)
    finally:
        idle.close()
        intx.close()
    assert ro_objects() == [1]
