"""Per-statement guardrails: query timeout, idle-in-transaction timeout, row and byte budgets."""
import re
import time

from pgwp import (BOUND, errors, notices, only_error, proxy_only, recreate, rfq, rows,
                  tags)

pytestmark = proxy_only



def count(dconn, name):
    with dconn.cursor() as cur:
        cur.execute(f"select count(*) from {name}")
        return cur.fetchone()[0]


def assert_guardrail(err, code, rule):
    """A guardrail error: ERROR + SQLSTATE, the rule id in DETAIL, advice in HINT."""
    assert err["S"] == "ERROR" and err["C"] == code, err
    assert err.get("D", "").startswith("rule: ") and rule in err["D"], err
    assert err.get("H"), f"no HINT: {err}"


# ---------------------------------------------------------------------------------------------
# Query timeout


def test_query_timeout_cancels_the_statement(start_proxy):
    p = start_proxy("--query-timeout", "1s")
    with p.raw() as c:
        start = time.monotonic()
        msgs = c.query("select pg_sleep(10)")
        took = time.monotonic() - start
        err = only_error(msgs)
        assert_guardrail(err, "57014", "query-timeout")
        assert "canceling statement due to statement timeout" in err["M"]
        assert rfq(msgs) == "I"
        assert took < 8, f"a 1 s timeout let a 10 s statement run {took:.1f} s"
        assert rows(c.query("select 'usable'")) == [("usable",)]
        # defence in depth: the upstream has its own statement_timeout
        assert rows(c.query("show statement_timeout"))[0][0] not in ("0", "0ms")


def test_query_timeout_fails_the_transaction_block(start_proxy, dconn):
    recreate(dconn, "gr_timeout_tx")
    p = start_proxy("--query-timeout", "1s")
    with p.raw() as c:
        assert rfq(c.query("begin")) == "T"
        assert tags(c.query("insert into gr_timeout_tx values (1)")) == ["INSERT 0 1"]
        msgs = c.query("select pg_sleep(10)")
        assert only_error(msgs)["C"] == "57014"
        assert rfq(msgs) == "E"
        msgs = c.query("select 1")
        assert only_error(msgs)["C"] == "25P02" and rfq(msgs) == "E"
        msgs = c.query("commit")
        assert (tags(msgs), rfq(msgs)) == (["ROLLBACK"], "I")
        assert rows(c.query("select 2")) == [("2",)]
    assert count(dconn, "gr_timeout_tx") == 0


def test_query_timeout_zero_disables_it(start_proxy):
    p = start_proxy("--query-timeout", "0")
    with p.raw() as c:
        msgs = c.query("select pg_sleep(1.5)")
        assert errors(msgs) == [] and tags(msgs) == ["SELECT 1"] and rfq(msgs) == "I"
        assert rows(c.query("show statement_timeout")) == [("0",)]


def test_idle_in_transaction_timeout_is_relayed(start_proxy):
    p = start_proxy("--idle-in-transaction-timeout", "1s")
    with p.raw() as c:
        assert rows(c.query("show idle_in_transaction_session_timeout")) == [("1s",)]
        assert rfq(c.query("begin")) == "T"
        assert rfq(c.query("select 1")) == "T"
        c.sock.settimeout(BOUND)
        msgs = c.read_until_closed()  # the upstream's FATAL arrives unasked, then EOF
    errs = errors(msgs)
    assert errs, f"no error before the close: {msgs}"
    assert (errs[0]["S"], errs[0]["C"]) == ("FATAL", "25P03"), errs
    assert "idle-in-transaction" in errs[0]["M"]
    assert len(errs) == 1, f"one FATAL expected, got {errs}"


# ---------------------------------------------------------------------------------------------
# Row and byte budgets (default proxy: --max-rows 10000)


def test_row_limit_error(proxy):
    with proxy.raw() as c:
        # big enough to still run upstream when the proxy's cancel arrives
        msgs = c.query("select g from generate_series(1, 200000) g")
        err = only_error(msgs)
        assert_guardrail(err, "54000", "max-rows")
        assert err["M"].startswith("row limit of 10000 exceeded"), err
        assert re.search(r"upstream statement (was canceled|had already completed)", err["M"])
        assert "LIMIT" in err["H"]
        assert len(rows(msgs)) <= 10000
        assert rfq(msgs) == "I"
        assert rows(c.query("select 'usable'")) == [("usable",)]


def test_row_limit_exactly_at_the_limit_passes(proxy):
    with proxy.raw() as c:
        msgs = c.query("select g from generate_series(1, 20000) g limit 10000")
        assert errors(msgs) == []
        assert len(rows(msgs)) == 10000 and tags(msgs) == ["SELECT 10000"] and rfq(msgs) == "I"


def test_row_limit_is_per_statement(proxy):
    with proxy.raw() as c:
        msgs = c.query("select g from generate_series(1, 6000) g; "
                       "select g from generate_series(1, 6000) g")
        assert errors(msgs) == []
        assert tags(msgs) == ["SELECT 6000", "SELECT 6000"]
        assert len(rows(msgs)) == 12000 and rfq(msgs) == "I"


def test_byte_limit_error(start_proxy):
    p = start_proxy("--max-bytes", "100kB")
    with p.raw() as c:
        small = c.query("select repeat('x', 1000) from generate_series(1, 50)")
        assert errors(small) == [] and tags(small) == ["SELECT 50"]
        msgs = c.query("select repeat('x', 1000) from generate_series(1, 500)")
        err = only_error(msgs)
        assert_guardrail(err, "54000", "max-bytes")
        assert re.match(r"byte limit of \d+ exceeded", err["M"]), err
        assert int(re.match(r"byte limit of (\d+)", err["M"]).group(1)) in (100000, 102400)
        assert sum(len(r[0]) for r in rows(msgs)) <= 102400
        assert rfq(msgs) == "I"
        assert rows(c.query("select 'usable'")) == [("usable",)]


def test_row_limit_fails_the_transaction_block(proxy, dconn):
    recreate(dconn, "gr_limit_tx")
    with proxy.raw() as c:
        c.query("begin")
        assert tags(c.query("insert into gr_limit_tx values (1)")) == ["INSERT 0 1"]
        msgs = c.query("select g from generate_series(1, 200000) g")
        assert only_error(msgs)["C"] == "54000"
        assert rfq(msgs) == "E"
        msgs = c.query("select 1")
        assert only_error(msgs)["C"] == "25P02" and rfq(msgs) == "E"
        msgs = c.query("commit")
        assert (tags(msgs), rfq(msgs)) == (["ROLLBACK"], "I")
    assert count(dconn, "gr_limit_tx") == 0


def test_row_limit_on_insert_returning_states_the_fate(proxy, dconn):
    """The client learns whether the write happened, and the table agrees: canceled in time,
    an ERROR that says so and nothing written; completed (committed in autocommit), a
    truncation: the first rows, a WARNING and the real CommandComplete, never an ERROR."""
    recreate(dconn, "gr_returning")
    fates = set()
    with proxy.raw() as c:
        for _ in range(3):
            with dconn.cursor() as cur:
                cur.execute("truncate gr_returning")
            msgs = c.query("insert into gr_returning select g from generate_series(1, 20000) g "
                           "returning id")
            assert rfq(msgs) == "I"
            n = count(dconn, "gr_returning")
            if errors(msgs):
                err = only_error(msgs)
                assert_guardrail(err, "54000", "max-rows")
                assert err["M"].endswith("the upstream statement was canceled"), (
                    f"an ERROR for a write that committed ({n} rows now): {err['M']!r}")
                assert n == 0, f"{err['M']!r} but {n} rows were committed"
                fates.add("canceled")
            else:
                assert n == 20000, f"no error but the table has {n} rows"
                assert len(rows(msgs)) == 10000
                (warn,) = notices(msgs)
                assert (warn["S"], warn["C"]) == ("WARNING", "01000"), warn
                assert "rule: max-rows" in warn.get("D", ""), warn
                assert tags(msgs) == ["INSERT 0 20000"], tags(msgs)
                fates.add("completed")
    assert fates


def test_limit_cancel_does_not_hit_the_next_statement(start_proxy):
    """When the limited statement had already completed upstream, the proxy's cancel must not
    land on the client's next statement (a stray 57014 on an innocent query)."""
    p = start_proxy("--max-rows", "5")
    stray = []
    with p.raw() as c:
        for i in range(10):
            err = only_error(c.query("select g from generate_series(1, 20) g"))
            assert err["C"] == "54000", err
            msgs = c.query("select pg_sleep(0.05)")
            if errors(msgs):
                stray.append((i, err["M"], errors(msgs)[0]["M"]))
            assert rfq(msgs) == "I"
    assert stray == [], f"{len(stray)}/10 follow-up statements failed: {stray[:2]}"


def test_on_limit_truncate(start_proxy, dconn):
    p = start_proxy("--on-limit", "truncate", "--max-rows", "100")
    with p.raw() as c:
        msgs = c.query("select g from generate_series(1, 1000) g")
        assert errors(msgs) == []
        assert rows(msgs) == [(str(i),) for i in range(1, 101)]
        assert tags(msgs) == ["SELECT 100"]
        warns = notices(msgs)
        assert len(warns) == 1 and warns[0]["S"] == "WARNING", warns
        assert "100" in warns[0]["M"] and "max-rows" in warns[0].get("D", ""), warns
        assert rfq(msgs) == "I"
        # inside a transaction block the transaction is not failed
        assert rfq(c.query("begin")) == "T"
        msgs = c.query("select g from generate_series(1, 1000) g")
        assert errors(msgs) == [] and tags(msgs) == ["SELECT 100"] and rfq(msgs) == "T"
        assert rows(c.query("select 'in tx'")) == [("in tx",)]
        msgs = c.query("commit")
        assert (tags(msgs), rfq(msgs)) == (["COMMIT"], "I")
