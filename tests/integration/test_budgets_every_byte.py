"""Budgets: --max-bytes bounds every byte a statement sends the client (DataRow, NoticeResponse,
NotificationResponse, ErrorResponse), not DataRows only; and a limit that trips after a write
in autocommit had completed and committed is reported as the truncation it was, never as an
ERROR that hides a commit."""
import pytest

from pgwp import (describe, errors, notices, only_error, proxy_only, recreate, rfq, rows,
                  table_rows, tags, wire_bytes)

pytestmark = proxy_only

LIMIT = 10 * 1024  # --max-bytes 10kB (the proxy may read kB as 1000: this is the upper bound)


def assert_byte_limit(msgs):
    err = only_error(msgs)
    assert (err["S"], err["C"]) == ("ERROR", "54000"), err
    assert "rule: max-bytes" in err.get("D", ""), err
    assert rfq(msgs) == "I", describe(msgs[-3:])


def assert_usable(c):
    msgs = c.query("select 1")
    assert rows(msgs) == [("1",)] and errors(msgs) == [] and rfq(msgs) == "I", describe(msgs)


def over_limit_by_at_most_one(msgs, type_):
    """The bytes of messages of `type_` the client received: at most the limit plus the one
    message that crossed it."""
    ms = [m for m in msgs if m.type == type_]
    got = wire_bytes(ms)
    largest = max((wire_bytes([m]) for m in ms), default=0)
    assert got <= LIMIT + largest, f"{len(ms)} {type_!r} messages, {got} bytes, reached the client"
    return ms


@pytest.fixture
def budget_proxy(start_proxy):
    return start_proxy("--max-bytes", "10kB", "--max-rows", 0)


def test_notifications_of_a_statement_count(budget_proxy):
    with budget_proxy.raw() as c:
        assert rfq(c.query("listen bud_c")) == "I"
        # distinct payloads: PostgreSQL folds identical notifications of one transaction
        msgs = c.query("select count(pg_notify('bud_c', g || repeat('x', 1000))) "
                       "from generate_series(1, 700) g")
        notes = over_limit_by_at_most_one(msgs, "A")
        assert len(notes) < 700
        assert_byte_limit(msgs)
        assert_usable(c)


def test_a_megabytes_error_counts(budget_proxy):
    with budget_proxy.raw() as c:
        assert errors(c.query("set log_min_messages = fatal")) == []  # keep the server log small
        msgs = c.query("select repeat('x', 5000000)::int")
        assert wire_bytes(msgs) < 1_000_000, f"{wire_bytes(msgs)} bytes reached the client"
        assert_byte_limit(msgs)  # the proxy's error instead of the 5 MB one
        assert_usable(c)


def test_notices_count(budget_proxy):
    with budget_proxy.raw() as c:
        msgs = c.query("do $$ begin for i in 1..100000 loop raise notice '%', repeat('x', 100); "
                       "end loop; end $$")
        over_limit_by_at_most_one(msgs, "N")
        assert_byte_limit(msgs)
        assert_usable(c)


def test_notifications_while_idle_belong_to_no_statement(budget_proxy, dconn):
    """Kept behaviour: notifications that arrive between statements are not budgeted."""
    with budget_proxy.raw() as c:
        assert rfq(c.query("listen bud_idle")) == "I"
        with dconn.cursor() as cur:
            cur.execute("select count(pg_notify('bud_idle', g || repeat('x', 1000))) "
                        "from generate_series(1, 50) g")
        got = [c.read_msg() for _ in range(50)]  # unasked, while the session is idle
        assert [m.type for m in got] == ["A"] * 50, describe(got)
        assert len({m.payload for m in got}) == 50
        assert wire_bytes(got) > 4 * LIMIT  # several budgets worth
        assert_usable(c)


# ---------------------------------------------------------------------------------------------
# A limit after a completed write: a truncation, not an ERROR that hides a commit

FILLED = list(range(1, 201))
WRITES = {
    # statement, table before, table after, CommandComplete
    "delete": ("delete from bud_w returning *", FILLED, [], "DELETE 200"),
    "insert": ("insert into bud_w select g from generate_series(1, 200) g returning id", [],
               FILLED, "INSERT 0 200"),
    "update": ("update bud_w set id = id + 1000 returning id", FILLED,
               [i + 1000 for i in FILLED], "UPDATE 200"),
}


def fill(dconn, ids):
    with dconn.cursor() as cur:
        cur.execute("truncate bud_w")
        if ids:
            cur.execute("insert into bud_w select unnest(%s::int[])", (ids,))


def content(dconn):
    return [r[0] for r in table_rows(dconn, "bud_w")]


@pytest.mark.parametrize("kind", list(WRITES))
def test_completed_write_over_the_row_limit_is_a_truncation(start_proxy, dconn, kind):
    """200 tiny rows: the write completes upstream before a cancel can land. Each run is one
    of two consistent shapes; the completed one must be seen."""
    sql, before, after, tag = WRITES[kind]
    recreate(dconn, "bud_w")
    p = start_proxy("--max-rows", 100)
    shapes = []
    with p.raw() as c:
        for _ in range(5):
            fill(dconn, before)
            msgs = c.query(sql)
            now = content(dconn)
            assert rfq(msgs) == "I", describe(msgs[-3:])
            if errors(msgs):
                err = only_error(msgs)
                assert (err["C"], "rule: max-rows" in err.get("D", "")) == ("54000", True), err
                assert err["M"].endswith("the upstream statement was canceled"), (
                    f"an ERROR for a write that committed ({len(now)} rows now): {err['M']!r}")
                assert now == before, f"{err['M']!r} but the table changed"
                shapes.append("canceled")
                continue
            assert now == after, f"the statement completed but the table has {len(now)} rows"
            assert len(rows(msgs)) == 100, len(rows(msgs))
            (warn,) = notices(msgs)
            assert (warn["S"], warn["C"]) == ("WARNING", "01000"), warn
            assert "rule: max-rows" in warn.get("D", ""), warn
            assert tags(msgs) == [tag], tags(msgs)
            shapes.append("completed")
    assert "completed" in shapes, shapes


def test_write_over_the_row_limit_in_a_block_fails_the_block(start_proxy, dconn):
    """Kept behaviour: inside a transaction block nothing is committed yet, so the ERROR stands
    and the block is failed."""
    recreate(dconn, "bud_w")
    fill(dconn, FILLED)
    p = start_proxy("--max-rows", 100)
    with p.raw() as c:
        assert rfq(c.query("begin")) == "T"
        msgs = c.query("delete from bud_w returning *")
        err = only_error(msgs)
        assert err["C"] == "54000" and "rule: max-rows" in err.get("D", ""), err
        assert notices(msgs) == [] and rfq(msgs) == "E"
        msgs = c.query("select 1")
        assert only_error(msgs)["C"] == "25P02" and rfq(msgs) == "E"
        msgs = c.query("commit")
        assert (tags(msgs), rfq(msgs)) == (["ROLLBACK"], "I")
    assert content(dconn) == FILLED


def test_select_over_the_row_limit_keeps_the_error(start_proxy):
    """Kept behaviour: a reading statement over the limit is an ERROR, even when it completed
    upstream (200 tiny rows arrive with their ReadyForQuery)."""
    p = start_proxy("--max-rows", 100)
    with p.raw() as c:
        msgs = c.query("select g from generate_series(1, 200) g")
        err = only_error(msgs)
        assert err["C"] == "54000" and "rule: max-rows" in err.get("D", ""), err
        assert notices(msgs) == [] and len(rows(msgs)) <= 100 and rfq(msgs) == "I"
