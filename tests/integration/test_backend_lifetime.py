"""A session's upstream backend does not outlive it: a statement that catches the cancel is
terminated once --cancel-grace is over, the session counts against --max-connections until its
backend is gone, and the proxy's own timeouts cannot be switched off by the client.

The attack: a PL/pgSQL `EXCEPTION WHEN query_canceled` loop kept running upstream 15-27 s after
the proxy had closed both sides, uncounted by --max-connections."""
import pytest

from pgwp import (BOUND, backends_detail, describe, errors, marker, poll, proxy_only, recreate,
                  rfq, rows, startup_or_53300, table_rows, tags, terminate_backends,
                  wait_active)

pytestmark = proxy_only

# Swallows every cancel, the proxy's and statement_timeout's alike.
CATCHER = ("do $$ begin loop begin perform pg_sleep(0.2); "
           "exception when query_canceled then null; end; end loop; end $$")
FAST = ("--query-timeout", "1s", "--cancel-grace", "1s", "--max-connections", 1)


@pytest.fixture
def reap(dconn):
    """Registers application names whose backends must not outlive the test: if the behaviour
    under test fails, the loop would run upstream forever."""
    apps = []
    yield apps.append
    for app in apps:
        terminate_backends(dconn, app)


def gone(dconn, app):
    return backends_detail(dconn, app) == []


def assert_timeout_outcome(msgs, closed):
    """ERROR 57014 naming the query timeout, or (once the grace is over) FATAL 08006."""
    errs = errors(msgs)
    assert errs, f"no error within {BOUND} s: {describe(msgs)} (closed: {closed})"
    for e in errs:
        assert (e["S"], e["C"]) in (("ERROR", "57014"), ("FATAL", "08006")), describe(msgs)
        if e["C"] == "57014":
            assert "rule: query-timeout" in e.get("D", ""), e
    if closed:
        assert errs[-1]["S"] == "FATAL", describe(msgs)
    else:
        assert msgs[-1].type == "Z", f"neither closed nor ready: {describe(msgs)}"


def assert_counted_until_gone(p, dconn, app, timeout=BOUND):
    """While the backend of `app` exists, a new client is refused with 53300 (--max-connections
    1); once it is gone, a new client is admitted and served."""
    def refused_while_alive():
        if gone(dconn, app):
            return True
        other = startup_or_53300(p)
        if other is None:
            return False  # refused, as it must be: look again
        other.close()
        # admitted: right only if the backend was already on its way out
        poll(lambda: gone(dconn, app), timeout=2,
             what=lambda: f"the backend to be gone: a client was admitted while it still runs "
                          f"{backends_detail(dconn, app)}")
        return True
    poll(refused_while_alive, timeout=timeout,
         what=lambda: f"the backend to end: {backends_detail(dconn, app)}")
    fresh = poll(lambda: startup_or_53300(p), what="a client admitted once the backend is gone")
    with fresh:
        assert rows(fresh.query("select 'admitted'")) == [("admitted",)]


@pytest.mark.parametrize("client_sets", [
    (),
    ("statement_timeout = 0",),
    ("client_connection_check_interval = 0",),
], ids=["plain", "statement_timeout-0", "client_connection_check_interval-0"])
def test_statement_that_catches_the_cancel_is_terminated(start_proxy, dconn, reap, client_sets):
    p = start_proxy(*FAST)
    app = marker("catcher")
    reap(app)
    c = p.raw(application_name=app)
    with c:
        for setting in client_sets:  # what the client may change must not matter
            assert rfq(c.query(f"set {setting}")) == "I"
        c.query_send(CATCHER)
        wait_active(dconn, app)
        msgs, closed = c.read_all(timeout=BOUND)
    assert_timeout_outcome(msgs, closed)
    assert_counted_until_gone(p, dconn, app)


def test_client_gone_while_a_catching_statement_runs(start_proxy, dconn, reap):
    """The client closes its socket: nobody waits for the statement, which must still end
    within the (default, 10 s) grace after the proxy's cancel."""
    p = start_proxy("--max-connections", 1)
    app = marker("catchergone")
    reap(app)
    c = p.raw(application_name=app)
    c.query_send(CATCHER)
    wait_active(dconn, app)
    c.close()
    assert_counted_until_gone(p, dconn, app, timeout=20)


def test_catching_statement_with_the_default_grace(start_proxy, dconn, reap):
    """The attack as reported, without the new option: the default grace (10 s) ends it too,
    and until then the session holds its --max-connections slot."""
    p = start_proxy("--query-timeout", "1s", "--max-connections", 1)
    app = marker("catcherdefault")
    reap(app)
    c = p.raw(application_name=app)
    with c:
        c.query_send(CATCHER)
        wait_active(dconn, app)
        msgs, closed = c.read_all(timeout=20)  # 1 s timeout + 10 s grace, with room
    assert_timeout_outcome(msgs, closed)
    assert_counted_until_gone(p, dconn, app)


def test_client_cannot_switch_off_the_idle_in_transaction_timeout(start_proxy, dconn, reap):
    recreate(dconn, "blt_t")
    p = start_proxy("--idle-in-transaction-timeout", "1s")
    app = marker("idletx")
    reap(app)
    with p.raw(application_name=app) as c:
        assert rfq(c.query("set idle_in_transaction_session_timeout = 0")) == "I"
        assert rfq(c.query("begin")) == "T"
        msgs = c.query("insert into blt_t values (1)")
        assert tags(msgs) == ["INSERT 0 1"] and rfq(msgs) == "T"
        msgs, closed = c.read_all(timeout=BOUND)  # idle in the block: the FATAL comes unasked
    errs = errors(msgs)
    assert len(errs) == 1 and closed, f"closed: {closed}, {describe(msgs)}"
    assert (errs[0]["S"], errs[0]["C"]) == ("FATAL", "25P03"), errs[0]
    assert "idle-in-transaction timeout" in errs[0]["M"], errs[0]
    poll(lambda: gone(dconn, app), what="the idle backend to end")
    assert table_rows(dconn, "blt_t") == []
