"""At the drain deadline of a shutdown, a statement still running is canceled and its answer
waited for (bounded by --cancel-grace) and relayed before FATAL 57P01: a COMMIT in flight is
reported as what happened to it.

The attack: the FATAL went out at once and the cancel only later, so COMMITs that were applied
were reported failed. Reproduced deterministically with a deferred constraint trigger that makes
COMMIT take 2 s: one variant swallows the cancel (the COMMIT completes), one does not (the
COMMIT fails)."""
import signal

import pytest

from pgwp import (BOUND, backends_detail, describe, errors, marker, poll, proxy_only, rfq,
                  table_rows, tags, terminate_backends)

pytestmark = proxy_only

SESSIONS = 5
TRIGGERS = {
    # the cancel lands in the sleep and is swallowed: the COMMIT goes on and commits
    "caught": "begin perform pg_sleep(2); exception when query_canceled then null; end;",
    # the cancel ends the sleep with 57014: the COMMIT fails, the transaction rolls back
    "uncaught": "perform pg_sleep(30);",
}


@pytest.fixture
def slow_commit(dconn):
    """make(kind) -> table name: a table whose COMMIT runs a slow deferred trigger."""
    def make(kind):
        name = f"sdc_{kind}"
        with dconn.cursor() as cur:
            cur.execute(f"""
                drop table if exists {name} cascade;
                create table {name} (id int);
                create or replace function {name}_slow() returns trigger language plpgsql as
                  $$ begin {TRIGGERS[kind]} return null; end $$;
                create constraint trigger {name}_slow after insert on {name}
                  deferrable initially deferred for each row execute function {name}_slow();
            """)
        return name
    return make


def commits_in_flight(p, dconn, table, app):
    """SESSIONS sessions each insert a row in a block and send COMMIT without reading; returns
    the clients once every COMMIT runs upstream (in the trigger)."""
    clients = []
    try:
        for i in range(SESSIONS):
            c = p.raw(application_name=app)
            clients.append(c)
            assert rfq(c.query("begin")) == "T"
            msgs = c.query(f"insert into {table} values ({i})")
            assert tags(msgs) == ["INSERT 0 1"] and rfq(msgs) == "T", describe(msgs)
        for c in clients:
            c.query_send("commit")
        poll(lambda: sum(1 for b in backends_detail(dconn, app)
                         if b[1] == "active" and b[3] == "commit") == SESSIONS,
             what=lambda: f"{SESSIONS} COMMITs to run upstream: {backends_detail(dconn, app)}")
    except BaseException:
        for c in clients:
            c.close()
        raise
    return clients


def shut_down(p, clients):
    """SIGTERM with --shutdown-timeout 1s; returns what each client received before the
    close."""
    p.signal(signal.SIGTERM)
    out = []
    for c in clients:
        with c:
            msgs, closed = c.read_all(timeout=BOUND)
        assert closed, f"still open {BOUND} s after the drain deadline: {describe(msgs)}"
        out.append(msgs)
    assert p.wait() == 0
    return out


def assert_ends_with_57p01(msgs):
    errs = errors(msgs)
    assert errs and (errs[-1]["S"], errs[-1]["C"]) == ("FATAL", "57P01"), describe(msgs)
    assert msgs[-1].type == "E", f"messages after the FATAL: {describe(msgs)}"


def test_commit_that_completes_at_the_deadline_is_reported(start_proxy, dconn, slow_commit):
    table = slow_commit("caught")
    app = marker("sdcommit")
    p = start_proxy("--shutdown-timeout", "1s")
    try:
        received = shut_down(p, commits_in_flight(p, dconn, table, app))
    finally:
        terminate_backends(dconn, app)
    present = {r[0] for r in table_rows(dconn, table)}
    for i, msgs in enumerate(received):
        assert_ends_with_57p01(msgs)
        if i in present:
            assert tags(msgs) == ["COMMIT"], (
                f"row {i} was committed but its client was told: {describe(msgs)}")
        assert len(errors(msgs)) == 1, describe(msgs)
    assert present == set(range(SESSIONS)), f"the trigger swallows the cancel: {present}"


def test_commit_canceled_at_the_deadline_reports_the_error(start_proxy, dconn, slow_commit):
    table = slow_commit("uncaught")
    app = marker("sdcancel")
    p = start_proxy("--shutdown-timeout", "1s")
    try:
        received = shut_down(p, commits_in_flight(p, dconn, table, app))
    finally:
        terminate_backends(dconn, app)
    assert table_rows(dconn, table) == []
    for msgs in received:
        assert_ends_with_57p01(msgs)
        errs = errors(msgs)
        assert len(errs) == 2, f"the COMMIT's own error, then the FATAL: {describe(msgs)}"
        assert (errs[0]["S"], errs[0]["C"]) == ("ERROR", "57014"), describe(msgs)
        assert "COMMIT" not in tags(msgs), describe(msgs)
